/* rng.h - torch's CPU random number generator, reproduced: the same seed
 * gives the same noise as torch.manual_seed(seed); torch.randn(...) does, and
 * so the same starting latent as ComfyUI. */
#ifndef WEFT_SAMPLER_RNG_H
#define WEFT_SAMPLER_RNG_H

#include <stdbool.h>
#include <stdint.h>

typedef struct weft_torch_gen {
  uint32_t mt[624];
  int next;               /* index of the next state word to temper */
  int left;               /* words left before the state is regenerated */
  bool has_next_normal;   /* Box-Muller's second value, kept as torch does */
  double next_normal;
} weft_torch_gen;

/* torch.manual_seed(seed): MT19937 initialised from the low 32 bits. */
void weft_torch_gen_seed(weft_torch_gen *g, uint64_t seed);
/* One 32-bit MT19937 output (torch's generator->random()). */
uint32_t weft_torch_gen_u32(weft_torch_gen *g);

/* torch.randn(n, dtype=float32, generator=g) on a CPU with AVX2 (the path
 * torch takes on x86-64 without AVX-512): n >= 16 uses the 16-wide
 * Box-Muller fill with avx_mathfun's log and sincos, n < 16 torch's scalar
 * double-precision normal distribution. */
void weft_torch_randn(weft_torch_gen *g, float *out, int64_t n);

#endif
