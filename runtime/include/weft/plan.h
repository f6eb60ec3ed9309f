/* weft/plan.h - memory planning for a whole graph: activation arenas from
 * tensor lifetimes, and weight residency under a device memory budget.
 *
 * Both planners work on a linearised schedule: time t is the index of an op
 * (or node) in execution order.  They are pure functions of their input,
 * so a plan made once is replayed on every run with the same shapes. */
#ifndef WEFT_PLAN_H
#define WEFT_PLAN_H

#include <stdbool.h>
#include <stdint.h>

#include "weft/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- activation arenas ----------------------------------------------------
 *
 * Every tensor lives from the op that writes it (first) to the last op that
 * reads it (last), inclusive.  The planner gives each an offset in one
 * arena such that no two tensors alive at the same time overlap, trying
 * greedy-by-size with best-fit gaps (TFLite's GreedyBySizeAssignment) and
 * greedy in order of first use, and keeping the smaller arena. */

typedef struct weft_plan_tensor {
  uint64_t bytes;  /* 0 takes no space (offset 0) */
  int32_t first;   /* first op that uses it */
  int32_t last;    /* last op that uses it (>= first) */
  uint64_t offset; /* out: its place in the arena, a multiple of align */
} weft_plan_tensor;

typedef struct weft_arena_stats {
  uint64_t arena;       /* bytes the arena needs */
  uint64_t lower_bound; /* the most bytes alive at one time: no plan is
                           smaller */
  uint64_t naive;       /* the sum of all tensors (nothing shared) */
  int32_t peak_time;    /* an op where lower_bound bytes are alive */
  int strategy;         /* 0 greedy by size, 1 greedy in order */
} weft_arena_stats;

/* Sets t[i].offset for n tensors with offsets and sizes rounded up to align
 * (a power of two; 0 means 256).  Returns 0, WEFT_EINVAL for a tensor with
 * last < first or a bad align, WEFT_ENOMEM. */
int weft_arena_plan(weft_plan_tensor *t, int n, uint64_t align,
                    weft_arena_stats *stats);

/* ---- weight residency -----------------------------------------------------
 *
 * Weights come in blocks (a UNet's down blocks, a VAE's decoder, ...) used
 * in a known order.  With a budget smaller than all of them, a block not
 * resident when it is needed is loaded, evicting resident blocks whose next
 * use is furthest in the future (Belady; never used again first).  Loads
 * are the transfers to prefetch on a copy stream. */

typedef struct weft_plan_step {
  int32_t block;    /* the block used at this step */
  bool load;        /* out: it must be loaded before this step */
  int32_t n_evict;  /* out: blocks evicted to make room (in evict[]) */
  int32_t *evict;   /* out: malloc'd by the planner (or NULL): ids */
} weft_plan_step;

typedef struct weft_residency_stats {
  uint64_t loaded_bytes;  /* total bytes transferred */
  int32_t loads;          /* blocks transferred */
  uint64_t peak_resident; /* the most bytes resident at once */
} weft_residency_stats;

/* Plans n_steps uses of blocks (ids 0..n_blocks-1, sizes bytes[]) under
 * budget bytes; nothing is resident at the start.  Returns 0, WEFT_ERANGE
 * when one block alone exceeds the budget (it must be split), WEFT_EINVAL,
 * WEFT_ENOMEM.  Free the evict lists with weft_residency_free. */
int weft_residency_plan(const uint64_t *bytes, int32_t n_blocks,
                        weft_plan_step *steps, int32_t n_steps,
                        uint64_t budget, weft_residency_stats *stats);
void weft_residency_free(weft_plan_step *steps, int32_t n_steps);

#ifdef __cplusplus
}
#endif
#endif
