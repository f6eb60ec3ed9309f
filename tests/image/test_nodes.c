/* test_nodes.c - the image plugin's nodes, run through a fake host:
 * descriptors as ComfyUI's, LoadImage, SaveImage naming and refusals,
 * ImageScale/Invert/Blur/Blend wrappers, errors and cancellation. */
#include <sys/stat.h>
#include <unistd.h>
#include <utime.h>

#include "fake_host.h"
#include "ops.h"
#include "png_io.h"
#include "test.h"
#include "test_util.h"

static const weft_param_def *param(const weft_node_def *d, const char *n) {
  for (int32_t i = 0; i < d->n_params; i++)
    if (strcmp(d->params[i].name, n) == 0) return &d->params[i];
  WEFT_TEST_FAIL_("%s has no param %s", d->op, n);
}

static void check_choices(const weft_param_def *p, const char *const *want) {
  ASSERT_EQ(p->type, WEFT_TYPE_ENUM);
  int i = 0;
  for (; want[i]; i++)
    ASSERT_STR_EQ(p->choices[i], want[i]);
  ASSERT(p->choices[i] == NULL);
}

TEST(plugin_declares_comfyui_nodes) {
  fake_run r;
  fake_init(&r);
  const weft_plugin *p = weft_plugin_entry(&r.host);
  ASSERT_EQ(p->struct_size, sizeof(weft_plugin));
  ASSERT_EQ(p->abi_major, WEFT_ABI_MAJOR);
  ASSERT_STR_EQ(p->name, "image");
  ASSERT_EQ(p->n_nodes, 6);
  for (int32_t i = 0; i < p->n_nodes; i++) {
    const weft_node_def *d = p->nodes[i];
    ASSERT_EQ(d->struct_size, sizeof(weft_node_def));
    ASSERT(d->run != NULL && d->doc && strlen(d->doc) > 40);
    for (int32_t k = 0; k < d->n_params; k++)
      ASSERT(d->params[k].doc &&
             d->params[k].struct_size == sizeof(weft_param_def));
    for (int32_t k = 0; k < d->n_inputs; k++)
      ASSERT(d->inputs[k].doc);
    for (int32_t k = 0; k < d->n_outputs; k++)
      ASSERT(d->outputs[k].doc);
  }
  const weft_node_def *d = fake_node(&r, "LoadImage");
  ASSERT(param(d, "image")->flags & WEFT_PARAM_PATH);
  ASSERT_STR_EQ(d->outputs[0].name, "IMAGE");
  ASSERT_STR_EQ(d->outputs[1].name, "MASK");
  ASSERT(d->fingerprint != NULL);

  d = fake_node(&r, "SaveImage");
  ASSERT(d->flags & WEFT_NODE_OUTPUT);
  ASSERT_STR_EQ(d->inputs[0].name, "images");
  ASSERT_STR_EQ(param(d, "filename_prefix")->def_string, "weft");
  ASSERT_STR_EQ(d->outputs[1].name, "files");

  d = fake_node(&r, "ImageScale");
  ASSERT_STR_EQ(d->inputs[0].name, "image");
  static const char *const methods[] = {"nearest-exact", "bilinear", "area",
                                        "bicubic", NULL};
  check_choices(param(d, "upscale_method"), methods);
  static const char *const crops[] = {"disabled", "center", NULL};
  check_choices(param(d, "crop"), crops);
  ASSERT_EQ(param(d, "width")->def_int, 512);
  ASSERT_EQ(param(d, "height")->max, 16384);
  ASSERT_EQ(param(d, "height")->min, 0);

  ASSERT(fake_node(&r, "ImageInvert") != NULL);

  d = fake_node(&r, "ImageBlur");
  ASSERT_EQ(param(d, "blur_radius")->def_int, 1);
  ASSERT_EQ(param(d, "blur_radius")->min, 1);
  ASSERT_EQ(param(d, "blur_radius")->max, 31);
  ASSERT_NEAR(param(d, "sigma")->def_float, 1.0, 0);
  ASSERT_NEAR(param(d, "sigma")->min, 0.1, 0);
  ASSERT_NEAR(param(d, "sigma")->max, 10.0, 0);

  d = fake_node(&r, "ImageBlend");
  ASSERT_STR_EQ(d->inputs[0].name, "image1");
  ASSERT_STR_EQ(d->inputs[1].name, "image2");
  ASSERT_NEAR(param(d, "blend_factor")->def_float, 0.5, 0);
  static const char *const modes[] = {"normal",  "multiply",   "screen",
                                      "overlay", "soft_light", "difference",
                                      NULL};
  check_choices(param(d, "blend_mode"), modes);
}

/* ---- LoadImage ---------------------------------------------------------- */

TEST(load_image_gives_rgb_and_empty_64x64_mask) {
  fake_run r;
  fake_init(&r);
  const weft_node_def *d = fake_node(&r, "LoadImage");
  weft_value *out[2];
  ASSERT_OK(fake_run_node(&r, d, NULL, out, "image",
                          fake_string(fixture("photo.png")), NULL));
  const weft_tensor *t = fake_tensor_of(out[0]);
  ASSERT_EQ(fake_type_of(out[0]), WEFT_TYPE_IMAGE);
  ASSERT(t->ndim == 4 && t->shape[0] == 1 && t->shape[1] == 48 &&
         t->shape[2] == 64 && t->shape[3] == 3);
  weft__png_image img;
  char err[256];
  ASSERT_OK(weft__png_read(fixture("photo.png"), &img, err, sizeof err));
  ASSERT(memcmp(t->data, img.rgb, sizeof(float) * 48 * 64 * 3) == 0);
  weft__png_image_free(&img);
  const weft_tensor *m = fake_tensor_of(out[1]);
  ASSERT_EQ(fake_type_of(out[1]), WEFT_TYPE_MASK);
  ASSERT(m->ndim == 3 && m->shape[0] == 1 && m->shape[1] == 64 &&
         m->shape[2] == 64);
  for (int i = 0; i < 64 * 64; i++)
    ASSERT(((float *)m->data)[i] == 0.0f);
  fake_release(out[0]);
  fake_release(out[1]);
  ASSERT_EQ(fake_live_values(), 0);
}

TEST(load_image_mask_is_one_minus_alpha) {
  fake_run r;
  fake_init(&r);
  const weft_node_def *d = fake_node(&r, "LoadImage");
  weft_value *out[2];
  ASSERT_OK(fake_run_node(&r, d, NULL, out, "image",
                          fake_string(fixture("rgba_32x24.png")), NULL));
  const weft_tensor *t = fake_tensor_of(out[0]), *m = fake_tensor_of(out[1]);
  ASSERT_EQ(t->shape[3], 3); /* alpha goes to the mask, as ComfyUI */
  ASSERT(m->shape[1] == 24 && m->shape[2] == 32);
  const float *mask = m->data;
  ASSERT(mask[3 * 32 + 4] == 1.0f);   /* transparent */
  ASSERT(mask[10 * 32 + 31] == 0.0f); /* opaque */
  ASSERT(mask[10 * 32 + 10] == 1.0f - (10 * 255 / 31) / 255.0f);
  fake_release(out[0]);
  fake_release(out[1]);
  ASSERT_EQ(fake_live_values(), 0);
}

TEST(load_image_resolves_relative_path_in_input_dir) {
  fake_run r;
  fake_init(&r);
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/fixtures/images", weft_test_srcdir());
  r.input_dir = dir;
  const weft_node_def *d = fake_node(&r, "LoadImage");
  weft_value *out[2];
  ASSERT_OK(fake_run_node(&r, d, NULL, out, "image",
                          fake_string("fmt/ga8_7x5.png"), NULL));
  ASSERT_EQ(fake_tensor_of(out[0])->shape[2], 7);
  fake_release(out[0]);
  fake_release(out[1]);
  /* An absolute path ignores the input directory. */
  r.input_dir = "/nonexistent";
  ASSERT_OK(fake_run_node(&r, d, NULL, out, "image",
                          fake_string(fixture("gray_16x16.png")), NULL));
  fake_release(out[0]);
  fake_release(out[1]);
  ASSERT_EQ(fake_live_values(), 0);
}

TEST(load_image_missing_file_is_enoent_naming_it) {
  fake_run r;
  fake_init(&r);
  r.input_dir = weft_test_tmpdir();
  weft_value *out[2];
  int rc = fake_run_node(&r, fake_node(&r, "LoadImage"), NULL, out, "image",
                         fake_string("cat.png"), NULL);
  ASSERT_EQ(rc, WEFT_ENOENT);
  ASSERT_CONTAINS(r.error, tmp_path("cat.png"));
  ASSERT_CONTAINS(r.error, "No such file");
  ASSERT(out[0] == NULL && out[1] == NULL);
  rc = fake_run_node(&r, fake_node(&r, "LoadImage"), NULL, out, "image",
                     fake_string(""), NULL);
  ASSERT_EQ(rc, WEFT_EINVAL);
  ASSERT_CONTAINS(r.error, "param 'image' is empty");
  ASSERT_EQ(fake_live_values(), 0);
}

TEST(load_image_corrupt_file_is_eformat) {
  fake_run r;
  fake_init(&r);
  write_file(tmp_path("bad.png"), "\x89PNG\r\n\x1a\nnonsense", 16);
  weft_value *out[2];
  int rc = fake_run_node(&r, fake_node(&r, "LoadImage"), NULL, out, "image",
                         fake_string(tmp_path("bad.png")), NULL);
  ASSERT_EQ(rc, WEFT_EFORMAT);
  ASSERT_CONTAINS(r.error, tmp_path("bad.png"));
  ASSERT(out[0] == NULL);
  ASSERT_EQ(fake_live_values(), 0);
}

TEST(load_image_fingerprint_follows_file_changes) {
  fake_run r;
  fake_init(&r);
  r.input_dir = weft_test_tmpdir();
  const weft_node_def *d = fake_node(&r, "LoadImage");
  size_t n;
  uint8_t *png = read_file(fixture("gray_16x16.png"), &n);
  write_file(tmp_path("in.png"), png, n);
  uint64_t a = fake_fingerprint(&r, d, "image", fake_string("in.png"), NULL);
  uint64_t b = fake_fingerprint(&r, d, "image", fake_string("in.png"), NULL);
  ASSERT(a == b && a != 0);
  struct utimbuf t = {1000000000, 1000000000}; /* same bytes, other mtime */
  ASSERT_OK(utime(tmp_path("in.png"), &t));
  uint64_t c = fake_fingerprint(&r, d, "image", fake_string("in.png"), NULL);
  ASSERT(c != a);
  write_file(tmp_path("in.png"), png, n - 1); /* other size, same mtime */
  ASSERT_OK(utime(tmp_path("in.png"), &t));
  uint64_t e = fake_fingerprint(&r, d, "image", fake_string("in.png"), NULL);
  ASSERT(e != c);
  free(png);
  ASSERT_EQ(fake_live_values(), 0);
}

/* ---- SaveImage ---------------------------------------------------------- */

static weft_value *test_image(int64_t b, int64_t h, int64_t w, int64_t c) {
  float *px = malloc(sizeof(float) * b * h * w * c);
  for (int64_t i = 0; i < b * h * w * c; i++)
    px[i] = (float)(i % 256) / 255.0f;
  weft_value *v = fake_image(b, h, w, c, px);
  free(px);
  return v;
}

static int save(fake_run *r, weft_value *img, const char *prefix,
                weft_value **out) {
  return fake_run_node(r, fake_node(r, "SaveImage"), &img, out,
                       "filename_prefix", fake_string(prefix), NULL);
}

TEST(save_image_names_files_like_comfyui) {
  fake_run r;
  fake_init(&r);
  r.output_dir = weft_test_tmpdir();
  weft_value *img = test_image(1, 5, 6, 3), *out[2];
  ASSERT_OK(save(&r, img, "weft", out));
  ASSERT_STR_EQ(fake_string_of(out[1]), tmp_path("weft_00001_.png"));
  ASSERT(out[0] == img && fake_refs(img) == 2); /* passed through */
  fake_release(out[0]);
  fake_release(out[1]);
  ASSERT_OK(save(&r, img, "weft", out));
  ASSERT_STR_EQ(fake_string_of(out[1]), tmp_path("weft_00002_.png"));
  fake_release(out[0]);
  fake_release(out[1]);
  /* The pixels are ComfyUI's 8-bit values. */
  weft__png_image png;
  char err[256];
  ASSERT_OK(weft__png_read(tmp_path("weft_00002_.png"), &png, err, sizeof err));
  const float *src = fake_tensor_of(img)->data;
  for (int i = 0; i < 5 * 6 * 3; i++)
    ASSERT(png.rgb[i] == weft__png_to_u8(src[i]) / 255.0f);
  weft__png_image_free(&png);
  ASSERT_EQ(count_entries(weft_test_tmpdir(), ".weft-"), 0); /* no temps */
  fake_release(img);
  ASSERT_EQ(fake_live_values(), 0);
}

TEST(save_image_counter_follows_highest_existing) {
  fake_run r;
  fake_init(&r);
  r.output_dir = weft_test_tmpdir();
  write_file(tmp_path("shot_00007_.png"), "x", 1);
  write_file(tmp_path("shot_00003_.png"), "x", 1);
  write_file(tmp_path("shot_abc_.png"), "x", 1);      /* counts as 0 */
  write_file(tmp_path("shot_00099.png"), "x", 1);     /* "00099.png": 0 */
  write_file(tmp_path("shotgun_00500_.png"), "x", 1); /* other prefix */
  weft_value *img = test_image(1, 2, 2, 3), *out[2];
  ASSERT_OK(save(&r, img, "shot", out));
  ASSERT_STR_EQ(fake_string_of(out[1]), tmp_path("shot_00008_.png"));
  fake_release(out[0]);
  fake_release(out[1]);
  fake_release(img);
  ASSERT_EQ(fake_live_values(), 0);
}

TEST(save_image_writes_one_file_per_batch_item) {
  fake_run r;
  fake_init(&r);
  r.output_dir = weft_test_tmpdir();
  weft_value *img = test_image(3, 4, 4, 4), *out[2];
  ASSERT_OK(save(&r, img, "b%batch_num%x", out));
  char want[3 * 4200];
  snprintf(want, sizeof want, "%s\n%s\n%s", tmp_path("b0x_00001_.png"),
           tmp_path("b1x_00002_.png"), tmp_path("b2x_00003_.png"));
  ASSERT_STR_EQ(fake_string_of(out[1]), want);
  ASSERT(r.progress_k == 3 && r.progress_n == 3);
  weft__png_image png;
  char err[256];
  ASSERT_OK(weft__png_read(tmp_path("b1x_00002_.png"), &png, err, sizeof err));
  ASSERT(png.alpha != NULL); /* 4 channels: RGBA */
  weft__png_image_free(&png);
  fake_release(out[0]);
  fake_release(out[1]);
  fake_release(img);
  ASSERT_EQ(fake_live_values(), 0);
}

TEST(save_image_creates_subfolders) {
  fake_run r;
  fake_init(&r);
  r.output_dir = tmp_path("out"); /* created too */
  weft_value *img = test_image(1, 3, 3, 1), *out[2];
  ASSERT_OK(save(&r, img, "runs/./a//gray", out));
  ASSERT_STR_EQ(fake_string_of(out[1]), tmp_path("out/runs/a/gray_00001_.png"));
  fake_release(out[0]);
  fake_release(out[1]);
  ASSERT_OK(save(&r, img, "%width%x%height%/s", out));
  ASSERT_STR_EQ(fake_string_of(out[1]), tmp_path("out/3x3/s_00001_.png"));
  fake_release(out[0]);
  fake_release(out[1]);
  fake_release(img);
  ASSERT_EQ(fake_live_values(), 0);
}

static void expect_bad_prefix(const char *prefix, const char *reason) {
  fake_run r;
  fake_init(&r);
  r.output_dir = tmp_path("out");
  weft_value *img = test_image(1, 2, 2, 3), *out[2];
  ASSERT_EQ(save(&r, img, prefix, out), WEFT_EINVAL);
  fprintf(stderr, "message: %s\n", r.error);
  ASSERT_CONTAINS(r.error, "filename_prefix");
  ASSERT_CONTAINS(r.error, reason);
  ASSERT(out[0] == NULL && out[1] == NULL);
  ASSERT_EQ(count_entries(weft_test_tmpdir(), ""), 0); /* nothing made */
  fake_release(img);
  ASSERT_EQ(fake_live_values(), 0);
}

TEST(save_image_rejects_dotdot) {
  expect_bad_prefix("../escape", "'..'");
  expect_bad_prefix("a/../../b", "'..'");
  expect_bad_prefix("a/..", "'..'");
}

TEST(save_image_rejects_absolute_prefix) {
  expect_bad_prefix("/etc/weft", "absolute");
}

TEST(save_image_rejects_empty_file_name) {
  expect_bad_prefix("", "empty");
  expect_bad_prefix("sub/", "no file name");
  expect_bad_prefix("sub/.", "no file name");
}

TEST(save_image_rejects_bad_channel_count) {
  fake_run r;
  fake_init(&r);
  r.output_dir = weft_test_tmpdir();
  weft_value *img = test_image(1, 2, 2, 2), *out[2];
  ASSERT_EQ(save(&r, img, "x", out), WEFT_EUNSUPPORTED);
  ASSERT_CONTAINS(r.error, "2 channels");
  ASSERT_EQ(count_entries(weft_test_tmpdir(), ""), 0);
  fake_release(img);
}

TEST(save_image_unwritable_directory_is_an_error) {
  fake_run r;
  fake_init(&r);
  write_file(tmp_path("file"), "x", 1);
  r.output_dir = tmp_path("file"); /* a file, not a directory */
  weft_value *img = test_image(1, 2, 2, 3), *out[2];
  ASSERT_EQ(save(&r, img, "x", out), WEFT_EIO);
  ASSERT_CONTAINS(r.error, tmp_path("file"));
  fake_release(img);
  ASSERT_EQ(fake_live_values(), 0);
}

TEST(save_image_stops_when_cancelled) {
  fake_run r;
  fake_init(&r);
  r.output_dir = weft_test_tmpdir();
  r.cancel_after = 1; /* the second item sees the cancel */
  weft_value *img = test_image(3, 2, 2, 3), *out[2];
  ASSERT_EQ(save(&r, img, "c", out), WEFT_ECANCELED);
  ASSERT(out[0] == NULL && out[1] == NULL);
  ASSERT_EQ(count_entries(weft_test_tmpdir(), ""), 1); /* whole files only */
  ASSERT_EQ(count_entries(weft_test_tmpdir(), "c_00001_.png"), 1);
  fake_release(img);
  ASSERT_EQ(fake_live_values(), 0);
}

/* ---- ImageScale, ImageInvert, ImageBlur, ImageBlend -------------------- */

TEST(image_scale_node_keeps_aspect_and_batches) {
  fake_run r;
  fake_init(&r);
  const weft_node_def *d = fake_node(&r, "ImageScale");
  weft_value *img = test_image(2, 6, 8, 3), *out[1];
  ASSERT_OK(fake_run_node(&r, d, &img, out, "upscale_method",
                          fake_enum(d, "upscale_method", "bicubic"), "width",
                          fake_int(0), "height", fake_int(12), NULL));
  const weft_tensor *t = fake_tensor_of(out[0]);
  ASSERT(t->shape[0] == 2 && t->shape[1] == 12 && t->shape[2] == 16 &&
         t->shape[3] == 3);
  /* Item 1 equals the pure function on item 1. */
  float want[12 * 16 * 3];
  ASSERT_OK(weft__image_scale((float *)fake_tensor_of(img)->data + 6 * 8 * 3, 6,
                              8, 3, want, 12, 16, WEFT__RESIZE_BICUBIC, 0,
                              NULL));
  ASSERT(memcmp(want, (float *)t->data + 12 * 16 * 3, sizeof want) == 0);
  fake_release(out[0]);
  /* 0 x 0: the input itself. */
  ASSERT_OK(fake_run_node(&r, d, &img, out, "width", fake_int(0), "height",
                          fake_int(0), NULL));
  ASSERT(out[0] == img);
  fake_release(out[0]);
  /* Too large after keeping the aspect ratio. */
  weft_value *thin = test_image(1, 1, 100, 3);
  ASSERT_EQ(fake_run_node(&r, d, &thin, out, "width", fake_int(0), "height",
                          fake_int(16384), NULL),
            WEFT_EINVAL);
  ASSERT_CONTAINS(r.error, "limit is 16384");
  fake_release(thin);
  fake_release(img);
  ASSERT_EQ(fake_live_values(), 0);
}

TEST(image_invert_blur_blend_nodes_run) {
  fake_run r;
  fake_init(&r);
  weft_value *img = test_image(1, 4, 5, 4), *out[1];
  ASSERT_OK(fake_run_node(&r, fake_node(&r, "ImageInvert"), &img, out, NULL));
  const float *in = fake_tensor_of(img)->data;
  const float *inv = fake_tensor_of(out[0])->data;
  ASSERT(inv[0] == 1.0f - in[0] && inv[3] == in[3]); /* alpha kept */
  fake_release(out[0]);

  const weft_node_def *blur = fake_node(&r, "ImageBlur");
  ASSERT_OK(fake_run_node(&r, blur, &img, out, "blur_radius", fake_int(2),
                          "sigma", fake_float(0.5), NULL));
  float want[4 * 5 * 4];
  ASSERT_OK(weft__blur(in, 4, 5, 4, 2, 0.5, want, NULL));
  ASSERT(memcmp(want, fake_tensor_of(out[0])->data, sizeof want) == 0);
  fake_release(out[0]);

  const weft_node_def *blend = fake_node(&r, "ImageBlend");
  weft_value *two[2] = {img, test_image(1, 8, 3, 3)};
  ASSERT_OK(fake_run_node(&r, blend, two, out, "blend_factor", fake_float(0.25),
                          "blend_mode",
                          fake_enum(blend, "blend_mode", "multiply"), NULL));
  const weft_tensor *t = fake_tensor_of(out[0]);
  ASSERT(t->shape[1] == 4 && t->shape[2] == 5 && t->shape[3] == 4);
  fake_release(out[0]);
  fake_release(two[1]);
  fake_release(img);
  ASSERT_EQ(fake_live_values(), 0);
}

TEST(nodes_reject_wrong_inputs_naming_the_port) {
  fake_run r;
  fake_init(&r);
  int64_t shape[3] = {1, 4, 4};
  weft_value *mask = fake_tensor(WEFT_TYPE_MASK, 3, shape, NULL), *out[1];
  ASSERT_EQ(fake_run_node(&r, fake_node(&r, "ImageInvert"), &mask, out, NULL),
            WEFT_ETYPE);
  ASSERT_CONTAINS(r.error, "input 'image'");
  ASSERT(out[0] == NULL);
  weft_value *two[2] = {test_image(2, 2, 2, 3), test_image(3, 2, 2, 3)};
  ASSERT_EQ(fake_run_node(&r, fake_node(&r, "ImageBlend"), two, out, NULL),
            WEFT_EINVAL);
  ASSERT_CONTAINS(r.error, "batch sizes");
  fake_release(two[0]);
  fake_release(two[1]);
  fake_release(mask);
  ASSERT_EQ(fake_live_values(), 0);
}

TEST(blur_node_stops_when_cancelled) {
  fake_run r;
  fake_init(&r);
  r.cancel_after = 0;
  weft_value *img = test_image(1, 64, 64, 3), *out[1];
  ASSERT_EQ(fake_run_node(&r, fake_node(&r, "ImageBlur"), &img, out, NULL),
            WEFT_ECANCELED);
  ASSERT(out[0] == NULL);
  fake_release(img);
  ASSERT_EQ(fake_live_values(), 0);
}

TEST(nodes_copy_strided_inputs) {
  fake_run r;
  fake_init(&r);
  /* A [1,2,3,3] view with the W axis reversed in memory. */
  weft_value *img = test_image(1, 2, 3, 3), *out[1];
  weft_tensor *t = (weft_tensor *)fake_tensor_of(img);
  float *base = t->data;
  float orig[18];
  memcpy(orig, base, sizeof orig);
  t->stride[2] = -3;
  t->data = base + 6; /* x = 0 is the last pixel of each row */
  ASSERT_OK(fake_run_node(&r, fake_node(&r, "ImageInvert"), &img, out, NULL));
  const float *o = fake_tensor_of(out[0])->data;
  for (int y = 0; y < 2; y++)
    for (int x = 0; x < 3; x++)
      for (int k = 0; k < 3; k++)
        ASSERT(o[(y * 3 + x) * 3 + k] == 1.0f - orig[y * 9 + (2 - x) * 3 + k]);
  t->data = base; /* so release frees the real pointer */
  fake_release(out[0]);
  fake_release(img);
}

TEST(save_image_never_overwrites) {
  /* With %batch_num% the counter scan looks for the literal prefix and
   * finds nothing (ComfyUI then overwrites); the rename refuses a taken
   * name and weft moves on to the next counter. */
  fake_run r;
  fake_init(&r);
  r.output_dir = weft_test_tmpdir();
  weft_value *img = test_image(1, 2, 2, 3), *out[2];
  ASSERT_OK(save(&r, img, "n%batch_num%", out));
  ASSERT_STR_EQ(fake_string_of(out[1]), tmp_path("n0_00001_.png"));
  fake_release(out[0]);
  fake_release(out[1]);
  ASSERT_OK(save(&r, img, "n%batch_num%", out));
  ASSERT_STR_EQ(fake_string_of(out[1]), tmp_path("n0_00002_.png"));
  fake_release(out[0]);
  fake_release(out[1]);
  ASSERT_EQ(count_entries(weft_test_tmpdir(), ""), 2);
  fake_release(img);
  ASSERT_EQ(fake_live_values(), 0);
}
