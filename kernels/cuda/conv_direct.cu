// conv_direct.cu - a convolution with few output channels (c_out <= 8: SD's
// conv_out layers, 320 -> 4 in the UNet and 128 -> 3 in the VAE) computed
// directly, without a GEMM.  Such a product is one row of a matrix
// product (M = c_out), which no GEMM tiles well: im2col + cuBLAS took 2.85
// ms for the VAE's 128 -> 3 at 512x512 (262144 pixels, 1152 taps each),
// cuDNN does not take 3 channels, and the work is bound by reading x once.
//
// A block of 256 threads takes 256 / S output pixels, S input-channel
// slices each (slice s takes channels s, s + S, ...; S from 1 to 16, more
// where the pixels are few so that the GPU fills: 16 for the UNet's 8192,
// 1 for the VAE's 262144).  Each thread keeps c_out fp32 sums for its pixel
// and slice; the slices' sums are added in slice order in shared memory,
// the same order for any launch of a shape, so a run repeats bit for bit.
// The weight sits in shared memory tap-major ([c_in][kh][kw][4 or 8]: one
// 16-byte broadcast gives a tap's weights for four outputs).  x and y are
// in the activations' storage type (fp32, fp16 or bf16: no widened
// copies); in 16-bit precision fp32 x and w are rounded to 16 bits as they
// are read (the products then equal the other 16-bit paths' exact products
// of rounded inputs), the sums are fp32, y is rounded once as it is stored.
//
// SD's own shapes (3x3, stride 1, c_out <= 4) take conv_direct_rows
// instead: a thread keeps the sums of 8 consecutive output pixels of a row,
// reads each input row's 10 values once (one 16-byte load where the row
// allows) for its 3 x 8 taps, so it issues about one load a 30 products
// where the one-pixel kernel issued one a 4 and was bound by issuing them
// (the VAE's 128 -> 3 at 512x512: 270 us for 0.9 G products).  The slices
// are as above (more of them: the launch keeps 512 blocks), each pixel's
// sums in the same order (channel, row, column; taps outside the map add
// exact zeros), the slices added in slice order.  WEFT_CUDA_CONV_ROWS=0
// keeps the one-pixel kernel (to compare).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common.cuh"

#define CD_THREADS 256
#define CD_MAX_SLICES 16
// The most shared memory a launch asks for: the weight of 320 -> 4 3x3
// (45 KiB) fits with room; H100/H200 allow 227 KiB per block.
#define WEFT_CD_SMEM_MAX (96 * 1024)

struct cd_params {
  const void *x;
  const float *w, *bias;
  void *y;
  int64_t xs, ys; // batch strides
  int64_t pixels; // batch * h_out * w_out
  int cin, hin, win, hout, wout, kh, kw, sh, sw, pt, pl, cout, slices;
};

// v as the kernel's products see it: rounded to bf16/fp16 (R = 2/1) or
// as it is (R = 0).
template <int R> __device__ __forceinline__ float cd_round(float v) {
  if (R == 1) return __half2float(__float2half_rn(v));
  if (R == 2) return __bfloat162float(__float2bfloat16_rn(v));
  return v;
}

// CO sums (4 or 8), R the rounding of fp32 inputs, T the storage of x and
// y, K3 a 3x3 kernel (its tap loops unrolled).
template <int CO, int R, typename T, bool K3>
__global__ void __launch_bounds__(CD_THREADS) conv_direct(const cd_params p) {
  weft_cu_pdl_wait();
  extern __shared__ float4 wsm4[]; // the weight, then the slices' sums
  float *wsm = (float *)wsm4;
  const int kh = K3 ? 3 : p.kh, kw = K3 ? 3 : p.kw;
  const int taps = kh * kw, k = p.cin * taps;
  // [k][CO]: outputs past c_out zero, so every thread keeps CO sums
  for (int j = threadIdx.x; j < CO * k; j += CD_THREADS) {
    const int i = j / CO, o = j - i * CO;
    wsm[j] = o < p.cout ? cd_round<R>(p.w[(int64_t)o * k + i]) : 0.0f;
  }
  float *red = wsm + CO * k; // [S][CO][pixels of the block]
  __syncthreads();

  const int S = p.slices, pb = CD_THREADS / S;
  const int t = threadIdx.x % pb, slice = threadIdx.x / pb;
  const int64_t pix = blockIdx.x * (int64_t)pb + t;
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
    const T *xb = (const T *)p.x + b * p.xs;
    const int y0 = oy * p.sh - p.pt, x0 = ox * p.sw - p.pl;
    for (int c = slice; c < p.cin; c += S) {
      const T *xc = xb + (int64_t)c * p.hin * p.win;
      const float4 *wc = wsm4 + c * taps * (CO / 4);
#pragma unroll
      for (int ky = 0; ky < kh; ky++) {
        const int iy = y0 + ky;
        if (iy < 0 || iy >= p.hin) continue;
#pragma unroll
        for (int kx = 0; kx < kw; kx++) {
          const int ix = x0 + kx;
          if (ix < 0 || ix >= p.win) continue;
          float v = weft_cu_ld(xc + (int64_t)iy * p.win + ix);
          if (sizeof(T) == 4) v = cd_round<R>(v);
          const float4 *wt = wc + (ky * kw + kx) * (CO / 4);
#pragma unroll
          for (int q = 0; q < CO / 4; q++) {
            const float4 w4 = wt[q];
            acc[4 * q] = fmaf(v, w4.x, acc[4 * q]);
            acc[4 * q + 1] = fmaf(v, w4.y, acc[4 * q + 1]);
            acc[4 * q + 2] = fmaf(v, w4.z, acc[4 * q + 2]);
            acc[4 * q + 3] = fmaf(v, w4.w, acc[4 * q + 3]);
          }
        }
      }
    }
  }
#pragma unroll
  for (int o = 0; o < CO; o++)
    red[(slice * CO + o) * pb + t] = acc[o];
  __syncthreads();
  if (slice != 0 || pix >= p.pixels) return;
  T *yb = (T *)p.y + b * p.ys + (int64_t)oy * p.wout + ox;
  const int64_t plane = (int64_t)p.hout * p.wout;
  for (int o = 0; o < p.cout; o++) {
    float s = red[o * pb + t];
    for (int sl = 1; sl < S; sl++)
      s += red[(sl * CO + o) * pb + t];
    weft_cu_st(yb + o * plane, p.bias ? s + p.bias[o] : s);
  }
}

// Input-channel slices per thread of `items` (pixels, or rows of 8): the
// fewest (from 1, doubling) that give the launch `blocks` blocks, at most
// `most` and at most c_in.
static int cd_slices(int64_t items, int cin, int most, int64_t blocks) {
  int sl = 1;
  while (sl < most && 2 * sl <= cin && items * sl < blocks * CD_THREADS)
    sl *= 2;
  return sl;
}

// ---- rows of 8 pixels: 3x3, stride 1, c_out <= 4 ------------------------
#define CDR_PX 8
#define CDR_MAX_SLICES 32
// Blocks an SM for 3 output channels (the VAE's 512 blocks, in one wave:
// at most 64 registers a thread, where 76 gave 3 blocks an SM and a second
// wave a third full).  4 channels (the UNet's 128 blocks) are not capped.
#define CDR_BLOCKS_SM 4

// VEC: each input row is read as 8 aligned values and two neighbours (pad
// 1 on the left, w_in == w_out, a multiple of 8, x 16-byte aligned rows).
template <int CO, int R, typename T, bool VEC>
__global__ void __launch_bounds__(CD_THREADS, CO == 3 ? CDR_BLOCKS_SM : 1)
    conv_direct_rows(const cd_params p) {
  weft_cu_pdl_wait();
  extern __shared__ float4 wsm4[]; // the weight, later the slices' sums
  float *wsm = (float *)wsm4;
  const int k = p.cin * 9;
  for (int j = threadIdx.x; j < 4 * k; j += CD_THREADS) {
    const int i = j >> 2, o = j & 3;
    wsm[j] = o < p.cout ? cd_round<R>(p.w[(int64_t)o * k + i]) : 0.0f;
  }
  __syncthreads();

  const int S = p.slices, pb = CD_THREADS / S;
  const int t = threadIdx.x % pb, slice = threadIdx.x / pb;
  const int segs = (p.wout + CDR_PX - 1) / CDR_PX;
  const int64_t nseg = p.pixels / p.wout * segs;
  const int64_t g = blockIdx.x * (int64_t)pb + t;
  float acc[CDR_PX][CO]; // CO: c_out 3, or 4 for 1 to 4
#pragma unroll
  for (int i = 0; i < CDR_PX; i++)
#pragma unroll
    for (int o = 0; o < CO; o++)
      acc[i][o] = 0.0f;
  if (g < nseg) {
    const int64_t row = g / segs; // b * h_out + oy
    const int64_t b = row / p.hout;
    const int oy = (int)(row - b * p.hout);
    const int x0 = (int)(g - row * segs) * CDR_PX - p.pl;
    const T *xb = (const T *)p.x + b * p.xs;
    for (int c = slice; c < p.cin; c += S) {
      const T *xc = xb + (int64_t)c * p.hin * p.win;
      const float4 *wc = wsm4 + c * 9;
#pragma unroll
      for (int ky = 0; ky < 3; ky++) {
        const int iy = oy - p.pt + ky;
        if (iy < 0 || iy >= p.hin) continue;
        const T *xr = xc + (int64_t)iy * p.win;
        float v[CDR_PX + 2];
        if (VEC) {
          weft_cu_ldv<T, 8>(xr + x0 + 1, v + 1);
          v[0] = x0 >= 0 ? weft_cu_ld(xr + x0) : 0.0f;
          v[9] = x0 + 9 < p.win ? weft_cu_ld(xr + x0 + 9) : 0.0f;
        } else {
#pragma unroll
          for (int j = 0; j < CDR_PX + 2; j++) {
            const int ix = x0 + j;
            v[j] = ix >= 0 && ix < p.win ? weft_cu_ld(xr + ix) : 0.0f;
          }
        }
        if (sizeof(T) == 4) {
#pragma unroll
          for (int j = 0; j < CDR_PX + 2; j++)
            v[j] = cd_round<R>(v[j]);
        }
#pragma unroll
        for (int kx = 0; kx < 3; kx++) {
          const float4 w4 = wc[ky * 3 + kx];
#pragma unroll
          for (int i = 0; i < CDR_PX; i++) {
            acc[i][0] = fmaf(v[i + kx], w4.x, acc[i][0]);
            acc[i][1] = fmaf(v[i + kx], w4.y, acc[i][1]);
            acc[i][2] = fmaf(v[i + kx], w4.z, acc[i][2]);
            if (CO == 4) acc[i][CO - 1] = fmaf(v[i + kx], w4.w, acc[i][CO - 1]);
          }
        }
      }
    }
  }
  __syncthreads(); // every thread is done with the weight: [S][4][pb * 8]
  const int bp = pb * CDR_PX;
#pragma unroll
  for (int i = 0; i < CDR_PX; i++)
#pragma unroll
    for (int o = 0; o < CO; o++)
      wsm[(slice * 4 + o) * bp + t * CDR_PX + i] = acc[i][o];
  __syncthreads();
  const int64_t plane = (int64_t)p.hout * p.wout;
  for (int j = threadIdx.x; j < p.cout * bp; j += CD_THREADS) {
    const int o = j / bp, q = j - o * bp, tt = q / CDR_PX;
    const int64_t gg = blockIdx.x * (int64_t)pb + tt;
    if (gg >= nseg) continue;
    const int64_t row = gg / segs;
    const int ox = (int)(gg - row * segs) * CDR_PX + (q - tt * CDR_PX);
    if (ox >= p.wout) continue;
    float s = wsm[o * bp + q];
    for (int sl = 1; sl < S; sl++)
      s += wsm[(sl * 4 + o) * bp + q];
    const int64_t b = row / p.hout, oy = row - b * p.hout;
    weft_cu_st((T *)p.y + b * p.ys + o * plane + oy * p.wout + ox,
               p.bias ? s + p.bias[o] : s);
  }
}

static bool cdr_wanted(void) {
  static int on = -1;
  return weft__cuda_env_on("WEFT_CUDA_CONV_ROWS", &on);
}

// Shared memory of a rows launch: the weight, or the slices' sums after it.
static size_t cdr_smem(const weft_conv2d_args *a) {
  const size_t w = (size_t)(4 * a->c_in * 9), red = 4 * CD_THREADS * CDR_PX;
  return (w > red ? w : red) * sizeof(float);
}

static bool cdr_fits(const weft_conv2d_args *a) {
  return a->c_out >= 1 && a->c_out <= 4 && a->k_h == 3 && a->k_w == 3 &&
         a->stride_h == 1 && a->stride_w == 1 &&
         cdr_smem(a) <= WEFT_CD_SMEM_MAX && cdr_wanted();
}

template <int R, typename T>
static cudaError_t cdr_launch(cudaStream_t s, cd_params p,
                              const weft_conv2d_args *a) {
  const int64_t segs = p.pixels / p.wout * ((p.wout + CDR_PX - 1) / CDR_PX);
  p.slices = cd_slices(segs, p.cin, CDR_MAX_SLICES, 512);
  const int pb = CD_THREADS / p.slices;
  const int64_t blocks = (segs + pb - 1) / pb;
  if (blocks > INT32_MAX) return cudaErrorInvalidValue;
  const size_t smem = cdr_smem(a);
  const bool vec = p.pl == 1 && p.win == p.wout && p.win % 8 == 0 &&
                   p.xs % 8 == 0 && weft_cu_aligned16(p.x);
  static unsigned asked[4];
  void (*k)(cd_params) = p.cout == 3 ? (vec ? conv_direct_rows<3, R, T, true>
                                            : conv_direct_rows<3, R, T, false>)
                                     : (vec ? conv_direct_rows<4, R, T, true>
                                            : conv_direct_rows<4, R, T, false>);
  cudaError_t e = weft_cu_smem_optin((const void *)k, smem,
                                     &asked[2 * (p.cout == 3) + vec]);
  if (e != cudaSuccess) return e;
  weft_cu_launch(k, (unsigned)blocks, CD_THREADS, smem, s, p);
  return cudaGetLastError();
}

// Shared memory of a launch: the weight and the sums.
static size_t cd_smem(const weft_conv2d_args *a, int co) {
  const size_t w = (size_t)(co * a->c_in * a->k_h * a->k_w);
  return (w + (size_t)co * CD_THREADS) * sizeof(float);
}

extern "C" bool weft__cu_conv_direct_fits(const weft_conv2d_args *a) {
  return a->c_out >= 1 && a->c_out <= 8 &&
         (cd_smem(a, a->c_out <= 4 ? 4 : 8) <= WEFT_CD_SMEM_MAX || cdr_fits(a));
}

template <int CO, int R, typename T, bool K3>
static cudaError_t cd_launch(cudaStream_t s, const cd_params &p, size_t smem) {
  static unsigned asked;
  cudaError_t e =
      weft_cu_smem_optin((const void *)conv_direct<CO, R, T, K3>, smem, &asked);
  if (e != cudaSuccess) return e;
  const int pb = CD_THREADS / p.slices;
  const int64_t blocks = (p.pixels + pb - 1) / pb;
  if (blocks > INT32_MAX) return cudaErrorInvalidValue;
  weft_cu_launch(conv_direct<CO, R, T, K3>, (unsigned)blocks, CD_THREADS, smem,
                 s, p);
  return cudaGetLastError();
}

template <int R, typename T>
static cudaError_t cd_launch_r(cudaStream_t s, const cd_params &p,
                               const weft_conv2d_args *a) {
  if (cdr_fits(a)) return cdr_launch<R, T>(s, p, a);
  const bool k3 = p.kh == 3 && p.kw == 3;
  if (a->c_out <= 4)
    return k3 ? cd_launch<4, R, T, true>(s, p, cd_smem(a, 4))
              : cd_launch<4, R, T, false>(s, p, cd_smem(a, 4));
  return k3 ? cd_launch<8, R, T, true>(s, p, cd_smem(a, 8))
            : cd_launch<8, R, T, false>(s, p, cd_smem(a, 8));
}

extern "C" cudaError_t
weft__cu_conv_direct(cudaStream_t s, const weft_conv2d_args *a, const float *w,
                     int round16, int act, int64_t h_out, int64_t w_out,
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
  p.slices = cd_slices(p.pixels, p.cin, CD_MAX_SLICES, 1024);
  if (p.pixels == 0) return cudaSuccess;
  /* 16-bit activations come with the precision of their type */
  if (act == WEFT_F16) return cd_launch_r<1, __half>(s, p, a);
  if (act == WEFT_BF16) return cd_launch_r<2, __nv_bfloat16>(s, p, a);
  switch (round16) {
  case 0: return cd_launch_r<0, float>(s, p, a);
  case 1: return cd_launch_r<1, float>(s, p, a);
  default: return cd_launch_r<2, float>(s, p, a);
  }
}

WEFT_CU_MODULE(conv_direct)
