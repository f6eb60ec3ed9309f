/* samplers.h - ComfyUI's k-diffusion samplers over a denoiser callback.
 * x is one flat float array (the whole latent batch); every sampler
 * follows comfy/k_diffusion/sampling.py (uni_pc: comfy/extra_samplers). */
#ifndef WEFT_SAMPLER_SAMPLERS_H
#define WEFT_SAMPLER_SAMPLERS_H

#include <stdint.h>

typedef struct weft_sampler_io {
  int64_t n; /* elements of x */
  /* denoised = D(x, sigma), the model's (CFG-combined) estimate of the clean
   * latent.  Returns 0 or a negative WEFT_E* code. */
  int (*denoise)(void *user, const float *x, float sigma, float *denoised);
  /* n standard-normal values for the step sigma -> sigma_next (ancestral
   * and SDE samplers).  Returns 0 or a negative code. */
  int (*noise)(void *user, float sigma, float sigma_next, float *out);
  /* After step k (1-based) of total with the sampler's current x (uni_pc:
   * in its VP space, x / sqrt(1 + sigma^2)).  Non-zero stops sampling and is
   * returned (cancellation).  May be NULL. */
  int (*step)(void *user, int k, int total, const float *x);
  void *user;
} weft_sampler_io;

/* Which noise a sampler draws: none, one randn per call (ComfyUI's default
 * noise sampler), or a Brownian path (dpmpp_sde, dpmpp_2m_sde). */
typedef enum {
  WEFT_NOISE_NONE,
  WEFT_NOISE_DEFAULT,
  WEFT_NOISE_BROWNIAN
} weft_noise_kind;

/* The sampler's noise kind; -1 for an unknown name. */
int weft_sampler_noise_kind(const char *sampler);

/* Runs `sampler` over sigmas[0..n_sigmas-1], x in place (already noise
 * scaled, see weft_sampler_start).  Returns 0, the first callback error, or
 * WEFT_EINVAL for an unknown sampler. */
int weft_sample(const char *sampler, const weft_sampler_io *io, float *x,
                const float *sigmas, int n_sigmas);

/* KSAMPLER's starting point: x = latent + noise * sigma0, or
 * noise * sqrt(1 + sigma0^2) + latent when sigma0 is the schedule's maximum
 * (a full denoise). latent may be NULL (zeros). */
void weft_sampler_start(float *x, const float *noise, const float *latent,
                        int64_t n, float sigma0, float sigma_max);

#endif
