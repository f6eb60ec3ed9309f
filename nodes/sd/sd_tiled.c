/* sd_tiled.c - comfy.utils.tiled_scale (tiled_scale_multidim in 2-D): run a
 * function over overlapping tiles of an image or latent and blend the
 * results with linear feathering, so a large input needs one tile's memory
 * at a time.  Tile placement, feathering and summation order follow
 * ComfyUI's, so the result is the same to float rounding. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sd.h"

/* Python's round(): half to even */
static int64_t py_round(double x) { return (int64_t)nearbyint(x); }

/* the feather of one dimension: ones, then for t < feather the t-th entry
 * from each end times (t + 1) / feather; none when feather >= len */
static void feather_1d(float *f, int64_t len, int64_t feather) {
  for (int64_t i = 0; i < len; i++) f[i] = 1.0f;
  if (feather >= len) return;
  for (int64_t t = 0; t < feather; t++) {
    float a = (float)((double)(t + 1) / (double)feather);
    f[t] *= a;
    f[len - 1 - t] *= a;
  }
}

/* tile starts along one dimension */
static int64_t positions(int64_t size, int64_t tile, int64_t overlap,
                         int64_t *pos, int64_t cap) {
  if (size <= tile) {
    pos[0] = 0;
    return 1;
  }
  int64_t n = 0;
  for (int64_t p = 0; p < size - overlap && n < cap; p += tile - overlap) {
    int64_t q = p < size - overlap ? p : size - overlap;
    pos[n++] = q > 0 ? q : 0;
  }
  return n;
}

/* The tiles of one tiling of H x W: *ny x *nx starts in py and px (at
 * most 4096 each); WEFT_EINVAL for a tile under 1, or one not larger than
 * the overlap where tiling is needed (ComfyUI divides by a zero range
 * step there). */
static int tile_grid(int64_t H, int64_t W, int64_t tile_x, int64_t tile_y,
                     int64_t overlap, int64_t *py, int64_t *ny, int64_t *px,
                     int64_t *nx) {
  if (tile_x < 1 || tile_y < 1) return WEFT_EINVAL;
  if ((H > tile_y && tile_y <= overlap) || (W > tile_x && tile_x <= overlap))
    return WEFT_EINVAL;
  *ny = positions(H, tile_y, overlap, py, 4096);
  *nx = positions(W, tile_x, overlap, px, 4096);
  return 0;
}

/* A tile's extent from start `at`: the tile, cut at the edge. */
static int64_t tile_len(int64_t tile, int64_t size, int64_t at) {
  return tile < size - at ? tile : size - at;
}

int sd_tiled_scale(const float *s, int64_t cin, int64_t H, int64_t W,
                   int64_t tile_x, int64_t tile_y, int64_t overlap, double up,
                   int64_t cout, sd_tile_fn fn, void *user, float *output) {
  int64_t py[4096], px[4096], ny, nx;
  int rc = tile_grid(H, W, tile_x, tile_y, overlap, py, &ny, px, &nx);
  if (rc) return rc;
  if (H <= tile_y && W <= tile_x) return fn(user, s, H, W, output);
  const int64_t OH = py_round(H * up), OW = py_round(W * up);
  const int64_t mh = py_round(tile_y * up) + 1, mw = py_round(tile_x * up) + 1;
  float *out = calloc((size_t)(cout * OH * OW), sizeof *out);
  float *div = calloc((size_t)(OH * OW), sizeof *div);
  float *in = malloc((size_t)(cin * tile_y * tile_x) * sizeof *in);
  float *ps = malloc((size_t)(cout * mh * mw) * sizeof *ps);
  float *fy = malloc((size_t)mh * sizeof *fy), *fx = malloc((size_t)mw * sizeof *fx);
  if (!out || !div || !in || !ps || !fy || !fx) {
    rc = WEFT_ENOMEM;
    goto done;
  }
  const int64_t feather = py_round(overlap * up);
  for (int64_t iy = 0; iy < ny && !rc; iy++)
    for (int64_t ix = 0; ix < nx && !rc; ix++) {
      int64_t y = py[iy], x = px[ix];
      int64_t th = tile_len(tile_y, H, y), tw = tile_len(tile_x, W, x);
      for (int64_t c = 0; c < cin; c++)
        for (int64_t r = 0; r < th; r++)
          memcpy(in + (c * th + r) * tw, s + (c * H + y + r) * W + x,
                 (size_t)tw * sizeof *in);
      int64_t ph = py_round(th * up), pw = py_round(tw * up);
      if ((rc = fn(user, in, th, tw, ps))) break;
      feather_1d(fy, ph, feather);
      feather_1d(fx, pw, feather);
      int64_t oy = py_round(y * up), ox = py_round(x * up);
      int64_t rows = OH - oy < ph ? OH - oy : ph;
      int64_t cols = OW - ox < pw ? OW - ox : pw;
      for (int64_t c = 0; c < cout; c++)
        for (int64_t r = 0; r < rows; r++)
          for (int64_t q = 0; q < cols; q++)
            out[(c * OH + oy + r) * OW + ox + q] +=
                ps[(c * ph + r) * pw + q] * (fy[r] * fx[q]);
      for (int64_t r = 0; r < rows; r++)
        for (int64_t q = 0; q < cols; q++)
          div[(oy + r) * OW + ox + q] += fy[r] * fx[q];
    }
  if (!rc)
    for (int64_t c = 0; c < cout; c++)
      for (int64_t i = 0; i < OH * OW; i++)
        output[c * OH * OW + i] = out[c * OH * OW + i] / div[i];
done:
  free(out), free(div), free(in), free(ps), free(fy), free(fx);
  return rc;
}

/* ---- the VAE's tiled passes (comfy/sd.py decode_tiled_, encode_tiled_) -- */

typedef struct tile_args {
  sd_vae *vae;
  const float *in;
  int64_t h, w;
  float *out;
} tile_args;

static int decode_fn(void *arg, weft_backend *be) {
  tile_args *a = arg;
  return sd_vae_decode(a->vae, be, a->in, 1, a->h, a->w, a->out);
}

static int encode_fn(void *arg, weft_backend *be) {
  tile_args *a = arg;
  int64_t f = sd_vae_factor(a->vae), h = a->h, w = a->w;
  int64_t lat = sd_vae_config(a->vae)->latent_channels;
  float *x = malloc((size_t)(3 * h * w) * sizeof *x);
  float *mom = malloc((size_t)(2 * lat * (h / f) * (w / f)) * sizeof *mom);
  int r = x && mom ? 0 : WEFT_ENOMEM;
  if (!r) {
    for (int64_t i = 0; i < 3 * h * w; i++) x[i] = a->in[i] * 2.0f - 1.0f;
    r = sd_vae_encode(a->vae, be, x, 1, h, w, mom);
  }
  /* the posterior's mode: its mean, the first half of the moments */
  if (!r) memcpy(a->out, mom, (size_t)(lat * (h / f) * (w / f)) * sizeof *a->out);
  free(x), free(mom);
  return r;
}

static int run_tile(const sd_vae_tiles *t, int (*fn)(void *, weft_backend *),
                    const float *in, int64_t h, int64_t w, float *out) {
  tile_args a = {t->vae, in, h, w, out};
  return t->run ? t->run(t->run_user, t->be, fn, &a) : fn(&a, t->be);
}

static int decode_tile(void *user, const float *in, int64_t h, int64_t w,
                       float *out) {
  return run_tile(user, decode_fn, in, h, w, out);
}

static int encode_tile(void *user, const float *in, int64_t h, int64_t w,
                       float *out) {
  return run_tile(user, encode_fn, in, h, w, out);
}

int sd_vae_encode_one(sd_vae *vae, weft_backend *be, const float *pixels,
                      int64_t h, int64_t w, float *latent) {
  sd_vae_tiles t = {vae, be, NULL, NULL};
  return encode_tile(&t, pixels, h, w, latent);
}

/* three passes, summed in ComfyUI's order, then / 3 */
static int three_passes(const float *s, int64_t cin, int64_t H, int64_t W,
                        const int64_t tiles[3][2], int64_t overlap, double up,
                        int64_t cout, sd_tile_fn fn, void *user, float *out) {
  int64_t n = cout * (int64_t)nearbyint(H * up) * (int64_t)nearbyint(W * up);
  float *pass = malloc((size_t)n * sizeof *pass);
  if (!pass) return WEFT_ENOMEM;
  int r = 0;
  for (int p = 0; p < 3 && !r; p++) {
    r = sd_tiled_scale(s, cin, H, W, tiles[p][0], tiles[p][1], overlap, up,
                       cout, fn, user, p ? pass : out);
    if (!r && p)
      for (int64_t i = 0; i < n; i++) out[i] += pass[i];
  }
  for (int64_t i = 0; !r && i < n; i++) out[i] /= 3.0f;
  free(pass);
  return r;
}

/* The three tilings: decode tall, wide, square; encode square, wide, tall
 * (ComfyUI's orders, which the sums keep). */
static void tilings(bool decode, int64_t tx, int64_t ty, int64_t t[3][2]) {
  const int64_t tall[2] = {tx / 2, ty * 2}, wide[2] = {tx * 2, ty / 2},
                square[2] = {tx, ty};
  const int64_t *order[3] = {decode ? tall : square, wide,
                             decode ? square : tall};
  for (int p = 0; p < 3; p++)
    t[p][0] = order[p][0], t[p][1] = order[p][1];
}

int sd_vae_tiles_decode(const sd_vae_tiles *t, const float *latent, int64_t h,
                        int64_t w, int64_t tile_x, int64_t tile_y,
                        int64_t overlap, float *image) {
  int64_t tiles[3][2];
  tilings(true, tile_x, tile_y, tiles);
  return three_passes(latent, sd_vae_config(t->vae)->latent_channels, h, w,
                      (const int64_t(*)[2])tiles, overlap,
                      (double)sd_vae_factor(t->vae), 3, decode_tile, (void *)t,
                      image);
}

int sd_vae_tiles_encode(const sd_vae_tiles *t, const float *pixels, int64_t H,
                        int64_t W, int64_t tile_x, int64_t tile_y,
                        int64_t overlap, float *latent) {
  int64_t tiles[3][2];
  tilings(false, tile_x, tile_y, tiles);
  return three_passes(pixels, 3, H, W, (const int64_t(*)[2])tiles, overlap,
                      1.0 / (double)sd_vae_factor(t->vae),
                      sd_vae_config(t->vae)->latent_channels, encode_tile,
                      (void *)t, latent);
}

int sd_vae_decode_tiled(sd_vae *vae, weft_backend *be, const float *latent,
                        int64_t h, int64_t w, int64_t tile_x, int64_t tile_y,
                        int64_t overlap, float *image) {
  sd_vae_tiles t = {vae, be, NULL, NULL};
  return sd_vae_tiles_decode(&t, latent, h, w, tile_x, tile_y, overlap, image);
}

int sd_vae_encode_tiled(sd_vae *vae, weft_backend *be, const float *pixels,
                        int64_t H, int64_t W, int64_t tile_x, int64_t tile_y,
                        int64_t overlap, float *latent) {
  sd_vae_tiles t = {vae, be, NULL, NULL};
  return sd_vae_tiles_encode(&t, pixels, H, W, tile_x, tile_y, overlap, latent);
}

int sd_vae_tiles_each(bool decode, int64_t H, int64_t W, int64_t tile_x,
                      int64_t tile_y, int64_t overlap,
                      int (*each)(void *user, int64_t h, int64_t w),
                      void *user) {
  int64_t tiles[3][2];
  tilings(decode, tile_x, tile_y, tiles);
  for (int p = 0; p < 3; p++) {
    int64_t tx = tiles[p][0], ty = tiles[p][1], py[4096], px[4096], ny, nx;
    int r = tile_grid(H, W, tx, ty, overlap, py, &ny, px, &nx);
    for (int64_t iy = 0; !r && iy < ny; iy++)
      for (int64_t ix = 0; !r && ix < nx; ix++)
        r = each(user, tile_len(ty, H, py[iy]), tile_len(tx, W, px[ix]));
    if (r) return r;
  }
  return 0;
}

int sd_vae_tiles_probe(const sd_vae_tiles *t, bool decode, int64_t h,
                       int64_t w) {
  int64_t f = sd_vae_factor(t->vae);
  int64_t lat = sd_vae_config(t->vae)->latent_channels;
  int64_t n_in = decode ? lat * h * w : 3 * h * w;
  int64_t n_out = decode ? 3 * h * f * w * f : lat * (h / f) * (w / f);
  float *in = calloc((size_t)(n_in ? n_in : 1), sizeof *in);
  float *out = calloc((size_t)(n_out ? n_out : 1), sizeof *out);
  int r = in && out ? run_tile(t, decode ? decode_fn : encode_fn, in, h, w, out)
                    : WEFT_ENOMEM;
  free(in), free(out);
  return r;
}
