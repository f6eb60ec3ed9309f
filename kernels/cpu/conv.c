/* conv.c - 2-D convolution (NCHW) as GEMM: 1x1 stride-1 convolutions read
 * the input directly as the GEMM's B matrix; everything else goes through
 * im2col in blocks of output columns, so the column buffer stays about
 * WEFT_CONV_BLOCK_BYTES whatever the image size (a full 3x3 im2col of a
 * 320-channel 64x64 map would be 47 MB, of a 128-channel 512x512 VAE map
 * 1.2 GB). */
#include <cblas.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Column blocks: about WEFT_CONV_BLOCK_BYTES of im2col matrix, but never
 * narrower than WEFT_CONV_MIN_COLS columns unless the image has fewer.
 * Measured with tools/bench_kernels on OpenBLAS 0.3.21 (Zen): a GEMM
 * writing a block of <= 320 columns into the wider output (ldc = h*w) runs
 * at a third of the speed of one with >= 384 (OpenBLAS packs the whole
 * block as one panel then, which overflows L2), and 8 MB blocks beat 2 MB
 * ones.  The block is written once and read once by OpenBLAS's packing. */
#ifndef WEFT_CONV_BLOCK_BYTES
#define WEFT_CONV_BLOCK_BYTES (8u << 20)
#endif
#define WEFT_CONV_MIN_COLS 384

static int check(const weft_conv2d_args *a, int64_t *h_out, int64_t *w_out) {
  int rc = weft_conv2d_check_shapes(a, h_out, w_out);
  if (rc == 0 && (!a->x || !a->weight || !a->y)) rc = WEFT_EINVAL;
  return rc;
}

/* Output columns per im2col block: blocks of equal width (a multiple of
 * 16) so the last one is not a narrow, slow remainder. */
static int64_t block_cols(int64_t k, int64_t n) {
  int64_t nb = (int64_t)(WEFT_CONV_BLOCK_BYTES / sizeof(float)) / k;
  if (nb < WEFT_CONV_MIN_COLS) nb = WEFT_CONV_MIN_COLS;
  if (nb >= n) return n;
  int64_t blocks = (n + nb - 1) / nb;
  nb = ((n + blocks - 1) / blocks + 15) / 16 * 16;
  return nb < n ? nb : n;
}

size_t weft_cpu_conv2d_scratch_bytes(const weft_cpu_ctx *ctx,
                                     const weft_conv2d_args *a) {
  (void)ctx;
  int64_t h_out, w_out;
  if (weft_conv2d_check_shapes(a, &h_out, &w_out) != 0 ||
      weft_conv2d_is_pointwise(a))
    return 0;
  int64_t k = a->c_in * a->k_h * a->k_w;
  return (size_t)(k * block_cols(k, h_out * w_out)) * sizeof(float);
}

typedef struct im2col_job {
  const weft_conv2d_args *a;
  const float *x; /* this image */
  float *col;     /* [k, nb] */
  int64_t h_out, w_out, n0, nb;
} im2col_job;

/* Fills rows [kb, ke) of the column block; row r = (c, ky, kx). */
static void im2col_rows(void *arg, int64_t kb, int64_t ke, int tid) {
  (void)tid;
  const im2col_job *j = arg;
  const weft_conv2d_args *a = j->a;
  const int64_t kk = a->k_h * a->k_w, sw = a->stride_w, w_in = a->w_in;
  for (int64_t r = kb; r < ke; r++) {
    int64_t c = r / kk, ky = (r % kk) / a->k_w, kx = r % a->k_w;
    const float *plane = j->x + c * a->h_in * w_in;
    float *dst = j->col + r * j->nb;
    /* Valid output columns: 0 <= ox*sw + kx - pad_left < w_in. */
    int64_t off = kx - a->pad_left;
    int64_t lo = off >= 0 ? 0 : (-off + sw - 1) / sw;
    int64_t hi = (w_in - off + sw - 1) / sw;
    if (hi > j->w_out) hi = j->w_out;
    if (hi < lo) hi = lo;
    int64_t n = j->n0, end = j->n0 + j->nb;
    while (n < end) {
      int64_t oy = n / j->w_out, ox0 = n % j->w_out;
      int64_t ox1 = j->w_out < ox0 + (end - n) ? j->w_out : ox0 + (end - n);
      int64_t iy = oy * a->stride_h + ky - a->pad_top;
      int64_t cnt = ox1 - ox0;
      if (iy < 0 || iy >= a->h_in) {
        memset(dst, 0, (size_t)cnt * sizeof(float));
      } else {
        const float *row = plane + iy * w_in;
        int64_t v0 = ox0 > lo ? ox0 : lo, v1 = ox1 < hi ? ox1 : hi;
        int64_t ox = ox0;
        for (; ox < v0 && ox < ox1; ox++)
          dst[ox - ox0] = 0.0f;
        if (sw == 1) {
          if (v1 > v0)
            memcpy(dst + (v0 - ox0), row + v0 + off,
                   (size_t)(v1 - v0) * sizeof(float));
          ox = v1 > v0 ? v1 : ox;
        } else {
          for (; ox < v1; ox++)
            dst[ox - ox0] = row[ox * sw + off];
        }
        for (; ox < ox1; ox++)
          dst[ox - ox0] = 0.0f;
      }
      dst += cnt;
      n += cnt;
    }
  }
}

typedef struct bias_job {
  float *y;
  const float *bias;
  int64_t ld, cols;
} bias_job;

static void add_bias(void *arg, int64_t b, int64_t e, int tid) {
  (void)tid;
  const bias_job *j = arg;
  for (int64_t o = b; o < e; o++) {
    float *y = j->y + o * j->ld, bv = j->bias[o];
    for (int64_t i = 0; i < j->cols; i++)
      y[i] += bv;
  }
}

/* The epilogue (weft_conv2d_args): per output plane, y += chan_add, then
 * y += residual -- the sums binary's and scale_add's loops form. */
typedef struct epi_job {
  const weft_conv2d_args *a;
  int64_t plane, ys;
} epi_job;

static void epilogue_planes(void *arg, int64_t b, int64_t e, int tid) {
  (void)tid;
  const epi_job *j = arg;
  const weft_conv2d_args *a = j->a;
  for (int64_t p = b; p < e; p++) {
    const int64_t img = p / a->c_out, o = p % a->c_out;
    const int64_t off = img * j->ys + o * j->plane;
    float *y = a->y + off;
    if (a->chan_add) {
      const float c = a->chan_add[p];
      for (int64_t i = 0; i < j->plane; i++)
        y[i] = y[i] + c;
    }
    if (a->residual) {
      const float *r = a->residual + off;
      for (int64_t i = 0; i < j->plane; i++)
        y[i] = y[i] + r[i];
    }
  }
}

static int conv2d_core(weft_cpu_ctx *ctx, const weft_conv2d_args *a,
                       int64_t h_out, int64_t w_out);

/* A channels-last x or y: the NCHW convolution on moved copies (the
 * residual added after y is moved, as the epilogue's last sum). */
static int conv2d_cl(weft_cpu_ctx *ctx, const weft_conv2d_args *a,
                     int64_t h_out, int64_t w_out) {
  const int64_t sx = a->h_in * a->w_in, sy = h_out * w_out;
  const int64_t nx = a->batch * a->c_in * sx, ny = a->batch * a->c_out * sy;
  float *tx = a->x_nhwc ? weft__alloc((size_t)nx * sizeof(float)) : NULL;
  float *ty = a->y_nhwc ? weft__alloc((size_t)ny * sizeof(float)) : NULL;
  int rc = (a->x_nhwc && !tx) || (a->y_nhwc && !ty) ? WEFT_ENOMEM : 0;
  weft_conv2d_args c = *a;
  c.x_nhwc = c.y_nhwc = 0;
  if (!rc && tx) {
    rc = weft_cpu_nchw_nhwc(ctx, a->x, tx, a->batch, a->c_in, sx, false);
    c.x = tx, c.x_bstride = 0;
  }
  if (ty) c.y = ty, c.y_bstride = 0, c.residual = NULL;
  if (!rc) rc = weft_cpu_conv2d(ctx, &c);
  if (!rc && ty)
    rc = weft_cpu_nchw_nhwc(ctx, ty, a->y, a->batch, a->c_out, sy, true);
  if (!rc && ty && a->residual)
    rc = weft_cpu_scale_add(ctx, a->y, 1.0f, a->y, 1.0f, a->residual, ny);
  free(tx);
  free(ty);
  return rc;
}

int weft_cpu_conv2d(weft_cpu_ctx *ctx, const weft_conv2d_args *a) {
  int64_t h_out, w_out;
  int rc = check(a, &h_out, &w_out);
  if (rc != 0) return rc;
  if ((a->x_nhwc || a->y_nhwc) && a->batch > 0)
    return conv2d_cl(ctx, a, h_out, w_out);
  if (a->prenorm && a->batch > 0) {
    /* the prologue: group_norm's output in a temporary, then the rest */
    const weft_conv2d_prenorm *pn = a->prenorm;
    const int64_t n = a->batch * a->c_in * a->h_in * a->w_in;
    float *t = weft__alloc((size_t)n * sizeof(float));
    if (!t) return WEFT_ENOMEM;
    weft_conv2d_args c = *a;
    c.x = t, c.x_bstride = 0, c.prenorm = NULL;
    rc = weft_cpu_group_norm(ctx, a->x, t, a->batch, a->c_in, a->h_in * a->w_in,
                             pn->groups, pn->eps, pn->gamma, pn->beta, pn->act);
    if (rc == 0) rc = weft_cpu_conv2d(ctx, &c);
    free(t);
    return rc;
  }
  if (a->w_hwc && a->k_h * a->k_w > 1) {
    /* a channels-last weight: the same values in [c_out, c_in, kk] */
    const int64_t kk = a->k_h * a->k_w;
    float *w = weft__alloc((size_t)(a->c_out * a->c_in * kk) * sizeof(float));
    if (!w) return WEFT_ENOMEM;
    weft_conv2d_weight_layout(a->weight, w, a->c_out, a->c_in, kk, false);
    weft_conv2d_args c = *a;
    c.weight = w, c.w_hwc = 0;
    rc = conv2d_core(ctx, &c, h_out, w_out);
    free(w);
  } else {
    rc = conv2d_core(ctx, a, h_out, w_out);
  }
  if (rc == 0 && (a->chan_add || a->residual) && a->batch > 0) {
    const int64_t plane = h_out * w_out;
    epi_job j = {a, plane, a->y_bstride ? a->y_bstride : a->c_out * plane};
    weft__parallel_for(ctx, a->batch * a->c_out, 1 + (1 << 15) / plane,
                       epilogue_planes, &j);
  }
  return rc;
}

/* y = conv(x) + bias, the shapes checked */
static int conv2d_core(weft_cpu_ctx *ctx, const weft_conv2d_args *a,
                       int64_t h_out, int64_t w_out) {
  const int64_t n = h_out * w_out, k = a->c_in * a->k_h * a->k_w;
  const int64_t xs = a->x_bstride ? a->x_bstride : a->c_in * a->h_in * a->w_in;
  const int64_t ys = a->y_bstride ? a->y_bstride : a->c_out * n;
  const int64_t bias_grain = 1 + (1 << 15) / n;

  if (weft_conv2d_is_pointwise(a)) {
    for (int64_t b = 0; b < a->batch; b++) {
      float *y = a->y + b * ys;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)a->c_out,
                  (int)n, (int)k, 1.0f, a->weight, (int)k, a->x + b * xs,
                  (int)n, 0.0f, y, (int)n);
      if (a->bias) {
        bias_job bj = {y, a->bias, n, n};
        weft__parallel_for(ctx, a->c_out, bias_grain, add_bias, &bj);
      }
    }
    return 0;
  }

  int64_t nb = block_cols(k, n);
  float *col = a->scratch;
  if (col) {
    int64_t fit = (int64_t)(a->scratch_bytes / sizeof(float)) / k;
    if (fit < 1) return WEFT_EINVAL;
    if (fit < nb) nb = fit;
  } else {
    col = weft__alloc((size_t)(k * nb) * sizeof(float));
    if (!col) return WEFT_ENOMEM;
  }
  for (int64_t b = 0; b < a->batch; b++) {
    for (int64_t n0 = 0; n0 < n; n0 += nb) {
      int64_t cols = n - n0 < nb ? n - n0 : nb;
      im2col_job j = {a, a->x + b * xs, col, h_out, w_out, n0, cols};
      weft__parallel_for(ctx, k, 1 + (1 << 14) / cols, im2col_rows, &j);
      float *y = a->y + b * ys + n0;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)a->c_out,
                  (int)cols, (int)k, 1.0f, a->weight, (int)k, col, (int)cols,
                  0.0f, y, (int)n);
      if (a->bias) {
        bias_job bj = {y, a->bias, n, cols};
        weft__parallel_for(ctx, a->c_out, 1 + (1 << 15) / cols, add_bias, &bj);
      }
    }
  }
  if (col != a->scratch) free(col);
  return 0;
}
