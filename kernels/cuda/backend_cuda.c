/* backend_cuda.c - the CUDA backend's weft_backend vtable: construction,
 * buffers and copies, and for every op the same argument checks as
 * kernels/cpu before its kernels are queued on the backend's stream. */
#include <cublas_v2.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define CTX(be) WEFT__CUDA_CTX(be)

/* ---- errors ---------------------------------------------------------------
 */

int weft__cuda_fail(weft__cuda_ctx *ctx, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ctx->err, sizeof ctx->err, fmt, ap);
  va_end(ap);
  return code;
}

int weft__cuda_check(weft__cuda_ctx *ctx, cudaError_t e, const char *what) {
  if (e == cudaSuccess) return 0;
  return weft__cuda_fail(
      ctx, e == cudaErrorMemoryAllocation ? WEFT_ENOMEM : WEFT_EDEVICE,
      "%s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

/* Every entry point makes the backend's device current: one process may
 * drive several devices from one thread. */
static int enter(weft__cuda_ctx *ctx) {
  return weft__cuda_check(ctx, cudaSetDevice(ctx->device), "cudaSetDevice");
}

#define ENTER(ctx)                                                             \
  do {                                                                         \
    int rc_ = enter(ctx);                                                      \
    if (rc_) return rc_;                                                       \
  } while (0)

/* ---- construction ------------------------------------------------------- */

void weft_cuda_options_init(weft_cuda_options *opt) {
  memset(opt, 0, sizeof *opt);
  opt->struct_size = sizeof *opt;
}

int weft_cuda_device_count(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

bool weft_cuda_available(void) {
  return weft_cuda_device_count() > 0;
}

static const weft_backend_iface cuda_iface;

static void ctx_free(weft__cuda_ctx *ctx) {
  if (!ctx) return;
  cudaSetDevice(ctx->device);
  if (ctx->stream) cudaStreamSynchronize(ctx->stream);
  weft__cuda_prof_destroy(ctx);
  weft__cudnn_destroy(ctx);
  weft__cuda_lt_warm_join(ctx);
  weft__cuda_preload_join(ctx);
  weft__cuda_lt_destroy(ctx);
  if (ctx->blas) cublasDestroy((cublasHandle_t)ctx->blas);
  weft__cuda_cache_destroy(ctx);
  if (ctx->gn_counters) cudaFree(ctx->gn_counters);
  weft__cuda_ranges_destroy(&ctx->half);
  weft__cuda_ranges_destroy(&ctx->mirror);
  if (ctx->stream) cudaStreamDestroy(ctx->stream);
  pthread_mutex_destroy(&ctx->plans_mu);
  free(ctx);
}

static int apply_math_mode(weft__cuda_ctx *ctx) {
  if (!ctx->blas) return 0; /* applied when it is made */
  cublasStatus_t st = cublasSetMathMode((cublasHandle_t)ctx->blas,
                                        ctx->tf32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                  : CUBLAS_DEFAULT_MATH);
  if (st != CUBLAS_STATUS_SUCCESS)
    return weft__cuda_fail(ctx, WEFT_EDEVICE, "cublasSetMathMode: %s",
                           cublasGetStatusString(st));
  return 0;
}

int weft__cuda_blas(weft__cuda_ctx *ctx, void **out) {
  if (!ctx->blas) {
    const double t0 = weft__cuda_now();
    cublasHandle_t h;
    cublasStatus_t st = cublasCreate(&h);
    if (st != CUBLAS_STATUS_SUCCESS)
      return weft__cuda_fail(ctx, WEFT_EDEVICE, "cublasCreate: %s",
                             cublasGetStatusString(st));
    ctx->blas = h;
    if ((st = cublasSetStream(h, ctx->stream)) != CUBLAS_STATUS_SUCCESS) {
      cublasDestroy(h);
      ctx->blas = NULL;
      return weft__cuda_fail(ctx, WEFT_EDEVICE, "cublasSetStream: %s",
                             cublasGetStatusString(st));
    }
    int rc = apply_math_mode(ctx);
    if (rc) {
      cublasDestroy(h);
      ctx->blas = NULL;
      return rc;
    }
    pthread_mutex_lock(&ctx->plans_mu);
    ctx->plans.start_blas_s = weft__cuda_now() - t0;
    pthread_mutex_unlock(&ctx->plans_mu);
  }
  *out = ctx->blas;
  return 0;
}

weft_backend *weft_backend_cuda_new_ex(const weft_cuda_options *opt, char *err,
                                       size_t err_size) {
  weft_cuda_options o;
  weft_cuda_options_init(&o);
  if (opt) {
    /* read only the fields the caller's struct has */
    size_t n = opt->struct_size < sizeof o ? opt->struct_size : sizeof o;
    memcpy(&o, opt, n);
    o.struct_size = sizeof o;
  }
  char dummy[1];
  if (!err || !err_size) {
    err = dummy;
    err_size = sizeof dummy;
  }
  err[0] = 0;
  const double t_start = weft__cuda_now();
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    snprintf(err, err_size,
             "CUDA device %d: CUDA is not usable here: %s (no NVIDIA GPU, or "
             "no driver for this CUDA runtime)",
             o.device, cudaGetErrorString(e));
    return NULL;
  }
  if (o.device < 0 || o.device >= count) {
    snprintf(err, err_size,
             "CUDA device %d does not exist (%d device%s present)", o.device,
             count, count == 1 ? "" : "s");
    return NULL;
  }
  /* AUTO convolutions: WEFT_CUDA_CONV may name one way for the process
   * (benchmarks compare them) */
  const char *conv_env = getenv("WEFT_CUDA_CONV");
  if (o.conv_algo == WEFT_CUDA_CONV_AUTO && conv_env && *conv_env) {
    static const char *const names[] = {"auto", "im2col", "cudnn"};
    int found = -1;
    for (int i = 0; i < 3 && found < 0; i++)
      if (!strcmp(conv_env, names[i])) found = i;
    if (found < 0) {
      snprintf(err, err_size,
               "WEFT_CUDA_CONV=%s: expected auto, im2col or cudnn", conv_env);
      return NULL;
    }
    o.conv_algo = (weft_cuda_conv_algo)found;
  }
  weft_cuda_precision prec;
  if (weft__cuda_precision_resolve(o.precision, &prec, err, err_size) != 0)
    return NULL;
  weft_backend *be = calloc(1, sizeof *be);
  weft__cuda_ctx *ctx = calloc(1, sizeof *ctx);
  if (!be || !ctx || weft__cuda_cache_init(&ctx->cache) != 0) {
    free(be);
    free(ctx);
    snprintf(err, err_size, "out of host memory");
    return NULL;
  }
  if (weft__cuda_ranges_init(&ctx->half) != 0) {
    weft__cuda_cache_destroy(ctx);
    free(be);
    free(ctx);
    snprintf(err, err_size, "out of host memory");
    return NULL;
  }
  if (weft__cuda_ranges_init(&ctx->mirror) != 0) {
    weft__cuda_ranges_destroy(&ctx->half);
    weft__cuda_cache_destroy(ctx);
    free(be);
    free(ctx);
    snprintf(err, err_size, "out of host memory");
    return NULL;
  }
  ctx->device = o.device;
  ctx->plans_mu = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
  ctx->precision = prec;
  ctx->tf32 = o.allow_tf32 != 0;
  ctx->conv_algo = o.conv_algo;
  ctx->band_bytes = WEFT_CUDA_CONV_BAND_BYTES;
  struct cudaDeviceProp prop;
  if ((e = cudaSetDevice(o.device)) != cudaSuccess ||
      (e = cudaGetDeviceProperties(&prop, o.device)) != cudaSuccess ||
      (e = cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking)) !=
          cudaSuccess ||
      /* the group norms' counters: zeros that each group norm leaves so */
      (e = cudaMalloc((void **)&ctx->gn_counters,
                      WEFT_CU_GN_COUNTERS * sizeof(unsigned))) != cudaSuccess ||
      (e = cudaMemset(ctx->gn_counters, 0,
                      WEFT_CU_GN_COUNTERS * sizeof(unsigned))) != cudaSuccess) {
    cudaGetLastError();
    snprintf(err, err_size, "CUDA device %d: %s", o.device,
             cudaGetErrorString(e));
    ctx_free(ctx);
    free(be);
    return NULL;
  }
  /* The stack each thread of the device may use: the driver reserves it
   * for every thread an SM can hold, 1 KiB by default (264 MiB of an
   * H200's memory; tools/gpu/ctx_mem.sh), and grows it for a kernel that
   * needs more.  WEFT_CUDA_STACK_BYTES (default 256: 66 MiB; an SD
   * txt2img's process 2707 against 2905 MiB with the driver's) sets it;
   * "default" leaves the driver's. */
  static int stack = -1;
  const char *se = getenv("WEFT_CUDA_STACK_BYTES");
  if (!(se && !strcmp(se, "default")) &&
      cudaDeviceSetLimit(cudaLimitStackSize, (size_t)weft__cuda_env_int_or(
                                                 "WEFT_CUDA_STACK_BYTES", 256,
                                                 &stack)) != cudaSuccess)
    cudaGetLastError(); /* a limit the driver refuses: its own stays */
  snprintf(ctx->device_name, sizeof ctx->device_name, "%s", prop.name);
  ctx->sm_count = prop.multiProcessorCount;
  ctx->cc = prop.major * 10 + prop.minor;
  ctx->smem_optin = prop.sharedMemPerBlockOptin;
  const double t_ctx = weft__cuda_now();
  if (weft__cuda_lt_init(ctx, err, err_size) != 0) {
    ctx_free(ctx);
    free(be);
    return NULL;
  }
  ctx->plans.start_context_s = t_ctx - t_start;
  ctx->plans.start_lt_s = weft__cuda_now() - t_ctx;
  /* cuDNN is optional at run time too: without it conv2d uses im2col.
   * Its handle is made on first use (weft__cudnn_ensure), unless asked
   * for, when its absence is an error now. */
  if (o.conv_algo == WEFT_CUDA_CONV_CUDNN) {
    ctx->cudnn_tried = true;
    if (weft__cudnn_init(ctx, ctx->err, sizeof ctx->err) != 0) {
      snprintf(err, err_size, "CUDA device %d: cuDNN asked for: %s", o.device,
               ctx->err);
      ctx_free(ctx);
      free(be);
      return NULL;
    }
  }
  ctx->err[0] = 0;
  be->iface = &cuda_iface;
  be->ctx = ctx;
  return be;
}

weft_backend *weft_backend_cuda_new(int device) {
  weft_cuda_options o;
  weft_cuda_options_init(&o);
  o.device = device;
  char err[512];
  weft_backend *be = weft_backend_cuda_new_ex(&o, err, sizeof err);
  if (!be) fprintf(stderr, "weft: %s\n", err);
  return be;
}

bool weft_backend_is_cuda(const weft_backend *be) {
  return be &&
         (be->iface == &cuda_iface || weft__cuda_is_prof_iface(be->iface));
}

int weft_cuda_set_tf32(weft_backend *be, bool allow) {
  if (!weft_backend_is_cuda(be)) return WEFT_EINVAL;
  CTX(be)->tf32 = allow;
  ENTER(CTX(be));
  return apply_math_mode(CTX(be));
}

int weft_cuda_set_conv_algo(weft_backend *be, weft_cuda_conv_algo algo) {
  if (!weft_backend_is_cuda(be) || algo < WEFT_CUDA_CONV_AUTO ||
      algo > WEFT_CUDA_CONV_CUDNN)
    return WEFT_EINVAL;
  CTX(be)->conv_algo = algo;
  return 0;
}

int weft_cuda_start_cudnn(weft_backend *be) {
  if (!weft_backend_is_cuda(be)) return WEFT_EINVAL;
  weft_cuda_conv_algo algo = CTX(be)->conv_algo;
  if (algo == WEFT_CUDA_CONV_AUTO || algo == WEFT_CUDA_CONV_CUDNN)
    weft__cudnn_start(CTX(be));
  weft__cuda_lt_warm_start(CTX(be));
  weft__cuda_preload_start(CTX(be));
  return 0;
}

bool weft_cuda_have_cudnn(const weft_backend *be) {
  return weft_backend_is_cuda(be) && enter(CTX(be)) == 0 &&
         weft__cudnn_ensure(CTX(be));
}

int weft_cuda_mem_stats_get(const weft_backend *be, weft_cuda_mem_stats *st) {
  if (!weft_backend_is_cuda(be) || !st) return WEFT_EINVAL;
  weft__cuda_cache *c = &CTX(be)->cache;
  pthread_mutex_lock(&c->mu);
  *st = c->st;
  pthread_mutex_unlock(&c->mu);
  return 0;
}

void weft__cuda_plan_time(weft__cuda_ctx *ctx, weft__cuda_plan_kind what,
                          double seconds) {
  pthread_mutex_lock(&ctx->plans_mu);
  weft_cuda_plan_stats *p = &ctx->plans;
  switch (what) {
  case WEFT__PLAN_CUDNN: p->cudnn_plans++, p->cudnn_s += seconds; break;
  case WEFT__PLAN_LT: p->lt_plans++, p->lt_s += seconds; break;
  case WEFT__PLAN_CUDNN_WAIT: p->cudnn_wait_s += seconds; break;
  case WEFT__PLAN_KEPT: p->cudnn_kept++; break;
  case WEFT__PLAN_STORED: p->cudnn_stored++; break;
  }
  pthread_mutex_unlock(&ctx->plans_mu);
}

int weft_cuda_plan_stats_get(const weft_backend *be, weft_cuda_plan_stats *st) {
  if (!weft_backend_is_cuda(be) || !st) return WEFT_EINVAL;
  weft__cuda_ctx *ctx = CTX(be);
  pthread_mutex_lock(&ctx->plans_mu);
  *st = ctx->plans;
  pthread_mutex_unlock(&ctx->plans_mu);
  return 0;
}

uint64_t weft_cuda_malloc_count(const weft_backend *be) {
  weft_cuda_mem_stats st;
  return weft_cuda_mem_stats_get(be, &st) == 0 ? st.n_malloc : 0;
}

int weft_cuda_trim(weft_backend *be) {
  if (!weft_backend_is_cuda(be)) return WEFT_EINVAL;
  ENTER(CTX(be));
  return weft__cuda_cache_trim(CTX(be));
}

const char *weft_cuda_last_error(const weft_backend *be) {
  return weft_backend_is_cuda(be) ? CTX(be)->err : "";
}

void *weft_cuda_stream(const weft_backend *be) {
  return weft_backend_is_cuda(be) ? (void *)CTX(be)->stream : NULL;
}

const char *weft_cuda_device_name(const weft_backend *be) {
  return weft_backend_is_cuda(be) ? CTX(be)->device_name : "";
}

/* ---- vtable: lifetime, buffers ------------------------------------------ */

static void be_free(weft_backend *be) {
  ctx_free(CTX(be));
  free(be);
}

static int be_synchronize(weft_backend *be) {
  ENTER(CTX(be));
  return weft__cuda_check(CTX(be), cudaStreamSynchronize(CTX(be)->stream),
                          "cudaStreamSynchronize");
}

static void *be_alloc(weft_backend *be, size_t nbytes) {
  if (enter(CTX(be)) != 0) return NULL;
  return weft__cuda_alloc(CTX(be), nbytes);
}

static void be_buf_free(weft_backend *be, void *buf) {
  weft__cuda_free(CTX(be), buf);
}

static int be_copy(weft_backend *be, void *dst, const void *src, size_t n,
                   weft_copy_kind kind) {
  weft__cuda_ctx *ctx = CTX(be);
  if (n == 0) return 0;
  if (!dst || !src) return WEFT_EINVAL;
  enum cudaMemcpyKind k;
  switch (kind) {
  case WEFT_COPY_HOST_TO_DEVICE: k = cudaMemcpyHostToDevice; break;
  case WEFT_COPY_DEVICE_TO_HOST: k = cudaMemcpyDeviceToHost; break;
  case WEFT_COPY_DEVICE_TO_DEVICE: k = cudaMemcpyDeviceToDevice; break;
  default: return WEFT_EINVAL;
  }
  ENTER(ctx);
  int rc = weft__cuda_check(ctx, cudaMemcpyAsync(dst, src, n, k, ctx->stream),
                            "cudaMemcpyAsync");
  if (rc == 0 && kind != WEFT_COPY_DEVICE_TO_DEVICE)
    rc = weft__cuda_check(ctx, cudaStreamSynchronize(ctx->stream),
                          "cudaMemcpyAsync (waiting for the copy)");
  return rc;
}

/* ---- vtable: ops -------------------------------------------------------- */

#define LAUNCHED(ctx, call, what) weft__cuda_check(ctx, (call), what)

static int be_gemm(weft_backend *be, const weft_gemm_args *a) {
  ENTER(CTX(be));
  return weft__cuda_gemm(CTX(be), a);
}

static int be_linear(weft_backend *be, const float *x, int64_t rows, int64_t in,
                     const float *w, const float *b, int64_t out, float *y) {
  weft__cuda_ctx *ctx = CTX(be);
  if (rows < 0 || in < 0 || out < 0) return WEFT_EINVAL;
  weft_gemm_args g = {.m = rows,
                      .n = out,
                      .k = in,
                      .trans_b = 1,
                      .alpha = 1.0f,
                      .beta = 0.0f,
                      .a = x,
                      .lda = in ? in : 1,
                      .b = w,
                      .ldb = in ? in : 1,
                      .c = y,
                      .ldc = out};
  if (rows == 0 || out == 0) return 0;
  ENTER(ctx);
  /* weights (and a bias) may be 16-bit (weft_cuda_mark_half); the bias is
   * added in fp32: after the product in FP32 precision, as kernels/cpu
   * adds it, in cuBLASLt's epilogue in FP16/BF16 */
  void *tb = NULL;
  const float *bias = b ? weft__cuda_f32_view(ctx, b, out, &tb) : NULL;
  if (b && !bias) return WEFT_ENOMEM;
  int rc = weft__cuda_gemm_ex(
      ctx, &g, ctx->act == WEFT_F32 ? WEFT__DT_LOOKUP : (int)ctx->act,
      WEFT__DT_LOOKUP, ctx->act, bias);
  weft__cuda_free(ctx, tb);
  return rc;
}

/* One launch of weft__cu_gemv16_group where every part is a product of
 * a few rows that be_linear would give to the gemv kernel (16-bit x,
 * registered 16-bit weights of the compute dtype, aligned rows, y in the
 * activation dtype): the same sums, so the same bits.  Else the parts one
 * by one. */
static int be_linear_group(weft_backend *be, const float *x, int64_t rows,
                           int64_t in, int n, const weft_linear_part *parts) {
  weft__cuda_ctx *ctx = CTX(be);
  if (rows < 0 || in < 0 || n < 0 || (n && !parts)) return WEFT_EINVAL;
  const weft_dtype want = weft__cuda_compute_dtype(ctx);
  bool one = n > 1 && want != WEFT_F32 && ctx->act == want && rows >= 1 &&
             rows <= WEFT_CU_GEMV_ROWS && in > 0 && in % 8 == 0 && x &&
             (uintptr_t)x % 16 == 0;
  for (int i = 0; one && i < n; i++) {
    const weft_linear_part *p = &parts[i];
    one = p->weight && p->y && p->out > 0 && p->out <= INT32_MAX - 7 &&
          (uintptr_t)p->weight % 16 == 0;
  }
  if (one) {
    ENTER(ctx);
    for (int i = 0; one && i < n; i++)
      one = weft__cuda_weight_dtype(ctx, parts[i].weight) == want;
  }
  if (!one) {
    for (int i = 0; i < n; i++) {
      const weft_linear_part *p = &parts[i];
      int rc = be_linear(be, x, rows, in, p->weight, p->bias, p->out, p->y);
      if (rc) return rc;
    }
    return 0;
  }
  weft__cu_gemv_part gp[64], *g = n <= 64 ? gp : malloc((size_t)n * sizeof *g);
  void **tb = g ? calloc((size_t)n, sizeof *tb) : NULL;
  int rc = g && tb ? 0 : WEFT_ENOMEM;
  for (int i = 0; rc == 0 && i < n; i++) {
    const weft_linear_part *p = &parts[i];
    const float *bias =
        p->bias ? weft__cuda_f32_view(ctx, p->bias, p->out, &tb[i]) : NULL;
    if (p->bias && !bias) rc = WEFT_ENOMEM;
    g[i] = (weft__cu_gemv_part){p->weight, bias, p->y, p->out};
  }
  if (rc == 0)
    rc = LAUNCHED(ctx,
                  weft__cu_gemv16_group(ctx->stream, (int)want, rows, in, x, in,
                                        n, g, (int)ctx->act),
                  "linear group (a few rows)");
  for (int i = 0; tb && i < n; i++)
    weft__cuda_free(ctx, tb[i]);
  free(tb);
  if (g != gp) free(g);
  return rc;
}

static int be_conv2d(weft_backend *be, const weft_conv2d_args *a) {
  ENTER(CTX(be));
  return weft__cuda_conv2d(CTX(be), a);
}

static size_t be_conv2d_scratch(weft_backend *be, const weft_conv2d_args *a) {
  if (enter(CTX(be)) != 0) return 0;
  return weft__cuda_conv2d_scratch_bytes(CTX(be), a);
}

static int attn_check_shapes(const weft_attn_args *a) {
  if (!a) return WEFT_EINVAL;
  if (a->batch < 0 || a->heads < 0 || a->lq < 0 || a->lk <= 0 || a->d <= 0 ||
      a->dv <= 0 || a->q_chunk < 0)
    return WEFT_EINVAL;
  if (a->lk > INT32_MAX || a->lq > INT32_MAX || a->d > INT32_MAX ||
      a->dv > INT32_MAX)
    return WEFT_EINVAL;
  if (a->q_s.l < a->d || a->k_s.l < a->d || a->v_s.l < a->dv ||
      a->o_s.l < a->dv || a->q_s.l > INT32_MAX || a->k_s.l > INT32_MAX ||
      a->v_s.l > INT32_MAX || a->o_s.l > INT32_MAX)
    return WEFT_EINVAL;
  return 0;
}

static bool fused_attention(const weft__cuda_ctx *ctx,
                            const weft_attn_args *a) {
  return !ctx->attn_unfused && weft__cu_flash16_fits(a);
}

static int be_attention(weft_backend *be, const weft_attn_args *a) {
  weft__cuda_ctx *ctx = CTX(be);
  int rc = attn_check_shapes(a);
  if (rc == 0 && (!a->q || !a->k || !a->v || !a->o)) rc = WEFT_EINVAL;
  if (rc != 0) return rc;
  if (a->batch == 0 || a->heads == 0 || a->lq == 0) return 0;
  ENTER(ctx);
  const float scale =
      a->scale != 0 ? a->scale : (float)(1.0 / sqrt((double)a->d));
  if (weft__cudnn_attn_fits(ctx, a)) {
    rc = weft__cudnn_attn(ctx, a, scale);
    if (rc != WEFT_EUNSUPPORTED) return rc; /* else no engine: flash16 */
  }
  if (ctx->precision != WEFT_CUDA_FP32 && fused_attention(ctx, a)) {
    const size_t need = weft__cu_flash16_scratch(a);
    void *ws = a->scratch_bytes >= need && ((uintptr_t)a->scratch & 15) == 0
                   ? a->scratch
                   : NULL;
    if (!ws && !(ws = weft__cuda_scratch(ctx, need))) return WEFT_ENOMEM;
    return LAUNCHED(ctx,
                    weft__cu_flash16(ctx->stream, a, scale,
                                     ctx->precision == WEFT_CUDA_BF16,
                                     ctx->act != WEFT_F32, ctx->sm_count, ws),
                    "attention (fused 16-bit)");
  }
  if (ctx->precision != WEFT_CUDA_FP32)
    return weft__cuda_attention16(ctx, a, scale);
  cudaError_t e = weft__cu_attention(ctx->stream, a, scale, ctx->smem_optin);
  if (e == cudaErrorInvalidValue) {
    cudaGetLastError();
    return weft__cuda_fail(ctx, WEFT_EUNSUPPORTED,
                           "attention: head dim d = %lld does not fit the "
                           "kernel's shared memory (%zu bytes per block)",
                           (long long)a->d, ctx->smem_optin);
  }
  return LAUNCHED(ctx, e, "attention");
}

/* Whether a runs on cuDNN's fused attention: it fits and cuDNN has an
 * engine for it (its plan made now if new); *ws its workspace bytes. */
static bool cudnn_attention(weft__cuda_ctx *ctx, const weft_attn_args *a,
                            size_t *ws) {
  return weft__cudnn_attn_fits(ctx, a) && enter(ctx) == 0 &&
         weft__cudnn_attn_plan(ctx, a, ws) == 0;
}

static size_t be_attention_scratch(weft_backend *be, const weft_attn_args *a) {
  /* fp32: the tiled kernel keeps its scores in shared memory */
  if (CTX(be)->precision == WEFT_CUDA_FP32 || attn_check_shapes(a) != 0)
    return 0;
  size_t ws;
  if (cudnn_attention(CTX(be), a, &ws)) return ws;
  if (fused_attention(CTX(be), a)) return weft__cu_flash16_scratch(a);
  return weft__cuda_attention16_scratch(a);
}

int weft_cuda_set_cudnn_attention(weft_backend *be, bool on) {
  if (!weft_backend_is_cuda(be)) return WEFT_EINVAL;
  CTX(be)->attn_cudnn_off = !on;
  return 0;
}

int weft_cuda_set_fused_attention(weft_backend *be, bool on) {
  if (!weft_backend_is_cuda(be)) return WEFT_EINVAL;
  CTX(be)->attn_unfused = !on;
  return 0;
}

int weft_cuda_set_scratch_limit(weft_backend *be, size_t bytes) {
  if (!weft_backend_is_cuda(be)) return WEFT_EINVAL;
  CTX(be)->scratch_limit = bytes;
  return 0;
}

int weft_cuda_set_conv_band_bytes(weft_backend *be, size_t bytes) {
  if (!weft_backend_is_cuda(be)) return WEFT_EINVAL;
  CTX(be)->band_bytes = bytes;
  return 0;
}

const char *weft_cuda_attention_path(weft_backend *be,
                                     const weft_attn_args *a) {
  if (!weft_backend_is_cuda(be) || attn_check_shapes(a) != 0) return NULL;
  weft__cuda_ctx *ctx = CTX(be);
  size_t ws;
  if (ctx->precision == WEFT_CUDA_FP32) return "fp32";
  if (cudnn_attention(ctx, a, &ws)) return "cudnn";
  return fused_attention(ctx, a) ? "fused" : "cublas";
}

static bool act_ok(weft_act act) {
  return act >= 0 && act < WEFT_ACT_COUNT;
}

/* group_norm on channels-first maps, or with cl on channels-last ones */
static int group_norm(weft_backend *be, bool cl, const float *x, float *y,
                      int64_t batch, int64_t channels, int64_t spatial,
                      int64_t groups, float eps, const float *gamma,
                      const float *beta, weft_act act) {
  weft__cuda_ctx *ctx = CTX(be);
  if (!x || !y || batch < 0 || channels <= 0 || spatial <= 0 || groups <= 0 ||
      channels % groups != 0 || !act_ok(act))
    return WEFT_EINVAL;
  if (batch == 0) return 0;
  ENTER(ctx);
  /* the chunks' moments (channels first: where a group has several) */
  const size_t sb =
      cl ? weft__cu_gn_stats_cl_bytes(batch, channels, spatial, groups)
         : weft__cu_group_norm_scratch_bytes(batch, channels, spatial, groups);
  void *scratch = sb ? weft__cuda_scratch(ctx, sb) : NULL;
  if (sb && !scratch) return WEFT_ENOMEM;
  return LAUNCHED(ctx,
                  (cl ? weft__cu_group_norm_cl : weft__cu_group_norm)(
                      ctx->stream, ctx->act, x, y, batch, channels, spatial,
                      groups, eps, gamma, beta, (int)act, scratch,
                      ctx->gn_counters),
                  cl ? "group_norm_cl" : "group_norm");
}

static int be_group_norm(weft_backend *be, const float *x, float *y,
                         int64_t batch, int64_t channels, int64_t spatial,
                         int64_t groups, float eps, const float *gamma,
                         const float *beta, weft_act act) {
  return group_norm(be, false, x, y, batch, channels, spatial, groups, eps,
                    gamma, beta, act);
}

static int be_group_norm_cl(weft_backend *be, const float *x, float *y,
                            int64_t batch, int64_t channels, int64_t spatial,
                            int64_t groups, float eps, const float *gamma,
                            const float *beta, weft_act act) {
  return group_norm(be, true, x, y, batch, channels, spatial, groups, eps,
                    gamma, beta, act);
}

static int be_layer_norm(weft_backend *be, const float *x, float *y,
                         int64_t rows, int64_t dim, float eps,
                         const float *gamma, const float *beta) {
  weft__cuda_ctx *ctx = CTX(be);
  if (!x || !y || rows < 0 || dim <= 0) return WEFT_EINVAL;
  if (rows == 0) return 0;
  ENTER(ctx);
  return LAUNCHED(ctx,
                  weft__cu_layer_norm(ctx->stream, ctx->act, x, y, rows, dim,
                                      eps, gamma, beta),
                  "layer_norm");
}

static int be_softmax(weft_backend *be, const float *x, float *y, int64_t rows,
                      int64_t dim) {
  weft__cuda_ctx *ctx = CTX(be);
  if (!x || !y || rows < 0 || dim <= 0) return WEFT_EINVAL;
  if (rows == 0) return 0;
  ENTER(ctx);
  return LAUNCHED(ctx, weft__cu_softmax(ctx->stream, ctx->act, x, y, rows, dim),
                  "softmax");
}

static int be_act(weft_backend *be, weft_act act, const float *x, float *y,
                  int64_t n) {
  weft__cuda_ctx *ctx = CTX(be);
  if (!x || !y || n < 0 || !act_ok(act)) return WEFT_EINVAL;
  if (n == 0 || (act == WEFT_ACT_NONE && x == y)) return 0;
  ENTER(ctx);
  if (act == WEFT_ACT_NONE)
    return LAUNCHED(ctx,
                    cudaMemcpyAsync(y, x, (size_t)n * weft__cuda_act_size(ctx),
                                    cudaMemcpyDeviceToDevice, ctx->stream),
                    "act (copy)");
  return LAUNCHED(ctx, weft__cu_act(ctx->stream, ctx->act, (int)act, x, y, n),
                  "act");
}

static int be_gated_act(weft_backend *be, weft_act act, const float *x,
                        float *y, int64_t rows, int64_t dim) {
  weft__cuda_ctx *ctx = CTX(be);
  if (!x || !y || rows < 0 || dim <= 0 || !act_ok(act)) return WEFT_EINVAL;
  if (rows == 0) return 0;
  ENTER(ctx);
  /* In place, row r's output overwrites inputs of rows < r that other
   * threads may not have read yet: compute into a temporary, copy back. */
  uintptr_t xb = (uintptr_t)x, yb = (uintptr_t)y;
  size_t in_bytes = (size_t)(rows * 2 * dim) * weft__cuda_act_size(ctx);
  size_t out_bytes = (size_t)(rows * dim) * weft__cuda_act_size(ctx);
  bool overlap = yb < xb + in_bytes && xb < yb + out_bytes;
  void *dst = overlap ? weft__cuda_alloc(ctx, out_bytes) : y;
  if (!dst) return WEFT_ENOMEM;
  int rc = LAUNCHED(
      ctx,
      weft__cu_gated_act(ctx->stream, ctx->act, (int)act, x, dst, rows, dim),
      "gated_act");
  if (rc == 0 && overlap)
    rc = LAUNCHED(ctx,
                  cudaMemcpyAsync(y, dst, out_bytes, cudaMemcpyDeviceToDevice,
                                  ctx->stream),
                  "gated_act (copy back)");
  if (overlap) weft__cuda_free(ctx, dst);
  return rc;
}

static int be_binary(weft_backend *be, weft_binop op, const float *a,
                     int a_ndim, const int64_t *a_shape, const float *b,
                     int b_ndim, const int64_t *b_shape, float *y) {
  weft__cuda_ctx *ctx = CTX(be);
  weft_bcast p;
  if (!a || !b || !y || op < 0 || op >= WEFT_BIN_COUNT ||
      weft_bcast_plan(a_ndim, a_shape, b_ndim, b_shape, &p))
    return WEFT_EINVAL;
  int64_t total = p.total;
  if (total == 0) return 0;
  /* the same loops kernels/cpu runs (ops.h's weft_bcast_plan) */
  weft__cu_bcast bc;
  memset(&bc, 0, sizeof bc);
  bc.nd = p.nd;
  memcpy(bc.shape, p.shape, sizeof bc.shape);
  memcpy(bc.sa, p.sa, sizeof bc.sa);
  memcpy(bc.sb, p.sb, sizeof bc.sb);
  ENTER(ctx);
  return LAUNCHED(
      ctx, weft__cu_binary(ctx->stream, ctx->act, (int)op, a, b, y, &bc, total),
      "binary");
}

static int be_scale_add(weft_backend *be, float *y, float alpha, const float *a,
                        float beta, const float *b, int64_t n) {
  weft__cuda_ctx *ctx = CTX(be);
  if (!y || !a || n < 0) return WEFT_EINVAL;
  if (n == 0) return 0;
  ENTER(ctx);
  return LAUNCHED(
      ctx, weft__cu_scale_add(ctx->stream, ctx->act, y, alpha, a, beta, b, n),
      "scale_add");
}

static int be_upsample(weft_backend *be, const float *x, float *y,
                       int64_t planes, int64_t h, int64_t w) {
  weft__cuda_ctx *ctx = CTX(be);
  if (!x || !y || planes < 0 || h < 0 || w < 0) return WEFT_EINVAL;
  if (planes == 0 || h == 0 || w == 0) return 0;
  ENTER(ctx);
  return LAUNCHED(
      ctx, weft__cu_upsample2x(ctx->stream, ctx->act, x, y, planes, h, w),
      "upsample_nearest2x");
}

static int be_upsample_cl(weft_backend *be, const float *x, float *y,
                          int64_t batch, int64_t h, int64_t w,
                          int64_t channels) {
  weft__cuda_ctx *ctx = CTX(be);
  if (!x || !y || batch < 0 || h < 0 || w < 0 || channels < 0)
    return WEFT_EINVAL;
  if (batch == 0 || h == 0 || w == 0 || channels == 0) return 0;
  ENTER(ctx);
  return LAUNCHED(ctx,
                  weft__cu_upsample2x_cl(ctx->stream, ctx->act, x, y, batch, h,
                                         w, channels),
                  "upsample_nearest2x_cl");
}

static int be_concat(weft_backend *be, int n, const float *const *xs, int ndim,
                     const int64_t *const *shapes, int axis, float *y) {
  weft__cuda_ctx *ctx = CTX(be);
  if (n <= 0 || n > 1024 || !xs || !shapes || !y || ndim <= 0 ||
      ndim > WEFT_MAX_DIMS || axis < 0 || axis >= ndim)
    return WEFT_EINVAL;
  int64_t outer = 1, after = 1, total = 0;
  for (int i = 0; i < n; i++) {
    if (!xs[i] || !shapes[i]) return WEFT_EINVAL;
    for (int d = 0; d < ndim; d++)
      if (shapes[i][d] < 0 || (d != axis && shapes[i][d] != shapes[0][d]))
        return WEFT_EINVAL;
  }
  for (int d = 0; d < axis; d++)
    outer *= shapes[0][d];
  for (int d = axis + 1; d < ndim; d++)
    after *= shapes[0][d];
  for (int i = 0; i < n; i++)
    total += shapes[i][axis] * after;
  if (total == 0 || outer == 0) return 0;
  ENTER(ctx);
  /* One strided copy per input: its rows of inner_i elements land at
   * column offset off in rows of total elements. */
  const size_t es = weft__cuda_act_size(ctx);
  int64_t off = 0;
  for (int i = 0; i < n; i++) {
    int64_t inner = shapes[i][axis] * after;
    if (inner == 0) continue;
    void *dst = weft__cuda_act_at(ctx, y, off);
    cudaError_t e;
    if (outer == 1)
      e = cudaMemcpyAsync(dst, xs[i], (size_t)inner * es,
                          cudaMemcpyDeviceToDevice, ctx->stream);
    else
      e = cudaMemcpy2DAsync(dst, (size_t)total * es, xs[i], (size_t)inner * es,
                            (size_t)inner * es, (size_t)outer,
                            cudaMemcpyDeviceToDevice, ctx->stream);
    int rc = LAUNCHED(ctx, e, "concat (cudaMemcpy2DAsync)");
    if (rc) return rc;
    off += inner;
  }
  return 0;
}

static int be_timestep(weft_backend *be, const float *t, int64_t n, int64_t dim,
                       int flip, float shift, float scale, float max_period,
                       float *y) {
  weft__cuda_ctx *ctx = CTX(be);
  if (!t || !y || n < 0 || dim <= 0 || max_period <= 0) return WEFT_EINVAL;
  if (n == 0) return 0;
  ENTER(ctx);
  /* the same float32 constants as kernels/cpu (see layout.c there) */
  const float neg_log = (float)-log((double)max_period);
  const float denom = (float)(dim / 2) - shift;
  return LAUNCHED(ctx,
                  weft__cu_timestep(ctx->stream, ctx->act, t, n, dim, flip,
                                    neg_log, denom, scale, y),
                  "timestep_embedding");
}

static int be_convert(weft_backend *be, void *dst, weft_dtype dt,
                      const void *src, weft_dtype st, int64_t n) {
  weft__cuda_ctx *ctx = CTX(be);
  if (!dst || !src || n < 0) return WEFT_EINVAL;
  if (dt == st) {
    size_t es = weft_dtype_size(dt);
    if (!es) return WEFT_EINVAL;
    if (n == 0) return 0;
    ENTER(ctx);
    return LAUNCHED(ctx,
                    cudaMemcpyAsync(dst, src, (size_t)n * es,
                                    cudaMemcpyDeviceToDevice, ctx->stream),
                    "convert (copy)");
  }
  int kind;
  if (st == WEFT_F16 && dt == WEFT_F32)
    kind = 0;
  else if (st == WEFT_F32 && dt == WEFT_F16)
    kind = 1;
  else if (st == WEFT_BF16 && dt == WEFT_F32)
    kind = 2;
  else if (st == WEFT_F32 && dt == WEFT_BF16)
    kind = 3;
  else if (st == WEFT_F16 && dt == WEFT_BF16)
    kind = 4;
  else if (st == WEFT_BF16 && dt == WEFT_F16)
    kind = 5;
  else
    return WEFT_EUNSUPPORTED;
  if (n == 0) return 0;
  ENTER(ctx);
  return LAUNCHED(ctx, weft__cu_convert(ctx->stream, kind, dst, src, n),
                  "convert");
}

static weft_dtype be_act_dtype(weft_backend *be) {
  return CTX(be)->act;
}

int weft_cuda_set_act_dtype(weft_backend *be, weft_dtype dt) {
  if (!weft_backend_is_cuda(be)) return WEFT_EINVAL;
  weft__cuda_ctx *ctx = CTX(be);
  if (dt != WEFT_F32 && dt != weft__cuda_compute_dtype(ctx))
    return weft__cuda_fail(ctx, WEFT_EINVAL,
                           "16-bit activations must be of the compute dtype "
                           "(FP16 or BF16 precision)");
  ctx->act = dt;
  return 0;
}

int weft_cuda_set_act_auto(weft_backend *be) {
  if (!weft_backend_is_cuda(be)) return WEFT_EINVAL;
  weft__cuda_ctx *ctx = CTX(be);
  const char *env = getenv("WEFT_CUDA_ACT");
  bool f32 = false;
  if (env && *env) {
    if (!strcmp(env, "fp32"))
      f32 = true;
    else if (strcmp(env, "16") != 0)
      return weft__cuda_fail(ctx, WEFT_EINVAL,
                             "environment variable WEFT_CUDA_ACT=\"%.64s\": "
                             "expected fp32 or 16",
                             env);
  }
  return weft_cuda_set_act_dtype(be, f32 ? WEFT_F32
                                         : weft__cuda_compute_dtype(ctx));
}

/* ---- vtable: graphs (record.h's replays) ---------------------------------
 * Captured on the backend's stream in thread-local mode: a call that could
 * wait (a cudaMalloc on a cache miss, a synchronize) fails the capture
 * instead of running.  The op scratch's generation is kept with each graph:
 * a graph whose scratch was remade would write freed memory. */

typedef struct cuda_graph {
  cudaGraphExec_t exec;
  uint64_t scratch_gen;
} cuda_graph;

static int be_graph_begin(weft_backend *be) {
  weft__cuda_ctx *ctx = CTX(be);
  ENTER(ctx);
  return weft__cuda_check(
      ctx,
      cudaStreamBeginCapture(ctx->stream, cudaStreamCaptureModeThreadLocal),
      "cudaStreamBeginCapture");
}

static int be_graph_end(weft_backend *be, void **graph) {
  weft__cuda_ctx *ctx = CTX(be);
  *graph = NULL;
  ENTER(ctx);
  cudaGraph_t g = NULL;
  int rc = weft__cuda_check(ctx, cudaStreamEndCapture(ctx->stream, &g),
                            "cudaStreamEndCapture");
  cuda_graph *cg = rc ? NULL : malloc(sizeof *cg);
  if (!rc && !cg) rc = WEFT_ENOMEM;
  static int log = -1;
  if (!rc && weft__cuda_env_int("WEFT_CUDA_GRAPH_LOG", &log)) {
    /* what a launch replaces: its nodes, the kernels among them */
    size_t n = 0, kernels = 0;
    cudaGraphGetNodes(g, NULL, &n);
    cudaGraphNode_t *nodes = n ? malloc(n * sizeof *nodes) : NULL;
    if (nodes && cudaGraphGetNodes(g, nodes, &n) == cudaSuccess)
      for (size_t i = 0; i < n; i++) {
        enum cudaGraphNodeType t;
        if (cudaGraphNodeGetType(nodes[i], &t) == cudaSuccess &&
            t == cudaGraphNodeTypeKernel)
          kernels++;
      }
    free(nodes);
    fprintf(stderr, "weft cuda: graph of %zu nodes, %zu kernels\n", n, kernels);
  }
  if (!rc)
    rc = weft__cuda_check(ctx, cudaGraphInstantiate(&cg->exec, g, 0),
                          "cudaGraphInstantiate");
  if (g) cudaGraphDestroy(g);
  if (rc) {
    cudaGetLastError(); /* a failed capture's error is not the next op's */
    free(cg);
    return rc;
  }
  cg->scratch_gen = ctx->scratch_gen;
  *graph = cg;
  return 0;
}

static int be_graph_launch(weft_backend *be, void *graph) {
  weft__cuda_ctx *ctx = CTX(be);
  cuda_graph *cg = graph;
  if (!cg) return WEFT_EINVAL;
  if (cg->scratch_gen != ctx->scratch_gen)
    return weft__cuda_fail(ctx, WEFT_EINVAL,
                           "a graph captured before the op scratch was remade");
  ENTER(ctx);
  return weft__cuda_check(ctx, cudaGraphLaunch(cg->exec, ctx->stream),
                          "cudaGraphLaunch");
}

static void be_graph_free(weft_backend *be, void *graph) {
  weft__cuda_ctx *ctx = CTX(be);
  cuda_graph *cg = graph;
  if (!cg) return;
  if (enter(ctx) == 0) {
    cudaStreamSynchronize(ctx->stream);
    cudaGraphExecDestroy(cg->exec);
  }
  free(cg);
}

static const weft_backend_iface cuda_iface = {
    .struct_size = sizeof(weft_backend_iface),
    .name = "cuda",
    .device_kind = WEFT_DEVICE_KIND_CUDA,
    .free = be_free,
    .set_threads = NULL,
    .synchronize = be_synchronize,
    .buffer_alloc = be_alloc,
    .buffer_free = be_buf_free,
    .buffer_copy = be_copy,
    .gemm = be_gemm,
    .linear = be_linear,
    .conv2d = be_conv2d,
    .conv2d_scratch_bytes = be_conv2d_scratch,
    .attention = be_attention,
    .attention_scratch_bytes = be_attention_scratch,
    .group_norm = be_group_norm,
    .layer_norm = be_layer_norm,
    .softmax = be_softmax,
    .act = be_act,
    .gated_act = be_gated_act,
    .binary = be_binary,
    .scale_add = be_scale_add,
    .upsample_nearest2x = be_upsample,
    .concat = be_concat,
    .timestep_embedding = be_timestep,
    .convert = be_convert,
    .act_dtype = be_act_dtype,
    .group_norm_cl = be_group_norm_cl,
    .upsample_nearest2x_cl = be_upsample_cl,
    .graph_begin = be_graph_begin,
    .graph_end = be_graph_end,
    .graph_launch = be_graph_launch,
    .graph_free = be_graph_free,
    .linear_group = be_linear_group,
};
