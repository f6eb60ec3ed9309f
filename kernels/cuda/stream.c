/* stream.c - the copy stream, events and pinned memory of stream.h, on
 * the device of a CUDA backend. */
#include "stream.h"

#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

struct weft_cuda_copier {
  weft_backend *be;
  cudaStream_t stream;
};

static weft__cuda_ctx *ctx_of(const weft_cuda_copier *c) {
  return WEFT__CUDA_CTX(c->be);
}

static int enter(const weft_cuda_copier *c) {
  return weft__cuda_check(ctx_of(c), cudaSetDevice(ctx_of(c)->device),
                          "cudaSetDevice");
}

weft_cuda_copier *weft_cuda_copier_new(weft_backend *be, char *err,
                                       size_t err_size) {
  if (!weft_backend_is_cuda(be)) {
    if (err_size) snprintf(err, err_size, "not a CUDA backend");
    return NULL;
  }
  weft_cuda_copier *c = calloc(1, sizeof *c);
  if (!c) {
    if (err_size) snprintf(err, err_size, "out of memory");
    return NULL;
  }
  c->be = be;
  cudaError_t e = cudaSetDevice(ctx_of(c)->device);
  if (e == cudaSuccess)
    e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
  if (e != cudaSuccess) {
    if (err_size)
      snprintf(err, err_size, "cannot create a copy stream: %s",
               cudaGetErrorString(e));
    free(c);
    return NULL;
  }
  return c;
}

void weft_cuda_copier_free(weft_cuda_copier *c) {
  if (!c) return;
  if (!enter(c)) {
    cudaStreamSynchronize(c->stream);
    cudaStreamDestroy(c->stream);
  }
  free(c);
}

void *weft_cuda_event_new(weft_cuda_copier *c) {
  cudaEvent_t ev = NULL;
  if (enter(c) ||
      weft__cuda_check(ctx_of(c),
                       cudaEventCreateWithFlags(&ev, cudaEventDisableTiming),
                       "cudaEventCreateWithFlags"))
    return NULL;
  return (void *)ev;
}

void weft_cuda_event_free(weft_cuda_copier *c, void *ev) {
  if (ev && !enter(c)) cudaEventDestroy((cudaEvent_t)ev);
}

int weft_cuda_record_compute(weft_cuda_copier *c, void *ev) {
  int rc = enter(c);
  if (rc) return rc;
  return weft__cuda_check(ctx_of(c),
                          cudaEventRecord((cudaEvent_t)ev, ctx_of(c)->stream),
                          "cudaEventRecord (compute stream)");
}

int weft_cuda_copy_async(weft_cuda_copier *c, void *dst, const void *src,
                         size_t n, void *after, void *done) {
  weft__cuda_ctx *x = ctx_of(c);
  int rc = enter(c);
  if (!rc && after)
    rc = weft__cuda_check(x,
                          cudaStreamWaitEvent(c->stream, (cudaEvent_t)after, 0),
                          "cudaStreamWaitEvent (copy stream)");
  if (!rc)
    rc = weft__cuda_check(
        x, cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, c->stream),
        "cudaMemcpyAsync (copy stream)");
  if (!rc && done)
    rc = weft__cuda_check(x, cudaEventRecord((cudaEvent_t)done, c->stream),
                          "cudaEventRecord (copy stream)");
  return rc;
}

int weft_cuda_wait_compute(weft_cuda_copier *c, void *ev) {
  int rc = enter(c);
  if (rc) return rc;
  return weft__cuda_check(
      ctx_of(c), cudaStreamWaitEvent(ctx_of(c)->stream, (cudaEvent_t)ev, 0),
      "cudaStreamWaitEvent (compute stream)");
}

int weft_cuda_event_wait(weft_cuda_copier *c, void *ev) {
  int rc = enter(c);
  if (rc) return rc;
  return weft__cuda_check(ctx_of(c), cudaEventSynchronize((cudaEvent_t)ev),
                          "cudaEventSynchronize");
}

int weft_cuda_copier_sync(weft_cuda_copier *c) {
  int rc = enter(c);
  if (rc) return rc;
  return weft__cuda_check(ctx_of(c), cudaStreamSynchronize(c->stream),
                          "cudaStreamSynchronize (copy stream)");
}

int weft_cuda_host_pin(weft_cuda_copier *c, void *p, size_t n) {
  if (enter(c)) return WEFT_EDEVICE;
  /* a refusal (no memory to lock, say) is no error of the backend's: not
   * recorded, and cleared from the runtime's last error */
  if (cudaHostRegister(p, n, cudaHostRegisterPortable) == cudaSuccess) return 0;
  (void)cudaGetLastError();
  return WEFT_EDEVICE;
}

void weft_cuda_host_unpin(weft_cuda_copier *c, void *p) {
  if (p && !enter(c)) cudaHostUnregister(p);
}

int weft_cuda_mem_info(weft_backend *be, size_t *free_bytes,
                       size_t *total_bytes) {
  if (!weft_backend_is_cuda(be)) return WEFT_EINVAL;
  weft__cuda_ctx *x = WEFT__CUDA_CTX(be);
  int rc = weft__cuda_check(x, cudaSetDevice(x->device), "cudaSetDevice");
  if (rc) return rc;
  return weft__cuda_check(x, cudaMemGetInfo(free_bytes, total_bytes),
                          "cudaMemGetInfo");
}

/* cudaLaunchHostFunc's callback runs on a CUDA driver thread, in stream
 * order, once everything queued before it is done. */
int weft_cuda_on_done(weft_backend *be, void (*fn)(void *user), void *user) {
  if (!weft_backend_is_cuda(be) || !fn) return WEFT_EINVAL;
  weft__cuda_ctx *x = WEFT__CUDA_CTX(be);
  int rc = weft__cuda_check(x, cudaSetDevice(x->device), "cudaSetDevice");
  if (rc) return rc;
  return weft__cuda_check(x, cudaLaunchHostFunc(x->stream, fn, user),
                          "cudaLaunchHostFunc (compute stream)");
}
