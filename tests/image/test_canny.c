/* test_canny.c - the canny example plugin's core: exact edges of a filled
 * square, and pixel-for-pixel agreement with kornia (ComfyUI's Canny). */
#include <stdlib.h>

#include "canny_core.h"
#include "png_io.h"
#include "test.h"
#include "test_util.h"

/* A 32x32 image, 1 inside rows/cols 8..23, 0 outside. */
static void square(float *img) {
  for (int y = 0; y < 32; y++)
    for (int x = 0; x < 32; x++)
      img[y * 32 + x] = (y >= 8 && y < 24 && x >= 8 && x < 24) ? 1.0f : 0.0f;
}

/* The edges of that square, rows 5..26, columns 5..26.  The steps lie
 * between rows 7|8 and 23|24 (and the same columns); of the two equally
 * strong pixels across a step the upper/left one is kept (kornia's rule),
 * so the ring runs on row 7 and column 7 (outside) and on row 23 and
 * column 23 (inside).  Near the corners the gradient turns diagonal and
 * the ring cuts the corner. */
static const char *const SQUARE_EDGES[22] = {
    "......................", /* 5 */
    "......................", /* 6 */
    "......##########......", /* 7 */
    "...###..........###...", /* 8 */
    "...#..............#...", /* 9 */
    "...#..............#...", /* 10 */
    "..#...............#...", /* 11 */
    "..#...............#...", /* 12 */
    "..#...............#...", /* 13 */
    "..#...............#...", /* 14 */
    "..#...............#...", /* 15 */
    "..#...............#...", /* 16 */
    "..#...............#...", /* 17 */
    "..#...............#...", /* 18 */
    "..#...............#...", /* 19 */
    "..#...............#...", /* 20 */
    "...#..............#...", /* 21 */
    "...#..............#...", /* 22 */
    "...################...", /* 23 */
    "......................", /* 24 */
    "......................", /* 25 */
    "......................", /* 26 */
};

static void dump(const uint8_t *e, int h, int w) {
  for (int y = 0; y < h; y++) {
    for (int x = 0; x < w; x++)
      fputc(e[y * w + x] ? '#' : '.', stderr);
    fputc('\n', stderr);
  }
}

TEST(canny_square_edges_exact) {
  float img[32 * 32];
  uint8_t e[32 * 32];
  square(img);
  ASSERT_EQ(canny_edges(img, 32, 32, 1, 0.4, 0.8, e, NULL, NULL), CANNY_OK);
  dump(e, 32, 32);
  int count = 0;
  for (int y = 0; y < 32; y++)
    for (int x = 0; x < 32; x++) {
      int want = 0;
      if (y >= 5 && y < 27 && x >= 5 && x < 27)
        want = SQUARE_EDGES[y - 5][x - 5] == '#';
      if (e[y * 32 + x] != want)
        WEFT_TEST_FAIL_("pixel (%d,%d): %d, want %d", x, y, e[y * 32 + x],
                        want);
      count += want;
    }
  ASSERT_EQ(count, 60);
}

TEST(canny_gray_and_rgb_agree) {
  float gray[32 * 32], rgba[32 * 32 * 4];
  uint8_t a[32 * 32], b[32 * 32];
  square(gray);
  for (int i = 0; i < 32 * 32; i++) {
    rgba[4 * i] = rgba[4 * i + 1] = rgba[4 * i + 2] = gray[i];
    rgba[4 * i + 3] = 0.5f; /* alpha is ignored */
  }
  ASSERT_OK(canny_edges(gray, 32, 32, 1, 0.4, 0.8, a, NULL, NULL));
  ASSERT_OK(canny_edges(rgba, 32, 32, 4, 0.4, 0.8, b, NULL, NULL));
  ASSERT(memcmp(a, b, sizeof a) == 0);
}

TEST(canny_flat_and_tiny_images_have_no_edges) {
  float flat[7 * 5], one = 0.5f;
  uint8_t e[7 * 5];
  for (int i = 0; i < 35; i++)
    flat[i] = 0.3f;
  ASSERT_OK(canny_edges(flat, 5, 7, 1, 0.01, 0.02, e, NULL, NULL));
  for (int i = 0; i < 35; i++)
    ASSERT_EQ(e[i], 0);
  ASSERT_OK(canny_edges(&one, 1, 1, 1, 0.1, 0.2, e, NULL, NULL));
  ASSERT_EQ(e[0], 0);
}

TEST(canny_rejects_bad_arguments) {
  float img[4] = {0};
  uint8_t e[4];
  ASSERT_EQ(canny_edges(img, 2, 2, 1, 0.8, 0.4, e, NULL, NULL), CANNY_EINVAL);
  ASSERT_EQ(canny_edges(img, 2, 2, 1, 0.0, 0.4, e, NULL, NULL), CANNY_EINVAL);
  ASSERT_EQ(canny_edges(img, 0, 2, 1, 0.1, 0.4, e, NULL, NULL), CANNY_EINVAL);
}

static int cancel_now(void *ctx) {
  (void)ctx;
  return 1;
}

TEST(canny_stops_when_cancelled) {
  float img[32 * 32];
  uint8_t e[32 * 32];
  square(img);
  ASSERT_EQ(canny_edges(img, 32, 32, 1, 0.4, 0.8, e, cancel_now, NULL),
            CANNY_ECANCELED);
}

/* kornia's edges for the test photo, at three threshold pairs
 * (tests/fixtures/images/canny/, made by tools/fixtures/gen_image_ops.py
 * with kornia 0.9.0): weft's agree on every pixel. */
static void against_kornia(const char *name, double lo, double hi) {
  weft__png_image img;
  char err[256], rel[128];
  ASSERT_OK(weft__png_read(fixture("photo.png"), &img, err, sizeof err));
  uint8_t e[64 * 48];
  ASSERT_OK(canny_edges(img.rgb, 48, 64, 3, lo, hi, e, NULL, NULL));
  snprintf(rel, sizeof rel, "canny/%s.u8", name);
  size_t n;
  uint8_t *ref = read_file(fixture(rel), &n);
  ASSERT(ref != NULL);
  ASSERT_EQ(n, sizeof e);
  int diff = 0, edges = 0;
  for (size_t i = 0; i < n; i++) {
    diff += e[i] != ref[i];
    edges += e[i];
  }
  fprintf(stderr, "%s: %d edge pixels, %d differ from kornia\n", name, edges,
          diff);
  ASSERT(edges > 50);
  ASSERT_EQ(diff, 0);
  free(ref);
  weft__png_image_free(&img);
}

TEST(canny_matches_kornia_default_thresholds) {
  against_kornia("photo_0.4_0.8", 0.4, 0.8);
}
TEST(canny_matches_kornia_low_thresholds) {
  against_kornia("photo_0.1_0.2", 0.1, 0.2);
}
TEST(canny_matches_kornia_wide_hysteresis) {
  against_kornia("photo_0.05_0.9", 0.05, 0.9);
}

/* On the square kornia's ties fall to float32 noise: both find a closed
 * ring of 60 pixels, each within one pixel of the step. */
TEST(canny_square_differs_from_kornia_only_in_ties) {
  float img[32 * 32];
  uint8_t e[32 * 32];
  square(img);
  ASSERT_OK(canny_edges(img, 32, 32, 1, 0.4, 0.8, e, NULL, NULL));
  size_t n;
  uint8_t *ref = read_file(fixture("canny/square_32.u8"), &n);
  ASSERT_EQ(n, sizeof e);
  int ours = 0, theirs = 0, diff = 0;
  for (int y = 0; y < 32; y++)
    for (int x = 0; x < 32; x++) {
      int i = y * 32 + x;
      int near_step = (y >= 7 && y <= 24 && x >= 7 && x <= 24) &&
                      !(y >= 9 && y <= 22 && x >= 9 && x <= 22);
      ours += e[i];
      theirs += ref[i];
      diff += e[i] != ref[i];
      if ((e[i] || ref[i]) && !near_step)
        WEFT_TEST_FAIL_("edge at (%d,%d) away from the step", x, y);
    }
  fprintf(stderr, "square: %d pixels differ from kornia's\n", diff);
  ASSERT_EQ(ours, 60);
  ASSERT_EQ(theirs, 60);
  free(ref);
}
