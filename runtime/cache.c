/* cache.c - node outputs keyed by hash(op, params, input keys), so that a
 * re-run in one process re-executes only what changed. */
#include <stdlib.h>

#include "internal.h"

void weft__cache_init(weft__cache *c) {
  c->e = NULL;
  c->n = c->cap = 0;
  c->gen = 1;
}

static void entry_free(weft__centry *e) {
  for (int i = 0; i < e->n_outs; i++) weft__value_release(e->outs[i]);
  free(e->outs);
}

void weft__cache_free(weft__cache *c) {
  for (int i = 0; i < c->n; i++) entry_free(&c->e[i]);
  free(c->e);
  weft__cache_init(c);
}

weft__centry *weft__cache_get(weft__cache *c, uint64_t key) {
  for (int i = 0; i < c->n; i++)
    if (c->e[i].key == key) {
      c->e[i].gen = c->gen;
      return &c->e[i];
    }
  return NULL;
}

int weft__cache_put(weft__cache *c, uint64_t key, weft_value **outs, int n) {
  weft__centry *e = weft__cache_get(c, key);
  if (!e) {
    if (c->n == c->cap) {
      int cap = c->cap ? c->cap * 2 : 16;
      weft__centry *ne = realloc(c->e, (size_t)cap * sizeof *ne);
      if (!ne) return WEFT_ENOMEM;
      c->e = ne;
      c->cap = cap;
    }
    e = &c->e[c->n++];
  } else {
    entry_free(e);
  }
  e->key = key;
  e->gen = c->gen;
  e->n_outs = n;
  e->outs = calloc((size_t)(n ? n : 1), sizeof *e->outs);
  if (!e->outs) {
    c->n--;
    return WEFT_ENOMEM;
  }
  for (int i = 0; i < n; i++) {
    weft__value_retain(outs[i]);
    e->outs[i] = outs[i];
  }
  return 0;
}

void weft__cache_trim(weft__cache *c) {
  int j = 0;
  for (int i = 0; i < c->n; i++) {
    if (c->e[i].gen == c->gen)
      c->e[j++] = c->e[i];
    else
      entry_free(&c->e[i]);
  }
  c->n = j;
  c->gen++;
}
