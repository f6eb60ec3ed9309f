/* value.c - refcounted values that flow along graph edges: tensors, plugin
 * objects and scalars, with named attributes. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "internal.h"

static const char *const type_names[WEFT_TYPE_COUNT] = {
    [WEFT_TYPE_INT] = "INT",
    [WEFT_TYPE_FLOAT] = "FLOAT",
    [WEFT_TYPE_STRING] = "STRING",
    [WEFT_TYPE_BOOL] = "BOOLEAN",
    [WEFT_TYPE_ENUM] = "ENUM",
    [WEFT_TYPE_TENSOR] = "TENSOR",
    [WEFT_TYPE_IMAGE] = "IMAGE",
    [WEFT_TYPE_MASK] = "MASK",
    [WEFT_TYPE_LATENT] = "LATENT",
    [WEFT_TYPE_CONDITIONING] = "CONDITIONING",
    [WEFT_TYPE_MODEL] = "MODEL",
    [WEFT_TYPE_CLIP] = "CLIP",
    [WEFT_TYPE_VAE] = "VAE",
    [WEFT_TYPE_CONTROL_NET] = "CONTROL_NET",
    [WEFT_TYPE_CUSTOM] = "CUSTOM",
};

const char *weft__type_name(weft_type t, const char *custom) {
  if (t == WEFT_TYPE_CUSTOM && custom) return custom;
  if ((unsigned)t < WEFT_TYPE_COUNT) return type_names[t];
  return "?";
}

int weft__type_from_name(const char *name, weft_type *out) {
  for (int i = 0; i < WEFT_TYPE_COUNT; i++)
    if (i != WEFT_TYPE_CUSTOM && strcmp(type_names[i], name) == 0) {
      *out = (weft_type)i;
      return 0;
    }
  if (strcmp(name, "BOOL") == 0) {
    *out = WEFT_TYPE_BOOL;
    return 0;
  }
  return WEFT_ENOENT;
}

bool weft__type_is_scalar(weft_type t) {
  return t == WEFT_TYPE_INT || t == WEFT_TYPE_FLOAT || t == WEFT_TYPE_STRING ||
         t == WEFT_TYPE_BOOL || t == WEFT_TYPE_ENUM;
}

static weft_value *value_alloc(weft__vkind kind, weft_type type) {
  weft_value *v = calloc(1, sizeof *v);
  if (!v) return NULL;
  atomic_init(&v->refs, 1);
  v->kind = kind;
  v->type = type;
  v->dev = WEFT_DEVICE_CPU;
  return v;
}

weft_value *weft__value_int(weft_type type, int64_t x) {
  weft_value *v = value_alloc(WEFT__V_INT, type);
  if (v) v->i = x;
  return v;
}

weft_value *weft__value_float(double x) {
  weft_value *v = value_alloc(WEFT__V_FLOAT, WEFT_TYPE_FLOAT);
  if (v) v->f = x;
  return v;
}

weft_value *weft__value_string(weft_type type, const char *s) {
  weft_value *v = value_alloc(WEFT__V_STRING, type);
  if (!v) return NULL;
  v->s = strdup(s ? s : "");
  if (!v->s) {
    free(v);
    return NULL;
  }
  return v;
}

/* A tensor value of that shape without storage, and its bytes; NULL for
 * an invalid shape or dtype. */
static weft_value *tensor_shell(weft_type type, weft_dtype dt, int ndim,
                                const int64_t *shape, size_t *bytes) {
  if (ndim < 0 || ndim > WEFT_MAX_DIMS || (unsigned)dt >= WEFT_DTYPE_COUNT)
    return NULL;
  size_t n = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) return NULL;
    if (shape[i] && n > SIZE_MAX / 64 / (size_t)shape[i]) return NULL;
    n *= (size_t)shape[i];
  }
  weft_value *v = value_alloc(WEFT__V_TENSOR, type);
  if (!v) return NULL;
  *bytes = n * weft_dtype_size(dt);
  v->t.dtype = dt;
  v->t.device = WEFT_DEVICE_CPU;
  v->t.ndim = ndim;
  int64_t stride = 1;
  for (int i = ndim - 1; i >= 0; i--) {
    v->t.shape[i] = shape[i];
    v->t.stride[i] = stride;
    stride *= shape[i];
  }
  return v;
}

weft_value *weft__value_tensor(weft_type type, weft_dtype dt, int ndim,
                               const int64_t *shape) {
  size_t bytes;
  weft_value *v = tensor_shell(type, dt, ndim, shape, &bytes);
  if (!v) return NULL;
  /* 64-byte alignment for vector loads; never a zero-size allocation */
  size_t alloc = (bytes + 63) & ~(size_t)63;
  v->mem = aligned_alloc(64, alloc ? alloc : 64);
  if (!v->mem) {
    free(v);
    return NULL;
  }
  v->t.data = v->mem;
  return v;
}

weft_value *weft__value_device_tensor(weft_type type, weft_dtype dt, int ndim,
                                      const int64_t *shape, weft_value *owner) {
  size_t bytes;
  if (!owner || owner->dev < 0) return NULL;
  weft_value *v = tensor_shell(type, dt, ndim, shape, &bytes);
  if (!v) return NULL;
  if (!(v->t.data = owner->dops->alloc(owner->dctx, bytes))) {
    free(v);
    return NULL;
  }
  v->t.device = owner->dev;
  weft__value_retain(owner);
  v->owner = owner;
  return v;
}

int weft__value_set_attr(weft_value *v, const char *name, weft_value *attr) {
  for (int i = 0; i < v->n_attrs; i++)
    if (strcmp(v->attrs[i].name, name) == 0) {
      weft__value_retain(attr);
      weft__value_release(v->attrs[i].value);
      v->attrs[i].value = attr;
      return 0;
    }
  weft__attr *a = realloc(v->attrs, (size_t)(v->n_attrs + 1) * sizeof *a);
  if (!a) return WEFT_ENOMEM;
  v->attrs = a;
  char *n = strdup(name);
  if (!n) return WEFT_ENOMEM;
  weft__value_retain(attr);
  a[v->n_attrs++] = (weft__attr){n, attr};
  return 0;
}

static bool contiguous(const weft_tensor *t) {
  int64_t stride = 1;
  for (int i = t->ndim - 1; i >= 0; i--) {
    if (t->shape[i] != 1 && t->stride[i] != stride) return false;
    stride *= t->shape[i];
  }
  return true;
}

int weft__value_transfer(weft_value *src, int32_t device, weft_value *placer,
                         weft_value **out, size_t *bytes, char *err,
                         size_t errlen) {
  *out = NULL;
  *bytes = 0;
  err[0] = 0;
  const weft_tensor *t = &src->t;
  if (src->kind != WEFT__V_TENSOR || !contiguous(t)) {
    snprintf(err, errlen, "only a contiguous tensor can move between devices");
    return WEFT_EUNSUPPORTED;
  }
  weft_value *host = NULL;
  if (t->device != WEFT_DEVICE_CPU && device != WEFT_DEVICE_CPU) {
    /* between two devices: by way of the host */
    size_t b;
    int rc = weft__value_transfer(src, WEFT_DEVICE_CPU, NULL, &host, &b, err,
                                  errlen);
    if (rc) return rc;
    src = host;
    t = &src->t;
  }
  weft_value *v =
      device == WEFT_DEVICE_CPU
          ? weft__value_tensor(src->type, t->dtype, t->ndim, t->shape)
          : weft__value_device_tensor(src->type, t->dtype, t->ndim, t->shape,
                                      placer);
  int rc = 0;
  const size_t n = (size_t)weft_tensor_numel(t) * weft_dtype_size(t->dtype);
  if (!v) {
    snprintf(err, errlen, "out of %s memory for %zu bytes",
             device == WEFT_DEVICE_CPU ? "host" : "device", n);
    rc = WEFT_ENOMEM;
  } else if (device == WEFT_DEVICE_CPU) {
    rc = src->owner->dops->to_host(src->owner->dctx, v->t.data, t->data, n);
  } else {
    rc = placer->dops->to_device(placer->dctx, v->t.data, t->data, n);
  }
  if (v && rc == 0) {
    v->type_name = src->type_name;
    for (int i = 0; i < src->n_attrs && !rc; i++)
      rc = weft__value_set_attr(v, src->attrs[i].name, src->attrs[i].value);
  } else if (v && !err[0]) {
    snprintf(err, errlen, "the copy failed: %s", weft_strerror(rc));
  }
  weft__value_release(host);
  if (rc) {
    weft__value_release(v);
    return rc;
  }
  *out = v;
  *bytes = n;
  return 0;
}

weft_value *weft__value_object(weft_type type, const char *type_name,
                               void *ptr, void (*destroy)(void *)) {
  weft_value *v = value_alloc(WEFT__V_OBJECT, type);
  if (!v) return NULL;
  v->type_name = type_name;
  v->obj = ptr;
  v->obj_destroy = destroy;
  return v;
}

void weft__value_retain(weft_value *v) {
  if (v) atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
}

void weft__value_release(weft_value *v) {
  if (!v) return;
  if (atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) != 1)
    return;
  for (int i = 0; i < v->n_attrs; i++) {
    free(v->attrs[i].name);
    weft__value_release(v->attrs[i].value);
  }
  free(v->attrs);
  if (v->owner) {
    v->owner->dops->free(v->owner->dctx, v->t.data);
    weft__value_release(v->owner);
  }
  if (v->obj_destroy) v->obj_destroy(v->obj);
  free(v->mem);
  free(v->s);
  free(v);
}

uint64_t weft__value_hash(const weft_value *v, uint64_t seed) {
  if (!v) return XXH64("null", 4, seed);
  seed = XXH64(&v->type, sizeof v->type, seed);
  switch (v->kind) {
  case WEFT__V_INT: return XXH64(&v->i, sizeof v->i, seed);
  case WEFT__V_FLOAT: return XXH64(&v->f, sizeof v->f, seed);
  case WEFT__V_STRING: return XXH64(v->s, strlen(v->s), seed);
  default: {
    uintptr_t p = (uintptr_t)v;
    return XXH64(&p, sizeof p, seed);
  }
  }
}

void weft__value_format(const weft_value *v, char *buf, size_t len) {
  if (!v) {
    snprintf(buf, len, "(none)");
    return;
  }
  switch (v->kind) {
  case WEFT__V_INT:
    if (v->type == WEFT_TYPE_BOOL)
      snprintf(buf, len, "%s", v->i ? "true" : "false");
    else
      snprintf(buf, len, "%" PRId64, v->i);
    return;
  case WEFT__V_FLOAT: snprintf(buf, len, "%.17g", v->f); return;
  case WEFT__V_STRING: snprintf(buf, len, "%s", v->s); return;
  case WEFT__V_TENSOR: {
    int n = snprintf(buf, len, "<%s [", weft__type_name(v->type, v->type_name));
    for (int i = 0; i < v->t.ndim && n > 0 && (size_t)n < len; i++)
      n += snprintf(buf + n, len - (size_t)n, "%s%" PRId64, i ? "," : "",
                    v->t.shape[i]);
    if (n > 0 && (size_t)n < len) snprintf(buf + n, len - (size_t)n, "]>");
    return;
  }
  case WEFT__V_OBJECT:
    snprintf(buf, len, "<%s>", weft__type_name(v->type, v->type_name));
    return;
  }
}
