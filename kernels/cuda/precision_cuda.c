/* precision_cuda.c - the CUDA backend's precision mode (fp32, fp16, bf16
 * products) and its registry of device ranges that hold 16-bit weights. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int weft__cuda_ranges_init(weft__cuda_ranges *r) {
  memset(r, 0, sizeof *r);
  return pthread_mutex_init(&r->mu, NULL) == 0 ? 0 : WEFT_ENOMEM;
}

void weft__cuda_ranges_destroy(weft__cuda_ranges *r) {
  free(r->r);
  r->r = NULL;
  r->n = r->cap = 0;
  pthread_mutex_destroy(&r->mu);
}

/* Index of the first range with lo > p (ranges sorted by lo). */
static size_t upper_bound(const weft__cuda_ranges *r, uintptr_t p) {
  size_t lo = 0, hi = r->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (r->r[mid].lo <= p)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* The range of r holding p, copied into *out; false where none does. */
static bool ranges_find(weft__cuda_ranges *r, const void *p,
                        weft__cuda_range *out) {
  const uintptr_t u = (uintptr_t)p;
  bool found = false;
  if (!p) return false;
  pthread_mutex_lock(&r->mu);
  if (r->n) {
    size_t i = upper_bound(r, u);
    if (i > 0 && u < r->r[i - 1].hi) *out = r->r[i - 1], found = true;
  }
  pthread_mutex_unlock(&r->mu);
  return found;
}

weft_dtype weft__cuda_weight_dtype(weft__cuda_ctx *ctx, const void *p) {
  weft__cuda_range m;
  return ranges_find(&ctx->half, p, &m) ? m.dtype : WEFT_F32;
}

int weft__cuda_precision_resolve(weft_cuda_precision in,
                                 weft_cuda_precision *out, char *err,
                                 size_t err_size) {
  if (in == WEFT_CUDA_FP32 || in == WEFT_CUDA_FP16 || in == WEFT_CUDA_BF16) {
    *out = in;
    return 0;
  }
  if (in != WEFT_CUDA_PRECISION_AUTO) {
    snprintf(err, err_size,
             "weft_cuda_options.precision = %d is not a "
             "weft_cuda_precision",
             (int)in);
    return WEFT_EINVAL;
  }
  const char *env = getenv("WEFT_PRECISION");
  if (!env || !*env) {
    *out = WEFT_CUDA_FP16;
    return 0;
  }
  if (!strcmp(env, "fp32"))
    *out = WEFT_CUDA_FP32;
  else if (!strcmp(env, "fp16"))
    *out = WEFT_CUDA_FP16;
  else if (!strcmp(env, "bf16"))
    *out = WEFT_CUDA_BF16;
  else {
    snprintf(err, err_size,
             "environment variable WEFT_PRECISION=\"%.64s\": expected fp32, "
             "fp16 or bf16",
             env);
    return WEFT_EINVAL;
  }
  return 0;
}

int weft_cuda_set_precision(weft_backend *be, weft_cuda_precision p) {
  if (!weft_backend_is_cuda(be) ||
      (p != WEFT_CUDA_FP32 && p != WEFT_CUDA_FP16 && p != WEFT_CUDA_BF16))
    return WEFT_EINVAL;
  weft__cuda_ctx *ctx = WEFT__CUDA_CTX(be);
  /* 16-bit activations are the compute dtype's: they cannot change under
   * buffers that hold them */
  if (ctx->act != WEFT_F32 && p != ctx->precision) return WEFT_EINVAL;
  ctx->precision = p;
  return 0;
}

weft_cuda_precision weft_cuda_get_precision(const weft_backend *be) {
  return weft_backend_is_cuda(be) ? WEFT__CUDA_CTX(be)->precision
                                  : WEFT_CUDA_FP32;
}

const char *weft_cuda_precision_name(weft_cuda_precision p) {
  switch (p) {
  case WEFT_CUDA_FP32: return "fp32";
  case WEFT_CUDA_FP16: return "fp16";
  case WEFT_CUDA_BF16: return "bf16";
  default: return "?";
  }
}

int weft_cuda_mark_half_as(weft_backend *be, const void *buf, size_t bytes,
                           weft_dtype dtype) {
  if (!weft_backend_is_cuda(be)) return WEFT_EINVAL;
  return weft__cuda_mark_range(WEFT__CUDA_CTX(be), buf, bytes, dtype);
}

/* Adds [buf, buf + bytes) to r (what: the caller's name for errors). */
static int ranges_add(weft__cuda_ctx *ctx, weft__cuda_ranges *r,
                      const char *what, const void *buf, size_t bytes,
                      weft_dtype dtype, uintptr_t to) {
  if (!buf || bytes == 0 || (dtype != WEFT_F16 && dtype != WEFT_BF16))
    return WEFT_EINVAL;
  uintptr_t lo = (uintptr_t)buf, hi = lo + bytes;
  if (hi < lo) return WEFT_EINVAL;
  int rc = 0;
  pthread_mutex_lock(&r->mu);
  size_t i = upper_bound(r, lo); /* insert before i */
  if ((i > 0 && r->r[i - 1].hi > lo) || (i < r->n && r->r[i].lo < hi)) {
    rc = weft__cuda_fail(ctx, WEFT_EINVAL,
                         "%s(%p, %zu bytes): overlaps a range already marked",
                         what, buf, bytes);
    goto out;
  }
  if (r->n == r->cap) {
    size_t nc = r->cap ? r->cap * 2 : 16;
    weft__cuda_range *na = realloc(r->r, nc * sizeof *na);
    if (!na) {
      rc = WEFT_ENOMEM;
      goto out;
    }
    r->r = na;
    r->cap = nc;
  }
  memmove(r->r + i + 1, r->r + i, (r->n - i) * sizeof *r->r);
  r->r[i] = (weft__cuda_range){lo, hi, dtype, to};
  r->n++;
out:
  pthread_mutex_unlock(&r->mu);
  return rc;
}

int weft__cuda_mark_range(weft__cuda_ctx *ctx, const void *buf, size_t bytes,
                          weft_dtype dtype) {
  return ranges_add(ctx, &ctx->half, "weft_cuda_mark_half", buf, bytes, dtype,
                    0);
}

int weft_cuda_mark_half(weft_backend *be, const void *buf, size_t bytes) {
  if (!weft_backend_is_cuda(be)) return WEFT_EINVAL;
  weft_cuda_precision p = WEFT__CUDA_CTX(be)->precision;
  if (p == WEFT_CUDA_FP32)
    return weft__cuda_fail(WEFT__CUDA_CTX(be), WEFT_EINVAL,
                           "weft_cuda_mark_half: the backend computes in "
                           "fp32; set fp16 or bf16 first (or use "
                           "weft_cuda_mark_half_as)");
  return weft_cuda_mark_half_as(be, buf, bytes,
                                p == WEFT_CUDA_BF16 ? WEFT_BF16 : WEFT_F16);
}

int weft_cuda_unmark_half(weft_backend *be, const void *buf) {
  if (!weft_backend_is_cuda(be)) return WEFT_EINVAL;
  return weft__cuda_unmark_range(WEFT__CUDA_CTX(be), buf);
}

static int ranges_remove(weft__cuda_ranges *r, const void *buf) {
  if (!buf) return WEFT_EINVAL;
  uintptr_t lo = (uintptr_t)buf;
  int rc = WEFT_EINVAL;
  pthread_mutex_lock(&r->mu);
  size_t i = upper_bound(r, lo);
  if (i > 0 && r->r[i - 1].lo == lo) {
    memmove(r->r + i - 1, r->r + i, (r->n - i) * sizeof *r->r);
    r->n--;
    rc = 0;
  }
  pthread_mutex_unlock(&r->mu);
  return rc;
}

int weft__cuda_unmark_range(weft__cuda_ctx *ctx, const void *buf) {
  return ranges_remove(&ctx->half, buf);
}

int weft_cuda_mark_mirror(weft_backend *be, const float *f32, size_t bytes,
                          const void *h16, weft_dtype dtype) {
  if (!weft_backend_is_cuda(be) || !h16 || bytes % sizeof(float) ||
      (uintptr_t)f32 % sizeof(float) || (uintptr_t)h16 % 2)
    return WEFT_EINVAL;
  return ranges_add(WEFT__CUDA_CTX(be), &WEFT__CUDA_CTX(be)->mirror,
                    "weft_cuda_mark_mirror", f32, bytes, dtype, (uintptr_t)h16);
}

int weft_cuda_unmark_mirror(weft_backend *be, const float *f32) {
  if (!weft_backend_is_cuda(be)) return WEFT_EINVAL;
  return ranges_remove(&WEFT__CUDA_CTX(be)->mirror, f32);
}

const void *weft__cuda_mirror16(weft__cuda_ctx *ctx, const float *p,
                                weft_dtype dt) {
  weft__cuda_range m;
  if (!ranges_find(&ctx->mirror, p, &m) || m.dtype != dt) return NULL;
  return (const void *)(m.to + ((uintptr_t)p - m.lo) / 2);
}

weft_dtype weft_cuda_half_dtype(const weft_backend *be, const void *p) {
  if (!weft_backend_is_cuda(be)) return WEFT_F32;
  return weft__cuda_weight_dtype(WEFT__CUDA_CTX(be), p);
}

int weft_cuda_gemm16_counts(const weft_backend *be, uint64_t *lt,
                            uint64_t *fallback) {
  if (!weft_backend_is_cuda(be) || !lt || !fallback) return WEFT_EINVAL;
  *lt = WEFT__CUDA_CTX(be)->n_lt;
  *fallback = WEFT__CUDA_CTX(be)->n_lt_fallback;
  return 0;
}
