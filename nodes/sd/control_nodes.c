/* control_nodes.c - ControlNetLoader, ControlNetApply and
 * ControlNetApplyAdvanced, and the evaluation of the ControlNets attached
 * to a sampler's conditionings (comfy/controlnet.py semantics: strength,
 * start/end percent, the hint resized to the latent, chains summed). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ops.h"
#include "sd_device.h"
#include "sd_nodes.h"

/* ---- objects ----------------------------------------------------------------- */

typedef struct cnet_impl {
  sd_cnet_obj pub;
  const weft_host *host;
  weft_weights *w;
  wfile wf;
} cnet_impl;

void sd_cnet_obj_release(sd_cnet_obj *o) {
  if (!o || atomic_fetch_sub(&o->refs, 1) != 1) return;
  cnet_impl *ci = (cnet_impl *)o;
  sd_cnet_free(o->model); /* before its backend: device weights */
  weft_backend_free(o->be);
  pthread_mutex_destroy(&o->be_mu);
  sd_ckpt_free_params(&o->ck);
  sd_ckpt_release(&o->ck);
  if (ci->w) ci->host->weights_release(ci->w);
  free(o->path);
  free(ci);
}

static void cnet_destroy(void *p) { sd_cnet_obj_release(p); }

void sd_ctrl_release(sd_ctrl *c) {
  while (c && atomic_fetch_sub(&c->refs, 1) == 1) {
    sd_ctrl *prev = c->prev;
    sd_cnet_obj_release(c->cnet);
    free(c->hint);
    free(c);
    c = prev;
  }
}

/* ---- ControlNetLoader ---------------------------------------------------------- */

static char *read_all(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *buf = NULL;
  size_t n = 0, cap = 0, k;
  do {
    if (n + 4097 > cap) {
      char *nb = realloc(buf, cap = (n + 4097) * 2);
      if (!nb) {
        free(buf);
        fclose(f);
        return NULL;
      }
      buf = nb;
    }
    k = fread(buf + n, 1, 4096, f);
    n += k;
  } while (k);
  fclose(f);
  if (buf) buf[n] = 0;
  return buf;
}

static int loader_run(weft_call *c) {
  const weft_host *h = c->host;
  char path[PATH_MAX], file[PATH_MAX + 64], cfgpath[PATH_MAX + 64];
  sd_resolve(c, weft_param_string(c, 0), path, sizeof path);
  struct stat st;
  if (stat(path, &st) != 0) {
    h->error(c, "%s: %s", path, strerror(errno));
    return WEFT_ENOENT;
  }
  char *cfg = NULL;
  bool folder = S_ISDIR(st.st_mode);
  if (folder) {
    snprintf(file, sizeof file, "%s/diffusion_pytorch_model.safetensors",
             path);
    if (!sd_is_file(file))
      snprintf(file, sizeof file,
               "%s/diffusion_pytorch_model.fp16.safetensors", path);
    snprintf(cfgpath, sizeof cfgpath, "%s/config.json", path);
    if (!sd_is_file(file) || !(cfg = read_all(cfgpath))) {
      h->error(c, "%s: not a diffusers ControlNet folder (needs config.json "
                  "and diffusion_pytorch_model.safetensors)", path);
      return WEFT_ENOENT;
    }
  } else {
    snprintf(file, sizeof file, "%s", path);
  }
  cnet_impl *ci = calloc(1, sizeof *ci);
  if (!ci) {
    free(cfg);
    return WEFT_ENOMEM;
  }
  sd_cnet_obj *o = &ci->pub;
  atomic_init(&o->refs, 1);
  pthread_mutex_init(&o->be_mu, NULL);
  ci->host = h;
  o->path = strdup(path);
  int r = 0;
  if (!(ci->w = h->weights_open(c, file))) {
    r = WEFT_EFORMAT; /* the host recorded why */
  } else {
    ci->wf = (wfile){h, ci->w};
    o->ck.layout = folder ? SD_LAYOUT_DIFFUSERS : SD_LAYOUT_LDM;
    o->ck.files[SD_CONTROL] =
        (sd_file){&ci->wf, wf_get, wf_meta, wf_count, wf_key, o->path};
    o->ck.has[SD_CONTROL] = true;
    if ((r = sd_ckpt_configure_control(&o->ck, cfg)) ||
        (r = sd_cnet_load(&o->ck, &o->model)))
      h->error(c, "%s", o->ck.err);
  }
  if (!r) {
    char unused[1024];
    int n = sd_ckpt_unused(&o->ck, unused, sizeof unused);
    if (n)
      h->log(c, WEFT_LOG_WARN, "%s: %d tensors not used by the ControlNet: "
             "%s", path, n, unused);
    if (!(o->be = sd_backend_new(c, "the ControlNet", &r)) && !r)
      r = WEFT_ENOMEM;
    /* the weights to the device under the budget (WEFT_VRAM) */
    sd_vram *vr = r || sd_be_is_host(o->be)
                      ? NULL
                      : sd_vram_for(c, o->be, "the ControlNet", &r);
    if (vr) {
      if ((r = sd_cnet_to_vram(o->model, vr)) || (r = sd_vram_commit(vr)))
        sd_vram_report(c, o->be, vr, r, "copying the ControlNet's weights");
      sd_vram_release(vr); /* the model holds it */
    }
  }
  free(cfg);
  if (r) {
    sd_cnet_obj_release(o);
    return r;
  }
  c->outputs[0] =
      h->object_new(c, WEFT_TYPE_CONTROL_NET, NULL, o, cnet_destroy);
  return c->outputs[0] ? 0 : WEFT_ENOMEM;
}

/* ---- applying -------------------------------------------------------------------- */

/* A copy of a CONDITIONING with one more ControlNet on its chain. */
static weft_value *with_control(weft_call *c, const sd_cond *src,
                                sd_cnet_obj *cn, const weft_tensor *image,
                                float strength, double start, double end,
                                bool to_uncond) {
  sd_cond *d = calloc(1, sizeof *d);
  sd_ctrl *k = calloc(1, sizeof *k);
  if (!d || !k) goto oom;
  d->tokens = src->tokens;
  d->dim = src->dim;
  d->apply_to_uncond = to_uncond;
  d->ctx = malloc((size_t)(src->tokens * src->dim) * sizeof *d->ctx);
  d->pooled = malloc((size_t)src->dim * sizeof *d->pooled);
  int64_t B = image->shape[0], H = image->shape[1], W = image->shape[2];
  int64_t C = image->shape[3];
  k->hint = malloc((size_t)(B * 3 * H * W) * sizeof *k->hint);
  if (!d->ctx || !d->pooled || !k->hint) goto oom;
  memcpy(d->ctx, src->ctx, (size_t)(src->tokens * src->dim) * sizeof *d->ctx);
  if (src->pooled)
    memcpy(d->pooled, src->pooled, (size_t)src->dim * sizeof *d->pooled);
  const float *im = image->data;
  for (int64_t b = 0; b < B; b++)
    for (int64_t ch = 0; ch < 3; ch++)
      for (int64_t i = 0; i < H * W; i++)
        k->hint[(b * 3 + ch) * H * W + i] = im[(b * H * W + i) * C + (ch < C ? ch : C - 1)];
  atomic_init(&k->refs, 1);
  atomic_fetch_add(&cn->refs, 1);
  k->cnet = cn;
  k->hb = B, k->hh = H, k->hw = W;
  k->strength = strength;
  k->start = start, k->end = end;
  if ((k->prev = src->control)) atomic_fetch_add(&k->prev->refs, 1);
  d->control = k;
  return c->host->object_new(c, WEFT_TYPE_CONDITIONING, NULL, d,
                             sd_cond_destroy);
oom:
  if (k) free(k->hint);
  free(k);
  if (d) sd_cond_destroy(d);
  return NULL;
}

static const weft_tensor *hint_image(weft_call *c, int input) {
  const weft_tensor *t = c->host->value_tensor(c->inputs[input]);
  if (!t || t->ndim != 4 || t->dtype != WEFT_F32 || t->shape[3] < 1) {
    c->host->error(c, "image must be an IMAGE [batch, height, width, channels]");
    return NULL;
  }
  return t;
}

static int pass_through(weft_call *c, int n) {
  for (int i = 0; i < n; i++) {
    c->outputs[i] = c->inputs[i];
    c->host->value_retain(c->inputs[i]);
  }
  return 0;
}

static int apply_run(weft_call *c) {
  const weft_host *h = c->host;
  float strength = (float)weft_param_float(c, 0);
  if (strength == 0) return pass_through(c, 1);
  const weft_tensor *img = hint_image(c, 2);
  if (!img) return WEFT_ETYPE;
  c->outputs[0] = with_control(c, h->value_object(c->inputs[0]),
                               h->value_object(c->inputs[1]), img, strength,
                               0.0, 1.0, true);
  return c->outputs[0] ? 0 : WEFT_ENOMEM;
}

enum { ADV_STRENGTH, ADV_START, ADV_END };

static int apply_adv_run(weft_call *c) {
  const weft_host *h = c->host;
  float strength = (float)weft_param_float(c, ADV_STRENGTH);
  if (strength == 0) return pass_through(c, 2);
  const weft_tensor *img = hint_image(c, 3);
  if (!img) return WEFT_ETYPE;
  sd_cnet_obj *cn = h->value_object(c->inputs[2]);
  double start = weft_param_float(c, ADV_START);
  double end = weft_param_float(c, ADV_END);
  for (int i = 0; i < 2; i++) {
    c->outputs[i] = with_control(c, h->value_object(c->inputs[i]), cn, img,
                                 strength, start, end, false);
    if (!c->outputs[i]) return WEFT_ENOMEM;
  }
  return 0;
}

/* ---- evaluation during sampling ---------------------------------------------------- */

/* comfy ModelSamplingDiscrete.percent_to_sigma */
static float percent_to_sigma(const weft_schedule *s, double p) {
  if (p <= 0.0) return 999999999.9f;
  if (p >= 1.0) return 0.0f;
  return weft_schedule_sigma(s, (float)((1.0 - p) * 999.0));
}

/* The link's hint at the latent's size * f, one per row (the hint batch
 * repeated), as ComfyUI's common_upscale(nearest-exact, center). */
static float *hint_for(const sd_ctrl *k, int64_t rows, int64_t H, int64_t W) {
  float *out = malloc((size_t)(rows * 3 * H * W) * sizeof *out);
  if (!out) return NULL;
  for (int64_t r = 0; r < rows; r++) {
    const float *src = k->hint + (r % k->hb) * 3 * k->hh * k->hw;
    float *dst = out + r * 3 * H * W;
    if (k->hh == H && k->hw == W) {
      memcpy(dst, src, (size_t)(3 * H * W) * sizeof *dst);
      continue;
    }
    for (int ch = 0; ch < 3; ch++)
      if (weft__image_scale(src + ch * k->hh * k->hw, k->hh, k->hw, 1,
                            dst + ch * H * W, H, W, WEFT__RESIZE_NEAREST_EXACT,
                            1, NULL)) {
        free(out);
        return NULL;
      }
  }
  return out;
}

/* A run's recorders: one per ControlNet link and batch (a chain's link
 * runs at one batch, or at two when the halves differ: at most 2 x the
 * links of both chains). */
enum { CTRL_RECS = 16 };
struct sd_ctrl_recs {
  struct {
    const sd_ctrl *k;
    int64_t rows;
    weft_rec *rec;
  } e[CTRL_RECS];
  int n;
};

struct sd_ctrl_recs *sd_ctrl_recs_new(void) {
  return calloc(1, sizeof(struct sd_ctrl_recs));
}

void sd_ctrl_recs_free(struct sd_ctrl_recs *r) {
  for (int i = 0; r && i < r->n; i++)
    weft_rec_free(r->e[i].rec);
  free(r);
}

uint64_t sd_ctrl_recs_arena(const struct sd_ctrl_recs *r) {
  uint64_t sum = 0;
  for (int i = 0; r && i < r->n; i++) {
    weft_rec_stats st;
    if (!r->e[i].rec || !weft_rec_planned(r->e[i].rec)) continue;
    weft_rec_stats_get(r->e[i].rec, &st);
    sum += st.arena.arena;
  }
  return sum;
}

int sd_ctrl_recs_sum(const struct sd_ctrl_recs *r, weft_rec_stats *sum) {
  memset(sum, 0, sizeof *sum);
  int n = 0;
  for (int i = 0; r && i < r->n; i++) {
    weft_rec_stats st;
    if (!r->e[i].rec) continue;
    weft_rec_stats_get(r->e[i].rec, &st);
    n++;
    sum->arena.arena += st.arena.arena;
    sum->replays += st.replays;
    sum->misses += st.misses;
    sum->diverged += st.diverged;
  }
  return n;
}

/* The recorder a ControlNet call runs on: plan mode's DRY one (owned: its
 * copies counted, then freed), a run's own for this link and batch
 * (traced, then replayed; DRY in the sampler's planning pass), or none. */
typedef struct ctrl_rec {
  weft_rec *rec;
  bool owned;
  int slot, rc;
} ctrl_rec;

static ctrl_rec ctrl_rec_begin(const sd_ctrl_pair *p, const sd_ctrl *k,
                               int64_t rows, weft_backend *be) {
  ctrl_rec c = {NULL, false, -1, 0};
  weft_rec_mode mode = WEFT_REC_DRY;
  if (p->dry) {
    c.owned = true;
    if (!(c.rec = weft_rec_new(be))) c.rc = WEFT_ENOMEM;
  } else if (p->recs) {
    struct sd_ctrl_recs *rs = p->recs;
    for (int i = 0; i < rs->n && c.slot < 0; i++)
      if (rs->e[i].k == k && rs->e[i].rows == rows) c.slot = i;
    if (c.slot < 0 && rs->n < CTRL_RECS) {
      c.slot = rs->n++;
      rs->e[c.slot].k = k, rs->e[c.slot].rows = rows, rs->e[c.slot].rec = NULL;
    }
    if (c.slot < 0) return c; /* more links than slots: unplanned */
    if (!rs->e[c.slot].rec && !(rs->e[c.slot].rec = weft_rec_new(be)))
      return c; /* no memory for a plan: unplanned */
    c.rec = rs->e[c.slot].rec;
    mode = p->dry_pass && *p->dry_pass ? WEFT_REC_DRY
           : weft_rec_planned(c.rec)  ? WEFT_REC_REPLAY
                                      : WEFT_REC_TRACE;
  }
  if (c.rec && !c.rc && (c.rc = weft_rec_begin(c.rec, mode))) {
    if (c.owned)
      weft_rec_free(c.rec);
    else
      c.rc = 0; /* a run goes on unplanned */
    c.rec = NULL;
  }
  return c;
}

/* Ends the pass; *r: the call's code (a failed or diverged run's recorder
 * is dropped, so no stale plan is replayed: the next call records). */
static void ctrl_rec_end(const sd_ctrl_pair *p, ctrl_rec *c, int *r) {
  if (!c->rec) return;
  weft_rec_stats before, after;
  weft_rec_stats_get(c->rec, &before);
  int re = weft_rec_end(c->rec);
  if (!*r && c->owned) *r = re;
  weft_rec_stats_get(c->rec, &after);
  if (c->owned) {
    p->dry[0] += after.h2d_bytes, p->dry[1] += after.d2h_bytes;
    weft_rec_free(c->rec);
  } else if (*r || re || after.diverged != before.diverged) {
    weft_rec_free(c->rec);
    p->recs->e[c->slot].rec = NULL;
  }
}

static int eval_chain(const sd_ctrl *k, const sd_ctrl_pair *p,
                      const float *x, int64_t rows, int64_t h, int64_t w,
                      const float *t, const float *ctx, int64_t tokens,
                      float sigma, sd_cnet_out *out) {
  for (; k; k = k->prev) {
    float hi = percent_to_sigma(p->sched, k->start);
    float lo = percent_to_sigma(p->sched, k->end);
    if (sigma > hi || sigma < lo) continue;
    int f = sd_cnet_hint_factor(k->cnet->model);
    float *hint = hint_for(k, rows, h * f, w * f);
    if (!hint) return WEFT_ENOMEM;
    sd_cnet_obj *cn = k->cnet;
    bool lock = !sd_be_is_host(cn->be); /* one thread at a time there */
    if (lock) pthread_mutex_lock(&cn->be_mu);
    ctrl_rec cr = ctrl_rec_begin(p, k, rows, cn->be);
    int r = cr.rc;
    if (!r)
      r = sd_cnet_forward(cn->model, cr.rec ? weft_rec_backend(cr.rec) : cn->be,
                          x, rows, h, w, t, ctx, tokens, hint, k->strength,
                          out);
    ctrl_rec_end(p, &cr, &r);
    if (lock) pthread_mutex_unlock(&cn->be_mu);
    free(hint);
    if (r) return r;
  }
  return 0;
}

int sd_ctrl_eval(void *user, const float *x_in, int64_t rows, bool cond_only,
                 int64_t h, int64_t w, const float *t, const float *ctx,
                 int64_t tokens, float sigma, sd_cnet_out *out) {
  const sd_ctrl_pair *p = user;
  const sd_ctrl *u = p->chain[0], *c = p->chain[1];
  if (cond_only) return eval_chain(c, p, x_in, rows, h, w, t, ctx, tokens,
                                   sigma, out);
  if (u == c) return eval_chain(c, p, x_in, rows, h, w, t, ctx, tokens, sigma,
                                out);
  /* different chains: each half alone (rows of x_in, t and ctx: uncond
   * first), then side by side, zeros where a half has no ControlNet */
  const int64_t B = rows / 2;
  sd_cnet_out half[2];
  memset(half, 0, sizeof half);
  int r = 0;
  for (int k = 0; k < 2 && !r; k++) {
    const sd_ctrl *chain = k ? c : u;
    if (chain)
      r = eval_chain(chain, p, x_in + k * B * p->row_numel, B, h, w, t + k * B,
                     ctx + k * B * tokens * p->ctx_dim, tokens, sigma,
                     &half[k]);
  }
  int n = half[0].n > half[1].n ? half[0].n : half[1].n;
  for (int i = 0; i < n && !r; i++) {
    int64_t hn = half[0].n > i ? half[0].down_numel[i] : half[1].down_numel[i];
    if (!(out->down[i] = calloc((size_t)(2 * hn), sizeof(float)))) r = WEFT_ENOMEM;
    for (int k = 0; k < 2 && !r; k++)
      if (half[k].n > i)
        memcpy(out->down[i] + k * hn, half[k].down[i], (size_t)hn * sizeof(float));
    out->down_numel[i] = 2 * hn;
  }
  if (!r && (half[0].mid || half[1].mid)) {
    int64_t hn = half[0].mid ? half[0].mid_numel : half[1].mid_numel;
    if (!(out->mid = calloc((size_t)(2 * hn), sizeof(float)))) r = WEFT_ENOMEM;
    for (int k = 0; k < 2 && !r; k++)
      if (half[k].mid) memcpy(out->mid + k * hn, half[k].mid, (size_t)hn * sizeof(float));
    out->mid_numel = 2 * hn;
  }
  out->n = n;
  sd_cnet_out_free(&half[0]);
  sd_cnet_out_free(&half[1]);
  return r;
}

/* ---- descriptors --------------------------------------------------------------- */

static const weft_param_def loader_params[] = {
    SD_P_STR("control_net_name", "", WEFT_PARAM_PATH,
             "a ControlNet .safetensors (control_model.* keys) or a "
             "diffusers ControlNet folder"),
};
static const weft_port_def loader_out[] = {
    SD_PORT("CONTROL_NET", WEFT_TYPE_CONTROL_NET, "the ControlNet")};
const weft_node_def sd_controlnet_loader_def = {
    .struct_size = sizeof(weft_node_def), .op = "ControlNetLoader",
    .category = "loaders",
    .doc = "Loads an SD1.x/SD2.x ControlNet, on the device WEFT_DEVICE "
           "(weft run --device) names, as CheckpointLoaderSimple.",
    .outputs = loader_out, .n_outputs = 1, .params = loader_params,
    .n_params = 1, .run = loader_run, .fingerprint = sd_file_fingerprint};

static const weft_port_def apply_in[] = {
    SD_PORT("conditioning", WEFT_TYPE_CONDITIONING, "the prompt"),
    SD_PORT("control_net", WEFT_TYPE_CONTROL_NET, "the ControlNet"),
    SD_PORT("image", WEFT_TYPE_IMAGE, "the hint (edges, depth, a mask...)"),
};
static const weft_param_def apply_params[] = {
    SD_P_FLOAT("strength", 1.0, 0.0, 10.0, "scale of the residuals"),
};
static const weft_port_def apply_out[] = {
    SD_PORT("CONDITIONING", WEFT_TYPE_CONDITIONING, "the controlled prompt")};
const weft_node_def sd_controlnet_apply_def = {
    .struct_size = sizeof(weft_node_def), .op = "ControlNetApply",
    .category = "conditioning/controlnet",
    .doc = "Attaches a ControlNet and its hint to a conditioning (applied to "
           "the negative too, as ComfyUI's deprecated node does).",
    .inputs = apply_in, .n_inputs = 3, .outputs = apply_out, .n_outputs = 1,
    .params = apply_params, .n_params = 1, .run = apply_run};

static const weft_port_def adv_in[] = {
    SD_PORT("positive", WEFT_TYPE_CONDITIONING, "what to draw"),
    SD_PORT("negative", WEFT_TYPE_CONDITIONING, "what to avoid"),
    SD_PORT("control_net", WEFT_TYPE_CONTROL_NET, "the ControlNet"),
    SD_PORT("image", WEFT_TYPE_IMAGE, "the hint"),
};
static const weft_param_def adv_params[] = {
    [ADV_STRENGTH] = SD_P_FLOAT("strength", 1.0, 0.0, 10.0,
                                "scale of the residuals"),
    [ADV_START] = SD_P_FLOAT("start_percent", 0.0, 0.0, 1.0,
                             "from this fraction of the schedule"),
    [ADV_END] = SD_P_FLOAT("end_percent", 1.0, 0.0, 1.0,
                           "up to this fraction of the schedule"),
};
static const weft_port_def adv_out[] = {
    SD_PORT("positive", WEFT_TYPE_CONDITIONING, "controlled positive"),
    SD_PORT("negative", WEFT_TYPE_CONDITIONING, "controlled negative"),
};
const weft_node_def sd_controlnet_apply_adv_def = {
    .struct_size = sizeof(weft_node_def), .op = "ControlNetApplyAdvanced",
    .category = "conditioning/controlnet",
    .doc = "Attaches a ControlNet to both conditionings for a part of the "
           "schedule; several ControlNets chain and their residuals add.",
    .inputs = adv_in, .n_inputs = 4, .outputs = adv_out, .n_outputs = 2,
    .params = adv_params, .n_params = 3, .run = apply_adv_run};
