/* test_sd_stream.c - the models' weights under a device memory budget
 * (nodes/sd/sd_device.c, issue 7) on the emulated device of
 * kernels/emulated.h, so it runs without a GPU: a budget that forces the
 * UNet and the VAE to stream block by block gives the fully resident
 * results bit for bit; the number of block loads is what
 * weft_residency_plan (Belady) predicts for the same schedule; a budget
 * below the largest block is refused naming the block and the sizes; LoRA
 * re-syncs reach streamed blocks; and asynchronous copies (a fake copy
 * stream that runs its copies late, or early) are waited for before use
 * and never overwrite a block that is running.
 *
 * Models: the tiny SD1.5-shaped fixture (tests/fixtures/sd15_tiny).  All
 * comparisons are exact (memcmp): the emulated device runs the CPU kernels,
 * so streaming changes where weights live, never a value. */
#include <math.h>
#include <pthread.h>

#include "../models/sd_fixture.h"
#include "kernels/cpu/cpu.h" /* weft_f32_to_f16/bf16 */
#include "kernels/emulated.h"
#include "lora.h"
#include "sd_device.h"
#include "weft/plan.h"

/* ---- helpers ---------------------------------------------------------------
 */

static weft_backend *emu(void) {
  weft_backend *be = weft_backend_emulated_new(2);
  ASSERT(be != NULL);
  return be;
}

static void same(const char *what, const float *a, const float *b, int64_t n) {
  int d = memcmp(a, b, (size_t)n * 4);
  fprintf(stderr, "%-52s %s\n", what, d ? "DIFFERS" : "bit-identical");
  ASSERT_EQ(d, 0);
}

typedef struct model {
  fx_model m;
  sd_unet *unet;
  sd_vae *vae;
  sd_vram *vr;
} model;

/* the tiny UNet and VAE on vr (NULL: on the host) */
static void open_on(model *md, sd_vram *vr) {
  memset(md, 0, sizeof *md);
  fx_model_open(&md->m, SD_LAYOUT_LDM);
  ASSERT_OK(sd_unet_load(&md->m.ck, &md->unet));
  ASSERT_OK(sd_vae_load(&md->m.ck, &md->vae));
  md->vr = vr;
  if (vr) {
    int r = sd_unet_to_vram(md->unet, vr);
    if (r) fprintf(stderr, "%s\n", sd_vram_error(vr));
    ASSERT_OK(r);
    ASSERT_OK(sd_vae_to_vram(md->vae, vr));
    ASSERT_OK(sd_vram_commit(vr));
  }
}

static void close_model(model *md) {
  sd_unet_free(md->unet);
  sd_vae_free(md->vae);
  fx_model_close(&md->m);
}

/* UNet case a of the fixture, `steps` times in a row -> out (each pass
 * the same input: a sampler's schedule of UNet calls) */
typedef struct unet_in {
  weft_st_file *io;
  const weft_st_tensor *x, *t, *ctx;
  int64_t n;
} unet_in;

static unet_in unet_input(void) {
  unet_in u;
  u.io = fx_open("unet_io.safetensors");
  u.x = weft_st_find(u.io, "a/sample");
  u.t = weft_st_find(u.io, "a/timestep");
  u.ctx = weft_st_find(u.io, "a/encoder_hidden_states");
  ASSERT(u.x && u.t && u.ctx);
  u.n = (int64_t)(u.x->nbytes / 4);
  return u;
}

static void run_unet(sd_unet *m, weft_backend *be, const unet_in *u,
                     float *out) {
  ASSERT_OK(sd_unet_forward(m, be, u->x->data, u->x->shape[0], u->x->shape[2],
                            u->x->shape[3], u->t->data, u->ctx->data,
                            u->ctx->shape[1], NULL, out));
}

/* What weft_residency_plan says for `passes` UNet passes over dw's blocks
 * (those with weights, in order) under budget bytes. */
static weft_residency_stats planned(const sd_devw *dw, int passes,
                                    uint64_t budget) {
  uint64_t bytes[128];
  int ids[128], nb = 0;
  for (int b = 0; b < dw->n_blocks; b++)
    if (dw->blk[b].bytes) bytes[nb] = dw->blk[b].bytes, ids[nb] = b, nb++;
  (void)ids;
  int n = nb * passes;
  weft_plan_step *steps = calloc((size_t)n, sizeof *steps);
  ASSERT(steps != NULL);
  for (int s = 0; s < n; s++)
    steps[s].block = s % nb;
  weft_residency_stats st;
  ASSERT_OK(weft_residency_plan(bytes, nb, steps, n, budget, &st));
  weft_residency_free(steps, n);
  free(steps);
  return st;
}

static uint64_t largest_block(const sd_devw *dw) {
  uint64_t m = 0;
  for (int b = 0; b < dw->n_blocks; b++)
    if (dw->blk[b].bytes > m) m = dw->blk[b].bytes;
  return m;
}

static uint64_t all_blocks(const sd_devw *dw) {
  uint64_t t = 0;
  for (int b = 0; b < dw->n_blocks; b++)
    t += dw->blk[b].bytes;
  return t;
}

/* ---- the blocks -------------------------------------------------------------
 */

/* The UNet's blocks follow its execution order and hold every matrix once;
 * biases and norms are fp32 outside them; the budget is not exceeded. */
TEST(unet_blocks_are_in_execution_order_and_cover_every_weight) {
  weft_backend *e = emu();
  sd_vram *vr = sd_vram_new(e, UINT64_MAX, WEFT_F32, NULL, false);
  model md;
  open_on(&md, vr);
  const sd_devw *dw = sd_unet_devw(md.unet);
  const char *names[] = {"time_embedding+conv_in",
                         "down_blocks.0",
                         "down_blocks.1",
                         "mid_block",
                         "up_blocks.0",
                         "up_blocks.1",
                         "conv_norm_out+conv_out"};
  ASSERT_EQ(md.m.ck.unet.n_levels, 2);
  ASSERT_EQ(dw->n_blocks, 7);
  for (int b = 0; b < 7; b++) {
    fprintf(stderr, "block %d %-28s %8zu bytes\n", b, dw->blk[b].name,
            dw->blk[b].bytes);
    ASSERT_STR_EQ(dw->blk[b].name, names[b]);
    ASSERT(dw->blk[b].bytes > 0);
    ASSERT_EQ(sd_devw_block_index(dw, names[b]), b);
  }
  /* every UNet weight is one entry, its device copy equal to the master */
  int64_t n_unet = 0, f32 = 0;
  for (int i = 0; i < md.m.ck.n_params; i++) {
    const sd_param *p = &md.m.ck.params[i];
    if (p->part != SD_UNET) continue;
    n_unet++;
    const float *d = sd_devw_find(dw, p->data);
    ASSERT(d != NULL);
    ASSERT_EQ(memcmp(weft_emulated_host_ptr(d), p->data, (size_t)p->numel * 4),
              0);
  }
  ASSERT_EQ(dw->n, n_unet);
  for (int i = 0; i < dw->n; i++) {
    f32 += dw->e[i].kind == SD_W_F32;
    /* norms and biases (1-d) fp32; proj_out too (gemm operand a) */
    if (dw->e[i].kind == SD_W_HALF) ASSERT(dw->e[i].block >= 0);
  }
  ASSERT(f32 > 0);
  ASSERT(!sd_vram_streaming(vr));
  ASSERT_EQ(sd_vram_pool_bytes(vr),
            all_blocks(dw) + all_blocks(sd_vae_devw(md.vae)));
  close_model(&md);
  sd_vram_release(vr);
  ASSERT_EQ(weft_emulated_live_buffers(e), 0);
  weft_backend_free(e);
}

/* ---- streaming against the resident models ------------------------------- */

/* Budgets from "the largest block alone" up to "almost everything": each
 * streams, gives the resident outputs bit for bit over several passes, and
 * loads exactly the blocks Belady's plan loads (no prefetch: loads on use,
 * the planner's own model of time). */
TEST(streamed_unet_equals_resident_and_loads_match_the_residency_plan) {
  weft_backend *er = emu();
  sd_vram *vres = sd_vram_new(er, UINT64_MAX, WEFT_F32, NULL, false);
  model res;
  open_on(&res, vres);
  const sd_devw *rdw = sd_unet_devw(res.unet);
  unet_in u = unet_input();
  enum { PASSES = 4 };
  float *want = malloc((size_t)u.n * 4), *got = malloc((size_t)u.n * 4);
  run_unet(res.unet, er, &u, want);
  const uint64_t big = largest_block(rdw), total = all_blocks(rdw);
  const uint64_t f32 = rdw->f32_bytes;
  for (int k = 0; k < 5; k++) {
    /* the pool: big + k/5 of the rest, the budget adds the fp32 weights */
    uint64_t pool = big + (total - big) * (uint64_t)k / 5;
    weft_backend *e = emu();
    sd_vram *vr = sd_vram_new(e, pool + f32, WEFT_F32, NULL, false);
    model md;
    memset(&md, 0, sizeof md);
    fx_model_open(&md.m, SD_LAYOUT_LDM);
    ASSERT_OK(sd_unet_load(&md.m.ck, &md.unet));
    ASSERT_OK(sd_unet_to_vram(md.unet, vr));
    ASSERT(sd_vram_streaming(vr));
    ASSERT_EQ(sd_vram_pool_bytes(vr), 0); /* sized at the first use */
    ASSERT_OK(sd_vram_commit(vr));
    ASSERT_EQ(sd_vram_pool_bytes(vr), pool);
    const sd_devw *dw = sd_unet_devw(md.unet);
    for (int p = 0; p < PASSES; p++) {
      run_unet(md.unet, e, &u, got);
      char what[96];
      snprintf(what, sizeof what, "unet pool %llu pass %d vs resident",
               (unsigned long long)pool, p);
      same(what, got, want, u.n);
    }
    weft_residency_stats plan = planned(dw, PASSES, pool);
    const sd_vram_stats *st = sd_vram_get_stats(vr);
    fprintf(stderr,
            "pool %8llu of %8llu: %llu loads (%llu bytes), plan %d loads "
            "(%llu bytes), %llu compaction moves, peak %llu\n",
            (unsigned long long)pool, (unsigned long long)total,
            (unsigned long long)st->loads, (unsigned long long)st->loaded_bytes,
            plan.loads, (unsigned long long)plan.loaded_bytes,
            (unsigned long long)st->moves,
            (unsigned long long)st->peak_resident);
    ASSERT_EQ(st->loads, (uint64_t)plan.loads);
    ASSERT_EQ(st->loaded_bytes, plan.loaded_bytes);
    ASSERT(st->peak_resident <= pool);
    ASSERT(st->loads > (uint64_t)(PASSES)); /* it did stream */
    sd_unet_free(md.unet);
    fx_model_close(&md.m);
    sd_vram_release(vr);
    ASSERT_EQ(weft_emulated_live_buffers(e), 0);
    weft_backend_free(e);
  }
  free(want), free(got);
  weft_st_close(u.io);
  close_model(&res);
  sd_vram_release(vres);
  weft_backend_free(er);
}

/* With prefetch (the default in the plugin) the outputs are the same; the
 * prefetches never evict the block that is running. */
TEST(streamed_unet_with_prefetch_equals_resident) {
  weft_backend *er = emu(), *e = emu();
  sd_vram *vres = sd_vram_new(er, UINT64_MAX, WEFT_F32, NULL, false);
  model res;
  open_on(&res, vres);
  const sd_devw *rdw = sd_unet_devw(res.unet);
  unet_in u = unet_input();
  float *want = malloc((size_t)u.n * 4), *got = malloc((size_t)u.n * 4);
  run_unet(res.unet, er, &u, want);
  uint64_t pool = largest_block(rdw) * 2;
  sd_vram *vr = sd_vram_new(e, pool + rdw->f32_bytes, WEFT_F32, NULL, true);
  model md;
  memset(&md, 0, sizeof md);
  fx_model_open(&md.m, SD_LAYOUT_LDM);
  ASSERT_OK(sd_unet_load(&md.m.ck, &md.unet));
  ASSERT_OK(sd_unet_to_vram(md.unet, vr));
  for (int p = 0; p < 3; p++) {
    run_unet(md.unet, e, &u, got);
    same("unet streamed with prefetch vs resident", got, want, u.n);
  }
  const sd_vram_stats *st = sd_vram_get_stats(vr);
  fprintf(stderr, "prefetch: %llu loads, %llu ahead of use, %llu moves\n",
          (unsigned long long)st->loads, (unsigned long long)st->prefetches,
          (unsigned long long)st->moves);
  ASSERT(st->prefetches > 0);
  ASSERT(st->peak_resident <= pool);
  sd_unet_free(md.unet);
  fx_model_close(&md.m);
  sd_vram_release(vr);
  ASSERT_EQ(weft_emulated_live_buffers(e), 0);
  free(want), free(got);
  weft_st_close(u.io);
  close_model(&res);
  sd_vram_release(vres);
  weft_backend_free(er), weft_backend_free(e);
}

/* The VAE (encode and decode) and the UNet sharing one small budget: the
 * VAE evicts UNet blocks and the other way round; all bit-identical. */
TEST(unet_and_vae_sharing_a_budget_equal_resident) {
  weft_backend *er = emu(), *e = emu();
  sd_vram *vres = sd_vram_new(er, UINT64_MAX, WEFT_F32, NULL, false);
  model res;
  open_on(&res, vres);
  const sd_devw *ru = sd_unet_devw(res.unet), *rv = sd_vae_devw(res.vae);
  uint64_t big = largest_block(ru) > largest_block(rv) ? largest_block(ru)
                                                       : largest_block(rv);
  uint64_t budget = big + big / 2 + ru->f32_bytes + rv->f32_bytes;
  sd_vram *vr = sd_vram_new(e, budget, WEFT_F32, NULL, true);
  model md;
  open_on(&md, vr);
  ASSERT(sd_vram_streaming(vr));
  unet_in u = unet_input();
  weft_st_file *io = fx_open("vae_io.safetensors");
  const weft_st_tensor *img = weft_st_find(io, "b/image"),
                       *lat = weft_st_find(io, "b/latent");
  ASSERT(img && lat);
  float *ua = malloc((size_t)u.n * 4), *ub = malloc((size_t)u.n * 4);
  float mo_a[8 * 4 * 6], mo_b[8 * 4 * 6], da[3 * 32 * 48], db[3 * 32 * 48];
  for (int k = 0; k < 2; k++) {
    run_unet(res.unet, er, &u, ua);
    run_unet(md.unet, e, &u, ub);
    same("unet sharing the budget", ub, ua, u.n);
    ASSERT_OK(sd_vae_decode(res.vae, er, lat->data, 1, 4, 6, da));
    ASSERT_OK(sd_vae_decode(md.vae, e, lat->data, 1, 4, 6, db));
    same("vae decode sharing the budget", db, da, 3 * 32 * 48);
    ASSERT_OK(sd_vae_encode(res.vae, er, img->data, 1, 32, 48, mo_a));
    ASSERT_OK(sd_vae_encode(md.vae, e, img->data, 1, 32, 48, mo_b));
    same("vae encode sharing the budget", mo_b, mo_a, 8 * 4 * 6);
  }
  const sd_vram_stats *st = sd_vram_get_stats(vr);
  fprintf(stderr, "shared budget %llu: %llu loads, %llu evictions\n",
          (unsigned long long)budget, (unsigned long long)st->loads,
          (unsigned long long)st->evictions);
  ASSERT(st->peak_resident <= sd_vram_pool_bytes(vr));
  free(ua), free(ub);
  weft_st_close(io);
  weft_st_close(u.io);
  close_model(&md), close_model(&res);
  sd_vram_release(vr), sd_vram_release(vres);
  ASSERT_EQ(weft_emulated_live_buffers(e), 0);
  weft_backend_free(er), weft_backend_free(e);
}

/* ---- a budget too small -----------------------------------------------------
 */

TEST(budget_below_the_largest_block_is_refused_naming_it) {
  weft_backend *e = emu();
  sd_vram *probe = sd_vram_new(e, UINT64_MAX, WEFT_F32, NULL, false);
  model md;
  open_on(&md, probe);
  const sd_devw *dw = sd_unet_devw(md.unet);
  uint64_t big = largest_block(dw), f32 = dw->f32_bytes;
  char big_name[64] = "";
  for (int b = 0; b < dw->n_blocks; b++)
    if (dw->blk[b].bytes == big)
      snprintf(big_name, sizeof big_name, "%s", dw->blk[b].name);
  ASSERT(big_name[0] != 0);
  close_model(&md);
  sd_vram_release(probe);
  ASSERT_EQ(weft_emulated_live_buffers(e), 0);

  sd_vram *vr = sd_vram_new(e, big + f32 - 1, WEFT_F32, NULL, false);
  memset(&md, 0, sizeof md);
  fx_model_open(&md.m, SD_LAYOUT_LDM);
  ASSERT_OK(sd_unet_load(&md.m.ck, &md.unet));
  ASSERT_EQ(sd_unet_to_vram(md.unet, vr), WEFT_ERANGE);
  const char *err = sd_vram_error(vr);
  fprintf(stderr, "%s\n", err);
  char want[128];
  snprintf(want, sizeof want, "the UNet's block '%s' needs", big_name);
  ASSERT_CONTAINS(err, want);
  snprintf(want, sizeof want, "(%llu bytes)", (unsigned long long)big);
  ASSERT_CONTAINS(err, want);
  snprintf(want, sizeof want, "(%llu bytes, --vram / WEFT_VRAM)",
           (unsigned long long)(big + f32 - 1));
  ASSERT_CONTAINS(err, want);
  ASSERT(sd_unet_devw(md.unet) == NULL);
  ASSERT_EQ(weft_emulated_live_buffers(e), 0);
  /* the model was left as it was: it still runs on the host */
  weft_backend *c = weft_backend_cpu_new(2);
  unet_in u = unet_input();
  float *out = malloc((size_t)u.n * 4);
  run_unet(md.unet, c, &u, out);
  const weft_st_tensor *ref = weft_st_find(u.io, "a/out");
  ASSERT(max_abs_diff(out, ref->data, u.n) < 1e-4);
  free(out);
  weft_st_close(u.io);
  /* exactly the largest block fits */
  sd_vram *ok = sd_vram_new(e, big + f32, WEFT_F32, NULL, false);
  ASSERT_OK(sd_unet_to_vram(md.unet, ok));
  sd_unet_free(md.unet);
  fx_model_close(&md.m);
  sd_vram_release(ok);
  sd_vram_release(vr);
  ASSERT_EQ(weft_emulated_live_buffers(e), 0);
  weft_backend_free(c), weft_backend_free(e);
}

TEST(weft_vram_is_read_as_decimal_bytes) {
  uint64_t b = 0;
  char err[256] = "";
  unsetenv("WEFT_VRAM");
  ASSERT_EQ(sd_vram_env_budget(77, &b, err, sizeof err), 0);
  ASSERT_EQ(b, 77);
  setenv("WEFT_VRAM", "1610612736", 1);
  ASSERT_EQ(sd_vram_env_budget(77, &b, err, sizeof err), 0);
  ASSERT_EQ(b, 1610612736ull);
  const char *bad[] = {"1.5G", "-3", "0", "12x"};
  for (int i = 0; i < 4; i++) {
    setenv("WEFT_VRAM", bad[i], 1);
    ASSERT_EQ(sd_vram_env_budget(77, &b, err, sizeof err), -1);
    ASSERT_CONTAINS(err, "WEFT_VRAM=");
    ASSERT_CONTAINS(err, "expected a positive number of bytes");
  }
  unsetenv("WEFT_VRAM");
}

/* The old entry point reads WEFT_VRAM too (one budget per model). */
TEST(to_backend_honours_weft_vram) {
  weft_backend *e = emu();
  model md;
  memset(&md, 0, sizeof md);
  fx_model_open(&md.m, SD_LAYOUT_LDM);
  ASSERT_OK(sd_unet_load(&md.m.ck, &md.unet));
  setenv("WEFT_VRAM", "1000", 1);
  ASSERT_EQ(sd_unet_to_backend(md.unet, e), WEFT_ERANGE);
  setenv("WEFT_VRAM", "abc", 1);
  ASSERT_EQ(sd_unet_to_backend(md.unet, e), WEFT_EINVAL);
  unsetenv("WEFT_VRAM");
  ASSERT_OK(sd_unet_to_backend(md.unet, e));
  ASSERT(!sd_vram_streaming(sd_unet_devw(md.unet)->vr));
  sd_unet_free(md.unet);
  fx_model_close(&md.m);
  ASSERT_EQ(weft_emulated_live_buffers(e), 0);
  weft_backend_free(e);
}

/* ---- 16-bit conversion
 * --------------------------------------------------------- */

TEST(f32_to_f16_and_bf16_round_to_nearest_even) {
  ASSERT_EQ(weft_f32_to_f16(1.0f), 0x3c00);
  ASSERT_EQ(weft_f32_to_f16(-2.0f), 0xc000);
  ASSERT_EQ(weft_f32_to_f16(65504.0f), 0x7bff); /* largest half */
  ASSERT_EQ(weft_f32_to_f16(65520.0f), 0x7c00); /* rounds to inf */
  ASSERT_EQ(weft_f32_to_f16(65519.0f), 0x7bff);
  ASSERT_EQ(weft_f32_to_f16(6.103515625e-05f), 0x0400); /* smallest normal */
  ASSERT_EQ(weft_f32_to_f16(5.9604645e-08f), 0x0001);   /* smallest subnormal */
  ASSERT_EQ(weft_f32_to_f16(2.98e-08f), 0x0000);        /* below half of it */
  ASSERT_EQ(weft_f32_to_f16(2.99e-08f), 0x0001);        /* above half of it */
  ASSERT_EQ(weft_f32_to_f16(1.0f + 1.0f / 2048), 0x3c00); /* tie -> even */
  ASSERT_EQ(weft_f32_to_f16(1.0f + 3.0f / 2048), 0x3c02); /* tie -> even */
  ASSERT_EQ(weft_f32_to_f16(0.1f), 0x2e66);
  ASSERT_EQ(weft_f32_to_f16(-0.0f), 0x8000);
  ASSERT_EQ(weft_f32_to_f16(1.0f / 0.0f), 0x7c00);
  ASSERT_EQ(weft_f32_to_f16(0.0f / 0.0f) & 0x7c00, 0x7c00);
  ASSERT(weft_f32_to_f16(0.0f / 0.0f) & 0x03ff);
  ASSERT_EQ(weft_f32_to_bf16(1.0f), 0x3f80);
  ASSERT_EQ(weft_f32_to_bf16(0.1f), 0x3dcd);
  ASSERT_EQ(weft_f32_to_bf16(1.0f + 1.0f / 256), 0x3f80); /* tie -> even */
  ASSERT_EQ(weft_f32_to_bf16(1.0f + 3.0f / 256), 0x3f82);
  ASSERT(weft_f32_to_bf16(0.0f / 0.0f) & 0x007f);
  /* every half value survives f32 -> f16 exactly */
  for (uint32_t h = 0; h < 0x7c00; h++) {
    uint32_t e = h >> 10, m = h & 0x3ff;
    float f =
        e ? ldexpf((float)(m | 0x400), (int)e - 25) : ldexpf((float)m, -24);
    ASSERT_EQ(weft_f32_to_f16(f), h);
    ASSERT_EQ(weft_f32_to_f16(-f), h | 0x8000);
  }
}

/* ---- LoRA on streamed weights
 * ------------------------------------------------- */

static sd_lora *lora_open(sd_ckpt *ck) {
  char path[4096], err[1024], um[1024];
  snprintf(path, sizeof path, "%s/fixtures/sd15_extras/lora_kohya.safetensors",
           weft_test_srcdir());
  weft_st_file *f = NULL;
  ASSERT_OK(weft_st_open(path, &f, err, sizeof err));
  sd_file file = fx_file(f);
  sd_lora *l = NULL;
  int n_um = 0;
  int r = sd_lora_load(&file, ck, &l, um, sizeof um, &n_um, err, sizeof err);
  if (r) fprintf(stderr, "%s\n", err);
  ASSERT_OK(r);
  weft_st_close(f);
  return l;
}

/* A merge synced while some blocks are out of the pool: they load the
 * merged values later, the resident ones are patched in place; strength 0
 * gives the base back exactly. */
TEST(lora_on_a_streamed_unet_equals_the_cpu) {
  weft_backend *e = emu(), *c = weft_backend_cpu_new(2);
  model base;
  memset(&base, 0, sizeof base);
  fx_model_open(&base.m, SD_LAYOUT_LDM);
  ASSERT_OK(sd_unet_load(&base.m.ck, &base.unet));
  model md;
  memset(&md, 0, sizeof md);
  fx_model_open(&md.m, SD_LAYOUT_LDM);
  ASSERT_OK(sd_unet_load(&md.m.ck, &md.unet));
  /* the budget: a third of the blocks (sizes from a third copy) */
  weft_backend *ep = emu();
  sd_vram *probe = sd_vram_new(ep, UINT64_MAX, WEFT_F32, NULL, false);
  model pm;
  open_on(&pm, probe);
  const sd_devw *pd = sd_unet_devw(pm.unet);
  uint64_t budget = largest_block(pd) + all_blocks(pd) / 3 + pd->f32_bytes;
  close_model(&pm);
  sd_vram_release(probe);
  weft_backend_free(ep);
  sd_vram *vr = sd_vram_new(e, budget, WEFT_F32, NULL, true);
  ASSERT_OK(sd_unet_to_vram(md.unet, vr));
  ASSERT(sd_vram_streaming(vr));
  unet_in u = unet_input();
  float *ue = malloc((size_t)u.n * 4), *uc = malloc((size_t)u.n * 4),
        *u0 = malloc((size_t)u.n * 4);
  run_unet(md.unet, e, &u, u0);
  sd_lora *le = lora_open(&md.m.ck), *lc = lora_open(&base.m.ck);
  sd_patch_state se, sc;
  memset(&se, 0, sizeof se), memset(&sc, 0, sizeof sc);
  const float strengths[] = {0.8f, -0.5f, 0.0f};
  for (int k = 0; k < 3; k++) {
    sd_patch pe = {le, strengths[k]}, pc = {lc, strengths[k]};
    ASSERT_OK(sd_patch_apply(&se, SD_UNET, &pe, 1));
    ASSERT_OK(sd_patch_sync(&se, sd_unet_devw(md.unet)));
    ASSERT_OK(sd_patch_apply(&sc, SD_UNET, &pc, 1));
    run_unet(md.unet, e, &u, ue);
    run_unet(base.unet, c, &u, uc);
    same("lora on a streamed unet vs cpu", ue, uc, u.n);
  }
  same("lora strength 0 on a streamed unet = base", ue, u0, u.n);
  sd_patch_state_free(&se), sd_patch_state_free(&sc);
  sd_lora_release(le), sd_lora_release(lc);
  free(ue), free(uc), free(u0);
  weft_st_close(u.io);
  close_model(&md), close_model(&base);
  sd_vram_release(vr);
  ASSERT_EQ(weft_emulated_live_buffers(e), 0);
  weft_backend_free(c), weft_backend_free(e);
}

/* ---- a fake copy stream
 * ----------------------------------------------------------- */

/* Copies queue in order (one copy stream); `late` runs them only when the
 * compute side waits for their event (so a use without a wait reads stale
 * memory), otherwise at once (so a copy into a block still to run would
 * clobber it).  The emulated compute is synchronous: "after" events are
 * always complete. */
typedef struct fake_copy {
  void *dst;
  const void *src;
  size_t n;
  int *done;
} fake_copy;

typedef struct fake_stream {
  bool late;
  bool refuse_pin; /* host_pin says no: the images stay pageable */
  fake_copy q[4096];
  int head, tail;
  int events, waits, host_waits, uploads, pinned;
  /* the queue and counts: staged uploads come from several threads */
  pthread_mutex_t mu;
} fake_stream;

static void fs_run_until(fake_stream *s, const int *ev) {
  while (s->head < s->tail) {
    fake_copy *c = &s->q[s->head++];
    memcpy(weft_emulated_host_ptr(c->dst), c->src, c->n);
    *c->done = 1;
    if (c->done == ev) break;
  }
  if (s->head == s->tail) s->head = s->tail = 0;
}
static int fs_mark(void *ctx, void *buf, size_t n, weft_dtype dt) {
  (void)ctx, (void)buf, (void)n;
  ASSERT(dt == WEFT_F16);
  return 0;
}
static int fs_unmark(void *ctx, void *buf) {
  (void)ctx, (void)buf;
  return 0;
}

static int fs_host_pin(void *ctx, void *p, size_t n) {
  fake_stream *s = ctx;
  ASSERT(p != NULL && n > 0);
  if (s->refuse_pin) return WEFT_EDEVICE;
  s->pinned++;
  return 0;
}
static void fs_host_unpin(void *ctx, void *p) {
  (void)p;
  ((fake_stream *)ctx)->pinned--;
}
static void *fs_event_new(void *ctx) {
  ((fake_stream *)ctx)->events++;
  return calloc(1, sizeof(int));
}
static void fs_event_free(void *ctx, void *ev) {
  ((fake_stream *)ctx)->events--;
  free(ev);
}
static int fs_record(void *ctx, void *ev) {
  (void)ctx;
  *(int *)ev = 1;
  return 0;
}
static int fs_upload(void *ctx, void *dst, const void *src, size_t n,
                     void *after, void *done) {
  fake_stream *s = ctx;
  pthread_mutex_lock(&s->mu);
  ASSERT(*(int *)after == 1);
  ASSERT(s->tail < 4096);
  *(int *)done = 0;
  s->q[s->tail++] = (fake_copy){dst, src, n, done};
  s->uploads++;
  if (!s->late) fs_run_until(s, done);
  pthread_mutex_unlock(&s->mu);
  return 0;
}
static int fs_host_wait(void *ctx, void *ev) {
  fake_stream *s = ctx;
  pthread_mutex_lock(&s->mu);
  s->host_waits++;
  if (!*(int *)ev) fs_run_until(s, ev);
  ASSERT(*(int *)ev == 1);
  pthread_mutex_unlock(&s->mu);
  return 0;
}
static int fs_wait(void *ctx, void *ev) {
  fake_stream *s = ctx;
  pthread_mutex_lock(&s->mu);
  s->waits++;
  if (!*(int *)ev) fs_run_until(s, ev);
  ASSERT(*(int *)ev == 1);
  pthread_mutex_unlock(&s->mu);
  return 0;
}

/* The sd_xfer of a fake stream (16-bit marking included: a budget of
 * fp32 weights never calls it).  A copy stream stands for a CUDA device,
 * whose attentions take stacked q/k/v products; these tests compare with
 * runs without one bit for bit, so the products stay three (WEFT_SD_FUSE:
 * tests/models/test_emulated_device.c runs them stacked). */
static sd_xfer fs_xfer(fake_stream *fs) {
  setenv("WEFT_SD_FUSE", "0", 1);
  pthread_mutex_init(&fs->mu, NULL);
  return (sd_xfer){.ctx = fs,
                   .host_pin = fs_host_pin,
                   .host_unpin = fs_host_unpin,
                   .event_new = fs_event_new,
                   .event_free = fs_event_free,
                   .record_compute = fs_record,
                   .upload = fs_upload,
                   .compute_wait = fs_wait,
                   .host_wait = fs_host_wait,
                   .mark_half = fs_mark,
                   .unmark_half = fs_unmark};
}

static void fs_free(fake_stream *fs) {
  pthread_mutex_destroy(&fs->mu);
  free(fs);
}

/* md and its sd_vram on e behind fake stream fs closed: every pin and
 * event given back, every device buffer freed; fs and e freed */
static void close_on_stream(model *md, sd_vram *vr, fake_stream *fs,
                            weft_backend *e) {
  close_model(md);
  sd_vram_release(vr);
  ASSERT_EQ(fs->pinned, 0);
  ASSERT_EQ(fs->events, 0);
  fs_free(fs);
  ASSERT_EQ(weft_emulated_live_buffers(e), 0);
  weft_backend_free(e);
}

/* entry en's values in dw's pool (the emulated device's memory) */
static const void *in_pool(const sd_devw *dw, const sd_devw_entry *en) {
  const float *d = sd_devw_find(dw, en->host);
  ASSERT(d != NULL);
  return weft_emulated_host_ptr((void *)d);
}

/* The 16-bit weights on the device, from an image (made on several
 * threads, each a run of the weights' values cut anywhere) or staged
 * (slots filled on several threads, entries cut where a slot ends,
 * channels-last ones at rows): every SD_W_HALF value is its master rounded
 * to fp16, at its entry's place, and so is the image's where there is one. */
TEST(half_weights_on_the_device_are_the_masters_rounded) {
  for (int staged = 0; staged < 2; staged++) {
    setenv("WEFT_SD_STAGE", staged ? "1" : "0", 1);
    setenv("WEFT_SD_STAGE_SLOT", "3000", 1); /* entries cut anywhere */
    weft_backend *e = emu();
    fake_stream *fs = calloc(1, sizeof *fs);
    fs->late = staged; /* the copies run when waited for */
    sd_xfer x = fs_xfer(fs);
    sd_vram *vr = sd_vram_new(e, UINT64_MAX, WEFT_F16, &x, false);
    model md;
    open_on(&md, vr);
    const sd_devw *dws[2] = {sd_unet_devw(md.unet), sd_vae_devw(md.vae)};
    int64_t checked = 0;
    for (int k = 0; k < 2; k++) {
      const sd_devw *dw = dws[k];
      ASSERT_EQ(dw->elem, 2);
      ASSERT(staged ? !dw->image : dw->image != NULL);
      for (int i = 0; i < dw->n; i++) {
        const sd_devw_entry *en = &dw->e[i];
        if (en->kind != SD_W_HALF) continue;
        const uint16_t *d = in_pool(dw, en);
        const uint16_t *h =
            dw->image ? (const uint16_t *)((const char *)dw->image +
                                           dw->blk[en->block].img_off + en->off)
                      : d;
        for (int64_t j = 0; j < en->numel; j++)
          if (d[j] != weft_f32_to_f16(en->host[j]) || h[j] != d[j]) {
            fprintf(stderr,
                    "%s entry %d value %lld: %04x (image %04x), "
                    "want %04x\n",
                    dw->model, i, (long long)j, d[j], h[j],
                    weft_f32_to_f16(en->host[j]));
            ASSERT(!"device value differs");
          }
        checked += en->numel;
      }
    }
    const sd_vram_stats *st = sd_vram_get_stats(vr);
    fprintf(stderr,
            "%s: %lld 16-bit values checked; %llu of %llu loads "
            "staged in %llu copies\n",
            staged ? "staged" : "images", (long long)checked,
            (unsigned long long)st->staged, (unsigned long long)st->loads,
            (unsigned long long)st->staged_copies);
    ASSERT(checked > (1 << 18)); /* more than one thread's run */
    ASSERT_EQ(st->staged, staged ? st->loads : 0);
    ASSERT(staged ? st->staged_copies > st->staged : !st->staged_copies);
    ASSERT_EQ((uint64_t)fs->uploads,
              st->loads - st->staged + st->staged_copies);
    ASSERT_EQ(fs->pinned, staged ? 0 : 2);
    close_on_stream(&md, vr, fs, e);
  }
  unsetenv("WEFT_SD_STAGE"), unsetenv("WEFT_SD_STAGE_SLOT");
}

/* Deferred reads (sd_ckpt.defer_reads, as the loader sets on a device):
 * the 16-bit images come straight from the file's fp16 values and their
 * masters stay unread; the fp32 weights are read.  Against a load that
 * reads every master: the same images and fp32 buffers byte for byte, the
 * same UNet output; a LoRA merge reads the weights it patches and gives
 * the same output as on read masters; a model moved back to the host
 * reads the rest (its masters then the file's). */
static void open_deferred(model *md, sd_vram *vr, bool defer) {
  memset(md, 0, sizeof *md);
  fx_model_open(&md->m, SD_LAYOUT_LDM);
  md->m.ck.defer_reads = defer;
  ASSERT_OK(sd_unet_load(&md->m.ck, &md->unet));
  ASSERT_OK(sd_vae_load(&md->m.ck, &md->vae));
  md->vr = vr;
  ASSERT_OK(sd_vram_defer(vr, defer ? &md->m.ck : NULL));
  ASSERT_OK(sd_unet_to_vram(md->unet, vr));
  ASSERT_OK(sd_vae_to_vram(md->vae, vr));
  ASSERT_OK(sd_vram_commit(vr));
  ASSERT_OK(sd_vram_defer(vr, NULL));
}

static const sd_param *param_of(const sd_ckpt *ck, const float *data) {
  for (int i = 0; i < ck->n_params; i++)
    if (ck->params[i].data == data) return &ck->params[i];
  return NULL;
}

TEST(deferred_reads_fill_the_images_from_the_file) {
  weft_backend *ea = emu(), *eb = emu();
  sd_vram *va = sd_vram_new(ea, UINT64_MAX, WEFT_F16, NULL, false);
  sd_vram *vb = sd_vram_new(eb, UINT64_MAX, WEFT_F16, NULL, false);
  model a, b;
  open_deferred(&a, va, false);
  open_deferred(&b, vb, true);
  const sd_devw *da[2] = {sd_unet_devw(a.unet), sd_vae_devw(a.vae)};
  const sd_devw *db[2] = {sd_unet_devw(b.unet), sd_vae_devw(b.vae)};
  int unread = 0, half = 0;
  for (int k = 0; k < 2; k++) {
    ASSERT_EQ(da[k]->n, db[k]->n);
    ASSERT_EQ(da[k]->image_bytes, db[k]->image_bytes);
    ASSERT_EQ(da[k]->f32_bytes, db[k]->f32_bytes);
    for (int i = 0; i < db[k]->n; i++) {
      const sd_devw_entry *e = &db[k]->e[i];
      /* the entry's copy, in the image or the fp32 buffer (not the pads) */
      ASSERT_EQ(e->off, da[k]->e[i].off);
      if (e->kind == SD_W_HALF)
        ASSERT_EQ(memcmp((const char *)da[k]->image +
                             da[k]->blk[e->block].img_off + e->off,
                         (const char *)db[k]->image +
                             db[k]->blk[e->block].img_off + e->off,
                         (size_t)e->numel * 2),
                  0);
      else if (e->kind == SD_W_F32)
        ASSERT_EQ(
            memcmp((const char *)weft_emulated_host_ptr(da[k]->f32) + e->off,
                   (const char *)weft_emulated_host_ptr(db[k]->f32) + e->off,
                   (size_t)e->numel * 4),
            0);
      const sd_param *p = param_of(&b.m.ck, e->host);
      ASSERT(p != NULL);
      ASSERT(!param_of(&a.m.ck, da[k]->e[i].host)->unread);
      if (e->kind == SD_W_HALF) {
        half++;
        unread += p->unread;
        ASSERT(e->src == p->src);
      } else {
        ASSERT(!p->unread); /* read: copied from the master */
        ASSERT(e->src == NULL);
      }
    }
  }
  fprintf(stderr,
          "%d of %d 16-bit weights left unread; images and fp32 "
          "buffers byte-identical\n",
          unread, half);
  ASSERT(half > 0);
  ASSERT_EQ(unread, half);
  unet_in u = unet_input();
  float *ua = malloc((size_t)u.n * 4), *ub = malloc((size_t)u.n * 4);
  run_unet(a.unet, ea, &u, ua);
  run_unet(b.unet, eb, &u, ub);
  same("unet, deferred reads vs read masters", ub, ua, u.n);
  /* LoRA: the patched weights read, then merged and synced */
  sd_lora *la = lora_open(&a.m.ck), *lb = lora_open(&b.m.ck);
  sd_patch_state sa, sb;
  memset(&sa, 0, sizeof sa), memset(&sb, 0, sizeof sb);
  sd_patch pa = {la, 0.8f}, pb = {lb, 0.8f};
  ASSERT_OK(sd_patch_apply(&sa, SD_UNET, &pa, 1));
  ASSERT_OK(sd_patch_sync(&sa, sd_unet_devw(a.unet)));
  ASSERT_OK(sd_patch_apply(&sb, SD_UNET, &pb, 1));
  ASSERT_OK(sd_patch_sync(&sb, sd_unet_devw(b.unet)));
  for (int i = 0; i < lb->n; i++)
    ASSERT(!lb->t[i].param->unread);
  run_unet(a.unet, ea, &u, ua);
  run_unet(b.unet, eb, &u, ub);
  same("unet + lora, deferred reads vs read masters", ub, ua, u.n);
  /* to the host: the VAE's masters read from the file */
  sd_vae_to_host(a.vae), sd_vae_to_host(b.vae);
  int vae_params = 0;
  for (int i = 0; i < b.m.ck.n_params; i++) {
    const sd_param *pb2 = &b.m.ck.params[i];
    if (pb2->part != SD_VAE) continue;
    const sd_param *pa2 = sd_ckpt_param(&a.m.ck, SD_VAE, pb2->name);
    ASSERT(pa2 != NULL && pa2->numel == pb2->numel);
    ASSERT_EQ(memcmp(pa2->data, pb2->data, (size_t)pb2->numel * 4), 0);
    vae_params++;
  }
  fprintf(stderr, "%d VAE masters equal after the move to the host\n",
          vae_params);
  ASSERT(vae_params > 0);
  sd_patch_state_free(&sa), sd_patch_state_free(&sb);
  sd_lora_release(la), sd_lora_release(lb);
  free(ua), free(ub);
  weft_st_close(u.io);
  close_model(&a), close_model(&b);
  sd_vram_release(va), sd_vram_release(vb);
  ASSERT_EQ(weft_emulated_live_buffers(eb), 0);
  weft_backend_free(ea), weft_backend_free(eb);
}

static void fake_stream_run(bool late) {
  weft_backend *er = emu(), *e = emu();
  sd_vram *vres = sd_vram_new(er, UINT64_MAX, WEFT_F32, NULL, false);
  model res;
  open_on(&res, vres);
  const sd_devw *ru = sd_unet_devw(res.unet);
  fake_stream *fs = calloc(1, sizeof *fs);
  fs->late = late;
  sd_xfer x = fs_xfer(fs);
  uint64_t budget =
      largest_block(ru) * 2 + ru->f32_bytes + sd_vae_devw(res.vae)->f32_bytes;
  sd_vram *vr = sd_vram_new(e, budget, WEFT_F32, &x, true);
  model md;
  open_on(&md, vr);
  unet_in u = unet_input();
  float *a = malloc((size_t)u.n * 4), *b = malloc((size_t)u.n * 4);
  run_unet(res.unet, er, &u, a);
  weft_st_file *io = fx_open("vae_io.safetensors");
  const weft_st_tensor *lat = weft_st_find(io, "b/latent");
  float da[3 * 32 * 48], db[3 * 32 * 48];
  ASSERT_OK(sd_vae_decode(res.vae, er, lat->data, 1, 4, 6, da));
  for (int k = 0; k < 3; k++) {
    run_unet(md.unet, e, &u, b);
    same(late ? "unet, copies run late" : "unet, copies run early", b, a, u.n);
    ASSERT_OK(sd_vae_decode(md.vae, e, lat->data, 1, 4, 6, db));
    same(late ? "vae, copies run late" : "vae, copies run early", db, da,
         3 * 32 * 48);
  }
  const sd_vram_stats *st = sd_vram_get_stats(vr);
  fprintf(stderr, "%llu loads through the copy stream, %llu ahead, %d waits\n",
          (unsigned long long)st->loads, (unsigned long long)st->prefetches,
          fs->waits);
  ASSERT_EQ((uint64_t)fs->uploads, st->loads - st->staged + st->staged_copies);
  ASSERT(st->staged > 0); /* the first blocks, then the images */
  ASSERT(st->prefetches > 0);
  ASSERT(fs->pinned == 2); /* the UNet's and the VAE's images */
  free(a), free(b);
  weft_st_close(io);
  weft_st_close(u.io);
  close_model(&md), close_model(&res);
  sd_vram_release(vr), sd_vram_release(vres);
  ASSERT_EQ(fs->pinned, 0);
  ASSERT_EQ(fs->events, 0);
  fs_free(fs);
  ASSERT_EQ(weft_emulated_live_buffers(e), 0);
  weft_backend_free(er), weft_backend_free(e);
}

TEST(copy_stream_late_copies_are_waited_for) {
  fake_stream_run(true);
}

TEST(copy_stream_early_copies_never_clobber_a_running_block) {
  fake_stream_run(false);
}

/* With a copy stream, models held resident stage their first uploads
 * (no image; the slots pinned, then unpinned); a pin refused leaves them
 * loading from images after all.  WEFT_SD_STAGE=0 makes the images at
 * once, pinned once filled (pinning in place is cheap) and unpinned before
 * they are freed, or left pageable where the pin is refused.  Every way
 * the same UNet output, and a weight changed on the host (sd_devw_sync, as
 * LoRA does) reaches the device, with or without an image. */
TEST(resident_models_stage_or_pin_their_images_and_compute_the_same) {
  weft_backend *er = emu();
  model res;
  open_on(&res, sd_vram_new(er, UINT64_MAX, WEFT_F32, NULL, false));
  unet_in u = unet_input();
  float *a = malloc((size_t)u.n * 4), *b = malloc((size_t)u.n * 4);
  run_unet(res.unet, er, &u, a);
  for (int way = 0; way < 4; way++) {
    const bool staged = way >= 2, refuse = way & 1;
    setenv("WEFT_SD_STAGE", staged ? "1" : "0", 1);
    weft_backend *e = emu();
    fake_stream *fs = calloc(1, sizeof *fs);
    fs->refuse_pin = refuse;
    sd_xfer x = fs_xfer(fs);
    sd_vram *vr = sd_vram_new(e, UINT64_MAX, WEFT_F32, &x, true);
    model md;
    open_on(&md, vr);
    sd_devw *du = (sd_devw *)sd_unet_devw(md.unet);
    const sd_vram_stats *st = sd_vram_get_stats(vr);
    ASSERT(!sd_vram_streaming(vr));
    /* staged: no image, unless the slots' pin was refused */
    const bool images = !staged || refuse;
    ASSERT((du->image != NULL) == images);
    ASSERT((sd_vae_devw(md.vae)->image != NULL) == images);
    ASSERT_EQ(st->staged, images ? 0 : st->loads);
    ASSERT_EQ(fs->pinned, images && !refuse ? 2 : 0);
    ASSERT(du->image_pinned == (images && !refuse));
    run_unet(md.unet, e, &u, b);
    char what[64];
    snprintf(what, sizeof what, "unet, %s%s", staged ? "staged" : "images",
             refuse ? ", pins refused" : "");
    same(what, b, a, u.n);
    /* a weight changed on the host reaches the device */
    const sd_devw_entry *en = NULL;
    for (int i = 0; i < du->n && !en; i++)
      if (du->e[i].kind == SD_W_HALF) en = &du->e[i];
    ASSERT(en != NULL);
    for (int64_t j = 0; j < en->numel; j++)
      en->host[j] = 0.5f * en->host[j] + 0.25f;
    ASSERT_OK(sd_devw_sync(du, en->host));
    ASSERT((du->image != NULL) == images); /* none made for it */
    ASSERT_EQ(memcmp(in_pool(du, en), en->host, (size_t)en->numel * 4), 0);
    close_on_stream(&md, vr, fs, e);
  }
  unsetenv("WEFT_SD_STAGE");
  free(a), free(b);
  weft_st_close(u.io);
  close_model(&res);
  sd_vram_release(res.vr);
  weft_backend_free(er);
}

/* ---- SD1.5 sizes under a 1.5 GiB budget
 * ------------------------------------------ */

static const char *sd15_json[SD_PARTS] = {
    "{\"block_out_channels\":[320,640,1280,1280],\"down_block_types\":["
    "\"CrossAttnDownBlock2D\",\"CrossAttnDownBlock2D\","
    "\"CrossAttnDownBlock2D\","
    "\"DownBlock2D\"],\"up_block_types\":[\"UpBlock2D\",\"CrossAttnUpBlock2D\","
    "\"CrossAttnUpBlock2D\",\"CrossAttnUpBlock2D\"],\"layers_per_block\":2,"
    "\"attention_head_dim\":8,\"cross_attention_dim\":768,\"in_channels\":4,"
    "\"out_channels\":4,\"norm_num_groups\":32}",
    "{\"block_out_channels\":[128,256,512,512],\"layers_per_block\":2,"
    "\"latent_channels\":4}",
    "{\"hidden_size\":768,\"num_hidden_layers\":12,\"num_attention_heads\":12,"
    "\"intermediate_size\":3072,\"hidden_act\":\"quick_gelu\"}"};

static void print_blocks(const sd_devw *dw) {
  uint64_t t = 0;
  for (int b = 0; b < dw->n_blocks; b++) {
    if (!dw->blk[b].bytes) continue;
    fprintf(stderr, "  %-12s %-44s %8.1f MiB\n", dw->model, dw->blk[b].name,
            (double)dw->blk[b].bytes / 1048576.0);
    t += dw->blk[b].bytes;
  }
  fprintf(stderr, "  %-12s %-44s %8.1f MiB (+ %.1f MiB fp32 resident)\n",
          dw->model, "all blocks", (double)t / 1048576.0,
          (double)dw->f32_bytes / 1048576.0);
}

static void sd15_txt2img(bool prefetch) {
  sd_ckpt ck;
  memset(&ck, 0, sizeof ck);
  ck.random_weights = true;
  ck.layout = SD_LAYOUT_DIFFUSERS;
  for (int p = 0; p < SD_PARTS; p++)
    ck.has[p] = true;
  ASSERT_OK(sd_ckpt_configure(&ck, sd15_json));
  sd_unet *unet = NULL;
  sd_clip *clip = NULL;
  sd_vae *vae = NULL;
  ASSERT_OK(sd_unet_load(&ck, &unet));
  ASSERT_OK(sd_clip_load(&ck, &clip));
  ASSERT_OK(sd_vae_load(&ck, &vae));
  weft_backend *e = emu();
  fake_stream *fs = calloc(1, sizeof *fs);
  sd_xfer x = fs_xfer(fs);
  const uint64_t budget = 1610612736ull; /* --vram 1.5G */
  sd_vram *vr = sd_vram_new(e, budget, WEFT_F16, &x, prefetch);
  /* the loader's order */
  ASSERT_OK(sd_unet_to_vram(unet, vr));
  ASSERT_OK(sd_clip_to_vram(clip, vr));
  ASSERT_OK(sd_vae_to_vram(vae, vr));
  ASSERT(sd_vram_streaming(vr));
  ASSERT_OK(sd_vram_commit(vr));
  sd_devw *du = sd_unet_devw(unet), *dc = sd_clip_devw(clip),
          *dv = sd_vae_devw(vae);
  if (prefetch) print_blocks(du), print_blocks(dc), print_blocks(dv);
  const sd_vram_stats *st = sd_vram_get_stats(vr);
  fprintf(stderr,
          "%s: pool %.1f MiB of the %.1f MiB budget; at load %llu "
          "blocks (%.1f MiB)\n",
          prefetch ? "prefetch" : "loads on use (Belady exactly)",
          (double)sd_vram_pool_bytes(vr) / 1048576.0,
          (double)budget / 1048576.0, (unsigned long long)st->loads,
          (double)st->loaded_bytes / 1048576.0);
  uint64_t l0 = st->loads, b0 = st->loaded_bytes;
  for (int i = 0; i < 12; i++)
    ASSERT_OK(sd_devw_use(dc, 1 + i));
  fprintf(stderr, "  text encoder: %llu loads, %.1f MiB\n",
          (unsigned long long)(st->loads - l0),
          (double)(st->loaded_bytes - b0) / 1048576.0);
  uint64_t steady_loads = 0, steady_bytes = 0;
  for (int step = 0; step < 20; step++) {
    l0 = st->loads, b0 = st->loaded_bytes;
    for (int b = 0; b < du->n_blocks; b++)
      ASSERT_OK(sd_devw_use(du, b));
    if (step < 3 || step == 19)
      fprintf(stderr, "  UNet step %2d: %llu loads, %.1f MiB\n", step + 1,
              (unsigned long long)(st->loads - l0),
              (double)(st->loaded_bytes - b0) / 1048576.0);
    if (step)
      steady_loads += st->loads - l0, steady_bytes += st->loaded_bytes - b0;
    ASSERT(st->loads > l0); /* it streams */
  }
  fprintf(stderr, "  UNet steps 2-20: %.2f loads, %.1f MiB per step\n",
          (double)steady_loads / 19, (double)steady_bytes / 19 / 1048576.0);
  l0 = st->loads, b0 = st->loaded_bytes;
  for (int b = 5; b < dv->n_blocks; b++)
    ASSERT_OK(sd_devw_use(dv, b));
  fprintf(stderr, "  VAE decode: %llu loads, %.1f MiB\n",
          (unsigned long long)(st->loads - l0),
          (double)(st->loaded_bytes - b0) / 1048576.0);
  fprintf(stderr,
          "  total %llu loads (%llu ahead), %.1f MiB; %llu "
          "compaction moves (%.1f MiB); peak resident %.1f MiB\n",
          (unsigned long long)st->loads, (unsigned long long)st->prefetches,
          (double)st->loaded_bytes / 1048576.0, (unsigned long long)st->moves,
          (double)st->moved_bytes / 1048576.0,
          (double)st->peak_resident / 1048576.0);
  ASSERT(st->peak_resident <= sd_vram_pool_bytes(vr));
  ASSERT(sd_vram_pool_bytes(vr) + du->f32_bytes + dc->f32_bytes +
             dv->f32_bytes <=
         budget);
  sd_unet_free(unet), sd_clip_free(clip), sd_vae_free(vae);
  sd_vram_release(vr);
  ASSERT_EQ(fs->pinned, 0);
  fs_free(fs);
  ASSERT_EQ(weft_emulated_live_buffers(e), 0);
  weft_backend_free(e);
  sd_ckpt_free_params(&ck);
  sd_ckpt_release(&ck);
}

/* SD1.5's shapes (random weights, fp16 matrices) through the txt2img
 * schedule -- the text encoder, 20 UNet steps, the VAE decoder -- under
 * `--vram 1.5G`: the per-block sizes and the bytes streamed per step.
 * No compute (the emulated device cannot read 16-bit weights): only the
 * residency decisions and copies.  About 8 GB of host memory, so it runs
 * when WEFT_TEST_SD15=1. */
TEST(sd15_txt2img_schedule_under_1_5_gib) {
  const char *on = getenv("WEFT_TEST_SD15");
  if (!on || strcmp(on, "1"))
    weft_test_skip("set WEFT_TEST_SD15=1 (needs about 8 GB of memory)");
  sd15_txt2img(true);
  sd15_txt2img(false);
}

/* ---- activations and scratch inside the budget -----------------------------
 */

typedef struct dec_args {
  sd_vae *vae;
  const float *lat;
  int64_t h, w;
  float *out;
} dec_args;

static int dec_fn(void *user, weft_backend *be) {
  dec_args *a = user;
  return sd_vae_decode(a->vae, be, a->lat, 1, a->h, a->w, a->out);
}

enum { TI_STEPS = 3, TI_H = 8, TI_W = 8, TI_TOK = 77 };
static const float TI_SIGMAS[TI_STEPS] = {14.6f, 4.0f, 0.9f};

typedef struct ti_case {
  weft_schedule sched;
  int64_t shape[4], n, dim;
  float *uncond, *cond, *x0;
} ti_case;

static void ti_open(ti_case *t, const sd_unet *u) {
  memset(t, 0, sizeof *t);
  weft_schedule_init(&t->sched, 0.00085, 0.012);
  const sd_unet_cfg *c = sd_unet_config(u);
  int64_t shape[4] = {1, c->in_channels, TI_H, TI_W};
  memcpy(t->shape, shape, sizeof shape);
  t->n = shape[1] * TI_H * TI_W;
  t->dim = c->context_dim;
  t->uncond = malloc((size_t)(TI_TOK * t->dim) * 4);
  t->cond = malloc((size_t)(TI_TOK * t->dim) * 4);
  t->x0 = malloc((size_t)t->n * 4);
  ASSERT(t->uncond && t->cond && t->x0);
  uint64_t s = 0x9e3779b97f4a7c15ull;
  for (int64_t i = 0; i < TI_TOK * t->dim; i++) {
    s = s * 6364136223846793005ull + 1;
    t->uncond[i] = (float)(s >> 40) / 8388608.0f - 1;
    s = s * 6364136223846793005ull + 1;
    t->cond[i] = (float)(s >> 40) / 8388608.0f - 1;
  }
  for (int64_t i = 0; i < t->n; i++) {
    s = s * 6364136223846793005ull + 1;
    t->x0[i] = ((float)(s >> 40) / 8388608.0f - 1) * TI_SIGMAS[0];
  }
}

static void ti_close(ti_case *t) {
  free(t->uncond), free(t->cond), free(t->x0);
}

/* txt2img's device calls as the plugin makes them (nodes.c): the sampler's
 * UNet call planned before step 1 with its arena + scratch reserved from
 * vr (NULL: unplanned, on the host), TI_STEPS euler steps, then the VAE
 * decode planned under vr.  traj gets x after every step, img the image;
 * *arena_u / *arena_v the two arenas (0 unplanned). */
static void ti_run(const ti_case *t, model *md, weft_backend *be, sd_vram *vr,
                   float *traj, float *img, uint64_t *arena_u,
                   uint64_t *arena_v) {
  sd_denoiser d;
  ASSERT_OK(sd_denoiser_init(&d, md->unet, be, &t->sched, SD_PRED_EPS, t->shape,
                             7.5f, t->uncond, TI_TOK, t->cond, TI_TOK));
  sd_denoise_plan p;
  memset(&p, 0, sizeof p);
  if (vr) ASSERT_OK(sd_denoise_plan_init(&p, &d));
  float *x = malloc((size_t)t->n * 4), *den = malloc((size_t)t->n * 4);
  ASSERT(x && den);
  memcpy(x, t->x0, (size_t)t->n * 4);
  *arena_u = *arena_v = 0;
  if (vr) {
    ASSERT_OK(sd_denoise_plan_dry(&p, x, TI_SIGMAS[0], arena_u));
    ASSERT(*arena_u > 0);
    ASSERT_OK(sd_vram_reserve(vr, *arena_u + sd_vram_scratch(vr), NULL,
                              "the sampler's UNet call"));
    ASSERT_OK(sd_vram_commit(vr));
  }
  for (int k = 0; k < TI_STEPS; k++) {
    ASSERT_OK(vr ? sd_denoise_planned(&p, x, TI_SIGMAS[k], den)
                 : sd_denoise(&d, x, TI_SIGMAS[k], den));
    float next = k + 1 < TI_STEPS ? TI_SIGMAS[k + 1] : 0.0f;
    for (int64_t i = 0; i < t->n; i++)
      x[i] = den[i] + (x[i] - den[i]) * (next / TI_SIGMAS[k]);
    memcpy(traj + k * t->n, x, (size_t)t->n * 4);
  }
  if (vr) {
    weft_rec_stats st;
    ASSERT(sd_denoise_plan_stats(&p, 0, &st));
    ASSERT_EQ(st.misses, 0); /* every step, step 1 too, from the arena */
    ASSERT_EQ(st.replays, TI_STEPS);
    sd_denoise_plan_free(&p);
  }
  sd_denoiser_free(&d);
  dec_args a = {md->vae, x, TI_H, TI_W, img};
  if (vr) {
    weft_rec_stats st;
    ASSERT_OK(sd_plan_call_vram(be, vr, sd_vae_devw(md->vae),
                                sd_vram_scratch(vr), "the VAE decode", dec_fn,
                                &a, &st));
    *arena_v = st.arena.arena;
  } else {
    ASSERT_OK(dec_fn(&a, be));
  }
  free(x), free(den);
}

/* Everything the sd models hold on a device at once -- the weights' pool,
 * the always-resident fp32 weights, the planned arenas, the io copies --
 * stays within the budget when the budget also has to hold the activations
 * (sd_vram_reserve: the pool shrinks by arena + scratch before the arena
 * is made), and the latents and image equal the CPU's bit for bit. */
TEST(txt2img_calls_hold_at_most_the_budget_with_activations) {
  weft_backend *cpu = weft_backend_cpu_new(2), *ep = emu(), *e = emu();
  ASSERT(cpu != NULL);
  model ref;
  open_on(&ref, NULL);
  ti_case t;
  ti_open(&t, ref.unet);
  const int64_t f = sd_vae_factor(ref.vae), ni = 3 * TI_H * f * TI_W * f;
  float *traj[2], *img[2];
  for (int k = 0; k < 2; k++) {
    traj[k] = malloc((size_t)(TI_STEPS * t.n) * 4);
    img[k] = malloc((size_t)ni * 4);
    ASSERT(traj[k] && img[k]);
  }
  uint64_t au, av;
  ti_run(&t, &ref, cpu, NULL, traj[0], img[0], &au, &av);

  /* the sizes, from a run without a budget */
  sd_vram *vp = sd_vram_new(ep, UINT64_MAX, WEFT_F32, NULL, false);
  model pm;
  open_on(&pm, vp);
  const sd_devw *pu = sd_unet_devw(pm.unet), *pv = sd_vae_devw(pm.vae);
  uint64_t big = largest_block(pu) > largest_block(pv) ? largest_block(pu)
                                                       : largest_block(pv);
  uint64_t f32 = pu->f32_bytes + pv->f32_bytes;
  float *scratch_img = malloc((size_t)ni * 4),
        *scratch_traj = malloc((size_t)(TI_STEPS * t.n) * 4);
  ASSERT(scratch_img && scratch_traj);
  /* arenas of the calls (a budget is needed for them to be planned) */
  sd_vram *vq = sd_vram_new(ep, (uint64_t)1 << 40, WEFT_F32, NULL, false);
  model qm;
  open_on(&qm, vq);
  ti_run(&t, &qm, ep, vq, scratch_traj, scratch_img, &au, &av);
  close_model(&qm), close_model(&pm);
  sd_vram_release(vq), sd_vram_release(vp);
  free(scratch_img), free(scratch_traj);
  uint64_t act = au > av ? au : av;
  /* the tightest budget of this rule: weights floor + arena + a third
   * kept for scratch (sd_vram_scratch), plus half a block of slack */
  uint64_t budget = (f32 + big + big / 2 + act) * 3 / 2 + 4096;

  sd_vram *vr = sd_vram_new(e, budget, WEFT_F32, NULL, true);
  ASSERT_OK(sd_vram_reserve(vr, sd_vram_scratch(vr), NULL, NULL));
  model md;
  open_on(&md, vr);
  ASSERT(sd_vram_streaming(vr));
  uint64_t au2, av2;
  ti_run(&t, &md, e, vr, traj[1], img[1], &au2, &av2);
  ASSERT_EQ(au2, au);
  ASSERT_EQ(av2, av);
  fprintf(stderr,
          "budget %llu bytes: device high-water %llu (weights fp32 %llu, "
          "largest block %llu, UNet arena %llu, VAE decode arena %llu, "
          "pool now %zu, reserve now %llu); %llu loads\n",
          (unsigned long long)budget,
          (unsigned long long)weft_emulated_peak_bytes(e),
          (unsigned long long)f32, (unsigned long long)big,
          (unsigned long long)au, (unsigned long long)av,
          sd_vram_pool_bytes(vr), (unsigned long long)sd_vram_reserved(vr),
          (unsigned long long)sd_vram_get_stats(vr)->loads);
  ASSERT(weft_emulated_peak_bytes(e) <= budget);
  /* the arena and the pool were both there: the rule, not an accident */
  ASSERT(weft_emulated_peak_bytes(e) > f32 + act);
  ASSERT_EQ(sd_vram_reserved(vr), av + sd_vram_scratch(vr));
  same("latents under the budget vs the CPU", traj[1], traj[0], TI_STEPS * t.n);
  same("image under the budget vs the CPU", img[1], img[0], ni);

  /* a budget without room for the UNet's arena beside its largest block
   * is refused, naming the sizes, and the reserve stays */
  uint64_t before = sd_vram_reserved(vr);
  int r = sd_vram_reserve(vr, budget, NULL, "the sampler's UNet call");
  ASSERT_EQ(r, WEFT_ERANGE);
  fprintf(stderr, "%s\n", sd_vram_error(vr));
  ASSERT_CONTAINS(sd_vram_error(vr), "the sampler's UNet call");
  ASSERT_CONTAINS(sd_vram_error(vr), "largest block");
  ASSERT_CONTAINS(sd_vram_error(vr), "raise the budget");
  ASSERT_EQ(sd_vram_reserved(vr), before);

  close_model(&md), close_model(&ref);
  sd_vram_release(vr);
  ASSERT_EQ(weft_emulated_live_buffers(e), 0);
  ASSERT_EQ(weft_emulated_live_bytes(e), 0);
  for (int k = 0; k < 2; k++)
    free(traj[k]), free(img[k]);
  ti_close(&t);
  weft_backend_free(cpu), weft_backend_free(ep), weft_backend_free(e);
}

typedef struct sd15_un {
  sd_unet *u;
  const float *x, *t, *ctx;
  float *out;
} sd15_un;

static int sd15_un_fn(void *user, weft_backend *be) {
  sd15_un *a = user;
  return sd_unet_forward(a->u, be, a->x, 2, 64, 64, a->t, a->ctx, 77, NULL,
                         a->out);
}

/* SD1.5's two big arenas at 512x512 (the UNet call of CFG batch 2 on a
 * 64x64 latent, the VAE decode), recorded without computing over the CPU
 * backend: what `--vram 1.5G` must hold beside the weights' pool and the
 * scratch (sd_vram_scratch: 512 MiB).  Printed; the UNet call leaves
 * 512 MiB of the 1.5 GiB for the fp32 weights and the pool (the UNet's
 * largest 16-bit block, up_blocks.1, is about 470 MiB), the VAE decode
 * 192 MiB (its largest block is about 33 MiB).  Random weights, about
 * 4 GB of host memory: runs when WEFT_TEST_SD15=1. */
TEST(sd15_arenas_at_512_leave_room_for_the_pool_under_1_5_gib) {
  const char *on = getenv("WEFT_TEST_SD15");
  if (!on || strcmp(on, "1"))
    weft_test_skip("set WEFT_TEST_SD15=1 (needs about 4 GB of memory)");
  sd_ckpt ck;
  memset(&ck, 0, sizeof ck);
  ck.random_weights = true;
  ck.layout = SD_LAYOUT_DIFFUSERS;
  ck.has[SD_UNET] = ck.has[SD_VAE] = true;
  ASSERT_OK(sd_ckpt_configure(&ck, sd15_json));
  sd_unet *unet = NULL;
  sd_vae *vae = NULL;
  ASSERT_OK(sd_unet_load(&ck, &unet));
  ASSERT_OK(sd_vae_load(&ck, &vae));
  weft_backend *cpu = weft_backend_cpu_new(2);
  ASSERT(cpu != NULL);
  const int64_t nx = 2 * 4 * 64 * 64, nc = 2 * 77 * 768;
  float *x = calloc((size_t)nx, 4), *ctx = calloc((size_t)nc, 4),
        *out = calloc((size_t)nx, 4), *img = calloc(3 * 512 * 512, 4);
  float t[2] = {999, 999};
  ASSERT(x && ctx && out && img);
  sd15_un ua = {unet, x, t, ctx, out};
  dec_args da = {vae, x, 64, 64, img};
  weft_rec_stats su, sv;
  ASSERT_OK(sd_plan_call(cpu, sd15_un_fn, &ua, true, &su));
  ASSERT_OK(sd_plan_call(cpu, dec_fn, &da, true, &sv));
  const double M = 1048576.0;
  fprintf(stderr,
          "sd15 512x512 arenas: UNet (CFG batch 2) %.1f MiB (lower bound "
          "%.1f), VAE decode %.1f MiB (lower bound %.1f)\n",
          (double)su.arena.arena / M, (double)su.arena.lower_bound / M,
          (double)sv.arena.arena / M, (double)sv.arena.lower_bound / M);
  const uint64_t budget = 1610612736ull, scratch = SD_VRAM_SCRATCH,
                 mib = (uint64_t)1 << 20;
  ASSERT(su.arena.arena + scratch + 512 * mib <= budget);
  ASSERT(sv.arena.arena + scratch + 192 * mib <= budget);
  free(x), free(ctx), free(out), free(img);
  weft_backend_free(cpu);
  sd_unet_free(unet), sd_vae_free(vae);
  sd_ckpt_free_params(&ck);
  sd_ckpt_release(&ck);
}
