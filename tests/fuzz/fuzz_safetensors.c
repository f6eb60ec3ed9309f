/* fuzz_safetensors.c - libFuzzer target for the safetensors reader: any
 * input either fails to open with a message or yields tensors whose every
 * byte range, key and metadata entry can be read without leaving the
 * buffer (ASan checks the first and last byte of each tensor). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "weft/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  weft_st_file *f = NULL;
  char err[512];
  err[0] = '\0';
  int rc = weft_st_open_memory(data, size, "fuzz", &f, err, sizeof err);
  if (rc != 0) {
    /* a failure always says where and why */
    if (f != NULL || strncmp(err, "fuzz: ", 6) != 0) __builtin_trap();
    return 0;
  }
  volatile uint8_t sink = 0;
  uint64_t total = 0;
  for (int32_t i = 0; i < weft_st_count(f); i++) {
    const weft_st_tensor *t = weft_st_at(f, i);
    const uint8_t *p = t->data;
    if (t->nbytes) {
      if (p < data || p + t->nbytes > data + size) __builtin_trap();
      sink ^= p[0];
      sink ^= p[t->nbytes - 1];
    }
    total += t->nbytes;
    if (weft_st_find(f, t->key) != t) __builtin_trap();
    sink ^= (uint8_t)strlen(t->key);
    sink ^= (uint8_t)strlen(weft_st_dtype_name(t->dtype));
    weft_tensor v;
    (void)weft_st_view(t, &v);
  }
  if (total > size) __builtin_trap();
  for (int32_t i = 0; i < weft_st_meta_count(f); i++) {
    const char *k = weft_st_meta_key(f, i);
    if (weft_st_meta(f, k) != weft_st_meta_value(f, i)) __builtin_trap();
    sink ^= (uint8_t)strlen(weft_st_meta_value(f, i));
  }
  sink ^= (uint8_t)strlen(weft_st_guess_family(f));
  (void)sink;
  weft_st_close(f);
  return 0;
}
