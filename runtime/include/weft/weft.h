/* weft.h - the embedding API of libweft: load plugins, load a graph from
 * YAML, validate it, run it on a libuv loop, and read its events.
 *
 * Every function returns 0 or a negative WEFT_E* code (see weft/error.h);
 * weft_ctx_error() then holds a message that says where (file:line:col,
 * node id) and what to do.  Handles are created by weft_<noun>_new/_load and
 * freed by the matching _free. */
#ifndef WEFT_H
#define WEFT_H

#include <stdint.h>
#include <stdio.h>

#include "weft/error.h"
#include "weft/plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define WEFT_API __declspec(dllexport)
#else
#define WEFT_API __attribute__((visibility("default")))
#endif

/* ---- Errors ------------------------------------------------------------- */

WEFT_API const char *weft_strerror(int err);
WEFT_API const char *weft_err_name(int err);
/* Process exit code for an error: 0 ok, 2 bad input or usage, 130 cancelled,
 * 1 any other failure. */
WEFT_API int weft_exit_code(int err);
WEFT_API const char *weft_version(void);
/* The candidate closest to a misspelt name ("KSamplr" -> "KSampler"), or
 * NULL when none is close; for "did you mean" messages. */
WEFT_API const char *weft_closest_name(const char *name,
                                       const char *const *candidates, int n);

/* ---- Context ------------------------------------------------------------ */

/* A context holds the op registry (plugins), the output cache, settings and
 * the last error.  One per process is typical; not thread-safe. */
typedef struct weft_ctx weft_ctx;

WEFT_API int weft_ctx_new(weft_ctx **out);
WEFT_API void weft_ctx_free(weft_ctx *ctx);
/* The last error's message ("graph.yaml:12:5: unknown op 'KSamplr' (did you
 * mean 'KSampler'?)"); "" when none.  (transfer none) */
WEFT_API const char *weft_ctx_error(const weft_ctx *ctx);

/* Worker threads for node work and kernels (0 = number of CPUs). */
WEFT_API void weft_ctx_set_threads(weft_ctx *ctx, int n);
WEFT_API int weft_ctx_threads(const weft_ctx *ctx);
/* Directory SaveImage writes into (default "output") and relative input
 * paths resolve against (default "."). Copied. */
WEFT_API int weft_ctx_set_output_dir(weft_ctx *ctx, const char *dir);
WEFT_API int weft_ctx_set_input_dir(weft_ctx *ctx, const char *dir);

/* ---- Plugins ------------------------------------------------------------ */

/* Loads one plugin file and registers its nodes. */
WEFT_API int weft_plugin_load(weft_ctx *ctx, const char *path);
/* Loads every *.so in dir (sorted by name). A missing dir is not an error. */
WEFT_API int weft_plugin_load_dir(weft_ctx *ctx, const char *dir);
/* Loads the plugin path: the built-in directory, then each entry of
 * WEFT_PLUGIN_PATH (colon-separated), then extra_dirs (NULL-terminated, may
 * be NULL) - the --plugin-dir arguments. */
WEFT_API int weft_plugin_load_default(weft_ctx *ctx,
                                      const char *const *extra_dirs);
/* Registers a plugin from a descriptor already in memory (statically linked
 * nodes, tests).  origin names it in messages. */
WEFT_API int weft_plugin_register(weft_ctx *ctx, const weft_plugin *plugin,
                                  const char *origin);

WEFT_API int weft_op_count(const weft_ctx *ctx);
WEFT_API const weft_node_def *weft_op_at(const weft_ctx *ctx, int i);
WEFT_API const weft_node_def *weft_op_find(const weft_ctx *ctx,
                                           const char *op);
/* The file a registered op came from.  (transfer none) */
WEFT_API const char *weft_op_origin(const weft_ctx *ctx, const char *op);
/* Prints an op's documentation, gst-inspect style. */
WEFT_API void weft_op_print(const weft_node_def *def, FILE *out);

/* ---- Graphs ------------------------------------------------------------- */

typedef struct weft_graph weft_graph;

/* Parses a YAML graph file and resolves its ops against the registry; checks
 * everything that can be checked without running (types, references,
 * cycles, required inputs, param ranges). */
WEFT_API int weft_graph_load(weft_ctx *ctx, const char *path,
                             weft_graph **out);
/* Same from memory; name is used in messages in place of a file name. */
WEFT_API int weft_graph_load_string(weft_ctx *ctx, const char *text,
                                    size_t len, const char *name,
                                    weft_graph **out);
WEFT_API void weft_graph_free(weft_graph *g);

/* Sets a graph input from text (--set name=value); parsed by the input's
 * declared type, range-checked. */
WEFT_API int weft_graph_set_input(weft_ctx *ctx, weft_graph *g,
                                  const char *name, const char *value);
WEFT_API int weft_graph_node_count(const weft_graph *g);
/* Writes the graph in Graphviz dot. */
WEFT_API int weft_graph_write_dot(const weft_graph *g, FILE *out);

/* ---- Running ------------------------------------------------------------ */

typedef enum weft_event_kind {
  WEFT_EV_RUN_START = 0,
  WEFT_EV_NODE_START,
  WEFT_EV_NODE_PROGRESS,
  WEFT_EV_NODE_DONE,
  WEFT_EV_NODE_CACHED,
  WEFT_EV_NODE_FAILED,
  WEFT_EV_LOG,
  WEFT_EV_RUN_DONE
} weft_event_kind;

typedef struct weft_event {
  weft_event_kind kind;
  double t;             /* seconds since the run started */
  const char *node_id;  /* NULL for run-level events */
  const char *op;
  int64_t k, n;         /* progress: step k of n */
  int status;           /* NODE_FAILED / RUN_DONE: 0 or WEFT_E* */
  weft_log_level level; /* LOG */
  const char *message;  /* LOG, NODE_FAILED; NULL otherwise */
  double ms;            /* NODE_DONE: run time of the node */
  int n_done, n_cached, n_total; /* RUN_DONE: counts */
  /* Appended with weft_runq: which run the event belongs to (several may be in
   * flight in a weft_runq).  run_id counts runs from 1 per queue; run_user
   * is weft_run_opts.user (NULL under weft_graph_run). */
  uint64_t run_id;
  void *run_user;
} weft_event;

/* Events are delivered on the thread that called weft_graph_run (or the
 * weft_runq function that runs the loop). */
typedef void (*weft_event_cb)(const weft_event *ev, void *user);
WEFT_API void weft_ctx_set_event_cb(weft_ctx *ctx, weft_event_cb cb,
                                    void *user);

/* Runs the graph to completion on a libuv loop: nodes whose inputs are ready
 * run at the same time on the thread pool.  Outputs are cached in the ctx:
 * running again re-executes only nodes whose op, params or inputs changed.
 * Returns 0, WEFT_ECANCELED, or the first failing node's code. */
WEFT_API int weft_graph_run(weft_ctx *ctx, weft_graph *g);
/* Requests cancellation of the run in progress; safe from any thread (not
 * from a signal handler: use weft_ctx_set_handle_sigint). Nodes see it
 * through is_cancelled; nothing new starts; the run returns
 * WEFT_ECANCELED once the nodes in flight have returned. */
WEFT_API void weft_ctx_cancel(weft_ctx *ctx);
/* While a run is in progress, SIGINT cancels it (a second SIGINT kills the
 * process).  Off by default: libraries should not take signals. */
WEFT_API void weft_ctx_set_handle_sigint(weft_ctx *ctx, int on);
/* The graph's named outputs, after a successful run. */
WEFT_API int weft_graph_output_count(const weft_graph *g);
WEFT_API const char *weft_graph_output_name(const weft_graph *g, int i);
/* Formats output i (a scalar's value, or a tensor's type and shape). */
WEFT_API int weft_graph_output_format(const weft_graph *g, int i, char *buf,
                                      size_t len);
/* Drops every cached output. */
WEFT_API void weft_ctx_cache_clear(weft_ctx *ctx);

/* ---- Several runs in flight (pipelining) -------------------------------- */

/* A run queue keeps up to `window` runs of one graph in flight on one libuv
 * loop, each with its own input values, output directory and run_info, all
 * sharing the ctx's output cache: the next run's early nodes start while
 * the last one finishes.  A node whose cache key equals that of a node an
 * earlier run is still computing waits for that result instead of
 * computing it again (its event says `cached`).  Each run's outputs are
 * what weft_graph_run would give with the same inputs.
 *
 * Everything happens on the calling thread: submit, wait and drain run the
 * loop, and events and completion callbacks are delivered from inside them.
 * Completions come in submission order.  One queue (or weft_graph_run) per
 * ctx at a time; the graph must outlive the queue.  A node instance made by
 * a plugin's create() never runs for two runs at once; nodes of different
 * runs may use one MODEL/CLIP/VAE object at the same time, as independent
 * branches of one run may.  After weft_ctx_cancel every run in flight, and
 * every run submitted to the queue later, ends with WEFT_ECANCELED; a new
 * queue starts afresh. */
typedef struct weft_runq weft_runq;
/* One submitted run; valid only inside its completion callback. */
typedef struct weft_run weft_run;

/* Called once per accepted run, after its last node returned. */
typedef void (*weft_run_done_cb)(weft_run *run, void *user);

typedef struct weft_run_opts {
  uint32_t struct_size;   /* sizeof(weft_run_opts): fields may be appended */
  /* "name=value" input values (NULL-terminated; NULL: none), parsed and
   * range-checked as weft_graph_set_input does, over the values the graph
   * holds at submit time (defaults, weft_graph_set_input).  Copied. */
  const char *const *set;
  /* Where this run's SaveImage writes (NULL: the ctx's at submit).
   * Copied. */
  const char *output_dir;
  weft_run_done_cb done;  /* may be NULL */
  void *user;             /* handed to done; events carry it as run_user */
} weft_run_opts;

/* window: runs in flight at once (submitted and not yet completed), >= 1;
 * 1 runs them one after another. */
WEFT_API int weft_runq_new(weft_ctx *ctx, weft_graph *g, int window,
                           weft_runq **out);
/* Drains the queue (completion callbacks are called), then frees it. */
WEFT_API void weft_runq_free(weft_runq *q);
/* Starts a run with the graph's current input values and opts (may be
 * NULL).  While the window is full it first runs the loop until the oldest
 * run completed.  Returns 0 when the run was accepted (its callback will be
 * called once, with any failure of the run itself: a missing input, a node
 * that failed, cancellation), or an error with weft_ctx_error set (a bad
 * `set` pair, out of memory, called from a callback) and no callback.
 * *id (may be NULL) receives the run's id. */
WEFT_API int weft_runq_submit(weft_runq *q, const weft_run_opts *opts,
                              uint64_t *id);
/* Runs the loop until at least one more run completed; returns at once
 * when none is pending. */
WEFT_API int weft_runq_wait(weft_runq *q);
/* Runs the loop until every submitted run completed. */
WEFT_API int weft_runq_drain(weft_runq *q);
/* Runs submitted and not yet completed. */
WEFT_API int weft_runq_pending(const weft_runq *q);

/* Inside a completion callback: the run's id, user pointer, status (0,
 * WEFT_ECANCELED or the first failing node's code) and error message ("node
 * 'x' (Op) failed: ..."; "" when ok), and its graph outputs (ok runs). */
WEFT_API uint64_t weft_run_id(const weft_run *run);
WEFT_API void *weft_run_user(const weft_run *run);
WEFT_API int weft_run_status(const weft_run *run);
WEFT_API const char *weft_run_error(const weft_run *run);
/* Formats graph output i of this run, as weft_graph_output_format. */
WEFT_API int weft_run_output_format(const weft_run *run, int i, char *buf,
                                    size_t len);
/* The run's input values as one JSON object (as run_info "inputs").
 * (transfer none; valid in the callback) */
WEFT_API const char *weft_run_inputs_json(weft_run *run);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_H */
