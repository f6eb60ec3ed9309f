/* plans_list.c - a kept plan list's text (plans_list.h). */
#include "plans_list.h"

#include <stdio.h>
#include <string.h>

#include "weft/plugin.h"

static const char *const kind_name[WEFT__KEPT_KINDS] = {"conv", "attn", "lt"};
const int weft__kept_key_len[WEFT__KEPT_KINDS] = {18, 18, 20};

size_t weft__plans_format(char *out, size_t n, int kind, const int64_t *key) {
  if (kind < 0 || kind >= WEFT__KEPT_KINDS || !n) return 0;
  int w = snprintf(out, n, "%s", kind_name[kind]);
  for (int i = 0; i < weft__kept_key_len[kind] && w > 0 && (size_t)w < n; i++)
    w += snprintf(out + w, n - (size_t)w, " %lld", (long long)key[i]);
  if (w <= 0 || (size_t)w + 1 >= n) return 0;
  out[w++] = '\n';
  out[w] = 0;
  return (size_t)w;
}

static bool in(int64_t v, int64_t lo, int64_t hi) {
  return v >= lo && v <= hi;
}

static bool half_dtype(int64_t v) {
  return v == WEFT_F16 || v == WEFT_BF16;
}

#define I32 INT64_C(2147483647)

/* conv_cudnn.c's plan_key of an unpadded channels-last band (g_plan's):
 * dt, tf32, batch, c_in, h_in, w_in, c_out, k_h, k_w, stride_h, stride_w,
 * pad_top, pad_left, the view's four strides (0) and nhwc (1) */
static bool conv_ok(const int64_t *k) {
  const int64_t S = 65536;
  if (!half_dtype(k[0]) || !in(k[1], 0, 1) || !in(k[2], 1, S) ||
      !in(k[3], 1, S) || !in(k[4], 1, S) || !in(k[5], 1, S) ||
      !in(k[6], 1, S) || !in(k[7], 1, 31) || !in(k[8], 1, 31) ||
      !in(k[9], 1, 16) || !in(k[10], 1, 16) || k[4] < k[7] || k[5] < k[8])
    return false;
  for (int i = 11; i < 17; i++)
    if (k[i] != 0) return false;
  return k[17] == 1;
}

/* attn_cudnn.c's key: the activations' dtype, batch, heads, lq, lk, d and
 * q's, k's, v's and o's batch, head and row strides (elements, multiples
 * of 8: 16-byte rows) */
static bool attn_ok(const int64_t *k) {
  if (!half_dtype(k[0]) || !in(k[1], 1, 65536) || !in(k[2], 1, 1024) ||
      !in(k[3], 1, 1 << 24) || !in(k[4], 1, 1 << 24) || !in(k[5], 8, 256) ||
      k[5] % 8)
    return false;
  for (int i = 6; i < 18; i++)
    if (!in(k[i], 0, INT64_C(1) << 40) || k[i] % 8) return false;
  return true;
}

/* gemm_lt.c's key: dt, c_dt, trans_a, trans_b, m, n, k, batch, lda, ldb,
 * ldc, sa, sb, sc, epilogue, the alignments of A, B and C (bytes: powers
 * of two up to 256), the workspace bytes and 1 */
static bool lt_ok(const int64_t *k) {
  if (!half_dtype(k[0]) || (k[1] != WEFT_F32 && k[1] != k[0]) ||
      !in(k[2], 0, 1) || !in(k[3], 0, 1) || !in(k[14], 0, 1) ||
      !in(k[18], 0, INT64_C(1) << 32) || k[19] != 1)
    return false;
  for (int i = 4; i < 11; i++)
    if (!in(k[i], 1, I32)) return false;
  for (int i = 11; i < 14; i++)
    if (!in(k[i], 0, INT64_C(1) << 40)) return false;
  for (int i = 15; i < 18; i++)
    if (!in(k[i], 2, 256) || (k[i] & (k[i] - 1))) return false;
  return true;
}

bool weft__plans_key_ok(int kind, const int64_t *key) {
  switch (kind) {
  case WEFT__KEPT_CONV: return conv_ok(key);
  case WEFT__KEPT_ATTN: return attn_ok(key);
  case WEFT__KEPT_LT: return lt_ok(key);
  default: return false;
  }
}

/* One line s[0, n) (no newline): its kind and key, or -1. */
static int parse_line(const char *s, size_t n, int64_t *key) {
  int kind = -1;
  size_t at = 0;
  for (int i = 0; i < WEFT__KEPT_KINDS && kind < 0; i++) {
    const size_t l = strlen(kind_name[i]);
    if (n > l && !memcmp(s, kind_name[i], l) && s[l] == ' ') kind = i, at = l;
  }
  if (kind < 0) return -1;
  for (int i = 0; i < weft__kept_key_len[kind]; i++) {
    if (at >= n || s[at] != ' ') return -1;
    at++;
    if (at >= n || s[at] < '0' || s[at] > '9') return -1;
    uint64_t v = 0;
    for (; at < n && s[at] >= '0' && s[at] <= '9'; at++) {
      v = v * 10 + (uint64_t)(s[at] - '0');
      if (v > (uint64_t)INT64_MAX) return -1;
    }
    key[i] = (int64_t)v; /* no key holds a negative value */
  }
  if (at != n) return -1;
  return weft__plans_key_ok(kind, key) ? kind : -1;
}

int weft__plans_parse(const char *buf, size_t n, const char *head,
                      void (*fn)(void *user, int kind, const int64_t *key),
                      void *user) {
  const size_t hl = strlen(head);
  if (n <= hl || memcmp(buf, head, hl) || buf[hl] != '\n') return -1;
  int got = 0;
  for (size_t at = hl + 1; at < n && got < WEFT__KEPT_MAX_PLANS;) {
    const char *nl = memchr(buf + at, '\n', n - at);
    if (!nl) break; /* a last line without its newline: cut short */
    int64_t key[WEFT__KEPT_KEY_MAX];
    int kind = parse_line(buf + at, (size_t)(nl - buf) - at, key);
    if (kind < 0) break;
    fn(user, kind, key);
    got++;
    at = (size_t)(nl - buf) + 1;
  }
  return got;
}
