/* profile_cuda.c - where the GPU's time goes, op by op (issue 9's "profile
 * first"): between weft_cuda_profile_start and weft_cuda_profile_report
 * every compute op and copy of the vtable is bracketed by two events on the
 * stream, and the elapsed times are summed by op and shape.
 *
 * Profiling swaps the backend's vtable for one whose entries wrap the real
 * ones, so the ordinary path has no branch for it.  Events are read in
 * batches (when the pending ring is full, and at the report), never after
 * each op, so the GPU is kept as busy as without profiling; only the
 * events' own cost (a few microseconds per op) is added.  An op's time is
 * from its first kernel's start to its last kernel's end: with an idle GPU
 * waiting on the host between ops, the sum of the rows is less than the
 * wall time, and the difference is launch overhead.
 *
 * Parts: an op may time pieces of itself (weft__cuda_prof_part_begin /
 * _end: the channels-last convolution's moves and its cuDNN call), kept
 * in a table of their own that the report prints after the ops (their
 * times are inside the ops' already). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define PROF_RING 4096
#define PART_RING 1024

typedef struct prof_row {
  char key[128];
  double ms, flop;
  int64_t calls;
} prof_row;

/* rows by key, the last one found kept for the next lookup */
typedef struct prof_table {
  prof_row *rows;
  int n_rows, cap_rows, last;
} prof_table;

struct weft__cuda_prof {
  const weft_backend_iface *base; /* the real vtable */
  cudaEvent_t ev[2 * PROF_RING];
  int32_t pend[PROF_RING]; /* row of each pending pair */
  int n_pend;
  prof_table ops;
  /* the parts: the same, on events of their own */
  cudaEvent_t pev[2 * PART_RING];
  int32_t ppend[PART_RING];
  int n_ppend;
  prof_table parts;
};

#define PROF(be) (WEFT__CUDA_CTX(be)->prof)

/* Adds the elapsed times of n pending pairs (events ev, rows pend) to
 * their rows of t. */
static cudaError_t flush_pairs(const cudaEvent_t *ev, const int32_t *pend,
                               int n, prof_table *t) {
  if (!n) return cudaSuccess;
  cudaError_t e = cudaEventSynchronize(ev[2 * n - 1]);
  for (int i = 0; i < n && e == cudaSuccess; i++) {
    float ms = 0;
    e = cudaEventElapsedTime(&ms, ev[2 * i], ev[2 * i + 1]);
    t->rows[pend[i]].ms += ms;
  }
  return e;
}

static int prof_flush(weft__cuda_ctx *ctx) {
  weft__cuda_prof *p = ctx->prof;
  cudaError_t e = flush_pairs(p->ev, p->pend, p->n_pend, &p->ops);
  if (e == cudaSuccess)
    e = flush_pairs(p->pev, p->ppend, p->n_ppend, &p->parts);
  p->n_pend = p->n_ppend = 0;
  return weft__cuda_check(ctx, e, "profile (reading events)");
}

static int row_of(prof_table *t, const char *key) {
  if (t->last < t->n_rows && strcmp(t->rows[t->last].key, key) == 0)
    return t->last;
  for (int i = 0; i < t->n_rows; i++)
    if (strcmp(t->rows[i].key, key) == 0) return t->last = i;
  if (t->n_rows == t->cap_rows) {
    int cap = t->cap_rows ? 2 * t->cap_rows : 256;
    prof_row *r = realloc(t->rows, (size_t)cap * sizeof *r);
    if (!r) return -1;
    t->rows = r, t->cap_rows = cap;
  }
  prof_row *r = &t->rows[t->n_rows];
  memset(r, 0, sizeof *r);
  snprintf(r->key, sizeof r->key, "%s", key);
  return t->last = t->n_rows++;
}

/* Opens a pair: the start event of the next slot. */
static void begin(weft_backend *be) {
  weft__cuda_ctx *ctx = WEFT__CUDA_CTX(be);
  weft__cuda_prof *p = ctx->prof;
  if (p->n_pend == PROF_RING) prof_flush(ctx);
  cudaEventRecord(p->ev[2 * p->n_pend], ctx->stream);
}

/* Closes pending pair *n of ev (ops' or parts') under the key fmt makes:
 * its stop event, its row of t counted. */
static void close_pair(weft__cuda_ctx *ctx, prof_table *t, cudaEvent_t *ev,
                       int32_t *pend, int *n, double flop, const char *fmt,
                       va_list ap) {
  char key[128];
  vsnprintf(key, sizeof key, fmt, ap);
  int row = row_of(t, key);
  if (row < 0) return;
  cudaEventRecord(ev[2 * *n + 1], ctx->stream);
  t->rows[row].calls++;
  t->rows[row].flop += flop;
  pend[(*n)++] = row;
}

/* Closes the pair opened by begin under key (printf-style). */
__attribute__((format(printf, 4, 5))) static void end(weft_backend *be,
                                                      double flop, int rc,
                                                      const char *fmt, ...) {
  weft__cuda_ctx *ctx = WEFT__CUDA_CTX(be);
  weft__cuda_prof *p = ctx->prof;
  if (rc) return; /* a failed op: its pair is not counted */
  va_list ap;
  va_start(ap, fmt);
  close_pair(ctx, &p->ops, p->ev, p->pend, &p->n_pend, flop, fmt, ap);
  va_end(ap);
}

int weft__cuda_prof_part_begin(weft__cuda_ctx *ctx) {
  weft__cuda_prof *p = ctx->prof;
  if (!p) return -1;
  if (p->n_ppend == PART_RING) {
    /* the parts only: the op around this part has its start pending */
    cudaError_t e = flush_pairs(p->pev, p->ppend, p->n_ppend, &p->parts);
    p->n_ppend = 0;
    if (weft__cuda_check(ctx, e, "profile (reading events)")) return -1;
  }
  cudaEventRecord(p->pev[2 * p->n_ppend], ctx->stream);
  return p->n_ppend;
}

void weft__cuda_prof_part_end(weft__cuda_ctx *ctx, int slot, const char *fmt,
                              ...) {
  weft__cuda_prof *p = ctx->prof;
  if (!p || slot < 0 || slot != p->n_ppend) return;
  va_list ap;
  va_start(ap, fmt);
  close_pair(ctx, &p->parts, p->pev, p->ppend, &p->n_ppend, 0, fmt, ap);
  va_end(ap);
}

#define BASE(be) (PROF(be)->base)
#define LL(x) ((long long)(x))

/* ---- the wrapping vtable ------------------------------------------------ */

static void pf_free(weft_backend *be) {
  BASE(be)->free(be);
}

static int pf_sync(weft_backend *be) {
  return BASE(be)->synchronize(be);
}

static void *pf_alloc(weft_backend *be, size_t n) {
  return BASE(be)->buffer_alloc(be, n);
}

static void pf_buf_free(weft_backend *be, void *p) {
  BASE(be)->buffer_free(be, p);
}

static int pf_copy(weft_backend *be, void *dst, const void *src, size_t n,
                   weft_copy_kind kind) {
  static const char *const name[] = {"h2d", "d2h", "d2d"};
  begin(be);
  int rc = BASE(be)->buffer_copy(be, dst, src, n, kind);
  end(be, 0, rc, "copy %s %zu B", (unsigned)kind < 3 ? name[kind] : "?", n);
  return rc;
}

static int pf_gemm(weft_backend *be, const weft_gemm_args *a) {
  begin(be);
  int rc = BASE(be)->gemm(be, a);
  int64_t b = a->batch > 1 ? a->batch : 1;
  end(be, 2.0 * (double)a->m * (double)a->n * (double)a->k * (double)b, rc,
      "gemm %lldx%lldx%lld batch %lld", LL(a->m), LL(a->n), LL(a->k), LL(b));
  return rc;
}

static int pf_linear(weft_backend *be, const float *x, int64_t rows,
                     int64_t in, const float *w, const float *bias, int64_t out,
                     float *y) {
  begin(be);
  int rc = BASE(be)->linear(be, x, rows, in, w, bias, out, y);
  end(be, 2.0 * (double)rows * (double)in * (double)out, rc,
      "linear %lld rows, %lld -> %lld", LL(rows), LL(in), LL(out));
  return rc;
}

static int pf_linear_group(weft_backend *be, const float *x, int64_t rows,
                           int64_t in, int n, const weft_linear_part *parts) {
  begin(be);
  int rc = BASE(be)->linear_group(be, x, rows, in, n, parts);
  int64_t out = 0;
  for (int i = 0; i < n; i++)
    out += parts[i].out;
  end(be, 2.0 * (double)rows * (double)in * (double)out, rc,
      "linear group of %d, %lld rows, %lld -> %lld", n, LL(rows), LL(in),
      LL(out));
  return rc;
}

static int pf_conv2d(weft_backend *be, const weft_conv2d_args *a) {
  int64_t ho = weft_conv2d_out_size(a->h_in, a->k_h, a->stride_h, a->pad_top,
                                    a->pad_bottom),
          wo = weft_conv2d_out_size(a->w_in, a->k_w, a->stride_w, a->pad_left,
                                    a->pad_right);
  begin(be);
  int rc = BASE(be)->conv2d(be, a);
  end(be,
      2.0 * (double)a->batch * (double)a->c_out * (double)(ho * wo) *
          (double)(a->c_in * a->k_h * a->k_w),
      rc, "conv2d %lldx%lldx%lld -> %lld, %lldx%lld/%lld, batch %lld%s",
      LL(a->c_in), LL(a->h_in), LL(a->w_in), LL(a->c_out), LL(a->k_h),
      LL(a->k_w), LL(a->stride_h), LL(a->batch),
      a->prenorm ? ", group norm first" : "");
  return rc;
}

static size_t pf_conv2d_scratch(weft_backend *be, const weft_conv2d_args *a) {
  return BASE(be)->conv2d_scratch_bytes(be, a);
}

static int pf_attention(weft_backend *be, const weft_attn_args *a) {
  begin(be);
  int rc = BASE(be)->attention(be, a);
  end(be,
      2.0 * (double)(a->batch * a->heads) * (double)a->lq * (double)a->lk *
          (double)(a->d + a->dv),
      rc, "attention %lldx%lld heads, %lld x %lld keys, d %lld", LL(a->batch),
      LL(a->heads), LL(a->lq), LL(a->lk), LL(a->d));
  return rc;
}

static size_t pf_attention_scratch(weft_backend *be, const weft_attn_args *a) {
  return BASE(be)->attention_scratch_bytes(be, a);
}

static int pf_group_norm(weft_backend *be, const float *x, float *y,
                         int64_t batch, int64_t ch, int64_t sp, int64_t groups,
                         float eps, const float *g, const float *b,
                         weft_act act) {
  begin(be);
  int rc =
      BASE(be)->group_norm(be, x, y, batch, ch, sp, groups, eps, g, b, act);
  end(be, 0, rc, "group_norm %lldx%lldx%lld%s", LL(batch), LL(ch), LL(sp),
      act ? " + act" : "");
  return rc;
}

static int pf_group_norm_cl(weft_backend *be, const float *x, float *y,
                            int64_t batch, int64_t ch, int64_t sp,
                            int64_t groups, float eps, const float *g,
                            const float *b, weft_act act) {
  begin(be);
  int rc =
      BASE(be)->group_norm_cl(be, x, y, batch, ch, sp, groups, eps, g, b, act);
  end(be, 0, rc, "group_norm_cl %lldx%lldx%lld%s", LL(batch), LL(sp), LL(ch),
      act ? " + act" : "");
  return rc;
}

static int pf_layer_norm(weft_backend *be, const float *x, float *y,
                         int64_t rows, int64_t dim, float eps, const float *g,
                         const float *b) {
  begin(be);
  int rc = BASE(be)->layer_norm(be, x, y, rows, dim, eps, g, b);
  end(be, 0, rc, "layer_norm %lld x %lld", LL(rows), LL(dim));
  return rc;
}

static int pf_softmax(weft_backend *be, const float *x, float *y, int64_t rows,
                      int64_t dim) {
  begin(be);
  int rc = BASE(be)->softmax(be, x, y, rows, dim);
  end(be, 0, rc, "softmax %lld x %lld", LL(rows), LL(dim));
  return rc;
}

static int pf_act(weft_backend *be, weft_act act, const float *x, float *y,
                  int64_t n) {
  begin(be);
  int rc = BASE(be)->act(be, act, x, y, n);
  end(be, 0, rc, "act %d, %lld", (int)act, LL(n));
  return rc;
}

static int pf_gated_act(weft_backend *be, weft_act act, const float *x,
                        float *y, int64_t rows, int64_t dim) {
  begin(be);
  int rc = BASE(be)->gated_act(be, act, x, y, rows, dim);
  end(be, 0, rc, "gated_act %d, %lld x %lld", (int)act, LL(rows), LL(dim));
  return rc;
}

static int64_t numel(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++)
    n *= shape[i];
  return n;
}

static int pf_binary(weft_backend *be, weft_binop op, const float *a,
                     int a_ndim, const int64_t *a_shape, const float *b,
                     int b_ndim, const int64_t *b_shape, float *y) {
  begin(be);
  int rc =
      BASE(be)->binary(be, op, a, a_ndim, a_shape, b, b_ndim, b_shape, y);
  end(be, 0, rc, "binary %d, %lld by %lld", (int)op,
      LL(numel(a_ndim, a_shape)), LL(numel(b_ndim, b_shape)));
  return rc;
}

static int pf_scale_add(weft_backend *be, float *y, float alpha,
                        const float *a, float beta, const float *b,
                        int64_t n) {
  begin(be);
  int rc = BASE(be)->scale_add(be, y, alpha, a, beta, b, n);
  end(be, 0, rc, "scale_add %lld", LL(n));
  return rc;
}

static int pf_upsample(weft_backend *be, const float *x, float *y,
                       int64_t planes, int64_t h, int64_t w) {
  begin(be);
  int rc = BASE(be)->upsample_nearest2x(be, x, y, planes, h, w);
  end(be, 0, rc, "upsample2x %lld planes, %lldx%lld", LL(planes), LL(h),
      LL(w));
  return rc;
}

static int pf_upsample_cl(weft_backend *be, const float *x, float *y,
                          int64_t batch, int64_t h, int64_t w, int64_t c) {
  begin(be);
  int rc = BASE(be)->upsample_nearest2x_cl(be, x, y, batch, h, w, c);
  end(be, 0, rc, "upsample2x_cl %lldx%lldx%lldx%lld", LL(batch), LL(h), LL(w),
      LL(c));
  return rc;
}

static int pf_concat(weft_backend *be, int n, const float *const *xs, int ndim,
                     const int64_t *const *shapes, int axis, float *y) {
  begin(be);
  int rc = BASE(be)->concat(be, n, xs, ndim, shapes, axis, y);
  int64_t total = 0;
  for (int i = 0; i < n && !rc; i++)
    total += numel(ndim, shapes[i]);
  end(be, 0, rc, "concat %d, %lld", n, LL(total));
  return rc;
}

static int pf_timestep(weft_backend *be, const float *t, int64_t n,
                       int64_t dim, int flip, float shift, float scale,
                       float max_period, float *y) {
  begin(be);
  int rc = BASE(be)->timestep_embedding(be, t, n, dim, flip, shift, scale,
                                        max_period, y);
  end(be, 0, rc, "timestep_embedding %lld x %lld", LL(n), LL(dim));
  return rc;
}

static int pf_convert(weft_backend *be, void *dst, weft_dtype dt,
                      const void *src, weft_dtype st, int64_t n) {
  begin(be);
  int rc = BASE(be)->convert(be, dst, dt, src, st, n);
  end(be, 0, rc, "convert %d -> %d, %lld", (int)st, (int)dt, LL(n));
  return rc;
}

static weft_backend_iface prof_iface;
static pthread_once_t prof_iface_once = PTHREAD_ONCE_INIT;
static const weft_backend_iface *prof_base;

static void prof_iface_init(void) {
  prof_iface = *prof_base;
  prof_iface.free = pf_free;
  prof_iface.synchronize = pf_sync;
  prof_iface.buffer_alloc = pf_alloc;
  prof_iface.buffer_free = pf_buf_free;
  prof_iface.buffer_copy = pf_copy;
  prof_iface.gemm = pf_gemm;
  prof_iface.linear = pf_linear;
  prof_iface.linear_group = pf_linear_group;
  prof_iface.conv2d = pf_conv2d;
  prof_iface.conv2d_scratch_bytes = pf_conv2d_scratch;
  prof_iface.attention = pf_attention;
  prof_iface.attention_scratch_bytes = pf_attention_scratch;
  prof_iface.group_norm = pf_group_norm;
  prof_iface.layer_norm = pf_layer_norm;
  prof_iface.softmax = pf_softmax;
  prof_iface.act = pf_act;
  prof_iface.gated_act = pf_gated_act;
  prof_iface.binary = pf_binary;
  prof_iface.scale_add = pf_scale_add;
  prof_iface.upsample_nearest2x = pf_upsample;
  prof_iface.concat = pf_concat;
  prof_iface.timestep_embedding = pf_timestep;
  prof_iface.convert = pf_convert;
  prof_iface.group_norm_cl = pf_group_norm_cl;
  prof_iface.upsample_nearest2x_cl = pf_upsample_cl;
  /* no new graphs (the events around each op would be captured, never
   * timed); graph_free stays, for those made before */
  prof_iface.graph_begin = NULL;
  prof_iface.graph_end = NULL;
  prof_iface.graph_launch = NULL;
}

bool weft__cuda_is_prof_iface(const weft_backend_iface *iface) {
  return iface == &prof_iface;
}

/* ---- public ------------------------------------------------------------- */

int weft_cuda_profile_start(weft_backend *be) {
  if (!weft_backend_is_cuda(be)) return WEFT_EINVAL;
  weft__cuda_ctx *ctx = WEFT__CUDA_CTX(be);
  if (ctx->prof) return 0; /* already on: keeps counting */
  weft__cuda_prof *p = calloc(1, sizeof *p);
  if (!p) return WEFT_ENOMEM;
  int rc = weft__cuda_check(ctx, cudaSetDevice(ctx->device), "cudaSetDevice");
  for (int i = 0; i < 2 * PROF_RING && !rc; i++)
    rc = weft__cuda_check(ctx, cudaEventCreate(&p->ev[i]), "cudaEventCreate");
  for (int i = 0; i < 2 * PART_RING && !rc; i++)
    rc = weft__cuda_check(ctx, cudaEventCreate(&p->pev[i]), "cudaEventCreate");
  if (rc) {
    for (int i = 0; i < 2 * PROF_RING; i++)
      if (p->ev[i]) cudaEventDestroy(p->ev[i]);
    for (int i = 0; i < 2 * PART_RING; i++)
      if (p->pev[i]) cudaEventDestroy(p->pev[i]);
    free(p);
    return rc;
  }
  p->base = be->iface;
  prof_base = be->iface;
  pthread_once(&prof_iface_once, prof_iface_init);
  ctx->prof = p;
  be->iface = &prof_iface;
  return 0;
}

static int by_ms_desc(const void *x, const void *y) {
  const prof_row *a = x, *b = y;
  return a->ms < b->ms ? 1 : a->ms > b->ms ? -1 : strcmp(a->key, b->key);
}

/* The op's name: the key up to its first space. */
static size_t op_len(const char *key) {
  return strcspn(key, " ");
}

void weft__cuda_prof_destroy(weft__cuda_ctx *ctx) {
  weft__cuda_prof *p = ctx->prof;
  if (!p) return;
  for (int i = 0; i < 2 * PROF_RING; i++)
    cudaEventDestroy(p->ev[i]);
  for (int i = 0; i < 2 * PART_RING; i++)
    cudaEventDestroy(p->pev[i]);
  free(p->ops.rows);
  free(p->parts.rows);
  free(p);
  ctx->prof = NULL;
}

/* A row's last cell: the products' TFLOP/s, or empty. */
static void rate_cell(FILE *f, double flop, double ms) {
  if (flop > 0 && ms > 0)
    fprintf(f, " %.1f |\n", flop / (ms * 1e-3) / 1e12);
  else
    fprintf(f, " |\n");
}

int weft_cuda_profile_report(weft_backend *be, FILE *f, const char *title,
                             double wall_s, int max_rows) {
  if (!be || !weft__cuda_is_prof_iface(be->iface)) return WEFT_EINVAL;
  weft__cuda_ctx *ctx = WEFT__CUDA_CTX(be);
  weft__cuda_prof *p = ctx->prof;
  int rc = prof_flush(ctx);
  be->iface = p->base;
  if (rc) {
    weft__cuda_prof_destroy(ctx);
    return rc;
  }
  qsort(p->ops.rows, (size_t)p->ops.n_rows, sizeof *p->ops.rows, by_ms_desc);
  double total = 0;
  int64_t calls = 0;
  for (int i = 0; i < p->ops.n_rows; i++)
    total += p->ops.rows[i].ms, calls += p->ops.rows[i].calls;
  if (f) {
    fprintf(f, "\n### %s\n\n", title ? title : "CUDA profile");
    fprintf(f,
            "%lld ops, %.3f ms of GPU time inside ops",
            (long long)calls, total);
    if (wall_s > 0)
      fprintf(f, ", %.3f ms wall (%.1f %% of it outside ops: launch gaps)",
              wall_s * 1e3, 100.0 * (1.0 - total / (wall_s * 1e3)));
    fprintf(f, "\n\nBy op:\n\n| op | calls | ms | %% | TFLOP/s |\n"
               "|---|---|---|---|---|\n");
    /* op totals: rows sorted by time, each op once, first seen first */
    for (int i = 0; i < p->ops.n_rows; i++) {
      size_t n = op_len(p->ops.rows[i].key);
      bool seen = false;
      for (int j = 0; j < i && !seen; j++)
        seen = op_len(p->ops.rows[j].key) == n &&
               memcmp(p->ops.rows[j].key, p->ops.rows[i].key, n) == 0;
      if (seen) continue;
      double ms = 0, flop = 0;
      int64_t c = 0;
      for (int j = i; j < p->ops.n_rows; j++)
        if (op_len(p->ops.rows[j].key) == n &&
            memcmp(p->ops.rows[j].key, p->ops.rows[i].key, n) == 0)
          ms += p->ops.rows[j].ms, flop += p->ops.rows[j].flop, c += p->ops.rows[j].calls;
      fprintf(f, "| %.*s | %lld | %.3f | %.1f |", (int)n, p->ops.rows[i].key,
              (long long)c, ms, total > 0 ? 100.0 * ms / total : 0.0);
      rate_cell(f, flop, ms);
    }
    fprintf(f, "\nBy op and shape (the %d largest):\n\n"
               "| op, shape | calls | ms | %% | us/call | TFLOP/s |\n"
               "|---|---|---|---|---|---|\n",
            max_rows);
    for (int i = 0; i < p->ops.n_rows && i < max_rows; i++) {
      const prof_row *r = &p->ops.rows[i];
      fprintf(f, "| %s | %lld | %.3f | %.1f | %.1f |", r->key,
              (long long)r->calls, r->ms, total > 0 ? 100.0 * r->ms / total : 0,
              r->calls ? 1e3 * r->ms / (double)r->calls : 0.0);
      rate_cell(f, r->flop, r->ms);
    }
    if (p->parts.n_rows) {
      qsort(p->parts.rows, (size_t)p->parts.n_rows, sizeof *p->parts.rows,
            by_ms_desc);
      fprintf(f, "\nParts of the ops above (inside their times):\n\n"
                 "| part | calls | ms | us/call |\n|---|---|---|---|\n");
      for (int i = 0; i < p->parts.n_rows && i < max_rows; i++) {
        const prof_row *r = &p->parts.rows[i];
        fprintf(f, "| %s | %lld | %.3f | %.1f |\n", r->key,
                (long long)r->calls, r->ms,
                r->calls ? 1e3 * r->ms / (double)r->calls : 0.0);
      }
    }
    fflush(f);
  }
  weft__cuda_prof_destroy(ctx);
  return 0;
}
