/* test_controlnet.c - the ControlNet (nodes/sd/controlnet_model.c) and its
 * nodes (control_nodes.c) against tests/fixtures/sd15_extras (see
 * tools/fixtures/README.md, "sd15_extras"): both layouts load the same
 * weights, residuals and the controlled UNet match diffusers, the sampler
 * trajectory with control matches ComfyUI's, and ControlNetLoader /
 * ControlNetApplyAdvanced / ControlNetApply graphs give ComfyUI's latents
 * and images (in process with probe.h's latent probe, and
 * graphs/controlnet.yaml through the weft command).
 *
 * Tolerances: model outputs 1e-4 (fp32 against fp32 torch, as
 * test_sd_models.c); trajectories 1e-3 + 1e-5 |x| per step in model scale,
 * as test_trajectories.c (the reference itself moves by 2e-4 between
 * float32 and float64), i.e. that / 0.18215 on the unscaled LATENT; images
 * 1/255 against ComfyUI's (SaveImage truncates: a value near a level may
 * fall either side) and 2/255 against diffusers' (which rounds, and starts
 * from sigma_0 instead of sqrt(1 + sigma_0^2): 0.5/255 apart). */

#include "ops.h"
#include "probe.h"
#include "samplers.h"
#include "sd_fixture.h"

#define TOL 1e-4

/* a U8 [H, W, 3] IMAGE as planes [rows, 3, H, W] of u8 / 255, repeated
 * for each row (caller frees) */
static float *hint_planes(const weft_st_tensor *t, int rows) {
  ASSERT(t->dtype == WEFT_ST_U8 && t->ndim == 3 && t->shape[2] == 3);
  int64_t H = t->shape[0], W = t->shape[1];
  float *p = malloc((size_t)(rows * 3 * H * W) * sizeof *p);
  const uint8_t *u = t->data;
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < 3; c++)
      for (int64_t i = 0; i < H * W; i++)
        p[((int64_t)r * 3 + c) * H * W + i] = (float)u[i * 3 + c] / 255.0f;
  return p;
}

/* ---- loading ------------------------------------------------------------- */

typedef struct cnet_fx {
  sd_ckpt ck;
  weft_st_file *f;
  char *json;
  sd_cnet *m;
} cnet_fx;

static void cn_open(cnet_fx *c, sd_layout layout) {
  memset(c, 0, sizeof *c);
  c->ck.layout = layout;
  bool folder = layout == SD_LAYOUT_DIFFUSERS;
  c->f = ex_open(folder ? "controlnet/diffusion_pytorch_model.safetensors"
                        : "controlnet_tiny.safetensors");
  c->ck.files[SD_CONTROL] = fx_file(c->f);
  c->ck.has[SD_CONTROL] = true;
  if (folder) {
    char cfg[4096];
    snprintf(cfg, sizeof cfg, "%s/fixtures/sd15_extras/controlnet/config.json",
             weft_test_srcdir());
    c->json = weft_test_read_file(cfg, NULL);
    ASSERT(c->json != NULL);
  }
  int r = sd_ckpt_configure_control(&c->ck, c->json);
  if (!r) r = sd_cnet_load(&c->ck, &c->m);
  if (r) fprintf(stderr, "%s\n", c->ck.err);
  ASSERT_OK(r);
}

static void cn_close(cnet_fx *c) {
  sd_cnet_free(c->m);
  sd_ckpt_free_params(&c->ck);
  sd_ckpt_release(&c->ck);
  weft_st_close(c->f);
  free(c->json);
}

TEST(both_layouts_load_the_same_controlnet) {
  cnet_fx a, b;
  cn_open(&a, SD_LAYOUT_LDM);
  cn_open(&b, SD_LAYOUT_DIFFUSERS);
  /* the architecture from the tensors equals the one from config.json */
  ASSERT_EQ(a.ck.control.n_levels, 2);
  ASSERT_EQ(a.ck.control.n_levels, b.ck.control.n_levels);
  ASSERT_EQ(a.ck.control.layers_per_block, b.ck.control.layers_per_block);
  ASSERT_EQ(a.ck.control.context_dim, 32);
  ASSERT_EQ(a.ck.control.context_dim, b.ck.control.context_dim);
  for (int i = 0; i < 2; i++) {
    ASSERT_EQ(a.ck.control.channels[i], b.ck.control.channels[i]);
    ASSERT_EQ(a.ck.control.attn[i], b.ck.control.attn[i]);
    ASSERT_EQ(a.ck.control.heads[i], b.ck.control.heads[i]);
  }
  ASSERT_EQ(a.ck.control.mid_attn, b.ck.control.mid_attn);
  ASSERT_EQ(a.ck.n_hint, 4);
  ASSERT_EQ(b.ck.n_hint, 4);
  static const int widths[4] = {16, 32, 48, 64};
  for (int i = 0; i < 4; i++) {
    ASSERT_EQ(a.ck.hint_channels[i], widths[i]);
    ASSERT_EQ(b.ck.hint_channels[i], widths[i]);
  }
  ASSERT_EQ(sd_cnet_hint_factor(a.m), 8);
  /* every tensor of both files read (178 in the original layout), and the
   * same weights under every name */
  char buf[1024];
  ASSERT_EQ(sd_ckpt_unused(&a.ck, buf, sizeof buf), 0);
  ASSERT_EQ(sd_ckpt_unused(&b.ck, buf, sizeof buf), 0);
  ASSERT_EQ(a.ck.n_params, 178);
  ASSERT_EQ(a.ck.n_params, b.ck.n_params);
  ASSERT_EQ(weft_st_count(a.f), 178);
  for (int i = 0; i < a.ck.n_params; i++) {
    const sd_param *p = &a.ck.params[i];
    const sd_param *q = sd_ckpt_param(&b.ck, SD_CONTROL, p->name);
    if (!q) fprintf(stderr, "diffusers layout lacks '%s'\n", p->name);
    ASSERT(q != NULL);
    ASSERT_EQ(p->numel, q->numel);
    ASSERT_EQ(memcmp(p->data, q->data, (size_t)p->numel * sizeof(float)), 0);
  }
  cn_close(&a), cn_close(&b);
}

/* the residuals for controlnet_io's call: [2, ...] each, strength 0.7 */
static void residuals(sd_cnet *m, weft_st_file *io, sd_cnet_out *out) {
  weft_backend *be = weft_backend_cpu_new(2);
  float *hint = hint_planes(ex_get(io, "hint"), 2);
  memset(out, 0, sizeof *out);
  float strength = *ex_ref(io, "conditioning_scale", 1);
  ASSERT_OK(sd_cnet_forward(m, be, ex_ref(io, "sample", 512), 2, 8, 8,
                            ex_ref(io, "timestep", 2),
                            ex_ref(io, "encoder_hidden_states", 2 * 77 * 32),
                            77, hint, strength, out));
  free(hint);
  weft_backend_free(be);
}

static void check_residuals(sd_layout layout) {
  cnet_fx c;
  cn_open(&c, layout);
  weft_st_file *io = ex_open("controlnet_io.safetensors");
  sd_cnet_out o;
  residuals(c.m, io, &o);
  ASSERT_EQ(o.n, 6);
  for (int i = 0; i < 6; i++) {
    char key[64];
    snprintf(key, sizeof key, "down_residuals.%d", i);
    const weft_st_tensor *t = ex_get(io, key);
    ASSERT_EQ(o.down_numel[i] * 4, (int64_t)t->nbytes);
    double d = max_abs_diff(o.down[i], t->data, o.down_numel[i]);
    fprintf(stderr, "%s max diff %.3g\n", key, d);
    ASSERT(d <= TOL);
  }
  const weft_st_tensor *mid = ex_get(io, "mid_residual");
  ASSERT_EQ(o.mid_numel * 4, (int64_t)mid->nbytes);
  double d = max_abs_diff(o.mid, mid->data, o.mid_numel);
  fprintf(stderr, "mid_residual max diff %.3g\n", d);
  ASSERT(d <= TOL);
  sd_cnet_out_free(&o);
  weft_st_close(io);
  cn_close(&c);
}

TEST(residuals_match_diffusers_single_file) {
  check_residuals(SD_LAYOUT_LDM);
}
TEST(residuals_match_diffusers_diffusers_folder) {
  check_residuals(SD_LAYOUT_DIFFUSERS);
}

/* chained ControlNets add their strength-scaled residuals (control_merge) */
TEST(chained_residuals_add) {
  cnet_fx c;
  cn_open(&c, SD_LAYOUT_LDM);
  weft_st_file *io = ex_open("controlnet_io.safetensors");
  weft_backend *be = weft_backend_cpu_new(2);
  float *hint = hint_planes(ex_get(io, "hint"), 2);
  sd_cnet_out o;
  memset(&o, 0, sizeof o);
  const float *x = ex_ref(io, "sample", 512), *t = ex_ref(io, "timestep", 2);
  const float *ctx = ex_ref(io, "encoder_hidden_states", 2 * 77 * 32);
  ASSERT_OK(sd_cnet_forward(c.m, be, x, 2, 8, 8, t, ctx, 77, hint, 0.5f, &o));
  ASSERT_OK(sd_cnet_forward(c.m, be, x, 2, 8, 8, t, ctx, 77, hint, 0.2f, &o));
  for (int i = 0; i < 6; i++) {
    char key[64];
    snprintf(key, sizeof key, "down_residuals.%d", i);
    ASSERT(max_abs_diff(o.down[i], ex_ref(io, key, 0), o.down_numel[i]) <= TOL);
  }
  ASSERT(max_abs_diff(o.mid, ex_ref(io, "mid_residual", 0), o.mid_numel) <=
         TOL);
  sd_cnet_out_free(&o);
  free(hint);
  weft_backend_free(be);
  weft_st_close(io);
  cn_close(&c);
}

TEST(unet_with_control_matches_diffusers) {
  cnet_fx c;
  cn_open(&c, SD_LAYOUT_LDM);
  fx_model m;
  fx_model_open(&m, SD_LAYOUT_LDM);
  sd_unet *unet = NULL;
  ASSERT_OK(sd_unet_load(&m.ck, &unet));
  weft_st_file *io = ex_open("controlnet_io.safetensors");
  weft_backend *be = weft_backend_cpu_new(2);
  sd_cnet_out o;
  residuals(c.m, io, &o);
  float out[512];
  const float *x = ex_ref(io, "sample", 512), *t = ex_ref(io, "timestep", 2);
  const float *ctx = ex_ref(io, "encoder_hidden_states", 2 * 77 * 32);
  sd_control ctl = {(const float *const *)o.down, o.n, o.mid};
  ASSERT_OK(sd_unet_forward(unet, be, x, 2, 8, 8, t, ctx, 77, &ctl, out));
  double d = max_abs_diff(out, ex_ref(io, "unet_out", 512), 512);
  fprintf(stderr, "unet_out with control max diff %.3g\n", d);
  ASSERT(d <= TOL);
  /* control moved it: the residuals were used */
  ASSERT(max_abs_diff(out, ex_ref(io, "unet_out_no_control", 512), 512) > 0.5);
  ASSERT_OK(sd_unet_forward(unet, be, x, 2, 8, 8, t, ctx, 77, NULL, out));
  ASSERT(max_abs_diff(out, ex_ref(io, "unet_out_no_control", 512), 512) <= TOL);
  sd_cnet_out_free(&o);
  weft_backend_free(be);
  weft_st_close(io);
  sd_unet_free(unet);
  sd_ckpt_free_params(&m.ck);
  fx_model_close(&m);
  cn_close(&c);
}

/* ComfyUI's hint resize for an 8x8 latent: common_upscale(nearest-exact,
 * center) of a 48x80 hint to 64x64, plane by plane as the apply path does */
TEST(hint_resize_matches_comfyui) {
  weft_st_file *io = ex_open("controlnet_io.safetensors");
  const weft_st_tensor *in = ex_get(io, "hint_preprocess/in");
  const weft_st_tensor *want = ex_get(io, "hint_preprocess/out");
  ASSERT_EQ(in->shape[0], 48);
  ASSERT_EQ(in->shape[1], 80);
  float *src = hint_planes(in, 1), *dst = malloc(3 * 64 * 64 * sizeof *dst);
  for (int c = 0; c < 3; c++)
    ASSERT_OK(weft__image_scale(src + c * 48 * 80, 48, 80, 1, dst + c * 64 * 64,
                                64, 64, WEFT__RESIZE_NEAREST_EXACT, 1, NULL));
  const uint8_t *w = want->data;
  for (int c = 0; c < 3; c++)
    for (int i = 0; i < 64 * 64; i++)
      ASSERT_EQ(dst[c * 64 * 64 + i], (float)w[i * 3 + c] / 255.0f);
  free(src), free(dst);
  weft_st_close(io);
}

/* ---- the sampler with control, through the core API ---------------------- */

typedef struct ctl_run {
  sd_denoiser den;
  sd_cnet *cn;
  weft_backend *be;
  const weft_st_tensor *hint;
  float strength;
  double lo, hi; /* percent_to_sigma(end), (start) */
  const uint8_t *active;
  const int64_t *timesteps;
  const weft_schedule *sched;
  int calls, n_calls;
  const float *want_x;
  double worst;
} ctl_run;

/* ComfyUI's get_control: active unless sigma > hi or sigma < lo; the
 * reference's own record of each call says which calls had control */
static int ctl_cb(void *user, const float *x_in, int64_t rows, bool cond_only,
                  int64_t h, int64_t w, const float *t, const float *ctx,
                  int64_t tokens, float sigma, sd_cnet_out *out) {
  ctl_run *r = user;
  ASSERT(!cond_only);
  ASSERT(r->calls < r->n_calls);
  bool on = !(sigma > r->hi || sigma < r->lo);
  ASSERT_EQ(on, r->active[r->calls]);
  ASSERT_EQ(t[0], r->timesteps[r->calls]);
  r->calls++;
  if (!on) return 0;
  float *hint = hint_planes(r->hint, (int)rows);
  int rc = sd_cnet_forward(r->cn, r->be, x_in, rows, h, w, t, ctx, tokens, hint,
                           r->strength, out);
  free(hint);
  return rc;
}

static int step_cb(void *user, int k, int total, const float *x) {
  ctl_run *r = user;
  (void)total;
  const float *want = r->want_x + (int64_t)k * 256;
  for (int i = 0; i < 256; i++) {
    double d = fabs((double)x[i] - want[i]);
    ASSERT(d <= 1e-3 + 1e-5 * fabs(want[i]));
    if (d > r->worst) r->worst = d;
  }
  return 0;
}

static int den_cb(void *user, const float *x, float sigma, float *out) {
  ctl_run *r = user;
  return sd_denoise(&r->den, x, sigma, out);
}

/* controlnet_e2e's ComfyUI run `pre` (comfy/, comfy_percent/) through
 * sd_denoise with a ControlNet: sigmas, model timesteps, which calls have
 * control, x after every step, the final latent */
static void check_trajectory(const char *pre, const char *sched_name,
                             int steps) {
  cnet_fx c;
  cn_open(&c, SD_LAYOUT_DIFFUSERS);
  fx_model m;
  fx_model_open(&m, SD_LAYOUT_LDM);
  sd_unet *unet = NULL;
  ASSERT_OK(sd_unet_load(&m.ck, &unet));
  weft_st_file *f = ex_open("controlnet_e2e.safetensors");
  weft_schedule sched;
  weft_schedule_init(&sched, 0.00085, 0.012);
  char key[128];
#define K(name) (snprintf(key, sizeof key, "%s/%s", pre, name), key)
  const weft_st_tensor *sig = ex_get(f, K("sigmas"));
  ASSERT_EQ(sig->shape[0], steps + 1);
  float mine[64];
  ASSERT_EQ(
      weft_ksampler_sigmas(&sched, sched_name, "euler", steps, 1.0, mine, 64),
      steps + 1);
  for (int i = 0; i <= steps; i++)
    ASSERT_NEAR(mine[i], ((const float *)sig->data)[i], 1e-6 * (1 + mine[i]));
  const double *range = ex_get(f, K("percent_range_sigmas"))->data;
  ctl_run r = {.cn = c.m,
               .be = weft_backend_cpu_new(2),
               .hint = ex_get(f, "hint"),
               .strength = 0.7f,
               .lo = range[1],
               .hi = range[0],
               .active = ex_get(f, K("control_active"))->data,
               .timesteps = ex_get(f, K("model_timesteps"))->data,
               .sched = &sched,
               .n_calls = steps,
               .want_x = ex_ref(f, K("x"), (steps + 1) * 256)};
  int64_t shape[4] = {1, 4, 8, 8};
  float cfg = *ex_ref(f, "cfg", 1);
  ASSERT_OK(sd_denoiser_init(&r.den, unet, r.be, &sched, SD_PRED_EPS, shape,
                             cfg, ex_ref(f, "negative", 77 * 32), 77,
                             ex_ref(f, "positive", 77 * 32), 77));
  r.den.control = ctl_cb;
  r.den.control_user = &r;
  float x[256];
  weft_sampler_start(x, ex_ref(f, "noise", 256), NULL, 256, mine[0],
                     weft_schedule_sigma_max(&sched));
  ASSERT(max_abs_diff(x, r.want_x, 256) <= 1e-4);
  weft_sampler_io io = {256, den_cb, NULL, step_cb, &r};
  ASSERT_OK(weft_sample("euler", &io, x, mine, steps + 1));
  ASSERT_EQ(r.calls, steps);
  double d = max_abs_diff(x, ex_ref(f, K("latents_final"), 256), 256);
  fprintf(stderr, "%s: trajectory worst %.3g, final max diff %.3g\n", pre,
          r.worst, d);
  ASSERT(d <= 2e-3);
#undef K
  sd_denoiser_free(&r.den);
  weft_backend_free(r.be);
  weft_st_close(f);
  sd_unet_free(unet);
  sd_ckpt_free_params(&m.ck);
  fx_model_close(&m);
  cn_close(&c);
}

TEST(sampling_with_control_matches_comfyui) {
  check_trajectory("comfy", "simple", 8);
}

TEST(sampling_with_control_percent_range_matches_comfyui) {
  check_trajectory("comfy_percent", "normal", 6);
}

/* ---- through graphs ------------------------------------------------------ */

/* controlnet_probe.yaml (ControlNetApplyAdvanced, ControlNetApply, chained)
 * with the hint <temp dir>/<hint_png>; its probes write adv, old, chain */
static void run_e2e(const char *cnet, const char *hint_png, int steps,
                    const char *sched, double start, double end) {
  char a[6][4200];
  const char *src = weft_test_srcdir();
  snprintf(a[0], 4200, "controlnet=%s/fixtures/sd15_extras/%s", src, cnet);
  snprintf(a[1], 4200, "hint=%s/%s", weft_test_tmpdir(), hint_png);
  snprintf(a[2], 4200, "steps=%d", steps);
  snprintf(a[3], 4200, "scheduler=%s", sched);
  snprintf(a[4], 4200, "start=%g", start);
  snprintf(a[5], 4200, "end=%g", end);
  const char *sets[] = {a[0], a[1], a[2], a[3], a[4], a[5], NULL};
  ASSERT_OK(probe_run_graph("controlnet_probe.yaml", sets, NULL, NULL));
}

TEST(graph_controlnet_apply_advanced_matches_comfyui) {
  weft_st_file *f = ex_open("controlnet_e2e.safetensors");
  probe_write_png(ex_get(f, "hint"), NULL, "hint.png");
  run_e2e("controlnet_tiny.safetensors", "hint.png", 8, "simple", 0, 1);
  float *adv = probe_read("adv", 256);
  float *old = probe_read("old", 256);
  const float *want = ex_ref(f, "comfy/latent_out", 256);
  probe_check_latent(adv, want, 256, "ControlNetApplyAdvanced(0.7, 0, 1)");
  /* the deprecated node controls the negative too: the same */
  probe_check_latent(old, want, 256, "ControlNetApply(0.7)");
  /* chained at 0.5 and 0.2: their residuals add (control_merge) */
  float *chain = probe_read("chain", 256);
  probe_check_latent(chain, want, 256,
                     "chained ControlNetApplyAdvanced(0.5), (0.2)");
  free(adv), free(old), free(chain);
  weft_st_close(f);
}

TEST(graph_controlnet_percent_range_matches_comfyui) {
  weft_st_file *f = ex_open("controlnet_e2e.safetensors");
  probe_write_png(ex_get(f, "hint"), NULL, "hint.png");
  /* the diffusers folder this time */
  run_e2e("controlnet", "hint.png", 6, "normal", 0.1, 0.7);
  float *adv = probe_read("adv", 256);
  probe_check_latent(adv, ex_ref(f, "comfy_percent/latent_out", 256), 256,
                     "ControlNetApplyAdvanced(0.7, 0.1, 0.7)");
  free(adv);
  weft_st_close(f);
}

/* A 48x80 hint is center-cropped and resized to the latent's 64x64 at each
 * model call: the same latents as the resized hint given directly. */
TEST(graph_hint_is_resized_as_comfyui) {
  weft_st_file *io = ex_open("controlnet_io.safetensors");
  probe_write_png(ex_get(io, "hint_preprocess/in"), NULL, "in.png");
  probe_write_png(ex_get(io, "hint_preprocess/out"), NULL, "out.png");
  run_e2e("controlnet_tiny.safetensors", "in.png", 3, "normal", 0, 1);
  float *a = probe_read("adv", 256);
  run_e2e("controlnet_tiny.safetensors", "out.png", 3, "normal", 0, 1);
  float *b = probe_read("adv", 256);
  ASSERT_EQ(memcmp(a, b, 256 * sizeof *a), 0);
  free(a), free(b);
  weft_st_close(io);
}

/* ---- graphs/controlnet.yaml through the weft command --------------------- */

TEST(controlnet_yaml_matches_comfyui_and_diffusers) {
  weft_st_file *f = ex_open("controlnet_e2e.safetensors");
  probe_write_png(ex_get(f, "hint"), NULL, "hint.png");
  char g[4096], ck[4096], cn[4096], hi[4200], out[4200];
  const char *src = weft_test_srcdir(), *tmp = weft_test_tmpdir();
  snprintf(g, sizeof g, "%s/../graphs/controlnet.yaml", src);
  snprintf(ck, sizeof ck, "ckpt=%s/fixtures/sd15_tiny/diffusers", src);
  snprintf(cn, sizeof cn, "controlnet=%s/fixtures/sd15_extras/controlnet", src);
  snprintf(hi, sizeof hi, "hint=%s/hint.png", tmp);
  snprintf(out, sizeof out, "%s/out", tmp);
  const char *a[] = {g,
                     "--set",
                     ck,
                     "--set",
                     cn,
                     "--set",
                     hi,
                     "--set",
                     "prompt=a photo of a cat",
                     "--set",
                     "negative=blurry, low quality",
                     "--set",
                     "seed=42",
                     "--set",
                     "steps=8",
                     "--set",
                     "cfg=5",
                     "--set",
                     "sampler=euler",
                     "--set",
                     "scheduler=simple",
                     "--set",
                     "strength=0.7",
                     "--set",
                     "width=64",
                     "--set",
                     "height=64",
                     "--output-dir",
                     out,
                     "-q",
                     NULL};
  probe_weft_run(a, NULL);
  char png[4300];
  snprintf(png, sizeof png, "%s/controlnet_00001_.png", out);
  probe_compare_png(png, ex_get(f, "comfy/image"), 1, "vs ComfyUI");
  probe_compare_png(png, ex_get(f, "diffusers/image"), 2, "vs diffusers");
  weft_st_close(f);
}

TEST(controlnet_yaml_validates) {
  probe_weft_validate("controlnet.yaml");
}
