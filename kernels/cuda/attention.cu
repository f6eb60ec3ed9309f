// attention.cu - scaled dot-product attention, fp32, one fused kernel with
// an online softmax (FlashAttention's recurrence): scores never leave
// shared memory and registers, so memory is O(tile), not O(lq * lk).
//
// Work split.  A block of 8 warps takes R = 8 * RW query rows of one
// (batch, head) and one chunk of up to 32 * NJ output features; each warp
// owns RW rows.  Keys go through shared memory in tiles of 32: lane j
// scores key j of the tile against the warp's rows (K rows padded to d + 1
// floats, so lanes reading the same column hit different banks), the warp
// updates each row's running max m, sum l and accumulator (lane j holds
// output features j, j + 32, ...), then p is broadcast key by key with
// shuffles for P @ V.  Output = acc / l.
//
// Numerics: scores are scale * (q . k) as kernels/cpu's GEMM computes them;
// exp is expf; sums in fp32.  Differences from kernels/cpu come from
// summation order only (tests: within 1e-4 of the output's magnitude).
// This is the correct-first kernel of issue 7's first step; it runs on the
// CUDA cores, not tensor cores.
#include "common.cuh"

#define ATTN_WARPS 8
#define ATTN_BK 32

struct attn_params {
  const float *q, *k, *v;
  float *o;
  int64_t qsb, qsh, qsl, ksb, ksh, ksl, vsb, vsh, vsl, osb, osh, osl;
  int64_t heads, bh0;       // first (batch * heads + head) of this launch
  int lq, lk, d, dv, chunk; // chunk: output features per block
  int n_qblocks;
  float scale;
  int causal;
};

template <int RW, int NJ>
__global__ void __launch_bounds__(ATTN_WARPS * 32)
    attn_kernel(const attn_params p) {
  weft_cu_pdl_wait();
  constexpr int R = ATTN_WARPS * RW;
  extern __shared__ float smem[];
  const int d = p.d, dpad = d + 1;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int qb = (int)(blockIdx.x % (unsigned)p.n_qblocks);
  const int64_t bh = p.bh0 + blockIdx.x / (unsigned)p.n_qblocks;
  const int64_t b = bh / p.heads, h = bh % p.heads;
  const int dv_off = blockIdx.y * p.chunk;
  const int dvc = min(p.chunk, p.dv - dv_off);
  const int q0 = qb * R;

  float *sQ = smem;                // [R][d]
  float *sK = sQ + R * d;          // [BK][d + 1]
  float *sV = sK + ATTN_BK * dpad; // [BK][dvc]

  const float *qp = p.q + b * p.qsb + h * p.qsh;
  const float *kp = p.k + b * p.ksb + h * p.ksh;
  const float *vp = p.v + b * p.vsb + h * p.vsh + dv_off;
  float *op = p.o + b * p.osb + h * p.osh + dv_off;

  for (int i = threadIdx.x; i < R * d; i += blockDim.x) {
    int r = i / d, c = i - r * d, qi = q0 + r;
    sQ[i] = qi < p.lq ? qp[(int64_t)qi * p.qsl + c] : 0.0f;
  }

  const int rbase = warp * RW;
  float m[RW], l[RW], acc[RW][NJ];
#pragma unroll
  for (int rr = 0; rr < RW; rr++) {
    m[rr] = -INFINITY;
    l[rr] = 0.0f;
#pragma unroll
    for (int j = 0; j < NJ; j++)
      acc[rr][j] = 0.0f;
  }

  // With a causal mask no row of this block sees keys past its last row.
  const int kend = p.causal ? min(p.lk, q0 + R) : p.lk;
  for (int kt = 0; kt < kend; kt += ATTN_BK) {
    const int nk = min(ATTN_BK, p.lk - kt);
    __syncthreads(); // the previous tile is no longer read
    for (int i = threadIdx.x; i < ATTN_BK * d; i += blockDim.x) {
      int r = i / d, c = i - r * d;
      sK[r * dpad + c] = r < nk ? kp[(int64_t)(kt + r) * p.ksl + c] : 0.0f;
    }
    for (int i = threadIdx.x; i < ATTN_BK * dvc; i += blockDim.x) {
      int r = i / dvc, c = i - r * dvc;
      sV[i] = r < nk ? vp[(int64_t)(kt + r) * p.vsl + c] : 0.0f;
    }
    __syncthreads();

    float s[RW];
#pragma unroll
    for (int rr = 0; rr < RW; rr++)
      s[rr] = 0.0f;
    const float *kr = sK + lane * dpad;
    const float *qr = sQ + rbase * d;
    for (int c = 0; c < d; c++) {
      const float kv = kr[c];
#pragma unroll
      for (int rr = 0; rr < RW; rr++)
        s[rr] = fmaf(qr[rr * d + c], kv, s[rr]);
    }

    const int kj = kt + lane;
    float pr[RW];
#pragma unroll
    for (int rr = 0; rr < RW; rr++) {
      const int qi = q0 + rbase + rr;
      const bool valid = kj < p.lk && (!p.causal || kj <= qi);
      const float sc = valid ? s[rr] * p.scale : -INFINITY;
      const float mnew = fmaxf(m[rr], weft_cu_warp_max(sc));
      // mnew is finite once a row has seen one key (key 0 is in the first
      // tile and never masked); the guard keeps -inf - -inf out anyway.
      const float ref = mnew == -INFINITY ? 0.0f : mnew;
      const float pe = valid ? expf(sc - ref) : 0.0f;
      const float corr = expf(m[rr] - ref);
      l[rr] = l[rr] * corr + weft_cu_warp_sum(pe);
#pragma unroll
      for (int j = 0; j < NJ; j++)
        acc[rr][j] *= corr;
      m[rr] = mnew;
      pr[rr] = pe;
    }

    for (int kk = 0; kk < nk; kk++) {
      float vv[NJ];
#pragma unroll
      for (int j = 0; j < NJ; j++) {
        const int col = lane + 32 * j;
        vv[j] = col < dvc ? sV[kk * dvc + col] : 0.0f;
      }
#pragma unroll
      for (int rr = 0; rr < RW; rr++) {
        const float pk = __shfl_sync(WEFT_CU_FULL_MASK, pr[rr], kk);
#pragma unroll
        for (int j = 0; j < NJ; j++)
          acc[rr][j] = fmaf(pk, vv[j], acc[rr][j]);
      }
    }
  }

#pragma unroll
  for (int rr = 0; rr < RW; rr++) {
    const int qi = q0 + rbase + rr;
    if (qi >= p.lq) continue;
    const float inv = 1.0f / l[rr];
#pragma unroll
    for (int j = 0; j < NJ; j++) {
      const int col = lane + 32 * j;
      if (col < dvc) op[(int64_t)qi * p.osl + col] = acc[rr][j] * inv;
    }
  }
}

template <int RW, int NJ>
static cudaError_t launch(cudaStream_t s, attn_params p, int64_t bh,
                          size_t smem) {
  auto kern = attn_kernel<RW, NJ>;
  if (smem > 48 * 1024) {
    cudaError_t e = cudaFuncSetAttribute(
        kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
  }
  constexpr int R = ATTN_WARPS * RW;
  p.n_qblocks = (p.lq + R - 1) / R;
  const int chunks = (p.dv + p.chunk - 1) / p.chunk;
  // gridDim.x < 2^31: launch groups of (batch, head) pairs
  const int64_t per_launch = (int64_t)INT32_MAX / p.n_qblocks;
  for (int64_t b0 = 0; b0 < bh; b0 += per_launch) {
    int64_t nbh = bh - b0 < per_launch ? bh - b0 : per_launch;
    p.bh0 = b0;
    dim3 grid((unsigned)(nbh * p.n_qblocks), (unsigned)chunks);
    weft_cu_launch(kern, grid, ATTN_WARPS * 32, smem, s, p);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

template <int RW>
static cudaError_t dispatch_nj(cudaStream_t s, const attn_params &p, int nj,
                               int64_t bh, size_t smem) {
  switch (nj) {
  case 1: return launch<RW, 1>(s, p, bh, smem);
  case 2: return launch<RW, 2>(s, p, bh, smem);
  case 3: return launch<RW, 3>(s, p, bh, smem);
  case 4: return launch<RW, 4>(s, p, bh, smem);
  case 5: return launch<RW, 5>(s, p, bh, smem);
  case 6: return launch<RW, 6>(s, p, bh, smem);
  case 7: return launch<RW, 7>(s, p, bh, smem);
  default: return launch<RW, 8>(s, p, bh, smem);
  }
}

static size_t smem_bytes(int rows, int d, int chunk) {
  return ((size_t)rows * d + (size_t)ATTN_BK * (d + 1) +
          (size_t)ATTN_BK * chunk) *
         sizeof(float);
}

extern "C" cudaError_t weft__cu_attention(cudaStream_t s,
                                          const weft_attn_args *a, float scale,
                                          size_t smem_optin) {
  attn_params p;
  p.q = a->q;
  p.k = a->k;
  p.v = a->v;
  p.o = a->o;
  p.qsb = a->q_s.b;
  p.qsh = a->q_s.h;
  p.qsl = a->q_s.l;
  p.ksb = a->k_s.b;
  p.ksh = a->k_s.h;
  p.ksl = a->k_s.l;
  p.vsb = a->v_s.b;
  p.vsh = a->v_s.h;
  p.vsl = a->v_s.l;
  p.osb = a->o_s.b;
  p.osh = a->o_s.h;
  p.osl = a->o_s.l;
  p.heads = a->heads;
  p.bh0 = 0;
  p.lq = (int)a->lq;
  p.lk = (int)a->lk;
  p.d = (int)a->d;
  p.dv = (int)a->dv;
  p.scale = scale;
  p.causal = a->causal != 0;
  p.n_qblocks = 1;
  // Output features per block: all of dv up to 256 (8 per lane), else
  // chunks of 256; each chunk recomputes the scores (rare: dv > 256).
  const int nj = p.dv >= 256 ? 8 : (p.dv + 31) / 32;
  p.chunk = 32 * nj < p.dv ? 32 * nj : p.dv;
  if ((p.dv + p.chunk - 1) / p.chunk > 65535) return cudaErrorInvalidValue;
  const int64_t bh = a->batch * a->heads;
  // 4 rows per warp share each K/V tile; fewer when d is too large for
  // shared memory that way.
  size_t smem = smem_bytes(ATTN_WARPS * 4, p.d, p.chunk);
  if (smem <= smem_optin) return dispatch_nj<4>(s, p, nj, bh, smem);
  smem = smem_bytes(ATTN_WARPS * 1, p.d, p.chunk);
  if (smem <= smem_optin) return dispatch_nj<1>(s, p, nj, bh, smem);
  return cudaErrorInvalidValue;
}

WEFT_CU_MODULE(attention)
