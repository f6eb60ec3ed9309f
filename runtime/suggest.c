/* suggest.c - "did you mean ...?": the closest valid name to a misspelling. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int weft__edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 256 || lb > 256) return (int)(la > lb ? la : lb);
  /* three rows for the transposition case (optimal string alignment) */
  int rows[3][257];
  int *pp = rows[0], *p = rows[1], *c = rows[2];
  for (size_t j = 0; j <= lb; j++) p[j] = (int)j;
  for (size_t i = 1; i <= la; i++) {
    c[0] = (int)i;
    for (size_t j = 1; j <= lb; j++) {
      int ca = tolower((unsigned char)a[i - 1]);
      int cb = tolower((unsigned char)b[j - 1]);
      int cost = ca != cb;
      int v = p[j] + 1;
      if (c[j - 1] + 1 < v) v = c[j - 1] + 1;
      if (p[j - 1] + cost < v) v = p[j - 1] + cost;
      if (i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) &&
          tolower((unsigned char)a[i - 2]) == cb && pp[j - 2] + 1 < v)
        v = pp[j - 2] + 1;
      c[j] = v;
    }
    int *t = pp;
    pp = p;
    p = c;
    c = t;
  }
  return p[lb];
}

const char *weft__closest(const char *name, const char *const *cand, int n) {
  const char *best = NULL;
  int best_d = 1 << 30;
  size_t ln = strlen(name);
  for (int i = 0; i < n; i++) {
    if (!cand[i]) continue;
    int d = weft__edit_distance(name, cand[i]);
    /* a case-only difference or a prefix/suffix of a long name counts */
    if (d < best_d) {
      best_d = d;
      best = cand[i];
    }
  }
  if (!best) return NULL;
  size_t lb = strlen(best);
  size_t longer = ln > lb ? ln : lb;
  /* close enough: at most a third of the longer name, and at least 1 edit
   * allowed for short names */
  int limit = (int)(longer / 3);
  if (limit < 2) limit = 2;
  return best_d <= limit && best_d < (int)longer ? best : NULL;
}

const char *weft_closest_name(const char *name, const char *const *cand,
                              int n) {
  return weft__closest(name, cand, n);
}
