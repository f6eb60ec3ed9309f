/* simd_avx2.h - AVX2/FMA building blocks shared by the files compiled with
 * -mavx2 -mfma (vec_avx2.c, attention_avx2.c): masks, exp, row reductions.
 * exp(x) = 2^n * (1 + r + r^2 P(r)), |r| <= ln2/2, coefficients fitted by
 * tools/fixtures/gen_kernel_fixtures.py --fit-poly; about 2 ulp. */
#ifndef WEFT_KERNELS_CPU_SIMD_AVX2_H
#define WEFT_KERNELS_CPU_SIMD_AVX2_H

#include <immintrin.h>
#include <math.h>
#include <stdint.h>

static const int32_t weft__mask_tab[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                           0,  0,  0,  0,  0,  0,  0,  0};

static inline __m256i weft__tail_mask(int64_t r) {
  return _mm256_loadu_si256((const __m256i *)(weft__mask_tab + 8 - r));
}

static inline __m256 weft__v_exp(__m256 x) {
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

static inline double weft__hsum_pd(__m256d v) {
  __m128d s =
      _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

/* max over x[0..n) (-Inf for n == 0) */
static inline float weft__avx2_max_row(const float *x, int64_t n) {
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  __m256 mx = ninf;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    mx = _mm256_max_ps(mx, _mm256_loadu_ps(x + i));
  if (i < n) {
    __m256i m = weft__tail_mask(n - i);
    __m256 v = _mm256_blendv_ps(ninf, _mm256_maskload_ps(x + i, m),
                                _mm256_castsi256_ps(m));
    mx = _mm256_max_ps(mx, v);
  }
  __m128 h =
      _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
  return _mm_cvtss_f32(h);
}

/* y = exp(x - max) over n elements (y may equal x); returns the sum,
 * accumulated in double. */
static inline double weft__avx2_exp_row(const float *x, float *y, int64_t n,
                                        float max) {
  __m256 mv = _mm256_set1_ps(max);
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
  int64_t i = 0;
  /* Plain loads and stores in the body: masked stores are microcoded and
   * slow on some cores (AMD Zen 2). */
  for (; i + 8 <= n; i += 8) {
    __m256 e = weft__v_exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv));
    _mm256_storeu_ps(y + i, e);
    s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
    s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
  }
  if (i < n) {
    __m256i m = weft__tail_mask(n - i);
    __m256 e = weft__v_exp(_mm256_sub_ps(_mm256_maskload_ps(x + i, m), mv));
    e = _mm256_and_ps(e, _mm256_castsi256_ps(m));
    _mm256_maskstore_ps(y + i, m, e);
    s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
    s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
  }
  return weft__hsum_pd(_mm256_add_pd(s0, s1));
}

#endif
