/* pointwise.c - activations, gated activations, broadcasting binary ops and
 * scale-add.  All are memory-bound: they go parallel only past PAR_ELEMS. */
#include <string.h>

#include "internal.h"

#define PAR_ELEMS (1 << 15)

typedef struct act_job {
  const weft__vec *vec;
  weft_act act;
  const float *x;
  float *y;
} act_job;

static void act_range(void *arg, int64_t b, int64_t e, int tid) {
  (void)tid;
  const act_job *j = arg;
  j->vec->act(j->act, j->x + b, j->y + b, e - b);
}

int weft_cpu_act(weft_cpu_ctx *ctx, weft_act act, const float *x, float *y,
                 int64_t n) {
  if (!x || !y || n < 0 || act < 0 || act >= WEFT_ACT_COUNT) return WEFT_EINVAL;
  if (act == WEFT_ACT_NONE) {
    if (x != y) memmove(y, x, (size_t)n * sizeof(float));
    return 0;
  }
  act_job j = {ctx->vec, act, x, y};
  weft__parallel_for(ctx, n, PAR_ELEMS / 4, act_range, &j);
  return 0;
}

typedef struct gated_job {
  const weft__vec *vec;
  weft_act act;
  const float *x;
  float *y;
  int64_t dim;
} gated_job;

static void gated_rows(void *arg, int64_t b, int64_t e, int tid) {
  (void)tid;
  const gated_job *j = arg;
  for (int64_t r = b; r < e; r++) {
    const float *x = j->x + r * 2 * j->dim;
    j->vec->gated(j->act, x, x + j->dim, j->y + r * j->dim, j->dim);
  }
}

int weft_cpu_gated_act(weft_cpu_ctx *ctx, weft_act act, const float *x,
                       float *y, int64_t rows, int64_t dim) {
  if (!x || !y || rows < 0 || dim <= 0 || act < 0 || act >= WEFT_ACT_COUNT)
    return WEFT_EINVAL;
  gated_job j = {ctx->vec, act, x, y, dim};
  if (x == y) {
    /* In place: row r's output overlaps rows < r's inputs only behind
     * them, so rows must run in order on one thread. */
    gated_rows(&j, 0, rows, 0);
    return 0;
  }
  weft__parallel_for(ctx, rows, 1 + PAR_ELEMS / (2 * dim), gated_rows, &j);
  return 0;
}

/* ---- Broadcasting binary ops -------------------------------------------- */

typedef struct bin_job {
  weft_binop op;
  int nd; /* collapsed dims, the last one is the inner loop */
  int64_t shape[WEFT_MAX_DIMS], sa[WEFT_MAX_DIMS], sb[WEFT_MAX_DIMS];
  const float *a, *b;
  float *y;
} bin_job;

#define BIN_LOOP(EXPR)                                                         \
  do {                                                                         \
    if (sa == 1 && sb == 1)                                                    \
      for (int64_t i = 0; i < n; i++) {                                        \
        float u = a[i], v = b[i];                                              \
        y[i] = EXPR;                                                           \
      }                                                                        \
    else if (sa == 1)                                                          \
      for (int64_t i = 0; i < n; i++) {                                        \
        float u = a[i], v = b[0];                                              \
        y[i] = EXPR;                                                           \
      }                                                                        \
    else if (sb == 1)                                                          \
      for (int64_t i = 0; i < n; i++) {                                        \
        float u = a[0], v = b[i];                                              \
        y[i] = EXPR;                                                           \
      }                                                                        \
    else                                                                       \
      for (int64_t i = 0; i < n; i++) {                                        \
        float u = a[0], v = b[0];                                              \
        y[i] = EXPR;                                                           \
      }                                                                        \
  } while (0)

static void bin_inner(weft_binop op, const float *a, int64_t sa, const float *b,
                      int64_t sb, float *y, int64_t n) {
  switch (op) {
  case WEFT_BIN_ADD: BIN_LOOP(u + v); break;
  case WEFT_BIN_SUB: BIN_LOOP(u - v); break;
  case WEFT_BIN_MUL: BIN_LOOP(u * v); break;
  case WEFT_BIN_DIV: BIN_LOOP(u / v); break;
  default: break;
  }
}

/* Outer rows [rb, re): each is one run of the innermost dim. */
static void bin_rows(void *arg, int64_t rb, int64_t re, int tid) {
  (void)tid;
  const bin_job *j = arg;
  const int last = j->nd - 1;
  const int64_t n = j->shape[last];
  int64_t idx[WEFT_MAX_DIMS] = {0}, oa = 0, ob = 0, rem = rb;
  for (int d = last - 1; d >= 0; d--) {
    idx[d] = rem % j->shape[d];
    rem /= j->shape[d];
    oa += idx[d] * j->sa[d];
    ob += idx[d] * j->sb[d];
  }
  for (int64_t r = rb; r < re; r++) {
    bin_inner(j->op, j->a + oa, j->sa[last], j->b + ob, j->sb[last],
              j->y + r * n, n);
    for (int d = last - 1; d >= 0; d--) { /* odometer step */
      oa += j->sa[d];
      ob += j->sb[d];
      if (++idx[d] < j->shape[d]) break;
      oa -= idx[d] * j->sa[d];
      ob -= idx[d] * j->sb[d];
      idx[d] = 0;
    }
  }
}

int weft_cpu_binary(weft_cpu_ctx *ctx, weft_binop op, const float *a,
                    int a_ndim, const int64_t *a_shape, const float *b,
                    int b_ndim, const int64_t *b_shape, float *y) {
  weft_bcast bc;
  if (!a || !b || !y || op < 0 || op >= WEFT_BIN_COUNT ||
      weft_bcast_plan(a_ndim, a_shape, b_ndim, b_shape, &bc))
    return WEFT_EINVAL;
  int64_t total = bc.total;
  if (total == 0) return 0;
  bin_job j = {.op = op, .a = a, .b = b, .y = y, .nd = bc.nd};
  memcpy(j.shape, bc.shape, sizeof j.shape);
  memcpy(j.sa, bc.sa, sizeof j.sa);
  memcpy(j.sb, bc.sb, sizeof j.sb);
  int m = bc.nd;
  int64_t inner = j.shape[m - 1], rows = total / inner;
  weft__parallel_for(ctx, rows, 1 + PAR_ELEMS / inner, bin_rows, &j);
  return 0;
}

typedef struct axpby_job {
  float *y;
  float alpha, beta;
  const float *a, *b;
} axpby_job;

static void axpby_range(void *arg, int64_t s, int64_t e, int tid) {
  (void)tid;
  const axpby_job *j = arg;
  float *y = j->y;
  const float *a = j->a, *b = j->b, al = j->alpha, be = j->beta;
  if (b)
    for (int64_t i = s; i < e; i++)
      y[i] = al * a[i] + be * b[i];
  else
    for (int64_t i = s; i < e; i++)
      y[i] = al * a[i];
}

int weft_cpu_scale_add(weft_cpu_ctx *ctx, float *y, float alpha, const float *a,
                       float beta, const float *b, int64_t n) {
  if (!y || !a || n < 0) return WEFT_EINVAL;
  axpby_job j = {y, alpha, beta, a, b};
  weft__parallel_for(ctx, n, PAR_ELEMS, axpby_range, &j);
  return 0;
}
