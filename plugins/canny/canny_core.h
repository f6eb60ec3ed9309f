/* canny_core.h - a Canny edge detector in plain C, kornia's algorithm.
 *
 * The pure part of the Canny example plugin: no weft types, so it can be
 * tested (and reused) on its own.  It follows kornia.filters.canny (0.9),
 * which ComfyUI's Canny node calls with kernel_size 5, sigma 1:
 *   1. RGB to gray: 0.299 R + 0.587 G + 0.114 B;
 *   2. 5x5 Gaussian blur, sigma 1, reflected borders;
 *   3. 3x3 Sobel gradients (not normalised), replicated borders;
 *      magnitude = sqrt(gx^2 + gy^2 + 1e-6);
 *   4. non-maximum suppression along the gradient direction rounded to 45
 *      degrees: a pixel must beat both neighbours on that line (outside the
 *      image a neighbour counts as sqrt(1e-6)); on a tie with the right or
 *      lower neighbour the pixel wins, on any other tie it loses, so of two
 *      equal pixels across a step the left/upper one is kept;
 *   5. weak > low_threshold, strong > high_threshold (strict);
 *   6. hysteresis: weak pixels 8-connected to a strong one become edges.
 * Differences from kornia: weft computes in double where kornia computes in
 * float32, and treats magnitudes equal to 1e-9 relative as a tie.  kornia's
 * ties are decided by float32 rounding noise instead, so on symmetric
 * shapes (a filled square) kornia keeps a ragged mix of the inside and
 * outside pixels where weft keeps one clean line; elsewhere the two agree
 * (tests/image/test_canny.c measures both). */
#ifndef CANNY_CORE_H
#define CANNY_CORE_H

#include <stdint.h>

enum {
  CANNY_OK = 0,
  CANNY_EINVAL = -1,   /* bad sizes or thresholds */
  CANNY_ENOMEM = -2,   /* out of memory */
  CANNY_ECANCELED = -3 /* cancelled() returned non-zero */
};

/* Finds edges in img: h rows of w pixels of c floats (c == 1: gray; c >= 3:
 * RGB, further channels such as alpha ignored; c == 2: gray + alpha),
 * row-major, contiguous.  Writes 1 (edge) or 0 per pixel into edges [h][w].
 * 0 < low <= high.  cancelled (may be NULL) is polled between passes and
 * rows.  Returns CANNY_OK or a negative CANNY_E* code. */
int canny_edges(const float *img, int64_t h, int64_t w, int64_t c, double low,
                double high, uint8_t *edges, int (*cancelled)(void *ctx),
                void *ctx);

#endif
