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

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 |
    tail -1
  nvcc --version 2>&1 | tail -1
  echo "cores: $(nproc)"
} 2>&1 | sed 's/^/[env] /'

# ---- weft's build ------------------------------------------------------------
build_done=$work/build.done
mkdir -p "$work"
rm -f "$build_done"
if [ -n "${WEFT_SD15_BUILD:-}" ]; then
  build=$(cd "$WEFT_SD15_BUILD" && pwd)
  (ninja -C "$build" cli/weft tools/gpu/sd_forward >"$OUT/build.log" 2>&1
    echo $? >"$build_done") &
  build_pid=$!
  run_path=""
else
  # the libraries as tools/gpu/run_sd_cuda_tests.sh brings them (its code):
  # each one the machine's pkg-config lacks from the carried Debian
  # packages, dpkg -x into a folder of this script's own, .pc files
  # rewritten to it
  build=/tmp/weft-sd15-build
  debs=$root/.gpu-deps/debs
  deps=/tmp/weft-sd15-deps
  pcdir=$deps/pkgconfig
  mkdir -p "$pcdir"
  libs=(libuv yaml-0.1 libpng jansson libxxhash zlib)
  declare -A pkgs=(
    [libuv]="libuv1 libuv1-dev"
    [yaml-0.1]="libyaml-0-2 libyaml-dev"
    [libpng]="libpng16-16 libpng-dev"
    [jansson]="libjansson4 libjansson-dev"
    [libxxhash]="libxxhash0 libxxhash-dev"
    [zlib]="zlib1g zlib1g-dev"
  )
  lib_dirs=""
  for l in "${libs[@]}"; do
    if pkg-config --exists "$l" 2>/dev/null; then
      say "$l: the machine's"
      continue
    fi
    for p in ${pkgs[$l]}; do
      deb=$(ls "$debs/${p}"_*.deb 2>/dev/null | head -1)
      if [ -z "$deb" ]; then
        say "$l is missing and $debs has no $p: run tools/gpu/run_sd_cuda_tests.sh --prepare here and carry .gpu-deps"
        exit 1
      fi
      dpkg -x "$deb" "$deps/root"
    done
    for pc in "$deps"/root/usr/lib/x86_64-linux-gnu/pkgconfig/"$l".pc \
      "$deps"/root/usr/share/pkgconfig/"$l".pc; do
      [ -e "$pc" ] || continue
      sed -E "s#^(prefix|exec_prefix|libdir|includedir)=/usr#\\1=$deps/root/usr#" \
        "$pc" >"$pcdir/$l.pc"
    done
    say "$l: carried"
    lib_dirs=$deps/root/usr/lib/x86_64-linux-gnu:$deps/root/lib/x86_64-linux-gnu
  done
  if [ -d "$deps/root" ]; then
    find "$deps/root" -type l | while read -r ln; do
      t=$(readlink "$ln")
      case $t in /*) [ -e "$deps/root$t" ] && ln -sf "$deps/root$t" "$ln" ;; esac
    done
  fi
  if ! pkg-config --exists openblas 2>/dev/null; then
    if [ ! -f "$root/.gpu-deps/openblas.tar.xz" ]; then
      say "no OpenBLAS: carry .gpu-deps (tools/gpu/prepare_deps.sh)"
      exit 1
    fi
    mkdir -p "$deps/openblas"
    tar -xJf "$root/.gpu-deps/openblas.tar.xz" -C "$deps/openblas"
    (cd "$deps/openblas/lib" && ln -sf libopenblas.so.0 libopenblas.so)
    cat >"$pcdir/openblas.pc" <<EOF
libdir=$deps/openblas/lib
includedir=$deps/openblas/include
Name: openblas
Description: OpenBLAS (carried)
Version: 0.3
Libs: -L\${libdir} -lopenblas
Cflags: -I\${includedir}
EOF
    lib_dirs=${lib_dirs:+$lib_dirs:}$deps/openblas/lib
    say "openblas: carried"
  fi
  export PKG_CONFIG_PATH=$pcdir${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
  # cuDNN from the pip package when the toolkit has none
  nvcc_bin=$(command -v nvcc || true)
  cuda_home=${CUDA_HOME:-$(dirname "$(dirname "$(readlink -f "$nvcc_bin")")")}
  cudnn_lib=""
  if [ ! -f "$cuda_home/include/cudnn.h" ]; then
    pyd=$(python3 -c 'import nvidia.cudnn as m; print(list(m.__path__)[0])' 2>/dev/null || true)
    if [ -n "$pyd" ] && [ -f "$pyd/include/cudnn.h" ]; then
      mkdir -p "$deps/cudnn"
      so=$(ls "$pyd"/lib/libcudnn.so.[0-9]* 2>/dev/null | head -1)
      [ -n "$so" ] && ln -sf "$so" "$deps/cudnn/libcudnn.so"
      export CPATH=$pyd/include${CPATH:+:$CPATH}
      export LIBRARY_PATH=$deps/cudnn${LIBRARY_PATH:+:$LIBRARY_PATH}
      cudnn_lib=$pyd/lib
      say "cudnn: pip package $pyd"
    fi
  fi
  run_path=$lib_dirs${cudnn_lib:+:$cudnn_lib}
  for d in "$cuda_home/lib64" "$cuda_home/targets/x86_64-linux/lib"; do
    [ -d "$d" ] && run_path=${run_path:+$run_path:}$d
  done
  meson_bin=$(command -v meson || echo "python3 -m mesonbuild.mesonmain")
  # configure and build while the models are made (PYTHONPATH unset: the
  # carried wheels are not meson's business)
  (
    unset PYTHONPATH
    : >"$OUT/build.log"
    if [ ! -f "$build/build.ninja" ] &&
      ! $meson_bin setup "$build" "$root" -Dcuda=enabled \
        --buildtype=debugoptimized >"$OUT/build.log" 2>&1; then
      echo 1 >"$build_done"
      exit 1
    fi
    grep -A1 "weft kernels/cuda" "$OUT/build.log" | tail -1
    targets=(cli/weft tools/gpu/sd_forward)
    while read -r t; do targets+=("$t"); done < <(
      ninja -C "$build" -t targets all 2>/dev/null |
        sed -n 's/^\(nodes\/[^:]*\.so\): .*/\1/p')
    ninja -C "$build" -j "$(nproc)" "${targets[@]}" >>"$OUT/build.log" 2>&1
    echo $? >"$build_done"
  ) &
  build_pid=$!
fi

# ---- python packages: the carried wheels where diffusers is missing --------
if ! python3 -c 'import diffusers' 2>/dev/null; then
  if ! ls "$root"/.whl/*.whl >/dev/null 2>&1; then
    say "no diffusers here and no .whl/*.whl carried"
    exit 1
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/weft-site "$root"/.whl/*.whl || exit 1
  export PYTHONPATH=/tmp/weft-site${PYTHONPATH:+:$PYTHONPATH}
fi
# weft's programs get the carried libraries; python keeps its own
export WEFT_SD15_LD_LIBRARY_PATH=${run_path}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

# ---- the check ---------------------------------------------------------------
# shellcheck disable=SC2086
python3 "$root/tools/gpu/sd15_check.py" --work "$work" --out "$OUT" \
  --build "$build" --build-done "$build_done" --deadline "$deadline" \
  ${WEFT_SD15_ARGS:-}
rc=$?
if [ -f "$build_done" ] && [ "$(cat "$build_done")" != 0 ]; then
  say "the build failed:"
  grep -B2 -A12 -E 'FAILED|ERROR' "$OUT/build.log" | head -40
fi
wait "$build_pid"
say "done, exit $rc"
exit $rc
