/* vae_model.c - diffusers' AutoencoderKL (the SD VAE): encoder to the
 * posterior's moments, decoder from a latent, with single-head attention in
 * the middle blocks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sd_layers.h"

typedef struct vlevel {
  sd_resnet *res;
  int n;
  sd_conv sample;
  bool has_sample;
  int64_t cout;
} vlevel;

typedef struct vmid {
  sd_resnet res[2];
  sd_norm norm;
  sd_attn attn;
} vmid;

typedef struct vside {
  sd_conv conv_in, conv_out;
  vlevel lv[8];
  vmid mid;
  sd_norm norm_out;
} vside;

struct sd_vae {
  sd_vae_cfg cfg;
  vside enc, dec;
  sd_conv quant, post_quant;
  sd_devw *dw; /* the weights on a device backend, or NULL */
};

static const float EPS = 1e-6f;

const sd_vae_cfg *sd_vae_config(const sd_vae *m) {
  return &m->cfg;
}
int sd_vae_factor(const sd_vae *m) {
  return 1 << (m->cfg.n_levels - 1);
}

static void free_side(vside *s, int n) {
  sd_free_conv(&s->conv_in), sd_free_conv(&s->conv_out);
  for (int i = 0; i < n; i++) {
    for (int j = 0; s->lv[i].res && j < s->lv[i].n; j++)
      sd_free_resnet(&s->lv[i].res[j]);
    free(s->lv[i].res);
    sd_free_conv(&s->lv[i].sample);
  }
  sd_free_resnet(&s->mid.res[0]), sd_free_resnet(&s->mid.res[1]);
  sd_free_norm(&s->mid.norm);
  sd_free_attn(&s->mid.attn);
  sd_free_norm(&s->norm_out);
}

/* The blocks, in execution order (n levels): encoder 0 conv_in + down
 * block 0, i down block i, n the middle + conv_out + quant_conv; decoder
 * n + 1 post_quant_conv + conv_in + the middle, n + 2 + i up block i,
 * 2n + 2 conv_out. */
#define BLK_ENC_DOWN(i) (i)
#define BLK_ENC_OUT(n) (n)
#define BLK_DEC_IN(n) ((n) + 1)
#define BLK_DEC_UP(n, i) ((n) + 2 + (i))
#define BLK_DEC_OUT(n) (2 * (n) + 2)

static void visit_mid(sd_wvisit *v, vmid *mid) {
  sd_wv_resnet(v, &mid->res[0]);
  sd_wv_norm(v, &mid->norm);
  sd_wv_attn(v, &mid->attn);
  sd_wv_resnet(v, &mid->res[1]);
}

static void visit_level(sd_wvisit *v, vlevel *lv) {
  for (int j = 0; lv->res && j < lv->n; j++)
    sd_wv_resnet(v, &lv->res[j]);
  sd_wv_conv(v, &lv->sample);
}

static void vae_visit(void *model, sd_wvisit *v) {
  sd_vae *m = model;
  const int n = m->cfg.n_levels;
  char name[64];
  for (int i = 0; i < n; i++) {
    snprintf(name, sizeof name,
             i ? "encoder.down_blocks.%d" : "encoder.conv_in+down_blocks.%d",
             i);
    v->block(v, name);
    if (!i) sd_wv_conv(v, &m->enc.conv_in);
    visit_level(v, &m->enc.lv[i]);
  }
  v->block(v, "encoder.mid_block+conv_out+quant_conv");
  visit_mid(v, &m->enc.mid);
  sd_wv_norm(v, &m->enc.norm_out);
  sd_wv_conv(v, &m->enc.conv_out);
  sd_wv_conv(v, &m->quant);
  v->block(v, "post_quant_conv+decoder.conv_in+mid_block");
  sd_wv_conv(v, &m->post_quant);
  sd_wv_conv(v, &m->dec.conv_in);
  visit_mid(v, &m->dec.mid);
  for (int i = 0; i < n; i++) {
    snprintf(name, sizeof name, "decoder.up_blocks.%d", i);
    v->block(v, name);
    visit_level(v, &m->dec.lv[i]);
  }
  v->block(v, "decoder.conv_out");
  sd_wv_norm(v, &m->dec.norm_out);
  sd_wv_conv(v, &m->dec.conv_out);
}

int sd_vae_to_vram(sd_vae *m, sd_vram *vr) {
  if (m->dw) return m->dw->vr == vr ? 0 : WEFT_EINVAL;
  /* 3x3 weights channels last where the backend runs them fastest so
   * (CUDA's NHWC convolutions, in row bands of at most
   * WEFT_CUDA_CONV_BAND_BYTES of scratch at the decoder's big maps): on an
   * H200 the 512x512 decode took 9.7 against 11.3 ms, the allocator's
   * high-water of a txt2img 2323 against 2328 MiB (BENCHMARKS.md) */
  return sd_devw_upload(m, vae_visit, vr, "VAE", true, &m->dw);
}

int sd_vae_to_backend(sd_vae *m, weft_backend *be) {
  if (m->dw) return m->dw->be == be ? 0 : WEFT_EINVAL;
  int r;
  sd_vram *vr = sd_vram_private(be, &r);
  if (!vr) return r;
  r = sd_vae_to_vram(m, vr);
  if (!r && (r = sd_vram_commit(vr))) sd_vae_to_host(m); /* as it was */
  sd_vram_release(vr); /* the model holds it */
  return r;
}

void sd_vae_to_host(sd_vae *m) {
  sd_devw_release(m->dw);
  m->dw = NULL;
}

sd_devw *sd_vae_devw(const sd_vae *m) {
  return m->dw;
}

void sd_vae_free(sd_vae *m) {
  if (!m) return;
  sd_devw_discard(m->dw);
  free_side(&m->enc, m->cfg.n_levels);
  free_side(&m->dec, m->cfg.n_levels);
  sd_free_conv(&m->quant), sd_free_conv(&m->post_quant);
  free(m);
}

static int load_mid(sd_ckpt *ck, const char *side, int64_t ch, int groups,
                    vmid *mid) {
  char p[256];
  snprintf(p, sizeof p, "%s.mid_block.resnets.0.", side);
  CK(sd_load_resnet(ck, SD_VAE, p, ch, ch, 0, groups, EPS, &mid->res[0]));
  snprintf(p, sizeof p, "%s.mid_block.attentions.0.group_norm.", side);
  CK(sd_load_norm(ck, SD_VAE, p, ch, &mid->norm));
  snprintf(p, sizeof p, "%s.mid_block.attentions.0.", side);
  CK(sd_load_attn(ck, SD_VAE, p, ch, ch, 1, true, &mid->attn));
  snprintf(p, sizeof p, "%s.mid_block.resnets.1.", side);
  return sd_load_resnet(ck, SD_VAE, p, ch, ch, 0, groups, EPS, &mid->res[1]);
}

static int load_all(sd_ckpt *ck, sd_vae *m) {
  const sd_vae_cfg *c = &m->cfg;
  const int n = c->n_levels, L = c->layers_per_block, g = c->norm_groups;
  const int64_t lat = c->latent_channels;
  char p[256];
  /* encoder */
  int64_t ch = c->channels[0];
  CK(sd_load_conv(ck, SD_VAE, "encoder.conv_in.", c->in_channels, ch, 3, 1, 1,
                  &m->enc.conv_in));
  for (int i = 0; i < n; i++) {
    vlevel *lv = &m->enc.lv[i];
    lv->n = L;
    lv->cout = c->channels[i];
    if (!(lv->res = calloc((size_t)L, sizeof *lv->res))) return WEFT_ENOMEM;
    for (int j = 0; j < L; j++) {
      snprintf(p, sizeof p, "encoder.down_blocks.%d.resnets.%d.", i, j);
      CK(sd_load_resnet(ck, SD_VAE, p, ch, lv->cout, 0, g, EPS, &lv->res[j]));
      ch = lv->cout;
    }
    if (i < n - 1) {
      snprintf(p, sizeof p, "encoder.down_blocks.%d.downsamplers.0.conv.", i);
      CK(sd_load_conv(ck, SD_VAE, p, ch, ch, 3, 2, 0, &lv->sample));
      lv->has_sample = true;
    }
  }
  CK(load_mid(ck, "encoder", ch, g, &m->enc.mid));
  CK(sd_load_norm(ck, SD_VAE, "encoder.conv_norm_out.", ch, &m->enc.norm_out));
  CK(sd_load_conv(ck, SD_VAE, "encoder.conv_out.", ch, 2 * lat, 3, 1, 1,
                  &m->enc.conv_out));
  if (c->quant_conv)
    CK(sd_load_conv(ck, SD_VAE, "quant_conv.", 2 * lat, 2 * lat, 1, 1, 0,
                    &m->quant));
  /* decoder */
  if (c->post_quant_conv)
    CK(sd_load_conv(ck, SD_VAE, "post_quant_conv.", lat, lat, 1, 1, 0,
                    &m->post_quant));
  ch = c->channels[n - 1];
  CK(sd_load_conv(ck, SD_VAE, "decoder.conv_in.", lat, ch, 3, 1, 1,
                  &m->dec.conv_in));
  CK(load_mid(ck, "decoder", ch, g, &m->dec.mid));
  for (int i = 0; i < n; i++) {
    vlevel *lv = &m->dec.lv[i];
    lv->n = L + 1;
    lv->cout = c->channels[n - 1 - i];
    if (!(lv->res = calloc((size_t)(L + 1), sizeof *lv->res)))
      return WEFT_ENOMEM;
    for (int j = 0; j <= L; j++) {
      snprintf(p, sizeof p, "decoder.up_blocks.%d.resnets.%d.", i, j);
      CK(sd_load_resnet(ck, SD_VAE, p, ch, lv->cout, 0, g, EPS, &lv->res[j]));
      ch = lv->cout;
    }
    if (i < n - 1) {
      snprintf(p, sizeof p, "decoder.up_blocks.%d.upsamplers.0.conv.", i);
      CK(sd_load_conv(ck, SD_VAE, p, ch, ch, 3, 1, 1, &lv->sample));
      lv->has_sample = true;
    }
  }
  CK(sd_load_norm(ck, SD_VAE, "decoder.conv_norm_out.", ch, &m->dec.norm_out));
  return sd_load_conv(ck, SD_VAE, "decoder.conv_out.", ch, c->out_channels, 3,
                      1, 1, &m->dec.conv_out);
}

int sd_vae_load(sd_ckpt *ck, sd_vae **out) {
  *out = NULL;
  sd_vae *m = calloc(1, sizeof *m);
  if (!m) return WEFT_ENOMEM;
  m->cfg = ck->vae;
  int r = load_all(ck, m);
  if (r) {
    sd_vae_free(m);
    return r;
  }
  *out = m;
  return 0;
}

/* ---- forward --------------------------------------------------------------
 */

/* x <- x + attn(group_norm(x)), one head over the h*w pixels */
static int run_mid_attn(weft_backend *be, const vmid *mid, int groups, float *x,
                        int64_t b, int64_t ch, int64_t hw) {
  float *n = sd_alloc(be, b * ch * hw), *t = sd_alloc(be, b * hw * ch);
  int rc = 0;
  if (!n || !t) {
    rc = WEFT_ENOMEM;
    goto out;
  }
  const sd_attn *a = &mid->attn;
  float *q = NULL, *k = NULL, *v = NULL;
  if ((rc = be->iface->group_norm(be, x, n, b, ch, hw, groups, EPS, mid->norm.g,
                                  mid->norm.b, WEFT_ACT_NONE)))
    goto out;
  q = sd_alloc(be, b * hw * ch), k = sd_alloc(be, b * hw * ch);
  v = sd_alloc(be, b * hw * ch);
  if (!q || !k || !v) {
    rc = WEFT_ENOMEM;
  } else if (!(rc = sd_run_linear_from_nchw(be, &a->q, n, b, hw, q)) &&
             !(rc = sd_run_linear_from_nchw(be, &a->k, n, b, hw, k)) &&
             !(rc = sd_run_linear_from_nchw(be, &a->v, n, b, hw, v))) {
    weft_attn_args at = {.batch = b,
                         .heads = 1,
                         .lq = hw,
                         .lk = hw,
                         .d = ch,
                         .dv = ch,
                         .q = q,
                         .q_s = weft_attn_strides_bhld(1, hw, ch),
                         .k = k,
                         .k_s = weft_attn_strides_bhld(1, hw, ch),
                         .v = v,
                         .v_s = weft_attn_strides_bhld(1, hw, ch),
                         .o = t,
                         .o_s = weft_attn_strides_bhld(1, hw, ch)};
    if (!(rc = be->iface->attention(be, &at)))
      rc = sd_run_linear_to_nchw(be, &a->out, t, b, hw, true, x);
  }
  sd_free(be, q), sd_free(be, k), sd_free(be, v);
out:
  sd_free(be, n), sd_free(be, t);
  return rc;
}

/* The same on channels-last x [b, hw, ch]: the normalized pixels are the
 * token rows of the projections, no moves */
static int run_mid_attn_cl(weft_backend *be, const vmid *mid, int groups,
                           float *x, int64_t b, int64_t ch, int64_t hw) {
  float *n = sd_alloc(be, b * hw * ch);
  if (!n) return WEFT_ENOMEM;
  int rc = sd_group_norm(be, true, x, n, b, ch, hw, groups, EPS, &mid->norm,
                         WEFT_ACT_NONE);
  if (!rc)
    rc = sd_run_attn(be, &mid->attn, n, b, hw, NULL, 0, false, true, NULL, x);
  sd_free(be, n);
  return rc;
}

/* cur (owned) through resnets -> returns the new owned buffer in *cur */
static int run_resnets(weft_backend *be, const vlevel *lv, float **cur,
                       int64_t b, int64_t h, int64_t w, bool cl) {
  for (int j = 0; j < lv->n; j++) {
    int rc = sd_run_resnet_owned(be, &lv->res[j], *cur, b, h, w, NULL, cl, cur);
    if (rc) return rc;
  }
  return 0;
}

static int run_mid(weft_backend *be, const vmid *mid, int groups, float **cur,
                   int64_t b, int64_t ch, int64_t h, int64_t w, bool cl) {
  for (int r = 0; r < 2; r++) {
    int rc =
        sd_run_resnet_owned(be, &mid->res[r], *cur, b, h, w, NULL, cl, cur);
    if (rc) return rc;
    if (r == 0)
      CK((cl ? run_mid_attn_cl : run_mid_attn)(be, mid, groups, *cur, b, ch,
                                               h * w));
  }
  return 0;
}

/* norm_out + SiLU + conv_out (cur channels last with cl; y channels
 * first) */
static int run_out(weft_backend *be, const vside *s, int groups, float *cur,
                   int64_t b, int64_t ch, int64_t h, int64_t w, bool cl,
                   float *y) {
  int64_t ho, wo;
  CK(sd_group_norm(be, cl, cur, cur, b, ch, h * w, groups, EPS, &s->norm_out,
                   WEFT_ACT_SILU));
  return sd_run_conv_cl(be, &s->conv_out, cur, cl, b, h, w, y, false, &ho, &wo);
}

/* Whether the decoder keeps its maps channels last between its layers
 * (sd_cl_wanted) */
static bool dec_cl(const sd_vae *m, weft_backend *be) {
  return sd_cl_wanted(be, m->dec.mid.res[0].conv1.w_hwc);
}

/* the passes on backend memory */
static int encode(sd_vae *m, weft_backend *be, const float *image, int64_t b,
                  int64_t h, int64_t w, float *moments) {
  const sd_vae_cfg *c = &m->cfg;
  const int n = c->n_levels, g = c->norm_groups;
  int64_t ho, wo, ch = c->channels[0];
  float *cur = sd_alloc(be, b * ch * h * w);
  if (!cur) return WEFT_ENOMEM;
  int rc = sd_devw_use(m->dw, BLK_ENC_DOWN(0));
  if (!rc) rc = sd_run_conv(be, &m->enc.conv_in, image, b, h, w, cur, &ho, &wo);
  for (int i = 0; i < n && !rc; i++) {
    const vlevel *lv = &m->enc.lv[i];
    if ((i && (rc = sd_devw_use(m->dw, BLK_ENC_DOWN(i)))) ||
        (rc = run_resnets(be, lv, &cur, b, h, w, false)))
      break;
    ch = lv->cout;
    if (lv->has_sample) {
      float *nx = sd_alloc(be, b * ch * (h / 2) * (w / 2));
      if (!nx) {
        rc = WEFT_ENOMEM;
        break;
      }
      rc = sd_run_conv_pad_br(be, &lv->sample, cur, b, h, w, nx, &ho, &wo);
      sd_free(be, cur);
      cur = nx, h = ho, w = wo;
    }
  }
  if (!rc) rc = sd_devw_use(m->dw, BLK_ENC_OUT(n));
  if (!rc) rc = run_mid(be, &m->enc.mid, g, &cur, b, ch, h, w, false);
  int64_t lat2 = 2 * c->latent_channels;
  float *mo = rc ? NULL : sd_alloc(be, b * lat2 * h * w);
  if (!rc && !mo) rc = WEFT_ENOMEM;
  if (!rc)
    rc = run_out(be, &m->enc, g, cur, b, ch, h, w, false,
                 c->quant_conv ? mo : moments);
  if (!rc && c->quant_conv)
    rc = sd_run_conv(be, &m->quant, mo, b, h, w, moments, &ho, &wo);
  sd_free(be, mo);
  sd_free(be, cur);
  return rc;
}

static int decode(sd_vae *m, weft_backend *be, const float *latent, int64_t b,
                  int64_t h, int64_t w, float *image) {
  const sd_vae_cfg *c = &m->cfg;
  const int n = c->n_levels, g = c->norm_groups;
  const int64_t lat = c->latent_channels;
  int64_t ho, wo, ch = c->channels[n - 1];
  float *z = NULL;
  const float *in = latent;
  int rc = sd_devw_use(m->dw, BLK_DEC_IN(n));
  if (rc) return rc;
  if (c->post_quant_conv) {
    if (!(z = sd_alloc(be, b * lat * h * w))) return WEFT_ENOMEM;
    if ((rc = sd_run_conv(be, &m->post_quant, latent, b, h, w, z, &ho, &wo))) {
      sd_free(be, z);
      return rc;
    }
    in = z;
  }
  float *cur = sd_alloc(be, b * ch * h * w);
  if (!cur) {
    sd_free(be, z);
    return WEFT_ENOMEM;
  }
  /* channels last from conv_in's output to conv_out's input, with cl */
  const bool cl = dec_cl(m, be);
  rc = sd_run_conv_cl(be, &m->dec.conv_in, in, false, b, h, w, cur, cl, &ho,
                      &wo);
  sd_free(be, z);
  if (!rc) rc = run_mid(be, &m->dec.mid, g, &cur, b, ch, h, w, cl);
  for (int i = 0; i < n && !rc; i++) {
    const vlevel *lv = &m->dec.lv[i];
    if ((rc = sd_devw_use(m->dw, BLK_DEC_UP(n, i))) ||
        (rc = run_resnets(be, lv, &cur, b, h, w, cl)))
      break;
    ch = lv->cout;
    if (lv->has_sample) {
      /* cur goes once upsampled: two maps of the larger size live */
      float *u = sd_alloc(be, b * ch * 4 * h * w);
      rc = u ? sd_upsample_nearest(be, cl, cur, u, b, ch, h, w, 2 * h, 2 * w)
             : WEFT_ENOMEM;
      sd_free(be, cur);
      cur = NULL;
      h *= 2, w *= 2;
      if (!rc && !(cur = sd_alloc(be, b * ch * h * w))) rc = WEFT_ENOMEM;
      if (!rc)
        rc = sd_run_conv_cl(be, &lv->sample, u, cl, b, h, w, cur, cl, &ho, &wo);
      sd_free(be, u);
    }
  }
  if (!rc) rc = sd_devw_use(m->dw, BLK_DEC_OUT(n));
  if (!rc) rc = run_out(be, &m->dec, g, cur, b, ch, h, w, cl, image);
  sd_free(be, cur);
  return rc;
}

/* host I/O (sd_device.h): on the CPU the pointers pass through */
int sd_vae_encode(sd_vae *m, weft_backend *be, const float *image, int64_t b,
                  int64_t h, int64_t w, float *moments) {
  const sd_vae_cfg *c = &m->cfg;
  int64_t f = sd_vae_factor(m);
  if (h % f || w % f || !sd_devw_fits(m->dw, be)) return WEFT_EINVAL;
  const int64_t nm = b * 2 * c->latent_channels * (h / f) * (w / f);
  const float *in;
  float *in_tmp, *out, *out_tmp = NULL;
  int rc = sd_io_in(be, image, b * c->in_channels * h * w, &in, &in_tmp);
  if (!rc) rc = sd_io_out(be, moments, nm, &out, &out_tmp);
  if (!rc) rc = encode(m, be, in, b, h, w, out);
  rc = sd_io_done(be, rc, moments, out_tmp, nm);
  sd_free(be, in_tmp);
  return rc;
}

int sd_vae_decode(sd_vae *m, weft_backend *be, const float *latent, int64_t b,
                  int64_t h, int64_t w, float *image) {
  return sd_vae_decode_from(m, be, latent, false, b, h, w, image);
}

int sd_vae_decode_from(sd_vae *m, weft_backend *be, const float *latent,
                       bool on_device, int64_t b, int64_t h, int64_t w,
                       float *image) {
  const sd_vae_cfg *c = &m->cfg;
  int64_t f = sd_vae_factor(m);
  if (!sd_devw_fits(m->dw, be)) return WEFT_EINVAL;
  const int64_t ni = b * c->out_channels * h * f * w * f;
  const float *in = latent;
  float *in_tmp = NULL, *out, *out_tmp = NULL;
  const int64_t nl = b * c->latent_channels * h * w;
  int rc = on_device ? sd_io_in_dev(be, latent, nl, &in, &in_tmp)
                     : sd_io_in(be, latent, nl, &in, &in_tmp);
  if (!rc) rc = sd_io_out(be, image, ni, &out, &out_tmp);
  if (!rc) rc = decode(m, be, in, b, h, w, out);
  rc = sd_io_done(be, rc, image, out_tmp, ni);
  sd_free(be, in_tmp);
  return rc;
}
