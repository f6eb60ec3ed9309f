"""Exports trained fp32 weights (train_default.py's --out folder) to the shipped fp16 files.

    python3 tools/train/export_default.py --train-dir DIR --out models/default

Writes weft-shapes-v1.safetensors (UNet + VAE + CLIP text encoder, original single-file
layout), weft-shapes-controlnet.safetensors (cldm layout, control_model.*),
weft-shapes-outline-lora.safetensors (kohya/A1111 keys), the diffusers/transformers
config JSONs, and eval_prompts.json (the held-out prompts with their expected attributes).
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import configs  # noqa: E402
import convert_original as co  # noqa: E402
import shapes  # noqa: E402
from train_default import load_split  # noqa: E402

MODEL_NAME = "weft-shapes-v1"


def common_meta():
    return {
        "modelspec.architecture": "stable-diffusion-v1",
        "modelspec.title": MODEL_NAME,
        "weft.model": MODEL_NAME,
        "weft.image_size": str(configs.IMAGE_SIZE),
        "weft.unet.num_heads": str(configs.UNET["attention_head_dim"]),
        "weft.text.num_heads": str(configs.TEXT["num_attention_heads"]),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-dir", required=True)
    ap.add_argument("--out", default="models/default")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    unet_sd, vae_sd, te_sd = (load_split(a.train_dir, n) for n in ("unet", "vae", "te"))
    # Load into the real classes first: proves the fp32 weights match the configs.
    unet, vae, te = configs.make_unet(), configs.make_vae(), configs.make_text()
    unet.load_state_dict(unet_sd)
    vae.load_state_dict(vae_sd)
    te.load_state_dict(te_sd)
    ck = co.to_original(unet.state_dict(), vae.state_dict(), te.state_dict())
    meta = dict(common_meta(), **{
        "format": "pt",
        "scaling_factor": str(configs.LATENT_SCALE),
        "prediction_type": "epsilon",
        "weft.schedule": "scaled_linear beta 0.00085..0.012, 1000 steps",
        "weft.unet_config": json.dumps(configs.UNET),
        "weft.vae_config": json.dumps(configs.VAE),
        "weft.text_config": json.dumps(configs.TEXT),
    })
    path = os.path.join(a.out, MODEL_NAME + ".safetensors")
    save_file(ck, path, metadata=meta)
    print(path, os.path.getsize(path), "bytes,", len(ck), "tensors")

    cn_sd = load_split(a.train_dir, "controlnet")
    if cn_sd is not None:
        cn = configs.make_controlnet(unet)
        cn.load_state_dict(cn_sd)
        cc = co.controlnet_to_original(cn.state_dict())
        p = os.path.join(a.out, "weft-shapes-controlnet.safetensors")
        save_file(cc, p, metadata=dict(common_meta(), **{
            "format": "pt", "weft.hint": "shape mask: white shape on black, 3 channels, 0..1, 128x128",
            "weft.controlnet_hint_channels": json.dumps(configs.CONTROLNET_HINT_CHANNELS)}))
        print(p, os.path.getsize(p), "bytes,", len(cc), "tensors")

    lp = os.path.join(a.train_dir, "lora.safetensors")
    if os.path.exists(lp):
        ls = {k: v.half().contiguous() for k, v in load_file(lp).items()}
        p = os.path.join(a.out, "weft-shapes-outline-lora.safetensors")
        save_file(ls, p, metadata=dict(common_meta(), **{
            "format": "pt", "ss_network_module": "networks.lora", "ss_network_dim": str(configs.LORA_RANK),
            "ss_network_alpha": str(configs.LORA_ALPHA), "ss_conv_dim": str(configs.LORA_RANK),
            "ss_conv_alpha": str(configs.LORA_ALPHA), "weft.style": "outlined, unfilled shapes"}))
        print(p, os.path.getsize(p), "bytes,", len(ls), "tensors")

    cfgs = {"unet_config.json": unet.config, "vae_config.json": vae.config}
    for name, c in cfgs.items():
        with open(os.path.join(a.out, name), "w") as f:
            json.dump({k: v for k, v in dict(c).items() if not k.startswith("_")}, f, indent=1, sort_keys=True)
    with open(os.path.join(a.out, "text_encoder_config.json"), "w") as f:
        f.write(te.config.to_json_string())
    with open(os.path.join(a.out, "scheduler_config.json"), "w") as f:
        json.dump(dict(configs.SCHEDULER, _class_name="EulerDiscreteScheduler"), f, indent=1)
    with open(os.path.join(a.out, "eval_prompts.json"), "w") as f:
        json.dump(shapes.eval_prompts(), f, indent=1)


if __name__ == "__main__":
    main()
