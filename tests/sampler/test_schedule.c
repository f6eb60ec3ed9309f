/* test_schedule.c - the sigma table and every scheduler against ComfyUI's
 * formulas as the fixture script ran them (schedules.safetensors). */
#include <math.h>

#include "fixture.h"
#include "schedule.h"

/* float32 rounding of values up to ~15: 1e-6 relative, 1e-6 absolute */
#define CLOSE(a, b) (fabs((double)(a) - (double)(b)) <= 1e-6 * (1 + fabs(b)))

static weft_schedule sched;

static void init(void) { weft_schedule_init(&sched, 0.00085, 0.012); }

TEST(sigma_table_matches_comfyui) {
  init();
  weft_st_file *f = open_fixture("schedules.safetensors");
  int64_t n;
  const double *betas = fixture_tensor(f, "betas", &n);
  ASSERT_EQ(n, 1000);
  const double *ac = fixture_tensor(f, "alphas_cumprod", NULL);
  const float *sig = fixture_tensor(f, "sigmas", NULL);
  const float *lsig = fixture_tensor(f, "log_sigmas", NULL);
  for (int i = 0; i < 1000; i++) {
    ASSERT_NEAR(sched.betas[i], betas[i], 1e-15);
    ASSERT_NEAR(sched.alphas_cumprod[i], ac[i], 1e-14);
    ASSERT(sched.sigmas[i] == sig[i]);
    ASSERT(sched.log_sigmas[i] == lsig[i]);
  }
  ASSERT_NEAR(weft_schedule_sigma_max(&sched), 14.6146, 1e-4);
  ASSERT_NEAR(weft_schedule_sigma_min(&sched), 0.0292, 1e-4);
  weft_st_close(f);
}

TEST(sigma_to_timestep_and_back_match_comfyui) {
  init();
  weft_st_file *f = open_fixture("schedules.safetensors");
  int64_t n, m;
  const float *s = fixture_tensor(f, "sigma_to_t/sigma", &n);
  const int64_t *t = fixture_tensor(f, "sigma_to_t/t", NULL);
  for (int64_t i = 0; i < n; i++)
    ASSERT_EQ(weft_schedule_timestep(&sched, s[i]), t[i]);
  const float *tt = fixture_tensor(f, "t_to_sigma/t", &m);
  const float *ts = fixture_tensor(f, "t_to_sigma/sigma", NULL);
  for (int64_t i = 0; i < m; i++)
    ASSERT(CLOSE(weft_schedule_sigma(&sched, tt[i]), ts[i]));
  weft_st_close(f);
}

static const char *const samplers_for[] = {"euler", "dpm_2"};

/* Checks every fixture key "<sched>/<steps>[/variant]". */
static void check_scheduler(const char *name) {
  init();
  weft_st_file *f = open_fixture("schedules.safetensors");
  int checked = 0;
  for (int32_t k = 0; k < weft_st_count(f); k++) {
    const weft_st_tensor *t = weft_st_at(f, k);
    size_t ln = strlen(name);
    if (strncmp(t->key, name, ln) != 0 || t->key[ln] != '/') continue;
    int steps = atoi(t->key + ln + 1);
    const char *variant = strchr(t->key + ln + 1, '/');
    float out[4096];
    int n;
    if (!variant) {
      n = weft_ksampler_sigmas(&sched, name, samplers_for[0], steps, 1.0, out,
                               4096);
    } else if (!strcmp(variant, "/discard_penultimate")) {
      n = weft_ksampler_sigmas(&sched, name, samplers_for[1], steps, 1.0, out,
                               4096);
    } else if (!strncmp(variant, "/denoise", 8)) {
      n = weft_ksampler_sigmas(&sched, name, "euler", steps,
                               atof(variant + 8), out, 4096);
    } else if (!strncmp(variant, "/start5_end15", 13)) {
      n = weft_ksampler_sigmas(&sched, name, "euler", steps, 1.0, out, 4096);
      n = weft_sigmas_window(out, n, 5, 15, strstr(variant, "_full") != NULL);
    } else {
      fprintf(stderr, "unknown variant %s\n", t->key);
      abort();
    }
    int64_t want_n = (int64_t)(t->nbytes / 4);
    const float *want = t->data;
    if (n != want_n) fprintf(stderr, "%s: %d values, want %lld\n", t->key, n,
                             (long long)want_n);
    ASSERT_EQ(n, want_n);
    for (int i = 0; i < n; i++) {
      if (!CLOSE(out[i], want[i]))
        fprintf(stderr, "%s[%d]: %.9g want %.9g\n", t->key, i, out[i],
                want[i]);
      ASSERT(CLOSE(out[i], want[i]));
    }
    checked++;
  }
  ASSERT(checked >= 10);
  weft_st_close(f);
}

TEST(normal_matches_comfyui) { check_scheduler("normal"); }
TEST(karras_matches_comfyui) { check_scheduler("karras"); }
TEST(exponential_matches_comfyui) { check_scheduler("exponential"); }
TEST(sgm_uniform_matches_comfyui) { check_scheduler("sgm_uniform"); }
TEST(simple_matches_comfyui) { check_scheduler("simple"); }
TEST(ddim_uniform_matches_comfyui) { check_scheduler("ddim_uniform"); }
TEST(beta_matches_comfyui) { check_scheduler("beta"); }

TEST(unknown_scheduler_and_degenerate_requests) {
  init();
  float out[64];
  ASSERT_EQ(weft_scheduler_sigmas(&sched, "linearr", 10, out), -1);
  ASSERT_EQ(weft_ksampler_sigmas(&sched, "normal", "euler", 10, 0.0, out, 64),
            0);
  /* a window starting past the end leaves nothing to do */
  int n = weft_ksampler_sigmas(&sched, "normal", "euler", 10, 1.0, out, 64);
  ASSERT_EQ(n, 11);
  ASSERT_EQ(weft_sigmas_window(out, n, 10, 10000, false), 0);
}
