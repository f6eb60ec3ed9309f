#!/usr/bin/env bash
# move_bench.sh - the channels-last moves of kernels/cuda/layout.cu timed
# alone at SD1.5's shapes next to candidate kernels and a plain device
# copy of the same bytes, on the GPU machine (tools/gpu/move_bench.cu, built
# here with nvcc; see that file for the candidates).  Writes
# move_bench.md (a table: microseconds a call, GB/s, output bytes that
# differ from the production kernel's) and move_bench.log to $OUT.
#
#   OUT=dir tools/gpu/move_bench.sh
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$root/build-move-bench}
mkdir -p "$OUT"
tmp=$(mktemp -d /tmp/move-bench.XXXXXX)
log=$OUT/move_bench.log
if ! nvcc -std=c++17 -O2 -gencode=arch=compute_90,code=sm_90 -I"$root" \
  -I"$root/runtime/include" -I"$root/kernels/cuda" -DWEFT_HAVE_CUDNN=0 \
  "$root/tools/gpu/move_bench.cu" -o "$tmp/move_bench" >"$log" 2>&1; then
  echo "[move_bench] build failed; see move_bench.log"
  exit 1
fi
"$tmp/move_bench" >"$tmp/out.tsv" 2>>"$log"
rc=$?
{
  echo "| shape | move | kernel | us a call | GB/s | output bytes differing |"
  echo "|---|---|---|---|---|---|"
  awk -F'\t' '{printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6}' "$tmp/out.tsv"
  echo
  nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null |
    sed 's/$/; median of 7 runs of 20 calls each, fp16./'
} >"$OUT/move_bench.md"
cat "$OUT/move_bench.md"
rm -rf "$tmp"
exit $rc
