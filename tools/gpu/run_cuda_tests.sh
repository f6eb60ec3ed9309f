#!/usr/bin/env bash
# run_cuda_tests.sh - builds the CUDA backend's tests on a GPU machine and
# runs them, every case in its own process, writing logs to $OUT.
#
# The build is direct (nvcc + cc, no meson): the GPU machine's image has
# nvcc but may lack libuv/libyaml/libpng/jansson headers that the full
# meson configure requires, and the tests need none of them: only
# kernels/cuda, kernels/cpu (the reference, on OpenBLAS), the test harness
# and tests/kernels_cuda/test_cuda.c.  OpenBLAS comes from the machine when
# it has it, else from .gpu-deps/openblas.tar.xz (tools/gpu/prepare_deps.sh
# makes it here; carry ".gpu-deps" in the device call).  cuDNN is used when
# its header and library are found (the CUDA toolkit, /usr, or the pip
# package nvidia-cudnn-*), else conv2d runs as im2col.
#
# Usage:  OUT=/some/dir tools/gpu/run_cuda_tests.sh [CASE...]
# With the device tool:
#   run(command="tools/gpu/run_cuda_tests.sh", carry=[".gpu-deps"])
# Files written to $OUT (the device tool brings back at most 8):
#   env.txt      GPU, driver, nvcc, which BLAS/cuDNN were used
#   build.log    compiler output
#   test.log     every case's output (measured errors vs the CPU backend)
#   summary.txt  one line per case: PASS/FAIL/SKIP, seconds
#   precision.txt the measured errors of the fp16/bf16 cases (fp16_*,
#                bf16_*, half_*, steady_state_*16*), grouped by case
#   sanitize.log compute-sanitizer memcheck of the small cases (when the
#                tool works on the machine; WEFT_GPU_SANITIZE=0 skips it)
# Environment: WEFT_GPU_JOBS (parallel compiles, default nproc),
# WEFT_GPU_CASE_TIMEOUT (s per case, 120), WEFT_GPU_DEADLINE (s after which
# no sanitizer run starts, 200), WEFT_GPU_SANITIZE=0, WEFT_GPU_BUILD (build
# folder, default a fresh /tmp one), WEFT_GPU_CARRIED_BLAS=1.
# Exit status: 0 when every case passed or skipped, 1 otherwise.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$root/build-gpu-tests}
build=${WEFT_GPU_BUILD:-$(mktemp -d /tmp/weft-gpu-build.XXXXXX)}
jobs=${WEFT_GPU_JOBS:-$(nproc)}
case_timeout=${WEFT_GPU_CASE_TIMEOUT:-120}
mkdir -p "$OUT" "$build/obj"
env_txt=$OUT/env.txt
build_log=$OUT/build.log
: >"$build_log"
t_start=$(date +%s)

say() { echo "[run_cuda_tests] $*"; }

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

# ---- toolchain and libraries -------------------------------------------------
nvcc_bin=$(command -v nvcc || true)
if [ -z "$nvcc_bin" ]; then
  say "nvcc not found"
  exit 1
fi
cuda_home=${CUDA_HOME:-$(dirname "$(dirname "$(readlink -f "$nvcc_bin")")")}
cuda_inc=$cuda_home/include
cuda_libdirs=()
for d in "$cuda_home/lib64" "$cuda_home/lib" "$cuda_home/targets/x86_64-linux/lib"; do
  [ -d "$d" ] && cuda_libdirs+=("$d")
done
# cuBLAS from the pip packages when the toolkit folder lacks it
have_cublas=0
for d in "${cuda_libdirs[@]}"; do
  for f in "$d"/libcublas.so*; do [ -e "$f" ] && have_cublas=1; done
done
if [ $have_cublas = 0 ]; then
  # nvidia.* are namespace packages: __path__, not __file__
  pyd=$(python3 -c 'import nvidia.cublas as m; print(list(m.__path__)[0])' 2>/dev/null || true)
  [ -n "$pyd" ] && cuda_libdirs+=("$pyd/lib")
fi

blas_cflags=""
blas_libs=""
blas_dirs=""
# WEFT_GPU_CARRIED_BLAS=1 uses the carried copy even where the machine has
# OpenBLAS (to check the carried path).
if [ "${WEFT_GPU_CARRIED_BLAS:-0}" != 1 ] && pkg-config --exists openblas 2>/dev/null; then
  blas_cflags=$(pkg-config --cflags openblas)
  blas_libs=$(pkg-config --libs openblas)
  echo "openblas: system (pkg-config)" >>"$env_txt"
elif [ -f "$root/.gpu-deps/openblas.tar.xz" ]; then
  mkdir -p "$build/openblas"
  tar -xJf "$root/.gpu-deps/openblas.tar.xz" -C "$build/openblas"
  blas_cflags="-I$build/openblas/include"
  blas_libs="-L$build/openblas/lib -l:libopenblas.so.0 -Wl,-rpath-link,$build/openblas/lib"
  blas_dirs=$build/openblas/lib
  echo "openblas: carried .gpu-deps/openblas.tar.xz" >>"$env_txt"
else
  say "no OpenBLAS: install libopenblas-dev or run tools/gpu/prepare_deps.sh here and carry .gpu-deps"
  exit 1
fi

have_cudnn=0
cudnn_cflags=""
cudnn_libs=""
cudnn_dir=""
try_cudnn() { # include dir, library dir
  [ -f "$1/cudnn.h" ] || return 1
  local lib
  lib=$(ls "$2"/libcudnn.so "$2"/libcudnn.so.[0-9]* 2>/dev/null | head -1)
  [ -n "$lib" ] || return 1
  have_cudnn=1
  cudnn_cflags="-I$1"
  cudnn_libs="-L$2 -l:$(basename "$lib")"
  cudnn_dir=$2
}
try_cudnn "$cuda_inc" "$cuda_home/lib64" ||
  try_cudnn "$cuda_inc" "$cuda_home/lib" ||
  try_cudnn /usr/include /usr/lib/x86_64-linux-gnu ||
  {
    pyd=$(python3 -c 'import nvidia.cudnn as m; print(list(m.__path__)[0])' 2>/dev/null || true)
    [ -n "$pyd" ] && try_cudnn "$pyd/include" "$pyd/lib"
  } || true
echo "cudnn: $have_cudnn $cudnn_libs" >>"$env_txt"

cuda_path=$(
  IFS=:
  echo "${cuda_libdirs[*]}"
)
LD_LIBRARY_PATH="${blas_dirs:+$blas_dirs:}${cudnn_dir:+$cudnn_dir:}$cuda_path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >>"$env_txt"

# ---- build -----------------------------------------------------------------
incs="-I$root -I$root/runtime/include -I$root/tests/harness -I$cuda_inc"
cflags="-std=c11 -O2 -g -D_GNU_SOURCE -Wall -Wextra -pthread $incs $blas_cflags $cudnn_cflags -DWEFT_HAVE_CUDNN=$have_cudnn"
nvflags="-O2 -lineinfo -Xcompiler=-Wall,-Wextra -gencode=arch=compute_90,code=sm_90 -gencode=arch=compute_90,code=compute_90 -I$root -I$root/runtime/include -DWEFT_HAVE_CUDNN=$have_cudnn"

compile() { # output object, then the command; its output in OBJ.log
  local obj=$1
  shift
  "$@" >"$obj.log" 2>&1
}

pids=()
objs=()
launch() { # source, kind (c|avx2|cu)
  local src=$1 kind=$2 obj
  obj=$build/obj/$(echo "${src#$root/}" | tr '/' '_').o
  objs+=("$obj")
  case $kind in
  c) compile "$obj" cc $cflags -c "$src" -o "$obj" & ;;
  avx2) compile "$obj" cc $cflags -mavx2 -mfma -mf16c -c "$src" -o "$obj" & ;;
  cu) compile "$obj" "$nvcc_bin" $nvflags -c "$src" -o "$obj" & ;;
  esac
  pids+=($!)
  # keep at most $jobs compilers running
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do sleep 0.2; done
}

for f in "$root"/kernels/cuda/*.cu; do launch "$f" cu; done
for f in "$root"/kernels/cuda/*.c; do launch "$f" c; done
for f in "$root"/kernels/cpu/*.c; do
  case $(basename "$f") in
  vec_avx2.c | attention_avx2.c) launch "$f" avx2 ;;
  *) launch "$f" c ;;
  esac
done
launch "$root/tests/harness/test_main.c" c
launch "$root/tests/harness/util.c" c
launch "$root/tests/kernels_cuda/test_cuda.c" c
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
for o in "${objs[@]}"; do
  if [ -s "$o.log" ]; then
    echo "== $(basename "$o")" >>"$build_log"
    cat "$o.log" >>"$build_log"
  fi
done
if [ $failed != 0 ]; then
  say "compile failed; see build.log"
  tail -50 "$build_log"
  exit 1
fi
libdir_flags=""
for d in "${cuda_libdirs[@]}"; do libdir_flags+=" -L$d"; done
exe=$build/test_kernels_cuda
if ! cc -o "$exe" "${objs[@]}" $libdir_flags -lcublas -lcublasLt -lcudart \
  $cudnn_libs $blas_libs -lstdc++ -lm -lpthread -ldl -lrt >>"$build_log" 2>&1; then
  say "link failed; see build.log"
  tail -30 "$build_log"
  exit 1
fi
t_built=$(date +%s)
say "built in $((t_built - t_start)) s ($(grep -c . "$build_log") lines of compiler output)"

# ---- run -------------------------------------------------------------------
if [ $# -gt 0 ]; then
  cases=("$@")
else
  mapfile -t cases < <("$exe" --list)
fi
test_log=$OUT/test.log
summary=$OUT/summary.txt
: >"$test_log"
: >"$summary"
n_pass=0 n_fail=0 n_skip=0
now_ms() { echo $(($(date +%s%N) / 1000000)); }
for c in "${cases[@]}"; do
  t0=$(now_ms)
  echo "==== $c" >>"$test_log"
  timeout -k 5 "$case_timeout" "$exe" "$c" >>"$test_log" 2>&1
  rc=$?
  ms=$(($(now_ms) - t0))
  case $rc in
  0) st=PASS n_pass=$((n_pass + 1)) ;;
  77) st=SKIP n_skip=$((n_skip + 1)) ;;
  *) st="FAIL($rc)" n_fail=$((n_fail + 1)) ;;
  esac
  printf '%-9s %4d.%03ds  %s\n' "$st" $((ms / 1000)) $((ms % 1000)) "$c" >>"$summary"
done

# ---- compute-sanitizer on the small cases ----------------------------------
# Within the deadline only: memcheck slows kernels by 10-100x.
deadline=${WEFT_GPU_DEADLINE:-200}
if [ "${WEFT_GPU_SANITIZE:-1}" = 1 ] && command -v compute-sanitizer >/dev/null; then
  san=$OUT/sanitize.log
  : >"$san"
  for c in gemm_odd_shapes_all_transposes conv2d_odd_shapes_im2col \
    attention_odd_shapes conv2d_odd_shapes_auto concat_any_axis \
    upsample_nearest2x steady_state_makes_no_cudamalloc \
    half_weights_fp16 fp16_attention_odd_shapes fp16_gemm \
    steady_state_bf16_makes_no_cudamalloc; do
    left=$((deadline - ($(date +%s) - t_start)))
    if [ $left -lt 15 ]; then
      echo "==== memcheck $c: skipped (deadline)" >>"$san"
      continue
    fi
    [ $left -gt 60 ] && left=60
    echo "==== memcheck $c" >>"$san"
    timeout -k 5 "$left" compute-sanitizer --tool memcheck --error-exitcode 3 \
      "$exe" "$c" >>"$san" 2>&1
    echo "exit $?" >>"$san"
  done
  printf 'sanitize: %s of %s memcheck runs exited 0\n' \
    "$(grep -c '^exit 0$' "$san")" "$(grep -c '^exit ' "$san")" >>"$summary"
fi

# The 16-bit cases' errors, by case (awk keeps the "==== case" headers
# of those cases and their measurement lines).
awk '/^==== /{keep = ($2 ~ /^(fp16_|bf16_|half_|precision_|steady_state_(fp16|bf16))/); if (keep) print; next}
     keep && /max err|cudaMalloc|precision:|message:|skip|cuBLASLt/' "$test_log" >"$OUT/precision.txt"

echo "---- $(sed -n 2p "$env_txt")"
grep -E 'max err|cudaMalloc|device:|message:|cuDNN' "$test_log" | cut -c1-118 | head -60
echo "---- $(grep -c bit-exact "$test_log") bit-exact comparisons"
# worst err/max of each 16-bit comparison kind (the tolerance is in test_cuda.c)
echo "---- fp16/bf16: worst err/max per case (precision.txt has every line)"
awk '/^==== /{c = $2; next} /err\/max=/{split($0, f, "err/max="); v = f[2] + 0;
     k = c (index($0, "vs rounded") ? " (vs rounded)" : "");
     if (!(k in w) || v > w[k]) w[k] = v}
     END {for (k in w) printf "%-58s %.3g\n", k, w[k]}' "$OUT/precision.txt" | sort
# the end of each failing case's log
for c in $(awk '$1 ~ /^FAIL/ {print $3}' "$summary"); do
  echo "---- FAILED $c (last lines)"
  awk -v c="$c" '/^==== /{on = ($2 == c); next} on' "$test_log" | tail -12 | cut -c1-200
done
cat "$summary"
say "pass $n_pass, fail $n_fail, skip $n_skip; $(($(date +%s) - t_start)) s in all"
[ $n_fail = 0 ]
