/* sd_layers.h - the building blocks the SD models share (linear, conv,
 * norms, ResNet blocks, attention), holding float32 weights and running
 * through a kernel backend. */
#ifndef WEFT_SD_LAYERS_H
#define WEFT_SD_LAYERS_H

#include "sd.h"
#include "sd_device.h"

#define CK(expr)                                                               \
  do {                                                                         \
    int ck_r_ = (expr);                                                        \
    if (ck_r_) return ck_r_;                                                   \
  } while (0)

typedef struct sd_linear {
  float *w, *b; /* w [out, in], b [out] or NULL */
  int64_t in, out;
} sd_linear;

typedef struct sd_conv {
  float *w, *b;
  int64_t cin, cout, k, stride, pad;
  /* w points at a channels-last device copy (weft_conv2d_args.w_hwc;
   * sd_device.c marks it at upload) */
  bool w_hwc;
} sd_conv;

typedef struct sd_norm {
  float *g, *b;
  int64_t c;
} sd_norm;

typedef struct sd_resnet {
  sd_norm norm1, norm2;
  sd_conv conv1, conv2, shortcut; /* shortcut.w NULL when cin == cout */
  sd_linear temb;                 /* temb.w NULL in the VAE */
  int64_t cin, cout;
  /* a UNet's: where temb's output lies among the model's time-embedding
   * projections, in rows of [b, ...] (sd_unet) */
  int64_t temb_off;
  int groups;
  float eps;
} sd_resnet;

typedef struct sd_attn {
  sd_linear q, k, v, out;
  int64_t dim, ctx_dim;
  int heads;
  /* on a device, k's and v's weights (and q's before them) lie one after
   * another: one product makes them (sd_device.c, "adjacent products") */
  bool fuse_kv, fuse_qkv;
} sd_attn;

/* Loading: name is a prefix ("down_blocks.0.resnets.1."); each returns 0
 * or a WEFT_E* code with ck->err set. */
int sd_load_linear(sd_ckpt *ck, sd_part p, const char *name, int64_t in,
                   int64_t out, bool bias, sd_linear *l);
int sd_load_conv(sd_ckpt *ck, sd_part p, const char *name, int64_t cin,
                 int64_t cout, int64_t k, int64_t stride, int64_t pad,
                 sd_conv *c);
int sd_load_norm(sd_ckpt *ck, sd_part p, const char *name, int64_t c,
                 sd_norm *n);
int sd_load_resnet(sd_ckpt *ck, sd_part p, const char *name, int64_t cin,
                   int64_t cout, int64_t temb_dim, int groups, float eps,
                   sd_resnet *r);
/* diffusers' Attention: to_q/to_k/to_v (biased when qkv_bias: the VAE's)
 * and to_out.0 with bias */
int sd_load_attn(sd_ckpt *ck, sd_part p, const char *name, int64_t dim,
                 int64_t ctx_dim, int heads, bool qkv_bias, sd_attn *a);

void sd_free_linear(sd_linear *l);
void sd_free_conv(sd_conv *c);
void sd_free_norm(sd_norm *n);
void sd_free_resnet(sd_resnet *r);
void sd_free_attn(sd_attn *a);

/* ---- running ---- */

/* Activation buffers of n elements through the backend (plain malloc on
 * the CPU), in the backend's activation dtype (backend.h: the pointer is
 * typed float * whatever it holds; sd_io_in/sd_io_out convert at a model's
 * boundary); sd_alloc_f32 for n floats whatever that dtype is. */
float *sd_alloc(weft_backend *be, int64_t n);
float *sd_alloc_f32(weft_backend *be, int64_t n);
void sd_free(weft_backend *be, float *p);
/* element i of an activation buffer p of be */
float *sd_act_at(weft_backend *be, float *p, int64_t i);

int sd_run_linear(weft_backend *be, const sd_linear *l, const float *x,
                  int64_t rows, float *y);
/* y += linear(x): the residual added by the product itself (a GEMM with
 * beta 1, the bias after it), one pass over y fewer than a linear and an
 * add. */
int sd_run_linear_add(weft_backend *be, const sd_linear *l, const float *x,
                      int64_t rows, float *y);
/* x [b, cin, h, w] -> y [b, cout, ho, wo]; ho and wo get the output size */
int sd_run_conv(weft_backend *be, const sd_conv *c, const float *x, int64_t b,
                int64_t h, int64_t w, float *y, int64_t *ho, int64_t *wo);
/* The same with x and y each channels first or last (x_cl: x [b, h, w,
 * cin]; y_cl: y [b, ho, wo, cout]): weft_conv2d_args' x_nhwc / y_nhwc. */
int sd_run_conv_cl(weft_backend *be, const sd_conv *c, const float *x,
                   bool x_cl, int64_t b, int64_t h, int64_t w, float *y,
                   bool y_cl, int64_t *ho, int64_t *wo);
/* Whether a model keeps its maps channels last between its layers: on a
 * backend with the channels-last ops, where its 3x3 weights went channels
 * last (hwc: CUDA's NHWC convolutions), when WEFT_SD_CL=1 (0 or unset:
 * channels first).  Off by default: on an H200 (BENCHMARKS.md, thirteenth
 * session) the UNet's sampler step took 6.9 ms channels last against 6.1,
 * its group norms' statistics over channels-last maps 15-35 us a call
 * against about 5 (the cause not found yet); the VAE's decode 9.1 against
 * 7.2.  On the CPU the channels-last ops are the NCHW ones on moved maps
 * (tests). */
bool sd_cl_wanted(weft_backend *be, bool hwc);
/* group_norm of [b, c, spatial] maps, or with cl of [b, spatial, c] ones
 * (the backend's group_norm_cl) */
int sd_group_norm(weft_backend *be, bool cl, const float *x, float *y,
                  int64_t b, int64_t c, int64_t spatial, int64_t groups,
                  float eps, const sd_norm *nm, weft_act act);
/* the VAE encoder's downsampler: F.pad(x, (0,1,0,1)) then stride-2 conv */
int sd_run_conv_pad_br(weft_backend *be, const sd_conv *c, const float *x,
                       int64_t b, int64_t h, int64_t w, float *y, int64_t *ho,
                       int64_t *wo);
/* y = resnet(x, tp): tp [b, cout] is temb's output (the time-embedding
 * projection, computed by the caller: a UNet makes all of its blocks' at
 * once) or NULL;
 * x [b, cin, h, w] -> y [b, cout, h, w], or with cl x [b, h, w, cin] -> y
 * [b, h, w, cout] (a backend with the channels-last ops) */
int sd_run_resnet(weft_backend *be, const sd_resnet *r, const float *x,
                  int64_t b, int64_t h, int64_t w, const float *tp, bool cl,
                  float *y);
/* The same on an owned x (transfer full: x is freed whatever happens),
 * the output in a new buffer *out (transfer full; NULL on failure).  Two
 * maps fewer live at once than sd_run_resnet's x, y, t1 and t2: the
 * shortcut reads x first and x is then normalized in place, and conv2
 * writes into the first temporary.  The same ops on the same values, so
 * the same bits. */
int sd_run_resnet_owned(weft_backend *be, const sd_resnet *r, float *x,
                        int64_t b, int64_t h, int64_t w, const float *tp,
                        bool cl, float **out);
/* A linear layer applied per pixel of NCHW images, writing channels-last:
 * x [b, in, hw] -> y [b, hw, out] (a 1x1 conv fused with the permute). */
int sd_run_linear_from_nchw(weft_backend *be, const sd_linear *l,
                            const float *x, int64_t b, int64_t hw, float *y);
/* The reverse: x [b, hw, in] -> y [b, out, hw] (y += that with add: a
 * residual added by the product, as sd_run_linear_add). */
int sd_run_linear_to_nchw(weft_backend *be, const sd_linear *l, const float *x,
                          int64_t b, int64_t hw, bool add, float *y);
/* torch's F.interpolate(mode="nearest") of n images of c channels, h x w
 * -> oh x ow: x [n, c, h, w] -> y [n, c, oh, ow], or with cl [n, h, w, c]
 * -> [n, oh, ow, c] (the backend's 2x kernel when it is exactly 2x; other
 * sizes on the host, on host copies for a device backend). */
int sd_upsample_nearest(weft_backend *be, bool cl, const float *x, float *y,
                        int64_t n, int64_t c, int64_t h, int64_t w, int64_t oh,
                        int64_t ow);
/* Multi-head attention: x [b, lq, dim] (queries), ctx [b, lk, ctx_dim] or
 * NULL (self-attention) -> y [b, lq, dim] (y += that with add: the
 * residual, through sd_run_linear_add).  causal for CLIP.  kv (may be
 * NULL): ctx's keys and values made already, sd_run_attn_kv's [b, lk,
 * 2 dim] (ctx is not read then). */
int sd_run_attn(weft_backend *be, const sd_attn *a, const float *x, int64_t b,
                int64_t lq, const float *ctx, int64_t lk, bool causal, bool add,
                const float *kv, float *y);
/* kv [rows, 2 dim] = ctx [rows, ctx_dim]'s keys and values, each row's k
 * then v: the product sd_run_attn makes where a's k and v weights are
 * stacked (a->fuse_kv); WEFT_EUNSUPPORTED where they are not. */
int sd_run_attn_kv(weft_backend *be, const sd_attn *a, const float *ctx,
                   int64_t rows, float *kv);

#endif
