// pointwise.cu - the memory-bound kernels of the CUDA backend: activations,
// gated activations, broadcasting binary ops, scale-add, bias adds, GEMM's
// k = 0 case, nearest 2x upsampling, timestep embeddings and dtype
// conversion.  Each is a grid-stride loop; the formulas are kernels/cpu's.
// Activations may be 16-bit: the kernels are templates on the storage type
// T (float, __half or __nv_bfloat16, the launchers' dt), compute in fp32
// and round once at each store (common.cuh's weft_cu_ld / weft_cu_st);
// weights, biases and timesteps stay fp32.  For T = float the kernels are
// the fp32 ones, operation for operation.
#include "common.cuh"

// ---- activations -----------------------------------------------------------

template <typename T>
__global__ void act_kernel(int act, const T *__restrict__ x, T *__restrict__ y,
                           int64_t n) {
  weft_cu_pdl_wait();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    weft_cu_st(y + i, weft_cu_act1s<T>(act, weft_cu_ld(x + i)));
}

// In place (x == y) is fine here: each element is read, then written, by
// one thread; so no __restrict__ on the in-place-capable kernels.
template <typename T>
__global__ void act_kernel_alias(int act, const T *x, T *y, int64_t n) {
  weft_cu_pdl_wait();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    weft_cu_st(y + i, weft_cu_act1s<T>(act, weft_cu_ld(x + i)));
}

template <typename T>
static void launch_act(cudaStream_t s, int act, const T *x, T *y, int64_t n) {
  unsigned g = weft_cu_blocks(n, WEFT_CU_THREADS);
  if (x == y)
    weft_cu_launch(act_kernel_alias<T>, g, WEFT_CU_THREADS, 0, s, act, x, y, n);
  else
    weft_cu_launch(act_kernel<T>, g, WEFT_CU_THREADS, 0, s, act, x, y, n);
}

extern "C" cudaError_t weft__cu_act(cudaStream_t s, int dt, int act,
                                    const void *x, void *y, int64_t n) {
  WEFT_CU_WITH_TYPE(
      dt, T,
      launch_act<T>(s, act, static_cast<const T *>(x), static_cast<T *>(y), n));
  return cudaGetLastError();
}

// y[r, i] = x[r, i] * act(x[r, dim + i]); x and y do not overlap (the
// caller routes in-place calls through a temporary).  Rows on grid.y, V
// columns (1 or 4: weft_cu_ld4 / st4 when dim % 4 == 0 and both are
// 4-element aligned) per thread.
template <typename T, int V>
__global__ void gated_kernel(int act, const T *__restrict__ x,
                             T *__restrict__ y, int64_t rows, int64_t dim) {
  weft_cu_pdl_wait();
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const T *row = x + r * 2 * dim;
    T *out = y + r * dim;
    for (int64_t c = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) * V;
         c < dim; c += (int64_t)gridDim.x * blockDim.x * V) {
      if (V == 4) {
        const float4 u = weft_cu_ld4(row + c);
        const float4 g = weft_cu_ld4(row + dim + c);
        weft_cu_st4(out + c, make_float4(u.x * weft_cu_act1(act, g.x),
                                         u.y * weft_cu_act1(act, g.y),
                                         u.z * weft_cu_act1(act, g.z),
                                         u.w * weft_cu_act1(act, g.w)));
      } else {
        weft_cu_st(out + c, weft_cu_ld(row + c) *
                                weft_cu_act1(act, weft_cu_ld(row + dim + c)));
      }
    }
  }
}

// A 2-D grid over rows x (cols / v): grid.y the rows (at most 65535, the
// kernels loop), grid.x enough blocks for a row, the total bounded.
static dim3 rows_grid(int64_t rows, int64_t cols, int v) {
  dim3 g(weft_cu_blocks((cols + v - 1) / v, WEFT_CU_THREADS),
         (unsigned)(rows < 65535 ? (rows > 0 ? rows : 1) : 65535));
  if ((int64_t)g.x * g.y > (1 << 22)) g.x = (unsigned)((1 << 22) / g.y) + 1;
  return g;
}

// The same products, 16 bytes of each half a thread (8 16-bit values),
// the activation a template argument: over a flat index of vectors
// (32-bit), so that no thread of a row's last block idles.  On an H200 the
// 2-D kernel above took 44 us for SD's 8192 x 1280 GEGLU (4 values a
// thread, a 1280-wide row in two 256-thread blocks, 3/8 of the second's
// threads idle) where its 63 MB move at the memory's speed takes 19.
template <typename T, int ACT>
__global__ void gated_vec_kernel(const T *__restrict__ x, T *__restrict__ y,
                                 uint32_t row_vecs, uint32_t vecs,
                                 int64_t dim) {
  weft_cu_pdl_wait();
  constexpr int V = WEFT_CU_VEC(T);
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < vecs;
       i += gridDim.x * blockDim.x) {
    const uint32_t r = i / row_vecs, c = (i - r * row_vecs) * V;
    const T *row = x + (int64_t)r * 2 * dim + c;
    float u[V], g[V];
    weft_cu_ld16(row, u);
    weft_cu_ld16(row + dim, g);
#pragma unroll
    for (int j = 0; j < V; j++)
      u[j] *= weft_cu_act1(ACT, g[j]);
    weft_cu_st16(y + (int64_t)r * dim + c, u);
  }
}

template <typename T, int ACT>
static void launch_gated_vec(cudaStream_t s, const T *x, T *y, int64_t rows,
                             int64_t dim) {
  const int64_t row_vecs = dim / WEFT_CU_VEC(T), vecs = rows * row_vecs;
  weft_cu_launch(gated_vec_kernel<T, ACT>,
                 weft_cu_blocks(vecs, WEFT_CU_THREADS), WEFT_CU_THREADS, 0, s,
                 x, y, (uint32_t)row_vecs, (uint32_t)vecs, dim);
}

template <typename T>
static void launch_gated(cudaStream_t s, int act, const T *x, T *y,
                         int64_t rows, int64_t dim) {
  if (dim % WEFT_CU_VEC(T) == 0 && weft_cu_aligned16(x) &&
      weft_cu_aligned16(y) && rows * dim < ((int64_t)1 << 32)) {
    switch (act) {
    case WEFT_ACT_SILU:
      return launch_gated_vec<T, WEFT_ACT_SILU>(s, x, y, rows, dim);
    case WEFT_ACT_GELU_ERF:
      return launch_gated_vec<T, WEFT_ACT_GELU_ERF>(s, x, y, rows, dim);
    case WEFT_ACT_GELU_TANH:
      return launch_gated_vec<T, WEFT_ACT_GELU_TANH>(s, x, y, rows, dim);
    case WEFT_ACT_QUICK_GELU:
      return launch_gated_vec<T, WEFT_ACT_QUICK_GELU>(s, x, y, rows, dim);
    default: return launch_gated_vec<T, WEFT_ACT_NONE>(s, x, y, rows, dim);
    }
  }
  if (dim % 4 == 0 && weft_cu_aligned4<T>(x) && weft_cu_aligned4<T>(y))
    weft_cu_launch(gated_kernel<T, 4>, rows_grid(rows, dim, 4), WEFT_CU_THREADS,
                   0, s, act, x, y, rows, dim);
  else
    weft_cu_launch(gated_kernel<T, 1>, rows_grid(rows, dim, 1), WEFT_CU_THREADS,
                   0, s, act, x, y, rows, dim);
}

extern "C" cudaError_t weft__cu_gated_act(cudaStream_t s, int dt, int act,
                                          const void *x, void *y, int64_t rows,
                                          int64_t dim) {
  WEFT_CU_WITH_TYPE(dt, T,
                    launch_gated<T>(s, act, static_cast<const T *>(x),
                                    static_cast<T *>(y), rows, dim));
  return cudaGetLastError();
}

// ---- broadcasting binary ops -----------------------------------------------

__device__ __forceinline__ float binop(int op, float u, float v) {
  switch (op) {
  case WEFT_BIN_ADD: return u + v;
  case WEFT_BIN_SUB: return u - v;
  case WEFT_BIN_MUL: return u * v;
  default: return u / v;
  }
}

// One output element per iteration; the offsets of a and b come from the
// collapsed shape (last dim fastest).  y may be a or b when that operand
// has the full shape: element i reads its own index before writing it.
template <typename T>
__global__ void binary_kernel(int op, const T *a, const T *b, T *y,
                              weft__cu_bcast bc, int64_t total) {
  weft_cu_pdl_wait();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t rem = i, oa = 0, ob = 0;
    for (int d = bc.nd - 1; d >= 0; d--) {
      int64_t idx = rem % bc.shape[d];
      rem /= bc.shape[d];
      oa += idx * bc.sa[d];
      ob += idx * bc.sb[d];
    }
    weft_cu_st(y + i, binop(op, weft_cu_ld(a + oa), weft_cu_ld(b + ob)));
  }
}

// The common cases without index arithmetic: same shape, or one operand a
// scalar (nd == 1 after collapsing).
template <typename T>
__global__ void binary_flat_kernel(int op, const T *a, int64_t sa, const T *b,
                                   int64_t sb, T *y, int64_t total) {
  weft_cu_pdl_wait();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x)
    weft_cu_st(y + i,
               binop(op, weft_cu_ld(a + i * sa), weft_cu_ld(b + i * sb)));
}

// [rows, cols] (op) [cols] or [rows, 1]-style: nd == 2, one operand
// broadcast along one axis.  Uses 2-D indexing without 64-bit division
// per element.  V = 4: four values per load and store (weft_cu_ld4 / st4),
// for column strides of 0 or 1, cols and row strides multiples of 4 and
// 4-element aligned bases.
template <typename T>
__device__ __forceinline__ float4 load4(const T *p, int64_t step) {
  if (step == 0) {
    const float v = weft_cu_ld(p);
    return make_float4(v, v, v, v);
  }
  return weft_cu_ld4(p);
}

template <typename T, int V>
__global__ void binary_2d_kernel(int op, const T *a, const T *b, T *y,
                                 int64_t rows, int64_t cols, int64_t sa0,
                                 int64_t sa1, int64_t sb0, int64_t sb1) {
  weft_cu_pdl_wait();
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y)
    for (int64_t c = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) * V;
         c < cols; c += (int64_t)gridDim.x * blockDim.x * V) {
      if (V == 4) {
        const float4 u = load4(a + r * sa0 + c * sa1, sa1);
        const float4 v = load4(b + r * sb0 + c * sb1, sb1);
        weft_cu_st4(y + r * cols + c,
                    make_float4(binop(op, u.x, v.x), binop(op, u.y, v.y),
                                binop(op, u.z, v.z), binop(op, u.w, v.w)));
      } else {
        weft_cu_st(y + r * cols + c,
                   binop(op, weft_cu_ld(a + r * sa0 + c * sa1),
                         weft_cu_ld(b + r * sb0 + c * sb1)));
      }
    }
}

template <typename T>
static void launch_binary(cudaStream_t s, int op, const T *a, const T *b, T *y,
                          const weft__cu_bcast *bc, int64_t total) {
  if (bc->nd == 1) {
    weft_cu_launch(binary_flat_kernel<T>,
                   weft_cu_blocks(total, WEFT_CU_THREADS), WEFT_CU_THREADS, 0,
                   s, op, a, bc->sa[0], b, bc->sb[0], y, total);
  } else if (bc->nd == 2) {
    int64_t rows = bc->shape[0], cols = bc->shape[1];
    const bool v4 = cols % 4 == 0 && (bc->sa[1] == 0 || bc->sa[1] == 1) &&
                    (bc->sb[1] == 0 || bc->sb[1] == 1) && bc->sa[0] % 4 == 0 &&
                    bc->sb[0] % 4 == 0 && weft_cu_aligned4<T>(y) &&
                    (bc->sa[1] == 0 || weft_cu_aligned4<T>(a)) &&
                    (bc->sb[1] == 0 || weft_cu_aligned4<T>(b));
    if (v4)
      weft_cu_launch(binary_2d_kernel<T, 4>, rows_grid(rows, cols, 4),
                     WEFT_CU_THREADS, 0, s, op, a, b, y, rows, cols, bc->sa[0],
                     bc->sa[1], bc->sb[0], bc->sb[1]);
    else
      weft_cu_launch(binary_2d_kernel<T, 1>, rows_grid(rows, cols, 1),
                     WEFT_CU_THREADS, 0, s, op, a, b, y, rows, cols, bc->sa[0],
                     bc->sa[1], bc->sb[0], bc->sb[1]);
  } else {
    weft_cu_launch(binary_kernel<T>, weft_cu_blocks(total, WEFT_CU_THREADS),
                   WEFT_CU_THREADS, 0, s, op, a, b, y, *bc, total);
  }
}

extern "C" cudaError_t weft__cu_binary(cudaStream_t s, int dt, int op,
                                       const void *a, const void *b, void *y,
                                       const weft__cu_bcast *bc,
                                       int64_t total) {
  WEFT_CU_WITH_TYPE(dt, T,
                    launch_binary<T>(s, op, static_cast<const T *>(a),
                                     static_cast<const T *>(b),
                                     static_cast<T *>(y), bc, total));
  return cudaGetLastError();
}

// ---- scale-add, bias, k = 0 GEMM -------------------------------------------

template <typename T>
__device__ __forceinline__ float sa1(float alpha, float a, float beta,
                                     const T *b, float bv) {
  return b ? __fadd_rn(__fmul_rn(alpha, a), __fmul_rn(beta, bv)) : alpha * a;
}

// y = alpha a + beta b (b may be NULL); V = 4: weft_cu_ld4 / st4 over
// n / 4 (n a multiple of 4, every pointer 4-element aligned).  y may be a
// or b.
template <typename T, int V>
__global__ void scale_add_kernel(T *y, float alpha, const T *a, float beta,
                                 const T *b, int64_t n) {
  weft_cu_pdl_wait();
  for (int64_t i = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) * V; i < n;
       i += (int64_t)gridDim.x * blockDim.x * V) {
    if (V == 4) {
      const float4 u = weft_cu_ld4(a + i);
      const float4 v = b ? weft_cu_ld4(b + i) : u;
      weft_cu_st4(y + i, make_float4(sa1(alpha, u.x, beta, b, v.x),
                                     sa1(alpha, u.y, beta, b, v.y),
                                     sa1(alpha, u.z, beta, b, v.z),
                                     sa1(alpha, u.w, beta, b, v.w)));
    } else {
      weft_cu_st(y + i, sa1(alpha, weft_cu_ld(a + i), beta, b,
                            b ? weft_cu_ld(b + i) : 0.0f));
    }
  }
}

template <typename T>
static void launch_scale_add(cudaStream_t s, T *y, float alpha, const T *a,
                             float beta, const T *b, int64_t n) {
  if (n % 4 == 0 && weft_cu_aligned4<T>(y) && weft_cu_aligned4<T>(a) &&
      (!b || weft_cu_aligned4<T>(b)))
    weft_cu_launch(scale_add_kernel<T, 4>,
                   weft_cu_blocks(n / 4, WEFT_CU_THREADS), WEFT_CU_THREADS, 0,
                   s, y, alpha, a, beta, b, n);
  else
    weft_cu_launch(scale_add_kernel<T, 1>, weft_cu_blocks(n, WEFT_CU_THREADS),
                   WEFT_CU_THREADS, 0, s, y, alpha, a, beta, b, n);
}

extern "C" cudaError_t weft__cu_scale_add(cudaStream_t s, int dt, void *y,
                                          float alpha, const void *a,
                                          float beta, const void *b,
                                          int64_t n) {
  WEFT_CU_WITH_TYPE(dt, T,
                    launch_scale_add<T>(s, static_cast<T *>(y), alpha,
                                        static_cast<const T *>(a), beta,
                                        static_cast<const T *>(b), n));
  return cudaGetLastError();
}

// Planes of `cols` contiguous values (T; bias fp32): plane p = (i, r)
// starts at i * stride_outer + r * ld.  mode 0: c = beta == 0 ? 0 :
// beta * c; mode 1: c += bias[r]; mode 2 (a convolution's epilogue): c =
// (c + chan[p]) + res[the same place], either NULL for none, in fp32 and
// rounded once.  V = 4: four values an access (weft_cu_ld4 / st4), where
// cols, ld and stride_outer are multiples of 4 and c, res 4-element
// aligned (the epilogue of a 16-bit VAE decode's 512x512 maps ran at a
// third of the memory's speed one value at a time).
__device__ __forceinline__ float plane_op(int mode, float v, float bv,
                                          bool chan, float r, bool res,
                                          float beta) {
  if (mode == 2) {
    if (chan) v = v + bv;
    return res ? v + r : v;
  }
  if (mode == 1) return v + bv;
  return beta == 0.0f ? 0.0f : beta * v;
}

template <typename T, int V>
__global__ void planes_kernel(int mode, T *c, const float *bias, const T *chan,
                              const T *res, int64_t outer, int64_t stride_outer,
                              int64_t inner, int64_t ld, int64_t cols,
                              float beta) {
  weft_cu_pdl_wait();
  const int64_t planes = outer * inner;
  for (int64_t p = blockIdx.y; p < planes; p += gridDim.y) {
    int64_t i = p / inner, r = p - i * inner;
    const int64_t at = i * stride_outer + r * ld;
    T *row = c + at;
    const T *rrow = res ? res + at : nullptr;
    float bv = mode == 1 ? bias[r] : mode == 2 && chan ? weft_cu_ld(chan + p)
                                                       : 0.0f;
    for (int64_t j = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) * V;
         j < cols; j += (int64_t)gridDim.x * blockDim.x * V) {
      if (V == 4) {
        float4 v = weft_cu_ld4(row + j);
        const float4 q =
            rrow ? weft_cu_ld4(rrow + j) : make_float4(0.f, 0.f, 0.f, 0.f);
        v.x = plane_op(mode, v.x, bv, chan, q.x, res, beta);
        v.y = plane_op(mode, v.y, bv, chan, q.y, res, beta);
        v.z = plane_op(mode, v.z, bv, chan, q.z, res, beta);
        v.w = plane_op(mode, v.w, bv, chan, q.w, res, beta);
        weft_cu_st4(row + j, v);
      } else {
        const float q = rrow ? weft_cu_ld(rrow + j) : 0.0f;
        weft_cu_st(row + j, plane_op(mode, weft_cu_ld(row + j), bv, chan, q, res,
                                      beta));
      }
    }
  }
}

template <typename T>
static void launch_planes(cudaStream_t s, int mode, T *c, const float *bias,
                          const T *chan, const T *res, int64_t outer,
                          int64_t stride_outer, int64_t inner, int64_t ld,
                          int64_t cols, float beta) {
  const int64_t planes = outer * inner;
  const bool v4 = cols % 4 == 0 && ld % 4 == 0 && stride_outer % 4 == 0 &&
                  weft_cu_aligned4<T>(c) && (!res || weft_cu_aligned4<T>(res));
  dim3 g(weft_cu_blocks(v4 ? cols / 4 : cols, WEFT_CU_THREADS),
         (unsigned)(planes < 65535 ? planes : 65535));
  // keep the grid bounded; the loops stride over the rest
  if ((int64_t)g.x * g.y > (1 << 22)) g.x = (unsigned)((1 << 22) / g.y) + 1;
  if (v4)
    weft_cu_launch(planes_kernel<T, 4>, g, WEFT_CU_THREADS, 0, s, mode, c, bias,
                   chan, res, outer, stride_outer, inner, ld, cols, beta);
  else
    weft_cu_launch(planes_kernel<T, 1>, g, WEFT_CU_THREADS, 0, s, mode, c, bias,
                   chan, res, outer, stride_outer, inner, ld, cols, beta);
}

extern "C" cudaError_t weft__cu_scale_matrix(cudaStream_t s, int dt, void *c,
                                             int64_t batch, int64_t stride_c,
                                             int64_t m, int64_t n, int64_t ldc,
                                             float beta) {
  WEFT_CU_WITH_TYPE(dt, T,
                    launch_planes<T>(s, 0, static_cast<T *>(c), nullptr,
                                     nullptr, nullptr, batch, stride_c, m, ldc,
                                     n, beta));
  return cudaGetLastError();
}

// y[r, c] += bias[c] over rows x cols (y of T, bias fp32): the sum y + bias
// in fp32, rounded once at the store (for T = float, the 2-D binary add
// this used to be).  Rows on grid.y; V = 4: weft_cu_ld4 / st4, for cols a
// multiple of 4, y 4-element and bias 16-byte aligned.
template <typename T, int V>
__global__ void bias_rows_kernel(T *y, const float *bias, int64_t rows,
                                 int64_t cols) {
  weft_cu_pdl_wait();
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    T *row = y + r * cols;
    for (int64_t c = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) * V;
         c < cols; c += (int64_t)gridDim.x * blockDim.x * V) {
      if (V == 4) {
        const float4 u = weft_cu_ld4(row + c), b = weft_cu_ld4(bias + c);
        weft_cu_st4(row + c,
                    make_float4(u.x + b.x, u.y + b.y, u.z + b.z, u.w + b.w));
      } else {
        weft_cu_st(row + c, weft_cu_ld(row + c) + bias[c]);
      }
    }
  }
}

template <typename T>
static void launch_bias_rows(cudaStream_t s, T *y, const float *bias,
                             int64_t rows, int64_t cols) {
  if (cols % 4 == 0 && weft_cu_aligned4<T>(y) && weft_cu_aligned16(bias))
    weft_cu_launch(bias_rows_kernel<T, 4>, rows_grid(rows, cols, 4),
                   WEFT_CU_THREADS, 0, s, y, bias, rows, cols);
  else
    weft_cu_launch(bias_rows_kernel<T, 1>, rows_grid(rows, cols, 1),
                   WEFT_CU_THREADS, 0, s, y, bias, rows, cols);
}

extern "C" cudaError_t weft__cu_bias_rows(cudaStream_t s, int dt, void *y,
                                          const float *bias, int64_t rows,
                                          int64_t cols) {
  WEFT_CU_WITH_TYPE(
      dt, T, launch_bias_rows<T>(s, static_cast<T *>(y), bias, rows, cols));
  return cudaGetLastError();
}

extern "C" cudaError_t weft__cu_bias_planes(cudaStream_t s, int dt, void *y,
                                            const float *bias, int64_t batch,
                                            int64_t ys, int64_t c_out,
                                            int64_t ld, int64_t cols) {
  WEFT_CU_WITH_TYPE(dt, T,
                    launch_planes<T>(s, 1, static_cast<T *>(y), bias, nullptr,
                                     nullptr, batch, ys, c_out, ld, cols,
                                     0.0f));
  return cudaGetLastError();
}

extern "C" cudaError_t weft__cu_conv_epilogue(cudaStream_t s, int dt, void *y,
                                              const void *chan, const void *res,
                                              int64_t batch, int64_t ys,
                                              int64_t c_out, int64_t plane) {
  WEFT_CU_WITH_TYPE(dt, T,
                    launch_planes<T>(s, 2, static_cast<T *>(y), nullptr,
                                     static_cast<const T *>(chan),
                                     static_cast<const T *>(res), batch, ys,
                                     c_out, plane, plane, 0.0f));
  return cudaGetLastError();
}

// ---- nearest 2x upsampling -------------------------------------------------

// V elements (8 bytes) of a row a thread, written as one 16-byte vector
// to each of their two output rows: where the rows are a multiple of V
// long and x and y aligned for it (the VAE's 256x256 map of 256 channels
// went at 1.7 TB/s one element a thread).  Elsewhere the planes are
// channels-last maps of one channel: layout.cu's kernel, an element a
// thread, copied as stored.
template <typename T, int V>
__global__ void upsample_vec_kernel(const T *__restrict__ x,
                                    T *__restrict__ y, int64_t rows,
                                    int64_t w) {
  weft_cu_pdl_wait();
  static_assert(2 * V * sizeof(T) == 16, "16 bytes out a row");
  const int64_t wv = w / V, n = rows * wv;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / wv, c = i - r * wv; // r = plane * h + row
    const uint2 u = *reinterpret_cast<const uint2 *>(x + r * w + c * V);
    T in[V], out[2 * V];
    memcpy(in, &u, sizeof u);
#pragma unroll
    for (int j = 0; j < V; j++)
      out[2 * j] = out[2 * j + 1] = in[j];
    uint4 o;
    memcpy(&o, out, sizeof o);
    T *d = y + r * 4 * w + 2 * c * V; // output rows 2*row and 2*row + 1
    *reinterpret_cast<uint4 *>(d) = o;
    *reinterpret_cast<uint4 *>(d + 2 * w) = o;
  }
}

extern "C" cudaError_t weft__cu_upsample2x(cudaStream_t s, int dt,
                                           const void *x, void *y,
                                           int64_t planes, int64_t h,
                                           int64_t w) {
  const int v = dt == WEFT_F32 ? 2 : 4;
  if (w % v == 0 && ((uintptr_t)x & 7) == 0 && weft_cu_aligned16(y)) {
    const int64_t n = planes * h * (w / v);
    if (dt == WEFT_F32)
      weft_cu_launch(upsample_vec_kernel<float, 2>,
                     weft_cu_blocks(n, WEFT_CU_THREADS), WEFT_CU_THREADS, 0, s,
                     static_cast<const float *>(x), static_cast<float *>(y),
                     planes * h, w);
    else
      weft_cu_launch(upsample_vec_kernel<uint16_t, 4>,
                     weft_cu_blocks(n, WEFT_CU_THREADS), WEFT_CU_THREADS, 0, s,
                     static_cast<const uint16_t *>(x),
                     static_cast<uint16_t *>(y), planes * h, w);
    return cudaGetLastError();
  }
  return weft__cu_upsample2x_cl(s, dt, x, y, planes, h, w, 1);
}

// ---- timestep embedding ----------------------------------------------------

// kernels/cpu's float32 operation order (layout.c there); exp, sin and cos
// in double, rounded once, where glibc's expf/sinf/cosf round correctly.
// t is fp32 (timesteps keep their fractions); a 16-bit y gets those fp32
// values rounded at the store.
template <typename T>
__global__ void timestep_kernel(const float *t, int64_t n, int64_t dim,
                                int flip, float neg_log, float denom,
                                float scale, T *y) {
  weft_cu_pdl_wait();
  const int64_t half = dim / 2, total = n * half;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / half, k = i - r * half;
    float ex = __fmul_rn(neg_log, (float)k);
    ex = __fdiv_rn(ex, denom);
    float freq = (float)exp((double)ex);
    float arg = __fmul_rn(scale, __fmul_rn(t[r], freq));
    float sv = (float)sin((double)arg), cv = (float)cos((double)arg);
    T *row = y + r * dim;
    weft_cu_st(row + (flip ? half + k : k), sv);
    weft_cu_st(row + (flip ? k : half + k), cv);
  }
  if (dim % 2)
    for (int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; r < n;
         r += (int64_t)gridDim.x * blockDim.x)
      weft_cu_st(y + r * dim + dim - 1, 0.0f);
}

extern "C" cudaError_t weft__cu_timestep(cudaStream_t s, int dt, const float *t,
                                         int64_t n, int64_t dim, int flip,
                                         float neg_log, float denom,
                                         float scale, void *y) {
  int64_t work = n * (dim / 2) > n ? n * (dim / 2) : n;
  WEFT_CU_WITH_TYPE(dt, T,
                    weft_cu_launch(timestep_kernel<T>,
                                   weft_cu_blocks(work, WEFT_CU_THREADS),
                                   WEFT_CU_THREADS, 0, s, t, n, dim, flip,
                                   neg_log, denom, scale, static_cast<T *>(y)));
  return cudaGetLastError();
}

// ---- dtype conversion (bit-exact ports of kernels/cpu/vec_portable.c) ------

__device__ __forceinline__ float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu, bits;
  if (e == 0x1f) {
    bits = sign | 0x7f800000u | (m << 13) | (m ? 0x400000u : 0);
  } else if (e == 0) {
    float v = (float)m * 0x1p-24f; // exact: m < 2^10
    bits = __float_as_uint(v) | sign;
  } else {
    bits = sign | ((e + 112) << 23) | (m << 13);
  }
  return __uint_as_float(bits);
}

__device__ __forceinline__ uint16_t f32_to_f16(float f) {
  uint32_t x = __float_as_uint(f);
  uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) // NaN: quiet, top payload bits kept (F16C)
    return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
  if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
  if (ax >= 0x38800000u) {
    uint32_t r = ax - 0x38000000u;
    r += 0x0fffu + ((r >> 13) & 1u);
    return (uint16_t)(sign | (r >> 13));
  }
  if (ax <= 0x33000000u) return sign;
  uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
  uint32_t shift = 126 - e;
  uint32_t h = m >> shift, rem = m & ((1u << shift) - 1),
           half = 1u << (shift - 1);
  if (rem > half || (rem == half && (h & 1u))) h++;
  return (uint16_t)(sign | h);
}

__device__ __forceinline__ float bf16_to_f32(uint16_t h) {
  return __uint_as_float((uint32_t)h << 16);
}

__device__ __forceinline__ uint16_t f32_to_bf16(float f) {
  uint32_t x = __float_as_uint(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fc0u;
  x += 0x7fffu + ((x >> 16) & 1u);
  return (uint16_t)(x >> 16);
}

__global__ void convert_kernel(int kind, void *dst, const void *src,
                               int64_t n) {
  weft_cu_pdl_wait();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    switch (kind) {
    case 0: ((float *)dst)[i] = f16_to_f32(((const uint16_t *)src)[i]); break;
    case 1: ((uint16_t *)dst)[i] = f32_to_f16(((const float *)src)[i]); break;
    case 2: ((float *)dst)[i] = bf16_to_f32(((const uint16_t *)src)[i]); break;
    case 3: ((uint16_t *)dst)[i] = f32_to_bf16(((const float *)src)[i]); break;
    case 4: // every f16 is exact in f32: one rounding
      ((uint16_t *)dst)[i] =
          f32_to_bf16(f16_to_f32(((const uint16_t *)src)[i]));
      break;
    default:
      ((uint16_t *)dst)[i] =
          f32_to_f16(bf16_to_f32(((const uint16_t *)src)[i]));
      break;
    }
  }
}

extern "C" cudaError_t weft__cu_convert(cudaStream_t s, int kind, void *dst,
                                        const void *src, int64_t n) {
  weft_cu_launch(convert_kernel, weft_cu_blocks(n, WEFT_CU_THREADS),
                 WEFT_CU_THREADS, 0, s, kind, dst, src, n);
  return cudaGetLastError();
}

WEFT_CU_MODULE(pointwise)
