/* emulated.h - the emulated device: a backend for testing the device paths
 * of model code on a machine without a GPU.  It is the CPU backend's ops
 * behind buffer pointers the host cannot dereference: each buffer is
 * handed out 2^47 bytes past its real memory, a non-canonical x86-64
 * address, so a host read or write of "device" memory faults at once
 * instead of quietly working as it would on the CPU backend.  It reports
 * WEFT_DEVICE_KIND_CUDA, so model code takes its device paths -- weights
 * uploaded, inputs and outputs copied, host work done on explicit copies,
 * weights streamed under a budget, planned arenas -- while every number
 * comes from the CPU kernels: results must equal the CPU backend's bit for
 * bit, and any difference is a bug in a device path.
 *
 * It is never fast (the CPU kernels plus copies) and has none of a real
 * device's extras: no copy stream, no 16-bit weights (kernels/cuda's
 * weft_cuda_* calls refuse it: weft_backend_is_cuda is false).  The sd
 * plugin uses it with WEFT_DEVICE=emulated (`weft run --device emulated`);
 * tests use it directly.  Its ops run synchronously, on the caller's
 * thread and the CPU backend's pool. */
#ifndef WEFT_KERNELS_EMULATED_H
#define WEFT_KERNELS_EMULATED_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An emulated device over a new CPU backend of n_threads threads (as
 * weft_backend_cpu_new).  iface->name is "emulated".  NULL when out of
 * memory.  (transfer full: release with weft_backend_free) */
weft_backend *weft_backend_emulated_new(int n_threads);

/* The dtype it keeps activations in (backend.h, "Activations"): WEFT_F32,
 * the default, or WEFT_F16 / WEFT_BF16 as a CUDA backend with 16-bit
 * activations keeps them: the CPU kernels then compute on fp32 copies and
 * every op's output rounds to 16 bits, so model code's 16-bit paths (sizes,
 * conversions at its boundaries) run where there is no GPU, and results
 * are the CPU's within that rounding instead of bit for bit.  Set it
 * before any activation buffer exists.  0, or WEFT_EINVAL. */
int weft_emulated_set_act_dtype(weft_backend *be, weft_dtype dt);

/* true for a backend made by weft_backend_emulated_new. */
bool weft_backend_is_emulated(const weft_backend *be);

/* The host address behind a pointer into an emulated device's buffer (NULL
 * stays NULL), for tests that inspect device memory without a copy.
 * (transfer none) */
void *weft_emulated_host_ptr(const void *dev);

/* Buffers of the emulated device handed out and not freed yet (0 for any
 * other backend). */
int64_t weft_emulated_live_buffers(const weft_backend *be);
/* Their bytes now, and the most held at once since the backend was made or
 * the last weft_emulated_peak_reset: what a device allocator without a
 * cache would hold at most (0 for any other backend). */
uint64_t weft_emulated_live_bytes(const weft_backend *be);
uint64_t weft_emulated_peak_bytes(const weft_backend *be);
/* Starts a new high-water from the bytes held now. */
void weft_emulated_peak_reset(weft_backend *be);

#ifdef __cplusplus
}
#endif
#endif
