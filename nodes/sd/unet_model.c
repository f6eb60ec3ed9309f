/* unet_model.c - diffusers' UNet2DConditionModel for SD1.x/SD2.x: time
 * embedding, ResNet blocks, spatial transformers with self- and
 * cross-attention and GEGLU feed-forward, down/up sampling with skips. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sd_layers.h"

typedef struct tblock {
  sd_norm n1, n2, n3;
  sd_attn attn1, attn2;
  sd_linear ff_in, ff_out;
  int64_t kv_off; /* attn2's keys and values in sd_unet.kv_dev */
} tblock;

/* Transformer2DModel; proj_in/out as per-pixel linears (a 1x1 conv is the
 * same map, so SD1's conv projections and SD2's linear ones share code) */
typedef struct xformer {
  sd_norm norm;
  sd_linear proj_in, proj_out;
  tblock *blocks;
  int depth;
  int64_t c;
} xformer;

typedef struct level {
  sd_resnet *res;
  xformer *attn; /* NULL entries when the level has none */
  int n;
  sd_conv sample; /* down: stride-2 conv; up: conv after 2x nearest */
  bool has_sample;
  int64_t cout;
} level;

struct sd_unet {
  sd_unet_cfg cfg;
  bool encoder_only; /* a ControlNet's copy: down path and middle only */
  int64_t mid_c;
  int64_t c0, temb_dim;
  sd_linear t1, t2;
  /* the ResNet blocks in the order they run, for their time-embedding
   * projections (made at once, into rows of tp_sum: sd_resnet.temb_off) */
  sd_resnet **tres;
  int n_tres;
  int64_t tp_sum;
  sd_conv conv_in, conv_out;
  level down[8], up[8];
  sd_resnet mid_res[2];
  xformer mid_attn;
  bool mid_has_attn;
  sd_norm out_norm;
  sd_devw *dw; /* the weights on a device backend, or NULL */
  /* a text context kept on the device (sd_unet_keep_ctx): its host copy's
   * range, the device copy in the activation dtype and its backend */
  const float *kctx_host;
  int64_t kctx_n;
  float *kctx_dev;
  weft_backend *kctx_be;
  /* and every cross-attention's keys and values of it, made once (NULL:
   * not made): tblock i's [seqs, kv_lk, 2 dim] at its kv_off, as the
   * weights were at sd_devw_syncs kv_syncs; kv_seq the first kept
   * sequence the forward running now reads, or -1 */
  float *kv_dev;
  int64_t kv_lk, kv_seq;
  uint64_t kv_syncs;
};

const sd_unet_cfg *sd_unet_config(const sd_unet *m) {
  return &m->cfg;
}

static void free_xformer(xformer *x) {
  sd_free_norm(&x->norm);
  sd_free_linear(&x->proj_in);
  sd_free_linear(&x->proj_out);
  for (int i = 0; x->blocks && i < x->depth; i++) {
    tblock *b = &x->blocks[i];
    sd_free_norm(&b->n1), sd_free_norm(&b->n2), sd_free_norm(&b->n3);
    sd_free_attn(&b->attn1), sd_free_attn(&b->attn2);
    sd_free_linear(&b->ff_in), sd_free_linear(&b->ff_out);
  }
  free(x->blocks);
  x->blocks = NULL;
}

static void free_level(level *l) {
  for (int j = 0; l->res && j < l->n; j++) {
    sd_free_resnet(&l->res[j]);
    if (l->attn) free_xformer(&l->attn[j]);
  }
  free(l->res);
  free(l->attn);
  sd_free_conv(&l->sample);
}

static void visit_xformer(sd_wvisit *v, xformer *x) {
  sd_wv_norm(v, &x->norm);
  sd_wv_linear(v, &x->proj_in);
  sd_wv_linear(v, &x->proj_out);
  for (int i = 0; x->blocks && i < x->depth; i++) {
    tblock *b = &x->blocks[i];
    sd_wv_norm(v, &b->n1), sd_wv_attn(v, &b->attn1);
    sd_wv_norm(v, &b->n2), sd_wv_attn(v, &b->attn2);
    sd_wv_norm(v, &b->n3);
    sd_wv_linear(v, &b->ff_in), sd_wv_linear(v, &b->ff_out);
  }
}

static void visit_level(sd_wvisit *v, level *l) {
  for (int j = 0; l->res && j < l->n; j++) {
    sd_wv_resnet(v, &l->res[j]);
    if (l->attn) visit_xformer(v, &l->attn[j]);
  }
  sd_wv_conv(v, &l->sample);
}

/* The blocks, in execution order: 0 the time embedding and conv_in, 1 + i
 * down block i, 1 + n the middle, 2 + n + i up block i, 2 + 2n the output
 * (an encoder-only copy has its up and output blocks empty). */
#define BLK_DOWN(i) (1 + (i))
#define BLK_MID(n) (1 + (n))
#define BLK_UP(n, i) (2 + (n) + (i))
#define BLK_OUT(n) (2 + 2 * (n))

static void unet_visit(void *model, sd_wvisit *v) {
  sd_unet *m = model;
  char name[64];
  v->block(v, "time_embedding+conv_in");
  sd_wv_linear(v, &m->t1), sd_wv_linear(v, &m->t2);
  sd_wv_conv(v, &m->conv_in);
  for (int i = 0; i < m->n_tres; i++)
    sd_wv_linear(v, &m->tres[i]->temb);
  for (int i = 0; i < m->cfg.n_levels; i++) {
    snprintf(name, sizeof name, "down_blocks.%d", i);
    v->block(v, name);
    visit_level(v, &m->down[i]);
  }
  v->block(v, "mid_block");
  sd_wv_resnet(v, &m->mid_res[0]);
  visit_xformer(v, &m->mid_attn);
  sd_wv_resnet(v, &m->mid_res[1]);
  for (int i = 0; i < m->cfg.n_levels; i++) {
    snprintf(name, sizeof name, "up_blocks.%d", i);
    v->block(v, name);
    visit_level(v, &m->up[i]);
  }
  v->block(v, "conv_norm_out+conv_out");
  sd_wv_norm(v, &m->out_norm);
  sd_wv_conv(v, &m->conv_out);
}

int sd_unet_to_vram(sd_unet *m, sd_vram *vr) {
  if (m->dw) return m->dw->vr == vr ? 0 : WEFT_EINVAL;
  return sd_devw_upload(m, unet_visit, vr,
                        m->encoder_only ? "ControlNet encoder" : "UNet", true,
                        &m->dw);
}

int sd_unet_to_backend(sd_unet *m, weft_backend *be) {
  if (m->dw) return m->dw->be == be ? 0 : WEFT_EINVAL;
  int r;
  sd_vram *vr = sd_vram_private(be, &r);
  if (!vr) return r;
  r = sd_unet_to_vram(m, vr);
  if (!r && (r = sd_vram_commit(vr))) sd_unet_to_host(m); /* as it was */
  sd_vram_release(vr); /* the model holds it */
  return r;
}

void sd_unet_to_host(sd_unet *m) {
  sd_devw_release(m->dw);
  m->dw = NULL;
}

sd_devw *sd_unet_devw(const sd_unet *m) {
  return m->dw;
}

/* m->kv_dev for the kept context, seqs sequences of kv_lk tokens, where
 * every weight is on the device (not streamed under a budget) and every
 * cross-attention's k and v weights are stacked; else nothing (0).
 * WEFT_SD_KV_ONCE=0 says never (A/B runs). */
static int kv_build(sd_unet *m, weft_backend *be, int64_t seqs) {
  const char *env = getenv("WEFT_SD_KV_ONCE");
  if (env && !strcmp(env, "0")) return 0;
  if (!m->dw || !sd_devw_resident(m->dw) || m->kv_lk <= 0) return 0;
  const int n = m->cfg.n_levels;
  int64_t total = 0;
  /* the transformers in the order they run, each with its block (every
   * one, or no keys and values are made: kv_at reads each's kv_off) */
  enum { MAXX = 128 };
  xformer *xs[MAXX];
  int blk[MAXX], nx = 0;
#define PUT(x, b) (nx < MAXX ? (xs[nx] = (x), blk[nx] = (b)) : 0, nx++)
  for (int i = 0; i < n; i++)
    for (int j = 0; m->down[i].attn && j < m->down[i].n; j++)
      PUT(&m->down[i].attn[j], BLK_DOWN(i));
  if (m->mid_has_attn) PUT(&m->mid_attn, BLK_MID(n));
  for (int i = 0; !m->encoder_only && i < n; i++)
    for (int j = 0; m->up[i].attn && j < m->up[i].n; j++)
      PUT(&m->up[i].attn[j], BLK_UP(n, i));
#undef PUT
  if (nx > MAXX) return 0;
  for (int i = 0; i < nx; i++)
    for (int d = 0; d < xs[i]->depth; d++) {
      tblock *tb = &xs[i]->blocks[d];
      if (!tb->attn2.fuse_kv) return 0;
      tb->kv_off = total;
      total += seqs * m->kv_lk * 2 * tb->attn2.dim;
    }
  if (!total || !(m->kv_dev = sd_alloc(be, total))) return 0;
  int rc = 0;
  for (int i = 0; !rc && i < nx; i++) {
    rc = sd_devw_use(m->dw, blk[i]); /* resident: waits for its upload */
    for (int d = 0; !rc && d < xs[i]->depth; d++) {
      const tblock *tb = &xs[i]->blocks[d];
      rc = sd_run_attn_kv(be, &tb->attn2, m->kctx_dev, seqs * m->kv_lk,
                          sd_act_at(be, m->kv_dev, tb->kv_off));
    }
  }
  if (rc) {
    sd_free(be, m->kv_dev);
    m->kv_dev = NULL;
    return rc == WEFT_EUNSUPPORTED ? 0 : rc;
  }
  m->kv_syncs = sd_devw_syncs(m->dw);
  return 0;
}

int sd_unet_keep_ctx(sd_unet *m, weft_backend *be, const float *ctx, int64_t n,
                     int64_t tokens) {
  sd_unet_drop_ctx(m);
  const float *buf;
  float *dev;
  int rc = sd_io_in(be, ctx, n, &buf, &dev);
  if (rc || !dev) return rc; /* on the host: nothing to keep */
  m->kctx_host = ctx, m->kctx_n = n, m->kctx_dev = dev, m->kctx_be = be;
  const int64_t row = tokens * m->cfg.context_dim;
  m->kv_lk = tokens > 0 && n % row == 0 ? tokens : 0;
  rc = kv_build(m, be, m->kv_lk ? n / row : 0);
  if (rc) sd_unet_drop_ctx(m);
  return rc;
}

void sd_unet_drop_ctx(sd_unet *m) {
  if (m->kctx_dev) sd_free(m->kctx_be, m->kctx_dev);
  if (m->kv_dev) sd_free(m->kctx_be, m->kv_dev);
  m->kctx_host = NULL, m->kctx_n = 0, m->kctx_dev = NULL, m->kctx_be = NULL;
  m->kv_dev = NULL, m->kv_lk = 0, m->kv_seq = -1;
}

const float *sd_unet_kept_ctx(const sd_unet *m) {
  return m->kctx_dev ? m->kctx_host : NULL;
}

/* ctx [n] inside the kept context's host range: its device copy */
static const float *kept_ctx(const sd_unet *m, weft_backend *be,
                             const float *ctx, int64_t n) {
  if (!m->kctx_dev) return NULL;
  /* as addresses: ctx need not point into the kept array */
  const uintptr_t p = (uintptr_t)ctx, h0 = (uintptr_t)m->kctx_host;
  if (p < h0 || (p - h0) % sizeof(float)) return NULL;
  const int64_t off = (int64_t)((p - h0) / sizeof(float));
  if (off > m->kctx_n || n > m->kctx_n - off) return NULL;
  return (const float *)((const char *)m->kctx_dev +
                         off * (int64_t)weft_backend_act_size(be));
}

void sd_unet_free(sd_unet *m) {
  if (!m) return;
  sd_unet_drop_ctx(m);
  sd_devw_discard(m->dw);
  sd_free_linear(&m->t1), sd_free_linear(&m->t2);
  sd_free_conv(&m->conv_in), sd_free_conv(&m->conv_out);
  for (int i = 0; i < m->cfg.n_levels; i++) {
    free_level(&m->down[i]);
    free_level(&m->up[i]);
  }
  sd_free_resnet(&m->mid_res[0]), sd_free_resnet(&m->mid_res[1]);
  free_xformer(&m->mid_attn);
  sd_free_norm(&m->out_norm);
  free(m->tres);
  free(m);
}

/* m->tres: the ResNet blocks in the order encode and decode run them,
 * each given its rows among the projections */
static int list_tres(sd_unet *m) {
  const int n = m->cfg.n_levels;
  int cap = 2;
  for (int i = 0; i < n; i++)
    cap += m->down[i].n + (m->encoder_only ? 0 : m->up[i].n);
  if (!(m->tres = calloc((size_t)cap, sizeof *m->tres))) return WEFT_ENOMEM;
#define ADD(r)                                                                 \
  (m->tres[m->n_tres++] = (r), (r)->temb_off = m->tp_sum,                      \
   m->tp_sum += (r)->cout)
  for (int i = 0; i < n; i++)
    for (int j = 0; j < m->down[i].n; j++)
      ADD(&m->down[i].res[j]);
  ADD(&m->mid_res[0]), ADD(&m->mid_res[1]);
  for (int i = 0; !m->encoder_only && i < n; i++)
    for (int j = 0; j < m->up[i].n; j++)
      ADD(&m->up[i].res[j]);
#undef ADD
  return 0;
}

static int heads_for(const sd_unet_cfg *c, int level, int64_t ch) {
  if (c->head_dim > 0) return (int)(ch / c->head_dim);
  return c->heads[level];
}

static int load_xformer(sd_ckpt *ck, sd_part part, const char *pre, int64_t c,
                        int heads, int depth, int64_t ctx_dim, xformer *x) {
  char n[512];
  memset(x, 0, sizeof *x);
  x->c = c;
  x->depth = depth;
  snprintf(n, sizeof n, "%snorm.", pre);
  CK(sd_load_norm(ck, part, n, c, &x->norm));
  snprintf(n, sizeof n, "%sproj_in.", pre);
  CK(sd_load_linear(ck, part, n, c, c, true, &x->proj_in));
  snprintf(n, sizeof n, "%sproj_out.", pre);
  CK(sd_load_linear(ck, part, n, c, c, true, &x->proj_out));
  x->blocks = calloc((size_t)depth, sizeof *x->blocks);
  if (!x->blocks) return WEFT_ENOMEM;
  for (int d = 0; d < depth; d++) {
    tblock *b = &x->blocks[d];
    char p[400];
    snprintf(p, sizeof p, "%stransformer_blocks.%d.", pre, d);
#define SUB(s) (snprintf(n, sizeof n, "%s%s", p, s), n)
    CK(sd_load_norm(ck, part, SUB("norm1."), c, &b->n1));
    CK(sd_load_attn(ck, part, SUB("attn1."), c, c, heads, false, &b->attn1));
    CK(sd_load_norm(ck, part, SUB("norm2."), c, &b->n2));
    CK(sd_load_attn(ck, part, SUB("attn2."), c, ctx_dim, heads, false,
                    &b->attn2));
    CK(sd_load_norm(ck, part, SUB("norm3."), c, &b->n3));
    CK(sd_load_linear(ck, part, SUB("ff.net.0.proj."), c, 8 * c, true,
                      &b->ff_in));
    CK(sd_load_linear(ck, part, SUB("ff.net.2."), 4 * c, c, true, &b->ff_out));
#undef SUB
  }
  return 0;
}

static int load_all(sd_ckpt *ck, sd_part part, bool encoder_only, sd_unet *m) {
  const sd_unet_cfg *c = &m->cfg;
  const int n = c->n_levels, L = c->layers_per_block;
  const float eps = c->norm_eps;
  const int g = c->norm_groups;
  char p[256];
  m->c0 = c->channels[0];
  m->temb_dim = 4 * m->c0;
  CK(sd_load_linear(ck, part, "time_embedding.linear_1.", m->c0, m->temb_dim,
                    true, &m->t1));
  CK(sd_load_linear(ck, part, "time_embedding.linear_2.", m->temb_dim,
                    m->temb_dim, true, &m->t2));
  CK(sd_load_conv(ck, part, "conv_in.", c->in_channels, m->c0, 3, 1, 1,
                  &m->conv_in));
  int64_t ch = m->c0;
  for (int i = 0; i < n; i++) {
    level *lv = &m->down[i];
    lv->n = L;
    lv->cout = c->channels[i];
    lv->res = calloc((size_t)L, sizeof *lv->res);
    lv->attn = c->attn[i] ? calloc((size_t)L, sizeof *lv->attn) : NULL;
    if (!lv->res || (c->attn[i] && !lv->attn)) return WEFT_ENOMEM;
    for (int j = 0; j < L; j++) {
      snprintf(p, sizeof p, "down_blocks.%d.resnets.%d.", i, j);
      CK(sd_load_resnet(ck, part, p, ch, lv->cout, m->temb_dim, g, eps,
                        &lv->res[j]));
      ch = lv->cout;
      if (lv->attn) {
        snprintf(p, sizeof p, "down_blocks.%d.attentions.%d.", i, j);
        CK(load_xformer(ck, part, p, ch, heads_for(c, i, ch),
                        c->transformer_depth, c->context_dim, &lv->attn[j]));
      }
    }
    if (i < n - 1) {
      snprintf(p, sizeof p, "down_blocks.%d.downsamplers.0.conv.", i);
      CK(sd_load_conv(ck, part, p, ch, ch, 3, 2, 1, &lv->sample));
      lv->has_sample = true;
    }
  }
  int mid_heads = heads_for(c, n - 1, ch);
  CK(sd_load_resnet(ck, part, "mid_block.resnets.0.", ch, ch, m->temb_dim, g,
                    eps, &m->mid_res[0]));
  m->mid_has_attn = c->mid_attn;
  if (c->mid_attn)
    CK(load_xformer(ck, part, "mid_block.attentions.0.", ch, mid_heads,
                    c->transformer_depth, c->context_dim, &m->mid_attn));
  CK(sd_load_resnet(ck, part, "mid_block.resnets.1.", ch, ch, m->temb_dim, g,
                    eps, &m->mid_res[1]));
  m->mid_c = ch;
  if (encoder_only) return 0;
  /* up block i mirrors level n-1-i; its resnets take the running channels
   * plus the skip popped from the down path */
  int64_t skips[64];
  int ns = 0;
  skips[ns++] = m->c0;
  for (int i = 0; i < n; i++) {
    for (int j = 0; j < L; j++)
      skips[ns++] = c->channels[i];
    if (i < n - 1) skips[ns++] = c->channels[i];
  }
  for (int i = 0; i < n; i++) {
    level *lv = &m->up[i];
    int lvl = n - 1 - i;
    lv->n = L + 1;
    lv->cout = c->channels[lvl];
    lv->res = calloc((size_t)(L + 1), sizeof *lv->res);
    lv->attn = c->up_attn[i] ? calloc((size_t)(L + 1), sizeof *lv->attn) : NULL;
    if (!lv->res || (c->up_attn[i] && !lv->attn)) return WEFT_ENOMEM;
    for (int j = 0; j <= L; j++) {
      int64_t skip = skips[--ns];
      snprintf(p, sizeof p, "up_blocks.%d.resnets.%d.", i, j);
      CK(sd_load_resnet(ck, part, p, ch + skip, lv->cout, m->temb_dim, g, eps,
                        &lv->res[j]));
      ch = lv->cout;
      if (lv->attn) {
        snprintf(p, sizeof p, "up_blocks.%d.attentions.%d.", i, j);
        CK(load_xformer(ck, part, p, ch, heads_for(c, lvl, ch),
                        c->transformer_depth, c->context_dim, &lv->attn[j]));
      }
    }
    if (i < n - 1) {
      snprintf(p, sizeof p, "up_blocks.%d.upsamplers.0.conv.", i);
      CK(sd_load_conv(ck, part, p, ch, ch, 3, 1, 1, &lv->sample));
      lv->has_sample = true;
    }
  }
  CK(sd_load_norm(ck, part, "conv_norm_out.", ch, &m->out_norm));
  CK(sd_load_conv(ck, part, "conv_out.", ch, c->out_channels, 3, 1, 1,
                  &m->conv_out));
  return 0;
}

int sd_unet_load_part(sd_ckpt *ck, sd_part part, const sd_unet_cfg *cfg,
                      bool encoder_only, sd_unet **out) {
  *out = NULL;
  sd_unet *m = calloc(1, sizeof *m);
  if (!m) return WEFT_ENOMEM;
  m->cfg = *cfg;
  m->encoder_only = encoder_only;
  m->kv_seq = -1;
  int r = load_all(ck, part, encoder_only, m);
  if (!r) r = list_tres(m);
  if (r) {
    sd_unet_free(m);
    return r;
  }
  *out = m;
  return 0;
}

int sd_unet_load(sd_ckpt *ck, sd_unet **out) {
  return sd_unet_load_part(ck, SD_UNET, &ck->unet, false, out);
}

/* ---- forward --------------------------------------------------------------
 */

/* block b's cross-attention keys and values for the forward running now
 * (sd_unet.kv_dev), or NULL: made of ctx */
static const float *kv_at(const sd_unet *m, weft_backend *be, const tblock *b) {
  if (!m->kv_dev || m->kv_seq < 0 || m->kv_syncs != sd_devw_syncs(m->dw))
    return NULL;
  return sd_act_at(be, m->kv_dev,
                   b->kv_off + m->kv_seq * m->kv_lk * 2 * b->attn2.dim);
}

static int run_tblock(weft_backend *be, const sd_unet *m, const tblock *b,
                      float *h, int64_t bs, int64_t l, const float *ctx,
                      int64_t lk, float *t, float *u) {
  const int64_t c = b->n1.c, rows = bs * l;
  const float eps = 1e-5f;
  /* each residual added by the product that ends its branch */
  CK(be->iface->layer_norm(be, h, t, rows, c, eps, b->n1.g, b->n1.b));
  CK(sd_run_attn(be, &b->attn1, t, bs, l, NULL, 0, false, true, NULL, h));
  CK(be->iface->layer_norm(be, h, t, rows, c, eps, b->n2.g, b->n2.b));
  CK(sd_run_attn(be, &b->attn2, t, bs, l, ctx, lk, false, true, kv_at(m, be, b),
                 h));
  CK(be->iface->layer_norm(be, h, t, rows, c, eps, b->n3.g, b->n3.b));
  CK(sd_run_linear(be, &b->ff_in, t, rows, u));
  CK(be->iface->gated_act(be, WEFT_ACT_GELU_ERF, u, u, rows, 4 * c));
  return sd_run_linear_add(be, &b->ff_out, u, rows, h);
}

/* x [bs, c, hw] -> y [bs, c, hw] = x + transformer(x); with cl x and y
 * [bs, hw, c], whose pixels are the token rows (no moves) */
static int run_xformer(weft_backend *be, const sd_unet *m, const xformer *x,
                       int groups, const float *in, int64_t bs, int64_t hw,
                       const float *ctx, int64_t lk, bool cl, float *y) {
  const int64_t c = x->c;
  float *n = sd_alloc(be, bs * c * hw), *h = sd_alloc(be, bs * hw * c);
  float *t = sd_alloc(be, bs * hw * c), *u = sd_alloc(be, bs * hw * 8 * c);
  int rc = 0;
  if (!n || !h || !t || !u) {
    rc = WEFT_ENOMEM;
    goto out;
  }
  if ((rc = sd_group_norm(be, cl, in, n, bs, c, hw, groups, 1e-6f, &x->norm,
                          WEFT_ACT_NONE)) ||
      (rc = cl ? sd_run_linear(be, &x->proj_in, n, bs * hw, h)
               : sd_run_linear_from_nchw(be, &x->proj_in, n, bs, hw, h)))
    goto out;
  for (int d = 0; d < x->depth; d++)
    if ((rc = run_tblock(be, m, &x->blocks[d], h, bs, hw, ctx, lk, t, u)))
      goto out;
  /* y = in + proj_out(h): the residual added by the product (y is in,
   * or gets a copy of it first) */
  if ((y != in &&
       (rc = be->iface->scale_add(be, y, 1.0f, in, 0.0f, NULL, bs * c * hw))) ||
      (rc = cl ? sd_run_linear_add(be, &x->proj_out, h, bs * hw, y)
               : sd_run_linear_to_nchw(be, &x->proj_out, h, bs, hw, true, y)))
    goto out;
out:
  sd_free(be, n), sd_free(be, h), sd_free(be, t), sd_free(be, u);
  return rc;
}

void sd_unet_feats_free(weft_backend *be, sd_unet_feats *f) {
  for (int i = 0; i < f->n; i++)
    sd_free(be, f->skip[i].d);
  sd_free(be, f->mid.d);
  sd_free(be, f->tproj);
  memset(f, 0, sizeof *f);
}

/* Whether the UNet keeps its maps channels last between its layers
 * (sd_cl_wanted); never for a ControlNet's encoder or with its hint
 * (their features stay channels first) */
static bool unet_cl(const sd_unet *m, weft_backend *be) {
  return !m->encoder_only && sd_cl_wanted(be, m->mid_res[0].conv1.w_hwc);
}

/* tp [b, tp_sum]: every ResNet block's time-embedding projection of temb
 * [b, temb_dim] (silu'd), block r's [b, cout] at row b * r->temb_off */
static int temb_proj(const sd_unet *m, weft_backend *be, const float *temb,
                     int64_t b, float *tp) {
  weft_linear_part *parts = calloc((size_t)m->n_tres, sizeof *parts);
  if (!parts) return WEFT_ENOMEM;
  for (int i = 0; i < m->n_tres; i++) {
    const sd_resnet *r = m->tres[i];
    parts[i] = (weft_linear_part){r->temb.w, r->temb.b, r->temb.out,
                                  sd_act_at(be, tp, b * r->temb_off)};
  }
  int rc =
      weft_backend_linear_group(be, temb, b, m->temb_dim, m->n_tres, parts);
  free(parts);
  return rc;
}

/* block r's projection in f (temb_proj) */
static const float *tproj(weft_backend *be, const sd_unet_feats *f,
                          const sd_resnet *r) {
  return sd_act_at(be, f->tproj, f->b * r->temb_off);
}

static int encode(sd_unet *m, weft_backend *be, const float *x, int64_t b,
                  int64_t h, int64_t w, const float *t, const float *ctx,
                  int64_t ctx_len, const float *add_in, bool cl,
                  sd_unet_feats *f) {
  const sd_unet_cfg *c = &m->cfg;
  const int n = c->n_levels, L = c->layers_per_block;
  memset(f, 0, sizeof *f);
  if (h < 1 || w < 1 || !sd_devw_fits(m->dw, be)) return WEFT_EINVAL;
  f->b = b;
  f->cl = cl = cl && !add_in;
  int rc = 0;
  float *tmp = sd_alloc(be, b * m->temb_dim);
  float *temb = sd_alloc(be, b * m->temb_dim);
  f->tproj = sd_alloc(be, b * m->tp_sum);
  float *cur = NULL;
  int64_t ch = m->c0, hh = h, ww = w, ho, wo;
  if (!temb || !tmp || !f->tproj) {
    rc = WEFT_ENOMEM;
    goto out;
  }
  if ((rc = sd_devw_use(m->dw, 0))) goto out;
  /* time embedding; every resnet applies SiLU to it first, so do it once,
   * and every resnet's projection of it, all at once */
  if ((rc = be->iface->timestep_embedding(be, t, b, m->c0, 1, 0.0f, 1.0f,
                                          10000.0f, tmp)) ||
      (rc = sd_run_linear(be, &m->t1, tmp, b, temb)) ||
      (rc = be->iface->act(be, WEFT_ACT_SILU, temb, temb, b * m->temb_dim)) ||
      (rc = sd_run_linear(be, &m->t2, temb, b, tmp)) ||
      (rc = be->iface->act(be, WEFT_ACT_SILU, tmp, temb, b * m->temb_dim)) ||
      (rc = temb_proj(m, be, temb, b, f->tproj)))
    goto out;
  sd_free(be, tmp), sd_free(be, temb);
  tmp = temb = NULL;
#define NEWMAP(C, H, W)                                                        \
  (f->skip[f->n] =                                                             \
       (sd_fmap){sd_alloc(be, b * (C) * (H) * (W)), (C), (H), (W)},            \
   f->skip[f->n].d ? f->skip[f->n++].d : NULL)
  /* conv_in (+ a ControlNet's hint embedding) */
  if (!(cur = NEWMAP(ch, hh, ww))) {
    rc = WEFT_ENOMEM;
    goto out;
  }
  if ((rc = sd_run_conv_cl(be, &m->conv_in, x, false, b, hh, ww, cur, cl, &ho,
                           &wo)) ||
      (add_in && (rc = be->iface->scale_add(be, cur, 1.0f, cur, 1.0f, add_in,
                                            b * ch * hh * ww))))
    goto out;
  for (int i = 0; i < n; i++) {
    const level *lv = &m->down[i];
    if ((rc = sd_devw_use(m->dw, BLK_DOWN(i)))) goto out;
    for (int j = 0; j < L; j++) {
      float *nx = NEWMAP(lv->cout, hh, ww);
      if (!nx) {
        rc = WEFT_ENOMEM;
        goto out;
      }
      if ((rc = sd_run_resnet(be, &lv->res[j], cur, b, hh, ww,
                              tproj(be, f, &lv->res[j]), cl, nx)))
        goto out;
      if (lv->attn && (rc = run_xformer(be, m, &lv->attn[j], c->norm_groups, nx,
                                        b, hh * ww, ctx, ctx_len, cl, nx)))
        goto out;
      cur = nx;
      ch = lv->cout;
    }
    if (lv->has_sample) {
      int64_t h2 = (hh + 1) / 2, w2 = (ww + 1) / 2;
      float *nx = NEWMAP(ch, h2, w2);
      if (!nx) {
        rc = WEFT_ENOMEM;
        goto out;
      }
      if ((rc = sd_run_conv_cl(be, &lv->sample, cur, cl, b, hh, ww, nx, cl, &ho,
                               &wo)))
        goto out;
      cur = nx, hh = ho, ww = wo;
    }
  }
#undef NEWMAP
  /* middle */
  if ((rc = sd_devw_use(m->dw, BLK_MID(n)))) goto out;
  float *a = sd_alloc(be, b * ch * hh * ww);
  f->mid = (sd_fmap){sd_alloc(be, b * ch * hh * ww), ch, hh, ww};
  if (!a || !f->mid.d) {
    sd_free(be, a);
    rc = WEFT_ENOMEM;
    goto out;
  }
  if ((rc = sd_run_resnet(be, &m->mid_res[0], cur, b, hh, ww,
                          tproj(be, f, &m->mid_res[0]), cl, a)) ||
      (m->mid_has_attn &&
       (rc = run_xformer(be, m, &m->mid_attn, c->norm_groups, a, b, hh * ww,
                         ctx, ctx_len, cl, a))) ||
      (rc = sd_run_resnet(be, &m->mid_res[1], a, b, hh, ww,
                          tproj(be, f, &m->mid_res[1]), cl, f->mid.d))) {
    sd_free(be, a);
    goto out;
  }
  sd_free(be, a);
out:
  sd_free(be, tmp), sd_free(be, temb);
  if (rc) sd_unet_feats_free(be, f);
  return rc;
}

int sd_unet_encode(sd_unet *m, weft_backend *be, const float *x, int64_t b,
                   int64_t h, int64_t w, const float *t, const float *ctx,
                   int64_t ctx_len, const float *add_in, sd_unet_feats *f) {
  return encode(m, be, x, b, h, w, t, ctx, ctx_len, add_in, unet_cl(m, be), f);
}

int sd_unet_decode(sd_unet *m, weft_backend *be, sd_unet_feats *f,
                   const float *ctx, int64_t ctx_len, const sd_control *ctl,
                   float *out) {
  const sd_unet_cfg *c = &m->cfg;
  const int n = c->n_levels, L = c->layers_per_block;
  const int64_t b = f->b;
  if (m->encoder_only || !sd_devw_fits(m->dw, be)) return WEFT_EINVAL;
  const bool cl = f->cl;
  /* a ControlNet's residuals are channels first */
  if (cl && ctl) return WEFT_EINVAL;
  int rc = 0;
  /* ControlNet residuals: onto the skips and the middle, scaled already */
  for (int i = 0; ctl && i < ctl->n && i < f->n && !rc; i++)
    rc = be->iface->scale_add(be, f->skip[i].d, 1.0f, f->skip[i].d, 1.0f,
                              ctl->down[i],
                              b * f->skip[i].c * f->skip[i].h * f->skip[i].w);
  if (!rc && ctl && ctl->mid)
    rc = be->iface->scale_add(be, f->mid.d, 1.0f, f->mid.d, 1.0f, ctl->mid,
                              b * f->mid.c * f->mid.h * f->mid.w);
  if (rc) return rc;
  float *cur = f->mid.d;
  f->mid.d = NULL; /* owned here now */
  int64_t ch = f->mid.c, hh = f->mid.h, ww = f->mid.w, ho, wo;
  for (int i = 0; i < n; i++) {
    const level *lv = &m->up[i];
    if ((rc = sd_devw_use(m->dw, BLK_UP(n, i)))) goto out;
    for (int j = 0; j <= L; j++) {
      sd_fmap sk = f->skip[--f->n];
      int64_t cc = ch + sk.c;
      float *cat = sd_alloc(be, b * cc * hh * ww);
      float *nx = cat ? sd_alloc(be, b * lv->cout * hh * ww) : NULL;
      if (!nx) {
        sd_free(be, cat), sd_free(be, sk.d);
        rc = WEFT_ENOMEM;
        goto out;
      }
      /* along the channels: [b, c, h, w], or [b, hw, c] channels last */
      int64_t s1[4] = {b, ch, hh, ww}, s2[4] = {b, sk.c, hh, ww};
      int64_t l1[3] = {b, hh * ww, ch}, l2[3] = {b, hh * ww, sk.c};
      const float *xs[2] = {cur, sk.d};
      const int64_t *shapes[2] = {s1, s2}, *cls[2] = {l1, l2};
      rc = cl ? be->iface->concat(be, 2, xs, 3, cls, 2, cat)
              : be->iface->concat(be, 2, xs, 4, shapes, 1, cat);
      sd_free(be, sk.d), sd_free(be, cur);
      cur = nx;
      if (!rc)
        rc = sd_run_resnet(be, &lv->res[j], cat, b, hh, ww,
                           tproj(be, f, &lv->res[j]), cl, nx);
      sd_free(be, cat);
      if (rc) goto out;
      ch = lv->cout;
      if (lv->attn && (rc = run_xformer(be, m, &lv->attn[j], c->norm_groups, nx,
                                        b, hh * ww, ctx, ctx_len, cl, nx)))
        goto out;
    }
    if (lv->has_sample) {
      /* up to the next skip's size: 2x, or less where a downsampling
       * rounded an odd size up (ComfyUI's and diffusers' output_shape) */
      int64_t th = f->skip[f->n - 1].h, tw = f->skip[f->n - 1].w;
      float *u = sd_alloc(be, b * ch * th * tw);
      float *nx = u ? sd_alloc(be, b * ch * th * tw) : NULL;
      if (!nx) {
        sd_free(be, u);
        rc = WEFT_ENOMEM;
        goto out;
      }
      rc = sd_upsample_nearest(be, cl, cur, u, b, ch, hh, ww, th, tw);
      hh = th, ww = tw;
      if (!rc)
        rc =
            sd_run_conv_cl(be, &lv->sample, u, cl, b, hh, ww, nx, cl, &ho, &wo);
      sd_free(be, u), sd_free(be, cur);
      cur = nx;
      if (rc) goto out;
    }
  }
  if ((rc = sd_devw_use(m->dw, BLK_OUT(n)))) goto out;
  {
    float *nrm = sd_alloc(be, b * ch * hh * ww);
    if (!nrm) {
      rc = WEFT_ENOMEM;
      goto out;
    }
    rc = sd_group_norm(be, cl, cur, nrm, b, ch, hh * ww, c->norm_groups,
                       c->norm_eps, &m->out_norm, WEFT_ACT_SILU);
    if (!rc)
      rc = sd_run_conv_cl(be, &m->conv_out, nrm, cl, b, hh, ww, out, false, &ho,
                          &wo);
    sd_free(be, nrm);
  }
out:
  sd_free(be, cur);
  sd_unet_feats_free(be, f);
  return rc;
}

int sd_unet_forward(sd_unet *m, weft_backend *be, const float *x, int64_t b,
                    int64_t h, int64_t w, const float *t, const float *ctx,
                    int64_t ctx_len, const sd_control *ctl, float *out) {
  const sd_unet_cfg *c = &m->cfg;
  /* host I/O (sd_device.h): on the CPU every pointer passes through */
  const float *xd = NULL, *td = NULL, *cd = NULL, *down[64], *mid = NULL;
  float *xt = NULL, *tt = NULL, *ct = NULL, *dt[64] = {0}, *mt = NULL;
  float *od = NULL, *ot = NULL;
  sd_control dctl = {down, 0, NULL};
  sd_unet_feats f;
  int rc = sd_io_in(be, x, b * c->in_channels * h * w, &xd, &xt);
  if (!rc) rc = sd_io_in_f32(be, t, b, &td, &tt);
  if (!rc && (cd = kept_ctx(m, be, ctx, b * ctx_len * c->context_dim))) {
    /* whole kept sequences: their keys and values are made (kv_at) */
    const int64_t off = ctx - m->kctx_host, row = m->kv_lk * c->context_dim;
    if (m->kv_dev && ctx_len == m->kv_lk && off % row == 0)
      m->kv_seq = off / row;
  } else if (!rc) {
    rc = sd_io_in(be, ctx, b * ctx_len * c->context_dim, &cd, &ct);
  }
  if (!rc)
    rc = encode(m, be, xd, b, h, w, td, cd, ctx_len, NULL,
                unet_cl(m, be) && !ctl, &f);
  if (rc) goto out;
  /* the residuals have the shapes of the features they are added to */
  for (int i = 0; ctl && i < ctl->n && i < f.n && !rc; i++, dctl.n++)
    rc = sd_io_in(be, ctl->down[i], b * f.skip[i].c * f.skip[i].h * f.skip[i].w,
                  &down[i], &dt[i]);
  if (!rc && ctl)
    rc = sd_io_in(be, ctl->mid, b * f.mid.c * f.mid.h * f.mid.w, &mid, &mt);
  dctl.mid = mid;
  if (!rc) rc = sd_io_out(be, out, b * c->out_channels * h * w, &od, &ot);
  if (rc) {
    sd_unet_feats_free(be, &f);
    goto out;
  }
  rc = sd_unet_decode(m, be, &f, cd, ctx_len, ctl ? &dctl : NULL, od);
  rc = sd_io_done(be, rc, out, ot, b * c->out_channels * h * w);
out:
  m->kv_seq = -1;
  sd_free(be, xt), sd_free(be, tt), sd_free(be, ct), sd_free(be, mt);
  for (int i = 0; i < 64; i++)
    sd_free(be, dt[i]);
  return rc;
}
