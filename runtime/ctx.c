/* ctx.c - the context: settings, last error, registry and caches. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

int weft_ctx_new(weft_ctx **out) {
  weft_ctx *ctx = calloc(1, sizeof *ctx);
  if (!ctx) return WEFT_ENOMEM;
  ctx->output_dir = strdup("output");
  ctx->input_dir = strdup(".");
  if (!ctx->output_dir || !ctx->input_dir || uv_mutex_init(&ctx->lock)) {
    free(ctx->output_dir);
    free(ctx->input_dir);
    free(ctx);
    return WEFT_ENOMEM;
  }
  atomic_init(&ctx->cancelled, 0);
  weft__cache_init(&ctx->cache);
  *out = ctx;
  return 0;
}

void weft_ctx_free(weft_ctx *ctx) {
  if (!ctx) return;
  weft__cache_free(&ctx->cache);
  for (int i = 0; i < ctx->n_ops; i++) {
    free(ctx->ops[i].inputs);
    free(ctx->ops[i].outputs);
    free(ctx->ops[i].params);
    free(ctx->ops[i].origin);
  }
  free(ctx->ops);
  for (int i = 0; i < ctx->n_weights; i++) {
    weft_st_close(ctx->weights[i]->file);
    free(ctx->weights[i]->path);
    free(ctx->weights[i]);
  }
  free(ctx->weights);
  uv_mutex_destroy(&ctx->lock);
  free(ctx->output_dir);
  free(ctx->input_dir);
  free(ctx);
}

const char *weft_ctx_error(const weft_ctx *ctx) { return ctx->err; }

void weft_ctx_set_threads(weft_ctx *ctx, int n) { ctx->threads = n; }

int weft_ctx_threads(const weft_ctx *ctx) {
  if (ctx->threads > 0) return ctx->threads;
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

static int set_str(char **dst, const char *s) {
  char *c = strdup(s);
  if (!c) return WEFT_ENOMEM;
  free(*dst);
  *dst = c;
  return 0;
}

int weft_ctx_set_output_dir(weft_ctx *ctx, const char *dir) {
  return set_str(&ctx->output_dir, dir);
}

int weft_ctx_set_input_dir(weft_ctx *ctx, const char *dir) {
  return set_str(&ctx->input_dir, dir);
}

void weft_ctx_set_event_cb(weft_ctx *ctx, weft_event_cb cb, void *user) {
  ctx->ev_cb = cb;
  ctx->ev_user = user;
}

void weft_ctx_cancel(weft_ctx *ctx) {
  /* under the lock: the run queue clears ctx->wake under it before it
   * closes the handle, so the handle cannot go away between the load and
   * the send (weft.h: not for signal handlers) */
  atomic_store(&ctx->cancelled, 1);
  uv_mutex_lock(&ctx->lock);
  if (ctx->wake) uv_async_send(ctx->wake);
  uv_mutex_unlock(&ctx->lock);
}

void weft_ctx_cache_clear(weft_ctx *ctx) {
  weft__cache_free(&ctx->cache);
  weft__cache_init(&ctx->cache);
}
