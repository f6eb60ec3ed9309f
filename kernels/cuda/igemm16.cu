// igemm16.cu - 2-D convolution in FP16/BF16 precision as one implicit-GEMM
// kernel: y[b] = W x̂[b], W the weight [c_out, K = c_in * kh * kw] (16-bit),
// x̂ the im2col matrix [K, h_out * w_out] of image b, which is never
// written: each tile of it is gathered from the fp32 NCHW input and
// rounded to 16 bits on its way into shared memory.  No scratch, any
// strides, kernel size, stride and (asymmetric) padding; the output is
// fp32 (products of 16-bit values are exact in fp32 and accumulate in
// fp32, as im2col + cuBLASLt does: the two differ by summation order).
//
// Tiles: a block of 8 warps makes 128 output channels x 128 output pixels
// of one image, 32 of K at a time, the warps 2 x 4 over it (64 x 32 each:
// 4 x 4 mma.m16n8k16).  Two shared-memory buffers: while the warps
// multiply one tile, each thread holds the next one's values in registers
// and stores them after, so global loads overlap the products.  A rows are
// read as the weight lies (16 halves a thread, 16-byte loads where the
// rows allow); B is gathered a column per thread (its output pixel fixed
// for the block, rows k = (ci, r, s) stepped without division).
#include "common.cuh"
#include "mma.cuh"

#define IG_BM 128
#define IG_BN 128
#define IG_BK 32
#define IG_THREADS 256
#define IG_LDA (IG_BK + 8) // halves per A row in shared memory
#define IG_LDB (IG_BN + 8) // halves per B row

struct ig_params {
  const float *x;
  const uint16_t *w;
  float *y;
  int64_t xs, ys; // batch strides of x and y, in elements
  int c_in, h_in, w_in, c_out, kh, kw, sh, sw, pt, pl;
  int w_out, n, K; // n = h_out * w_out, K = c_in * kh * kw
  int wvec;        // K % 8 == 0 and w 16-byte aligned: 16-byte A loads
};

template <bool BF>
__global__ void __launch_bounds__(IG_THREADS) ig_kernel(const ig_params p) {
  __shared__ __align__(16) uint16_t sA[2][IG_BM * IG_LDA];
  __shared__ __align__(16) uint16_t sB[2][IG_BK * IG_LDB];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, c2 = 2 * (lane & 3);
  const int wm = (warp >> 2) * 64, wn = (warp & 3) * 32;
  const int m0 = blockIdx.y * IG_BM, p0 = blockIdx.x * IG_BN;
  const float *x = p.x + (int64_t)blockIdx.z * p.xs;
  const int khw = p.kh * p.kw, hw_in = p.h_in * p.w_in;

  // A: this thread's row and its 16 halves of the tile's 32
  const int a_row = tid >> 1, a_col = (tid & 1) * 16;
  const bool a_ok = m0 + a_row < p.c_out;
  const uint16_t *a_src = p.w + (int64_t)(m0 + a_row) * p.K + a_col;
  // B: this thread's column (one output pixel) and rows b_k0 + 2i
  const int b_col = tid & (IG_BN - 1), b_k0 = tid >> 7;
  const int pix = p0 + b_col;
  const bool b_ok = pix < p.n;
  const int oh = b_ok ? pix / p.w_out : 0, ow = b_ok ? pix - oh * p.w_out : 0;
  const int ih0 = oh * p.sh - p.pt, iw0 = ow * p.sw - p.pl;

  uint4 ar[2];     // the next A values (16 halves)
  uint16_t br[16]; // the next B values, rows b_k0 + 2i
  auto load = [&](int k0) {
    if (p.wvec) {
#pragma unroll
      for (int j = 0; j < 2; j++) {
        const int k = k0 + a_col + 8 * j;
        ar[j] = a_ok && k < p.K
                    ? *reinterpret_cast<const uint4 *>(a_src + k0 + 8 * j)
                    : make_uint4(0, 0, 0, 0);
      }
    } else {
      uint16_t *h = reinterpret_cast<uint16_t *>(ar);
#pragma unroll
      for (int j = 0; j < 16; j++)
        h[j] = a_ok && k0 + a_col + j < p.K ? a_src[k0 + j] : 0;
    }
    // (ci, r, s) of row k = k0 + b_k0, then two rows on per value
    int k = k0 + b_k0, ci = k / khw, rs = k - ci * khw;
    int r = rs / p.kw, s = rs - r * p.kw;
#pragma unroll
    for (int i = 0; i < 16; i++) {
      float v = 0.0f;
      const int ih = ih0 + r, iw = iw0 + s;
      if (b_ok && k < p.K && (unsigned)ih < (unsigned)p.h_in &&
          (unsigned)iw < (unsigned)p.w_in)
        v = x[ci * hw_in + ih * p.w_in + iw];
      br[i] = weft_cu_to16<BF>(v);
      k += 2;
      s += 2;
      while (s >= p.kw) {
        s -= p.kw;
        if (++r == p.kh) {
          r = 0;
          ci++;
        }
      }
    }
  };
  auto store = [&](int buf) {
    uint4 *da = reinterpret_cast<uint4 *>(&sA[buf][a_row * IG_LDA + a_col]);
    da[0] = ar[0];
    da[1] = ar[1];
#pragma unroll
    for (int i = 0; i < 16; i++)
      sB[buf][(b_k0 + 2 * i) * IG_LDB + b_col] = br[i];
  };

  float acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++)
      acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.0f;

  const int nk = (p.K + IG_BK - 1) / IG_BK;
  load(0);
  store(0);
  __syncthreads();
  for (int t = 0; t < nk; t++) {
    const int cur = t & 1;
    if (t + 1 < nk) load((t + 1) * IG_BK);
#pragma unroll
    for (int ks = 0; ks < IG_BK; ks += 16) {
      uint32_t a[4][4], b[4][2];
#pragma unroll
      for (int mt = 0; mt < 4; mt++) {
        const uint32_t *ap = reinterpret_cast<const uint32_t *>(
            &sA[cur][(wm + mt * 16 + g) * IG_LDA + ks + c2]);
        a[mt][0] = ap[0];
        a[mt][1] = ap[8 * IG_LDA / 2];
        a[mt][2] = ap[4];
        a[mt][3] = ap[8 * IG_LDA / 2 + 4];
      }
#pragma unroll
      for (int nt = 0; nt < 4; nt++)
        weft_cu_ldsm_x2_trans(
            b[nt][0], b[nt][1],
            &sB[cur][(ks + (lane & 15)) * IG_LDB + wn + nt * 8]);
#pragma unroll
      for (int mt = 0; mt < 4; mt++)
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
          weft_cu_mma16816<BF>(acc[mt][nt], a[mt], b[nt][0], b[nt][1]);
    }
    if (t + 1 < nk) store(cur ^ 1);
    __syncthreads();
  }

  float *y = p.y + (int64_t)blockIdx.z * p.ys;
#pragma unroll
  for (int mt = 0; mt < 4; mt++)
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int m = m0 + wm + mt * 16 + g + 8 * h;
      if (m >= p.c_out) continue;
      float *ym = y + (int64_t)m * p.n;
#pragma unroll
      for (int nt = 0; nt < 4; nt++) {
        const int c = p0 + wn + nt * 8 + c2;
        if (c < p.n) ym[c] = acc[mt][nt][2 * h];
        if (c + 1 < p.n) ym[c + 1] = acc[mt][nt][2 * h + 1];
      }
    }
}

static bool fits(int64_t v) {
  return v >= 0 && v <= INT32_MAX;
}

extern "C" bool weft__cu_igemm16_fits(const weft_conv2d_args *a, int64_t h_out,
                                      int64_t w_out) {
  const int64_t k = a->c_in * a->k_h * a->k_w, n = h_out * w_out;
  // one image's x and y, and the weight, indexed in int (ci * h * w + ...)
  return fits(k) && fits(a->c_in * a->h_in * a->w_in) && fits(a->c_out * n) &&
         fits(a->c_out * k) && fits(a->h_in) && fits(a->w_in) &&
         fits(a->pad_top) && fits(a->pad_left) &&
         (n + IG_BN - 1) / IG_BN <= INT32_MAX &&
         (a->c_out + IG_BM - 1) / IG_BM <= 65535;
}

extern "C" cudaError_t weft__cu_igemm16(cudaStream_t s,
                                        const weft_conv2d_args *a,
                                        const void *w16, int bf16,
                                        int64_t h_out, int64_t w_out,
                                        int64_t xs, int64_t ys) {
  if (!weft__cu_igemm16_fits(a, h_out, w_out)) return cudaErrorInvalidValue;
  ig_params p;
  p.x = a->x;
  p.w = static_cast<const uint16_t *>(w16);
  p.y = a->y;
  p.xs = xs;
  p.ys = ys;
  p.c_in = (int)a->c_in;
  p.h_in = (int)a->h_in;
  p.w_in = (int)a->w_in;
  p.c_out = (int)a->c_out;
  p.kh = (int)a->k_h;
  p.kw = (int)a->k_w;
  p.sh = (int)a->stride_h;
  p.sw = (int)a->stride_w;
  p.pt = (int)a->pad_top;
  p.pl = (int)a->pad_left;
  p.w_out = (int)w_out;
  p.n = (int)(h_out * w_out);
  p.K = (int)(a->c_in * a->k_h * a->k_w);
  p.wvec = p.K % 8 == 0 && ((uintptr_t)w16 & 15) == 0;
  for (int64_t b0 = 0; b0 < a->batch; b0 += 65535) {
    const int64_t nb = a->batch - b0 < 65535 ? a->batch - b0 : 65535;
    ig_params q = p;
    q.x = a->x + b0 * xs;
    q.y = a->y + b0 * ys;
    dim3 grid((unsigned)((p.n + IG_BN - 1) / IG_BN),
              (unsigned)((p.c_out + IG_BM - 1) / IG_BM), (unsigned)nb);
    if (bf16)
      ig_kernel<true><<<grid, IG_THREADS, 0, s>>>(q);
    else
      ig_kernel<false><<<grid, IG_THREADS, 0, s>>>(q);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}
