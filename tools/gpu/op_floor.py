"""op_floor.py - what torch (cuDNN 9, its flash attention) takes for each
op shape of an SD1.5 UNet step (batch 2, 64x64 latent) and VAE decode
(512x512), op by op: the reference that says what weft's kernels could
reach, and whether NHWC ("channels_last") activations would pay for the
convolutions.

Every nn.Conv2d call of diffusers' UNet2DConditionModel (SD1.5 config,
random fp16 weights) and AutoencoderKL decoder is recorded by a forward
hook; each distinct shape is then timed alone with CUDA events (median
of 7 runs of 20 calls) in four ways: NCHW and NHWC memory format, cuDNN
heuristics (cudnn.benchmark off) and measured choice (on).  Attention
(SDPA, fp16, every backend torch picks), group norm and layer norm of
the UNet's shapes likewise.  The totals weigh each shape by its calls in
one step/decode.

  python3 tools/gpu/op_floor.py OUT_DIR        (on the GPU machine, with
  diffusers importable: the carried wheel)

Writes OUT_DIR/op_floor.md and OUT_DIR/op_floor.json."""

import json
import sys

import torch
import torch.nn.functional as F


def timed(fn, reps=20, rounds=7):
    fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(rounds):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(reps):
            fn()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b) * 1000.0 / reps)
    out.sort()
    return out[len(out) // 2]


def record_convs(model, run):
    seen = {}
    hooks = []

    def hook(mod, inp, _out):
        x = inp[0]
        key = (tuple(x.shape), mod.out_channels, mod.kernel_size[0],
               mod.stride[0], mod.padding[0] if isinstance(mod.padding, tuple)
               else mod.padding)
        seen[key] = seen.get(key, 0) + 1

    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            hooks.append(m.register_forward_hook(hook))
    with torch.no_grad():
        run()
    for h in hooks:
        h.remove()
    return seen


def conv_times(key):
    (n, c, h, w), co, k, s, p = key
    dev = "cuda"
    x = torch.randn(n, c, h, w, device=dev, dtype=torch.float16)
    wt = torch.randn(co, c, k, k, device=dev, dtype=torch.float16) * 0.05
    b = torch.randn(co, device=dev, dtype=torch.float16)
    res = {}
    for fmt in ("nchw", "nhwc"):
        mf = torch.channels_last if fmt == "nhwc" else torch.contiguous_format
        xx = x.contiguous(memory_format=mf)
        ww = wt.contiguous(memory_format=mf)
        for bench in (False, True):
            torch.backends.cudnn.benchmark = bench
            res[f"{fmt}_{'find' if bench else 'heur'}"] = timed(
                lambda: F.conv2d(xx, ww, b, stride=s, padding=p))
    torch.backends.cudnn.benchmark = False
    flop = 2.0 * n * co * (h // s) * (w // s) * c * k * k
    return res, flop


def main():
    out_dir = sys.argv[1]
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    dev = "cuda"
    unet = UNet2DConditionModel(cross_attention_dim=768).to(dev).half().eval()
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2, latent_channels=4).to(dev).half().eval()
    x = torch.randn(2, 4, 64, 64, device=dev, dtype=torch.float16)
    t = torch.tensor([999, 999], device=dev)
    ctx = torch.randn(2, 77, 768, device=dev, dtype=torch.float16)
    z = torch.randn(1, 4, 64, 64, device=dev, dtype=torch.float16)
    parts = {
        "UNet step": record_convs(unet, lambda: unet(x, t, ctx)),
        "VAE decode": record_convs(vae, lambda: vae.decode(z)),
    }
    lines = [f"# op floor: torch {torch.__version__}, cuDNN "
             f"{torch.backends.cudnn.version()}, "
             f"{torch.cuda.get_device_name()}", ""]
    js = {"torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
          "conv": {}, "other": {}}
    for part, seen in parts.items():
        lines += [f"## convolutions, {part}", "",
                  "| x, c_out, k/s | calls | NCHW heur (us) | NCHW find | "
                  "NHWC heur | NHWC find | best TFLOP/s |",
                  "|---|---|---|---|---|---|---|"]
        tot = {}
        rows = []
        for key, calls in sorted(seen.items(), key=lambda kv: -kv[1]):
            res, flop = conv_times(key)
            for kk, v in res.items():
                tot[kk] = tot.get(kk, 0.0) + calls * v
            best = min(res.values())
            (n, c, h, w), co, k, s, p = key
            rows.append((calls * best, f"| {n}x{c}x{h}x{w} -> {co}, {k}x{k}/{s} "
                         f"| {calls} | {res['nchw_heur']:.1f} | "
                         f"{res['nchw_find']:.1f} | {res['nhwc_heur']:.1f} | "
                         f"{res['nhwc_find']:.1f} | "
                         f"{flop / best / 1e6:.0f} |"))
            js["conv"].setdefault(part, []).append(
                {"shape": [n, c, h, w, co, k, s, p], "calls": calls, **res})
        rows.sort(key=lambda r: -r[0])
        lines += [r[1] for r in rows]
        lines += ["", f"Total a {part}: " + ", ".join(
            f"{k} {v / 1000:.2f} ms" for k, v in tot.items()), ""]
        js["conv"][part + " total_us"] = tot

    # attention (SDPA: q, k, v as [batch, heads, tokens, d]) and norms of
    # the UNet's shapes; calls per step
    att = [(4096, 4096, 40, 5), (4096, 77, 40, 5), (1024, 1024, 80, 5),
           (1024, 77, 80, 5), (256, 256, 160, 5), (256, 77, 160, 5),
           (64, 64, 160, 1), (64, 77, 160, 1)]
    lines += ["## attention, UNet step (2x8 heads, fp16 SDPA)", "",
              "| queries x keys, d | calls | us | TFLOP/s |", "|---|---|---|---|"]
    tot = 0.0
    for nq, nk, d, calls in att:
        q = torch.randn(2, 8, nq, d, device=dev, dtype=torch.float16)
        k = torch.randn(2, 8, nk, d, device=dev, dtype=torch.float16)
        v = torch.randn(2, 8, nk, d, device=dev, dtype=torch.float16)
        us = timed(lambda: F.scaled_dot_product_attention(q, k, v))
        tot += calls * us
        flop = 4.0 * 16 * nq * nk * d
        lines.append(f"| {nq} x {nk}, d {d} | {calls} | {us:.1f} | "
                     f"{flop / us / 1e6:.0f} |")
        js["other"][f"attention {nq}x{nk} d{d}"] = us
    lines += ["", f"Total a step: {tot / 1000:.2f} ms", ""]
    norms = [("group_norm 2x320x64x64", (2, 320, 64, 64), 32),
             ("group_norm 2x1280x8x8", (2, 1280, 8, 8), 32),
             ("layer_norm 8192x320", (8192, 320), 0),
             ("layer_norm 512x1280", (512, 1280), 0)]
    lines += ["## norms", "", "| op | us |", "|---|---|"]
    for name, shape, groups in norms:
        a = torch.randn(*shape, device=dev, dtype=torch.float16)
        if groups:
            g = torch.ones(shape[1], device=dev, dtype=torch.float16)
            us = timed(lambda: F.silu(F.group_norm(a, groups, g, g)))
        else:
            g = torch.ones(shape[1], device=dev, dtype=torch.float16)
            us = timed(lambda: F.layer_norm(a, (shape[1],), g, g))
        lines.append(f"| {name}{' + silu' if groups else ''} | {us:.1f} |")
        js["other"][name] = us
    open(f"{out_dir}/op_floor.md", "w").write("\n".join(lines) + "\n")
    json.dump(js, open(f"{out_dir}/op_floor.json", "w"), indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
