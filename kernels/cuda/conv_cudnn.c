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
#define PLAN_KEY 18
#define PLAN_SLOTS 128

typedef struct plan_entry {
  int64_t key[PLAN_KEY];
  int algo; /* -1: no algorithm suits (the caller goes to im2col) */
  int math;
  size_t ws;
} plan_entry;

/* A channels-last convolution's execution plan from cuDNN's graph API,
 * with the descriptors it was built from (kept alive with it). */
enum { GPLAN_DESCS = 16, GPLAN_SLOTS = 256 };
typedef struct gplan {
  int64_t key[PLAN_KEY];
  cudnnBackendDescriptor_t plan;
  cudnnBackendDescriptor_t keep[GPLAN_DESCS];
  int64_t ws;
  bool none; /* no deterministic engine: the legacy API's plan */
} gplan;

typedef struct plan_cache {
  pthread_mutex_t mu;
  int n;
  plan_entry e[PLAN_SLOTS];
  int ng; /* built once per shape, never evicted (a full cache builds
           * the plan per call) */
  gplan g[GPLAN_SLOTS];
} plan_cache;

static void gplan_free(gplan *g) {
  if (g->plan) cudnnBackendDestroyDescriptor(g->plan);
  for (int i = 0; i < GPLAN_DESCS; i++)
    if (g->keep[i]) cudnnBackendDestroyDescriptor(g->keep[i]);
  memset(g, 0, sizeof *g);
}

/* How x and y lie in memory: batch and channel-plane strides in elements
 * (a row band of a map is a strided view of it), or nhwc: x, y and the
 * weight channels last, packed (the strides unused). */
typedef struct view {
  int64_t xs, ys, xc, yc;
  int64_t nhwc;
} view;

static void plan_key(const weft__cuda_ctx *ctx, const weft_conv2d_args *a,
                     weft_dtype dt, const view *v, int64_t *k) {
  const int64_t e[PLAN_KEY] = {
      dt,          ctx->tf32, a->batch, a->c_in,     a->h_in,     a->w_in,
      a->c_out,    a->k_h,    a->k_w,   a->stride_h, a->stride_w, a->pad_top,
      a->pad_left, v->xs,     v->ys,    v->xc,       v->yc,       v->nhwc};
  memcpy(k, e, sizeof e);
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
  plan_cache *c = ctx->cudnn_plans;
  /* the graph API's plans before the handle they were built with */
  weft__cudnn_attn_free(ctx);
  for (int i = 0; c && i < c->ng; i++)
    gplan_free(&c->g[i]);
  if (ctx->cudnn) cudnnDestroy(H(ctx));
  ctx->cudnn = NULL;
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
  return weft__cuda_env_int("WEFT_CUDA_CONV_LOG", &level);
}

static void log_plan(weft__cuda_ctx *ctx, const weft_conv2d_args *a,
                     weft_dtype dt, bool nhwc, const descs *d,
                     const cudnnConvolutionFwdAlgoPerf_t *perf, int got,
                     int pick) {
  fprintf(stderr,
          "weft cuda: conv %lldx%lldx%lldx%lld -> %lld %lldx%lld/%lld [%s%s]: ",
          (long long)a->batch, (long long)a->c_in, (long long)a->h_in,
          (long long)a->w_in, (long long)a->c_out, (long long)a->k_h,
          (long long)a->k_w, (long long)a->stride_h,
          dt == WEFT_F32   ? "fp32"
          : dt == WEFT_F16 ? "fp16"
                           : "bf16",
          nhwc ? " nhwc" : "");
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
    if (cudnnFindConvolutionForwardAlgorithm(H(ctx), d->x, d->w, d->conv, d->y,
                                             CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
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
 * (x and y 16-bit: packed images, or the dense copies); vw, when not NULL,
 * the strides of a view (a row band). */
static int plan_view(weft__cuda_ctx *ctx, const weft_conv2d_args *a,
                     weft_dtype dt, const view *vw, descs *d) {
  memset(d, 0, sizeof *d);
  const bool f32 = dt == WEFT_F32;
  const cudnnDataType_t cdt = f32              ? CUDNN_DATA_FLOAT
                              : dt == WEFT_F16 ? CUDNN_DATA_HALF
                                               : CUDNN_DATA_BFLOAT16;
  int64_t h_out, w_out;
  out_size(a, &h_out, &w_out);
  const int64_t nx = a->c_in * a->h_in * a->w_in, ny = a->c_out * h_out * w_out;
  view v = {f32 && a->x_bstride ? a->x_bstride : nx,
            f32 && a->y_bstride ? a->y_bstride : ny, a->h_in * a->w_in,
            h_out * w_out, 0};
  if (vw) v = *vw;
  const int64_t xs = v.xs, ys = v.ys;
  int batch = a->batch > 0 ? (int)a->batch : 1;
  CK(cudnnCreateTensorDescriptor(&d->x));
  CK(cudnnCreateTensorDescriptor(&d->y));
  CK(cudnnCreateFilterDescriptor(&d->w));
  CK(cudnnCreateConvolutionDescriptor(&d->conv));
  if (v.nhwc) {
    CK(cudnnSetTensor4dDescriptor(d->x, CUDNN_TENSOR_NHWC, cdt, batch,
                                  (int)a->c_in, (int)a->h_in, (int)a->w_in));
    CK(cudnnSetTensor4dDescriptor(d->y, CUDNN_TENSOR_NHWC, cdt, batch,
                                  (int)a->c_out, (int)h_out, (int)w_out));
  } else {
    CK(cudnnSetTensor4dDescriptorEx(d->x, cdt, batch, (int)a->c_in,
                                    (int)a->h_in, (int)a->w_in, (int)xs,
                                    (int)v.xc, (int)a->w_in, 1));
    CK(cudnnSetTensor4dDescriptorEx(d->y, cdt, batch, (int)a->c_out, (int)h_out,
                                    (int)w_out, (int)ys, (int)v.yc, (int)w_out,
                                    1));
  }
  CK(cudnnSetFilter4dDescriptor(
      d->w, cdt, v.nhwc ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW, (int)a->c_out,
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
  plan_key(ctx, a, dt, &v, pe.key);
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
    if (conv_log_level()) log_plan(ctx, a, dt, v.nhwc, d, perf, got, pick);
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

static int plan(weft__cuda_ctx *ctx, const weft_conv2d_args *a, weft_dtype dt,
                descs *d) {
  return plan_view(ctx, a, dt, NULL, d);
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
    } else if (!(ws = weft__cuda_scratch(ctx, d->ws))) {
      descs_free(d);
      return WEFT_ENOMEM;
    }
  }
  const float one = 1.0f, zero = 0.0f;
  cudnnStatus_t st =
      cudnnConvolutionForward(H(ctx), &one, d->x, a->x, d->w, a->weight,
                              d->conv, d->algo, ws, d->ws, &zero, d->y, a->y);
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
  size_t x_off, y_off, w_off, ws_off, total;
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
  l->total = l->ws_off + align256(d->ws);
  if (ctx->scratch_limit && l->total > ctx->scratch_limit / 4) {
    descs_free(d);
    return WEFT_EUNSUPPORTED; /* im2col's column blocks instead */
  }
  return 0;
}

/* ---- row bands ----
 * cuDNN's implicit GEMM on NCHW tensors transposes x and y to its
 * tensor-core layout inside its workspace: 257 MiB for the VAE's
 * 256x512x512 3x3, which would lift a decode's device high-water by that
 * much.  Such a convolution (16-bit activations of packed images, whose
 * rows are strided views) runs in bands of output rows, each with its
 * input rows and a workspace that fits the backend's band bytes
 * (weft_cuda_set_conv_band_bytes; WEFT_CUDA_CONV_BAND_BYTES).  A
 * middle band reads its halo rows (no padding); an edge band keeps the
 * convolution's padding on its outer side, which pads its inner side
 * too: the rows that padding spoils lie in the next band inward, which
 * runs after it (top band, bottom band, then the middle ones top down)
 * and writes them again.  Every output is the same dot product as
 * unbanded; the algorithm's summation order may differ with the band's
 * size (tests/kernels_cuda compares within the 16-bit tolerance). */
typedef struct band {
  weft_conv2d_args a; /* x, y, h_in and the pads of the band */
  view v;
  int64_t x_row, y_row; /* its first input row and first output row */
} band;

/* Band i (of n, in run order) of a (pad p, stride s, kernel k, output
 * rows ho): false when the geometry does not allow n bands. */
static bool band_at(const weft_conv2d_args *a, int64_t ho, int64_t wo, int n,
                    int i, band *b) {
  const int64_t p = a->pad_top, s = a->stride_h, k = a->k_h, h = a->h_in;
  const int64_t g = (p + s - 1) / s; /* rows an edge pad spoils inward */
  /* run order: 0 the top band, 1 the bottom one, then the middle ones */
  const int j = i == 0 ? 0 : i == 1 ? n - 1 : i - 1;
  const int64_t o0 = ho * j / n, o1 = ho * (j + 1) / n;
  if (o1 - o0 <= g || a->pad_top != a->pad_bottom) return false;
  int64_t i0, i1, pad, y_row;
  if (j == 0) { /* padding above kept; spoils rows [o1, o1 + p / s) */
    i0 = 0, i1 = (o1 - 1) * s - p + k, pad = p, y_row = 0;
  } else if (j == n - 1) { /* padding below kept; spoils [o0 - g, o0) */
    i0 = (o0 - g) * s, i1 = h, pad = p, y_row = o0 - g;
  } else {
    i0 = o0 * s - p, i1 = (o1 - 1) * s - p + k, pad = 0, y_row = o0;
  }
  if (i0 < 0 || i1 > h || i1 - i0 + 2 * pad < k) return false;
  b->a = *a;
  b->a.h_in = i1 - i0;
  b->a.pad_top = b->a.pad_bottom = pad;
  b->v = (view){a->c_in * h * a->w_in, a->c_out * ho * wo, h * a->w_in, ho * wo,
                0};
  b->x_row = i0, b->y_row = y_row;
  return true;
}

/* How many bands a (16-bit activations of packed images, total scratch
 * unbanded) takes: 1 where it fits the band bytes (0: never banded) or
 * the geometry allows no bands. */
static int band_count(const weft__cuda_ctx *ctx, const weft_conv2d_args *a,
                      const layout16 *l) {
  const size_t cap = ctx->band_bytes;
  if (!cap || l->x_own || l->y_own || l->total <= cap) return 1;
  int64_t ho, wo;
  out_size(a, &ho, &wo);
  /* every band's x and y 16-byte aligned, as cuDNN's 16-bit kernels
   * load them */
  if (a->w_in % 8 || wo % 8) return 1;
  const size_t nb = (l->total + cap - 1) / cap;
  if (nb > (size_t)ho) return 1;
  int n = (int)nb;
  if (n < 3) n = 3;
  band b;
  for (int i = 0; i < n; i++)
    if (!band_at(a, ho, wo, n, i, &b)) return 1;
  return n;
}

/* Band i of n, ready to plan: x and y pointers into the caller's maps. */
static void band_args(const weft__cuda_ctx *ctx, const weft_conv2d_args *a,
                      int n, int i, band *b) {
  int64_t ho, wo;
  out_size(a, &ho, &wo);
  band_at(a, ho, wo, n, i, b);
  b->a.x = weft__cuda_act_at(ctx, a->x, b->x_row * a->w_in);
  b->a.y = weft__cuda_act_at(ctx, a->y, b->y_row * wo);
  b->a.x_bstride = b->a.y_bstride = 0;
}

/* The largest workspace of a's bands. */
static int bands_ws(weft__cuda_ctx *ctx, const weft_conv2d_args *a, int n,
                    size_t *ws) {
  const weft_dtype want = weft__cuda_compute_dtype(ctx);
  *ws = 0;
  for (int i = 0; i < n; i++) {
    band b;
    descs d;
    band_args(ctx, a, n, i, &b);
    int rc = plan_view(ctx, &b.a, want, &b.v, &d);
    if (rc) return rc;
    descs_free(&d);
    if (d.ws > *ws) *ws = d.ws;
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
  const int n = band_count(ctx, a, &l);
  size_t ws;
  if (n > 1 && !(rc = bands_ws(ctx, a, n, &ws)))
    *scratch = l.ws_off + align256(ws);
  return rc;
}

int weft__cudnn_conv16_bands(weft__cuda_ctx *ctx, const weft_conv2d_args *a) {
  descs d;
  layout16 l;
  if (plan16(ctx, a, &d, &l)) {
    ctx->err[0] = 0;
    return 1;
  }
  descs_free(&d);
  return band_count(ctx, a, &l);
}

/* y = conv(x, w16) over n row bands (no bias), each band's workspace the
 * backend's op scratch. */
static int conv16_bands(weft__cuda_ctx *ctx, const weft_conv2d_args *a,
                        const void *w16, int n) {
  const weft_dtype want = weft__cuda_compute_dtype(ctx);
  int rc = 0;
  for (int i = 0; i < n && !rc; i++) {
    band b;
    descs d;
    band_args(ctx, a, n, i, &b);
    if ((rc = plan_view(ctx, &b.a, want, &b.v, &d))) break;
    void *ws = d.ws ? weft__cuda_scratch(ctx, d.ws) : NULL;
    if (d.ws && !ws) {
      descs_free(&d);
      return WEFT_ENOMEM;
    }
    const float one = 1.0f, zero = 0.0f;
    cudnnStatus_t st =
        cudnnConvolutionForward(H(ctx), &one, d.x, b.a.x, d.w, w16, d.conv,
                                d.algo, ws, d.ws, &zero, d.y, b.a.y);
    if (st != CUDNN_STATUS_SUCCESS)
      rc = weft__cuda_fail(ctx, status_code(st),
                           "cudnnConvolutionForward (16-bit, band %d of %d): "
                           "%s",
                           i, n, cudnnGetErrorString(st));
    descs_free(&d);
  }
  return rc;
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
  /* banded: the bands' workspaces from the op scratch, a rounded weight
   * in a block of its own */
  const int bands = band_count(ctx, a, &l);
  const size_t need = bands > 1 ? l.ws_off : l.total;
  unsigned char *base = a->scratch, *own = NULL;
  if (need && (!base || a->scratch_bytes < need)) {
    base = bands > 1 ? (own = weft__cuda_alloc(ctx, need))
                     : weft__cuda_scratch(ctx, need);
    if (!base) {
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
  void *ws = d->ws && bands == 1 ? base + l.ws_off : NULL;
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
  if (rc == 0 && bands > 1) {
    rc = conv16_bands(ctx, a, w16, bands);
  } else if (rc == 0) {
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
  weft__cuda_free(ctx, own);
  descs_free(d);
  return rc;
}

/* ---- cuDNN's graph API (channels last) ----
 * The legacy API offers its handful of algorithms; on an H200 its NHWC
 * picks took 1.7 to 4 times as long on SD's 3x3 convolutions as what the
 * graph API's heuristics (mode A, as cudnn_frontend asks them) rank
 * first, moves included.  One convolution node, its engine configurations in
 * the heuristic's order, the first whose engine is deterministic and
 * keeps fp32 accumulation of exact products (no Winograd, FFT, reduced
 * precision reduction or down-converted inputs) and that finalizes.
 * WEFT_CUDA_CUDNN_GRAPH=0 keeps the legacy API (an A/B switch). */
static bool graph_wanted(void) {
  static int v = -1;
  return weft__cuda_env_on("WEFT_CUDA_CUDNN_GRAPH", &v);
}

/* WEFT_CUDA_CUDNN_HEUR=instant or b: that heuristic mode instead of A (a
 * diagnosis: which ranks the faster engine first) */
static cudnnBackendHeurMode_t heur_mode(void) {
  const char *e = getenv("WEFT_CUDA_CUDNN_HEUR");
  if (e && !strcmp(e, "instant")) return CUDNN_HEUR_MODE_INSTANT;
  if (e && !strcmp(e, "b")) return CUDNN_HEUR_MODE_B;
  return CUDNN_HEUR_MODE_A;
}

#define GK(call)                                                               \
  do {                                                                         \
    if ((st = (call)) != CUDNN_STATUS_SUCCESS) goto fail;                      \
  } while (0)

static cudnnStatus_t g_tensor(cudnnBackendDescriptor_t *t, int64_t uid,
                              cudnnDataType_t dt, const int64_t dims[4],
                              const int64_t strides[4]) {
  cudnnStatus_t st;
  const int64_t align = 16;
  GK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_TENSOR_DESCRIPTOR, t));
  GK(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_DATA_TYPE,
                              CUDNN_TYPE_DATA_TYPE, 1, &dt));
  GK(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_DIMENSIONS,
                              CUDNN_TYPE_INT64, 4, dims));
  GK(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64,
                              4, strides));
  GK(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64,
                              1, &uid));
  GK(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT,
                              CUDNN_TYPE_INT64, 1, &align));
  GK(cudnnBackendFinalize(*t));
fail:
  return st;
}

/* Whether an engine's numerical notes allow it (see above). */
static bool g_engine_ok(cudnnBackendDescriptor_t cfg) {
  cudnnBackendDescriptor_t eng = NULL;
  bool ok = false;
  int64_t n = 0;
  if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR, &eng) !=
      CUDNN_STATUS_SUCCESS)
    return false;
  if (cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE,
                               CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n,
                               &eng) == CUDNN_STATUS_SUCCESS &&
      n == 1) {
    cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
    int64_t nn = 0;
    if (cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE,
                                 CUDNN_TYPE_NUMERICAL_NOTE,
                                 CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &nn,
                                 notes) == CUDNN_STATUS_SUCCESS) {
      ok = true;
      for (int64_t i = 0; i < nn; i++)
        if (notes[i] != CUDNN_NUMERICAL_NOTE_TENSOR_CORE) ok = false;
    }
  }
  cudnnBackendDestroyDescriptor(eng);
  return ok;
}

/* ---- measured engine configurations ----
 * On SD's small maps the heuristic's first allowed configuration is not
 * the fastest: tools/gpu/conv_engines.sh timed every configuration of
 * cuDNN 9.19's heuristics on an H200 (fp16, the UNet at batch 2), and
 * engine 62 with other tiles and thread-block clusters took 0.5-0.9 of
 * the time on the 8x8 to 32x32 maps (1280x16x16: 33 against 59 us;
 * 2560x16x16: 56 against 112; 640x16x16: 20 against 32), where the first
 * one's tiles leave most SMs idle; shapes within 5% of it are left out.
 * Every one kept has only the tensor-core note and repeated its bits;
 * some give other bits than the heuristic's first (another summation
 * order), none differs from run to run.  A shape found here on a GPU of
 * the same kind (compute 9.0, 132 SMs) with cuDNN 9 runs that
 * configuration; anything else, or a configuration cuDNN refuses, takes
 * the heuristic's order.  WEFT_CUDA_CONV_TUNED=0 turns the table off (an
 * A/B switch). */
typedef struct tuned_conv {
  int64_t n, c, h, w, k; /* cuDNN's x (the padded map) and outputs */
  int64_t engine;
  int64_t tile, tilek, cga_m, cga_n, wspace; /* the knobs' values */
} tuned_conv;

static const tuned_conv tuned_h200[] = {
    {2, 1280, 18, 18, 1280, 62, 7, 1, 4, 1, 0},
    {2, 1280, 10, 10, 1280, 62, 5, 1, 2, 4, 0},
    {2, 640, 34, 34, 640, 62, 0, 0, 1, 5, 1},
    {2, 2560, 18, 18, 1280, 62, 18, 1, 8, 1, 0},
    {2, 1280, 34, 34, 1280, 62, 19, 1, 8, 1, 1},
    {2, 2560, 10, 10, 1280, 62, 5, 1, 2, 4, 0},
    {2, 1920, 18, 18, 1280, 62, 18, 1, 8, 1, 0},
    {2, 640, 18, 18, 1280, 62, 1, 1, 1, 4, 0},
    {2, 1280, 34, 34, 640, 62, 0, 1, 4, 2, 0},
    {2, 1920, 34, 34, 640, 62, 0, 1, 1, 1, 0},
    {2, 960, 34, 34, 640, 62, 4, 0, 1, 5, 1},
    {2, 640, 66, 66, 640, 62, 0, 1, 8, 1, 0},
    /* the VAE decoder's 512x256x256 -> 512 in its three row bands (the
     * sixth session's call 3: 155 against 147 us a band); its other
     * shapes' first configurations were within 5% */
    {1, 512, 87, 258, 512, 62, 0, 1, 4, 2, 0},
    {1, 512, 88, 258, 512, 62, 0, 1, 4, 2, 0},
};

static bool tuned_wanted(void) {
  static int v = -1;
  return weft__cuda_env_on("WEFT_CUDA_CONV_TUNED", &v);
}

static const tuned_conv *tuned_find(const weft__cuda_ctx *ctx,
                                    const weft_conv2d_args *b, weft_dtype dt) {
  if (!tuned_wanted() || dt != WEFT_F16 || ctx->cc != 90 ||
      ctx->sm_count != 132 || cudnnGetVersion() / 10000 != 9 || b->k_h != 3 ||
      b->k_w != 3 || b->stride_h != 1 || b->stride_w != 1)
    return NULL;
  const int64_t n = b->batch > 0 ? b->batch : 1;
  for (size_t i = 0; i < sizeof tuned_h200 / sizeof tuned_h200[0]; i++) {
    const tuned_conv *t = &tuned_h200[i];
    if (t->n == n && t->c == b->c_in && t->h == b->h_in && t->w == b->w_in &&
        t->k == b->c_out)
      return t;
  }
  return NULL;
}

/* The engine configuration t of the operation graph in g->keep[5], into
 * *cfg (its engine and knob choices kept in g->keep[7..]). */
static cudnnStatus_t g_tuned_cfg(gplan *g, const tuned_conv *t,
                                 cudnnBackendDescriptor_t *cfg) {
  cudnnStatus_t st;
  cudnnBackendDescriptor_t *eng = &g->keep[7], *kc = &g->keep[8];
  enum { KNOBS = 6 };
  const cudnnBackendKnobType_t types[KNOBS] = {
      CUDNN_KNOB_TYPE_TILE_SIZE,  CUDNN_KNOB_TYPE_TILEK,
      CUDNN_KNOB_TYPE_TILE_CGA_M, CUDNN_KNOB_TYPE_TILE_CGA_N,
      CUDNN_KNOB_TYPE_WORKSPACE,  CUDNN_KNOB_TYPE_IDX_MODE};
  const int64_t vals[KNOBS] = {t->tile,  t->tilek,  t->cga_m,
                               t->cga_n, t->wspace, 0};
  *cfg = NULL;
  GK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR, eng));
  GK(cudnnBackendSetAttribute(*eng, CUDNN_ATTR_ENGINE_OPERATION_GRAPH,
                              CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &g->keep[5]));
  GK(cudnnBackendSetAttribute(*eng, CUDNN_ATTR_ENGINE_GLOBAL_INDEX,
                              CUDNN_TYPE_INT64, 1, &t->engine));
  GK(cudnnBackendFinalize(*eng));
  for (int i = 0; i < KNOBS; i++) {
    GK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_KNOB_CHOICE_DESCRIPTOR,
                                    &kc[i]));
    GK(cudnnBackendSetAttribute(kc[i], CUDNN_ATTR_KNOB_CHOICE_KNOB_TYPE,
                                CUDNN_TYPE_KNOB_TYPE, 1, &types[i]));
    GK(cudnnBackendSetAttribute(kc[i], CUDNN_ATTR_KNOB_CHOICE_KNOB_VALUE,
                                CUDNN_TYPE_INT64, 1, &vals[i]));
    GK(cudnnBackendFinalize(kc[i]));
  }
  GK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, cfg));
  GK(cudnnBackendSetAttribute(*cfg, CUDNN_ATTR_ENGINECFG_ENGINE,
                              CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, eng));
  GK(cudnnBackendSetAttribute(*cfg, CUDNN_ATTR_ENGINECFG_KNOB_CHOICES,
                              CUDNN_TYPE_BACKEND_DESCRIPTOR, KNOBS, kc));
  GK(cudnnBackendFinalize(*cfg));
fail:
  if (st != CUDNN_STATUS_SUCCESS && *cfg) {
    cudnnBackendDestroyDescriptor(*cfg);
    *cfg = NULL;
  }
  return st;
}

/* A finalized plan of cfg into g (cfg kept in g->keep[6]): true, or false
 * with cfg left to the caller. */
static bool g_finalize(gplan *g, cudnnHandle_t hd,
                       cudnnBackendDescriptor_t cfg) {
  cudnnBackendDescriptor_t p = NULL;
  if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR,
                                   &p) != CUDNN_STATUS_SUCCESS)
    return false;
  int64_t wsb = 0, nws = 0;
  if (cudnnBackendSetAttribute(p, CUDNN_ATTR_EXECUTION_PLAN_HANDLE,
                               CUDNN_TYPE_HANDLE, 1,
                               &hd) == CUDNN_STATUS_SUCCESS &&
      cudnnBackendSetAttribute(p, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                               CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                               &cfg) == CUDNN_STATUS_SUCCESS &&
      cudnnBackendFinalize(p) == CUDNN_STATUS_SUCCESS &&
      cudnnBackendGetAttribute(p, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                               CUDNN_TYPE_INT64, 1, &nws,
                               &wsb) == CUDNN_STATUS_SUCCESS) {
    g->plan = p, g->ws = wsb, g->keep[6] = cfg;
    return true;
  }
  cudnnBackendDestroyDescriptor(p);
  return false;
}

/* Builds g's plan for the unpadded NHWC convolution b (dt 16-bit): 0, or
 * WEFT_EUNSUPPORTED when no engine qualifies (g->none then). */
static int g_build(weft__cuda_ctx *ctx, const weft_conv2d_args *b,
                   weft_dtype dt, gplan *g) {
  const cudnnDataType_t cdt =
      dt == WEFT_F16 ? CUDNN_DATA_HALF : CUDNN_DATA_BFLOAT16;
  int64_t ho, wo;
  out_size(b, &ho, &wo);
  const int64_t n = b->batch > 0 ? b->batch : 1, c = b->c_in, k = b->c_out;
  const int64_t h = b->h_in, w = b->w_in, r = b->k_h, s = b->k_w;
  const int64_t xd[4] = {n, c, h, w}, xs[4] = {h * w * c, 1, w * c, c};
  const int64_t wd[4] = {k, c, r, s}, ws[4] = {r * s * c, 1, s * c, c};
  const int64_t yd[4] = {n, k, ho, wo}, ys[4] = {ho * wo * k, 1, wo * k, k};
  cudnnBackendDescriptor_t *x = &g->keep[0], *wt = &g->keep[1],
                           *y = &g->keep[2], *conv = &g->keep[3],
                           *op = &g->keep[4], *graph = &g->keep[5];
  cudnnBackendDescriptor_t heur = NULL, *cfg = NULL;
  int64_t ncfg = 0;
  cudnnStatus_t st;
  cudnnHandle_t hd = H(ctx);
  GK(g_tensor(x, 'x', cdt, xd, xs));
  GK(g_tensor(wt, 'w', cdt, wd, ws));
  GK(g_tensor(y, 'y', cdt, yd, ys));
  {
    const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
    const int64_t dims = 2, dil[2] = {1, 1}, zero[2] = {0, 0};
    const int64_t str[2] = {b->stride_h, b->stride_w};
    GK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR,
                                    conv));
    GK(cudnnBackendSetAttribute(*conv, CUDNN_ATTR_CONVOLUTION_COMP_TYPE,
                                CUDNN_TYPE_DATA_TYPE, 1, &comp));
    GK(cudnnBackendSetAttribute(*conv, CUDNN_ATTR_CONVOLUTION_CONV_MODE,
                                CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode));
    GK(cudnnBackendSetAttribute(*conv, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS,
                                CUDNN_TYPE_INT64, 1, &dims));
    GK(cudnnBackendSetAttribute(*conv, CUDNN_ATTR_CONVOLUTION_DILATIONS,
                                CUDNN_TYPE_INT64, 2, dil));
    GK(cudnnBackendSetAttribute(*conv, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES,
                                CUDNN_TYPE_INT64, 2, str));
    GK(cudnnBackendSetAttribute(*conv, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS,
                                CUDNN_TYPE_INT64, 2, zero));
    GK(cudnnBackendSetAttribute(*conv, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS,
                                CUDNN_TYPE_INT64, 2, zero));
    GK(cudnnBackendFinalize(*conv));
  }
  {
    const float one = 1.0f, zero = 0.0f;
    GK(cudnnBackendCreateDescriptor(
        CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR, op));
    GK(cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X,
                                CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, x));
    GK(cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W,
                                CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, wt));
    GK(cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y,
                                CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, y));
    GK(cudnnBackendSetAttribute(
        *op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC,
        CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, conv));
    GK(cudnnBackendSetAttribute(*op,
                                CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA,
                                CUDNN_TYPE_FLOAT, 1, &one));
    GK(cudnnBackendSetAttribute(*op,
                                CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA,
                                CUDNN_TYPE_FLOAT, 1, &zero));
    GK(cudnnBackendFinalize(*op));
  }
  GK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR,
                                  graph));
  GK(cudnnBackendSetAttribute(*graph, CUDNN_ATTR_OPERATIONGRAPH_OPS,
                              CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, op));
  GK(cudnnBackendSetAttribute(*graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE,
                              CUDNN_TYPE_HANDLE, 1, &hd));
  GK(cudnnBackendFinalize(*graph));
  const tuned_conv *t = tuned_find(ctx, b, dt);
  if (t) {
    cudnnBackendDescriptor_t tc = NULL;
    if (g_tuned_cfg(g, t, &tc) == CUDNN_STATUS_SUCCESS && g_engine_ok(tc) &&
        g_finalize(g, hd, tc)) {
      if (conv_log_level())
        fprintf(stderr,
                "weft cuda: conv %lldx%lldx%lldx%lld -> %lld 3x3/1 [nhwc, "
                "graph API]: the measured configuration (engine %lld), "
                "workspace %.1f MiB\n",
                (long long)n, (long long)c, (long long)h, (long long)w,
                (long long)k, (long long)t->engine, (double)g->ws / 1048576.0);
      return 0;
    }
    if (tc) cudnnBackendDestroyDescriptor(tc); /* not g's: no plan */
    for (int i = 7; i < GPLAN_DESCS; i++)      /* the heuristic's way instead */
      if (g->keep[i]) {
        cudnnBackendDestroyDescriptor(g->keep[i]);
        g->keep[i] = NULL;
      }
  }
  {
    const cudnnBackendHeurMode_t mode = heur_mode();
    GK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR,
                                    &heur));
    GK(cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH,
                                CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, graph));
    GK(cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_MODE,
                                CUDNN_TYPE_HEUR_MODE, 1, &mode));
    GK(cudnnBackendFinalize(heur));
    GK(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &ncfg, NULL));
  }
  if (ncfg > 0 && (cfg = calloc((size_t)ncfg, sizeof *cfg))) {
    int64_t got = 0;
    for (int64_t i = 0; i < ncfg; i++)
      if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR,
                                       &cfg[i]) != CUDNN_STATUS_SUCCESS)
        cfg[i] = NULL;
    st = cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                  CUDNN_TYPE_BACKEND_DESCRIPTOR, ncfg, &got,
                                  cfg);
    int tried = 0;
    for (int64_t i = 0; st == CUDNN_STATUS_SUCCESS && i < got && !g->plan;
         i++) {
      if (!cfg[i] || !g_engine_ok(cfg[i])) continue;
      tried++;
      if (g_finalize(g, hd, cfg[i])) {
        cfg[i] = NULL; /* g's */
        if (conv_log_level())
          fprintf(stderr,
                  "weft cuda: conv %lldx%lldx%lldx%lld -> %lld %lldx%lld/%lld "
                  "[nhwc, graph API]: engine configuration %lld of %lld "
                  "(%d allowed tried), workspace %.1f MiB\n",
                  (long long)n, (long long)c, (long long)h, (long long)w,
                  (long long)k, (long long)r, (long long)s,
                  (long long)b->stride_h, (long long)i, (long long)got, tried,
                  (double)g->ws / 1048576.0);
      }
    }
    for (int64_t i = 0; i < ncfg; i++)
      if (cfg[i]) cudnnBackendDestroyDescriptor(cfg[i]);
    free(cfg);
  }
  st = CUDNN_STATUS_SUCCESS;
fail:
  if (heur) cudnnBackendDestroyDescriptor(heur);
  if (st != CUDNN_STATUS_SUCCESS || !g->plan) {
    if (st != CUDNN_STATUS_SUCCESS && conv_log_level())
      fprintf(stderr, "weft cuda: cuDNN graph API: %s\n",
              cudnnGetErrorString(st));
    int64_t key[PLAN_KEY];
    memcpy(key, g->key, sizeof key);
    gplan_free(g);
    memcpy(g->key, key, sizeof key);
    g->none = true;
    return WEFT_EUNSUPPORTED;
  }
  return 0;
}

/* The cached plan of b (built on first use); *own set when the cache was
 * full and the caller frees the plan after its call.  0, or
 * WEFT_EUNSUPPORTED (the legacy API then). */
static int g_plan(weft__cuda_ctx *ctx, const weft_conv2d_args *b, weft_dtype dt,
                  gplan *out, bool *own) {
  *own = false;
  if (!graph_wanted()) return WEFT_EUNSUPPORTED;
  plan_cache *c = ctx->cudnn_plans;
  const view v = {0, 0, 0, 0, 1};
  int64_t key[PLAN_KEY];
  plan_key(ctx, b, dt, &v, key);
  pthread_mutex_lock(&c->mu);
  for (int i = 0; i < c->ng; i++)
    if (!memcmp(c->g[i].key, key, sizeof key)) {
      *out = c->g[i];
      pthread_mutex_unlock(&c->mu);
      return out->none ? WEFT_EUNSUPPORTED : 0;
    }
  /* built under the lock: a plan is made once per shape */
  gplan g;
  memset(&g, 0, sizeof g);
  memcpy(g.key, key, sizeof key);
  const double t0 = weft__cuda_now();
  int rc = g_build(ctx, b, dt, &g);
  weft__cuda_plan_time(ctx, WEFT__PLAN_CUDNN, weft__cuda_now() - t0);
  if (c->ng < GPLAN_SLOTS)
    c->g[c->ng++] = g;
  else
    *own = !rc;
  pthread_mutex_unlock(&c->mu);
  *out = g;
  return rc;
}

static int g_run(weft__cuda_ctx *ctx, const gplan *g, const void *x,
                 const void *w, void *y, void *ws) {
  cudnnBackendDescriptor_t vp = NULL;
  const int64_t uids[3] = {'x', 'w', 'y'};
  void *ptrs[3] = {(void *)x, (void *)w, y};
  cudnnStatus_t st;
  GK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &vp));
  GK(cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS,
                              CUDNN_TYPE_INT64, 3, uids));
  GK(cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS,
                              CUDNN_TYPE_VOID_PTR, 3, ptrs));
  GK(cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE,
                              CUDNN_TYPE_VOID_PTR, 1, &ws));
  GK(cudnnBackendFinalize(vp));
  GK(cudnnBackendExecute(H(ctx), g->plan, vp));
fail:
  if (vp) cudnnBackendDestroyDescriptor(vp);
  if (st != CUDNN_STATUS_SUCCESS)
    return weft__cuda_fail(ctx, status_code(st),
                           "cudnnBackendExecute (channels last): %s",
                           cudnnGetErrorString(st));
  return 0;
}
#undef GK

/* ---- channels last ----
 * A weight stored channels last (w_hwc: nodes/sd keeps its 3x3 weights so
 * on CUDA) lets cuDNN run its NHWC kernels, which on an H200 took half
 * the time of its NCHW ones on SD's shapes, transposes included
 * (tools/gpu/op_floor.py).  The activations stay NCHW: each band of
 * output rows takes its input rows moved channels last into scratch with
 * the padding written as zeros (so any padding, asymmetric too), is
 * convolved unpadded, and comes back into y's rows with the bias (the
 * output rounded to 16 bits by cuDNN, then the bias added in fp32 and
 * stored: the rounding of the NCHW path).  Bands of equal height keep
 * the scratch (the band's x, y and workspace) within the band bytes.
 * Maps already channels last (x_nhwc, y_nhwc: a model keeping them so
 * between its layers) skip the transposes: x's rows are copied into the
 * padded band (normalized on the way, the statistics taken over the
 * channels-last map), and y's band gets the bias and the epilogue where
 * it lies in y; the same plan between, so the same bits as the moves. */
typedef struct nhwc_layout {
  int bands;
  int splitk;           /* the split-K way's slices of K (0: cuDNN) */
  int64_t ho, wo, wb;   /* output size; the padded width */
  size_t y_off, ws_off; /* in the scratch (x at 0); cuDNN's workspace, or */
  size_t part_off;      /* the split-K way's rows and then its partial sums */
  size_t w_off, gn_off; /* the rounded weight (when w_own), the prologue's */
  size_t total;         /* statistics (when prenorm); the whole */
  bool w_own;
} nhwc_layout;

/* ---- split-K on the smallest maps ----
 * On the UNet's 8x8 maps (128 output pixels at batch 2) cuDNN's tiles
 * leave most SMs of an H200 idle: 1280 -> 1280 channels took 25 us (150
 * TFLOP/s) in its best measured configuration.  There the padded band
 * (x moved or copied as for cuDNN, the prologue applied) is spread into
 * the product's rows, col[p][(ky, kx, c)], and col W^T (W as stored
 * channels last, [c_out][(ky, kx, c)]) runs as S products over slices of
 * K in one strided-batched cuBLASLt call, into fp32 partial sums that one
 * kernel adds in order and rounds into the band's y: what cuDNN writes
 * there (its output rounded to 16 bits), so the epilogue is the same.  S:
 * as many slices as give every SM a 128x128 tile, each slice at least 512
 * deep and a multiple of 8 (a shallower product stays on cuDNN).
 * WEFT_CUDA_CONV_SPLITK: the most output pixels (batch * h_out * w_out) that
 * take this way (default 256: the 8x8 maps at batch 2 and the 16x16 ones at
 * batch 1; 0: none, an A/B switch).  The whole map is one band: a scratch above
 * the band bytes takes cuDNN. */
static int splitk_slices(const weft__cuda_ctx *ctx, const weft_conv2d_args *a,
                         int64_t pix) {
  static int bound = -1;
  const int64_t k = a->c_in * a->k_h * a->k_w;
  if (pix > weft__cuda_env_int_or("WEFT_CUDA_CONV_SPLITK", 256, &bound) ||
      a->k_h * a->k_w < 2)
    return 0;
  const int64_t tiles = (pix + 127) / 128 * ((a->c_out + 127) / 128);
  int64_t s = ctx->sm_count / tiles;
  if (s > k / 512) s = k / 512;
  if (s > 32) s = 32;
  for (; s >= 2; s--)
    if (k % (8 * s) == 0) return (int)s;
  return 0;
}

/* Band j of n: output rows [o0, o1) and the args of its unpadded
 * convolution on the packed input rows. */
static void nhwc_band(const weft_conv2d_args *a, const nhwc_layout *l, int n,
                      int j, int64_t *o0, int64_t *o1, weft_conv2d_args *b) {
  *o0 = l->ho * j / n, *o1 = l->ho * (j + 1) / n;
  *b = *a;
  b->h_in = (*o1 - *o0 - 1) * a->stride_h + a->k_h;
  b->w_in = l->wb;
  b->pad_top = b->pad_left = b->pad_bottom = b->pad_right = 0;
  b->x_bstride = b->y_bstride = 0;
}

/* Plans every band height of n bands: the largest x, y and workspace. */
static int nhwc_plan_bands(weft__cuda_ctx *ctx, const weft_conv2d_args *a,
                           nhwc_layout *l, int n, size_t *xb, size_t *yb,
                           size_t *ws) {
  const weft_dtype want = weft__cuda_compute_dtype(ctx);
  const view v = {0, 0, 0, 0, 1};
  const size_t batch = a->batch > 0 ? (size_t)a->batch : 1;
  *xb = *yb = *ws = 0;
  int64_t last = -1;
  for (int j = 0; j < n; j++) {
    int64_t o0, o1;
    weft_conv2d_args b;
    nhwc_band(a, l, n, j, &o0, &o1, &b);
    if (o1 - o0 == last) continue; /* at most two heights */
    last = o1 - o0;
    size_t need;
    gplan g;
    bool own;
    if (g_plan(ctx, &b, want, &g, &own) == 0) {
      need = (size_t)g.ws;
      if (own) gplan_free(&g);
    } else {
      descs d;
      int rc = plan_view(ctx, &b, want, &v, &d);
      if (rc) return rc;
      descs_free(&d);
      need = d.ws;
    }
    const size_t x = batch * (size_t)(b.h_in * l->wb * a->c_in) * 2;
    const size_t y = batch * (size_t)((o1 - o0) * l->wo * a->c_out) * 2;
    if (x > *xb) *xb = x;
    if (y > *yb) *yb = y;
    if (need > *ws) *ws = need;
  }
  return 0;
}

static int nhwc_prepare(weft__cuda_ctx *ctx, const weft_conv2d_args *a,
                        nhwc_layout *l) {
  memset(l, 0, sizeof *l);
  const weft_dtype want = weft__cuda_compute_dtype(ctx);
  if (want == WEFT_F32 || !a->w_hwc || a->c_in % 8 || a->c_out % 8 ||
      !out_size(a, &l->ho, &l->wo))
    return WEFT_EUNSUPPORTED;
  const int64_t batch = a->batch > 0 ? a->batch : 1;
  l->wb = a->w_in + a->pad_left + a->pad_right;
  const int64_t hb = a->h_in + a->pad_top + a->pad_bottom;
  /* int sizes for cuDNN; the kernels' grids */
  if (!fits_int(batch) || !fits_int(a->c_in) || !fits_int(a->c_out) ||
      !fits_int(hb) || !fits_int(l->wb) || hb * l->wb > INT32_MAX / a->c_in ||
      l->ho * l->wo > INT32_MAX / a->c_out || batch * hb > INT32_MAX ||
      batch * hb * l->wb * a->c_in > INT32_MAX ||
      batch * l->ho * l->wo * a->c_out > INT32_MAX)
    return WEFT_EUNSUPPORTED;
  l->w_own = !(weft__cuda_weight_dtype(ctx, a->weight) == want &&
               (uintptr_t)a->weight % 16 == 0);
  size_t xb, yb, ws;
  const int64_t pix = batch * l->ho * l->wo;
  l->bands = 1;
  if ((l->splitk = splitk_slices(ctx, a, pix))) {
    const int64_t k = a->c_in * a->k_h * a->k_w;
    int64_t o0, o1;
    weft_conv2d_args b; /* the one band */
    nhwc_band(a, l, 1, 0, &o0, &o1, &b);
    xb = (size_t)(batch * b.h_in * l->wb * a->c_in) * 2;
    yb = (size_t)(pix * a->c_out) * 2;
    const size_t cb = align256((size_t)(pix * k) * 2);
    ws = cb + (size_t)l->splitk * (size_t)(pix * a->c_out) * 4;
    l->part_off = align256(xb) + align256(yb) + cb;
    if (ctx->band_bytes && align256(xb) + align256(yb) + ws > ctx->band_bytes)
      l->splitk = 0;
  }
  if (!l->splitk) {
    int rc = nhwc_plan_bands(ctx, a, l, 1, &xb, &yb, &ws);
    if (rc) return rc;
    const size_t whole = align256(xb) + align256(yb) + ws;
    if (ctx->band_bytes && whole > ctx->band_bytes) {
      int n = (int)((whole + ctx->band_bytes - 1) / ctx->band_bytes);
      if (n > l->ho) n = (int)l->ho;
      if ((rc = nhwc_plan_bands(ctx, a, l, n, &xb, &yb, &ws))) return rc;
      l->bands = n;
    }
  }
  l->y_off = align256(xb);
  l->ws_off = l->y_off + align256(yb);
  l->w_off = l->ws_off + align256(ws);
  const size_t nw = (size_t)(a->c_out * a->c_in * a->k_h * a->k_w);
  l->gn_off = l->w_off + (l->w_own ? align256(nw * 2) : 0);
  l->total = l->gn_off;
  const int64_t sp = a->h_in * a->w_in;
  if (a->prenorm)
    l->total += align256(
        a->x_nhwc
            ? weft__cu_gn_stats_cl_bytes(batch, a->c_in, sp, a->prenorm->groups)
            : weft__cu_gn_stats_bytes(batch, a->c_in, sp, a->prenorm->groups));
  if (ctx->scratch_limit && l->total > ctx->scratch_limit / 4)
    return WEFT_EUNSUPPORTED;
  return 0;
}

int weft__cudnn_conv_nhwc_plan(weft__cuda_ctx *ctx, const weft_conv2d_args *a,
                               size_t *scratch, int *bands, int *splitk) {
  nhwc_layout l;
  int rc = nhwc_prepare(ctx, a, &l);
  *scratch = rc ? 0 : l.total;
  *bands = rc ? 0 : l.bands;
  if (splitk) *splitk = rc ? 0 : l.splitk;
  return rc;
}

/* The split-K way between the band's x (at base) and its y (l->y_off):
 * the rows, the products over K's slices, their sum. */
static int splitk_run(weft__cuda_ctx *ctx, const weft_conv2d_args *a,
                      const nhwc_layout *l, int64_t hb, unsigned char *base,
                      const void *w16) {
  const weft_dtype want = weft__cuda_compute_dtype(ctx);
  const int64_t pix = a->batch * l->ho * l->wo;
  const int64_t k = a->c_in * a->k_h * a->k_w, ks = k / l->splitk;
  void *col = base + l->ws_off;
  float *part = (float *)(void *)(base + l->part_off);
  int rc = weft__cuda_check(ctx,
                            weft__cu_conv_rows(ctx->stream, base, a->batch, hb,
                                               l->wb, a->c_in, a->k_h, a->k_w,
                                               a->stride_h, a->stride_w, l->ho,
                                               l->wo, col),
                            "conv2d: the split-K way's rows");
  weft_gemm_args g = {.m = pix,
                      .n = a->c_out,
                      .k = ks,
                      .trans_b = 1,
                      .alpha = 1.0f,
                      .a = col,
                      .lda = k,
                      .b = w16,
                      .ldb = k,
                      .c = part,
                      .ldc = a->c_out,
                      .batch = l->splitk,
                      .stride_a = ks,
                      .stride_b = ks,
                      .stride_c = pix * a->c_out};
  if (!rc) rc = weft__cuda_gemm_ex(ctx, &g, want, want, WEFT_F32, NULL);
  if (!rc)
    rc = weft__cuda_check(ctx,
                          weft__cu_splitk_sum(ctx->stream, part, l->splitk,
                                              pix * a->c_out, base + l->y_off,
                                              want),
                          "conv2d: the split-K way's sum");
  return rc;
}

/* the profile's part of a's channels-last convolution that began at slot */
static void part_end(weft__cuda_ctx *ctx, int slot, const char *what,
                     const weft_conv2d_args *a) {
  weft__cuda_prof_part_end(ctx, slot, "conv2d nhwc %s, %lldx%lldx%lld -> %lld",
                           what, (long long)a->c_in, (long long)a->h_in,
                           (long long)a->w_in, (long long)a->c_out);
}

int weft__cudnn_conv_nhwc(weft__cuda_ctx *ctx, const weft_conv2d_args *a) {
  const weft_dtype want = weft__cuda_compute_dtype(ctx);
  nhwc_layout l;
  int rc = nhwc_prepare(ctx, a, &l);
  if (rc) return rc;
  unsigned char *base = a->scratch;
  if (!base || a->scratch_bytes < l.total) {
    if (!(base = weft__cuda_scratch(ctx, l.total))) return WEFT_ENOMEM;
  }
  const void *w16 = a->weight;
  if (l.w_own) { /* the layout is kept: a flat rounding */
    w16 = base + l.w_off;
    if ((rc = weft__cuda_conv_weight16(ctx, a, base + l.w_off))) return rc;
  }
  const int64_t batch = a->batch;
  const int64_t xs = a->x_bstride ? a->x_bstride : a->c_in * a->h_in * a->w_in;
  const int64_t ys = a->y_bstride ? a->y_bstride : a->c_out * l.ho * l.wo;
  /* the prologue: the group norm's statistics, applied as x moves */
  const weft_conv2d_prenorm *pn = a->prenorm;
  const void *ss = NULL;
  if (pn) {
    const int64_t sp = a->h_in * a->w_in;
    rc =
        weft__cuda_check(ctx,
                         (a->x_nhwc ? weft__cu_gn_stats_cl : weft__cu_gn_stats)(
                             ctx->stream, ctx->act, a->x, batch, a->c_in, sp,
                             pn->groups, pn->eps, pn->gamma, pn->beta,
                             base + l.gn_off, ctx->gn_counters, &ss),
                         "conv2d: the prologue's group norm statistics");
  }
  for (int j = 0; j < l.bands && !rc; j++) {
    int64_t o0, o1;
    weft_conv2d_args b;
    nhwc_band(a, &l, l.bands, j, &o0, &o1, &b);
    descs d;
    gplan g;
    bool own = false, graph = false;
    const view v = {0, 0, 0, 0, 1};
    if (!l.splitk) {
      graph = g_plan(ctx, &b, want, &g, &own) == 0;
      ctx->err[0] = 0;
      if (!graph && (rc = plan_view(ctx, &b, want, &v, &d))) break;
    }
    /* while profiling, the three parts' times (weft_cuda_profile_*) */
    /* x's band: moved channels last, or copied where it already is */
    int part = weft__cuda_prof_part_begin(ctx);
    rc = weft__cuda_check(ctx,
                          (a->x_nhwc ? weft__cu_cl_copy : weft__cu_nhwc_pack)(
                              ctx->stream, a->x, ctx->act, xs, batch, a->c_in,
                              a->h_in, a->w_in, o0 * a->stride_h - a->pad_top,
                              b.h_in, a->pad_left, l.wb, base, want, ss,
                              pn ? (int)pn->act : 0),
                          "conv2d: x channels last");
    static const char *const x_part[2][2] = {
        {"x moved", "x copied"},
        {"x normalized and moved", "x normalized and copied"}};
    part_end(ctx, part, x_part[pn != NULL][a->x_nhwc != 0], a);
    part = weft__cuda_prof_part_begin(ctx);
    if (!rc && l.splitk) {
      rc = splitk_run(ctx, a, &l, b.h_in, base, w16);
    } else if (!rc && graph) {
      rc = g_run(ctx, &g, base, w16, base + l.y_off,
                 g.ws ? base + l.ws_off : NULL);
    } else if (!rc) {
      const float one = 1.0f, zero = 0.0f; /* fp32 compute: float scalars */
      cudnnStatus_t st = cudnnConvolutionForward(
          H(ctx), &one, d.x, base, d.w, w16, d.conv, d.algo,
          d.ws ? base + l.ws_off : NULL, d.ws, &zero, d.y, base + l.y_off);
      if (st != CUDNN_STATUS_SUCCESS)
        rc = weft__cuda_fail(ctx, status_code(st),
                             "cudnnConvolutionForward (channels last, band "
                             "%d of %d): %s",
                             j, l.bands, cudnnGetErrorString(st));
    }
    part_end(ctx, part,
             l.splitk ? "split-K product"
             : graph  ? "cuDNN (graph API)"
                      : "cuDNN (legacy API)",
             a);
    if (graph && own) gplan_free(&g);
    if (!graph && !l.splitk) descs_free(&d);
    part = weft__cuda_prof_part_begin(ctx);
    if (!rc && a->y_nhwc)
      rc = weft__cuda_check(
          ctx,
          weft__cu_cl_epilogue(ctx->stream, base + l.y_off, want, batch,
                               (o1 - o0) * l.wo, a->c_out, a->bias, a->chan_add,
                               a->residual, a->y, ctx->act, ys, o0 * l.wo),
          "conv2d: y's epilogue");
    else if (!rc)
      rc = weft__cuda_check(ctx,
                            weft__cu_nhwc_unpack(ctx->stream, base + l.y_off,
                                                 want, batch, o1 - o0, l.wo,
                                                 a->c_out, a->bias, a->chan_add,
                                                 a->residual, a->y, ctx->act,
                                                 ys, l.ho * l.wo, o0),
                            "conv2d: y back from channels last");
    part_end(ctx, part, a->y_nhwc ? "y's epilogue" : "y moved back", a);
  }
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

int weft__cudnn_conv16_bands(weft__cuda_ctx *ctx, const weft_conv2d_args *a) {
  (void)ctx;
  (void)a;
  return 1;
}

int weft__cudnn_conv_nhwc_plan(weft__cuda_ctx *ctx, const weft_conv2d_args *a,
                               size_t *scratch, int *bands, int *splitk) {
  (void)ctx;
  (void)a;
  *scratch = 0;
  *bands = 0;
  if (splitk) *splitk = 0;
  return WEFT_EUNSUPPORTED;
}

int weft__cudnn_conv_nhwc(weft__cuda_ctx *ctx, const weft_conv2d_args *a) {
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
  const double t0 = weft__cuda_now();
  pthread_join(ctx->cudnn_thread, NULL);
  weft__cuda_plan_time(ctx, WEFT__PLAN_CUDNN_WAIT, weft__cuda_now() - t0);
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
