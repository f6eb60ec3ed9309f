/* sd_backend.c - which backend the sd plugin's models run on, from
 * WEFT_DEVICE (cpu, cuda or auto; `weft run --device` sets it), and the
 * device's own words when a model call fails there. */
#include <stdlib.h>
#include <string.h>

#include "sd_device.h"
#include "sd_nodes.h"

#if WEFT_SD_CUDA
#include "kernels/cuda/cuda.h"
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
  } else if (strcmp(dev, "cpu") != 0) {
    h->error(c, "WEFT_DEVICE=%s: expected cpu, cuda or auto", dev);
    *code = WEFT_EINVAL;
    return NULL;
  }
#if WEFT_SD_CUDA
  if (cuda) {
    char err[512] = "";
    weft_backend *be = weft_backend_cuda_new_ex(NULL, err, sizeof err);
    if (be) {
      h->log(c, WEFT_LOG_INFO, "%s runs on CUDA device 0 (%s)", what,
             weft_cuda_device_name(be));
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
