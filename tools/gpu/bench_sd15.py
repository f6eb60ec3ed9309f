#!/usr/bin/env python3
"""weft vs diffusers at SD1.5 size on one GPU, side by side (issue 7's benchmark).

Developer tool (torch, diffusers, transformers, safetensors, numpy); weft's build and tests
never run it.  tools/gpu/bench_sd15.sh runs each subcommand in its own process, time-boxed,
on the GPU machine; every subcommand writes its own JSON part as soon as each measurement is
done, so a stage killed at its limit still leaves what it measured.

  make    random-weight SD1.5 models (tools/gpu/sd15_check.py's: UNet 859.5 M, VAE 83.7 M,
          CLIP ViT-L/14 text tower 123.1 M parameters, the libraries' default init under
          fixed seeds, rounded to fp16), saved as a diffusers folder WORK/sd15_random
  torch   diffusers fp16 in one process, --mode eager or compile (torch.compile of the UNet
          and of vae.decode, --compile-mode default|max-autotune-no-cudagraphs|...):
            unet_step     UNet2DConditionModel at batch 2 (a CFG step), 64x64 latent, 77
                          tokens, called as StableDiffusionPipeline calls it
            vae_decode    AutoencoderKL.decode of 1x4x64x64 -> 512x512
            clip_batch2   CLIPTextModel on 2 x 77 tokens
            txt2img       StableDiffusionPipeline, 512x512, 20 Euler steps, CFG 7.5, prompt and
                          "" negative: tokenizing, text encoding, sampling, VAE decode and the
                          conversion to a numpy image
          median of --reps (txt2img: --txt2img-reps) after warm-up (the first calls compile),
          torch.cuda.synchronize() around every timed call; memory: torch's
          max_memory_allocated / max_memory_reserved (peak since a reset just before txt2img,
          and over the whole process) and cudaMemGetInfo's used bytes (torch.cuda.mem_get_info:
          the whole device, the CUDA context included)
  weft    weft on the same folder: tools/gpu/sd_forward --bench (the model code: txt2img as the
          graph runs it, the UNet step, the VAE decode, the text encoder; medians; weft's
          allocator peaks and cudaMemGetInfo), then `weft run graphs/txt2img.yaml --device cuda`
          in a fresh process (load + image + PNG; per-node milliseconds from its JSON events;
          the device's used memory polled with nvidia-smi every 50 ms), under
          WEFT_PRECISION=--precision
  vram    `weft run graphs/txt2img.yaml --device cuda --vram 1.5G`: exit status, seconds,
          per-node milliseconds, the polled device memory, the error if it failed
  report  every part in OUT -> OUT/bench.json and OUT/bench_table.md

  python3 tools/gpu/bench_sd15.py make|torch|weft|vram|report --work DIR --out DIR [--tiny]
          [--device cuda|cpu] [--mode eager|compile] [--precision fp16|fp32] [--build BUILD]
"""

import argparse
import datetime
import glob
import json
import re
import os
import statistics
import subprocess
import tempfile
import sys
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PROMPT = "a photograph of an astronaut riding a horse"
NEGATIVE = ""
CFG = 7.5
STEPS = 20
SEED = 42
VRAM_LIMIT = "1.5G"
MiB = 1048576.0


def log(msg):
    print(f"[bench_sd15 {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Part:
    """One subcommand's results: OUT/part_<name>.json, rewritten after every measurement."""

    def __init__(self, out, name, **kw):
        self.path = os.path.join(out, f"part_{name}.json")
        self.d = {"name": name, "started": now_iso(), **kw}
        os.makedirs(out, exist_ok=True)
        self.write()

    def set(self, key, value):
        self.d[key] = value
        self.write()

    def write(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.d, f, indent=1, sort_keys=True, default=str)
        os.replace(tmp, self.path)


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def times(v):
    return {"median_s": statistics.median(v), "min_s": min(v), "n": len(v)} if v else None


def chk():
    """tools/gpu/sd15_check.py as a module (its model configs, seeds, builders and savers)."""
    sys.path.insert(0, HERE)
    import sd15_check

    return sd15_check


def sub_env(precision=None):
    env = dict(os.environ)
    if os.environ.get("WEFT_SD15_LD_LIBRARY_PATH"):
        env["LD_LIBRARY_PATH"] = os.environ["WEFT_SD15_LD_LIBRARY_PATH"]
    if precision:
        env["WEFT_PRECISION"] = precision
    return env


# ------------------------------------------------------------------ make


def cmd_make(args):
    c = chk()
    import torch

    part = Part(args.parts, "make", tiny=args.tiny)
    folder = os.path.join(args.work, "sd15_random")
    t0 = time.time()
    torch.set_grad_enabled(False)
    unet, vae, te = c.build_models(args.tiny, args.device)
    c.write_tokenizer(os.path.join(folder, "tokenizer"))
    c.save_folder(unet, vae, te, folder)
    part.set("params", {"unet": c.nparams(unet), "vae": c.nparams(vae), "text_encoder": c.nparams(te)})
    part.set("seconds", round(time.time() - t0, 1))
    part.set("folder", folder)
    part.set("ok", True)
    log(f"models {part.d['params']} in {time.time() - t0:.1f} s -> {folder}")
    return 0


# ------------------------------------------------------------------ torch


def cmd_torch(args):
    import torch

    mode = args.mode
    name = "diffusers_eager" if mode == "eager" else "diffusers_compile"
    part = Part(args.parts, name, mode=mode, compile_mode=args.compile_mode if mode == "compile" else None)
    dev = args.device
    dtype = torch.float16 if dev == "cuda" else torch.float32
    cuda = dev == "cuda"
    L = 16 if args.tiny else 64
    folder = os.path.join(args.work, "sd15_random")
    torch.set_grad_enabled(False)
    if not cuda:
        torch.set_num_threads(args.threads)

    import diffusers
    import transformers
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()

    part.set("versions", {"torch": torch.__version__, "diffusers": diffusers.__version__,
                          "transformers": transformers.__version__, "cuda": torch.version.cuda,
                          "cudnn": torch.backends.cudnn.version() if cuda else None,
                          "python": sys.version.split()[0]})
    part.set("dtype", str(dtype).replace("torch.", ""))

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def mem(tag):
        if not cuda:
            return
        sync()
        fr, tot = torch.cuda.mem_get_info()
        part.set(f"mem_{tag}", {"torch_max_allocated": torch.cuda.max_memory_allocated(),
                                "torch_max_reserved": torch.cuda.max_memory_reserved(),
                                "torch_allocated": torch.cuda.memory_allocated(),
                                "cuda_used": tot - fr, "cuda_total": tot})

    mem("start")
    t0 = time.time()
    c = chk()
    sched = EulerDiscreteScheduler.from_config({**c.SCHEDULER, "timestep_spacing": "linspace"})
    pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=dtype, scheduler=sched, safety_checker=None,
                                                   feature_extractor=None, requires_safety_checker=False)
    pipe = pipe.to(dev)
    pipe.set_progress_bar_config(disable=True)
    sync()
    part.set("load_s", round(time.time() - t0, 3))
    mem("loaded")
    log(f"{name}: pipeline loaded in {time.time() - t0:.1f} s")

    if mode == "compile":
        part.set("compile", "asked")
        pipe.unet = torch.compile(pipe.unet, mode=args.compile_mode)
        pipe.vae.decode = torch.compile(pipe.vae.decode, mode=args.compile_mode)

    # the UNet as the pipeline calls it (the same guards for torch.compile: a 0-d timestep on
    # the device, the same keyword arguments)
    g = torch.Generator().manual_seed(1504)
    x = torch.randn([2, 4, L, L], generator=g).to(dev, dtype)
    ids = pipe.tokenizer([PROMPT, NEGATIVE], padding="max_length", max_length=77, truncation=True,
                         return_tensors="pt").input_ids.to(dev)
    ctx = pipe.text_encoder(ids)[0]
    sched.set_timesteps(STEPS, device=dev)
    tstep = sched.timesteps[0]

    def unet_call():
        return pipe.unet(x, tstep, encoder_hidden_states=ctx, timestep_cond=None, cross_attention_kwargs=None,
                         added_cond_kwargs=None, return_dict=False)[0]

    z = (torch.randn([1, 4, L, L], generator=g) / pipe.vae.config.scaling_factor).to(dev, dtype)
    # one generator object for every call, re-seeded: the pipeline passes it to vae.decode too,
    # and the same object keeps torch.compile's guards the same
    gen = torch.Generator()

    def vae_call():
        return pipe.vae.decode(z, return_dict=False, generator=gen)[0]

    def clip_call():
        return pipe.text_encoder(ids)[0]

    def bench(key, fn, warm, reps):
        sync()
        warm_s = []
        part.set("now", f"{key}: warm-up (compiles under torch.compile) since {now_iso()}")
        for _ in range(warm):
            a = time.perf_counter()
            fn()
            sync()
            warm_s.append(time.perf_counter() - a)
            part.set(f"{key}_warmup_so_far_s", [round(s, 3) for s in warm_s])
        part.set("now", f"{key}: timing since {now_iso()}")
        v = []
        for _ in range(reps):
            a = time.perf_counter()
            fn()
            sync()
            v.append(time.perf_counter() - a)
        r = times(v)
        r["warmup_s"] = [round(s, 4) for s in warm_s]
        part.set(key, r)
        log(f"{name}: {key} median {r['median_s'] * 1000:.2f} ms (min {r['min_s'] * 1000:.2f}, n {r['n']}; "
            f"warm-up {', '.join(f'{s:.3f}' for s in warm_s)} s)")

    warm = 3
    for key, fn in (("unet_step", unet_call), ("vae_decode", vae_call), ("clip_batch2", clip_call)):
        try:
            bench(key, fn, warm, args.reps)
        except Exception as e:
            traceback.print_exc()
            part.set(key, {"error": repr(e)[:2000]})
            if mode == "compile":
                part.set("compile", f"failed in {key}")

    def txt2img():
        return pipe(prompt=PROMPT, negative_prompt=NEGATIVE, height=8 * L, width=8 * L, num_inference_steps=STEPS,
                    guidance_scale=CFG, generator=gen.manual_seed(SEED), output_type="np").images[0]

    try:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        bench("txt2img", txt2img, 1, args.txt2img_reps)
        mem("after_txt2img")
    except Exception as e:
        traceback.print_exc()
        part.set("txt2img", {"error": repr(e)[:2000]})
    if mode == "compile" and part.d.get("compile") == "asked":
        part.set("compile", "ok")
    mem("end")
    part.set("now", "done")
    part.set("ok", True)
    return 0


# ------------------------------------------------------------------ weft


class NoPoll:
    """MemPoll's place where nothing may run beside the process."""

    peak = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class MemPoll:
    """The device's used memory (nvidia-smi, every 50 ms) while a command runs: the peak."""

    def __init__(self):
        self.peak = None
        self.proc = None

    def __enter__(self):
        try:
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                                          "-lms", "50"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            self.proc = None
            return self

        def read():
            for line in self.proc.stdout:
                try:
                    v = float(line.strip().split(",")[0])
                except ValueError:
                    continue
                self.peak = v if self.peak is None else max(self.peak, v)

        self.thread = threading.Thread(target=read, daemon=True)
        self.thread.start()
        time.sleep(0.2)
        return self

    def __exit__(self, *exc):
        if self.proc:
            time.sleep(0.2)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.thread.join(timeout=2)
        return False


def baseline_used():
    """The device's used MiB before a run (nvidia-smi), or None."""
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                           capture_output=True, text=True, timeout=20)
        return float(r.stdout.strip().split("\n")[0])
    except Exception:
        return None


def weft_run(args, precision, vram=None, timeout=300, poll=True):
    """`weft run graphs/txt2img.yaml` on the folder, a fresh process: status, seconds, node ms,
    polled device memory (poll=False: none, and nothing beside the process -- nvidia-smi's
    polling doubles a process's start and end, tools/gpu/fresh_runs.sh)."""
    folder = os.path.join(args.work, "sd15_random")
    odir = os.path.join(args.work, "weft_out")
    os.makedirs(odir, exist_ok=True)
    for p in glob.glob(os.path.join(odir, "*.png")):
        os.remove(p)
    L = 16 if args.tiny else 64
    sets = {"ckpt": folder, "prompt": PROMPT, "negative": NEGATIVE, "seed": SEED, "steps": STEPS, "cfg": CFG,
            "sampler": "euler", "scheduler": "normal", "width": 8 * L, "height": 8 * L, "prefix": "bench"}
    cmd = [os.path.join(args.build, "cli", "weft"), "run", os.path.join(REPO, "graphs", "txt2img.yaml"), "--device",
           args.device, "--output-dir", odir, "--events", "json"]
    if vram:
        cmd += ["--vram", vram]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    log(f"run (WEFT_PRECISION={precision}): " + " ".join(cmd))
    r = {"cmd": " ".join(cmd[1:]), "precision_env": precision, "vram": vram}
    base = baseline_used() if args.device == "cuda" and poll else None
    t0 = time.perf_counter()
    # each stdout line stamped as it arrives (weft flushes every event): how long the
    # process took to reach its first event and to exit after its last
    arrived = []
    with (MemPoll() if poll else NoPoll()) as mp:
        err_file = tempfile.TemporaryFile(mode="w+")
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err_file, text=True, env=sub_env(precision))
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        for line in p.stdout:
            arrived.append((time.perf_counter() - t0, line))
        p.wait()
        timed_out = not timer.is_alive() and p.returncode < 0
        timer.cancel()
        err_file.seek(0)
        err = err_file.read()
        err_file.close()
        rc = "timeout" if timed_out else p.returncode
        out = "".join(line for _, line in arrived)
    r["wall_s"] = round(time.perf_counter() - t0, 3)
    if arrived:
        r["first_event_s"] = round(arrived[0][0], 3)
        r["exit_after_last_event_s"] = round(r["wall_s"] - arrived[-1][0], 3)
    r["exit"] = rc
    nodes = {}
    for line in out.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        # when each node started and ended and what it said (where a fresh run's time goes)
        if ev.get("event") in ("run_start", "node_start", "node_done", "log", "run_done"):
            r.setdefault("timeline", []).append(
                [ev.get("t"), ev.get("event"), ev.get("op") or "", str(ev.get("message", ""))[:160]])
        if ev.get("event") == "node_done":
            nodes[ev.get("op")] = round(nodes.get(ev.get("op"), 0) + ev.get("ms", 0), 1)
        if ev.get("event") == "run_done":
            r["status"] = ev.get("status")
            r["graph_s"] = ev.get("t")
        if ev.get("event") == "error" or ev.get("event") == "node_error":
            r.setdefault("errors", []).append(ev)
        # each model node's "device high-water N MiB" line: weft's allocator (issue 9's
        # high-water target), the CUDA context outside it
        msg = str(ev.get("message", ""))
        m = re.search(r"device high-water (\d+) MiB", msg)
        if ev.get("event") == "log" and m:
            r["allocator_high_water_mib"] = max(r.get("allocator_high_water_mib", 0), int(m.group(1)))
            r.setdefault("high_water_lines", []).append(msg)
        # the checkpoint loader's phases (a debug line: masters, device start, copies)
        if ev.get("event") == "log" and msg.startswith("loaded in "):
            r["load_phases"] = msg
    r["node_ms"] = nodes
    r["png"] = bool(glob.glob(os.path.join(odir, "*.png")))
    if base is not None:
        r["device_used_before_mib"] = base
    if mp.peak is not None:
        r["device_used_peak_mib"] = mp.peak
        if base is not None:
            r["device_peak_over_baseline_mib"] = mp.peak - base
    r["stderr_tail"] = err[-3000:]
    r["ok"] = rc == 0 and r["png"]
    for line in err.strip().splitlines()[-8:]:
        log(f"  weft: {line}")
    log(f"weft run{' --vram ' + vram if vram else ''}: exit {rc}, {r['wall_s']:.2f} s (first event at "
        f"{r.get('first_event_s')} s, exit {r.get('exit_after_last_event_s')} s after the last), nodes {nodes}, "
        f"device peak {mp.peak} MiB (before {base})")
    return r


def cmd_weft(args):
    prec = args.precision
    part = Part(args.parts, f"weft_{prec}", precision_env=prec)
    folder = os.path.join(args.work, "sd15_random")
    L = 16 if args.tiny else 64
    js = os.path.join(args.work, f"sd_forward_bench_{prec}.json")
    if os.path.exists(js):
        os.remove(js)
    cmd = [os.path.join(args.build, "tools", "gpu", "sd_forward"), "--device", args.device, "--model", folder,
           "--bench", js, "--latent", str(L), "--steps", str(STEPS), "--reps", str(args.reps), "--txt2img-reps",
           str(args.txt2img_reps)]
    if args.device == "cpu":
        cmd += ["--threads", str(args.threads)]
    log(f"run (WEFT_PRECISION={prec}): " + " ".join(cmd))
    t0 = time.perf_counter()
    try:
        rc = subprocess.run(cmd, timeout=args.timeout, env=sub_env(prec)).returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    part.set("sd_forward_exit", rc)
    part.set("sd_forward_wall_s", round(time.perf_counter() - t0, 2))
    try:
        with open(js) as f:
            part.set("model", json.load(f))
    except Exception as e:  # a run cut short leaves a JSON file without its end
        part.set("model", {"error": f"reading {js}: {e!r}"})
        try:
            part.set("model_partial_text", open(js).read()[-4000:])
        except OSError:
            pass
    # the graph in this process, as `weft run` runs it (the plugin's weights: 16-bit matrices in
    # fp16/bf16 precision), warm runs after a first one
    gj = os.path.join(args.work, f"sd_forward_graph_{prec}.json")
    if os.path.exists(gj):
        os.remove(gj)
    cmd = [os.path.join(args.build, "tools", "gpu", "sd_forward"), "--device", args.device, "--model", folder,
           "--bench-graph", os.path.join(REPO, "graphs", "txt2img.yaml"), "--bench", gj, "--latent", str(L),
           "--steps", str(STEPS), "--txt2img-reps", str(args.txt2img_reps)]
    if args.device == "cpu":
        cmd += ["--threads", str(args.threads)]
    log(f"run (WEFT_PRECISION={prec}): " + " ".join(cmd))
    try:
        grc = subprocess.run(cmd, timeout=args.timeout, env=sub_env(prec)).returncode
    except subprocess.TimeoutExpired:
        grc = "timeout"
    part.set("graph_exit", grc)
    try:
        with open(gj) as f:
            part.set("graph", json.load(f))
    except Exception as e:
        part.set("graph", {"error": f"reading {gj}: {e!r}"})
    if not args.no_run:
        # two fresh processes on a cache folder of their own: the first compiles cuDNN's
        # runtime-compiled plans and keeps them (WEFT_CACHE_DIR), the second reads them
        os.environ["WEFT_CACHE_DIR"] = tempfile.mkdtemp(prefix="weft-plans-")
        part.set("weft_run", weft_run(args, prec, timeout=max(30, args.timeout)))
        part.set("weft_run_kept", weft_run(args, prec, timeout=max(30, args.timeout)))
        part.set("weft_run_alone", weft_run(args, prec, timeout=max(30, args.timeout), poll=False))
        del os.environ["WEFT_CACHE_DIR"]
    part.set("ok", rc == 0)
    return 0 if rc == 0 else 1


def cmd_vram(args):
    part = Part(args.parts, "weft_vram", limit=VRAM_LIMIT, precision_env=args.precision)
    part.set("weft_run", weft_run(args, args.precision, vram=VRAM_LIMIT, timeout=args.timeout))
    part.set("ok", part.d["weft_run"]["ok"])
    return 0


# ------------------------------------------------------------------ report


def load_parts(out):
    parts = {}
    for p in sorted(glob.glob(os.path.join(out, "part_*.json"))):
        try:
            with open(p) as f:
                d = json.load(f)
            parts[d["name"]] = d
        except Exception as e:
            parts[os.path.basename(p)] = {"error": repr(e)}
    return parts


def ms(t):
    return f"{t['median_s'] * 1000:.1f}" if isinstance(t, dict) and "median_s" in t else "-"


def sec(t):
    return f"{t['median_s']:.2f}" if isinstance(t, dict) and "median_s" in t else "-"


def mib(v):
    return f"{v / MiB:.0f}" if isinstance(v, (int, float)) else "-"


STAGE_OF = {"diffusers_eager": "eager", "diffusers_compile": "compile", "weft_fp16": "weft16", "weft_fp32": "weft32",
            "weft_vram": "vram"}


def table(b):
    """The Markdown table of bench.json."""
    p = b["parts"]

    def status(part):
        """' [stage timed out ...]' when the part's stage did not end well."""
        st = b.get("stages", {}).get(STAGE_OF.get(part, ""), "")
        return "" if not st or st.startswith("ok") else f" [stage {st}]"

    env = b.get("env", {})
    rows = []
    rows.append(f"GPU: {env.get('gpu', '?')} (driver {env.get('driver', '?')}); {env.get('cores', '?')} CPU cores; "
                f"nvcc {env.get('nvcc', '?')}; weft {env.get('weft_commit', '?')}; date {b.get('date')}.")
    v = (p.get("diffusers_eager") or p.get("diffusers_compile") or {}).get("versions", {})
    if v:
        rows.append(f"torch {v.get('torch')} (CUDA {v.get('cuda')}, cuDNN {v.get('cudnn')}), diffusers "
                    f"{v.get('diffusers')}, transformers {v.get('transformers')}, Python {v.get('python')}.")
    rows.append("")
    rows.append("| | UNet step, batch 2, 64x64 (ms) | VAE decode 512x512 (ms) | text encoder, 2x77 (ms) | "
                "txt2img 512x512, 20 steps, CFG 7.5 (s) | peak, own counter (MiB) | peak, device used (MiB) |")
    rows.append("|---|---|---|---|---|---|---|")
    for prec in ("fp16", "fp32", "bf16"):
        w = p.get(f"weft_{prec}")
        if not w:
            continue
        m = w.get("model", {})
        got = m.get("precision", "?")
        m2 = m.get("mem_after_txt2img", {})
        me = m.get("mem_end", {})
        gr = w.get("graph", {})
        if gr:
            nd = {k[5:]: v for k, v in gr.items() if k.startswith("warm_") and k != "warm_total"}
            rows.append(f"| weft, WEFT_PRECISION={prec}, graphs/txt2img.yaml in process, warm{status('weft_' + prec)} | "
                        f"- | {ms(nd.get('VAEDecode'))} (node) | {ms(nd.get('CLIPTextEncode'))} (node, 1 prompt) | "
                        f"{sec(gr.get('warm_total'))} (sampling {sec(nd.get('KSampler'))}) | - | "
                        f"{mib(gr.get('cuda_used_end'))} (after the first run: {mib(gr.get('cuda_used_after_first'))}) |")
        rows.append(f"| weft, WEFT_PRECISION={prec} (ran: {got}), model code, weights as the graph keeps them{status('weft_' + prec)} | "
                    f"{ms(m.get('unet_step'))} (a sampler step: {ms(m.get('unet_step_sampler'))}) | "
                    f"{ms(m.get('vae_decode'))} | {ms(m.get('clip_batch2'))} | {sec(m.get('txt2img_total'))} | "
                    f"{mib(m2.get('weft_peak_reserved'))} reserved, {mib(m2.get('weft_peak_in_use'))} in use "
                    f"(end: {mib(me.get('weft_peak_reserved'))}) | {mib(m2.get('cuda_used'))} "
                    f"(end: {mib(me.get('cuda_used'))}) |")
    for key, label in (("diffusers_eager", "diffusers {}, eager"), ("diffusers_compile", "diffusers {}, torch.compile")):
        d = p.get(key)
        if not d:
            continue
        label = label.format(d.get("dtype", "?"))
        if key == "diffusers_compile":
            label += f" ({d.get('compile_mode')}; {d.get('compile', '?')}"
            fw = [f"{k.split('_')[0]} {d[k]['warmup_s'][0]:.0f} s" for k in ("unet_step", "vae_decode", "txt2img")
                  if isinstance(d.get(k), dict) and d[k].get("warmup_s")]
            if fw:
                label += "; first calls: " + ", ".join(fw)
            if d.get("now") != "done":
                label += f"; stopped in {d.get('now')}"
            label += ")"
        label += status(key)
        m2 = d.get("mem_after_txt2img", {})
        me = d.get("mem_end", {})
        rows.append(f"| {label} | {ms(d.get('unet_step'))} | {ms(d.get('vae_decode'))} | {ms(d.get('clip_batch2'))} | "
                    f"{sec(d.get('txt2img'))} | {mib(m2.get('torch_max_reserved'))} reserved, "
                    f"{mib(m2.get('torch_max_allocated'))} allocated (process: {mib(me.get('torch_max_allocated'))}) | "
                    f"{mib(m2.get('cuda_used'))} (end: {mib(me.get('cuda_used'))}) |")
    rows.append("")
    rows.append("| `weft run graphs/txt2img.yaml` (fresh process) | exit | wall (s) | load (s) | sampling (s) | "
                "decode (s) | device used, peak (MiB, nvidia-smi) | weft's allocator, high-water (MiB) |")
    rows.append("|---|---|---|---|---|---|---|---|")
    runs = []
    for prec in ("fp16", "fp32", "bf16"):
        runs.append((f"WEFT_PRECISION={prec}", p.get(f"weft_{prec}", {}).get("weft_run")))
        runs.append((f"WEFT_PRECISION={prec}, again (plans kept)", p.get(f"weft_{prec}", {}).get("weft_run_kept")))
        runs.append((f"WEFT_PRECISION={prec}, again, alone (no nvidia-smi polling)",
                     p.get(f"weft_{prec}", {}).get("weft_run_alone")))
    runs.append((f"--vram {VRAM_LIMIT}, WEFT_PRECISION={p.get('weft_vram', {}).get('precision_env')}",
                 p.get("weft_vram", {}).get("weft_run")))
    for label, r in runs:
        if not r:
            continue
        n = r.get("node_ms", {})

        def s(op):
            return f"{n[op] / 1000:.2f}" if op in n else "-"

        rows.append(f"| {label} | {r.get('exit')} | {r.get('wall_s')} | {s('CheckpointLoaderSimple')} | {s('KSampler')} | "
                    f"{s('VAEDecode')} | {r.get('device_used_peak_mib', '-')} (before: {r.get('device_used_before_mib', '-')}) | "
                    f"{r.get('allocator_high_water_mib', '-')} |")
    vr = p.get("weft_vram", {}).get("weft_run")
    if vr and not vr.get("ok"):
        tail = " ".join(vr.get("stderr_tail", "").strip().splitlines()[-3:])[:400]
        rows.append("")
        rows.append(f"--vram {VRAM_LIMIT} failed: {tail}")
    rows.append("")
    ck = b.get("check")
    if ck:
        cn = [v.get("ok") for k, v in ck.get("compare", {}).items() if k.startswith("cnet.")]
        nres = len([k for k in ck.get("compare", {}) if k.startswith("cnet.down.") or k == "cnet.mid"])
        rows.append(f"Correctness (tools/gpu/sd15_check.py, sd15_results.json): all within tolerance: "
                    f"{ck.get('all_ok')}; fp32 models {ck.get('models_within_tolerance')}; "
                    f"fp16 precision {ck.get('weft_fp16_within_bound')}; ControlNet ({nres} residuals + controlled "
                    f"UNet, fp32 bound): {all(cn) if cn else 'not compared'}.")
        rows.append("")
    for k, v in b.get("stages", {}).items():
        rows.append(f"- stage {k}: {v}")
    return "\n".join(rows) + "\n"


def cmd_report(args):
    b = {"date": now_iso(), "parts": load_parts(args.parts), "stages": {}}
    envf = os.path.join(args.parts, "env.json")
    try:
        with open(envf) as f:
            b["env"] = json.load(f)
    except Exception:
        b["env"] = {}
    stf = os.path.join(args.parts, "stages.txt")
    try:
        with open(stf) as f:
            for line in f:
                k, _, v = line.strip().partition(" ")
                if k:
                    b["stages"][k] = v
    except OSError:
        pass
    chkf = os.path.join(args.out, "sd15_results.json")  # the correctness check, when it ran
    try:
        with open(chkf) as f:
            cr = json.load(f)
        b["check"] = {k: cr.get(k) for k in ("all_ok", "models_within_tolerance", "weft_fp16_within_bound",
                                             "stages", "txt2img")}
        b["check"]["compare"] = {k: {kk: v.get(kk) for kk in ("ok", "ok16", "weft_vs_fp32", "weft_vs_fp16",
                                                               "fp16_vs_fp32", "weft16_vs_fp32")}
                                 for k, v in cr.get("compare", {}).items()}
    except (OSError, ValueError):
        pass
    b["config"] = {"prompt": PROMPT, "negative": NEGATIVE, "cfg": CFG, "steps": STEPS, "seed": SEED,
                   "size": 128 if args.tiny else 512, "tiny": args.tiny, "vram_limit": VRAM_LIMIT,
                   "weights": "random, SD1.5 configs (tools/gpu/sd15_check.py), fp16 files"}
    with open(os.path.join(args.out, "bench.json"), "w") as f:
        json.dump(b, f, indent=1, sort_keys=True, default=str)
    t = table(b)
    with open(os.path.join(args.out, "bench_table.md"), "w") as f:
        f.write(t)
    print(t)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["make", "torch", "weft", "vram", "report"])
    ap.add_argument("--work", required=True, help="models and scratch (GBs at real size)")
    ap.add_argument("--out", required=True, help="report: bench.json and bench_table.md")
    ap.add_argument("--parts", default="", help="each stage's part_*.json, env.json, stages.txt (default: --out)")
    ap.add_argument("--build", default="", help="weft's meson build (cli/weft, tools/gpu/sd_forward)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--tiny", action="store_true", help="small models, 128x128 (a CPU rehearsal of the flow)")
    ap.add_argument("--mode", default="eager", choices=["eager", "compile"])
    ap.add_argument("--compile-mode", default="default", help="torch.compile's mode")
    ap.add_argument("--precision", default="fp16", help="WEFT_PRECISION for weft (fp16, fp32, bf16)")
    ap.add_argument("--reps", type=int, default=20, help="timed calls of the UNet, VAE, text encoder")
    ap.add_argument("--txt2img-reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads with --device cpu")
    ap.add_argument("--timeout", type=int, default=240, help="seconds for each weft command")
    ap.add_argument("--no-run", action="store_true", help="weft: sd_forward only, no `weft run`")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    args.parts = args.parts or args.out
    os.makedirs(args.parts, exist_ok=True)
    return {"make": cmd_make, "torch": cmd_torch, "weft": cmd_weft, "vram": cmd_vram, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
