/* record.h - a backend wrapper that records the buffers a forward pass
 * allocates and replays them from one planned arena (memory planning of
 * activations, as ggml-alloc's graph allocator but over the op stream of
 * unchanged model code).
 *
 * A weft_rec wraps an inner backend (CPU or CUDA) and is itself a
 * weft_backend: model code runs on weft_rec_backend(rec) as on any
 * backend.  Time is the index of an op in the pass (every compute op and
 * every buffer_copy advances it).  A buffer lives from the op after its
 * allocation to the last op before its free, so two buffers whose lives do
 * not meet share memory.  A pass is one of:
 *
 *   DRY     nothing is computed: ops return 0 at once.  Buffers are fake,
 *           never-dereferenced addresses over a device backend; over a host
 *           backend (whose buffers model code may touch on the host) they
 *           are real zeroed memory.  Copies do nothing but are counted.
 *           For `weft plan`: the arena of a forward without running it.
 *   TRACE   everything runs on the inner backend, allocations included,
 *           and is recorded: the first step of a sampler.
 *   REPLAY  ops run on the inner backend; the k-th allocation is served
 *           from the arena at the planned offset when its size is the
 *           recorded one (else from the inner allocator: a miss, and every
 *           later allocation of the pass goes there too); frees of arena
 *           buffers do nothing.  The arena is one inner buffer_alloc, made
 *           when a TRACE is planned (or by the first replay of a DRY plan)
 *           and kept while later plans fit in it.
 *
 * After a DRY or TRACE pass weft_rec_end plans the arena (weft_arena_plan,
 * 256-byte alignment).  The recorded sequence must be what the next passes
 * allocate: the caller keys a recording by everything that shapes the
 * forward (batch, sizes, which inputs are given).  Every buffer of a pass
 * must be freed, or no longer used, before the next pass begins.  One
 * thread at a time. */
#ifndef WEFT_KERNELS_RECORD_H
#define WEFT_KERNELS_RECORD_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "weft/plan.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum weft_rec_mode {
  WEFT_REC_PASS = 0, /* between passes: everything goes to the inner backend,
                        nothing is recorded */
  WEFT_REC_DRY,
  WEFT_REC_TRACE,
  WEFT_REC_REPLAY
} weft_rec_mode;

typedef struct weft_rec weft_rec;

typedef struct weft_rec_stats {
  /* the last recording (DRY or TRACE) and its plan */
  weft_arena_stats arena; /* arena, lower_bound, naive, peak_time */
  int32_t n_tensors;      /* buffers allocated in the pass */
  int32_t n_ops;          /* ops (and copies) in the pass */
  uint64_t h2d_bytes;     /* host-to-device copies in the pass */
  uint64_t d2h_bytes;     /* device-to-host copies */
  uint64_t d2d_bytes;
  /* since weft_rec_new */
  int32_t replays;       /* REPLAY passes begun */
  uint64_t misses;       /* replay allocations not served by the arena */
  uint64_t diverged;     /* replay passes whose frees or op count differed
                            from the recording (a keying bug) */
  uint64_t arena_allocs; /* inner buffer_alloc calls made for arenas */
  uint64_t arena_bytes;  /* size of the arena held now */
  uint64_t inner_allocs; /* buffer_alloc calls forwarded to the inner
                            backend (TRACE passes, misses, PASS mode) */
  uint64_t inner_frees;
  /* graphs (weft_rec_set_graphs) */
  int32_t graph_segments;  /* captured and in use now */
  uint64_t graph_launches; /* since weft_rec_new */
  uint64_t graph_failures; /* passes whose graphs failed (then given up) */
} weft_rec_stats;

/* A recorder over inner (borrowed: it must outlive the recorder).
 * NULL when out of memory.  (transfer full: weft_rec_free) */
weft_rec *weft_rec_new(weft_backend *inner);
/* Frees the arena (through the inner backend) and the recorder. */
void weft_rec_free(weft_rec *r);
/* The backend to run model code on.  (transfer none: valid while r is;
 * weft_backend_free on it frees r) */
weft_backend *weft_rec_backend(weft_rec *r);
weft_backend *weft_rec_inner(const weft_rec *r);

/* Starts a pass.  DRY and TRACE drop the previous recording; REPLAY needs
 * a planned recording (WEFT_EINVAL otherwise) and makes the arena if none
 * fits (WEFT_ENOMEM when the inner backend cannot).  0 or a WEFT_E* code. */
int weft_rec_begin(weft_rec *r, weft_rec_mode mode);
/* Ends the pass (the wrapper forwards everything until the next begin).
 * After DRY or TRACE: plans the arena (0, WEFT_ENOMEM); after TRACE also
 * makes it, so that the replays to come allocate nothing.  After REPLAY:
 * counts a divergence when the pass allocated or ran other than recorded.
 * Buffers still alive at the end of a recording live to its last op. */
int weft_rec_end(weft_rec *r);
/* Whether a planned recording exists. */
bool weft_rec_planned(const weft_rec *r);

/* Graphs (off unless asked; the inner backend must have graph_begin and
 * the rest, backend.h).  With them on, the first REPLAY after the
 * recording's ops first ran (a TRACE, or a REPLAY of a DRY recording: its
 * first calls may make plans or grow scratch, which a capture refuses)
 * captures its device ops: each run of ops between two host copies (or
 * synchronize calls) becomes one graph, a segment, launched where it ends;
 * every later REPLAY runs no op of the inner backend but launches the
 * segments at the same boundaries, each host copy checked against the one
 * the capture saw (device address, size, place in the pass; the host
 * address may change).  So a replay costs
 * the host copies and one launch a segment.  What a graph holds is the
 * capture's: the caller keys the recording so that every pass makes the
 * same ops with the same host arguments (scalars, shapes; only the values
 * in device buffers and what the host copies bring may change), and keeps
 * the buffers made outside the recorder (weights, kept inputs) where they
 * are.  A capture that misses the arena or diverges is dropped, and graphs
 * are off from then on.  Call between passes; calling it again drops the
 * graphs, and the replay after the next one captures anew (for a caller
 * whose buffers outside the recorder moved, or were given back). */
void weft_rec_set_graphs(weft_rec *r, bool on);
/* Whether graphs are on (asked for, and not given up). */
bool weft_rec_graphs_on(const weft_rec *r);
/* True when the last pass's results are not to be trusted: a capture or a
 * launch failed, or the pass left the captured sequence (its skipped ops
 * never ran).  Graphs are then off; running the pass again gives the
 * right results. */
bool weft_rec_graph_failed(const weft_rec *r);

void weft_rec_stats_get(const weft_rec *r, weft_rec_stats *st);
/* The recorded buffers with their planned offsets, in allocation order.
 * (transfer none: valid until the next DRY or TRACE pass) */
const weft_plan_tensor *weft_rec_tensors(const weft_rec *r, int32_t *n);

/* The backend under any recorders: the one that owns device memory (model
 * weights uploaded to it are usable through every wrapper over it). */
const weft_backend *weft_backend_root(const weft_backend *be);
/* true when be is a weft_rec's backend. */
bool weft_backend_is_rec(const weft_backend *be);

#ifdef __cplusplus
}
#endif
#endif
