/* json_u64.c - JSON that keeps ComfyUI's 64-bit unsigned seeds.  Shared by
 * the runtime and the image plugin (which reads the run's API JSON back
 * for the PNG's "parameters" text). */
#include "json_u64.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MARK "\001u64:"         /* the string's value */
#define MARK_JSON "\\u0001u64:" /* how json_dumps writes it */

json_t *weft__json_u64(uint64_t u) {
  char buf[32];
  snprintf(buf, sizeof buf, MARK "%" PRIu64, u);
  return json_string(buf);
}

bool weft__json_is_u64(const json_t *v, uint64_t *u) {
  const char *s = json_string_value(v);
  if (!s || strncmp(s, MARK, strlen(MARK))) return false;
  *u = strtoull(s + strlen(MARK), NULL, 10);
  return true;
}

/* a whole-number token (not a sign's, fraction's or exponent's digits)
 * above INT64_MAX and within UINT64_MAX */
static bool big_token(const char *s, size_t len, size_t i, size_t j) {
  if (i > 0 && !strchr(" \t\r\n:[,", s[i - 1])) return false;
  if (j < len && (s[j] == '.' || s[j] == 'e' || s[j] == 'E')) return false;
  if (j - i < 19 || j - i > 20) return false;
  char num[24];
  memcpy(num, s + i, j - i);
  num[j - i] = '\0';
  errno = 0;
  unsigned long long u = strtoull(num, NULL, 10);
  return !errno && u > (unsigned long long)INT64_MAX;
}

json_t *weft__json_loadb(const char *text, size_t len, size_t flags,
                         json_error_t *e) {
  /* each big number grows by its quotes and the mark */
  size_t extra = 2 + strlen(MARK_JSON), cap = len + 1;
  char *s = malloc(cap);
  size_t n = 0;
  bool in_str = false;
  for (size_t i = 0; s && i < len;) {
    size_t j = i + 1;
    if (in_str) {
      if (text[i] == '\\' && j < len) j++;
      else if (text[i] == '"') in_str = false;
    } else if (text[i] == '"') {
      in_str = true;
    } else if (text[i] >= '0' && text[i] <= '9') {
      j = i;
      while (j < len && text[j] >= '0' && text[j] <= '9') j++;
      if (big_token(text, len, i, j)) {
        char *t = realloc(s, cap += extra);
        if (!t) break;
        s = t;
        n += (size_t)sprintf(s + n, "\"" MARK_JSON);
        memcpy(s + n, text + i, j - i);
        n += j - i;
        s[n++] = '"';
        i = j;
        continue;
      }
    }
    memcpy(s + n, text + i, j - i);
    n += j - i;
    i = j;
  }
  json_t *o = s ? json_loadb(s, n, flags, e) : NULL;
  free(s);
  return o;
}

char *weft__json_dumps(json_t *o, size_t flags) {
  char *s = o ? json_dumps(o, flags) : NULL;
  json_decref(o);
  /* "\u0001u64:N" -> N, in place (the result is shorter); other strings
   * are copied whole, escapes and all */
  char *w = s, *r = s;
  size_t m = strlen(MARK_JSON);
  while (r && *r) {
    if (*r != '"') {
      *w++ = *r++;
    } else if (!strncmp(r + 1, MARK_JSON, m)) {
      for (r += 1 + m; *r != '"';) *w++ = *r++;
      r++;
    } else {
      *w++ = *r++;
      while (*r && *r != '"') {
        if (*r == '\\') *w++ = *r++;
        *w++ = *r++;
      }
      if (*r) *w++ = *r++;
    }
  }
  if (w) *w = '\0';
  return s;
}
