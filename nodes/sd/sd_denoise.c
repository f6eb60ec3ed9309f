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
  /* the contexts go to the device once, not at every step */
  int rc =
      sd_unet_keep_ctx(unet, be, d->ctx, rows * d->tokens * d->dim, d->tokens);
  if (rc) sd_denoiser_free(d);
  return rc;
}

void sd_denoiser_free(sd_denoiser *d) {
  if (d->unet && d->ctx && sd_unet_kept_ctx(d->unet) == d->ctx)
    sd_unet_drop_ctx(d->unet);
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
    for (int64_t i = 0; i < per; i++)
      xi[i] = xr[i] * cin;
    d->t[r] = t;
  }
  const float *ctx = cfg1 ? d->ctx + B * d->tokens * d->dim : d->ctx;
  sd_cnet_out co;
  memset(&co, 0, sizeof co);
  sd_control ctl = {0};
  int rc = 0;
  if (d->control) {
    rc = d->control(d->control_user, d->x_in, rows, cfg1, d->h, d->w, d->t, ctx,
                    d->tokens, sigma, &co);
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
      for (int64_t i = 0; i < per; i++)
        o[i] = xr[i] - o[i] * sigma;
  }
  if (cfg1) {
    memcpy(den, d->out, (size_t)n * sizeof *den);
  } else {
    const float *u = d->out, *c = d->out + n;
    for (int64_t i = 0; i < n; i++)
      den[i] = u[i] + (c[i] - u[i]) * d->cfg;
  }
  return 0;
}

/* ---- planned model calls (sd_plan.h) ------------------------------------ */

#include "sd_device.h"
#include "sd_plan.h"

/* An A/B switch: on unless the environment variable is "0". */
static bool env_on(const char *name) {
  const char *e = getenv(name);
  return !(e && !strcmp(e, "0"));
}

bool sd_plan_enabled(void) {
  return env_on("WEFT_ARENA");
}

/* Graphs for the replays (record.h) unless WEFT_GRAPHS=0: without
 * ControlNet (whose residuals come and go), and not after a graph failed
 * once in this sampling. */
static bool graphs_wanted(const sd_denoise_plan *p) {
  return env_on("WEFT_GRAPHS") && !p->control && !p->graphs_failed;
}

/* Graphs, if on, dropped: the replay after the next pass captures anew. */
static void graphs_rearm(weft_rec *r) {
  if (weft_rec_graphs_on(r)) weft_rec_set_graphs(r, true);
}

/* Counts every change of place in the UNet's weights' pool (loads,
 * evictions, compactions): a graph holds the weights' addresses of its
 * capture. */
static uint64_t weights_epoch(const sd_denoise_plan *p) {
  const sd_devw *dw = sd_unet_devw(p->d->unet);
  if (!dw) return 0;
  const sd_vram_stats *st = sd_vram_get_stats(dw->vr);
  return st->loads + st->evictions + st->moves;
}

/* Starts a pass of recorder i: a replay once planned, else a recording
 * that runs.  Without memory for it the call simply runs unplanned. */
static void plan_start(sd_denoise_plan *p, int i) {
  p->graphed = false;
  if (!p->rec[i]) {
    if (!(p->rec[i] = weft_rec_new(p->inner))) return;
    weft_rec_set_graphs(p->rec[i], graphs_wanted(p));
  }
  weft_rec *r = p->rec[i];
  /* weights moved since the last pass (by another model's call): graphs
   * captured again, after a pass that runs as they now lie */
  p->epoch = weights_epoch(p);
  if (p->epoch != p->epoch_end) graphs_rearm(r);
  weft_rec_mode m = p->dry                ? WEFT_REC_DRY
                    : weft_rec_planned(r) ? WEFT_REC_REPLAY
                                          : WEFT_REC_TRACE;
  if (weft_rec_begin(r, m)) return;
  p->d->be = weft_rec_backend(r);
  p->active = i;
  p->graphed = m == WEFT_REC_REPLAY && weft_rec_graphs_on(r);
}

/* Ends the pass (rc: the call's; a failed call's recording is not the
 * forward's).  True when the pass's graphs failed, or ran while the
 * weights moved (streamed under a budget), or the pass failed with graphs
 * on (a call the capture refused, outside the recorder's ops): its results
 * are not to be trusted, and the caller runs it again with graphs off. */
static bool plan_end(sd_denoise_plan *p, int rc) {
  if (p->active < 0) return false;
  weft_rec *r = p->rec[p->active];
  weft_rec_stats before, after;
  weft_rec_stats_get(r, &before);
  /* a traced call's buffers went back to the backend's cache: to the
   * driver with them before the arena is made beside them (a budget holds
   * one or the other, not both) */
  sd_devw *dw = sd_unet_devw(p->d->unet);
  const bool trim =
      !weft_rec_planned(r) && dw && sd_vram_budget(dw->vr) != UINT64_MAX;
  if (trim) sd_vram_trim(dw->vr);
  weft_rec_end(r);
  /* the trim gave the scratch back: the next replay grows it again, which
   * a capture refuses, so the graphs wait for the replay after it */
  if (trim) graphs_rearm(r);
  weft_rec_stats_get(r, &after);
  p->epoch_end = weights_epoch(p);
  const bool moved = p->epoch_end != p->epoch;
  const bool failed = weft_rec_graph_failed(r) || (p->graphed && (moved || rc));
  if (failed) p->graphs_failed = true;
  /* weights that move during a pass (streamed under a budget) are never
   * captured: the graphs wait for a pass that leaves them in place */
  if (!failed && moved) graphs_rearm(r);
  if (rc || failed || after.diverged != before.diverged) {
    /* never serve a stale plan twice: record again on the next call */
    weft_rec_free(r);
    p->rec[p->active] = NULL;
  }
  p->d->be = p->inner;
  p->last = p->rec[p->active] ? p->active : -1;
  p->active = -1;
  return failed;
}

/* The denoiser's ControlNet callback, hooked: the residuals decide which
 * recording the UNet call that follows belongs to. */
static int plan_control(void *user, const float *x_in, int64_t rows,
                        bool cond_only, int64_t h, int64_t w, const float *t,
                        const float *ctx, int64_t tokens, float sigma,
                        sd_cnet_out *out) {
  sd_denoise_plan *p = user;
  int r = p->control(p->control_user, x_in, rows, cond_only, h, w, t, ctx,
                     tokens, sigma, out);
  if (!r) plan_start(p, out->n || out->mid ? 1 : 0);
  return r;
}

int sd_denoise_plan_init(sd_denoise_plan *p, sd_denoiser *d) {
  memset(p, 0, sizeof *p);
  p->d = d;
  p->inner = d->be;
  p->active = p->last = -1;
  p->control = d->control;
  p->control_user = d->control_user;
  if (d->control) {
    d->control = plan_control;
    d->control_user = p;
  }
  return 0;
}

void sd_denoise_plan_free(sd_denoise_plan *p) {
  if (!p->d) return;
  p->d->be = p->inner;
  p->d->control = p->control;
  p->d->control_user = p->control_user;
  for (int i = 0; i < 2; i++)
    weft_rec_free(p->rec[i]);
  memset(p, 0, sizeof *p);
}

int sd_denoise_planned(void *user, const float *x, float sigma, float *den) {
  sd_denoise_plan *p = user;
  int r = 0;
  /* a second time when a graph failed: recorded anew without graphs */
  for (int tries = 0; tries < 2; tries++) {
    p->active = p->last = -1;
    if (!p->control) plan_start(p, 0);
    r = sd_denoise(p->d, x, sigma, den);
    if (!plan_end(p, r)) break;
  }
  return r;
}

bool sd_denoise_plan_stats(const sd_denoise_plan *p, int i,
                           weft_rec_stats *st) {
  if (i < 0 || i > 1 || !p->rec[i]) return false;
  weft_rec_stats_get(p->rec[i], st);
  return true;
}

/* fn(user, be') once on r in DRY mode: recorded, nothing computed.  fn's
 * code, else the recording's. */
static int record_dry(weft_rec *r, int (*fn)(void *user, weft_backend *be),
                      void *user) {
  int rc = weft_rec_begin(r, WEFT_REC_DRY);
  if (rc) return rc;
  rc = fn(user, weft_rec_backend(r));
  int re = weft_rec_end(r);
  return rc ? rc : re;
}

/* sd_plan_call and sd_plan_call_vram: recorded, then (unless dry_only)
 * run from the arena; with vr, the arena plus scratch kept from the
 * budget's pool first (resized before the arena is made). */
static int plan_call(weft_backend *be, sd_vram *vr, const sd_devw *running,
                     uint64_t scratch, const char *why,
                     int (*fn)(void *user, weft_backend *be), void *user,
                     bool dry_only, weft_rec_stats *st) {
  weft_rec *r = weft_rec_new(be);
  if (!r) return WEFT_ENOMEM;
  /* the DRY pass loads running's blocks under the last node's reserve */
  int rc = vr ? sd_vram_fit(vr, running, scratch, why) : 0;
  if (!rc) rc = record_dry(r, fn, user);
  weft_rec_stats s;
  weft_rec_stats_get(r, &s);
  if (st) *st = s;
  if (!rc && vr) {
    rc = sd_vram_reserve(vr, s.arena.arena + scratch, running, why);
    if (!rc) rc = sd_vram_commit(vr);
    if (!rc) rc = sd_vram_trim(vr);
  }
  if (!rc && !dry_only) {
    /* no arena (out of device memory): the forward runs unplanned */
    bool planned = !weft_rec_begin(r, WEFT_REC_REPLAY);
    rc = fn(user, planned ? weft_rec_backend(r) : be);
    if (planned) weft_rec_end(r);
  }
  weft_rec_free(r);
  return rc;
}

int sd_plan_call(weft_backend *be, int (*fn)(void *user, weft_backend *be),
                 void *user, bool dry_only, weft_rec_stats *st) {
  return plan_call(be, NULL, NULL, 0, NULL, fn, user, dry_only, st);
}

int sd_denoise_plan_dry(sd_denoise_plan *p, const float *x, float sigma,
                        uint64_t *arena) {
  *arena = 0;
  if (sd_be_is_host(p->inner)) return 0;
  /* the call step 1 makes, through the same hooks (a ControlNet's
   * residuals, present or not, pick the recorder), but DRY */
  float *den = malloc((size_t)(p->d->batch * p->d->per) * sizeof *den);
  if (!den) return WEFT_ENOMEM;
  p->dry = true;
  int rc = sd_denoise_planned(p, x, sigma, den);
  p->dry = false;
  free(den);
  weft_rec_stats st;
  if (!rc && p->last >= 0 && sd_denoise_plan_stats(p, p->last, &st))
    *arena = st.arena.arena;
  return rc;
}

int sd_plan_call_vram(weft_backend *be, sd_vram *vr, const sd_devw *running,
                      uint64_t scratch, const char *why,
                      int (*fn)(void *user, weft_backend *be), void *user,
                      weft_rec_stats *st) {
  return plan_call(be, vr, running, scratch, why, fn, user, false, st);
}
