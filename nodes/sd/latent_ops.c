/* latent_ops.c - latent resizing as ComfyUI's LatentUpscale and
 * LatentUpscaleBy do it (comfy.utils.common_upscale: torch's interpolate on
 * each plane, or bislerp across the channels). */
#include <math.h>
#include <stdlib.h>

#include "ops.h"
#include "sd.h"

static const weft__resize_mode method_mode[SD_LATENT_BISLERP] = {
    WEFT__RESIZE_NEAREST_EXACT, WEFT__RESIZE_BILINEAR, WEFT__RESIZE_AREA,
    WEFT__RESIZE_BICUBIC};

const char *const sd_latent_methods[SD_LATENT_METHODS + 1] = {
    "nearest-exact", "bilinear", "area", "bicubic", "bislerp", NULL};

/* Python's round(): half to even */
static int64_t py_round(double x) {
  return (int64_t)nearbyint(x);
}

static int64_t at_least_64(int64_t v) {
  return v > 64 ? v : 64;
}

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

/* ---- bislerp ---------------------------------------------------------------
 * comfy/utils.py bislerp.  Its source positions come from torch's bilinear
 * interpolate of the index ramps [0, 1, ..., n-1] and [1, 2, ..., n-1, n-1];
 * the float arithmetic below is torch's CPU kernel's (the source index is
 * formed with one fused multiply-add, the two taps are summed unfused), so
 * the integer parts and ratios are bit-identical to torch's. */

typedef struct bislerp_axis {
  int64_t *c1, *c2; /* left and right source index per output index */
  float *ratio;     /* weight of the right one */
} bislerp_axis;

static void axis_free(bislerp_axis *a) {
  free(a->c1);
  free(a->c2);
  free(a->ratio);
}

/* generate_bilinear_data(in, out) */
static int axis_make(bislerp_axis *a, int64_t in, int64_t out) {
  a->c1 = malloc(sizeof *a->c1 * (size_t)out);
  a->c2 = malloc(sizeof *a->c2 * (size_t)out);
  a->ratio = malloc(sizeof *a->ratio * (size_t)out);
  if (!a->c1 || !a->c2 || !a->ratio) return WEFT_ENOMEM;
  float scale = (float)in / (float)out;
  for (int64_t o = 0; o < out; o++) {
    int64_t i0 = o, i1 = o;
    float l0 = 1.0f, l1 = 0.0f;
    if (in != out) { /* torch copies when the sizes are equal */
      float real = fmaf(scale, (float)o + 0.5f, -0.5f);
      if (real < 0.0f) real = 0.0f;
      i0 = (int64_t)floorf(real);
      if (i0 > in - 1) i0 = in - 1;
      l1 = real - (float)i0;
      l1 = l1 < 0.0f ? 0.0f : l1 > 1.0f ? 1.0f : l1;
      i1 = i0 + (i0 < in - 1 ? 1 : 0);
      l0 = 1.0f - l1;
    }
    /* the ramps' values at i0 and i1: i, and i + 1 except at the end */
    float r0 = (float)i0, r1 = (float)i1;
    float s0 = (float)(i0 < in - 1 ? i0 + 1 : in - 1);
    float s1 = (float)(i1 < in - 1 ? i1 + 1 : in - 1);
    float p = r0 * l0, q = r1 * l1;
    float v1 = p + q;
    p = s0 * l0, q = s1 * l1;
    float v2 = p + q;
    a->c1[o] = (int64_t)v1; /* .to(torch.int64) truncates */
    a->c2[o] = (int64_t)v2;
    a->ratio[o] = v1 - floorf(v1);
  }
  return 0;
}

/* slerp(b1, b2, r) on one pair of channel vectors (elements `stride`
 * apart), written to out (`ostride` apart).  Float32 in torch's order. */
static void slerp(const float *b1, const float *b2, int64_t stride, int64_t c,
                  float r, float *out, int64_t ostride) {
  float s1 = 0.0f, s2 = 0.0f;
  for (int64_t k = 0; k < c; k++) {
    float x = b1[k * stride], y = b2[k * stride];
    s1 += x * x;
    s2 += y * y;
  }
  float n1 = sqrtf(s1), n2 = sqrtf(s2);
  /* normalized vectors are zero where the norm is zero */
  float dot = 0.0f;
  for (int64_t k = 0; k < c; k++) {
    float x = n1 == 0.0f ? 0.0f : b1[k * stride] / n1;
    float y = n2 == 0.0f ? 0.0f : b2[k * stride] / n2;
    dot += x * y;
  }
  float rr = 1.0f - r;
  /* the thresholds are Python floats compared with a float32 tensor */
  if (dot > (float)(1.0 - 1e-5)) { /* the same direction: b1 */
    for (int64_t k = 0; k < c; k++)
      out[k * ostride] = b1[k * stride];
    return;
  }
  if (dot < (float)(1e-5 - 1.0)) { /* opposite: lerp */
    for (int64_t k = 0; k < c; k++) {
      float p = b1[k * stride] * rr, q = b2[k * stride] * r;
      out[k * ostride] = p + q;
    }
    return;
  }
  float omega = acosf(dot), so = sinf(omega);
  float w1 = sinf(rr * omega) / so, w2 = sinf(r * omega) / so;
  float p = n1 * rr, q = n2 * r;
  float norm = p + q; /* the norm is lerped, not slerped */
  for (int64_t k = 0; k < c; k++) {
    float x = n1 == 0.0f ? 0.0f : b1[k * stride] / n1;
    float y = n2 == 0.0f ? 0.0f : b2[k * stride] / n2;
    float a = w1 * x, b = w2 * y;
    float v = a + b;
    out[k * ostride] = v * norm;
  }
}

/* bislerp of [n, c, h, w] read with row stride `rs` (a crop window of a
 * wider latent) and plane stride `ps`, into dst [n, c, oh, ow]: along the
 * width first, then along the height. */
static int bislerp(const float *src, int64_t n, int64_t c, int64_t h, int64_t w,
                   int64_t rs, int64_t ps, float *dst, int64_t oh, int64_t ow) {
  bislerp_axis ax = {0}, ay = {0};
  float *mid = malloc(sizeof *mid * (size_t)(n * c * h * ow));
  int r = mid ? 0 : WEFT_ENOMEM;
  if (!r) r = axis_make(&ax, w, ow);
  if (!r) r = axis_make(&ay, h, oh);
  if (!r) {
    for (int64_t b = 0; b < n; b++) {
      const float *s = src + b * c * ps;
      float *m = mid + b * c * h * ow;
      for (int64_t y = 0; y < h; y++)
        for (int64_t x = 0; x < ow; x++)
          slerp(s + y * rs + ax.c1[x], s + y * rs + ax.c2[x], ps, c,
                ax.ratio[x], m + y * ow + x, h * ow);
      float *d = dst + b * c * oh * ow;
      for (int64_t y = 0; y < oh; y++)
        for (int64_t x = 0; x < ow; x++)
          slerp(m + ay.c1[y] * ow + x, m + ay.c2[y] * ow + x, h * ow, c,
                ay.ratio[y], d + y * ow + x, oh * ow);
    }
  }
  axis_free(&ax);
  axis_free(&ay);
  free(mid);
  return r;
}

int sd_latent_resize_nc(const float *src, int64_t n, int64_t c, int64_t h,
                        int64_t w, float *dst, int64_t oh, int64_t ow,
                        int method, bool crop) {
  if (method < 0 || method >= SD_LATENT_METHODS) return WEFT_EINVAL;
  if (method == SD_LATENT_BISLERP) {
    if (n < 0 || c < 1 || h < 1 || w < 1 || oh < 1 || ow < 1)
      return WEFT_EINVAL;
    /* common_upscale crops first, then calls bislerp */
    int64_t x0 = 0, y0 = 0, cw = w, ch = h;
    if (crop) weft__center_crop(w, h, ow, oh, &x0, &y0, &cw, &ch);
    if (cw < 1 || ch < 1) return WEFT_EINVAL;
    return bislerp(src + y0 * w + x0, n, c, ch, cw, w, h * w, dst, oh, ow);
  }
  /* each plane is a one-channel image for the image plugin's resampler,
   * which is torch's interpolate */
  for (int64_t p = 0; p < n * c; p++) {
    int r = weft__image_scale(src + p * h * w, h, w, 1, dst + p * oh * ow, oh,
                              ow, method_mode[method], crop, NULL);
    if (r) return r;
  }
  return 0;
}

int sd_latent_resize(const float *src, int64_t planes, int64_t h, int64_t w,
                     float *dst, int64_t oh, int64_t ow, int method,
                     bool crop) {
  return sd_latent_resize_nc(src, planes, 1, h, w, dst, oh, ow, method, crop);
}
