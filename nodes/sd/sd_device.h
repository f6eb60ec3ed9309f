/* sd_device.h - the SD models on a device backend (CUDA): moving a loaded
 * model's weights into buffers of the backend while the host arrays stay
 * the masters (LoRA patches them, then the touched tensors are copied
 * again), and the memory contract of the forward passes there.
 *
 * Memory contract.  The forward passes of sd.h -- sd_clip_forward,
 * sd_unet_forward, sd_vae_encode, sd_vae_decode, sd_cnet_forward and the
 * tiled VAE -- take their inputs and write their outputs in HOST memory
 * whatever the backend: on a device backend they copy the inputs in and
 * the outputs out (the copies of a CUDA backend are synchronous), and every
 * activation lives in the backend's buffers.  On a host backend (the CPU)
 * nothing is copied and nothing changes.  The two UNet halves,
 * sd_unet_encode and sd_unet_decode, work on backend memory: x, t, ctx,
 * add_in, the features and the sd_control residuals.  Internal to the sd
 * plugin and its tests. */
#ifndef WEFT_SD_DEVICE_H
#define WEFT_SD_DEVICE_H

#include <stdbool.h>
#include <stdint.h>

#include "sd.h"

/* true when the backend's buffers are host memory (the CPU backend). */
static inline bool sd_be_is_host(const weft_backend *be) {
  return be->iface->device_kind == WEFT_DEVICE_KIND_CPU;
}

/* ---- a model's weights on a device -----------------------------------------
 */

/* Called once per weight array of a model: *w is the array's pointer (the
 * callee may replace it), numel its length in floats. */
typedef void (*sd_weight_fn)(void *user, float **w, int64_t numel);
/* Calls fn on every non-NULL weight array of a model, always in the same
 * order. */
typedef void (*sd_visit_fn)(void *model, sd_weight_fn fn, void *user);

typedef struct sd_devw_entry {
  float *host; /* the master (the array sd_weight made; in ck->params) */
  float *dev;  /* its copy in the backend's buffer */
  int64_t numel;
} sd_devw_entry;

/* The device copies of one model's weights: one buffer of `be` holding
 * them all (256-byte aligned each). */
typedef struct sd_devw {
  weft_backend *be;
  void *arena;
  size_t arena_bytes;
  sd_devw_entry *e; /* in visiting order */
  int n;
  sd_devw_entry *sorted; /* the same, by host address, for lookups */
} sd_devw;

/* Copies every weight `visit` reaches into one new buffer of be and points
 * the model at the copies; the host arrays are kept (their pointers in
 * *out).  On failure the model is left as it was.  0, WEFT_ENOMEM (the
 * device is full) or the backend's copy error.  (transfer full: release
 * with sd_devw_release, before the backend is freed) */
int sd_devw_upload(void *model, sd_visit_fn visit, weft_backend *be,
                   sd_devw **out);
/* Points the model back at its host arrays and frees the device buffer and
 * dw (NULL: nothing). */
void sd_devw_release(sd_devw *dw, void *model, sd_visit_fn visit);
/* The device copy of a host master, or NULL when it is not one of dw's. */
float *sd_devw_find(const sd_devw *dw, const float *host);
/* Copies a host master (changed by a LoRA merge) to its device copy again:
 * 0, WEFT_ENOENT when host is not one of dw's, or the copy's error. */
int sd_devw_sync(sd_devw *dw, const float *host);

/* Each model on a backend: its weights moved there by sd_devw_upload.  A
 * no-op (0) on a host backend.  The model then runs on `be` only, and be
 * must outlive it (the model's free releases the buffer through be). */
int sd_clip_to_backend(sd_clip *m, weft_backend *be);
int sd_unet_to_backend(sd_unet *m, weft_backend *be);
int sd_vae_to_backend(sd_vae *m, weft_backend *be);
int sd_cnet_to_backend(sd_cnet *m, weft_backend *be);
/* Whether a model with device weights dw (NULL: on the host) runs on be:
 * its backend, or a recorder over it (kernels/record.h). */
#include "kernels/record.h"
static inline bool sd_devw_fits(const sd_devw *dw, const weft_backend *be) {
  return dw ? weft_backend_root(dw->be) == weft_backend_root(be)
            : sd_be_is_host(be);
}
/* A model's device weights (NULL on the host), to re-sync after LoRA
 * merges or to inspect in tests.  (transfer none) */
sd_devw *sd_clip_devw(const sd_clip *m);
sd_devw *sd_unet_devw(const sd_unet *m);
sd_devw *sd_vae_devw(const sd_vae *m);

/* ---- host I/O of the forward passes
 * ------------------------------------------ */

/* An input of n floats in host memory (may be NULL: *buf NULL) as backend
 * memory: on a host backend the pointer itself, else a new buffer with a
 * copy in *tmp (free with sd_free).  0 or a WEFT_E* code. */
int sd_io_in(weft_backend *be, const float *host, int64_t n, const float **buf,
             float **tmp);
/* Where an output of n floats is written: host itself on a host backend,
 * else a new buffer in *tmp.  0 or WEFT_ENOMEM. */
int sd_io_out(weft_backend *be, float *host, int64_t n, float **buf,
              float **tmp);
/* Copies an output made by sd_io_out to host (after the queued work; a
 * copy error also reports an earlier asynchronous failure) and frees tmp;
 * nothing for a host backend (tmp NULL).  Returns rc when rc is non-zero
 * (the work failed: nothing is copied). */
int sd_io_done(weft_backend *be, int rc, float *host, float *tmp, int64_t n);

#endif
