/* clip_model.c - the CLIP text transformer (transformers' CLIPTextModel):
 * token + position embeddings, pre-norm layers with causal self-attention
 * and a quick-GELU MLP, final layer norm. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sd_layers.h"

typedef struct clip_layer {
  sd_norm ln1, ln2;
  sd_attn attn;
  sd_linear fc1, fc2;
} clip_layer;

struct sd_clip {
  sd_clip_cfg cfg;
  float *tok_emb; /* [vocab, hidden] */
  float *pos_emb; /* [max_pos, hidden] */
  clip_layer *layers;
  sd_norm final_ln;
  sd_devw *dw; /* the weights on a device backend, or NULL */
};

const sd_clip_cfg *sd_clip_config(const sd_clip *m) {
  return &m->cfg;
}

/* The blocks: 0 the embeddings (tables read on the host: nothing on the
 * device), 1 + i layer i, then the final norm (fp32, always resident). */
static void clip_visit(void *model, sd_wvisit *v) {
  sd_clip *m = model;
  char name[64];
  v->block(v, "embeddings");
  if (m->tok_emb)
    v->weight(v, &m->tok_emb, (int64_t)m->cfg.vocab * m->cfg.hidden, SD_W_HOST);
  if (m->pos_emb)
    v->weight(v, &m->pos_emb, (int64_t)m->cfg.max_pos * m->cfg.hidden,
              SD_W_HOST);
  for (int i = 0; m->layers && i < m->cfg.layers; i++) {
    clip_layer *l = &m->layers[i];
    snprintf(name, sizeof name, "encoder.layers.%d", i);
    v->block(v, name);
    sd_wv_norm(v, &l->ln1);
    sd_wv_attn(v, &l->attn);
    sd_wv_norm(v, &l->ln2);
    sd_wv_linear(v, &l->fc1);
    sd_wv_linear(v, &l->fc2);
  }
  v->block(v, "final_layer_norm");
  sd_wv_norm(v, &m->final_ln);
}

int sd_clip_to_vram(sd_clip *m, sd_vram *vr) {
  if (m->dw) return m->dw->vr == vr ? 0 : WEFT_EINVAL;
  return sd_devw_upload(m, clip_visit, vr, "text encoder", false, &m->dw);
}

int sd_clip_to_backend(sd_clip *m, weft_backend *be) {
  if (m->dw) return m->dw->be == be ? 0 : WEFT_EINVAL;
  int r;
  sd_vram *vr = sd_vram_private(be, &r);
  if (!vr) return r;
  r = sd_clip_to_vram(m, vr);
  if (!r && (r = sd_vram_commit(vr))) sd_clip_to_host(m); /* as it was */
  sd_vram_release(vr); /* the model holds it */
  return r;
}

void sd_clip_to_host(sd_clip *m) {
  sd_devw_release(m->dw);
  m->dw = NULL;
}

sd_devw *sd_clip_devw(const sd_clip *m) {
  return m->dw;
}

void sd_clip_free(sd_clip *m) {
  if (!m) return;
  sd_devw_discard(m->dw);
  free(m->tok_emb);
  free(m->pos_emb);
  for (int i = 0; m->layers && i < m->cfg.layers; i++) {
    clip_layer *l = &m->layers[i];
    sd_free_norm(&l->ln1);
    sd_free_norm(&l->ln2);
    sd_free_attn(&l->attn);
    sd_free_linear(&l->fc1);
    sd_free_linear(&l->fc2);
  }
  free(m->layers);
  sd_free_norm(&m->final_ln);
  free(m);
}

/* transformers names q_proj/k_proj/v_proj/out_proj, with biases */
static int load_attn(sd_ckpt *ck, const char *pre, int64_t dim, int heads,
                     sd_attn *a) {
  char n[400];
  memset(a, 0, sizeof *a);
  a->dim = a->ctx_dim = dim;
  a->heads = heads;
  snprintf(n, sizeof n, "%sq_proj.", pre);
  CK(sd_load_linear(ck, SD_CLIP, n, dim, dim, true, &a->q));
  snprintf(n, sizeof n, "%sk_proj.", pre);
  CK(sd_load_linear(ck, SD_CLIP, n, dim, dim, true, &a->k));
  snprintf(n, sizeof n, "%sv_proj.", pre);
  CK(sd_load_linear(ck, SD_CLIP, n, dim, dim, true, &a->v));
  snprintf(n, sizeof n, "%sout_proj.", pre);
  return sd_load_linear(ck, SD_CLIP, n, dim, dim, true, &a->out);
}

int sd_clip_load(sd_ckpt *ck, sd_clip **out) {
  *out = NULL;
  sd_clip *m = calloc(1, sizeof *m);
  if (!m) return WEFT_ENOMEM;
  m->cfg = ck->clip;
  const sd_clip_cfg *c = &m->cfg;
  int64_t hd = c->hidden;
  int r = 0;
  if (c->heads <= 0 || hd % c->heads) {
    snprintf(ck->err, sizeof ck->err, "CLIP: %d heads do not divide width %d",
             c->heads, c->hidden);
    r = WEFT_EFORMAT;
    goto fail;
  }
  if ((r = sd_weight(ck, SD_CLIP,
                     "text_model.embeddings.token_embedding.weight",
                     (int64_t)c->vocab * hd, &m->tok_emb)) ||
      (r = sd_weight(ck, SD_CLIP,
                     "text_model.embeddings.position_embedding.weight",
                     (int64_t)c->max_pos * hd, &m->pos_emb)))
    goto fail;
  m->layers = calloc((size_t)c->layers, sizeof *m->layers);
  if (!m->layers) {
    r = WEFT_ENOMEM;
    goto fail;
  }
  for (int i = 0; i < c->layers; i++) {
    clip_layer *l = &m->layers[i];
    char p[200], n[300];
    snprintf(p, sizeof p, "text_model.encoder.layers.%d.", i);
    snprintf(n, sizeof n, "%slayer_norm1.", p);
    if ((r = sd_load_norm(ck, SD_CLIP, n, hd, &l->ln1))) goto fail;
    snprintf(n, sizeof n, "%sself_attn.", p);
    if ((r = load_attn(ck, n, hd, c->heads, &l->attn))) goto fail;
    snprintf(n, sizeof n, "%slayer_norm2.", p);
    if ((r = sd_load_norm(ck, SD_CLIP, n, hd, &l->ln2))) goto fail;
    snprintf(n, sizeof n, "%smlp.fc1.", p);
    if ((r = sd_load_linear(ck, SD_CLIP, n, hd, c->intermediate, true,
                            &l->fc1)))
      goto fail;
    snprintf(n, sizeof n, "%smlp.fc2.", p);
    if ((r = sd_load_linear(ck, SD_CLIP, n, c->intermediate, hd, true,
                            &l->fc2)))
      goto fail;
  }
  if ((r = sd_load_norm(ck, SD_CLIP, "text_model.final_layer_norm.", hd,
                        &m->final_ln)))
    goto fail;
  *out = m;
  return 0;
fail:
  sd_clip_free(m);
  return r;
}

/* h [batch * L, D] = token + position embeddings (on the host arrays) */
static int embed(const sd_clip_cfg *c, const float *tok, const float *pos,
                 const int32_t *ids, int64_t batch, float *h) {
  const int64_t L = c->max_pos, D = c->hidden;
  for (int64_t b = 0; b < batch; b++)
    for (int64_t i = 0; i < L; i++) {
      int32_t id = ids[b * L + i];
      if (id < 0 || id >= c->vocab) return WEFT_EINVAL;
      const float *te = tok + (int64_t)id * D, *pe = pos + i * D;
      float *o = h + (b * L + i) * D;
      for (int64_t k = 0; k < D; k++)
        o[k] = te[k] + pe[k];
    }
  return 0;
}

int sd_clip_forward(sd_clip *m, weft_backend *be, const int32_t *ids,
                    int64_t batch, int layer, float *hidden, float *pooled) {
  const sd_clip_cfg *c = &m->cfg;
  const int64_t L = c->max_pos, D = c->hidden, rows = batch * L;
  int n_layers = layer > 0 ? layer : c->layers + (layer < 0 ? layer + 1 : 0);
  if (n_layers < 1 || n_layers > c->layers) return WEFT_EINVAL;
  if (!sd_devw_fits(m->dw, be)) return WEFT_EINVAL;
  float *h = sd_alloc(be, rows * D), *t = sd_alloc(be, rows * D);
  float *u = sd_alloc(be, rows * c->intermediate);
  float *out = NULL, *out_tmp = NULL;
  int rc = 0;
  if (!h || !t || !u) {
    rc = WEFT_ENOMEM;
    goto out;
  }
  if (!m->dw) {
    if ((rc = embed(c, m->tok_emb, m->pos_emb, ids, batch, h))) goto out;
  } else {
    /* the lookup on the host tables, then one copy in */
    float *hh = malloc((size_t)(rows * D) * sizeof *hh);
    rc = hh ? embed(c, m->tok_emb, m->pos_emb, ids, batch, hh) : WEFT_ENOMEM;
    if (!rc) rc = sd_act_upload(be, h, hh, rows * D);
    free(hh);
    if (rc) goto out;
  }
  const weft_act act = c->quick_gelu ? WEFT_ACT_QUICK_GELU : WEFT_ACT_GELU_ERF;
  for (int i = 0; i < n_layers; i++) {
    const clip_layer *l = &m->layers[i];
    if ((rc = sd_devw_use(m->dw, 1 + i)) ||
        (rc = be->iface->layer_norm(be, h, t, rows, D, c->eps, l->ln1.g,
                                    l->ln1.b)) ||
        (rc = sd_run_attn(be, &l->attn, t, batch, L, NULL, 0, true, true, NULL,
                          h)) ||
        (rc = be->iface->layer_norm(be, h, t, rows, D, c->eps, l->ln2.g,
                                    l->ln2.b)) ||
        (rc = sd_run_linear(be, &l->fc1, t, rows, u)) ||
        (rc = be->iface->act(be, act, u, u, rows * c->intermediate)) ||
        (rc = sd_run_linear_add(be, &l->fc2, u, rows, h)))
      goto out;
  }
  /* ComfyUI normalises a skipped layer's output with the final norm too */
  if ((rc = sd_io_out(be, hidden, rows * D, &out, &out_tmp))) goto out;
  rc = be->iface->layer_norm(be, h, out, rows, D, c->eps, m->final_ln.g,
                             m->final_ln.b);
  rc = sd_io_done(be, rc, hidden, out_tmp, rows * D);
  if (rc) goto out;
  if (pooled) {
    /* transformers: the state at the first EOS token (argmax for the
     * original vocabulary, where EOS has the largest id) */
    for (int64_t b = 0; b < batch; b++) {
      int64_t at = L - 1;
      for (int64_t i = 0; i < L; i++)
        if (ids[b * L + i] == c->eos_token) {
          at = i;
          break;
        }
      memcpy(pooled + b * D, hidden + (b * L + at) * D,
             (size_t)D * sizeof *pooled);
    }
  }
out:
  sd_free(be, h);
  sd_free(be, t);
  sd_free(be, u);
  return rc;
}
