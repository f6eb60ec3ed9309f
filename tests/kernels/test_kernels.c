/* test_kernels.c - every CPU kernel against a plain reference written here
 * (double accumulation), on odd shapes, strided inputs, batch 1 and 3, for
 * each instruction set the CPU has.
 *
 * Tolerances.  Dot-product kernels (GEMM, linear, conv, attention) must be
 * within 1e-5 * sum|a_i b_i| + 1e-6 of the double result: a float sum of K
 * terms is within K * 2^-24 of it in the worst case, and K <= 600 here.
 * Pointwise math (activations, softmax) must be within 1e-6 absolute plus
 * 4e-6 relative (a few float ulps); norms within 4e-6 of the magnitude of
 * their terms ((|x| + |mean|) * rstd * |gamma| + |beta|), the accuracy
 * any float evaluation (torch's included) has.  Data movement and +-x/ are
 * exact. */
#include <pthread.h>

#include "kernels/backend.h"
#include "kref.h"

/* ---- references ---------------------------------------------------------- */

/* op(A)[i][p] for row-major storage */
static double at(const float *m, int64_t ld, int trans, int64_t i, int64_t p) {
  return trans ? m[p * ld + i] : m[i * ld + p];
}

static void ref_gemm(const weft_gemm_args *g, const float *c0, double *ref,
                     double *mag) {
  int64_t batch = g->batch ? g->batch : 1;
  for (int64_t b = 0; b < batch; b++)
    for (int64_t i = 0; i < g->m; i++)
      for (int64_t j = 0; j < g->n; j++) {
        double s = 0, a = 0;
        for (int64_t p = 0; p < g->k; p++) {
          double t = at(g->a + b * g->stride_a, g->lda, g->trans_a, i, p) *
                     at(g->b + b * g->stride_b, g->ldb, !g->trans_b, j, p);
          s += t;
          a += fabs(t);
        }
        int64_t o = b * g->stride_c + i * g->ldc + j;
        double cv = g->beta == 0 ? 0 : (double)g->beta * c0[o];
        double bv = !g->bias ? 0 : g->bias[g->bias_per_row ? i : j];
        ref[o] = g->alpha * s + cv + bv;
        mag[o] = fabs(g->alpha) * a + fabs(cv) + fabs(bv);
      }
}

TEST(gemm_matches_reference_for_all_transposes_and_odd_shapes) {
  weft_cpu_ctx *ctx = weft_cpu_ctx_new(2);
  uint64_t s = 1;
  const int64_t shapes[][3] = {
      {1, 1, 1}, {7, 5, 3}, {33, 17, 65}, {64, 128, 96}, {3, 1, 200}};
  for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++)
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++)
        for (int batch = 1; batch <= 3; batch += 2) {
          int64_t m = shapes[si][0], n = shapes[si][1], k = shapes[si][2];
          /* leading dims padded past the row length: strided views */
          int64_t lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 1, ldc = n + 2;
          int64_t sa = lda * (ta ? k : m) + 5, sb = 0, sc = ldc * m + 1;
          float *a = kr_rand(&s, sa * batch, -1, 1);
          float *b = kr_rand(&s, ldb * (tb ? n : k), -1, 1);
          float *c = kr_rand(&s, sc * batch, -1, 1);
          double *ref = kr_zalloc(sizeof(double) * sc * batch);
          double *mag = kr_zalloc(sizeof(double) * sc * batch);
          weft_gemm_args g = {.m = m,
                              .n = n,
                              .k = k,
                              .trans_a = ta,
                              .trans_b = tb,
                              .alpha = 0.75f,
                              .beta = 0.5f,
                              .a = a,
                              .lda = lda,
                              .b = b,
                              .ldb = ldb,
                              .c = c,
                              .ldc = ldc,
                              .batch = batch,
                              .stride_a = sa,
                              .stride_b = sb,
                              .stride_c = sc};
          /* the padding between rows must survive untouched */
          for (int64_t i = 0; i < sc * batch; i++)
            ref[i] = c[i], mag[i] = 0;
          ref_gemm(&g, c, ref, mag);
          ASSERT_OK(weft_cpu_gemm(ctx, &g));
          ASSERT_CLOSE(c, ref, mag, sc * batch, 1e-6, 1e-5);
          free(a), free(b), free(c), free(ref), free(mag);
        }
  weft_cpu_ctx_free(ctx);
}

/* A bias per column ([n]) or per row ([m]) added in every batch item, with
 * beta, strided rows (the padding untouched) and k = 0. */
TEST(gemm_adds_a_bias_per_column_or_per_row) {
  weft_cpu_ctx *ctx = weft_cpu_ctx_new(2);
  uint64_t s = 7;
  const int64_t m = 9, n = 13, k = 21, ldc = n + 3, sc = ldc * m + 2, bt = 3;
  float *a = kr_rand(&s, m * k * bt, -1, 1), *b = kr_rand(&s, k * n, -1, 1);
  float *bias = kr_rand(&s, m > n ? m : n, -2, 2);
  for (int per_row = 0; per_row < 2; per_row++)
    for (int64_t kk = 0; kk <= k; kk += k) {
      float *c = kr_rand(&s, sc * bt, -1, 1);
      double *ref = kr_zalloc(sizeof(double) * sc * bt);
      double *mag = kr_zalloc(sizeof(double) * sc * bt);
      weft_gemm_args g = {.m = m,
                          .n = n,
                          .k = kk,
                          .alpha = 1.25f,
                          .beta = 1.0f,
                          .a = a,
                          .lda = k,
                          .b = b,
                          .ldb = n,
                          .c = c,
                          .ldc = ldc,
                          .batch = bt,
                          .stride_a = m * k,
                          .stride_c = sc,
                          .bias = bias,
                          .bias_per_row = per_row};
      for (int64_t i = 0; i < sc * bt; i++)
        ref[i] = c[i], mag[i] = 0;
      ref_gemm(&g, c, ref, mag);
      ASSERT_OK(weft_cpu_gemm(ctx, &g));
      ASSERT_CLOSE(c, ref, mag, sc * bt, 1e-6, 1e-5);
      free(c), free(ref), free(mag);
    }
  free(a), free(b), free(bias);
  weft_cpu_ctx_free(ctx);
}

TEST(gemm_beta_zero_ignores_nan_in_c_and_k_zero_scales_c) {
  weft_cpu_ctx *ctx = weft_cpu_ctx_new(1);
  float a[6] = {1, 2, 3, 4, 5, 6}, b[6] = {1, 0, 0, 1, 1, 1}, c[4];
  for (int i = 0; i < 4; i++)
    c[i] = NAN;
  weft_gemm_args g = {.m = 2,
                      .n = 2,
                      .k = 3,
                      .alpha = 1,
                      .beta = 0,
                      .a = a,
                      .lda = 3,
                      .b = b,
                      .ldb = 2,
                      .c = c,
                      .ldc = 2};
  ASSERT_OK(weft_cpu_gemm(ctx, &g));
  ASSERT_EQ(c[0], 4); /* [1 2 3] . [1 0 1] */
  ASSERT_EQ(c[1], 5);
  ASSERT_EQ(c[2], 10);
  ASSERT_EQ(c[3], 11);
  g.k = 0;
  g.beta = 2;
  ASSERT_OK(weft_cpu_gemm(ctx, &g));
  ASSERT_EQ(c[0], 8);
  ASSERT_EQ(c[3], 22);
  weft_cpu_ctx_free(ctx);
}

TEST(gemm_rejects_row_strides_shorter_than_rows) {
  weft_cpu_ctx *ctx = weft_cpu_ctx_new(1);
  float a[8] = {0}, b[8] = {0}, c[8] = {0};
  weft_gemm_args g = {.m = 2,
                      .n = 2,
                      .k = 3,
                      .alpha = 1,
                      .a = a,
                      .lda = 2,
                      .b = b,
                      .ldb = 2,
                      .c = c,
                      .ldc = 2};
  ASSERT_EQ(weft_cpu_gemm(ctx, &g), WEFT_EINVAL); /* lda 2 < k 3 */
  g.lda = 3;
  g.ldc = 1;
  ASSERT_EQ(weft_cpu_gemm(ctx, &g), WEFT_EINVAL);
  g.ldc = 2;
  g.m = -1;
  ASSERT_EQ(weft_cpu_gemm(ctx, &g), WEFT_EINVAL);
  ASSERT_EQ(weft_cpu_gemm(ctx, NULL), WEFT_EINVAL);
  weft_cpu_ctx_free(ctx);
}

TEST(linear_matches_reference_with_and_without_bias) {
  weft_cpu_ctx *ctx = weft_cpu_ctx_new(2);
  uint64_t s = 2;
  const int64_t shapes[][3] = {
      {1, 5, 1}, {3, 7, 13}, {77, 768, 33}, {300, 64, 129}};
  for (size_t si = 0; si < 4; si++)
    for (int with_bias = 0; with_bias < 2; with_bias++) {
      int64_t rows = shapes[si][0], in = shapes[si][1], out = shapes[si][2];
      float *x = kr_rand(&s, rows * in, -2, 2);
      float *w = kr_rand(&s, out * in, -0.5f, 0.5f);
      float *bias = with_bias ? kr_rand(&s, out, -1, 1) : NULL;
      float *y = kr_zalloc(sizeof(float) * rows * out);
      double *ref = kr_zalloc(sizeof(double) * rows * out);
      double *mag = kr_zalloc(sizeof(double) * rows * out);
      for (int64_t r = 0; r < rows; r++)
        for (int64_t o = 0; o < out; o++) {
          double acc = bias ? bias[o] : 0, a = fabs(acc);
          for (int64_t i = 0; i < in; i++) {
            acc += (double)x[r * in + i] * w[o * in + i];
            a += fabs((double)x[r * in + i] * w[o * in + i]);
          }
          ref[r * out + o] = acc;
          mag[r * out + o] = a;
        }
      ASSERT_OK(weft_cpu_linear(ctx, x, rows, in, w, bias, out, y));
      ASSERT_CLOSE(y, ref, mag, rows * out, 1e-6, 1e-5);
      free(x), free(w), free(bias), free(y), free(ref), free(mag);
    }
  weft_cpu_ctx_free(ctx);
}

/* ---- conv2d -----------------------------------------------------------------
 */

static void ref_conv(const weft_conv2d_args *a, double *ref, double *mag) {
  int64_t ho = weft_conv2d_out_size(a->h_in, a->k_h, a->stride_h, a->pad_top,
                                    a->pad_bottom);
  int64_t wo = weft_conv2d_out_size(a->w_in, a->k_w, a->stride_w, a->pad_left,
                                    a->pad_right);
  int64_t xs = a->x_bstride ? a->x_bstride : a->c_in * a->h_in * a->w_in;
  int64_t ys = a->y_bstride ? a->y_bstride : a->c_out * ho * wo;
  for (int64_t b = 0; b < a->batch; b++)
    for (int64_t o = 0; o < a->c_out; o++)
      for (int64_t oy = 0; oy < ho; oy++)
        for (int64_t ox = 0; ox < wo; ox++) {
          double acc = a->bias ? a->bias[o] : 0, m = fabs(acc);
          for (int64_t c = 0; c < a->c_in; c++)
            for (int64_t ky = 0; ky < a->k_h; ky++)
              for (int64_t kx = 0; kx < a->k_w; kx++) {
                int64_t iy = oy * a->stride_h + ky - a->pad_top;
                int64_t ix = ox * a->stride_w + kx - a->pad_left;
                if (iy < 0 || iy >= a->h_in || ix < 0 || ix >= a->w_in)
                  continue;
                double t =
                    (double)a->x[b * xs + (c * a->h_in + iy) * a->w_in + ix] *
                    a->weight[((o * a->c_in + c) * a->k_h + ky) * a->k_w + kx];
                acc += t;
                m += fabs(t);
              }
          int64_t i = b * ys + (o * ho + oy) * wo + ox;
          ref[i] = acc;
          mag[i] = m;
        }
}

/* Runs one conv against the reference; ybuf_extra pads y past its image
 * stride so writes outside the image are caught. */
static void check_conv(weft_cpu_ctx *ctx, weft_conv2d_args a, uint64_t *s,
                       int with_bias) {
  int64_t ho =
      weft_conv2d_out_size(a.h_in, a.k_h, a.stride_h, a.pad_top, a.pad_bottom);
  int64_t wo =
      weft_conv2d_out_size(a.w_in, a.k_w, a.stride_w, a.pad_left, a.pad_right);
  int64_t xs = a.x_bstride ? a.x_bstride : a.c_in * a.h_in * a.w_in;
  int64_t ys = a.y_bstride ? a.y_bstride : a.c_out * ho * wo;
  float *x = kr_rand(s, xs * a.batch, -1, 1);
  float *w = kr_rand(s, a.c_out * a.c_in * a.k_h * a.k_w, -0.5f, 0.5f);
  float *bias = with_bias ? kr_rand(s, a.c_out, -1, 1) : NULL;
  float *y = kr_zalloc(sizeof(float) * ys * a.batch);
  double *ref = kr_zalloc(sizeof(double) * ys * a.batch);
  double *mag = kr_zalloc(sizeof(double) * ys * a.batch);
  for (int64_t i = 0; i < ys * a.batch; i++)
    y[i] = 42.0f, ref[i] = 42.0;
  a.x = x, a.weight = w, a.bias = bias, a.y = y;
  ref_conv(&a, ref, mag);
  ASSERT_OK(weft_cpu_conv2d(ctx, &a));
  ASSERT_CLOSE(y, ref, mag, ys * a.batch, 1e-6, 1e-5);
  free(x), free(w), free(bias), free(y), free(ref), free(mag);
}

TEST(conv2d_3x3_padding_1_matches_reference_batch_1_and_3) {
  weft_cpu_ctx *ctx = weft_cpu_ctx_new(2);
  uint64_t s = 3;
  for (int64_t batch = 1; batch <= 3; batch += 2)
    for (int with_bias = 0; with_bias < 2; with_bias++) {
      weft_conv2d_args a = {.batch = batch,
                            .c_in = 3,
                            .h_in = 9,
                            .w_in = 7,
                            .c_out = 5,
                            .k_h = 3,
                            .k_w = 3,
                            .stride_h = 1,
                            .stride_w = 1,
                            .pad_top = 1,
                            .pad_left = 1,
                            .pad_bottom = 1,
                            .pad_right = 1};
      check_conv(ctx, a, &s, with_bias);
      a.h_in = a.w_in = 1; /* 1x1 image: only the centre tap sees data */
      check_conv(ctx, a, &s, with_bias);
      a.c_in = 1, a.c_out = 1, a.h_in = 2, a.w_in = 13;
      check_conv(ctx, a, &s, with_bias);
    }
  weft_cpu_ctx_free(ctx);
}

TEST(conv2d_1x1_runs_as_gemm_and_matches_reference) {
  weft_cpu_ctx *ctx = weft_cpu_ctx_new(2);
  uint64_t s = 4;
  weft_conv2d_args a = {.batch = 3,
                        .c_in = 17,
                        .h_in = 5,
                        .w_in = 11,
                        .c_out = 9,
                        .k_h = 1,
                        .k_w = 1,
                        .stride_h = 1,
                        .stride_w = 1};
  ASSERT_EQ(weft_cpu_conv2d_scratch_bytes(ctx, &a), 0);
  check_conv(ctx, a, &s, 1);
  a.batch = 1, a.c_in = 1, a.c_out = 1, a.h_in = 1, a.w_in = 1;
  check_conv(ctx, a, &s, 0);
  weft_cpu_ctx_free(ctx);
}

TEST(conv2d_stride_2_with_symmetric_and_asymmetric_padding) {
  weft_cpu_ctx *ctx = weft_cpu_ctx_new(2);
  uint64_t s = 5;
  /* UNet Downsample2D: 3x3, stride 2, padding 1 */
  weft_conv2d_args a = {.batch = 3,
                        .c_in = 4,
                        .h_in = 9,
                        .w_in = 8,
                        .c_out = 6,
                        .k_h = 3,
                        .k_w = 3,
                        .stride_h = 2,
                        .stride_w = 2,
                        .pad_top = 1,
                        .pad_left = 1,
                        .pad_bottom = 1,
                        .pad_right = 1};
  check_conv(ctx, a, &s, 1);
  /* VAE encoder Downsample2D: F.pad(x, (0,1,0,1)) then stride 2, no pad */
  a.pad_top = a.pad_left = 0;
  ASSERT_EQ(weft_conv2d_out_size(8, 3, 2, 0, 1), 4);
  check_conv(ctx, a, &s, 1);
  /* the VAE's stem: a 1x1 stride-2 conv goes through im2col, not GEMM */
  a.k_h = a.k_w = 1, a.pad_bottom = a.pad_right = 0;
  check_conv(ctx, a, &s, 0);
  /* non-square kernel and stride, larger padding */
  weft_conv2d_args b = {.batch = 1,
                        .c_in = 2,
                        .h_in = 6,
                        .w_in = 10,
                        .c_out = 3,
                        .k_h = 2,
                        .k_w = 5,
                        .stride_h = 1,
                        .stride_w = 3,
                        .pad_top = 2,
                        .pad_left = 4,
                        .pad_bottom = 0,
                        .pad_right = 1};
  check_conv(ctx, b, &s, 1);
  weft_cpu_ctx_free(ctx);
}

TEST(conv2d_column_blocks_match_reference_for_any_scratch_size) {
  weft_cpu_ctx *ctx = weft_cpu_ctx_new(2);
  uint64_t s = 6;
  /* K = 64*9 = 576: 8 MB blocks hold 3640 of the 4096 columns, so the
   * image goes in two equal blocks of 2048 */
  weft_conv2d_args a = {.batch = 1,
                        .c_in = 64,
                        .h_in = 64,
                        .w_in = 64,
                        .c_out = 4,
                        .k_h = 3,
                        .k_w = 3,
                        .stride_h = 1,
                        .stride_w = 1,
                        .pad_top = 1,
                        .pad_left = 1,
                        .pad_bottom = 1,
                        .pad_right = 1};
  size_t need = weft_cpu_conv2d_scratch_bytes(ctx, &a);
  ASSERT_EQ(need, (size_t)576 * 2048 * 4);
  check_conv(ctx, a, &s, 1);
  /* caller-supplied scratch of 5 columns (and of 1): same result */
  a.c_in = 3, a.h_in = 7, a.w_in = 9;
  for (int cols = 1; cols <= 5; cols += 4) {
    float *scratch = kr_zalloc((size_t)27 * cols * sizeof(float));
    a.scratch = scratch;
    a.scratch_bytes = (size_t)27 * cols * sizeof(float);
    check_conv(ctx, a, &s, 1);
    free(scratch);
  }
  a.scratch_bytes = 4; /* less than one column */
  float one = 0;
  a.scratch = &one;
  float x[189] = {0}, w[135] = {0}, y[315];
  a.x = x, a.weight = w, a.y = y;
  ASSERT_EQ(weft_cpu_conv2d(ctx, &a), WEFT_EINVAL);
  weft_cpu_ctx_free(ctx);
}

TEST(conv2d_writes_into_a_strided_batch_slice) {
  weft_cpu_ctx *ctx = weft_cpu_ctx_new(2);
  uint64_t s = 7;
  /* input images inside a [3, 10, 6, 6] buffer, output into channels 0..4
   * of a [3, 9, 6, 6] concat buffer: the 42.0 fill around them must stay */
  weft_conv2d_args a = {.batch = 3,
                        .c_in = 4,
                        .h_in = 6,
                        .w_in = 6,
                        .c_out = 5,
                        .k_h = 3,
                        .k_w = 3,
                        .stride_h = 1,
                        .stride_w = 1,
                        .pad_top = 1,
                        .pad_left = 1,
                        .pad_bottom = 1,
                        .pad_right = 1,
                        .x_bstride = 10 * 36,
                        .y_bstride = 9 * 36};
  check_conv(ctx, a, &s, 1);
  a.k_h = a.k_w = 1, a.pad_top = a.pad_left = a.pad_bottom = a.pad_right = 0;
  check_conv(ctx, a, &s, 1);
  weft_cpu_ctx_free(ctx);
}

/* A weight stored channels last (w_hwc): the same output bit for bit as
 * the [c_out, c_in, kh, kw] weight, and the layout helper's two ways
 * inverse of each other; a 1x1 weight is the same either way. */
TEST(conv2d_channels_last_weight_gives_the_same_bits) {
  weft_cpu_ctx *ctx = weft_cpu_ctx_new(2);
  uint64_t s = 8;
  weft_conv2d_args a = {.batch = 2,
                        .c_in = 6,
                        .h_in = 9,
                        .w_in = 7,
                        .c_out = 5,
                        .k_h = 3,
                        .k_w = 2,
                        .stride_h = 2,
                        .stride_w = 1,
                        .pad_top = 0,
                        .pad_left = 1,
                        .pad_bottom = 1,
                        .pad_right = 0};
  for (int pw = 0; pw < 2; pw++) {
    if (pw) a.k_h = a.k_w = 1, a.pad_left = a.pad_bottom = 0;
    const int64_t kk = a.k_h * a.k_w, nw = a.c_out * a.c_in * kk;
    const int64_t ho = weft_conv2d_out_size(a.h_in, a.k_h, a.stride_h,
                                            a.pad_top, a.pad_bottom);
    const int64_t wo = weft_conv2d_out_size(a.w_in, a.k_w, a.stride_w,
                                            a.pad_left, a.pad_right);
    const int64_t ny = a.batch * a.c_out * ho * wo;
    float *x = kr_rand(&s, a.batch * a.c_in * a.h_in * a.w_in, -1, 1);
    float *w = kr_rand(&s, nw, -0.5f, 0.5f), *b = kr_rand(&s, a.c_out, -1, 1);
    float *wh = kr_zalloc(sizeof(float) * nw),
          *back = kr_zalloc(sizeof(float) * nw);
    float *y0 = kr_zalloc(sizeof(float) * ny),
          *y1 = kr_zalloc(sizeof(float) * ny);
    weft_conv2d_weight_layout(w, wh, a.c_out, a.c_in, kk, true);
    weft_conv2d_weight_layout(wh, back, a.c_out, a.c_in, kk, false);
    ASSERT(memcmp(back, w, sizeof(float) * nw) == 0);
    if (!pw) /* [o][r][c] = [o][c][r]: output channel 1, tap 2, channel 3 */
      ASSERT(wh[1 * a.c_in * kk + 2 * a.c_in + 3] ==
             w[1 * a.c_in * kk + 3 * kk + 2]);
    else
      ASSERT(memcmp(wh, w, sizeof(float) * nw) == 0);
    a.x = x, a.bias = b;
    a.weight = w, a.y = y0, a.w_hwc = 0;
    ASSERT_OK(weft_cpu_conv2d(ctx, &a));
    a.weight = wh, a.y = y1, a.w_hwc = 1;
    ASSERT_OK(weft_cpu_conv2d(ctx, &a));
    ASSERT(memcmp(y0, y1, sizeof(float) * ny) == 0);
    free(x), free(w), free(b), free(wh), free(back), free(y0), free(y1);
  }
  weft_cpu_ctx_free(ctx);
}

/* The epilogue (chan_add, residual): the same bits as the conv followed by
 * binary's broadcast add and scale_add with 1 and 1, on the im2col, 1x1
 * and channels-last ways, with batch strides; and either overlapping y
 * refused. */
TEST(conv2d_epilogue_gives_the_bits_of_the_separate_ops) {
  weft_cpu_ctx *ctx = weft_cpu_ctx_new(2);
  uint64_t s = 9;
  for (int way = 0; way < 3; way++) {
    weft_conv2d_args a = {.batch = 2,
                          .c_in = 6,
                          .h_in = 9,
                          .w_in = 7,
                          .c_out = 5,
                          .k_h = way == 1 ? 1 : 3,
                          .k_w = way == 1 ? 1 : 3,
                          .stride_h = 1,
                          .stride_w = 1,
                          .pad_top = way == 1 ? 0 : 1,
                          .pad_left = way == 1 ? 0 : 1,
                          .pad_bottom = way == 1 ? 0 : 1,
                          .pad_right = way == 1 ? 0 : 1,
                          .y_bstride = 5 * 63 + 11};
    const int64_t kk = a.k_h * a.k_w, nw = a.c_out * a.c_in * kk;
    const int64_t ny = a.y_bstride * a.batch;
    float *x = kr_rand(&s, a.batch * a.c_in * a.h_in * a.w_in, -1, 1);
    float *w = kr_rand(&s, nw, -0.5f, 0.5f), *b = kr_rand(&s, a.c_out, -1, 1);
    float *ch = kr_rand(&s, a.batch * a.c_out, -1, 1);
    float *res = kr_rand(&s, ny, -1, 1);
    float *y0 = kr_rand(&s, ny, -1, 1), *y1 = kr_zalloc(sizeof(float) * ny);
    memcpy(y1, y0, sizeof(float) * ny); /* the gaps between images kept */
    float *wh = kr_zalloc(sizeof(float) * nw);
    weft_conv2d_weight_layout(w, wh, a.c_out, a.c_in, kk, true);
    a.x = x, a.bias = b, a.weight = w, a.y = y0;
    ASSERT_OK(weft_cpu_conv2d(ctx, &a));
    for (int64_t i = 0; i < a.batch; i++) { /* the separate ops */
      float *yi = y0 + i * a.y_bstride;
      const float *ri = res + i * a.y_bstride;
      const int64_t ys[4] = {1, a.c_out, 9, 7}, cs[4] = {1, a.c_out, 1, 1};
      ASSERT_OK(weft_cpu_binary(ctx, WEFT_BIN_ADD, yi, 4, ys, ch + i * a.c_out,
                                4, cs, yi));
      ASSERT_OK(weft_cpu_scale_add(ctx, yi, 1.0f, yi, 1.0f, ri, a.c_out * 63));
    }
    a.y = y1, a.chan_add = ch, a.residual = res;
    if (way == 2) a.weight = wh, a.w_hwc = 1;
    ASSERT_OK(weft_cpu_conv2d(ctx, &a));
    ASSERT(memcmp(y0, y1, sizeof(float) * ny) == 0);
    a.residual = y1;
    ASSERT_EQ(weft_cpu_conv2d(ctx, &a), WEFT_EINVAL);
    a.residual = res, a.chan_add = y1;
    ASSERT_EQ(weft_cpu_conv2d(ctx, &a), WEFT_EINVAL);
    free(x), free(w), free(b), free(ch), free(res), free(y0), free(y1);
    free(wh);
  }
  weft_cpu_ctx_free(ctx);
}

/* The prologue (weft_conv2d_args.prenorm): the bits of group_norm (+ the
 * activation) into a buffer, then the convolution of that buffer, with
 * the epilogue and a channels-last weight too; bad prologues refused. */
TEST(conv2d_prenorm_gives_the_bits_of_group_norm_then_the_conv) {
  weft_cpu_ctx *ctx = weft_cpu_ctx_new(2);
  uint64_t s = 21;
  weft_conv2d_args a = {.batch = 2,
                        .c_in = 8,
                        .h_in = 9,
                        .w_in = 7,
                        .c_out = 5,
                        .k_h = 3,
                        .k_w = 3,
                        .stride_h = 1,
                        .stride_w = 1,
                        .pad_top = 1,
                        .pad_left = 1,
                        .pad_bottom = 1,
                        .pad_right = 1};
  const int64_t nx = a.batch * a.c_in * 63, ny = a.batch * a.c_out * 63;
  const int64_t nw = a.c_out * a.c_in * 9;
  float *x = kr_rand(&s, nx, -2, 3), *w = kr_rand(&s, nw, -0.5f, 0.5f);
  float *b = kr_rand(&s, a.c_out, -1, 1), *g = kr_rand(&s, a.c_in, 0.5f, 1.5f);
  float *be = kr_rand(&s, a.c_in, -0.5f, 0.5f);
  float *ch = kr_rand(&s, a.batch * a.c_out, -1, 1), *res = kr_rand(&s, ny, -1, 1);
  float *t = kr_zalloc(sizeof(float) * nx), *y0 = kr_zalloc(sizeof(float) * ny);
  float *y1 = kr_zalloc(sizeof(float) * ny), *wh = kr_zalloc(sizeof(float) * nw);
  weft_conv2d_weight_layout(w, wh, a.c_out, a.c_in, 9, true);
  ASSERT_OK(weft_cpu_group_norm(ctx, x, t, a.batch, a.c_in, 63, 4, 1e-5f, g, be,
                                WEFT_ACT_SILU));
  a.x = t, a.weight = w, a.bias = b, a.y = y0, a.chan_add = ch, a.residual = res;
  ASSERT_OK(weft_cpu_conv2d(ctx, &a));
  weft_conv2d_prenorm pn = {4, 1e-5f, g, be, WEFT_ACT_SILU};
  a.x = x, a.y = y1, a.prenorm = &pn, a.weight = wh, a.w_hwc = 1;
  ASSERT_OK(weft_cpu_conv2d(ctx, &a));
  ASSERT(memcmp(y0, y1, sizeof(float) * ny) == 0);
  pn.groups = 3; /* 8 channels in 3 groups */
  ASSERT_EQ(weft_cpu_conv2d(ctx, &a), WEFT_EINVAL);
  pn.groups = 4, pn.act = WEFT_ACT_COUNT;
  ASSERT_EQ(weft_cpu_conv2d(ctx, &a), WEFT_EINVAL);
  pn.act = WEFT_ACT_SILU, a.x_bstride = a.c_in * 63 + 1; /* not packed */
  ASSERT_EQ(weft_cpu_conv2d(ctx, &a), WEFT_EINVAL);
  free(x), free(w), free(b), free(g), free(be), free(ch), free(res);
  free(t), free(y0), free(y1), free(wh);
  weft_cpu_ctx_free(ctx);
}

/* [b][c][s] <-> [b][s][c] by hand (to_nhwc: into the latter) */
static float *moved(const float *x, int64_t b, int64_t c, int64_t sp,
                    bool to_nhwc) {
  float *y = kr_zalloc(sizeof(float) * b * c * sp);
  for (int64_t n = 0; n < b; n++)
    for (int64_t ch = 0; ch < c; ch++)
      for (int64_t q = 0; q < sp; q++) {
        const int64_t f = (n * c + ch) * sp + q, l = (n * sp + q) * c + ch;
        y[to_nhwc ? l : f] = x[to_nhwc ? f : l];
      }
  return y;
}

/* x and y channels last, each or both, with the prologue and the
 * epilogue (the residual laid out as y): the channels-first values,
 * moved, bit for bit; group_norm_cl and upsample_nearest2x_cl likewise. */
TEST(channels_last_maps_give_the_moved_bits) {
  weft_cpu_ctx *ctx = weft_cpu_ctx_new(2);
  uint64_t s = 23;
  const int64_t B = 2, C = 8, H = 9, W = 7, O = 6, S = H * W;
  const int64_t nx = B * C * S, ny = B * O * S, nw = O * C * 9;
  float *x = kr_rand(&s, nx, -2, 3), *w = kr_rand(&s, nw, -0.5f, 0.5f);
  float *b = kr_rand(&s, O, -1, 1), *g = kr_rand(&s, C, 0.5f, 1.5f);
  float *be = kr_rand(&s, C, -0.5f, 0.5f);
  float *ch = kr_rand(&s, B * O, -1, 1), *res = kr_rand(&s, ny, -1, 1);
  float *xm = moved(x, B, C, S, true), *rm = moved(res, B, O, S, true);
  float *y0 = kr_zalloc(sizeof(float) * ny),
        *y1 = kr_zalloc(sizeof(float) * ny);
  weft_conv2d_prenorm pn = {4, 1e-5f, g, be, WEFT_ACT_SILU};
  for (int k = 0; k < 3; k++) {
    const int xc = k != 1, yc = k != 2;
    weft_conv2d_args a = {.batch = B,
                          .c_in = C,
                          .h_in = H,
                          .w_in = W,
                          .c_out = O,
                          .k_h = 3,
                          .k_w = 3,
                          .stride_h = 1,
                          .stride_w = 1,
                          .pad_top = 1,
                          .pad_left = 1,
                          .pad_bottom = 1,
                          .pad_right = 1,
                          .x = x,
                          .weight = w,
                          .bias = b,
                          .y = y0,
                          .chan_add = ch,
                          .residual = res,
                          .prenorm = &pn};
    ASSERT_OK(weft_cpu_conv2d(ctx, &a));
    a.x = xc ? xm : x, a.y = y1, a.residual = yc ? rm : res;
    a.x_nhwc = xc, a.y_nhwc = yc;
    ASSERT_OK(weft_cpu_conv2d(ctx, &a));
    float *back = yc ? moved(y1, B, O, S, false) : NULL;
    ASSERT(memcmp(back ? back : y1, y0, sizeof(float) * ny) == 0);
    free(back);
    if (xc) { /* channels last: packed images only */
      a.x_bstride = C * S + 8;
      ASSERT_EQ(weft_cpu_conv2d(ctx, &a), WEFT_EINVAL);
    }
  }
  /* group norm and upsampling */
  float *n0 = kr_zalloc(sizeof(float) * nx),
        *n1 = kr_zalloc(sizeof(float) * nx);
  ASSERT_OK(
      weft_cpu_group_norm(ctx, x, n0, B, C, S, 4, 1e-5f, g, be, WEFT_ACT_SILU));
  ASSERT_OK(weft_cpu_group_norm_cl(ctx, xm, n1, B, C, S, 4, 1e-5f, g, be,
                                   WEFT_ACT_SILU));
  float *nb = moved(n1, B, C, S, false);
  ASSERT(memcmp(nb, n0, sizeof(float) * nx) == 0);
  ASSERT_EQ(weft_cpu_group_norm_cl(ctx, xm, n1, B, C, S, 3, 1e-5f, g, be,
                                   WEFT_ACT_SILU),
            WEFT_EINVAL);
  float *u0 = kr_zalloc(sizeof(float) * 4 * nx);
  float *u1 = kr_zalloc(sizeof(float) * 4 * nx);
  ASSERT_OK(weft_cpu_upsample_nearest2x(ctx, x, u0, B * C, H, W));
  ASSERT_OK(weft_cpu_upsample_nearest2x_cl(ctx, xm, u1, B, H, W, C));
  float *ub = moved(u1, B, C, 4 * S, false);
  ASSERT(memcmp(ub, u0, sizeof(float) * 4 * nx) == 0);
  free(x), free(w), free(b), free(g), free(be), free(ch), free(res);
  free(xm), free(rm), free(y0), free(y1), free(n0), free(n1), free(nb);
  free(u0), free(u1), free(ub);
  weft_cpu_ctx_free(ctx);
}

TEST(conv2d_rejects_bad_shapes) {
  weft_cpu_ctx *ctx = weft_cpu_ctx_new(1);
  float buf[64] = {0};
  weft_conv2d_args a = {.batch = 1,
                        .c_in = 1,
                        .h_in = 2,
                        .w_in = 2,
                        .c_out = 1,
                        .k_h = 3,
                        .k_w = 3,
                        .stride_h = 1,
                        .stride_w = 1,
                        .x = buf,
                        .weight = buf,
                        .y = buf + 32};
  ASSERT_EQ(weft_cpu_conv2d(ctx, &a), WEFT_EINVAL); /* kernel > input */
  a.pad_top = a.pad_bottom = a.pad_left = a.pad_right = 1;
  a.stride_w = 0;
  ASSERT_EQ(weft_cpu_conv2d(ctx, &a), WEFT_EINVAL);
  a.stride_w = 1;
  a.x_bstride = 3; /* shorter than one image */
  ASSERT_EQ(weft_cpu_conv2d(ctx, &a), WEFT_EINVAL);
  a.x_bstride = 0;
  ASSERT_OK(weft_cpu_conv2d(ctx, &a));
  weft_cpu_ctx_free(ctx);
}

/* ---- normalisation ----------------------------------------------------------
 */

static double ref_act(weft_act act, double x) {
  switch (act) {
  case WEFT_ACT_SILU: return x / (1 + exp(-x));
  case WEFT_ACT_GELU_ERF: return 0.5 * x * (1 + erf(x / sqrt(2.0)));
  case WEFT_ACT_GELU_TANH:
    return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
  case WEFT_ACT_QUICK_GELU: return x / (1 + exp(-1.702 * x));
  default: return x;
  }
}

TEST(group_norm_matches_reference_with_affine_and_silu) {
  weft_cpu_isa isas[2];
  int n_isa = kr_isas(isas);
  uint64_t s = 8;
  const int64_t shapes[][4] = {/* batch, channels, spatial, groups */
                               {1, 6, 7, 3},
                               {3, 6, 1, 3},
                               {2, 32, 9, 32},
                               {1, 64, 4096, 32},
                               {3, 5, 13, 1}};
  for (int ii = 0; ii < n_isa; ii++) {
    weft_cpu_ctx *ctx = kr_ctx(isas[ii], 2);
    for (size_t si = 0; si < 5; si++)
      for (int var = 0; var < 4; var++) {
        int64_t B = shapes[si][0], C = shapes[si][1], S = shapes[si][2],
                G = shapes[si][3], n = B * C * S;
        int affine = var & 1;
        weft_act act = (var & 2) ? WEFT_ACT_SILU : WEFT_ACT_NONE;
        float *x = kr_rand(&s, n, -3, 5); /* offset mean: tests centring */
        float *gamma = affine ? kr_rand(&s, C, 0.5f, 1.5f) : NULL;
        float *beta = affine ? kr_rand(&s, C, -1, 1) : NULL;
        float *y = kr_zalloc(sizeof(float) * n);
        double *ref = kr_zalloc(sizeof(double) * n);
        double *mag = kr_zalloc(sizeof(double) * n);
        int64_t cpg = C / G, len = cpg * S;
        for (int64_t t = 0; t < B * G; t++) {
          const float *xg = x + t * len;
          double m = 0, v = 0;
          for (int64_t i = 0; i < len; i++)
            m += xg[i];
          m /= len;
          for (int64_t i = 0; i < len; i++)
            v += (xg[i] - m) * (xg[i] - m);
          v /= len;
          for (int64_t i = 0; i < len; i++) {
            int64_t c = (t % G) * cpg + i / S;
            double r = (xg[i] - m) / sqrt(v + 1e-5);
            /* float evaluation is exact up to rounding of x, the mean and
             * the affine terms: error ~ ulp * (|x| + |mean|) * rstd * |g| */
            double mg = (fabs(xg[i]) + fabs(m)) / sqrt(v + 1e-5);
            if (affine) r = r * gamma[c] + beta[c];
            if (affine) mg = mg * gamma[c] + fabs(beta[c]);
            ref[t * len + i] = ref_act(act, r);
            mag[t * len + i] = mg;
          }
        }
        ASSERT_OK(weft_cpu_group_norm(ctx, x, y, B, C, S, G, 1e-5f, gamma, beta,
                                      act));
        ASSERT_CLOSE(y, ref, mag, n, 1e-6, 4e-6);
        /* in place gives the same */
        ASSERT_OK(weft_cpu_group_norm(ctx, x, x, B, C, S, G, 1e-5f, gamma, beta,
                                      act));
        ASSERT(memcmp(x, y, sizeof(float) * n) == 0);
        free(x), free(gamma), free(beta), free(y), free(ref), free(mag);
      }
    weft_cpu_ctx_free(ctx);
  }
}

TEST(group_norm_of_a_constant_group_is_beta_and_rejects_bad_groups) {
  weft_cpu_ctx *ctx = weft_cpu_ctx_new(1);
  float x[8] = {3, 3, 3, 3, 1, 2, 3, 4}, y[8], g[2] = {2, 2}, b[2] = {0.5f, 0};
  ASSERT_OK(
      weft_cpu_group_norm(ctx, x, y, 1, 2, 4, 2, 1e-5f, g, b, WEFT_ACT_NONE));
  for (int i = 0; i < 4; i++)
    ASSERT_EQ(y[i], 0.5f);
  ASSERT_EQ(
      weft_cpu_group_norm(ctx, x, y, 1, 2, 4, 3, 1e-5f, g, b, WEFT_ACT_NONE),
      WEFT_EINVAL);
  weft_cpu_ctx_free(ctx);
}

TEST(layer_norm_matches_reference_on_odd_dims) {
  weft_cpu_isa isas[2];
  int n_isa = kr_isas(isas);
  uint64_t s = 9;
  const int64_t shapes[][2] = {{1, 1}, {5, 7}, {77, 768}, {3, 1000}, {2, 8}};
  for (int ii = 0; ii < n_isa; ii++) {
    weft_cpu_ctx *ctx = kr_ctx(isas[ii], 2);
    for (size_t si = 0; si < 5; si++)
      for (int affine = 0; affine < 2; affine++) {
        int64_t rows = shapes[si][0], dim = shapes[si][1], n = rows * dim;
        float *x = kr_rand(&s, n, -2, 6);
        float *gamma = affine ? kr_rand(&s, dim, 0.5f, 1.5f) : NULL;
        float *beta = affine ? kr_rand(&s, dim, -1, 1) : NULL;
        float *y = kr_zalloc(sizeof(float) * n);
        double *ref = kr_zalloc(sizeof(double) * n);
        double *mag = kr_zalloc(sizeof(double) * n);
        for (int64_t r = 0; r < rows; r++) {
          double m = 0, v = 0;
          for (int64_t i = 0; i < dim; i++)
            m += x[r * dim + i];
          m /= dim;
          for (int64_t i = 0; i < dim; i++)
            v += (x[r * dim + i] - m) * (x[r * dim + i] - m);
          v /= dim;
          for (int64_t i = 0; i < dim; i++) {
            double t = (x[r * dim + i] - m) / sqrt(v + 1e-5);
            double mg = (fabs(x[r * dim + i]) + fabs(m)) / sqrt(v + 1e-5);
            ref[r * dim + i] = affine ? t * gamma[i] + beta[i] : t;
            mag[r * dim + i] = affine ? mg * gamma[i] + fabs(beta[i]) : mg;
          }
        }
        ASSERT_OK(
            weft_cpu_layer_norm(ctx, x, y, rows, dim, 1e-5f, gamma, beta));
        ASSERT_CLOSE(y, ref, mag, n, 1e-6, 4e-6);
        ASSERT_OK(
            weft_cpu_layer_norm(ctx, x, x, rows, dim, 1e-5f, gamma, beta));
        ASSERT(memcmp(x, y, sizeof(float) * n) == 0);
        free(x), free(gamma), free(beta), free(y), free(ref), free(mag);
      }
    weft_cpu_ctx_free(ctx);
  }
}

static void ref_softmax(const float *x, double *ref, int64_t dim) {
  double m = -INFINITY, s = 0;
  for (int64_t i = 0; i < dim; i++)
    m = x[i] > m ? x[i] : m;
  for (int64_t i = 0; i < dim; i++)
    s += exp(x[i] - m);
  for (int64_t i = 0; i < dim; i++)
    ref[i] = exp(x[i] - m) / s;
}

TEST(softmax_matches_reference_and_is_stable_for_large_inputs) {
  weft_cpu_isa isas[2];
  int n_isa = kr_isas(isas);
  uint64_t s = 10;
  const int64_t dims[] = {1, 7, 8, 9, 77, 4096};
  for (int ii = 0; ii < n_isa; ii++) {
    weft_cpu_ctx *ctx = kr_ctx(isas[ii], 2);
    for (size_t di = 0; di < 6; di++)
      for (int big = 0; big < 2; big++) {
        int64_t rows = 3, dim = dims[di], n = rows * dim;
        /* +-90 would overflow expf without the max subtraction */
        float *x = kr_rand(&s, n, big ? -90.0f : -4.0f, big ? 90.0f : 4.0f);
        if (dim > 3) x[2] = -INFINITY; /* a masked score */
        float *y = kr_zalloc(sizeof(float) * n);
        double *ref = kr_zalloc(sizeof(double) * n);
        for (int64_t r = 0; r < rows; r++)
          ref_softmax(x + r * dim, ref + r * dim, dim);
        ASSERT_OK(weft_cpu_softmax(ctx, x, y, rows, dim));
        ASSERT_CLOSE(y, ref, NULL, n, 1e-7, 4e-6);
        if (dim > 3) ASSERT_EQ(y[2], 0.0f);
        for (int64_t r = 0; r < rows; r++) {
          double sum = 0;
          for (int64_t i = 0; i < dim; i++)
            sum += y[r * dim + i];
          ASSERT_NEAR(sum, 1.0, 1e-5);
        }
        ASSERT_OK(weft_cpu_softmax(ctx, x, x, rows, dim));
        ASSERT(memcmp(x, y, sizeof(float) * n) == 0);
        free(x), free(y), free(ref);
      }
    weft_cpu_ctx_free(ctx);
  }
}

/* ---- attention --------------------------------------------------------------
 */

typedef struct attn_case {
  int64_t batch, heads, lq, lk, d, dv, chunk;
  int causal, blhd;
} attn_case;

static void check_attention(weft_cpu_ctx *ctx, attn_case c, uint64_t *s) {
  int64_t B = c.batch, H = c.heads;
  weft_attn_strides qs, ks, vs, os;
  if (c.blhd) {
    qs = weft_attn_strides_blhd(H, c.lq, c.d);
    ks = weft_attn_strides_blhd(H, c.lk, c.d);
    vs = weft_attn_strides_blhd(H, c.lk, c.dv);
    os = weft_attn_strides_blhd(H, c.lq, c.dv);
  } else {
    qs = weft_attn_strides_bhld(H, c.lq, c.d);
    ks = weft_attn_strides_bhld(H, c.lk, c.d);
    vs = weft_attn_strides_bhld(H, c.lk, c.dv);
    os = weft_attn_strides_bhld(H, c.lq, c.dv);
  }
  int64_t nq = B * H * c.lq * c.d, nk = B * H * c.lk * c.d,
          nv = B * H * c.lk * c.dv, no = B * H * c.lq * c.dv;
  float *q = kr_rand(s, nq, -2, 2), *k = kr_rand(s, nk, -2, 2),
        *v = kr_rand(s, nv, -1, 1);
  float *o = kr_zalloc(sizeof(float) * no);
  double *ref = kr_zalloc(sizeof(double) * no),
         *mag = kr_zalloc(sizeof(double) * no);
  double *p = kr_zalloc(sizeof(double) * c.lk);
  double scale = 1 / sqrt((double)c.d);
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t i = 0; i < c.lq; i++) {
        const float *qi = q + b * qs.b + h * qs.h + i * qs.l;
        double m = -INFINITY, sum = 0;
        int64_t nk_valid = c.causal && i + 1 < c.lk ? i + 1 : c.lk;
        for (int64_t j = 0; j < nk_valid; j++) {
          const float *kj = k + b * ks.b + h * ks.h + j * ks.l;
          double dot = 0;
          for (int64_t e = 0; e < c.d; e++)
            dot += (double)qi[e] * kj[e];
          p[j] = dot * scale;
          m = p[j] > m ? p[j] : m;
        }
        for (int64_t j = 0; j < nk_valid; j++)
          sum += (p[j] = exp(p[j] - m));
        for (int64_t e = 0; e < c.dv; e++) {
          double acc = 0, a = 0;
          for (int64_t j = 0; j < nk_valid; j++) {
            double t = p[j] / sum * v[b * vs.b + h * vs.h + j * vs.l + e];
            acc += t;
            a += fabs(t);
          }
          int64_t oi = b * os.b + h * os.h + i * os.l + e;
          ref[oi] = acc;
          mag[oi] = a;
        }
      }
  weft_attn_args a = {.batch = B,
                      .heads = H,
                      .lq = c.lq,
                      .lk = c.lk,
                      .d = c.d,
                      .dv = c.dv,
                      .q = q,
                      .q_s = qs,
                      .k = k,
                      .k_s = ks,
                      .v = v,
                      .v_s = vs,
                      .o = o,
                      .o_s = os,
                      .causal = c.causal,
                      .q_chunk = c.chunk};
  ASSERT_OK(weft_cpu_attention(ctx, &a));
  /* softmax adds a few ulps to the dot products' error */
  ASSERT_CLOSE(o, ref, mag, no, 1e-6, 2e-5);
  free(q), free(k), free(v), free(o), free(ref), free(mag), free(p);
}

TEST(attention_matches_reference_in_both_layouts_with_chunking) {
  weft_cpu_isa isas[2];
  int n_isa = kr_isas(isas);
  uint64_t s = 11;
  const attn_case cases[] = {
      /* batch heads lq lk d dv chunk causal blhd */
      {1, 1, 1, 1, 1, 1, 0, 0, 0},
      {3, 2, 9, 9, 40, 40, 4, 0, 1},    /* chunks of 4 over 9 rows */
      {1, 8, 64, 77, 40, 40, 0, 0, 1},  /* UNet cross-attention shape */
      {2, 3, 77, 77, 16, 16, 16, 1, 1}, /* CLIP causal, chunked */
      {3, 2, 77, 77, 8, 8, 0, 1, 0},
      {1, 2, 5, 12, 7, 3, 2, 1, 0},      /* lq < lk causal, dv != d */
      {1, 1, 300, 300, 9, 9, 256, 0, 0}, /* last chunk partial */
  };
  for (int ii = 0; ii < n_isa; ii++) {
    weft_cpu_ctx *ctx = kr_ctx(isas[ii], 2);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
      check_attention(ctx, cases[i], &s);
    weft_cpu_ctx_free(ctx);
  }
}

TEST(attention_uses_caller_scratch_and_checks_its_size) {
  weft_cpu_isa isas[2];
  int n_isa = kr_isas(isas);
  uint64_t s = 12;
  float *q = kr_rand(&s, 2 * 10 * 4, -1, 1), *k = kr_rand(&s, 2 * 6 * 4, -1, 1);
  float *v = kr_rand(&s, 2 * 6 * 4, -1, 1);
  float o1[80], o2[80];
  for (int ii = 0; ii < n_isa; ii++) {
    weft_cpu_ctx *ctx = kr_ctx(isas[ii], 2);
    weft_attn_args a = {.batch = 1,
                        .heads = 2,
                        .lq = 10,
                        .lk = 6,
                        .d = 4,
                        .dv = 4,
                        .q = q,
                        .q_s = weft_attn_strides_bhld(2, 10, 4),
                        .k = k,
                        .k_s = weft_attn_strides_bhld(2, 6, 4),
                        .v = v,
                        .v_s = weft_attn_strides_bhld(2, 6, 4),
                        .o = o1,
                        .o_s = weft_attn_strides_bhld(2, 10, 4),
                        .q_chunk = 3};
    size_t need = weft_cpu_attention_scratch_bytes(ctx, &a);
    if (isas[ii] == WEFT_CPU_ISA_PORTABLE)
      ASSERT_EQ(need, 3 * 6 * sizeof(float)); /* one q_chunk x lk block */
    ASSERT(need > 0);
    ASSERT_OK(weft_cpu_attention(ctx, &a));
    void *scratch = NULL;
    ASSERT_OK(posix_memalign(&scratch, 64, need));
    a.o = o2, a.scratch = scratch, a.scratch_bytes = need;
    ASSERT_OK(weft_cpu_attention(ctx, &a));
    ASSERT(memcmp(o1, o2, sizeof o1) == 0);
    a.scratch_bytes = need - 4;
    ASSERT_EQ(weft_cpu_attention(ctx, &a), WEFT_EINVAL);
    /* an explicit scale equal to the default gives the same result */
    a.scratch = NULL, a.scale = 0.5f;
    ASSERT_OK(weft_cpu_attention(ctx, &a));
    ASSERT(memcmp(o1, o2, sizeof o1) == 0);
    free(scratch);
    weft_cpu_ctx_free(ctx);
  }
  free(q), free(k), free(v);
}

/* ---- pointwise --------------------------------------------------------------
 */

TEST(activations_match_double_reference_over_a_dense_range) {
  weft_cpu_isa isas[2];
  int n_isa = kr_isas(isas);
  /* -20..20 in steps of 2^-10, plus odd lengths for the masked tails */
  const int64_t n = 40 * 1024 + 5;
  float *x = kr_zalloc(sizeof(float) * n), *y = kr_zalloc(sizeof(float) * n);
  double *ref = kr_zalloc(sizeof(double) * n);
  for (int64_t i = 0; i < n; i++)
    x[i] = -20.0f + (float)i * 0x1p-10f;
  const weft_act acts[] = {WEFT_ACT_SILU, WEFT_ACT_GELU_ERF, WEFT_ACT_GELU_TANH,
                           WEFT_ACT_QUICK_GELU};
  for (int ii = 0; ii < n_isa; ii++) {
    weft_cpu_ctx *ctx = kr_ctx(isas[ii], 2);
    for (int ai = 0; ai < 4; ai++) {
      for (int64_t i = 0; i < n; i++)
        ref[i] = ref_act(acts[ai], x[i]);
      for (int64_t len = n; len > n - 9; len -= 4) {
        ASSERT_OK(weft_cpu_act(ctx, acts[ai], x, y, len));
        ASSERT_CLOSE(y, ref, NULL, len, 1e-6, 4e-6);
      }
      printf("%s act %d: max abs err %.3g\n", weft_cpu_isa_name(ctx), ai,
             kr_max_abs_err(y, ref, n - 8));
      /* NaN propagates, large inputs saturate cleanly */
      float sp[4] = {NAN, 1e30f, -1e30f, 0.0f}, out[4];
      ASSERT_OK(weft_cpu_act(ctx, acts[ai], sp, out, 4));
      ASSERT(isnan(out[0]));
      ASSERT(out[1] == 1e30f);
      ASSERT(out[2] == 0.0f);
      ASSERT(out[3] == 0.0f);
    }
    weft_cpu_ctx_free(ctx);
  }
  free(x), free(y), free(ref);
}

TEST(gated_act_geglu_matches_reference_in_and_out_of_place) {
  weft_cpu_isa isas[2];
  int n_isa = kr_isas(isas);
  uint64_t s = 13;
  const int64_t shapes[][2] = {{1, 5}, {3, 640}, {7, 9}};
  for (int ii = 0; ii < n_isa; ii++) {
    weft_cpu_ctx *ctx = kr_ctx(isas[ii], 2);
    for (size_t si = 0; si < 3; si++)
      for (int ai = 0; ai < 2; ai++) {
        weft_act act = ai ? WEFT_ACT_SILU : WEFT_ACT_GELU_ERF;
        int64_t rows = shapes[si][0], dim = shapes[si][1];
        float *x = kr_rand(&s, rows * 2 * dim, -4, 4);
        float *y = kr_zalloc(sizeof(float) * rows * dim);
        double *ref = kr_zalloc(sizeof(double) * rows * dim);
        for (int64_t r = 0; r < rows; r++)
          for (int64_t i = 0; i < dim; i++)
            ref[r * dim + i] = (double)x[r * 2 * dim + i] *
                               ref_act(act, x[r * 2 * dim + dim + i]);
        ASSERT_OK(weft_cpu_gated_act(ctx, act, x, y, rows, dim));
        ASSERT_CLOSE(y, ref, NULL, rows * dim, 1e-6, 4e-6);
        ASSERT_OK(weft_cpu_gated_act(ctx, act, x, x, rows, dim));
        ASSERT(memcmp(x, y, sizeof(float) * rows * dim) == 0);
        free(x), free(y), free(ref);
      }
    weft_cpu_ctx_free(ctx);
  }
}

static float ref_bin(weft_binop op, float u, float v) {
  switch (op) {
  case WEFT_BIN_ADD: return u + v;
  case WEFT_BIN_SUB: return u - v;
  case WEFT_BIN_MUL: return u * v;
  default: return u / v;
  }
}

/* y must equal the float result of each op exactly. */
static void check_binary(weft_cpu_ctx *ctx, int an, const int64_t *as, int bn,
                         const int64_t *bs, uint64_t *s) {
  int nd = an > bn ? an : bn;
  int64_t os[8], na = 1, nb = 1, no = 1;
  for (int d = 0; d < an; d++)
    na *= as[d];
  for (int d = 0; d < bn; d++)
    nb *= bs[d];
  for (int d = 0; d < nd; d++) {
    int ia = d - (nd - an), ib = d - (nd - bn);
    int64_t da = ia >= 0 ? as[ia] : 1, db = ib >= 0 ? bs[ib] : 1;
    os[d] = da > db ? da : db;
    no *= os[d];
  }
  float *a = kr_rand(s, na, -2, 2), *b = kr_rand(s, nb, 0.5f, 2);
  float *y = kr_zalloc(sizeof(float) * no);
  for (int op = 0; op < WEFT_BIN_COUNT; op++) {
    ASSERT_OK(weft_cpu_binary(ctx, (weft_binop)op, a, an, as, b, bn, bs, y));
    for (int64_t i = 0; i < no; i++) {
      int64_t rem = i, ia = 0, ib = 0, sa = 1, sb = 1;
      for (int d = nd - 1; d >= 0; d--) {
        int64_t idx = rem % os[d];
        rem /= os[d];
        int xa = d - (nd - an), xb = d - (nd - bn);
        if (xa >= 0) {
          if (as[xa] != 1) ia += idx * sa;
          sa *= as[xa];
        }
        if (xb >= 0) {
          if (bs[xb] != 1) ib += idx * sb;
          sb *= bs[xb];
        }
      }
      float want = ref_bin((weft_binop)op, a[ia], b[ib]);
      if (y[i] != want) {
        fprintf(stderr, "op %d element %lld: %g != %g\n", op, (long long)i,
                y[i], want);
        abort();
      }
    }
  }
  free(a), free(b), free(y);
}

TEST(binary_ops_broadcast_like_numpy) {
  weft_cpu_ctx *ctx = weft_cpu_ctx_new(2);
  uint64_t s = 14;
  const int64_t bchw[] = {3, 5, 7, 9}, bc11[] = {3, 5, 1, 1}, c11[] = {5, 1, 1},
                w[] = {9}, one[] = {1}, col[] = {7, 1}, row[] = {1, 6},
                big[] = {2, 320, 64, 64}, bigc[] = {2, 320, 1, 1},
                tok[] = {2, 77, 768}, ch[] = {768};
  check_binary(ctx, 4, bchw, 4, bchw, &s); /* same shape */
  check_binary(ctx, 4, bchw, 4, bc11, &s); /* per-channel (time embedding) */
  check_binary(ctx, 4, bc11, 4, bchw, &s); /* broadcast on the left */
  check_binary(ctx, 4, bchw, 3, c11, &s);  /* missing leading dim */
  check_binary(ctx, 4, bchw, 1, w, &s);    /* trailing [W] */
  check_binary(ctx, 4, bchw, 1, one, &s);
  check_binary(ctx, 2, col, 2, row, &s);   /* outer product shape */
  check_binary(ctx, 0, NULL, 0, NULL, &s); /* scalars */
  check_binary(ctx, 4, big, 4, bigc, &s);  /* parallel path */
  check_binary(ctx, 3, tok, 1, ch, &s);    /* bias over tokens */
  float a[6] = {0}, y[6];
  const int64_t s23[] = {2, 3}, s22[] = {2, 2};
  ASSERT_EQ(weft_cpu_binary(ctx, WEFT_BIN_ADD, a, 2, s23, a, 2, s22, y),
            WEFT_EINVAL);
  weft_cpu_ctx_free(ctx);
}

TEST(binary_op_in_place_on_the_full_shape_operand) {
  weft_cpu_ctx *ctx = weft_cpu_ctx_new(2);
  uint64_t s = 15;
  const int64_t xs[] = {2, 320, 32, 32}, bs[] = {2, 320, 1, 1};
  int64_t n = 2 * 320 * 32 * 32;
  float *x = kr_rand(&s, n, -1, 1), *b = kr_rand(&s, 640, -1, 1);
  float *want = kr_zalloc(sizeof(float) * n);
  for (int64_t i = 0; i < n; i++)
    want[i] = x[i] + b[i / 1024];
  ASSERT_OK(weft_cpu_binary(ctx, WEFT_BIN_ADD, x, 4, xs, b, 4, bs, x));
  ASSERT(memcmp(x, want, sizeof(float) * n) == 0);
  free(x), free(b), free(want);
  weft_cpu_ctx_free(ctx);
}

TEST(scale_add_computes_alpha_a_plus_beta_b) {
  weft_cpu_ctx *ctx = weft_cpu_ctx_new(2);
  uint64_t s = 16;
  for (int64_t n = 1; n <= 100001; n += 50000) {
    float *a = kr_rand(&s, n, -1, 1), *b = kr_rand(&s, n, -1, 1);
    float *y = kr_zalloc(sizeof(float) * n);
    double *ref = kr_zalloc(sizeof(double) * n);
    for (int64_t i = 0; i < n; i++)
      ref[i] = -6.5 * a[i] + 7.5 * b[i];
    ASSERT_OK(weft_cpu_scale_add(ctx, y, -6.5f, a, 7.5f, b, n));
    ASSERT_CLOSE(y, ref, NULL, n, 1e-6, 1e-6);
    memcpy(y, a, sizeof(float) * n);
    ASSERT_OK(weft_cpu_scale_add(ctx, a, 2.0f, a, 0, NULL, n)); /* in place */
    for (int64_t i = 0; i < n; i++)
      ASSERT(a[i] == 2.0f * y[i]);
    free(a), free(b), free(y), free(ref);
  }
  weft_cpu_ctx_free(ctx);
}

/* ---- data movement ----------------------------------------------------------
 */

TEST(upsample_nearest2x_repeats_each_pixel) {
  weft_cpu_ctx *ctx = weft_cpu_ctx_new(2);
  uint64_t s = 17;
  const int64_t shapes[][3] = {{1, 1, 1}, {6, 3, 5}, {640, 16, 16}};
  for (int si = 0; si < 3; si++) {
    int64_t p = shapes[si][0], h = shapes[si][1], w = shapes[si][2];
    float *x = kr_rand(&s, p * h * w, -1, 1);
    float *y = kr_zalloc(sizeof(float) * p * 4 * h * w);
    ASSERT_OK(weft_cpu_upsample_nearest2x(ctx, x, y, p, h, w));
    for (int64_t c = 0; c < p; c++)
      for (int64_t i = 0; i < 2 * h; i++)
        for (int64_t j = 0; j < 2 * w; j++)
          ASSERT(y[(c * 2 * h + i) * 2 * w + j] ==
                 x[(c * h + i / 2) * w + j / 2]);
    free(x), free(y);
  }
  weft_cpu_ctx_free(ctx);
}

TEST(concat_joins_along_any_axis) {
  weft_cpu_ctx *ctx = weft_cpu_ctx_new(2);
  uint64_t s = 18;
  for (int axis = 0; axis < 4; axis++) {
    int64_t sa[4] = {3, 4, 5, 6}, sb[4] = {3, 4, 5, 6}, sc[4] = {3, 4, 5, 6};
    sa[axis] = 2, sb[axis] = 1, sc[axis] = 3;
    int64_t na = 1, nb = 1, nc = 1, so[4] = {3, 4, 5, 6};
    so[axis] = 6;
    for (int d = 0; d < 4; d++)
      na *= sa[d], nb *= sb[d], nc *= sc[d];
    float *a = kr_rand(&s, na, 0, 1), *b = kr_rand(&s, nb, 1, 2),
          *c = kr_rand(&s, nc, 2, 3);
    float *y = kr_zalloc(sizeof(float) * (na + nb + nc));
    const float *xs[3] = {a, b, c};
    const int64_t *shapes[3] = {sa, sb, sc};
    ASSERT_OK(weft_cpu_concat(ctx, 3, xs, 4, shapes, axis, y));
    for (int64_t i = 0; i < na + nb + nc; i++) {
      int64_t idx[4], rem = i;
      for (int d = 3; d >= 0; d--)
        idx[d] = rem % so[d], rem /= so[d];
      int64_t k = idx[axis];
      const float *src = k < 2 ? a : k < 3 ? b : c;
      const int64_t *ss = k < 2 ? sa : k < 3 ? sb : sc;
      idx[axis] = k < 2 ? k : k < 3 ? k - 2 : k - 3;
      int64_t off =
          ((idx[0] * ss[1] + idx[1]) * ss[2] + idx[2]) * ss[3] + idx[3];
      ASSERT(y[i] == src[off]);
    }
    free(a), free(b), free(c), free(y);
  }
  int64_t s1[2] = {2, 3}, s2[2] = {3, 3};
  const int64_t *bad[2] = {s1, s2};
  float a[9] = {0}, y[18];
  const float *xs[2] = {a, a};
  ASSERT_EQ(weft_cpu_concat(ctx, 2, xs, 2, bad, 1, y), WEFT_EINVAL);
  ASSERT_OK(weft_cpu_concat(ctx, 2, xs, 2, bad, 0, y));
  weft_cpu_ctx_free(ctx);
}

/* diffusers' get_timestep_embedding with its float32 steps, sin/cos in
 * double: the kernel may differ only by sinf/cosf rounding. */
TEST(timestep_embedding_matches_diffusers_formula) {
  weft_cpu_ctx *ctx = weft_cpu_ctx_new(1);
  const float t[4] = {0, 1, 500.5f, 999};
  struct {
    int64_t dim;
    int flip;
    float shift, scale;
  } cfg[] = {{320, 1, 0, 1}, {7, 0, 1, 1}, {64, 1, 1, 25}, {2, 0, 0, 1}};
  for (int ci = 0; ci < 4; ci++) {
    int64_t dim = cfg[ci].dim, half = dim / 2;
    float *y = kr_zalloc(sizeof(float) * 4 * dim);
    double *ref = kr_zalloc(sizeof(double) * 4 * dim);
    for (int i = 0; i < 4; i++)
      for (int64_t k = 0; k < half; k++) {
        float ex = (float)-log(10000.0) * (float)k;
        ex = ex / ((float)half - cfg[ci].shift);
        float arg = cfg[ci].scale * (t[i] * (float)exp((double)ex));
        ref[i * dim + (cfg[ci].flip ? half + k : k)] = sin((double)arg);
        ref[i * dim + (cfg[ci].flip ? k : half + k)] = cos((double)arg);
      }
    ASSERT_OK(weft_cpu_timestep_embedding(ctx, t, 4, dim, cfg[ci].flip,
                                          cfg[ci].shift, cfg[ci].scale,
                                          10000.0f, y));
    ASSERT_CLOSE(y, ref, NULL, 4 * dim, 2e-7, 0);
    if (dim % 2) ASSERT_EQ(y[dim - 1], 0.0f);
    free(y), free(ref);
  }
  /* SD1.x at t = 0: flip puts cos (1) first, sin (0) second */
  float y[320];
  ASSERT_OK(weft_cpu_timestep_embedding(ctx, t, 1, 320, 1, 0, 1, 10000, y));
  ASSERT_EQ(y[0], 1.0f);
  ASSERT_EQ(y[160], 0.0f);
  weft_cpu_ctx_free(ctx);
}

/* ---- threads and the backend vtable -----------------------------------------
 */

TEST(results_do_not_depend_on_the_thread_count) {
  uint64_t s = 19;
  int64_t n = 2 * 64 * 1024;
  float *x = kr_rand(&s, n, -3, 3);
  float *y1 = kr_zalloc(sizeof(float) * n), *y2 = kr_zalloc(sizeof(float) * n);
  weft_cpu_ctx *ctx = weft_cpu_ctx_new(1);
  ASSERT_EQ(weft_cpu_get_threads(ctx), 1);
  ASSERT_OK(weft_cpu_group_norm(ctx, x, y1, 2, 64, 1024, 32, 1e-6f, NULL, NULL,
                                WEFT_ACT_SILU));
  ASSERT_OK(weft_cpu_set_threads(ctx, 3));
  ASSERT_EQ(weft_cpu_get_threads(ctx), 3);
  ASSERT_OK(weft_cpu_group_norm(ctx, x, y2, 2, 64, 1024, 32, 1e-6f, NULL, NULL,
                                WEFT_ACT_SILU));
  ASSERT(memcmp(y1, y2, sizeof(float) * n) == 0);
  ASSERT_OK(weft_cpu_softmax(ctx, x, y2, 128, 1024));
  ASSERT_OK(weft_cpu_set_threads(ctx, 1));
  ASSERT_OK(weft_cpu_softmax(ctx, x, y1, 128, 1024));
  ASSERT(memcmp(y1, y2, sizeof(float) * n) == 0);
  weft_cpu_ctx_free(ctx);
  free(x), free(y1), free(y2);
}

typedef struct conc_arg {
  weft_cpu_ctx *ctx;
  const float *x;
  float *y;
  int64_t rows, dim;
  int rc;
} conc_arg;

static void *conc_softmax(void *p) {
  conc_arg *a = p;
  for (int i = 0; i < 20 && a->rc == 0; i++)
    a->rc = weft_cpu_softmax(a->ctx, a->x, a->y, a->rows, a->dim);
  return NULL;
}

TEST(one_context_serves_concurrent_callers) {
  uint64_t s = 20;
  int64_t rows = 256, dim = 1000, n = rows * dim;
  float *x = kr_rand(&s, n, -5, 5);
  float *want = kr_zalloc(sizeof(float) * n);
  weft_cpu_ctx *ctx = weft_cpu_ctx_new(2);
  ASSERT_OK(weft_cpu_softmax(ctx, x, want, rows, dim));
  conc_arg args[3];
  pthread_t th[3];
  for (int i = 0; i < 3; i++) {
    args[i] = (conc_arg){ctx, x, kr_zalloc(sizeof(float) * n), rows, dim, 0};
    ASSERT_OK(pthread_create(&th[i], NULL, conc_softmax, &args[i]));
  }
  for (int i = 0; i < 3; i++) {
    pthread_join(th[i], NULL);
    ASSERT_OK(args[i].rc);
    ASSERT(memcmp(args[i].y, want, sizeof(float) * n) == 0);
    free(args[i].y);
  }
  weft_cpu_ctx_free(ctx);
  free(x), free(want);
}

TEST(cpu_backend_vtable_forwards_to_the_kernels) {
  weft_backend *be = weft_backend_cpu_new(2);
  ASSERT(be);
  ASSERT_STR_EQ(be->iface->name, "cpu");
  ASSERT_EQ(be->iface->device_kind, WEFT_DEVICE_KIND_CPU);
  ASSERT_EQ(be->iface->struct_size, sizeof(weft_backend_iface));
  float *buf = be->iface->buffer_alloc(be, 1000 * sizeof(float));
  ASSERT(buf && ((uintptr_t)buf % 64) == 0);
  float src[6] = {1, -2, 3, -4, 5, -6}, y[6];
  ASSERT_OK(be->iface->buffer_copy(be, buf, src, sizeof src,
                                   WEFT_COPY_HOST_TO_DEVICE));
  ASSERT_OK(be->iface->act(be, WEFT_ACT_SILU, buf, buf + 8, 6));
  ASSERT_OK(be->iface->buffer_copy(be, y, buf + 8, sizeof y,
                                   WEFT_COPY_DEVICE_TO_HOST));
  ASSERT_OK(be->iface->synchronize(be));
  for (int i = 0; i < 6; i++)
    ASSERT_NEAR(y[i], ref_act(WEFT_ACT_SILU, src[i]), 1e-6);
  ASSERT_OK(be->iface->linear(be, src, 2, 3, src, NULL, 2, y));
  ASSERT_EQ(y[0], 14);  /* [1 -2 3] . [1 -2 3] */
  ASSERT_EQ(y[1], -32); /* [1 -2 3] . [-4 5 -6] */
  be->iface->buffer_free(be, buf);
  ASSERT_OK(be->iface->set_threads(be, 1));
  weft_backend_free(be);
}
