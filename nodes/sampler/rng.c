/* rng.c - torch's CPU generator (MT19937) and torch.randn's float path.
 * Follows ATen's MT19937RNGEngine, uniform_real_distribution,
 * normal_distribution and DistributionKernels' normal_fill_AVX2, whose log
 * and sincos come from avx_mathfun (Cephes polynomials); the scalar code
 * below performs the same float operations in the same order, fused where
 * the compiler fused them, so the noise is bit-identical, not merely close. */
#include "rng.h"

#include <math.h>
#include <string.h>

void weft_torch_gen_seed(weft_torch_gen *g, uint64_t seed) {
  memset(g, 0, sizeof *g);
  g->mt[0] = (uint32_t)(seed & 0xffffffffu);
  for (int j = 1; j < 624; j++)
    g->mt[j] = 1812433253u * (g->mt[j - 1] ^ (g->mt[j - 1] >> 30)) + (uint32_t)j;
  g->left = 1;
  g->next = 0;
}

static void next_state(weft_torch_gen *g) {
  uint32_t *p = g->mt;
  g->left = 624;
  g->next = 0;
#define MIXBITS(u, v) (((u)&0x80000000u) | ((v)&0x7fffffffu))
#define TWIST(u, v) ((MIXBITS(u, v) >> 1) ^ ((v)&1u ? 0x9908b0dfu : 0u))
  int j;
  for (j = 0; j < 624 - 397; j++) p[j] = p[j + 397] ^ TWIST(p[j], p[j + 1]);
  for (; j < 623; j++) p[j] = p[j + 397 - 624] ^ TWIST(p[j], p[j + 1]);
  p[623] = p[396] ^ TWIST(p[623], p[0]);
#undef MIXBITS
#undef TWIST
}

uint32_t weft_torch_gen_u32(weft_torch_gen *g) {
  if (--g->left == 0) next_state(g);
  uint32_t y = g->mt[g->next++];
  y ^= y >> 11;
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  y ^= y >> 18;
  return y;
}

/* uniform_real_distribution<float>(0, 1): 24 random bits */
static float uniform_f32(weft_torch_gen *g) {
  return (float)((double)(weft_torch_gen_u32(g) & 0xffffffu) *
                 (1.0 / 16777216.0));
}

/* uniform_real_distribution<double>(0, 1): 53 bits of random64() */
static double uniform_f64(weft_torch_gen *g) {
  uint64_t hi = weft_torch_gen_u32(g), lo = weft_torch_gen_u32(g);
  uint64_t x = (hi << 32) | lo;
  return (double)(x & ((1ull << 53) - 1)) * (1.0 / 9007199254740992.0);
}

/* normal_distribution<double>: Box-Muller, the sine half cached */
static double normal_f64(weft_torch_gen *g) {
  if (g->has_next_normal) {
    g->has_next_normal = false;
    return g->next_normal;
  }
  double u1 = uniform_f64(g), u2 = uniform_f64(g);
  double r = sqrt(-2.0 * log1p(-u2));
  double theta = 2.0 * M_PI * u1;
  g->has_next_normal = true;
  g->next_normal = r * sin(theta);
  return r * cos(theta);
}

/* ---- avx_mathfun, one lane --------------------------------------------- */

static float bits_f(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static uint32_t f_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

/* torch's AVX2 kernels are compiled with FMA contraction: every multiply
 * feeding a single add became one fused multiply-add.  fmaf reproduces that
 * rounding exactly (a hardware FMA where the CPU has one). */
#define MADD(a, b, c) fmaf(a, b, c)

static float mf_log(float x) {
  bool invalid = x <= 0.0f;
  const float min_norm = bits_f(0x00800000u);
  if (x < min_norm) x = min_norm; /* _mm256_max_ps(x, min_norm_pos) */
  int32_t imm0 = (int32_t)(f_bits(x) >> 23);
  x = bits_f((f_bits(x) & ~0x7f800000u) | f_bits(0.5f));
  imm0 -= 0x7f;
  float e = (float)imm0;
  e = e + 1.0f;
  bool mask = x < 0.707106781186547524f;
  float tmp = mask ? x : 0.0f;
  x = x - 1.0f;
  e = e - (mask ? 1.0f : 0.0f);
  x = x + tmp;
  float z = x * x;
  float y = 7.0376836292E-2f;
  y = MADD(y, x, -1.1514610310E-1f);
  y = MADD(y, x, 1.1676998740E-1f);
  y = MADD(y, x, -1.2420140846E-1f);
  y = MADD(y, x, 1.4249322787E-1f);
  y = MADD(y, x, -1.6668057665E-1f);
  y = MADD(y, x, 2.0000714765E-1f);
  y = MADD(y, x, -2.4999993993E-1f);
  y = MADD(y, x, 3.3333331174E-1f);
  y = y * x;
  y = MADD(y, z, e * -2.12194440e-4f);
  y = MADD(-z, 0.5f, y);
  x = x + y;
  x = MADD(e, 0.693359375f, x);
  return invalid ? bits_f(f_bits(x) | 0xffffffffu) : x;
}

static void mf_sincos(float x, float *s, float *c) {
  uint32_t sign_sin = f_bits(x) & 0x80000000u;
  x = bits_f(f_bits(x) & 0x7fffffffu);
  float y = x * 1.27323954473516f;
  int32_t j = (int32_t)y; /* truncation, as cvttps */
  j = (j + 1) & ~1;
  y = (float)j;
  uint32_t swap_sin = ((uint32_t)(j & 4)) << 29;
  bool poly2 = (j & 2) == 0;
  x = MADD(y, -0.78515625f, x);
  x = MADD(y, -2.4187564849853515625e-4f, x);
  x = MADD(y, -3.77489497744594108e-8f, x);
  uint32_t sign_cos = ((uint32_t)(~(j - 2) & 4)) << 29;
  sign_sin ^= swap_sin;
  float z = x * x;
  float y1 = 2.443315711809948E-005f;
  y1 = MADD(y1, z, -1.388731625493765E-003f);
  y1 = MADD(y1, z, 4.166664568298827E-002f);
  y1 = y1 * z;
  y1 = MADD(y1, z, -(z * 0.5f));
  y1 = y1 + 1.0f;
  float y2 = -1.9515295891E-4f;
  y2 = MADD(y2, z, 8.3321608736E-3f);
  y2 = MADD(y2, z, -1.6666654611E-1f);
  y2 = y2 * z;
  y2 = MADD(y2, x, x);
  float vs = poly2 ? y2 : y1, vc = poly2 ? y1 : y2;
  *s = bits_f(f_bits(vs) ^ sign_sin);
  *c = bits_f(f_bits(vc) ^ sign_cos);
}

static void normal_fill_16(float *d) {
  const float two_pi = (float)(2.0 * M_PI);
  for (int j = 0; j < 8; j++) {
    float u1 = 1.0f - d[j];
    float u2 = d[j + 8];
    float radius = sqrtf(-2.0f * mf_log(u1));
    float theta = two_pi * u2;
    float s, c;
    mf_sincos(theta, &s, &c);
    d[j] = radius * c;
    d[j + 8] = radius * s;
  }
}

void weft_torch_randn(weft_torch_gen *g, float *out, int64_t n) {
  if (n < 16) {
    for (int64_t i = 0; i < n; i++) out[i] = (float)normal_f64(g);
    return;
  }
  for (int64_t i = 0; i < n; i++) out[i] = uniform_f32(g);
  for (int64_t i = 0; i + 16 <= n; i += 16) normal_fill_16(out + i);
  if (n % 16) {
    /* torch recomputes the last 16 values from fresh uniforms */
    float *d = out + n - 16;
    for (int i = 0; i < 16; i++) d[i] = uniform_f32(g);
    normal_fill_16(d);
  }
}
