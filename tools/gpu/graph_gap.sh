#!/usr/bin/env bash
# graph_gap.sh - the GPU's cost of a launch between dependent kernels, on
# a stream, in a CUDA graph and in a graph with programmatic dependent
# launch (tools/gpu/graph_gap.cu, built here with nvcc), for the GPU
# machine.  Writes graph_gap.md (the table) and graph_gap.json to $OUT.
#
#   OUT=dir tools/gpu/graph_gap.sh
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$root/build-graph-gap}
mkdir -p "$OUT"
tmp=$(mktemp -d /tmp/graph-gap.XXXXXX)
if ! nvcc -std=c++17 -O2 -gencode=arch=compute_90,code=sm_90 \
  "$root/tools/gpu/graph_gap.cu" -o "$tmp/graph_gap" >"$OUT/graph_gap.log" 2>&1; then
  echo "[graph_gap] build failed; see graph_gap.log"
  exit 1
fi
{
  "$tmp/graph_gap" "$OUT"
  echo
  nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null |
    sed 's/$/; median of 7 chains./'
} >"$OUT/graph_gap.md" 2>>"$OUT/graph_gap.log"
rc=$?
cat "$OUT/graph_gap.md"
rm -rf "$tmp"
exit $rc
