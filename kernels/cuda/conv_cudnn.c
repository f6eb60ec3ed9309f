/* conv_cudnn.c - conv2d through cuDNN's convolution API (NCHW fp32), when
 * meson found cuDNN (WEFT_HAVE_CUDNN); stubs otherwise, so conv_cuda.c
 * falls back to im2col.
 *
 * This is cuDNN 9's legacy convolution API (cudnnConvolutionForward), still
 * shipped and simplest to drive from C; the fp16 NHWC path of issue 7 will
 * want the graph API.  Choices: FMA math unless TF32 is allowed (cuDNN
 * would otherwise use TF32 for fp32 on Ampere and later), and the first
 * deterministic algorithm of cuDNN's heuristic order, so that a run repeats
 * bit for bit.  Padding must be symmetric (cuDNN has one pad per axis); the
 * caller sends the VAE's asymmetric pads to im2col. */
#include <stdio.h>
#include <string.h>

#include "internal.h"

#if WEFT_HAVE_CUDNN

#include <cudnn.h>

#define H(ctx) ((cudnnHandle_t)(ctx)->cudnn)

int weft__cudnn_init(weft__cuda_ctx *ctx, char *err, size_t err_size) {
  cudnnHandle_t h;
  cudnnStatus_t st = cudnnCreate(&h);
  if (st != CUDNN_STATUS_SUCCESS) {
    snprintf(err, err_size, "cudnnCreate: %s", cudnnGetErrorString(st));
    return WEFT_EDEVICE;
  }
  if ((st = cudnnSetStream(h, ctx->stream)) != CUDNN_STATUS_SUCCESS) {
    snprintf(err, err_size, "cudnnSetStream: %s", cudnnGetErrorString(st));
    cudnnDestroy(h);
    return WEFT_EDEVICE;
  }
  ctx->cudnn = h;
  return 0;
}

void weft__cudnn_destroy(weft__cuda_ctx *ctx) {
  if (ctx->cudnn) cudnnDestroy(H(ctx));
  ctx->cudnn = NULL;
}

static bool fits_int(int64_t v) {
  return v >= 0 && v <= INT32_MAX;
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

#define CK(call)                                                               \
  do {                                                                         \
    cudnnStatus_t st_ = (call);                                                \
    if (st_ != CUDNN_STATUS_SUCCESS) {                                         \
      descs_free(d);                                                           \
      return weft__cuda_fail(ctx, WEFT_EDEVICE, "%s: %s", #call,               \
                             cudnnGetErrorString(st_));                        \
    }                                                                          \
  } while (0)

/* Descriptors per call (cheap host objects) rather than cached in the
 * context, so concurrent callers of one backend never share them. */
static int plan(weft__cuda_ctx *ctx, const weft_conv2d_args *a, descs *d) {
  memset(d, 0, sizeof *d);
  int64_t h_out = weft_conv2d_out_size(a->h_in, a->k_h, a->stride_h, a->pad_top,
                                       a->pad_bottom);
  int64_t w_out = weft_conv2d_out_size(a->w_in, a->k_w, a->stride_w,
                                       a->pad_left, a->pad_right);
  int64_t xs = a->x_bstride ? a->x_bstride : a->c_in * a->h_in * a->w_in;
  int64_t ys = a->y_bstride ? a->y_bstride : a->c_out * h_out * w_out;
  int batch = a->batch > 0 ? (int)a->batch : 1;
  CK(cudnnCreateTensorDescriptor(&d->x));
  CK(cudnnCreateTensorDescriptor(&d->y));
  CK(cudnnCreateFilterDescriptor(&d->w));
  CK(cudnnCreateConvolutionDescriptor(&d->conv));
  CK(cudnnSetTensor4dDescriptorEx(d->x, CUDNN_DATA_FLOAT, batch, (int)a->c_in,
                                  (int)a->h_in, (int)a->w_in, (int)xs,
                                  (int)(a->h_in * a->w_in), (int)a->w_in, 1));
  CK(cudnnSetTensor4dDescriptorEx(d->y, CUDNN_DATA_FLOAT, batch, (int)a->c_out,
                                  (int)h_out, (int)w_out, (int)ys,
                                  (int)(h_out * w_out), (int)w_out, 1));
  CK(cudnnSetFilter4dDescriptor(d->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW,
                                (int)a->c_out, (int)a->c_in, (int)a->k_h,
                                (int)a->k_w));
  CK(cudnnSetConvolution2dDescriptor(
      d->conv, (int)a->pad_top, (int)a->pad_left, (int)a->stride_h,
      (int)a->stride_w, 1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  CK(cudnnSetConvolutionMathType(d->conv, ctx->tf32 ? CUDNN_DEFAULT_MATH
                                                    : CUDNN_FMA_MATH));
  cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  int got = 0;
  CK(cudnnGetConvolutionForwardAlgorithm_v7(H(ctx), d->x, d->w, d->conv, d->y,
                                            CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
                                            &got, perf));
  int pick = -1;
  for (int i = 0; i < got && pick < 0; i++)
    if (perf[i].status == CUDNN_STATUS_SUCCESS &&
        perf[i].determinism == CUDNN_DETERMINISTIC &&
        (ctx->tf32 || perf[i].mathType == CUDNN_FMA_MATH))
      pick = i;
  if (pick < 0) { /* the caller falls back to im2col */
    descs_free(d);
    return weft__cuda_fail(ctx, WEFT_EUNSUPPORTED,
                           "cuDNN offers no deterministic FMA fp32 algorithm "
                           "for this convolution");
  }
  d->algo = perf[pick].algo;
  CK(cudnnGetConvolutionForwardWorkspaceSize(H(ctx), d->x, d->w, d->conv, d->y,
                                             d->algo, &d->ws));
  return 0;
}

int weft__cudnn_conv_plan(weft__cuda_ctx *ctx, const weft_conv2d_args *a,
                          size_t *workspace) {
  descs d;
  int rc = plan(ctx, a, &d);
  if (rc) return rc;
  descs_free(&d);
  *workspace = d.ws;
  return 0;
}

int weft__cudnn_conv(weft__cuda_ctx *ctx, const weft_conv2d_args *a) {
  descs dd, *d = &dd;
  int rc = plan(ctx, a, d);
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

#else /* no cuDNN */

int weft__cudnn_init(weft__cuda_ctx *ctx, char *err, size_t err_size) {
  (void)ctx;
  snprintf(err, err_size, "weft was built without cuDNN");
  return WEFT_EUNSUPPORTED;
}

void weft__cudnn_destroy(weft__cuda_ctx *ctx) {
  (void)ctx;
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

#endif

bool weft__cudnn_ensure(weft__cuda_ctx *ctx) {
  if (!ctx->cudnn && !ctx->cudnn_tried) {
    char err[256];
    ctx->cudnn_tried = true;
    weft__cudnn_init(ctx, err, sizeof err); /* none: im2col instead */
  }
  return ctx->cudnn != NULL;
}
