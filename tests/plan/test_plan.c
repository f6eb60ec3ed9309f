/* test_plan.c - the memory planners: arena offsets from lifetimes (no two
 * live tensors overlap, the arena is at least the lower bound, known cases
 * reach it) and weight residency (Belady: as few loads as an exhaustive
 * search when blocks are the same size). */
#include "test.h"
#include "weft/plan.h"

/* xorshift, so cases are the same on every machine */
static uint64_t rng_next(uint64_t *s) {
  *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
  return *s;
}

static uint64_t up(uint64_t x, uint64_t a) {
  return (x + a - 1) / a * a;
}

/* every invariant a plan must keep */
static void check_plan(const weft_plan_tensor *t, int n, uint64_t align,
                       const weft_arena_stats *st) {
  uint64_t end = 0, naive = 0;
  for (int i = 0; i < n; i++) {
    uint64_t si = up(t[i].bytes, align);
    naive += si;
    ASSERT_EQ(t[i].offset % align, 0);
    if (si && t[i].offset + si > end) end = t[i].offset + si;
    for (int j = 0; j < i; j++) {
      uint64_t sj = up(t[j].bytes, align);
      bool live = t[i].first <= t[j].last && t[j].first <= t[i].last;
      bool apart =
          t[i].offset + si <= t[j].offset || t[j].offset + sj <= t[i].offset;
      if (live && si && sj && !apart)
        WEFT_TEST_FAIL_("tensors %d and %d overlap in time and space", i, j);
    }
  }
  ASSERT_EQ(st->arena, end);
  ASSERT_EQ(st->naive, naive);
  ASSERT(st->arena >= st->lower_bound);
  ASSERT(st->arena <= st->naive);
  /* the bound is what is alive at peak_time */
  uint64_t live = 0;
  for (int i = 0; i < n; i++)
    if (t[i].first <= st->peak_time && st->peak_time <= t[i].last)
      live += up(t[i].bytes, align);
  ASSERT_EQ(live, st->lower_bound);
}

TEST(arena_reuses_memory_of_dead_tensors_and_reaches_the_bound) {
  /* A and C never live together, nor B and D: two slots suffice */
  weft_plan_tensor t[] = {
      {100, 0, 1, 0}, {50, 1, 2, 0}, {100, 2, 3, 0}, {50, 3, 4, 0}};
  weft_arena_stats st;
  ASSERT_EQ(weft_arena_plan(t, 4, 1, &st), 0);
  check_plan(t, 4, 1, &st);
  ASSERT_EQ(st.lower_bound, 150);
  ASSERT_EQ(st.arena, 150);
  ASSERT_EQ(st.naive, 300);
  ASSERT_EQ(t[0].offset, t[2].offset);
  ASSERT_EQ(t[1].offset, t[3].offset);
}

TEST(arena_chain_needs_two_tensors) {
  /* a chain of ops, each reading the last output: two buffers ping-pong */
  weft_plan_tensor t[64];
  for (int i = 0; i < 64; i++)
    t[i] = (weft_plan_tensor){1000, i, i + 1, 0};
  weft_arena_stats st;
  ASSERT_EQ(weft_arena_plan(t, 64, 256, &st), 0);
  check_plan(t, 64, 256, &st);
  ASSERT_EQ(st.lower_bound, 2048);
  ASSERT_EQ(st.arena, 2048);
}

TEST(arena_unet_like_skips_stay_within_the_bound_ratio) {
  /* an encoder keeps each level's output for the decoder (skip links), as
   * a UNet does; the planner must fit the decoder's temporaries around the
   * skips without growing past the bound */
  weft_plan_tensor t[32];
  int n = 0, L = 6;
  for (int l = 0; l < L; l++) { /* skip l written at op l, read at 2L-l */
    uint64_t sz = 4096u >> (l / 2);
    t[n++] = (weft_plan_tensor){sz, l, 2 * L - l, 0};
    t[n++] = (weft_plan_tensor){2 * sz, l, l, 0}; /* a scratch buffer */
  }
  for (int k = 0; k < L; k++) /* decoder outputs, each read by the next */
    t[n++] =
        (weft_plan_tensor){4096u >> ((L - 1 - k) / 2), L + k, L + k + 1, 0};
  weft_arena_stats st;
  ASSERT_EQ(weft_arena_plan(t, n, 256, &st), 0);
  check_plan(t, n, 256, &st);
  fprintf(stderr, "unet-like: arena %llu, bound %llu, naive %llu\n",
          (unsigned long long)st.arena, (unsigned long long)st.lower_bound,
          (unsigned long long)st.naive);
  /* greedy by size needs 18432 bytes here against a bound of 16384; a
   * random search over placement orders (tools-side experiment) reaches
   * 16384, so the 12.5% is the heuristic's: it must not get worse */
  ASSERT_EQ(st.lower_bound, 16384);
  ASSERT(st.arena * 8 <= st.lower_bound * 9);
}

TEST(arena_random_plans_keep_every_invariant) {
  uint64_t seed = 0x9e3779b97f4a7c15u;
  weft_plan_tensor t[80];
  for (int c = 0; c < 400; c++) {
    int n = 1 + (int)(rng_next(&seed) % 80);
    uint64_t align = 1u << (rng_next(&seed) % 9);
    for (int i = 0; i < n; i++) {
      int32_t a = (int32_t)(rng_next(&seed) % 50);
      int32_t len = (int32_t)(rng_next(&seed) % 12);
      uint64_t bytes = rng_next(&seed) % 5 == 0 ? 0 : rng_next(&seed) % 100000;
      t[i] = (weft_plan_tensor){bytes, a, a + len, 0};
    }
    weft_arena_stats st;
    ASSERT_EQ(weft_arena_plan(t, n, align, &st), 0);
    check_plan(t, n, align, &st);
  }
}

TEST(arena_refuses_bad_lifetimes_and_alignments) {
  weft_plan_tensor t[] = {{10, 3, 2, 0}};
  weft_arena_stats st;
  ASSERT_EQ(weft_arena_plan(t, 1, 256, &st), WEFT_EINVAL);
  t[0].last = 3;
  ASSERT_EQ(weft_arena_plan(t, 1, 3, &st), WEFT_EINVAL);
  ASSERT_EQ(weft_arena_plan(t, 1, 0, &st), 0); /* 0: the default, 256 */
  ASSERT_EQ(st.arena, 256);
  ASSERT_EQ(weft_arena_plan(NULL, 0, 0, &st), 0);
  ASSERT_EQ(st.arena, 0);
}

/* ---- residency ------------------------------------------------------------
 */

static int32_t plan_loads(const uint64_t *bytes, int nb, const int32_t *seq,
                          int ns, uint64_t budget, weft_plan_step *steps) {
  for (int s = 0; s < ns; s++)
    steps[s] = (weft_plan_step){seq[s], 0, 0, NULL};
  weft_residency_stats st;
  ASSERT_EQ(weft_residency_plan(bytes, nb, steps, ns, budget, &st), 0);
  ASSERT(st.peak_resident <= budget);
  /* replay: every use finds its block resident, and the plan never goes
   * over the budget */
  bool res[16] = {0};
  uint64_t r = 0;
  int32_t loads = 0;
  for (int s = 0; s < ns; s++) {
    for (int k = 0; k < steps[s].n_evict; k++) {
      ASSERT(res[steps[s].evict[k]]);
      res[steps[s].evict[k]] = false;
      r -= bytes[steps[s].evict[k]];
    }
    if (steps[s].load) {
      ASSERT(!res[seq[s]]);
      res[seq[s]] = true;
      r += bytes[seq[s]];
      loads++;
    }
    ASSERT(res[seq[s]]);
    ASSERT(r <= budget);
  }
  ASSERT_EQ(loads, st.loads);
  return loads;
}

/* fewest loads of any eviction policy, by exhaustive search (same-size
 * blocks: capacity in blocks) */
static int32_t best_loads(const int32_t *seq, int ns, int s, unsigned res,
                          int cap) {
  if (s == ns) return 0;
  unsigned b = 1u << seq[s];
  if (res & b) return best_loads(seq, ns, s + 1, res, cap);
  if (__builtin_popcount(res) < cap)
    return 1 + best_loads(seq, ns, s + 1, res | b, cap);
  int32_t best = INT32_MAX;
  for (int v = 0; v < 16; v++)
    if (res & (1u << v)) {
      int32_t x = best_loads(seq, ns, s + 1, (res & ~(1u << v)) | b, cap);
      if (x < best) best = x;
    }
  return 1 + best;
}

TEST(residency_evicts_the_block_needed_furthest_ahead) {
  const uint64_t bytes[] = {1, 1, 1};
  const int32_t seq[] = {0, 1, 2, 0, 1};
  weft_plan_step steps[5];
  /* at C, A is needed next (step 3) and B later (step 4): B goes */
  ASSERT_EQ(plan_loads(bytes, 3, seq, 5, 2, steps), 4);
  ASSERT(steps[2].load);
  ASSERT_EQ(steps[2].n_evict, 1);
  ASSERT_EQ(steps[2].evict[0], 1);
  ASSERT(!steps[3].load);
  ASSERT(steps[4].load);
  weft_residency_free(steps, 5);
}

TEST(residency_matches_exhaustive_search_for_equal_blocks) {
  uint64_t seed = 12345;
  const uint64_t bytes[6] = {7, 7, 7, 7, 7, 7};
  int32_t seq[12];
  weft_plan_step steps[12];
  for (int c = 0; c < 300; c++) {
    int nb = 2 + (int)(rng_next(&seed) % 5),
        ns = 1 + (int)(rng_next(&seed) % 12);
    int cap = 1 + (int)(rng_next(&seed) % (uint64_t)(nb - 1));
    for (int s = 0; s < ns; s++)
      seq[s] = (int32_t)(rng_next(&seed) % (uint64_t)nb);
    int32_t got = plan_loads(bytes, nb, seq, ns, (uint64_t)cap * 7, steps);
    ASSERT_EQ(got, best_loads(seq, ns, 0, 0, cap));
    weft_residency_free(steps, ns);
  }
}

TEST(residency_loads_each_block_once_when_all_fit) {
  const uint64_t bytes[] = {300, 500, 200};
  const int32_t seq[] = {0, 1, 2, 1, 0, 2, 1, 1, 0};
  weft_plan_step steps[9];
  ASSERT_EQ(plan_loads(bytes, 3, seq, 9, 1000, steps), 3);
  for (int s = 0; s < 9; s++)
    ASSERT_EQ(steps[s].n_evict, 0);
  weft_residency_free(steps, 9);
}

TEST(residency_variable_sizes_stay_within_budget) {
  uint64_t seed = 777;
  uint64_t bytes[8];
  int32_t seq[40];
  weft_plan_step steps[40];
  for (int c = 0; c < 200; c++) {
    uint64_t maxb = 0;
    for (int b = 0; b < 8; b++) {
      bytes[b] = 1 + rng_next(&seed) % 1000;
      if (bytes[b] > maxb) maxb = bytes[b];
    }
    for (int s = 0; s < 40; s++)
      seq[s] = (int32_t)(rng_next(&seed) % 8);
    uint64_t budget = maxb + rng_next(&seed) % 3000;
    int32_t loads = plan_loads(bytes, 8, seq, 40, budget, steps);
    ASSERT(loads >= 1 && loads <= 40);
    weft_residency_free(steps, 40);
  }
}

TEST(residency_refuses_a_block_larger_than_the_budget) {
  const uint64_t bytes[] = {10, 2000};
  weft_plan_step steps[2] = {{0, 0, 0, NULL}, {1, 0, 0, NULL}};
  weft_residency_stats st;
  ASSERT_EQ(weft_residency_plan(bytes, 2, steps, 2, 1000, &st), WEFT_ERANGE);
  steps[1].block = 2;
  ASSERT_EQ(weft_residency_plan(bytes, 2, steps, 2, 5000, &st), WEFT_EINVAL);
}
