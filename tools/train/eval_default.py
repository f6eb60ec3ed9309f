"""Evaluates weft's default model on the CPU: prompt following, ControlNet placement, LoRA style, speed.

Sampling is ComfyUI's KSampler with sampler euler, scheduler normal (SD1.x discrete
schedule, log-sigma interpolation, integer timesteps to the UNet; its sigmas equal diffusers'
EulerDiscreteScheduler(timestep_spacing="linspace") to 2e-5, which passes fractional
timesteps instead), initial noise
torch.randn(seed) on the CPU scaled by sqrt(1 + sigma_max^2), CFG uncond + cfg*(cond-uncond),
negative prompt ""), the same settings the weft tests use. The checks are plain pixel
statistics a C test can repeat (see check_image):

  background colour = nearest palette colour to the per-channel median of the 3-pixel border;
  shape pixels      = RGB distance to that median > 60; blob = largest 4-connected component;
  shape colour      = nearest palette colour to the per-channel median of the blob;
  shape             = fill (blob area / bbox area) >= 0.88 square, >= 0.66 circle, else
                      solidity (blob area / convex hull area) >= 0.80 triangle, else star;
  outline (LoRA)    = hollow: the 5x5 median colour at the centre of the blob's bounding box is
                      nearer the background colour than the blob's median colour (also reported:
                      interior = blob area / area of the blob with holes filled);
  ControlNet        = the blob's centroid pixel lies where the hint mask is > 0.5.

    python3 tools/train/eval_default.py --ckpt models/default/weft-shapes-v1.safetensors \\
        [--controlnet models/default/weft-shapes-controlnet.safetensors] \\
        [--lora models/default/weft-shapes-outline-lora.safetensors] [--grid out.png] [--json out.json]
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import configs  # noqa: E402
import convert_original as co  # noqa: E402
import lora as loralib  # noqa: E402
import shapes  # noqa: E402


# ---------------------------------------------------------------- ComfyUI euler + normal
class DiscreteSchedule:
    """ComfyUI's ModelSamplingDiscrete for SD1.x (scaled_linear 0.00085..0.012, 1000 steps)."""

    def __init__(self):
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
        ac = torch.cumprod(1.0 - betas, dim=0)
        self.sigmas = (((1 - ac) / ac) ** 0.5).float()
        self.log_sigmas = self.sigmas.log()

    def sigma(self, t):
        t = torch.clamp(torch.as_tensor(t, dtype=torch.float32), 0, 999)
        lo, hi, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[lo] + w * self.log_sigmas[hi]).exp()

    def timestep(self, sigma):
        return (sigma.log() - self.log_sigmas[:, None]).abs().argmin(dim=0).view(sigma.shape)

    def normal(self, steps):
        start = float(self.timestep(self.sigmas[-1:]))
        end = float(self.timestep(self.sigmas[:1]))
        ts = torch.linspace(start, end, steps)
        return torch.cat([torch.stack([self.sigma(t) for t in ts]), torch.zeros(1)])


SCHED = DiscreteSchedule()


class Model:
    def __init__(self, ckpt, tok_dir, controlnet=None, lora=None, lora_strength=1.0):
        self.unet, self.vae, self.te = configs.make_unet(), configs.make_vae(), configs.make_text()
        sd = load_file(ckpt)
        co.from_original(sd, self.unet, self.vae, self.te)
        if lora:
            n = loralib.merge_kohya(self.unet, self.te, load_file(lora), lora_strength)
            assert n > 0
        self.cn = None
        if controlnet:
            self.cn = configs.make_controlnet(self.unet)
            co.controlnet_from_original(load_file(controlnet), self.cn)
            self.cn.eval()
        for m in (self.unet, self.vae, self.te):
            m.eval()
        from clip_tokenizer import load_tokenizer

        self.tok = load_tokenizer(tok_dir)

    @torch.no_grad()
    def encode(self, texts):
        ids = self.tok(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        return self.te(ids).last_hidden_state

    @torch.no_grad()
    def eps(self, x, sigma, ctx, hint=None, cn_strength=1.0):
        c_in = 1.0 / (sigma ** 2 + 1) ** 0.5
        t = SCHED.timestep(sigma.reshape(1)).float().expand(x.shape[0])
        xin = x * c_in
        kw = {}
        if self.cn is not None and hint is not None:
            down, mid = self.cn(xin, t, encoder_hidden_states=ctx, controlnet_cond=hint, return_dict=False)
            kw = dict(down_block_additional_residuals=[d * cn_strength for d in down],
                      mid_block_additional_residual=mid * cn_strength)
        return self.unet(xin, t, ctx, **kw).sample

    @torch.no_grad()
    def txt2img(self, prompt, seed, steps=20, cfg=4.5, negative="", hint=None):
        ctx = self.encode([negative, prompt])
        sigmas = SCHED.normal(steps)
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn((1, 4, configs.IMAGE_SIZE // 8, configs.IMAGE_SIZE // 8), generator=g)
        x = noise * (1.0 + sigmas[0] ** 2) ** 0.5  # max_denoise: sigmas[0] == sigma_max
        h2 = None if hint is None else hint.expand(2, -1, -1, -1)
        for i in range(steps):
            s = sigmas[i]
            e = self.eps(torch.cat([x, x]), s, ctx, h2)
            eu, ec = e.chunk(2)
            e = eu + (ec - eu) * cfg if cfg != 1.0 else ec
            denoised = x - e * s
            d = (x - denoised) / s
            x = x + d * (sigmas[i + 1] - s)
        img = self.vae.decode(x / configs.LATENT_SCALE).sample
        return ((img[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()


# ---------------------------------------------------------------- pixel checks
PAL = np.array([shapes.PALETTE[c] for c in shapes.COLORS], dtype=np.float32)


def nearest_color(rgb):
    return shapes.COLORS[int(np.argmin(((PAL - np.asarray(rgb, np.float32)) ** 2).sum(1)))]


def _largest_component(mask):
    from scipy import ndimage

    lab, n = ndimage.label(mask)  # 4-connectivity
    if n == 0:
        return mask & False
    sizes = ndimage.sum(mask, lab, range(1, n + 1))
    return lab == (1 + int(np.argmax(sizes)))


def _hull_area(mask):
    ys, xs = np.nonzero(mask)
    # pixel squares' corners, so a one-pixel blob has area 1
    pts = np.unique(np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)]), axis=0)
    pts = sorted(map(tuple, pts))

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = lower[:-1] + upper[:-1]
    return 0.5 * abs(sum(hull[i][0] * hull[i - 1][1] - hull[i - 1][0] * hull[i][1] for i in range(len(hull))))


def check_image(img):
    """img uint8 HxWx3 -> dict of measured attributes (see module doc)."""
    from scipy import ndimage

    f = img.astype(np.float32)
    border = np.concatenate([f[:3].reshape(-1, 3), f[-3:].reshape(-1, 3), f[:, :3].reshape(-1, 3), f[:, -3:].reshape(-1, 3)])
    bgc = np.median(border, 0)
    mask = np.sqrt(((f - bgc) ** 2).sum(-1)) > 60
    blob = _largest_component(mask)
    area = int(blob.sum())
    r = dict(background=nearest_color(bgc), area=area, color=None, shape=None, fill=0.0, solidity=0.0,
             interior=0.0, hollow=False, centroid=None)
    if area < 30:
        return r
    ys, xs = np.nonzero(blob)
    r["color"] = nearest_color(np.median(f[blob], 0))
    bbox = (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)
    r["fill"] = area / bbox
    r["solidity"] = area / max(_hull_area(blob), 1)
    r["interior"] = area / max(int(ndimage.binary_fill_holes(blob).sum()), 1)
    r["centroid"] = (float(xs.mean()), float(ys.mean()))
    # hollow: the 5x5 median at the bbox centre is nearer the background than the shape colour
    cy, cx = (ys.min() + ys.max()) // 2, (xs.min() + xs.max()) // 2
    c = np.median(f[max(cy - 2, 0):cy + 3, max(cx - 2, 0):cx + 3].reshape(-1, 3), 0)
    sc = np.median(f[blob], 0)
    r["hollow"] = bool(((c - bgc) ** 2).sum() < ((c - sc) ** 2).sum())
    if r["fill"] >= 0.88:
        r["shape"] = "square"
    elif r["fill"] >= 0.66:
        r["shape"] = "circle"
    elif r["solidity"] >= 0.80:
        r["shape"] = "triangle"
    else:
        r["shape"] = "star"
    return r


def hint_for(e, rng):
    """A mask hint (1,3,H,W in 0..1) with the prompt's shape at a random size and place."""
    a = shapes.sample_attrs(1, rng, heldout_ok=True, p_pos=1.0)
    a["shape"][:] = shapes.SHAPES.index(e["shape"])
    _, m = shapes.render(a, "cpu", jitter=0)
    return m.expand(-1, 3, -1, -1).contiguous()


@torch.no_grad()
def bench(m, args):
    """CPU seconds of one txt2img (text encode x2, steps x CFG UNet pairs, VAE decode); best of --bench."""
    best = None
    for _ in range(args.bench):
        t0 = time.perf_counter()
        ctx = m.encode(["", "a red circle on a blue background"])
        t1 = time.perf_counter()
        x = torch.randn(2, 4, 16, 16)
        for i in range(args.steps):
            m.unet(x, torch.tensor([999.0 - 50 * i] * 2), ctx)
        t2 = time.perf_counter()
        m.vae.decode(x[:1])
        t3 = time.perf_counter()
        cur = (t1 - t0, t2 - t1, t3 - t2, t3 - t0)
        best = cur if best is None or cur[3] < best[3] else best
    print(json.dumps(dict(threads=args.threads, steps=args.steps, text_s=best[0], unet_s=best[1],
                          vae_decode_s=best[2], total_s=best[3])))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default="models/default/weft-shapes-v1.safetensors")
    ap.add_argument("--controlnet", default=None)
    ap.add_argument("--lora", default=None)
    ap.add_argument("--tok", default="/tmp/weft_clip_tok")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=4.5)
    ap.add_argument("--seeds", type=int, default=1, help="seeds per prompt (seed, seed+100, ...)")
    ap.add_argument("--n", type=int, default=0, help="first n prompts only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--bench", type=int, default=0, help="only time txt2img, best of N runs")
    ap.add_argument("--only", default="", help="comma list of sections to run: base,lora,controlnet")
    ap.add_argument("--grid", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not os.path.exists(os.path.join(args.tok, "vocab.json")):
        from clip_tokenizer import build_tokenizer_dir

        build_tokenizer_dir(args.tok)
    prompts = shapes.eval_prompts()
    if args.n:
        prompts = prompts[:args.n]
    res = {}
    grids = []

    def run(name, model, fn_hint=None, expect=None):
        rows, ok_c, ok_s, ok_x, n, secs = [], 0, 0, 0, 0, 0.0
        rng = np.random.RandomState(7)
        imgs = []
        for e in prompts:
            for k in range(args.seeds):
                seed = e["seed"] + 100 * k
                hint = fn_hint(e, rng) if fn_hint else None
                t0 = time.time()
                img = model.txt2img(e["prompt"], seed, args.steps, args.cfg, hint=hint)
                secs += time.time() - t0
                r = check_image(img)
                n += 1
                c_ok = r["color"] == e["color"] and r["background"] == e["background"]
                s_ok = r["shape"] == e["shape"]
                ok_c += c_ok
                ok_s += s_ok
                if expect:
                    ok_x += expect(r, hint)
                rows.append(dict(e, seed=seed, measured=r, color_ok=c_ok, shape_ok=s_ok))
                if args.verbose:
                    print(f"  {name} {e['prompt']!r} seed {seed}: color {r['color']} bg {r['background']} "
                          f"shape {r['shape']} fill {r['fill']:.2f} solidity {r['solidity']:.2f} "
                          f"interior {r['interior']:.2f} {'ok' if c_ok and s_ok else 'MISS'}", flush=True)
                if hint is not None:
                    img = np.concatenate([img, (hint[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)], 0)
                imgs.append(img)
        out = dict(images=n, color_and_bg=ok_c / n, shape=ok_s / n, sec_per_image=secs / n)
        if expect:
            out["extra"] = ok_x / n
        print(name, json.dumps(out), flush=True)
        res[name] = dict(out, rows=rows)
        grids.append(imgs)

    only = set(args.only.split(",")) if args.only else {"base", "lora", "controlnet"}
    base = Model(args.ckpt, args.tok)
    if args.bench:
        bench(base, args)
        return
    if "base" in only:
        run("base", base)
    if args.lora and "lora" in only:
        m0 = Model(args.ckpt, args.tok, lora=args.lora, lora_strength=0.0)
        same = all(torch.equal(a, b) for a, b in zip(m0.unet.state_dict().values(), base.unet.state_dict().values()))
        print("lora strength 0 equals base:", same)
        res["lora0_equals_base"] = same
        m1 = Model(args.ckpt, args.tok, lora=args.lora, lora_strength=1.0)
        run("lora1", m1, expect=lambda r, h: r["area"] >= 30 and r["hollow"])
        if "base" in only:
            res["base"]["hollow"] = sum(x["measured"]["hollow"] for x in res["base"]["rows"]) / len(res["base"]["rows"])
            print("base hollow:", res["base"]["hollow"])
    if args.controlnet and "controlnet" in only:
        mc = Model(args.ckpt, args.tok, controlnet=args.controlnet)

        def inside(r, hint):
            if r["centroid"] is None:
                return False
            x, y = (int(round(v)) for v in r["centroid"])
            return bool(hint[0, 0, min(y, 127), min(x, 127)] > 0.5)
        run("controlnet", mc, fn_hint=hint_for, expect=inside)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    if args.grid:
        from PIL import Image

        rows = []
        for imgs in grids:
            hmax = max(i.shape[0] for i in imgs)
            imgs = [np.pad(i, ((0, hmax - i.shape[0]), (0, 0), (0, 0))) for i in imgs]
            per = 16
            for s in range(0, len(imgs), per):
                chunk = imgs[s:s + per] + [np.zeros_like(imgs[0])] * (per - len(imgs[s:s + per]))
                rows.append(np.concatenate(chunk, 1))
        Image.fromarray(np.concatenate(rows, 0)).save(args.grid)


if __name__ == "__main__":
    main()
