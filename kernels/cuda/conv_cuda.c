/* conv_cuda.c - 2-D convolution (NCHW; fp32 activations, or 16-bit ones
 * in the compute dtype, weft_cuda_set_act_dtype): cuDNN where it
 * is built in and the shape suits it (in FP16/BF16 precision on 16-bit
 * copies of x and y, conv_cudnn.c), else im2col + cuBLAS SGEMM, or in
 * FP16/BF16 precision im2col into 16-bit columns + cuBLASLt.
 *
 * The im2col path: 1x1 stride-1 unpadded convolutions are one batched GEMM
 * straight on the input (y[b] = W x[b]).  Others expand a block of images'
 * columns, col[i] = [c_in*k_h*k_w, h_out*w_out], and multiply the weight
 * [c_out, c_in*k_h*k_w] against them in one strided-batched GEMM.  The
 * column buffer is bounded (WEFT_CUDA_CONV_BLOCK_BYTES, 64 MiB): a whole
 * 3x3 im2col of a 128-channel 512x512 VAE map would be 1.2 GB (604 MB in
 * 16 bits), so such images go a block of output columns at a time (each
 * column the same dot product whatever the block, as far as the GEMM's
 * algorithm for the block's width keeps its summation order).  Bias is
 * added after the product, as kernels/cpu does, so the rounding matches.
 *
 * By default a convolution with at most 8 output channels (conv_out) runs
 * on the direct kernel (conv_direct.cu: no GEMM tiles a 3- or 4-row
 * product well).
 *
 * A weight stored channels last (w_hwc) takes cuDNN's NHWC kernels on maps
 * up to 64x64 in FP16/BF16 precision ("cudnn_nhwc", conv_cudnn.c's
 * "channels last"); every other way gets it back in [c_out, c_in, kk].
 *
 * FP16/BF16 precision, by default: cuDNN with 16-bit x, w and y
 * ("cudnn16", conv_cudnn.c) where cuDNN is built in, the padding is
 * symmetric, both channel counts are multiples of 8 and the output map is
 * larger than 16x16 (smaller ones go faster through im2col).  Its output is
 * rounded to 16 bits before it is widened (as a torch fp16 convolution's
 * is), and it pays for rounding x and widening y, but it runs at cuDNN's
 * implicit-GEMM speed (im2col reached 24-50 TFLOP/s on the VAE's 512x512
 * maps).  Elsewhere, or with WEFT_CUDA_CONV_IM2COL: the im2col kernel
 * rounds the columns to 16 bits as it writes them (half the scratch of
 * fp32), the weight is used as stored when it is registered half
 * (weft_cuda_mark_half) or rounded once per call into scratch, and
 * gemm_lt.c multiplies with fp32 accumulation into the fp32 output (no
 * rounding of y).  In FP32 precision a registered half weight is widened
 * to fp32 scratch first. */
#include <stdint.h>

#include "internal.h"

#ifndef WEFT_CUDA_CONV_BLOCK_BYTES
#define WEFT_CUDA_CONV_BLOCK_BYTES ((size_t)64 << 20)
#endif

/* Small maps (at most 16x16 outputs: the UNet's 1280- and 2560-channel
 * layers) go through im2col by default in 16-bit precision: there the
 * GEMM over the whole K = 9 c_in took 69-220 us a call on an H200 where
 * cuDNN's implicit GEMM took 150-280 (BENCHMARKS.md). */
static bool small_map(const weft__cuda_ctx *ctx, const weft_conv2d_args *a) {
  int64_t h_out, w_out;
  return ctx->conv_algo == WEFT_CUDA_CONV_AUTO &&
         ctx->precision != WEFT_CUDA_FP32 &&
         weft_conv2d_check_shapes(a, &h_out, &w_out) == 0 &&
         h_out * w_out <= 256;
}

/* Whether cuDNN may take this convolution in the backend's precision
 * (the shape is checked before the handle is made, so that a run whose
 * convolutions all go elsewhere never loads cuDNN). */
static bool cudnn_eligible(weft__cuda_ctx *ctx, const weft_conv2d_args *a) {
  if (ctx->conv_algo == WEFT_CUDA_CONV_IM2COL || small_map(ctx, a))
    return false;
  bool shape = ctx->precision == WEFT_CUDA_FP32
                   ? weft__cudnn_conv_supported(ctx, a)
                   : weft__cudnn_conv16_supported(ctx, a);
  return shape && weft__cudnn_ensure(ctx);
}

typedef enum conv_path {
  PATH_GEMM,
  PATH_DIRECT,
  PATH_CUDNN,
  PATH_CUDNN16,
  PATH_NHWC,
  PATH_IM2COL
} conv_path;

/* A channels-last weight (w_hwc, more than one tap) in FP16/BF16
 * precision: cuDNN's NHWC kernels (conv_cudnn.c, "channels last") on
 * output maps of at most WEFT_CUDA_NHWC_PIXELS (0: any), unless
 * WEFT_CUDA_CONV_IM2COL asks otherwise.  Any other path gets the weight
 * back in [c_out, c_in, kk] first.  With layout.cu's moves at the
 * memory's speed NHWC pays at every size SD has (an H200: the moves of
 * a 64x64 map of 320 channels 9 us each way; torch's NHWC kernels
 * 0.6-0.75x its NCHW ones on the VAE's 128x128-512x512 maps); the limit
 * was 4096 with the first moves, which took 17 us for that map. */
#ifndef WEFT_CUDA_NHWC_PIXELS
#define WEFT_CUDA_NHWC_PIXELS 0
#endif
static bool nhwc_eligible(weft__cuda_ctx *ctx, const weft_conv2d_args *a) {
  int64_t ho, wo;
  return a->w_hwc && a->k_h * a->k_w > 1 &&
         ctx->precision != WEFT_CUDA_FP32 &&
         ctx->conv_algo != WEFT_CUDA_CONV_IM2COL && a->c_in % 8 == 0 &&
         a->c_out % 8 == 0 && weft_conv2d_check_shapes(a, &ho, &wo) == 0 &&
         (WEFT_CUDA_NHWC_PIXELS == 0 || ho * wo <= WEFT_CUDA_NHWC_PIXELS) &&
         weft__cudnn_ensure(ctx);
}

static bool prenorm_wanted(void) {
  static int v = -1;
  return weft__cuda_env_on("WEFT_CUDA_CONV_PRENORM", &v);
}

bool weft_cuda_conv_hwc(weft_backend *be) {
  if (!weft_backend_is_cuda(be)) return false;
  weft__cuda_ctx *ctx = WEFT__CUDA_CTX(be);
  return ctx->precision != WEFT_CUDA_FP32 &&
         ctx->conv_algo != WEFT_CUDA_CONV_IM2COL && weft__cudnn_ensure(ctx);
}

/* Few output channels (conv_out: 4 in the UNet, 3 in the VAE): the direct
 * kernel (conv_direct.cu), which no GEMM shape beats; by default only. */
static bool direct_eligible(const weft__cuda_ctx *ctx,
                            const weft_conv2d_args *a) {
  return ctx->conv_algo == WEFT_CUDA_CONV_AUTO &&
         !weft_conv2d_is_pointwise(a) && weft__cu_conv_direct_fits(a);
}

/* The bytes of a 16-bit copy of the weight, when it is not registered in
 * the compute type (the 16-bit paths round it into scratch). */
static size_t weight16_bytes(weft__cuda_ctx *ctx, const weft_conv2d_args *a) {
  if (weft__cuda_weight_dtype(ctx, a->weight) == weft__cuda_compute_dtype(ctx))
    return 0;
  return (size_t)(a->c_out * a->c_in * a->k_h * a->k_w) * 2;
}

int weft__cuda_conv_weight16(weft__cuda_ctx *ctx, const weft_conv2d_args *a,
                             void *dst) {
  const int64_t nw = a->c_out * a->c_in * a->k_h * a->k_w;
  return weft__cuda_check(ctx,
                          weft__cu_pack(ctx->stream, a->weight,
                                        weft__cuda_weight_dtype(ctx, a->weight),
                                        dst, weft__cuda_compute_dtype(ctx), 1,
                                        1, 0, 0, 1, nw, nw),
                          "conv2d: rounding the weight to 16 bits");
}

/* Which way a (valid) convolution runs; *scratch gets cuDNN's scratch
 * (PATH_CUDNN: its workspace; PATH_CUDNN16: that and the 16-bit copies).
 * On PATH_NHWC *bands and *splitk (each may be NULL) get its plan's row
 * bands and split-K slices. */
static conv_path choose(weft__cuda_ctx *ctx, const weft_conv2d_args *a,
                        size_t *scratch, int *bands, int *splitk) {
  *scratch = 0;
  if (weft_conv2d_is_pointwise(a)) return PATH_GEMM;
  int nb, sk;
  if (nhwc_eligible(ctx, a) &&
      weft__cudnn_conv_nhwc_plan(ctx, a, scratch, &nb, &sk) == 0) {
    if (bands) *bands = nb;
    if (splitk) *splitk = sk;
    return PATH_NHWC;
  }
  ctx->err[0] = 0;
  *scratch = 0;
  if (direct_eligible(ctx, a)) return PATH_DIRECT;
  if (cudnn_eligible(ctx, a)) {
    if (ctx->precision == WEFT_CUDA_FP32) {
      if (weft__cudnn_conv_plan(ctx, a, scratch) == 0) return PATH_CUDNN;
    } else if (weft__cudnn_conv16_plan(ctx, a, scratch) == 0) {
      return PATH_CUDNN16;
    }
  }
  *scratch = 0;
  ctx->err[0] = 0; /* a refused cuDNN plan is no failure */
  return PATH_IM2COL;
}

const char *weft_cuda_conv2d_path(weft_backend *be, const weft_conv2d_args *a) {
  int64_t h_out, w_out;
  size_t ws;
  if (!weft_backend_is_cuda(be) ||
      weft_conv2d_check_shapes(a, &h_out, &w_out) != 0)
    return NULL;
  if (cudaSetDevice(WEFT__CUDA_CTX(be)->device) != cudaSuccess) {
    cudaGetLastError();
    return NULL;
  }
  int splitk = 0;
  switch (choose(WEFT__CUDA_CTX(be), a, &ws, NULL, &splitk)) {
  case PATH_GEMM: return "gemm";
  case PATH_DIRECT: return "direct";
  case PATH_CUDNN: return "cudnn";
  case PATH_CUDNN16: return "cudnn16";
  case PATH_NHWC: return splitk ? "nhwc_splitk" : "cudnn_nhwc";
  default: return "im2col";
  }
}

int weft_cuda_conv2d_bands(weft_backend *be, const weft_conv2d_args *a) {
  int64_t h_out, w_out;
  size_t ws;
  if (!weft_backend_is_cuda(be) ||
      weft_conv2d_check_shapes(a, &h_out, &w_out) != 0)
    return 0;
  weft__cuda_ctx *ctx = WEFT__CUDA_CTX(be);
  if (cudaSetDevice(ctx->device) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  int bands = 1;
  if (choose(ctx, a, &ws, &bands, NULL) == PATH_CUDNN16)
    bands = weft__cudnn_conv16_bands(ctx, a);
  return bands;
}

/* The im2col block: n_img whole images, or (n_img = 1) nb output columns
 * of one image.  cap_floats bounds the column buffer. */
static void im2col_block(int64_t k, int64_t n, int64_t batch, size_t cap_floats,
                         int64_t *n_img, int64_t *nb) {
  int64_t per_img = k * n;
  if ((size_t)per_img <= cap_floats) {
    int64_t imgs = (int64_t)(cap_floats / (size_t)per_img);
    *n_img = imgs < batch ? imgs : batch;
    if (*n_img < 1) *n_img = 1;
    *nb = n;
    return;
  }
  *n_img = 1;
  int64_t cols = (int64_t)(cap_floats / (size_t)k);
  if (cols < 1) cols = 1;
  /* equal blocks, a multiple of 128 columns where the cap allows it */
  int64_t blocks = (n + cols - 1) / cols;
  int64_t even = ((n + blocks - 1) / blocks + 127) / 128 * 128;
  *nb = even <= cols ? even : cols;
  if (*nb > n) *nb = n;
}

size_t weft__cuda_conv2d_scratch_bytes(weft__cuda_ctx *ctx,
                                       const weft_conv2d_args *a) {
  int64_t h_out, w_out;
  size_t cudnn;
  if (weft_conv2d_check_shapes(a, &h_out, &w_out) != 0) return 0;
  conv_path p = choose(ctx, a, &cudnn, NULL, NULL);
  if (p == PATH_GEMM || p == PATH_DIRECT) return 0;
  if (p == PATH_CUDNN || p == PATH_CUDNN16 || p == PATH_NHWC) return cudnn;
  int64_t k = a->c_in * a->k_h * a->k_w, n = h_out * w_out, n_img, nb;
  int64_t batch = a->batch > 0 ? a->batch : 1;
  const size_t es = ctx->precision == WEFT_CUDA_FP32 ? sizeof(float) : 2;
  im2col_block(k, n, batch, WEFT_CUDA_CONV_BLOCK_BYTES / es, &n_img, &nb);
  return (size_t)(n_img * k * nb) * es;
}

/* The im2col + GEMM path, blocks of images or of output columns. */
static int run_im2col(weft__cuda_ctx *ctx, const weft_conv2d_args *a,
                      int64_t w_out, int64_t n, int64_t k, int64_t xs,
                      int64_t ys) {
  /* the im2col kernel indexes one image's rows in int */
  if (a->h_in + a->pad_top + a->pad_bottom > INT32_MAX ||
      a->w_in + a->pad_left + a->pad_right > INT32_MAX)
    return weft__cuda_fail(ctx, WEFT_EUNSUPPORTED,
                           "conv2d: padded image over 2^31 rows/columns");
  const weft_dtype want = weft__cuda_compute_dtype(ctx);
  const size_t es = want == WEFT_F32 ? sizeof(float) : 2;
  size_t cap = WEFT_CUDA_CONV_BLOCK_BYTES / es;
  void *col = a->scratch;
  if (col) {
    cap = a->scratch_bytes / es;
    if (cap < (size_t)k) return WEFT_EINVAL; /* not even one column */
  }
  int64_t n_img, nb;
  im2col_block(k, n, a->batch, cap, &n_img, &nb);
  if (!col && !(col = weft__cuda_scratch(ctx, (size_t)(n_img * k * nb) * es)))
    return WEFT_ENOMEM;
  /* 16-bit: the weight as stored when it is registered in the compute
   * type, else rounded once for all blocks */
  int rc = 0;
  const float *w = a->weight;
  void *wtmp = NULL;
  const size_t wb = want == WEFT_F32 ? 0 : weight16_bytes(ctx, a);
  if (wb) {
    if (!(wtmp = weft__cuda_alloc(ctx, wb)))
      rc = WEFT_ENOMEM;
    else
      rc = weft__cuda_conv_weight16(ctx, a, wtmp);
    w = wtmp;
  }
  for (int64_t b0 = 0; b0 < a->batch && rc == 0; b0 += n_img) {
    int64_t imgs = a->batch - b0 < n_img ? a->batch - b0 : n_img;
    for (int64_t n0 = 0; n0 < n && rc == 0; n0 += nb) {
      int64_t cols = n - n0 < nb ? n - n0 : nb;
      cudaError_t e =
          want == WEFT_F32
              ? weft__cu_im2col(ctx->stream, a, n / w_out, w_out,
                                a->x + b0 * xs, xs, imgs, n0, cols, col)
              : weft__cu_im2col16(ctx->stream, a, w_out,
                                  weft__cuda_act_at(ctx, a->x, b0 * xs),
                                  (int)ctx->act, xs, imgs, n0, cols, col,
                                  (int)want);
      rc = weft__cuda_check(ctx, e, "conv2d im2col");
      if (rc) break;
      weft_gemm_args g = {.m = a->c_out,
                          .n = cols,
                          .k = k,
                          .alpha = 1.0f,
                          .beta = 0.0f,
                          .a = w,
                          .lda = k,
                          .b = col,
                          .ldb = cols,
                          .c = weft__cuda_act_at(ctx, a->y, b0 * ys + n0),
                          .ldc = n,
                          .batch = imgs,
                          .stride_a = 0,
                          .stride_b = k * cols,
                          .stride_c = ys};
      rc = weft__cuda_gemm_ex(ctx, &g, want, want, ctx->act, NULL);
    }
  }
  /* back to the cache; later work on this stream is ordered after ours */
  weft__cuda_free(ctx, wtmp);
  return rc;
}

/* The direct kernel on x and y as stored (fp32 or 16-bit activations):
 * the weight read in fp32 (a registered half one widened first), rounded
 * in the kernel in 16-bit precision. */
static int run_direct(weft__cuda_ctx *ctx, const weft_conv2d_args *a,
                      int64_t h_out, int64_t w_out, int64_t xs, int64_t ys) {
  void *wtmp = NULL;
  const float *w = weft__cuda_f32_view(
      ctx, a->weight, a->c_out * a->c_in * a->k_h * a->k_w, &wtmp);
  if (!w) return WEFT_ENOMEM;
  const weft_dtype dt = weft__cuda_compute_dtype(ctx);
  const int round16 = ctx->precision == WEFT_CUDA_FP32 ? 0
                      : dt == WEFT_BF16                ? 2
                                                       : 1;
  int rc = weft__cuda_check(ctx,
                            weft__cu_conv_direct(ctx->stream, a, w, round16,
                                                 ctx->act, h_out, w_out, xs,
                                                 ys),
                            "conv2d (direct)");
  weft__cuda_free(ctx, wtmp);
  return rc;
}

/* Maps channels last (x_nhwc / y_nhwc) off the channels-last way (the
 * weight in [c_out, c_in, kk] by now): a pointwise convolution between
 * two such maps is one product over the pixels; anything else runs
 * channels first on moved copies (the residual's too: the same sums and
 * roundings; even channel counts, the moves' pairs).  The direct kernel
 * reading a channels-last x through strides took 2.1 ms for the VAE's
 * conv_out on an H200, against 0.41 channels first (its threads' reads
 * a pixel apart): the copy costs less. */
static int conv_cl(weft__cuda_ctx *ctx, const weft_conv2d_args *a,
                   int64_t h_out, int64_t w_out) {
  const int64_t sx = a->h_in * a->w_in, sy = h_out * w_out;
  const int64_t ny = a->batch * a->c_out * sy;
  int rc = 0;
  if (a->prenorm) return WEFT_EUNSUPPORTED;
  if (weft_conv2d_is_pointwise(a) && a->x_nhwc && a->y_nhwc && !a->chan_add) {
    void *btmp = NULL;
    const float *bias =
        a->bias ? weft__cuda_f32_view(ctx, a->bias, a->c_out, &btmp) : NULL;
    if (a->bias && !bias) return WEFT_ENOMEM;
    weft_gemm_args g = {.m = a->batch * sy,
                        .n = a->c_out,
                        .k = a->c_in,
                        .trans_b = 1,
                        .alpha = 1.0f,
                        .a = a->x,
                        .lda = a->c_in,
                        .b = a->weight,
                        .ldb = a->c_in,
                        .c = a->y,
                        .ldc = a->c_out,
                        .bias = bias,
                        .acts = WEFT_GEMM_ACT_A | WEFT_GEMM_ACT_C};
    rc = weft__cuda_gemm(ctx, &g);
    weft__cuda_free(ctx, btmp);
    if (!rc && a->residual)
      rc = weft__cuda_check(ctx,
                            weft__cu_conv_epilogue(ctx->stream, ctx->act, a->y,
                                                   NULL, a->residual, 1, ny, 1,
                                                   ny),
                            "conv2d: the residual");
  } else {
    if ((a->x_nhwc && a->c_in % 2) || (a->y_nhwc && a->c_out % 2))
      return weft__cuda_fail(ctx, WEFT_EUNSUPPORTED,
                             "conv2d: a channels-last map of %lld channels "
                             "(an odd count)",
                             (long long)(a->x_nhwc ? a->c_in : a->c_out));
    const size_t es = weft_dtype_size(ctx->act);
    void *tx =
        a->x_nhwc
            ? weft__cuda_alloc(ctx, (size_t)(a->batch * a->c_in * sx) * es)
            : NULL;
    void *ty = a->y_nhwc ? weft__cuda_alloc(ctx, (size_t)ny * es) : NULL;
    void *tr = a->y_nhwc && a->residual
                   ? weft__cuda_alloc(ctx, (size_t)ny * es)
                   : NULL;
    weft_conv2d_args c = *a;
    c.x_nhwc = c.y_nhwc = 0;
    if ((a->x_nhwc && !tx) || (a->y_nhwc && !ty) ||
        (a->y_nhwc && a->residual && !tr))
      rc = WEFT_ENOMEM;
    if (!rc && tx) {
      rc = weft__cuda_check(ctx,
                            weft__cu_nhwc_unpack(ctx->stream, a->x, ctx->act,
                                                 a->batch, a->h_in, a->w_in,
                                                 a->c_in, NULL, NULL, NULL, tx,
                                                 ctx->act, a->c_in * sx, sx, 0),
                            "conv2d: x channels first");
      c.x = tx, c.x_bstride = 0;
    }
    /* the residual moved too: the epilogue's sums and roundings are the
     * channels-first way's */
    if (!rc && tr)
      rc = weft__cuda_check(ctx,
                            weft__cu_nhwc_unpack(ctx->stream, a->residual,
                                                 ctx->act, a->batch, h_out,
                                                 w_out, a->c_out, NULL, NULL,
                                                 NULL, tr, ctx->act,
                                                 a->c_out * sy, sy, 0),
                            "conv2d: the residual channels first");
    if (ty) c.y = ty, c.y_bstride = 0, c.residual = tr;
    if (!rc) rc = weft__cuda_conv2d(ctx, &c);
    if (!rc && ty)
      rc = weft__cuda_check(
          ctx,
          weft__cu_nhwc_pack(ctx->stream, ty, ctx->act, a->c_out * sy, a->batch,
                             a->c_out, h_out, w_out, 0, h_out, 0, w_out, a->y,
                             ctx->act, NULL, 0),
          "conv2d: y channels last");
    weft__cuda_free(ctx, tx);
    weft__cuda_free(ctx, ty);
    weft__cuda_free(ctx, tr);
  }
  return rc;
}

int weft__cuda_conv2d(weft__cuda_ctx *ctx, const weft_conv2d_args *a) {
  int64_t h_out, w_out;
  int rc = weft_conv2d_check_shapes(a, &h_out, &w_out);
  if (rc == 0 && (!a->x || !a->weight || !a->y)) rc = WEFT_EINVAL;
  if (rc != 0) return rc;
  if (a->batch == 0) return 0;
  /* a prologue only on the channels-last way (applied as x moves); the
   * caller runs group_norm first anywhere else, or everywhere with
   * WEFT_CUDA_CONV_PRENORM=0 (an A/B switch) */
  const bool hwc = a->w_hwc && a->k_h * a->k_w > 1;
  if (a->prenorm && !(prenorm_wanted() && hwc && nhwc_eligible(ctx, a)))
    return WEFT_EUNSUPPORTED;
  const int64_t n = h_out * w_out, k = a->c_in * a->k_h * a->k_w;
  const int64_t xs = a->x_bstride ? a->x_bstride : a->c_in * a->h_in * a->w_in;
  const int64_t ys = a->y_bstride ? a->y_bstride : a->c_out * n;

  /* A bias registered as half is widened (it is added in fp32); so is the
   * weight in FP32 precision, where every path reads fp32. */
  weft_conv2d_args aa = *a;
  void *wtmp = NULL, *btmp = NULL, *whwc = NULL;
  if (hwc) {
    if (nhwc_eligible(ctx, a)) {
      if (a->bias &&
          !(aa.bias = weft__cuda_f32_view(ctx, a->bias, a->c_out, &btmp)))
        return WEFT_ENOMEM;
      rc = weft__cudnn_conv_nhwc(ctx, &aa);
      weft__cuda_free(ctx, btmp);
      if (rc != WEFT_EUNSUPPORTED) return rc;
      ctx->err[0] = 0;
      if (a->prenorm) return WEFT_EUNSUPPORTED;
      aa.bias = a->bias, btmp = NULL;
    }
    /* the weight back to [c_out, c_in, kk] (registered for this call as
     * the stored one is, when that is 16-bit) */
    const weft_dtype wdt = weft__cuda_weight_dtype(ctx, a->weight);
    const size_t wb = (size_t)(a->c_out * k) * weft_dtype_size(wdt);
    if (!(whwc = weft__cuda_alloc(ctx, wb))) return WEFT_ENOMEM;
    rc = weft__cuda_check(ctx,
                          weft__cu_conv_weight_layout(
                              ctx->stream, a->weight, (int)wdt, whwc, a->c_out,
                              a->c_in, a->k_h * a->k_w, 0),
                          "conv2d: the weight back from channels last");
    if (!rc && wdt != WEFT_F32)
      rc = weft__cuda_mark_range(ctx, whwc, wb, wdt);
    if (rc) {
      weft__cuda_free(ctx, whwc);
      return rc;
    }
    aa.weight = whwc, aa.w_hwc = 0;
    rc = weft__cuda_conv2d(ctx, &aa);
    if (wdt != WEFT_F32) weft__cuda_unmark_range(ctx, whwc);
    weft__cuda_free(ctx, whwc);
    return rc;
  }
  if (a->x_nhwc || a->y_nhwc) return conv_cl(ctx, a, h_out, w_out);
  if (ctx->precision == WEFT_CUDA_FP32 &&
      !(aa.weight = weft__cuda_f32_view(ctx, a->weight, a->c_out * k, &wtmp)))
    return WEFT_ENOMEM;
  if (a->bias &&
      !(aa.bias = weft__cuda_f32_view(ctx, a->bias, a->c_out, &btmp))) {
    weft__cuda_free(ctx, wtmp);
    return WEFT_ENOMEM;
  }
  a = &aa;

  /* cuDNN plans inside weft__cudnn_conv{,16}; a refusal (no
   * deterministic algorithm in the math mode asked for, or no kernel for
   * this configuration) falls through to im2col. */
  conv_path path = weft_conv2d_is_pointwise(a) ? PATH_GEMM
                   : direct_eligible(ctx, a)   ? PATH_DIRECT
                                               : PATH_IM2COL;
  if (path == PATH_IM2COL && cudnn_eligible(ctx, a)) {
    const bool c16 = ctx->precision != WEFT_CUDA_FP32;
    rc = c16 ? weft__cudnn_conv16(ctx, a) : weft__cudnn_conv(ctx, a);
    if (rc == WEFT_EUNSUPPORTED) {
      ctx->err[0] = 0;
      rc = 0;
    } else {
      path = c16 ? PATH_CUDNN16 : PATH_CUDNN;
    }
  }
  if (path == PATH_GEMM) {
    /* weight [c_out, c_in] times each image's [c_in, hw]: the GEMM
     * dispatch rounds x (and an unregistered weight) in 16-bit precision */
    weft_gemm_args g = {.m = a->c_out,
                        .n = n,
                        .k = k,
                        .alpha = 1.0f,
                        .beta = 0.0f,
                        .a = a->weight,
                        .lda = k,
                        .b = a->x,
                        .ldb = n,
                        .c = a->y,
                        .ldc = n,
                        .batch = a->batch,
                        .stride_a = 0,
                        .stride_b = xs,
                        .stride_c = ys,
                        .acts = WEFT_GEMM_ACT_B | WEFT_GEMM_ACT_C};
    rc = weft__cuda_gemm(ctx, &g);
  } else if (path == PATH_DIRECT) {
    rc = run_direct(ctx, a, h_out, w_out, xs, ys);
  } else if (path == PATH_IM2COL) {
    rc = run_im2col(ctx, a, w_out, n, k, xs, ys);
  }
  /* cudnn16 added the bias as it widened y, the direct kernel as it
   * wrote y */
  if (rc == 0 && a->bias && path != PATH_CUDNN16 && path != PATH_DIRECT)
    rc = weft__cuda_check(ctx,
                          weft__cu_bias_planes(ctx->stream, ctx->act, a->y,
                                               a->bias, a->batch, ys, a->c_out,
                                               n, n),
                          "conv2d bias");
  /* the epilogue after y is whole (the channels-last way adds it as it
   * moves y back) */
  if (rc == 0 && (a->chan_add || a->residual))
    rc = weft__cuda_check(ctx,
                          weft__cu_conv_epilogue(ctx->stream, ctx->act, a->y,
                                                 a->chan_add, a->residual,
                                                 a->batch, ys, a->c_out, n),
                          "conv2d epilogue");
  weft__cuda_free(ctx, wtmp);
  weft__cuda_free(ctx, btmp);
  return rc;
}
