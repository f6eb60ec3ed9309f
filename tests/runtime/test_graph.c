/* test_graph.c - graphs: loading, validation messages, running, the
 * scheduler's concurrency, failure, cancellation and the output cache. */
#include <pthread.h>
#include <unistd.h>

#include "common.h"

static const char *sum_graph =
    "version: 1\n"
    "inputs:\n"
    "  x: {type: INT, default: 2, min: 0, max: 100}\n"
    "  y: 3\n"
    "nodes:\n"
    "  a:\n"
    "    op: TestInt\n"
    "    params: {value: $x}\n"
    "  b:\n"
    "    op: TestInt\n"
    "    params: {value: $y}\n"
    "  sum:\n"
    "    op: TestAdd\n"
    "    inputs: {a: a.value, b: b.value}\n"
    "    params: {bias: 10, mode: add}\n"
    "outputs:\n"
    "  total: sum.value\n";

static char *output(weft_graph *g, int i) {
  static char buf[256];
  ASSERT_OK(weft_graph_output_format(g, i, buf, sizeof buf));
  return buf;
}

TEST(graph_loads_runs_and_returns_outputs) {
  weft_ctx *ctx = test_ctx();
  weft_graph *g;
  ASSERT_OK(load(ctx, sum_graph, &g));
  ASSERT_EQ(weft_graph_node_count(g), 3);
  ASSERT_OK(weft_graph_run(ctx, g));
  ASSERT_EQ(weft_graph_output_count(g), 1);
  ASSERT_STR_EQ(weft_graph_output_name(g, 0), "total");
  ASSERT_STR_EQ(output(g, 0), "15");
  weft_graph_free(g);
  weft_ctx_free(ctx);
}

TEST(set_input_overrides_default_and_is_type_checked) {
  weft_ctx *ctx = test_ctx();
  weft_graph *g;
  ASSERT_OK(load(ctx, sum_graph, &g));
  ASSERT_OK(weft_graph_set_input(ctx, g, "x", "40"));
  ASSERT_OK(weft_graph_run(ctx, g));
  ASSERT_STR_EQ(output(g, 0), "53");
  ASSERT_EQ(weft_graph_set_input(ctx, g, "x", "abc"), WEFT_ETYPE);
  ASSERT_CONTAINS(weft_ctx_error(ctx), "--set x: 'abc' is not an integer");
  ASSERT_EQ(weft_graph_set_input(ctx, g, "x", "101"), WEFT_ERANGE);
  ASSERT_CONTAINS(weft_ctx_error(ctx), "--set x: 101 is outside [0, 100]");
  ASSERT_EQ(weft_graph_set_input(ctx, g, "xx", "1"), WEFT_ENOENT);
  ASSERT_CONTAINS(weft_ctx_error(ctx), "has no input 'xx' (did you mean 'x'?)");
  weft_graph_free(g);
  weft_ctx_free(ctx);
}

TEST(yaml_anchors_and_aliases_work) {
  weft_ctx *ctx = test_ctx();
  const char *y = "version: 1\n"
                  "nodes:\n"
                  "  a: {op: TestInt, params: &p {value: 4}}\n"
                  "  b: {op: TestInt, params: *p}\n"
                  "  s:\n"
                  "    op: TestAdd\n"
                  "    inputs: &in {a: a.value, b: b.value}\n"
                  "  t:\n"
                  "    op: TestAdd\n"
                  "    inputs: *in\n"
                  "    params: {mode: subtract}\n"
                  "outputs: {s: s.value, t: t.value}\n";
  weft_graph *g;
  ASSERT_OK(load(ctx, y, &g));
  ASSERT_OK(weft_graph_run(ctx, g));
  ASSERT_STR_EQ(output(g, 0), "8");
  ASSERT_STR_EQ(output(g, 1), "0");
  weft_graph_free(g);
  weft_ctx_free(ctx);
}

TEST(param_can_be_fed_by_an_upstream_scalar_output) {
  weft_ctx *ctx = test_ctx();
  const char *y = "version: 1\n"
                  "nodes:\n"
                  "  a: {op: TestInt, params: {value: 3}}\n"
                  "  k: {op: TestInt, params: {value: 7}}\n"
                  "  s:\n"
                  "    op: TestAdd\n"
                  "    inputs: {a: a.value, bias: k.value, scale: k.0}\n"
                  "outputs: {s: s.value}\n";
  weft_graph *g;
  ASSERT_OK(load(ctx, y, &g));
  ASSERT_OK(weft_graph_run(ctx, g));
  ASSERT_STR_EQ(output(g, 0), "70"); /* (3 + 0 + 7) * 7 */
  weft_graph_free(g);
  weft_ctx_free(ctx);
}

static void expect_error(const char *yaml, int code, const char *msg) {
  weft_ctx *ctx = test_ctx();
  weft_graph *g = NULL;
  int r = load(ctx, yaml, &g);
  if (r != code || !strstr(weft_ctx_error(ctx), msg))
    fprintf(stderr, "got %s: %s\n", weft_err_name(r), weft_ctx_error(ctx));
  ASSERT_EQ(r, code);
  ASSERT(g == NULL);
  ASSERT_CONTAINS(weft_ctx_error(ctx), msg);
  weft_ctx_free(ctx);
}

TEST(cycle_is_named_in_data_flow_order) {
  expect_error("version: 1\n"
               "nodes:\n"
               "  a: {op: TestInt}\n"
               "  p:\n"
               "    op: TestAdd\n"
               "    inputs: {a: a.value, b: r.value}\n"
               "  q:\n"
               "    op: TestAdd\n"
               "    inputs: {a: p.value}\n"
               "  r:\n"
               "    op: TestAdd\n"
               "    inputs: {a: q.value}\n",
               WEFT_ECYCLE, "the graph has a cycle: ");
  /* the exact cycle, whichever node the walk starts from */
  weft_ctx *ctx = test_ctx();
  weft_graph *g = NULL;
  const char *y = "version: 1\nnodes:\n"
                  "  p: {op: TestAdd, inputs: {a: q.value}}\n"
                  "  q: {op: TestAdd, inputs: {a: p.value}}\n";
  ASSERT_EQ(load(ctx, y, &g), WEFT_ECYCLE);
  ASSERT_CONTAINS(weft_ctx_error(ctx), "g.yaml:3:");
  ASSERT_CONTAINS(weft_ctx_error(ctx), "cycle: q -> p -> q");
  weft_ctx_free(ctx);
}

TEST(self_loop_is_a_cycle) {
  expect_error("version: 1\nnodes:\n  p: {op: TestAdd, inputs: {a: p.value}}\n",
               WEFT_ECYCLE, "g.yaml:3:32: the graph has a cycle: p -> p");
}

TEST(unknown_op_suggests_closest) {
  expect_error("version: 1\nnodes:\n  a: {op: TestAddd}\n", WEFT_ENOENT,
               "g.yaml:3:11: node 'a': unknown op 'TestAddd' (did you mean "
               "'TestAdd'?)");
}

TEST(wrong_type_on_a_port_names_both_types) {
  expect_error("version: 1\nnodes:\n"
               "  s: {op: TestString}\n"
               "  a: {op: TestAdd, inputs: {a: s.text}}\n",
               WEFT_ETYPE,
               "g.yaml:4:32: node 'a' input 'a': type mismatch: 's.text' is "
               "STRING, but the input takes INT");
}

TEST(missing_required_input_is_named) {
  expect_error("version: 1\nnodes:\n  a: {op: TestAdd}\n", WEFT_EMISSING,
               "g.yaml:3:3: node 'a' (TestAdd): required input 'a' (INT) is "
               "not connected");
}

/* ---- running ------------------------------------------------------------ */

TEST(independent_branches_run_at_the_same_time) {
  /* Two barrier nodes each wait until both are running: a serial scheduler
   * would time one of them out.  The event order shows it too: both start
   * before either finishes. */
  weft_ctx *ctx = test_ctx();
  const char *y = "version: 1\n"
                  "nodes:\n"
                  "  left: {op: TestBarrier, params: {count: 2, tag: 1}}\n"
                  "  right: {op: TestBarrier, params: {count: 2, tag: 2}}\n"
                  "  sum: {op: TestAdd, inputs: {a: left.value, b: "
                  "right.value}}\n"
                  "outputs: {s: sum.value}\n";
  weft_graph *g;
  ASSERT_OK(load(ctx, y, &g));
  rec r = {0};
  weft_ctx_set_event_cb(ctx, rec_cb, &r);
  int rc = weft_graph_run(ctx, g);
  if (rc) fprintf(stderr, "%s\n", weft_ctx_error(ctx));
  ASSERT_OK(rc);
  ASSERT_STR_EQ(output(g, 0), "3");
  int sl = rec_find(&r, "start:left"), sr = rec_find(&r, "start:right");
  int dl = rec_find(&r, "done:left"), dr = rec_find(&r, "done:right");
  int ss = rec_find(&r, "start:sum");
  ASSERT(sl >= 0 && sr >= 0 && dl >= 0 && dr >= 0 && ss >= 0);
  ASSERT(sl < dl && sl < dr && sr < dl && sr < dr);
  ASSERT(ss > dl && ss > dr);
  weft_graph_free(g);
  weft_ctx_free(ctx);
}

TEST(failing_node_fails_run_and_nothing_downstream_starts) {
  weft_ctx *ctx = test_ctx();
  const char *y = "version: 1\n"
                  "nodes:\n"
                  "  a: {op: TestInt, params: {value: 1}}\n"
                  "  bad: {op: TestFail, inputs: {after: a.value}, "
                  "params: {message: disk on fire}}\n"
                  "  down: {op: TestAdd, inputs: {a: bad.value}}\n"
                  "  down2: {op: TestAdd, inputs: {a: down.value}}\n";
  weft_graph *g;
  ASSERT_OK(load(ctx, y, &g));
  rec r = {0};
  weft_ctx_set_event_cb(ctx, rec_cb, &r);
  ASSERT_EQ(weft_graph_run(ctx, g), WEFT_ERUN);
  ASSERT_STR_EQ(weft_ctx_error(ctx),
                "node 'bad' (TestFail) failed: disk on fire");
  ASSERT(rec_find(&r, "failed:bad") >= 0);
  ASSERT_EQ(rec_find(&r, "start:down"), -1);
  ASSERT_EQ(rec_find(&r, "start:down2"), -1);
  ASSERT(rec_find(&r, "run_done:") >= 0);
  weft_graph_free(g);
  weft_ctx_free(ctx);
}

typedef struct canceller {
  weft_ctx *ctx;
  int seen_progress;
} canceller;

static void cancel_on_progress(const weft_event *e, void *user) {
  canceller *c = user;
  if (e->kind == WEFT_EV_NODE_PROGRESS && e->k >= 3 && !c->seen_progress) {
    c->seen_progress = 1;
    weft_ctx_cancel(c->ctx);
  }
}

TEST(cancel_stops_run_and_nodes_see_it) {
  weft_ctx *ctx = test_ctx();
  const char *y = "version: 1\n"
                  "nodes:\n"
                  "  spin: {op: TestSpin}\n"
                  "  after: {op: TestAdd, inputs: {a: spin.value}}\n";
  weft_graph *g;
  ASSERT_OK(load(ctx, y, &g));
  canceller c = {ctx, 0};
  weft_ctx_set_event_cb(ctx, cancel_on_progress, &c);
  ASSERT_EQ(weft_graph_run(ctx, g), WEFT_ECANCELED);
  ASSERT_EQ(c.seen_progress, 1);
  ASSERT_EQ(weft_exit_code(WEFT_ECANCELED), 130);
  /* the context is usable again afterwards */
  weft_graph_free(g);
  ASSERT_OK(load(ctx, sum_graph, &g));
  weft_ctx_set_event_cb(ctx, NULL, NULL);
  ASSERT_OK(weft_graph_run(ctx, g));
  weft_graph_free(g);
  weft_ctx_free(ctx);
}

static int count_lines(const char *path) {
  char *s = weft_test_read_file(path, NULL);
  int n = 0;
  for (char *p = s; p && *p; p++) n += *p == '\n';
  free(s);
  return n;
}

TEST(rerun_uses_cache_and_reexecutes_only_what_changed) {
  weft_ctx *ctx = test_ctx();
  char log_a[1024], log_b[1024], yaml[8192];
  snprintf(log_a, sizeof log_a, "%s/a.log", weft_test_tmpdir());
  snprintf(log_b, sizeof log_b, "%s/b.log", weft_test_tmpdir());
  snprintf(yaml, sizeof yaml,
           "version: 1\n"
           "inputs: {x: 1, y: 2}\n"
           "nodes:\n"
           "  x: {op: TestInt, params: {value: $x}}\n"
           "  y: {op: TestInt, params: {value: $y}}\n"
           "  cx: {op: TestCount, inputs: {value: x.value}, params: {file: %s}}\n"
           "  cy: {op: TestCount, inputs: {value: y.value}, params: {file: %s}}\n"
           "  sum: {op: TestAdd, inputs: {a: cx.value, b: cy.value}}\n"
           "outputs: {s: sum.value}\n",
           log_a, log_b);
  weft_graph *g;
  ASSERT_OK(load(ctx, yaml, &g));
  rec r = {0};
  weft_ctx_set_event_cb(ctx, rec_cb, &r);
  ASSERT_OK(weft_graph_run(ctx, g));
  ASSERT_STR_EQ(output(g, 0), "3");
  ASSERT_EQ(rec_count_prefix(&r, "done:"), 5);
  /* same inputs: everything comes from the cache */
  r.n = 0;
  ASSERT_OK(weft_graph_run(ctx, g));
  ASSERT_EQ(rec_count_prefix(&r, "done:"), 0);
  ASSERT(rec_find(&r, "cached:sum") >= 0);
  ASSERT_EQ(count_lines(log_a), 1);
  ASSERT_EQ(count_lines(log_b), 1);
  /* change y: only y, cy and sum run again */
  ASSERT_OK(weft_graph_set_input(ctx, g, "y", "5"));
  r.n = 0;
  ASSERT_OK(weft_graph_run(ctx, g));
  ASSERT_STR_EQ(output(g, 0), "6");
  ASSERT_EQ(rec_count_prefix(&r, "done:"), 3);
  ASSERT(rec_find(&r, "done:y") >= 0 && rec_find(&r, "done:cy") >= 0 &&
         rec_find(&r, "done:sum") >= 0);
  ASSERT(rec_find(&r, "cached:cx") >= 0);
  ASSERT_EQ(count_lines(log_a), 1);
  ASSERT_EQ(count_lines(log_b), 2);
  /* and back: both variants of cy are remembered only while in use */
  ASSERT_OK(weft_graph_set_input(ctx, g, "y", "2"));
  ASSERT_OK(weft_graph_run(ctx, g));
  ASSERT_STR_EQ(output(g, 0), "3");
  ASSERT_EQ(count_lines(log_a), 1);
  /* clearing the cache runs everything again */
  weft_ctx_cache_clear(ctx);
  ASSERT_OK(weft_graph_run(ctx, g));
  ASSERT_EQ(count_lines(log_a), 2);
  weft_graph_free(g);
  weft_ctx_free(ctx);
}

TEST(graph_input_without_default_must_be_set) {
  weft_ctx *ctx = test_ctx();
  const char *y = "version: 1\n"
                  "inputs:\n  n: {type: INT}\n"
                  "nodes:\n  a: {op: TestInt, params: {value: $n}}\n";
  weft_graph *g;
  ASSERT_OK(load(ctx, y, &g));
  ASSERT_EQ(weft_graph_run(ctx, g), WEFT_EMISSING);
  ASSERT_CONTAINS(weft_ctx_error(ctx), "g.yaml:3:3: graph input 'n' has no "
                                       "default: set it with --set n=...");
  ASSERT_OK(weft_graph_set_input(ctx, g, "n", "4"));
  ASSERT_OK(weft_graph_run(ctx, g));
  weft_graph_free(g);
  weft_ctx_free(ctx);
}

TEST(enum_param_fed_by_string_input_is_checked_when_set) {
  weft_ctx *ctx = test_ctx();
  const char *y = "version: 1\n"
                  "inputs: {m: add}\n"
                  "nodes:\n"
                  "  a: {op: TestInt, params: {value: 5}}\n"
                  "  s: {op: TestAdd, inputs: {a: a.value, b: a.value}, "
                  "params: {mode: $m}}\n"
                  "outputs: {s: s.value}\n";
  weft_graph *g;
  ASSERT_OK(load(ctx, y, &g));
  ASSERT_OK(weft_graph_set_input(ctx, g, "m", "subtract"));
  ASSERT_OK(weft_graph_run(ctx, g));
  ASSERT_STR_EQ(output(g, 0), "0");
  ASSERT_EQ(weft_graph_set_input(ctx, g, "m", "substract"), WEFT_ERANGE);
  ASSERT_CONTAINS(weft_ctx_error(ctx),
                  "--set m (node 's' param 'mode'): 'substract' is not one of "
                  "the param's choices (did you mean 'subtract'?)");
  /* the input keeps its last good value */
  ASSERT_OK(weft_graph_run(ctx, g));
  ASSERT_STR_EQ(output(g, 0), "0");
  weft_graph_free(g);
  weft_ctx_free(ctx);
}

TEST(param_range_holds_for_values_from_graph_inputs) {
  weft_ctx *ctx = test_ctx();
  const char *y = "version: 1\n"
                  "inputs: {w: {type: INT, default: 5000}}\n"
                  "nodes:\n"
                  "  img: {op: TestImage, params: {width: $w, height: 2}}\n"
                  "outputs: {img: img.IMAGE}\n";
  weft_graph *g;
  ASSERT_EQ(load(ctx, y, &g), WEFT_ERANGE);
  ASSERT_CONTAINS(weft_ctx_error(ctx),
                  "node 'img' param 'width': graph input 'w' default: 5000 "
                  "is outside [1, 4096]");
  const char *y2 = "version: 1\n"
                   "inputs: {w: {type: INT, default: 16}}\n"
                   "nodes:\n"
                   "  img: {op: TestImage, params: {width: $w, height: 2}}\n"
                   "outputs: {img: img.IMAGE}\n";
  ASSERT_OK(load(ctx, y2, &g));
  ASSERT_EQ(weft_graph_set_input(ctx, g, "w", "5000"), WEFT_ERANGE);
  ASSERT_CONTAINS(weft_ctx_error(ctx),
                  "--set w (node 'img' param 'width'): 5000 is outside "
                  "[1, 4096]");
  ASSERT_EQ(weft_graph_set_input(ctx, g, "w", "0"), WEFT_ERANGE);
  ASSERT_OK(weft_graph_set_input(ctx, g, "w", "4096"));
  weft_graph_free(g);
  weft_ctx_free(ctx);
}

TEST(dot_output_has_nodes_edges_and_inputs) {
  weft_ctx *ctx = test_ctx();
  weft_graph *g;
  ASSERT_OK(load(ctx, sum_graph, &g));
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  ASSERT_OK(weft_graph_write_dot(g, f));
  fclose(f);
  ASSERT_CONTAINS(text, "digraph weft {");
  ASSERT_CONTAINS(text, "\"sum\" [label=\"sum\\nTestAdd\"];");
  ASSERT_CONTAINS(text, "\"a\" -> \"sum\" [label=\"value \xe2\x86\x92 a\"];");
  ASSERT_CONTAINS(text, "\"$x\" -> \"a\" [style=dashed, label=\"value\"];");
  ASSERT_CONTAINS(text, "\"out:total\"");
  free(text);
  weft_graph_free(g);
  weft_ctx_free(ctx);
}

TEST(tensor_values_flow_between_nodes) {
  weft_ctx *ctx = test_ctx();
  const char *y = "version: 1\nnodes:\n"
                  "  img: {op: TestImage, params: {width: 5, height: 3, "
                  "value: 0.25}}\n"
                  "outputs: {img: img.IMAGE}\n";
  weft_graph *g;
  ASSERT_OK(load(ctx, y, &g));
  ASSERT_OK(weft_graph_run(ctx, g));
  ASSERT_STR_EQ(output(g, 0), "<IMAGE [1,3,5,3]>");
  weft_graph_free(g);
  weft_ctx_free(ctx);
}

typedef struct prog_rec {
  int progress_seen, done_seen, progress_after_done, last_k;
} prog_rec;

static void prog_cb(const weft_event *e, void *user) {
  prog_rec *p = user;
  if (e->kind == WEFT_EV_NODE_PROGRESS) {
    p->progress_seen++;
    p->progress_after_done += p->done_seen;
    ASSERT(e->k == p->last_k + 1 && e->n == 5);
    p->last_k = (int)e->k;
  }
  if (e->kind == WEFT_EV_NODE_DONE) p->done_seen++;
}

TEST(progress_events_arrive_in_order_before_node_done) {
  weft_ctx *ctx = test_ctx();
  const char *y = "version: 1\nnodes:\n  p: {op: TestProgress}\n";
  weft_graph *g;
  ASSERT_OK(load(ctx, y, &g));
  for (int round = 0; round < 20; round++) {
    prog_rec p = {0};
    weft_ctx_set_event_cb(ctx, prog_cb, &p);
    ASSERT_OK(weft_graph_run(ctx, g));
    ASSERT_EQ(p.progress_seen, 5);
    ASSERT_EQ(p.done_seen, 1);
    ASSERT_EQ(p.progress_after_done, 0);
  }
  weft_graph_free(g);
  weft_ctx_free(ctx);
}
