/* vec_avx2.c - the AVX2 + FMA + F16C vector routines.  Built with
 * -mavx2 -mfma -mf16c and used only after weft__cpu_has_avx2() said yes.
 *
 * exp and erf are own polynomial approximations (coefficients fitted by
 * tools/fixtures/gen_kernel_fixtures.py --fit-poly, Lawson's iteration for
 * near-minimax relative error, rounded to float):
 *   exp(x) = 2^n * (1 + r + r^2 P(r)),  |r| <= ln2/2,   ~2 ulp
 *   erf(z) = z + z P(z^2)              for |z| < 0.921875
 *   erfc(a) = exp(-(a + a Q(a)))       for 0.921875 <= a < 4
 * GELU uses erfc directly for negative inputs, so its tail keeps its
 * relative accuracy instead of losing it in 1 + erf(z).  Loop tails run the
 * same vector code on masked loads, so results never depend on where an
 * element sits in the array. */
#include <immintrin.h>
#include <math.h>

#include "internal.h"
#include "simd_avx2.h"

/* x * sigmoid(k x) = x / (1 + exp(-k x)) */
static inline __m256 v_xsigmoid(__m256 x, __m256 kx) {
  __m256 e = weft__v_exp(_mm256_sub_ps(_mm256_setzero_ps(), kx));
  return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

/* 1 + erf(z) */
static inline __m256 v_one_plus_erf(__m256 z) {
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 a = _mm256_and_ps(z, absmask);
  /* |z| < 0.921875: z + z P(z^2) */
  __m256 s = _mm256_mul_ps(z, z);
  __m256 p = _mm256_set1_ps(-5.990892532e-04f);
  p = _mm256_fmadd_ps(p, s, _mm256_set1_ps(4.993189126e-03f));
  p = _mm256_fmadd_ps(p, s, _mm256_set1_ps(-2.676662430e-02f));
  p = _mm256_fmadd_ps(p, s, _mm256_set1_ps(1.128181666e-01f));
  p = _mm256_fmadd_ps(p, s, _mm256_set1_ps(-3.761249483e-01f));
  p = _mm256_fmadd_ps(p, s, _mm256_set1_ps(1.283791512e-01f));
  __m256 small = _mm256_add_ps(_mm256_set1_ps(1.0f), _mm256_fmadd_ps(p, z, z));
  /* |z| >= 0.921875: erfc(a) = exp(-(a + a Q(a))) */
  __m256 ac = _mm256_min_ps(a, _mm256_set1_ps(4.0f));
  __m256 q = _mm256_set1_ps(1.130363216e-05f);
  q = _mm256_fmadd_ps(q, ac, _mm256_set1_ps(-3.235274926e-04f));
  q = _mm256_fmadd_ps(q, ac, _mm256_set1_ps(3.645400051e-03f));
  q = _mm256_fmadd_ps(q, ac, _mm256_set1_ps(-2.376827970e-02f));
  q = _mm256_fmadd_ps(q, ac, _mm256_set1_ps(1.062440947e-01f));
  q = _mm256_fmadd_ps(q, ac, _mm256_set1_ps(6.351469755e-01f));
  q = _mm256_fmadd_ps(q, ac, _mm256_set1_ps(1.286495626e-01f));
  q = _mm256_fmadd_ps(q, ac, ac);
  __m256 ec = weft__v_exp(_mm256_sub_ps(_mm256_setzero_ps(), q));
  ec = _mm256_and_ps(ec, _mm256_cmp_ps(a, _mm256_set1_ps(4.0f), _CMP_LT_OQ));
  __m256 neg = _mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_LT_OQ);
  __m256 large =
      _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(2.0f), ec), ec, neg);
  __m256 is_small = _mm256_cmp_ps(a, _mm256_set1_ps(0.921875f), _CMP_LT_OQ);
  __m256 r = _mm256_blendv_ps(large, small, is_small);
  /* NaN in, NaN out (the compares above are false for NaN) */
  return _mm256_blendv_ps(r, z, _mm256_cmp_ps(z, z, _CMP_UNORD_Q));
}

static inline __m256 v_act(weft_act act, __m256 x) {
  switch (act) {
  case WEFT_ACT_SILU: return v_xsigmoid(x, x);
  case WEFT_ACT_QUICK_GELU:
    return v_xsigmoid(x, _mm256_mul_ps(x, _mm256_set1_ps(1.702f)));
  case WEFT_ACT_GELU_TANH: {
    /* 0.5 x (1 + tanh(u)) = x sigmoid(2u), u = sqrt(2/pi)(x + 0.044715x^3) */
    __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
    __m256 u = _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), x3, x);
    __m256 u2 = _mm256_mul_ps(u, _mm256_set1_ps(2.0f * 0.7978845608028654f));
    return v_xsigmoid(x, u2);
  }
  case WEFT_ACT_GELU_ERF: {
    __m256 z = _mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f));
    __m256 h = _mm256_mul_ps(x, _mm256_set1_ps(0.5f));
    return _mm256_mul_ps(h, v_one_plus_erf(z));
  }
  default: return x;
  }
}

static void a_act(weft_act act, const float *x, float *y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, v_act(act, _mm256_loadu_ps(x + i)));
  if (i < n) {
    __m256i m = weft__tail_mask(n - i);
    _mm256_maskstore_ps(y + i, m, v_act(act, _mm256_maskload_ps(x + i, m)));
  }
}

static void a_gated(weft_act act, const float *a, const float *g, float *y,
                    int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(a + i),
                                          v_act(act, _mm256_loadu_ps(g + i))));
  if (i < n) {
    __m256i m = weft__tail_mask(n - i);
    __m256 v = _mm256_mul_ps(_mm256_maskload_ps(a + i, m),
                             v_act(act, _mm256_maskload_ps(g + i, m)));
    _mm256_maskstore_ps(y + i, m, v);
  }
}

static void a_affine_act(const float *x, float *y, int64_t n, float scale,
                         float shift, weft_act act) {
  __m256 sc = _mm256_set1_ps(scale), sh = _mm256_set1_ps(shift);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(
        y + i, v_act(act, _mm256_fmadd_ps(_mm256_loadu_ps(x + i), sc, sh)));
  if (i < n) {
    __m256i m = weft__tail_mask(n - i);
    __m256 v =
        v_act(act, _mm256_fmadd_ps(_mm256_maskload_ps(x + i, m), sc, sh));
    _mm256_maskstore_ps(y + i, m, v);
  }
}

static inline __m256 norm8(__m256 x, __m256 mu, __m256 rs, const float *g,
                           const float *b, __m256i m, int masked) {
  __m256 v = _mm256_mul_ps(_mm256_sub_ps(x, mu), rs);
  if (g)
    v = _mm256_mul_ps(v,
                      masked ? _mm256_maskload_ps(g, m) : _mm256_loadu_ps(g));
  if (b)
    v = _mm256_add_ps(v,
                      masked ? _mm256_maskload_ps(b, m) : _mm256_loadu_ps(b));
  return v;
}

static void a_norm_row(const float *x, float *y, int64_t n, float mean,
                       float rstd, const float *gamma, const float *beta) {
  __m256 mu = _mm256_set1_ps(mean), rs = _mm256_set1_ps(rstd);
  __m256i all = weft__tail_mask(8);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, norm8(_mm256_loadu_ps(x + i), mu, rs,
                                  gamma ? gamma + i : NULL,
                                  beta ? beta + i : NULL, all, 0));
  if (i < n) {
    __m256i m = weft__tail_mask(n - i);
    _mm256_maskstore_ps(y + i, m,
                        norm8(_mm256_maskload_ps(x + i, m), mu, rs,
                              gamma ? gamma + i : NULL, beta ? beta + i : NULL,
                              m, 1));
  }
}

static double a_sum(const float *x, int64_t n) {
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
  }
  double s = weft__hsum_pd(_mm256_add_pd(s0, s1));
  for (; i < n; i++)
    s += x[i];
  return s;
}

static double a_sqdev(const float *x, int64_t n, double mean) {
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
  __m256d mu = _mm256_set1_pd(mean);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    __m256d d0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), mu);
    __m256d d1 =
        _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), mu);
    s0 = _mm256_fmadd_pd(d0, d0, s0);
    s1 = _mm256_fmadd_pd(d1, d1, s1);
  }
  double s = weft__hsum_pd(_mm256_add_pd(s0, s1));
  for (; i < n; i++) {
    double d = x[i] - mean;
    s += d * d;
  }
  return s;
}

static void a_softmax_row(const float *x, float *y, int64_t n) {
  if (n <= 0) return;
  /* An all -Inf row gives NaN, as torch's softmax does. */
  double sum = weft__avx2_exp_row(x, y, n, weft__avx2_max_row(x, n));
  __m256 inv = _mm256_set1_ps((float)(1.0 / sum));
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(y + i), inv));
  for (; i < n; i++)
    y[i] *= _mm256_cvtss_f32(inv);
}

/* ---- f16 / bf16 ---------------------------------------------------------- */

static void a_f16_to_f32(const uint16_t *x, float *y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(
        y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
  for (; i < n; i++)
    y[i] = weft__f16_to_f32(x[i]);
}

static void a_f32_to_f16(const float *x, uint16_t *y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(
        (__m128i *)(y + i),
        _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; i++)
    y[i] = weft__f32_to_f16(x[i]);
}

static void a_bf16_to_f32(const uint16_t *x, float *y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256i v =
        _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(x + i)));
    _mm256_storeu_si256((__m256i *)(y + i), _mm256_slli_epi32(v, 16));
  }
  for (; i < n; i++)
    y[i] = weft__bf16_to_f32(x[i]);
}

static inline __m256i bf16_round(__m256 f) {
  __m256i u = _mm256_castps_si256(f);
  __m256i lsb =
      _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i r =
      _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb);
  r = _mm256_srli_epi32(r, 16);
  __m256 nan = _mm256_cmp_ps(f, f, _CMP_UNORD_Q);
  return _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7fc0),
                            _mm256_castps_si256(nan));
}

static void a_f32_to_bf16(const float *x, uint16_t *y, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256i lo = bf16_round(_mm256_loadu_ps(x + i));
    __m256i hi = bf16_round(_mm256_loadu_ps(x + i + 8));
    /* packus works per 128-bit lane; the permute restores element order */
    __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, hi), 0xd8);
    _mm256_storeu_si256((__m256i *)(y + i), p);
  }
  for (; i < n; i++)
    y[i] = weft__f32_to_bf16(x[i]);
}

const weft__vec weft__vec_avx2 = {
    .name = "avx2",
    .act = a_act,
    .gated = a_gated,
    .affine_act = a_affine_act,
    .norm_row = a_norm_row,
    .sum = a_sum,
    .sqdev = a_sqdev,
    .softmax_row = a_softmax_row,
    .f16_to_f32 = a_f16_to_f32,
    .f32_to_f16 = a_f32_to_f16,
    .bf16_to_f32 = a_bf16_to_f32,
    .f32_to_bf16 = a_f32_to_bf16,
};
