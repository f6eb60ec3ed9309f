/* plan_graph.c - plan mode (weft plan): one sequential walk of a graph that
 * asks each node for its plan instead of running it, then weight residency
 * under the VRAM budget and the per-node memory table. */
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "weft/plan.h"

#define PLAN_API __attribute__((visibility("default")))

/* One node's call in plan mode. */
typedef struct pnode {
  weft_call call;
  weft__callpriv priv;
  weft_value **ins, **pars, **outs;
  struct weft_plan plan;
  bool has_plan; /* its plan callback filled plan */
  bool skipped;
  int32_t place;       /* where it runs: WEFT_DEVICE_CPU or a device */
  uint64_t moved[2];   /* input bytes the runtime copies: h2d, d2h */
} pnode;

/* distinct weight ids the nodes named */
typedef struct pblock {
  uint64_t id;
  uint64_t bytes;
  const char *name;
} pblock;

static weft_value *param_of(weft_graph *g, pnode *ps, const weft__gnode *n,
                            int j) {
  const weft__bind *b = &n->params[j];
  const weft_param_def *p = &n->rop->params[j];
  switch (b->kind) {
  case WEFT__B_NONE:
  case WEFT__B_CONST: weft__value_retain(b->value); return b->value;
  case WEFT__B_INPUT: return weft__scalar_convert(g->inputs[b->input].value, p);
  case WEFT__B_NODE: {
    weft_value *v = ps[b->node].outs ? ps[b->node].outs[b->port] : NULL;
    return v ? weft__scalar_convert(v, p) : NULL;
  }
  }
  return NULL;
}

static void pnodes_free(weft_graph *g, pnode *ps) {
  for (int i = 0; ps && i < g->n_nodes; i++) {
    const weft_node_def *d = &g->nodes[i].rop->def;
    for (int k = 0; ps[i].outs && k < d->n_outputs; k++)
      weft__value_release(ps[i].outs[k]);
    for (int k = 0; ps[i].pars && k < d->n_params; k++)
      weft__value_release(ps[i].pars[k]);
    free(ps[i].outs);
    free(ps[i].pars);
    free(ps[i].ins);
  }
  free(ps);
}

static int node_fail(weft_graph *g, int i, int rc, const char *msg) {
  const weft__gnode *n = &g->nodes[i];
  if (!msg || !*msg) msg = weft_strerror(rc);
  return weft__err(g->ctx, rc, &n->loc,
                   "node '%s' (%s) failed in plan mode: %s", n->id,
                   n->rop->def.op, msg);
}

/* Runs or plans node i; its inputs' producers are done. */
static int walk_node(weft_graph *g, pnode *ps, int i) {
  weft__gnode *n = &g->nodes[i];
  const weft_node_def *d = &n->rop->def;
  pnode *p = &ps[i];
  p->place = WEFT_DEVICE_CPU;
  p->outs = calloc((size_t)d->n_outputs + 1, sizeof *p->outs);
  p->ins = calloc((size_t)d->n_inputs + 1, sizeof *p->ins);
  p->pars = calloc((size_t)d->n_params + 1, sizeof *p->pars);
  if (!p->outs || !p->ins || !p->pars)
    return weft__err(g->ctx, WEFT_ENOMEM, NULL, "out of memory");
  /* output nodes write files: never in plan mode, nor what they feed */
  p->skipped = (d->flags & WEFT_NODE_OUTPUT) != 0;
  for (int j = 0; j < d->n_inputs && !p->skipped; j++) {
    const weft__bind *b = &n->inputs[j];
    if (b->kind != WEFT__B_NODE) continue;
    p->skipped = ps[b->node].skipped;
    p->ins[j] = ps[b->node].outs[b->port];
  }
  for (int j = 0; j < d->n_params && !p->skipped; j++) {
    if (n->params[j].kind == WEFT__B_NODE && ps[n->params[j].node].skipped) {
      p->skipped = true;
      break;
    }
    if (!(p->pars[j] = param_of(g, ps, n, j)))
      return weft__err(g->ctx, WEFT_ETYPE, &n->params[j].loc,
                       "node '%s' param '%s': the value does not fit the "
                       "param",
                       n->id, n->rop->params[j].name);
  }
  if (p->skipped) return 0;
  /* placement and the copies it inserts, counted as a run makes them
   * (place.c): a tensor is where its producer ran */
  const weft_value *placer = weft__placer(d, p->ins);
  p->place = placer ? placer->dev : WEFT_DEVICE_CPU;
  for (int j = 0; j < d->n_inputs; j++) {
    const weft__bind *b = &n->inputs[j];
    const weft_value *v = p->ins[j];
    if (!v || v->kind != WEFT__V_TENSOR || b->kind != WEFT__B_NODE) continue;
    const int32_t from = weft__port_device(
        &g->nodes[b->node].rop->outputs[b->port], ps[b->node].place);
    const int32_t to = weft__port_device(&d->inputs[j], p->place);
    if (from == to) continue;
    const uint64_t bytes =
        (uint64_t)weft_tensor_numel(&v->t) * weft_dtype_size(v->t.dtype);
    if (from != WEFT_DEVICE_CPU) p->moved[1] += bytes;
    if (to != WEFT_DEVICE_CPU) p->moved[0] += bytes;
  }
  p->priv.ctx = g->ctx;
  p->priv.run = NULL; /* logs go to stderr, run_info is NULL */
  p->priv.node = i;
  p->call = (weft_call){.struct_size = sizeof p->call,
                        .host = &weft__host,
                        .def = d,
                        .node_id = n->id,
                        .inputs = p->ins,
                        .params = p->pars,
                        .outputs = p->outs,
                        .device = p->place,
                        .priv = &p->priv};
  if (!n->created && d->create) {
    weft_call cc = p->call;
    cc.inputs = NULL;
    int rc = d->create(&cc, &n->state);
    if (rc) return node_fail(g, i, rc, p->priv.err);
    n->created = true;
  }
  p->call.state = n->state;
  memset(&p->plan, 0, sizeof p->plan);
  p->plan.struct_size = sizeof p->plan;
  p->plan.device = WEFT_DEVICE_CPU;
  int rc;
  if (d->plan) {
    rc = d->plan(&p->call, &p->plan);
    p->has_plan = true;
  } else {
    /* it runs for real: its inputs go where it runs, as in a run (a plan
     * callback's outputs are host tensors wherever it would run) */
    weft_value **xin = NULL, **ins = malloc(((size_t)d->n_inputs + 1) *
                                             sizeof *ins);
    if (!ins) return weft__err(g->ctx, WEFT_ENOMEM, NULL, "out of memory");
    memcpy(ins, p->ins, (size_t)d->n_inputs * sizeof *ins);
    p->call.inputs = ins; /* p->ins keeps the producers' values */
    rc = weft__place_inputs(&p->call, ins, &xin);
    if (!rc) rc = d->run(&p->call);
    weft__drop_moved(xin, d->n_inputs);
    free(xin);
    free(ins);
    p->call.inputs = p->ins;
    p->priv.place = NULL;
  }
  if (rc) return node_fail(g, i, rc, p->priv.err);
  for (int k = 0; k < d->n_outputs; k++)
    if (!p->outs[k]) {
      char msg[256];
      snprintf(msg, sizeof msg, "plugin bug: %s set no value for output '%s'",
               d->plan ? "plan()" : "run()", n->rop->outputs[k].name);
      return node_fail(g, i, WEFT_EINTERNAL, msg);
    }
  if (p->plan.n_weights < 0 || p->plan.n_weights > WEFT_PLAN_MAX_WEIGHTS)
    return node_fail(g, i, WEFT_EINTERNAL,
                     "plugin bug: plan() set n_weights out of range");
  return 0;
}

static int block_of(pblock **bl, int32_t *n, const weft_plan_weights *w) {
  for (int32_t k = 0; k < *n; k++)
    if ((*bl)[k].id == w->id) return k;
  pblock *nb = realloc(*bl, (size_t)(*n + 1) * sizeof *nb);
  if (!nb) return WEFT_ENOMEM;
  *bl = nb;
  nb[*n] = (pblock){w->id, w->bytes, w->name ? w->name : "weights"};
  return (*n)++;
}

/* Weight residency over the rows' blocks, in execution order, and each
 * row's resident, loaded and peak bytes. */
static int residency(weft_plan_report *rep) {
  int32_t n_steps = 0;
  for (int32_t i = 0; i < rep->n_rows; i++)
    n_steps += rep->rows[i].n_blocks;
  /* the budget holds the weights and, at any time, one node's activation
   * arena: the weights get what the largest arena of a device node leaves */
  uint64_t budget = rep->on_device && rep->budget ? rep->budget : UINT64_MAX;
  uint64_t max_arena = 0;
  for (int32_t i = 0; i < rep->n_rows; i++)
    if (rep->rows[i].device != WEFT_DEVICE_CPU &&
        rep->rows[i].arena > max_arena)
      max_arena = rep->rows[i].arena;
  if (budget != UINT64_MAX) {
    rep->arena_over_budget = max_arena >= budget;
    if (!rep->arena_over_budget) budget -= max_arena;
  }
  uint64_t *bytes = calloc((size_t)rep->n_blocks + 1, sizeof *bytes);
  weft_plan_step *steps = calloc((size_t)n_steps + 1, sizeof *steps);
  int32_t *map = calloc((size_t)rep->n_blocks + 1, sizeof *map);
  bool *res = calloc((size_t)rep->n_blocks + 1, sizeof *res);
  int rc = bytes && steps && map && res ? 0 : WEFT_ENOMEM;
  /* a block larger than the budget cannot be resident: it streams through
   * the budget on every use (the model's own streaming) and is left out */
  int32_t nb = 0;
  for (int32_t k = 0; !rc && k < rep->n_blocks; k++) {
    rep->blocks[k].streamed = rep->blocks[k].bytes > budget;
    map[k] = rep->blocks[k].streamed ? -1 : nb;
    if (!rep->blocks[k].streamed) bytes[nb++] = rep->blocks[k].bytes;
  }
  int32_t s = 0;
  for (int32_t i = 0; !rc && i < rep->n_rows; i++)
    for (int32_t j = 0; j < rep->rows[i].n_blocks; j++)
      if (map[rep->rows[i].block[j]] >= 0)
        steps[s++].block = map[rep->rows[i].block[j]];
  weft_residency_stats st;
  if (!rc) rc = weft_residency_plan(bytes, nb, steps, s, budget, &st);
  uint64_t resident = 0;
  s = 0;
  for (int32_t i = 0; !rc && i < rep->n_rows; i++) {
    weft_plan_row *r = &rep->rows[i];
    uint64_t streamed = 0;
    for (int32_t j = 0; j < r->n_blocks; j++) {
      int32_t k = r->block[j];
      if (map[k] < 0) {
        streamed += rep->blocks[k].bytes;
        continue;
      }
      weft_plan_step *st1 = &steps[s++];
      for (int32_t e = 0; e < st1->n_evict; e++) {
        res[st1->evict[e]] = false;
        resident -= bytes[st1->evict[e]];
      }
      if (st1->load) {
        res[map[k]] = true;
        resident += bytes[map[k]];
        r->weights_loaded += bytes[map[k]];
      }
    }
    uint64_t stream_res =
        streamed < budget - resident ? streamed : budget - resident;
    r->weights_loaded += streamed;
    r->weights_resident = resident + stream_res;
    if (r->device == WEFT_DEVICE_CPU) r->weights_loaded = 0;
    r->transfers =
        r->weights_loaded + r->h2d + r->d2h + r->moved_h2d + r->moved_d2h;
    r->peak = r->weights_resident + r->arena;
    rep->weights_loaded += r->weights_loaded;
    if (r->peak > rep->peak) {
      rep->peak = r->peak;
      rep->peak_row = i;
    }
  }
  if (steps) weft_residency_free(steps, n_steps);
  free(steps);
  free(bytes);
  free(map);
  free(res);
  return rc;
}

PLAN_API int weft_graph_plan(weft_ctx *ctx, weft_graph *g, uint64_t budget,
                             weft_plan_report **out) {
  *out = NULL;
  for (int k = 0; k < g->n_inputs; k++)
    if (!g->inputs[k].value)
      return weft__err(ctx, WEFT_EMISSING, &g->inputs[k].loc,
                       "graph input '%s' has no default: set it with --set "
                       "%s=...",
                       g->inputs[k].name, g->inputs[k].name);
  pnode *ps = calloc((size_t)g->n_nodes + 1, sizeof *ps);
  weft_plan_report *rep = calloc(1, sizeof *rep);
  if (rep) rep->rows = calloc((size_t)g->n_nodes + 1, sizeof *rep->rows);
  if (!ps || !rep || !rep->rows) {
    pnodes_free(g, ps);
    weft_plan_report_free(rep);
    return weft__err(ctx, WEFT_ENOMEM, NULL, "out of memory");
  }
  atomic_store(&ctx->cancelled, 0);
  rep->budget = budget;
  rep->peak_row = -1;
  pblock *bl = NULL;
  int rc = 0;
  for (int k = 0; k < g->n_nodes && !rc; k++) {
    int i = g->order[k];
    if ((rc = walk_node(g, ps, i))) break;
    const weft__gnode *n = &g->nodes[i];
    weft_plan_row *r = &rep->rows[rep->n_rows++];
    const struct weft_plan *p = &ps[i].plan;
    r->node_id = n->id;
    r->op = n->rop->def.op;
    r->device = WEFT_DEVICE_CPU;
    r->status = ps[i].skipped    ? WEFT_PLAN_SKIPPED
                : ps[i].has_plan ? WEFT_PLAN_PLANNED
                                 : WEFT_PLAN_RAN;
    r->moved_h2d = ps[i].moved[0];
    r->moved_d2h = ps[i].moved[1];
    if (ps[i].place != WEFT_DEVICE_CPU) {
      r->device = ps[i].place;
      rep->on_device = true;
    }
    if (!ps[i].has_plan) continue;
    r->device = p->device;
    if (p->device != WEFT_DEVICE_CPU) rep->on_device = true;
    r->weights_bytes = p->weight_bytes;
    r->arena = p->arena_bytes;
    r->arena_lower_bound = p->arena_lower_bound;
    r->arena_naive = p->arena_naive;
    if (p->device != WEFT_DEVICE_CPU) {
      r->h2d = p->h2d_bytes;
      r->d2h = p->d2h_bytes;
    }
    for (int32_t j = 0; j < p->n_weights && !rc; j++) {
      int b = block_of(&bl, &rep->n_blocks, &p->weights[j]);
      if (b < 0)
        rc = weft__err(ctx, WEFT_ENOMEM, NULL, "out of memory");
      else
        r->block[r->n_blocks++] = b;
    }
  }
  pnodes_free(g, ps);
  if (!rc) {
    rep->blocks = calloc((size_t)rep->n_blocks + 1, sizeof *rep->blocks);
    if (!rep->blocks) rc = weft__err(ctx, WEFT_ENOMEM, NULL, "out of memory");
    for (int32_t k = 0; !rc && k < rep->n_blocks; k++)
      rep->blocks[k] = (weft_plan_block){bl[k].name, bl[k].bytes, false};
  }
  free(bl);
  if (!rc && (rc = residency(rep)))
    weft__err(ctx, rc, NULL, "weight residency: %s", weft_strerror(rc));
  if (rc) {
    weft_plan_report_free(rep);
    return rc;
  }
  *out = rep;
  return 0;
}

PLAN_API void weft_plan_report_free(weft_plan_report *r) {
  if (!r) return;
  free(r->rows);
  free(r->blocks);
  free(r);
}

/* ---- printing -------------------------------------------------------------
 */

static void human(uint64_t b, char *buf, size_t len) {
  static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = (double)b;
  int u = 0;
  while (v >= 1024 && u < 4)
    v /= 1024, u++;
  if (u == 0)
    snprintf(buf, len, "%" PRIu64 " B", b);
  else
    snprintf(buf, len, "%.2f %s", v, unit[u]);
}

static void device_name(int32_t d, char *buf, size_t len) {
  if (d == WEFT_DEVICE_CPU)
    snprintf(buf, len, "cpu");
  else
    snprintf(buf, len, "cuda:%d", (int)d);
}

static const char *status_name(weft_plan_status s) {
  return s == WEFT_PLAN_PLANNED ? "planned"
         : s == WEFT_PLAN_RAN   ? "ran"
                                : "skipped";
}

static int print_json(const weft_plan_report *r, FILE *out) {
  json_t *o = json_object(), *rows = json_array(), *blocks = json_array();
  int rc = o && rows && blocks ? 0 : WEFT_ENOMEM;
  for (int32_t k = 0; !rc && k < r->n_blocks; k++)
    rc = json_array_append_new(
             blocks, json_pack("{s:i, s:s, s:I, s:b}", "block", (int)k, "name",
                               r->blocks[k].name, "bytes",
                               (json_int_t)r->blocks[k].bytes, "streamed",
                               (int)r->blocks[k].streamed))
             ? WEFT_ENOMEM
             : 0;
  for (int32_t i = 0; !rc && i < r->n_rows; i++) {
    const weft_plan_row *w = &r->rows[i];
    char dev[32];
    device_name(w->device, dev, sizeof dev);
    json_t *bl = json_array();
    for (int32_t j = 0; bl && j < w->n_blocks; j++)
      json_array_append_new(bl, json_integer(w->block[j]));
    json_t *row = json_pack(
        "{s:s, s:s, s:s, s:s, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
        "s:I, s:I, s:I, s:I}",
        "id", w->node_id, "op", w->op, "device", dev, "status",
        status_name(w->status), "blocks", bl ? bl : json_array(), "weights",
        (json_int_t)w->weights_bytes, "weights_resident",
        (json_int_t)w->weights_resident, "weights_loaded",
        (json_int_t)w->weights_loaded, "arena", (json_int_t)w->arena,
        "arena_lower_bound", (json_int_t)w->arena_lower_bound, "arena_naive",
        (json_int_t)w->arena_naive, "h2d", (json_int_t)w->h2d, "d2h",
        (json_int_t)w->d2h, "moved_h2d", (json_int_t)w->moved_h2d,
        "moved_d2h", (json_int_t)w->moved_d2h, "transfers",
        (json_int_t)w->transfers, "peak", (json_int_t)w->peak);
    rc = json_array_append_new(rows, row) ? WEFT_ENOMEM : 0;
  }
  if (!rc) {
    json_object_set_new(o, "budget",
                        r->budget && r->on_device
                            ? json_integer((json_int_t)r->budget)
                            : json_null());
    json_object_set_new(o, "nodes", rows);
    json_object_set_new(o, "blocks", blocks);
    rows = blocks = NULL;
    json_object_set_new(o, "peak", json_integer((json_int_t)r->peak));
    json_object_set_new(o, "peak_node",
                        r->peak_row >= 0
                            ? json_string(r->rows[r->peak_row].node_id)
                            : json_null());
    json_object_set_new(o, "weights_loaded",
                        json_integer((json_int_t)r->weights_loaded));
    json_object_set_new(o, "arena_over_budget",
                        json_boolean(r->arena_over_budget));
    if (json_dumpf(o, out, JSON_INDENT(2) | JSON_ENSURE_ASCII) ||
        fputc('\n', out) == EOF)
      rc = WEFT_EIO;
  }
  json_decref(rows);
  json_decref(blocks);
  json_decref(o);
  return rc;
}

PLAN_API int weft_plan_print(const weft_plan_report *r, FILE *out, int json) {
  if (json) return print_json(r, out);
  int idw = 4, opw = 2;
  for (int32_t i = 0; i < r->n_rows; i++) {
    int a = (int)strlen(r->rows[i].node_id), b = (int)strlen(r->rows[i].op);
    if (a > idw) idw = a;
    if (b > opw) opw = b;
  }
  fprintf(out, "%-*s  %-*s  %-7s  %12s  %26s  %12s  %12s\n", idw, "node", opw,
          "op", "device", "weights", "arena (lower bound)", "transfers",
          "peak");
  for (int32_t i = 0; i < r->n_rows; i++) {
    const weft_plan_row *w = &r->rows[i];
    char dev[32], wr[32], ar[32], lb[32], tr[32], pk[32], arena[80];
    device_name(w->device, dev, sizeof dev);
    human(w->weights_resident, wr, sizeof wr);
    human(w->arena, ar, sizeof ar);
    human(w->arena_lower_bound, lb, sizeof lb);
    human(w->transfers, tr, sizeof tr);
    human(w->peak, pk, sizeof pk);
    if (w->status == WEFT_PLAN_PLANNED)
      snprintf(arena, sizeof arena, "%s (%s)", ar, lb);
    else
      snprintf(arena, sizeof arena, "%s",
               w->status == WEFT_PLAN_SKIPPED ? "(output: skipped)" : "(ran)");
    fprintf(out, "%-*s  %-*s  %-7s  %12s  %26s  %12s  %12s\n", idw, w->node_id,
            opw, w->op, dev, wr, arena, tr, pk);
  }
  char pk[32], bud[32];
  human(r->peak, pk, sizeof pk);
  if (r->budget && r->on_device)
    human(r->budget, bud, sizeof bud);
  else
    snprintf(bud, sizeof bud, "unlimited");
  if (r->peak_row >= 0)
    fprintf(out, "peak: %s (%" PRIu64 " bytes) at node '%s'; budget %s\n", pk,
            r->peak, r->rows[r->peak_row].node_id, bud);
  else
    fprintf(out, "peak: 0 B (no node plans memory); budget %s\n", bud);
  if (r->arena_over_budget)
    fprintf(out, "note: an activation arena alone exceeds the budget\n");
  for (int32_t k = 0; k < r->n_blocks; k++)
    if (r->blocks[k].streamed) {
      char b[32];
      human(r->blocks[k].bytes, b, sizeof b);
      fprintf(out, "note: %s (%s) is larger than the budget: it streams\n",
              r->blocks[k].name, b);
    }
  return ferror(out) ? WEFT_EIO : 0;
}
