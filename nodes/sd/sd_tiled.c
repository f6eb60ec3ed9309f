/* sd_tiled.c - comfy.utils.tiled_scale: run a function over overlapping
 * tiles of an image or latent and blend the results with linear feathering,
 * so a large input needs only one tile's memory at a time. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sd.h"

/* Python's round() and slice bounds, to place tiles exactly as ComfyUI */
static int64_t py_round(double x) { return (int64_t)nearbyint(x); }

static void py_slice(int64_t start, int64_t stop, int64_t len, int64_t *a,
                     int64_t *b) {
  if (start < 0) start += len;
  if (stop < 0) stop += len;
  *a = start < 0 ? 0 : start > len ? len : start;
  *b = stop < 0 ? 0 : stop > len ? len : stop;
  if (*b < *a) *b = *a;
}

int sd_tiled_scale(const float *s, int64_t cin, int64_t H, int64_t W,
                   int64_t tile_x, int64_t tile_y, int64_t overlap, double up,
                   int64_t cout, sd_tile_fn fn, void *user, float *output) {
  if (tile_x <= overlap || tile_y <= overlap || tile_x < 1 || tile_y < 1)
    return WEFT_EINVAL;
  const int64_t OH = py_round(H * up), OW = py_round(W * up);
  float *out = calloc((size_t)(cout * OH * OW), sizeof *out);
  float *div = calloc((size_t)(OH * OW), sizeof *div);
  float *in = malloc((size_t)(cin * tile_y * tile_x) * sizeof *in);
  float *ps = malloc((size_t)(cout * (py_round(tile_y * up) + 1) *
                              (py_round(tile_x * up) + 1)) * sizeof *ps);
  float *mask = malloc((size_t)((py_round(tile_y * up) + 1) *
                                (py_round(tile_x * up) + 1)) * sizeof *mask);
  int rc = 0;
  if (!out || !div || !in || !ps || !mask) {
    rc = WEFT_ENOMEM;
    goto done;
  }
  const int64_t feather = py_round(overlap * up);
  for (int64_t y0 = 0; y0 < H && !rc; y0 += tile_y - overlap)
    for (int64_t x0 = 0; x0 < W && !rc; x0 += tile_x - overlap) {
      int64_t x = x0 < W - overlap ? x0 : W - overlap;
      int64_t y = y0 < H - overlap ? y0 : H - overlap;
      x = x > 0 ? x : 0, y = y > 0 ? y : 0;
      int64_t th = tile_y < H - y ? tile_y : H - y;
      int64_t tw = tile_x < W - x ? tile_x : W - x;
      for (int64_t c = 0; c < cin; c++)
        for (int64_t r = 0; r < th; r++)
          memcpy(in + (c * th + r) * tw, s + (c * H + y + r) * W + x,
                 (size_t)tw * sizeof *in);
      int64_t ph = py_round(th * up), pw = py_round(tw * up);
      if ((rc = fn(user, in, th, tw, ps))) break;
      for (int64_t i = 0; i < ph * pw; i++) mask[i] = 1.0f;
      for (int64_t t = 0; t < feather; t++) {
        float f = (float)((1.0 / (double)feather) * (double)(t + 1));
        int64_t a, b;
        py_slice(t, t + 1, ph, &a, &b);
        for (int64_t r = a; r < b; r++)
          for (int64_t q = 0; q < pw; q++) mask[r * pw + q] *= f;
        py_slice(ph - 1 - t, ph - t, ph, &a, &b);
        for (int64_t r = a; r < b; r++)
          for (int64_t q = 0; q < pw; q++) mask[r * pw + q] *= f;
        py_slice(t, t + 1, pw, &a, &b);
        for (int64_t r = 0; r < ph; r++)
          for (int64_t q = a; q < b; q++) mask[r * pw + q] *= f;
        py_slice(pw - 1 - t, pw - t, pw, &a, &b);
        for (int64_t r = 0; r < ph; r++)
          for (int64_t q = a; q < b; q++) mask[r * pw + q] *= f;
      }
      int64_t oy = py_round(y * up), ox = py_round(x * up);
      int64_t rows = OH - oy < ph ? OH - oy : ph, cols = OW - ox < pw ? OW - ox
                                                                        : pw;
      for (int64_t c = 0; c < cout; c++)
        for (int64_t r = 0; r < rows; r++)
          for (int64_t q = 0; q < cols; q++)
            out[(c * OH + oy + r) * OW + ox + q] +=
                ps[(c * ph + r) * pw + q] * mask[r * pw + q];
      for (int64_t r = 0; r < rows; r++)
        for (int64_t q = 0; q < cols; q++)
          div[(oy + r) * OW + ox + q] += mask[r * pw + q];
    }
  if (!rc)
    for (int64_t c = 0; c < cout; c++)
      for (int64_t i = 0; i < OH * OW; i++)
        output[c * OH * OW + i] = out[c * OH * OW + i] / div[i];
done:
  free(out), free(div), free(in), free(ps), free(mask);
  return rc;
}
