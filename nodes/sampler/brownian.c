/* brownian.c - the virtual Brownian tree: bisect [t0, t1] towards t,
 * drawing each midpoint from the Brownian bridge with a generator seeded by
 * the midpoint's position in the tree, then interpolate inside the final
 * interval. */
#include "brownian.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "weft/error.h"

/* finer than float resolution of sigmas in [0.03, 15] */
#define DEPTH 32

static uint64_t mix(uint64_t x) { /* splitmix64 finaliser */
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

static void normals(uint64_t seed, uint64_t node, float *out, int64_t n) {
  weft_torch_gen g;
  weft_torch_gen_seed(&g, mix(seed ^ mix(node)));
  weft_torch_randn(&g, out, n);
}

int weft_brownian_init(weft_brownian *b, int64_t n, float t0, float t1,
                       uint64_t seed) {
  memset(b, 0, sizeof *b);
  b->n = n;
  b->t0 = t0;
  b->t1 = t1;
  b->seed = seed;
  size_t bytes = (size_t)(n > 0 ? n : 1) * sizeof(float);
  b->w1 = malloc(bytes), b->a = malloc(bytes), b->b = malloc(bytes);
  b->z = malloc(bytes);
  if (!b->w1 || !b->a || !b->b || !b->z) {
    weft_brownian_free(b);
    return WEFT_ENOMEM;
  }
  normals(seed, 1, b->w1, n);
  float s = sqrtf(t1 - t0);
  for (int64_t i = 0; i < n; i++) b->w1[i] *= s;
  return 0;
}

void weft_brownian_free(weft_brownian *b) {
  free(b->w1), free(b->a), free(b->b), free(b->z);
  b->w1 = b->a = b->b = b->z = NULL;
}

void weft_brownian_at(weft_brownian *b, float t, float *out) {
  const int64_t n = b->n;
  if (t <= b->t0) {
    memset(out, 0, (size_t)n * sizeof *out);
    return;
  }
  if (t >= b->t1) {
    memcpy(out, b->w1, (size_t)n * sizeof *out);
    return;
  }
  double lo = b->t0, hi = b->t1;
  float *wa = b->a, *wb = b->b;
  memset(wa, 0, (size_t)n * sizeof *wa);
  memcpy(wb, b->w1, (size_t)n * sizeof *wb);
  /* node: the heap index of [lo, hi] (root 1), which alone decides its
   * midpoint's draw, so every query sees the same path */
  uint64_t node = 1;
  for (int d = 0; d < DEPTH; d++) {
    double mid = 0.5 * (lo + hi);
    normals(b->seed, node + 1, b->z, n); /* node 1's draw is W(t1)'s */
    float sd = (float)sqrt((hi - lo) / 4.0);
    float *side = t < mid ? wb : wa;
    for (int64_t i = 0; i < n; i++)
      side[i] = 0.5f * (wa[i] + wb[i]) + sd * b->z[i];
    if (t < mid) {
      hi = mid;
      node = 2 * node;
    } else {
      lo = mid;
      node = 2 * node + 1;
    }
    if (t == mid) break;
  }
  float f = (float)((t - lo) / (hi - lo));
  for (int64_t i = 0; i < n; i++) out[i] = wa[i] + (wb[i] - wa[i]) * f;
}

void weft_brownian_noise(weft_brownian *b, float s, float s_next, float *out,
                         float *tmp) {
  weft_brownian_at(b, s, tmp);
  weft_brownian_at(b, s_next, out);
  float inv = 1.0f / sqrtf(fabsf(s_next - s));
  for (int64_t i = 0; i < b->n; i++) out[i] = (out[i] - tmp[i]) * inv;
}
