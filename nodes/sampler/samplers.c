/* samplers.c - ComfyUI's samplers (comfy/k_diffusion/sampling.py and
 * comfy/extra_samplers/uni_pc.py) in C.  Vector arithmetic is float, as
 * ComfyUI's float32 tensors; per-step scalars are computed from the float
 * sigmas the way the reference computes them. */
#include "samplers.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "schedule.h"
#include "weft/error.h"

const char *const weft_sampler_names[] = {
    "euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms",
    "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_sde", "ddim", "ddpm", "uni_pc",
    NULL};

typedef struct ctx {
  const weft_sampler_io *io;
  int64_t n;
  float *buf;  /* scratch: nbuf vectors of n */
  int nbuf;
} ctx;

static float *vec(ctx *c, int i) { return c->buf + (int64_t)i * c->n; }

static int step_done(ctx *c, int k, int total, const float *x) {
  return c->io->step ? c->io->step(c->io->user, k, total, x) : 0;
}

/* to_d: (x - denoised) / sigma */
static void to_d(const ctx *c, const float *x, float sigma, const float *den,
                 float *d) {
  for (int64_t i = 0; i < c->n; i++) d[i] = (x[i] - den[i]) / sigma;
}

/* get_ancestral_step(sigma_from, sigma_to, eta) */
static void ancestral(float from, float to, float eta, float *down,
                      float *up) {
  if (eta == 0.0f) {
    *down = to;
    *up = 0.0f;
    return;
  }
  float u = eta * sqrtf(to * to * (from * from - to * to) / (from * from));
  *up = u < to ? u : to;
  *down = sqrtf(to * to - *up * *up);
}

static int euler(ctx *c, float *x, const float *s, int ns) {
  float *den = vec(c, 0), *d = vec(c, 1);
  int r;
  for (int i = 0; i < ns - 1; i++) {
    if ((r = c->io->denoise(c->io->user, x, s[i], den))) return r;
    to_d(c, x, s[i], den, d);
    float dt = s[i + 1] - s[i];
    for (int64_t k = 0; k < c->n; k++) x[k] = x[k] + d[k] * dt;
    if ((r = step_done(c, i + 1, ns - 1, x))) return r;
  }
  return 0;
}

static int euler_ancestral(ctx *c, float *x, const float *s, int ns) {
  float *den = vec(c, 0), *d = vec(c, 1), *nz = vec(c, 2);
  int r;
  for (int i = 0; i < ns - 1; i++) {
    if ((r = c->io->denoise(c->io->user, x, s[i], den))) return r;
    float down, up;
    ancestral(s[i], s[i + 1], 1.0f, &down, &up);
    if (down == 0.0f) {
      memcpy(x, den, (size_t)c->n * sizeof *x);
    } else {
      to_d(c, x, s[i], den, d);
      float dt = down - s[i];
      if ((r = c->io->noise(c->io->user, s[i], s[i + 1], nz))) return r;
      for (int64_t k = 0; k < c->n; k++)
        x[k] = x[k] + d[k] * dt + nz[k] * 1.0f * up;
    }
    if ((r = step_done(c, i + 1, ns - 1, x))) return r;
  }
  return 0;
}

static int heun(ctx *c, float *x, const float *s, int ns) {
  float *den = vec(c, 0), *d = vec(c, 1), *x2 = vec(c, 2), *d2 = vec(c, 3);
  int r;
  for (int i = 0; i < ns - 1; i++) {
    if ((r = c->io->denoise(c->io->user, x, s[i], den))) return r;
    to_d(c, x, s[i], den, d);
    float dt = s[i + 1] - s[i];
    if (s[i + 1] == 0.0f) {
      for (int64_t k = 0; k < c->n; k++) x[k] = x[k] + d[k] * dt;
    } else {
      for (int64_t k = 0; k < c->n; k++) x2[k] = x[k] + d[k] * dt;
      if ((r = c->io->denoise(c->io->user, x2, s[i + 1], den))) return r;
      to_d(c, x2, s[i + 1], den, d2);
      for (int64_t k = 0; k < c->n; k++)
        x[k] = x[k] + (d[k] + d2[k]) / 2.0f * dt;
    }
    if ((r = step_done(c, i + 1, ns - 1, x))) return r;
  }
  return 0;
}

/* sigma_a.log().lerp(sigma_b.log(), 0.5).exp() */
static float log_mid(float a, float b) {
  float la = logf(a), lb = logf(b);
  return expf(la + 0.5f * (lb - la));
}

static int dpm_2(ctx *c, float *x, const float *s, int ns, bool anc) {
  float *den = vec(c, 0), *d = vec(c, 1), *x2 = vec(c, 2), *d2 = vec(c, 3),
        *nz = vec(c, 4);
  int r;
  for (int i = 0; i < ns - 1; i++) {
    if ((r = c->io->denoise(c->io->user, x, s[i], den))) return r;
    float to = s[i + 1], up = 0.0f;
    if (anc) ancestral(s[i], s[i + 1], 1.0f, &to, &up);
    to_d(c, x, s[i], den, d);
    if (to == 0.0f) {
      float dt = to - s[i];
      for (int64_t k = 0; k < c->n; k++) x[k] = x[k] + d[k] * dt;
    } else {
      float mid = log_mid(s[i], to);
      float dt1 = mid - s[i], dt2 = to - s[i];
      for (int64_t k = 0; k < c->n; k++) x2[k] = x[k] + d[k] * dt1;
      if ((r = c->io->denoise(c->io->user, x2, mid, den))) return r;
      to_d(c, x2, mid, den, d2);
      for (int64_t k = 0; k < c->n; k++) x[k] = x[k] + d2[k] * dt2;
      if (anc) {
        if ((r = c->io->noise(c->io->user, s[i], s[i + 1], nz))) return r;
        for (int64_t k = 0; k < c->n; k++) x[k] = x[k] + nz[k] * 1.0f * up;
      }
    }
    if ((r = step_done(c, i + 1, ns - 1, x))) return r;
  }
  return 0;
}

/* Integral over [t[i], t[i+1]] of the j-th Lagrange basis polynomial through
 * t[i], t[i-1], ..., t[i-order+1] (degree < 4: 4-point Gauss-Legendre is
 * exact, as scipy's quad is for the reference). */
static double lms_coeff(int order, const float *t, int i, int j) {
  static const double gx[4] = {-0.8611363115940526, -0.3399810435848563,
                               0.3399810435848563, 0.8611363115940526};
  static const double gw[4] = {0.3478548451374538, 0.6521451548625461,
                               0.6521451548625461, 0.3478548451374538};
  double a = t[i], b = t[i + 1], sum = 0;
  for (int q = 0; q < 4; q++) {
    double tau = 0.5 * (b - a) * gx[q] + 0.5 * (a + b);
    double prod = 1.0;
    for (int k = 0; k < order; k++) {
      if (k == j) continue;
      prod *= (tau - t[i - k]) / ((double)t[i - j] - t[i - k]);
    }
    sum += gw[q] * prod;
  }
  return 0.5 * (b - a) * sum;
}

static int lms(ctx *c, float *x, const float *s, int ns) {
  enum { ORDER = 4 };
  float *den = vec(c, 0);
  float *ds[ORDER]; /* ring: ds[(i) % ORDER] is step i's derivative */
  for (int k = 0; k < ORDER; k++) ds[k] = vec(c, 1 + k);
  int r;
  for (int i = 0; i < ns - 1; i++) {
    if ((r = c->io->denoise(c->io->user, x, s[i], den))) return r;
    to_d(c, x, s[i], den, ds[i % ORDER]);
    if (s[i + 1] == 0.0f) {
      memcpy(x, den, (size_t)c->n * sizeof *x);
    } else {
      int order = i + 1 < ORDER ? i + 1 : ORDER;
      for (int j = 0; j < order; j++) {
        float coeff = (float)lms_coeff(order, s, i, j);
        const float *d = ds[(i - j) % ORDER];
        for (int64_t k = 0; k < c->n; k++) x[k] = x[k] + coeff * d[k];
      }
    }
    if ((r = step_done(c, i + 1, ns - 1, x))) return r;
  }
  return 0;
}

static int dpmpp_2m(ctx *c, float *x, const float *s, int ns) {
  float *den = vec(c, 0), *old = vec(c, 1);
  bool have_old = false;
  int r;
  for (int i = 0; i < ns - 1; i++) {
    if ((r = c->io->denoise(c->io->user, x, s[i], den))) return r;
    float t = -logf(s[i]), tn = -logf(s[i + 1]);
    float h = tn - t;
    float ratio = expf(-tn) / expf(-t);
    float em = expm1f(-h);
    if (!have_old || s[i + 1] == 0.0f) {
      for (int64_t k = 0; k < c->n; k++) x[k] = ratio * x[k] - em * den[k];
    } else {
      float h_last = t - (-logf(s[i - 1]));
      float rr = h_last / h;
      float a = 1.0f + 1.0f / (2.0f * rr), b = 1.0f / (2.0f * rr);
      for (int64_t k = 0; k < c->n; k++)
        x[k] = ratio * x[k] - em * (a * den[k] - b * old[k]);
    }
    memcpy(old, den, (size_t)c->n * sizeof *old);
    have_old = true;
    if ((r = step_done(c, i + 1, ns - 1, x))) return r;
  }
  return 0;
}

static int dpmpp_2m_sde(ctx *c, float *x, const float *s, int ns) {
  const float eta = 1.0f, s_noise = 1.0f;
  float *den = vec(c, 0), *old = vec(c, 1), *nz = vec(c, 2);
  bool have_old = false;
  float h_last = 0.0f, h = 0.0f;
  int r;
  for (int i = 0; i < ns - 1; i++) {
    if ((r = c->io->denoise(c->io->user, x, s[i], den))) return r;
    if (s[i + 1] == 0.0f) {
      memcpy(x, den, (size_t)c->n * sizeof *x);
    } else {
      float ls = -logf(s[i]), lt = -logf(s[i + 1]);
      h = lt - ls;
      float h_eta = h * (eta + 1.0f);
      float alpha_t = s[i + 1] * expf(lt);
      float a = s[i + 1] / s[i] * expf(-h * eta);
      float b = alpha_t * -expm1f(-h_eta);
      for (int64_t k = 0; k < c->n; k++) x[k] = a * x[k] + b * den[k];
      if (have_old) {
        float rr = h_last / h;
        float cc = 0.5f * alpha_t * -expm1f(-h_eta) * (1.0f / rr);
        for (int64_t k = 0; k < c->n; k++)
          x[k] = x[k] + cc * (den[k] - old[k]);
      }
      if ((r = c->io->noise(c->io->user, s[i], s[i + 1], nz))) return r;
      float g = s[i + 1] * sqrtf(-expm1f(-2.0f * h * eta)) * s_noise;
      for (int64_t k = 0; k < c->n; k++) x[k] = x[k] + nz[k] * g;
    }
    memcpy(old, den, (size_t)c->n * sizeof *old);
    have_old = true;
    h_last = h;
    if ((r = step_done(c, i + 1, ns - 1, x))) return r;
  }
  return 0;
}

static int dpmpp_sde(ctx *c, float *x, const float *s, int ns) {
  const float eta = 1.0f, s_noise = 1.0f, rr = 0.5f;
  float *den = vec(c, 0), *x2 = vec(c, 1), *den2 = vec(c, 2), *nz = vec(c, 3);
  int r;
  for (int i = 0; i < ns - 1; i++) {
    if ((r = c->io->denoise(c->io->user, x, s[i], den))) return r;
    if (s[i + 1] == 0.0f) {
      memcpy(x, den, (size_t)c->n * sizeof *x);
    } else {
      float ls = -logf(s[i]), lt = -logf(s[i + 1]);
      float h = lt - ls;
      float ls1 = ls + rr * h;
      float fac = 1.0f / (2.0f * rr);
      float s1 = expf(-ls1);
      float alpha_s = s[i] * expf(ls);
      float alpha_s1 = s1 * expf(ls1);
      float alpha_t = s[i + 1] * expf(lt);
      /* step 1 */
      float sd, su;
      ancestral(expf(-ls), expf(-ls1), eta, &sd, &su);
      float h_ = -logf(sd) - ls;
      float a = (alpha_s1 / alpha_s) * expf(-h_);
      float b = alpha_s1 * expm1f(-h_);
      for (int64_t k = 0; k < c->n; k++) x2[k] = a * x[k] - b * den[k];
      if ((r = c->io->noise(c->io->user, s[i], s1, nz))) return r;
      for (int64_t k = 0; k < c->n; k++)
        x2[k] = x2[k] + alpha_s1 * nz[k] * s_noise * su;
      if ((r = c->io->denoise(c->io->user, x2, s1, den2))) return r;
      /* step 2 */
      ancestral(expf(-ls), expf(-lt), eta, &sd, &su);
      h_ = -logf(sd) - ls;
      a = (alpha_t / alpha_s) * expf(-h_);
      b = alpha_t * expm1f(-h_);
      if ((r = c->io->noise(c->io->user, s[i], s[i + 1], nz))) return r;
      for (int64_t k = 0; k < c->n; k++) {
        float dd = (1.0f - fac) * den[k] + fac * den2[k];
        x[k] = a * x[k] - b * dd + alpha_t * nz[k] * s_noise * su;
      }
    }
    if ((r = step_done(c, i + 1, ns - 1, x))) return r;
  }
  return 0;
}

static int ddpm(ctx *c, float *x, const float *s, int ns) {
  float *den = vec(c, 0), *nz = vec(c, 1);
  int r;
  for (int i = 0; i < ns - 1; i++) {
    if ((r = c->io->denoise(c->io->user, x, s[i], den))) return r;
    float sigma = s[i], prev = s[i + 1];
    float ac = 1.0f / (sigma * sigma + 1.0f);
    float acp = 1.0f / (prev * prev + 1.0f);
    float alpha = ac / acp;
    float in_scale = sqrtf(1.0f + sigma * sigma);
    float k1 = sqrtf(1.0f / alpha);
    float k2 = (1.0f - alpha) / sqrtf(1.0f - ac);
    float var = 0.0f;
    if (prev > 0.0f) {
      var = sqrtf((1.0f - alpha) * (1.0f - acp) / (1.0f - ac));
      if ((r = c->io->noise(c->io->user, sigma, prev, nz))) return r;
    }
    for (int64_t k = 0; k < c->n; k++) {
      float eps = (x[k] - den[k]) / sigma;
      float mu = k1 * (x[k] / in_scale - k2 * eps);
      if (prev > 0.0f) mu += var * nz[k];
      x[k] = mu;
    }
    if (prev != 0.0f) {
      float out_scale = sqrtf(1.0f + prev * prev);
      for (int64_t k = 0; k < c->n; k++) x[k] *= out_scale;
    }
    if ((r = step_done(c, i + 1, ns - 1, x))) return r;
  }
  return 0;
}

/* ---- UniPC (bh1), multistep, predict x0, lower_order_final ------------- */

/* VP quantities of a k-diffusion sigma (uni_pc.SigmaConvert) */
static float vp_log_alpha(float sigma) {
  return 0.5f * logf(1.0f / (sigma * sigma + 1.0f));
}
static float vp_alpha(float sigma) { return expf(vp_log_alpha(sigma)); }
static float vp_std(float sigma) {
  return sqrtf(1.0f - expf(2.0f * vp_log_alpha(sigma)));
}
static float vp_lambda(float sigma) {
  float lm = vp_log_alpha(sigma);
  return lm - 0.5f * logf(1.0f - expf(2.0f * lm));
}

/* Solves the k x k system a x = b (k <= 3) by Gaussian elimination with
 * partial pivoting. */
static void solve(int k, double a[3][3], double *b, double *out) {
  double m[3][4];
  for (int i = 0; i < k; i++) {
    for (int j = 0; j < k; j++) m[i][j] = a[i][j];
    m[i][k] = b[i];
  }
  for (int col = 0; col < k; col++) {
    int piv = col;
    for (int i = col + 1; i < k; i++)
      if (fabs(m[i][col]) > fabs(m[piv][col])) piv = i;
    for (int j = 0; j <= k; j++) {
      double t = m[col][j];
      m[col][j] = m[piv][j];
      m[piv][j] = t;
    }
    for (int i = col + 1; i < k; i++) {
      double f = m[i][col] / m[col][col];
      for (int j = col; j <= k; j++) m[i][j] -= f * m[col][j];
    }
  }
  for (int i = k - 1; i >= 0; i--) {
    double v = m[i][k];
    for (int j = i + 1; j < k; j++) v -= m[i][j] * out[j];
    out[i] = v / m[i][i];
  }
}

typedef struct unipc {
  ctx *c;
  float *xk; /* scratch for the k-diffusion input */
  float *den;
} unipc;

/* data_prediction_fn: x0 from the model at VP x and time (sigma) t */
static int unipc_model(unipc *u, const float *x, float t, float *out) {
  ctx *c = u->c;
  float sc = sqrtf(t * t + 1.0f);
  for (int64_t k = 0; k < c->n; k++) u->xk[k] = x[k] * sc;
  int r = c->io->denoise(c->io->user, u->xk, t, u->den);
  if (r) return r;
  float a = vp_alpha(t), sd = vp_std(t);
  for (int64_t k = 0; k < c->n; k++) {
    float noise = (u->xk[k] - u->den[k]) / t;
    out[k] = (x[k] - sd * noise) / a;
  }
  return 0;
}

/* multistep_uni_pc_bh_update; model_t gets the corrector's model output
 * when use_corrector (else untouched) */
static int unipc_update(unipc *u, float *x, float *const *mprev,
                        const float *tprev, int nprev, float t, int order,
                        bool use_corrector, float *model_t, bool *have_mt) {
  ctx *c = u->c;
  float t0 = tprev[nprev - 1];
  const float *m0 = mprev[nprev - 1];
  float lp0 = vp_lambda(t0), lt = vp_lambda(t);
  float sp0 = vp_std(t0), st = vp_std(t);
  float at = expf(vp_log_alpha(t));
  float h = lt - lp0;
  double rks[3];
  for (int i = 1; i < order; i++) {
    float li = vp_lambda(tprev[nprev - 1 - i]);
    rks[i - 1] = (li - lp0) / h;
  }
  rks[order - 1] = 1.0;
  double hh = -(double)h;
  double h_phi_1 = expm1(hh);
  double h_phi_k = h_phi_1 / hh - 1;
  double fact = 1;
  double B_h = hh; /* bh1 */
  double R[3][3], b[3];
  for (int i = 1; i <= order; i++) {
    for (int j = 0; j < order; j++) R[i - 1][j] = pow(rks[j], i - 1);
    b[i - 1] = h_phi_k * fact / B_h;
    fact *= i + 1;
    h_phi_k = h_phi_k / hh - 1 / fact;
  }
  double rhos_p[3] = {0}, rhos_c[3] = {0};
  bool use_pred = order > 1;
  if (use_pred) {
    if (order == 2)
      rhos_p[0] = 0.5;
    else
      solve(order - 1, R, b, rhos_p);
  }
  if (use_corrector) {
    if (order == 1)
      rhos_c[0] = 0.5;
    else
      solve(order, R, b, rhos_c);
  }
  float *xt_ = vec(c, 0), *D1[2] = {vec(c, 1), vec(c, 2)};
  for (int i = 1; i < order; i++) {
    const float *mi = mprev[nprev - 1 - i];
    float rk = (float)rks[i - 1];
    for (int64_t k = 0; k < c->n; k++) D1[i - 1][k] = (mi[k] - m0[k]) / rk;
  }
  float ca = st / sp0, cb = at * (float)h_phi_1, cbh = at * (float)B_h;
  for (int64_t k = 0; k < c->n; k++) xt_[k] = ca * x[k] - cb * m0[k];
  /* predictor */
  for (int64_t k = 0; k < c->n; k++) {
    float pred = 0;
    for (int i = 0; i < order - 1 && use_pred; i++)
      pred += (float)rhos_p[i] * D1[i][k];
    x[k] = xt_[k] - cbh * pred;
  }
  if (use_corrector) {
    int r = unipc_model(u, x, t, model_t);
    if (r) return r;
    *have_mt = true;
    float rc_last = (float)rhos_c[order - 1];
    for (int64_t k = 0; k < c->n; k++) {
      float corr = 0;
      for (int i = 0; i < order - 1; i++) corr += (float)rhos_c[i] * D1[i][k];
      float d1t = model_t[k] - m0[k];
      x[k] = xt_[k] - cbh * (corr + rc_last * d1t);
    }
  }
  return 0;
}

static int uni_pc(ctx *c, float *x, const float *sig, int ns) {
  int steps = ns - 1;
  float t[4096];
  if (ns > 4096 || steps < 1) return WEFT_EINVAL;
  memcpy(t, sig, (size_t)ns * sizeof *t);
  if (t[ns - 1] == 0.0f) t[ns - 1] = 0.001f;
  float s0 = sqrtf(1.0f + t[0] * t[0]);
  for (int64_t k = 0; k < c->n; k++) x[k] /= s0;
  int order = ns - 2 < 3 ? ns - 2 : 3;
  if (order < 1) order = 1;
  /* buffers: 0..2 update scratch, 3 xk, 4 den, 5..7 model_prev, 8 model_t */
  unipc u = {c, vec(c, 3), vec(c, 4)};
  float *mprev[3] = {vec(c, 5), vec(c, 6), vec(c, 7)};
  float *mt = vec(c, 8);
  float tprev[3];
  int nprev = 0, r;
  for (int si = 0; si < steps; si++) {
    if (si == 0) {
      if ((r = unipc_model(&u, x, t[0], mprev[0]))) return r;
      tprev[0] = t[0];
      nprev = 1;
    } else if (si < order) {
      bool have = false;
      if ((r = unipc_update(&u, x, mprev, tprev, nprev, t[si], si, true, mt,
                            &have)))
        return r;
      if ((r = step_done(c, si, steps, x))) return r;
      if (!have && (r = unipc_model(&u, x, t[si], mt))) return r;
      memcpy(mprev[nprev], mt, (size_t)c->n * sizeof *mt);
      tprev[nprev++] = t[si];
    } else {
      int extra = si == steps - 1 ? 1 : 0;
      for (int st = si; st <= si + extra; st++) {
        int step_order = order < steps + 1 - st ? order : steps + 1 - st;
        bool corr = st != steps;
        bool have = false;
        if ((r = unipc_update(&u, x, mprev, tprev, nprev, t[st], step_order,
                              corr, mt, &have)))
          return r;
        if ((r = step_done(c, st, steps, x))) return r;
        /* shift the history left by one */
        float *first = mprev[0];
        for (int i = 0; i < order - 1; i++) {
          tprev[i] = tprev[i + 1];
          mprev[i] = mprev[i + 1];
        }
        mprev[order - 1] = first;
        tprev[order - 1] = t[st];
        if (st < steps) {
          if (!have && (r = unipc_model(&u, x, t[st], mt))) return r;
          memcpy(mprev[order - 1], mt, (size_t)c->n * sizeof *mt);
        }
      }
    }
  }
  float a = vp_alpha(t[ns - 1]);
  for (int64_t k = 0; k < c->n; k++) x[k] /= a;
  return 0;
}

int weft_sampler_noise_kind(const char *name) {
  if (!strcmp(name, "euler_ancestral") || !strcmp(name, "dpm_2_ancestral") ||
      !strcmp(name, "ddpm"))
    return WEFT_NOISE_DEFAULT;
  if (!strcmp(name, "dpmpp_sde") || !strcmp(name, "dpmpp_2m_sde"))
    return WEFT_NOISE_BROWNIAN;
  for (int i = 0; weft_sampler_names[i]; i++)
    if (!strcmp(name, weft_sampler_names[i])) return WEFT_NOISE_NONE;
  return -1;
}

int weft_sample(const char *name, const weft_sampler_io *io, float *x,
                const float *sigmas, int ns) {
  if (weft_sampler_noise_kind(name) < 0) return WEFT_EINVAL;
  if (ns < 2) return 0;
  ctx c = {io, io->n, NULL, 9};
  c.buf = malloc((size_t)c.nbuf * (size_t)io->n * sizeof *c.buf);
  if (!c.buf) return WEFT_ENOMEM;
  int r;
  if (!strcmp(name, "euler") || !strcmp(name, "ddim"))
    r = euler(&c, x, sigmas, ns);
  else if (!strcmp(name, "euler_ancestral"))
    r = euler_ancestral(&c, x, sigmas, ns);
  else if (!strcmp(name, "heun"))
    r = heun(&c, x, sigmas, ns);
  else if (!strcmp(name, "dpm_2"))
    r = dpm_2(&c, x, sigmas, ns, false);
  else if (!strcmp(name, "dpm_2_ancestral"))
    r = dpm_2(&c, x, sigmas, ns, true);
  else if (!strcmp(name, "lms"))
    r = lms(&c, x, sigmas, ns);
  else if (!strcmp(name, "dpmpp_2m"))
    r = dpmpp_2m(&c, x, sigmas, ns);
  else if (!strcmp(name, "dpmpp_2m_sde"))
    r = dpmpp_2m_sde(&c, x, sigmas, ns);
  else if (!strcmp(name, "dpmpp_sde"))
    r = dpmpp_sde(&c, x, sigmas, ns);
  else if (!strcmp(name, "ddpm"))
    r = ddpm(&c, x, sigmas, ns);
  else
    r = uni_pc(&c, x, sigmas, ns);
  free(c.buf);
  return r;
}

void weft_sampler_start(float *x, const float *noise, const float *latent,
                        int64_t n, float sigma0, float sigma_max) {
  /* ComfyUI: max_denoise = isclose(sigma_max, sigma0, rel 1e-5) or above */
  bool max_denoise = fabsf(sigma_max - sigma0) <=
                         1e-5f * fmaxf(fabsf(sigma_max), fabsf(sigma0)) ||
                     sigma0 > sigma_max;
  float scale = max_denoise ? sqrtf(1.0f + sigma0 * sigma0) : sigma0;
  for (int64_t k = 0; k < n; k++)
    x[k] = noise[k] * scale + (latent ? latent[k] : 0.0f);
}
