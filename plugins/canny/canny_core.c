/* canny_core.c - Canny edge detection: blur, Sobel, NMS, hysteresis. */
#include "canny_core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define EPS 1e-6     /* kornia's eps inside the magnitude's square root */
#define TIE 1e-9     /* relative difference below which two are equal */
#define POLL_ROWS 64 /* rows between polls of cancelled() */
#define PI 3.14159265358979323846

/* torch 'reflect' padding (edge not repeated), for any offset. */
static int64_t reflect(int64_t i, int64_t n) {
  if (n == 1) return 0;
  int64_t period = 2 * (n - 1);
  i %= period;
  if (i < 0) i += period;
  return i < n ? i : period - i;
}

static int64_t clampi(int64_t i, int64_t n) {
  return i < 0 ? 0 : i >= n ? n - 1 : i;
}

/* -1, 0, 1: a < b, a ties b, a > b. */
static int cmp(double a, double b) {
  double d = a - b;
  if (fabs(d) <= TIE * fmax(fabs(a), fabs(b))) return 0;
  return d > 0 ? 1 : -1;
}

/* kornia's NMS neighbour offsets, indexed by direction (angle / 45 mod 8). */
static const int DY[8] = {0, 1, 1, 1, 0, -1, -1, -1};
static const int DX[8] = {1, 1, 0, -1, -1, -1, 0, 1};

typedef struct canny_buf {
  double *gray, *tmp, *mag;
  int8_t *dir;
  int64_t *stack;
} canny_buf;

static void buf_free(canny_buf *b) {
  free(b->gray);
  free(b->tmp);
  free(b->mag);
  free(b->dir);
  free(b->stack);
}

static int poll(int (*cancelled)(void *), void *ctx) {
  return cancelled && cancelled(ctx);
}

int canny_edges(const float *img, int64_t h, int64_t w, int64_t c, double low,
                double high, uint8_t *edges, int (*cancelled)(void *ctx),
                void *ctx) {
  if (!img || !edges || h <= 0 || w <= 0 || c <= 0 || !(low > 0.0) ||
      !(low <= high))
    return CANNY_EINVAL;
  int64_t n = h * w;
  canny_buf b = {0};
  b.gray = malloc(sizeof *b.gray * n);
  b.tmp = malloc(sizeof *b.tmp * n);
  b.mag = malloc(sizeof *b.mag * n);
  b.dir = malloc(sizeof *b.dir * n);
  b.stack = malloc(sizeof *b.stack * n);
  if (!b.gray || !b.tmp || !b.mag || !b.dir || !b.stack) {
    buf_free(&b);
    return CANNY_ENOMEM;
  }
  int rc = CANNY_OK;

  /* 1. gray */
  for (int64_t i = 0; i < n; i++) {
    const float *p = img + i * c;
    b.gray[i] = c >= 3 ? 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2] : p[0];
  }

  /* 2. separable 5x5 Gaussian, sigma 1, reflected borders */
  double g[5], gs = 0.0;
  for (int i = 0; i < 5; i++)
    gs += g[i] = exp(-(i - 2) * (i - 2) / 2.0);
  for (int i = 0; i < 5; i++)
    g[i] /= gs;
  for (int64_t y = 0; y < h; y++)
    for (int64_t x = 0; x < w; x++) {
      double s = 0.0;
      for (int i = 0; i < 5; i++)
        s += g[i] * b.gray[y * w + reflect(x + i - 2, w)];
      b.tmp[y * w + x] = s;
    }
  if (poll(cancelled, ctx)) {
    rc = CANNY_ECANCELED;
    goto out;
  }
  for (int64_t y = 0; y < h; y++)
    for (int64_t x = 0; x < w; x++) {
      double s = 0.0;
      for (int i = 0; i < 5; i++)
        s += g[i] * b.tmp[reflect(y + i - 2, h) * w + x];
      b.gray[y * w + x] = s; /* now the blurred image */
    }

  /* 3. Sobel with replicated borders; magnitude and rounded direction */
  const double *bl = b.gray;
  for (int64_t y = 0; y < h; y++) {
    if (y % POLL_ROWS == 0 && poll(cancelled, ctx)) {
      rc = CANNY_ECANCELED;
      goto out;
    }
    int64_t ym = clampi(y - 1, h), yp = clampi(y + 1, h);
    for (int64_t x = 0; x < w; x++) {
      int64_t xm = clampi(x - 1, w), xp = clampi(x + 1, w);
      double gx = (bl[ym * w + xp] + 2 * bl[y * w + xp] + bl[yp * w + xp]) -
                  (bl[ym * w + xm] + 2 * bl[y * w + xm] + bl[yp * w + xm]);
      double gy = (bl[yp * w + xm] + 2 * bl[yp * w + x] + bl[yp * w + xp]) -
                  (bl[ym * w + xm] + 2 * bl[ym * w + x] + bl[ym * w + xp]);
      b.mag[y * w + x] = sqrt(gx * gx + gy * gy + EPS);
      /* torch.round is half to even, like nearbyint */
      int64_t a = (int64_t)nearbyint(atan2(gy, gx) * (4.0 / PI));
      b.dir[y * w + x] = (int8_t)(((a % 8) + 8) % 8);
    }
  }

  /* 4. non-maximum suppression, 5. double threshold (edges: 1 weak,
   * 2 strong) */
  const double outside = sqrt(EPS);
  for (int64_t y = 0; y < h; y++)
    for (int64_t x = 0; x < w; x++) {
      double m = b.mag[y * w + x];
      int keep = cmp(m, outside) > 0;
      for (int side = 0; side < 2 && keep; side++) {
        int d = (b.dir[y * w + x] + 4 * side) % 8;
        int64_t ny = y + DY[d], nx = x + DX[d];
        double nb = (ny < 0 || ny >= h || nx < 0 || nx >= w)
                        ? outside
                        : b.mag[ny * w + nx];
        int r = cmp(m, nb);
        keep = r > 0 || (r == 0 && (d == 0 || d == 2));
      }
      edges[y * w + x] = !keep ? 0 : m > high ? 2 : m > low ? 1 : 0;
    }

  /* 6. hysteresis: flood from every strong pixel through weak ones */
  int64_t top = 0;
  for (int64_t i = 0; i < n; i++)
    if (edges[i] == 2) b.stack[top++] = i;
  while (top > 0) {
    int64_t i = b.stack[--top], y = i / w, x = i % w;
    for (int dy = -1; dy <= 1; dy++)
      for (int dx = -1; dx <= 1; dx++) {
        int64_t ny = y + dy, nx = x + dx;
        if (ny < 0 || ny >= h || nx < 0 || nx >= w) continue;
        if (edges[ny * w + nx] == 1) {
          edges[ny * w + nx] = 2;
          b.stack[top++] = ny * w + nx;
        }
      }
  }
  for (int64_t i = 0; i < n; i++)
    edges[i] = edges[i] == 2;
out:
  if (rc) memset(edges, 0, (size_t)n);
  buf_free(&b);
  return rc;
}
