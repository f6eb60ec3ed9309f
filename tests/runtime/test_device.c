/* test_device.c - ABI 1.4 placement: a WEFT_NODE_DEVICE node runs on its
 * model's device and the runtime copies tensor inputs to where each node
 * runs (tests/plugins/devnodes.c: a fake device whose memory the host
 * cannot touch, every allocation and copy counted), in runs and in plan
 * mode. */
#include "common.h"
#include "weft/plan.h"

/* The transfer lines of the run's log events. */
typedef struct xlog {
  char line[16][160];
  int n;
} xlog;

static void xlog_cb(const weft_event *e, void *user) {
  xlog *l = user;
  if (e->kind == WEFT_EV_LOG && e->message &&
      !strncmp(e->message, "transfer:", 9) && l->n < 16)
    snprintf(l->line[l->n++], sizeof l->line[0], "%s: %s", e->node_id,
             e->message);
}

static weft_ctx *dev_ctx(xlog *l) {
  weft_ctx *ctx = test_ctx();
  test_load_plugin(ctx, "devnodes");
  weft_ctx_set_event_cb(ctx, xlog_cb, l);
  return ctx;
}

/* yaml loaded and run once; the run must end with `want` (its message
 * printed when it does not). */
static weft_graph *run_graph(weft_ctx *ctx, const char *yaml, int want) {
  weft_graph *g;
  ASSERT_OK(load(ctx, yaml, &g));
  int rc = weft_graph_run(ctx, g);
  if (rc != want) fprintf(stderr, "%s\n", weft_ctx_error(ctx));
  ASSERT_EQ(rc, want);
  return g;
}

/* fill (host) -> a, b (device) -> sum (host): one copy in, none between
 * a and b, one copy out. */
static const char *chain_yaml =
    "version: 1\n"
    "nodes:\n"
    "  m: {op: DevModel}\n"
    "  f: {op: DevFill, params: {n: 10}}\n"
    "  a: {op: DevScale, inputs: {model: m.model, x: f.x}, params: {factor: "
    "2}}\n"
    "  b: {op: DevScale, inputs: {model: m.model, x: a.x}, params: {factor: "
    "3}}\n"
    "  s: {op: DevSum, inputs: {x: b.x}}\n"
    "  st: {op: DevStats, inputs: {model: m.model, after: s.sum}}\n"
    "outputs: {sum: s.sum, stats: st.stats}\n";

TEST(inputs_move_to_where_their_node_runs) {
  xlog l = {0};
  weft_ctx *ctx = dev_ctx(&l);
  weft_graph *g = run_graph(ctx, chain_yaml, 0);
  char out[160];
  ASSERT_OK(weft_graph_output_format(g, 0, out, sizeof out));
  ASSERT_STR_EQ(out, "270"); /* (0 + ... + 9) * 2 * 3 */
  ASSERT_EQ(l.n, 2);
  ASSERT_STR_EQ(l.line[0],
                "a: transfer: input 'x', 40 bytes, the host -> device 0");
  ASSERT_STR_EQ(l.line[1],
                "s: transfer: input 'x', 40 bytes, device 0 -> the host");
  /* the device's own counts: the inserted copy in (40) and a's and b's
   * outputs (80); a's and b's reads (80) and the copy out (40); three
   * allocations (the copy in, a's and b's outputs) */
  ASSERT_OK(weft_graph_output_format(g, 1, out, sizeof out));
  ASSERT_STR_EQ(out, "h2d=120 d2h=120 allocs=3");
  weft_graph_free(g);
  weft_ctx_free(ctx); /* DevModel's destroy aborts on a device leak */
}

TEST(a_second_run_reuses_the_cached_device_values) {
  xlog l = {0};
  weft_ctx *ctx = dev_ctx(&l);
  weft_graph *g = run_graph(ctx, chain_yaml, 0);
  l.n = 0;
  ASSERT_OK(weft_graph_run(ctx, g)); /* all cached but DevStats */
  ASSERT_EQ(l.n, 0);
  char out[160];
  ASSERT_OK(weft_graph_output_format(g, 1, out, sizeof out));
  ASSERT_STR_EQ(out, "h2d=120 d2h=120 allocs=3");
  weft_graph_free(g);
  weft_ctx_free(ctx);
}

TEST(between_two_devices_by_way_of_the_host) {
  xlog l = {0};
  weft_ctx *ctx = dev_ctx(&l);
  const char *yaml =
      "version: 1\n"
      "nodes:\n"
      "  m0: {op: DevModel, params: {device: 0}}\n"
      "  m1: {op: DevModel, params: {device: 1}}\n"
      "  f: {op: DevFill, params: {n: 4}}\n"
      "  a: {op: DevScale, inputs: {model: m1.model, x: f.x}}\n"
      "  b: {op: DevScale, inputs: {model: m0.model, x: a.x}}\n"
      "  s: {op: DevSum, inputs: {x: b.x}}\n"
      "outputs: {sum: s.sum}\n";
  weft_graph *g = run_graph(ctx, yaml, 0);
  char out[64];
  ASSERT_OK(weft_graph_output_format(g, 0, out, sizeof out));
  ASSERT_STR_EQ(out, "24"); /* (0 + 1 + 2 + 3) * 2 * 2 */
  ASSERT_EQ(l.n, 3);
  ASSERT_STR_EQ(l.line[1],
                "b: transfer: input 'x', 16 bytes, device 1 -> device 0");
  weft_graph_free(g);
  weft_ctx_free(ctx);
}

TEST(a_failed_copy_fails_the_node_by_name) {
  xlog l = {0};
  weft_ctx *ctx = dev_ctx(&l);
  const char *yaml =
      "version: 1\n"
      "nodes:\n"
      "  m: {op: DevModel, params: {fail_copies: true}}\n"
      "  f: {op: DevFill}\n"
      "  a: {op: DevScale, inputs: {model: m.model, x: f.x}}\n"
      "  s: {op: DevSum, inputs: {x: a.x}}\n"
      "outputs: {sum: s.sum}\n";
  weft_graph *g = run_graph(ctx, yaml, WEFT_EDEVICE);
  const char *e = weft_ctx_error(ctx);
  ASSERT_CONTAINS(e, "'a'");
  ASSERT_CONTAINS(e, "input 'x': cannot copy it from the host to device 0");
  weft_graph_free(g);
  weft_ctx_free(ctx);
}

/* A device node's port without WEFT_PORT_DEVICE wants the host: a device
 * tensor goes back there for it, though the node runs on the device. */
TEST(a_device_node_reads_a_host_port_on_the_host) {
  xlog l = {0};
  weft_ctx *ctx = dev_ctx(&l);
  const char *yaml =
      "version: 1\n"
      "nodes:\n"
      "  m: {op: DevModel}\n"
      "  f: {op: DevFill, params: {n: 3}}\n"
      "  a: {op: DevScale, inputs: {model: m.model, x: f.x}, params: {factor: "
      "5}}\n"
      "  p: {op: DevPeek, inputs: {model: m.model, x: a.x}}\n"
      "  q: {op: DevPeek, inputs: {model: m.model, x: f.x}}\n"
      "outputs: {p: p.first, q: q.first}\n";
  weft_graph *g = run_graph(ctx, yaml, 0);
  char out[64];
  ASSERT_OK(weft_graph_output_format(g, 1, out, sizeof out));
  ASSERT_STR_EQ(out, "0"); /* f's host tensor, as it is: no copy for q */
  ASSERT_EQ(l.n, 2);       /* into a, and back out for p */
  ASSERT_STR_EQ(l.line[1],
                "p: transfer: input 'x', 12 bytes, device 0 -> the host");
  weft_graph_free(g);
  weft_ctx_free(ctx);
}

/* An output made elsewhere than its port says is the plugin's bug, named. */
TEST(an_output_off_its_port_is_a_plugin_bug) {
  xlog l = {0};
  weft_ctx *ctx = dev_ctx(&l);
  const char *yaml =
      "version: 1\n"
      "nodes:\n"
      "  m: {op: DevModel}\n"
      "  f: {op: DevFill}\n"
      "  a: {op: DevScale, inputs: {model: m.model, x: f.x}, params: "
      "{wrong_port: true}}\n"
      "outputs: {x: a.x}\n";
  weft_graph *g = run_graph(ctx, yaml, WEFT_EINTERNAL);
  ASSERT_CONTAINS(weft_ctx_error(ctx), "plugin bug: output 'x' is on the "
                                       "host, its port says device 0");
  weft_graph_free(g);
  weft_ctx_free(ctx);
}

TEST(plan_mode_counts_the_copies_a_run_inserts) {
  xlog l = {0};
  weft_ctx *ctx = dev_ctx(&l);
  weft_graph *g;
  ASSERT_OK(load(ctx, chain_yaml, &g));
  weft_plan_report *rep;
  int rc = weft_graph_plan(ctx, g, 0, &rep);
  if (rc) fprintf(stderr, "%s\n", weft_ctx_error(ctx));
  ASSERT_OK(rc);
  int seen = 0;
  for (int32_t i = 0; i < rep->n_rows; i++) {
    const weft_plan_row *r = &rep->rows[i];
    uint64_t in = 0, out = 0;
    int32_t dev = WEFT_DEVICE_CPU;
    if (!strcmp(r->node_id, "a")) in = 40, dev = 0, seen++;
    if (!strcmp(r->node_id, "b")) dev = 0, seen++;
    if (!strcmp(r->node_id, "s")) out = 40, seen++;
    ASSERT_EQ(r->moved_h2d, in);
    ASSERT_EQ(r->moved_d2h, out);
    ASSERT_EQ(r->device, dev);
    ASSERT_EQ(r->transfers, in + out);
  }
  ASSERT_EQ(seen, 3);
  weft_plan_report_free(rep);
  weft_graph_free(g);
  weft_ctx_free(ctx);
}
