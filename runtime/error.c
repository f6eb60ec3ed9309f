/* error.c - names, messages and exit codes of the WEFT_E* codes, and the
 * context's formatted last error. */
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "weft_config.h"

const char *weft_strerror(int err) {
  switch (err) {
  case WEFT_OK: return "success";
#define XX(name, msg, bad)                                                     \
  case WEFT_##name: return msg;
    WEFT_ERRNO_MAP(XX)
#undef XX
  default: return "unknown error";
  }
}

const char *weft_err_name(int err) {
  switch (err) {
  case WEFT_OK: return "OK";
#define XX(name, msg, bad)                                                     \
  case WEFT_##name: return #name;
    WEFT_ERRNO_MAP(XX)
#undef XX
  default: return "EUNKNOWN";
  }
}

int weft_exit_code(int err) {
  if (err == WEFT_ECANCELED) return 130;
  switch (err) {
  case WEFT_OK: return 0;
#define XX(name, msg, bad)                                                     \
  case WEFT_##name: return (bad) ? 2 : 1;
    WEFT_ERRNO_MAP(XX)
#undef XX
  default: return 1;
  }
}

const char *weft_version(void) { return WEFT_VERSION; }

int weft__verr(weft_ctx *ctx, int code, const weft_loc *loc, const char *fmt,
               va_list ap) {
  if (!ctx) return code;
  size_t n = 0;
  if (loc && loc->file) {
    if (loc->line > 0)
      n = (size_t)snprintf(ctx->err, sizeof ctx->err, "%s:%d:%d: ", loc->file,
                           loc->line, loc->col);
    else
      n = (size_t)snprintf(ctx->err, sizeof ctx->err, "%s: ", loc->file);
    if (n >= sizeof ctx->err) n = sizeof ctx->err - 1;
  }
  vsnprintf(ctx->err + n, sizeof ctx->err - n, fmt, ap);
  return code;
}

int weft__err(weft_ctx *ctx, int code, const weft_loc *loc, const char *fmt,
              ...) {
  va_list ap;
  va_start(ap, fmt);
  weft__verr(ctx, code, loc, fmt, ap);
  va_end(ap);
  return code;
}

void weft__err_suggest(weft_ctx *ctx, const char *name,
                       const char *const *candidates, int n) {
  const char *best = weft__closest(name, candidates, n);
  if (!best) return;
  size_t len = strlen(ctx->err);
  snprintf(ctx->err + len, sizeof ctx->err - len, " (did you mean '%s'?)",
           best);
}
