/* plan_arena.c - offsets for tensors in one arena from their lifetimes:
 * greedy by size with best-fit gaps (Pisarchyk & Lee 2020; TFLite's
 * GreedyBySizeAssignment) and greedy in order of first use, the smaller
 * kept.  O(n^2) in the tensor count: a UNet step has a few thousand. */
#include <stdlib.h>
#include <string.h>

#include "weft/plan.h"

typedef struct placed {
  uint64_t off, end; /* [off, end) */
} placed;

static int cmp_placed(const void *a, const void *b) {
  const placed *x = a, *y = b;
  return x->off < y->off ? -1 : x->off > y->off;
}

static uint64_t round_up(uint64_t x, uint64_t a) { return (x + a - 1) & ~(a - 1); }

static bool overlap(const weft_plan_tensor *a, const weft_plan_tensor *b) {
  return a->first <= b->last && b->first <= a->last;
}

/* Places tensors in the order given: each goes into the smallest gap
 * between the tensors already placed that are alive with it, or after the
 * last of them.  off[] gets the offsets; returns the arena size. */
static uint64_t place(const weft_plan_tensor *t, const uint64_t *size,
                      const int *order, int n, uint64_t *off, placed *buf,
                      bool *done) {
  uint64_t arena = 0;
  if (n <= 0) return 0;
  memset(done, 0, (size_t)n * sizeof *done);
  for (int k = 0; k < n; k++) {
    int i = order[k];
    int m = 0;
    for (int j = 0; j < n; j++)
      if (done[j] && size[j] && overlap(&t[i], &t[j]))
        buf[m++] = (placed){off[j], off[j] + size[j]};
    qsort(buf, (size_t)m, sizeof *buf, cmp_placed);
    uint64_t best = UINT64_MAX, best_gap = UINT64_MAX, at = 0;
    for (int j = 0; j < m; j++) {
      if (buf[j].off > at) {
        uint64_t gap = buf[j].off - at;
        if (gap >= size[i] && gap < best_gap) best = at, best_gap = gap;
      }
      if (buf[j].end > at) at = buf[j].end;
    }
    off[i] = best != UINT64_MAX ? best : at;
    done[i] = true;
    if (size[i] && off[i] + size[i] > arena) arena = off[i] + size[i];
  }
  return arena;
}

typedef struct sort_ctx {
  const weft_plan_tensor *t;
  const uint64_t *size;
} sort_ctx;

/* by size descending, then first use, then index: a total order, so the
 * plan does not depend on qsort's stability */
static int by_size(const void *a, const void *b, void *user) {
  const sort_ctx *c = user;
  const weft_plan_tensor *sort_t = c->t;
  const uint64_t *sort_size = c->size;
  int i = *(const int *)a, j = *(const int *)b;
  if (sort_size[i] != sort_size[j]) return sort_size[i] > sort_size[j] ? -1 : 1;
  if (sort_t[i].first != sort_t[j].first)
    return sort_t[i].first < sort_t[j].first ? -1 : 1;
  return (i > j) - (i < j);
}

static int by_first(const void *a, const void *b, void *user) {
  const sort_ctx *c = user;
  const weft_plan_tensor *sort_t = c->t;
  const uint64_t *sort_size = c->size;
  int i = *(const int *)a, j = *(const int *)b;
  if (sort_t[i].first != sort_t[j].first)
    return sort_t[i].first < sort_t[j].first ? -1 : 1;
  if (sort_size[i] != sort_size[j]) return sort_size[i] > sort_size[j] ? -1 : 1;
  return (i > j) - (i < j);
}

typedef struct event {
  int32_t t;
  int64_t delta; /* +bytes at first, -bytes after last */
} event;

static int cmp_event(const void *a, const void *b) {
  const event *x = a, *y = b;
  if (x->t != y->t) return x->t < y->t ? -1 : 1;
  return (x->delta > y->delta) - (x->delta < y->delta); /* frees first */
}

/* the most bytes alive at once, by a sweep over starts and ends */
static int lower_bound(const weft_plan_tensor *t, const uint64_t *size, int n,
                       uint64_t *bound, int32_t *peak_time) {
  event *ev = malloc((size_t)(2 * n + 1) * sizeof *ev);
  if (!ev) return WEFT_ENOMEM;
  int m = 0;
  for (int i = 0; i < n; i++) {
    if (!size[i]) continue;
    ev[m++] = (event){t[i].first, (int64_t)size[i]};
    ev[m++] = (event){t[i].last + 1, -(int64_t)size[i]};
  }
  qsort(ev, (size_t)m, sizeof *ev, cmp_event);
  uint64_t live = 0;
  *bound = 0, *peak_time = 0;
  for (int k = 0; k < m; k++) {
    live += (uint64_t)ev[k].delta;
    /* after the last event at this time, live is what this op sees */
    if ((k + 1 == m || ev[k + 1].t != ev[k].t) && live > *bound)
      *bound = live, *peak_time = ev[k].t;
  }
  free(ev);
  return 0;
}

int weft_arena_plan(weft_plan_tensor *t, int n, uint64_t align,
                    weft_arena_stats *stats) {
  if (!align) align = 256;
  if (n < 0 || (align & (align - 1)) || (n && !t)) return WEFT_EINVAL;
  for (int i = 0; i < n; i++)
    if (t[i].last < t[i].first) return WEFT_EINVAL;
  weft_arena_stats st = {0};
  uint64_t *size = malloc((size_t)(n + 1) * sizeof *size);
  uint64_t *off[2] = {malloc((size_t)(n + 1) * sizeof(uint64_t)),
                      malloc((size_t)(n + 1) * sizeof(uint64_t))};
  int *order = malloc((size_t)(n + 1) * sizeof *order);
  placed *buf = malloc((size_t)(n + 1) * sizeof *buf);
  bool *done = malloc((size_t)(n + 1) * sizeof *done);
  int rc = size && off[0] && off[1] && order && buf && done ? 0 : WEFT_ENOMEM;
  for (int i = 0; !rc && i < n; i++) {
    size[i] = round_up(t[i].bytes, align);
    st.naive += size[i];
  }
  if (!rc) rc = lower_bound(t, size, n, &st.lower_bound, &st.peak_time);
  uint64_t arena[2] = {0, 0};
  int (*const cmp[2])(const void *, const void *, void *) = {by_size,
                                                             by_first};
  sort_ctx sc = {t, size};
  for (int s = 0; s < 2 && !rc; s++) {
    for (int i = 0; i < n; i++) order[i] = i;
    qsort_r(order, (size_t)n, sizeof *order, cmp[s], &sc); /* GNU */
    arena[s] = place(t, size, order, n, off[s], buf, done);
  }
  if (!rc) {
    st.strategy = arena[1] < arena[0];
    st.arena = arena[st.strategy];
    for (int i = 0; i < n; i++) t[i].offset = off[st.strategy][i];
    if (stats) *stats = st;
  }
  free(size), free(off[0]), free(off[1]), free(order), free(buf), free(done);
  return rc;
}
