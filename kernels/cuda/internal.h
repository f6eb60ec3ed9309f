/* internal.h - private to kernels/cuda: the backend context, the caching
 * allocator, and the kernel launchers the .cu files export to the C side.
 * Included from C (backend, allocator, GEMM/conv dispatch) and from CUDA C++
 * (the kernels), so it names CUDA types only through cuda_runtime_api.h. */
#ifndef WEFT_KERNELS_CUDA_INTERNAL_H
#define WEFT_KERNELS_CUDA_INTERNAL_H

#include <cuda_runtime_api.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "kernels/cuda/cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Caching allocator (alloc_cuda.c) ------------------------------------ */

typedef struct weft__cuda_block {
  void *ptr;
  size_t size; /* rounded size the block was made with */
} weft__cuda_block;

typedef struct weft__cuda_cache {
  pthread_mutex_t mu;
  weft__cuda_block *free_blocks; /* cached, ready for reuse */
  size_t n_free_blocks, cap_free_blocks;
  weft__cuda_block *live; /* handed out */
  size_t n_live, cap_live;
  weft_cuda_mem_stats st;
} weft__cuda_cache;

/* ---- Context ---------------------------------------------------------------
 */

/* A registered range of 16-bit weights [lo, hi) (weft_cuda_mark_half), or
 * of fp32 values with a 16-bit copy at `to` (weft_cuda_mark_mirror). */
typedef struct weft__cuda_range {
  uintptr_t lo, hi;
  weft_dtype dtype; /* WEFT_F16 or WEFT_BF16 */
  uintptr_t to;     /* a mirror's copy; 0 for 16-bit weights */
} weft__cuda_range;

/* The half-weight ranges, sorted by lo, disjoint. */
typedef struct weft__cuda_ranges {
  pthread_mutex_t mu;
  weft__cuda_range *r;
  size_t n, cap;
} weft__cuda_ranges;

/* Per-op timing (profile_cuda.c), NULL unless weft_cuda_profile_start. */
typedef struct weft__cuda_prof weft__cuda_prof;

typedef struct weft__cuda_ctx {
  int device;
  char device_name[256];
  int sm_count;
  int cc;            /* compute capability, major * 10 + minor */
  size_t smem_optin; /* max dynamic shared memory per block */
  cudaStream_t stream;
  void *blas;        /* cublasHandle_t, made on first use (weft__cuda_blas) */
  void *cudnn;       /* cudnnHandle_t, NULL without cuDNN or before first use */
  bool cudnn_tried;  /* weft__cudnn_ensure ran (made it, or found none) */
  void *cudnn_plans; /* conv_cudnn.c's algorithm cache (with the handle) */
  pthread_t cudnn_thread; /* weft_cuda_start_cudnn's, while cudnn_starting */
  bool cudnn_starting;
  pthread_t lt_warm_thread; /* weft__cuda_lt_warm's, while lt_warming */
  bool lt_warming;
  pthread_t preload_thread; /* preload.c's, while preloading */
  bool preloading, preloaded;
  void *lt;       /* cublasLtHandle_t */
  void *lt_plans; /* gemm_lt.c's plan cache, made on first use */
  void *lt_ws;    /* cuBLASLt workspace (from the cache, made on first use) */
  size_t lt_ws_bytes;
  uint64_t n_lt, n_lt_fallback; /* 16-bit products on cuBLASLt / GemmEx */
  weft_cuda_plan_stats plans;   /* under plans_mu: what planning cost */
  pthread_mutex_t plans_mu;
  bool tf32;
  weft_cuda_conv_algo conv_algo;
  bool attn_unfused;    /* weft_cuda_set_fused_attention(be, false) */
  bool attn_cudnn_off;  /* weft_cuda_set_cudnn_attention(be, false) */
  void *cudnn_attn;     /* attn_cudnn.c's plan cache (with the handle) */
  unsigned *gn_counters; /* WEFT_CU_GN_COUNTERS zeros (norm.cu's) */
  size_t scratch_limit; /* weft_cuda_set_scratch_limit; 0: none */
  size_t band_bytes;    /* weft_cuda_set_conv_band_bytes */
  void *op_scratch;     /* weft__cuda_scratch's block */
  size_t op_scratch_bytes;
  uint64_t scratch_gen; /* op_scratch remade (graphs captured before refuse) */
  weft_cuda_precision precision; /* never AUTO */
  weft_dtype act; /* activations' dtype: WEFT_F32 or the compute dtype */
  weft__cuda_ranges half;
  weft__cuda_ranges mirror; /* fp32 ranges with 16-bit copies */
  weft__cuda_cache cache;
  weft__cuda_prof *prof;
  char err[512]; /* last failure, for weft_cuda_last_error */
} weft__cuda_ctx;

#define WEFT__CUDA_CTX(be) ((weft__cuda_ctx *)(be)->ctx)

/* Seconds on CLOCK_MONOTONIC. */
static inline double weft__cuda_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Adds one plan's (or the wait's) seconds to ctx->plans. */
typedef enum weft__cuda_plan_kind {
  WEFT__PLAN_CUDNN,      /* a cuDNN plan made */
  WEFT__PLAN_LT,         /* a cuBLASLt one */
  WEFT__PLAN_CUDNN_WAIT, /* the wait for cuDNN's start */
  WEFT__PLAN_KEPT,       /* a cuDNN plan read from its file (no seconds) */
  WEFT__PLAN_STORED      /* one written to its file (no seconds) */
} weft__cuda_plan_kind;
void weft__cuda_plan_time(weft__cuda_ctx *ctx, weft__cuda_plan_kind what,
                          double seconds);

/* The integer an environment variable holds (dflt when unset or empty,
 * negative values 0), read once into *cache (a static of the caller's, -1
 * until read; two threads reading at once store the same value). */
static inline int weft__cuda_env_int_or(const char *name, int dflt,
                                        int *cache) {
  int v = __atomic_load_n(cache, __ATOMIC_RELAXED);
  if (v < 0) {
    const char *e = getenv(name);
    v = e && *e ? atoi(e) : dflt;
    if (v < 0) v = 0;
    __atomic_store_n(cache, v, __ATOMIC_RELAXED);
  }
  return v;
}

/* The same with 0 when unset: for the diagnostic logs. */
static inline int weft__cuda_env_int(const char *name, int *cache) {
  return weft__cuda_env_int_or(name, 0, cache);
}

/* Whether an A/B switch is on: on unless the environment variable is "0";
 * read once into *cache as weft__cuda_env_int does. */
static inline bool weft__cuda_env_on(const char *name, int *cache) {
  int v = __atomic_load_n(cache, __ATOMIC_RELAXED);
  if (v < 0) {
    const char *e = getenv(name);
    v = !(e && e[0] == '0' && e[1] == 0);
    __atomic_store_n(cache, v, __ATOMIC_RELAXED);
  }
  return v != 0;
}

/* weft_cuda_set_conv_band_bytes's default */
#ifndef WEFT_CUDA_CONV_BAND_BYTES
#define WEFT_CUDA_CONV_BAND_BYTES ((size_t)48 << 20)
#endif

/* Bytes of an activation, and element i of an activation buffer (pointer
 * arithmetic in the activation dtype, whatever the C type of p). */
static inline size_t weft__cuda_act_size(const weft__cuda_ctx *ctx) {
  return ctx->act == WEFT_F32 ? 4 : 2;
}
static inline void *weft__cuda_act_at(const weft__cuda_ctx *ctx, const void *p,
                                      int64_t i) {
  return (char *)p + i * (int64_t)weft__cuda_act_size(ctx);
}

/* profile_cuda.c: whether iface is the profiling vtable; frees ctx->prof. */
bool weft__cuda_is_prof_iface(const weft_backend_iface *iface);
void weft__cuda_prof_destroy(weft__cuda_ctx *ctx);
/* While profiling (weft_cuda_profile_start), an op times a part of
 * itself: begin records the start on the stream and returns a slot (-1
 * when not profiling), end the stop under the key (printf-style).  One
 * part at a time; parts are reported after the ops. */
int weft__cuda_prof_part_begin(weft__cuda_ctx *ctx);
__attribute__((format(printf, 3, 4))) void
weft__cuda_prof_part_end(weft__cuda_ctx *ctx, int slot, const char *fmt, ...);

int weft__cuda_cache_init(weft__cuda_cache *c);
/* Frees every block (live ones too: the backend is going away). */
void weft__cuda_cache_destroy(weft__cuda_ctx *ctx);
/* A device block of at least nbytes, NULL when out of memory (ctx->err
 * says why).  (transfer full: weft__cuda_free) */
void *weft__cuda_alloc(weft__cuda_ctx *ctx, size_t nbytes);
void weft__cuda_free(weft__cuda_ctx *ctx, void *p);
/* Releases the cached blocks and the op scratch to the driver (after the
 * stream's work). */
int weft__cuda_cache_trim(weft__cuda_ctx *ctx);
/* The op scratch: one block for the large scratch of the ops that call no
 * other op (cuDNN's workspace and 16-bit copies, im2col's columns, group
 * norm's partial sums, the fused attention's packed k and v), at least
 * nbytes; NULL when out of memory.  Every op of a backend runs on its one
 * stream, so an op's use of it is ordered after the last op's: the
 * backend holds the largest scratch any op asked for, not a cached block
 * per size.  It grows by giving the old block back to the driver (which
 * waits for the device: a handful of times in a model's first call).
 * (transfer none: the context's, until the next call or a trim) */
void *weft__cuda_scratch(weft__cuda_ctx *ctx, size_t nbytes);

/* ---- Precision and half weights (precision_cuda.c) ------------------------
 */

int weft__cuda_ranges_init(weft__cuda_ranges *r);
void weft__cuda_ranges_destroy(weft__cuda_ranges *r);
/* WEFT_F16 / WEFT_BF16 for a pointer inside a registered range, else
 * WEFT_F32. */
weft_dtype weft__cuda_weight_dtype(weft__cuda_ctx *ctx, const void *p);
/* Registers [buf, buf + bytes) as 16-bit dtype (weft_cuda_mark_half_as's
 * rules), and forgets the range starting at buf: 0 or WEFT_EINVAL. */
int weft__cuda_mark_range(weft__cuda_ctx *ctx, const void *buf, size_t bytes,
                          weft_dtype dtype);
int weft__cuda_unmark_range(weft__cuda_ctx *ctx, const void *buf);
/* The 16-bit copy (dtype dt) of the fp32 values at p where a mirror holds
 * them (weft_cuda_mark_mirror), else NULL. */
const void *weft__cuda_mirror16(weft__cuda_ctx *ctx, const float *p,
                                weft_dtype dt);
/* Resolves AUTO from the environment (WEFT_PRECISION); 0, or WEFT_EINVAL
 * with the reason in err. */
int weft__cuda_precision_resolve(weft_cuda_precision in,
                                 weft_cuda_precision *out, char *err,
                                 size_t err_size);

/* ---- Errors ----------------------------------------------------------------
 */

/* Records "what: CUDA's message" in ctx->err and returns the WEFT_E* code
 * for e (ENOMEM for allocation failures, EDEVICE otherwise; 0 for
 * cudaSuccess). */
int weft__cuda_check(weft__cuda_ctx *ctx, cudaError_t e, const char *what);
/* Records a formatted message; returns code. */
int weft__cuda_fail(weft__cuda_ctx *ctx, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- GEMM (gemm_cuda.c) ----------------------------------------------------
 */

int weft__cuda_gemm(weft__cuda_ctx *ctx, const weft_gemm_args *g);
/* The GEMM every product goes through.  a_dt / b_dt: how A and B are
 * stored (WEFT_F32, WEFT_F16, WEFT_BF16), or WEFT__DT_LOOKUP to ask the
 * half-weight registry; c_dt how C is (WEFT_F32, or in FP16/BF16
 * precision the compute dtype).  bias: NULL, or [n] fp32 added to every
 * row of C after the product (a cuBLASLt epilogue in 16-bit precision),
 * as g->bias without bias_per_row, which it excludes.  In FP32 precision 16-bit
 * operands are widened to fp32 first; in FP16/BF16 precision fp32 (or the other
 * 16-bit type's) operands are rounded into dense 16-bit scratch and the product
 * runs on cuBLASLt (fp32 accumulate, C rounded once when it is 16-bit). */
#define WEFT__DT_LOOKUP (-1)
int weft__cuda_gemm_ex(weft__cuda_ctx *ctx, const weft_gemm_args *g, int a_dt,
                       int b_dt, int c_dt, const float *bias);
/* c[i*sc + r*ldc + j] += bias[j] (or bias[r] with per_row) for every
 * item i < batch, c stored as c_dt: a bias added after the product. */
int weft__cuda_add_bias(weft__cuda_ctx *ctx, int c_dt, void *c,
                        const float *bias, int per_row, int64_t m, int64_t n,
                        int64_t ldc, int64_t batch, int64_t sc);
/* A 16-bit product for gemm_lt.c: row-major as weft_gemm_args (op flags,
 * row strides ld and batch strides s* in elements), A and B stored as dt
 * (WEFT_F16 or WEFT_BF16), C as c_dt (WEFT_F32 or dt); bias NULL or [n]
 * fp32, added to every row of every item.  Sizes are valid, k > 0,
 * batch >= 1. */
typedef struct weft__cuda_mm {
  int trans_a, trans_b;
  int64_t m, n, k, batch;
  float alpha, beta;
  const void *a;
  int64_t lda, sa;
  const void *b;
  int64_t ldb, sb;
  void *c;
  int64_t ldc, sc;
  const float *bias;
  weft_dtype dt, c_dt;
} weft__cuda_mm;
/* cublasLtMatmul (fp32 compute, bias epilogue); where cuBLASLt offers no
 * algorithm (odd alignments), cublasGemmStridedBatchedEx + a bias kernel. */
int weft__cuda_mm16(weft__cuda_ctx *ctx, const weft__cuda_mm *mm);
/* The compute dtype of the backend: WEFT_F32, WEFT_F16 or WEFT_BF16. */
weft_dtype weft__cuda_compute_dtype(const weft__cuda_ctx *ctx);
/* An fp32 view of n elements at p: p itself when it is not registered as
 * half, else a converted copy in *tmp (free with weft__cuda_free after
 * the ops that read it are queued).  NULL with ctx->err set on failure. */
const float *weft__cuda_f32_view(weft__cuda_ctx *ctx, const float *p, int64_t n,
                                 void **tmp);
int weft__cuda_lt_init(weft__cuda_ctx *ctx, char *err, size_t err_size);
/* ctx's cuBLAS handle in *out, made on first use on ctx's stream with
 * its math mode (cuBLASLt takes the 16-bit products: a run in 16 bits
 * may never need one, and its creation took part of a fresh process's
 * device start): 0, or WEFT_EDEVICE (ctx's error says why). */
int weft__cuda_blas(weft__cuda_ctx *ctx, void **out);
/* One heuristic query and one check of its answer on a handle of its own,
 * then the handle gone: what cuBLASLt sets up at a process's first plans
 * (a tenth of a second on an H200's host), done on a thread of its own
 * beside the checkpoint's load (weft_cuda_start_cudnn starts it; the
 * first plans meet it inside cuBLASLt, ctx_free joins it).
 * WEFT_CUDA_LT_WARM=0: not done. */
void weft__cuda_lt_warm_start(weft__cuda_ctx *ctx);
void weft__cuda_lt_warm_join(weft__cuda_ctx *ctx);
/* Every kernel of weft's modules loaded on a thread of its own
 * (preload.c; weft_cuda_start_cudnn starts it once a backend, ctx_free
 * joins it).  WEFT_CUDA_PRELOAD=0: not done. */
void weft__cuda_preload_start(weft__cuda_ctx *ctx);
void weft__cuda_preload_join(weft__cuda_ctx *ctx);
void weft__cuda_lt_destroy(weft__cuda_ctx *ctx);
/* Frees gemm_lt.c's plan cache (the descriptors it keeps). */
void weft__cuda_lt_plans_free(weft__cuda_ctx *ctx);

/* ---- Attention in 16-bit precision (attention_half.c) ----------------------
 */

/* Scratch bytes of the 16-bit attention (16-bit copies of q, k, v and one
 * block of fp32 scores and 16-bit probabilities).  q, k, v and o are in
 * the activations' dtype (ctx->act). */
size_t weft__cuda_attention16_scratch(const weft_attn_args *a);
int weft__cuda_attention16(weft__cuda_ctx *ctx, const weft_attn_args *a,
                           float scale);

/* ---- Attention on cuDNN (attn_cudnn.c; stubs without cuDNN) ---------------
 */

/* true when a may run on cuDNN's fused attention (fp16 activations, d ==
 * dv a multiple of 8, no causal mask, 16-byte aligned strides and
 * pointers, not switched off); whether cuDNN has an engine for it is
 * known only from weft__cudnn_attn_plan. */
bool weft__cudnn_attn_fits(const weft__cuda_ctx *ctx, const weft_attn_args *a);
/* Makes a's plan (once per shape) and gives its workspace bytes: 0, or
 * WEFT_EUNSUPPORTED when cuDNN has no engine for it (flash16.cu then). */
int weft__cudnn_attn_plan(weft__cuda_ctx *ctx, const weft_attn_args *a,
                          size_t *ws);
/* o = softmax(scale q k^T) v on cuDNN, its workspace from a->scratch when
 * large enough: 0, WEFT_EUNSUPPORTED as weft__cudnn_attn_plan, or an
 * error with ctx->err set. */
int weft__cudnn_attn(weft__cuda_ctx *ctx, const weft_attn_args *a, float scale);
/* Frees the plans (before the handle goes). */
void weft__cudnn_attn_free(weft__cuda_ctx *ctx);

/* ---- Convolution dispatch (conv_cuda.c) ------------------------------------
 */

int weft__cuda_conv2d(weft__cuda_ctx *ctx, const weft_conv2d_args *a);
/* a's weight (fp32, or registered 16-bit of either kind) rounded into dst
 * as the compute dtype's [c_out, c_in*kh*kw] matrix, on the stream. */
int weft__cuda_conv_weight16(weft__cuda_ctx *ctx, const weft_conv2d_args *a,
                             void *dst);
size_t weft__cuda_conv2d_scratch_bytes(weft__cuda_ctx *ctx,
                                       const weft_conv2d_args *a);

/* ---- cuDNN convolution (conv_cudnn.c; stubs without cuDNN) ----------------
 */

int weft__cudnn_init(weft__cuda_ctx *ctx, char *err, size_t err_size);
/* The handle, made on first use by the first convolution that could run on
 * cuDNN (cudnnCreate loads its libraries: a second or so that a run without
 * such convolutions would pay at start for nothing); false without cuDNN. */
bool weft__cudnn_ensure(weft__cuda_ctx *ctx);
/* Starts making the handle on a thread of its own (weft_cuda_start_cudnn;
 * nothing without cuDNN); weft__cudnn_join waits for it (ensure and
 * destroy do). */
void weft__cudnn_start(weft__cuda_ctx *ctx);
void weft__cudnn_join(weft__cuda_ctx *ctx);
void weft__cudnn_destroy(weft__cuda_ctx *ctx);
/* true when cuDNN can run this convolution (symmetric padding, int sizes) */
bool weft__cudnn_conv_supported(const weft__cuda_ctx *ctx,
                                const weft_conv2d_args *a);
/* Picks the algorithm conv2d would run and its workspace bytes; 0, or
 * WEFT_EUNSUPPORTED when cuDNN has no deterministic algorithm in the
 * requested math mode (the caller then uses im2col), or WEFT_EDEVICE. */
int weft__cudnn_conv_plan(weft__cuda_ctx *ctx, const weft_conv2d_args *a,
                          size_t *workspace);
/* y = conv(x, w) (no bias); workspace from a->scratch if large enough.
 * WEFT_EUNSUPPORTED as weft__cudnn_conv_plan. */
int weft__cudnn_conv(weft__cuda_ctx *ctx, const weft_conv2d_args *a);

/* The FP16/BF16 precision convolution (conv_cudnn.c says how): x rounded
 * into a dense 16-bit copy, 16-bit weight (as registered, or rounded),
 * 16-bit y widened to fp32 with the bias added.  Supported: what
 * weft__cudnn_conv_supported takes, with c_in and c_out multiples of 8 and
 * each 16-bit tensor under 2^31 elements. */
bool weft__cudnn_conv16_supported(const weft__cuda_ctx *ctx,
                                  const weft_conv2d_args *a);
/* Picks the algorithm weft__cudnn_conv16 would run; *scratch gets the bytes
 * it needs (16-bit x and y, the 16-bit weight unless a->weight is
 * registered in the compute type and 16-byte aligned, cuDNN's workspace;
 * each part 256-byte aligned from the scratch's start).  0, or
 * WEFT_EUNSUPPORTED (caller: im2col), or WEFT_EDEVICE. */
int weft__cudnn_conv16_plan(weft__cuda_ctx *ctx, const weft_conv2d_args *a,
                            size_t *scratch);
/* The row bands weft__cudnn_conv16 runs a in (1: unbanded). */
int weft__cudnn_conv16_bands(weft__cuda_ctx *ctx, const weft_conv2d_args *a);
/* y = conv(x, w) + bias (a->bias fp32 or NULL); scratch from a->scratch
 * when it is large enough, else the op scratch; in row bands where the
 * workspace would pass the band bytes.  WEFT_EUNSUPPORTED as
 * weft__cudnn_conv16_plan, before anything is written to a->y. */
int weft__cudnn_conv16(weft__cuda_ctx *ctx, const weft_conv2d_args *a);

/* The channels-last convolution (conv_cudnn.c, "channels last"): a weight
 * stored [c_out, k_h, k_w, c_in] (a->w_hwc), in FP16/BF16 precision, both
 * channel counts multiples of 8, any padding.  Picks its bands and their
 * algorithms; *scratch gets the bytes it needs.  0, or WEFT_EUNSUPPORTED
 * (the caller: the weight back to [c_out, c_in, kk] and the other paths),
 * or WEFT_EDEVICE. */
int weft__cudnn_conv_nhwc_plan(weft__cuda_ctx *ctx, const weft_conv2d_args *a,
                               size_t *scratch, int *bands, int *splitk);
/* y = conv(x, w) + bias (a->bias fp32 or NULL), x and y as the
 * activations lie (NCHW): each band of output rows is its input rows
 * moved channels last with the padding as zeros, cuDNN's NHWC
 * convolution, the output moved back with the bias.  Scratch from
 * a->scratch when it is large enough, else the op scratch.
 * WEFT_EUNSUPPORTED as the plan, before anything is written to a->y. */
int weft__cudnn_conv_nhwc(weft__cuda_ctx *ctx, const weft_conv2d_args *a);

/* ---- Kernel launchers (the .cu files) --------------------------------------
 * Each queues its kernels on `s` and returns cudaGetLastError() (a launch
 * failure; faults inside a kernel surface at the next synchronize).  Sizes
 * are validated by the caller; zero-sized work must not reach them. */

/* pointwise.cu and norm.cu take `dt`, the weft_dtype their activation
 * pointers (void *) point to: WEFT_F32, WEFT_F16 or WEFT_BF16 (the
 * backend's activation dtype, weft_cuda_set_act_dtype).  The math is fp32,
 * each stored value rounded once; weights, biases and norm parameters
 * (float *) are fp32. */
cudaError_t weft__cu_act(cudaStream_t s, int dt, int act, const void *x,
                         void *y, int64_t n);
cudaError_t weft__cu_gated_act(cudaStream_t s, int dt, int act, const void *x,
                               void *y, int64_t rows, int64_t dim);
/* Collapsed broadcast: nd dims (1..WEFT_MAX_DIMS), y contiguous. */
typedef struct weft__cu_bcast {
  int nd;
  int64_t shape[8], sa[8], sb[8];
} weft__cu_bcast;
cudaError_t weft__cu_binary(cudaStream_t s, int dt, int op, const void *a,
                            const void *b, void *y, const weft__cu_bcast *bc,
                            int64_t total);
cudaError_t weft__cu_scale_add(cudaStream_t s, int dt, void *y, float alpha,
                               const void *a, float beta, const void *b,
                               int64_t n);
/* c[i*stride_c + r*ldc + j] = beta == 0 ? 0 : beta * c[...] (GEMM, k = 0) */
cudaError_t weft__cu_scale_matrix(cudaStream_t s, int dt, void *c,
                                  int64_t batch, int64_t stride_c, int64_t m,
                                  int64_t n, int64_t ldc, float beta);
/* y[r*cols + j] += bias[j] for rows x cols */
cudaError_t weft__cu_bias_rows(cudaStream_t s, int dt, void *y,
                               const float *bias, int64_t rows, int64_t cols);
/* y[b*ys + o*ld + j] += bias[o], b < batch, o < c_out, j < cols */
cudaError_t weft__cu_bias_planes(cudaStream_t s, int dt, void *y,
                                 const float *bias, int64_t batch, int64_t ys,
                                 int64_t c_out, int64_t ld, int64_t cols);
/* A convolution's epilogue on y [batch][c_out][plane] (image stride ys),
 * chan [batch * c_out] and res (laid out as y) of dt, either NULL:
 * y = (y + chan) + res, in fp32, rounded once. */
cudaError_t weft__cu_conv_epilogue(cudaStream_t s, int dt, void *y,
                                   const void *chan, const void *res,
                                   int64_t batch, int64_t ys, int64_t c_out,
                                   int64_t plane);
cudaError_t weft__cu_upsample2x(cudaStream_t s, int dt, const void *x, void *y,
                                int64_t planes, int64_t h, int64_t w);
/* t fp32 (timesteps keep their fractions), y of dt */
cudaError_t weft__cu_timestep(cudaStream_t s, int dt, const float *t, int64_t n,
                              int64_t dim, int flip, float neg_log, float denom,
                              float scale, void *y);
/* kind: 0 f16->f32, 1 f32->f16, 2 bf16->f32, 3 f32->bf16, 4 f16->bf16,
 * 5 bf16->f16 */
cudaError_t weft__cu_convert(cudaStream_t s, int kind, void *dst,
                             const void *src, int64_t n);

/* half.cu.  dtype codes are weft_dtype values.  Packs item t = o * n_inner
 * + i (o < n_outer, i < n_inner) of rows x cols elements at
 * src + o * s_outer + i * s_inner (row stride ld, in elements) into dense
 * dst[t][rows][cols], converting sdt to ddt (round to nearest even). */
/* c[r, j] = sum_k a[r, k] w[j, k] (+ bias[j], fp32) for r < m <=
 * WEFT_CU_GEMV_ROWS: a and w 16-bit of dt, rows 16-byte aligned (k, lda,
 * ldw multiples of 8), c of cdt (fp32 or dt) at row stride ldc;
 * cudaErrorInvalidValue for anything else. */
#define WEFT_CU_GEMV_ROWS 4
cudaError_t weft__cu_gemv16(cudaStream_t s, int dt, int64_t m, int64_t n,
                            int64_t k, const void *a, int64_t lda,
                            const void *w, int64_t ldw, const float *bias,
                            void *c, int cdt, int64_t ldc);
/* weft__cu_gemv16 for n products of one a [m, k] at once: part i's
 * w [n, k] dense, c [m, n] dense; as few launches as the parts allow
 * (WEFT_CU_GEMV_PARTS a launch). */
#define WEFT_CU_GEMV_PARTS 32
typedef struct weft__cu_gemv_part {
  const void *w;
  const float *bias; /* fp32 or NULL */
  void *c;
  int64_t n;
} weft__cu_gemv_part;
cudaError_t weft__cu_gemv16_group(cudaStream_t s, int dt, int64_t m, int64_t k,
                                  const void *a, int64_t lda, int n,
                                  const weft__cu_gemv_part *parts, int cdt);
cudaError_t weft__cu_pack(cudaStream_t s, const void *src, int sdt, void *dst,
                          int ddt, int64_t n_outer, int64_t n_inner,
                          int64_t s_outer, int64_t s_inner, int64_t rows,
                          int64_t cols, int64_t ld);
/* y[b * ys + o * n + j] = src[b][o][j] (dense 16-bit sdt, b < batch,
 * o < c_out, j < n) widened to fp32, + bias[o] (fp32) when bias is not
 * NULL. */
/* layout.cu.  Rows [row0, row0 + hb) of each of batch images x (xdt,
 * [c_in, h, w], image stride xs) into dst (ddt, [batch, hb, wb, c_in]),
 * column q from x's column q - pl; rows and columns outside the image
 * zero.  ss (float2 [batch * c_in], NULL: none): each value inside the
 * image becomes act(fma(x, ss.x, ss.y)), a group norm applied as it
 * moves. */
cudaError_t weft__cu_nhwc_pack(cudaStream_t s, const void *x, int xdt,
                               int64_t xs, int64_t batch, int64_t c_in,
                               int64_t h, int64_t w, int64_t row0, int64_t hb,
                               int64_t pl, int64_t wb, void *dst, int ddt,
                               const void *ss, int act);
/* src (sdt, [batch, rows, wo, c_out]) + bias[o] (fp32; may be NULL) into
 * rows [row0, row0 + rows) of y (ydt): y[b * ys + o * plane + (row0 + r)
 * * wo + q], with the convolution's epilogue (ydt; either NULL): + chan[b
 * * c_out + o], then + res at y's place; fp32 sums, rounded once. */
cudaError_t weft__cu_nhwc_unpack(cudaStream_t s, const void *src, int sdt,
                                 int64_t batch, int64_t rows, int64_t wo,
                                 int64_t c_out, const float *bias,
                                 const void *chan, const void *res, void *y,
                                 int ydt, int64_t ys, int64_t plane,
                                 int64_t row0);
/* The same moves for maps already channels last: rows [row0, row0 + hb)
 * of x (xdt, [batch][h][w][c_in], image stride xs) into dst as
 * weft__cu_nhwc_pack writes it (ss likewise); and src (sdt, [batch][pix]
 * [c_out]) + bias (+ chan) (+ res) into y (ydt, [batch][..][c_out], image
 * stride ys) from pixel off of each image, res laid out as y. */
cudaError_t weft__cu_cl_copy(cudaStream_t s, const void *x, int xdt, int64_t xs,
                             int64_t batch, int64_t c_in, int64_t h, int64_t w,
                             int64_t row0, int64_t hb, int64_t pl, int64_t wb,
                             void *dst, int ddt, const void *ss, int act);
cudaError_t weft__cu_cl_epilogue(cudaStream_t s, const void *src, int sdt,
                                 int64_t batch, int64_t pix, int64_t c_out,
                                 const float *bias, const void *chan,
                                 const void *res, void *y, int ydt, int64_t ys,
                                 int64_t off);
/* upsample_nearest2x_cl of dt: x [batch][h][w][c] -> y [batch][2h][2w][c] */
cudaError_t weft__cu_upsample2x_cl(cudaStream_t s, int dt, const void *x,
                                   void *y, int64_t batch, int64_t h, int64_t w,
                                   int64_t c);
/* A conv weight of dt (its elements moved as stored) between [c_out,
 * c_in, kk] and [c_out, kk, c_in]: to_hwc 1 to the latter, 0 back. */
cudaError_t weft__cu_conv_weight_layout(cudaStream_t s, const void *w, int dt,
                                        void *dst, int64_t c_out, int64_t c_in,
                                        int64_t kk, int to_hwc);
cudaError_t weft__cu_widen_planes(cudaStream_t s, const void *src, int sdt,
                                  float *y, int64_t ys, const float *bias,
                                  int64_t batch, int64_t c_out, int64_t n);
/* p (16-bit ddt, rows x lk) = softmax of each row of sc (fp32, rows x lk);
 * row r is query q0 + r % nq for the causal mask. */
cudaError_t weft__cu_softmax16(cudaStream_t s, const float *sc, void *p,
                               int ddt, int64_t rows, int64_t lk, int causal,
                               int64_t q0, int64_t nq);

/* im2col.cu: columns of images [img0, img0 + n_img) and output columns
 * [n0, n0 + nb) of a convolution: col[i][r][j] with r = (c, ky, kx),
 * i the image in the block, j the column in the block; ld = nb. */
cudaError_t weft__cu_im2col(cudaStream_t s, const weft_conv2d_args *a,
                            int64_t h_out, int64_t w_out, const float *x,
                            int64_t xs, int64_t n_img, int64_t n0, int64_t nb,
                            float *col);
/* The same columns rounded to 16 bits (dt WEFT_F16 or WEFT_BF16), from x
 * stored as xdt. */
cudaError_t weft__cu_im2col16(cudaStream_t s, const weft_conv2d_args *a,
                              int64_t w_out, const void *x, int xdt, int64_t xs,
                              int64_t n_img, int64_t n0, int64_t nb, void *col,
                              int dt);

/* The split-K way's rows (conv_cudnn.c): col[p][(ky * k_w + kx) * c +
 * ci] = band[b][oy * sh + ky][ox * sw + kx][ci] for each output pixel p =
 * (b * ho + oy) * wo + ox of a padded channels-last band [batch][hb][wb][c]
 * of 16-bit values (c a multiple of 8, both pointers 16-byte aligned);
 * and y (dt) = the sum of splits fp32 partial products part[s][n], in
 * order of s, rounded once (n a multiple of 4). */
cudaError_t weft__cu_conv_rows(cudaStream_t s, const void *band, int64_t batch,
                               int64_t hb, int64_t wb, int64_t c, int64_t k_h,
                               int64_t k_w, int64_t sh, int64_t sw, int64_t ho,
                               int64_t wo, void *col);
cudaError_t weft__cu_splitk_sum(cudaStream_t s, const float *part, int splits,
                                int64_t n, void *y, int dt);

/* norm.cu: a group norm's (scale, shift) per (image, channel) alone, for
 * a convolution's prologue: *ss (float2 [batch * channels]) inside scratch
 * of weft__cu_gn_stats_bytes. */
size_t weft__cu_gn_stats_bytes(int64_t batch, int64_t channels, int64_t spatial,
                               int64_t groups);
cudaError_t weft__cu_gn_stats(cudaStream_t s, int dt, const void *x,
                              int64_t batch, int64_t channels, int64_t spatial,
                              int64_t groups, float eps, const float *gamma,
                              const float *beta, void *scratch,
                              unsigned *counters, const void **ss);
/* The same (scale, shift) table of a channels-last x [batch][spatial]
 * [channels], and group_norm_cl, each with a scratch of
 * weft__cu_gn_stats_cl_bytes (cudaErrorInvalidValue where a pixel
 * has more than 512 vectors of channels, 16-byte ones where channels % 8
 * == 0 and x is aligned, else single values; or a batch over 65535). */
size_t weft__cu_gn_stats_cl_bytes(int64_t batch, int64_t channels,
                                  int64_t spatial, int64_t groups);
cudaError_t weft__cu_gn_stats_cl(cudaStream_t s, int dt, const void *x,
                                 int64_t batch, int64_t channels,
                                 int64_t spatial, int64_t groups, float eps,
                                 const float *gamma, const float *beta,
                                 void *scratch, unsigned *counters,
                                 const void **ss);
cudaError_t weft__cu_group_norm_cl(cudaStream_t s, int dt, const void *x,
                                   void *y, int64_t batch, int64_t channels,
                                   int64_t spatial, int64_t groups, float eps,
                                   const float *gamma, const float *beta,
                                   int act, void *scratch, unsigned *counters);
/* norm.cu (dt as pointwise.cu's).  group_norm needs a scratch of
 * group_norm_scratch_bytes (its chunks' partial statistics and the (scale,
 * shift) table; 0 where each group is one chunk) with the alignment of a
 * cudaMalloc'd block.  counters (one per group channels first, one per
 * image channels last): WEFT_CU_GN_COUNTERS zeros on the device that only
 * this stream's group norms use (each left at zero again), or NULL. */
#define WEFT_CU_GN_COUNTERS 4096
size_t weft__cu_group_norm_scratch_bytes(int64_t batch, int64_t channels,
                                         int64_t spatial, int64_t groups);
cudaError_t weft__cu_group_norm(cudaStream_t s, int dt, const void *x, void *y,
                                int64_t batch, int64_t channels,
                                int64_t spatial, int64_t groups, float eps,
                                const float *gamma, const float *beta, int act,
                                void *scratch, unsigned *counters);
cudaError_t weft__cu_layer_norm(cudaStream_t s, int dt, const void *x, void *y,
                                int64_t rows, int64_t dim, float eps,
                                const float *gamma, const float *beta);
cudaError_t weft__cu_softmax(cudaStream_t s, int dt, const void *x, void *y,
                             int64_t rows, int64_t dim);

/* attention.cu.  scale already resolved (never 0).  Returns
 * cudaErrorInvalidValue when d is too large for shared memory
 * (smem_optin bytes per block). */
cudaError_t weft__cu_attention(cudaStream_t s, const weft_attn_args *a,
                               float scale, size_t smem_optin);

/* conv_direct.cu: whether the direct kernel takes this convolution
 * (c_out <= 8, the weight fits its shared memory), and the kernel: x and y
 * stored as act (a weft_dtype: F32, or F16/BF16 16-bit activations, whose
 * type then rounds w), w fp32 (round16 for fp32 x: 0 as is, 1 x and w
 * rounded to fp16, 2 to bf16), fp32 sums, y with the fp32 bias (batch
 * strides xs, ys). */
bool weft__cu_conv_direct_fits(const weft_conv2d_args *a);
cudaError_t weft__cu_conv_direct(cudaStream_t s, const weft_conv2d_args *a,
                                 const float *w, int round16, int act,
                                 int64_t h_out, int64_t w_out, int64_t xs,
                                 int64_t ys);

/* flash16.cu: whether the fused 16-bit kernel takes these shapes (d == dv,
 * d <= 160), the scratch it needs (k and v packed to 16 bits, padded to
 * the kernel's tiles: 16-byte aligned), and the kernel itself (bf16: BF16
 * operands, else FP16; act16: q, k, v and o stored in that type, else
 * fp32); scale already resolved. */
bool weft__cu_flash16_fits(const weft_attn_args *a);
size_t weft__cu_flash16_scratch(const weft_attn_args *a);
cudaError_t weft__cu_flash16(cudaStream_t s, const weft_attn_args *a,
                             float scale, int bf16, int act16, int sm_count,
                             void *scratch);

#ifdef __cplusplus
}
#endif
#endif
