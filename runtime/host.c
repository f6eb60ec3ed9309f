/* host.c - the service table handed to plugins (weft_host): messages,
 * progress, values, tensors and shared weight files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

static weft__callpriv *priv(weft_call *c) { return (weft__callpriv *)c->priv; }

static void h_error(weft_call *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(priv(c)->err, sizeof priv(c)->err, fmt, ap);
  va_end(ap);
}

static void h_log(weft_call *c, weft_log_level lvl, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  weft__emit_log(c, lvl, msg);
}

static void h_progress(weft_call *c, int64_t k, int64_t n) {
  weft__emit_progress(c, k, n);
}

static int h_is_cancelled(weft_call *c) {
  return atomic_load_explicit(&priv(c)->ctx->cancelled, memory_order_relaxed);
}

static void h_retain(weft_value *v) { weft__value_retain(v); }
static void h_release(weft_value *v) { weft__value_release(v); }
static weft_type h_type(const weft_value *v) { return v->type; }

/* A tensor on the host, or (place: the object a node was placed by) on
 * its device. */
static weft_value *tensor_at(weft_call *c, weft_value *place, weft_type type,
                             weft_dtype dt, int ndim, const int64_t *shape,
                             weft_tensor *view) {
  weft_value *v = place ? weft__value_device_tensor(type, dt, ndim, shape, place)
                        : weft__value_tensor(type, dt, ndim, shape);
  if (!v) {
    char dims[256];
    size_t n = 0;
    dims[0] = 0;
    for (int i = 0; i < ndim && i < WEFT_MAX_DIMS && n < sizeof dims - 24; i++)
      n += (size_t)snprintf(dims + n, sizeof dims - n, "%s%lld", i ? "," : "",
                            (long long)shape[i]);
    h_error(c, "cannot allocate a %s tensor [%s]%s",
            weft__type_name(type, NULL), dims,
            place ? " on the node's device" : "");
    return NULL;
  }
  if (view) *view = v->t;
  return v;
}

static int h_object_set_device(weft_value *v, int32_t device,
                               const weft_device_ops *ops, void *ctx) {
  if (!v || v->kind != WEFT__V_OBJECT || device < 0 || !ops ||
      ops->struct_size < sizeof *ops || !ops->alloc || !ops->free ||
      !ops->to_device || !ops->to_host)
    return WEFT_EINVAL;
  v->dev = device;
  v->dops = ops;
  v->dctx = ctx;
  return 0;
}

static int32_t h_value_device(const weft_value *v) {
  if (!v) return WEFT_DEVICE_CPU;
  if (v->kind == WEFT__V_TENSOR) return v->t.device;
  return v->kind == WEFT__V_OBJECT ? v->dev : WEFT_DEVICE_CPU;
}

static weft_value *h_tensor_new(weft_call *c, weft_type type, weft_dtype dt,
                                int ndim, const int64_t *shape,
                                weft_tensor *view) {
  return tensor_at(c, NULL, type, dt, ndim, shape, view);
}

static weft_value *h_device_tensor_new(weft_call *c, weft_type type,
                                       weft_dtype dt, int ndim,
                                       const int64_t *shape,
                                       weft_tensor *view) {
  return tensor_at(c, priv(c)->place, type, dt, ndim, shape, view);
}

static const weft_tensor *h_value_tensor(const weft_value *v) {
  return v && v->kind == WEFT__V_TENSOR ? &v->t : NULL;
}

static weft_value *h_object_new(weft_call *c, weft_type type,
                                const char *type_name, void *ptr,
                                void (*destroy)(void *)) {
  weft_value *v = weft__value_object(type, type_name, ptr, destroy);
  if (!v) {
    if (destroy) destroy(ptr);
    h_error(c, "out of memory");
  }
  return v;
}

static void *h_value_object(const weft_value *v) {
  return v && v->kind == WEFT__V_OBJECT ? v->obj : NULL;
}

static weft_value *h_int_new(weft_call *c, int64_t x) {
  (void)c;
  return weft__value_int(WEFT_TYPE_INT, x);
}

static weft_value *h_float_new(weft_call *c, double x) {
  (void)c;
  return weft__value_float(x);
}

static weft_value *h_string_new(weft_call *c, const char *s) {
  (void)c;
  return weft__value_string(WEFT_TYPE_STRING, s);
}

static int64_t h_value_int(const weft_value *v) {
  if (!v) return 0;
  return v->kind == WEFT__V_FLOAT ? (int64_t)v->f : v->i;
}

static double h_value_float(const weft_value *v) {
  if (!v) return 0;
  return v->kind == WEFT__V_FLOAT ? v->f : (double)v->i;
}

static const char *h_value_string(const weft_value *v) {
  return v && v->kind == WEFT__V_STRING ? v->s : NULL;
}

static weft_value *h_get_attr(const weft_value *v, const char *name) {
  for (int i = 0; v && i < v->n_attrs; i++)
    if (strcmp(v->attrs[i].name, name) == 0) return v->attrs[i].value;
  return NULL;
}

/* Each run of a run queue has its own directories, copied at submit. */
static const char *h_output_dir(weft_call *c) {
  return weft__run_output_dir(c);
}

static const char *h_input_dir(weft_call *c) { return weft__run_input_dir(c); }

static int h_threads(weft_call *c) { return weft_ctx_threads(priv(c)->ctx); }

/* ---- weights ------------------------------------------------------------ */

weft_weights *weft__weights_open(weft_ctx *ctx, const char *path, char *err,
                                 size_t errlen) {
  char *real = realpath(path, NULL);
  const char *key = real ? real : path;
  weft_weights *w = NULL;
  uv_mutex_lock(&ctx->lock);
  for (int i = 0; i < ctx->n_weights; i++)
    if (strcmp(ctx->weights[i]->path, key) == 0) {
      w = ctx->weights[i];
      w->refs++;
      break;
    }
  uv_mutex_unlock(&ctx->lock);
  if (w) {
    free(real);
    return w;
  }
  weft_st_file *f = NULL;
  int r = weft_st_open(path, &f, err, errlen);
  if (r) {
    free(real);
    return NULL;
  }
  w = calloc(1, sizeof *w);
  if (w) w->path = strdup(key);
  free(real);
  if (!w || !w->path) {
    weft_st_close(f);
    if (w) free(w);
    snprintf(err, errlen, "%s: out of memory", path);
    return NULL;
  }
  w->ctx = ctx;
  w->file = f;
  w->refs = 1;
  uv_mutex_lock(&ctx->lock);
  if (ctx->n_weights == ctx->cap_weights) {
    int cap = ctx->cap_weights ? ctx->cap_weights * 2 : 8;
    weft_weights **nw = realloc(ctx->weights, (size_t)cap * sizeof *nw);
    if (nw) {
      ctx->weights = nw;
      ctx->cap_weights = cap;
    }
  }
  if (ctx->n_weights < ctx->cap_weights) {
    ctx->weights[ctx->n_weights++] = w;
  } else {
    w->refs = -1; /* not cached: freed on release */
  }
  uv_mutex_unlock(&ctx->lock);
  return w;
}

void weft__weights_release(weft_weights *w) {
  if (!w) return;
  weft_ctx *ctx = w->ctx;
  uv_mutex_lock(&ctx->lock);
  bool uncached = w->refs < 0;
  if (!uncached) w->refs--;
  uv_mutex_unlock(&ctx->lock);
  /* cached mappings stay open for the process (a batch reloads nothing);
   * weft_ctx_free closes them */
  if (uncached) {
    weft_st_close(w->file);
    free(w->path);
    free(w);
  }
}

static weft_weights *h_weights_open(weft_call *c, const char *path) {
  weft__callpriv *p = priv(c);
  char err[1024];
  weft_weights *w = weft__weights_open(p->ctx, path, err, sizeof err);
  if (!w) h_error(c, "%s", err);
  return w;
}

static int32_t h_weights_count(const weft_weights *w) {
  return weft_st_count(w->file);
}

static const char *h_weights_key(const weft_weights *w, int32_t i) {
  const weft_st_tensor *t = weft_st_at(w->file, i);
  return t ? t->key : NULL;
}

static int h_weights_get(const weft_weights *w, const char *key,
                         weft_tensor *view) {
  const weft_st_tensor *t = weft_st_find(w->file, key);
  if (!t) return WEFT_ENOENT;
  return weft_st_view(t, view);
}

static const char *h_weights_meta(const weft_weights *w, const char *key) {
  return weft_st_meta(w->file, key);
}

const weft_host weft__host = {
    .struct_size = sizeof(weft_host),
    .abi_major = WEFT_ABI_MAJOR,
    .abi_minor = WEFT_ABI_MINOR,
    .error = h_error,
    .log = h_log,
    .progress = h_progress,
    .is_cancelled = h_is_cancelled,
    .value_retain = h_retain,
    .value_release = h_release,
    .value_type = h_type,
    .tensor_new = h_tensor_new,
    .value_tensor = h_value_tensor,
    .object_new = h_object_new,
    .value_object = h_value_object,
    .int_new = h_int_new,
    .float_new = h_float_new,
    .string_new = h_string_new,
    .value_int = h_value_int,
    .value_float = h_value_float,
    .value_string = h_value_string,
    .value_set_attr = weft__value_set_attr,
    .value_get_attr = h_get_attr,
    .output_dir = h_output_dir,
    .input_dir = h_input_dir,
    .threads = h_threads,
    .weights_open = h_weights_open,
    .weights_release = weft__weights_release,
    .weights_count = h_weights_count,
    .weights_key = h_weights_key,
    .weights_get = h_weights_get,
    .weights_meta = h_weights_meta,
    .run_info = weft__run_info,
    .defer = weft__defer,
    .complete = weft__complete,
    .object_set_device = h_object_set_device,
    .value_device = h_value_device,
    .device_tensor_new = h_device_tensor_new,
};
