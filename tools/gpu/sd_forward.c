/* sd_forward.c - runs one SD1.x diffusers folder's CLIP text encoder, UNet
 * and VAE decoder through weft's model code (nodes/sd: sd_ckpt, sd_clip,
 * sd_unet, sd_vae) on the CPU or CUDA backend, on inputs read from a
 * safetensors file, and writes the outputs to another: the weft half of
 * tools/gpu/sd15_check.py (which makes the inputs and diffusers'
 * references and compares).
 *
 *   sd_forward --model DIR --in IO.safetensors --out OUT.safetensors
 *              [--device cpu|cuda] [--parts clip,unet,vae] [--threads N]
 *
 * Inputs (all F32 but the ids):
 *   clip.input_ids  I64 [b, 77]
 *   unet.x [b, 4, h, w], unet.t [b], unet.ctx [b, tokens, dim]
 *   vae.z [1, 4, h, w] (unscaled: what diffusers' vae.decode takes)
 * Outputs: clip.last_hidden_state [b, 77, hidden], clip.pooled [b, hidden],
 * unet.out [b, 4, h, w], vae.image [1, 3, 8h, 8w]; metadata: the device and
 * each part's load and forward seconds.  The file is rewritten after each
 * part, so a later failure leaves the earlier outputs.  Exit status 0, 1
 * when a part failed, 2 for bad arguments. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/cuda/cuda.h"
#include "sd.h"
#include "sd_device.h"
#include "weft/safetensors.h"
#include "weft/weft.h"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
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

static void folder_close(folder *m) {
  sd_ckpt_release(&m->ck);
  sd_ckpt_free_params(&m->ck);
  for (int p = 0; p < SD_PARTS; p++) {
    if (m->files[p]) weft_st_close(m->files[p]);
    free(m->json[p]);
  }
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
  void *keep[16];
  int n;
  const char *path;
} outputs;

static int out_add(outputs *o, const char *key, float *data, int ndim,
                   const int64_t *shape) {
  if (o->n < 16) o->keep[o->n++] = data;
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

static int usage(void) {
  fprintf(stderr, "usage: sd_forward --model DIR --in IO.safetensors --out "
                  "OUT.safetensors [--device cpu|cuda] [--parts "
                  "clip,unet,vae] [--threads N]\n");
  return 2;
}

int main(int argc, char **argv) {
  const char *model = NULL, *inp = NULL, *outp = NULL, *device = "cuda";
  const char *parts = "clip,unet,vae";
  int threads = 0;
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
    else if (!strcmp(a, "--threads"))
      threads = atoi(v);
    else
      return usage();
    i++;
  }
  if (!model || !inp || !outp) return usage();
  weft_backend *be = NULL;
  char dev_name[256] = "cpu";
  if (!strcmp(device, "cuda")) {
    char err[512] = "";
    if (!(be = weft_backend_cuda_new_ex(NULL, err, sizeof err))) {
      fprintf(stderr, "sd_forward: CUDA backend: %s\n", err);
      return 1;
    }
    snprintf(dev_name, sizeof dev_name, "cuda: %s, cuDNN %s",
             weft_cuda_device_name(be),
             weft_cuda_have_cudnn(be) ? "yes" : "no");
  } else if (!strcmp(device, "cpu")) {
    be = weft_backend_cpu_new(threads);
  } else {
    return usage();
  }
  if (!be) {
    fprintf(stderr, "sd_forward: cannot start the %s backend\n", device);
    return 1;
  }
  fprintf(stderr, "sd_forward: device %s\n", dev_name);
  char err[1024];
  weft_st_file *in = NULL;
  if (weft_st_open(inp, &in, err, sizeof err)) {
    fprintf(stderr, "sd_forward: %s\n", err);
    weft_backend_free(be);
    return 2;
  }
  folder m;
  int bad = folder_open(&m, model);
  outputs o = {.path = outp};
  if (!bad && weft_st_writer_new(&o.w)) bad = 1;
  if (!bad) {
    weft_st_writer_meta(o.w, "device", dev_name);
    weft_st_writer_meta(o.w, "model", model);
    /* each part on its own: its weights freed before the next loads */
    if (strstr(parts, "clip")) bad |= run_clip(&m, be, in, &o) || out_save(&o);
    if (strstr(parts, "unet")) bad |= run_unet(&m, be, in, &o) || out_save(&o);
    if (strstr(parts, "vae")) bad |= run_vae(&m, be, in, &o) || out_save(&o);
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
