/* bench_sd.c - CPU time of the SD1.x model code: the tiny fixture model
 * (tests/fixtures/sd15_tiny) and SD1.5-sized networks with random weights
 * at 256x256, per UNet step (batch 2: cond + uncond), text encoding, VAE
 * decode and a whole 20-step image.  Prints a table and writes JSON.
 *   bench_sd [--json FILE] [--threads N] [--no-sd15] [--reps N] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "samplers.h"
#include "schedule.h"
#include "sd.h"
#include "weft/safetensors.h"

static double wall(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static double cpu(void) {
  struct timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

typedef struct timing {
  double wall, cpu;
} timing;

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* ---- the sources ---------------------------------------------------------- */

static int st_get(void *h, const char *key, weft_tensor *v) {
  const weft_st_tensor *t = weft_st_find(h, key);
  return t ? weft_st_view(t, v) : WEFT_ENOENT;
}
static const char *st_meta(void *h, const char *k) { return weft_st_meta(h, k); }
static int32_t st_count(void *h) { return weft_st_count(h); }
static const char *st_key(void *h, int32_t i) { return weft_st_at(h, i)->key; }

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)n + 1);
  if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
    free(s);
    s = NULL;
  }
  if (s) s[n] = 0;
  fclose(f);
  return s;
}

static const char *sd15_json[SD_PARTS] = {
    "{\"block_out_channels\":[320,640,1280,1280],\"down_block_types\":["
    "\"CrossAttnDownBlock2D\",\"CrossAttnDownBlock2D\",\"CrossAttnDownBlock2D\","
    "\"DownBlock2D\"],\"up_block_types\":[\"UpBlock2D\",\"CrossAttnUpBlock2D\","
    "\"CrossAttnUpBlock2D\",\"CrossAttnUpBlock2D\"],\"layers_per_block\":2,"
    "\"attention_head_dim\":8,\"cross_attention_dim\":768,\"in_channels\":4,"
    "\"out_channels\":4,\"norm_num_groups\":32}",
    "{\"block_out_channels\":[128,256,512,512],\"layers_per_block\":2,"
    "\"latent_channels\":4}",
    "{\"hidden_size\":768,\"num_hidden_layers\":12,\"num_attention_heads\":12,"
    "\"intermediate_size\":3072,\"hidden_act\":\"quick_gelu\"}"};

typedef struct model {
  sd_ckpt ck;
  weft_st_file *files[SD_PARTS];
  char *json[SD_PARTS];
  sd_unet *unet;
  sd_clip *clip;
  sd_vae *vae;
} model;

static int open_tiny(model *m, const char *dir) {
  static const char *const sub[SD_PARTS] = {
      "unet/diffusion_pytorch_model.safetensors",
      "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"};
  static const char *const cfg[SD_PARTS] = {"unet/config.json", "vae/config.json",
                                            "text_encoder/config.json"};
  memset(m, 0, sizeof *m);
  m->ck.layout = SD_LAYOUT_DIFFUSERS;
  for (int p = 0; p < SD_PARTS; p++) {
    char path[4096], err[1024];
    snprintf(path, sizeof path, "%s/%s", dir, sub[p]);
    if (weft_st_open(path, &m->files[p], err, sizeof err)) {
      fprintf(stderr, "bench_sd: %s\n", err);
      return 1;
    }
    m->ck.files[p] = (sd_file){m->files[p], st_get, st_meta, st_count, st_key,
                               weft_st_path(m->files[p])};
    m->ck.has[p] = true;
    snprintf(path, sizeof path, "%s/%s", dir, cfg[p]);
    m->json[p] = slurp(path);
  }
  return 0;
}

static int load(model *m) {
  if (sd_ckpt_configure(&m->ck, (const char *const *)m->json) ||
      sd_unet_load(&m->ck, &m->unet) || sd_clip_load(&m->ck, &m->clip) ||
      sd_vae_load(&m->ck, &m->vae)) {
    fprintf(stderr, "bench_sd: %s\n", m->ck.err);
    return 1;
  }
  return 0;
}

/* ---- measurements --------------------------------------------------------- */

typedef struct result {
  const char *model;
  int size;
  double clip, unet_step, vae, image; /* seconds: median wall */
  double image_cpu;
} result;

static int denoise_cb(void *u, const float *x, float s, float *o) {
  return sd_denoise(u, x, s, o);
}

/* run_image: time a whole image too (else it is estimated from the parts,
 * for models too slow to run 20 steps in a benchmark) */
static void bench_model(model *m, weft_backend *be, int size, int reps,
                        int steps, bool run_image, result *res) {
  const int64_t lat = size / 8, n = 4 * lat * lat;
  int32_t ids[2 * 77];
  for (int i = 0; i < 2 * 77; i++) ids[i] = i % 77 == 0 ? 49406 : i % 77 < 8 ? 320 + i % 77 : 49407;
  int64_t D = sd_clip_config(m->clip)->hidden;
  float *ctx = malloc((size_t)(2 * 77 * D) * sizeof *ctx);
  float *x = malloc((size_t)n * sizeof *x), *img = malloc((size_t)(3 * size * size) * sizeof *img);
  double *t = malloc((size_t)reps * sizeof *t);
  /* text encoder: both prompts in one batch */
  for (int r = 0; r < reps; r++) {
    double a = wall();
    sd_clip_forward(m->clip, be, ids, 2, 0, ctx, NULL);
    t[r] = wall() - a;
  }
  qsort(t, (size_t)reps, sizeof *t, cmp_d);
  res->clip = t[reps / 2];
  weft_schedule sched;
  weft_schedule_init(&sched, 0.00085, 0.012);
  sd_denoiser den;
  int64_t shape[4] = {1, 4, lat, lat};
  sd_denoiser_init(&den, m->unet, be, &sched, SD_PRED_EPS, shape, 7.0f, ctx, 77,
                   ctx + 77 * D, 77);
  for (int64_t i = 0; i < n; i++) x[i] = sinf((float)i);
  float *out = malloc((size_t)n * sizeof *out);
  for (int r = 0; r < reps; r++) {
    double a = wall();
    sd_denoise(&den, x, 5.0f, out);
    t[r] = wall() - a;
  }
  qsort(t, (size_t)reps, sizeof *t, cmp_d);
  res->unet_step = t[reps / 2];
  for (int r = 0; r < reps; r++) {
    double a = wall();
    sd_vae_decode(m->vae, be, x, 1, lat, lat, img);
    t[r] = wall() - a;
  }
  qsort(t, (size_t)reps, sizeof *t, cmp_d);
  res->vae = t[reps / 2];
  /* a whole image: encode both prompts, `steps` euler steps, decode */
  if (!run_image) {
    res->image = res->clip + steps * res->unet_step + res->vae;
    res->image_cpu = -1;
    sd_denoiser_free(&den);
    free(ctx), free(x), free(img), free(t), free(out);
    return;
  }
  double a = wall(), c = cpu();
  sd_clip_forward(m->clip, be, ids, 2, 0, ctx, NULL);
  float sig[64];
  int ns = weft_ksampler_sigmas(&sched, "normal", "euler", steps, 1.0, sig, 64);
  weft_sampler_io io = {n, denoise_cb, NULL, NULL, &den};
  weft_sample("euler", &io, x, sig, ns);
  sd_vae_decode(m->vae, be, x, 1, lat, lat, img);
  res->image = wall() - a;
  res->image_cpu = cpu() - c;
  sd_denoiser_free(&den);
  free(ctx), free(x), free(img), free(t), free(out);
}

int main(int argc, char **argv) {
  const char *json = "bench_sd.json", *tiny = "tests/fixtures/sd15_tiny/diffusers";
  int threads = 0, reps = 5, sd15 = 1;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--tiny") && i + 1 < argc) tiny = argv[++i];
    else if (!strcmp(argv[i], "--no-sd15")) sd15 = 0;
    else {
      fprintf(stderr, "usage: bench_sd [--json FILE] [--threads N] [--reps N] "
                      "[--tiny DIR] [--no-sd15]\n");
      return 2;
    }
  }
  weft_backend *be = weft_backend_cpu_new(threads);
  result res[2] = {{.model = "tiny (fixture)", .size = 64},
                   {.model = "SD1.5 shapes, random", .size = 256}};
  int nres = 0;
  model m;
  if (open_tiny(&m, tiny) || load(&m)) return 1;
  bench_model(&m, be, 64, reps < 3 ? 3 : reps * 4, 20, true, &res[nres++]);
  if (sd15) {
    model big;
    memset(&big, 0, sizeof big);
    big.ck.random_weights = true;
    big.ck.layout = SD_LAYOUT_DIFFUSERS;
    for (int p = 0; p < SD_PARTS; p++) {
      big.ck.has[p] = true;
      big.json[p] = strdup(sd15_json[p]);
    }
    fprintf(stderr, "building SD1.5-sized random weights...\n");
    if (load(&big)) return 1;
    bench_model(&big, be, 256, 1, 20, false, &res[nres++]);
  }
  printf("%-22s %6s %10s %12s %10s %12s %12s\n", "model", "size", "clip s",
         "unet step s", "vae s", "image s", "image cpu s");
  for (int i = 0; i < nres; i++)
    printf("%-22s %6d %10.4f %12.4f %10.4f %12.3f %12.3f\n", res[i].model,
           res[i].size, res[i].clip, res[i].unet_step, res[i].vae,
           res[i].image, res[i].image_cpu);
  printf("(SD1.5 image time estimated: clip + 20 steps + decode; cpu -1 = "
         "not run)\n");
  printf("(unet step = one CFG step, batch 2; image = 2 prompts encoded, 20 "
         "euler steps, decode; %d threads, 0 = all CPUs)\n",
         threads);
  FILE *f = fopen(json, "w");
  if (f) {
    fprintf(f, "{\"threads\": %d, \"results\": [", threads);
    for (int i = 0; i < nres; i++)
      fprintf(f, "%s{\"model\": \"%s\", \"size\": %d, \"clip_s\": %.5f, "
                 "\"unet_step_s\": %.5f, \"vae_decode_s\": %.5f, "
                 "\"image_s\": %.4f, \"image_cpu_s\": %.4f}",
              i ? ", " : "", res[i].model, res[i].size, res[i].clip,
              res[i].unet_step, res[i].vae, res[i].image, res[i].image_cpu);
    fprintf(f, "]}\n");
    fclose(f);
    printf("wrote %s\n", json);
  }
  weft_backend_free(be);
  return 0;
}
