# lib.sh - shell functions shared by tools/gpu/run_sd15_check.sh and
# tools/gpu/bench_sd15.sh (sourced, not run): the environment lines, weft's
# meson build with -Dcuda=enabled on the GPU machine (the libraries its
# image lacks from the carried Debian packages in .gpu-deps/debs, as
# tools/gpu/run_sd_cuda_tests.sh brings them; see tools/gpu/README.md) in the
# background, and the carried diffusers wheel (.whl) where python3 lacks it.
#
# Each function prints through `say` (the caller defines it) and returns
# non-zero on failure; none exits.

# GPU, driver, nvcc and cores, one "[env] " line each.
weft_gpu_env_lines() {
  {
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 |
      tail -1
    nvcc --version 2>&1 | tail -1
    echo "cores: $(nproc)"
  } 2>&1 | sed 's/^/[env] /'
}

# weft_gpu_deps ROOT DEPS: each library the machine's pkg-config lacks
# from ROOT/.gpu-deps/debs, unpacked with dpkg -x under DEPS (never into /,
# which would shadow the image's own libraries), its .pc file rewritten to
# that tree and put first on PKG_CONFIG_PATH (exported); OpenBLAS from the
# carried tarball when missing; cuDNN from the pip package when the toolkit
# has none (CPATH, LIBRARY_PATH exported).  Sets WEFT_GPU_RUN_PATH: the
# library path weft's programs need (the carried libraries, cuDNN, the
# toolkit's).  0, or 1 when something needed is not carried.
weft_gpu_deps() {
  local root=$1 deps=$2
  local debs=$root/.gpu-deps/debs pcdir=$deps/pkgconfig lib_dirs="" l p deb pc
  mkdir -p "$pcdir"
  local libs=(libuv yaml-0.1 libpng jansson libxxhash zlib)
  declare -A pkgs=(
    [libuv]="libuv1 libuv1-dev"
    [yaml-0.1]="libyaml-0-2 libyaml-dev"
    [libpng]="libpng16-16 libpng-dev"
    [jansson]="libjansson4 libjansson-dev"
    [libxxhash]="libxxhash0 libxxhash-dev"
    [zlib]="zlib1g zlib1g-dev"
  )
  for l in "${libs[@]}"; do
    if pkg-config --exists "$l" 2>/dev/null; then
      say "$l: the machine's"
      continue
    fi
    for p in ${pkgs[$l]}; do
      deb=$(ls "$debs/${p}"_*.deb 2>/dev/null | head -1)
      if [ -z "$deb" ]; then
        say "$l is missing and $debs has no $p: run tools/gpu/run_sd_cuda_tests.sh --prepare here and carry .gpu-deps"
        return 1
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
    # the -dev packages' absolute symlinks (libz.so -> /lib/...) into the tree
    find "$deps/root" -type l | while read -r ln; do
      t=$(readlink "$ln")
      case $t in /*) [ -e "$deps/root$t" ] && ln -sf "$deps/root$t" "$ln" ;; esac
    done
  fi
  if ! pkg-config --exists openblas 2>/dev/null; then
    if [ ! -f "$root/.gpu-deps/openblas.tar.xz" ]; then
      say "no OpenBLAS: carry .gpu-deps (tools/gpu/prepare_deps.sh)"
      return 1
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
  local nvcc_bin cuda_home pyd so cudnn_lib=""
  nvcc_bin=$(command -v nvcc || true)
  cuda_home=${CUDA_HOME:-$(dirname "$(dirname "$(readlink -f "$nvcc_bin")")")}
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
  WEFT_GPU_RUN_PATH=$lib_dirs${cudnn_lib:+:$cudnn_lib}
  local d
  for d in "$cuda_home/lib64" "$cuda_home/targets/x86_64-linux/lib"; do
    [ -d "$d" ] && WEFT_GPU_RUN_PATH=${WEFT_GPU_RUN_PATH:+$WEFT_GPU_RUN_PATH:}$d
  done
  return 0
}

# weft_gpu_build_bg ROOT BUILD LOG DONE: configures BUILD (meson
# -Dcuda=enabled --buildtype=debugoptimized, unless BUILD/build.ninja
# exists) and builds cli/weft, tools/gpu/sd_forward and every plugin with
# ninja -j nproc, in the background, output to LOG; writes the exit status
# to DONE when finished.  Sets WEFT_GPU_BUILD_PID.  Call weft_gpu_deps first
# (its PKG_CONFIG_PATH, CPATH and LIBRARY_PATH).
weft_gpu_build_bg() {
  local root=$1 build=$2 log=$3 done=$4 meson_bin
  rm -f "$done"
  meson_bin=$(command -v meson || echo "python3 -m mesonbuild.mesonmain")
  (
    unset PYTHONPATH # the carried wheels are not meson's business
    : >"$log"
    if [ ! -f "$build/build.ninja" ] &&
      ! $meson_bin setup "$build" "$root" -Dcuda=enabled \
        --buildtype=debugoptimized >"$log" 2>&1; then
      echo 1 >"$done"
      exit 1
    fi
    grep -A1 "weft kernels/cuda" "$log" | tail -1
    weft_gpu_ninja "$build" "$log" "$done"
  ) &
  WEFT_GPU_BUILD_PID=$!
}

# weft_gpu_ninja BUILD LOG DONE: ninja of cli/weft, tools/gpu/sd_forward and
# every plugin in an existing build (appends to LOG, status to DONE).
weft_gpu_ninja() {
  local build=$1 log=$2 done=$3 t
  local targets=(cli/weft tools/gpu/sd_forward)
  while read -r t; do targets+=("$t"); done < <(
    ninja -C "$build" -t targets all 2>/dev/null |
      sed -n 's/^\(nodes\/[^:]*\.so\): .*/\1/p')
  ninja -C "$build" -j "$(nproc)" "${targets[@]}" >>"$log" 2>&1
  echo $? >"$done"
}

# weft_gpu_python ROOT SITE: where python3 lacks diffusers, installs the
# carried wheels ROOT/.whl/*.whl into SITE and puts it on PYTHONPATH
# (exported).  0, or 1 when neither is there.
weft_gpu_python() {
  local root=$1 site=$2
  python3 -c 'import diffusers' 2>/dev/null && return 0
  if ! ls "$root"/.whl/*.whl >/dev/null 2>&1; then
    say "no diffusers here and no .whl/*.whl carried"
    return 1
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$site" "$root"/.whl/*.whl || return 1
  export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
  return 0
}

# weft_gpu_build_failed LOG: the build's errors, for the log.
weft_gpu_build_failed() {
  say "the build failed:"
  grep -B2 -A12 -E 'FAILED|ERROR' "$1" | head -40
}
