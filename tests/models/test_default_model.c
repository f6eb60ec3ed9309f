/* test_default_model.c - the embedded default model (models/default/,
 * issue 5) in weft, on the CPU.
 *
 * Exactness: weft against tools/train/gen_default_golden.py's Python run of
 * the same model (tests/fixtures/default_model/golden.safetensors; same
 * sampler, seeds and noise: weft's RNG is torch's CPU randn bit for bit),
 * part by part (text encoder, UNet, VAE decoder), as final latents, and as
 * the pixels graphs/txt2img.yaml, lora.yaml and controlnet.yaml write with
 * their defaults.
 *
 * Quality (issue 5's bars): the product graphs over the 32 held-out prompts
 * of models/default/eval_prompts.json, each with its seed, measured by
 * eval_default.py's pixel checks ported to C (default_checks.c, compared
 * number for number with Python's on reference images).  The colour and
 * ControlNet bars are not met by the shipped model: meson registers those
 * two cases as expected failures (tests/models/meson.build says why); in
 * them anything but the bar itself fails through MUST (exit 99, meson's
 * ERROR), so a broken run is never taken for the expected failure. */
#include <jansson.h>
#include <stdbool.h>
#include <unistd.h>

#include "default_checks.h"
#include "png_io.h"
#include "probe.h"
#include "sd_fixture.h"

/* Sanitizer builds (CI runs every test under ASan+UBSan on 2 cores) run
 * the quality cases on every DM_SANITIZED_STRIDE-th prompt (two of each
 * shape): the whole set takes too long there; the normal build runs all. */
#if defined(__SANITIZE_ADDRESS__)
#define DM_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) ||                                        \
    __has_feature(undefined_behavior_sanitizer)
#define DM_SANITIZED 1
#endif
#endif
#ifndef DM_SANITIZED
#define DM_SANITIZED 0
#endif
#define DM_SANITIZED_STRIDE 4

/* A failure that is not the bar under test: meson's ERROR (exit 99) even in
 * a case registered as an expected failure. */
#define MUST(cond)                                                             \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: setup failed: %s\n", __FILE__, __LINE__, #cond); \
      fflush(stderr);                                                          \
      _exit(99);                                                               \
    }                                                                          \
  } while (0)

enum { RES = 128, NPIX = RES * RES * 3, LAT = 4 * 16 * 16 };

/* <repository>/rel, malloc'd (caller frees) */
static char *repo_path(const char *rel) {
  char *p = malloc(4096);
  MUST(p != NULL);
  snprintf(p, 4096, "%s/../%s", weft_test_srcdir(), rel);
  return p;
}

static weft_st_file *golden(void) {
  char *p = repo_path("tests/fixtures/default_model/golden.safetensors");
  char err[1024];
  weft_st_file *f = NULL;
  int r = weft_st_open(p, &f, err, sizeof err);
  if (r) fprintf(stderr, "%s\n", err);
  MUST(r == 0);
  free(p);
  return f;
}

/* golden.safetensors' "prompts" metadata: prompt i and its seed */
static void golden_prompt(weft_st_file *f, int i, char *prompt, size_t len,
                          long long *seed) {
  const char *meta = weft_st_meta(f, "prompts");
  MUST(meta != NULL);
  json_t *a = json_loads(meta, 0, NULL);
  MUST(a && json_is_array(a) && (size_t)i < json_array_size(a));
  json_t *e = json_array_get(a, (size_t)i);
  snprintf(prompt, len, "%s", json_string_value(json_object_get(e, "prompt")));
  *seed = json_integer_value(json_object_get(e, "seed"));
  json_decref(a);
}

/* a PNG's pixels as u8 [h][w][3] (caller frees); its size must be RES */
static uint8_t *read_png_u8(const char *path) {
  weft__png_image img;
  char err[1024];
  int r = weft__png_read(path, &img, err, sizeof err);
  if (r) fprintf(stderr, "%s\n", err);
  MUST(r == 0);
  MUST(img.width == RES && img.height == RES);
  uint8_t *u = malloc(NPIX);
  MUST(u != NULL);
  for (int i = 0; i < NPIX; i++)
    u[i] = (uint8_t)lrintf(img.rgb[i] * 255.0f); /* exact levels of 8 bits */
  weft__png_image_free(&img);
  return u;
}

/* worst |a - b| over NPIX values; *n_diff gets how many differ */
static int pixel_diff(const uint8_t *a, const uint8_t *b, int *n_diff) {
  int worst = 0, n = 0;
  for (int i = 0; i < NPIX; i++) {
    int d = abs((int)a[i] - (int)b[i]);
    worst = d > worst ? d : worst;
    n += d != 0;
  }
  *n_diff = n;
  return worst;
}

/* ---- the pixel checks against Python's --------------------------------- */

TEST(pixel_checks_equal_python_on_reference_images) {
  char *p = repo_path("tests/fixtures/default_model/checks.json");
  json_error_t je;
  json_t *all = json_load_file(p, 0, &je);
  if (!all) fprintf(stderr, "%s:%d: %s\n", p, je.line, je.text);
  ASSERT(all && json_array_size(all) >= 8);
  size_t i;
  json_t *e;
  int hollow = 0;
  json_array_foreach(all, i, e) {
    char rel[512];
    snprintf(rel, sizeof rel, "tests/fixtures/default_model/checks/%s",
             json_string_value(json_object_get(e, "file")));
    char *png = repo_path(rel);
    uint8_t *u = read_png_u8(png);
    dm_check c;
    ASSERT_OK(dm_check_image(u, RES, RES, &c));
    const char *bg = json_string_value(json_object_get(e, "background"));
    const char *col = json_string_value(json_object_get(e, "color"));
    const char *shape = json_string_value(json_object_get(e, "shape"));
    fprintf(stderr,
            "%s: bg %s colour %s shape %s area %lld fill %.6f solidity %.6f "
            "interior %.6f hollow %d\n",
            rel, dm_color_names[c.background],
            c.color >= 0 ? dm_color_names[c.color] : "-",
            c.shape >= 0 ? dm_shape_names[c.shape] : "-", (long long)c.area,
            c.fill, c.solidity, c.interior, c.hollow);
    ASSERT_EQ(c.background, dm_color_index(bg));
    ASSERT_EQ(c.color, dm_color_index(col));
    ASSERT_EQ(c.shape, dm_shape_index(shape));
    ASSERT_EQ(c.area, json_integer_value(json_object_get(e, "area")));
    /* the same operations on the same integers: equal up to the last bit
     * of a double division */
    ASSERT_NEAR(c.fill, json_real_value(json_object_get(e, "fill")), 1e-12);
    ASSERT_NEAR(c.solidity, json_real_value(json_object_get(e, "solidity")),
                1e-12);
    ASSERT_NEAR(c.interior, json_number_value(json_object_get(e, "interior")),
                1e-12);
    ASSERT_EQ(c.hollow, json_is_true(json_object_get(e, "hollow")));
    json_t *cen = json_object_get(e, "centroid");
    ASSERT_NEAR(c.cx, json_real_value(json_array_get(cen, 0)), 1e-9);
    ASSERT_NEAR(c.cy, json_real_value(json_array_get(cen, 1)), 1e-9);
    hollow += c.hollow;
    free(u), free(png);
  }
  ASSERT(hollow >= 4); /* the outlined shapes are in the set */
  json_decref(all);
  free(p);
}

/* ---- the model's parts against Python ---------------------------------- */

typedef struct dm_model {
  sd_ckpt ck;
  weft_st_file *file;
  weft_backend *be;
} dm_model;

static void dm_model_open(dm_model *m) {
  memset(m, 0, sizeof *m);
  char *p = repo_path("models/default/weft-shapes-v1.safetensors");
  char err[1024];
  int r = weft_st_open(p, &m->file, err, sizeof err);
  if (r) fprintf(stderr, "%s\n", err);
  ASSERT_OK(r);
  m->ck.layout = SD_LAYOUT_LDM;
  for (int i = 0; i < SD_PARTS; i++) {
    m->ck.files[i] = fx_file(m->file);
    m->ck.has[i] = true;
  }
  const char *none[SD_PARTS] = {NULL, NULL, NULL};
  r = sd_ckpt_configure(&m->ck, none);
  if (r) fprintf(stderr, "%s\n", m->ck.err);
  ASSERT_OK(r);
  m->be = weft_backend_cpu_new(2);
  ASSERT(m->be != NULL);
  free(p);
}

static void dm_model_close(dm_model *m) {
  weft_backend_free(m->be);
  sd_ckpt_release(&m->ck);
  sd_ckpt_free_params(&m->ck);
  weft_st_close(m->file);
}

/* |got - want| <= tol * (1 + |want|) everywhere; prints the worst */
static void check_close(const char *what, const float *got, const float *want,
                        int64_t n, double tol) {
  double worst = 0, worst_rel = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = fabs((double)got[i] - want[i]);
    double rel = d / (1 + fabs(want[i]));
    if (!(rel <= tol))
      fprintf(stderr, "%s [%lld]: %.7g want %.7g\n", what, (long long)i, got[i],
              want[i]);
    ASSERT(rel <= tol);
    worst = d > worst ? d : worst;
    worst_rel = rel > worst_rel ? rel : worst_rel;
  }
  fprintf(stderr, "%s: max abs diff %.3g, max diff / (1 + |want|) %.3g\n", what,
          worst, worst_rel);
}

static const float *gf32(weft_st_file *f, const char *key, int64_t numel) {
  const weft_st_tensor *t = weft_st_find(f, key);
  if (!t) fprintf(stderr, "golden.safetensors has no '%s'\n", key);
  ASSERT(t != NULL && t->dtype == WEFT_ST_F32 &&
         t->nbytes == (uint64_t)numel * 4);
  return t->data;
}

/* tests/fixtures/default_model/<rel>, a lossless PNG of Python's pixels
 * (caller frees) */
static uint8_t *golden_png(const char *rel) {
  char path[512];
  snprintf(path, sizeof path, "tests/fixtures/default_model/%s", rel);
  char *p = repo_path(path);
  uint8_t *u = read_png_u8(p);
  free(p);
  return u;
}

/* What the loader must read from this checkpoint rather than assume (model
 * card, "Architecture"): no attention at level 0, one text head, one VAE
 * res block per level, context 64, 8 UNet heads from the metadata. */
TEST(architecture_is_read_from_the_checkpoint) {
  dm_model m;
  dm_model_open(&m);
  const sd_unet_cfg *u = &m.ck.unet;
  ASSERT_EQ(u->n_levels, 4);
  const int ch[4] = {32, 64, 64, 128};
  const bool attn[4] = {false, true, true, false};
  for (int i = 0; i < 4; i++) {
    ASSERT_EQ(u->channels[i], ch[i]);
    ASSERT_EQ(u->attn[i], attn[i]);
  }
  ASSERT(u->mid_attn);
  ASSERT_EQ(u->layers_per_block, 2);
  ASSERT_EQ(u->context_dim, 64);
  ASSERT_EQ(u->heads[1], 8);
  ASSERT_EQ(m.ck.clip.hidden, 64);
  ASSERT_EQ(m.ck.clip.heads, 1);
  ASSERT_EQ(m.ck.clip.layers, 4);
  ASSERT_EQ(m.ck.clip.vocab, 49408);
  ASSERT_EQ(m.ck.vae.layers_per_block, 1);
  ASSERT_EQ(m.ck.vae.n_levels, 4);
  ASSERT_NEAR(m.ck.vae.scaling_factor, 0.18215, 1e-7);
  /* every tensor of the file is used by some layer */
  sd_unet *unet = NULL;
  sd_clip *clip = NULL;
  sd_vae *vae = NULL;
  ASSERT_OK(sd_unet_load(&m.ck, &unet));
  ASSERT_OK(sd_clip_load(&m.ck, &clip));
  ASSERT_OK(sd_vae_load(&m.ck, &vae));
  char left[2048];
  int n = sd_ckpt_unused(&m.ck, left, sizeof left);
  if (n) fprintf(stderr, "%s\n", left);
  ASSERT_EQ(n, 0);
  sd_unet_free(unet), sd_clip_free(clip), sd_vae_free(vae);
  dm_model_close(&m);
}

/* fp32 compute on the same fp16 weights as fp32 torch: only the order of
 * sums differs (relative 1e-4 as for the tiny fixture models) */
#define PART_TOL 1e-4

TEST(text_encoder_matches_python) {
  weft_st_file *g = golden();
  const weft_st_tensor *ids64 = weft_st_find(g, "clip_ids");
  ASSERT(ids64 && ids64->dtype == WEFT_ST_I64 && ids64->shape[1] == 77);
  int64_t n = ids64->shape[0];
  int32_t *ids = malloc((size_t)(n * 77) * sizeof *ids);
  for (int64_t i = 0; i < n * 77; i++) {
    int64_t v;
    memcpy(&v, (const char *)ids64->data + 8 * i, 8);
    ids[i] = (int32_t)v;
  }
  dm_model m;
  dm_model_open(&m);
  sd_clip *clip = NULL;
  ASSERT_OK(sd_clip_load(&m.ck, &clip));
  float *hid = malloc((size_t)(n * 77 * 64) * sizeof *hid);
  ASSERT_OK(sd_clip_forward(clip, m.be, ids, n, 0, hid, NULL));
  check_close("text encoder (\"\" and 3 prompts)", hid,
              gf32(g, "clip_hidden", n * 77 * 64), n * 77 * 64, PART_TOL);
  free(ids), free(hid);
  sd_clip_free(clip);
  dm_model_close(&m);
  weft_st_close(g);
}

TEST(unet_matches_python) {
  weft_st_file *g = golden();
  dm_model m;
  dm_model_open(&m);
  sd_unet *unet = NULL;
  ASSERT_OK(sd_unet_load(&m.ck, &unet));
  const weft_st_tensor *h = weft_st_find(g, "clip_hidden");
  ASSERT(h != NULL);
  int64_t n_hidden = (int64_t)(h->nbytes / 4);
  float eps[2 * LAT];
  for (int k = 0; k < 2; k++) {
    char key[64];
    snprintf(key, sizeof key, "unet%d_t", k);
    float t = gf32(g, key, 1)[0], tt[2] = {t, t};
    snprintf(key, sizeof key, "unet%d_x", k);
    const float *x = gf32(g, key, 2 * LAT);
    /* the context: "" and prompt 0, encoded in one batch as txt2img does */
    const float *ctx = gf32(g, "clip_hidden", n_hidden);
    ASSERT_OK(
        sd_unet_forward(unet, m.be, x, 2, 16, 16, tt, ctx, 77, NULL, eps));
    snprintf(key, sizeof key, "unet%d_eps", k);
    char what[64];
    snprintf(what, sizeof what, "UNet at t = %g (uncond, cond)", t);
    check_close(what, eps, gf32(g, key, 2 * LAT), 2 * LAT, PART_TOL);
  }
  sd_unet_free(unet);
  dm_model_close(&m);
  weft_st_close(g);
}

/* The decoder on Python's final latents gives Python's pixels (ComfyUI's
 * VAEDecode and SaveImage conversion): within 1 level, where a value near
 * a level's edge truncates the other way. */
TEST(vae_decoder_matches_python) {
  weft_st_file *g = golden();
  dm_model m;
  dm_model_open(&m);
  sd_vae *vae = NULL;
  ASSERT_OK(sd_vae_load(&m.ck, &vae));
  float *img = malloc(NPIX * sizeof *img);
  uint8_t *u = malloc(NPIX);
  for (int k = 0; k < 3; k++) {
    char key[32];
    snprintf(key, sizeof key, "latent%d", k);
    ASSERT_OK(sd_vae_decode(vae, m.be, gf32(g, key, LAT), 1, 16, 16, img));
    for (int y = 0; y < RES; y++)
      for (int x = 0; x < RES; x++)
        for (int c = 0; c < 3; c++) {
          float v = (img[(c * RES + y) * RES + x] + 1.0f) / 2.0f;
          v = v < 0 ? 0 : v > 1 ? 1 : v;
          u[(y * RES + x) * 3 + c] = weft__png_to_u8(v);
        }
    snprintf(key, sizeof key, "checks/golden%d.png", k);
    uint8_t *want = golden_png(key);
    int nd, worst = pixel_diff(u, want, &nd);
    free(want);
    fprintf(stderr, "VAE decode of latent%d: max %d/255, %d of %d differ\n", k,
            worst, nd, NPIX);
    ASSERT(worst <= 1);
  }
  free(img), free(u);
  sd_vae_free(vae);
  dm_model_close(&m);
  weft_st_close(g);
}

/* ---- whole runs against Python ----------------------------------------- */

/* weft run graphs/<graph> from the repository (--input-dir: its default
 * paths resolve as for a user there) with sets (NULL-terminated); returns
 * the PNG's pixels (caller frees) */
static uint8_t *weft_run_graph(const char *graph, const char *prefix,
                               const char *const *sets) {
  char g[4096], root[4096], out[4096];
  snprintf(g, sizeof g, "%s/../graphs/%s", weft_test_srcdir(), graph);
  snprintf(root, sizeof root, "%s/..", weft_test_srcdir());
  snprintf(out, sizeof out, "prefix=%s", prefix);
  const char *a[64] = {
      g,       "--input-dir", root, "--output-dir", weft_test_tmpdir(),
      "--set", out,           "-q"};
  int n = 8;
  for (int i = 0; sets && sets[i] && n < 60; i++) {
    a[n++] = "--set";
    a[n++] = sets[i];
  }
  a[n] = NULL;
  probe_weft_run(a, NULL);
  char png[4200];
  snprintf(png, sizeof png, "%s/%s_00001_.png", weft_test_tmpdir(), prefix);
  return read_png_u8(png);
}

/* The same prompt and seed give Python's pixels: within 2 levels (the
 * trajectories differ in the order of float sums, and a value at a level's
 * edge truncates either way) */
#define IMAGE_TOL 2

static void compare_image(const char *what, const uint8_t *got,
                          const uint8_t *want) {
  int nd, worst = pixel_diff(got, want, &nd);
  fprintf(stderr, "%s: max %d/255, %d of %d values differ\n", what, worst, nd,
          NPIX);
  ASSERT(worst <= IMAGE_TOL);
}

TEST(txt2img_yaml_matches_python) {
  weft_st_file *g = golden();
  for (int k = 0; k < 3; k++) {
    char prompt[512], p[600], s[64], prefix[16], key[64], what[700];
    long long seed;
    golden_prompt(g, k, prompt, sizeof prompt, &seed);
    snprintf(p, sizeof p, "prompt=%s", prompt);
    snprintf(s, sizeof s, "seed=%lld", seed);
    snprintf(prefix, sizeof prefix, "p%d", k);
    const char *sets[] = {p, s, NULL};
    uint8_t *u = weft_run_graph("txt2img.yaml", prefix,
                                k == 0 ? NULL : sets); /* 0: the defaults */
    snprintf(key, sizeof key, "checks/golden%d.png", k);
    snprintf(what, sizeof what, "txt2img.yaml \"%s\" seed %lld", prompt, seed);
    uint8_t *want = golden_png(key);
    compare_image(what, u, want);
    free(u), free(want);
  }
  weft_st_close(g);
}

TEST(lora_yaml_defaults_match_python) {
  uint8_t *u = weft_run_graph("lora.yaml", "lora", NULL);
  uint8_t *want = golden_png("lora.png");
  compare_image("lora.yaml with its defaults (outline LoRA at 1.0)", u, want);
  free(u), free(want);
}

TEST(controlnet_yaml_defaults_match_python) {
  uint8_t *u = weft_run_graph("controlnet.yaml", "cn", NULL);
  uint8_t *want = golden_png("cn.png");
  compare_image(
      "controlnet.yaml with its defaults (graphs/controlnet_hint.png)", u,
      want);
  free(u), free(want);
}

/* Final latents through tests/models/graphs/default_*_probe.yaml (the
 * product graphs with a ProbeLatent), in VAE units.  Tolerance: 20 steps of
 * a trained model let rounding differences of 1e-6 grow; stated as
 * 1e-3 (1 + |want|), about 1/20 of a pixel level after decoding. */
#define LATENT_TOL 1e-3

static void probe_latent(const char *graph, const char *out, const char *ckpt,
                         const char *prompt, long long seed,
                         const char *const *extra, float *lat) {
  char ck[4200], p[600], s[64], o[64];
  snprintf(ck, sizeof ck, "ckpt=%s", ckpt);
  snprintf(p, sizeof p, "prompt=%s", prompt);
  snprintf(s, sizeof s, "seed=%lld", seed);
  snprintf(o, sizeof o, "out=%s", out);
  const char *sets[16] = {ck, p, s, o};
  int n = 4;
  for (int i = 0; extra && extra[i] && n < 15; i++)
    sets[n++] = extra[i];
  sets[n] = NULL;
  probe_log log;
  ASSERT_OK(probe_run_graph(graph, sets, NULL, &log));
  float *x = probe_read(out, LAT);
  memcpy(lat, x, LAT * sizeof *lat);
  free(x);
}

TEST(final_latents_match_python) {
  weft_st_file *g = golden();
  char *ckpt = repo_path("models/default/weft-shapes-v1.safetensors");
  char *lora = repo_path("models/default/weft-shapes-outline-lora.safetensors");
  char *cn = repo_path("models/default/weft-shapes-controlnet.safetensors");
  char *hint = repo_path("graphs/controlnet_hint.png");
  char lo[4200], cnet[4200], hi[4200];
  snprintf(lo, sizeof lo, "lora=%s", lora);
  snprintf(cnet, sizeof cnet, "controlnet=%s", cn);
  snprintf(hi, sizeof hi, "hint=%s", hint);
  float lat[LAT];
  char prompt[512], key[32], what[700];
  long long seed;
  for (int k = 0; k < 3; k++) {
    golden_prompt(g, k, prompt, sizeof prompt, &seed);
    snprintf(key, sizeof key, "latent%d", k);
    probe_latent("default_txt2img_probe.yaml", key, ckpt, prompt, seed, NULL,
                 lat);
    snprintf(what, sizeof what, "latent \"%s\" seed %lld", prompt, seed);
    check_close(what, lat, gf32(g, key, LAT), LAT, LATENT_TOL);
  }
  golden_prompt(g, 0, prompt, sizeof prompt, &seed);
  const char *lx[] = {lo, NULL};
  probe_latent("default_lora_probe.yaml", "lora", ckpt, prompt, seed, lx, lat);
  check_close("latent with the outline LoRA at 1.0", lat,
              gf32(g, "lora_latent", LAT), LAT, LATENT_TOL);
  const char *cx[] = {cnet, hi, NULL};
  probe_latent("default_controlnet_probe.yaml", "cn", ckpt, prompt, seed, cx,
               lat);
  check_close("latent with the ControlNet", lat, gf32(g, "cn_latent", LAT), LAT,
              LATENT_TOL);
  free(ckpt), free(lora), free(cn), free(hint);
  weft_st_close(g);
}

/* ---- quality over the held-out prompts (issue 5's bars) ---------------- */

typedef struct dm_prompt {
  char text[256];
  int shape, color, background;
  long long seed;
} dm_prompt;

/* models/default/eval_prompts.json; *n gets the count (caller frees) */
static dm_prompt *eval_prompts(int *n) {
  char *p = repo_path("models/default/eval_prompts.json");
  json_error_t je;
  json_t *a = json_load_file(p, 0, &je);
  if (!a) fprintf(stderr, "%s:%d: %s\n", p, je.line, je.text);
  MUST(a && json_is_array(a) && json_array_size(a) >= 24);
  *n = (int)json_array_size(a);
  dm_prompt *out = calloc((size_t)*n, sizeof *out);
  MUST(out != NULL);
  for (int i = 0; i < *n; i++) {
    json_t *e = json_array_get(a, (size_t)i);
    snprintf(out[i].text, sizeof out[i].text, "%s",
             json_string_value(json_object_get(e, "prompt")));
    out[i].shape =
        dm_shape_index(json_string_value(json_object_get(e, "shape")));
    out[i].color =
        dm_color_index(json_string_value(json_object_get(e, "color")));
    out[i].background =
        dm_color_index(json_string_value(json_object_get(e, "background")));
    out[i].seed = json_integer_value(json_object_get(e, "seed"));
    MUST(out[i].shape >= 0 && out[i].color >= 0 && out[i].background >= 0);
  }
  json_decref(a);
  free(p);
  return out;
}

static int prompt_stride(void) {
  return DM_SANITIZED ? DM_SANITIZED_STRIDE : 1;
}

/* One product graph loaded once and run per prompt in one context, as
 * `weft batch` does (the checkpoint loads once), from the repository (input
 * dir) into the case's temp dir. */
typedef struct dm_session {
  weft_ctx *ctx;
  weft_graph *g;
  char log[8192];
} dm_session;

static void on_event(const weft_event *e, void *user) {
  dm_session *s = user;
  if ((e->kind == WEFT_EV_LOG || e->kind == WEFT_EV_NODE_FAILED) &&
      e->message) {
    size_t n = strlen(s->log);
    snprintf(s->log + n, sizeof s->log - n, "%s\n", e->message);
  }
}

static void session_open(dm_session *s, const char *graph) {
  memset(s, 0, sizeof *s);
  MUST(weft_ctx_new(&s->ctx) == 0);
  weft_ctx_set_threads(s->ctx, 2);
  int r = weft_plugin_load_default(s->ctx, NULL);
  if (r) fprintf(stderr, "%s\n", weft_ctx_error(s->ctx));
  MUST(r == 0);
  char root[4096], path[4200];
  snprintf(root, sizeof root, "%s/..", weft_test_srcdir());
  snprintf(path, sizeof path, "%s/graphs/%s", root, graph);
  MUST(weft_ctx_set_input_dir(s->ctx, root) == 0);
  MUST(weft_ctx_set_output_dir(s->ctx, weft_test_tmpdir()) == 0);
  r = weft_graph_load(s->ctx, path, &s->g);
  if (r) fprintf(stderr, "%s\n", weft_ctx_error(s->ctx));
  MUST(r == 0);
  weft_ctx_set_event_cb(s->ctx, on_event, s);
}

static void session_set(dm_session *s, const char *key, const char *value) {
  int r = weft_graph_set_input(s->ctx, s->g, key, value);
  if (r) fprintf(stderr, "%s\n", weft_ctx_error(s->ctx));
  MUST(r == 0);
}

/* Runs prompt i (its text and seed) into <tmp>/<tag>NN_00001_.png and
 * measures it; *u_out (may be NULL) gets the pixels (caller frees). */
static void session_image(dm_session *s, const dm_prompt *p, int i,
                          const char *tag, dm_check *c, uint8_t **u_out) {
  char seed[32], prefix[64];
  snprintf(seed, sizeof seed, "%lld", p->seed);
  snprintf(prefix, sizeof prefix, "%s%02d", tag, i);
  session_set(s, "prompt", p->text);
  session_set(s, "seed", seed);
  session_set(s, "prefix", prefix);
  s->log[0] = 0;
  int r = weft_graph_run(s->ctx, s->g);
  if (r) fprintf(stderr, "run: %s\n%s\n", weft_ctx_error(s->ctx), s->log);
  MUST(r == 0);
  char png[4200];
  snprintf(png, sizeof png, "%s/%s_00001_.png", weft_test_tmpdir(), prefix);
  uint8_t *u = read_png_u8(png);
  MUST(dm_check_image(u, RES, RES, c) == 0);
  if (u_out)
    *u_out = u;
  else
    free(u);
}

static void session_close(dm_session *s) {
  weft_graph_free(s->g);
  weft_ctx_free(s->ctx);
}

static void print_row(const char *tag, int i, const dm_prompt *p,
                      const dm_check *c, const char *extra) {
  fprintf(stderr,
          "  %s %2d \"%s\" seed %lld: colour %s bg %s shape %s fill %.2f "
          "solidity %.2f%s%s\n",
          tag, i, p->text, p->seed,
          c->color >= 0 ? dm_color_names[c->color] : "-",
          dm_color_names[c->background],
          c->shape >= 0 ? dm_shape_names[c->shape] : "-", c->fill, c->solidity,
          c->hollow ? " hollow" : "", extra);
}

/* Base images of the held-out prompts: colour+background and shape rates.
 * rates[0] colour and background, rates[1] shape, rates[2] hollow. */
static int base_rates(double rates[3]) {
  int n = 0, ok_c = 0, ok_s = 0, hollow = 0, runs = 0, col = 0, bg = 0;
  double fill = 0;
  dm_prompt *ps = eval_prompts(&n);
  dm_session s;
  session_open(&s, "txt2img.yaml");
  for (int i = 0; i < n; i += prompt_stride()) {
    dm_check c;
    session_image(&s, &ps[i], i, "base", &c, NULL);
    bool cb = c.color == ps[i].color && c.background == ps[i].background;
    bool sh = c.shape == ps[i].shape;
    ok_c += cb, ok_s += sh, hollow += c.hollow, runs++;
    col += c.color == ps[i].color, bg += c.background == ps[i].background;
    fill += c.fill;
    print_row("base", i, &ps[i], &c, cb && sh ? "" : "  MISS");
  }
  session_close(&s);
  free(ps);
  rates[0] = (double)ok_c / runs;
  rates[1] = (double)ok_s / runs;
  rates[2] = (double)hollow / runs;
  fprintf(stderr,
          "default model, %d held-out prompts%s: colour and background right "
          "%d/%d = %.1f %%, shape right %d/%d = %.1f %% (shape colour alone "
          "%.1f %%, background alone %.1f %%, hollow %.1f %%, mean bbox fill "
          "%.3f)\n",
          runs, DM_SANITIZED ? " (sanitizer build: every 4th)" : "", ok_c, runs,
          100 * rates[0], ok_s, runs, 100 * rates[1], 100.0 * col / runs,
          100.0 * bg / runs, 100 * rates[2], fill / runs);
  return runs;
}

/* Issue 5: the prompted shape in >= 70 % of the images; and the base draws
 * filled shapes (hollow in <= 10 %, the LoRA case's contrast). */
TEST(shape_right_in_70_percent_of_held_out_prompts) {
  double r[3];
  base_rates(r);
  ASSERT(r[1] >= 0.70);
  ASSERT(r[2] <= 0.10);
}

/* Issue 5: shape colour and background colour both right in >= 90 %.
 * EXPECTED TO FAIL with weft-shapes-v1 (see tests/models/meson.build). */
TEST(colour_and_background_right_in_90_percent_of_held_out_prompts) {
  double r[3];
  base_rates(r);
  ASSERT(r[0] >= 0.90);
}

/* Issue 5: with the ControlNet (hint: a mask of the prompt's shape at
 * another place and size, eval_default.py's hints, written by
 * gen_default_golden.py), the blob's centroid lies inside the hint in
 * >= 90 %.  EXPECTED TO FAIL with weft-shapes-v1 (tests/models/meson.build). */
TEST(controlnet_centroid_inside_hint_in_90_percent) {
  int n = 0, inside = 0, runs = 0;
  dm_prompt *ps = eval_prompts(&n);
  dm_session s;
  session_open(&s, "controlnet.yaml");
  for (int i = 0; i < n; i += prompt_stride()) {
    char rel[128];
    snprintf(rel, sizeof rel, "tests/fixtures/default_model/hints/%02d.png", i);
    session_set(&s, "hint", rel);
    dm_check c;
    session_image(&s, &ps[i], i, "cn", &c, NULL);
    char *hp = repo_path(rel);
    uint8_t *hint = read_png_u8(hp);
    bool in = false;
    if (c.color >= 0) { /* eval_default.py: round() (half to even), clamp */
      long x = lrint(c.cx), y = lrint(c.cy);
      x = x > RES - 1 ? RES - 1 : x, y = y > RES - 1 ? RES - 1 : y;
      in = hint[(y * RES + x) * 3] > 127; /* the mask > 0.5 */
    }
    inside += in, runs++;
    char extra[64];
    snprintf(extra, sizeof extra, "  centroid %.1f,%.1f %s", c.cx, c.cy,
             in ? "inside" : "OUTSIDE");
    print_row("cn", i, &ps[i], &c, extra);
    free(hint), free(hp);
  }
  session_close(&s);
  free(ps);
  double rate = (double)inside / runs;
  fprintf(stderr,
          "ControlNet, %d held-out prompts%s: centroid inside the hint "
          "%d/%d = %.1f %%\n",
          runs, DM_SANITIZED ? " (sanitizer build: every 4th)" : "", inside,
          runs, 100 * rate);
  ASSERT(rate >= 0.90);
}

/* Issue 5: the outline LoRA at strength 1.0 changes the style measurably:
 * the shape is hollow (the centre's colour nearer the background than the
 * shape's) in >= 60 % of the images, against <= 10 % for the base
 * (shape_right_...), and the blob's mean bbox fill drops below 0.55 (base
 * about 0.65, outlines about 0.4). */
TEST(lora_at_one_draws_outlines) {
  int n = 0, hollow = 0, runs = 0;
  double fill = 0;
  dm_prompt *ps = eval_prompts(&n);
  dm_session s;
  session_open(&s, "lora.yaml");
  for (int i = 0; i < n; i += prompt_stride()) {
    dm_check c;
    session_image(&s, &ps[i], i, "lora", &c, NULL);
    bool h = c.area >= 30 && c.hollow; /* eval_default.py's lora1 check */
    hollow += h, runs++, fill += c.fill;
    print_row("lora", i, &ps[i], &c, "");
  }
  session_close(&s);
  free(ps);
  double rate = (double)hollow / runs;
  fill /= runs;
  fprintf(stderr,
          "outline LoRA at 1.0, %d held-out prompts%s: hollow %d/%d = %.1f "
          "%%, mean bbox fill %.3f\n",
          runs, DM_SANITIZED ? " (sanitizer build: every 4th)" : "", hollow,
          runs, 100 * rate, fill);
  ASSERT(rate >= 0.60);
  ASSERT(fill < 0.55);
}

/* Issue 5: at strength 0 the LoRA graph's image is the base's, bit for bit
 * (the float IMAGE and the LATENT, through probes), for one prompt of each
 * shape. */
TEST(lora_at_zero_equals_base_bit_for_bit) {
  int n = 0;
  dm_prompt *ps = eval_prompts(&n);
  char *ckpt = repo_path("models/default/weft-shapes-v1.safetensors");
  char *lora = repo_path("models/default/weft-shapes-outline-lora.safetensors");
  char ck[4200], lo[4200];
  snprintf(ck, sizeof ck, "ckpt=%s", ckpt);
  snprintf(lo, sizeof lo, "lora=%s", lora);
  for (int i = 0; i < n; i += n / 4) {
    char p[600], s[64];
    snprintf(p, sizeof p, "prompt=%s", ps[i].text);
    snprintf(s, sizeof s, "seed=%lld", ps[i].seed);
    const char *base[] = {ck, p, s, "out=base", "image_out=base_image", NULL};
    const char *zero[] = {ck,
                          p,
                          s,
                          lo,
                          "out=zero",
                          "image_out=zero_image",
                          "strength_model=0",
                          "strength_clip=0",
                          NULL};
    ASSERT_OK(probe_run_graph("default_txt2img_probe.yaml", base, NULL, NULL));
    ASSERT_OK(probe_run_graph("default_lora_probe.yaml", zero, NULL, NULL));
    float *a = probe_read("base", LAT), *b = probe_read("zero", LAT);
    ASSERT_EQ(memcmp(a, b, LAT * sizeof *a), 0);
    free(a), free(b);
    a = probe_read("base_image", NPIX), b = probe_read("zero_image", NPIX);
    ASSERT_EQ(memcmp(a, b, NPIX * sizeof *a), 0);
    fprintf(stderr, "\"%s\" seed %lld: LoRA at 0 equals the base bit for bit\n",
            ps[i].text, ps[i].seed);
    free(a), free(b);
  }
  free(ckpt), free(lora), free(ps);
}
