/* emulated.c - the emulated device (emulated.h): the CPU backend's ops on
 * buffers whose pointers are shifted out of the host's address space. */
#include "kernels/emulated.h"

#include "kernels/cpu/cpu.h" /* weft_cpu_convert_serial */

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* User-space addresses on x86-64 lie below 2^47; adding 2^47 gives an
 * address whose bits 47..63 differ, which the CPU refuses (a fault, not a
 * read of whatever is mapped there).  Offsets inside a buffer keep
 * working: the model code does pointer arithmetic on device pointers. */
#define EMU_OFFSET ((uintptr_t)1 << 47)
/* Each buffer carries its size in a header before it; 64 bytes keeps the
 * CPU backend's alignment. */
#define EMU_HDR 64

typedef struct emu_ctx {
  weft_backend *cpu;
  weft_backend_iface iface;
  /* atomics: a device backend may be handed between threads (the sd
   * plugin's model nodes run on threads of their own) */
  _Atomic int64_t live; /* buffers handed out and not freed */
  _Atomic uint64_t live_bytes, peak_bytes;
  weft_dtype act; /* activations' dtype (weft_emulated_set_act_dtype) */
} emu_ctx;

static void emu_free(weft_backend *be);

bool weft_backend_is_emulated(const weft_backend *be) {
  return be && be->iface->free == emu_free;
}

void *weft_emulated_host_ptr(const void *dev) {
  return dev ? (void *)((uintptr_t)dev - EMU_OFFSET) : NULL;
}

#define R(p) ((float *)weft_emulated_host_ptr(p))
#define CPU(be) (((emu_ctx *)(be)->ctx)->cpu)

static void emu_free(weft_backend *be) {
  emu_ctx *e = be->ctx;
  weft_backend_free(e->cpu);
  free(e);
  free(be);
}

static int emu_set_threads(weft_backend *be, int n) {
  return CPU(be)->iface->set_threads(CPU(be), n);
}

static int emu_synchronize(weft_backend *be) {
  (void)be; /* the CPU kernels finish before they return */
  return 0;
}

static void *emu_alloc(weft_backend *be, size_t n) {
  emu_ctx *e = be->ctx;
  if (n > SIZE_MAX - EMU_HDR) return NULL;
  char *p = e->cpu->iface->buffer_alloc(e->cpu, n + EMU_HDR);
  if (!p) return NULL;
  memcpy(p, &n, sizeof n);
  atomic_fetch_add(&e->live, 1);
  uint64_t now = atomic_fetch_add(&e->live_bytes, (uint64_t)n) + n;
  uint64_t peak = atomic_load(&e->peak_bytes);
  while (now > peak &&
         !atomic_compare_exchange_weak(&e->peak_bytes, &peak, now))
    ;
  return (void *)((uintptr_t)(p + EMU_HDR) + EMU_OFFSET);
}

static void emu_buf_free(weft_backend *be, void *p) {
  emu_ctx *e = be->ctx;
  if (!p) return;
  char *real = (char *)weft_emulated_host_ptr(p) - EMU_HDR;
  size_t n;
  memcpy(&n, real, sizeof n);
  atomic_fetch_sub(&e->live, 1);
  atomic_fetch_sub(&e->live_bytes, (uint64_t)n);
  e->cpu->iface->buffer_free(e->cpu, real);
}

/* memcpy, not memmove: overlapping device-to-device copies are undefined on
 * CUDA too, and ASan reports them here. */
static int emu_copy(weft_backend *be, void *dst, const void *src, size_t n,
                    weft_copy_kind k) {
  (void)be;
  if (n && (!dst || !src)) return WEFT_EINVAL;
  if (!n) return 0;
  if (k != WEFT_COPY_HOST_TO_DEVICE) src = weft_emulated_host_ptr(src);
  if (k != WEFT_COPY_DEVICE_TO_HOST) dst = weft_emulated_host_ptr(dst);
  memcpy(dst, src, n);
  return 0;
}

/* ---- activations ----------------------------------------------------------
 * With fp32 activations an op hands the CPU kernel the host addresses
 * behind its pointers.  With 16-bit ones (weft_emulated_set_act_dtype) each
 * activation operand is widened into an fp32 host copy first (the same
 * pointer twice -- an op in place -- gets the same copy), the CPU kernel
 * runs on the copies, and the outputs are rounded back: every op's output
 * rounds to 16 bits, as on a CUDA backend with 16-bit activations.
 * Operands are whole spans: views that overlap without being the same
 * pointer would get copies of their own (no caller of weft's makes them). */
#define EMU_OPNDS 8

typedef struct act_call {
  emu_ctx *e;
  int n, rc;
  struct {
    const void *dev;
    int64_t n;
    float *f;
    bool out;
  } o[EMU_OPNDS];
} act_call;

static act_call call_of(weft_backend *be) {
  act_call c;
  memset(&c, 0, sizeof c);
  c.e = be->ctx;
  return c;
}

/* The host fp32 view of an activation operand of n elements (NULL stays
 * NULL; on failure c->rc is set and NULL returned). */
static float *opnd(act_call *c, const void *dev, int64_t n, bool out) {
  if (!dev || c->e->act == WEFT_F32) return R(dev);
  for (int i = 0; i < c->n; i++)
    if (c->o[i].dev == dev) {
      if (c->o[i].n < n) c->rc = WEFT_EINVAL;
      c->o[i].out |= out;
      return c->rc ? NULL : c->o[i].f;
    }
  if (c->n == EMU_OPNDS || n < 0) {
    c->rc = WEFT_EINVAL;
    return NULL;
  }
  float *f = malloc((size_t)(n > 0 ? n : 1) * sizeof *f);
  if (!f) {
    c->rc = WEFT_ENOMEM;
    return NULL;
  }
  weft_cpu_convert_serial(f, WEFT_F32, weft_emulated_host_ptr(dev), c->e->act,
                          n);
  c->o[c->n].dev = dev, c->o[c->n].n = n, c->o[c->n].f = f;
  c->o[c->n++].out = out;
  return f;
}

#define IN(c, p, n) opnd(c, p, n, false)
#define OUT(c, p, n) opnd(c, p, n, true)

/* Rounds the outputs back (when rc is 0) and frees the copies; rc. */
static int finish(act_call *c, int rc) {
  if (!rc) rc = c->rc;
  for (int i = 0; i < c->n; i++) {
    if (!rc && c->o[i].out)
      weft_cpu_convert_serial(weft_emulated_host_ptr(c->o[i].dev), c->e->act,
                              c->o[i].f, WEFT_F32, c->o[i].n);
    free(c->o[i].f);
  }
  return rc;
}

static int64_t numel(int nd, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < nd; i++)
    n *= shape[i];
  return n;
}

static int emu_gemm(weft_backend *be, const weft_gemm_args *a) {
  act_call c = call_of(be);
  weft_gemm_args g = *a;
  const int64_t bt = a->batch ? a->batch : 1;
  const int64_t na =
      weft_matrix_span(a->trans_a ? a->k : a->m, a->trans_a ? a->m : a->k,
                       a->lda, a->stride_a, bt);
  const int64_t nb =
      weft_matrix_span(a->trans_b ? a->n : a->k, a->trans_b ? a->k : a->n,
                       a->ldb, a->stride_b, bt);
  const int64_t nc = weft_matrix_span(a->m, a->n, a->ldc, a->stride_c, bt);
  g.a = a->acts & WEFT_GEMM_ACT_A ? IN(&c, a->a, na) : R(a->a);
  g.b = a->acts & WEFT_GEMM_ACT_B ? IN(&c, a->b, nb) : R(a->b);
  g.c = a->acts & WEFT_GEMM_ACT_C ? OUT(&c, a->c, nc) : R(a->c);
  g.bias = R(a->bias);
  if (c.rc) return finish(&c, c.rc);
  return finish(&c, CPU(be)->iface->gemm(CPU(be), &g));
}

static int emu_linear(weft_backend *be, const float *x, int64_t rows,
                      int64_t in, const float *w, const float *b, int64_t out,
                      float *y) {
  act_call c = call_of(be);
  const float *xx = IN(&c, x, rows * in);
  float *yy = OUT(&c, y, rows * out);
  if (c.rc) return finish(&c, c.rc);
  return finish(
      &c, CPU(be)->iface->linear(CPU(be), xx, rows, in, R(w), R(b), out, yy));
}

/* a's device pointers as the CPU's; *pn receives the prologue's copy
 * (its gamma and beta are device pointers too) */
static weft_conv2d_args conv_args(const weft_conv2d_args *a,
                                  weft_conv2d_prenorm *pn) {
  weft_conv2d_args c = *a;
  c.x = R(a->x), c.weight = R(a->weight), c.bias = R(a->bias);
  c.y = R(a->y), c.scratch = weft_emulated_host_ptr(a->scratch);
  c.chan_add = R(a->chan_add), c.residual = R(a->residual);
  if (a->prenorm) {
    *pn = *a->prenorm;
    pn->gamma = R(pn->gamma), pn->beta = R(pn->beta);
    c.prenorm = pn;
  }
  return c;
}

static int emu_conv2d(weft_backend *be, const weft_conv2d_args *a) {
  act_call c = call_of(be);
  /* with 16-bit activations a device rounds the normalized x as it moves
   * it (CUDA's prologue); the CPU's would not: the caller's two ops here */
  if (a->prenorm && c.e->act != WEFT_F32) return WEFT_EUNSUPPORTED;
  weft_conv2d_prenorm pn;
  weft_conv2d_args cv = conv_args(a, &pn);
  int64_t ho = 0, wo = 0;
  if (weft_conv2d_check_shapes(a, &ho, &wo) == 0 && a->batch > 0) {
    const int64_t xs =
        a->x_bstride ? a->x_bstride : a->c_in * a->h_in * a->w_in;
    const int64_t ys = a->y_bstride ? a->y_bstride : a->c_out * ho * wo;
    cv.x = IN(&c, a->x, (a->batch - 1) * xs + a->c_in * a->h_in * a->w_in);
    if (a->chan_add) cv.chan_add = IN(&c, a->chan_add, a->batch * a->c_out);
    if (a->residual)
      cv.residual = IN(&c, a->residual, (a->batch - 1) * ys + a->c_out * ho * wo);
    cv.y = OUT(&c, a->y, (a->batch - 1) * ys + a->c_out * ho * wo);
  }
  if (c.rc) return finish(&c, c.rc);
  return finish(&c, CPU(be)->iface->conv2d(CPU(be), &cv));
}

static size_t emu_conv2d_scratch(weft_backend *be, const weft_conv2d_args *a) {
  weft_conv2d_prenorm pn;
  weft_conv2d_args c = conv_args(a, &pn);
  return CPU(be)->iface->conv2d_scratch_bytes(CPU(be), &c);
}

static weft_attn_args attn_args(const weft_attn_args *a) {
  weft_attn_args t = *a;
  t.q = R(a->q), t.k = R(a->k), t.v = R(a->v), t.o = R(a->o);
  t.scratch = weft_emulated_host_ptr(a->scratch);
  return t;
}

static int emu_attention(weft_backend *be, const weft_attn_args *a) {
  act_call c = call_of(be);
  weft_attn_args t = attn_args(a);
  t.q = IN(&c, a->q, weft_attn_span(a->batch, a->heads, a->lq, a->d, a->q_s));
  t.k = IN(&c, a->k, weft_attn_span(a->batch, a->heads, a->lk, a->d, a->k_s));
  t.v = IN(&c, a->v, weft_attn_span(a->batch, a->heads, a->lk, a->dv, a->v_s));
  t.o = OUT(&c, a->o, weft_attn_span(a->batch, a->heads, a->lq, a->dv, a->o_s));
  if (c.rc) return finish(&c, c.rc);
  return finish(&c, CPU(be)->iface->attention(CPU(be), &t));
}

static size_t emu_attention_scratch(weft_backend *be, const weft_attn_args *a) {
  weft_attn_args t = attn_args(a);
  return CPU(be)->iface->attention_scratch_bytes(CPU(be), &t);
}

static int emu_group_norm(weft_backend *be, const float *x, float *y, int64_t b,
                          int64_t c, int64_t s, int64_t g, float eps,
                          const float *gamma, const float *beta, weft_act act) {
  act_call k = call_of(be);
  const float *xx = IN(&k, x, b * c * s);
  float *yy = OUT(&k, y, b * c * s);
  if (k.rc) return finish(&k, k.rc);
  return finish(&k, CPU(be)->iface->group_norm(CPU(be), xx, yy, b, c, s, g, eps,
                                               R(gamma), R(beta), act));
}

static int emu_group_norm_cl(weft_backend *be, const float *x, float *y,
                             int64_t b, int64_t c, int64_t s, int64_t g,
                             float eps, const float *gamma, const float *beta,
                             weft_act act) {
  act_call k = call_of(be);
  const float *xx = IN(&k, x, b * c * s);
  float *yy = OUT(&k, y, b * c * s);
  if (k.rc) return finish(&k, k.rc);
  return finish(&k, CPU(be)->iface->group_norm_cl(CPU(be), xx, yy, b, c, s, g,
                                                  eps, R(gamma), R(beta), act));
}

static int emu_layer_norm(weft_backend *be, const float *x, float *y,
                          int64_t rows, int64_t dim, float eps,
                          const float *gamma, const float *beta) {
  act_call c = call_of(be);
  const float *xx = IN(&c, x, rows * dim);
  float *yy = OUT(&c, y, rows * dim);
  if (c.rc) return finish(&c, c.rc);
  return finish(&c, CPU(be)->iface->layer_norm(CPU(be), xx, yy, rows, dim, eps,
                                               R(gamma), R(beta)));
}

static int emu_softmax(weft_backend *be, const float *x, float *y, int64_t rows,
                       int64_t dim) {
  act_call c = call_of(be);
  const float *xx = IN(&c, x, rows * dim);
  float *yy = OUT(&c, y, rows * dim);
  if (c.rc) return finish(&c, c.rc);
  return finish(&c, CPU(be)->iface->softmax(CPU(be), xx, yy, rows, dim));
}

static int emu_act(weft_backend *be, weft_act act, const float *x, float *y,
                   int64_t n) {
  act_call c = call_of(be);
  const float *xx = IN(&c, x, n);
  float *yy = OUT(&c, y, n);
  if (c.rc) return finish(&c, c.rc);
  return finish(&c, CPU(be)->iface->act(CPU(be), act, xx, yy, n));
}

static int emu_gated_act(weft_backend *be, weft_act act, const float *x,
                         float *y, int64_t rows, int64_t dim) {
  act_call c = call_of(be);
  const float *xx = IN(&c, x, rows * 2 * dim);
  float *yy = OUT(&c, y, rows * dim);
  if (c.rc) return finish(&c, c.rc);
  return finish(&c, CPU(be)->iface->gated_act(CPU(be), act, xx, yy, rows, dim));
}

static int emu_binary(weft_backend *be, weft_binop op, const float *a, int an,
                      const int64_t *as, const float *b, int bn,
                      const int64_t *bs, float *y) {
  /* the shapes are host arrays, as on every backend */
  act_call c = call_of(be);
  weft_bcast p;
  const float *aa = R(a), *bb = R(b);
  float *yy = R(y);
  if (c.e->act != WEFT_F32 && weft_bcast_plan(an, as, bn, bs, &p) == 0) {
    aa = IN(&c, a, numel(an, as));
    bb = IN(&c, b, numel(bn, bs));
    yy = OUT(&c, y, p.total);
  }
  if (c.rc) return finish(&c, c.rc);
  return finish(
      &c, CPU(be)->iface->binary(CPU(be), op, aa, an, as, bb, bn, bs, yy));
}

static int emu_scale_add(weft_backend *be, float *y, float alpha,
                         const float *a, float beta, const float *b,
                         int64_t n) {
  act_call c = call_of(be);
  const float *aa = IN(&c, a, n), *bb = IN(&c, b, n);
  float *yy = OUT(&c, y, n);
  if (c.rc) return finish(&c, c.rc);
  return finish(&c,
                CPU(be)->iface->scale_add(CPU(be), yy, alpha, aa, beta, bb, n));
}

static int emu_upsample(weft_backend *be, const float *x, float *y,
                        int64_t planes, int64_t h, int64_t w) {
  act_call c = call_of(be);
  const float *xx = IN(&c, x, planes * h * w);
  float *yy = OUT(&c, y, planes * 4 * h * w);
  if (c.rc) return finish(&c, c.rc);
  return finish(
      &c, CPU(be)->iface->upsample_nearest2x(CPU(be), xx, yy, planes, h, w));
}

static int emu_upsample_cl(weft_backend *be, const float *x, float *y,
                           int64_t batch, int64_t h, int64_t w,
                           int64_t channels) {
  act_call c = call_of(be);
  const float *xx = IN(&c, x, batch * h * w * channels);
  float *yy = OUT(&c, y, batch * 4 * h * w * channels);
  if (c.rc) return finish(&c, c.rc);
  return finish(&c, CPU(be)->iface->upsample_nearest2x_cl(
                        CPU(be), xx, yy, batch, h, w, channels));
}

static int emu_concat(weft_backend *be, int n, const float *const *xs, int ndim,
                      const int64_t *const *shapes, int axis, float *y) {
  /* xs is a host array of device pointers */
  act_call c = call_of(be);
  const float **r = malloc(sizeof *r * (size_t)(n > 0 ? n : 1));
  if (!r) return WEFT_ENOMEM;
  int64_t total = 0;
  for (int i = 0; i < n; i++) {
    const bool ok = xs && shapes && shapes[i] && ndim > 0;
    const int64_t ni = ok ? numel(ndim, shapes[i]) : 0;
    r[i] = ok ? IN(&c, xs[i], ni) : NULL;
    total += ni;
  }
  float *yy = c.e->act == WEFT_F32 ? R(y) : OUT(&c, y, total);
  int rc = c.rc ? c.rc
                : CPU(be)->iface->concat(CPU(be), n, r, ndim, shapes, axis, yy);
  free(r);
  return finish(&c, rc);
}

static int emu_temb(weft_backend *be, const float *t, int64_t n, int64_t dim,
                    int flip, float shift, float scale, float max_period,
                    float *y) {
  /* t is fp32 whatever the activations are */
  act_call c = call_of(be);
  float *yy = OUT(&c, y, n * dim);
  if (c.rc) return finish(&c, c.rc);
  return finish(&c, CPU(be)->iface->timestep_embedding(CPU(be), R(t), n, dim,
                                                       flip, shift, scale,
                                                       max_period, yy));
}

static int emu_convert(weft_backend *be, void *dst, weft_dtype dt,
                       const void *src, weft_dtype st, int64_t n) {
  return CPU(be)->iface->convert(CPU(be), weft_emulated_host_ptr(dst), dt,
                                 weft_emulated_host_ptr(src), st, n);
}

static weft_dtype emu_act_dtype(weft_backend *be) {
  return ((emu_ctx *)be->ctx)->act;
}

int weft_emulated_set_act_dtype(weft_backend *be, weft_dtype dt) {
  if (!weft_backend_is_emulated(be) ||
      (dt != WEFT_F32 && dt != WEFT_F16 && dt != WEFT_BF16))
    return WEFT_EINVAL;
  ((emu_ctx *)be->ctx)->act = dt;
  return 0;
}

weft_backend *weft_backend_emulated_new(int n_threads) {
  weft_backend *be = calloc(1, sizeof *be);
  emu_ctx *e = calloc(1, sizeof *e);
  if (!be || !e || !(e->cpu = weft_backend_cpu_new(n_threads))) {
    free(be), free(e);
    return NULL;
  }
  e->iface =
      (weft_backend_iface){.struct_size = sizeof(weft_backend_iface),
                           .name = "emulated",
                           .device_kind = WEFT_DEVICE_KIND_CUDA,
                           .free = emu_free,
                           .set_threads = emu_set_threads,
                           .synchronize = emu_synchronize,
                           .buffer_alloc = emu_alloc,
                           .buffer_free = emu_buf_free,
                           .buffer_copy = emu_copy,
                           .gemm = emu_gemm,
                           .linear = emu_linear,
                           .conv2d = emu_conv2d,
                           .conv2d_scratch_bytes = emu_conv2d_scratch,
                           .attention = emu_attention,
                           .attention_scratch_bytes = emu_attention_scratch,
                           .group_norm = emu_group_norm,
                           .layer_norm = emu_layer_norm,
                           .softmax = emu_softmax,
                           .act = emu_act,
                           .gated_act = emu_gated_act,
                           .binary = emu_binary,
                           .scale_add = emu_scale_add,
                           .upsample_nearest2x = emu_upsample,
                           .group_norm_cl = emu_group_norm_cl,
                           .upsample_nearest2x_cl = emu_upsample_cl,
                           .concat = emu_concat,
                           .timestep_embedding = emu_temb,
                           .convert = emu_convert,
                           .act_dtype = emu_act_dtype};
  be->iface = &e->iface;
  be->ctx = e;
  return be;
}

static const emu_ctx *ctx_of(const weft_backend *be) {
  return weft_backend_is_emulated(be) ? be->ctx : NULL;
}

int64_t weft_emulated_live_buffers(const weft_backend *be) {
  const emu_ctx *e = ctx_of(be);
  return e ? atomic_load(&e->live) : 0;
}

uint64_t weft_emulated_live_bytes(const weft_backend *be) {
  const emu_ctx *e = ctx_of(be);
  return e ? atomic_load(&e->live_bytes) : 0;
}

uint64_t weft_emulated_peak_bytes(const weft_backend *be) {
  const emu_ctx *e = ctx_of(be);
  return e ? atomic_load(&e->peak_bytes) : 0;
}

void weft_emulated_peak_reset(weft_backend *be) {
  if (!weft_backend_is_emulated(be)) return;
  emu_ctx *e = be->ctx;
  atomic_store(&e->peak_bytes, atomic_load(&e->live_bytes));
}
