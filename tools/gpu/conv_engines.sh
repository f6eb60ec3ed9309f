#!/usr/bin/env bash
# conv_engines.sh - every cuDNN graph-API engine configuration that the
# heuristic modes A, B and FALLBACK offer for SD1.5's 3x3 convolutions in
# NHWC fp16 (weft's channels-last path), timed alone, with their numerical
# notes, knobs, workspace, a bit-for-bit repeat check and their distance
# from weft's current pick, on the GPU machine.  Builds
# tools/gpu/conv_engines.c (cc, cuDNN and the CUDA runtime only) and runs
# it; see that file for what is measured.
#
#   OUT=dir tools/gpu/conv_engines.sh [c,h,w,k,n ...]
#
# With the device tool (nothing to carry):
#   run(command="OUT=$OUT tools/gpu/conv_engines.sh", timeout_s=300)
# cuDNN is found as run_cuda_tests.sh finds it: the CUDA toolkit, /usr, or
# the pip package nvidia-cudnn-* (PyTorch's).  Files written to $OUT:
#   conv_engines.md   a table per shape, then the summary (also on stdout)
#   conv_engines.log  where cuDNN came from, the build's and the run's stderr
# Environment: CONV_ENGINES_DEADLINE_S (100): no shape starts after it;
# CONV_ENGINES_MAX_RANK (all): only each heuristic mode's first N.
# Exit status: the program's (0 when it could measure; 1 when no GPU,
# cuDNN or build).
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$root/build-conv-engines}
mkdir -p "$OUT"
log=$OUT/conv_engines.log
: >"$log"
tmp=$(mktemp -d /tmp/conv-engines.XXXXXX)
say() { echo "[conv_engines] $*" | tee -a "$log"; }

{
  date -u
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
  else
    echo "no nvidia-smi"
  fi
} >>"$log"

# ---- the CUDA runtime: the toolkit by nvcc (or CUDA_HOME), else pip's ----
nvcc_bin=$(command -v nvcc || true)
if [ -n "${CUDA_HOME:-}" ]; then
  cuda_home=$CUDA_HOME
elif [ -n "$nvcc_bin" ]; then
  cuda_home=$(dirname "$(dirname "$(readlink -f "$nvcc_bin")")")
else
  cuda_home=/usr/local/cuda
fi
# find_lib NAME HEADER LIB INCDIR LIBDIR: NAME_inc, NAME_libs and NAME_dir
# from INCDIR/HEADER and the first of LIBDIR/LIB.so[.N]; false if either
# is missing
find_lib() {
  [ -f "$4/$2" ] || return 1
  local lib
  lib=$(ls "$5/$3.so" "$5/$3".so.[0-9]* 2>/dev/null | head -1)
  [ -n "$lib" ] || return 1
  printf -v "$1_inc" '%s' "$4"
  printf -v "$1_libs" '%s' "-L$5 -l:$(basename "$lib")"
  printf -v "$1_dir" '%s' "$5"
}
# a pip package's include and lib folders (nvidia.* are namespace
# packages: __path__, not __file__)
pip_dir() {
  python3 -c "import $1 as m; print(list(m.__path__)[0])" 2>/dev/null
}
cudart_inc="" cudart_libs="" cudart_dir=""
find_lib cudart cuda_runtime.h libcudart "$cuda_home/include" "$cuda_home/lib64" ||
  find_lib cudart cuda_runtime.h libcudart "$cuda_home/include" "$cuda_home/lib" ||
  find_lib cudart cuda_runtime.h libcudart "$cuda_home/include" \
    "$cuda_home/targets/x86_64-linux/lib" ||
  {
    pyd=$(pip_dir nvidia.cuda_runtime)
    [ -n "$pyd" ] && find_lib cudart cuda_runtime.h libcudart "$pyd/include" "$pyd/lib"
  } || true
if [ -z "$cudart_inc" ]; then
  say "no CUDA runtime (cuda_runtime.h and libcudart) found"
  exit 1
fi

# ---- cuDNN: where run_cuda_tests.sh looks for it ----
cudnn_inc="" cudnn_libs="" cudnn_dir=""
find_lib cudnn cudnn.h libcudnn "$cuda_home/include" "$cuda_home/lib64" ||
  find_lib cudnn cudnn.h libcudnn "$cuda_home/include" "$cuda_home/lib" ||
  find_lib cudnn cudnn.h libcudnn /usr/include /usr/lib/x86_64-linux-gnu ||
  {
    pyd=$(pip_dir nvidia.cudnn)
    [ -n "$pyd" ] && find_lib cudnn cudnn.h libcudnn "$pyd/include" "$pyd/lib"
  } || true
if [ -z "$cudnn_inc" ]; then
  say "no cuDNN (cudnn.h and libcudnn) found in $cuda_home, /usr or the nvidia-cudnn pip package"
  exit 1
fi
{
  echo "cuda runtime: $cudart_inc, $cudart_libs"
  echo "cudnn: $cudnn_inc, $cudnn_libs"
  grep -E '^#define CUDNN_(MAJOR|MINOR|PATCHLEVEL) ' "$cudnn_inc/cudnn_version.h" 2>/dev/null
} >>"$log"

# ---- build ----
# The rpath finds the same libraries at run time; LD_LIBRARY_PATH covers
# cuDNN's own sub-libraries (libcudnn_engines_*.so), which it opens by name.
exe=$tmp/conv_engines
echo "== build" >>"$log"
# shellcheck disable=SC2086
if ! cc -O2 -std=c11 -Wall -Wextra -I"$cudart_inc" -I"$cudnn_inc" \
  "$root/tools/gpu/conv_engines.c" -o "$exe" $cudnn_libs $cudart_libs \
  -Wl,-rpath,"$cudnn_dir:$cudart_dir" >>"$log" 2>&1; then
  say "build failed; see conv_engines.log"
  tail -30 "$log"
  exit 1
fi
export LD_LIBRARY_PATH="$cudnn_dir:$cudart_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# ---- run: the tables on stdout and in $OUT/conv_engines.md ----
printf '%s\n' "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" "== run" >>"$log"
OUT=$OUT "$exe" "$@" 2>>"$log"
rc=$?
if [ $rc != 0 ]; then
  echo "[conv_engines] exited with $rc; the end of conv_engines.log:"
  tail -20 "$log"
fi
rm -rf "$tmp"
exit $rc
