/* test_png.c - PNG reading (every flavour, every corruption) and writing. */
#include <errno.h>
#include <png.h>
#include <sys/stat.h>
#include <unistd.h>

#include "png_io.h"
#include "test.h"
#include "test_util.h"
#include "weft/error.h"

static weft__png_image read_ok(const char *path) {
  weft__png_image img;
  char err[512];
  int rc = weft__png_read(path, &img, err, sizeof err);
  if (rc) fprintf(stderr, "%s\n", err);
  ASSERT_OK(rc);
  return img;
}

/* Expects every pixel's RGB to be f(x, y, k) / scale exactly. */
#define ASSERT_RGB(img, expr, scale)                                           \
  do {                                                                         \
    for (int y_ = 0; y_ < (img).height; y_++)                                  \
      for (int x_ = 0; x_ < (img).width; x_++)                                 \
        for (int k_ = 0; k_ < 3; k_++) {                                       \
          int x = x_, y = y_, k = k_;                                          \
          (void)x, (void)y, (void)k;                                           \
          float want = (float)(expr) / (scale);                                \
          float got = (img).rgb[((size_t)y_ * (img).width + x_) * 3 + k_];     \
          if (got != want)                                                     \
            WEFT_TEST_FAIL_("pixel (%d,%d,%d): %.9g != %.9g", x_, y_, k_, got, \
                            want);                                             \
        }                                                                      \
  } while (0)

TEST(png_reads_rgb8_photo) {
  weft__png_image img = read_ok(fixture("photo.png"));
  ASSERT_EQ(img.width, 64);
  ASSERT_EQ(img.height, 48);
  ASSERT_EQ(img.bit_depth, 8);
  ASSERT_EQ(img.color_type, PNG_COLOR_TYPE_RGB);
  ASSERT(img.alpha == NULL);
  for (int i = 0; i < 64 * 48 * 3; i++) {
    float v = img.rgb[i] * 255.0f;
    ASSERT(v >= 0 && v <= 255 && v == (float)(int)(v + 0.5f));
  }
  weft__png_image_free(&img);
}

TEST(png_reads_gray8_as_rgb) {
  weft__png_image img = read_ok(fixture("gray_16x16.png"));
  ASSERT_EQ(img.color_type, PNG_COLOR_TYPE_GRAY);
  ASSERT(img.alpha == NULL);
  ASSERT_RGB(img, v8(x, y, 0), 255.0f);
  weft__png_image_free(&img);
}

TEST(png_reads_rgb16_exactly) {
  weft__png_image img = read_ok(fixture("rgb16_16x12.png"));
  ASSERT_EQ(img.width, 16);
  ASSERT_EQ(img.height, 12);
  ASSERT_EQ(img.bit_depth, 16);
  ASSERT_RGB(img, v16(x, y, k), 65535.0f);
  weft__png_image_free(&img);
}

TEST(png_reads_rgba8_alpha_plane) {
  weft__png_image img = read_ok(fixture("rgba_32x24.png"));
  ASSERT_EQ(img.color_type, PNG_COLOR_TYPE_RGB_ALPHA);
  ASSERT(img.alpha != NULL);
  ASSERT_RGB(img, v8(x, y, k), 255.0f);
  for (int y = 0; y < 24; y++)
    for (int x = 0; x < 32; x++) {
      int a = (y >= 2 && y < 6 && x >= 2 && x < 8) ? 0 : x * 255 / 31;
      ASSERT_EQ((int)(img.alpha[y * 32 + x] * 255.0f + 0.5f), a);
      ASSERT(img.alpha[y * 32 + x] == (float)a / 255.0f);
    }
  weft__png_image_free(&img);
}

TEST(png_reads_1bit_gray) {
  weft__png_image img = read_ok(fixture("fmt/gray1_9x5.png"));
  ASSERT_EQ(img.bit_depth, 1);
  ASSERT_RGB(img, ((x + 2 * y) % 3 == 0) ? 255 : 0, 255.0f);
  weft__png_image_free(&img);
}

TEST(png_reads_16bit_gray_and_gray_alpha) {
  weft__png_image img = read_ok(fixture("fmt/gray16_5x4.png"));
  ASSERT(img.alpha == NULL);
  ASSERT_RGB(img, v16(x, y, 0), 65535.0f);
  weft__png_image_free(&img);

  img = read_ok(fixture("fmt/ga16_3x2.png"));
  ASSERT_EQ(img.color_type, PNG_COLOR_TYPE_GRAY_ALPHA);
  ASSERT_RGB(img, v16(x, y, 0), 65535.0f);
  for (int y = 0; y < 2; y++)
    for (int x = 0; x < 3; x++)
      ASSERT(img.alpha[y * 3 + x] == (float)v16(x, y, 1) / 65535.0f);
  weft__png_image_free(&img);
}

TEST(png_reads_8bit_gray_alpha) {
  weft__png_image img = read_ok(fixture("fmt/ga8_7x5.png"));
  ASSERT_RGB(img, v8(x, y, 0), 255.0f);
  for (int y = 0; y < 5; y++)
    for (int x = 0; x < 7; x++)
      ASSERT(img.alpha[y * 7 + x] == (float)v8(x, y, 1) / 255.0f);
  weft__png_image_free(&img);
}

TEST(png_reads_16bit_rgba) {
  weft__png_image img = read_ok(fixture("fmt/rgba16_5x4.png"));
  ASSERT_RGB(img, v16(x, y, k), 65535.0f);
  for (int y = 0; y < 4; y++)
    for (int x = 0; x < 5; x++)
      ASSERT(img.alpha[y * 5 + x] == (float)v16(x, y, 3) / 65535.0f);
  weft__png_image_free(&img);
}

/* Palette entry i = (40i, 255 - 30i, 17i); tRNS alpha 36i for i < 5. */
TEST(png_reads_palette_with_trns_as_alpha) {
  weft__png_image img = read_ok(fixture("fmt/pal8_6x5.png"));
  ASSERT_EQ(img.color_type, PNG_COLOR_TYPE_PALETTE);
  ASSERT(img.alpha != NULL);
  for (int y = 0; y < 5; y++)
    for (int x = 0; x < 6; x++) {
      int i = (x + 6 * y) % 7;
      const float *p = img.rgb + (y * 6 + x) * 3;
      ASSERT(p[0] == (float)(40 * i) / 255.0f);
      ASSERT(p[1] == (float)(255 - 30 * i) / 255.0f);
      ASSERT(p[2] == (float)(17 * i) / 255.0f);
      ASSERT(img.alpha[y * 6 + x] == (float)(i < 5 ? 36 * i : 255) / 255.0f);
    }
  weft__png_image_free(&img);

  img = read_ok(fixture("fmt/pal4_6x5.png"));
  ASSERT_EQ(img.bit_depth, 4);
  ASSERT(img.alpha == NULL);
  ASSERT_RGB(img,
             k == 0   ? 40 * ((x + 6 * y) % 7)
             : k == 1 ? 255 - 30 * ((x + 6 * y) % 7)
                      : 17 * ((x + 6 * y) % 7),
             255.0f);
  weft__png_image_free(&img);
}

TEST(png_reads_interlaced) {
  weft__png_image img = read_ok(fixture("fmt/rgb8_adam7_11x9.png"));
  ASSERT_EQ(img.width, 11);
  ASSERT_EQ(img.height, 9);
  ASSERT_RGB(img, v8(x, y, k), 255.0f);
  weft__png_image_free(&img);
}

TEST(png_reads_text_chunks) {
  weft__png_image img = read_ok(fixture("fmt/rgb8_text_4x3.png"));
  ASSERT_EQ(img.n_text, 3);
  ASSERT_STR_EQ(weft__png_text_get(&img, "prompt"),
                "{\"1\": {\"class_type\": \"LoadImage\"}}");
  ASSERT_STR_EQ(weft__png_text_get(&img, "parameters"),
                "a red circle, Steps: 20"); /* zTXt */
  ASSERT_STR_EQ(weft__png_text_get(&img, "weft"),
                "caf\xc3\xa9 \xe2\x9c\x93"); /* iTXt */
  ASSERT(weft__png_text_get(&img, "missing") == NULL);
  weft__png_image_free(&img);
}

TEST(png_to_u8_truncates_like_comfyui) {
  /* np.clip(255. * x, 0, 255).astype(np.uint8) */
  ASSERT_EQ(weft__png_to_u8(0.0f), 0);
  ASSERT_EQ(weft__png_to_u8(1.0f), 255);
  ASSERT_EQ(weft__png_to_u8(0.5f), 127);   /* 127.5 truncates */
  ASSERT_EQ(weft__png_to_u8(0.999f), 254); /* 254.745 */
  ASSERT_EQ(weft__png_to_u8(1.5f), 255);
  ASSERT_EQ(weft__png_to_u8(-0.25f), 0);
  ASSERT_EQ(weft__png_to_u8(NAN), 0);
  ASSERT_EQ(weft__png_to_u8(INFINITY), 255);
  for (int v = 0; v < 256; v++)
    ASSERT_EQ(weft__png_to_u8(v / 255.0f), v);
}

static void round_trip(int channels) {
  int w = 13, h = 7;
  float *px = malloc(sizeof(float) * w * h * channels);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      for (int k = 0; k < channels; k++)
        px[(y * w + x) * channels + k] = v8(x, y, k) / 255.0f;
  weft__png_pixels p = {px, w, h, channels};
  char err[512];
  const char *path = tmp_path("rt.png");
  ASSERT_OK(
      weft__png_write(path, &p, NULL, 0, WEFT__PNG_LEVEL, err, sizeof err));
  weft__png_image img = read_ok(path);
  ASSERT_EQ(img.width, w);
  ASSERT_EQ(img.height, h);
  ASSERT_EQ(img.bit_depth, 8);
  ASSERT_EQ(img.color_type, channels == 1   ? PNG_COLOR_TYPE_GRAY
                            : channels == 3 ? PNG_COLOR_TYPE_RGB
                                            : PNG_COLOR_TYPE_RGB_ALPHA);
  ASSERT((img.alpha != NULL) == (channels == 4));
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      for (int k = 0; k < 3; k++)
        ASSERT(img.rgb[(y * w + x) * 3 + k] ==
               px[(y * w + x) * channels + (channels == 1 ? 0 : k)]);
      if (channels == 4)
        ASSERT(img.alpha[y * w + x] == px[(y * w + x) * 4 + 3]);
    }
  /* Writing again gives the same bytes: output is deterministic. */
  const char *path2 = tmp_path("rt2.png");
  ASSERT_OK(
      weft__png_write(path2, &p, NULL, 0, WEFT__PNG_LEVEL, err, sizeof err));
  size_t n1, n2;
  uint8_t *a = read_file(path, &n1), *b = read_file(path2, &n2);
  ASSERT_EQ(n1, n2);
  ASSERT(memcmp(a, b, n1) == 0);
  ASSERT(memcmp(a, "\x89PNG\r\n\x1a\n", 8) == 0);
  free(a);
  free(b);
  weft__png_image_free(&img);
  free(px);
}

TEST(png_round_trip_rgb_exact) {
  round_trip(3);
}
TEST(png_round_trip_rgba_exact) {
  round_trip(4);
}
TEST(png_round_trip_gray_exact) {
  round_trip(1);
}

TEST(png_writes_text_chunks_read_back) {
  float px[2 * 2 * 3] = {0};
  weft__png_pixels p = {px, 2, 2, 3};
  weft__png_text text[] = {
      {"prompt", "{\"3\": {\"class_type\": \"KSampler\"}}"},
      {"parameters", "a photo of a cat\nSteps: 20, Sampler: euler"},
      {"weft", "caf\xc3\xa9"},
  };
  char err[512];
  const char *path = tmp_path("text.png");
  ASSERT_OK(
      weft__png_write(path, &p, text, 3, WEFT__PNG_LEVEL, err, sizeof err));
  weft__png_image img = read_ok(path);
  ASSERT_EQ(img.n_text, 3);
  for (int i = 0; i < 3; i++)
    ASSERT_STR_EQ(weft__png_text_get(&img, text[i].key), text[i].value);
  weft__png_image_free(&img);
  size_t n;
  uint8_t *d = read_file(path, &n);
  ASSERT(png_chunk_offset(d, n, "tEXt") > 0); /* ASCII values */
  ASSERT(png_chunk_offset(d, n, "iTXt") > 0); /* the UTF-8 one */
  /* Text comes before the pixels, where every reader looks. */
  ASSERT(png_chunk_offset(d, n, "tEXt") < png_chunk_offset(d, n, "IDAT"));
  free(d);
}

TEST(png_write_rejects_bad_text_key) {
  float px[3] = {0};
  weft__png_pixels p = {px, 1, 1, 3};
  weft__png_text bad[] = {{" lead", "x"}};
  char err[512];
  ASSERT_EQ(weft__png_write(tmp_path("k.png"), &p, bad, 1, 4, err, sizeof err),
            WEFT_EINVAL);
  ASSERT_CONTAINS(err, "text key ' lead' is invalid");
  ASSERT_EQ(count_entries(weft_test_tmpdir(), ""), 0);
}

TEST(png_write_leaves_no_temp_file) {
  float px[4 * 4 * 3] = {0.5f};
  weft__png_pixels p = {px, 4, 4, 3};
  char err[512];
  ASSERT_OK(
      weft__png_write(tmp_path("a.png"), &p, NULL, 0, 4, err, sizeof err));
  ASSERT_EQ(count_entries(weft_test_tmpdir(), ""), 1);
  ASSERT_EQ(count_entries(weft_test_tmpdir(), ".weft-"), 0);
  /* A missing directory: a clear error and nothing created. */
  ASSERT_EQ(weft__png_write(tmp_path("no/such/dir/a.png"), &p, NULL, 0, 4, err,
                            sizeof err),
            WEFT_ENOENT);
  ASSERT_CONTAINS(err, "no/such/dir");
  /* Bad channel count. */
  weft__png_pixels bad = {px, 4, 4, 2};
  ASSERT_EQ(
      weft__png_write(tmp_path("b.png"), &bad, NULL, 0, 4, err, sizeof err),
      WEFT_EINVAL);
  ASSERT_EQ(count_entries(weft_test_tmpdir(), ""), 1);
}

TEST(png_publish_noreplace_keeps_existing_file) {
  float px[3] = {1.0f, 0.0f, 0.0f};
  weft__png_pixels p = {px, 1, 1, 3};
  char err[512], tmp[4200];
  const char *dir = weft_test_tmpdir();
  write_file(tmp_path("taken.png"), "mine", 4);
  ASSERT_OK(weft__png_write_temp(dir, &p, NULL, 0, 4, tmp, sizeof tmp, err,
                                 sizeof err));
  ASSERT_EQ(weft__png_publish(tmp, tmp_path("taken.png"), 1, err, sizeof err),
            WEFT_EDUP);
  size_t n;
  uint8_t *d = read_file(tmp_path("taken.png"), &n);
  ASSERT_EQ(n, 4);
  ASSERT(memcmp(d, "mine", 4) == 0);
  free(d);
  ASSERT_OK(weft__png_publish(tmp, tmp_path("free.png"), 1, err, sizeof err));
  ASSERT(access(tmp, F_OK) != 0);
  weft__png_image img = read_ok(tmp_path("free.png"));
  ASSERT(img.rgb[0] == 1.0f);
  weft__png_image_free(&img);
}

/* ---- bad files: a clear message naming the file, never a crash -------- */

static void expect_bad(const char *path, int code, const char *reason) {
  weft__png_image img;
  char err[512] = "";
  int rc = weft__png_read(path, &img, err, sizeof err);
  fprintf(stderr, "message: %s\n", err);
  ASSERT_EQ(rc, code);
  ASSERT_CONTAINS(err, path);
  ASSERT_CONTAINS(err, reason);
  ASSERT(img.rgb == NULL && img.alpha == NULL && img.text == NULL);
}

/* A copy of a fixture, edited by the test. */
static uint8_t *load(const char *rel, size_t *n) {
  uint8_t *d = read_file(fixture(rel), n);
  ASSERT(d != NULL);
  return d;
}

TEST(png_bad_missing_file) {
  expect_bad(tmp_path("nope.png"), WEFT_ENOENT, "No such file");
}

TEST(png_bad_directory) {
  expect_bad(weft_test_tmpdir(), WEFT_EIO, "cannot read");
}

TEST(png_bad_empty_file) {
  write_file(tmp_path("empty.png"), "", 0);
  expect_bad(tmp_path("empty.png"), WEFT_EFORMAT, "not a PNG file");
}

TEST(png_bad_not_a_png) {
  const char text[] = "GIF89a this is not a PNG at all";
  write_file(tmp_path("x.png"), text, sizeof text);
  expect_bad(tmp_path("x.png"), WEFT_EFORMAT, "bad signature");
}

TEST(png_bad_signature_only) {
  write_file(tmp_path("sig.png"), "\x89PNG\r\n\x1a\n", 8);
  expect_bad(tmp_path("sig.png"), WEFT_EFORMAT, "truncated");
}

TEST(png_bad_truncated_in_idat) {
  size_t n;
  uint8_t *d = load("photo.png", &n);
  long idat = png_chunk_offset(d, n, "IDAT");
  ASSERT(idat > 0);
  write_file(tmp_path("t.png"), d, (size_t)idat + 8 + 100);
  free(d);
  expect_bad(tmp_path("t.png"), WEFT_EFORMAT, "truncated");
}

TEST(png_bad_truncated_before_iend) {
  size_t n;
  uint8_t *d = load("photo.png", &n);
  long iend = png_chunk_offset(d, n, "IEND");
  ASSERT(iend > 0);
  write_file(tmp_path("t.png"), d, (size_t)iend);
  free(d);
  expect_bad(tmp_path("t.png"), WEFT_EFORMAT, "truncated");
}

TEST(png_bad_ihdr_crc) {
  size_t n;
  uint8_t *d = load("gray_16x16.png", &n);
  d[8 + 8 + 13] ^= 0x5a; /* IHDR's CRC */
  write_file(tmp_path("crc.png"), d, n);
  free(d);
  expect_bad(tmp_path("crc.png"), WEFT_EFORMAT, "CRC error");
}

TEST(png_bad_idat_crc) {
  size_t n;
  uint8_t *d = load("gray_16x16.png", &n);
  long idat = png_chunk_offset(d, n, "IDAT");
  uint32_t len = (uint32_t)d[idat] << 24 | d[idat + 1] << 16 |
                 d[idat + 2] << 8 | d[idat + 3];
  d[idat + 8 + len] ^= 0xff; /* the CRC, data intact */
  write_file(tmp_path("crc.png"), d, n);
  free(d);
  expect_bad(tmp_path("crc.png"), WEFT_EFORMAT, "IDAT: CRC error");
}

TEST(png_bad_idat_data) {
  size_t n;
  uint8_t *d = load("gray_16x16.png", &n);
  long idat = png_chunk_offset(d, n, "IDAT");
  d[idat + 8 + 3] ^= 0xff; /* data changed, CRC not: inflate fails first */
  write_file(tmp_path("data.png"), d, n);
  free(d);
  expect_bad(tmp_path("data.png"), WEFT_EFORMAT, "cannot read PNG");
}

TEST(png_bad_zlib_stream) {
  size_t n;
  uint8_t *d = load("gray_16x16.png", &n);
  long idat = png_chunk_offset(d, n, "IDAT");
  d[idat + 8] = 0x00; /* zlib header byte wrong, CRC made right */
  d[idat + 9] = 0x00;
  png_fix_crc(d, idat);
  write_file(tmp_path("z.png"), d, n);
  free(d);
  expect_bad(tmp_path("z.png"), WEFT_EFORMAT, "cannot read PNG");
}

static void set_ihdr_size(uint8_t *d, uint32_t w, uint32_t h) {
  uint8_t *p = d + 16;
  for (int i = 0; i < 4; i++) {
    p[i] = (uint8_t)(w >> (24 - 8 * i));
    p[4 + i] = (uint8_t)(h >> (24 - 8 * i));
  }
  png_fix_crc(d, 8);
}

TEST(png_bad_huge_width) {
  size_t n;
  uint8_t *d = load("gray_16x16.png", &n);
  set_ihdr_size(d, 16385, 16);
  write_file(tmp_path("wide.png"), d, n);
  free(d);
  expect_bad(tmp_path("wide.png"), WEFT_EFORMAT,
             "image is 16385x16 pixels; weft refuses more than 16384 per side");
}

TEST(png_bad_huge_both) {
  size_t n;
  uint8_t *d = load("gray_16x16.png", &n);
  set_ihdr_size(d, 100000, 200000);
  write_file(tmp_path("big.png"), d, n);
  free(d);
  expect_bad(tmp_path("big.png"), WEFT_EFORMAT, "100000x200000");
}

TEST(png_bad_zero_width) {
  size_t n;
  uint8_t *d = load("gray_16x16.png", &n);
  set_ihdr_size(d, 0, 16);
  write_file(tmp_path("zero.png"), d, n);
  free(d);
  expect_bad(tmp_path("zero.png"), WEFT_EFORMAT,
             "Invalid IHDR data (Image width is zero in IHDR)");
}

TEST(png_bad_wrong_size_says_not_enough_data) {
  size_t n;
  uint8_t *d = load("gray_16x16.png", &n);
  set_ihdr_size(d, 16, 64); /* IDAT holds 16 rows, not 64 */
  write_file(tmp_path("short.png"), d, n);
  free(d);
  expect_bad(tmp_path("short.png"), WEFT_EFORMAT, "cannot read PNG");
}

TEST(png_bad_every_prefix_is_an_error_not_a_crash) {
  size_t n;
  uint8_t *d = load("fmt/rgb8_text_4x3.png", &n);
  for (size_t len = 0; len < n; len++) {
    write_file(tmp_path("p.png"), d, len);
    weft__png_image img;
    char err[512];
    int rc = weft__png_read(tmp_path("p.png"), &img, err, sizeof err);
    if (rc != WEFT_EFORMAT)
      WEFT_TEST_FAIL_("prefix of %zu bytes: rc %d (%s)", len, rc, err);
  }
  free(d);
}

TEST(png_bad_flipped_bytes_are_errors_not_crashes) {
  size_t n;
  uint8_t *d = load("fmt/pal8_6x5.png", &n);
  int errors = 0;
  for (size_t i = 8; i < n; i++) {
    d[i] ^= 0x10;
    write_file(tmp_path("f.png"), d, n);
    d[i] ^= 0x10;
    weft__png_image img;
    char err[512];
    int rc = weft__png_read(tmp_path("f.png"), &img, err, sizeof err);
    if (rc == 0)
      weft__png_image_free(&img); /* a flip in an ignored place */
    else {
      ASSERT_EQ(rc, WEFT_EFORMAT);
      ASSERT_CONTAINS(err, "f.png");
      errors++;
    }
  }
  ASSERT(errors > (int)n / 2); /* CRCs catch nearly every flip */
  free(d);
}

TEST(png_reads_from_memory_like_from_file) {
  size_t n;
  uint8_t *d = read_file(fixture("fmt/rgb8_text_4x3.png"), &n);
  weft__png_image a = read_ok(fixture("fmt/rgb8_text_4x3.png")), b;
  char err[256];
  ASSERT_OK(weft__png_read_mem(d, n, "upload", &b, err, sizeof err));
  ASSERT(a.width == b.width && a.height == b.height && b.n_text == 3);
  ASSERT(memcmp(a.rgb, b.rgb, sizeof(float) * 4 * 3 * 3) == 0);
  weft__png_image_free(&b);
  ASSERT_EQ(weft__png_read_mem(d, 20, "upload", &b, err, sizeof err),
            WEFT_EFORMAT);
  ASSERT_CONTAINS(err, "cannot read PNG 'upload': unexpected end of file");
  ASSERT_EQ(weft__png_read_mem(d, 0, "upload", &b, err, sizeof err),
            WEFT_EFORMAT);
  ASSERT_CONTAINS(err, "'upload' is not a PNG file");
  weft__png_image_free(&a);
  free(d);
}

TEST(png_bad_small_file_claiming_huge_image) {
  /* 16384 x 16384 is within the limits, but a few hundred bytes cannot
   * hold it: refused before any allocation. */
  size_t n;
  uint8_t *d = load("gray_16x16.png", &n);
  set_ihdr_size(d, 16384, 16384);
  write_file(tmp_path("claim.png"), d, n);
  free(d);
  expect_bad(tmp_path("claim.png"), WEFT_EFORMAT,
             "16384x16384 pixels need 268451840 bytes of image data");
}

TEST(png_bad_chunk_claiming_gigabytes) {
  /* Found by fuzz_png: a tEXt chunk whose length field says 1.7 GB. */
  size_t n;
  uint8_t *d = load("gray_16x16.png", &n);
  uint8_t *e = malloc(n + 17);
  memcpy(e, d, 33); /* signature + IHDR */
  memcpy(e + 33,
         "\x66\x75\x6e\x7a"
         "tEXt"
         "key\0value",
         17);
  memcpy(e + 50, d + 33, n - 33);
  write_file(tmp_path("chunk.png"), e, n + 17);
  free(d);
  free(e);
  expect_bad(tmp_path("chunk.png"), WEFT_EFORMAT, "cannot read PNG");
}
