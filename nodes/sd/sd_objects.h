/* sd_objects.h - the objects the sd plugin's nodes pass each other: a
 * loaded checkpoint (shared by its MODEL, CLIP and VAE outputs) and
 * conditioning.  Internal to the plugin. */
#ifndef WEFT_SD_OBJECTS_H
#define WEFT_SD_OBJECTS_H

#include <pthread.h>
#include <stdatomic.h>

#include "lora.h"
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
  /* LoRA: the weights of a part are patched in place for whoever holds its
   * lock (ComfyUI's patch-on-use), so nodes using other patch sets wait */
  pthread_mutex_t lock[SD_PARTS];
  sd_patch_state patch[SD_PARTS];
  /* on a device backend: held by every model call (sd_bundle_be_lock) and
   * by the weight copies after a LoRA merge; taken after lock[part] */
  pthread_mutex_t be_mu;
} sd_bundle;

void sd_bundle_retain(sd_bundle *b);
void sd_bundle_release(sd_bundle *b);

/* MODEL, CLIP and VAE values are one of these, by type. */
typedef struct sd_ref {
  sd_bundle *bundle;
  int clip_layer; /* CLIP: CLIPSetLastLayer's stop_at_clip_layer (-1) */
  sd_patch *patches; /* LoRAs on this MODEL's UNet or CLIP's text encoder */
  int n_patches;
} sd_ref;

/* Locks a part of the bundle with exactly these patches applied (on a
 * device backend, the merged weights copied there). */
int sd_bundle_acquire(sd_bundle *b, sd_part part, const sd_ref *ref);
void sd_bundle_unacquire(sd_bundle *b, sd_part part);

/* A loaded ControlNet (CONTROL_NET values). */
typedef struct sd_cnet_obj {
  atomic_int refs;
  sd_ckpt ck;
  sd_cnet *model;
  weft_backend *be;
  char *path;
  pthread_mutex_t be_mu; /* as sd_bundle's, around sd_cnet_forward */
} sd_cnet_obj;
void sd_cnet_obj_release(sd_cnet_obj *o);

/* A ControlNet applied to a conditioning, chained to the one applied
 * before it (their residuals add up, as ComfyUI's control_merge). */
typedef struct sd_ctrl {
  atomic_int refs;
  sd_cnet_obj *cnet;
  float *hint;               /* [hb, 3, hh, hw] in 0..1 */
  int64_t hb, hh, hw;
  float strength;
  double start, end;         /* start_percent, end_percent */
  struct sd_ctrl *prev;
} sd_ctrl;
void sd_ctrl_release(sd_ctrl *c);

/* CONDITIONING: cross-attention context [tokens, dim] for one prompt, the
 * pooled output [dim], and the ControlNets applied to it */
typedef struct sd_cond {
  float *ctx;
  int64_t tokens, dim;
  float *pooled;
  sd_ctrl *control;
  bool apply_to_uncond; /* ControlNetApply: the negative gets it too */
} sd_cond;

#endif
