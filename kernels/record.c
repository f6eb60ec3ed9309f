/* record.c - the recording backend wrapper of record.h: buffer lifetimes
 * from the op stream, an arena planned from them, and replays that serve
 * every allocation from that arena. */
#include "kernels/record.h"

#include <stdlib.h>
#include <string.h>

#define REC_ALIGN 256
/* DRY buffers over a device backend: addresses from here on, never mapped
 * (non-canonical on x86-64), so a stray host access faults at once */
#define FAKE_BASE ((uint64_t)1 << 47)

typedef enum live_kind {
  LIVE_INNER, /* the inner backend's buffer: freed there */
  LIVE_HOST,  /* DRY over a host backend: our zeroed memory, free() */
  LIVE_FAKE,  /* DRY over a device: nothing to free */
  LIVE_ARENA  /* a place in the arena: nothing to free */
} live_kind;

typedef struct live {
  void *p;
  int32_t k; /* index in the recording, -1 for none */
  live_kind kind;
} live;

/* Graphs (weft_rec_set_graphs): the first replay captures the device ops
 * between host copies (and synchronizations) into one graph each, a
 * segment; later replays run no op but launch each segment where it ends,
 * and check every host copy against the one the capture saw. */
typedef enum graph_state {
  G_NONE,    /* not captured yet: the next replay captures */
  G_CAPTURE, /* this replay captures */
  G_READY,   /* captured: replays launch the segments */
  G_OFF      /* not wanted, not possible, or given up */
} graph_state;

typedef struct seg {
  int32_t first, end; /* the pass's ops [first, end) */
  void *graph;
} seg;

typedef struct host_copy {
  void *dst; /* the device side is checked */
  const void *src;
  size_t n;
  weft_copy_kind kind;
  int32_t at; /* its index in the pass */
} host_copy;

struct weft_rec {
  weft_backend be; /* be.ctx == this */
  weft_backend_iface iface;
  weft_backend *inner;
  bool host; /* the inner backend's buffers are host memory */
  weft_rec_mode mode;
  int32_t now; /* ops so far in this pass */
  /* the recording */
  weft_plan_tensor *t;
  int32_t n, cap;
  int32_t n_ops;
  bool planned;
  weft_arena_stats arena_st;
  uint64_t h2d, d2h, d2d;
  /* buffers alive (of this pass, or left from an earlier one) */
  live *lv;
  int32_t n_lv, cap_lv;
  /* replay */
  int32_t next;
  bool broken;
  bool diverged_pass;
  void *arena;
  uint64_t arena_cap;
  uint64_t fake_next;
  /* graphs */
  graph_state g;
  bool g_open;    /* a capture is open on the inner backend */
  bool g_failed;  /* this pass's results are not to be trusted */
  int32_t g_mark; /* the first op after the last boundary */
  bool ran;       /* a pass of the recording ran its ops (not DRY) */
  seg *seg;
  int32_t n_seg, cap_seg, next_seg;
  host_copy *cp;
  int32_t n_cp, cap_cp, next_cp;
  /* counters */
  int32_t replays;
  uint64_t misses, diverged, arena_allocs, inner_allocs, inner_frees;
  uint64_t g_launches, g_failures;
};

static weft_rec *REC(weft_backend *be) {
  return be->ctx;
}

static int lv_add(weft_rec *r, void *p, int32_t k, live_kind kind) {
  if (r->n_lv == r->cap_lv) {
    int32_t cap = r->cap_lv ? r->cap_lv * 2 : 64;
    live *nl = realloc(r->lv, (size_t)cap * sizeof *nl);
    if (!nl) return WEFT_ENOMEM;
    r->lv = nl;
    r->cap_lv = cap;
  }
  r->lv[r->n_lv++] = (live){p, k, kind};
  return 0;
}

/* newest first: a buffer is most often freed soon after it was made */
static int32_t lv_find(const weft_rec *r, const void *p) {
  for (int32_t i = r->n_lv - 1; i >= 0; i--)
    if (r->lv[i].p == p) return i;
  return -1;
}

static void lv_del(weft_rec *r, int32_t i) {
  r->lv[i] = r->lv[--r->n_lv];
}

static bool recording(const weft_rec *r) {
  return r->mode == WEFT_REC_DRY || r->mode == WEFT_REC_TRACE;
}

/* ---- graphs ------------------------------------------------------------- */

static bool graphing(const weft_rec *r) {
  return r->mode == WEFT_REC_REPLAY && (r->g == G_CAPTURE || r->g == G_READY);
}

static void graphs_drop(weft_rec *r) {
  for (int32_t i = 0; i < r->n_seg; i++)
    if (r->inner->iface->graph_free)
      r->inner->iface->graph_free(r->inner, r->seg[i].graph);
  r->n_seg = r->n_cp = 0;
}

/* The pass cannot be trusted and graphs are given up for this recorder
 * (an open capture is closed: the rest of the pass runs uncaptured). */
static int graph_fail(weft_rec *r, int rc) {
  if (r->g_open) {
    void *g = NULL;
    r->g_open = false;
    if (r->inner->iface->graph_end(r->inner, &g) == 0)
      r->inner->iface->graph_free(r->inner, g);
  }
  if (!r->g_failed) r->g_failures++;
  r->g_failed = true;
  r->g = G_OFF;
  return rc ? rc : WEFT_EDEVICE;
}

static int grow(void **arr, int32_t *cap, size_t elem) {
  int32_t c = *cap ? *cap * 2 : 16;
  void *n = realloc(*arr, (size_t)c * elem);
  if (!n) return WEFT_ENOMEM;
  *arr = n;
  *cap = c;
  return 0;
}

static int launch(weft_rec *r, void *graph) {
  int rc = r->inner->iface->graph_launch(r->inner, graph);
  if (rc) return graph_fail(r, rc);
  r->g_launches++;
  return 0;
}

/* The ops since the last boundary, at a boundary (a host copy, a
 * synchronize, the pass's end): captured now and launched, or, captured
 * before, launched. */
static int seg_close(weft_rec *r) {
  if (r->g == G_CAPTURE) {
    if (!r->g_open) return 0;
    void *g = NULL;
    r->g_open = false;
    int rc = r->inner->iface->graph_end(r->inner, &g);
    if (!rc && r->n_seg == r->cap_seg &&
        (rc = grow((void **)&r->seg, &r->cap_seg, sizeof *r->seg))) {
      r->inner->iface->graph_free(r->inner, g);
    }
    if (rc) return graph_fail(r, rc);
    r->seg[r->n_seg++] = (seg){r->g_mark, r->now, g};
    r->g_mark = r->now;
    return launch(r, g);
  }
  if (r->g != G_READY || r->now == r->g_mark) return 0;
  /* the ops since the boundary must be the next segment's */
  const seg *s = r->next_seg < r->n_seg ? &r->seg[r->next_seg] : NULL;
  if (!s || s->first != r->g_mark || s->end != r->now)
    return graph_fail(r, WEFT_EINVAL);
  r->next_seg++;
  r->g_mark = r->now;
  return launch(r, s->graph);
}

/* A host copy in a graphed pass: seen by the capture, and the same one
 * (device address, size, place in the pass) in every launch after; its
 * host side is the caller's to move. */
static int copy_seen(weft_rec *r, void *dst, const void *src, size_t n,
                     weft_copy_kind kind) {
  host_copy c = {dst, src, n, kind, r->now};
  if (r->g == G_CAPTURE) {
    if (r->n_cp == r->cap_cp &&
        grow((void **)&r->cp, &r->cap_cp, sizeof *r->cp))
      return graph_fail(r, WEFT_ENOMEM);
    r->cp[r->n_cp++] = c;
    return 0;
  }
  const host_copy *w = r->next_cp < r->n_cp ? &r->cp[r->next_cp++] : NULL;
  const bool in = kind == WEFT_COPY_HOST_TO_DEVICE;
  if (!w || w->kind != kind || w->n != n || w->at != c.at ||
      (in ? w->dst != dst : w->src != src))
    return graph_fail(r, WEFT_EINVAL);
  return 0;
}

/* An op (or copy) happens now; true when it must not run: a DRY pass, or
 * a replay whose ops the captured graphs run.  A capture's first op after
 * a boundary opens the next segment (if the backend cannot, the pass runs
 * uncaptured: graphs are off). */
static bool tick(weft_rec *r) {
  if (r->mode == WEFT_REC_PASS) return false;
  r->now++;
  if (r->mode == WEFT_REC_DRY) return true;
  if (r->mode != WEFT_REC_REPLAY) return false;
  if (r->g == G_READY) return true;
  if (r->g == G_CAPTURE && !r->g_open) {
    if (r->inner->iface->graph_begin(r->inner) == 0) {
      r->g_open = true;
    } else {
      graphs_drop(r);
      r->g = G_OFF;
    }
  }
  return false;
}

/* An op's result: a failure while capturing leaves the capture's earlier
 * ops unrun, so the pass is not to be trusted. */
static int ran(weft_rec *r, int rc) {
  if (rc && r->g_open) graph_fail(r, rc);
  return rc;
}

static void *inner_alloc(weft_rec *r, size_t n) {
  r->inner_allocs++;
  return r->inner->iface->buffer_alloc(r->inner, n);
}

static void inner_free(weft_rec *r, void *p) {
  r->inner_frees++;
  r->inner->iface->buffer_free(r->inner, p);
}

/* ---- buffers ------------------------------------------------------------ */

static void *dry_alloc(weft_rec *r, size_t n, live_kind *kind) {
  size_t up = (n + REC_ALIGN - 1) / REC_ALIGN * REC_ALIGN;
  if (!up) up = REC_ALIGN;
  if (r->host) {
    /* model code on a host backend reads and writes buffers itself; no
     * kernel runs on them, so calloc's alignment does, and its zero pages
     * cost nothing until touched */
    void *p = calloc(1, up);
    *kind = LIVE_HOST;
    return p;
  }
  void *p = (void *)(uintptr_t)(FAKE_BASE + r->fake_next);
  r->fake_next += up;
  *kind = LIVE_FAKE;
  return p;
}

static int rec_push(weft_rec *r, size_t n) {
  if (r->n == r->cap) {
    int32_t cap = r->cap ? r->cap * 2 : 256;
    weft_plan_tensor *nt = realloc(r->t, (size_t)cap * sizeof *nt);
    if (!nt) return WEFT_ENOMEM;
    r->t = nt;
    r->cap = cap;
  }
  r->t[r->n] = (weft_plan_tensor){(uint64_t)n, r->now, -1, 0};
  return 0;
}

static void *w_alloc(weft_backend *be, size_t n) {
  weft_rec *r = REC(be);
  /* untracked buffers are the inner backend's: their frees go there */
  if (r->mode == WEFT_REC_PASS) return inner_alloc(r, n);
  if (recording(r)) {
    if (rec_push(r, n)) return NULL;
    live_kind kind = LIVE_INNER;
    void *p =
        r->mode == WEFT_REC_DRY ? dry_alloc(r, n, &kind) : inner_alloc(r, n);
    if (!p) return NULL;
    if (lv_add(r, p, r->n, kind)) {
      if (kind == LIVE_HOST) free(p);
      if (kind == LIVE_INNER) inner_free(r, p);
      return NULL;
    }
    r->n++;
    return p;
  }
  /* REPLAY */
  int32_t k = r->next++;
  if (!r->broken && k < r->n && r->t[k].bytes == (uint64_t)n) {
    void *p = (char *)r->arena + r->t[k].offset;
    if (lv_add(r, p, k, LIVE_ARENA)) return NULL;
    return p;
  }
  /* the pass left the recorded sequence: the arena's offsets no longer
   * describe what is alive, so nothing more comes from it */
  r->broken = true;
  r->misses++;
  return inner_alloc(r, n);
}

static int32_t last_of(const weft_rec *r, int32_t first) {
  return r->now - 1 > first ? r->now - 1 : first;
}

static void w_buf_free(weft_backend *be, void *p) {
  weft_rec *r = REC(be);
  if (!p) return;
  int32_t i = lv_find(r, p);
  if (i < 0) {
    /* an arena or fake buffer of an earlier pass: nothing to release */
    uintptr_t a = (uintptr_t)p;
    if (r->arena && a >= (uintptr_t)r->arena &&
        a < (uintptr_t)r->arena + r->arena_cap)
      return;
    if (a >= FAKE_BASE && a < FAKE_BASE + r->fake_next) return;
    inner_free(r, p);
    return;
  }
  live l = r->lv[i];
  lv_del(r, i);
  if (l.k >= 0 && recording(r)) {
    r->t[l.k].last = last_of(r, r->t[l.k].first);
  } else if (l.k >= 0 && r->mode == WEFT_REC_REPLAY && !r->broken &&
             r->t[l.k].last != last_of(r, r->t[l.k].first)) {
    r->diverged_pass = true;
  }
  if (l.kind == LIVE_INNER) inner_free(r, p);
  if (l.kind == LIVE_HOST) free(p);
}

static int w_copy(weft_backend *be, void *dst, const void *src, size_t n,
                  weft_copy_kind kind) {
  weft_rec *r = REC(be);
  if (recording(r)) {
    if (kind == WEFT_COPY_HOST_TO_DEVICE)
      r->h2d += n;
    else if (kind == WEFT_COPY_DEVICE_TO_HOST)
      r->d2h += n;
    else
      r->d2d += n;
  }
  if (kind != WEFT_COPY_DEVICE_TO_DEVICE && graphing(r)) {
    int rc = seg_close(r);
    if (!rc) rc = copy_seen(r, dst, src, n, kind);
    r->g_mark = ++r->now;
    return rc ? rc : r->inner->iface->buffer_copy(r->inner, dst, src, n, kind);
  }
  if (tick(r)) return 0;
  return ran(r, r->inner->iface->buffer_copy(r->inner, dst, src, n, kind));
}

/* ---- the rest of the vtable --------------------------------------------- */

#define IN(r) ((r)->inner)
#define FWD(r, op, ...) IN(r)->iface->op(IN(r), __VA_ARGS__)
#define RUN(r, op, ...) ran(r, FWD(r, op, __VA_ARGS__))

static void w_free(weft_backend *be) {
  weft_rec_free(REC(be));
}

static int w_set_threads(weft_backend *be, int n) {
  weft_rec *r = REC(be);
  return FWD(r, set_threads, n);
}

static int w_sync(weft_backend *be) {
  weft_rec *r = REC(be);
  if (r->mode == WEFT_REC_DRY) return 0;
  int rc = graphing(r) ? seg_close(r) : 0;
  return rc ? rc : IN(r)->iface->synchronize(IN(r));
}

static int w_gemm(weft_backend *be, const weft_gemm_args *a) {
  weft_rec *r = REC(be);
  return tick(r) ? 0 : RUN(r, gemm, a);
}

static int w_linear(weft_backend *be, const float *x, int64_t rows, int64_t in,
                    const float *w, const float *b, int64_t out, float *y) {
  weft_rec *r = REC(be);
  return tick(r) ? 0 : RUN(r, linear, x, rows, in, w, b, out, y);
}

static int w_linear_group(weft_backend *be, const float *x, int64_t rows,
                          int64_t in, int n, const weft_linear_part *parts) {
  weft_rec *r = REC(be);
  return tick(r) ? 0 : RUN(r, linear_group, x, rows, in, n, parts);
}

static int w_conv2d(weft_backend *be, const weft_conv2d_args *a) {
  weft_rec *r = REC(be);
  return tick(r) ? 0 : RUN(r, conv2d, a);
}

static size_t w_conv2d_scratch(weft_backend *be, const weft_conv2d_args *a) {
  weft_rec *r = REC(be);
  return FWD(r, conv2d_scratch_bytes, a);
}

static int w_attention(weft_backend *be, const weft_attn_args *a) {
  weft_rec *r = REC(be);
  return tick(r) ? 0 : RUN(r, attention, a);
}

static size_t w_attention_scratch(weft_backend *be, const weft_attn_args *a) {
  weft_rec *r = REC(be);
  return FWD(r, attention_scratch_bytes, a);
}

static int w_group_norm(weft_backend *be, const float *x, float *y,
                        int64_t batch, int64_t channels, int64_t spatial,
                        int64_t groups, float eps, const float *gamma,
                        const float *beta, weft_act act) {
  weft_rec *r = REC(be);
  return tick(r) ? 0
                 : RUN(r, group_norm, x, y, batch, channels, spatial, groups,
                       eps, gamma, beta, act);
}

static int w_group_norm_cl(weft_backend *be, const float *x, float *y,
                           int64_t batch, int64_t channels, int64_t spatial,
                           int64_t groups, float eps, const float *gamma,
                           const float *beta, weft_act act) {
  weft_rec *r = REC(be);
  return tick(r) ? 0
                 : RUN(r, group_norm_cl, x, y, batch, channels, spatial, groups,
                       eps, gamma, beta, act);
}

static int w_layer_norm(weft_backend *be, const float *x, float *y,
                        int64_t rows, int64_t dim, float eps,
                        const float *gamma, const float *beta) {
  weft_rec *r = REC(be);
  return tick(r) ? 0 : RUN(r, layer_norm, x, y, rows, dim, eps, gamma, beta);
}

static int w_softmax(weft_backend *be, const float *x, float *y, int64_t rows,
                     int64_t dim) {
  weft_rec *r = REC(be);
  return tick(r) ? 0 : RUN(r, softmax, x, y, rows, dim);
}

static int w_act(weft_backend *be, weft_act act, const float *x, float *y,
                 int64_t n) {
  weft_rec *r = REC(be);
  return tick(r) ? 0 : RUN(r, act, act, x, y, n);
}

static int w_gated_act(weft_backend *be, weft_act act, const float *x, float *y,
                       int64_t rows, int64_t dim) {
  weft_rec *r = REC(be);
  return tick(r) ? 0 : RUN(r, gated_act, act, x, y, rows, dim);
}

static int w_binary(weft_backend *be, weft_binop op, const float *a, int a_ndim,
                    const int64_t *a_shape, const float *b, int b_ndim,
                    const int64_t *b_shape, float *y) {
  weft_rec *r = REC(be);
  return tick(r)
             ? 0
             : RUN(r, binary, op, a, a_ndim, a_shape, b, b_ndim, b_shape, y);
}

static int w_scale_add(weft_backend *be, float *y, float alpha, const float *a,
                       float beta, const float *b, int64_t n) {
  weft_rec *r = REC(be);
  return tick(r) ? 0 : RUN(r, scale_add, y, alpha, a, beta, b, n);
}

static int w_upsample(weft_backend *be, const float *x, float *y,
                      int64_t planes, int64_t h, int64_t w) {
  weft_rec *r = REC(be);
  return tick(r) ? 0 : RUN(r, upsample_nearest2x, x, y, planes, h, w);
}

static int w_upsample_cl(weft_backend *be, const float *x, float *y,
                         int64_t batch, int64_t h, int64_t w,
                         int64_t channels) {
  weft_rec *r = REC(be);
  return tick(r) ? 0
                 : RUN(r, upsample_nearest2x_cl, x, y, batch, h, w, channels);
}

static int w_concat(weft_backend *be, int n, const float *const *xs, int ndim,
                    const int64_t *const *shapes, int axis, float *y) {
  weft_rec *r = REC(be);
  return tick(r) ? 0 : RUN(r, concat, n, xs, ndim, shapes, axis, y);
}

static int w_temb(weft_backend *be, const float *t, int64_t n, int64_t dim,
                  int flip, float shift, float scale, float max_period,
                  float *y) {
  weft_rec *r = REC(be);
  return tick(r) ? 0
                 : RUN(r, timestep_embedding, t, n, dim, flip, shift, scale,
                       max_period, y);
}

static int w_convert(weft_backend *be, void *dst, weft_dtype dt,
                     const void *src, weft_dtype st, int64_t n) {
  weft_rec *r = REC(be);
  return tick(r) ? 0 : RUN(r, convert, dst, dt, src, st, n);
}

static weft_dtype w_act_dtype(weft_backend *be) {
  return weft_backend_act_dtype(IN(REC(be)));
}

/* ---- the recorder ---------------------------------------------------------
 */

weft_rec *weft_rec_new(weft_backend *inner) {
  if (!inner) return NULL;
  weft_rec *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->inner = inner;
  r->host = inner->iface->device_kind == WEFT_DEVICE_KIND_CPU;
  r->g = G_OFF;
  /* the inner vtable (as far as its filler knew it), each member it has
   * routed through the wrapper; members it lacks stay NULL */
  size_t have = inner->iface->struct_size < sizeof r->iface
                    ? inner->iface->struct_size
                    : sizeof r->iface;
  memcpy(&r->iface, inner->iface, have);
  weft_backend_iface *f = &r->iface;
  f->struct_size = sizeof *f;
  f->free = w_free;
#define SET(m, fn)                                                             \
  if (f->m) f->m = fn
  SET(set_threads, w_set_threads);
  SET(synchronize, w_sync);
  f->buffer_alloc = w_alloc;
  f->buffer_free = w_buf_free;
  SET(buffer_copy, w_copy);
  SET(gemm, w_gemm);
  SET(linear, w_linear);
  SET(conv2d, w_conv2d);
  SET(conv2d_scratch_bytes, w_conv2d_scratch);
  SET(attention, w_attention);
  SET(attention_scratch_bytes, w_attention_scratch);
  SET(group_norm, w_group_norm);
  SET(layer_norm, w_layer_norm);
  SET(softmax, w_softmax);
  SET(act, w_act);
  SET(gated_act, w_gated_act);
  SET(binary, w_binary);
  SET(scale_add, w_scale_add);
  SET(upsample_nearest2x, w_upsample);
  SET(concat, w_concat);
  SET(timestep_embedding, w_temb);
  SET(convert, w_convert);
  SET(act_dtype, w_act_dtype);
  SET(group_norm_cl, w_group_norm_cl);
  SET(upsample_nearest2x_cl, w_upsample_cl);
  SET(linear_group, w_linear_group);
#undef SET
  r->be.iface = &r->iface;
  r->be.ctx = r;
  return r;
}

void weft_rec_free(weft_rec *r) {
  if (!r) return;
  /* buffers never freed by their users: ours go now, the inner backend's
   * stay theirs (they may still use them) */
  for (int32_t i = 0; i < r->n_lv; i++)
    if (r->lv[i].kind == LIVE_HOST) free(r->lv[i].p);
  graphs_drop(r);
  if (r->arena) r->inner->iface->buffer_free(r->inner, r->arena);
  free(r->seg);
  free(r->cp);
  free(r->lv);
  free(r->t);
  free(r);
}

weft_backend *weft_rec_backend(weft_rec *r) {
  return &r->be;
}
weft_backend *weft_rec_inner(const weft_rec *r) {
  return r->inner;
}
bool weft_rec_planned(const weft_rec *r) {
  return r->planned;
}

/* Entries of an earlier pass that need nothing at their free (arena and
 * fake places) are dropped: their frees are known by address. */
static void drop_placeless(weft_rec *r) {
  for (int32_t i = r->n_lv - 1; i >= 0; i--) {
    if (r->lv[i].kind == LIVE_ARENA || r->lv[i].kind == LIVE_FAKE)
      lv_del(r, i);
    else
      r->lv[i].k = -1;
  }
}

/* The arena for the planned recording: kept while plans fit in it. */
static int ensure_arena(weft_rec *r) {
  uint64_t need = r->arena_st.arena;
  if (need <= r->arena_cap && (r->arena || !need)) return 0;
  /* the graphs hold the old arena's addresses */
  graphs_drop(r);
  if (r->g != G_OFF) r->g = G_NONE;
  if (r->arena) r->inner->iface->buffer_free(r->inner, r->arena);
  r->arena = NULL;
  r->arena_cap = 0;
  if (!(r->arena = r->inner->iface->buffer_alloc(r->inner, (size_t)need)))
    return WEFT_ENOMEM;
  r->arena_cap = need;
  r->arena_allocs++;
  return 0;
}

int weft_rec_begin(weft_rec *r, weft_rec_mode mode) {
  drop_placeless(r);
  r->now = 0;
  r->next = 0;
  r->broken = false;
  r->diverged_pass = false;
  r->g_failed = false;
  if (mode == WEFT_REC_DRY || mode == WEFT_REC_TRACE) {
    /* a new recording: graphs of the old one go, the replay after its
     * first run captures */
    graphs_drop(r);
    if (r->g != G_OFF) r->g = G_NONE;
    r->ran = false;
    r->n = 0;
    r->planned = false;
    r->h2d = r->d2h = r->d2d = 0;
    r->n_ops = 0;
    memset(&r->arena_st, 0, sizeof r->arena_st);
  } else if (mode == WEFT_REC_REPLAY) {
    if (!r->planned) return WEFT_EINVAL;
    if (ensure_arena(r)) {
      r->mode = WEFT_REC_PASS;
      return WEFT_ENOMEM;
    }
    r->replays++;
    /* an inner backend that lost its graphs (a profiler swapped its
     * vtable) runs the ops */
    if (r->g != G_OFF && !weft_backend_has_graphs(r->inner)) {
      graphs_drop(r);
      r->g = G_OFF;
    }
    /* not the recording's first run: its first calls may make plans,
     * grow scratch or load modules, none of which a capture allows */
    if (r->g == G_NONE && r->ran) r->g = G_CAPTURE;
    r->next_seg = r->next_cp = r->g_mark = 0;
  }
  r->mode = mode;
  return 0;
}

int weft_rec_end(weft_rec *r) {
  weft_rec_mode mode = r->mode;
  int rc = 0;
  if (mode == WEFT_REC_TRACE || mode == WEFT_REC_REPLAY) r->ran = true;
  if (mode == WEFT_REC_DRY || mode == WEFT_REC_TRACE) {
    for (int32_t i = 0; i < r->n_lv; i++) {
      int32_t k = r->lv[i].k;
      if (k >= 0 && r->t[k].last < 0) r->t[k].last = last_of(r, r->t[k].first);
    }
    r->n_ops = r->now;
    rc = weft_arena_plan(r->t, r->n, REC_ALIGN, &r->arena_st);
    r->planned = rc == 0;
    /* a trace is followed by replays: their arena now, so that they
     * allocate nothing (a failure shows again at the replay's begin) */
    if (r->planned && mode == WEFT_REC_TRACE) ensure_arena(r);
  } else if (mode == WEFT_REC_REPLAY) {
    /* the last segment (the capture is closed whatever happened) */
    if (graphing(r)) rc = seg_close(r);
    if (r->g == G_READY && !r->g_failed &&
        (r->next_seg != r->n_seg || r->next_cp != r->n_cp ||
         r->now != r->n_ops))
      rc = graph_fail(r, WEFT_EINVAL);
    if (!r->broken && (r->next != r->n || r->now != r->n_ops))
      r->diverged_pass = true;
    for (int32_t i = 0; i < r->n_lv && !r->broken; i++) {
      int32_t k = r->lv[i].k;
      if (k >= 0 && r->t[k].last != last_of(r, r->t[k].first))
        r->diverged_pass = true;
    }
    if (r->diverged_pass) r->diverged++;
    /* a capture that missed the arena or left the recording used buffers
     * that are gone now: its graphs must not run again */
    if (r->g == G_CAPTURE)
      r->g = r->broken || r->diverged_pass || r->g_failed ? G_OFF : G_READY;
    if (r->g == G_OFF) graphs_drop(r);
  }
  r->mode = WEFT_REC_PASS;
  return rc;
}

void weft_rec_set_graphs(weft_rec *r, bool on) {
  if (r->mode != WEFT_REC_PASS) return;
  graphs_drop(r);
  r->g = on && weft_backend_has_graphs(r->inner) ? G_NONE : G_OFF;
  r->ran = false;
}

bool weft_rec_graphs_on(const weft_rec *r) {
  return r->g != G_OFF;
}

bool weft_rec_graph_failed(const weft_rec *r) {
  return r->g_failed;
}

void weft_rec_stats_get(const weft_rec *r, weft_rec_stats *st) {
  memset(st, 0, sizeof *st);
  st->arena = r->arena_st;
  st->n_tensors = r->n;
  st->n_ops = r->n_ops;
  st->h2d_bytes = r->h2d;
  st->d2h_bytes = r->d2h;
  st->d2d_bytes = r->d2d;
  st->replays = r->replays;
  st->misses = r->misses;
  st->diverged = r->diverged;
  st->arena_allocs = r->arena_allocs;
  st->arena_bytes = r->arena_cap;
  st->inner_allocs = r->inner_allocs;
  st->inner_frees = r->inner_frees;
  st->graph_segments = r->g == G_READY ? r->n_seg : 0;
  st->graph_launches = r->g_launches;
  st->graph_failures = r->g_failures;
}

const weft_plan_tensor *weft_rec_tensors(const weft_rec *r, int32_t *n) {
  *n = r->n;
  return r->t;
}

bool weft_backend_is_rec(const weft_backend *be) {
  return be && be->iface->free == w_free;
}

const weft_backend *weft_backend_root(const weft_backend *be) {
  while (weft_backend_is_rec(be))
    be = ((const weft_rec *)be->ctx)->inner;
  return be;
}
