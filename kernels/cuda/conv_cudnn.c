/* conv_cudnn.c - conv2d through cuDNN's convolution API (NCHW, fp32 or
 * 16-bit), when meson found cuDNN (WEFT_HAVE_CUDNN); stubs otherwise, so
 * conv_cuda.c falls back to im2col.
 *
 * This is cuDNN 9's legacy convolution API (cudnnConvolutionForward), still
 * shipped and simplest to drive from C.  Choices: the first deterministic
 * algorithm of cuDNN's heuristic order, so that a run repeats bit for bit;
 * padding symmetric (cuDNN has one pad per axis; the caller sends the VAE's
 * asymmetric pads to im2col).
 *
 * FP32 precision: x, w, y fp32 as they are (batch strides included), FMA
 * math unless TF32 is allowed (cuDNN would otherwise use TF32 for fp32 on
 * Ampere and later).
 *
 * FP16/BF16 precision: the legacy API wants x, w and y of one type, so x
 * is rounded into a dense 16-bit copy, the weight is used as stored when
 * it is registered in the compute type (else rounded into scratch), and y
 * comes out in 16 bits: cuDNN's PSEUDO_HALF_CONFIG / PSEUDO_BFLOAT16_CONFIG
 * (16-bit tensors, fp32 compute type, tensor-op math), NCHW (cuDNN
 * transposes to its tensor-core layout inside, in its workspace).  One
 * kernel then widens y into the fp32 output and adds the bias, so the
 * output is rounded to 16 bits once, before the bias, as a torch fp16
 * convolution's is.  Only the implicit-GEMM algorithms are taken there:
 * their products of 16-bit values are exact in fp32, so the result differs
 * from an fp32 sum of the rounded inputs by summation order and that one
 * output rounding (tests/kernels_cuda states the tolerance); Winograd's
 * and FFT's transforms would round again on the way.  Channels must be
 * multiples of 8 (the tensor-core kernels' vector width; conv_in's 4 and
 * conv_out's 3 stay on im2col).  Scratch: a 128-channel 512x512 VAE map,
 * whose 604 MB im2col in 16 bits goes in 64 MiB blocks of a few hundred
 * columns, needs here the 16-bit x and y (64 MiB each) and the workspace. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#if WEFT_HAVE_CUDNN

#include <cudnn.h>

#define H(ctx) ((cudnnHandle_t)(ctx)->cudnn)

/* ---- the algorithm cache ----
 * cudnnGetConvolutionForwardAlgorithm_v7 costs tens of microseconds of host
 * time, and a UNet step makes about 70 convolutions of a dozen shapes (and
 * asks each one's scratch first): the choice is kept per shape.  The
 * heuristic answers the same for the same descriptors, so a cached choice
 * is the one a fresh query would make.  A full cache starts over. */
#define PLAN_KEY 15
#define PLAN_SLOTS 128

typedef struct plan_entry {
  int64_t key[PLAN_KEY];
  int algo; /* -1: no algorithm suits (the caller goes to im2col) */
  int math;
  size_t ws;
} plan_entry;

typedef struct plan_cache {
  pthread_mutex_t mu;
  int n;
  plan_entry e[PLAN_SLOTS];
} plan_cache;

static void plan_key(const weft__cuda_ctx *ctx, const weft_conv2d_args *a,
                     weft_dtype dt, int64_t xs, int64_t ys, int64_t *k) {
  const int64_t v[PLAN_KEY] = {
      dt,          ctx->tf32,  a->batch,    a->c_in, a->h_in,
      a->w_in,     a->c_out,   a->k_h,      a->k_w,  a->stride_h,
      a->stride_w, a->pad_top, a->pad_left, xs,      ys};
  memcpy(k, v, sizeof v);
}

static const plan_entry *plan_find(plan_cache *c, const int64_t *key,
                                   plan_entry *out) {
  const plan_entry *hit = NULL;
  pthread_mutex_lock(&c->mu);
  for (int i = 0; i < c->n && !hit; i++)
    if (!memcmp(c->e[i].key, key, sizeof c->e[i].key)) {
      *out = c->e[i];
      hit = out;
    }
  pthread_mutex_unlock(&c->mu);
  return hit;
}

static void plan_put(plan_cache *c, const plan_entry *p) {
  pthread_mutex_lock(&c->mu);
  if (c->n == PLAN_SLOTS) c->n = 0;
  c->e[c->n++] = *p;
  pthread_mutex_unlock(&c->mu);
}

int weft__cudnn_init(weft__cuda_ctx *ctx, char *err, size_t err_size) {
  plan_cache *c = calloc(1, sizeof *c);
  if (!c || pthread_mutex_init(&c->mu, NULL) != 0) {
    free(c);
    snprintf(err, err_size, "out of memory");
    return WEFT_ENOMEM;
  }
  cudnnHandle_t h;
  cudnnStatus_t st = cudnnCreate(&h);
  if (st != CUDNN_STATUS_SUCCESS) {
    snprintf(err, err_size, "cudnnCreate: %s", cudnnGetErrorString(st));
    pthread_mutex_destroy(&c->mu);
    free(c);
    return WEFT_EDEVICE;
  }
  if ((st = cudnnSetStream(h, ctx->stream)) != CUDNN_STATUS_SUCCESS) {
    snprintf(err, err_size, "cudnnSetStream: %s", cudnnGetErrorString(st));
    cudnnDestroy(h);
    pthread_mutex_destroy(&c->mu);
    free(c);
    return WEFT_EDEVICE;
  }
  ctx->cudnn = h;
  ctx->cudnn_plans = c;
  return 0;
}

void weft__cudnn_destroy(weft__cuda_ctx *ctx) {
  weft__cudnn_join(ctx);
  if (ctx->cudnn) cudnnDestroy(H(ctx));
  ctx->cudnn = NULL;
  plan_cache *c = ctx->cudnn_plans;
  if (c) {
    pthread_mutex_destroy(&c->mu);
    free(c);
  }
  ctx->cudnn_plans = NULL;
}

static bool fits_int(int64_t v) {
  return v >= 0 && v <= INT32_MAX;
}

static bool out_size(const weft_conv2d_args *a, int64_t *h_out,
                     int64_t *w_out) {
  *h_out = weft_conv2d_out_size(a->h_in, a->k_h, a->stride_h, a->pad_top,
                                a->pad_bottom);
  *w_out = weft_conv2d_out_size(a->w_in, a->k_w, a->stride_w, a->pad_left,
                                a->pad_right);
  return *h_out > 0 && *w_out > 0;
}

bool weft__cudnn_conv_supported(const weft__cuda_ctx *ctx,
                                const weft_conv2d_args *a) {
  (void)ctx;
  int64_t xs = a->x_bstride ? a->x_bstride : a->c_in * a->h_in * a->w_in;
  int64_t h_out = weft_conv2d_out_size(a->h_in, a->k_h, a->stride_h, a->pad_top,
                                       a->pad_bottom);
  int64_t w_out = weft_conv2d_out_size(a->w_in, a->k_w, a->stride_w,
                                       a->pad_left, a->pad_right);
  int64_t ys = a->y_bstride ? a->y_bstride : a->c_out * h_out * w_out;
  return a->pad_top == a->pad_bottom && a->pad_left == a->pad_right &&
         fits_int(a->batch) && fits_int(a->c_in) && fits_int(a->h_in) &&
         fits_int(a->w_in) && fits_int(a->c_out) && fits_int(xs) &&
         fits_int(ys) && fits_int(a->c_in * a->h_in * a->w_in) &&
         fits_int(a->pad_top) && fits_int(a->pad_left);
}

bool weft__cudnn_conv16_supported(const weft__cuda_ctx *ctx,
                                  const weft_conv2d_args *a) {
  int64_t h_out, w_out;
  if (a->c_in % 8 != 0 || a->c_out % 8 != 0 || !out_size(a, &h_out, &w_out) ||
      !weft__cudnn_conv_supported(ctx, a))
    return false;
  const int64_t batch = a->batch > 0 ? a->batch : 1;
  const int64_t nx = a->c_in * a->h_in * a->w_in;
  const int64_t ny = a->c_out * h_out * w_out;
  /* the dense copies' strides, and their sizes for good measure */
  return fits_int(ny) && nx <= INT32_MAX / batch && ny <= INT32_MAX / batch;
}

typedef struct descs {
  cudnnTensorDescriptor_t x, y;
  cudnnFilterDescriptor_t w;
  cudnnConvolutionDescriptor_t conv;
  cudnnConvolutionFwdAlgo_t algo;
  size_t ws;
} descs;

static void descs_free(descs *d) {
  if (d->x) cudnnDestroyTensorDescriptor(d->x);
  if (d->y) cudnnDestroyTensorDescriptor(d->y);
  if (d->w) cudnnDestroyFilterDescriptor(d->w);
  if (d->conv) cudnnDestroyConvolutionDescriptor(d->conv);
}

/* A status of cuDNN's NOT_SUPPORTED family (this configuration, or this
 * GPU, has no kernel) is WEFT_EUNSUPPORTED, which sends the convolution to
 * im2col; any other failure is WEFT_EDEVICE. */
static int status_code(cudnnStatus_t st) {
  return CUDNN_STATUS_CATEGORY(st) == CUDNN_STATUS_NOT_SUPPORTED
             ? WEFT_EUNSUPPORTED
             : WEFT_EDEVICE;
}

#define CK(call)                                                               \
  do {                                                                         \
    cudnnStatus_t st_ = (call);                                                \
    if (st_ != CUDNN_STATUS_SUCCESS) {                                         \
      descs_free(d);                                                           \
      return weft__cuda_fail(ctx, status_code(st_), "%s: %s", #call,           \
                             cudnnGetErrorString(st_));                        \
    }                                                                          \
  } while (0)

/* The algorithms whose products are exact (see the head comment). */
static bool gemm_family(cudnnConvolutionFwdAlgo_t algo) {
  return algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM ||
         algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM ||
         algo == CUDNN_CONVOLUTION_FWD_ALGO_GEMM;
}

/* WEFT_CUDA_CONV_LOG=1: each new plan (shape, the heuristic's candidates
 * with their workspace, the one taken) on stderr; =2: with each
 * candidate's time as cudnnFindConvolutionForwardAlgorithm measures it (it
 * synchronizes and allocates on its own: a diagnosis, not a run). */
static int conv_log_level(void) {
  static int level = -1;
  int l = __atomic_load_n(&level, __ATOMIC_RELAXED);
  if (l < 0) {
    const char *e = getenv("WEFT_CUDA_CONV_LOG");
    l = e && *e ? atoi(e) : 0;
    __atomic_store_n(&level, l, __ATOMIC_RELAXED);
  }
  return l;
}

static void log_plan(weft__cuda_ctx *ctx, const weft_conv2d_args *a,
                     weft_dtype dt, const descs *d,
                     const cudnnConvolutionFwdAlgoPerf_t *perf, int got,
                     int pick) {
  fprintf(stderr,
          "weft cuda: conv %lldx%lldx%lldx%lld -> %lld %lldx%lld/%lld [%s]: ",
          (long long)a->batch, (long long)a->c_in, (long long)a->h_in,
          (long long)a->w_in, (long long)a->c_out, (long long)a->k_h,
          (long long)a->k_w, (long long)a->stride_h,
          dt == WEFT_F32 ? "fp32" : dt == WEFT_F16 ? "fp16" : "bf16");
  if (pick >= 0)
    fprintf(stderr, "algo %d (math %d), workspace %.1f MiB;",
            (int)perf[pick].algo, (int)perf[pick].mathType,
            (double)perf[pick].memory / 1048576.0);
  else
    fprintf(stderr, "no algorithm;");
  for (int i = 0; i < got; i++)
    fprintf(stderr, " [%d: algo %d math %d ws %.1f MiB %s%s]", i,
            (int)perf[i].algo, (int)perf[i].mathType,
            (double)perf[i].memory / 1048576.0,
            perf[i].status == CUDNN_STATUS_SUCCESS ? "ok" : "no",
            perf[i].determinism == CUDNN_DETERMINISTIC ? "" : " nondet");
  if (conv_log_level() >= 2) {
    cudnnConvolutionFwdAlgoPerf_t m[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int n = 0;
    if (cudnnFindConvolutionForwardAlgorithm(
            H(ctx), d->x, d->w, d->conv, d->y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
            &n, m) == CUDNN_STATUS_SUCCESS)
      for (int i = 0; i < n; i++)
        if (m[i].status == CUDNN_STATUS_SUCCESS)
          fprintf(stderr, " {measured algo %d math %d: %.1f us, ws %.1f MiB%s}",
                  (int)m[i].algo, (int)m[i].mathType, 1000.0 * m[i].time,
                  (double)m[i].memory / 1048576.0,
                  m[i].determinism == CUDNN_DETERMINISTIC ? "" : " nondet");
  }
  fputc('\n', stderr);
}

/* Descriptors per call (cheap host objects) rather than cached in the
 * context, so concurrent callers of one backend never share them.  dt:
 * WEFT_F32 (x and y as the caller lays them out) or WEFT_F16 / WEFT_BF16
 * (x and y the dense 16-bit copies). */
static int plan(weft__cuda_ctx *ctx, const weft_conv2d_args *a, weft_dtype dt,
                descs *d) {
  memset(d, 0, sizeof *d);
  const bool f32 = dt == WEFT_F32;
  const cudnnDataType_t cdt = f32              ? CUDNN_DATA_FLOAT
                              : dt == WEFT_F16 ? CUDNN_DATA_HALF
                                               : CUDNN_DATA_BFLOAT16;
  int64_t h_out, w_out;
  out_size(a, &h_out, &w_out);
  const int64_t nx = a->c_in * a->h_in * a->w_in, ny = a->c_out * h_out * w_out;
  int64_t xs = f32 && a->x_bstride ? a->x_bstride : nx;
  int64_t ys = f32 && a->y_bstride ? a->y_bstride : ny;
  int batch = a->batch > 0 ? (int)a->batch : 1;
  CK(cudnnCreateTensorDescriptor(&d->x));
  CK(cudnnCreateTensorDescriptor(&d->y));
  CK(cudnnCreateFilterDescriptor(&d->w));
  CK(cudnnCreateConvolutionDescriptor(&d->conv));
  CK(cudnnSetTensor4dDescriptorEx(d->x, cdt, batch, (int)a->c_in, (int)a->h_in,
                                  (int)a->w_in, (int)xs,
                                  (int)(a->h_in * a->w_in), (int)a->w_in, 1));
  CK(cudnnSetTensor4dDescriptorEx(d->y, cdt, batch, (int)a->c_out, (int)h_out,
                                  (int)w_out, (int)ys, (int)(h_out * w_out),
                                  (int)w_out, 1));
  CK(cudnnSetFilter4dDescriptor(d->w, cdt, CUDNN_TENSOR_NCHW, (int)a->c_out,
                                (int)a->c_in, (int)a->k_h, (int)a->k_w));
  /* fp32 compute type in both: for 16-bit tensors that is cuDNN's
   * PSEUDO_HALF_CONFIG / PSEUDO_BFLOAT16_CONFIG (fp32 accumulation) */
  CK(cudnnSetConvolution2dDescriptor(
      d->conv, (int)a->pad_top, (int)a->pad_left, (int)a->stride_h,
      (int)a->stride_w, 1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  CK(cudnnSetConvolutionMathType(d->conv, !f32        ? CUDNN_TENSOR_OP_MATH
                                          : ctx->tf32 ? CUDNN_DEFAULT_MATH
                                                      : CUDNN_FMA_MATH));
  plan_entry pe;
  plan_key(ctx, a, dt, xs, ys, pe.key);
  if (!plan_find(ctx->cudnn_plans, pe.key, &pe)) {
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int got = 0;
    CK(cudnnGetConvolutionForwardAlgorithm_v7(H(ctx), d->x, d->w, d->conv, d->y,
                                              CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
                                              &got, perf));
    int pick = -1;
    for (int i = 0; i < got && pick < 0; i++)
      if (perf[i].status == CUDNN_STATUS_SUCCESS &&
          perf[i].determinism == CUDNN_DETERMINISTIC &&
          (f32 ? ctx->tf32 || perf[i].mathType == CUDNN_FMA_MATH
               : gemm_family(perf[i].algo) &&
                     perf[i].mathType != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION))
        pick = i;
    if (conv_log_level()) log_plan(ctx, a, dt, d, perf, got, pick);
    pe.algo = pick < 0 ? -1 : (int)perf[pick].algo;
    pe.math = pick < 0 ? 0 : (int)perf[pick].mathType;
    pe.ws = 0;
    if (pick >= 0) {
      /* 16-bit: run in the math mode the heuristic ranked the algorithm
       * with, as cuDNN asks of a caller that picks from its list */
      if (!f32) CK(cudnnSetConvolutionMathType(d->conv, perf[pick].mathType));
      CK(cudnnGetConvolutionForwardWorkspaceSize(
          H(ctx), d->x, d->w, d->conv, d->y, perf[pick].algo, &pe.ws));
    }
    plan_put(ctx->cudnn_plans, &pe);
  } else if (pe.algo >= 0 && !f32) {
    CK(cudnnSetConvolutionMathType(d->conv, (cudnnMathType_t)pe.math));
  }
  if (pe.algo < 0) { /* the caller falls back to im2col */
    descs_free(d);
    return weft__cuda_fail(ctx, WEFT_EUNSUPPORTED,
                           "cuDNN offers no deterministic %s algorithm for "
                           "this convolution",
                           f32 ? "FMA fp32" : "implicit-GEMM 16-bit");
  }
  d->algo = (cudnnConvolutionFwdAlgo_t)pe.algo;
  d->ws = pe.ws;
  return 0;
}

int weft__cudnn_conv_plan(weft__cuda_ctx *ctx, const weft_conv2d_args *a,
                          size_t *workspace) {
  descs d;
  int rc = plan(ctx, a, WEFT_F32, &d);
  if (rc) return rc;
  descs_free(&d);
  *workspace = d.ws;
  return 0;
}

int weft__cudnn_conv(weft__cuda_ctx *ctx, const weft_conv2d_args *a) {
  descs dd, *d = &dd;
  int rc = plan(ctx, a, WEFT_F32, d);
  if (rc) return rc;
  void *ws = NULL;
  if (d->ws) {
    if (a->scratch && a->scratch_bytes >= d->ws) {
      ws = a->scratch;
    } else if (!(ws = weft__cuda_alloc(ctx, d->ws))) {
      descs_free(d);
      return WEFT_ENOMEM;
    }
  }
  const float one = 1.0f, zero = 0.0f;
  cudnnStatus_t st =
      cudnnConvolutionForward(H(ctx), &one, d->x, a->x, d->w, a->weight,
                              d->conv, d->algo, ws, d->ws, &zero, d->y, a->y);
  if (ws && ws != a->scratch) weft__cuda_free(ctx, ws);
  descs_free(d);
  if (st != CUDNN_STATUS_SUCCESS)
    return weft__cuda_fail(ctx, WEFT_EDEVICE, "cudnnConvolutionForward: %s",
                           cudnnGetErrorString(st));
  return 0;
}

/* ---- FP16/BF16 precision ---- */

static size_t align256(size_t n) {
  return (n + 255) & ~(size_t)255;
}

/* Where the parts sit in the scratch (byte offsets from its start). */
typedef struct layout16 {
  size_t x_off, y_off, w_off, ws_off, total; /* total: a power of two */
  bool w_own;        /* the weight is rounded into the scratch at w_off */
  bool x_own, y_own; /* x rounded into / y made in the scratch (else the
                      * 16-bit activations are used where they are) */
} layout16;

static int plan16(weft__cuda_ctx *ctx, const weft_conv2d_args *a, descs *d,
                  layout16 *l) {
  const weft_dtype want = weft__cuda_compute_dtype(ctx);
  int rc = plan(ctx, a, want, d);
  if (rc) return rc;
  int64_t h_out, w_out;
  out_size(a, &h_out, &w_out);
  const size_t batch = a->batch > 0 ? (size_t)a->batch : 1;
  const size_t nx = batch * (size_t)(a->c_in * a->h_in * a->w_in);
  const size_t ny = batch * (size_t)(a->c_out * h_out * w_out);
  const size_t nw = (size_t)(a->c_out * a->c_in * a->k_h * a->k_w);
  /* as stored only 16-byte aligned: cuDNN's tensor-core kernels load 16
   * bytes at a time, and its heuristic (which sees no pointers) cannot
   * know of a weight at an odd element offset */
  l->w_own = !(a->weight && weft__cuda_weight_dtype(ctx, a->weight) == want &&
               (uintptr_t)a->weight % 16 == 0);
  /* 16-bit activations of packed images serve as they are */
  const bool act16 = ctx->act == want;
  l->x_own = !(act16 && (!a->x_bstride || a->x_bstride * batch == nx));
  l->y_own = !(act16 && (!a->y_bstride || a->y_bstride * batch == ny));
  l->x_off = 0;
  l->y_off = l->x_own ? align256(nx * 2) : 0;
  l->w_off = l->y_off + (l->y_own ? align256(ny * 2) : 0);
  l->ws_off = l->w_off + (l->w_own ? align256(nw * 2) : 0);
  /* a power of two (weft__cuda_pow2), at least 1 MiB */
  const size_t total = l->ws_off + align256(d->ws), mib = (size_t)1 << 20;
  l->total = weft__cuda_pow2(total > mib ? total : mib);
  if (ctx->scratch_limit && l->total > ctx->scratch_limit / 4) {
    descs_free(d);
    return WEFT_EUNSUPPORTED; /* im2col's column blocks instead */
  }
  return 0;
}

int weft__cudnn_conv16_plan(weft__cuda_ctx *ctx, const weft_conv2d_args *a,
                            size_t *scratch) {
  descs d;
  layout16 l;
  int rc = plan16(ctx, a, &d, &l);
  if (rc) return rc;
  descs_free(&d);
  *scratch = l.total;
  return 0;
}

int weft__cudnn_conv16(weft__cuda_ctx *ctx, const weft_conv2d_args *a) {
  const weft_dtype want = weft__cuda_compute_dtype(ctx);
  descs dd, *d = &dd;
  layout16 l;
  int rc = plan16(ctx, a, d, &l);
  if (rc) return rc;
  /* cuDNN's 16-bit kernels load 16 bytes at a time */
  if ((!l.x_own && (uintptr_t)a->x % 16) ||
      (!l.y_own && (uintptr_t)a->y % 16)) {
    descs_free(d);
    return WEFT_EUNSUPPORTED;
  }
  unsigned char *base = a->scratch;
  if (!base || a->scratch_bytes < l.total) {
    if (!(base = weft__cuda_alloc(ctx, l.total))) {
      descs_free(d);
      return WEFT_ENOMEM;
    }
  }
  int64_t h_out, w_out;
  out_size(a, &h_out, &w_out);
  const int64_t nx = a->c_in * a->h_in * a->w_in, n = h_out * w_out;
  const int64_t xs = a->x_bstride ? a->x_bstride : nx;
  const int64_t ys = a->y_bstride ? a->y_bstride : a->c_out * n;
  const void *x16 = l.x_own ? (const void *)(base + l.x_off) : a->x;
  void *y16 = l.y_own ? (void *)(base + l.y_off) : (void *)a->y;
  void *ws = d->ws ? base + l.ws_off : NULL;
  const void *w16 = a->weight;
  /* the images: flat runs of nx at stride xs, made dense */
  if (l.x_own)
    rc = weft__cuda_check(ctx,
                          weft__cu_pack(ctx->stream, a->x, ctx->act,
                                        base + l.x_off, want, a->batch, 1, xs,
                                        0, 1, nx, nx),
                          "conv2d: rounding x to 16 bits");
  if (rc == 0 && l.w_own) {
    w16 = base + l.w_off;
    rc = weft__cuda_conv_weight16(ctx, a, base + l.w_off);
  }
  if (rc == 0) {
    const float one = 1.0f, zero = 0.0f; /* fp32 compute: float scalars */
    cudnnStatus_t st =
        cudnnConvolutionForward(H(ctx), &one, d->x, x16, d->w, w16, d->conv,
                                d->algo, ws, d->ws, &zero, d->y, y16);
    if (st != CUDNN_STATUS_SUCCESS)
      rc = weft__cuda_fail(ctx, status_code(st),
                           "cudnnConvolutionForward (16-bit): %s",
                           cudnnGetErrorString(st));
  }
  if (rc == 0 && ctx->act == WEFT_F32)
    rc =
        weft__cuda_check(ctx,
                         weft__cu_widen_planes(ctx->stream, y16, want, a->y, ys,
                                               a->bias, a->batch, a->c_out, n),
                         "conv2d: widening y");
  /* 16-bit activations: the bias added in place (y rounded twice, as a
   * torch fp16 convolution's bias add rounds it), then y moved where its
   * images go when they are not packed */
  if (rc == 0 && ctx->act != WEFT_F32 && a->bias)
    rc = weft__cuda_check(ctx,
                          weft__cu_bias_planes(ctx->stream, want, y16, a->bias,
                                               a->batch, a->c_out * n, a->c_out,
                                               n, n),
                          "conv2d bias");
  if (rc == 0 && ctx->act != WEFT_F32 && l.y_own)
    rc = weft__cuda_check(
        ctx,
        cudaMemcpy2DAsync(a->y, (size_t)ys * 2, y16, (size_t)(a->c_out * n) * 2,
                          (size_t)(a->c_out * n) * 2, (size_t)a->batch,
                          cudaMemcpyDeviceToDevice, ctx->stream),
        "conv2d: placing y");
  /* back to the cache; later work on this stream is ordered after ours */
  if (base != a->scratch) weft__cuda_free(ctx, base);
  descs_free(d);
  return rc;
}

#else /* no cuDNN */

int weft__cudnn_init(weft__cuda_ctx *ctx, char *err, size_t err_size) {
  (void)ctx;
  snprintf(err, err_size, "weft was built without cuDNN");
  return WEFT_EUNSUPPORTED;
}

void weft__cudnn_destroy(weft__cuda_ctx *ctx) {
  weft__cudnn_join(ctx);
}

bool weft__cudnn_conv_supported(const weft__cuda_ctx *ctx,
                                const weft_conv2d_args *a) {
  (void)ctx;
  (void)a;
  return false;
}

int weft__cudnn_conv_plan(weft__cuda_ctx *ctx, const weft_conv2d_args *a,
                          size_t *workspace) {
  (void)ctx;
  (void)a;
  *workspace = 0;
  return WEFT_EUNSUPPORTED;
}

int weft__cudnn_conv(weft__cuda_ctx *ctx, const weft_conv2d_args *a) {
  (void)a;
  return weft__cuda_fail(ctx, WEFT_EUNSUPPORTED,
                         "weft was built without cuDNN");
}

bool weft__cudnn_conv16_supported(const weft__cuda_ctx *ctx,
                                  const weft_conv2d_args *a) {
  (void)ctx;
  (void)a;
  return false;
}

int weft__cudnn_conv16_plan(weft__cuda_ctx *ctx, const weft_conv2d_args *a,
                            size_t *scratch) {
  (void)ctx;
  (void)a;
  *scratch = 0;
  return WEFT_EUNSUPPORTED;
}

int weft__cudnn_conv16(weft__cuda_ctx *ctx, const weft_conv2d_args *a) {
  (void)a;
  return weft__cuda_fail(ctx, WEFT_EUNSUPPORTED,
                         "weft was built without cuDNN");
}

#endif

/* weft_cuda_start_cudnn's thread: the handle made beside the caller's
 * work (cudnnCreate loads cuDNN's libraries, a second or so); nothing but
 * ctx->cudnn and ctx->cudnn_plans is written, and the caller reads them
 * only after joining. */
static void *cudnn_start_main(void *arg) {
  weft__cuda_ctx *ctx = arg;
  char err[256];
  if (cudaSetDevice(ctx->device) == cudaSuccess)
    weft__cudnn_init(ctx, err, sizeof err); /* none: im2col instead */
  else
    cudaGetLastError();
  return NULL;
}

void weft__cudnn_start(weft__cuda_ctx *ctx) {
  if (!WEFT_HAVE_CUDNN || ctx->cudnn || ctx->cudnn_tried || ctx->cudnn_starting)
    return;
  /* a thread that cannot start leaves it to the first convolution */
  ctx->cudnn_starting =
      pthread_create(&ctx->cudnn_thread, NULL, cudnn_start_main, ctx) == 0;
}

void weft__cudnn_join(weft__cuda_ctx *ctx) {
  if (!ctx->cudnn_starting) return;
  pthread_join(ctx->cudnn_thread, NULL);
  ctx->cudnn_starting = false;
  ctx->cudnn_tried = true;
}

bool weft__cudnn_ensure(weft__cuda_ctx *ctx) {
  weft__cudnn_join(ctx);
  if (!ctx->cudnn && !ctx->cudnn_tried) {
    char err[256];
    ctx->cudnn_tried = true;
    weft__cudnn_init(ctx, err, sizeof err); /* none: im2col instead */
  }
  return ctx->cudnn != NULL;
}
