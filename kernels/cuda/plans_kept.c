/* plans_kept.c - the plans a process used, kept for the next one to make
 * ahead.
 *
 * A fresh process's first sampler step took 0.27-0.34 s on an H200's host
 * against 6 ms warm: its cuDNN plans (24, 0.10 s) and cuBLASLt plans (48,
 * 0.05 s) are made at their first call, one after another, while the
 * threads that start those libraries (weft_cuda_start_cudnn, beside the
 * checkpoint's load) have long finished and wait for nothing.  Each plan
 * cache (conv_cudnn.c's graph-API convolutions, attn_cudnn.c's
 * attention, gemm_lt.c's products) reports an entry's first use here
 * (weft__cuda_kept_use); weft_cuda_keep_plans writes those keys, in that
 * order, to a list in the cache folder (plans_list.h says its text), one
 * per cuDNN and cuBLASLt version and device.  The next process reads the
 * list at weft_cuda_start_cudnn, and the start threads make its plans
 * into the caches once their handles exist: cuDNN's until the first call
 * that needs cuDNN joins it (ahead_stop: what is not made by then is made
 * at its first call, as without a list), cuBLASLt's beside the text
 * encoder's products (the cache's lock orders them).  A plan made ahead
 * is the one the first call would make: the same builder from the same
 * key, so the same engine and the same bits.
 *
 * WEFT_CUDA_PLANS_AHEAD=0 reads no list; WEFT_CACHE_DIR=off keeps none. */
#include <cublasLt.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#if WEFT_HAVE_CUDNN
#include <cudnn.h>
#endif

bool weft__cuda_cache_dir(char *dir, size_t n) {
  const char *e = getenv("WEFT_CACHE_DIR"), *x = getenv("XDG_CACHE_HOME"),
             *home = getenv("HOME");
  int w;
  if (e) {
    if (!*e || !strcmp(e, "off") || !strcmp(e, "0")) return false;
    w = snprintf(dir, n, "%s", e);
  } else if (x && *x) {
    w = snprintf(dir, n, "%s/weft", x);
  } else if (home && *home) {
    char up[4096];
    if ((size_t)snprintf(up, sizeof up, "%s/.cache", home) >= sizeof up)
      return false;
    if (mkdir(up, 0755) != 0 && errno != EEXIST) return false;
    w = snprintf(dir, n, "%s/weft", up);
  } else {
    return false;
  }
  if (w < 0 || (size_t)w >= n) return false;
  return mkdir(dir, 0755) == 0 || errno == EEXIST;
}

/* The list's file (path) and the header line that opens it (head, without
 * its newline): the libraries' versions and the device decide plans. */
static bool list_names(const weft__cuda_ctx *ctx, char *path, size_t np,
                       char *head, size_t nh) {
  char dir[4096];
  int drv = 0;
  if (!weft__cuda_cache_dir(dir, sizeof dir) ||
      cudaDriverGetVersion(&drv) != cudaSuccess)
    return false;
  size_t dnn = 0;
#if WEFT_HAVE_CUDNN
  dnn = cudnnGetVersion();
#endif
  int w = snprintf(head, nh,
                   "weft plans 1; cuDNN %zu; cuBLASLt %zu; sm %d, %d "
                   "multiprocessors, driver %d",
                   dnn, cublasLtGetVersion(), ctx->cc, ctx->sm_count, drv);
  if (w <= 0 || (size_t)w >= nh) return false;
  uint64_t hash = 1469598103934665603ull; /* FNV-1a of the header */
  for (int i = 0; i < w; i++)
    hash = (hash ^ (unsigned char)head[i]) * 1099511628211ull;
  w = snprintf(path, np, "%s/plans-sm%d-%016llx.list", dir, ctx->cc,
               (unsigned long long)hash);
  return w > 0 && (size_t)w < np;
}

void weft__cuda_kept_use(weft__cuda_ctx *ctx, int kind, const int64_t *key) {
  pthread_mutex_lock(&ctx->plans_mu);
  if (ctx->n_used == ctx->cap_used && ctx->cap_used < WEFT__KEPT_MAX_PLANS) {
    int cap = ctx->cap_used ? 2 * ctx->cap_used : 64;
    weft__kept_plan *p = realloc(ctx->used, (size_t)cap * sizeof *p);
    if (p) ctx->used = p, ctx->cap_used = cap;
  }
  if (ctx->n_used < ctx->cap_used) {
    weft__kept_plan *p = &ctx->used[ctx->n_used++];
    memset(p, 0, sizeof *p);
    p->kind = kind;
    memcpy(p->key, key, (size_t)weft__kept_key_len[kind] * sizeof *key);
  }
  pthread_mutex_unlock(&ctx->plans_mu);
}

int weft_cuda_keep_plans(const weft_backend *be) {
  if (!weft_backend_is_cuda(be)) return WEFT_EINVAL;
  weft__cuda_ctx *ctx = WEFT__CUDA_CTX(be);
  char path[4608], tmp[4800], head[256];
  if (!list_names(ctx, path, sizeof path, head, sizeof head)) return 0;
  enum { LINE = 32 + WEFT__KEPT_KEY_MAX * 21 };
  pthread_mutex_lock(&ctx->plans_mu);
  const int n = ctx->n_used;
  if (n <= ctx->n_written) { /* nothing new since the last list */
    pthread_mutex_unlock(&ctx->plans_mu);
    return 0;
  }
  char *text = malloc(strlen(head) + 1 + (size_t)n * LINE);
  size_t len = 0;
  if (text) {
    len = (size_t)sprintf(text, "%s\n", head);
    for (int i = 0; i < n; i++)
      len += weft__plans_format(text + len, LINE, ctx->used[i].kind,
                                ctx->used[i].key);
  }
  pthread_mutex_unlock(&ctx->plans_mu);
  if (!text) return WEFT_ENOMEM;
  /* a name of this process's own, also where hosts share the folder; the
   * list replaced whole, by rename */
  char host[64] = "";
  gethostname(host, sizeof host - 1);
  snprintf(tmp, sizeof tmp, "%s.%.63s.%ld.tmp", path, host, (long)getpid());
  FILE *f = fopen(tmp, "wb");
  bool ok = f && fwrite(text, 1, len, f) == len;
  if (f && fclose(f) != 0) ok = false;
  if (f && (!ok || rename(tmp, path) != 0)) {
    ok = false;
    unlink(tmp);
  }
  free(text);
  if (!ok) return WEFT_EIO;
  pthread_mutex_lock(&ctx->plans_mu);
  if (n > ctx->n_written) ctx->n_written = n;
  ctx->plans.kept_listed = (uint64_t)ctx->n_written;
  pthread_mutex_unlock(&ctx->plans_mu);
  return 0;
}

static void take(void *user, int kind, const int64_t *key) {
  weft__cuda_ctx *ctx = user;
  weft__kept_plan *p = &ctx->ahead[ctx->n_ahead++];
  memset(p, 0, sizeof *p);
  p->kind = kind;
  memcpy(p->key, key, (size_t)weft__kept_key_len[kind] * sizeof *key);
}

void weft__cuda_plans_ahead_read(weft__cuda_ctx *ctx) {
  static int env = -1;
  char path[4608], head[256];
  if (ctx->ahead || !weft__cuda_env_on("WEFT_CUDA_PLANS_AHEAD", &env) ||
      !list_names(ctx, path, sizeof path, head, sizeof head))
    return;
  FILE *f = fopen(path, "rb");
  if (!f) return;
  /* the longest list weft writes, and some */
  enum { MAX_TEXT = WEFT__KEPT_MAX_PLANS * (32 + WEFT__KEPT_KEY_MAX * 21) };
  char *buf = malloc(MAX_TEXT);
  size_t n = buf ? fread(buf, 1, MAX_TEXT, f) : 0;
  fclose(f);
  ctx->ahead = n ? malloc(WEFT__KEPT_MAX_PLANS * sizeof *ctx->ahead) : NULL;
  if (ctx->ahead && weft__plans_parse(buf, n, head, take, ctx) <= 0) {
    free(ctx->ahead);
    ctx->ahead = NULL;
    ctx->n_ahead = 0;
  }
  free(buf);
  pthread_mutex_lock(&ctx->plans_mu);
  ctx->plans.ahead_listed = (uint64_t)ctx->n_ahead;
  pthread_mutex_unlock(&ctx->plans_mu);
}
