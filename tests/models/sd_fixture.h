/* sd_fixture.h - opens the tiny SD1.5 fixture model in either layout for the
 * model tests, reading files with the safetensors reader directly. */
#ifndef WEFT_TEST_SD_FIXTURE_H
#define WEFT_TEST_SD_FIXTURE_H

#include <math.h>

#include "kernels/backend.h"
#include "sd.h"
#include "test.h"
#include "weft/safetensors.h"

static int fx_get(void *h, const char *key, weft_tensor *v) {
  const weft_st_tensor *t = weft_st_find(h, key);
  return t ? weft_st_view(t, v) : WEFT_ENOENT;
}
static const char *fx_meta(void *h, const char *key) {
  return weft_st_meta(h, key);
}
static int32_t fx_count(void *h) { return weft_st_count(h); }
static const char *fx_key(void *h, int32_t i) {
  return weft_st_at(h, i)->key;
}

static inline weft_st_file *fx_open(const char *rel) {
  char path[4096], err[1024];
  snprintf(path, sizeof path, "%s/fixtures/sd15_tiny/%s", weft_test_srcdir(),
           rel);
  weft_st_file *f = NULL;
  int r = weft_st_open(path, &f, err, sizeof err);
  if (r) fprintf(stderr, "%s\n", err);
  ASSERT_OK(r);
  return f;
}

static inline sd_file fx_file(weft_st_file *f) {
  return (sd_file){f, fx_get, fx_meta, fx_count, fx_key, weft_st_path(f)};
}

typedef struct fx_model {
  sd_ckpt ck;
  weft_st_file *files[SD_PARTS];
  char *json[SD_PARTS];
} fx_model;

/* layout: SD_LAYOUT_LDM (sd15_tiny.safetensors) or SD_LAYOUT_DIFFUSERS */
static inline void fx_model_open(fx_model *m, sd_layout layout) {
  memset(m, 0, sizeof *m);
  m->ck.layout = layout;
  if (layout == SD_LAYOUT_LDM) {
    weft_st_file *f = fx_open("sd15_tiny.safetensors");
    m->files[0] = f;
    for (int p = 0; p < SD_PARTS; p++) {
      m->ck.files[p] = fx_file(f);
      m->ck.has[p] = true;
    }
  } else {
    static const char *const dirs[SD_PARTS] = {"unet", "vae", "text_encoder"};
    static const char *const names[SD_PARTS] = {
        "diffusion_pytorch_model.safetensors",
        "diffusion_pytorch_model.safetensors", "model.safetensors"};
    for (int p = 0; p < SD_PARTS; p++) {
      char rel[256], cfg[4096];
      snprintf(rel, sizeof rel, "diffusers/%s/%s", dirs[p], names[p]);
      m->files[p] = fx_open(rel);
      m->ck.files[p] = fx_file(m->files[p]);
      m->ck.has[p] = true;
      snprintf(cfg, sizeof cfg, "%s/fixtures/sd15_tiny/diffusers/%s/config.json",
               weft_test_srcdir(), dirs[p]);
      m->json[p] = weft_test_read_file(cfg, NULL);
      ASSERT(m->json[p] != NULL);
    }
  }
  int r = sd_ckpt_configure(&m->ck, (const char *const *)m->json);
  if (r) fprintf(stderr, "%s\n", m->ck.err);
  ASSERT_OK(r);
}

static inline void fx_model_close(fx_model *m) {
  sd_ckpt_release(&m->ck);
  sd_ckpt_free_params(&m->ck);
  for (int p = 0; p < SD_PARTS; p++) {
    if (m->files[p]) weft_st_close(m->files[p]);
    free(m->json[p]);
  }
}

/* max |a - b| over n floats */
static inline double max_abs_diff(const float *a, const float *b, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - (double)b[i]);
    if (!(d <= m)) m = d; /* NaN wins */
  }
  return m;
}

#endif
