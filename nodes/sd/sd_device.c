/* sd_device.c - a model's weights in one buffer of a device backend, with
 * the host arrays kept as masters, and the host<->backend copies of the
 * forward passes' inputs and outputs (see sd_device.h). */
#include "sd_device.h"

#include <stdlib.h>
#include <string.h>

#include "sd_layers.h"

/* every weight starts on a 256-byte boundary (cuBLAS and cuDNN want at
 * least 16) */
#define SD_ALIGN_FLOATS 64

static int64_t padded(int64_t numel) {
  return (numel + SD_ALIGN_FLOATS - 1) / SD_ALIGN_FLOATS * SD_ALIGN_FLOATS;
}

typedef struct count_ctx {
  int n;
  int64_t floats;
} count_ctx;

static void count_one(void *user, float **w, int64_t numel) {
  (void)w;
  count_ctx *c = user;
  c->n++;
  c->floats += padded(numel);
}

typedef struct upload_ctx {
  sd_devw *dw;
  int64_t off; /* floats into the arena */
  int cap;
  int rc;
} upload_ctx;

static void upload_one(void *user, float **w, int64_t numel) {
  upload_ctx *u = user;
  sd_devw *dw = u->dw;
  if (u->rc) return;
  if (dw->n == u->cap) { /* the counting pass and this one disagree */
    u->rc = WEFT_EINVAL;
    return;
  }
  float *dev = (float *)dw->arena + u->off;
  u->rc = dw->be->iface->buffer_copy(
      dw->be, dev, *w, (size_t)numel * sizeof(float), WEFT_COPY_HOST_TO_DEVICE);
  if (u->rc) return;
  dw->e[dw->n++] = (sd_devw_entry){*w, dev, numel};
  *w = dev;
  u->off += padded(numel);
}

typedef struct restore_ctx {
  sd_devw *dw;
  int i;
} restore_ctx;

/* the i-th array visited is the i-th entry: the visiting order is fixed */
static void restore_one(void *user, float **w, int64_t numel) {
  (void)numel;
  restore_ctx *r = user;
  if (r->i < r->dw->n && *w == r->dw->e[r->i].dev) *w = r->dw->e[r->i].host;
  r->i++;
}

static int cmp_host(const void *a, const void *b) {
  uintptr_t x = (uintptr_t)((const sd_devw_entry *)a)->host;
  uintptr_t y = (uintptr_t)((const sd_devw_entry *)b)->host;
  return x < y ? -1 : x > y;
}

static void devw_free(sd_devw *dw) {
  if (dw->arena) dw->be->iface->buffer_free(dw->be, dw->arena);
  free(dw->e);
  free(dw->sorted);
  free(dw);
}

int sd_devw_upload(void *model, sd_visit_fn visit, weft_backend *be,
                   sd_devw **out) {
  *out = NULL;
  count_ctx c = {0, 0};
  visit(model, count_one, &c);
  sd_devw *dw = calloc(1, sizeof *dw);
  if (!dw) return WEFT_ENOMEM;
  dw->be = be;
  dw->e = malloc((size_t)(c.n ? c.n : 1) * sizeof *dw->e);
  dw->sorted = malloc((size_t)(c.n ? c.n : 1) * sizeof *dw->sorted);
  dw->arena_bytes = (size_t)c.floats * sizeof(float);
  if (!dw->e || !dw->sorted) {
    devw_free(dw);
    return WEFT_ENOMEM;
  }
  if (c.floats && !(dw->arena = be->iface->buffer_alloc(be, dw->arena_bytes))) {
    devw_free(dw);
    return WEFT_ENOMEM;
  }
  upload_ctx u = {dw, 0, c.n, 0};
  visit(model, upload_one, &u);
  if (u.rc) {
    restore_ctx r = {dw, 0};
    visit(model, restore_one, &r);
    devw_free(dw);
    return u.rc;
  }
  memcpy(dw->sorted, dw->e, (size_t)dw->n * sizeof *dw->e);
  qsort(dw->sorted, (size_t)dw->n, sizeof *dw->sorted, cmp_host);
  *out = dw;
  return 0;
}

void sd_devw_release(sd_devw *dw, void *model, sd_visit_fn visit) {
  if (!dw) return;
  restore_ctx r = {dw, 0};
  visit(model, restore_one, &r);
  devw_free(dw);
}

static const sd_devw_entry *entry_of(const sd_devw *dw, const float *host) {
  if (!dw || !dw->n) return NULL;
  sd_devw_entry key = {(float *)host, NULL, 0};
  return bsearch(&key, dw->sorted, (size_t)dw->n, sizeof *dw->sorted, cmp_host);
}

float *sd_devw_find(const sd_devw *dw, const float *host) {
  const sd_devw_entry *e = entry_of(dw, host);
  return e ? e->dev : NULL;
}

int sd_devw_sync(sd_devw *dw, const float *host) {
  const sd_devw_entry *e = entry_of(dw, host);
  if (!e) return WEFT_ENOENT;
  /* on the backend's stream: after every queued use of the old values */
  return dw->be->iface->buffer_copy(dw->be, e->dev, e->host,
                                    (size_t)e->numel * sizeof(float),
                                    WEFT_COPY_HOST_TO_DEVICE);
}

/* ---- host I/O
 * ------------------------------------------------------------------ */

int sd_io_in(weft_backend *be, const float *host, int64_t n, const float **buf,
             float **tmp) {
  *tmp = NULL;
  if (!host || sd_be_is_host(be)) {
    *buf = host;
    return 0;
  }
  float *d = sd_alloc(be, n);
  if (!d) return WEFT_ENOMEM;
  int rc = be->iface->buffer_copy(be, d, host, (size_t)n * sizeof(float),
                                  WEFT_COPY_HOST_TO_DEVICE);
  if (rc) {
    sd_free(be, d);
    return rc;
  }
  *buf = *tmp = d;
  return 0;
}

int sd_io_out(weft_backend *be, float *host, int64_t n, float **buf,
              float **tmp) {
  *tmp = NULL;
  if (sd_be_is_host(be)) {
    *buf = host;
    return 0;
  }
  if (!(*buf = *tmp = sd_alloc(be, n))) return WEFT_ENOMEM;
  return 0;
}

int sd_io_done(weft_backend *be, int rc, float *host, float *tmp, int64_t n) {
  if (!tmp) return rc;
  if (!rc)
    rc = be->iface->buffer_copy(be, host, tmp, (size_t)n * sizeof(float),
                                WEFT_COPY_DEVICE_TO_HOST);
  sd_free(be, tmp);
  return rc;
}
