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
#include <stdio.h>

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

/* ---- a whole graph (weft plan) --------------------------------------------
 *
 * Plan mode walks the graph once, in topological order, on the calling
 * thread: a node with a plan callback plans (see struct weft_plan in
 * weft/plugin.h: it reports its device, weights and activation arena and
 * stores outputs of the right shapes), a node without one runs for real
 * (loaders, EmptyLatentImage: cheap), and an output node (SaveImage) is
 * skipped, as is a node fed by one.  Nothing is written and nothing is
 * cached.  The weights the nodes name are then placed by
 * weft_residency_plan (whole models as blocks) under the VRAM budget less
 * the largest activation arena of a device node, so that every node's peak
 * fits; a model larger than that streams through it.  On the CPU the
 * budget does not apply.  Weights count from their first use. */

typedef struct weft_ctx weft_ctx;
typedef struct weft_graph weft_graph;

typedef enum weft_plan_status {
  WEFT_PLAN_PLANNED = 0, /* its plan callback ran */
  WEFT_PLAN_RAN,         /* no plan callback: it ran */
  WEFT_PLAN_SKIPPED      /* an output node, or fed by a skipped node */
} weft_plan_status;

typedef struct weft_plan_row {
  const char *node_id; /* (transfer none: the graph's, valid while it is) */
  const char *op;
  int32_t device;      /* WEFT_DEVICE_CPU (-1) or a CUDA ordinal */
  weft_plan_status status;
  int32_t n_blocks;    /* weight blocks the node uses: block[] indexes */
  int32_t block[4];    /* weft_plan_report.blocks */
  uint64_t weights_bytes;    /* the node's own weights */
  uint64_t weights_resident; /* weights resident while it runs (all blocks
                                loaded so far and not evicted) */
  uint64_t weights_loaded;   /* weights transferred for it (device only) */
  uint64_t arena;            /* its activation arena */
  uint64_t arena_lower_bound;
  uint64_t arena_naive;
  uint64_t h2d, d2h;         /* activation copies (device only) */
  uint64_t transfers;        /* weights_loaded + h2d + d2h + moved_* */
  uint64_t peak;             /* weights_resident + arena */
  /* tensor inputs the runtime copies to where the node runs (ABI 1.4
   * placement: a WEFT_NODE_DEVICE node on its models' device, any other
   * on the host), host -> device and device -> host */
  uint64_t moved_h2d, moved_d2h;
} weft_plan_row;

typedef struct weft_plan_block {
  const char *name; /* "UNet" (transfer none: the plugin's) */
  uint64_t bytes;
  bool streamed;    /* larger than the budget alone: it streams through */
} weft_plan_block;

typedef struct weft_plan_report {
  weft_plan_row *rows; /* in execution order */
  int32_t n_rows;
  weft_plan_block *blocks;
  int32_t n_blocks;
  uint64_t budget;     /* device bytes; 0: unlimited */
  bool on_device;      /* some node runs on a device */
  uint64_t peak;       /* the largest row peak */
  int32_t peak_row;    /* its row, -1 when there are none */
  uint64_t weights_loaded; /* all weight transfers */
  bool arena_over_budget;  /* a device node's arena alone fills the budget */
} weft_plan_report;

/* Plans graph g (its current input values) under budget device bytes
 * (0: unlimited).  Returns 0 with *out set, or a WEFT_E* code with
 * weft_ctx_error naming the node (file:line:col) that failed.
 * (transfer full: weft_plan_report_free; g must outlive the report) */
int weft_graph_plan(weft_ctx *ctx, weft_graph *g, uint64_t budget,
                    weft_plan_report **out);
void weft_plan_report_free(weft_plan_report *r);
/* The report as a table (one row a node, then the graph's peak), or as one
 * JSON object (json != 0) with exact byte counts.  0 or WEFT_EIO. */
int weft_plan_print(const weft_plan_report *r, FILE *out, int json);

#ifdef __cplusplus
}
#endif
#endif
