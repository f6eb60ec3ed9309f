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

static const int32_t mask_tab[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                     0,  0,  0,  0,  0,  0,  0,  0};

static inline __m256i tail_mask(int64_t r) {
  return _mm256_loadu_si256((const __m256i *)(mask_tab + 8 - r));
}

static inline __m256 v_exp(__m256 x) {
  const __m256 log2e = _mm256_set1_ps(0x1.715476p+0f);
  const __m256 ln2_hi = _mm256_set1_ps(0x1.62e4p-1f);
  const __m256 ln2_lo = _mm256_set1_ps(0x1.7f7d1cp-20f);
  __m256 nanm = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
  /* Outside [-104, 89] the result is 0 or Inf anyway; clamping keeps n in
   * a range whose two half-scales below are normal floats. */
  __m256 xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-104.0f)),
                            _mm256_set1_ps(89.0f));
  __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, log2e),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, ln2_hi, xc);
  r = _mm256_fnmadd_ps(n, ln2_lo, r);
  __m256 p = _mm256_set1_ps(0x1.6a244cp-10f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0x1.1239d4p-7f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0x1.5558f2p-5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0x1.555492p-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0x1.fffffcp-2f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r);
  p = _mm256_add_ps(p, _mm256_set1_ps(1.0f));
  /* 2^n as two factors 2^n1 * 2^n2 so subnormal results come out right. */
  __m256i ni = _mm256_cvtps_epi32(n);
  __m256i n1 = _mm256_srai_epi32(ni, 1);
  __m256i n2 = _mm256_sub_epi32(ni, n1);
  const __m256i bias = _mm256_set1_epi32(127);
  __m256 s1 =
      _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
  __m256 s2 =
      _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
  __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
  return _mm256_blendv_ps(y, x, nanm);
}

/* x * sigmoid(k x) = x / (1 + exp(-k x)) */
static inline __m256 v_xsigmoid(__m256 x, __m256 kx) {
  __m256 e = v_exp(_mm256_sub_ps(_mm256_setzero_ps(), kx));
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
  __m256 ec = v_exp(_mm256_sub_ps(_mm256_setzero_ps(), q));
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
    __m256i m = tail_mask(n - i);
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
    __m256i m = tail_mask(n - i);
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
    __m256i m = tail_mask(n - i);
    __m256 v =
        v_act(act, _mm256_fmadd_ps(_mm256_maskload_ps(x + i, m), sc, sh));
    _mm256_maskstore_ps(y + i, m, v);
  }
}

static void a_norm_row(const float *x, float *y, int64_t n, float mean,
                       float rstd, const float *gamma, const float *beta) {
  __m256 mu = _mm256_set1_ps(mean), rs = _mm256_set1_ps(rstd);
  int64_t i = 0;
  for (; i < n; i += 8) {
    __m256i m = tail_mask(n - i < 8 ? n - i : 8);
    __m256 v =
        _mm256_mul_ps(_mm256_sub_ps(_mm256_maskload_ps(x + i, m), mu), rs);
    if (gamma) v = _mm256_mul_ps(v, _mm256_maskload_ps(gamma + i, m));
    if (beta) v = _mm256_add_ps(v, _mm256_maskload_ps(beta + i, m));
    _mm256_maskstore_ps(y + i, m, v);
  }
}

static inline double hsum_pd(__m256d v) {
  __m128d s =
      _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

static double a_sum(const float *x, int64_t n) {
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
  }
  double s = hsum_pd(_mm256_add_pd(s0, s1));
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
  double s = hsum_pd(_mm256_add_pd(s0, s1));
  for (; i < n; i++) {
    double d = x[i] - mean;
    s += d * d;
  }
  return s;
}

static void a_softmax_row(const float *x, float *y, int64_t n) {
  if (n <= 0) return;
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  __m256 mx = ninf;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    mx = _mm256_max_ps(mx, _mm256_loadu_ps(x + i));
  if (i < n) {
    __m256i m = tail_mask(n - i);
    __m256 v = _mm256_blendv_ps(ninf, _mm256_maskload_ps(x + i, m),
                                _mm256_castsi256_ps(m));
    mx = _mm256_max_ps(mx, v);
  }
  __m128 h =
      _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
  float maxv = _mm_cvtss_f32(h);
  /* An all -Inf row: torch gives NaN (exp(-inf - -inf)); keep that. */
  __m256 mv = _mm256_set1_ps(maxv);
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
  for (i = 0; i < n; i += 8) {
    __m256i m = tail_mask(n - i < 8 ? n - i : 8);
    __m256 e = v_exp(_mm256_sub_ps(_mm256_maskload_ps(x + i, m), mv));
    e = _mm256_and_ps(e, _mm256_castsi256_ps(m));
    _mm256_maskstore_ps(y + i, m, e);
    s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
    s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
  }
  __m256 inv = _mm256_set1_ps((float)(1.0 / hsum_pd(_mm256_add_pd(s0, s1))));
  for (i = 0; i + 8 <= n; i += 8)
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
