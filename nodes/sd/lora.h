/* lora.h - LoRA files matched to a loaded model: kohya/A1111 keys
 * (lora_unet_*, lora_te_*, .lora_down/.lora_up/.alpha, diffusers- or
 * LDM-style names, LoCon convolutions) and diffusers/PEFT keys
 * (unet./text_encoder. + lora_A/lora_B).  A matched LoRA holds, per target
 * weight, the delta up @ down * alpha / rank, ready to add at any strength. */
#ifndef WEFT_SD_LORA_H
#define WEFT_SD_LORA_H

#include <stdatomic.h>

#include "sd.h"
#include "sd_device.h"

typedef struct sd_lora_target {
  sd_param *param;       /* the model weight it changes (read at a merge) */
  float *delta;          /* [param->numel] */
} sd_lora_target;

typedef struct sd_lora {
  atomic_int refs;
  char *path;
  sd_lora_target *t;
  int n;
  int n_unet, n_clip;    /* targets per part */
} sd_lora;

/* Matches the LoRA in `file` against the model weights registered in ck.
 * Keys that match no weight are listed in unmatched ("a, b, ...", at most
 * len bytes) and counted in *n_unmatched.  Returns 0 or a WEFT_E* code with
 * err set. */
int sd_lora_load(const sd_file *file, sd_ckpt *ck, sd_lora **out,
                 char *unmatched, size_t len, int *n_unmatched, char *err,
                 size_t errlen);
void sd_lora_retain(sd_lora *l);
void sd_lora_release(sd_lora *l);

/* A LoRA applied at a strength. */
typedef struct sd_patch {
  sd_lora *lora;
  float strength;
} sd_patch;

/* The weights of one model part as some patch set has left them: backups of
 * every weight ever patched, so any patch set is applied from the base
 * weights exactly (W = W0 + sum strength * delta), and the base restored. */
typedef struct sd_patch_state {
  sd_patch *applied;
  int n_applied;
  struct backup {
    float *w;
    float *orig;
    int64_t numel;
  } *backups;
  int n_backups, cap_backups;
} sd_patch_state;

/* Makes part `part` of the weights equal base + patches (only targets of
 * that part); a no-op when that set is already applied.  0 or WEFT_ENOMEM. */
int sd_patch_apply(sd_patch_state *st, sd_part part, const sd_patch *patches,
                   int n);
/* true when exactly this patch set is applied (sd_patch_apply would do
 * nothing).  A model on a device copies st's backed-up weights again after
 * an apply that did something (nodes.c, sd_bundle_acquire). */
bool sd_patch_is_applied(const sd_patch_state *st, const sd_patch *patches,
                         int n);
void sd_patch_state_free(sd_patch_state *st);

/* A model on a device (sd_device.h): copies every weight st ever backed up
 * -- all that any patch set changed, the rest at its base -- from the host
 * masters to dw's device copies, so the device holds what the host does,
 * bit for bit.  Call after an sd_patch_apply that did something.  0 or the
 * first copy's error. */
int sd_patch_sync(const sd_patch_state *st, sd_devw *dw);

#endif
