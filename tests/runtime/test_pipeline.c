/* test_pipeline.c - several runs of one graph in flight (weft_runq): they
 * overlap, keep their own inputs, outputs, directories and run_info, share
 * the output cache and wait for each other's keys in flight, fail and get
 * cancelled on their own, and complete in submission order.  Overlap and
 * order are read from events and from nodes that only pass when runs
 * overlap (TestBarrier) or when the test opens a gate (TestGate), never
 * from timing. */
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

/* Events as "R kind:node" strings, R the run id. */
typedef struct evlog {
  char ev[1024][96];
  int n;
  /* optional actions, done once when an event matches: create a file */
  char when[96];
  char file[1024];
  weft_ctx *cancel_ctx; /* cancel when `when` matches, if set */
  int fired;
} evlog;

static void ev_cb(const weft_event *e, void *user) {
  evlog *l = user;
  static const char *const k[] = {"run_start", "start",   "progress",
                                  "done",      "cached",  "failed",
                                  "log",       "run_done"};
  char s[96];
  snprintf(s, sizeof s, "%llu %s:%s", (unsigned long long)e->run_id, k[e->kind],
           e->node_id ? e->node_id : "");
  if (e->kind != WEFT_EV_NODE_PROGRESS && l->n < 1024)
    snprintf(l->ev[l->n++], 96, "%s", s);
  if (getenv("WEFT_TEST_EVENTS")) fprintf(stderr, "event: %s\n", s);
  if (!l->fired && l->when[0] && strcmp(s, l->when) == 0) {
    l->fired = 1;
    if (l->file[0]) {
      FILE *f = fopen(l->file, "w");
      ASSERT(f != NULL);
      fclose(f);
    }
    if (l->cancel_ctx) weft_ctx_cancel(l->cancel_ctx);
  }
}

static int ev_find(const evlog *l, const char *s) {
  for (int i = 0; i < l->n; i++)
    if (strcmp(l->ev[i], s) == 0) return i;
  return -1;
}

static int ev_count(const evlog *l, const char *prefix) {
  int n = 0;
  for (int i = 0; i < l->n; i++)
    n += strncmp(l->ev[i], prefix, strlen(prefix)) == 0;
  return n;
}

/* What a completion callback saw. */
typedef struct result {
  uint64_t id;
  void *user;
  int status;
  char err[1024];
  char out[3][512];
  char inputs[1024];
} result;

typedef struct results {
  result r[16];
  int n;
  weft_runq *q; /* to try re-entering from the callback */
  int reenter_rc;
} results;

static void on_done(weft_run *run, void *user) {
  results *rs = user;
  result *x = &rs->r[rs->n++];
  x->id = weft_run_id(run);
  x->user = weft_run_user(run);
  x->status = weft_run_status(run);
  snprintf(x->err, sizeof x->err, "%s", weft_run_error(run));
  for (int i = 0; i < 3; i++)
    if (weft_run_output_format(run, i, x->out[i], sizeof x->out[i]))
      snprintf(x->out[i], sizeof x->out[i], "-");
  snprintf(x->inputs, sizeof x->inputs, "%s", weft_run_inputs_json(run));
  if (rs->q) rs->reenter_rc = weft_runq_submit(rs->q, NULL, NULL);
}

static void submit(weft_runq *q, results *rs, const char *const *set,
                   const char *outdir) {
  weft_run_opts o = {.struct_size = sizeof o,
                     .set = set,
                     .output_dir = outdir,
                     .done = on_done,
                     .user = rs};
  ASSERT_OK(weft_runq_submit(q, &o, NULL));
}

static char *tmp(const char *name) {
  static char p[8][1024];
  static int k;
  char *s = p[k++ % 8];
  snprintf(s, 1024, "%s/%s", weft_test_tmpdir(), name);
  return s;
}

static int count_lines(const char *path) {
  char *s = weft_test_read_file(path, NULL);
  int n = 0;
  for (char *p = s; p && *p; p++)
    n += *p == '\n';
  free(s);
  return n;
}

TEST(two_runs_overlap_on_one_loop) {
  /* each run's barrier passes only while the other run's is running too:
   * one after the other, the first would time out */
  weft_ctx *ctx = test_ctx();
  const char *y = "version: 1\n"
                  "inputs: {tag: 0}\n"
                  "nodes:\n"
                  "  bar: {op: TestBarrier, params: {count: 2, tag: $tag}}\n"
                  "  out: {op: TestAdd, inputs: {a: bar.value}}\n"
                  "outputs: {v: out.value}\n";
  weft_graph *g;
  ASSERT_OK(load(ctx, y, &g));
  evlog l = {0};
  weft_ctx_set_event_cb(ctx, ev_cb, &l);
  weft_runq *q;
  ASSERT_OK(weft_runq_new(ctx, g, 2, &q));
  results rs = {0};
  submit(q, &rs, (const char *const[]){"tag=1", NULL}, NULL);
  submit(q, &rs, (const char *const[]){"tag=2", NULL}, NULL);
  ASSERT_EQ(weft_runq_pending(q), 2);
  ASSERT_OK(weft_runq_drain(q));
  ASSERT_EQ(weft_runq_pending(q), 0);
  ASSERT_EQ(rs.n, 2);
  ASSERT_EQ(rs.r[0].id, 1);
  ASSERT_EQ(rs.r[1].id, 2);
  ASSERT_EQ(rs.r[0].status, 0);
  ASSERT_EQ(rs.r[1].status, 0);
  ASSERT_STR_EQ(rs.r[0].out[0], "1");
  ASSERT_STR_EQ(rs.r[1].out[0], "2");
  ASSERT(rs.r[0].user == &rs);
  /* both barriers started before either finished */
  int s1 = ev_find(&l, "1 start:bar"), s2 = ev_find(&l, "2 start:bar");
  int d1 = ev_find(&l, "1 done:bar"), d2 = ev_find(&l, "2 done:bar");
  ASSERT(s1 >= 0 && s2 >= 0 && d1 >= 0 && d2 >= 0);
  ASSERT(s2 < d1 && s1 < d2);
  ASSERT(ev_find(&l, "2 run_start:") < ev_find(&l, "1 run_done:"));
  weft_runq_free(q);
  weft_graph_free(g);
  weft_ctx_free(ctx);
}

TEST(a_window_of_one_runs_one_after_another) {
  weft_ctx *ctx = test_ctx();
  const char *y =
      "version: 1\n"
      "inputs: {x: 0}\n"
      "nodes:\n"
      "  a: {op: TestInt, params: {value: $x}}\n"
      "  b: {op: TestAdd, inputs: {a: a.value}, params: {bias: 1}}\n"
      "outputs: {v: b.value}\n";
  weft_graph *g;
  ASSERT_OK(load(ctx, y, &g));
  evlog l = {0};
  weft_ctx_set_event_cb(ctx, ev_cb, &l);
  weft_runq *q;
  ASSERT_OK(weft_runq_new(ctx, g, 1, &q));
  results rs = {0};
  submit(q, &rs, (const char *const[]){"x=1", NULL}, NULL);
  submit(q, &rs, (const char *const[]){"x=2", NULL}, NULL);
  submit(q, &rs, (const char *const[]){"x=3", NULL}, NULL);
  weft_runq_free(q); /* drains */
  ASSERT_EQ(rs.n, 3);
  for (int i = 0; i < 3; i++) {
    char want[8];
    snprintf(want, sizeof want, "%d", i + 2);
    ASSERT_STR_EQ(rs.r[i].out[0], want);
  }
  ASSERT(ev_find(&l, "1 run_done:") < ev_find(&l, "2 run_start:"));
  ASSERT(ev_find(&l, "2 run_done:") < ev_find(&l, "3 run_start:"));
  weft_graph_free(g);
  weft_ctx_free(ctx);
}

TEST(a_key_in_flight_is_computed_once_for_two_runs) {
  /* run 2 is submitted while run 1's nodes wait in the pool (the loop has
   * not run in between): its x and cx follow run 1's instead of running */
  weft_ctx *ctx = test_ctx();
  char yaml[2048];
  snprintf(yaml, sizeof yaml,
           "version: 1\n"
           "inputs: {x: 1, seed: 0}\n"
           "nodes:\n"
           "  x: {op: TestInt, params: {value: $x}}\n"
           "  cx: {op: TestCount, inputs: {value: x.value}, params: {file: "
           "%s}}\n"
           "  s: {op: TestInt, params: {value: $seed}}\n"
           "  sum: {op: TestAdd, inputs: {a: cx.value, b: s.value}}\n"
           "outputs: {v: sum.value}\n",
           tmp("count.log"));
  weft_graph *g;
  ASSERT_OK(load(ctx, yaml, &g));
  evlog l = {0};
  weft_ctx_set_event_cb(ctx, ev_cb, &l);
  weft_runq *q;
  ASSERT_OK(weft_runq_new(ctx, g, 2, &q));
  results rs = {0};
  submit(q, &rs, (const char *const[]){"seed=10", NULL}, NULL);
  submit(q, &rs, (const char *const[]){"seed=20", NULL}, NULL);
  ASSERT_OK(weft_runq_drain(q));
  ASSERT_EQ(rs.n, 2);
  ASSERT_STR_EQ(rs.r[0].out[0], "11");
  ASSERT_STR_EQ(rs.r[1].out[0], "21");
  ASSERT_EQ(count_lines(tmp("count.log")), 1);
  ASSERT(ev_find(&l, "1 done:cx") >= 0);
  ASSERT_EQ(ev_find(&l, "2 start:cx"), -1);
  ASSERT_EQ(ev_find(&l, "2 start:x"), -1);
  /* a follower does not demand its producers: run 2 never needs its x */
  ASSERT_EQ(ev_find(&l, "2 cached:x"), -1);
  ASSERT(ev_find(&l, "2 cached:cx") > ev_find(&l, "1 done:cx"));
  ASSERT(ev_find(&l, "2 done:s") >= 0 && ev_find(&l, "2 done:sum") >= 0);
  /* a third run after both: plain cache hits, counted as before */
  submit(q, &rs, (const char *const[]){"seed=30", NULL}, NULL);
  ASSERT_OK(weft_runq_drain(q));
  ASSERT_STR_EQ(rs.r[2].out[0], "31");
  ASSERT_EQ(count_lines(tmp("count.log")), 1);
  ASSERT(ev_find(&l, "3 cached:cx") >= 0);
  ASSERT_EQ(ev_count(&l, "3 start:"), 2); /* s and sum */
  weft_runq_free(q);
  weft_graph_free(g);
  weft_ctx_free(ctx);
}

TEST(a_follower_takes_over_a_key_its_leaders_run_abandoned) {
  /* run 1 fails at f while its c still waits for the gate; run 2's c was
   * following run 1's c and must now compute it itself.  The gate opens
   * only when f's failure is reported, so the order is fixed. */
  weft_ctx *ctx = test_ctx();
  char yaml[4096];
  snprintf(yaml, sizeof yaml,
           "version: 1\n"
           "inputs: {bad: x}\n"
           "nodes:\n"
           "  z: {op: TestInt, params: {value: 0}}\n"
           "  f: {op: TestCount, inputs: {value: z.value}, params: {file: "
           "$bad}}\n"
           "  g: {op: TestGate, params: {file: %s, value: 5}}\n"
           "  c: {op: TestCount, inputs: {value: g.value}, params: {file: "
           "%s}}\n"
           "  sum: {op: TestAdd, inputs: {a: c.value, b: f.value}}\n"
           "outputs: {v: sum.value}\n",
           tmp("gate-open"), tmp("c.log"));
  weft_graph *g;
  ASSERT_OK(load(ctx, yaml, &g));
  evlog l = {0};
  snprintf(l.when, sizeof l.when, "1 failed:f");
  snprintf(l.file, sizeof l.file, "%s", tmp("gate-open"));
  weft_ctx_set_event_cb(ctx, ev_cb, &l);
  weft_runq *q;
  ASSERT_OK(weft_runq_new(ctx, g, 2, &q));
  results rs = {0};
  char bad1[1200], bad2[1200];
  snprintf(bad1, sizeof bad1, "bad=%s", tmp("no/such/dir/f.log"));
  snprintf(bad2, sizeof bad2, "bad=%s", tmp("f.log"));
  submit(q, &rs, (const char *const[]){bad1, NULL}, NULL);
  submit(q, &rs, (const char *const[]){bad2, NULL}, NULL);
  ASSERT_OK(weft_runq_drain(q));
  ASSERT_EQ(l.fired, 1);
  ASSERT_EQ(rs.n, 2);
  ASSERT_EQ(rs.r[0].status, WEFT_EIO);
  ASSERT_CONTAINS(rs.r[0].err, "node 'f' (TestCount) failed: ");
  ASSERT_CONTAINS(rs.r[0].err, "no/such/dir/f.log: No such file");
  ASSERT_STR_EQ(rs.r[0].out[0], "-");
  ASSERT_EQ(rs.r[1].status, 0);
  ASSERT_STR_EQ(rs.r[1].err, "");
  ASSERT_STR_EQ(rs.r[1].out[0], "5");
  /* c ran once, in run 2; g ran once, in run 1 (run 2 followed it) */
  ASSERT_EQ(count_lines(tmp("c.log")), 1);
  ASSERT_EQ(ev_find(&l, "1 start:c"), -1);
  ASSERT(ev_find(&l, "2 start:c") > ev_find(&l, "1 failed:f"));
  ASSERT(ev_find(&l, "1 done:g") >= 0);
  ASSERT_EQ(ev_find(&l, "2 start:g"), -1);
  ASSERT(ev_find(&l, "2 cached:g") > ev_find(&l, "1 done:g"));
  weft_runq_free(q);
  weft_graph_free(g);
  weft_ctx_free(ctx);
}

TEST(runs_keep_their_own_inputs_outputs_and_directories) {
  weft_ctx *ctx = test_ctx();
  const char *y = "version: 1\n"
                  "inputs: {x: 1, label: a}\n"
                  "nodes:\n"
                  "  x: {op: TestInt, params: {value: $x}}\n"
                  "  info: {op: TestRunInfo, inputs: {after: x.value}, "
                  "params: {key: inputs}}\n"
                  "  dir: {op: TestRunInfo, params: {key: output_dir}}\n"
                  "outputs: {x: x.value, inputs: info.text, dir: dir.text}\n";
  weft_graph *g;
  ASSERT_OK(load(ctx, y, &g));
  ASSERT_OK(weft_ctx_set_output_dir(ctx, "ctx-out"));
  weft_runq *q;
  ASSERT_OK(weft_runq_new(ctx, g, 2, &q));
  results rs = {0};
  submit(q, &rs, (const char *const[]){"x=2", "label=b", NULL}, "out-1");
  /* the graph's values at submit time count, not later ones */
  ASSERT_OK(weft_graph_set_input(ctx, g, "x", "7"));
  submit(q, &rs, NULL, "out-2");
  ASSERT_OK(weft_graph_set_input(ctx, g, "label", "c"));
  submit(q, &rs, (const char *const[]){"x=3", NULL}, NULL);
  ASSERT_OK(weft_runq_drain(q));
  ASSERT_EQ(rs.n, 3);
  ASSERT_STR_EQ(rs.r[0].out[0], "2");
  ASSERT_STR_EQ(rs.r[0].out[1], "{\"x\":2,\"label\":\"b\"}");
  ASSERT_STR_EQ(rs.r[0].out[2], "out-1");
  ASSERT_STR_EQ(rs.r[0].inputs, "{\"x\":2,\"label\":\"b\"}");
  ASSERT_STR_EQ(rs.r[1].out[0], "7");
  ASSERT_STR_EQ(rs.r[1].out[1], "{\"x\":7,\"label\":\"a\"}");
  ASSERT_STR_EQ(rs.r[1].out[2], "out-2");
  ASSERT_STR_EQ(rs.r[2].out[0], "3");
  ASSERT_STR_EQ(rs.r[2].out[1], "{\"x\":3,\"label\":\"c\"}");
  ASSERT_STR_EQ(rs.r[2].out[2], "ctx-out");
  /* bad pairs are refused at submit, naming the input; no callback */
  weft_run_opts o = {.struct_size = sizeof o, .done = on_done, .user = &rs};
  o.set = (const char *const[]){"nope=1", NULL};
  ASSERT_EQ(weft_runq_submit(q, &o, NULL), WEFT_ENOENT);
  ASSERT_CONTAINS(weft_ctx_error(ctx), "has no input 'nope'");
  o.set = (const char *const[]){"x", NULL};
  ASSERT_EQ(weft_runq_submit(q, &o, NULL), WEFT_EINVAL);
  ASSERT_STR_EQ(weft_ctx_error(ctx), "run input 'x': expected name=value");
  o.set = (const char *const[]){"x=abc", NULL};
  ASSERT_EQ(weft_runq_submit(q, &o, NULL), WEFT_ETYPE);
  ASSERT_CONTAINS(weft_ctx_error(ctx), "'abc'");
  ASSERT_OK(weft_runq_drain(q));
  ASSERT_EQ(rs.n, 3);
  weft_runq_free(q);
  /* the graph itself holds what weft_graph_set_input gave it */
  ASSERT_OK(weft_graph_run(ctx, g));
  char buf[256];
  ASSERT_OK(weft_graph_output_format(g, 0, buf, sizeof buf));
  ASSERT_STR_EQ(buf, "7");
  weft_graph_free(g);
  weft_ctx_free(ctx);
}

TEST(a_failing_run_leaves_the_run_next_to_it_alone) {
  weft_ctx *ctx = test_ctx();
  const char *y = "version: 1\n"
                  "inputs: {log: x}\n"
                  "nodes:\n"
                  "  bar: {op: TestBarrier, params: {count: 2}}\n"
                  "  c: {op: TestCount, inputs: {value: bar.value}, params: "
                  "{file: $log}}\n"
                  "  d: {op: TestAdd, inputs: {a: c.value}, params: {bias: "
                  "1}}\n"
                  "outputs: {v: d.value}\n";
  weft_graph *g;
  ASSERT_OK(load(ctx, y, &g));
  evlog l = {0};
  weft_ctx_set_event_cb(ctx, ev_cb, &l);
  weft_runq *q;
  ASSERT_OK(weft_runq_new(ctx, g, 2, &q));
  results rs = {0};
  char bad[1200], good[1200];
  snprintf(bad, sizeof bad, "log=%s", tmp("missing/c.log"));
  snprintf(good, sizeof good, "log=%s", tmp("c.log"));
  submit(q, &rs, (const char *const[]){bad, NULL}, NULL);
  submit(q, &rs, (const char *const[]){good, NULL}, NULL);
  ASSERT_OK(weft_runq_drain(q));
  ASSERT_EQ(rs.n, 2);
  ASSERT_EQ(rs.r[0].status, WEFT_EIO);
  ASSERT_CONTAINS(rs.r[0].err, "node 'c' (TestCount) failed: ");
  ASSERT_EQ(rs.r[1].status, 0);
  ASSERT_STR_EQ(rs.r[1].out[0], "1");
  ASSERT_EQ(ev_find(&l, "1 start:d"), -1);
  /* the barriers passed: the two runs were in flight together */
  ASSERT(ev_find(&l, "1 done:bar") >= 0 && ev_find(&l, "2 done:bar") >= 0);
  ASSERT(ev_find(&l, "1 failed:c") >= 0 && ev_find(&l, "2 done:d") >= 0);
  weft_runq_free(q);
  weft_graph_free(g);
  weft_ctx_free(ctx);
}

TEST(a_run_that_cannot_start_fails_through_its_callback) {
  weft_ctx *ctx = test_ctx();
  const char *y = "version: 1\n"
                  "inputs:\n  n: {type: INT}\n"
                  "nodes:\n  a: {op: TestInt, params: {value: $n}}\n"
                  "outputs: {v: a.value}\n";
  weft_graph *g;
  ASSERT_OK(load(ctx, y, &g));
  evlog l = {0};
  weft_ctx_set_event_cb(ctx, ev_cb, &l);
  weft_runq *q;
  ASSERT_OK(weft_runq_new(ctx, g, 2, &q));
  results rs = {0};
  submit(q, &rs, NULL, NULL);
  submit(q, &rs, (const char *const[]){"n=4", NULL}, NULL);
  ASSERT_OK(weft_runq_drain(q));
  ASSERT_EQ(rs.n, 2);
  ASSERT_EQ(rs.r[0].status, WEFT_EMISSING);
  ASSERT_STR_EQ(rs.r[0].err, "g.yaml:3:3: graph input 'n' has no default: "
                             "set it with --set n=...");
  ASSERT_EQ(rs.r[1].status, 0);
  ASSERT_STR_EQ(rs.r[1].out[0], "4");
  ASSERT(ev_find(&l, "1 run_done:") >= 0);
  weft_runq_free(q);
  weft_graph_free(g);
  weft_ctx_free(ctx);
}

TEST(cancel_stops_every_run_in_flight_and_later_ones) {
  weft_ctx *ctx = test_ctx();
  const char *y = "version: 1\n"
                  "inputs: {id: 0}\n"
                  "nodes:\n"
                  "  spin: {op: TestSpin}\n"
                  "  after: {op: TestAdd, inputs: {a: spin.value}, params: "
                  "{bias: $id}}\n"
                  "outputs: {v: after.value}\n";
  weft_graph *g;
  ASSERT_OK(load(ctx, y, &g));
  evlog l = {0};
  snprintf(l.when, sizeof l.when, "2 start:spin");
  l.cancel_ctx = ctx;
  weft_ctx_set_event_cb(ctx, ev_cb, &l);
  weft_runq *q;
  ASSERT_OK(weft_runq_new(ctx, g, 2, &q));
  results rs = {0};
  submit(q, &rs, (const char *const[]){"id=1", NULL}, NULL);
  submit(q, &rs, (const char *const[]){"id=2", NULL}, NULL);
  ASSERT_OK(weft_runq_drain(q));
  ASSERT_EQ(l.fired, 1);
  ASSERT_EQ(rs.n, 2);
  for (int i = 0; i < 2; i++) {
    ASSERT_EQ(rs.r[i].status, WEFT_ECANCELED);
    ASSERT_STR_EQ(rs.r[i].err, "run cancelled");
  }
  ASSERT_EQ(ev_count(&l, "1 start:after"), 0);
  ASSERT_EQ(ev_count(&l, "2 start:after"), 0);
  /* a run submitted to the cancelled queue ends at once */
  submit(q, &rs, (const char *const[]){"id=3", NULL}, NULL);
  ASSERT_OK(weft_runq_drain(q));
  ASSERT_EQ(rs.n, 3);
  ASSERT_EQ(rs.r[2].status, WEFT_ECANCELED);
  ASSERT_EQ(ev_count(&l, "3 start:"), 0);
  weft_runq_free(q);
  /* a new queue starts afresh */
  ASSERT_OK(weft_runq_new(ctx, g, 2, &q));
  ASSERT_OK(weft_runq_pending(q));
  weft_runq_free(q);
  weft_graph_free(g);
  weft_ctx_free(ctx);
}

TEST(completions_come_in_submission_order) {
  /* run 1 waits at a gate that opens only when run 2 is done */
  weft_ctx *ctx = test_ctx();
  char yaml[2048];
  snprintf(yaml, sizeof yaml,
           "version: 1\n"
           "inputs: {v: 0, gate: x}\n"
           "nodes:\n"
           "  g: {op: TestGate, params: {file: $gate, value: $v}}\n"
           "outputs: {v: g.value}\n");
  weft_graph *g;
  ASSERT_OK(load(ctx, yaml, &g));
  evlog l = {0};
  snprintf(l.when, sizeof l.when, "2 run_done:");
  snprintf(l.file, sizeof l.file, "%s", tmp("gate-open"));
  weft_ctx_set_event_cb(ctx, ev_cb, &l);
  weft_runq *q;
  ASSERT_OK(weft_runq_new(ctx, g, 2, &q));
  results rs = {.q = q, .reenter_rc = 1};
  char g1[1200];
  snprintf(g1, sizeof g1, "gate=%s", tmp("gate-open"));
  submit(q, &rs, (const char *const[]){"v=1", g1, NULL}, NULL);
  submit(q, &rs, (const char *const[]){"v=2", "gate=/", NULL}, NULL);
  ASSERT_OK(weft_runq_drain(q));
  ASSERT_EQ(rs.n, 2);
  ASSERT(ev_find(&l, "2 run_done:") < ev_find(&l, "1 run_done:"));
  ASSERT_EQ(rs.r[0].id, 1);
  ASSERT_STR_EQ(rs.r[0].out[0], "1");
  ASSERT_EQ(rs.r[1].id, 2);
  ASSERT_STR_EQ(rs.r[1].out[0], "2");
  /* a callback may not re-enter its queue */
  ASSERT_EQ(rs.reenter_rc, WEFT_EINVAL);
  ASSERT_CONTAINS(weft_ctx_error(ctx), "weft_runq_submit: called from an "
                                       "event or completion callback");
  weft_runq_free(q);
  weft_graph_free(g);
  weft_ctx_free(ctx);
}

TEST(a_plugin_instance_never_runs_for_two_runs_at_once) {
  /* TestState has create(): its instance is shared by the runs, so the
   * second run's call waits until the first one's returned */
  weft_ctx *ctx = test_ctx();
  const char *y = "version: 1\n"
                  "inputs: {id: 0}\n"
                  "nodes:\n"
                  "  st: {op: TestState, params: {id: $id}}\n"
                  "outputs: {max: st.value}\n";
  weft_graph *g;
  ASSERT_OK(load(ctx, y, &g));
  evlog l = {0};
  weft_ctx_set_event_cb(ctx, ev_cb, &l);
  weft_runq *q;
  ASSERT_OK(weft_runq_new(ctx, g, 3, &q));
  results rs = {0};
  submit(q, &rs, (const char *const[]){"id=1", NULL}, NULL);
  submit(q, &rs, (const char *const[]){"id=2", NULL}, NULL);
  submit(q, &rs, (const char *const[]){"id=3", NULL}, NULL);
  ASSERT_OK(weft_runq_drain(q));
  ASSERT_EQ(rs.n, 3);
  for (int i = 0; i < 3; i++)
    ASSERT_STR_EQ(rs.r[i].out[0], "1");
  ASSERT(ev_find(&l, "2 start:st") > ev_find(&l, "1 done:st"));
  ASSERT(ev_find(&l, "3 start:st") > ev_find(&l, "2 done:st"));
  weft_runq_free(q);
  weft_graph_free(g);
  weft_ctx_free(ctx);
}

TEST(one_queue_per_context_at_a_time) {
  weft_ctx *ctx = test_ctx();
  const char *y = "version: 1\nnodes:\n  a: {op: TestInt}\n";
  weft_graph *g;
  ASSERT_OK(load(ctx, y, &g));
  weft_runq *q, *q2;
  ASSERT_OK(weft_runq_new(ctx, g, 2, &q));
  ASSERT_EQ(weft_runq_new(ctx, g, 2, &q2), WEFT_EINVAL);
  ASSERT(q2 == NULL);
  ASSERT_EQ(weft_graph_run(ctx, g), WEFT_EINVAL);
  ASSERT_CONTAINS(weft_ctx_error(ctx), "already active on this context");
  weft_runq_free(q);
  ASSERT_OK(weft_graph_run(ctx, g));
  ASSERT_EQ(weft_runq_new(ctx, g, 0, &q), WEFT_EINVAL);
  weft_graph_free(g);
  weft_ctx_free(ctx);
}
