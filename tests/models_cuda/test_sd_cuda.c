/* test_sd_cuda.c - the SD1.x models and nodes on a CUDA device: nodes/sd
 * over kernels/cuda against the references the CPU tests use
 * (tests/fixtures/sd15_tiny, sd15_extras) and against the CPU backend, and
 * the example graphs through `weft run --device cuda` against
 * `--device cpu`.  Without a CUDA device every case skips, saying so,
 * except the ones that check how weft refuses one that is missing (which
 * skip where there is one).  On the GPU machine:
 * tools/gpu/run_sd_cuda_tests.sh.
 *
 * Tolerances (max |a - b| over a tensor):
 *   outputs vs the diffusers/transformers references: 1e-4, as tests/models
 *   (fp32 on the GPU with TF32 off, so CUDA differs from the CPU by the
 *   order of its sums only: kernels/cuda/GPU_RESULTS.md measured about
 *   1e-6 relative per op);
 *   the same model on CUDA vs on the CPU backend: 1e-4;
 *   weights copied to the device and re-copied after LoRA merges: exact;
 *   graphs: every 8-bit value of the CUDA image within 1/255 of the CPU
 *   image; the same seed twice on CUDA: the same PNG, byte for byte.
 *
 * The "emulated" cases run everywhere: the CPU kernels behind pointers the
 * host cannot touch (kernels/emulated.h) drive the models' device paths --
 * uploads, copies in and out, host work on explicit copies, LoRA re-syncs
 * -- and must give the CPU backend's results bit for bit. */
#include <sys/stat.h>
#include <time.h>

#include "../models/sd_fixture.h"
#include "kernels/cpu/cpu.h" /* weft_f32_to_f16 */
#include "kernels/cuda/cuda.h"
#include "kernels/cuda/stream.h"
#include "kernels/emulated.h"
#include "lora.h"
#include "png_io.h"
#include "sd_device.h"
#include "sd_plan.h"

#define TOL 1e-4
#define TOL_VS_CPU 1e-4

/* ---- helpers
 * ----------------------------------------------------------------- */

static weft_backend *gpu(void) {
  if (!weft_cuda_available())
    weft_test_skip("no CUDA device: these cases need a GPU "
                   "(tools/gpu/run_sd_cuda_tests.sh runs them on one)");
  char err[512] = "";
  weft_backend *be = weft_backend_cuda_new_ex(NULL, err, sizeof err);
  if (!be) fprintf(stderr, "CUDA backend: %s\n", err);
  ASSERT(be != NULL);
  /* fp32 products: the references and the CPU are fp32 (the 16-bit cases
   * switch it themselves) */
  ASSERT_OK(weft_cuda_set_precision(be, WEFT_CUDA_FP32));
  fprintf(stderr, "device: %s, cuDNN %s\n", weft_cuda_device_name(be),
          weft_cuda_have_cudnn(be) ? "yes" : "no");
  return be;
}

static weft_backend *cpu(void) {
  weft_backend *be = weft_backend_cpu_new(2);
  ASSERT(be != NULL);
  return be;
}

static weft_st_file *ex_open(const char *rel) {
  char path[4096], err[1024];
  snprintf(path, sizeof path, "%s/fixtures/sd15_extras/%s", weft_test_srcdir(),
           rel);
  weft_st_file *f = NULL;
  int r = weft_st_open(path, &f, err, sizeof err);
  if (r) fprintf(stderr, "%s\n", err);
  ASSERT_OK(r);
  return f;
}

static const weft_st_tensor *get(weft_st_file *f, const char *key) {
  const weft_st_tensor *t = weft_st_find(f, key);
  if (!t) fprintf(stderr, "fixture has no '%s'\n", key);
  ASSERT(t != NULL);
  return t;
}

/* The first n token ids of a fixture's int64 input_ids, as sd_clip_forward
 * takes them. */
static void input_ids(const weft_st_tensor *ids64, int32_t *ids, int64_t n) {
  ASSERT((int64_t)ids64->nbytes >= 8 * n);
  for (int64_t i = 0; i < n; i++) {
    int64_t v;
    memcpy(&v, (const char *)ids64->data + 8 * i, 8);
    ids[i] = (int32_t)v;
  }
}

static const float *ref(weft_st_file *f, const char *key, int64_t numel) {
  const weft_st_tensor *t = get(f, key);
  ASSERT(t->dtype == WEFT_ST_F32);
  if (numel) ASSERT_EQ(t->nbytes, numel * 4);
  return t->data;
}

/* asserts a <= tol after printing it (the script's log keeps the numbers) */
static void expect(const char *what, double d, double tol) {
  fprintf(stderr, "%-46s max diff %.3g (tol %.0e)\n", what, d, tol);
  ASSERT(d <= tol);
}

/* the model parts of the tiny checkpoint, loaded; on `be` when it is a
 * device backend */
typedef struct model {
  fx_model m;
  sd_unet *unet;
  sd_clip *clip;
  sd_vae *vae;
} model;

static void model_open(model *md, sd_layout layout, weft_backend *be) {
  memset(md, 0, sizeof *md);
  fx_model_open(&md->m, layout);
  ASSERT_OK(sd_unet_load(&md->m.ck, &md->unet));
  ASSERT_OK(sd_clip_load(&md->m.ck, &md->clip));
  ASSERT_OK(sd_vae_load(&md->m.ck, &md->vae));
  if (be) {
    ASSERT_OK(sd_unet_to_backend(md->unet, be));
    ASSERT_OK(sd_clip_to_backend(md->clip, be));
    ASSERT_OK(sd_vae_to_backend(md->vae, be));
  }
}

static void model_close(model *md) {
  sd_unet_free(md->unet);
  sd_clip_free(md->clip);
  sd_vae_free(md->vae);
  fx_model_close(&md->m);
}

/* CLIP's token and position embeddings stay on the host (the lookup runs
 * there): sd_device.h's SD_W_HOST */
static bool host_only(const sd_param *p) {
  return p->part == SD_CLIP && strstr(p->name, "embeddings.") != NULL;
}

/* ---- the weights on the device
 * ------------------------------------------------- */

/* Every weight the loads registered has a device copy equal to its host
 * master, bit for bit; the models refuse a backend they are not on. */
TEST(weights_on_the_device_equal_the_host_masters) {
  weft_backend *g = gpu(), *c = cpu();
  model md;
  model_open(&md, SD_LAYOUT_LDM, g);
  sd_devw *dw[SD_PARTS] = {sd_unet_devw(md.unet), sd_vae_devw(md.vae),
                           sd_clip_devw(md.clip)};
  int64_t floats[SD_PARTS] = {0};
  for (int i = 0; i < md.m.ck.n_params; i++) {
    const sd_param *p = &md.m.ck.params[i];
    ASSERT(dw[p->part] != NULL);
    if (host_only(p)) {
      /* CLIP's embedding tables are read on the host: no device copy */
      ASSERT(sd_devw_find(dw[p->part], p->data) == NULL);
      continue;
    }
    float *dev = sd_devw_find(dw[p->part], p->data);
    if (!dev) fprintf(stderr, "'%s' has no device copy\n", p->name);
    ASSERT(dev != NULL);
    float *back = malloc((size_t)p->numel * sizeof *back);
    ASSERT_OK(g->iface->buffer_copy(g, back, dev, (size_t)p->numel * 4,
                                    WEFT_COPY_DEVICE_TO_HOST));
    ASSERT_EQ(memcmp(back, p->data, (size_t)p->numel * 4), 0);
    free(back);
    floats[p->part] += p->numel;
  }
  for (int p = 0; p < SD_PARTS; p++) {
    /* one buffer per model, each weight 256-byte aligned in it */
    ASSERT(dw[p]->arena_bytes >= (size_t)floats[p] * 4);
    ASSERT(dw[p]->arena_bytes < (size_t)floats[p] * 4 + (size_t)dw[p]->n * 256);
    fprintf(stderr,
            "part %d: %d weights, %lld floats, %zu bytes on the device\n", p,
            dw[p]->n, (long long)floats[p], dw[p]->arena_bytes);
  }
  ASSERT_EQ(dw[0]->n + dw[1]->n + dw[2]->n, md.m.ck.n_params);
  /* a model on the GPU does not run on the CPU backend */
  float out[2 * 4 * 8 * 8];
  static float x[2 * 4 * 8 * 8], t[2], ctx[2 * 77 * 32];
  ASSERT_EQ(sd_unet_forward(md.unet, c, x, 2, 8, 8, t, ctx, 77, NULL, out),
            WEFT_EINVAL);
  model_close(&md);
  weft_backend_free(c);
  weft_backend_free(g);
}

/* ---- models against the references
 * ----------------------------------------------- */

static void check_clip(sd_layout layout) {
  weft_backend *g = gpu(), *c = cpu();
  model mg, mc;
  model_open(&mg, layout, g);
  model_open(&mc, layout, NULL);
  weft_st_file *io = fx_open("clip_io.safetensors");
  const weft_st_tensor *ids64 = get(io, "input_ids");
  int64_t batch = ids64->shape[0], n = batch * 77 * 32;
  int32_t *ids = malloc((size_t)(batch * 77) * sizeof *ids);
  input_ids(ids64, ids, batch * 77);
  float *hg = malloc((size_t)n * 4), *hc = malloc((size_t)n * 4);
  float *pg = malloc((size_t)(batch * 32) * 4);
  ASSERT_OK(sd_clip_forward(mg.clip, g, ids, batch, 0, hg, pg));
  ASSERT_OK(sd_clip_forward(mc.clip, c, ids, batch, 0, hc, NULL));
  expect("clip last_hidden_state vs transformers",
         max_abs_diff(hg, ref(io, "last_hidden_state", n), n), TOL);
  expect("clip pooled_output vs transformers",
         max_abs_diff(pg, ref(io, "pooled_output", batch * 32), batch * 32),
         TOL);
  expect("clip last_hidden_state vs CPU", max_abs_diff(hg, hc, n), TOL_VS_CPU);
  ASSERT_OK(sd_clip_forward(mg.clip, g, ids, batch, -2, hg, NULL));
  expect("clip skip 2 vs transformers",
         max_abs_diff(hg, ref(io, "clip_skip_2", n), n), TOL);
  /* an id outside the vocabulary is refused on the device too */
  ids[5] = 1 << 30;
  ASSERT_EQ(sd_clip_forward(mg.clip, g, ids, 1, 0, hg, NULL), WEFT_EINVAL);
  free(ids), free(hg), free(hc), free(pg);
  weft_st_close(io);
  model_close(&mg), model_close(&mc);
  weft_backend_free(c), weft_backend_free(g);
}

TEST(clip_on_cuda_matches_transformers_single_file) {
  check_clip(SD_LAYOUT_LDM);
}
TEST(clip_on_cuda_matches_transformers_diffusers_folder) {
  check_clip(SD_LAYOUT_DIFFUSERS);
}

TEST(unet_on_cuda_matches_diffusers) {
  weft_backend *g = gpu(), *c = cpu();
  model mg, mc;
  model_open(&mg, SD_LAYOUT_LDM, g);
  model_open(&mc, SD_LAYOUT_LDM, NULL);
  weft_st_file *io = fx_open("unet_io.safetensors");
  const char *cases[] = {"a", "b", "c"};
  for (int k = 0; k < 3; k++) {
    char key[64], what[96];
    snprintf(key, sizeof key, "%s/sample", cases[k]);
    const weft_st_tensor *x = get(io, key);
    snprintf(key, sizeof key, "%s/timestep", cases[k]);
    const weft_st_tensor *t = get(io, key);
    snprintf(key, sizeof key, "%s/encoder_hidden_states", cases[k]);
    const weft_st_tensor *ctx = get(io, key);
    snprintf(key, sizeof key, "%s/out", cases[k]);
    const weft_st_tensor *want = get(io, key);
    int64_t n = (int64_t)(want->nbytes / 4);
    float *og = malloc((size_t)n * 4), *oc = malloc((size_t)n * 4);
    ASSERT_OK(sd_unet_forward(mg.unet, g, x->data, x->shape[0], x->shape[2],
                              x->shape[3], t->data, ctx->data, ctx->shape[1],
                              NULL, og));
    ASSERT_OK(sd_unet_forward(mc.unet, c, x->data, x->shape[0], x->shape[2],
                              x->shape[3], t->data, ctx->data, ctx->shape[1],
                              NULL, oc));
    snprintf(what, sizeof what, "unet case %s vs diffusers", cases[k]);
    expect(what, max_abs_diff(og, want->data, n), TOL);
    snprintf(what, sizeof what, "unet case %s vs CPU", cases[k]);
    expect(what, max_abs_diff(og, oc, n), TOL_VS_CPU);
    free(og), free(oc);
  }
  weft_st_close(io);
  model_close(&mg), model_close(&mc);
  weft_backend_free(c), weft_backend_free(g);
}

/* An odd latent (9 x 7): the downsamplings round up and the upsamplings
 * return to the skips' sizes, which on CUDA runs as a gather on host
 * copies (sd_upsample_nearest). */
TEST(unet_on_cuda_odd_size_matches_cpu) {
  weft_backend *g = gpu(), *c = cpu();
  model mg, mc;
  model_open(&mg, SD_LAYOUT_LDM, g);
  model_open(&mc, SD_LAYOUT_LDM, NULL);
  enum { B = 2, H = 9, W = 7, N = B * 4 * H * W };
  float x[N], t[B] = {999.0f, 10.0f}, og[N], oc[N];
  static float ctx[B * 77 * 32];
  uint64_t s = 7;
  for (int i = 0; i < N; i++)
    s = s * 6364136223846793005ull + 1,
    x[i] = (float)(s >> 40) / 8388608.0f - 1;
  for (int i = 0; i < B * 77 * 32; i++)
    s = s * 6364136223846793005ull + 1,
    ctx[i] = (float)(s >> 40) / 8388608.0f - 1;
  ASSERT_OK(sd_unet_forward(mg.unet, g, x, B, H, W, t, ctx, 77, NULL, og));
  ASSERT_OK(sd_unet_forward(mc.unet, c, x, B, H, W, t, ctx, 77, NULL, oc));
  expect("unet 9x7 latent vs CPU", max_abs_diff(og, oc, N), TOL_VS_CPU);
  model_close(&mg), model_close(&mc);
  weft_backend_free(c), weft_backend_free(g);
}

TEST(vae_on_cuda_matches_diffusers) {
  weft_backend *g = gpu();
  model md;
  model_open(&md, SD_LAYOUT_DIFFUSERS, g);
  weft_st_file *io = fx_open("vae_io.safetensors");
  const char *cases[] = {"a", "b"};
  for (int k = 0; k < 2; k++) {
    char key[64], what[96];
    snprintf(key, sizeof key, "%s/image", cases[k]);
    const weft_st_tensor *img = get(io, key);
    snprintf(key, sizeof key, "%s/moments", cases[k]);
    const weft_st_tensor *mom = get(io, key);
    snprintf(key, sizeof key, "%s/latent", cases[k]);
    const weft_st_tensor *lat = get(io, key);
    snprintf(key, sizeof key, "%s/decoded", cases[k]);
    const weft_st_tensor *dec = get(io, key);
    int64_t nm = (int64_t)(mom->nbytes / 4), nd = (int64_t)(dec->nbytes / 4);
    float *moments = malloc((size_t)nm * 4), *decoded = malloc((size_t)nd * 4);
    ASSERT_OK(sd_vae_encode(md.vae, g, img->data, img->shape[0], img->shape[2],
                            img->shape[3], moments));
    snprintf(what, sizeof what, "vae encode %s vs diffusers", cases[k]);
    expect(what, max_abs_diff(moments, mom->data, nm), TOL);
    ASSERT_OK(sd_vae_decode(md.vae, g, lat->data, lat->shape[0], lat->shape[2],
                            lat->shape[3], decoded));
    snprintf(what, sizeof what, "vae decode %s vs diffusers", cases[k]);
    expect(what, max_abs_diff(decoded, dec->data, nd), TOL);
    free(moments), free(decoded);
  }
  weft_st_close(io);
  model_close(&md);
  weft_backend_free(g);
}

/* [-1, 1] planes -> [H, W, 3] in 0..1, clamped (VAEDecode's output) */
static void to_image(const float *x, int64_t H, int64_t W, float *img) {
  for (int c = 0; c < 3; c++)
    for (int64_t i = 0; i < H * W; i++) {
      float v = (x[c * H * W + i] + 1.0f) / 2.0f;
      img[i * 3 + c] = v < 0 ? 0 : v > 1 ? 1 : v;
    }
}

TEST(tiled_vae_on_cuda_matches_comfyui) {
  weft_backend *g = gpu();
  model md;
  model_open(&md, SD_LAYOUT_LDM, g);
  weft_st_file *f = ex_open("vae_tiled.safetensors");
  const struct {
    const char *latent, *key;
    int64_t h, w, tile, overlap;
  } dec[] = {{"latent8x8", "decode_tiled/8x8_t64_o16", 8, 8, 8, 2},
             {"latent8x12", "decode_tiled/8x12_t64_o16", 8, 12, 8, 2},
             {"latent8x8", "decode_tiled_/8x8_t4_o1", 8, 8, 4, 1}};
  for (int k = 0; k < 3; k++) {
    int64_t H = dec[k].h * 8, W = dec[k].w * 8;
    float *x = malloc((size_t)(3 * H * W) * 4),
          *img = malloc((size_t)(3 * H * W) * 4);
    ASSERT_OK(sd_vae_decode_tiled(
        md.vae, g, ref(f, dec[k].latent, 4 * dec[k].h * dec[k].w), dec[k].h,
        dec[k].w, dec[k].tile, dec[k].tile, dec[k].overlap, x));
    to_image(x, H, W, img);
    expect(dec[k].key,
           max_abs_diff(img, ref(f, dec[k].key, 3 * H * W), 3 * H * W), TOL);
    free(x), free(img);
  }
  const char *enc[][2] = {{"image64x64", "encode_tiled/64x64_t64_o16"},
                          {"image64x96", "encode_tiled/64x96_t64_o16"}};
  for (int k = 0; k < 2; k++) {
    const weft_st_tensor *im = get(f, enc[k][0]);
    int64_t H = im->shape[0], W = im->shape[1], n = 4 * (H / 8) * (W / 8);
    float *px = malloc((size_t)(3 * H * W) * 4), *lat = malloc((size_t)n * 4);
    const uint8_t *u = im->data;
    for (int c = 0; c < 3; c++)
      for (int64_t i = 0; i < H * W; i++)
        px[c * H * W + i] = (float)u[i * 3 + c] / 255.0f;
    ASSERT_OK(sd_vae_encode_tiled(md.vae, g, px, H, W, 64, 64, 16, lat));
    expect(enc[k][1], max_abs_diff(lat, ref(f, enc[k][1], n), n), TOL);
    free(px), free(lat);
  }
  weft_st_close(f);
  model_close(&md);
  weft_backend_free(g);
}

/* ---- ControlNet
 * ------------------------------------------------------------------- */

static sd_cnet *cnet_open(sd_ckpt *ck, weft_st_file **f, char **json,
                          sd_layout layout) {
  memset(ck, 0, sizeof *ck);
  ck->layout = layout;
  bool folder = layout == SD_LAYOUT_DIFFUSERS;
  *f = ex_open(folder ? "controlnet/diffusion_pytorch_model.safetensors"
                      : "controlnet_tiny.safetensors");
  ck->files[SD_CONTROL] = fx_file(*f);
  ck->has[SD_CONTROL] = true;
  *json = NULL;
  if (folder) {
    char cfg[4096];
    snprintf(cfg, sizeof cfg, "%s/fixtures/sd15_extras/controlnet/config.json",
             weft_test_srcdir());
    ASSERT((*json = weft_test_read_file(cfg, NULL)) != NULL);
  }
  sd_cnet *m = NULL;
  int r = sd_ckpt_configure_control(ck, *json);
  if (!r) r = sd_cnet_load(ck, &m);
  if (r) fprintf(stderr, "%s\n", ck->err);
  ASSERT_OK(r);
  return m;
}

static float *hint_planes(const weft_st_tensor *t, int rows) {
  int64_t H = t->shape[0], W = t->shape[1];
  float *p = malloc((size_t)(rows * 3 * H * W) * sizeof *p);
  const uint8_t *u = t->data;
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < 3; c++)
      for (int64_t i = 0; i < H * W; i++)
        p[((int64_t)r * 3 + c) * H * W + i] = (float)u[i * 3 + c] / 255.0f;
  return p;
}

static void check_controlnet(sd_layout layout) {
  weft_backend *g = gpu(), *gu = gpu(); /* the ControlNet's and the UNet's */
  sd_ckpt ck;
  weft_st_file *f;
  char *json;
  sd_cnet *cn = cnet_open(&ck, &f, &json, layout);
  ASSERT_OK(sd_cnet_to_backend(cn, g));
  weft_st_file *io = ex_open("controlnet_io.safetensors");
  float *hint = hint_planes(get(io, "hint"), 2);
  const float *x = ref(io, "sample", 512), *t = ref(io, "timestep", 2);
  const float *ctx = ref(io, "encoder_hidden_states", 2 * 77 * 32);
  sd_cnet_out o;
  memset(&o, 0, sizeof o);
  ASSERT_OK(sd_cnet_forward(cn, g, x, 2, 8, 8, t, ctx, 77, hint,
                            *ref(io, "conditioning_scale", 1), &o));
  ASSERT_EQ(o.n, 6);
  for (int i = 0; i < 6; i++) {
    char key[64];
    snprintf(key, sizeof key, "down_residuals.%d", i);
    expect(
        key,
        max_abs_diff(o.down[i], ref(io, key, o.down_numel[i]), o.down_numel[i]),
        TOL);
  }
  expect("mid_residual",
         max_abs_diff(o.mid, ref(io, "mid_residual", o.mid_numel), o.mid_numel),
         TOL);
  /* the UNet on its own device backend, with the residuals */
  model md;
  model_open(&md, SD_LAYOUT_LDM, gu);
  float out[512];
  sd_control ctl = {(const float *const *)o.down, o.n, o.mid};
  ASSERT_OK(sd_unet_forward(md.unet, gu, x, 2, 8, 8, t, ctx, 77, &ctl, out));
  expect("unet with control vs diffusers",
         max_abs_diff(out, ref(io, "unet_out", 512), 512), TOL);
  sd_cnet_out_free(&o);
  free(hint);
  model_close(&md);
  weft_st_close(io);
  sd_cnet_free(cn);
  sd_ckpt_free_params(&ck);
  sd_ckpt_release(&ck);
  weft_st_close(f);
  free(json);
  weft_backend_free(gu), weft_backend_free(g);
}

TEST(controlnet_on_cuda_matches_diffusers_single_file) {
  check_controlnet(SD_LAYOUT_LDM);
}
TEST(controlnet_on_cuda_matches_diffusers_diffusers_folder) {
  check_controlnet(SD_LAYOUT_DIFFUSERS);
}

/* ---- LoRA
 * ----------------------------------------------------------------------------
 */

static sd_lora *lora_open(sd_ckpt *ck, const char *rel) {
  char path[4096], err[1024], um[1024];
  snprintf(path, sizeof path, "%s/fixtures/sd15_extras/%s", weft_test_srcdir(),
           rel);
  weft_st_file *f = NULL;
  ASSERT_OK(weft_st_open(path, &f, err, sizeof err));
  sd_file file = fx_file(f);
  sd_lora *l = NULL;
  int n_um = 0;
  int r = sd_lora_load(&file, ck, &l, um, sizeof um, &n_um, err, sizeof err);
  if (r) fprintf(stderr, "%s\n", err);
  ASSERT_OK(r);
  ASSERT_EQ(n_um, 0);
  weft_st_close(f);
  return l;
}

static void unet_clip_out(model *md, weft_backend *be, weft_st_file *refs,
                          float *u, float *h) {
  ASSERT_OK(sd_unet_forward(
      md->unet, be, ref(refs, "unet/sample", 512), 2, 8, 8,
      ref(refs, "unet/timestep", 2),
      ref(refs, "unet/encoder_hidden_states", 2 * 77 * 32), 77, NULL, u));
  const weft_st_tensor *ids64 = get(refs, "clip/input_ids");
  int32_t ids[77];
  input_ids(ids64, ids, 77);
  ASSERT_OK(sd_clip_forward(md->clip, be, ids, 1, 0, h, NULL));
}

/* every device weight of a part equals its host master */
static void device_equals_masters(model *md, weft_backend *g, sd_part part,
                                  sd_devw *dw) {
  for (int i = 0; i < md->m.ck.n_params; i++) {
    const sd_param *p = &md->m.ck.params[i];
    if (p->part != part || host_only(p)) continue;
    float *back = malloc((size_t)p->numel * 4);
    ASSERT_OK(g->iface->buffer_copy(g, back, sd_devw_find(dw, p->data),
                                    (size_t)p->numel * 4,
                                    WEFT_COPY_DEVICE_TO_HOST));
    ASSERT_EQ(memcmp(back, p->data, (size_t)p->numel * 4), 0);
    free(back);
  }
}

/* A kohya LoRA merged on the host masters and copied to the device
 * (sd_patch_sync, as LoraLoader's nodes do) gives diffusers' outputs;
 * strength 0 afterwards puts the exact base weights back on the device. */
TEST(lora_on_cuda_matches_diffusers_and_strength_zero_restores_the_base) {
  weft_backend *g = gpu();
  model md;
  model_open(&md, SD_LAYOUT_LDM, g);
  weft_st_file *refs = ex_open("lora_refs.safetensors");
  float u0[512], h0[77 * 32], u[512], h[77 * 32];
  unet_clip_out(&md, g, refs, u0, h0);
  expect("base unet_out vs diffusers",
         max_abs_diff(u0, ref(refs, "base/unet_out", 512), 512), TOL);
  sd_lora *l = lora_open(&md.m.ck, "lora_kohya.safetensors");
  sd_patch_state st[SD_PARTS];
  memset(st, 0, sizeof st);
  sd_patch pu = {l, 0.8f}, pc = {l, 0.6f};
  ASSERT_OK(sd_patch_apply(&st[SD_UNET], SD_UNET, &pu, 1));
  ASSERT_OK(sd_patch_apply(&st[SD_CLIP], SD_CLIP, &pc, 1));
  ASSERT_OK(sd_patch_sync(&st[SD_UNET], sd_unet_devw(md.unet)));
  ASSERT_OK(sd_patch_sync(&st[SD_CLIP], sd_clip_devw(md.clip)));
  device_equals_masters(&md, g, SD_UNET, sd_unet_devw(md.unet));
  unet_clip_out(&md, g, refs, u, h);
  expect("kohya unet_out vs diffusers",
         max_abs_diff(u, ref(refs, "kohya/unet_out", 512), 512), TOL);
  expect("kohya clip vs diffusers",
         max_abs_diff(h, ref(refs, "kohya/clip_last_hidden_state", 77 * 32),
                      77 * 32),
         TOL);
  ASSERT(max_abs_diff(u, u0, 512) > 0.1); /* the merge reached the device */
  /* strength 0: the base again, bit for bit, weights and outputs */
  sd_patch z = {l, 0.0f};
  ASSERT_OK(sd_patch_apply(&st[SD_UNET], SD_UNET, &z, 1));
  ASSERT_OK(sd_patch_apply(&st[SD_CLIP], SD_CLIP, &z, 1));
  ASSERT_OK(sd_patch_sync(&st[SD_UNET], sd_unet_devw(md.unet)));
  ASSERT_OK(sd_patch_sync(&st[SD_CLIP], sd_clip_devw(md.clip)));
  device_equals_masters(&md, g, SD_UNET, sd_unet_devw(md.unet));
  device_equals_masters(&md, g, SD_CLIP, sd_clip_devw(md.clip));
  unet_clip_out(&md, g, refs, u, h);
  ASSERT_EQ(memcmp(u, u0, sizeof u), 0);
  ASSERT_EQ(memcmp(h, h0, sizeof h), 0);
  sd_patch_state_free(&st[SD_UNET]), sd_patch_state_free(&st[SD_CLIP]);
  sd_lora_release(l);
  weft_st_close(refs);
  model_close(&md);
  weft_backend_free(g);
}

/* ---- the device paths on an emulated device (no GPU needed)
 * ------------------------ */

static weft_backend *emu(void) {
  weft_backend *be = weft_backend_emulated_new(2);
  ASSERT(be != NULL);
  return be;
}

static void same(const char *what, const float *a, const float *b, int64_t n) {
  fprintf(stderr, "%-46s %s\n", what,
          memcmp(a, b, (size_t)n * 4) ? "DIFFERS" : "bit-identical");
  ASSERT_EQ(memcmp(a, b, (size_t)n * 4), 0);
}

TEST(models_on_an_emulated_device_equal_the_cpu_bit_for_bit) {
  weft_backend *e = emu(), *c = cpu();
  model me, mc;
  model_open(&me, SD_LAYOUT_LDM, e);
  model_open(&mc, SD_LAYOUT_LDM, NULL);
  /* every registered weight moved, the master kept */
  sd_devw *dw[SD_PARTS] = {sd_unet_devw(me.unet), sd_vae_devw(me.vae),
                           sd_clip_devw(me.clip)};
  for (int i = 0; i < me.m.ck.n_params; i++) {
    const sd_param *p = &me.m.ck.params[i];
    if (host_only(p)) continue;
    const float *dev = sd_devw_find(dw[p->part], p->data);
    ASSERT(dev != NULL);
    ASSERT_EQ(
        memcmp(weft_emulated_host_ptr(dev), p->data, (size_t)p->numel * 4), 0);
  }
  ASSERT_EQ(dw[0]->n + dw[1]->n + dw[2]->n, me.m.ck.n_params);
  /* CLIP */
  weft_st_file *io = fx_open("clip_io.safetensors");
  const weft_st_tensor *ids64 = get(io, "input_ids");
  int64_t batch = ids64->shape[0], n = batch * 77 * 32;
  int32_t *ids = malloc((size_t)(batch * 77) * sizeof *ids);
  input_ids(ids64, ids, batch * 77);
  float *he = malloc((size_t)n * 4), *hc = malloc((size_t)n * 4);
  float pe[5 * 32], pc[5 * 32];
  ASSERT_EQ(batch, 5);
  ASSERT_OK(sd_clip_forward(me.clip, e, ids, batch, 0, he, pe));
  ASSERT_OK(sd_clip_forward(mc.clip, c, ids, batch, 0, hc, pc));
  same("clip hidden", he, hc, n);
  same("clip pooled", pe, pc, batch * 32);
  ASSERT_OK(sd_clip_forward(me.clip, e, ids, batch, -2, he, NULL));
  ASSERT_OK(sd_clip_forward(mc.clip, c, ids, batch, -2, hc, NULL));
  same("clip skip 2", he, hc, n);
  free(ids), free(he), free(hc);
  weft_st_close(io);
  /* UNet: the fixture's cases and an odd size */
  io = fx_open("unet_io.safetensors");
  const char *cases[] = {"a", "b", "c"};
  for (int k = 0; k < 3; k++) {
    char key[64];
    snprintf(key, sizeof key, "%s/sample", cases[k]);
    const weft_st_tensor *x = get(io, key);
    snprintf(key, sizeof key, "%s/timestep", cases[k]);
    const weft_st_tensor *t = get(io, key);
    snprintf(key, sizeof key, "%s/encoder_hidden_states", cases[k]);
    const weft_st_tensor *ctx = get(io, key);
    int64_t m = (int64_t)(x->nbytes / 4);
    float *oe = malloc((size_t)m * 4), *oc = malloc((size_t)m * 4);
    ASSERT_OK(sd_unet_forward(me.unet, e, x->data, x->shape[0], x->shape[2],
                              x->shape[3], t->data, ctx->data, ctx->shape[1],
                              NULL, oe));
    ASSERT_OK(sd_unet_forward(mc.unet, c, x->data, x->shape[0], x->shape[2],
                              x->shape[3], t->data, ctx->data, ctx->shape[1],
                              NULL, oc));
    snprintf(key, sizeof key, "unet case %s", cases[k]);
    same(key, oe, oc, m);
    free(oe), free(oc);
  }
  weft_st_close(io);
  {
    enum { B = 1, H = 9, W = 7, N = B * 4 * H * W };
    float x[N], t[B] = {500.0f}, oe[N], oc[N];
    static float ctx[B * 77 * 32];
    for (int i = 0; i < N; i++)
      x[i] = (float)((i * 37) % 19) / 9.0f - 1.0f;
    for (int i = 0; i < B * 77 * 32; i++)
      ctx[i] = (float)(i % 13) / 6.0f - 1;
    ASSERT_OK(sd_unet_forward(me.unet, e, x, B, H, W, t, ctx, 77, NULL, oe));
    ASSERT_OK(sd_unet_forward(mc.unet, c, x, B, H, W, t, ctx, 77, NULL, oc));
    same("unet 9x7", oe, oc, N);
  }
  /* VAE, whole and tiled */
  io = fx_open("vae_io.safetensors");
  const weft_st_tensor *img = get(io, "b/image"), *lat = get(io, "b/latent");
  float mo_e[8 * 4 * 6], mo_c[8 * 4 * 6], de[3 * 32 * 48], dc[3 * 32 * 48];
  ASSERT_OK(sd_vae_encode(me.vae, e, img->data, 1, 32, 48, mo_e));
  ASSERT_OK(sd_vae_encode(mc.vae, c, img->data, 1, 32, 48, mo_c));
  same("vae encode", mo_e, mo_c, 8 * 4 * 6);
  ASSERT_OK(sd_vae_decode(me.vae, e, lat->data, 1, 4, 6, de));
  ASSERT_OK(sd_vae_decode(mc.vae, c, lat->data, 1, 4, 6, dc));
  same("vae decode", de, dc, 3 * 32 * 48);
  weft_st_close(io);
  weft_st_file *f = ex_open("vae_tiled.safetensors");
  float *te = malloc(3 * 64 * 64 * 4), *tc = malloc(3 * 64 * 64 * 4);
  ASSERT_OK(sd_vae_decode_tiled(me.vae, e, ref(f, "latent8x8", 256), 8, 8, 4, 4,
                                1, te));
  ASSERT_OK(sd_vae_decode_tiled(mc.vae, c, ref(f, "latent8x8", 256), 8, 8, 4, 4,
                                1, tc));
  same("vae decode tiled", te, tc, 3 * 64 * 64);
  float le[4 * 8 * 8], lc[4 * 8 * 8];
  ASSERT_OK(sd_vae_encode_tiled(me.vae, e, te, 64, 64, 32, 32, 8, le));
  ASSERT_OK(sd_vae_encode_tiled(mc.vae, c, te, 64, 64, 32, 32, 8, lc));
  same("vae encode tiled", le, lc, 4 * 8 * 8);
  free(te), free(tc);
  weft_st_close(f);
  model_close(&me), model_close(&mc);
  /* every buffer came back: weights and activations */
  ASSERT_EQ(weft_emulated_live_buffers(e), 0);
  weft_backend_free(c), weft_backend_free(e);
}

TEST(controlnet_on_an_emulated_device_equals_the_cpu_bit_for_bit) {
  weft_backend *e = emu(), *eu = emu(), *c = cpu();
  sd_ckpt cke, ckc;
  weft_st_file *fe, *fc;
  char *je, *jc;
  sd_cnet *ne = cnet_open(&cke, &fe, &je, SD_LAYOUT_DIFFUSERS);
  sd_cnet *nc = cnet_open(&ckc, &fc, &jc, SD_LAYOUT_DIFFUSERS);
  ASSERT_OK(sd_cnet_to_backend(ne, e));
  weft_st_file *io = ex_open("controlnet_io.safetensors");
  float *hint = hint_planes(get(io, "hint"), 2);
  const float *x = ref(io, "sample", 512), *t = ref(io, "timestep", 2);
  const float *ctx = ref(io, "encoder_hidden_states", 2 * 77 * 32);
  sd_cnet_out oe, oc;
  memset(&oe, 0, sizeof oe), memset(&oc, 0, sizeof oc);
  /* chained: two strengths accumulate */
  for (int k = 0; k < 2; k++) {
    float s = k ? 0.2f : 0.5f;
    ASSERT_OK(sd_cnet_forward(ne, e, x, 2, 8, 8, t, ctx, 77, hint, s, &oe));
    ASSERT_OK(sd_cnet_forward(nc, c, x, 2, 8, 8, t, ctx, 77, hint, s, &oc));
  }
  ASSERT_EQ(oe.n, oc.n);
  for (int i = 0; i < oe.n; i++)
    same("controlnet down residual", oe.down[i], oc.down[i], oe.down_numel[i]);
  same("controlnet mid residual", oe.mid, oc.mid, oe.mid_numel);
  model me, mc;
  model_open(&me, SD_LAYOUT_LDM, eu);
  model_open(&mc, SD_LAYOUT_LDM, NULL);
  float ue[512], uc[512];
  sd_control le = {(const float *const *)oe.down, oe.n, oe.mid};
  sd_control lc = {(const float *const *)oc.down, oc.n, oc.mid};
  ASSERT_OK(sd_unet_forward(me.unet, eu, x, 2, 8, 8, t, ctx, 77, &le, ue));
  ASSERT_OK(sd_unet_forward(mc.unet, c, x, 2, 8, 8, t, ctx, 77, &lc, uc));
  same("unet with control", ue, uc, 512);
  sd_cnet_out_free(&oe), sd_cnet_out_free(&oc);
  free(hint);
  model_close(&me), model_close(&mc);
  weft_st_close(io);
  sd_cnet_free(ne), sd_cnet_free(nc);
  ASSERT_EQ(weft_emulated_live_buffers(e), 0);
  ASSERT_EQ(weft_emulated_live_buffers(eu), 0);
  sd_ckpt_free_params(&cke), sd_ckpt_release(&cke), weft_st_close(fe);
  sd_ckpt_free_params(&ckc), sd_ckpt_release(&ckc), weft_st_close(fc);
  free(je), free(jc);
  weft_backend_free(c), weft_backend_free(e), weft_backend_free(eu);
}

TEST(lora_on_an_emulated_device_equals_the_cpu_bit_for_bit) {
  weft_backend *e = emu(), *c = cpu();
  model me, mc;
  model_open(&me, SD_LAYOUT_LDM, e);
  model_open(&mc, SD_LAYOUT_LDM, NULL);
  weft_st_file *refs = ex_open("lora_refs.safetensors");
  float u0[512], h0[77 * 32], ue[512], he[77 * 32], uc[512], hc[77 * 32];
  unet_clip_out(&me, e, refs, u0, h0);
  sd_lora *le = lora_open(&me.m.ck, "lora_kohya.safetensors");
  sd_lora *lc = lora_open(&mc.m.ck, "lora_kohya.safetensors");
  sd_patch_state se[SD_PARTS], sc[SD_PARTS];
  memset(se, 0, sizeof se), memset(sc, 0, sizeof sc);
  const float strengths[][2] = {{0.8f, 0.6f}, {-0.5f, 1.2f}, {0.0f, 0.0f}};
  for (int k = 0; k < 3; k++) {
    sd_patch pe[2] = {{le, strengths[k][0]}, {le, strengths[k][1]}};
    sd_patch pc[2] = {{lc, strengths[k][0]}, {lc, strengths[k][1]}};
    ASSERT(!sd_patch_is_applied(&se[SD_UNET], &pe[0], 1));
    ASSERT_OK(sd_patch_apply(&se[SD_UNET], SD_UNET, &pe[0], 1));
    ASSERT_OK(sd_patch_apply(&se[SD_CLIP], SD_CLIP, &pe[1], 1));
    ASSERT(sd_patch_is_applied(&se[SD_UNET], &pe[0], 1));
    ASSERT_OK(sd_patch_sync(&se[SD_UNET], sd_unet_devw(me.unet)));
    ASSERT_OK(sd_patch_sync(&se[SD_CLIP], sd_clip_devw(me.clip)));
    ASSERT_OK(sd_patch_apply(&sc[SD_UNET], SD_UNET, &pc[0], 1));
    ASSERT_OK(sd_patch_apply(&sc[SD_CLIP], SD_CLIP, &pc[1], 1));
    unet_clip_out(&me, e, refs, ue, he);
    unet_clip_out(&mc, c, refs, uc, hc);
    same("lora unet", ue, uc, 512);
    same("lora clip", he, hc, 77 * 32);
  }
  /* the last was strength 0: the base */
  same("lora strength 0 unet = base", ue, u0, 512);
  same("lora strength 0 clip = base", he, h0, 77 * 32);
  for (int p = 0; p < SD_PARTS; p++)
    sd_patch_state_free(&se[p]), sd_patch_state_free(&sc[p]);
  sd_lora_release(le), sd_lora_release(lc);
  weft_st_close(refs);
  model_close(&me), model_close(&mc);
  weft_backend_free(c), weft_backend_free(e);
}

/* ---- graphs through the weft command
 * ---------------------------------------------- */

/* weft run <graph> --device dev [--vram vram] with "--set" values
 * (NULL-terminated) and the outputs in dir, the CUDA matrix products in
 * `precision` (WEFT_PRECISION: "fp32" to compare with the CPU); stdout
 * (--events json) into *out when out.  Returns the exit status, stderr in
 * *err when err (else printed on failure). */
static int weft_run_ex(const char *graph, const char *dev, const char *dir,
                       const char *const *sets, char **out,
                       const char *precision, const char *vram, char **err) {
  const char *a[84] = {weft_test_built("cli/weft"),
                       "run",
                       graph,
                       "--device",
                       dev,
                       "--output-dir",
                       dir,
                       "--events",
                       out ? "json" : "none"};
  int n = 9;
  if (vram) a[n++] = "--vram", a[n++] = vram;
  for (int i = 0; sets && sets[i] && n < 80; i++) {
    a[n++] = "--set";
    a[n++] = sets[i];
  }
  a[n] = NULL;
  char *e = NULL;
  setenv("WEFT_PRECISION", precision, 1);
  int code = weft_test_spawn(a, out, &e, 240);
  unsetenv("WEFT_PRECISION");
  if (err)
    *err = e;
  else {
    if (code) fprintf(stderr, "weft run --device %s: %s", dev, e);
    free(e);
  }
  return code;
}

/* as weft_run_ex in fp32 (the CPU's numbers), asserting success */
static void weft_run(const char *graph, const char *dev, const char *dir,
                     const char *const *sets, char **out) {
  ASSERT_EQ(weft_run_ex(graph, dev, dir, sets, out, "fp32", NULL, NULL), 0);
}

static char *path_in(const char *dir, const char *name) {
  char *p = malloc(8192);
  snprintf(p, 8192, "%s/%s", dir, name);
  return p;
}

static char *subdir(const char *name) {
  char *d = path_in(weft_test_tmpdir(), name);
  mkdir(d, 0755);
  return d;
}

/* the 8-bit values of a PNG weft wrote (caller frees .rgb) */
static weft__png_image read_png(const char *dir, const char *file) {
  char *p = path_in(dir, file);
  weft__png_image img;
  char err[1024];
  int r = weft__png_read(p, &img, err, sizeof err);
  if (r) fprintf(stderr, "%s\n", err);
  ASSERT_OK(r);
  free(p);
  return img;
}

/* every value within tol/255; prints the worst and how many differ */
static void compare_images(const char *what, const char *da, const char *db,
                           const char *file, int tol) {
  weft__png_image a = read_png(da, file), b = read_png(db, file);
  ASSERT_EQ(a.width, b.width);
  ASSERT_EQ(a.height, b.height);
  int64_t n = (int64_t)a.width * a.height * 3;
  int worst = 0;
  int64_t differ = 0;
  for (int64_t i = 0; i < n; i++) {
    int d = abs((int)lrintf(a.rgb[i] * 255) - (int)lrintf(b.rgb[i] * 255));
    worst = d > worst ? d : worst;
    differ += d != 0;
  }
  fprintf(stderr, "%-46s max %d/255, %lld of %lld values differ (tol %d)\n",
          what, worst, (long long)differ, (long long)n, tol);
  ASSERT(worst <= tol);
  weft__png_image_free(&a), weft__png_image_free(&b);
}

static void files_identical(const char *da, const char *db, const char *file) {
  char *pa = path_in(da, file), *pb = path_in(db, file);
  size_t la = 0, lb = 0;
  char *a = weft_test_read_file(pa, &la), *b = weft_test_read_file(pb, &lb);
  ASSERT(a && b);
  ASSERT_EQ(la, lb);
  ASSERT_EQ(memcmp(a, b, la), 0);
  free(a), free(b), free(pa), free(pb);
}

static const char *srcdir(void) {
  return weft_test_srcdir();
}

static char *graph(const char *rel) {
  char *p = malloc(8192);
  snprintf(p, 8192, "%s/%s", srcdir(), rel);
  return p;
}

/* "name=<tests>/<rel>" (caller frees) */
static char *set_path(const char *name, const char *rel) {
  char *p = malloc(8192);
  snprintf(p, 8192, "%s=%s/%s", name, srcdir(), rel);
  return p;
}

TEST(txt2img_yaml_on_cuda_matches_cpu_and_diffusers) {
  gpu();
  char *g = graph("../graphs/txt2img.yaml");
  char *ck = set_path("ckpt", "fixtures/sd15_tiny/diffusers");
  const char *sets[] = {ck,
                        "prompt=a watercolor fox in a snowy forest",
                        "negative=blurry, low quality",
                        "seed=42",
                        "steps=10",
                        "scheduler=normal",
                        "cfg=7.5",
                        "sampler=euler",
                        "width=64",
                        "height=64",
                        NULL};
  char *dc = subdir("cpu"), *dg = subdir("cuda"), *out = NULL;
  weft_run(g, "cpu", dc, sets, NULL);
  weft_run(g, "cuda", dg, sets, &out);
  /* the loader said where it ran (a log event) */
  ASSERT_CONTAINS(out, "runs on CUDA device 0");
  compare_images("txt2img.yaml cuda vs cpu", dg, dc, "txt2img_00001_.png", 1);
  /* and against diffusers' image as the CPU test does (2/255) */
  weft__png_image img = read_png(dg, "txt2img_00001_.png");
  weft_st_file *f = fx_open("txt2img_e2e_normal.safetensors");
  const weft_st_tensor *want = get(f, "image");
  ASSERT_EQ(want->nbytes, 64 * 64 * 3);
  int worst = 0;
  for (int i = 0; i < 64 * 64 * 3; i++) {
    int d =
        abs((int)lrintf(img.rgb[i] * 255) - ((const uint8_t *)want->data)[i]);
    worst = d > worst ? d : worst;
  }
  fprintf(stderr, "txt2img.yaml cuda vs diffusers: max %d/255 (tol 2)\n",
          worst);
  ASSERT(worst <= 2);
  weft__png_image_free(&img);
  weft_st_close(f);
  free(g), free(ck), free(dc), free(dg), free(out);
}

TEST(txt2img_yaml_on_cuda_same_seed_gives_the_same_png) {
  gpu();
  char *g = graph("../graphs/txt2img.yaml");
  char *ck = set_path("ckpt", "fixtures/sd15_tiny/sd15_tiny.safetensors");
  const char *sets[] = {ck,
                        "prompt=a red circle on a blue background",
                        "seed=7",
                        "steps=6",
                        "width=64",
                        "height=64",
                        "sampler=dpmpp_2m_sde",
                        "scheduler=karras",
                        NULL};
  char *da = subdir("a"), *db = subdir("b");
  weft_run(g, "cuda", da, sets, NULL);
  weft_run(g, "cuda", db, sets, NULL);
  files_identical(da, db, "txt2img_00001_.png");
  free(g), free(ck), free(da), free(db);
}

TEST(lora_yaml_on_cuda_matches_cpu_and_strength_zero_is_txt2img) {
  gpu();
  char *g = graph("../graphs/lora.yaml"), *gt = graph("../graphs/txt2img.yaml");
  char *ck = set_path("ckpt", "fixtures/sd15_tiny/sd15_tiny.safetensors");
  char *lo = set_path("lora", "fixtures/sd15_extras/lora_kohya.safetensors");
  const char *some[] = {ck,
                        lo,
                        "strength_model=0.8",
                        "strength_clip=0.6",
                        "prompt=a watercolor fox",
                        "negative=blurry",
                        "steps=4",
                        "width=64",
                        "height=64",
                        "prefix=out",
                        NULL};
  const char *zero[] = {ck,
                        lo,
                        "strength_model=0",
                        "strength_clip=0",
                        "prompt=a watercolor fox",
                        "negative=blurry",
                        "steps=4",
                        "width=64",
                        "height=64",
                        "prefix=out",
                        NULL};
  const char *plain[] = {ck,
                         "prompt=a watercolor fox",
                         "negative=blurry",
                         "steps=4",
                         "width=64",
                         "height=64",
                         "prefix=out",
                         NULL};
  char *dc = subdir("cpu"), *dg = subdir("cuda"), *dz = subdir("zero"),
       *dt = subdir("txt");
  weft_run(g, "cpu", dc, some, NULL);
  weft_run(g, "cuda", dg, some, NULL);
  compare_images("lora.yaml cuda vs cpu", dg, dc, "out_00001_.png", 1);
  weft_run(g, "cuda", dz, zero, NULL);
  weft_run(gt, "cuda", dt, plain, NULL);
  compare_images("lora.yaml strength 0 vs txt2img, cuda", dz, dt,
                 "out_00001_.png", 0);
  free(g), free(gt), free(ck), free(lo);
  free(dc), free(dg), free(dz), free(dt);
}

TEST(controlnet_yaml_on_cuda_matches_cpu) {
  gpu();
  char *g = graph("../graphs/controlnet.yaml");
  char *ck = set_path("ckpt", "fixtures/sd15_tiny/diffusers");
  char *cn = set_path("controlnet", "fixtures/sd15_extras/controlnet");
  char *hint = set_path("hint", "fixtures/images/photo.png");
  const char *sets[] = {ck,
                        cn,
                        hint,
                        "prompt=a photo of a cat",
                        "negative=blurry, low quality",
                        "steps=6",
                        "cfg=5",
                        "scheduler=simple",
                        "strength=0.7",
                        "start_percent=0.1",
                        "end_percent=0.9",
                        "width=64",
                        "height=64",
                        NULL};
  char *dc = subdir("cpu"), *dg = subdir("cuda");
  weft_run(g, "cpu", dc, sets, NULL);
  weft_run(g, "cuda", dg, sets, NULL);
  compare_images("controlnet.yaml cuda vs cpu", dg, dc, "controlnet_00001_.png",
                 1);
  free(g), free(ck), free(cn), free(hint), free(dc), free(dg);
}

TEST(img2img_and_inpaint_yaml_on_cuda_match_cpu) {
  gpu();
  char *ck = set_path("ckpt", "fixtures/sd15_tiny/sd15_tiny.safetensors");
  char *photo = set_path("image", "fixtures/images/photo.png");
  char *blob = set_path("image", "fixtures/sd15_extras/inpaint_blob.png");
  const char *i2i[] = {ck,
                       photo,
                       "size=64",
                       "steps=6",
                       "cfg=5",
                       "denoise=0.6",
                       "prompt=a photo of a cat",
                       NULL};
  const char *inp[] = {
      ck, blob, "grow=6", "steps=6", "cfg=5", "prompt=a photo of a cat", NULL};
  char *g1 = graph("../graphs/img2img.yaml"),
       *g2 = graph("../graphs/inpaint.yaml");
  char *d1c = subdir("i2i_cpu"), *d1g = subdir("i2i_cuda");
  char *d2c = subdir("inp_cpu"), *d2g = subdir("inp_cuda");
  weft_run(g1, "cpu", d1c, i2i, NULL);
  weft_run(g1, "cuda", d1g, i2i, NULL);
  compare_images("img2img.yaml cuda vs cpu", d1g, d1c, "img2img_00001_.png", 1);
  weft_run(g2, "cpu", d2c, inp, NULL);
  weft_run(g2, "cuda", d2g, inp, NULL);
  compare_images("inpaint.yaml cuda vs cpu", d2g, d2c, "inpaint_00001_.png", 1);
  free(ck), free(photo), free(blob), free(g1), free(g2);
  free(d1c), free(d1g), free(d2c), free(d2g);
}

TEST(tiled_vae_yaml_on_cuda_matches_cpu) {
  gpu();
  char *g = graph("models_cuda/graphs/tiled.yaml");
  char *ck = set_path("ckpt", "fixtures/sd15_tiny/sd15_tiny.safetensors");
  char *photo = set_path("image", "fixtures/images/photo.png");
  const char *sets[] = {ck, photo, "size=128", "tile=64", "overlap=16", NULL};
  char *dc = subdir("cpu"), *dg = subdir("cuda");
  weft_run(g, "cpu", dc, sets, NULL);
  weft_run(g, "cuda", dg, sets, NULL);
  compare_images("tiled.yaml cuda vs cpu", dg, dc, "tiled_00001_.png", 1);
  free(g), free(ck), free(photo), free(dc), free(dg);
}

/* ---- choosing the device
 * ----------------------------------------------------------- */

static int run_capture(const char *const *argv, char **err) {
  return weft_test_spawn(argv, NULL, err, 120);
}

TEST(device_cuda_without_a_gpu_is_a_usage_error) {
  if (weft_cuda_available()) weft_test_skip("a CUDA device is present");
  char *g = graph("../graphs/txt2img.yaml");
  const char *a[] = {
      weft_test_built("cli/weft"), "run", g, "--device", "cuda", NULL};
  char *err = NULL;
  ASSERT_EQ(run_capture(a, &err), 2);
  ASSERT_CONTAINS(err, "weft: --device cuda: no CUDA");
  free(err), free(g);
}

/* With a GPU, --device cuda makes device 0's context on a thread while the
 * graph is read (cli/common.c); a graph that is bad then still ends with
 * its error, its location and exit 2 (the thread joined at exit), and a
 * good one runs. */
TEST(device_cuda_with_a_gpu_reports_a_bad_graph_with_exit_2) {
  gpu();
  char *bad = weft_test_write_file(weft_test_tmpdir(), "bad.yaml",
                                   "nodes:\n  a: {op: [\n");
  const char *a[] = {
      weft_test_built("cli/weft"), "run", bad, "--device", "cuda", NULL};
  char *err = NULL;
  ASSERT_EQ(run_capture(a, &err), 2);
  ASSERT_CONTAINS(err, "bad.yaml:");
  free(err);
  char *unknown =
      weft_test_write_file(weft_test_tmpdir(), "unknown.yaml",
                           "version: 1\nnodes:\n  a: {op: NoSuchOp}\n");
  const char *b[] = {
      weft_test_built("cli/weft"), "run", unknown, "--device", "cuda", NULL};
  ASSERT_EQ(run_capture(b, &err), 2);
  ASSERT_CONTAINS(err, "NoSuchOp");
  free(err), free(bad), free(unknown);
}

TEST(device_flag_names_the_choices) {
  char *g = graph("../graphs/txt2img.yaml");
  const char *a[] = {
      weft_test_built("cli/weft"), "run", g, "--device", "gpu", NULL};
  char *err = NULL;
  ASSERT_EQ(run_capture(a, &err), 2);
  ASSERT_CONTAINS(err,
                  "weft: --device gpu: expected cpu, cuda, emulated or auto");
  free(err);
  const char *h[] = {weft_test_built("cli/weft"), "run", "--help", NULL};
  char *out = NULL;
  ASSERT_EQ(weft_test_spawn(h, &out, NULL, 60), 0);
  ASSERT_CONTAINS(out, "--device DEV");
  free(out), free(g);
}

/* WEFT_DEVICE is read by the loaders: a bad value names itself there */
TEST(weft_device_bad_value_is_named_by_the_loader) {
  char *g = graph("../graphs/txt2img.yaml");
  char *ck = set_path("ckpt", "fixtures/sd15_tiny/sd15_tiny.safetensors");
  const char *a[] = {weft_test_built("cli/weft"),
                     "run",
                     g,
                     "--set",
                     ck,
                     "--set",
                     "steps=1",
                     "--set",
                     "width=64",
                     "--set",
                     "height=64",
                     "--output-dir",
                     weft_test_tmpdir(),
                     "-q",
                     NULL};
  setenv("WEFT_DEVICE", "tpu", 1);
  char *err = NULL;
  int code = run_capture(a, &err);
  unsetenv("WEFT_DEVICE");
  fprintf(stderr, "exit %d: %s", code, err);
  ASSERT_EQ(code, 2);
  ASSERT_CONTAINS(err, "WEFT_DEVICE=tpu: expected cpu, cuda, emulated or auto");
  free(err), free(g), free(ck);
}

/* ---- 16-bit weights and streaming under a budget (issue 7)
 * ------------------------------------------------------------------ */

/* An sd_vram on the GPU as the plugin makes it (sd_cuda_xfer: copy stream,
 * pinned images, half marking), with this budget and 16-bit matrices when
 * `half` (the backend then computes in fp16), else fp32. */
static sd_vram *gpu_vram(weft_backend *g, uint64_t budget, bool half) {
  ASSERT_OK(weft_cuda_set_precision(g, half ? WEFT_CUDA_FP16 : WEFT_CUDA_FP32));
  sd_xfer x;
  weft_dtype h;
  char err[256] = "";
  int r = sd_cuda_xfer(g, &x, &h, err, sizeof err);
  if (r) fprintf(stderr, "sd_cuda_xfer: %s\n", err);
  ASSERT_OK(r);
  ASSERT_EQ(h, half ? WEFT_F16 : WEFT_F32);
  sd_vram *vr = sd_vram_new(g, budget, h, &x, true);
  ASSERT(vr != NULL);
  return vr;
}

/* max |a - b| / max |ref|: the error relative to the output's scale */
static double rel_err(const float *a, const float *ref, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; i++)
    m = fmax(m, fabs((double)ref[i]));
  return max_abs_diff(a, ref, n) / (m > 0 ? m : 1);
}

/* Tolerance of 16-bit weights and fp16 products (fp32 accumulation) on the
 * tiny models against fp32: 1e-2 of the output's largest magnitude (fp16
 * keeps 11 significant bits, 4.9e-4 relative per rounding; the sums of a
 * layer add those roughly as a random walk). */
#define TOL_FP16_REL 1e-2
/* Streamed against resident: the same kernels on the same 16-bit weights
 * (expected bit-identical; 1e-6 of the output's scale allows a library
 * choosing another algorithm for another address) */
#define TOL_STREAM_REL 1e-6

/* act16: 16-bit activations too (weft_cuda_set_act_dtype), as `weft run`
 * computes by default: every op's output rounds to fp16 besides, within
 * the same tolerance on these models. */
static void half_models_match_fp32(bool act16) {
  weft_backend *g = gpu(), *c = cpu();
  model mc, mh;
  model_open(&mc, SD_LAYOUT_LDM, NULL);
  memset(&mh, 0, sizeof mh);
  fx_model_open(&mh.m, SD_LAYOUT_LDM);
  ASSERT_OK(sd_unet_load(&mh.m.ck, &mh.unet));
  ASSERT_OK(sd_clip_load(&mh.m.ck, &mh.clip));
  ASSERT_OK(sd_vae_load(&mh.m.ck, &mh.vae));
  sd_vram *vr = gpu_vram(g, UINT64_MAX, true);
  if (act16) ASSERT_OK(weft_cuda_set_act_dtype(g, WEFT_F16));
  ASSERT_OK(sd_unet_to_vram(mh.unet, vr));
  ASSERT_OK(sd_clip_to_vram(mh.clip, vr));
  ASSERT_OK(sd_vae_to_vram(mh.vae, vr));
  ASSERT_OK(sd_vram_commit(vr));
  ASSERT(!sd_vram_streaming(vr));
  /* the matrices are 16-bit in a marked range, the biases fp32 outside */
  const sd_devw *du = sd_unet_devw(mh.unet);
  int64_t half_floats = 0;
  for (int i = 0; i < du->n; i++) {
    const float *d = sd_devw_find(du, du->e[i].host);
    ASSERT(d != NULL);
    if (du->e[i].kind == SD_W_HALF) {
      ASSERT_EQ(weft_cuda_half_dtype(g, d), WEFT_F16);
      uint16_t first;
      ASSERT_OK(
          g->iface->buffer_copy(g, &first, d, 2, WEFT_COPY_DEVICE_TO_HOST));
      ASSERT_EQ(first, weft_f32_to_f16(du->e[i].host[0]));
      half_floats += du->e[i].numel;
    } else {
      ASSERT_EQ(weft_cuda_half_dtype(g, d), WEFT_F32);
    }
  }
  fprintf(stderr,
          "UNet: %lld of its weights 16-bit, %zu bytes on the "
          "device (%zu fp32 resident)\n",
          (long long)half_floats, du->arena_bytes, du->f32_bytes);
  ASSERT(half_floats > 0);
  /* UNet */
  weft_st_file *io = fx_open("unet_io.safetensors");
  const weft_st_tensor *x = get(io, "a/sample"), *t = get(io, "a/timestep"),
                       *ctx = get(io, "a/encoder_hidden_states");
  int64_t n = (int64_t)(x->nbytes / 4);
  float *oh = malloc((size_t)n * 4), *oc = malloc((size_t)n * 4);
  ASSERT_OK(sd_unet_forward(mh.unet, g, x->data, x->shape[0], x->shape[2],
                            x->shape[3], t->data, ctx->data, ctx->shape[1],
                            NULL, oh));
  ASSERT_OK(sd_unet_forward(mc.unet, c, x->data, x->shape[0], x->shape[2],
                            x->shape[3], t->data, ctx->data, ctx->shape[1],
                            NULL, oc));
  expect("unet fp16 weights vs fp32 (relative)", rel_err(oh, oc, n),
         TOL_FP16_REL);
  free(oh), free(oc);
  weft_st_close(io);
  /* VAE decode */
  io = fx_open("vae_io.safetensors");
  const weft_st_tensor *lat = get(io, "b/latent");
  float dh[3 * 32 * 48], dc[3 * 32 * 48];
  ASSERT_OK(sd_vae_decode(mh.vae, g, lat->data, 1, 4, 6, dh));
  ASSERT_OK(sd_vae_decode(mc.vae, c, lat->data, 1, 4, 6, dc));
  expect("vae decode fp16 weights vs fp32 (relative)",
         rel_err(dh, dc, 3 * 32 * 48), TOL_FP16_REL);
  weft_st_close(io);
  /* CLIP */
  io = fx_open("clip_io.safetensors");
  const weft_st_tensor *ids64 = get(io, "input_ids");
  int32_t ids[77];
  input_ids(ids64, ids, 77);
  float hh[77 * 32], hc[77 * 32];
  ASSERT_OK(sd_clip_forward(mh.clip, g, ids, 1, 0, hh, NULL));
  ASSERT_OK(sd_clip_forward(mc.clip, c, ids, 1, 0, hc, NULL));
  expect("clip fp16 weights vs fp32 (relative)", rel_err(hh, hc, 77 * 32),
         TOL_FP16_REL);
  weft_st_close(io);
  model_close(&mh), model_close(&mc);
  sd_vram_release(vr);
  weft_backend_free(c), weft_backend_free(g);
}

TEST(fp16_weights_match_fp32_within_tolerance) {
  half_models_match_fp32(false);
}

TEST(fp16_activations_match_fp32_within_tolerance) {
  half_models_match_fp32(true);
}

/* The tiny UNet and VAE streamed under a budget of twice the largest UNet
 * block, against the same models resident, both 16-bit: the same kernels
 * on the same weights, so the same numbers (TOL_STREAM_REL).  The
 * resident backend gets the budgeted one's scratch bound, which decides
 * the convolutions' ways (weft_cuda_set_scratch_limit). */
TEST(streamed_weights_match_resident_on_cuda) {
  weft_backend *g = gpu(), *gr = gpu();
  model mr, ms;
  memset(&mr, 0, sizeof mr), memset(&ms, 0, sizeof ms);
  fx_model_open(&mr.m, SD_LAYOUT_LDM);
  fx_model_open(&ms.m, SD_LAYOUT_LDM);
  ASSERT_OK(sd_unet_load(&mr.m.ck, &mr.unet));
  ASSERT_OK(sd_vae_load(&mr.m.ck, &mr.vae));
  ASSERT_OK(sd_unet_load(&ms.m.ck, &ms.unet));
  ASSERT_OK(sd_vae_load(&ms.m.ck, &ms.vae));
  sd_vram *vres = gpu_vram(gr, UINT64_MAX, true);
  ASSERT_OK(sd_unet_to_vram(mr.unet, vres));
  ASSERT_OK(sd_vae_to_vram(mr.vae, vres));
  ASSERT_OK(sd_vram_commit(vres));
  const sd_devw *ru = sd_unet_devw(mr.unet), *rv = sd_vae_devw(mr.vae);
  uint64_t big = 0;
  for (int b = 0; b < ru->n_blocks; b++)
    if (ru->blk[b].bytes > big) big = ru->blk[b].bytes;
  uint64_t budget = 2 * big + ru->f32_bytes + rv->f32_bytes;
  sd_vram *vs = gpu_vram(g, budget, true);
  ASSERT_OK(weft_cuda_set_scratch_limit(gr, sd_vram_scratch(vs)));
  ASSERT_OK(sd_unet_to_vram(ms.unet, vs));
  ASSERT_OK(sd_vae_to_vram(ms.vae, vs));
  ASSERT_OK(sd_vram_commit(vs));
  ASSERT(sd_vram_streaming(vs));
  weft_st_file *io = fx_open("unet_io.safetensors");
  const weft_st_tensor *x = get(io, "a/sample"), *t = get(io, "a/timestep"),
                       *ctx = get(io, "a/encoder_hidden_states");
  int64_t n = (int64_t)(x->nbytes / 4);
  float *a = malloc((size_t)n * 4), *b = malloc((size_t)n * 4);
  weft_st_file *vio = fx_open("vae_io.safetensors");
  const weft_st_tensor *lat = get(vio, "b/latent");
  float da[3 * 32 * 48], db[3 * 32 * 48];
  for (int k = 0; k < 3; k++) {
    ASSERT_OK(sd_unet_forward(mr.unet, gr, x->data, x->shape[0], x->shape[2],
                              x->shape[3], t->data, ctx->data, ctx->shape[1],
                              NULL, a));
    ASSERT_OK(sd_unet_forward(ms.unet, g, x->data, x->shape[0], x->shape[2],
                              x->shape[3], t->data, ctx->data, ctx->shape[1],
                              NULL, b));
    expect("unet streamed vs resident (fp16, relative)", rel_err(b, a, n),
           TOL_STREAM_REL);
    ASSERT_OK(sd_vae_decode(mr.vae, gr, lat->data, 1, 4, 6, da));
    ASSERT_OK(sd_vae_decode(ms.vae, g, lat->data, 1, 4, 6, db));
    expect("vae decode streamed vs resident (fp16, relative)",
           rel_err(db, da, 3 * 32 * 48), TOL_STREAM_REL);
  }
  const sd_vram_stats *st = sd_vram_get_stats(vs);
  fprintf(stderr, "budget %llu: %llu loads (%llu ahead), %llu moves\n",
          (unsigned long long)budget, (unsigned long long)st->loads,
          (unsigned long long)st->prefetches, (unsigned long long)st->moves);
  ASSERT(st->prefetches > 0);
  free(a), free(b);
  weft_st_close(io), weft_st_close(vio);
  sd_unet_free(mr.unet), sd_vae_free(mr.vae), fx_model_close(&mr.m);
  sd_unet_free(ms.unet), sd_vae_free(ms.vae), fx_model_close(&ms.m);
  sd_vram_release(vs), sd_vram_release(vres);
  weft_backend_free(g), weft_backend_free(gr);
}

/* GS_STEPS euler steps of the planned sampler at 16x16 with CFG on
 * unet's weights as vr keeps them; with dry as the node makes them (the
 * call planned DRY before step 1, its arena reserved from the budget),
 * else recorded by step 1.  st: the recorder's stats at the end */
enum { GS_STEPS = 6 };
static void graph_sample(sd_unet *unet, weft_backend *be, sd_vram *vr, bool dry,
                         const float *ctx, float *x, weft_rec_stats *st) {
  static const float sig[GS_STEPS] = {14.6f, 8.0f, 4.1f, 2.2f, 0.7f, 0.1f};
  weft_schedule sched;
  weft_schedule_init(&sched, 0.00085, 0.012);
  const int64_t shape[4] = {1, 4, 16, 16}, n = 4 * 16 * 16, tok = 77;
  const int64_t dim = sd_unet_config(unet)->context_dim;
  sd_denoiser d;
  ASSERT_OK(sd_denoiser_init(&d, unet, be, &sched, SD_PRED_EPS, shape, 7.5f,
                             ctx, tok, ctx + tok * dim, tok));
  sd_denoise_plan p;
  ASSERT_OK(sd_denoise_plan_init(&p, &d));
  uint64_t arena = 0;
  if (dry) {
    ASSERT_OK(sd_denoise_plan_dry(&p, x, sig[0], &arena));
    ASSERT_OK(sd_vram_reserve(vr, arena + sd_vram_scratch(vr), NULL,
                              "the sampler's UNet call"));
    ASSERT_OK(sd_vram_commit(vr));
    ASSERT_OK(sd_vram_trim(vr));
  }
  float den[4 * 16 * 16];
  for (int k = 0; k < GS_STEPS; k++) {
    ASSERT_OK(sd_denoise_planned(&p, x, sig[k], den));
    float next = k + 1 < GS_STEPS ? sig[k + 1] : 0.0f;
    for (int64_t i = 0; i < n; i++)
      x[i] = den[i] + (x[i] - den[i]) * (next / sig[k]);
  }
  ASSERT(sd_denoise_plan_stats(&p, 0, st));
  sd_denoise_plan_free(&p);
  sd_denoiser_free(&d);
}

/* The sampler's CUDA graphs on 16-bit weights under a budget, as the
 * node keeps them: with every weight resident they are captured once, by
 * the first step after the DRY plan's first run that moved no weight, and
 * launched by every later step; with the weights streamed they cannot
 * stand (the weights move every step), so none is captured.  Either way the
 * latents are the ones without graphs, bit for bit. */
TEST(sampler_graphs_under_a_budget_give_the_ungraphed_latents_on_cuda) {
  const int64_t n = 4 * 16 * 16;
  for (int streamed = 0; streamed < 2; streamed++) {
    weft_backend *g = gpu();
    model m;
    memset(&m, 0, sizeof m);
    fx_model_open(&m.m, SD_LAYOUT_LDM);
    ASSERT_OK(sd_unet_load(&m.m.ck, &m.unet));
    uint64_t budget = (uint64_t)1 << 30;
    if (streamed) {
      /* two of the largest blocks and the fp32 weights (as above); the
       * call recorded by step 1, outside the budget */
      sd_vram *probe = gpu_vram(g, UINT64_MAX, true);
      ASSERT_OK(sd_unet_to_vram(m.unet, probe));
      const sd_devw *pw = sd_unet_devw(m.unet);
      uint64_t big = 0;
      for (int b = 0; b < pw->n_blocks; b++)
        if (pw->blk[b].bytes > big) big = pw->blk[b].bytes;
      budget = 2 * big + pw->f32_bytes;
      sd_unet_free(m.unet);
      sd_vram_release(probe);
      ASSERT_OK(sd_unet_load(&m.m.ck, &m.unet));
    }
    sd_vram *vr = gpu_vram(g, budget, true);
    ASSERT_OK(sd_unet_to_vram(m.unet, vr));
    ASSERT_OK(sd_vram_commit(vr));
    ASSERT(sd_vram_streaming(vr) == (streamed != 0));
    const int64_t dim = sd_unet_config(m.unet)->context_dim;
    float *ctx = malloc((size_t)(2 * 77 * dim) * 4), a[4 * 16 * 16],
          b[4 * 16 * 16];
    ASSERT(ctx != NULL);
    uint64_t s = 7;
    for (int64_t i = 0; i < 2 * 77 * dim; i++) {
      s = s * 6364136223846793005ull + 1;
      ctx[i] = (float)(s >> 40) / 8388608.0f - 1;
    }
    for (int64_t i = 0; i < n; i++) {
      s = s * 6364136223846793005ull + 1;
      a[i] = b[i] = ((float)(s >> 40) / 8388608.0f - 1) * 14.6f;
    }
    weft_rec_stats on, off;
    graph_sample(m.unet, g, vr, !streamed, ctx, a, &on);
    setenv("WEFT_GRAPHS", "0", 1);
    graph_sample(m.unet, g, vr, !streamed, ctx, b, &off);
    unsetenv("WEFT_GRAPHS");
    fprintf(stderr, "%s: %d graph segments, %llu launches, %llu failures\n",
            streamed ? "streamed" : "resident", on.graph_segments,
            (unsigned long long)on.graph_launches,
            (unsigned long long)on.graph_failures);
    ASSERT(memcmp(a, b, sizeof a) == 0);
    ASSERT_EQ(off.graph_launches, 0);
    if (streamed) {
      /* the recorder in use at the end runs without graphs */
      ASSERT_EQ(on.graph_segments, 0);
      ASSERT_EQ(on.graph_launches, 0);
    } else {
      ASSERT(on.graph_segments > 0);
      /* captured by step 2, or by step 3 where step 1 still moved
       * weights into the pool the reserve resized */
      const uint64_t seg = (uint64_t)on.graph_segments;
      ASSERT(on.graph_launches == (GS_STEPS - 1) * seg ||
             on.graph_launches == (GS_STEPS - 2) * seg);
      ASSERT_EQ(on.graph_failures, 0);
    }
    free(ctx);
    sd_unet_free(m.unet);
    fx_model_close(&m.m);
    sd_vram_release(vr);
    weft_backend_free(g);
  }
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static const char *sd15_json[SD_PARTS] = {
    "{\"block_out_channels\":[320,640,1280,1280],\"down_block_types\":["
    "\"CrossAttnDownBlock2D\",\"CrossAttnDownBlock2D\","
    "\"CrossAttnDownBlock2D\","
    "\"DownBlock2D\"],\"up_block_types\":[\"UpBlock2D\",\"CrossAttnUpBlock2D\","
    "\"CrossAttnUpBlock2D\",\"CrossAttnUpBlock2D\"],\"layers_per_block\":2,"
    "\"attention_head_dim\":8,\"cross_attention_dim\":768,\"in_channels\":4,"
    "\"out_channels\":4,\"norm_num_groups\":32}",
    "{\"block_out_channels\":[128,256,512,512],\"layers_per_block\":2,"
    "\"latent_channels\":4}",
    "{\"hidden_size\":768,\"num_hidden_layers\":12,\"num_attention_heads\":12,"
    "\"intermediate_size\":3072,\"hidden_act\":\"quick_gelu\"}"};

typedef struct sd15_unet_args {
  sd_unet *u;
  const float *x, *t, *hid;
  float *out;
} sd15_unet_args;

static int sd15_unet_fn(void *user, weft_backend *be) {
  sd15_unet_args *a = user;
  return sd_unet_forward(a->u, be, a->x, 2, 64, 64, a->t, a->hid, 77, NULL,
                         a->out);
}

typedef struct sd15_clip_args {
  sd_clip *cl;
  const int32_t *ids;
  float *hid;
} sd15_clip_args;

static int sd15_clip_fn(void *user, weft_backend *be) {
  sd15_clip_args *a = user;
  return sd_clip_forward(a->cl, be, a->ids, 2, 0, a->hid, NULL);
}

typedef struct sd15_vae_args {
  sd_vae *va;
  const float *lat;
  float *img;
} sd15_vae_args;

static int sd15_vae_fn(void *user, weft_backend *be) {
  sd15_vae_args *a = user;
  return sd_vae_decode(a->va, be, a->lat, 1, 64, 64, a->img);
}

/* txt2img's model calls at SD1.5's shapes (random weights, fp16 matrices,
 * 512x512): the text encoder on two prompts, STEPS UNet steps (CFG batch
 * 2, latent 64x64), the VAE decoder -- first with every weight resident
 * and nothing planned, then as the plugin runs them under `--vram 1.5G`
 * (nodes.c): each call planned first (one arena), the arena plus scratch
 * kept from the weights' pool (sd_vram_reserve), the cache trimmed between
 * calls.  Each phase on a fresh backend, so that the caching allocator's
 * high-water (peak_reserved: every byte weft holds from the driver) is
 * the phase's: under the budget it must be <= 1.5 GiB.  The same outputs
 * (TOL_STREAM_REL); ms per UNet step, loads and MiB streamed per step, the
 * pool, the high-water and cudaMemGetInfo's used bytes (the CUDA context
 * and any other process included) printed. */
TEST(sd15_txt2img_models_stream_under_1_5_gib_on_cuda) {
  weft_backend *probe = gpu();
  weft_backend_free(probe);
  sd_ckpt ck;
  memset(&ck, 0, sizeof ck);
  ck.random_weights = true;
  ck.layout = SD_LAYOUT_DIFFUSERS;
  for (int p = 0; p < SD_PARTS; p++)
    ck.has[p] = true;
  ASSERT_OK(sd_ckpt_configure(&ck, sd15_json));
  sd_unet *u = NULL;
  sd_clip *cl = NULL;
  sd_vae *va = NULL;
  ASSERT_OK(sd_unet_load(&ck, &u));
  ASSERT_OK(sd_clip_load(&ck, &cl));
  ASSERT_OK(sd_vae_load(&ck, &va));
  enum { B = 2, C = 4, H = 64, W = 64, L = 77, D = 768, STEPS = 4 };
  const uint64_t budget = 1610612736ull; /* 1.5 GiB */
  const int64_t nx = B * C * H * W, nh = B * L * D, ni = 3 * 512 * 512;
  int32_t ids[B * L];
  for (int i = 0; i < B * L; i++)
    ids[i] = i % L == 0  ? 49406
             : i % L < 9 ? 320 + 17 * (i % L) + i / L
                         : 49407;
  float *x = malloc(sizeof(float) * nx), t[B] = {999.0f, 999.0f};
  float *out[2], *hid[2], *img[2];
  for (int p = 0; p < 2; p++)
    out[p] = malloc(sizeof(float) * nx), hid[p] = malloc(sizeof(float) * nh),
    img[p] = malloc(sizeof(float) * ni);
  uint64_t s = 1;
  for (int64_t i = 0; i < nx; i++)
    s = s * 6364136223846793005ull + 1,
    x[i] = (float)(s >> 40) / 8388608.0f - 1;
  const char *phase[2] = {"resident", "sharing 1.5 GiB"};
  const double M = 1048576.0;
  for (int p = 0; p < 2; p++) {
    weft_backend *g = gpu();
    sd_vram *vr = gpu_vram(g, p ? budget : UINT64_MAX, true);
    /* resident: the budget's scratch bound too, so that the convolutions
     * go the same ways and the outputs compare exactly */
    if (!p) ASSERT_OK(weft_cuda_set_scratch_limit(g, SD_VRAM_SCRATCH));
    /* the loader's order (sd_vram_for keeps scratch from the start) */
    if (p) ASSERT_OK(sd_vram_reserve(vr, sd_vram_scratch(vr), NULL, NULL));
    ASSERT_OK(sd_unet_to_vram(u, vr));
    ASSERT_OK(sd_clip_to_vram(cl, vr));
    ASSERT_OK(sd_vae_to_vram(va, vr));
    ASSERT_OK(sd_vram_commit(vr));
    ASSERT(sd_vram_streaming(vr) == (p == 1));
    const sd_vram_stats *st = sd_vram_get_stats(vr);
    weft_rec_stats rs;
    uint64_t arena_c = 0, arena_u = 0, arena_v = 0;
    size_t pool_u = sd_vram_pool_bytes(vr);
    sd15_clip_args ca = {cl, ids, hid[p]};
    if (p) {
      ASSERT_OK(sd_plan_call_vram(g, vr, sd_clip_devw(cl), sd_vram_scratch(vr),
                                  "the text encoder", sd15_clip_fn, &ca, &rs));
      arena_c = rs.arena.arena;
      ASSERT_OK(sd_vram_trim(vr));
    } else {
      ASSERT_OK(sd15_clip_fn(&ca, g));
    }
    /* the sampler: the UNet call recorded without computing, its arena +
     * scratch reserved, then every step replayed from the arena */
    sd15_unet_args ua = {u, x, t, hid[p], out[p]};
    weft_rec *rec = NULL;
    if (p) {
      rec = weft_rec_new(g);
      ASSERT(rec != NULL);
      ASSERT_OK(weft_rec_begin(rec, WEFT_REC_DRY));
      ASSERT_OK(sd15_unet_fn(&ua, weft_rec_backend(rec)));
      ASSERT_OK(weft_rec_end(rec));
      weft_rec_stats_get(rec, &rs);
      arena_u = rs.arena.arena;
      int r = sd_vram_reserve(vr, arena_u + sd_vram_scratch(vr), NULL,
                              "the sampler's UNet call");
      if (r) fprintf(stderr, "%s\n", sd_vram_error(vr));
      ASSERT_OK(r);
      ASSERT_OK(sd_vram_commit(vr));
      ASSERT_OK(sd_vram_trim(vr));
      pool_u = sd_vram_pool_bytes(vr);
    }
    double best = 1e9;
    uint64_t loads = 0, bytes = 0;
    for (int k = 0; k < STEPS; k++) {
      uint64_t l0 = st->loads, b0 = st->loaded_bytes;
      ASSERT_OK(g->iface->synchronize(g));
      double t0 = now_s();
      if (rec) ASSERT_OK(weft_rec_begin(rec, WEFT_REC_REPLAY));
      ASSERT_OK(sd15_unet_fn(&ua, rec ? weft_rec_backend(rec) : g));
      if (rec) ASSERT_OK(weft_rec_end(rec));
      double dt = now_s() - t0;
      best = dt < best ? dt : best;
      loads = st->loads - l0, bytes = st->loaded_bytes - b0;
    }
    if (rec) {
      weft_rec_stats_get(rec, &rs);
      ASSERT_EQ(rs.misses, 0);
      weft_rec_free(rec);
      ASSERT_OK(sd_vram_trim(vr));
    }
    sd15_vae_args va_a = {va, out[p], img[p]};
    if (p) {
      int r = sd_plan_call_vram(g, vr, sd_vae_devw(va), sd_vram_scratch(vr),
                                "the VAE decode", sd15_vae_fn, &va_a, &rs);
      if (r) fprintf(stderr, "%s\n", sd_vram_error(vr));
      ASSERT_OK(r);
      arena_v = rs.arena.arena;
    } else {
      ASSERT_OK(sd15_vae_fn(&va_a, g));
    }
    ASSERT_OK(g->iface->synchronize(g));
    size_t fr = 0, tot = 0;
    ASSERT_OK(weft_cuda_mem_info(g, &fr, &tot));
    weft_cuda_mem_stats ms;
    ASSERT_OK(weft_cuda_mem_stats_get(g, &ms));
    uint64_t f32 = sd_unet_devw(u)->f32_bytes + sd_clip_devw(cl)->f32_bytes +
                   sd_vae_devw(va)->f32_bytes;
    fprintf(stderr,
            "sd15 txt2img models %-16s UNet %.1f ms/step; last step %llu "
            "loads, %.1f MiB; all %llu loads %.1f MiB, %llu moves; weights "
            "%.1f MiB (pool %.1f during the steps + fp32 %.1f); arenas: "
            "text encoder %.1f, UNet %.1f, VAE decode %.1f MiB; scratch "
            "kept %.1f MiB\n",
            phase[p], best * 1e3, (unsigned long long)loads, (double)bytes / M,
            (unsigned long long)st->loads, (double)st->loaded_bytes / M,
            (unsigned long long)st->moves, (double)(pool_u + f32) / M,
            (double)pool_u / M, (double)f32 / M, (double)arena_c / M,
            (double)arena_u / M, (double)arena_v / M,
            (double)sd_vram_scratch(vr) / M);
    /* the runner's summary keeps lines with "device:", up to 118 chars */
    fprintf(stderr,
            "device: sd15 %s high-water %.0f MiB (in use %.0f); "
            "cudaMemGetInfo used %.0f MiB\n",
            p ? "--vram 1.5G" : "resident", (double)ms.peak_reserved / M,
            (double)ms.peak_in_use / M, (double)(tot - fr) / M);
    if (p) {
      ASSERT(loads > 0);
      ASSERT(pool_u + f32 <= budget);
      /* everything weft allocated, at its highest, within the budget */
      ASSERT(ms.peak_reserved <= budget);
    }
    sd_unet_to_host(u), sd_clip_to_host(cl), sd_vae_to_host(va);
    sd_vram_release(vr);
    weft_backend_free(g);
  }
  expect("sd15 clip shared budget vs resident (relative)",
         rel_err(hid[1], hid[0], nh), TOL_STREAM_REL);
  expect("sd15 unet shared budget vs resident (relative)",
         rel_err(out[1], out[0], nx), TOL_STREAM_REL);
  expect("sd15 vae shared budget vs resident (relative)",
         rel_err(img[1], img[0], ni), TOL_STREAM_REL);
  free(x);
  for (int p = 0; p < 2; p++)
    free(out[p]), free(hid[p]), free(img[p]);
  sd_unet_free(u), sd_clip_free(cl), sd_vae_free(va);
  sd_ckpt_free_params(&ck);
  sd_ckpt_release(&ck);
}

/* Through `weft run --vram`: a budget below the largest block is a usage
 * error (exit 2) that names the model; so is one that holds the weights
 * but not a node's planned activations beside them ("raise the budget");
 * a budget that makes the weights stream (and holds the VAE decode's
 * 2 MiB arena and a third kept for scratch) gives the resident run's image byte
 * for byte, and each model node logs the device high-water against the
 * budget (--events json; printed). */
TEST(txt2img_yaml_vram_budget_on_cuda) {
  gpu();
  char *g = graph("../graphs/txt2img.yaml");
  char *ck = set_path("ckpt", "fixtures/sd15_tiny/sd15_tiny.safetensors");
  const char *sets[] = {ck,         "prompt=a red circle on a blue background",
                        "seed=3",   "steps=4",
                        "width=64", "height=64",
                        NULL};
  char *dr = subdir("resident"), *ds = NULL, *dx = subdir("x");
  char *err = NULL;
  int code = weft_run_ex(g, "cuda", dx, sets, NULL, "fp16", "100000", &err);
  fprintf(stderr, "--vram 100000: exit %d: %s", code, err);
  ASSERT_EQ(code, 2);
  ASSERT_CONTAINS(err, "UNet");
  free(err);
  /* the first budget down from 2 MB that holds the weights' blocks but
   * not an arena beside them (where it falls moves with the models'
   * activations: the VAE's resnets shrank them) */
  static const char *const tight[] = {"2000000", "1600000", "1300000",
                                      "1000000", "800000",  "600000"};
  bool raised = false;
  for (size_t i = 0; i < sizeof tight / sizeof *tight && !raised; i++) {
    code = weft_run_ex(g, "cuda", dx, sets, NULL, "fp16", tight[i], &err);
    fprintf(stderr, "--vram %s: exit %d: %s", tight[i], code, err ? err : "\n");
    if (code != 0) {
      ASSERT_EQ(code, 2);
      ASSERT_CONTAINS(err, "raise the budget");
      raised = true;
    }
    free(err);
    err = NULL;
  }
  ASSERT(raised);
  /* The convolutions one way in both runs: a budget this small bounds
   * the backend's scratch so that cuDNN's 16-bit ones go through im2col
   * (weft_cuda_set_scratch_limit), whose sums are in another order. */
  setenv("WEFT_CUDA_CONV", "im2col", 1);
  ASSERT_EQ(weft_run_ex(g, "cuda", dr, sets, NULL, "fp16", NULL, NULL), 0);
  /* The budget that makes the weights stream and still holds each node's
   * arena depends on the scratch share kept from it: the first of these
   * that streams (the tiny model's 16-bit weights are 3.1 MiB; 6 MB keeps
   * them all resident) */
  static const char *const budgets[] = {"5000000", "4500000", "4000000",
                                        "3500000"};
  char *ev = NULL;
  const char *streamed = NULL;
  for (size_t i = 0; i < sizeof budgets / sizeof *budgets && !streamed; i++) {
    free(ev), free(ds);
    ev = NULL;
    char name[32];
    snprintf(name, sizeof name, "streamed%zu", i); /* one image each */
    ds = subdir(name);
    int rc = weft_run_ex(g, "cuda", ds, sets, &ev, "fp16", budgets[i], NULL);
    fprintf(stderr, "--vram %s: exit %d%s\n", budgets[i], rc,
            ev && strstr(ev, "blocks stream") ? ", blocks stream" : "");
    if (!rc && ev && strstr(ev, "blocks stream")) streamed = budgets[i];
  }
  unsetenv("WEFT_CUDA_CONV");
  ASSERT(streamed != NULL);
  ASSERT_CONTAINS(ev, "device high-water");
  int lines = 0;
  for (const char *q = ev; (q = strstr(q, "device high-water")); q++, lines++) {
    const char *b = q;
    while (b > ev && b[-1] != '"')
      b--;
    const char *e = strchr(q, '"');
    fprintf(stderr, "device: %.*s\n", (int)((e ? e : q + 60) - b), b);
  }
  ASSERT(lines >= 3); /* text encoder (x2), sampler, VAE decode */
  compare_images("txt2img.yaml --vram (streamed) vs resident", ds, dr,
                 "txt2img_00001_.png", 0);
  files_identical(ds, dr, "txt2img_00001_.png");
  free(ev);
  free(g), free(ck), free(dr), free(ds), free(dx);
}

/* The plugin's default precision (fp16) against fp32 on a whole image:
 * within 30 dB PSNR of the fp32 image (the tiny model's image; printed). */
TEST(txt2img_yaml_fp16_vs_fp32_on_cuda) {
  gpu();
  char *g = graph("../graphs/txt2img.yaml");
  char *ck = set_path("ckpt", "fixtures/sd15_tiny/sd15_tiny.safetensors");
  const char *sets[] = {ck,         "prompt=a red circle on a blue background",
                        "seed=3",   "steps=6",
                        "width=64", "height=64",
                        NULL};
  char *d32 = subdir("fp32"), *d16 = subdir("fp16");
  ASSERT_EQ(weft_run_ex(g, "cuda", d32, sets, NULL, "fp32", NULL, NULL), 0);
  ASSERT_EQ(weft_run_ex(g, "cuda", d16, sets, NULL, "fp16", NULL, NULL), 0);
  weft__png_image a = read_png(d32, "txt2img_00001_.png"),
                  b = read_png(d16, "txt2img_00001_.png");
  int64_t n = (int64_t)a.width * a.height * 3;
  double se = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = (double)a.rgb[i] - (double)b.rgb[i];
    se += d * d;
  }
  double psnr = se > 0 ? 10 * log10(1.0 / (se / (double)n)) : 99;
  fprintf(stderr, "txt2img.yaml fp16 vs fp32 on cuda: PSNR %.1f dB (tol 30)\n",
          psnr);
  ASSERT(psnr >= 30);
  weft__png_image_free(&a), weft__png_image_free(&b);
  free(g), free(ck), free(d32), free(d16);
}

/* The VAE decode's biggest convolution at 512x512 (3x3, 128 channels: a
 * 604 MB im2col in 16 bits) asks for at most 64 MiB of scratch, and its
 * column blocks give what one block does: a 128-channel 3x3 conv over a
 * 192x192 map (a 85 MB im2col: two blocks under the cap) against the same
 * conv with a caller scratch of 4096 columns (9 blocks), both in fp16.
 * Each output column is the same dot product, so the two agree within
 * 1e-6 of the output's scale (bit for bit where cuBLASLt keeps its
 * summation order across the block widths; printed). */
TEST(vae_conv_scratch_is_bounded_and_column_blocks_agree_on_cuda) {
  weft_backend *g = gpu();
  ASSERT_OK(weft_cuda_set_precision(g, WEFT_CUDA_FP16));
  ASSERT_OK(weft_cuda_set_conv_algo(g, WEFT_CUDA_CONV_IM2COL));
  weft_conv2d_args a = {.batch = 1,
                        .c_in = 128,
                        .h_in = 512,
                        .w_in = 512,
                        .c_out = 128,
                        .k_h = 3,
                        .k_w = 3,
                        .stride_h = 1,
                        .stride_w = 1,
                        .pad_top = 1,
                        .pad_left = 1,
                        .pad_bottom = 1,
                        .pad_right = 1};
  size_t need = g->iface->conv2d_scratch_bytes(g, &a);
  fprintf(stderr,
          "device: VAE 512x512 3x3x128 conv scratch %.1f MiB (im2col %.0f)\n",
          (double)need / 1048576.0, 1152.0 * 512 * 512 * 2 / 1048576.0);
  ASSERT(need > 0 && need <= ((size_t)64 << 20));
  a.h_in = a.w_in = 192;
  const int64_t k = 1152, n = 192 * 192, nx = 128 * n, nw = 128 * k,
                ny = 128 * n;
  float *x = malloc(sizeof(float) * nx), *w = malloc(sizeof(float) * nw);
  float *y1 = malloc(sizeof(float) * ny), *y2 = malloc(sizeof(float) * ny);
  ASSERT(x && w && y1 && y2);
  uint64_t s = 7;
  for (int64_t i = 0; i < nx; i++)
    s = s * 6364136223846793005ull + 1,
    x[i] = (float)(s >> 40) / 8388608.0f - 1;
  for (int64_t i = 0; i < nw; i++)
    s = s * 6364136223846793005ull + 1,
    w[i] = ((float)(s >> 40) / 8388608.0f - 1) * 0.03f;
  float *dx = g->iface->buffer_alloc(g, sizeof(float) * nx),
        *dw = g->iface->buffer_alloc(g, sizeof(float) * nw),
        *dy = g->iface->buffer_alloc(g, sizeof(float) * ny);
  const size_t sb = (size_t)(k * 4096) * 2;
  void *scr = g->iface->buffer_alloc(g, sb);
  ASSERT(dx && dw && dy && scr);
  ASSERT_OK(g->iface->buffer_copy(g, dx, x, sizeof(float) * nx,
                                  WEFT_COPY_HOST_TO_DEVICE));
  ASSERT_OK(g->iface->buffer_copy(g, dw, w, sizeof(float) * nw,
                                  WEFT_COPY_HOST_TO_DEVICE));
  a.x = dx, a.weight = dw, a.y = dy;
  ASSERT_OK(g->iface->conv2d(g, &a));
  ASSERT_OK(g->iface->buffer_copy(g, y1, dy, sizeof(float) * ny,
                                  WEFT_COPY_DEVICE_TO_HOST));
  a.scratch = scr, a.scratch_bytes = sb;
  ASSERT_OK(g->iface->conv2d(g, &a));
  ASSERT_OK(g->iface->buffer_copy(g, y2, dy, sizeof(float) * ny,
                                  WEFT_COPY_DEVICE_TO_HOST));
  bool same = !memcmp(y1, y2, sizeof(float) * ny);
  fprintf(stderr, "conv 3x3x128 192x192 fp16: 9 column blocks vs 2: %s\n",
          same ? "bit-identical" : "DIFFERS (tolerance below)");
  expect("conv column blocks vs fewer (relative)", rel_err(y2, y1, ny), 1e-6);
  g->iface->buffer_free(g, dx), g->iface->buffer_free(g, dw);
  g->iface->buffer_free(g, dy), g->iface->buffer_free(g, scr);
  free(x), free(w), free(y1), free(y2);
  weft_backend_free(g);
}

/* ---- 16-bit activations on the emulated device (no GPU needed) ----------
 * The emulated device keeps activations in fp16 as a CUDA backend does by
 * default in fp16 precision (weft_emulated_set_act_dtype): the models'
 * 16-bit paths -- buffer sizes, the conversions where inputs come in and
 * outputs go out, the fp32 timesteps -- run here, against the CPU within
 * TOL_FP16_REL of each output's scale, and the results must differ from
 * the CPU's (the rounding really happened).  The activations' high-water
 * of a UNet call must be well under the fp32 one's. */
static void act16_case(const char *what, const float *g, const float *c,
                       int64_t n) {
  double r = rel_err(g, c, n);
  expect(what, r, TOL_FP16_REL);
  ASSERT(memcmp(g, c, (size_t)n * 4) != 0);
}

TEST(models_with_16_bit_activations_on_an_emulated_device_match_the_cpu) {
  weft_backend *e = emu(), *e32 = emu(), *c = cpu();
  ASSERT_OK(weft_emulated_set_act_dtype(e, WEFT_F16));
  ASSERT_EQ(weft_backend_act_dtype(e), WEFT_F16);
  ASSERT_EQ(weft_backend_act_size(e), 2);
  ASSERT_EQ(weft_emulated_set_act_dtype(c, WEFT_F16), WEFT_EINVAL);
  model me, m32, mc;
  model_open(&me, SD_LAYOUT_LDM, e);
  model_open(&m32, SD_LAYOUT_LDM, e32);
  model_open(&mc, SD_LAYOUT_LDM, NULL);
  /* CLIP */
  weft_st_file *io = fx_open("clip_io.safetensors");
  const weft_st_tensor *ids64 = get(io, "input_ids");
  int32_t ids[77];
  input_ids(ids64, ids, 77);
  float hh[77 * 32], hc[77 * 32], ph[32], pc[32];
  ASSERT_OK(sd_clip_forward(me.clip, e, ids, 1, 0, hh, ph));
  ASSERT_OK(sd_clip_forward(mc.clip, c, ids, 1, 0, hc, pc));
  act16_case("clip hidden, fp16 activations (relative)", hh, hc, 77 * 32);
  act16_case("clip pooled, fp16 activations (relative)", ph, pc, 32);
  weft_st_close(io);
  /* UNet, and its activations' high-water against fp32 ones */
  io = fx_open("unet_io.safetensors");
  const weft_st_tensor *x = get(io, "a/sample"), *t = get(io, "a/timestep"),
                       *ctx = get(io, "a/encoder_hidden_states");
  int64_t n = (int64_t)(x->nbytes / 4);
  float *oh = malloc((size_t)n * 4), *oc = malloc((size_t)n * 4);
  uint64_t base16 = weft_emulated_live_bytes(e),
           base32 = weft_emulated_live_bytes(e32);
  weft_emulated_peak_reset(e), weft_emulated_peak_reset(e32);
  ASSERT_OK(sd_unet_forward(me.unet, e, x->data, x->shape[0], x->shape[2],
                            x->shape[3], t->data, ctx->data, ctx->shape[1],
                            NULL, oh));
  ASSERT_OK(sd_unet_forward(m32.unet, e32, x->data, x->shape[0], x->shape[2],
                            x->shape[3], t->data, ctx->data, ctx->shape[1],
                            NULL, oc));
  uint64_t act16 = weft_emulated_peak_bytes(e) - base16;
  uint64_t act32 = weft_emulated_peak_bytes(e32) - base32;
  fprintf(stderr, "unet activations' high-water: %llu bytes fp16, %llu fp32\n",
          (unsigned long long)act16, (unsigned long long)act32);
  ASSERT(act16 * 4 < act32 * 3);
  ASSERT_OK(sd_unet_forward(mc.unet, c, x->data, x->shape[0], x->shape[2],
                            x->shape[3], t->data, ctx->data, ctx->shape[1],
                            NULL, oc));
  act16_case("unet, fp16 activations (relative)", oh, oc, n);
  free(oh), free(oc);
  weft_st_close(io);
  /* VAE encode and decode */
  io = fx_open("vae_io.safetensors");
  const weft_st_tensor *img = get(io, "b/image"), *lat = get(io, "b/latent");
  float mh[8 * 4 * 6], mc8[8 * 4 * 6], dh[3 * 32 * 48], dc[3 * 32 * 48];
  ASSERT_OK(sd_vae_encode(me.vae, e, img->data, 1, 32, 48, mh));
  ASSERT_OK(sd_vae_encode(mc.vae, c, img->data, 1, 32, 48, mc8));
  act16_case("vae encode, fp16 activations (relative)", mh, mc8, 8 * 4 * 6);
  ASSERT_OK(sd_vae_decode(me.vae, e, lat->data, 1, 4, 6, dh));
  ASSERT_OK(sd_vae_decode(mc.vae, c, lat->data, 1, 4, 6, dc));
  act16_case("vae decode, fp16 activations (relative)", dh, dc, 3 * 32 * 48);
  weft_st_close(io);
  model_close(&me), model_close(&m32), model_close(&mc);
  ASSERT_EQ(weft_emulated_live_buffers(e), 0);
  weft_backend_free(c), weft_backend_free(e), weft_backend_free(e32);
}
