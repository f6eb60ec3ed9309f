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
