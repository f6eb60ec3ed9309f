/* test_async.c - deferred completion (plugin ABI 1.3): a node whose run()
 * defers and returns WEFT_PENDING frees its worker thread at once and ends
 * when the plugin's own thread calls complete.  With one worker thread an
 * independent node runs while it is pending; its outputs reach its
 * consumers; an error given to complete fails it with its message and
 * stops its dependents; cancellation while pending waits for complete;
 * its outputs are cached; events stay in order; 200 deferred nodes in a
 * chain and in a fan compute the right values.  The nodes come from
 * tests/plugins/asyncnodes.c (AsyncInc: in + in2 + add, after delay_ms;
 * its mode param picks how it ends). */
#include <stdatomic.h>

#include "common.h"

/* Events as "kind:node", with their times and, for done, the node's ms. */
typedef struct evs {
  char (*ev)[48];
  double *t, *ms;
  int n, cap;
  weft_ctx *cancel_ctx; /* cancelled at the first progress:<cancel_on> */
  const char *cancel_on;
} evs;

static void evs_cb(const weft_event *e, void *user) {
  evs *l = user;
  static const char *const k[] = {"run_start", "start",   "progress",
                                  "done",      "cached",  "failed",
                                  "log",       "run_done"};
  if (l->n == l->cap) {
    l->cap = l->cap ? 2 * l->cap : 1024;
    l->ev = realloc(l->ev, (size_t)l->cap * sizeof *l->ev);
    l->t = realloc(l->t, (size_t)l->cap * sizeof *l->t);
    l->ms = realloc(l->ms, (size_t)l->cap * sizeof *l->ms);
    ASSERT(l->ev && l->t && l->ms);
  }
  snprintf(l->ev[l->n], sizeof l->ev[0], "%s:%s", k[e->kind],
           e->node_id ? e->node_id : "");
  l->t[l->n] = e->t;
  l->ms[l->n++] = e->kind == WEFT_EV_NODE_DONE ? e->ms : -1;
  if (l->cancel_ctx && e->kind == WEFT_EV_NODE_PROGRESS && e->k == 0 &&
      strcmp(e->node_id, l->cancel_on) == 0)
    weft_ctx_cancel(l->cancel_ctx);
}

static void evs_free(evs *l) {
  free(l->ev);
  free(l->t);
  free(l->ms);
}

static int evs_find(const evs *l, const char *s) {
  for (int i = 0; i < l->n; i++)
    if (strcmp(l->ev[i], s) == 0) return i;
  return -1;
}

static int evs_count_exact(const evs *l, const char *s) {
  int n = 0;
  for (int i = 0; i < l->n; i++)
    n += strcmp(l->ev[i], s) == 0;
  return n;
}

static int evs_count(const evs *l, const char *prefix) {
  int n = 0;
  for (int i = 0; i < l->n; i++)
    n += strncmp(l->ev[i], prefix, strlen(prefix)) == 0;
  return n;
}

/* Each node that has a done event started before it, once; times never
 * go back. */
static void check_order(const evs *l) {
  char want[48];
  for (int i = 0; i < l->n; i++) {
    if (strncmp(l->ev[i], "done:", 5)) continue;
    snprintf(want, sizeof want, "start:%s", l->ev[i] + 5);
    int s = evs_find(l, want);
    ASSERT(s >= 0 && s < i);
    ASSERT_EQ(evs_count_exact(l, want), 1);
  }
  for (int i = 1; i < l->n; i++)
    ASSERT(l->t[i] >= l->t[i - 1]);
  ASSERT_STR_EQ(l->ev[0], "run_start:");
  ASSERT_STR_EQ(l->ev[l->n - 1], "run_done:");
}

/* A context with testnodes and asyncnodes, and one worker thread (before
 * libuv starts its pool, which it does once per process). */
static weft_ctx *async_ctx(evs *l) {
  setenv("UV_THREADPOOL_SIZE", "1", 1);
  weft_ctx *ctx = test_ctx();
  test_load_plugin(ctx, "asyncnodes");
  weft_ctx_set_event_cb(ctx, evs_cb, l);
  return ctx;
}

/* Runs yaml once; *out gets graph output 0 ("-" when none). */
static int run_yaml(weft_ctx *ctx, const char *yaml, char *out, size_t len) {
  weft_graph *g;
  int rc = load(ctx, yaml, &g);
  if (rc) fprintf(stderr, "%s\n", weft_ctx_error(ctx));
  ASSERT_OK(rc);
  rc = weft_graph_run(ctx, g);
  if (rc || weft_graph_output_format(g, 0, out, len)) snprintf(out, len, "-");
  weft_graph_free(g);
  return rc;
}

static const char released_yaml[] =
    "version: 1\n"
    "nodes:\n"
    "  a: {op: AsyncInc, params: {add: 5, delay_ms: 20, mode: wait}}\n"
    "  b: {op: AsyncInc, params: {add: 7, mode: signal}}\n"
    "  c: {op: TestAdd, inputs: {a: a.value, b: b.value}}\n"
    "outputs: {v: c.value}\n";

TEST(worker_released_while_pending) {
  evs l = {0};
  weft_ctx *ctx = async_ctx(&l);
  char out[64];
  ASSERT_OK(run_yaml(ctx, released_yaml, out, sizeof out));
  ASSERT_STR_EQ(out, "12"); /* a's output reached c */
  check_order(&l);
  /* the one worker ran b while a was pending: a's job completes only
   * after b ran (it fails after 10 s otherwise), so b's whole life lies
   * between a's start and a's end */
  int sa = evs_find(&l, "start:a"), da = evs_find(&l, "done:a");
  int sb = evs_find(&l, "start:b"), db = evs_find(&l, "done:b");
  int sc = evs_find(&l, "start:c");
  ASSERT(sa >= 0 && da >= 0 && sb >= 0 && db >= 0 && sc >= 0);
  ASSERT(db < da);
  ASSERT(da < sc);          /* the consumer waited for complete */
  ASSERT(l.ms[da] >= 20.0); /* a's time runs to its complete */
  ASSERT(l.t[db] < l.t[da]);
  ASSERT_EQ(evs_count(&l, "progress:a"), 2); /* 0/1 and 1/1 from its thread */
  weft_ctx_free(ctx);
  evs_free(&l);
}

TEST(error_from_complete_fails_node) {
  evs l = {0};
  weft_ctx *ctx = async_ctx(&l);
  static const char yaml[] =
      "version: 1\n"
      "nodes:\n"
      "  a: {op: AsyncInc, params: {delay_ms: 5, fail: 'stream 3 faulted'}}\n"
      "  c: {op: TestAdd, inputs: {a: a.value}}\n"
      "  d: {op: AsyncInc, inputs: {in: c.value}}\n"
      "outputs: {v: d.value}\n";
  char out[64];
  ASSERT_EQ(run_yaml(ctx, yaml, out, sizeof out), WEFT_EIO);
  ASSERT_CONTAINS(weft_ctx_error(ctx),
                  "node 'a' (AsyncInc) failed: stream 3 faulted");
  ASSERT(evs_find(&l, "failed:a") > evs_find(&l, "start:a"));
  ASSERT_EQ(evs_find(&l, "start:c"), -1);
  ASSERT_EQ(evs_find(&l, "start:d"), -1);
  ASSERT_EQ(evs_count(&l, "done:"), 0);
  ASSERT_STR_EQ(l.ev[l.n - 1], "run_done:");
  weft_ctx_free(ctx);
  evs_free(&l);
}

TEST(cancel_while_pending) {
  evs l = {0};
  weft_ctx *ctx = async_ctx(&l);
  l.cancel_ctx = ctx;
  l.cancel_on = "a";
  static const char yaml[] = "version: 1\n"
                             "nodes:\n"
                             "  a: {op: AsyncInc, params: {delay_ms: 60000}}\n"
                             "  c: {op: TestAdd, inputs: {a: a.value}}\n"
                             "outputs: {v: c.value}\n";
  char out[64];
  uint64_t t0 = uv_hrtime();
  ASSERT_EQ(run_yaml(ctx, yaml, out, sizeof out), WEFT_ECANCELED);
  /* the plugin saw the cancellation and completed: no 60 s wait */
  ASSERT((uv_hrtime() - t0) / 1000000 < 10000);
  int p = evs_find(&l, "progress:a"), f = evs_find(&l, "failed:a");
  ASSERT(p >= 0 && f > p); /* cancelled while pending, ended by complete */
  ASSERT_EQ(evs_find(&l, "start:c"), -1);
  ASSERT_EQ(evs_count(&l, "done:"), 0);
  ASSERT_STR_EQ(l.ev[l.n - 1], "run_done:");
  weft_ctx_free(ctx);
  evs_free(&l);
}

TEST(cache_hit_on_rerun) {
  evs l = {0};
  weft_ctx *ctx = async_ctx(&l);
  static const char yaml[] =
      "version: 1\n"
      "inputs: {k: 1}\n"
      "nodes:\n"
      "  a: {op: AsyncInc, params: {add: 40, delay_ms: 2}}\n"
      "  c: {op: TestAdd, inputs: {a: a.value}, params: {bias: $k}}\n"
      "outputs: {v: c.value}\n";
  weft_graph *g;
  ASSERT_OK(load(ctx, yaml, &g));
  char out[64];
  ASSERT_OK(weft_graph_run(ctx, g));
  ASSERT_OK(weft_graph_output_format(g, 0, out, sizeof out));
  ASSERT_STR_EQ(out, "41");
  ASSERT(evs_find(&l, "done:a") >= 0);
  check_order(&l);
  l.n = 0;
  ASSERT_OK(weft_graph_set_input(ctx, g, "k", "2"));
  ASSERT_OK(weft_graph_run(ctx, g));
  ASSERT_OK(weft_graph_output_format(g, 0, out, sizeof out));
  ASSERT_STR_EQ(out, "42");
  ASSERT(evs_find(&l, "cached:a") >= 0);
  ASSERT_EQ(evs_find(&l, "start:a"), -1);
  ASSERT(evs_find(&l, "done:c") >= 0);
  weft_graph_free(g);
  weft_ctx_free(ctx);
  evs_free(&l);
}

/* n0 -> ... -> n199, each AsyncInc add 1: 200 */
TEST(chain_200_deferred) {
  evs l = {0};
  weft_ctx *ctx = async_ctx(&l);
  size_t cap = 200 * 96 + 256, len = 0;
  char *y = malloc(cap);
  ASSERT(y != NULL);
  len += (size_t)snprintf(y + len, cap - len, "version: 1\nnodes:\n");
  for (int i = 0; i < 200; i++) {
    len += (size_t)snprintf(y + len, cap - len, "  n%d: {op: AsyncInc", i);
    if (i)
      len += (size_t)snprintf(y + len, cap - len, ", inputs: {in: n%d.value}",
                              i - 1);
    len += (size_t)snprintf(y + len, cap - len, "}\n");
  }
  snprintf(y + len, cap - len, "outputs: {v: n199.value}\n");
  char out[64];
  ASSERT_OK(run_yaml(ctx, y, out, sizeof out));
  ASSERT_STR_EQ(out, "200");
  check_order(&l);
  ASSERT_EQ(evs_count(&l, "done:"), 200);
  /* each link starts after its producer's end */
  char a[48], b[48];
  for (int i = 1; i < 200; i++) {
    snprintf(a, sizeof a, "done:n%d", i - 1);
    snprintf(b, sizeof b, "start:n%d", i);
    ASSERT(evs_find(&l, a) < evs_find(&l, b));
  }
  free(y);
  weft_ctx_free(ctx);
  evs_free(&l);
}

/* src (1) fans out to f0..f199 (1 + k), summed by a chain r0..r199 of
 * AsyncInc (in: r<k-1>, in2: f<k>): 200 + 199*200/2 = 20100 */
TEST(fan_200_deferred) {
  evs l = {0};
  weft_ctx *ctx = async_ctx(&l);
  size_t cap = 400 * 128 + 256, len = 0;
  char *y = malloc(cap);
  ASSERT(y != NULL);
  len += (size_t)snprintf(y + len, cap - len,
                          "version: 1\nnodes:\n  src: {op: AsyncInc}\n");
  for (int k = 0; k < 200; k++)
    len += (size_t)snprintf(
        y + len, cap - len,
        "  f%d: {op: AsyncInc, inputs: {in: src.value}, params: {add: %d, "
        "delay_ms: %d}}\n",
        k, k, k % 3);
  for (int k = 0; k < 200; k++) {
    len += (size_t)snprintf(y + len, cap - len,
                            "  r%d: {op: AsyncInc, params: {add: 0}, "
                            "inputs: {in2: f%d.value",
                            k, k);
    if (k)
      len += (size_t)snprintf(y + len, cap - len, ", in: r%d.value", k - 1);
    len += (size_t)snprintf(y + len, cap - len, "}}\n");
  }
  snprintf(y + len, cap - len, "outputs: {v: r199.value}\n");
  char out[64];
  ASSERT_OK(run_yaml(ctx, y, out, sizeof out));
  ASSERT_STR_EQ(out, "20100");
  check_order(&l);
  ASSERT_EQ(evs_count(&l, "done:"), 401);
  ASSERT(evs_find(&l, "done:src") < evs_find(&l, "start:f0"));
  free(y);
  weft_ctx_free(ctx);
  evs_free(&l);
}

/* complete called inside run, before it returns WEFT_PENDING: the node
 * ends once both happened */
TEST(complete_before_return) {
  evs l = {0};
  weft_ctx *ctx = async_ctx(&l);
  static const char yaml[] =
      "version: 1\n"
      "nodes:\n"
      "  a: {op: AsyncInc, params: {add: 3, mode: sync}}\n"
      "  b: {op: AsyncInc, inputs: {in: a.value}, params: {mode: sync}}\n"
      "  c: {op: TestAdd, inputs: {a: b.value}}\n"
      "outputs: {v: c.value}\n";
  char out[64];
  ASSERT_OK(run_yaml(ctx, yaml, out, sizeof out));
  ASSERT_STR_EQ(out, "4");
  check_order(&l);
  ASSERT_EQ(evs_count(&l, "done:"), 3);
  weft_ctx_free(ctx);
  evs_free(&l);
}

TEST(pending_without_defer_is_a_plugin_bug) {
  evs l = {0};
  weft_ctx *ctx = async_ctx(&l);
  static const char yaml[] = "version: 1\n"
                             "nodes:\n"
                             "  a: {op: AsyncInc, params: {mode: nodefer}}\n"
                             "outputs: {v: a.value}\n";
  char out[64];
  ASSERT_EQ(run_yaml(ctx, yaml, out, sizeof out), WEFT_EINTERNAL);
  ASSERT_CONTAINS(weft_ctx_error(ctx),
                  "node 'a' (AsyncInc) failed: plugin bug: run() returned "
                  "WEFT_PENDING without defer()");
  weft_ctx_free(ctx);
  evs_free(&l);
}

typedef struct outcome {
  int status;
  char out[64];
} outcome;

static void on_done(weft_run *run, void *user) {
  outcome *o = user;
  o->status = weft_run_status(run);
  if (weft_run_output_format(run, 0, o->out, sizeof o->out))
    snprintf(o->out, sizeof o->out, "-");
}

/* Two runs in flight at once: the second run's copy of the pending node
 * waits for the first's complete instead of computing it again, and both
 * get its value. */
TEST(second_run_follows_pending_node) {
  evs l = {0};
  weft_ctx *ctx = async_ctx(&l);
  static const char yaml[] =
      "version: 1\n"
      "inputs: {k: 0}\n"
      "nodes:\n"
      "  a: {op: AsyncInc, params: {add: 10, delay_ms: 30}}\n"
      "  c: {op: TestAdd, inputs: {a: a.value}, params: {bias: $k}}\n"
      "outputs: {v: c.value}\n";
  weft_graph *g;
  ASSERT_OK(load(ctx, yaml, &g));
  weft_runq *q;
  ASSERT_OK(weft_runq_new(ctx, g, 2, &q));
  outcome o1 = {-1, ""}, o2 = {-1, ""};
  const char *set1[] = {"k=1", NULL}, *set2[] = {"k=2", NULL};
  weft_run_opts r1 = {
      .struct_size = sizeof r1, .set = set1, .done = on_done, .user = &o1};
  weft_run_opts r2 = {
      .struct_size = sizeof r2, .set = set2, .done = on_done, .user = &o2};
  ASSERT_OK(weft_runq_submit(q, &r1, NULL));
  ASSERT_OK(weft_runq_submit(q, &r2, NULL));
  ASSERT_OK(weft_runq_drain(q));
  weft_runq_free(q);
  ASSERT_EQ(o1.status, 0);
  ASSERT_EQ(o2.status, 0);
  ASSERT_STR_EQ(o1.out, "11");
  ASSERT_STR_EQ(o2.out, "12");
  ASSERT_EQ(evs_count_exact(&l, "start:a"), 1); /* computed once */
  ASSERT_EQ(evs_count_exact(&l, "done:a"), 1);
  ASSERT(evs_find(&l, "cached:a") > evs_find(&l, "done:a"));
  ASSERT_EQ(evs_count_exact(&l, "done:c"), 2);
  weft_graph_free(g);
  weft_ctx_free(ctx);
  evs_free(&l);
}
