/* sd_denoise.c - the model call every sampler step makes: ComfyUI's
 * classifier-free guidance over an SD UNet (comfy/samplers.py
 * calc_cond_batch + cfg_function, comfy/model_sampling.py). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sd.h"

int sd_denoiser_init(sd_denoiser *d, sd_unet *unet, weft_backend *be,
                     const weft_schedule *sched, sd_prediction pred,
                     const int64_t shape[4], float cfg, const float *uncond,
                     int64_t ut, const float *cond, int64_t ct) {
  memset(d, 0, sizeof *d);
  d->unet = unet;
  d->be = be;
  d->sched = sched;
  d->pred = pred;
  d->batch = shape[0];
  d->per = shape[1] * shape[2] * shape[3];
  d->h = shape[2];
  d->w = shape[3];
  d->cfg = cfg;
  d->dim = sd_unet_config(unet)->context_dim;
  int64_t g = ut, r = ct;
  while (r) {
    int64_t t = g % r;
    g = r;
    r = t;
  }
  d->tokens = ut / g * ct;
  const int64_t rows = 2 * d->batch;
  d->ctx = malloc((size_t)(rows * d->tokens * d->dim) * sizeof *d->ctx);
  d->x_in = malloc((size_t)(rows * d->per) * sizeof *d->x_in);
  d->out = malloc((size_t)(rows * d->per) * sizeof *d->out);
  d->t = malloc((size_t)rows * sizeof *d->t);
  if (!d->ctx || !d->x_in || !d->out || !d->t) {
    sd_denoiser_free(d);
    return WEFT_ENOMEM;
  }
  for (int64_t k = 0; k < rows; k++) {
    const float *src = k < d->batch ? uncond : cond;
    int64_t len = k < d->batch ? ut : ct;
    for (int64_t rep = 0; rep < d->tokens / len; rep++)
      memcpy(d->ctx + (k * d->tokens + rep * len) * d->dim, src,
             (size_t)(len * d->dim) * sizeof *d->ctx);
  }
  return 0;
}

void sd_denoiser_free(sd_denoiser *d) {
  free(d->ctx), free(d->x_in), free(d->out), free(d->t);
  d->ctx = d->x_in = d->out = d->t = NULL;
}

int sd_denoise(void *user, const float *x, float sigma, float *den) {
  sd_denoiser *d = user;
  const int64_t B = d->batch, per = d->per, n = B * per;
  const bool cfg1 = d->cfg == 1.0f; /* ComfyUI skips the uncond pass */
  const int64_t rows = cfg1 ? B : 2 * B;
  const float s2 = sigma * sigma + 1.0f, cin = 1.0f / sqrtf(s2);
  const float t = (float)weft_schedule_timestep(d->sched, sigma);
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + (r % B) * per;
    float *xi = d->x_in + r * per;
    for (int64_t i = 0; i < per; i++) xi[i] = xr[i] * cin;
    d->t[r] = t;
  }
  const float *ctx = cfg1 ? d->ctx + B * d->tokens * d->dim : d->ctx;
  sd_cnet_out co;
  memset(&co, 0, sizeof co);
  sd_control ctl = {0};
  int rc = 0;
  if (d->control) {
    rc = d->control(d->control_user, d->x_in, rows, cfg1, d->h, d->w, d->t,
                    ctx, d->tokens, sigma, &co);
    ctl = (sd_control){(const float *const *)co.down, co.n, co.mid};
  }
  if (!rc)
    rc = sd_unet_forward(d->unet, d->be, d->x_in, rows, d->h, d->w, d->t, ctx,
                         d->tokens, co.n || co.mid ? &ctl : NULL, d->out);
  sd_cnet_out_free(&co);
  if (rc) return rc;
  /* the model's estimate of x0 per row: eps -> x - eps * sigma; v ->
   * x / (sigma^2 + 1) - v * sigma / sqrt(sigma^2 + 1) */
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + (r % B) * per;
    float *o = d->out + r * per;
    if (d->pred == SD_PRED_V)
      for (int64_t i = 0; i < per; i++)
        o[i] = xr[i] / s2 - o[i] * sigma * cin;
    else
      for (int64_t i = 0; i < per; i++) o[i] = xr[i] - o[i] * sigma;
  }
  if (cfg1) {
    memcpy(den, d->out, (size_t)n * sizeof *den);
  } else {
    const float *u = d->out, *c = d->out + n;
    for (int64_t i = 0; i < n; i++) den[i] = u[i] + (c[i] - u[i]) * d->cfg;
  }
  return 0;
}
