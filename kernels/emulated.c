/* emulated.c - the emulated device (emulated.h): the CPU backend's ops on
 * buffers whose pointers are shifted out of the host's address space. */
#include "kernels/emulated.h"

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

static int emu_gemm(weft_backend *be, const weft_gemm_args *a) {
  weft_gemm_args g = *a;
  g.a = R(a->a), g.b = R(a->b), g.c = R(a->c), g.bias = R(a->bias);
  return CPU(be)->iface->gemm(CPU(be), &g);
}

static int emu_linear(weft_backend *be, const float *x, int64_t rows,
                      int64_t in, const float *w, const float *b, int64_t out,
                      float *y) {
  return CPU(be)->iface->linear(CPU(be), R(x), rows, in, R(w), R(b), out, R(y));
}

static weft_conv2d_args conv_args(const weft_conv2d_args *a) {
  weft_conv2d_args c = *a;
  c.x = R(a->x), c.weight = R(a->weight), c.bias = R(a->bias);
  c.y = R(a->y), c.scratch = weft_emulated_host_ptr(a->scratch);
  return c;
}

static int emu_conv2d(weft_backend *be, const weft_conv2d_args *a) {
  weft_conv2d_args c = conv_args(a);
  return CPU(be)->iface->conv2d(CPU(be), &c);
}

static size_t emu_conv2d_scratch(weft_backend *be, const weft_conv2d_args *a) {
  weft_conv2d_args c = conv_args(a);
  return CPU(be)->iface->conv2d_scratch_bytes(CPU(be), &c);
}

static weft_attn_args attn_args(const weft_attn_args *a) {
  weft_attn_args t = *a;
  t.q = R(a->q), t.k = R(a->k), t.v = R(a->v), t.o = R(a->o);
  t.scratch = weft_emulated_host_ptr(a->scratch);
  return t;
}

static int emu_attention(weft_backend *be, const weft_attn_args *a) {
  weft_attn_args t = attn_args(a);
  return CPU(be)->iface->attention(CPU(be), &t);
}

static size_t emu_attention_scratch(weft_backend *be, const weft_attn_args *a) {
  weft_attn_args t = attn_args(a);
  return CPU(be)->iface->attention_scratch_bytes(CPU(be), &t);
}

static int emu_group_norm(weft_backend *be, const float *x, float *y, int64_t b,
                          int64_t c, int64_t s, int64_t g, float eps,
                          const float *gamma, const float *beta, weft_act act) {
  return CPU(be)->iface->group_norm(CPU(be), R(x), R(y), b, c, s, g, eps,
                                    R(gamma), R(beta), act);
}

static int emu_layer_norm(weft_backend *be, const float *x, float *y,
                          int64_t rows, int64_t dim, float eps,
                          const float *gamma, const float *beta) {
  return CPU(be)->iface->layer_norm(CPU(be), R(x), R(y), rows, dim, eps,
                                    R(gamma), R(beta));
}

static int emu_softmax(weft_backend *be, const float *x, float *y, int64_t rows,
                       int64_t dim) {
  return CPU(be)->iface->softmax(CPU(be), R(x), R(y), rows, dim);
}

static int emu_act(weft_backend *be, weft_act act, const float *x, float *y,
                   int64_t n) {
  return CPU(be)->iface->act(CPU(be), act, R(x), R(y), n);
}

static int emu_gated_act(weft_backend *be, weft_act act, const float *x,
                         float *y, int64_t rows, int64_t dim) {
  return CPU(be)->iface->gated_act(CPU(be), act, R(x), R(y), rows, dim);
}

static int emu_binary(weft_backend *be, weft_binop op, const float *a, int an,
                      const int64_t *as, const float *b, int bn,
                      const int64_t *bs, float *y) {
  /* the shapes are host arrays, as on every backend */
  return CPU(be)->iface->binary(CPU(be), op, R(a), an, as, R(b), bn, bs, R(y));
}

static int emu_scale_add(weft_backend *be, float *y, float alpha,
                         const float *a, float beta, const float *b,
                         int64_t n) {
  return CPU(be)->iface->scale_add(CPU(be), R(y), alpha, R(a), beta, R(b), n);
}

static int emu_upsample(weft_backend *be, const float *x, float *y,
                        int64_t planes, int64_t h, int64_t w) {
  return CPU(be)->iface->upsample_nearest2x(CPU(be), R(x), R(y), planes, h, w);
}

static int emu_concat(weft_backend *be, int n, const float *const *xs, int ndim,
                      const int64_t *const *shapes, int axis, float *y) {
  /* xs is a host array of device pointers */
  const float **r = malloc(sizeof *r * (size_t)(n > 0 ? n : 1));
  if (!r) return WEFT_ENOMEM;
  for (int i = 0; i < n; i++)
    r[i] = R(xs[i]);
  int rc = CPU(be)->iface->concat(CPU(be), n, r, ndim, shapes, axis, R(y));
  free(r);
  return rc;
}

static int emu_temb(weft_backend *be, const float *t, int64_t n, int64_t dim,
                    int flip, float shift, float scale, float max_period,
                    float *y) {
  return CPU(be)->iface->timestep_embedding(CPU(be), R(t), n, dim, flip, shift,
                                            scale, max_period, R(y));
}

static int emu_convert(weft_backend *be, void *dst, weft_dtype dt,
                       const void *src, weft_dtype st, int64_t n) {
  return CPU(be)->iface->convert(CPU(be), weft_emulated_host_ptr(dst), dt,
                                 weft_emulated_host_ptr(src), st, n);
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
                           .concat = emu_concat,
                           .timestep_embedding = emu_temb,
                           .convert = emu_convert};
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
