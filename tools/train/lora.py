"""LoRA for the default model: injection for training, kohya/A1111 key format for saving and merging.

Targets (kohya's "LoRA" network for SD1.x plus its LoCon conv layers): every Linear and 1x1
Conv2d inside the UNet's transformer blocks (proj_in, proj_out, attn1/attn2
to_q/to_k/to_v/to_out.0, ff.net.0.proj, ff.net.2), the 3x3 conv1/conv2 of every UNet res
block (lora_down [r, in, 3, 3], lora_up [out, r, 1, 1]), and the text encoder's self_attn
q/k/v/out_proj and mlp fc1/fc2.
Keys: lora_unet_<diffusers module path, dots as underscores>.lora_down.weight / .lora_up.weight
/ .alpha, and lora_te_text_model_<...> for the text encoder. The delta applied to a weight is
strength * alpha / rank * up @ down.
"""
import torch
import torch.nn as nn

UNET_TARGET_PARENT = "Transformer2DModel"
TE_TARGET_PARENT = "CLIPEncoderLayer"


class LoRAWrap(nn.Module):
    def __init__(self, base, rank, alpha):
        super().__init__()
        self.base = base
        self.rank, self.alpha = rank, alpha
        self.multiplier = 1.0
        if isinstance(base, nn.Linear):
            self.down = nn.Linear(base.in_features, rank, bias=False)
            self.up = nn.Linear(rank, base.out_features, bias=False)
        else:  # 1x1 or 3x3 conv (kohya LoCon): down has the kernel, up is 1x1
            self.down = nn.Conv2d(base.in_channels, rank, base.kernel_size, base.stride, base.padding, bias=False)
            self.up = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=5 ** 0.5)
        nn.init.zeros_(self.up.weight)

    def forward(self, x, *args, **kwargs):
        return self.base(x) + self.up(self.down(x)) * (self.multiplier * self.alpha / self.rank)


def _targets(model, parent_cls):
    out = []
    for pname, parent in model.named_modules():
        if type(parent).__name__ == parent_cls:
            for cname, child in parent.named_modules():
                if isinstance(child, nn.Linear) or (isinstance(child, nn.Conv2d) and child.kernel_size == (1, 1)):
                    out.append((f"{pname}.{cname}" if pname else cname, child))
        elif parent_cls == UNET_TARGET_PARENT and type(parent).__name__ == "ResnetBlock2D":
            # LoCon: the 3x3 convs of every UNet res block
            for cname in ("conv1", "conv2"):
                out.append((f"{pname}.{cname}", getattr(parent, cname)))
    return out


def _te_path(name):
    # transformers 5 keeps text_model as an attribute but saves keys without it
    return name if name.startswith("text_model.") else "text_model." + name


def inject(unet, text, rank, alpha):
    """Replaces targets by LoRAWrap modules; returns {kohya_name: wrap}."""
    wraps = {}
    for model, parent, prefix in ((unet, UNET_TARGET_PARENT, "lora_unet_"), (text, TE_TARGET_PARENT, "lora_te_")):
        if model is None:
            continue
        for name, mod in _targets(model, parent):
            w = LoRAWrap(mod, rank, alpha).to(mod.weight.device)
            holder = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(holder, name.rsplit(".", 1)[-1], w)
            key = prefix + (_te_path(name) if prefix == "lora_te_" else name).replace(".", "_")
            wraps[key] = w
    return wraps


def state_dict_kohya(wraps, dtype=torch.float16):
    sd = {}
    for k, w in wraps.items():
        sd[k + ".lora_down.weight"] = w.down.weight.detach().to("cpu", dtype).contiguous()
        sd[k + ".lora_up.weight"] = w.up.weight.detach().to("cpu", dtype).contiguous()
        sd[k + ".alpha"] = torch.tensor(float(w.alpha), dtype=dtype)
    return sd


def load_into_wraps(wraps, sd):
    for k, w in wraps.items():
        w.down.weight.data.copy_(sd[k + ".lora_down.weight"].to(w.down.weight))
        w.up.weight.data.copy_(sd[k + ".lora_up.weight"].to(w.up.weight))


def merge_kohya(unet, text, sd, strength=1.0):
    """Adds strength * alpha/rank * up @ down to the targeted weights (in place). Returns count."""
    names = {}
    for model, parent, prefix in ((unet, UNET_TARGET_PARENT, "lora_unet_"), (text, TE_TARGET_PARENT, "lora_te_")):
        if model is None:
            continue
        for name, mod in _targets(model, parent):
            names[prefix + (_te_path(name) if prefix == "lora_te_" else name).replace(".", "_")] = mod
    n = 0
    for k, mod in names.items():
        if k + ".lora_down.weight" not in sd:
            continue
        down = sd[k + ".lora_down.weight"].float()
        up = sd[k + ".lora_up.weight"].float()
        rank = down.shape[0]
        alpha = float(sd[k + ".alpha"]) if k + ".alpha" in sd else rank
        # 1x1 and 3x3 alike: [out, r] @ [r, in*k*k] reshaped to the weight
        delta = (up.flatten(1) @ down.flatten(1)) * (strength * alpha / rank)
        mod.weight.data += delta.reshape(mod.weight.shape).to(mod.weight)
        n += 1
    unknown = {k.split(".")[0] for k in sd} - set(names)
    if unknown:
        raise KeyError(f"LoRA keys match no module: {sorted(unknown)[:3]}")
    return n
