// move_bench.cu - the channels-last moves of kernels/cuda/layout.cu (x
// into a padded NHWC band, with and without a group norm + SiLU applied on
// the way; the output back into NCHW rows with bias and residual) timed
// alone at SD1.5's shapes, next to the first version of those kernels and
// a plain device copy of the same bytes (the memory's speed).  layout.cu
// is compiled into this program, so the production kernels are the ones
// measured; their output is compared with the first kernels', byte for
// byte.  Prints one line per shape and kernel: microseconds a call
// (median of 7 runs of 20 calls), GB/s of the bytes read and written, and
// the count of output bytes that differ from the first kernels'.
//
//   move_bench          (tools/gpu/move_bench.sh builds and runs it)
#include "kernels/cuda/layout.cu"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "tools/gpu/ck.cuh"

// ---- the first tiles (the reference) ---------------------------------------
// layout.cu's kernels as they were until the sixth session (f3b75ac): a
// float tile [channel][pixel + 1], a run-time activation, 64-bit offsets.
// The production kernels must give their bytes.

// dst[(n * hb + r) * wb + q][c] = x[n * xs + (c * h + row0 + r) * w + q -
// pl], zero outside the image; with ss (a group norm's per (image,
// channel) scale and shift, norm.cu's weft__cu_gn_stats) act(fma(x,
// scale, shift)) instead, as group norm writes it, the padding still zero.
// Grid: x over the band's hb * wb pixels in tiles, y over c_in in tiles, z
// over the batch (a stride loop).
template <typename TI, typename TO>
__global__ void __launch_bounds__(TP *TROWS)
    first_pack_kernel(const TI *__restrict__ x, int64_t xs, int c_in, int h,
                     int w, int row0, int hb, int pl, int wb,
                     TO *__restrict__ dst, int batch,
                     const float2 *__restrict__ ss, int act) {
  __shared__ float tile[TC][TP + 1];
  const int pix = hb * wb, p0 = blockIdx.x * TP, c0 = blockIdx.y * TC;
  const int tx = threadIdx.x, ty = threadIdx.y;
  // this thread's pixel on the read side: its source row and column
  const int p = p0 + tx, r = p / wb, row = row0 + r, col = p - r * wb - pl;
  const bool in = p < pix && row >= 0 && row < h && col >= 0 && col < w;
  const int64_t at = in ? (int64_t)row * w + col : 0;
  for (int n = blockIdx.z; n < batch; n += gridDim.z) {
    const TI *xn = x + n * xs + at;
#pragma unroll
    for (int i = ty; i < TC; i += TROWS) {
      const int c = c0 + i;
      float v = in && c < c_in ? weft_cu_ld(xn + (int64_t)c * h * w) : 0.0f;
      if (ss && in && c < c_in) {
        const float2 f = ss[(int64_t)n * c_in + c];
        v = weft_cu_act1(act, fmaf(v, f.x, f.y));
      }
      tile[i][tx] = v;
    }
    __syncthreads();
    const int c = c0 + 2 * tx; // c_in is even: a pair is whole or out
    if (c < c_in) {
      two<TO> *out = reinterpret_cast<two<TO> *>(dst + (int64_t)n * pix * c_in + c);
#pragma unroll
      for (int j = ty; j < TP; j += TROWS) {
        if (p0 + j >= pix) break;
        two<TO> v;
        weft_cu_st(&v.a, tile[2 * tx][j]);
        weft_cu_st(&v.b, tile[2 * tx + 1][j]);
        out[(int64_t)(p0 + j) * (c_in / 2)] = v;
      }
    }
    __syncthreads();
  }
}

// y[n * ys + o * plane + row0 * wo + p] = src[(n * rows * wo + p) * c_out
// + o] + bias[o] (+ chan[n * c_out + o]) (+ res at y's place) for the
// band's rows * wo pixels p (contiguous in y's plane).  Grid: x over the
// pixels in tiles, y over c_out in tiles, z over the batch.
template <typename TS, typename TY>
__global__ void __launch_bounds__(TP *TROWS)
    first_unpack_kernel(const TS *__restrict__ src, int pix, int c_out,
                       const float *__restrict__ bias,
                       const TY *__restrict__ chan, const TY *__restrict__ res,
                       TY *__restrict__ y, int64_t ys, int64_t plane,
                       int64_t off, int batch) {
  __shared__ float tile[TC][TP + 1];
  const int p0 = blockIdx.x * TP, c0 = blockIdx.y * TC;
  const int tx = threadIdx.x, ty = threadIdx.y;
  for (int n = blockIdx.z; n < batch; n += gridDim.z) {
    const int c = c0 + 2 * tx; // c_out is even
    if (c < c_out) {
      const two<TS> *in =
          reinterpret_cast<const two<TS> *>(src + (int64_t)n * pix * c_out + c);
#pragma unroll
      for (int j = ty; j < TP; j += TROWS) {
        if (p0 + j >= pix) break;
        const two<TS> v = in[(int64_t)(p0 + j) * (c_out / 2)];
        tile[2 * tx][j] = weft_cu_ld(&v.a);
        tile[2 * tx + 1][j] = weft_cu_ld(&v.b);
      }
    }
    __syncthreads();
    const int p = p0 + tx;
    if (p < pix) {
      const int64_t at = n * ys + off + p;
#pragma unroll
      for (int i = ty; i < TC; i += TROWS) {
        const int o = c0 + i;
        if (o < c_out) {
          float v = tile[i][tx] + (bias ? bias[o] : 0.0f);
          if (chan) v = v + weft_cu_ld(chan + (int64_t)n * c_out + o);
          if (res) v = v + weft_cu_ld(res + at + o * plane);
          weft_cu_st(y + at + o * plane, v);
        }
      }
    }
    __syncthreads();
  }
}

// ---- the bench ------------------------------------------------------------

__global__ void fill(__half *x, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    uint32_t h = (uint32_t)i * 2654435761u ^ seed;
    h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
    x[i] = __float2half_rn((float)(h & 0xffff) / 16384.0f - 2.0f);
  }
}

static float time_us(cudaStream_t s, void (*fn)(void *), void *u) {
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  for (int i = 0; i < 3; i++)
    fn(u);
  std::vector<float> t;
  for (int rep = 0; rep < 7; rep++) {
    CK(cudaEventRecord(e0, s));
    for (int i = 0; i < 20; i++)
      fn(u);
    CK(cudaEventRecord(e1, s));
    CK(cudaEventSynchronize(e1));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    t.push_back(ms * 1000.0f / 20);
  }
  CK(cudaGetLastError());
  std::sort(t.begin(), t.end());
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return t[3];
}

struct pack_case {
  const char *name;
  int n, c, h, w, row0, hb, pl, wb;
};
struct run {
  const pack_case *pc;
  __half *x, *dst;
  float2 *ss;
  float *bias;
  __half *res;
  int kind; // 0 the first kernels, 1 production, 2 copy
  bool ss_on;
  size_t in_bytes, out_bytes;
};

static void pack_fn(void *u) {
  run *r = (run *)u;
  const pack_case *p = r->pc;
  const int64_t xs = (int64_t)p->c * p->h * p->w;
  if (r->kind == 1) {
    weft__cu_nhwc_pack(0, r->x, WEFT_F16, xs, p->n, p->c, p->h, p->w, p->row0,
                       p->hb, p->pl, p->wb, r->dst, WEFT_F16,
                       r->ss_on ? r->ss : nullptr, WEFT_ACT_SILU);
  } else if (r->kind == 2) {
    cudaMemcpyAsync(r->dst, r->x, r->in_bytes, cudaMemcpyDeviceToDevice, 0);
  } else {
    const dim3 grid((p->hb * p->wb + TP - 1) / TP, (p->c + TC - 1) / TC, p->n),
        block(TP, TROWS);
    first_pack_kernel<__half, __half><<<grid, block>>>(
        r->x, xs, p->c, p->h, p->w, p->row0, p->hb, p->pl, p->wb, r->dst,
        p->n, r->ss_on ? r->ss : nullptr, WEFT_ACT_SILU);
  }
}

// the unpack of the band's output: rows = hb - 2 (a 3x3 convolution's),
// wo = w, into y rows [row0 + 1, ...) with bias and residual
static void unpack_fn(void *u) {
  run *r = (run *)u;
  const pack_case *p = r->pc;
  const int rows = p->hb - 2, wo = p->w;
  const int64_t plane = (int64_t)p->h * p->w, ys = (int64_t)p->c * plane;
  const int r0 = p->row0 + 1 < 0 ? 0 : p->row0 + 1;
  if (r->kind == 1) {
    weft__cu_nhwc_unpack(0, r->dst, WEFT_F16, p->n, rows, wo, p->c, r->bias,
                         nullptr, r->res, r->x, WEFT_F16, ys, plane, r0);
  } else if (r->kind == 2) {
    cudaMemcpyAsync(r->x, r->dst, r->out_bytes, cudaMemcpyDeviceToDevice, 0);
  } else {
    const dim3 grid((rows * wo + TP - 1) / TP, (p->c + TC - 1) / TC, p->n),
        block(TP, TROWS);
    first_unpack_kernel<__half, __half><<<grid, block>>>(
        r->dst, rows * wo, p->c, r->bias, nullptr, r->res, r->x, ys, plane,
        (int64_t)r0 * wo, p->n);
  }
}

static std::vector<uint16_t> down(const void *d, size_t bytes) {
  std::vector<uint16_t> h(bytes / 2);
  CK(cudaMemcpy(h.data(), d, bytes, cudaMemcpyDeviceToHost));
  return h;
}

static size_t differ(const std::vector<uint16_t> &a,
                     const std::vector<uint16_t> &b) {
  size_t n = 0;
  for (size_t i = 0; i < a.size(); i++)
    n += a[i] != b[i];
  return n;
}

int main() {
  // the middle band of the VAE's 128x512x512 (3 bands), its 256x256x256
  // (2 bands: the top one), the UNet's 320x64x64, 640x32x32 and 1280x8x8
  // at batch 2, whole
  const pack_case cases[] = {
      {"VAE 128x512x512, a middle band of 171 rows", 1, 128, 512, 512, 169,
       173, 1, 514},
      {"VAE 256x256x256, the top band of 128 rows", 1, 256, 256, 256, -1, 130,
       1, 258},
      {"UNet 320x64x64 batch 2", 2, 320, 64, 64, -1, 66, 1, 66},
      {"UNet 640x32x32 batch 2", 2, 640, 32, 32, -1, 34, 1, 34},
      {"UNet 1280x8x8 batch 2", 2, 1280, 8, 8, -1, 10, 1, 10},
  };
  const char *kinds[] = {"first", "production", "copy"};
  for (const pack_case &pc : cases) {
    const size_t nx = (size_t)pc.n * pc.c * pc.h * pc.w;
    const size_t nd = (size_t)pc.n * pc.hb * pc.wb * pc.c;
    run r = {};
    r.pc = &pc;
    CK(cudaMalloc(&r.x, nx * 2));
    CK(cudaMalloc(&r.dst, nd * 2));
    CK(cudaMalloc(&r.res, nx * 2));
    CK(cudaMalloc(&r.ss, (size_t)pc.n * pc.c * sizeof(float2)));
    CK(cudaMalloc(&r.bias, (size_t)pc.c * 4));
    std::vector<float2> ssh((size_t)pc.n * pc.c);
    std::vector<float> bh(pc.c);
    for (size_t i = 0; i < ssh.size(); i++)
      ssh[i] = make_float2(0.5f + (float)(i % 7) * 0.1f,
                           (float)(i % 5) * 0.1f - 0.2f);
    for (int i = 0; i < pc.c; i++)
      bh[i] = (float)(i % 9) * 0.05f - 0.2f;
    CK(cudaMemcpy(r.ss, ssh.data(), ssh.size() * sizeof(float2),
                  cudaMemcpyHostToDevice));
    CK(cudaMemcpy(r.bias, bh.data(), bh.size() * 4, cudaMemcpyHostToDevice));
    const int rows = pc.hb - 2; // the band's output rows
    const int lo = std::max(pc.row0, 0), hi = std::min(pc.row0 + pc.hb, pc.h);
    const size_t band_x = (size_t)pc.n * pc.c * (hi - lo) * pc.w; // read
    for (int pass = 0; pass < 3; pass++) { // pack, pack + norm, unpack
      std::vector<uint16_t> want;
      for (int kind = 0; kind < 3; kind++) {
        fill<<<1024, 256>>>(r.x, nx, 7);
        fill<<<1024, 256>>>(r.res, nx, 11);
        fill<<<1024, 256>>>(r.dst, nd, 13);
        CK(cudaDeviceSynchronize());
        r.kind = kind;
        r.ss_on = pass == 1;
        void (*fn)(void *) = pass < 2 ? pack_fn : unpack_fn;
        const void *out = pass < 2 ? (const void *)r.dst : (const void *)r.x;
        const size_t ny = (size_t)pc.n * pc.c * rows * pc.w;
        size_t bytes, out_bytes;
        if (pass < 2) {
          r.in_bytes = band_x * 2;
          r.out_bytes = out_bytes = nd * 2;
          bytes = r.in_bytes + r.out_bytes;
        } else {
          r.out_bytes = ny * 2;
          out_bytes = nx * 2; // y is x's buffer: all of it compared
          bytes = ny * 2 * 3; // src and res read, y written
        }
        fn(&r);
        CK(cudaDeviceSynchronize());
        std::vector<uint16_t> got = down(out, out_bytes);
        if (kind == 0) want = got;
        const size_t bad = kind == 2 ? 0 : differ(got, want);
        const float us = time_us(0, fn, &r);
        static const char *const moves[3] = {
            "x moved", "x normalized and moved",
            "y moved back, + bias + residual"};
        printf("%s\t%s\t%s\t%.2f\t%.0f\t%zu\n", pc.name, moves[pass],
               kinds[kind], us, bytes / us / 1e3, bad);
        fflush(stdout);
      }
    }
    cudaFree(r.x), cudaFree(r.dst), cudaFree(r.res), cudaFree(r.ss),
        cudaFree(r.bias);
  }
  return 0;
}
