// layout.cu - moving a convolution between NCHW and NHWC (channels last):
// the row bands of x that conv_cudnn.c's channels-last path hands cuDNN
// (padding written as zeros), its output back into NCHW rows with the
// bias (and the convolution's epilogue), and a channels-last weight back
// to [c_out, c_in, kk] for the paths that read that layout.  Every value
// is moved as stored, or
// converted once (fp32 activations to the 16-bit compute type; the output
// widened and its bias added in fp32, then stored in the activations'
// type: the rounding of conv_cudnn.c's other 16-bit path).
#include "common.cuh"

#include <type_traits>

// Tiles of 64 channels x 32 pixels through shared memory, the pixels of a
// band flattened (rows of width wb or wo one after another, so that the
// 8- and 16-wide maps fill their tiles too): the NCHW side is read or
// written along the pixels, 32 threads a row of the tile, 8 rows in
// flight a thread; the NHWC side two channels a thread, a warp's 64
// channels of one pixel in one transaction.  The tile holds the NHWC
// side's type, [pixel][channel] with two spare elements a row (33 words
// for 16-bit values, so the NCHW side's 32 pixels of one channel fall in
// 32 banks), and the NHWC side moves its two channels as one word from
// or to it.  Offsets inside a plane are 32-bit, the plane pointer moves by
// adds, the activation and the epilogue's residual are template
// arguments.  tools/gpu/move_bench.cu timed this against the first tiles
// (a float tile [channel][pixel], a run-time activation, 64-bit offsets)
// on an H200, the same bytes out: a 128x171x512 VAE band moved in 24 us
// instead of 48 (36.7 against 53.7 normalized on the way), its output
// back in 33.6 against 53.8; the UNet's 320x64x64 at batch 2 10.2 against
// 14.9 normalized, 7.2 against 10.0 back.  Sizes within a band fit int
// (nhwc_prepare; the launchers check h * w).
#define TC 64 // channels a tile
#define TP 32 // pixels a tile (the NCHW side of a move into the band)
#define TROWS 8

// Two adjacent elements of T, moved as one access.
template <typename T> struct alignas(2 * sizeof(T)) two {
  T a, b;
};

// The activation of a move with a prologue: one of weft_act's, or
// ACT_ANY for the run-time act (every kind but SiLU, which SD's ResNet
// blocks use and which is compiled in); ACT_NO_SS for a plain move.
#define ACT_ANY (-1)
#define ACT_NO_SS (-2)

// Calls f(std::integral_constant<int, ACT>) with a move's compile-time
// activation: ACT_NO_SS without ss, SiLU, or ACT_ANY for any other.
template <typename F> static void with_act(const void *ss, int act, F f) {
  if (!ss)
    f(std::integral_constant<int, ACT_NO_SS>());
  else if (act == WEFT_ACT_SILU)
    f(std::integral_constant<int, WEFT_ACT_SILU>());
  else
    f(std::integral_constant<int, ACT_ANY>());
}

// dst[(n * hb + r) * wb + q][c] = x[n * xs + (c * h + row0 + r) * w + q -
// pl], zero outside the image; with ss (a group norm's per (image,
// channel) scale and shift, norm.cu's weft__cu_gn_stats) act(fma(x,
// scale, shift)) instead, as group norm writes it, the padding still zero.
// Grid: x over the band's hb * wb pixels in tiles, y over c_in in tiles, z
// over the batch (a stride loop).
template <typename TI, typename TO, int ACT>
__global__ void __launch_bounds__(TP *TROWS)
    nhwc_pack_kernel(const TI *__restrict__ x, int64_t xs, int c_in, int h,
                     int w, int row0, int hb, int pl, int wb,
                     TO *__restrict__ dst, int batch,
                     const float2 *__restrict__ ss, int act) {
  weft_cu_pdl_wait();
  __shared__ __align__(16) TO tile[TP][TC + 2];
  const int pix = hb * wb, p0 = blockIdx.x * TP, c0 = blockIdx.y * TC;
  const int tx = threadIdx.x, ty = threadIdx.y, plane = h * w;
  // this thread's pixel on the read side: its source row and column
  const int p = p0 + tx, r = p / wb, row = row0 + r, col = p - r * wb - pl;
  const bool in = p < pix && row >= 0 && row < h && col >= 0 && col < w;
  const int at = in ? row * w + col : 0;
  for (int n = blockIdx.z; n < batch; n += gridDim.z) {
    const TI *xc = x + n * xs + (int64_t)(c0 + ty) * plane;
#pragma unroll
    for (int i = ty; i < TC; i += TROWS, xc += (int64_t)TROWS * plane) {
      const int c = c0 + i;
      float v = in && c < c_in ? weft_cu_ld(xc + at) : 0.0f;
      if (ACT != ACT_NO_SS && in && c < c_in) {
        const float2 f = ss[(int64_t)n * c_in + c];
        v = weft_cu_act1s<TI>(ACT == ACT_ANY ? act : ACT, fmaf(v, f.x, f.y));
      }
      weft_cu_st(&tile[tx][i], v);
    }
    __syncthreads();
    const int c = c0 + 2 * tx; // c_in is even: a pair is whole or out
    if (c < c_in) {
      two<TO> *out =
          reinterpret_cast<two<TO> *>(dst + (int64_t)n * pix * c_in + c);
#pragma unroll
      for (int j = ty; j < TP; j += TROWS) {
        if (p0 + j >= pix) break;
        out[(int64_t)(p0 + j) * (c_in / 2)] =
            *reinterpret_cast<const two<TO> *>(&tile[j][2 * tx]);
      }
    }
    __syncthreads();
  }
}

// y[n * ys + o * plane + row0 * wo + p] = src[(n * rows * wo + p) * c_out
// + o] + bias[o] (+ chan[n * c_out + o]) (+ res at y's place) for the
// band's rows * wo pixels p (contiguous in y's plane).  Tiles of 32 PX
// pixels: PX 2 (two pixels a thread on the NCHW side) where that still
// makes 512 blocks, 1 on smaller maps (move_bench: 33.6 against 44.9 us
// on a VAE band, 5.7 against 6.2 on the UNet's 640x32x32).  Grid: x over
// the pixels in tiles, y over c_out in tiles, z over the batch.
template <typename TS, typename TY, bool RES, int PX>
__global__ void __launch_bounds__(TP *TROWS)
    nhwc_unpack_kernel(const TS *__restrict__ src, int pix, int c_out,
                       const float *__restrict__ bias,
                       const TY *__restrict__ chan, const TY *__restrict__ res,
                       TY *__restrict__ y, int64_t ys, int64_t plane,
                       int64_t off, int batch) {
  weft_cu_pdl_wait();
  constexpr int TPX = TP * PX;
  __shared__ __align__(16) TS tile[TPX][TC + 2];
  const int p0 = blockIdx.x * TPX, c0 = blockIdx.y * TC;
  const int tx = threadIdx.x, ty = threadIdx.y;
  for (int n = blockIdx.z; n < batch; n += gridDim.z) {
    const int c = c0 + 2 * tx; // c_out is even
    if (c < c_out) {
      const two<TS> *in =
          reinterpret_cast<const two<TS> *>(src + (int64_t)n * pix * c_out + c);
#pragma unroll
      for (int j = ty; j < TPX; j += TROWS) {
        if (p0 + j >= pix) break;
        *reinterpret_cast<two<TS> *>(&tile[j][2 * tx]) =
            in[(int64_t)(p0 + j) * (c_out / 2)];
      }
    }
    __syncthreads();
    const TY *rn = RES ? res + n * ys + off : nullptr;
    TY *yn = y + n * ys + off;
#pragma unroll
    for (int i = ty; i < TC; i += TROWS) {
      const int o = c0 + i;
      if (o >= c_out) break;
      const float bo = bias ? bias[o] : 0.0f;
      const float co = chan ? weft_cu_ld(chan + (int64_t)n * c_out + o) : 0.0f;
#pragma unroll
      for (int k = 0; k < PX; k++) {
        const int q = p0 + tx + 32 * k;
        if (q >= pix) break;
        // kernels/cpu's order: + bias, + chan, + res, each rounded in fp32
        float v = weft_cu_ld(&tile[tx + 32 * k][i]) + bo;
        if (chan) v = v + co;
        if (RES) v = v + weft_cu_ld(rn + o * plane + q);
        weft_cu_st(yn + o * plane + q, v);
      }
    }
    __syncthreads();
  }
}

// ---- 16-byte moves: 16-bit maps whose rows are multiples of 8 ------------
// SD's maps (widths 8 to 512, channels multiples of 64 or 8) in the
// 16-bit activations move through tiles of 64 channels x 64 pixels in
// which every global access is 16 bytes: 8 pixels of one channel on the
// NCHW side, 8 channels of one pixel on the NHWC side, where the tiles
// above read 2 bytes of a channel a thread (tools/gpu/move_bench.sh, a
// band of the VAE's 128x512x512: 22.3 us there, 12.5 here, 12.0 for a copy
// of its bytes; normalized 31.3 and 19.0, back 32.2 and 26.6).  The tile is
// [pixel][8 chunks of 8 channels], each pixel's chunks permuted by an XOR
// of its index (both sides' accesses fall in distinct banks).  The values
// and their arithmetic are the tiles' above: the same bits.
#define M16_TILE 64

__device__ __forceinline__ int m16_at(int px, int c) { // element in the tile
  return px * M16_TILE + ((((c >> 3) ^ px ^ (px >> 3)) & 7) << 3) + (c & 7);
}

// The pack's bytes as nhwc_pack_kernel's, for T 16-bit, w and c_in
// multiples of 8, wb >= pl + w: the source rows [lo, hi) of the band in
// tiles of 64 pixels (grid.x's first src_tiles blocks), then the band's
// padding pixels zeroed (the rest, 32 pixels a block).  Grid: y over c_in
// in tiles, z over the batch (a stride loop).
template <typename T, int ACT>
__global__ void __launch_bounds__(256)
    pack16_kernel(const T *__restrict__ x, int64_t xs, int c_in, int h, int w,
                  int row0, int hb, int pl, int wb, T *__restrict__ dst,
                  int batch, const float2 *__restrict__ ss, int act, int lo,
                  int hi, int src_tiles) {
  weft_cu_pdl_wait();
  __shared__ __align__(16) T tile[M16_TILE * M16_TILE];
  const int t = threadIdx.x, c0 = blockIdx.y * M16_TILE;
  const int pix = hb * wb, plane = h * w;
  if ((int)blockIdx.x >= src_tiles) { // padding: 32 pixels of 8 chunks
    const int top = lo - row0, below = row0 + hb - hi; // whole rows
    const int side = wb - w, k = ((int)blockIdx.x - src_tiles) * 32 + t / 8;
    const int whole = (top + below) * wb, pads = whole + (hi - lo) * side;
    const int c = c0 + (t & 7) * 8;
    if (k >= pads || c >= c_in) return;
    int r, q;
    if (k < whole) {
      r = k / wb, q = k - r * wb;
      if (r >= top) r += hi - lo;
    } else {
      const int j = k - whole, rr = j / side, qq = j - rr * side;
      r = top + rr, q = qq < pl ? qq : qq + w;
    }
    for (int n = blockIdx.z; n < batch; n += gridDim.z)
      *reinterpret_cast<uint4 *>(dst + ((int64_t)n * pix + r * wb + q) * c_in +
                                 c) = make_uint4(0, 0, 0, 0);
    return;
  }
  const int src = (hi - lo) * w, p0 = blockIdx.x * M16_TILE;
  for (int n = blockIdx.z; n < batch; n += gridDim.z) {
    // 8 pixels of one channel a thread, 32 channels a pass
    const int seg = t & 7, px = seg * 8;
#pragma unroll
    for (int pass = 0; pass < 2; pass++) {
      const int cr = (t >> 3) + 32 * pass, c = c0 + cr;
      float v[8];
      if (c < c_in && p0 + px < src) {
        weft_cu_ldv<T, 8>(x + n * xs + (int64_t)c * plane + lo * w + p0 + px,
                          v);
        if (ACT != ACT_NO_SS) {
          const float2 f = ss[(int64_t)n * c_in + c];
#pragma unroll
          for (int i = 0; i < 8; i++)
            v[i] = weft_cu_act1s<T>(ACT == ACT_ANY ? act : ACT,
                                    fmaf(v[i], f.x, f.y));
        }
      } else {
#pragma unroll
        for (int i = 0; i < 8; i++)
          v[i] = 0.0f;
      }
#pragma unroll
      for (int i = 0; i < 8; i++)
        weft_cu_st(&tile[m16_at(px + i, cr)], v[i]);
    }
    __syncthreads();
    // 8 channels of one pixel a thread, 32 pixels a pass
#pragma unroll
    for (int pass = 0; pass < 2; pass++) {
      const int p = (t >> 3) + 32 * pass, c = c0 + (t & 7) * 8;
      const int sp = lo * w + p0 + p, row = sp / w, col = sp - row * w;
      if (p0 + p < src && c < c_in)
        *reinterpret_cast<uint4 *>(
            dst + ((int64_t)n * pix + (row - row0) * wb + col + pl) * c_in +
            c) = *reinterpret_cast<const uint4 *>(&tile[m16_at(p, c - c0)]);
    }
    __syncthreads();
  }
}

// The unpack's bytes as nhwc_unpack_kernel's (the same sums in the same
// order), for 16-bit src and y, c_out and y's offsets multiples of 8.
// Grid: x over the band's pixels in tiles of 64, y over c_out in tiles,
// z over the batch.
template <typename T, bool RES>
__global__ void __launch_bounds__(256)
    unpack16_kernel(const T *__restrict__ src, int pix, int c_out,
                    const float *__restrict__ bias, const T *__restrict__ chan,
                    const T *__restrict__ res, T *__restrict__ y, int64_t ys,
                    int64_t plane, int64_t off, int batch) {
  weft_cu_pdl_wait();
  __shared__ __align__(16) T tile[M16_TILE * M16_TILE];
  const int t = threadIdx.x, c0 = blockIdx.y * M16_TILE;
  const int p0 = blockIdx.x * M16_TILE, px = (t & 7) * 8;
  for (int n = blockIdx.z; n < batch; n += gridDim.z) {
    // the residual's 8 pixels of this thread's two channels, read before
    // the tile fills so that both reads are in flight at once
    float r[2][8];
#pragma unroll
    for (int pass = 0; pass < 2; pass++) {
      const int o = c0 + (t >> 3) + 32 * pass;
      if (RES && o < c_out && p0 + px < pix)
        weft_cu_ldv<T, 8>(res + n * ys + o * plane + off + p0 + px, r[pass]);
    }
#pragma unroll
    for (int pass = 0; pass < 2; pass++) {
      const int p = (t >> 3) + 32 * pass, c = c0 + (t & 7) * 8;
      if (p0 + p < pix && c < c_out)
        *reinterpret_cast<uint4 *>(&tile[m16_at(p, c - c0)]) =
            *reinterpret_cast<const uint4 *>(
                src + ((int64_t)n * pix + p0 + p) * c_out + c);
    }
    __syncthreads();
#pragma unroll
    for (int pass = 0; pass < 2; pass++) {
      const int cr = (t >> 3) + 32 * pass, o = c0 + cr;
      if (o < c_out && p0 + px < pix) {
        const float bo = bias ? bias[o] : 0.0f;
        const float co =
            chan ? weft_cu_ld(chan + (int64_t)n * c_out + o) : 0.0f;
        float v[8];
#pragma unroll
        for (int i = 0; i < 8; i++) {
          float u = weft_cu_ld(&tile[m16_at(px + i, cr)]) + bo;
          if (chan) u = u + co;
          if (RES) u = u + r[pass][i];
          v[i] = u;
        }
        weft_cu_stv<T, 8>(y + n * ys + o * plane + off + p0 + px, v);
      }
    }
    __syncthreads();
  }
}

// Whether the 16-byte moves may take a pack or unpack from dt to dt2: both
// the same 16-bit type (and WEFT_CUDA_MOVE16 not 0, which keeps the 2-byte
// tiles, to compare).
static bool m16_types(int dt, int dt2) {
  static int on = -1;
  return dt == dt2 && (dt == WEFT_F16 || dt == WEFT_BF16) &&
         weft__cuda_env_on("WEFT_CUDA_MOVE16", &on);
}

// Calls f(T()) with T the 16-bit storage type of dt (WEFT_F16: __half,
// else __nv_bfloat16).
template <typename F> static void with16(int dt, F f) {
  if (dt == WEFT_F16)
    f(__half());
  else
    f(__nv_bfloat16());
}

template <typename T>
static void launch_pack16(cudaStream_t s, const T *x, int64_t xs, int c_in,
                          int h, int w, int row0, int hb, int pl, int wb,
                          T *dst, int batch, const float2 *ss, int act) {
  const int lo = row0 > 0 ? row0 : 0;
  const int hi = row0 + hb < h ? row0 + hb : h;
  const int rows = hi > lo ? hi - lo : 0;
  const int src_tiles = (rows * w + M16_TILE - 1) / M16_TILE;
  const int pads = (hb - rows) * wb + rows * (wb - w);
  const dim3 grid((unsigned)(src_tiles + (pads + 31) / 32),
                  (unsigned)((c_in + M16_TILE - 1) / M16_TILE),
                  (unsigned)(batch < 65535 ? batch : 65535));
  with_act(ss, act, [&](auto a) {
    weft_cu_launch(pack16_kernel<T, decltype(a)::value>, grid, 256, 0, s, x, xs,
                   c_in, h, w, row0, hb, pl, wb, dst, batch, ss, act,
                   rows ? lo : row0, rows ? hi : row0, src_tiles);
  });
}

static dim3 tile_grid(int64_t pixels, int64_t tp, int64_t channels,
                      int64_t batch) {
  return dim3((unsigned)((pixels + tp - 1) / tp),
              (unsigned)((channels + TC - 1) / TC),
              (unsigned)(batch < 65535 ? batch : 65535));
}

template <typename TI, typename TO>
static void launch_pack(cudaStream_t s, dim3 grid, const TI *x, int64_t xs,
                        int c_in, int h, int w, int row0, int hb, int pl,
                        int wb, TO *dst, int batch, const float2 *ss,
                        int act) {
  with_act(ss, act, [&](auto a) {
    weft_cu_launch(nhwc_pack_kernel<TI, TO, decltype(a)::value>, grid,
                   dim3(TP, TROWS), 0, s, x, xs, c_in, h, w, row0, hb, pl, wb,
                   dst, batch, ss, act);
  });
}

extern "C" cudaError_t weft__cu_nhwc_pack(cudaStream_t s, const void *x,
                                          int xdt, int64_t xs, int64_t batch,
                                          int64_t c_in, int64_t h, int64_t w,
                                          int64_t row0, int64_t hb, int64_t pl,
                                          int64_t wb, void *dst, int ddt,
                                          const void *ss, int act) {
  if (batch <= 0 || hb <= 0 || c_in <= 0 || wb <= 0) return cudaSuccess;
  if (c_in % 2 || hb * wb * c_in > INT32_MAX || h * w > INT32_MAX ||
      batch > INT32_MAX || row0 < -(int64_t)INT32_MAX / 2 ||
      row0 > INT32_MAX / 2 || pl > INT32_MAX / 2)
    return cudaErrorInvalidValue;
  const dim3 grid = tile_grid(hb * wb, TP, c_in, batch);
  if (grid.y > 65535) return cudaErrorInvalidValue;
  if (m16_types(xdt, ddt) && w % 8 == 0 && c_in % 8 == 0 && xs % 8 == 0 &&
      pl >= 0 && wb >= pl + w && weft_cu_aligned16(x) &&
      weft_cu_aligned16(dst)) {
    with16(xdt, [&](auto t) {
      using T = decltype(t);
      launch_pack16<T>(s, static_cast<const T *>(x), xs, (int)c_in, (int)h,
                       (int)w, (int)row0, (int)hb, (int)pl, (int)wb,
                       static_cast<T *>(dst), (int)batch,
                       static_cast<const float2 *>(ss), act);
    });
    return cudaGetLastError();
  }
  WEFT_CU_WITH_TYPE(
      xdt, TI,
      WEFT_CU_WITH_TYPE(ddt, TO,
                        launch_pack<TI, TO>(
                            s, grid, static_cast<const TI *>(x), xs, (int)c_in,
                            (int)h, (int)w, (int)row0, (int)hb, (int)pl,
                            (int)wb, static_cast<TO *>(dst), (int)batch,
                            static_cast<const float2 *>(ss), act)));
  return cudaGetLastError();
}

template <typename TS, typename TY>
static void launch_unpack(cudaStream_t s, const TS *src, int64_t batch,
                          int pix, int c_out, const float *bias, const TY *chan,
                          const TY *res, TY *y, int64_t ys, int64_t plane,
                          int64_t off) {
  const dim3 block(TP, TROWS);
  dim3 grid = tile_grid(pix, 2 * TP, c_out, batch);
  const bool wide = (int64_t)grid.x * grid.y * grid.z >= 512;
  if (!wide) grid = tile_grid(pix, TP, c_out, batch);
#define WEFT_UNPACK(RES, PX)                                                   \
  weft_cu_launch(nhwc_unpack_kernel<TS, TY, RES, PX>, grid, block, 0, s, src,  \
                 pix, c_out, bias, chan, res, y, ys, plane, off, (int)batch)
  if (res)
    wide ? WEFT_UNPACK(true, 2) : WEFT_UNPACK(true, 1);
  else
    wide ? WEFT_UNPACK(false, 2) : WEFT_UNPACK(false, 1);
#undef WEFT_UNPACK
}

extern "C" cudaError_t weft__cu_nhwc_unpack(cudaStream_t s, const void *src,
                                            int sdt, int64_t batch,
                                            int64_t rows, int64_t wo,
                                            int64_t c_out, const float *bias,
                                            const void *chan, const void *res,
                                            void *y, int ydt, int64_t ys,
                                            int64_t plane, int64_t row0) {
  if (batch <= 0 || rows <= 0 || c_out <= 0 || wo <= 0) return cudaSuccess;
  if (c_out % 2 || rows * wo * c_out > INT32_MAX || batch > INT32_MAX)
    return cudaErrorInvalidValue;
  if (tile_grid(rows * wo, TP, c_out, batch).y > 65535)
    return cudaErrorInvalidValue;
  const int64_t off = row0 * wo;
  if (m16_types(sdt, ydt) && c_out % 8 == 0 && wo % 8 == 0 && plane % 8 == 0 &&
      ys % 8 == 0 && weft_cu_aligned16(src) && weft_cu_aligned16(y) &&
      (!res || weft_cu_aligned16(res))) {
    const dim3 grid = tile_grid(rows * wo, M16_TILE, c_out, batch);
    with16(sdt, [&](auto t) {
      using T = decltype(t);
      weft_cu_launch(res ? unpack16_kernel<T, true> : unpack16_kernel<T, false>,
                     grid, 256, 0, s, static_cast<const T *>(src),
                     (int)(rows * wo), (int)c_out, bias,
                     static_cast<const T *>(chan), static_cast<const T *>(res),
                     static_cast<T *>(y), ys, plane, off, (int)batch);
    });
    return cudaGetLastError();
  }
  WEFT_CU_WITH_TYPE(
      sdt, TS,
      WEFT_CU_WITH_TYPE(ydt, TY,
                        launch_unpack<TS, TY>(
                            s, static_cast<const TS *>(src), batch,
                            (int)(rows * wo), (int)c_out, bias,
                            static_cast<const TY *>(chan),
                            static_cast<const TY *>(res), static_cast<TY *>(y),
                            ys, plane, row0 * wo)));
  return cudaGetLastError();
}

// ---- maps kept channels last ----------------------------------------------
// When x or y of a convolution is already channels last (weft_conv2d_args'
// x_nhwc / y_nhwc), its band moves without a transpose: x's rows are
// copied into the padded band (the prologue's group norm applied on the
// way) and the output's rows get the bias and the epilogue where they lie.
// V channels a thread (8: 16 bytes of 16-bit values; 1 where the channels
// or the pointers do not allow vectors), one band row a grid row.

// dst[(n * hb + r) * wb + q][c] = x[n * xs + ((row0 + r) * w + q - pl) * c_in
// + c], zero outside the image; with ss act(fma(x, scale, shift)) as the
// channels-first move does.  Grid: x over a band row's wb * c_in / V items,
// y over the batch's band rows (a stride loop).
template <typename TI, typename TO, int ACT, int V>
__global__ void cl_copy_kernel(const TI *__restrict__ x, int64_t xs, int c_in,
                               int h, int w, int row0, int hb, int pl, int wb,
                               TO *__restrict__ dst, int rows,
                               const float2 *__restrict__ ss, int act) {
  weft_cu_pdl_wait();
  const int cv = c_in / V, items = wb * cv;
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= items) return;
  const int q = i / cv, c = (i - q * cv) * V, col = q - pl;
  for (int nr = blockIdx.y; nr < rows; nr += gridDim.y) {
    const int n = nr / hb, row = row0 + nr - n * hb;
    float v[V];
    const bool in = row >= 0 && row < h && col >= 0 && col < w;
    if (in) {
      weft_cu_ldv<TI, V>(x + n * xs + ((int64_t)row * w + col) * c_in + c, v);
      if constexpr (ACT != ACT_NO_SS) {
        const float2 *f = ss + (int64_t)n * c_in + c;
#pragma unroll
        for (int k = 0; k < V; k++)
          v[k] = weft_cu_act1s<TI>(ACT == ACT_ANY ? act : ACT,
                                   fmaf(v[k], f[k].x, f[k].y));
      }
    } else {
#pragma unroll
      for (int k = 0; k < V; k++)
        v[k] = 0.0f;
    }
    weft_cu_stv<TO, V>(dst + ((int64_t)nr * wb + q) * c_in + c, v);
  }
}

template <typename TI, typename TO, int V>
static void launch_cl_copy(cudaStream_t s, const TI *x, int64_t xs, int c_in,
                           int h, int w, int row0, int hb, int pl, int wb,
                           TO *dst, int rows, const float2 *ss, int act) {
  const int items = wb * (c_in / V);
  const dim3 grid((unsigned)((items + 127) / 128),
                  (unsigned)(rows < 65535 ? rows : 65535));
  with_act(ss, act, [&](auto a) {
    weft_cu_launch(cl_copy_kernel<TI, TO, decltype(a)::value, V>, grid, 128, 0,
                   s, x, xs, c_in, h, w, row0, hb, pl, wb, dst, rows, ss, act);
  });
}

extern "C" cudaError_t weft__cu_cl_copy(cudaStream_t s, const void *x, int xdt,
                                        int64_t xs, int64_t batch, int64_t c_in,
                                        int64_t h, int64_t w, int64_t row0,
                                        int64_t hb, int64_t pl, int64_t wb,
                                        void *dst, int ddt, const void *ss,
                                        int act) {
  if (batch <= 0 || hb <= 0 || c_in <= 0 || wb <= 0) return cudaSuccess;
  if (batch * hb * wb * c_in > INT32_MAX || h * w > INT32_MAX ||
      row0 < -(int64_t)INT32_MAX / 2 || row0 > INT32_MAX / 2 ||
      pl > INT32_MAX / 2)
    return cudaErrorInvalidValue;
  const bool vec = c_in % 8 == 0 && weft_cu_aligned16(x) &&
                   weft_cu_aligned16(dst) && xs % 8 == 0;
  WEFT_CU_WITH_TYPE(
      xdt, TI,
      WEFT_CU_WITH_TYPE(
          ddt, TO,
          (vec ? launch_cl_copy<TI, TO, 8> : launch_cl_copy<TI, TO, 1>)(
              s, static_cast<const TI *>(x), xs, (int)c_in, (int)h, (int)w,
              (int)row0, (int)hb, (int)pl, (int)wb, static_cast<TO *>(dst),
              (int)(batch * hb), static_cast<const float2 *>(ss), act)));
  return cudaGetLastError();
}

// y[n * ys + (off + p) * c_out + o] = src[(n * pix + p) * c_out + o] +
// bias[o] (+ chan[n * c_out + o]) (+ res at y's place), the channels-first
// move's sums in its order.  Grid: x over an image's pix * c_out / V items,
// y over the batch.
template <typename TS, typename TY, bool RES, int V>
__global__ void cl_epilogue_kernel(const TS *__restrict__ src, int pix,
                                   int c_out, const float *__restrict__ bias,
                                   const TY *__restrict__ chan,
                                   const TY *__restrict__ res,
                                   TY *__restrict__ y, int64_t ys, int64_t off,
                                   int batch) {
  weft_cu_pdl_wait();
  const int items = pix * (c_out / V);
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= items) return;
  const int o = i % (c_out / V) * V;
  for (int n = blockIdx.y; n < batch; n += gridDim.y) {
    float v[V], r[V];
    weft_cu_ldv<TS, V>(src + ((int64_t)n * pix) * c_out + (int64_t)i * V, v);
    const int64_t at = n * ys + off * c_out + (int64_t)i * V;
    if (RES) weft_cu_ldv<TY, V>(res + at, r);
#pragma unroll
    for (int k = 0; k < V; k++) {
      float t = v[k] + (bias ? bias[o + k] : 0.0f);
      if (chan) t = t + weft_cu_ld(chan + (int64_t)n * c_out + o + k);
      if (RES) t = t + r[k];
      v[k] = t;
    }
    weft_cu_stv<TY, V>(y + at, v);
  }
}

template <typename TS, typename TY, int V>
static void launch_cl_epilogue(cudaStream_t s, const TS *src, int pix,
                               int c_out, const float *bias, const TY *chan,
                               const TY *res, TY *y, int64_t ys, int64_t off,
                               int batch) {
  const int items = pix * (c_out / V);
  const dim3 grid((unsigned)((items + 255) / 256),
                  (unsigned)(batch < 65535 ? batch : 65535));
  if (res)
    weft_cu_launch(cl_epilogue_kernel<TS, TY, true, V>, grid, 256, 0, s, src,
                   pix, c_out, bias, chan, res, y, ys, off, batch);
  else
    weft_cu_launch(cl_epilogue_kernel<TS, TY, false, V>, grid, 256, 0, s, src,
                   pix, c_out, bias, chan, res, y, ys, off, batch);
}

extern "C" cudaError_t weft__cu_cl_epilogue(cudaStream_t s, const void *src,
                                            int sdt, int64_t batch,
                                            int64_t pix, int64_t c_out,
                                            const float *bias, const void *chan,
                                            const void *res, void *y, int ydt,
                                            int64_t ys, int64_t off) {
  if (batch <= 0 || pix <= 0 || c_out <= 0) return cudaSuccess;
  if (pix * c_out > INT32_MAX || batch > INT32_MAX)
    return cudaErrorInvalidValue;
  const bool vec = c_out % 8 == 0 && weft_cu_aligned16(src) &&
                   weft_cu_aligned16(y) && (!res || weft_cu_aligned16(res)) &&
                   ys % 8 == 0;
  WEFT_CU_WITH_TYPE(
      sdt, TS,
      WEFT_CU_WITH_TYPE(
          ydt, TY,
          (vec ? launch_cl_epilogue<TS, TY, 8> : launch_cl_epilogue<TS, TY, 1>)(
              s, static_cast<const TS *>(src), (int)pix, (int)c_out, bias,
              static_cast<const TY *>(chan), static_cast<const TY *>(res),
              static_cast<TY *>(y), ys, off, (int)batch)));
  return cudaGetLastError();
}

// Nearest 2x upsampling of channels-last maps: each unit U of a pixel (16
// bytes, or one element) copied to its 2x2 output pixels as stored.
template <typename U>
__global__ void upsample_cl_kernel(const U *__restrict__ x, U *__restrict__ y,
                                   int64_t rows, int64_t w, int64_t cu) {
  weft_cu_pdl_wait();
  const int64_t n = rows * w * cu;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t px = i / cu, u = i - px * cu;
    const int64_t r = px / w, c = px - r * w; // r = image * h + row
    const U v = x[i];
    U *d = y + ((2 * r) * 2 * w + 2 * c) * cu + u;
    d[0] = d[cu] = v;
    d[2 * w * cu] = d[2 * w * cu + cu] = v;
  }
}

extern "C" cudaError_t weft__cu_upsample2x_cl(cudaStream_t s, int dt,
                                              const void *x, void *y,
                                              int64_t batch, int64_t h,
                                              int64_t w, int64_t c) {
  const int64_t es = dt == WEFT_F32 ? 4 : 2, bytes = c * es;
  const int64_t n = batch * h * w;
  if (bytes % 16 == 0 && weft_cu_aligned16(x) && weft_cu_aligned16(y)) {
    weft_cu_launch(upsample_cl_kernel<uint4>,
                   weft_cu_blocks(n * (bytes / 16), WEFT_CU_THREADS),
                   WEFT_CU_THREADS, 0, s, static_cast<const uint4 *>(x),
                   static_cast<uint4 *>(y), batch * h, w, bytes / 16);
  } else if (es == 2) {
    weft_cu_launch(upsample_cl_kernel<uint16_t>,
                   weft_cu_blocks(n * c, WEFT_CU_THREADS), WEFT_CU_THREADS, 0,
                   s, static_cast<const uint16_t *>(x),
                   static_cast<uint16_t *>(y), batch * h, w, c);
  } else {
    weft_cu_launch(upsample_cl_kernel<uint32_t>,
                   weft_cu_blocks(n * c, WEFT_CU_THREADS), WEFT_CU_THREADS, 0,
                   s, static_cast<const uint32_t *>(x),
                   static_cast<uint32_t *>(y), batch * h, w, c);
  }
  return cudaGetLastError();
}

// dst[o][c][r] = w[o][r][c] (to_hwc 0) or dst[o][r][c] = w[o][c][r]
// (to_hwc 1), elements of `es` bytes (2 or 4) moved as they are.
template <typename E>
__global__ void weight_layout_kernel(const E *__restrict__ w,
                                     E *__restrict__ dst, int64_t c_in,
                                     int64_t kk, int to_hwc, int64_t total) {
  weft_cu_pdl_wait();
  const int64_t row = c_in * kk;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t o = i / row, j = i % row; // j: the source's position
    int64_t d;
    if (to_hwc) // source [c][r] -> [r][c]
      d = (j % kk) * c_in + j / kk;
    else // source [r][c] -> [c][r]
      d = (j % c_in) * kk + j / c_in;
    dst[o * row + d] = w[i];
  }
}

extern "C" cudaError_t weft__cu_conv_weight_layout(cudaStream_t s,
                                                   const void *w, int dt,
                                                   void *dst, int64_t c_out,
                                                   int64_t c_in, int64_t kk,
                                                   int to_hwc) {
  const int64_t total = c_out * c_in * kk;
  if (total <= 0) return cudaSuccess;
  const unsigned blocks = weft_cu_blocks(total, WEFT_CU_THREADS);
  if (dt == WEFT_F32)
    weft_cu_launch(weight_layout_kernel<uint32_t>, blocks, WEFT_CU_THREADS, 0,
                   s, static_cast<const uint32_t *>(w),
                   static_cast<uint32_t *>(dst), c_in, kk, to_hwc, total);
  else
    weft_cu_launch(weight_layout_kernel<uint16_t>, blocks, WEFT_CU_THREADS, 0,
                   s, static_cast<const uint16_t *>(w),
                   static_cast<uint16_t *>(dst), c_in, kk, to_hwc, total);
  return cudaGetLastError();
}

WEFT_CU_MODULE(layout)
