/* attention.c - scaled dot-product attention.  With AVX2 the fused kernel
 * of attention_avx2.c runs.  Otherwise (and as its cross-check in tests)
 * this BLAS path: per (batch, head) and per chunk of q_chunk query rows,
 * S = scale * Q K^T (one GEMM), a row softmax in place (on the pool), then
 * O = S V (one GEMM).  Only a q_chunk x lk score block exists at a time.
 * With a causal mask a chunk only multiplies against the keys its last row
 * can see. */
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define DEFAULT_CHUNK 256

static int64_t chunk_rows(const weft_attn_args *a) {
  int64_t c = a->q_chunk > 0 ? a->q_chunk : DEFAULT_CHUNK;
  return c < a->lq ? c : a->lq;
}

static int check_shapes(const weft_attn_args *a) {
  if (!a) return WEFT_EINVAL;
  if (a->batch < 0 || a->heads < 0 || a->lq < 0 || a->lk <= 0 || a->d <= 0 ||
      a->dv <= 0 || a->q_chunk < 0)
    return WEFT_EINVAL;
  if (a->lk > INT_MAX || a->lq > INT_MAX || a->d > INT_MAX || a->dv > INT_MAX)
    return WEFT_EINVAL;
  /* Rows must not overlap within a head; BLAS needs ld >= row length. */
  if (a->q_s.l < a->d || a->k_s.l < a->d || a->v_s.l < a->dv ||
      a->o_s.l < a->dv || a->q_s.l > INT_MAX || a->k_s.l > INT_MAX ||
      a->v_s.l > INT_MAX || a->o_s.l > INT_MAX)
    return WEFT_EINVAL;
  return 0;
}

static int check(const weft_attn_args *a) {
  int rc = check_shapes(a);
  if (rc == 0 && (!a->q || !a->k || !a->v || !a->o)) rc = WEFT_EINVAL;
  return rc;
}

static bool use_fused(const weft_cpu_ctx *ctx) {
#ifdef WEFT_HAVE_AVX2_BUILD
  return ctx->vec == &weft__vec_avx2;
#else
  (void)ctx;
  return false;
#endif
}

size_t weft_cpu_attention_scratch_bytes(const weft_cpu_ctx *ctx,
                                        const weft_attn_args *a) {
  if (check_shapes(a) != 0) return 0;
#ifdef WEFT_HAVE_AVX2_BUILD
  if (use_fused(ctx))
    return (size_t)ctx->pool.n_threads * weft__attn_avx2_thread_bytes(a);
#endif
  return (size_t)(chunk_rows(a) * a->lk) * sizeof(float);
}

typedef struct sm_job {
  const weft__vec *vec;
  float *s;
  int64_t ld, q0;
  int causal;
} sm_job;

static void softmax_rows(void *arg, int64_t b, int64_t e, int tid) {
  (void)tid;
  const sm_job *j = arg;
  for (int64_t r = b; r < e; r++) {
    float *row = j->s + r * j->ld;
    int64_t valid = j->ld;
    if (j->causal && j->q0 + r + 1 < valid) valid = j->q0 + r + 1;
    j->vec->softmax_row(row, row, valid);
    if (valid < j->ld) memset(row + valid, 0, (size_t)(j->ld - valid) * 4);
  }
}

int weft_cpu_attention(weft_cpu_ctx *ctx, const weft_attn_args *a) {
  int rc = check(a);
  if (rc != 0) return rc;
  if (a->batch == 0 || a->heads == 0 || a->lq == 0) return 0;
  const int64_t chunk = chunk_rows(a);
  const float scale =
      a->scale != 0 ? a->scale : (float)(1.0 / sqrt((double)a->d));
#ifdef WEFT_HAVE_AVX2_BUILD
  if (use_fused(ctx)) {
    size_t per = weft__attn_avx2_thread_bytes(a);
    size_t need = per * (size_t)ctx->pool.n_threads;
    void *buf = a->scratch;
    if (buf && (a->scratch_bytes < need || ((uintptr_t)buf & 63)))
      return WEFT_EINVAL;
    if (!buf && !(buf = weft__alloc(need))) return WEFT_ENOMEM;
    rc = weft__attn_avx2(ctx, a, scale, buf, per);
    if (buf != a->scratch) free(buf);
    return rc;
  }
#endif
  float *s = a->scratch;
  if (s) {
    if (a->scratch_bytes < (size_t)(chunk * a->lk) * sizeof(float))
      return WEFT_EINVAL;
  } else {
    s = weft__alloc((size_t)(chunk * a->lk) * sizeof(float));
    if (!s) return WEFT_ENOMEM;
  }
  for (int64_t b = 0; b < a->batch; b++) {
    for (int64_t h = 0; h < a->heads; h++) {
      const float *q = a->q + b * a->q_s.b + h * a->q_s.h;
      const float *k = a->k + b * a->k_s.b + h * a->k_s.h;
      const float *v = a->v + b * a->v_s.b + h * a->v_s.h;
      float *o = a->o + b * a->o_s.b + h * a->o_s.h;
      for (int64_t q0 = 0; q0 < a->lq; q0 += chunk) {
        int64_t rows = a->lq - q0 < chunk ? a->lq - q0 : chunk;
        int64_t keys = a->lk;
        if (a->causal && q0 + rows < keys) keys = q0 + rows;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows,
                    (int)keys, (int)a->d, scale, q + q0 * a->q_s.l,
                    (int)a->q_s.l, k, (int)a->k_s.l, 0.0f, s, (int)keys);
        sm_job j = {ctx->vec, s, keys, q0, a->causal};
        weft__parallel_for(ctx, rows, 1 + (1 << 13) / keys, softmax_rows, &j);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows,
                    (int)a->dv, (int)keys, 1.0f, s, (int)keys, v, (int)a->v_s.l,
                    0.0f, o + q0 * a->o_s.l, (int)a->o_s.l);
      }
    }
  }
  if (s != a->scratch) free(s);
  return 0;
}
