#!/usr/bin/env bash
# run_sd15_check.sh - weft's SD1.x models at real SD1.5 size against
# diffusers on the GPU machine, in one device call: installs the carried
# diffusers wheel, builds weft with meson -Dcuda=enabled (in the background,
# with the carried Debian -dev packages, as run_sd_cuda_tests.sh does) while
# tools/gpu/sd15_check.py makes the random-weight models and diffusers'
# references, then runs weft (tools/gpu/sd_forward and `weft run
# graphs/txt2img.yaml`) and compares.  Results go to $OUT as soon as each
# stage is done, so a call stopped at its limit still returns what finished.
#
# Here, once (where apt and pip work):
#   tools/gpu/run_sd_cuda_tests.sh --prepare            # .gpu-deps/debs
#   echo /.whl/ >>.git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 -d .whl \
#     diffusers==0.42.1 importlib_metadata==10.2.0
# The device call:
#   run(command="tools/gpu/run_sd15_check.sh", carry=[".gpu-deps", ".whl"],
#       timeout_s=240)
# On the CPU (a rehearsal with small models; a build with -Dcuda=enabled):
#   WEFT_SD15_BUILD=build-x WEFT_SD15_ARGS="--device cpu --tiny" \
#     OUT=/tmp/o tools/gpu/run_sd15_check.sh
#
# Files in $OUT (the device tool brings back at most 8): log.txt (all the
# output), build.log, sd15_results.json, sd15_table.md,
# txt2img_weft.png, txt2img_diffusers_fp32.png, txt2img_diffusers_fp16.png.
# The build and the carried packages: tools/gpu/lib.sh (shared with
# tools/gpu/bench_sd15.sh, which runs this check's sd15_check.py too).
# Environment: WEFT_SD15_BUILD (an existing build folder to use instead of
# configuring one), WEFT_SD15_WORK (models and tensors, default
# /tmp/weft-sd15-work, about 5 GB), WEFT_SD15_DEADLINE (seconds after the
# start past which stages are skipped, default 190), WEFT_SD15_ARGS (more
# arguments for sd15_check.py).  Exit status: sd15_check.py's (0: every
# tolerance held).
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$root/build-sd15-check}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
t_start=$(date +%s)
deadline=$((t_start + ${WEFT_SD15_DEADLINE:-190}))
work=${WEFT_SD15_WORK:-/tmp/weft-sd15-work}
say() { echo "[run_sd15_check +$(($(date +%s) - t_start))s] $*"; }
export PYTHONUNBUFFERED=1
cd "$root" || exit 1

# shellcheck source=tools/gpu/lib.sh
. "$root/tools/gpu/lib.sh"
weft_gpu_env_lines

# ---- weft's build (in the background, while the models are made) ------------
build_done=$work/build.done
mkdir -p "$work"
rm -f "$build_done"
WEFT_GPU_RUN_PATH=""
if [ -n "${WEFT_SD15_BUILD:-}" ]; then
  build=$(cd "$WEFT_SD15_BUILD" && pwd)
  : >"$OUT/build.log"
  weft_gpu_ninja "$build" "$OUT/build.log" "$build_done" &
  build_pid=$!
else
  build=/tmp/weft-sd15-build
  weft_gpu_deps "$root" /tmp/weft-sd15-deps || exit 1
  weft_gpu_build_bg "$root" "$build" "$OUT/build.log" "$build_done"
  build_pid=$WEFT_GPU_BUILD_PID
fi

# ---- python packages: the carried wheels where diffusers is missing --------
weft_gpu_python "$root" /tmp/weft-site || exit 1
# weft's programs get the carried libraries; python keeps its own
export WEFT_SD15_LD_LIBRARY_PATH=${WEFT_GPU_RUN_PATH}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

# ---- the check ---------------------------------------------------------------
# shellcheck disable=SC2086
python3 "$root/tools/gpu/sd15_check.py" --work "$work" --out "$OUT" \
  --build "$build" --build-done "$build_done" --deadline "$deadline" \
  ${WEFT_SD15_ARGS:-}
rc=$?
if [ -f "$build_done" ] && [ "$(cat "$build_done")" != 0 ]; then
  weft_gpu_build_failed "$OUT/build.log"
fi
wait "$build_pid"
say "done, exit $rc"
exit $rc
