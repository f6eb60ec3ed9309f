/* internal.h - libweft's private structures, shared by the runtime's files
 * and its tests.  Nothing here is part of the ABI. */
#ifndef WEFT_INTERNAL_H
#define WEFT_INTERNAL_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <uv.h>

#include "weft/safetensors.h"
#include "weft/weft.h"

#define WEFT__ERRLEN 4096

/* A place in a source file; file is owned by the graph (or static). */
typedef struct weft_loc {
  const char *file;
  int line, col; /* 1-based; 0 = unknown */
} weft_loc;

/* ---- values (value.c) --------------------------------------------------- */

typedef enum {
  WEFT__V_TENSOR,
  WEFT__V_OBJECT,
  WEFT__V_INT,
  WEFT__V_FLOAT,
  WEFT__V_STRING,
} weft__vkind;

typedef struct weft__attr {
  char *name;
  weft_value *value;
} weft__attr;

struct weft_value {
  atomic_int refs;
  weft__vkind kind;
  weft_type type;
  const char *type_name; /* custom types; static (plugins stay loaded) */
  weft_tensor t;         /* TENSOR */
  void *mem;             /* TENSOR storage, freed with the value */
  void *obj;             /* OBJECT */
  void (*obj_destroy)(void *);
  int64_t i;             /* INT, BOOL, ENUM index */
  double f;              /* FLOAT */
  char *s;               /* STRING, ENUM name (owned) */
  weft__attr *attrs;
  int n_attrs;
  /* ABI 1.4 devices.  An OBJECT on a device: dev >= 0 and its memory ops
   * (object_set_device).  A TENSOR on a device: t.device >= 0, t.data from
   * owner's ops, owner (an OBJECT) retained until the tensor goes. */
  int32_t dev;
  const weft_device_ops *dops;
  void *dctx;
  weft_value *owner;
};

weft_value *weft__value_int(weft_type type, int64_t x);
weft_value *weft__value_float(double x);
weft_value *weft__value_string(weft_type type, const char *s);
weft_value *weft__value_tensor(weft_type type, weft_dtype dt, int ndim,
                               const int64_t *shape);
weft_value *weft__value_object(weft_type type, const char *type_name,
                               void *ptr, void (*destroy)(void *));
/* A tensor on owner's device (an OBJECT with a device), uninitialised;
 * NULL when the shape is invalid or the device is out of memory. */
weft_value *weft__value_device_tensor(weft_type type, weft_dtype dt, int ndim,
                                      const int64_t *shape, weft_value *owner);
/* A copy of tensor value src on device `device` (WEFT_DEVICE_CPU: the host;
 * else through placer's ops, an OBJECT on that device), with src's type
 * and attributes; *bytes gets the bytes copied.  0, or a WEFT_E* code with
 * the reason in err. */
int weft__value_transfer(weft_value *src, int32_t device, weft_value *placer,
                         weft_value **out, size_t *bytes, char *err,
                         size_t errlen);
/* Sets attribute name of v to attr (a new reference; replaces one of that
 * name): the value_set_attr host service.  0 or WEFT_ENOMEM. */
int weft__value_set_attr(weft_value *v, const char *name, weft_value *attr);
void weft__value_retain(weft_value *v);
void weft__value_release(weft_value *v);
/* Feeds a value's identity into a running hash: scalars by content, tensors
 * and objects by address (they are produced by nodes whose keys already
 * cover their content). */
uint64_t weft__value_hash(const weft_value *v, uint64_t seed);
/* Formats a scalar for messages and reports; "<IMAGE [1,64,64,3]>" else. */
void weft__value_format(const weft_value *v, char *buf, size_t len);

const char *weft__type_name(weft_type t, const char *custom);
int weft__type_from_name(const char *name, weft_type *out);
bool weft__type_is_scalar(weft_type t);

/* ---- registry (registry.c, plugin_load.c) ------------------------------- */

typedef struct weft__op {
  weft_node_def def;        /* normalised copy: full size, zero-filled */
  weft_port_def *inputs;    /* normalised arrays */
  weft_port_def *outputs;
  weft_param_def *params;
  char *origin;             /* file the op came from */
} weft__op;

/* ---- weights cache (host.c) --------------------------------------------- */

/* What plugins hold as weft_weights: one shared mapping per path. */
struct weft_weights {
  weft_ctx *ctx;
  char *path;
  weft_st_file *file;
  int refs;             /* under ctx->lock */
};

/* ---- output cache (cache.c) --------------------------------------------- */

typedef struct weft__centry {
  uint64_t key;
  weft_value **outs;
  int n_outs;
  uint64_t gen;   /* the latest run that produced or used it */
} weft__centry;

typedef struct weft__cache {
  weft__centry *e;
  int n, cap;
  uint64_t gen;   /* the next run's generation */
} weft__cache;

/* init keeps the generation counter (runs in flight keep theirs). */
void weft__cache_init(weft__cache *c);
void weft__cache_free(weft__cache *c);
/* A new run's generation. */
uint64_t weft__cache_next_gen(weft__cache *c);
/* The entry for key, marked as used by generation gen; NULL if none. */
weft__centry *weft__cache_get(weft__cache *c, uint64_t key, uint64_t gen);
/* Stores outs made by generation gen (takes a reference to each). */
int weft__cache_put(weft__cache *c, uint64_t key, weft_value **outs, int n,
                    uint64_t gen);
/* Drops entries no generation from gen on made or used. */
void weft__cache_trim(weft__cache *c, uint64_t gen);

/* ---- context (ctx.c) ---------------------------------------------------- */

struct weft_ctx {
  char err[WEFT__ERRLEN];
  int threads;
  char *output_dir;
  char *input_dir;
  weft_event_cb ev_cb;
  void *ev_user;

  weft__op *ops;
  int n_ops, cap_ops;

  weft__cache cache;

  uv_mutex_t lock;          /* weights cache, cancel hand-off */
  weft_weights **weights;
  int n_weights, cap_weights;

  atomic_int cancelled;
  uv_async_t *wake;         /* the run queue's wake-up, under lock; NULL
                               when none exists */
  int handle_sigint;
};

extern const weft_host weft__host;

/* Records an error in ctx ("file:line:col: message") and returns code. */
int weft__err(weft_ctx *ctx, int code, const weft_loc *loc, const char *fmt,
              ...) __attribute__((format(printf, 4, 5)));
int weft__verr(weft_ctx *ctx, int code, const weft_loc *loc, const char *fmt,
               va_list ap);
/* Appends " (did you mean 'x'?)" to ctx->err when a close name exists. */
void weft__err_suggest(weft_ctx *ctx, const char *name,
                       const char *const *candidates, int n);

/* ---- suggest.c ---------------------------------------------------------- */

/* Edit distance (optimal string alignment, case-insensitive). */
int weft__edit_distance(const char *a, const char *b);
/* The candidate closest to name, or NULL when none is close enough. */
const char *weft__closest(const char *name, const char *const *cand, int n);

/* ---- graphs (graph_load.c, graph_resolve.c) ----------------------------- */

typedef enum {
  WEFT__B_NONE = 0, /* not given: default (param) or unconnected (input) */
  WEFT__B_CONST,    /* a constant from the YAML */
  WEFT__B_INPUT,    /* $name: a graph input */
  WEFT__B_NODE,     /* node.output */
} weft__bkind;

typedef struct weft__bind {
  weft__bkind kind;
  weft_loc loc;
  char *text;         /* as written */
  int is_quoted;      /* CONST written as a quoted YAML string */
  int node, port;     /* NODE: resolved source node and output index */
  int input;          /* INPUT: graph input index */
  weft_value *value;  /* CONST: parsed value; NONE param: the default */
} weft__bind;

typedef struct weft__kv {
  char *name;
  weft_loc loc;       /* of the key */
  weft__bind bind;
} weft__kv;

typedef struct weft__gnode {
  char *id;
  weft_loc loc;
  char *op;
  weft_loc op_loc;
  const weft__op *rop;
  weft__kv *raw_inputs;
  int n_raw_inputs;
  weft__kv *raw_params;
  int n_raw_params;
  weft__bind *inputs;  /* [n_inputs] resolved */
  weft__bind *params;  /* [n_params] resolved */
  void *state;
  bool created;
} weft__gnode;

typedef struct weft__ginput {
  char *name;
  weft_loc loc;
  weft_type type;
  char *doc;
  weft_value *value;   /* default, or what --set gave */
  double min, max;     /* min > max: unbounded */
  char **choices;      /* ENUM-like STRING inputs; NULL-terminated or NULL */
} weft__ginput;

typedef struct weft__goutput {
  char *name;
  weft_loc loc;
  weft__bind ref;      /* NODE */
} weft__goutput;

struct weft_graph {
  weft_ctx *ctx;
  char *file;
  int version;
  weft__ginput *inputs;
  int n_inputs;
  weft__gnode *nodes;
  int n_nodes;
  weft__goutput *outputs;
  int n_outputs;
  int *order;          /* topological order of node indices */
  int *id_index;       /* open-addressing index of node ids */
  int id_cap;
  /* after a run: the graph outputs' values */
  weft_value **out_values;
  char *source;        /* the YAML text */
};

/* graph_load.c: YAML -> raw graph (names unresolved). */
int weft__graph_parse(weft_ctx *ctx, const char *text, size_t len,
                      const char *name, weft_graph **out);
/* graph_resolve.c: ops, ports, params, types, references, cycles. */
int weft__graph_resolve(weft_ctx *ctx, weft_graph *g);
/* Parses text into a value of the given scalar type (CLI --set, YAML). */
int weft__parse_scalar(weft_ctx *ctx, const weft_loc *loc, weft_type type,
                       const char *const *choices, double min, double max,
                       const char *what, const char *text,
                       weft_value **out);
/* Converts a scalar value for a param of another scalar type (INT->FLOAT);
 * returns a new reference or NULL when the types do not fit. */
weft_value *weft__scalar_convert(weft_value *v, const weft_param_def *p);

int weft__graph_find_node(const weft_graph *g, const char *id);
int weft__graph_find_input(const weft_graph *g, const char *name);

/* ---- scheduler (sched_uv.c) --------------------------------------------- */

/* A call in flight: the public weft_call plus what host functions need.
 * run is the public weft_run (one run of a weft_runq). */
typedef struct weft_run weft__run;
typedef struct weft__callpriv {
  weft_ctx *ctx;
  weft__run *run;
  int node;
  /* deferred completion (ABI 1.3): set by defer on the run's thread; the
   * rest by complete, from any thread, read by the loop after it took the
   * completion from its locked queue */
  bool in_run; /* inside run() (the thread running it) */
  bool deferred;
  int async_rc;
  uint64_t t_done;
  /* ABI 1.4: the object whose device the node was placed on (borrowed
   * from an input), NULL on the CPU; tensor_new allocates through it */
  weft_value *place;
  struct weft__callpriv *cnext; /* the loop's queue of completions */
  char err[WEFT__ERRLEN];
} weft__callpriv;

/* graph_meta.c: the graph's input values as one JSON object, and the graph
 * in ComfyUI's API format with every param's value resolved (param_values:
 * per node, the values the run uses, or NULL for the graph's own).  Both
 * malloc'd; NULL when out of memory. */
char *weft__graph_inputs_json(const weft_graph *g);
char *weft__graph_comfy_json(const weft_graph *g,
                             weft_value *const *const *param_values);
/* How many nodes q's workers started themselves, each after the node before
 * it in a chain, without going through the loop (sched_uv.c; for tests and
 * benchmarks). */
uint64_t weft__runq_continued(weft_runq *q);
/* The run_info host service (sched_uv.c). */
const char *weft__run_info(weft_call *call, const char *key);
/* The defer and complete host services (sched_uv.c; see weft_host). */
weft_completion *weft__defer(weft_call *call);
void weft__complete(weft_completion *c, int rc);

/* place.c (ABI 1.4).  The object a node is placed by (a WEFT_NODE_DEVICE
 * node's first input object on a device), or NULL for the CPU. */
weft_value *weft__placer(const weft_node_def *d, weft_value *const *ins);
/* Where a port's tensor lives for a node on node_device: there for a
 * WEFT_PORT_DEVICE port, else on the host. */
int32_t weft__port_device(const weft_port_def *port, int32_t node_device);
/* "the host" or "device N", for messages. */
void weft__device_name(int32_t d, char *buf, size_t len);
/* The placement itself: call->device and the call's priv->place set, each
 * tensor input that is not where its port wants it copied there (ins[k]
 * replaced by the copy, which (*xin)[k] owns: *xin is made on first need,
 * n_inputs entries, and emptied by weft__drop_moved once the node ended).
 * 0, or a WEFT_E* code with the reason in the call's message. */
int weft__place_inputs(weft_call *call, weft_value **ins, weft_value ***xin);
void weft__drop_moved(weft_value **xin, int n_inputs);

/* The run's own output and input directories (host services; NULL run:
 * the ctx's). */
const char *weft__run_output_dir(weft_call *call);
const char *weft__run_input_dir(weft_call *call);

/* Delivers an event from any thread (queued to the loop when running). */
void weft__emit_progress(weft_call *call, int64_t k, int64_t n);
void weft__emit_log(weft_call *call, weft_log_level lvl, const char *msg);

/* host.c: opens a weights file through the ctx's shared cache. */
weft_weights *weft__weights_open(weft_ctx *ctx, const char *path, char *err,
                                 size_t errlen);
void weft__weights_release(weft_weights *w);

/* ---- imports (comfy_import.c) ------------------------------------------- */

/* What weft_graph_load finds in a file: a YAML graph, a PNG (its embedded
 * graph), or JSON (a ComfyUI API workflow).  PNGs are known by their
 * signature, JSON by a .json name or a leading '{' (not in .yaml/.yml). */
enum { WEFT__IMPORT_NONE = 0, WEFT__IMPORT_PNG, WEFT__IMPORT_JSON };
int weft__import_kind(const char *path, const char *buf, size_t len);
/* Loads a PNG's graph (the "weft" text chunk: its YAML with the stored
 * input values applied; else ComfyUI's "prompt") or a JSON workflow; YAML
 * goes to weft_graph_load_string.  path names the source in messages. */
int weft__import_load(weft_ctx *ctx, const char *buf, size_t len,
                      const char *path, weft_graph **out);
/* Converts ComfyUI API-format JSON (a workflow, or a POST /prompt body) to
 * weft YAML and loads it, checking it fully.  Errors read "name: node '3'
 * (KSampler) input 'steps': ...".  *yaml_out (malloc'd, caller frees) and
 * *g_out (caller frees) are each optional (NULL: not wanted). */
int weft__comfy_import(weft_ctx *ctx, const char *json, size_t len,
                       const char *name, char **yaml_out, weft_graph **g_out);

#endif /* WEFT_INTERNAL_H */
