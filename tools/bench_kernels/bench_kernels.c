/* bench_kernels.c - GFLOP/s of weft's CPU kernels at the SD1.5 UNet's
 * shapes, next to plain cblas_sgemm on the equivalent GEMM in the same run,
 * plus bandwidth of the memory-bound kernels.  Prints a table and writes
 * JSON (--json FILE, default bench_kernels.json).
 *
 *   bench_kernels [--threads N] [--batch B] [--min-time S] [--filter STR]
 *                 [--isa portable|avx2] [--chunk ROWS] [--json FILE]
 *
 * The default run (batch 1, 2 threads on a 2-core machine) takes under a
 * minute; each case repeats until --min-time seconds (default 0.4) passed,
 * at least twice, and reports the median. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/cpu/cpu.h"

typedef struct opts {
  int threads, batch;
  double min_time;
  const char *filter, *json, *isa;
  int64_t chunk;
} opts;

typedef struct result {
  char name[64], kind[16], shape[96];
  double gflop;           /* per call; 0 for memory-bound cases */
  double mbytes;          /* bytes moved per call (memory-bound cases) */
  double weft_ms, ref_ms; /* ref_ms 0 when no sgemm comparison */
  double weft_cpu_ms, ref_cpu_ms;
} result;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

typedef void (*bench_fn)(void *arg);

/* Process CPU time: on a shared machine, wall time says what a user sees
 * and CPU time what the kernel costs (with --threads 1 it is the kernel's
 * own time, whatever else runs). */
static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Median wall time of fn in ms; *cpu_ms gets the median CPU time. */
static double time_ms(const opts *o, bench_fn fn, void *arg, double *cpu_ms) {
  double t[64], c[64];
  int n = 0;
  fn(arg); /* warm-up: page faults, OpenBLAS buffers */
  double start = now();
  while (n < 64 && (n < 2 || now() - start < o->min_time)) {
    double t0 = now(), c0 = cpu_now();
    fn(arg);
    c[n] = (cpu_now() - c0) * 1e3;
    t[n++] = (now() - t0) * 1e3;
  }
  qsort(t, (size_t)n, sizeof *t, cmp_d);
  qsort(c, (size_t)n, sizeof *c, cmp_d);
  *cpu_ms = c[n / 2];
  return t[n / 2];
}

static float *rnd(int64_t n, unsigned seed) {
  float *p = malloc((size_t)n * sizeof(float));
  if (!p) {
    fprintf(stderr, "bench_kernels: out of memory (%lld floats)\n",
            (long long)n);
    exit(1);
  }
  for (int64_t i = 0; i < n; i++) {
    seed = seed * 1664525u + 1013904223u;
    p[i] = (float)((seed >> 8) * 0x1p-24) - 0.5f;
  }
  return p;
}

/* ---- cases ----------------------------------------------------------------
 */

typedef struct sgemm_arg {
  int m, n, k, batch;
  const float *a, *b;
  float *c;
} sgemm_arg;

static void run_sgemm(void *p) { /* C = A[m,k] @ B[k,n], row-major */
  sgemm_arg *g = p;
  for (int i = 0; i < g->batch; i++)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->m, g->n, g->k,
                1.0f, g->a, g->k, g->b, g->n, 0.0f, g->c, g->n);
}

typedef struct conv_arg {
  weft_cpu_ctx *ctx;
  weft_conv2d_args a;
} conv_arg;

static void run_conv(void *p) {
  conv_arg *c = p;
  if (weft_cpu_conv2d(c->ctx, &c->a) != 0) abort();
}

static void bench_conv(const opts *o, weft_cpu_ctx *ctx, result *r, int cin,
                       int cout, int hw, int k) {
  int pad = k / 2, b = o->batch;
  int64_t n = (int64_t)hw * hw, kk = (int64_t)cin * k * k;
  float *x = rnd((int64_t)b * cin * n, 1), *w = rnd(cout * kk, 2),
        *bias = rnd(cout, 3), *y = rnd((int64_t)b * cout * n, 4);
  conv_arg ca = {ctx,
                 {.batch = b,
                  .c_in = cin,
                  .h_in = hw,
                  .w_in = hw,
                  .c_out = cout,
                  .k_h = k,
                  .k_w = k,
                  .stride_h = 1,
                  .stride_w = 1,
                  .pad_top = pad,
                  .pad_left = pad,
                  .pad_bottom = pad,
                  .pad_right = pad,
                  .x = x,
                  .weight = w,
                  .bias = bias,
                  .y = y}};
  snprintf(r->name, sizeof r->name, "conv%dx%d %d->%d %dx%d", k, k, cin, cout,
           hw, hw);
  snprintf(r->kind, sizeof r->kind, "conv2d");
  snprintf(r->shape, sizeof r->shape, "x[%d,%d,%d,%d] w[%d,%d,%d,%d]", b, cin,
           hw, hw, cout, cin, k, k);
  r->gflop = 2.0 * b * cout * kk * n * 1e-9;
  r->weft_ms = time_ms(o, run_conv, &ca, &r->weft_cpu_ms);
  /* the same GEMM with the im2col matrix already built: [cout,kk]@[kk,n] */
  float *col = rnd(kk * n, 5);
  sgemm_arg g = {cout, (int)n, (int)kk, b, w, col, y};
  r->ref_ms = time_ms(o, run_sgemm, &g, &r->ref_cpu_ms);
  free(x), free(w), free(bias), free(y), free(col);
}

typedef struct lin_arg {
  weft_cpu_ctx *ctx;
  const float *x, *w, *b;
  float *y;
  int64_t rows, in, out;
} lin_arg;

static void run_linear(void *p) {
  lin_arg *l = p;
  if (weft_cpu_linear(l->ctx, l->x, l->rows, l->in, l->w, l->b, l->out, l->y))
    abort();
}

static void run_sgemm_nt(void *p) { /* y = x @ w^T, as Linear without bias */
  lin_arg *l = p;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)l->rows,
              (int)l->out, (int)l->in, 1.0f, l->x, (int)l->in, l->w, (int)l->in,
              0.0f, l->y, (int)l->out);
}

static void bench_linear(const opts *o, weft_cpu_ctx *ctx, result *r,
                         int64_t rows, int64_t in, int64_t out,
                         const char *what) {
  rows *= o->batch;
  lin_arg l = {ctx,
               rnd(rows * in, 1),
               rnd(out * in, 2),
               rnd(out, 3),
               rnd(rows * out, 4),
               rows,
               in,
               out};
  snprintf(r->name, sizeof r->name, "linear %lldx%lld->%lld %s",
           (long long)rows, (long long)in, (long long)out, what);
  snprintf(r->kind, sizeof r->kind, "linear");
  snprintf(r->shape, sizeof r->shape, "x[%lld,%lld] w[%lld,%lld]",
           (long long)rows, (long long)in, (long long)out, (long long)in);
  r->gflop = 2.0 * rows * in * out * 1e-9;
  r->weft_ms = time_ms(o, run_linear, &l, &r->weft_cpu_ms);
  r->ref_ms = time_ms(o, run_sgemm_nt, &l, &r->ref_cpu_ms);
  free((void *)l.x), free((void *)l.w), free((void *)l.b), free(l.y);
}

typedef struct attn_arg {
  weft_cpu_ctx *ctx;
  weft_attn_args a;
  float *s; /* full score matrix for the sgemm baseline */
} attn_arg;

static void run_attn(void *p) {
  attn_arg *t = p;
  if (weft_cpu_attention(t->ctx, &t->a) != 0) abort();
}

/* Baseline: the two GEMMs per head on a full lq x lk score matrix, no
 * softmax: the floor a BLAS-based attention cannot beat. */
static void run_attn_sgemm(void *p) {
  attn_arg *t = p;
  const weft_attn_args *a = &t->a;
  for (int64_t b = 0; b < a->batch; b++)
    for (int64_t h = 0; h < a->heads; h++) {
      const float *q = a->q + b * a->q_s.b + h * a->q_s.h;
      const float *k = a->k + b * a->k_s.b + h * a->k_s.h;
      const float *v = a->v + b * a->v_s.b + h * a->v_s.h;
      float *o = a->o + b * a->o_s.b + h * a->o_s.h;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)a->lq,
                  (int)a->lk, (int)a->d, 1.0f, q, (int)a->q_s.l, k,
                  (int)a->k_s.l, 0.0f, t->s, (int)a->lk);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)a->lq,
                  (int)a->dv, (int)a->lk, 1.0f, t->s, (int)a->lk, v,
                  (int)a->v_s.l, 0.0f, o, (int)a->o_s.l);
    }
}

static void bench_attention(const opts *o, weft_cpu_ctx *ctx, result *r,
                            int64_t heads, int64_t lq, int64_t lk, int64_t d) {
  int64_t b = o->batch;
  /* diffusers' layout: projections [B, L, H*d] read in place */
  attn_arg t = {ctx,
                {.batch = b,
                 .heads = heads,
                 .lq = lq,
                 .lk = lk,
                 .d = d,
                 .dv = d,
                 .q_chunk = o->chunk},
                NULL};
  t.a.q = rnd(b * lq * heads * d, 1);
  t.a.k = rnd(b * lk * heads * d, 2);
  t.a.v = rnd(b * lk * heads * d, 3);
  t.a.o = rnd(b * lq * heads * d, 4);
  t.a.q_s = weft_attn_strides_blhd(heads, lq, d);
  t.a.k_s = weft_attn_strides_blhd(heads, lk, d);
  t.a.v_s = weft_attn_strides_blhd(heads, lk, d);
  t.a.o_s = weft_attn_strides_blhd(heads, lq, d);
  t.s = rnd(lq * lk, 5);
  snprintf(r->name, sizeof r->name, "attention %lldx%lld d=%lld h=%lld",
           (long long)lq, (long long)lk, (long long)d, (long long)heads);
  snprintf(r->kind, sizeof r->kind, "attention");
  snprintf(r->shape, sizeof r->shape, "q[%lld,%lld,%lld] kv[%lld,%lld,%lld]",
           (long long)b, (long long)lq, (long long)(heads * d), (long long)b,
           (long long)lk, (long long)(heads * d));
  r->gflop = 4.0 * b * heads * lq * lk * d * 1e-9;
  r->weft_ms = time_ms(o, run_attn, &t, &r->weft_cpu_ms);
  r->ref_ms = time_ms(o, run_attn_sgemm, &t, &r->ref_cpu_ms);
  free((void *)t.a.q), free((void *)t.a.k), free((void *)t.a.v);
  free(t.a.o), free(t.s);
}

/* ---- memory-bound kernels ---------------------------------------------- */

typedef struct mem_arg {
  weft_cpu_ctx *ctx;
  int which;
  float *x, *y, *g, *b;
  int64_t n1, n2, n3;
} mem_arg;

static void run_mem(void *p) {
  mem_arg *m = p;
  int rc = 0;
  switch (m->which) {
  case 0:
    rc = weft_cpu_group_norm(m->ctx, m->x, m->y, m->n1, m->n2, m->n3, 32, 1e-5f,
                             m->g, m->b, WEFT_ACT_SILU);
    break;
  case 1:
    rc = weft_cpu_layer_norm(m->ctx, m->x, m->y, m->n1, m->n2, 1e-5f, m->g,
                             m->b);
    break;
  case 2: rc = weft_cpu_softmax(m->ctx, m->x, m->y, m->n1, m->n2); break;
  case 3:
    rc =
        weft_cpu_gated_act(m->ctx, WEFT_ACT_GELU_ERF, m->x, m->y, m->n1, m->n2);
    break;
  case 4: rc = weft_cpu_act(m->ctx, WEFT_ACT_SILU, m->x, m->y, m->n1); break;
  case 5: {
    int64_t xs[4] = {m->n1, m->n2, m->n3, 1}, bs[4] = {m->n1, m->n2, 1, 1};
    rc = weft_cpu_binary(m->ctx, WEFT_BIN_ADD, m->x, 4, xs, m->b, 4, bs, m->y);
    break;
  }
  case 6:
    rc = weft_cpu_convert(m->ctx, m->y, WEFT_F32, m->x, WEFT_F16, m->n1);
    break;
  case 7:
    rc = weft_cpu_upsample_nearest2x(m->ctx, m->x, m->y, m->n1, m->n2, m->n2);
    break;
  }
  if (rc != 0) abort();
}

static void bench_mem(const opts *o, weft_cpu_ctx *ctx, result *r, int which,
                      const char *name, int64_t n1, int64_t n2, int64_t n3,
                      double bytes) {
  int64_t n = n1 * n2 * n3;
  mem_arg m = {ctx,
               which,
               rnd(n, 1),
               rnd(4 * n, 2),
               rnd(n2 > 4096 ? n2 : 4096, 3),
               rnd(n1 * n2 > 4096 ? n1 * n2 : 4096, 4),
               n1,
               n2,
               n3};
  if (which == 6) { /* f16 input: fill with valid halves */
    uint16_t *h = (uint16_t *)m.x;
    for (int64_t i = 0; i < n1; i++)
      h[i] = (uint16_t)(0x3c00 + (i & 0x3ff));
  }
  snprintf(r->name, sizeof r->name, "%s", name);
  snprintf(r->kind, sizeof r->kind, "memory");
  snprintf(r->shape, sizeof r->shape, "[%lld,%lld,%lld]", (long long)n1,
           (long long)n2, (long long)n3);
  r->mbytes = bytes * 1e-6;
  r->weft_ms = time_ms(o, run_mem, &m, &r->weft_cpu_ms);
  free(m.x), free(m.y), free(m.g), free(m.b);
}

/* ---- driver ----------------------------------------------------------------
 */

static int want(const opts *o, const char *name) {
  return !o->filter || strstr(name, o->filter);
}

int main(int argc, char **argv) {
  opts o = {.threads = 0,
            .batch = 1,
            .min_time = 0.4,
            .json = "bench_kernels.json",
            .chunk = 0};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--threads") && v)
      o.threads = atoi(v), i++;
    else if (!strcmp(a, "--batch") && v)
      o.batch = atoi(v), i++;
    else if (!strcmp(a, "--min-time") && v)
      o.min_time = atof(v), i++;
    else if (!strcmp(a, "--filter") && v)
      o.filter = v, i++;
    else if (!strcmp(a, "--json") && v)
      o.json = v, i++;
    else if (!strcmp(a, "--isa") && v)
      o.isa = v, i++;
    else if (!strcmp(a, "--chunk") && v)
      o.chunk = atoll(v), i++;
    else {
      fprintf(stderr,
              "usage: %s [--threads N] [--batch B] [--min-time S] "
              "[--filter STR] [--isa portable|avx2] [--chunk ROWS] "
              "[--json FILE]\n",
              argv[0]);
      return 2;
    }
  }
  if (o.batch < 1 || o.min_time < 0) {
    fprintf(stderr, "bench_kernels: --batch must be >= 1\n");
    return 2;
  }
  weft_cpu_ctx *ctx = weft_cpu_ctx_new(o.threads);
  if (!ctx) {
    fprintf(stderr, "bench_kernels: cannot create the CPU context\n");
    return 1;
  }
  if (o.isa && weft_cpu_set_isa(ctx, !strcmp(o.isa, "avx2")
                                         ? WEFT_CPU_ISA_AVX2
                                         : WEFT_CPU_ISA_PORTABLE) != 0) {
    fprintf(stderr, "bench_kernels: this CPU cannot run --isa %s\n", o.isa);
    return 2;
  }
  result res[64];
  int nr = 0;
  memset(res, 0, sizeof res);
  printf("weft CPU kernels: %d threads, isa %s, batch %d, OpenBLAS %s\n",
         weft_cpu_get_threads(ctx), weft_cpu_isa_name(ctx), o.batch,
         openblas_get_config());
  printf("%-36s %9s %8s %8s %9s %8s %8s %6s\n", "case", "weft ms", "GFLOP/s",
         "(cpu)", "sgemm ms", "GFLOP/s", "(cpu)", "ratio");

#define RUN(label, call)                                                       \
  do {                                                                         \
    if (want(&o, label) && nr < 64) {                                          \
      result *r = &res[nr++];                                                  \
      call;                                                                    \
      if (r->gflop > 0)                                                        \
        printf("%-36s %9.2f %8.1f %8.1f %9.2f %8.1f %8.1f %6.2f\n", r->name,   \
               r->weft_ms, r->gflop / r->weft_ms * 1e3,                        \
               r->gflop / r->weft_cpu_ms * 1e3, r->ref_ms,                     \
               r->gflop / r->ref_ms * 1e3, r->gflop / r->ref_cpu_ms * 1e3,     \
               r->ref_ms / r->weft_ms);                                        \
      else                                                                     \
        printf("%-36s %9.2f %8.1f GB/s (cpu %.1f ms)\n", r->name, r->weft_ms,  \
               r->mbytes / r->weft_ms, r->weft_cpu_ms);                        \
      fflush(stdout);                                                          \
    }                                                                          \
  } while (0)

  /* UNet resnet convs at a 64x64 latent (512x512 image) and below */
  RUN("conv3x3 320->320 64x64", bench_conv(&o, ctx, r, 320, 320, 64, 3));
  RUN("conv3x3 640->640 32x32", bench_conv(&o, ctx, r, 640, 640, 32, 3));
  RUN("conv3x3 1280->1280 16x16", bench_conv(&o, ctx, r, 1280, 1280, 16, 3));
  RUN("conv3x3 1280->1280 8x8", bench_conv(&o, ctx, r, 1280, 1280, 8, 3));
  RUN("conv3x3 4->320 64x64", bench_conv(&o, ctx, r, 4, 320, 64, 3));
  RUN("conv1x1 320->320 64x64", bench_conv(&o, ctx, r, 320, 320, 64, 1));
  /* transformer projections at 64x64 (4096 tokens, 320 channels) */
  RUN("linear 4096x320->320",
      bench_linear(&o, ctx, r, 4096, 320, 320, "q/k/v/out"));
  RUN("linear 4096x320->2560",
      bench_linear(&o, ctx, r, 4096, 320, 2560, "GEGLU proj"));
  RUN("linear 4096x1280->320",
      bench_linear(&o, ctx, r, 4096, 1280, 320, "ff out"));
  RUN("linear 77x768->320",
      bench_linear(&o, ctx, r, 77, 768, 320, "cross k/v"));
  /* attention: self at 64x64 (8 heads of 40), cross with 77 tokens */
  RUN("attention 4096x4096", bench_attention(&o, ctx, r, 8, 4096, 4096, 40));
  RUN("attention 4096x77", bench_attention(&o, ctx, r, 8, 4096, 77, 40));
  RUN("attention 1024x1024", bench_attention(&o, ctx, r, 8, 1024, 1024, 80));
  /* memory-bound kernels: GB/s counts one read of every input and one
   * write of every output (passes a kernel makes in cache are not counted) */
  int64_t b = o.batch;
  RUN("group_norm+silu 320x64x64",
      bench_mem(&o, ctx, r, 0, "group_norm+silu 320x64x64", b, 320, 4096,
                8.0 * b * 320 * 4096));
  RUN("layer_norm 4096x320", bench_mem(&o, ctx, r, 1, "layer_norm 4096x320",
                                       b * 4096, 320, 1, 8.0 * b * 4096 * 320));
  RUN("softmax 4096x4096", bench_mem(&o, ctx, r, 2, "softmax 4096x4096",
                                     b * 4096, 4096, 1, 8.0 * b * 4096 * 4096));
  RUN("geglu 4096x1280", bench_mem(&o, ctx, r, 3, "geglu 4096x1280", b * 4096,
                                   1280, 1, 12.0 * b * 4096 * 1280));
  RUN("silu 320x64x64", bench_mem(&o, ctx, r, 4, "silu 320x64x64",
                                  b * 320 * 4096, 1, 1, 8.0 * b * 320 * 4096));
  RUN("add [B,320,64,64]+[B,320,1,1]",
      bench_mem(&o, ctx, r, 5, "add [B,320,64,64]+[B,320,1,1]", b, 320, 4096,
                8.0 * b * 320 * 4096));
  RUN("upsample2x 640x32x32",
      bench_mem(&o, ctx, r, 7, "upsample2x 640x32x32", b * 640, 32, 32,
                20.0 * b * 640 * 1024));
  RUN("f16->f32 16M",
      bench_mem(&o, ctx, r, 6, "f16->f32 16M", 1 << 24, 1, 1, 6.0 * (1 << 24)));

  FILE *f = fopen(o.json, "w");
  if (!f) {
    fprintf(stderr, "bench_kernels: cannot write %s\n", o.json);
    weft_cpu_ctx_free(ctx);
    return 1;
  }
  fprintf(f, "{\n  \"threads\": %d,\n  \"isa\": \"%s\",\n  \"batch\": %d,\n",
          weft_cpu_get_threads(ctx), weft_cpu_isa_name(ctx), o.batch);
  fprintf(f, "  \"openblas\": \"%s\",\n  \"results\": [\n",
          openblas_get_config());
  for (int i = 0; i < nr; i++) {
    const result *r = &res[i];
    fprintf(f,
            "    {\"name\": \"%s\", \"kind\": \"%s\", \"shape\": \"%s\", "
            "\"weft_ms\": %.4f, \"weft_cpu_ms\": %.4f",
            r->name, r->kind, r->shape, r->weft_ms, r->weft_cpu_ms);
    if (r->gflop > 0)
      fprintf(f,
              ", \"gflop\": %.4f, \"weft_gflops\": %.2f, "
              "\"sgemm_ms\": %.4f, \"sgemm_cpu_ms\": %.4f, "
              "\"sgemm_gflops\": %.2f",
              r->gflop, r->gflop / r->weft_ms * 1e3, r->ref_ms, r->ref_cpu_ms,
              r->gflop / r->ref_ms * 1e3);
    else
      fprintf(f, ", \"mbytes\": %.3f, \"gbytes_per_s\": %.2f", r->mbytes,
              r->mbytes / r->weft_ms);
    fprintf(f, "}%s\n", i + 1 < nr ? "," : "");
  }
  fprintf(f, "  ]\n}\n");
  fclose(f);
  printf("wrote %s\n", o.json);
  weft_cpu_ctx_free(ctx);
  return 0;
}
