/* ops.h - argument types of the numeric kernels, shared by every backend
 * (kernels/cpu now, kernels/cuda later).
 *
 * Conventions.  Everything is fp32 unless a dtype is named.  Shapes and
 * strides are in elements (int64_t).  Layouts are torch's: row-major, NCHW
 * images, Linear weights [out, in], conv weights [O, I, kh, kw].  A kernel
 * never keeps a pointer past its return; every buffer is borrowed
 * (transfer none) and stays owned by the caller.  Functions return 0 or a
 * negative WEFT_E* code (WEFT_EINVAL for shapes that do not fit,
 * WEFT_ENOMEM when internal scratch cannot be allocated); on error the
 * output is unspecified. */
#ifndef WEFT_KERNELS_OPS_H
#define WEFT_KERNELS_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weft/plugin.h" /* weft_dtype, WEFT_E* codes */

#ifdef __cplusplus
extern "C" {
#endif

/* Pointwise activations.  GELU_ERF is torch's gelu(approximate="none"),
 * GELU_TANH gelu(approximate="tanh"), QUICK_GELU CLIP's x*sigmoid(1.702x). */
typedef enum weft_act {
  WEFT_ACT_NONE = 0,
  WEFT_ACT_SILU,
  WEFT_ACT_GELU_ERF,
  WEFT_ACT_GELU_TANH,
  WEFT_ACT_QUICK_GELU,
  WEFT_ACT_COUNT
} weft_act;

typedef enum weft_binop {
  WEFT_BIN_ADD = 0,
  WEFT_BIN_SUB,
  WEFT_BIN_MUL,
  WEFT_BIN_DIV,
  WEFT_BIN_COUNT
} weft_binop;

/* y = a op b with numpy's broadcasting (shapes right-aligned, a 1 stretches),
 * as loops over nd dims of the output: size-1 dims dropped, and a dim merged
 * into the next when both operands step through it contiguously (or both
 * broadcast it), so a backend's inner loop runs long.  sa/sb are element
 * strides into a and b (0 where broadcast); the last dim is innermost. */
typedef struct weft_bcast {
  int nd;
  int64_t shape[WEFT_MAX_DIMS], sa[WEFT_MAX_DIMS], sb[WEFT_MAX_DIMS];
  int64_t total; /* elements of y; 0 for an empty one */
} weft_bcast;

/* 0, or WEFT_EINVAL for shapes that do not broadcast. */
static inline int weft_bcast_plan(int a_ndim, const int64_t *a_shape,
                                  int b_ndim, const int64_t *b_shape,
                                  weft_bcast *p) {
  if (a_ndim < 0 || b_ndim < 0 || a_ndim > WEFT_MAX_DIMS ||
      b_ndim > WEFT_MAX_DIMS || (a_ndim && !a_shape) || (b_ndim && !b_shape))
    return WEFT_EINVAL;
  int nd = a_ndim > b_ndim ? a_ndim : b_ndim;
  int64_t shape[WEFT_MAX_DIMS], sa[WEFT_MAX_DIMS], sb[WEFT_MAX_DIMS];
  int64_t ca = 1, cb = 1, total = 1;
  for (int d = nd - 1; d >= 0; d--) { /* right-aligned, numpy's rule */
    int ia = d - (nd - a_ndim), ib = d - (nd - b_ndim);
    int64_t da = ia >= 0 ? a_shape[ia] : 1, db = ib >= 0 ? b_shape[ib] : 1;
    if (da < 0 || db < 0 || (da != db && da != 1 && db != 1))
      return WEFT_EINVAL;
    shape[d] = da == 1 ? db : da;
    sa[d] = da == 1 ? 0 : ca;
    sb[d] = db == 1 ? 0 : cb;
    ca *= da;
    cb *= db;
    total *= shape[d];
  }
  int m = 0;
  for (int d = 0; d < nd; d++) {
    if (shape[d] == 1) continue;
    if (m > 0 && p->sa[m - 1] == sa[d] * shape[d] &&
        p->sb[m - 1] == sb[d] * shape[d]) {
      p->shape[m - 1] *= shape[d];
      p->sa[m - 1] = sa[d];
      p->sb[m - 1] = sb[d];
      continue;
    }
    p->shape[m] = shape[d];
    p->sa[m] = sa[d];
    p->sb[m] = sb[d];
    m++;
  }
  if (m == 0) { /* scalars */
    p->shape[0] = 1;
    p->sa[0] = p->sb[0] = 1;
    m = 1;
  }
  p->nd = m;
  p->total = total;
  return 0;
}

/* C = alpha * op(A) @ op(B) + beta * C, row-major; op(A) is [m,k], op(B)
 * [k,n], C [m,n]; op(X) = X^T when trans_x.  lda/ldb/ldc are row strides of
 * the matrices as stored (A stored [k,m] when trans_a).  batch > 1 repeats
 * the product with each pointer advanced by its stride_* (0 = the same
 * matrix for every item, e.g. one weight for all images).  batch 0 means 1.
 * With beta == 0, C is not read (NaNs in it do not propagate).  bias
 * (optional, fp32) is added to C after the product, in every item:
 * bias[j] to column j ([n]), or with bias_per_row bias[r] to row r ([m]).
 * acts says which operands are activations (WEFT_GEMM_ACT_*): a backend
 * with 16-bit activations (backend.h) reads and writes those in its
 * activation dtype; the others are weights (fp32, or registered 16-bit).
 * Backends with fp32 activations ignore it. */
enum { WEFT_GEMM_ACT_A = 1, WEFT_GEMM_ACT_B = 2, WEFT_GEMM_ACT_C = 4 };

typedef struct weft_gemm_args {
  int64_t m, n, k;
  int trans_a, trans_b;
  float alpha, beta;
  const float *a;
  int64_t lda;
  const float *b;
  int64_t ldb;
  float *c;
  int64_t ldc;
  int64_t batch;
  int64_t stride_a, stride_b, stride_c;
  const float *bias;
  int bias_per_row;
  unsigned acts;
} weft_gemm_args;

/* 2-D convolution, torch's F.conv2d with groups=1 and dilation 1.
 * x [batch, c_in, h_in, w_in], weight [c_out, c_in, k_h, k_w], bias [c_out]
 * or NULL, y [batch, c_out, h_out, w_out] with
 *   h_out = (h_in + pad_top + pad_bottom - k_h) / stride_h + 1
 * (weft_conv2d_out_size).  Padding may be asymmetric (the VAE encoder's
 * F.pad(x, (0,1,0,1)) + stride-2 conv is pad_bottom = pad_right = 1).
 * Images may sit inside larger buffers: x_bstride / y_bstride are the
 * element distances between consecutive images (0 = packed), so a conv can
 * write straight into the channel slice of a concat buffer.  Each image
 * itself is contiguous CHW.  scratch (optional) lets a memory planner supply
 * the temporary buffer: at least weft_cpu_conv2d_scratch_bytes() bytes;
 * NULL makes the kernel allocate and free it itself.  x and y must not
 * overlap.  w_hwc: the weight is stored channels last, [c_out, k_h, k_w,
 * c_in] (cuDNN's NHWC filter layout, which a device may keep its copies
 * in: nodes/sd's upload does on CUDA); every backend takes both.
 * An epilogue after the bias (NULL: none), in this order:
 *   chan_add [batch, c_out]: y[n][o][:] += chan_add[n * c_out + o] (a
 *     ResNet block's time-embedding projection);
 *   residual, laid out as y (y's batch stride): y += residual (the block's
 *     skip connection).
 * Each sum is the fp32 sum the separate ops would form (binary WEFT_BIN_ADD,
 * scale_add with 1 and 1), so a backend may run them as those ops; with
 * 16-bit activations y may be rounded before the epilogue and after it
 * (CUDA's ways but the channels-last one) or once, after it (that way).
 * Neither may overlap y.
 * A prologue (prenorm, NULL: none): x is the input of a group norm and
 * activation, and the convolution reads what weft_backend's group_norm(x,
 * ..., groups, eps, gamma, beta, act) would write (a ResNet block's norm
 * and SiLU before its convolution); x then has packed images (x_bstride 0
 * or c_in * h_in * w_in).  A backend that cannot do it without a copy of
 * the normalized x (CUDA but on its channels-last way) returns
 * WEFT_EUNSUPPORTED before it does anything: the caller runs group_norm,
 * then the convolution.
 * Channels last: x_nhwc says x is [batch, h_in, w_in, c_in], y_nhwc that y
 * (and the residual, laid out as y) is [batch, h_out, w_out, c_out], each
 * with packed images (the batch strides 0 or whole images); a prologue's
 * group norm then takes x's groups as slices of each pixel's channels.
 * The values are those of the NCHW convolution, moved. */
typedef struct weft_conv2d_prenorm {
  int64_t groups;
  float eps;
  const float *gamma, *beta; /* [c_in] or NULL */
  weft_act act;
} weft_conv2d_prenorm;

typedef struct weft_conv2d_args {
  int64_t batch, c_in, h_in, w_in;
  int64_t c_out, k_h, k_w;
  int64_t stride_h, stride_w;
  int64_t pad_top, pad_left, pad_bottom, pad_right;
  const float *x;
  int64_t x_bstride;
  const float *weight;
  const float *bias;
  float *y;
  int64_t y_bstride;
  void *scratch;
  size_t scratch_bytes;
  int w_hwc;
  const float *chan_add;
  const float *residual;
  const weft_conv2d_prenorm *prenorm;
  int x_nhwc, y_nhwc;
} weft_conv2d_args;

/* dst = w [c_out, kk, c_in] (channels last, kk = k_h * k_w) laid out as
 * [c_out, c_in, kk], or back (to_hwc): one conv weight between the two
 * layouts of weft_conv2d_args.w_hwc, in fp32. */
static inline void weft_conv2d_weight_layout(const float *w, float *dst,
                                             int64_t c_out, int64_t c_in,
                                             int64_t kk, bool to_hwc) {
  for (int64_t o = 0; o < c_out; o++, w += c_in * kk, dst += c_in * kk)
    for (int64_t c = 0; c < c_in; c++)
      for (int64_t r = 0; r < kk; r++) {
        if (to_hwc)
          dst[r * c_in + c] = w[c * kk + r];
        else
          dst[c * kk + r] = w[r * c_in + c];
      }
}

static inline int64_t weft_conv2d_out_size(int64_t in, int64_t k,
                                           int64_t stride, int64_t pad_begin,
                                           int64_t pad_end) {
  int64_t span = in + pad_begin + pad_end - k;
  return span < 0 || stride <= 0 ? 0 : span / stride + 1;
}

/* A 1x1, stride-1, unpadded conv: one GEMM per image. */
static inline bool weft_conv2d_is_pointwise(const weft_conv2d_args *a) {
  return a->k_h == 1 && a->k_w == 1 && a->stride_h == 1 && a->stride_w == 1 &&
         a->pad_top == 0 && a->pad_left == 0 && a->pad_bottom == 0 &&
         a->pad_right == 0;
}

/* The shape rules every backend applies to a conv (buffers not looked at:
 * a scratch size is asked before they exist): the output size, or
 * WEFT_EINVAL. */
static inline int weft_conv2d_check_shapes(const weft_conv2d_args *a,
                                           int64_t *h_out, int64_t *w_out) {
  if (!a) return WEFT_EINVAL;
  if (a->batch < 0 || a->c_in <= 0 || a->h_in <= 0 || a->w_in <= 0 ||
      a->c_out <= 0 || a->k_h <= 0 || a->k_w <= 0 || a->stride_h <= 0 ||
      a->stride_w <= 0 || a->pad_top < 0 || a->pad_left < 0 ||
      a->pad_bottom < 0 || a->pad_right < 0)
    return WEFT_EINVAL;
  *h_out = weft_conv2d_out_size(a->h_in, a->k_h, a->stride_h, a->pad_top,
                                a->pad_bottom);
  *w_out = weft_conv2d_out_size(a->w_in, a->k_w, a->stride_w, a->pad_left,
                                a->pad_right);
  if (*h_out <= 0 || *w_out <= 0) return WEFT_EINVAL;
  int64_t k = a->c_in * a->k_h * a->k_w, n = *h_out * *w_out;
  if (k > INT32_MAX || n > INT32_MAX || a->c_out > INT32_MAX)
    return WEFT_EINVAL;
  if ((a->x_bstride && a->x_bstride < a->c_in * a->h_in * a->w_in) ||
      (a->y_bstride && a->y_bstride < a->c_out * n))
    return WEFT_EINVAL;
  if ((a->residual && a->residual == a->y) ||
      (a->chan_add && a->chan_add == a->y))
    return WEFT_EINVAL; /* the epilogue's inputs must not overlap y */
  if ((a->x_nhwc && a->x_bstride &&
       a->x_bstride != a->c_in * a->h_in * a->w_in) ||
      (a->y_nhwc && a->y_bstride && a->y_bstride != a->c_out * n))
    return WEFT_EINVAL; /* channels last: packed images only */
  const weft_conv2d_prenorm *pn = a->prenorm;
  if (pn && (pn->groups <= 0 || a->c_in % pn->groups != 0 ||
             (int)pn->act < 0 || pn->act >= WEFT_ACT_COUNT ||
             (a->x_bstride && a->x_bstride != a->c_in * a->h_in * a->w_in)))
    return WEFT_EINVAL;
  return 0;
}

/* Scaled dot-product attention, torch's F.scaled_dot_product_attention:
 *   o = softmax(scale * q @ k^T [+ causal mask]) @ v
 * q [batch, heads, lq, d], k [batch, heads, lk, d], v [batch, heads, lk, dv],
 * o [batch, heads, lq, dv], each addressed through its own strides for the
 * batch, head and sequence axes; the last (feature) axis must be contiguous.
 * Both layouts diffusers produces work without copies:
 *   [B,H,L,d] contiguous: s_b = H*L*d, s_h = L*d, s_l = d
 *   [B,L,H*d] (the projections' output): s_b = L*H*d, s_h = d, s_l = H*d
 * (weft_attn_strides_bhld / weft_attn_strides_blhd fill these).
 * scale 0 means 1/sqrt(d).  causal masks key j > query i (torch's
 * is_causal, aligned at the top-left; CLIP's text encoder).  The score
 * buffer is bounded, never lq x lk: the BLAS path works on q_chunk query
 * rows at a time (0 = 256), the AVX2 kernel on 24-row blocks per thread.
 * scratch (optional): at least weft_cpu_attention_scratch_bytes() bytes,
 * 64-byte aligned, for the same context and thread count; NULL makes the
 * kernel allocate it.  o must not overlap
 * q, k or v. */
typedef struct weft_attn_strides {
  int64_t b, h, l;
} weft_attn_strides;

typedef struct weft_attn_args {
  int64_t batch, heads, lq, lk, d, dv;
  const float *q;
  weft_attn_strides q_s;
  const float *k;
  weft_attn_strides k_s;
  const float *v;
  weft_attn_strides v_s;
  float *o;
  weft_attn_strides o_s;
  float scale;
  int causal;
  int64_t q_chunk;
  void *scratch;
  size_t scratch_bytes;
} weft_attn_args;

/* Elements a strided batch of rows x cols matrices spans from its start
 * (row stride ld; batch stride stride, 0 for one matrix every item shares;
 * 0 for an empty one). */
static inline int64_t weft_matrix_span(int64_t rows, int64_t cols, int64_t ld,
                                       int64_t stride, int64_t batch) {
  if (rows <= 0 || cols <= 0) return 0;
  return (stride == 0 || batch <= 1 ? 0 : (batch - 1) * stride) +
         (rows - 1) * ld + cols;
}

/* Elements a [batch, heads, len, d] view with strides s spans from its
 * start (0 for an empty one). */
static inline int64_t weft_attn_span(int64_t batch, int64_t heads,
                                     int64_t len, int64_t d,
                                     weft_attn_strides s) {
  if (batch <= 0 || heads <= 0 || len <= 0 || d <= 0) return 0;
  return (batch - 1) * s.b + (heads - 1) * s.h + (len - 1) * s.l + d;
}

/* Strides of a contiguous [B, H, L, d] tensor. */
static inline weft_attn_strides weft_attn_strides_bhld(int64_t heads,
                                                       int64_t len, int64_t d) {
  weft_attn_strides s = {heads * len * d, len * d, d};
  return s;
}

/* Strides of head views into a contiguous [B, L, H*d] tensor. */
static inline weft_attn_strides weft_attn_strides_blhd(int64_t heads,
                                                       int64_t len, int64_t d) {
  weft_attn_strides s = {len * heads * d, d, heads * d};
  return s;
}

#ifdef __cplusplus
}
#endif
#endif
