/* cache.c - node outputs keyed by hash(op, params, input keys), so that a
 * re-run in one process re-executes only what changed.  Entries carry the
 * generation (run number) that last made or used them; a run's completion
 * drops what no run since the previous one touched. */
#include <stdlib.h>

#include "internal.h"

void weft__cache_init(weft__cache *c) {
  c->e = NULL;
  c->n = c->cap = 0;
  if (!c->gen) c->gen = 1; /* keeps counting across weft_ctx_cache_clear */
}

static void entry_free(weft__centry *e) {
  for (int i = 0; i < e->n_outs; i++)
    weft__value_release(e->outs[i]);
  free(e->outs);
}

void weft__cache_free(weft__cache *c) {
  for (int i = 0; i < c->n; i++)
    entry_free(&c->e[i]);
  free(c->e);
  c->e = NULL;
  c->n = c->cap = 0;
}

uint64_t weft__cache_next_gen(weft__cache *c) {
  return c->gen++;
}

static weft__centry *find(weft__cache *c, uint64_t key) {
  for (int i = 0; i < c->n; i++)
    if (c->e[i].key == key) return &c->e[i];
  return NULL;
}

weft__centry *weft__cache_get(weft__cache *c, uint64_t key, uint64_t gen) {
  weft__centry *e = find(c, key);
  if (e && e->gen < gen) e->gen = gen;
  return e;
}

int weft__cache_put(weft__cache *c, uint64_t key, weft_value **outs, int n,
                    uint64_t gen) {
  weft_value **copy = calloc((size_t)(n ? n : 1), sizeof *copy);
  if (!copy) return WEFT_ENOMEM;
  weft__centry *e = find(c, key);
  if (!e) {
    if (c->n == c->cap) {
      int cap = c->cap ? c->cap * 2 : 16;
      weft__centry *ne = realloc(c->e, (size_t)cap * sizeof *ne);
      if (!ne) {
        free(copy);
        return WEFT_ENOMEM;
      }
      c->e = ne;
      c->cap = cap;
    }
    e = &c->e[c->n++];
  } else {
    if (gen < e->gen) gen = e->gen;
    entry_free(e);
  }
  e->key = key;
  e->gen = gen;
  e->n_outs = n;
  e->outs = copy;
  for (int i = 0; i < n; i++) {
    weft__value_retain(outs[i]);
    e->outs[i] = outs[i];
  }
  return 0;
}

void weft__cache_trim(weft__cache *c, uint64_t gen) {
  int j = 0;
  for (int i = 0; i < c->n; i++) {
    if (c->e[i].gen >= gen)
      c->e[j++] = c->e[i];
    else
      entry_free(&c->e[i]);
  }
  c->n = j;
}
