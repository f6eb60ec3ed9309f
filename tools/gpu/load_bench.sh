#!/usr/bin/env bash
# load_bench.sh - what a checkpoint's weights cost from the page cache to
# the device (tools/gpu/load_bench.cu, built here with nvcc), and what the
# process's end costs with and without device memory held.  Writes
# load_bench.md (a table) and load_bench.log to $OUT.
#
#   OUT=dir tools/gpu/load_bench.sh [MB]
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$root/build-load-bench}
mb=${1:-1960}
mkdir -p "$OUT"
tmp=$(mktemp -d /tmp/load-bench.XXXXXX)
log=$OUT/load_bench.log
if ! nvcc -std=c++17 -O2 "$root/tools/gpu/load_bench.cu" -o "$tmp/load_bench" \
  -lpthread >"$log" 2>&1; then
  echo "[load_bench] build failed; see load_bench.log"
  exit 1
fi
"$tmp/load_bench" "$mb" "$tmp/weights.bin" >"$tmp/out.tsv" 2>>"$log"
rc=$?
{
  echo "| way ($mb MiB) | s | GB/s |"
  echo "|---|---|---|"
  awk -F'\t' '{printf "| %s | %s | %s |\n", $1, $2, $3}' "$tmp/out.tsv"
  echo
  echo "| process end after _exit(0) | s (3 runs) |"
  echo "|---|---|"
  for way in "0" "2600" "2600 $tmp/weights.bin"; do
    ts=""
    for i in 1 2 3; do
      # shellcheck disable=SC2086
      t=$("$tmp/load_bench" exit $way 2>>"$log")
      e=$(date +%s.%N)
      ts="$ts $(awk -v a="$t" -v b="$e" 'BEGIN { printf "%.3f", b - a }')"
    done
    what="${way%% *} MiB of device memory held"
    [ "$way" != "${way%% *}" ] && what="$what, the $mb MiB file mapped and read"
    echo "| $what |$ts |"
  done
} >"$OUT/load_bench.md"
cat "$OUT/load_bench.md"
rm -rf "$tmp"
exit $rc
