/* lora.c - reading LoRA files and patching model weights with them, as
 * ComfyUI's comfy/lora.py does: W' = W + strength * (up @ down) * alpha /
 * rank, computed in float32 from the base weights. */
#include "lora.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu.h"

/* ---- key stems -------------------------------------------------------------- */

/* "a.b.c.weight" -> "a_b_c" after prefix (kohya's flattening) */
static void kohya_stem(const char *prefix, const char *name, char *out,
                       size_t len) {
  size_t n = (size_t)snprintf(out, len, "%s", prefix);
  for (const char *p = name; *p && n + 1 < len; p++) out[n++] = *p == '.' ? '_' : *p;
  out[n] = 0;
  size_t l = strlen(out);
  if (l > 7 && !strcmp(out + l - 7, "_weight")) out[l - 7] = 0;
}

/* "a.b.c.weight" -> prefix + "a.b.c" */
static void dotted_stem(const char *prefix, const char *name, char *out,
                        size_t len) {
  snprintf(out, len, "%s%s", prefix, name);
  size_t l = strlen(out);
  if (l > 7 && !strcmp(out + l - 7, ".weight")) out[l - 7] = 0;
}

typedef struct stem {
  char *s;
  int param;
} stem;

static int cmp_stem(const void *a, const void *b) {
  return strcmp(((const stem *)a)->s, ((const stem *)b)->s);
}

/* Every name a LoRA may give each patchable weight (2-D and 4-D weights:
 * linears and convolutions). */
static int build_stems(const sd_ckpt *ck, stem **out, int *n_out) {
  int cap = ck->n_params * 6 + 1, n = 0;
  stem *st = malloc((size_t)cap * sizeof *st);
  if (!st) return WEFT_ENOMEM;
  for (int i = 0; i < ck->n_params; i++) {
    const sd_param *p = &ck->params[i];
    size_t ln = strlen(p->name);
    if (ln < 7 || strcmp(p->name + ln - 7, ".weight") || strstr(p->name, "norm"))
      continue;
    char buf[6][512];
    int k = 0;
    if (p->part == SD_UNET) {
      char ldm[512];
      sd_ldm_name(ck, SD_UNET, p->name, ldm, sizeof ldm);
      const char *l = ldm + strlen("model.diffusion_model.");
      kohya_stem("lora_unet_", p->name, buf[k++], 512);
      kohya_stem("lora_unet_", l, buf[k++], 512);
      dotted_stem("unet.", p->name, buf[k++], 512);
      dotted_stem("lora_unet.", p->name, buf[k++], 512);
    } else if (p->part == SD_CLIP) {
      kohya_stem("lora_te_", p->name, buf[k++], 512);
      dotted_stem("text_encoder.", p->name, buf[k++], 512);
    } else {
      continue;
    }
    for (int j = 0; j < k; j++) {
      if (!(st[n].s = strdup(buf[j]))) {
        for (int q = 0; q < n; q++) free(st[q].s);
        free(st);
        return WEFT_ENOMEM;
      }
      st[n++].param = i;
    }
  }
  qsort(st, (size_t)n, sizeof *st, cmp_stem);
  *out = st;
  *n_out = n;
  return 0;
}

/* The suffixes of a LoRA's tensors: which of up, down, alpha a key is. */
enum { K_UP, K_DOWN, K_ALPHA };
static const struct {
  const char *suffix;
  int kind;
} suffixes[] = {
    {".lora_up.weight", K_UP},    {".lora_down.weight", K_DOWN},
    {".lora_B.weight", K_UP},     {".lora_A.weight", K_DOWN},
    {".lora.up.weight", K_UP},    {".lora.down.weight", K_DOWN},
    {".alpha", K_ALPHA},
};

typedef struct group {
  int param;
  weft_tensor t[3];
  bool have[3];
  int peft; /* 0: not PEFT-named, 1: unet., 2: text_encoder. */
} group;

/* diffusers keeps a PEFT LoRA's alpha and rank in the file's metadata
 * ("lora_adapter_metadata": {"unet.lora_alpha": 2.0, "unet.r": 4, ...});
 * without it the scale is 1 (alpha = r) */
static void peft_scales(const sd_file *f, double scale[3]) {
  scale[0] = scale[1] = scale[2] = 1.0;
  const char *meta = f->meta ? f->meta(f->handle, "lora_adapter_metadata")
                             : NULL;
  json_t *o = meta ? json_loads(meta, 0, NULL) : NULL;
  static const char *const comp[3] = {NULL, "unet", "text_encoder"};
  for (int k = 1; k < 3 && o; k++) {
    char ka[64], kr[64];
    snprintf(ka, sizeof ka, "%s.lora_alpha", comp[k]);
    snprintf(kr, sizeof kr, "%s.r", comp[k]);
    json_t *a = json_object_get(o, ka), *r = json_object_get(o, kr);
    if (json_is_number(a) && json_is_number(r) && json_number_value(r) > 0)
      scale[k] = json_number_value(a) / json_number_value(r);
  }
  json_decref(o);
}

static float *to_f32(const weft_tensor *v, int64_t *n) {
  *n = weft_tensor_numel(v);
  if (v->dtype != WEFT_F32 && v->dtype != WEFT_F16 && v->dtype != WEFT_BF16)
    return NULL;
  float *w = malloc((size_t)(*n ? *n : 1) * sizeof *w);
  if (w) weft_cpu_convert_serial(w, WEFT_F32, v->data, v->dtype, *n);
  return w;
}

static void note(char *list, size_t len, int *count, const char *key) {
  size_t w = strlen(list);
  if (*count < 8 && w < len)
    snprintf(list + w, len - w, "%s%s", *count ? ", " : "", key);
  else if (*count == 8 && w < len)
    snprintf(list + w, len - w, ", ...");
  (*count)++;
}

int sd_lora_load(const sd_file *f, sd_ckpt *ck, sd_lora **out, char *unmatched,
                 size_t len, int *n_unmatched, char *err, size_t errlen) {
  *out = NULL;
  *n_unmatched = 0;
  unmatched[0] = 0;
  stem *stems = NULL;
  int n_stems = 0;
  if (build_stems(ck, &stems, &n_stems)) return WEFT_ENOMEM;
  int nk = f->count(f->handle);
  group *g = calloc((size_t)(nk ? nk : 1), sizeof *g);
  int ng = 0, rc = 0;
  sd_lora *l = calloc(1, sizeof *l);
  if (!g || !l) {
    rc = WEFT_ENOMEM;
    goto out;
  }
  atomic_init(&l->refs, 1);
  l->path = strdup(f->path);
  /* group the file's tensors by target weight */
  for (int32_t i = 0; i < nk; i++) {
    const char *key = f->key_at(f->handle, i);
    size_t lk = strlen(key);
    int kind = -1;
    char st[512];
    for (size_t s = 0; s < sizeof suffixes / sizeof suffixes[0]; s++) {
      size_t ls = strlen(suffixes[s].suffix);
      if (lk > ls && !strcmp(key + lk - ls, suffixes[s].suffix) &&
          lk - ls < sizeof st) {
        kind = suffixes[s].kind;
        memcpy(st, key, lk - ls);
        st[lk - ls] = 0;
        break;
      }
    }
    stem want = {st, 0}, *hit = kind >= 0
                                    ? bsearch(&want, stems, (size_t)n_stems,
                                              sizeof *stems, cmp_stem)
                                    : NULL;
    if (!hit) {
      note(unmatched, len, n_unmatched, key);
      continue;
    }
    int gi = 0;
    while (gi < ng && g[gi].param != hit->param) gi++;
    if (gi == ng) g[ng++].param = hit->param;
    if (!strncmp(st, "unet.", 5)) g[gi].peft = 1;
    if (!strncmp(st, "text_encoder.", 13)) g[gi].peft = 2;
    if (f->get(f->handle, key, &g[gi].t[kind])) {
      snprintf(err, errlen, "%s: tensor '%s' has a dtype weft cannot read",
               f->path, key);
      rc = WEFT_EFORMAT;
      goto out;
    }
    g[gi].have[kind] = true;
  }
  double peft_scale[3];
  peft_scales(f, peft_scale);
  l->t = calloc((size_t)(ng ? ng : 1), sizeof *l->t);
  if (!l->t) {
    rc = WEFT_ENOMEM;
    goto out;
  }
  for (int gi = 0; gi < ng; gi++) {
    sd_param *p = &ck->params[g[gi].param];
    if (!g[gi].have[K_UP] || !g[gi].have[K_DOWN]) {
      snprintf(err, errlen, "%s: LoRA for '%s' lacks its %s matrix", f->path,
               p->name, g[gi].have[K_UP] ? "down (A)" : "up (B)");
      rc = WEFT_EFORMAT;
      goto out;
    }
    int64_t nu, nd, na = 0;
    float *up = to_f32(&g[gi].t[K_UP], &nu), *down = to_f32(&g[gi].t[K_DOWN], &nd);
    float *alpha = g[gi].have[K_ALPHA] ? to_f32(&g[gi].t[K_ALPHA], &na) : NULL;
    int64_t rank = g[gi].t[K_DOWN].shape[0];
    int64_t outd = g[gi].t[K_UP].shape[0];
    /* up [out, rank(, 1, 1)], down [rank, in(, kh, kw)] */
    if (!up || !down || rank <= 0 || nu != outd * rank || outd * (nd / rank) != p->numel ||
        nd % rank) {
      snprintf(err, errlen, "%s: LoRA for '%s' has shapes that do not fit "
               "the weight (%lld elements)", f->path, p->name,
               (long long)p->numel);
      free(up), free(down), free(alpha);
      rc = WEFT_EFORMAT;
      goto out;
    }
    float scale = alpha ? alpha[0] / (float)rank
                        : (float)peft_scale[g[gi].peft];
    int64_t in = nd / rank;
    float *delta = malloc((size_t)p->numel * sizeof *delta);
    if (!delta) {
      free(up), free(down), free(alpha);
      rc = WEFT_ENOMEM;
      goto out;
    }
    /* delta[o, i] = scale * sum_r up[o, r] down[r, i] (double sums: the
     * matrices are small, and the merge must not add rounding) */
    for (int64_t o = 0; o < outd; o++)
      for (int64_t i = 0; i < in; i++) {
        double acc = 0;
        for (int64_t r = 0; r < rank; r++)
          acc += (double)up[o * rank + r] * down[r * in + i];
        delta[o * in + i] = (float)(acc * scale);
      }
    free(up), free(down), free(alpha);
    l->t[l->n++] = (sd_lora_target){p, delta};
    if (p->part == SD_UNET) l->n_unet++; else l->n_clip++;
  }
  if (l->n == 0) {
    snprintf(err, errlen, "%s: no tensor of this LoRA matches the model "
             "(%d keys, e.g. %s)", f->path, nk, unmatched);
    rc = WEFT_EFORMAT;
  }
out:
  for (int i = 0; i < n_stems; i++) free(stems[i].s);
  free(stems);
  free(g);
  if (rc) {
    sd_lora_release(l);
    return rc;
  }
  *out = l;
  return 0;
}

void sd_lora_retain(sd_lora *l) { atomic_fetch_add(&l->refs, 1); }

void sd_lora_release(sd_lora *l) {
  if (!l || atomic_fetch_sub(&l->refs, 1) != 1) return;
  for (int i = 0; i < l->n; i++) free(l->t[i].delta);
  free(l->t);
  free(l->path);
  free(l);
}

/* ---- applying ------------------------------------------------------------- */

bool sd_patch_is_applied(const sd_patch_state *st, const sd_patch *p, int n) {
  if (st->n_applied != n) return false;
  for (int i = 0; i < n; i++)
    if (st->applied[i].lora != p[i].lora ||
        st->applied[i].strength != p[i].strength)
      return false;
  return true;
}

static struct backup *backup_of(sd_patch_state *st, float *w) {
  for (int i = 0; i < st->n_backups; i++)
    if (st->backups[i].w == w) return &st->backups[i];
  return NULL;
}

int sd_patch_apply(sd_patch_state *st, sd_part part, const sd_patch *p,
                   int n) {
  if (sd_patch_is_applied(st, p, n)) return 0;
  /* back up every weight the new set touches, then restore all backups */
  for (int k = 0; k < n; k++)
    for (int i = 0; i < p[k].lora->n; i++) {
      const sd_lora_target *t = &p[k].lora->t[i];
      if (t->param->part != part || backup_of(st, t->param->data)) continue;
      sd_param_read(t->param); /* a deferred master: its values first */
      if (st->n_backups == st->cap_backups) {
        int cap = st->cap_backups ? 2 * st->cap_backups : 64;
        struct backup *nb = realloc(st->backups, (size_t)cap * sizeof *nb);
        if (!nb) return WEFT_ENOMEM;
        st->backups = nb;
        st->cap_backups = cap;
      }
      float *orig = malloc((size_t)t->param->numel * sizeof *orig);
      if (!orig) return WEFT_ENOMEM;
      memcpy(orig, t->param->data, (size_t)t->param->numel * sizeof *orig);
      st->backups[st->n_backups++] =
          (struct backup){t->param->data, orig, t->param->numel};
    }
  for (int i = 0; i < st->n_backups; i++)
    memcpy(st->backups[i].w, st->backups[i].orig,
           (size_t)st->backups[i].numel * sizeof(float));
  for (int k = 0; k < n; k++)
    for (int i = 0; i < p[k].lora->n; i++) {
      const sd_lora_target *t = &p[k].lora->t[i];
      if (t->param->part != part || p[k].strength == 0.0f) continue;
      float *w = t->param->data;
      const float s = p[k].strength;
      for (int64_t j = 0; j < t->param->numel; j++) w[j] += s * t->delta[j];
    }
  sd_patch *copy = malloc((n > 0 ? (size_t)n : 1) * sizeof *copy);
  if (!copy) return WEFT_ENOMEM;
  for (int k = 0; k < n; k++) sd_lora_retain(p[k].lora);
  for (int k = 0; k < st->n_applied; k++) sd_lora_release(st->applied[k].lora);
  free(st->applied);
  if (n) memcpy(copy, p, (size_t)n * sizeof *copy); /* p may be NULL */
  st->applied = copy;
  st->n_applied = n;
  return 0;
}

int sd_patch_sync(const sd_patch_state *st, sd_devw *dw) {
  int r = 0;
  for (int i = 0; dw && i < st->n_backups && !r; i++)
    r = sd_devw_sync(dw, st->backups[i].w);
  return r;
}

void sd_patch_state_free(sd_patch_state *st) {
  for (int k = 0; k < st->n_applied; k++) sd_lora_release(st->applied[k].lora);
  free(st->applied);
  for (int i = 0; i < st->n_backups; i++) free(st->backups[i].orig);
  free(st->backups);
  memset(st, 0, sizeof *st);
}
