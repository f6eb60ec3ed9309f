/* gemm.c - GEMM, batched GEMM and Linear on OpenBLAS (cblas_sgemm). */
#include <cblas.h>
#include <limits.h>
#include <string.h>

#include "internal.h"

static bool fits_int(int64_t v) {
  return v >= 0 && v <= INT_MAX;
}

int weft_cpu_gemm(weft_cpu_ctx *ctx, const weft_gemm_args *g) {
  (void)ctx;
  if (!g) return WEFT_EINVAL;
  int64_t batch = g->batch ? g->batch : 1;
  if (!fits_int(g->m) || !fits_int(g->n) || !fits_int(g->k) || batch < 0 ||
      !fits_int(g->lda) || !fits_int(g->ldb) || !fits_int(g->ldc))
    return WEFT_EINVAL;
  if (g->m == 0 || g->n == 0) return 0;
  /* Row strides must cover a stored row (BLAS's own rule). */
  int64_t a_cols = g->trans_a ? g->m : g->k;
  int64_t b_cols = g->trans_b ? g->k : g->n;
  if (g->lda < (a_cols ? a_cols : 1) || g->ldb < (b_cols ? b_cols : 1) ||
      g->ldc < g->n || !g->c || (g->k > 0 && (!g->a || !g->b)))
    return WEFT_EINVAL;
  for (int64_t i = 0; i < batch; i++) {
    float *c = g->c + i * g->stride_c;
    if (g->k == 0) {
      /* BLAS implementations differ on k == 0; define it: C = beta * C. */
      for (int64_t r = 0; r < g->m; r++)
        for (int64_t j = 0; j < g->n; j++)
          c[r * g->ldc + j] = g->beta == 0 ? 0.0f : g->beta * c[r * g->ldc + j];
      continue;
    }
    cblas_sgemm(CblasRowMajor, g->trans_a ? CblasTrans : CblasNoTrans,
                g->trans_b ? CblasTrans : CblasNoTrans, (int)g->m, (int)g->n,
                (int)g->k, g->alpha, g->a + i * g->stride_a, (int)g->lda,
                g->b + i * g->stride_b, (int)g->ldb, g->beta, c, (int)g->ldc);
  }
  /* the bias after the product: the rounding of a separate add */
  for (int64_t i = 0; g->bias && i < batch; i++)
    for (int64_t r = 0; r < g->m; r++) {
      float *row = g->c + i * g->stride_c + r * g->ldc;
      for (int64_t j = 0; j < g->n; j++)
        row[j] += g->bias_per_row ? g->bias[r] : g->bias[j];
    }
  return 0;
}

typedef struct bias_job {
  float *y;
  const float *bias;
  int64_t cols;
} bias_job;

static void bias_rows(void *arg, int64_t b, int64_t e, int tid) {
  (void)tid;
  const bias_job *j = arg;
  for (int64_t r = b; r < e; r++) {
    float *y = j->y + r * j->cols;
    for (int64_t c = 0; c < j->cols; c++)
      y[c] += j->bias[c];
  }
}

int weft_cpu_linear(weft_cpu_ctx *ctx, const float *x, int64_t rows,
                    int64_t in_features, const float *weight, const float *bias,
                    int64_t out_features, float *y) {
  if (rows < 0 || in_features < 0 || out_features < 0) return WEFT_EINVAL;
  weft_gemm_args g = {.m = rows,
                      .n = out_features,
                      .k = in_features,
                      .trans_b = 1,
                      .alpha = 1.0f,
                      .beta = 0.0f,
                      .a = x,
                      .lda = in_features ? in_features : 1,
                      .b = weight,
                      .ldb = in_features ? in_features : 1,
                      .c = y,
                      .ldc = out_features};
  if (rows == 0 || out_features == 0) return 0;
  int rc = weft_cpu_gemm(ctx, &g);
  if (rc != 0 || !bias) return rc;
  bias_job j = {y, bias, out_features};
  weft__parallel_for(ctx, rows, 1 + (1 << 15) / out_features, bias_rows, &j);
  return 0;
}
