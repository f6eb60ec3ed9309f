/* sd.h - Stable Diffusion 1.x/2.x model code: checkpoint sources and key
 * translation, architecture configs, and the CLIP text encoder, UNet and VAE
 * forward passes over a kernel backend (kernels/backend.h).  Internal to
 * the sd plugin and its tests. */
#ifndef WEFT_SD_H
#define WEFT_SD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "weft/plugin.h"

#define SD_ERRLEN 1024

/* ---- weight sources ------------------------------------------------------ */

/* One safetensors file, seen through callbacks so that the plugin (host
 * weights service) and the tests (the reader directly) share this code. */
typedef struct sd_file {
  void *handle;
  int (*get)(void *handle, const char *key, weft_tensor *view);
  const char *(*meta)(void *handle, const char *key);
  int32_t (*count)(void *handle);
  const char *(*key_at)(void *handle, int32_t i);
  const char *path; /* for messages */
} sd_file;

typedef enum sd_layout {
  SD_LAYOUT_LDM,      /* one file: model.diffusion_model.*, first_stage_model.*,
                         cond_stage_model.transformer.* */
  SD_LAYOUT_DIFFUSERS /* a folder: unet/, vae/, text_encoder/ */
} sd_layout;

/* The parts of a checkpoint, and a ControlNet's (its own file). */
typedef enum sd_part {
  SD_UNET = 0,
  SD_VAE,
  SD_CLIP,
  SD_PARTS,
  SD_CONTROL = SD_PARTS,
  SD_ALL_PARTS
} sd_part;

typedef struct sd_unet_cfg {
  int in_channels, out_channels;
  int n_levels;
  int channels[8];        /* block_out_channels */
  bool attn[8];           /* level i of the down path has cross-attention */
  bool up_attn[8];        /* up block i (deepest first) has cross-attention */
  int layers_per_block;
  int transformer_depth;
  int heads[8];           /* attention heads per level (0: use head_dim) */
  int head_dim;           /* SD2 style: channels / head_dim heads */
  int context_dim;
  int norm_groups;
  float norm_eps;
  bool linear_proj;       /* use_linear_projection (SD2) */
  bool mid_attn;
} sd_unet_cfg;

typedef struct sd_vae_cfg {
  int in_channels, out_channels, latent_channels;
  int n_levels;
  int channels[8];
  int layers_per_block;
  int norm_groups;
  float scaling_factor;
  bool quant_conv, post_quant_conv;
} sd_vae_cfg;

typedef struct sd_clip_cfg {
  int vocab, max_pos, hidden, layers, heads, intermediate;
  float eps;
  bool quick_gelu;
  int eos_token; /* pooled output: the first EOS (or the argmax id) */
} sd_clip_cfg;

/* A weight the models hold, by its diffusers name: what LoRA patches. */
typedef struct sd_param {
  sd_part part;
  char *name;     /* "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight" */
  float *data;    /* the model's own array (stable for the model's life) */
  int64_t numel;
  /* unread: data is allocated but its values are still only in the file,
   * src (src_dt), which stays mapped while the checkpoint's weights are
   * held (sd_ckpt.defer_reads); sd_param_read reads them */
  bool unread;
  weft_dtype src_dt;
  const void *src;
} sd_param;

typedef struct sd_ckpt {
  sd_layout layout;
  sd_file files[SD_ALL_PARTS]; /* LDM: the same file three times */
  bool has[SD_ALL_PARTS];
  sd_unet_cfg unet;
  sd_vae_cfg vae;
  sd_clip_cfg clip;
  sd_unet_cfg control;    /* a ControlNet's encoder */
  int hint_channels[8];   /* its conditioning embedding's widths */
  int n_hint;
  char clip_prefix[64];   /* where text_model.* lives in its file */
  char err[SD_ERRLEN];
  char **used;            /* keys sd_weight read, to name the ones left */
  int n_used, cap_used;
  sd_param *params;       /* every weight loaded, for LoRA */
  int n_params, cap_params;
  /* The masters' values are read where they are needed, not by sd_weight:
   * a device upload fills its 16-bit image straight from the file and
   * reads only the fp32 and host-only weights (sd_vram_defer), LoRA reads
   * the weights it patches (sd_param_read).  Set by the loader where the
   * models go to a device: reading 860 M values into fp32 that nothing
   * reads was half a fresh process's load. */
  bool defer_reads;
  /* No files: every weight is drawn at random (benchmarks at real model
   * sizes); configs must then come as JSON. */
  bool random_weights;
  uint64_t rng;
} sd_ckpt;

/* Reads configs: JSON from config_json[part] (a diffusers config.json
 * text, or NULL) or the single file's "weft.config" metadata, with anything
 * missing derived from tensor shapes and the family's conventions.  The
 * files must be set; returns 0 or a WEFT_E* code with ck->err set. */
int sd_ckpt_configure(sd_ckpt *ck, const char *const config_json[SD_PARTS]);

/* A ControlNet file (files[SD_CONTROL] set): its config from JSON (a
 * diffusers ControlNetModel config.json, or NULL) or from the tensors. */
int sd_ckpt_configure_control(sd_ckpt *ck, const char *config_json);

/* Fetches a weight by its diffusers name (translated for LDM files) as
 * float32: *out is malloc'd (caller frees); with ck->defer_reads its values
 * are not read yet (the param is unread).  numel, when > 0, must match.
 * Returns 0, or WEFT_ENOENT / WEFT_EFORMAT with ck->err naming the key. */
int sd_weight(sd_ckpt *ck, sd_part part, const char *name, int64_t numel,
              float **out);
/* bytes of host memory (released with free): a large block 2 MiB aligned
 * with transparent huge pages asked for, so that its first touch faults
 * 512 times less often (the masters' and the device images' fill is
 * mostly those faults and the zeroing behind them). */
void *sd_huge_alloc(size_t bytes);
/* Lists the tensors of the model parts that no loaded layer read (an
 * architecture weft got wrong, or extra weights), as "N unused: a, b, ..."
 * into out (at most len bytes); returns N.  Known leftovers of real
 * checkpoints (position_ids, EMA copies, schedule buffers) are not
 * counted. */
int sd_ckpt_unused(const sd_ckpt *ck, char *out, size_t len);
/* Frees what the loads recorded (the used-key list); keep_params keeps the
 * parameter registry (freed later by sd_ckpt_free_params). */
void sd_ckpt_release(sd_ckpt *ck);
void sd_ckpt_free_params(sd_ckpt *ck);
/* Reads an unread param's values from its file (nothing if read). */
void sd_param_read(sd_param *p);
/* The registry entry of a diffusers name, or NULL. */
const sd_param *sd_ckpt_param(const sd_ckpt *ck, sd_part part,
                              const char *name);

/* The LDM name of a diffusers name ("" when it has none). */
void sd_ldm_name(const sd_ckpt *ck, sd_part part, const char *name, char *out,
                 size_t len);

/* ---- models ------------------------------------------------------------- */

typedef struct sd_clip sd_clip;
typedef struct sd_unet sd_unet;
typedef struct sd_vae sd_vae;

int sd_clip_load(sd_ckpt *ck, sd_clip **out);
void sd_clip_free(sd_clip *m);
const sd_clip_cfg *sd_clip_config(const sd_clip *m);
/* ids [batch, 77] -> hidden [batch, 77, hidden] after `layer` layers
 * (layer <= 0 counts from the end: 0 or -1 = all layers, -2 = penultimate)
 * with the final layer norm applied (as ComfyUI does for clip skip);
 * pooled [batch, hidden] (may be NULL): the returned state at the first
 * EOS token (transformers' pooled output when all layers run). */
int sd_clip_forward(sd_clip *m, weft_backend *be, const int32_t *ids,
                    int64_t batch, int layer, float *hidden, float *pooled);

int sd_unet_load(sd_ckpt *ck, sd_unet **out);
void sd_unet_free(sd_unet *m);
const sd_unet_cfg *sd_unet_config(const sd_unet *m);
/* ControlNet residuals for one UNet call, already scaled: down[i] is added
 * to the i-th skip the down path keeps (conv_in's output first), mid to
 * the middle block's output.  Shapes match those tensors. */
typedef struct sd_control {
  const float *const *down;
  int n;
  const float *mid;
} sd_control;

/* x [b, in, h, w], t [b] timesteps, ctx [b, ctx_len, context_dim], control
 * NULL or residuals -> out [b, out, h, w].  Any size: where a downsampling
 * rounds an odd size up, the upsampling returns to the skip's size, as
 * diffusers and ComfyUI do. */
int sd_unet_forward(sd_unet *m, weft_backend *be, const float *x, int64_t b,
                    int64_t h, int64_t w, const float *t, const float *ctx,
                    int64_t ctx_len, const sd_control *ctl, float *out);

/* Keeps a device copy of the text context ctx [n] (host memory that stays
 * unchanged until sd_unet_drop_ctx): sd_unet_forward then reads a ctx
 * inside that range from the copy instead of uploading it again (a
 * sampler's every step; 473 KB took ~0.1 ms a step on an H200).  With
 * every weight on the device, the cross-attentions' keys and values of its
 * sequences of `tokens` tokens are made once too, and a forward whose ctx
 * is whole sequences of it reads them (16 products a step of SD1.5; a
 * forward after the weights changed, a LoRA's sd_devw_sync, makes its own
 * again).  Nothing
 * is kept on a host backend.  One context at a time: a new one drops the
 * last.  0 or the upload's (or products') error. */
int sd_unet_keep_ctx(sd_unet *m, weft_backend *be, const float *ctx, int64_t n,
                     int64_t tokens);
void sd_unet_drop_ctx(sd_unet *m);
/* The kept context's host range, NULL when none is kept. */
const float *sd_unet_kept_ctx(const sd_unet *m);

/* The two halves, for ControlNets (which are a UNet's down path and middle):
 * encode keeps the skips, the middle's output and the time embedding. */
typedef struct sd_fmap {
  float *d;
  int64_t c, h, w;
} sd_fmap;
typedef struct sd_unet_feats {
  sd_fmap skip[64];
  int n;
  sd_fmap mid;
  float *tproj; /* every ResNet block's time-embedding projection */
  int64_t b;
  bool cl; /* the maps channels last ([b, h, w, c]): no ControlNet
            * residuals then (sd_unet_forward keeps them channels first
            * when it is given some) */
} sd_unet_feats;
/* add_in (may be NULL) is added to conv_in's output (a ControlNet's hint). */
int sd_unet_encode(sd_unet *m, weft_backend *be, const float *x, int64_t b,
                   int64_t h, int64_t w, const float *t, const float *ctx,
                   int64_t ctx_len, const float *add_in, sd_unet_feats *f);
/* Consumes f (frees its buffers). */
int sd_unet_decode(sd_unet *m, weft_backend *be, sd_unet_feats *f,
                   const float *ctx, int64_t ctx_len, const sd_control *ctl,
                   float *out);
void sd_unet_feats_free(weft_backend *be, sd_unet_feats *f);
/* A UNet (or, encoder_only, just its down path and middle) from the tensors
 * of `part` with the given architecture. */
int sd_unet_load_part(sd_ckpt *ck, sd_part part, const sd_unet_cfg *cfg,
                      bool encoder_only, sd_unet **out);

int sd_vae_load(sd_ckpt *ck, sd_vae **out);
void sd_vae_free(sd_vae *m);
const sd_vae_cfg *sd_vae_config(const sd_vae *m);
/* image [b, 3, h, w] in [-1, 1] -> moments [b, 2*latent, h/f, w/f] (mean
 * then logvar, after quant_conv). */
int sd_vae_encode(sd_vae *m, weft_backend *be, const float *image, int64_t b,
                  int64_t h, int64_t w, float *moments);
/* latent [b, latent, h, w] (unscaled) -> image [b, 3, h*f, w*f] */
int sd_vae_decode(sd_vae *m, weft_backend *be, const float *latent, int64_t b,
                  int64_t h, int64_t w, float *image);
/* The same with the latent in be's memory when on_device (a device
 * tensor of the graph, ABI 1.4), not copied in. */
int sd_vae_decode_from(sd_vae *m, weft_backend *be, const float *latent,
                       bool on_device, int64_t b, int64_t h, int64_t w,
                       float *image);
int sd_vae_factor(const sd_vae *m); /* 2^(levels-1) */

/* ---- ControlNet ---------------------------------------------------------- */

typedef struct sd_cnet sd_cnet;
int sd_cnet_load(sd_ckpt *ck, sd_cnet **out);
void sd_cnet_free(sd_cnet *m);
/* The UNet's input channels and the hint's downscale (8 for SD). */
int sd_cnet_hint_factor(const sd_cnet *m);
/* Residuals for a UNet call: x [b, in, h, w] (the UNet's input, already
 * scaled), t [b], ctx [b, lk, dim], hint [b, 3, h*f, w*f] in 0..1.  out
 * gets malloc'd residual buffers (down[n], mid) multiplied by strength and
 * ADDED to what out already holds when accumulate (chained ControlNets). */
typedef struct sd_cnet_out {
  float *down[64];
  int64_t down_numel[64];
  int n;
  float *mid;
  int64_t mid_numel;
} sd_cnet_out;
int sd_cnet_forward(sd_cnet *m, weft_backend *be, const float *x, int64_t b,
                    int64_t h, int64_t w, const float *t, const float *ctx,
                    int64_t lk, const float *hint, float strength,
                    sd_cnet_out *out);
void sd_cnet_out_free(sd_cnet_out *o);

/* ---- tiles ------------------------------------------------------------------ */

/* fn maps a [cin, h, w] tile to [cout, round(h*up), round(w*up)]. */
typedef int (*sd_tile_fn)(void *user, const float *in, int64_t h, int64_t w,
                          float *out);
/* comfy.utils.tiled_scale on one image s [cin, H, W] -> output
 * [cout, round(H*up), round(W*up)]: tiles of tile_x x tile_y with `overlap`
 * (input units), blended with linear feathering. */
int sd_tiled_scale(const float *s, int64_t cin, int64_t H, int64_t W,
                   int64_t tile_x, int64_t tile_y, int64_t overlap, double up,
                   int64_t cout, sd_tile_fn fn, void *user, float *output);

/* The VAE over tiles, as ComfyUI's VAEDecodeTiled / VAEEncodeTiled: three
 * tilings (decode: tall, wide, square; encode: square, wide, tall) averaged.
 * One image: latent [lat, h, w] (tiles in latent units) -> image
 * [3, h*f, w*f] in [-1, 1]; pixels [3, H, W] in 0..1 (tiles in pixels) ->
 * latent [lat, H/f, W/f], the posterior's mean.  WEFT_EINVAL when a tile
 * is not larger than the overlap where tiling is needed. */
typedef struct sd_vae_tiles {
  sd_vae *vae;
  weft_backend *be;
  /* (optional) runs each tile's forward, fn(arg, be): the nodes plan it
   * (sd_plan_call); NULL: fn runs as it is */
  int (*run)(void *user, weft_backend *be,
             int (*fn)(void *arg, weft_backend *be), void *arg);
  void *run_user;
} sd_vae_tiles;
int sd_vae_tiles_decode(const sd_vae_tiles *t, const float *latent, int64_t h,
                        int64_t w, int64_t tile_x, int64_t tile_y,
                        int64_t overlap, float *image);
int sd_vae_tiles_encode(const sd_vae_tiles *t, const float *pixels, int64_t H,
                        int64_t W, int64_t tile_x, int64_t tile_y,
                        int64_t overlap, float *latent);
/* The same with t = {vae, be}. */
int sd_vae_decode_tiled(sd_vae *vae, weft_backend *be, const float *latent,
                        int64_t h, int64_t w, int64_t tile_x, int64_t tile_y,
                        int64_t overlap, float *image);
int sd_vae_encode_tiled(sd_vae *vae, weft_backend *be, const float *pixels,
                        int64_t H, int64_t W, int64_t tile_x, int64_t tile_y,
                        int64_t overlap, float *latent);
/* One tile's forward at h x w (decode: latent units; encode: pixels) on
 * zero input through t->run, output discarded: for recording a plan. */
int sd_vae_tiles_probe(const sd_vae_tiles *t, bool decode, int64_t h,
                       int64_t w);
/* Every tile those passes run, in order, as each(user, tile h, tile w) (in
 * the input's units: latent for decode, pixels for encode), without
 * running any: for planning.  The first non-zero each() return, or
 * WEFT_EINVAL as the passes. */
int sd_vae_tiles_each(bool decode, int64_t H, int64_t W, int64_t tile_x,
                      int64_t tile_y, int64_t overlap,
                      int (*each)(void *user, int64_t h, int64_t w),
                      void *user);
/* pixels [3, h, w] in 0..1 -> the posterior's mean [lat, h/f, w/f] */
int sd_vae_encode_one(sd_vae *vae, weft_backend *be, const float *pixels,
                      int64_t h, int64_t w, float *latent);

/* ---- latent resizing (LatentUpscale, LatentUpscaleBy) ---------------------- */

/* LatentUpscale's methods, in ComfyUI's order, NULL-terminated.  The first
 * four are torch's interpolate on each plane; bislerp slerps the channel
 * vectors of neighbouring positions (comfy.utils.bislerp). */
enum { SD_LATENT_BISLERP = 4, SD_LATENT_METHODS = 5 };
extern const char *const sd_latent_methods[SD_LATENT_METHODS + 1];

/* Resizes a latent [n, c, h, w] to [n, c, oh, ow] with method (an index into
 * sd_latent_methods), optionally center-cropped to the new aspect first, as
 * comfy.utils.common_upscale.  dst must not overlap src.  Returns 0,
 * WEFT_EINVAL (unknown method, empty size or crop) or WEFT_ENOMEM. */
int sd_latent_resize_nc(const float *src, int64_t n, int64_t c, int64_t h,
                        int64_t w, float *dst, int64_t oh, int64_t ow,
                        int method, bool crop);
/* The same on `planes` planes of h x w floats taken as one channel each
 * (bislerp then only picks or lerps between neighbours). */
int sd_latent_resize(const float *src, int64_t planes, int64_t h, int64_t w,
                     float *dst, int64_t oh, int64_t ow, int method, bool crop);

/* LatentUpscale's target latent size from pixel width/height (0 keeps the
 * aspect, at least 64 px each): false when both are 0 (no change). */
bool sd_latent_upscale_size(int64_t lw, int64_t lh, int64_t width,
                            int64_t height, int64_t *ow, int64_t *oh);
/* LatentUpscaleBy: round(size * scale), Python rounding. */
void sd_latent_upscale_by_size(int64_t lw, int64_t lh, double scale,
                               int64_t *ow, int64_t *oh);

/* ---- the denoiser a sampler calls ---------------------------------------- */

#include "schedule.h"

typedef enum sd_prediction { SD_PRED_EPS = 0, SD_PRED_V } sd_prediction;

/* ComfyUI's CFG denoiser over an SD UNet: D(x, sigma) = uncond + (cond -
 * uncond) * cfg of the model's denoised estimates, cond and uncond in one
 * UNet batch (uncond rows first), the UNet fed x / sqrt(sigma^2 + 1) at the
 * integer timestep nearest sigma; cfg == 1 skips the uncond half. */
typedef struct sd_denoiser {
  sd_unet *unet;
  weft_backend *be;
  const weft_schedule *sched;
  sd_prediction pred;
  int64_t batch, per;  /* latents, and elements per latent */
  int64_t h, w;
  float cfg;
  float *ctx;          /* [2 * batch, tokens, dim] */
  int64_t tokens, dim;
  float *x_in, *out, *t;
  /* ControlNets (may be NULL): fills out with residuals for the UNet call
   * on x_in [rows, C, h, w] (rows: uncond then cond, or cond only when
   * cond_only), at sigma with timesteps t and contexts ctx */
  int (*control)(void *user, const float *x_in, int64_t rows, bool cond_only,
                 int64_t h, int64_t w, const float *t, const float *ctx,
                 int64_t tokens, float sigma, sd_cnet_out *out);
  void *control_user;
} sd_denoiser;

/* shape [batch, channels, h, w]; the contexts [tokens, dim] (one prompt
 * each) are repeated to their lengths' least common multiple, as ComfyUI
 * does (repeated keys leave attention unchanged), and kept on be's device
 * for the UNet's calls (sd_unet_keep_ctx) until sd_denoiser_free.  0,
 * WEFT_ENOMEM or the upload's error. */
int sd_denoiser_init(sd_denoiser *d, sd_unet *unet, weft_backend *be,
                     const weft_schedule *sched, sd_prediction pred,
                     const int64_t shape[4], float cfg, const float *uncond,
                     int64_t uncond_tokens, const float *cond,
                     int64_t cond_tokens);
void sd_denoiser_free(sd_denoiser *d);
/* The weft_sampler_io denoise callback (user = the sd_denoiser). */
int sd_denoise(void *user, const float *x, float sigma, float *denoised);

#endif
