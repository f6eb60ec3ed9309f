/* test_plan_sd.c - planned activations in the sd models (nodes/sd/sd_plan.h)
 * on the tiny SD1.5 fixture: a sampler's UNet calls from one arena give the
 * unplanned latents byte for byte, and after the first step the backend
 * sees no allocation at all; the VAE planned before it runs is exact too;
 * through an emulated device the recordings take the device paths. */
#include <math.h>

#include "../models/sd_fixture.h"
#include "counting.h"
#include "kernels/emulated.h"
#include "sd_device.h"
#include "sd_plan.h"

enum { STEPS = 5 };
static const float SIGMAS[STEPS] = {14.6f, 6.1f, 2.2f, 0.7f, 0.1f};

static float frand(uint64_t *s) {
  *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
  return (float)((*s >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

typedef struct unet_case {
  fx_model m;
  sd_unet *unet;
  weft_schedule sched;
  int64_t shape[4];
  float *uncond, *cond, *x0;
  int64_t tokens, dim, n;
} unet_case;

static void case_open(unet_case *u, int64_t h, int64_t w) {
  memset(u, 0, sizeof *u);
  fx_model_open(&u->m, SD_LAYOUT_LDM);
  int r = sd_unet_load(&u->m.ck, &u->unet);
  if (r) fprintf(stderr, "%s\n", u->m.ck.err);
  ASSERT_OK(r);
  weft_schedule_init(&u->sched, 0.00085, 0.012);
  const sd_unet_cfg *c = sd_unet_config(u->unet);
  int64_t shape[4] = {1, c->in_channels, h, w};
  memcpy(u->shape, shape, sizeof shape);
  u->tokens = 77;
  u->dim = c->context_dim;
  u->n = shape[0] * shape[1] * shape[2] * shape[3];
  u->uncond = malloc((size_t)(u->tokens * u->dim) * sizeof(float));
  u->cond = malloc((size_t)(u->tokens * u->dim) * sizeof(float));
  u->x0 = malloc((size_t)u->n * sizeof(float));
  uint64_t s = 0x9e3779b97f4a7c15ull;
  for (int64_t i = 0; i < u->tokens * u->dim; i++) {
    u->uncond[i] = frand(&s);
    u->cond[i] = frand(&s);
  }
  for (int64_t i = 0; i < u->n; i++)
    u->x0[i] = frand(&s) * SIGMAS[0];
}

static void case_close(unet_case *u) {
  free(u->uncond), free(u->cond), free(u->x0);
  sd_unet_free(u->unet);
  fx_model_close(&u->m);
}

/* An euler-like trajectory of STEPS model calls on be; planned: through
 * sd_denoise_plan as KSampler does.  traj gets x after every step
 * [STEPS][n]; allocs[k] the inner backend's buffer_alloc + buffer_free
 * calls in step k (be must be a counting backend, or NULL allocs). */
/* STEPS euler steps from x (updated) through d, or through p when not
 * NULL; traj gets x after every step; allocs[k] (when not NULL) the
 * counting backend be's buffer_alloc + buffer_free calls in step k. */
static void euler(unet_case *u, sd_denoiser *d, sd_denoise_plan *p, float *x,
                  float *traj, weft_backend *be, int64_t *allocs) {
  float *den = malloc((size_t)u->n * sizeof *den);
  for (int k = 0; k < STEPS; k++) {
    int64_t before = allocs ? CNT(be)->allocs + CNT(be)->frees : 0;
    ASSERT_OK(p ? sd_denoise_planned(p, x, SIGMAS[k], den)
                : sd_denoise(d, x, SIGMAS[k], den));
    if (allocs) allocs[k] = CNT(be)->allocs + CNT(be)->frees - before;
    float next = k + 1 < STEPS ? SIGMAS[k + 1] : 0.0f;
    for (int64_t i = 0; i < u->n; i++)
      x[i] = den[i] + (x[i] - den[i]) * (next / SIGMAS[k]);
    memcpy(traj + k * u->n, x, (size_t)u->n * sizeof *x);
  }
  free(den);
}

static void sample(unet_case *u, weft_backend *be, bool planned, float *traj,
                   int64_t *allocs, weft_rec_stats *st) {
  sd_denoiser d;
  ASSERT_OK(sd_denoiser_init(&d, u->unet, be, &u->sched, SD_PRED_EPS, u->shape,
                             7.5f, u->uncond, u->tokens, u->cond, u->tokens));
  sd_denoise_plan p;
  memset(&p, 0, sizeof p);
  if (planned) ASSERT_OK(sd_denoise_plan_init(&p, &d));
  float *x = malloc((size_t)u->n * sizeof *x);
  memcpy(x, u->x0, (size_t)u->n * sizeof *x);
  euler(u, &d, planned ? &p : NULL, x, traj, be, allocs);
  ASSERT(d.be == be); /* the recorder is hooked in per call only */
  if (planned && st) ASSERT(sd_denoise_plan_stats(&p, 0, st));
  sd_denoise_plan_free(&p);
  free(x);
  sd_denoiser_free(&d);
}

static void print_stats(const char *what, const weft_rec_stats *st) {
  fprintf(stderr,
          "%s: arena %llu, lower bound %llu, naive %llu bytes; %d buffers, "
          "%d ops\n",
          what, (unsigned long long)st->arena.arena,
          (unsigned long long)st->arena.lower_bound,
          (unsigned long long)st->arena.naive, st->n_tensors, st->n_ops);
}

TEST(sampler_from_one_arena_gives_the_unplanned_latents_byte_for_byte) {
  unet_case u;
  case_open(&u, 8, 8);
  weft_backend *be = cnt_backend_new(false);
  float *want = malloc((size_t)(STEPS * u.n) * sizeof *want);
  float *got = malloc((size_t)(STEPS * u.n) * sizeof *got);
  int64_t allocs[STEPS], plain[STEPS];
  weft_rec_stats st;
  sample(&u, be, false, want, plain, NULL);
  sample(&u, be, true, got, allocs, &st);
  ASSERT(memcmp(got, want, (size_t)(STEPS * u.n) * sizeof *got) == 0);
  print_stats("UNet, CFG batch 2 at 8x8", &st);
  /* step 1 runs as before (its buffers, then the arena); every later step
   * allocates and frees nothing, where the unplanned steps do */
  ASSERT_EQ(allocs[0], plain[0] + 1);
  for (int k = 1; k < STEPS; k++) {
    ASSERT(plain[k] > 0);
    ASSERT_EQ(allocs[k], 0);
  }
  ASSERT_EQ(st.replays, STEPS - 1);
  ASSERT_EQ(st.misses, 0);
  ASSERT_EQ(st.diverged, 0);
  ASSERT_EQ(st.arena_allocs, 1);
  ASSERT_EQ(st.arena_bytes, st.arena.arena);
  ASSERT(st.arena.arena >= st.arena.lower_bound);
  ASSERT(st.arena.arena < st.arena.naive);
  ASSERT_EQ(CNT(be)->live, 0);
  free(want), free(got);
  weft_backend_free(be);
  case_close(&u);
}

TEST(dry_recording_of_a_unet_call_plans_what_the_run_records) {
  unet_case u;
  case_open(&u, 8, 16);
  weft_backend *be = cnt_backend_new(false);
  float *traj = malloc((size_t)(STEPS * u.n) * sizeof *traj);
  weft_rec_stats run;
  sample(&u, be, true, traj, NULL, &run);
  /* plan mode's recording: nothing computed, nothing from the backend */
  sd_denoiser d;
  ASSERT_OK(sd_denoiser_init(&d, u.unet, be, &u.sched, SD_PRED_EPS, u.shape,
                             7.5f, u.uncond, u.tokens, u.cond, u.tokens));
  weft_rec *r = weft_rec_new(be);
  float *den = malloc((size_t)u.n * sizeof *den);
  int64_t allocs = CNT(be)->allocs;
  ASSERT_OK(weft_rec_begin(r, WEFT_REC_DRY));
  d.be = weft_rec_backend(r);
  ASSERT_OK(sd_denoise(&d, u.x0, SIGMAS[0], den));
  ASSERT_OK(weft_rec_end(r));
  ASSERT_EQ(CNT(be)->allocs, allocs);
  weft_rec_stats dry;
  weft_rec_stats_get(r, &dry);
  print_stats("UNet DRY", &dry);
  ASSERT_EQ(dry.arena.arena, run.arena.arena);
  ASSERT_EQ(dry.arena.lower_bound, run.arena.lower_bound);
  ASSERT_EQ(dry.arena.naive, run.arena.naive);
  ASSERT_EQ(dry.n_tensors, run.n_tensors);
  ASSERT_EQ(dry.n_ops, run.n_ops);
  int32_t nd, nr;
  const weft_plan_tensor *td = weft_rec_tensors(r, &nd);
  ASSERT_EQ(nd, dry.n_tensors);
  (void)nr;
  for (int32_t i = 0; i < nd; i++)
    ASSERT(td[i].last >= td[i].first);
  weft_rec_free(r);
  free(den), free(traj);
  d.be = be;
  sd_denoiser_free(&d);
  weft_backend_free(be);
  case_close(&u);
}

typedef struct dec_args {
  sd_vae *vae;
  const float *lat;
  float *img;
} dec_args;

static int dec_fn(void *user, weft_backend *be) {
  dec_args *a = user;
  return sd_vae_decode(a->vae, be, a->lat, 1, 8, 8, a->img);
}

TEST(vae_decode_planned_before_it_runs_is_exact_with_one_allocation) {
  fx_model m;
  fx_model_open(&m, SD_LAYOUT_LDM);
  sd_vae *vae = NULL;
  ASSERT_OK(sd_vae_load(&m.ck, &vae));
  const sd_vae_cfg *c = sd_vae_config(vae);
  int64_t f = sd_vae_factor(vae), nl = c->latent_channels * 64,
          ni = 3 * 64 * f * f;
  float *lat = malloc((size_t)nl * sizeof *lat);
  float *want = malloc((size_t)ni * sizeof *want);
  float *got = malloc((size_t)ni * sizeof *got);
  uint64_t s = 7;
  for (int64_t i = 0; i < nl; i++)
    lat[i] = frand(&s) * 3.0f;
  weft_backend *be = cnt_backend_new(false);
  ASSERT_OK(sd_vae_decode(vae, be, lat, 1, 8, 8, want));
  int64_t allocs = CNT(be)->allocs, frees = CNT(be)->frees;
  dec_args a = {vae, lat, got};
  weft_rec_stats st;
  ASSERT_OK(sd_plan_call(be, dec_fn, &a, false, &st));
  ASSERT(memcmp(got, want, (size_t)ni * sizeof *got) == 0);
  ASSERT_EQ(CNT(be)->allocs - allocs, 1); /* the arena */
  ASSERT_EQ(CNT(be)->frees - frees, 1);
  print_stats("VAE decode 8x8 latent", &st);
  ASSERT(st.arena.arena >= st.arena.lower_bound);
  ASSERT(st.arena.arena < st.arena.naive);
  /* dry_only: recorded, nothing run, nothing allocated */
  memset(got, 0, (size_t)ni * sizeof *got);
  ASSERT_OK(sd_plan_call(be, dec_fn, &a, true, NULL));
  ASSERT_EQ(CNT(be)->allocs - allocs, 1);
  ASSERT(got[0] == 0.0f && got[ni - 1] == 0.0f);
  free(lat), free(want), free(got);
  weft_backend_free(be);
  sd_vae_free(vae);
  fx_model_close(&m);
}

TEST(on_a_device_backend_planned_sampling_is_exact_and_dry_touches_nothing) {
  unet_case u;
  case_open(&u, 8, 8);
  weft_backend *cpu = weft_backend_cpu_new(2);
  float *want = malloc((size_t)(STEPS * u.n) * sizeof *want);
  float *got = malloc((size_t)(STEPS * u.n) * sizeof *got);
  sample(&u, cpu, false, want, NULL, NULL);
  weft_backend *emu = weft_backend_emulated_new(2);
  ASSERT_OK(sd_unet_to_backend(u.unet, emu));
  int64_t live = weft_emulated_live_buffers(emu);
  weft_rec_stats st;
  sample(&u, emu, true, got, NULL, &st);
  ASSERT(memcmp(got, want, (size_t)(STEPS * u.n) * sizeof *got) == 0);
  ASSERT_EQ(st.misses, 0);
  ASSERT_EQ(st.diverged, 0);
  /* a step copies x and t in and the output out: the contexts went to the
   * device once, when the denoiser started (sd_unet_keep_ctx) */
  ASSERT_EQ(st.h2d_bytes, (uint64_t)(2 * u.n + 2) * sizeof(float));
  ASSERT_EQ(st.d2h_bytes, (uint64_t)(2 * u.n) * sizeof(float));
  ASSERT_EQ(weft_emulated_live_buffers(emu), live);
  /* a DRY call hands out unmapped addresses: a host access would fault */
  sd_denoiser d;
  ASSERT_OK(sd_denoiser_init(&d, u.unet, emu, &u.sched, SD_PRED_EPS, u.shape,
                             7.5f, u.uncond, u.tokens, u.cond, u.tokens));
  ASSERT_EQ(weft_emulated_live_buffers(emu), live + 1); /* the contexts */
  weft_rec *r = weft_rec_new(emu);
  float *den = malloc((size_t)u.n * sizeof *den);
  ASSERT_OK(weft_rec_begin(r, WEFT_REC_DRY));
  d.be = weft_rec_backend(r);
  ASSERT_OK(sd_denoise(&d, u.x0, SIGMAS[0], den));
  ASSERT_OK(weft_rec_end(r));
  weft_rec_stats dry;
  weft_rec_stats_get(r, &dry);
  ASSERT_EQ(dry.arena.arena, st.arena.arena);
  ASSERT_EQ(dry.h2d_bytes, st.h2d_bytes);
  ASSERT_EQ(weft_emulated_live_buffers(emu), live + 1);
  weft_rec_free(r);
  d.be = emu;
  sd_denoiser_free(&d);
  ASSERT_EQ(weft_emulated_live_buffers(emu), live);
  free(den), free(want), free(got);
  sd_unet_free(u.unet); /* its device weights, before the backend */
  u.unet = NULL;
  weft_backend_free(emu);
  weft_backend_free(cpu);
  case_close(&u);
}

/* ---- a sampler with a ControlNet ----------------------------------------- */

/* The tiny ControlNet (single file) on be (NULL: the host). */
typedef struct cnet_case {
  sd_ckpt ck;
  weft_st_file *f;
  sd_cnet *m;
  weft_backend *be;
  float *hint;      /* [2, 3, 8f, 8f] */
  float lo, hi;     /* the sigmas it acts at */
  int with, without; /* calls */
} cnet_case;

static void cnet_case_open(cnet_case *k, weft_backend *be, float lo,
                           float hi) {
  memset(k, 0, sizeof *k);
  k->ck.layout = SD_LAYOUT_LDM;
  k->f = fx_open("../sd15_extras/controlnet_tiny.safetensors");
  k->ck.files[SD_CONTROL] = fx_file(k->f);
  k->ck.has[SD_CONTROL] = true;
  int r = sd_ckpt_configure_control(&k->ck, NULL);
  if (!r) r = sd_cnet_load(&k->ck, &k->m);
  if (r) fprintf(stderr, "%s\n", k->ck.err);
  ASSERT_OK(r);
  if (be) ASSERT_OK(sd_cnet_to_backend(k->m, be));
  k->be = be;
  k->lo = lo, k->hi = hi;
  int64_t side = 8 * sd_cnet_hint_factor(k->m), n = 2 * 3 * side * side;
  k->hint = malloc((size_t)n * sizeof *k->hint);
  uint64_t s = 77;
  for (int64_t i = 0; i < n; i++)
    k->hint[i] = frand(&s) * 0.5f + 0.5f;
}

static void cnet_case_close(cnet_case *k) {
  free(k->hint);
  sd_cnet_free(k->m);
  sd_ckpt_free_params(&k->ck);
  sd_ckpt_release(&k->ck);
  weft_st_close(k->f);
}

/* The denoiser's control callback: the ControlNet between lo and hi. */
static int cnet_cb(void *user, const float *x_in, int64_t rows, bool cond_only,
                   int64_t h, int64_t w, const float *t, const float *ctx,
                   int64_t tokens, float sigma, sd_cnet_out *out) {
  cnet_case *k = user;
  (void)cond_only;
  if (sigma < k->lo || sigma > k->hi) {
    k->without++;
    return 0;
  }
  k->with++;
  return sd_cnet_forward(k->m, k->be, x_in, rows, h, w, t, ctx, tokens,
                         k->hint, 0.8f, out);
}

/* The trajectory with the ControlNet k on be: unplanned, or planned as
 * KSampler under a budget does (sd_denoise_plan_dry before step 1).
 * st[i]: recorder i's stats (replays -1 when it was never made);
 * *first: the recorder the DRY call chose. */
static void sample_ctl(unet_case *u, weft_backend *be, cnet_case *k,
                       bool planned, float *traj, weft_rec_stats st[2],
                       int *first, uint64_t *arena) {
  sd_denoiser d;
  ASSERT_OK(sd_denoiser_init(&d, u->unet, be, &u->sched, SD_PRED_EPS, u->shape,
                             7.5f, u->uncond, u->tokens, u->cond, u->tokens));
  d.control = cnet_cb;
  d.control_user = k;
  sd_denoise_plan p;
  memset(&p, 0, sizeof p);
  float *x = malloc((size_t)u->n * sizeof *x);
  memcpy(x, u->x0, (size_t)u->n * sizeof *x);
  if (planned) {
    ASSERT_OK(sd_denoise_plan_init(&p, &d));
    ASSERT_OK(sd_denoise_plan_dry(&p, x, SIGMAS[0], arena));
    *first = p.last;
    ASSERT(p.rec[*first] != NULL && p.rec[1 - *first] == NULL);
    weft_rec_stats s;
    ASSERT(sd_denoise_plan_stats(&p, *first, &s));
    ASSERT_EQ(*arena, s.arena.arena);
    ASSERT_EQ(s.replays, 0);
    ASSERT_EQ(s.arena_allocs, 0); /* made by the first replay */
  }
  euler(u, &d, planned ? &p : NULL, x, traj, be, NULL);
  for (int i = 0; i < 2 && planned; i++)
    if (!sd_denoise_plan_stats(&p, i, &st[i])) st[i].replays = -1;
  sd_denoise_plan_free(&p);
  free(x);
  sd_denoiser_free(&d);
}

/* Before step 1 the sampler's call is recorded DRY on the recorder its
 * ControlNet residuals choose (the test's callback computes them),
 * so step 1 replays from the arena too: every step of that recorder
 * replays, none misses; the other recorder records when a step first needs
 * it.  The latents equal the CPU's unplanned ones bit for bit.  Through
 * the emulated device (its buffers fault if the host touches them). */
/* A kept context's cross-attention keys and values, made once (where the
 * attentions stack k and v: WEFT_SD_FUSE=1 on the emulated device): one
 * buffer more than the context, and the forwards that read them give the
 * bits of forwards that make their own from an unkept copy of the context
 * -- both sequences (CFG); the second alone (cfg 1: to rounding, its keys
 * were a product of both); and after the weights changed (every one synced
 * again, x1.5), when the kept ones are stale and not read. */
TEST(kept_context_keys_and_values_are_made_once_and_read_while_fresh) {
  unet_case u;
  case_open(&u, 8, 8);
  setenv("WEFT_SD_FUSE", "1", 1);
  weft_backend *emu = weft_backend_emulated_new(2);
  ASSERT_OK(sd_unet_to_backend(u.unet, emu));
  unsetenv("WEFT_SD_FUSE");
  const int64_t row = u.tokens * u.dim, n = 2 * u.n;
  float *kept = malloc((size_t)(2 * row) * sizeof(float));
  float *copy = malloc((size_t)(2 * row) * sizeof(float));
  float *x = malloc((size_t)n * sizeof(float));
  float *want = malloc((size_t)n * sizeof(float));
  float *got = malloc((size_t)n * sizeof(float));
  float *first = malloc((size_t)u.n * sizeof(float));
  const float t[2] = {500.0f, 500.0f};
  memcpy(kept, u.uncond, (size_t)row * sizeof(float));
  memcpy(kept + row, u.cond, (size_t)row * sizeof(float));
  memcpy(copy, kept, (size_t)(2 * row) * sizeof(float));
  memcpy(x, u.x0, (size_t)u.n * sizeof(float));
  memcpy(x + u.n, u.x0, (size_t)u.n * sizeof(float));
  const int64_t live = weft_emulated_live_buffers(emu);
  ASSERT_OK(sd_unet_keep_ctx(u.unet, emu, kept, 2 * row, u.tokens));
  ASSERT_EQ(weft_emulated_live_buffers(emu), live + 2);
  for (int pass = 0; pass < 2; pass++) {
    if (pass == 1) { /* new weights, each synced: the kept k and v stale */
      sd_devw *dw = sd_unet_devw(u.unet);
      for (int i = 0; i < dw->n; i++) {
        if (dw->e[i].kind == SD_W_HOST) continue;
        for (int64_t j = 0; j < dw->e[i].numel; j++)
          dw->e[i].host[j] *= 1.5f;
        ASSERT_OK(sd_devw_sync(dw, dw->e[i].host));
      }
    }
    ASSERT_OK(sd_unet_forward(u.unet, emu, x, 2, 8, 8, t, copy, u.tokens, NULL,
                              want));
    ASSERT_OK(
        sd_unet_forward(u.unet, emu, x, 2, 8, 8, t, kept, u.tokens, NULL, got));
    ASSERT(memcmp(got, want, (size_t)n * sizeof *got) == 0);
    ASSERT_OK(sd_unet_forward(u.unet, emu, x, 1, 8, 8, t, copy + row, u.tokens,
                              NULL, want));
    ASSERT_OK(sd_unet_forward(u.unet, emu, x, 1, 8, 8, t, kept + row, u.tokens,
                              NULL, got));
    /* (a product over 77 rows, not 154, sums in another order: within
     * rounding, where the first sequence's keys would be far off) */
    for (int64_t i = 0; i < u.n; i++)
      ASSERT(fabsf(got[i] - want[i]) <= 1e-4f * (1 + fabsf(want[i])));
    /* the new weights changed the output */
    if (pass == 0)
      memcpy(first, got, (size_t)u.n * sizeof *got);
    else
      ASSERT(memcmp(got, first, (size_t)u.n * sizeof *got) != 0);
  }
  sd_unet_drop_ctx(u.unet);
  ASSERT_EQ(weft_emulated_live_buffers(emu), live);
  free(kept), free(copy), free(x), free(want), free(got), free(first);
  sd_unet_free(u.unet);
  u.unet = NULL;
  weft_backend_free(emu);
  case_close(&u);
}

TEST(controlnet_sampler_step_1_replays_a_dry_plan_on_a_device) {
  /* SIGMAS 14.6, 6.1, 2.2, 0.7, 0.1: the ControlNet at every step, then
   * from step 2 to step 4 only (step 1 without it) */
  static const float window[2][2] = {{0.0f, 100.0f}, {0.5f, 7.0f}};
  static const int first_want[2] = {1, 0};
  static const int replays_want[2][2] = {{-1, STEPS}, {2, 2}};
  unet_case u;
  case_open(&u, 8, 8);
  float *want = malloc((size_t)(STEPS * u.n) * sizeof *want);
  float *got = malloc((size_t)(STEPS * u.n) * sizeof *got);
  for (int c = 0; c < 2; c++) {
    weft_backend *cpu = weft_backend_cpu_new(2);
    cnet_case kc;
    cnet_case_open(&kc, NULL, window[c][0], window[c][1]);
    kc.be = cpu;
    sample_ctl(&u, cpu, &kc, false, want, NULL, NULL, NULL);
    unet_case ue;
    case_open(&ue, 8, 8);
    weft_backend *emu = weft_backend_emulated_new(2);
    ASSERT_OK(sd_unet_to_backend(ue.unet, emu));
    cnet_case ke;
    cnet_case_open(&ke, emu, window[c][0], window[c][1]);
    int64_t live = weft_emulated_live_buffers(emu);
    weft_rec_stats st[2];
    int first = -1;
    uint64_t arena = 0;
    sample_ctl(&ue, emu, &ke, true, got, st, &first, &arena);
    ASSERT(memcmp(got, want, (size_t)(STEPS * u.n) * sizeof *got) == 0);
    fprintf(stderr,
            "window [%g, %g]: DRY call on recorder %d, arena %llu bytes; "
            "replays %d / %d\n",
            window[c][0], window[c][1], first, (unsigned long long)arena,
            st[0].replays, st[1].replays);
    ASSERT_EQ(first, first_want[c]);
    ASSERT(arena > 0);
    /* the DRY call ran the ControlNet once more than the steps did */
    ASSERT_EQ(ke.with, kc.with + (first == 1));
    ASSERT_EQ(ke.without, kc.without + (first == 0));
    for (int i = 0; i < 2; i++) {
      ASSERT_EQ(st[i].replays, replays_want[c][i]);
      if (st[i].replays < 0) continue;
      ASSERT_EQ(st[i].misses, 0);
      ASSERT_EQ(st[i].diverged, 0);
      ASSERT_EQ(st[i].arena_allocs, 1);
    }
    ASSERT_EQ(weft_emulated_live_buffers(emu), live);
    cnet_case_close(&ke);
    sd_unet_free(ue.unet); /* its device weights, before the backend */
    ue.unet = NULL;
    case_close(&ue);
    weft_backend_free(emu);
    cnet_case_close(&kc);
    weft_backend_free(cpu);
  }
  free(want), free(got);
  case_close(&u);
}

/* ---- VAEEncode ------------------------------------------------------------ */

typedef struct enc_args {
  sd_vae *vae;
  const float *px;
  int64_t side;
  float *lat;
} enc_args;

static int enc_fn(void *user, weft_backend *be) {
  enc_args *a = user;
  return sd_vae_encode_one(a->vae, be, a->px, a->side, a->side, a->lat);
}

/* VAEEncode's path (nodes.c encode_pixels): sd_plan_call_vram on the
 * emulated device under a budget keeps the encode's arena plus the
 * scratch from the weights' pool before the arena is made, and gives the
 * CPU's latent bit for bit; a budget that cannot hold the VAE's largest
 * block beside them is refused, naming the encode. */
TEST(vae_encode_planned_under_a_budget_reserves_its_arena_and_is_exact) {
  fx_model m, me;
  fx_model_open(&m, SD_LAYOUT_LDM);
  fx_model_open(&me, SD_LAYOUT_LDM);
  sd_vae *vae = NULL, *vae_e = NULL;
  ASSERT_OK(sd_vae_load(&m.ck, &vae));
  ASSERT_OK(sd_vae_load(&me.ck, &vae_e));
  const int64_t side = 8 * sd_vae_factor(vae), np = 3 * side * side;
  const int64_t nl = sd_vae_config(vae)->latent_channels * 64;
  float *px = malloc((size_t)np * sizeof *px);
  float *want = malloc((size_t)nl * sizeof *want);
  float *got = malloc((size_t)nl * sizeof *got);
  uint64_t s = 11;
  for (int64_t i = 0; i < np; i++)
    px[i] = frand(&s) * 0.5f + 0.5f;
  weft_backend *cpu = weft_backend_cpu_new(2);
  ASSERT_OK(sd_vae_encode_one(vae, cpu, px, side, side, want));
  weft_backend *emu = weft_backend_emulated_new(2);
  /* a budget of the VAE's weights and 8 MiB: scratch is a third of it */
  sd_vram *probe = sd_vram_new(emu, UINT64_MAX, WEFT_F32, NULL, false);
  ASSERT_OK(sd_vae_to_vram(vae_e, probe));
  ASSERT_OK(sd_vram_commit(probe));
  uint64_t weights = sd_vram_pool_bytes(probe) + sd_vae_devw(vae_e)->f32_bytes;
  sd_vae_to_host(vae_e);
  sd_vram_release(probe);
  uint64_t budget = weights + ((uint64_t)8 << 20);
  sd_vram *vr = sd_vram_new(emu, budget, WEFT_F32, NULL, false);
  ASSERT_OK(sd_vae_to_vram(vae_e, vr));
  ASSERT_OK(sd_vram_commit(vr));
  enc_args a = {vae_e, px, side, got};
  weft_rec_stats st;
  ASSERT_OK(sd_plan_call_vram(emu, vr, sd_vae_devw(vae_e),
                              sd_vram_scratch(vr), "the VAE encode", enc_fn,
                              &a, &st));
  ASSERT(memcmp(got, want, (size_t)nl * sizeof *got) == 0);
  ASSERT(st.arena.arena > 0);
  ASSERT_EQ(sd_vram_reserved(vr), st.arena.arena + sd_vram_scratch(vr));
  ASSERT_EQ(sd_vram_scratch(vr), budget / 3);
  print_stats("VAE encode 8x8 latent", &st);
  /* no room for the largest block beside that reserve: refused by name */
  sd_vram *tight = sd_vram_new(emu, budget, WEFT_F32, NULL, false);
  sd_vae_to_host(vae_e);
  ASSERT_OK(sd_vae_to_vram(vae_e, tight));
  ASSERT_OK(sd_vram_commit(tight));
  a.vae = vae_e;
  ASSERT_EQ(sd_plan_call_vram(emu, tight, sd_vae_devw(vae_e), budget,
                              "the VAE encode", enc_fn, &a, NULL),
            WEFT_ERANGE);
  ASSERT_CONTAINS(sd_vram_error(tight), "the VAE encode");
  sd_vae_to_host(vae_e);
  sd_vram_release(tight);
  sd_vram_release(vr);
  free(px), free(want), free(got);
  sd_vae_free(vae), sd_vae_free(vae_e);
  weft_backend_free(emu);
  weft_backend_free(cpu);
  fx_model_close(&m), fx_model_close(&me);
}
