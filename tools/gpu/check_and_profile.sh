#!/usr/bin/env bash
# check_and_profile.sh - one device call that checks the CUDA backend and
# measures it after a change to kernels/cuda: the kernel tests
# (run_cuda_tests.sh), the benchmark with its per-op profile
# (bench_sd15.sh, WEFT_BENCH_PROFILE), then the model tests
# (run_sd_cuda_tests.sh, on the benchmark's meson build).  The device tool
# brings back at most 8 files: everything but the tables is packed into
# logs.tgz.
#
#   run(command="tools/gpu/check_and_profile.sh", carry=[".gpu-deps", ".whl"],
#       timeout_s=600)
#
# Files in $OUT: summary.txt (each part's exit status, the kernel and model
# tests' failing cases), bench_table.md, profile.md, bench.json, logs.tgz
# (every part's own files, in kernels/, bench/ and models/); with
# WEFT_BENCH_B_ENV (bench_sd15.sh: up to four ';'-separated variants of the
# weft16 stage) also profile_b.md, profile_c.md, ... and their tables in
# logs.tgz's bench/b, bench/c, ...
# Environment: WEFT_BENCH_SKIP (default weft32,vram,check,compile: the
# stages that a speed change does not need), CHECK_KERNEL_S, CHECK_BENCH_S,
# CHECK_MODELS_S (each part's time box: 200, 250, 140 s).  The benchmark
# needs at least 240 s on a fresh machine: its make stage, the build and
# diffusers' eager stage take about 160 s before weft's stage starts (give
# WEFT_BENCH_SKIP=eager,weft32,vram,check,compile to leave diffusers out).
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
top=${OUT:-$root/build-check-profile}
mkdir -p "$top/kernels" "$top/bench" "$top/models"
sum=$top/summary.txt
: >"$sum"

OUT=$top/kernels WEFT_GPU_SANITIZE=0 timeout "${CHECK_KERNEL_S:-200}" \
  "$root/tools/gpu/run_cuda_tests.sh" >/dev/null 2>&1
echo "kernel tests: exit $?" >>"$sum"
grep -v '^PASS' "$top/kernels/summary.txt" >>"$sum" 2>/dev/null

OUT=$top/bench WEFT_BENCH_SKIP=${WEFT_BENCH_SKIP-weft32,vram,check,compile} \
  WEFT_BENCH_PROFILE=$top/profile.md \
  WEFT_BENCH_DEADLINE=$((${CHECK_BENCH_S:-250} - 20)) \
  timeout "${CHECK_BENCH_S:-250}" "$root/tools/gpu/bench_sd15.sh" \
  >/dev/null 2>&1
echo "benchmark: exit $?" >>"$sum"
if ! grep -q '"weft_fp16"' "$top/bench/bench.json" 2>/dev/null; then
  echo "benchmark: no weft stage ran (CHECK_BENCH_S=${CHECK_BENCH_S:-250}: its" \
    "make and build take ~110 s before weft's stage, which needs ~40 s)" >>"$sum"
fi
cp "$top/bench/bench_table.md" "$top/bench/bench.json" "$top/" 2>/dev/null

OUT=$top/models WEFT_GPU_BUILD=/tmp/weft-bench-build \
  WEFT_GPU_DEADLINE=$((${CHECK_MODELS_S:-140} - 30)) \
  timeout "${CHECK_MODELS_S:-140}" "$root/tools/gpu/run_sd_cuda_tests.sh" \
  >/dev/null 2>&1
echo "model tests: exit $?" >>"$sum"
grep -E 'FAIL|Ok:|Fail:|Skipped:' "$top/models/summary.txt" >>"$sum" \
  2>/dev/null

(cd "$top" && tar czf logs.tgz kernels bench models && rm -rf kernels bench \
  models)
cat "$sum"
