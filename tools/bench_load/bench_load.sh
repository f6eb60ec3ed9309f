#!/usr/bin/env bash
# bench_load.sh - how long a checkpoint takes to load: weft's
# CheckpointLoaderSimple in a fresh `weft run` process (tools/bench_load/
# load.yaml), optionally beside another weft build (--base, e.g. an older
# commit's) and diffusers' from_pretrained (--diffusers, a diffusers
# folder, float32 on the CPU, as weft's CPU masters), run alternately so
# that the machine's state is shared.  Prints a table of medians (wall,
# user and system CPU seconds of the process; weft's node time from its
# JSON events) and writes every run to JSON.
#
#   tools/bench_load/bench_load.sh CKPT [--runs N] [--base WEFT]
#       [--weft WEFT] [--diffusers] [--json OUT.json]
#
# CKPT: a .safetensors file or a diffusers folder (for SD1.5 size:
# tools/gpu/bench_sd15.py make --device cpu --work DIR).  The file is read
# once before timing, so every run reads it from the page cache.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
ckpt=${1:?usage: bench_load.sh CKPT [--runs N] [--base WEFT] [--weft WEFT] [--diffusers] [--json OUT]}
shift
runs=5 base="" weft=$root/build/cli/weft diff=0 json=bench_load.json
while [ $# -gt 0 ]; do
  case $1 in
  --runs) runs=$2; shift 2 ;;
  --base) base=$2; shift 2 ;;
  --weft) weft=$2; shift 2 ;;
  --diffusers) diff=1; shift ;;
  --json) json=$2; shift 2 ;;
  *) echo "bench_load.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x "$weft" ] || { echo "bench_load.sh: no weft at $weft (build first)" >&2; exit 2; }
cat "$ckpt" "$ckpt"/*/*.safetensors >/dev/null 2>&1 || true # page cache
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
systems=(weft)
[ -n "$base" ] && systems+=(base)
[ "$diff" = 1 ] && systems+=(diffusers)
# one run: "wall user sys node_ms"
run_one() {
  local sys=$1 bin
  case $sys in
  weft | base)
    bin=$weft
    [ "$sys" = base ] && bin=$base
    /usr/bin/time -f "%e %U %S" -o "$tmp/t" "$bin" run "$here/load.yaml" \
      --set ckpt="$ckpt" --events=json >"$tmp/ev" 2>&1
    local ms
    ms=$(grep '"node":"ckpt"' "$tmp/ev" | grep -o '"ms":[0-9.]*' | cut -d: -f2)
    echo "$(cat "$tmp/t") ${ms:-0}"
    ;;
  diffusers)
    /usr/bin/time -f "%e %U %S" -o "$tmp/t" python3 -c "
import time, torch
from diffusers import StableDiffusionPipeline
t = time.perf_counter()
StableDiffusionPipeline.from_pretrained('$ckpt', torch_dtype=torch.float32,
                                        safety_checker=None)
print('LOAD_MS', (time.perf_counter() - t) * 1e3)" >"$tmp/ev" 2>&1
    echo "$(cat "$tmp/t") $(grep LOAD_MS "$tmp/ev" | cut -d' ' -f2)"
    ;;
  esac
}
for ((i = 0; i < runs; i++)); do
  for s in "${systems[@]}"; do
    echo "$s $(run_one "$s")" >>"$tmp/all"
  done
done
median() { sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
printf '| %s | runs | wall (s) | user (s) | sys (s) | load, in process (s) |\n|---|---|---|---|---|---|\n' "$(basename "$ckpt")"
for s in "${systems[@]}"; do
  row=$(awk -v s="$s" '$1==s' "$tmp/all")
  printf '| %s | %d | %.2f | %.2f | %.2f | %.2f |\n' "$s" "$runs" \
    "$(echo "$row" | awk '{print $2}' | median)" \
    "$(echo "$row" | awk '{print $3}' | median)" \
    "$(echo "$row" | awk '{print $4}' | median)" \
    "$(echo "$row" | awk '{print $5/1000}' | median)"
done
{
  printf '{"ckpt": "%s", "cores": %d, "runs": [' "$ckpt" "$(nproc)"
  awk 'NR>1{printf ", "} {printf "{\"system\": \"%s\", \"wall_s\": %s, \"user_s\": %s, \"sys_s\": %s, \"load_ms\": %s}", $1, $2, $3, $4, $5}' "$tmp/all"
  printf ']}\n'
} >"$json"
echo "runs: $json"
