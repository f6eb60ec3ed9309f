/* backend.h - the kernel backend interface, after ggml-backend: a small
 * vtable each device backend fills (kernels/cpu now, kernels/cuda later), so
 * a model node calls one set of ops whatever device its tensors live on.
 *
 * A backend is { iface, ctx }.  Buffers are device memory: on the CPU plain
 * 64-byte aligned host memory, on CUDA device pointers.  Ops take pointers
 * into such buffers and the argument structs of kernels/ops.h; a backend
 * may run them asynchronously (CUDA: on its stream), and synchronize waits.
 * Members marked (optional) may be NULL.
 *
 * Activations.  A backend stores activations in one dtype, act_dtype
 * (fp32 unless it says otherwise; a CUDA backend may keep them in 16 bits,
 * weft_cuda_set_act_dtype).  The ops' activation pointers are then typed
 * float * but point to elements of that dtype, and a caller sizes, offsets
 * and copies them by weft_backend_act_size; it converts at its boundaries
 * (the convert op) and never reads them as floats.  Activations are: x and
 * y of linear, conv2d, the norms, softmax, act, gated_act,
 * upsample_nearest2x; q, k, v, o of attention; every operand of binary,
 * scale_add and concat; timestep_embedding's y (its t stays fp32); the
 * operands gemm's acts names.  Weights, biases, gamma and beta are fp32
 * (or registered 16-bit weights on CUDA). */
#ifndef WEFT_KERNELS_BACKEND_H
#define WEFT_KERNELS_BACKEND_H

#include "kernels/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum weft_device_kind {
  WEFT_DEVICE_KIND_CPU = 0,
  WEFT_DEVICE_KIND_CUDA = 1
} weft_device_kind;

typedef enum weft_copy_kind {
  WEFT_COPY_HOST_TO_DEVICE = 0,
  WEFT_COPY_DEVICE_TO_HOST,
  WEFT_COPY_DEVICE_TO_DEVICE
} weft_copy_kind;

typedef struct weft_backend weft_backend;

/* One linear of linear_group: y [rows, out] = x W^T (+ bias), W [out, in]
 * (as linear's) */
typedef struct weft_linear_part {
  const float *weight, *bias; /* bias may be NULL */
  int64_t out;
  float *y;
} weft_linear_part;

typedef struct weft_backend_iface {
  uint32_t struct_size; /* sizeof(weft_backend_iface) of the filler */
  const char *name;     /* "cpu", "cuda" */
  weft_device_kind device_kind;

  /* Frees the backend and its context. */
  void (*free)(weft_backend *be);
  /* (optional) threads of a CPU backend; 0 or a WEFT_E* code. */
  int (*set_threads)(weft_backend *be, int n_threads);
  /* (optional) waits until all queued work is done. */
  int (*synchronize)(weft_backend *be);

  /* Buffers.  alloc returns NULL when out of memory (transfer full: release
   * with buffer_free of the same backend). */
  void *(*buffer_alloc)(weft_backend *be, size_t nbytes);
  void (*buffer_free)(weft_backend *be, void *buf);
  int (*buffer_copy)(weft_backend *be, void *dst, const void *src,
                     size_t nbytes, weft_copy_kind kind);

  /* Ops: see kernels/cpu/cpu.h for each one's contract. */
  int (*gemm)(weft_backend *be, const weft_gemm_args *a);
  int (*linear)(weft_backend *be, const float *x, int64_t rows,
                int64_t in_features, const float *weight, const float *bias,
                int64_t out_features, float *y);
  int (*conv2d)(weft_backend *be, const weft_conv2d_args *a);
  size_t (*conv2d_scratch_bytes)(weft_backend *be, const weft_conv2d_args *a);
  int (*attention)(weft_backend *be, const weft_attn_args *a);
  size_t (*attention_scratch_bytes)(weft_backend *be, const weft_attn_args *a);
  int (*group_norm)(weft_backend *be, const float *x, float *y, int64_t batch,
                    int64_t channels, int64_t spatial, int64_t groups,
                    float eps, const float *gamma, const float *beta,
                    weft_act act);
  int (*layer_norm)(weft_backend *be, const float *x, float *y, int64_t rows,
                    int64_t dim, float eps, const float *gamma,
                    const float *beta);
  int (*softmax)(weft_backend *be, const float *x, float *y, int64_t rows,
                 int64_t dim);
  int (*act)(weft_backend *be, weft_act act, const float *x, float *y,
             int64_t n);
  int (*gated_act)(weft_backend *be, weft_act act, const float *x, float *y,
                   int64_t rows, int64_t dim);
  int (*binary)(weft_backend *be, weft_binop op, const float *a, int a_ndim,
                const int64_t *a_shape, const float *b, int b_ndim,
                const int64_t *b_shape, float *y);
  int (*scale_add)(weft_backend *be, float *y, float alpha, const float *a,
                   float beta, const float *b, int64_t n);
  int (*upsample_nearest2x)(weft_backend *be, const float *x, float *y,
                            int64_t planes, int64_t h, int64_t w);
  int (*concat)(weft_backend *be, int n, const float *const *xs, int ndim,
                const int64_t *const *shapes, int axis, float *y);
  int (*timestep_embedding)(weft_backend *be, const float *t, int64_t n,
                            int64_t dim, int flip_sin_to_cos,
                            float downscale_freq_shift, float scale,
                            float max_period, float *y);
  int (*convert)(weft_backend *be, void *dst, weft_dtype dst_type,
                 const void *src, weft_dtype src_type, int64_t n);
  /* (optional) the dtype activations are stored in; NULL: WEFT_F32 */
  weft_dtype (*act_dtype)(weft_backend *be);
  /* (optional) channels last: group_norm over x, y [batch, spatial,
   * channels] (a group is a slice of each pixel's channels), and nearest
   * 2x upsampling of [batch, h, w, channels] into [batch, 2h, 2w,
   * channels]; the values of the NCHW ops, moved.  A backend with both
   * takes weft_conv2d_args' x_nhwc / y_nhwc too (every backend's conv2d
   * does), so a model may keep its maps channels last between
   * convolutions. */
  int (*group_norm_cl)(weft_backend *be, const float *x, float *y,
                       int64_t batch, int64_t channels, int64_t spatial,
                       int64_t groups, float eps, const float *gamma,
                       const float *beta, weft_act act);
  int (*upsample_nearest2x_cl)(weft_backend *be, const float *x, float *y,
                               int64_t batch, int64_t h, int64_t w,
                               int64_t channels);
  /* (optional, all four or none) graphs, for kernels/record.h's replays:
   * the ops and device-to-device copies called between graph_begin and
   * graph_end are captured, not run, into *graph; graph_launch queues them
   * again, on the same buffers with the values those hold then.  Nothing
   * else may come between begin and end (no host copy, synchronize or
   * allocation that waits): it fails the capture, and graph_end then
   * returns non-zero and leaves *graph NULL.  graph_launch refuses, before
   * queueing anything, a graph that used backend-owned memory (scratch)
   * remade since.  graph_free waits for the graph's launches. */
  int (*graph_begin)(weft_backend *be);
  int (*graph_end)(weft_backend *be, void **graph);
  int (*graph_launch)(weft_backend *be, void *graph);
  void (*graph_free)(weft_backend *be, void *graph);
  /* (optional) n linears of one x [rows, in_features]: the values of
   * linear(x, rows, in_features, p.weight, p.bias, p.out, p.y) for each
   * part p, in one launch where the backend can (a UNet's time-embedding
   * projections, one a ResNet block).  No y may overlap x or another y.
   * weft_backend_linear_group runs the linears one by one without it. */
  int (*linear_group)(weft_backend *be, const float *x, int64_t rows,
                      int64_t in_features, int n,
                      const weft_linear_part *parts);
} weft_backend_iface;

struct weft_backend {
  const weft_backend_iface *iface;
  void *ctx; /* the backend's own context (weft_cpu_ctx for "cpu") */
};

/* A CPU backend over a new weft_cpu_ctx (n_threads as weft_cpu_ctx_new).
 * (transfer full: release with weft_backend_free) */
weft_backend *weft_backend_cpu_new(int n_threads);

static inline weft_dtype weft_backend_act_dtype(weft_backend *be) {
  return be->iface->act_dtype ? be->iface->act_dtype(be) : WEFT_F32;
}

/* Bytes of one activation element. */
static inline size_t weft_backend_act_size(weft_backend *be) {
  return weft_dtype_size(weft_backend_act_dtype(be));
}

/* Whether be runs the channels-last ops (group_norm_cl and
 * upsample_nearest2x_cl), in an iface that has them. */
static inline bool weft_backend_has_cl(weft_backend *be) {
  const weft_backend_iface *i = be->iface;
  return i->struct_size >= sizeof(weft_backend_iface) && i->group_norm_cl &&
         i->upsample_nearest2x_cl;
}

/* Whether be captures and launches graphs (graph_begin and the rest). */
static inline bool weft_backend_has_graphs(const weft_backend *be) {
  const weft_backend_iface *i = be->iface;
  return i->struct_size >= sizeof(weft_backend_iface) && i->graph_begin &&
         i->graph_end && i->graph_launch && i->graph_free;
}

/* linear_group where be has it, else its linears one by one */
static inline int weft_backend_linear_group(weft_backend *be, const float *x,
                                            int64_t rows, int64_t in, int n,
                                            const weft_linear_part *parts) {
  const weft_backend_iface *i = be->iface;
  if (i->struct_size >= sizeof(weft_backend_iface) && i->linear_group)
    return i->linear_group(be, x, rows, in, n, parts);
  for (int k = 0; k < n; k++) {
    const weft_linear_part *p = &parts[k];
    int rc = i->linear(be, x, rows, in, p->weight, p->bias, p->out, p->y);
    if (rc) return rc;
  }
  return 0;
}

static inline void weft_backend_free(weft_backend *be) {
  if (be) be->iface->free(be);
}

#ifdef __cplusplus
}
#endif
#endif
