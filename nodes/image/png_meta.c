/* png_meta.c - SaveImage's PNG text: A1111's "parameters" derived from the
 * ComfyUI prompt, the "weft" record, ASCII JSON.  See png_meta.h. */
#include "png_meta.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_u64.h"

/* ---- sampler names ------------------------------------------------------ */

/* ComfyUI sampler_name -> A1111's label, as A1111's sd_samplers_kdiffusion
 * lists them and civitai's constants repeat them. */
static const char *const sampler_labels[][2] = {
    {"euler", "Euler"},
    {"euler_ancestral", "Euler a"},
    {"heun", "Heun"},
    {"dpm_2", "DPM2"},
    {"dpm_2_ancestral", "DPM2 a"},
    {"lms", "LMS"},
    {"dpm_fast", "DPM fast"},
    {"dpm_adaptive", "DPM adaptive"},
    {"dpmpp_2s_ancestral", "DPM++ 2S a"},
    {"dpmpp_sde", "DPM++ SDE"},
    {"dpmpp_sde_gpu", "DPM++ SDE"},
    {"dpmpp_2m", "DPM++ 2M"},
    {"dpmpp_2m_sde", "DPM++ 2M SDE"},
    {"dpmpp_2m_sde_gpu", "DPM++ 2M SDE"},
    {"dpmpp_2m_sde_heun", "DPM++ 2M SDE Heun"},
    {"dpmpp_2m_sde_heun_gpu", "DPM++ 2M SDE Heun"},
    {"dpmpp_3m_sde", "DPM++ 3M SDE"},
    {"dpmpp_3m_sde_gpu", "DPM++ 3M SDE"},
    {"ddpm", "DDPM"},
    {"ddim", "DDIM"},
    {"uni_pc", "UniPC"},
    {"uni_pc_bh2", "UniPC"},
    {"lcm", "LCM"},
    {"deis", "DEIS"},
};

/* ComfyUI scheduler -> A1111's "Schedule type" label (A1111 1.9+). */
static const char *const schedule_labels[][2] = {
    {"sgm_uniform", "SGM Uniform"}, {"simple", "Simple"},
    {"ddim_uniform", "DDIM"},       {"beta", "Beta"},
    {"kl_optimal", "KL Optimal"},   {"linear_quadratic", "Linear Quadratic"},
};

const char *weft__meta_sampler_name(const char *sampler, const char *scheduler,
                                    const char **schedule_type, char *buf,
                                    int len) {
  const char *label = sampler;
  for (size_t i = 0; i < sizeof sampler_labels / sizeof *sampler_labels; i++)
    if (!strcmp(sampler, sampler_labels[i][0])) label = sampler_labels[i][1];
  const char *suffix = "";
  *schedule_type = NULL;
  if (scheduler && !strcmp(scheduler, "karras")) {
    suffix = " Karras";
  } else if (scheduler && !strcmp(scheduler, "exponential")) {
    suffix = " Exponential";
  } else if (scheduler && strcmp(scheduler, "normal") != 0) {
    *schedule_type = scheduler;
    for (size_t i = 0; i < sizeof schedule_labels / sizeof *schedule_labels;
         i++)
      if (!strcmp(scheduler, schedule_labels[i][0]))
        *schedule_type = schedule_labels[i][1];
  }
  snprintf(buf, (size_t)len, "%s%s", label, suffix);
  return buf;
}

/* ---- walking the prompt ------------------------------------------------- */

/* The node a link [id, slot] points at, or NULL. */
static json_t *link_target(json_t *prompt, json_t *v) {
  if (!json_is_array(v) || json_array_size(v) != 2) return NULL;
  json_t *id = json_array_get(v, 0);
  return json_is_string(id) ? json_object_get(prompt, json_string_value(id))
                            : NULL;
}

static json_t *input_of(json_t *node, const char *name) {
  json_t *in = node ? json_object_get(node, "inputs") : NULL;
  return in ? json_object_get(in, name) : NULL;
}

static bool class_is(json_t *node, const char *const *classes) {
  const char *ct = json_string_value(json_object_get(node, "class_type"));
  for (int i = 0; ct && classes[i]; i++)
    if (!strcmp(ct, classes[i])) return true;
  return false;
}

/* Breadth first upstream from the node a link (or, with from_node, a
 * node) points at, the nearest node of one of classes; the start node
 * itself counts only when reached through a link.  At a node with a linked
 * input named prefer, only that input is followed: conditioning that passes
 * a ControlNetApplyAdvanced (inputs positive and negative) stays on its
 * side. */
static json_t *find_upstream(json_t *prompt, json_t *from_link,
                             json_t *from_node, const char *const *classes,
                             const char *prefer) {
  size_t cap = json_object_size(prompt) + 1, head = 0, tail = 0;
  json_t **queue = malloc(cap * sizeof *queue);
  json_t *seen = json_object(); /* id -> true */
  json_t *found = NULL;
  if (!queue || !seen) goto done;
  if (from_node) {
    queue[tail++] = from_node;
  } else {
    json_t *t = link_target(prompt, from_link);
    if (t) {
      if (class_is(t, classes)) {
        found = t;
        goto done;
      }
      queue[tail++] = t;
      json_object_set_new(seen, json_string_value(json_array_get(from_link, 0)),
                          json_true());
    }
  }
  while (head < tail && !found) {
    json_t *node = queue[head++];
    json_t *in = json_object_get(node, "inputs");
    json_t *only = prefer ? json_object_get(in, prefer) : NULL;
    const char *name;
    json_t *v;
    json_object_foreach(in, name, v) {
      if (only && link_target(prompt, only) && v != only) continue;
      json_t *t = link_target(prompt, v);
      if (!t) continue;
      const char *id = json_string_value(json_array_get(v, 0));
      if (json_object_get(seen, id)) continue;
      json_object_set_new(seen, id, json_true());
      if (class_is(t, classes)) {
        found = t;
        break;
      }
      if (tail < cap) queue[tail++] = t;
    }
  }
done:
  free(queue);
  json_decref(seen);
  return found;
}

/* ---- formatting --------------------------------------------------------- */

typedef struct sbuf {
  char *s;
  size_t n, cap;
  bool oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
  if (b->oom) return;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if (b->n + (size_t)n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + (size_t)n + 1)
      cap *= 2;
    char *ns = realloc(b->s, cap);
    if (!ns) {
      b->oom = true;
      return;
    }
    b->s = ns;
    b->cap = cap;
  }
  va_start(ap, fmt);
  vsnprintf(b->s + b->n, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->n += (size_t)n;
}

/* The shortest decimal that reads back as x: 7 -> "7", 7.5 -> "7.5". */
static void fmt_number(char *buf, size_t len, double x) {
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(buf, len, "%.*g", prec, x);
    if (strtod(buf, NULL) == x) return;
  }
}

static bool number_of(json_t *v, double *x) {
  if (!json_is_number(v)) return false;
  *x = json_number_value(v);
  return true;
}

/* A1111's quote(): a value holding ',', ':' or a newline is written as a
 * JSON string (non-ASCII kept). */
static void field(sbuf *b, const char *key, const char *value) {
  if (!strpbrk(value, ",:\n")) {
    sb_printf(b, ", %s: %s", key, value);
    return;
  }
  json_t *s = json_string(value);
  char *q = s ? json_dumps(s, JSON_ENCODE_ANY) : NULL;
  if (q) sb_printf(b, ", %s: %s", key, q);
  free(q);
  json_decref(s);
}

static const char *text_of(json_t *prompt, json_t *ks, const char *side,
                           json_t **encoder) {
  static const char *const enc[] = {"CLIPTextEncode", NULL};
  json_t *n = find_upstream(prompt, input_of(ks, side), NULL, enc, side);
  if (encoder) *encoder = n;
  return n ? json_string_value(input_of(n, "text")) : NULL;
}

char *weft__meta_parameters(const char *prompt_json, const char *save_id,
                            int64_t width, int64_t height) {
  static const char *const samplers[] = {"KSampler", "KSamplerAdvanced", NULL};
  static const char *const latents[] = {"EmptyLatentImage", NULL};
  static const char *const loaders[] = {"CheckpointLoaderSimple", NULL};
  static const char *const skips[] = {"CLIPSetLastLayer", NULL};
  if (!prompt_json || !save_id) return NULL;
  json_t *prompt =
      weft__json_loadb(prompt_json, strlen(prompt_json), 0, NULL);
  json_t *save =
      json_is_object(prompt) ? json_object_get(prompt, save_id) : NULL;
  json_t *ks =
      save ? find_upstream(prompt, NULL, save, samplers, "images") : NULL;
  if (!ks) {
    json_decref(prompt);
    return NULL;
  }
  bool advanced = class_is(ks, samplers + 1);
  sbuf b = {0};
  json_t *pos_enc = NULL;
  const char *pos = text_of(prompt, ks, "positive", &pos_enc);
  const char *neg = text_of(prompt, ks, "negative", NULL);
  sb_printf(&b, "%s\n", pos ? pos : "");
  if (neg && *neg) sb_printf(&b, "Negative prompt: %s\n", neg);
  /* "Steps" opens the line; fields are ", Key: value" after it */
  json_t *steps = input_of(ks, "steps");
  if (json_is_integer(steps))
    sb_printf(&b, "Steps: %" JSON_INTEGER_FORMAT, json_integer_value(steps));
  else
    sb_printf(&b, "Steps: ?");
  const char *sampler = json_string_value(input_of(ks, "sampler_name"));
  const char *scheduler = json_string_value(input_of(ks, "scheduler"));
  char buf[128];
  if (sampler) {
    const char *stype;
    field(&b, "Sampler",
          weft__meta_sampler_name(sampler, scheduler, &stype, buf,
                                  (int)sizeof buf));
    if (stype) field(&b, "Schedule type", stype);
  }
  double x;
  if (number_of(input_of(ks, "cfg"), &x)) {
    fmt_number(buf, sizeof buf, x);
    field(&b, "CFG scale", buf);
  }
  json_t *seed = input_of(ks, advanced ? "noise_seed" : "seed");
  uint64_t big;
  if (weft__json_is_u64(seed, &big)) {
    snprintf(buf, sizeof buf, "%" PRIu64, big);
    field(&b, "Seed", buf);
  } else if (json_is_integer(seed)) {
    snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT,
             json_integer_value(seed));
    field(&b, "Seed", buf);
  }
  json_t *lat =
      find_upstream(prompt, input_of(ks, "latent_image"), NULL, latents, NULL);
  json_t *lw = input_of(lat, "width"), *lh = input_of(lat, "height");
  if (json_is_integer(lw) && json_is_integer(lh))
    snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT "x%" JSON_INTEGER_FORMAT,
             json_integer_value(lw), json_integer_value(lh));
  else
    snprintf(buf, sizeof buf, "%" PRId64 "x%" PRId64, width, height);
  field(&b, "Size", buf);
  json_t *ckpt =
      find_upstream(prompt, input_of(ks, "model"), NULL, loaders, "model");
  const char *path = json_string_value(input_of(ckpt, "ckpt_name"));
  if (path) {
    /* A1111 names a model by its file name without folder and extension */
    size_t n = strlen(path);
    while (n > 1 && (path[n - 1] == '/' || path[n - 1] == '\\'))
      n--;
    size_t start = n;
    while (start > 0 && path[start - 1] != '/' && path[start - 1] != '\\')
      start--;
    char *name = strndup(path + start, n - start);
    char *dot = name ? strrchr(name, '.') : NULL;
    if (dot && dot != name) *dot = 0;
    if (name)
      field(&b, "Model", name);
    else
      b.oom = true;
    free(name);
  }
  if (!advanced && number_of(input_of(ks, "denoise"), &x) && x < 1.0) {
    fmt_number(buf, sizeof buf, x);
    field(&b, "Denoising strength", buf);
  }
  json_t *skip = pos_enc ? find_upstream(prompt, input_of(pos_enc, "clip"),
                                         NULL, skips, "clip")
                         : NULL;
  json_t *layer = input_of(skip, "stop_at_clip_layer");
  if (json_is_integer(layer) && json_integer_value(layer) <= -2) {
    snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT,
             -json_integer_value(layer));
    field(&b, "Clip skip", buf);
  }
  json_decref(prompt);
  if (b.oom) {
    free(b.s);
    return NULL;
  }
  return b.s;
}

/* ---- the weft record and ASCII JSON ------------------------------------- */

static char *dump_ascii(json_t *o) {
  return weft__json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII |
                                 JSON_REAL_PRECISION(17));
}

char *weft__meta_ascii_json(const char *json) {
  return json ? dump_ascii(weft__json_loadb(json, strlen(json), JSON_DECODE_ANY,
                                          NULL))
              : NULL;
}

char *weft__meta_weft_record(const char *graph, const char *inputs_json,
                             const char *graph_file) {
  if (!graph) return NULL;
  json_t *inputs =
      inputs_json ? weft__json_loadb(inputs_json, strlen(inputs_json), 0, NULL)
                  : NULL;
  if (!json_is_object(inputs)) {
    json_decref(inputs);
    inputs = json_object();
  }
  json_t *o = json_object();
  if (o) {
    json_object_set_new(o, "version", json_integer(1));
    json_object_set_new(o, "graph", json_string(graph));
    json_object_set_new(o, "inputs", inputs);
    inputs = NULL;
    if (graph_file)
      json_object_set_new(o, "graph_file", json_string(graph_file));
    if (!json_is_string(json_object_get(o, "graph"))) {
      json_decref(o); /* graph text that is not UTF-8 */
      o = NULL;
    }
  }
  json_decref(inputs);
  return dump_ascii(o);
}
