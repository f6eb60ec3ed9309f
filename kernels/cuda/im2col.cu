// im2col.cu - the column matrix of the im2col convolution path
// (conv_cuda.c): for each image i of a block and each output column j of
// [n0, n0 + nb), col[i][r][j] = x[i][c][iy][ix] with r = (c, ky, kx) and
// zeros in the padding.  One output element per thread, consecutive
// threads on consecutive columns, so the writes coalesce.  The 16-bit
// variant (FP16/BF16 precision) rounds each value to 16 bits as it writes;
// it reads x as stored (fp32 or the 16-bit activations).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common.cuh"

struct im2col_params {
  int c_in, h_in, w_in, k_h, k_w, stride_h, stride_w, pad_top, pad_left;
  int w_out;
  int64_t xs; // elements between images of x
  int64_t k;  // c_in * k_h * k_w
  int64_t n0, nb;
  int64_t total; // n_img * k * nb
};

// Output element types: float, or a 16-bit dtype (WEFT_F16 / WEFT_BF16)
// stored as uint16_t.
__device__ __forceinline__ void put(float *col, int64_t i, int dt, float v) {
  (void)dt;
  col[i] = v;
}

__device__ __forceinline__ void put(uint16_t *col, int64_t i, int dt, float v) {
  col[i] = dt == WEFT_F16 ? __half_as_ushort(__float2half_rn(v))
                          : __bfloat16_as_ushort(__float2bfloat16_rn(v));
}

template <typename T, typename X>
__global__ void im2col_kernel(im2col_params p, const X *__restrict__ x,
                              T *__restrict__ col, int dt) {
  weft_cu_pdl_wait();
  const int kk = p.k_h * p.k_w;
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
       idx < p.total; idx += (int64_t)gridDim.x * blockDim.x) {
    int64_t j = idx % p.nb, t = idx / p.nb;
    int64_t r = t % p.k, img = t / p.k;
    int c = (int)(r / kk), rk = (int)(r % kk);
    int ky = rk / p.k_w, kx = rk % p.k_w;
    int64_t n = p.n0 + j;
    int oy = (int)(n / p.w_out), ox = (int)(n % p.w_out);
    int iy = oy * p.stride_h + ky - p.pad_top;
    int ix = ox * p.stride_w + kx - p.pad_left;
    float v = 0.0f;
    if (iy >= 0 && iy < p.h_in && ix >= 0 && ix < p.w_in)
      v = weft_cu_ld(x + img * p.xs + ((int64_t)c * p.h_in + iy) * p.w_in + ix);
    put(col, idx, dt, v);
  }
}

static void fill_params(im2col_params *pp, const weft_conv2d_args *a,
                        int64_t w_out, int64_t xs, int64_t n_img, int64_t n0,
                        int64_t nb) {
  // conv_cuda.c checked k and h_out * w_out fit an int; so do the sizes
  // (h_in * w_in <= x's image), and strides and pads below the sizes
  // matter only where they fit too.
  im2col_params p;
  p.c_in = (int)a->c_in;
  p.h_in = (int)a->h_in;
  p.w_in = (int)a->w_in;
  p.k_h = (int)a->k_h;
  p.k_w = (int)a->k_w;
  p.stride_h = (int)a->stride_h;
  p.stride_w = (int)a->stride_w;
  p.pad_top = (int)a->pad_top;
  p.pad_left = (int)a->pad_left;
  p.w_out = (int)w_out;
  p.xs = xs;
  p.k = a->c_in * a->k_h * a->k_w;
  p.n0 = n0;
  p.nb = nb;
  p.total = n_img * p.k * nb;
  *pp = p;
}

extern "C" cudaError_t weft__cu_im2col(cudaStream_t s,
                                       const weft_conv2d_args *a, int64_t h_out,
                                       int64_t w_out, const float *x,
                                       int64_t xs, int64_t n_img, int64_t n0,
                                       int64_t nb, float *col) {
  (void)h_out;
  im2col_params p;
  fill_params(&p, a, w_out, xs, n_img, n0, nb);
  weft_cu_launch(im2col_kernel<float, float>,
                 weft_cu_blocks(p.total, WEFT_CU_THREADS), WEFT_CU_THREADS, 0,
                 s, p, x, col, WEFT_F32);
  return cudaGetLastError();
}

extern "C" cudaError_t weft__cu_im2col16(cudaStream_t s,
                                         const weft_conv2d_args *a,
                                         int64_t w_out, const void *x, int xdt,
                                         int64_t xs, int64_t n_img, int64_t n0,
                                         int64_t nb, void *col, int dt) {
  im2col_params p;
  fill_params(&p, a, w_out, xs, n_img, n0, nb);
  WEFT_CU_WITH_TYPE(xdt, X,
                    weft_cu_launch(im2col_kernel<uint16_t, X>,
                                   weft_cu_blocks(p.total, WEFT_CU_THREADS),
                                   WEFT_CU_THREADS, 0, s, p, (const X *)x,
                                   (uint16_t *)col, dt));
  return cudaGetLastError();
}

// ---- the split-K way's rows and sums (conv_cudnn.c) ----
// col[p][(ky * k_w + kx) * c + ci] = band[b][oy * sh + ky][ox * sw + kx][ci]
// for output pixel p = (b * ho + oy) * wo + ox of a padded channels-last
// band [batch][hb][wb][c] of 16-bit values (its padding already zeros):
// 16 bytes a thread, consecutive threads along one tap's channels.
__global__ void conv_rows_kernel(const uint4 *__restrict__ band,
                                 uint4 *__restrict__ col, int c8, int taps,
                                 int k_w, int sh, int sw, int hb, int wb,
                                 int ho, int wo, int64_t total) {
  weft_cu_pdl_wait();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int c = (int)(i % c8);
    const int64_t r = i / c8;
    const int tap = (int)(r % taps);
    const int64_t p = r / taps;
    const int ox = (int)(p % wo);
    const int64_t t = p / wo;
    const int oy = (int)(t % ho);
    const int64_t b = t / ho;
    const int iy = oy * sh + tap / k_w, ix = ox * sw + tap % k_w;
    col[i] = band[((b * hb + iy) * wb + ix) * c8 + c];
  }
}

extern "C" cudaError_t weft__cu_conv_rows(cudaStream_t s, const void *band,
                                          int64_t batch, int64_t hb,
                                          int64_t wb, int64_t c, int64_t k_h,
                                          int64_t k_w, int64_t sh, int64_t sw,
                                          int64_t ho, int64_t wo, void *col) {
  if (c % 8 || !weft_cu_aligned16(band) || !weft_cu_aligned16(col))
    return cudaErrorInvalidValue;
  const int64_t total = batch * ho * wo * k_h * k_w * (c / 8);
  if (total == 0) return cudaSuccess;
  weft_cu_launch(conv_rows_kernel, weft_cu_blocks(total, WEFT_CU_THREADS),
                 WEFT_CU_THREADS, 0, s, (const uint4 *)band, (uint4 *)col,
                 (int)(c / 8), (int)(k_h * k_w), (int)k_w, (int)sh, (int)sw,
                 (int)hb, (int)wb, (int)ho, (int)wo, total);
  return cudaGetLastError();
}

// y[i] = part[0][i] + part[1][i] + ... + part[splits - 1][i], summed in
// that order in fp32 and rounded once to y's type; four values a thread.
template <typename T>
__global__ void splitk_sum_kernel(const float4 *__restrict__ part, int splits,
                                  int64_t n4, T *__restrict__ y) {
  weft_cu_pdl_wait();
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4;
       i += (int64_t)gridDim.x * blockDim.x) {
    float4 v = part[i];
    for (int s = 1; s < splits; s++) {
      const float4 u = part[s * n4 + i];
      v.x += u.x, v.y += u.y, v.z += u.z, v.w += u.w;
    }
    weft_cu_st4(y + 4 * i, v);
  }
}

extern "C" cudaError_t weft__cu_splitk_sum(cudaStream_t s, const float *part,
                                           int splits, int64_t n, void *y,
                                           int dt) {
  if (n % 4 || splits < 1 || !weft_cu_aligned16(part) ||
      ((uintptr_t)y & (dt == WEFT_F32 ? 15 : 7)))
    return cudaErrorInvalidValue;
  const int64_t n4 = n / 4;
  if (n4 == 0) return cudaSuccess;
  WEFT_CU_WITH_TYPE(dt, T,
                    weft_cu_launch(splitk_sum_kernel<T>,
                                   weft_cu_blocks(n4, WEFT_CU_THREADS),
                                   WEFT_CU_THREADS, 0, s, (const float4 *)part,
                                   splits, n4, (T *)y));
  return cudaGetLastError();
}

WEFT_CU_MODULE(im2col)
