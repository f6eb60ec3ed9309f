/* latent_ops.c - latent resizing as ComfyUI's LatentUpscale and
 * LatentUpscaleBy do it (comfy.utils.common_upscale on each plane). */
#include <math.h>

#include "ops.h"
#include "sd.h"

static const weft__resize_mode method_mode[SD_LATENT_METHODS] = {
    WEFT__RESIZE_NEAREST_EXACT, WEFT__RESIZE_BILINEAR, WEFT__RESIZE_AREA,
    WEFT__RESIZE_BICUBIC};

const char *const sd_latent_methods[SD_LATENT_METHODS + 1] = {
    "nearest-exact", "bilinear", "area", "bicubic", NULL};

/* Python's round(): half to even */
static int64_t py_round(double x) { return (int64_t)nearbyint(x); }

static int64_t at_least_64(int64_t v) { return v > 64 ? v : 64; }

bool sd_latent_upscale_size(int64_t lw, int64_t lh, int64_t width,
                            int64_t height, int64_t *ow, int64_t *oh) {
  if (width == 0 && height == 0) return false;
  if (width == 0) {
    height = at_least_64(height);
    width = at_least_64(py_round((double)lw * (double)height / (double)lh));
  } else if (height == 0) {
    width = at_least_64(width);
    height = at_least_64(py_round((double)lh * (double)width / (double)lw));
  } else {
    width = at_least_64(width), height = at_least_64(height);
  }
  *ow = width / 8, *oh = height / 8;
  return true;
}

void sd_latent_upscale_by_size(int64_t lw, int64_t lh, double scale,
                               int64_t *ow, int64_t *oh) {
  *ow = py_round((double)lw * scale);
  *oh = py_round((double)lh * scale);
}

int sd_latent_resize(const float *src, int64_t planes, int64_t h, int64_t w,
                     float *dst, int64_t oh, int64_t ow, int method,
                     bool crop) {
  if (method < 0 || method >= SD_LATENT_METHODS) return WEFT_EINVAL;
  /* each plane is a one-channel image for the image plugin's resampler,
   * which is torch's interpolate */
  for (int64_t p = 0; p < planes; p++) {
    int r = weft__image_scale(src + p * h * w, h, w, 1, dst + p * oh * ow, oh,
                              ow, method_mode[method], crop, NULL);
    if (r) return r;
  }
  return 0;
}
