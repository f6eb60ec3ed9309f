/* default_checks.c - eval_default.py's check_image in C (default_checks.h). */
#include "default_checks.h"

#include <stdlib.h>
#include <string.h>

const char *const dm_color_names[DM_N_COLORS] = {
    "red",    "green", "blue", "yellow", "orange",
    "purple", "pink",  "cyan", "white",  "black"};
const char *const dm_shape_names[DM_N_SHAPES] = {"circle", "square", "triangle",
                                                 "star"};
/* shapes.PALETTE */
static const int palette[DM_N_COLORS][3] = {
    {215, 25, 30},   {40, 170, 60},  {40, 70, 220},   {245, 225, 40},
    {240, 120, 20},  {140, 50, 190}, {245, 130, 200}, {40, 210, 230},
    {245, 245, 245}, {20, 20, 20}};

int dm_color_index(const char *name) {
  for (int i = 0; name && i < DM_N_COLORS; i++)
    if (strcmp(name, dm_color_names[i]) == 0) return i;
  return -1;
}

int dm_shape_index(const char *name) {
  for (int i = 0; name && i < DM_N_SHAPES; i++)
    if (strcmp(name, dm_shape_names[i]) == 0) return i;
  return -1;
}

/* Every value below is an integer or a half, so double arithmetic gives
 * exactly what numpy computes in float32. */

/* numpy's median of the n values counted in hist[256]: the middle one, or
 * the mean of the two middle ones when n is even. */
static double hist_median(const int64_t hist[256], int64_t n) {
  int64_t lo = (n - 1) / 2, hi = n / 2, seen = 0;
  int vlo = -1, vhi = -1;
  for (int v = 0; v < 256 && vhi < 0; v++) {
    seen += hist[v];
    if (vlo < 0 && seen > lo) vlo = v;
    if (seen > hi) vhi = v;
  }
  return (vlo + vhi) / 2.0;
}

static int nearest_color(const double rgb[3]) {
  int best = 0;
  double bd = 0;
  for (int i = 0; i < DM_N_COLORS; i++) {
    double d = 0;
    for (int c = 0; c < 3; c++)
      d += (palette[i][c] - rgb[c]) * (palette[i][c] - rgb[c]);
    if (i == 0 || d < bd) best = i, bd = d; /* argmin: the first on ties */
  }
  return best;
}

static double dist2(const double a[3], const double b[3]) {
  double d = 0;
  for (int c = 0; c < 3; c++)
    d += (a[c] - b[c]) * (a[c] - b[c]);
  return d;
}

typedef struct pt {
  int64_t x, y;
} pt;

static int pt_cmp(const void *a, const void *b) {
  const pt *p = a, *q = b;
  if (p->x != q->x) return p->x < q->x ? -1 : 1;
  return (p->y > q->y) - (p->y < q->y);
}

static int64_t cross(pt o, pt a, pt b) {
  return (a.x - o.x) * (b.y - o.y) - (a.y - o.y) * (b.x - o.x);
}

/* Twice the area of the convex hull of the blob's pixel squares.  Only each
 * row's leftmost and rightmost squares can hold hull corners, so the hull
 * of their corners is eval_default.py's hull of all corners.  Returns -1
 * when out of memory. */
static int64_t hull_area2(const int32_t *lab, int target, int w, int h) {
  pt *p = malloc(sizeof *p * 4 * (size_t)h);
  pt *hull = malloc(sizeof *hull * (8 * (size_t)h + 2));
  if (!p || !hull) {
    free(p), free(hull);
    return -1;
  }
  int n = 0;
  for (int y = 0; y < h; y++) {
    int x0 = -1, x1 = -1;
    for (int x = 0; x < w; x++)
      if (lab[y * w + x] == target) {
        if (x0 < 0) x0 = x;
        x1 = x;
      }
    if (x0 < 0) continue;
    p[n++] = (pt){x0, y}, p[n++] = (pt){x0, y + 1};
    p[n++] = (pt){x1 + 1, y}, p[n++] = (pt){x1 + 1, y + 1};
  }
  qsort(p, (size_t)n, sizeof *p, pt_cmp);
  int u = 0; /* unique */
  for (int i = 0; i < n; i++)
    if (u == 0 || pt_cmp(&p[u - 1], &p[i]) != 0) p[u++] = p[i];
  /* Andrew's monotone chain, as eval_default.py: lower then upper, each
   * without its last point */
  int k = 0;
  for (int i = 0; i < u; i++) {
    while (k >= 2 && cross(hull[k - 2], hull[k - 1], p[i]) <= 0)
      k--;
    hull[k++] = p[i];
  }
  k--; /* drop the lower chain's last point; the upper chain starts there */
  int base = k;
  for (int i = u - 1; i >= 0; i--) {
    while (k - base >= 2 && cross(hull[k - 2], hull[k - 1], p[i]) <= 0)
      k--;
    hull[k++] = p[i];
  }
  k--; /* drop the upper chain's last point (the first of the lower) */
  int64_t s = 0;
  for (int i = 0; i < k; i++) {
    pt a = hull[i], b = hull[(i + k - 1) % k];
    s += a.x * b.y - b.x * a.y;
  }
  free(p), free(hull);
  return s < 0 ? -s : s;
}

int dm_check_image(const uint8_t *rgb, int w, int h, dm_check *out) {
  memset(out, 0, sizeof *out);
  out->color = out->shape = -1;
  int64_t np_ = (int64_t)w * h;
  int32_t *lab = calloc((size_t)np_, sizeof *lab);
  int32_t *stack = malloc((size_t)np_ * sizeof *stack);
  if (!lab || !stack) {
    free(lab), free(stack);
    return -1;
  }
  /* background: median of the rows 0..2, h-3..h-1 and columns 0..2,
   * w-3..w-1, concatenated (corner pixels twice) */
  double bgc[3];
  for (int c = 0; c < 3; c++) {
    int64_t hist[256] = {0}, n = 0;
    for (int y = 0; y < h; y++)
      for (int x = 0; x < w; x++) {
        int times = (y < 3 || y >= h - 3) + (x < 3 || x >= w - 3);
        hist[rgb[(y * w + x) * 3 + c]] += times;
        n += times;
      }
    bgc[c] = hist_median(hist, n);
  }
  out->background = nearest_color(bgc);
  /* shape pixels, labelled by 4-connected flood fill in raster order (the
   * order scipy.ndimage.label numbers components) */
  for (int64_t i = 0; i < np_; i++) {
    double px[3] = {rgb[i * 3], rgb[i * 3 + 1], rgb[i * 3 + 2]};
    lab[i] = dist2(px, bgc) > 3600.0 ? -1 : 0; /* sqrt(d2) > 60 */
  }
  int best = 0, n_lab = 0;
  int64_t best_area = 0;
  for (int64_t i = 0; i < np_; i++) {
    if (lab[i] != -1) continue;
    int id = ++n_lab;
    int64_t sp = 0, area = 0;
    lab[i] = id;
    stack[sp++] = (int32_t)i;
    while (sp) {
      int32_t j = stack[--sp];
      area++;
      int x = j % w, y = j / w;
      const int32_t nb[4] = {x > 0 ? j - 1 : -1, x < w - 1 ? j + 1 : -1,
                             y > 0 ? j - w : -1, y < h - 1 ? j + w : -1};
      for (int k = 0; k < 4; k++)
        if (nb[k] >= 0 && lab[nb[k]] == -1) {
          lab[nb[k]] = id;
          stack[sp++] = nb[k];
        }
    }
    if (area > best_area) best = id, best_area = area;
  }
  out->area = best_area;
  if (best_area < 30) {
    free(lab), free(stack);
    return 0;
  }
  int x0 = w, x1 = -1, y0 = h, y1 = -1;
  int64_t sx = 0, sy = 0;
  int64_t hist[3][256] = {{0}};
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      int64_t i = (int64_t)y * w + x;
      if (lab[i] != best) continue;
      x0 = x < x0 ? x : x0, x1 = x > x1 ? x : x1;
      y0 = y < y0 ? y : y0, y1 = y > y1 ? y : y1;
      sx += x, sy += y;
      for (int c = 0; c < 3; c++)
        hist[c][rgb[i * 3 + c]]++;
    }
  double sc[3];
  for (int c = 0; c < 3; c++)
    sc[c] = hist_median(hist[c], best_area);
  out->color = nearest_color(sc);
  out->fill = (double)best_area / ((double)(x1 - x0 + 1) * (y1 - y0 + 1));
  int64_t hull2 = hull_area2(lab, best, w, h);
  if (hull2 < 0) {
    free(lab), free(stack);
    return -1;
  }
  double hull = 0.5 * (double)hull2;
  out->solidity = (double)best_area / (hull > 1 ? hull : 1);
  /* holes: pixels outside the blob that no 4-connected path of such pixels
   * joins to the image border (scipy's binary_fill_holes) */
  int64_t sp = 0, outside = 0;
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      int64_t i = (int64_t)y * w + x;
      if ((y == 0 || y == h - 1 || x == 0 || x == w - 1) && lab[i] != best &&
          lab[i] != -2) {
        lab[i] = -2;
        stack[sp++] = (int32_t)i;
      }
    }
  while (sp) {
    int32_t j = stack[--sp];
    outside++;
    int x = j % w, y = j / w;
    const int32_t nb[4] = {x > 0 ? j - 1 : -1, x < w - 1 ? j + 1 : -1,
                           y > 0 ? j - w : -1, y < h - 1 ? j + w : -1};
    for (int k = 0; k < 4; k++)
      if (nb[k] >= 0 && lab[nb[k]] != best && lab[nb[k]] != -2) {
        lab[nb[k]] = -2;
        stack[sp++] = nb[k];
      }
  }
  int64_t filled = np_ - outside;
  out->interior = (double)best_area / (double)(filled > 1 ? filled : 1);
  out->cx = (double)sx / (double)best_area;
  out->cy = (double)sy / (double)best_area;
  /* hollow: the 5x5 median at the bbox centre (numpy's slice, clipped) */
  int cy = (y0 + y1) / 2, cx = (x0 + x1) / 2;
  double cc[3];
  for (int c = 0; c < 3; c++) {
    int64_t hc[256] = {0}, n = 0;
    for (int y = cy - 2 > 0 ? cy - 2 : 0; y < cy + 3 && y < h; y++)
      for (int x = cx - 2 > 0 ? cx - 2 : 0; x < cx + 3 && x < w; x++)
        hc[rgb[((int64_t)y * w + x) * 3 + c]]++, n++;
    cc[c] = hist_median(hc, n);
  }
  out->hollow = dist2(cc, bgc) < dist2(cc, sc);
  out->shape = out->fill >= 0.88       ? 1
               : out->fill >= 0.66     ? 0
               : out->solidity >= 0.80 ? 2
                                       : 3;
  free(lab), free(stack);
  return 0;
}
