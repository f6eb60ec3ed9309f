/* test_plan_cuda.c - planned activations on a CUDA device: a sampler's
 * UNet calls replayed from one arena make no cudaMalloc after the first
 * step and give the unplanned latents; replays through CUDA graphs give
 * the replays' bits.  Skips without a GPU. */
#include <math.h>
#include <stdlib.h>

#include "../models/sd_fixture.h"
#include "kernels/cuda/cuda.h"
#include "sd_device.h"
#include "sd_plan.h"

enum { STEPS = 6 };
static const float SIGMAS[STEPS] = {14.6f, 8.0f, 4.1f, 2.2f, 0.7f, 0.1f};

static float frand(uint64_t *s) {
  *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
  return (float)((*s >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static weft_backend *gpu(void) {
  if (!weft_cuda_available()) weft_test_skip("no CUDA device");
  weft_backend *be = weft_backend_cuda_new(0);
  if (!be) weft_test_skip("CUDA device 0 cannot be used");
  return be;
}

/* STEPS euler-like steps at 16x16 with CFG; mallocs[k]: cudaMalloc calls
 * during step k */
static void sample(sd_unet *unet, weft_backend *be, bool planned,
                   const float *ctx, int64_t tokens, float *x,
                   uint64_t *mallocs, weft_rec_stats *st) {
  weft_schedule sched;
  weft_schedule_init(&sched, 0.00085, 0.012);
  const int64_t shape[4] = {1, 4, 16, 16}, n = 4 * 16 * 16;
  sd_denoiser d;
  ASSERT_OK(sd_denoiser_init(&d, unet, be, &sched, SD_PRED_EPS, shape, 7.5f,
                             ctx, tokens, ctx + tokens * 32, tokens));
  sd_denoise_plan p;
  memset(&p, 0, sizeof p);
  if (planned) ASSERT_OK(sd_denoise_plan_init(&p, &d));
  float *den = malloc((size_t)n * sizeof *den);
  for (int k = 0; k < STEPS; k++) {
    uint64_t before = weft_cuda_malloc_count(be);
    ASSERT_OK(planned ? sd_denoise_planned(&p, x, SIGMAS[k], den)
                      : sd_denoise(&d, x, SIGMAS[k], den));
    mallocs[k] = weft_cuda_malloc_count(be) - before;
    float next = k + 1 < STEPS ? SIGMAS[k + 1] : 0.0f;
    for (int64_t i = 0; i < n; i++)
      x[i] = den[i] + (x[i] - den[i]) * (next / SIGMAS[k]);
  }
  if (planned) ASSERT(sd_denoise_plan_stats(&p, 0, st));
  sd_denoise_plan_free(&p);
  free(den);
  sd_denoiser_free(&d);
}

TEST(cuda_sampler_replays_from_one_arena_and_through_graphs) {
  weft_backend *be = gpu();
  fx_model m;
  fx_model_open(&m, SD_LAYOUT_LDM);
  sd_unet *unet = NULL;
  ASSERT_OK(sd_unet_load(&m.ck, &unet));
  ASSERT_EQ(sd_unet_config(unet)->context_dim, 32);
  ASSERT_OK(sd_unet_to_backend(unet, be));
  const int64_t tokens = 77, n = 4 * 16 * 16;
  float *ctx = malloc((size_t)(2 * tokens * 32) * sizeof *ctx);
  float *x0 = malloc((size_t)n * sizeof *x0), *a = malloc((size_t)n * 4),
        *b = malloc((size_t)n * 4);
  uint64_t s = 99;
  for (int64_t i = 0; i < 2 * tokens * 32; i++)
    ctx[i] = frand(&s);
  for (int64_t i = 0; i < n; i++)
    x0[i] = frand(&s) * SIGMAS[0];
  memcpy(a, x0, (size_t)n * 4);
  memcpy(b, x0, (size_t)n * 4);
  uint64_t plain[STEPS], planned[STEPS], ungraphed[STEPS];
  weft_rec_stats st, sn;
  float *c = malloc((size_t)n * 4);
  memcpy(c, x0, (size_t)n * 4);
  sample(unet, be, false, ctx, tokens, a, plain, NULL);
  sample(unet, be, true, ctx, tokens, b, planned, &st);
  setenv("WEFT_GRAPHS", "0", 1);
  sample(unet, be, true, ctx, tokens, c, ungraphed, &sn);
  unsetenv("WEFT_GRAPHS");
  /* the graphs: captured by the first replay, launched by every replay,
   * the same kernels on the same buffers as the replays without them */
  ASSERT(st.graph_segments > 0);
  ASSERT_EQ(st.graph_launches, (uint64_t)((STEPS - 1) * st.graph_segments));
  ASSERT_EQ(st.graph_failures, 0);
  ASSERT_EQ(sn.graph_segments, 0);
  ASSERT_EQ(sn.graph_launches, 0);
  ASSERT(memcmp(b, c, (size_t)n * 4) == 0);
  for (int k = 1; k < STEPS; k++)
    ASSERT_EQ(ungraphed[k], 0);
  fprintf(stderr, "CUDA graphs: %d segments a step, %llu launches\n",
          st.graph_segments, (unsigned long long)st.graph_launches);
  for (int k = 1; k < STEPS; k++)
    ASSERT_EQ(planned[k], 0);
  ASSERT_EQ(st.replays, STEPS - 1);
  ASSERT_EQ(st.misses, 0);
  ASSERT_EQ(st.diverged, 0);
  ASSERT_EQ(st.arena_allocs, 1);
  double d = max_abs_diff(a, b, n);
  fprintf(stderr,
          "CUDA: arena %llu (lower bound %llu, naive %llu); planned vs "
          "unplanned latents max diff %.3g%s\n",
          (unsigned long long)st.arena.arena,
          (unsigned long long)st.arena.lower_bound,
          (unsigned long long)st.arena.naive, d,
          memcmp(a, b, (size_t)n * 4) ? "" : " (bit-identical)");
  ASSERT(d <= 1e-5);
  free(ctx), free(x0), free(a), free(b), free(c);
  sd_unet_free(unet);
  weft_backend_free(be);
  fx_model_close(&m);
}
