/* sd_objects.h - the objects the sd plugin's nodes pass each other: a
 * loaded checkpoint (shared by its MODEL, CLIP and VAE outputs) and
 * conditioning.  Internal to the plugin. */
#ifndef WEFT_SD_OBJECTS_H
#define WEFT_SD_OBJECTS_H

#include <stdatomic.h>

#include "schedule.h"
#include "sd.h"
#include "tokenizer.h"

/* One loaded checkpoint.  Refcounted: every MODEL, CLIP and VAE value made
 * from it holds a reference. */
typedef struct sd_bundle {
  atomic_int refs;
  const weft_host *host;
  weft_weights *weights[SD_PARTS]; /* distinct handles (LDM: [0] only) */
  sd_ckpt ck;
  sd_unet *unet;
  sd_clip *clip;
  sd_vae *vae;
  weft_clip_tok *tok;
  weft_backend *be;
  weft_schedule sched;
  sd_prediction prediction;
  float latent_scale;
} sd_bundle;

void sd_bundle_retain(sd_bundle *b);
void sd_bundle_release(sd_bundle *b);

/* MODEL, CLIP and VAE values are one of these, by type. */
typedef struct sd_ref {
  sd_bundle *bundle;
  int clip_layer; /* CLIP: CLIPSetLastLayer's stop_at_clip_layer (-1) */
} sd_ref;

/* CONDITIONING: cross-attention context [tokens, dim] for one prompt, and
 * the pooled output [dim] */
typedef struct sd_cond {
  float *ctx;
  int64_t tokens, dim;
  float *pooled;
} sd_cond;

#endif
