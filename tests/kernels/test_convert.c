/* test_convert.c - f16/bf16 <-> f32 conversion: every f16 and bf16 value,
 * a large random set of f32 bit patterns and the rounding edge cases, in
 * the portable and (where the CPU has it) the F16C/AVX2 path, checked
 * against independent references: an f16 rounding done in double with
 * nearbyint (round-to-nearest-even), cross-checked with the compiler's
 * _Float16 where it has one (GCC: libgcc's soft-float; clang 14 on x86 has
 * none), and a bf16 rounding done by comparing distances in double. */
#include "kref.h"

static uint32_t bits_of(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

static float float_of(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* f16 value from its fields, without any conversion code */
static double f16_value(uint16_t h) {
  int e = (h >> 10) & 31, m = h & 1023;
  double v = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
  return (h & 0x8000) ? -v : v;
}

/* f32 -> f16 bits, round to nearest even, in double arithmetic (exact for
 * every float); a NaN gives the quiet NaN of its sign */
static uint16_t ref_f16(float f) {
  uint16_t sign = (uint16_t)(bits_of(f) >> 16 & 0x8000);
  double a = fabs((double)f);
  if (isnan(f)) return sign | 0x7e00;
  if (a >= 65520.0) return sign | 0x7c00; /* half way past 65504 ties up */
  if (a < 0x1p-14) /* subnormal: units of 2^-24; 1024 is the least normal */
    return sign | (uint16_t)nearbyint(a * 0x1p24);
  int e;
  double q = nearbyint(frexp(a, &e) * 2048.0); /* 1024..2048 */
  if (q == 2048.0) q = 1024.0, e++;
  return sign | (uint16_t)((e - 1 + 15) << 10) | (uint16_t)(q - 1024.0);
}

/* Runs conversion on n elements through the context's ISA. */
static void conv(weft_cpu_ctx *ctx, void *dst, weft_dtype dt, const void *src,
                 weft_dtype st, int64_t n) {
  ASSERT_OK(weft_cpu_convert(ctx, dst, dt, src, st, n));
}

TEST(f16_every_value_converts_exactly_and_round_trips) {
  weft_cpu_isa isas[2];
  int n_isa = kr_isas(isas);
  uint16_t *h = malloc(65536 * 2), *back = malloc(65536 * 2);
  float *f[2];
  for (int i = 0; i < 65536; i++)
    h[i] = (uint16_t)i;
  for (int ii = 0; ii < n_isa; ii++) {
    weft_cpu_ctx *ctx = kr_ctx(isas[ii], 2);
    f[ii] = malloc(65536 * 4);
    conv(ctx, f[ii], WEFT_F32, h, WEFT_F16, 65536);
    conv(ctx, back, WEFT_F16, f[ii], WEFT_F32, 65536);
    for (int i = 0; i < 65536; i++) {
      int nan = ((i >> 10) & 31) == 31 && (i & 1023);
      if (nan) {
        /* NaN stays NaN: quiet, sign and payload kept */
        ASSERT(isnan(f[ii][i]));
        ASSERT_EQ(bits_of(f[ii][i]), ((uint32_t)(i & 0x8000) << 16) |
                                         0x7fc00000u |
                                         ((uint32_t)(i & 0x3ff) << 13));
        ASSERT_EQ(back[i], i | 0x200);
      } else {
        if (((i >> 10) & 31) == 31)
          ASSERT(isinf(f[ii][i]) && (f[ii][i] < 0) == !!(i & 0x8000));
        else
          ASSERT((double)f[ii][i] == f16_value((uint16_t)i));
        ASSERT_EQ(back[i], i);
        ASSERT_EQ(signbit(f[ii][i]) != 0, (i & 0x8000) != 0);
      }
      ASSERT_EQ(bits_of(f[ii][i]), bits_of(weft_f16_to_f32((uint16_t)i)));
    }
    weft_cpu_ctx_free(ctx);
  }
  if (n_isa == 2) ASSERT(memcmp(f[0], f[1], 65536 * 4) == 0);
  for (int ii = 0; ii < n_isa; ii++)
    free(f[ii]);
  free(h), free(back);
}

/* Edge cases of f32 -> f16 rounding, then 2^20 random bit patterns
 * (every exponent, NaNs and Infs included). */
static float *f32_cases(int64_t *n_out) {
  static const float edges[] = {
      65504.0f,    65519.99f,       65520.0f,     65536.0f,     1e10f,
      -65520.0f,   0x1p-14f,        0x1.ff8p-15f, 0x1.ffcp-15f, 0x1p-24f,
      0x1p-25f,    0x1.000002p-25f, 0x1.8p-25f,   0x1.8p-24f,   0x1.4p-24f,
      0x1.2p-23f,  0x1.002p0f,      0x1.006p0f,   0x1.001p0f,   0x1.003p0f,
      0x1.0030p0f, 1e-30f,          -0.0f,        0.0f,         0x1p-149f,
      INFINITY,    -INFINITY,       1.0f,         3.14159265f,  0x1.fffffep127f,
      0x1.0101p0f, 0x1.0180p0f,     0x1.0080p0f};
  int64_t ne = sizeof edges / sizeof *edges, n = ne + (1 << 20) + 4;
  float *x = malloc((size_t)n * 4);
  memcpy(x, edges, sizeof edges);
  uint64_t s = 99;
  for (int64_t i = ne; i < n - 4; i++)
    x[i] = float_of((uint32_t)kr_next(&s));
  x[n - 4] = float_of(0x7f800001u); /* signalling NaN */
  x[n - 3] = float_of(0xffc00000u);
  x[n - 2] = float_of(0x7fbfffffu);
  x[n - 1] = NAN;
  *n_out = n;
  return x;
}

TEST(f32_to_f16_rounds_to_nearest_even_in_every_path) {
  weft_cpu_isa isas[2];
  int n_isa = kr_isas(isas);
  int64_t n;
  float *x = f32_cases(&n);
  uint16_t *out[2];
  for (int ii = 0; ii < n_isa; ii++) {
    weft_cpu_ctx *ctx = kr_ctx(isas[ii], 2);
    out[ii] = malloc((size_t)n * 2);
    conv(ctx, out[ii], WEFT_F16, x, WEFT_F32, n);
    for (int64_t i = 0; i < n; i++) {
      uint16_t rb = ref_f16(x[i]);
#ifdef __FLT16_MAX__
      if (!isnan(x[i])) {
        _Float16 r = (_Float16)x[i]; /* libgcc's __truncsfhf2, RNE */
        uint16_t cb;
        memcpy(&cb, &r, 2);
        ASSERT_EQ(cb, rb);
      }
#endif
      if (isnan(x[i])) {
        ASSERT_EQ(out[ii][i] & 0x7c00, 0x7c00);
        ASSERT_EQ(out[ii][i] & 0x0200, 0x0200); /* quiet */
        ASSERT_EQ(out[ii][i] & 0x8000, bits_of(x[i]) >> 16 & 0x8000);
      } else if (out[ii][i] != rb) {
        fprintf(stderr, "%s: %a (0x%08x) -> 0x%04x, want 0x%04x\n",
                weft_cpu_isa_name(ctx), x[i], bits_of(x[i]), out[ii][i], rb);
        abort();
      }
      ASSERT_EQ(out[ii][i], weft_f32_to_f16(x[i]));
    }
    weft_cpu_ctx_free(ctx);
  }
  if (n_isa == 2) ASSERT(memcmp(out[0], out[1], (size_t)n * 2) == 0);
  for (int ii = 0; ii < n_isa; ii++)
    free(out[ii]);
  free(x);
}

/* bf16 reference: the nearer of the two neighbours, ties to even. */
static uint16_t ref_bf16(float f) {
  uint32_t u = bits_of(f);
  if (isnan(f)) return 0x7fc0;
  uint32_t lo = u & 0xffff0000u;
  if (lo == u) return (uint16_t)(u >> 16);
  double dl = fabs((double)f - (double)float_of(lo));
  uint32_t hi = lo + 0x10000u; /* next magnitude up (Inf past the max) */
  double fh = (hi & 0x7fffffffu) >= 0x7f800000u
                  ? ldexp(copysign(1.0, f), 128) /* the bf16 "next" past max */
                  : (double)float_of(hi);
  double dh = fabs(fh - (double)f);
  if (dl < dh) return (uint16_t)(lo >> 16);
  if (dh < dl) return (uint16_t)(hi >> 16);
  return (uint16_t)(((lo >> 16) & 1) ? hi >> 16 : lo >> 16);
}

TEST(bf16_every_value_round_trips_and_f32_rounds_to_nearest_even) {
  weft_cpu_isa isas[2];
  int n_isa = kr_isas(isas);
  uint16_t *h = malloc(65536 * 2), *back = malloc(65536 * 2);
  float *f = malloc(65536 * 4);
  for (int i = 0; i < 65536; i++)
    h[i] = (uint16_t)i;
  int64_t n;
  float *x = f32_cases(&n);
  uint16_t *out[2];
  for (int ii = 0; ii < n_isa; ii++) {
    weft_cpu_ctx *ctx = kr_ctx(isas[ii], 2);
    conv(ctx, f, WEFT_F32, h, WEFT_BF16, 65536);
    conv(ctx, back, WEFT_BF16, f, WEFT_F32, 65536);
    for (int i = 0; i < 65536; i++) {
      ASSERT_EQ(bits_of(f[i]), (uint32_t)i << 16);
      ASSERT_EQ(back[i], isnan(f[i]) ? 0x7fc0 : i);
    }
    out[ii] = malloc((size_t)n * 2);
    conv(ctx, out[ii], WEFT_BF16, x, WEFT_F32, n);
    for (int64_t i = 0; i < n; i++) {
      if (out[ii][i] != ref_bf16(x[i])) {
        fprintf(stderr, "%s: %a -> 0x%04x, want 0x%04x\n",
                weft_cpu_isa_name(ctx), x[i], out[ii][i], ref_bf16(x[i]));
        abort();
      }
      ASSERT_EQ(out[ii][i], weft_f32_to_bf16(x[i]));
    }
    weft_cpu_ctx_free(ctx);
  }
  if (n_isa == 2) ASSERT(memcmp(out[0], out[1], (size_t)n * 2) == 0);
  for (int ii = 0; ii < n_isa; ii++)
    free(out[ii]);
  free(x), free(h), free(back), free(f);
}

TEST(convert_between_half_types_and_same_type_copies) {
  weft_cpu_ctx *ctx = weft_cpu_ctx_new(1);
  /* f16 <-> bf16 goes through f32 with a single rounding */
  uint16_t h[3] = {0x3c05, 0x7c00, 0xfe00}, b[3], h2[3];
  conv(ctx, b, WEFT_BF16, h, WEFT_F16, 3);
  ASSERT_EQ(b[0], weft_f32_to_bf16(weft_f16_to_f32(0x3c05)));
  ASSERT_EQ(b[1], 0x7f80);
  ASSERT_EQ(b[2], 0x7fc0);
  conv(ctx, h2, WEFT_F16, b, WEFT_BF16, 3);
  ASSERT_EQ(h2[1], 0x7c00);
  conv(ctx, h2, WEFT_F16, h, WEFT_F16, 3);
  ASSERT(memcmp(h, h2, sizeof h) == 0);
  int32_t i32[2];
  ASSERT_EQ(weft_cpu_convert(ctx, i32, WEFT_I32, h, WEFT_F16, 1),
            WEFT_EUNSUPPORTED);
  weft_cpu_ctx_free(ctx);
}

/* weft_cpu_convert_serial (the loaders' converter, no context): every
 * kind gives weft_cpu_convert's bits, at aligned addresses and at odd
 * ones (a tensor in a mapped file may start at any byte), across more
 * than one of its aligned blocks. */
TEST(serial_convert_equals_the_context_one_at_any_alignment) {
  const int64_t n = 5000; /* > the 2048-element blocks of misaligned data */
  weft_cpu_ctx *ctx = weft_cpu_ctx_new(2);
  uint64_t s = 99;
  unsigned char *src = malloc((size_t)n * 4 + 8);
  unsigned char *want = malloc((size_t)n * 4 + 8);
  unsigned char *got = malloc((size_t)n * 4 + 8);
  for (int64_t i = 0; i < n * 4 + 8; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    src[i] = (unsigned char)(s >> 56);
  }
  static const weft_dtype kinds[][2] = {
      {WEFT_F16, WEFT_F32},  {WEFT_F32, WEFT_F16},  {WEFT_BF16, WEFT_F32},
      {WEFT_F32, WEFT_BF16}, {WEFT_F16, WEFT_BF16}, {WEFT_BF16, WEFT_F16},
      {WEFT_F32, WEFT_F32}};
  for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
    weft_dtype st = kinds[k][0], dt = kinds[k][1];
    size_t ds = weft_dtype_size(dt);
    /* the reference from aligned memory (NaN payloads included) */
    memcpy(want + 8, src + 8, (size_t)n * 4);
    conv(ctx, want, dt, src + 8, st, n);
    for (int so = 0; so < 4; so++)
      for (int dof = 0; dof < 4; dof += 3) {
        unsigned char *in = so == 0 ? src + 8 : malloc((size_t)n * 4 + 8);
        if (so) memcpy(in + so, src + 8, (size_t)n * 4);
        memset(got, 0xAB, (size_t)n * 4 + 8);
        ASSERT_OK(weft_cpu_convert_serial(got + dof, dt, so ? in + so : in, st,
                                          n));
        ASSERT(memcmp(got + dof, want, (size_t)n * ds) == 0);
        ASSERT_EQ(got[dof + n * (int64_t)ds], 0xAB); /* nothing past the end */
        if (so) free(in);
      }
  }
  int32_t i32[2];
  uint16_t h[2] = {0, 0};
  ASSERT_EQ(weft_cpu_convert_serial(i32, WEFT_I32, h, WEFT_F16, 1),
            WEFT_EUNSUPPORTED);
  ASSERT_EQ(weft_cpu_convert_serial(NULL, WEFT_F32, h, WEFT_F16, 1),
            WEFT_EINVAL);
  free(src), free(want), free(got);
  weft_cpu_ctx_free(ctx);
}
