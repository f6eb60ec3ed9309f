"""Writes tests/fixtures/default_model/: the default model run in Python, for weft's exactness and check tests.

The sampling is eval_default.py's (ComfyUI's KSampler: euler, normal, 20 steps, cfg 4.5,
negative "", 128x128, noise torch.manual_seed(seed); torch.randn, which weft's RNG reproduces
bit for bit), so weft running graphs/txt2img.yaml on the same prompt and seed must give the
same pixels.  Written:

  golden.safetensors (metadata "prompts": JSON list of {prompt, seed}):
    clip_ids [4,77] i64, clip_hidden [4,77,64] f32  text encoder on "" and the 3 prompts
    unet{0,1}_x [2,4,16,16], unet{0,1}_t [1], unet{0,1}_eps [2,4,16,16]
                                         UNet input (already scaled by c_in), timestep and
                                         output at steps 0 and 10 of prompt 0 (context:
                                         clip_hidden rows 0 and 1, uncond then cond)
    latent{i} [1,4,16,16] f32            final LATENT (VAE units, as ComfyUI's KSampler returns)
    lora_latent                          prompt 0 through the outline LoRA at strength 1.0
                                         (graphs/lora.yaml's defaults)
    cn_latent                            prompt 0 with the ControlNet at strength 1.0 and the
                                         hint graphs/controlnet_hint.png (graphs/controlnet.yaml's
                                         defaults)
  checks/golden{i}.png, lora.png, cn.png: the images of those runs as ComfyUI's VAEDecode and
    SaveImage write them (clamp((x+1)/2) * 255, truncated), lossless
  checks.json + checks/*.png: images with eval_default.check_image's measurements, so the
    C port of the checks is compared number for number (the three golden images, and
    rendered training shapes, filled and outlined)
  hints/NN.png: the ControlNet hint of eval prompt NN (eval_default.hint_for with
    RandomState(7), one seed per prompt: the hints eval_default.py --controlnet uses)

Also writes graphs/controlnet_hint.png (the default hint of graphs/controlnet.yaml: the mask
of a large circle at the top left).

    python3 tools/train/gen_default_golden.py [--tok /tmp/weft_clip_tok]
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import configs  # noqa: E402
import eval_default as ev  # noqa: E402
import shapes  # noqa: E402

# prompt 0 is graphs/txt2img.yaml's default (prompt and seed); 1 and 2 are eval prompts
# of other shapes (a star and a square) with their evaluation seeds.
PROMPTS = [("a red circle on a blue background", 42)]
EVAL_PICKS = [25, 11]


def comfy_u8(img):
    """ComfyUI's VAEDecode (clamp((x+1)/2, 0, 1)) then SaveImage (255. * i, clip, astype uint8)."""
    i = torch.clamp((img + 1.0) / 2.0, min=0.0, max=1.0)[0].permute(1, 2, 0).numpy()
    return np.clip(255.0 * i, 0, 255).astype(np.uint8)


class Recorder:
    """Wraps a Model's eps and VAE decode to keep the UNet calls and the final latent."""

    def __init__(self, m):
        self.m, self.calls, self.latent, self.image = m, [], None, None
        eps, dec = m.eps, m.vae.decode

        def rec_eps(x, sigma, ctx, hint=None, cn_strength=1.0):
            e = eps(x, sigma, ctx, hint, cn_strength)
            xin = x * (1.0 / (sigma ** 2 + 1) ** 0.5)  # as Model.eps scales it
            t = ev.SCHED.timestep(sigma.reshape(1)).float()
            self.calls.append((xin.clone(), t, ctx.clone(), e.clone()))
            return e

        def rec_dec(z, *a, **k):
            self.latent = z.clone()
            out = dec(z, *a, **k)
            self.image = out.sample.clone()
            return out

        m.eps, m.vae.decode = rec_eps, rec_dec

    def run(self, prompt, seed, hint=None):
        self.calls = []
        self.m.txt2img(prompt, seed, steps=20, cfg=4.5, negative="", hint=hint)
        return self


def check_json(r):
    out = {}
    for k, v in r.items():
        if isinstance(v, (np.floating, float)):
            v = float(v)
        elif isinstance(v, (np.integer,)):
            v = int(v)
        elif isinstance(v, tuple):
            v = [float(x) for x in v]
        out[k] = v
    return out


def write_png(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path, optimize=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default=os.path.join(ROOT, "models/default/weft-shapes-v1.safetensors"))
    ap.add_argument("--controlnet", default=os.path.join(ROOT, "models/default/weft-shapes-controlnet.safetensors"))
    ap.add_argument("--lora", default=os.path.join(ROOT, "models/default/weft-shapes-outline-lora.safetensors"))
    ap.add_argument("--tok", default="/tmp/weft_clip_tok")
    ap.add_argument("--out", default=os.path.join(ROOT, "tests/fixtures/default_model"))
    ap.add_argument("--hint-png", default=os.path.join(ROOT, "graphs/controlnet_hint.png"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not os.path.exists(os.path.join(args.tok, "vocab.json")):
        from clip_tokenizer import build_tokenizer_dir

        build_tokenizer_dir(args.tok)
    os.makedirs(args.out, exist_ok=True)
    evp = shapes.eval_prompts()
    prompts = PROMPTS + [(evp[i]["prompt"], evp[i]["seed"]) for i in EVAL_PICKS]

    # the default hint of graphs/controlnet.yaml: a large circle, top left, white on black
    a = dict(shape=np.array([0]), color=np.array([8]), bg=np.array([9]), h=np.array([0.22]),
             cx=np.array([0.33]), cy=np.array([0.33]))
    _, mask = shapes.render(a, "cpu", jitter=0)
    hint_u8 = (mask[0, 0].numpy() * 255).round().astype(np.uint8)
    write_png(args.hint_png, np.repeat(hint_u8[:, :, None], 3, 2))
    # what LoadImage gives: the PNG's levels / 255
    hint = torch.from_numpy(np.asarray(Image.open(args.hint_png).convert("RGB"), np.float32) / 255.0)
    hint = hint.permute(2, 0, 1)[None].contiguous()

    t = {}
    base = ev.Model(args.ckpt, args.tok)
    ids = base.tok([""] + [p for p, _ in prompts], padding="max_length", max_length=77, truncation=True,
                   return_tensors="pt").input_ids
    t["clip_ids"] = ids.to(torch.int64)
    # rows 0 and 1 in one batch as txt2img encodes them, so they are its UNet context bit for bit
    t["clip_hidden"] = torch.cat([base.encode(["", prompts[0][0]]),
                                  base.encode([p for p, _ in prompts[1:]])]).float()
    rec = Recorder(base)
    checks = []
    for i, (p, seed) in enumerate(prompts):
        rec.run(p, seed)
        t[f"latent{i}"] = rec.latent
        img = comfy_u8(rec.image)
        if i == 0:
            for k, step in enumerate((0, 10)):
                xin, ts, ctx, e = rec.calls[step]
                assert torch.equal(ctx, t["clip_hidden"][:2])
                t[f"unet{k}_x"], t[f"unet{k}_t"], t[f"unet{k}_eps"] = xin, ts, e
        name = f"golden{i}.png"
        write_png(os.path.join(args.out, "checks", name), img)
        checks.append(dict(file=name, **check_json(ev.check_image(img))))
        print(p, seed, checks[-1], flush=True)

    lm = ev.Model(args.ckpt, args.tok, lora=args.lora, lora_strength=1.0)
    r = Recorder(lm).run(*prompts[0])
    t["lora_latent"] = r.latent
    write_png(os.path.join(args.out, "lora.png"), comfy_u8(r.image))
    cm = ev.Model(args.ckpt, args.tok, controlnet=args.controlnet)
    r = Recorder(cm).run(*prompts[0], hint=hint)
    t["cn_latent"] = r.latent
    write_png(os.path.join(args.out, "cn.png"), comfy_u8(r.image))

    meta = {"prompts": json.dumps([dict(prompt=p, seed=s) for p, s in prompts]),
            "sampler": "euler", "scheduler": "normal", "steps": "20", "cfg": "4.5", "negative": "",
            "made_by": "tools/train/gen_default_golden.py"}
    save_file({k: v.contiguous() for k, v in t.items()}, os.path.join(args.out, "golden.safetensors"), metadata=meta)

    # rendered training shapes (filled, then outlined), one of each shape, for the check port
    rng = np.random.RandomState(3)
    a = shapes.sample_attrs(8, rng, p_pos=1.0)
    a["shape"][:] = [0, 1, 2, 3, 0, 1, 2, 3]
    a["h"][:] = 0.2 + 0.08 * rng.rand(8)  # large, and whole inside the image
    a["cx"][:] = 0.4 + 0.2 * rng.rand(8)
    a["cy"][:] = 0.4 + 0.2 * rng.rand(8)
    for k, outline in ((0, False), (4, True)):
        sub = {key: v[k:k + 4] for key, v in a.items()}
        img, _ = shapes.render(sub, "cpu", outline=outline, jitter=0)
        for j in range(4):
            u8 = ((img[j].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
            name = f"rendered{k + j}.png"
            write_png(os.path.join(args.out, "checks", name), u8)
            checks.append(dict(file=name, **check_json(ev.check_image(u8))))
    with open(os.path.join(args.out, "checks.json"), "w") as f:
        json.dump(checks, f, indent=1)

    # the ControlNet hints of the quality test: eval_default.py's, in its order
    rng = np.random.RandomState(7)
    for i, e in enumerate(evp):
        m = ev.hint_for(e, rng)
        u8 = (m[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        write_png(os.path.join(args.out, "hints", f"{i:02d}.png"), u8)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
