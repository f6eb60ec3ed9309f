/* fake_host.c - the test host behind fake_host.h. */
#include "fake_host.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct weft_value {
  int refs;
  weft_type type;
  weft_tensor t; /* tensors: t.data owned */
  int64_t i;     /* INT, BOOL, ENUM index */
  double f;
  char *s; /* STRING, ENUM name: owned */
};

/* Live value count, for leak checks; one test process is one thread. */
static int g_live;

static weft_value *value_new(weft_type type) {
  weft_value *v = calloc(1, sizeof *v);
  if (!v) abort();
  v->refs = 1;
  v->type = type;
  g_live++;
  return v;
}

static fake_run *run_of(weft_call *call) {
  return call->priv;
}

static void h_error(weft_call *call, const char *fmt, ...) {
  fake_run *r = run_of(call);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->error, sizeof r->error, fmt, ap);
  va_end(ap);
  r->n_errors++;
}

static void h_log(weft_call *call, weft_log_level level, const char *fmt, ...) {
  (void)call, (void)level, (void)fmt;
}

static void h_progress(weft_call *call, int64_t k, int64_t n) {
  fake_run *r = run_of(call);
  r->progress_k = k;
  r->progress_n = n;
  r->n_progress++;
}

static int h_is_cancelled(weft_call *call) {
  fake_run *r = run_of(call);
  if (r->cancel_after < 0) return 0;
  return r->polls++ >= r->cancel_after;
}

static void h_retain(weft_value *v) {
  v->refs++;
}

void fake_release(weft_value *v) {
  if (!v || --v->refs > 0) return;
  free(v->t.data);
  free(v->s);
  free(v);
  g_live--;
}

static weft_type h_type(const weft_value *v) {
  return v->type;
}

weft_value *fake_tensor(weft_type type, int ndim, const int64_t *shape,
                        const float *data) {
  weft_value *v = value_new(type);
  v->t.dtype = WEFT_F32;
  v->t.device = WEFT_DEVICE_CPU;
  v->t.ndim = ndim;
  int64_t n = 1;
  for (int i = ndim - 1; i >= 0; i--) {
    v->t.shape[i] = shape[i];
    v->t.stride[i] = n;
    n *= shape[i];
  }
  v->t.data = calloc((size_t)(n ? n : 1), sizeof(float));
  if (!v->t.data) abort();
  if (data) memcpy(v->t.data, data, sizeof(float) * n);
  return v;
}

static weft_value *h_tensor_new(weft_call *call, weft_type type,
                                weft_dtype dtype, int ndim,
                                const int64_t *shape, weft_tensor *view) {
  if (dtype != WEFT_F32) {
    h_error(call, "fake host: only f32 tensors");
    return NULL;
  }
  weft_value *v = fake_tensor(type, ndim, shape, NULL);
  if (view) *view = v->t;
  return v;
}

static const weft_tensor *h_value_tensor(const weft_value *v) {
  return v && v->t.data ? &v->t : NULL;
}

weft_value *fake_string(const char *s) {
  weft_value *v = value_new(WEFT_TYPE_STRING);
  v->s = strdup(s);
  return v;
}

weft_value *fake_int(int64_t x) {
  weft_value *v = value_new(WEFT_TYPE_INT);
  v->i = x;
  return v;
}

weft_value *fake_float(double x) {
  weft_value *v = value_new(WEFT_TYPE_FLOAT);
  v->f = x;
  return v;
}

static weft_value *h_int_new(weft_call *c, int64_t x) {
  (void)c;
  return fake_int(x);
}
static weft_value *h_float_new(weft_call *c, double x) {
  (void)c;
  return fake_float(x);
}
static weft_value *h_string_new(weft_call *c, const char *s) {
  (void)c;
  return fake_string(s);
}
static int64_t h_value_int(const weft_value *v) {
  return v->i;
}
static double h_value_float(const weft_value *v) {
  return v->type == WEFT_TYPE_INT ? (double)v->i : v->f;
}
static const char *h_value_string(const weft_value *v) {
  return v->s;
}

static const char *h_output_dir(weft_call *call) {
  return run_of(call)->output_dir;
}
static const char *h_input_dir(weft_call *call) {
  return run_of(call)->input_dir;
}
static int h_threads(weft_call *call) {
  (void)call;
  return 1;
}

void fake_init(fake_run *r) {
  memset(r, 0, sizeof *r);
  r->cancel_after = -1;
  weft_host *h = &r->host;
  h->struct_size = sizeof *h;
  h->abi_major = WEFT_ABI_MAJOR;
  h->abi_minor = WEFT_ABI_MINOR;
  h->error = h_error;
  h->log = h_log;
  h->progress = h_progress;
  h->is_cancelled = h_is_cancelled;
  h->value_retain = h_retain;
  h->value_release = fake_release;
  h->value_type = h_type;
  h->tensor_new = h_tensor_new;
  h->value_tensor = h_value_tensor;
  h->int_new = h_int_new;
  h->float_new = h_float_new;
  h->string_new = h_string_new;
  h->value_int = h_value_int;
  h->value_float = h_value_float;
  h->value_string = h_value_string;
  h->output_dir = h_output_dir;
  h->input_dir = h_input_dir;
  h->threads = h_threads;
}

const weft_node_def *fake_node(fake_run *r, const char *op) {
  const weft_plugin *p = weft_plugin_entry(&r->host);
  for (int32_t i = 0; i < p->n_nodes; i++)
    if (strcmp(p->nodes[i]->op, op) == 0) return p->nodes[i];
  return NULL;
}

weft_value *fake_image(int64_t b, int64_t h, int64_t w, int64_t c,
                       const float *data) {
  int64_t shape[4] = {b, h, w, c};
  return fake_tensor(WEFT_TYPE_IMAGE, 4, shape, data);
}

weft_value *fake_enum(const weft_node_def *def, const char *param,
                      const char *choice) {
  for (int32_t i = 0; i < def->n_params; i++) {
    const weft_param_def *p = &def->params[i];
    if (strcmp(p->name, param) != 0 || p->type != WEFT_TYPE_ENUM) continue;
    for (int64_t k = 0; p->choices[k]; k++)
      if (strcmp(p->choices[k], choice) == 0) {
        weft_value *v = value_new(WEFT_TYPE_ENUM);
        v->i = k;
        v->s = strdup(choice);
        return v;
      }
  }
  fprintf(stderr, "fake_enum: %s has no enum %s with choice %s\n", def->op,
          param, choice);
  abort();
}

const weft_tensor *fake_tensor_of(const weft_value *v) {
  return h_value_tensor(v);
}
const char *fake_string_of(const weft_value *v) {
  return v ? v->s : NULL;
}
weft_type fake_type_of(const weft_value *v) {
  return v->type;
}
int fake_refs(const weft_value *v) {
  return v->refs;
}
int fake_live_values(void) {
  return g_live;
}

static weft_value *default_param(const weft_param_def *p) {
  switch (p->type) {
  case WEFT_TYPE_INT:
  case WEFT_TYPE_BOOL: return fake_int(p->def_int);
  case WEFT_TYPE_FLOAT: return fake_float(p->def_float);
  case WEFT_TYPE_ENUM: {
    weft_value *v = value_new(WEFT_TYPE_ENUM);
    v->i = p->def_int;
    v->s = strdup(p->choices[p->def_int]);
    return v;
  }
  default: return fake_string(p->def_string ? p->def_string : "");
  }
}

/* Fills params from defaults and the (name, value) pairs in ap. */
static weft_value **make_params(const weft_node_def *def, va_list ap) {
  weft_value **params = calloc((size_t)def->n_params + 1, sizeof *params);
  for (;;) {
    const char *name = va_arg(ap, const char *);
    if (!name) break;
    weft_value *v = va_arg(ap, weft_value *);
    int found = 0;
    for (int32_t i = 0; i < def->n_params; i++)
      if (strcmp(def->params[i].name, name) == 0) {
        fake_release(params[i]);
        params[i] = v;
        found = 1;
      }
    if (!found) {
      fprintf(stderr, "%s has no param %s\n", def->op, name);
      abort();
    }
  }
  for (int32_t i = 0; i < def->n_params; i++)
    if (!params[i]) params[i] = default_param(&def->params[i]);
  return params;
}

static void free_params(const weft_node_def *def, weft_value **params) {
  for (int32_t i = 0; i < def->n_params; i++)
    fake_release(params[i]);
  free(params);
}

int fake_run_node(fake_run *r, const weft_node_def *def, weft_value **inputs,
                  weft_value **outputs, ...) {
  va_list ap;
  va_start(ap, outputs);
  weft_value **params = make_params(def, ap);
  va_end(ap);
  for (int32_t i = 0; i < def->n_outputs; i++)
    outputs[i] = NULL;
  weft_value *none[1] = {NULL};
  weft_call call = {
      .struct_size = sizeof call,
      .host = &r->host,
      .def = def,
      .node_id = "test",
      .inputs = inputs ? inputs : none,
      .params = params,
      .outputs = outputs,
      .device = WEFT_DEVICE_CPU,
      .priv = r,
  };
  r->error[0] = '\0';
  int rc = def->run(&call);
  free_params(def, params);
  return rc;
}

uint64_t fake_fingerprint(fake_run *r, const weft_node_def *def, ...) {
  va_list ap;
  va_start(ap, def);
  weft_value **params = make_params(def, ap);
  va_end(ap);
  weft_value *none[1] = {NULL};
  weft_call call = {
      .struct_size = sizeof call,
      .host = &r->host,
      .def = def,
      .node_id = "test",
      .inputs = none,
      .params = params,
      .device = WEFT_DEVICE_CPU,
      .priv = r,
  };
  uint64_t fp = def->fingerprint(&call);
  free_params(def, params);
  return fp;
}
