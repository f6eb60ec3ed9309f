// half.cu - the kernels of the fp16/bf16 precision modes: packing fp32 (or
// other 16-bit) operands into dense 16-bit matrices for cuBLASLt and cuDNN,
// the reverse (16-bit weights to fp32 for FP32 mode), widening the 16-bit
// output of the cuDNN convolution (with its bias), and the row softmax of
// the 16-bit attention path (fp32 scores in, 16-bit probabilities out).
// Rounding is round-to-nearest-even, as kernels/cpu's and pointwise.cu's
// conversions, so a weight converted here equals one converted by
// be_convert and marked half.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common.cuh"

// dtype codes of the launchers: weft_dtype values (WEFT_F32, WEFT_F16,
// WEFT_BF16).
__device__ __forceinline__ float from16(uint16_t h, int dt) {
  if (dt == WEFT_F16) return __half2float(__ushort_as_half(h));
  return __uint_as_float((uint32_t)h << 16);
}

__device__ __forceinline__ float ld_elem(const void *p, int64_t i, int dt) {
  if (dt == WEFT_F32) return ((const float *)p)[i];
  return from16(((const uint16_t *)p)[i], dt);
}

__device__ __forceinline__ uint16_t to16(float v, int dt) {
  if (dt == WEFT_F16) return __half_as_ushort(__float2half_rn(v));
  return __bfloat16_as_ushort(__float2bfloat16_rn(v));
}

__device__ __forceinline__ void st_elem(void *p, int64_t i, int dt, float v) {
  if (dt == WEFT_F32)
    ((float *)p)[i] = v;
  else
    ((uint16_t *)p)[i] = to16(v, dt);
}

// General pack: item t of n_outer * n_inner, element (r, c) of its
// rows x cols matrix at src[o * s_outer + i * s_inner + r * ld + c], to
// dst[t][r][c] dense.  A 16-bit to 16-bit pack of the same type is a copy;
// f16 -> bf16 goes through fp32 (exact), one rounding.
__global__ void pack_kernel(const void *__restrict__ src, int sdt,
                            void *__restrict__ dst, int ddt, int64_t n_inner,
                            int64_t s_outer, int64_t s_inner, int64_t rows,
                            int64_t cols, int64_t ld, int64_t total) {
  weft_cu_pdl_wait();
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
       idx < total; idx += (int64_t)gridDim.x * blockDim.x) {
    int64_t c = idx % cols, t = idx / cols;
    int64_t r = t % rows;
    t /= rows;
    int64_t o = t / n_inner, i = t % n_inner;
    int64_t si = o * s_outer + i * s_inner + r * ld + c;
    if (sdt == ddt && sdt != WEFT_F32)
      ((uint16_t *)dst)[idx] = ((const uint16_t *)src)[si];
    else
      st_elem(dst, idx, ddt, ld_elem(src, si, sdt));
  }
}

// Contiguous fp32 -> 16-bit, four elements per thread (src 16-byte and dst
// 8-byte aligned, n a multiple of 4: the launcher checks).
__global__ void f32_to_16_vec4(const float4 *__restrict__ src, int ddt,
                               uint2 *__restrict__ dst, int64_t n4) {
  weft_cu_pdl_wait();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4;
       i += (int64_t)gridDim.x * blockDim.x) {
    float4 v = src[i];
    uint2 o;
    o.x = (uint32_t)to16(v.x, ddt) | ((uint32_t)to16(v.y, ddt) << 16);
    o.y = (uint32_t)to16(v.z, ddt) | ((uint32_t)to16(v.w, ddt) << 16);
    dst[i] = o;
  }
}

extern "C" cudaError_t weft__cu_pack(cudaStream_t s, const void *src, int sdt,
                                     void *dst, int ddt, int64_t n_outer,
                                     int64_t n_inner, int64_t s_outer,
                                     int64_t s_inner, int64_t rows,
                                     int64_t cols, int64_t ld) {
  const int64_t total = n_outer * n_inner * rows * cols;
  if (total <= 0) return cudaSuccess;
  // Dense source: one flat run of total elements.
  const bool flat = ld == cols && (n_inner == 1 || s_inner == rows * cols) &&
                    (n_outer == 1 || s_outer == n_inner * rows * cols);
  if (flat && sdt == WEFT_F32 && ddt != WEFT_F32 && total % 4 == 0 &&
      (uintptr_t)src % 16 == 0 && (uintptr_t)dst % 8 == 0) {
    const int64_t n4 = total / 4;
    weft_cu_launch(f32_to_16_vec4, weft_cu_blocks(n4, WEFT_CU_THREADS),
                   WEFT_CU_THREADS, 0, s, (const float4 *)src, ddt,
                   (uint2 *)dst, n4);
    return cudaGetLastError();
  }
  if (flat) {
    n_outer = n_inner = 1;
    s_outer = s_inner = 0;
    rows = 1;
    cols = ld = total;
  }
  weft_cu_launch(pack_kernel, weft_cu_blocks(total, WEFT_CU_THREADS),
                 WEFT_CU_THREADS, 0, s, src, sdt, dst, ddt, n_inner, s_outer,
                 s_inner, rows, cols, ld, total);
  return cudaGetLastError();
}

// ---- widening a 16-bit convolution output --------------------------------

// Plane p = b * c_out + o of src (dense 16-bit [planes][n]) to
// y + b * ys + o * n, plus bias[o] in fp32 when there is a bias (the add
// conv_cuda.c does for the other paths, so the rounding is the same).
// V = 4: four columns per thread (n and ys multiples of 4, y 16-byte and
// src 8-byte aligned: the launcher checks).  Grid: x over a plane's
// columns, y over the planes.
template <int V>
__global__ void
widen_planes_kernel(const uint16_t *__restrict__ src, int sdt,
                    float *__restrict__ y, const float *__restrict__ bias,
                    int64_t planes, int64_t c_out, int64_t ys, int64_t n) {
  weft_cu_pdl_wait();
  for (int64_t p = blockIdx.y; p < planes; p += gridDim.y) {
    const int64_t b = p / c_out, o = p - b * c_out;
    const uint16_t *sr = src + p * n;
    float *yr = y + b * ys + o * n;
    const bool has_bias = bias != nullptr;
    const float bv = has_bias ? bias[o] : 0.0f;
    for (int64_t j = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) * V;
         j < n; j += (int64_t)gridDim.x * blockDim.x * V) {
      if (V == 4) {
        const uint2 h = *(const uint2 *)(sr + j);
        float4 v = make_float4(from16((uint16_t)(h.x & 0xffffu), sdt),
                               from16((uint16_t)(h.x >> 16), sdt),
                               from16((uint16_t)(h.y & 0xffffu), sdt),
                               from16((uint16_t)(h.y >> 16), sdt));
        if (has_bias) {
          v.x += bv;
          v.y += bv;
          v.z += bv;
          v.w += bv;
        }
        *(float4 *)(yr + j) = v;
      } else {
        const float v = from16(sr[j], sdt);
        yr[j] = has_bias ? v + bv : v;
      }
    }
  }
}

extern "C" cudaError_t weft__cu_widen_planes(cudaStream_t s, const void *src,
                                             int sdt, float *y, int64_t ys,
                                             const float *bias, int64_t batch,
                                             int64_t c_out, int64_t n) {
  const int64_t planes = batch * c_out;
  if (planes <= 0 || n <= 0) return cudaSuccess;
  const bool vec = n % 4 == 0 && ys % 4 == 0 && (uintptr_t)y % 16 == 0 &&
                   (uintptr_t)src % 8 == 0;
  const int v = vec ? 4 : 1;
  dim3 g(weft_cu_blocks((n + v - 1) / v, WEFT_CU_THREADS),
         (unsigned)(planes < 65535 ? planes : 65535));
  // keep the grid bounded; the loops stride over the rest
  if ((int64_t)g.x * g.y > (1 << 22)) g.x = (unsigned)((1 << 22) / g.y) + 1;
  if (vec)
    weft_cu_launch(widen_planes_kernel<4>, g, WEFT_CU_THREADS, 0, s,
                   (const uint16_t *)src, sdt, y, bias, planes, c_out, ys, n);
  else
    weft_cu_launch(widen_planes_kernel<1>, g, WEFT_CU_THREADS, 0, s,
                   (const uint16_t *)src, sdt, y, bias, planes, c_out, ys, n);
  return cudaGetLastError();
}

// ---- softmax of the 16-bit attention path ---------------------------------

#define SM16_THREADS 128

// One block per row of s (rows x lk fp32, row stride lk): p = softmax(s)
// written as 16-bit (row stride lk).  Row r is query q0 + r % nq; with
// causal, keys past it are masked (p = 0).  Key 0 is never masked, so every
// row has a finite maximum.  Scores already carry the scale.
__global__ void __launch_bounds__(SM16_THREADS)
    softmax16_kernel(const float *__restrict__ sc, uint16_t *__restrict__ p,
                     int ddt, int64_t rows, int64_t lk, int causal, int64_t q0,
                     int64_t nq) {
  weft_cu_pdl_wait();
  __shared__ float red[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *sr = sc + r * lk;
    uint16_t *pr = p + r * lk;
    const int64_t kend = causal ? min(lk, q0 + r % nq + 1) : lk;
    float mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < kend; j += blockDim.x)
      mx = fmaxf(mx, sr[j]);
    mx = weft_cu_block_max(mx, red);
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j < kend; j += blockDim.x)
      sum += expf(sr[j] - mx);
    sum = weft_cu_block_sum(sum, red);
    const float inv = 1.0f / sum;
    for (int64_t j = threadIdx.x; j < lk; j += blockDim.x)
      pr[j] = to16(j < kend ? expf(sr[j] - mx) * inv : 0.0f, ddt);
  }
}

extern "C" cudaError_t weft__cu_softmax16(cudaStream_t s, const float *sc,
                                          void *p, int ddt, int64_t rows,
                                          int64_t lk, int causal, int64_t q0,
                                          int64_t nq) {
  const unsigned g = rows < (1 << 20) ? (unsigned)rows : (1u << 20);
  weft_cu_launch(softmax16_kernel, g, SM16_THREADS, 0, s, sc, (uint16_t *)p,
                 ddt, rows, lk, causal, q0, nq);
  return cudaGetLastError();
}

// ---- products of a few rows ------------------------------------------------

// c[r, j] = sum_k a[r, k] w[j, k] (+ bias[j]) for r < M (at most
// WEFT_CU_GEMV_ROWS): a linear over a handful of rows (SD's time
// embeddings, batch 2) reads each weight once, so it runs at the memory's
// speed; a tiled GEMM spent most of its ~10 us on tiles of one row.  One
// warp per output column: each lane takes 8 values (16 bytes) of the row a
// step, the products summed in fp32 and across the warp, the bias added in
// fp32 and the sum rounded once to c's dtype (cuBLASLt's epilogue order).
// A lane issues U steps' loads before it sums any: SD's rows of 1280 are 5
// steps a lane, and one load at a time made a call a chain of 5 memory
// latencies (5.4 us on an H200 whatever the width).  The sums keep their
// order (step by step), so the values do not depend on U.
// a and w are 16-bit of one type, 16-byte aligned rows (k, lda and ldw
// multiples of 8: the caller checks).
// Column j of c (one warp's, lane its lane): the sums and the store.
template <bool BF, int M>
__device__ __forceinline__ void
gemv16_col(const uint4 *__restrict__ a, int64_t lda8,
           const uint4 *__restrict__ wr, int64_t k8, int lane,
           const float *__restrict__ bias, int64_t j, void *c, int cdt,
           int64_t ldc) {
  constexpr int U = M <= 2 ? 8 : 4;
  float acc[M];
#pragma unroll
  for (int r = 0; r < M; r++)
    acc[r] = 0.0f;
  for (int64_t q0 = lane; q0 < k8; q0 += 32 * U) {
    uint4 wv[U], av[M][U];
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int64_t q = q0 + 32 * u;
      if (q < k8) {
        wv[u] = wr[q];
#pragma unroll
        for (int r = 0; r < M; r++)
          av[r][u] = a[r * lda8 + q];
      }
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
      if (q0 + 32 * u >= k8) break;
      const uint32_t wu[4] = {wv[u].x, wv[u].y, wv[u].z, wv[u].w};
#pragma unroll
      for (int r = 0; r < M; r++) {
        const uint32_t au[4] = {av[r][u].x, av[r][u].y, av[r][u].z, av[r][u].w};
#pragma unroll
        for (int e = 0; e < 4; e++) {
          float2 wf, af;
          if (BF) {
            wf = __bfloat1622float2(
                *reinterpret_cast<const __nv_bfloat162 *>(&wu[e]));
            af = __bfloat1622float2(
                *reinterpret_cast<const __nv_bfloat162 *>(&au[e]));
          } else {
            wf = __half22float2(*reinterpret_cast<const __half2 *>(&wu[e]));
            af = __half22float2(*reinterpret_cast<const __half2 *>(&au[e]));
          }
          acc[r] = fmaf(af.x, wf.x, acc[r]);
          acc[r] = fmaf(af.y, wf.y, acc[r]);
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < M; r++) {
    float v = weft_cu_warp_sum(acc[r]);
    if (lane == 0) {
      if (bias) v += bias[j];
      st_elem(c, r * ldc + j, cdt, v);
    }
  }
}

template <bool BF, int M>
__global__ void __launch_bounds__(256)
    gemv16_kernel(const uint4 *__restrict__ a, int64_t lda8,
                  const uint4 *__restrict__ w, int64_t ldw8, int64_t n,
                  int64_t k8, const float *__restrict__ bias, void *c, int cdt,
                  int64_t ldc) {
  weft_cu_pdl_wait();
  const int64_t j =
      blockIdx.x * (int64_t)(blockDim.x >> 5) + (threadIdx.x >> 5);
  if (j >= n) return;
  gemv16_col<BF, M>(a, lda8, w + j * ldw8, k8, threadIdx.x & 31, bias, j, c,
                    cdt, ldc);
}

// Up to WEFT_CU_GEMV_PARTS products of one a in one launch (a UNet's
// time-embedding projections: 22 launches of ~4 us each were one a
// ResNet block): part i takes blocks first[i] .. first[i + 1] - 1, 8
// columns each; its c dense [M, n].
struct gemv_parts {
  const uint4 *w[WEFT_CU_GEMV_PARTS];
  const float *bias[WEFT_CU_GEMV_PARTS];
  void *c[WEFT_CU_GEMV_PARTS];
  int n[WEFT_CU_GEMV_PARTS], first[WEFT_CU_GEMV_PARTS];
  int count;
};

template <bool BF, int M>
__global__ void __launch_bounds__(256)
    gemv16_group_kernel(const uint4 *__restrict__ a, int64_t lda8, int64_t k8,
                        int cdt, const __grid_constant__ gemv_parts g) {
  weft_cu_pdl_wait();
  int i = 0;
  while (i + 1 < g.count && (int)blockIdx.x >= g.first[i + 1])
    i++;
  const int64_t j = (int64_t)(blockIdx.x - g.first[i]) * (blockDim.x >> 5) +
                    (threadIdx.x >> 5);
  if (j >= g.n[i]) return;
  gemv16_col<BF, M>(a, lda8, g.w[i] + j * k8, k8, threadIdx.x & 31, g.bias[i],
                    j, g.c[i], cdt, g.n[i]);
}

template <bool BF>
static void gemv16_m(cudaStream_t s, int m, const uint4 *a, int64_t lda8,
                     const uint4 *w, int64_t ldw8, int64_t n, int64_t k8,
                     const float *bias, void *c, int cdt, int64_t ldc) {
  const unsigned blocks = (unsigned)((n + 7) / 8);
#define GEMV16(M)                                                              \
  weft_cu_launch(gemv16_kernel<BF, M>, blocks, 256, 0, s, a, lda8, w, ldw8, n, \
                 k8, bias, c, cdt, ldc)
  switch (m) {
  case 1: GEMV16(1); break;
  case 2: GEMV16(2); break;
  case 3: GEMV16(3); break;
  default: GEMV16(4); break;
  }
#undef GEMV16
}

extern "C" cudaError_t weft__cu_gemv16(cudaStream_t s, int dt, int64_t m,
                                       int64_t n, int64_t k, const void *a,
                                       int64_t lda, const void *w, int64_t ldw,
                                       const float *bias, void *c, int cdt,
                                       int64_t ldc) {
  if (m < 1 || m > WEFT_CU_GEMV_ROWS || k % 8 || lda % 8 || ldw % 8 ||
      (uintptr_t)a % 16 || (uintptr_t)w % 16 || n > (int64_t)UINT32_MAX * 8)
    return cudaErrorInvalidValue;
  if (dt == WEFT_BF16)
    gemv16_m<true>(s, (int)m, (const uint4 *)a, lda / 8, (const uint4 *)w,
                   ldw / 8, n, k / 8, bias, c, cdt, ldc);
  else
    gemv16_m<false>(s, (int)m, (const uint4 *)a, lda / 8, (const uint4 *)w,
                    ldw / 8, n, k / 8, bias, c, cdt, ldc);
  return cudaGetLastError();
}

template <bool BF>
static void gemv16_group_m(cudaStream_t s, int m, const uint4 *a, int64_t lda8,
                           int64_t k8, int cdt, const gemv_parts &g,
                           unsigned blocks) {
#define GEMV16G(M)                                                             \
  weft_cu_launch(gemv16_group_kernel<BF, M>, blocks, 256, 0, s, a, lda8, k8,   \
                 cdt, g)
  switch (m) {
  case 1: GEMV16G(1); break;
  case 2: GEMV16G(2); break;
  case 3: GEMV16G(3); break;
  default: GEMV16G(4); break;
  }
#undef GEMV16G
}

extern "C" cudaError_t weft__cu_gemv16_group(cudaStream_t s, int dt, int64_t m,
                                             int64_t k, const void *a,
                                             int64_t lda, int n,
                                             const weft__cu_gemv_part *parts,
                                             int cdt) {
  if (m < 1 || m > WEFT_CU_GEMV_ROWS || k % 8 || lda % 8 || (uintptr_t)a % 16 ||
      n < 0)
    return cudaErrorInvalidValue;
  for (int i = 0; i < n; i++)
    if ((uintptr_t)parts[i].w % 16 || parts[i].n < 0 ||
        parts[i].n > (int64_t)INT32_MAX - 7)
      return cudaErrorInvalidValue;
  for (int i0 = 0; i0 < n;) {
    gemv_parts g = {};
    int64_t blocks = 0;
    while (i0 < n && g.count < WEFT_CU_GEMV_PARTS &&
           blocks + (parts[i0].n + 7) / 8 <= INT32_MAX) {
      const weft__cu_gemv_part &p = parts[i0++];
      if (p.n == 0) continue;
      g.w[g.count] = (const uint4 *)p.w, g.bias[g.count] = p.bias;
      g.c[g.count] = p.c, g.n[g.count] = (int)p.n;
      g.first[g.count++] = (int)blocks;
      blocks += (p.n + 7) / 8;
    }
    if (!g.count) continue;
    if (dt == WEFT_BF16)
      gemv16_group_m<true>(s, (int)m, (const uint4 *)a, lda / 8, k / 8, cdt, g,
                           (unsigned)blocks);
    else
      gemv16_group_m<false>(s, (int)m, (const uint4 *)a, lda / 8, k / 8, cdt, g,
                            (unsigned)blocks);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

WEFT_CU_MODULE(half)
