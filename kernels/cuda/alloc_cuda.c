/* alloc_cuda.c - the CUDA backend's caching allocator: cudaMalloc only on a
 * cache miss, freed blocks kept for reuse, every driver call counted.
 *
 * Why not cudaMallocAsync: its pool hides whether the driver was asked for
 * memory, and issue 7 wants a test that asserts no allocation in a run's
 * steady state.  Reuse is safe without events because every op of a backend
 * runs on its one stream: work queued after a block's reuse runs after all
 * work queued before its free. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Sizes round up to 512 bytes below 1 MiB and to 1 MiB above, so a tensor
 * of a given shape always asks for the same block size. */
static size_t round_size(size_t n) {
  if (n == 0) n = 1;
  if (n < (1u << 20)) return (n + 511) & ~(size_t)511;
  return (n + (1u << 20) - 1) & ~(((size_t)1 << 20) - 1);
}

/* A cached block serves a request when it is at most this much larger:
 * a quarter (a big block cut into a small request wastes memory that a
 * planner would count). */
static bool fits(size_t have, size_t want) {
  return have >= want && have - want <= want / 4;
}

/* WEFT_CUDA_ALLOC_LOG=1: every cudaMalloc (a cache miss) on stderr. */
static bool alloc_log(void) {
  static int level = -1;
  return weft__cuda_env_int("WEFT_CUDA_ALLOC_LOG", &level) != 0;
}

static bool push(weft__cuda_block **arr, size_t *n, size_t *cap,
                 weft__cuda_block b) {
  if (*n == *cap) {
    size_t nc = *cap ? *cap * 2 : 64;
    weft__cuda_block *na = realloc(*arr, nc * sizeof *na);
    if (!na) return false;
    *arr = na;
    *cap = nc;
  }
  (*arr)[(*n)++] = b;
  return true;
}

int weft__cuda_cache_init(weft__cuda_cache *c) {
  memset(c, 0, sizeof *c);
  if (pthread_mutex_init(&c->mu, NULL) != 0) return WEFT_ENOMEM;
  return 0;
}

/* Frees the cached blocks; caller holds the mutex. */
static void release_cached(weft__cuda_ctx *ctx) {
  weft__cuda_cache *c = &ctx->cache;
  for (size_t i = 0; i < c->n_free_blocks; i++) {
    cudaFree(c->free_blocks[i].ptr);
    c->st.n_free++;
    c->st.reserved -= c->free_blocks[i].size;
  }
  c->n_free_blocks = 0;
}

void weft__cuda_cache_destroy(weft__cuda_ctx *ctx) {
  weft__cuda_cache *c = &ctx->cache;
  pthread_mutex_lock(&c->mu);
  release_cached(ctx);
  for (size_t i = 0; i < c->n_live; i++)
    cudaFree(c->live[i].ptr);
  c->n_live = 0;
  free(c->free_blocks);
  free(c->live);
  c->free_blocks = c->live = NULL;
  pthread_mutex_unlock(&c->mu);
  pthread_mutex_destroy(&c->mu);
}

void *weft__cuda_alloc(weft__cuda_ctx *ctx, size_t nbytes) {
  weft__cuda_cache *c = &ctx->cache;
  size_t want = round_size(nbytes);
  if (want < nbytes) return NULL; /* overflow */
  pthread_mutex_lock(&c->mu);
  /* best fit among the cached blocks */
  size_t best = (size_t)-1;
  for (size_t i = 0; i < c->n_free_blocks; i++)
    if (fits(c->free_blocks[i].size, want) &&
        (best == (size_t)-1 ||
         c->free_blocks[i].size < c->free_blocks[best].size))
      best = i;
  weft__cuda_block b = {NULL, 0};
  if (best != (size_t)-1) {
    b = c->free_blocks[best];
    c->free_blocks[best] = c->free_blocks[--c->n_free_blocks];
  } else {
    cudaError_t e = cudaMalloc(&b.ptr, want);
    c->st.n_malloc++;
    if (e == cudaErrorMemoryAllocation && c->n_free_blocks) {
      /* Out of memory with blocks cached: give them back and try again
       * (cudaFree waits for the device, so no queued work still uses
       * them). */
      cudaGetLastError();
      release_cached(ctx);
      e = cudaMalloc(&b.ptr, want);
      c->st.n_malloc++;
    }
    if (e != cudaSuccess) {
      cudaGetLastError(); /* allocation errors are not sticky; clear it */
      pthread_mutex_unlock(&c->mu);
      weft__cuda_fail(ctx, WEFT_ENOMEM, "cudaMalloc(%zu bytes): %s", want,
                      cudaGetErrorString(e));
      return NULL;
    }
    b.size = want;
    c->st.reserved += want;
    if (alloc_log())
      fprintf(stderr,
              "weft cuda: cudaMalloc %.1f MiB (reserved %.1f MiB, in use "
              "%.1f MiB, %zu blocks cached)\n",
              (double)want / 1048576.0, (double)c->st.reserved / 1048576.0,
              (double)(c->st.in_use + want) / 1048576.0, c->n_free_blocks);
    if (c->st.reserved > c->st.peak_reserved)
      c->st.peak_reserved = c->st.reserved;
  }
  if (!push(&c->live, &c->n_live, &c->cap_live, b)) {
    /* keep the block cached rather than leak it */
    if (!push(&c->free_blocks, &c->n_free_blocks, &c->cap_free_blocks, b)) {
      cudaFree(b.ptr);
      c->st.n_free++;
      c->st.reserved -= b.size;
    }
    pthread_mutex_unlock(&c->mu);
    weft__cuda_fail(ctx, WEFT_ENOMEM, "out of host memory");
    return NULL;
  }
  c->st.in_use += b.size;
  if (c->st.in_use > c->st.peak_in_use) c->st.peak_in_use = c->st.in_use;
  pthread_mutex_unlock(&c->mu);
  return b.ptr;
}

/* Ends the live block p: kept in the cache (keep), else -- or when the
 * cache cannot grow -- given back to the driver (cudaFree waits for the
 * device).  A pointer this backend never handed out is ignored (as free()
 * of a foreign pointer would be undefined, this is the safe reading). */
static void end_live(weft__cuda_ctx *ctx, void *p, bool keep) {
  if (!p) return;
  weft__cuda_cache *c = &ctx->cache;
  pthread_mutex_lock(&c->mu);
  /* search from the end: temporaries are freed in about LIFO order */
  for (size_t i = c->n_live; i-- > 0;) {
    if (c->live[i].ptr != p) continue;
    weft__cuda_block b = c->live[i];
    c->live[i] = c->live[--c->n_live];
    c->st.in_use -= b.size;
    if (!keep ||
        !push(&c->free_blocks, &c->n_free_blocks, &c->cap_free_blocks, b)) {
      cudaFree(b.ptr);
      c->st.n_free++;
      c->st.reserved -= b.size;
    }
    break;
  }
  pthread_mutex_unlock(&c->mu);
}

void weft__cuda_free(weft__cuda_ctx *ctx, void *p) {
  end_live(ctx, p, true);
}

static void drop_scratch(weft__cuda_ctx *ctx) {
  if (ctx->op_scratch) ctx->scratch_gen++;
  end_live(ctx, ctx->op_scratch, false);
  ctx->op_scratch = NULL;
  ctx->op_scratch_bytes = 0;
}

void *weft__cuda_scratch(weft__cuda_ctx *ctx, size_t nbytes) {
  if (ctx->op_scratch && ctx->op_scratch_bytes >= nbytes)
    return ctx->op_scratch;
  drop_scratch(ctx);
  if ((ctx->op_scratch = weft__cuda_alloc(ctx, nbytes)))
    ctx->op_scratch_bytes = nbytes;
  return ctx->op_scratch;
}

int weft__cuda_cache_trim(weft__cuda_ctx *ctx) {
  int rc = weft__cuda_check(ctx, cudaStreamSynchronize(ctx->stream),
                            "cudaStreamSynchronize");
  drop_scratch(ctx);
  pthread_mutex_lock(&ctx->cache.mu);
  release_cached(ctx);
  pthread_mutex_unlock(&ctx->cache.mu);
  return rc;
}
