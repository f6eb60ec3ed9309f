/* test_plan_graph.c - plan mode over whole graphs: `weft plan` on the
 * embedded default model's txt2img (every node, exact arenas equal to a
 * direct recording of the same forwards, --json read back), its usage and
 * bad input, and the runtime's walk and weight residency on nodes of a
 * plugin made here (exact resident, loaded and peak bytes under budgets). */
#include <jansson.h>
#include <stdlib.h>

#include "../models/sd_fixture.h"
#include "kernels/record.h"
#include "sd_device.h"
#include "weft/plan.h"
#include "weft/weft.h"

static const char *weft(void) {
  return weft_test_built("cli/weft");
}


/* weft plan graphs/txt2img.yaml [extra...] from the repository root */
static int plan_txt2img(const char *extra, const char *extra2, char **out,
                        char **err) {
  char *g = weft_test_repo("graphs/txt2img.yaml"), *root = weft_test_repo("");
  const char *a[] = {weft(), "plan", g,      "--input-dir",
                     root,   extra,  extra2, NULL};
  int rc = weft_test_spawn(a, out, err, 120);
  free(g);
  free(root);
  return rc;
}

/* ---- the default model, recorded directly ------------------------------ */

typedef struct dm_plan {
  weft_rec_stats clip, unet, vae;
  uint64_t bytes[SD_PARTS];
} dm_plan;

static weft_rec_stats dry_stats(weft_rec *r) {
  weft_rec_stats st;
  weft_rec_stats_get(r, &st);
  return st;
}

/* What txt2img's defaults run: one 77-token chunk per prompt, a 1x4x16x16
 * latent (128x128 pixels) with CFG (batch 2), its decode. */
static void record_default_model(dm_plan *p) {
  memset(p, 0, sizeof *p);
  char *path = weft_test_repo("models/default/weft-shapes-v1.safetensors");
  char err[1024];
  weft_st_file *f = NULL;
  int r = weft_st_open(path, &f, err, sizeof err);
  if (r) fprintf(stderr, "%s\n", err);
  ASSERT_OK(r);
  sd_ckpt ck;
  memset(&ck, 0, sizeof ck);
  ck.layout = SD_LAYOUT_LDM;
  for (int i = 0; i < SD_PARTS; i++) {
    ck.files[i] = fx_file(f);
    ck.has[i] = true;
  }
  const char *none[SD_PARTS] = {NULL, NULL, NULL};
  ASSERT_OK(sd_ckpt_configure(&ck, none));
  sd_unet *unet = NULL;
  sd_clip *clip = NULL;
  sd_vae *vae = NULL;
  ASSERT_OK(sd_unet_load(&ck, &unet));
  ASSERT_OK(sd_clip_load(&ck, &clip));
  ASSERT_OK(sd_vae_load(&ck, &vae));
  for (int i = 0; i < ck.n_params; i++)
    p->bytes[ck.params[i].part] += (uint64_t)ck.params[i].numel * 4;
  weft_backend *cpu = weft_backend_cpu_new(1);
  weft_rec *rec = weft_rec_new(cpu);
  weft_backend *dry = weft_rec_backend(rec);
  /* the text encoder */
  int32_t ids[77] = {0};
  const int64_t D = sd_clip_config(clip)->hidden;
  float *hid = calloc(77 * (size_t)D, sizeof *hid);
  float *pooled = calloc((size_t)D, sizeof *pooled);
  ASSERT_OK(weft_rec_begin(rec, WEFT_REC_DRY));
  ASSERT_OK(sd_clip_forward(clip, dry, ids, 1, 0, hid, pooled));
  ASSERT_OK(weft_rec_end(rec));
  p->clip = dry_stats(rec);
  /* one UNet call of the sampler */
  weft_schedule sched;
  weft_schedule_init(&sched, 0.00085, 0.012);
  const int64_t shape[4] = {1, 4, 16, 16}, n = 4 * 16 * 16;
  const int64_t ctxd = sd_unet_config(unet)->context_dim;
  float *ctx = calloc(77 * (size_t)ctxd, sizeof *ctx);
  sd_denoiser d;
  ASSERT_OK(sd_denoiser_init(&d, unet, dry, &sched, SD_PRED_EPS, shape, 4.5f,
                             ctx, 77, ctx, 77));
  float *x = calloc((size_t)n, sizeof *x), *den = calloc((size_t)n, 4);
  ASSERT_OK(weft_rec_begin(rec, WEFT_REC_DRY));
  ASSERT_OK(sd_denoise(&d, x, 1.0f, den));
  ASSERT_OK(weft_rec_end(rec));
  p->unet = dry_stats(rec);
  sd_denoiser_free(&d);
  /* the decode */
  float *img = calloc(3 * 128 * 128, sizeof *img);
  ASSERT_OK(weft_rec_begin(rec, WEFT_REC_DRY));
  ASSERT_OK(sd_vae_decode(vae, dry, x, 1, 16, 16, img));
  ASSERT_OK(weft_rec_end(rec));
  p->vae = dry_stats(rec);
  weft_rec_free(rec);
  weft_backend_free(cpu);
  free(hid), free(pooled), free(ctx), free(x), free(den), free(img);
  sd_unet_free(unet);
  sd_clip_free(clip);
  sd_vae_free(vae);
  sd_ckpt_release(&ck);
  sd_ckpt_free_params(&ck);
  weft_st_close(f);
  free(path);
}

static json_t *node_of(json_t *root, const char *id) {
  json_t *nodes = json_object_get(root, "nodes"), *n;
  size_t i;
  json_array_foreach(nodes, i, n) {
    if (!strcmp(json_string_value(json_object_get(n, "id")), id)) return n;
  }
  WEFT_TEST_FAIL_("no node '%s' in the plan", id);
  return NULL;
}

static uint64_t u64(json_t *n, const char *key) {
  json_t *v = json_object_get(n, key);
  ASSERT(json_is_integer(v));
  return (uint64_t)json_integer_value(v);
}

static void check_row(json_t *n, const char *status, const weft_rec_stats *st,
                      uint64_t weights, uint64_t resident) {
  ASSERT_STR_EQ(json_string_value(json_object_get(n, "status")), status);
  ASSERT_STR_EQ(json_string_value(json_object_get(n, "device")), "cpu");
  ASSERT_EQ(u64(n, "arena"), st ? st->arena.arena : 0);
  ASSERT_EQ(u64(n, "arena_lower_bound"), st ? st->arena.lower_bound : 0);
  ASSERT_EQ(u64(n, "arena_naive"), st ? st->arena.naive : 0);
  ASSERT_EQ(u64(n, "weights"), weights);
  ASSERT_EQ(u64(n, "weights_resident"), resident);
  ASSERT_EQ(u64(n, "transfers"), 0); /* on the CPU */
  ASSERT_EQ(u64(n, "peak"), resident + (st ? st->arena.arena : 0));
}

TEST(weft_plan_json_of_txt2img_has_the_arenas_of_a_direct_recording) {
  dm_plan p;
  record_default_model(&p);
  char *out = NULL, *err = NULL;
  int rc = plan_txt2img("--json", "--device=cpu", &out, &err);
  if (rc) fprintf(stderr, "%s", err);
  ASSERT_EQ(rc, 0);
  json_error_t je;
  json_t *root = json_loads(out, 0, &je);
  if (!root) fprintf(stderr, "%s: %s\n", je.text, out);
  ASSERT(root != NULL);
  ASSERT_EQ(json_array_size(json_object_get(root, "nodes")), 7);
  ASSERT(json_is_null(json_object_get(root, "budget")));
  uint64_t C = p.bytes[SD_CLIP], U = p.bytes[SD_UNET], V = p.bytes[SD_VAE];
  fprintf(stderr,
          "default model: text encoder arena %llu (bound %llu, naive %llu); "
          "UNet %llu (%llu, %llu); VAE decode %llu (%llu, %llu)\n",
          (unsigned long long)p.clip.arena.arena,
          (unsigned long long)p.clip.arena.lower_bound,
          (unsigned long long)p.clip.arena.naive,
          (unsigned long long)p.unet.arena.arena,
          (unsigned long long)p.unet.arena.lower_bound,
          (unsigned long long)p.unet.arena.naive,
          (unsigned long long)p.vae.arena.arena,
          (unsigned long long)p.vae.arena.lower_bound,
          (unsigned long long)p.vae.arena.naive);
  ASSERT(p.unet.arena.arena > 0 && p.vae.arena.arena > 0);
  /* execution order: loaders and constants first, as the graph's order */
  check_row(node_of(root, "ckpt"), "ran", NULL, 0, 0);
  check_row(node_of(root, "latent"), "ran", NULL, 0, 0);
  /* weights count from their first use, then stay (no budget on the CPU) */
  check_row(node_of(root, "positive"), "planned", &p.clip, C, C);
  check_row(node_of(root, "negative"), "planned", &p.clip, C, C);
  check_row(node_of(root, "sample"), "planned", &p.unet, U, C + U);
  check_row(node_of(root, "decode"), "planned", &p.vae, V, C + U + V);
  check_row(node_of(root, "save"), "skipped", NULL, 0, C + U + V);
  ASSERT_EQ(u64(root, "peak"), C + U + V + p.vae.arena.arena);
  ASSERT_STR_EQ(json_string_value(json_object_get(root, "peak_node")),
                "decode");
  json_t *blocks = json_object_get(root, "blocks");
  ASSERT_EQ(json_array_size(blocks), 3);
  ASSERT_STR_EQ(
      json_string_value(json_object_get(json_array_get(blocks, 1), "name")),
      "UNet");
  ASSERT_EQ(u64(json_array_get(blocks, 1), "bytes"), U);
  json_decref(root);
  free(out);
  free(err);
}

/* weft plan graphs/controlnet.yaml with the ControlNet in its window */
static json_t *plan_controlnet(const char *start) {
  char *g = weft_test_repo("graphs/controlnet.yaml"), *root = weft_test_repo("");
  char set[64];
  snprintf(set, sizeof set, "start_percent=%s", start);
  const char *a[] = {weft(), "plan",        g,   "--input-dir", root,
                     "--json", "--device=cpu", "--set", set,   NULL};
  char *out = NULL, *err = NULL;
  int rc = weft_test_spawn(a, &out, &err, 120);
  if (rc) fprintf(stderr, "%s", err);
  ASSERT_EQ(rc, 0);
  json_error_t je;
  json_t *j = json_loads(out, 0, &je);
  ASSERT(j != NULL);
  free(g), free(root), free(out), free(err);
  return j;
}

/* A sampler's ControlNet is part of its plan: its weights are the node's
 * (a block of their own, loaded for the sampler), and the UNet's calls are
 * recorded as the run makes them: all with residuals when the ControlNet
 * acts at every step, with and without them (an arena each, as the run
 * holds) when it starts at 30 %. */
TEST(weft_plan_of_a_controlnet_graph_counts_its_weights_and_both_arenas) {
  dm_plan p;
  record_default_model(&p);
  /* the ControlNet's weights, as the loader holds them: fp32 masters */
  char *path = weft_test_repo("models/default/weft-shapes-controlnet.safetensors");
  char err[1024];
  weft_st_file *f = NULL;
  ASSERT_OK(weft_st_open(path, &f, err, sizeof err));
  uint64_t CN = 0;
  for (int32_t i = 0; i < weft_st_count(f); i++) {
    const weft_st_tensor *t = weft_st_at(f, i);
    uint64_t n = 1;
    for (int d = 0; d < t->ndim; d++)
      n *= (uint64_t)t->shape[d];
    CN += n * 4;
  }
  weft_st_close(f);
  free(path);
  uint64_t C = p.bytes[SD_CLIP], U = p.bytes[SD_UNET];
  json_t *full = plan_controlnet("0"), *late = plan_controlnet("0.3");
  json_t *sf = node_of(full, "sample"), *sl = node_of(late, "sample");
  ASSERT_EQ(u64(sf, "weights"), U + CN);
  ASSERT_EQ(u64(sl, "weights"), U + CN);
  /* resident from the sampler on, after the text encoder's */
  ASSERT_EQ(u64(sf, "weights_resident"), C + U + CN);
  json_t *ids = json_object_get(sf, "blocks");
  ASSERT_EQ(json_array_size(ids), 2);
  json_t *blocks = json_object_get(full, "blocks");
  bool found = false;
  for (size_t i = 0; i < json_array_size(blocks); i++) {
    json_t *b = json_array_get(blocks, i);
    if (strcmp(json_string_value(json_object_get(b, "name")), "ControlNet"))
      continue;
    ASSERT(!found);
    found = true;
    ASSERT_EQ(u64(b, "bytes"), CN);
  }
  ASSERT(found);
  /* the calls without residuals are the plain sampler's recording */
  uint64_t with = u64(sf, "arena");
  fprintf(stderr, "UNet arena with residuals %llu, without %llu\n",
          (unsigned long long)with, (unsigned long long)p.unet.arena.arena);
  ASSERT(with > 0);
  ASSERT_EQ(u64(sl, "arena"), with + p.unet.arena.arena);
  uint64_t lb = u64(sf, "arena_lower_bound");
  ASSERT_EQ(u64(sl, "arena_lower_bound"),
            lb > p.unet.arena.lower_bound ? lb : p.unet.arena.lower_bound);
  json_decref(full);
  json_decref(late);
}

/* Runs graph (in graphs/) with --set set twice, planned and with
 * WEFT_ARENA=0, and asserts the two runs wrote the same PNG (png, the
 * first file of its prefix) byte for byte.  Returns the planned run's
 * JSON events (caller frees). */
static char *run_planned_and_not(const char *graph, const char *set,
                                 const char *png) {
  char rel[256];
  snprintf(rel, sizeof rel, "graphs/%s", graph);
  char *g = weft_test_repo(rel), *root = weft_test_repo(""), *events = NULL;
  char dir[2][4096];
  for (int planned = 1; planned >= 0; planned--) {
    snprintf(dir[planned], sizeof dir[planned], "%s/%s_%d", weft_test_tmpdir(),
             graph, planned);
    const char *a[] = {weft(),       "run",          g,
                       "--input-dir", root,          "--output-dir",
                       dir[planned], "--set",        set,
                       "--events=json", NULL};
    char *out = NULL, *err = NULL;
    if (!planned) setenv("WEFT_ARENA", "0", 1);
    int rc = weft_test_spawn(a, &out, &err, 120);
    unsetenv("WEFT_ARENA");
    if (rc) fprintf(stderr, "%s", err);
    ASSERT_EQ(rc, 0);
    if (planned)
      events = out;
    else
      free(out);
    free(err);
  }
  char pa[4400], pb[4400];
  snprintf(pa, sizeof pa, "%s/%s", dir[1], png);
  snprintf(pb, sizeof pb, "%s/%s", dir[0], png);
  size_t na = 0, nb = 0;
  char *x = weft_test_read_file(pa, &na), *y = weft_test_read_file(pb, &nb);
  ASSERT(x && y);
  ASSERT_EQ(na, nb);
  ASSERT(memcmp(x, y, na) == 0);
  free(x), free(y), free(g), free(root);
  return events;
}

/* In a run, a sampler's ControlNet calls are planned as its UNet calls:
 * a recording per ControlNet link and batch (controlnet.yaml's
 * ControlNetApplyAdvanced gives the prompt and the negative a link each),
 * traced on the first step and replayed from its arena on every later
 * one, and the image is the unplanned run's byte for byte. */
TEST(a_runs_controlnet_calls_replay_from_their_arenas_and_change_nothing) {
  char *out = run_planned_and_not("controlnet.yaml", "steps=4",
                                  "controlnet_00001_.png");
  ASSERT_CONTAINS(out, "\"UNet activations (with ControlNet residuals): "
                       "arena ");
  /* a ControlNet's residuals come and go: no graphs (CPU: none anyway) */
  ASSERT_CONTAINS(out, "), 3 replays, 0 misses; graphs: 0 segments, 0 "
                       "launches\"");
  ASSERT_CONTAINS(out, "\"ControlNet activations: 2 recordings, arenas ");
  ASSERT_CONTAINS(out, " bytes, 6 replays, 0 misses\"");
  free(out);
}

/* VAEDecodeTiled plans its tiles: `weft plan` records each tile shape of
 * its three tilings without decoding anything (it used to decode for
 * real, and left the VAE's weights out of the plan), and reports the
 * largest tile's arena -- hires-fix's 16x16-latent tiles, the size of
 * txt2img's whole decode.  A run plans each tile the same way and writes
 * the unplanned run's PNG byte for byte. */
TEST(tiled_vae_decode_is_planned_by_its_tiles_and_changes_nothing) {
  dm_plan p;
  record_default_model(&p);
  char *g = weft_test_repo("graphs/hires-fix.yaml"), *root = weft_test_repo("");
  const char *a[] = {weft(),   "plan",         g,    "--input-dir", root,
                     "--json", "--device=cpu", NULL};
  char *out = NULL, *err = NULL;
  int rc = weft_test_spawn(a, &out, &err, 120);
  if (rc) fprintf(stderr, "%s", err);
  ASSERT_EQ(rc, 0);
  json_t *root_j = json_loads(out, 0, NULL);
  ASSERT(root_j != NULL);
  json_t *d = node_of(root_j, "decode");
  ASSERT_STR_EQ(json_string_value(json_object_get(d, "status")), "planned");
  uint64_t C = p.bytes[SD_CLIP], U = p.bytes[SD_UNET], V = p.bytes[SD_VAE];
  ASSERT_EQ(u64(d, "weights"), V);
  ASSERT_EQ(u64(d, "weights_resident"), C + U + V);
  ASSERT_EQ(u64(d, "arena"), p.vae.arena.arena);
  json_decref(root_j);
  free(out), free(err), free(g), free(root);
  free(run_planned_and_not("hires-fix.yaml", "steps=2",
                           "hires-fix_00001_.png"));
}

TEST(weft_plan_table_prints_every_node_and_the_peak) {
  dm_plan p;
  record_default_model(&p);
  char *out = NULL;
  ASSERT_EQ(plan_txt2img("--device", "cpu", &out, NULL), 0);
  ASSERT_CONTAINS(out, "arena (lower bound)");
  const char *ids[] = {"ckpt",   "latent", "positive", "negative",
                       "sample", "decode", "save"};
  for (int i = 0; i < 7; i++) {
    char line[64];
    snprintf(line, sizeof line, "\n%s ", ids[i]);
    ASSERT_CONTAINS(out, line);
  }
  ASSERT_CONTAINS(out, "KSampler");
  ASSERT_CONTAINS(out, "(output: skipped)");
  char peak[128];
  uint64_t total = p.bytes[0] + p.bytes[1] + p.bytes[2] + p.vae.arena.arena;
  snprintf(peak, sizeof peak, "(%llu bytes) at node 'decode'; budget unlimited",
           (unsigned long long)total);
  ASSERT_CONTAINS(out, peak);
  free(out);
}

TEST(weft_plan_usage_and_bad_input) {
  const char *top[] = {weft(), "--help", NULL};
  char *out = NULL, *err = NULL;
  ASSERT_EQ(weft_test_spawn(top, &out, NULL, 10), 0);
  ASSERT_CONTAINS(out, "  plan ");
  free(out);
  const char *h[] = {weft(), "plan", "--help", NULL};
  ASSERT_EQ(weft_test_spawn(h, &out, NULL, 10), 0);
  ASSERT_CONTAINS(out, "usage: weft plan GRAPH");
  ASSERT_CONTAINS(out, "--vram BYTES");
  free(out);
  const char *none[] = {weft(), "plan", NULL};
  ASSERT_EQ(weft_test_spawn(none, NULL, NULL, 10), 2);
  const char *vram[] = {weft(), "plan", "g.yaml", "--vram", "lots", NULL};
  ASSERT_EQ(weft_test_spawn(vram, NULL, &err, 10), 2);
  ASSERT_CONTAINS(err, "--vram lots");
  free(err);
  char *bad = weft_test_write_file(weft_test_tmpdir(), "bad.yaml",
                                   "version: 1\n"
                                   "nodes:\n"
                                   "  a:\n"
                                   "    op: KSamplr\n");
  const char *b[] = {weft(), "plan", bad, NULL};
  ASSERT_EQ(weft_test_spawn(b, NULL, &err, 30), 2);
  ASSERT_CONTAINS(err, "bad.yaml:4:");
  ASSERT_CONTAINS(err, "KSampler");
  free(err);
  free(bad);
  /* a missing checkpoint fails in the loader: exit 2, the node named */
  ASSERT_EQ(plan_txt2img("--set", "ckpt=no/such.safetensors", NULL, &err), 2);
  ASSERT_CONTAINS(err, "node 'ckpt' (CheckpointLoaderSimple)");
  ASSERT_CONTAINS(err, "no/such.safetensors");
  free(err);
}

/* ---- the runtime's walk and residency, on nodes made here ---------------- */

enum { P_BLOCK, P_BYTES, P_ARENA };

static int model_plan(weft_call *c, weft_plan *plan) {
  ASSERT(WEFT_PLAN_HAS(plan, weights));
  /* its producer planned or ran before it, and stored its output */
  ASSERT(c->inputs[0] != NULL);
  plan->device = 0;
  plan->weight_bytes = (uint64_t)weft_param_int(c, P_BYTES);
  plan->arena_bytes = (uint64_t)weft_param_int(c, P_ARENA);
  plan->arena_lower_bound = plan->arena_bytes - 1;
  plan->arena_naive = plan->arena_bytes * 2;
  plan->h2d_bytes = 10;
  plan->d2h_bytes = 1;
  plan->n_weights = 1;
  plan->weights[0] = (weft_plan_weights){(uint64_t)weft_param_int(c, P_BLOCK),
                                         plan->weight_bytes, "model"};
  c->outputs[0] = c->host->int_new(c, 0);
  return 0;
}

static int never_run(weft_call *c) {
  c->host->error(c, "ran in plan mode");
  return WEFT_EINTERNAL;
}

static int const_run(weft_call *c) {
  c->outputs[0] = c->host->int_new(c, 5);
  return 0;
}

static const weft_port_def int_in[] = {
    {sizeof(weft_port_def), "prev", WEFT_TYPE_INT, NULL, 0, "upstream"}};
static const weft_port_def int_out[] = {
    {sizeof(weft_port_def), "out", WEFT_TYPE_INT, NULL, 0, "a number"}};
#define PINT(n)                                                                \
  { sizeof(weft_param_def), n, WEFT_TYPE_INT, 0, 0, NULL, 0, 1e12, NULL, 0, n }
static const weft_param_def model_params[] = {PINT("block"), PINT("bytes"),
                                              PINT("arena")};
static const weft_node_def model_def = {.struct_size = sizeof(weft_node_def),
                                        .op = "PlanModel",
                                        .category = "test",
                                        .doc = "Plans weights and an arena.",
                                        .inputs = int_in,
                                        .n_inputs = 1,
                                        .outputs = int_out,
                                        .n_outputs = 1,
                                        .params = model_params,
                                        .n_params = 3,
                                        .plan = model_plan,
                                        .run = never_run};
static const weft_node_def sink_def = {.struct_size = sizeof(weft_node_def),
                                       .op = "PlanSink",
                                       .category = "test",
                                       .doc = "An output node.",
                                       .inputs = int_in,
                                       .n_inputs = 1,
                                       .flags = WEFT_NODE_OUTPUT,
                                       .run = never_run};
static const weft_node_def const_def = {.struct_size = sizeof(weft_node_def),
                                        .op = "PlanConst",
                                        .category = "test",
                                        .doc = "A number.",
                                        .outputs = int_out,
                                        .n_outputs = 1,
                                        .run = const_run};
static const weft_node_def *const plan_nodes[] = {&model_def, &sink_def,
                                                  &const_def};
static const weft_plugin plan_plugin = {sizeof(weft_plugin),
                                        WEFT_ABI_MAJOR,
                                        WEFT_ABI_MINOR,
                                        "plantest",
                                        "1",
                                        plan_nodes,
                                        3,
                                        {0}};

static const char *const GRAPH =
    "version: 1\n"
    "nodes:\n"
    "  c: {op: PlanConst}\n"
    "  a:\n"
    "    op: PlanModel\n"
    "    inputs: {prev: c.out}\n"
    "    params: {block: 1, bytes: 100, arena: 10}\n"
    "  b:\n"
    "    op: PlanModel\n"
    "    inputs: {prev: a.out}\n"
    "    params: {block: 2, bytes: 100, arena: 20}\n"
    "  d:\n"
    "    op: PlanModel\n"
    "    inputs: {prev: b.out}\n"
    "    params: {block: 1, bytes: 100, arena: 5}\n"
    "  s:\n"
    "    op: PlanSink\n"
    "    inputs: {prev: d.out}\n";

static weft_plan_report *plan_graph(uint64_t budget, weft_ctx **ctx,
                                    weft_graph **g) {
  ASSERT_OK(weft_ctx_new(ctx));
  ASSERT_OK(weft_plugin_register(*ctx, &plan_plugin, "test_plan_graph.c"));
  int r = weft_graph_load_string(*ctx, GRAPH, strlen(GRAPH), "g.yaml", g);
  if (r) fprintf(stderr, "%s\n", weft_ctx_error(*ctx));
  ASSERT_OK(r);
  weft_plan_report *rep = NULL;
  r = weft_graph_plan(*ctx, *g, budget, &rep);
  if (r) fprintf(stderr, "%s\n", weft_ctx_error(*ctx));
  ASSERT_OK(r);
  ASSERT_EQ(rep->n_rows, 5);
  ASSERT_STR_EQ(rep->rows[0].node_id, "c");
  ASSERT_EQ(rep->rows[0].status, WEFT_PLAN_RAN);
  ASSERT_STR_EQ(rep->rows[4].node_id, "s");
  ASSERT_EQ(rep->rows[4].status, WEFT_PLAN_SKIPPED);
  ASSERT(rep->on_device);
  ASSERT_EQ(rep->n_blocks, 2); /* a and d share block 1 */
  for (int i = 1; i <= 3; i++) {
    ASSERT_EQ(rep->rows[i].status, WEFT_PLAN_PLANNED);
    ASSERT_EQ(rep->rows[i].device, 0);
    ASSERT_EQ(rep->rows[i].h2d, 10);
  }
  ASSERT_EQ(rep->rows[1].block[0], rep->rows[3].block[0]);
  return rep;
}

static void done(weft_plan_report *rep, weft_ctx *ctx, weft_graph *g) {
  weft_plan_report_free(rep);
  weft_graph_free(g);
  weft_ctx_free(ctx);
}

/* resident, loaded, peak of rows a, b, d */
static void check_rows(const weft_plan_report *rep, const uint64_t want[3][3]) {
  for (int i = 0; i < 3; i++) {
    const weft_plan_row *r = &rep->rows[i + 1];
    ASSERT_EQ(r->weights_resident, want[i][0]);
    ASSERT_EQ(r->weights_loaded, want[i][1]);
    ASSERT_EQ(r->transfers, want[i][1] + 11);
    ASSERT_EQ(r->peak, want[i][2]);
  }
}

TEST(residency_without_a_budget_loads_each_model_once) {
  weft_ctx *ctx;
  weft_graph *g;
  weft_plan_report *rep = plan_graph(0, &ctx, &g);
  const uint64_t want[3][3] = {{100, 100, 110}, {200, 100, 220}, {200, 0, 205}};
  check_rows(rep, want);
  ASSERT_EQ(rep->peak, 220);
  ASSERT_EQ(rep->peak_row, 2);
  ASSERT_EQ(rep->weights_loaded, 200);
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  ASSERT_OK(weft_plan_print(rep, f, 0));
  fclose(f);
  ASSERT_CONTAINS(buf, "peak: 220 B (220 bytes) at node 'b'; budget unlimited");
  ASSERT_CONTAINS(buf, "cuda:0");
  ASSERT_CONTAINS(buf, "10 B (9 B)");
  free(buf);
  done(rep, ctx, g);
}

TEST(residency_under_a_budget_evicts_by_next_use) {
  weft_ctx *ctx;
  weft_graph *g;
  /* 150 bytes less b's arena hold one model: each node loads its own,
   * evicting the other */
  weft_plan_report *rep = plan_graph(150, &ctx, &g);
  const uint64_t want[3][3] = {
      {100, 100, 110}, {100, 100, 120}, {100, 100, 105}};
  check_rows(rep, want);
  ASSERT_EQ(rep->peak, 120);
  ASSERT_EQ(rep->weights_loaded, 300);
  ASSERT_EQ(rep->rows[4].weights_resident, 100);
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  ASSERT_OK(weft_plan_print(rep, f, 1));
  fclose(f);
  json_error_t je;
  json_t *root = json_loads(buf, 0, &je);
  ASSERT(root != NULL);
  ASSERT_EQ(u64(root, "budget"), 150);
  ASSERT_EQ(u64(root, "weights_loaded"), 300);
  ASSERT_EQ(u64(node_of(root, "b"), "weights_loaded"), 100);
  ASSERT_EQ(u64(node_of(root, "b"), "arena_naive"), 40);
  ASSERT_STR_EQ(
      json_string_value(json_object_get(node_of(root, "a"), "device")),
      "cuda:0");
  json_decref(root);
  free(buf);
  done(rep, ctx, g);
  /* 250 bytes (230 for weights) keep both: d finds its model there */
  rep = plan_graph(250, &ctx, &g);
  const uint64_t want2[3][3] = {
      {100, 100, 110}, {200, 100, 220}, {200, 0, 205}};
  check_rows(rep, want2);
  done(rep, ctx, g);
}

TEST(a_model_larger_than_the_budget_streams_through_it) {
  weft_ctx *ctx;
  weft_graph *g;
  /* 50 bytes less the largest arena (b's 20) leave 30 for weights */
  weft_plan_report *rep = plan_graph(50, &ctx, &g);
  const uint64_t want[3][3] = {{30, 100, 40}, {30, 100, 50}, {30, 100, 35}};
  check_rows(rep, want);
  ASSERT(rep->blocks[0].streamed && rep->blocks[1].streamed);
  ASSERT(!rep->arena_over_budget);
  ASSERT(rep->peak <= 50);
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  ASSERT_OK(weft_plan_print(rep, f, 0));
  fclose(f);
  ASSERT_CONTAINS(buf, "is larger than the budget: it streams");
  free(buf);
  done(rep, ctx, g);
  /* 20 bytes: b's arena alone fills it */
  rep = plan_graph(20, &ctx, &g);
  ASSERT(rep->arena_over_budget);
  done(rep, ctx, g);
}

TEST(plan_of_a_graph_with_an_unset_input_names_where) {
  weft_ctx *ctx;
  ASSERT_OK(weft_ctx_new(&ctx));
  ASSERT_OK(weft_plugin_register(ctx, &plan_plugin, "test_plan_graph.c"));
  const char *y = "version: 1\n"
                  "inputs:\n"
                  "  size: {type: INT}\n"
                  "nodes:\n"
                  "  c: {op: PlanConst}\n"
                  "  a:\n"
                  "    op: PlanModel\n"
                  "    inputs: {prev: c.out}\n"
                  "    params: {block: 1, bytes: $size, arena: 10}\n";
  weft_graph *g = NULL;
  ASSERT_OK(weft_graph_load_string(ctx, y, strlen(y), "in.yaml", &g));
  weft_plan_report *rep = (weft_plan_report *)1;
  ASSERT_EQ(weft_graph_plan(ctx, g, 0, &rep), WEFT_EMISSING);
  ASSERT(rep == NULL);
  ASSERT_CONTAINS(weft_ctx_error(ctx), "in.yaml:3:");
  ASSERT_CONTAINS(weft_ctx_error(ctx), "--set size=");
  /* once set, it plans with the value */
  ASSERT_OK(weft_graph_set_input(ctx, g, "size", "64"));
  ASSERT_OK(weft_graph_plan(ctx, g, 0, &rep));
  ASSERT_EQ(rep->rows[1].weights_bytes, 64);
  ASSERT_EQ(rep->rows[1].weights_resident, 64);
  weft_plan_report_free(rep);
  weft_graph_free(g);
  weft_ctx_free(ctx);
}
