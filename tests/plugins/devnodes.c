/* devnodes.c - a test plugin with a fake device (ABI 1.4 placement): its
 * "device memory" is host memory behind pointers 2^46 past it (a
 * non-canonical address, so a host read or write of it faults at once),
 * and every allocation, free and copy is counted.  Built only for tests
 * (tests/runtime/test_device.c).
 *
 *   DevModel  (device, fail_copies) -> MODEL on that device
 *   DevFill   (n) -> TENSOR [n] = 0, 1, ..., n-1 on the host, with an
 *             attribute "mask" (a TENSOR [1] = 7)
 *   DevScale  WEFT_NODE_DEVICE: (model, x, factor, wrong_port) -> TENSOR
 *             x * factor, x and the output on the model's device
 *             (WEFT_PORT_DEVICE), x's "mask" passed on; fails unless it
 *             was placed there and x arrived there with it; wrong_port
 *             makes the output on the host (a plugin bug)
 *   DevPeek   WEFT_NODE_DEVICE: (model, x) -> FLOAT x[0], x a host port
 *   DevSum    (x) -> FLOAT sum of x; fails unless x is on the host with
 *             its "mask"
 *   DevStats  (model) -> STRING of the model's counters */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weft/plugin.h"

#define FAKE_OFFSET ((uintptr_t)1 << 46)

typedef struct fake_dev {
  int32_t device;
  int fail_copies; /* every copy fails: the runtime must report it */
  int64_t allocs, frees, h2d, d2h; /* counts; h2d/d2h in bytes */
} fake_dev;

static void *real(const void *p) {
  return (void *)((uintptr_t)p - FAKE_OFFSET);
}

static void *fd_alloc(void *ctx, size_t bytes) {
  fake_dev *d = ctx;
  void *p = malloc(bytes ? bytes : 1);
  if (!p) return NULL;
  d->allocs++;
  return (void *)((uintptr_t)p + FAKE_OFFSET);
}

static void fd_free(void *ctx, void *ptr) {
  fake_dev *d = ctx;
  d->frees++;
  free(real(ptr));
}

static int fd_to_device(void *ctx, void *dst, const void *src, size_t n) {
  fake_dev *d = ctx;
  if (d->fail_copies) return WEFT_EDEVICE;
  memcpy(real(dst), src, n);
  d->h2d += (int64_t)n;
  return 0;
}

static int fd_to_host(void *ctx, void *dst, const void *src, size_t n) {
  fake_dev *d = ctx;
  if (d->fail_copies) return WEFT_EDEVICE;
  memcpy(dst, real(src), n);
  d->d2h += (int64_t)n;
  return 0;
}

static const weft_device_ops fd_ops = {sizeof(weft_device_ops), fd_alloc,
                                       fd_free, fd_to_device, fd_to_host};

/* The model goes after every tensor it allocated (they hold it): by then
 * each allocation must have been freed. */
static void fd_destroy(void *p) {
  fake_dev *d = p;
  if (d->allocs != d->frees) {
    fprintf(stderr, "devnodes: device %d: %lld allocations, %lld frees\n",
            (int)d->device, (long long)d->allocs, (long long)d->frees);
    abort();
  }
  free(d);
}

/* ---- DevModel ---- */

static const weft_port_def model_out[] = {
    {sizeof(weft_port_def), "model", WEFT_TYPE_MODEL, NULL, 0, NULL}};
static const weft_param_def model_params[] = {
    {sizeof(weft_param_def), "device", WEFT_TYPE_INT, 0, 0, NULL, 0, 7, NULL,
     0, "the fake device's ordinal"},
    {sizeof(weft_param_def), "fail_copies", WEFT_TYPE_BOOL, 0, 0, NULL, 0, 1,
     NULL, 0, "every copy fails"},
};

static int model_run(weft_call *c) {
  const weft_host *h = c->host;
  fake_dev *d = calloc(1, sizeof *d);
  if (!d) return WEFT_ENOMEM;
  d->device = (int32_t)weft_param_int(c, 0);
  d->fail_copies = (int)weft_param_int(c, 1);
  weft_value *v = h->object_new(c, WEFT_TYPE_MODEL, NULL, d, fd_destroy);
  if (!v) {
    free(d);
    return WEFT_ENOMEM;
  }
  int rc = h->object_set_device(v, d->device, &fd_ops, d);
  if (rc) {
    h->value_release(v);
    h->error(c, "object_set_device: %d", rc);
    return rc;
  }
  c->outputs[0] = v;
  return 0;
}

/* ---- DevFill ---- */

static const weft_port_def tensor_out[] = {
    {sizeof(weft_port_def), "x", WEFT_TYPE_TENSOR, NULL, 0, NULL}};
static const weft_param_def fill_params[] = {
    {sizeof(weft_param_def), "n", WEFT_TYPE_INT, 10, 0, NULL, 1, 1e6, NULL, 0,
     "elements"}};

static int fill_run(weft_call *c) {
  const weft_host *h = c->host;
  int64_t n = weft_param_int(c, 0), one = 1;
  weft_tensor t, m;
  weft_value *v = h->tensor_new(c, WEFT_TYPE_TENSOR, WEFT_F32, 1, &n, &t);
  if (!v) return WEFT_ENOMEM;
  weft_value *mask = h->tensor_new(c, WEFT_TYPE_TENSOR, WEFT_F32, 1, &one, &m);
  if (!mask) {
    h->value_release(v);
    return WEFT_ENOMEM;
  }
  if (t.device != WEFT_DEVICE_CPU) { /* a CPU node's tensors are host ones */
    h->error(c, "DevFill got a tensor on device %d", (int)t.device);
    h->value_release(v);
    h->value_release(mask);
    return WEFT_EINTERNAL;
  }
  for (int64_t i = 0; i < n; i++)
    ((float *)t.data)[i] = (float)i;
  ((float *)m.data)[0] = 7.0f;
  h->value_set_attr(v, "mask", mask);
  h->value_release(mask);
  c->outputs[0] = v;
  return 0;
}

/* ---- DevScale ---- */

static const weft_port_def scale_in[] = {
    {sizeof(weft_port_def), "model", WEFT_TYPE_MODEL, NULL, 0, NULL},
    {sizeof(weft_port_def), "x", WEFT_TYPE_TENSOR, NULL, WEFT_PORT_DEVICE,
     NULL},
};
static const weft_port_def device_tensor_out[] = {
    {sizeof(weft_port_def), "x", WEFT_TYPE_TENSOR, NULL, WEFT_PORT_DEVICE,
     NULL}};
static const weft_param_def scale_params[] = {
    {sizeof(weft_param_def), "factor", WEFT_TYPE_FLOAT, 0, 2.0, NULL, -1e9,
     1e9, NULL, 0, "multiplier"},
    {sizeof(weft_param_def), "wrong_port", WEFT_TYPE_BOOL, 0, 0, NULL, 0, 1,
     NULL, 0, "make the output on the host (a plugin bug)"},
};

static int scale_run(weft_call *c) {
  const weft_host *h = c->host;
  fake_dev *d = h->value_object(c->inputs[0]);
  const weft_tensor *x = h->value_tensor(c->inputs[1]);
  if (c->device != d->device || x->device != d->device ||
      h->value_device(c->inputs[1]) != d->device) {
    h->error(c, "placed on %d, x on %d, the model on %d", (int)c->device,
             (int)x->device, (int)d->device);
    return WEFT_EINTERNAL;
  }
  weft_value *mask = h->value_get_attr(c->inputs[1], "mask");
  if (!mask) {
    h->error(c, "x lost its attribute on the way");
    return WEFT_EINTERNAL;
  }
  int64_t n = x->shape[0];
  float *tmp = malloc((size_t)n * sizeof *tmp + 1);
  if (!tmp) return WEFT_ENOMEM;
  int rc = fd_to_host(d, tmp, x->data, (size_t)n * sizeof *tmp);
  float f = (float)weft_param_float(c, 0);
  for (int64_t i = 0; i < n; i++)
    tmp[i] *= f;
  weft_tensor y;
  /* wrong_port: a host tensor on a device port, which the runtime refuses */
  weft_value *v =
      rc ? NULL
         : (weft_param_int(c, 1) ? h->tensor_new : h->device_tensor_new)(
               c, WEFT_TYPE_TENSOR, WEFT_F32, 1, &n, &y);
  if (v && weft_param_int(c, 1)) { /* host memory: the plugin bug itself */
    memcpy(y.data, tmp, (size_t)n * sizeof *tmp);
  } else if (v && (y.device != d->device ||
                   (rc = fd_to_device(d, y.data, tmp,
                                      (size_t)n * sizeof *tmp)))) {
    h->value_release(v);
    v = NULL;
  }
  free(tmp);
  if (!v) {
    h->error(c, "cannot make the output on device %d", (int)d->device);
    return rc ? rc : WEFT_EINTERNAL;
  }
  h->value_set_attr(v, "mask", mask); /* passed on, as a LATENT's */
  c->outputs[0] = v;
  return 0;
}

/* ---- DevSum ---- */

static const weft_port_def sum_in[] = {
    {sizeof(weft_port_def), "x", WEFT_TYPE_TENSOR, NULL, 0, NULL}};
static const weft_port_def float_out[] = {
    {sizeof(weft_port_def), "sum", WEFT_TYPE_FLOAT, NULL, 0, NULL}};

static int sum_run(weft_call *c) {
  const weft_host *h = c->host;
  const weft_tensor *x = h->value_tensor(c->inputs[0]);
  if (c->device != WEFT_DEVICE_CPU || x->device != WEFT_DEVICE_CPU ||
      !h->value_get_attr(c->inputs[0], "mask")) {
    h->error(c, "placed on %d, x on %d (or without its attribute)",
             (int)c->device, (int)x->device);
    return WEFT_EINTERNAL;
  }
  double s = 0;
  for (int64_t i = 0; i < x->shape[0]; i++)
    s += ((const float *)x->data)[i];
  c->outputs[0] = h->float_new(c, s);
  return c->outputs[0] ? 0 : WEFT_ENOMEM;
}

/* ---- DevPeek ---- */

static const weft_port_def peek_in[] = {
    {sizeof(weft_port_def), "model", WEFT_TYPE_MODEL, NULL, 0, NULL},
    {sizeof(weft_port_def), "x", WEFT_TYPE_TENSOR, NULL, 0,
     "wanted on the host"},
};
static const weft_port_def first_out[] = {
    {sizeof(weft_port_def), "first", WEFT_TYPE_FLOAT, NULL, 0, NULL}};

static int peek_run(weft_call *c) {
  const weft_host *h = c->host;
  const fake_dev *d = h->value_object(c->inputs[0]);
  const weft_tensor *x = h->value_tensor(c->inputs[1]);
  if (c->device != d->device || x->device != WEFT_DEVICE_CPU) {
    h->error(c, "placed on %d, x on %d", (int)c->device, (int)x->device);
    return WEFT_EINTERNAL;
  }
  c->outputs[0] = h->float_new(c, ((const float *)x->data)[0]);
  return c->outputs[0] ? 0 : WEFT_ENOMEM;
}

/* ---- DevStats ---- */

static const weft_port_def stats_in[] = {
    {sizeof(weft_port_def), "model", WEFT_TYPE_MODEL, NULL, 0, NULL},
    {sizeof(weft_port_def), "after", WEFT_TYPE_FLOAT, NULL, WEFT_PORT_OPTIONAL,
     "orders this node after a DevSum"},
};
static const weft_port_def string_out[] = {
    {sizeof(weft_port_def), "stats", WEFT_TYPE_STRING, NULL, 0, NULL}};

static int stats_run(weft_call *c) {
  const weft_host *h = c->host;
  const fake_dev *d = h->value_object(c->inputs[0]);
  char s[160];
  snprintf(s, sizeof s, "h2d=%lld d2h=%lld allocs=%lld", (long long)d->h2d,
           (long long)d->d2h, (long long)d->allocs);
  c->outputs[0] = h->string_new(c, s);
  return c->outputs[0] ? 0 : WEFT_ENOMEM;
}

static const weft_node_def dev_model = {
    .struct_size = sizeof(weft_node_def),
    .op = "DevModel",
    .category = "test",
    .doc = "A MODEL on a fake device.",
    .outputs = model_out,
    .n_outputs = 1,
    .params = model_params,
    .n_params = 2,
    .run = model_run};
static const weft_node_def dev_fill = {.struct_size = sizeof(weft_node_def),
                                       .op = "DevFill",
                                       .category = "test",
                                       .doc = "0, 1, ..., n-1 on the host.",
                                       .outputs = tensor_out,
                                       .n_outputs = 1,
                                       .params = fill_params,
                                       .n_params = 1,
                                       .run = fill_run};
static const weft_node_def dev_scale = {
    .struct_size = sizeof(weft_node_def),
    .op = "DevScale",
    .category = "test",
    .doc = "x * factor on the model's device.",
    .inputs = scale_in,
    .n_inputs = 2,
    .outputs = device_tensor_out,
    .n_outputs = 1,
    .params = scale_params,
    .n_params = 2,
    .flags = WEFT_NODE_DEVICE,
    .run = scale_run};
static const weft_node_def dev_sum = {.struct_size = sizeof(weft_node_def),
                                      .op = "DevSum",
                                      .category = "test",
                                      .doc = "The sum of x, on the host.",
                                      .inputs = sum_in,
                                      .n_inputs = 1,
                                      .outputs = float_out,
                                      .n_outputs = 1,
                                      .run = sum_run};
static const weft_node_def dev_stats = {
    .struct_size = sizeof(weft_node_def),
    .op = "DevStats",
    .category = "test",
    .doc = "The model's copy counters.",
    .inputs = stats_in,
    .n_inputs = 2,
    .outputs = string_out,
    .n_outputs = 1,
    .flags = WEFT_NODE_NO_CACHE,
    .run = stats_run};

static const weft_node_def dev_peek = {
    .struct_size = sizeof(weft_node_def),
    .op = "DevPeek",
    .category = "test",
    .doc = "x[0], on the model's device with x on the host.",
    .inputs = peek_in,
    .n_inputs = 2,
    .outputs = first_out,
    .n_outputs = 1,
    .flags = WEFT_NODE_DEVICE,
    .run = peek_run};

static const weft_node_def *const nodes[] = {
    &dev_model, &dev_fill, &dev_scale, &dev_sum, &dev_peek, &dev_stats};

WEFT_PLUGIN_DEFINE("devnodes", "1", nodes)
