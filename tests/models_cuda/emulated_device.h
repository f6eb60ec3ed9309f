/* emulated_device.h - a device backend for machines without a GPU: the CPU
 * backend's ops behind buffer pointers the host cannot dereference (each
 * one 2^46 past the real memory: a non-canonical x86-64 address, so a
 * host read or write of "device" memory faults at once).  It says it is
 * CUDA, so the model code takes its device paths -- weights uploaded,
 * inputs and outputs copied, host work on explicit copies -- while every
 * number comes from the CPU kernels: results must equal the CPU backend's
 * bit for bit.  Test-only. */
#ifndef WEFT_TEST_EMULATED_DEVICE_H
#define WEFT_TEST_EMULATED_DEVICE_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"

#define EMU_OFFSET ((uintptr_t)1 << 46)

typedef struct emu_ctx {
  weft_backend *cpu;
  weft_backend_iface iface;
  int64_t live; /* buffers handed out and not freed */
  /* bytes handed out and not freed, and their high-water (what a device
   * allocator without a cache would hold at most) */
  uint64_t live_bytes, peak_bytes;
} emu_ctx;

/* Each buffer carries its size in a 64-byte header before it (64 keeps the
 * CPU backend's alignment). */
#define EMU_HDR 64

static inline void *emu_real(const void *p) {
  return p ? (void *)((uintptr_t)p - EMU_OFFSET) : NULL;
}
#define EMU_R(p) ((float *)emu_real(p))
#define EMU_CPU(be) (((emu_ctx *)(be)->ctx)->cpu)

static void emu_free(weft_backend *be) {
  emu_ctx *e = be->ctx;
  weft_backend_free(e->cpu);
  free(e);
  free(be);
}

static void *emu_alloc(weft_backend *be, size_t n) {
  emu_ctx *e = be->ctx;
  char *p = e->cpu->iface->buffer_alloc(e->cpu, n + EMU_HDR);
  if (!p) return NULL;
  memcpy(p, &n, sizeof n);
  e->live++;
  e->live_bytes += n;
  if (e->live_bytes > e->peak_bytes) e->peak_bytes = e->live_bytes;
  return (void *)((uintptr_t)(p + EMU_HDR) + EMU_OFFSET);
}

static void emu_buf_free(weft_backend *be, void *p) {
  emu_ctx *e = be->ctx;
  if (!p) return;
  char *real = (char *)emu_real(p) - EMU_HDR;
  size_t n;
  memcpy(&n, real, sizeof n);
  e->live--;
  e->live_bytes -= n;
  e->cpu->iface->buffer_free(e->cpu, real);
}

static int emu_copy(weft_backend *be, void *dst, const void *src, size_t n,
                    weft_copy_kind k) {
  (void)be;
  if (k != WEFT_COPY_HOST_TO_DEVICE) src = emu_real(src);
  if (k != WEFT_COPY_DEVICE_TO_HOST) dst = emu_real(dst);
  memcpy(dst, src, n);
  return 0;
}

static int emu_gemm(weft_backend *be, const weft_gemm_args *a) {
  weft_gemm_args g = *a;
  g.a = EMU_R(a->a), g.b = EMU_R(a->b), g.c = EMU_R(a->c);
  return EMU_CPU(be)->iface->gemm(EMU_CPU(be), &g);
}

static int emu_linear(weft_backend *be, const float *x, int64_t rows,
                      int64_t in, const float *w, const float *b, int64_t out,
                      float *y) {
  return EMU_CPU(be)->iface->linear(EMU_CPU(be), EMU_R(x), rows, in, EMU_R(w),
                                    EMU_R(b), out, EMU_R(y));
}

static weft_conv2d_args emu_conv_args(const weft_conv2d_args *a) {
  weft_conv2d_args c = *a;
  c.x = EMU_R(a->x), c.weight = EMU_R(a->weight), c.bias = EMU_R(a->bias);
  c.y = EMU_R(a->y), c.scratch = emu_real(a->scratch);
  return c;
}

static int emu_conv2d(weft_backend *be, const weft_conv2d_args *a) {
  weft_conv2d_args c = emu_conv_args(a);
  return EMU_CPU(be)->iface->conv2d(EMU_CPU(be), &c);
}

static size_t emu_conv2d_scratch(weft_backend *be, const weft_conv2d_args *a) {
  weft_conv2d_args c = emu_conv_args(a);
  return EMU_CPU(be)->iface->conv2d_scratch_bytes(EMU_CPU(be), &c);
}

static weft_attn_args emu_attn_args(const weft_attn_args *a) {
  weft_attn_args t = *a;
  t.q = EMU_R(a->q), t.k = EMU_R(a->k), t.v = EMU_R(a->v), t.o = EMU_R(a->o);
  t.scratch = emu_real(a->scratch);
  return t;
}

static int emu_attention(weft_backend *be, const weft_attn_args *a) {
  weft_attn_args t = emu_attn_args(a);
  return EMU_CPU(be)->iface->attention(EMU_CPU(be), &t);
}

static size_t emu_attention_scratch(weft_backend *be, const weft_attn_args *a) {
  weft_attn_args t = emu_attn_args(a);
  return EMU_CPU(be)->iface->attention_scratch_bytes(EMU_CPU(be), &t);
}

static int emu_group_norm(weft_backend *be, const float *x, float *y, int64_t b,
                          int64_t c, int64_t s, int64_t g, float eps,
                          const float *gamma, const float *beta, weft_act act) {
  return EMU_CPU(be)->iface->group_norm(EMU_CPU(be), EMU_R(x), EMU_R(y), b, c,
                                        s, g, eps, EMU_R(gamma), EMU_R(beta),
                                        act);
}

static int emu_layer_norm(weft_backend *be, const float *x, float *y,
                          int64_t rows, int64_t dim, float eps,
                          const float *gamma, const float *beta) {
  return EMU_CPU(be)->iface->layer_norm(EMU_CPU(be), EMU_R(x), EMU_R(y), rows,
                                        dim, eps, EMU_R(gamma), EMU_R(beta));
}

static int emu_softmax(weft_backend *be, const float *x, float *y, int64_t rows,
                       int64_t dim) {
  return EMU_CPU(be)->iface->softmax(EMU_CPU(be), EMU_R(x), EMU_R(y), rows,
                                     dim);
}

static int emu_act(weft_backend *be, weft_act act, const float *x, float *y,
                   int64_t n) {
  return EMU_CPU(be)->iface->act(EMU_CPU(be), act, EMU_R(x), EMU_R(y), n);
}

static int emu_gated_act(weft_backend *be, weft_act act, const float *x,
                         float *y, int64_t rows, int64_t dim) {
  return EMU_CPU(be)->iface->gated_act(EMU_CPU(be), act, EMU_R(x), EMU_R(y),
                                       rows, dim);
}

static int emu_binary(weft_backend *be, weft_binop op, const float *a, int an,
                      const int64_t *as, const float *b, int bn,
                      const int64_t *bs, float *y) {
  return EMU_CPU(be)->iface->binary(EMU_CPU(be), op, EMU_R(a), an, as, EMU_R(b),
                                    bn, bs, EMU_R(y));
}

static int emu_scale_add(weft_backend *be, float *y, float alpha,
                         const float *a, float beta, const float *b,
                         int64_t n) {
  return EMU_CPU(be)->iface->scale_add(EMU_CPU(be), EMU_R(y), alpha, EMU_R(a),
                                       beta, EMU_R(b), n);
}

static int emu_upsample(weft_backend *be, const float *x, float *y,
                        int64_t planes, int64_t h, int64_t w) {
  return EMU_CPU(be)->iface->upsample_nearest2x(EMU_CPU(be), EMU_R(x), EMU_R(y),
                                                planes, h, w);
}

static int emu_concat(weft_backend *be, int n, const float *const *xs, int ndim,
                      const int64_t *const *shapes, int axis, float *y) {
  const float **r = malloc(sizeof *r * (size_t)(n > 0 ? n : 1));
  if (!r) return WEFT_ENOMEM;
  for (int i = 0; i < n; i++)
    r[i] = EMU_R(xs[i]);
  int rc = EMU_CPU(be)->iface->concat(EMU_CPU(be), n, r, ndim, shapes, axis,
                                      EMU_R(y));
  free(r);
  return rc;
}

static int emu_temb(weft_backend *be, const float *t, int64_t n, int64_t dim,
                    int flip, float shift, float scale, float max_period,
                    float *y) {
  return EMU_CPU(be)->iface->timestep_embedding(
      EMU_CPU(be), EMU_R(t), n, dim, flip, shift, scale, max_period, EMU_R(y));
}

static int emu_convert(weft_backend *be, void *dst, weft_dtype dt,
                       const void *src, weft_dtype st, int64_t n) {
  return EMU_CPU(be)->iface->convert(EMU_CPU(be), emu_real(dst), dt,
                                     emu_real(src), st, n);
}

/* (transfer full: weft_backend_free) */
static inline weft_backend *emu_backend_new(void) {
  weft_backend *be = calloc(1, sizeof *be);
  emu_ctx *e = calloc(1, sizeof *e);
  if (!be || !e || !(e->cpu = weft_backend_cpu_new(2))) {
    free(be), free(e);
    return NULL;
  }
  e->iface =
      (weft_backend_iface){.struct_size = sizeof(weft_backend_iface),
                           .name = "emulated",
                           .device_kind = WEFT_DEVICE_KIND_CUDA,
                           .free = emu_free,
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

/* bytes of the emulated backend's buffers held now, and the most held at
 * once since emu_backend_new or the last emu_peak_reset */
static inline uint64_t emu_live_bytes(const weft_backend *be) {
  return ((const emu_ctx *)be->ctx)->live_bytes;
}
static inline uint64_t emu_peak_bytes(const weft_backend *be) {
  return ((const emu_ctx *)be->ctx)->peak_bytes;
}
static inline void emu_peak_reset(weft_backend *be) {
  emu_ctx *e = be->ctx;
  e->peak_bytes = e->live_bytes;
}

/* buffers of the emulated backend not freed yet */
static inline int64_t emu_live(const weft_backend *be) {
  return ((const emu_ctx *)be->ctx)->live;
}

#endif
