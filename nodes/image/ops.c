/* ops.c - resize, crop, blur, blend, invert: ComfyUI's torch math in C. */
#include "ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "weft/error.h"

const char *const weft__resize_mode_names[] = {"nearest-exact", "bilinear",
                                               "area", "bicubic", NULL};

const char *const weft__blend_mode_names[] = {
    "normal",     "multiply",   "screen", "overlay",
    "soft_light", "difference", NULL};

static int cancelled(const weft__cancel *c) {
  return c && c->fn && c->fn(c->ctx);
}

/* Rows between cancellation polls: cheap next to the work of a row. */
#define POLL_ROWS 32

/* ---- resize ------------------------------------------------------------- */

/* Per output index along one axis: up to 4 source indices and weights. */
typedef struct axis_taps {
  int64_t n;    /* taps per output index: 1, 2 or 4 */
  int64_t *idx; /* [out][n] */
  float *wt;    /* [out][n] */
} axis_taps;

static void taps_free(axis_taps *t) {
  free(t->idx);
  free(t->wt);
}

static int taps_alloc(axis_taps *t, int64_t out, int64_t n) {
  t->n = n;
  t->idx = malloc(sizeof *t->idx * out * n);
  t->wt = malloc(sizeof *t->wt * out * n);
  return t->idx && t->wt ? 0 : WEFT_ENOMEM;
}

/* torch: compute_scales_value<float>(nullopt, in, out) */
static float axis_scale(int64_t in, int64_t out) {
  return (float)in / (float)out;
}

static int taps_nearest_exact(axis_taps *t, int64_t in, int64_t out) {
  if (taps_alloc(t, out, 1)) return WEFT_ENOMEM;
  float scale = axis_scale(in, out);
  for (int64_t o = 0; o < out; o++) {
    /* nearest_neighbor_exact_compute_source_index: the product is formed in
     * double, then floorf() rounds it to float first. */
    int64_t s = (int64_t)floorf((float)(((double)o + 0.5) * scale));
    t->idx[o] = s < in - 1 ? s : in - 1;
    t->wt[o] = 1.0f;
  }
  return 0;
}

static int taps_bilinear(axis_taps *t, int64_t in, int64_t out) {
  if (taps_alloc(t, out, 2)) return WEFT_ENOMEM;
  float scale = axis_scale(in, out);
  for (int64_t o = 0; o < out; o++) {
    /* one fused multiply-add, as torch computes the source index: it
     * decides the neighbours when the product lands on an integer */
    float real = fmaf(scale, (float)o + 0.5f, -0.5f);
    if (real < 0.0f) real = 0.0f;
    int64_t i0 = (int64_t)real;
    int64_t i1 = i0 + (i0 < in - 1 ? 1 : 0);
    float l1 = real - (float)i0;
    l1 = l1 < 0.0f ? 0.0f : l1 > 1.0f ? 1.0f : l1;
    t->idx[2 * o] = i0;
    t->idx[2 * o + 1] = i1;
    t->wt[2 * o] = 1.0f - l1;
    t->wt[2 * o + 1] = l1;
  }
  return 0;
}

static float cubic1(float x, float a) {
  return ((a + 2.0f) * x - (a + 3.0f)) * x * x + 1.0f;
}

static float cubic2(float x, float a) {
  return ((a * x - 5.0f * a) * x + 8.0f * a) * x - 4.0f * a;
}

static int taps_bicubic(axis_taps *t, int64_t in, int64_t out) {
  if (taps_alloc(t, out, 4)) return WEFT_ENOMEM;
  float scale = axis_scale(in, out);
  const float a = -0.75f;
  for (int64_t o = 0; o < out; o++) {
    float real = scale * ((float)o + 0.5f) - 0.5f; /* not clamped: cubic */
    int64_t i = (int64_t)floorf(real);
    if (i > in - 1) i = in - 1;
    float l = real - (float)i;
    l = l < 0.0f ? 0.0f : l > 1.0f ? 1.0f : l;
    float w[4] = {cubic2(l + 1.0f, a), cubic1(l, a), cubic1(1.0f - l, a),
                  cubic2(1.0f - l + 1.0f, a)};
    for (int j = 0; j < 4; j++) {
      int64_t k = i - 1 + j;
      k = k < 0 ? 0 : k > in - 1 ? in - 1 : k;
      t->idx[4 * o + j] = k;
      t->wt[4 * o + j] = w[j];
    }
  }
  return 0;
}

static int taps_make(axis_taps *t, int64_t in, int64_t out,
                     weft__resize_mode mode) {
  switch (mode) {
  case WEFT__RESIZE_NEAREST_EXACT: return taps_nearest_exact(t, in, out);
  case WEFT__RESIZE_BILINEAR: return taps_bilinear(t, in, out);
  case WEFT__RESIZE_BICUBIC: return taps_bicubic(t, in, out);
  default: return WEFT_EINVAL;
  }
}

/* Separable interpolation: sum over rows of wy * (sum over columns of
 * wx * x), accumulated in float in tap order as torch's generic upsample
 * kernel does. */
static int resize_separable(weft__view s, float *dst, int64_t oh, int64_t ow,
                            weft__resize_mode mode,
                            const weft__cancel *cancel) {
  axis_taps ty = {0}, tx = {0};
  int rc = taps_make(&ty, s.h, oh, mode);
  if (!rc) rc = taps_make(&tx, s.w, ow, mode);
  float *acc = rc ? NULL : malloc(sizeof *acc * s.c);
  if (!rc && !acc) rc = WEFT_ENOMEM;
  for (int64_t y = 0; !rc && y < oh; y++) {
    if (y % POLL_ROWS == 0 && cancelled(cancel)) {
      rc = WEFT_ECANCELED;
      break;
    }
    for (int64_t x = 0; x < ow; x++) {
      float *o = dst + (y * ow + x) * s.c;
      for (int64_t j = 0; j < ty.n; j++) {
        const float *row = s.data + ty.idx[y * ty.n + j] * s.row_stride;
        float wy = ty.wt[y * ty.n + j];
        for (int64_t k = 0; k < s.c; k++) {
          float v = 0.0f;
          for (int64_t i = 0; i < tx.n; i++)
            v += row[tx.idx[x * tx.n + i] * s.c + k] * tx.wt[x * tx.n + i];
          acc[k] = j == 0 ? v * wy : acc[k] + v * wy;
        }
      }
      memcpy(o, acc, sizeof *acc * s.c);
    }
  }
  free(acc);
  taps_free(&ty);
  taps_free(&tx);
  return rc;
}

/* adaptive_avg_pool2d: output cell i averages input [floor(i*in/out),
 * ceil((i+1)*in/out)). */
static int resize_area(weft__view s, float *dst, int64_t oh, int64_t ow,
                       const weft__cancel *cancel) {
  float *acc = malloc(sizeof *acc * s.c);
  if (!acc) return WEFT_ENOMEM;
  for (int64_t y = 0; y < oh; y++) {
    if (y % POLL_ROWS == 0 && cancelled(cancel)) {
      free(acc);
      return WEFT_ECANCELED;
    }
    int64_t y0 = (y * s.h) / oh, y1 = ((y + 1) * s.h + oh - 1) / oh;
    for (int64_t x = 0; x < ow; x++) {
      int64_t x0 = (x * s.w) / ow, x1 = ((x + 1) * s.w + ow - 1) / ow;
      for (int64_t k = 0; k < s.c; k++)
        acc[k] = 0.0f;
      for (int64_t iy = y0; iy < y1; iy++)
        for (int64_t ix = x0; ix < x1; ix++)
          for (int64_t k = 0; k < s.c; k++)
            acc[k] += s.data[iy * s.row_stride + ix * s.c + k];
      float *o = dst + (y * ow + x) * s.c;
      for (int64_t k = 0; k < s.c; k++)
        o[k] = acc[k] / (float)(y1 - y0) / (float)(x1 - x0);
    }
  }
  free(acc);
  return 0;
}

int weft__resize(weft__view src, float *dst, int64_t oh, int64_t ow,
                 weft__resize_mode mode, const weft__cancel *cancel) {
  if (src.h <= 0 || src.w <= 0 || src.c <= 0 || oh <= 0 || ow <= 0 ||
      src.row_stride < src.w * src.c)
    return WEFT_EINVAL;
  if (mode == WEFT__RESIZE_AREA) return resize_area(src, dst, oh, ow, cancel);
  if (mode < 0 || mode >= WEFT__RESIZE_COUNT) return WEFT_EINVAL;
  return resize_separable(src, dst, oh, ow, mode, cancel);
}

void weft__scale_target(int64_t in_w, int64_t in_h, int64_t *w, int64_t *h) {
  if (*w == 0 && *h == 0) {
    *w = in_w;
    *h = in_h;
  } else if (*w == 0) {
    /* Python: max(1, round(in_w * height / in_h)); nearbyint rounds half to
     * even like round() under the default rounding mode. */
    double v = nearbyint((double)in_w * (double)*h / (double)in_h);
    *w = v < 1.0 ? 1 : (int64_t)v;
  } else if (*h == 0) {
    double v = nearbyint((double)in_h * (double)*w / (double)in_w);
    *h = v < 1.0 ? 1 : (int64_t)v;
  }
}

void weft__center_crop(int64_t in_w, int64_t in_h, int64_t out_w, int64_t out_h,
                       int64_t *x, int64_t *y, int64_t *cw, int64_t *ch) {
  double old_aspect = (double)in_w / (double)in_h;
  double new_aspect = (double)out_w / (double)out_h;
  int64_t cx = 0, cy = 0;
  if (old_aspect > new_aspect)
    cx = (int64_t)nearbyint((in_w - in_w * (new_aspect / old_aspect)) / 2.0);
  else if (old_aspect < new_aspect)
    cy = (int64_t)nearbyint((in_h - in_h * (old_aspect / new_aspect)) / 2.0);
  *x = cx;
  *y = cy;
  *cw = in_w - 2 * cx;
  *ch = in_h - 2 * cy;
}

int weft__image_scale(const float *src, int64_t h, int64_t w, int64_t c,
                      float *dst, int64_t oh, int64_t ow,
                      weft__resize_mode mode, int crop_center,
                      const weft__cancel *cancel) {
  weft__view v = {src, h, w, c, w * c};
  if (crop_center) {
    int64_t x0, y0, cw, chh;
    weft__center_crop(w, h, ow, oh, &x0, &y0, &cw, &chh);
    if (cw <= 0 || chh <= 0) return WEFT_EINVAL;
    v.data = src + y0 * w * c + x0 * c;
    v.w = cw;
    v.h = chh;
  }
  return weft__resize(v, dst, oh, ow, mode, cancel);
}

/* ---- invert ------------------------------------------------------------- */

void weft__invert(const float *src, int64_t npix, int64_t c, float *dst) {
  for (int64_t p = 0; p < npix; p++)
    for (int64_t k = 0; k < c; k++) {
      float v = src[p * c + k];
      dst[p * c + k] = (c == 4 && k == 3) ? v : 1.0f - v;
    }
}

/* ---- blur --------------------------------------------------------------- */

/* Mirror without repeating the edge (torch 'reflect'), for any offset. */
static int64_t reflect_index(int64_t i, int64_t n) {
  if (n == 1) return 0;
  int64_t period = 2 * (n - 1);
  i %= period;
  if (i < 0) i += period;
  return i < n ? i : period - i;
}

int weft__blur(const float *src, int64_t h, int64_t w, int64_t c, int radius,
               double sigma, float *dst, const weft__cancel *cancel) {
  if (h <= 0 || w <= 0 || c <= 0 || radius < 0 || !(sigma > 0.0))
    return WEFT_EINVAL;
  if (radius == 0) {
    memcpy(dst, src, sizeof *dst * h * w * c);
    return 0;
  }
  int k = 2 * radius + 1;
  /* ComfyUI's kernel exp(-(x^2 + y^2) / (2 sigma^2)) over linspace(-1, 1, k)
   * squared, normalised, is the outer product of this normalised 1-D one. */
  double *wt = malloc(sizeof *wt * k);
  int64_t *ix = malloc(sizeof *ix * (w + 2 * radius));
  int64_t *iy = malloc(sizeof *iy * (h + 2 * radius));
  float *tmp = malloc(sizeof *tmp * h * w * c);
  double *acc = malloc(sizeof *acc * c);
  int rc = 0;
  if (!wt || !ix || !iy || !tmp || !acc) {
    rc = WEFT_ENOMEM;
    goto out;
  }
  double sum = 0.0;
  for (int i = 0; i < k; i++) {
    double x = -1.0 + 2.0 * i / (k - 1);
    wt[i] = exp(-(x * x) / (2.0 * sigma * sigma));
    sum += wt[i];
  }
  for (int i = 0; i < k; i++)
    wt[i] /= sum;
  for (int64_t i = 0; i < w + 2 * radius; i++)
    ix[i] = reflect_index(i - radius, w);
  for (int64_t i = 0; i < h + 2 * radius; i++)
    iy[i] = reflect_index(i - radius, h);

  for (int64_t y = 0; y < h; y++) { /* horizontal pass into tmp */
    if (y % POLL_ROWS == 0 && cancelled(cancel)) {
      rc = WEFT_ECANCELED;
      goto out;
    }
    const float *row = src + y * w * c;
    for (int64_t x = 0; x < w; x++) {
      for (int64_t ch = 0; ch < c; ch++)
        acc[ch] = 0.0;
      for (int i = 0; i < k; i++) {
        const float *p = row + ix[x + i] * c;
        for (int64_t ch = 0; ch < c; ch++)
          acc[ch] += wt[i] * p[ch];
      }
      for (int64_t ch = 0; ch < c; ch++)
        tmp[(y * w + x) * c + ch] = (float)acc[ch];
    }
  }
  for (int64_t y = 0; y < h; y++) { /* vertical pass into dst */
    if (y % POLL_ROWS == 0 && cancelled(cancel)) {
      rc = WEFT_ECANCELED;
      goto out;
    }
    for (int64_t x = 0; x < w; x++) {
      for (int64_t ch = 0; ch < c; ch++)
        acc[ch] = 0.0;
      for (int i = 0; i < k; i++) {
        const float *p = tmp + (iy[y + i] * w + x) * c;
        for (int64_t ch = 0; ch < c; ch++)
          acc[ch] += wt[i] * p[ch];
      }
      for (int64_t ch = 0; ch < c; ch++)
        dst[(y * w + x) * c + ch] = (float)acc[ch];
    }
  }
out:
  free(wt);
  free(ix);
  free(iy);
  free(tmp);
  free(acc);
  return rc;
}

/* ---- blend -------------------------------------------------------------- */

static float soft_light_g(float x) {
  return x <= 0.25f ? ((16.0f * x - 12.0f) * x + 4.0f) * x : sqrtf(x);
}

static float blend_one(float a, float b, weft__blend_mode mode) {
  switch (mode) {
  case WEFT__BLEND_NORMAL: return b;
  case WEFT__BLEND_MULTIPLY: return a * b;
  case WEFT__BLEND_SCREEN: return 1.0f - (1.0f - a) * (1.0f - b);
  case WEFT__BLEND_OVERLAY:
    return a <= 0.5f ? 2.0f * a * b : 1.0f - 2.0f * (1.0f - a) * (1.0f - b);
  case WEFT__BLEND_SOFT_LIGHT:
    return b <= 0.5f ? a - (1.0f - 2.0f * b) * a * (1.0f - a)
                     : a + (2.0f * b - 1.0f) * (soft_light_g(a) - a);
  case WEFT__BLEND_DIFFERENCE: return a - b;
  default: return a;
  }
}

void weft__blend(const float *a, const float *b, int64_t npix, int64_t c,
                 double factor, weft__blend_mode mode, float *dst) {
  /* torch turns the Python floats into float32 operands. */
  float fa = (float)(1.0 - factor), fb = (float)factor;
  for (int64_t p = 0; p < npix; p++)
    for (int64_t k = 0; k < c; k++) {
      float x = a[p * c + k], y = b[p * c + k];
      if (c == 4 && k == 3) { /* alpha stores transparency, not colour */
        dst[p * c + k] = x;
        continue;
      }
      float v = x * fa + blend_one(x, y, mode) * fb;
      dst[p * c + k] = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
    }
}

int weft__blend_batch(const float *a, int64_t ab, int64_t ah, int64_t aw,
                      int64_t ac, const float *b, int64_t bb, int64_t bh,
                      int64_t bw, int64_t bc, double factor,
                      weft__blend_mode mode, float *dst,
                      const weft__cancel *cancel) {
  if (ab <= 0 || bb <= 0 || (ab != bb && ab != 1 && bb != 1) || mode < 0 ||
      mode >= WEFT__BLEND_COUNT)
    return WEFT_EINVAL;
  int64_t c = ac, nb = ab > bb ? ab : bb, item = ah * aw * c;
  float *fixed = malloc(sizeof *fixed * bb * bh * bw * c);
  if (!fixed) return WEFT_ENOMEM;
  for (int64_t p = 0; p < bb * bh * bw; p++)
    for (int64_t k = 0; k < c; k++)
      fixed[p * c + k] = k < bc ? b[p * bc + k] : 1.0f;
  int rc = 0;
  if (bh != ah || bw != aw) {
    float *r = malloc(sizeof *r * bb * item);
    if (!r) {
      free(fixed);
      return WEFT_ENOMEM;
    }
    for (int64_t i = 0; i < bb && !rc; i++)
      rc = weft__image_scale(fixed + i * bh * bw * c, bh, bw, c, r + i * item,
                             ah, aw, WEFT__RESIZE_BICUBIC, 1, cancel);
    free(fixed);
    fixed = r;
  }
  for (int64_t i = 0; i < nb && !rc; i++) {
    if (cancelled(cancel)) {
      rc = WEFT_ECANCELED;
      break;
    }
    weft__blend(a + (ab == 1 ? 0 : i) * item, fixed + (bb == 1 ? 0 : i) * item,
                ah * aw, c, factor, mode, dst + i * item);
  }
  free(fixed);
  return rc;
}
