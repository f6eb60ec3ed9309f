"""Key mapping between diffusers/transformers names and the original (CompVis/ldm, cldm) layout.

A port of diffusers' scripts/convert_diffusers_to_original_stable_diffusion.py (UNet and VAE
maps, SD1.x text encoder prefix), plus the ControlNet map (the inverse of diffusers'
convert_controlnet_checkpoint). Like the original script, each map is a list of string
replacements applied to every key, so it is exact for SD1.x-shaped models with 4 levels and
2 res blocks per UNet level; for the VAE the res-block index passes through unchanged, so
layers_per_block=1 maps to down.{i}.block.0 and up.{i}.block.{0,1}.
"""
import re

import torch

# ---------------------------------------------------------------- UNet
unet_conversion_map = [
    # (stable-diffusion, HF Diffusers)
    ("time_embed.0.weight", "time_embedding.linear_1.weight"),
    ("time_embed.0.bias", "time_embedding.linear_1.bias"),
    ("time_embed.2.weight", "time_embedding.linear_2.weight"),
    ("time_embed.2.bias", "time_embedding.linear_2.bias"),
    ("input_blocks.0.0.weight", "conv_in.weight"),
    ("input_blocks.0.0.bias", "conv_in.bias"),
    ("out.0.weight", "conv_norm_out.weight"),
    ("out.0.bias", "conv_norm_out.bias"),
    ("out.2.weight", "conv_out.weight"),
    ("out.2.bias", "conv_out.bias"),
]

unet_conversion_map_resnet = [
    ("in_layers.0", "norm1"),
    ("in_layers.2", "conv1"),
    ("out_layers.0", "norm2"),
    ("out_layers.3", "conv2"),
    ("emb_layers.1", "time_emb_proj"),
    ("skip_connection", "conv_shortcut"),
]

unet_conversion_map_layer = []
for i in range(4):
    for j in range(2):
        unet_conversion_map_layer.append((f"input_blocks.{3 * i + j + 1}.0.", f"down_blocks.{i}.resnets.{j}."))
        if i < 3:
            unet_conversion_map_layer.append((f"input_blocks.{3 * i + j + 1}.1.", f"down_blocks.{i}.attentions.{j}."))
    for j in range(3):
        unet_conversion_map_layer.append((f"output_blocks.{3 * i + j}.0.", f"up_blocks.{i}.resnets.{j}."))
        if i > 0:
            unet_conversion_map_layer.append((f"output_blocks.{3 * i + j}.1.", f"up_blocks.{i}.attentions.{j}."))
    if i < 3:
        unet_conversion_map_layer.append((f"input_blocks.{3 * (i + 1)}.0.op.", f"down_blocks.{i}.downsamplers.0.conv."))
        unet_conversion_map_layer.append((f"output_blocks.{3 * i + 2}.{1 if i == 0 else 2}.",
                                          f"up_blocks.{i}.upsamplers.0."))
unet_conversion_map_layer.append(("middle_block.1.", "mid_block.attentions.0."))
for j in range(2):
    unet_conversion_map_layer.append((f"middle_block.{2 * j}.", f"mid_block.resnets.{j}."))


def unet_key_map(keys):
    """{diffusers key: original key}. Same order of replacements as the diffusers script."""
    mapping = {k: k for k in keys}
    for sd_name, hf_name in unet_conversion_map:
        if hf_name in mapping:
            mapping[hf_name] = sd_name
    for k, v in mapping.items():
        if "resnets" in k:
            for sd_part, hf_part in unet_conversion_map_resnet:
                v = v.replace(hf_part, sd_part)
            mapping[k] = v
    for k, v in mapping.items():
        for sd_part, hf_part in unet_conversion_map_layer:
            v = v.replace(hf_part, sd_part)
        mapping[k] = v
    return mapping


# ---------------------------------------------------------------- VAE
vae_conversion_map = [
    ("nin_shortcut", "conv_shortcut"),
    ("norm_out", "conv_norm_out"),
    ("mid.attn_1.", "mid_block.attentions.0."),
]
for i in range(4):
    for j in range(2):
        vae_conversion_map.append((f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}."))
    if i < 3:
        vae_conversion_map.append((f"down.{i}.downsample.", f"down_blocks.{i}.downsamplers.0."))
        vae_conversion_map.append((f"up.{3 - i}.upsample.", f"up_blocks.{i}.upsamplers.0."))
    for j in range(3):
        vae_conversion_map.append((f"decoder.up.{3 - i}.block.{j}.", f"decoder.up_blocks.{i}.resnets.{j}."))
for i in range(2):
    vae_conversion_map.append((f"mid.block_{i + 1}.", f"mid_block.resnets.{i}."))

# Current diffusers names the VAE attention to_q/to_k/to_v/to_out.0 (older: query/key/value/proj_attn).
vae_conversion_map_attn = [
    ("norm.", "group_norm."),
    ("q.", "to_q."),
    ("k.", "to_k."),
    ("v.", "to_v."),
    ("proj_out.", "to_out.0."),
]
VAE_ATTN_1X1 = ["q", "k", "v", "proj_out"]


def vae_key_map(keys):
    mapping = {k: k for k in keys}
    for k, v in mapping.items():
        for sd_part, hf_part in vae_conversion_map:
            v = v.replace(hf_part, sd_part)
        mapping[k] = v
    for k, v in mapping.items():
        if "attentions" in k:
            for sd_part, hf_part in vae_conversion_map_attn:
                v = v.replace(hf_part, sd_part)
            mapping[k] = v
    return mapping


def _vae_is_1x1(orig_key):
    return any(f"mid.attn_1.{w}.weight" in orig_key for w in VAE_ATTN_1X1)


# ---------------------------------------------------------------- text encoder (SD1.x: HF CLIP names kept)
def te_key_map(keys):
    out = {}
    for k in keys:
        if k.endswith("position_ids"):
            continue
        out[k] = "transformer." + (k if k.startswith("text_model.") else "text_model." + k)
    return out


# ---------------------------------------------------------------- ControlNet (cldm)
def controlnet_key_map(keys):
    """{diffusers ControlNetModel key: cldm ControlNet key (without the control_model. prefix)}."""
    base = unet_key_map([k for k in keys if not k.startswith(("controlnet_", "controlnet_cond_embedding"))])
    out = dict(base)
    for k in keys:
        if k.startswith("controlnet_cond_embedding."):
            rest = k[len("controlnet_cond_embedding."):]
            m = re.match(r"blocks\.(\d+)\.(.*)", rest)
            if m:
                out[k] = f"input_hint_block.{2 * (int(m.group(1)) + 1)}.{m.group(2)}"
            elif rest.startswith("conv_in."):
                out[k] = "input_hint_block.0." + rest[len("conv_in."):]
            elif rest.startswith("conv_out."):
                out[k] = "input_hint_block.14." + rest[len("conv_out."):]
            else:
                raise KeyError(k)
        elif k.startswith("controlnet_down_blocks."):
            m = re.match(r"controlnet_down_blocks\.(\d+)\.(.*)", k)
            out[k] = f"zero_convs.{m.group(1)}.0.{m.group(2)}"
        elif k.startswith("controlnet_mid_block."):
            out[k] = "middle_block_out.0." + k[len("controlnet_mid_block."):]
    return out


# ---------------------------------------------------------------- whole checkpoints
PREFIX_UNET = "model.diffusion_model."
PREFIX_VAE = "first_stage_model."
PREFIX_TE = "cond_stage_model."
PREFIX_CN = "control_model."


def to_original(unet_sd, vae_sd, te_sd, dtype=torch.float16):
    out = {}
    for k, v in unet_key_map(unet_sd.keys()).items():
        out[PREFIX_UNET + v] = unet_sd[k]
    for k, v in vae_key_map(vae_sd.keys()).items():
        t = vae_sd[k]
        if _vae_is_1x1(v):
            t = t.reshape(*t.shape, 1, 1)
        out[PREFIX_VAE + v] = t
    for k, v in te_key_map(te_sd.keys()).items():
        out[PREFIX_TE + v] = te_sd[k]
    return {k: v.detach().to("cpu", dtype).contiguous() for k, v in out.items()}


def controlnet_to_original(cn_sd, dtype=torch.float16):
    return {PREFIX_CN + v: cn_sd[k].detach().to("cpu", dtype).contiguous()
            for k, v in controlnet_key_map(cn_sd.keys()).items()}


def from_original(ckpt, unet, vae, text):
    """Loads an original-layout state dict into diffusers/transformers models (names from the models)."""
    def load(model, kmap, prefix, fix=None):
        sd = {}
        for hk, ok in kmap.items():
            t = ckpt[prefix + ok]
            if fix:
                t = fix(ok, t)
            sd[hk] = t.float()
        missing = set(model.state_dict()) - set(sd)
        missing = {m for m in missing if not m.endswith("position_ids")}
        if missing:
            raise KeyError(f"checkpoint lacks {sorted(missing)[:4]}")
        model.load_state_dict(sd, strict=False)
        return set(prefix + ok for ok in kmap.values())

    used = set()
    if unet is not None:
        used |= load(unet, unet_key_map(unet.state_dict().keys()), PREFIX_UNET)
    if vae is not None:
        used |= load(vae, vae_key_map(vae.state_dict().keys()), PREFIX_VAE,
                     lambda ok, t: t.reshape(t.shape[0], t.shape[1]) if _vae_is_1x1(ok) else t)
    if text is not None:
        used |= load(text, te_key_map(text.state_dict().keys()), PREFIX_TE)
    return used


def controlnet_from_original(ckpt, cn):
    kmap = controlnet_key_map(cn.state_dict().keys())
    cn.load_state_dict({hk: ckpt[PREFIX_CN + ok].float() for hk, ok in kmap.items()})
