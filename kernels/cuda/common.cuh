// common.cuh - device helpers shared by the kernels/cuda .cu files: launch
// sizing, the activation functions (the same formulas as kernels/cpu's
// portable path) and warp/block reductions.
#ifndef WEFT_KERNELS_CUDA_COMMON_CUH
#define WEFT_KERNELS_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

#define WEFT_CU_THREADS 256
#define WEFT_CU_FULL_MASK 0xffffffffu

// Blocks for a grid-stride loop over n items: enough to fill any GPU, few
// enough that the block count fits gridDim.x comfortably.
static inline unsigned weft_cu_blocks(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  if (b > (1 << 20)) b = 1 << 20;
  return (unsigned)(b < 1 ? 1 : b);
}

// ---- the module's anchor ----------------------------------------------------
// Each .cu file is a module of its own, loaded lazily kernel by kernel
// (CUDA_MODULE_LOADING's default): WEFT_CU_MODULE(name) at file scope gives
// it an empty kernel nothing launches and an extern "C" function returning
// that kernel's address, by which preload.c finds the module and loads all
// its kernels on a thread of their own.
#define WEFT_CU_MODULE(name)                                                   \
  static __global__ void weft_cu_anchor_kernel() {}                            \
  extern "C" const void *weft__cu_module_##name(void) {                        \
    return (const void *)weft_cu_anchor_kernel;                                \
  }

// ---- launches ---------------------------------------------------------------
// Every kernel is launched through weft_cu_launch, with programmatic
// dependent launch (sm_90) unless WEFT_CUDA_PDL=0: its blocks may be
// scheduled once every block of the kernel before it in the stream (or
// graph) has started, and wait in weft_cu_pdl_wait, every kernel's first
// statement, for that kernel's end and writes -- before reading or writing
// anything -- then let the next kernel's blocks be scheduled in turn.  So
// the launch of each kernel overlaps the last wave of the one before
// (tools/gpu/graph_gap: 0.3 us between kernels in a graph against 0.64).
// Kernels that follow ours without the attribute (cuBLAS's, cuDNN's) wait
// for the whole of ours as always, and ours after theirs start at their
// end.

// griddepcontrol.wait, then .launch_dependents: both return at once for a
// kernel launched without the attribute.
__device__ __forceinline__ void weft_cu_pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Whether launches ask for programmatic dependent launch (WEFT_CUDA_PDL,
// read once; on unless 0).
static inline bool weft__cu_pdl(void) {
  static int on = -1;
  return weft__cuda_env_on("WEFT_CUDA_PDL", &on);
}

template <typename... P, typename... A>
static inline cudaError_t weft_cu_launch(void (*kernel)(P...), dim3 grid,
                                         dim3 block, size_t smem,
                                         cudaStream_t s, A... args) {
  cudaLaunchAttribute at[1];
  at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  at[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cfg.attrs = at;
  cfg.numAttrs = weft__cu_pdl() ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, kernel, static_cast<P>(args)...);
}

// p 16-byte aligned (float4 loads and stores, cp.async of 16 bytes).
static inline bool weft_cu_aligned16(const void *p) {
  return ((uintptr_t)p & 15) == 0;
}

// ---- activation storage
// ------------------------------------------------------ Activations are float,
// __half or __nv_bfloat16 (cuda.h's weft_cuda_set_act_dtype); kernels do their
// math in fp32 and round once at each store (round to nearest even, as
// kernels/cpu's conversions).
__device__ __forceinline__ float weft_cu_ld(const float *p) {
  return *p;
}
__device__ __forceinline__ float weft_cu_ld(const __half *p) {
  return __half2float(*p);
}
__device__ __forceinline__ float weft_cu_ld(const __nv_bfloat16 *p) {
  return __bfloat162float(*p);
}
__device__ __forceinline__ void weft_cu_st(float *p, float v) {
  *p = v;
}
__device__ __forceinline__ void weft_cu_st(__half *p, float v) {
  *p = __float2half_rn(v);
}
__device__ __forceinline__ void weft_cu_st(__nv_bfloat16 *p, float v) {
  *p = __float2bfloat16_rn(v);
}

// Four consecutive values at p, which is 4-element aligned (16 bytes for
// float, 8 for the 16-bit types: weft_cu_aligned4).
__device__ __forceinline__ float4 weft_cu_ld4(const float *p) {
  return *reinterpret_cast<const float4 *>(p);
}
template <typename H>
__device__ __forceinline__ float4 weft_cu_ld4_16(const H *p) {
  const uint2 u = *reinterpret_cast<const uint2 *>(p);
  H h[4];
  memcpy(h, &u, sizeof u);
  return make_float4(weft_cu_ld(&h[0]), weft_cu_ld(&h[1]), weft_cu_ld(&h[2]),
                     weft_cu_ld(&h[3]));
}
__device__ __forceinline__ float4 weft_cu_ld4(const __half *p) {
  return weft_cu_ld4_16(p);
}
__device__ __forceinline__ float4 weft_cu_ld4(const __nv_bfloat16 *p) {
  return weft_cu_ld4_16(p);
}
__device__ __forceinline__ void weft_cu_st4(float *p, float4 v) {
  *reinterpret_cast<float4 *>(p) = v;
}
template <typename H>
__device__ __forceinline__ void weft_cu_st4_16(H *p, float4 v) {
  H h[4];
  weft_cu_st(&h[0], v.x), weft_cu_st(&h[1], v.y);
  weft_cu_st(&h[2], v.z), weft_cu_st(&h[3], v.w);
  uint2 u;
  memcpy(&u, h, sizeof u);
  *reinterpret_cast<uint2 *>(p) = u;
}
__device__ __forceinline__ void weft_cu_st4(__half *p, float4 v) {
  weft_cu_st4_16(p, v);
}
__device__ __forceinline__ void weft_cu_st4(__nv_bfloat16 *p, float4 v) {
  weft_cu_st4_16(p, v);
}

// WEFT_CU_VEC(T) consecutive values (16 bytes: 8 16-bit values or 4
// floats) at p, which is 16-byte aligned, widened to float / rounded from
// float one by one as weft_cu_ld / weft_cu_st do.
#define WEFT_CU_VEC(T) ((int)(16 / sizeof(T)))
template <typename T>
__device__ __forceinline__ void weft_cu_ld16(const T *p, float *v) {
  const uint4 u = *reinterpret_cast<const uint4 *>(p);
  T h[16 / sizeof(T)];
  memcpy(h, &u, sizeof u);
#pragma unroll
  for (int i = 0; i < (int)(16 / sizeof(T)); i++)
    v[i] = weft_cu_ld(&h[i]);
}
template <typename T>
__device__ __forceinline__ void weft_cu_st16(T *p, const float *v) {
  T h[16 / sizeof(T)];
#pragma unroll
  for (int i = 0; i < (int)(16 / sizeof(T)); i++)
    weft_cu_st(&h[i], v[i]);
  uint4 u;
  memcpy(&u, h, sizeof u);
  *reinterpret_cast<uint4 *>(p) = u;
}

// V values at p (V = 8: 16-byte aligned, 16 bytes of 16-bit values or
// two of floats; V = 1: one value), widened / rounded one by one.
template <typename T, int V>
__device__ __forceinline__ void weft_cu_ldv(const T *p, float *v) {
  if constexpr (V == 8 && sizeof(T) == 2) {
    weft_cu_ld16(p, v);
  } else if constexpr (V == 8) {
    weft_cu_ld16(p, v);
    weft_cu_ld16(p + 4, v + 4);
  } else {
#pragma unroll
    for (int i = 0; i < V; i++)
      v[i] = weft_cu_ld(p + i);
  }
}

template <typename T, int V>
__device__ __forceinline__ void weft_cu_stv(T *p, const float *v) {
  if constexpr (V == 8 && sizeof(T) == 2) {
    weft_cu_st16(p, v);
  } else if constexpr (V == 8) {
    weft_cu_st16(p, v);
    weft_cu_st16(p + 4, v + 4);
  } else {
#pragma unroll
    for (int i = 0; i < V; i++)
      weft_cu_st(p + i, v[i]);
  }
}

// p aligned for weft_cu_ld4/st4 of T.
template <typename T> static inline bool weft_cu_aligned4(const void *p) {
  return ((uintptr_t)p % (4 * sizeof(T))) == 0;
}

// Runs the statement(s) with T the storage type of weft_dtype dt
// (WEFT_F16 __half, WEFT_BF16 __nv_bfloat16, anything else float).
#define WEFT_CU_WITH_TYPE(dt, T, ...)                                          \
  do {                                                                         \
    switch (dt) {                                                              \
    case WEFT_F16: {                                                           \
      typedef __half T;                                                        \
      __VA_ARGS__;                                                             \
    } break;                                                                   \
    case WEFT_BF16: {                                                          \
      typedef __nv_bfloat16 T;                                                 \
      __VA_ARGS__;                                                             \
    } break;                                                                   \
    default: {                                                                 \
      typedef float T;                                                         \
      __VA_ARGS__;                                                             \
    } break;                                                                   \
    }                                                                          \
  } while (0)

// Lets kernel fn take `bytes` of dynamic shared memory, above the 48 KiB
// every kernel may take, on the current device: asked once per device
// (*asked: a bit per device, the caller's static; the call is idempotent,
// so two threads asking at once do no harm).
static inline cudaError_t weft_cu_smem_optin(const void *fn, size_t bytes,
                                             unsigned *asked) {
  if (bytes <= 48 * 1024) return cudaSuccess;
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  const unsigned bit = dev < 32 ? 1u << dev : 0u;
  if (bit && (__atomic_load_n(asked, __ATOMIC_RELAXED) & bit))
    return cudaSuccess;
  e = cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           (int)bytes);
  if (e == cudaSuccess) __atomic_fetch_or(asked, bit, __ATOMIC_RELAXED);
  return e;
}

// kernels/cpu's act1 (vec_portable.c) in device code.  CUDA's expf, erff
// and tanhf are within 2 ulp of glibc's.
__device__ __forceinline__ float weft_cu_act1(int act, float x) {
  switch (act) {
  case WEFT_ACT_SILU: return x / (1.0f + expf(-x));
  case WEFT_ACT_GELU_ERF:
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752440f));
  case WEFT_ACT_GELU_TANH: {
    const float k = 0.7978845608028654f; // sqrt(2/pi)
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
  }
  case WEFT_ACT_QUICK_GELU: return x / (1.0f + expf(-1.702f * x));
  default: return x;
  }
}

// act1 of a value that is stored in T.  Stored in 16 bits, SiLU takes
// __expf and __fdividef (5 instructions where expf and the IEEE division
// take about 22; within 2 + 1.2 |x| ulp of fp32, far below the 16-bit
// rounding that follows: it moves about one stored value in 250 by one
// unit): the group norm + SiLU before each of SD's convolutions was bound
// by that arithmetic (the VAE's normalized band moves took 36.7 us against
// 24 for the move alone).  Every kernel that applies an activation to
// values stored in T takes this one, so the fused prologue and the group
// norm op still give the same bits.
template <typename T>
__device__ __forceinline__ float weft_cu_act1s(int act, float x) {
  if (sizeof(T) == 2 && act == WEFT_ACT_SILU)
    return __fdividef(x, 1.0f + __expf(-x));
  return weft_cu_act1(act, x);
}

template <typename T> __device__ __forceinline__ T weft_cu_warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(WEFT_CU_FULL_MASK, v, o);
  return v;
}

__device__ __forceinline__ float weft_cu_warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1)
    v = fmaxf(v, __shfl_xor_sync(WEFT_CU_FULL_MASK, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every
// thread gets the result.  `red` is 32 elements of shared memory, free
// again when this returns.
template <typename T>
__device__ __forceinline__ T weft_cu_block_sum(T v, T *red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  v = weft_cu_warp_sum(v);
  __syncthreads(); // red may still be read by a previous reduction
  if (lane == 0) red[warp] = v;
  __syncthreads();
  T t = lane < warps ? red[lane] : T(0);
  return weft_cu_warp_sum(t);
}

__device__ __forceinline__ float weft_cu_block_max(float v, float *red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  v = weft_cu_warp_max(v);
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float t = lane < warps ? red[lane] : -INFINITY;
  return weft_cu_warp_max(t);
}

#endif
