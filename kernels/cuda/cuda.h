/* cuda.h - weft's CUDA backend: the weft_backend vtable of kernels/backend.h
 * over one device and one CUDA stream, plus the few controls the CPU backend
 * has no use for (TF32, convolution algorithm, allocator statistics).
 *
 * Buffers from buffer_alloc are device memory.  Every op takes device
 * pointers, validates its arguments on the host (same WEFT_EINVAL rules as
 * kernels/cpu), queues its kernels on the backend's stream and returns
 * without waiting; synchronize() waits and reports an asynchronous failure.
 * buffer_copy with a host side (HOST_TO_DEVICE, DEVICE_TO_HOST) is
 * synchronous: the host buffer may be reused or read when it returns;
 * DEVICE_TO_DEVICE is queued on the stream.
 *
 * Numerics: activations are fp32 in memory unless the backend keeps them
 * in 16 bits (weft_cuda_set_act_dtype, below).  In FP32 precision every op
 * computes in fp32, TF32 off unless asked for, so results match kernels/cpu
 * to float rounding (see kernels/README.md's CUDA section).  In FP16/BF16
 * precision (the default; weft_cuda_set_precision, WEFT_PRECISION) the
 * matrix products round their operands to 16 bits and accumulate in fp32
 * on tensor cores; weights may be stored as 16-bit (weft_cuda_mark_half).
 *
 * Memory: a caching allocator sits under buffer_alloc/free.  A freed block
 * returns to the backend's cache (not to the driver) and is handed out again
 * for a later request of about its size; because all work runs on one
 * stream, reuse is ordered after every queued use of the block.  Scratch the
 * ops need (im2col columns, cuDNN workspace, norm statistics) comes from the
 * same cache, so a steady-state loop makes no cudaMalloc at all:
 * weft_cuda_mem_stats counts the cudaMalloc/cudaFree calls. */
#ifndef WEFT_KERNELS_CUDA_H
#define WEFT_KERNELS_CUDA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How conv2d runs.  AUTO: a convolution with at most 8 output channels
 * (conv_out) by the direct kernel (conv_direct.cu); others by cuDNN when
 * weft was built with it and the shape suits it (symmetric padding; in
 * FP16/BF16 precision also channel counts that are multiples of 8 and an
 * output map larger than 16x16, and the output is rounded to 16 bits
 * before it is widened to fp32), else IM2COL.  IM2COL: an own im2col
 * kernel + cuBLAS SGEMM, or 16-bit columns + cuBLASLt with an fp32 output
 * in FP16/BF16 precision (1x1 stride-1 convolutions skip the im2col).
 * CUDNN: cuDNN where it can, IM2COL where it cannot (asymmetric padding,
 * no cuDNN).  A backend made with AUTO takes the environment's
 * WEFT_CUDA_CONV (auto, im2col or cudnn) when it is set. */
typedef enum weft_cuda_conv_algo {
  WEFT_CUDA_CONV_AUTO = 0,
  WEFT_CUDA_CONV_IM2COL,
  WEFT_CUDA_CONV_CUDNN
} weft_cuda_conv_algo;

/* Compute precision of the matrix products (linear, gemm, conv2d and the
 * two products of attention).  Norms, activations and elementwise ops
 * always compute in fp32, whatever the activations are stored in (fp32,
 * or 16-bit: weft_cuda_set_act_dtype).  FP32: fp32 products (TF32 only if
 * asked for).  FP16 / BF16: the operands are rounded to 16 bits and
 * multiplied on tensor cores with fp32 accumulation, the output written
 * in the activations' dtype.  AUTO (options only): the
 * environment variable WEFT_PRECISION (fp32, fp16 or bf16) when set, else
 * FP16. */
typedef enum weft_cuda_precision {
  WEFT_CUDA_PRECISION_AUTO = 0,
  WEFT_CUDA_FP32 = 1,
  WEFT_CUDA_FP16 = 2,
  WEFT_CUDA_BF16 = 3
} weft_cuda_precision;

typedef struct weft_cuda_options {
  uint32_t struct_size; /* sizeof(weft_cuda_options) of the caller */
  int device;           /* CUDA device ordinal */
  /* Non-zero lets cuBLAS/cuDNN use TF32 tensor cores for fp32 products
   * (about 1e-3 relative error instead of about 1e-6).  Default 0. */
  int allow_tf32;
  weft_cuda_conv_algo conv_algo;
  weft_cuda_precision precision; /* default AUTO (WEFT_PRECISION, else FP16) */
} weft_cuda_options;

/* Defaults: device 0, TF32 off, AUTO convolutions, AUTO precision. */
void weft_cuda_options_init(weft_cuda_options *opt);

/* true when the CUDA runtime sees at least one device (false without a
 * driver, without a GPU, or inside a sandbox that hides it). */
bool weft_cuda_available(void);
/* Number of CUDA devices (0 when none or no driver). */
int weft_cuda_device_count(void);

/* A backend on device `device`.  Returns NULL when that device cannot be
 * used, after printing why to stderr ("weft: CUDA device 0: no CUDA-capable
 * device is detected").  (transfer full: release with weft_backend_free) */
weft_backend *weft_backend_cuda_new(int device);

/* As weft_backend_cuda_new with options (NULL: defaults); on failure writes
 * the reason into err (err_size bytes, may be 0) instead of printing it.
 * (transfer full: release with weft_backend_free) */
weft_backend *weft_backend_cuda_new_ex(const weft_cuda_options *opt, char *err,
                                       size_t err_size);

/* true for a backend made by weft_backend_cuda_new*. */
bool weft_backend_is_cuda(const weft_backend *be);

/* Changes the options of a live backend (between ops). */
int weft_cuda_set_tf32(weft_backend *be, bool allow);
int weft_cuda_set_conv_algo(weft_backend *be, weft_cuda_conv_algo algo);
/* Which way conv2d would run these arguments: "gemm" (1x1 stride 1, no
 * padding), "direct" (few output channels), "cudnn" (FP32 precision),
 * "cudnn16" (cuDNN on 16-bit copies of x and y, FP16/BF16 precision),
 * "cudnn_nhwc" (a channels-last weight, w_hwc: cuDNN's NHWC kernels on
 * channels-last bands of x and y, FP16/BF16 precision), "nhwc_splitk"
 * (the same bands on the smallest maps, the product split over K on
 * cuBLASLt instead of cuDNN's) or "im2col"; NULL
 * for invalid arguments or a non-CUDA backend.  (transfer none: a static
 * string) */
const char *weft_cuda_conv2d_path(weft_backend *be, const weft_conv2d_args *a);
/* Bounds the scratch one op may take beside its operands (0: no bound,
 * the default): cuDNN's 16-bit convolutions, whose copies of x and y
 * grow with the image, are taken only while their scratch is at most a
 * quarter of it, else the convolution goes through im2col's column
 * blocks.  For budgets (--vram) that keep this much for scratch.  0, or
 * WEFT_EINVAL. */
int weft_cuda_set_scratch_limit(weft_backend *be, size_t bytes);
/* cuDNN's 16-bit convolutions of 16-bit activations whose workspace
 * (their transposed copies of x and y: 257 MiB for the VAE's 256x512x512
 * 3x3) passes `bytes` run in bands of output rows whose workspaces fit it
 * (WEFT_CUDA_CONV_BAND_BYTES by default, 48 MiB; 0: never in bands).
 * 0, or WEFT_EINVAL. */
int weft_cuda_set_conv_band_bytes(weft_backend *be, size_t bytes);
/* How many row bands conv2d would run these arguments in (1: one piece;
 * see weft_cuda_set_conv_band_bytes); 0 for invalid arguments or a
 * non-CUDA backend. */
int weft_cuda_conv2d_bands(weft_backend *be, const weft_conv2d_args *a);
/* Whether convolutions with more than one tap run fastest here with their
 * weights channels last (weft_conv2d_args.w_hwc: cuDNN's NHWC kernels):
 * FP16/BF16 precision with cuDNN, the conv way not forced to im2col.  A
 * model keeps its device copies so when this says so (nodes/sd). */
bool weft_cuda_conv_hwc(weft_backend *be);
/* The dtype the backend keeps activations in (backend.h, "Activations"):
 * WEFT_F32 (the default), or in FP16/BF16 precision that 16-bit type, so
 * that every op reads and writes half the bytes and the products take
 * their operands as they are (no rounding pass before each, no widening
 * after).  Values then round to 16 bits at every op's output, as in a
 * torch fp16 model.  Set it before any activation buffer exists; the
 * precision cannot change while it is 16-bit.  0, or WEFT_EINVAL (a
 * 16-bit type other than the compute dtype). */
int weft_cuda_set_act_dtype(weft_backend *be, weft_dtype dt);
/* What an application runs models with: 16-bit activations in FP16/BF16
 * precision, fp32 ones in FP32, unless the environment variable
 * WEFT_CUDA_ACT says "fp32" (or "16": the default).  0, or WEFT_EINVAL for
 * another value, the reason in weft_cuda_last_error. */
int weft_cuda_set_act_auto(weft_backend *be);
/* Attention in FP16/BF16 precision: the fused kernel (flash16.cu: scores in
 * registers; k and v packed to 16 bits in scratch) where the head dim
 * allows it (d == dv <= 160), else two cuBLASLt products around an fp32
 * softmax (attention_half.c).
 * false forces the latter everywhere (tests compare the two).  Default
 * true. */
int weft_cuda_set_fused_attention(weft_backend *be, bool on);
/* Attention with 16-bit activations on cuDNN's fused flash-attention
 * engine (attn_cudnn.c) where cuDNN has one for the shape (head dim a
 * multiple of 8, no causal mask, 16-byte aligned rows), before the fused
 * kernel above; false keeps the latter.  Default true unless the
 * environment variable WEFT_CUDA_ATTN_CUDNN is "0". */
int weft_cuda_set_cudnn_attention(weft_backend *be, bool on);
/* Which way attention would run these arguments: "cudnn", "fused",
 * "cublas" (16-bit precision) or "fp32"; NULL for invalid arguments or a
 * non-CUDA backend.  Asking may make cuDNN's plan for the shape.
 * (transfer none: a static string) */
const char *weft_cuda_attention_path(weft_backend *be, const weft_attn_args *a);
/* Starts loading cuDNN (its handle, a second or so of library loading) on
 * a thread of its own, so that it overlaps what the caller does next (a
 * checkpoint's load); the first convolution that wants cuDNN waits for it.
 * Without this the first such convolution loads it.  Nothing without
 * cuDNN or when it is loaded already.  It also starts cuBLASLt's
 * first-plan set-up on a second thread (WEFT_CUDA_LT_WARM=0: not): the
 * text encoder's first products then find it done.  0, or WEFT_EINVAL. */
int weft_cuda_start_cudnn(weft_backend *be);
/* true when weft was built with cuDNN and its handle came up. */
bool weft_cuda_have_cudnn(const weft_backend *be);

/* Sets the precision of the matrix products (FP32, FP16 or BF16; not
 * AUTO) for the ops queued from now on.  0, or WEFT_EINVAL. */
int weft_cuda_set_precision(weft_backend *be, weft_cuda_precision p);
/* The backend's precision (never AUTO); WEFT_CUDA_FP32 for a non-CUDA
 * backend. */
weft_cuda_precision weft_cuda_get_precision(const weft_backend *be);
/* "fp32", "fp16", "bf16" ("?" for anything else).  (transfer none) */
const char *weft_cuda_precision_name(weft_cuda_precision p);

/* 16-bit products run so far: *lt on cublasLtMatmul, *fallback on
 * cublasGemmStridedBatchedEx (where cuBLASLt had no algorithm, e.g. for
 * operands only 2-byte aligned).  0, or WEFT_EINVAL for a non-CUDA
 * backend. */
int weft_cuda_gemm16_counts(const weft_backend *be, uint64_t *lt,
                            uint64_t *fallback);

/* Half weights.  Registers the device range [buf, buf + bytes) as holding
 * 16-bit weights: a pointer passed to linear (weight, bias), conv2d
 * (weight, bias) or gemm (a, b) that lies inside a registered range is
 * read as 16-bit elements starting there (element i of w at
 * ((const uint16_t *)w)[i]), although the API types it const float *.
 * No other operand is looked up: norm parameters, embeddings and
 * activations must stay fp32.  The 16-bit format is the backend's
 * precision at the time of the call (FP16: IEEE half, BF16: bfloat16) and
 * stays with the range if the precision changes later (the weights are then
 * converted on the fly).  Marking needs a 16-bit precision (WEFT_EINVAL in
 * FP32 mode), a range that overlaps no registered one, and bytes > 0.
 * Lookups are a binary search over the sorted ranges.  The backend does not
 * own buf: unmark before freeing it.  0, or WEFT_EINVAL / WEFT_ENOMEM. */
int weft_cuda_mark_half(weft_backend *be, const void *buf, size_t bytes);
/* As weft_cuda_mark_half with an explicit format, WEFT_F16 or WEFT_BF16,
 * whatever the precision. */
int weft_cuda_mark_half_as(weft_backend *be, const void *buf, size_t bytes,
                           weft_dtype dtype);
/* Removes the range that starts at buf; 0, or WEFT_EINVAL when none does. */
int weft_cuda_unmark_half(weft_backend *be, const void *buf);
/* Registers h16 as a 16-bit copy (dtype WEFT_F16 or WEFT_BF16) of the
 * fp32 values in [f32, f32 + bytes): a product's fp32 bias found there is
 * read from the copy where the product wants a bias of that type
 * (cuBLASLt's epilogue with a 16-bit output), instead of being rounded
 * into scratch each call.  The caller keeps the copy equal to the fp32
 * values rounded to dtype (weft's convert) whenever either changes, and
 * unmarks before freeing either; the ranges of mirrors are disjoint.  0,
 * or WEFT_EINVAL / WEFT_ENOMEM. */
int weft_cuda_mark_mirror(weft_backend *be, const float *f32, size_t bytes,
                          const void *h16, weft_dtype dtype);
/* Removes the mirror whose fp32 range starts at f32; 0, or WEFT_EINVAL. */
int weft_cuda_unmark_mirror(weft_backend *be, const float *f32);
/* The 16-bit format of the registered range holding p (WEFT_F16 or
 * WEFT_BF16), or WEFT_F32 when p lies in none. */
weft_dtype weft_cuda_half_dtype(const weft_backend *be, const void *p);

typedef struct weft_cuda_mem_stats {
  uint64_t n_malloc;  /* cudaMalloc calls since the backend was made */
  uint64_t n_free;    /* cudaFree calls */
  size_t reserved;    /* bytes held from the driver (in use + cached) */
  size_t in_use;      /* bytes handed out and not yet freed */
  size_t peak_in_use; /* high-water mark of in_use */
  size_t peak_reserved;
} weft_cuda_mem_stats;

/* Fills *st (0, or WEFT_EINVAL for a non-CUDA backend). */
int weft_cuda_mem_stats_get(const weft_backend *be, weft_cuda_mem_stats *st);

/* What the backend's first calls of each shape cost on the host: plans
 * made (cache misses) and the seconds spent making them, and the wait for
 * cuDNN's start (weft_cuda_start_cudnn's thread) -- a fresh process's
 * first image pays these, a warm one none. */
typedef struct weft_cuda_plan_stats {
  uint64_t cudnn_plans, lt_plans;
  double cudnn_s, lt_s, cudnn_wait_s;
  /* cuDNN attention plans taken from their files (WEFT_CACHE_DIR) and
   * written there: of cudnn_plans */
  uint64_t cudnn_kept, cudnn_stored;
  /* weft's kernels loaded ahead of their first launch (preload.c), and
   * the seconds that took on its thread (0 until it ends) */
  uint64_t preloaded;
  double preload_s;
  /* the backend's start: the device, its context, stream and limits; the
   * cuBLASLt handle; the cuBLAS handle, made on first use (0 until then) */
  double start_context_s, start_lt_s, start_blas_s;
} weft_cuda_plan_stats;
/* Fills *st (0, or WEFT_EINVAL for a non-CUDA backend). */
int weft_cuda_plan_stats_get(const weft_backend *be, weft_cuda_plan_stats *st);
/* cudaMalloc calls so far (0 for a non-CUDA backend). */
uint64_t weft_cuda_malloc_count(const weft_backend *be);
/* Waits for the stream and returns every cached (free) block to the
 * driver.  Blocks in use stay. */
int weft_cuda_trim(weft_backend *be);

/* Per-op GPU time (issue 9's profile).  weft_cuda_profile_start: from now
 * on every compute op and copy is bracketed by two events on the stream
 * and timed, summed by op and shape (a second start keeps counting).
 * weft_cuda_profile_report: waits for the stream, writes to f (if not
 * NULL) a markdown report titled title -- GPU time by op, then the
 * max_rows op/shape rows that took longest, with TFLOP/s for the products;
 * with wall_s > 0 the share of that wall time spent outside ops (launch
 * gaps) -- and stops profiling.  0, or WEFT_EINVAL when not profiling. */
int weft_cuda_profile_start(weft_backend *be);
int weft_cuda_profile_report(weft_backend *be, FILE *f, const char *title,
                             double wall_s, int max_rows);

/* The message of the backend's last failure ("" if none): which CUDA,
 * cuBLAS or cuDNN call failed and its own error string.  (transfer none:
 * valid until the next op on this backend) */
const char *weft_cuda_last_error(const weft_backend *be);
/* The backend's stream as a cudaStream_t (void * keeps this header free of
 * CUDA's), for events and host callbacks of an executor.  (transfer none) */
void *weft_cuda_stream(const weft_backend *be);
/* The device's name ("NVIDIA H200").  (transfer none) */
const char *weft_cuda_device_name(const weft_backend *be);

#ifdef __cplusplus
}
#endif
#endif
