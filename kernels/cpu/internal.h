/* internal.h - private to kernels/cpu: the context, the thread pool and the
 * per-ISA vector routines the kernels dispatch through. */
#ifndef WEFT_KERNELS_CPU_INTERNAL_H
#define WEFT_KERNELS_CPU_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "kernels/cpu/cpu.h"

/* ---- Thread pool -------------------------------------------------------- */

/* fn processes items [begin, end); tid < n_threads identifies the thread so
 * it can use its own slice of a per-call scratch buffer. */
typedef void (*weft__range_fn)(void *arg, int64_t begin, int64_t end, int tid);

typedef struct weft__pool {
  int n_threads; /* workers + the calling thread */
  pthread_t *workers;
  pthread_mutex_t run_mu; /* held by the caller that owns the pool */
  pthread_mutex_t mu;
  pthread_cond_t wake, done;
  uint64_t generation; /* bumped per job; workers wait for a new one */
  int pending;         /* workers still inside the current job */
  bool stop;
  /* current job */
  weft__range_fn fn;
  void *arg;
  int64_t n, chunk;
  atomic_llong next;
} weft__pool;

int weft__pool_init(weft__pool *p, int n_threads);
void weft__pool_destroy(weft__pool *p);

/* ---- Vector routines (one table per instruction set) -------------------- */

typedef struct weft__vec {
  const char *name;
  /* y = act(x) */
  void (*act)(weft_act act, const float *x, float *y, int64_t n);
  /* y = a * act(g) */
  void (*gated)(weft_act act, const float *a, const float *g, float *y,
                int64_t n);
  /* y = act(x * scale + shift), scale/shift broadcast (group norm apply) */
  void (*affine_act)(const float *x, float *y, int64_t n, float scale,
                     float shift, weft_act act);
  /* y = (x - mean) * rstd * gamma + beta, gamma/beta [n] or NULL */
  void (*norm_row)(const float *x, float *y, int64_t n, float mean, float rstd,
                   const float *gamma, const float *beta);
  /* sum(x) and sum((x - mean)^2), accumulated in double */
  double (*sum)(const float *x, int64_t n);
  double (*sqdev)(const float *x, int64_t n, double mean);
  /* y = softmax(x) over n (y may equal x) */
  void (*softmax_row)(const float *x, float *y, int64_t n);
  void (*f16_to_f32)(const uint16_t *x, float *y, int64_t n);
  void (*f32_to_f16)(const float *x, uint16_t *y, int64_t n);
  void (*bf16_to_f32)(const uint16_t *x, float *y, int64_t n);
  void (*f32_to_bf16)(const float *x, uint16_t *y, int64_t n);
} weft__vec;

extern const weft__vec weft__vec_portable;
#if defined(__x86_64__) || defined(__i386__)
#define WEFT_HAVE_AVX2_BUILD 1
extern const weft__vec weft__vec_avx2;
#endif
bool weft__cpu_has_avx2(void);

#ifdef WEFT_HAVE_AVX2_BUILD
/* Fused AVX2 attention (attention_avx2.c).  scratch holds n_threads slices
 * of per_thread = weft__attn_avx2_thread_bytes(a) bytes, 64-byte aligned. */
size_t weft__attn_avx2_thread_bytes(const weft_attn_args *a);
int weft__attn_avx2(weft_cpu_ctx *ctx, const weft_attn_args *a, float scale,
                    void *scratch, size_t per_thread);
#endif

/* ---- Context ------------------------------------------------------------ */

struct weft_cpu_ctx {
  weft__pool pool;
  const weft__vec *vec;
};

/* Runs fn over [0, n) on the pool in chunks of at least grain items; runs
 * it inline when n <= grain, with one thread, or when the pool is busy
 * (another caller, or a nested call from a worker). */
void weft__parallel_for(weft_cpu_ctx *ctx, int64_t n, int64_t grain,
                        weft__range_fn fn, void *arg);

/* Scalar reference conversions, shared by the portable table. */
float weft__f16_to_f32(uint16_t h);
uint16_t weft__f32_to_f16(float f);
float weft__bf16_to_f32(uint16_t h);
uint16_t weft__f32_to_bf16(float f);

/* 64-byte aligned scratch (free with free()). */
void *weft__alloc(size_t nbytes);

#endif
