/* fixture.h - opening the sd15_tiny golden fixtures from a test. */
#ifndef WEFT_TEST_SAMPLER_FIXTURE_H
#define WEFT_TEST_SAMPLER_FIXTURE_H

#include "test.h"
#include "weft/safetensors.h"

static inline weft_st_file *open_fixture(const char *name) {
  char path[4096], err[1024];
  snprintf(path, sizeof path, "%s/fixtures/sd15_tiny/%s", weft_test_srcdir(),
           name);
  weft_st_file *f = NULL;
  int r = weft_st_open(path, &f, err, sizeof err);
  if (r) fprintf(stderr, "%s\n", err);
  ASSERT_OK(r);
  return f;
}

/* The tensor under key (must exist); *n gets its element count. */
static inline const void *fixture_tensor(weft_st_file *f, const char *key,
                                         int64_t *n) {
  const weft_st_tensor *t = weft_st_find(f, key);
  if (!t) fprintf(stderr, "fixture has no tensor '%s'\n", key);
  ASSERT(t != NULL);
  if (n) *n = (int64_t)(t->nbytes / weft_st_dtype_size(t->dtype));
  return t->data;
}

#endif
