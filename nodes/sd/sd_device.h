/* sd_device.h - the SD models on a device backend (CUDA): their weights in
 * device memory under a budget (whole models resident when they fit,
 * streamed block by block when they do not), 16-bit copies of the matrices
 * where the backend computes in fp16/bf16, the host arrays kept as the
 * masters (LoRA patches them, then the touched tensors are copied again),
 * and the memory contract of the forward passes there.
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
 * plugin and its tests.
 *
 * Weights on a device.  Every model lists its weights through a visitor
 * (sd_model_visit_fn), in execution order, cut into BLOCKS (a UNet's time
 * embedding + conv_in, each down block, the middle, each up block, the
 * output; a VAE's encoder and decoder levels; a CLIP layer; ...).  Each
 * weight has a kind:
 *   SD_W_HALF  a matrix read only as a linear/conv2d weight or gemm operand
 *              b: stored 16-bit when the backend computes in fp16/bf16
 *              (weft_cuda_mark_half), streamed with its block;
 *   SD_W_F32   biases, norms and matrices used otherwise: fp32, always
 *              resident (a few percent of a model);
 *   SD_W_HOST  read on the host only (CLIP's embedding tables): never
 *              copied.
 * All models on one backend share one sd_vram: a budget of device bytes
 * and one pool of device memory for the blocks.  The F32 weights are
 * allocated outside the pool but counted in the budget.  When every
 * block fits, all are loaded once and stay; otherwise a block is loaded
 * when a forward pass is about to run it (sd_devw_use), evicting resident
 * blocks by Belady's rule over the known cyclic schedule (a model runs its
 * blocks in order, pass after pass: the block whose next use is furthest
 * away goes first; other models' blocks before the running model's), and
 * the next block is prefetched on a copy stream while this one computes.
 * The pool is compacted (device-to-device moves) when the free bytes
 * suffice but no single gap does, so memory is as good as fungible: with
 * prefetch off the loads are exactly weft_residency_plan's for the same
 * schedule.  A prefetch may not evict the block running now (its memory
 * is still being read), which costs some loads over pure Belady: for
 * SD1.5 at --vram 1.5G, 466 instead of 378 MiB a step, mostly overlapped
 * with compute (test_sd_stream's sd15 case prints both). */
#ifndef WEFT_SD_DEVICE_H
#define WEFT_SD_DEVICE_H

#include <stdbool.h>
#include <stdint.h>

#include "sd.h"

/* true when the backend's buffers are host memory (the CPU backend). */
static inline bool sd_be_is_host(const weft_backend *be) {
  return be->iface->device_kind == WEFT_DEVICE_KIND_CPU;
}

/* ---- visiting a model's weights ------------------------------------------ */

typedef enum sd_wkind { SD_W_HALF = 0, SD_W_F32, SD_W_HOST } sd_wkind;

/* What a model's visitor calls: block() starts a new block (its name in
 * messages: "up_blocks.1"), weight() lists one array of the current block.
 * *w is the model's own pointer field: it stays valid (the model never
 * moves it) and is repointed at the device copy. */
typedef struct sd_wvisit sd_wvisit;
struct sd_attn;
struct sd_conv;
struct sd_wvisit {
  void (*block)(sd_wvisit *v, const char *name);
  void (*weight)(sd_wvisit *v, float **w, int64_t numel, sd_wkind kind);
  /* after an attention's weights (sd_wv_attn); may be NULL */
  void (*attn)(sd_wvisit *v, struct sd_attn *a);
  /* after a convolution's weights (sd_wv_conv); may be NULL */
  void (*conv)(sd_wvisit *v, struct sd_conv *c);
};
/* Lists every weight of the model, always in the same order. */
typedef void (*sd_model_visit_fn)(void *model, sd_wvisit *v);

/* The layers of sd_layers.h: matrices SD_W_HALF, biases and norms
 * SD_W_F32. */
struct sd_linear;
struct sd_conv;
struct sd_norm;
struct sd_resnet;
struct sd_attn;
void sd_wv_linear(sd_wvisit *v, struct sd_linear *l);
void sd_wv_conv(sd_wvisit *v, struct sd_conv *c);
void sd_wv_norm(sd_wvisit *v, struct sd_norm *n);
void sd_wv_resnet(sd_wvisit *v, struct sd_resnet *r);
void sd_wv_attn(sd_wvisit *v, struct sd_attn *a);

/* ---- the device memory of the models on one backend ---------------------- */

/* Asynchronous copies and 16-bit weights, supplied by the plugin for a CUDA
 * backend (sd_backend.c over kernels/cuda/stream.h); NULL members (or no
 * sd_xfer at all) mean synchronous buffer_copy and fp32 weights.  Events
 * are opaque.  Every call returns 0 or a WEFT_E* code. */
typedef struct sd_xfer {
  void *ctx;
  /* pins the n bytes at p (an image the blocks load from, filled) for
   * asynchronous uploads: 0, else p stays pageable; unpin before freeing.
   * May be NULL (pageable images) */
  int (*host_pin)(void *ctx, void *p, size_t n);
  void (*host_unpin)(void *ctx, void *p);
  void *(*event_new)(void *ctx);
  void (*event_free)(void *ctx, void *ev);
  /* records ev on the compute stream (after all work queued so far) */
  int (*record_compute)(void *ctx, void *ev);
  /* on the copy stream: waits for `after`, copies n bytes host -> device,
   * records `done`.  Staged uploads call it from several threads at once
   * (host_wait from one at a time) */
  int (*upload)(void *ctx, void *dst, const void *src, size_t n, void *after,
                void *done);
  /* the compute stream waits for ev */
  int (*compute_wait)(void *ctx, void *ev);
  /* the host waits for ev (recorded by upload); may be NULL (no staged
   * uploads: every model's blocks load from its image) */
  int (*host_wait)(void *ctx, void *ev);
  /* registers/unregisters device memory holding 16-bit weights of dtype */
  int (*mark_half)(void *ctx, void *buf, size_t n, weft_dtype dtype);
  int (*unmark_half)(void *ctx, void *buf);
  /* registers/unregisters h16 as a 16-bit copy of the fp32 weights at f32
   * (the F32 buffer: biases then read from the copy; may be NULL) */
  int (*mark_mirror)(void *ctx, const float *f32, size_t n, const void *h16,
                     weft_dtype dtype);
  int (*unmark_mirror)(void *ctx, const float *f32);
  /* waits for the device and returns the backend's cached free memory to
   * the driver (a caching allocator's kept blocks), so that a smaller
   * pool, an arena or the next node's scratch is not allocated beside it */
  int (*trim)(void *ctx);
  /* bounds the scratch one op of the backend may take (sd_vram_new: what
   * the budget keeps for scratch); may be NULL */
  int (*scratch_limit)(void *ctx, uint64_t bytes);
  /* whether the backend runs convolutions fastest with channels-last
   * weights (weft_conv2d_args.w_hwc); may be NULL (no) */
  bool (*conv_hwc)(void *ctx);
  /* frees ctx (with the sd_vram) */
  void (*free)(void *ctx);
} sd_xfer;

typedef struct sd_vram_stats {
  uint64_t loads; /* blocks copied host -> pool */
  uint64_t loaded_bytes;
  uint64_t prefetches; /* of those, issued ahead of use */
  uint64_t evictions;  /* blocks dropped from the pool */
  uint64_t moves;      /* blocks moved by compaction */
  uint64_t moved_bytes;
  uint64_t peak_resident; /* the most pool bytes resident at once */
  uint64_t staged;        /* of the loads, staged (no image: sd_device.c) */
  uint64_t staged_copies; /* the copies those took, a slot's each */
  /* seconds: the pool's sizing in commits; staging's slots made and
   * pinned, its threads' run (and, summed over the threads, their fills,
   * their waits for a slot's last copy and their copies' submission), and
   * the wait for the last copies */
  double t_pool, t_slots, t_stage, t_fill, t_slot_wait, t_submit, t_drain;
} sd_vram_stats;

typedef struct sd_vram sd_vram;
typedef struct sd_devw sd_devw;

/* A budget of `budget` device bytes for the weights of the models put on
 * be (UINT64_MAX: no limit).  half: WEFT_F32, or WEFT_F16/WEFT_BF16 to
 * store SD_W_HALF weights as 16-bit (needs xfer->mark_half).  xfer (may be
 * NULL) is copied; its ctx is freed with the sd_vram.  prefetch: load the
 * next block on the copy stream ahead of use (off: loads on use only,
 * exactly the decisions of weft_residency_plan).  (transfer full:
 * sd_vram_release; every model holds a reference too) */
sd_vram *sd_vram_new(weft_backend *be, uint64_t budget, weft_dtype half,
                     const sd_xfer *xfer, bool prefetch);
void sd_vram_retain(sd_vram *vr);
void sd_vram_release(sd_vram *vr);
const sd_vram_stats *sd_vram_get_stats(const sd_vram *vr);
uint64_t sd_vram_budget(const sd_vram *vr);
/* Whether the blocks are streamed (they do not all fit). */
bool sd_vram_streaming(const sd_vram *vr);
/* The pool's size in bytes (0 before a model joins). */
size_t sd_vram_pool_bytes(const sd_vram *vr);
/* The uploads that follow take the values of ck's unread params
 * (ck->defer_reads) from its files: an SD_W_HALF weight's image straight
 * from them (its master stays unread), the others read into their masters
 * first.  ck NULL ends it; ck must outlive the uploads made meanwhile.  0
 * or WEFT_ENOMEM. */
int sd_vram_defer(sd_vram *vr, sd_ckpt *ck);
/* Sizes the pool for the models joined so far and loads blocks in order
 * while they fit (all of them when nothing streams): a model with no
 * image yet through pinned slots filled straight from its masters or the
 * file, where the sd_xfer allows (WEFT_SD_STAGE=0: from images).  The
 * first sd_devw_use does it too; _to_backend does it at once.  0 or a WEFT_E*
 * code (ENOMEM: the pool cannot be allocated, sd_vram_error says so). */
int sd_vram_commit(sd_vram *vr);
/* Activations and scratch share the budget with the weights.  Keeps
 * `bytes` of it for them from now on (the pool gets the budget less the
 * always-resident weights less `bytes`), replacing the previous reserve:
 * a node reserves its planned arena (the sampler's UNet call, the VAE
 * decode) plus scratch before it runs, then sd_vram_commit resizes the
 * pool (dropping every block) before the arena is made.  The pool must
 * still hold the largest block of `running` (NULL: of every model):
 * WEFT_ERANGE otherwise, with sd_vram_error naming the block and the
 * sizes, and the reserve unchanged.  Without a budget: 0, nothing kept. */
int sd_vram_reserve(sd_vram *vr, uint64_t bytes, const struct sd_devw *running,
                    const char *why);
uint64_t sd_vram_reserved(const sd_vram *vr);
/* Before a node runs (or records, DRY) the model `running` (NULL: every
 * model), whose blocks load as it goes while the reserve is still the one
 * the previous node left: when that reserve leaves the pool smaller than
 * running's largest block (a VAE encode's large arena before a sampler),
 * drops it to `scratch` alone and resizes the pool, so that the blocks can
 * load; the node then reserves its own arena.  Without that, the first
 * block that does not fit fails the node.  0, or as sd_vram_reserve and
 * sd_vram_commit (ERANGE: not even the scratch alone leaves room). */
int sd_vram_fit(sd_vram *vr, const struct sd_devw *running, uint64_t scratch,
                const char *why);
/* The sd_xfer's trim (nothing without one): 0 or a WEFT_E* code. */
int sd_vram_trim(sd_vram *vr);
/* What the plugin reserves for one node's scratch beside its planned
 * arena on a device: the unplanned buffers the backend's ops take from its
 * caching allocator and keep there between steps -- the 16-bit im2col
 * columns (at most 64 MiB a conv, one block per power-of-two size: at
 * most 128 MiB), attention's scores, probabilities and packed q/k/v (at
 * most 112 MiB a call, one block per shape class: about 170 MiB for the
 * SD1.5 UNet), the 16-bit copies of activations a matrix product rounds
 * (up to 21 MiB each at 512x512, one per size class: about 90 MiB), the
 * cuBLASLt workspace (32 MiB), norm statistics and the text encoder's
 * activations -- about 420 MiB for SD1.5 at 512x512 (an estimate: the
 * GPU case prints the measured high-water). */
#define SD_VRAM_SCRATCH ((uint64_t)512 << 20)
/* The scratch a node keeps under vr's budget: SD_VRAM_SCRATCH, or a
 * sixteenth of a budget larger than 8 GiB (room for cuDNN's faster ways),
 * at most a third of the budget (a small model's scratch is small too); 0
 * without a budget.  The backend's per-op scratch is bounded by it
 * (sd_xfer.scratch_limit). */
uint64_t sd_vram_scratch(const sd_vram *vr);
/* Why the last call failed ("" if none): which block, how many bytes, the
 * budget.  (transfer none: until the next call on vr) */
const char *sd_vram_error(const sd_vram *vr);

/* ---- a model's weights on a device ----------------------------------------
 */

typedef struct sd_devw_entry {
  float *host;   /* the master (the array sd_weight made; in ck->params) */
  float **field; /* the model's pointer to it */
  int64_t numel;
  sd_wkind kind;
  int block;  /* its block (SD_W_HALF), -1 otherwise */
  size_t off; /* bytes into its block, or into the F32 arena */
  /* a convolution weight [c_out, hwc_cin, hwc_kk] copied channels last,
   * [c_out, hwc_kk, hwc_cin] (weft_conv2d_args.w_hwc); 0: as the master */
  int64_t hwc_cin, hwc_kk;
  /* an SD_W_HALF master not read yet (sd_vram_defer): the image is filled
   * from the file's values, src of src_dt; NULL once the master holds them */
  const void *src;
  weft_dtype src_dt;
} sd_devw_entry;

typedef struct sd_devw_block {
  char name[64];
  size_t bytes;     /* its SD_W_HALF matrices, each 256-byte aligned */
  size_t img_off;   /* where it starts in the host image */
  int64_t pool_off; /* where it is in the pool, -1 when not resident */
  int first, n;     /* its entries: e[first .. first + n) */
  void *copy_ev;    /* its last upload (with an sd_xfer) */
  bool pending;     /* the compute stream has not waited for copy_ev */
  uint64_t loads;   /* times loaded */
} sd_devw_block;

/* The device copies of one model's weights. */
struct sd_devw {
  weft_backend *be;
  sd_vram *vr;
  char model[32];   /* "UNet", for messages */
  sd_devw_entry *e; /* in visiting order */
  int n;
  int *sorted; /* entry indices by host address, for lookups */
  sd_devw_block *blk;
  int n_blocks;
  void *f32; /* the SD_W_F32 weights (one buffer of be) */
  size_t f32_bytes;
  void *f32h;  /* their fp16 mirror (fp16 products; sd_xfer.mark_mirror) */
  /* the blocks as uploaded (16-bit or fp32), host; NULL while the model
   * needs none (its blocks staged: sd_device.c) */
  void *image;
  size_t image_bytes;
  bool image_pinned;  /* by the copy stream's host_pin (else pageable) */
  size_t elem;        /* 2 or 4: bytes per SD_W_HALF element */
  int pos;            /* the block used last, -1 */
  size_t arena_bytes; /* device bytes: blocks + F32 weights */
  /* seconds the upload took to allocate, fill and pin the image (the
   * loader logs them) */
  double t_image, t_fill, t_pin;
  /* the model and its visit: release unmarks its stacked attentions */
  void *owner;
  sd_model_visit_fn visit;
  /* attentions whose q/k/v (else k/v) products are stacked */
  int n_fused_qkv, n_fused_kv;
  /* convolution weights copied channels last */
  bool want_hwc;
  int n_hwc;
  uint64_t syncs; /* sd_devw_sync calls: values derived from the weights
                     are stale when it has moved (sd_devw_syncs) */
};

/* Seconds on the monotonic clock (load phases, logged). */
double sd_mono_s(void);

/* Puts a model on vr's backend: the F32 weights into a buffer there, the
 * blocks into a host image (16-bit when vr says so), and into the pool at
 * sd_vram_commit (or the first use); the model's pointers then lead to
 * device memory (NULL for a block not resident).  On failure the model is left
 * as it was: WEFT_ERANGE when one block alone exceeds what the budget leaves
 * for it (sd_vram_error names it), WEFT_ENOMEM, or a copy's error.  `model`
 * names it in messages.  hwc: its convolutions may take channels-last
 * weights where the backend runs them faster so (the UNet's, ControlNet's
 * and VAE's: CUDA's NHWC convolutions at any map size; the text encoder
 * has none).  (transfer full: sd_devw_release, before the backend is freed; it holds
 * a reference to vr) */
int sd_devw_upload(void *model, sd_model_visit_fn visit, sd_vram *vr,
                   const char *name, bool hwc, sd_devw **out);
/* Points the model back at its host arrays (reading the values of any
 * still unread: the model runs on the host next), frees its device memory
 * and dw (NULL: nothing). */
void sd_devw_release(sd_devw *dw);
/* The same where the model is freed next: unread masters stay unread. */
void sd_devw_discard(sd_devw *dw);
/* Makes block b resident before a forward pass runs it (loading it now,
 * or waiting for its prefetch), then prefetches the model's next block.
 * 0 for dw NULL (a host model); else 0 or a WEFT_E* code. */
int sd_devw_use(sd_devw *dw, int b);
/* The device copy of a host master, or NULL when it is not one of dw's or
 * its block is not resident (16-bit when the block is). */
float *sd_devw_find(const sd_devw *dw, const float *host);
/* After a LoRA merge changed a host master: its 16-bit/fp32 image and, if
 * resident, its device copy follow.  0 (also for SD_W_HOST weights),
 * WEFT_ENOENT when host is not one of dw's, or the copy's error. */
int sd_devw_sync(sd_devw *dw, const float *host);
/* The block index named `name`, or -1. */
int sd_devw_block_index(const sd_devw *dw, const char *name);
/* Whether every block of dw is in the pool now (none streamed). */
bool sd_devw_resident(const sd_devw *dw);
/* dw's sd_devw_sync count (0 for NULL) */
static inline uint64_t sd_devw_syncs(const sd_devw *dw) {
  return dw ? dw->syncs : 0;
}

/* Each model on a backend.  _to_backend: on a private sd_vram with the
 * budget WEFT_VRAM names (unset: no limit), fp32 weights and synchronous
 * copies; _to_vram: on a shared one (the plugin's, sd_backend.c).  A
 * no-op (0) on a host backend.  The model then runs on that backend only,
 * and the backend must outlive it. */
int sd_clip_to_backend(sd_clip *m, weft_backend *be);
int sd_unet_to_backend(sd_unet *m, weft_backend *be);
int sd_vae_to_backend(sd_vae *m, weft_backend *be);
int sd_cnet_to_backend(sd_cnet *m, weft_backend *be);
int sd_clip_to_vram(sd_clip *m, sd_vram *vr);
int sd_unet_to_vram(sd_unet *m, sd_vram *vr);
int sd_vae_to_vram(sd_vae *m, sd_vram *vr);
int sd_cnet_to_vram(sd_cnet *m, sd_vram *vr);
/* Each model back on the host: its device weights released (nothing if
 * it has none); it then runs on a host backend only. */
void sd_clip_to_host(sd_clip *m);
void sd_unet_to_host(sd_unet *m);
void sd_vae_to_host(sd_vae *m);
void sd_cnet_to_host(sd_cnet *m);
/* The budget WEFT_VRAM sets (decimal bytes), or dflt when unset; -1 with
 * a message in err when it is not a positive number. */
int sd_vram_env_budget(uint64_t dflt, uint64_t *out, char *err, size_t n);
/* The private budget of one model's _to_backend: WEFT_VRAM (else no
 * limit), fp32 weights, no copy stream.  NULL with *r = 0 on a host
 * backend (nothing to do), or with *r a WEFT_E* code.  (transfer full) */
sd_vram *sd_vram_private(weft_backend *be, int *r);
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
/* A ControlNet's two parts: its UNet encoder's and its own layers'. */
sd_devw *sd_cnet_devw(const sd_cnet *m, bool encoder);

/* ---- the plugin's side (sd_backend.c; not in the model library) ---------- */

/* The sd_vram for the models a loader puts on device backend be: the
 * budget WEFT_VRAM says (default: on CUDA the device's free memory less a
 * margin for activations, a fifth and at least 2 GiB; elsewhere no
 * limit), 16-bit matrices when the backend computes in fp16/bf16, uploads
 * with prefetch, on a copy stream on CUDA (the emulated device has none:
 * its loads, the prefetches too, are synchronous and fp32).  Logs the
 * choice ("the checkpoint: weights on cuda within 1536.0 MiB (WEFT_VRAM),
 * fp16 matrices").  NULL after c->host->error with *code set.  (transfer
 * full: sd_vram_release) */
sd_vram *sd_vram_for(weft_call *c, weft_backend *be, const char *what,
                     int *code);
/* (Built with CUDA only.)  The sd_xfer of a CUDA backend: a new copy
 * stream, pinned images, half marking; *half the 16-bit format its
 * precision asks for (WEFT_F32 in FP32 mode).  0, or a WEFT_E* code with
 * the reason in err.  (transfer full: pass it to sd_vram_new, which frees
 * it) */
int sd_cuda_xfer(weft_backend *be, sd_xfer *out, weft_dtype *half, char *err,
                 size_t n);
/* Records a failed _to_vram: sd_vram_error's words when it has some (a
 * budget too small names the block and the sizes), else as
 * sd_model_error. */
void sd_vram_report(weft_call *c, const weft_backend *be, const sd_vram *vr,
                    int r, const char *what);
/* Logs whether the models fit (resident) or stream, and the pool's size. */
void sd_vram_log(weft_call *c, const sd_vram *vr, const char *what);
/* After a model node on CUDA: logs (INFO) the caching allocator's
 * high-water (weft_cuda_mem_stats peak_reserved: every byte weft holds
 * from the driver, the CUDA context aside) against vr's budget ("VAE
 * decode: device high-water 1402 MiB of --vram 1536 MiB ...").  On the
 * emulated device the same line with the most bytes its buffers held at
 * once since the backend was made.  Nothing on the CPU.  vr may be
 * NULL. */
void sd_vram_log_use(weft_call *c, const weft_backend *be, const sd_vram *vr,
                     const char *what);

/* ---- host I/O of the forward passes
 * ------------------------------------------ */

/* An input of n floats in host memory (may be NULL: *buf NULL) as backend
 * activations (backend.h: in the backend's activation dtype): on a host
 * backend the pointer itself, else a new buffer with a copy in *tmp (free
 * with sd_free).  0 or a WEFT_E* code.  sd_io_in_f32 keeps fp32 whatever
 * the activation dtype (timesteps: timestep_embedding's t). */
int sd_io_in(weft_backend *be, const float *host, int64_t n, const float **buf,
             float **tmp);
int sd_io_in_f32(weft_backend *be, const float *host, int64_t n,
                 const float **buf, float **tmp);
/* The same for an input of n floats already in backend memory (fp32): the
 * pointer itself when activations are fp32, else a converted copy. */
int sd_io_in_dev(weft_backend *be, const float *dev, int64_t n,
                 const float **buf, float **tmp);
/* Where an output of n floats is written: host itself on a host backend,
 * else a new activation buffer in *tmp.  0 or WEFT_ENOMEM. */
int sd_io_out(weft_backend *be, float *host, int64_t n, float **buf,
              float **tmp);
/* Copies an output made by sd_io_out to host as floats (after the queued
 * work; a copy error also reports an earlier asynchronous failure) and
 * frees tmp; nothing for a host backend (tmp NULL).  Returns rc when rc is
 * non-zero (the work failed: nothing is copied). */
int sd_io_done(weft_backend *be, int rc, float *host, float *tmp, int64_t n);
/* n activations of a device backend from / to n host floats (synchronous;
 * converted when activations are not fp32).  0 or a WEFT_E* code. */
int sd_act_upload(weft_backend *be, float *dev, const float *host, int64_t n);
int sd_act_download(weft_backend *be, float *host, const float *dev, int64_t n);

/* ---- planned model calls under the budget (sd_denoise.c) ----------------- */

#include "sd_plan.h"

/* Before a sampler's first step: records the UNet call step 1 makes (at x
 * and sigma) on the recorder that call uses, without computing (DRY), so
 * that step 1 replays from the planned arena as every later step does (a
 * traced step 1 would hold its buffers in the backend's cache beside the
 * arena).  With a ControlNet its residuals (the sampler's ControlNets
 * recorded DRY too, or a control callback's own) choose the recorder,
 * with or without them, as in a step; the other recorder, if a later step
 * needs it, records then.
 * *arena gets the arena's size.  On a host backend nothing is recorded: 0
 * with *arena 0.  0 or the forward's WEFT_E* code. */
int sd_denoise_plan_dry(sd_denoise_plan *p, const float *x, float sigma,
                        uint64_t *arena);
/* sd_plan_call (dry_only false) with the activations in vr's budget: after
 * the recording, sd_vram_reserve(arena + scratch, running, why) and
 * sd_vram_commit resize the pool and sd_vram_trim empties the cache before
 * the arena is made.  vr NULL: sd_plan_call.  WEFT_ERANGE when the budget
 * cannot hold them (sd_vram_error says why); else fn's code. */
int sd_plan_call_vram(weft_backend *be, sd_vram *vr, const sd_devw *running,
                      uint64_t scratch, const char *why,
                      int (*fn)(void *user, weft_backend *be), void *user,
                      weft_rec_stats *st);

#endif
