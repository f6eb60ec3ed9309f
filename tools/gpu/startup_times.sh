#!/usr/bin/env bash
# startup_times.sh - where a fresh `weft run` spends the time outside its
# graph: the process's start without plugins (`weft --version`), with
# them (`weft nodes`, twice; the dynamic loader's own statistics), a graph
# checked (`weft validate`), and the shared objects the sd plugin maps.
# Run after bench_sd15.sh (its build, /tmp/weft-bench-build).  Writes
# $OUT/startup.txt.
#   run(command="tools/gpu/bench_sd15.sh; tools/gpu/startup_times.sh", ...)
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$root/build-startup}
mkdir -p "$OUT"
build=${WEFT_BENCH_BUILD:-/tmp/weft-bench-build}
# shellcheck source=tools/gpu/lib.sh
. "$root/tools/gpu/lib.sh"
weft_gpu_deps "$root" /tmp/weft-bench-deps >/dev/null 2>&1 || exit 1
export LD_LIBRARY_PATH=${WEFT_GPU_RUN_PATH}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
out=$OUT/startup.txt
: >"$out"
ms() {
  local what=$1
  shift
  local t0
  t0=$(date +%s%N)
  "$@" >/dev/null 2>&1
  echo "$what: $((($(date +%s%N) - t0) / 1000000)) ms (exit $?)" >>"$out"
}
for i in 1 2 3; do ms "weft --version" "$build/cli/weft" --version; done
for i in 1 2 3; do ms "weft nodes" "$build/cli/weft" nodes; done
for i in 1 2; do
  ms "weft validate graphs/txt2img.yaml" "$build/cli/weft" validate \
    "$root/graphs/txt2img.yaml"
done
echo "---- LD_DEBUG=statistics weft nodes" >>"$out"
LD_DEBUG=statistics "$build/cli/weft" nodes 2>&1 >/dev/null |
  grep -E "startup time|relocation|load objects" >>"$out"
echo "---- the sd plugin's shared objects (MiB)" >>"$out"
sd=$(find "$build" -name 'weft-sd.so' | head -1)
ldd "$sd" 2>/dev/null | awk '{print $3}' | grep / | while read -r f; do
  echo "$(($(stat -L -c %s "$f") / 1048576)) $f"
done | sort -n >>"$out"
cat "$out"
