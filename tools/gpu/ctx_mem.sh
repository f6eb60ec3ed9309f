#!/usr/bin/env bash
# ctx_mem.sh - builds and runs tools/gpu/ctx_mem.cu on the GPU machine
# (cuDNN from the toolkit or torch's pip package, as tools/gpu/lib.sh finds
# it): the device memory a process holds before weft allocates anything.
#   run(command="tools/gpu/ctx_mem.sh", carry=[".gpu-deps"], timeout_s=120)
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-$root/build-ctx-mem}
mkdir -p "$out"
say() { echo "[ctx_mem] $*"; }
# shellcheck source=tools/gpu/lib.sh
. "$root/tools/gpu/lib.sh"
weft_gpu_deps "$root" /tmp/weft-ctx-deps >/dev/null || exit 1
nvcc -O2 -arch=sm_90 -o /tmp/ctx_mem "$root/tools/gpu/ctx_mem.cu" \
  -lcublasLt -lcublas -lcudnn || exit 1
LD_LIBRARY_PATH=${WEFT_GPU_RUN_PATH}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
  /tmp/ctx_mem | tee "$out/ctx_mem.txt"
