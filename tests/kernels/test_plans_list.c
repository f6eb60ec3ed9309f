/* test_plans_list.c - the kept plan list's text (kernels/cuda/plans_list.c,
 * plain C: tested here on any host; the GPU cases in test_cuda.c check
 * that the plans it names are made ahead). */
#include "kernels/cuda/plans_list.h"

#include "test.h"

#define HEAD "weft plans 1; cuDNN 91900; cuBLASLt 130100; sm 90"

/* an SD1.5 UNet band, a cross-attention and a 16-bit product with the
 * bias epilogue, as the caches key them */
static const int64_t conv_key[18] = {1, 0, 2, 320, 66, 66, 320, 3, 3,
                                     1, 1, 0, 0,   0,  0,  0,   0, 1};
static const int64_t attn_key[18] = {1,       2,  8,   4096,    77, 40,
                                     1310720, 40, 320, 61600,   40, 320,
                                     61600,   40, 320, 1310720, 40, 320};
static const int64_t lt_key[20] = {1, 1,   0,   1,    8192,     1280, 320,
                                   1, 320, 320, 1280, 0,        0,    0,
                                   1, 256, 256, 256,  33554432, 1};

typedef struct got {
  int n;
  int kind[8];
  int64_t key[8][WEFT__KEPT_KEY_MAX];
} got;

static void collect(void *user, int kind, const int64_t *key) {
  got *g = user;
  if (g->n < 8) {
    g->kind[g->n] = kind;
    memcpy(g->key[g->n], key, (size_t)weft__kept_key_len[kind] * sizeof *key);
  }
  g->n++;
}

/* HEAD and the three lines, formatted */
static size_t three(char *buf, size_t n) {
  size_t len = (size_t)snprintf(buf, n, "%s\n", HEAD);
  len += weft__plans_format(buf + len, n - len, WEFT__KEPT_CONV, conv_key);
  len += weft__plans_format(buf + len, n - len, WEFT__KEPT_ATTN, attn_key);
  len += weft__plans_format(buf + len, n - len, WEFT__KEPT_LT, lt_key);
  return len;
}

TEST(plan_lists_read_back_what_they_were_written_with) {
  char buf[2048];
  size_t len = three(buf, sizeof buf);
  ASSERT(!memcmp(buf + strlen(HEAD) + 1,
                 "conv 1 0 2 320 66 66 320 3 3 1 1 0 0 0 0 0 0 1\n", 47));
  got g = {0};
  ASSERT_EQ(weft__plans_parse(buf, len, HEAD, collect, &g), 3);
  ASSERT_EQ(g.n, 3);
  ASSERT_EQ(g.kind[0], WEFT__KEPT_CONV);
  ASSERT_EQ(g.kind[1], WEFT__KEPT_ATTN);
  ASSERT_EQ(g.kind[2], WEFT__KEPT_LT);
  ASSERT(!memcmp(g.key[0], conv_key, sizeof conv_key));
  ASSERT(!memcmp(g.key[1], attn_key, sizeof attn_key));
  ASSERT(!memcmp(g.key[2], lt_key, sizeof lt_key));
  /* a line cut short of its newline (a writer that died) is not read */
  g.n = 0;
  ASSERT_EQ(weft__plans_parse(buf, len - 1, HEAD, collect, &g), 2);
  ASSERT_EQ(g.n, 2);
  /* too small a buffer formats nothing */
  char small[16];
  ASSERT_EQ(weft__plans_format(small, sizeof small, WEFT__KEPT_LT, lt_key), 0);
  ASSERT_EQ(weft__plans_format(small, sizeof small, 7, lt_key), 0);
}

TEST(plan_lists_of_another_library_or_device_are_not_read) {
  char buf[2048];
  size_t len = three(buf, sizeof buf);
  got g = {0};
  ASSERT_EQ(weft__plans_parse(buf, len, HEAD " ", collect, &g), -1);
  ASSERT_EQ(weft__plans_parse(
                buf, len, "weft plans 1; cuDNN 91900; cuBLASLt 130100; sm 9",
                collect, &g),
            -1);
  ASSERT_EQ(weft__plans_parse(buf, strlen(HEAD), HEAD, collect, &g), -1);
  ASSERT_EQ(weft__plans_parse("", 0, HEAD, collect, &g), -1);
  ASSERT_EQ(g.n, 0);
}

/* buf's second line replaced by line: how many lines parse */
static int with_line(const char *line) {
  char buf[2048];
  size_t len = (size_t)snprintf(buf, sizeof buf, "%s\n", HEAD);
  len += weft__plans_format(buf + len, sizeof buf - len, WEFT__KEPT_CONV,
                            conv_key);
  len += (size_t)snprintf(buf + len, sizeof buf - len, "%s\n", line);
  len += weft__plans_format(buf + len, sizeof buf - len, WEFT__KEPT_LT, lt_key);
  got g = {0};
  int n = weft__plans_parse(buf, len, HEAD, collect, &g);
  ASSERT_EQ(g.n, n);
  return n;
}

TEST(plan_lists_stop_at_the_first_line_out_of_place) {
  char ok[512];
  weft__plans_format(ok, sizeof ok, WEFT__KEPT_LT, lt_key);
  ok[strlen(ok) - 1] = 0;
  ASSERT_EQ(with_line(ok), 3);
  /* every way a line can be wrong: the list ends before it */
  const char *bad[] = {
      "",
      "lt",
      "mm 1 1 0 1 8192 1280 320 1 320 320 1280 0 0 0 1 256 256 256 33554432 1",
      "lt  1 1 0 1 8192 1280 320 1 320 320 1280 0 0 0 1 256 256 256 33554432 1",
      "lt 1 1 0 1 8192 1280 320 1 320 320 1280 0 0 0 1 256 256 256 33554432",
      "lt 1 1 0 1 8192 1280 320 1 320 320 1280 0 0 0 1 256 256 256 33554432 1 "
      "1",
      "lt 1 1 0 1 8192 1280 320 1 320 320 1280 0 0 0 1 256 256 256 33554432 1 ",
      "lt 1 1 0 1 -8192 1280 320 1 320 320 1280 0 0 0 1 256 256 256 33554432 1",
      "lt 1 1 0 1 8192x 1280 320 1 320 320 1280 0 0 0 1 256 256 256 33554432 1",
      "lt 1 1 0 1 99999999999999999999 1280 320 1 320 320 1280 0 0 0 1 256 256 "
      "256 33554432 1",
      "conv\t1 0 2 320 66 66 320 3 3 1 1 0 0 0 0 0 0 1",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (with_line(bad[i]) != 1) {
      fprintf(stderr, "line %zu: '%s'\n", i, bad[i]);
      ASSERT(0);
    }
  }
}

/* key with value v at i: whether it is taken */
static bool conv_with(int i, int64_t v) {
  int64_t k[18];
  memcpy(k, conv_key, sizeof k);
  k[i] = v;
  return weft__plans_key_ok(WEFT__KEPT_CONV, k);
}

static bool attn_with(int i, int64_t v) {
  int64_t k[18];
  memcpy(k, attn_key, sizeof k);
  k[i] = v;
  return weft__plans_key_ok(WEFT__KEPT_ATTN, k);
}

static bool lt_with(int i, int64_t v) {
  int64_t k[20];
  memcpy(k, lt_key, sizeof k);
  k[i] = v;
  return weft__plans_key_ok(WEFT__KEPT_LT, k);
}

TEST(plan_keys_out_of_the_caches_ranges_are_refused) {
  ASSERT(weft__plans_key_ok(WEFT__KEPT_CONV, conv_key));
  ASSERT(weft__plans_key_ok(WEFT__KEPT_ATTN, attn_key));
  ASSERT(weft__plans_key_ok(WEFT__KEPT_LT, lt_key));
  ASSERT(!weft__plans_key_ok(WEFT__KEPT_KINDS, lt_key));
  ASSERT(!weft__plans_key_ok(-1, lt_key));
  /* conv: 16-bit dtypes, sizes up to 65536, a kernel no larger than the
   * band, no padding (bands are padded already), channels last */
  ASSERT(conv_with(0, 2) && !conv_with(0, 0) && !conv_with(0, 3));
  ASSERT(conv_with(2, 65536) && !conv_with(2, 65537) && !conv_with(2, 0));
  ASSERT(!conv_with(3, -320) && !conv_with(6, INT64_MAX));
  ASSERT(!conv_with(4, 2) && conv_with(4, 3));
  ASSERT(!conv_with(7, 32) && !conv_with(9, 0) && !conv_with(10, 17));
  for (int i = 11; i < 17; i++)
    ASSERT(!conv_with(i, 1));
  ASSERT(!conv_with(17, 0));
  /* attention: d a multiple of 8 up to 256, strides multiples of 8 */
  ASSERT(attn_with(5, 160) && !attn_with(5, 44) && !attn_with(5, 264));
  ASSERT(!attn_with(5, 0) && !attn_with(2, 0) && !attn_with(3, 0));
  ASSERT(!attn_with(6, 12) && !attn_with(17, -8));
  ASSERT(!attn_with(9, (int64_t)1 << 41));
  /* cuBLASLt: C in fp32 or A's dtype, flags 0/1, sizes under 2^31,
   * alignments powers of two to 256, the trailing 1 */
  ASSERT(lt_with(1, 0) && !lt_with(1, 2) && !lt_with(2, 2));
  ASSERT(!lt_with(4, 0) && !lt_with(6, (int64_t)1 << 31));
  ASSERT(!lt_with(8, 0) && !lt_with(11, -1));
  ASSERT(lt_with(15, 2) && !lt_with(15, 1) && !lt_with(16, 24));
  ASSERT(!lt_with(17, 512) && !lt_with(18, -1) && !lt_with(19, 0));
}

static void count(void *user, int kind, const int64_t *key) {
  (void)kind, (void)key;
  (*(int *)user)++;
}

TEST(plan_lists_are_read_to_their_cap) {
  const size_t line = 128, n = WEFT__KEPT_MAX_PLANS + 10;
  char *buf = malloc(strlen(HEAD) + 1 + n * line);
  ASSERT(buf);
  size_t len = (size_t)sprintf(buf, "%s\n", HEAD);
  for (size_t i = 0; i < n; i++)
    len += weft__plans_format(buf + len, line, WEFT__KEPT_CONV, conv_key);
  int calls = 0;
  ASSERT_EQ(weft__plans_parse(buf, len, HEAD, count, &calls),
            WEFT__KEPT_MAX_PLANS);
  ASSERT_EQ(calls, WEFT__KEPT_MAX_PLANS);
  free(buf);
}
