"""The default model's txt2img in PyTorch, timed: bench_default's diffusers column.

The same model (models/default/weft-shapes-v1.safetensors loaded into diffusers'
UNet2DConditionModel and AutoencoderKL and transformers' CLIPTextModel by
tools/train/eval_default.py's Model) and the same sampling as graphs/txt2img.yaml: 128x128,
ComfyUI's euler + normal, 20 steps, CFG 4.5 (UNet batch 2), negative "".  Prints one JSON
line: best of --reps (by total wall time), wall and CPU (process user + system) seconds of
text encode (both prompts, one batch), sampling, VAE decode and the total.

    python3 tools/bench_default/bench_diffusers.py [--threads 2] [--reps 5]
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools", "train"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--tok", default="/tmp/weft_clip_tok")
    args = ap.parse_args()
    import diffusers
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    import configs
    import eval_default as ev

    if not os.path.exists(os.path.join(args.tok, "vocab.json")):
        from clip_tokenizer import build_tokenizer_dir

        build_tokenizer_dir(args.tok)
    m = ev.Model(os.path.join(ROOT, "models/default/weft-shapes-v1.safetensors"), args.tok)
    best = None
    with torch.no_grad():
        for r in range(args.reps + 1):  # the first run warms up
            clk = [(time.perf_counter(), time.process_time())]
            ctx = m.encode(["", "a red circle on a blue background"])
            clk.append((time.perf_counter(), time.process_time()))
            sigmas = ev.SCHED.normal(20)
            g = torch.Generator().manual_seed(1000 + r)
            x = torch.randn((1, 4, 16, 16), generator=g) * (1.0 + sigmas[0] ** 2) ** 0.5
            for i in range(20):
                s = sigmas[i]
                eu, ec = m.eps(torch.cat([x, x]), s, ctx).chunk(2)
                e = eu + (ec - eu) * 4.5
                denoised = x - e * s  # eval_default.py's euler step
                x = x + (x - denoised) / s * (sigmas[i + 1] - s)
            clk.append((time.perf_counter(), time.process_time()))
            m.vae.decode(x / configs.LATENT_SCALE)
            clk.append((time.perf_counter(), time.process_time()))
            t = [(clk[i + 1][0] - clk[i][0], clk[i + 1][1] - clk[i][1]) for i in range(3)]
            t.append((clk[3][0] - clk[0][0], clk[3][1] - clk[0][1]))
            if r > 0 and (best is None or t[3][0] < best[3][0]):
                best = t
    out = {"threads": args.threads, "reps": args.reps,
           "versions": f"torch {torch.__version__}, diffusers {diffusers.__version__}, "
                       f"transformers {transformers.__version__}"}
    for name, (w, c) in zip(("text", "sample", "decode", "total"), best):
        out[f"{name}_s"], out[f"{name}_cpu_s"] = round(w, 5), round(c, 5)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
