/* attention_half.c - attention in FP16/BF16 precision: both products on
 * tensor cores with fp32 accumulation, the softmax in fp32.
 *
 *   Qh, Kh, Vh = q, k, v rounded to 16 bits, packed dense [B*H, L, d]
 *   S = scale * Qh Kh^T          (cuBLASLt, fp32 out)   per block
 *   P = softmax(S) (+ causal)    (fp32 math, 16-bit out) per block
 *   o = P Vh                     (cuBLASLt, o's own strides and dtype)
 *
 * q, k, v and o are activations: fp32, or 16-bit under 16-bit
 * activations (weft_cuda_set_act_dtype).
 *
 * S is materialised, a block of (batch, head) pairs and query rows at a
 * time, bounded by ATTN16_SCORE_BYTES: this is the simple, exact-shape
 * path of issue 7 (cuBLAS kernels on any head dim), not a fused
 * flash-attention kernel.  Probabilities are normalised before they are
 * rounded to 16 bits (values in [0, 1]). */
#include <stdio.h>

#include "internal.h"

/* fp32 scores of one block: 16 MiB (a quarter of the VAE's 4096 x 4096
 * map of one head: its scratch with the 16-bit probabilities and the
 * packed q, k, v is 36 MiB, beside a decode's planned activations). */
#ifndef ATTN16_SCORE_BYTES
#define ATTN16_SCORE_BYTES ((size_t)16 << 20)
#endif

typedef struct plan16 {
  int64_t bh;     /* batch * heads */
  int64_t g;      /* (batch, head) pairs per block */
  int64_t qrows;  /* query rows per block */
  bool uniform_o; /* o's (b, h) offsets are one stride: o_s.b = H o_s.h */
  size_t qkv;     /* bytes of Qh + Kh + Vh */
  size_t s_bytes; /* fp32 scores of one block */
  size_t p_bytes; /* 16-bit probabilities of one block */
} plan16;

static size_t align256(size_t n) {
  return (n + 255) & ~(size_t)255;
}

static void make_plan(const weft_attn_args *a, plan16 *p) {
  p->bh = a->batch * a->heads;
  p->uniform_o = a->o_s.b == a->heads * a->o_s.h;
  const int64_t cap = (int64_t)(ATTN16_SCORE_BYTES / sizeof(float));
  const int64_t per = a->lq * a->lk;
  if (per <= cap) {
    p->qrows = a->lq;
    p->g = cap / per;
    if (p->g > p->bh) p->g = p->bh;
    /* a block that crosses images needs one stride for o */
    if (!p->uniform_o && p->g > a->heads) p->g = a->heads;
  } else {
    p->g = 1;
    p->qrows = cap / a->lk;
    if (p->qrows < 1) p->qrows = 1;
  }
  p->qkv = align256((size_t)(p->bh * a->lq * a->d) * 2) +
           align256((size_t)(p->bh * a->lk * a->d) * 2) +
           align256((size_t)(p->bh * a->lk * a->dv) * 2);
  p->s_bytes = align256((size_t)(p->g * p->qrows * a->lk) * sizeof(float));
  p->p_bytes = align256((size_t)(p->g * p->qrows * a->lk) * 2);
}

size_t weft__cuda_attention16_scratch(const weft_attn_args *a) {
  if (a->batch == 0 || a->heads == 0 || a->lq == 0) return 0;
  plan16 p;
  make_plan(a, &p);
  return p.qkv + p.s_bytes + p.p_bytes;
}

/* Packs x ([B, H, L, cols] by strides s, in the activations' dtype) into
 * dense 16-bit [B*H, L, cols]. */
static int pack(weft__cuda_ctx *ctx, const float *x, weft_attn_strides s,
                const weft_attn_args *a, int64_t len, int64_t cols,
                weft_dtype dt, void *dst, const char *what) {
  return weft__cuda_check(ctx,
                          weft__cu_pack(ctx->stream, x, ctx->act, dst, dt,
                                        a->batch, a->heads, s.b, s.h, len, cols,
                                        s.l),
                          what);
}

int weft__cuda_attention16(weft__cuda_ctx *ctx, const weft_attn_args *a,
                           float scale) {
  const weft_dtype dt = weft__cuda_compute_dtype(ctx);
  plan16 p;
  make_plan(a, &p);
  const size_t need = p.qkv + p.s_bytes + p.p_bytes;
  unsigned char *base = a->scratch;
  if ((!base || a->scratch_bytes < need) &&
      !(base = weft__cuda_scratch(ctx, need)))
    return WEFT_ENOMEM;
  uint16_t *qh = (uint16_t *)base;
  uint16_t *kh =
      (uint16_t *)(base + align256((size_t)(p.bh * a->lq * a->d) * 2));
  uint16_t *vh = (uint16_t *)((unsigned char *)kh +
                              align256((size_t)(p.bh * a->lk * a->d) * 2));
  float *sc = (float *)(base + p.qkv);
  void *pr = base + p.qkv + p.s_bytes;

  int rc = pack(ctx, a->q, a->q_s, a, a->lq, a->d, dt, qh, "attention: q");
  if (rc == 0)
    rc = pack(ctx, a->k, a->k_s, a, a->lk, a->d, dt, kh, "attention: k");
  if (rc == 0)
    rc = pack(ctx, a->v, a->v_s, a, a->lk, a->dv, dt, vh, "attention: v");

  for (int64_t t0 = 0; t0 < p.bh && rc == 0;) {
    int64_t g = p.bh - t0 < p.g ? p.bh - t0 : p.g;
    if (!p.uniform_o) { /* stay inside one image */
      int64_t left = a->heads - t0 % a->heads;
      if (g > left) g = left;
    }
    const int64_t b = t0 / a->heads, h = t0 % a->heads;
    for (int64_t q0 = 0; q0 < a->lq && rc == 0; q0 += p.qrows) {
      const int64_t nq = a->lq - q0 < p.qrows ? a->lq - q0 : p.qrows;
      /* S[g][nq][lk] = scale * Q K^T */
      weft__cuda_mm s_mm = {.trans_a = 0,
                            .trans_b = 1,
                            .m = nq,
                            .n = a->lk,
                            .k = a->d,
                            .batch = g,
                            .alpha = scale,
                            .beta = 0.0f,
                            .a = qh + (t0 * a->lq + q0) * a->d,
                            .lda = a->d,
                            .sa = a->lq * a->d,
                            .b = kh + t0 * a->lk * a->d,
                            .ldb = a->d,
                            .sb = a->lk * a->d,
                            .c = sc,
                            .ldc = a->lk,
                            .sc = nq * a->lk,
                            .bias = NULL,
                            .dt = dt};
      rc = weft__cuda_mm16(ctx, &s_mm);
      if (rc) break;
      rc = weft__cuda_check(ctx,
                            weft__cu_softmax16(ctx->stream, sc, pr, (int)dt,
                                               g * nq, a->lk, a->causal != 0,
                                               q0, nq),
                            "attention softmax");
      if (rc) break;
      /* o[b, h, q0:q0+nq, :] = P V */
      weft__cuda_mm o_mm = {
          .trans_a = 0,
          .trans_b = 0,
          .m = nq,
          .n = a->dv,
          .k = a->lk,
          .batch = g,
          .alpha = 1.0f,
          .beta = 0.0f,
          .a = pr,
          .lda = a->lk,
          .sa = nq * a->lk,
          .b = vh + t0 * a->lk * a->dv,
          .ldb = a->dv,
          .sb = a->lk * a->dv,
          .c = weft__cuda_act_at(ctx, a->o,
                                 b * a->o_s.b + h * a->o_s.h + q0 * a->o_s.l),
          .ldc = a->o_s.l,
          .sc = a->o_s.h,
          .bias = NULL,
          .dt = dt,
          .c_dt = ctx->act};
      rc = weft__cuda_mm16(ctx, &o_mm);
    }
    t0 += g;
  }
  return rc;
}
