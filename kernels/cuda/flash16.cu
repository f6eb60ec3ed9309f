// flash16.cu - attention in FP16/BF16 precision as one fused kernel
// (FlashAttention-2's loop on tensor cores): the scores never leave
// registers, so there is no scratch and no lq x lk map in memory.
//
// Work split.  A block of W warps takes 16 * W query rows of one (batch,
// head); each warp owns 16 rows.  Keys and values go through shared
// memory in tiles of 64 rows, read from the fp32 tensors (any strides the
// backend accepts) and rounded to 16 bits as they are stored.  Per tile a
// warp computes S = Q K^T with mma.m16n8k16 (16-bit inputs, fp32
// accumulators), scales and masks it, updates each row's running max and
// sum (online softmax, in base 2), rounds P = exp2(S - m) to 16 bits in
// registers (an accumulator tile of S is laid out as the A operand of the
// next product, so P goes straight on) and accumulates O += P V, V's
// fragments transposed by ldmatrix.trans.  The head dimension is padded
// with zeros to DP, a multiple of 16 (SD's 40 -> 48, 80, 160).
//
// Numerics: q, k, v rounded to 16 bits (as the cuBLASLt path rounds
// them); scores, max, sums and the output in fp32; the probabilities are
// rounded to 16 bits before P V, unnormalised (values in [0, 1]); the
// division by the row's sum is the last step, in fp32.
#include "common.cuh"
#include "mma.cuh"

#define FA_BK 64 // keys per tile

struct fa_params {
  weft_attn_args a; // the caller's (pointers, strides), by value
  int64_t bh0;      // first (batch * heads + head) of this launch
  int lq, lk, d;
  float scale_log2; // scale * log2(e)
  int causal;
  int vec2; // every row start 8-byte aligned and d even: float2 loads
};

// Rows [r0, r0 + FA_BK) of one (batch, head)'s k or v into dst [FA_BK][DP
// + 8] (16-bit), zeros past lk and past d.
template <int DP, bool BF, int NT>
__device__ __forceinline__ void load_tile(uint32_t *dst, const float *src,
                                          int64_t ld, int r0, int lk, int d,
                                          bool vec2) {
  constexpr int PAIRS = DP / 2, LDW = (DP + 8) / 2;
  for (int i = threadIdx.x; i < FA_BK * PAIRS; i += NT) {
    const int r = i / PAIRS, c = 2 * (i - r * PAIRS);
    float lo = 0.0f, hi = 0.0f;
    if (r0 + r < lk) {
      const float *p = src + (int64_t)(r0 + r) * ld + c;
      if (vec2 && c + 1 < d) {
        const float2 v = *reinterpret_cast<const float2 *>(p);
        lo = v.x;
        hi = v.y;
      } else {
        if (c < d) lo = p[0];
        if (c + 1 < d) hi = p[1];
      }
    }
    dst[r * LDW + c / 2] = weft_cu_pack2<BF>(lo, hi);
  }
}

template <int DP, bool BF, int W>
__global__ void __launch_bounds__(W * 32) fa_kernel(const fa_params p) {
  constexpr int NT = W * 32, LDW = (DP + 8) / 2, ND = DP / 8, NK = DP / 16;
  __shared__ __align__(16) uint32_t sK[FA_BK * LDW];
  __shared__ __align__(16) uint32_t sV[FA_BK * LDW];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, c2 = 2 * (lane & 3); // fragment row, column pair
  const weft_attn_args &a = p.a;
  const int64_t bh = p.bh0 + blockIdx.y;
  const int64_t b = bh / a.heads, h = bh % a.heads;
  const int q0 = blockIdx.x * 16 * W, qw = q0 + 16 * warp;
  const float *qp = a.q + b * a.q_s.b + h * a.q_s.h;
  const float *kp = a.k + b * a.k_s.b + h * a.k_s.h;
  const float *vp = a.v + b * a.v_s.b + h * a.v_s.h;

  // This warp's 16 query rows as A fragments, zeros past lq and d.
  uint32_t qa[NK][4];
#pragma unroll
  for (int kk = 0; kk < NK; kk++) {
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const int r = qw + g + 8 * (j & 1), c = kk * 16 + c2 + 8 * (j >> 1);
      float lo = 0.0f, hi = 0.0f;
      if (r < p.lq) {
        const float *x = qp + (int64_t)r * a.q_s.l;
        if (c < p.d) lo = x[c];
        if (c + 1 < p.d) hi = x[c + 1];
      }
      qa[kk][j] = weft_cu_pack2<BF>(lo, hi);
    }
  }

  float o[ND][4];
#pragma unroll
  for (int n = 0; n < ND; n++)
    o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  const int row[2] = {qw + g, qw + g + 8};

  // With a causal mask no row of this block sees keys past its last row.
  const int kend = p.causal ? min(p.lk, q0 + 16 * W) : p.lk;
  for (int kt = 0; kt < kend; kt += FA_BK) {
    __syncthreads(); // the previous tile is no longer read
    load_tile<DP, BF, NT>(sK, kp, a.k_s.l, kt, p.lk, p.d, p.vec2);
    load_tile<DP, BF, NT>(sV, vp, a.v_s.l, kt, p.lk, p.d, p.vec2);
    __syncthreads();

    float s[8][4];
#pragma unroll
    for (int n = 0; n < 8; n++) {
      s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
      const uint32_t *kr = sK + (n * 8 + g) * LDW + c2 / 2;
#pragma unroll
      for (int kk = 0; kk < NK; kk++)
        weft_cu_mma16816<BF>(s[n], qa[kk], kr[kk * 8], kr[kk * 8 + 4]);
    }

    // scale (base 2), mask, row maxima (a row's 64 scores are spread over
    // the 4 lanes of a quad)
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < 8; n++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int key = kt + n * 8 + c2 + (e & 1);
        float v = s[n][e] * p.scale_log2;
        if (key >= p.lk || (p.causal && key > row[e >> 1])) v = -INFINITY;
        s[n][e] = v;
        mx[e >> 1] = fmaxf(mx[e >> 1], v);
      }
    float mu[2], alpha[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(WEFT_CU_FULL_MASK, mx[i], 1));
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(WEFT_CU_FULL_MASK, mx[i], 2));
      const float mn = fmaxf(m[i], mx[i]);
      mu[i] = mn == -INFINITY ? 0.0f : mn; // a row with no key yet
      alpha[i] = exp2f(m[i] - mu[i]);
      m[i] = mn;
      l[i] *= alpha[i];
    }
#pragma unroll
    for (int n = 0; n < ND; n++) {
      o[n][0] *= alpha[0];
      o[n][1] *= alpha[0];
      o[n][2] *= alpha[1];
      o[n][3] *= alpha[1];
    }

    // P = exp2(S - m) as A fragments: key tiles 2j and 2j + 1 make k-step j
    uint32_t pa[4][4];
#pragma unroll
    for (int j = 0; j < 4; j++) {
#pragma unroll
      for (int t = 0; t < 2; t++) {
        float *sn = s[2 * j + t];
        const float p0 = exp2f(sn[0] - mu[0]), p1 = exp2f(sn[1] - mu[0]);
        const float p2 = exp2f(sn[2] - mu[1]), p3 = exp2f(sn[3] - mu[1]);
        l[0] += p0 + p1;
        l[1] += p2 + p3;
        pa[j][2 * t] = weft_cu_pack2<BF>(p0, p1);
        pa[j][2 * t + 1] = weft_cu_pack2<BF>(p2, p3);
      }
    }

    // O += P V: lanes 0-15 address the 16 key rows of the k-step
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const uint32_t *vr = sV + (j * 16 + (lane & 15)) * LDW;
#pragma unroll
      for (int n = 0; n < ND; n++) {
        uint32_t b0, b1;
        weft_cu_ldsm_x2_trans(b0, b1, vr + n * 4);
        weft_cu_mma16816<BF>(o[n], pa[j], b0, b1);
      }
    }
  }

  float *op = a.o + b * a.o_s.b + h * a.o_s.h;
#pragma unroll
  for (int i = 0; i < 2; i++) {
    l[i] += __shfl_xor_sync(WEFT_CU_FULL_MASK, l[i], 1);
    l[i] += __shfl_xor_sync(WEFT_CU_FULL_MASK, l[i], 2);
    if (row[i] >= p.lq) continue;
    const float inv = 1.0f / l[i];
    float *x = op + (int64_t)row[i] * a.o_s.l;
#pragma unroll
    for (int n = 0; n < ND; n++) {
      const int c = n * 8 + c2;
      if (c < p.d) x[c] = o[n][2 * i] * inv;
      if (c + 1 < p.d) x[c + 1] = o[n][2 * i + 1] * inv;
    }
  }
}

// The padded head dimensions compiled; 0 when d is larger than all.
static int padded_dim(int64_t d) {
  static const int dims[] = {48, 64, 80, 128, 160};
  for (int dp : dims)
    if (d <= dp) return dp;
  return 0;
}

extern "C" bool weft__cu_flash16_fits(const weft_attn_args *a) {
  return a->d == a->dv && padded_dim(a->d) != 0;
}

template <int DP, bool BF, int W>
static cudaError_t launch(cudaStream_t s, fa_params p, int64_t bh) {
  const unsigned qblocks = (unsigned)((p.lq + 16 * W - 1) / (16 * W));
  for (int64_t b0 = 0; b0 < bh; b0 += 65535) {
    p.bh0 = b0;
    dim3 grid(qblocks, (unsigned)(bh - b0 < 65535 ? bh - b0 : 65535));
    fa_kernel<DP, BF, W><<<grid, W * 32, 0, s>>>(p);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

// 8 warps (128 query rows) share each key tile when that still makes
// enough blocks to fill the GPU; else 4.
template <int DP, bool BF>
static cudaError_t launch_w(cudaStream_t s, const fa_params &p, int64_t bh,
                            int sm_count) {
  const int64_t blocks8 = (p.lq + 127) / 128 * bh;
  if (blocks8 >= 2 * (int64_t)sm_count) return launch<DP, BF, 8>(s, p, bh);
  return launch<DP, BF, 4>(s, p, bh);
}

template <bool BF>
static cudaError_t launch_dp(cudaStream_t s, const fa_params &p, int64_t bh,
                             int sm_count) {
  switch (padded_dim(p.d)) {
  case 48: return launch_w<48, BF>(s, p, bh, sm_count);
  case 64: return launch_w<64, BF>(s, p, bh, sm_count);
  case 80: return launch_w<80, BF>(s, p, bh, sm_count);
  case 128: return launch_w<128, BF>(s, p, bh, sm_count);
  case 160: return launch_w<160, BF>(s, p, bh, sm_count);
  default: return cudaErrorInvalidValue;
  }
}

static bool even8(const void *ptr, int64_t s0, int64_t s1, int64_t s2) {
  return ((uintptr_t)ptr & 7) == 0 && s0 % 2 == 0 && s1 % 2 == 0 && s2 % 2 == 0;
}

extern "C" cudaError_t weft__cu_flash16(cudaStream_t s, const weft_attn_args *a,
                                        float scale, int bf16, int sm_count) {
  if (!weft__cu_flash16_fits(a)) return cudaErrorInvalidValue;
  fa_params p;
  p.a = *a;
  p.bh0 = 0;
  p.lq = (int)a->lq;
  p.lk = (int)a->lk;
  p.d = (int)a->d;
  p.scale_log2 = scale * 1.4426950408889634f;
  p.causal = a->causal != 0;
  p.vec2 = a->d % 2 == 0 && even8(a->k, a->k_s.b, a->k_s.h, a->k_s.l) &&
           even8(a->v, a->v_s.b, a->v_s.h, a->v_s.l);
  const int64_t bh = a->batch * a->heads;
  return bf16 ? launch_dp<true>(s, p, bh, sm_count)
              : launch_dp<false>(s, p, bh, sm_count);
}
