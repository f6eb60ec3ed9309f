/* attention_avx2.c - fused scaled dot-product attention for AVX2 + FMA.
 *
 * The BLAS path (attention.c) alternates OpenBLAS's threads with the pool's
 * for every chunk and streams a 4 MB score block through memory four
 * times.  Here each pool task owns whole query blocks of one (batch, head)
 * and runs everything on one thread, so a call synchronises once:
 *   - K is packed once per (batch, head) into panels of 16 keys, [d][16];
 *   - per block of QB = 24 queries, S = scale * Q K^T with a 6x16 register
 *     tile, keys blocked by KB so a K block stays in L1/L2 across the
 *     block's rows; the QB x lk score block (384 KB at lk = 4096) stays in
 *     L2 for the softmax and for O = P V;
 *   - softmax leaves rows unnormalised and O is scaled by 1/sum at the end
 *     (dv multiplies per row instead of lk);
 *   - V is packed once per (batch, head) too, rows padded to 8 floats;
 *     O = P V with a 4-row x 24-column tile, keys blocked by KBV so the V
 *     block stays in L1.
 * Numerically the same algorithm as the reference: float dot products,
 * max-subtracted exp, double row sums. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "simd_avx2.h"

#define QB 24  /* query rows per block */
#define KP 16  /* keys per packed panel */
#define KB 256 /* keys per cache block of Q K^T */
#ifndef KBV
#define KBV 128 /* keys per cache block of P V: a 20 KB V block at dv = 40 */
#endif

static int64_t round_up(int64_t x, int64_t m) {
  return (x + m - 1) / m * m;
}

/* Score row stride: a multiple of 16, but not of 1024 floats, so the rows
 * of a tile do not all fall into the same L1 sets. */
static int64_t s_ld(int64_t lk) {
  int64_t ld = round_up(lk, KP);
  return ld % 1024 == 0 ? ld + KP : ld;
}

size_t weft__attn_avx2_thread_bytes(const weft_attn_args *a) {
  int64_t floats = round_up(a->lk, KP) * a->d + a->lk * round_up(a->dv, 8) +
                   QB * s_ld(a->lk) + QB;
  return (size_t)round_up(64 + floats * (int64_t)sizeof(float), 64);
}

/* kt[p][e][c] = k[p*16 + c][e], zero past lk */
static void pack_kt(const float *k, int64_t ldk, int64_t lk, int64_t d,
                    float *kt) {
  int64_t np = (lk + KP - 1) / KP;
  for (int64_t p = 0; p < np; p++) {
    float *panel = kt + p * d * KP;
    for (int64_t c = 0; c < KP; c++) {
      int64_t j = p * KP + c;
      if (j < lk) {
        const float *row = k + j * ldk;
        for (int64_t e = 0; e < d; e++)
          panel[e * KP + c] = row[e];
      } else {
        for (int64_t e = 0; e < d; e++)
          panel[e * KP + c] = 0.0f;
      }
    }
  }
}

/* vp[j][0..ldp) = v[j][0..dv), zero-padded to ldp = round_up(dv, 8) so
 * the P V tile never needs masked loads */
static void pack_v(const float *v, int64_t ldv, int64_t lk, int64_t dv,
                   float *vp) {
  int64_t ldp = round_up(dv, 8);
  for (int64_t j = 0; j < lk; j++) {
    memcpy(vp + j * ldp, v + j * ldv, (size_t)dv * sizeof(float));
    for (int64_t c = dv; c < ldp; c++)
      vp[j * ldp + c] = 0.0f;
  }
}

/* s[r][0..16) = scale * sum_e q[r][e] * kt[e][0..16), r < MR */
static inline __attribute__((always_inline)) void
qk_tile(const int mr, const float *q, int64_t ldq, const float *kt, int64_t d,
        __m256 scale, float *s, int64_t lds) {
  __m256 a0[6], a1[6];
#pragma GCC unroll 6
  for (int r = 0; r < mr; r++)
    a0[r] = a1[r] = _mm256_setzero_ps();
  for (int64_t e = 0; e < d; e++) {
    __m256 k0 = _mm256_load_ps(kt + e * KP),
           k1 = _mm256_load_ps(kt + e * KP + 8);
#pragma GCC unroll 6
    for (int r = 0; r < mr; r++) {
      __m256 qv = _mm256_broadcast_ss(q + r * ldq + e);
      a0[r] = _mm256_fmadd_ps(qv, k0, a0[r]);
      a1[r] = _mm256_fmadd_ps(qv, k1, a1[r]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < mr; r++) {
    _mm256_storeu_ps(s + r * lds, _mm256_mul_ps(a0[r], scale));
    _mm256_storeu_ps(s + r * lds + 8, _mm256_mul_ps(a1[r], scale));
  }
}

static void qk_rows(int mr, const float *q, int64_t ldq, const float *kt,
                    int64_t d, __m256 scale, float *s, int64_t lds) {
  switch (mr) {
  case 6: qk_tile(6, q, ldq, kt, d, scale, s, lds); break;
  case 5: qk_tile(5, q, ldq, kt, d, scale, s, lds); break;
  case 4: qk_tile(4, q, ldq, kt, d, scale, s, lds); break;
  case 3: qk_tile(3, q, ldq, kt, d, scale, s, lds); break;
  case 2: qk_tile(2, q, ldq, kt, d, scale, s, lds); break;
  default: qk_tile(1, q, ldq, kt, d, scale, s, lds); break;
  }
}

/* o[r][0..8*NV) (+)= sum_j p[r][j] * v[j][0..8*NV), r < MR; v is packed
 * and padded, o's last vector is read and written masked when MK.  first: start
 * from zero instead of o; inv (or NULL): per-row factors applied before the
 * store. */
static inline __attribute__((always_inline)) void
pv_tile(const int mr, const int nv, const int mk, __m256i mask, const float *p,
        int64_t lds, const float *v, int64_t ldv, int64_t nk, float *o,
        int64_t ldo, int first, const float *inv) {
  __m256 acc[4][3];
#pragma GCC unroll 4
  for (int r = 0; r < mr; r++)
#pragma GCC unroll 3
    for (int c = 0; c < nv; c++) {
      if (first)
        acc[r][c] = _mm256_setzero_ps();
      else if (mk && c == nv - 1)
        acc[r][c] = _mm256_maskload_ps(o + r * ldo + 8 * c, mask);
      else
        acc[r][c] = _mm256_loadu_ps(o + r * ldo + 8 * c);
    }
  for (int64_t j = 0; j < nk; j++) {
    __m256 vv[3];
#pragma GCC unroll 3
    for (int c = 0; c < nv; c++)
      vv[c] = _mm256_loadu_ps(v + j * ldv + 8 * c);
#pragma GCC unroll 4
    for (int r = 0; r < mr; r++) {
      __m256 pb = _mm256_broadcast_ss(p + r * lds + j);
#pragma GCC unroll 3
      for (int c = 0; c < nv; c++)
        acc[r][c] = _mm256_fmadd_ps(pb, vv[c], acc[r][c]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < mr; r++) {
    __m256 f = inv ? _mm256_broadcast_ss(inv + r) : _mm256_set1_ps(1.0f);
#pragma GCC unroll 3
    for (int c = 0; c < nv; c++) {
      __m256 y = _mm256_mul_ps(acc[r][c], f);
      if (mk && c == nv - 1)
        _mm256_maskstore_ps(o + r * ldo + 8 * c, mask, y);
      else
        _mm256_storeu_ps(o + r * ldo + 8 * c, y);
    }
  }
}

#define PV(MR, NV, MK)                                                         \
  case MR * 8 + NV * 2 + MK:                                                   \
    pv_tile(MR, NV, MK, mask, p, lds, v, ldv, nk, o, ldo, first, inv);         \
    break;
#define PV_MR(MR)                                                              \
  PV(MR, 1, 0) PV(MR, 1, 1) PV(MR, 2, 0) PV(MR, 2, 1) PV(MR, 3, 0) PV(MR, 3, 1)

static void pv_rows(int mr, int nv, int mk, __m256i mask, const float *p,
                    int64_t lds, const float *v, int64_t ldv, int64_t nk,
                    float *o, int64_t ldo, int first, const float *inv) {
  switch (mr * 8 + nv * 2 + mk) {
    PV_MR(4)
    PV_MR(3)
    PV_MR(2)
    PV_MR(1)
  default: break;
  }
}

typedef struct attn_job {
  const weft_attn_args *a;
  float scale;
  char *scratch;
  size_t per_thread;
  int64_t qsplit, part_rows;
} attn_job;

/* One query block [qb, qb + rows) of one head. */
static void attn_block(const weft_attn_args *a, __m256 scale, const float *q,
                       const float *kt, const float *v, float *o, int64_t qb,
                       int64_t rows, float *s, float *inv) {
  const int64_t lds = s_ld(a->lk), d = a->d, dv = a->dv;
  const int64_t ldq = a->q_s.l, ldv = round_up(dv, 8), ldo = a->o_s.l;
  int64_t nk = a->causal && qb + rows < a->lk ? qb + rows : a->lk;
  int64_t np = (nk + KP - 1) / KP;
  for (int64_t p0 = 0; p0 < np; p0 += KB / KP) {
    int64_t p1 = p0 + KB / KP < np ? p0 + KB / KP : np;
    for (int64_t r = 0; r < rows; r += 6) {
      int mr = rows - r < 6 ? (int)(rows - r) : 6;
      for (int64_t p = p0; p < p1; p++)
        qk_rows(mr, q + (qb + r) * ldq, ldq, kt + p * d * KP, d, scale,
                s + r * lds + p * KP, lds);
    }
  }
  for (int64_t r = 0; r < rows; r++) {
    float *row = s + r * lds;
    int64_t valid = a->causal && qb + r + 1 < nk ? qb + r + 1 : nk;
    double sum =
        weft__avx2_exp_row(row, row, valid, weft__avx2_max_row(row, valid));
    inv[r] = (float)(1.0 / sum);
    if (valid < nk)
      memset(row + valid, 0, (size_t)(nk - valid) * sizeof(float));
  }
  for (int64_t j0 = 0; j0 < nk; j0 += KBV) {
    int64_t nkb = nk - j0 < KBV ? nk - j0 : KBV;
    int first = j0 == 0, last = j0 + KBV >= nk;
    for (int64_t r = 0; r < rows; r += 4) {
      int mr = rows - r < 4 ? (int)(rows - r) : 4;
      for (int64_t c0 = 0; c0 < dv; c0 += 24) {
        int64_t left = dv - c0;
        int nv = left >= 24 ? 3 : (int)((left + 7) / 8);
        int mk = c0 + 8 * nv > dv;
        __m256i mask = weft__tail_mask(mk ? left - 8 * (nv - 1) : 8);
        pv_rows(mr, nv, mk, mask, s + r * lds + j0, lds, v + j0 * ldv + c0, ldv,
                nkb, o + (qb + r) * ldo + c0, ldo, first,
                last ? inv + r : NULL);
      }
    }
  }
}

static void attn_tasks(void *arg, int64_t tb, int64_t te, int tid) {
  const attn_job *j = arg;
  const weft_attn_args *a = j->a;
  char *base = j->scratch + (size_t)tid * j->per_thread;
  int64_t *packed_bh = (int64_t *)base;
  float *kt = (float *)(base + 64);
  float *vp = kt + round_up(a->lk, KP) * a->d;
  float *s = vp + a->lk * round_up(a->dv, 8);
  float *inv = s + QB * s_ld(a->lk);
  const __m256 scale = _mm256_set1_ps(j->scale);
  for (int64_t t = tb; t < te; t++) {
    int64_t bh = t / j->qsplit, part = t % j->qsplit;
    int64_t b = bh / a->heads, h = bh % a->heads;
    int64_t q0 = part * j->part_rows;
    int64_t q1 = q0 + j->part_rows < a->lq ? q0 + j->part_rows : a->lq;
    if (q0 >= q1) continue;
    if (*packed_bh != bh) {
      pack_kt(a->k + b * a->k_s.b + h * a->k_s.h, a->k_s.l, a->lk, a->d, kt);
      pack_v(a->v + b * a->v_s.b + h * a->v_s.h, a->v_s.l, a->lk, a->dv, vp);
      *packed_bh = bh;
    }
    const float *q = a->q + b * a->q_s.b + h * a->q_s.h;
    float *o = a->o + b * a->o_s.b + h * a->o_s.h;
    for (int64_t qb = q0; qb < q1; qb += QB)
      attn_block(a, scale, q, kt, vp, o, qb, q1 - qb < QB ? q1 - qb : QB, s,
                 inv);
  }
}

int weft__attn_avx2(weft_cpu_ctx *ctx, const weft_attn_args *a, float scale,
                    void *scratch, size_t per_thread) {
  const int64_t bh = a->batch * a->heads, threads = ctx->pool.n_threads;
  /* Split heads' queries until there are a few tasks per thread; each part
   * is whole blocks so only the last block of a head is ragged. */
  int64_t qsplit = 1;
  while (bh * qsplit < 4 * threads && a->lq >= 2 * qsplit * QB)
    qsplit *= 2;
  int64_t part_rows = round_up((a->lq + qsplit - 1) / qsplit, QB);
  qsplit = (a->lq + part_rows - 1) / part_rows;
  for (int64_t t = 0; t < threads; t++)
    *(int64_t *)((char *)scratch + (size_t)t * per_thread) = -1;
  attn_job j = {a, scale, scratch, per_thread, qsplit, part_rows};
  weft__parallel_for(ctx, bh * qsplit, 1, attn_tasks, &j);
  return 0;
}
