#!/usr/bin/env python3
"""weft's SD1.x models against diffusers at real SD1.5 size, with random weights (issue 7).

Developer tool (torch, diffusers, transformers, safetensors, numpy, Pillow); weft's build and
tests never run it.  On the GPU machine tools/gpu/run_sd15_check.sh builds weft and runs it
in one device call.  Stages, each writing its results as soon as it is done (fail soft):

  models   random-weight UNet2DConditionModel, AutoencoderKL and CLIPTextModel with SD1.5's
           configs (the libraries' own random init, fixed seeds; weights rounded to fp16 so
           fp32 and fp16 runs and weft read the same values), saved as a diffusers folder
           (fp16 safetensors, config.json files, scheduler, tokenizer from weft's CLIP BPE file)
  refs     inputs (token ids of a prompt and an empty negative, a batch-2 latent, timesteps,
           the text encoder's output as context, a latent to decode) and diffusers' outputs in
           fp32 (TF32 off) and fp16 -> WORK/io.safetensors
  pipe     diffusers StableDiffusionPipeline, EulerDiscreteScheduler ('linspace' spacing: the
           sigmas of ComfyUI's 'normal' scheduler), CFG 7.5, initial latent torch.randn on the
           CPU after manual_seed(seed) (ComfyUI's noise, which weft reproduces), fp32 and fp16
  cnet     a ControlNetModel of SD1.5's config: diffusers' ControlNetModel.from_unet (the
           UNet's encoder weights) with its zero-initialised convs (conditioning conv_out, the
           12 down and the mid 1x1 convs) drawn at random (torch's default conv init, seed
           1505; zero convs would make every residual 0), rounded to fp16, saved as a
           diffusers ControlNet folder (what ControlNetLoader reads); its residuals and the
           controlled UNet's output on the UNet check's inputs and a random hint in [0, 1),
           diffusers fp32 and fp16
  weft     tools/gpu/sd_forward (weft's sd_ckpt / sd_clip / sd_unet / sd_vae / sd_cnet on
           --device) on the folder and io.safetensors -> WORK/weft_<precision>.safetensors,
           compared; once per --weft-precisions entry (WEFT_PRECISION=fp32 and fp16: the CUDA
           backend's precision modes, where this build has them)
  txt2img  `weft run graphs/txt2img.yaml --device DEV --set ckpt=FOLDER ...` (euler, normal,
           the same seed, prompt, steps and CFG), its PNG compared with diffusers' images

Tolerances (stated, checked, printed): weft (fp32) vs diffusers fp32, max |a-b| / max |ref|
<= 1e-4 for every output; weft vs diffusers fp16: within 2x (+1e-6 relative) of diffusers' own
fp16-vs-fp32 error (weft computes in fp32; the difference is fp16's); weft in fp16 precision
(16-bit matrix products, fp32 activations): its max |a-b| to diffusers fp32 within 2x (+1e-6
relative) of diffusers fp16's own, i.e. no worse than twice diffusers' fp16 error; the same
bounds for the ControlNet's 13 residuals and the controlled UNet; the VAE image's PSNR is
reported (images mapped to [0, 1]); txt2img: PSNR of weft's 8-bit image vs diffusers fp16
>= 35 dB (issue 7), vs fp32 reported as well.

  python3 tools/gpu/sd15_check.py --work DIR --out DIR --build BUILD [--device cuda|cpu]
          [--tiny] [--latent 64] [--stages models,refs,cnet,pipe,weft,txt2img] [--deadline EPOCH]
          [--weft-precisions fp32,fp16] [--txt2img-precision fp16]
"""

import argparse
import datetime
import glob
import gzip
import json
import math
import os
import subprocess
import sys
import time
import traceback

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VOCAB_GZ = os.path.join(REPO, "nodes", "clip", "data", "bpe_simple_vocab_16e6.txt.gz")

SEED_UNET, SEED_VAE, SEED_TEXT, SEED_INPUTS, SEED_CNET = 1501, 1502, 1503, 1504, 1505
PROMPT = "a photograph of an astronaut riding a horse"
NEGATIVE = ""
CFG = 7.5
TIMESTEPS = [999.0, 261.0]  # one per row of the UNet batch
TOL_REL_FP32 = 1e-4
TXT2IMG_MIN_PSNR = 35.0

UNET_SD15 = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    center_input_sample=False,
    flip_sin_to_cos=True,
    freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    downsample_padding=1,
    mid_block_scale_factor=1,
    act_fn="silu",
    norm_num_groups=32,
    norm_eps=1e-5,
    cross_attention_dim=768,
    attention_head_dim=8,  # diffusers' SD1.x name for the number of heads
    use_linear_projection=False,
)
VAE_SD15 = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)
TEXT_SD15 = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    projection_dim=768,
    bos_token_id=49406,
    eos_token_id=49407,  # pooled output at the first EOS, as weft
    pad_token_id=49407,
)
# --tiny: the same topology, small (the CPU rehearsal of the whole flow)
UNET_TINY = dict(
    UNET_SD15,
    sample_size=16,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(32, 64),
    cross_attention_dim=32,
)
VAE_TINY = dict(VAE_SD15, block_out_channels=(32, 32, 32, 32), sample_size=128)
TEXT_TINY = dict(TEXT_SD15, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, projection_dim=32)
SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    steps_offset=1,
    timestep_spacing="leading",
    interpolation_type="linear",
    use_karras_sigmas=False,
)


def sub_env(precision=None):
    """The environment of weft's programs: run_sd15_check.sh's library path (the carried
    libraries) for them only, not for torch; WEFT_PRECISION when given (the CUDA backend's
    compute precision; builds without precision modes ignore it)."""
    env = dict(os.environ)
    if os.environ.get("WEFT_SD15_LD_LIBRARY_PATH"):
        env["LD_LIBRARY_PATH"] = os.environ["WEFT_SD15_LD_LIBRARY_PATH"]
    if precision:
        env["WEFT_PRECISION"] = precision
    return env


def log(msg):
    print(f"[sd15_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Results:
    """The results so far; written to OUT/sd15_results.json and sd15_table.md after each stage."""

    def __init__(self, out, args):
        self.out = out
        self.d = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "args": {k: v for k, v in vars(args).items()},
            "stages": {},
            "compare": {},
            "txt2img": {},
            "tolerances": {
                "weft_vs_fp32_rel": TOL_REL_FP32,
                "weft_vs_fp16": "<= 2 x diffusers fp16-vs-fp32 error + 1e-6 x max|ref|",
                "txt2img_psnr_vs_fp16_db": TXT2IMG_MIN_PSNR,
            },
        }

    def stage(self, name, status, **kw):
        self.d["stages"][name] = {"status": status, **kw}
        self.write()

    def write(self):
        os.makedirs(self.out, exist_ok=True)
        tmp = os.path.join(self.out, "sd15_results.json.tmp")
        with open(tmp, "w") as f:
            json.dump(self.d, f, indent=1, sort_keys=True, default=str)
        os.replace(tmp, os.path.join(self.out, "sd15_results.json"))
        table = self.table()
        with open(os.path.join(self.out, "sd15_table.md"), "w") as f:
            f.write(table)

    def table(self):
        rows = ["| output | max abs ref | weft vs fp32: max abs | rel | weft vs fp16: max abs | rel | "
                "diffusers fp16 vs fp32: max abs | rel | PSNR weft/fp32, weft/fp16, fp16/fp32 (dB) | ok | "
                "weft fp16 vs fp32: max abs | rel | ok |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for k, c in self.d["compare"].items():
            a, b, h = c.get("weft_vs_fp32", {}), c.get("weft_vs_fp16", {}), c.get("fp16_vs_fp32", {})
            w16 = c.get("weft16_vs_fp32", {})

            def g(x, key, fmt="%.2e"):
                return fmt % x[key] if key in x and x[key] is not None else "-"

            psnr = "-"
            if "psnr_db" in a:
                psnr = " / ".join(g(x, "psnr_db", "%.1f") for x in (a, b, h))
            rows.append(f"| {k} | {c.get('max_ref', 0):.3g} | {g(a, 'max_abs')} | {g(a, 'rel')} | "
                        f"{g(b, 'max_abs')} | {g(b, 'rel')} | {g(h, 'max_abs')} | {g(h, 'rel')} | {psnr} | "
                        f"{c.get('ok', '-')} | {g(w16, 'max_abs')} | {g(w16, 'rel')} | {c.get('ok16', '-')} |")
        t = self.d.get("txt2img", {})
        if t:
            rows.append("")
            rows.append("| txt2img (8-bit images) | PSNR dB | max diff /255 | mean abs diff /255 |")
            rows.append("|---|---|---|---|")
            for k, v in t.items():
                if isinstance(v, dict) and "psnr_db" in v:
                    rows.append(f"| {k} | {v['psnr_db']:.2f} | {v['max_diff']} | {v['mean_abs_diff']:.3f} |")
        rows.append("")
        for k, v in self.d["stages"].items():
            rows.append(f"- {k}: {v.get('status')} {v.get('seconds', '')}s {v.get('error', '')}".rstrip())
        return "\n".join(rows) + "\n"


# ------------------------------------------------------------------ models


def bytes_to_unicode():
    """GPT-2/CLIP's byte -> printable character table (as open_clip's and transformers')."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def write_tokenizer(folder):
    """transformers' CLIPTokenizer files made from weft's own CLIP BPE file (what SD1.5 ships)."""
    from transformers import CLIPTokenizer

    with gzip.open(VOCAB_GZ) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    tokens = list(bytes_to_unicode().values())
    tokens = tokens + [t + "</w>" for t in tokens] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == 49408, len(vocab)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
    cfg = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "bos_token": "<|startoftext|>",
           "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
           "do_lower_case": True}
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    tok = CLIPTokenizer.from_pretrained(folder)
    ids = tok("a photo of a cat")["input_ids"]
    if ids != [49406, 320, 1125, 539, 320, 2368, 49407]:
        raise RuntimeError(f"tokenizer self-check failed: {ids}")
    return tok


@torch.no_grad()
def build_models(tiny, dev):
    """The three models, fp32, eval, on dev, with their libraries' default random init under
    fixed seeds, every weight rounded to fp16 (so fp32 references, fp16 runs and the fp16
    files hold the same values)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    ucfg, vcfg, tcfg = (UNET_TINY, VAE_TINY, TEXT_TINY) if tiny else (UNET_SD15, VAE_SD15, TEXT_SD15)
    with torch.device(dev):
        torch.manual_seed(SEED_UNET)
        unet = UNet2DConditionModel(**ucfg)
        torch.manual_seed(SEED_VAE)
        vae = AutoencoderKL(**vcfg)
        torch.manual_seed(SEED_TEXT)
        te = CLIPTextModel(CLIPTextConfig(**tcfg))
    for m in (unet, vae, te):
        m.eval().requires_grad_(False)
        for p in m.parameters():
            p.copy_(p.half().float())
        for b in m.buffers():
            if b.is_floating_point():
                b.copy_(b.half().float())
    return unet, vae, te


def text_state_dict(te):
    """CLIPTextModel weights with the 'text_model.' prefix SD1.5 folders use (transformers 5
    may name them without it)."""
    out = {}
    for k, v in te.state_dict().items():
        if k.endswith("position_ids"):
            continue
        out[k if k.startswith("text_model.") else "text_model." + k] = v
    return out


def save_folder(unet, vae, te, folder):
    import diffusers
    from diffusers import EulerDiscreteScheduler
    from safetensors.torch import save_file

    def half(sd):
        return {k: v.detach().to(torch.float16).contiguous().cpu() for k, v in sd.items()}

    for name, m in (("unet", unet), ("vae", vae)):
        d = os.path.join(folder, name)
        os.makedirs(d, exist_ok=True)
        m.save_config(d)
        save_file(half(m.state_dict()), os.path.join(d, "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
    d = os.path.join(folder, "text_encoder")
    os.makedirs(d, exist_ok=True)
    cfg = te.config
    cfg.architectures = ["CLIPTextModel"]
    cfg.to_json_file(os.path.join(d, "config.json"))
    save_file(half(text_state_dict(te)), os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    EulerDiscreteScheduler(**SCHEDULER).save_pretrained(os.path.join(folder, "scheduler"))
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)


@torch.no_grad()
def build_controlnet(unet, dev):
    """diffusers' ControlNetModel.from_unet (SD1.5's ControlNet config, the UNet's encoder
    weights), its zero-initialised convs drawn at random (seed SEED_CNET), rounded to fp16."""
    from diffusers import ControlNetModel

    with torch.device(dev):
        cn = ControlNetModel.from_unet(unet)
    cn = cn.to(dev).eval().requires_grad_(False)
    torch.manual_seed(SEED_CNET)
    for conv in [cn.controlnet_cond_embedding.conv_out, *cn.controlnet_down_blocks, cn.controlnet_mid_block]:
        conv.reset_parameters()  # torch's default init instead of zeros
    for p in cn.parameters():
        p.copy_(p.half().float())
    return cn


def save_controlnet(cn, folder):
    """A diffusers ControlNet folder: config.json and diffusion_pytorch_model.safetensors (fp16)."""
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    cn.save_config(folder)
    sd = {k: v.detach().to(torch.float16).contiguous().cpu() for k, v in cn.state_dict().items()}
    save_file(sd, os.path.join(folder, "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})


@torch.no_grad()
def cnet_references(cn, unet, io, dev, fp16):
    """The ControlNet's inputs (the UNet check's x, t and context, a random hint in [0, 1) of
    8x the latent) and diffusers' residuals (flattened per row, as sd_forward writes them) and
    controlled UNet output, fp32 and fp16, added to io."""
    x, t, ctx = io["unet.x"], io["unet.t"], io["unet.ctx"]
    g = torch.Generator().manual_seed(SEED_CNET)
    hint = torch.rand([x.shape[0], 3, x.shape[2] * 8, x.shape[3] * 8], generator=g)
    io.update({"cnet.x": x.clone(), "cnet.t": t.clone(), "cnet.ctx": ctx.clone(), "cnet.hint": hint})
    b = x.shape[0]

    def run(dtype, cn_, unet_):
        o = {}
        a = dict(encoder_hidden_states=ctx.to(dev, dtype))
        down, mid = cn_(x.to(dev, dtype), t.to(dev), controlnet_cond=hint.to(dev, dtype), conditioning_scale=1.0,
                        return_dict=False, **a)
        for i, d in enumerate(down):
            o[f"cnet.down.{i}"] = d.float().reshape(b, -1).cpu()
        o["cnet.mid"] = mid.float().reshape(b, -1).cpu()
        o["cnet.unet_out"] = unet_(x.to(dev, dtype), t.to(dev), down_block_additional_residuals=down,
                                   mid_block_additional_residual=mid, **a).sample.float().cpu()
        return o

    for k, v in run(torch.float32, cn, unet).items():
        io["fp32." + k] = v
    if fp16:
        cn16, unet16 = half_copy(cn), half_copy(unet)
        for k, v in run(torch.float16, cn16, unet16).items():
            io["fp16." + k] = v
        del cn16, unet16
    return io


def nparams(m):
    return sum(p.numel() for p in m.parameters())


# ------------------------------------------------------------------ references


def half_copy(m):
    import copy

    return copy.deepcopy(m).half()


@torch.no_grad()
def references(unet, vae, te, tok, latent, dev, fp16, path):
    """Inputs and diffusers' outputs (fp32, and fp16 when asked) -> path; returns the dict."""
    from safetensors.torch import save_file

    ids = tok([PROMPT, NEGATIVE], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    g = torch.Generator().manual_seed(SEED_INPUTS)
    x = torch.randn([2, 4, latent, latent], generator=g)
    z = torch.randn([1, 4, latent, latent], generator=g) / VAE_SD15["scaling_factor"]
    t = torch.tensor(TIMESTEPS, dtype=torch.float32)
    io = {"clip.input_ids": ids.to(torch.int64), "unet.x": x, "unet.t": t, "vae.z": z}

    def run(dtype, te_, unet_, vae_, ctx):
        o = {}
        r = te_(ids.to(dev))
        o["clip.last_hidden_state"] = r.last_hidden_state.float().cpu()
        o["clip.pooled"] = r.pooler_output.float().cpu()
        if ctx is None:
            ctx = o["clip.last_hidden_state"]
        o["unet.out"] = unet_(x.to(dev, dtype), t.to(dev), encoder_hidden_states=ctx.to(dev, dtype)).sample.float().cpu()
        o["vae.image"] = vae_.decode(z.to(dev, dtype)).sample.float().cpu()
        return o

    t0 = time.time()
    ref32 = run(torch.float32, te, unet, vae, None)
    io["unet.ctx"] = ref32["clip.last_hidden_state"].clone()  # the context for every run
    for k, v in ref32.items():
        io["fp32." + k] = v
    s32 = time.time() - t0
    if dev == "cuda":
        torch.cuda.synchronize()
    s16 = None
    if fp16:
        t0 = time.time()
        te16, unet16, vae16 = half_copy(te), half_copy(unet), half_copy(vae)
        ref16 = run(torch.float16, te16, unet16, vae16, io["unet.ctx"])
        for k, v in ref16.items():
            io["fp16." + k] = v
        del te16, unet16, vae16
        s16 = time.time() - t0
    save_file({k: v.contiguous() for k, v in io.items()}, path)
    for k, v in io.items():
        if v.is_floating_point():
            log(f"  {k:32s} {tuple(v.shape)} mean {v.double().mean():+.4f} std {v.double().std():.4f} "
                f"max|x| {v.abs().max():.4f} finite {bool(torch.isfinite(v).all())}")
    return io, s32, s16


# ------------------------------------------------------------------ comparisons


def err(a, ref):
    a, ref = a.double(), ref.double()
    d = (a - ref).abs()
    mref = ref.abs().max().item()
    r = {"max_abs": d.max().item(), "mean_abs": d.mean().item(), "rel": d.max().item() / mref if mref > 0 else None,
         "finite": bool(torch.isfinite(a).all())}
    if not r["finite"]:
        r["max_abs"] = r["rel"] = float("inf")
    return r


def psnr01(a, b):
    """PSNR of two images in [-1, 1] mapped to [0, 1] and clamped, as a pipeline shows them."""
    a = (a.double() / 2 + 0.5).clamp(0, 1)
    b = (b.double() / 2 + 0.5).clamp(0, 1)
    mse = ((a - b) ** 2).mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


MODEL_KEYS = ("clip.last_hidden_state", "clip.pooled", "unet.out", "vae.image")


def output_keys(weft):
    """The outputs to compare, in the table's order: the models', then the ControlNet's."""
    cn = sorted((k for k in weft if k.startswith("cnet.down.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    return list(MODEL_KEYS) + cn + ["cnet.mid", "cnet.unet_out"]


def compare16(io, weft, res, precision):
    """weft in a 16-bit precision vs diffusers fp32 / fp16: its error to fp32 within 2x (+1e-6
    relative) of diffusers fp16's own; returns True when every bound holds."""
    all_ok = True
    for k in output_keys(weft):
        if k not in weft or ("fp32." + k) not in io or k not in res.d["compare"]:
            continue
        c = res.d["compare"][k]
        ref32, w = io["fp32." + k], weft[k]
        if tuple(w.shape) != tuple(ref32.shape):
            c["weft16_error"] = f"shape {tuple(w.shape)} vs {tuple(ref32.shape)}"
            all_ok = False
            continue
        c["weft16_precision"] = precision
        c["weft16_vs_fp32"] = err(w, ref32)
        ok = math.isfinite(c["weft16_vs_fp32"]["max_abs"])
        if ("fp16." + k) in io:
            c["weft16_vs_fp16"] = err(w, io["fp16." + k])
            bound = 2 * c["fp16_vs_fp32"]["max_abs"] + 1e-6 * c["max_ref"]
            c["weft16_vs_fp32_bound"] = bound
            ok = ok and c["weft16_vs_fp32"]["max_abs"] <= bound
        if k == "vae.image":
            c["weft16_vs_fp32"]["psnr_db"] = psnr01(w, ref32)
        c["ok16"] = bool(ok)
        all_ok = all_ok and ok
        log(f"  {k:24s} weft {precision} vs fp32 max {c['weft16_vs_fp32']['max_abs']:.3e} "
            f"rel {c['weft16_vs_fp32']['rel']:.3e}"
            + (f" (diffusers fp16 vs fp32 {c['fp16_vs_fp32']['max_abs']:.3e})" if "fp16_vs_fp32" in c else "")
            + f" -> {'ok' if ok else 'FAIL'}")
    res.write()
    return all_ok


def compare(io, weft, res):
    """weft's outputs vs diffusers fp32 / fp16; returns True when every tolerance holds."""
    all_ok = True
    for k in output_keys(weft):
        if k not in weft or ("fp32." + k) not in io:
            continue
        ref32, w = io["fp32." + k], weft[k]
        if tuple(w.shape) != tuple(ref32.shape):
            res.d["compare"][k] = {"error": f"shape {tuple(w.shape)} vs {tuple(ref32.shape)}", "ok": False}
            all_ok = False
            continue
        c = {"shape": list(ref32.shape), "max_ref": ref32.abs().max().item(), "weft_vs_fp32": err(w, ref32)}
        ok = c["weft_vs_fp32"]["rel"] is not None and c["weft_vs_fp32"]["rel"] <= TOL_REL_FP32
        if ("fp16." + k) in io:
            ref16 = io["fp16." + k]
            c["weft_vs_fp16"] = err(w, ref16)
            c["fp16_vs_fp32"] = err(ref16, ref32)
            bound = 2 * c["fp16_vs_fp32"]["max_abs"] + 1e-6 * c["max_ref"]
            c["weft_vs_fp16_bound"] = bound
            ok = ok and c["weft_vs_fp16"]["max_abs"] <= bound
        if k == "vae.image":
            c["weft_vs_fp32"]["psnr_db"] = psnr01(w, ref32)
            if "weft_vs_fp16" in c:
                c["weft_vs_fp16"]["psnr_db"] = psnr01(w, io["fp16." + k])
                c["fp16_vs_fp32"]["psnr_db"] = psnr01(io["fp16." + k], ref32)
        c["ok"] = bool(ok)
        all_ok = all_ok and ok
        res.d["compare"][k] = c
        log(f"  {k:24s} weft vs fp32 max {c['weft_vs_fp32']['max_abs']:.3e} rel {c['weft_vs_fp32']['rel']:.3e}"
            + (f" | vs fp16 max {c['weft_vs_fp16']['max_abs']:.3e} (fp16 vs fp32 {c['fp16_vs_fp32']['max_abs']:.3e})"
               if "weft_vs_fp16" in c else "") + f" -> {'ok' if ok else 'FAIL'}")
    res.write()
    return all_ok


def img_cmp(a, b):
    """8-bit images [H, W, 3]: PSNR over 255, max and mean |diff|."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    mse = ((a - b) ** 2).mean()
    return {"psnr_db": float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse),
            "max_diff": int(np.abs(a - b).max()), "mean_abs_diff": float(np.abs(a - b).mean())}


# ------------------------------------------------------------------ txt2img


def comfy_noise(seed, latent):
    """comfy.sample.prepare_noise: torch.manual_seed(seed), then CPU randn (weft does the same)."""
    g = torch.manual_seed(seed)
    return torch.randn([1, 4, latent, latent], dtype=torch.float32, layout=torch.strided, generator=g, device="cpu")


@torch.no_grad()
def diffusers_txt2img(unet, vae, te, tok, dev, dtype, latent, steps, seed):
    """StableDiffusionPipeline + Euler ('linspace' = ComfyUI's 'normal' sigmas) from the given
    noise; returns the 8-bit image [H, W, 3] and the scheduler's sigmas."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    if dtype == torch.float16:
        te, unet, vae = half_copy(te), half_copy(unet), half_copy(vae)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet,
                                   scheduler=EulerDiscreteScheduler.from_config({**SCHEDULER, "timestep_spacing": "linspace"}),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    img = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, height=latent * 8, width=latent * 8, num_inference_steps=steps,
               guidance_scale=CFG, latents=comfy_noise(seed, latent).to(dtype), output_type="np").images[0]
    u8 = (img * 255).round().clip(0, 255).astype(np.uint8)  # diffusers' numpy_to_pil
    return u8, pipe.scheduler.sigmas.float().cpu().numpy()


def save_png(arr, path):
    from PIL import Image

    Image.fromarray(arr).save(path)


def load_png(path):
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


# ------------------------------------------------------------------ main


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="folder for the model and the tensors (GBs at real size)")
    ap.add_argument("--out", required=True, help="results: sd15_results.json, sd15_table.md, PNGs")
    ap.add_argument("--build", required=True, help="weft's meson build folder (tools/gpu/sd_forward, cli/weft)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--tiny", action="store_true", help="small models (rehearsal on the CPU)")
    ap.add_argument("--latent", type=int, default=0, help="latent size of the model check (default 64, tiny 16)")
    ap.add_argument("--txt2img-latent", type=int, default=0, help="latent size of txt2img (default 64, tiny 16)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=1, help="torch's CPU threads with --device cpu (2 on a "
                    "shared 2-core machine spin-wait each other)")
    ap.add_argument("--no-fp16", action="store_true", help="fp32 references only (fp16 on a CPU is slow)")
    ap.add_argument("--stages", default="models,refs,cnet,pipe,weft,txt2img")
    ap.add_argument("--weft-precisions", default="fp32,fp16", help="WEFT_PRECISION of each sd_forward run "
                    "(fp32 first: the 1e-4 check against diffusers fp32)")
    ap.add_argument("--txt2img-precision", default="fp16", help="WEFT_PRECISION of weft run's txt2img")
    ap.add_argument("--build-done", default="", help="wait for this file (the build's exit status) before weft runs")
    ap.add_argument("--deadline", type=float, default=0, help="epoch seconds: later stages are skipped past it")
    args = ap.parse_args()
    latent = args.latent or (16 if args.tiny else 64)
    t2i_latent = args.txt2img_latent or (16 if args.tiny else 64)
    stages = set(args.stages.split(","))
    dev = args.device
    fp16 = not args.no_fp16
    folder = os.path.join(args.work, "sd15_random")
    io_path = os.path.join(args.work, "io.safetensors")
    weft_path = os.path.join(args.work, "weft.safetensors")
    os.makedirs(args.work, exist_ok=True)
    res = Results(args.out, args)

    import diffusers
    import transformers

    env = {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
           "numpy": np.__version__, "python": sys.version.split()[0], "device": dev}
    if dev == "cuda":
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
        # fp32 references in true fp32: no TF32 in matmuls or convolutions (weft runs TF32 off)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    else:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    res.d["env"] = env
    res.d["config"] = {"tiny": args.tiny, "latent": latent, "txt2img_latent": t2i_latent, "prompt": PROMPT,
                       "negative": NEGATIVE, "timesteps": TIMESTEPS, "cfg": CFG, "steps": args.steps, "seed": args.seed,
                       "weights": "library default random init, seeds %d/%d/%d, rounded to fp16" % (SEED_UNET, SEED_VAE, SEED_TEXT)}
    res.write()
    log(f"env {env}")

    def left():
        return args.deadline - time.time() if args.deadline else 1e9

    def wait_build():
        if not args.build_done:
            return True
        while not os.path.exists(args.build_done):
            if left() < 5:
                return False
            time.sleep(0.5)
        with open(args.build_done) as f:
            return f.read().strip() == "0"

    unet = vae = te = tok = io = None
    ok_all = True
    # ---- models
    t0 = time.time()
    try:
        unet, vae, te = build_models(args.tiny, dev)
        tok = write_tokenizer(os.path.join(folder, "tokenizer"))
        if "models" in stages or not os.path.exists(os.path.join(folder, "unet", "config.json")):
            save_folder(unet, vae, te, folder)
        res.d["config"]["params"] = {"unet": nparams(unet), "vae": nparams(vae), "text_encoder": nparams(te)}
        res.stage("models", "ok", seconds=round(time.time() - t0, 1), folder=folder)
        log(f"models: {res.d['config']['params']} in {time.time() - t0:.1f} s -> {folder}")
    except Exception as e:
        traceback.print_exc()
        res.stage("models", "failed", error=repr(e))
        return 1

    # ---- references
    t0 = time.time()
    try:
        io, s32, s16 = references(unet, vae, te, tok, latent, dev, fp16, io_path)
        res.stage("refs", "ok", seconds=round(time.time() - t0, 1), fp32_s=round(s32, 2), fp16_s=s16 and round(s16, 2))
        log(f"references in {time.time() - t0:.1f} s -> {io_path}")
    except Exception as e:
        traceback.print_exc()
        res.stage("refs", "failed", error=repr(e))
        return 1

    # ---- ControlNet (its own folder beside the model's) and its references
    cnet_dir = os.path.join(folder, "controlnet")
    if "cnet" in stages:
        t0 = time.time()
        try:
            cn = build_controlnet(unet, dev)
            save_controlnet(cn, cnet_dir)
            res.d["config"]["params"]["controlnet"] = nparams(cn)
            cnet_references(cn, unet, io, dev, fp16)
            del cn
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in io.items()}, io_path)
            res.stage("cnet", "ok", seconds=round(time.time() - t0, 1), folder=cnet_dir)
            log(f"controlnet: {res.d['config']['params']['controlnet']} parameters, references in "
                f"{time.time() - t0:.1f} s -> {cnet_dir}")
        except Exception as e:
            traceback.print_exc()
            res.stage("cnet", "failed", error=repr(e))

    # ---- diffusers txt2img (while weft builds)
    pipe_imgs = {}
    if "pipe" in stages and "txt2img" in stages and left() < 90:
        res.stage("pipe", "skipped", error=f"{left():.0f} s left before the deadline: weft's model check first")
    elif "pipe" in stages and "txt2img" in stages:
        for name, dt in (("fp32", torch.float32), ("fp16", torch.float16)):
            if name == "fp16" and not fp16:
                continue
            t0 = time.time()
            try:
                u8, sig = diffusers_txt2img(unet, vae, te, tok, dev, dt, t2i_latent, args.steps, args.seed)
                pipe_imgs[name] = u8
                save_png(u8, os.path.join(args.out, f"txt2img_diffusers_{name}.png"))
                res.d["txt2img"]["diffusers_sigmas"] = [round(float(s), 5) for s in sig]
                res.stage(f"pipe_{name}", "ok", seconds=round(time.time() - t0, 1),
                          image_mean=float(u8.mean()), image_std=float(u8.std()),
                          saturated_fraction=float(((u8 == 0) | (u8 == 255)).mean()))
                log(f"diffusers txt2img {name}: {time.time() - t0:.1f} s, mean {u8.mean():.1f} std {u8.std():.1f}")
            except Exception as e:
                traceback.print_exc()
                res.stage(f"pipe_{name}", "failed", error=repr(e))
        try:  # the sigmas weft uses (ComfyUI's 'normal', ported in tools/fixtures) vs diffusers'
            sys.path.insert(0, os.path.join(REPO, "tools", "fixtures"))
            from sd15 import comfy_schedules as sch

            cs = sch.ksampler_sigmas(sch.DiscreteEps(), "normal", args.steps).float().numpy()
            ds = np.array(res.d["txt2img"]["diffusers_sigmas"], dtype=np.float64)
            res.d["txt2img"]["comfy_normal_vs_diffusers_linspace_max_sigma_diff"] = float(np.abs(cs - ds).max())
        except Exception as e:
            res.d["txt2img"]["comfy_sigmas_error"] = repr(e)
        if "fp16" in pipe_imgs and "fp32" in pipe_imgs:
            res.d["txt2img"]["diffusers_fp16_vs_fp32"] = img_cmp(pipe_imgs["fp16"], pipe_imgs["fp32"])
            res.write()

    # ---- weft: the three models and the ControlNet, once per precision
    if "weft" in stages:
        t0 = time.time()
        if not wait_build():
            res.stage("weft", "failed", error="weft's build failed or did not finish in time (build.log)")
            return 1
        res.d["build_wait_s"] = round(time.time() - t0, 1)
        exe = os.path.join(args.build, "tools", "gpu", "sd_forward")
        parts = "clip,unet,vae"
        extra = []
        if res.d["stages"].get("cnet", {}).get("status") == "ok":
            parts += ",cnet"
            extra = ["--control", cnet_dir]
        res.d["weft_meta"] = {}
        for i, prec in enumerate(p for p in args.weft_precisions.split(",") if p):
            name = f"weft_{prec}"
            if i > 0 and left() < 40:
                res.stage(name, "skipped", error=f"{left():.0f} s left before the deadline")
                continue
            out_path = os.path.join(args.work, f"{name}.safetensors")
            if os.path.exists(out_path):
                os.remove(out_path)
            cmd = [exe, "--device", dev, "--model", folder, "--in", io_path, "--out", out_path, "--parts", parts] + extra
            log(f"run (WEFT_PRECISION={prec}): " + " ".join(cmd))
            t0 = time.time()
            try:
                timeout = max(10, left() - 5) if args.deadline else None
                rc = subprocess.run(cmd, timeout=timeout, env=sub_env(prec)).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
            status = "ok" if rc == 0 else f"failed (exit {rc})"
            meta = {}
            try:
                from safetensors import safe_open
                from safetensors.torch import load_file

                weft = load_file(out_path) if os.path.exists(out_path) else {}
                if weft:
                    with safe_open(out_path, "pt") as f:
                        meta = f.metadata() or {}
            except Exception as e:
                weft = {}
                status += f"; reading {out_path}: {e!r}"
            res.d["weft_meta"][prec] = meta
            got = meta.get("precision", "")
            res.stage(name, status, seconds=round(time.time() - t0, 1), outputs=len(weft), precision=got)
            if not weft:
                ok_all = False
                continue
            if i == 0:  # the fp32 run: the 1e-4 check and the fp16 bound
                ok_all = compare(io, weft, res) and ok_all and rc == 0
                res.d["models_within_tolerance"] = bool(ok_all)
            elif got.startswith(prec):
                ok16 = compare16(io, weft, res, prec)
                res.d[f"weft_{prec}_within_bound"] = bool(ok16)
                ok_all = ok_all and ok16 and rc == 0
            else:
                res.d[f"weft_{prec}_within_bound"] = f"not checked: sd_forward ran in '{got}'"
                log(f"  WEFT_PRECISION={prec}: sd_forward reports precision '{got}': not compared")
            res.write()

    # ---- weft txt2img
    if "txt2img" in stages and left() < 30:
        res.stage("txt2img", "skipped", error=f"{left():.0f} s left before the deadline")
    elif "txt2img" in stages:
        t0 = time.time()
        if not wait_build():
            res.stage("txt2img", "failed", error="no weft build")
            return 1
        odir = os.path.join(args.work, "weft_out")
        os.makedirs(odir, exist_ok=True)
        for p in glob.glob(os.path.join(odir, "*.png")):
            os.remove(p)
        sets = {"ckpt": folder, "prompt": PROMPT, "negative": NEGATIVE, "seed": args.seed, "steps": args.steps,
                "cfg": CFG, "sampler": "euler", "scheduler": "normal", "width": t2i_latent * 8,
                "height": t2i_latent * 8, "prefix": "weft_sd15"}
        cmd = [os.path.join(args.build, "cli", "weft"), "run", os.path.join(REPO, "graphs", "txt2img.yaml"), "--device",
               dev, "--output-dir", odir, "--events", "none"]
        for k, v in sets.items():
            cmd += ["--set", f"{k}={v}"]
        log("run: " + " ".join(cmd))
        try:
            timeout = max(10, left() - 3) if args.deadline else None
            rc = subprocess.run(cmd, timeout=timeout, env=sub_env(args.txt2img_precision)).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        res.d["txt2img"]["weft_precision_env"] = args.txt2img_precision
        pngs = sorted(glob.glob(os.path.join(odir, "*.png")))
        if rc != 0 or not pngs:
            res.stage("txt2img", f"failed (exit {rc})", seconds=round(time.time() - t0, 1))
            ok_all = False
        else:
            w = load_png(pngs[-1])
            save_png(w, os.path.join(args.out, "txt2img_weft.png"))
            for name, img in pipe_imgs.items():
                if img.shape != w.shape:
                    res.d["txt2img"][f"weft_vs_diffusers_{name}"] = {"error": f"shape {w.shape} vs {img.shape}"}
                    continue
                res.d["txt2img"][f"weft_vs_diffusers_{name}"] = img_cmp(w, img)
            c16 = res.d["txt2img"].get("weft_vs_diffusers_fp16", {})
            ok = "psnr_db" in c16 and c16["psnr_db"] >= TXT2IMG_MIN_PSNR
            res.d["txt2img"]["psnr_vs_fp16_ok"] = bool(ok)
            res.stage("txt2img", "ok", seconds=round(time.time() - t0, 1),
                      image_mean=float(w.mean()), image_std=float(w.std()))
            for k, v in res.d["txt2img"].items():
                if isinstance(v, dict) and "psnr_db" in v:
                    log(f"  txt2img {k}: PSNR {v['psnr_db']:.2f} dB, max diff {v['max_diff']}/255")
            ok_all = ok_all and (ok or not fp16)
    res.d["all_ok"] = bool(ok_all)
    res.write()
    print(res.table())
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
