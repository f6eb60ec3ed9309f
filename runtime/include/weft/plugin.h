/* plugin.h - the one header a weft node plugin needs.
 *
 * A plugin is a shared object exporting one symbol, weft_plugin_entry, which
 * receives the host's service table and returns a constant descriptor of the
 * plugin and its nodes.  The plugin links against nothing from weft: every
 * service (values, tensors, progress, logging, errors) is a function pointer
 * in the weft_host table handed to each callback, as SQLite does for its
 * loadable extensions.
 *
 * Versioning.  WEFT_ABI_MAJOR changes when an existing struct or function
 * changes meaning; the runtime refuses plugins of another major.  The minor
 * grows when fields or host functions are appended; the runtime refuses a
 * plugin built against a newer minor than its own.  Every struct a plugin
 * fills starts with struct_size, and the runtime reads only fields that lie
 * inside it, so a plugin built against an older minor keeps working.
 *
 * Ownership notation: (transfer full) means the receiver owns the reference
 * and must release it; (transfer none) means it is borrowed for the duration
 * of the call.
 */
#ifndef WEFT_PLUGIN_H
#define WEFT_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#include "weft/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define WEFT_ABI_MAJOR 1
#define WEFT_ABI_MINOR 4

/* run() returns WEFT_PENDING after host->defer(): the node ends later, with
 * host->complete() (ABI 1.3).  Positive, so never a WEFT_E* code. */
#define WEFT_PENDING 1

#if defined(_WIN32)
#define WEFT_PLUGIN_EXPORT __declspec(dllexport)
#else
#define WEFT_PLUGIN_EXPORT __attribute__((visibility("default")))
#endif

/* ---- Tensors ------------------------------------------------------------ */

#define WEFT_MAX_DIMS 8

typedef enum weft_dtype {
  WEFT_F32 = 0,
  WEFT_F16 = 1,
  WEFT_BF16 = 2,
  WEFT_I32 = 3,
  WEFT_I64 = 4,
  WEFT_U8 = 5,
  WEFT_DTYPE_COUNT
} weft_dtype;

/* Device id: WEFT_DEVICE_CPU, or a CUDA ordinal (0, 1, ...). */
#define WEFT_DEVICE_CPU (-1)

/* A strided view of memory.  The view itself is a plain value: copying the
 * struct copies the view, not the data.  Storage is owned by the weft_value
 * the view was obtained from (values are refcounted, see below); a view is
 * valid as long as a reference to that value is held.  Strides are in
 * elements, not bytes.  A freshly allocated tensor is contiguous, row-major. */
typedef struct weft_tensor {
  weft_dtype dtype;
  int32_t device;
  int32_t ndim;
  int32_t reserved_;
  int64_t shape[WEFT_MAX_DIMS];
  int64_t stride[WEFT_MAX_DIMS];
  void *data;
} weft_tensor;

static inline size_t weft_dtype_size(weft_dtype dt) {
  switch (dt) {
  case WEFT_F32: return 4;
  case WEFT_F16: return 2;
  case WEFT_BF16: return 2;
  case WEFT_I32: return 4;
  case WEFT_I64: return 8;
  case WEFT_U8: return 1;
  default: return 0;
  }
}

static inline int64_t weft_tensor_numel(const weft_tensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}

/* ---- Port types --------------------------------------------------------- */

/* Built-in port types, ComfyUI's vocabulary.  Plugins may declare further
 * types by name (WEFT_TYPE_CUSTOM + the type_name field of a port); two ports
 * connect when their type names are equal.
 *
 *   IMAGE        f32 tensor [B,H,W,C], values 0..1 (ComfyUI layout)
 *   MASK         f32 tensor [B,H,W], 1 = masked
 *   LATENT       f32 tensor [B,C,h,w]; attribute "noise_mask" (MASK) optional
 *   CONDITIONING object owned by the text-encoder family plugins
 *   MODEL, CLIP, VAE, CONTROL_NET  objects owned by model plugins
 *   TENSOR       any tensor
 *   INT, FLOAT, STRING, BOOL, ENUM  scalars (ENUM: one of a list of strings)
 */
typedef enum weft_type {
  WEFT_TYPE_INT = 0,
  WEFT_TYPE_FLOAT,
  WEFT_TYPE_STRING,
  WEFT_TYPE_BOOL,
  WEFT_TYPE_ENUM,
  WEFT_TYPE_TENSOR,
  WEFT_TYPE_IMAGE,
  WEFT_TYPE_MASK,
  WEFT_TYPE_LATENT,
  WEFT_TYPE_CONDITIONING,
  WEFT_TYPE_MODEL,
  WEFT_TYPE_CLIP,
  WEFT_TYPE_VAE,
  WEFT_TYPE_CONTROL_NET,
  WEFT_TYPE_CUSTOM,
  WEFT_TYPE_COUNT
} weft_type;

/* ---- Node descriptors --------------------------------------------------- */

enum {
  WEFT_PORT_OPTIONAL = 1u << 0, /* input may stay unconnected (value NULL) */
  WEFT_PORT_DEVICE = 1u << 1,   /* a tensor port of a WEFT_NODE_DEVICE node
                                   (ABI 1.4): an input arrives on the node's
                                   device, an output is made there
                                   (device_tensor_new); without it, on the
                                   host.  See weft_device_ops. */
};

/* An input or output port.  Inputs carry data produced by other nodes. */
typedef struct weft_port_def {
  uint32_t struct_size;   /* sizeof(weft_port_def) */
  const char *name;       /* e.g. "clip"; unique among the node's inputs */
  weft_type type;
  const char *type_name;  /* for WEFT_TYPE_CUSTOM; NULL otherwise */
  uint32_t flags;         /* WEFT_PORT_* */
  const char *doc;
} weft_port_def;

/* A parameter (ComfyUI's "widget"): a scalar with a default that YAML sets as
 * a constant, a graph input ($name) feeds, or an upstream scalar output
 * connects to.  Ranges are inclusive; min > max means unbounded. */
typedef struct weft_param_def {
  uint32_t struct_size;   /* sizeof(weft_param_def) */
  const char *name;
  weft_type type;         /* INT, FLOAT, STRING, BOOL or ENUM */
  int64_t def_int;        /* INT, BOOL, ENUM (index into choices) */
  double def_float;       /* FLOAT */
  const char *def_string; /* STRING */
  double min, max;        /* INT, FLOAT */
  const char *const *choices; /* ENUM: NULL-terminated list */
  uint32_t flags;         /* WEFT_PARAM_* */
  const char *doc;
} weft_param_def;

enum {
  WEFT_PARAM_MULTILINE = 1u << 0, /* STRING: a prompt, not a name */
  WEFT_PARAM_PATH = 1u << 1,      /* STRING: a file path to read */
};

typedef struct weft_value weft_value;   /* opaque, refcounted */
typedef struct weft_call weft_call;
typedef struct weft_host weft_host;
typedef struct weft_completion weft_completion; /* a deferred run's end */
typedef struct weft_plan weft_plan;
typedef struct weft_weights weft_weights; /* an open safetensors file */

enum {
  WEFT_NODE_OUTPUT = 1u << 0,   /* has side effects (writes files): always runs,
                                   never served from the cache */
  WEFT_NODE_NO_CACHE = 1u << 1, /* outputs must not be cached */
  WEFT_NODE_INLINE = 1u << 2,   /* takes microseconds (a constant, a small
                                   bookkeeping step): run on the scheduler's
                                   own thread instead of the worker pool,
                                   saving two thread hand-offs */
  WEFT_NODE_DEVICE = 1u << 3,   /* runs where its models live (ABI 1.4): see
                                   weft_device_ops */
};

/* ---- Devices (ABI 1.4) ---------------------------------------------------
 *
 * A plugin whose models live on a device (a GPU) says so on the model's
 * object value: host->object_set_device(value, device, ops, ctx).  A node
 * with WEFT_NODE_DEVICE is placed on the device of its first input object
 * that has one (call->device; WEFT_DEVICE_CPU when none has).  Its tensor
 * ports say where their data lives: with WEFT_PORT_DEVICE on the node's
 * device (an input arrives there, an output is made there with
 * host->device_tensor_new), without it on the host -- so a device node
 * chooses per port what it reads and writes where, and every node without
 * the flag (and every port of a node placed on the CPU) works on the host.
 * Where a tensor is not where its consumer's port wants it, the runtime
 * copies it before the consumer runs (host -> device through the placing
 * object's ops, device -> host through the allocating object's, device ->
 * device by way of the host), attributes (a LATENT's noise_mask) carried
 * as they are.  Each inserted copy is logged (WEFT_LOG_DEBUG, "transfer:
 * ...") and `weft plan` counts it for the consuming node.  A device tensor
 * holds a reference to the object value whose ops allocated it, so ops and
 * ctx must stay valid as long as that value lives.  A node's device
 * outputs must be complete (its device work synchronised) when it ends;
 * the runtime checks that each tensor output is where its port says. */
typedef struct weft_device_ops {
  uint32_t struct_size; /* sizeof(weft_device_ops) */
  /* Device memory of at least bytes (bytes may be 0); NULL when out of
   * memory. */
  void *(*alloc)(void *ctx, size_t bytes);
  void (*free)(void *ctx, void *ptr);
  /* Synchronous copies: the bytes are there when they return.  0 or a
   * negative WEFT_E* code. */
  int (*to_device)(void *ctx, void *dst, const void *src, size_t bytes);
  int (*to_host)(void *ctx, void *dst, const void *src, size_t bytes);
} weft_device_ops;

typedef struct weft_node_def {
  uint32_t struct_size;         /* sizeof(weft_node_def) */
  const char *op;               /* "KSampler"; globally unique */
  const char *category;         /* "sampling", "image/transform", ... */
  const char *doc;              /* one paragraph; first sentence is a summary */
  const weft_port_def *inputs;
  int32_t n_inputs;
  const weft_port_def *outputs;
  int32_t n_outputs;
  const weft_param_def *params;
  int32_t n_params;
  uint32_t flags;               /* WEFT_NODE_* */

  /* Optional: per-node-instance state.  Called once when a graph node is
   * resolved; *state is handed to every later callback of this instance.
   * Returns 0 or a negative WEFT_E* code. */
  int (*create)(weft_call *call, void **state);
  /* Optional: states output shapes, weights and scratch before a run.  See
   * weft_plan; a node without plan is run wherever it is placed, on the CPU. */
  int (*plan)(weft_call *call, weft_plan *plan);
  /* Required: computes outputs from inputs and params.  May run on a worker
   * thread; must not touch other nodes' state.  Returns 0 or a negative
   * WEFT_E* code, after host->error() for a message; or WEFT_PENDING after
   * host->defer(), to end later with host->complete() (ABI 1.3). */
  int (*run)(weft_call *call);
  /* Optional: frees what create made. */
  void (*destroy)(void *state);
  /* Optional: a 64-bit fingerprint of the outside world the node reads (a
   * file's size and mtime, say); mixed into the cache key, as ComfyUI's
   * IS_CHANGED.  Params and inputs are already part of the key. */
  uint64_t (*fingerprint)(weft_call *call);
} weft_node_def;

typedef struct weft_plugin {
  uint32_t struct_size;         /* sizeof(weft_plugin) */
  uint16_t abi_major;           /* WEFT_ABI_MAJOR at build time */
  uint16_t abi_minor;           /* WEFT_ABI_MINOR at build time */
  const char *name;             /* "image" */
  const char *version;          /* plugin's own version, free form */
  const weft_node_def *const *nodes;
  int32_t n_nodes;
  void *reserved[4];
} weft_plugin;

/* The one symbol every plugin exports.  host stays valid for the life of the
 * process; the returned descriptor must too (make it static const). */
typedef const weft_plugin *(*weft_plugin_entry_fn)(const weft_host *host);
#define WEFT_PLUGIN_ENTRY_SYMBOL "weft_plugin_entry"

/* ---- The planning record ------------------------------------------------ */

/* Weights a node needs resident while it runs: one model's UNet, VAE,
 * ... Nodes naming the same id share them (two samplers on one MODEL). */
typedef struct weft_plan_weights {
  uint64_t id;      /* non-zero; equal ids are the same weights */
  uint64_t bytes;
  const char *name; /* "UNet"; static, or valid while the node's inputs are */
} weft_plan_weights;

#define WEFT_PLAN_MAX_WEIGHTS 4

/* Filled by a node's plan callback.  The runtime sizes arenas and decides
 * residency from it; a field a plugin does not set keeps its zero default.
 *
 * Plan mode (weft plan): the runtime walks the graph once, in order, and
 * calls plan instead of run for a node that has it.  plan stores every
 * output, of its declared type and with the shapes run would give (the
 * contents are unspecified: zeros do), so downstream plan callbacks see
 * shapes; it computes nothing it can avoid.  The runtime reads only fields
 * inside struct_size and hands in a zeroed record of its own size. */
struct weft_plan {
  uint32_t struct_size;
  int32_t device;             /* preferred device; WEFT_DEVICE_CPU default */
  uint64_t scratch_bytes;     /* temporary memory during run */
  uint64_t weight_bytes;      /* weights that must be resident during run */
  uint64_t flops;             /* estimate, for reports */
  /* ---- ABI 1.2: memory planning ---- */
  uint64_t arena_bytes;       /* activations: the one arena the run uses */
  uint64_t arena_lower_bound; /* the most activation bytes alive at once */
  uint64_t arena_naive;       /* all activations, nothing shared */
  uint64_t h2d_bytes;         /* activation copies host -> device */
  uint64_t d2h_bytes;         /* and back */
  int32_t n_weights;          /* entries of weights[] */
  int32_t reserved2_;
  weft_plan_weights weights[WEFT_PLAN_MAX_WEIGHTS];
};
/* Whether a plan record has room for field f (a plugin built against this
 * header checks before writing a field newer than ABI 1.0). */
#define WEFT_PLAN_HAS(plan, f)                                                 \
  ((plan)->struct_size >= offsetof(struct weft_plan, f) + sizeof((plan)->f))

/* ---- Logging ------------------------------------------------------------ */

typedef enum weft_log_level {
  WEFT_LOG_DEBUG = 0,
  WEFT_LOG_INFO,
  WEFT_LOG_WARN,
  WEFT_LOG_ERROR
} weft_log_level;

/* ---- Host services ------------------------------------------------------ */

/* What a callback sees of its invocation.  The runtime owns this struct. */
struct weft_call {
  uint32_t struct_size;
  const weft_host *host;
  const weft_node_def *def;
  const char *node_id;          /* the graph node's id, for messages */
  void *state;                  /* what create returned */
  weft_value *const *inputs;    /* [def->n_inputs] (transfer none); NULL for an
                                   unconnected optional input; NULL during
                                   create */
  weft_value *const *params;    /* [def->n_params] (transfer none) */
  weft_value **outputs;         /* [def->n_outputs] (transfer full): run
                                   stores one value per output */
  int32_t device;               /* where the node was placed */
  int32_t reserved_;
  void *priv;                   /* runtime-private */
};

struct weft_host {
  uint32_t struct_size;
  uint16_t abi_major, abi_minor;

  /* Messages.  error() records the reason run failed, printf-style; the
   * runtime prefixes the node id.  log() goes to the event stream. */
  void (*error)(weft_call *call, const char *fmt, ...)
      __attribute__((format(printf, 2, 3)));
  void (*log)(weft_call *call, weft_log_level level, const char *fmt, ...)
      __attribute__((format(printf, 3, 4)));
  /* Progress of a long run: step k of n (a sampler step, a tile). */
  void (*progress)(weft_call *call, int64_t k, int64_t n);
  /* Non-zero once the run was cancelled (SIGINT); return WEFT_ECANCELED. */
  int (*is_cancelled)(weft_call *call);

  /* Values.  A new value has one reference, owned by the caller. */
  void (*value_retain)(weft_value *v);
  void (*value_release)(weft_value *v);
  weft_type (*value_type)(const weft_value *v);

  /* Tensor values: storage is allocated on the call's device, contiguous,
   * uninitialised.  *view receives the tensor (may be NULL).  Returns NULL
   * and records an error when memory runs out. */
  weft_value *(*tensor_new)(weft_call *call, weft_type type, weft_dtype dtype,
                            int ndim, const int64_t *shape, weft_tensor *view);
  /* The tensor of a TENSOR/IMAGE/MASK/LATENT value, or NULL. */
  const weft_tensor *(*value_tensor)(const weft_value *v);

  /* Object values (MODEL, CLIP, ...): ptr is owned by the value and freed by
   * destroy(ptr) when the last reference goes. */
  weft_value *(*object_new)(weft_call *call, weft_type type,
                            const char *type_name, void *ptr,
                            void (*destroy)(void *ptr));
  void *(*value_object)(const weft_value *v);

  /* Scalars. */
  weft_value *(*int_new)(weft_call *call, int64_t x);
  weft_value *(*float_new)(weft_call *call, double x);
  weft_value *(*string_new)(weft_call *call, const char *s);
  int64_t (*value_int)(const weft_value *v);    /* INT, BOOL, ENUM index */
  double (*value_float)(const weft_value *v);   /* FLOAT (INT converts) */
  const char *(*value_string)(const weft_value *v); /* STRING, ENUM name */

  /* Named attributes of a value (LATENT's "noise_mask").  set takes a new
   * reference to attr; get returns a borrowed one or NULL.  Set attributes
   * only on a value the call created and has not yet output. */
  int (*value_set_attr)(weft_value *v, const char *name, weft_value *attr);
  weft_value *(*value_get_attr)(const weft_value *v, const char *name);

  /* Where run may write files (SaveImage): the output directory, and the
   * directory relative input paths are resolved against. */
  const char *(*output_dir)(weft_call *call);
  const char *(*input_dir)(weft_call *call);

  /* Number of worker threads a kernel may use. */
  int (*threads)(weft_call *call);

  /* Weights: a safetensors file, memory-mapped and validated; opening the
   * same path again in one process shares the mapping.  open returns NULL
   * and records an error naming the file (and tensor) when it is malformed.
   * (transfer full) */
  weft_weights *(*weights_open)(weft_call *call, const char *path);
  void (*weights_release)(weft_weights *w);
  int32_t (*weights_count)(const weft_weights *w);
  const char *(*weights_key)(const weft_weights *w, int32_t i);
  /* A view into the mapping (read-only, CPU) of tensor key; WEFT_ENOENT when
   * absent, WEFT_EUNSUPPORTED for a dtype weft_tensor cannot hold. */
  int (*weights_get)(const weft_weights *w, const char *key,
                     weft_tensor *view);
  /* A __metadata__ entry, or NULL. */
  const char *(*weights_meta)(const weft_weights *w, const char *key);

  /* ---- ABI 1.1 ---- */

  /* What the run is, for nodes that record it (SaveImage's PNG text):
   *   "graph"       the graph's YAML source
   *   "graph_file"  its file name
   *   "inputs"      the graph inputs' values, one JSON object
   *   "prompt"      the run in ComfyUI's API format (JSON), values resolved
   * NULL for an unknown key.  Valid until the run ends.  (transfer none) */
  const char *(*run_info)(weft_call *call, const char *key);

  /* ---- ABI 1.3 ---- */

  /* Deferred completion, for a node whose work goes on elsewhere (a GPU
   * stream, a thread of the plugin's own): called inside run(), which then
   * returns WEFT_PENDING; the worker thread is free at once, and the node
   * ends when complete(c, rc) is called - from any thread, exactly once,
   * with 0 or a negative WEFT_E* code.  Before complete, store the outputs
   * (rc 0) or call host->error (rc < 0); the weft_call, its inputs and
   * params stay valid until complete, and nothing of the call may be
   * touched after it.  The node's dependents start only after complete.
   * On cancellation (is_cancelled) the plugin still calls complete, with
   * WEFT_ECANCELED: the run waits for it.  defer returns NULL (and records
   * an error) outside run or when called twice.  Check
   * WEFT_HOST_HAS(host, defer) before using these. */
  weft_completion *(*defer)(weft_call *call);
  void (*complete)(weft_completion *c, int rc);

  /* ---- ABI 1.4 ---- */

  /* Declares that an object value (MODEL, VAE, ...) lives on device
   * `device` (0, 1, ...), whose memory ops reaches through ctx (see
   * weft_device_ops; ops is not copied: make it static const).  0, or
   * WEFT_EINVAL for a value that is no object, a negative device or ops
   * missing a function. */
  int (*object_set_device)(weft_value *v, int32_t device,
                           const weft_device_ops *ops, void *ctx);
  /* The device a value lives on: an object's (WEFT_DEVICE_CPU unless set),
   * a tensor's; WEFT_DEVICE_CPU for anything else. */
  int32_t (*value_device)(const weft_value *v);
  /* As tensor_new, on the call's device (for a WEFT_PORT_DEVICE output):
   * weft_tensor.data is then a device pointer the host must not
   * dereference; on the host when the call runs there. */
  weft_value *(*device_tensor_new)(weft_call *call, weft_type type,
                                   weft_dtype dtype, int ndim,
                                   const int64_t *shape, weft_tensor *view);
};

/* Whether the host has service f (a plugin built against this header asks
 * before calling a service newer than ABI 1.0): inside struct_size and
 * set. */
#define WEFT_HOST_HAS(host, f)                                                 \
  ((host)->struct_size >= offsetof(weft_host, f) + sizeof((host)->f) &&        \
   (host)->f != NULL)

/* ---- Convenience wrappers ----------------------------------------------- */

#define WEFT_HOST(call) ((call)->host)

static inline int64_t weft_param_int(weft_call *c, int i) {
  return c->host->value_int(c->params[i]);
}
static inline double weft_param_float(weft_call *c, int i) {
  return c->host->value_float(c->params[i]);
}
static inline const char *weft_param_string(weft_call *c, int i) {
  return c->host->value_string(c->params[i]);
}
static inline const weft_tensor *weft_input_tensor(weft_call *c, int i) {
  return c->inputs[i] ? c->host->value_tensor(c->inputs[i]) : NULL;
}

/* Declares a plugin's entry point from a static node table:
 *   static const weft_node_def *const nodes[] = { &a, &b };
 *   WEFT_PLUGIN_DEFINE("image", "1.0", nodes)
 */
#define WEFT_PLUGIN_DEFINE(NAME, VERSION, NODES)                              \
  WEFT_PLUGIN_EXPORT const weft_plugin *weft_plugin_entry(                   \
      const weft_host *host);                                                 \
  const weft_plugin *weft_plugin_entry(const weft_host *host) {               \
    static const weft_plugin p = {                                            \
        sizeof(weft_plugin), WEFT_ABI_MAJOR, WEFT_ABI_MINOR, NAME, VERSION,   \
        NODES, (int32_t)(sizeof(NODES) / sizeof((NODES)[0])), {0}};           \
    (void)host;                                                               \
    return &p;                                                                \
  }

#ifdef __cplusplus
}
#endif
#endif /* WEFT_PLUGIN_H */
