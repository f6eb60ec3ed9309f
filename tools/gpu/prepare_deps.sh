#!/usr/bin/env bash
# prepare_deps.sh - packs what tools/gpu/run_cuda_tests.sh needs on the GPU
# machine but that machine's image may lack: OpenBLAS (the CPU backend, the
# tests' reference) with its libgfortran/libquadmath, and cblas.h.  Writes
# .gpu-deps/openblas.tar.xz in the repository root (ignored through
# .git/info/exclude) from this machine's installed Debian packages
# (libopenblas-dev / libopenblas0-pthread), or, when they are not installed,
# from `apt-get download` of those packages unpacked with dpkg -x.
#
# Usage (once, here):  tools/gpu/prepare_deps.sh
# then carry ".gpu-deps" in the device call that runs run_cuda_tests.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$root/.gpu-deps
mkdir -p "$out"
if ! grep -qx '/.gpu-deps/' "$root/.git/info/exclude" 2>/dev/null; then
  echo '/.gpu-deps/' >>"$root/.git/info/exclude"
fi
if [ -s "$out/openblas.tar.xz" ]; then
  echo "$out/openblas.tar.xz exists; delete it to rebuild"
  exit 0
fi
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/pack/lib" "$stage/pack/include"
arch=x86_64-linux-gnu
lib=$(readlink -f /usr/lib/$arch/libopenblas.so.0 2>/dev/null || true)
inc=$(dirname "$(ls /usr/include/$arch/openblas*/cblas.h 2>/dev/null | head -1)" 2>/dev/null || true)
if [ -z "$lib" ] || [ ! -f "$lib" ] || [ ! -f "$inc/cblas.h" ]; then
  echo "OpenBLAS not installed here: fetching the Debian packages"
  (cd "$stage" && apt-get download libopenblas0-pthread libopenblas-pthread-dev \
    libgfortran5 libquadmath0)
  for f in "$stage"/*.deb; do dpkg -x "$f" "$stage/root"; done
  lib=$(ls "$stage"/root/usr/lib/$arch/openblas-pthread/libopenblas.so.0)
  inc=$(dirname "$(ls "$stage"/root/usr/include/$arch/openblas-pthread/cblas.h)")
  gf=$(ls "$stage"/root/usr/lib/$arch/libgfortran.so.5* | head -1)
  qm=$(ls "$stage"/root/usr/lib/$arch/libquadmath.so.0* | head -1)
else
  gf=/lib/$arch/libgfortran.so.5
  qm=/lib/$arch/libquadmath.so.0
fi
cp -L "$lib" "$stage/pack/lib/libopenblas.so.0"
cp -L "$gf" "$stage/pack/lib/libgfortran.so.5"
cp -L "$qm" "$stage/pack/lib/libquadmath.so.0"
cp "$inc"/*.h "$stage/pack/include/"
tar -cJf "$out/openblas.tar.xz" -C "$stage/pack" .
ls -la "$out/openblas.tar.xz"
