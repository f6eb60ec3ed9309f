/* test_trajectories.c - every sampler on the tiny UNet against ComfyUI's
 * KSampler path as the fixture script ran it (trajectories.safetensors):
 * the same start, UNet timesteps, CFG and noise give the same x after every
 * step.  Tolerance: the reference itself moves by up to 2.1e-4 between
 * float32 and float64 (|x| up to ~80), so 1e-5 relative plus 1e-3. */
#include "../models/sd_fixture.h"
#include "rng.h"
#include "samplers.h"
#include "schedule.h"

typedef struct run {
  sd_denoiser den;
  const weft_schedule *sched;
  /* noise: recorded tensors replayed in order, or a torch generator */
  const float *recorded;
  int64_t n_recorded, used;
  weft_torch_gen gen;
  bool use_gen;
  /* trajectory check */
  const float *want_x;
  int64_t n, steps;
  double worst;
  const int64_t *want_t;
  int64_t n_calls, calls;
} run;

static int den_cb(void *user, const float *x, float sigma, float *out) {
  run *r = user;
  if (r->want_t && r->calls < r->n_calls)
    ASSERT_EQ(weft_schedule_timestep(r->sched, sigma), r->want_t[r->calls]);
  r->calls++;
  return sd_denoise(&r->den, x, sigma, out);
}

static int noise_cb(void *user, float s, float sn, float *out) {
  (void)s, (void)sn;
  run *r = user;
  if (r->use_gen) {
    weft_torch_randn(&r->gen, out, r->n);
    return 0;
  }
  ASSERT(r->used < r->n_recorded);
  memcpy(out, r->recorded + r->used * r->n, (size_t)r->n * sizeof *out);
  r->used++;
  return 0;
}

static int step_cb(void *user, int k, int total, const float *x) {
  run *r = user;
  ASSERT_EQ(total, r->steps);
  const float *w = r->want_x + (int64_t)k * r->n;
  for (int64_t i = 0; i < r->n; i++) {
    double d = fabs((double)x[i] - w[i]);
    double tol = 1e-3 + 1e-5 * fabs(w[i]);
    if (!(d <= tol)) {
      fprintf(stderr, "step %d [%lld]: %.7g want %.7g\n", k, (long long)i,
              x[i], w[i]);
      ASSERT(d <= tol);
    }
    if (d > r->worst) r->worst = d;
  }
  return 0;
}

static void check(const char *sampler, const char *sched_name,
                  const char *variant) {
  fx_model m;
  fx_model_open(&m, SD_LAYOUT_DIFFUSERS);
  sd_unet *unet = NULL;
  ASSERT_OK(sd_unet_load(&m.ck, &unet));
  weft_backend *be = weft_backend_cpu_new(2);
  weft_schedule sched;
  weft_schedule_init(&sched, 0.00085, 0.012);
  weft_st_file *f = fx_open("trajectories.safetensors");
  char pre[128], key[192];
  snprintf(pre, sizeof pre, "%s%s/%s/", sampler, variant, sched_name);
#define T(name) (snprintf(key, sizeof key, "%s%s", pre, name), weft_st_find(f, key))
  const weft_st_tensor *sig = T("sigmas"), *xs = T("x"), *out = T("out");
  const weft_st_tensor *mt = T("model_timesteps"), *nz = T("noise");
  ASSERT(sig && xs && out && mt);
  const weft_st_tensor *pos = weft_st_find(f, "positive");
  const weft_st_tensor *neg = weft_st_find(f, "negative");
  const weft_st_tensor *noise = weft_st_find(f, "noise");
  const float cfg = *(const float *)weft_st_find(f, "cfg")->data;
  int ns = (int)sig->shape[0];
  const float *sigmas = sig->data;
  /* our scheduler gives the same sigmas */
  float mine[64];
  bool discard = !strcmp(sampler, "dpm_2") || !strcmp(sampler, "dpm_2_ancestral") ||
                 !strcmp(sampler, "uni_pc");
  int steps = discard ? ns - 1 : ns - 1;
  int n2 = weft_ksampler_sigmas(&sched, sched_name, sampler, steps, 1.0, mine, 64);
  ASSERT_EQ(n2, ns);
  for (int i = 0; i < ns; i++) ASSERT_NEAR(mine[i], sigmas[i], 1e-6 * (1 + sigmas[i]));
  int64_t shape[4] = {1, 4, 8, 8};
  run r = {.sched = &sched, .n = 256, .steps = ns - 1, .want_x = xs->data,
           .want_t = mt->data, .n_calls = mt->shape[0]};
  ASSERT_OK(sd_denoiser_init(&r.den, unet, be, &sched, SD_PRED_EPS, shape, cfg,
                             neg->data, 77, pos->data, 77));
  if (!strcmp(variant, ".randn") || (nz && !strstr(sampler, "sde"))) {
    r.use_gen = true; /* ComfyUI's CPU noise sampler: seed + 1 */
    weft_torch_gen_seed(&r.gen, 43);
  } else if (nz) {
    r.recorded = nz->data; /* torchsde's Brownian draws, replayed */
    r.n_recorded = nz->shape[0];
  }
  float x[256], start[256];
  weft_sampler_start(x, noise->data, NULL, 256, sigmas[0],
                     weft_schedule_sigma_max(&sched));
  memcpy(start, x, sizeof x);
  /* the fixture's x[0] is the start (uni_pc: in VP space) */
  const float *x0 = xs->data;
  float vp = !strcmp(sampler, "uni_pc") ? sqrtf(1.0f + sigmas[0] * sigmas[0]) : 1.0f;
  for (int i = 0; i < 256; i++) ASSERT_NEAR(start[i] / vp, x0[i], 1e-4 * (1 + fabs(x0[i])));
  weft_sampler_io io = {256, den_cb, noise_cb, step_cb, &r};
  ASSERT_OK(weft_sample(sampler, &io, x, sigmas, ns));
  ASSERT_EQ(r.calls, r.n_calls);
  if (nz && !r.use_gen) ASSERT_EQ(r.used, r.n_recorded);
  double d = max_abs_diff(x, out->data, 256);
  fprintf(stderr, "%s%s/%s: out max diff %.3g, trajectory worst %.3g\n",
          sampler, variant, sched_name, d, r.worst);
  ASSERT(d <= 2e-3);
#undef T
  sd_denoiser_free(&r.den);
  weft_st_close(f);
  weft_backend_free(be);
  sd_unet_free(unet);
  fx_model_close(&m);
}

#define BOTH(name, variant)                                                    \
  check(name, "normal", variant);                                              \
  check(name, "karras", variant)

TEST(euler_matches_comfyui) { BOTH("euler", ""); }
TEST(ddim_matches_comfyui) { BOTH("ddim", ""); }
TEST(euler_ancestral_matches_comfyui) { BOTH("euler_ancestral", ""); }
TEST(heun_matches_comfyui) { BOTH("heun", ""); }
TEST(dpm_2_matches_comfyui) { BOTH("dpm_2", ""); }
TEST(dpm_2_ancestral_matches_comfyui) { BOTH("dpm_2_ancestral", ""); }
TEST(lms_matches_comfyui) { BOTH("lms", ""); }
TEST(dpmpp_2m_matches_comfyui) { BOTH("dpmpp_2m", ""); }
TEST(dpmpp_2m_sde_matches_comfyui_with_its_brownian_noise) {
  BOTH("dpmpp_2m_sde", "");
}
TEST(dpmpp_2m_sde_matches_comfyui_with_default_noise) {
  BOTH("dpmpp_2m_sde", ".randn");
}
TEST(dpmpp_sde_matches_comfyui_with_its_brownian_noise) {
  BOTH("dpmpp_sde", "");
}
TEST(dpmpp_sde_matches_comfyui_with_default_noise) {
  BOTH("dpmpp_sde", ".randn");
}
TEST(ddpm_matches_comfyui) { BOTH("ddpm", ""); }
TEST(uni_pc_matches_comfyui) { BOTH("uni_pc", ""); }
