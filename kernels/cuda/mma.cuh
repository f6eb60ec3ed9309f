// mma.cuh - tensor-core and copy pieces for 16-bit kernels (flash16.cu):
// rounding to 16 bits, mma.m16n8k16 with fp32 accumulators, ldmatrix,
// cp.async and the SFU's exp2.
//
// Fragment layout of mma.m16n8k16.row.col (lane = 4 g + q, c2 = 2 q):
//   A (16x16, row-major): a[0] rows g, columns c2..c2+1; a[1] row g + 8;
//                         a[2], a[3] the same rows, columns + 8
//   B (16x8, k x n):      b0 k = c2..c2+1, column g; b1 k + 8
//   C (16x8, fp32):       c[0..1] row g, columns c2..c2+1; c[2..3] row g + 8
// so an accumulator tile pair (columns 0-7 and 8-15) is already laid out
// as the A operand of a following product.
#ifndef WEFT_KERNELS_CUDA_MMA_CUH
#define WEFT_KERNELS_CUDA_MMA_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

// v rounded to bf16 (BF) or fp16, its bits.
template <bool BF> __device__ __forceinline__ uint16_t weft_cu_to16(float v) {
  if (BF) return __bfloat16_as_ushort(__float2bfloat16_rn(v));
  return __half_as_ushort(__float2half_rn(v));
}

// lo and hi rounded to 16 bits, packed (lo in the low half): one
// cvt.rn.{f16,bf16}x2.f32, the bits of two roundings to nearest.
template <bool BF>
__device__ __forceinline__ uint32_t weft_cu_pack2(float lo, float hi) {
  if (BF) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t *>(&v);
  }
  const __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t *>(&v);
}

// c += a b: m16n8k16, 16-bit a and b (BF: bf16, else fp16), fp32 c.
template <bool BF>
__device__ __forceinline__ void
weft_cu_mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  if (BF)
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0),
                   "r"(b1));
  else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0),
                   "r"(b1));
}

// The same product into c from zero (c = A B; no registers to clear).
template <bool BF>
__device__ __forceinline__ void
weft_cu_mma16816_0(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  if (BF)
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%10,%10,%10};\n"
                 : "=f"(c[0]), "=f"(c[1]), "=f"(c[2]), "=f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1),
                   "f"(0.0f));
  else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%10,%10,%10};\n"
                 : "=f"(c[0]), "=f"(c[1]), "=f"(c[2]), "=f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1),
                   "f"(0.0f));
}

// The B operand (k = 16 rows of a row-major 16-bit matrix in shared
// memory, n = 8 of its columns), transposed by ldmatrix: lanes 0-15 give
// the addresses of the 16 rows (16-byte aligned), b0 rows 0-7, b1 8-15.
__device__ __forceinline__ void
weft_cu_ldsm_x2_trans(uint32_t &b0, uint32_t &b1, const void *row) {
  const unsigned a = (unsigned)__cvta_generic_to_shared(row);
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(b0), "=r"(b1)
               : "r"(a));
}

// The B operand of m16n8k16 from a row-major [n][k] 16-bit matrix in
// shared memory (k contiguous, as K's rows are): lanes 0-7 give the
// addresses of the 8 rows at column k0, lanes 8-15 at k0 + 8 (16-byte
// aligned); b0 holds k0..k0+7, b1 k0+8..k0+15.
__device__ __forceinline__ void weft_cu_ldsm_x2(uint32_t &b0, uint32_t &b1,
                                                const void *row) {
  const unsigned a = (unsigned)__cvta_generic_to_shared(row);
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(b0), "=r"(b1)
               : "r"(a));
}

// 16 bytes from global to shared memory without a register stop
// (cp.async, L2 only), to a shared address: the first n bytes (16 or 0)
// from src and zeros after them (src is not read where n is 0); and the
// group fences around it.
__device__ __forceinline__ void
weft_cu_cp_async16_zs(unsigned dst, const void *src, unsigned n) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst),
               "l"(src), "r"(n));
}

__device__ __forceinline__ void weft_cu_cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::);
}

// Waits until at most N of this thread's committed groups are in flight.
template <int N> __device__ __forceinline__ void weft_cu_cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// 2^x on the special-function unit (ex2.approx, flush to zero): a relative
// error near 2^-22, 2^-inf = +0.
__device__ __forceinline__ float weft_cu_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// 2^lo and 2^hi in fp16, packed (lo in the low half): the arguments
// rounded to fp16, then one ex2.approx.f16x2 (a relative error near
// 2^-9.9).
__device__ __forceinline__ uint32_t weft_cu_exp2_h2(float lo, float hi) {
  uint32_t x = weft_cu_pack2<false>(lo, hi), y;
  asm("ex2.approx.f16x2 %0, %1;\n" : "=r"(y) : "r"(x));
  return y;
}

#endif
