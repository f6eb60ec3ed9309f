/* backend_cpu.c - the CPU backend's weft_backend vtable: thin wrappers that
 * forward to the weft_cpu_* kernels with the backend's weft_cpu_ctx. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "kernels/backend.h"

#define CTX(be) ((weft_cpu_ctx *)(be)->ctx)

static void be_free(weft_backend *be) {
  weft_cpu_ctx_free(CTX(be));
  free(be);
}
static int be_set_threads(weft_backend *be, int n) {
  return weft_cpu_set_threads(CTX(be), n);
}
static int be_synchronize(weft_backend *be) {
  (void)be; /* CPU kernels finish before they return */
  return 0;
}
static void *be_alloc(weft_backend *be, size_t nbytes) {
  (void)be;
  return weft__alloc(nbytes);
}
static void be_buf_free(weft_backend *be, void *buf) {
  (void)be;
  free(buf);
}
static int be_copy(weft_backend *be, void *dst, const void *src, size_t n,
                   weft_copy_kind kind) {
  (void)be;
  (void)kind; /* host and device are the same memory */
  if (n && (!dst || !src)) return WEFT_EINVAL;
  memmove(dst, src, n);
  return 0;
}
static int be_gemm(weft_backend *be, const weft_gemm_args *a) {
  return weft_cpu_gemm(CTX(be), a);
}
static int be_linear(weft_backend *be, const float *x, int64_t rows, int64_t in,
                     const float *w, const float *b, int64_t out, float *y) {
  return weft_cpu_linear(CTX(be), x, rows, in, w, b, out, y);
}
static int be_conv2d(weft_backend *be, const weft_conv2d_args *a) {
  return weft_cpu_conv2d(CTX(be), a);
}
static size_t be_conv2d_scratch(weft_backend *be, const weft_conv2d_args *a) {
  return weft_cpu_conv2d_scratch_bytes(CTX(be), a);
}
static int be_attention(weft_backend *be, const weft_attn_args *a) {
  return weft_cpu_attention(CTX(be), a);
}
static size_t be_attention_scratch(weft_backend *be, const weft_attn_args *a) {
  return weft_cpu_attention_scratch_bytes(CTX(be), a);
}
static int be_group_norm(weft_backend *be, const float *x, float *y,
                         int64_t batch, int64_t channels, int64_t spatial,
                         int64_t groups, float eps, const float *gamma,
                         const float *beta, weft_act act) {
  return weft_cpu_group_norm(CTX(be), x, y, batch, channels, spatial, groups,
                             eps, gamma, beta, act);
}
static int be_layer_norm(weft_backend *be, const float *x, float *y,
                         int64_t rows, int64_t dim, float eps,
                         const float *gamma, const float *beta) {
  return weft_cpu_layer_norm(CTX(be), x, y, rows, dim, eps, gamma, beta);
}
static int be_softmax(weft_backend *be, const float *x, float *y, int64_t rows,
                      int64_t dim) {
  return weft_cpu_softmax(CTX(be), x, y, rows, dim);
}
static int be_act(weft_backend *be, weft_act act, const float *x, float *y,
                  int64_t n) {
  return weft_cpu_act(CTX(be), act, x, y, n);
}
static int be_gated_act(weft_backend *be, weft_act act, const float *x,
                        float *y, int64_t rows, int64_t dim) {
  return weft_cpu_gated_act(CTX(be), act, x, y, rows, dim);
}
static int be_binary(weft_backend *be, weft_binop op, const float *a,
                     int a_ndim, const int64_t *a_shape, const float *b,
                     int b_ndim, const int64_t *b_shape, float *y) {
  return weft_cpu_binary(CTX(be), op, a, a_ndim, a_shape, b, b_ndim, b_shape,
                         y);
}
static int be_scale_add(weft_backend *be, float *y, float alpha, const float *a,
                        float beta, const float *b, int64_t n) {
  return weft_cpu_scale_add(CTX(be), y, alpha, a, beta, b, n);
}
static int be_upsample(weft_backend *be, const float *x, float *y,
                       int64_t planes, int64_t h, int64_t w) {
  return weft_cpu_upsample_nearest2x(CTX(be), x, y, planes, h, w);
}
static int be_group_norm_cl(weft_backend *be, const float *x, float *y,
                            int64_t batch, int64_t channels, int64_t spatial,
                            int64_t groups, float eps, const float *gamma,
                            const float *beta, weft_act act) {
  return weft_cpu_group_norm_cl(CTX(be), x, y, batch, channels, spatial, groups,
                                eps, gamma, beta, act);
}
static int be_upsample_cl(weft_backend *be, const float *x, float *y,
                          int64_t batch, int64_t h, int64_t w,
                          int64_t channels) {
  return weft_cpu_upsample_nearest2x_cl(CTX(be), x, y, batch, h, w, channels);
}
static int be_concat(weft_backend *be, int n, const float *const *xs, int ndim,
                     const int64_t *const *shapes, int axis, float *y) {
  return weft_cpu_concat(CTX(be), n, xs, ndim, shapes, axis, y);
}
static int be_timestep(weft_backend *be, const float *t, int64_t n, int64_t dim,
                       int flip, float shift, float scale, float max_period,
                       float *y) {
  return weft_cpu_timestep_embedding(CTX(be), t, n, dim, flip, shift, scale,
                                     max_period, y);
}
static int be_convert(weft_backend *be, void *dst, weft_dtype dt,
                      const void *src, weft_dtype st, int64_t n) {
  return weft_cpu_convert(CTX(be), dst, dt, src, st, n);
}

static const weft_backend_iface cpu_iface = {
    .struct_size = sizeof(weft_backend_iface),
    .name = "cpu",
    .device_kind = WEFT_DEVICE_KIND_CPU,
    .free = be_free,
    .set_threads = be_set_threads,
    .synchronize = be_synchronize,
    .buffer_alloc = be_alloc,
    .buffer_free = be_buf_free,
    .buffer_copy = be_copy,
    .gemm = be_gemm,
    .linear = be_linear,
    .conv2d = be_conv2d,
    .conv2d_scratch_bytes = be_conv2d_scratch,
    .attention = be_attention,
    .attention_scratch_bytes = be_attention_scratch,
    .group_norm = be_group_norm,
    .layer_norm = be_layer_norm,
    .softmax = be_softmax,
    .act = be_act,
    .gated_act = be_gated_act,
    .binary = be_binary,
    .scale_add = be_scale_add,
    .upsample_nearest2x = be_upsample,
    .concat = be_concat,
    .timestep_embedding = be_timestep,
    .convert = be_convert,
    .group_norm_cl = be_group_norm_cl,
    .upsample_nearest2x_cl = be_upsample_cl,
};

weft_backend *weft_backend_cpu_new(int n_threads) {
  weft_backend *be = calloc(1, sizeof *be);
  if (!be) return NULL;
  be->ctx = weft_cpu_ctx_new(n_threads);
  if (!be->ctx) {
    free(be);
    return NULL;
  }
  be->iface = &cpu_iface;
  return be;
}
