"""Writes the split fp32 state dicts train_default.py --resume reads (vae, te, unet) from a
shipped single-file checkpoint in the original layout, so a training run can continue from
models/default/weft-shapes-v1.safetensors without carrying the previous run's files.

    python3 tools/train/resume_from_original.py models/default/weft-shapes-v1.safetensors OUT
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors.torch import load_file  # noqa: E402

import configs  # noqa: E402
import convert_original as co  # noqa: E402
from train_default import save_split  # noqa: E402


def main():
    ckpt, out = sys.argv[1], sys.argv[2]
    unet, vae, te = configs.make_unet(), configs.make_vae(), configs.make_text()
    co.from_original(load_file(ckpt), unet, vae, te)
    os.makedirs(out, exist_ok=True)
    for name, m in (("vae", vae), ("te", te), ("unet", unet)):
        save_split(m.state_dict(), out, name)
    print("wrote", sorted(os.listdir(out)))


if __name__ == "__main__":
    main()
