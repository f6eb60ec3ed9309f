/* test_kernels_torch.c - the CPU kernels against outputs torch computed
 * (the .safetensors files in tests/fixtures/kernels, written by
 * tools/fixtures/gen_kernel_fixtures.py, which documents each case's
 * parameters).  Both of torch's float32 result and ours carry rounding
 * error, so dot-product ops (K <= 100 here, |terms| <= 2) must agree within
 * 1e-5 absolute + 1e-5 relative, pointwise ops within 1e-6 + 1e-5 relative,
 * data movement and conversions exactly.  Every case runs on every ISA. */
#include "kref.h"
#include "weft/safetensors.h"

typedef struct fx {
  float *data; /* (transfer full) aligned copy of the tensor */
  int ndim;
  int64_t shape[WEFT_MAX_DIMS];
  int64_t n;
} fx;

static weft_st_file *fx_open(const char *name) {
  char path[1024], err[512];
  snprintf(path, sizeof path, "%s/fixtures/kernels/%s.safetensors",
           weft_test_srcdir(), name);
  weft_st_file *f = NULL;
  int rc = weft_st_open(path, &f, err, sizeof err);
  if (rc != 0) {
    fprintf(stderr, "%s\n", err);
    abort();
  }
  return f;
}

static const weft_st_tensor *fx_find(weft_st_file *f, const char *c,
                                     const char *t) {
  char key[256];
  snprintf(key, sizeof key, "%s.%s", c, t);
  return weft_st_find(f, key);
}

static fx fx_get(weft_st_file *f, const char *c, const char *t) {
  const weft_st_tensor *st = fx_find(f, c, t);
  if (!st || st->dtype != WEFT_ST_F32) {
    fprintf(stderr, "fixture %s: no F32 tensor %s.%s\n", weft_st_path(f), c, t);
    abort();
  }
  fx x = {.ndim = st->ndim, .n = 1};
  for (int i = 0; i < st->ndim; i++)
    x.n *= (x.shape[i] = st->shape[i]);
  x.data = malloc(st->nbytes ? st->nbytes : 4);
  memcpy(x.data, st->data, st->nbytes);
  return x;
}

static int64_t fx_param(weft_st_file *f, const char *c, int i) {
  const weft_st_tensor *st = fx_find(f, c, "params");
  ASSERT(st && st->dtype == WEFT_ST_I64 && (int64_t)i < st->shape[0]);
  int64_t v;
  memcpy(&v, (const char *)st->data + 8 * i, 8);
  return v;
}

static float fx_fparam(weft_st_file *f, const char *c, int i) {
  const weft_st_tensor *st = fx_find(f, c, "fparams");
  ASSERT(st && st->dtype == WEFT_ST_F32 && (int64_t)i < st->shape[0]);
  float v;
  memcpy(&v, (const char *)st->data + 4 * i, 4);
  return v;
}

static double *to_double(const fx *x) {
  double *d = kr_zalloc(sizeof(double) * x->n);
  for (int64_t i = 0; i < x->n; i++)
    d[i] = x->data[i];
  return d;
}

/* Compares got with the fixture tensor c.out (or c.<t>). */
static void expect(weft_st_file *f, const char *c, const char *t,
                   const float *got, double atol, double rtol) {
  fx want = fx_get(f, c, t);
  double *ref = to_double(&want);
  fprintf(stderr, "%s %s.%s: max abs diff %.3g\n", weft_st_path(f), c, t,
          kr_max_abs_err(got, ref, want.n));
  kr_assert_close(__FILE__, __LINE__, c, got, ref, NULL, want.n, atol, rtol);
  free(ref), free(want.data);
}

#define EACH_ISA(ctx)                                                          \
  weft_cpu_isa isas_[2];                                                       \
  int n_isa_ = kr_isas(isas_);                                                 \
  for (int ii_ = 0; ii_ < n_isa_; ii_++)                                       \
    for (weft_cpu_ctx *ctx = kr_ctx(isas_[ii_], 2); ctx;                       \
         weft_cpu_ctx_free(ctx), ctx = NULL)

#define DOT_TOL 1e-5, 1e-5
#define PW_TOL 1e-6, 1e-5

TEST(torch_gemm_addmm_bmm_and_linear) {
  weft_st_file *f = fx_open("gemm");
  EACH_ISA(ctx) {
    const char *cases[] = {"addmm", "gemm_tt"};
    for (int ci = 0; ci < 2; ci++) {
      const char *c = cases[ci];
      fx a = fx_get(f, c, "a"), b = fx_get(f, c, "b"), c0 = fx_get(f, c, "c0");
      int ta = (int)fx_param(f, c, 0), tb = (int)fx_param(f, c, 1);
      int64_t m = c0.shape[0], n = c0.shape[1],
              k = ta ? a.shape[0] : a.shape[1];
      weft_gemm_args g = {.m = m,
                          .n = n,
                          .k = k,
                          .trans_a = ta,
                          .trans_b = tb,
                          .alpha = fx_fparam(f, c, 0),
                          .beta = fx_fparam(f, c, 1),
                          .a = a.data,
                          .lda = a.shape[1],
                          .b = b.data,
                          .ldb = b.shape[1],
                          .c = c0.data,
                          .ldc = n};
      ASSERT_OK(weft_cpu_gemm(ctx, &g));
      expect(f, c, "out", c0.data, DOT_TOL);
      free(a.data), free(b.data), free(c0.data);
    }
    fx a = fx_get(f, "bmm", "a"), b = fx_get(f, "bmm", "b");
    int64_t B = a.shape[0], m = a.shape[1], k = a.shape[2], n = b.shape[2];
    float *y = kr_zalloc(sizeof(float) * B * m * n);
    weft_gemm_args g = {.m = m,
                        .n = n,
                        .k = k,
                        .alpha = 1,
                        .a = a.data,
                        .lda = k,
                        .b = b.data,
                        .ldb = n,
                        .c = y,
                        .ldc = n,
                        .batch = B,
                        .stride_a = m * k,
                        .stride_b = k * n,
                        .stride_c = m * n};
    ASSERT_OK(weft_cpu_gemm(ctx, &g));
    expect(f, "bmm", "out", y, DOT_TOL);
    free(a.data), free(b.data), free(y);

    fx x = fx_get(f, "linear", "x"), w = fx_get(f, "linear", "w"),
       bias = fx_get(f, "linear", "b");
    int64_t in = x.shape[2], out = w.shape[0], rows = x.n / in;
    y = kr_zalloc(sizeof(float) * rows * out);
    ASSERT_OK(
        weft_cpu_linear(ctx, x.data, rows, in, w.data, bias.data, out, y));
    expect(f, "linear", "out", y, DOT_TOL);
    free(x.data), free(w.data), free(bias.data), free(y);
  }
  weft_st_close(f);
}

TEST(torch_conv2d_padding_stride_and_pointwise) {
  weft_st_file *f = fx_open("conv2d");
  const char *cases[] = {"pad1",     "batch3",    "down",
                         "vae_down", "pointwise", "nobias"};
  EACH_ISA(ctx) {
    for (int ci = 0; ci < 6; ci++) {
      const char *c = cases[ci];
      fx x = fx_get(f, c, "x"), w = fx_get(f, c, "w");
      fx b = {0};
      if (fx_find(f, c, "b")) b = fx_get(f, c, "b");
      weft_conv2d_args a = {.batch = x.shape[0],
                            .c_in = x.shape[1],
                            .h_in = x.shape[2],
                            .w_in = x.shape[3],
                            .c_out = w.shape[0],
                            .k_h = w.shape[2],
                            .k_w = w.shape[3],
                            .stride_h = fx_param(f, c, 0),
                            .stride_w = fx_param(f, c, 1),
                            .pad_top = fx_param(f, c, 2),
                            .pad_left = fx_param(f, c, 3),
                            .pad_bottom = fx_param(f, c, 4),
                            .pad_right = fx_param(f, c, 5),
                            .x = x.data,
                            .weight = w.data,
                            .bias = b.data};
      int64_t ho = weft_conv2d_out_size(a.h_in, a.k_h, a.stride_h, a.pad_top,
                                        a.pad_bottom);
      int64_t wo = weft_conv2d_out_size(a.w_in, a.k_w, a.stride_w, a.pad_left,
                                        a.pad_right);
      a.y = kr_zalloc(sizeof(float) * a.batch * a.c_out * ho * wo);
      ASSERT_OK(weft_cpu_conv2d(ctx, &a));
      expect(f, c, "out", a.y, DOT_TOL);
      free(x.data), free(w.data), free(b.data), free(a.y);
    }
  }
  weft_st_close(f);
}

TEST(torch_group_norm_layer_norm_softmax) {
  weft_st_file *f = fx_open("norm");
  EACH_ISA(ctx) {
    const char *gn[] = {"gn_silu", "gn_plain", "gn_32"};
    for (int ci = 0; ci < 3; ci++) {
      const char *c = gn[ci];
      fx x = fx_get(f, c, "x"), g = {0}, b = {0};
      if (fx_find(f, c, "gamma"))
        g = fx_get(f, c, "gamma"), b = fx_get(f, c, "beta");
      float *y = kr_zalloc(sizeof(float) * x.n);
      ASSERT_OK(weft_cpu_group_norm(
          ctx, x.data, y, x.shape[0], x.shape[1], x.shape[2] * x.shape[3],
          fx_param(f, c, 0), fx_fparam(f, c, 0), g.data, b.data,
          fx_param(f, c, 1) ? WEFT_ACT_SILU : WEFT_ACT_NONE));
      expect(f, c, "out", y, PW_TOL);
      free(x.data), free(g.data), free(b.data), free(y);
    }
    const char *ln[] = {"ln_affine", "ln_plain"};
    for (int ci = 0; ci < 2; ci++) {
      const char *c = ln[ci];
      fx x = fx_get(f, c, "x"), g = {0}, b = {0};
      if (fx_find(f, c, "gamma"))
        g = fx_get(f, c, "gamma"), b = fx_get(f, c, "beta");
      int64_t dim = x.shape[x.ndim - 1];
      float *y = kr_zalloc(sizeof(float) * x.n);
      ASSERT_OK(weft_cpu_layer_norm(ctx, x.data, y, x.n / dim, dim,
                                    fx_fparam(f, c, 0), g.data, b.data));
      expect(f, c, "out", y, PW_TOL);
      free(x.data), free(g.data), free(b.data), free(y);
    }
    const char *sm[] = {"softmax77", "softmax9"};
    for (int ci = 0; ci < 2; ci++) {
      fx x = fx_get(f, sm[ci], "x");
      int64_t dim = x.shape[x.ndim - 1];
      float *y = kr_zalloc(sizeof(float) * x.n);
      ASSERT_OK(weft_cpu_softmax(ctx, x.data, y, x.n / dim, dim));
      expect(f, sm[ci], "out", y, PW_TOL);
      free(x.data), free(y);
    }
  }
  weft_st_close(f);
}

/* [B,H,L,d] -> [B,L,H*d] */
static float *to_blhd(const fx *t) {
  int64_t B = t->shape[0], H = t->shape[1], L = t->shape[2], d = t->shape[3];
  float *o = kr_zalloc(sizeof(float) * t->n);
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t l = 0; l < L; l++)
        memcpy(o + ((b * L + l) * H + h) * d,
               t->data + ((b * H + h) * L + l) * d, sizeof(float) * d);
  return o;
}

TEST(torch_scaled_dot_product_attention_both_layouts) {
  weft_st_file *f = fx_open("attention");
  const char *cases[] = {"self", "cross", "causal", "causal_rect", "dv_scale"};
  EACH_ISA(ctx) {
    for (int ci = 0; ci < 5; ci++) {
      const char *c = cases[ci];
      fx q = fx_get(f, c, "q"), k = fx_get(f, c, "k"), v = fx_get(f, c, "v");
      int64_t B = q.shape[0], H = q.shape[1], lq = q.shape[2], d = q.shape[3],
              lk = k.shape[2], dv = v.shape[3];
      for (int layout = 0; layout < 2; layout++) {
        weft_attn_args a = {.batch = B,
                            .heads = H,
                            .lq = lq,
                            .lk = lk,
                            .d = d,
                            .dv = dv,
                            .causal = (int)fx_param(f, c, 0),
                            .scale = fx_fparam(f, c, 0),
                            .q_chunk = 4};
        float *o = kr_zalloc(sizeof(float) * B * H * lq * dv);
        float *qb = q.data, *kb = k.data, *vb = v.data;
        if (layout == 0) {
          a.q_s = weft_attn_strides_bhld(H, lq, d);
          a.k_s = weft_attn_strides_bhld(H, lk, d);
          a.v_s = weft_attn_strides_bhld(H, lk, dv);
          a.o_s = weft_attn_strides_bhld(H, lq, dv);
        } else {
          qb = to_blhd(&q), kb = to_blhd(&k), vb = to_blhd(&v);
          a.q_s = weft_attn_strides_blhd(H, lq, d);
          a.k_s = weft_attn_strides_blhd(H, lk, d);
          a.v_s = weft_attn_strides_blhd(H, lk, dv);
          a.o_s = weft_attn_strides_blhd(H, lq, dv);
        }
        a.q = qb, a.k = kb, a.v = vb, a.o = o;
        ASSERT_OK(weft_cpu_attention(ctx, &a));
        float *ob = o;
        if (layout == 1) { /* back to [B,H,L,dv] */
          ob = kr_zalloc(sizeof(float) * B * H * lq * dv);
          for (int64_t b = 0; b < B; b++)
            for (int64_t h = 0; h < H; h++)
              for (int64_t l = 0; l < lq; l++)
                memcpy(ob + ((b * H + h) * lq + l) * dv,
                       o + ((b * lq + l) * H + h) * dv, sizeof(float) * dv);
          free(qb), free(kb), free(vb), free(o);
        }
        expect(f, c, "out", ob, DOT_TOL);
        free(ob);
      }
      free(q.data), free(k.data), free(v.data);
    }
  }
  weft_st_close(f);
}

TEST(torch_activations_geglu_upsample_binary_concat) {
  weft_st_file *f = fx_open("pointwise");
  EACH_ISA(ctx) {
    fx x = fx_get(f, "act", "x");
    float *y = kr_zalloc(sizeof(float) * x.n);
    const char *names[] = {"silu", "gelu", "gelu_tanh", "quick_gelu"};
    const weft_act acts[] = {WEFT_ACT_SILU, WEFT_ACT_GELU_ERF,
                             WEFT_ACT_GELU_TANH, WEFT_ACT_QUICK_GELU};
    for (int i = 0; i < 4; i++) {
      ASSERT_OK(weft_cpu_act(ctx, acts[i], x.data, y, x.n));
      expect(f, "act", names[i], y, PW_TOL);
    }
    free(x.data), free(y);

    x = fx_get(f, "geglu", "x");
    int64_t dim = x.shape[1] / 2;
    y = kr_zalloc(sizeof(float) * x.n / 2);
    ASSERT_OK(
        weft_cpu_gated_act(ctx, WEFT_ACT_GELU_ERF, x.data, y, x.shape[0], dim));
    expect(f, "geglu", "out", y, PW_TOL);
    free(x.data), free(y);

    x = fx_get(f, "upsample", "x");
    y = kr_zalloc(sizeof(float) * x.n * 4);
    ASSERT_OK(weft_cpu_upsample_nearest2x(
        ctx, x.data, y, x.shape[0] * x.shape[1], x.shape[2], x.shape[3]));
    expect(f, "upsample", "out", y, 0, 0);
    free(x.data), free(y);

    const char *bins[] = {"bin_chan", "bin_last", "bin_mid", "bin_same"};
    for (int i = 0; i < 4; i++) {
      fx a = fx_get(f, bins[i], "a"), b = fx_get(f, bins[i], "b");
      y = kr_zalloc(sizeof(float) * a.n);
      ASSERT_OK(weft_cpu_binary(ctx, (weft_binop)fx_param(f, bins[i], 0),
                                a.data, a.ndim, a.shape, b.data, b.ndim,
                                b.shape, y));
      expect(f, bins[i], "out", y, 0, 0);
      free(a.data), free(b.data), free(y);
    }

    fx a = fx_get(f, "concat", "a"), b = fx_get(f, "concat", "b");
    y = kr_zalloc(sizeof(float) * (a.n + b.n));
    const float *xs[2] = {a.data, b.data};
    const int64_t *shapes[2] = {a.shape, b.shape};
    ASSERT_OK(weft_cpu_concat(ctx, 2, xs, a.ndim, shapes,
                              (int)fx_param(f, "concat", 0), y));
    expect(f, "concat", "out", y, 0, 0);
    free(a.data), free(b.data), free(y);
  }
  weft_st_close(f);
}

TEST(torch_timestep_embedding_matches_diffusers) {
  weft_st_file *f = fx_open("timestep");
  const char *cases[] = {"sd15", "odd", "scaled"};
  weft_cpu_ctx *ctx = weft_cpu_ctx_new(1);
  for (int ci = 0; ci < 3; ci++) {
    const char *c = cases[ci];
    fx t = fx_get(f, c, "t");
    int64_t dim = fx_param(f, c, 0);
    float *y = kr_zalloc(sizeof(float) * t.n * dim);
    ASSERT_OK(weft_cpu_timestep_embedding(
        ctx, t.data, t.n, dim, (int)fx_param(f, c, 1), fx_fparam(f, c, 0),
        fx_fparam(f, c, 1), fx_fparam(f, c, 2), y));
    /* torch's vectorised exp is 1 ulp off the correctly rounded frequency
     * weft uses for a few k (3 of 160 for SD1.5), and one ulp of freq moves
     * the argument scale*t*freq by |arg| * 2^-23 (6e-5 rad at t = 999):
     * the tolerance is that plus sin/cos rounding. */
    fx want = fx_get(f, c, "out");
    double *ref = to_double(&want), *arg = kr_zalloc(sizeof(double) * want.n);
    int64_t half = dim / 2;
    for (int64_t i = 0; i < t.n; i++)
      for (int64_t k = 0; k < dim; k++)
        arg[i * dim + k] = k < 2 * half ? fabs(fx_fparam(f, c, 1) * t.data[i] *
                                               exp(-log(10000.0) * (k % half) /
                                                   (half - fx_fparam(f, c, 0))))
                                        : 0;
    fprintf(stderr, "%s: max abs diff %.3g\n", c,
            kr_max_abs_err(y, ref, want.n));
    kr_assert_close(__FILE__, __LINE__, c, y, ref, arg, want.n, 2e-7, 0x1p-23);
    free(ref), free(arg), free(want.data);
    free(t.data), free(y);
  }
  weft_cpu_ctx_free(ctx);
  weft_st_close(f);
}

TEST(torch_and_numpy_half_conversions_match_bit_for_bit) {
  weft_st_file *f = fx_open("convert");
  const weft_st_tensor *f32 = weft_st_find(f, "f32"),
                       *f16 = weft_st_find(f, "f16"),
                       *bf16 = weft_st_find(f, "bf16");
  ASSERT(f32 && f16 && bf16 && f16->dtype == WEFT_ST_F16 &&
         bf16->dtype == WEFT_ST_BF16);
  int64_t n = f32->shape[0];
  float *x = malloc(sizeof(float) * n);
  memcpy(x, f32->data, sizeof(float) * n);
  uint16_t *h = malloc(2 * n), *want = malloc(2 * n);
  EACH_ISA(ctx) {
    ASSERT_OK(weft_cpu_convert(ctx, h, WEFT_F16, x, WEFT_F32, n));
    memcpy(want, f16->data, 2 * n);
    for (int64_t i = 0; i < n; i++)
      if (h[i] != want[i]) {
        fprintf(stderr, "%s f16: %a -> 0x%04x, numpy 0x%04x\n",
                weft_cpu_isa_name(ctx), x[i], h[i], want[i]);
        abort();
      }
    ASSERT_OK(weft_cpu_convert(ctx, h, WEFT_BF16, x, WEFT_F32, n));
    memcpy(want, bf16->data, 2 * n);
    for (int64_t i = 0; i < n; i++)
      if (h[i] != want[i]) {
        fprintf(stderr, "%s bf16: %a -> 0x%04x, torch 0x%04x\n",
                weft_cpu_isa_name(ctx), x[i], h[i], want[i]);
        abort();
      }
  }
  free(x), free(h), free(want);
  weft_st_close(f);
}
