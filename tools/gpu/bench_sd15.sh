#!/usr/bin/env bash
# bench_sd15.sh - issue 7's benchmark in one device call: weft vs diffusers
# eager and diffusers + torch.compile on the same GPU at SD1.5 size (random
# weights), plus the correctness check of tools/gpu/sd15_check.py (models
# and ControlNet vs diffusers fp32/fp16, weft's fp32 and fp16 precision,
# txt2img PSNR).  Builds weft (tools/gpu/lib.sh: meson -Dcuda=enabled with
# the carried Debian packages) in the background while the models are made
# and diffusers runs; each stage is its own process under `timeout`, skipped
# when the deadline is near, and the report is rewritten after every stage,
# so a call stopped at its limit still returns what finished.
#
# Here, once: .gpu-deps (tools/gpu/run_sd_cuda_tests.sh --prepare) and the
# diffusers wheel in .whl (see tools/gpu/run_sd15_check.sh's head).
# The device call (about 7 minutes; nvidia-h200):
#   run(command="tools/gpu/bench_sd15.sh", carry=[".gpu-deps", ".whl"],
#       timeout_s=600)
# On the CPU (a rehearsal with small models; a build with -Dcuda=enabled):
#   WEFT_BENCH_BUILD=build-x WEFT_BENCH_ARGS="--device cpu --tiny" \
#     WEFT_BENCH_CHECK_ARGS="--device cpu --tiny --no-fp16" \
#     OUT=/tmp/o tools/gpu/bench_sd15.sh
#
# Stages, in order (each one's result in bench.json, its output in log.txt):
#   make      random-weight SD1.5 folder (bench_sd15.py make), then the
#             build is waited for (nothing is timed beside it)
#   eager     diffusers fp16 eager (bench_sd15.py torch --mode eager)
#   weft16    weft, WEFT_PRECISION=fp16: sd_forward --bench (model code),
#             sd_forward --bench-graph (graphs/txt2img.yaml in process,
#             warm), then weft run (a fresh process)
#   weft32    the same with WEFT_PRECISION=fp32, without weft run
#   vram      weft run txt2img --vram 1.5G (WEFT_PRECISION=fp16)
#   check     sd15_check.py (ControlNet included) on the same folder
#   compile   diffusers fp16 + torch.compile (time-boxed)
# Files in $OUT (the device tool brings back at most 8): log.txt,
# build.log, bench.json, bench_table.md, sd15_results.json, sd15_table.md,
# txt2img_weft.png.
# Environment: WEFT_BENCH_SKIP (stages to skip, comma-separated),
# WEFT_BENCH_B_ENV (VAR=value ...: the weft16 stage once more under it,
# its report in OUT/b, its profile in WEFT_BENCH_PROFILE's name + _b; up
# to four such variants separated by ';': b, c, d, e),
# WEFT_BENCH_DEADLINE (seconds after the start past which stages are
# skipped, default 510), WEFT_BENCH_COMPILE_S (the compile stage's time box,
# default 240; what is left before the deadline if less), WEFT_BENCH_COMPILE_MODE (torch.compile's mode, default
# "default"), WEFT_BENCH_BUILD (an existing build folder), WEFT_BENCH_WORK
# (models, default /tmp/weft-bench-work, about 4 GB), WEFT_BENCH_ARGS (more
# arguments for every bench_sd15.py stage), WEFT_BENCH_CHECK_ARGS (more for
# sd15_check.py), WEFT_BENCH_COMMIT (the commit to name in the report).
# Exit status 0 when every stage that ran succeeded.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$root/build-bench-sd15}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
t_start=$(date +%s)
deadline=$((t_start + ${WEFT_BENCH_DEADLINE:-510}))
work=${WEFT_BENCH_WORK:-/tmp/weft-bench-work}
parts=$work/parts
skip=",${WEFT_BENCH_SKIP:-},"
say() { echo "[bench_sd15 +$(($(date +%s) - t_start))s] $*"; }
export PYTHONUNBUFFERED=1
cd "$root" || exit 1
rm -rf "$parts"
mkdir -p "$work" "$parts"
: >"$parts/stages.txt"

# shellcheck source=tools/gpu/lib.sh
. "$root/tools/gpu/lib.sh"
weft_gpu_env_lines
commit=${WEFT_BENCH_COMMIT:-$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)}
dirty=$(git -C "$root" status --porcelain 2>/dev/null | grep -c . || true)
python3 - "$parts/env.json" "$commit" "$dirty" <<'EOF'
import json, os, subprocess, sys
def sh(c):
    try:
        return subprocess.run(c, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:
        return ""
g = sh("nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader").split(", ")
env = {"gpu": g[0] if g and g[0] else "none", "driver": g[1] if len(g) > 1 else "",
       "gpu_memory": g[2] if len(g) > 2 else "", "nvcc": sh("nvcc --version | tail -1"),
       "cores": os.cpu_count(), "weft_commit": sys.argv[2],
       "weft_tree_changes": sys.argv[3], "kernel": sh("uname -r")}
json.dump(env, open(sys.argv[1], "w"), indent=1)
EOF

# ---- weft's build (in the background) ------------------------------------------
build_done=$work/build.done
rm -f "$build_done"
WEFT_GPU_RUN_PATH=""
if [ -n "${WEFT_BENCH_BUILD:-}" ]; then
  build=$(cd "$WEFT_BENCH_BUILD" && pwd)
  : >"$OUT/build.log"
  weft_gpu_ninja "$build" "$OUT/build.log" "$build_done" &
  build_pid=$!
else
  build=/tmp/weft-bench-build
  weft_gpu_deps "$root" /tmp/weft-bench-deps || exit 1
  weft_gpu_build_bg "$root" "$build" "$OUT/build.log" "$build_done"
  build_pid=$WEFT_GPU_BUILD_PID
fi
weft_gpu_python "$root" /tmp/weft-site || exit 1
export WEFT_SD15_LD_LIBRARY_PATH=${WEFT_GPU_RUN_PATH}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

py=(python3 "$root/tools/gpu/bench_sd15.py")
common=(--work "$work" --parts "$parts" --out "$OUT" --build "$build")
rc_all=0

report() {
  "${py[@]}" report "${common[@]}" ${WEFT_BENCH_ARGS:-} >/dev/null 2>&1 ||
    say "report failed"
}

# stage NAME CAP_S MIN_S CMD...: runs CMD under timeout (CAP_S, or what is
# left before the deadline less 15 s for the report), skipped when asked to
# (WEFT_BENCH_SKIP) or when less than MIN_S is left; records the outcome in
# stages.txt and rewrites the report.
stage() {
  local name=$1 cap=$2 min=$3
  shift 3
  local left=$((deadline - $(date +%s) - 15)) t0 rc
  if [[ $skip == *",$name,"* ]]; then
    echo "$name skipped (WEFT_BENCH_SKIP)" >>"$parts/stages.txt"
    say "$name: skipped (WEFT_BENCH_SKIP)"
    return 0
  fi
  if [ "$left" -lt "$min" ]; then
    echo "$name skipped (${left}s left before the deadline, needs ${min}s)" >>"$parts/stages.txt"
    say "$name: skipped, ${left}s left"
    return 0
  fi
  [ "$cap" -gt "$left" ] && cap=$left
  say "$name: start (at most ${cap}s)"
  t0=$(date +%s)
  timeout -k 10 "$cap" "$@"
  rc=$?
  local s=$(($(date +%s) - t0))
  case $rc in
    0) echo "$name ok ${s}s" >>"$parts/stages.txt" ;;
    124 | 137) echo "$name timed out after ${s}s (limit ${cap}s)" >>"$parts/stages.txt"; rc_all=1 ;;
    *) echo "$name failed (exit $rc) after ${s}s" >>"$parts/stages.txt"; rc_all=1 ;;
  esac
  say "$name: exit $rc after ${s}s"
  report
  return $rc
}

# waits for the build (at most until the deadline); 0 when it succeeded
build_ok() {
  while [ ! -f "$build_done" ] && [ "$(date +%s)" -lt $((deadline - 20)) ]; do
    sleep 1
  done
  if [ ! -f "$build_done" ]; then
    say "the build did not finish before the deadline"
    return 1
  fi
  if [ "$(cat "$build_done")" != 0 ]; then
    weft_gpu_build_failed "$OUT/build.log"
    return 1
  fi
  return 0
}

# shellcheck disable=SC2086
{
  stage make 150 30 "${py[@]}" make "${common[@]}" ${WEFT_BENCH_ARGS:-}
  # the build finishes before anything is timed: ninja on every core beside
  # a timed run would slow the host side of both
  t_wait=$(date +%s)
  have_build=0
  if build_ok; then
    have_build=1
    echo "build ok (waited $(($(date +%s) - t_wait))s for it after make)" >>"$parts/stages.txt"
  else
    echo "build failed or unfinished: weft's stages skipped (build.log)" >>"$parts/stages.txt"
    rc_all=1
  fi
  say "build: $have_build (waited $(($(date +%s) - t_wait))s)"
  if [ -f "$work/sd15_random/unet/config.json" ]; then
    stage eager 120 40 "${py[@]}" torch --mode eager "${common[@]}" ${WEFT_BENCH_ARGS:-}
    if [ $have_build = 1 ]; then
      stage weft16 150 40 "${py[@]}" weft --precision fp16 --timeout 120 "${common[@]}" ${WEFT_BENCH_ARGS:-}
      # the same stage again under more environment (an A/B of a switch),
      # once per ';'-separated variant: b, c, d, ... each reported apart in
      # OUT/<letter>, its profile beside the first one's
      letters=(b c d e)
      IFS=';' read -r -a variants <<<"${WEFT_BENCH_B_ENV:-}"
      for i in "${!variants[@]}"; do
        v=${variants[$i]} l=${letters[$i]:-}
        [ -n "$l" ] && [ -n "${v// /}" ] || continue
        mkdir -p "$parts/$l" "$OUT/$l"
        cp "$parts/env.json" "$parts/$l/"
        bcommon=(--work "$work" --parts "$parts/$l" --out "$OUT/$l" --build "$build")
        stage "weft16$l" 150 40 env $v \
          WEFT_BENCH_PROFILE="${WEFT_BENCH_PROFILE:+${WEFT_BENCH_PROFILE%.md}_$l.md}" \
          "${py[@]}" weft --precision fp16 --timeout 120 "${bcommon[@]}" ${WEFT_BENCH_ARGS:-}
        echo "$l: $v" >"$OUT/$l/env.txt"
        "${py[@]}" report "${bcommon[@]}" ${WEFT_BENCH_ARGS:-} >/dev/null 2>&1 ||
          say "report ($l) failed"
      done
      stage weft32 150 40 "${py[@]}" weft --precision fp32 --no-run --timeout 120 "${common[@]}" ${WEFT_BENCH_ARGS:-}
      stage vram 100 30 "${py[@]}" vram --precision fp16 --timeout 90 "${common[@]}" ${WEFT_BENCH_ARGS:-}
      # the check on the same folder ("models" left out: the folder is there,
      # made by the same code and seeds); its files to OUT afterwards
      stage check 150 60 python3 "$root/tools/gpu/sd15_check.py" --work "$work" --out "$work/check" \
        --build "$build" --deadline $((deadline - 20)) \
        --stages refs,cnet,pipe,weft,txt2img ${WEFT_BENCH_CHECK_ARGS:-}
      for f in sd15_results.json sd15_table.md txt2img_weft.png; do
        [ -f "$work/check/$f" ] && cp "$work/check/$f" "$OUT/"
      done
      report
    fi
    stage compile "${WEFT_BENCH_COMPILE_S:-240}" 90 "${py[@]}" torch --mode compile \
      --compile-mode "${WEFT_BENCH_COMPILE_MODE:-default}" "${common[@]}" ${WEFT_BENCH_ARGS:-}
  else
    echo "no models: every later stage skipped" >>"$parts/stages.txt"
    rc_all=1
  fi
}
"${py[@]}" report "${common[@]}" ${WEFT_BENCH_ARGS:-}
kill "$build_pid" 2>/dev/null
wait "$build_pid" 2>/dev/null
say "done, exit $rc_all"
exit $rc_all
