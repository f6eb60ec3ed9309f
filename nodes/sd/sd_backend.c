/* sd_backend.c - which backend the sd plugin's models run on, from
 * WEFT_DEVICE (cpu, cuda, emulated or auto; `weft run --device` sets it),
 * the device memory their weights may take (WEFT_VRAM; `weft run --vram`
 * sets it), the copy stream and 16-bit weights of a CUDA device, and the
 * device's own words when a model call fails there.  The emulated device
 * (kernels/emulated.h) takes every device path but those of real CUDA:
 * weights, streaming, arenas and copies, without a copy stream or 16-bit
 * weights; with fp32 activations unless WEFT_CUDA_ACT=16 (a CUDA device's
 * default) is set. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/emulated.h"
#include "sd_device.h"
#include "sd_nodes.h"

#if WEFT_SD_CUDA
#include "kernels/cuda/cuda.h"
#include "kernels/cuda/stream.h"
#endif

weft_backend *sd_backend_new(weft_call *c, const char *what, int *code) {
  const weft_host *h = c->host;
  const char *dev = getenv("WEFT_DEVICE");
  bool automatic = !dev || !*dev || !strcmp(dev, "auto");
  bool cuda = false;
  if (automatic) {
#if WEFT_SD_CUDA
    cuda = weft_cuda_available();
#endif
  } else if (!strcmp(dev, "cuda")) {
#if WEFT_SD_CUDA
    cuda = true;
#else
    h->error(c, "WEFT_DEVICE=cuda: this weft was built without CUDA "
                "(configure it with -Dcuda=enabled)");
    *code = WEFT_EUNSUPPORTED;
    return NULL;
#endif
  } else if (!strcmp(dev, "emulated")) {
    weft_backend *be = weft_backend_emulated_new(h->threads(c));
    if (!be) {
      h->error(c, "cannot start the emulated device");
      *code = WEFT_ENOMEM;
      return NULL;
    }
    /* fp32 activations (the CPU's numbers bit for bit) unless
     * WEFT_CUDA_ACT=16 asks for a CUDA device's 16-bit ones */
    const char *act = getenv("WEFT_CUDA_ACT");
    const bool act16 = act && !strcmp(act, "16");
    if (act16) weft_emulated_set_act_dtype(be, WEFT_F16);
    h->log(c, WEFT_LOG_INFO,
           "%s runs on the emulated device (CPU kernels behind device "
           "pointers; for tests)%s",
           what, act16 ? ", 16-bit activations" : "");
    return be;
  } else if (strcmp(dev, "cpu") != 0) {
    h->error(c, "WEFT_DEVICE=%s: expected cpu, cuda, emulated or auto", dev);
    *code = WEFT_EINVAL;
    return NULL;
  }
#if WEFT_SD_CUDA
  if (cuda) {
    char err[512] = "";
    weft_backend *be = weft_backend_cuda_new_ex(NULL, err, sizeof err);
    if (be && weft_cuda_set_act_auto(be) != 0) {
      h->error(c, "%s", weft_cuda_last_error(be));
      weft_backend_free(be);
      *code = WEFT_EINVAL;
      return NULL;
    }
    if (be) {
      h->log(c, WEFT_LOG_INFO, "%s runs on CUDA device 0 (%s)", what,
             weft_cuda_device_name(be));
      weft_cuda_plan_stats ps;
      if (weft_cuda_plan_stats_get(be, &ps) == 0)
        h->log(c, WEFT_LOG_DEBUG,
               "CUDA device 0 started: context, stream and limits %.3f s, "
               "cuBLASLt %.3f s",
               ps.start_context_s, ps.start_lt_s);
      /* the convolutions' library loads while the weights do */
      weft_cuda_start_cudnn(be);
      return be;
    }
    if (!automatic) {
      h->error(c, "WEFT_DEVICE=cuda: cannot use CUDA device 0: %s", err);
      *code = WEFT_EDEVICE;
      return NULL;
    }
    h->log(c, WEFT_LOG_WARN,
           "CUDA device 0 cannot be used (%s): %s runs "
           "on the CPU",
           err, what);
  }
#else
  (void)cuda;
  (void)what;
#endif
  weft_backend *be = weft_backend_cpu_new(h->threads(c));
  if (!be) {
    h->error(c, "cannot start the CPU backend");
    *code = WEFT_ENOMEM;
  }
  return be;
}

static const char *err_text(int r) {
  switch (r) {
#define SD_ERR_TEXT(name, msg, bad)                                            \
  case WEFT_##name: return msg;
    WEFT_ERRNO_MAP(SD_ERR_TEXT)
#undef SD_ERR_TEXT
  default: return "error";
  }
}

void sd_model_error(weft_call *c, const weft_backend *be, int r,
                    const char *what) {
  if (sd_be_is_host(be)) {
    c->host->error(c, "%s", what);
    return;
  }
  const char *why = "";
#if WEFT_SD_CUDA
  if (weft_backend_is_cuda(be)) why = weft_cuda_last_error(be);
#endif
  c->host->error(c, "%s on %s: %s%s%s", what, be->iface->name, err_text(r),
                 *why ? ": " : "", why);
}

/* ---- the weights' device memory ----------------------------------------- */

#if WEFT_SD_CUDA
/* sd_xfer over a copy stream of the backend (kernels/cuda/stream.h) */
typedef struct cuda_xfer {
  weft_cuda_copier *cp;
  weft_backend *be;
} cuda_xfer;

static int cx_host_pin(void *u, void *p, size_t n) {
  return weft_cuda_host_pin(((cuda_xfer *)u)->cp, p, n);
}
static void cx_host_unpin(void *u, void *p) {
  weft_cuda_host_unpin(((cuda_xfer *)u)->cp, p);
}
static void *cx_event_new(void *u) {
  return weft_cuda_event_new(((cuda_xfer *)u)->cp);
}
static void cx_event_free(void *u, void *ev) {
  weft_cuda_event_free(((cuda_xfer *)u)->cp, ev);
}
static int cx_record(void *u, void *ev) {
  return weft_cuda_record_compute(((cuda_xfer *)u)->cp, ev);
}
static int cx_upload(void *u, void *dst, const void *src, size_t n, void *after,
                     void *done) {
  return weft_cuda_copy_async(((cuda_xfer *)u)->cp, dst, src, n, after, done);
}
static int cx_host_wait(void *u, void *ev) {
  return weft_cuda_event_wait(((cuda_xfer *)u)->cp, ev);
}
static int cx_wait(void *u, void *ev) {
  return weft_cuda_wait_compute(((cuda_xfer *)u)->cp, ev);
}
static int cx_mark(void *u, void *buf, size_t n, weft_dtype dt) {
  return weft_cuda_mark_half_as(((cuda_xfer *)u)->be, buf, n, dt);
}
static int cx_unmark(void *u, void *buf) {
  return weft_cuda_unmark_half(((cuda_xfer *)u)->be, buf);
}
static int cx_mark_mirror(void *u, const float *f32, size_t n, const void *h16,
                          weft_dtype dt) {
  return weft_cuda_mark_mirror(((cuda_xfer *)u)->be, f32, n, h16, dt);
}
static int cx_unmark_mirror(void *u, const float *f32) {
  return weft_cuda_unmark_mirror(((cuda_xfer *)u)->be, f32);
}
static int cx_trim(void *u) {
  return weft_cuda_trim(((cuda_xfer *)u)->be);
}
static int cx_scratch_limit(void *u, uint64_t bytes) {
  return weft_cuda_set_scratch_limit(((cuda_xfer *)u)->be,
                                     bytes < SIZE_MAX ? (size_t)bytes : 0);
}
static bool cx_conv_hwc(void *u) {
  return weft_cuda_conv_hwc(((cuda_xfer *)u)->be);
}
static void cx_free(void *u) {
  cuda_xfer *x = u;
  weft_cuda_copier_free(x->cp);
  free(x);
}

int sd_cuda_xfer(weft_backend *be, sd_xfer *out, weft_dtype *half, char *err,
                 size_t n) {
  weft_cuda_precision p = weft_cuda_get_precision(be);
  *half = p == WEFT_CUDA_FP16   ? WEFT_F16
          : p == WEFT_CUDA_BF16 ? WEFT_BF16
                                : WEFT_F32;
  cuda_xfer *cx = calloc(1, sizeof *cx);
  if (!cx) {
    snprintf(err, n, "out of memory");
    return WEFT_ENOMEM;
  }
  if (!(cx->cp = weft_cuda_copier_new(be, err, n))) {
    free(cx);
    return WEFT_EDEVICE;
  }
  cx->be = be;
  *out = (sd_xfer){.ctx = cx,
                   .host_pin = cx_host_pin,
                   .host_unpin = cx_host_unpin,
                   .event_new = cx_event_new,
                   .event_free = cx_event_free,
                   .record_compute = cx_record,
                   .upload = cx_upload,
                   .compute_wait = cx_wait,
                   .host_wait = cx_host_wait,
                   .mark_half = cx_mark,
                   .unmark_half = cx_unmark,
                   .mark_mirror = cx_mark_mirror,
                   .unmark_mirror = cx_unmark_mirror,
                   .trim = cx_trim,
                   .scratch_limit = cx_scratch_limit,
                   .conv_hwc = cx_conv_hwc,
                   .free = cx_free};
  return 0;
}

/* The default budget on a device with `free` bytes free: what is left
 * after a margin for activations and scratch (a fifth, at least 2 GiB;
 * half when the device has less than 4 GiB free). */
static uint64_t default_budget(uint64_t free_bytes) {
  const uint64_t gib = (uint64_t)1 << 30;
  if (free_bytes < 4 * gib) return free_bytes / 2;
  uint64_t margin = free_bytes / 5 > 2 * gib ? free_bytes / 5 : 2 * gib;
  return free_bytes - margin;
}
#endif

sd_vram *sd_vram_for(weft_call *c, weft_backend *be, const char *what,
                     int *code) {
  const weft_host *h = c->host;
  *code = 0;
  uint64_t dflt = UINT64_MAX, budget;
  const char *from = "no limit";
  weft_dtype half = WEFT_F32;
  sd_xfer *xp = NULL;
#if WEFT_SD_CUDA
  sd_xfer xf;
  if (weft_backend_is_cuda(be)) {
    size_t fr = 0, tot = 0;
    if (!weft_cuda_mem_info(be, &fr, &tot)) {
      dflt = default_budget(fr);
      from = "the device's free memory less a margin for activations";
    }
    char err[256] = "";
    if (!sd_cuda_xfer(be, &xf, &half, err, sizeof err)) {
      xp = &xf;
    } else {
      h->log(c, WEFT_LOG_WARN,
             "%s: no copy stream (%s): weights load synchronously, in fp32",
             what, err);
      half = WEFT_F32;
    }
  }
#endif
  char err[256];
  if (sd_vram_env_budget(dflt, &budget, err, sizeof err)) {
    if (xp) xp->free(xp->ctx);
    h->error(c, "%s", err);
    *code = WEFT_EINVAL;
    return NULL;
  }
  if (getenv("WEFT_VRAM") && *getenv("WEFT_VRAM")) from = "WEFT_VRAM";
  sd_vram *vr = sd_vram_new(be, budget, half, xp, true);
  if (!vr) {
    h->error(c, "out of memory");
    *code = WEFT_ENOMEM;
    return NULL;
  }
  /* until a node plans its arena, scratch is what the budget keeps
   * beside the weights (the text encoder's activations are in it too) */
  if (budget != UINT64_MAX && !sd_be_is_host(be)) {
    sd_vram_reserve(vr, sd_vram_scratch(vr), NULL, NULL); /* no models yet:
                                                            cannot fail */
  }
  if (budget == UINT64_MAX)
    h->log(c, WEFT_LOG_INFO, "%s: weights on %s without a budget (%s)", what,
           be->iface->name, half == WEFT_F32 ? "fp32" : "16-bit matrices");
  else
    h->log(c, WEFT_LOG_INFO, "%s: weights on %s within %.1f MiB (%s), %s", what,
           be->iface->name, (double)budget / 1048576.0, from,
           half == WEFT_F32   ? "fp32"
           : half == WEFT_F16 ? "fp16 matrices"
                              : "bf16 matrices");
  return vr;
}

void sd_vram_report(weft_call *c, const weft_backend *be, const sd_vram *vr,
                    int r, const char *what) {
  const char *why = vr ? sd_vram_error(vr) : "";
  if (*why)
    c->host->error(c, "%s: %s", what, why);
  else
    sd_model_error(c, be, r, what);
}

void sd_vram_log(weft_call *c, const sd_vram *vr, const char *what) {
  const sd_vram_stats *st = sd_vram_get_stats(vr);
  if (sd_vram_streaming(vr))
    c->host->log(c, WEFT_LOG_INFO,
                 "%s: the weights do not fit the budget: blocks stream "
                 "through a %.1f MiB pool (%" PRIu64 " loaded so far)",
                 what, (double)sd_vram_pool_bytes(vr) / 1048576.0, st->loads);
  else
    c->host->log(c, WEFT_LOG_INFO, "%s: all weights resident (%.1f MiB)", what,
                 (double)sd_vram_pool_bytes(vr) / 1048576.0);
}

void sd_vram_log_use(weft_call *c, const weft_backend *be, const sd_vram *vr,
                     const char *what) {
  const weft_backend *root = weft_backend_root(be);
  uint64_t peak, held;
  const char *whose;
  if (weft_backend_is_emulated(root)) {
    /* no cache: every byte handed out, weights, arenas and scratch */
    peak = weft_emulated_peak_bytes(root);
    held = weft_emulated_live_bytes(root);
    whose = "the emulated device's allocations";
  } else {
#if WEFT_SD_CUDA
    weft_cuda_mem_stats ms;
    if (!weft_backend_is_cuda(root) || weft_cuda_mem_stats_get(root, &ms))
      return;
    peak = ms.peak_reserved;
    held = ms.reserved;
    whose = "weft's allocations; the CUDA context is outside them";
#else
    return;
#endif
  }
  const double M = 1048576.0;
  uint64_t budget = vr ? sd_vram_budget(vr) : UINT64_MAX;
  char bud[64] = "no --vram budget";
  if (budget != UINT64_MAX)
    snprintf(bud, sizeof bud, "--vram %.0f MiB", (double)budget / M);
  c->host->log(c, WEFT_LOG_INFO,
               "%s: device high-water %.0f MiB of %s (%s): weights pool "
               "%.0f MiB, %.0f MiB kept for activations and scratch, %.0f "
               "MiB held now",
               what, (double)peak / M, bud, whose,
               vr ? (double)sd_vram_pool_bytes(vr) / M : 0.0,
               vr ? (double)sd_vram_reserved(vr) / M : 0.0, (double)held / M);
#if WEFT_SD_CUDA
  /* what a fresh process's first calls paid on the host, so far (a CUDA
   * root here: the emulated device has no plans) */
  weft_cuda_plan_stats ps;
  if (weft_cuda_plan_stats_get(root, &ps) == 0)
    c->host->log(c, WEFT_LOG_INFO,
                 "%s: plans made so far: cuDNN %llu in %.3f s (%llu of "
                 "them from their files, %llu written), cuBLASLt %llu in "
                 "%.3f s; %.3f s waiting for cuDNN's start; weft's kernels "
                 "loaded ahead: %llu in %.3f s",
                 what, (unsigned long long)ps.cudnn_plans, ps.cudnn_s,
                 (unsigned long long)ps.cudnn_kept,
                 (unsigned long long)ps.cudnn_stored,
                 (unsigned long long)ps.lt_plans, ps.lt_s, ps.cudnn_wait_s,
                 (unsigned long long)ps.preloaded, ps.preload_s);
#endif
}
