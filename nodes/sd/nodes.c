/* nodes.c - the sd plugin: ComfyUI's core Stable Diffusion nodes
 * (CheckpointLoaderSimple, CLIPTextEncode, CLIPSetLastLayer,
 * EmptyLatentImage, KSampler, KSamplerAdvanced, VAEDecode, VAEEncode) over
 * the model code, on the CPU or on a CUDA device (WEFT_DEVICE). */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "brownian.h"
#include "rng.h"
#include "samplers.h"
#include "sd_device.h"
#include "sd_nodes.h"
#include "sd_objects.h"
#include "sd_plan.h"

#ifndef WEFT_CLIP_VOCAB_INSTALLED
#define WEFT_CLIP_VOCAB_INSTALLED ""
#endif

/* ---- the bundle ------------------------------------------------------------ */

int wf_get(void *h, const char *key, weft_tensor *v) {
  wfile *f = h;
  return f->host->weights_get(f->w, key, v);
}
const char *wf_meta(void *h, const char *key) {
  wfile *f = h;
  return f->host->weights_meta(f->w, key);
}
int32_t wf_count(void *h) {
  wfile *f = h;
  return f->host->weights_count(f->w);
}
const char *wf_key(void *h, int32_t i) {
  wfile *f = h;
  return f->host->weights_key(f->w, i);
}

typedef struct bundle_impl {
  sd_bundle pub;
  wfile files[SD_PARTS];
  char paths[SD_PARTS][PATH_MAX + 256];
} bundle_impl;

void sd_bundle_retain(sd_bundle *b) { atomic_fetch_add(&b->refs, 1); }

void sd_bundle_release(sd_bundle *b) {
  if (!b || atomic_fetch_sub(&b->refs, 1) != 1) return;
  for (int p = 0; p < SD_PARTS; p++) {
    sd_patch_state_free(&b->patch[p]);
    pthread_mutex_destroy(&b->lock[p]);
  }
  pthread_mutex_destroy(&b->be_mu);
  sd_ckpt_free_params(&b->ck);
  sd_unet_free(b->unet);
  sd_clip_free(b->clip);
  sd_vae_free(b->vae);
  weft_clip_tok_free(b->tok);
  weft_backend_free(b->be);
  for (int p = 0; p < SD_PARTS; p++)
    if (b->weights[p]) b->host->weights_release(b->weights[p]);
  free(b);
}

void sd_bundle_be_lock(sd_bundle *b) {
  if (!sd_be_is_host(b->be)) pthread_mutex_lock(&b->be_mu);
}

void sd_bundle_be_unlock(sd_bundle *b) {
  if (!sd_be_is_host(b->be)) pthread_mutex_unlock(&b->be_mu);
}

/* The budget the bundle's models share on a device (NULL on the host). */
static sd_vram *bundle_vram(const sd_bundle *b) {
  sd_devw *dw = b->unet ? sd_unet_devw(b->unet) : NULL;
  if (!dw && b->clip) dw = sd_clip_devw(b->clip);
  if (!dw && b->vae) dw = sd_vae_devw(b->vae);
  return dw ? dw->vr : NULL;
}

/* After a model node ran on a device: its cached scratch back to the
 * driver (the next node plans its own), and the allocator's high-water
 * logged against the budget. */
static void node_done(weft_call *c, sd_bundle *b, const char *what) {
  sd_vram *vr = bundle_vram(b);
  if (!vr) return;
  sd_bundle_be_lock(b);
  int r = sd_vram_trim(vr);
  sd_bundle_be_unlock(b);
  if (r) c->host->log(c, WEFT_LOG_WARN, "%s: trimming the cache failed", what);
  sd_vram_log_use(c, b->be, vr, what);
}

/* After a merge on the host masters: every weight any patch set ever
 * touched (the state's backups, which hold the rest at its base) copied
 * to the device again, so the device weights equal the masters bit for
 * bit (strength 0 gives the base exactly, as on the CPU). */
static int sync_patched(sd_bundle *b, sd_part part) {
  sd_devw *dw = part == SD_UNET   ? sd_unet_devw(b->unet)
                : part == SD_CLIP ? sd_clip_devw(b->clip)
                                  : NULL;
  if (!dw) return 0;
  sd_bundle_be_lock(b);
  int r = sd_patch_sync(&b->patch[part], dw);
  sd_bundle_be_unlock(b);
  return r;
}

int sd_bundle_acquire(sd_bundle *b, sd_part part, const sd_ref *ref) {
  pthread_mutex_lock(&b->lock[part]);
  bool same =
      sd_patch_is_applied(&b->patch[part], ref->patches, ref->n_patches);
  int r = sd_patch_apply(&b->patch[part], part, ref->patches, ref->n_patches);
  if (!same) {
    /* after a failed merge too: the device follows the masters */
    int rs = sync_patched(b, part);
    if (!r) r = rs;
  }
  if (r) pthread_mutex_unlock(&b->lock[part]);
  return r;
}

void sd_bundle_unacquire(sd_bundle *b, sd_part part) {
  pthread_mutex_unlock(&b->lock[part]);
}

static void ref_destroy(void *p) {
  sd_ref *r = p;
  for (int i = 0; i < r->n_patches; i++) sd_lora_release(r->patches[i].lora);
  free(r->patches);
  sd_bundle_release(r->bundle);
  free(r);
}

/* ---- the bundle's device as the graph sees it (ABI 1.4) -------------------
 * MODEL, CLIP and VAE values of a bundle on a device say so, with these
 * functions for the runtime's copies and the nodes' device tensors; each
 * takes the bundle's backend lock (a device backend serves one thread at a
 * time).  The backend lives as long as the bundle, which every such value
 * holds. */

static int dev_copy(sd_bundle *b, void *dst, const void *src, size_t n,
                    weft_copy_kind k) {
  sd_bundle_be_lock(b);
  int rc = b->be->iface->buffer_copy(b->be, dst, src, n, k);
  sd_bundle_be_unlock(b);
  return rc;
}

static void *dev_alloc(void *u, size_t n) {
  sd_bundle *b = u;
  sd_bundle_be_lock(b);
  void *p = b->be->iface->buffer_alloc(b->be, n ? n : 1);
  sd_bundle_be_unlock(b);
  return p;
}

static void dev_free(void *u, void *p) {
  sd_bundle *b = u;
  sd_bundle_be_lock(b);
  b->be->iface->buffer_free(b->be, p);
  sd_bundle_be_unlock(b);
}

static int dev_to_device(void *u, void *dst, const void *src, size_t n) {
  return dev_copy(u, dst, src, n, WEFT_COPY_HOST_TO_DEVICE);
}

static int dev_to_host(void *u, void *dst, const void *src, size_t n) {
  return dev_copy(u, dst, src, n, WEFT_COPY_DEVICE_TO_HOST);
}

static const weft_device_ops sd_dev_ops = {sizeof(weft_device_ops), dev_alloc,
                                           dev_free, dev_to_device,
                                           dev_to_host};

/* A sampler's latent (a host tensor it filled) as a device tensor when the
 * node runs on a device (its WEFT_PORT_DEVICE output): copied up once,
 * where VAEDecode reads it without a copy; its noise_mask goes with it. */
static int latent_to_device(weft_call *c, sd_bundle *b) {
  const weft_host *h = c->host;
  if (c->device == WEFT_DEVICE_CPU || !WEFT_HOST_HAS(h, device_tensor_new))
    return 0;
  weft_value *hv = c->outputs[0];
  const weft_tensor *t = h->value_tensor(hv);
  weft_tensor d;
  weft_value *dv =
      h->device_tensor_new(c, WEFT_TYPE_LATENT, t->dtype, t->ndim, t->shape, &d);
  if (!dv) return WEFT_ENOMEM;
  int r = dev_copy(b, d.data, t->data,
                   (size_t)weft_tensor_numel(t) * weft_dtype_size(t->dtype),
                   WEFT_COPY_HOST_TO_DEVICE);
  const weft_value *nm = h->value_get_attr(hv, "noise_mask");
  if (!r && nm) r = h->value_set_attr(dv, "noise_mask", (weft_value *)nm);
  if (r) {
    h->value_release(dv);
    h->error(c, "cannot copy the latent to the device (%s)",
             r == WEFT_ENOMEM ? "out of memory" : "the copy failed");
    return r;
  }
  h->value_release(hv);
  c->outputs[0] = dv;
  return 0;
}

/* A new MODEL/CLIP/VAE value on bundle b: base's patches (may be NULL)
 * plus one more LoRA when add is set. */
static weft_value *ref_value_patched(weft_call *c, weft_type type,
                                     sd_bundle *b, int clip_layer,
                                     const sd_ref *base, const sd_patch *add) {
  sd_ref *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  int n = (base ? base->n_patches : 0) + (add ? 1 : 0);
  if (n && !(r->patches = malloc((size_t)n * sizeof *r->patches))) {
    free(r);
    return NULL;
  }
  for (int i = 0; base && i < base->n_patches; i++) {
    r->patches[r->n_patches++] = base->patches[i];
    sd_lora_retain(base->patches[i].lora);
  }
  if (add) {
    r->patches[r->n_patches++] = *add;
    sd_lora_retain(add->lora);
  }
  sd_bundle_retain(b);
  r->bundle = b;
  r->clip_layer = clip_layer;
  const weft_host *h = c->host;
  weft_value *v = h->object_new(c, type, NULL, r, ref_destroy);
  if (v && !sd_be_is_host(b->be) && WEFT_HOST_HAS(h, device_tensor_new) &&
      h->object_set_device(v, 0, &sd_dev_ops, b)) {
    h->value_release(v);
    return NULL;
  }
  return v;
}

static weft_value *ref_value(weft_call *c, weft_type type, sd_bundle *b,
                             int clip_layer) {
  return ref_value_patched(c, type, b, clip_layer, NULL, NULL);
}

void sd_cond_destroy(void *p) {
  sd_cond *c = p;
  sd_ctrl_release(c->control);
  free(c->ctx);
  free(c->pooled);
  free(c);
}

/* ---- paths ----------------------------------------------------------------- */

/* Relative paths resolve against the input directory. */
void sd_resolve(weft_call *c, const char *path, char *out, size_t len) {
  if (path[0] == '/')
    snprintf(out, len, "%s", path);
  else
    snprintf(out, len, "%s/%s", c->host->input_dir(c), path);
}

bool sd_is_file(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* The CLIP vocabulary: $WEFT_CLIP_VOCAB, beside this plugin (the build tree
 * copies it there), or where meson installed it. */
static int find_vocab(char *out, size_t len) {
  const char *env = getenv("WEFT_CLIP_VOCAB");
  if (env && *env) {
    snprintf(out, len, "%s", env);
    return 0;
  }
  Dl_info info;
  char self[PATH_MAX];
  if (dladdr((void *)(uintptr_t)find_vocab, &info) && info.dli_fname &&
      realpath(info.dli_fname, self)) {
    char *slash = strrchr(self, '/');
    if (slash) {
      *slash = 0;
      snprintf(out, len, "%s/bpe_simple_vocab_16e6.txt.gz", self);
      if (sd_is_file(out)) return 0;
    }
  }
  snprintf(out, len, "%s", WEFT_CLIP_VOCAB_INSTALLED);
  return sd_is_file(out) ? 0 : WEFT_ENOENT;
}

/* ---- plan mode (weft plan) ------------------------------------------------- */

/* float32 bytes of a part's weights (the registry LoRA uses) */
static uint64_t part_bytes(const sd_bundle *b, sd_part part) {
  uint64_t n = 0;
  for (int i = 0; i < b->ck.n_params; i++)
    if (b->ck.params[i].part == part)
      n += (uint64_t)b->ck.params[i].numel * sizeof(float);
  return n;
}

/* What a model node's plan reports: where it runs, the part's weights (one
 * id per bundle and part, so every node on them is seen to share them),
 * and the recorded forward's arena and copies (calls forwards per run). */
static void plan_fill(weft_plan *plan, const sd_bundle *b, sd_part part,
                      const char *name, const weft_rec_stats *st,
                      uint64_t calls) {
  plan->device = sd_be_is_host(b->be) ? WEFT_DEVICE_CPU : 0;
  plan->weight_bytes = part_bytes(b, part);
  if (!WEFT_PLAN_HAS(plan, weights)) return;
  plan->arena_bytes = st->arena.arena;
  plan->arena_lower_bound = st->arena.lower_bound;
  plan->arena_naive = st->arena.naive;
  plan->h2d_bytes = st->h2d_bytes * calls;
  plan->d2h_bytes = st->d2h_bytes * calls;
  plan->n_weights = 1;
  plan->weights[0] = (weft_plan_weights){
      (uint64_t)(uintptr_t)b << 2 | (uint64_t)part, plan->weight_bytes, name};
}

/* ---- CheckpointLoaderSimple ------------------------------------------------ */

enum { LOADER_CKPT };

static char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *buf = NULL;
  size_t n = 0, cap = 0;
  for (;;) {
    if (n + 4096 + 1 > cap) {
      cap = (n + 4096 + 1) * 2;
      char *nb = realloc(buf, cap);
      if (!nb) {
        free(buf);
        fclose(f);
        return NULL;
      }
      buf = nb;
    }
    size_t k = fread(buf + n, 1, 4096, f);
    n += k;
    if (k == 0) break;
  }
  fclose(f);
  if (buf) buf[n] = 0;
  return buf;
}

static int open_part(weft_call *c, bundle_impl *bi, int p, const char *path) {
  sd_bundle *b = &bi->pub;
  b->weights[p] = c->host->weights_open(c, path);
  if (!b->weights[p]) return WEFT_EFORMAT; /* the host recorded why */
  bi->files[p] = (wfile){c->host, b->weights[p]};
  snprintf(bi->paths[p], sizeof bi->paths[p], "%s", path);
  b->ck.files[p] = (sd_file){&bi->files[p], wf_get, wf_meta, wf_count,
                             wf_key, bi->paths[p]};
  b->ck.has[p] = true;
  return 0;
}

/* prediction type and betas from a diffusers scheduler config */
static void scheduler_config(sd_bundle *b, const char *json) {
  b->prediction = json && strstr(json, "\"v_prediction\"") ? SD_PRED_V
                                                            : SD_PRED_EPS;
}

static int open_diffusers(weft_call *c, bundle_impl *bi, const char *dir,
                          char *cfg[SD_PARTS]) {
  static const char *const sub[SD_PARTS] = {"unet", "vae", "text_encoder"};
  static const char *const files[SD_PARTS][3] = {
      {"diffusion_pytorch_model.safetensors",
       "diffusion_pytorch_model.fp16.safetensors", NULL},
      {"diffusion_pytorch_model.safetensors",
       "diffusion_pytorch_model.fp16.safetensors", NULL},
      {"model.safetensors", "model.fp16.safetensors", NULL}};
  bi->pub.ck.layout = SD_LAYOUT_DIFFUSERS;
  for (int p = 0; p < SD_PARTS; p++) {
    char path[PATH_MAX + 128];
    bool found = false;
    for (int k = 0; files[p][k] && !found; k++) {
      snprintf(path, sizeof path, "%s/%s/%s", dir, sub[p], files[p][k]);
      found = sd_is_file(path);
    }
    if (!found) {
      c->host->error(c, "%s: not a diffusers model folder: no %s/%s",
                     dir, sub[p], files[p][0]);
      return WEFT_ENOENT;
    }
    int r = open_part(c, bi, p, path);
    if (r) return r;
    snprintf(path, sizeof path, "%s/%s/config.json", dir, sub[p]);
    cfg[p] = read_text(path);
    if (!cfg[p]) {
      c->host->error(c, "%s: cannot read %s", dir, path);
      return WEFT_ENOENT;
    }
  }
  char path[PATH_MAX + 64];
  snprintf(path, sizeof path, "%s/scheduler/scheduler_config.json", dir);
  char *sched = read_text(path);
  scheduler_config(&bi->pub, sched);
  free(sched);
  return 0;
}

static int open_single(weft_call *c, bundle_impl *bi, const char *path) {
  bi->pub.ck.layout = SD_LAYOUT_LDM;
  int r = open_part(c, bi, 0, path);
  if (r) return r;
  for (int p = 1; p < SD_PARTS; p++) {
    bi->pub.ck.files[p] = bi->pub.ck.files[0];
    bi->pub.ck.has[p] = true;
  }
  const char *meta = c->host->weights_meta(bi->pub.weights[0], "weft.config");
  scheduler_config(&bi->pub, meta);
  return 0;
}

/* The loader's phases: the masters read, the tokenizer, the device
 * started, each model's weights to the device and the copies committed. */
enum {
  LD_START,
  LD_TOK,
  LD_DEV,
  LD_UNET,
  LD_CLIP,
  LD_VAE,
  LD_DUNET,
  LD_DCLIP,
  LD_DVAE,
  LD_COMMIT,
  LD_N
};

static void log_load_times(weft_call *c, const sd_bundle *b, const double *t) {
  double d[LD_N] = {0};
  for (int i = 1; i < LD_N; i++)
    d[i] = t[i] > 0 && t[i - 1] > 0 ? t[i] - t[i - 1] : 0;
  /* the images' allocation, fill and pinning (CUDA), of all three */
  const sd_devw *dw[3] = {b->unet ? sd_unet_devw(b->unet) : NULL,
                          b->clip ? sd_clip_devw(b->clip) : NULL,
                          b->vae ? sd_vae_devw(b->vae) : NULL};
  double img = 0, fill = 0, pin = 0, mib = 0, pinned = 0, staged = 0;
  const sd_vram *vr = bundle_vram(b);
  sd_vram_stats st;
  memset(&st, 0, sizeof st);
  if (vr) st = *sd_vram_get_stats(vr);
  int qkv = 0, kv = 0, hwc = 0;
  for (int i = 0; i < 3; i++)
    if (dw[i]) {
      img += dw[i]->t_image, fill += dw[i]->t_fill, pin += dw[i]->t_pin;
      const double m = (double)dw[i]->image_bytes / 1048576.0;
      *(dw[i]->image ? &mib : &staged) += m;
      if (dw[i]->image_pinned) pinned += m;
      qkv += dw[i]->n_fused_qkv, kv += dw[i]->n_fused_kv;
      hwc += dw[i]->n_hwc;
    }
  c->host->log(c, WEFT_LOG_DEBUG,
               "loaded in %.2f s: tokenizer %.2f s, device start %.2f s, "
               "masters %.2f s (UNet %.2f, text encoder %.2f, VAE %.2f%s), "
               "weights to the device %.2f s (UNet %.2f, text encoder %.2f, "
               "VAE %.2f, commit %.2f; %.0f MiB staged without an image; "
               "images of %.0f MiB allocated in %.2f s, filled in %.2f s, "
               "%.0f MiB of them pinned in %.2f s; the commit: pool %.3f s, "
               "slots %.3f s, staging %.3f s (its threads' fills %.3f s, "
               "waits for a slot %.3f s, copies submitted %.3f s, summed), "
               "last copies %.3f s); stacked q/k/v weights "
               "in %d attentions, k/v in %d more; %d convolution weights "
               "channels last",
               sd_mono_s() - t[LD_START], d[LD_TOK], d[LD_DEV],
               d[LD_UNET] + d[LD_CLIP] + d[LD_VAE], d[LD_UNET], d[LD_CLIP],
               d[LD_VAE], b->ck.defer_reads ? "; values read as needed" : "",
               d[LD_DUNET] + d[LD_DCLIP] + d[LD_DVAE] + d[LD_COMMIT],
               d[LD_DUNET], d[LD_DCLIP], d[LD_DVAE], d[LD_COMMIT], staged, mib,
               img, fill, pinned, pin, st.t_pool, st.t_slots, st.t_stage,
               st.t_fill, st.t_slot_wait, st.t_submit, st.t_drain, qkv, kv,
               hwc);
}

static int loader_run(weft_call *c) {
  const weft_host *h = c->host;
  double t[LD_N] = {sd_mono_s()};
  char path[PATH_MAX];
  sd_resolve(c, weft_param_string(c, LOADER_CKPT), path, sizeof path);
  struct stat st;
  if (stat(path, &st) != 0) {
    h->error(c, "%s: %s", path, strerror(errno));
    return WEFT_ENOENT;
  }
  bundle_impl *bi = calloc(1, sizeof *bi);
  if (!bi) return WEFT_ENOMEM;
  sd_bundle *b = &bi->pub;
  atomic_init(&b->refs, 1);
  b->host = h;
  for (int p = 0; p < SD_PARTS; p++) pthread_mutex_init(&b->lock[p], NULL);
  pthread_mutex_init(&b->be_mu, NULL);
  char *cfg[SD_PARTS] = {0};
  int r = S_ISDIR(st.st_mode) ? open_diffusers(c, bi, path, cfg)
                              : open_single(c, bi, path);
  if (!r && (r = sd_ckpt_configure(&b->ck, (const char *const *)cfg)))
    h->error(c, "%s", b->ck.err);
  for (int p = 0; p < SD_PARTS; p++)
    free(cfg[p]);
  char vocab[PATH_MAX], err[512];
  if (!r && find_vocab(vocab, sizeof vocab)) {
    h->error(c, "cannot find the CLIP vocabulary bpe_simple_vocab_16e6.txt.gz "
                "(set WEFT_CLIP_VOCAB)");
    r = WEFT_ENOENT;
  }
  if (!r && (r = weft_clip_tok_load(vocab, &b->tok, err, sizeof err)))
    h->error(c, "%s", err);
  t[LD_TOK] = sd_mono_s();
  if (!r && !(b->be = sd_backend_new(c, "the checkpoint", &r)) && !r)
    r = WEFT_ENOMEM;
  t[LD_DEV] = sd_mono_s();
  /* on a device the masters' values are read only where needed (the
   * images come straight from the file; WEFT_SD_DEFER_READS=0 reads all) */
  const char *dr = getenv("WEFT_SD_DEFER_READS");
  b->ck.defer_reads = !r && !sd_be_is_host(b->be) && !(dr && !strcmp(dr, "0"));
  if (!r && ((r = sd_unet_load(&b->ck, &b->unet)) ||
             (t[LD_UNET] = sd_mono_s(), r = sd_clip_load(&b->ck, &b->clip)) ||
             (t[LD_CLIP] = sd_mono_s(), r = sd_vae_load(&b->ck, &b->vae))))
    h->error(c, "%s", b->ck.err);
  t[LD_VAE] = sd_mono_s();
  if (!r && !sd_be_is_host(b->be)) {
    /* the weights to the device under one budget (WEFT_VRAM, --vram):
     * resident when they fit, else streamed block by block; the host
     * arrays stay the masters */
    const char *part = "UNet";
    sd_vram *vr = sd_vram_for(c, b->be, "the checkpoint", &r);
    if (vr) {
      r = sd_vram_defer(vr, b->ck.defer_reads ? &b->ck : NULL);
      if (!r) r = sd_unet_to_vram(b->unet, vr);
      t[LD_DUNET] = sd_mono_s();
      if (!r) part = "text encoder", r = sd_clip_to_vram(b->clip, vr);
      t[LD_DCLIP] = sd_mono_s();
      if (!r) part = "VAE", r = sd_vae_to_vram(b->vae, vr);
      t[LD_DVAE] = sd_mono_s();
      if (!r) part = "models", r = sd_vram_commit(vr);
      t[LD_COMMIT] = sd_mono_s();
      sd_vram_defer(vr, NULL);
      if (r) {
        char what[128];
        snprintf(what, sizeof what, "copying the %s's weights", part);
        sd_vram_report(c, b->be, vr, r, what);
      } else {
        sd_vram_log(c, vr, "the checkpoint");
      }
      sd_vram_release(vr); /* the models hold it */
    }
  }
  if (!r) {
    char unused[1024];
    int n = sd_ckpt_unused(&b->ck, unused, sizeof unused);
    if (n)
      h->log(c, WEFT_LOG_WARN, "%s: %d tensors not used by the model: %s",
             path, n, unused);
  }
  sd_ckpt_release(&b->ck);
  if (r) {
    sd_bundle_release(b);
    return r;
  }
  log_load_times(c, b, t);
  weft_schedule_init(&b->sched, 0.00085, 0.012);
  b->latent_scale = b->ck.vae.scaling_factor;
  c->outputs[0] = ref_value(c, WEFT_TYPE_MODEL, b, -1);
  c->outputs[1] = ref_value(c, WEFT_TYPE_CLIP, b, -1);
  c->outputs[2] = ref_value(c, WEFT_TYPE_VAE, b, -1);
  sd_bundle_release(b); /* the three values hold it now */
  return c->outputs[0] && c->outputs[1] && c->outputs[2] ? 0 : WEFT_ENOMEM;
}

/* an edited checkpoint must load again: its size and mtime join the key */
uint64_t sd_file_fingerprint(weft_call *c) {
  char path[PATH_MAX + 64];
  sd_resolve(c, weft_param_string(c, LOADER_CKPT), path, sizeof path);
  struct stat st;
  if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
    strncat(path, "/unet/diffusion_pytorch_model.safetensors",
            sizeof path - strlen(path) - 1);
    stat(path, &st);
  } else if (stat(path, &st) != 0) {
    return 0;
  }
  return (uint64_t)st.st_size * 1000003u ^ (uint64_t)st.st_mtim.tv_sec * 31u ^
         (uint64_t)st.st_mtim.tv_nsec;
}

/* ---- LoraLoader ------------------------------------------------------------ */

sd_ref *sd_ref_of(weft_call *c, int input) {
  return c->host->value_object(c->inputs[input]);
}

/* ---- deferred completion ---------------------------------------------------
 * On a device backend a model node's run mostly waits for the GPU, so its
 * body runs on a thread of its own and the node ends with host->complete
 * (plugin ABI 1.3): the worker goes back to the pool at once, and the
 * completion reaches the loop (uv_async) as the runtime's own.  On the CPU
 * the body computes, so it runs in place, unless WEFT_SD_ASYNC=1 (the same
 * path without a GPU, for tests).  Where defer is not offered (an older
 * runtime, `weft plan`'s walk) the body runs in place too. */
typedef struct sd_async_job {
  weft_call *c;
  int (*body)(weft_call *);
  weft_completion *done;
} sd_async_job;

static void *async_main(void *arg) {
  sd_async_job j = *(sd_async_job *)arg;
  free(arg);
  const weft_host *h = j.c->host;
  h->log(j.c, WEFT_LOG_DEBUG, "deferred: runs on a thread of its own");
  int r = j.body(j.c);
  h->complete(j.done, r); /* the call is not touched after this */
  return NULL;
}

static bool async_wanted(weft_call *c, int input) {
  const weft_host *h = c->host;
  if (!WEFT_HOST_HAS(h, complete)) return false;
  if (!sd_be_is_host(sd_ref_of(c, input)->bundle->be)) return true;
  const char *e = getenv("WEFT_SD_ASYNC");
  return e && !strcmp(e, "1");
}

/* Runs body(c) on a thread of its own and returns WEFT_PENDING, or runs it
 * in place and returns its code; input: the MODEL/CLIP/VAE input whose
 * checkpoint decides. */
static int sd_run_deferred(weft_call *c, int input,
                           int (*body)(weft_call *)) {
  if (!async_wanted(c, input)) return body(c);
  weft_completion *done = c->host->defer(c);
  if (!done) return body(c);
  sd_async_job *j = malloc(sizeof *j);
  bool started = false;
  pthread_attr_t at;
  if (j && !pthread_attr_init(&at)) {
    *j = (sd_async_job){c, body, done};
    pthread_t t;
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    started = !pthread_create(&t, &at, async_main, j);
    pthread_attr_destroy(&at);
  }
  if (!started) { /* no thread: the body here, ended the same way */
    free(j);
    c->host->complete(done, body(c));
  }
  return WEFT_PENDING;
}

enum { LORA_NAME, LORA_STRENGTH_MODEL, LORA_STRENGTH_CLIP };

/* Matches the LoRA file against bundle b's weights. */
static int lora_for(weft_call *c, const char *path, sd_bundle *b,
                    sd_lora **out) {
  const weft_host *h = c->host;
  weft_weights *w = h->weights_open(c, path);
  if (!w) return WEFT_EFORMAT;
  wfile wf = {h, w};
  sd_file f = {&wf, wf_get, wf_meta, wf_count, wf_key, path};
  char unmatched[1024], err[1024];
  int n_unmatched = 0;
  int r = sd_lora_load(&f, &b->ck, out, unmatched, sizeof unmatched,
                       &n_unmatched, err, sizeof err);
  h->weights_release(w);
  if (r) {
    h->error(c, "%s", r == WEFT_ENOMEM ? "out of memory" : err);
    return r;
  }
  if (n_unmatched)
    h->log(c, WEFT_LOG_WARN, "%s: %d LoRA tensors match no weight of the "
           "model: %s", path, n_unmatched, unmatched);
  return 0;
}

static int lora_run_common(weft_call *c, bool with_clip) {
  char path[PATH_MAX];
  sd_resolve(c, weft_param_string(c, LORA_NAME), path, sizeof path);
  if (!sd_is_file(path)) {
    c->host->error(c, "%s: %s", path, strerror(errno ? errno : ENOENT));
    return WEFT_ENOENT;
  }
  const sd_ref *mref = sd_ref_of(c, 0), *cref = with_clip ? sd_ref_of(c, 1) : NULL;
  float sm = (float)weft_param_float(c, LORA_STRENGTH_MODEL);
  float sc = with_clip ? (float)weft_param_float(c, LORA_STRENGTH_CLIP) : 0;
  sd_lora *lm = NULL, *lc = NULL;
  int r = 0;
  /* ComfyUI: both strengths 0 pass the inputs through untouched */
  if ((sm != 0 || sc != 0) && (r = lora_for(c, path, mref->bundle, &lm)))
    return r;
  if (lm && cref) {
    if (cref->bundle == mref->bundle) {
      lc = lm;
      sd_lora_retain(lc);
    } else if ((r = lora_for(c, path, cref->bundle, &lc))) {
      sd_lora_release(lm);
      return r;
    }
  }
  sd_patch pm = {lm, sm}, pc = {lc, sc};
  c->outputs[0] = ref_value_patched(c, WEFT_TYPE_MODEL, mref->bundle, -1, mref,
                                    lm && lm->n_unet && sm != 0 ? &pm : NULL);
  if (with_clip)
    c->outputs[1] = ref_value_patched(c, WEFT_TYPE_CLIP, cref->bundle,
                                      cref->clip_layer, cref,
                                      lc && lc->n_clip && sc != 0 ? &pc : NULL);
  sd_lora_release(lm);
  sd_lora_release(lc);
  return c->outputs[0] && (!with_clip || c->outputs[1]) ? 0 : WEFT_ENOMEM;
}

static int lora_run(weft_call *c) { return lora_run_common(c, true); }
static int lora_model_only_run(weft_call *c) {
  return lora_run_common(c, false);
}

/* ---- CLIPTextEncode / CLIPSetLastLayer ------------------------------------ */

typedef struct clip_args {
  sd_bundle *b;
  int layer;
  const int32_t *ids;
  int64_t n;
  float *out, *pooled;
} clip_args;

static int clip_fn(void *user, weft_backend *be) {
  clip_args *a = user;
  return sd_clip_forward(a->b->clip, be, a->ids, a->n, a->layer, a->out,
                         a->pooled);
}

/* fn(user, b->be) unplanned.  Under a budget the reserve is still the last
 * node's (a VAE encode's arena, say): room is made for dw's blocks first
 * (sd_vram_fit).  The caller holds the backend's lock. */
static int run_unplanned(sd_bundle *b, const sd_devw *dw, const char *why,
                         int (*fn)(void *user, weft_backend *be), void *user) {
  sd_vram *vr = bundle_vram(b);
  int r = vr ? sd_vram_fit(vr, dw, sd_vram_scratch(vr), why) : 0;
  return r ? r : fn(user, b->be);
}

/* fn(user, b->be) under the backend's lock: planned first (its arena from
 * the planner; under a budget that arena and the scratch kept from the
 * weights' pool) unless planning is off (WEFT_PLAN=0).  A failure is
 * reported as `failed` (with the budget's account under one). */
static int run_model(weft_call *c, sd_bundle *b, const sd_devw *dw,
                     const char *why, const char *failed,
                     int (*fn)(void *user, weft_backend *be), void *user) {
  sd_vram *vr = bundle_vram(b);
  sd_bundle_be_lock(b);
  int r = sd_plan_enabled()
              ? sd_plan_call_vram(b->be, vr, dw, vr ? sd_vram_scratch(vr) : 0,
                                  why, fn, user, NULL)
              : run_unplanned(b, dw, why, fn, user);
  sd_bundle_be_unlock(b);
  if (r && vr)
    sd_vram_report(c, b->be, vr, r, failed);
  else if (r)
    sd_model_error(c, b->be, r, failed);
  return r;
}

/* plan: the forward recorded only (no LoRA merge, nothing computed) */
static int encode_chunks(sd_bundle *b, int layer, const int32_t *ids, int64_t n,
                         float *out, float *pooled, weft_plan *plan) {
  clip_args a = {b, layer, ids, n, out, pooled};
  weft_rec_stats st;
  sd_bundle_be_lock(b);
  int r = plan ? sd_plan_call(b->be, clip_fn, &a, true, &st)
               : run_unplanned(b, sd_clip_devw(b->clip), "the text encoder",
                               clip_fn, &a);
  sd_bundle_be_unlock(b);
  if (!r && plan) plan_fill(plan, b, SD_CLIP, "text encoder", &st, 1);
  return r;
}

static int clip_encode_common(weft_call *c, weft_plan *plan) {
  const weft_host *h = c->host;
  sd_ref *ref = sd_ref_of(c, 0);
  sd_bundle *b = ref->bundle;
  const char *text = weft_param_string(c, 0);
  weft_clip_chunks *ch = NULL;
  if (weft_clip_chunks_build(b->tok, text, strlen(text), NULL, &ch))
    return WEFT_ENOMEM;
  if (ch->warnings) h->log(c, WEFT_LOG_WARN, "%s", ch->warnings);
  const int64_t L = WEFT_CLIP_CHUNK_LEN, D = b->clip ? sd_clip_config(b->clip)->hidden : 0;
  int64_t n = (int64_t)ch->n_chunks + (ch->has_weights ? 1 : 0);
  int32_t *ids = malloc((size_t)(n * L) * sizeof *ids);
  float *z = calloc((size_t)(n * L * D), sizeof *z);
  float *pooled = calloc((size_t)(n * D), sizeof *pooled);
  sd_cond *cond = calloc(1, sizeof *cond);
  int r = 0;
  if (!ids || !z || !pooled || !cond) {
    r = WEFT_ENOMEM;
    goto out;
  }
  for (size_t k = 0; k < ch->n_chunks; k++)
    memcpy(ids + k * L, ch->ids[k], (size_t)L * sizeof *ids);
  if (ch->has_weights) { /* ComfyUI's empty prompt: BOS EOS, then padding */
    int32_t *e = ids + (n - 1) * L;
    e[0] = WEFT_CLIP_BOS;
    for (int64_t i = 1; i < L; i++) e[i] = WEFT_CLIP_EOS;
  }
  int layer = ref->clip_layer < 0 ? ref->clip_layer + 1 : ref->clip_layer;
  if (plan) {
    r = encode_chunks(b, layer, ids, n, z, pooled, plan);
  } else {
    if ((r = sd_bundle_acquire(b, SD_CLIP, ref))) goto out;
    r = encode_chunks(b, layer, ids, n, z, pooled, NULL);
    sd_bundle_unacquire(b, SD_CLIP);
    if (!r) node_done(c, b, "text encoder");
  }
  if (r) {
    if (r == WEFT_EINVAL || sd_be_is_host(b->be))
      h->error(c, "text encoder failed: %s",
               r == WEFT_EINVAL ? "clip layer out of range" : "out of memory");
    else
      sd_vram_report(c, b->be, bundle_vram(b), r, "text encoder failed");
    goto out;
  }
  if (ch->has_weights) {
    /* z = (z - z_empty) * w + z_empty for every weighted token */
    const float *ze = z + (n - 1) * L * D;
    for (size_t k = 0; k < ch->n_chunks; k++)
      for (int64_t j = 0; j < L; j++) {
        double w = ch->weights[k][j];
        if (w == 1.0) continue;
        float *zk = z + ((int64_t)k * L + j) * D;
        for (int64_t d = 0; d < D; d++)
          zk[d] = (float)((zk[d] - ze[j * D + d]) * w + ze[j * D + d]);
      }
  }
  cond->tokens = (int64_t)ch->n_chunks * L;
  cond->dim = D;
  cond->ctx = z;
  cond->pooled = pooled; /* the first chunk's pooled output */
  z = NULL, pooled = NULL;
  c->outputs[0] = h->object_new(c, WEFT_TYPE_CONDITIONING, NULL, cond,
                                sd_cond_destroy);
  cond = NULL;
  if (!c->outputs[0]) r = WEFT_ENOMEM;
out:
  weft_clip_chunks_free(ch);
  free(ids), free(z), free(pooled);
  if (cond) sd_cond_destroy(cond);
  return r;
}

static int clip_encode_body(weft_call *c) {
  return clip_encode_common(c, NULL);
}
static int clip_encode_run(weft_call *c) {
  return sd_run_deferred(c, 0, clip_encode_body);
}
static int clip_encode_plan(weft_call *c, weft_plan *plan) {
  return clip_encode_common(c, plan);
}

static int clip_set_last_layer_run(weft_call *c) {
  sd_ref *ref = sd_ref_of(c, 0);
  int layer = (int)weft_param_int(c, 0);
  int layers = sd_clip_config(ref->bundle->clip)->layers;
  if (-layer > layers) {
    c->host->error(c, "stop_at_clip_layer %d: the text encoder has only %d "
                      "layers", layer, layers);
    return WEFT_ERANGE;
  }
  c->outputs[0] =
      ref_value_patched(c, WEFT_TYPE_CLIP, ref->bundle, layer, ref, NULL);
  return c->outputs[0] ? 0 : WEFT_ENOMEM;
}

/* ---- CLIPTokenize (for `weft tokenize`) ---------------------------------- */

static void tok_destroy(void *p) { weft_clip_tok_free(p); }

static int clip_tokenize_run(weft_call *c) {
  const weft_host *h = c->host;
  const weft_clip_tok *tok = NULL;
  weft_clip_tok *own = NULL;
  if (c->inputs[0]) {
    tok = sd_ref_of(c, 0)->bundle->tok;
  } else {
    char vocab[PATH_MAX], err[512];
    if (find_vocab(vocab, sizeof vocab)) {
      h->error(c, "cannot find the CLIP vocabulary (set WEFT_CLIP_VOCAB)");
      return WEFT_ENOENT;
    }
    if (weft_clip_tok_load(vocab, &own, err, sizeof err)) {
      h->error(c, "%s", err);
      return WEFT_EFORMAT;
    }
    tok = own;
  }
  const char *text = weft_param_string(c, 0);
  weft_clip_chunks *ch = NULL;
  int r = weft_clip_chunks_build(tok, text, strlen(text), NULL, &ch);
  char *out = NULL;
  if (!r)
    out = weft_param_int(c, 1) == 1 ? weft_clip_chunks_json(ch)
                                    : weft_clip_chunks_text(ch);
  if (!r && !out) r = WEFT_ENOMEM;
  if (!r && !(c->outputs[0] = h->string_new(c, out))) r = WEFT_ENOMEM;
  free(out);
  weft_clip_chunks_free(ch);
  tok_destroy(own);
  return r;
}

/* ---- EmptyLatentImage ------------------------------------------------------ */

static int empty_latent_run(weft_call *c) {
  int64_t w = weft_param_int(c, 0), h = weft_param_int(c, 1);
  int64_t b = weft_param_int(c, 2);
  int64_t shape[4] = {b, 4, h / 8, w / 8};
  weft_tensor t;
  c->outputs[0] = c->host->tensor_new(c, WEFT_TYPE_LATENT, WEFT_F32, 4, shape,
                                      &t);
  if (!c->outputs[0]) return WEFT_ENOMEM;
  memset(t.data, 0, (size_t)weft_tensor_numel(&t) * sizeof(float));
  return 0;
}

/* ---- KSampler -------------------------------------------------------------- */

enum { SAMPLE_TIMED = 3 };

typedef struct sampling {
  weft_call *call;
  sd_bundle *bundle;
  sd_denoiser den;
  int64_t n;
  /* inpainting (ComfyUI's KSamplerX0Inpaint): 1 where the sampler works */
  float *mask;
  const float *latent;  /* the scaled input latent */
  const float *noise0;  /* the noise the unmasked part is kept at */
  float *x_in, *fresh;
  /* noise */
  weft_noise_kind kind;
  weft_torch_gen gen;
  weft_brownian brown;
  float *tmp;
  /* the UNet's activations: recorded on the first call, then from one
   * arena (dplan.d NULL: unplanned, WEFT_ARENA=0) */
  sd_denoise_plan dplan;
  /* the ControlNets' calls, planned the same way (NULL: none, or
   * unplanned) */
  struct sd_ctrl_recs *ctrl_recs;
  /* host seconds: the sampling's start, then after each of the first
   * SAMPLE_TIMED steps and the last (a fresh process's first steps pay
   * for plans and kernel loads: the debug log says how much) */
  double t_start, t_step[SAMPLE_TIMED], t_last;
  int steps_done;
} sampling;

/* one model call on the bundle's backend (sd_bundle_be_lock) */
static int denoise_locked(sampling *s, const float *x, float sigma,
                          float *den) {
  sd_bundle_be_lock(s->bundle);
  int r = s->dplan.d ? sd_denoise_planned(&s->dplan, x, sigma, den)
                     : sd_denoise(&s->den, x, sigma, den);
  sd_bundle_be_unlock(s->bundle);
  return r;
}

static int denoise(void *user, const float *x, float sigma, float *den) {
  sampling *s = user;
  if (!s->mask) return denoise_locked(s, x, sigma, den);
  /* outside the mask the model sees the original latent, noised to this
   * sigma, and its estimate there is the original latent */
  const float *m = s->mask;
  for (int64_t i = 0; i < s->n; i++)
    s->x_in[i] =
        x[i] * m[i] + (s->latent[i] + s->noise0[i] * sigma) * (1.0f - m[i]);
  int r = denoise_locked(s, s->x_in, sigma, den);
  if (r) return r;
  for (int64_t i = 0; i < s->n; i++)
    den[i] = den[i] * m[i] + s->latent[i] * (1.0f - m[i]);
  return 0;
}

/* comfy.utils.reshape_mask: the mask [n, 1, H, W] bilinearly resized to the
 * latent's h x w, repeated over channels and batch */
static float *latent_mask(const weft_tensor *mask, const int64_t shape[4]) {
  int64_t B = shape[0], C = shape[1], h = shape[2], w = shape[3];
  int64_t H = mask->shape[mask->ndim - 2], W = mask->shape[mask->ndim - 1];
  int64_t n = weft_tensor_numel(mask) / (H * W);
  float *small = malloc((size_t)(n * h * w) * sizeof *small);
  float *out = malloc((size_t)(B * C * h * w) * sizeof *out);
  if (!small || !out || sd_latent_resize(mask->data, n, H, W, small, h, w, 1,
                                         false)) {
    free(small), free(out);
    return NULL;
  }
  for (int64_t b = 0; b < B; b++)
    for (int64_t ch = 0; ch < C; ch++)
      memcpy(out + (b * C + ch) * h * w, small + (b % n) * h * w,
             (size_t)(h * w) * sizeof *out);
  free(small);
  return out;
}

static int noise(void *user, float sigma, float sigma_next, float *out) {
  sampling *s = user;
  if (s->kind == WEFT_NOISE_BROWNIAN)
    weft_brownian_noise(&s->brown, sigma, sigma_next, out, s->tmp);
  else
    weft_torch_randn(&s->gen, out, s->n);
  return 0;
}

static int step(void *user, int k, int total, const float *x) {
  (void)x;
  sampling *s = user;
  s->t_last = sd_mono_s();
  if (s->steps_done < SAMPLE_TIMED) s->t_step[s->steps_done] = s->t_last;
  s->steps_done++;
  s->call->host->progress(s->call, k, total);
  return s->call->host->is_cancelled(s->call) ? WEFT_ECANCELED : 0;
}

typedef struct ksampler_args {
  uint64_t seed;
  bool add_noise;
  int steps;
  float cfg;
  const char *sampler, *scheduler;
  double denoise;
  int start, end;          /* KSamplerAdvanced; start -1 for KSampler */
  bool force_full_denoise;
} ksampler_args;

/* plan mode's ControlNet residuals for the UNet recording: copies of the
 * ones a DRY ControlNet call gave (use false: a call without them) */
typedef struct plan_res {
  const sd_cnet_out *res;
  bool use;
} plan_res;

static int plan_res_cb(void *user, const float *x_in, int64_t rows,
                       bool cond_only, int64_t h, int64_t w, const float *t,
                       const float *ctx, int64_t tokens, float sigma,
                       sd_cnet_out *out) {
  const plan_res *pr = user;
  (void)x_in, (void)rows, (void)cond_only, (void)h, (void)w, (void)t,
      (void)ctx, (void)tokens, (void)sigma;
  if (!pr->use) return 0;
  const sd_cnet_out *r = pr->res;
  for (int i = 0; i < r->n; i++) {
    if (!(out->down[i] = calloc((size_t)r->down_numel[i], sizeof(float))))
      return WEFT_ENOMEM;
    out->down_numel[i] = r->down_numel[i];
    out->n = i + 1;
  }
  if (r->mid &&
      !(out->mid = calloc((size_t)r->mid_numel, sizeof(float))))
    return WEFT_ENOMEM;
  out->mid_numel = r->mid_numel;
  return 0;
}

/* Adds the distinct ControlNets of chain k to plan's weights. */
static void plan_cnet_weights(weft_plan *plan, const sd_ctrl *k) {
  for (; k; k = k->prev) {
    uint64_t id = (uint64_t)(uintptr_t)k->cnet << 2 | (uint64_t)SD_CONTROL;
    bool seen = false;
    for (int i = 0; i < plan->n_weights && !seen; i++)
      seen = plan->weights[i].id == id;
    if (seen || plan->n_weights == WEFT_PLAN_MAX_WEIGHTS) continue;
    uint64_t bytes = 0;
    const sd_ckpt *ck = &k->cnet->ck;
    for (int i = 0; i < ck->n_params; i++)
      bytes += (uint64_t)ck->params[i].numel * sizeof(float);
    plan->weights[plan->n_weights++] =
        (weft_plan_weights){id, bytes, "ControlNet"};
    plan->weight_bytes += bytes;
  }
}

/* plan mode: the sampler's model calls recorded without computing.  With
 * no ControlNet every call is the same: one recording of the CFG batch,
 * its copies times calls.  With ControlNets each call (sigma[k]) is made
 * as the run makes it: the ControlNets in their windows recorded DRY
 * (their copies added), and the UNet recorded once with their residuals
 * and once without, as the calls need: the run holds an arena for each,
 * so the arena reported is their sum, its lower bound the larger one's;
 * the ControlNets' weights are the node's too. */
static int ksample_plan(weft_call *c, sd_bundle *b, const sd_cond *pos,
                        const sd_cond *neg, const int64_t shape[4],
                        const ksampler_args *a, const float *sig, int calls,
                        weft_plan *plan) {
  sd_denoiser den;
  int r = sd_denoiser_init(&den, b->unet, b->be, &b->sched, b->prediction,
                           shape, a->cfg, neg->ctx, neg->tokens, pos->ctx,
                           pos->tokens);
  if (r) return r;
  uint64_t dry[2] = {0, 0};
  sd_ctrl_pair ctrl = {{neg->control, pos->control}, &b->sched,
                       shape[1] * shape[2] * shape[3],
                       sd_unet_config(b->unet)->context_dim, dry, NULL,
                       NULL};
  if (!ctrl.chain[0] && pos->apply_to_uncond) ctrl.chain[0] = pos->control;
  const bool cfg1 = den.cfg == 1.0f;
  const int64_t B = den.batch, rows = cfg1 ? B : 2 * B;
  int64_t n = shape[0] * shape[1] * shape[2] * shape[3];
  float *x = calloc((size_t)n, sizeof *x), *dn = calloc((size_t)n, sizeof *dn);
  if (!x || !dn) r = WEFT_ENOMEM;
  /* which calls have residuals, and one call's residuals */
  sd_cnet_out res;
  memset(&res, 0, sizeof res);
  int with = 0;
  for (int k = 0; k < calls && !r && (ctrl.chain[0] || ctrl.chain[1]); k++) {
    sd_cnet_out o;
    memset(&o, 0, sizeof o);
    r = sd_ctrl_eval(&ctrl, den.x_in, rows, cfg1, den.h, den.w, den.t,
                     cfg1 ? den.ctx + B * den.tokens * den.dim : den.ctx,
                     den.tokens, sig[k], &o);
    if (!r && (o.n || o.mid) && with++ == 0) {
      res = o;
      continue;
    }
    sd_cnet_out_free(&o);
  }
  plan_res pr = {&res, false};
  den.control = plan_res_cb;
  den.control_user = &pr;
  weft_rec_stats sum;
  memset(&sum, 0, sizeof sum);
  for (int v = 0; v < 2 && !r; v++) {
    int64_t k = v ? with : calls - with;
    if (k <= 0) continue;
    pr.use = v == 1;
    weft_rec *rec = weft_rec_new(b->be);
    r = rec ? weft_rec_begin(rec, WEFT_REC_DRY) : WEFT_ENOMEM;
    if (!r) {
      den.be = weft_rec_backend(rec);
      sd_bundle_be_lock(b);
      r = sd_denoise(&den, x, 1.0f, dn);
      sd_bundle_be_unlock(b);
      den.be = b->be;
      int re = weft_rec_end(rec);
      if (!r) r = re;
    }
    if (!r) {
      weft_rec_stats st;
      weft_rec_stats_get(rec, &st);
      sum.arena.arena += st.arena.arena;
      if (st.arena.lower_bound > sum.arena.lower_bound)
        sum.arena.lower_bound = st.arena.lower_bound;
      if (st.arena.naive > sum.arena.naive) sum.arena.naive = st.arena.naive;
      sum.h2d_bytes += st.h2d_bytes * (uint64_t)k;
      sum.d2h_bytes += st.d2h_bytes * (uint64_t)k;
    }
    weft_rec_free(rec);
  }
  if (!r) {
    sum.h2d_bytes += dry[0], sum.d2h_bytes += dry[1];
    plan_fill(plan, b, SD_UNET, "UNet", &sum, 1);
    if (WEFT_PLAN_HAS(plan, weights)) {
      plan_cnet_weights(plan, ctrl.chain[1]);
      plan_cnet_weights(plan, ctrl.chain[0]);
    }
  } else {
    sd_model_error(c, b->be, r, "planning the UNet call failed");
  }
  sd_cnet_out_free(&res);
  free(x), free(dn);
  sd_denoiser_free(&den);
  return r;
}

/* On a device under a budget: the UNet call planned before step 1 (DRY),
 * its arena plus scratch kept from the weights' pool (resized now, before
 * the arena is made).  *reported when the error is already recorded. */
static int sample_reserve(weft_call *c, sampling *s, const float *x,
                          float sigma, bool *reported) {
  sd_bundle *b = s->bundle;
  sd_vram *vr = bundle_vram(b);
  if (!vr || sd_vram_budget(vr) == UINT64_MAX) return 0;
  uint64_t arena = 0;
  sd_bundle_be_lock(b);
  /* the DRY call loads the UNet's blocks under the last node's reserve */
  int r = sd_vram_fit(vr, sd_unet_devw(b->unet), sd_vram_scratch(vr),
                      "the sampler's UNet call");
  if (!r && s->dplan.d) r = sd_denoise_plan_dry(&s->dplan, x, sigma, &arena);
  /* the ControlNets' step-1 calls were recorded DRY with it */
  arena += sd_ctrl_recs_arena(s->ctrl_recs);
  if (!r)
    r = sd_vram_reserve(vr, arena + sd_vram_scratch(vr), NULL,
                        "the sampler's UNet call");
  if (!r) r = sd_vram_commit(vr);
  if (!r) r = sd_vram_trim(vr);
  sd_bundle_be_unlock(b);
  if (r) {
    sd_vram_report(c, b->be, vr, r, "sampling");
    *reported = true;
  } else {
    c->host->log(c, WEFT_LOG_INFO,
                 "sampler: activations %.1f MiB (planned: the UNet call%s) "
                 "+ %.1f MiB scratch kept from --vram %.1f MiB; weights "
                 "pool %.1f MiB",
                 (double)arena / 1048576.0,
                 s->ctrl_recs ? " and its ControlNets" : "",
                 (double)sd_vram_scratch(vr) / 1048576.0,
                 (double)sd_vram_budget(vr) / 1048576.0,
                 (double)sd_vram_pool_bytes(vr) / 1048576.0);
  }
  return r;
}

static int ksample(weft_call *c, const ksampler_args *a, weft_plan *plan) {
  const weft_host *h = c->host;
  sd_bundle *b = sd_ref_of(c, 0)->bundle;
  const sd_cond *pos = h->value_object(c->inputs[1]);
  const sd_cond *neg = h->value_object(c->inputs[2]);
  const weft_tensor *lat = h->value_tensor(c->inputs[3]);
  const sd_unet_cfg *ucfg = sd_unet_config(b->unet);
  if (lat->ndim != 4 || lat->dtype != WEFT_F32 ||
      lat->shape[1] != ucfg->in_channels) {
    h->error(c, "latent_image has %lld channels; the model takes %d",
             lat->ndim == 4 ? (long long)lat->shape[1] : -1LL,
             ucfg->in_channels);
    return WEFT_ETYPE;
  }
  if (pos->dim != ucfg->context_dim || neg->dim != ucfg->context_dim) {
    h->error(c, "conditioning width %lld does not match the model's %d "
                "(a text encoder from another model?)",
             (long long)pos->dim, ucfg->context_dim);
    return WEFT_ETYPE;
  }
  sampling s = {.call = c, .bundle = b};
  s.n = lat->shape[0] * lat->shape[1] * lat->shape[2] * lat->shape[3];
  int cap = (int)(a->steps / (a->denoise > 0 ? a->denoise : 1)) + 8;
  float *sig = malloc((size_t)cap * sizeof *sig);
  if (!sig) return WEFT_ENOMEM;
  int ns = weft_ksampler_sigmas(&b->sched, a->scheduler, a->sampler, a->steps,
                                a->start >= 0 ? 1.0 : a->denoise, sig, cap);
  if (ns >= 0 && a->start >= 0)
    ns = weft_sigmas_window(sig, ns, a->start, a->end, a->force_full_denoise);
  int64_t shape[4] = {lat->shape[0], lat->shape[1], lat->shape[2],
                      lat->shape[3]};
  weft_tensor out;
  c->outputs[0] = h->tensor_new(c, WEFT_TYPE_LATENT, WEFT_F32, 4, shape, &out);
  if (!c->outputs[0]) {
    free(sig);
    return WEFT_ENOMEM;
  }
  /* the output keeps the input's noise mask, as ComfyUI's common_ksampler
   * copies the latent dict: a second sampler inpaints the same region */
  const weft_value *nm = h->value_get_attr(c->inputs[3], "noise_mask");
  if (nm && h->value_set_attr(c->outputs[0], "noise_mask", (weft_value *)nm)) {
    free(sig);
    return WEFT_ENOMEM;
  }
  float *x = out.data;
  const float scale = b->latent_scale;
  if (plan) { /* the output's shape is all plan mode promises */
    memset(x, 0, (size_t)s.n * sizeof *x);
    int r =
        ns < 2 ? 0 : ksample_plan(c, b, pos, neg, shape, a, sig, ns - 1, plan);
    free(sig);
    return r;
  }
  if (ns < 2) { /* nothing to sample (denoise 0, or a window past the end) */
    memcpy(x, lat->data, (size_t)s.n * sizeof *x);
    free(sig);
    return latent_to_device(c, b);
  }
  float *nz = malloc((size_t)s.n * sizeof *nz);
  float *latent_in = malloc((size_t)s.n * sizeof *latent_in);
  s.tmp = malloc((size_t)s.n * sizeof *s.tmp);
  int r = 0;
  if (!nz || !latent_in || !s.tmp) {
    r = WEFT_ENOMEM;
    goto out;
  }
  if ((r = sd_denoiser_init(&s.den, b->unet, b->be, &b->sched, b->prediction,
                            shape, a->cfg, neg->ctx, neg->tokens, pos->ctx,
                            pos->tokens)))
    goto out;
  sd_ctrl_pair ctrl = {{neg->control, pos->control}, &b->sched,
                       shape[1] * shape[2] * shape[3],
                       sd_unet_config(b->unet)->context_dim, NULL, NULL,
                       &s.dplan.dry};
  if (!ctrl.chain[0] && pos->apply_to_uncond) ctrl.chain[0] = pos->control;
  if (ctrl.chain[0] || ctrl.chain[1]) {
    s.den.control = sd_ctrl_eval;
    s.den.control_user = &ctrl;
    /* the ControlNets' activations planned as the UNet's (without memory
     * for their recorders they simply run unplanned) */
    if (sd_plan_enabled()) ctrl.recs = s.ctrl_recs = sd_ctrl_recs_new();
  }
  if (sd_plan_enabled()) sd_denoise_plan_init(&s.dplan, &s.den);
  /* ComfyUI's prepare_noise: torch.manual_seed(seed); randn(latent shape) */
  weft_torch_gen g;
  weft_torch_gen_seed(&g, a->seed);
  if (a->add_noise)
    weft_torch_randn(&g, nz, s.n);
  else
    memset(nz, 0, (size_t)s.n * sizeof *nz);
  const float *lin = lat->data;
  for (int64_t i = 0; i < s.n; i++) latent_in[i] = lin[i] * scale;
  weft_sampler_start(x, nz, latent_in, s.n, sig[0],
                     weft_schedule_sigma_max(&b->sched));
  if (nm) {
    const weft_tensor *mt = h->value_tensor(nm);
    if (!mt || mt->ndim < 2 || !(s.mask = latent_mask(mt, shape)) ||
        !(s.x_in = malloc((size_t)s.n * sizeof *s.x_in))) {
      r = mt ? WEFT_ENOMEM : WEFT_ETYPE;
      goto out;
    }
    s.latent = latent_in;
    s.noise0 = nz;
    if (!strcmp(a->sampler, "ddim")) {
      /* ComfyUI's ddim inpaints with fresh noise: randn from seed + 1 */
      if (!(s.fresh = malloc((size_t)s.n * sizeof *s.fresh))) {
        r = WEFT_ENOMEM;
        goto out;
      }
      weft_torch_gen g2;
      weft_torch_gen_seed(&g2, a->seed + 1);
      weft_torch_randn(&g2, s.fresh, s.n);
      s.noise0 = s.fresh;
    }
  }
  s.kind = (weft_noise_kind)weft_sampler_noise_kind(a->sampler);
  if (s.kind == WEFT_NOISE_DEFAULT) {
    weft_torch_gen_seed(&s.gen, a->seed + 1); /* ComfyUI's CPU noise sampler */
  } else if (s.kind == WEFT_NOISE_BROWNIAN) {
    float lo = sig[ns - 1] > 0 ? sig[ns - 1] : sig[ns - 2], hi = sig[0];
    for (int i = 0; i < ns; i++)
      if (sig[i] > 0 && sig[i] < lo) lo = sig[i];
    if ((r = weft_brownian_init(&s.brown, s.n, lo, hi, a->seed))) goto out;
  }
  weft_sampler_io io = {s.n, denoise, noise, step, &s};
  const sd_ref *mref = sd_ref_of(c, 0);
  bool reported = false;
  double t_plan = 0;
  if (!(r = sd_bundle_acquire(b, SD_UNET, mref))) {
    const double t0 = sd_mono_s();
    r = sample_reserve(c, &s, x, sig[0], &reported);
    s.t_start = sd_mono_s();
    t_plan = s.t_start - t0;
    if (!r) r = weft_sample(a->sampler, &io, x, sig, ns);
    sd_bundle_unacquire(b, SD_UNET);
  }
  if (!r && s.steps_done > SAMPLE_TIMED)
    h->log(c, WEFT_LOG_DEBUG,
           "sampler: planned in %.3f s; steps 1-3 took %.3f, %.3f, %.3f s, "
           "the other %d %.4f s each",
           t_plan, s.t_step[0] - s.t_start, s.t_step[1] - s.t_step[0],
           s.t_step[2] - s.t_step[1], s.steps_done - SAMPLE_TIMED,
           (s.t_last - s.t_step[SAMPLE_TIMED - 1]) /
               (s.steps_done - SAMPLE_TIMED));
  if (s.kind == WEFT_NOISE_BROWNIAN) weft_brownian_free(&s.brown);
  if (reported)
    ; /* the budget said why */
  else if (r == WEFT_ECANCELED)
    h->error(c, "cancelled");
  else if (r && !sd_be_is_host(b->be))
    sd_model_error(c, b->be, r, "sampling failed");
  else if (r)
    h->error(c, "sampling failed: %s", r == WEFT_ENOMEM ? "out of memory"
                                                         : "model error");
  for (int64_t i = 0; !r && i < s.n; i++) x[i] /= scale;
  weft_rec_stats st;
  for (int i = 0; i < 2; i++)
    if (sd_denoise_plan_stats(&s.dplan, i, &st))
      h->log(c, WEFT_LOG_DEBUG,
             "UNet activations%s: arena %llu bytes (lower bound %llu, "
             "unplanned %llu), %d replays, %llu misses; graphs: %d "
             "segments, %llu launches%s",
             i ? " (with ControlNet residuals)" : "",
             (unsigned long long)st.arena.arena,
             (unsigned long long)st.arena.lower_bound,
             (unsigned long long)st.arena.naive, st.replays,
             (unsigned long long)st.misses, st.graph_segments,
             (unsigned long long)st.graph_launches,
             s.dplan.graphs_failed ? " (given up after a failure)" : "");
  int nc = sd_ctrl_recs_sum(s.ctrl_recs, &st);
  if (nc)
    h->log(c, WEFT_LOG_DEBUG,
           "ControlNet activations: %d recording%s, arenas %llu bytes, %d "
           "replays, %llu misses",
           nc, nc == 1 ? "" : "s", (unsigned long long)st.arena.arena,
           st.replays, (unsigned long long)st.misses);
  if (!r) node_done(c, b, "sampler");
  if (!r) r = latent_to_device(c, b);
out:
  sd_denoise_plan_free(&s.dplan);
  sd_ctrl_recs_free(s.ctrl_recs);
  sd_denoiser_free(&s.den);
  free(sig), free(nz), free(latent_in), free(s.tmp), free(s.mask),
      free(s.x_in), free(s.fresh);
  return r;
}

enum { KS_SEED, KS_STEPS, KS_CFG, KS_SAMPLER, KS_SCHEDULER, KS_DENOISE };

static ksampler_args ksampler_args_of(weft_call *c) {
  return (ksampler_args){
      .seed = (uint64_t)weft_param_int(c, KS_SEED), .add_noise = true,
      .steps = (int)weft_param_int(c, KS_STEPS),
      .cfg = (float)weft_param_float(c, KS_CFG),
      .sampler = weft_param_string(c, KS_SAMPLER),
      .scheduler = weft_param_string(c, KS_SCHEDULER),
      .denoise = weft_param_float(c, KS_DENOISE), .start = -1};
}

static int ksampler_body(weft_call *c) {
  ksampler_args a = ksampler_args_of(c);
  return ksample(c, &a, NULL);
}
static int ksampler_run(weft_call *c) {
  return sd_run_deferred(c, 0, ksampler_body);
}
static int ksampler_plan(weft_call *c, weft_plan *plan) {
  ksampler_args a = ksampler_args_of(c);
  return ksample(c, &a, plan);
}

enum {
  KA_ADD_NOISE, KA_SEED, KA_STEPS, KA_CFG, KA_SAMPLER, KA_SCHEDULER,
  KA_START, KA_END, KA_LEFTOVER
};

static ksampler_args ksampler_adv_args_of(weft_call *c) {
  return (ksampler_args){
      .seed = (uint64_t)weft_param_int(c, KA_SEED),
      .add_noise = weft_param_int(c, KA_ADD_NOISE) == 0,
      .steps = (int)weft_param_int(c, KA_STEPS),
      .cfg = (float)weft_param_float(c, KA_CFG),
      .sampler = weft_param_string(c, KA_SAMPLER),
      .scheduler = weft_param_string(c, KA_SCHEDULER), .denoise = 1.0,
      .start = (int)weft_param_int(c, KA_START),
      .end = (int)weft_param_int(c, KA_END),
      .force_full_denoise = weft_param_int(c, KA_LEFTOVER) == 0};
}

static int ksampler_adv_body(weft_call *c) {
  ksampler_args a = ksampler_adv_args_of(c);
  return ksample(c, &a, NULL);
}
static int ksampler_adv_run(weft_call *c) {
  return sd_run_deferred(c, 0, ksampler_adv_body);
}
static int ksampler_adv_plan(weft_call *c, weft_plan *plan) {
  ksampler_args a = ksampler_adv_args_of(c);
  return ksample(c, &a, plan);
}

/* ---- VAEDecode / VAEEncode ------------------------------------------------- */

/* [-1, 1] NCHW -> an IMAGE value [B, H, W, 3] in [0, 1], clamped as
 * ComfyUI's VAE.process_output */
static int image_output(weft_call *c, const float *img, int64_t B, int64_t H,
                        int64_t W) {
  int64_t shape[4] = {B, H, W, 3};
  weft_tensor t;
  c->outputs[0] = c->host->tensor_new(c, WEFT_TYPE_IMAGE, WEFT_F32, 4, shape,
                                      &t);
  if (!c->outputs[0]) return WEFT_ENOMEM;
  float *o = t.data;
  for (int64_t bb = 0; bb < B; bb++)
    for (int64_t ch = 0; ch < 3; ch++)
      for (int64_t i = 0; i < H * W; i++) {
        float v = (img[(bb * 3 + ch) * H * W + i] + 1.0f) / 2.0f;
        o[(bb * H * W + i) * 3 + ch] = v < 0 ? 0 : v > 1 ? 1 : v;
      }
  return 0;
}

static const weft_tensor *decode_input(weft_call *c, sd_bundle *b) {
  const weft_tensor *lat = c->host->value_tensor(c->inputs[0]);
  const sd_vae_cfg *vc = sd_vae_config(b->vae);
  if (!lat || lat->ndim != 4 || lat->shape[1] != vc->latent_channels) {
    c->host->error(c, "samples have %lld channels; the VAE takes %d",
                   lat && lat->ndim == 4 ? (long long)lat->shape[1] : -1LL,
                   vc->latent_channels);
    return NULL;
  }
  return lat;
}

typedef struct vae_args {
  sd_vae *vae;
  const float *in;
  int64_t b, h, w;
  float *out;
  bool in_dev; /* in is a device tensor's (VAEDecode's device port) */
} vae_args;

static int vae_decode_fn(void *user, weft_backend *be) {
  vae_args *a = user;
  return sd_vae_decode_from(a->vae, be, a->in, a->in_dev, a->b, a->h, a->w,
                            a->out);
}

static int vae_encode_fn(void *user, weft_backend *be) {
  vae_args *a = user;
  return sd_vae_encode_one(a->vae, be, a->in, a->h, a->w, a->out);
}

/* The decode's activations are planned before it runs (one arena); plan
 * mode stops after the recording and outputs a black image. */
static int vae_decode_common(weft_call *c, weft_plan *plan) {
  sd_bundle *b = sd_ref_of(c, 1)->bundle;
  const weft_tensor *lat = decode_input(c, b);
  if (!lat) return WEFT_ETYPE;
  int64_t B = lat->shape[0], hh = lat->shape[2], ww = lat->shape[3];
  int64_t f = sd_vae_factor(b->vae), H = hh * f, W = ww * f;
  float *img = calloc((size_t)(B * 3 * H * W), sizeof *img);
  if (!img) return WEFT_ENOMEM;
  vae_args a = {b->vae, lat->data, B, hh, ww, img,
                lat->device != WEFT_DEVICE_CPU};
  weft_rec_stats st;
  int r;
  if (plan) {
    sd_bundle_be_lock(b);
    r = sd_plan_call(b->be, vae_decode_fn, &a, true, &st);
    sd_bundle_be_unlock(b);
    if (r) sd_model_error(c, b->be, r, "VAE decode failed");
  } else {
    r = run_model(c, b, sd_vae_devw(b->vae), "the VAE decode",
                  "VAE decode failed", vae_decode_fn, &a);
  }
  if (!r) r = image_output(c, img, B, H, W);
  if (!r && !plan) node_done(c, b, "VAE decode");
  if (!r && plan) plan_fill(plan, b, SD_VAE, "VAE", &st, 1);
  free(img);
  return r;
}

static int vae_decode_body(weft_call *c) {
  return vae_decode_common(c, NULL);
}
static int vae_decode_run(weft_call *c) {
  return sd_run_deferred(c, 1, vae_decode_body);
}
static int vae_decode_plan(weft_call *c, weft_plan *plan) {
  return vae_decode_common(c, plan);
}

enum { VT_TILE, VT_OVERLAP, VT_TSIZE, VT_TOVERLAP };

/* ---- the tiled VAE nodes' tiles, planned ---------------------------------- */

/* Each tile's forward planned before it runs (recorded, then from an
 * arena), as VAEDecode's whole forward is. */
static int tile_planned(void *user, weft_backend *be,
                        int (*fn)(void *arg, weft_backend *be), void *arg) {
  (void)user;
  return sd_plan_call(be, fn, arg, false, NULL);
}

/* The tiles of a tiled pass recorded without computing: each distinct
 * tile shape once; sum: the largest tile's arena (tiles run one at a
 * time), every tile's copies added up. */
typedef struct tiles_dry {
  sd_vae_tiles t; /* run: tiles_dry_run */
  bool decode;
  int n;
  int64_t hw[16][2];
  weft_rec_stats st[16], *cur, sum;
} tiles_dry;

static int tiles_dry_run(void *user, weft_backend *be,
                         int (*fn)(void *arg, weft_backend *be), void *arg) {
  tiles_dry *d = user;
  return sd_plan_call(be, fn, arg, true, d->cur);
}

static int tiles_dry_each(void *user, int64_t h, int64_t w) {
  tiles_dry *d = user;
  int i = 0;
  while (i < d->n && (d->hw[i][0] != h || d->hw[i][1] != w)) i++;
  if (i == d->n) {
    if (d->n == 16) return WEFT_ENOMEM; /* three tilings give at most 12 */
    d->hw[i][0] = h, d->hw[i][1] = w;
    d->cur = &d->st[i];
    int r = sd_vae_tiles_probe(&d->t, d->decode, h, w);
    if (r) return r;
    d->n++;
    weft_arena_stats *m = &d->sum.arena, *a = &d->st[i].arena;
    if (a->arena > m->arena) m->arena = a->arena;
    if (a->lower_bound > m->lower_bound) m->lower_bound = a->lower_bound;
    if (a->naive > m->naive) m->naive = a->naive;
  }
  d->sum.h2d_bytes += d->st[i].h2d_bytes;
  d->sum.d2h_bytes += d->st[i].d2h_bytes;
  return 0;
}

/* The tiled pass over H x W (input units) recorded: d->sum. */
static int tiles_plan(sd_bundle *b, bool decode, int64_t H, int64_t W,
                      int64_t tile, int64_t ov, tiles_dry *d) {
  memset(d, 0, sizeof *d);
  d->t = (sd_vae_tiles){b->vae, b->be, tiles_dry_run, d};
  d->decode = decode;
  sd_bundle_be_lock(b);
  int r = sd_vae_tiles_each(decode, H, W, tile, tile, ov, tiles_dry_each, d);
  sd_bundle_be_unlock(b);
  return r;
}

/* A run's tiles: room for the VAE's blocks (sd_vram_fit), planned (unless
 * WEFT_ARENA=0); under a budget the largest tile's arena plus the scratch
 * kept from the pool first, once for the node (a reserve per tile would
 * empty the pool each time).  *reported when the budget said why it
 * failed. */
static int tiles_run_setup(weft_call *c, sd_bundle *b, bool decode, int64_t H,
                           int64_t W, int64_t tile, int64_t ov,
                           sd_vae_tiles *t, bool *reported) {
  *t = (sd_vae_tiles){b->vae, b->be, NULL, NULL};
  *reported = false;
  sd_vram *vr = bundle_vram(b);
  const char *why = decode ? "the tiled VAE decode" : "the tiled VAE encode";
  /* the tiles (DRY ones too) load the VAE's blocks under the last node's
   * reserve */
  sd_bundle_be_lock(b);
  int r =
      vr ? sd_vram_fit(vr, sd_vae_devw(b->vae), sd_vram_scratch(vr), why) : 0;
  sd_bundle_be_unlock(b);
  if (!r && sd_plan_enabled()) t->run = tile_planned;
  tiles_dry d;
  if (!r && sd_plan_enabled() && vr && sd_vram_budget(vr) != UINT64_MAX) {
    if ((r = tiles_plan(b, decode, H, W, tile, ov, &d))) return r;
    sd_bundle_be_lock(b);
    r = sd_vram_reserve(vr, d.sum.arena.arena + sd_vram_scratch(vr),
                        sd_vae_devw(b->vae), why);
    if (!r) r = sd_vram_commit(vr);
    if (!r) r = sd_vram_trim(vr);
    sd_bundle_be_unlock(b);
  }
  if (r) {
    sd_vram_report(c, b->be, vr, r,
                   decode ? "tiled VAE decode failed" : "tiled VAE encode failed");
    *reported = true;
  }
  return r;
}

/* VAE.decode_tiled_: three tilings (tall, wide, square) averaged, so no
 * seam falls in the same place twice */
static int vae_decode_tiled_common(weft_call *c, weft_plan *plan) {
  sd_bundle *b = sd_ref_of(c, 1)->bundle;
  const weft_tensor *lat = decode_input(c, b);
  if (!lat) return WEFT_ETYPE;
  int64_t tile = weft_param_int(c, VT_TILE), ov = weft_param_int(c, VT_OVERLAP);
  if (tile < ov * 4) ov = tile / 4;
  int64_t f = sd_vae_factor(b->vae), t = tile / f, o = ov / f;
  int64_t B = lat->shape[0], C = lat->shape[1], hh = lat->shape[2],
          ww = lat->shape[3], H = hh * f, W = ww * f;
  float *img = calloc((size_t)(B * 3 * H * W), sizeof *img);
  int r = img ? 0 : WEFT_ENOMEM;
  bool reported = false;
  if (!r && plan) { /* the tiles recorded; the image is black */
    tiles_dry d;
    r = tiles_plan(b, true, hh, ww, t, o, &d);
    if (!r) plan_fill(plan, b, SD_VAE, "VAE", &d.sum, (uint64_t)B);
  } else if (!r) {
    sd_vae_tiles vt;
    r = tiles_run_setup(c, b, true, hh, ww, t, o, &vt, &reported);
    for (int64_t bb = 0; bb < B && !r; bb++) {
      sd_bundle_be_lock(b);
      r = sd_vae_tiles_decode(&vt, (const float *)lat->data + bb * C * hh * ww,
                              hh, ww, t, t, o, img + bb * 3 * H * W);
      sd_bundle_be_unlock(b);
      c->host->progress(c, bb + 1, B);
    }
  }
  if (reported)
    ; /* the budget said why */
  else if (r == WEFT_EINVAL)
    c->host->error(c, "tile_size %lld must exceed the overlap %lld",
                   (long long)tile, (long long)ov);
  else if (r)
    sd_model_error(c, b->be, r, "tiled VAE decode failed");
  if (!r) r = image_output(c, img, B, H, W);
  if (!r && !plan) node_done(c, b, "tiled VAE decode");
  free(img);
  return r;
}
static int vae_decode_tiled_body(weft_call *c) {
  return vae_decode_tiled_common(c, NULL);
}
static int vae_decode_tiled_plan(weft_call *c, weft_plan *plan) {
  return vae_decode_tiled_common(c, plan);
}
static int vae_decode_tiled_run(weft_call *c) {
  return sd_run_deferred(c, 1, vae_decode_tiled_body);
}

/* IMAGE [B, H, W, C] -> pixels NCHW in [0, 1], centre-cropped to a
 * multiple of the VAE's factor (VAE.vae_encode_crop_pixels).  *out is
 * malloc'd [B, 3, H', W']. */
static int crop_pixels(weft_call *c, sd_bundle *b, const weft_tensor *px,
                       float **out, int64_t *Hc, int64_t *Wc, int64_t *oy,
                       int64_t *ox) {
  int64_t f = sd_vae_factor(b->vae);
  if (!px || px->ndim != 4 || px->shape[3] < 3 || px->dtype != WEFT_F32) {
    c->host->error(c, "pixels must be an IMAGE [batch, height, width, channels]");
    return WEFT_ETYPE;
  }
  int64_t B = px->shape[0], H0 = px->shape[1], W0 = px->shape[2];
  int64_t C0 = px->shape[3], H = H0 / f * f, W = W0 / f * f;
  if (H == 0 || W == 0) {
    c->host->error(c, "image %lldx%lld is smaller than %lld pixels",
                   (long long)W0, (long long)H0, (long long)f);
    return WEFT_EINVAL;
  }
  *oy = (H0 % f) / 2, *ox = (W0 % f) / 2;
  float *in = malloc((size_t)(B * 3 * H * W) * sizeof *in);
  if (!in) return WEFT_ENOMEM;
  const float *p = px->data;
  for (int64_t bb = 0; bb < B; bb++)
    for (int64_t y = 0; y < H; y++)
      for (int64_t x = 0; x < W; x++)
        for (int64_t ch = 0; ch < 3; ch++)
          in[((bb * 3 + ch) * H + y) * W + x] =
              p[((bb * H0 + y + *oy) * W0 + x + *ox) * C0 + ch];
  *out = in, *Hc = H, *Wc = W;
  return 0;
}

static int latent_output(weft_call *c, weft_tensor *t, int64_t B, int64_t lat,
                         int64_t h, int64_t w) {
  int64_t shape[4] = {B, lat, h, w};
  c->outputs[0] = c->host->tensor_new(c, WEFT_TYPE_LATENT, WEFT_F32, 4, shape,
                                      t);
  return c->outputs[0] ? 0 : WEFT_ENOMEM;
}

static int encode_pixels(weft_call *c, sd_bundle *b, const float *in,
                         int64_t B, int64_t H, int64_t W, weft_plan *plan) {
  int64_t f = sd_vae_factor(b->vae), lat = sd_vae_config(b->vae)->latent_channels;
  weft_tensor t;
  int r = latent_output(c, &t, B, lat, H / f, W / f);
  int64_t per = lat * (H / f) * (W / f);
  if (!r && plan) { /* one image recorded: each runs alone, the same way */
    memset(t.data, 0, (size_t)(B * per) * sizeof(float));
    vae_args a = {b->vae, in, 1, H, W, t.data, false};
    weft_rec_stats st;
    sd_bundle_be_lock(b);
    r = sd_plan_call(b->be, vae_encode_fn, &a, true, &st);
    sd_bundle_be_unlock(b);
    if (r) sd_model_error(c, b->be, r, "planning the VAE encode failed");
    else plan_fill(plan, b, SD_VAE, "VAE", &st, (uint64_t)B);
    return r;
  }
  /* each image planned before it runs, as the decode: under a budget its
   * arena and the scratch are kept from the weights' pool first */
  for (int64_t bb = 0; bb < B && !r; bb++) {
    vae_args a = {b->vae, in + bb * 3 * H * W, 1, H, W,
                  (float *)t.data + bb * per, false};
    r = run_model(c, b, sd_vae_devw(b->vae), "the VAE encode",
                  "VAE encode failed", vae_encode_fn, &a);
  }
  return r;
}

static int vae_encode_common(weft_call *c, weft_plan *plan) {
  sd_bundle *b = sd_ref_of(c, 1)->bundle;
  const weft_tensor *px = c->host->value_tensor(c->inputs[0]);
  float *in = NULL;
  int64_t H, W, oy, ox;
  int r = crop_pixels(c, b, px, &in, &H, &W, &oy, &ox);
  if (!r) r = encode_pixels(c, b, in, px->shape[0], H, W, plan);
  free(in);
  return r;
}

static int vae_encode_body(weft_call *c) {
  return vae_encode_common(c, NULL);
}
static int vae_encode_run(weft_call *c) {
  return sd_run_deferred(c, 1, vae_encode_body);
}
static int vae_encode_plan(weft_call *c, weft_plan *plan) {
  return vae_encode_common(c, plan);
}

enum { VE_TILE, VE_OVERLAP, VE_TSIZE, VE_TOVERLAP };

static int vae_encode_tiled_common(weft_call *c, weft_plan *plan) {
  sd_bundle *b = sd_ref_of(c, 1)->bundle;
  const weft_tensor *px = c->host->value_tensor(c->inputs[0]);
  float *in = NULL;
  int64_t H, W, oy, ox;
  int r = crop_pixels(c, b, px, &in, &H, &W, &oy, &ox);
  if (r) return r;
  int64_t f = sd_vae_factor(b->vae), lat = sd_vae_config(b->vae)->latent_channels;
  int64_t tx = weft_param_int(c, VE_TILE), ov = weft_param_int(c, VE_OVERLAP);
  int64_t B = px->shape[0], h = H / f, w = W / f, per = lat * h * w;
  weft_tensor t;
  r = latent_output(c, &t, B, lat, h, w);
  bool reported = false;
  if (!r && plan) { /* the tiles recorded; the latent is zeros */
    memset(t.data, 0, (size_t)(B * per) * sizeof(float));
    tiles_dry d;
    r = tiles_plan(b, false, H, W, tx, ov, &d);
    if (!r) plan_fill(plan, b, SD_VAE, "VAE", &d.sum, (uint64_t)B);
  } else if (!r) {
    sd_vae_tiles vt;
    r = tiles_run_setup(c, b, false, H, W, tx, ov, &vt, &reported);
    for (int64_t bb = 0; bb < B && !r; bb++) {
      sd_bundle_be_lock(b);
      r = sd_vae_tiles_encode(&vt, in + bb * 3 * H * W, H, W, tx, tx, ov,
                              (float *)t.data + bb * per);
      sd_bundle_be_unlock(b);
      c->host->progress(c, bb + 1, B);
    }
  }
  if (reported)
    ; /* the budget said why */
  else if (r == WEFT_EINVAL)
    c->host->error(c, "tile_size %lld must exceed the overlap %lld",
                   (long long)tx, (long long)ov);
  else if (r)
    sd_model_error(c, b->be, r, "tiled VAE encode failed");
  if (!r && !plan) node_done(c, b, "tiled VAE encode");
  free(in);
  return r;
}
static int vae_encode_tiled_body(weft_call *c) {
  return vae_encode_tiled_common(c, NULL);
}
static int vae_encode_tiled_plan(weft_call *c, weft_plan *plan) {
  return vae_encode_tiled_common(c, plan);
}
static int vae_encode_tiled_run(weft_call *c) {
  return sd_run_deferred(c, 1, vae_encode_tiled_body);
}

enum { VI_GROW };

/* nodes.py VAEEncodeForInpaint: masked pixels go to grey before encoding,
 * and the mask, grown by a box filter, becomes the latent's noise mask */
static int vae_encode_inpaint_common(weft_call *c, weft_plan *plan) {
  const weft_host *h = c->host;
  sd_bundle *b = sd_ref_of(c, 1)->bundle;
  const weft_tensor *px = h->value_tensor(c->inputs[0]);
  const weft_tensor *mask = h->value_tensor(c->inputs[2]);
  if (!mask || mask->ndim < 2 || mask->dtype != WEFT_F32) {
    h->error(c, "mask must be a MASK [batch, height, width]");
    return WEFT_ETYPE;
  }
  float *in = NULL;
  int64_t H, W, oy, ox;
  int r = crop_pixels(c, b, px, &in, &H, &W, &oy, &ox);
  if (r) return r;
  int64_t B = px->shape[0], H0 = px->shape[1], W0 = px->shape[2];
  int64_t MH = mask->shape[mask->ndim - 2], MW = mask->shape[mask->ndim - 1];
  int64_t n = weft_tensor_numel(mask) / (MH * MW);
  /* nodes.py: padding = ceil((g - 1) / 2), which is g / 2 */
  int64_t g = weft_param_int(c, VI_GROW), pad = g / 2;
  float *full = malloc((size_t)(n * H0 * W0) * sizeof *full);
  float *grown = malloc((size_t)(n * H * W) * sizeof *grown);
  if (!full || !grown) r = WEFT_ENOMEM;
  /* the mask at the image's size (bilinear), cropped like the pixels */
  if (!r) r = sd_latent_resize(mask->data, n, MH, MW, full, H0, W0, 1, false);
  for (int64_t k = 0; k < n && !r; k++) {
    const float *mk = full + k * H0 * W0;
    for (int64_t y = 0; y < H; y++)
      for (int64_t x = 0; x < W; x++) {
        float v;
        if (g == 0) {
          v = rintf(mk[(y + oy) * W0 + x + ox]);
        } else { /* conv2d(round(mask), ones(g, g), padding=pad), clamped */
          float acc = 0;
          for (int64_t dy = 0; dy < g; dy++)
            for (int64_t dx = 0; dx < g; dx++) {
              int64_t yy = y + dy - pad, xx = x + dx - pad;
              if (yy >= 0 && yy < H && xx >= 0 && xx < W)
                acc += rintf(mk[(yy + oy) * W0 + xx + ox]);
            }
          v = acc < 0 ? 0 : acc > 1 ? 1 : acc;
        }
        grown[(k * H + y) * W + x] = rintf(v);
      }
    /* masked pixels to 0.5: (p - 0.5) * (1 - round(mask)) + 0.5 */
  }
  for (int64_t bb = 0; bb < B && !r; bb++) {
    const float *mk = full + (bb % n) * H0 * W0;
    for (int64_t ch = 0; ch < 3; ch++)
      for (int64_t y = 0; y < H; y++)
        for (int64_t x = 0; x < W; x++) {
          float m = 1.0f - rintf(mk[(y + oy) * W0 + x + ox]);
          float *p = &in[((bb * 3 + ch) * H + y) * W + x];
          *p = (*p - 0.5f) * m + 0.5f;
        }
  }
  if (!r) r = encode_pixels(c, b, in, B, H, W, plan);
  if (!r) {
    int64_t ms[4] = {n, 1, H, W};
    weft_tensor mt;
    weft_value *mv = h->tensor_new(c, WEFT_TYPE_MASK, WEFT_F32, 4, ms, &mt);
    if (!mv) {
      r = WEFT_ENOMEM;
    } else {
      memcpy(mt.data, grown, (size_t)(n * H * W) * sizeof(float));
      r = h->value_set_attr(c->outputs[0], "noise_mask", mv);
      h->value_release(mv);
    }
  }
  free(in), free(full), free(grown);
  return r;
}

static int vae_encode_inpaint_body(weft_call *c) {
  return vae_encode_inpaint_common(c, NULL);
}
static int vae_encode_inpaint_run(weft_call *c) {
  return sd_run_deferred(c, 1, vae_encode_inpaint_body);
}
static int vae_encode_inpaint_plan(weft_call *c, weft_plan *plan) {
  return vae_encode_inpaint_common(c, plan);
}

/* ---- descriptors ----------------------------------------------------------- */

#define PORT SD_PORT
#define P_INT SD_P_INT
#define P_FLOAT SD_P_FLOAT
#define P_ENUM SD_P_ENUM
#define P_STR SD_P_STR

static const weft_param_def loader_params[] = {
    P_STR("ckpt_name", "models/default/weft-shapes-v1.safetensors",
          WEFT_PARAM_PATH,
          "a single-file checkpoint (.safetensors, original layout) or a "
          "diffusers folder; relative paths resolve against --input-dir"),
};
static const weft_port_def loader_out[] = {
    PORT("MODEL", WEFT_TYPE_MODEL, "the denoising UNet and its schedule"),
    PORT("CLIP", WEFT_TYPE_CLIP, "the text encoder and tokenizer"),
    PORT("VAE", WEFT_TYPE_VAE, "the image autoencoder"),
};
static const weft_node_def loader_def = {
    .struct_size = sizeof(weft_node_def), .op = "CheckpointLoaderSimple",
    .category = "loaders",
    .doc = "Loads a Stable Diffusion 1.x/2.x checkpoint. The architecture is "
           "read from the tensors (and config.json or 'weft.config' "
           "metadata), not from flags. Its models run where WEFT_DEVICE "
           "(weft run --device) says: cpu, cuda, auto (CUDA when built "
           "with it and a GPU is there) or emulated (the CPU kernels "
           "behind device pointers, to test the device paths).",
    .outputs = loader_out, .n_outputs = 3, .params = loader_params,
    .n_params = 1, .run = loader_run, .fingerprint = sd_file_fingerprint};

static const weft_port_def lora_in[] = {
    PORT("model", WEFT_TYPE_MODEL, "the model to patch"),
    PORT("clip", WEFT_TYPE_CLIP, "the text encoder to patch"),
};
static const weft_param_def lora_params[] = {
    P_STR("lora_name", "", WEFT_PARAM_PATH,
          "a LoRA .safetensors (kohya/A1111 or diffusers/PEFT keys, LoCon)"),
    P_FLOAT("strength_model", 1.0, -100.0, 100.0, "scale of the UNet change"),
    P_FLOAT("strength_clip", 1.0, -100.0, 100.0,
            "scale of the text-encoder change"),
};
static const weft_port_def lora_out[] = {
    PORT("MODEL", WEFT_TYPE_MODEL, "the patched model"),
    PORT("CLIP", WEFT_TYPE_CLIP, "the patched text encoder"),
};
static const weft_node_def lora_def = {
    .struct_size = sizeof(weft_node_def), .op = "LoraLoader",
    .category = "loaders",
    .doc = "Applies a LoRA to a model and its text encoder. The weights are "
           "merged when used, from the base weights, so stacked LoRAs and "
           "changed strengths never reload the checkpoint.",
    .inputs = lora_in, .n_inputs = 2, .outputs = lora_out, .n_outputs = 2,
    .params = lora_params, .n_params = 3, .run = lora_run,
    .fingerprint = sd_file_fingerprint};
static const weft_node_def lora_model_only_def = {
    .struct_size = sizeof(weft_node_def), .op = "LoraLoaderModelOnly",
    .category = "loaders", .doc = "Applies a LoRA to a model's UNet only.",
    .inputs = lora_in, .n_inputs = 1, .outputs = lora_out, .n_outputs = 1,
    .params = lora_params, .n_params = 2, .run = lora_model_only_run,
    .fingerprint = sd_file_fingerprint};

static const weft_port_def clip_in[] = {
    PORT("clip", WEFT_TYPE_CLIP, "the text encoder")};
static const weft_param_def encode_params[] = {
    P_STR("text", "", WEFT_PARAM_MULTILINE,
          "the prompt; (word:1.2) and (word) weight words, \\( \\) are "
          "literal"),
};
static const weft_port_def cond_out[] = {
    PORT("CONDITIONING", WEFT_TYPE_CONDITIONING, "the encoded prompt")};
static const weft_node_def encode_def = {
    .struct_size = sizeof(weft_node_def), .op = "CLIPTextEncode",
    .category = "conditioning",
    .doc = "Encodes a prompt with the CLIP text encoder: ComfyUI's emphasis "
           "syntax and 75-token chunks.",
    .inputs = clip_in, .n_inputs = 1, .outputs = cond_out, .n_outputs = 1,
    .params = encode_params, .n_params = 1, .plan = clip_encode_plan,
    .run = clip_encode_run};

static const weft_param_def last_layer_params[] = {
    P_INT("stop_at_clip_layer", -1, -24, -1,
          "-1: the last layer; -2: the penultimate (clip skip 2)"),
};
static const weft_port_def clip_out[] = {
    PORT("CLIP", WEFT_TYPE_CLIP, "the text encoder, stopping early")};
static const weft_node_def last_layer_def = {
    .struct_size = sizeof(weft_node_def), .op = "CLIPSetLastLayer",
    .category = "conditioning",
    .doc = "Uses the output of an earlier text-encoder layer (clip skip).",
    .inputs = clip_in, .n_inputs = 1, .outputs = clip_out, .n_outputs = 1,
    .params = last_layer_params, .n_params = 1,
    .flags = WEFT_NODE_INLINE, .run = clip_set_last_layer_run};

static const weft_port_def tokenize_in[] = {
    {sizeof(weft_port_def), "clip", WEFT_TYPE_CLIP, NULL, WEFT_PORT_OPTIONAL,
     "the model's text encoder (default: the CLIP vocabulary)"},
};
static const char *const tokenize_formats[] = {"text", "json", NULL};
static const weft_param_def tokenize_params[] = {
    P_STR("text", "", WEFT_PARAM_MULTILINE, "the prompt"),
    P_ENUM("format", 0, tokenize_formats,
           "text: a line per 77-token chunk; json: one object"),
};
static const weft_port_def tokenize_out[] = {
    PORT("tokens", WEFT_TYPE_STRING, "the chunks' token ids and weights")};
static const weft_node_def tokenize_def = {
    .struct_size = sizeof(weft_node_def), .op = "CLIPTokenize",
    .category = "conditioning",
    .doc = "Shows how a prompt is tokenized: the ids of each 77-token chunk "
           "and the weights the emphasis syntax gives (weft tokenize).",
    .inputs = tokenize_in, .n_inputs = 1, .outputs = tokenize_out,
    .n_outputs = 1, .params = tokenize_params, .n_params = 2,
    .run = clip_tokenize_run};

static const weft_param_def empty_params[] = {
    P_INT("width", 512, 16, 16384, "image width in pixels (multiple of 8)"),
    P_INT("height", 512, 16, 16384, "image height in pixels (multiple of 8)"),
    P_INT("batch_size", 1, 1, 4096, "images per batch"),
};
static const weft_port_def latent_out[] = {
    PORT("LATENT", WEFT_TYPE_LATENT, "a latent [batch, 4, height/8, width/8]")};
static const weft_port_def sampled_out[] = {
    SD_PORT_DEV("LATENT", WEFT_TYPE_LATENT,
                "the denoised latent (on the model's device when it runs on "
                "one)")};
static const weft_node_def empty_def = {
    .struct_size = sizeof(weft_node_def), .op = "EmptyLatentImage",
    .category = "latent",
    .doc = "An all-zero latent of the given size, to sample from.",
    .outputs = latent_out, .n_outputs = 1, .params = empty_params,
    .n_params = 3, .run = empty_latent_run};

static const weft_port_def ks_in[] = {
    PORT("model", WEFT_TYPE_MODEL, "the denoiser"),
    PORT("positive", WEFT_TYPE_CONDITIONING, "what to draw"),
    PORT("negative", WEFT_TYPE_CONDITIONING, "what to avoid"),
    PORT("latent_image", WEFT_TYPE_LATENT, "the starting latent"),
};
static const char *const sampler_choices[] = {
    "euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms",
    "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_sde", "ddim", "ddpm", "uni_pc", NULL};
static const char *const scheduler_choices[] = {
    "normal", "karras", "exponential", "sgm_uniform", "simple",
    "ddim_uniform", "beta", NULL};
static const weft_param_def ks_params[] = {
    [KS_SEED] = P_INT("seed", 0, 0, 18446744073709551615.0,
                      "noise seed (torch.manual_seed, as ComfyUI)"),
    [KS_STEPS] = P_INT("steps", 20, 1, 10000, "sampling steps"),
    [KS_CFG] = P_FLOAT("cfg", 8.0, 0.0, 100.0, "classifier-free guidance"),
    [KS_SAMPLER] = P_ENUM("sampler_name", 0, sampler_choices, "sampler"),
    [KS_SCHEDULER] = P_ENUM("scheduler", 0, scheduler_choices,
                            "noise schedule"),
    [KS_DENOISE] = P_FLOAT("denoise", 1.0, 0.0, 1.0,
                           "how much of the schedule to run (img2img < 1)"),
};
static const weft_node_def ksampler_def = {
    .struct_size = sizeof(weft_node_def), .op = "KSampler",
    .category = "sampling",
    .doc = "Denoises a latent with ComfyUI's samplers and schedulers; the "
           "same seed gives ComfyUI's starting noise.",
    .inputs = ks_in, .n_inputs = 4, .outputs = sampled_out, .n_outputs = 1,
    .params = ks_params, .n_params = 6, .flags = WEFT_NODE_DEVICE,
    .plan = ksampler_plan, .run = ksampler_run};

static const char *const enable_disable[] = {"enable", "disable", NULL};
static const char *const disable_enable[] = {"disable", "enable", NULL};
static const weft_param_def ka_params[] = {
    [KA_ADD_NOISE] = P_ENUM("add_noise", 0, enable_disable,
                            "start from noise (disable: continue a latent)"),
    [KA_SEED] = P_INT("noise_seed", 0, 0, 18446744073709551615.0,
                      "noise seed"),
    [KA_STEPS] = P_INT("steps", 20, 1, 10000, "steps of the whole schedule"),
    [KA_CFG] = P_FLOAT("cfg", 8.0, 0.0, 100.0, "classifier-free guidance"),
    [KA_SAMPLER] = P_ENUM("sampler_name", 0, sampler_choices, "sampler"),
    [KA_SCHEDULER] = P_ENUM("scheduler", 0, scheduler_choices,
                            "noise schedule"),
    [KA_START] = P_INT("start_at_step", 0, 0, 10000, "first step to run"),
    [KA_END] = P_INT("end_at_step", 10000, 0, 10000, "step to stop at"),
    [KA_LEFTOVER] = P_ENUM("return_with_leftover_noise", 0, disable_enable,
                           "enable: stop without denoising fully"),
};
static const weft_node_def ksampler_adv_def = {
    .struct_size = sizeof(weft_node_def), .op = "KSamplerAdvanced",
    .category = "sampling",
    .doc = "KSampler over a window of the schedule (start/end step), with "
           "optional noise and leftover noise, for multi-stage graphs.",
    .inputs = ks_in, .n_inputs = 4, .outputs = sampled_out, .n_outputs = 1,
    .params = ka_params, .n_params = 9, .flags = WEFT_NODE_DEVICE,
    .plan = ksampler_adv_plan, .run = ksampler_adv_run};

static const weft_port_def decode_in[] = {
    SD_PORT_DEV("samples", WEFT_TYPE_LATENT,
                "the latent (read on the VAE's device when it runs on one)"),
    PORT("vae", WEFT_TYPE_VAE, "the autoencoder"),
};
static const weft_port_def decode_tiled_in[] = {
    PORT("samples", WEFT_TYPE_LATENT, "the latent"),
    PORT("vae", WEFT_TYPE_VAE, "the autoencoder"),
};
static const weft_port_def image_out[] = {
    PORT("IMAGE", WEFT_TYPE_IMAGE, "images [batch, height, width, 3] in 0..1")};
static const weft_node_def decode_def = {
    .struct_size = sizeof(weft_node_def), .op = "VAEDecode",
    .category = "latent", .doc = "Decodes latents into images.",
    .inputs = decode_in, .n_inputs = 2, .outputs = image_out, .n_outputs = 1,
    .flags = WEFT_NODE_DEVICE, .plan = vae_decode_plan, .run = vae_decode_run};

static const weft_port_def encode_in[] = {
    PORT("pixels", WEFT_TYPE_IMAGE, "images [batch, height, width, C]"),
    PORT("vae", WEFT_TYPE_VAE, "the autoencoder"),
};
static const weft_node_def vae_encode_def = {
    .struct_size = sizeof(weft_node_def), .op = "VAEEncode",
    .category = "latent",
    .doc = "Encodes images into latents (the posterior's mean), cropping to "
           "a multiple of 8 pixels.",
    .inputs = encode_in, .n_inputs = 2, .outputs = latent_out, .n_outputs = 1,
    .plan = vae_encode_plan, .run = vae_encode_run};

static const weft_param_def decode_tiled_params[] = {
    [VT_TILE] = P_INT("tile_size", 512, 64, 4096, "tile side in pixels"),
    [VT_OVERLAP] = P_INT("overlap", 64, 0, 4096,
                         "pixels tiles share (at most tile_size / 4)"),
    [VT_TSIZE] = P_INT("temporal_size", 64, 8, 4096, "video models only"),
    [VT_TOVERLAP] = P_INT("temporal_overlap", 8, 4, 4096, "video models only"),
};
static const weft_node_def decode_tiled_def = {
    .struct_size = sizeof(weft_node_def), .op = "VAEDecodeTiled",
    .category = "_for_testing",
    .doc = "Decodes latents tile by tile (three overlapping tilings "
           "averaged, as ComfyUI), so large images fit in bounded memory.",
    .inputs = decode_tiled_in, .n_inputs = 2, .outputs = image_out, .n_outputs = 1,
    .params = decode_tiled_params, .n_params = 4, .run = vae_decode_tiled_run,
    .plan = vae_decode_tiled_plan};

static const weft_param_def encode_tiled_params[] = {
    [VE_TILE] = P_INT("tile_size", 512, 64, 4096, "tile side in pixels"),
    [VE_OVERLAP] = P_INT("overlap", 64, 0, 4096, "pixels tiles share"),
    [VE_TSIZE] = P_INT("temporal_size", 64, 8, 4096, "video models only"),
    [VE_TOVERLAP] = P_INT("temporal_overlap", 8, 4, 4096, "video models only"),
};
static const weft_node_def encode_tiled_def = {
    .struct_size = sizeof(weft_node_def), .op = "VAEEncodeTiled",
    .category = "_for_testing",
    .doc = "Encodes images tile by tile (three tilings averaged).",
    .inputs = encode_in, .n_inputs = 2, .outputs = latent_out, .n_outputs = 1,
    .params = encode_tiled_params, .n_params = 4, .run = vae_encode_tiled_run,
    .plan = vae_encode_tiled_plan};

static const weft_port_def inpaint_in[] = {
    PORT("pixels", WEFT_TYPE_IMAGE, "images [batch, height, width, C]"),
    PORT("vae", WEFT_TYPE_VAE, "the autoencoder"),
    PORT("mask", WEFT_TYPE_MASK, "1 where the image is to be repainted"),
};
static const weft_param_def inpaint_params[] = {
    [VI_GROW] = P_INT("grow_mask_by", 6, 0, 64,
                      "pixels the noise mask grows, for seamless edges"),
};
static const weft_node_def encode_inpaint_def = {
    .struct_size = sizeof(weft_node_def), .op = "VAEEncodeForInpaint",
    .category = "latent/inpaint",
    .doc = "Encodes an image for inpainting: masked pixels are set to grey "
           "and the grown mask becomes the latent's noise mask.",
    .inputs = inpaint_in, .n_inputs = 3, .outputs = latent_out,
    .n_outputs = 1, .params = inpaint_params, .n_params = 1,
    .plan = vae_encode_inpaint_plan, .run = vae_encode_inpaint_run};

static const weft_node_def *const nodes[] = {
    &loader_def,   &encode_def,       &last_layer_def, &empty_def,
    &ksampler_def, &ksampler_adv_def, &decode_def,     &vae_encode_def,
    &tokenize_def, &lora_def,         &lora_model_only_def,
    &sd_latent_upscale_def, &sd_latent_upscale_by_def,
    &sd_set_noise_mask_def, &decode_tiled_def,  &encode_tiled_def,
    &encode_inpaint_def, &sd_controlnet_loader_def, &sd_controlnet_apply_def,
    &sd_controlnet_apply_adv_def};

WEFT_PLUGIN_DEFINE("sd", "0.1", nodes)
