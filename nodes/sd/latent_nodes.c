/* latent_nodes.c - nodes that reshape latents without a model:
 * LatentUpscale, LatentUpscaleBy (comfy.utils.common_upscale on the latent)
 * and SetLatentNoiseMask (the mask KSampler inpaints with). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sd_nodes.h"

static const char *const crop_choices[] = {"disabled", "center", NULL};

static int upscale_to(weft_call *c, const weft_tensor *lat, int mode, bool crop,
                      int64_t ow, int64_t oh) {
  int64_t shape[4] = {lat->shape[0], lat->shape[1], oh, ow};
  weft_tensor t;
  c->outputs[0] =
      c->host->tensor_new(c, WEFT_TYPE_LATENT, WEFT_F32, 4, shape, &t);
  if (!c->outputs[0]) return WEFT_ENOMEM;
  int r = sd_latent_resize_nc(lat->data, lat->shape[0], lat->shape[1],
                              lat->shape[2], lat->shape[3], t.data, oh, ow,
                              mode, crop);
  if (r) c->host->error(c, "resize failed");
  return r;
}

static const weft_tensor *latent_in(weft_call *c) {
  const weft_tensor *t = c->host->value_tensor(c->inputs[0]);
  if (!t || t->ndim != 4 || t->dtype != WEFT_F32) {
    c->host->error(c, "samples must be a LATENT [batch, channels, h, w]");
    return NULL;
  }
  return t;
}

enum { LU_METHOD, LU_WIDTH, LU_HEIGHT, LU_CROP };

static int latent_upscale_run(weft_call *c) {
  const weft_tensor *lat = latent_in(c);
  if (!lat) return WEFT_ETYPE;
  int64_t w = weft_param_int(c, LU_WIDTH), h = weft_param_int(c, LU_HEIGHT);
  int64_t lh = lat->shape[2], lw = lat->shape[3];
  int64_t ow, oh;
  if (!sd_latent_upscale_size(lw, lh, w, h, &ow, &oh)) {
    c->outputs[0] = c->inputs[0];
    c->host->value_retain(c->inputs[0]);
    return 0;
  }
  return upscale_to(c, lat, (int)weft_param_int(c, LU_METHOD),
                    weft_param_int(c, LU_CROP) == 1, ow, oh);
}

enum { LB_METHOD, LB_SCALE };

static int latent_upscale_by_run(weft_call *c) {
  const weft_tensor *lat = latent_in(c);
  if (!lat) return WEFT_ETYPE;
  double s = weft_param_float(c, LB_SCALE);
  int64_t w, h;
  sd_latent_upscale_by_size(lat->shape[3], lat->shape[2], s, &w, &h);
  if (w < 1 || h < 1) {
    c->host->error(c, "scale_by %g makes an empty latent", s);
    return WEFT_ERANGE;
  }
  return upscale_to(c, lat, (int)weft_param_int(c, LB_METHOD), false, w, h);
}

static int set_noise_mask_run(weft_call *c) {
  const weft_host *h = c->host;
  const weft_tensor *lat = latent_in(c);
  const weft_tensor *mask = h->value_tensor(c->inputs[1]);
  if (!lat) return WEFT_ETYPE;
  if (!mask || mask->ndim < 2 || mask->dtype != WEFT_F32) {
    h->error(c, "mask must be a MASK [batch, height, width]");
    return WEFT_ETYPE;
  }
  /* a copy of the latent carrying the mask, reshaped [-1, 1, H, W] */
  weft_tensor t, m;
  c->outputs[0] =
      h->tensor_new(c, WEFT_TYPE_LATENT, WEFT_F32, 4, lat->shape, &t);
  int64_t H = mask->shape[mask->ndim - 2], W = mask->shape[mask->ndim - 1];
  int64_t n = weft_tensor_numel(mask) / (H * W);
  int64_t ms[4] = {n, 1, H, W};
  weft_value *mv = h->tensor_new(c, WEFT_TYPE_MASK, WEFT_F32, 4, ms, &m);
  int r = 0;
  if (!c->outputs[0] || !mv) {
    r = WEFT_ENOMEM;
  } else {
    memcpy(t.data, lat->data, (size_t)weft_tensor_numel(lat) * sizeof(float));
    memcpy(m.data, mask->data, (size_t)weft_tensor_numel(mask) * sizeof(float));
    r = h->value_set_attr(c->outputs[0], "noise_mask", mv);
  }
  if (mv) h->value_release(mv);
  return r;
}

/* ---- descriptors --------------------------------------------------------- */

static const weft_port_def samples_in[] = {
    SD_PORT("samples", WEFT_TYPE_LATENT, "the latent")};
static const weft_port_def latent_out[] = {
    SD_PORT("LATENT", WEFT_TYPE_LATENT, "the result")};

static const weft_param_def upscale_params[] = {
    [LU_METHOD] = SD_P_ENUM("upscale_method", 0, sd_latent_methods,
                            "resampling: torch's interpolate modes, or bislerp "
                            "(slerp of the channel vectors)"),
    [LU_WIDTH] = SD_P_INT("width", 512, 0, 16384,
                          "pixels (latent * 8); 0 keeps the aspect ratio"),
    [LU_HEIGHT] = SD_P_INT("height", 512, 0, 16384,
                           "pixels (latent * 8); 0 keeps the aspect ratio"),
    [LU_CROP] = SD_P_ENUM("crop", 0, crop_choices,
                          "center: crop to the new aspect ratio first"),
};
const weft_node_def sd_latent_upscale_def = {
    .struct_size = sizeof(weft_node_def),
    .op = "LatentUpscale",
    .category = "latent",
    .doc = "Resizes a latent to a pixel size (at least 64), as ComfyUI's "
           "LatentUpscale.",
    .inputs = samples_in,
    .n_inputs = 1,
    .outputs = latent_out,
    .n_outputs = 1,
    .params = upscale_params,
    .n_params = 4,
    .run = latent_upscale_run};

static const weft_param_def upscale_by_params[] = {
    [LB_METHOD] = SD_P_ENUM("upscale_method", 0, sd_latent_methods,
                            "resampling, as LatentUpscale's"),
    [LB_SCALE] = SD_P_FLOAT("scale_by", 1.5, 0.01, 8.0, "factor"),
};
const weft_node_def sd_latent_upscale_by_def = {
    .struct_size = sizeof(weft_node_def),
    .op = "LatentUpscaleBy",
    .category = "latent",
    .doc = "Resizes a latent by a factor.",
    .inputs = samples_in,
    .n_inputs = 1,
    .outputs = latent_out,
    .n_outputs = 1,
    .params = upscale_by_params,
    .n_params = 2,
    .run = latent_upscale_by_run};

static const weft_port_def mask_in[] = {
    SD_PORT("samples", WEFT_TYPE_LATENT, "the latent"),
    SD_PORT("mask", WEFT_TYPE_MASK, "1 where the sampler may change it"),
};
const weft_node_def sd_set_noise_mask_def = {
    .struct_size = sizeof(weft_node_def),
    .op = "SetLatentNoiseMask",
    .category = "latent/inpaint",
    .doc = "Attaches a mask to a latent: KSampler then changes only the "
           "masked area and keeps the rest of the latent.",
    .inputs = mask_in,
    .n_inputs = 2,
    .outputs = latent_out,
    .n_outputs = 1,
    .run = set_noise_mask_run};
