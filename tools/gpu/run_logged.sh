#!/usr/bin/env bash
# run_logged.sh - one fresh `weft run graphs/txt2img.yaml` (512x512, 20
# steps, CFG 7.5) on the benchmark's random SD1.5 folder and build (run
# bench_sd15.sh first: /tmp/weft-bench-work, /tmp/weft-bench-build), with
# the CUDA backend's diagnostic logs on: each cuDNN plan with its
# candidates and their measured times (WEFT_CUDA_CONV_LOG=2) and every
# cudaMalloc (WEFT_CUDA_ALLOC_LOG=1).  Writes $OUT/run_events.json (the
# JSON events), $OUT/run_stderr.txt and $OUT/times.txt (the run's wall
# and `weft nodes`', the plugins' load).
#   run(command="tools/gpu/bench_sd15.sh; tools/gpu/run_logged.sh", ...)
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$root/build-run-logged}
mkdir -p "$OUT"
work=${WEFT_BENCH_WORK:-/tmp/weft-bench-work}
build=${WEFT_BENCH_BUILD:-/tmp/weft-bench-build}
# shellcheck source=tools/gpu/lib.sh
. "$root/tools/gpu/lib.sh"
weft_gpu_deps "$root" /tmp/weft-bench-deps >/dev/null 2>&1 || exit 1
export LD_LIBRARY_PATH=${WEFT_GPU_RUN_PATH}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
mkdir -p /tmp/weft-run-logged
rm -f /tmp/weft-run-logged/*.png
# a process's fixed costs: the plugins loaded (`weft nodes`), twice
for i in 1 2; do
  t0=$(date +%s%N)
  "$build/cli/weft" nodes >/dev/null 2>&1
  echo "weft nodes: $((($(date +%s%N) - t0) / 1000000)) ms" >>"$OUT/times.txt"
done
t0=$(date +%s%N)
WEFT_CUDA_CONV_LOG=${WEFT_CUDA_CONV_LOG:-2} \
  WEFT_CUDA_ALLOC_LOG=${WEFT_CUDA_ALLOC_LOG:-1} WEFT_PRECISION=fp16 \
  timeout 300 "$build/cli/weft" run "$root/graphs/txt2img.yaml" \
  --device cuda --output-dir /tmp/weft-run-logged --events json \
  --set "ckpt=$work/sd15_random" --set width=512 --set height=512 \
  --set steps=20 --set cfg=7.5 --set seed=42 \
  >"$OUT/run_events.json" 2>"$OUT/run_stderr.txt"
rc=$?
echo "weft run: $((($(date +%s%N) - t0) / 1000000)) ms wall" >>"$OUT/times.txt"
echo "weft run (logged): exit $rc" | tee -a "$OUT/run_stderr.txt"
