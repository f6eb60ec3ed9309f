// norm.cu - group norm (+ fused activation), layer norm and row softmax.
// Statistics are two-pass (mean, then squared deviations) with double
// accumulators, as kernels/cpu computes them, so a 40960-value group of a
// 64x64 map stays exact and both backends agree to float rounding.
#include "common.cuh"

#define NORM_THREADS 512
#define ROW_THREADS 128

// ---- group norm ------------------------------------------------------------

// One block per (image, group): mean and rstd over cpg * spatial values,
// then each channel's (scale, shift) in double, rounded once to float as
// kernels/cpu/norm.c does: y = act(fma(x, scale, shift)), one rounding as
// the AVX2 path there (its portable path rounds the product too; the two
// differ where x * scale and shift cancel, e.g. one-element groups).
__global__ void __launch_bounds__(NORM_THREADS)
    gn_stats_kernel(const float *__restrict__ x, int64_t channels,
                    int64_t spatial, int64_t groups, float eps,
                    const float *__restrict__ gamma,
                    const float *__restrict__ beta, float2 *__restrict__ ss) {
  __shared__ double red[32];
  const int64_t t = blockIdx.x; // image * groups + group
  const int64_t cpg = channels / groups, len = cpg * spatial;
  const float *xg = x + t * len;
  double s = 0;
  for (int64_t i = threadIdx.x; i < len; i += blockDim.x)
    s += xg[i];
  const double mean = weft_cu_block_sum(s, red) / (double)len;
  double q = 0;
  for (int64_t i = threadIdx.x; i < len; i += blockDim.x) {
    double d = xg[i] - mean;
    q += d * d;
  }
  const double var = weft_cu_block_sum(q, red) / (double)len;
  const double rstd = 1.0 / sqrt(var + (double)eps);
  const int64_t image = t / groups, c0 = (t % groups) * cpg;
  for (int64_t c = threadIdx.x; c < cpg; c += blockDim.x) {
    double g = gamma ? gamma[c0 + c] : 1.0;
    double bt = beta ? beta[c0 + c] : 0.0;
    double scale = rstd * g;
    double shift = __dsub_rn(bt, __dmul_rn(mean, scale)); // no FMA: as C
    ss[image * channels + c0 + c] = make_float2((float)scale, (float)shift);
  }
}

// y = act(x * scale + shift) per plane (image, channel); y may equal x.
__global__ void gn_apply_kernel(const float *x, float *y,
                                const float2 *__restrict__ ss, int64_t planes,
                                int64_t spatial, int act) {
  for (int64_t p = blockIdx.y; p < planes; p += gridDim.y) {
    const float2 v = ss[p];
    const float *xp = x + p * spatial;
    float *yp = y + p * spatial;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
         i < spatial; i += (int64_t)gridDim.x * blockDim.x)
      yp[i] = weft_cu_act1(act, fmaf(xp[i], v.x, v.y));
  }
}

extern "C" cudaError_t
weft__cu_group_norm(cudaStream_t s, const float *x, float *y, int64_t batch,
                    int64_t channels, int64_t spatial, int64_t groups,
                    float eps, const float *gamma, const float *beta, int act,
                    float *scratch) {
  float2 *ss = reinterpret_cast<float2 *>(scratch);
  int64_t blocks = batch * groups;
  if (blocks > INT32_MAX) return cudaErrorInvalidValue;
  gn_stats_kernel<<<(unsigned)blocks, NORM_THREADS, 0, s>>>(
      x, channels, spatial, groups, eps, gamma, beta, ss);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  int64_t planes = batch * channels;
  dim3 g(weft_cu_blocks(spatial, WEFT_CU_THREADS),
         (unsigned)(planes < 65535 ? planes : 65535));
  if ((int64_t)g.x * g.y > (1 << 22)) g.x = (unsigned)((1 << 22) / g.y) + 1;
  gn_apply_kernel<<<g, WEFT_CU_THREADS, 0, s>>>(x, y, ss, planes, spatial, act);
  return cudaGetLastError();
}

// ---- layer norm ------------------------------------------------------------

// One block per row (grid-stride over rows).  y may equal x: the block
// reads its whole row for both statistics before it writes any of it.
__global__ void __launch_bounds__(ROW_THREADS)
    ln_kernel(const float *x, float *y, int64_t rows, int64_t dim, float eps,
              const float *__restrict__ gamma, const float *__restrict__ beta) {
  __shared__ double red[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *xr = x + r * dim;
    float *yr = y + r * dim;
    double s = 0;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
      s += xr[i];
    const double mean = weft_cu_block_sum(s, red) / (double)dim;
    double q = 0;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      double d = xr[i] - mean;
      q += d * d;
    }
    const double var = weft_cu_block_sum(q, red) / (double)dim;
    const float mf = (float)mean, rf = (float)(1.0 / sqrt(var + (double)eps));
    // kernels/cpu's norm_row: ((x - mean) * rstd) * gamma + beta, each
    // step rounded (no FMA contraction)
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      float v = __fmul_rn(__fsub_rn(xr[i], mf), rf);
      if (gamma) v = __fmul_rn(v, gamma[i]);
      if (beta) v = __fadd_rn(v, beta[i]);
      yr[i] = v;
    }
    __syncthreads(); // the next row's reductions reuse red
  }
}

extern "C" cudaError_t weft__cu_layer_norm(cudaStream_t s, const float *x,
                                           float *y, int64_t rows, int64_t dim,
                                           float eps, const float *gamma,
                                           const float *beta) {
  unsigned g = (unsigned)(rows < (1 << 20) ? rows : (1 << 20));
  ln_kernel<<<g, ROW_THREADS, 0, s>>>(x, y, rows, dim, eps, gamma, beta);
  return cudaGetLastError();
}

// ---- softmax ---------------------------------------------------------------

// One block per row: max, sum of exp in double, then y = exp(x - max) *
// (float)(1 / sum), kernels/cpu's order.  y may equal x: the reductions
// finish (block barriers) before the last pass, in which each element is
// read and then written by the same thread.
__global__ void __launch_bounds__(ROW_THREADS)
    softmax_kernel(const float *x, float *y, int64_t rows, int64_t dim) {
  __shared__ double red[32];
  __shared__ float redf[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *xr = x + r * dim;
    float *yr = y + r * dim;
    float mx = -INFINITY;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
      mx = fmaxf(mx, xr[i]);
    mx = weft_cu_block_max(mx, redf);
    double s = 0;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
      s += expf(xr[i] - mx);
    s = weft_cu_block_sum(s, red);
    const float inv = (float)(1.0 / s);
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
      yr[i] = expf(xr[i] - mx) * inv;
    __syncthreads();
  }
}

extern "C" cudaError_t weft__cu_softmax(cudaStream_t s, const float *x,
                                        float *y, int64_t rows, int64_t dim) {
  unsigned g = (unsigned)(rows < (1 << 20) ? rows : (1 << 20));
  softmax_kernel<<<g, ROW_THREADS, 0, s>>>(x, y, rows, dim);
  return cudaGetLastError();
}
