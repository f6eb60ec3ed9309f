/* cpu.h - weft's CPU kernels (fp32, OpenBLAS for the FLOP-heavy parts, an own
 * persistent pthread pool for the rest).
 *
 * Every kernel takes a weft_cpu_ctx, which carries the thread count and the
 * instruction set chosen at run time (AVX2+FMA+F16C when the CPU has them,
 * portable C otherwise).  A context may be used from several threads at
 * once: a call that finds the pool busy runs its loops on the calling thread
 * instead of waiting.  Argument structs and conventions: kernels/ops.h. */
#ifndef WEFT_KERNELS_CPU_H
#define WEFT_KERNELS_CPU_H

#include "kernels/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weft_cpu_ctx weft_cpu_ctx;

/* Instruction sets the kernels can use. */
typedef enum weft_cpu_isa {
  WEFT_CPU_ISA_AUTO = 0, /* the best the CPU supports */
  WEFT_CPU_ISA_PORTABLE, /* plain C (reference-quality libm math) */
  WEFT_CPU_ISA_AVX2      /* AVX2 + FMA + F16C */
} weft_cpu_isa;

/* Creates a context with n_threads threads in total (the caller counts as
 * one; n_threads <= 0 means the number of online CPUs).  Also sets
 * OpenBLAS's thread count, which is process-wide: the last context to set it
 * wins.  Returns NULL when out of memory or threads.  (transfer full: free
 * with weft_cpu_ctx_free) */
weft_cpu_ctx *weft_cpu_ctx_new(int n_threads);
void weft_cpu_ctx_free(weft_cpu_ctx *ctx);

/* Changes the thread count (restarts the pool; not while a kernel of this
 * context runs) and calls openblas_set_num_threads(n).  The CLI maps
 * --threads / WEFT_THREADS to this; the kernels never read the environment. */
int weft_cpu_set_threads(weft_cpu_ctx *ctx, int n_threads);
int weft_cpu_get_threads(const weft_cpu_ctx *ctx);

/* Forces an instruction set (tests, debugging); WEFT_EUNSUPPORTED when the
 * CPU lacks it.  weft_cpu_isa_name: "avx2" or "portable". */
int weft_cpu_set_isa(weft_cpu_ctx *ctx, weft_cpu_isa isa);
const char *weft_cpu_isa_name(const weft_cpu_ctx *ctx);

/* ---- Matrix products ---------------------------------------------------- */

int weft_cpu_gemm(weft_cpu_ctx *ctx, const weft_gemm_args *a);

/* y[rows, out] = x[rows, in] @ weight^T + bias, torch's nn.Linear
 * (weight [out, in], bias [out] or NULL).  x and y contiguous, distinct. */
int weft_cpu_linear(weft_cpu_ctx *ctx, const float *x, int64_t rows,
                    int64_t in_features, const float *weight, const float *bias,
                    int64_t out_features, float *y);

/* 1x1 convolutions run as one GEMM per image without scratch; others as
 * im2col + GEMM over column blocks of bounded size. */
int weft_cpu_conv2d(weft_cpu_ctx *ctx, const weft_conv2d_args *a);
size_t weft_cpu_conv2d_scratch_bytes(const weft_cpu_ctx *ctx,
                                     const weft_conv2d_args *a);

int weft_cpu_attention(weft_cpu_ctx *ctx, const weft_attn_args *a);
size_t weft_cpu_attention_scratch_bytes(const weft_cpu_ctx *ctx,
                                        const weft_attn_args *a);

/* ---- Normalisation ------------------------------------------------------ */

/* torch's GroupNorm on x [batch, channels, spatial] (spatial = H*W),
 * channels divisible by groups; gamma/beta [channels] or NULL (no affine);
 * act (NONE or any weft_act, usually SILU) is applied after the affine, as
 * diffusers' ResnetBlock2D does next.  y may equal x. */
int weft_cpu_group_norm(weft_cpu_ctx *ctx, const float *x, float *y,
                        int64_t batch, int64_t channels, int64_t spatial,
                        int64_t groups, float eps, const float *gamma,
                        const float *beta, weft_act act);

/* weft_cpu_group_norm on channels-last x, y [batch, spatial, channels]:
 * the same values, moved (y may equal x). */
int weft_cpu_group_norm_cl(weft_cpu_ctx *ctx, const float *x, float *y,
                           int64_t batch, int64_t channels, int64_t spatial,
                           int64_t groups, float eps, const float *gamma,
                           const float *beta, weft_act act);

/* torch's LayerNorm over the last dim: x, y [rows, dim]; gamma/beta [dim]
 * or NULL.  y may equal x. */
int weft_cpu_layer_norm(weft_cpu_ctx *ctx, const float *x, float *y,
                        int64_t rows, int64_t dim, float eps,
                        const float *gamma, const float *beta);

/* Softmax over the last dim, max-subtracted: x, y [rows, dim]; y may equal
 * x. */
int weft_cpu_softmax(weft_cpu_ctx *ctx, const float *x, float *y, int64_t rows,
                     int64_t dim);

/* ---- Pointwise ---------------------------------------------------------- */

/* y[i] = act(x[i]) for n elements; y may equal x. */
int weft_cpu_act(weft_cpu_ctx *ctx, weft_act act, const float *x, float *y,
                 int64_t n);

/* Gated activation (GEGLU with act = GELU_ERF, as diffusers' GEGLU; SwiGLU
 * with SILU): x [rows, 2*dim] holds value then gate halves,
 *   y[r, i] = x[r, i] * act(x[r, dim + i]),  y [rows, dim].
 * y may equal x (it is then packed at the start of x's buffer). */
int weft_cpu_gated_act(weft_cpu_ctx *ctx, weft_act act, const float *x,
                       float *y, int64_t rows, int64_t dim);

/* y = a (op) b with numpy broadcasting: shapes are right-aligned and a dim
 * of 1 (or a missing dim) repeats.  y has the broadcast shape (contiguous);
 * y may equal a (or b) when that operand already has the broadcast shape. */
int weft_cpu_binary(weft_cpu_ctx *ctx, weft_binop op, const float *a,
                    int a_ndim, const int64_t *a_shape, const float *b,
                    int b_ndim, const int64_t *b_shape, float *y);

/* y = alpha * a + beta * b over n elements (b NULL: y = alpha * a); y may
 * equal a or b.  (Classifier-free guidance, residual scales.) */
int weft_cpu_scale_add(weft_cpu_ctx *ctx, float *y, float alpha, const float *a,
                       float beta, const float *b, int64_t n);

/* ---- Data movement ------------------------------------------------------ */

/* Nearest-neighbour 2x upsampling (F.interpolate(scale_factor=2,
 * mode="nearest")) of planes images of h x w: x [planes, h, w] ->
 * y [planes, 2h, 2w] (planes = batch * channels). */
int weft_cpu_upsample_nearest2x(weft_cpu_ctx *ctx, const float *x, float *y,
                                int64_t planes, int64_t h, int64_t w);

/* The same on channels-last maps: x [batch, h, w, channels] -> y [batch,
 * 2h, 2w, channels]. */
int weft_cpu_upsample_nearest2x_cl(weft_cpu_ctx *ctx, const float *x, float *y,
                                   int64_t batch, int64_t h, int64_t w,
                                   int64_t channels);

/* dst = src moved between [batch, channels, spatial] (NCHW) and [batch,
 * spatial, channels] (NHWC): to_nhwc true moves NCHW into NHWC.  dst must
 * not overlap src. */
int weft_cpu_nchw_nhwc(weft_cpu_ctx *ctx, const float *src, float *dst,
                       int64_t batch, int64_t channels, int64_t spatial,
                       bool to_nhwc);

/* torch.cat(xs, dim=axis) of n contiguous tensors of ndim dims whose shapes
 * agree except on axis; y is contiguous with the summed axis. */
int weft_cpu_concat(weft_cpu_ctx *ctx, int n, const float *const *xs, int ndim,
                    const int64_t *const *shapes, int axis, float *y);

/* diffusers' get_timestep_embedding(t, dim, flip_sin_to_cos,
 * downscale_freq_shift, scale, max_period) for n timesteps: y [n, dim].
 * SD1.x: flip_sin_to_cos = 1, downscale_freq_shift = 0, scale = 1,
 * max_period = 10000. */
int weft_cpu_timestep_embedding(weft_cpu_ctx *ctx, const float *t, int64_t n,
                                int64_t dim, int flip_sin_to_cos,
                                float downscale_freq_shift, float scale,
                                float max_period, float *y);

/* Converts n elements between F32, F16 and BF16 (same dtype: a copy).
 * f32 -> f16/bf16 rounds to nearest even; overflow gives Inf, NaN stays NaN
 * (f16: quiet, upper payload bits kept, as F16C does; bf16: 0x7FC0, as
 * torch's c10::BFloat16 does), subnormals are exact.  dst and src must not
 * overlap.  Uses F16C/AVX2 when the context's ISA allows. */
int weft_cpu_convert(weft_cpu_ctx *ctx, void *dst, weft_dtype dst_type,
                     const void *src, weft_dtype src_type, int64_t n);

/* weft_cpu_convert on the calling thread, without a context (loaders
 * have none), with the best instruction set the CPU has; src and dst may
 * be misaligned (a tensor in a mapped file sits at any offset). */
int weft_cpu_convert_serial(void *dst, weft_dtype dst_type, const void *src,
                            weft_dtype src_type, int64_t n);

/* Scalar conversions (portable, same results as the array ones). */
float weft_f16_to_f32(uint16_t h);
uint16_t weft_f32_to_f16(float f);
float weft_bf16_to_f32(uint16_t h);
uint16_t weft_f32_to_bf16(float f);

#ifdef __cplusplus
}
#endif
#endif
