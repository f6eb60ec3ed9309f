/* test_sd_models.c - the CLIP text encoder, UNet and VAE against
 * transformers/diffusers outputs on the tiny SD1.5 fixture (fp32 compute,
 * fp16 weights), from both the single-file and the diffusers layout. */
#include "kernels/cpu/cpu.h"
#include "sd_fixture.h"

/* fp32 compute against fp32 torch with the same (fp16-exact) weights */
#define TOL 1e-4

static weft_backend *backend(void) {
  weft_backend *be = weft_backend_cpu_new(2);
  ASSERT(be != NULL);
  return be;
}

static void check_clip(sd_layout layout) {
  fx_model m;
  fx_model_open(&m, layout);
  ASSERT_EQ(m.ck.clip.hidden, 32);
  ASSERT_EQ(m.ck.clip.layers, 2);
  sd_clip *clip = NULL;
  int r = sd_clip_load(&m.ck, &clip);
  if (r) fprintf(stderr, "%s\n", m.ck.err);
  ASSERT_OK(r);
  weft_st_file *io = fx_open("clip_io.safetensors");
  const weft_st_tensor *ids64 = weft_st_find(io, "input_ids");
  int64_t batch = ids64->shape[0];
  int32_t *ids = malloc((size_t)(batch * 77) * sizeof *ids);
  for (int64_t i = 0; i < batch * 77; i++) {
    int64_t v;
    memcpy(&v, (const char *)ids64->data + 8 * i, 8);
    ids[i] = (int32_t)v;
  }
  weft_backend *be = backend();
  float *hid = malloc((size_t)(batch * 77 * 32) * sizeof *hid);
  float *pooled = malloc((size_t)(batch * 32) * sizeof *pooled);
  ASSERT_OK(sd_clip_forward(clip, be, ids, batch, 0, hid, pooled));
  const weft_st_tensor *want = weft_st_find(io, "last_hidden_state");
  double d = max_abs_diff(hid, want->data, batch * 77 * 32);
  fprintf(stderr, "clip last_hidden_state max diff %.3g\n", d);
  ASSERT(d <= TOL);
  want = weft_st_find(io, "pooled_output");
  d = max_abs_diff(pooled, want->data, batch * 32);
  ASSERT(d <= TOL);
  ASSERT_OK(sd_clip_forward(clip, be, ids, batch, -2, hid, NULL));
  want = weft_st_find(io, "clip_skip_2");
  d = max_abs_diff(hid, want->data, batch * 77 * 32);
  fprintf(stderr, "clip skip 2 max diff %.3g\n", d);
  ASSERT(d <= TOL);
  free(ids), free(hid), free(pooled);
  weft_backend_free(be);
  weft_st_close(io);
  sd_clip_free(clip);
  fx_model_close(&m);
}

TEST(clip_matches_transformers_single_file) { check_clip(SD_LAYOUT_LDM); }
TEST(clip_matches_transformers_diffusers_folder) {
  check_clip(SD_LAYOUT_DIFFUSERS);
}

static void check_unet(sd_layout layout) {
  fx_model m;
  fx_model_open(&m, layout);
  ASSERT_EQ(m.ck.unet.n_levels, 2);
  ASSERT_EQ(m.ck.unet.layers_per_block, 2);
  ASSERT(m.ck.unet.attn[0] && !m.ck.unet.attn[1]);
  sd_unet *unet = NULL;
  int r = sd_unet_load(&m.ck, &unet);
  if (r) fprintf(stderr, "%s\n", m.ck.err);
  ASSERT_OK(r);
  weft_st_file *io = fx_open("unet_io.safetensors");
  weft_backend *be = backend();
  const char *cases[] = {"a", "b", "c"};
  for (int c = 0; c < 3; c++) {
    char key[64];
    snprintf(key, sizeof key, "%s/sample", cases[c]);
    const weft_st_tensor *x = weft_st_find(io, key);
    snprintf(key, sizeof key, "%s/timestep", cases[c]);
    const weft_st_tensor *t = weft_st_find(io, key);
    snprintf(key, sizeof key, "%s/encoder_hidden_states", cases[c]);
    const weft_st_tensor *ctx = weft_st_find(io, key);
    snprintf(key, sizeof key, "%s/out", cases[c]);
    const weft_st_tensor *want = weft_st_find(io, key);
    ASSERT(x && t && ctx && want);
    int64_t n = (int64_t)(want->nbytes / 4);
    float *out = malloc((size_t)n * sizeof *out);
    ASSERT_OK(sd_unet_forward(unet, be, x->data, x->shape[0], x->shape[2],
                              x->shape[3], t->data, ctx->data, ctx->shape[1],
                              NULL, out));
    double d = max_abs_diff(out, want->data, n);
    fprintf(stderr, "unet case %s max diff %.3g\n", cases[c], d);
    ASSERT(d <= TOL);
    free(out);
  }
  weft_backend_free(be);
  weft_st_close(io);
  sd_unet_free(unet);
  fx_model_close(&m);
}

TEST(unet_matches_diffusers_single_file) { check_unet(SD_LAYOUT_LDM); }

/* The UNet's maps channels last between its layers (as on CUDA), through
 * the CPU's channels-last ops */
TEST(unet_channels_last_matches_diffusers) {
  setenv("WEFT_SD_CL", "1", 1);
  check_unet(SD_LAYOUT_LDM);
  unsetenv("WEFT_SD_CL");
}
TEST(unet_matches_diffusers_diffusers_folder) {
  check_unet(SD_LAYOUT_DIFFUSERS);
}

static void check_vae(sd_layout layout) {
  fx_model m;
  fx_model_open(&m, layout);
  sd_vae *vae = NULL;
  int r = sd_vae_load(&m.ck, &vae);
  if (r) fprintf(stderr, "%s\n", m.ck.err);
  ASSERT_OK(r);
  ASSERT_EQ(sd_vae_factor(vae), 8);
  weft_st_file *io = fx_open("vae_io.safetensors");
  weft_backend *be = backend();
  const char *cases[] = {"a", "b"};
  for (int c = 0; c < 2; c++) {
    char key[64];
    snprintf(key, sizeof key, "%s/image", cases[c]);
    const weft_st_tensor *img = weft_st_find(io, key);
    snprintf(key, sizeof key, "%s/moments", cases[c]);
    const weft_st_tensor *mom = weft_st_find(io, key);
    snprintf(key, sizeof key, "%s/latent", cases[c]);
    const weft_st_tensor *lat = weft_st_find(io, key);
    snprintf(key, sizeof key, "%s/decoded", cases[c]);
    const weft_st_tensor *dec = weft_st_find(io, key);
    ASSERT(img && mom && lat && dec);
    int64_t nm = (int64_t)(mom->nbytes / 4), nd = (int64_t)(dec->nbytes / 4);
    float *moments = malloc((size_t)nm * sizeof(float));
    float *decoded = malloc((size_t)nd * sizeof(float));
    ASSERT_OK(sd_vae_encode(vae, be, img->data, img->shape[0], img->shape[2],
                            img->shape[3], moments));
    double d = max_abs_diff(moments, mom->data, nm);
    fprintf(stderr, "vae encode %s max diff %.3g\n", cases[c], d);
    ASSERT(d <= TOL);
    ASSERT_OK(sd_vae_decode(vae, be, lat->data, lat->shape[0], lat->shape[2],
                            lat->shape[3], decoded));
    d = max_abs_diff(decoded, dec->data, nd);
    fprintf(stderr, "vae decode %s max diff %.3g\n", cases[c], d);
    ASSERT(d <= TOL);
    free(moments), free(decoded);
  }
  weft_backend_free(be);
  weft_st_close(io);
  sd_vae_free(vae);
  fx_model_close(&m);
}

TEST(vae_matches_diffusers_single_file) { check_vae(SD_LAYOUT_LDM); }

/* The decoder's maps channels last between its layers (as on CUDA), here
 * through the CPU's channels-last ops: diffusers' values, the same
 * tolerance */
TEST(vae_channels_last_matches_diffusers) {
  setenv("WEFT_SD_CL", "1", 1);
  check_vae(SD_LAYOUT_LDM);
  unsetenv("WEFT_SD_CL");
}
TEST(vae_matches_diffusers_diffusers_folder) {
  check_vae(SD_LAYOUT_DIFFUSERS);
}

TEST(unused_tensors_are_named) {
  fx_model m;
  fx_model_open(&m, SD_LAYOUT_LDM);
  sd_unet *unet = NULL;
  sd_clip *clip = NULL;
  ASSERT_OK(sd_unet_load(&m.ck, &unet));
  ASSERT_OK(sd_clip_load(&m.ck, &clip));
  char buf[1024];
  /* the VAE was not loaded: its tensors are reported, by name */
  int n = sd_ckpt_unused(&m.ck, buf, sizeof buf);
  int vae = 0;
  for (int32_t i = 0; i < weft_st_count(m.files[0]); i++)
    vae += !strncmp(weft_st_at(m.files[0], i)->key, "first_stage_model.", 18);
  ASSERT_EQ(n, vae);
  ASSERT(vae > 100);
  ASSERT(strncmp(buf, "first_stage_model.", 18) == 0);
  ASSERT_CONTAINS(buf, ", ...");
  sd_vae *v = NULL;
  ASSERT_OK(sd_vae_load(&m.ck, &v));
  ASSERT_EQ(sd_ckpt_unused(&m.ck, buf, sizeof buf), 0);
  ASSERT_STR_EQ(buf, "");
  sd_unet_free(unet), sd_clip_free(clip), sd_vae_free(v);
  fx_model_close(&m);
}

TEST(missing_tensor_is_named) {
  fx_model m;
  fx_model_open(&m, SD_LAYOUT_LDM);
  float *w = NULL;
  ASSERT_EQ(sd_weight(&m.ck, SD_UNET, "down_blocks.0.resnets.0.conv9.weight", 0,
                      &w),
            WEFT_ENOENT);
  ASSERT_CONTAINS(m.ck.err, "sd15_tiny.safetensors: missing tensor "
                            "'model.diffusion_model.input_blocks.1.0.conv9."
                            "weight'");
  /* a wrong element count names the tensor and both counts */
  ASSERT_EQ(sd_weight(&m.ck, SD_UNET, "conv_in.weight", 7, &w), WEFT_EFORMAT);
  ASSERT_CONTAINS(m.ck.err, "tensor 'model.diffusion_model.input_blocks.0.0."
                            "weight' has 1152 elements, the architecture "
                            "needs 7");
  fx_model_close(&m);
}

/* A large 16-bit tensor converts on several threads, in slices: the
 * masters equal the scalar conversion of every element, bit for bit, for
 * f16 and bf16, with the tensor's data at an odd address of the file (a
 * mapped file's tensors may start at any byte). */
TEST(large_16_bit_tensors_convert_in_slices_exactly) {
  const int64_t n = 3000001; /* slices of 1M elements and a remainder */
  for (int bf = 0; bf < 2; bf++) {
    char header[160];
    int hl = snprintf(header, sizeof header,
                      "{\"big\":{\"dtype\":\"%s\",\"shape\":[%lld],"
                      "\"data_offsets\":[0,%lld]}}",
                      bf ? "BF16" : "F16", (long long)n, (long long)(2 * n));
    if (hl % 2 == 0) header[hl++] = ' '; /* odd: the data starts misaligned */
    size_t len = 8 + (size_t)hl + 2 * (size_t)n;
    unsigned char *buf = malloc(len);
    uint64_t h64 = (uint64_t)hl;
    memcpy(buf, &h64, 8);
    memcpy(buf + 8, header, (size_t)hl);
    unsigned char *data = buf + 8 + hl;
    for (int64_t i = 0; i < n; i++) {
      uint16_t v = (uint16_t)(i * 40503u);
      memcpy(data + 2 * i, &v, 2);
    }
    char err[512];
    weft_st_file *f = NULL;
    ASSERT_OK(weft_st_open_memory(buf, len, "big.safetensors", &f, err,
                                  sizeof err));
    ASSERT(((uintptr_t)weft_st_find(f, "big")->data & 1) == 1);
    sd_ckpt ck;
    memset(&ck, 0, sizeof ck);
    ck.layout = SD_LAYOUT_DIFFUSERS;
    ck.files[SD_UNET] = fx_file(f);
    ck.has[SD_UNET] = true;
    float *w = NULL;
    ASSERT_OK(sd_weight(&ck, SD_UNET, "big", n, &w));
    for (int64_t i = 0; i < n; i++) {
      uint16_t v = (uint16_t)(i * 40503u);
      float want = bf ? weft_bf16_to_f32(v) : weft_f16_to_f32(v);
      ASSERT(memcmp(&w[i], &want, 4) == 0);
    }
    free(w); /* the models own their masters; the registry names them */
    sd_ckpt_free_params(&ck);
    sd_ckpt_release(&ck);
    weft_st_close(f);
    free(buf);
  }
}
