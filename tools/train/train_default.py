"""Trains weft's default model family (VAE, CLIP text encoder + UNet, ControlNet, LoRA) on one GPU.

Stages run in order, each bounded by wall-clock minutes; every stage saves fp32 weights
(the EMA weights for the base) to --out, so a run cut short loses at most one stage.
Resume: --resume DIR loads whatever of vae/te/unet/controlnet/lora DIR holds and skips
nothing by itself; choose stages with --stages. Optimizer state is not saved (files coming
back from the GPU machine are limited to 16 MiB each): a resumed stage restarts AdamW with a
short warm-up from the saved (EMA) weights.

    python3 tools/train/train_default.py --tok TOKDIR --out OUT --minutes 7.9 \\
        --stages vae,base,cn,lora --vae-minutes 1.4 --base-minutes 4.4 --cn-minutes 0.95 --lora-minutes 0.85

(models/default/README.md has the exact commands of the shipped model.)
"""
import argparse
import collections
import copy
import math
import multiprocessing as mp
import os
import sys
import time
import traceback

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import configs  # noqa: E402
import lora as loralib  # noqa: E402
import shapes  # noqa: E402

# ---------------------------------------------------------------- data (worker processes)
_TOK = None


def _worker_init(tok_dir):
    global _TOK
    from clip_tokenizer import load_tokenizer

    torch.set_num_threads(1)
    _TOK = load_tokenizer(tok_dir)


def make_chunk(job):
    """Attributes + caption token ids for n images; mode base | cn | lora."""
    seed, mode, n = job
    rng = np.random.RandomState(seed % (2 ** 31))
    a = shapes.sample_attrs(n, rng)
    if mode == "cn":  # the mask gives the position; name it in 30 % of captions only
        ca = dict(a)
        ca["pos"] = np.where(rng.rand(n) < 0.7, -1, a["pos"])
        caps = shapes.captions(ca, rng)
    elif mode == "lora":
        caps = shapes.captions(a, rng, outline=0.5)
    else:
        caps = shapes.captions(a, rng)
    ids = _TOK(caps, padding="max_length", max_length=77, truncation=True).input_ids
    a["ids"] = np.asarray(ids, dtype=np.int64)
    return a


class Feeder:
    """Keeps `depth` chunks of one mode in flight on a shared process pool; yields batches."""

    def __init__(self, pool, mode, bs, seed, depth, chunk=4096):
        self.pool, self.mode, self.bs, self.chunk, self.seed = pool, mode, bs, chunk, seed
        self.count = 0
        self.pending = collections.deque(self._submit() for _ in range(depth)) if pool else None
        self.cur, self.pos = None, 0

    def _job(self):
        self.count += 1
        return (self.seed * 1000003 + self.count, self.mode, self.chunk)

    def _submit(self):
        return self.pool.apply_async(make_chunk, (self._job(),))

    def batch(self):
        if self.cur is None or self.pos + self.bs > self.chunk:
            if self.pool:
                self.cur = self.pending.popleft().get()
                self.pending.append(self._submit())
            else:
                self.cur = make_chunk(self._job())
            self.pos = 0
        sl = slice(self.pos, self.pos + self.bs)
        self.pos += self.bs
        return {k: v[sl] for k, v in self.cur.items()}


# ---------------------------------------------------------------- helpers
class Log:
    def __init__(self, path):
        self.f = open(path, "a") if path else None
        self.t0 = time.time()

    def __call__(self, *a):
        s = f"[{time.time() - self.t0:7.1f}s] " + " ".join(str(x) for x in a)
        print(s, flush=True)
        if self.f:
            self.f.write(s + "\n")
            self.f.flush()


def lr_at(peak, step, warmup, frac):
    return peak * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def save_split(sd, out, name, max_bytes=15 * 2 ** 20):
    """fp32 state dict -> name.safetensors, or name.0/.1/... when over max_bytes."""
    sd = {k: v.detach().float().cpu().contiguous() for k, v in sd.items()}
    parts, cur, size = [], {}, 0
    for k, v in sd.items():
        b = v.numel() * 4
        if cur and size + b > max_bytes:
            parts.append(cur)
            cur, size = {}, 0
        cur[k] = v
        size += b
    parts.append(cur)
    for old in os.listdir(out):
        if old.startswith(name + ".") and old.endswith(".safetensors"):
            os.remove(os.path.join(out, old))
    if len(parts) == 1:
        save_file(parts[0], os.path.join(out, f"{name}.safetensors"))
    else:
        for i, p in enumerate(parts):
            save_file(p, os.path.join(out, f"{name}.{i}.safetensors"))


def load_split(d, name):
    if d is None:
        return None
    files = sorted(f for f in os.listdir(d) if f.startswith(name + ".") and f.endswith(".safetensors")
                   and f[len(name) + 1:-len(".safetensors")] in ("",) + tuple(str(i) for i in range(10))
                   or f == name + ".safetensors")
    if not files:
        return None
    sd = {}
    for f in files:
        sd.update(load_file(os.path.join(d, f)))
    return sd


def alphas_cumprod(device):
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float().to(device)


class Ctx:
    def __init__(self, args):
        self.args = args
        self.dev = torch.device(args.device)
        self.cuda = self.dev.type == "cuda"
        self.amp = dict(device_type=self.dev.type, dtype=torch.bfloat16, enabled=self.cuda)
        self.log = Log(os.path.join(args.out, "log.txt"))
        self.deadline = time.time() + args.minutes * 60
        self.ab = alphas_cumprod(self.dev)
        from clip_tokenizer import load_tokenizer

        tok = load_tokenizer(args.tok)
        self.empty_ids = torch.tensor(tok([""], padding="max_length", max_length=77).input_ids, device=self.dev)

    def stage_end(self, minutes):
        return min(time.time() + minutes * 60, self.deadline)


def render_batch(ctx, a, outline=False):
    x, m = shapes.render(a, ctx.dev, outline=outline)
    return x, m


def encode_latents(ctx, vae, x):
    with torch.no_grad(), torch.autocast(**ctx.amp):
        return vae.encode(x).latent_dist.sample().float() * configs.LATENT_SCALE


def noisy_batch(ctx, lat, offset, hi_frac=0.0, hi_min=700):
    """Noised latents; a fraction hi_frac of the timesteps is drawn from [hi_min, 999]."""
    b = lat.shape[0]
    noise = torch.randn_like(lat)
    if offset:
        noise = noise + offset * torch.randn(b, lat.shape[1], 1, 1, device=lat.device)
    t = torch.randint(0, 1000, (b,), device=lat.device)
    if hi_frac > 0:
        hi = torch.rand(b, device=lat.device) < hi_frac
        t = torch.where(hi, torch.randint(hi_min, 1000, (b,), device=lat.device), t)
    ab = ctx.ab[t][:, None, None, None]
    return ab.sqrt() * lat + (1 - ab).sqrt() * noise, noise, t


def snr_weight(ctx, t, gamma=5.0, hi_weight=1.0):
    """min-SNR-gamma weights for eps prediction; hi_weight > 1 also multiplies by
    clamp(1/SNR, 1, hi_weight), moving high-noise steps towards an x0 loss (with eps
    prediction, steps near t=999 otherwise carry almost no signal about the image)."""
    ab = ctx.ab[t]
    snr = ab / (1 - ab)
    w = snr.clamp(max=gamma) / snr
    if hi_weight > 1.0:
        w = w * (1 / snr).clamp(1.0, hi_weight)
    return w


def drop_captions(ctx, ids, p):
    drop = torch.rand(ids.shape[0], device=ids.device) < p
    return torch.where(drop[:, None], ctx.empty_ids.expand_as(ids), ids)


class DecoderTrainer:
    """Fine-tunes the VAE decoder (and post_quant_conv) alongside the other stages, on fresh
    filled and outline images; the encoder stays frozen, so the latent space the UNet learns
    does not move. Latents get small Gaussian noise so the decoder tolerates sampler error."""

    def __init__(self, ctx, vae):
        self.ctx, self.vae = ctx, vae
        a = ctx.args
        self.params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
        for p in self.params:
            p.requires_grad_(True)
        self.opt = torch.optim.AdamW(self.params, lr=a.dec_lr, betas=(0.9, 0.99), weight_decay=0.0)
        self.rng = np.random.RandomState(a.seed + 51)
        self.t0, self.step, self.acc = time.time(), 0, []

    def __call__(self):
        ctx, a = self.ctx, self.ctx.args
        at = shapes.sample_attrs(a.dec_bs, self.rng)
        half = a.dec_bs // 2
        x1, _ = render_batch(ctx, {k: v[:half] for k, v in at.items()})
        x2, _ = render_batch(ctx, {k: v[half:] for k, v in at.items()}, outline=True)
        x = torch.cat([x1, x2]).contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), torch.autocast(**ctx.amp):
            z = self.vae.encode(x).latent_dist.sample().float()
        sig = torch.rand(z.shape[0], 1, 1, 1, device=z.device) * (a.dec_noise / configs.LATENT_SCALE)
        z = z + sig * torch.randn_like(z)
        frac = (time.time() - self.t0) / max(ctx.deadline - self.t0, 1)
        for g in self.opt.param_groups:
            g["lr"] = lr_at(a.dec_lr, self.step, 50, frac)
        with torch.autocast(**ctx.amp):
            rec = self.vae.decode(z).sample.float()
        loss = (rec - x).abs().mean() + ((rec - x) ** 2).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.acc.append(loss.detach())
        self.step += 1
        if self.step % 200 == 0:
            ctx.log(f"decoder step {self.step} loss {torch.stack(self.acc).mean().item():.5f}")
            self.acc = []

    def save(self):
        save_split(self.vae.state_dict(), self.ctx.args.out, "vae")


def _nop():
    pass


# ---------------------------------------------------------------- stages
def stage_vae(ctx, vae):
    a_ = ctx.args
    end = ctx.stage_end(a_.vae_minutes)
    t0 = time.time()
    opt = torch.optim.AdamW(vae.parameters(), lr=a_.vae_lr, betas=(0.9, 0.99), weight_decay=0.0)
    rng = np.random.RandomState(a_.seed + 11)
    step, acc = 0, []
    vae.train()
    while time.time() < end:
        a = shapes.sample_attrs(a_.vae_bs, rng)
        half = a_.vae_bs // 2
        x1, _ = render_batch(ctx, {k: v[:half] for k, v in a.items()})
        x2, _ = render_batch(ctx, {k: v[half:] for k, v in a.items()}, outline=True)
        x = torch.cat([x1, x2])
        for g in opt.param_groups:
            g["lr"] = lr_at(a_.vae_lr, step, 200, (time.time() - t0) / max(end - t0, 1))
        with torch.autocast(**ctx.amp):
            post = vae.encode(x).latent_dist
            rec = vae.decode(post.sample()).sample.float()
        loss = (rec - x).abs().mean() + ((rec - x) ** 2).mean() + 1e-6 * post.kl().float().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        acc.append(loss.detach())
        step += 1
        if step % 200 == 0:
            ctx.log(f"vae step {step} loss {torch.stack(acc).mean().item():.5f} "
                    f"img/s {step * a_.vae_bs / (time.time() - t0):.0f}")
            acc = []
    vae.eval()
    ctx.log(f"vae done: {step} steps x {a_.vae_bs} in {time.time() - t0:.0f}s")
    return step


@torch.no_grad()
def standardise_vae(ctx, vae, n_batches=16, bs=256):
    """Folds a per-channel affine map into quant_conv/post_quant_conv so that the posterior
    means of filled-shape images have mean 0 and std 1/LATENT_SCALE per channel (exact)."""
    rng = np.random.RandomState(ctx.args.seed + 12)
    zs = []
    for _ in range(n_batches):
        x, _ = render_batch(ctx, shapes.sample_attrs(bs, rng))
        with torch.autocast(**ctx.amp):
            zs.append(vae.encode(x).latent_dist.mean.float())
    z = torch.cat(zs)
    mu = z.mean((0, 2, 3))
    sd = z.std((0, 2, 3))
    k = (1.0 / configs.LATENT_SCALE) / sd  # per channel gain
    c = mu.numel()
    qw, qb = vae.quant_conv.weight, vae.quant_conv.bias
    qw[:c] *= k[:, None, None, None]
    qb[:c] = (qb[:c] - mu) * k
    qb[c:] += 2 * torch.log(k)  # logvar of the scaled posterior
    pw, pb = vae.post_quant_conv.weight, vae.post_quant_conv.bias
    pb += (pw[:, :, 0, 0] @ mu)
    pw *= (1 / k)[None, :, None, None]
    ctx.log(f"vae standardised: raw mean {mu.tolist()} std {sd.tolist()}")
    return dict(mean=mu.tolist(), std=sd.tolist())


def stage_base(ctx, feed, vae, te, unet, te_ema, unet_ema, resumed, dec=_nop):
    a_ = ctx.args
    end = ctx.stage_end(a_.base_minutes)
    t0 = time.time()
    params = list(te.parameters()) + list(unet.parameters())
    ema_params = list(te_ema.parameters()) + list(unet_ema.parameters())
    opt = torch.optim.AdamW(params, lr=a_.lr, betas=(0.9, 0.99), weight_decay=0.0,
                            fused=ctx.cuda)
    warm = a_.warmup or (100 if resumed else 300)
    step, acc, last_save = 0, [], time.time()
    te.train()
    unet.train()
    while time.time() < end:
        b = feed.batch()
        ids = torch.from_numpy(b.pop("ids")).to(ctx.dev, non_blocking=True)
        x, _ = render_batch(ctx, b)
        lat = encode_latents(ctx, vae, x)
        noisy, noise, t = noisy_batch(ctx, lat, a_.noise_offset, a_.hi_frac, a_.hi_min)
        ids = drop_captions(ctx, ids, 0.1)
        for g in opt.param_groups:
            g["lr"] = lr_at(a_.lr, step, warm, (time.time() - t0) / max(end - t0, 1))
        with torch.autocast(**ctx.amp):
            cond = te(ids).last_hidden_state
            eps = unet(noisy, t, cond).sample.float()
        loss = (snr_weight(ctx, t, hi_weight=a_.hi_weight) * ((eps - noise) ** 2).mean((1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        dec()
        decay = min(a_.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, params, 1 - decay)
        acc.append(loss.detach())
        step += 1
        if step % 200 == 0:
            ctx.log(f"base step {step} loss {torch.stack(acc).mean().item():.5f} "
                    f"img/s {step * a_.bs / (time.time() - t0):.0f} lr {opt.param_groups[0]['lr']:.2e}")
            acc = []
        if time.time() - last_save > a_.save_every * 60:
            if dec is not _nop:
                dec.save()
            save_split(te_ema.state_dict(), a_.out, "te")
            save_split(unet_ema.state_dict(), a_.out, "unet")
            last_save = time.time()
    save_split(te_ema.state_dict(), a_.out, "te")
    save_split(unet_ema.state_dict(), a_.out, "unet")
    if dec is not _nop:
        dec.save()
    ctx.log(f"base done: {step} steps x {a_.bs} in {time.time() - t0:.0f}s (saved EMA)")
    return step


def stage_cn(ctx, feed, vae, te, unet, cn, dec=_nop):
    a_ = ctx.args
    end = ctx.stage_end(a_.cn_minutes)
    t0 = time.time()
    for p in list(te.parameters()) + list(unet.parameters()):
        p.requires_grad_(False)
    params = list(cn.parameters())
    opt = torch.optim.AdamW(params, lr=a_.cn_lr, betas=(0.9, 0.99), weight_decay=0.0, fused=ctx.cuda)
    step, acc = 0, []
    cn.train()
    while time.time() < end:
        b = feed.batch()
        ids = torch.from_numpy(b.pop("ids")).to(ctx.dev, non_blocking=True)
        x, m = render_batch(ctx, b)
        hint = m.expand(-1, 3, -1, -1).contiguous()
        lat = encode_latents(ctx, vae, x)
        noisy, noise, t = noisy_batch(ctx, lat, a_.noise_offset, a_.cn_hi_frac, a_.hi_min)
        ids = drop_captions(ctx, ids, 0.1)
        for g in opt.param_groups:
            g["lr"] = lr_at(a_.cn_lr, step, 100, (time.time() - t0) / max(end - t0, 1))
        with torch.autocast(**ctx.amp):
            with torch.no_grad():
                cond = te(ids).last_hidden_state
            down, mid = cn(noisy, t, encoder_hidden_states=cond, controlnet_cond=hint, return_dict=False)
            eps = unet(noisy, t, cond, down_block_additional_residuals=down,
                       mid_block_additional_residual=mid).sample.float()
        # where the shape goes is decided at high noise, where an eps loss barely sees x0:
        # the same high-noise weighting as the base (--cn-hi-frac, --cn-hi-weight)
        w = snr_weight(ctx, t, hi_weight=a_.cn_hi_weight)
        loss = (w * ((eps - noise) ** 2).mean((1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        dec()
        acc.append(loss.detach())
        step += 1
        if step % 200 == 0:
            ctx.log(f"cn step {step} loss {torch.stack(acc).mean().item():.5f} "
                    f"img/s {step * a_.cn_bs / (time.time() - t0):.0f}")
            acc = []
    cn.eval()
    save_split(cn.state_dict(), a_.out, "controlnet")
    if dec is not _nop:
        dec.save()
    ctx.log(f"cn done: {step} steps x {a_.cn_bs} in {time.time() - t0:.0f}s")
    return step


def stage_lora(ctx, feed, vae, te, unet, resume_sd, dec=_nop):
    a_ = ctx.args
    end = ctx.stage_end(a_.lora_minutes)
    t0 = time.time()
    te, unet = copy.deepcopy(te), copy.deepcopy(unet)
    for p in list(te.parameters()) + list(unet.parameters()):
        p.requires_grad_(False)
    wraps = loralib.inject(unet, te, configs.LORA_RANK, configs.LORA_ALPHA)
    if resume_sd is not None:
        loralib.load_into_wraps(wraps, resume_sd)
    params = [p for w in wraps.values() for p in (w.down.weight, w.up.weight)]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=a_.lora_lr, betas=(0.9, 0.99), weight_decay=0.0, fused=ctx.cuda)
    step, acc = 0, []
    while time.time() < end:
        b = feed.batch()
        ids = torch.from_numpy(b.pop("ids")).to(ctx.dev, non_blocking=True)
        x, _ = render_batch(ctx, b, outline=True)
        lat = encode_latents(ctx, vae, x)
        noisy, noise, t = noisy_batch(ctx, lat, a_.noise_offset)
        ids = drop_captions(ctx, ids, 0.1)
        for g in opt.param_groups:
            g["lr"] = lr_at(a_.lora_lr, step, 50, (time.time() - t0) / max(end - t0, 1))
        with torch.autocast(**ctx.amp):
            cond = te(ids).last_hidden_state
            eps = unet(noisy, t, cond).sample.float()
        loss = (snr_weight(ctx, t) * ((eps - noise) ** 2).mean((1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        dec()
        acc.append(loss.detach())
        step += 1
        if step % 200 == 0:
            ctx.log(f"lora step {step} loss {torch.stack(acc).mean().item():.5f} "
                    f"img/s {step * a_.lora_bs / (time.time() - t0):.0f}")
            acc = []
    save_file(loralib.state_dict_kohya(wraps, torch.float32), os.path.join(a_.out, "lora.safetensors"))
    if dec is not _nop:
        dec.save()
    ctx.log(f"lora done: {step} steps x {a_.lora_bs} in {time.time() - t0:.0f}s, {len(wraps)} modules")
    return step


# ---------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tok", required=True, help="tokenizer folder (clip_tokenizer.py)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--resume", default=None, help="folder with vae/te/unet/controlnet/lora .safetensors")
    ap.add_argument("--stages", default="vae,base,cn,lora")
    ap.add_argument("--minutes", type=float, default=8.3, help="wall-clock cap for the whole run")
    ap.add_argument("--vae-minutes", type=float, default=1.2)
    ap.add_argument("--base-minutes", type=float, default=4.7)
    ap.add_argument("--cn-minutes", type=float, default=1.0)
    ap.add_argument("--lora-minutes", type=float, default=0.9)
    ap.add_argument("--save-every", type=float, default=2.0, help="minutes between base checkpoints")
    ap.add_argument("--bs", type=int, default=512)
    ap.add_argument("--cn-bs", type=int, default=1024)
    ap.add_argument("--lora-bs", type=int, default=1024)
    ap.add_argument("--vae-bs", type=int, default=256)
    ap.add_argument("--train-decoder", action="store_true",
                    help="fine-tune the VAE decoder alongside base/cn/lora (encoder frozen)")
    ap.add_argument("--dec-bs", type=int, default=256)
    ap.add_argument("--dec-lr", type=float, default=5e-4)
    ap.add_argument("--dec-noise", type=float, default=0.1, help="max latent noise std (scaled units)")
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--vae-lr", type=float, default=1e-3)
    ap.add_argument("--cn-lr", type=float, default=3e-4)
    ap.add_argument("--lora-lr", type=float, default=1e-3)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--warmup", type=int, default=0, help="base warm-up steps (0: 300, or 100 when resumed)")
    ap.add_argument("--hi-frac", type=float, default=0.0, help="base: fraction of timesteps drawn from [hi-min, 999]")
    ap.add_argument("--hi-min", type=int, default=700)
    ap.add_argument("--hi-weight", type=float, default=1.0, help="base: cap of the extra 1/SNR weight")
    ap.add_argument("--cn-hi-frac", type=float, default=0.0, help="ControlNet: as --hi-frac")
    ap.add_argument("--cn-hi-weight", type=float, default=1.0, help="ControlNet: as --hi-weight")
    ap.add_argument("--noise-offset", type=float, default=0.05)
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    stages = args.stages.split(",")
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    ctx = Ctx(args)
    ctx.log("args", vars(args))
    ctx.log("torch", torch.__version__, "device", torch.cuda.get_device_name() if ctx.cuda else "cpu")

    vae, te, unet = configs.make_vae(), configs.make_text(), configs.make_unet()
    for name, m in (("vae", vae), ("te", te), ("unet", unet)):
        sd = load_split(args.resume, name)
        if sd is not None:
            m.load_state_dict(sd)
            ctx.log(f"resumed {name} from {args.resume}")
    vae, te, unet = vae.to(ctx.dev), te.to(ctx.dev), unet.to(ctx.dev)
    ctx.log("params: vae %.3fM te %.3fM unet %.3fM" % tuple(
        sum(p.numel() for p in m.parameters()) / 1e6 for m in (vae, te, unet)))
    resumed_base = load_split(args.resume, "unet") is not None

    # Caption workers start now, so their first chunks are ready when the base stage begins.
    pool = None
    if args.workers > 0:
        pool = mp.get_context("spawn").Pool(args.workers, _worker_init, (args.tok,))
    else:
        _worker_init(args.tok)
    depth = max(2, 2 * args.workers)
    bss = {"base": args.bs, "cn": args.cn_bs, "lora": args.lora_bs}
    feeds = {m: Feeder(pool, m, bss[m], args.seed + off + (1000 if resumed_base else 0), depth if m == "base" else 3)
             for m, off in (("base", 21), ("cn", 31), ("lora", 41)) if m in stages}

    def run(name, fn):
        try:
            return fn()
        except Exception:
            ctx.log(f"stage {name} FAILED:\n" + traceback.format_exc())
            return None

    if "vae" in stages:
        def _vae():
            stage_vae(ctx, vae)
            standardise_vae(ctx, vae, n_batches=16 if ctx.cuda else 1, bs=256 if ctx.cuda else 16)
            save_split(vae.state_dict(), args.out, "vae")
        run("vae", _vae)
    vae.eval().requires_grad_(False)
    dec = _nop
    if args.train_decoder:
        vae = vae.to(memory_format=torch.channels_last)
        dec = DecoderTrainer(ctx, vae)

    te_ema, unet_ema = copy.deepcopy(te).requires_grad_(False), copy.deepcopy(unet).requires_grad_(False)
    if "base" in stages:
        run("base", lambda: stage_base(ctx, feeds["base"], vae, te, unet, te_ema, unet_ema, resumed_base, dec))
    te_ema.eval()
    unet_ema.eval()
    if "cn" in stages:
        def _cn():
            cn = configs.make_controlnet(unet_ema).to(ctx.dev)
            sd = load_split(args.resume, "controlnet")
            if sd is not None and "base" not in stages:
                cn.load_state_dict(sd)
                ctx.log("resumed controlnet")
            stage_cn(ctx, feeds["cn"], vae, te_ema, unet_ema, cn, dec)
        run("cn", _cn)
    if "lora" in stages:
        sd = None
        if "base" not in stages and args.resume and os.path.exists(os.path.join(args.resume, "lora.safetensors")):
            sd = load_file(os.path.join(args.resume, "lora.safetensors"))
        run("lora", lambda: stage_lora(ctx, feeds["lora"], vae, te_ema, unet_ema, sd, dec))
    if pool:
        pool.terminate()
    ctx.log("all done")


if __name__ == "__main__":
    main()
