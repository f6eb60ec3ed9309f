/* schedule.h - the discrete-time noise schedule of SD-style models and
 * ComfyUI's schedulers (the sigmas a KSampler steps through). */
#ifndef WEFT_SAMPLER_SCHEDULE_H
#define WEFT_SAMPLER_SCHEDULE_H

#include <stdbool.h>

#define WEFT_SCHED_T 1000

/* ComfyUI's ModelSamplingDiscrete: betas from a "linear" (diffusers'
 * scaled_linear) schedule, computed in double, stored in float as ComfyUI
 * does. */
typedef struct weft_schedule {
  double betas[WEFT_SCHED_T];
  double alphas_cumprod[WEFT_SCHED_T];
  float sigmas[WEFT_SCHED_T];     /* increasing, sigma_min = sigmas[0] */
  float log_sigmas[WEFT_SCHED_T]; /* log of the double sigmas, rounded */
} weft_schedule;

void weft_schedule_init(weft_schedule *s, double linear_start,
                        double linear_end);
static inline float weft_schedule_sigma_min(const weft_schedule *s) {
  return s->sigmas[0];
}
static inline float weft_schedule_sigma_max(const weft_schedule *s) {
  return s->sigmas[WEFT_SCHED_T - 1];
}
/* sigma -> the integer timestep whose log sigma is nearest (the first on a
 * tie), as the UNet receives it. */
int weft_schedule_timestep(const weft_schedule *s, float sigma);
/* timestep (fractional) -> sigma, interpolating log sigma. */
float weft_schedule_sigma(const weft_schedule *s, float t);

/* The scheduler names, NULL-terminated, in ComfyUI's order. */
extern const char *const weft_scheduler_names[];
/* The sampler names weft implements, NULL-terminated. */
extern const char *const weft_sampler_names[];

/* Fills out[0..steps] (steps + 1 values, the last 0 for every scheduler but
 * ddim_uniform variants that end on the table) for a named scheduler;
 * returns the count written (at most steps + 2), or -1 for an unknown name.
 * out must hold steps + 2 floats. */
int weft_scheduler_sigmas(const weft_schedule *s, const char *scheduler,
                          int steps, float *out);

/* KSampler's sigmas: the scheduler at `steps`, or at steps/denoise keeping
 * the last steps + 1 (denoise < 1), with the penultimate sigma dropped for
 * samplers that want it (dpm_2, dpm_2_ancestral, uni_pc).  out must hold
 * steps / denoise + 3 floats; returns the count, 0 for denoise <= 0, or -1
 * for an unknown scheduler. */
int weft_ksampler_sigmas(const weft_schedule *s, const char *scheduler,
                         const char *sampler, int steps, double denoise,
                         float *out, int cap);
/* KSamplerAdvanced's window: keep sigmas[start..end] (end clipped; with
 * force_full_denoise the last becomes 0).  Shifts in place and returns the
 * new count; 0 when start is past the end (nothing to do). */
int weft_sigmas_window(float *sig, int n, int start, int end,
                       bool force_full_denoise);

#endif
