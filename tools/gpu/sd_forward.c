/* sd_forward.c - runs one SD1.x diffusers folder's CLIP text encoder, UNet,
 * VAE decoder and (optionally) a ControlNet through weft's model code
 * (nodes/sd: sd_ckpt, sd_clip, sd_unet, sd_vae, sd_cnet) on the CPU or CUDA
 * backend: the weft half of tools/gpu/sd15_check.py (which makes the inputs
 * and diffusers' references and compares) and of tools/gpu/bench_sd15.py
 * (--bench: timings and device memory).
 *
 *   sd_forward --model DIR --in IO.safetensors --out OUT.safetensors
 *              [--device cpu|cuda] [--parts clip,unet,vae,cnet]
 *              [--control CNET_DIR] [--threads N]
 *   sd_forward --model DIR --bench OUT.json [--device cpu|cuda]
 *              [--latent 64] [--steps 20] [--reps 20] [--txt2img-reps 3]
 *              [--threads N]
 *   sd_forward --model DIR --bench-graph GRAPH --bench OUT.json
 *              [--device cpu|cuda] [--latent 64] [--steps 20]
 *              [--txt2img-reps 3]
 *
 * Inputs (all F32 but the ids):
 *   clip.input_ids  I64 [b, 77]
 *   unet.x [b, 4, h, w], unet.t [b], unet.ctx [b, tokens, dim]
 *   vae.z [1, 4, h, w] (unscaled: what diffusers' vae.decode takes)
 *   cnet.x [b, 4, h, w], cnet.t [b], cnet.ctx [b, tokens, dim],
 *   cnet.hint [b, 3, 8h, 8w] in 0..1 (part cnet, with --control)
 * Outputs: clip.last_hidden_state [b, 77, hidden], clip.pooled [b, hidden],
 * unet.out [b, 4, h, w], vae.image [1, 3, 8h, 8w], cnet.down.I [b, n/b]
 * (the residuals at strength 1, flattened per row, I = 0..11 for SD1.x),
 * cnet.mid [b, n/b] and cnet.unet_out [b, 4, h, w] (the UNet on cnet.x with
 * those residuals); metadata: the device, the precision and each part's
 * load and forward seconds.  The file is rewritten after each part, so a
 * later failure leaves the earlier outputs.
 *
 * --bench loads the three models once and times, in this order: txt2img
 * as the graph does it (two 77-token prompts encoded one at a time, --steps
 * Euler steps at CFG 7.5 with the UNet at batch 2 through the planned
 * denoiser KSampler uses (one arena, CUDA graphs unless WEFT_GRAPHS=0),
 * VAE decode; the median of --txt2img-reps after one warm-up), the UNet
 * alone at batch 2 (host inputs, the text context copied in too), a
 * sampler step (that denoiser at CFG 7.5: the UNet at batch 2 on the kept
 * context, the latents in and out) and the VAE decode at batch 1 (medians
 * of --reps after 3 warm-ups), and the text encoder at batch 2; every time
 * is wall-clock between backend
 * synchronizations (the forward passes copy their outputs to the host,
 * which waits for the device).  Device memory: weft's allocator statistics
 * (peak bytes handed out, peak reserved from the driver) and
 * cudaMemGetInfo's used bytes (total - free: the whole device, the CUDA
 * context included), after the loads, after txt2img and at the end.  The
 * models go to the device as the graph's loader puts them there (one
 * sd_vram without a budget: 16-bit matrices in fp16/bf16, stacked
 * attention products); the other parts (--parts) take sd_*_to_backend's
 * fp32 weights, which the products round on the fly.
 *
 * --bench-graph runs GRAPH (graphs/txt2img.yaml) in this process as `weft
 * run` does, through the plugins (CheckpointLoaderSimple keeps 16-bit
 * matrices in fp16/bf16 precision): a first run, the checkpoint's load
 * included, then --txt2img-reps warm runs with a new prompt and seed each;
 * total and per-node seconds (medians) and cudaMemGetInfo's used bytes.
 * Exit status 0, 1 when a part failed, 2 for bad arguments. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime_api.h>

#include "kernels/cuda/cuda.h"
#include "samplers.h"
#include "schedule.h"
#include "sd.h"
#include "sd_device.h"
#include "sd_layers.h"
#include "sd_plan.h"
#include "weft/safetensors.h"
#include "weft/weft.h"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* The backend's precision ("fp32", "fp16", "bf16") when this libweft has
 * precision modes (weft_cuda_get_precision), else "fp32" (the CUDA
 * backend's only mode before them).  Weak references under other names, so
 * that sd_forward builds and runs against either backend. */
extern int weft__sdf_get_precision(const weft_backend *be) __asm__(
    "weft_cuda_get_precision") __attribute__((weak));
extern const char *
weft__sdf_precision_name(int p) __asm__("weft_cuda_precision_name")
    __attribute__((weak));

/* 16-bit activations (weft_cuda_set_act_auto) where this libweft has
 * them. */
extern int
weft__sdf_set_act_auto(weft_backend *be) __asm__("weft_cuda_set_act_auto")
    __attribute__((weak));

static const char *precision_name(const weft_backend *be) {
  if (!weft_backend_is_cuda(be)) return "fp32";
  if (!weft__sdf_get_precision || !weft__sdf_precision_name)
    return "fp32 (no precision modes in this build)";
  return weft__sdf_precision_name(weft__sdf_get_precision(be));
}

/* ---- the model folder ------------------------------------------------------
 */

static int st_get(void *h, const char *key, weft_tensor *v) {
  const weft_st_tensor *t = weft_st_find(h, key);
  return t ? weft_st_view(t, v) : WEFT_ENOENT;
}
static const char *st_meta(void *h, const char *k) {
  return weft_st_meta(h, k);
}
static int32_t st_count(void *h) {
  return weft_st_count(h);
}
static const char *st_key(void *h, int32_t i) {
  return weft_st_at(h, i)->key;
}

/* the whole file as a string (caller frees), NULL when unreadable */
static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *s = NULL;
  long n = -1;
  if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
  if (n >= 0 && fseek(f, 0, SEEK_SET) == 0) s = malloc((size_t)n + 1);
  if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
    free(s);
    s = NULL;
  }
  if (s) s[n] = 0;
  fclose(f);
  return s;
}

typedef struct folder {
  sd_ckpt ck;
  weft_st_file *files[SD_PARTS];
  char *json[SD_PARTS];
  weft_st_file *control; /* --control's weights, or NULL */
} folder;

/* Opens DIR/{unet,vae,text_encoder} as nodes/sd's CheckpointLoaderSimple
 * does for a diffusers folder; 0 or 1 (message printed). */
static int folder_open(folder *m, const char *dir) {
  static const char *const sub[SD_PARTS] = {"unet", "vae", "text_encoder"};
  static const char *const file[SD_PARTS] = {
      "diffusion_pytorch_model.safetensors",
      "diffusion_pytorch_model.safetensors", "model.safetensors"};
  memset(m, 0, sizeof *m);
  m->ck.layout = SD_LAYOUT_DIFFUSERS;
  for (int p = 0; p < SD_PARTS; p++) {
    char path[4096], err[1024];
    snprintf(path, sizeof path, "%s/%s/%s", dir, sub[p], file[p]);
    if (weft_st_open(path, &m->files[p], err, sizeof err)) {
      fprintf(stderr, "sd_forward: %s\n", err);
      return 1;
    }
    m->ck.files[p] = (sd_file){m->files[p], st_get, st_meta,
                               st_count,    st_key, weft_st_path(m->files[p])};
    m->ck.has[p] = true;
    snprintf(path, sizeof path, "%s/%s/config.json", dir, sub[p]);
    if (!(m->json[p] = slurp(path))) {
      fprintf(stderr, "sd_forward: cannot read %s\n", path);
      return 1;
    }
  }
  if (sd_ckpt_configure(&m->ck, (const char *const *)m->json)) {
    fprintf(stderr, "sd_forward: %s: %s\n", dir, m->ck.err);
    return 1;
  }
  return 0;
}

/* A diffusers ControlNet folder (config.json and
 * diffusion_pytorch_model.safetensors, what ControlNetLoader reads) into
 * the checkpoint's control slot; 0 or 1 (message printed). */
static int control_open(folder *m, const char *dir) {
  char path[4096], err[1024];
  snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dir);
  if (weft_st_open(path, &m->control, err, sizeof err)) {
    fprintf(stderr, "sd_forward: %s\n", err);
    return 1;
  }
  m->ck.files[SD_CONTROL] = (sd_file){
      m->control, st_get, st_meta, st_count, st_key, weft_st_path(m->control)};
  m->ck.has[SD_CONTROL] = true;
  snprintf(path, sizeof path, "%s/config.json", dir);
  char *json = slurp(path);
  if (!json) {
    fprintf(stderr, "sd_forward: cannot read %s\n", path);
    return 1;
  }
  int r = sd_ckpt_configure_control(&m->ck, json);
  free(json);
  if (r) {
    fprintf(stderr, "sd_forward: %s: %s\n", dir, m->ck.err);
    return 1;
  }
  return 0;
}

static void folder_close(folder *m) {
  sd_ckpt_release(&m->ck);
  sd_ckpt_free_params(&m->ck);
  for (int p = 0; p < SD_PARTS; p++) {
    if (m->files[p]) weft_st_close(m->files[p]);
    free(m->json[p]);
  }
  if (m->control) weft_st_close(m->control);
}

/* ---- inputs and outputs
 * ------------------------------------------------------ */

/* A tensor of the input file with the given dtype and rank; its shape in
 * shape[] and its data copied into a malloc'd array (caller frees), or NULL
 * (message printed). */
static void *input(weft_st_file *f, const char *key, weft_st_dtype dt, int ndim,
                   int64_t shape[]) {
  const weft_st_tensor *t = weft_st_find(f, key);
  if (!t) {
    fprintf(stderr, "sd_forward: %s: no tensor '%s'\n", weft_st_path(f), key);
    return NULL;
  }
  if (t->dtype != dt || t->ndim != ndim) {
    fprintf(stderr,
            "sd_forward: %s: '%s' is %s with %d dims, expected %s "
            "with %d\n",
            weft_st_path(f), key, weft_st_dtype_name(t->dtype), t->ndim,
            weft_st_dtype_name(dt), ndim);
    return NULL;
  }
  for (int i = 0; i < ndim; i++)
    shape[i] = t->shape[i];
  void *d = malloc(t->nbytes ? t->nbytes : 1);
  if (d) memcpy(d, t->data, t->nbytes);
  return d;
}

/* The outputs so far: arrays owned here until the end (the writer borrows
 * them). */
typedef struct outputs {
  weft_st_writer *w;
  void *keep[64];
  int n;
  const char *path;
} outputs;

/* Adds an output; data (malloc'd) is the outputs' from now on, freed at
 * the end even when adding fails. */
static int out_add(outputs *o, const char *key, float *data, int ndim,
                   const int64_t *shape) {
  if (o->n >= 64) {
    free(data);
    return WEFT_ENOMEM;
  }
  o->keep[o->n++] = data;
  return weft_st_writer_add(o->w, key, WEFT_ST_F32, ndim, shape, data);
}

static void out_meta_seconds(outputs *o, const char *key, double s) {
  char v[64];
  snprintf(v, sizeof v, "%.4f", s);
  weft_st_writer_meta(o->w, key, v);
}

static int out_save(outputs *o) {
  char err[1024];
  int r = weft_st_writer_save(o->w, o->path, err, sizeof err);
  if (r) fprintf(stderr, "sd_forward: %s\n", err);
  return r;
}

/* ---- the parts
 * ------------------------------------------------------------------ */

static int report(const char *what, int r, weft_backend *be, sd_ckpt *ck) {
  if (!r) return 0;
  const char *why = weft_backend_is_cuda(be) ? weft_cuda_last_error(be) : "";
  fprintf(stderr, "sd_forward: %s failed (%s)%s%s%s%s\n", what,
          weft_strerror(r), *ck->err ? ": " : "", ck->err, *why ? ": " : "",
          why);
  return 1;
}

static int run_clip(folder *m, weft_backend *be, weft_st_file *in, outputs *o) {
  int64_t s[2];
  int64_t *ids64 = input(in, "clip.input_ids", WEFT_ST_I64, 2, s);
  if (!ids64) return 1;
  double t0 = now();
  sd_clip *clip = NULL;
  int r = sd_clip_load(&m->ck, &clip);
  if (!r) r = sd_clip_to_backend(clip, be);
  if (report("loading the text encoder", r, be, &m->ck)) {
    sd_clip_free(clip);
    free(ids64);
    return 1;
  }
  double t1 = now();
  int64_t D = sd_clip_config(clip)->hidden;
  int32_t *ids = malloc((size_t)(s[0] * s[1]) * sizeof *ids);
  float *hidden = malloc((size_t)(s[0] * s[1] * D) * sizeof *hidden);
  float *pooled = malloc((size_t)(s[0] * D) * sizeof *pooled);
  for (int64_t i = 0; i < s[0] * s[1]; i++)
    ids[i] = (int32_t)ids64[i];
  r = sd_clip_forward(clip, be, ids, s[0], 0, hidden, pooled);
  double t2 = now();
  free(ids64), free(ids);
  int bad = report("the text encoder's forward pass", r, be, &m->ck);
  if (!bad) {
    int64_t hs[3] = {s[0], s[1], D}, ps[2] = {s[0], D};
    out_add(o, "clip.last_hidden_state", hidden, 3, hs);
    out_add(o, "clip.pooled", pooled, 2, ps);
    out_meta_seconds(o, "clip.load_s", t1 - t0);
    out_meta_seconds(o, "clip.forward_s", t2 - t1);
    fprintf(stderr, "clip: batch %lld, load %.2f s, forward %.3f s\n",
            (long long)s[0], t1 - t0, t2 - t1);
  } else {
    free(hidden), free(pooled);
  }
  sd_clip_free(clip);
  return bad;
}

static int run_unet(folder *m, weft_backend *be, weft_st_file *in, outputs *o) {
  int64_t xs[4], ts[1], cs[3];
  float *x = input(in, "unet.x", WEFT_ST_F32, 4, xs);
  float *t = input(in, "unet.t", WEFT_ST_F32, 1, ts);
  float *ctx = input(in, "unet.ctx", WEFT_ST_F32, 3, cs);
  if (!x || !t || !ctx || ts[0] != xs[0] || cs[0] != xs[0]) {
    if (x && t && ctx)
      fprintf(stderr, "sd_forward: unet.x, unet.t and unet.ctx disagree on "
                      "the batch\n");
    free(x), free(t), free(ctx);
    return 1;
  }
  double t0 = now();
  sd_unet *unet = NULL;
  int r = sd_unet_load(&m->ck, &unet);
  if (!r) r = sd_unet_to_backend(unet, be);
  if (report("loading the UNet", r, be, &m->ck)) {
    sd_unet_free(unet);
    free(x), free(t), free(ctx);
    return 1;
  }
  double t1 = now();
  int64_t oc = sd_unet_config(unet)->out_channels;
  int64_t os[4] = {xs[0], oc, xs[2], xs[3]};
  float *out = malloc((size_t)(os[0] * os[1] * os[2] * os[3]) * sizeof *out);
  r = sd_unet_forward(unet, be, x, xs[0], xs[2], xs[3], t, ctx, cs[1], NULL,
                      out);
  double t2 = now();
  int bad = report("the UNet's forward pass", r, be, &m->ck);
  /* a second call: the time without first-use costs (cuDNN plans, caches) */
  double t3 = t2;
  if (!bad) {
    r = sd_unet_forward(unet, be, x, xs[0], xs[2], xs[3], t, ctx, cs[1], NULL,
                        out);
    t3 = now();
    bad = report("the UNet's second forward pass", r, be, &m->ck);
  }
  free(x), free(t), free(ctx);
  if (!bad) {
    out_add(o, "unet.out", out, 4, os);
    out_meta_seconds(o, "unet.load_s", t1 - t0);
    out_meta_seconds(o, "unet.forward_s", t2 - t1);
    out_meta_seconds(o, "unet.forward2_s", t3 - t2);
    fprintf(stderr,
            "unet: batch %lld, %lldx%lld, load %.2f s, forward %.3f "
            "s, again %.3f s\n",
            (long long)xs[0], (long long)xs[2], (long long)xs[3], t1 - t0,
            t2 - t1, t3 - t2);
  } else {
    free(out);
  }
  sd_unet_free(unet);
  return bad;
}

static int run_vae(folder *m, weft_backend *be, weft_st_file *in, outputs *o) {
  int64_t zs[4];
  float *z = input(in, "vae.z", WEFT_ST_F32, 4, zs);
  if (!z) return 1;
  double t0 = now();
  sd_vae *vae = NULL;
  int r = sd_vae_load(&m->ck, &vae);
  if (!r) r = sd_vae_to_backend(vae, be);
  if (report("loading the VAE", r, be, &m->ck)) {
    sd_vae_free(vae);
    free(z);
    return 1;
  }
  double t1 = now();
  int64_t f = sd_vae_factor(vae);
  int64_t is[4] = {zs[0], sd_vae_config(vae)->out_channels, zs[2] * f,
                   zs[3] * f};
  float *img = malloc((size_t)(is[0] * is[1] * is[2] * is[3]) * sizeof *img);
  r = sd_vae_decode(vae, be, z, zs[0], zs[2], zs[3], img);
  double t2 = now();
  free(z);
  int bad = report("the VAE decoder", r, be, &m->ck);
  if (!bad) {
    out_add(o, "vae.image", img, 4, is);
    out_meta_seconds(o, "vae.load_s", t1 - t0);
    out_meta_seconds(o, "vae.decode_s", t2 - t1);
    fprintf(stderr,
            "vae: decode %lldx%lld -> %lldx%lld, load %.2f s, "
            "decode %.3f s\n",
            (long long)zs[2], (long long)zs[3], (long long)is[2],
            (long long)is[3], t1 - t0, t2 - t1);
  } else {
    free(img);
  }
  sd_vae_free(vae);
  return bad;
}

/* The ControlNet on cnet.x / cnet.t / cnet.ctx / cnet.hint at strength 1,
 * then the UNet on the same inputs with those residuals. */
static int run_cnet(folder *m, weft_backend *be, weft_st_file *in, outputs *o) {
  int64_t xs[4], ts[1], cs[3], hs[4];
  float *x = input(in, "cnet.x", WEFT_ST_F32, 4, xs);
  float *t = input(in, "cnet.t", WEFT_ST_F32, 1, ts);
  float *ctx = input(in, "cnet.ctx", WEFT_ST_F32, 3, cs);
  float *hint = input(in, "cnet.hint", WEFT_ST_F32, 4, hs);
  float *uout = NULL;
  sd_cnet *cn = NULL;
  sd_unet *unet = NULL;
  sd_cnet_out co;
  memset(&co, 0, sizeof co);
  int bad = 1;
  if (!x || !t || !ctx || !hint) goto done;
  if (ts[0] != xs[0] || cs[0] != xs[0] || hs[0] != xs[0] || hs[1] != 3) {
    fprintf(stderr, "sd_forward: cnet.x, cnet.t, cnet.ctx and cnet.hint "
                    "disagree on the batch (or the hint is not RGB)\n");
    goto done;
  }
  double t0 = now();
  int r = sd_cnet_load(&m->ck, &cn);
  if (!r) r = sd_cnet_to_backend(cn, be);
  if (report("loading the ControlNet", r, be, &m->ck)) goto done;
  const int64_t f = sd_cnet_hint_factor(cn);
  if (hs[2] != xs[2] * f || hs[3] != xs[3] * f) {
    fprintf(stderr, "sd_forward: cnet.hint is %lldx%lld, expected %lldx%lld\n",
            (long long)hs[2], (long long)hs[3], (long long)(xs[2] * f),
            (long long)(xs[3] * f));
    goto done;
  }
  double t1 = now();
  r = sd_cnet_forward(cn, be, x, xs[0], xs[2], xs[3], t, ctx, cs[1], hint, 1.0f,
                      &co);
  double t2 = now();
  if (report("the ControlNet's forward pass", r, be, &m->ck)) goto done;
  r = sd_unet_load(&m->ck, &unet);
  if (!r) r = sd_unet_to_backend(unet, be);
  if (report("loading the UNet", r, be, &m->ck)) goto done;
  int64_t us[4] = {xs[0], sd_unet_config(unet)->out_channels, xs[2], xs[3]};
  uout = malloc((size_t)(us[0] * us[1] * us[2] * us[3]) * sizeof *uout);
  if (!uout) goto done;
  sd_control ctl = {(const float *const *)co.down, co.n, co.mid};
  double t3 = now();
  r = sd_unet_forward(unet, be, x, xs[0], xs[2], xs[3], t, ctx, cs[1], &ctl,
                      uout);
  double t4 = now();
  if (report("the controlled UNet's forward pass", r, be, &m->ck)) goto done;
  bad = 0;
  for (int i = 0; i < co.n && !bad; i++) {
    char key[64];
    snprintf(key, sizeof key, "cnet.down.%d", i);
    int64_t s2[2] = {xs[0], co.down_numel[i] / xs[0]};
    bad = out_add(o, key, co.down[i], 2, s2) != 0;
    co.down[i] = NULL; /* the outputs' now */
  }
  int64_t m2[2] = {xs[0], co.mid_numel / xs[0]};
  if (!bad) {
    bad = out_add(o, "cnet.mid", co.mid, 2, m2) != 0;
    co.mid = NULL; /* the outputs' now */
  }
  if (!bad) {
    bad = out_add(o, "cnet.unet_out", uout, 4, us) != 0;
    uout = NULL;
  }
  if (!bad) {
    out_meta_seconds(o, "cnet.load_s", t1 - t0);
    out_meta_seconds(o, "cnet.forward_s", t2 - t1);
    out_meta_seconds(o, "cnet.unet_forward_s", t4 - t3);
    fprintf(stderr,
            "cnet: batch %lld, %lldx%lld, %d residuals, load %.2f s, "
            "forward %.3f s, controlled UNet %.3f s\n",
            (long long)xs[0], (long long)xs[2], (long long)xs[3], co.n, t1 - t0,
            t2 - t1, t4 - t3);
  }
done:
  sd_cnet_out_free(&co);
  sd_cnet_free(cn);
  sd_unet_free(unet);
  free(x), free(t), free(ctx), free(hint), free(uout);
  return bad;
}

/* ---- --bench
 * ------------------------------------------------------------------
 */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* median of v[0..n-1] (sorts v); NAN when n == 0 */
static double median(double *v, int n) {
  if (n <= 0) return NAN;
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int sync_be(weft_backend *be) {
  return be->iface->synchronize ? be->iface->synchronize(be) : 0;
}

/* How long the host takes to queue a UNet step whose inputs are already on
 * the device, against the whole step (queued, then waited for): a step
 * that takes no longer than its queueing is bound by the host (each op's
 * launches, library calls and bookkeeping), not by the GPU.  Medians of 5
 * after 2 warm-ups, into f. */
static int host_queue_time(FILE *f, sd_unet *unet, weft_backend *be,
                           const float *x, const float *t, const float *ctx,
                           int64_t L) {
  const sd_unet_cfg *c = sd_unet_config(unet);
  const float *xd, *td, *cd;
  float *xt = NULL, *tt = NULL, *ct = NULL;
  float *od = sd_alloc(be, 2 * c->out_channels * L * L);
  int r = od ? 0 : WEFT_ENOMEM;
  if (!r) r = sd_io_in(be, x, 2 * c->in_channels * L * L, &xd, &xt);
  if (!r) r = sd_io_in_f32(be, t, 2, &td, &tt);
  if (!r) r = sd_io_in(be, ctx, 2 * 77 * c->context_dim, &cd, &ct);
  double q[5], w[5];
  for (int rep = -2; rep < 5 && !r; rep++) {
    if ((r = sync_be(be))) break;
    sd_unet_feats feats;
    double a = now();
    r = sd_unet_encode(unet, be, xd, 2, L, L, td, cd, 77, NULL, &feats);
    if (!r) r = sd_unet_decode(unet, be, &feats, cd, 77, NULL, od);
    double b = now();
    if (!r) r = sync_be(be);
    if (rep >= 0) q[rep] = b - a, w[rep] = now() - a;
  }
  if (!r)
    fprintf(f,
            "\n### UNet step, batch 2, 64x64: host against GPU\n\n"
            "The host queues a step in %.2f ms; queued and waited for, the "
            "step takes %.2f ms (medians of 5, inputs on the device, no "
            "profiling).\n",
            1e3 * median(q, 5), 1e3 * median(w, 5));
  sd_free(be, od), sd_free(be, xt), sd_free(be, tt), sd_free(be, ct);
  return r;
}

/* Device memory now, as a JSON object into f: weft's allocator statistics
 * and cudaMemGetInfo (the whole device). */
static void json_mem(FILE *f, const char *name, weft_backend *be) {
  fprintf(f, "  \"%s\": {", name);
  weft_cuda_mem_stats st;
  if (weft_backend_is_cuda(be) && !weft_cuda_mem_stats_get(be, &st))
    fprintf(f,
            "\"weft_in_use\": %zu, \"weft_peak_in_use\": %zu, "
            "\"weft_reserved\": %zu, \"weft_peak_reserved\": %zu, "
            "\"n_malloc\": %llu, ",
            st.in_use, st.peak_in_use, st.reserved, st.peak_reserved,
            (unsigned long long)st.n_malloc);
  size_t fr = 0, tot = 0;
  if (weft_backend_is_cuda(be) && cudaMemGetInfo(&fr, &tot) == cudaSuccess)
    fprintf(f, "\"cuda_used\": %zu, \"cuda_total\": %zu, ", tot - fr, tot);
  fprintf(f, "\"ok\": true},\n");
}

/* "median": m, "min": a, "n": n of the seconds in v */
static void json_times(FILE *f, const char *name, double *v, int n) {
  double lo = NAN;
  for (int i = 0; i < n; i++)
    if (i == 0 || v[i] < lo) lo = v[i];
  double med = median(v, n);
  fprintf(f, "  \"%s\": {\"median_s\": %.6f, \"min_s\": %.6f, \"n\": %d},\n",
          name, isnan(med) ? -1.0 : med, isnan(lo) ? -1.0 : lo, n);
}

typedef struct bench_opts {
  int latent, steps, reps, t2i_reps;
} bench_opts;

/* Token ids of a short prompt and of "", padded with <|endoftext|> to 77
 * (what the graph's CLIPTextEncode feeds the model; the cost does not depend
 * on the ids). */
static void bench_ids(int32_t ids[2][77]) {
  static const int32_t words[] = {49406, 320,  8853, 539,  550,
                                  18376, 6765, 320,  4558, 49407};
  for (int i = 0; i < 77; i++) {
    ids[0][i] = i < 10 ? words[i] : 49407;
    ids[1][i] = i == 0 ? 49406 : 49407;
  }
}

/* The weights as the graph's CheckpointLoaderSimple keeps them on CUDA
 * (sd_vram_for without a budget): 16-bit matrices in fp16/bf16 precision,
 * uploaded on a copy stream, stacked attention products.  NULL on the
 * CPU (the models then take _to_backend's fp32 weights). */
static int bench_vram(weft_backend *be, sd_vram **out) {
  *out = NULL;
  if (!weft_backend_is_cuda(be)) return 0;
  sd_xfer xf;
  weft_dtype half;
  char err[256];
  int r = sd_cuda_xfer(be, &xf, &half, err, sizeof err);
  if (r) {
    fprintf(stderr, "sd_forward: no copy stream: %s\n", err);
    return r;
  }
  if (!(*out = sd_vram_new(be, UINT64_MAX, half, &xf, true))) {
    xf.free(xf.ctx);
    return WEFT_ENOMEM;
  }
  return 0;
}

static int run_bench(folder *m, weft_backend *be, const bench_opts *bo,
                     const char *json, const char *dev_name) {
  FILE *f = fopen(json, "w");
  if (!f) {
    perror(json);
    return 1;
  }
  fprintf(f, "{\n  \"device\": \"%s\",\n  \"precision\": \"%s\",\n", dev_name,
          precision_name(be));
  json_mem(f, "mem_start", be);
  int bad = 0;
  sd_clip *clip = NULL;
  sd_unet *unet = NULL;
  sd_vae *vae = NULL;
  sd_vram *vr = NULL;
  int r = bench_vram(be, &vr);
  double t0 = now();
  if (!r) r = sd_clip_load(&m->ck, &clip);
  if (!r) r = vr ? sd_clip_to_vram(clip, vr) : sd_clip_to_backend(clip, be);
  double t1 = now();
  if (!r) r = sd_unet_load(&m->ck, &unet);
  if (!r) r = vr ? sd_unet_to_vram(unet, vr) : sd_unet_to_backend(unet, be);
  double t2 = now();
  if (!r) r = sd_vae_load(&m->ck, &vae);
  if (!r) r = vr ? sd_vae_to_vram(vae, vr) : sd_vae_to_backend(vae, be);
  if (!r && vr) r = sd_vram_commit(vr);
  double t3 = now();
  if (report("loading the models", r, be, &m->ck)) {
    bad = 1;
    goto done;
  }
  fprintf(f, "  \"load_s\": {\"clip\": %.4f, \"unet\": %.4f, \"vae\": %.4f},\n",
          t1 - t0, t2 - t1, t3 - t2);
  fprintf(stderr, "bench: loaded clip %.2f s, unet %.2f s, vae %.2f s (%s)\n",
          t1 - t0, t2 - t1, t3 - t2, precision_name(be));
  json_mem(f, "mem_loaded", be);
  fflush(f);

  const int64_t L = bo->latent, D = sd_clip_config(clip)->hidden;
  const int64_t lat = 4 * L * L, img_n = 3 * (8 * L) * (8 * L);
  int32_t ids[2][77];
  bench_ids(ids);
  float *ctx = malloc((size_t)(2 * 77 * D) * sizeof *ctx);
  float *x = malloc((size_t)(2 * lat) * sizeof *x);
  float *out = malloc((size_t)(2 * lat) * sizeof *out);
  float *img = malloc((size_t)img_n * 2 * sizeof *img);
  int n_t2i = bo->t2i_reps, n = bo->reps;
  double *tt = calloc((size_t)(4 * (n_t2i + 1) + 4 * (n + 3)), sizeof *tt);
  if (!ctx || !x || !out || !img || !tt) {
    bad = 1;
    goto freeall;
  }
  /* txt2img: text (two encodes), sampling, decode, total */
  weft_schedule sched;
  weft_schedule_init(&sched, 0.00085, 0.012);
  float sig[1100];
  int ns = weft_ksampler_sigmas(&sched, "normal", "euler", bo->steps, 1.0, sig,
                                1100);
  double *tx = tt, *ts = tt + (n_t2i + 1), *td = tt + 2 * (n_t2i + 1),
         *tot = tt + 3 * (n_t2i + 1);
  int k = 0;
  for (int rep = -1; rep < n_t2i && !bad; rep++) {
    double a = now();
    r = sd_clip_forward(clip, be, ids[0], 1, 0, ctx, NULL);
    if (!r) r = sd_clip_forward(clip, be, ids[1], 1, 0, ctx + 77 * D, NULL);
    if (!r) r = sync_be(be);
    double b = now();
    sd_denoiser den;
    sd_denoise_plan dp;
    int64_t shape[4] = {1, 4, L, L};
    if (!r)
      r = sd_denoiser_init(&den, unet, be, &sched, SD_PRED_EPS, shape, 7.5f,
                           ctx + 77 * D, 77, ctx, 77);
    if (!r) {
      sd_denoise_plan_init(&dp, &den);
      for (int64_t i = 0; i < lat; i++)
        x[i] = sinf((float)i * 0.37f) * sqrtf(1.0f + sig[0] * sig[0]);
      weft_sampler_io io = {lat, sd_denoise_planned, NULL, NULL, &dp};
      r = weft_sample("euler", &io, x, sig, ns);
      sd_denoise_plan_free(&dp);
      sd_denoiser_free(&den);
    }
    if (!r) r = sync_be(be);
    double c = now();
    for (int64_t i = 0; i < lat && !r; i++)
      x[i] /= 0.18215f;
    if (!r) r = sd_vae_decode(vae, be, x, 1, L, L, img);
    if (!r) r = sync_be(be);
    double d = now();
    if (report("txt2img", r, be, &m->ck)) {
      bad = 1;
      break;
    }
    fprintf(stderr,
            "bench: txt2img %s: text %.3f s, sampling %.3f s, decode %.3f "
            "s, total %.3f s\n",
            rep < 0 ? "warm-up" : "run", b - a, c - b, d - c, d - a);
    if (rep >= 0) {
      tx[k] = b - a, ts[k] = c - b, td[k] = d - c, tot[k] = d - a;
      k++;
    }
  }
  fprintf(f,
          "  \"txt2img\": {\"latent\": %lld, \"steps\": %d, \"cfg\": 7.5},\n",
          (long long)L, bo->steps);
  json_times(f, "txt2img_text", tx, k);
  json_times(f, "txt2img_sampling", ts, k);
  json_times(f, "txt2img_decode", td, k);
  json_times(f, "txt2img_total", tot, k);
  json_mem(f, "mem_after_txt2img", be);
  fflush(f);

  /* the UNet at batch 2 (a CFG step), the VAE decode, the text encoder */
  double *tu = tt + 4 * (n_t2i + 1), *tv = tu + (n + 3), *tc = tv + (n + 3),
         *tp = tc + (n + 3);
  float tsteps[2] = {999.0f, 999.0f};
  int ku = 0, kv = 0, kc = 0, kp = 0;
  for (int64_t i = 0; i < 2 * lat; i++)
    x[i] = sinf((float)i * 0.71f);
  for (int rep = -3; rep < n && !bad; rep++) {
    if ((r = sync_be(be))) break;
    double a = now();
    r = sd_unet_forward(unet, be, x, 2, L, L, tsteps, ctx, 77, NULL, out);
    if (!r) r = sync_be(be);
    double b = now();
    if (r) break;
    if (rep >= 0) tu[ku++] = b - a;
  }
  if (report("the UNet", r, be, &m->ck)) bad = 1;
  /* a sampler step: the planned denoiser's call at one sigma, as the
   * sampler makes it (its first call records, the second captures) */
  if (!bad) {
    sd_denoiser den;
    sd_denoise_plan dp;
    const int64_t shape[4] = {1, 4, L, L};
    r = sd_denoiser_init(&den, unet, be, &sched, SD_PRED_EPS, shape, 7.5f,
                         ctx + 77 * D, 77, ctx, 77);
    const bool made = !r;
    if (made) sd_denoise_plan_init(&dp, &den);
    for (int rep = -3; rep < n && !r; rep++) {
      if ((r = sync_be(be))) break;
      double a = now();
      r = sd_denoise_planned(&dp, x, sig[0], out);
      if (!r) r = sync_be(be);
      double b = now();
      if (!r && rep >= 0) tp[kp++] = b - a;
      if (!r && rep < 0) /* recorded, captured, first launch */
        fprintf(stderr, "bench: sampler step warm-up %d: %.4f s\n", rep + 4,
                b - a);
    }
    weft_rec_stats st;
    if (!r && sd_denoise_plan_stats(&dp, 0, &st))
      fprintf(stderr,
              "bench: sampler step: %d graph segments, %llu launches, %llu "
              "failures\n",
              st.graph_segments, (unsigned long long)st.graph_launches,
              (unsigned long long)st.graph_failures);
    if (made) {
      sd_denoise_plan_free(&dp);
      sd_denoiser_free(&den);
    }
    if (report("the sampler step", r, be, &m->ck)) bad = 1;
  }
  for (int rep = -3; rep < n && !bad; rep++) {
    if ((r = sync_be(be))) break;
    double a = now();
    r = sd_vae_decode(vae, be, x, 1, L, L, img);
    if (!r) r = sync_be(be);
    double b = now();
    if (r) break;
    if (rep >= 0) tv[kv++] = b - a;
  }
  if (!bad && report("the VAE decoder", r, be, &m->ck)) bad = 1;
  for (int rep = -3; rep < n && !bad; rep++) {
    if ((r = sync_be(be))) break;
    double a = now();
    r = sd_clip_forward(clip, be, &ids[0][0], 2, 0, ctx, NULL);
    if (!r) r = sync_be(be);
    double b = now();
    if (r) break;
    if (rep >= 0) tc[kc++] = b - a;
  }
  if (!bad && report("the text encoder", r, be, &m->ck)) bad = 1;
  /* WEFT_BENCH_PROFILE=FILE: after the timed runs, where the GPU's time
   * goes in each, op by op (weft_cuda_profile_*), appended to FILE */
  const char *prof = getenv("WEFT_BENCH_PROFILE");
  if (!bad && prof && *prof && weft_backend_is_cuda(be)) {
    FILE *pf = fopen(prof, "a");
    if (pf) r = host_queue_time(pf, unet, be, x, tsteps, ctx, L);
    for (int part = 0; part < 3 && pf && !r; part++) {
      static const char *const title[3] = {
          "UNet step, batch 2, 64x64 latent (5 calls)",
          "VAE decode, 512x512 (3 calls)", "text encoder, 2 x 77 (5 calls)"};
      int reps = part == 1 ? 3 : 5;
      if ((r = sync_be(be)) || (r = weft_cuda_profile_start(be))) break;
      double a = now();
      for (int rep = 0; rep < reps && !r; rep++)
        r = part == 0 ? sd_unet_forward(unet, be, x, 2, L, L, tsteps, ctx, 77,
                                        NULL, out)
            : part == 1
                ? sd_vae_decode(vae, be, x, 1, L, L, img)
                : sd_clip_forward(clip, be, &ids[0][0], 2, 0, ctx, NULL);
      if (!r) r = sync_be(be);
      double b = now();
      int rp = weft_cuda_profile_report(be, pf, title[part], b - a, 40);
      if (!r) r = rp;
    }
    /* WEFT_BENCH_PROFILE_CONV=im2col,cudnn: the UNet and the VAE
     * again with each of those convolution ways (weft_cuda_set_conv_algo),
     * the default's restored after */
    const char *algos = getenv("WEFT_BENCH_PROFILE_CONV");
    static const char *const names[] = {"auto", "im2col", "cudnn"};
    for (int al = 1; pf && !r && algos && al < 3; al++) {
      if (!strstr(algos, names[al])) continue;
      if ((r = weft_cuda_set_conv_algo(be, (weft_cuda_conv_algo)al))) break;
      for (int part = 0; part < 2 && !r; part++) {
        char title[128];
        snprintf(title, sizeof title, "%s, WEFT_CUDA_CONV=%s",
                 part ? "VAE decode, 512x512 (3 calls)"
                      : "UNet step, batch 2, 64x64 latent (5 calls)",
                 names[al]);
        if ((r = sync_be(be)) || (r = weft_cuda_profile_start(be))) break;
        double a = now();
        for (int rep = 0; rep < (part ? 3 : 5) && !r; rep++)
          r = part ? sd_vae_decode(vae, be, x, 1, L, L, img)
                   : sd_unet_forward(unet, be, x, 2, L, L, tsteps, ctx, 77,
                                     NULL, out);
        if (!r) r = sync_be(be);
        double b = now();
        int rp = weft_cuda_profile_report(be, pf, title, b - a, 60);
        if (!r) r = rp;
      }
    }
    if (algos) weft_cuda_set_conv_algo(be, WEFT_CUDA_CONV_AUTO);
    if (pf) fclose(pf);
    if (report("the profile", r, be, &m->ck)) bad = 1;
  }
  fprintf(f, "  \"unet_batch\": 2,\n");
  json_times(f, "unet_step", tu, ku);
  json_times(f, "unet_step_sampler", tp, kp);
  json_times(f, "vae_decode", tv, kv);
  json_times(f, "clip_batch2", tc, kc);
  if (ku && kv && kc && kp)
    fprintf(stderr,
            "bench: unet step (batch 2) %.4f s, sampler step %.4f s, vae "
            "decode %.4f s, text encoder (batch 2) %.4f s (medians of %d)\n",
            tu[ku / 2], tp[kp / 2], tv[kv / 2], tc[kc / 2], n);
freeall:
  free(ctx), free(x), free(out), free(img), free(tt);
done:
  json_mem(f, "mem_end", be);
  fprintf(f, "  \"ok\": %s\n}\n", bad ? "false" : "true");
  fclose(f);
  sd_clip_free(clip), sd_unet_free(unet), sd_vae_free(vae);
  sd_vram_release(vr);
  return bad;
}

/* ---- --bench-graph ----------------------------------------------------------
 */

/* The node times of one run, summed per op (ms), and a failure's message. */
enum { GOPS = 5 };
static const char *const graph_ops[GOPS] = {"CheckpointLoaderSimple",
                                            "CLIPTextEncode", "KSampler",
                                            "VAEDecode", "SaveImage"};
typedef struct graph_run {
  double ms[GOPS];
  char failed[512];
} graph_run;

static void on_graph_event(const weft_event *e, void *user) {
  graph_run *g = user;
  if (e->kind == WEFT_EV_NODE_FAILED && e->message && !g->failed[0])
    snprintf(g->failed, sizeof g->failed, "%s: %s",
             e->node_id ? e->node_id : "?", e->message);
  if (e->kind != WEFT_EV_NODE_DONE || !e->op) return;
  for (int i = 0; i < GOPS; i++)
    if (!strcmp(e->op, graph_ops[i])) g->ms[i] += e->ms;
}

/* cudaMemGetInfo's used bytes as a JSON member ("" off CUDA). */
static void json_cuda_used(FILE *f, const char *name) {
  size_t fr = 0, tot = 0;
  if (cudaMemGetInfo(&fr, &tot) == cudaSuccess)
    fprintf(f, "  \"%s\": %zu,\n", name, tot - fr);
}

/* graphs/txt2img.yaml (or GRAPH) run in this process as `weft run` runs it
 * (the plugins' CheckpointLoaderSimple: the weights as the plugin keeps
 * them, 16-bit matrices in fp16/bf16 precision): a first run (the
 * checkpoint's load included), then --txt2img-reps warm runs, each with a
 * new prompt and seed (the "" negative stays cached, as in a session). */
static int run_graph_bench(const char *graph, const char *model,
                           const char *device, const bench_opts *bo,
                           int threads, const char *json) {
  FILE *f = fopen(json, "w");
  if (!f) {
    perror(json);
    return 1;
  }
  setenv("WEFT_DEVICE", device, 1);
  bool cuda = !strcmp(device, "cuda");
  fprintf(f, "{\n  \"graph\": \"%s\",\n  \"device\": \"%s\",\n", graph, device);
  if (cuda) json_cuda_used(f, "cuda_used_start");
  char outdir[] = "/tmp/sd_forward_graph_XXXXXX";
  weft_ctx *ctx = NULL;
  weft_graph *g = NULL;
  int r = mkdtemp(outdir) ? 0 : WEFT_EIO;
  if (!r) r = weft_ctx_new(&ctx);
  if (!r && threads > 0) weft_ctx_set_threads(ctx, threads);
  if (!r) r = weft_plugin_load_default(ctx, NULL);
  if (!r) r = weft_ctx_set_output_dir(ctx, outdir);
  if (!r) r = weft_graph_load(ctx, graph, &g);
  char v[64];
  const int64_t px = 8 * (int64_t)bo->latent;
  struct {
    const char *k;
    const char *v;
  } fixed[] = {{"ckpt", model},         {"negative", ""},
               {"cfg", "7.5"},          {"sampler", "euler"},
               {"scheduler", "normal"}, {"prefix", "bench"}};
  for (size_t i = 0; !r && i < sizeof fixed / sizeof fixed[0]; i++)
    r = weft_graph_set_input(ctx, g, fixed[i].k, fixed[i].v);
  snprintf(v, sizeof v, "%d", bo->steps);
  if (!r) r = weft_graph_set_input(ctx, g, "steps", v);
  snprintf(v, sizeof v, "%lld", (long long)px);
  if (!r) r = weft_graph_set_input(ctx, g, "width", v);
  if (!r) r = weft_graph_set_input(ctx, g, "height", v);
  int n = bo->t2i_reps;
  double *tot = calloc((size_t)n + 1, sizeof *tot);
  double *node = calloc((size_t)(GOPS * (n + 1)), sizeof *node);
  if (!tot || !node) r = WEFT_ENOMEM;
  graph_run gr;
  weft_ctx_set_event_cb(ctx, on_graph_event, &gr);
  int k = 0;
  for (int rep = -1; rep < n && !r; rep++) {
    char prompt[160], seed[32];
    snprintf(prompt, sizeof prompt,
             "a photograph of an astronaut riding a horse, take %d", rep + 1);
    snprintf(seed, sizeof seed, "%d", 42 + rep + 1);
    if ((r = weft_graph_set_input(ctx, g, "prompt", prompt)) ||
        (r = weft_graph_set_input(ctx, g, "seed", seed)))
      break;
    memset(&gr, 0, sizeof gr);
    double a = now();
    r = weft_graph_run(ctx, g);
    double b = now();
    if (r) break;
    fprintf(stderr,
            "bench-graph: %s run %.3f s (load %.3f, text %.3f, sampling "
            "%.3f, decode %.3f, save %.3f)\n",
            rep < 0 ? "first" : "warm", b - a, gr.ms[0] / 1000, gr.ms[1] / 1000,
            gr.ms[2] / 1000, gr.ms[3] / 1000, gr.ms[4] / 1000);
    if (rep < 0) {
      fprintf(f, "  \"first_run_s\": %.4f,\n  \"first_run_node_ms\": {", b - a);
      for (int i = 0; i < GOPS; i++)
        fprintf(f, "%s\"%s\": %.1f", i ? ", " : "", graph_ops[i], gr.ms[i]);
      fprintf(f, "},\n");
      if (cuda) json_cuda_used(f, "cuda_used_after_first");
      fflush(f);
    } else {
      tot[k] = b - a;
      for (int i = 0; i < GOPS; i++)
        node[i * (n + 1) + k] = gr.ms[i] / 1000;
      k++;
    }
  }
  if (r)
    fprintf(stderr, "sd_forward: %s: %s%s%s\n", graph,
            ctx ? weft_ctx_error(ctx) : weft_strerror(r),
            gr.failed[0] ? "; " : "", gr.failed[0] ? gr.failed : "");
  if (k) {
    fprintf(f,
            "  \"txt2img\": {\"latent\": %lld, \"steps\": %d, \"cfg\": 7.5},\n",
            (long long)bo->latent, bo->steps);
    json_times(f, "warm_total", tot, k);
    for (int i = 0; i < GOPS; i++) {
      char key[64];
      snprintf(key, sizeof key, "warm_%s", graph_ops[i]);
      json_times(f, key, node + i * (n + 1), k);
    }
  }
  if (cuda) json_cuda_used(f, "cuda_used_end");
  if (r) {
    fprintf(f, "  \"error\": \"");
    const char *m = ctx ? weft_ctx_error(ctx) : "";
    for (; *m; m++)
      fputc(*m == '"' || *m == '\\' ? '\'' : (*m == '\n' ? ' ' : *m), f);
    fprintf(f, "\",\n");
  }
  fprintf(f, "  \"ok\": %s\n}\n", r ? "false" : "true");
  fclose(f);
  free(tot), free(node);
  weft_graph_free(g);
  weft_ctx_free(ctx);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", outdir);
  if (system(cmd) != 0)
    fprintf(stderr, "sd_forward: could not remove %s\n", outdir);
  return r ? 1 : 0;
}

static int usage(void) {
  fprintf(
      stderr,
      "usage: sd_forward --model DIR --in IO.safetensors --out "
      "OUT.safetensors [--device cpu|cuda] [--parts clip,unet,vae,cnet] "
      "[--control CNET_DIR] [--threads N]\n"
      "       sd_forward --model DIR --bench OUT.json [--device cpu|cuda] "
      "[--latent 64] [--steps 20] [--reps 20] [--txt2img-reps 3] "
      "[--threads N]\n"
      "       sd_forward --model DIR --bench-graph GRAPH --bench OUT.json "
      "[--device cpu|cuda] [--latent 64] [--steps 20] [--txt2img-reps 3]\n");
  return 2;
}

int main(int argc, char **argv) {
  const char *model = NULL, *inp = NULL, *outp = NULL, *device = "cuda";
  const char *parts = "clip,unet,vae", *control = NULL, *bench = NULL;
  const char *graph = NULL;
  int threads = 0;
  bench_opts bo = {64, 20, 20, 3};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) return usage();
    if (!strcmp(a, "--model"))
      model = v;
    else if (!strcmp(a, "--in"))
      inp = v;
    else if (!strcmp(a, "--out"))
      outp = v;
    else if (!strcmp(a, "--device"))
      device = v;
    else if (!strcmp(a, "--parts"))
      parts = v;
    else if (!strcmp(a, "--control"))
      control = v;
    else if (!strcmp(a, "--threads"))
      threads = atoi(v);
    else if (!strcmp(a, "--bench"))
      bench = v;
    else if (!strcmp(a, "--bench-graph"))
      graph = v;
    else if (!strcmp(a, "--latent"))
      bo.latent = atoi(v);
    else if (!strcmp(a, "--steps"))
      bo.steps = atoi(v);
    else if (!strcmp(a, "--reps"))
      bo.reps = atoi(v);
    else if (!strcmp(a, "--txt2img-reps"))
      bo.t2i_reps = atoi(v);
    else
      return usage();
    i++;
  }
  if (!model || (!bench && (!inp || !outp))) return usage();
  if (bo.latent < 1 || bo.steps < 1 || bo.steps > 1000 || bo.reps < 1 ||
      bo.t2i_reps < 1)
    return usage();
  if (graph && !bench) return usage();
  if (graph) return run_graph_bench(graph, model, device, &bo, threads, bench);
  if (!bench && strstr(parts, "cnet") && !control) {
    fprintf(stderr, "sd_forward: the cnet part needs --control DIR\n");
    return 2;
  }
  weft_backend *be = NULL;
  char dev_name[256] = "cpu";
  if (!strcmp(device, "cuda")) {
    char err[512] = "";
    if (!(be = weft_backend_cuda_new_ex(NULL, err, sizeof err))) {
      fprintf(stderr, "sd_forward: CUDA backend: %s\n", err);
      return 1;
    }
    if (weft__sdf_set_act_auto && weft__sdf_set_act_auto(be) != 0) {
      fprintf(stderr, "sd_forward: %s\n", weft_cuda_last_error(be));
      return 2;
    }
    snprintf(dev_name, sizeof dev_name, "cuda: %s, cuDNN %s, activations %s",
             weft_cuda_device_name(be), weft_cuda_have_cudnn(be) ? "yes" : "no",
             be->iface->struct_size > offsetof(weft_backend_iface, act_dtype) &&
                     weft_backend_act_dtype(be) != WEFT_F32
                 ? "16-bit"
                 : "fp32");
  } else if (!strcmp(device, "cpu")) {
    be = weft_backend_cpu_new(threads);
  } else {
    return usage();
  }
  if (!be) {
    fprintf(stderr, "sd_forward: cannot start the %s backend\n", device);
    return 1;
  }
  fprintf(stderr, "sd_forward: device %s, precision %s\n", dev_name,
          precision_name(be));
  folder m;
  int bad = folder_open(&m, model);
  if (!bad && control) bad = control_open(&m, control);
  if (bench) {
    if (!bad) bad = run_bench(&m, be, &bo, bench, dev_name);
    folder_close(&m);
    weft_backend_free(be);
    return bad;
  }
  char err[1024];
  weft_st_file *in = NULL;
  if (weft_st_open(inp, &in, err, sizeof err)) {
    fprintf(stderr, "sd_forward: %s\n", err);
    folder_close(&m);
    weft_backend_free(be);
    return 2;
  }
  outputs o = {.path = outp};
  if (!bad && weft_st_writer_new(&o.w)) bad = 1;
  if (!bad) {
    weft_st_writer_meta(o.w, "device", dev_name);
    weft_st_writer_meta(o.w, "precision", precision_name(be));
    weft_st_writer_meta(o.w, "model", model);
    /* each part on its own: its weights freed before the next loads */
    if (strstr(parts, "clip")) bad |= run_clip(&m, be, in, &o) || out_save(&o);
    if (strstr(parts, "unet")) bad |= run_unet(&m, be, in, &o) || out_save(&o);
    if (strstr(parts, "vae")) bad |= run_vae(&m, be, in, &o) || out_save(&o);
    if (strstr(parts, "cnet")) bad |= run_cnet(&m, be, in, &o) || out_save(&o);
    char unused[1024];
    if (sd_ckpt_unused(&m.ck, unused, sizeof unused) &&
        !strcmp(parts, "clip,unet,vae"))
      fprintf(stderr, "sd_forward: %s\n", unused);
  }
  if (weft_backend_is_cuda(be)) {
    weft_cuda_mem_stats st;
    if (!weft_cuda_mem_stats_get(be, &st))
      fprintf(
          stderr, "sd_forward: CUDA peak in use %.1f MiB, %llu cudaMalloc\n",
          (double)st.peak_in_use / 1048576.0, (unsigned long long)st.n_malloc);
  }
  weft_st_writer_free(o.w);
  for (int i = 0; i < o.n; i++)
    free(o.keep[i]);
  folder_close(&m);
  weft_st_close(in);
  weft_backend_free(be);
  return bad;
}
