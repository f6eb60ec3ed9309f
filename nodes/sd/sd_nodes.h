/* sd_nodes.h - what the sd plugin's node files share: descriptor macros and
 * the node definitions each file contributes to the plugin's table. */
#ifndef WEFT_SD_NODES_H
#define WEFT_SD_NODES_H

#include <stdbool.h>

#include "weft/plugin.h"

#define SD_PORT(n, t, d) {sizeof(weft_port_def), n, t, NULL, 0, d}
/* A tensor port that lives on the node's device when it runs on one (ABI
 * 1.4 WEFT_PORT_DEVICE). */
#define SD_PORT_DEV(n, t, d)                                                   \
  {sizeof(weft_port_def), n, t, NULL, WEFT_PORT_DEVICE, d}
#define SD_P_INT(n, def, lo, hi, d)                                            \
  {sizeof(weft_param_def), n, WEFT_TYPE_INT, def, 0, NULL, lo, hi, NULL, 0, d}
#define SD_P_FLOAT(n, def, lo, hi, d)                                          \
  {sizeof(weft_param_def), n, WEFT_TYPE_FLOAT, 0, def, NULL, lo, hi, NULL, 0, d}
#define SD_P_ENUM(n, def, ch, d)                                               \
  {sizeof(weft_param_def), n, WEFT_TYPE_ENUM, def, 0, NULL, 1, 0, ch, 0, d}
#define SD_P_STR(n, def, fl, d)                                                \
  {sizeof(weft_param_def), n, WEFT_TYPE_STRING, 0, 0, def, 1, 0, NULL, fl, d}

/* nodes.c: shared plugin helpers */
#include "sd_objects.h"

/* A host weights handle seen as an sd_file (handle = the wfile). */
typedef struct wfile {
  const weft_host *host;
  weft_weights *w;
} wfile;
int wf_get(void *h, const char *key, weft_tensor *v);
const char *wf_meta(void *h, const char *key);
int32_t wf_count(void *h);
const char *wf_key(void *h, int32_t i);
/* Relative paths resolve against the input directory. */
void sd_resolve(weft_call *c, const char *path, char *out, size_t len);
bool sd_is_file(const char *p);
/* The sd_ref of an input holding a MODEL, CLIP or VAE. */
sd_ref *sd_ref_of(weft_call *c, int input);
/* The fingerprint of the file (or diffusers folder) named by param 0. */
uint64_t sd_file_fingerprint(weft_call *c);
void sd_cond_destroy(void *p);

/* sd_backend.c */
/* The backend a loader's models run on, as WEFT_DEVICE says: "cpu", "cuda",
 * "emulated" (kernels/emulated.h: the device paths on the CPU kernels, for
 * tests) or "auto" (unset: auto = CUDA when weft was built with it and a
 * device is there, else the CPU).  `what` names the model in the log
 * line.  NULL
 * after c->host->error, with *code the WEFT_E* code.  (transfer full:
 * weft_backend_free) */
weft_backend *sd_backend_new(weft_call *c, const char *what, int *code);
/* Records that a model call failed: `what` alone on the CPU (as before),
 * with the error and the device's own message on a device backend. */
void sd_model_error(weft_call *c, const weft_backend *be, int r,
                    const char *what);
/* A device backend serves one thread at a time (one stream, one cuDNN
 * handle): model calls on a bundle's backend hold its be_mu there.  On
 * the CPU, which orders its own work, these do nothing. */
void sd_bundle_be_lock(sd_bundle *b);
void sd_bundle_be_unlock(sd_bundle *b);

/* control_nodes.c */
extern const weft_node_def sd_controlnet_loader_def;
extern const weft_node_def sd_controlnet_apply_def;
extern const weft_node_def sd_controlnet_apply_adv_def;
/* The sd_denoiser control callback over CONDITIONING control chains
 * (user: an sd_ctrl_pair). */
typedef struct sd_ctrl_pair {
  struct sd_ctrl *chain[2]; /* uncond, cond */
  const weft_schedule *sched;
  int64_t row_numel;        /* elements of one latent */
  int64_t ctx_dim;
  /* plan mode: non-NULL, each ControlNet call is recorded DRY (nothing
   * computed: the residuals' values are unspecified) and its host-to-device
   * and device-to-host bytes are added to dry[0] and dry[1] */
  uint64_t *dry;
  /* a run (KSampler with planning on): non-NULL, each ControlNet call goes
   * through a recorder of its own per link and batch, recorded on its
   * first call and replayed from one arena after; while *dry_pass (the
   * sampler's step-1 planning, sd_denoise_plan_dry) recorded DRY */
  struct sd_ctrl_recs *recs;
  const bool *dry_pass;
} sd_ctrl_pair;
/* The recorders of a run's pair (recs), and their arenas. */
struct sd_ctrl_recs *sd_ctrl_recs_new(void);
void sd_ctrl_recs_free(struct sd_ctrl_recs *r);
uint64_t sd_ctrl_recs_arena(const struct sd_ctrl_recs *r);
/* The recorders' stats summed (arena, replays, misses, diverged); the
 * number of recorders, 0 when none was made. */
int sd_ctrl_recs_sum(const struct sd_ctrl_recs *r, weft_rec_stats *sum);
int sd_ctrl_eval(void *user, const float *x_in, int64_t rows, bool cond_only,
                 int64_t h, int64_t w, const float *t, const float *ctx,
                 int64_t tokens, float sigma, sd_cnet_out *out);

/* latent_nodes.c */
extern const weft_node_def sd_latent_upscale_def;
extern const weft_node_def sd_latent_upscale_by_def;
extern const weft_node_def sd_set_noise_mask_def;


#endif
