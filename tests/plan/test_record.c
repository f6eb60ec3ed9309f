/* test_record.c - the recording backend (kernels/record.h) on hand-written
 * op lists over a counting CPU backend: exact lifetimes, offsets and arena
 * against the lower bound; replays that allocate nothing from the inner
 * backend and compute the same bits; misses, divergence, DRY passes. */
#include <stdint.h>

#include "counting.h"
#include "kernels/record.h"
#include "test.h"

enum { N = 250 }; /* floats per small buffer: 1000 bytes, 1024 planned */

typedef struct script_ptrs {
  void *a, *b, *c;
} script_ptrs;

/* a = silu(x); b = a + 2a; c = b + b; out = c.  a lives for ops 0..1, b
 * for 1..2, c for 2..3 (the copy out is op 3).  host: x is written into a
 * on the host (a host backend only).  big: a is 4 bytes larger. */
static void script(weft_backend *be, const float *x, float *out, bool host,
                   bool big, script_ptrs *p) {
  const weft_backend_iface *f = be->iface;
  float *a = f->buffer_alloc(be, N * sizeof(float) + (big ? 4 : 0));
  ASSERT(a != NULL);
  if (host) memcpy(a, x, N * sizeof(float));
  ASSERT_OK(f->act(be, WEFT_ACT_SILU, a, a, N));
  float *b = f->buffer_alloc(be, 2 * N * sizeof(float));
  ASSERT(b != NULL);
  ASSERT_OK(f->scale_add(be, b, 1.0f, a, 2.0f, a, N));
  f->buffer_free(be, a);
  float *c = f->buffer_alloc(be, N * sizeof(float));
  ASSERT(c != NULL);
  ASSERT_OK(f->scale_add(be, c, 1.0f, b, 1.0f, b, N));
  f->buffer_free(be, b);
  ASSERT_OK(
      f->buffer_copy(be, out, c, N * sizeof(float), WEFT_COPY_DEVICE_TO_HOST));
  f->buffer_free(be, c);
  if (p) *p = (script_ptrs){a, b, c};
}

static void input(float *x) {
  for (int i = 0; i < N; i++)
    x[i] = (float)(i % 17) * 0.37f - 2.5f;
}

TEST(trace_records_lifetimes_and_plans_the_arena_at_the_lower_bound) {
  weft_backend *inner = cnt_backend_new(false);
  weft_rec *r = weft_rec_new(inner);
  ASSERT(r != NULL);
  float x[N], out[N];
  input(x);
  ASSERT_OK(weft_rec_begin(r, WEFT_REC_TRACE));
  script(weft_rec_backend(r), x, out, true, false, NULL);
  ASSERT_OK(weft_rec_end(r));
  /* the trace ran everything on the inner backend */
  ASSERT_EQ(CNT(inner)->allocs, 4); /* and the arena, once planned */
  ASSERT_EQ(CNT(inner)->frees, 3);
  ASSERT_EQ(CNT(inner)->ops, 3);
  ASSERT_EQ(CNT(inner)->copies, 1);
  int32_t n;
  const weft_plan_tensor *t = weft_rec_tensors(r, &n);
  ASSERT_EQ(n, 3);
  ASSERT_EQ(t[0].bytes, 1000);
  ASSERT_EQ(t[0].first, 0);
  ASSERT_EQ(t[0].last, 1);
  ASSERT_EQ(t[1].bytes, 2000);
  ASSERT_EQ(t[1].first, 1);
  ASSERT_EQ(t[1].last, 2);
  ASSERT_EQ(t[2].bytes, 1000);
  ASSERT_EQ(t[2].first, 2);
  ASSERT_EQ(t[2].last, 3);
  /* greedy by size: b (the largest) at 0, a after it, and c -- alive with
   * b but not with a -- in a's place */
  ASSERT_EQ(t[1].offset, 0);
  ASSERT_EQ(t[0].offset, 2048);
  ASSERT_EQ(t[2].offset, 2048);
  weft_rec_stats st;
  weft_rec_stats_get(r, &st);
  ASSERT_EQ(st.n_tensors, 3);
  ASSERT_EQ(st.n_ops, 4);
  ASSERT_EQ(st.arena.arena, 3072);
  ASSERT_EQ(st.arena.lower_bound, 3072);
  ASSERT_EQ(st.arena.naive, 4096);
  ASSERT_EQ(st.d2h_bytes, 1000);
  ASSERT_EQ(st.h2d_bytes, 0);
  ASSERT_EQ(st.inner_allocs, 3);
  ASSERT_EQ(st.arena_allocs, 1);
  ASSERT_EQ(st.arena_bytes, 3072);
  ASSERT_EQ(CNT(inner)->allocs, 4); /* the arena */
  weft_rec_free(r);
  weft_backend_free(inner);
}

TEST(replays_allocate_nothing_from_the_inner_backend_and_give_same_bits) {
  weft_backend *inner = cnt_backend_new(false);
  weft_rec *r = weft_rec_new(inner);
  float x[N], want[N], out[N];
  input(x);
  script(inner, x, want, true, false, NULL); /* unrecorded */
  CNT(inner)->allocs = CNT(inner)->frees = 0;
  ASSERT_OK(weft_rec_begin(r, WEFT_REC_TRACE));
  script(weft_rec_backend(r), x, out, true, false, NULL);
  ASSERT_OK(weft_rec_end(r));
  ASSERT(memcmp(out, want, sizeof out) == 0);
  /* the trace's 3 buffers, then the arena, made as the trace is planned */
  ASSERT_EQ(CNT(inner)->allocs, 4);
  ASSERT_EQ(CNT(inner)->frees, 3);
  for (int k = 0; k < 3; k++) {
    int64_t allocs = CNT(inner)->allocs, frees = CNT(inner)->frees;
    memset(out, 0, sizeof out);
    script_ptrs p;
    ASSERT_OK(weft_rec_begin(r, WEFT_REC_REPLAY));
    script(weft_rec_backend(r), x, out, true, false, &p);
    ASSERT_OK(weft_rec_end(r));
    ASSERT_EQ(CNT(inner)->allocs, allocs);
    ASSERT_EQ(CNT(inner)->frees, frees);
    ASSERT(memcmp(out, want, sizeof out) == 0);
    /* every buffer at its planned offset in one arena */
    char *arena = (char *)p.b; /* b's offset is 0 */
    ASSERT((char *)p.a == arena + 2048);
    ASSERT((char *)p.c == arena + 2048);
    ASSERT_EQ((uintptr_t)arena % 64, 0);
  }
  weft_rec_stats st;
  weft_rec_stats_get(r, &st);
  ASSERT_EQ(st.replays, 3);
  ASSERT_EQ(st.misses, 0);
  ASSERT_EQ(st.diverged, 0);
  ASSERT_EQ(st.arena_allocs, 1);
  ASSERT_EQ(st.arena_bytes, 3072);
  ASSERT_EQ(CNT(inner)->live, 1); /* the arena */
  weft_rec_free(r);
  ASSERT_EQ(CNT(inner)->live, 0);
  weft_backend_free(inner);
}

TEST(replay_of_another_size_misses_and_takes_the_rest_from_the_inner_backend) {
  weft_backend *inner = cnt_backend_new(false);
  weft_rec *r = weft_rec_new(inner);
  float x[N], want[N], out[N];
  input(x);
  script(inner, x, want, true, false, NULL);
  ASSERT_OK(weft_rec_begin(r, WEFT_REC_TRACE));
  script(weft_rec_backend(r), x, out, true, false, NULL);
  ASSERT_OK(weft_rec_end(r));
  ASSERT_OK(weft_rec_begin(r, WEFT_REC_REPLAY));
  int64_t allocs = CNT(inner)->allocs, frees = CNT(inner)->frees;
  script(weft_rec_backend(r), x, out, true, true, NULL);
  ASSERT_OK(weft_rec_end(r));
  /* a, b and c all came from the inner backend and went back there */
  ASSERT_EQ(CNT(inner)->allocs, allocs + 3);
  ASSERT_EQ(CNT(inner)->frees, frees + 3);
  ASSERT(memcmp(out, want, sizeof out) == 0);
  weft_rec_stats st;
  weft_rec_stats_get(r, &st);
  ASSERT_EQ(st.misses, 3); /* every allocation after the first miss */
  ASSERT_EQ(st.diverged, 0);
  weft_rec_free(r);
  ASSERT_EQ(CNT(inner)->live, 0);
  weft_backend_free(inner);
}

TEST(replay_whose_frees_differ_from_the_recording_is_counted_as_diverged) {
  weft_backend *inner = cnt_backend_new(false);
  weft_rec *r = weft_rec_new(inner);
  weft_backend *be = weft_rec_backend(r);
  float *a, *b;
  ASSERT_OK(weft_rec_begin(r, WEFT_REC_TRACE));
  a = be->iface->buffer_alloc(be, 64);
  b = be->iface->buffer_alloc(be, 64);
  ASSERT_OK(be->iface->act(be, WEFT_ACT_SILU, a, b, 16));
  be->iface->buffer_free(be, a);
  ASSERT_OK(be->iface->act(be, WEFT_ACT_SILU, b, b, 16));
  be->iface->buffer_free(be, b);
  ASSERT_OK(weft_rec_end(r));
  /* the same allocations, but a now lives past the second op */
  ASSERT_OK(weft_rec_begin(r, WEFT_REC_REPLAY));
  a = be->iface->buffer_alloc(be, 64);
  b = be->iface->buffer_alloc(be, 64);
  ASSERT_OK(be->iface->act(be, WEFT_ACT_SILU, a, b, 16));
  ASSERT_OK(be->iface->act(be, WEFT_ACT_SILU, b, b, 16));
  be->iface->buffer_free(be, a);
  be->iface->buffer_free(be, b);
  ASSERT_OK(weft_rec_end(r));
  weft_rec_stats st;
  weft_rec_stats_get(r, &st);
  ASSERT_EQ(st.diverged, 1);
  ASSERT_EQ(st.misses, 0);
  weft_rec_free(r);
  weft_backend_free(inner);
}

TEST(dry_pass_over_a_device_runs_nothing_and_hands_out_fake_buffers) {
  weft_backend *inner = cnt_backend_new(true);
  weft_rec *r = weft_rec_new(inner);
  float x[N], out[N];
  input(x);
  memset(out, 0x55, sizeof out);
  script_ptrs p;
  ASSERT_OK(weft_rec_begin(r, WEFT_REC_DRY));
  script(weft_rec_backend(r), x, out, false, false, &p);
  ASSERT_OK(weft_rec_end(r));
  ASSERT_EQ(CNT(inner)->allocs, 0);
  ASSERT_EQ(CNT(inner)->ops, 0);
  ASSERT_EQ(CNT(inner)->copies, 0);
  ASSERT(((const unsigned char *)out)[0] == 0x55); /* nothing copied */
  ASSERT((uintptr_t)p.a >= (uintptr_t)1 << 47);
  ASSERT(p.a != p.b && p.b != p.c && p.a != p.c);
  weft_rec_stats st;
  weft_rec_stats_get(r, &st);
  ASSERT_EQ(st.arena.arena, 3072);
  ASSERT_EQ(st.arena.lower_bound, 3072);
  ASSERT_EQ(st.n_ops, 4);
  ASSERT_EQ(st.d2h_bytes, 1000);
  ASSERT_EQ(st.inner_allocs, 0);
  weft_rec_free(r);
  weft_backend_free(inner);
}

TEST(dry_pass_over_the_cpu_gives_zeroed_host_memory_and_the_trace_plan) {
  weft_backend *inner = cnt_backend_new(false);
  weft_rec *r = weft_rec_new(inner);
  weft_backend *be = weft_rec_backend(r);
  ASSERT_OK(weft_rec_begin(r, WEFT_REC_DRY));
  float *z = be->iface->buffer_alloc(be, 4096);
  for (int i = 0; i < 1024; i++)
    ASSERT(z[i] == 0.0f);
  be->iface->buffer_free(be, z);
  ASSERT_OK(weft_rec_end(r));
  float x[N], out[N];
  input(x);
  ASSERT_OK(weft_rec_begin(r, WEFT_REC_DRY));
  script(be, x, out, true, false, NULL);
  ASSERT_OK(weft_rec_end(r));
  ASSERT_EQ(CNT(inner)->allocs, 0);
  ASSERT_EQ(CNT(inner)->ops, 0);
  int32_t n;
  const weft_plan_tensor *t = weft_rec_tensors(r, &n);
  ASSERT_EQ(n, 3);
  ASSERT_EQ(t[0].offset, 2048);
  ASSERT_EQ(t[1].offset, 0);
  ASSERT_EQ(t[2].offset, 2048);
  /* and a replay of the DRY plan computes for real */
  float want[N];
  script(inner, x, want, true, false, NULL);
  ASSERT_OK(weft_rec_begin(r, WEFT_REC_REPLAY));
  script(be, x, out, true, false, NULL);
  ASSERT_OK(weft_rec_end(r));
  ASSERT(memcmp(out, want, sizeof out) == 0);
  weft_rec_free(r);
  weft_backend_free(inner);
}

TEST(replay_needs_a_plan_and_root_follows_recorders) {
  weft_backend *inner = cnt_backend_new(false);
  weft_rec *r1 = weft_rec_new(inner);
  weft_rec *r2 = weft_rec_new(weft_rec_backend(r1));
  ASSERT_EQ(weft_rec_begin(r2, WEFT_REC_REPLAY), WEFT_EINVAL);
  ASSERT(weft_backend_root(weft_rec_backend(r2)) == inner);
  ASSERT(weft_backend_root(inner) == inner);
  ASSERT(weft_backend_is_rec(weft_rec_backend(r2)));
  ASSERT(!weft_backend_is_rec(inner));
  ASSERT(weft_rec_inner(r2) == weft_rec_backend(r1));
  /* the wrapper keeps the inner backend's name and kind */
  ASSERT_STR_EQ(weft_rec_backend(r2)->iface->name, "counting");
  ASSERT_EQ(weft_rec_backend(r2)->iface->device_kind, WEFT_DEVICE_KIND_CPU);
  /* freeing through the backend frees the recorder */
  weft_backend_free(weft_rec_backend(r2));
  weft_rec_free(r1);
  weft_backend_free(inner);
}

/* ---- graphs (weft_rec_set_graphs) ----------------------------------------
 * A device-style pass: x in by a host copy, two results out.  Ops: 0 the
 * copy in, 1 a = silu(x), 2 b = a + 2a, 3 o1 = b out, 4 c = b + b, 5 d = c
 * (a device copy), 6 o2 = d out: segments [1, 3) and [4, 6). */
static int gscript_n(weft_backend *be, const float *x, float *o1, float *o2,
                     int64_t n1) {
  const weft_backend_iface *f = be->iface;
  const size_t nb = N * sizeof(float);
  float *a = f->buffer_alloc(be, nb);
  ASSERT(a != NULL);
  int rc = f->buffer_copy(be, a, x, nb, WEFT_COPY_HOST_TO_DEVICE);
  if (!rc) rc = f->act(be, WEFT_ACT_SILU, a, a, N);
  float *b = f->buffer_alloc(be, 2 * nb);
  ASSERT(b != NULL);
  if (!rc) rc = f->scale_add(be, b, 1.0f, a, 2.0f, a, N);
  f->buffer_free(be, a);
  if (!rc)
    rc = f->buffer_copy(be, o1, b, (size_t)n1 * sizeof(float),
                        WEFT_COPY_DEVICE_TO_HOST);
  float *c = f->buffer_alloc(be, nb);
  ASSERT(c != NULL);
  if (!rc) rc = f->scale_add(be, c, 1.0f, b, 1.0f, b, N);
  f->buffer_free(be, b);
  float *d = f->buffer_alloc(be, nb);
  ASSERT(d != NULL);
  if (!rc) rc = f->buffer_copy(be, d, c, nb, WEFT_COPY_DEVICE_TO_DEVICE);
  f->buffer_free(be, c);
  if (!rc) rc = f->buffer_copy(be, o2, d, nb, WEFT_COPY_DEVICE_TO_HOST);
  f->buffer_free(be, d);
  return rc;
}

static int gscript(weft_backend *be, const float *x, float *o1, float *o2) {
  return gscript_n(be, x, o1, o2, N);
}

typedef struct gcase {
  weft_backend *inner;
  weft_rec *r;
  float x[4][N], want1[4][N], want2[4][N], o1[N], o2[N];
} gcase;

/* inputs k = 0..3 and their results, computed unrecorded; a recorder with
 * graphs on and its trace of input 0 */
static gcase *gcase_new(void) {
  gcase *g = calloc(1, sizeof *g);
  g->inner = cnt_backend_new(false);
  cnt_graphs_on(g->inner);
  for (int k = 0; k < 4; k++) {
    for (int i = 0; i < N; i++)
      g->x[k][i] = (float)((i * (k + 3)) % 23) * 0.21f - 2.0f + 0.1f * k;
    ASSERT_OK(gscript(g->inner, g->x[k], g->want1[k], g->want2[k]));
  }
  g->r = weft_rec_new(g->inner);
  weft_rec_set_graphs(g->r, true);
  ASSERT_OK(weft_rec_begin(g->r, WEFT_REC_TRACE));
  ASSERT_OK(gscript(weft_rec_backend(g->r), g->x[0], g->o1, g->o2));
  ASSERT_OK(weft_rec_end(g->r));
  ASSERT_EQ(CNT(g->inner)->begins, 0); /* a trace captures nothing */
  return g;
}

/* One replay of input k: its rc, results checked when 0. */
static int greplay(gcase *g, int k) {
  memset(g->o1, 0, sizeof g->o1), memset(g->o2, 0, sizeof g->o2);
  ASSERT_OK(weft_rec_begin(g->r, WEFT_REC_REPLAY));
  int rc = gscript(weft_rec_backend(g->r), g->x[k], g->o1, g->o2);
  int re = weft_rec_end(g->r);
  if (!rc) rc = re;
  if (!rc) {
    ASSERT(memcmp(g->o1, g->want1[k], sizeof g->o1) == 0);
    ASSERT(memcmp(g->o2, g->want2[k], sizeof g->o2) == 0);
  }
  return rc;
}

static void gcase_free(gcase *g) {
  weft_rec_free(g->r);
  ASSERT_EQ(CNT(g->inner)->graphs_live, 0);
  weft_backend_free(g->inner);
  free(g);
}

TEST(graphs_capture_the_first_replay_and_replays_launch_them) {
  gcase *g = gcase_new();
  cnt_backend *c = CNT(g->inner);
  /* the capture: two segments, each launched where it ends */
  ASSERT_OK(greplay(g, 1));
  ASSERT_EQ(c->begins, 2);
  ASSERT_EQ(c->ends, 2);
  ASSERT_EQ(c->launches, 2);
  ASSERT_EQ(c->launched_ops, 4);
  weft_rec_stats st;
  weft_rec_stats_get(g->r, &st);
  ASSERT_EQ(st.graph_segments, 2);
  ASSERT(!weft_rec_graph_failed(g->r));
  /* later replays run no op themselves: the host copies and two launches */
  const int64_t ops = c->ops, copies = c->copies, allocs = c->allocs;
  for (int k = 2; k < 4; k++)
    ASSERT_OK(greplay(g, k));
  ASSERT_EQ(c->ops, ops);
  ASSERT_EQ(c->copies, copies + 2 * 3);
  ASSERT_EQ(c->allocs, allocs);
  ASSERT_EQ(c->begins, 2);
  ASSERT_EQ(c->launches, 6);
  ASSERT_EQ(c->launched_ops, 12);
  weft_rec_stats_get(g->r, &st);
  ASSERT_EQ(st.graph_launches, 6);
  ASSERT_EQ(st.graph_failures, 0);
  ASSERT_EQ(st.misses, 0);
  ASSERT_EQ(st.diverged, 0);
  /* a new recording drops them; its first replay captures again */
  ASSERT_OK(weft_rec_begin(g->r, WEFT_REC_TRACE));
  ASSERT_OK(gscript(weft_rec_backend(g->r), g->x[0], g->o1, g->o2));
  ASSERT_OK(weft_rec_end(g->r));
  ASSERT_EQ(c->graphs_live, 0);
  ASSERT_OK(greplay(g, 3));
  ASSERT_EQ(c->begins, 4);
  ASSERT_EQ(c->graphs_live, 2);
  gcase_free(g);
}

TEST(graphs_replay_off_the_captured_copies_fails_and_runs_again_without) {
  gcase *g = gcase_new();
  cnt_backend *c = CNT(g->inner);
  ASSERT_OK(greplay(g, 1));
  /* half the first result copied out (the capture copied all of it): the
   * first segment ran, the copy is refused, the pass is not to be trusted */
  ASSERT_OK(weft_rec_begin(g->r, WEFT_REC_REPLAY));
  ASSERT_EQ(gscript_n(weft_rec_backend(g->r), g->x[2], g->o1, g->o2, N / 2),
            WEFT_EINVAL);
  weft_rec_end(g->r);
  ASSERT(weft_rec_graph_failed(g->r));
  ASSERT_EQ(c->graphs_live, 0);
  weft_rec_stats st;
  weft_rec_stats_get(g->r, &st);
  ASSERT_EQ(st.graph_failures, 1);
  ASSERT_EQ(st.graph_segments, 0);
  /* run again: the ops themselves, right, and no capture from then on */
  const int64_t ops = c->ops;
  ASSERT_OK(greplay(g, 2));
  ASSERT(!weft_rec_graph_failed(g->r));
  ASSERT_EQ(c->ops, ops + 3);
  ASSERT_OK(greplay(g, 3));
  ASSERT_EQ(c->begins, 2);
  gcase_free(g);
}

TEST(graphs_refused_at_a_start_run_the_ops_failing_at_an_end_ask_again) {
  /* off unless asked */
  weft_backend *inner = cnt_backend_new(false);
  cnt_graphs_on(inner);
  weft_rec *r = weft_rec_new(inner);
  float x[N], o1[N], o2[N];
  input(x);
  for (int k = 0; k < 3; k++) {
    ASSERT_OK(weft_rec_begin(r, k ? WEFT_REC_REPLAY : WEFT_REC_TRACE));
    ASSERT_OK(gscript(weft_rec_backend(r), x, o1, o2));
    ASSERT_OK(weft_rec_end(r));
  }
  ASSERT_EQ(CNT(inner)->begins, 0);
  weft_rec_free(r);
  weft_backend_free(inner);
  /* the backend cannot begin: the pass runs uncaptured, rightly */
  gcase *g = gcase_new();
  CNT(g->inner)->refuse_begin = true;
  ASSERT_OK(greplay(g, 1));
  ASSERT(!weft_rec_graph_failed(g->r));
  CNT(g->inner)->refuse_begin = false;
  ASSERT_OK(greplay(g, 2));
  ASSERT_EQ(CNT(g->inner)->begins, 0);
  ASSERT_EQ(CNT(g->inner)->launches, 0);
  gcase_free(g);
  /* it cannot end: the segment's ops never ran */
  g = gcase_new();
  CNT(g->inner)->refuse_end = true;
  ASSERT_EQ(greplay(g, 1), WEFT_EDEVICE);
  ASSERT(weft_rec_graph_failed(g->r));
  ASSERT_OK(greplay(g, 1));
  ASSERT_EQ(CNT(g->inner)->begins, 1);
  /* a host copy inside a capture (here: none can be, the recorder ends
   * the segment first) never reached the backend */
  ASSERT(!CNT(g->inner)->broken);
  gcase_free(g);
}

TEST(graphs_of_a_dry_recording_are_captured_by_its_second_replay) {
  gcase *g = gcase_new();
  cnt_backend *c = CNT(g->inner);
  /* recorded again, DRY: nothing ran, so the first replay runs the ops
   * (first calls may plan or grow scratch) and the second captures */
  ASSERT_OK(weft_rec_begin(g->r, WEFT_REC_DRY));
  ASSERT_OK(gscript(weft_rec_backend(g->r), g->x[0], g->o1, g->o2));
  ASSERT_OK(weft_rec_end(g->r));
  const int64_t ops = c->ops;
  ASSERT_OK(greplay(g, 1));
  ASSERT_EQ(c->begins, 0);
  ASSERT_EQ(c->ops, ops + 3);
  ASSERT_OK(greplay(g, 2));
  ASSERT_EQ(c->begins, 2);
  ASSERT_OK(greplay(g, 3));
  ASSERT_EQ(c->ops, ops + 3);
  ASSERT_EQ(c->launches, 4);
  gcase_free(g);
}
