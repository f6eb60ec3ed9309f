/* ops.h - pixel operations of the image plugin, on one float image.
 *
 * Images are height x width x channels floats, row-major (ComfyUI's IMAGE
 * layout without the batch axis).  Each function matches what ComfyUI
 * computes with torch, so graphs give the same pixels:
 *   resize  torch.nn.functional.interpolate as comfy.utils.common_upscale
 *           calls it: nearest-exact; bilinear and bicubic (A = -0.75) with
 *           align_corners=False and no antialiasing; area = adaptive average
 *           pooling.  Index and weight arithmetic is done in float32 as in
 *           torch's CPU kernels.
 *   crop    common_upscale's crop="center" (Python round, half to even).
 *   blur    comfy_extras/nodes_post_processing.py Blur: a (2r+1)^2 Gaussian
 *           on linspace(-1, 1) (so sigma is in units of the radius, not of
 *           pixels), reflect padding.
 *   blend   nodes_post_processing.py Blend, clamped to 0..1.
 *   invert  nodes.py ImageInvert: 1 - x, alpha (4th channel) kept.
 * Tests compare every mode with torch outputs (tests/image/test_ops.c). */
#ifndef WEFT_IMAGE_OPS_H
#define WEFT_IMAGE_OPS_H

#include <stdint.h>

/* Polled in long loops; NULL or fn == NULL never cancels.  Functions that
 * take one return WEFT_ECANCELED when fn returns non-zero. */
typedef struct weft__cancel {
  int (*fn)(void *ctx);
  void *ctx;
} weft__cancel;

/* ComfyUI ImageScale's upscale_method order (without lanczos). */
typedef enum weft__resize_mode {
  WEFT__RESIZE_NEAREST_EXACT = 0,
  WEFT__RESIZE_BILINEAR,
  WEFT__RESIZE_AREA,
  WEFT__RESIZE_BICUBIC,
  WEFT__RESIZE_COUNT
} weft__resize_mode;

/* NULL-terminated names in weft__resize_mode order. */
extern const char *const weft__resize_mode_names[];

/* A read-only image, possibly a window of a larger one: pixel (y, x)
 * channel k is data[y * row_stride + x * c + k]. */
typedef struct weft__view {
  const float *data;
  int64_t h, w, c;
  int64_t row_stride; /* floats between rows; w * c when contiguous */
} weft__view;

/* Resizes src into dst ([oh][ow][src.c], contiguous).  Returns 0,
 * WEFT_EINVAL for empty sizes or an unknown mode, or WEFT_ECANCELED. */
int weft__resize(weft__view src, float *dst, int64_t oh, int64_t ow,
                 weft__resize_mode mode, const weft__cancel *cancel);

/* ImageScale's target size: a 0 width or height keeps the aspect ratio
 * (max(1, round(other * in_w / in_h)), Python rounding); both 0 means no
 * scaling (the input size is returned). */
void weft__scale_target(int64_t in_w, int64_t in_h, int64_t *w, int64_t *h);

/* common_upscale's crop="center": the window of the input that has the
 * target's aspect ratio.  Writes its origin and size. */
void weft__center_crop(int64_t in_w, int64_t in_h, int64_t out_w, int64_t out_h,
                       int64_t *x, int64_t *y, int64_t *cw, int64_t *ch);

/* ImageScale on one image: optional center crop, then resize to oh x ow. */
int weft__image_scale(const float *src, int64_t h, int64_t w, int64_t c,
                      float *dst, int64_t oh, int64_t ow,
                      weft__resize_mode mode, int crop_center,
                      const weft__cancel *cancel);

/* dst = 1 - src, except a 4th (alpha) channel, copied.  npix pixels of c
 * channels; dst may equal src. */
void weft__invert(const float *src, int64_t npix, int64_t c, float *dst);

/* ImageBlur: radius >= 1 (0 copies), sigma > 0.  Every channel is blurred,
 * alpha too, as ComfyUI does.  Where ComfyUI's torch reflect padding fails
 * (radius >= side), the reflection simply repeats.  dst must not overlap
 * src.  Returns 0, WEFT_EINVAL, WEFT_ENOMEM or WEFT_ECANCELED. */
int weft__blur(const float *src, int64_t h, int64_t w, int64_t c, int radius,
               double sigma, float *dst, const weft__cancel *cancel);

typedef enum weft__blend_mode {
  WEFT__BLEND_NORMAL = 0,
  WEFT__BLEND_MULTIPLY,
  WEFT__BLEND_SCREEN,
  WEFT__BLEND_OVERLAY,
  WEFT__BLEND_SOFT_LIGHT,
  WEFT__BLEND_DIFFERENCE,
  WEFT__BLEND_COUNT
} weft__blend_mode;

/* NULL-terminated names in weft__blend_mode order (ComfyUI's). */
extern const char *const weft__blend_mode_names[];

/* ImageBlend on same-sized images a and b (npix pixels of c channels):
 * clamp(a * (1 - f) + mode(a, b) * f, 0, 1); with c == 4 the result keeps
 * a's alpha.  dst may equal a or b. */
void weft__blend(const float *a, const float *b, int64_t npix, int64_t c,
                 double factor, weft__blend_mode mode, float *dst);

/* The whole ImageBlend node on batches: a is [ab][ah][aw][ac], b is
 * [bb][bh][bw][bc].  b first takes a's channel count (ComfyUI's
 * image_alpha_fix: extra channels dropped, a missing alpha opaque), then
 * a's size (bicubic, center crop) when it differs; a batch of 1 on either
 * side is broadcast.  dst is [max(ab, bb)][ah][aw][ac].  Returns 0,
 * WEFT_EINVAL (batch sizes differ and neither is 1), WEFT_ENOMEM or
 * WEFT_ECANCELED. */
int weft__blend_batch(const float *a, int64_t ab, int64_t ah, int64_t aw,
                      int64_t ac, const float *b, int64_t bb, int64_t bh,
                      int64_t bw, int64_t bc, double factor,
                      weft__blend_mode mode, float *dst,
                      const weft__cancel *cancel);

#endif
