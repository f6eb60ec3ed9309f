// conv_direct.cu - a convolution with few output channels (c_out <= 8: SD's
// conv_out layers, 320 -> 4 in the UNet and 128 -> 3 in the VAE) computed
// directly, without a GEMM.  Such a product is one row of a matrix
// product (M = c_out), which no GEMM tiles well: im2col + cuBLAS took 2.85
// ms for the VAE's 128 -> 3 at 512x512 (262144 pixels, 1152 taps each),
// cuDNN does not take 3 channels, and the work is bound by reading x once.
//
// A block of 256 threads takes 64 output pixels; its four warp pairs
// split the input channels (slice s takes channels s, s + 4, ...), each
// thread keeps c_out fp32 sums for its pixel and slice, and the slices'
// sums are added in slice order in shared memory: the same order for any
// launch, so a run repeats bit for bit.  The weight sits in shared memory
// ([c_out][c_in][kh][kw], read as broadcasts: a warp's lanes share a tap).
// In 16-bit precision x and w are rounded to 16 bits as they are read (the
// products then equal the other 16-bit paths' exact products of rounded
// inputs), the sums are fp32; in FP32 precision nothing is rounded.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common.cuh"

#define CD_PIX 64   // output pixels per block
#define CD_SLICES 4 // input-channel slices per block
// The most shared memory a launch asks for: the weight of 320 -> 4 3x3
// (45 KiB) fits with room; H100/H200 allow 227 KiB per block.
#define WEFT_CD_SMEM_MAX (96 * 1024)

struct cd_params {
  const float *x, *w, *bias;
  float *y;
  int64_t xs, ys; // batch strides
  int64_t pixels; // batch * h_out * w_out
  int cin, hin, win, hout, wout, kh, kw, sh, sw, pt, pl, cout;
};

// v as the kernel's products see it: rounded to bf16/fp16 (R = 2/1) or
// as it is (R = 0).
template <int R> __device__ __forceinline__ float cd_round(float v) {
  if (R == 1) return __half2float(__float2half_rn(v));
  if (R == 2) return __bfloat162float(__float2bfloat16_rn(v));
  return v;
}

template <int CO, int R>
__global__ void __launch_bounds__(CD_PIX *CD_SLICES)
    conv_direct(const cd_params p) {
  extern __shared__ float wsm[]; // the weight, then the slices' sums
  const int taps = p.kh * p.kw, k = p.cin * taps;
  // [CO][k]: rows past c_out zero, so every thread keeps CO sums
  for (int i = threadIdx.x; i < CO * k; i += blockDim.x)
    wsm[i] = i < p.cout * k ? cd_round<R>(p.w[i]) : 0.0f;
  float *red = wsm + ((CO * k + 3) & ~3); // [CD_SLICES][CO][CD_PIX]
  __syncthreads();

  const int t = threadIdx.x % CD_PIX, slice = threadIdx.x / CD_PIX;
  const int64_t pix = blockIdx.x * (int64_t)CD_PIX + t;
  float acc[CO];
#pragma unroll
  for (int o = 0; o < CO; o++)
    acc[o] = 0.0f;
  int64_t b = 0;
  int ox = 0, oy = 0;
  if (pix < p.pixels) {
    const int64_t hw = (int64_t)p.hout * p.wout;
    b = pix / hw;
    const int r = (int)(pix - b * hw);
    oy = r / p.wout;
    ox = r - oy * p.wout;
    const float *xb = p.x + b * p.xs;
    const int y0 = oy * p.sh - p.pt, x0 = ox * p.sw - p.pl;
    for (int c = slice; c < p.cin; c += CD_SLICES) {
      const float *xc = xb + (int64_t)c * p.hin * p.win;
      const float *wc = wsm + c * taps;
      for (int ky = 0; ky < p.kh; ky++) {
        const int iy = y0 + ky;
        if (iy < 0 || iy >= p.hin) continue;
        for (int kx = 0; kx < p.kw; kx++) {
          const int ix = x0 + kx;
          if (ix < 0 || ix >= p.win) continue;
          const float v = cd_round<R>(xc[(int64_t)iy * p.win + ix]);
          const float *wt = wc + ky * p.kw + kx;
#pragma unroll
          for (int o = 0; o < CO; o++)
            acc[o] = fmaf(v, wt[o * k], acc[o]);
        }
      }
    }
  }
#pragma unroll
  for (int o = 0; o < CO; o++)
    red[(slice * CO + o) * CD_PIX + t] = acc[o];
  __syncthreads();
  if (slice != 0 || pix >= p.pixels) return;
  float *yb = p.y + b * p.ys + (int64_t)oy * p.wout + ox;
  const int64_t plane = (int64_t)p.hout * p.wout;
  for (int o = 0; o < p.cout; o++) {
    float s = red[o * CD_PIX + t];
#pragma unroll
    for (int sl = 1; sl < CD_SLICES; sl++)
      s += red[(sl * CO + o) * CD_PIX + t];
    yb[o * plane] = p.bias ? s + p.bias[o] : s;
  }
}

// Shared memory of a launch: the weight (padded to 4 floats) and the sums.
static size_t cd_smem(const weft_conv2d_args *a, int co) {
  const size_t w = (size_t)(co * a->c_in * a->k_h * a->k_w);
  return (((w + 3) & ~(size_t)3) + (size_t)CD_SLICES * co * CD_PIX) *
         sizeof(float);
}

extern "C" bool weft__cu_conv_direct_fits(const weft_conv2d_args *a) {
  return a->c_out >= 1 && a->c_out <= 8 &&
         cd_smem(a, a->c_out <= 4 ? 4 : 8) <= WEFT_CD_SMEM_MAX;
}

template <int CO, int R>
static cudaError_t cd_launch(cudaStream_t s, const cd_params &p, size_t smem) {
  static unsigned asked;
  cudaError_t e =
      weft_cu_smem_optin((const void *)conv_direct<CO, R>, smem, &asked);
  if (e != cudaSuccess) return e;
  const int64_t blocks = (p.pixels + CD_PIX - 1) / CD_PIX;
  if (blocks > INT32_MAX) return cudaErrorInvalidValue;
  conv_direct<CO, R><<<(unsigned)blocks, CD_PIX * CD_SLICES, smem, s>>>(p);
  return cudaGetLastError();
}

template <int R>
static cudaError_t cd_launch_r(cudaStream_t s, const cd_params &p,
                               const weft_conv2d_args *a) {
  if (a->c_out <= 4) return cd_launch<4, R>(s, p, cd_smem(a, 4));
  return cd_launch<8, R>(s, p, cd_smem(a, 8));
}

extern "C" cudaError_t weft__cu_conv_direct(cudaStream_t s,
                                            const weft_conv2d_args *a,
                                            const float *w, int round16,
                                            int64_t h_out, int64_t w_out,
                                            int64_t xs, int64_t ys) {
  if (!weft__cu_conv_direct_fits(a)) return cudaErrorInvalidValue;
  cd_params p;
  p.x = a->x;
  p.w = w;
  p.bias = a->bias;
  p.y = a->y;
  p.xs = xs;
  p.ys = ys;
  p.pixels = a->batch * h_out * w_out;
  p.cin = (int)a->c_in;
  p.hin = (int)a->h_in;
  p.win = (int)a->w_in;
  p.hout = (int)h_out;
  p.wout = (int)w_out;
  p.kh = (int)a->k_h;
  p.kw = (int)a->k_w;
  p.sh = (int)a->stride_h;
  p.sw = (int)a->stride_w;
  p.pt = (int)a->pad_top;
  p.pl = (int)a->pad_left;
  p.cout = (int)a->c_out;
  if (p.pixels == 0) return cudaSuccess;
  switch (round16) {
  case 0: return cd_launch_r<0>(s, p, a);
  case 1: return cd_launch_r<1>(s, p, a);
  default: return cd_launch_r<2>(s, p, a);
  }
}
