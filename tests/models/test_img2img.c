/* test_img2img.c - img2img and inpainting (VAEEncode, SetLatentNoiseMask,
 * VAEEncodeForInpaint, KSampler with denoise < 1 and a noise mask), latent
 * upscaling (LatentUpscale, LatentUpscaleBy) and the tiled VAE
 * (VAEDecodeTiled, VAEEncodeTiled) against tests/fixtures/sd15_extras (see
 * tools/fixtures/README.md, "sd15_extras"): the core API (sd.h) directly,
 * the nodes through YAML graphs in process (probe.h's runner and its
 * ProbeLatent / ProbeImage), and graphs/img2img.yaml and graphs/inpaint.yaml
 * through the weft command.
 *
 * Tolerances: VAE outputs 1e-4 as test_sd_models.c (fp32 against fp32
 * torch); sampler trajectories 1e-3 + 1e-5 |x| per step in model scale, as
 * test_trajectories.c, i.e. that / 0.18215 on an unscaled LATENT; latent
 * resizing 1e-5 (torch's float32 interpolation weights against ours, on
 * values up to ~30); images 1/255 (SaveImage truncates: a value near a
 * level may fall either side).  bislerp 1e-5 too (libm's acos/sin and the
 * summation order against torch's, on the same float32 arithmetic). */
#include <jansson.h>

#include "png_io.h"
#include "probe.h"
#include "samplers.h"
#include "sd_fixture.h"

#define TOL 1e-4
#define RESIZE_TOL 1e-5
#define SCALE 0.18215

/* a U8 [H, W, 3] image as planes [3, H, W] of u8 / 255 (caller frees) */
static float *planes(const weft_st_tensor *t) {
  ASSERT(t->dtype == WEFT_ST_U8 && t->ndim == 3 && t->shape[2] == 3);
  int64_t H = t->shape[0], W = t->shape[1];
  float *p = malloc((size_t)(3 * H * W) * sizeof *p);
  const uint8_t *u = t->data;
  for (int c = 0; c < 3; c++)
    for (int64_t i = 0; i < H * W; i++)
      p[c * H * W + i] = (float)u[i * 3 + c] / 255.0f;
  return p;
}

static weft_backend *backend(void) {
  weft_backend *be = weft_backend_cpu_new(2);
  ASSERT(be != NULL);
  return be;
}

typedef struct model {
  fx_model m;
  sd_unet *unet;
  sd_vae *vae;
  weft_backend *be;
} model;

static void model_open(model *md, bool unet) {
  memset(md, 0, sizeof *md);
  fx_model_open(&md->m, SD_LAYOUT_LDM);
  if (unet) ASSERT_OK(sd_unet_load(&md->m.ck, &md->unet));
  ASSERT_OK(sd_vae_load(&md->m.ck, &md->vae));
  md->be = backend();
}

static void model_close(model *md) {
  sd_unet_free(md->unet);
  sd_vae_free(md->vae);
  weft_backend_free(md->be);
  sd_ckpt_free_params(&md->m.ck);
  fx_model_close(&md->m);
}

/* ---- VAEEncode ----------------------------------------------------------- */

TEST(vae_encode_is_the_posterior_mean) {
  model md;
  model_open(&md, false);
  weft_st_file *f = ex_open("img2img_inpaint.safetensors");
  weft_st_file *t = ex_open("vae_tiled.safetensors");
  float *px = planes(ex_get(f, "image")), lat[4 * 8 * 12];
  ASSERT_OK(sd_vae_encode_one(md.vae, md.be, px, 64, 64, lat));
  double d = max_abs_diff(lat, ex_ref(f, "latent", 256), 256);
  fprintf(stderr, "VAEEncode 64x64 max diff %.3g\n", d);
  ASSERT(d <= TOL);
  ASSERT(max_abs_diff(lat, ex_ref(t, "latent8x8", 256), 256) <= TOL);
  free(px);
  px = planes(ex_get(t, "image64x96"));
  ASSERT_OK(sd_vae_encode_one(md.vae, md.be, px, 64, 96, lat));
  d = max_abs_diff(lat, ex_ref(t, "latent8x12", 4 * 8 * 12), 4 * 8 * 12);
  fprintf(stderr, "VAEEncode 64x96 max diff %.3g\n", d);
  ASSERT(d <= TOL);
  free(px);
  weft_st_close(f), weft_st_close(t);
  model_close(&md);
}

/* ---- img2img through the core API ---------------------------------------- */

typedef struct traj {
  sd_denoiser den;
  const weft_schedule *sched;
  const int64_t *timesteps;
  const float *want_x, *want_den;
  int calls;
  double worst;
} traj;

static int traj_den(void *user, const float *x, float sigma, float *out) {
  traj *r = user;
  ASSERT_EQ(weft_schedule_timestep(r->sched, sigma), r->timesteps[r->calls]);
  int rc = sd_denoise(&r->den, x, sigma, out);
  const float *w = r->want_den + (int64_t)r->calls * 256;
  for (int i = 0; i < 256; i++)
    ASSERT(fabs((double)out[i] - w[i]) <= 1e-3 + 1e-5 * fabs(w[i]));
  r->calls++;
  return rc;
}

static int traj_step(void *user, int k, int total, const float *x) {
  traj *r = user;
  (void)total;
  const float *w = r->want_x + (int64_t)k * 256;
  for (int i = 0; i < 256; i++) {
    double d = fabs((double)x[i] - w[i]);
    ASSERT(d <= 1e-3 + 1e-5 * fabs(w[i]));
    r->worst = d > r->worst ? d : r->worst;
  }
  return 0;
}

/* KSampler(denoise 0.6) on the encoded image: the last 7 sigmas of a
 * 10-step schedule, x0 = noise * sigma_0 + latent * 0.18215 */
TEST(img2img_trajectory_matches_comfyui) {
  model md;
  model_open(&md, true);
  weft_st_file *f = ex_open("img2img_inpaint.safetensors");
  weft_schedule sched;
  weft_schedule_init(&sched, 0.00085, 0.012);
  float sig[32];
  int ns = weft_ksampler_sigmas(&sched, "normal", "euler", 6, 0.6, sig, 32);
  ASSERT_EQ(ns, 7);
  const float *want_sig = ex_ref(f, "img2img/sigmas", 7);
  for (int i = 0; i < 7; i++)
    ASSERT_NEAR(sig[i], want_sig[i], 1e-6 * (1 + want_sig[i]));
  const float *lin = ex_ref(f, "img2img/latent_in", 256);
  ASSERT(max_abs_diff(lin, ex_ref(f, "latent", 256), 256) == 0);
  float scaled[256], x[256];
  for (int i = 0; i < 256; i++)
    scaled[i] = lin[i] * (float)SCALE;
  weft_sampler_start(x, ex_ref(f, "noise", 256), scaled, 256, sig[0],
                     weft_schedule_sigma_max(&sched));
  const float *want_x = ex_ref(f, "img2img/x", 7 * 256);
  ASSERT(max_abs_diff(x, want_x, 256) <= 1e-5);
  traj r = {.sched = &sched,
            .timesteps = ex_get(f, "img2img/model_timesteps")->data,
            .want_x = want_x,
            .want_den = ex_ref(f, "img2img/denoised", 6 * 256)};
  int64_t shape[4] = {1, 4, 8, 8};
  ASSERT_OK(sd_denoiser_init(&r.den, md.unet, md.be, &sched, SD_PRED_EPS, shape,
                             5.0f, ex_ref(f, "negative", 77 * 32), 77,
                             ex_ref(f, "positive", 77 * 32), 77));
  weft_sampler_io io = {256, traj_den, NULL, traj_step, &r};
  ASSERT_OK(weft_sample("euler", &io, x, sig, ns));
  ASSERT_EQ(r.calls, 6);
  double d = max_abs_diff(x, ex_ref(f, "img2img/samples_out", 256), 256);
  fprintf(stderr, "img2img: trajectory worst %.3g, out max diff %.3g\n",
          r.worst, d);
  ASSERT(d <= 2e-3);
  /* diffusers' StableDiffusionImg2ImgPipeline gives the same (the fixture
   * cross-checked it within 1.2e-5) */
  d = max_abs_diff(x, ex_ref(f, "diffusers/img2img_latents", 256), 256);
  fprintf(stderr, "img2img vs diffusers: max diff %.3g\n", d);
  ASSERT(d <= 2e-3);
  sd_denoiser_free(&r.den);
  weft_st_close(f);
  model_close(&md);
}

/* comfy.utils.reshape_mask: the MASK bilinearly to the latent's size */
TEST(noise_masks_reach_latent_size_as_comfyui) {
  weft_st_file *f = ex_open("img2img_inpaint.safetensors");
  const char *cases[][2] = {
      {"mask_rect", "inpaint_noise_mask/denoise_mask"},
      {"mask_blob", "inpaint_noise_mask_blob/denoise_mask"},
      {"encode_for_inpaint/noise_mask", "encode_for_inpaint/denoise_mask"}};
  for (int c = 0; c < 3; c++) {
    const weft_st_tensor *t = ex_get(f, cases[c][0]);
    float full[64 * 64], small[64];
    for (int i = 0; i < 64 * 64; i++)
      full[i] = t->dtype == WEFT_ST_U8 ? (float)((const uint8_t *)t->data)[i]
                                       : ((const float *)t->data)[i];
    ASSERT_OK(sd_latent_resize(full, 1, 64, 64, small, 8, 8, 1, false));
    const float *want = ex_ref(f, cases[c][1], 256);
    for (int ch = 0; ch < 4; ch++) {
      double d = max_abs_diff(small, want + ch * 64, 64);
      ASSERT(d <= 1e-6);
    }
  }
  weft_st_close(f);
}

/* ---- latent upscaling ---------------------------------------------------- */

static int method_index(const char *m) {
  for (int i = 0; sd_latent_methods[i]; i++)
    if (!strcmp(sd_latent_methods[i], m)) return i;
  return -1;
}

TEST(latent_upscale_matches_comfyui) {
  weft_st_file *f = ex_open("latent_upscale.safetensors");
  json_t *cases = json_loads(weft_st_meta(f, "cases"), 0, NULL);
  ASSERT(cases != NULL);
  const char *key;
  json_t *c;
  int checked = 0;
  json_object_foreach(cases, key, c) {
    const char *method =
        json_string_value(json_object_get(c, "upscale_method"));
    int mi = method_index(method);
    if (!strcmp(method, "bislerp")) continue; /* latent_upscale_bislerp */
    ASSERT(mi >= 0);
    const char *input = json_string_value(json_object_get(c, "input"));
    const char *node = json_string_value(json_object_get(c, "node"));
    const weft_st_tensor *in = ex_get(f, input);
    int64_t lh = in->shape[2], lw = in->shape[3], ow = 0, oh = 0;
    bool crop = false;
    if (!strcmp(node, "LatentUpscale")) {
      ASSERT(sd_latent_upscale_size(
          lw, lh, json_integer_value(json_object_get(c, "width")),
          json_integer_value(json_object_get(c, "height")), &ow, &oh));
      crop = !strcmp(json_string_value(json_object_get(c, "crop")), "center");
    } else {
      sd_latent_upscale_by_size(
          lw, lh, json_number_value(json_object_get(c, "scale_by")), &ow, &oh);
    }
    json_t *shape = json_object_get(c, "out_shape");
    ASSERT_EQ(oh, json_integer_value(json_array_get(shape, 2)));
    ASSERT_EQ(ow, json_integer_value(json_array_get(shape, 3)));
    const float *want = ex_ref(f, key, 4 * oh * ow);
    float *out = malloc((size_t)(4 * oh * ow) * sizeof *out);
    ASSERT_OK(sd_latent_resize(in->data, 4, lh, lw, out, oh, ow, mi, crop));
    double d = max_abs_diff(out, want, 4 * oh * ow);
    fprintf(stderr, "%s: max diff %.3g\n", key, d);
    ASSERT(d <= RESIZE_TOL);
    free(out);
    checked++;
  }
  ASSERT_EQ(checked, 4 * 5);
  json_decref(cases);
  weft_st_close(f);
}

/* comfy.utils.bislerp on the channel vectors: the source positions and
 * ratios are torch's bit for bit, the slerp is float32 as torch's, so the
 * outputs differ only by the rounding of acos/sin and of the sums */
TEST(latent_upscale_bislerp) {
  weft_st_file *f = ex_open("latent_upscale.safetensors");
  json_t *cases = json_loads(weft_st_meta(f, "cases"), 0, NULL);
  ASSERT(cases != NULL);
  const char *key;
  json_t *c;
  int checked = 0;
  json_object_foreach(cases, key, c) {
    const char *method =
        json_string_value(json_object_get(c, "upscale_method"));
    if (strcmp(method, "bislerp")) continue;
    int mi = method_index(method);
    ASSERT_EQ(mi, SD_LATENT_BISLERP);
    const char *input = json_string_value(json_object_get(c, "input"));
    const char *node = json_string_value(json_object_get(c, "node"));
    const weft_st_tensor *in = ex_get(f, input);
    ASSERT(in->ndim == 4 && in->shape[1] == 4);
    int64_t lh = in->shape[2], lw = in->shape[3], ow = 0, oh = 0;
    bool crop = false;
    if (!strcmp(node, "LatentUpscale")) {
      ASSERT(sd_latent_upscale_size(
          lw, lh, json_integer_value(json_object_get(c, "width")),
          json_integer_value(json_object_get(c, "height")), &ow, &oh));
      crop = !strcmp(json_string_value(json_object_get(c, "crop")), "center");
    } else {
      sd_latent_upscale_by_size(
          lw, lh, json_number_value(json_object_get(c, "scale_by")), &ow, &oh);
    }
    json_t *shape = json_object_get(c, "out_shape");
    ASSERT_EQ(oh, json_integer_value(json_array_get(shape, 2)));
    ASSERT_EQ(ow, json_integer_value(json_array_get(shape, 3)));
    const float *want = ex_ref(f, key, 4 * oh * ow);
    float *out = malloc((size_t)(4 * oh * ow) * sizeof *out);
    ASSERT_OK(
        sd_latent_resize_nc(in->data, 1, 4, lh, lw, out, oh, ow, mi, crop));
    double d = max_abs_diff(out, want, 4 * oh * ow);
    fprintf(stderr, "%s: max diff %.3g\n", key, d);
    ASSERT(d <= RESIZE_TOL);
    free(out);
    checked++;
  }
  ASSERT_EQ(checked, 5);
  json_decref(cases);
  weft_st_close(f);
}

/* bislerp's special cases, values from the fixture generator's port
 * (tools/fixtures/sd15_extras/comfy_latent.py): opposite vectors are lerped,
 * a zero vector's direction is zero (so only the other one's direction is
 * slerped in, its length lerped), an unchanged size copies exactly */
TEST(bislerp_lerps_opposites_and_slerps_from_zero) {
  /* [1, 2, 1, 4]: columns (1, 2), (-2, -4), (0, 0), (3, 4) */
  const float in[8] = {1, -2, 0, 3, 2, -4, 0, 4};
  const float want[14] = {1,
                          -0.0714287162f,
                          -1.78571439f,
                          -0.707106531f,
                          0.0239925236f,
                          1.6329689f,
                          3,
                          2,
                          -0.142857432f,
                          -3.57142878f,
                          -1.41421306f,
                          0.0319900326f,
                          2.17729187f,
                          4};
  float out[14], same[16];
  ASSERT_OK(
      sd_latent_resize_nc(in, 1, 2, 1, 4, out, 1, 7, SD_LATENT_BISLERP, false));
  double d = max_abs_diff(out, want, 14);
  fprintf(stderr, "bislerp edge cases: max diff %.3g\n", d);
  ASSERT(d <= 1e-6);
  /* height 1 -> 2 and width unchanged: every row is the input row */
  ASSERT_OK(sd_latent_resize_nc(in, 1, 2, 1, 4, same, 2, 4, SD_LATENT_BISLERP,
                                false));
  for (int ch = 0; ch < 2; ch++)
    for (int y = 0; y < 2; y++)
      ASSERT_EQ(memcmp(same + ch * 8 + y * 4, in + ch * 4, 4 * sizeof *in), 0);
  ASSERT_EQ(
      sd_latent_resize_nc(in, 1, 2, 1, 4, out, 1, 7, SD_LATENT_METHODS, false),
      WEFT_EINVAL);
}

/* ---- tiled VAE
 * ------------------------------------------------------------------ */

/* [3, H, W] in [-1, 1] -> ComfyUI's IMAGE [H, W, 3]: clamp((x + 1) / 2) */
static void to_image(const float *x, int64_t H, int64_t W, float *img) {
  for (int c = 0; c < 3; c++)
    for (int64_t i = 0; i < H * W; i++) {
      float v = (x[c * H * W + i] + 1.0f) / 2.0f;
      img[i * 3 + c] = v < 0 ? 0 : v > 1 ? 1 : v;
    }
}

static void check_decode_tiled(model *md, weft_st_file *f, const char *latent,
                               int64_t h, int64_t w, int64_t tile,
                               int64_t overlap, const char *key) {
  int64_t H = h * 8, W = w * 8;
  float *x = malloc((size_t)(3 * H * W) * sizeof *x);
  float *img = malloc((size_t)(3 * H * W) * sizeof *img);
  ASSERT_OK(sd_vae_decode_tiled(md->vae, md->be, ex_ref(f, latent, 4 * h * w),
                                h, w, tile, tile, overlap, x));
  to_image(x, H, W, img);
  double d = max_abs_diff(img, ex_ref(f, key, 3 * H * W), 3 * H * W);
  fprintf(stderr, "%s: max diff %.3g\n", key, d);
  ASSERT(d <= TOL);
  free(x), free(img);
}

TEST(vae_decode_tiled_matches_comfyui) {
  model md;
  model_open(&md, false);
  weft_st_file *f = ex_open("vae_tiled.safetensors");
  /* VAEDecodeTiled(tile_size 64, overlap 16): latent tile 8, overlap 2 */
  check_decode_tiled(&md, f, "latent8x8", 8, 8, 8, 2,
                     "decode_tiled/8x8_t64_o16");
  check_decode_tiled(&md, f, "latent8x12", 8, 12, 8, 2,
                     "decode_tiled/8x12_t64_o16");
  /* decode_tiled_(tile 4, overlap 1): several tiles in every pass */
  check_decode_tiled(&md, f, "latent8x8", 8, 8, 4, 1,
                     "decode_tiled_/8x8_t4_o1");
  weft_st_close(f);
  model_close(&md);
}

TEST(vae_encode_tiled_matches_comfyui) {
  model md;
  model_open(&md, false);
  weft_st_file *f = ex_open("vae_tiled.safetensors");
  const char *cases[][2] = {{"image64x64", "encode_tiled/64x64_t64_o16"},
                            {"image64x96", "encode_tiled/64x96_t64_o16"}};
  for (int c = 0; c < 2; c++) {
    const weft_st_tensor *im = ex_get(f, cases[c][0]);
    int64_t H = im->shape[0], W = im->shape[1], n = 4 * (H / 8) * (W / 8);
    float *px = planes(im), *lat = malloc((size_t)n * sizeof *lat);
    ASSERT_OK(sd_vae_encode_tiled(md.vae, md.be, px, H, W, 64, 64, 16, lat));
    double d = max_abs_diff(lat, ex_ref(f, cases[c][1], n), n);
    fprintf(stderr, "%s: max diff %.3g\n", cases[c][1], d);
    ASSERT(d <= TOL);
    free(px), free(lat);
  }
  weft_st_close(f);
  model_close(&md);
}

/* A tile no larger than the overlap cannot advance (ComfyUI divides by a
 * zero range step there): refused, not looped on. */
TEST(tiles_not_larger_than_the_overlap_are_refused) {
  model md;
  model_open(&md, false);
  weft_st_file *f = ex_open("vae_tiled.safetensors");
  float *x = malloc(3 * 64 * 64 * sizeof *x);
  ASSERT_EQ(sd_vae_decode_tiled(md.vae, md.be, ex_ref(f, "latent8x8", 256), 8,
                                8, 4, 4, 2, x),
            WEFT_EINVAL);
  free(x);
  weft_st_close(f);
  model_close(&md);
}

/* ---- through graphs: probes write LATENT and IMAGE values ---------------- */

/* copies tests/fixtures/<dir>/name into the temp dir */
static void copy_file(const char *dir, const char *name) {
  char src[4096], *data;
  size_t len;
  snprintf(src, sizeof src, "%s/fixtures/%s/%s", weft_test_srcdir(), dir, name);
  ASSERT((data = weft_test_read_file(src, &len)) != NULL);
  char dst[4096];
  snprintf(dst, sizeof dst, "%s/%s", weft_test_tmpdir(), name);
  FILE *f = fopen(dst, "wb");
  ASSERT(f && fwrite(data, 1, len, f) == len);
  fclose(f);
  free(data);
}

static void copy_fixture(const char *name) {
  copy_file("sd15_extras", name);
}

/* The fixture's masks are those of its PNGs: LoadImage's MASK is
 * 1 - alpha / 255. */
TEST(inpaint_pngs_hold_the_image_and_masks) {
  weft_st_file *f = ex_open("img2img_inpaint.safetensors");
  const uint8_t *img = ex_get(f, "image")->data;
  const char *names[] = {"inpaint_rect.png", "inpaint_blob.png"};
  for (int k = 0; k < 2; k++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/fixtures/sd15_extras/%s",
             weft_test_srcdir(), names[k]);
    weft__png_image p;
    ASSERT_OK(weft__png_read(path, &p, NULL, 0));
    ASSERT(p.width == 64 && p.height == 64 && p.alpha);
    for (int i = 0; i < 64 * 64 * 3; i++)
      ASSERT_EQ(lrintf(p.rgb[i] * 255.0f), img[i]);
    for (int i = 0; i < 64 * 64; i++) {
      float m = 1.0f - p.alpha[i];
      float want =
          k ? ex_ref(f, "mask_blob", 4096)[i]
            : (float)((const uint8_t *)ex_get(f, "mask_rect")->data)[i];
      ASSERT_NEAR(m, want, 1e-7);
    }
    weft__png_image_free(&p);
  }
  weft_st_close(f);
}

/* img2img, SetLatentNoiseMask (rect and soft blob) and VAEEncodeForInpaint
 * through their nodes: sampled LATENTs, kept regions, noise masks */
TEST(graph_img2img_and_inpainting_match_comfyui) {
  weft_st_file *f = ex_open("img2img_inpaint.safetensors");
  probe_write_png(ex_get(f, "image"), NULL, "image.png");
  copy_fixture("inpaint_rect.png");
  copy_fixture("inpaint_blob.png");
  ASSERT_OK(probe_run_graph("img2img_probe.yaml", NULL, NULL, NULL));
  weft_st_file *enc = probe_file("encoded");
  const float *mine = ex_ref(enc, "out", 256);
  double d = max_abs_diff(mine, ex_ref(f, "latent", 256), 256);
  fprintf(stderr, "VAEEncode node max diff %.3g\n", d);
  ASSERT(d <= TOL);
  static const char *const runs[] = {"img2img", "inpaint_noise_mask",
                                     "inpaint_noise_mask_blob",
                                     "encode_for_inpaint"};
  for (int k = 0; k < 4; k++) {
    char key[128];
    weft_st_file *p = probe_file(runs[k]);
    const float *out = ex_ref(p, "out", 256);
    snprintf(key, sizeof key, "%s/latent_out", runs[k]);
    probe_check_latent(out, ex_ref(f, key, 256), 256, runs[k]);
    if (k > 0) {
      /* the output keeps the input's noise mask (ComfyUI), and outside it
       * the latent is the input's up to the rounding of * and / 0.18215 */
      ASSERT(weft_st_find(p, "noise_mask") != NULL);
      snprintf(key, sizeof key, "%s/keep", runs[k]);
      const weft_st_tensor *keep = ex_get(f, key);
      const uint8_t *kp = keep->data;
      const float *in = mine;
      weft_st_file *efi = k == 3 ? probe_file("efi") : NULL;
      if (efi) in = ex_ref(efi, "out", 256);
      int kept = 0;
      for (int i = 0; i < 256; i++) {
        if (!kp[i]) continue;
        ASSERT(fabs((double)out[i] - in[i]) <= 1e-6 * (1 + fabs(in[i])));
        kept++;
      }
      ASSERT(kept > 0);
      if (efi) weft_st_close(efi);
    }
    weft_st_close(p);
  }
  /* diffusers' StableDiffusionInpaintPipeline agrees for the block-aligned
   * rect (model scale) */
  weft_st_file *rect = probe_file("inpaint_noise_mask");
  float scaled[256];
  for (int i = 0; i < 256; i++)
    scaled[i] = ex_ref(rect, "out", 256)[i] * (float)SCALE;
  d = max_abs_diff(scaled, ex_ref(f, "diffusers/inpaint_latents", 256), 256);
  fprintf(stderr, "rect inpaint vs diffusers: max diff %.3g\n", d);
  ASSERT(d <= 2e-3);
  weft_st_close(rect);
  /* VAEEncodeForInpaint: grey-filled pixels encoded, the mask grown */
  weft_st_file *efi = probe_file("efi");
  d = max_abs_diff(ex_ref(efi, "out", 256),
                   ex_ref(f, "encode_for_inpaint/latent", 256), 256);
  fprintf(stderr, "VAEEncodeForInpaint latent max diff %.3g\n", d);
  ASSERT(d <= TOL);
  const weft_st_tensor *nm = ex_get(efi, "noise_mask");
  ASSERT_EQ(nm->nbytes, 64 * 64 * 4);
  const uint8_t *want = ex_get(f, "encode_for_inpaint/noise_mask")->data;
  for (int i = 0; i < 64 * 64; i++)
    ASSERT_EQ(((const float *)nm->data)[i], (float)want[i]);
  weft_st_close(efi);
  /* SetLatentNoiseMask: the MASK itself, [1, 1, 64, 64] */
  weft_st_file *sm = probe_file("masked_blob");
  nm = ex_get(sm, "noise_mask");
  ASSERT(nm->ndim == 4 && nm->shape[1] == 1 && nm->shape[2] == 64);
  ASSERT(max_abs_diff(nm->data, ex_ref(f, "mask_blob", 4096), 4096) <= 1e-7);
  weft_st_close(sm);
  weft_st_close(enc);
  weft_st_close(f);
}

/* The fixture's input picture: LoadImage(photo.png, 64x48) ->
 * ImageScale(bicubic, 64, 64, crop disabled), unclamped */
TEST(graph_image_scale_matches_comfyui) {
  copy_file("images", "photo.png");
  ASSERT_OK(probe_run_graph("image_scale_probe.yaml", NULL, NULL, NULL));
  weft_st_file *f = ex_open("img2img_inpaint.safetensors");
  weft_st_file *p = probe_file("photo");
  const weft_st_tensor *in = ex_get(p, "out");
  const uint8_t *u = ex_get(f, "image_scale/in")->data;
  ASSERT(in->nbytes == 48 * 64 * 3 * 4);
  for (int i = 0; i < 48 * 64 * 3; i++)
    ASSERT_EQ(((const float *)in->data)[i], (float)u[i] / 255.0f);
  weft_st_file *q = probe_file("scaled");
  double d =
      max_abs_diff(ex_ref(q, "out", 64 * 64 * 3),
                   ex_ref(f, "image_scale/out", 64 * 64 * 3), 64 * 64 * 3);
  fprintf(stderr, "ImageScale bicubic max diff %.3g\n", d);
  ASSERT(d <= RESIZE_TOL);
  weft_st_close(p), weft_st_close(q), weft_st_close(f);
}

/* VAEEncodeForInpaint's noise mask for any grow_mask_by, as nodes.py
 * computes it: round(clamp(conv2d(round(mask), ones(g, g), padding
 * ceil((g - 1) / 2)), 0, 1))[:H, :W] (for an odd g the window is
 * centred, for an even one it reaches one row further up than down) */
static void grown_mask(const float *mask, int g, float *out) {
  int pad = (g - 1 + 1) / 2; /* ceil((g - 1) / 2) for g >= 1 */
  for (int y = 0; y < 64; y++)
    for (int x = 0; x < 64; x++) {
      float acc = 0;
      if (g == 0) acc = rintf(mask[y * 64 + x]);
      for (int dy = 0; dy < g; dy++)
        for (int dx = 0; dx < g; dx++) {
          int yy = y + dy - pad, xx = x + dx - pad;
          if (yy >= 0 && yy < 64 && xx >= 0 && xx < 64)
            acc += rintf(mask[yy * 64 + xx]);
        }
      out[y * 64 + x] = rintf(acc < 0 ? 0 : acc > 1 ? 1 : acc);
    }
}

TEST(graph_inpaint_mask_grows_as_comfyui) {
  weft_st_file *f = ex_open("img2img_inpaint.safetensors");
  probe_write_png(ex_get(f, "image"), NULL, "image.png");
  copy_fixture("inpaint_rect.png");
  copy_fixture("inpaint_blob.png");
  ASSERT_OK(probe_run_graph("img2img_probe.yaml", NULL, NULL, NULL));
  const float *blob = ex_ref(f, "mask_blob", 4096);
  float want[4096];
  /* the formula against the fixture's grow 6 first */
  grown_mask(blob, 6, want);
  const uint8_t *six = ex_get(f, "encode_for_inpaint/noise_mask")->data;
  for (int i = 0; i < 4096; i++)
    ASSERT_EQ(want[i], (float)six[i]);
  const int grows[] = {5, 0};
  for (int k = 0; k < 2; k++) {
    char name[32];
    snprintf(name, sizeof name, "efi%d", grows[k]);
    weft_st_file *p = probe_file(name);
    const weft_st_tensor *nm = ex_get(p, "noise_mask");
    ASSERT_EQ(nm->nbytes, 4096 * 4);
    grown_mask(blob, grows[k], want);
    int differ = 0;
    for (int i = 0; i < 4096; i++)
      differ += ((const float *)nm->data)[i] != want[i];
    fprintf(stderr, "grow_mask_by %d: %d pixels differ\n", grows[k], differ);
    ASSERT_EQ(differ, 0);
    weft_st_close(p);
  }
  weft_st_close(f);
}

/* LatentUpscale / LatentUpscaleBy nodes give what the core gives on the
 * same latent (the core is checked against ComfyUI above), and the
 * expected shapes */
TEST(graph_latent_upscale_nodes) {
  weft_st_file *f = ex_open("img2img_inpaint.safetensors");
  probe_write_png(ex_get(f, "image"), NULL, "image.png");
  weft_st_close(f);
  ASSERT_OK(probe_run_graph("upscale_probe.yaml", NULL, NULL, NULL));
  weft_st_file *enc = probe_file("encoded");
  const float *lat = ex_ref(enc, "out", 256);
  static const struct {
    const char *probe;
    int method;
    int64_t oh, ow;
    bool crop;
  } cases[] = {{"up_bicubic_96x128", 3, 16, 12, false},
               {"up_area_128x64_center", 2, 8, 16, true},
               {"up_nearest_h104", 0, 13, 13, false},
               {"by_bilinear_1.5", 1, 12, 12, false},
               {"by_area_0.5", 2, 4, 4, false},
               {"up_bislerp_128x64_center", 4, 8, 16, true}};
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    weft_st_file *p = probe_file(cases[k].probe);
    const weft_st_tensor *t = ex_get(p, "out");
    ASSERT(t->ndim == 4 && t->shape[2] == cases[k].oh &&
           t->shape[3] == cases[k].ow);
    int64_t n = 4 * cases[k].oh * cases[k].ow;
    float *want = malloc((size_t)n * sizeof *want);
    ASSERT_OK(sd_latent_resize_nc(lat, 1, 4, 8, 8, want, cases[k].oh,
                                  cases[k].ow, cases[k].method, cases[k].crop));
    ASSERT_EQ(memcmp(t->data, want, (size_t)n * sizeof *want), 0);
    free(want);
    weft_st_close(p);
  }
  weft_st_close(enc);
}

/* VAEDecodeTiled / VAEEncodeTiled nodes: ComfyUI's tile sizes in pixels
 * (the overlap lowered to tile_size / 4), the encode against ComfyUI's */
TEST(graph_tiled_vae_nodes) {
  weft_st_file *f = ex_open("vae_tiled.safetensors");
  probe_write_png(ex_get(f, "image64x96"), NULL, "image96.png");
  ASSERT_OK(probe_run_graph("tiled_probe.yaml", NULL, NULL, NULL));
  weft_st_file *et = probe_file("enc_tiled");
  double d = max_abs_diff(ex_ref(et, "out", 4 * 8 * 12),
                          ex_ref(f, "encode_tiled/64x96_t64_o16", 4 * 8 * 12),
                          4 * 8 * 12);
  fprintf(stderr, "VAEEncodeTiled node max diff %.3g\n", d);
  ASSERT(d <= TOL);
  weft_st_close(et);
  /* decode of the node's own encoding: as the core decodes it */
  weft_st_file *enc = probe_file("encoded");
  model md;
  model_open(&md, false);
  float *x = malloc(3 * 64 * 96 * sizeof *x), *img = malloc(3 * 64 * 96 * 4);
  ASSERT_OK(sd_vae_decode_tiled(md.vae, md.be, ex_ref(enc, "out", 4 * 8 * 12),
                                8, 12, 8, 8, 2, x));
  to_image(x, 64, 96, img);
  weft_st_file *a = probe_file("dec_o16"), *b = probe_file("dec_o64");
  const float *da = ex_ref(a, "out", 3 * 64 * 96),
              *db = ex_ref(b, "out", 3 * 64 * 96);
  ASSERT(max_abs_diff(da, img, 3 * 64 * 96) <= 1e-6);
  /* overlap 64 > 64 / 4 is lowered to 16: the same image */
  ASSERT_EQ(memcmp(da, db, 3 * 64 * 96 * sizeof *da), 0);
  free(x), free(img);
  weft_st_close(a), weft_st_close(b), weft_st_close(enc);
  model_close(&md);
  weft_st_close(f);
}

/* ---- graphs/img2img.yaml and graphs/inpaint.yaml through the command ----- */

static void run_cli(const char *graph, const char *image, const char *extra,
                    const char *prefix) {
  char g[4096], ck[4096], im[4200], out[4200];
  snprintf(g, sizeof g, "%s/../graphs/%s", weft_test_srcdir(), graph);
  snprintf(ck, sizeof ck, "ckpt=%s/fixtures/sd15_tiny/sd15_tiny.safetensors",
           weft_test_srcdir());
  snprintf(im, sizeof im, "image=%s/%s", weft_test_tmpdir(), image);
  snprintf(out, sizeof out, "prefix=%s", prefix);
  const char *a[] = {g,
                     "--set",
                     ck,
                     "--set",
                     im,
                     "--set",
                     "prompt=a photo of a cat",
                     "--set",
                     "negative=blurry, low quality",
                     "--set",
                     "seed=42",
                     "--set",
                     "steps=6",
                     "--set",
                     "cfg=5",
                     "--set",
                     out,
                     "--set",
                     extra,
                     "--output-dir",
                     weft_test_tmpdir(),
                     "-q",
                     NULL};
  probe_weft_run(a, NULL);
}

TEST(img2img_yaml_matches_comfyui) {
  weft_st_file *f = ex_open("img2img_inpaint.safetensors");
  probe_write_png(ex_get(f, "image"), NULL, "image.png");
  /* size 64: ImageScale leaves the 64x64 picture as it is */
  run_cli("img2img.yaml", "image.png", "size=64", "i2i");
  char png[4200];
  snprintf(png, sizeof png, "%s/i2i_00001_.png", weft_test_tmpdir());
  probe_compare_png(png, ex_get(f, "img2img/image"), 1, "img2img.yaml");
  weft_st_close(f);
}

TEST(inpaint_yaml_matches_comfyui) {
  weft_st_file *f = ex_open("img2img_inpaint.safetensors");
  copy_fixture("inpaint_blob.png");
  run_cli("inpaint.yaml", "inpaint_blob.png", "grow=6", "inp");
  char png[4200];
  snprintf(png, sizeof png, "%s/inp_00001_.png", weft_test_tmpdir());
  probe_compare_png(png, ex_get(f, "encode_for_inpaint/image"), 1,
                    "inpaint.yaml");
  weft_st_close(f);
}
