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
  im2col_kernel<float>
      <<<weft_cu_blocks(p.total, WEFT_CU_THREADS), WEFT_CU_THREADS, 0, s>>>(
          p, x, col, WEFT_F32);
  return cudaGetLastError();
}

extern "C" cudaError_t weft__cu_im2col16(cudaStream_t s,
                                         const weft_conv2d_args *a,
                                         int64_t w_out, const void *x, int xdt,
                                         int64_t xs, int64_t n_img, int64_t n0,
                                         int64_t nb, void *col, int dt) {
  im2col_params p;
  fill_params(&p, a, w_out, xs, n_img, n0, nb);
  WEFT_CU_WITH_TYPE(
      xdt, X,
      im2col_kernel<uint16_t, X>
      <<<weft_cu_blocks(p.total, WEFT_CU_THREADS), WEFT_CU_THREADS, 0, s>>>(
          p, (const X *)x, (uint16_t *)col, dt));
  return cudaGetLastError();
}
