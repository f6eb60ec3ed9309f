/* common.c - what the weft subcommands share: options, context set-up,
 * graph loading and error reporting. */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "weft_config.h"

int weft_cli_common_opt(weft_cli_opts *o, int c, const char *arg) {
  switch (c) {
  case OPT_PLUGIN_DIR:
    if (o->n_plugin_dirs >= 63) {
      fprintf(stderr, "weft: too many --plugin-dir options\n");
      return -1;
    }
    o->plugin_dirs[o->n_plugin_dirs++] = arg;
    return 1;
  case OPT_SET:
    if (!strchr(arg, '=') || arg[0] == '=') {
      fprintf(stderr, "weft: --set %s: expected name=value\n", arg);
      return -1;
    }
    if (o->n_sets >= 256) {
      fprintf(stderr, "weft: too many --set options\n");
      return -1;
    }
    o->sets[o->n_sets++] = arg;
    return 1;
  case OPT_THREADS: {
    char *end;
    long n = strtol(arg, &end, 10);
    if (*end || n < 1 || n > 1024) {
      fprintf(stderr, "weft: --threads %s: expected a number from 1 to 1024\n",
              arg);
      return -1;
    }
    o->threads = (int)n;
    return 1;
  }
  default: return 0;
  }
}

int weft_cli_fail(weft_ctx *ctx, int err) {
  const char *msg = ctx ? weft_ctx_error(ctx) : "";
  fprintf(stderr, "weft: %s\n", *msg ? msg : weft_strerror(err));
  return weft_exit_code(err);
}

weft_ctx *weft_cli_ctx(const weft_cli_opts *o, int *code) {
  weft_ctx *ctx = NULL;
  int r = weft_ctx_new(&ctx);
  if (r) {
    *code = weft_cli_fail(NULL, r);
    return NULL;
  }
  int threads = o->threads;
  const char *env = getenv("WEFT_THREADS");
  if (!threads && env && *env) {
    char *end;
    long n = strtol(env, &end, 10);
    if (*end || n < 1 || n > 1024) {
      fprintf(stderr, "weft: WEFT_THREADS=%s: expected a number from 1 to "
                      "1024\n", env);
      weft_ctx_free(ctx);
      *code = 2;
      return NULL;
    }
    threads = (int)n;
  }
  weft_ctx_set_threads(ctx, threads);
  /* libuv's pool runs independent branches side by side; it is sized once,
   * before its first use, from the environment */
  if (!getenv("UV_THREADPOOL_SIZE")) {
    char n[16];
    int t = weft_ctx_threads(ctx);
    snprintf(n, sizeof n, "%d", t < 4 ? 4 : t);
    setenv("UV_THREADPOOL_SIZE", n, 0);
  }
  if ((o->output_dir && (r = weft_ctx_set_output_dir(ctx, o->output_dir))) ||
      (o->input_dir && (r = weft_ctx_set_input_dir(ctx, o->input_dir)))) {
    *code = weft_cli_fail(ctx, r);
    weft_ctx_free(ctx);
    return NULL;
  }
  const char *dirs[65];
  for (int i = 0; i < o->n_plugin_dirs; i++) dirs[i] = o->plugin_dirs[i];
  dirs[o->n_plugin_dirs] = NULL;
  if ((r = weft_plugin_load_default(ctx, dirs))) {
    *code = weft_cli_fail(ctx, r);
    weft_ctx_free(ctx);
    return NULL;
  }
  return ctx;
}

weft_graph *weft_cli_graph(weft_ctx *ctx, const weft_cli_opts *o,
                           const char *path, int *code) {
  weft_graph *g = NULL;
  int r = weft_graph_load(ctx, path, &g);
  for (int i = 0; !r && i < o->n_sets; i++) {
    char name[256];
    const char *eq = strchr(o->sets[i], '=');
    size_t n = (size_t)(eq - o->sets[i]);
    if (n >= sizeof name) n = sizeof name - 1;
    memcpy(name, o->sets[i], n);
    name[n] = 0;
    r = weft_graph_set_input(ctx, g, name, eq + 1);
  }
  if (r) {
    *code = weft_cli_fail(ctx, r);
    weft_graph_free(g);
    return NULL;
  }
  return g;
}

const char *weft_cli_closest(const char *name, const char *const *cand,
                             int n) {
  return weft_closest_name(name, cand, n);
}

/* Device 0's primary context, the one the CUDA runtime takes up when a
 * model plugin starts its backend, made on a thread of its own (about
 * 0.1 s on an H200's host) while the plugins load and the graph is read;
 * kept for the process, the thread joined at exit.  A runtime that comes
 * first waits for it in the driver.  WEFT_CUDA_EARLY_CONTEXT=0: made by the
 * runtime, as needed. */
static void *early_context(void *lib) {
  int (*get)(int *, int) = (int (*)(int *, int))dlsym(lib, "cuDeviceGet");
  int (*retain)(void **, int) =
      (int (*)(void **, int))dlsym(lib, "cuDevicePrimaryCtxRetain");
  int dev = 0;
  void *ctx = NULL;
  if (get && retain && get(&dev, 0) == 0) (void)retain(&ctx, dev);
  return NULL;
}

static pthread_t early_thread;
static bool early_started;

/* at exit (a failed run returns through main): the thread done before the
 * driver's library is torn down after it (_exit, a success's way out,
 * tears down nothing) */
static void join_early_context(void) {
  if (early_started) pthread_join(early_thread, NULL);
  early_started = false;
}

static void start_early_context(void *lib) {
  const char *e = getenv("WEFT_CUDA_EARLY_CONTEXT");
  if (early_started || (e && !strcmp(e, "0"))) return;
  if (pthread_create(&early_thread, NULL, early_context, lib) == 0) {
    early_started = true;
    atexit(join_early_context);
  }
}

/* --device cuda needs a CUDA build and a device the driver sees; the check
 * asks the driver library itself (the command does not link CUDA), so a
 * missing GPU is a usage error here, before any node runs; device 0's
 * context is then made beside the rest of the start (early_context).
 * emulated (the device paths on the CPU kernels, kernels/emulated.h) needs
 * nothing. */
int weft_cli_use_device(const char *dev) {
  if (!strcmp(dev, "cpu") || !strcmp(dev, "auto") || !strcmp(dev, "emulated")) {
    setenv("WEFT_DEVICE", dev, 1);
    return 0;
  }
  if (strcmp(dev, "cuda") != 0) {
    fprintf(stderr, "weft: --device %s: expected cpu, cuda, emulated or auto\n",
            dev);
    return 2;
  }
  if (!WEFT_HAVE_CUDA) {
    fputs("weft: --device cuda: this weft was built without CUDA "
          "(configure it with -Dcuda=enabled)\n",
          stderr);
    return 2;
  }
  /* never dlclose'd: the driver keeps state (as the plugins) */
  void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    fprintf(stderr, "weft: --device cuda: no CUDA driver (%s)\n", dlerror());
    return 2;
  }
  int (*init)(unsigned) = (int (*)(unsigned))dlsym(lib, "cuInit");
  int (*count)(int *) = (int (*)(int *))dlsym(lib, "cuDeviceGetCount");
  int n = 0, e = init && count ? init(0) : -1;
  if (!e) e = count(&n);
  if (e || n < 1) {
    fprintf(stderr, "weft: --device cuda: no CUDA device (%s)\n",
            e == 100 ? "the driver sees none"
            : e      ? "the driver failed"
                     : "none visible");
    return 2;
  }
  /* the model plugins read it when their loaders run */
  setenv("WEFT_DEVICE", dev, 1);
  start_early_context(lib);
  return 0;
}

int weft_cli_parse_bytes(const char *s, uint64_t *bytes) {
  if (!s || !*s || *s == '-' || *s == '+') return -1;
  char *end = NULL;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || !(v >= 0)) return -1;
  double mul = 1;
  switch (*end) {
  case 'k': case 'K': mul = 1024.0; end++; break;
  case 'm': case 'M': mul = 1024.0 * 1024; end++; break;
  case 'g': case 'G': mul = 1024.0 * 1024 * 1024; end++; break;
  case 't': case 'T': mul = 1024.0 * 1024 * 1024 * 1024; end++; break;
  default: break;
  }
  if (mul > 1 && *end == 'i') end++;
  if (*end == 'B' || *end == 'b') end++;
  if (*end) return -1;
  v *= mul;
  if (v >= 18446744073709551616.0) return -1;
  *bytes = (uint64_t)(v + 0.5);
  return 0;
}

int weft_cli_use_vram(const char *s) {
  uint64_t b;
  if (weft_cli_parse_bytes(s, &b) || b == 0) {
    fprintf(stderr,
            "weft: --vram %s: expected a positive byte count such as "
            "1500000000, 1.5G or 1536M\n",
            s);
    return 2;
  }
  char buf[32];
  snprintf(buf, sizeof buf, "%llu", (unsigned long long)b);
  /* the model plugins read it when their loaders run, as WEFT_DEVICE */
  setenv("WEFT_VRAM", buf, 1);
  return 0;
}
