#!/usr/bin/env bash
# Quick start: installs what is missing (Debian 12), builds weft, and draws a
# picture with the embedded default model (graphs/txt2img.yaml on
# models/default/, no download), printing where the image is.
#   bash tools/quickstart.sh ["a yellow star on a black background" [SEED]]
set -euo pipefail
cd "$(dirname "$0")/.."
prompt="${1:-a red circle on a blue background}"
seed="${2:-42}"
source tools/deps.sh
weft_install_deps
[ -d /usr/local/cuda/bin ] && export PATH="$PATH:/usr/local/cuda/bin"
[ -d build ] || meson setup build --buildtype=release >/dev/null
ninja -C build
echo
echo "Running graphs/txt2img.yaml on the default model: \"$prompt\", seed $seed ..."
t0=$(date +%s.%N)
# weft run prints each output as "name: value" on stdout (here "file: PATH")
out=$(./build/cli/weft run graphs/txt2img.yaml --set "prompt=$prompt" \
  --set "seed=$seed" --output-dir output)
t1=$(date +%s.%N)
file=$(printf '%s\n' "$out" | sed -n 's/^file: //p' | tail -n 1)
echo
echo "Done in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s: the image is $file"
echo "Another prompt: ./build/cli/weft run graphs/txt2img.yaml --output-dir output \\"
echo "    --set prompt=\"a small green triangle, top left, white background\" --set seed=7"
echo "More examples: graphs/ (lora.yaml, controlnet.yaml, img2img.yaml, image-basics.yaml, ...)"
