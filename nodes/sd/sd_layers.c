/* sd_layers.c - loading and running the layers the SD models are made of,
 * following diffusers' modules (ResnetBlock2D, Attention). */
#include "sd_layers.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int w(sd_ckpt *ck, sd_part p, const char *prefix, const char *leaf,
             int64_t n, float **out) {
  char name[512];
  if ((size_t)snprintf(name, sizeof name, "%s%s", prefix, leaf) >= sizeof name)
    return WEFT_EINVAL; /* no model's names come near */
  return sd_weight(ck, p, name, n, out);
}

int sd_load_linear(sd_ckpt *ck, sd_part p, const char *name, int64_t in,
                   int64_t out, bool bias, sd_linear *l) {
  memset(l, 0, sizeof *l);
  l->in = in;
  l->out = out;
  CK(w(ck, p, name, "weight", in * out, &l->w));
  if (bias) CK(w(ck, p, name, "bias", out, &l->b));
  return 0;
}

int sd_load_conv(sd_ckpt *ck, sd_part p, const char *name, int64_t cin,
                 int64_t cout, int64_t k, int64_t stride, int64_t pad,
                 sd_conv *c) {
  memset(c, 0, sizeof *c);
  *c = (sd_conv){NULL, NULL, cin, cout, k, stride, pad, false};
  CK(w(ck, p, name, "weight", cout * cin * k * k, &c->w));
  CK(w(ck, p, name, "bias", cout, &c->b));
  return 0;
}

int sd_load_norm(sd_ckpt *ck, sd_part p, const char *name, int64_t c,
                 sd_norm *n) {
  memset(n, 0, sizeof *n);
  n->c = c;
  CK(w(ck, p, name, "weight", c, &n->g));
  CK(w(ck, p, name, "bias", c, &n->b));
  return 0;
}

int sd_load_resnet(sd_ckpt *ck, sd_part p, const char *name, int64_t cin,
                   int64_t cout, int64_t temb_dim, int groups, float eps,
                   sd_resnet *r) {
  memset(r, 0, sizeof *r);
  r->cin = cin;
  r->cout = cout;
  r->groups = groups;
  r->eps = eps;
  char sub[512];
#define SUB(s) (snprintf(sub, sizeof sub, "%s%s", name, s), sub)
  CK(sd_load_norm(ck, p, SUB("norm1."), cin, &r->norm1));
  CK(sd_load_conv(ck, p, SUB("conv1."), cin, cout, 3, 1, 1, &r->conv1));
  if (temb_dim > 0)
    CK(sd_load_linear(ck, p, SUB("time_emb_proj."), temb_dim, cout, true,
                      &r->temb));
  CK(sd_load_norm(ck, p, SUB("norm2."), cout, &r->norm2));
  CK(sd_load_conv(ck, p, SUB("conv2."), cout, cout, 3, 1, 1, &r->conv2));
  if (cin != cout)
    CK(sd_load_conv(ck, p, SUB("conv_shortcut."), cin, cout, 1, 1, 0,
                    &r->shortcut));
#undef SUB
  return 0;
}

int sd_load_attn(sd_ckpt *ck, sd_part p, const char *name, int64_t dim,
                 int64_t ctx_dim, int heads, bool qkv_bias, sd_attn *a) {
  memset(a, 0, sizeof *a);
  a->dim = dim;
  a->ctx_dim = ctx_dim;
  a->heads = heads;
  char sub[512];
#define SUB(s) (snprintf(sub, sizeof sub, "%s%s", name, s), sub)
  CK(sd_load_linear(ck, p, SUB("to_q."), dim, dim, qkv_bias, &a->q));
  CK(sd_load_linear(ck, p, SUB("to_k."), ctx_dim, dim, qkv_bias, &a->k));
  CK(sd_load_linear(ck, p, SUB("to_v."), ctx_dim, dim, qkv_bias, &a->v));
  CK(sd_load_linear(ck, p, SUB("to_out.0."), dim, dim, true, &a->out));
#undef SUB
  return 0;
}

void sd_free_linear(sd_linear *l) {
  free(l->w);
  free(l->b);
  l->w = l->b = NULL;
}

void sd_free_conv(sd_conv *c) {
  free(c->w);
  free(c->b);
  c->w = c->b = NULL;
}

void sd_free_norm(sd_norm *n) {
  free(n->g);
  free(n->b);
  n->g = n->b = NULL;
}

void sd_free_resnet(sd_resnet *r) {
  sd_free_norm(&r->norm1);
  sd_free_norm(&r->norm2);
  sd_free_conv(&r->conv1);
  sd_free_conv(&r->conv2);
  sd_free_conv(&r->shortcut);
  sd_free_linear(&r->temb);
}

void sd_free_attn(sd_attn *a) {
  sd_free_linear(&a->q);
  sd_free_linear(&a->k);
  sd_free_linear(&a->v);
  sd_free_linear(&a->out);
}

/* ---- running --------------------------------------------------------------
 */

float *sd_alloc(weft_backend *be, int64_t n) {
  return be->iface->buffer_alloc(be, (size_t)(n > 0 ? n : 1) *
                                         weft_backend_act_size(be));
}

float *sd_alloc_f32(weft_backend *be, int64_t n) {
  return be->iface->buffer_alloc(be, (size_t)(n > 0 ? n : 1) * sizeof(float));
}

float *sd_act_at(weft_backend *be, float *p, int64_t i) {
  return (float *)((char *)p + i * (int64_t)weft_backend_act_size(be));
}

void sd_free(weft_backend *be, float *p) {
  if (p) be->iface->buffer_free(be, p);
}

int sd_run_linear(weft_backend *be, const sd_linear *l, const float *x,
                  int64_t rows, float *y) {
  return be->iface->linear(be, x, rows, l->in, l->w, l->b, l->out, y);
}

int sd_run_linear_add(weft_backend *be, const sd_linear *l, const float *x,
                      int64_t rows, float *y) {
  /* y = x W^T + y: A = x [rows, in], B = W stored [out, in], C = y */
  weft_gemm_args g = {.m = rows,
                      .n = l->out,
                      .k = l->in,
                      .trans_b = 1,
                      .alpha = 1.0f,
                      .beta = 1.0f,
                      .a = x,
                      .lda = l->in,
                      .b = l->w,
                      .ldb = l->in,
                      .c = y,
                      .ldc = l->out,
                      .bias = l->b,
                      .acts = WEFT_GEMM_ACT_A | WEFT_GEMM_ACT_C};
  return be->iface->gemm(be, &g);
}

/* a convolution's epilogue (weft_conv2d_args): NULL, NULL for none */
typedef struct epi {
  const float *chan_add, *residual;
} epi;

/* how x and y of a convolution lie: channels last (true) or first */
typedef struct cl_io {
  bool x, y;
} cl_io;

static int conv(weft_backend *be, const sd_conv *c, const float *x, int64_t b,
                int64_t h, int64_t w, int64_t pt, int64_t pl, int64_t pb,
                int64_t pr, const weft_conv2d_prenorm *pn, epi e, cl_io io,
                float *y, int64_t *ho, int64_t *wo) {
  weft_conv2d_args a = {.batch = b,
                        .c_in = c->cin,
                        .h_in = h,
                        .w_in = w,
                        .c_out = c->cout,
                        .k_h = c->k,
                        .k_w = c->k,
                        .stride_h = c->stride,
                        .stride_w = c->stride,
                        .pad_top = pt,
                        .pad_left = pl,
                        .pad_bottom = pb,
                        .pad_right = pr,
                        .x = x,
                        .weight = c->w,
                        .bias = c->b,
                        .y = y,
                        .w_hwc = c->w_hwc,
                        .chan_add = e.chan_add,
                        .residual = e.residual,
                        .prenorm = pn,
                        .x_nhwc = io.x,
                        .y_nhwc = io.y};
  *ho = weft_conv2d_out_size(h, c->k, c->stride, pt, pb);
  *wo = weft_conv2d_out_size(w, c->k, c->stride, pl, pr);
  return be->iface->conv2d(be, &a);
}

int sd_run_conv(weft_backend *be, const sd_conv *c, const float *x, int64_t b,
                int64_t h, int64_t w, float *y, int64_t *ho, int64_t *wo) {
  return sd_run_conv_cl(be, c, x, false, b, h, w, y, false, ho, wo);
}

int sd_run_conv_cl(weft_backend *be, const sd_conv *c, const float *x,
                   bool x_cl, int64_t b, int64_t h, int64_t w, float *y,
                   bool y_cl, int64_t *ho, int64_t *wo) {
  return conv(be, c, x, b, h, w, c->pad, c->pad, c->pad, c->pad, NULL,
              (epi){NULL, NULL}, (cl_io){x_cl, y_cl}, y, ho, wo);
}

/* 1 once channels-last maps pay on CUDA (sd_layers.h) */
#define SD_CL_DEFAULT 0

bool sd_cl_wanted(weft_backend *be, bool hwc) {
  const char *e = getenv("WEFT_SD_CL");
  const bool want = e && *e ? strcmp(e, "0") != 0 : SD_CL_DEFAULT && hwc;
  return want && weft_backend_has_cl(be);
}

int sd_group_norm(weft_backend *be, bool cl, const float *x, float *y,
                  int64_t b, int64_t c, int64_t spatial, int64_t groups,
                  float eps, const sd_norm *nm, weft_act act) {
  if (!cl)
    return be->iface->group_norm(be, x, y, b, c, spatial, groups, eps, nm->g,
                                 nm->b, act);
  if (!weft_backend_has_cl(be)) return WEFT_EUNSUPPORTED;
  return be->iface->group_norm_cl(be, x, y, b, c, spatial, groups, eps, nm->g,
                                  nm->b, act);
}

/* y = conv(x) + bias (+ chan_add [b, c_out] per plane) (+ residual), in
 * one op: the sums binary's and scale_add's would form */
static int conv_epi(weft_backend *be, const sd_conv *c, const float *x,
                    int64_t b, int64_t h, int64_t w, epi e, bool cl, float *y) {
  int64_t ho, wo;
  return conv(be, c, x, b, h, w, c->pad, c->pad, c->pad, c->pad, NULL, e,
              (cl_io){cl, cl}, y, &ho, &wo);
}

int sd_run_conv_pad_br(weft_backend *be, const sd_conv *c, const float *x,
                       int64_t b, int64_t h, int64_t w, float *y, int64_t *ho,
                       int64_t *wo) {
  return conv(be, c, x, b, h, w, 0, 0, 1, 1, NULL, (epi){NULL, NULL},
              (cl_io){false, false}, y, ho, wo);
}

/* y = conv(SiLU(group_norm(x))) (+ the epilogue): one op where the
 * backend applies the norm as the convolution reads x (weft_conv2d_args
 * .prenorm: CUDA's channels-last way, so only for channels-last weights),
 * else group_norm into n (which may be x: in place), then the
 * convolution.  Either way the convolution reads what group_norm writes. */
static int norm_conv(weft_backend *be, const sd_norm *nm, int groups, float eps,
                     const sd_conv *c, const float *x, float *n, int64_t b,
                     int64_t h, int64_t w, epi e, bool cl, float *y) {
  int64_t ho, wo;
  if (c->w_hwc) {
    const weft_conv2d_prenorm pn = {groups, eps, nm->g, nm->b, WEFT_ACT_SILU};
    int rc = conv(be, c, x, b, h, w, c->pad, c->pad, c->pad, c->pad, &pn, e,
                  (cl_io){cl, cl}, y, &ho, &wo);
    if (rc != WEFT_EUNSUPPORTED) return rc;
  }
  int rc = sd_group_norm(be, cl, x, n, b, c->cin, h * w, groups, eps, nm,
                         WEFT_ACT_SILU);
  return rc ? rc : conv_epi(be, c, n, b, h, w, e, cl, y);
}

/* conv1 of norm1 + SiLU of x (+ tp, the time-embedding projection) into
 * t; n takes the norm's output where norm_conv needs it */
static int resnet_conv1(weft_backend *be, const sd_resnet *r, const float *x,
                        float *n, int64_t b, int64_t h, int64_t w,
                        const float *tp, bool cl, float *t) {
  return norm_conv(be, &r->norm1, r->groups, r->eps, &r->conv1, x, n, b, h, w,
                   (epi){tp, NULL}, cl, t);
}

/* y = conv2(norm2 + SiLU of t) + skip; t may be normalized in place (+
 * dropout, an identity at inference) */
static int resnet_conv2(weft_backend *be, const sd_resnet *r, float *t,
                        int64_t b, int64_t h, int64_t w, const float *skip,
                        bool cl, float *y) {
  return norm_conv(be, &r->norm2, r->groups, r->eps, &r->conv2, t, t, b, h, w,
                   (epi){NULL, skip}, cl, y);
}

int sd_run_resnet(weft_backend *be, const sd_resnet *r, const float *x,
                  int64_t b, int64_t h, int64_t w, const float *tp, bool cl,
                  float *y) {
  int64_t hw = h * w, ho, wo;
  int rc = 0;
  /* t1: norm1's output (where the backend needs it), then the shortcut's
   * (cout channels) */
  const int64_t c1 = r->shortcut.w && r->cout > r->cin ? r->cout : r->cin;
  float *t1 = sd_alloc(be, b * c1 * hw);
  float *t2 = sd_alloc(be, b * r->cout * hw);
  if (!t1 || !t2) {
    rc = WEFT_ENOMEM;
    goto out;
  }
  if ((rc = resnet_conv1(be, r, x, t1, b, h, w, tp, cl, t2))) goto out;
  /* the skip: the shortcut's output into t1, free since conv1 read it */
  const float *skip = x;
  if (r->shortcut.w) {
    if ((rc = sd_run_conv_cl(be, &r->shortcut, x, cl, b, h, w, t1, cl, &ho,
                             &wo)))
      goto out;
    skip = t1;
  }
  rc = resnet_conv2(be, r, t2, b, h, w, skip, cl, y);
out:
  sd_free(be, t1);
  sd_free(be, t2);
  return rc;
}

int sd_run_resnet_owned(weft_backend *be, const sd_resnet *r, float *x,
                        int64_t b, int64_t h, int64_t w, const float *tp,
                        bool cl, float **out) {
  const int64_t n = b * r->cout * h * w;
  int64_t ho, wo;
  float *a = NULL, *t = NULL, *sc = NULL;
  int rc = 0;
  *out = NULL;
  if (r->shortcut.w) {
    /* the shortcut first, then x itself normalized (in place, where the
     * backend needs it): x, sc, t live */
    if (!(sc = sd_alloc(be, n))) {
      rc = WEFT_ENOMEM;
      goto out;
    }
    if ((rc = sd_run_conv_cl(be, &r->shortcut, x, cl, b, h, w, sc, cl, &ho,
                             &wo)))
      goto out;
    if (!(t = sd_alloc(be, n))) {
      rc = WEFT_ENOMEM;
      goto out;
    }
    rc = resnet_conv1(be, r, x, x, b, h, w, tp, cl, t);
    sd_free(be, x);
    x = NULL;
    if (rc) goto out;
    if (!(a = sd_alloc(be, n))) {
      rc = WEFT_ENOMEM;
      goto out;
    }
    rc = resnet_conv2(be, r, t, b, h, w, sc, cl, a);
  } else {
    /* x kept for the residual: x, a, t live; a takes norm1's output (where
     * the backend needs it), then conv2's */
    if (!(a = sd_alloc(be, b * r->cin * h * w)) || !(t = sd_alloc(be, n))) {
      rc = WEFT_ENOMEM;
      goto out;
    }
    if ((rc = resnet_conv1(be, r, x, a, b, h, w, tp, cl, t))) goto out;
    rc = resnet_conv2(be, r, t, b, h, w, x, cl, a);
  }
out:
  sd_free(be, x);
  sd_free(be, t);
  sd_free(be, sc);
  if (rc) {
    sd_free(be, a);
    return rc;
  }
  *out = a;
  return 0;
}

int sd_run_linear_from_nchw(weft_backend *be, const sd_linear *l,
                            const float *x, int64_t b, int64_t hw, float *y) {
  /* y[b] = x[b]^T W^T: A = x[b] stored [in, hw], B = W stored [out, in] */
  weft_gemm_args g = {.m = hw,
                      .n = l->out,
                      .k = l->in,
                      .trans_a = 1,
                      .trans_b = 1,
                      .alpha = 1.0f,
                      .beta = 0.0f,
                      .a = x,
                      .lda = hw,
                      .b = l->w,
                      .ldb = l->in,
                      .c = y,
                      .ldc = l->out,
                      .batch = b,
                      .stride_a = l->in * hw,
                      .stride_b = 0,
                      .stride_c = hw * l->out,
                      .bias = l->b,
                      .acts = WEFT_GEMM_ACT_A | WEFT_GEMM_ACT_C};
  return be->iface->gemm(be, &g);
}

int sd_run_linear_to_nchw(weft_backend *be, const sd_linear *l, const float *x,
                          int64_t b, int64_t hw, bool add, float *y) {
  /* y[b] = W x[b]^T: A = W [out, in], B = x[b] stored [hw, in] */
  weft_gemm_args g = {.m = l->out,
                      .n = hw,
                      .k = l->in,
                      .trans_a = 0,
                      .trans_b = 1,
                      .alpha = 1.0f,
                      .beta = add ? 1.0f : 0.0f,
                      .a = l->w,
                      .lda = l->in,
                      .b = x,
                      .ldb = l->in,
                      .c = y,
                      .ldc = hw,
                      .batch = b,
                      .stride_a = 0,
                      .stride_b = hw * l->in,
                      .stride_c = l->out * hw,
                      .bias = l->b,
                      .bias_per_row = 1,
                      .acts = WEFT_GEMM_ACT_B | WEFT_GEMM_ACT_C};
  return be->iface->gemm(be, &g);
}

/* n of a's products stacked from `from` (0 q, 1 k) as one linear layer:
 * the weights (and biases) lie one after another (sd_attn's fuse marks) */
static sd_linear stacked(const sd_attn *a, int from, int n) {
  const sd_linear *l = from == 0 ? &a->q : &a->k;
  return (sd_linear){l->w, l->b, l->in, n * l->out};
}

/* [b, l, heads, d] rows of `row` elements (a stacked product's output) */
static weft_attn_strides rows_of(int64_t l, int64_t d, int64_t row) {
  return (weft_attn_strides){.b = l * row, .h = d, .l = row};
}

int sd_run_attn_kv(weft_backend *be, const sd_attn *a, const float *ctx,
                   int64_t rows, float *kv) {
  if (sd_be_is_host(be) || !a->fuse_kv) return WEFT_EUNSUPPORTED;
  const sd_linear l = stacked(a, 1, 2);
  return sd_run_linear(be, &l, ctx, rows, kv);
}

int sd_run_attn(weft_backend *be, const sd_attn *a, const float *x, int64_t b,
                int64_t lq, const float *ctx, int64_t lk, bool causal, bool add,
                const float *kvd, float *y) {
  const float *kv_in = ctx ? ctx : x;
  const int64_t lkv = ctx ? lk : lq, dim = a->dim, d = dim / a->heads;
  /* q, k and v as one product (self-attention) or k and v (cross) where
   * their weights are adjacent on a device, else three; none for k and v
   * given */
  const bool dev = !sd_be_is_host(be);
  const bool qkv = dev && !ctx && a->fuse_qkv;
  const bool kv = dev && !qkv && a->fuse_kv && !(ctx && kvd);
  const bool given = ctx && kvd;
  float *q = NULL, *k = NULL, *v = NULL, *o = NULL;
  int rc = 0;
  if (qkv) {
    if (!(q = sd_alloc(be, b * lq * 3 * dim))) rc = WEFT_ENOMEM;
  } else if (!(q = sd_alloc(be, b * lq * dim)) ||
             (!given && !(k = sd_alloc(be, b * lkv * (kv ? 2 : 1) * dim))) ||
             (!given && !kv && !(v = sd_alloc(be, b * lkv * dim)))) {
    rc = WEFT_ENOMEM;
  }
  if (!rc && !(o = sd_alloc(be, b * lq * dim))) rc = WEFT_ENOMEM;
  if (rc) goto out;
  weft_attn_args at = {.batch = b,
                       .heads = a->heads,
                       .lq = lq,
                       .lk = lkv,
                       .d = d,
                       .dv = d,
                       .q = q,
                       .q_s = weft_attn_strides_blhd(a->heads, lq, d),
                       .k = k,
                       .k_s = weft_attn_strides_blhd(a->heads, lkv, d),
                       .v = v,
                       .v_s = weft_attn_strides_blhd(a->heads, lkv, d),
                       .o = o,
                       .o_s = weft_attn_strides_blhd(a->heads, lq, d),
                       .causal = causal};
  if (qkv) {
    const sd_linear l = stacked(a, 0, 3);
    if ((rc = sd_run_linear(be, &l, x, b * lq, q))) goto out;
    at.k = sd_act_at(be, q, dim), at.v = sd_act_at(be, q, 2 * dim);
    at.q_s = at.k_s = at.v_s = rows_of(lq, d, 3 * dim);
  } else {
    if ((rc = sd_run_linear(be, &a->q, x, b * lq, q))) goto out;
    if (given) {
      at.k = kvd, at.v = sd_act_at(be, (float *)kvd, dim);
      at.k_s = at.v_s = rows_of(lkv, d, 2 * dim);
    } else if (kv) {
      if ((rc = sd_run_attn_kv(be, a, kv_in, b * lkv, k))) goto out;
      at.v = sd_act_at(be, k, dim);
      at.k_s = at.v_s = rows_of(lkv, d, 2 * dim);
    } else if ((rc = sd_run_linear(be, &a->k, kv_in, b * lkv, k)) ||
               (rc = sd_run_linear(be, &a->v, kv_in, b * lkv, v))) {
      goto out;
    }
  }
  if ((rc = be->iface->attention(be, &at))) goto out;
  rc = add ? sd_run_linear_add(be, &a->out, o, b * lq, y)
           : sd_run_linear(be, &a->out, o, b * lq, y);
out:
  sd_free(be, q);
  sd_free(be, k);
  sd_free(be, v);
  sd_free(be, o);
  return rc;
}

/* torch's "nearest": source = floor(dst * in / out), the scale in float,
 * for planes maps of h x w pixels of px values each (channels first: a
 * map per channel, px 1; channels last: a map per image, px channels) */
static void nearest_host(const float *x, float *y, int64_t planes, int64_t px,
                         int64_t h, int64_t w, int64_t oh, int64_t ow) {
  const float sy = (float)h / (float)oh, sx = (float)w / (float)ow;
  for (int64_t p = 0; p < planes; p++)
    for (int64_t i = 0; i < oh; i++) {
      int64_t si = (int64_t)floorf((float)i * sy);
      si = si < h - 1 ? si : h - 1;
      for (int64_t j = 0; j < ow; j++) {
        int64_t sj = (int64_t)floorf((float)j * sx);
        sj = sj < w - 1 ? sj : w - 1;
        memcpy(y + ((p * oh + i) * ow + j) * px,
               x + ((p * h + si) * w + sj) * px, (size_t)px * sizeof(float));
      }
    }
}

int sd_upsample_nearest(weft_backend *be, bool cl, const float *x, float *y,
                        int64_t n, int64_t c, int64_t h, int64_t w, int64_t oh,
                        int64_t ow) {
  /* maps of px values a pixel: a map per channel, or per image */
  const int64_t planes = cl ? n : n * c, px = cl ? c : 1;
  if (cl && !weft_backend_has_cl(be)) return WEFT_EUNSUPPORTED;
  if (oh == 2 * h && ow == 2 * w)
    return cl ? be->iface->upsample_nearest2x_cl(be, x, y, n, h, w, c)
              : be->iface->upsample_nearest2x(be, x, y, planes, h, w);
  if (sd_be_is_host(be)) {
    nearest_host(x, y, planes, px, h, w, oh, ow);
    return 0;
  }
  /* a device backend has no op for this (odd sizes only): a pure gather,
   * so doing it on host copies gives the same values */
  size_t nx = (size_t)(n * c * h * w), ny = (size_t)(n * c * oh * ow);
  float *hx = malloc(nx * sizeof *hx), *hy = malloc(ny * sizeof *hy);
  int rc = hx && hy ? 0 : WEFT_ENOMEM;
  if (!rc) rc = sd_act_download(be, hx, x, (int64_t)nx);
  if (!rc) {
    nearest_host(hx, hy, planes, px, h, w, oh, ow);
    rc = sd_act_upload(be, y, hy, (int64_t)ny);
  }
  free(hx);
  free(hy);
  return rc;
}
