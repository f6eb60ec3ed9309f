/* fuzz_plans.c - libFuzzer target for the kept plan list's reader
 * (kernels/cuda/plans_list.c): any input either fails its header or gives
 * keys every value of which lies in its kind's ranges, in a number of
 * lines no larger than the cap, and reads nothing outside the input. */
#include <stdint.h>
#include <string.h>

#include "kernels/cuda/plans_list.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HEAD "weft plans 1; cuDNN 91900; cuBLASLt 130100; sm 90"

static void check(void *user, int kind, const int64_t *key) {
  int *n = user;
  if (kind < 0 || kind >= WEFT__KEPT_KINDS || !weft__plans_key_ok(kind, key))
    __builtin_trap();
  /* a key read is one the writer writes again, byte for byte */
  char line[32 + WEFT__KEPT_KEY_MAX * 21];
  if (!weft__plans_format(line, sizeof line, kind, key)) __builtin_trap();
  (*n)++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int n = 0;
  int got = weft__plans_parse((const char *)data, size, HEAD, check, &n);
  if (got != n && !(got == -1 && n == 0)) __builtin_trap();
  if (got > WEFT__KEPT_MAX_PLANS) __builtin_trap();
  return 0;
}
