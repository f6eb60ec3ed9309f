// norm.cu - group norm (+ fused activation), layer norm and row softmax.
// Statistics are two-pass (mean, then squared deviations) with double
// accumulators, as kernels/cpu computes them, so a 40960-value group of a
// 64x64 map stays exact and both backends agree to float rounding (group
// norm does both passes per 4096-value chunk and merges the chunks exactly).
// Activations may be 16-bit: x and y are T (float, __half or __nv_bfloat16,
// the launchers' dt), read into fp32 and rounded once at each store; gamma
// and beta are fp32.  For T = float the kernels are the fp32 ones,
// operation for operation.
#include "common.cuh"

#define ROW_THREADS 128

// ---- group norm ------------------------------------------------------------

// A group (image * groups + group, cpg * spatial values) is spread over
// many blocks: the VAE's 1x128x512x512 map has only 32 groups, one block
// each left 100 of 132 SMs idle.  Three kernels:
//   gn_chunk_kernel: one block per GN_CHUNK values of a group; the chunk's
//     sum and its squared deviations from its own mean, both passes from
//     registers, so x is read once.  The group's last block to finish (a
//     counter per group, the backend's, left at zero again) merges its
//     chunks (Chan et al.: M2 = sum of M2_k + n_k (mean_k - mean)^2, every
//     term >= 0, so no cancellation) and writes each channel's (scale,
//     shift): gn_finalize_kernel's work without its launch (an H200: 3.7
//     us a group norm, 60 of them a UNet step).  Without counters (more
//     groups than GN_COUNTERS) gn_finalize_kernel does it, one block per
//     group, the same sums.
//   gn_apply_kernel: y = act(fma(x, scale, shift)), a grid-stride loop.
// A group of one chunk (SD's 8x8 maps) takes one kernel, gn_whole_kernel:
// the statistics, the merge, then y from the values still in registers
// (an H200: 9.2 against 11.6 us for 2x1280x8x8).  Merging in each apply
// block instead (a try: two launches) made the VAE's large groups slower,
// 143 against 101 us for 1x128x512x512: each block waited on its merge
// before its loads.  Every sum runs in a fixed order: the same input gives
// the same bits, whichever kernel merges.  A group of one chunk gets
// exactly the plain two-pass statistics.
#define GN_THREADS 256
#define GN_VALS 16 // values a thread keeps in registers
#define GN_CHUNK (GN_THREADS * GN_VALS)
#define GN_MERGE 128

static int64_t gn_chunks(int64_t len) {
  return (len + GN_CHUNK - 1) / GN_CHUNK;
}

// Where a thread's j-th value sits in its chunk: value j % 4 of its
// (j / 4)-th group of 4 (VEC), or its j-th value; a warp's loads are
// coalesced.
template <bool VEC> __device__ __forceinline__ int gn_at(int j) {
  const int t = (int)threadIdx.x;
  return VEC ? ((j >> 2) * GN_THREADS + t) * 4 + (j & 3) : j * GN_THREADS + t;
}

// The n values of the chunk at p into v (zeros past n).  VEC: p is
// 4-element aligned (weft_cu_aligned4) and the group's length a multiple of
// 4, so every chunk is whole groups of 4 (weft_cu_ld4).
template <typename T, bool VEC>
__device__ __forceinline__ void gn_load(const T *p, int n, float *v) {
#pragma unroll
  for (int j = 0; j < GN_VALS; j += VEC ? 4 : 1) {
    const int i = gn_at<VEC>(j);
    if constexpr (VEC) {
      const float4 a =
          i < n ? weft_cu_ld4(p + i) : make_float4(0.f, 0.f, 0.f, 0.f);
      v[j] = a.x, v[j + 1] = a.y, v[j + 2] = a.z, v[j + 3] = a.w;
    } else {
      v[j] = i < n ? weft_cu_ld(p + i) : 0.f;
    }
  }
}

// (sum, sum of (x - mean)^2) of the chunk's n values v, mean its own.
template <bool VEC>
__device__ __forceinline__ double2 gn_moments(const float *v, int n,
                                              double *red) {
  double s = 0;
#pragma unroll
  for (int j = 0; j < GN_VALS; j++)
    s += v[j];
  const double sum = weft_cu_block_sum(s, red), mean = sum / n;
  double q = 0;
#pragma unroll
  for (int j = 0; j < GN_VALS; j++) {
    const double d = v[j] - mean;
    if (gn_at<VEC>(j) < n) q += d * d;
  }
  return make_double2(sum, weft_cu_block_sum(q, red));
}

// The merge and the (scale, shift) table of group norm's statistics.
struct gn_fin {
  int64_t channels, groups;
  float eps;
  const float *gamma, *beta;
  float2 *ss;         // [batch * channels]
  unsigned *counters; // one per group, zero; NULL: gn_finalize_kernel
};

__device__ __forceinline__ double2 gn_merge(const double2 *pt, int64_t m,
                                            int64_t len, float eps, double *red,
                                            int nt);
__device__ __forceinline__ float2 gn_scale_shift(double2 mr, const float *gamma,
                                                 const float *beta, int64_t c);
__device__ __forceinline__ float2 gn_scale_shift_v(double2 mr, double g,
                                                   double bt);

// part[block] = the moments of the block's chunk; the group's last block
// then writes the group's (scale, shift) (f.counters).
template <typename T, bool VEC>
__global__ void __launch_bounds__(GN_THREADS)
    gn_chunk_kernel(const T *__restrict__ x, int64_t len, int64_t nchunk,
                    double2 *part, gn_fin f) {
  weft_cu_pdl_wait();
  __shared__ double red[32];
  __shared__ bool last;
  const int64_t t = blockIdx.x / nchunk, k = blockIdx.x % nchunk;
  const int n = (int)min(len - k * GN_CHUNK, (int64_t)GN_CHUNK);
  const int64_t cpg = f.channels / f.groups;
  const int64_t image = t / f.groups, c0 = (t % f.groups) * cpg;
  // this thread's channel's gamma and beta, loaded with x: the group's
  // last block needs them at the end of its chain of waits (the fence,
  // the count, the merge), which their loads lengthened by one more
  double gv = 1.0, bv = 0.0;
  if (f.counters && threadIdx.x < cpg) {
    if (f.gamma) gv = f.gamma[c0 + threadIdx.x];
    if (f.beta) bv = f.beta[c0 + threadIdx.x];
  }
  float v[GN_VALS];
  gn_load<T, VEC>(x + t * len + k * GN_CHUNK, n, v);
  const double2 m = gn_moments<VEC>(v, n, red);
  if (!f.counters) {
    if (threadIdx.x == 0) part[blockIdx.x] = m;
    return;
  }
  if (threadIdx.x == 0) {
    part[blockIdx.x] = m;
    __threadfence(); // the moments before the count
    last = atomicAdd(&f.counters[t], 1u) == (unsigned)(nchunk - 1);
  }
  __syncthreads();
  if (!last) return;
  __threadfence(); // every chunk's moments counted: read after the count
  const double2 mr =
      gn_merge(part + t * nchunk, nchunk, len, f.eps, red, GN_MERGE);
  if (threadIdx.x < cpg)
    f.ss[image * f.channels + c0 + threadIdx.x] = gn_scale_shift_v(mr, gv, bv);
  for (int64_t c = threadIdx.x + blockDim.x; c < cpg; c += blockDim.x)
    f.ss[image * f.channels + c0 + c] =
        gn_scale_shift(mr, f.gamma, f.beta, c0 + c);
  if (threadIdx.x == 0) f.counters[t] = 0; // ready for the next group norm
}

// A group's mean and rstd from the moments pt of its m chunks of
// GN_CHUNK values (the last one may be short), len values in all.  The
// first nt threads take the chunks in a strided loop, the rest add
// nothing.
__device__ __forceinline__ double2 gn_merge(const double2 *pt, int64_t m,
                                            int64_t len, float eps, double *red,
                                            int nt) {
  const int tid = (int)threadIdx.x;
  double s = 0;
  if (tid < nt)
    for (int64_t j = tid; j < m; j += nt)
      s += pt[j].x;
  const double mean = weft_cu_block_sum(s, red) / (double)len;
  double q = 0;
  if (tid < nt)
    for (int64_t j = tid; j < m; j += nt) {
      const double n = (double)min(len - j * GN_CHUNK, (int64_t)GN_CHUNK);
      const double d = pt[j].x / n - mean;
      q += pt[j].y + n * d * d;
    }
  const double var = weft_cu_block_sum(q, red) / (double)len;
  return make_double2(mean, 1.0 / sqrt(var + (double)eps));
}

// Channel c's (scale, shift) in double, rounded once to float as
// kernels/cpu/norm.c does: y = act(fma(x, scale, shift)), one rounding as
// the AVX2 path there (its portable path rounds the product too; the two
// differ where x * scale and shift cancel, e.g. one-element groups).
__device__ __forceinline__ float2 gn_scale_shift(double2 mr, const float *gamma,
                                                 const float *beta, int64_t c) {
  return gn_scale_shift_v(mr, gamma ? gamma[c] : 1.0, beta ? beta[c] : 0.0);
}

// the same for gamma[c] = g, beta[c] = bt
__device__ __forceinline__ float2 gn_scale_shift_v(double2 mr, double g,
                                                   double bt) {
  const double scale = mr.y * g;
  const double shift = __dsub_rn(bt, __dmul_rn(mr.x, scale)); // no FMA: as C
  return make_float2((float)scale, (float)shift);
}

// y = act(fma(v, scale, shift)) for a whole group's n values v, value i
// of the group's channel i / spatial, whose (scale, shift) is ss[i /
// spatial].  STV (with VEC): spatial % 4 == 0 and y 4-element aligned, so
// each group of 4 shares a channel and is one store.
template <typename T, bool VEC, bool STV>
__device__ __forceinline__ void gn_store(T *y, const float *v, int n,
                                         int64_t spatial, const float2 *ss,
                                         int act) {
#pragma unroll
  for (int j = 0; j < GN_VALS; j += STV ? 4 : 1) {
    const int i = gn_at<VEC>(j);
    if (i >= n) continue;
    const float2 f = ss[i / spatial];
    if constexpr (STV) {
      weft_cu_st4(y + i,
                  make_float4(weft_cu_act1s<T>(act, fmaf(v[j], f.x, f.y)),
                              weft_cu_act1s<T>(act, fmaf(v[j + 1], f.x, f.y)),
                              weft_cu_act1s<T>(act, fmaf(v[j + 2], f.x, f.y)),
                              weft_cu_act1s<T>(act, fmaf(v[j + 3], f.x, f.y))));
    } else {
      weft_cu_st(y + i, weft_cu_act1s<T>(act, fmaf(v[j], f.x, f.y)));
    }
  }
}

// Groups of one chunk (len <= GN_CHUNK): moments, merge (exactly the
// plain statistics), the (scale, shift) of the group's len / spatial
// channels in ss (dynamic shared memory), y.
template <typename T, bool VEC, bool STV>
__global__ void __launch_bounds__(GN_THREADS)
    gn_whole_kernel(const T *x, T *y, int64_t len, int64_t spatial,
                    int64_t channels, int64_t groups, float eps,
                    const float *__restrict__ gamma,
                    const float *__restrict__ beta, int act) {
  weft_cu_pdl_wait();
  __shared__ double red[32];
  __shared__ double2 m1;
  extern __shared__ float2 ss[];
  const int64_t t = blockIdx.x;
  const int n = (int)len;
  float v[GN_VALS];
  gn_load<T, VEC>(x + t * len, n, v);
  const double2 m = gn_moments<VEC>(v, n, red);
  if (threadIdx.x == 0) m1 = m;
  __syncthreads();
  const double2 mr = gn_merge(&m1, 1, len, eps, red, GN_MERGE);
  const int64_t cpg = channels / groups, c0 = (t % groups) * cpg;
  for (int64_t c = threadIdx.x; c < cpg; c += blockDim.x)
    ss[c] = gn_scale_shift(mr, gamma, beta, c0 + c);
  __syncthreads();
  gn_store<T, VEC, STV>(y + t * len, v, n, spatial, ss, act);
}

// One block of GN_MERGE threads per group: mean and rstd from its m
// chunks, then each channel's (scale, shift).
__global__ void __launch_bounds__(GN_MERGE)
    gn_finalize_kernel(const double2 *__restrict__ part, int64_t m, int64_t len,
                       int64_t channels, int64_t groups, float eps,
                       const float *__restrict__ gamma,
                       const float *__restrict__ beta,
                       float2 *__restrict__ ss) {
  weft_cu_pdl_wait();
  __shared__ double red[32];
  const int64_t t = blockIdx.x; // image * groups + group
  const double2 mr = gn_merge(part + t * m, m, len, eps, red, (int)blockDim.x);
  const int64_t cpg = channels / groups;
  const int64_t image = t / groups, c0 = (t % groups) * cpg;
  for (int64_t c = threadIdx.x; c < cpg; c += blockDim.x)
    ss[image * channels + c0 + c] = gn_scale_shift(mr, gamma, beta, c0 + c);
}

// y = act(fma(x, scale, shift)) over items of W values (1, or 4 through
// weft_cu_ld4 / st4), per_plane items to an (image, channel) plane.  y may
// equal x: an item is read, then written, by one thread.  I is uint32_t
// where the items fit: a 64-bit division per item costs more than its
// memory traffic (the element offset i * W is taken in 64 bits).
template <typename T, typename I, int W>
__global__ void gn_apply_kernel(const T *x, T *y, const float2 *__restrict__ ss,
                                I items, I per_plane, int act) {
  weft_cu_pdl_wait();
  for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < items;
       i += (I)gridDim.x * blockDim.x) {
    const float2 v = ss[i / per_plane];
    const int64_t e = (int64_t)i * W;
    if constexpr (W == 4) {
      float4 a = weft_cu_ld4(x + e);
      a.x = weft_cu_act1s<T>(act, fmaf(a.x, v.x, v.y));
      a.y = weft_cu_act1s<T>(act, fmaf(a.y, v.x, v.y));
      a.z = weft_cu_act1s<T>(act, fmaf(a.z, v.x, v.y));
      a.w = weft_cu_act1s<T>(act, fmaf(a.w, v.x, v.y));
      weft_cu_st4(y + e, a);
    } else {
      weft_cu_st(y + e,
                 weft_cu_act1s<T>(act, fmaf(weft_cu_ld(x + e), v.x, v.y)));
    }
  }
}

template <typename T, typename I, int W>
static void gn_apply(cudaStream_t s, const T *x, T *y, const float2 *ss,
                     int64_t items, int64_t per_plane, int act) {
  weft_cu_launch(gn_apply_kernel<T, I, W>,
                 weft_cu_blocks(items, WEFT_CU_THREADS), WEFT_CU_THREADS, 0, s,
                 x, y, ss, (I)items, (I)per_plane, act);
}

// Bytes of the chunks' moments, rounded up so that the (scale, shift)
// table after them is aligned.
static size_t gn_part_bytes(int64_t batch, int64_t channels, int64_t spatial,
                            int64_t groups) {
  const int64_t nchunk = gn_chunks(channels / groups * spatial);
  const size_t b = (size_t)(batch * groups * nchunk) * sizeof(double2);
  return (b + 255) & ~(size_t)255;
}

extern "C" size_t weft__cu_gn_stats_bytes(int64_t batch, int64_t channels,
                                          int64_t spatial, int64_t groups) {
  return gn_part_bytes(batch, channels, spatial, groups) +
         (size_t)(batch * channels) * sizeof(float2);
}

extern "C" size_t weft__cu_group_norm_scratch_bytes(int64_t batch,
                                                    int64_t channels,
                                                    int64_t spatial,
                                                    int64_t groups) {
  if (gn_chunks(channels / groups * spatial) == 1) return 0;
  return weft__cu_gn_stats_bytes(batch, channels, spatial, groups);
}

// The statistics: the chunks' moments at scratch, then one merging block
// per group writes each (image, channel)'s (scale, shift) after them (the
// table returned).  Group norm's groups of several chunks, and a
// convolution's prologue (conv_cudnn.c's channels-last way applies the
// table as it moves x), whatever the chunks.
template <typename T, bool VEC>
static float2 *gn_stats(cudaStream_t s, const T *x, int64_t batch,
                        int64_t channels, int64_t spatial, int64_t groups,
                        float eps, const float *gamma, const float *beta,
                        void *scratch, unsigned *counters) {
  const int64_t len = channels / groups * spatial, nchunk = gn_chunks(len);
  double2 *part = static_cast<double2 *>(scratch);
  float2 *ss = reinterpret_cast<float2 *>(
      static_cast<char *>(scratch) +
      gn_part_bytes(batch, channels, spatial, groups));
  const bool fused = counters && batch * groups <= WEFT_CU_GN_COUNTERS;
  const gn_fin f = {
      channels, groups, eps, gamma, beta, ss, fused ? counters : nullptr};
  weft_cu_launch(gn_chunk_kernel<T, VEC>, (unsigned)(batch * groups * nchunk),
                 GN_THREADS, 0, s, x, len, nchunk, part, f);
  if (!fused)
    weft_cu_launch(gn_finalize_kernel, (unsigned)(batch * groups), GN_MERGE, 0,
                   s, part, nchunk, len, channels, groups, eps, gamma, beta,
                   ss);
  return ss;
}

// The launches; blocks = batch * groups * nchunk, checked to fit.  VEC:
// x 4-element aligned and a group's length a multiple of 4; STV: y too,
// and spatial % 4 == 0.
template <typename T, bool VEC, bool STV>
static void group_norm_v(cudaStream_t s, const T *x, T *y, int64_t batch,
                         int64_t channels, int64_t spatial, int64_t groups,
                         float eps, const float *gamma, const float *beta,
                         int act, void *scratch, unsigned *counters,
                         int64_t blocks) {
  const int64_t len = channels / groups * spatial, nchunk = gn_chunks(len);
  if (nchunk == 1) {
    const size_t smem = (size_t)(channels / groups) * sizeof(float2);
    weft_cu_launch(gn_whole_kernel<T, VEC, STV>, (unsigned)blocks, GN_THREADS,
                   smem, s, x, y, len, spatial, channels, groups, eps, gamma,
                   beta, act);
    return;
  }
  const float2 *ss = gn_stats<T, VEC>(s, x, batch, channels, spatial, groups,
                                      eps, gamma, beta, scratch, counters);
  // uint32_t indices: items <= INT32_MAX and a grid stride <= 2^28 cannot
  // wrap.  An error of any launch stays for weft__cu_group_norm's
  // cudaGetLastError.
  const int64_t n = batch * channels * spatial;
  if (STV) {
    if (n / 4 <= INT32_MAX)
      gn_apply<T, uint32_t, 4>(s, x, y, ss, n / 4, spatial / 4, act);
    else
      gn_apply<T, int64_t, 4>(s, x, y, ss, n / 4, spatial / 4, act);
  } else if (n <= INT32_MAX) {
    gn_apply<T, uint32_t, 1>(s, x, y, ss, n, spatial, act);
  } else {
    gn_apply<T, int64_t, 1>(s, x, y, ss, n, spatial, act);
  }
}

template <typename T>
static void group_norm_t(cudaStream_t s, const T *x, T *y, int64_t batch,
                         int64_t channels, int64_t spatial, int64_t groups,
                         float eps, const float *gamma, const float *beta,
                         int act, void *scratch, unsigned *counters,
                         int64_t blocks) {
  const int64_t len = channels / groups * spatial;
  const bool vec = len % 4 == 0 && weft_cu_aligned4<T>(x);
  if (vec && spatial % 4 == 0 && weft_cu_aligned4<T>(y))
    group_norm_v<T, true, true>(s, x, y, batch, channels, spatial, groups, eps,
                                gamma, beta, act, scratch, counters, blocks);
  else if (vec)
    group_norm_v<T, true, false>(s, x, y, batch, channels, spatial, groups, eps,
                                 gamma, beta, act, scratch, counters, blocks);
  else
    group_norm_v<T, false, false>(s, x, y, batch, channels, spatial, groups,
                                  eps, gamma, beta, act, scratch, counters,
                                  blocks);
}

extern "C" cudaError_t weft__cu_group_norm(cudaStream_t s, int dt,
                                           const void *x, void *y,
                                           int64_t batch, int64_t channels,
                                           int64_t spatial, int64_t groups,
                                           float eps, const float *gamma,
                                           const float *beta, int act,
                                           void *scratch, unsigned *counters) {
  const int64_t len = channels / groups * spatial, nchunk = gn_chunks(len);
  const int64_t blocks = batch * groups * nchunk;
  if (blocks > INT32_MAX) return cudaErrorInvalidValue;
  WEFT_CU_WITH_TYPE(dt, T,
                    group_norm_t<T>(s, static_cast<const T *>(x),
                                    static_cast<T *>(y), batch, channels,
                                    spatial, groups, eps, gamma, beta, act,
                                    scratch, counters, blocks));
  return cudaGetLastError();
}

extern "C" cudaError_t weft__cu_gn_stats(cudaStream_t s, int dt, const void *x,
                                         int64_t batch, int64_t channels,
                                         int64_t spatial, int64_t groups,
                                         float eps, const float *gamma,
                                         const float *beta, void *scratch,
                                         unsigned *counters, const void **ss) {
  const int64_t len = channels / groups * spatial;
  if (batch * groups * gn_chunks(len) > INT32_MAX) return cudaErrorInvalidValue;
  WEFT_CU_WITH_TYPE(dt, T, {
    const T *xt = static_cast<const T *>(x);
    *ss = len % 4 == 0 && weft_cu_aligned4<T>(xt)
              ? gn_stats<T, true>(s, xt, batch, channels, spatial, groups, eps,
                                  gamma, beta, scratch, counters)
              : gn_stats<T, false>(s, xt, batch, channels, spatial, groups, eps,
                                   gamma, beta, scratch, counters);
  });
  return cudaGetLastError();
}

// ---- group norm of channels-last maps --------------------------------------
// x [batch][spatial][channels]: a group is cpg channels of every pixel, so
// its values are not contiguous.  gn_tile_cl_kernel takes whole pixels:
// `rows` rows of cv threads, thread (r, j) holding channels [j V, j V + V)
// (a 16-byte vector, V = 8; or V = 1) of the pixels r, r + rows, ... of a
// tile of `rows * gn_cl_pixels(V)` pixels, so a warp reads consecutive
// vectors.  Each tile takes two passes from registers: every channel's sum
// over the thread's pixels (float, 4 or 8 values) into shared memory, then
// each group's sum (the block's threads spread over the groups, double,
// in a fixed order: gn_cl_sum) and the tile's mean; then the squared
// deviations from that mean (double), the same way.  A block takes a run
// of tiles (so that an image has at most GN_CL_BLOCKS blocks) and merges
// their moments as the channels-first chunks are merged (Chan et al.),
// then writes one (sum, M2) per group: partials of groups, as small as the
// channels-first ones (per-channel partials of 8-pixel chunks, the way
// before, were as large as the map).  The image's last block (a counter
// per image, as gn_chunk_kernel's per group) merges the image's blocks,
// all its threads at once, and writes each channel's (scale, shift);
// without counters gn_merge_cl_kernel does it.  The statistics are those
// of the channels-first kernels with the values partitioned otherwise:
// equal up to the order of the sums.  Not yet fast: 15-35 us a call on
// the H200 whatever the map (about 5 channels first; BENCHMARKS.md,
// thirteenth session), so the models' maps stay channels first.
#define GN_CL_VALS 32    // values a thread keeps in registers (V = 8)
#define GN_CL_BLOCKS 128 // most blocks an image
#define GN_CL_SMEM (48 << 10)

// Pixels a thread of V-wide vectors takes (single values: 8, fewer
// registers).
__host__ __device__ constexpr int gn_cl_pixels(int v) {
  return v == 8 ? GN_CL_VALS / 8 : 8;
}

struct gn_cl_shape {
  int64_t spatial;
  int channels, groups;  // at most 4096 (512 vectors of 8)
  int cv, rows, threads; // threads of a pixel, rows of them, rounded up to 32
  int64_t tile, run;     // pixels a tile; tiles a block
  int blocks;            // blocks an image
  size_t smem;           // gn_tile_cl_kernel's: gn_cl_smem's layout
};

// A block's shared memory (doubles first): the groups' sums gs, squared
// deviations gq and means gm of a tile, the run's bs and bq; a double a
// thread (gn_cl_sum's); the tile's channel sums acc [rows][channels].
struct gn_cl_smem {
  double *gs, *gq, *gm, *bs, *bq, *ts;
  float *acc;
};

__device__ __forceinline__ gn_cl_smem gn_cl_smem_of(double *p,
                                                    const gn_cl_shape &sh) {
  const int g = sh.groups;
  gn_cl_smem m = {p, p + g, p + 2 * g, p + 3 * g, p + 4 * g, p + 5 * g, NULL};
  m.acc = reinterpret_cast<float *>(m.ts + blockDim.x);
  return m;
}

// The shape for V-wide vectors; false where the block or its shared
// memory would not fit.  256 threads, or 512 where 256 would leave more
// than GN_CL_BLOCKS runs of one tile an image (the VAE's large maps: twice
// the loads in flight a block); at most 512 (128 registers a thread).
static bool gn_cl_shape_of(int64_t channels, int64_t spatial, int64_t groups,
                           int v, gn_cl_shape *sh) {
  const int64_t cv = channels / v;
  if (cv > 512) return false;
  sh->spatial = spatial, sh->channels = (int)channels, sh->groups = (int)groups;
  sh->cv = (int)cv;
  sh->rows = (int)(cv >= 256 ? 1 : 256 / cv);
  if ((spatial + sh->rows * gn_cl_pixels(v) - 1) /
          (sh->rows * gn_cl_pixels(v)) >
      GN_CL_BLOCKS)
    sh->rows = (int)(cv >= 512 ? 1 : 512 / cv);
  sh->threads = (sh->rows * sh->cv + 31) / 32 * 32;
  sh->tile = (int64_t)sh->rows * gn_cl_pixels(v);
  const int64_t tiles = (spatial + sh->tile - 1) / sh->tile;
  sh->run = (tiles + GN_CL_BLOCKS - 1) / GN_CL_BLOCKS;
  sh->blocks = (int)((tiles + sh->run - 1) / sh->run);
  sh->smem = (size_t)(5 * groups + sh->threads) * sizeof(double) +
             (size_t)(sh->rows * channels) * sizeof(float);
  return sh->smem <= GN_CL_SMEM;
}

// Sums per group, by the whole block: thread t takes group g0 + t / tpg
// (tpg threads a group) and every tpg-th of the group's n items from
// item(g, i), in double; the group's first thread adds its tpg sums in
// order into out[g] (and out[g] / div into mean[g] where mean).  Groups
// beyond the block's threads take rounds.  Fixed order: the same input,
// the same bits.
template <typename F>
__device__ __forceinline__ void gn_cl_sum(const gn_cl_shape &sh, int n, F item,
                                          double *ts, double *out, double *mean,
                                          double div) {
  const int nt = (int)blockDim.x, tid = (int)threadIdx.x;
  const int tpg = sh.groups >= nt ? 1 : nt / sh.groups, gr = nt / tpg;
  for (int g0 = 0; g0 < sh.groups; g0 += gr) {
    const int g = g0 + tid / tpg, k = tid % tpg;
    const bool ok = tid < gr * tpg && g < sh.groups;
    double s = 0;
    if (ok)
#pragma unroll 4
      for (int i = k; i < n; i += tpg)
        s += item(g, i);
    ts[tid] = s;
    __syncthreads();
    if (ok && k == 0) {
      double t = 0;
      for (int j = 0; j < tpg; j++)
        t += ts[tid + j];
      out[g] = t;
      if (mean) mean[g] = t / div;
    }
    __syncthreads();
  }
}

// Pixels of block b's run.
__device__ __forceinline__ int64_t gn_cl_run_pixels(const gn_cl_shape &sh,
                                                    int64_t b) {
  const int64_t p0 = b * sh.run * sh.tile;
  return min(sh.spatial, p0 + sh.run * sh.tile) - p0;
}

// An image's (scale, shift) from its blocks' moments pt [blocks][groups],
// gn_merge's sums spread over the block (gn_cl_sum), then a thread a
// channel.
__device__ void gn_cl_merge(const double2 *pt, const gn_cl_shape &sh,
                            int64_t image, const gn_fin &f, gn_cl_smem m) {
  const int cpg = sh.channels / sh.groups, G = sh.groups;
  const double len = (double)cpg * (double)sh.spatial;
  gn_cl_sum(
      sh, sh.blocks, [&](int g, int b) { return pt[(int64_t)b * G + g].x; },
      m.ts, m.gs, m.gm, len);
  gn_cl_sum(
      sh, sh.blocks,
      [&](int g, int b) {
        const double2 v = pt[(int64_t)b * G + g];
        const double n = (double)cpg * (double)gn_cl_run_pixels(sh, b);
        const double d = v.x / n - m.gm[g];
        return v.y + n * d * d;
      },
      m.ts, m.gq, NULL, 1.0);
  for (int c = (int)threadIdx.x; c < sh.channels; c += (int)blockDim.x) {
    const int g = c / cpg;
    const double2 mr =
        make_double2(m.gm[g], 1.0 / sqrt(m.gq[g] / len + (double)f.eps));
    f.ss[image * sh.channels + c] = gn_scale_shift(mr, f.gamma, f.beta, c);
  }
}

// Block (b, image): the moments of its run of tiles into part[(image *
// blocks + b) * groups + g]; the image's last block merges them
// (f.counters).
template <typename T, int V>
__global__ void __launch_bounds__(512)
    gn_tile_cl_kernel(const T *__restrict__ x, gn_cl_shape sh, double2 *part,
                      gn_fin f) {
  weft_cu_pdl_wait();
  constexpr int P = gn_cl_pixels(V); // pixels a thread
  extern __shared__ double gsm[];
  __shared__ bool last;
  const gn_cl_smem m = gn_cl_smem_of(gsm, sh);
  const int G = sh.groups, C = sh.channels, cpg = C / G;
  const int tid = (int)threadIdx.x, r = tid / sh.cv;
  const bool on = r < sh.rows;
  const int c0 = (tid % sh.cv) * V;
  const int64_t image = blockIdx.y, b = blockIdx.x;
  const T *xi = x + image * sh.spatial * C + c0;
  const int64_t p_begin = b * sh.run * sh.tile;
  const int64_t p_end = p_begin + gn_cl_run_pixels(sh, b);
  const auto acc_item = [&](int g, int i) {
    return (double)m.acc[(i / cpg) * C + g * cpg + i % cpg];
  };
  double nb = 0; // values of the run so far, a group
  for (int64_t p0 = p_begin; p0 < p_end; p0 += sh.tile) {
    const int np = (int)min(sh.tile, p_end - p0);
    float v[P * V];
#pragma unroll
    for (int k = 0; k < P; k++) {
      const int p = r + k * sh.rows;
      if (on && p < np) {
        weft_cu_ldv<T, V>(xi + (p0 + p) * C, v + k * V);
      } else {
#pragma unroll
        for (int i = 0; i < V; i++)
          v[k * V + i] = 0.f;
      }
    }
    if (on)
#pragma unroll
      for (int i = 0; i < V; i++) {
        float s = 0.f;
#pragma unroll
        for (int k = 0; k < P; k++)
          s += v[k * V + i];
        m.acc[r * C + c0 + i] = s;
      }
    __syncthreads();
    const double n = (double)cpg * np;
    gn_cl_sum(sh, sh.rows * cpg, acc_item, m.ts, m.gs, m.gm, n);
    if (on)
#pragma unroll
      for (int i = 0; i < V; i++) {
        const double mean = m.gm[(c0 + i) / cpg];
        double q = 0;
#pragma unroll
        for (int k = 0; k < P; k++) {
          const double d = v[k * V + i] - mean;
          if (r + k * sh.rows < np) q += d * d;
        }
        m.acc[r * C + c0 + i] = (float)q;
      }
    __syncthreads();
    gn_cl_sum(sh, sh.rows * cpg, acc_item, m.ts, m.gq, NULL, 1.0);
    for (int g = tid; g < G; g += (int)blockDim.x) {
      if (nb == 0) {
        m.bs[g] = m.gs[g], m.bq[g] = m.gq[g];
      } else { // Chan et al.: the run so far and this tile
        const double d = m.gm[g] - m.bs[g] / nb;
        m.bq[g] += m.gq[g] + d * d * (nb * n / (nb + n));
        m.bs[g] += m.gs[g];
      }
    }
    nb += n;
    // the next tile's gs, gm and acc are written after its first sync,
    // and a group's bs / bq are read and written by one thread
  }
  double2 *pt = part + image * sh.blocks * G;
  for (int g = tid; g < G; g += (int)blockDim.x)
    pt[b * G + g] = make_double2(m.bs[g], m.bq[g]);
  if (!f.counters) return;
  // One thread fences and counts after the block's barrier, as
  // gn_chunk_kernel's (and cooperative groups' grid sync): a fence in
  // every thread cost more than the statistics (15-22 us a call on the
  // H200 against 5 for the channels-first ones).
  __syncthreads(); // the block's moments written
  if (tid == 0) {
    __threadfence(); // ... before the count
    last = atomicAdd(&f.counters[image], 1u) == (unsigned)(sh.blocks - 1);
    if (last) __threadfence(); // every block's counted: read after
  }
  __syncthreads();
  if (!last) return;
  gn_cl_merge(pt, sh, image, f, m);
  if (tid == 0) f.counters[image] = 0; // ready for the next group norm
}

// Without counters: one block an image merges its blocks' moments.
#define GN_CL_MERGE 256
__global__ void __launch_bounds__(GN_CL_MERGE)
    gn_merge_cl_kernel(const double2 *__restrict__ part, gn_cl_shape sh,
                       gn_fin f) {
  weft_cu_pdl_wait();
  extern __shared__ double gsm[];
  gn_cl_merge(part + (int64_t)blockIdx.x * sh.blocks * sh.groups, sh,
              blockIdx.x, f, gn_cl_smem_of(gsm, sh));
}

// Bytes of the blocks' moments (at most GN_CL_BLOCKS an image, whatever the
// vectors), rounded up so that the (scale, shift) table after them is
// aligned.
static size_t gn_cl_part_bytes(int64_t batch, int64_t spatial, int64_t groups) {
  const int64_t blocks = spatial < GN_CL_BLOCKS ? spatial : GN_CL_BLOCKS;
  const size_t b = (size_t)(batch * blocks * groups) * sizeof(double2);
  return (b + 255) & ~(size_t)255;
}

extern "C" size_t weft__cu_gn_stats_cl_bytes(int64_t batch, int64_t channels,
                                             int64_t spatial, int64_t groups) {
  return gn_cl_part_bytes(batch, spatial, groups) +
         (size_t)(batch * channels) * sizeof(float2);
}

// The vectors' width for x, and the shape; false where it does not fit.
template <typename T>
static bool gn_cl_plan(const T *x, int64_t batch, int64_t channels,
                       int64_t spatial, int64_t groups, int *v,
                       gn_cl_shape *sh) {
  *v = channels % 8 == 0 && weft_cu_aligned16(x) ? 8 : 1;
  return batch <= 65535 && gn_cl_shape_of(channels, spatial, groups, *v, sh);
}

template <typename T>
static float2 *gn_stats_cl(cudaStream_t s, const T *x, int64_t batch, int v,
                           const gn_cl_shape &sh, float eps, const float *gamma,
                           const float *beta, void *scratch,
                           unsigned *counters) {
  double2 *part = static_cast<double2 *>(scratch);
  float2 *ss = reinterpret_cast<float2 *>(
      static_cast<char *>(scratch) +
      gn_cl_part_bytes(batch, sh.spatial, sh.groups));
  const bool fused = counters && batch <= WEFT_CU_GN_COUNTERS;
  const gn_fin f = {
      sh.channels, sh.groups, eps, gamma, beta, ss, fused ? counters : nullptr};
  const dim3 grid((unsigned)sh.blocks, (unsigned)batch);
  if (v == 8)
    weft_cu_launch(gn_tile_cl_kernel<T, 8>, grid, sh.threads, sh.smem, s, x, sh,
                   part, f);
  else
    weft_cu_launch(gn_tile_cl_kernel<T, 1>, grid, sh.threads, sh.smem, s, x, sh,
                   part, f);
  if (!fused)
    weft_cu_launch(gn_merge_cl_kernel, (unsigned)batch, GN_CL_MERGE,
                   (size_t)(5 * sh.groups + GN_CL_MERGE) * sizeof(double), s,
                   part, sh, f);
  return ss;
}

// y = act(fma(x, scale, shift)) over items of W values (1, or 4 channels
// of one pixel through weft_cu_ld4 / st4), each value's channel its own
// (I as gn_apply_kernel's).
template <typename T, typename I, int W>
__global__ void gn_apply_cl_kernel(const T *x, T *y,
                                   const float2 *__restrict__ ss, I items,
                                   I channels, I image, int act) {
  weft_cu_pdl_wait();
  for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < items;
       i += (I)gridDim.x * blockDim.x) {
    const I e = i * W, n = e / image, c = e % channels;
    const float2 *f = ss + (int64_t)n * channels + c;
    if constexpr (W == 4) {
      float4 a = weft_cu_ld4(x + e);
      a.x = weft_cu_act1s<T>(act, fmaf(a.x, f[0].x, f[0].y));
      a.y = weft_cu_act1s<T>(act, fmaf(a.y, f[1].x, f[1].y));
      a.z = weft_cu_act1s<T>(act, fmaf(a.z, f[2].x, f[2].y));
      a.w = weft_cu_act1s<T>(act, fmaf(a.w, f[3].x, f[3].y));
      weft_cu_st4(y + e, a);
    } else {
      weft_cu_st(y + e,
                 weft_cu_act1s<T>(act, fmaf(weft_cu_ld(x + e), f->x, f->y)));
    }
  }
}

template <typename T, typename I, int W>
static void gn_apply_cl(cudaStream_t s, const T *x, T *y, const float2 *ss,
                        int64_t n, int64_t channels, int64_t image, int act) {
  weft_cu_launch(gn_apply_cl_kernel<T, I, W>,
                 weft_cu_blocks(n / W, WEFT_CU_THREADS), WEFT_CU_THREADS, 0, s,
                 x, y, ss, (I)(n / W), (I)channels, (I)image, act);
}

extern "C" cudaError_t
weft__cu_gn_stats_cl(cudaStream_t s, int dt, const void *x, int64_t batch,
                     int64_t channels, int64_t spatial, int64_t groups,
                     float eps, const float *gamma, const float *beta,
                     void *scratch, unsigned *counters, const void **ss) {
  WEFT_CU_WITH_TYPE(dt, T, {
    const T *xt = static_cast<const T *>(x);
    int v;
    gn_cl_shape sh;
    if (!gn_cl_plan(xt, batch, channels, spatial, groups, &v, &sh))
      return cudaErrorInvalidValue;
    *ss = gn_stats_cl<T>(s, xt, batch, v, sh, eps, gamma, beta, scratch,
                         counters);
  });
  return cudaGetLastError();
}

extern "C" cudaError_t
weft__cu_group_norm_cl(cudaStream_t s, int dt, const void *x, void *y,
                       int64_t batch, int64_t channels, int64_t spatial,
                       int64_t groups, float eps, const float *gamma,
                       const float *beta, int act, void *scratch,
                       unsigned *counters) {
  const int64_t n = batch * channels * spatial, image = channels * spatial;
  WEFT_CU_WITH_TYPE(dt, T, {
    const T *xt = static_cast<const T *>(x);
    T *yt = static_cast<T *>(y);
    int v;
    gn_cl_shape sh;
    if (!gn_cl_plan(xt, batch, channels, spatial, groups, &v, &sh))
      return cudaErrorInvalidValue;
    const float2 *ss = gn_stats_cl<T>(s, xt, batch, v, sh, eps, gamma, beta,
                                      scratch, counters);
    const bool vec = channels % 4 == 0 && weft_cu_aligned4<T>(xt) &&
                     weft_cu_aligned4<T>(yt);
    if (vec && n <= INT32_MAX)
      gn_apply_cl<T, uint32_t, 4>(s, xt, yt, ss, n, channels, image, act);
    else if (vec)
      gn_apply_cl<T, int64_t, 4>(s, xt, yt, ss, n, channels, image, act);
    else
      gn_apply_cl<T, int64_t, 1>(s, xt, yt, ss, n, channels, image, act);
  });
  return cudaGetLastError();
}

// ---- layer norm ------------------------------------------------------------

// One block per row (grid-stride over rows).  y may equal x: the block
// reads its whole row for both statistics before it writes any of it.
template <typename T>
__global__ void __launch_bounds__(ROW_THREADS)
    ln_kernel(const T *x, T *y, int64_t rows, int64_t dim, float eps,
              const float *__restrict__ gamma, const float *__restrict__ beta) {
  weft_cu_pdl_wait();
  __shared__ double red[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T *xr = x + r * dim;
    T *yr = y + r * dim;
    double s = 0;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
      s += weft_cu_ld(xr + i);
    const double mean = weft_cu_block_sum(s, red) / (double)dim;
    double q = 0;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      double d = weft_cu_ld(xr + i) - mean;
      q += d * d;
    }
    const double var = weft_cu_block_sum(q, red) / (double)dim;
    const float mf = (float)mean, rf = (float)(1.0 / sqrt(var + (double)eps));
    // kernels/cpu's norm_row: ((x - mean) * rstd) * gamma + beta, each
    // step rounded (no FMA contraction); a 16-bit y rounds once more, at
    // the store
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      float v = __fmul_rn(__fsub_rn(weft_cu_ld(xr + i), mf), rf);
      if (gamma) v = __fmul_rn(v, gamma[i]);
      if (beta) v = __fadd_rn(v, beta[i]);
      weft_cu_st(yr + i, v);
    }
    __syncthreads(); // the next row's reductions reuse red
  }
}

// Short rows (at most 32 * NV values; SD's 320): a warp per row, the row
// in registers (read once), the same statistics and formula as ln_kernel
// (the sums in another order).  For 8192 rows of 320 the block per row
// (128 threads) took 20 us a call on an H200, waiting on its barriers and
// its three passes over memory; this took 13 (rows of 640 and 1280 were
// slower this way).  Rows of whole aligned 16-byte vectors now take
// ln_vec_kernel below; this one the other rows of at most 384.  W warps a
// block: 8, or fewer where the rows would not make two blocks per SM.
template <typename T, int NV>
__global__ void __launch_bounds__(256)
    ln_warp_kernel(const T *x, T *y, int64_t rows, int dim, float eps,
                   const float *__restrict__ gamma,
                   const float *__restrict__ beta) {
  weft_cu_pdl_wait();
  const int lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  for (int64_t r = (int64_t)blockIdx.x * warps + (threadIdx.x >> 5); r < rows;
       r += (int64_t)gridDim.x * warps) {
    const T *xr = x + r * dim;
    T *yr = y + r * dim;
    float v[NV];
    double s = 0;
#pragma unroll
    for (int j = 0; j < NV; j++) {
      const int i = lane + 32 * j;
      v[j] = i < dim ? weft_cu_ld(xr + i) : 0.0f;
      s += v[j];
    }
    const double mean = weft_cu_warp_sum(s) / (double)dim;
    double q = 0;
#pragma unroll
    for (int j = 0; j < NV; j++)
      if (lane + 32 * j < dim) {
        const double d = v[j] - mean;
        q += d * d;
      }
    const double var = weft_cu_warp_sum(q) / (double)dim;
    const float mf = (float)mean, rf = (float)(1.0 / sqrt(var + (double)eps));
#pragma unroll
    for (int j = 0; j < NV; j++) {
      const int i = lane + 32 * j;
      if (i >= dim) continue;
      float o = __fmul_rn(__fsub_rn(v[j], mf), rf);
      if (gamma) o = __fmul_rn(o, gamma[i]);
      if (beta) o = __fadd_rn(o, beta[i]);
      weft_cu_st(yr + i, o);
    }
  }
}

template <typename T, int NV>
static void ln_warp(cudaStream_t s, const void *x, void *y, int64_t rows,
                    int64_t dim, float eps, const float *gamma,
                    const float *beta) {
  int warps = 8;
  while (warps > 1 && (rows + warps - 1) / warps < 264) // 2 x 132 SMs
    warps /= 2;
  const int64_t blocks = (rows + warps - 1) / warps;
  const unsigned g = (unsigned)(blocks < (1 << 20) ? blocks : (1 << 20));
  weft_cu_launch(ln_warp_kernel<T, NV>, g, warps * 32, 0, s,
                 static_cast<const T *>(x), static_cast<T *>(y), rows, (int)dim,
                 eps, gamma, beta);
}

// Rows held in registers as 16-byte vectors (WEFT_CU_VEC(T) values: 8
// 16-bit ones): G threads a row (a power of two up to 32, so a row's
// threads are lanes of one warp and reduce by shuffles), K vectors a
// thread (vector j of the row at thread j % G), 32 / G rows a warp.  The
// statistics and the formula are ln_kernel's (the sums in another order).
// One 16-byte access where ln_warp_kernel made eight 2-byte ones, and rows
// of 640 and 1280 in one warp's registers where ln_kernel read its row
// three times: SD's rows take 5 vectors a thread (320: G 8, 640: G 16,
// 1280: G 32).  gamma and beta go to shared memory, their loads issued
// with the first row's (read after the statistics, they had added a
// second memory latency to each call).  256 threads a block.
template <typename T, int G, int K>
__global__ void __launch_bounds__(256)
    ln_vec_kernel(const T *x, T *y, int64_t rows, int dim, float eps,
                  const float *__restrict__ gamma,
                  const float *__restrict__ beta) {
  constexpr int V = WEFT_CU_VEC(T), F = (32 * 8 * V + 255) / 256;
  __shared__ float gs[32 * 8 * V], bs[32 * 8 * V];
  weft_cu_pdl_wait();
  const int gl = threadIdx.x & (G - 1); // this thread's place in its row
  const int row_vecs = dim / V;
  const int64_t per_block = blockDim.x / G;
  float gr[F], br[F];
#pragma unroll
  for (int f = 0; f < F; f++) {
    const int i = threadIdx.x + 256 * f;
    gr[f] = gamma && i < dim ? gamma[i] : 1.0f;
    br[f] = beta && i < dim ? beta[i] : 0.0f;
  }
  bool staged = false;
  for (int64_t base = (int64_t)blockIdx.x * per_block; base < rows;
       base += (int64_t)gridDim.x * per_block) {
    // every lane runs the shuffles, a thread past the last row with nothing
    const int64_t r = base + threadIdx.x / G;
    const bool live = r < rows;
    const T *xr = x + (live ? r : 0) * dim;
    float v[K][V];
#pragma unroll
    for (int k = 0; k < K; k++) {
      const int j = gl + k * G;
      if (live && j < row_vecs) weft_cu_ld16(xr + j * V, v[k]);
    }
    if (!staged) { // the block's first row (the same for all its threads)
#pragma unroll
      for (int f = 0; f < F; f++) {
        const int i = threadIdx.x + 256 * f;
        if (i < dim) gs[i] = gr[f], bs[i] = br[f];
      }
      __syncthreads();
      staged = true;
    }
    double s = 0;
#pragma unroll
    for (int k = 0; k < K; k++) {
      const int j = gl + k * G;
      if (live && j < row_vecs) {
#pragma unroll
        for (int i = 0; i < V; i++)
          s += v[k][i];
      }
    }
#pragma unroll
    for (int o = G / 2; o > 0; o >>= 1)
      s += __shfl_xor_sync(WEFT_CU_FULL_MASK, s, o);
    const double mean = s / (double)dim;
    double q = 0;
#pragma unroll
    for (int k = 0; k < K; k++)
      if (live && gl + k * G < row_vecs) {
#pragma unroll
        for (int i = 0; i < V; i++) {
          const double d = v[k][i] - mean;
          q += d * d;
        }
      }
#pragma unroll
    for (int o = G / 2; o > 0; o >>= 1)
      q += __shfl_xor_sync(WEFT_CU_FULL_MASK, q, o);
    if (!live) continue;
    const double var = q / (double)dim;
    const float mf = (float)mean, rf = (float)(1.0 / sqrt(var + (double)eps));
    T *yr = y + r * dim;
#pragma unroll
    for (int k = 0; k < K; k++) {
      const int j = gl + k * G;
      if (j >= row_vecs) continue;
#pragma unroll
      for (int i = 0; i < V; i++) {
        float o = __fmul_rn(__fsub_rn(v[k][i], mf), rf);
        if (gamma) o = __fmul_rn(o, gs[j * V + i]);
        if (beta) o = __fadd_rn(o, bs[j * V + i]);
        v[k][i] = o;
      }
      weft_cu_st16(yr + j * V, v[k]);
    }
  }
}

template <typename T, int G, int K>
static void ln_vec(cudaStream_t s, const void *x, void *y, int64_t rows,
                   int64_t dim, float eps, const float *gamma,
                   const float *beta) {
  const int threads = 256, per_block = threads / G;
  const int64_t blocks = (rows + per_block - 1) / per_block;
  const unsigned g = (unsigned)(blocks < (1 << 20) ? blocks : (1 << 20));
  weft_cu_launch(ln_vec_kernel<T, G, K>, g, threads, 0, s,
                 static_cast<const T *>(x), static_cast<T *>(y), rows, (int)dim,
                 eps, gamma, beta);
}

// ln_vec with K = k (1 to 8) vectors a thread.
template <typename T, int G>
static void ln_vec_g(int k, cudaStream_t s, const void *x, void *y,
                     int64_t rows, int64_t dim, float eps, const float *gamma,
                     const float *beta) {
  switch (k) {
  case 1: return ln_vec<T, G, 1>(s, x, y, rows, dim, eps, gamma, beta);
  case 2: return ln_vec<T, G, 2>(s, x, y, rows, dim, eps, gamma, beta);
  case 3: return ln_vec<T, G, 3>(s, x, y, rows, dim, eps, gamma, beta);
  case 4: return ln_vec<T, G, 4>(s, x, y, rows, dim, eps, gamma, beta);
  case 5: return ln_vec<T, G, 5>(s, x, y, rows, dim, eps, gamma, beta);
  case 6: return ln_vec<T, G, 6>(s, x, y, rows, dim, eps, gamma, beta);
  case 7: return ln_vec<T, G, 7>(s, x, y, rows, dim, eps, gamma, beta);
  default: return ln_vec<T, G, 8>(s, x, y, rows, dim, eps, gamma, beta);
  }
}

// ln_vec for this row length: false where it does not apply (a row not a
// whole number of aligned vectors, or more than 32 x 8 of them).  G the
// fewest threads a row that hold it in at most 8 vectors each, but at
// least 4 (SD's 320 on 8 threads of 5 vectors, not 5 of 8).
template <typename T>
static bool ln_vec_launch(cudaStream_t s, const void *x, void *y, int64_t rows,
                          int64_t dim, float eps, const float *gamma,
                          const float *beta) {
  constexpr int V = WEFT_CU_VEC(T);
  if (dim % V || !weft_cu_aligned16(x) || !weft_cu_aligned16(y)) return false;
  const int64_t rv = dim / V;
  if (rv > 32 * 8) return false;
  int g = 4;
  while (g < 32 && rv > (int64_t)g * 5) g *= 2;
  const int k = (int)((rv + g - 1) / g);
  switch (g) {
  case 4: ln_vec_g<T, 4>(k, s, x, y, rows, dim, eps, gamma, beta); break;
  case 8: ln_vec_g<T, 8>(k, s, x, y, rows, dim, eps, gamma, beta); break;
  case 16: ln_vec_g<T, 16>(k, s, x, y, rows, dim, eps, gamma, beta); break;
  default: ln_vec_g<T, 32>(k, s, x, y, rows, dim, eps, gamma, beta); break;
  }
  return true;
}

template <typename T>
static void launch_ln(cudaStream_t s, const void *x, void *y, int64_t rows,
                      int64_t dim, float eps, const float *gamma,
                      const float *beta) {
  if (ln_vec_launch<T>(s, x, y, rows, dim, eps, gamma, beta)) return;
  if (dim <= 32 * 12) return ln_warp<T, 12>(s, x, y, rows, dim, eps, gamma, beta);
  const unsigned g = (unsigned)(rows < (1 << 20) ? rows : (1 << 20));
  weft_cu_launch(ln_kernel<T>, g, ROW_THREADS, 0, s, static_cast<const T *>(x),
                 static_cast<T *>(y), rows, dim, eps, gamma, beta);
}

extern "C" cudaError_t weft__cu_layer_norm(cudaStream_t s, int dt,
                                           const void *x, void *y, int64_t rows,
                                           int64_t dim, float eps,
                                           const float *gamma,
                                           const float *beta) {
  WEFT_CU_WITH_TYPE(dt, T,
                    launch_ln<T>(s, x, y, rows, dim, eps, gamma, beta));
  return cudaGetLastError();
}

// ---- softmax ---------------------------------------------------------------

// One block per row: max, sum of exp in double, then y = exp(x - max) *
// (float)(1 / sum), kernels/cpu's order.  y may equal x: the reductions
// finish (block barriers) before the last pass, in which each element is
// read and then written by the same thread.
template <typename T>
__global__ void __launch_bounds__(ROW_THREADS)
    softmax_kernel(const T *x, T *y, int64_t rows, int64_t dim) {
  weft_cu_pdl_wait();
  __shared__ double red[32];
  __shared__ float redf[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T *xr = x + r * dim;
    T *yr = y + r * dim;
    float mx = -INFINITY;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
      mx = fmaxf(mx, weft_cu_ld(xr + i));
    mx = weft_cu_block_max(mx, redf);
    double s = 0;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
      s += expf(weft_cu_ld(xr + i) - mx);
    s = weft_cu_block_sum(s, red);
    const float inv = (float)(1.0 / s);
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
      weft_cu_st(yr + i, expf(weft_cu_ld(xr + i) - mx) * inv);
    __syncthreads();
  }
}

extern "C" cudaError_t weft__cu_softmax(cudaStream_t s, int dt, const void *x,
                                        void *y, int64_t rows, int64_t dim) {
  unsigned g = (unsigned)(rows < (1 << 20) ? rows : (1 << 20));
  WEFT_CU_WITH_TYPE(dt, T,
                    weft_cu_launch(softmax_kernel<T>, g, ROW_THREADS, 0, s,
                                   static_cast<const T *>(x),
                                   static_cast<T *>(y), rows, dim));
  return cudaGetLastError();
}

WEFT_CU_MODULE(norm)
