/* stream.h - a copy stream beside a CUDA backend's compute stream, events
 * between the two, pinned host memory and the device's free memory: what
 * a weight streamer needs to load the next block while the current one
 * computes (nodes/sd/sd_device.c, through the sd plugin's sd_backend.c).
 *
 * Ordering: an upload waits for an event recorded on the compute stream
 * (the last uses of the memory it overwrites), runs on the copy stream and
 * records its own event, which the compute stream waits for before it
 * reads the block.  Host sources should be pinned (weft_cuda_host_pin)
 * for the copy to be asynchronous.  Every call makes the backend's device
 * current; failures are recorded where weft_cuda_last_error(be) reads
 * them. */
#ifndef WEFT_KERNELS_CUDA_STREAM_H
#define WEFT_KERNELS_CUDA_STREAM_H

#include <stddef.h>

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weft_cuda_copier weft_cuda_copier;

/* A copy stream on be's device (be must be a CUDA backend and outlive
 * it).  NULL with the reason in err (err_size bytes).  (transfer full:
 * weft_cuda_copier_free) */
weft_cuda_copier *weft_cuda_copier_new(weft_backend *be, char *err,
                                       size_t err_size);
/* Waits for the copy stream, then frees it (NULL: nothing). */
void weft_cuda_copier_free(weft_cuda_copier *c);

/* An event (timing off), NULL on failure.  (transfer full:
 * weft_cuda_event_free) */
void *weft_cuda_event_new(weft_cuda_copier *c);
void weft_cuda_event_free(weft_cuda_copier *c, void *ev);
/* Records ev on the backend's compute stream.  0 or WEFT_EDEVICE. */
int weft_cuda_record_compute(weft_cuda_copier *c, void *ev);
/* On the copy stream: waits for `after` (may be NULL), copies n bytes
 * host -> device, records `done` (may be NULL).  0 or WEFT_EDEVICE. */
int weft_cuda_copy_async(weft_cuda_copier *c, void *dst, const void *src,
                         size_t n, void *after, void *done);
/* The compute stream waits for ev (queued: the host does not block). */
int weft_cuda_wait_compute(weft_cuda_copier *c, void *ev);
/* Waits on the host until the work before ev (recorded) is done. */
int weft_cuda_event_wait(weft_cuda_copier *c, void *ev);
/* Waits on the host until everything queued on the copy stream is done. */
int weft_cuda_copier_sync(weft_cuda_copier *c);

/* Pins (page-locks) the n bytes of host memory at p, written already, for
 * the copy stream's uploads: 0, or WEFT_EDEVICE (p stays pageable; the
 * copies from it are then synchronous, and still right).  Pinning memory
 * in place costs far less than allocating pinned memory: on the H200's
 * host 2 GB of touched transparent huge pages in 0.05 s, against 0.38 s
 * a GB for cudaHostAlloc (tools/gpu/load_bench.sh).  Unpin before p is
 * freed. */
int weft_cuda_host_pin(weft_cuda_copier *c, void *p, size_t n);
void weft_cuda_host_unpin(weft_cuda_copier *c, void *p);

/* cudaMemGetInfo on be's device: 0, or WEFT_EINVAL (not CUDA) /
 * WEFT_EDEVICE. */
int weft_cuda_mem_info(weft_backend *be, size_t *free_bytes,
                       size_t *total_bytes);

/* Calls fn(user) once all work queued so far on be's compute stream is
 * done, on a CUDA driver thread: the way a deferred node (weft_host's
 * defer/complete, ABI 1.3) learns that its kernels finished - fn calls
 * host->complete.  fn must not call CUDA, and should return quickly (it
 * holds back the stream's later callbacks).  0, WEFT_EINVAL (not CUDA, or
 * fn NULL) or WEFT_EDEVICE. */
int weft_cuda_on_done(weft_backend *be, void (*fn)(void *user), void *user);

#ifdef __cplusplus
}
#endif
#endif
