/* schedule.c - ComfyUI's sigma schedules for discrete (SD1.x/SD2.x) models:
 * comfy/model_sampling.py (ModelSamplingDiscrete), comfy/samplers.py
 * (normal, simple, ddim_uniform, beta, calculate_sigmas, KSampler.set_steps)
 * and comfy/k_diffusion/sampling.py (karras, exponential).  Arithmetic is
 * float where ComfyUI's tensors are float32, so the values agree to float
 * rounding. */
#include "schedule.h"

#include <math.h>
#include <string.h>

const char *const weft_scheduler_names[] = {
    "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform",
    "beta",   "normal",      NULL};

void weft_schedule_init(weft_schedule *s, double linear_start,
                        double linear_end) {
  /* torch.linspace(sqrt(start), sqrt(end), T, float64) ** 2; torch fills
   * the first half from the start and the second from the end */
  double a = sqrt(linear_start), b = sqrt(linear_end);
  double step = (b - a) / (WEFT_SCHED_T - 1);
  double ac = 1.0;
  for (int i = 0; i < WEFT_SCHED_T; i++) {
    double v = i < WEFT_SCHED_T / 2 ? a + step * i
                                    : b - step * (WEFT_SCHED_T - 1 - i);
    s->betas[i] = v * v;
    ac *= 1.0 - s->betas[i];
    s->alphas_cumprod[i] = ac;
    double sigma = sqrt((1.0 - ac) / ac);
    s->sigmas[i] = (float)sigma;
    s->log_sigmas[i] = (float)log(sigma);
  }
}

int weft_schedule_timestep(const weft_schedule *s, float sigma) {
  float ls = logf(sigma);
  int best = 0;
  float bd = fabsf(ls - s->log_sigmas[0]);
  for (int t = 1; t < WEFT_SCHED_T; t++) {
    float d = fabsf(ls - s->log_sigmas[t]);
    if (d < bd) {
      bd = d;
      best = t;
    }
  }
  return best;
}

float weft_schedule_sigma(const weft_schedule *s, float t) {
  if (t < 0) t = 0;
  if (t > WEFT_SCHED_T - 1) t = WEFT_SCHED_T - 1;
  int lo = (int)floorf(t), hi = (int)ceilf(t);
  float w = t - floorf(t);
  float l = (1.0f - w) * s->log_sigmas[lo] + w * s->log_sigmas[hi];
  return expf(l);
}

/* torch.linspace(start, end, n) in float: the first half counted from the
 * start, the second from the end */
static float linspace_f(float start, float end, int n, int i) {
  if (n == 1) return start;
  float step = (end - start) / (float)(n - 1);
  return i < n / 2 ? start + step * (float)i : end - step * (float)(n - 1 - i);
}

static int normal_sched(const weft_schedule *s, int steps, bool sgm,
                        float *out) {
  float start = (float)weft_schedule_timestep(s, weft_schedule_sigma_max(s));
  float end = (float)weft_schedule_timestep(s, weft_schedule_sigma_min(s));
  bool append = true;
  int n = 0;
  if (sgm) {
    for (int i = 0; i < steps; i++)
      out[n++] = weft_schedule_sigma(s, linspace_f(start, end, steps + 1, i));
  } else {
    if (fabsf(weft_schedule_sigma(s, end)) <= 1e-5f) {
      steps += 1;
      append = false;
    }
    for (int i = 0; i < steps; i++)
      out[n++] = weft_schedule_sigma(s, linspace_f(start, end, steps, i));
  }
  if (append) out[n++] = 0.0f;
  return n;
}

static int simple_sched(const weft_schedule *s, int steps, float *out) {
  double ss = (double)WEFT_SCHED_T / steps;
  int n = 0;
  for (int x = 0; x < steps; x++)
    out[n++] = s->sigmas[WEFT_SCHED_T - 1 - (int)(x * ss)];
  out[n++] = 0.0f;
  return n;
}

static int ddim_sched(const weft_schedule *s, int steps, float *out) {
  float tmp[WEFT_SCHED_T + 2];
  int n = 0, x = 1;
  if (fabsf(s->sigmas[x]) <= 1e-5f)
    steps += 1;
  else
    tmp[n++] = 0.0f;
  int ss = WEFT_SCHED_T / steps;
  if (ss < 1) ss = 1;
  for (; x < WEFT_SCHED_T; x += ss) tmp[n++] = s->sigmas[x];
  for (int i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
  return n;
}

static int karras_sched(const weft_schedule *s, int steps, float *out) {
  const double rho = 7.0;
  double smin = weft_schedule_sigma_min(s), smax = weft_schedule_sigma_max(s);
  float min_inv = (float)pow(smin, 1.0 / rho);
  float max_inv = (float)pow(smax, 1.0 / rho);
  for (int i = 0; i < steps; i++) {
    float ramp = linspace_f(0.0f, 1.0f, steps, i);
    out[i] = powf(max_inv + ramp * (min_inv - max_inv), (float)rho);
  }
  out[steps] = 0.0f;
  return steps + 1;
}

static int exponential_sched(const weft_schedule *s, int steps, float *out) {
  float a = (float)log((double)weft_schedule_sigma_max(s));
  float b = (float)log((double)weft_schedule_sigma_min(s));
  for (int i = 0; i < steps; i++) out[i] = expf(linspace_f(a, b, steps, i));
  out[steps] = 0.0f;
  return steps + 1;
}

/* ---- the beta scheduler: inverse of the regularised incomplete beta ---- */

/* continued fraction for I_x(a, b) (Lentz's method) */
static double betacf(double a, double b, double x) {
  const double tiny = 1e-300;
  double qab = a + b, qap = a + 1.0, qam = a - 1.0;
  double c = 1.0, d = 1.0 - qab * x / qap;
  if (fabs(d) < tiny) d = tiny;
  d = 1.0 / d;
  double h = d;
  for (int m = 1; m <= 500; m++) {
    int m2 = 2 * m;
    double aa = m * (b - m) * x / ((qam + m2) * (a + m2));
    d = 1.0 + aa * d;
    if (fabs(d) < tiny) d = tiny;
    c = 1.0 + aa / c;
    if (fabs(c) < tiny) c = tiny;
    d = 1.0 / d;
    h *= d * c;
    aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
    d = 1.0 + aa * d;
    if (fabs(d) < tiny) d = tiny;
    c = 1.0 + aa / c;
    if (fabs(c) < tiny) c = tiny;
    d = 1.0 / d;
    double del = d * c;
    h *= del;
    if (fabs(del - 1.0) < 1e-16) break;
  }
  return h;
}

static double betainc(double a, double b, double x) {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  double lbeta = lgamma(a + b) - lgamma(a) - lgamma(b);
  double front = exp(lbeta + a * log(x) + b * log1p(-x));
  if (x < (a + 1) / (a + b + 2)) return front * betacf(a, b, x) / a;
  return 1.0 - front * betacf(b, a, 1.0 - x) / b;
}

static double beta_ppf(double p, double a, double b) {
  if (p <= 0) return 0;
  if (p >= 1) return 1;
  /* a symmetric distribution's median is exactly 1/2: the scheduler rounds
   * 0.5 * 999 half to even, so 0.49999... would pick the wrong step */
  if (a == b && p == 0.5) return 0.5;
  if (a == b && p > 0.5) return 1.0 - beta_ppf(1.0 - p, a, b);
  double lo = 0, hi = 1;
  for (int i = 0; i < 200 && hi - lo > 1e-15; i++) {
    double mid = 0.5 * (lo + hi);
    if (betainc(a, b, mid) < p)
      lo = mid;
    else
      hi = mid;
  }
  return 0.5 * (lo + hi);
}

static int beta_sched(const weft_schedule *s, int steps, float *out) {
  const double alpha = 0.6, beta = 0.6;
  int total = WEFT_SCHED_T - 1, n = 0;
  double last = -1;
  for (int i = 0; i < steps; i++) {
    double ts = 1.0 - (double)i / steps; /* numpy linspace, endpoint=False */
    double t = rint(beta_ppf(ts, alpha, beta) * total);
    if (t != last) out[n++] = s->sigmas[(int)t];
    last = t;
  }
  out[n++] = 0.0f;
  return n;
}

int weft_scheduler_sigmas(const weft_schedule *s, const char *name, int steps,
                          float *out) {
  if (steps < 1) return 0;
  if (!strcmp(name, "normal")) return normal_sched(s, steps, false, out);
  if (!strcmp(name, "sgm_uniform")) return normal_sched(s, steps, true, out);
  if (!strcmp(name, "karras")) return karras_sched(s, steps, out);
  if (!strcmp(name, "exponential")) return exponential_sched(s, steps, out);
  if (!strcmp(name, "simple")) return simple_sched(s, steps, out);
  if (!strcmp(name, "ddim_uniform")) return ddim_sched(s, steps, out);
  if (!strcmp(name, "beta")) return beta_sched(s, steps, out);
  return -1;
}

static bool discards_penultimate(const char *sampler) {
  static const char *const names[] = {"dpm_2", "dpm_2_ancestral", "uni_pc",
                                      "uni_pc_bh2", NULL};
  for (int i = 0; sampler && names[i]; i++)
    if (!strcmp(sampler, names[i])) return true;
  return false;
}

static int calc(const weft_schedule *s, const char *sched, int steps,
                bool discard, float *out) {
  if (!discard) return weft_scheduler_sigmas(s, sched, steps, out);
  int n = weft_scheduler_sigmas(s, sched, steps + 1, out);
  if (n < 2) return n;
  out[n - 2] = out[n - 1];
  return n - 1;
}

int weft_ksampler_sigmas(const weft_schedule *s, const char *scheduler,
                         const char *sampler, int steps, double denoise,
                         float *out, int cap) {
  bool discard = discards_penultimate(sampler);
  if (denoise > 0.9999) {
    if (steps + 3 > cap) return -1;
    return calc(s, scheduler, steps, discard, out);
  }
  if (denoise <= 0.0) return 0;
  int new_steps = (int)(steps / denoise);
  if (new_steps + 3 > cap) return -1;
  int n = calc(s, scheduler, new_steps, discard, out);
  if (n <= steps + 1) return n;
  memmove(out, out + (n - (steps + 1)), (size_t)(steps + 1) * sizeof *out);
  return steps + 1;
}

int weft_sigmas_window(float *sig, int n, int start, int end,
                       bool force_full_denoise) {
  if (end >= 0 && end < n - 1) {
    n = end + 1;
    if (force_full_denoise) sig[n - 1] = 0.0f;
  }
  if (start >= 0) {
    if (start >= n - 1) return 0;
    memmove(sig, sig + start, (size_t)(n - start) * sizeof *sig);
    n -= start;
  }
  return n;
}
