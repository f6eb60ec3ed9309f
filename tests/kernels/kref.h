/* kref.h - helpers shared by the kernel tests: a seeded RNG, tensor
 * comparison with a stated tolerance, and a context per instruction set. */
#ifndef WEFT_TEST_KREF_H
#define WEFT_TEST_KREF_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu.h"
#include "test.h"

static inline uint64_t kr_next(uint64_t *s) { /* splitmix64 */
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* uniform in [lo, hi) */
static inline float kr_unif(uint64_t *s, float lo, float hi) {
  return lo + (hi - lo) * (float)((kr_next(s) >> 40) * 0x1p-24);
}

static inline float *kr_rand(uint64_t *s, int64_t n, float lo, float hi) {
  float *p = malloc((size_t)(n ? n : 1) * sizeof(float));
  ASSERT(p);
  for (int64_t i = 0; i < n; i++)
    p[i] = kr_unif(s, lo, hi);
  return p;
}

static inline void *kr_zalloc(size_t n) {
  void *p = calloc(n ? n : 1, 1);
  ASSERT(p);
  return p;
}

/* Asserts |got[i] - ref[i]| <= atol + rtol * |scale[i]| for all i, where
 * scale is ref itself when scale == NULL (an error bound proportional to
 * the magnitude of the terms summed, e.g. sum |a||b| for a dot product).
 * Reports the worst element. */
#define ASSERT_CLOSE(got, ref, scale, n, atol, rtol)                           \
  kr_assert_close(__FILE__, __LINE__, #got, got, ref, scale, n, atol, rtol)

static inline void kr_assert_close(const char *file, int line, const char *what,
                                   const float *got, const double *ref,
                                   const double *scale, int64_t n, double atol,
                                   double rtol) {
  int64_t worst = -1;
  double worst_ratio = 0;
  for (int64_t i = 0; i < n; i++) {
    double s = scale ? scale[i] : ref[i];
    double tol = atol + rtol * fabs(s);
    double err = fabs((double)got[i] - ref[i]);
    if (isnan(got[i]) != isnan(ref[i]) || err > tol) {
      if (isnan(err) || err / tol > worst_ratio || worst < 0) {
        worst = i;
        worst_ratio = isnan(err) ? INFINITY : err / tol;
      }
    }
  }
  if (worst >= 0) {
    fprintf(stderr,
            "%s:%d: %s[%lld] = %.9g, reference %.9g (diff %.3g, tol %.3g)\n",
            file, line, what, (long long)worst, got[worst], ref[worst],
            fabs((double)got[worst] - ref[worst]),
            atol + rtol * fabs(scale ? scale[worst] : ref[worst]));
    abort();
  }
}

/* Maximum relative-to-tolerance error, to print measured accuracy. */
static inline double kr_max_abs_err(const float *got, const double *ref,
                                    int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; i++) {
    double e = fabs((double)got[i] - ref[i]);
    if (e > m) m = e;
  }
  return m;
}

/* Contexts to run a case on: every ISA this CPU has, 2 threads each. */
static inline int kr_isas(weft_cpu_isa out[2]) {
  int n = 0;
  out[n++] = WEFT_CPU_ISA_PORTABLE;
  weft_cpu_ctx *c = weft_cpu_ctx_new(1);
  ASSERT(c);
  if (weft_cpu_set_isa(c, WEFT_CPU_ISA_AVX2) == 0) out[n++] = WEFT_CPU_ISA_AVX2;
  weft_cpu_ctx_free(c);
  return n;
}

static inline weft_cpu_ctx *kr_ctx(weft_cpu_isa isa, int threads) {
  weft_cpu_ctx *c = weft_cpu_ctx_new(threads);
  ASSERT(c);
  ASSERT_OK(weft_cpu_set_isa(c, isa));
  return c;
}

#endif
