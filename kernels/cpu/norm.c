/* norm.c - group norm, layer norm and softmax over rows.  Statistics are
 * two-pass (mean, then squared deviations) with double accumulators, so
 * large groups (a 64x64 map has 40960 values per group) stay exact. */
#include <math.h>
#include <stdlib.h>

#include "internal.h"

/* Rows of this many elements or more are worth a thread hand-off. */
#define PAR_ELEMS (1 << 14)

typedef struct gn_job {
  const weft__vec *vec;
  const float *x;
  float *y;
  int64_t groups, cpg, spatial;
  float eps;
  const float *gamma, *beta;
  weft_act act;
} gn_job;

static void gn_groups(void *arg, int64_t b, int64_t e, int tid) {
  (void)tid;
  const gn_job *j = arg;
  const int64_t len = j->cpg * j->spatial;
  for (int64_t t = b; t < e; t++) { /* t = image * groups + group */
    const float *x = j->x + t * len;
    float *y = j->y + t * len;
    double mean = j->vec->sum(x, len) / (double)len;
    double var = j->vec->sqdev(x, len, mean) / (double)len;
    double rstd = 1.0 / sqrt(var + (double)j->eps);
    int64_t c0 = (t % j->groups) * j->cpg;
    for (int64_t c = 0; c < j->cpg; c++) {
      double g = j->gamma ? j->gamma[c0 + c] : 1.0;
      double bt = j->beta ? j->beta[c0 + c] : 0.0;
      double scale = rstd * g, shift = bt - mean * scale;
      j->vec->affine_act(x + c * j->spatial, y + c * j->spatial, j->spatial,
                         (float)scale, (float)shift, j->act);
    }
  }
}

int weft_cpu_group_norm(weft_cpu_ctx *ctx, const float *x, float *y,
                        int64_t batch, int64_t channels, int64_t spatial,
                        int64_t groups, float eps, const float *gamma,
                        const float *beta, weft_act act) {
  if (!x || !y || batch < 0 || channels <= 0 || spatial <= 0 || groups <= 0 ||
      channels % groups != 0 || act < 0 || act >= WEFT_ACT_COUNT)
    return WEFT_EINVAL;
  gn_job j = {ctx->vec, x,   y,     groups, channels / groups,
              spatial,  eps, gamma, beta,   act};
  int64_t len = j.cpg * spatial;
  weft__parallel_for(ctx, batch * groups, 1 + PAR_ELEMS / len, gn_groups, &j);
  return 0;
}

int weft_cpu_group_norm_cl(weft_cpu_ctx *ctx, const float *x, float *y,
                           int64_t batch, int64_t channels, int64_t spatial,
                           int64_t groups, float eps, const float *gamma,
                           const float *beta, weft_act act) {
  if (!x || !y || batch < 0 || channels <= 0 || spatial <= 0)
    return WEFT_EINVAL;
  /* through NCHW: the NCHW op's values, moved */
  const size_t n = (size_t)(batch * channels * spatial);
  float *t = weft__alloc((n ? n : 1) * sizeof(float));
  if (!t) return WEFT_ENOMEM;
  int rc = weft_cpu_nchw_nhwc(ctx, x, t, batch, channels, spatial, false);
  if (!rc)
    rc = weft_cpu_group_norm(ctx, t, t, batch, channels, spatial, groups, eps,
                             gamma, beta, act);
  if (!rc) rc = weft_cpu_nchw_nhwc(ctx, t, y, batch, channels, spatial, true);
  free(t);
  return rc;
}

typedef struct ln_job {
  const weft__vec *vec;
  const float *x;
  float *y;
  int64_t dim;
  float eps;
  const float *gamma, *beta;
} ln_job;

static void ln_rows(void *arg, int64_t b, int64_t e, int tid) {
  (void)tid;
  const ln_job *j = arg;
  for (int64_t r = b; r < e; r++) {
    const float *x = j->x + r * j->dim;
    double mean = j->vec->sum(x, j->dim) / (double)j->dim;
    double var = j->vec->sqdev(x, j->dim, mean) / (double)j->dim;
    double rstd = 1.0 / sqrt(var + (double)j->eps);
    j->vec->norm_row(x, j->y + r * j->dim, j->dim, (float)mean, (float)rstd,
                     j->gamma, j->beta);
  }
}

int weft_cpu_layer_norm(weft_cpu_ctx *ctx, const float *x, float *y,
                        int64_t rows, int64_t dim, float eps,
                        const float *gamma, const float *beta) {
  if (!x || !y || rows < 0 || dim <= 0) return WEFT_EINVAL;
  ln_job j = {ctx->vec, x, y, dim, eps, gamma, beta};
  weft__parallel_for(ctx, rows, 1 + PAR_ELEMS / dim, ln_rows, &j);
  return 0;
}

typedef struct sm_job {
  const weft__vec *vec;
  const float *x;
  float *y;
  int64_t dim;
} sm_job;

static void sm_rows(void *arg, int64_t b, int64_t e, int tid) {
  (void)tid;
  const sm_job *j = arg;
  for (int64_t r = b; r < e; r++)
    j->vec->softmax_row(j->x + r * j->dim, j->y + r * j->dim, j->dim);
}

int weft_cpu_softmax(weft_cpu_ctx *ctx, const float *x, float *y, int64_t rows,
                     int64_t dim) {
  if (!x || !y || rows < 0 || dim <= 0) return WEFT_EINVAL;
  sm_job j = {ctx->vec, x, y, dim};
  weft__parallel_for(ctx, rows, 1 + PAR_ELEMS / dim, sm_rows, &j);
  return 0;
}
