/* test_cuda.c - the CUDA backend (kernels/cuda) against the CPU backend:
 * every op of the weft_backend vtable on random inputs, at SD1.5 shapes
 * and at odd ones (sizes that are no multiple of any tile), through the
 * same vtable calls on both backends.  Without a CUDA device every case
 * but new_reports_missing_device skips.
 *
 * Tolerances (|gpu - cpu| per element, M = max |cpu| over the tensor):
 *   pointwise, norms, softmax:      1e-5 |cpu| + 1e-6 M
 *   GEMM, linear, conv, attention:  1e-4 M   (sums of hundreds to
 *                                   thousands of products, summed in
 *                                   another order; no TF32)
 *   dtype conversion, copies, layout ops: bit-exact
 * In FP16 / BF16 precision (the fp16_* and bf16_* cases) the products
 * round their operands to 16 bits and accumulate in fp32:
 *   GEMM, linear, conv vs the CPU on the fp32 inputs: 1e-3 M (fp16),
 *     8e-3 M (bf16); a numpy model of the rounding (inputs uniform in
 *     [-1, 1], K = 29 .. 2880) gives 2.5-3.0e-4 M and 1.9-2.3e-3 M
 *   the same vs the CPU on inputs rounded to 16 bits on the host:
 *     1e-4 M (a product of two 16-bit values is exact in fp32, so only the
 *     summation order differs: this checks layouts and conversions tightly);
 *     a convolution on cuDNN in 16 bits ("cudnn16") rounds its output to
 *     16 bits before the bias, which adds 2^-11 (fp16) or 2^-8 (bf16) of
 *     |the output before the bias| per element (conv_rounded_check)
 *   attention (q, k, v and the probabilities rounded): 2.5e-3 M (fp16),
 *     1.6e-2 M (bf16); the model gives up to 8e-4 M and 5e-3 M
 * Each comparison prints its measured error (max abs and max abs / M) so
 * the log of tools/gpu/run_cuda_tests.sh records them. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/backend.h"
#include "kernels/cuda/cuda.h"
#include "test.h"

#define TOL_ELEM_REL 1e-5
#define TOL_ELEM_MAX 1e-6
#define TOL_SUM_MAX 1e-4

/* ---- helpers --------------------------------------------------------------
 */

#define TOL16_SUM_F16 1e-3
#define TOL16_SUM_BF16 8e-3
#define TOL16_ATTN_F16 2.5e-3
#define TOL16_ATTN_BF16 1.6e-2

typedef struct pair {
  weft_backend *cpu, *gpu;
  weft_cuda_precision prec;
  weft_dtype dt;   /* the 16-bit type of prec, WEFT_F32 for FP32 */
  double tol_sum;  /* GEMM, linear, conv vs the CPU (x M) */
  double tol_attn; /* attention vs the CPU (x M) */
  bool fused;      /* 16-bit attention may take the fused kernel */
  bool lt;         /* 16-bit: the test's ops include a cuBLASLt product */
} pair;

static pair setup_prec(weft_cuda_precision prec) {
  if (!weft_cuda_available()) weft_test_skip("no CUDA device");
  pair p;
  p.gpu = weft_backend_cuda_new(0);
  ASSERT(p.gpu);
  ASSERT_OK(weft_cuda_set_precision(p.gpu, prec));
  ASSERT_EQ(weft_cuda_get_precision(p.gpu), prec);
  p.prec = prec;
  p.dt = prec == WEFT_CUDA_FP16   ? WEFT_F16
         : prec == WEFT_CUDA_BF16 ? WEFT_BF16
                                  : WEFT_F32;
  p.tol_sum = prec == WEFT_CUDA_FP16   ? TOL16_SUM_F16
              : prec == WEFT_CUDA_BF16 ? TOL16_SUM_BF16
                                       : TOL_SUM_MAX;
  p.tol_attn = prec == WEFT_CUDA_FP16   ? TOL16_ATTN_F16
               : prec == WEFT_CUDA_BF16 ? TOL16_ATTN_BF16
                                        : TOL_SUM_MAX;
  p.fused = true;
  p.lt = p.dt != WEFT_F32;
  printf("precision: %s\n", weft_cuda_precision_name(prec));
  p.cpu = weft_backend_cpu_new(0);
  ASSERT(p.cpu);
  return p;
}

/* The fp32 cases: fp16/bf16 have their own cases and tolerances. */
static pair setup(void) {
  return setup_prec(WEFT_CUDA_FP32);
}

/* A host copy of x rounded to dt (F16/BF16) and back, through the CPU
 * backend's conversions (round to nearest even); a plain copy for F32.
 * (transfer full: free) */
static float *rounded(pair *p, const float *x, int64_t n, weft_dtype dt) {
  float *r = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
  ASSERT(r);
  if (dt == WEFT_F32) {
    memcpy(r, x, (size_t)n * sizeof(float));
    return r;
  }
  uint16_t *h = malloc((size_t)(n > 0 ? n : 1) * 2);
  ASSERT(h);
  ASSERT_OK(p->cpu->iface->convert(p->cpu, h, dt, x, WEFT_F32, n));
  ASSERT_OK(p->cpu->iface->convert(p->cpu, r, WEFT_F32, h, dt, n));
  free(h);
  return r;
}

static void teardown(pair *p) {
  ASSERT_OK(p->gpu->iface->synchronize(p->gpu));
  uint64_t lt = 0, fb = 0;
  ASSERT_OK(weft_cuda_gemm16_counts(p->gpu, &lt, &fb));
  if (lt || fb)
    printf("cuBLASLt products: %llu, GemmEx fallbacks: %llu\n",
           (unsigned long long)lt, (unsigned long long)fb);
  if (p->lt) ASSERT(lt > 0); /* the 16-bit GEMM path did run */
  weft_backend_free(p->gpu);
  weft_backend_free(p->cpu);
}

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static float *rnd(uint64_t *s, int64_t n, float lo, float hi) {
  float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
  ASSERT(p);
  for (int64_t i = 0; i < n; i++)
    p[i] = lo + (hi - lo) * (float)((rng_next(s) >> 40) * 0x1p-24);
  return p;
}

static float *hnan(int64_t n) { /* host buffer full of NaN */
  float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
  ASSERT(p);
  for (int64_t i = 0; i < n; i++)
    p[i] = NAN;
  return p;
}

/* A device copy of host data (n floats). */
static float *up(pair *p, const float *h, int64_t n) {
  float *d = p->gpu->iface->buffer_alloc(p->gpu, (size_t)n * sizeof(float));
  ASSERT(d);
  ASSERT_OK(p->gpu->iface->buffer_copy(p->gpu, d, h, (size_t)n * sizeof(float),
                                       WEFT_COPY_HOST_TO_DEVICE));
  return d;
}

/* A device buffer poisoned with NaN, so an element a kernel forgets to
 * write fails the comparison. */
static float *dpoison(pair *p, int64_t n) {
  float *h = hnan(n);
  float *d = up(p, h, n);
  free(h);
  return d;
}

/* The device buffer's contents (malloc'd; caller frees). */
static float *down(pair *p, const float *d, int64_t n) {
  float *h = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
  ASSERT(h);
  ASSERT_OK(p->gpu->iface->buffer_copy(p->gpu, h, d, (size_t)n * sizeof(float),
                                       WEFT_COPY_DEVICE_TO_HOST));
  return h;
}

static void dfree(pair *p, void *d) {
  p->gpu->iface->buffer_free(p->gpu, d);
}

/* Asserts |g - c| <= rel |mag| + mrel * max|c| element by element, NaN
 * only where the CPU has NaN; prints the measured error.  mag: the
 * magnitude the relative part scales with, element by element (c itself
 * for compare). */
static void compare_mag(const char *what, const float *g, const float *c,
                        const float *mag, int64_t n, double rel, double mrel) {
  double mx = 0, worst = 0, worst_ratio = 0;
  int64_t wi = -1;
  for (int64_t i = 0; i < n; i++)
    if (isfinite(c[i]) && fabs(c[i]) > mx) mx = fabs(c[i]);
  for (int64_t i = 0; i < n; i++) {
    if (isnan(c[i]) || isnan(g[i])) {
      if (isnan(c[i]) != isnan(g[i])) {
        fprintf(stderr, "%s[%lld]: gpu %.9g, cpu %.9g\n", what, (long long)i,
                g[i], c[i]);
        ASSERT(!"NaN mismatch");
      }
      continue;
    }
    double e = fabs((double)g[i] - (double)c[i]);
    double tol = rel * fabs(mag[i]) + mrel * mx;
    if (e > worst) worst = e;
    double ratio = tol > 0 ? e / tol : (e > 0 ? INFINITY : 0);
    if (ratio > worst_ratio) {
      worst_ratio = ratio;
      wi = i;
    }
  }
  printf("%-44s n=%-9lld max|cpu|=%-10.4g max err=%-10.3g err/max=%.3g\n", what,
         (long long)n, mx, worst, mx > 0 ? worst / mx : worst);
  fflush(stdout); /* an abort below must not lose the line */
  if (worst_ratio > 1) {
    fprintf(stderr, "%s: element %lld gpu %.9g cpu %.9g (tol %.3g)\n", what,
            (long long)wi, g[wi], c[wi], rel * fabs(mag[wi]) + mrel * mx);
    ASSERT(!"GPU result outside tolerance");
  }
}

static void compare(const char *what, const float *g, const float *c, int64_t n,
                    double rel, double mrel) {
  compare_mag(what, g, c, c, n, rel, mrel);
}

static void compare_exact(const char *what, const void *g, const void *c,
                          size_t bytes) {
  const unsigned char *a = g, *b = c;
  for (size_t i = 0; i < bytes; i++)
    if (a[i] != b[i]) {
      fprintf(stderr, "%s: first differing byte %zu\n", what, i);
      ASSERT(!"GPU result not bit-exact");
    }
  printf("%-44s bytes=%zu bit-exact\n", what, bytes);
  fflush(stdout);
}

/* Downloads the GPU output d and compares it with the CPU output c. */
static void check(pair *p, const char *what, const float *d, const float *c,
                  int64_t n, double rel, double mrel) {
  float *g = down(p, d, n);
  compare(what, g, c, n, rel, mrel);
  free(g);
}

static void check_exact(pair *p, const char *what, const float *d,
                        const float *c, int64_t n) {
  float *g = down(p, d, n);
  compare_exact(what, g, c, (size_t)n * sizeof(float));
  free(g);
}

/* ---- construction, buffers, allocator ------------------------------------ */

TEST(new_reports_missing_device) {
  /* Runs without a GPU too: the constructor must fail with a message. */
  weft_cuda_options o;
  weft_cuda_options_init(&o);
  o.device = 999;
  char err[256] = "unset";
  weft_backend *be = weft_backend_cuda_new_ex(&o, err, sizeof err);
  ASSERT(be == NULL);
  ASSERT_CONTAINS(err, "CUDA device 999");
  printf("message: %s\n", err);
  ASSERT(!weft_backend_is_cuda(NULL));
  ASSERT_EQ(weft_cuda_malloc_count(NULL), 0);
}

TEST(backend_identity) {
  pair p = setup();
  ASSERT_STR_EQ(p.gpu->iface->name, "cuda");
  ASSERT_EQ(p.gpu->iface->device_kind, WEFT_DEVICE_KIND_CUDA);
  ASSERT_EQ(p.gpu->iface->struct_size, sizeof(weft_backend_iface));
  ASSERT(weft_backend_is_cuda(p.gpu));
  ASSERT(!weft_backend_is_cuda(p.cpu));
  ASSERT(weft_cuda_stream(p.gpu) != NULL);
  ASSERT(strlen(weft_cuda_device_name(p.gpu)) > 0);
  printf("device: %s, cuDNN: %s\n", weft_cuda_device_name(p.gpu),
         weft_cuda_have_cudnn(p.gpu) ? "yes" : "no");
  ASSERT_OK(p.gpu->iface->synchronize(p.gpu));
  ASSERT_OK(weft_cuda_set_tf32(p.gpu, true));
  ASSERT_OK(weft_cuda_set_tf32(p.gpu, false));
  ASSERT_EQ(weft_cuda_set_conv_algo(p.cpu, WEFT_CUDA_CONV_AUTO), WEFT_EINVAL);
  teardown(&p);
}

TEST(buffers_copy_round_trip) {
  pair p = setup();
  uint64_t s = 1;
  const int64_t n = 1000003;
  float *h = rnd(&s, n, -1, 1);
  float *a = up(&p, h, n);
  float *b = dpoison(&p, n);
  ASSERT_OK(p.gpu->iface->buffer_copy(p.gpu, b, a, (size_t)n * 4,
                                      WEFT_COPY_DEVICE_TO_DEVICE));
  check_exact(&p, "copy h2d d2d d2h", b, h, n);
  /* zero bytes is a no-op; NULL with bytes is refused */
  ASSERT_OK(p.gpu->iface->buffer_copy(p.gpu, NULL, NULL, 0,
                                      WEFT_COPY_DEVICE_TO_DEVICE));
  ASSERT_EQ(
      p.gpu->iface->buffer_copy(p.gpu, NULL, a, 4, WEFT_COPY_DEVICE_TO_HOST),
      WEFT_EINVAL);
  void *z = p.gpu->iface->buffer_alloc(p.gpu, 0);
  ASSERT(z != NULL);
  dfree(&p, z);
  dfree(&p, a);
  dfree(&p, b);
  free(h);
  teardown(&p);
}

TEST(allocator_reuses_freed_blocks) {
  pair p = setup();
  weft_cuda_mem_stats st;
  void *a = p.gpu->iface->buffer_alloc(p.gpu, 3 << 20);
  ASSERT(a);
  ASSERT_OK(weft_cuda_mem_stats_get(p.gpu, &st));
  ASSERT_EQ(st.n_malloc, 1);
  ASSERT(st.in_use >= (size_t)3 << 20);
  dfree(&p, a);
  void *b = p.gpu->iface->buffer_alloc(p.gpu, (3 << 20) - 100);
  ASSERT(b == a); /* the cached block, no new cudaMalloc */
  ASSERT_EQ(weft_cuda_malloc_count(p.gpu), 1);
  dfree(&p, b);
  ASSERT_OK(weft_cuda_mem_stats_get(p.gpu, &st));
  ASSERT_EQ(st.in_use, 0);
  ASSERT(st.peak_in_use >= (size_t)3 << 20);
  ASSERT_OK(weft_cuda_trim(p.gpu));
  ASSERT_OK(weft_cuda_mem_stats_get(p.gpu, &st));
  ASSERT_EQ(st.n_free, 1);
  ASSERT_EQ(st.reserved, 0);
  teardown(&p);
}

/* The steady state of a model loop: the same ops (with their internal
 * scratch: im2col columns, group-norm statistics, the in-place GEGLU
 * temporary, activations freed and re-made each step) make no cudaMalloc
 * after the first iteration. */
TEST(steady_state_makes_no_cudamalloc) {
  pair p = setup();
  ASSERT_OK(weft_cuda_set_conv_algo(p.gpu, WEFT_CUDA_CONV_IM2COL));
  uint64_t s = 2;
  const int64_t c = 64, hw = 32 * 32;
  float *hx = rnd(&s, 2 * c * hw, -1, 1), *hw3 = rnd(&s, c * c * 9, -.1f, .1f);
  float *x = up(&p, hx, 2 * c * hw), *w = up(&p, hw3, c * c * 9);
  uint64_t after_first = 0;
  for (int it = 0; it < 4; it++) {
    float *y = p.gpu->iface->buffer_alloc(p.gpu, (size_t)(2 * c * hw) * 4);
    float *t = p.gpu->iface->buffer_alloc(p.gpu, (size_t)(2 * c * hw) * 4);
    ASSERT(y && t);
    ASSERT_OK(p.gpu->iface->group_norm(p.gpu, x, t, 2, c, hw, 32, 1e-5f, NULL,
                                       NULL, WEFT_ACT_SILU));
    weft_conv2d_args a = {.batch = 2,
                          .c_in = c,
                          .h_in = 32,
                          .w_in = 32,
                          .c_out = c,
                          .k_h = 3,
                          .k_w = 3,
                          .stride_h = 1,
                          .stride_w = 1,
                          .pad_top = 1,
                          .pad_left = 1,
                          .pad_bottom = 1,
                          .pad_right = 1,
                          .x = t,
                          .weight = w,
                          .y = y};
    ASSERT_OK(p.gpu->iface->conv2d(p.gpu, &a));
    ASSERT_OK(p.gpu->iface->gated_act(p.gpu, WEFT_ACT_GELU_ERF, y, y,
                                      2 * c * hw / 64, 32));
    dfree(&p, y);
    dfree(&p, t);
    if (it == 0) after_first = weft_cuda_malloc_count(p.gpu);
  }
  ASSERT_OK(p.gpu->iface->synchronize(p.gpu));
  printf("cudaMalloc calls: %llu after the first step, %llu after four\n",
         (unsigned long long)after_first,
         (unsigned long long)weft_cuda_malloc_count(p.gpu));
  ASSERT_EQ(weft_cuda_malloc_count(p.gpu), after_first);
  dfree(&p, x);
  dfree(&p, w);
  free(hx);
  free(hw3);
  teardown(&p);
}

/* be's profile report titled `title` as a string (printed too; free it). */
static char *profile_text(weft_backend *be, const char *title) {
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  ASSERT(f);
  ASSERT_OK(weft_cuda_profile_report(be, f, title, 0, 10));
  fclose(f);
  printf("%s", text);
  return text;
}

/* weft_cuda_profile_*: while on, the vtable is the profiling one (still a
 * CUDA backend), results are unchanged, and the report counts each op and
 * shape exactly, with its product's FLOP/s; after the report the ordinary
 * vtable is back. */
TEST(profile_counts_ops_by_shape) {
  pair p = setup();
  uint64_t s = 3;
  const int64_t rows = 64, in = 96, out = 32;
  float *hx = rnd(&s, rows * in, -1, 1), *hw = rnd(&s, out * in, -1, 1);
  float *x = up(&p, hx, rows * in), *w = up(&p, hw, out * in);
  float *y = p.gpu->iface->buffer_alloc(p.gpu, (size_t)(rows * out) * 4);
  float *y2 = p.gpu->iface->buffer_alloc(p.gpu, (size_t)(rows * out) * 4);
  ASSERT(y && y2);
  const weft_backend_iface *plain = p.gpu->iface;
  ASSERT_OK(p.gpu->iface->linear(p.gpu, x, rows, in, w, NULL, out, y));
  ASSERT_OK(weft_cuda_profile_start(p.gpu));
  ASSERT(p.gpu->iface != plain);
  ASSERT(weft_backend_is_cuda(p.gpu));
  for (int i = 0; i < 3; i++)
    ASSERT_OK(p.gpu->iface->linear(p.gpu, x, rows, in, w, NULL, out, y2));
  ASSERT_OK(p.gpu->iface->act(p.gpu, WEFT_ACT_SILU, y2, y2, rows * out));
  ASSERT_OK(p.gpu->iface->act(p.gpu, WEFT_ACT_SILU, y2, y2, rows * out));
  char *text = profile_text(p.gpu, "unit");
  ASSERT(p.gpu->iface == plain);
  ASSERT_EQ(weft_cuda_profile_report(p.gpu, NULL, "again", 0, 10), WEFT_EINVAL);
  ASSERT_CONTAINS(text, "### unit\n\n5 ops, ");
  ASSERT_CONTAINS(text, "| linear 64 rows, 96 -> 32 | 3 | ");
  ASSERT_CONTAINS(text, "| act 1, 2048 | 2 | ");
  ASSERT_CONTAINS(text, "| linear | 3 | ");
  /* the profiled products gave what the plain one gave */
  float *a = down(&p, y, rows * out), *b = down(&p, y2, rows * out);
  for (int64_t i = 0; i < rows * out; i++) {
    float v = a[i] / (1.0f + expf(-a[i]));
    v = v / (1.0f + expf(-v));
    ASSERT_NEAR(b[i], v, 1e-5 * (1 + fabsf(v)));
  }
  free(text), free(a), free(b), free(hx), free(hw);
  dfree(&p, x), dfree(&p, w), dfree(&p, y), dfree(&p, y2);
  teardown(&p);
}

/* ---- GEMM and linear ------------------------------------------------------
 */

/* Runs one GEMM on both backends: A, B and C random (C read when beta !=
 * 0), sizes of the stored matrices from the arguments. */
static void gemm_case(pair *p, const char *what, weft_gemm_args g,
                      uint64_t seed) {
  uint64_t s = seed;
  int64_t batch = g.batch ? g.batch : 1;
  int64_t a_rows = g.trans_a ? g.k : g.m, b_rows = g.trans_b ? g.n : g.k;
  int64_t na = (batch - 1) * g.stride_a + a_rows * g.lda;
  int64_t nb = (batch - 1) * g.stride_b + b_rows * g.ldb;
  int64_t nc = (batch - 1) * g.stride_c + g.m * g.ldc;
  float *ha = rnd(&s, na, -1, 1), *hb = rnd(&s, nb, -1, 1);
  float *hc = g.beta != 0 ? rnd(&s, nc, -1, 1) : hnan(nc);
  float *da = up(p, ha, na), *db = up(p, hb, nb), *dc = up(p, hc, nc);
  weft_gemm_args gc = g, gg = g;
  gc.a = ha;
  gc.b = hb;
  gc.c = hc;
  gg.a = da;
  gg.b = db;
  gg.c = dc;
  /* 16-bit precision: the CPU also on A and B rounded to 16 bits */
  float *hc16 = NULL, *ha16 = NULL, *hb16 = NULL;
  if (p->dt != WEFT_F32) {
    hc16 = malloc((size_t)nc * 4);
    ASSERT(hc16);
    memcpy(hc16, hc, (size_t)nc * 4);
    ha16 = rounded(p, ha, na, p->dt);
    hb16 = rounded(p, hb, nb, p->dt);
    weft_gemm_args g16 = gc;
    g16.a = ha16;
    g16.b = hb16;
    g16.c = hc16;
    ASSERT_OK(p->cpu->iface->gemm(p->cpu, &g16));
  }
  ASSERT_OK(p->cpu->iface->gemm(p->cpu, &gc));
  ASSERT_OK(p->gpu->iface->gemm(p->gpu, &gg));
  /* padding between rows/matrices is NaN on the GPU side when beta == 0
   * and untouched by both: compare only the product's elements */
  float *got = down(p, dc, nc);
  int64_t n = batch * g.m * g.n, i = 0;
  float *gv = malloc((size_t)n * 4), *cv = malloc((size_t)n * 4),
        *cv16 = malloc((size_t)n * 4);
  ASSERT(gv && cv && cv16);
  for (int64_t bi = 0; bi < batch; bi++)
    for (int64_t r = 0; r < g.m; r++)
      for (int64_t j = 0; j < g.n; j++, i++) {
        gv[i] = got[bi * g.stride_c + r * g.ldc + j];
        cv[i] = hc[bi * g.stride_c + r * g.ldc + j];
        if (hc16) cv16[i] = hc16[bi * g.stride_c + r * g.ldc + j];
      }
  compare(what, gv, cv, n, 0, p->tol_sum);
  if (hc16) {
    char w2[128];
    snprintf(w2, sizeof w2, "%s vs rounded", what);
    compare(w2, gv, cv16, n, 0, TOL_SUM_MAX);
  }
  free(gv);
  free(cv);
  free(cv16);
  free(got);
  free(hc16);
  free(ha16);
  free(hb16);
  dfree(p, da);
  dfree(p, db);
  dfree(p, dc);
  free(ha);
  free(hb);
  free(hc);
}

static void gemm_odd_shapes_all_transposes_body(pair *p) {
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++) {
      const int64_t m = 37, n = 53, k = 29;
      weft_gemm_args g = {.m = m,
                          .n = n,
                          .k = k,
                          .trans_a = ta,
                          .trans_b = tb,
                          .alpha = 0.7f,
                          .beta = 0.3f,
                          .lda = (ta ? m : k) + 3,
                          .ldb = (tb ? k : n) + 5,
                          .ldc = n + 2,
                          .batch = 3};
      g.stride_a = 0; /* one A for every item, as a shared weight */
      g.stride_b = (tb ? n : k) * g.ldb + 7;
      g.stride_c = m * g.ldc + 1;
      char what[64];
      snprintf(what, sizeof what, "gemm 37x53x29 ta=%d tb=%d batch 3", ta, tb);
      gemm_case(p, what, g, 10 + 2 * ta + tb);
    }
  weft_gemm_args g1 = {
      .m = 1, .n = 1, .k = 1, .alpha = 1, .lda = 1, .ldb = 1, .ldc = 1};
  gemm_case(p, "gemm 1x1x1", g1, 3);
}

TEST(gemm_odd_shapes_all_transposes) {
  pair p = setup();
  gemm_odd_shapes_all_transposes_body(&p);
  teardown(&p);
}

static void gemm_beta_zero_ignores_nan_and_k_zero_scales_body(pair *p) {
  weft_gemm_args g = {.m = 17,
                      .n = 9,
                      .k = 5,
                      .alpha = 1,
                      .beta = 0,
                      .lda = 5,
                      .ldb = 9,
                      .ldc = 9};
  gemm_case(p, "gemm beta=0 over NaN C", g, 4); /* C starts as NaN */
  weft_gemm_args k0 = {.m = 6,
                       .n = 7,
                       .k = 0,
                       .alpha = 1,
                       .beta = 0.5f,
                       .lda = 1,
                       .ldb = 7,
                       .ldc = 8,
                       .batch = 2,
                       .stride_c = 60};
  gemm_case(p, "gemm k=0 beta=0.5", k0, 5);
  k0.beta = 0;
  gemm_case(p, "gemm k=0 beta=0", k0, 6);
}

TEST(gemm_beta_zero_ignores_nan_and_k_zero_scales) {
  pair p = setup();
  gemm_beta_zero_ignores_nan_and_k_zero_scales_body(&p);
  teardown(&p);
}

static void gemm_sd_shapes_body(pair *p) {
  /* q/k/v projection of 64x64 tokens, batch 2, shared weight [320,320] */
  weft_gemm_args proj = {.m = 4096,
                         .n = 320,
                         .k = 320,
                         .trans_b = 1,
                         .alpha = 1,
                         .lda = 320,
                         .ldb = 320,
                         .ldc = 320,
                         .batch = 2,
                         .stride_a = 4096 * 320,
                         .stride_b = 0,
                         .stride_c = 4096 * 320};
  gemm_case(p, "gemm proj 4096x320x320 b2", proj, 20);
  /* feed-forward out: [4096,1280] x [320,1280]^T */
  weft_gemm_args ff = {.m = 4096,
                       .n = 320,
                       .k = 1280,
                       .trans_b = 1,
                       .alpha = 1,
                       .lda = 1280,
                       .ldb = 1280,
                       .ldc = 320};
  gemm_case(p, "gemm ff 4096x320x1280", ff, 21);
  /* NCHW -> tokens (sd_run_linear_from_nchw): A = x stored [in, hw] */
  weft_gemm_args tok = {.m = 4096,
                        .n = 320,
                        .k = 320,
                        .trans_a = 1,
                        .trans_b = 1,
                        .alpha = 1,
                        .lda = 4096,
                        .ldb = 320,
                        .ldc = 320,
                        .batch = 2,
                        .stride_a = 320 * 4096,
                        .stride_c = 4096 * 320};
  gemm_case(p, "gemm nchw->tokens 4096x320x320 b2", tok, 22);
}

TEST(gemm_sd_shapes) {
  pair p = setup();
  gemm_sd_shapes_body(&p);
  teardown(&p);
}

TEST(gemm_rejects_what_cpu_rejects) {
  pair p = setup();
  float dummy[4] = {0};
  weft_gemm_args bad[] = {
      {.m = -1, .n = 1, .k = 1, .lda = 1, .ldb = 1, .ldc = 1},
      {.m = 2, .n = 2, .k = 3, .lda = 2, .ldb = 2, .ldc = 2}, /* lda < k */
      {.m = 2, .n = 3, .k = 2, .lda = 2, .ldb = 3, .ldc = 2}, /* ldc < n */
      {.m = 2, .n = 2, .k = 2, .lda = 2, .ldb = 2, .ldc = 2, .batch = -1},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    bad[i].a = bad[i].b = dummy;
    bad[i].c = dummy;
    int rc_c = p.cpu->iface->gemm(p.cpu, &bad[i]);
    int rc_g = p.gpu->iface->gemm(p.gpu, &bad[i]);
    ASSERT_EQ(rc_c, WEFT_EINVAL);
    ASSERT_EQ(rc_g, rc_c);
  }
  ASSERT_EQ(p.gpu->iface->gemm(p.gpu, NULL), WEFT_EINVAL);
  teardown(&p);
}

/* bias: 0 none, 1 a bias, 2 a bias and x, w, bias and y one float past
 * their buffers' (aligned) starts: 4-byte aligned operands. */
static void linear_case(pair *p, const char *what, int64_t rows, int64_t in,
                        int64_t out, int bias, uint64_t seed) {
  uint64_t s = seed;
  const int64_t o = bias == 2 ? 1 : 0;
  float *x = rnd(&s, rows * in + o, -1, 1),
        *w = rnd(&s, out * in + o, -.2f, .2f);
  float *b = rnd(&s, out + o, -1, 1), *yc = hnan(rows * out);
  float *dx0 = up(p, x, rows * in + o), *dw0 = up(p, w, out * in + o),
        *db0 = up(p, b, out + o), *dy0 = dpoison(p, rows * out + o);
  float *dx = dx0 + o, *dw = dw0 + o, *db = db0 + o, *dy = dy0 + o;
  x += o, w += o, b += o;
  ASSERT_OK(
      p->cpu->iface->linear(p->cpu, x, rows, in, w, bias ? b : NULL, out, yc));
  ASSERT_OK(p->gpu->iface->linear(p->gpu, dx, rows, in, dw, bias ? db : NULL,
                                  out, dy));
  check(p, what, dy, yc, rows * out, 0, p->tol_sum);
  if (p->dt != WEFT_F32) { /* the CPU on x and w rounded to 16 bits */
    float *x16 = rounded(p, x, rows * in, p->dt),
          *w16 = rounded(p, w, out * in, p->dt);
    ASSERT_OK(p->cpu->iface->linear(p->cpu, x16, rows, in, w16, bias ? b : NULL,
                                    out, yc));
    char w2[128];
    snprintf(w2, sizeof w2, "%s vs rounded", what);
    check(p, w2, dy, yc, rows * out, 0, TOL_SUM_MAX);
    free(x16);
    free(w16);
  }
  dfree(p, dx0);
  dfree(p, dw0);
  dfree(p, db0);
  dfree(p, dy0);
  free(x - o);
  free(w - o);
  free(b - o);
  free(yc);
}

static void linear_sd_and_odd_shapes_body(pair *p) {
  linear_case(p, "linear context k/v 154x768->320 +b", 154, 768, 320, 1, 30);
  linear_case(p, "linear time emb 2x1280->1280 +b", 2, 1280, 1280, 1, 31);
  linear_case(p, "linear geglu in 8192x320->2560 +b", 8192, 320, 2560, 1, 32);
  linear_case(p, "linear odd 77x33->19", 77, 33, 19, 0, 33);
  linear_case(p, "linear odd 1x1->3 +b", 1, 1, 3, 1, 34);
  linear_case(p, "linear 154x768->320 +b, 4-byte aligned", 154, 768, 320, 2,
              35);
  /* a few rows (16-bit precision: one warp a column, weft__cu_gemv16) */
  linear_case(p, "linear few rows 1x640->77", 1, 640, 77, 0, 36);
  linear_case(p, "linear few rows 3x320->1280 +b", 3, 320, 1280, 1, 37);
  linear_case(p, "linear few rows 4x1280->320 +b, 4-byte aligned", 4, 1280,
              320, 2, 38);
  /* rows of more than one batch of loads a lane (8 for 2 rows: 2048
   * values), ending inside the second */
  linear_case(p, "linear few rows 2x4000->96 +b", 2, 4000, 96, 1, 39);
}

TEST(linear_sd_and_odd_shapes) {
  pair p = setup();
  linear_sd_and_odd_shapes_body(&p);
  teardown(&p);
}

/* ---- convolution ----------------------------------------------------------
 */

typedef struct conv_shape {
  int64_t b, cin, h, w, cout, kh, kw, sh, sw, pt, pl, pb, pr;
} conv_shape;

static weft_conv2d_args conv_args(const conv_shape *c) {
  weft_conv2d_args a = {.batch = c->b,
                        .c_in = c->cin,
                        .h_in = c->h,
                        .w_in = c->w,
                        .c_out = c->cout,
                        .k_h = c->kh,
                        .k_w = c->kw,
                        .stride_h = c->sh,
                        .stride_w = c->sw,
                        .pad_top = c->pt,
                        .pad_left = c->pl,
                        .pad_bottom = c->pb,
                        .pad_right = c->pr};
  return a;
}

/* Whether a backend in 16-bit precision with cuDNN takes this convolution
 * to cuDNN (conv_cudnn.c): symmetric padding, channels multiples of 8, not
 * a 1x1 stride-1 unpadded one (a plain GEMM). */
static bool conv_pointwise(const conv_shape *c) {
  return c->kh == 1 && c->kw == 1 && c->sh == 1 && c->sw == 1 && c->pt == 0 &&
         c->pl == 0 && c->pb == 0 && c->pr == 0;
}

static bool conv_goes_cudnn16(const conv_shape *c) {
  return !conv_pointwise(c) && c->pt == c->pb && c->pl == c->pr &&
         c->cin % 8 == 0 && c->cout % 8 == 0;
}

/* The channels-last way: cuDNN's NHWC kernels, or on the smallest maps
 * the same bands through split-K products (both round y to 16 bits before
 * the bias). */
static bool nhwc_way(const char *path) {
  return !strcmp(path, "cudnn_nhwc") || !strcmp(path, "nhwc_splitk");
}

/* The GPU's convolution output dy (dense [batch][cout][hw]) against the
 * CPU's yc on the inputs rounded to 16 bits, bias (may be NULL) included.
 * The fp32-output paths differ by summation order only: 1e-4 M.
 * "cudnn16" also rounds each output to 16 bits before adding the bias:
 * |round(v) - v| <= 2^-11 |v| (fp16) or 2^-8 |v| (bf16), v the output
 * before the bias (yc - bias here), so that much per element on top. */
static void conv_rounded_check(pair *p, const char *what, const char *path,
                               const float *dy, const float *yc,
                               const float *bias, int64_t batch, int64_t cout,
                               int64_t hw) {
  const int64_t n = batch * cout * hw;
  const double rel = strcmp(path, "cudnn16") != 0 && !nhwc_way(path) ? 0
                     : p->dt == WEFT_F16                             ? 0x1p-11
                                                                     : 0x1p-8;
  float *mag = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
  ASSERT(mag);
  for (int64_t i = 0; i < n; i++)
    mag[i] = yc[i] - (bias ? bias[(i / hw) % cout] : 0.0f);
  float *g = down(p, dy, n);
  compare_mag(what, g, yc, mag, n, rel, TOL_SUM_MAX);
  free(g);
  free(mag);
}

/* w [cout, cin, kk] channels last, [cout, kk, cin] (a new array) */
static float *hwc_of(const float *w, int64_t cout, int64_t cin, int64_t kk) {
  float *h = malloc((size_t)(cout * cin * kk) * sizeof *h);
  ASSERT(h);
  weft_conv2d_weight_layout(w, h, cout, cin, kk, true);
  return h;
}

/* hwc: the GPU gets the weight channels last (w_hwc), the CPU as it is:
 * "cudnn_nhwc" where it qualifies (16-bit precision, cuDNN, channels
 * multiples of 8, more than one tap, the way not forced to im2col), else
 * the weight back in [cout, cin, kk] and the way the others take. */
static void conv_case_ex(pair *p, const char *name, const conv_shape *c,
                         weft_cuda_conv_algo algo, uint64_t seed, bool hwc) {
  uint64_t s = seed;
  weft_conv2d_args a = conv_args(c);
  int64_t ho = weft_conv2d_out_size(c->h, c->kh, c->sh, c->pt, c->pb);
  int64_t wo = weft_conv2d_out_size(c->w, c->kw, c->sw, c->pl, c->pr);
  int64_t nx = c->b * c->cin * c->h * c->w,
          nw = c->cout * c->cin * c->kh * c->kw;
  int64_t ny = c->b * c->cout * ho * wo;
  float bound = 1.0f / sqrtf((float)(c->cin * c->kh * c->kw));
  float *x = rnd(&s, nx, -1, 1), *w = rnd(&s, nw, -bound, bound);
  float *bias = rnd(&s, c->cout, -1, 1), *yc = hnan(ny);
  float *wh = hwc ? hwc_of(w, c->cout, c->cin, c->kh * c->kw) : NULL;
  float *dx = up(p, x, nx), *dw = up(p, hwc ? wh : w, nw),
        *db = up(p, bias, c->cout), *dy = dpoison(p, ny);
  a.x = x;
  a.weight = w;
  a.bias = bias;
  a.y = yc;
  ASSERT_OK(p->cpu->iface->conv2d(p->cpu, &a));
  ASSERT_OK(weft_cuda_set_conv_algo(p->gpu, algo));
  a.x = dx;
  a.weight = dw;
  a.bias = db;
  a.y = dy;
  a.w_hwc = hwc;
  const char *path = weft_cuda_conv2d_path(p->gpu, &a);
  ASSERT(path != NULL);
  const bool nhwc = hwc && p->dt != WEFT_F32 && c->kh * c->kw > 1 &&
                    c->cin % 8 == 0 && c->cout % 8 == 0 &&
                    algo != WEFT_CUDA_CONV_IM2COL &&
                    weft_cuda_have_cudnn(p->gpu);
  if (nhwc) {
    ASSERT(nhwc_way(path));
    goto run;
  }
  ASSERT(!nhwc_way(path));
  /* cuDNN runs fp32 tensors in FP32 precision, 16-bit ones in FP16/BF16 */
  ASSERT(strcmp(path, p->dt == WEFT_F32 ? "cudnn16" : "cudnn") != 0);
  /* by default: few output channels directly, small maps by im2col */
  const bool direct =
      algo == WEFT_CUDA_CONV_AUTO && !conv_pointwise(c) && c->cout <= 8;
  if (direct) ASSERT_STR_EQ(path, "direct");
  if (strcmp(path, "direct") == 0) ASSERT(direct);
  if (p->dt != WEFT_F32 &&
      (algo == WEFT_CUDA_CONV_CUDNN ||
       (algo == WEFT_CUDA_CONV_AUTO && !direct && ho * wo > 256)) &&
      conv_goes_cudnn16(c) && weft_cuda_have_cudnn(p->gpu))
    ASSERT_STR_EQ(path, "cudnn16"); /* the default where it qualifies */
  if (algo == WEFT_CUDA_CONV_IM2COL ||
      (p->dt != WEFT_F32 && ho * wo <= 256 && algo == WEFT_CUDA_CONV_AUTO))
    ASSERT(strncmp(path, "cudnn", 5) != 0);
run:
  ASSERT_OK(p->gpu->iface->conv2d(p->gpu, &a));
  char what[96];
  snprintf(what, sizeof what, "conv %s [%s%s]", name, path,
           hwc ? ", weight channels last" : "");
  check(p, what, dy, yc, ny, 0, p->tol_sum);
  if (p->dt != WEFT_F32) { /* the CPU on x and w rounded to 16 bits */
    float *x16 = rounded(p, x, nx, p->dt), *w16 = rounded(p, w, nw, p->dt);
    a.x = x16;
    a.weight = w16;
    a.bias = bias;
    a.y = yc;
    a.w_hwc = 0;
    ASSERT_OK(p->cpu->iface->conv2d(p->cpu, &a));
    char w2[128];
    snprintf(w2, sizeof w2, "%s vs rounded", what);
    conv_rounded_check(p, w2, path, dy, yc, bias, c->b, c->cout, ho * wo);
    free(x16);
    free(w16);
  }
  dfree(p, dx);
  dfree(p, dw);
  dfree(p, db);
  dfree(p, dy);
  free(x);
  free(w);
  free(wh);
  free(bias);
  free(yc);
}

static void conv_case(pair *p, const char *name, const conv_shape *c,
                      weft_cuda_conv_algo algo, uint64_t seed) {
  conv_case_ex(p, name, c, algo, seed, false);
}

static const conv_shape odd_convs[] = {
    {2, 5, 13, 11, 7, 3, 3, 1, 1, 1, 1, 1, 1}, /* 3x3 pad 1 */
    {3, 4, 9, 10, 6, 3, 3, 2, 2, 0, 0, 1, 1},  /* VAE down: asym pad */
    {2, 6, 8, 8, 5, 1, 1, 1, 1, 0, 0, 0, 0},   /* 1x1: plain GEMM */
    {1, 3, 7, 9, 4, 2, 4, 2, 1, 1, 2, 0, 1},   /* non-square, asym */
    {2, 3, 16, 12, 8, 4, 4, 4, 4, 0, 0, 0, 0}, /* patchify */
    {1, 2, 5, 5, 3, 5, 5, 1, 1, 2, 2, 2, 2},   /* kernel = image */
    {2, 7, 6, 7, 9, 1, 1, 2, 2, 0, 0, 0, 0},   /* 1x1 stride 2 */
    {2, 5, 13, 11, 3, 3, 3, 1, 1, 0, 0, 0, 0}, /* direct rows: unpadded */
    {1, 3, 9, 16, 1, 3, 3, 1, 1, 1, 1, 1, 1},  /* rows read 8 at a time */
    {2, 40, 6, 24, 4, 3, 3, 1, 1, 0, 1, 2, 1}, /* same, pads 0 and 2 */
};

TEST(conv2d_odd_shapes_im2col) {
  pair p = setup();
  for (size_t i = 0; i < sizeof odd_convs / sizeof odd_convs[0]; i++) {
    char name[32];
    snprintf(name, sizeof name, "odd #%zu", i);
    conv_case(&p, name, &odd_convs[i], WEFT_CUDA_CONV_IM2COL, 40 + i);
  }
  teardown(&p);
}

static void conv2d_odd_shapes_auto_body(pair *p) {
  for (size_t i = 0; i < sizeof odd_convs / sizeof odd_convs[0]; i++) {
    char name[32];
    snprintf(name, sizeof name, "odd #%zu", i);
    conv_case(p, name, &odd_convs[i], WEFT_CUDA_CONV_AUTO, 50 + i);
  }
}

TEST(conv2d_odd_shapes_auto) {
  pair p = setup();
  conv2d_odd_shapes_auto_body(&p);
  teardown(&p);
}

static const conv_shape sd_convs[] = {
    {2, 4, 64, 64, 320, 3, 3, 1, 1, 1, 1, 1, 1},     /* conv_in */
    {2, 320, 64, 64, 320, 3, 3, 1, 1, 1, 1, 1, 1},   /* resnet 64x64 */
    {2, 320, 64, 64, 320, 3, 3, 2, 2, 1, 1, 1, 1},   /* downsample */
    {2, 1280, 8, 8, 1280, 3, 3, 1, 1, 1, 1, 1, 1},   /* resnet 8x8 */
    {2, 960, 32, 32, 640, 1, 1, 1, 1, 0, 0, 0, 0},   /* skip 1x1 */
    {1, 128, 256, 256, 128, 3, 3, 1, 1, 1, 1, 1, 1}, /* VAE: column blocks */
    {2, 320, 64, 64, 4, 3, 3, 1, 1, 1, 1, 1, 1},     /* UNet conv_out */
    {1, 128, 512, 512, 3, 3, 3, 1, 1, 1, 1, 1, 1},   /* VAE conv_out */
};

static void conv2d_sd_shapes_im2col_body(pair *p) {
  for (size_t i = 0; i < sizeof sd_convs / sizeof sd_convs[0]; i++) {
    char name[32];
    snprintf(name, sizeof name, "sd #%zu", i);
    conv_case(p, name, &sd_convs[i], WEFT_CUDA_CONV_IM2COL, 60 + i);
  }
}

TEST(conv2d_sd_shapes_im2col) {
  pair p = setup();
  conv2d_sd_shapes_im2col_body(&p);
  teardown(&p);
}

static void conv2d_sd_shapes_auto_body(pair *p) {
  printf("cuDNN %s\n", weft_cuda_have_cudnn(p->gpu)
                           ? "available: [cudnn] below where it ran"
                           : "not built in or not loaded: im2col");
  for (size_t i = 0; i < sizeof sd_convs / sizeof sd_convs[0]; i++) {
    char name[32];
    snprintf(name, sizeof name, "sd #%zu", i);
    conv_case(p, name, &sd_convs[i], WEFT_CUDA_CONV_AUTO, 70 + i);
  }
}

TEST(conv2d_sd_shapes_auto) {
  pair p = setup();
  conv2d_sd_shapes_auto_body(&p);
  teardown(&p);
}

/* Images inside larger buffers (x_bstride, y_bstride into a concat
 * buffer's channel slice) and caller scratch, including one so small that
 * the im2col path must go a few columns at a time.  Two shapes: 6 -> 4
 * channels (im2col in 16-bit precision) and 16 -> 8 (cuDNN there).  With
 * the scratch it asked for, a cuDNN path takes nothing from the cache:
 * emptied first, the cache would have to cudaMalloc for any request. */
static void conv2d_strided_buffers_and_scratch_body(pair *p) {
  static const conv_shape shapes[] = {
      {2, 6, 10, 9, 4, 3, 3, 1, 1, 1, 1, 1, 1},
      {2, 16, 10, 9, 8, 3, 3, 1, 1, 1, 1, 1, 1},
  };
  for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
    const conv_shape c = shapes[si];
    uint64_t s = 80 + si;
    const int64_t k = c.cin * 9, ho = 10, wo = 9;
    const int64_t xs = c.cin * 10 * 9 + 13, nw = c.cout * k;
    /* c.cout of c.cout + 3 channels, from channel 2 */
    const int64_t ctot = c.cout + 3, ys = ctot * ho * wo;
    const float wb = .3f * sqrtf(54.0f / (float)k); /* like 6 channels */
    float *x = rnd(&s, 2 * xs, -1, 1), *w = rnd(&s, nw, -wb, wb);
    float *y0 = rnd(&s, 2 * ys, -1, 1);
    static const weft_cuda_conv_algo algos[] = {
        WEFT_CUDA_CONV_IM2COL, WEFT_CUDA_CONV_AUTO, WEFT_CUDA_CONV_CUDNN};
    for (int algo = 0; algo < 3; algo++)
      for (int sc = 0; sc < 3; sc++) {
        weft_cuda_conv_algo al = algos[algo];
        float *yc = malloc((size_t)(2 * ys) * 4);
        ASSERT(yc);
        memcpy(yc, y0, (size_t)(2 * ys) * 4);
        float *dx = up(p, x, 2 * xs), *dw = up(p, w, nw),
              *dy = up(p, y0, 2 * ys);
        weft_conv2d_args a = conv_args(&c);
        a.x_bstride = xs;
        a.y_bstride = ys;
        a.x = x;
        a.weight = w;
        a.y = yc + 2 * ho * wo;
        ASSERT_OK(p->cpu->iface->conv2d(p->cpu, &a));
        ASSERT_OK(weft_cuda_set_conv_algo(p->gpu, al));
        a.x = dx;
        a.weight = dw;
        a.y = dy + 2 * ho * wo;
        size_t need = p->gpu->iface->conv2d_scratch_bytes(p->gpu, &a);
        const char *path = weft_cuda_conv2d_path(p->gpu, &a);
        ASSERT(path);
        void *scr = NULL;
        if (sc == 1 && need) { /* exactly what it asked for */
          scr = p->gpu->iface->buffer_alloc(p->gpu, need);
          a.scratch = scr;
          a.scratch_bytes = need;
        } else if (sc == 2 && al == WEFT_CUDA_CONV_IM2COL) {
          size_t small = (size_t)(k * 17) * 4; /* 17 columns */
          scr = p->gpu->iface->buffer_alloc(p->gpu, small);
          a.scratch = scr;
          a.scratch_bytes = small;
        }
        const bool no_cache = sc == 1 && strncmp(path, "cudnn", 5) == 0;
        if (no_cache) ASSERT_OK(weft_cuda_trim(p->gpu));
        const uint64_t mallocs = weft_cuda_malloc_count(p->gpu);
        ASSERT_OK(p->gpu->iface->conv2d(p->gpu, &a));
        if (no_cache) ASSERT_EQ(weft_cuda_malloc_count(p->gpu), mallocs);
        char what[96];
        snprintf(what, sizeof what, "conv strided %lld->%lld [%s] scratch %s",
                 (long long)c.cin, (long long)c.cout, path,
                 sc == 0   ? "none"
                 : sc == 1 ? "asked"
                           : "small");
        /* the whole buffer: channels outside the slice must be untouched */
        check(p, what, dy, yc, 2 * ys, 0, p->tol_sum);
        if (scr) dfree(p, scr);
        dfree(p, dx);
        dfree(p, dw);
        dfree(p, dy);
        free(yc);
      }
    free(x);
    free(w);
    free(y0);
  }
}

TEST(conv2d_strided_buffers_and_scratch) {
  pair p = setup();
  conv2d_strided_buffers_and_scratch_body(&p);
  teardown(&p);
}

TEST(conv2d_rejects_what_cpu_rejects) {
  pair p = setup();
  float dummy[64] = {0};
  conv_shape bad[] = {
      {1, 0, 4, 4, 2, 3, 3, 1, 1, 1, 1, 1, 1},  /* no input channels */
      {1, 2, 2, 2, 2, 5, 5, 1, 1, 0, 0, 0, 0},  /* kernel > image */
      {1, 2, 4, 4, 2, 3, 3, 0, 1, 1, 1, 1, 1},  /* stride 0 */
      {1, 2, 4, 4, 2, 3, 3, 1, 1, -1, 1, 1, 1}, /* negative pad */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    weft_conv2d_args a = conv_args(&bad[i]);
    a.x = a.weight = dummy;
    a.y = dummy;
    int rc_c = p.cpu->iface->conv2d(p.cpu, &a);
    ASSERT_EQ(rc_c, WEFT_EINVAL);
    ASSERT_EQ(p.gpu->iface->conv2d(p.gpu, &a), rc_c);
    ASSERT_EQ(p.gpu->iface->conv2d_scratch_bytes(p.gpu, &a), 0);
  }
  teardown(&p);
}

/* ---- attention ------------------------------------------------------------
 */

typedef struct attn_shape {
  int64_t b, h, lq, lk, d, dv;
  int blhd, causal;
  float scale;
} attn_shape;

static void attn_case(pair *p, const char *name, const attn_shape *c,
                      uint64_t seed) {
  uint64_t s = seed;
  int64_t nq = c->b * c->h * c->lq * c->d, nk = c->b * c->h * c->lk * c->d;
  int64_t nv = c->b * c->h * c->lk * c->dv, no = c->b * c->h * c->lq * c->dv;
  float *q = rnd(&s, nq, -2, 2), *k = rnd(&s, nk, -2, 2),
        *v = rnd(&s, nv, -1, 1), *oc = hnan(no);
  float *dq = up(p, q, nq), *dk = up(p, k, nk), *dv = up(p, v, nv),
        *dout = dpoison(p, no);
  weft_attn_args a = {.batch = c->b,
                      .heads = c->h,
                      .lq = c->lq,
                      .lk = c->lk,
                      .d = c->d,
                      .dv = c->dv,
                      .scale = c->scale,
                      .causal = c->causal};
  if (c->blhd) {
    a.q_s = weft_attn_strides_blhd(c->h, c->lq, c->d);
    a.k_s = weft_attn_strides_blhd(c->h, c->lk, c->d);
    a.v_s = weft_attn_strides_blhd(c->h, c->lk, c->dv);
    a.o_s = weft_attn_strides_blhd(c->h, c->lq, c->dv);
  } else {
    a.q_s = weft_attn_strides_bhld(c->h, c->lq, c->d);
    a.k_s = weft_attn_strides_bhld(c->h, c->lk, c->d);
    a.v_s = weft_attn_strides_bhld(c->h, c->lk, c->dv);
    a.o_s = weft_attn_strides_bhld(c->h, c->lq, c->dv);
  }
  a.q = q;
  a.k = k;
  a.v = v;
  a.o = oc;
  ASSERT_OK(p->cpu->iface->attention(p->cpu, &a));
  a.q = dq;
  a.k = dk;
  a.v = dv;
  a.o = dout;
  size_t need = p->gpu->iface->attention_scratch_bytes(p->gpu, &a);
  const char *path = weft_cuda_attention_path(p->gpu, &a);
  ASSERT(path);
  if (strcmp(path, "fp32") == 0) {
    ASSERT_EQ(need, 0); /* the fp32 kernel keeps its scores in shared memory */
  } else if (strcmp(path, "fused") == 0) {
    /* k and v in 16 bits, keys padded to 64, d to a multiple of 16 */
    const int64_t dp = c->d <= 48    ? 48
                       : c->d <= 64  ? 64
                       : c->d <= 80  ? 80
                       : c->d <= 128 ? 128
                                     : 160;
    const size_t one =
        (size_t)(c->b * c->h * ((c->lk + 63) / 64 * 64) * dp) * 2;
    ASSERT_EQ(need, 2 * ((one + 255) / 256 * 256));
  } else {
    ASSERT(need > 0); /* 16-bit q, k, v, scores and probabilities */
  }
  ASSERT_STR_EQ(path, p->dt == WEFT_F32                          ? "fp32"
                      : c->d == c->dv && c->d <= 160 && p->fused ? "fused"
                                                                 : "cublas");
  ASSERT_OK(p->gpu->iface->attention(p->gpu, &a));
  char what[96];
  snprintf(what, sizeof what, "attention %s", name);
  check(p, what, dout, oc, no, 0, p->tol_attn);
  if (need > 0 && need < ((size_t)256 << 20)) { /* again in caller scratch */
    void *scr = p->gpu->iface->buffer_alloc(p->gpu, need);
    ASSERT(scr);
    a.scratch = scr;
    a.scratch_bytes = need;
    float *h = hnan(no);
    ASSERT_OK(p->gpu->iface->buffer_copy(
        p->gpu, dout, h, (size_t)no * sizeof(float), WEFT_COPY_HOST_TO_DEVICE));
    free(h);
    ASSERT_OK(p->gpu->iface->attention(p->gpu, &a));
    snprintf(what, sizeof what, "attention %s, scratch", name);
    check(p, what, dout, oc, no, 0, p->tol_attn);
    dfree(p, scr);
  }
  dfree(p, dq);
  dfree(p, dk);
  dfree(p, dv);
  dfree(p, dout);
  free(q);
  free(k);
  free(v);
  free(oc);
}

static void attention_odd_shapes_body(pair *p) {
  const attn_shape cs[] = {
      {2, 3, 37, 45, 40, 24, 0, 0, 0},       /* BHLD */
      {2, 3, 37, 45, 40, 24, 1, 0, 0},       /* BLHD (diffusers) */
      {1, 12, 77, 77, 64, 64, 1, 1, 0},      /* CLIP causal */
      {2, 2, 50, 33, 17, 5, 0, 1, 0.3f},     /* causal lk < lq, scale */
      {1, 2, 19, 70, 20, 300, 0, 0, 0},      /* dv > 256: feature chunks */
      {1, 1, 9, 40, 200, 72, 1, 0, 0},       /* large d: > 48 KB shared */
      {3, 1, 1, 1, 8, 8, 0, 0, 0},           /* one query, one key */
      {1, 4, 65, 1, 33, 31, 1, 0, 0},        /* one key */
      {1, 2, 130, 129, 80, 80, 0, 1, 0},     /* causal past one key tile */
      {2, 3, 200, 77, 63, 63, 1, 0, 0},      /* odd d: scalar loads */
      {2, 3, 37, 45, 40, 40, 1, 0, 0},       /* d 40: v's ones column */
      {1, 2, 70, 70, 40, 40, 0, 1, -0.15f},  /* negative scale, causal */
      {1, 2, 33, 150, 160, 160, 0, 0, 0.1f}, /* largest fused d */
      {1, 1, 20, 20, 161, 161, 0, 0, 0},     /* just past it: unfused */
  };
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
    char name[96];
    snprintf(name, sizeof name, "b%lld h%lld %lldx%lld d%lld dv%lld%s%s",
             (long long)cs[i].b, (long long)cs[i].h, (long long)cs[i].lq,
             (long long)cs[i].lk, (long long)cs[i].d, (long long)cs[i].dv,
             cs[i].blhd ? " blhd" : "", cs[i].causal ? " causal" : "");
    attn_case(p, name, &cs[i], 90 + i);
  }
}

TEST(attention_odd_shapes) {
  pair p = setup();
  attention_odd_shapes_body(&p);
  teardown(&p);
}

static void attention_sd_shapes_body(pair *p) {
  const attn_shape cs[] = {
      {2, 8, 4096, 4096, 40, 40, 1, 0, 0}, /* 64x64 self */
      {2, 8, 4096, 77, 40, 40, 1, 0, 0},   /* 64x64 cross */
      {2, 8, 1024, 1024, 80, 80, 1, 0, 0}, /* 32x32 self */
      {2, 8, 256, 77, 160, 160, 1, 0, 0},  /* 16x16 cross */
      {2, 8, 64, 64, 160, 160, 1, 0, 0},   /* 8x8 self */
  };
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
    char name[96];
    snprintf(name, sizeof name, "sd b2 h8 %lldx%lld d%lld", (long long)cs[i].lq,
             (long long)cs[i].lk, (long long)cs[i].d);
    attn_case(p, name, &cs[i], 100 + i);
  }
}

TEST(attention_sd_shapes) {
  pair p = setup();
  attention_sd_shapes_body(&p);
  teardown(&p);
}

TEST(attention_rejects_what_cpu_rejects) {
  pair p = setup();
  float dummy[64] = {0};
  weft_attn_args a = {.batch = 1,
                      .heads = 1,
                      .lq = 2,
                      .lk = 0,
                      .d = 4,
                      .dv = 4,
                      .q = dummy,
                      .k = dummy,
                      .v = dummy,
                      .o = dummy + 32};
  a.q_s = a.k_s = a.v_s = a.o_s = weft_attn_strides_bhld(1, 2, 4);
  ASSERT_EQ(p.cpu->iface->attention(p.cpu, &a), WEFT_EINVAL); /* lk = 0 */
  ASSERT_EQ(p.gpu->iface->attention(p.gpu, &a), WEFT_EINVAL);
  a.lk = 2;
  a.k_s.l = 3; /* row stride < d */
  ASSERT_EQ(p.cpu->iface->attention(p.cpu, &a), WEFT_EINVAL);
  ASSERT_EQ(p.gpu->iface->attention(p.gpu, &a), WEFT_EINVAL);
  teardown(&p);
}

/* ---- normalisation --------------------------------------------------------
 */

/* x and y start off floats into their device buffers: off = 1 puts them
 * off 16 bytes, so the kernels must take their scalar paths. */
static void gn_case_off(pair *p, const char *what, int64_t off, int64_t b,
                        int64_t c, int64_t sp, int64_t g, int affine,
                        weft_act act, int in_place, double mrel,
                        uint64_t seed) {
  uint64_t s = seed;
  int64_t n = b * c * sp;
  float *xo = rnd(&s, off + n, -3, 5), *gm = rnd(&s, c, 0.5f, 1.5f),
        *bt = rnd(&s, c, -.5f, .5f), *yc = hnan(n);
  const float *x = xo + off;
  float *dxo = up(p, xo, off + n), *dg = up(p, gm, c), *db = up(p, bt, c);
  float *dyo = in_place ? dxo : dpoison(p, off + n);
  float *dx = dxo + off, *dy = dyo + off;
  ASSERT_OK(p->cpu->iface->group_norm(p->cpu, x, yc, b, c, sp, g, 1e-5f,
                                      affine ? gm : NULL, affine ? bt : NULL,
                                      act));
  ASSERT_OK(p->gpu->iface->group_norm(p->gpu, dx, dy, b, c, sp, g, 1e-5f,
                                      affine ? dg : NULL, affine ? db : NULL,
                                      act));
  check(p, what, dy, yc, n, TOL_ELEM_REL, mrel);
  if (!in_place) dfree(p, dyo);
  dfree(p, dxo);
  dfree(p, dg);
  dfree(p, db);
  free(xo);
  free(gm);
  free(bt);
  free(yc);
}

static void gn_case(pair *p, const char *what, int64_t b, int64_t c, int64_t sp,
                    int64_t g, int affine, weft_act act, int in_place,
                    double mrel, uint64_t seed) {
  gn_case_off(p, what, 0, b, c, sp, g, affine, act, in_place, mrel, seed);
}

TEST(group_norm_sd_and_odd_shapes) {
  pair p = setup();
  gn_case(&p, "group_norm 2x320x64x64 g32 silu", 2, 320, 4096, 32, 1,
          WEFT_ACT_SILU, 0, TOL_ELEM_MAX, 110);
  gn_case(&p, "group_norm 2x1280x8x8 g32 in place", 2, 1280, 64, 32, 1,
          WEFT_ACT_NONE, 1, TOL_ELEM_MAX, 111);
  gn_case(&p, "group_norm 1x128x256x256 g32 (VAE) silu", 1, 128, 65536, 32, 1,
          WEFT_ACT_SILU, 0, TOL_ELEM_MAX, 112);
  gn_case(&p, "group_norm odd 3x12x7x5 g4 gelu no affine", 3, 12, 35, 4, 0,
          WEFT_ACT_GELU_ERF, 0, TOL_ELEM_MAX, 113);
  /* One value per group: variance 0, rstd = 1/sqrt(eps) = 316, and
   * y = x * scale + shift cancels to beta; the rounding of the ~316 |x|
   * product (FMA or not) is all that is left, so the bound is 1e-3. */
  gn_case(&p, "group_norm odd 1x6x1 g6 (one value per group)", 1, 6, 1, 6, 1,
          WEFT_ACT_QUICK_GELU, 0, 1e-3, 114);
  /* Groups over several 4096-value chunks of the statistics kernel, the
   * last one partial: 23040 values (float4 loads throughout), 4107 (odd:
   * scalar loads, an 11-value last chunk), 16200 (float4 statistics, odd
   * spatial so scalar apply). */
  gn_case(&p, "group_norm 2x320x48x48 g32 (5.6 chunks)", 2, 320, 2304, 32, 1,
          WEFT_ACT_SILU, 0, TOL_ELEM_MAX, 115);
  gn_case(&p, "group_norm odd 2x30x37x37 g10 (4107 values)", 2, 30, 1369, 10, 1,
          WEFT_ACT_GELU_TANH, 0, TOL_ELEM_MAX, 116);
  gn_case(&p, "group_norm odd 1x256x45x45 g32 in place", 1, 256, 2025, 32, 1,
          WEFT_ACT_NONE, 1, TOL_ELEM_MAX, 117);
  /* A chunk over many channels (the (scale, shift) table of the block):
   * one chunk of 4096 one-value channels, two of 4096 each, and SD's
   * 2560x8x8 (5120 values a group: two chunks of 64-value channels) */
  gn_case(&p, "group_norm 1x8192x1 g2 (4096 channels a chunk)", 1, 8192, 1, 2,
          1, WEFT_ACT_SILU, 0, TOL_ELEM_MAX, 126);
  gn_case(&p, "group_norm 1x8192x1 g1 (two chunks of 4096 channels)", 1, 8192,
          1, 1, 1, WEFT_ACT_NONE, 1, TOL_ELEM_MAX, 127);
  gn_case(&p, "group_norm 2x2560x8x8 g32 silu", 2, 2560, 64, 32, 1,
          WEFT_ACT_SILU, 0, TOL_ELEM_MAX, 128);
  /* x and y 4 bytes past 16-byte alignment */
  gn_case_off(&p, "group_norm 2x320x32x32 g32 misaligned", 1, 2, 320, 1024, 32,
              1, WEFT_ACT_SILU, 0, TOL_ELEM_MAX, 118);
  gn_case_off(&p, "group_norm 1x64x40x40 g32 misaligned in place", 1, 1, 64,
              1600, 32, 0, WEFT_ACT_NONE, 1, TOL_ELEM_MAX, 119);
  ASSERT_EQ(p.gpu->iface->group_norm(p.gpu, (float *)8, (float *)8, 1, 6, 1, 4,
                                     1e-5f, NULL, NULL, WEFT_ACT_NONE),
            WEFT_EINVAL); /* 6 channels in 4 groups */
  teardown(&p);
}

/* The statistics of a group spread over many blocks are summed in a fixed
 * order, so a second run gives the same bits (float4 and scalar paths). */
TEST(group_norm_is_deterministic) {
  pair p = setup();
  const int64_t sizes[2][4] = {{1, 128, 128 * 128, 32}, {2, 30, 1369, 10}};
  for (int k = 0; k < 2; k++) {
    const int64_t b = sizes[k][0], c = sizes[k][1], sp = sizes[k][2],
                  g = sizes[k][3], n = b * c * sp;
    uint64_t s = 120 + k;
    float *x = rnd(&s, n, -3, 5), *gm = rnd(&s, c, 0.5f, 1.5f);
    float *dx = up(&p, x, n), *dg = up(&p, gm, c);
    float *y1 = dpoison(&p, n), *y2 = dpoison(&p, n);
    ASSERT_OK(p.gpu->iface->group_norm(p.gpu, dx, y1, b, c, sp, g, 1e-5f, dg,
                                       NULL, WEFT_ACT_SILU));
    ASSERT_OK(p.gpu->iface->group_norm(p.gpu, dx, y2, b, c, sp, g, 1e-5f, dg,
                                       NULL, WEFT_ACT_SILU));
    float *h1 = down(&p, y1, n);
    char what[64];
    snprintf(what, sizeof what, "group_norm %lldx%lldx%lld g%lld twice",
             (long long)b, (long long)c, (long long)sp, (long long)g);
    check_exact(&p, what, y2, h1, n);
    free(h1);
    dfree(&p, dx), dfree(&p, dg), dfree(&p, y1), dfree(&p, y2);
    free(x);
    free(gm);
  }
  teardown(&p);
}

static void ln_case(pair *p, const char *what, int64_t rows, int64_t dim,
                    int affine, int in_place, uint64_t seed) {
  uint64_t s = seed;
  int64_t n = rows * dim;
  float *x = rnd(&s, n, -2, 3), *gm = rnd(&s, dim, 0.5f, 1.5f),
        *bt = rnd(&s, dim, -.5f, .5f), *yc = hnan(n);
  float *dx = up(p, x, n), *dg = up(p, gm, dim), *db = up(p, bt, dim);
  float *dy = in_place ? dx : dpoison(p, n);
  ASSERT_OK(p->cpu->iface->layer_norm(p->cpu, x, yc, rows, dim, 1e-5f,
                                      affine ? gm : NULL, affine ? bt : NULL));
  ASSERT_OK(p->gpu->iface->layer_norm(p->gpu, dx, dy, rows, dim, 1e-5f,
                                      affine ? dg : NULL, affine ? db : NULL));
  check(p, what, dy, yc, n, TOL_ELEM_REL, TOL_ELEM_MAX);
  if (!in_place) dfree(p, dy);
  dfree(p, dx);
  dfree(p, dg);
  dfree(p, db);
  free(x);
  free(gm);
  free(bt);
  free(yc);
}

TEST(layer_norm_sd_and_odd_shapes) {
  pair p = setup();
  ln_case(&p, "layer_norm 8192x320", 8192, 320, 1, 0, 120);
  ln_case(&p, "layer_norm 154x768 in place", 154, 768, 1, 1, 121);
  ln_case(&p, "layer_norm odd 37x77 no affine", 37, 77, 0, 0, 122);
  ln_case(&p, "layer_norm odd 5x1", 5, 1, 1, 0, 123);
  ln_case(&p, "layer_norm 3x5000", 3, 5000, 1, 0, 124);
  /* norm.cu's register rows: 8, 16 and 32 threads a row, 5 vectors each;
   * 32 x 8 vectors (the most); one vector more than that */
  ln_case(&p, "layer_norm 2048x640", 2048, 640, 1, 0, 125);
  ln_case(&p, "layer_norm 512x1280 in place", 512, 1280, 1, 1, 126);
  ln_case(&p, "layer_norm 77x1024", 77, 1024, 1, 0, 127);
  ln_case(&p, "layer_norm 9x1028", 9, 1028, 1, 0, 128);
  ln_case(&p, "layer_norm 2048x640 no affine", 2048, 640, 0, 0, 129);
  teardown(&p);
}

static void softmax_case(pair *p, const char *what, int64_t rows, int64_t dim,
                         int in_place, uint64_t seed) {
  uint64_t s = seed;
  int64_t n = rows * dim;
  float *x = rnd(&s, n, -10, 10), *yc = hnan(n);
  float *dx = up(p, x, n), *dy = in_place ? dx : dpoison(p, n);
  ASSERT_OK(p->cpu->iface->softmax(p->cpu, x, yc, rows, dim));
  ASSERT_OK(p->gpu->iface->softmax(p->gpu, dx, dy, rows, dim));
  check(p, what, dy, yc, n, TOL_ELEM_REL, TOL_ELEM_MAX);
  if (!in_place) dfree(p, dy);
  dfree(p, dx);
  free(x);
  free(yc);
}

TEST(softmax_rows) {
  pair p = setup();
  softmax_case(&p, "softmax 96x77", 96, 77, 0, 130);
  softmax_case(&p, "softmax 13x1000 in place", 13, 1000, 1, 131);
  softmax_case(&p, "softmax 4096x4096", 4096, 4096, 0, 132);
  softmax_case(&p, "softmax 7x1", 7, 1, 0, 133);
  teardown(&p);
}

/* ---- pointwise ------------------------------------------------------------
 */

TEST(act_all_kinds) {
  pair p = setup();
  uint64_t s = 140;
  const int64_t n = (1 << 20) + 3;
  float *x = rnd(&s, n, -8, 8), *yc = hnan(n);
  static const char *names[] = {"none", "silu", "gelu_erf", "gelu_tanh",
                                "quick_gelu"};
  for (int act = 0; act < WEFT_ACT_COUNT; act++)
    for (int in_place = 0; in_place < 2; in_place++) {
      float *dx = up(&p, x, n), *dy = in_place ? dx : dpoison(&p, n);
      ASSERT_OK(p.cpu->iface->act(p.cpu, (weft_act)act, x, yc, n));
      ASSERT_OK(p.gpu->iface->act(p.gpu, (weft_act)act, dx, dy, n));
      char what[64];
      snprintf(what, sizeof what, "act %s%s", names[act],
               in_place ? " in place" : "");
      check(&p, what, dy, yc, n, TOL_ELEM_REL, TOL_ELEM_MAX);
      if (!in_place) dfree(&p, dy);
      dfree(&p, dx);
    }
  ASSERT_EQ(p.gpu->iface->act(p.gpu, WEFT_ACT_COUNT, (float *)8, (float *)8, 1),
            WEFT_EINVAL);
  free(x);
  free(yc);
  teardown(&p);
}

static void gated_case(pair *p, const char *what, weft_act act, int64_t rows,
                       int64_t dim, int in_place, uint64_t seed) {
  uint64_t s = seed;
  float *x = rnd(&s, rows * 2 * dim, -4, 4), *yc = hnan(rows * dim);
  float *dx = up(p, x, rows * 2 * dim);
  float *dy = in_place ? dx : dpoison(p, rows * dim);
  ASSERT_OK(p->cpu->iface->gated_act(p->cpu, act, x, yc, rows, dim));
  ASSERT_OK(p->gpu->iface->gated_act(p->gpu, act, dx, dy, rows, dim));
  check(p, what, dy, yc, rows * dim, TOL_ELEM_REL, TOL_ELEM_MAX);
  if (!in_place) dfree(p, dy);
  dfree(p, dx);
  free(x);
  free(yc);
}

TEST(gated_act_geglu_and_swiglu) {
  pair p = setup();
  gated_case(&p, "geglu 8192x1280", WEFT_ACT_GELU_ERF, 8192, 1280, 0, 150);
  gated_case(&p, "geglu 8192x1280 in place", WEFT_ACT_GELU_ERF, 8192, 1280, 1,
             151);
  gated_case(&p, "swiglu odd 37x33", WEFT_ACT_SILU, 37, 33, 0, 152);
  gated_case(&p, "swiglu odd 37x33 in place", WEFT_ACT_SILU, 37, 33, 1, 153);
  teardown(&p);
}

static void binary_case(pair *p, weft_binop op, int an, const int64_t *as,
                        int bn, const int64_t *bs, int in_place,
                        uint64_t seed) {
  uint64_t s = seed;
  int64_t na = 1, nb = 1, ny = 1;
  int nd = an > bn ? an : bn;
  for (int i = 0; i < an; i++)
    na *= as[i];
  for (int i = 0; i < bn; i++)
    nb *= bs[i];
  for (int d = 0; d < nd; d++) {
    int ia = d - (nd - an), ib = d - (nd - bn);
    int64_t da = ia >= 0 ? as[ia] : 1, db = ib >= 0 ? bs[ib] : 1;
    ny *= da == 1 ? db : da;
  }
  float *a = rnd(&s, na, -2, 2), *b = rnd(&s, nb, 0.5f, 2), *yc = hnan(ny);
  float *da = up(p, a, na), *db = up(p, b, nb);
  float *dy = in_place ? da : dpoison(p, ny);
  if (in_place) ASSERT_EQ(na, ny);
  ASSERT_OK(p->cpu->iface->binary(p->cpu, op, a, an, as, b, bn, bs, yc));
  ASSERT_OK(p->gpu->iface->binary(p->gpu, op, da, an, as, db, bn, bs, dy));
  char what[96];
  int n = snprintf(what, sizeof what, "binary %c [", "+-*/"[op]);
  for (int i = 0; i < an && n < 80; i++)
    n += snprintf(what + n, sizeof what - (size_t)n, "%s%lld", i ? "," : "",
                  (long long)as[i]);
  n += snprintf(what + n, sizeof what - (size_t)n, "] [");
  for (int i = 0; i < bn && n < 80; i++)
    n += snprintf(what + n, sizeof what - (size_t)n, "%s%lld", i ? "," : "",
                  (long long)bs[i]);
  snprintf(what + n, sizeof what - (size_t)n, "]%s",
           in_place ? " in place" : "");
  check_exact(p, what, dy, yc, ny); /* one rounding each: bit-exact */
  if (!in_place) dfree(p, dy);
  dfree(p, da);
  dfree(p, db);
  free(a);
  free(b);
  free(yc);
}

TEST(binary_broadcasting) {
  pair p = setup();
  const int64_t s1[] = {2, 320, 64, 64}, s2[] = {2, 320, 1, 1};
  const int64_t t1[] = {8192, 320}, t2[] = {320};
  const int64_t u1[] = {3, 1, 5}, u2[] = {4, 1};
  const int64_t v1[] = {7, 9, 11}, sc[] = {1};
  const int64_t w1[] = {2, 3, 4, 5, 6}, w2[] = {2, 1, 4, 1, 6};
  const int64_t x1[] = {2, 320, 4096}, x2[] = {320, 1};
  for (int op = 0; op < WEFT_BIN_COUNT; op++) {
    binary_case(&p, (weft_binop)op, 4, s1, 4, s2, 0, 160 + op);
    binary_case(&p, (weft_binop)op, 2, t1, 1, t2, 1, 170 + op);
    binary_case(&p, (weft_binop)op, 3, u1, 2, u2, 0, 180 + op);
    binary_case(&p, (weft_binop)op, 3, v1, 3, v1, 1, 190 + op);
    binary_case(&p, (weft_binop)op, 3, v1, 0, sc, 0, 200 + op); /* scalar */
    binary_case(&p, (weft_binop)op, 1, sc, 3, v1, 0, 210 + op);
    binary_case(&p, (weft_binop)op, 5, w1, 5, w2, 0, 220 + op);
    binary_case(&p, (weft_binop)op, 3, x1, 2, x2, 0, 230 + op);
  }
  const int64_t bad1[] = {3, 4}, bad2[] = {5};
  ASSERT_EQ(p.gpu->iface->binary(p.gpu, WEFT_BIN_ADD, (float *)8, 2, bad1,
                                 (float *)8, 1, bad2, (float *)8),
            WEFT_EINVAL);
  teardown(&p);
}

TEST(scale_add_cfg) {
  pair p = setup();
  uint64_t s = 240;
  const int64_t n = 2 * 4 * 64 * 64 * 16 + 1;
  float *a = rnd(&s, n, -3, 3), *b = rnd(&s, n, -3, 3), *yc = hnan(n);
  for (int mode = 0; mode < 3; mode++) { /* with b, without b, y == b */
    float *da = up(&p, a, n), *db = up(&p, b, n);
    float *dy = mode == 2 ? db : dpoison(&p, n);
    ASSERT_OK(p.cpu->iface->scale_add(p.cpu, yc, 7.5f, a, -6.5f,
                                      mode == 1 ? NULL : b, n));
    ASSERT_OK(p.gpu->iface->scale_add(p.gpu, dy, 7.5f, da, -6.5f,
                                      mode == 1 ? NULL : db, n));
    static const char *names[] = {"scale_add a,b", "scale_add a only",
                                  "scale_add y == b"};
    check_exact(&p, names[mode], dy, yc, n);
    if (mode != 2) dfree(&p, dy);
    dfree(&p, da);
    dfree(&p, db);
  }
  free(a);
  free(b);
  free(yc);
  teardown(&p);
}

/* ---- layout ---------------------------------------------------------------
 */

static void upsample_case(pair *p, const char *what, int64_t planes, int64_t h,
                          int64_t w, uint64_t seed) {
  uint64_t s = seed;
  float *x = rnd(&s, planes * h * w, -1, 1), *yc = hnan(planes * h * w * 4);
  float *dx = up(p, x, planes * h * w), *dy = dpoison(p, planes * h * w * 4);
  ASSERT_OK(p->cpu->iface->upsample_nearest2x(p->cpu, x, yc, planes, h, w));
  ASSERT_OK(p->gpu->iface->upsample_nearest2x(p->gpu, dx, dy, planes, h, w));
  check_exact(p, what, dy, yc, planes * h * w * 4);
  dfree(p, dx);
  dfree(p, dy);
  free(x);
  free(yc);
}

TEST(upsample_nearest2x) {
  pair p = setup();
  upsample_case(&p, "upsample 2x1280x8x8", 2 * 1280, 8, 8, 250);
  upsample_case(&p, "upsample 2x640x32x32", 2 * 640, 32, 32, 251);
  upsample_case(&p, "upsample odd 3x5x7", 3, 5, 7, 252);
  upsample_case(&p, "upsample odd 1x1x1", 1, 1, 1, 253);
  teardown(&p);
}

static void concat_case(pair *p, const char *what, int n, int ndim,
                        const int64_t *shapes, int axis, uint64_t seed) {
  uint64_t s = seed;
  const float *hx[8];
  const float *dxs[8];
  const int64_t *sh[8];
  float *own[8], *down_[8];
  int64_t ny = 0;
  for (int i = 0; i < n; i++) {
    sh[i] = shapes + i * ndim;
    int64_t ni = 1;
    for (int d = 0; d < ndim; d++)
      ni *= sh[i][d];
    own[i] = rnd(&s, ni, -1, 1);
    hx[i] = own[i];
    down_[i] = up(p, own[i], ni > 0 ? ni : 1);
    dxs[i] = down_[i];
    ny += ni;
  }
  float *yc = hnan(ny), *dy = dpoison(p, ny > 0 ? ny : 1);
  ASSERT_OK(p->cpu->iface->concat(p->cpu, n, hx, ndim, sh, axis, yc));
  ASSERT_OK(p->gpu->iface->concat(p->gpu, n, dxs, ndim, sh, axis, dy));
  check_exact(p, what, dy, yc, ny);
  for (int i = 0; i < n; i++) {
    dfree(p, down_[i]);
    free(own[i]);
  }
  dfree(p, dy);
  free(yc);
}

TEST(concat_any_axis) {
  pair p = setup();
  const int64_t a[] = {2, 320, 32, 32, 2, 640, 32, 32};
  concat_case(&p, "concat axis 1 (skip)", 2, 4, a, 1, 260);
  const int64_t b[] = {3, 5, 4, 5};
  concat_case(&p, "concat axis 0", 2, 2, b, 0, 261);
  const int64_t c[] = {2, 3, 7, 2, 3, 1, 2, 3, 12};
  concat_case(&p, "concat last axis, 3 inputs", 3, 3, c, 2, 262);
  const int64_t d[] = {2, 0, 3, 2, 4, 3};
  concat_case(&p, "concat with an empty input", 2, 3, d, 1, 263);
  const int64_t bad[] = {2, 3, 3, 3};
  float *f = (float *)8;
  const float *xs[2] = {f, f};
  const int64_t *shp[2] = {bad, bad + 2};
  ASSERT_EQ(p.gpu->iface->concat(p.gpu, 2, xs, 2, shp, 1, f), WEFT_EINVAL);
  teardown(&p);
}

TEST(timestep_embedding_sd) {
  pair p = setup();
  const float t[] = {0, 1, 2.5f, 500, 999, 981.0f};
  const int64_t n = 6;
  float *dt = up(&p, t, n);
  struct {
    int64_t dim;
    int flip;
    float shift, scale, period;
  } cs[] = {{320, 1, 0, 1, 10000}, {33, 0, 1, 2, 1000}, {1, 1, 0, 1, 10000}};
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
    int64_t ny = n * cs[i].dim;
    float *yc = hnan(ny), *dy = dpoison(&p, ny);
    ASSERT_OK(p.cpu->iface->timestep_embedding(p.cpu, t, n, cs[i].dim,
                                               cs[i].flip, cs[i].shift,
                                               cs[i].scale, cs[i].period, yc));
    ASSERT_OK(p.gpu->iface->timestep_embedding(p.gpu, dt, n, cs[i].dim,
                                               cs[i].flip, cs[i].shift,
                                               cs[i].scale, cs[i].period, dy));
    char what[64];
    snprintf(what, sizeof what, "timestep_embedding dim %lld",
             (long long)cs[i].dim);
    /* same float arguments; sin/cos within an ulp of glibc's */
    check(&p, what, dy, yc, ny, 0, 2e-6);
    dfree(&p, dy);
    free(yc);
  }
  dfree(&p, dt);
  teardown(&p);
}

/* ---- dtype conversion -----------------------------------------------------
 */

static void convert_case(pair *p, const char *what, weft_dtype dt,
                         const void *src, weft_dtype st, int64_t n) {
  size_t ss = weft_dtype_size(st), ds = weft_dtype_size(dt);
  void *dc = malloc((size_t)n * ds), *got = malloc((size_t)n * ds);
  ASSERT(dc && got);
  void *dsrc = p->gpu->iface->buffer_alloc(p->gpu, (size_t)n * ss);
  void *ddst = p->gpu->iface->buffer_alloc(p->gpu, (size_t)n * ds);
  ASSERT(dsrc && ddst);
  ASSERT_OK(p->gpu->iface->buffer_copy(p->gpu, dsrc, src, (size_t)n * ss,
                                       WEFT_COPY_HOST_TO_DEVICE));
  ASSERT_OK(p->cpu->iface->convert(p->cpu, dc, dt, src, st, n));
  ASSERT_OK(p->gpu->iface->convert(p->gpu, ddst, dt, dsrc, st, n));
  ASSERT_OK(p->gpu->iface->buffer_copy(p->gpu, got, ddst, (size_t)n * ds,
                                       WEFT_COPY_DEVICE_TO_HOST));
  compare_exact(what, got, dc, (size_t)n * ds);
  dfree(p, dsrc);
  dfree(p, ddst);
  free(dc);
  free(got);
}

TEST(convert_bit_exact) {
  pair p = setup();
  /* every 16-bit pattern as f16 and as bf16 */
  uint16_t *all = malloc(65536 * 2);
  ASSERT(all);
  for (int i = 0; i < 65536; i++)
    all[i] = (uint16_t)i;
  convert_case(&p, "convert f16->f32 (all 65536)", WEFT_F32, all, WEFT_F16,
               65536);
  convert_case(&p, "convert bf16->f32 (all 65536)", WEFT_F32, all, WEFT_BF16,
               65536);
  convert_case(&p, "convert f16->bf16 (all 65536)", WEFT_BF16, all, WEFT_F16,
               65536);
  convert_case(&p, "convert bf16->f16 (all 65536)", WEFT_F16, all, WEFT_BF16,
               65536);
  convert_case(&p, "convert f16->f16 (copy)", WEFT_F16, all, WEFT_F16, 65536);
  /* f32: random bit patterns (NaN payloads, subnormals, everything) plus
   * the edges of f16 and bf16 rounding */
  const int64_t n = 1 << 20;
  uint32_t *bits = malloc((size_t)n * 4);
  ASSERT(bits);
  uint64_t s = 270;
  for (int64_t i = 0; i < n; i++)
    bits[i] = (uint32_t)rng_next(&s);
  const uint32_t edges[] = {0x477ff000u, 0x477fefffu, 0x477fe000u, 0x38800000u,
                            0x387fffffu, 0x33000000u, 0x33000001u, 0x7f800000u,
                            0xff800000u, 0x7fc00001u, 0xffbfffffu, 0x00000001u,
                            0x80000000u, 0x3f808000u, 0x3f818000u, 0x7f7fffffu,
                            0x33800000u, 0x337fffffu};
  for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++)
    bits[i] = edges[i];
  for (int64_t i = 64; i < 4096; i++) /* values near f16's range */
    bits[i] = 0x33000000u + (uint32_t)(rng_next(&s) % 0x14800000u);
  convert_case(&p, "convert f32->f16", WEFT_F16, bits, WEFT_F32, n);
  convert_case(&p, "convert f32->bf16", WEFT_BF16, bits, WEFT_F32, n);
  ASSERT_EQ(
      p.gpu->iface->convert(p.gpu, (void *)8, WEFT_F32, (void *)8, WEFT_I32, 4),
      WEFT_EUNSUPPORTED);
  ASSERT_EQ(
      p.cpu->iface->convert(p.cpu, (void *)8, WEFT_F32, (void *)8, WEFT_I32, 4),
      WEFT_EUNSUPPORTED);
  free(bits);
  free(all);
  teardown(&p);
}

/* ---- the op cases in FP16 and BF16 precision -----------------------------
 * The same cases as above on a backend in 16-bit precision, each checked
 * against the CPU on the fp32 inputs (TOL16_*) and, for GEMM, linear and
 * conv, on inputs rounded to 16 bits (1e-4 M). */

TEST(fp16_gemm) {
  pair p = setup_prec(WEFT_CUDA_FP16);
  gemm_odd_shapes_all_transposes_body(&p);
  gemm_beta_zero_ignores_nan_and_k_zero_scales_body(&p);
  gemm_sd_shapes_body(&p);
  teardown(&p);
}

TEST(fp16_linear) {
  pair p = setup_prec(WEFT_CUDA_FP16);
  linear_sd_and_odd_shapes_body(&p);
  teardown(&p);
}

TEST(fp16_conv2d_odd_and_strided) {
  pair p = setup_prec(WEFT_CUDA_FP16);
  conv2d_odd_shapes_auto_body(&p);
  conv2d_strided_buffers_and_scratch_body(&p);
  teardown(&p);
}

TEST(fp16_conv2d_sd_shapes) {
  pair p = setup_prec(WEFT_CUDA_FP16);
  conv2d_sd_shapes_auto_body(&p);
  teardown(&p);
}

/* The im2col path, which cuDNN replaced by default: fp32 output, so the
 * strict check vs the rounded inputs (1e-4 M) holds for every shape. */
TEST(fp16_conv2d_sd_shapes_im2col) {
  pair p = setup_prec(WEFT_CUDA_FP16);
  conv2d_sd_shapes_im2col_body(&p);
  teardown(&p);
}

/* Weights channels last (weft_conv2d_args.w_hwc, as nodes/sd keeps its 3x3
 * ones on CUDA): the NHWC way in 16-bit precision where it qualifies,
 * asymmetric padding and stride 2 included; elsewhere (FP32, im2col
 * forced, channels not multiples of 8) the weight back in [cout, cin, kk]
 * and the usual way.  Same tolerances as the KCRS weights'. */
static const conv_shape hwc_convs[] = {
    {2, 320, 64, 64, 320, 3, 3, 1, 1, 1, 1, 1, 1},   /* resnet 64x64 */
    {2, 1280, 8, 8, 1280, 3, 3, 1, 1, 1, 1, 1, 1},   /* resnet 8x8 */
    {2, 1280, 16, 16, 1280, 3, 3, 1, 1, 1, 1, 1, 1}, /* measured configs: */
    {2, 2560, 16, 16, 1280, 3, 3, 1, 1, 1, 1, 1, 1}, /* conv_cudnn.c's */
    {2, 640, 32, 32, 640, 3, 3, 1, 1, 1, 1, 1, 1},   /* tuned_h200 */
    {2, 2560, 8, 8, 1280, 3, 3, 1, 1, 1, 1, 1, 1},
    {2, 320, 64, 64, 320, 3, 3, 2, 2, 1, 1, 1, 1},   /* downsample */
    {1, 16, 33, 31, 24, 3, 3, 2, 2, 0, 0, 1, 1},     /* VAE down: asym pad */
    {2, 16, 13, 11, 8, 3, 3, 1, 1, 1, 1, 1, 1},      /* odd map */
    {1, 128, 256, 256, 128, 3, 3, 1, 1, 1, 1, 1, 1}, /* VAE 256x256 */
    {2, 5, 13, 11, 7, 3, 3, 1, 1, 1, 1, 1, 1},       /* odd channels */
    {2, 320, 16, 16, 4, 3, 3, 1, 1, 1, 1, 1, 1},     /* conv_out: direct */
    {2, 16, 8, 8, 24, 1, 1, 1, 1, 0, 0, 0, 0},       /* 1x1: one layout */
};

static void conv2d_hwc_body(pair *p, weft_cuda_conv_algo algo, uint64_t seed) {
  for (size_t i = 0; i < sizeof hwc_convs / sizeof hwc_convs[0]; i++) {
    char name[32];
    snprintf(name, sizeof name, "hwc #%zu", i);
    conv_case_ex(p, name, &hwc_convs[i], algo, seed + i, true);
  }
}

TEST(conv2d_channels_last_weights) {
  pair p = setup(); /* FP32: every one back to [cout, cin, kk] */
  conv2d_hwc_body(&p, WEFT_CUDA_CONV_AUTO, 300);
  teardown(&p);
  p = setup_prec(WEFT_CUDA_FP16);
  conv2d_hwc_body(&p, WEFT_CUDA_CONV_AUTO, 320);
  /* the 8x8 maps of 1280 and 2560 channels went through split-K products
   * (K in 12 slices), the 16x16 ones through cuDNN */
  if (weft_cuda_have_cudnn(p.gpu)) {
    const size_t sk[] = {1, 5}, dnn[] = {0, 2, 3};
    for (size_t i = 0; i < 2; i++) {
      weft_conv2d_args a = conv_args(&hwc_convs[sk[i]]);
      a.x = a.weight = a.y = (float *)256, a.w_hwc = 1; /* never run */
      ASSERT_STR_EQ(weft_cuda_conv2d_path(p.gpu, &a), "nhwc_splitk");
    }
    for (size_t i = 0; i < 3; i++) {
      weft_conv2d_args a = conv_args(&hwc_convs[dnn[i]]);
      a.x = a.weight = a.y = (float *)256, a.w_hwc = 1;
      ASSERT_STR_EQ(weft_cuda_conv2d_path(p.gpu, &a), "cudnn_nhwc");
    }
  }
  conv2d_hwc_body(&p, WEFT_CUDA_CONV_IM2COL, 340);
  /* in row bands: the band bytes far below one band's scratch */
  ASSERT_OK(weft_cuda_set_conv_band_bytes(p.gpu, (size_t)1 << 20));
  conv2d_hwc_body(&p, WEFT_CUDA_CONV_AUTO, 360);
  ASSERT_OK(weft_cuda_set_conv_band_bytes(p.gpu, (size_t)48 << 20));
  teardown(&p);
  p = setup_prec(WEFT_CUDA_BF16);
  conv2d_hwc_body(&p, WEFT_CUDA_CONV_AUTO, 380);
  teardown(&p);
}

/* The prologue (weft_conv2d_args.prenorm) on the channels-last way: the
 * group norm's statistics, then the norm and SiLU applied as x moves --
 * the bits of group_norm into a buffer and the same convolution of it
 * (the same roundings: act(fma) in fp32, rounded once to 16 bits), and
 * within the convolution's tolerance of the CPU's; whole and in row
 * bands, with the epilogue.  Any other way refuses it before it starts
 * (WEFT_EUNSUPPORTED): FP32 precision, weights as stored, channel counts
 * the NHWC kernels do not take. */
TEST(conv2d_prenorm_on_the_channels_last_way) {
  const conv_shape cs[] = {
      {2, 64, 16, 16, 64, 3, 3, 1, 1, 1, 1, 1, 1},
      {2, 320, 20, 12, 320, 3, 3, 1, 1, 1, 1, 1, 1},
      {1, 32, 17, 9, 16, 3, 3, 2, 2, 0, 0, 1, 1},
      {2, 32, 128, 128, 64, 3, 3, 1, 1, 1, 1, 1, 1}, /* y back: 2 px a thread */
      {2, 256, 8, 8, 128, 3, 3, 1, 1, 1, 1, 1, 1},   /* split-K, not banded */
  };
  for (int pr = 0; pr < 2; pr++) {
    pair p = setup_prec(pr == 0 ? WEFT_CUDA_FP16 : WEFT_CUDA_BF16);
    p.lt = false;
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
      for (int banded = 0; banded < 2; banded++) {
        const conv_shape *c = &cs[i];
        uint64_t s = 900 + i;
        weft_conv2d_args a = conv_args(c);
        const int64_t ho =
            weft_conv2d_out_size(c->h, c->kh, c->sh, c->pt, c->pb);
        const int64_t wo =
            weft_conv2d_out_size(c->w, c->kw, c->sw, c->pl, c->pr);
        const int64_t kk = c->kh * c->kw, hw = c->h * c->w;
        const int64_t nx = c->b * c->cin * hw, nw = c->cout * c->cin * kk;
        const int64_t ny = c->b * c->cout * ho * wo;
        float *x = rnd(&s, nx, -2, 3), *w = rnd(&s, nw, -0.1f, 0.1f);
        float *bias = rnd(&s, c->cout, -1, 1), *g = rnd(&s, c->cin, 0.5f, 1.5f);
        float *be = rnd(&s, c->cin, -0.5f, 0.5f), *res = rnd(&s, ny, -1, 1);
        float *yc = hnan(ny), *wh = hwc_of(w, c->cout, c->cin, kk);
        weft_conv2d_prenorm pn = {8, 1e-5f, g, be, WEFT_ACT_SILU};
        a.x = x, a.weight = w, a.bias = bias, a.y = yc, a.residual = res;
        a.prenorm = &pn;
        ASSERT_OK(p.cpu->iface->conv2d(p.cpu, &a));
        float *dx = up(&p, x, nx), *dw = up(&p, wh, nw), *dn = dpoison(&p, nx);
        float *db = up(&p, bias, c->cout), *dg = up(&p, g, c->cin);
        float *dbe = up(&p, be, c->cin), *dres = up(&p, res, ny);
        float *dy = dpoison(&p, ny), *dy2 = dpoison(&p, ny);
        if (banded)
          ASSERT_OK(weft_cuda_set_conv_band_bytes(p.gpu, (size_t)1 << 16));
        weft_conv2d_prenorm dpn = {8, 1e-5f, dg, dbe, WEFT_ACT_SILU};
        a.x = dx, a.weight = dw, a.w_hwc = 1, a.bias = db, a.residual = dres;
        a.y = dy, a.prenorm = &dpn;
        ASSERT_STR_EQ(weft_cuda_conv2d_path(p.gpu, &a),
                      i == 4 && !banded ? "nhwc_splitk" : "cudnn_nhwc");
        ASSERT_OK(p.gpu->iface->conv2d(p.gpu, &a));
        char what[96];
        snprintf(what, sizeof what, "conv prenorm #%zu%s", i,
                 banded ? " (bands)" : "");
        check(&p, what, dy, yc, ny, 0, p.tol_sum);
        /* group_norm, then the same convolution: the same bits */
        ASSERT_OK(p.gpu->iface->group_norm(p.gpu, dx, dn, c->b, c->cin, hw, 8,
                                           1e-5f, dg, dbe, WEFT_ACT_SILU));
        a.x = dn, a.y = dy2, a.prenorm = NULL;
        ASSERT_OK(p.gpu->iface->conv2d(p.gpu, &a));
        float *h1 = down(&p, dy, ny), *h2 = down(&p, dy2, ny);
        ASSERT(memcmp(h1, h2, sizeof(float) * (size_t)ny) == 0);
        /* weights as stored: refused, nothing written */
        a.x = dx, a.weight = up(&p, w, nw), a.w_hwc = 0;
        a.prenorm = &dpn;
        ASSERT_EQ(p.gpu->iface->conv2d(p.gpu, &a), WEFT_EUNSUPPORTED);
        dfree(&p, (void *)a.weight);
        ASSERT_OK(weft_cuda_set_conv_band_bytes(p.gpu, (size_t)48 << 20));
        free(h1), free(h2);
        free(x), free(w), free(bias), free(g), free(be), free(res), free(yc);
        free(wh);
        dfree(&p, dx), dfree(&p, dw), dfree(&p, dn), dfree(&p, db);
        dfree(&p, dg), dfree(&p, dbe), dfree(&p, dres), dfree(&p, dy);
        dfree(&p, dy2);
      }
    }
    teardown(&p);
  }
  /* FP32 precision: no channels-last way, so no prologue */
  pair p = setup();
  const conv_shape *c = &cs[0];
  weft_conv2d_args a = conv_args(c);
  const int64_t nx = c->b * c->cin * c->h * c->w, nw = c->cout * c->cin * 9;
  uint64_t s = 950;
  float *x = rnd(&s, nx, -1, 1), *w = rnd(&s, nw, -0.1f, 0.1f);
  float *wh = hwc_of(w, c->cout, c->cin, 9);
  float *dx = up(&p, x, nx), *dw = up(&p, wh, nw), *dy = dpoison(&p, nx);
  weft_conv2d_prenorm pn = {8, 1e-5f, NULL, NULL, WEFT_ACT_SILU};
  a.x = dx, a.weight = dw, a.w_hwc = 1, a.y = dy, a.prenorm = &pn;
  ASSERT_EQ(p.gpu->iface->conv2d(p.gpu, &a), WEFT_EUNSUPPORTED);
  free(x), free(w), free(wh);
  dfree(&p, dx), dfree(&p, dw), dfree(&p, dy);
  teardown(&p);
}

/* The convolution's epilogue (chan_add, then residual) on every way -- the
 * channels-last one adds it as it moves y back, the others after y is
 * whole -- against the CPU's, with a batch stride on y (and the residual
 * laid out as y); tolerances as the plain convolution's. */
TEST(conv2d_epilogue_on_every_way) {
  const struct {
    conv_shape c;
    weft_cuda_conv_algo algo;
    bool hwc;
  } cs[] = {
      {{2, 64, 16, 16, 64, 3, 3, 1, 1, 1, 1, 1, 1}, WEFT_CUDA_CONV_AUTO, true},
      {{2, 64, 16, 16, 64, 3, 3, 1, 1, 1, 1, 1, 1}, WEFT_CUDA_CONV_AUTO, false},
      {{2, 64, 16, 16, 64, 3, 3, 1, 1, 1, 1, 1, 1}, WEFT_CUDA_CONV_IM2COL,
       false},
      {{2, 16, 12, 12, 4, 3, 3, 1, 1, 1, 1, 1, 1}, WEFT_CUDA_CONV_AUTO, false},
      {{2, 32, 8, 8, 48, 1, 1, 1, 1, 0, 0, 0, 0}, WEFT_CUDA_CONV_AUTO, false},
      /* 512 tiles of 64 pixels: layout.cu moves y back two pixels a thread */
      {{2, 32, 128, 128, 64, 3, 3, 1, 1, 1, 1, 1, 1}, WEFT_CUDA_CONV_AUTO,
       true},
  };
  for (int pr = 0; pr < 3; pr++) {
    pair p = setup_prec(pr == 0   ? WEFT_CUDA_FP32
                        : pr == 1 ? WEFT_CUDA_FP16
                                  : WEFT_CUDA_BF16);
    p.lt = false;
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
      const conv_shape *c = &cs[i].c;
      uint64_t s = 700 + i;
      weft_conv2d_args a = conv_args(c);
      const int64_t ho = weft_conv2d_out_size(c->h, c->kh, c->sh, c->pt, c->pb);
      const int64_t wo = weft_conv2d_out_size(c->w, c->kw, c->sw, c->pl, c->pr);
      const int64_t kk = c->kh * c->kw, nx = c->b * c->cin * c->h * c->w;
      const int64_t nw = c->cout * c->cin * kk, ys = c->cout * ho * wo + 5;
      const int64_t ny = ys * c->b;
      float *x = rnd(&s, nx, -1, 1), *w = rnd(&s, nw, -0.1f, 0.1f);
      float *bias = rnd(&s, c->cout, -1, 1), *ch = rnd(&s, c->b * c->cout, -1, 1);
      float *res = rnd(&s, ny, -1, 1), *yc = rnd(&s, ny, -1, 1);
      float *wh = hwc_of(w, c->cout, c->cin, kk);
      float *dx = up(&p, x, nx), *dw = up(&p, cs[i].hwc ? wh : w, nw);
      float *db = up(&p, bias, c->cout), *dch = up(&p, ch, c->b * c->cout);
      float *dres = up(&p, res, ny), *dy = up(&p, yc, ny);
      a.y_bstride = ys;
      a.x = x, a.weight = w, a.bias = bias, a.y = yc;
      a.chan_add = ch, a.residual = res;
      ASSERT_OK(p.cpu->iface->conv2d(p.cpu, &a));
      ASSERT_OK(weft_cuda_set_conv_algo(p.gpu, cs[i].algo));
      a.x = dx, a.weight = dw, a.bias = db, a.y = dy, a.w_hwc = cs[i].hwc;
      a.chan_add = dch, a.residual = dres;
      const char *path = weft_cuda_conv2d_path(p.gpu, &a);
      ASSERT(path);
      if (cs[i].hwc && pr && weft_cuda_have_cudnn(p.gpu))
        ASSERT_STR_EQ(path, "cudnn_nhwc");
      ASSERT_OK(p.gpu->iface->conv2d(p.gpu, &a));
      char what[96];
      snprintf(what, sizeof what, "conv epilogue #%zu [%s]", i, path);
      check(&p, what, dy, yc, ny, 0, p.tol_sum);
      a.residual = dy; /* overlapping y: refused */
      ASSERT_EQ(p.gpu->iface->conv2d(p.gpu, &a), WEFT_EINVAL);
      free(x), free(w), free(bias), free(ch), free(res), free(yc), free(wh);
      dfree(&p, dx), dfree(&p, dw), dfree(&p, db), dfree(&p, dch);
      dfree(&p, dres), dfree(&p, dy);
    }
    ASSERT_OK(weft_cuda_set_conv_algo(p.gpu, WEFT_CUDA_CONV_AUTO));
    teardown(&p);
  }
}

/* A channels-last convolution under the profile: one conv2d row, and its
 * three parts (x moved, cuDNN, y moved back) in a table of their own, one
 * call each per band; the parts' times inside the op's. */
TEST(profile_times_the_channels_last_parts) {
  pair p = setup_prec(WEFT_CUDA_FP16);
  p.lt = false; /* no product here */
  if (!weft_cuda_have_cudnn(p.gpu)) {
    teardown(&p);
    weft_test_skip("no cuDNN");
  }
  const conv_shape c = {2, 32, 24, 24, 64, 3, 3, 1, 1, 1, 1, 1, 1};
  uint64_t s = 5;
  const int64_t nx = 2 * 32 * 24 * 24, nw = 64 * 32 * 9, ny = 2 * 64 * 24 * 24;
  float *hx = rnd(&s, nx, -1, 1), *hw = rnd(&s, nw, -.1f, .1f);
  float *x = up(&p, hx, nx), *w = up(&p, hw, nw), *y = dpoison(&p, ny);
  weft_conv2d_args a = conv_args(&c);
  a.x = x, a.weight = w, a.y = y, a.w_hwc = 1;
  ASSERT_STR_EQ(weft_cuda_conv2d_path(p.gpu, &a), "cudnn_nhwc");
  ASSERT_OK(weft_cuda_profile_start(p.gpu));
  for (int i = 0; i < 2; i++)
    ASSERT_OK(p.gpu->iface->conv2d(p.gpu, &a));
  char *text = profile_text(p.gpu, "parts");
  ASSERT_CONTAINS(text, "### parts\n\n2 ops, ");
  ASSERT_CONTAINS(text, "| conv2d 32x24x24 -> 64, 3x3/1, batch 2 | 2 | ");
  ASSERT_CONTAINS(text, "Parts of the ops above");
  ASSERT_CONTAINS(text, "| conv2d nhwc x moved, 32x24x24 -> 64 | 2 | ");
  ASSERT_CONTAINS(text, "| conv2d nhwc y moved back, 32x24x24 -> 64 | 2 | ");
  ASSERT_CONTAINS(text, "| conv2d nhwc cuDNN (");
  free(text), free(hx), free(hw);
  dfree(&p, x), dfree(&p, w), dfree(&p, y);
  /* an 8x8 map: the split-K product in cuDNN's place */
  const conv_shape c8 = {2, 256, 8, 8, 128, 3, 3, 1, 1, 1, 1, 1, 1};
  const int64_t nx8 = 2 * 256 * 64, nw8 = 128 * 256 * 9, ny8 = 2 * 128 * 64;
  hx = rnd(&s, nx8, -1, 1), hw = rnd(&s, nw8, -.1f, .1f);
  x = up(&p, hx, nx8), w = up(&p, hw, nw8), y = dpoison(&p, ny8);
  a = conv_args(&c8);
  a.x = x, a.weight = w, a.y = y, a.w_hwc = 1;
  ASSERT_STR_EQ(weft_cuda_conv2d_path(p.gpu, &a), "nhwc_splitk");
  ASSERT_OK(weft_cuda_profile_start(p.gpu));
  ASSERT_OK(p.gpu->iface->conv2d(p.gpu, &a));
  text = profile_text(p.gpu, "split-K parts");
  ASSERT_CONTAINS(text, "| conv2d nhwc x moved, 256x8x8 -> 128 | 1 | ");
  ASSERT_CONTAINS(text, "| conv2d nhwc split-K product, 256x8x8 -> 128 | 1 | ");
  ASSERT_CONTAINS(text, "| conv2d nhwc y moved back, 256x8x8 -> 128 | 1 | ");
  ASSERT(!strstr(text, "cuDNN ("));
  free(text), free(hx), free(hw);
  dfree(&p, x), dfree(&p, w), dfree(&p, y);
  teardown(&p);
}

/* weft_cuda_plan_stats: a plan is counted (and timed) when a shape is
 * first seen, not when it is met again. */
TEST(plan_stats_count_first_calls) {
  pair p = setup_prec(WEFT_CUDA_FP16);
  weft_cuda_plan_stats st0, st1, st2;
  ASSERT_EQ(weft_cuda_plan_stats_get(p.cpu, &st0), WEFT_EINVAL);
  ASSERT_OK(weft_cuda_plan_stats_get(p.gpu, &st0));
  const conv_shape c = {2, 32, 12, 12, 64, 3, 3, 1, 1, 1, 1, 1, 1};
  uint64_t s = 77;
  const int64_t nx = 2 * 32 * 144, nw = 64 * 32 * 9, ny = 2 * 64 * 144;
  float *hx = rnd(&s, nx, -1, 1), *hw = rnd(&s, nw, -.1f, .1f);
  float *x = up(&p, hx, nx), *w = up(&p, hw, nw), *y = dpoison(&p, ny);
  weft_conv2d_args a = conv_args(&c);
  a.x = x, a.weight = w, a.y = y, a.w_hwc = 1;
  weft_gemm_args g = {.m = 64,
                      .n = 96,
                      .k = 40,
                      .alpha = 1.0f,
                      .a = x,
                      .lda = 40,
                      .b = x,
                      .ldb = 96,
                      .c = y,
                      .ldc = 96};
  ASSERT_OK(p.gpu->iface->conv2d(p.gpu, &a));
  ASSERT_OK(p.gpu->iface->gemm(p.gpu, &g));
  ASSERT_OK(weft_cuda_plan_stats_get(p.gpu, &st1));
  const bool dnn = weft_cuda_have_cudnn(p.gpu);
  ASSERT_EQ(st1.cudnn_plans, st0.cudnn_plans + (dnn ? 1 : 0));
  ASSERT_EQ(st1.lt_plans, st0.lt_plans + (dnn ? 1 : 2)); /* im2col: 2 */
  ASSERT(st1.cudnn_s >= st0.cudnn_s && st1.lt_s > st0.lt_s);
  ASSERT_OK(p.gpu->iface->conv2d(p.gpu, &a));
  ASSERT_OK(p.gpu->iface->gemm(p.gpu, &g));
  ASSERT_OK(weft_cuda_plan_stats_get(p.gpu, &st2));
  ASSERT_EQ(st2.cudnn_plans, st1.cudnn_plans);
  ASSERT_EQ(st2.lt_plans, st1.lt_plans);
  ASSERT(st2.cudnn_s == st1.cudnn_s && st2.lt_s == st1.lt_s);
  free(hx), free(hw);
  dfree(&p, x), dfree(&p, w), dfree(&p, y);
  teardown(&p);
}

/* WEFT_CUDA_CONV names the way for a backend made with AUTO; a bad value
 * is refused by name. */
TEST(conv_algo_from_the_environment) {
  if (!weft_cuda_available()) weft_test_skip("no CUDA device");
  weft_cuda_options o;
  weft_cuda_options_init(&o);
  o.precision = WEFT_CUDA_FP16;
  char err[256] = "";
  setenv("WEFT_CUDA_CONV", "bogus", 1);
  ASSERT(weft_backend_cuda_new_ex(&o, err, sizeof err) == NULL);
  ASSERT_CONTAINS(err, "WEFT_CUDA_CONV=bogus");
  setenv("WEFT_CUDA_CONV", "im2col", 1);
  weft_backend *be = weft_backend_cuda_new_ex(&o, err, sizeof err);
  unsetenv("WEFT_CUDA_CONV");
  ASSERT(be);
  /* few output channels: the direct kernel by default, not when asked */
  const conv_shape c = {1, 16, 12, 12, 4, 3, 3, 1, 1, 1, 1, 1, 1};
  weft_conv2d_args a = conv_args(&c);
  a.x = a.weight = a.y = (float *)256; /* never run: only its way */
  ASSERT_STR_EQ(weft_cuda_conv2d_path(be, &a), "im2col");
  ASSERT_OK(weft_cuda_set_conv_algo(be, WEFT_CUDA_CONV_AUTO));
  ASSERT_STR_EQ(weft_cuda_conv2d_path(be, &a), "direct");
  o.conv_algo = WEFT_CUDA_CONV_IM2COL; /* set explicitly: the env is not read */
  setenv("WEFT_CUDA_CONV", "cudnn", 1);
  weft_backend *be2 = weft_backend_cuda_new_ex(&o, err, sizeof err);
  unsetenv("WEFT_CUDA_CONV");
  ASSERT(be2);
  ASSERT_STR_EQ(weft_cuda_conv2d_path(be2, &a), "im2col");
  weft_backend_free(be);
  weft_backend_free(be2);
}

/* The direct kernel adds its input-channel slices in a fixed order: the
 * VAE's conv_out twice, bit for bit, in each precision. */
TEST(direct_conv_repeats_bit_for_bit) {
  for (int pr = 0; pr < 3; pr++) {
    pair p = setup_prec(pr == 0   ? WEFT_CUDA_FP32
                        : pr == 1 ? WEFT_CUDA_FP16
                                  : WEFT_CUDA_BF16);
    p.lt = false;
    const conv_shape c = {1, 128, 96, 80, 3, 3, 3, 1, 1, 1, 1, 1, 1};
    uint64_t s = 1234;
    const int64_t nx = 128 * 96 * 80, nw = 3 * 128 * 9, ny = 3 * 96 * 80;
    float *x = rnd(&s, nx, -1, 1), *w = rnd(&s, nw, -0.03f, 0.03f);
    weft_conv2d_args a = conv_args(&c);
    a.x = up(&p, x, nx);
    a.weight = up(&p, w, nw);
    float *y[2];
    for (int k = 0; k < 2; k++) {
      a.y = y[k] = dpoison(&p, ny);
      ASSERT_STR_EQ(weft_cuda_conv2d_path(p.gpu, &a), "direct");
      ASSERT_OK(p.gpu->iface->conv2d(p.gpu, &a));
    }
    float *h0 = down(&p, y[0], ny), *h1 = down(&p, y[1], ny);
    ASSERT(memcmp(h0, h1, (size_t)ny * sizeof(float)) == 0);
    printf("conv 128x96x80 -> 3 [direct] twice (%s)    bit-exact\n",
           weft_cuda_precision_name(p.prec));
    free(h0), free(h1), free(x), free(w);
    dfree(&p, y[0]), dfree(&p, y[1]);
    dfree(&p, (void *)a.x), dfree(&p, (void *)a.weight);
    teardown(&p);
  }
}

/* weft_cuda_set_scratch_limit: a convolution whose cuDNN scratch (16-bit
 * x and y, 16 MiB each here, and the workspace) passes a quarter of the
 * limit goes through im2col's blocks; 0 lifts the limit. */
TEST(scratch_limit_sends_big_convolutions_to_im2col) {
  pair p = setup_prec(WEFT_CUDA_FP16);
  p.lt = false;
  if (!weft_cuda_have_cudnn(p.gpu)) {
    teardown(&p);
    weft_test_skip("built without cuDNN");
  }
  const conv_shape c = {1, 128, 256, 256, 128, 3, 3, 1, 1, 1, 1, 1, 1};
  weft_conv2d_args a = conv_args(&c);
  a.x = a.weight = a.y = (float *)256; /* never run: only its way */
  ASSERT_STR_EQ(weft_cuda_conv2d_path(p.gpu, &a), "cudnn16");
  const size_t big = p.gpu->iface->conv2d_scratch_bytes(p.gpu, &a);
  ASSERT(big >= ((size_t)32 << 20));
  ASSERT_OK(weft_cuda_set_scratch_limit(p.gpu, 4 * big));
  ASSERT_STR_EQ(weft_cuda_conv2d_path(p.gpu, &a), "cudnn16");
  ASSERT_OK(weft_cuda_set_scratch_limit(p.gpu, 4 * big - 1));
  ASSERT_STR_EQ(weft_cuda_conv2d_path(p.gpu, &a), "im2col");
  ASSERT(p.gpu->iface->conv2d_scratch_bytes(p.gpu, &a) <= ((size_t)64 << 20));
  ASSERT_OK(weft_cuda_set_scratch_limit(p.gpu, 0));
  ASSERT_STR_EQ(weft_cuda_conv2d_path(p.gpu, &a), "cudnn16");
  ASSERT_EQ(weft_cuda_set_scratch_limit(p.cpu, 1), WEFT_EINVAL);
  teardown(&p);
}

TEST(fp16_attention_odd_shapes) {
  pair p = setup_prec(WEFT_CUDA_FP16);
  attention_odd_shapes_body(&p);
  teardown(&p);
}

TEST(fp16_attention_sd_shapes) {
  pair p = setup_prec(WEFT_CUDA_FP16);
  p.lt = false; /* every SD shape is fused (attention_case asserts it) */
  attention_sd_shapes_body(&p);
  teardown(&p);
}

/* The same shapes on the unfused path (two cuBLASLt products), which the
 * fused kernel replaced for d == dv <= 160: both stay within tolerance. */
static void unfused_attention(weft_cuda_precision prec) {
  pair p = setup_prec(prec);
  p.fused = false;
  ASSERT_OK(weft_cuda_set_fused_attention(p.gpu, false));
  attention_odd_shapes_body(&p);
  attention_sd_shapes_body(&p);
  teardown(&p);
}

TEST(fp16_attention_unfused) {
  unfused_attention(WEFT_CUDA_FP16);
}

TEST(bf16_attention_unfused) {
  unfused_attention(WEFT_CUDA_BF16);
}

TEST(bf16_gemm) {
  pair p = setup_prec(WEFT_CUDA_BF16);
  gemm_odd_shapes_all_transposes_body(&p);
  gemm_beta_zero_ignores_nan_and_k_zero_scales_body(&p);
  gemm_sd_shapes_body(&p);
  teardown(&p);
}

TEST(bf16_linear) {
  pair p = setup_prec(WEFT_CUDA_BF16);
  linear_sd_and_odd_shapes_body(&p);
  teardown(&p);
}

TEST(bf16_conv2d_odd_and_strided) {
  pair p = setup_prec(WEFT_CUDA_BF16);
  conv2d_odd_shapes_auto_body(&p);
  conv2d_strided_buffers_and_scratch_body(&p);
  teardown(&p);
}

TEST(bf16_conv2d_sd_shapes) {
  pair p = setup_prec(WEFT_CUDA_BF16);
  conv2d_sd_shapes_auto_body(&p);
  teardown(&p);
}

TEST(bf16_conv2d_sd_shapes_im2col) {
  pair p = setup_prec(WEFT_CUDA_BF16);
  conv2d_sd_shapes_im2col_body(&p);
  teardown(&p);
}

TEST(bf16_attention_odd_shapes) {
  pair p = setup_prec(WEFT_CUDA_BF16);
  attention_odd_shapes_body(&p);
  teardown(&p);
}

TEST(bf16_attention_sd_shapes) {
  pair p = setup_prec(WEFT_CUDA_BF16);
  p.lt = false; /* every SD shape is fused (attention_case asserts it) */
  attention_sd_shapes_body(&p);
  teardown(&p);
}

/* ---- precision mode and half weights --------------------------------------
 */

/* WEFT_PRECISION picks the precision of a new backend, options override
 * it, a bad value names the variable; the default is FP16. */
TEST(precision_default_env_and_options) {
  if (!weft_cuda_available()) weft_test_skip("no CUDA device");
  const char *old = getenv("WEFT_PRECISION");
  char *saved = old ? strdup(old) : NULL;
  static const struct {
    const char *env;
    weft_cuda_precision want;
  } cs[] = {{NULL, WEFT_CUDA_FP16},
            {"fp32", WEFT_CUDA_FP32},
            {"fp16", WEFT_CUDA_FP16},
            {"bf16", WEFT_CUDA_BF16}};
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
    if (cs[i].env)
      setenv("WEFT_PRECISION", cs[i].env, 1);
    else
      unsetenv("WEFT_PRECISION");
    weft_backend *be = weft_backend_cuda_new(0);
    ASSERT(be);
    ASSERT_EQ(weft_cuda_get_precision(be), cs[i].want);
    weft_backend_free(be);
  }
  /* explicit options win over the environment */
  setenv("WEFT_PRECISION", "bf16", 1);
  weft_cuda_options o;
  weft_cuda_options_init(&o);
  ASSERT_EQ(o.precision, WEFT_CUDA_PRECISION_AUTO);
  o.precision = WEFT_CUDA_FP32;
  char err[256] = "";
  weft_backend *be = weft_backend_cuda_new_ex(&o, err, sizeof err);
  ASSERT(be);
  ASSERT_EQ(weft_cuda_get_precision(be), WEFT_CUDA_FP32);
  ASSERT_OK(weft_cuda_set_precision(be, WEFT_CUDA_BF16));
  ASSERT_EQ(weft_cuda_get_precision(be), WEFT_CUDA_BF16);
  ASSERT_EQ(weft_cuda_set_precision(be, WEFT_CUDA_PRECISION_AUTO), WEFT_EINVAL);
  ASSERT_EQ(weft_cuda_set_precision(be, (weft_cuda_precision)7), WEFT_EINVAL);
  ASSERT_EQ(weft_cuda_get_precision(be), WEFT_CUDA_BF16);
  weft_backend_free(be);
  /* a bad value fails the constructor and says which variable */
  setenv("WEFT_PRECISION", "fp8", 1);
  o.precision = WEFT_CUDA_PRECISION_AUTO;
  be = weft_backend_cuda_new_ex(&o, err, sizeof err);
  ASSERT(be == NULL);
  ASSERT_CONTAINS(err, "WEFT_PRECISION");
  ASSERT_CONTAINS(err, "fp8");
  printf("message: %s\n", err);
  if (saved)
    setenv("WEFT_PRECISION", saved, 1);
  else
    unsetenv("WEFT_PRECISION");
  free(saved);
  ASSERT_STR_EQ(weft_cuda_precision_name(WEFT_CUDA_BF16), "bf16");
  ASSERT_EQ(weft_cuda_get_precision(NULL), WEFT_CUDA_FP32);
}

/* The registry of half-weight ranges: lookups inside and outside, the
 * type recorded at marking, overlaps and unknown ranges refused. */
TEST(half_weight_registry) {
  pair p = setup_prec(WEFT_CUDA_FP16);
  weft_backend *be = p.gpu;
  unsigned char *blk = be->iface->buffer_alloc(be, 4096);
  ASSERT(blk);
  ASSERT_EQ(weft_cuda_half_dtype(be, blk), WEFT_F32);
  ASSERT_OK(weft_cuda_mark_half(be, blk + 1024, 1024)); /* fp16 */
  ASSERT_OK(weft_cuda_set_precision(be, WEFT_CUDA_BF16));
  ASSERT_OK(weft_cuda_mark_half(be, blk, 512)); /* bf16 */
  ASSERT_OK(weft_cuda_mark_half_as(be, blk + 3000, 10, WEFT_F16));
  ASSERT_EQ(weft_cuda_half_dtype(be, blk), WEFT_BF16);
  ASSERT_EQ(weft_cuda_half_dtype(be, blk + 511), WEFT_BF16);
  ASSERT_EQ(weft_cuda_half_dtype(be, blk + 512), WEFT_F32);
  ASSERT_EQ(weft_cuda_half_dtype(be, blk + 1023), WEFT_F32);
  ASSERT_EQ(weft_cuda_half_dtype(be, blk + 1024), WEFT_F16);
  ASSERT_EQ(weft_cuda_half_dtype(be, blk + 2047), WEFT_F16);
  ASSERT_EQ(weft_cuda_half_dtype(be, blk + 2048), WEFT_F32);
  ASSERT_EQ(weft_cuda_half_dtype(be, blk + 3009), WEFT_F16);
  ASSERT_EQ(weft_cuda_half_dtype(be, blk + 3010), WEFT_F32);
  /* overlaps (either side, inside, around) and bad arguments */
  ASSERT_EQ(weft_cuda_mark_half(be, blk + 2000, 100), WEFT_EINVAL);
  ASSERT_EQ(weft_cuda_mark_half(be, blk + 1500, 10), WEFT_EINVAL);
  ASSERT_EQ(weft_cuda_mark_half(be, blk + 1000, 4000), WEFT_EINVAL);
  ASSERT_EQ(weft_cuda_mark_half(be, blk + 500, 20), WEFT_EINVAL);
  ASSERT_EQ(weft_cuda_mark_half(be, blk + 2048, 0), WEFT_EINVAL);
  ASSERT_EQ(weft_cuda_mark_half(be, NULL, 16), WEFT_EINVAL);
  ASSERT_EQ(weft_cuda_mark_half_as(be, blk + 2048, 16, WEFT_F32), WEFT_EINVAL);
  ASSERT_EQ(weft_cuda_mark_half(p.cpu, blk + 2048, 16), WEFT_EINVAL);
  ASSERT_OK(weft_cuda_set_precision(be, WEFT_CUDA_FP32));
  ASSERT_EQ(weft_cuda_mark_half(be, blk + 2048, 16), WEFT_EINVAL);
  ASSERT_CONTAINS(weft_cuda_last_error(be), "fp32");
  /* the ranges keep their type whatever the precision now */
  ASSERT_EQ(weft_cuda_half_dtype(be, blk + 1024), WEFT_F16);
  /* unmark: by start only */
  ASSERT_EQ(weft_cuda_unmark_half(be, blk + 1025), WEFT_EINVAL);
  ASSERT_OK(weft_cuda_unmark_half(be, blk + 1024));
  ASSERT_EQ(weft_cuda_unmark_half(be, blk + 1024), WEFT_EINVAL);
  ASSERT_EQ(weft_cuda_half_dtype(be, blk + 1500), WEFT_F32);
  ASSERT_EQ(weft_cuda_half_dtype(be, blk + 100), WEFT_BF16);
  /* many ranges: sorted insertion from both ends */
  unsigned char *big = be->iface->buffer_alloc(be, 1 << 20);
  ASSERT(big);
  for (int i = 0; i < 200; i++) {
    int j = i % 2 ? 199 - i / 2 : i / 2;
    ASSERT_OK(weft_cuda_mark_half_as(be, big + j * 4096, 2048,
                                     j % 3 ? WEFT_F16 : WEFT_BF16));
  }
  for (int j = 0; j < 200; j++) {
    ASSERT_EQ(weft_cuda_half_dtype(be, big + j * 4096 + 2047),
              j % 3 ? WEFT_F16 : WEFT_BF16);
    ASSERT_EQ(weft_cuda_half_dtype(be, big + j * 4096 + 2048), WEFT_F32);
  }
  for (int j = 0; j < 200; j++)
    ASSERT_OK(weft_cuda_unmark_half(be, big + j * 4096));
  ASSERT_OK(weft_cuda_unmark_half(be, blk));
  ASSERT_OK(weft_cuda_unmark_half(be, blk + 3000));
  dfree(&p, big);
  dfree(&p, blk);
  /* no products ran: not teardown, which checks that they did */
  ASSERT_OK(be->iface->synchronize(be));
  weft_backend_free(p.gpu);
  weft_backend_free(p.cpu);
}

/* A device buffer of `pad` + n 16-bit values of type dt: the fp32 weights
 * w converted on the device, starting at element `pad` (pad 1 leaves them
 * only 2-byte aligned).  The block is marked half as dt. */
static uint16_t *marked_block(pair *p, const float *dw, int64_t n, int64_t pad,
                              weft_dtype dt, void **block) {
  uint16_t *b = p->gpu->iface->buffer_alloc(p->gpu, (size_t)(n + pad) * 2);
  ASSERT(b);
  ASSERT_OK(p->gpu->iface->convert(p->gpu, b + pad, dt, dw, WEFT_F32, n));
  ASSERT_OK(weft_cuda_mark_half_as(p->gpu, b, (size_t)(n + pad) * 2, dt));
  ASSERT_EQ(weft_cuda_half_dtype(p->gpu, b + pad), dt);
  *block = b;
  return b + pad;
}

static void unmark_free(pair *p, void *block) {
  ASSERT_OK(weft_cuda_unmark_half(p->gpu, block));
  dfree(p, block);
}

/* linear, 3x3 conv, 1x1 conv and a batched GEMM with weights stored as
 * 16-bit wdt (marked) against the CPU on inputs rounded as the GPU rounds
 * them (weights to wdt, activations to the compute type, none in FP32
 * precision where marked weights are widened) and, where wdt is the
 * compute type, against the same weights given as fp32 (rounded on each
 * call).  Weights at offset 0 and at an odd element offset. */
static void half_weights_case(weft_cuda_precision prec, weft_dtype wdt) {
  pair p = setup_prec(prec);
  uint64_t s = 300 + (uint64_t)prec * 10 + (uint64_t)wdt;
  const bool widen = prec == WEFT_CUDA_FP32;
  for (int64_t pad = 0; pad < 2; pad++) {
    char tag[64];
    snprintf(tag, sizeof tag, "%s weights in %s, offset %lld",
             wdt == WEFT_BF16 ? "bf16" : "fp16", weft_cuda_precision_name(prec),
             (long long)pad);
    /* linear 154x768 -> 320 + bias, the bias marked too */
    {
      const int64_t rows = 154, in = 768, out = 320;
      float *x = rnd(&s, rows * in, -1, 1), *w = rnd(&s, out * in, -.2f, .2f);
      float *b = rnd(&s, out, -1, 1), *yc = hnan(rows * out);
      float *dx = up(&p, x, rows * in), *dw = up(&p, w, out * in),
            *db = up(&p, b, out), *dy1 = dpoison(&p, rows * out),
            *dy2 = dpoison(&p, rows * out);
      void *wblk, *bblk;
      const float *wh =
          (const float *)marked_block(&p, dw, out * in, pad, wdt, &wblk);
      const float *bh =
          (const float *)marked_block(&p, db, out, pad, wdt, &bblk);
      ASSERT_OK(p.gpu->iface->linear(p.gpu, dx, rows, in, wh, bh, out, dy1));
      float *x16 = rounded(&p, x, rows * in, p.dt);
      float *w16 = rounded(&p, w, out * in, wdt),
            *b16 = rounded(&p, b, out, wdt);
      ASSERT_OK(p.cpu->iface->linear(p.cpu, x16, rows, in, w16, b16, out, yc));
      char what[160];
      snprintf(what, sizeof what, "linear marked vs cpu rounded (%s)", tag);
      check(&p, what, dy1, yc, rows * out, 0, TOL_SUM_MAX);
      if (!widen && wdt == p.dt) { /* fp32 weights rounded per call */
        ASSERT_OK(p.gpu->iface->linear(p.gpu, dx, rows, in, dw, bh, out, dy2));
        float *g1 = down(&p, dy1, rows * out);
        snprintf(what, sizeof what, "linear marked vs fp32 weights (%s)", tag);
        check(&p, what, dy2, g1, rows * out, 0, TOL_SUM_MAX);
        free(g1);
      }
      unmark_free(&p, wblk);
      unmark_free(&p, bblk);
      dfree(&p, dx);
      dfree(&p, dw);
      dfree(&p, db);
      dfree(&p, dy1);
      dfree(&p, dy2);
      free(x);
      free(w);
      free(b);
      free(yc);
      free(x16);
      free(w16);
      free(b16);
    }
    /* conv 3x3 (cuDNN where built in; asymmetric padding: im2col) and 1x1
     * (GEMM), bias fp32 */
    static const conv_shape cs[] = {
        {2, 64, 16, 16, 48, 3, 3, 1, 1, 1, 1, 1, 1},
        {2, 96, 8, 8, 40, 1, 1, 1, 1, 0, 0, 0, 0},
        {1, 8, 9, 10, 6, 3, 3, 2, 2, 0, 0, 1, 1},
    };
    for (size_t ci = 0; ci < sizeof cs / sizeof cs[0]; ci++) {
      const conv_shape *c = &cs[ci];
      weft_conv2d_args a = conv_args(c);
      int64_t ho = weft_conv2d_out_size(c->h, c->kh, c->sh, c->pt, c->pb);
      int64_t wo = weft_conv2d_out_size(c->w, c->kw, c->sw, c->pl, c->pr);
      int64_t nx = c->b * c->cin * c->h * c->w,
              nw = c->cout * c->cin * c->kh * c->kw,
              ny = c->b * c->cout * ho * wo;
      float bound = 1.0f / sqrtf((float)(c->cin * c->kh * c->kw));
      float *x = rnd(&s, nx, -1, 1), *w = rnd(&s, nw, -bound, bound);
      float *bias = rnd(&s, c->cout, -1, 1), *yc = hnan(ny);
      float *dx = up(&p, x, nx), *dw = up(&p, w, nw),
            *db = up(&p, bias, c->cout), *dy1 = dpoison(&p, ny),
            *dy2 = dpoison(&p, ny);
      void *wblk;
      const float *wh =
          (const float *)marked_block(&p, dw, nw, pad, wdt, &wblk);
      ASSERT_OK(weft_cuda_set_conv_algo(p.gpu, WEFT_CUDA_CONV_AUTO));
      a.x = dx;
      a.weight = wh;
      a.bias = db;
      a.y = dy1;
      const char *path = weft_cuda_conv2d_path(p.gpu, &a);
      ASSERT(path);
      ASSERT_OK(p.gpu->iface->conv2d(p.gpu, &a));
      float *x16 = rounded(&p, x, nx, p.dt);
      float *w16 = rounded(&p, w, nw, wdt);
      weft_conv2d_args ac = a;
      ac.x = x16;
      ac.weight = w16;
      ac.bias = bias;
      ac.y = yc;
      ASSERT_OK(p.cpu->iface->conv2d(p.cpu, &ac));
      char what[160];
      snprintf(what, sizeof what, "conv #%zu [%s] marked vs cpu rounded (%s)",
               ci, path, tag);
      conv_rounded_check(&p, what, path, dy1, yc, bias, c->b, c->cout, ho * wo);
      if (p.dt != WEFT_F32) { /* the im2col path reads it too */
        ASSERT_OK(weft_cuda_set_conv_algo(p.gpu, WEFT_CUDA_CONV_IM2COL));
        a.y = dy2;
        const char *ip = weft_cuda_conv2d_path(p.gpu, &a);
        ASSERT(ip);
        ASSERT_OK(p.gpu->iface->conv2d(p.gpu, &a));
        snprintf(what, sizeof what, "conv #%zu [%s] marked vs cpu rounded (%s)",
                 ci, ip, tag);
        conv_rounded_check(&p, what, ip, dy2, yc, bias, c->b, c->cout, ho * wo);
        ASSERT_OK(weft_cuda_set_conv_algo(p.gpu, WEFT_CUDA_CONV_AUTO));
      }
      if (!widen && wdt == p.dt) {
        a.weight = dw;
        a.y = dy2;
        ASSERT_OK(p.gpu->iface->conv2d(p.gpu, &a));
        float *g1 = down(&p, dy1, ny);
        snprintf(what, sizeof what, "conv #%zu marked vs fp32 weights (%s)", ci,
                 tag);
        check(&p, what, dy2, g1, ny, 0, TOL_SUM_MAX);
        free(g1);
      }
      unmark_free(&p, wblk);
      dfree(&p, dx);
      dfree(&p, dw);
      dfree(&p, db);
      dfree(&p, dy1);
      dfree(&p, dy2);
      free(x);
      free(w);
      free(bias);
      free(yc);
      free(x16);
      free(w16);
    }
    /* batched GEMM, shared weight as B (trans_b, stride 0) */
    {
      const int64_t m = 300, n = 96, k = 160, batch = 2;
      float *ha = rnd(&s, batch * m * k, -1, 1), *hb = rnd(&s, n * k, -1, 1);
      float *hc = hnan(batch * m * n);
      float *da = up(&p, ha, batch * m * k), *db = up(&p, hb, n * k),
            *dc = dpoison(&p, batch * m * n);
      void *bblk;
      const float *bh =
          (const float *)marked_block(&p, db, n * k, pad, wdt, &bblk);
      weft_gemm_args g = {.m = m,
                          .n = n,
                          .k = k,
                          .trans_b = 1,
                          .alpha = 1.0f,
                          .lda = k,
                          .ldb = k,
                          .ldc = n,
                          .batch = batch,
                          .stride_a = m * k,
                          .stride_b = 0,
                          .stride_c = m * n};
      weft_gemm_args gg = g, gc = g;
      gg.a = da;
      gg.b = bh;
      gg.c = dc;
      ASSERT_OK(p.gpu->iface->gemm(p.gpu, &gg));
      float *a16 = rounded(&p, ha, batch * m * k, p.dt);
      float *b16 = rounded(&p, hb, n * k, wdt);
      gc.a = a16;
      gc.b = b16;
      gc.c = hc;
      ASSERT_OK(p.cpu->iface->gemm(p.cpu, &gc));
      char what[160];
      snprintf(what, sizeof what, "gemm b2 marked B vs cpu rounded (%s)", tag);
      check(&p, what, dc, hc, batch * m * n, 0, TOL_SUM_MAX);
      unmark_free(&p, bblk);
      dfree(&p, da);
      dfree(&p, db);
      dfree(&p, dc);
      free(ha);
      free(hb);
      free(hc);
      free(a16);
      free(b16);
    }
  }
  teardown(&p);
}

TEST(half_weights_fp16) {
  half_weights_case(WEFT_CUDA_FP16, WEFT_F16);
}

TEST(half_weights_bf16) {
  half_weights_case(WEFT_CUDA_BF16, WEFT_BF16);
}

/* bf16 weights on an fp16 backend: rounded to fp16 on the fly (every
 * bf16 weight here but the tiniest is exact in fp16) */
TEST(half_weights_bf16_on_fp16_backend) {
  half_weights_case(WEFT_CUDA_FP16, WEFT_BF16);
}

TEST(half_weights_widened_in_fp32) {
  half_weights_case(WEFT_CUDA_FP32, WEFT_F16);
}

/* A model-like loop in 16-bit precision (linear with marked and fp32
 * weights, a 3x3 conv on the default path (cuDNN where built in) and on
 * im2col with the scratch it asks for, a 1x1 conv, GEMM, attention, group
 * norm) makes no cudaMalloc after its second step: the cuBLASLt workspace
 * and every 16-bit scratch come from the cache. */
static void steady_state_16(weft_cuda_precision prec) {
  pair p = setup_prec(prec);
  uint64_t s = 400;
  const int64_t c = 64, hw = 16 * 16, tok = 2 * hw;
  float *hx = rnd(&s, 2 * c * hw, -1, 1), *hw3 = rnd(&s, c * c * 9, -.1f, .1f);
  float *hl = rnd(&s, c * c, -.1f, .1f);
  float *x = up(&p, hx, 2 * c * hw), *w = up(&p, hw3, c * c * 9),
        *wl = up(&p, hl, c * c);
  void *blk;
  const float *wlh = (const float *)marked_block(&p, wl, c * c, 0, p.dt, &blk);
  /* Two warm-up steps: the cache's best fit may hand a block made for a
   * later request of step 0 to an earlier one of step 1 (then that later
   * request makes one more); from then on each request finds its block. */
  uint64_t counts[6] = {0};
  for (int it = 0; it < 6; it++) {
    float *y = p.gpu->iface->buffer_alloc(p.gpu, (size_t)(2 * c * hw) * 4);
    float *t = p.gpu->iface->buffer_alloc(p.gpu, (size_t)(2 * c * hw) * 4);
    float *u = p.gpu->iface->buffer_alloc(p.gpu, (size_t)(2 * c * hw) * 4);
    ASSERT(y && t && u);
    ASSERT_OK(p.gpu->iface->group_norm(p.gpu, x, t, 2, c, hw, 32, 1e-5f, NULL,
                                       NULL, WEFT_ACT_SILU));
    weft_conv2d_args a = {.batch = 2,
                          .c_in = c,
                          .h_in = 16,
                          .w_in = 16,
                          .c_out = c,
                          .k_h = 3,
                          .k_w = 3,
                          .stride_h = 1,
                          .stride_w = 1,
                          .pad_top = 1,
                          .pad_left = 1,
                          .pad_bottom = 1,
                          .pad_right = 1,
                          .x = t,
                          .weight = w,
                          .y = y};
    ASSERT_OK(p.gpu->iface->conv2d(p.gpu, &a));
    ASSERT_OK(weft_cuda_set_conv_algo(p.gpu, WEFT_CUDA_CONV_IM2COL));
    weft_conv2d_args ai = a; /* scratch as a planner would give it */
    ai.scratch_bytes = p.gpu->iface->conv2d_scratch_bytes(p.gpu, &ai);
    ASSERT(ai.scratch_bytes > 0);
    ai.scratch = p.gpu->iface->buffer_alloc(p.gpu, ai.scratch_bytes);
    ASSERT(ai.scratch);
    ASSERT_OK(p.gpu->iface->conv2d(p.gpu, &ai));
    dfree(&p, ai.scratch);
    ASSERT_OK(weft_cuda_set_conv_algo(p.gpu, WEFT_CUDA_CONV_AUTO));
    if (it == 0)
      printf("3x3 conv on [%s], then on [im2col]\n",
             weft_cuda_conv2d_path(p.gpu, &a));
    weft_conv2d_args a1 = a;
    a1.k_h = a1.k_w = 1;
    a1.pad_top = a1.pad_left = a1.pad_bottom = a1.pad_right = 0;
    a1.x = y;
    a1.weight = wlh;
    a1.y = t;
    ASSERT_OK(p.gpu->iface->conv2d(p.gpu, &a1));
    ASSERT_OK(p.gpu->iface->linear(p.gpu, t, tok, c, wlh, NULL, c, y));
    ASSERT_OK(p.gpu->iface->linear(p.gpu, y, tok, c, wl, NULL, c, u));
    weft_attn_args at = {.batch = 2,
                         .heads = 2,
                         .lq = hw,
                         .lk = hw,
                         .d = c / 2,
                         .dv = c / 2,
                         .q = u,
                         .k = y,
                         .v = t};
    at.q_s = at.k_s = at.v_s = weft_attn_strides_blhd(2, hw, c / 2);
    float *o = p.gpu->iface->buffer_alloc(p.gpu, (size_t)(2 * c * hw) * 4);
    ASSERT(o);
    at.o = o;
    at.o_s = weft_attn_strides_blhd(2, hw, c / 2);
    ASSERT_OK(p.gpu->iface->attention(p.gpu, &at));
    dfree(&p, o);
    dfree(&p, y);
    dfree(&p, t);
    dfree(&p, u);
    counts[it] = weft_cuda_malloc_count(p.gpu);
  }
  ASSERT_OK(p.gpu->iface->synchronize(p.gpu));
  printf("%s: cudaMalloc calls after each of 6 steps: %llu %llu %llu %llu "
         "%llu %llu\n",
         weft_cuda_precision_name(prec), (unsigned long long)counts[0],
         (unsigned long long)counts[1], (unsigned long long)counts[2],
         (unsigned long long)counts[3], (unsigned long long)counts[4],
         (unsigned long long)counts[5]);
  ASSERT_EQ(weft_cuda_malloc_count(p.gpu), counts[1]);
  unmark_free(&p, blk);
  dfree(&p, x);
  dfree(&p, w);
  dfree(&p, wl);
  free(hx);
  free(hw3);
  free(hl);
  teardown(&p);
}

TEST(steady_state_fp16_makes_no_cudamalloc) {
  steady_state_16(WEFT_CUDA_FP16);
}

TEST(steady_state_bf16_makes_no_cudamalloc) {
  steady_state_16(WEFT_CUDA_BF16);
}

/* ---- TF32 -----------------------------------------------------------------
 */

/* With TF32 allowed a large GEMM is still close (about 1e-3 relative) and
 * switching it off again restores fp32 accuracy. */
/* weft_cuda_start_cudnn: the handle made on a thread of its own; the next
 * convolution waits for it and goes the way it would have (cudnn16 where
 * cuDNN is built in, conv_case asserts the path); a backend freed while
 * the thread may still run waits for it. */
TEST(cudnn_started_in_the_background) {
  pair p = setup_prec(WEFT_CUDA_FP16);
  ASSERT_EQ(weft_cuda_start_cudnn(p.cpu), WEFT_EINVAL);
  ASSERT_OK(weft_cuda_start_cudnn(p.gpu));
  ASSERT_OK(weft_cuda_start_cudnn(p.gpu)); /* again: nothing more */
  const conv_shape c = {2, 64, 32, 32, 64, 3, 3, 1, 1, 1, 1, 1, 1};
  conv_case(&p, "3x3 after a background start", &c, WEFT_CUDA_CONV_AUTO, 290);
  p.lt = !weft_cuda_have_cudnn(p.gpu); /* cudnn16 makes no GEMM */
  teardown(&p);
  weft_backend *be = weft_backend_cuda_new(0);
  ASSERT(be);
  ASSERT_OK(weft_cuda_start_cudnn(be));
  weft_backend_free(be);
}

/* weft_cuda_start_cudnn also loads weft's own kernels on a thread of
 * their own (preload.c): every module's (each has its anchor and its
 * kernels), and a convolution after it gives the values it gives without;
 * WEFT_CUDA_PRELOAD=0 loads none ahead. */
static void preload_case(bool on) {
  setenv("WEFT_CUDA_PRELOAD", on ? "1" : "0", 1); /* read once a process */
  pair p = setup_prec(WEFT_CUDA_FP16);
  ASSERT_OK(weft_cuda_start_cudnn(p.gpu));
  weft_cuda_plan_stats st;
  for (int i = 0; i < 3000; i++) { /* up to 30 s */
    ASSERT_OK(weft_cuda_plan_stats_get(p.gpu, &st));
    if (!on || st.preload_s > 0) break;
    usleep(10000);
  }
  printf("weft's kernels loaded ahead: %llu in %.3f s\n",
         (unsigned long long)st.preloaded, st.preload_s);
  if (on) {
    ASSERT(st.preload_s > 0);
    ASSERT(st.preloaded > 16); /* 8 modules, an anchor and kernels each */
  } else {
    ASSERT_EQ(st.preloaded, 0);
  }
  const conv_shape c = {2, 64, 32, 32, 64, 3, 3, 1, 1, 1, 1, 1, 1};
  conv_case(&p, on ? "3x3, kernels loaded ahead" : "3x3, kernels lazy", &c,
            WEFT_CUDA_CONV_AUTO, 291);
  p.lt = !weft_cuda_have_cudnn(p.gpu);
  teardown(&p);
}

TEST(weft_kernels_loaded_ahead_on_a_thread) {
  preload_case(true);
}

TEST(weft_kernels_left_lazy_with_preload_off) {
  preload_case(false);
}

/* The backend's start is timed; its cuBLAS handle waits for the first
 * product that needs it (an fp32 GEMM; cuBLASLt takes the 16-bit ones),
 * which gives the CPU's values as ever. */
TEST(cublas_handle_made_on_first_use) {
  pair p = setup();
  weft_cuda_plan_stats st;
  ASSERT_OK(weft_cuda_plan_stats_get(p.gpu, &st));
  printf("started: context %.3f s, cuBLASLt %.3f s\n", st.start_context_s,
         st.start_lt_s);
  ASSERT(st.start_context_s > 0 && st.start_lt_s > 0);
  ASSERT(st.start_blas_s == 0);
  const weft_gemm_args g = {.m = 96,
                            .n = 80,
                            .k = 64,
                            .trans_b = 1,
                            .alpha = 1,
                            .lda = 64,
                            .ldb = 64,
                            .ldc = 80};
  /* fp32 precision: cuBLAS's product, within TOL_SUM_MAX of the CPU */
  gemm_case(&p, "gemm 96x80x64, cuBLAS made on first use", g, 292);
  ASSERT_OK(weft_cuda_plan_stats_get(p.gpu, &st));
  printf("cuBLAS handle made in %.3f s\n", st.start_blas_s);
  ASSERT(st.start_blas_s > 0);
  teardown(&p);
}

TEST(tf32_is_opt_in) {
  pair p = setup();
  weft_gemm_args g = {.m = 512,
                      .n = 512,
                      .k = 2048,
                      .trans_b = 1,
                      .alpha = 1,
                      .lda = 2048,
                      .ldb = 2048,
                      .ldc = 512};
  ASSERT_OK(weft_cuda_set_tf32(p.gpu, true));
  uint64_t s = 280;
  float *a = rnd(&s, 512 * 2048, -1, 1), *b = rnd(&s, 512 * 2048, -1, 1);
  float *cc = hnan(512 * 512);
  float *da = up(&p, a, 512 * 2048), *db = up(&p, b, 512 * 2048),
        *dc = dpoison(&p, 512 * 512);
  weft_gemm_args gc = g, gg = g;
  gc.a = a, gc.b = b, gc.c = cc;
  gg.a = da, gg.b = db, gg.c = dc;
  ASSERT_OK(p.cpu->iface->gemm(p.cpu, &gc));
  ASSERT_OK(p.gpu->iface->gemm(p.gpu, &gg));
  check(&p, "gemm 512x512x2048 tf32 allowed", dc, cc, 512 * 512, 0, 1e-2);
  ASSERT_OK(weft_cuda_set_tf32(p.gpu, false));
  ASSERT_OK(p.gpu->iface->gemm(p.gpu, &gg));
  check(&p, "gemm 512x512x2048 tf32 off again", dc, cc, 512 * 512, 0,
        TOL_SUM_MAX);
  dfree(&p, da);
  dfree(&p, db);
  dfree(&p, dc);
  free(a);
  free(b);
  free(cc);
  teardown(&p);
}

/* ---- bounded conv scratch ------------------------------------------------
 * The 16-bit im2col path goes a block of output columns at a time when an
 * image's columns exceed the cap (64 MiB, conv_cuda.c) or the caller's
 * scratch: a VAE decode's 3x3 conv over 128 channels at 512x512 (a 604 MB
 * im2col in 16 bits) asks for at most the cap.  Column blocks against one
 * block: each output column is the same dot product, so the results agree
 * (bit for bit when cuBLASLt keeps its summation order across the widths;
 * printed) and both match the CPU on 16-bit-rounded inputs. */
TEST(fp16_conv2d_column_blocks_equal_one_block) {
  pair p = setup_prec(WEFT_CUDA_FP16);
  ASSERT_OK(weft_cuda_set_conv_algo(p.gpu, WEFT_CUDA_CONV_IM2COL));
  const conv_shape vae = {1, 128, 512, 512, 128, 3, 3, 1, 1, 1, 1, 1, 1};
  weft_conv2d_args va = conv_args(&vae);
  size_t vneed = p.gpu->iface->conv2d_scratch_bytes(p.gpu, &va);
  printf("VAE 512x512 3x3 conv, 128 channels: scratch %zu bytes "
         "(whole im2col %lld)\n",
         vneed, (long long)(1152LL * 512 * 512 * 2));
  ASSERT(vneed > 0 && vneed <= ((size_t)64 << 20));
  /* cuDNN in 16 bits needs the 16-bit x and y whole (and its workspace) */
  ASSERT_OK(weft_cuda_set_conv_algo(p.gpu, WEFT_CUDA_CONV_AUTO));
  const char *vpath = weft_cuda_conv2d_path(p.gpu, &va);
  size_t vauto = p.gpu->iface->conv2d_scratch_bytes(p.gpu, &va);
  printf("the same on [%s]: scratch %zu bytes\n", vpath, vauto);
  if (strcmp(vpath, "cudnn16") == 0)
    ASSERT(vauto >= (size_t)2 * 128 * 512 * 512 * 2);
  ASSERT_OK(weft_cuda_set_conv_algo(p.gpu, WEFT_CUDA_CONV_IM2COL));

  uint64_t s = 91;
  const conv_shape c = {2, 64, 48, 40, 32, 3, 3, 1, 1, 1, 1, 1, 1};
  const int64_t k = 64 * 9, n = 48 * 40, nx = 2 * 64 * 48 * 40, nw = 32 * k,
                ny = 2 * 32 * n;
  float *x = rnd(&s, nx, -1, 1), *w = rnd(&s, nw, -.05f, .05f);
  float *bias = rnd(&s, 32, -1, 1), *yc = hnan(ny);
  float *dx = up(&p, x, nx), *dw = up(&p, w, nw), *db = up(&p, bias, 32);
  float *y1 = dpoison(&p, ny), *y2 = dpoison(&p, ny);
  weft_conv2d_args a = conv_args(&c);
  a.x = dx, a.weight = dw, a.bias = db, a.y = y1;
  ASSERT_EQ(strcmp(weft_cuda_conv2d_path(p.gpu, &a), "im2col"), 0);
  ASSERT_OK(p.gpu->iface->conv2d(p.gpu, &a)); /* both images, one block */
  const size_t sb = (size_t)(k * 256) * 2;    /* 256 columns a block */
  void *scr = p.gpu->iface->buffer_alloc(p.gpu, sb);
  ASSERT(scr);
  a.y = y2, a.scratch = scr, a.scratch_bytes = sb;
  ASSERT_OK(p.gpu->iface->conv2d(p.gpu, &a));
  float *g1 = down(&p, y1, ny), *g2 = down(&p, y2, ny);
  bool same = !memcmp(g1, g2, (size_t)ny * sizeof(float));
  printf("conv 2x64x48x40 3x3: 8 column blocks vs one: %s\n",
         same ? "bit-identical" : "DIFFERS (within tolerance below)");
  compare("conv column blocks vs one block", g2, g1, ny, 0, TOL_SUM_MAX);
  float *x16 = rounded(&p, x, nx, p.dt), *w16 = rounded(&p, w, nw, p.dt);
  weft_conv2d_args ac = conv_args(&c);
  ac.x = x16, ac.weight = w16, ac.bias = bias, ac.y = yc;
  ASSERT_OK(p.cpu->iface->conv2d(p.cpu, &ac));
  compare("conv column blocks vs cpu rounded", g2, yc, ny, 0, TOL_SUM_MAX);
  dfree(&p, scr);
  dfree(&p, dx), dfree(&p, dw), dfree(&p, db), dfree(&p, y1), dfree(&p, y2);
  free(g1), free(g2), free(x16), free(w16);
  free(x), free(w), free(bias), free(yc);
  teardown(&p);
}

/* ---- 16-bit activations (weft_cuda_set_act_dtype) -------------------------
 * Each op runs on two FP16/BF16 backends: `ref` with fp32 activations, `h`
 * with 16-bit ones.  The inputs are 16-bit values (rounded on the host), so
 * both see the same numbers and every product rounds the same operands;
 * what may differ is where values round to 16 bits: h rounds each op's
 * output (and, where a kernel stores an intermediate, that), ref keeps
 * fp32.  Tolerance: |h - ref| <= 3 ulp of the type at |ref| plus 2^-10 of
 * the output's largest magnitude (sums of products whose terms cancel).
 * Where a bias is added to a 16-bit product, the product rounds at its own
 * magnitude, up to |ref| + |bias|, and the ulps are counted there
 * (a16_check_bias's `bias`, the bias's largest magnitude): biases per row
 * (convolutions, proj_out's gemm) are added after the product is stored,
 * as torch's fp16 convolutions add theirs, and cuBLASLt's bias epilogue
 * with a 16-bit D rounds the product before it adds the bias (measured on
 * an H200 in bf16; torch's 16-bit linear runs the same epilogue). */

typedef struct a16 {
  weft_backend *ref, *h, *cpu;
  weft_dtype dt;
  double rel;
  uint64_t seed;
  int min_bands; /* a16_conv: the convolution runs in at least this many */
  bool epi;      /* a16_conv*: with the epilogue (chan_add, residual) */
} a16;

static a16 a16_setup(weft_cuda_precision prec) {
  if (!weft_cuda_available()) weft_test_skip("no CUDA device");
  a16 t;
  t.ref = weft_backend_cuda_new(0);
  t.h = weft_backend_cuda_new(0);
  t.cpu = weft_backend_cpu_new(0);
  ASSERT(t.ref && t.h && t.cpu);
  ASSERT_OK(weft_cuda_set_precision(t.ref, prec));
  ASSERT_OK(weft_cuda_set_precision(t.h, prec));
  t.dt = prec == WEFT_CUDA_BF16 ? WEFT_BF16 : WEFT_F16;
  ASSERT_OK(weft_cuda_set_act_dtype(t.h, t.dt));
  ASSERT_EQ(weft_backend_act_dtype(t.h), t.dt);
  ASSERT_EQ(weft_backend_act_dtype(t.ref), WEFT_F32);
  /* the precision cannot change under 16-bit activations */
  ASSERT_EQ(weft_cuda_set_precision(t.h, WEFT_CUDA_FP32), WEFT_EINVAL);
  t.rel = 3.0 * (t.dt == WEFT_BF16 ? 0x1p-8 : 0x1p-11);
  t.seed = 77;
  t.min_bands = 0;
  t.epi = false;
  return t;
}

static void a16_teardown(a16 *t) {
  ASSERT_OK(t->ref->iface->synchronize(t->ref));
  ASSERT_OK(t->h->iface->synchronize(t->h));
  weft_backend_free(t->ref);
  weft_backend_free(t->h);
  weft_backend_free(t->cpu);
}

/* An activation input of n random 16-bit values in [lo, hi]: *r on ref
 * (fp32), *hd on h (16-bit). */
static void a16_in(a16 *t, int64_t n, float lo, float hi, float **r,
                   float **hd) {
  float *x = rnd(&t->seed, n, lo, hi);
  uint16_t *x16 = malloc((size_t)n * 2);
  ASSERT(x16);
  ASSERT_OK(t->cpu->iface->convert(t->cpu, x16, t->dt, x, WEFT_F32, n));
  ASSERT_OK(t->cpu->iface->convert(t->cpu, x, WEFT_F32, x16, t->dt, n));
  *r = t->ref->iface->buffer_alloc(t->ref, (size_t)n * 4);
  *hd = t->h->iface->buffer_alloc(t->h, (size_t)n * 2);
  ASSERT(*r && *hd);
  ASSERT_OK(t->ref->iface->buffer_copy(t->ref, *r, x, (size_t)n * 4,
                                       WEFT_COPY_HOST_TO_DEVICE));
  ASSERT_OK(t->h->iface->buffer_copy(t->h, *hd, x16, (size_t)n * 2,
                                     WEFT_COPY_HOST_TO_DEVICE));
  free(x), free(x16);
}

/* Outputs: NaN-poisoned (0xffff is a NaN in both 16-bit types). */
static void a16_out(a16 *t, int64_t n, float **r, float **hd) {
  float *nan = hnan(n);
  *r = t->ref->iface->buffer_alloc(t->ref, (size_t)n * 4);
  *hd = t->h->iface->buffer_alloc(t->h, (size_t)n * 2);
  ASSERT(*r && *hd);
  ASSERT_OK(t->ref->iface->buffer_copy(t->ref, *r, nan, (size_t)n * 4,
                                       WEFT_COPY_HOST_TO_DEVICE));
  memset(nan, 0xff, (size_t)n * 2);
  ASSERT_OK(t->h->iface->buffer_copy(t->h, *hd, nan, (size_t)n * 2,
                                     WEFT_COPY_HOST_TO_DEVICE));
  free(nan);
}

/* A weight: the same fp32 values on both backends. */
static void a16_w(a16 *t, int64_t n, float lo, float hi, float **r,
                  float **hd) {
  float *w = rnd(&t->seed, n, lo, hi);
  *r = t->ref->iface->buffer_alloc(t->ref, (size_t)n * 4);
  *hd = t->h->iface->buffer_alloc(t->h, (size_t)n * 4);
  ASSERT(*r && *hd);
  ASSERT_OK(t->ref->iface->buffer_copy(t->ref, *r, w, (size_t)n * 4,
                                       WEFT_COPY_HOST_TO_DEVICE));
  ASSERT_OK(t->h->iface->buffer_copy(t->h, *hd, w, (size_t)n * 4,
                                     WEFT_COPY_HOST_TO_DEVICE));
  free(w);
}

/* Compares the outputs and frees the pair of buffers. */
static void a16_check_bias(a16 *t, const char *what, float *r, float *hd,
                           int64_t n, double bias) {
  float *g = malloc((size_t)n * 4), *c = malloc((size_t)n * 4);
  uint16_t *g16 = malloc((size_t)n * 2);
  ASSERT(g && c && g16);
  ASSERT_OK(t->ref->iface->buffer_copy(t->ref, c, r, (size_t)n * 4,
                                       WEFT_COPY_DEVICE_TO_HOST));
  ASSERT_OK(t->h->iface->buffer_copy(t->h, g16, hd, (size_t)n * 2,
                                     WEFT_COPY_DEVICE_TO_HOST));
  ASSERT_OK(t->cpu->iface->convert(t->cpu, g, WEFT_F32, g16, t->dt, n));
  float *mag = malloc((size_t)n * 4);
  ASSERT(mag);
  for (int64_t i = 0; i < n; i++)
    mag[i] = fabsf(c[i]) + (float)bias;
  compare_mag(what, g, c, mag, n, t->rel, 0x1p-10);
  free(g), free(c), free(g16), free(mag);
  t->ref->iface->buffer_free(t->ref, r);
  t->h->iface->buffer_free(t->h, hd);
}

static void a16_check(a16 *t, const char *what, float *r, float *hd,
                      int64_t n) {
  a16_check_bias(t, what, r, hd, n, 0);
}

static void a16_free(a16 *t, float *r, float *hd) {
  t->ref->iface->buffer_free(t->ref, r);
  t->h->iface->buffer_free(t->h, hd);
}

/* Runs the same call on both backends: BOTH(be, X, Y) with X the ref
 * pointer names and Y the 16-bit ones. */
#define A16_BOTH(t, call_ref, call_h)                                          \
  do {                                                                         \
    weft_backend *be = (t)->ref;                                               \
    ASSERT_OK(call_ref);                                                       \
    be = (t)->h;                                                               \
    ASSERT_OK(call_h);                                                         \
  } while (0)

static void a16_linear_gemm(a16 *t) {
  const int64_t rows = 2 * 77 + 3, in = 320, out = 96;
  float *xr, *xh, *wr, *wh, *br, *bh, *yr, *yh;
  a16_in(t, rows * in, -1, 1, &xr, &xh);
  a16_w(t, in * out, -.1f, .1f, &wr, &wh);
  a16_w(t, out, -1, 1, &br, &bh);
  a16_out(t, rows * out, &yr, &yh);
  A16_BOTH(t, be->iface->linear(be, xr, rows, in, wr, br, out, yr),
           be->iface->linear(be, xh, rows, in, wh, bh, out, yh));
  a16_check_bias(t, "act16 linear + bias", yr, yh, rows * out, 1);
  /* the transformer's proj_in: x [b, in, hw] as A^T, bias per column */
  const int64_t b = 2, hw = 64;
  float *pr, *ph;
  a16_out(t, b * hw * out, &pr, &ph);
  weft_gemm_args g = {.m = hw,
                      .n = out,
                      .k = in,
                      .trans_a = 1,
                      .trans_b = 1,
                      .alpha = 1,
                      .lda = hw,
                      .ldb = in,
                      .ldc = out,
                      .batch = b,
                      .stride_a = in * hw,
                      .stride_c = hw * out,
                      .acts = WEFT_GEMM_ACT_A | WEFT_GEMM_ACT_C};
  weft_gemm_args gr = g, gh = g;
  gr.a = xr, gr.b = wr, gr.c = pr, gr.bias = br;
  gh.a = xh, gh.b = wh, gh.c = ph, gh.bias = bh;
  A16_BOTH(t, be->iface->gemm(be, &gr), be->iface->gemm(be, &gh));
  a16_check_bias(t, "act16 gemm A^T, bias per column", pr, ph, b * hw * out, 1);
  /* proj_out: y [b, out, hw] = W x^T, bias per row */
  a16_out(t, b * out * hw, &pr, &ph);
  weft_gemm_args q = {.m = out,
                      .n = hw,
                      .k = in,
                      .trans_b = 1,
                      .alpha = 1,
                      .lda = in,
                      .ldb = in,
                      .ldc = hw,
                      .batch = b,
                      .stride_b = hw * in,
                      .stride_c = out * hw,
                      .bias_per_row = 1,
                      .acts = WEFT_GEMM_ACT_B | WEFT_GEMM_ACT_C};
  gr = q, gh = q;
  gr.a = wr, gr.b = xr, gr.c = pr, gr.bias = br;
  gh.a = wh, gh.b = xh, gh.c = ph, gh.bias = bh;
  A16_BOTH(t, be->iface->gemm(be, &gr), be->iface->gemm(be, &gh));
  a16_check_bias(t, "act16 gemm B^T, bias per row", pr, ph, b * out * hw, 1);
  a16_free(t, xr, xh), a16_free(t, wr, wh), a16_free(t, br, bh);
}

/* With t->epi: the epilogue's inputs on both sides of a conv of c (ny
 * outputs) into ar and ah; a16_epi_free frees them.  The bias a16_check_bias
 * then allows: 3 (the bias's, chan_add's and residual's magnitudes). */
typedef struct a16_epi {
  float *cr, *ch, *rr, *rh;
} a16_epi;

static a16_epi a16_epi_in(a16 *t, const conv_shape *c, int64_t ny,
                          weft_conv2d_args *ar, weft_conv2d_args *ah) {
  a16_epi e = {0};
  if (!t->epi) return e;
  a16_in(t, c->b * c->cout, -1, 1, &e.cr, &e.ch);
  a16_in(t, ny, -1, 1, &e.rr, &e.rh);
  ar->chan_add = e.cr, ar->residual = e.rr;
  ah->chan_add = e.ch, ah->residual = e.rh;
  return e;
}

static void a16_epi_free(a16 *t, a16_epi *e) {
  if (!e->cr) return;
  a16_free(t, e->cr, e->ch), a16_free(t, e->rr, e->rh);
}

static void a16_conv(a16 *t, const char *what, const conv_shape *c,
                     const char *path) {
  int64_t ho = weft_conv2d_out_size(c->h, c->kh, c->sh, c->pt, c->pb);
  int64_t wo = weft_conv2d_out_size(c->w, c->kw, c->sw, c->pl, c->pr);
  const int64_t nx = c->b * c->cin * c->h * c->w, ny = c->b * c->cout * ho * wo;
  float *xr, *xh, *wr, *wh, *br, *bh, *yr, *yh;
  a16_in(t, nx, -1, 1, &xr, &xh);
  a16_w(t, c->cout * c->cin * c->kh * c->kw, -.05f, .05f, &wr, &wh);
  a16_w(t, c->cout, -1, 1, &br, &bh);
  a16_out(t, ny, &yr, &yh);
  weft_conv2d_args ar = conv_args(c), ah = conv_args(c);
  ar.x = xr, ar.weight = wr, ar.bias = br, ar.y = yr;
  ah.x = xh, ah.weight = wh, ah.bias = bh, ah.y = yh;
  a16_epi e = a16_epi_in(t, c, ny, &ar, &ah);
  const char *got = weft_cuda_conv2d_path(t->h, &ah);
  const int bands = weft_cuda_conv2d_bands(t->h, &ah);
  printf("%s: path %s, %d band%s\n", what, got, bands, bands > 1 ? "s" : "");
  if (path) ASSERT_EQ(strcmp(got, path), 0);
  ASSERT(bands >= 1);
  if (t->min_bands) ASSERT(bands >= t->min_bands);
  A16_BOTH(t, be->iface->conv2d(be, &ar), be->iface->conv2d(be, &ah));
  a16_check_bias(t, what, yr, yh, ny, t->epi ? 3 : 1);
  a16_epi_free(t, &e);
  a16_free(t, xr, xh), a16_free(t, wr, wh), a16_free(t, br, bh);
}

/* a16_conv with the weight channels last on h (w_hwc), as nodes/sd
 * uploads it: stored 16-bit and registered (half), or fp32; ref keeps it
 * [cout, cin, kk] in fp32. */
static void a16_conv_hwc(a16 *t, const char *what, const conv_shape *c,
                         const char *path, bool half) {
  int64_t ho = weft_conv2d_out_size(c->h, c->kh, c->sh, c->pt, c->pb);
  int64_t wo = weft_conv2d_out_size(c->w, c->kw, c->sw, c->pl, c->pr);
  const int64_t nx = c->b * c->cin * c->h * c->w, ny = c->b * c->cout * ho * wo;
  const int64_t kk = c->kh * c->kw, nw = c->cout * c->cin * kk;
  float *xr, *xh, *br, *bh, *yr, *yh;
  a16_in(t, nx, -1, 1, &xr, &xh);
  a16_w(t, c->cout, -1, 1, &br, &bh);
  a16_out(t, ny, &yr, &yh);
  /* weights of 16-bit values, so that both sides see the same numbers */
  float *w = rnd(&t->seed, nw, -.05f, .05f);
  uint16_t *w16 = malloc((size_t)nw * 2);
  ASSERT(w16);
  ASSERT_OK(t->cpu->iface->convert(t->cpu, w16, t->dt, w, WEFT_F32, nw));
  ASSERT_OK(t->cpu->iface->convert(t->cpu, w, WEFT_F32, w16, t->dt, nw));
  float *wl = hwc_of(w, c->cout, c->cin, kk);
  ASSERT_OK(t->cpu->iface->convert(t->cpu, w16, t->dt, wl, WEFT_F32, nw));
  float *wr = t->ref->iface->buffer_alloc(t->ref, (size_t)nw * 4);
  float *wh = t->h->iface->buffer_alloc(t->h, (size_t)nw * (half ? 2 : 4));
  ASSERT(wr && wh);
  ASSERT_OK(t->ref->iface->buffer_copy(t->ref, wr, w, (size_t)nw * 4,
                                       WEFT_COPY_HOST_TO_DEVICE));
  ASSERT_OK(t->h->iface->buffer_copy(t->h, wh, half ? (void *)w16 : wl,
                                     (size_t)nw * (half ? 2 : 4),
                                     WEFT_COPY_HOST_TO_DEVICE));
  if (half) ASSERT_OK(weft_cuda_mark_half(t->h, wh, (size_t)nw * 2));
  weft_conv2d_args ar = conv_args(c), ah = conv_args(c);
  ar.x = xr, ar.weight = wr, ar.bias = br, ar.y = yr;
  ah.x = xh, ah.weight = wh, ah.bias = bh, ah.y = yh, ah.w_hwc = 1;
  a16_epi e = a16_epi_in(t, c, ny, &ar, &ah);
  const char *got = weft_cuda_conv2d_path(t->h, &ah);
  const int bands = weft_cuda_conv2d_bands(t->h, &ah);
  printf("%s: path %s, %d band%s, weight channels last (%s)\n", what, got,
         bands, bands > 1 ? "s" : "", half ? "16-bit" : "fp32");
  if (path) ASSERT_STR_EQ(got, path);
  if (t->min_bands) ASSERT(bands >= t->min_bands);
  A16_BOTH(t, be->iface->conv2d(be, &ar), be->iface->conv2d(be, &ah));
  a16_check_bias(t, what, yr, yh, ny, t->epi ? 3 : 1);
  a16_epi_free(t, &e);
  if (half) ASSERT_OK(weft_cuda_unmark_half(t->h, wh));
  t->ref->iface->buffer_free(t->ref, wr);
  t->h->iface->buffer_free(t->h, wh);
  free(w), free(w16), free(wl);
  a16_free(t, xr, xh), a16_free(t, br, bh);
}

/* An attention of [b, l, h, d] rows (dv = d), no pointers yet. */
static weft_attn_args blhd_attention(int64_t b, int64_t heads, int64_t lq,
                                     int64_t lk, int64_t d) {
  return (weft_attn_args){.batch = b,
                          .heads = heads,
                          .lq = lq,
                          .lk = lk,
                          .d = d,
                          .dv = d,
                          .q_s = weft_attn_strides_blhd(heads, lq, d),
                          .k_s = weft_attn_strides_blhd(heads, lk, d),
                          .v_s = weft_attn_strides_blhd(heads, lk, d),
                          .o_s = weft_attn_strides_blhd(heads, lq, d)};
}

/* path: the way attention must take (NULL: not checked) */
static void a16_attention(a16 *t, const char *what, int64_t b, int64_t heads,
                          int64_t lq, int64_t lk, int64_t d, int causal,
                          const char *path) {
  float *qr, *qh, *kr, *kh, *vr, *vh, * or, *oh;
  a16_in(t, b * lq * heads * d, -2, 2, &qr, &qh);
  a16_in(t, b * lk * heads * d, -2, 2, &kr, &kh);
  a16_in(t, b * lk * heads * d, -1, 1, &vr, &vh);
  a16_out(t, b * lq * heads * d, & or, &oh);
  weft_attn_args a = blhd_attention(b, heads, lq, lk, d);
  a.causal = causal;
  weft_attn_args ar = a, ah = a;
  ar.q = qr, ar.k = kr, ar.v = vr, ar.o = or ;
  ah.q = qh, ah.k = kh, ah.v = vh, ah.o = oh;
  const char *got = weft_cuda_attention_path(t->h, &ah);
  printf("%s: path %s\n", what, got);
  if (path) ASSERT_STR_EQ(got, path);
  A16_BOTH(t, be->iface->attention(be, &ar), be->iface->attention(be, &ah));
  a16_check(t, what, or, oh, b * lq * heads * d);
  a16_free(t, qr, qh), a16_free(t, kr, kh), a16_free(t, vr, vh);
}

/* Attention with 16-bit activations against the fp32 activations' packed
 * copies.  Without cuDNN's engine (cudnn false): flash16.cu reading 16-bit
 * k and v where they are (d 80, 160) or packed (d 40, 20), the launches of 128,
 * 64 and 32 query rows a block (1, 2 and 4 warps on each warp's rows), packing
 * first (d 20), the causal mask, and the cuBLASLt way past d 160.  With
 * it (fp16 only): every shape cuDNN takes (SD's, a partial key tile, d
 * 192), while the causal mask and d 20 stay on flash16.cu. */
static void a16_attentions(a16 *t, bool cudnn) {
  ASSERT_OK(weft_cuda_set_cudnn_attention(t->h, cudnn));
  cudnn = cudnn && t->dt == WEFT_F16; /* bf16 stays on flash16.cu */
  const char *f = cudnn ? "cudnn" : "fused", *u = cudnn ? "cudnn" : "cublas";
  printf("attention, cuDNN's engine %s\n", cudnn ? "on" : "off");
  a16_attention(t, "act16 self-attention d40", 2, 8, 1024, 1024, 40, 0, f);
  a16_attention(t, "act16 self-attention d40 64x64", 2, 8, 4096, 4096, 40, 0,
                f);
  a16_attention(t, "act16 self-attention d80 32x32", 2, 8, 1024, 1024, 80, 0,
                f);
  a16_attention(t, "act16 self-attention d160 16x16", 2, 8, 256, 256, 160, 0,
                f);
  a16_attention(t, "act16 cross-attention 77 keys d80", 2, 8, 256, 77, 80, 0,
                f);
  a16_attention(t, "act16 cross-attention 77 keys d40", 2, 8, 4096, 77, 40, 0,
                f);
  a16_attention(t, "act16 d40, a partial key tile", 2, 3, 200, 77, 40, 0, f);
  a16_attention(t, "act16 causal d64 (CLIP)", 2, 12, 77, 77, 64, 1, "fused");
  a16_attention(t, "act16 causal d80 past one tile", 1, 2, 130, 129, 80, 1,
                "fused");
  a16_attention(t, "act16 d20 (packed first)", 1, 2, 50, 70, 20, 0, "fused");
  a16_attention(t, "act16 d192", 1, 2, 100, 90, 192, 0, u);
  ASSERT_OK(weft_cuda_set_cudnn_attention(t->h, true));
}

/* Layer norm over SD's and CLIP's rows (norm.cu's register rows: 8, 16
 * and 32 threads a row) and a row of 36, which is not whole 16-byte
 * vectors; the gated activation over vectors and, for 36, values. */
static void a16_rows(a16 *t) {
  static const int64_t shape[][2] = {
      {300, 320}, {130, 640}, {66, 1280}, {77, 768}, {5, 8}, {19, 36}};
  for (size_t i = 0; i < sizeof shape / sizeof *shape; i++) {
    const int64_t rows = shape[i][0], dim = shape[i][1], n = rows * dim;
    float *xr, *xh, *yr, *yh, *gr, *gh, *er, *eh;
    char what[64];
    a16_in(t, n, -3, 3, &xr, &xh);
    a16_w(t, dim, .5f, 1.5f, &gr, &gh);
    a16_w(t, dim, -.5f, .5f, &er, &eh);
    a16_out(t, n, &yr, &yh);
    A16_BOTH(t, be->iface->layer_norm(be, xr, yr, rows, dim, 1e-5f, gr, er),
             be->iface->layer_norm(be, xh, yh, rows, dim, 1e-5f, gh, eh));
    snprintf(what, sizeof what, "act16 layer_norm %lldx%lld", (long long)rows,
             (long long)dim);
    a16_check(t, what, yr, yh, n);
    a16_out(t, n / 2, &yr, &yh);
    A16_BOTH(t,
             be->iface->gated_act(be, WEFT_ACT_GELU_ERF, xr, yr, rows, dim / 2),
             be->iface->gated_act(be, WEFT_ACT_GELU_ERF, xh, yh, rows,
                                  dim / 2));
    snprintf(what, sizeof what, "act16 geglu %lldx%lld", (long long)rows,
             (long long)dim / 2);
    a16_check(t, what, yr, yh, n / 2);
    a16_free(t, xr, xh), a16_free(t, gr, gh), a16_free(t, er, eh);
  }
}

static void a16_memory_ops(a16 *t) {
  const int64_t b = 2, c = 64, hw = 24 * 24, n = b * c * hw;
  float *xr, *xh, *yr, *yh, *gr, *gh, *er, *eh;
  a16_in(t, n, -3, 3, &xr, &xh);
  a16_w(t, c, .5f, 1.5f, &gr, &gh);
  a16_w(t, c, -.5f, .5f, &er, &eh);
  a16_out(t, n, &yr, &yh);
  A16_BOTH(t,
           be->iface->group_norm(be, xr, yr, b, c, hw, 32, 1e-6f, gr, er,
                                 WEFT_ACT_SILU),
           be->iface->group_norm(be, xh, yh, b, c, hw, 32, 1e-6f, gh, eh,
                                 WEFT_ACT_SILU));
  a16_check(t, "act16 group_norm + silu", yr, yh, n);
  a16_out(t, n, &yr, &yh); /* layer norm over rows of c */
  A16_BOTH(t, be->iface->layer_norm(be, xr, yr, b * hw, c, 1e-5f, gr, er),
           be->iface->layer_norm(be, xh, yh, b * hw, c, 1e-5f, gh, eh));
  a16_check(t, "act16 layer_norm", yr, yh, n);
  a16_out(t, n, &yr, &yh);
  A16_BOTH(t, be->iface->softmax(be, xr, yr, b * c, hw),
           be->iface->softmax(be, xh, yh, b * c, hw));
  a16_check(t, "act16 softmax", yr, yh, n);
  a16_out(t, n, &yr, &yh);
  A16_BOTH(t, be->iface->act(be, WEFT_ACT_GELU_ERF, xr, yr, n),
           be->iface->act(be, WEFT_ACT_GELU_ERF, xh, yh, n));
  a16_check(t, "act16 gelu", yr, yh, n);
  a16_out(t, n / 2, &yr, &yh);
  A16_BOTH(t,
           be->iface->gated_act(be, WEFT_ACT_GELU_ERF, xr, yr, b * hw, c / 2),
           be->iface->gated_act(be, WEFT_ACT_GELU_ERF, xh, yh, b * hw, c / 2));
  a16_check(t, "act16 geglu", yr, yh, n / 2);
  /* the resnet's temb add: [b, c, h, w] + [b, c, 1, 1] */
  float *tr, *th;
  a16_in(t, b * c, -1, 1, &tr, &th);
  a16_out(t, n, &yr, &yh);
  int64_t s4[4] = {b, c, 24, 24}, t4[4] = {b, c, 1, 1};
  A16_BOTH(t, be->iface->binary(be, WEFT_BIN_ADD, xr, 4, s4, tr, 4, t4, yr),
           be->iface->binary(be, WEFT_BIN_ADD, xh, 4, s4, th, 4, t4, yh));
  a16_check(t, "act16 binary broadcast", yr, yh, n);
  a16_out(t, n, &yr, &yh);
  int64_t s3[3] = {b, c, hw}, t3[3] = {1, c, 1}; /* a general-nd one */
  A16_BOTH(t, be->iface->binary(be, WEFT_BIN_MUL, xr, 3, s3, tr, 3, t3, yr),
           be->iface->binary(be, WEFT_BIN_MUL, xh, 3, s3, th, 3, t3, yh));
  a16_check(t, "act16 binary nd", yr, yh, n);
  a16_free(t, tr, th);
  float *zr, *zh;
  a16_in(t, n, -1, 1, &zr, &zh);
  a16_out(t, n, &yr, &yh);
  A16_BOTH(t, be->iface->scale_add(be, yr, 1.5f, xr, -7.5f, zr, n),
           be->iface->scale_add(be, yh, 1.5f, xh, -7.5f, zh, n));
  a16_check(t, "act16 scale_add (cfg)", yr, yh, n);
  a16_out(t, 4 * n, &yr, &yh);
  A16_BOTH(t, be->iface->upsample_nearest2x(be, xr, yr, b * c, 24, 24),
           be->iface->upsample_nearest2x(be, xh, yh, b * c, 24, 24));
  a16_check(t, "act16 upsample 2x", yr, yh, 4 * n);
  a16_out(t, 2 * n, &yr, &yh);
  int64_t sa[4] = {b, c, 24, 24};
  const int64_t *shapes[2] = {sa, sa};
  const float *xsr[2] = {xr, zr}, *xsh[2] = {xh, zh};
  A16_BOTH(t, be->iface->concat(be, 2, xsr, 4, shapes, 1, yr),
           be->iface->concat(be, 2, xsh, 4, shapes, 1, yh));
  a16_check(t, "act16 concat (channels)", yr, yh, 2 * n);
  /* timesteps stay fp32: 16-bit would lose their fractions */
  float ts[2] = {999.0f, 481.37f};
  float *tsr, *tsh;
  a16_w(t, 2, 0, 1, &tsr, &tsh);
  ASSERT_OK(t->ref->iface->buffer_copy(t->ref, tsr, ts, sizeof ts,
                                       WEFT_COPY_HOST_TO_DEVICE));
  ASSERT_OK(t->h->iface->buffer_copy(t->h, tsh, ts, sizeof ts,
                                     WEFT_COPY_HOST_TO_DEVICE));
  a16_out(t, 2 * 320, &yr, &yh);
  A16_BOTH(t,
           be->iface->timestep_embedding(be, tsr, 2, 320, 1, 0, 1, 10000, yr),
           be->iface->timestep_embedding(be, tsh, 2, 320, 1, 0, 1, 10000, yh));
  a16_check(t, "act16 timestep embedding", yr, yh, 2 * 320);
  a16_free(t, tsr, tsh), a16_free(t, zr, zh);
  a16_free(t, xr, xh), a16_free(t, gr, gh), a16_free(t, er, eh);
}

static void act16_all(weft_cuda_precision prec) {
  a16 t = a16_setup(prec);
  a16_linear_gemm(&t);
  const conv_shape big = {2, 32, 40, 40, 64, 3, 3, 1, 1, 1, 1, 1, 1};
  const conv_shape small = {2, 64, 8, 8, 32, 3, 3, 1, 1, 1, 1, 1, 1};
  const conv_shape down = {2, 32, 40, 40, 32, 3, 3, 2, 2, 1, 1, 1, 1};
  const conv_shape pw = {2, 64, 16, 16, 32, 1, 1, 1, 1, 0, 0, 0, 0};
  const conv_shape out = {2, 32, 24, 24, 4, 3, 3, 1, 1, 1, 1, 1, 1};
  /* 262144 pixels: the direct kernel's one-slice launch (the VAE's) */
  const conv_shape out_big = {1, 16, 512, 512, 3, 3, 3, 1, 1, 1, 1, 1, 1};
  const conv_shape vae = {1, 3, 32, 32, 16, 3, 3, 2, 2, 0, 0, 1, 1};
  a16_conv(&t, "act16 conv 3x3 40x40", &big,
           weft_cuda_have_cudnn(t.h) ? "cudnn16" : "im2col");
  a16_conv(&t, "act16 conv 3x3 8x8", &small, "im2col");
  a16_conv(&t, "act16 conv 3x3 stride 2", &down, NULL);
  a16_conv(&t, "act16 conv 1x1", &pw, "gemm");
  a16_conv(&t, "act16 conv_out (4 channels)", &out, "direct");
  a16_conv(&t, "act16 conv_out 512x512 (3 channels)", &out_big, "direct");
  const conv_shape out_odd = {2, 24, 13, 11, 4, 3, 3, 1, 1, 1, 1, 1, 1};
  a16_conv(&t, "act16 conv_out 13x11 (rows read one by one)", &out_odd,
           "direct");
  if (weft_cuda_have_cudnn(t.h)) {
    /* cuDNN's workspace past the band bytes: row bands (edge bands padded
     * on their outer side, the rows they spoil written again by their
     * neighbours), stride 1 and 2, and one piece with bands off */
    const conv_shape tall = {2, 64, 96, 40, 64, 3, 3, 1, 1, 1, 1, 1, 1};
    const conv_shape tall2 = {1, 32, 90, 48, 64, 3, 3, 2, 2, 1, 1, 1, 1};
    ASSERT_OK(weft_cuda_set_conv_band_bytes(t.h, (size_t)256 << 10));
    t.min_bands = 3;
    a16_conv(&t, "act16 conv 3x3 in row bands", &tall, "cudnn16");
    a16_conv(&t, "act16 conv 3x3 stride 2 in row bands", &tall2, "cudnn16");
    ASSERT_OK(weft_cuda_set_conv_band_bytes(t.h, 0));
    t.min_bands = 0;
    weft_conv2d_args one = conv_args(&tall);
    one.x = one.weight = one.y = (float *)256; /* never run: only its way */
    ASSERT_EQ(weft_cuda_conv2d_bands(t.h, &one), 1);
    ASSERT_OK(weft_cuda_set_conv_band_bytes(t.h, (size_t)48 << 20));
  }
  a16_conv(&t, "act16 conv asymmetric pad, 3 in", &vae, "im2col");
  /* channels-last weights: the NHWC way (any map size, asymmetric pads
   * too), in bands, and the fallbacks */
  const bool dnn = weft_cuda_have_cudnn(t.h);
  const conv_shape vae16 = {1, 16, 33, 32, 24, 3, 3, 2, 2, 0, 0, 1, 1};
  a16_conv_hwc(&t, "act16 nhwc 3x3 40x40", &big, dnn ? "cudnn_nhwc" : NULL,
               true);
  a16_conv_hwc(&t, "act16 nhwc 3x3 8x8", &small, dnn ? "cudnn_nhwc" : NULL,
               true);
  a16_conv_hwc(&t, "act16 nhwc stride 2, fp32 weight", &down,
               dnn ? "cudnn_nhwc" : NULL, false);
  a16_conv_hwc(&t, "act16 nhwc asymmetric pad", &vae16,
               dnn ? "cudnn_nhwc" : NULL, true);
  /* the epilogue (chan_add, residual) in 16-bit activations: added as y
   * moves back (the NHWC way) or after y (cudnn16, direct) */
  t.epi = true;
  a16_conv_hwc(&t, "act16 nhwc epilogue", &big, dnn ? "cudnn_nhwc" : NULL,
               true);
  a16_conv(&t, "act16 conv epilogue", &big, NULL);
  a16_conv_hwc(&t, "act16 direct epilogue", &out, "direct", true);
  t.epi = false;
  a16_conv_hwc(&t, "act16 nhwc falls back: conv_out", &out, "direct", true);
  a16_conv_hwc(&t, "act16 nhwc falls back: 3 in", &vae, "im2col", true);
  if (dnn) {
    const conv_shape tall = {2, 64, 96, 40, 64, 3, 3, 1, 1, 1, 1, 1, 1};
    const conv_shape tall2 = {1, 32, 90, 48, 64, 3, 3, 2, 2, 1, 1, 1, 1};
    ASSERT_OK(weft_cuda_set_conv_band_bytes(t.h, (size_t)128 << 10));
    t.min_bands = 3;
    a16_conv_hwc(&t, "act16 nhwc in row bands", &tall, "cudnn_nhwc", true);
    a16_conv_hwc(&t, "act16 nhwc stride 2 in row bands", &tall2, "cudnn_nhwc",
                 true);
    t.min_bands = 0;
    ASSERT_OK(weft_cuda_set_conv_band_bytes(t.h, (size_t)48 << 20));
    ASSERT_OK(weft_cuda_set_conv_algo(t.h, WEFT_CUDA_CONV_IM2COL));
    a16_conv_hwc(&t, "act16 nhwc falls back: im2col forced", &big, "im2col",
                 true);
    ASSERT_OK(weft_cuda_set_conv_algo(t.h, WEFT_CUDA_CONV_AUTO));
  }
  a16_attentions(&t, false);
  if (dnn) a16_attentions(&t, true);
  a16_memory_ops(&t);
  a16_rows(&t);
  a16_teardown(&t);
}

TEST(act16_fp16_every_op) {
  act16_all(WEFT_CUDA_FP16);
}

TEST(act16_bf16_every_op) {
  act16_all(WEFT_CUDA_BF16);
}

TEST(act16_needs_the_compute_dtype) {
  if (!weft_cuda_available()) weft_test_skip("no CUDA device");
  weft_backend *be = weft_backend_cuda_new(0);
  ASSERT(be);
  ASSERT_OK(weft_cuda_set_precision(be, WEFT_CUDA_FP32));
  ASSERT_EQ(weft_cuda_set_act_dtype(be, WEFT_F16), WEFT_EINVAL);
  ASSERT_OK(weft_cuda_set_precision(be, WEFT_CUDA_FP16));
  ASSERT_EQ(weft_cuda_set_act_dtype(be, WEFT_BF16), WEFT_EINVAL);
  ASSERT_OK(weft_cuda_set_act_dtype(be, WEFT_F16));
  ASSERT_OK(weft_cuda_set_act_dtype(be, WEFT_F32));
  setenv("WEFT_CUDA_ACT", "fp32", 1);
  ASSERT_OK(weft_cuda_set_act_auto(be));
  ASSERT_EQ(weft_backend_act_dtype(be), WEFT_F32);
  setenv("WEFT_CUDA_ACT", "16", 1);
  ASSERT_OK(weft_cuda_set_act_auto(be));
  ASSERT_EQ(weft_backend_act_dtype(be), WEFT_F16);
  setenv("WEFT_CUDA_ACT", "half", 1);
  ASSERT_EQ(weft_cuda_set_act_auto(be), WEFT_EINVAL);
  ASSERT(strstr(weft_cuda_last_error(be), "WEFT_CUDA_ACT"));
  unsetenv("WEFT_CUDA_ACT");
  weft_backend_free(be);
}

/* ---- maps channels last (x_nhwc / y_nhwc, group_norm_cl, upsample_cl) ------
 * Each channels-last op against the same backend's channels-first op on
 * the same values moved (on the host, element by element as stored): a
 * convolution's channels-last way copies x's rows where it moved them and
 * adds the epilogue where it moved y back, the same plan between, so the
 * same bits; the other ways move the maps and take the channels-first
 * way, the same bits too.  A group norm sums the same values in another
 * order: its (scale, shift) may differ in the last bit, the outputs by an
 * ulp of the activations' type (2^-8 of a bf16 value, plus 1e-3 of the
 * output's largest magnitude for the sums that follow). */

typedef struct clt {
  weft_backend *be, *cpu;
  weft_dtype act; /* the activations' dtype */
  size_t es;
  uint64_t seed;
} clt;

static clt clt_setup(weft_cuda_precision prec, bool act16) {
  if (!weft_cuda_available()) weft_test_skip("no CUDA device");
  clt t;
  t.be = weft_backend_cuda_new(0);
  t.cpu = weft_backend_cpu_new(0);
  ASSERT(t.be && t.cpu);
  ASSERT_OK(weft_cuda_set_precision(t.be, prec));
  if (act16)
    ASSERT_OK(weft_cuda_set_act_dtype(t.be, prec == WEFT_CUDA_BF16 ? WEFT_BF16
                                                                   : WEFT_F16));
  t.act = weft_backend_act_dtype(t.be);
  t.es = weft_dtype_size(t.act);
  t.seed = 4242;
  printf("precision %s, activations %s\n", weft_cuda_precision_name(prec),
         t.act == WEFT_F32   ? "fp32"
         : t.act == WEFT_F16 ? "fp16"
                             : "bf16");
  return t;
}

static void clt_teardown(clt *t) {
  ASSERT_OK(t->be->iface->synchronize(t->be));
  weft_backend_free(t->be);
  weft_backend_free(t->cpu);
}

/* n random activations as stored (act dtype), on the host */
static void *clt_rnd(clt *t, int64_t n, float lo, float hi) {
  float *f = rnd(&t->seed, n, lo, hi);
  void *h = malloc((size_t)n * t->es);
  ASSERT(h);
  ASSERT_OK(t->cpu->iface->convert(t->cpu, h, t->act, f, WEFT_F32, n));
  free(f);
  return h;
}

static void *clt_up(clt *t, const void *h, size_t bytes) {
  void *d = t->be->iface->buffer_alloc(t->be, bytes);
  ASSERT(d);
  ASSERT_OK(
      t->be->iface->buffer_copy(t->be, d, h, bytes, WEFT_COPY_HOST_TO_DEVICE));
  return d;
}

/* a device buffer of n activations poisoned (all bytes 0xff: NaN) */
static void *clt_poison(clt *t, int64_t n) {
  void *h = malloc((size_t)n * t->es);
  ASSERT(h);
  memset(h, 0xff, (size_t)n * t->es);
  void *d = clt_up(t, h, (size_t)n * t->es);
  free(h);
  return d;
}

static void *clt_down(clt *t, const void *d, int64_t n) {
  void *h = malloc((size_t)n * t->es);
  ASSERT(h);
  ASSERT_OK(t->be->iface->buffer_copy(t->be, h, d, (size_t)n * t->es,
                                      WEFT_COPY_DEVICE_TO_HOST));
  return h;
}

/* dst = src moved between [b][c][s] and [b][s][c] (to_nhwc: into the
 * latter), elements of es bytes as stored (a new array) */
static void *clt_move(const void *src, size_t es, int64_t b, int64_t c,
                      int64_t s, bool to_nhwc) {
  unsigned char *d = malloc((size_t)(b * c * s) * es);
  const unsigned char *p = src;
  ASSERT(d);
  for (int64_t n = 0; n < b; n++)
    for (int64_t ch = 0; ch < c; ch++)
      for (int64_t q = 0; q < s; q++) {
        const int64_t f = (n * c + ch) * s + q, l = (n * s + q) * c + ch;
        memcpy(d + (size_t)(to_nhwc ? l : f) * es,
               p + (size_t)(to_nhwc ? f : l) * es, es);
      }
  return d;
}

/* g against r, both n activations as stored: bit for bit, or (tol) within
 * 2 ulps of the type at |r| plus 1e-3 of max |r| */
static void clt_same(clt *t, const char *what, const void *g, const void *r,
                     int64_t n, bool tol) {
  if (!tol) {
    compare_exact(what, g, r, (size_t)n * t->es);
    return;
  }
  float *gf = malloc((size_t)n * 4), *rf = malloc((size_t)n * 4);
  ASSERT(gf && rf);
  ASSERT_OK(t->cpu->iface->convert(t->cpu, gf, WEFT_F32, g, t->act, n));
  ASSERT_OK(t->cpu->iface->convert(t->cpu, rf, WEFT_F32, r, t->act, n));
  const double ulp = t->act == WEFT_BF16  ? 0x1p-8
                     : t->act == WEFT_F16 ? 0x1p-11
                                          : 0x1p-23;
  compare(what, gf, rf, n, 2 * ulp, 1e-3);
  free(gf), free(rf);
}

/* A convolution (x_cl, y_cl) against the channels-first one, with the
 * prologue (pre) and the epilogue (epi). */
static void clt_conv(clt *t, const char *name, const conv_shape *c, bool hwc,
                     bool pre, bool epi, int x_cl, int y_cl) {
  const int64_t ho = weft_conv2d_out_size(c->h, c->kh, c->sh, c->pt, c->pb);
  const int64_t wo = weft_conv2d_out_size(c->w, c->kw, c->sw, c->pl, c->pr);
  const int64_t kk = c->kh * c->kw, sx = c->h * c->w, sy = ho * wo;
  const int64_t nx = c->b * c->cin * sx, ny = c->b * c->cout * sy;
  const int64_t nw = c->cout * c->cin * kk;
  void *x = clt_rnd(t, nx, -2, 3), *res = clt_rnd(t, ny, -1, 1);
  void *ch = clt_rnd(t, c->b * c->cout, -1, 1);
  float *w = rnd(&t->seed, nw, -0.1f, 0.1f),
        *bias = rnd(&t->seed, c->cout, -1, 1);
  float *g = rnd(&t->seed, c->cin, 0.5f, 1.5f),
        *bt = rnd(&t->seed, c->cin, -.5f, .5f);
  float *wh = hwc_of(w, c->cout, c->cin, kk);
  void *xm = clt_move(x, t->es, c->b, c->cin, sx, true);
  void *rm = clt_move(res, t->es, c->b, c->cout, sy, true);
  void *dx = clt_up(t, x, (size_t)nx * t->es),
       *dxm = clt_up(t, xm, (size_t)nx * t->es);
  void *dres = clt_up(t, res, (size_t)ny * t->es),
       *drm = clt_up(t, rm, (size_t)ny * t->es);
  void *dch = clt_up(t, ch, (size_t)(c->b * c->cout) * t->es);
  float *dw = clt_up(t, hwc ? wh : w, (size_t)nw * 4);
  float *db = clt_up(t, bias, (size_t)c->cout * 4);
  float *dg = clt_up(t, g, (size_t)c->cin * 4),
        *dbt = clt_up(t, bt, (size_t)c->cin * 4);
  void *dy = clt_poison(t, ny), *dyc = clt_poison(t, ny),
       *dn = clt_poison(t, nx);
  const weft_conv2d_prenorm pn = {8, 1e-5f, dg, dbt, WEFT_ACT_SILU};
  weft_conv2d_args a = conv_args(c);
  a.weight = dw, a.w_hwc = hwc, a.bias = db;
  if (epi) a.chan_add = dch;
  /* channels first: the prologue where the backend takes it, else
   * group_norm first */
  a.x = dx, a.y = dy, a.residual = epi ? dres : NULL,
  a.prenorm = pre ? &pn : NULL;
  int rc = t->be->iface->conv2d(t->be, &a);
  if (rc == WEFT_EUNSUPPORTED && pre) {
    ASSERT_OK(t->be->iface->group_norm(t->be, dx, dn, c->b, c->cin, sx, 8,
                                       1e-5f, dg, dbt, WEFT_ACT_SILU));
    a.x = dn, a.prenorm = NULL;
    rc = t->be->iface->conv2d(t->be, &a);
  }
  ASSERT_OK(rc);
  /* channels last as asked */
  a.x = x_cl ? dxm : dx, a.y = dyc, a.x_nhwc = x_cl, a.y_nhwc = y_cl;
  a.residual = epi ? (y_cl ? drm : dres) : NULL;
  a.prenorm = pre ? &pn : NULL;
  const char *path = weft_cuda_conv2d_path(t->be, &a);
  ASSERT(path);
  rc = t->be->iface->conv2d(t->be, &a);
  bool tol = false;
  if (rc == WEFT_EUNSUPPORTED && pre) {
    ASSERT(t->be->iface->group_norm_cl);
    if (x_cl)
      ASSERT_OK(t->be->iface->group_norm_cl(t->be, dxm, dn, c->b, c->cin, sx, 8,
                                            1e-5f, dg, dbt, WEFT_ACT_SILU));
    else
      ASSERT_OK(t->be->iface->group_norm(t->be, dx, dn, c->b, c->cin, sx, 8,
                                         1e-5f, dg, dbt, WEFT_ACT_SILU));
    a.x = dn, a.prenorm = NULL;
    rc = t->be->iface->conv2d(t->be, &a);
  }
  ASSERT_OK(rc);
  /* the statistics summed in another order; a pointwise product over the
   * pixels rather than per image */
  tol = (pre && x_cl) || (kk == 1 && x_cl && y_cl && !epi);
  void *yr = clt_down(t, dy, ny), *yg = clt_down(t, dyc, ny);
  void *yb = y_cl ? clt_move(yg, t->es, c->b, c->cout, sy, false) : NULL;
  char what[128];
  snprintf(what, sizeof what, "%s x%s y%s%s%s [%s]", name, x_cl ? "hwc" : "chw",
           y_cl ? "hwc" : "chw", pre ? " +norm" : "", epi ? " +epi" : "", path);
  clt_same(t, what, yb ? yb : yg, yr, ny, tol);
  free(yr), free(yg), free(yb);
  free(x), free(res), free(ch), free(w), free(bias), free(g), free(bt);
  free(wh), free(xm), free(rm);
  void *dev[] = {dx, dxm, dres, drm, dch, dw, db, dg, dbt, dy, dyc, dn};
  for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
    t->be->iface->buffer_free(t->be, dev[i]);
}

static void clt_norm_up(clt *t, int64_t b, int64_t c, int64_t h, int64_t w,
                        int64_t groups, weft_act act) {
  const int64_t s = h * w, n = b * c * s;
  void *x = clt_rnd(t, n, -3, 5), *xm = clt_move(x, t->es, b, c, s, true);
  float *g = rnd(&t->seed, c, 0.5f, 1.5f), *bt = rnd(&t->seed, c, -.5f, .5f);
  void *dx = clt_up(t, x, (size_t)n * t->es),
       *dxm = clt_up(t, xm, (size_t)n * t->es);
  float *dg = clt_up(t, g, (size_t)c * 4), *dbt = clt_up(t, bt, (size_t)c * 4);
  void *dy = clt_poison(t, n), *dyc = clt_poison(t, n);
  void *du = clt_poison(t, 4 * n), *duc = clt_poison(t, 4 * n);
  ASSERT_OK(t->be->iface->group_norm(t->be, dx, dy, b, c, s, groups, 1e-5f, dg,
                                     dbt, act));
  ASSERT_OK(t->be->iface->group_norm_cl(t->be, dxm, dyc, b, c, s, groups, 1e-5f,
                                        dg, dbt, act));
  void *yr = clt_down(t, dy, n), *yg = clt_down(t, dyc, n);
  void *yb = clt_move(yg, t->es, b, c, s, false);
  char what[128];
  snprintf(what, sizeof what, "group_norm_cl %lldx%lldx%lldx%lld g%lld",
           (long long)b, (long long)c, (long long)h, (long long)w,
           (long long)groups);
  clt_same(t, what, yb, yr, n, true);
  ASSERT_OK(t->be->iface->upsample_nearest2x(t->be, dx, du, b * c, h, w));
  ASSERT_OK(t->be->iface->upsample_nearest2x_cl(t->be, dxm, duc, b, h, w, c));
  void *ur = clt_down(t, du, 4 * n), *ug = clt_down(t, duc, 4 * n);
  void *ub = clt_move(ug, t->es, b, c, 4 * s, false);
  snprintf(what, sizeof what, "upsample_cl %lldx%lldx%lldx%lld", (long long)b,
           (long long)c, (long long)h, (long long)w);
  clt_same(t, what, ub, ur, 4 * n, false);
  free(x), free(xm), free(g), free(bt), free(yr), free(yg), free(yb);
  free(ur), free(ug), free(ub);
  void *dev[] = {dx, dxm, dg, dbt, dy, dyc, du, duc};
  for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
    t->be->iface->buffer_free(t->be, dev[i]);
}

static void channels_last_all(weft_cuda_precision prec, bool act16) {
  clt t = clt_setup(prec, act16);
  const conv_shape sq = {2, 64, 16, 16, 64, 3, 3, 1, 1, 1, 1, 1, 1};
  const conv_shape tall = {1, 32, 40, 24, 64, 3, 3, 1, 1, 1, 1, 1, 1};
  const conv_shape down = {1, 16, 33, 32, 24, 3, 3, 2, 2, 0, 0, 1, 1};
  const conv_shape pw = {2, 32, 8, 8, 48, 1, 1, 1, 1, 0, 0, 0, 0};
  const conv_shape out = {1, 16, 12, 12, 4, 3, 3, 1, 1, 1, 1, 1, 1};
  const conv_shape sk = {2, 256, 8, 8, 128, 3, 3, 1, 1, 1, 1, 1, 1};
  const conv_shape sk2 = {1, 256, 15, 16, 64, 3, 3, 2, 2, 1, 1, 1, 1};
  const int io[3][2] = {{1, 1}, {0, 1}, {1, 0}};
  for (int k = 0; k < 3; k++) {
    const int xc = io[k][0], yc = io[k][1];
    for (int e = 0; e < 2; e++) {
      clt_conv(&t, "conv hwc 3x3", &sq, true, false, e, xc, yc);
      clt_conv(&t, "conv hwc 3x3", &sq, true, true, e, xc, yc);
      clt_conv(&t, "conv 3x3", &sq, false, false, e, xc, yc);
      clt_conv(&t, "conv hwc stride 2", &down, true, false, e, xc, yc);
      clt_conv(&t, "conv 1x1", &pw, false, false, e, xc, yc);
      clt_conv(&t, "conv hwc 4 out", &out, true, false, e, xc, yc);
      clt_conv(&t, "conv hwc 8x8", &sk, true, true, e, xc, yc);
      clt_conv(&t, "conv hwc 8x8", &sk, true, false, e, xc, yc);
      clt_conv(&t, "conv hwc stride 2 to 8x8", &sk2, true, true, e, xc, yc);
    }
    ASSERT_OK(weft_cuda_set_conv_band_bytes(t.be, (size_t)64 << 10));
    clt_conv(&t, "conv hwc in bands", &tall, true, true, true, xc, yc);
    clt_conv(&t, "conv hwc in bands", &tall, true, false, true, xc, yc);
    ASSERT_OK(weft_cuda_set_conv_band_bytes(t.be, (size_t)48 << 20));
  }
  clt_norm_up(&t, 2, 64, 16, 16, 8, WEFT_ACT_SILU);
  clt_norm_up(&t, 1, 128, 64, 40, 32, WEFT_ACT_NONE); /* chunks merged */
  clt_norm_up(&t, 1, 6, 5, 7, 3, WEFT_ACT_SILU);      /* no vectors */
  /* the UNet's: runs of two tiles a block (64x64), one row of threads a
   * pixel (2560 channels); 512 threads a block (the VAE's 128 channels);
   * more images than counters (the merge's own kernel) */
  clt_norm_up(&t, 2, 320, 64, 64, 32, WEFT_ACT_SILU);
  clt_norm_up(&t, 2, 2560, 8, 8, 32, WEFT_ACT_NONE);
  clt_norm_up(&t, 1, 128, 128, 96, 32, WEFT_ACT_SILU);
  clt_norm_up(&t, 4097, 8, 3, 2, 2, WEFT_ACT_SILU);
  clt_teardown(&t);
}

TEST(channels_last_maps_fp16_activations) {
  channels_last_all(WEFT_CUDA_FP16, true);
}

TEST(channels_last_maps_bf16_activations) {
  channels_last_all(WEFT_CUDA_BF16, true);
}

TEST(channels_last_maps_fp32) {
  channels_last_all(WEFT_CUDA_FP32, false);
}

/* ---- fp32 values with a 16-bit mirror (weft_cuda_mark_mirror) -------------
 * A linear's fp32 bias rounded into scratch each call and read from its
 * mirror give the same bits; a mirror holding other values is what the
 * product then reads (the bias those values are, rounded each call, gives
 * the same bits), and once unmarked the bias is rounded again. */
TEST(bias_mirror_fp16) {
  clt t = clt_setup(WEFT_CUDA_FP16, true);
  const int64_t rows = 64, in = 320, out = 640, ny = rows * out;
  void *x = clt_rnd(&t, rows * in, -1, 1);
  float *w = rnd(&t.seed, in * out, -.1f, .1f), *b = rnd(&t.seed, out, -1, 1);
  float *b2 = malloc((size_t)out * 4);
  ASSERT(b2);
  for (int64_t i = 0; i < out; i++)
    b2[i] = 2 * b[i] + 0.5f;
  void *dx = clt_up(&t, x, (size_t)(rows * in) * t.es);
  float *dw = clt_up(&t, w, (size_t)(in * out) * 4);
  float *db = clt_up(&t, b, (size_t)out * 4),
        *db2 = clt_up(&t, b2, (size_t)out * 4);
  void *dh = t.be->iface->buffer_alloc(t.be, (size_t)out * 2);
  ASSERT(dh);
  void *dy[5];
  for (int i = 0; i < 5; i++)
    dy[i] = clt_poison(&t, ny);
  const weft_backend_iface *f = t.be->iface;
  ASSERT_OK(f->linear(t.be, dx, rows, in, dw, db, out, dy[0]));
  ASSERT_OK(f->convert(t.be, dh, WEFT_F16, db, WEFT_F32, out));
  ASSERT_OK(weft_cuda_mark_mirror(t.be, db, (size_t)out * 4, dh, WEFT_F16));
  ASSERT_EQ(weft_cuda_mark_mirror(t.be, db + 4, 16, dh, WEFT_F16), WEFT_EINVAL);
  ASSERT_OK(f->linear(t.be, dx, rows, in, dw, db, out, dy[1]));
  ASSERT_OK(f->convert(t.be, dh, WEFT_F16, db2, WEFT_F32, out));
  ASSERT_OK(f->linear(t.be, dx, rows, in, dw, db, out, dy[2]));
  ASSERT_OK(f->linear(t.be, dx, rows, in, dw, db2, out, dy[3]));
  ASSERT_OK(weft_cuda_unmark_mirror(t.be, db));
  ASSERT_EQ(weft_cuda_unmark_mirror(t.be, db), WEFT_EINVAL);
  ASSERT_OK(f->linear(t.be, dx, rows, in, dw, db, out, dy[4]));
  void *y[5];
  for (int i = 0; i < 5; i++)
    y[i] = clt_down(&t, dy[i], ny);
  compare_exact("linear, the bias from its mirror", y[1], y[0],
                (size_t)ny * t.es);
  compare_exact("linear, the mirror holding 2 b + 0.5", y[2], y[3],
                (size_t)ny * t.es);
  ASSERT(memcmp(y[2], y[0], (size_t)ny * t.es) != 0);
  compare_exact("linear, the mirror unmarked", y[4], y[0], (size_t)ny * t.es);
  for (int i = 0; i < 5; i++) {
    free(y[i]);
    f->buffer_free(t.be, dy[i]);
  }
  void *dev[] = {dx, dw, db, db2, dh};
  for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
    f->buffer_free(t.be, dev[i]);
  free(x), free(w), free(b), free(b2);
  clt_teardown(&t);
}

/* linear_group: one launch of the gemv kernel for many parts (a UNet's
 * time-embedding projections) gives each part's linear bit for bit; 40
 * parts (two launches of 32 and 8), widths of 1 to 1280, some without a
 * bias; 2 and 3 rows; then one part 2-byte aligned, which sends the whole
 * group to the linears one by one (the same bits again). */
static void group_case(clt *t, int64_t rows, bool misalign) {
  enum { NP = 40 };
  const int64_t in = 1280;
  int64_t outs[NP], off[NP + 1];
  off[0] = 0;
  for (int i = 0; i < NP; i++) {
    outs[i] = i % 5 == 0 ? 1280 : i % 5 == 1 ? 320 : i % 5 == 2 ? 77 : 1 + i;
    off[i + 1] = off[i] + outs[i];
  }
  const int64_t nw = off[NP] * in + 8;
  float *w = rnd(&t->seed, nw, -.1f, .1f), *b = rnd(&t->seed, off[NP], -1, 1);
  void *x = clt_rnd(t, rows * in, -1, 1);
  void *dx = clt_up(t, x, (size_t)(rows * in) * t->es);
  float *dwf = clt_up(t, w, (size_t)nw * 4), *db = clt_up(t, b, off[NP] * 4);
  const weft_backend_iface *f = t->be->iface;
  uint16_t *dw = f->buffer_alloc(t->be, (size_t)nw * 2);
  ASSERT(dw);
  ASSERT_OK(f->convert(t->be, dw, WEFT_F16, dwf, WEFT_F32, nw));
  ASSERT_OK(weft_cuda_mark_half_as(t->be, dw, (size_t)nw * 2, WEFT_F16));
  void *dy1 = clt_poison(t, rows * off[NP]),
       *dy2 = clt_poison(t, rows * off[NP]);
  weft_linear_part parts[NP];
  for (int i = 0; i < NP; i++) {
    /* part 7 starts 8 values on (still 16-byte aligned), or 1 (2-byte) */
    const int64_t wo = off[i] * in + (i == 7 ? (misalign ? 1 : 8) : 0);
    parts[i] = (weft_linear_part){
        (const float *)(dw + wo), i % 3 == 1 ? NULL : db + off[i], outs[i],
        (float *)((char *)dy1 + (size_t)(rows * off[i]) * t->es)};
    ASSERT_OK(
        f->linear(t->be, dx, rows, in, parts[i].weight, parts[i].bias, outs[i],
                  (float *)((char *)dy2 + (size_t)(rows * off[i]) * t->es)));
  }
  ASSERT(f->linear_group);
  ASSERT_OK(f->linear_group(t->be, dx, rows, in, NP, parts));
  void *y1 = clt_down(t, dy1, rows * off[NP]),
       *y2 = clt_down(t, dy2, rows * off[NP]);
  char what[96];
  snprintf(what, sizeof what, "linear group of %d, %lld rows%s", NP,
           (long long)rows, misalign ? ", one part 2-byte aligned" : "");
  compare_exact(what, y1, y2, (size_t)(rows * off[NP]) * t->es);
  /* and the linears themselves against the CPU's on the same 16-bit
   * values: part 0's first row */
  float *x32 = malloc((size_t)in * 4), *w32 = malloc((size_t)(in * 1280) * 4),
        *yc = malloc(1280 * 4), *yg = malloc(1280 * 4);
  uint16_t *wh = malloc((size_t)(in * 1280) * 2);
  ASSERT(x32 && w32 && yc && yg && wh);
  ASSERT_OK(f->buffer_copy(t->be, wh, dw, (size_t)(in * 1280) * 2,
                           WEFT_COPY_DEVICE_TO_HOST));
  ASSERT_OK(
      t->cpu->iface->convert(t->cpu, w32, WEFT_F32, wh, WEFT_F16, in * 1280));
  ASSERT_OK(t->cpu->iface->convert(t->cpu, x32, WEFT_F32, x, t->act, in));
  ASSERT_OK(t->cpu->iface->linear(t->cpu, x32, 1, in, w32, b, 1280, yc));
  ASSERT_OK(t->cpu->iface->convert(t->cpu, yg, WEFT_F32, y1, t->act, 1280));
  for (int64_t j = 0; j < 1280; j++)
    ASSERT(fabsf(yg[j] - yc[j]) <= 2e-3f * (1 + fabsf(yc[j])));
  free(x32), free(w32), free(yc), free(yg), free(wh);
  ASSERT_OK(weft_cuda_unmark_half(t->be, dw));
  void *dev[] = {dx, dwf, db, dw, dy1, dy2};
  for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
    f->buffer_free(t->be, dev[i]);
  free(w), free(b), free(x), free(y1), free(y2);
}

TEST(linear_group_fp16) {
  clt t = clt_setup(WEFT_CUDA_FP16, true);
  group_case(&t, 2, false);
  group_case(&t, 3, false);
  group_case(&t, 2, true);
  clt_teardown(&t);
}

/* ---- cuDNN attention plans kept on disk (WEFT_CACHE_DIR) ----------------
 * A fresh backend runs SD's cross-attention (a runtime-compiled engine on
 * an H200) and writes its plan; the next fresh backend takes the plan
 * from the file (counted, no new file) and gives the same bits; a file
 * overwritten with junk is not taken (built anew, the same bits, written
 * again); WEFT_CACHE_DIR=off reads and writes none. */

/* One fresh fp16 backend's output of the 2x8 x 4096 x 77 d 40 attention
 * on fixed inputs into out (n values); its plan counts into *st. */
static void kept_attention(float *out, int64_t n, weft_cuda_plan_stats *st) {
  weft_backend *be = weft_backend_cuda_new(0), *cpu = weft_backend_cpu_new(0);
  ASSERT(be && cpu);
  ASSERT_OK(weft_cuda_set_precision(be, WEFT_CUDA_FP16));
  ASSERT_OK(weft_cuda_set_act_dtype(be, WEFT_F16));
  const int64_t b = 2, h = 8, lq = 4096, lk = 77, d = 40;
  const int64_t nq = b * h * lq * d, nk = b * h * lk * d;
  ASSERT_EQ(n, nq);
  float *hq = malloc((size_t)nq * 4), *hk = malloc((size_t)nk * 4);
  ASSERT(hq && hk);
  for (int64_t i = 0; i < nq; i++)
    hq[i] = (float)((i * 7919 % 2001) - 1000) / 500.0f;
  for (int64_t i = 0; i < nk; i++)
    hk[i] = (float)((i * 104729 % 2001) - 1000) / 1000.0f;
  float *q = be->iface->buffer_alloc(be, (size_t)nq * 2),
        *k = be->iface->buffer_alloc(be, (size_t)nk * 2),
        *o = be->iface->buffer_alloc(be, (size_t)nq * 2),
        *t = be->iface->buffer_alloc(be, (size_t)nq * 4);
  ASSERT(q && k && o && t);
  ASSERT_OK(be->iface->buffer_copy(be, t, hq, (size_t)nq * 4,
                                   WEFT_COPY_HOST_TO_DEVICE));
  ASSERT_OK(be->iface->convert(be, q, WEFT_F16, t, WEFT_F32, nq));
  ASSERT_OK(be->iface->buffer_copy(be, t, hk, (size_t)nk * 4,
                                   WEFT_COPY_HOST_TO_DEVICE));
  ASSERT_OK(be->iface->convert(be, k, WEFT_F16, t, WEFT_F32, nk));
  weft_attn_args a = blhd_attention(b, h, lq, lk, d);
  a.q = q, a.k = k, a.v = k, a.o = o;
  ASSERT_STR_EQ(weft_cuda_attention_path(be, &a), "cudnn");
  ASSERT_OK(be->iface->attention(be, &a));
  ASSERT_OK(be->iface->convert(be, t, WEFT_F32, o, WEFT_F16, nq));
  ASSERT_OK(be->iface->buffer_copy(be, out, t, (size_t)nq * 4,
                                   WEFT_COPY_DEVICE_TO_HOST));
  ASSERT_OK(be->iface->synchronize(be));
  ASSERT_OK(weft_cuda_plan_stats_get(be, st));
  be->iface->buffer_free(be, q), be->iface->buffer_free(be, k);
  be->iface->buffer_free(be, o), be->iface->buffer_free(be, t);
  free(hq), free(hk);
  weft_backend_free(be), weft_backend_free(cpu);
}

/* the plan files in dir (their count; the first's path into path) */
static int plan_files(const char *dir, char *path, size_t n) {
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "ls %s/cudnn-attn-*.plan 2>/dev/null", dir);
  FILE *p = popen(cmd, "r");
  ASSERT(p != NULL);
  int count = 0;
  char line[4200];
  while (fgets(line, sizeof line, p)) {
    line[strcspn(line, "\n")] = 0;
    if (!count++) snprintf(path, n, "%s", line);
  }
  pclose(p);
  return count;
}

TEST(cudnn_attention_plans_kept_on_disk) {
  if (!weft_cuda_available()) weft_test_skip("no CUDA device");
  char dir[4096], path[4200] = "";
  snprintf(dir, sizeof dir, "%s/plans", weft_test_tmpdir());
  setenv("WEFT_CACHE_DIR", dir, 1);
  const int64_t n = 2 * 8 * 4096 * 40;
  float *o1 = malloc((size_t)n * 4), *o2 = malloc((size_t)n * 4);
  ASSERT(o1 && o2);
  weft_cuda_plan_stats st;
  kept_attention(o1, n, &st);
  printf("first backend: %llu cuDNN plans (%.3f s), %llu kept, %llu "
         "written\n",
         (unsigned long long)st.cudnn_plans, st.cudnn_s,
         (unsigned long long)st.cudnn_kept,
         (unsigned long long)st.cudnn_stored);
  ASSERT_EQ(st.cudnn_kept, 0);
  if (!st.cudnn_stored)
    weft_test_skip("cuDNN's engine for the shape is not runtime-compiled "
                   "here: nothing to keep");
  ASSERT_EQ(plan_files(dir, path, sizeof path), 1);
  size_t len = 0;
  char *text = weft_test_read_file(path, &len);
  ASSERT(text != NULL);
  ASSERT(!strncmp(text, "weft cuDNN attention plan 1; cuDNN ", 35));
  free(text);
  kept_attention(o2, n, &st);
  printf("second backend: %llu cuDNN plans (%.3f s), %llu kept, %llu "
         "written\n",
         (unsigned long long)st.cudnn_plans, st.cudnn_s,
         (unsigned long long)st.cudnn_kept,
         (unsigned long long)st.cudnn_stored);
  ASSERT_EQ(st.cudnn_kept, 1);
  ASSERT_EQ(st.cudnn_stored, 0);
  ASSERT_EQ(memcmp(o1, o2, (size_t)n * 4), 0);
  /* junk in the file: built anew and written again */
  FILE *f = fopen(path, "wb");
  ASSERT(f != NULL);
  fputs("weft cuDNN attention plan 1; not this one\n{}", f);
  fclose(f);
  memset(o2, 0, (size_t)n * 4);
  kept_attention(o2, n, &st);
  ASSERT_EQ(st.cudnn_kept, 0);
  ASSERT_EQ(st.cudnn_stored, 1);
  ASSERT_EQ(memcmp(o1, o2, (size_t)n * 4), 0);
  /* off: none read, none written */
  ASSERT_EQ(unlink(path), 0);
  setenv("WEFT_CACHE_DIR", "off", 1);
  kept_attention(o2, n, &st);
  ASSERT_EQ(st.cudnn_kept, 0);
  ASSERT_EQ(st.cudnn_stored, 0);
  ASSERT_EQ(plan_files(dir, path, sizeof path), 0);
  ASSERT_EQ(memcmp(o1, o2, (size_t)n * 4), 0);
  unsetenv("WEFT_CACHE_DIR");
  free(o1), free(o2);
}
