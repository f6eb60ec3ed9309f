#!/usr/bin/env bash
# run_sd_cuda_tests.sh - builds the whole of weft with -Dcuda=enabled on a
# GPU machine (meson + ninja) and runs the CUDA model tests
# (tests/models_cuda: the SD1.x models and the example graphs on the GPU
# against the fixtures and the CPU), writing logs to $OUT.
#
# The GPU machine's image has nvcc, meson, ninja, pkg-config and OpenBLAS,
# but may lack the headers (and libraries) of libuv, libyaml, libpng,
# jansson, xxHash and zlib that weft's meson configure requires.  They
# travel as Debian packages: `--prepare`, run HERE (where apt works),
# downloads them into .gpu-deps/debs (ignored through .git/info/exclude);
# on the GPU machine this script unpacks, with dpkg -x into a folder of its
# own (never into /), the packages of each library the machine's
# pkg-config does not find, rewrites their .pc files to that folder and
# puts it first on PKG_CONFIG_PATH (and on LD_LIBRARY_PATH for the tests).
# OpenBLAS: the machine's own, or .gpu-deps/openblas.tar.xz
# (tools/gpu/prepare_deps.sh) with a generated openblas.pc.  cuDNN: the
# toolkit's, or the image's pip package nvidia-cudnn (made visible to meson
# through CPATH/LIBRARY_PATH); without it conv2d runs as im2col.
#
# Usage:
#   tools/gpu/run_sd_cuda_tests.sh --prepare          # here, once
#   run(command="tools/gpu/run_sd_cuda_tests.sh", carry=[".gpu-deps"],
#       timeout_s=200)                                # the device call
#   OUT=dir tools/gpu/run_sd_cuda_tests.sh [CASE...]  # CASE: test_sd_cuda
#                                                     # case names
# The suites: test_sd_cuda (the GPU cases; among them issue 7's 16-bit
# weights and streaming under --vram) and test_sd_stream (weights under a
# budget on the emulated device; set WEFT_TEST_SD15=1 for its SD1.5-sized
# schedule, about 8 GB of host memory).
# Files written to $OUT (the device tool brings back at most 8):
#   env.txt      GPU, driver, nvcc, meson, which libraries came from where
#   setup.log    meson setup output (its summary says whether cuDNN was found)
#   build.log    ninja output
#   test.log     every case's output: measured errors, images compared
#   summary.txt  one line per case (OK/FAIL/SKIP, seconds), then totals
# Environment: WEFT_GPU_JOBS (ninja -j, default nproc), WEFT_GPU_BUILD
# (build folder, default /tmp/weft-sd-cuda-build), WEFT_GPU_TEST_JOBS
# (test processes at once, default 4), WEFT_GPU_CASE_TIMEOUT_MULT (meson's
# --timeout-multiplier, default 1), WEFT_GPU_DEADLINE (s after the start at
# which the tests are stopped so the logs get written, default 185).
# Exit status: 0 when every case passed or skipped, 1 otherwise.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
debs=$root/.gpu-deps/debs
# library (pkg-config name) -> its Debian packages (runtime, -dev)
libs=(libuv yaml-0.1 libpng jansson libxxhash zlib)
declare -A pkgs=(
  [libuv]="libuv1 libuv1-dev"
  [yaml-0.1]="libyaml-0-2 libyaml-dev"
  [libpng]="libpng16-16 libpng-dev"
  [jansson]="libjansson4 libjansson-dev"
  [libxxhash]="libxxhash0 libxxhash-dev"
  [zlib]="zlib1g zlib1g-dev"
)

if [ "${1:-}" = --prepare ]; then
  set -e
  mkdir -p "$debs"
  if ! grep -qx '/.gpu-deps/' "$root/.git/info/exclude" 2>/dev/null; then
    echo '/.gpu-deps/' >>"$root/.git/info/exclude"
  fi
  all=""
  for l in "${libs[@]}"; do all+=" ${pkgs[$l]}"; done
  # shellcheck disable=SC2086
  (cd "$debs" && apt-get download $all)
  ls -la "$debs"
  [ -s "$root/.gpu-deps/openblas.tar.xz" ] || "$root/tools/gpu/prepare_deps.sh"
  exit 0
fi

OUT=${OUT:-$root/build-gpu-sd-tests}
build=${WEFT_GPU_BUILD:-/tmp/weft-sd-cuda-build}
jobs=${WEFT_GPU_JOBS:-$(nproc)}
test_jobs=${WEFT_GPU_TEST_JOBS:-4}
deps=/tmp/weft-gpu-deps
pcdir=$deps/pkgconfig
mkdir -p "$OUT" "$pcdir"
env_txt=$OUT/env.txt
t_start=$(date +%s)
say() { echo "[run_sd_cuda_tests] $*"; }

{
  date -u
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
  else
    echo "no nvidia-smi"
  fi
  nvcc --version 2>&1 | tail -2
  echo "cores: $(nproc)"
} >"$env_txt"

# ---- libraries ---------------------------------------------------------------
# the carried packages, OpenBLAS and cuDNN: tools/gpu/lib.sh (shared with
# run_sd15_check.sh and bench_sd15.sh); its lines go to env.txt
# shellcheck source=tools/gpu/lib.sh
. "$root/tools/gpu/lib.sh"
if ! weft_gpu_deps "$root" "$deps" >>"$env_txt"; then
  say "the libraries are not all there; see env.txt"
  cat "$env_txt"
  exit 1
fi
run_path=$WEFT_GPU_RUN_PATH
export LD_LIBRARY_PATH=${run_path}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
meson_bin=$(command -v meson || echo "python3 -m mesonbuild.mesonmain")
{
  echo "meson: $($meson_bin --version 2>&1), ninja: $(ninja --version 2>&1)"
  echo "PKG_CONFIG_PATH=$PKG_CONFIG_PATH"
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
} >>"$env_txt"

# ---- build -------------------------------------------------------------------
if [ ! -f "$build/build.ninja" ]; then
  if ! $meson_bin setup "$build" "$root" -Dcuda=enabled \
    --buildtype=debugoptimized >"$OUT/setup.log" 2>&1; then
    say "meson setup failed; see setup.log"
    tail -30 "$OUT/setup.log"
    exit 1
  fi
fi
grep -A1 "weft kernels/cuda" "$OUT/setup.log" 2>/dev/null | tail -1 >>"$env_txt"
# what the cases use: the command, every plugin, the test
targets=(cli/weft tests/test_sd_cuda tests/test_sd_stream tests/test_plan_cuda)
while read -r t; do targets+=("$t"); done < <(
  ninja -C "$build" -t targets all 2>/dev/null |
    sed -n 's/^\(nodes\/[^:]*\.so\): .*/\1/p')
if ! ninja -C "$build" -j "$jobs" "${targets[@]}" >"$OUT/build.log" 2>&1; then
  say "build failed; see build.log"
  grep -B2 -A12 FAILED "$OUT/build.log" | head -60
  exit 1
fi
t_built=$(date +%s)
say "configured and built in $((t_built - t_start)) s"

# ---- run ---------------------------------------------------------------------
args=(--no-rebuild --suite test_sd_cuda --suite test_sd_stream --suite test_plan_cuda
  --num-processes "$test_jobs"
  --timeout-multiplier "${WEFT_GPU_CASE_TIMEOUT_MULT:-1}" --print-errorlogs)
if [ $# -gt 0 ]; then
  for c in "$@"; do args+=("test_sd_cuda/$c"); done
fi
# within the deadline, so the logs still reach $OUT before a device call's
# own limit
left=$((${WEFT_GPU_DEADLINE:-185} - ($(date +%s) - t_start)))
[ $left -lt 30 ] && left=30
timeout -k 5 "$left" $meson_bin test -C "$build" "${args[@]}" \
  >"$OUT/meson-test.out" 2>&1
rc=$?
[ $rc = 124 ] && say "tests stopped at the deadline ($left s)"
cp "$build/meson-logs/testlog.txt" "$OUT/test.log" 2>/dev/null
grep -E '^ *[0-9]+/[0-9]+ ' "$OUT/meson-test.out" |
  sed -E 's#^ *[0-9]+/[0-9]+ ##; s#(test_(sd_cuda|sd_stream|plan_cuda) - )?weft:test_(sd_cuda|sd_stream|plan_cuda)( / |/)(test_(sd_cuda|sd_stream|plan_cuda)/)?##' \
    >"$OUT/summary.txt"
grep -E '^(Ok|Fail|Skipped|Timeout):' "$OUT/meson-test.out" >>"$OUT/summary.txt"
echo "---- $(sed -n 2p "$env_txt")"
grep -E 'max diff|max [0-9]+/255|bit-identical|DIFFERS|device:|part [0-9]:|ms/step|PSNR|loads' \
  "$OUT/test.log" | sort -u | cut -c1-118 | head -80
cat "$OUT/summary.txt"
say "$(($(date +%s) - t_start)) s in all"
[ $rc = 0 ]
