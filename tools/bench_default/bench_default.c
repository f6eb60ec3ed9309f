/* bench_default.c - seconds of txt2img on the embedded default model
 * (models/default/weft-shapes-v1.safetensors; 128x128, euler, normal, 20
 * steps, CFG 4.5: graphs/txt2img.yaml's defaults), on the CPU:
 *
 *   weft model   the model code alone, split: text encode (the prompt and
 *                the negative), sampling (20 CFG steps, UNet batch 2), VAE
 *                decode, and the sum; best of --reps, wall and CPU
 *   weft graph   graphs/txt2img.yaml run in process, warm (checkpoint
 *                loaded, a new prompt and seed each time), wall and CPU;
 *                the first (cold) run is reported too
 *   weft run     the command, a fresh process: start, plugins, checkpoint
 *                load, the image, the PNG (what tools/quickstart.sh does)
 *   diffusers    the same model and sampling in PyTorch (diffusers' UNet2D-
 *                ConditionModel and AutoencoderKL, transformers'
 *                CLIPTextModel; bench_diffusers.py), side by side in the same
 *                run when python3 with torch and diffusers is there
 *
 * CPU seconds are the process's user + system time (all threads).  Prints
 * a table and writes JSON.  Run from the repository root:
 *   build/tools/bench_default/bench_default [--threads N] [--reps N]
 *       [--json FILE] [--no-python] */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "samplers.h"
#include "schedule.h"
#include "sd.h"
#include "weft/safetensors.h"
#include "weft/weft.h"

#define CKPT "models/default/weft-shapes-v1.safetensors"
#define GRAPH "graphs/txt2img.yaml"
#define STEPS 20
#define CFG 4.5f

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

/* wall and CPU seconds of one thing; best = the run with the least wall */
typedef struct span {
  double wall, cpu;
} span;

static void keep_best(span *best, span s, int rep) {
  if (rep == 0 || s.wall < best->wall) *best = s;
}

/* ---- the model code -------------------------------------------------------
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

typedef struct model_times {
  span text, sample, decode, total;
} model_times;

static int denoise_cb(void *u, const float *x, float s, float *o) {
  return sd_denoise(u, x, s, o);
}

/* Returns 0, or 1 with a message on stderr. */
static int bench_model(int threads, int reps, model_times *best) {
  weft_st_file *f = NULL;
  char err[1024];
  if (weft_st_open(CKPT, &f, err, sizeof err)) {
    fprintf(stderr, "bench_default: %s (run from the repository root)\n", err);
    return 1;
  }
  sd_ckpt ck;
  memset(&ck, 0, sizeof ck);
  ck.layout = SD_LAYOUT_LDM;
  for (int p = 0; p < SD_PARTS; p++) {
    ck.files[p] = (sd_file){f, st_get, st_meta, st_count, st_key, CKPT};
    ck.has[p] = true;
  }
  const char *none[SD_PARTS] = {NULL, NULL, NULL};
  sd_unet *unet = NULL;
  sd_clip *clip = NULL;
  sd_vae *vae = NULL;
  if (sd_ckpt_configure(&ck, none) || sd_unet_load(&ck, &unet) ||
      sd_clip_load(&ck, &clip) || sd_vae_load(&ck, &vae)) {
    fprintf(stderr, "bench_default: %s\n", ck.err);
    return 1;
  }
  weft_backend *be = weft_backend_cpu_new(threads);
  /* "a red circle on a blue background" and "" as CLIP ids, padded with
   * <|endoftext|> (the cost does not depend on the ids) */
  static const int32_t words[] = {49406, 320, 736, 7117, 525, 320, 1746, 5994};
  int32_t ids[2][77];
  for (int i = 0; i < 77; i++) {
    ids[0][i] = i == 0 ? 49406 : 49407;
    ids[1][i] = i < 8 ? words[i] : 49407;
  }
  enum { D = 64, LAT = 4 * 16 * 16 };
  float *ctx = malloc(2 * 77 * D * sizeof *ctx);
  float *x = malloc(LAT * sizeof *x),
        *img = malloc(3 * 128 * 128 * sizeof *img);
  weft_schedule sched;
  weft_schedule_init(&sched, 0.00085, 0.012);
  float sig[64];
  int ns = weft_ksampler_sigmas(&sched, "normal", "euler", STEPS, 1.0, sig, 64);
  for (int r = 0; r < reps; r++) {
    double w0 = wall(), c0 = cpu();
    /* two nodes in the graph, one prompt each */
    sd_clip_forward(clip, be, ids[0], 1, 0, ctx, NULL);
    sd_clip_forward(clip, be, ids[1], 1, 0, ctx + 77 * D, NULL);
    double w1 = wall(), c1 = cpu();
    sd_denoiser den;
    int64_t shape[4] = {1, 4, 16, 16};
    sd_denoiser_init(&den, unet, be, &sched, SD_PRED_EPS, shape, CFG, ctx, 77,
                     ctx + 77 * D, 77);
    for (int i = 0; i < LAT; i++)
      x[i] = sinf((float)i) * sqrtf(1.0f + sig[0] * sig[0]);
    weft_sampler_io io = {LAT, denoise_cb, NULL, NULL, &den};
    weft_sample("euler", &io, x, sig, ns);
    sd_denoiser_free(&den);
    for (int i = 0; i < LAT; i++)
      x[i] /= 0.18215f;
    double w2 = wall(), c2 = cpu();
    sd_vae_decode(vae, be, x, 1, 16, 16, img);
    double w3 = wall(), c3 = cpu();
    model_times t = {{w1 - w0, c1 - c0},
                     {w2 - w1, c2 - c1},
                     {w3 - w2, c3 - c2},
                     {w3 - w0, c3 - c0}};
    if (r == 0 || t.total.wall < best->total.wall) *best = t;
  }
  free(ctx), free(x), free(img);
  weft_backend_free(be);
  sd_unet_free(unet), sd_clip_free(clip), sd_vae_free(vae);
  sd_ckpt_release(&ck);
  sd_ckpt_free_params(&ck);
  weft_st_close(f);
  return 0;
}

/* ---- the graph, in process ------------------------------------------------
 */

typedef struct graph_times {
  span cold, warm;   /* warm: best of reps */
  double node_ms[4]; /* the best warm run's CLIPTextEncode, KSampler,
                        VAEDecode, SaveImage (ms, from NODE_DONE events) */
} graph_times;

static void on_event(const weft_event *e, void *user) {
  double *ms = user;
  if (e->kind != WEFT_EV_NODE_DONE || !e->op) return;
  static const char *const ops[4] = {"CLIPTextEncode", "KSampler", "VAEDecode",
                                     "SaveImage"};
  for (int i = 0; i < 4; i++)
    if (strcmp(e->op, ops[i]) == 0) ms[i] += e->ms;
}

static int bench_graph(int threads, int reps, const char *outdir,
                       graph_times *gt) {
  weft_ctx *ctx = NULL;
  weft_graph *g = NULL;
  int r = weft_ctx_new(&ctx);
  if (!r) {
    weft_ctx_set_threads(ctx, threads);
    r = weft_plugin_load_default(ctx, NULL);
  }
  if (!r) r = weft_ctx_set_output_dir(ctx, outdir);
  if (!r) r = weft_graph_load(ctx, GRAPH, &g);
  double ms[4];
  weft_ctx_set_event_cb(ctx, on_event, ms);
  for (int i = 0; !r && i <= reps; i++) {
    char prompt[128], seed[32];
    snprintf(prompt, sizeof prompt, "a %s %s on a blue background",
             i % 2 ? "green" : "red", i % 3 ? "star" : "circle");
    snprintf(seed, sizeof seed, "%d", 1000 + i);
    if ((r = weft_graph_set_input(ctx, g, "prompt", prompt)) ||
        (r = weft_graph_set_input(ctx, g, "seed", seed)))
      break;
    memset(ms, 0, sizeof ms);
    double w0 = wall(), c0 = cpu();
    r = weft_graph_run(ctx, g);
    span s = {wall() - w0, cpu() - c0};
    if (i == 0) {
      gt->cold = s; /* plugins are loaded; the checkpoint is not */
    } else if (i == 1 || s.wall < gt->warm.wall) {
      gt->warm = s;
      memcpy(gt->node_ms, ms, sizeof ms);
    }
  }
  if (r) fprintf(stderr, "bench_default: %s\n", weft_ctx_error(ctx));
  weft_graph_free(g);
  weft_ctx_free(ctx);
  return r ? 1 : 0;
}

/* ---- the command and Python ---------------------------------------------- */

/* Runs argv, stdout to out (may be NULL: discarded); wall and CPU (the
 * child's rusage) into *s.  Returns the exit status or -1. */
static int spawn(char *const argv[], FILE *out, span *s) {
  int fd[2];
  if (out && pipe(fd)) return -1;
  fflush(stdout); /* else the child's freopen writes the buffer again */
  double w0 = wall();
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    if (out) {
      dup2(fd[1], 1);
      close(fd[0]), close(fd[1]);
    } else if (!freopen("/dev/null", "w", stdout)) {
      _exit(127);
    }
    execvp(argv[0], argv);
    _exit(127);
  }
  if (out) {
    close(fd[1]);
    char buf[4096];
    ssize_t n;
    while ((n = read(fd[0], buf, sizeof buf)) > 0)
      fwrite(buf, 1, (size_t)n, out);
    close(fd[0]);
  }
  int st = 0;
  struct rusage ru;
  if (wait4(pid, &st, 0, &ru) != pid) return -1;
  if (s) {
    s->wall = wall() - w0;
    s->cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 +
             ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

typedef struct py_times {
  bool ran;
  span text, sample, decode, total;
  char versions[256];
} py_times;

/* reads "key": number from a JSON line (bench_diffusers.py's own output) */
static double jnum(const char *js, const char *key) {
  char k[64];
  snprintf(k, sizeof k, "\"%s\": ", key);
  const char *p = strstr(js, k);
  return p ? strtod(p + strlen(k), NULL) : NAN;
}

static void bench_python(const char *src_dir, int threads, int reps,
                         py_times *py) {
  memset(py, 0, sizeof *py);
  char *probe[] = {"python3", "-c", "import torch, diffusers, transformers",
                   NULL};
  if (spawn(probe, NULL, NULL) != 0) {
    fprintf(stderr, "diffusers: skipped (python3 with torch, diffusers and "
                    "transformers not found)\n");
    return;
  }
  char script[4096], th[16], rp[16];
  snprintf(script, sizeof script, "%s/bench_diffusers.py", src_dir);
  snprintf(th, sizeof th, "%d", threads);
  snprintf(rp, sizeof rp, "%d", reps);
  char *argv[] = {"python3", script, "--threads", th, "--reps", rp, NULL};
  char *buf = NULL;
  size_t len = 0;
  FILE *mem = open_memstream(&buf, &len);
  int code = mem ? spawn(argv, mem, NULL) : -1;
  if (mem) fclose(mem);
  if (code != 0 || !buf) {
    fprintf(stderr, "diffusers: %s failed (exit %d)\n", script, code);
    free(buf);
    return;
  }
  const char *js = strrchr(buf, '{') ? buf : "";
  py->ran = true;
  py->text = (span){jnum(js, "text_s"), jnum(js, "text_cpu_s")};
  py->sample = (span){jnum(js, "sample_s"), jnum(js, "sample_cpu_s")};
  py->decode = (span){jnum(js, "decode_s"), jnum(js, "decode_cpu_s")};
  py->total = (span){jnum(js, "total_s"), jnum(js, "total_cpu_s")};
  const char *v = strstr(js, "\"versions\": \"");
  if (v) {
    v += strlen("\"versions\": \"");
    const char *e = strchr(v, '"');
    snprintf(py->versions, sizeof py->versions, "%.*s", (int)(e ? e - v : 0),
             v);
  }
  free(buf);
}

/* ---- main -----------------------------------------------------------------
 */

/* a table cell: seconds, or "-" (NaN: not measured) */
static void cell(double v, int width) {
  if (isnan(v))
    printf(" %*s", width, "-");
  else
    printf(" %*.3f", width, v);
}

static void row(const char *what, span text, span sample, span decode,
                span total) {
  printf("%-28s", what);
  cell(text.wall, 10), cell(sample.wall, 10), cell(decode.wall, 10);
  cell(total.wall, 10), cell(total.cpu, 10);
  putchar('\n');
}

int main(int argc, char **argv) {
  const char *json = "bench_default.json";
  int threads = 2, reps = 5, python = 1;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json") && i + 1 < argc)
      json = argv[++i];
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
      threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
      reps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--no-python"))
      python = 0;
    else {
      fprintf(stderr, "usage: bench_default [--threads N] [--reps N] "
                      "[--json FILE] [--no-python]   (from the repository "
                      "root)\n");
      return 2;
    }
  }
  if (reps < 1) reps = 1;
  if (threads < 1) threads = 1;
  /* the program's own folder: the build's cli/weft is two up */
  char self_dir[4096] = ".";
  ssize_t n = readlink("/proc/self/exe", self_dir, sizeof self_dir - 1);
  if (n > 0) {
    self_dir[n] = 0;
    char *slash = strrchr(self_dir, '/');
    if (slash) *slash = 0;
  }

  model_times mt = {{0, 0}, {0, 0}, {0, 0}, {0, 0}};
  fprintf(stderr, "weft model code (%d reps)...\n", reps);
  if (bench_model(threads, reps, &mt)) return 1;

  char outdir[] = "/tmp/bench_default_XXXXXX";
  if (!mkdtemp(outdir)) {
    perror("bench_default: mkdtemp");
    return 1;
  }
  graph_times gt = {{0, 0}, {0, 0}, {0, 0, 0, 0}};
  fprintf(stderr, "weft " GRAPH " in process (%d warm runs)...\n", reps);
  if (bench_graph(threads, reps, outdir, &gt)) return 1;

  /* the command: a fresh process each time, best of 3 */
  char weft_bin[4200], th[16], od[64];
  snprintf(weft_bin, sizeof weft_bin, "%s/../../cli/weft", self_dir);
  snprintf(th, sizeof th, "%d", threads);
  snprintf(od, sizeof od, "%s/cli", outdir);
  char *cmd[] = {weft_bin,       "run", GRAPH, "--threads", th,
                 "--output-dir", od,    "-q",  NULL};
  span cli = {0, 0};
  bool cli_ok = true;
  fprintf(stderr, "weft run " GRAPH " (3 processes)...\n");
  for (int i = 0; i < 3 && cli_ok; i++) {
    span s;
    cli_ok = spawn(cmd, NULL, &s) == 0;
    keep_best(&cli, s, i);
  }
  if (!cli_ok) fprintf(stderr, "bench_default: %s failed\n", weft_bin);

  py_times py = {0};
  if (python) {
    fprintf(stderr, "diffusers (%d reps)...\n", reps);
    bench_python(WEFT_BENCH_DEFAULT_DIR, threads, reps, &py);
  }

  printf("txt2img on the default model: 128x128, euler, normal, %d steps, "
         "CFG %.1f, %d threads; seconds (best of %d)\n",
         STEPS, CFG, threads, reps);
  printf("%-28s %10s %10s %10s %10s %10s\n", "", "text enc", "sampling",
         "VAE decode", "total", "total CPU");
  row("weft, model code", mt.text, mt.sample, mt.decode, mt.total);
  span ms[4];
  for (int i = 0; i < 4; i++)
    ms[i] = (span){gt.node_ms[i] / 1000, NAN};
  row("weft, graph (warm)", ms[0], ms[1], ms[2], gt.warm);
  span none = {NAN, NAN};
  row("weft, graph (first run)", none, none, none, gt.cold);
  if (cli_ok) row("weft run (fresh process)", none, none, none, cli);
  if (py.ran)
    row("diffusers (PyTorch)", py.text, py.sample, py.decode, py.total);
  printf("(graph warm: the prompt changes each run, the negative \"\" is "
         "cached; nodes' times from NODE_DONE events; first run and weft run "
         "include loading the checkpoint)\n");
  if (py.ran) printf("(diffusers: %s)\n", py.versions);

  FILE *f = fopen(json, "w");
  if (!f) {
    perror(json);
    return 1;
  }
  fprintf(f,
          "{\"model\": \"%s\", \"size\": 128, \"steps\": %d, \"cfg\": %.1f, "
          "\"threads\": %d, \"reps\": %d,\n"
          " \"weft_model\": {\"text_s\": %.4f, \"sample_s\": %.4f, "
          "\"decode_s\": %.4f, \"total_s\": %.4f, \"total_cpu_s\": %.4f},\n"
          " \"weft_graph_warm\": {\"text_s\": %.4f, \"sample_s\": %.4f, "
          "\"decode_s\": %.4f, \"save_s\": %.4f, \"total_s\": %.4f, "
          "\"total_cpu_s\": %.4f},\n"
          " \"weft_graph_first_run\": {\"total_s\": %.4f, \"total_cpu_s\": "
          "%.4f},\n",
          CKPT, STEPS, CFG, threads, reps, mt.text.wall, mt.sample.wall,
          mt.decode.wall, mt.total.wall, mt.total.cpu, ms[0].wall, ms[1].wall,
          ms[2].wall, gt.node_ms[3] / 1000, gt.warm.wall, gt.warm.cpu,
          gt.cold.wall, gt.cold.cpu);
  if (cli_ok)
    fprintf(f, " \"weft_run\": {\"total_s\": %.4f, \"total_cpu_s\": %.4f},\n",
            cli.wall, cli.cpu);
  if (py.ran)
    fprintf(f,
            " \"diffusers\": {\"text_s\": %.4f, \"sample_s\": %.4f, "
            "\"decode_s\": %.4f, \"total_s\": %.4f, \"total_cpu_s\": %.4f, "
            "\"versions\": \"%s\"},\n",
            py.text.wall, py.sample.wall, py.decode.wall, py.total.wall,
            py.total.cpu, py.versions);
  fprintf(f, " \"target_s\": 1.0}\n");
  fclose(f);
  printf("wrote %s\n", json);
  /* the temp folder's PNGs */
  char *rm[] = {"rm", "-rf", outdir, NULL};
  spawn(rm, NULL, NULL);
  return 0;
}
