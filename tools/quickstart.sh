#!/usr/bin/env bash
# Quick start: installs what is missing (Debian 12), builds weft, and runs the
# main example graph, printing where its output went.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/deps.sh
weft_install_deps
[ -d /usr/local/cuda/bin ] && export PATH="$PATH:/usr/local/cuda/bin"
[ -d build ] || meson setup build --buildtype=release >/dev/null
ninja -C build
echo
echo "Running graphs/image-basics.yaml ..."
./build/cli/weft run graphs/image-basics.yaml --output-dir output
echo
echo "Done: the images are in $(pwd)/output/"
