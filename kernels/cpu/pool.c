/* pool.c - the CPU context and its persistent pthread pool (parallel-for).
 *
 * Workers sleep on a condition variable between jobs rather than spinning:
 * on a machine with few cores they share the CPUs with OpenBLAS's own
 * threads, and a spinning worker would steal time from a running GEMM. */
#include <cblas.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

void *weft__alloc(size_t nbytes) {
  void *p = NULL;
  if (posix_memalign(&p, 64, nbytes ? nbytes : 64) != 0) return NULL;
  return p;
}

/* Grabs chunks of the current job until none are left. */
static void pool_run_chunks(weft__pool *p, int tid) {
  for (;;) {
    int64_t b = atomic_fetch_add(&p->next, p->chunk);
    if (b >= p->n) break;
    int64_t e = b + p->chunk < p->n ? b + p->chunk : p->n;
    p->fn(p->arg, b, e, tid);
  }
}

typedef struct worker_arg {
  weft__pool *pool;
  int tid;
} worker_arg;

static void *pool_worker(void *varg) {
  worker_arg wa = *(worker_arg *)varg;
  free(varg);
  weft__pool *p = wa.pool;
  uint64_t seen = 0;
  pthread_mutex_lock(&p->mu);
  for (;;) {
    while (!p->stop && p->generation == seen)
      pthread_cond_wait(&p->wake, &p->mu);
    if (p->stop) break;
    seen = p->generation;
    pthread_mutex_unlock(&p->mu);
    pool_run_chunks(p, wa.tid);
    pthread_mutex_lock(&p->mu);
    if (--p->pending == 0) pthread_cond_signal(&p->done);
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

int weft__pool_init(weft__pool *p, int n_threads) {
  memset(p, 0, sizeof *p);
  if (n_threads < 1) n_threads = 1;
  p->n_threads = 1;
  pthread_mutex_init(&p->run_mu, NULL);
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->wake, NULL);
  pthread_cond_init(&p->done, NULL);
  atomic_init(&p->next, 0);
  if (n_threads == 1) return 0;
  p->workers = calloc((size_t)n_threads - 1, sizeof *p->workers);
  if (!p->workers) return WEFT_ENOMEM;
  for (int i = 1; i < n_threads; i++) {
    worker_arg *wa = malloc(sizeof *wa);
    if (!wa) break;
    wa->pool = p;
    wa->tid = i;
    if (pthread_create(&p->workers[i - 1], NULL, pool_worker, wa) != 0) {
      free(wa);
      break;
    }
    p->n_threads++;
  }
  return p->n_threads == n_threads ? 0 : WEFT_ENOMEM;
}

void weft__pool_destroy(weft__pool *p) {
  pthread_mutex_lock(&p->mu);
  p->stop = true;
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->mu);
  for (int i = 0; i < p->n_threads - 1; i++)
    pthread_join(p->workers[i], NULL);
  free(p->workers);
  p->workers = NULL;
  p->n_threads = 1;
  pthread_cond_destroy(&p->wake);
  pthread_cond_destroy(&p->done);
  pthread_mutex_destroy(&p->mu);
  pthread_mutex_destroy(&p->run_mu);
}

void weft__parallel_for(weft_cpu_ctx *ctx, int64_t n, int64_t grain,
                        weft__range_fn fn, void *arg) {
  if (n <= 0) return;
  weft__pool *p = &ctx->pool;
  if (grain < 1) grain = 1;
  if (p->n_threads == 1 || n <= grain ||
      pthread_mutex_trylock(&p->run_mu) != 0) {
    fn(arg, 0, n, 0);
    return;
  }
  /* About four chunks per thread balances uneven rows without paying much
   * for the shared counter. */
  int64_t chunk = (n + 4 * p->n_threads - 1) / (4 * p->n_threads);
  if (chunk < grain) chunk = grain;
  int helpers = (int)((n + chunk - 1) / chunk) - 1;
  if (helpers > p->n_threads - 1) helpers = p->n_threads - 1;
  p->fn = fn;
  p->arg = arg;
  p->n = n;
  p->chunk = chunk;
  atomic_store(&p->next, 0);
  pthread_mutex_lock(&p->mu);
  p->pending = p->n_threads - 1;
  p->generation++;
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->mu);
  (void)helpers;
  pool_run_chunks(p, 0);
  pthread_mutex_lock(&p->mu);
  while (p->pending > 0)
    pthread_cond_wait(&p->done, &p->mu);
  pthread_mutex_unlock(&p->mu);
  pthread_mutex_unlock(&p->run_mu);
}

/* ---- Context ------------------------------------------------------------ */

static int default_threads(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1 : n > 256 ? 256 : (int)n;
}

weft_cpu_ctx *weft_cpu_ctx_new(int n_threads) {
  weft_cpu_ctx *ctx = calloc(1, sizeof *ctx);
  if (!ctx) return NULL;
  if (n_threads <= 0) n_threads = default_threads();
  if (weft__pool_init(&ctx->pool, n_threads) != 0) {
    weft__pool_destroy(&ctx->pool);
    free(ctx);
    return NULL;
  }
  weft_cpu_set_isa(ctx, WEFT_CPU_ISA_AUTO);
  openblas_set_num_threads(n_threads);
  return ctx;
}

void weft_cpu_ctx_free(weft_cpu_ctx *ctx) {
  if (!ctx) return;
  weft__pool_destroy(&ctx->pool);
  free(ctx);
}

int weft_cpu_set_threads(weft_cpu_ctx *ctx, int n_threads) {
  if (n_threads <= 0) n_threads = default_threads();
  if (n_threads == ctx->pool.n_threads) {
    openblas_set_num_threads(n_threads);
    return 0;
  }
  weft__pool_destroy(&ctx->pool);
  int rc = weft__pool_init(&ctx->pool, n_threads);
  /* On failure the pool keeps the threads it could start; still usable. */
  openblas_set_num_threads(ctx->pool.n_threads);
  return rc;
}

int weft_cpu_get_threads(const weft_cpu_ctx *ctx) {
  return ctx->pool.n_threads;
}

#ifdef WEFT_HAVE_AVX2_BUILD
static bool probe_avx2(void) {
  /* CPUID directly: clang 14's __builtin_cpu_supports knows no "f16c" */
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  bool fma = c & bit_FMA, f16c = c & bit_F16C, osxsave = c & bit_OSXSAVE;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  bool avx2 = b & bit_AVX2;
  if (!(fma && f16c && avx2 && osxsave)) return false;
  /* the OS must save the YMM registers (XCR0 bits 1 and 2) */
  unsigned lo, hi;
  __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (lo & 6) == 6;
}
#endif

/* Asked once a process: CPUID traps to the hypervisor in a virtual
 * machine (about 90 us for the probe on the development VM), and
 * weft_cpu_convert_serial asks on every call -- a checkpoint's load makes
 * tens of thousands (one per channels-last weight row). */
bool weft__cpu_has_avx2(void) {
#ifdef WEFT_HAVE_AVX2_BUILD
  static int known = -1; /* two threads asking at once store the same */
  int v = __atomic_load_n(&known, __ATOMIC_RELAXED);
  if (v < 0) {
    v = probe_avx2();
    __atomic_store_n(&known, v, __ATOMIC_RELAXED);
  }
  return v;
#else
  return false;
#endif
}

int weft_cpu_set_isa(weft_cpu_ctx *ctx, weft_cpu_isa isa) {
  switch (isa) {
  case WEFT_CPU_ISA_PORTABLE: ctx->vec = &weft__vec_portable; return 0;
  case WEFT_CPU_ISA_AUTO:
  case WEFT_CPU_ISA_AVX2:
#ifdef WEFT_HAVE_AVX2_BUILD
    if (weft__cpu_has_avx2()) {
      ctx->vec = &weft__vec_avx2;
      return 0;
    }
#endif
    if (isa == WEFT_CPU_ISA_AVX2) return WEFT_EUNSUPPORTED;
    ctx->vec = &weft__vec_portable;
    return 0;
  }
  return WEFT_EINVAL;
}

const char *weft_cpu_isa_name(const weft_cpu_ctx *ctx) {
  return ctx->vec->name;
}
