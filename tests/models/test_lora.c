/* test_lora.c - LoRA and LoCon merging (nodes/sd/lora.c) against the
 * diffusers/ComfyUI references of tests/fixtures/sd15_extras (see
 * tools/fixtures/README.md, "sd15_extras"): merged weights, UNet and CLIP
 * outputs, kohya (diffusers and LDM names) vs PEFT files, LoCon, stacking,
 * strength 0, re-merging from the base, unmatched keys; and LoraLoader /
 * LoraLoaderModelOnly through YAML graphs, in process (probe.h's runner
 * with the UNet and conditioning probes this file adds) and through the
 * weft command (graphs/lora.yaml).
 *
 * Tolerances: UNet and CLIP outputs 1e-4, as test_sd_models.c (fp32
 * compute against fp32 torch with the same weights).  Merged weights 1e-6:
 * the fixture's LoRA factors are on a coarse grid, so up @ down is exact in
 * float32 and the merge differs only by the rounding of strength x scale
 * (in practice not at all). */
#include <jansson.h>
#include <pthread.h>

#include "kernels/cpu/cpu.h"
#include "lora.h"
#include "png_io.h"
#include "probe.h"
#include "sd_fixture.h"
#include "sd_objects.h"

#define TOL 1e-4
#define MERGE_TOL 1e-6

/* ---- the model with its patch states ------------------------------------- */

typedef struct lmodel {
  fx_model m;
  sd_unet *unet;
  sd_clip *clip;
  weft_backend *be;
  sd_patch_state st[SD_PARTS];
} lmodel;

static void lm_open(lmodel *lm) {
  memset(lm, 0, sizeof *lm);
  fx_model_open(&lm->m, SD_LAYOUT_LDM);
  ASSERT_OK(sd_unet_load(&lm->m.ck, &lm->unet));
  ASSERT_OK(sd_clip_load(&lm->m.ck, &lm->clip));
  lm->be = weft_backend_cpu_new(2);
  ASSERT(lm->be != NULL);
}

static void lm_close(lmodel *lm) {
  for (int p = 0; p < SD_PARTS; p++)
    sd_patch_state_free(&lm->st[p]);
  sd_unet_free(lm->unet);
  sd_clip_free(lm->clip);
  weft_backend_free(lm->be);
  sd_ckpt_free_params(&lm->m.ck);
  fx_model_close(&lm->m);
}

/* the LoRA file sd15_extras/rel matched against the model; unmatched keys
 * into um (may be NULL) */
static sd_lora *lora_open_path(lmodel *lm, const char *path, char *um,
                               size_t umlen, int *n_um) {
  char err[1024], buf[1024];
  weft_st_file *f = NULL;
  int r = weft_st_open(path, &f, err, sizeof err);
  if (r) fprintf(stderr, "%s\n", err);
  ASSERT_OK(r);
  sd_file file = fx_file(f);
  sd_lora *l = NULL;
  int n = 0;
  r = sd_lora_load(&file, &lm->m.ck, &l, um ? um : buf, um ? umlen : sizeof buf,
                   n_um ? n_um : &n, err, sizeof err);
  if (r) fprintf(stderr, "%s\n", err);
  ASSERT_OK(r);
  weft_st_close(f);
  return l;
}

static sd_lora *lora_open(lmodel *lm, const char *rel) {
  char path[4096];
  snprintf(path, sizeof path, "%s/fixtures/sd15_extras/%s", weft_test_srcdir(),
           rel);
  int n_um = 0;
  sd_lora *l = lora_open_path(lm, path, NULL, 0, &n_um);
  ASSERT_EQ(n_um, 0); /* every key of the fixture's files matches */
  return l;
}

static void lm_apply(lmodel *lm, const sd_patch *pu, int nu, const sd_patch *pc,
                     int nc) {
  ASSERT_OK(sd_patch_apply(&lm->st[SD_UNET], SD_UNET, pu, nu));
  ASSERT_OK(sd_patch_apply(&lm->st[SD_CLIP], SD_CLIP, pc, nc));
}

/* UNet output on lora_refs' inputs [2, 4, 8, 8] (caller frees) */
static float *unet_out(sd_unet *unet, weft_backend *be, weft_st_file *refs) {
  const float *x = ex_ref(refs, "unet/sample", 2 * 4 * 8 * 8);
  const float *t = ex_ref(refs, "unet/timestep", 2);
  const float *ctx = ex_ref(refs, "unet/encoder_hidden_states", 2 * 77 * 32);
  float *out = malloc(2 * 4 * 8 * 8 * sizeof *out);
  ASSERT_OK(sd_unet_forward(unet, be, x, 2, 8, 8, t, ctx, 77, NULL, out));
  return out;
}

/* CLIP last_hidden_state of the refs' prompt [1, 77, 32] (caller frees) */
static float *clip_out(sd_clip *clip, weft_backend *be, weft_st_file *refs) {
  const weft_st_tensor *ids64 = weft_st_find(refs, "clip/input_ids");
  ASSERT(ids64 && ids64->nbytes == 77 * 8);
  int32_t ids[77];
  for (int i = 0; i < 77; i++) {
    int64_t v;
    memcpy(&v, (const char *)ids64->data + 8 * i, 8);
    ids[i] = (int32_t)v;
  }
  float *hid = malloc(77 * 32 * sizeof *hid);
  ASSERT_OK(sd_clip_forward(clip, be, ids, 1, 0, hid, NULL));
  return hid;
}

/* The model's outputs against case cs; clip_case names the case whose text
 * encoder reference applies (model_only: "base"). */
static void check_outputs(lmodel *lm, weft_st_file *refs, const char *cs,
                          const char *clip_case) {
  char key[256];
  float *u = unet_out(lm->unet, lm->be, refs);
  snprintf(key, sizeof key, "%s/unet_out", cs);
  double d = max_abs_diff(u, ex_ref(refs, key, 2 * 4 * 8 * 8), 2 * 4 * 8 * 8);
  fprintf(stderr, "%s unet_out max diff %.3g\n", cs, d);
  ASSERT(d <= TOL);
  /* and the LoRA moved it: a dropped module would show */
  if (strcmp(cs, "base"))
    ASSERT(max_abs_diff(u, ex_ref(refs, "base/unet_out", 0), 2 * 4 * 8 * 8) >
           0.1);
  float *h = clip_out(lm->clip, lm->be, refs);
  snprintf(key, sizeof key, "%s/clip_last_hidden_state", clip_case);
  d = max_abs_diff(h, ex_ref(refs, key, 77 * 32), 77 * 32);
  fprintf(stderr, "%s clip max diff %.3g\n", cs, d);
  ASSERT(d <= TOL);
  free(u), free(h);
}

/* Every "<cs>/merged/<part>/<module>" reference against the model's weight;
 * its LDM name against the metadata's ldm_names.  Returns how many. */
static int check_merged(lmodel *lm, weft_st_file *refs, const char *cs) {
  json_t *names = json_loads(weft_st_meta(refs, "ldm_names"), 0, NULL);
  ASSERT(names != NULL);
  weft_st_file *base = fx_open("sd15_tiny.safetensors");
  char pre[128];
  snprintf(pre, sizeof pre, "%s/merged/", cs);
  int n = 0;
  for (int32_t i = 0; i < weft_st_count(refs); i++) {
    const weft_st_tensor *t = weft_st_at(refs, i);
    if (strncmp(t->key, pre, strlen(pre))) continue;
    const char *rest = t->key + strlen(pre); /* "unet/down_blocks..." */
    sd_part part = !strncmp(rest, "unet/", 5) ? SD_UNET : SD_CLIP;
    const char *module = strchr(rest, '/') + 1;
    char name[256], ldm[512];
    snprintf(name, sizeof name, "%s.weight", module);
    const sd_param *p = sd_ckpt_param(&lm->m.ck, part, name);
    if (!p) fprintf(stderr, "no weight '%s'\n", name);
    ASSERT(p != NULL);
    ASSERT_EQ(p->numel * 4, t->nbytes);
    sd_ldm_name(&lm->m.ck, part, name, ldm, sizeof ldm);
    ASSERT_STR_EQ(ldm, json_string_value(json_object_get(names, rest)));
    double d = max_abs_diff(p->data, t->data, p->numel);
    fprintf(stderr, "%s merged %s max diff %.3g\n", cs, rest, d);
    ASSERT(d <= MERGE_TOL);
    /* the reference is not the base weight (fp16 in the checkpoint) */
    const weft_st_tensor *b = weft_st_find(base, ldm);
    ASSERT(b && b->dtype == WEFT_ST_F16);
    double moved = 0;
    for (int64_t k = 0; k < p->numel; k++) {
      uint16_t hv;
      memcpy(&hv, (const char *)b->data + 2 * k, 2);
      double dd = fabs(weft_f16_to_f32(hv) - ((const float *)t->data)[k]);
      moved = dd > moved ? dd : moved;
    }
    ASSERT(moved > 1e-3);
    n++;
  }
  weft_st_close(base);
  json_decref(names);
  return n;
}

/* the model's weights of a part, copied in registry order (caller frees) */
static float *snapshot(lmodel *lm, sd_part part, int64_t *total) {
  int64_t n = 0;
  for (int i = 0; i < lm->m.ck.n_params; i++)
    if (lm->m.ck.params[i].part == part) n += lm->m.ck.params[i].numel;
  float *s = malloc((size_t)n * sizeof *s), *w = s;
  for (int i = 0; i < lm->m.ck.n_params; i++)
    if (lm->m.ck.params[i].part == part) {
      memcpy(w, lm->m.ck.params[i].data,
             (size_t)lm->m.ck.params[i].numel * sizeof *w);
      w += lm->m.ck.params[i].numel;
    }
  *total = n;
  return s;
}

static bool same_as(lmodel *lm, sd_part part, const float *snap, int64_t n) {
  int64_t k;
  float *now = snapshot(lm, part, &k);
  bool same = k == n && !memcmp(now, snap, (size_t)n * sizeof *now);
  free(now);
  return same;
}

/* ---- the core API -------------------------------------------------------- */

TEST(base_model_matches_reference) {
  lmodel lm;
  lm_open(&lm);
  weft_st_file *refs = ex_open("lora_refs.safetensors");
  float *u = unet_out(lm.unet, lm.be, refs);
  ASSERT(max_abs_diff(u, ex_ref(refs, "base/unet_out", 512), 512) <= TOL);
  float *h = clip_out(lm.clip, lm.be, refs);
  ASSERT(max_abs_diff(h, ex_ref(refs, "base/clip_last_hidden_state", 77 * 32),
                      77 * 32) <= TOL);
  free(u), free(h);
  weft_st_close(refs);
  lm_close(&lm);
}

TEST(kohya_lora_matches_diffusers) {
  lmodel lm;
  lm_open(&lm);
  weft_st_file *refs = ex_open("lora_refs.safetensors");
  sd_lora *l = lora_open(&lm, "lora_kohya.safetensors");
  ASSERT_EQ(l->n_unet, 72);
  ASSERT_EQ(l->n_clip, 12);
  sd_patch pu = {l, 0.8f}, pc = {l, 0.6f};
  lm_apply(&lm, &pu, 1, &pc, 1);
  ASSERT_EQ(check_merged(&lm, refs, "kohya"), 11);
  check_outputs(&lm, refs, "kohya", "kohya");
  sd_lora_release(l);
  weft_st_close(refs);
  lm_close(&lm);
}

TEST(peft_lora_matches_diffusers_and_equals_kohya) {
  lmodel lm;
  lm_open(&lm);
  weft_st_file *refs = ex_open("lora_refs.safetensors");
  sd_lora *k = lora_open(&lm, "lora_kohya.safetensors");
  sd_lora *p = lora_open(&lm, "lora_peft.safetensors");
  /* alpha 2 / rank 4 from lora_adapter_metadata: the same deltas, bit for
   * bit, on the same weights */
  ASSERT_EQ(p->n, k->n);
  ASSERT_EQ(p->n_unet, k->n_unet);
  for (int i = 0; i < k->n; i++) {
    int j = 0;
    while (j < p->n && p->t[j].param != k->t[i].param)
      j++;
    ASSERT(j < p->n);
    ASSERT_EQ(memcmp(p->t[j].delta, k->t[i].delta,
                     (size_t)k->t[i].param->numel * sizeof(float)),
              0);
  }
  sd_patch pu = {p, 0.8f}, pc = {p, 0.6f};
  lm_apply(&lm, &pu, 1, &pc, 1);
  ASSERT_EQ(check_merged(&lm, refs, "kohya"), 11);
  check_outputs(&lm, refs, "peft", "peft");
  sd_lora_release(k), sd_lora_release(p);
  weft_st_close(refs);
  lm_close(&lm);
}

/* prefix + a weight name without ".weight", dots to underscores */
static void kohya_flat(const char *prefix, const char *name, char *out,
                       size_t len) {
  snprintf(out, len, "%s%.*s", prefix, (int)(strlen(name) - 7), name);
  for (char *c = out; *c; c++)
    *c = *c == '.' ? '_' : *c;
}

/* kohya's LDM-style names (lora_unet_input_blocks_1_1_proj_in): the UNet
 * keys of lora_kohya renamed give the same deltas */
TEST(kohya_ldm_names_equal_diffusers_names) {
  lmodel lm;
  lm_open(&lm);
  weft_st_file *src = ex_open("lora_kohya.safetensors");
  weft_st_writer *w = NULL;
  ASSERT_OK(weft_st_writer_new(&w));
  /* "lora_unet_<diffusers path with _>" -> "lora_unet_<LDM path with _>" */
  int renamed = 0;
  bool saw_example = false;
  for (int32_t i = 0; i < weft_st_count(src); i++) {
    const weft_st_tensor *t = weft_st_at(src, i);
    const char *dot = strchr(t->key, '.'); /* ".alpha", ".lora_up.weight" */
    char stem[256], key[512];
    snprintf(stem, sizeof stem, "%.*s", (int)(dot - t->key), t->key);
    snprintf(key, sizeof key, "%s", t->key);
    for (int q = 0; !strncmp(stem, "lora_unet_", 10) && q < lm.m.ck.n_params;
         q++) {
      const sd_param *p = &lm.m.ck.params[q];
      char flat[512], ldm[512];
      if (p->part != SD_UNET) continue;
      kohya_flat("lora_unet_", p->name, flat, sizeof flat);
      if (strcmp(flat, stem)) continue;
      sd_ldm_name(&lm.m.ck, SD_UNET, p->name, ldm, sizeof ldm);
      kohya_flat("lora_unet_", ldm + strlen("model.diffusion_model."), flat,
                 sizeof flat);
      snprintf(key, sizeof key, "%s%s", flat, dot);
      saw_example |= !strcmp(key, "lora_unet_input_blocks_1_1_proj_in.alpha");
      renamed++;
      break;
    }
    ASSERT_OK(weft_st_writer_add(w, key, t->dtype, t->ndim, t->shape, t->data));
  }
  ASSERT_EQ(renamed, 72 * 3);
  ASSERT(saw_example);
  char path[4096], err[1024];
  snprintf(path, sizeof path, "%s/lora_ldm.safetensors", weft_test_tmpdir());
  ASSERT_OK(weft_st_writer_save(w, path, err, sizeof err));
  weft_st_writer_free(w);
  weft_st_close(src);
  int n_um = 0;
  sd_lora *ldm = lora_open_path(&lm, path, NULL, 0, &n_um);
  ASSERT_EQ(n_um, 0);
  sd_lora *k = lora_open(&lm, "lora_kohya.safetensors");
  ASSERT_EQ(ldm->n, k->n);
  for (int i = 0; i < k->n; i++) {
    int j = 0;
    while (j < ldm->n && ldm->t[j].param != k->t[i].param)
      j++;
    ASSERT(j < ldm->n);
    ASSERT_EQ(memcmp(ldm->t[j].delta, k->t[i].delta,
                     (size_t)k->t[i].param->numel * sizeof(float)),
              0);
  }
  sd_lora_release(ldm), sd_lora_release(k);
  lm_close(&lm);
}

TEST(locon_matches_diffusers) {
  lmodel lm;
  lm_open(&lm);
  weft_st_file *refs = ex_open("lora_refs.safetensors");
  sd_lora *l = lora_open(&lm, "locon_kohya.safetensors");
  ASSERT_EQ(l->n_unet, 24);
  ASSERT_EQ(l->n_clip, 6);
  sd_patch pu = {l, 0.8f}, pc = {l, 0.6f};
  lm_apply(&lm, &pu, 1, &pc, 1);
  ASSERT_EQ(check_merged(&lm, refs, "locon"), 3);
  check_outputs(&lm, refs, "locon", "locon");
  sd_lora_release(l);
  weft_st_close(refs);
  lm_close(&lm);
}

TEST(stacked_loras_match_diffusers) {
  lmodel lm;
  lm_open(&lm);
  weft_st_file *refs = ex_open("lora_refs.safetensors");
  sd_lora *a = lora_open(&lm, "lora_kohya.safetensors");
  sd_lora *b = lora_open(&lm, "lora_b_peft.safetensors");
  ASSERT_EQ(b->n_unet, 24);
  ASSERT_EQ(b->n_clip, 4);
  sd_patch pu[2] = {{a, 0.8f}, {b, 1.0f}}, pc[2] = {{a, 0.6f}, {b, -0.5f}};
  lm_apply(&lm, pu, 2, pc, 2);
  ASSERT_EQ(check_merged(&lm, refs, "stack"), 3);
  check_outputs(&lm, refs, "stack", "stack");
  sd_lora_release(a), sd_lora_release(b);
  weft_st_close(refs);
  lm_close(&lm);
}

TEST(strength_zero_is_bit_identical_to_base) {
  lmodel lm;
  lm_open(&lm);
  weft_st_file *refs = ex_open("lora_refs.safetensors");
  int64_t nu, nc;
  float *su = snapshot(&lm, SD_UNET, &nu), *sc = snapshot(&lm, SD_CLIP, &nc);
  float *u0 = unet_out(lm.unet, lm.be, refs);
  float *h0 = clip_out(lm.clip, lm.be, refs);
  sd_lora *l = lora_open(&lm, "lora_kohya.safetensors");
  sd_patch pu = {l, 0.0f}, pc = {l, 0.0f};
  lm_apply(&lm, &pu, 1, &pc, 1);
  ASSERT(same_as(&lm, SD_UNET, su, nu));
  ASSERT(same_as(&lm, SD_CLIP, sc, nc));
  float *u = unet_out(lm.unet, lm.be, refs),
        *h = clip_out(lm.clip, lm.be, refs);
  ASSERT_EQ(memcmp(u, u0, 512 * sizeof *u), 0);
  ASSERT_EQ(memcmp(h, h0, 77 * 32 * sizeof *h), 0);
  free(u), free(h), free(u0), free(h0), free(su), free(sc);
  sd_lora_release(l);
  weft_st_close(refs);
  lm_close(&lm);
}

TEST(model_only_leaves_the_text_encoder_alone) {
  lmodel lm;
  lm_open(&lm);
  weft_st_file *refs = ex_open("lora_refs.safetensors");
  int64_t nc;
  float *sc = snapshot(&lm, SD_CLIP, &nc);
  sd_lora *l = lora_open(&lm, "lora_kohya.safetensors");
  sd_patch pu = {l, 0.8f};
  lm_apply(&lm, &pu, 1, NULL, 0);
  ASSERT(same_as(&lm, SD_CLIP, sc, nc));
  check_outputs(&lm, refs, "model_only", "base");
  free(sc);
  sd_lora_release(l);
  weft_st_close(refs);
  lm_close(&lm);
}

/* Changing strengths re-merges from the base weights: no drift, back to the
 * base exactly, and the first merge again exactly. */
TEST(remerge_at_other_strengths_starts_from_the_base) {
  lmodel lm;
  lm_open(&lm);
  weft_st_file *refs = ex_open("lora_refs.safetensors");
  int64_t nu, nc;
  float *su = snapshot(&lm, SD_UNET, &nu), *sc = snapshot(&lm, SD_CLIP, &nc);
  sd_lora *l = lora_open(&lm, "lora_kohya.safetensors");
  sd_patch pu = {l, 0.8f}, pc = {l, 0.6f};
  lm_apply(&lm, &pu, 1, &pc, 1);
  int64_t k;
  float *mu = snapshot(&lm, SD_UNET, &k), *mc = snapshot(&lm, SD_CLIP, &k);
  sd_patch pu2 = {l, 0.3f}, pc2 = {l, 1.0f};
  lm_apply(&lm, &pu2, 1, &pc2, 1);
  check_outputs(&lm, refs, "kohya_s0.3_c1.0", "kohya_s0.3_c1.0");
  for (int round = 0; round < 3; round++) {
    lm_apply(&lm, NULL, 0, NULL, 0);
    ASSERT(same_as(&lm, SD_UNET, su, nu));
    ASSERT(same_as(&lm, SD_CLIP, sc, nc));
    lm_apply(&lm, &pu, 1, &pc, 1);
    ASSERT(same_as(&lm, SD_UNET, mu, nu));
    ASSERT(same_as(&lm, SD_CLIP, mc, nc));
    lm_apply(&lm, &pu2, 1, &pc2, 1);
  }
  check_outputs(&lm, refs, "kohya_s0.3_c1.0", "kohya_s0.3_c1.0");
  free(su), free(sc), free(mu), free(mc);
  sd_lora_release(l);
  weft_st_close(refs);
  lm_close(&lm);
}

TEST(unmatched_keys_are_named) {
  lmodel lm;
  lm_open(&lm);
  char path[4096], um[1024];
  snprintf(path, sizeof path,
           "%s/fixtures/sd15_extras/lora_unmatched_keys.safetensors",
           weft_test_srcdir());
  int n_um = 0;
  sd_lora *l = lora_open_path(&lm, path, um, sizeof um, &n_um);
  fprintf(stderr, "unmatched: %s\n", um);
  ASSERT_EQ(n_um, 9); /* three modules, three tensors each */
  ASSERT_CONTAINS(um, "lora_unet_down_blocks_5_attentions_0_proj_in.");
  ASSERT_CONTAINS(um, "lora_te_text_model_encoder_layers_7_mlp_fc1.");
  ASSERT_CONTAINS(um, "lora_unet_mid_block_attentions_0_transformer_blocks_0_"
                      "attn1_to_x.");
  /* the valid module is applied: LoRA A's proj_in delta */
  ASSERT_EQ(l->n, 1);
  ASSERT_STR_EQ(l->t[0].param->name,
                "down_blocks.0.attentions.0.proj_in.weight");
  sd_lora *a = lora_open(&lm, "lora_kohya.safetensors");
  int j = 0;
  while (a->t[j].param != l->t[0].param)
    j++;
  ASSERT_EQ(memcmp(a->t[j].delta, l->t[0].delta,
                   (size_t)l->t[0].param->numel * sizeof(float)),
            0);
  sd_lora_release(l), sd_lora_release(a);
  lm_close(&lm);
}

TEST(lora_matching_nothing_is_an_error_naming_its_keys) {
  lmodel lm;
  lm_open(&lm);
  weft_st_writer *w = NULL;
  ASSERT_OK(weft_st_writer_new(&w));
  static const uint16_t zeros[4 * 32] = {0};
  int64_t sd[2] = {4, 32}, su[2] = {32, 4};
  ASSERT_OK(weft_st_writer_add(w, "lora_unet_nowhere_proj.lora_down.weight",
                               WEFT_ST_F16, 2, sd, zeros));
  ASSERT_OK(weft_st_writer_add(w, "lora_unet_nowhere_proj.lora_up.weight",
                               WEFT_ST_F16, 2, su, zeros));
  char path[4096], err[1024], um[1024];
  snprintf(path, sizeof path, "%s/nothing.safetensors", weft_test_tmpdir());
  ASSERT_OK(weft_st_writer_save(w, path, err, sizeof err));
  weft_st_writer_free(w);
  weft_st_file *f = NULL;
  ASSERT_OK(weft_st_open(path, &f, err, sizeof err));
  sd_file file = fx_file(f);
  sd_lora *l = NULL;
  int n_um = 0;
  ASSERT_EQ(
      sd_lora_load(&file, &lm.m.ck, &l, um, sizeof um, &n_um, err, sizeof err),
      WEFT_EFORMAT);
  ASSERT(l == NULL);
  ASSERT_CONTAINS(err, "nothing.safetensors: no tensor of this LoRA matches");
  ASSERT_CONTAINS(err, "lora_unet_nowhere_proj.lora_down.weight");
  weft_st_close(f);
  lm_close(&lm);
}

/* ---- through graphs: probe nodes look inside MODEL and CONDITIONING ------ */

/* ProbeUNet: the MODEL's UNet, with its LoRAs merged as KSampler merges
 * them, on lora_refs' inputs */
static int probe_unet_run(weft_call *c) {
  sd_ref *ref = c->host->value_object(c->inputs[0]);
  sd_bundle *b = ref->bundle;
  char err[1024];
  weft_st_file *refs = NULL;
  int r = weft_st_open(weft_param_string(c, 0), &refs, err, sizeof err);
  if (r) {
    c->host->error(c, "%s", err);
    return r;
  }
  weft_backend *be = weft_backend_cpu_new(1);
  float out[512];
  pthread_mutex_lock(&b->lock[SD_UNET]);
  r = sd_patch_apply(&b->patch[SD_UNET], SD_UNET, ref->patches, ref->n_patches);
  if (!r)
    r = sd_unet_forward(b->unet, be, weft_st_find(refs, "unet/sample")->data, 2,
                        8, 8, weft_st_find(refs, "unet/timestep")->data,
                        weft_st_find(refs, "unet/encoder_hidden_states")->data,
                        77, NULL, out);
  pthread_mutex_unlock(&b->lock[SD_UNET]);
  weft_backend_free(be);
  weft_st_close(refs);
  const int64_t shape[4] = {2, 4, 8, 8};
  return r ? r : probe_save(c, weft_param_string(c, 1), 4, shape, out, NULL);
}

/* ProbeCond: a CONDITIONING's context [1, tokens, dim] */
static int probe_cond_run(weft_call *c) {
  const sd_cond *cond = c->host->value_object(c->inputs[0]);
  const int64_t shape[3] = {1, cond->tokens, cond->dim};
  return probe_save(c, weft_param_string(c, 0), 3, shape, cond->ctx, NULL);
}

#define PORT(n, t)                                                             \
  { sizeof(weft_port_def), n, t, NULL, 0, "probe" }
#define PSTR(n)                                                                \
  { sizeof(weft_param_def), n, WEFT_TYPE_STRING, 0, 0, "", 1, 0, NULL, 0, "p" }
static const weft_port_def model_in[] = {PORT("model", WEFT_TYPE_MODEL)};
static const weft_port_def cond_in[] = {
    PORT("conditioning", WEFT_TYPE_CONDITIONING)};
static const weft_port_def path_out[] = {PORT("path", WEFT_TYPE_STRING)};
static const weft_param_def unet_params[] = {PSTR("refs"), PSTR("out")};
static const weft_param_def cond_params[] = {PSTR("out")};
static const weft_node_def probe_unet_def = {
    .struct_size = sizeof(weft_node_def),
    .op = "ProbeUNet",
    .category = "test",
    .doc = "UNet output on lora_refs' inputs.",
    .inputs = model_in,
    .n_inputs = 1,
    .outputs = path_out,
    .n_outputs = 1,
    .params = unet_params,
    .n_params = 2,
    .flags = WEFT_NODE_OUTPUT,
    .run = probe_unet_run};
static const weft_node_def probe_cond_def = {.struct_size =
                                                 sizeof(weft_node_def),
                                             .op = "ProbeCond",
                                             .category = "test",
                                             .doc = "A conditioning's context.",
                                             .inputs = cond_in,
                                             .n_inputs = 1,
                                             .outputs = path_out,
                                             .n_outputs = 1,
                                             .params = cond_params,
                                             .n_params = 1,
                                             .flags = WEFT_NODE_OUTPUT,
                                             .run = probe_cond_run};
static const weft_node_def *const probe_nodes[] = {&probe_unet_def,
                                                   &probe_cond_def};
static const weft_plugin lora_probes = {sizeof(weft_plugin),
                                        WEFT_ABI_MAJOR,
                                        WEFT_ABI_MINOR,
                                        "lora-probes",
                                        "1",
                                        probe_nodes,
                                        2,
                                        {0}};

/* "<tmp>/<name>.safetensors"'s "out" against the reference key */
static void check_probe(const char *name, weft_st_file *refs, const char *key,
                        int64_t numel) {
  weft_st_file *f = probe_file(name);
  double d =
      max_abs_diff(ex_ref(f, "out", numel), ex_ref(refs, key, numel), numel);
  fprintf(stderr, "graph %s vs %s: max diff %.3g\n", name, key, d);
  ASSERT(d <= TOL);
  weft_st_close(f);
}

/* lora_probe.yaml with LoRA (sm, sc) then lora2 (sm2, sc2), its probes
 * (unet, cond, unet_mo, cond_mo) against case cs of lora_refs (NULL: no
 * comparison) */
static void probe_case(const char *lora, double sm, double sc,
                       const char *lora2, double sm2, double sc2,
                       const char *cs, probe_log *log) {
  char a[7][4200];
  const char *src = weft_test_srcdir();
  snprintf(a[0], 4200, "refs=%s/fixtures/sd15_extras/lora_refs.safetensors",
           src);
  snprintf(a[1], 4200, "lora=%s/fixtures/sd15_extras/%s", src, lora);
  snprintf(a[2], 4200, "strength_model=%g", sm);
  snprintf(a[3], 4200, "strength_clip=%g", sc);
  snprintf(a[4], 4200, "lora2=%s/fixtures/sd15_extras/%s", src, lora2);
  snprintf(a[5], 4200, "strength_model2=%g", sm2);
  snprintf(a[6], 4200, "strength_clip2=%g", sc2);
  const char *sets[] = {a[0], a[1], a[2], a[3], a[4], a[5], a[6], NULL};
  ASSERT_OK(probe_run_graph("lora_probe.yaml", sets, &lora_probes, log));
  if (!cs) return; /* only the log was wanted */
  weft_st_file *refs = ex_open("lora_refs.safetensors");
  char key[256];
  snprintf(key, sizeof key, "%s/unet_out", cs);
  check_probe("unet", refs, key, 512);
  snprintf(key, sizeof key, "%s/clip_last_hidden_state", cs);
  check_probe("cond", refs, key, 77 * 32);
  /* the LoraLoaderModelOnly branch of the same graph (first LoRA, model
   * strength) shares the checkpoint: its CLIP is the base */
  check_probe("cond_mo", refs, "base/clip_last_hidden_state", 77 * 32);
  weft_st_close(refs);
}

TEST(graph_lora_loader_matches_diffusers) {
  probe_case("lora_kohya.safetensors", 0.8, 0.6, "lora_b_peft.safetensors", 0,
             0, "kohya", NULL);
  weft_st_file *refs = ex_open("lora_refs.safetensors");
  check_probe("unet_mo", refs, "model_only/unet_out", 512);
  weft_st_close(refs);
}

TEST(graph_stacked_lora_loaders_match_diffusers) {
  probe_case("lora_kohya.safetensors", 0.8, 0.6, "lora_b_peft.safetensors", 1.0,
             -0.5, "stack", NULL);
}

TEST(graph_peft_and_locon_match_diffusers) {
  probe_case("lora_peft.safetensors", 0.8, 0.6, "lora_b_peft.safetensors", 0, 0,
             "peft", NULL);
  probe_case("locon_kohya.safetensors", 0.8, 0.6, "lora_b_peft.safetensors", 0,
             0, "locon", NULL);
}

TEST(graph_lora_warns_naming_unmatched_keys) {
  probe_log log;
  probe_case("lora_kohya.safetensors", 0.8, 0.6,
             "lora_unmatched_keys.safetensors", 0.5, 0, NULL, &log);
  fprintf(stderr, "log: %s", log.text);
  ASSERT_CONTAINS(log.text, "lora_unmatched_keys.safetensors: 9 LoRA tensors "
                            "match no weight of the model");
  ASSERT_CONTAINS(log.text, "lora_unet_down_blocks_5_attentions_0_proj_in.");
  ASSERT_CONTAINS(log.text, "lora_te_text_model_encoder_layers_7_mlp_fc1.");
  ASSERT_CONTAINS(log.text, "lora_unet_mid_block_attentions_0_transformer_"
                            "blocks_0_attn1_to_x.");
}

/* ---- graphs/lora.yaml through the weft command --------------------------- */

/* weft run ../graphs/<graph> on the tiny checkpoint, 64x64, 4 steps, with
 * extra "--set" values (NULL-terminated); stderr into *err_out (may be
 * NULL) */
static void run_cli(const char *graph, const char *const *sets,
                    const char *outdir, char **err_out) {
  char g[4096], ck[4096];
  snprintf(g, sizeof g, "%s/../graphs/%s", weft_test_srcdir(), graph);
  snprintf(ck, sizeof ck, "ckpt=%s/fixtures/sd15_tiny/sd15_tiny.safetensors",
           weft_test_srcdir());
  const char *a[64] = {g,
                       "--set",
                       ck,
                       "--set",
                       "prompt=a watercolor fox in a snowy forest",
                       "--set",
                       "negative=blurry",
                       "--set",
                       "steps=4",
                       "--set",
                       "width=64",
                       "--set",
                       "height=64",
                       "--set",
                       "prefix=out",
                       "--output-dir",
                       outdir,
                       "--events",
                       "none"};
  int n = 0;
  while (a[n])
    n++;
  for (int i = 0; sets && sets[i] && n < 60; i++) {
    a[n++] = "--set";
    a[n++] = sets[i];
  }
  probe_weft_run(a, err_out);
}

static weft__png_image read_png(const char *dir) {
  char p[4200];
  snprintf(p, sizeof p, "%s/out_00001_.png", dir);
  weft__png_image img;
  char err[1024];
  int r = weft__png_read(p, &img, err, sizeof err);
  if (r) fprintf(stderr, "%s\n", err);
  ASSERT_OK(r);
  ASSERT_EQ(img.width, 64);
  return img;
}

static char *subdir(const char *name) {
  char *d = malloc(4096);
  snprintf(d, 4096, "%s/%s", weft_test_tmpdir(), name);
  return d;
}

/* At strength 0 the LoRA graph is txt2img exactly; at 0.8/0.6 it is not. */
TEST(lora_yaml_strength_zero_equals_txt2img) {
  char *d0 = subdir("zero"), *d1 = subdir("lora"), *dt = subdir("txt");
  char lo[4096];
  snprintf(lo, sizeof lo, "lora=%s/fixtures/sd15_extras/lora_kohya.safetensors",
           weft_test_srcdir());
  const char *zero[] = {lo, "strength_model=0", "strength_clip=0", NULL};
  const char *some[] = {lo, "strength_model=0.8", "strength_clip=0.6", NULL};
  run_cli("lora.yaml", zero, d0, NULL);
  run_cli("lora.yaml", some, d1, NULL);
  run_cli("txt2img.yaml", NULL, dt, NULL);
  weft__png_image z = read_png(d0), l = read_png(d1), t = read_png(dt);
  size_t n = 64 * 64 * 3 * sizeof(float);
  ASSERT_EQ(memcmp(z.rgb, t.rgb, n), 0);
  int differ = 0;
  for (int i = 0; i < 64 * 64 * 3; i++)
    differ += lrintf(l.rgb[i] * 255) != lrintf(t.rgb[i] * 255);
  fprintf(stderr, "LoRA changed %d of %d channel values\n", differ,
          64 * 64 * 3);
  ASSERT(differ > 64 * 64 * 3 / 4);
  weft__png_image_free(&z), weft__png_image_free(&l), weft__png_image_free(&t);
  free(d0), free(d1), free(dt);
}

TEST(lora_yaml_validates) {
  probe_weft_validate("lora.yaml");
}
