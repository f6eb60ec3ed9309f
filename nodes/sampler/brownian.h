/* brownian.h - a Brownian path for the SDE samplers (dpmpp_sde,
 * dpmpp_2m_sde): W(t) on [t0, t1] sampled lazily as a virtual Brownian tree,
 * so any two queries of the same path agree, as torchsde's BrownianTree
 * does.  The path is a deterministic function of (seed, n, t0, t1); it is a
 * Brownian motion with the same law as ComfyUI's, not bit-identical to
 * torchsde's (which draws its values through its own splittable PRNG). */
#ifndef WEFT_SAMPLER_BROWNIAN_H
#define WEFT_SAMPLER_BROWNIAN_H

#include <stdint.h>

typedef struct weft_brownian {
  int64_t n;
  float t0, t1;
  uint64_t seed;
  float *w1;   /* W(t1) */
  float *a, *b, *z; /* scratch: W at the bracket ends, a fresh normal */
} weft_brownian;

/* Returns 0 or WEFT_ENOMEM.  t0 < t1. */
int weft_brownian_init(weft_brownian *b, int64_t n, float t0, float t1,
                       uint64_t seed);
void weft_brownian_free(weft_brownian *b);
/* out = W(t), n values; t is clamped into [t0, t1]. */
void weft_brownian_at(weft_brownian *b, float t, float *out);
/* ComfyUI's BrownianTreeNoiseSampler: (W(s_next) - W(s)) / sqrt|s_next - s|,
 * into out; tmp holds n floats. */
void weft_brownian_noise(weft_brownian *b, float s, float s_next, float *out,
                         float *tmp);

#endif
