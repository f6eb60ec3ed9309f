/* controlnet_model.c - diffusers' ControlNetModel for SD1.x/SD2.x: a copy of
 * the UNet's down path and middle, fed the UNet's input plus an embedded
 * hint image, whose skips and middle output pass through zero-initialised
 * 1x1 convs to become residuals for the UNet. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sd_layers.h"

struct sd_cnet {
  sd_unet *enc;
  sd_conv hint_in, hint_out;
  sd_conv *hint; /* [2 * (n_hint - 1)] */
  int n_hint;
  sd_conv *zero; /* one per skip */
  int n_zero;
  sd_conv mid_zero;
  int64_t c0, mid_c;
  sd_devw *dw; /* its own layers on a device backend (enc has its own) */
};

/* The layers outside the encoder, two blocks: 0 the hint embedding (runs
 * before the encoder), 1 the zero convolutions (after it). */
static void cnet_visit(void *model, sd_wvisit *v) {
  sd_cnet *m = model;
  v->block(v, "controlnet_cond_embedding");
  sd_wv_conv(v, &m->hint_in);
  for (int i = 0; m->hint && i < 2 * (m->n_hint - 1); i++)
    sd_wv_conv(v, &m->hint[i]);
  sd_wv_conv(v, &m->hint_out);
  v->block(v, "controlnet_down_blocks+mid_block");
  for (int i = 0; m->zero && i < m->n_zero; i++)
    sd_wv_conv(v, &m->zero[i]);
  sd_wv_conv(v, &m->mid_zero);
}

int sd_cnet_to_vram(sd_cnet *m, sd_vram *vr) {
  if (m->dw) return m->dw->vr == vr ? 0 : WEFT_EINVAL;
  int r = sd_unet_to_vram(m->enc, vr);
  if (!r) r = sd_devw_upload(m, cnet_visit, vr, "ControlNet", true, &m->dw);
  return r;
}

int sd_cnet_to_backend(sd_cnet *m, weft_backend *be) {
  if (m->dw) return m->dw->be == be ? 0 : WEFT_EINVAL;
  int r;
  sd_vram *vr = sd_vram_private(be, &r);
  if (!vr) return r;
  r = sd_cnet_to_vram(m, vr);
  if (!r) r = sd_vram_commit(vr);
  if (r) sd_cnet_to_host(m); /* as it was */
  sd_vram_release(vr);       /* the models hold it */
  return r;
}

void sd_cnet_to_host(sd_cnet *m) {
  sd_devw_release(m->dw);
  m->dw = NULL;
  sd_unet_to_host(m->enc);
}

sd_devw *sd_cnet_devw(const sd_cnet *m, bool encoder) {
  return encoder ? sd_unet_devw(m->enc) : m->dw;
}

void sd_cnet_free(sd_cnet *m) {
  if (!m) return;
  sd_devw_discard(m->dw);
  sd_unet_free(m->enc);
  sd_free_conv(&m->hint_in), sd_free_conv(&m->hint_out);
  for (int i = 0; m->hint && i < 2 * (m->n_hint - 1); i++)
    sd_free_conv(&m->hint[i]);
  free(m->hint);
  for (int i = 0; m->zero && i < m->n_zero; i++)
    sd_free_conv(&m->zero[i]);
  free(m->zero);
  sd_free_conv(&m->mid_zero);
  free(m);
}

int sd_cnet_hint_factor(const sd_cnet *m) {
  return 1 << (m->n_hint - 1);
}

static int load(sd_ckpt *ck, sd_cnet *m) {
  const sd_unet_cfg *c = &ck->control;
  CK(sd_unet_load_part(ck, SD_CONTROL, c, true, &m->enc));
  const int *hc = ck->hint_channels;
  m->n_hint = ck->n_hint;
  m->c0 = c->channels[0];
  char name[128];
  CK(sd_load_conv(ck, SD_CONTROL, "controlnet_cond_embedding.conv_in.", 3,
                  hc[0], 3, 1, 1, &m->hint_in));
  m->hint = calloc((size_t)(2 * m->n_hint), sizeof *m->hint);
  if (!m->hint) return WEFT_ENOMEM;
  for (int i = 0; i < m->n_hint - 1; i++) {
    snprintf(name, sizeof name, "controlnet_cond_embedding.blocks.%d.", 2 * i);
    CK(sd_load_conv(ck, SD_CONTROL, name, hc[i], hc[i], 3, 1, 1,
                    &m->hint[2 * i]));
    snprintf(name, sizeof name, "controlnet_cond_embedding.blocks.%d.",
             2 * i + 1);
    CK(sd_load_conv(ck, SD_CONTROL, name, hc[i], hc[i + 1], 3, 2, 1,
                    &m->hint[2 * i + 1]));
  }
  CK(sd_load_conv(ck, SD_CONTROL, "controlnet_cond_embedding.conv_out.",
                  hc[m->n_hint - 1], m->c0, 3, 1, 1, &m->hint_out));
  /* one zero conv per skip of the down path: conv_in, every layer, every
   * downsampler */
  int64_t widths[64];
  int n = 0;
  widths[n++] = m->c0;
  for (int i = 0; i < c->n_levels; i++) {
    for (int j = 0; j < c->layers_per_block; j++)
      widths[n++] = c->channels[i];
    if (i < c->n_levels - 1) widths[n++] = c->channels[i];
  }
  m->zero = calloc((size_t)n, sizeof *m->zero);
  if (!m->zero) return WEFT_ENOMEM;
  m->n_zero = n;
  for (int i = 0; i < n; i++) {
    snprintf(name, sizeof name, "controlnet_down_blocks.%d.", i);
    CK(sd_load_conv(ck, SD_CONTROL, name, widths[i], widths[i], 1, 1, 0,
                    &m->zero[i]));
  }
  m->mid_c = c->channels[c->n_levels - 1];
  return sd_load_conv(ck, SD_CONTROL, "controlnet_mid_block.", m->mid_c,
                      m->mid_c, 1, 1, 0, &m->mid_zero);
}

int sd_cnet_load(sd_ckpt *ck, sd_cnet **out) {
  *out = NULL;
  sd_cnet *m = calloc(1, sizeof *m);
  if (!m) return WEFT_ENOMEM;
  int r = load(ck, m);
  if (r) {
    sd_cnet_free(m);
    return r;
  }
  *out = m;
  return 0;
}

void sd_cnet_out_free(sd_cnet_out *o) {
  for (int i = 0; i < o->n; i++)
    free(o->down[i]);
  free(o->mid);
  memset(o, 0, sizeof *o);
}

/* ControlNetConditioningEmbedding: conv_in, SiLU, (conv, SiLU, stride-2
 * conv, SiLU) per level, conv_out */
static int embed_hint(sd_cnet *m, weft_backend *be, const float *hint,
                      int64_t b, int64_t H, int64_t W, float *out) {
  int64_t ho, wo, c = m->hint_in.cout;
  int rc = sd_devw_use(m->dw, 0);
  if (rc) return rc;
  float *cur = sd_alloc(be, b * c * H * W);
  if (!cur) return WEFT_ENOMEM;
  rc = sd_run_conv(be, &m->hint_in, hint, b, H, W, cur, &ho, &wo);
  if (!rc) rc = be->iface->act(be, WEFT_ACT_SILU, cur, cur, b * c * H * W);
  for (int i = 0; i < 2 * (m->n_hint - 1) && !rc; i++) {
    const sd_conv *cv = &m->hint[i];
    int64_t oh = (H + 2 - 3) / cv->stride + 1,
            ow = (W + 2 - 3) / cv->stride + 1;
    float *nx = sd_alloc(be, b * cv->cout * oh * ow);
    if (!nx) {
      rc = WEFT_ENOMEM;
      break;
    }
    rc = sd_run_conv(be, cv, cur, b, H, W, nx, &ho, &wo);
    sd_free(be, cur);
    cur = nx, H = ho, W = wo, c = cv->cout;
    if (!rc) rc = be->iface->act(be, WEFT_ACT_SILU, cur, cur, b * c * H * W);
  }
  if (!rc) rc = sd_run_conv(be, &m->hint_out, cur, b, H, W, out, &ho, &wo);
  sd_free(be, cur);
  return rc;
}

/* out[i] += s * src (allocating out[i] as zeros first); src is backend
 * memory: on a device backend it is added from a host copy */
static int accumulate(weft_backend *be, float **dst, int64_t *dn,
                      const float *src, int64_t n, float s) {
  if (!*dst) {
    if (!(*dst = calloc((size_t)n, sizeof **dst))) return WEFT_ENOMEM;
    *dn = n;
  }
  if (*dn != n) return WEFT_EINVAL;
  float *copy = NULL;
  if (!sd_be_is_host(be)) {
    /* zeroed: a DRY recording's copy leaves it as it is */
    if (!(copy = calloc((size_t)n, sizeof *copy))) return WEFT_ENOMEM;
    int r = sd_act_download(be, copy, src, n);
    if (r) {
      free(copy);
      return r;
    }
    src = copy;
  }
  for (int64_t i = 0; i < n; i++)
    (*dst)[i] += s * src[i];
  free(copy);
  return 0;
}

int sd_cnet_forward(sd_cnet *m, weft_backend *be, const float *x, int64_t b,
                    int64_t h, int64_t w, const float *t, const float *ctx,
                    int64_t lk, const float *hint, float strength,
                    sd_cnet_out *out) {
  const int64_t f = sd_cnet_hint_factor(m);
  if (!sd_devw_fits(m->dw, be)) return WEFT_EINVAL;
  /* host I/O (sd_device.h): on the CPU every pointer passes through */
  const sd_unet_cfg *uc = sd_unet_config(m->enc);
  const float *xd, *td, *cd, *hd;
  float *xt = NULL, *tt = NULL, *ct = NULL, *ht = NULL, *emb = NULL;
  int rc = sd_io_in(be, x, b * uc->in_channels * h * w, &xd, &xt);
  if (!rc) rc = sd_io_in_f32(be, t, b, &td, &tt);
  if (!rc) rc = sd_io_in(be, ctx, b * lk * uc->context_dim, &cd, &ct);
  if (!rc) rc = sd_io_in(be, hint, b * 3 * h * f * w * f, &hd, &ht);
  if (!rc && !(emb = sd_alloc(be, b * m->c0 * h * w))) rc = WEFT_ENOMEM;
  if (!rc) rc = embed_hint(m, be, hd, b, h * f, w * f, emb);
  sd_unet_feats feats;
  memset(&feats, 0, sizeof feats);
  if (!rc)
    rc = sd_unet_encode(m->enc, be, xd, b, h, w, td, cd, lk, emb, &feats);
  sd_free(be, emb);
  sd_free(be, xt), sd_free(be, tt), sd_free(be, ct), sd_free(be, ht);
  if (rc) return rc;
  if (feats.n != m->n_zero) {
    sd_unet_feats_free(be, &feats);
    return WEFT_EINVAL;
  }
  int64_t ho, wo;
  rc = sd_devw_use(m->dw, 1);
  for (int i = 0; i < feats.n && !rc; i++) {
    const sd_fmap *s = &feats.skip[i];
    int64_t n = b * s->c * s->h * s->w;
    float *z = sd_alloc(be, n);
    if (!z) {
      rc = WEFT_ENOMEM;
      break;
    }
    rc = sd_run_conv(be, &m->zero[i], s->d, b, s->h, s->w, z, &ho, &wo);
    if (!rc)
      rc = accumulate(be, &out->down[i], &out->down_numel[i], z, n, strength);
    sd_free(be, z);
  }
  if (!rc) {
    if (out->n < feats.n) out->n = feats.n;
    const sd_fmap *mid = &feats.mid;
    int64_t n = b * mid->c * mid->h * mid->w;
    float *z = sd_alloc(be, n);
    if (!z) rc = WEFT_ENOMEM;
    if (!rc)
      rc =
          sd_run_conv(be, &m->mid_zero, mid->d, b, mid->h, mid->w, z, &ho, &wo);
    if (!rc) rc = accumulate(be, &out->mid, &out->mid_numel, z, n, strength);
    sd_free(be, z);
  }
  sd_unet_feats_free(be, &feats);
  return rc;
}
