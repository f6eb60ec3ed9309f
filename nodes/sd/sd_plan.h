/* sd_plan.h - the sd models' activations from one planned arena
 * (kernels/record.h): a sampler's UNet calls recorded on the first step
 * and replayed on every later one, and one-off forwards (VAE, text encoder)
 * recorded without computing, then run from the arena.  Results are the
 * unplanned ones bit for bit: the same ops run on the same values, only
 * the buffers' addresses differ.  Internal to the sd plugin and its tests. */
#ifndef WEFT_SD_PLAN_H
#define WEFT_SD_PLAN_H

#include <stdbool.h>

#include "kernels/record.h"
#include "sd.h"

/* Planning is on unless WEFT_ARENA=0 (for comparisons). */
bool sd_plan_enabled(void);

/* A sampler's model calls through recorders over the denoiser's backend:
 * one recording per shape of the call (with and without ControlNet
 * residuals, which may come and go with start/end percent).  A replay that
 * left its recording (it cannot with these models; a keying bug) drops
 * the plan, and the next call records again. */
typedef struct sd_denoise_plan {
  sd_denoiser *d;
  weft_backend *inner; /* d->be when the plan was made */
  weft_rec *rec[2];    /* without, with ControlNet residuals */
  int active;          /* the recorder in a pass, or -1 */
  int last;            /* the recorder the last call used, or -1 */
  bool dry;            /* sd_denoise_plan_dry's call: record, compute nothing */
  bool graphs_failed;  /* a replay's graphs failed: none from then on */
  bool graphed;        /* the pass captures or launches graphs */
  uint64_t epoch;      /* the weights' places at the pass's start */
  uint64_t epoch_end;  /* and at the last pass's end */
  int (*control)(void *user, const float *x_in, int64_t rows, bool cond_only,
                 int64_t h, int64_t w, const float *t, const float *ctx,
                 int64_t tokens, float sigma, sd_cnet_out *out);
  void *control_user;
} sd_denoise_plan;

/* Replays launch the captured graphs of the first one (record.h's
 * weft_rec_set_graphs) where the backend has them, unless WEFT_GRAPHS=0
 * or a ControlNet is hooked.  A graph holds the UNet's weights' addresses:
 * it is captured only after a pass that moved none of them (sd_vram's
 * loads, evictions and compactions; a budget that streams the weights
 * moves them every step, so those steps run without graphs), and again
 * after they moved.  A step whose graphs fail, or ran while the weights
 * moved, runs again without them, and graphs are off for the rest of the
 * sampling. */

/* Hooks p into d (set d->control first, if any).  0 (nothing to free on
 * failure). */
int sd_denoise_plan_init(sd_denoise_plan *p, sd_denoiser *d);
/* Unhooks and frees the recorders and their arenas. */
void sd_denoise_plan_free(sd_denoise_plan *p);
/* The weft_sampler_io denoise callback (user = the sd_denoise_plan). */
int sd_denoise_planned(void *user, const float *x, float sigma, float *den);
/* The stats of recorder i (0: no ControlNet, 1: with); false when it was
 * never used. */
bool sd_denoise_plan_stats(const sd_denoise_plan *p, int i, weft_rec_stats *st);

/* A one-off forward planned before it runs: fn(user, be') runs once on a
 * DRY recorder over be (no compute), then, planned, on a REPLAY one, so
 * its activations come from one buffer.  dry_only: stop after the
 * recording (plan mode: fn's outputs are left unspecified).  st (may be
 * NULL) gets the recording's stats.  Returns fn's code, or WEFT_ENOMEM. */
int sd_plan_call(weft_backend *be, int (*fn)(void *user, weft_backend *be),
                 void *user, bool dry_only, weft_rec_stats *st);

#endif
