// layout.cu - moving a convolution between NCHW and NHWC (channels last):
// the row bands of x that conv_cudnn.c's channels-last path hands cuDNN
// (padding written as zeros), its output back into NCHW rows with the
// bias, and a channels-last weight back to [c_out, c_in, kk] for the
// paths that read that layout.  Every value is moved as stored, or
// converted once (fp32 activations to the 16-bit compute type; the output
// widened and its bias added in fp32, then stored in the activations'
// type: the rounding of conv_cudnn.c's other 16-bit path).
#include "common.cuh"

// 32 x 32 tiles through shared memory: the reads go along one layout's
// contiguous axis, the writes along the other's.
#define TILE 32
#define TILE_ROWS 8

// dst[((n * hb + r) * wb + q) * c_in + c] = x[n * xs + c * h * w + (row0 +
// r) * w + q - pl], zero outside the image.  Grid: x over wb in tiles, y
// over c_in in tiles, z over batch * hb (a stride loop).
template <typename TI, typename TO>
__global__ void __launch_bounds__(TILE *TILE_ROWS)
    nhwc_pack_kernel(const TI *__restrict__ x, int64_t xs, int64_t c_in,
                     int64_t h, int64_t w, int64_t row0, int64_t hb, int64_t pl,
                     int64_t wb, TO *__restrict__ dst, int64_t rows_total) {
  __shared__ float tile[TILE][TILE + 1];
  const int64_t q0 = (int64_t)blockIdx.x * TILE,
                c0 = (int64_t)blockIdx.y * TILE;
  const int tx = threadIdx.x, ty = threadIdx.y;
  for (int64_t nr = blockIdx.z; nr < rows_total; nr += gridDim.z) {
    const int64_t n = nr / hb, r = nr % hb, row = row0 + r;
    const bool row_in = row >= 0 && row < h;
    const int64_t col = q0 + tx - pl;
    for (int i = ty; i < TILE; i += TILE_ROWS) {
      const int64_t c = c0 + i;
      float v = 0.0f;
      if (row_in && c < c_in && col >= 0 && col < w)
        v = weft_cu_ld(x + n * xs + (c * h + row) * w + col);
      tile[i][tx] = v;
    }
    __syncthreads();
    TO *out = dst + nr * wb * c_in;
    for (int i = ty; i < TILE; i += TILE_ROWS) {
      const int64_t q = q0 + i, c = c0 + tx;
      if (q < wb && c < c_in) weft_cu_st(out + q * c_in + c, tile[tx][i]);
    }
    __syncthreads();
  }
}

// y[n * ys + o * plane + (row0 + r) * wo + q] = src[((n * rows + r) * wo +
// q) * c_out + o] + bias[o].  Grid: x over c_out in tiles, y over wo in
// tiles, z over batch * rows.
template <typename TS, typename TY>
__global__ void __launch_bounds__(TILE *TILE_ROWS)
    nhwc_unpack_kernel(const TS *__restrict__ src, int64_t rows, int64_t wo,
                       int64_t c_out, const float *__restrict__ bias,
                       TY *__restrict__ y, int64_t ys, int64_t plane,
                       int64_t row0, int64_t rows_total) {
  __shared__ float tile[TILE][TILE + 1];
  const int64_t o0 = (int64_t)blockIdx.x * TILE,
                q0 = (int64_t)blockIdx.y * TILE;
  const int tx = threadIdx.x, ty = threadIdx.y;
  for (int64_t nr = blockIdx.z; nr < rows_total; nr += gridDim.z) {
    const int64_t n = nr / rows, r = nr % rows;
    const TS *in = src + nr * wo * c_out;
    for (int i = ty; i < TILE; i += TILE_ROWS) {
      const int64_t q = q0 + i, o = o0 + tx;
      tile[i][tx] = q < wo && o < c_out ? weft_cu_ld(in + q * c_out + o) : 0.0f;
    }
    __syncthreads();
    for (int i = ty; i < TILE; i += TILE_ROWS) {
      const int64_t o = o0 + i, q = q0 + tx;
      if (o < c_out && q < wo) {
        float v = tile[tx][i];
        if (bias) v += bias[o];
        weft_cu_st(y + n * ys + o * plane + (row0 + r) * wo + q, v);
      }
    }
    __syncthreads();
  }
}

static dim3 tile_grid(int64_t a, int64_t b, int64_t z) {
  return dim3((unsigned)((a + TILE - 1) / TILE),
              (unsigned)((b + TILE - 1) / TILE),
              (unsigned)(z < 65535 ? z : 65535));
}

extern "C" cudaError_t weft__cu_nhwc_pack(cudaStream_t s, const void *x,
                                          int xdt, int64_t xs, int64_t batch,
                                          int64_t c_in, int64_t h, int64_t w,
                                          int64_t row0, int64_t hb, int64_t pl,
                                          int64_t wb, void *dst, int ddt) {
  const int64_t nr = batch * hb;
  if (nr <= 0 || c_in <= 0 || wb <= 0) return cudaSuccess;
  const dim3 grid = tile_grid(wb, c_in, nr), block(TILE, TILE_ROWS);
  if (grid.y > 65535) return cudaErrorInvalidValue;
  WEFT_CU_WITH_TYPE(
      xdt, TI,
      WEFT_CU_WITH_TYPE(ddt, TO,
                        nhwc_pack_kernel<TI, TO><<<grid, block, 0, s>>>(
                            static_cast<const TI *>(x), xs, c_in, h, w, row0,
                            hb, pl, wb, static_cast<TO *>(dst), nr)));
  return cudaGetLastError();
}

extern "C" cudaError_t weft__cu_nhwc_unpack(cudaStream_t s, const void *src,
                                            int sdt, int64_t batch,
                                            int64_t rows, int64_t wo,
                                            int64_t c_out, const float *bias,
                                            void *y, int ydt, int64_t ys,
                                            int64_t plane, int64_t row0) {
  const int64_t nr = batch * rows;
  if (nr <= 0 || c_out <= 0 || wo <= 0) return cudaSuccess;
  const dim3 grid = tile_grid(c_out, wo, nr), block(TILE, TILE_ROWS);
  if (grid.y > 65535) return cudaErrorInvalidValue;
  WEFT_CU_WITH_TYPE(
      sdt, TS,
      WEFT_CU_WITH_TYPE(ydt, TY,
                        nhwc_unpack_kernel<TS, TY><<<grid, block, 0, s>>>(
                            static_cast<const TS *>(src), rows, wo, c_out, bias,
                            static_cast<TY *>(y), ys, plane, row0, nr)));
  return cudaGetLastError();
}

// dst[o][c][r] = w[o][r][c] (to_hwc 0) or dst[o][r][c] = w[o][c][r]
// (to_hwc 1), elements of `es` bytes (2 or 4) moved as they are.
template <typename E>
__global__ void weight_layout_kernel(const E *__restrict__ w,
                                     E *__restrict__ dst, int64_t c_in,
                                     int64_t kk, int to_hwc, int64_t total) {
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
    weight_layout_kernel<uint32_t><<<blocks, WEFT_CU_THREADS, 0, s>>>(
        static_cast<const uint32_t *>(w), static_cast<uint32_t *>(dst), c_in,
        kk, to_hwc, total);
  else
    weight_layout_kernel<uint16_t><<<blocks, WEFT_CU_THREADS, 0, s>>>(
        static_cast<const uint16_t *>(w), static_cast<uint16_t *>(dst), c_in,
        kk, to_hwc, total);
  return cudaGetLastError();
}
