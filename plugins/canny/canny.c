/* canny.c - the "canny" example plugin: one node, Canny, built only against
 * the installed weft SDK (weft/plugin.h through pkg-config).  The pixel work
 * is in canny_core.c; this file declares the node and moves data between
 * weft values and plain arrays. */
#include <stdlib.h>
#include <string.h>

#include <weft/plugin.h>

#include "canny_core.h"

/* Parameter indices, in the order of canny_params below. */
enum { P_LOW, P_HIGH };

static const weft_port_def canny_inputs[] = {
    {.struct_size = sizeof(weft_port_def),
     .name = "image",
     .type = WEFT_TYPE_IMAGE,
     .doc = "Images [B,H,W,C]; RGB is converted to gray, alpha ignored."},
};

static const weft_port_def canny_outputs[] = {
    {.struct_size = sizeof(weft_port_def),
     .name = "IMAGE",
     .type = WEFT_TYPE_IMAGE,
     .doc = "Edges as [B,H,W,3]: 1 on an edge, 0 elsewhere."},
};

static const weft_param_def canny_params[] = {
    {.struct_size = sizeof(weft_param_def),
     .name = "low_threshold",
     .type = WEFT_TYPE_FLOAT,
     .def_float = 0.4,
     .min = 0.01,
     .max = 0.99,
     .doc = "Gradient magnitude above which a pixel is a weak edge."},
    {.struct_size = sizeof(weft_param_def),
     .name = "high_threshold",
     .type = WEFT_TYPE_FLOAT,
     .def_float = 0.8,
     .min = 0.01,
     .max = 0.99,
     .doc = "Gradient magnitude above which a pixel is a strong edge; weak "
            "edges survive only when connected to a strong one."},
};

/* Lets canny_edges stop when the run is cancelled (Ctrl-C). */
static int is_cancelled(void *ctx) {
  weft_call *call = ctx;
  return call->host->is_cancelled(call);
}

static int canny_run(weft_call *call) {
  const weft_host *host = call->host;
  double low = weft_param_float(call, P_LOW);
  double high = weft_param_float(call, P_HIGH);
  if (!(low > 0.0) || low > high) {
    host->error(call,
                "low_threshold (%g) must be above 0 and at most high_threshold "
                "(%g)",
                low, high);
    return WEFT_EINVAL;
  }
  /* The input tensor is borrowed: valid while call->inputs[0] is. */
  const weft_tensor *in = weft_input_tensor(call, 0);
  if (!in || in->dtype != WEFT_F32 || in->device != WEFT_DEVICE_CPU ||
      in->ndim != 4) {
    host->error(call, "input 'image' must be an f32 IMAGE [B,H,W,C] on the "
                      "CPU");
    return WEFT_ETYPE;
  }
  int64_t nb = in->shape[0], h = in->shape[1], w = in->shape[2];
  int64_t c = in->shape[3];
  if (in->stride[3] != 1 || in->stride[2] != c || in->stride[1] != w * c ||
      (nb > 1 && in->stride[0] != h * w * c)) {
    host->error(call, "input 'image' must be contiguous");
    return WEFT_EUNSUPPORTED;
  }

  /* The output value is ours until stored in call->outputs. */
  int64_t shape[4] = {nb, h, w, 3};
  weft_tensor out;
  weft_value *v =
      host->tensor_new(call, WEFT_TYPE_IMAGE, WEFT_F32, 4, shape, &out);
  if (!v) return WEFT_ENOMEM; /* the host recorded the error */
  uint8_t *edges = malloc((size_t)(h * w));
  if (!edges) {
    host->value_release(v);
    host->error(call, "out of memory for a %lldx%lld edge map", (long long)w,
                (long long)h);
    return WEFT_ENOMEM;
  }
  const float *src = in->data;
  float *dst = out.data;
  int rc = 0;
  for (int64_t b = 0; b < nb && rc == 0; b++) {
    int r = canny_edges(src + b * h * w * c, h, w, c, low, high, edges,
                        is_cancelled, call);
    if (r == CANNY_ECANCELED) {
      rc = WEFT_ECANCELED;
    } else if (r != CANNY_OK) {
      const char *why = r == CANNY_ENOMEM ? "out of memory" : "bad input";
      host->error(call, "edge detection failed on image %lld: %s", (long long)b,
                  why);
      rc = r == CANNY_ENOMEM ? WEFT_ENOMEM : WEFT_EINVAL;
    } else {
      float *o = dst + b * h * w * 3;
      for (int64_t i = 0; i < h * w; i++)
        o[3 * i] = o[3 * i + 1] = o[3 * i + 2] = edges[i];
      host->progress(call, b + 1, nb);
    }
  }
  free(edges);
  if (rc) {
    host->value_release(v);
    return rc;
  }
  call->outputs[0] = v; /* ownership passes to the runtime */
  return 0;
}

static const weft_node_def canny_node = {
    .struct_size = sizeof(weft_node_def),
    .op = "Canny",
    .category = "image/preprocessors",
    .doc = "Canny edge detection, as ComfyUI's Canny node (kornia's "
           "algorithm: 5x5 Gaussian, Sobel, non-maximum suppression, "
           "hysteresis).  A ControlNet preprocessor.",
    .inputs = canny_inputs,
    .n_inputs = 1,
    .outputs = canny_outputs,
    .n_outputs = 1,
    .params = canny_params,
    .n_params = 2,
    .run = canny_run,
};

static const weft_node_def *const canny_nodes[] = {&canny_node};

WEFT_PLUGIN_DEFINE("canny", "1.0.0", canny_nodes)
