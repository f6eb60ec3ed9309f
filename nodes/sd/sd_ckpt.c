/* sd_ckpt.c - checkpoint reading for SD1.x/SD2.x: architecture configs from
 * diffusers config.json files, a single file's "weft.config" metadata, or
 * the tensors themselves; diffusers names translated to the original (LDM)
 * layout as diffusers' convert_diffusers_to_original_stable_diffusion.py
 * maps them; weights converted to float32. */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kernels/cpu/cpu.h"
#include "sd.h"

static int fail(sd_ckpt *ck, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ck->err, sizeof ck->err, fmt, ap);
  va_end(ap);
  return code;
}

/* ---- names ---------------------------------------------------------------- */

static const char *const ldm_prefix[SD_ALL_PARTS] = {
    "model.diffusion_model.", "first_stage_model.",
    "cond_stage_model.transformer.", "control_model."};

/* resnet sub-names: diffusers -> LDM UNet */
static const char *unet_resnet(const char *rest, char *buf, size_t len) {
  static const char *const map[][2] = {
      {"norm1.", "in_layers.0."},     {"conv1.", "in_layers.2."},
      {"time_emb_proj.", "emb_layers.1."}, {"norm2.", "out_layers.0."},
      {"conv2.", "out_layers.3."},    {"conv_shortcut.", "skip_connection."}};
  for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
    size_t n = strlen(map[i][0]);
    if (!strncmp(rest, map[i][0], n)) {
      snprintf(buf, len, "%s%s", map[i][1], rest + n);
      return buf;
    }
  }
  return rest;
}

static void unet_ldm(const sd_unet_cfg *c, const char *n, char *out,
                     size_t len) {
  const int L1 = c->layers_per_block + 1;
  int i, j, off = 0;
  char rb[256];
  static const char *const fixed[][2] = {
      {"time_embedding.linear_1.", "time_embed.0."},
      {"time_embedding.linear_2.", "time_embed.2."},
      {"conv_in.", "input_blocks.0.0."},
      {"conv_norm_out.", "out.0."},
      {"conv_out.", "out.2."}};
  for (size_t k = 0; k < sizeof fixed / sizeof fixed[0]; k++) {
    size_t l = strlen(fixed[k][0]);
    if (!strncmp(n, fixed[k][0], l)) {
      snprintf(out, len, "%s%s", fixed[k][1], n + l);
      return;
    }
  }
  if (sscanf(n, "down_blocks.%d.resnets.%d.%n", &i, &j, &off) == 2 && off)
    snprintf(out, len, "input_blocks.%d.0.%s", L1 * i + j + 1,
             unet_resnet(n + off, rb, sizeof rb));
  else if (sscanf(n, "down_blocks.%d.attentions.%d.%n", &i, &j, &off) == 2 &&
           off)
    snprintf(out, len, "input_blocks.%d.1.%s", L1 * i + j + 1, n + off);
  else if (sscanf(n, "down_blocks.%d.downsamplers.0.conv.%n", &i, &off) == 1 &&
           off)
    snprintf(out, len, "input_blocks.%d.0.op.%s", L1 * (i + 1), n + off);
  else if (sscanf(n, "mid_block.resnets.%d.%n", &j, &off) == 1 && off)
    snprintf(out, len, "middle_block.%d.%s", 2 * j,
             unet_resnet(n + off, rb, sizeof rb));
  else if (!strncmp(n, "mid_block.attentions.0.", 23))
    snprintf(out, len, "middle_block.1.%s", n + 23);
  else if (sscanf(n, "up_blocks.%d.resnets.%d.%n", &i, &j, &off) == 2 && off)
    snprintf(out, len, "output_blocks.%d.0.%s", L1 * i + j,
             unet_resnet(n + off, rb, sizeof rb));
  else if (sscanf(n, "up_blocks.%d.attentions.%d.%n", &i, &j, &off) == 2 &&
           off)
    snprintf(out, len, "output_blocks.%d.1.%s", L1 * i + j, n + off);
  else if (sscanf(n, "up_blocks.%d.upsamplers.0.conv.%n", &i, &off) == 1 &&
           off && i < 8)
    snprintf(out, len, "output_blocks.%d.%d.conv.%s", L1 * i + L1 - 1,
             c->up_attn[i] ? 2 : 1, n + off);
  else
    snprintf(out, len, "%s", n);
}

static void vae_ldm(const sd_vae_cfg *c, const char *n, char *out,
                    size_t len) {
  int i, j, off = 0;
  char side[16], rest[256];
  if (sscanf(n, "%15[a-z].%n", side, &off) != 1 || !off) {
    snprintf(out, len, "%s", n);
    return;
  }
  const char *r = n + off;
  if (!strncmp(r, "conv_norm_out.", 14)) {
    snprintf(out, len, "%s.norm_out.%s", side, r + 14);
    return;
  }
  /* resnet internals: conv_shortcut -> nin_shortcut */
  const char *tail = NULL;
  char head[96];
  if (sscanf(r, "down_blocks.%d.resnets.%d.%n", &i, &j, &off) == 2 && off) {
    snprintf(head, sizeof head, "down.%d.block.%d.", i, j);
    tail = r + off;
  } else if (sscanf(r, "up_blocks.%d.resnets.%d.%n", &i, &j, &off) == 2 &&
             off) {
    snprintf(head, sizeof head, "up.%d.block.%d.", c->n_levels - 1 - i, j);
    tail = r + off;
  } else if (sscanf(r, "mid_block.resnets.%d.%n", &j, &off) == 1 && off) {
    snprintf(head, sizeof head, "mid.block_%d.", j + 1);
    tail = r + off;
  }
  if (tail) {
    if (!strncmp(tail, "conv_shortcut.", 14))
      snprintf(rest, sizeof rest, "nin_shortcut.%s", tail + 14);
    else
      snprintf(rest, sizeof rest, "%s", tail);
    snprintf(out, len, "%s.%s%s", side, head, rest);
    return;
  }
  if (sscanf(r, "down_blocks.%d.downsamplers.0.%n", &i, &off) == 1 && off) {
    snprintf(out, len, "%s.down.%d.downsample.%s", side, i, r + off);
    return;
  }
  if (sscanf(r, "up_blocks.%d.upsamplers.0.%n", &i, &off) == 1 && off) {
    snprintf(out, len, "%s.up.%d.upsample.%s", side, c->n_levels - 1 - i,
             r + off);
    return;
  }
  if (!strncmp(r, "mid_block.attentions.0.", 23)) {
    static const char *const map[][2] = {{"group_norm.", "norm."},
                                         {"to_q.", "q."},
                                         {"to_k.", "k."},
                                         {"to_v.", "v."},
                                         {"to_out.0.", "proj_out."}};
    const char *a = r + 23;
    for (size_t k = 0; k < sizeof map / sizeof map[0]; k++) {
      size_t l = strlen(map[k][0]);
      if (!strncmp(a, map[k][0], l)) {
        snprintf(out, len, "%s.mid.attn_1.%s%s", side, map[k][1], a + l);
        return;
      }
    }
  }
  snprintf(out, len, "%s", n);
}

/* A ControlNet's own layers; the rest are named as in the UNet */
static void control_ldm(const sd_ckpt *ck, const char *n, char *out,
                        size_t len) {
  int i, off = 0;
  const char *ce = "controlnet_cond_embedding.";
  size_t lce = strlen(ce);
  if (!strncmp(n, ce, lce)) {
    const char *r = n + lce;
    int nb = 2 * (ck->n_hint - 1); /* convs between conv_in and conv_out */
    if (!strncmp(r, "conv_in.", 8))
      snprintf(out, len, "input_hint_block.0.%s", r + 8);
    else if (!strncmp(r, "conv_out.", 9))
      snprintf(out, len, "input_hint_block.%d.%s", 2 * (nb + 1), r + 9);
    else if (sscanf(r, "blocks.%d.%n", &i, &off) == 1 && off)
      snprintf(out, len, "input_hint_block.%d.%s", 2 * (i + 1), r + off);
    else
      snprintf(out, len, "%s", n);
  } else if (sscanf(n, "controlnet_down_blocks.%d.%n", &i, &off) == 1 && off) {
    snprintf(out, len, "zero_convs.%d.0.%s", i, n + off);
  } else if (!strncmp(n, "controlnet_mid_block.", 21)) {
    snprintf(out, len, "middle_block_out.0.%s", n + 21);
  } else {
    unet_ldm(&ck->control, n, out, len);
  }
}

void sd_ldm_name(const sd_ckpt *ck, sd_part part, const char *name, char *out,
                 size_t len) {
  char tmp[448]; /* with the longest prefix, within the 512 of a key */
  switch (part) {
  case SD_UNET: unet_ldm(&ck->unet, name, tmp, sizeof tmp); break;
  case SD_CONTROL: control_ldm(ck, name, tmp, sizeof tmp); break;
  case SD_VAE: vae_ldm(&ck->vae, name, tmp, sizeof tmp); break;
  default: snprintf(tmp, sizeof tmp, "%s", name); break;
  }
  snprintf(out, len, "%s%s", ldm_prefix[part], tmp);
}

/* The key a diffusers name has in this checkpoint's file. */
static void key_for(const sd_ckpt *ck, sd_part part, const char *name,
                    char *out, size_t len) {
  if (ck->layout == SD_LAYOUT_LDM) {
    sd_ldm_name(ck, part, name, out, len);
  } else if (part == SD_CLIP && !strcmp(ck->clip_prefix, "<strip>") &&
             !strncmp(name, "text_model.", 11)) {
    snprintf(out, len, "%s", name + 11);
  } else {
    snprintf(out, len, "%s", name);
  }
}

static bool get_view(sd_ckpt *ck, sd_part part, const char *name,
                     weft_tensor *v) {
  char key[512];
  key_for(ck, part, name, key, sizeof key);
  const sd_file *f = &ck->files[part];
  return f->handle && f->get(f->handle, key, v) == 0;
}

static bool has(sd_ckpt *ck, sd_part part, const char *name) {
  weft_tensor v;
  return get_view(ck, part, name, &v);
}

/* shape[dim] of a weight, or -1 */
static int64_t dim_of(sd_ckpt *ck, sd_part part, const char *name, int dim) {
  weft_tensor v;
  if (!get_view(ck, part, name, &v) || dim >= v.ndim) return -1;
  return v.shape[dim];
}

void *sd_huge_alloc(size_t bytes) {
  enum { HUGE_PAGE = 2 << 20 };
  if (bytes < 2 * (size_t)HUGE_PAGE) return malloc(bytes ? bytes : 1);
  size_t round = (bytes + HUGE_PAGE - 1) & ~(size_t)(HUGE_PAGE - 1);
  void *p = aligned_alloc(HUGE_PAGE, round);
#ifdef MADV_HUGEPAGE
  if (p) madvise(p, round, MADV_HUGEPAGE); /* a hint: no THP, no harm */
#endif
  return p;
}

/* A master's memory (released with free). */
static float *master_alloc(int64_t n) {
  return sd_huge_alloc((size_t)n * sizeof(float));
}

/* Benchmark weights: norms' scales 1, biases 0, the rest uniform in
 * +-0.02 (small enough that activations stay finite through a deep net). */
static int random_weight(sd_ckpt *ck, const char *name, int64_t numel,
                         float **out) {
  if (numel <= 0)
    return fail(ck, WEFT_EINVAL, "random weights need a size for '%s'", name);
  float *w = master_alloc(numel);
  if (!w) return fail(ck, WEFT_ENOMEM, "out of memory for '%s'", name);
  size_t ln = strlen(name);
  bool bias = ln >= 4 && !strcmp(name + ln - 4, "bias");
  bool norm = strstr(name, "norm") && !bias;
  for (int64_t i = 0; i < numel; i++) {
    ck->rng = ck->rng * 6364136223846793005ull + 1442695040888963407ull;
    float u = (float)((ck->rng >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
    w[i] = norm ? 1.0f : bias ? 0.0f : 0.02f * u;
  }
  *out = w;
  return 0;
}

/* One slice of a conversion, on a thread of its own. */
typedef struct conv_slice {
  float *dst;
  const unsigned char *src;
  weft_dtype dt;
  int64_t n;
} conv_slice;

static void *conv_slice_run(void *arg) {
  conv_slice *c = arg;
  weft_cpu_convert_serial(c->dst, WEFT_F32, c->src, c->dt, c->n);
  return NULL;
}

/* src (dt) to fp32, vectorised (F16C; the mapping may be misaligned); a
 * large tensor in slices on up to 8 threads, so that the page faults of
 * its new memory -- most of a load's time -- are taken in parallel too */
static void to_f32(float *w, const void *src, weft_dtype dt, int64_t n) {
  enum { MAX_T = 8, MIN_SLICE = 1 << 20 };
  int t = (int)(n / MIN_SLICE);
  if (t > MAX_T) t = MAX_T;
  if (t > 1) { /* loads may run on several threads: no cached count */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores >= 1 && t > cores) t = (int)cores;
  }
  size_t es = weft_dtype_size(dt);
  pthread_t th[MAX_T];
  conv_slice sl[MAX_T];
  int started = 0;
  int64_t per = t > 1 ? (n + t - 1) / t : n;
  for (int i = 1; i < t; i++) {
    int64_t b = per * i, e = b + per < n ? b + per : n;
    sl[i] = (conv_slice){w + b, (const unsigned char *)src + (size_t)b * es,
                         dt, e - b};
    if (pthread_create(&th[i], NULL, conv_slice_run, &sl[i])) break;
    started = i;
  }
  /* this thread: the first slice, and any whose thread did not start */
  weft_cpu_convert_serial(w, WEFT_F32, src, dt, t > 1 ? per : n);
  for (int i = started + 1; i < t; i++) conv_slice_run(&sl[i]);
  for (int i = 1; i <= started; i++) pthread_join(th[i], NULL);
}

int sd_weight(sd_ckpt *ck, sd_part part, const char *name, int64_t numel,
              float **out) {
  *out = NULL;
  if (ck->random_weights) return random_weight(ck, name, numel, out);
  weft_tensor v;
  char key[512];
  key_for(ck, part, name, key, sizeof key);
  const sd_file *f = &ck->files[part];
  int r = f->handle ? f->get(f->handle, key, &v) : WEFT_ENOENT;
  if (r == WEFT_ENOENT)
    return fail(ck, WEFT_ENOENT, "%s: missing tensor '%s'", f->path, key);
  if (r)
    return fail(ck, WEFT_EFORMAT, "%s: tensor '%s' has a dtype weft cannot "
                "read", f->path, key);
  if (ck->n_used == ck->cap_used) {
    int cap = ck->cap_used ? 2 * ck->cap_used : 1024;
    char **nu = realloc(ck->used, (size_t)cap * sizeof *nu);
    if (!nu) return fail(ck, WEFT_ENOMEM, "out of memory");
    ck->used = nu;
    ck->cap_used = cap;
  }
  if (!(ck->used[ck->n_used] = strdup(key)))
    return fail(ck, WEFT_ENOMEM, "out of memory");
  ck->n_used++;
  int64_t n = weft_tensor_numel(&v);
  if (numel > 0 && n != numel)
    return fail(ck, WEFT_EFORMAT,
                "%s: tensor '%s' has %lld elements, the architecture needs "
                "%lld",
                f->path, key, (long long)n, (long long)numel);
  if (v.dtype != WEFT_F32 && v.dtype != WEFT_F16 && v.dtype != WEFT_BF16)
    return fail(ck, WEFT_EFORMAT, "%s: tensor '%s' is not a float tensor",
                f->path, key);
  float *w = master_alloc(n);
  if (!w) return fail(ck, WEFT_ENOMEM, "out of memory loading '%s'", key);
  if (!ck->defer_reads) to_f32(w, v.data, v.dtype, n);
  if (ck->n_params == ck->cap_params) {
    int cap = ck->cap_params ? 2 * ck->cap_params : 1024;
    sd_param *np = realloc(ck->params, (size_t)cap * sizeof *np);
    if (!np) {
      free(w);
      return fail(ck, WEFT_ENOMEM, "out of memory");
    }
    ck->params = np;
    ck->cap_params = cap;
  }
  char *pn = strdup(name);
  if (!pn) {
    free(w);
    return fail(ck, WEFT_ENOMEM, "out of memory");
  }
  ck->params[ck->n_params++] =
      (sd_param){part, pn, w, n, ck->defer_reads, v.dtype, v.data};
  *out = w;
  return 0;
}

void sd_param_read(sd_param *p) {
  if (!p->unread) return;
  to_f32(p->data, p->src, p->src_dt, p->numel);
  p->unread = false;
}

/* ---- configs --------------------------------------------------------------- */

static int json_int(json_t *o, const char *k, int def) {
  json_t *v = json_object_get(o, k);
  return json_is_integer(v) ? (int)json_integer_value(v) : def;
}

static double json_num(json_t *o, const char *k, double def) {
  json_t *v = json_object_get(o, k);
  return json_is_number(v) ? json_number_value(v) : def;
}

static bool json_bool(json_t *o, const char *k, bool def) {
  json_t *v = json_object_get(o, k);
  return json_is_boolean(v) ? json_is_true(v) : def;
}

static int unet_cfg_from_json(sd_ckpt *ck, json_t *o, sd_unet_cfg *c) {
  json_t *boc = json_object_get(o, "block_out_channels");
  json_t *down = json_object_get(o, "down_block_types");
  json_t *up = json_object_get(o, "up_block_types");
  if (!json_is_array(boc) || json_array_size(boc) < 1 ||
      json_array_size(boc) > 8 || json_array_size(down) != json_array_size(boc))
    return fail(ck, WEFT_EFORMAT, "unet config: block_out_channels and "
                "down_block_types are missing or disagree");
  c->n_levels = (int)json_array_size(boc);
  for (int i = 0; i < c->n_levels; i++) {
    c->channels[i] = (int)json_integer_value(json_array_get(boc, (size_t)i));
    const char *t = json_string_value(json_array_get(down, (size_t)i));
    c->attn[i] = t && strstr(t, "CrossAttn");
    const char *u = json_string_value(json_array_get(up, (size_t)i));
    c->up_attn[i] = u ? strstr(u, "CrossAttn") != NULL
                      : c->attn[c->n_levels - 1 - i];
  }
  c->in_channels = json_int(o, "in_channels", 4);
  c->out_channels = json_int(o, "out_channels", 4);
  c->layers_per_block = json_int(o, "layers_per_block", 2);
  c->transformer_depth = json_int(o, "transformer_layers_per_block", 1);
  c->context_dim = json_int(o, "cross_attention_dim", 768);
  c->norm_groups = json_int(o, "norm_num_groups", 32);
  c->norm_eps = (float)json_num(o, "norm_eps", 1e-5);
  c->linear_proj = json_bool(o, "use_linear_projection", false);
  const char *mid = json_string_value(json_object_get(o, "mid_block_type"));
  c->mid_attn = !mid || strstr(mid, "CrossAttn") != NULL;
  /* diffusers' naming quirk: for SD1.x "attention_head_dim" is the number
   * of heads, unless num_attention_heads is given */
  json_t *heads = json_object_get(o, "num_attention_heads");
  if (!json_is_integer(heads) && !json_is_array(heads))
    heads = json_object_get(o, "attention_head_dim");
  for (int i = 0; i < c->n_levels; i++) {
    json_t *h = json_is_array(heads) ? json_array_get(heads, (size_t)i) : heads;
    c->heads[i] = json_is_integer(h) ? (int)json_integer_value(h) : 8;
  }
  c->head_dim = 0;
  return 0;
}

static int unet_from_json(sd_ckpt *ck, json_t *o) {
  return unet_cfg_from_json(ck, o, &ck->unet);
}

static int vae_from_json(sd_ckpt *ck, json_t *o) {
  sd_vae_cfg *c = &ck->vae;
  json_t *boc = json_object_get(o, "block_out_channels");
  if (!json_is_array(boc) || json_array_size(boc) < 1 ||
      json_array_size(boc) > 8)
    return fail(ck, WEFT_EFORMAT, "vae config: block_out_channels missing");
  c->n_levels = (int)json_array_size(boc);
  for (int i = 0; i < c->n_levels; i++)
    c->channels[i] = (int)json_integer_value(json_array_get(boc, (size_t)i));
  c->in_channels = json_int(o, "in_channels", 3);
  c->out_channels = json_int(o, "out_channels", 3);
  c->latent_channels = json_int(o, "latent_channels", 4);
  c->layers_per_block = json_int(o, "layers_per_block", 2);
  c->norm_groups = json_int(o, "norm_num_groups", 32);
  c->scaling_factor = (float)json_num(o, "scaling_factor", 0.18215);
  c->quant_conv = json_bool(o, "use_quant_conv", true);
  c->post_quant_conv = json_bool(o, "use_post_quant_conv", true);
  return 0;
}

static int clip_from_json(sd_ckpt *ck, json_t *o) {
  sd_clip_cfg *c = &ck->clip;
  c->vocab = json_int(o, "vocab_size", 49408);
  c->max_pos = json_int(o, "max_position_embeddings", 77);
  c->hidden = json_int(o, "hidden_size", 768);
  c->layers = json_int(o, "num_hidden_layers", 12);
  c->heads = json_int(o, "num_attention_heads", c->hidden / 64);
  c->intermediate = json_int(o, "intermediate_size", 4 * c->hidden);
  c->eps = (float)json_num(o, "layer_norm_eps", 1e-5);
  const char *act = json_string_value(json_object_get(o, "hidden_act"));
  c->quick_gelu = !act || !strcmp(act, "quick_gelu");
  c->eos_token = json_int(o, "eos_token_id", 49407);
  return 0;
}

/* Counts k in name patterns "<fmt with %d>" present in a part. */
static int count_indices(sd_ckpt *ck, sd_part part, const char *fmt) {
  int n = 0;
  char name[256];
  for (;;) {
    snprintf(name, sizeof name, fmt, n);
    if (!has(ck, part, name)) return n;
    n++;
  }
}

/* The architecture of a UNet (or a ControlNet's encoder: part
 * SD_CONTROL) from its tensors. */
static int unet_infer_part(sd_ckpt *ck, sd_part part, sd_unet_cfg *c) {
  memset(c, 0, sizeof *c);
  int64_t c0 = dim_of(ck, part, "conv_in.weight", 0);
  if (c0 <= 0)
    return fail(ck, WEFT_EFORMAT, "%s: no UNet found (missing '%s')",
                ck->files[part].path,
                ck->layout == SD_LAYOUT_LDM ? "...input_blocks.0.0.weight"
                                            : "conv_in.weight");
  c->in_channels = (int)dim_of(ck, part, "conv_in.weight", 1);
  c->out_channels = (int)dim_of(ck, part, "conv_out.weight", 0);
  if (ck->layout == SD_LAYOUT_LDM) {
    /* input_blocks.K: K = (L+1)(i+1) holds level i's downsampler (".0.op"),
     * and there are n_levels * (L+1) blocks in all */
    const sd_file *f = &ck->files[part];
    char pre[96];
    snprintf(pre, sizeof pre, "%sinput_blocks.", ldm_prefix[part]);
    size_t lp = strlen(pre);
    int max_in = -1, first_ds = -1, n_ds = 0;
    for (int32_t k = 0; k < f->count(f->handle); k++) {
      const char *key = f->key_at(f->handle, k);
      if (strncmp(key, pre, lp) != 0) continue;
      int idx = 0, off = 0;
      if (sscanf(key + lp, "%d.%n", &idx, &off) != 1 || !off) continue;
      if (idx > max_in) max_in = idx;
      if (!strcmp(key + lp + off, "0.op.weight")) {
        n_ds++;
        if (first_ds < 0 || idx < first_ds) first_ds = idx;
      }
    }
    c->n_levels = n_ds + 1;
    c->layers_per_block = n_ds ? first_ds - 1 : max_in;
    if (c->layers_per_block < 1 || c->n_levels > 8 ||
        max_in + 1 != c->n_levels * (c->layers_per_block + 1))
      return fail(ck, WEFT_EFORMAT,
                  "%s: the UNet's input_blocks do not form an SD UNet",
                  f->path);
  } else {
    c->n_levels = count_indices(ck, part,
                                "down_blocks.%d.resnets.0.conv1.weight");
    c->layers_per_block = count_indices(
        ck, part, "down_blocks.0.resnets.%d.conv1.weight");
    if (c->n_levels < 1 || c->n_levels > 8 || c->layers_per_block < 1)
      return fail(ck, WEFT_EFORMAT, "%s: cannot work out the UNet's levels",
                  ck->files[part].path);
  }
  char name[256];
  for (int i = 0; i < c->n_levels; i++) {
    snprintf(name, sizeof name, "down_blocks.%d.resnets.0.conv1.weight", i);
    c->channels[i] = (int)dim_of(ck, part, name, 0);
    snprintf(name, sizeof name, "down_blocks.%d.attentions.0.proj_in.weight",
             i);
    c->attn[i] = has(ck, part, name);
    c->up_attn[c->n_levels - 1 - i] = c->attn[i];
  }
  /* with up_attn known, the up-sampler names translate */
  c->mid_attn = has(ck, part, "mid_block.attentions.0.proj_in.weight");
  int first = -1;
  for (int i = 0; i < c->n_levels && first < 0; i++)
    if (c->attn[i]) first = i;
  c->context_dim = 768;
  c->transformer_depth = 1;
  if (first >= 0) {
    char base[128];
    snprintf(base, sizeof base, "down_blocks.%d.attentions.0.", first);
    snprintf(name, sizeof name, "%sproj_in.weight", base);
    weft_tensor v;
    get_view(ck, part, name, &v);
    c->linear_proj = v.ndim == 2;
    snprintf(name, sizeof name,
             "%stransformer_blocks.0.attn2.to_k.weight", base);
    c->context_dim = (int)dim_of(ck, part, name, 1);
    char fmt[200];
    snprintf(fmt, sizeof fmt, "%stransformer_blocks.%%d.norm1.weight", base);
    c->transformer_depth = count_indices(ck, part, fmt);
  }
  c->norm_groups = 32;
  c->norm_eps = 1e-5f;
  /* heads are not in the weights: SD2 (context 1024) uses 64-wide heads,
   * SD1 eight heads at every level, as ComfyUI and diffusers assume */
  if (c->context_dim == 1024)
    c->head_dim = 64;
  else
    for (int i = 0; i < c->n_levels; i++) c->heads[i] = 8;
  return 0;
}

static int unet_infer(sd_ckpt *ck) {
  return unet_infer_part(ck, SD_UNET, &ck->unet);
}

static int vae_infer(sd_ckpt *ck) {
  sd_vae_cfg *c = &ck->vae;
  memset(c, 0, sizeof *c);
  c->n_levels = count_indices(ck, SD_VAE,
                              "encoder.down_blocks.%d.resnets.0.conv1.weight");
  if (c->n_levels < 1 || c->n_levels > 8)
    return fail(ck, WEFT_EFORMAT, "%s: no VAE found", ck->files[SD_VAE].path);
  for (int i = 0; i < c->n_levels; i++) {
    char name[128];
    snprintf(name, sizeof name,
             "encoder.down_blocks.%d.resnets.0.conv1.weight", i);
    c->channels[i] = (int)dim_of(ck, SD_VAE, name, 0);
  }
  c->layers_per_block =
      count_indices(ck, SD_VAE, "encoder.down_blocks.0.resnets.%d.conv1.weight");
  c->in_channels = (int)dim_of(ck, SD_VAE, "encoder.conv_in.weight", 1);
  c->out_channels = (int)dim_of(ck, SD_VAE, "decoder.conv_out.weight", 0);
  c->latent_channels = (int)dim_of(ck, SD_VAE, "decoder.conv_in.weight", 1);
  c->quant_conv = has(ck, SD_VAE, "quant_conv.weight");
  c->post_quant_conv = has(ck, SD_VAE, "post_quant_conv.weight");
  c->norm_groups = 32;
  c->scaling_factor = 0.18215f;
  return 0;
}

static int clip_infer(sd_ckpt *ck) {
  sd_clip_cfg *c = &ck->clip;
  memset(c, 0, sizeof *c);
  const char *tok = "text_model.embeddings.token_embedding.weight";
  c->vocab = (int)dim_of(ck, SD_CLIP, tok, 0);
  c->hidden = (int)dim_of(ck, SD_CLIP, tok, 1);
  if (c->vocab <= 0)
    return fail(ck, WEFT_EFORMAT, "%s: no CLIP text encoder found",
                ck->files[SD_CLIP].path);
  c->max_pos = (int)dim_of(ck, SD_CLIP,
                           "text_model.embeddings.position_embedding.weight", 0);
  c->layers = count_indices(
      ck, SD_CLIP, "text_model.encoder.layers.%d.self_attn.q_proj.weight");
  c->intermediate = (int)dim_of(
      ck, SD_CLIP, "text_model.encoder.layers.0.mlp.fc1.weight", 0);
  c->heads = c->hidden % 64 == 0 ? c->hidden / 64 : 0;
  c->eps = 1e-5f;
  c->quick_gelu = c->hidden != 1024; /* OpenCLIP-H (SD2) uses GELU */
  c->eos_token = 49407;
  if (c->heads <= 0)
    return fail(ck, WEFT_EFORMAT,
                "%s: the text encoder's width %d is not a multiple of 64, so "
                "its head count cannot be assumed; give it in the file's "
                "'weft.config' metadata",
                ck->files[SD_CLIP].path, c->hidden);
  return 0;
}

/* The JSON text of a part's config: the caller's, or the "weft.config"
 * metadata's member ("unet", "vae", "text_encoder"). */
static json_t *config_for(sd_part part, const char *given, json_t *meta) {
  static const char *const member[SD_PARTS] = {"unet", "vae", "text_encoder"};
  if (given) return json_loads(given, 0, NULL);
  json_t *m = meta ? json_object_get(meta, member[part]) : NULL;
  if (m) json_incref(m);
  return m;
}

int sd_ckpt_configure(sd_ckpt *ck, const char *const config_json[SD_PARTS]) {
  json_t *meta = NULL;
  if (ck->layout == SD_LAYOUT_LDM && ck->files[SD_UNET].meta) {
    const char *s = ck->files[SD_UNET].meta(ck->files[SD_UNET].handle,
                                            "weft.config");
    if (s) {
      json_error_t je;
      meta = json_loads(s, 0, &je);
      if (!meta)
        return fail(ck, WEFT_EFORMAT,
                    "%s: metadata 'weft.config' is not JSON: %s",
                    ck->files[SD_UNET].path, je.text);
    }
  }
  /* where the text model's keys live */
  ck->clip_prefix[0] = 0;
  if (ck->has[SD_CLIP] && !ck->random_weights) {
    const sd_file *f = &ck->files[SD_CLIP];
    const char *cands[3];
    int nc = 0;
    if (ck->layout == SD_LAYOUT_LDM)
      cands[nc++] = ldm_prefix[SD_CLIP];
    else {
      cands[nc++] = "";
      cands[nc++] = "<strip>";
    }
    bool found = false;
    for (int i = 0; i < nc && !found; i++) {
      weft_tensor v;
      char key[256];
      if (!strcmp(cands[i], "<strip>")) {
        /* transformers 5 saves CLIPTextModel without "text_model." */
        if (f->get(f->handle, "embeddings.token_embedding.weight", &v) == 0) {
          snprintf(ck->clip_prefix, sizeof ck->clip_prefix, "<strip>");
          found = true;
        }
        continue;
      }
      snprintf(key, sizeof key, "%stext_model.embeddings.token_embedding."
               "weight", cands[i]);
      if (f->get(f->handle, key, &v) == 0) {
        snprintf(ck->clip_prefix, sizeof ck->clip_prefix, "%s", cands[i]);
        found = true;
      }
    }
    if (!found) {
      json_decref(meta);
      return fail(ck, WEFT_EFORMAT, "%s: no CLIP text encoder found "
                  "(missing %stext_model.embeddings.token_embedding.weight)",
                  f->path, cands[0]);
    }
  }
  int r = 0;
  int (*from_json[SD_PARTS])(sd_ckpt *, json_t *) = {
      unet_from_json, vae_from_json, clip_from_json};
  int (*infer[SD_PARTS])(sd_ckpt *) = {unet_infer, vae_infer, clip_infer};
  for (int p = 0; p < SD_PARTS && !r; p++) {
    if (!ck->has[p]) continue;
    json_t *cfg =
        config_for((sd_part)p, config_json ? config_json[p] : NULL, meta);
    if (config_json && config_json[p] && !cfg)
      r = fail(ck, WEFT_EFORMAT, "%s: config.json is not valid JSON",
               ck->files[p].path);
    else
      r = cfg ? from_json[p](ck, cfg) : infer[p](ck);
    json_decref(cfg);
  }
  json_decref(meta);
  return r;
}

/* ---- what was left over ------------------------------------------------ */

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool ignorable(const char *k) {
  static const char *const ends[] = {"position_ids", NULL};
  for (int i = 0; ends[i]; i++) {
    size_t lk = strlen(k), le = strlen(ends[i]);
    if (lk >= le && !strcmp(k + lk - le, ends[i])) return true;
  }
  return false;
}

int sd_ckpt_unused(const sd_ckpt *ck, char *out, size_t len) {
  char **used = malloc((size_t)(ck->n_used + 1) * sizeof *used);
  if (!used) return 0;
  memcpy(used, ck->used, (size_t)ck->n_used * sizeof *used);
  qsort(used, (size_t)ck->n_used, sizeof *used, cmp_str);
  int count = 0;
  size_t w = 0;
  out[0] = 0;
  bool scanned = false;
  for (int p = 0; p < SD_ALL_PARTS; p++) {
    const sd_file *f = &ck->files[p];
    if (!ck->has[p]) continue;
    /* a single file holds every part: scan it once */
    if (ck->layout == SD_LAYOUT_LDM && scanned) break;
    scanned = true;
    for (int32_t i = 0; i < f->count(f->handle); i++) {
      const char *k = f->key_at(f->handle, i);
      bool mine = ck->layout != SD_LAYOUT_LDM;
      for (int q = 0; q < SD_ALL_PARTS && !mine; q++)
        mine = !strncmp(k, ldm_prefix[q], strlen(ldm_prefix[q]));
      if (!mine || ignorable(k) ||
          bsearch(&k, used, (size_t)ck->n_used, sizeof *used, cmp_str))
        continue;
      if (count < 8 && w < len)
        w += (size_t)snprintf(out + w, len - w, "%s%s", count ? ", " : "", k);
      count++;
    }
  }
  if (count > 8 && w < len) snprintf(out + w, len - w, ", ...");
  free(used);
  return count;
}

void sd_ckpt_release(sd_ckpt *ck) {
  for (int i = 0; i < ck->n_used; i++) free(ck->used[i]);
  free(ck->used);
  ck->used = NULL;
  ck->n_used = ck->cap_used = 0;
}

void sd_ckpt_free_params(sd_ckpt *ck) {
  for (int i = 0; i < ck->n_params; i++) free(ck->params[i].name);
  free(ck->params);
  ck->params = NULL;
  ck->n_params = ck->cap_params = 0;
}

const sd_param *sd_ckpt_param(const sd_ckpt *ck, sd_part part,
                              const char *name) {
  for (int i = 0; i < ck->n_params; i++)
    if (ck->params[i].part == part && !strcmp(ck->params[i].name, name))
      return &ck->params[i];
  return NULL;
}

/* ---- ControlNets ----------------------------------------------------------- */

int sd_ckpt_configure_control(sd_ckpt *ck, const char *config_json) {
  int r = 0;
  json_t *cfg = config_json ? json_loads(config_json, 0, NULL) : NULL;
  if (config_json && !cfg) {
    r = fail(ck, WEFT_EFORMAT, "%s: config.json is not valid JSON",
             ck->files[SD_CONTROL].path);
  } else if (cfg) {
    /* diffusers' ControlNetModel config is a UNet's without up blocks */
    r = unet_cfg_from_json(ck, cfg, &ck->control);
    json_t *ce = json_object_get(cfg, "conditioning_embedding_out_channels");
    ck->n_hint = 0;
    for (size_t i = 0; json_is_array(ce) && i < json_array_size(ce) && i < 8;
         i++)
      ck->hint_channels[ck->n_hint++] =
          (int)json_integer_value(json_array_get(ce, i));
  } else {
    r = unet_infer_part(ck, SD_CONTROL, &ck->control);
    /* the hint convs: input_hint_block.{0, 2, ...}, every other one a
     * stride-2 change of width; their output widths give the list */
    ck->n_hint = 0;
    for (int k = 0; !r && k < 32; k += 2) {
      char key[96];
      snprintf(key, sizeof key, "control_model.input_hint_block.%d.weight", k);
      weft_tensor v;
      const sd_file *f = &ck->files[SD_CONTROL];
      if (f->get(f->handle, key, &v) != 0) break;
      /* conv_in (0) and the stride-2 convs (4, 8, 12, ...) give the widths */
      if ((k / 2) % 2 == 0) {
        if (ck->n_hint < 8) ck->hint_channels[ck->n_hint++] = (int)v.shape[0];
      }
    }
    /* conv_out (index 2 + 4 * (levels - 1) + 2) has an odd k / 2 and is
     * left out: it maps to the UNet's width, not a level */
  }
  if (!r && ck->n_hint < 1)
    r = fail(ck, WEFT_EFORMAT, "%s: no ControlNet hint block found",
             ck->files[SD_CONTROL].path);
  json_decref(cfg);
  return r;
}
