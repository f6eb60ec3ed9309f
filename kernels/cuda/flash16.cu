// flash16.cu - attention in FP16/BF16 precision as one fused kernel
// (FlashAttention-2's loop on tensor cores): the scores never leave
// registers; there is no lq x lk map in memory.
//
// fa_kernel streams key tiles of k and v into shared memory with cp.async,
// two stages deep (FA_STAGES), so that the next tile's loads overlap this
// tile's products: straight from where they are when they are stored in 16
// bits with rows of whole 16-byte chunks and d a multiple of 16 (SD's 80
// and 160; keys past lk read as zeros), else from copies fa_pack rounds to 16
// bits into scratch first, dense [batch * heads][LKP][DP] (fp32 or any
// strides; k and v in one launch).  The tiles' head dimension is padded
// with zero columns to DP, a multiple of 16 (40 -> 48, 80, 160).  Where the
// padding leaves 8 columns free (d <= DP - 8: SD's 40), v's column DP - 8
// holds ones, so that P V also sums each row's probabilities: the softmax's
// denominator comes out of the tensor cores instead of a scalar add per
// score.  A block of W warps takes 16 * MT * W / KS query rows of one
// (batch, head); each warp owns 16 * MT rows (MT = 2 for head dims up to
// 64: each K and V fragment read from shared memory then serves two
// products), and where the rows are few KS warps share them, each taking
// FA_BK / KS keys of every tile.  Per tile a warp computes S =
// Q K^T with mma.m16n8k16 (16-bit inputs, fp32 accumulators), masks it,
// updates each row's running max (online softmax, in base 2: the scale
// and log2(e) folded into the exponent's one fma), rounds P = exp2(S - m)
// to 16 bits in registers (an accumulator tile of S is laid out as the A
// operand of the next product, so P goes straight on) and accumulates O
// += P V, V's fragments transposed by ldmatrix.trans.
//
// Numerics: q, k, v rounded to 16 bits (as the cuBLASLt path rounds
// them); scores, max, sums and the output in fp32; the probabilities are
// rounded to 16 bits before P V, unnormalised (values in [0, 1]); the
// division by the row's sum is the last step, in fp32.  With the ones
// column the sum is of the rounded probabilities, the ones P V weighs.
#include <float.h>

#include "common.cuh"
#include "mma.cuh"

#ifndef FA_BK
#define FA_BK 64 // keys per tile
#endif
// Warps an SM the registers are capped for (__launch_bounds__; 0: no
// cap) at head dims 80 and 48, and whether v's padding carries the ones
// column: compile-time settings that tools/gpu/attn_bench.sh times
// against each other (nvcc splits -D values at commas: plain numbers),
// and whether full key tiles take a body without the mask's tests.
#ifndef FA_WARPS80
#define FA_WARPS80 16
#endif
#ifndef FA_WARPS48
#define FA_WARPS48 0
#endif
#ifndef FA_EXH // 1: fp16 probabilities from ex2.approx.f16x2 (fp16, ones)
#define FA_EXH 0
#endif
#ifndef FA_SPLIT // 0: every tile through the masked body (the comparison)
#define FA_SPLIT 1
#endif
#ifndef FA_ONES
#define FA_ONES 1
#endif
#ifndef FA_LAZY   // 0, or how far (base 2) a row's maximum may pass its m
#define FA_LAZY 8 // before O is scaled (FA_LAZY > 0: checked once a tile)
#endif
#ifndef FA_DIRECT // 0: k and v always packed first (WEFT_CUDA_ATTN_DIRECT=0)
#define FA_DIRECT 1
#endif
#ifndef FA_STAGES // key tiles in flight in shared memory (2: double buffer)
#define FA_STAGES 2
#endif
#ifndef FA_MT48 // query row tiles a warp at head dims up to 64 (1 or 2)
#define FA_MT48 2
#endif
#ifndef FA_MT80 // and at 80
#define FA_MT80 1
#endif
// Warps on the same query rows (1, 2, 4: each takes a part of every key
// tile) in the launches of 128, 64 and 32 query rows a block
#ifndef FA_KS_BIG
#define FA_KS_BIG 1
#endif
#ifndef FA_KS_MID
#define FA_KS_MID 2
#endif
#ifndef FA_KS_SMALL
#define FA_KS_SMALL 4
#endif

struct fa_params {
  weft_attn_args a;           // the caller's (q, o and their strides), by value
  const uint16_t *kh, *vh;    // k and v as the kernel reads them (16 bits)
  weft_attn_strides khs, vhs; // their strides, in elements
  int64_t bh0;                // first (batch * heads + head) of this launch
  int lq, lk, lkp, d;
  int kc;    // 16-byte chunks of a key row read (the rest of DP: constants)
  int krows; // key rows there (read as zeros past them)
  float scale_log2; // |scale| * log2(e), at least FLT_MIN
  int neg_q;        // scale < 0: q negated as it is read
  int causal;
};

// The padded head dimensions compiled; 0 when d is larger than all.
static int padded_dim(int64_t d) {
  static const int dims[] = {48, 64, 80, 128, 160};
  for (int dp : dims)
    if (d <= dp) return dp;
  return 0;
}

static int64_t padded_keys(int64_t lk) {
  return (lk + FA_BK - 1) / FA_BK * FA_BK;
}

// One packed copy (k or v): [bh][lkp][dp] 16-bit values.
static size_t packed_bytes(const weft_attn_args *a) {
  const size_t n =
      (size_t)(a->batch * a->heads * padded_keys(a->lk) * padded_dim(a->d)) * 2;
  return (n + 255) & ~(size_t)255;
}

// k and v [B, H, L, d] by strides into kd and vd [B*H][lkp][dp] (one
// launch: the first half of the threads' work is k), 8 values (16 bytes)
// per thread, zeros past len and d; v's column `ones` (-1: none) is 1 in
// the rows below len.
template <bool BF, typename X>
__global__ void fa_pack(const X *k, weft_attn_strides ks, const X *v,
                        weft_attn_strides vs, int64_t heads, int64_t bh,
                        int len, int lkp, int d, int dp, int ones, uint4 *kd,
                        uint4 *vd) {
  weft_cu_pdl_wait();
  const int c8 = dp / 8;
  const int64_t n = bh * lkp * c8;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < 2 * n;
       i += (int64_t)gridDim.x * blockDim.x) {
    const bool is_v = i >= n;
    const int64_t e = is_v ? i - n : i;
    const X *x = is_v ? v : k;
    const weft_attn_strides s = is_v ? vs : ks;
    uint4 *dst = is_v ? vd : kd;
    const int c = (int)(e % c8) * 8;
    const int64_t rr = e / c8;
    const int r = (int)(rr % lkp);
    const int64_t t = rr / lkp;
    float f[8];
#pragma unroll
    for (int j = 0; j < 8; j++)
      f[j] = 0.0f;
    if (r < len) {
      const X *p = x + (t / heads) * s.b + (t % heads) * s.h + r * s.l;
#pragma unroll
      for (int j = 0; j < 8; j++)
        if (c + j < d) f[j] = weft_cu_ld(p + c + j);
        else if (is_v && c + j == ones) f[j] = 1.0f;
    }
    uint4 o;
    o.x = weft_cu_pack2<BF>(f[0], f[1]);
    o.y = weft_cu_pack2<BF>(f[2], f[3]);
    o.z = weft_cu_pack2<BF>(f[4], f[5]);
    o.w = weft_cu_pack2<BF>(f[6], f[7]);
    dst[e] = o;
  }
}

// A 16-byte chunk [1, 0, ..., 0] in fp16 and in bf16: v's ones column.
__device__ const uint4 fa_one16[2] = {{0x3c00u, 0, 0, 0}, {0x3f80u, 0, 0, 0}};

// Key rows [r0, r0 + FA_BK) of k or v (rows ld elements apart) into a
// shared tile [FA_BK][DP + 8] at shared address dst (16-bit; the 8 extra
// columns keep the fragment loads off each other's banks), as cp.async
// copies of 16 bytes: the first kc chunks of each row, zeros past them
// (the head dimension's padding) and in rows from krows on; V with ones:
// its last chunk [1, 0, ..., 0].  One copy a chunk and no branch: a
// thread's chunks sit at the same places in every tile, only the tile's
// first row moves (FA_BK * ld fits an int).
template <int DP, int NT, bool V, bool BF>
__device__ __forceinline__ void load_tile(unsigned dst, const uint16_t *src,
                                          int ld, int r0, int kc, int krows,
                                          bool ones) {
  constexpr int C8 = DP / 8, LDW = (DP + 8) / 2, N = FA_BK * C8;
  const uint16_t *t0 = src + (int64_t)r0 * ld; // the tile's first row
  const int left = krows - r0;                 // its rows there
#pragma unroll
  for (int k = 0; k < (N + NT - 1) / NT; k++) {
    const int i = threadIdx.x + k * NT;
    if (N % NT && i >= N) break;
    const int r = i / C8, c = i - r * C8;
    const void *g = t0 + (r * ld + c * 8);
    unsigned n = c < kc && r < left ? 16 : 0; // 0: zeros, nothing read
    if (V && ones && c == C8 - 1 && c >= kc) g = &fa_one16[BF], n = 16;
    weft_cu_cp_async16_zs(dst + (r * LDW + c * 4) * 4, g, n);
  }
}

// Blocks of W warps an SM the registers must allow (FA_WARPS80/48).
template <int DP, int W> constexpr int fa_min_blocks() {
  return DP == 80 && FA_WARPS80 >= W   ? FA_WARPS80 / W
         : DP == 48 && FA_WARPS48 >= W ? FA_WARPS48 / W
                                       : 1;
}

// Floats a lane leaves for the merge of key splits: o, m and l.
template <int DP, int MT> __host__ __device__ constexpr int fa_part_floats() {
  return MT * (DP / 8) * 4 + 4 * MT;
}

// FA_STAGES stages of a K and a V tile; after the loop the same memory
// holds the partial results of the key splits past the first (KS - 1
// warps for each of the W / KS row warps).
template <int DP, int W, int MT, int KS> constexpr int fa_smem_bytes() {
  return FA_STAGES * 2 * FA_BK * (DP + 8) * 2 >
                 (KS - 1) * W / KS * 32 * fa_part_floats<DP, MT>() * 4
             ? FA_STAGES * 2 * FA_BK * (DP + 8) * 2
             : (KS - 1) * W / KS * 32 * fa_part_floats<DP, MT>() * 4;
}

// KN * 8 keys of a tile (the first at kt, in shared memory at sK and sV)
// for a warp's query rows from qw: S = Q K^T, the online softmax, O += P
// V.  MASK: the keys reach past lk or across the causal diagonal, so each
// score is checked (a separate copy of the loop body: full tiles carry no
// per-score test).
template <int DP, bool BF, int MT, int KN, bool ONES, bool MASK>
__device__ __forceinline__ void
fa_tile(const fa_params &p, const uint32_t *sK, const uint32_t *sV, int kt,
        int qw, int lane, const uint32_t (&qa)[MT][DP / 16][4],
        float (&o)[MT][DP / 8][4], float (&m)[MT][2], float (&l)[MT][2]) {
  constexpr int LDW = (DP + 8) / 2, ND = DP / 8, NK = DP / 16;
  const int g = lane >> 2, c2 = 2 * (lane & 3); // fragment row, column pair
  const float sl = p.scale_log2;
  // S = Q K^T: each K fragment serves the warp's MT row tiles
  float s[MT][KN][4];
#pragma unroll
  for (int n = 0; n < KN; n++) {
    // lanes 0-7: key rows n*8 .. n*8+7, lanes 8-15 the same at + 8 columns
    const uint32_t *kr =
        sK + (n * 8 + (lane & 7)) * LDW + ((lane >> 3) & 1) * 4;
#pragma unroll
    for (int kk = 0; kk < NK; kk++) {
      uint32_t b0, b1;
      weft_cu_ldsm_x2(b0, b1, kr + kk * 8);
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
        if (kk == 0)
          weft_cu_mma16816_0<BF>(s[mt][n], qa[mt][kk], b0, b1);
        else
          weft_cu_mma16816<BF>(s[mt][n], qa[mt][kk], b0, b1);
    }
  }

  // mask (the keys past lk, the causal diagonal) and row maxima (a row's
  // KN * 8 scores are spread over the 4 lanes of a quad), in base-2 units
  float mx[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; mt++) {
    const int row[2] = {qw + 16 * mt + g, qw + 16 * mt + g + 8};
    mx[mt][0] = mx[mt][1] = -INFINITY;
#pragma unroll
    for (int n = 0; n < KN; n++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        float v = s[mt][n][e];
        if (MASK) {
          const int key = kt + n * 8 + c2 + (e & 1);
          if (key >= p.lk || (p.causal && key > row[e >> 1])) v = -INFINITY;
        }
        s[mt][n][e] = v;
        mx[mt][e >> 1] = fmaxf(mx[mt][e >> 1], v);
      }
#pragma unroll
    for (int i = 0; i < 2; i++) {
      float x = mx[mt][i];
      x = fmaxf(x, __shfl_xor_sync(WEFT_CU_FULL_MASK, x, 1));
      x = fmaxf(x, __shfl_xor_sync(WEFT_CU_FULL_MASK, x, 2));
      mx[mt][i] = x * sl;
    }
  }

  // The running maxima m move up to the tile's, and O (and l) scale down to
  // them.  FA_LAZY: only when some row's maximum passed its m by more than
  // FA_LAZY (one vote for the warp), so that most tiles skip the scaling
  // and the probabilities stay below 2^FA_LAZY.
  bool grow = !FA_LAZY;
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
    grow |= mx[mt][0] > m[mt][0] + FA_LAZY || mx[mt][1] > m[mt][1] + FA_LAZY;
  if (FA_LAZY) grow = __any_sync(WEFT_CU_FULL_MASK, grow);
  if (__builtin_expect(grow, !FA_LAZY)) { // a branch where lazy, not selects
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
      float alpha[2];
#pragma unroll
      for (int i = 0; i < 2; i++) {
        const float mn = fmaxf(m[mt][i], mx[mt][i]);
        alpha[i] = weft_cu_exp2(m[mt][i] - (mn == -INFINITY ? 0.0f : mn));
        m[mt][i] = mn;
        if (!ONES) l[mt][i] *= alpha[i];
      }
#pragma unroll
      for (int n = 0; n < ND; n++) {
        o[mt][n][0] *= alpha[0];
        o[mt][n][1] *= alpha[0];
        o[mt][n][2] *= alpha[1];
        o[mt][n][3] *= alpha[1];
      }
    }
  }

  // P = exp2(S scale_log2 - m) as A fragments: key tiles 2j and 2j + 1
  // make k-step j
  uint32_t pa[MT][KN / 2][4];
#pragma unroll
  for (int mt = 0; mt < MT; mt++) {
    float mu[2];
#pragma unroll
    for (int i = 0; i < 2; i++) // 0 for a row with no key yet
      mu[i] = m[mt][i] == -INFINITY ? 0.0f : m[mt][i];
#pragma unroll
    for (int j = 0; j < KN / 2; j++) {
#pragma unroll
      for (int u = 0; u < 2; u++) {
        const float *sn = s[mt][2 * j + u];
        if (FA_EXH && ONES && !BF) { // two fp16 exponentials an instruction
          pa[mt][j][2 * u] = weft_cu_exp2_h2(fmaf(sn[0], sl, -mu[0]),
                                             fmaf(sn[1], sl, -mu[0]));
          pa[mt][j][2 * u + 1] = weft_cu_exp2_h2(fmaf(sn[2], sl, -mu[1]),
                                                 fmaf(sn[3], sl, -mu[1]));
          continue;
        }
        const float p0 = weft_cu_exp2(fmaf(sn[0], sl, -mu[0]));
        const float p1 = weft_cu_exp2(fmaf(sn[1], sl, -mu[0]));
        const float p2 = weft_cu_exp2(fmaf(sn[2], sl, -mu[1]));
        const float p3 = weft_cu_exp2(fmaf(sn[3], sl, -mu[1]));
        if (!ONES) {
          l[mt][0] += p0 + p1;
          l[mt][1] += p2 + p3;
        }
        pa[mt][j][2 * u] = weft_cu_pack2<BF>(p0, p1);
        pa[mt][j][2 * u + 1] = weft_cu_pack2<BF>(p2, p3);
      }
    }
  }

  // O += P V: lanes 0-15 address the 16 key rows of the k-step; each V
  // fragment serves the MT row tiles
#pragma unroll
  for (int j = 0; j < KN / 2; j++) {
    const uint32_t *vr = sV + (j * 16 + (lane & 15)) * LDW;
#pragma unroll
    for (int n = 0; n < ND; n++) {
      uint32_t b0, b1;
      weft_cu_ldsm_x2_trans(b0, b1, vr + n * 4);
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
        weft_cu_mma16816<BF>(o[mt][n], pa[mt][j], b0, b1);
    }
  }
}

// X: how q and o are stored (float, or the 16-bit type of the operands);
// ONES: v's column DP - 8 is ones (fa_pack), the row sums come from P V.
// KS: warps that share a warp's query rows, each taking FA_BK / KS keys
// of every tile (more warps for the same rows where the rows are few);
// their running results merge at the end.
template <int DP, bool BF, int W, int MT, int KS, bool ONES, typename X>
__global__ void __launch_bounds__(W * 32, (fa_min_blocks<DP, W>()))
    fa_kernel(const fa_params p) {
  weft_cu_pdl_wait();
  constexpr int NT = W * 32, LDW = (DP + 8) / 2, ND = DP / 8, NK = DP / 16;
  constexpr int TILE = FA_BK * LDW; // 32-bit words of one tile
  constexpr int ROWS = 16 * MT;     // query rows of a warp
  constexpr int RW = W / KS, KN = FA_BK / 8 / KS; // row warps, key n-tiles
  extern __shared__ __align__(16) uint32_t smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int rw = KS > 1 ? warp % RW : warp;     // this warp's rows
  const int ks = KS > 1 ? warp / RW : 0;        // its part of each key tile
  const int g = lane >> 2, c2 = 2 * (lane & 3); // fragment row, column pair
  const weft_attn_args &a = p.a;
  const int64_t bh = p.bh0 + blockIdx.y;
  const int64_t b = bh / a.heads, h = bh % a.heads;
  const int q0 = blockIdx.x * ROWS * RW, qw = q0 + ROWS * rw;
  const X *qp = (const X *)a.q + b * a.q_s.b + h * a.q_s.h;
  const uint16_t *kp = p.kh + b * p.khs.b + h * p.khs.h;
  const uint16_t *vp = p.vh + b * p.vhs.b + h * p.vhs.h;

  // With a causal mask no row of this block sees keys past its last row.
  const int kend = p.causal ? min(p.lk, q0 + ROWS * RW) : p.lk;
  const int tiles = (kend + FA_BK - 1) / FA_BK;
  const int kl = (int)p.khs.l, vl = (int)p.vhs.l; // key row strides
  const unsigned sb = (unsigned)__cvta_generic_to_shared(smem);
  load_tile<DP, NT, false, BF>(sb, kp, kl, 0, p.kc, p.krows, ONES);
  load_tile<DP, NT, true, BF>(sb + TILE * 4, vp, vl, 0, p.kc, p.krows, ONES);
  weft_cu_cp_async_commit();
  for (int t = 1; t < FA_STAGES - 1; t++) { // deeper pipelines: tiles 1..
    if (t < tiles) {
      const unsigned nK = sb + t * 2 * TILE * 4;
      load_tile<DP, NT, false, BF>(nK, kp, kl, t * FA_BK, p.kc, p.krows, ONES);
      load_tile<DP, NT, true, BF>(nK + TILE * 4, vp, vl, t * FA_BK, p.kc,
                                  p.krows, ONES);
    }
    weft_cu_cp_async_commit(); // empty past the last tile: counts stay
  }

  // This warp's query rows as A fragments (MT tiles of 16), zeros past lq
  // and d (read while the first tile is on its way).
  uint32_t qa[MT][NK][4];
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int kk = 0; kk < NK; kk++) {
#pragma unroll
      for (int j = 0; j < 4; j++) {
        const int r = qw + 16 * mt + g + 8 * (j & 1);
        const int c = kk * 16 + c2 + 8 * (j >> 1);
        float lo = 0.0f, hi = 0.0f;
        if (r < p.lq) {
          const X *x = qp + (int64_t)r * a.q_s.l;
          if (c < p.d) lo = weft_cu_ld(x + c);
          if (c + 1 < p.d) hi = weft_cu_ld(x + c + 1);
          if (p.neg_q) lo = -lo, hi = -hi;
        }
        qa[mt][kk][j] = weft_cu_pack2<BF>(lo, hi);
      }
    }

  float o[MT][ND][4];
  float m[MT][2], l[MT][2]; // m in base-2 units: the scores times scale_log2
#pragma unroll
  for (int mt = 0; mt < MT; mt++) {
#pragma unroll
    for (int n = 0; n < ND; n++)
      o[mt][n][0] = o[mt][n][1] = o[mt][n][2] = o[mt][n][3] = 0.0f;
    m[mt][0] = m[mt][1] = -INFINITY;
    l[mt][0] = l[mt][1] = 0.0f;
  }

  for (int t = 0; t < tiles; t++) {
    const int kt = t * FA_BK, kw = kt + ks * KN * 8; // this warp's keys
    const int cur = FA_STAGES == 2 ? t & 1 : t % FA_STAGES; // t's stage
    uint32_t *sK = smem + cur * 2 * TILE, *sV = sK + TILE;
    if (FA_STAGES > 2) { // tile t + FA_STAGES - 1 into the stage t left
      const int nt = t + FA_STAGES - 1;
      if (nt < tiles) {
        const unsigned nK = sb + (nt % FA_STAGES) * 2 * TILE * 4;
        load_tile<DP, NT, false, BF>(nK, kp, kl, nt * FA_BK, p.kc, p.krows,
                                     ONES);
        load_tile<DP, NT, true, BF>(nK + TILE * 4, vp, vl, nt * FA_BK, p.kc,
                                    p.krows, ONES);
      }
      weft_cu_cp_async_commit();
      weft_cu_cp_async_wait<FA_STAGES - 1>(); // tile t in
    } else if (t + 1 < tiles) { // the next tile into the other stage
      const unsigned nK = sb + ((t + 1) & 1) * 2 * TILE * 4;
      load_tile<DP, NT, false, BF>(nK, kp, kl, kt + FA_BK, p.kc, p.krows, ONES);
      load_tile<DP, NT, true, BF>(nK + TILE * 4, vp, vl, kt + FA_BK, p.kc,
                                  p.krows, ONES);
      weft_cu_cp_async_commit();
      weft_cu_cp_async_wait<1>();
    } else {
      weft_cu_cp_async_wait<0>();
    }
    __syncthreads(); // this tile is in for every thread

    const int kn = kw + KN * 8; // past this warp's keys
    const bool masked = kn > p.lk || (p.causal && kn - 1 > qw);
    if (KS > 1) sK += (kw - kt) * LDW, sV += (kw - kt) * LDW;
    if (masked || !FA_SPLIT)
      fa_tile<DP, BF, MT, KN, ONES, true>(p, sK, sV, kw, qw, lane, qa, o, m, l);
    else
      fa_tile<DP, BF, MT, KN, ONES, false>(p, sK, sV, kw, qw, lane, qa, o, m,
                                           l);
    __syncthreads(); // this stage is read; the next iteration refills it
  }

  if (KS > 1) { // the key splits' results, lane by lane, into split 0's
    constexpr int PF = fa_part_floats<DP, MT>();
    float *part = (float *)smem + (size_t)rw * (KS - 1) * PF * 32 + lane;
    if (ks > 0) {
      float *x = part + (ks - 1) * PF * 32;
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
#pragma unroll
        for (int n = 0; n < ND; n++)
#pragma unroll
          for (int e = 0; e < 4; e++)
            x[((mt * ND + n) * 4 + e) * 32] = o[mt][n][e];
#pragma unroll
        for (int i = 0; i < 2; i++) {
          x[(MT * ND * 4 + 4 * mt + i) * 32] = m[mt][i];
          x[(MT * ND * 4 + 4 * mt + 2 + i) * 32] = l[mt][i];
        }
      }
    }
    __syncthreads();
    if (ks > 0) return;
#pragma unroll
    for (int k = 0; k < KS - 1; k++) {
      const float *x = part + k * PF * 32;
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        float a0[2], a1[2];
#pragma unroll
        for (int i = 0; i < 2; i++) {
          const float m1 = x[(MT * ND * 4 + 4 * mt + i) * 32];
          const float mn = fmaxf(m[mt][i], m1);
          const float mu = mn == -INFINITY ? 0.0f : mn; // no key in either
          a0[i] = weft_cu_exp2(m[mt][i] - mu);
          a1[i] = weft_cu_exp2(m1 - mu);
          m[mt][i] = mn;
          l[mt][i] =
              l[mt][i] * a0[i] + x[(MT * ND * 4 + 4 * mt + 2 + i) * 32] * a1[i];
        }
#pragma unroll
        for (int n = 0; n < ND; n++)
#pragma unroll
          for (int e = 0; e < 4; e++)
            o[mt][n][e] = o[mt][n][e] * a0[e >> 1] +
                          x[((mt * ND + n) * 4 + e) * 32] * a1[e >> 1];
      }
    }
  }

  X *op = (X *)a.o + b * a.o_s.b + h * a.o_s.h;
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int i = 0; i < 2; i++) {
      float li;
      if (ONES) { // column DP - 8: element 2i of the quad's first lane
        li = __shfl_sync(WEFT_CU_FULL_MASK, o[mt][ND - 1][2 * i], lane & ~3);
      } else {
        li = l[mt][i];
        li += __shfl_xor_sync(WEFT_CU_FULL_MASK, li, 1);
        li += __shfl_xor_sync(WEFT_CU_FULL_MASK, li, 2);
      }
      const int r = qw + 16 * mt + g + 8 * i;
      if (r >= p.lq) continue;
      const float inv = 1.0f / li;
      X *x = op + (int64_t)r * a.o_s.l;
#pragma unroll
      for (int n = 0; n < ND; n++) {
        const int c = n * 8 + c2;
        if (c < p.d) weft_cu_st(x + c, o[mt][n][2 * i] * inv);
        if (c + 1 < p.d) weft_cu_st(x + c + 1, o[mt][n][2 * i + 1] * inv);
      }
    }
}

extern "C" bool weft__cu_flash16_fits(const weft_attn_args *a) {
  return a->d == a->dv && padded_dim(a->d) != 0 && a->lk <= INT32_MAX - FA_BK;
}

extern "C" size_t weft__cu_flash16_scratch(const weft_attn_args *a) {
  return weft__cu_flash16_fits(a) ? 2 * packed_bytes(a) : 0;
}

template <int DP, bool BF, int W, int MT, int KS, bool ONES, typename X>
static cudaError_t launch_k(cudaStream_t s, fa_params p, int64_t bh) {
  constexpr int smem = fa_smem_bytes<DP, W, MT, KS>(), rows = 16 * MT * W / KS;
  static unsigned asked;
  cudaError_t e = weft_cu_smem_optin(
      (const void *)fa_kernel<DP, BF, W, MT, KS, ONES, X>, smem, &asked);
  if (e != cudaSuccess) return e;
  const unsigned qblocks = (unsigned)((p.lq + rows - 1) / rows);
  for (int64_t b0 = 0; b0 < bh; b0 += 65535) {
    p.bh0 = b0;
    dim3 grid(qblocks, (unsigned)(bh - b0 < 65535 ? bh - b0 : 65535));
    weft_cu_launch(fa_kernel<DP, BF, W, MT, KS, ONES, X>, grid, W * 32, smem, s,
                   p);
    e = cudaGetLastError();
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

// v's column DP - 8 is ones where the padding leaves 8 columns free.
static int ones_column(int d, int dp) {
  return FA_ONES && d <= dp - 8 ? dp - 8 : -1;
}

// RW warps of query rows, each with KS - 1 more on the same rows.
template <int DP, bool BF, int RW, int MT, int KS, typename X>
static cudaError_t launch(cudaStream_t s, const fa_params &p, int64_t bh) {
  if (ones_column(p.d, DP) >= 0)
    return launch_k<DP, BF, RW * KS, MT, KS, true, X>(s, p, bh);
  return launch_k<DP, BF, RW * KS, MT, KS, false, X>(s, p, bh);
}

// Each warp takes MT tiles of 16 query rows, so that a K or V fragment
// read from shared memory serves MT products: 2 where the registers allow
// (DP <= 64), else 1.  Blocks of 128 query rows share each key tile when
// that still makes two blocks per SM; else 64 rows, else 32 (short
// sequences: more blocks, and FA_KS_* warps on each warp's rows, each
// taking a part of every key tile).
template <int DP, bool BF, typename X>
static cudaError_t launch_w(cudaStream_t s, const fa_params &p, int64_t bh,
                            int sm_count) {
  constexpr int MT = DP <= 64 ? FA_MT48 : DP == 80 ? FA_MT80 : 1;
  const int64_t sms = sm_count > 0 ? sm_count : 1;
  if ((p.lq + 127) / 128 * bh >= 2 * sms)
    return launch<DP, BF, 8 / MT, MT, FA_KS_BIG, X>(s, p, bh);
  if ((p.lq + 63) / 64 * bh >= sms)
    return launch<DP, BF, 4 / MT, MT, FA_KS_MID, X>(s, p, bh);
  return launch<DP, BF, 2 / MT, MT, FA_KS_SMALL, X>(s, p, bh);
}

template <bool BF, typename X>
static cudaError_t launch_dp(cudaStream_t s, const fa_params &p, int64_t bh,
                             int sm_count) {
  switch (padded_dim(p.d)) {
  case 48: return launch_w<48, BF, X>(s, p, bh, sm_count);
  case 64: return launch_w<64, BF, X>(s, p, bh, sm_count);
  case 80: return launch_w<80, BF, X>(s, p, bh, sm_count);
  case 128: return launch_w<128, BF, X>(s, p, bh, sm_count);
  case 160: return launch_w<160, BF, X>(s, p, bh, sm_count);
  default: return cudaErrorInvalidValue;
  }
}

// Whether the kernel reads 16-bit k and v where they are: each row's d
// values in 16-byte chunks (and a tile's rows within an int's reach), d a
// multiple of 16.  At d 40 (a padded chunk, v's ones chunk read from
// fa_one16) the in-place reads of 1c613a3 took 383 us on the 64x64 map's
// self-attention where the packed copies took 213 (tools/gpu/attn_bench.sh,
// an H200), though 1-5 us less at d 80 and 160 and on 77 keys.
static bool direct(const weft_attn_args *a) {
  const weft_attn_strides *st[2] = {&a->k_s, &a->v_s};
  for (const weft_attn_strides *x : st)
    if (x->b % 8 || x->h % 8 || x->l % 8 || x->l < 0 ||
        x->l > INT32_MAX / FA_BK)
      return false;
  return a->d % 16 == 0 && weft_cu_aligned16(a->k) && weft_cu_aligned16(a->v);
}

// The kernel on k and v where they are (16-bit, direct()), else on their
// copies packed into scratch first (one launch); X how q, k, v and o are
// stored.
template <bool BF, typename X>
static cudaError_t run(cudaStream_t s, const weft_attn_args *a, fa_params p,
                       int dp, void *scratch, int sm_count) {
  const int64_t bh = a->batch * a->heads;
  static int direct_on = -1; // WEFT_CUDA_ATTN_DIRECT=0: always packed
  if (FA_DIRECT && sizeof(X) == 2 && direct(a) &&
      weft__cuda_env_on("WEFT_CUDA_ATTN_DIRECT", &direct_on)) {
    p.kh = (const uint16_t *)a->k, p.vh = (const uint16_t *)a->v;
    p.khs = a->k_s, p.vhs = a->v_s;
    p.kc = p.d / 8, p.krows = p.lk;
    return launch_dp<BF, X>(s, p, bh, sm_count);
  }
  uint16_t *kh = (uint16_t *)scratch, *vh = kh + packed_bytes(a) / 2;
  const int64_t n = 2 * bh * p.lkp * (dp / 8), rows = (int64_t)p.lkp * dp;
  weft_cu_launch(fa_pack<BF, X>, weft_cu_blocks(n, WEFT_CU_THREADS),
                 WEFT_CU_THREADS, 0, s, (const X *)a->k, a->k_s,
                 (const X *)a->v, a->v_s, a->heads, bh, p.lk, p.lkp, p.d, dp,
                 ones_column(p.d, dp), (uint4 *)kh, (uint4 *)vh);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  p.kh = kh, p.vh = vh;
  p.khs = p.vhs = weft_attn_strides{a->heads * rows, rows, dp};
  p.kc = dp / 8, p.krows = p.lkp;
  return launch_dp<BF, X>(s, p, bh, sm_count);
}

extern "C" cudaError_t weft__cu_flash16(cudaStream_t s, const weft_attn_args *a,
                                        float scale, int bf16, int act16,
                                        int sm_count, void *scratch) {
  if (!weft__cu_flash16_fits(a) || !scratch || !weft_cu_aligned16(scratch))
    return cudaErrorInvalidValue;
  fa_params p;
  p.a = *a;
  p.bh0 = 0;
  p.lq = (int)a->lq;
  p.lk = (int)a->lk;
  p.lkp = (int)padded_keys(a->lk);
  p.d = (int)a->d;
  p.scale_log2 = scale * 1.4426950408889634f;
  p.neg_q = p.scale_log2 < 0.0f;
  p.scale_log2 = fmaxf(fabsf(p.scale_log2), FLT_MIN); // -inf * 0 is NaN
  p.causal = a->causal != 0;
  const int dp = padded_dim(a->d);
#ifdef FA_HALF_ONLY // attn_bench's builds: fp16 storage only (compiles faster)
  if (bf16 || !act16) return cudaErrorNotSupported;
  return run<false, __half>(s, a, p, dp, scratch, sm_count);
#else
  if (bf16)
    return act16 ? run<true, __nv_bfloat16>(s, a, p, dp, scratch, sm_count)
                 : run<true, float>(s, a, p, dp, scratch, sm_count);
  return act16 ? run<false, __half>(s, a, p, dp, scratch, sm_count)
               : run<false, float>(s, a, p, dp, scratch, sm_count);
#endif
}

WEFT_CU_MODULE(flash16)
