/* default_checks.h - the default model's pixel checks (what
 * tools/train/eval_default.py's check_image measures), ported to C number
 * for number, for test_default_model.c.
 *
 *   background = nearest palette colour to the per-channel median of the
 *                3-pixel border (rows and columns, corners counted twice);
 *   shape pixels = RGB distance to that median > 60; blob = the largest
 *                4-connected component (the first in raster order on ties);
 *   shape colour = nearest palette colour to the per-channel median of the
 *                blob; no blob (area < 30): no colour, no shape;
 *   shape      = fill (area / bbox area) >= 0.88 square, >= 0.66 circle,
 *                else solidity (area / convex hull area, hull of the pixel
 *                squares' corners) >= 0.80 triangle, else star;
 *   hollow     = the 5x5 median at the bbox centre is nearer the background
 *                colour than the blob's median colour (the LoRA's outline);
 *   interior   = area / area of the blob with its holes filled;
 *   centroid   = mean x and y of the blob's pixels. */
#ifndef WEFT_TEST_DEFAULT_CHECKS_H
#define WEFT_TEST_DEFAULT_CHECKS_H

#include <stdbool.h>
#include <stdint.h>

/* tools/train/shapes.py's palette and shapes, in its order */
#define DM_N_COLORS 10
#define DM_N_SHAPES 4
extern const char *const dm_color_names[DM_N_COLORS];
extern const char *const dm_shape_names[DM_N_SHAPES];

typedef struct dm_check {
  int background; /* palette index */
  int64_t area;   /* blob pixels */
  int color;      /* palette index, -1 without a blob */
  int shape;      /* dm_shape_names index, -1 without a blob */
  double fill, solidity, interior;
  bool hollow;
  double cx, cy; /* centroid (pixels), valid with a blob */
} dm_check;

/* Measures rgb ([h][w][3] u8).  Returns 0, or -1 when out of memory. */
int dm_check_image(const uint8_t *rgb, int w, int h, dm_check *out);

/* A palette or shape name's index, or -1 (NULL or unknown). */
int dm_color_index(const char *name);
int dm_shape_index(const char *name);

#endif
