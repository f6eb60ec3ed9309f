/* vec_portable.c - the plain-C vector routines: the fallback on CPUs without
 * AVX2, and the reference-quality path tests compare the AVX2 one with
 * (libm's expf/erff/tanhf, double accumulators). */
#include <math.h>
#include <string.h>

#include "internal.h"

static float act1(weft_act act, float x) {
  switch (act) {
  case WEFT_ACT_SILU: return x / (1.0f + expf(-x));
  case WEFT_ACT_GELU_ERF: return 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2));
  case WEFT_ACT_GELU_TANH: {
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
  }
  case WEFT_ACT_QUICK_GELU: return x / (1.0f + expf(-1.702f * x));
  default: return x;
  }
}

static void p_act(weft_act act, const float *x, float *y, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    y[i] = act1(act, x[i]);
}

static void p_gated(weft_act act, const float *a, const float *g, float *y,
                    int64_t n) {
  for (int64_t i = 0; i < n; i++)
    y[i] = a[i] * act1(act, g[i]);
}

static void p_affine_act(const float *x, float *y, int64_t n, float scale,
                         float shift, weft_act act) {
  for (int64_t i = 0; i < n; i++)
    y[i] = act1(act, x[i] * scale + shift);
}

static void p_norm_row(const float *x, float *y, int64_t n, float mean,
                       float rstd, const float *gamma, const float *beta) {
  for (int64_t i = 0; i < n; i++) {
    float v = (x[i] - mean) * rstd;
    if (gamma) v *= gamma[i];
    if (beta) v += beta[i];
    y[i] = v;
  }
}

static double p_sum(const float *x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; i++)
    s += x[i];
  return s;
}

static double p_sqdev(const float *x, int64_t n, double mean) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = x[i] - mean;
    s += d * d;
  }
  return s;
}

static void p_softmax_row(const float *x, float *y, int64_t n) {
  float mx = -INFINITY;
  for (int64_t i = 0; i < n; i++)
    mx = x[i] > mx ? x[i] : mx;
  double s = 0;
  for (int64_t i = 0; i < n; i++) {
    y[i] = expf(x[i] - mx);
    s += y[i];
  }
  float inv = (float)(1.0 / s);
  for (int64_t i = 0; i < n; i++)
    y[i] *= inv;
}

/* ---- f16 / bf16 ---------------------------------------------------------- */

float weft__f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu, bits;
  if (e == 0x1f) {
    /* Inf, or NaN made quiet with its payload kept (as VCVTPH2PS does). */
    bits = sign | 0x7f800000u | (m << 13) | (m ? 0x400000u : 0);
  } else if (e == 0) {
    float v = (float)m * 0x1p-24f; /* exact: m < 2^10 */
    memcpy(&bits, &v, 4);
    bits |= sign;
  } else {
    bits = sign | ((e + 112) << 23) | (m << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

uint16_t weft__f32_to_f16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) /* NaN: quiet, top payload bits kept (F16C) */
    return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
  if (ax >= 0x477ff000u) /* >= 65520 rounds to Inf (and Inf itself) */
    return (uint16_t)(sign | 0x7c00u);
  if (ax >= 0x38800000u) { /* normal half: rebias, round to nearest even */
    uint32_t r = ax - 0x38000000u;
    r += 0x0fffu + ((r >> 13) & 1u);
    return (uint16_t)(sign | (r >> 13));
  }
  if (ax <= 0x33000000u) return sign; /* <= 2^-25 rounds to zero (tie) */
  /* Subnormal half: units of 2^-24; value = m * 2^(e - 150). */
  uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
  uint32_t shift = 126 - e; /* 14..24 */
  uint32_t h = m >> shift, rem = m & ((1u << shift) - 1),
           half = 1u << (shift - 1);
  if (rem > half || (rem == half && (h & 1u))) h++;
  return (uint16_t)(sign | h);
}

float weft__bf16_to_f32(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

uint16_t weft__f32_to_bf16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fc0u;
  x += 0x7fffu + ((x >> 16) & 1u);
  return (uint16_t)(x >> 16);
}

float weft_f16_to_f32(uint16_t h) {
  return weft__f16_to_f32(h);
}
uint16_t weft_f32_to_f16(float f) {
  return weft__f32_to_f16(f);
}
float weft_bf16_to_f32(uint16_t h) {
  return weft__bf16_to_f32(h);
}
uint16_t weft_f32_to_bf16(float f) {
  return weft__f32_to_bf16(f);
}

static void p_f16_to_f32(const uint16_t *x, float *y, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    y[i] = weft__f16_to_f32(x[i]);
}
static void p_f32_to_f16(const float *x, uint16_t *y, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    y[i] = weft__f32_to_f16(x[i]);
}
static void p_bf16_to_f32(const uint16_t *x, float *y, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    y[i] = weft__bf16_to_f32(x[i]);
}
static void p_f32_to_bf16(const float *x, uint16_t *y, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    y[i] = weft__f32_to_bf16(x[i]);
}

const weft__vec weft__vec_portable = {
    .name = "portable",
    .act = p_act,
    .gated = p_gated,
    .affine_act = p_affine_act,
    .norm_row = p_norm_row,
    .sum = p_sum,
    .sqdev = p_sqdev,
    .softmax_row = p_softmax_row,
    .f16_to_f32 = p_f16_to_f32,
    .f32_to_f16 = p_f32_to_f16,
    .bf16_to_f32 = p_bf16_to_f32,
    .f32_to_bf16 = p_f32_to_bf16,
};
