/* preload.c - weft's own kernels loaded on a thread of their own.
 *
 * CUDA loads a module's kernels lazily, each at its first launch; a fresh
 * process's first text encoding or sampler step then waits for every
 * kernel it meets (CUDA_MODULE_LOADING=EAGER took the first text encodes
 * from 0.15 s to 0.016 s on the H200, but loaded every library's modules
 * at the start, 1.3 s).  weft_cuda_start_cudnn (the sd plugin's
 * checkpoint load) starts this thread beside cuDNN's: it finds each of
 * weft's modules by its anchor (common.cuh's WEFT_CU_MODULE) and asks the
 * driver for every kernel of it in the backend's context, which loads
 * them while the checkpoint loads.  WEFT_CUDA_PRELOAD=0 leaves them lazy.
 * Failures only leave kernels to load at their first launch. */
#include <cuda_runtime.h>
#include <pthread.h>
#include <stdlib.h>

#include "internal.h"

#define WEFT_CU_MODULES(X)                                                     \
  X(pointwise)                                                                 \
  X(im2col) X(norm) X(attention) X(flash16) X(conv_direct) X(half) X(layout)

#define DECLARE(name) const void *weft__cu_module_##name(void);
WEFT_CU_MODULES(DECLARE)
#undef DECLARE

/* the driver's cuKernelGetLibrary and cuKernelGetFunction, by entry
 * point (no libcuda to link; <cuda.h> is not reachable by that name here,
 * kernels/cuda/cuda.h being weft's): CUresult is an int-sized enum,
 * CUDA_SUCCESS 0; CUlibrary, CUkernel and CUfunction are pointers, and a
 * cudaKernel_t or cudaLibrary_t is the same handle */
typedef int (*kernel_get_library_fn)(void **lib, void *kernel);
typedef int (*kernel_get_function_fn)(void **fn, void *kernel);

static void *driver_fn(const char *name, unsigned version) {
  void *fn = NULL;
  enum cudaDriverEntryPointQueryResult q;
  if (cudaGetDriverEntryPointByVersion(name, &fn, version, cudaEnableDefault,
                                       &q) != cudaSuccess ||
      q != cudaDriverEntryPointSuccess)
    return NULL;
  return fn;
}

/* every kernel of the module the anchor belongs to: how many were asked
 * for */
static uint64_t load_module(const void *anchor, kernel_get_library_fn lib_of,
                            kernel_get_function_fn fn_of) {
  cudaKernel_t k;
  void *lib;
  unsigned n = 0;
  if (cudaGetKernel(&k, anchor) != cudaSuccess || lib_of(&lib, k) != 0 ||
      cudaLibraryGetKernelCount(&n, (cudaLibrary_t)lib) != cudaSuccess || !n)
    return 0;
  cudaKernel_t *ks = malloc((size_t)n * sizeof *ks);
  uint64_t loaded = 0;
  if (ks &&
      cudaLibraryEnumerateKernels(ks, n, (cudaLibrary_t)lib) == cudaSuccess)
    for (unsigned i = 0; i < n; i++) {
      void *f;
      loaded += fn_of(&f, ks[i]) == 0;
    }
  free(ks);
  return loaded;
}

static void *preload_main(void *arg) {
  weft__cuda_ctx *ctx = arg;
  const double t0 = weft__cuda_now();
  uint64_t loaded = 0;
  kernel_get_library_fn lib_of =
      (kernel_get_library_fn)driver_fn("cuKernelGetLibrary", 12050);
  kernel_get_function_fn fn_of =
      (kernel_get_function_fn)driver_fn("cuKernelGetFunction", 12000);
  if (lib_of && fn_of && cudaSetDevice(ctx->device) == cudaSuccess) {
#define LOAD(name)                                                             \
  loaded += load_module(weft__cu_module_##name(), lib_of, fn_of);
    WEFT_CU_MODULES(LOAD)
#undef LOAD
  }
  (void)cudaGetLastError(); /* nothing here is the next call's error */
  pthread_mutex_lock(&ctx->plans_mu);
  ctx->plans.preloaded = loaded;
  ctx->plans.preload_s = weft__cuda_now() - t0;
  pthread_mutex_unlock(&ctx->plans_mu);
  return NULL;
}

void weft__cuda_preload_start(weft__cuda_ctx *ctx) {
  static int env = -1;
  if (ctx->preloading || ctx->preloaded ||
      !weft__cuda_env_on("WEFT_CUDA_PRELOAD", &env))
    return;
  ctx->preloading =
      pthread_create(&ctx->preload_thread, NULL, preload_main, ctx) == 0;
}

void weft__cuda_preload_join(weft__cuda_ctx *ctx) {
  if (!ctx->preloading) return;
  pthread_join(ctx->preload_thread, NULL);
  ctx->preloading = false;
  ctx->preloaded = true;
}
