/* graph_resolve.c - binds a parsed graph to the registry: ops, params,
 * input references and their types, required inputs, cycles.  Everything
 * `weft validate` reports is found here, with the place it was written. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "internal.h"

/* Node ids are looked up once per reference: an open-addressing index keeps
 * resolving a graph of thousands of nodes linear. */
static uint64_t id_hash(const char *id) { return XXH64(id, strlen(id), 0); }

static int build_index(weft_graph *g) {
  int cap = 16;
  while (cap < g->n_nodes * 2) cap *= 2;
  free(g->id_index);
  g->id_index = malloc((size_t)cap * sizeof *g->id_index);
  if (!g->id_index) return WEFT_ENOMEM;
  g->id_cap = cap;
  for (int i = 0; i < cap; i++) g->id_index[i] = -1;
  for (int i = 0; i < g->n_nodes; i++) {
    int h = (int)(id_hash(g->nodes[i].id) & (uint64_t)(cap - 1));
    while (g->id_index[h] >= 0) {
      const weft__gnode *o = &g->nodes[g->id_index[h]];
      if (strcmp(o->id, g->nodes[i].id) == 0)
        return weft__err(g->ctx, WEFT_EDUP, &g->nodes[i].loc,
                         "duplicate node id '%s' (first at line %d)",
                         g->nodes[i].id, o->loc.line);
      h = (h + 1) & (cap - 1);
    }
    g->id_index[h] = i;
  }
  return 0;
}

int weft__graph_find_node(const weft_graph *g, const char *id) {
  if (!g->id_index) {
    for (int i = 0; i < g->n_nodes; i++)
      if (strcmp(g->nodes[i].id, id) == 0) return i;
    return -1;
  }
  int h = (int)(id_hash(id) & (uint64_t)(g->id_cap - 1));
  for (; g->id_index[h] >= 0; h = (h + 1) & (g->id_cap - 1))
    if (strcmp(g->nodes[g->id_index[h]].id, id) == 0) return g->id_index[h];
  return -1;
}

int weft__graph_find_input(const weft_graph *g, const char *name) {
  for (int i = 0; i < g->n_inputs; i++)
    if (strcmp(g->inputs[i].name, name) == 0) return i;
  return -1;
}

/* ---- scalars ------------------------------------------------------------ */

static int out_of_range(weft_ctx *ctx, const weft_loc *loc, const char *what,
                        const char *text, double min, double max) {
  if (isinf(min))
    return weft__err(ctx, WEFT_ERANGE, loc, "%s: %s is above the maximum %g",
                     what, text, max);
  if (isinf(max))
    return weft__err(ctx, WEFT_ERANGE, loc, "%s: %s is below the minimum %g",
                     what, text, min);
  return weft__err(ctx, WEFT_ERANGE, loc, "%s: %s is outside [%g, %g]", what,
                   text, min, max);
}

int weft__parse_scalar(weft_ctx *ctx, const weft_loc *loc, weft_type type,
                       const char *const *choices, double min, double max,
                       const char *what, const char *text,
                       weft_value **out) {
  *out = NULL;
  bool ranged = min <= max;
  char *end;
  switch (type) {
  case WEFT_TYPE_INT: {
    errno = 0;
    long long x = strtoll(text, &end, 0);
    if (end == text || *end) {
      /* 20.0 is an integer written as a float; accept only exact ones */
      double d = strtod(text, &end);
      if (end == text || *end || d != floor(d) || fabs(d) > 9.2e18)
        return weft__err(ctx, WEFT_ETYPE, loc,
                         "%s: '%s' is not an integer (INT)", what, text);
      x = (long long)d;
    } else if (errno == ERANGE) {
      /* ComfyUI seeds go up to 2^64 - 1: a param whose range reaches past
       * INT64_MAX takes the unsigned value, stored as its bit pattern */
      errno = 0;
      unsigned long long u = strtoull(text, &end, 0);
      if (text[0] == '-' || errno || *end || !ranged || max < 9.3e18)
        return weft__err(ctx, WEFT_ERANGE, loc,
                         "%s: %s does not fit in a 64-bit integer", what,
                         text);
      if ((double)u > max) return out_of_range(ctx, loc, what, text, min, max);
      *out = weft__value_int(WEFT_TYPE_INT, (int64_t)u);
      break;
    }
    if (ranged && ((double)x < min || (double)x > max))
      return out_of_range(ctx, loc, what, text, min, max);
    *out = weft__value_int(WEFT_TYPE_INT, x);
    break;
  }
  case WEFT_TYPE_FLOAT: {
    errno = 0;
    double x = strtod(text, &end);
    if (end == text || *end)
      return weft__err(ctx, WEFT_ETYPE, loc,
                       "%s: '%s' is not a number (FLOAT)", what, text);
    if (!isfinite(x))
      return weft__err(ctx, WEFT_ERANGE, loc, "%s: %s is not finite", what,
                       text);
    if (ranged && (x < min || x > max))
      return out_of_range(ctx, loc, what, text, min, max);
    *out = weft__value_float(x);
    break;
  }
  case WEFT_TYPE_BOOL: {
    static const char *const t[] = {"true", "True", "TRUE", "yes", "on", "1"};
    static const char *const f[] = {"false", "False", "FALSE", "no", "off",
                                    "0"};
    for (int i = 0; i < 6; i++) {
      if (strcmp(text, t[i]) == 0) *out = weft__value_int(WEFT_TYPE_BOOL, 1);
      if (strcmp(text, f[i]) == 0) *out = weft__value_int(WEFT_TYPE_BOOL, 0);
    }
    if (!*out)
      return weft__err(ctx, WEFT_ETYPE, loc,
                       "%s: '%s' is not a boolean (true or false)", what,
                       text);
    break;
  }
  case WEFT_TYPE_ENUM:
  case WEFT_TYPE_STRING: {
    if (choices) {
      int n = 0, hit = -1;
      while (choices[n]) {
        if (strcmp(choices[n], text) == 0) hit = n;
        n++;
      }
      if (hit < 0) {
        char list[1024];
        size_t len = 0;
        list[0] = 0;
        for (int i = 0; i < n && len < sizeof list - 64; i++)
          len += (size_t)snprintf(list + len, sizeof list - len, "%s%s",
                                  i ? ", " : "", choices[i]);
        weft__err(ctx, WEFT_ERANGE, loc, "%s: '%s' is not one of: %s", what,
                  text, list);
        weft__err_suggest(ctx, text, choices, n);
        return WEFT_ERANGE;
      }
      *out = weft__value_string(type, text);
      if (*out) (*out)->i = hit;
    } else {
      *out = weft__value_string(type, text);
    }
    break;
  }
  default:
    return weft__err(ctx, WEFT_ETYPE, loc, "%s: %s cannot be written as text",
                     what, weft__type_name(type, NULL));
  }
  return *out ? 0 : WEFT_ENOMEM;
}

weft_value *weft__scalar_convert(weft_value *v, const weft_param_def *p) {
  if (v->type == p->type && p->type != WEFT_TYPE_ENUM) {
    weft__value_retain(v);
    return v;
  }
  if (p->type == WEFT_TYPE_FLOAT && v->type == WEFT_TYPE_INT)
    return weft__value_float((double)v->i);
  if (p->type == WEFT_TYPE_ENUM &&
      (v->type == WEFT_TYPE_STRING || v->type == WEFT_TYPE_ENUM)) {
    for (int i = 0; p->choices[i]; i++)
      if (strcmp(p->choices[i], v->s) == 0) {
        weft_value *e = weft__value_string(WEFT_TYPE_ENUM, v->s);
        if (e) e->i = i;
        return e;
      }
    return NULL;
  }
  return NULL;
}

/* Can a value of type `from` feed a param of type `to`? */
static bool scalar_fits(weft_type from, weft_type to) {
  return from == to || (from == WEFT_TYPE_INT && to == WEFT_TYPE_FLOAT) ||
         (from == WEFT_TYPE_STRING && to == WEFT_TYPE_ENUM) ||
         (from == WEFT_TYPE_ENUM && to == WEFT_TYPE_STRING);
}

/* A graph input's value against the range of a numeric param it feeds
 * (ComfyUI's unsigned seeds: a negative INT is its 64-bit pattern). */
static int check_range(weft_ctx *ctx, const weft_loc *loc, const char *what,
                       const weft_value *v, const weft_param_def *p) {
  if (p->min > p->max || !v) return 0;
  double x;
  char text[64];
  if (p->type == WEFT_TYPE_INT && v->kind == WEFT__V_INT) {
    bool u = v->i < 0 && p->max >= 9.3e18;
    x = u ? (double)(uint64_t)v->i : (double)v->i;
    if (u)
      snprintf(text, sizeof text, "%llu", (unsigned long long)(uint64_t)v->i);
    else
      snprintf(text, sizeof text, "%lld", (long long)v->i);
  } else if (p->type == WEFT_TYPE_FLOAT && (v->kind == WEFT__V_FLOAT ||
                                            v->kind == WEFT__V_INT)) {
    x = v->kind == WEFT__V_FLOAT ? v->f : (double)v->i;
    snprintf(text, sizeof text, "%.17g", x);
  } else {
    return 0;
  }
  return x < p->min || x > p->max
             ? out_of_range(ctx, loc, what, text, p->min, p->max)
             : 0;
}

static weft_value *param_default(const weft_param_def *p) {
  switch (p->type) {
  case WEFT_TYPE_INT:
  case WEFT_TYPE_BOOL: return weft__value_int(p->type, p->def_int);
  case WEFT_TYPE_FLOAT: return weft__value_float(p->def_float);
  case WEFT_TYPE_STRING:
    return weft__value_string(WEFT_TYPE_STRING, p->def_string);
  case WEFT_TYPE_ENUM: {
    weft_value *v = weft__value_string(WEFT_TYPE_ENUM, p->choices[p->def_int]);
    if (v) v->i = p->def_int;
    return v;
  }
  default: return NULL;
  }
}

/* ---- names -------------------------------------------------------------- */

static int port_index(const weft_port_def *ports, int n, const char *name) {
  for (int i = 0; i < n; i++)
    if (strcmp(ports[i].name, name) == 0) return i;
  return -1;
}

static int param_index(const weft_param_def *ps, int n, const char *name) {
  for (int i = 0; i < n; i++)
    if (strcmp(ps[i].name, name) == 0) return i;
  return -1;
}

/* Suggests among the names of a node's ports and params. */
static void suggest_names(weft_ctx *ctx, const char *name,
                          const weft_port_def *ports, int np,
                          const weft_param_def *params, int npar) {
  const char *cand[512];
  int n = 0;
  for (int i = 0; i < np && n < 512; i++) cand[n++] = ports[i].name;
  for (int i = 0; i < npar && n < 512; i++) cand[n++] = params[i].name;
  weft__err_suggest(ctx, name, cand, n);
}

static int unknown_op(weft_ctx *ctx, const weft__gnode *n) {
  weft__err(ctx, WEFT_ENOENT, &n->op_loc, "node '%s': unknown op '%s'", n->id,
            n->op);
  const char **cand = malloc((size_t)(ctx->n_ops + 1) * sizeof *cand);
  if (cand) {
    for (int i = 0; i < ctx->n_ops; i++) cand[i] = ctx->ops[i].def.op;
    size_t len = strlen(ctx->err);
    const char *best = weft__closest(n->op, cand, ctx->n_ops);
    if (best)
      snprintf(ctx->err + len, sizeof ctx->err - len,
               " (did you mean '%s'?)", best);
    else if (ctx->n_ops == 0)
      snprintf(ctx->err + len, sizeof ctx->err - len,
               " (no plugins are loaded: check WEFT_PLUGIN_PATH or "
               "--plugin-dir)");
    else
      snprintf(ctx->err + len, sizeof ctx->err - len,
               " ('weft nodes' lists the %d known ops)", ctx->n_ops);
    free(cand);
  }
  return WEFT_ENOENT;
}

/* Resolves "node.output" in b. want_type: the consuming port's type (or a
 * param's scalar type when is_param). */
static int resolve_ref(weft_ctx *ctx, weft_graph *g, weft__bind *b,
                       const char *consumer, weft_type want,
                       const char *want_name, bool is_param) {
  char node[256];
  const char *dot = strchr(b->text, '.');
  size_t ln = (size_t)(dot - b->text);
  if (ln >= sizeof node) ln = sizeof node - 1;
  memcpy(node, b->text, ln);
  node[ln] = 0;
  const char *port = dot + 1;
  int src = weft__graph_find_node(g, node);
  if (src < 0) {
    weft__err(ctx, WEFT_ENOENT, &b->loc,
              "%s: reference to a missing node '%s'", consumer, node);
    const char **cand = malloc((size_t)g->n_nodes * sizeof *cand);
    if (cand) {
      for (int i = 0; i < g->n_nodes; i++) cand[i] = g->nodes[i].id;
      weft__err_suggest(ctx, node, cand, g->n_nodes);
      free(cand);
    }
    return WEFT_ENOENT;
  }
  const weft__op *sop = g->nodes[src].rop;
  int out = port_index(sop->outputs, sop->def.n_outputs, port);
  if (out < 0) {
    /* ComfyUI-style numeric output index: ckpt.0 */
    char *end;
    long k = strtol(port, &end, 10);
    if (*port && !*end && k >= 0 && k < sop->def.n_outputs) out = (int)k;
  }
  if (out < 0) {
    weft__err(ctx, WEFT_ENOENT, &b->loc,
              "%s: node '%s' (%s) has no output '%s'", consumer, node,
              sop->def.op, port);
    const char *cand[256];
    int nc = 0;
    for (int i = 0; i < sop->def.n_outputs && nc < 256; i++)
      cand[nc++] = sop->outputs[i].name;
    size_t len = strlen(ctx->err);
    const char *best = weft__closest(port, cand, nc);
    if (best)
      snprintf(ctx->err + len, sizeof ctx->err - len,
               " (did you mean '%s'?)", best);
    else if (nc)
      snprintf(ctx->err + len, sizeof ctx->err - len, " (outputs: %s%s%s%s)",
               cand[0], nc > 1 ? ", " : "", nc > 1 ? cand[1] : "",
               nc > 2 ? ", ..." : "");
    else
      snprintf(ctx->err + len, sizeof ctx->err - len, " (it has no outputs)");
    return WEFT_ENOENT;
  }
  const weft_port_def *op = &sop->outputs[out];
  bool ok;
  if (is_param)
    ok = weft__type_is_scalar(op->type) && scalar_fits(op->type, want);
  else
    ok = op->type == want &&
         (want != WEFT_TYPE_CUSTOM || strcmp(op->type_name, want_name) == 0);
  if (!ok && !is_param && want == WEFT_TYPE_TENSOR)
    ok = !weft__type_is_scalar(op->type) &&
         (op->type == WEFT_TYPE_IMAGE || op->type == WEFT_TYPE_MASK ||
          op->type == WEFT_TYPE_LATENT);
  if (!ok)
    return weft__err(ctx, WEFT_ETYPE, &b->loc,
                     "%s: type mismatch: '%s' is %s, but %s takes %s",
                     consumer, b->text, weft__type_name(op->type, op->type_name),
                     is_param ? "the param" : "the input",
                     weft__type_name(want, want_name));
  b->node = src;
  b->port = out;
  return 0;
}

static int resolve_input_ref(weft_ctx *ctx, weft_graph *g, weft__bind *b,
                             const char *consumer, const weft_param_def *p) {
  int i = weft__graph_find_input(g, b->text);
  if (i < 0) {
    weft__err(ctx, WEFT_ENOENT, &b->loc, "%s: unknown graph input '$%s'",
              consumer, b->text);
    const char **cand = malloc((size_t)(g->n_inputs + 1) * sizeof *cand);
    if (cand) {
      for (int k = 0; k < g->n_inputs; k++) cand[k] = g->inputs[k].name;
      weft__err_suggest(ctx, b->text, cand, g->n_inputs);
      free(cand);
    }
    if (g->n_inputs == 0) {
      size_t len = strlen(ctx->err);
      snprintf(ctx->err + len, sizeof ctx->err - len,
               " (declare it under 'inputs:' at the top of the graph)");
    }
    return WEFT_ENOENT;
  }
  weft__ginput *in = &g->inputs[i];
  if (!scalar_fits(in->type, p->type))
    return weft__err(ctx, WEFT_ETYPE, &b->loc,
                     "%s: type mismatch: graph input '%s' is %s, but the "
                     "param takes %s",
                     consumer, in->name, weft__type_name(in->type, NULL),
                     weft__type_name(p->type, NULL));
  /* the input's default must be valid for the param too (an ENUM name,
   * a range); --set values are checked again before the run */
  if (in->value) {
    weft_value *cv = weft__scalar_convert(in->value, p);
    if (!cv) {
      weft__err(ctx, WEFT_ERANGE, &b->loc,
                "%s: graph input '%s' default '%s' is not one of the "
                "param's choices",
                consumer, in->name, in->value->s);
      if (p->choices) {
        int nc = 0;
        while (p->choices[nc]) nc++;
        weft__err_suggest(ctx, in->value->s, p->choices, nc);
      }
      return WEFT_ERANGE;
    }
    weft__value_release(cv);
    char what[512];
    snprintf(what, sizeof what, "%s: graph input '%s' default", consumer,
             in->name);
    int r = check_range(ctx, &b->loc, what, in->value, p);
    if (r) return r;
  }
  b->input = i;
  return 0;
}

static int resolve_node(weft_ctx *ctx, weft_graph *g, weft__gnode *n) {
  const weft__op *op = n->rop;
  const weft_node_def *d = &op->def;
  char consumer[300];
  n->inputs = calloc((size_t)d->n_inputs + 1, sizeof *n->inputs);
  n->params = calloc((size_t)d->n_params + 1, sizeof *n->params);
  if (!n->inputs || !n->params) return WEFT_ENOMEM;
  for (int j = 0; j < d->n_params; j++) {
    n->params[j].kind = WEFT__B_NONE;
    n->params[j].loc = n->loc;
    if (!(n->params[j].value = param_default(&op->params[j])))
      return WEFT_ENOMEM;
  }
  int r;
  for (int j = 0; j < n->n_raw_params; j++) {
    weft__kv *kv = &n->raw_params[j];
    int pi = param_index(op->params, d->n_params, kv->name);
    snprintf(consumer, sizeof consumer, "node '%s' param '%s'", n->id,
             kv->name);
    if (pi < 0) {
      if (port_index(op->inputs, d->n_inputs, kv->name) >= 0)
        return weft__err(ctx, WEFT_ESYNTAX, &kv->loc,
                         "node '%s': '%s' is an input of %s, not a param: "
                         "put it under 'inputs:' as node.output",
                         n->id, kv->name, d->op);
      weft__err(ctx, WEFT_ENOENT, &kv->loc, "node '%s': %s has no param '%s'",
                n->id, d->op, kv->name);
      suggest_names(ctx, kv->name, NULL, 0, op->params, d->n_params);
      return WEFT_ENOENT;
    }
    const weft_param_def *p = &op->params[pi];
    weft__bind *b = &n->params[pi];
    weft__value_release(b->value);
    *b = kv->bind; /* shares text/value with the raw bind */
    if (b->kind == WEFT__B_CONST) {
      const char *const *choices =
          p->type == WEFT_TYPE_ENUM ? p->choices : NULL;
      if ((r = weft__parse_scalar(ctx, &b->loc, p->type, choices, p->min,
                                  p->max, consumer, b->text, &kv->bind.value)))
        return r;
      b->value = kv->bind.value;
    } else if (b->kind == WEFT__B_INPUT) {
      b->value = NULL;
      if ((r = resolve_input_ref(ctx, g, b, consumer, p))) return r;
    }
  }
  for (int j = 0; j < n->n_raw_inputs; j++) {
    weft__kv *kv = &n->raw_inputs[j];
    snprintf(consumer, sizeof consumer, "node '%s' input '%s'", n->id,
             kv->name);
    int ii = port_index(op->inputs, d->n_inputs, kv->name);
    if (ii >= 0) {
      n->inputs[ii] = kv->bind;
      const weft_port_def *port = &op->inputs[ii];
      if ((r = resolve_ref(ctx, g, &n->inputs[ii], consumer, port->type,
                           port->type_name, false)))
        return r;
      continue;
    }
    int pi = param_index(op->params, d->n_params, kv->name);
    if (pi >= 0) { /* a param fed by an upstream scalar (a "widget input") */
      if (n->params[pi].kind != WEFT__B_NONE)
        return weft__err(ctx, WEFT_EDUP, &kv->loc,
                         "node '%s': param '%s' is set under 'params:' and "
                         "connected under 'inputs:'; keep one",
                         n->id, kv->name);
      weft__value_release(n->params[pi].value);
      n->params[pi] = kv->bind;
      if ((r = resolve_ref(ctx, g, &n->params[pi], consumer,
                           op->params[pi].type, NULL, true)))
        return r;
      continue;
    }
    weft__err(ctx, WEFT_ENOENT, &kv->loc, "node '%s': %s has no input '%s'",
              n->id, d->op, kv->name);
    suggest_names(ctx, kv->name, op->inputs, d->n_inputs, op->params,
                  d->n_params);
    return WEFT_ENOENT;
  }
  for (int j = 0; j < d->n_inputs; j++)
    if (n->inputs[j].kind == WEFT__B_NONE &&
        !(op->inputs[j].flags & WEFT_PORT_OPTIONAL))
      return weft__err(ctx, WEFT_EMISSING, &n->loc,
                       "node '%s' (%s): required input '%s' (%s) is not "
                       "connected",
                       n->id, d->op, op->inputs[j].name,
                       weft__type_name(op->inputs[j].type,
                                       op->inputs[j].type_name));
  return 0;
}

/* ---- order and cycles --------------------------------------------------- */

static int for_each_dep(const weft__gnode *n, int k) {
  /* k-th dependency source over inputs then params; -1 past the end */
  int ni = n->rop->def.n_inputs, np = n->rop->def.n_params;
  int seen = 0;
  for (int j = 0; j < ni; j++)
    if (n->inputs[j].kind == WEFT__B_NODE && seen++ == k)
      return n->inputs[j].node;
  for (int j = 0; j < np; j++)
    if (n->params[j].kind == WEFT__B_NODE && seen++ == k)
      return n->params[j].node;
  return -1;
}

static const weft_loc *dep_loc(const weft__gnode *n, int src) {
  for (int j = 0; j < n->rop->def.n_inputs; j++)
    if (n->inputs[j].kind == WEFT__B_NODE && n->inputs[j].node == src)
      return &n->inputs[j].loc;
  for (int j = 0; j < n->rop->def.n_params; j++)
    if (n->params[j].kind == WEFT__B_NODE && n->params[j].node == src)
      return &n->params[j].loc;
  return &n->loc;
}

/* Finds and reports one cycle among the nodes Kahn's algorithm left. */
static int report_cycle(weft_ctx *ctx, const weft_graph *g,
                        const int *indeg) {
  int start = -1;
  for (int i = 0; i < g->n_nodes && start < 0; i++)
    if (indeg[i] > 0) start = i;
  /* walk dependencies inside the leftover set until a node repeats */
  int *step = malloc((size_t)g->n_nodes * sizeof *step);
  int *path = malloc((size_t)(g->n_nodes + 1) * sizeof *path);
  if (!step || !path) {
    free(step), free(path);
    return WEFT_ENOMEM;
  }
  for (int i = 0; i < g->n_nodes; i++) step[i] = -1;
  int len = 0, cur = start;
  while (step[cur] < 0) {
    step[cur] = len;
    path[len++] = cur;
    int next = -1;
    for (int k = 0; (next = for_each_dep(&g->nodes[cur], k)) >= 0; k++)
      if (indeg[next] > 0) break;
    cur = next;
  }
  /* path[step[cur]..len) is the cycle, each node depending on the next;
   * print it in data-flow order: producer -> consumer */
  char buf[2048];
  size_t n = 0;
  int first = step[cur];
  for (int i = len - 1; i >= first && n < sizeof buf - 300; i--)
    n += (size_t)snprintf(buf + n, sizeof buf - n, "%s -> ",
                          g->nodes[path[i]].id);
  snprintf(buf + n, sizeof buf - n, "%s", g->nodes[path[len - 1]].id);
  const weft_loc *loc = dep_loc(&g->nodes[path[first]], path[first + 1 < len
                                                                 ? first + 1
                                                                 : first]);
  int r = weft__err(ctx, WEFT_ECYCLE, loc, "the graph has a cycle: %s", buf);
  free(step), free(path);
  return r;
}

/* Kahn's algorithm over consumer lists (CSR), so ordering is linear in the
 * number of edges. */
static int order_nodes(weft_ctx *ctx, weft_graph *g) {
  int n = g->n_nodes;
  int *indeg = calloc((size_t)n, sizeof *indeg);
  int *start = calloc((size_t)n + 1, sizeof *start);
  int *queue = malloc((size_t)n * sizeof *queue);
  g->order = malloc((size_t)n * sizeof *g->order);
  int edges = 0;
  for (int i = 0; i < n; i++)
    for (int k = 0; for_each_dep(&g->nodes[i], k) >= 0; k++) edges++;
  int *cons = malloc((size_t)(edges ? edges : 1) * sizeof *cons);
  int *fill = calloc((size_t)n + 1, sizeof *fill);
  if (!indeg || !start || !queue || !g->order || !cons || !fill) {
    free(indeg), free(start), free(queue), free(cons), free(fill);
    return WEFT_ENOMEM;
  }
  for (int i = 0; i < n; i++)
    for (int k = 0, s; (s = for_each_dep(&g->nodes[i], k)) >= 0; k++) {
      indeg[i]++;
      start[s + 1]++;
    }
  for (int i = 0; i < n; i++) start[i + 1] += start[i];
  for (int i = 0; i < n; i++)
    for (int k = 0, s; (s = for_each_dep(&g->nodes[i], k)) >= 0; k++)
      cons[start[s] + fill[s]++] = i;
  int head = 0, tail = 0;
  for (int i = 0; i < n; i++)
    if (indeg[i] == 0) queue[tail++] = i;
  int done = 0;
  while (head < tail) {
    int u = queue[head++];
    g->order[done++] = u;
    for (int e = start[u]; e < start[u + 1]; e++)
      if (--indeg[cons[e]] == 0) queue[tail++] = cons[e];
  }
  int r = 0;
  if (done < n) r = report_cycle(ctx, g, indeg);
  free(indeg), free(start), free(queue), free(cons), free(fill);
  return r;
}

int weft__graph_resolve(weft_ctx *ctx, weft_graph *g) {
  int r;
  if ((r = build_index(g))) return r;
  for (int i = 0; i < g->n_nodes; i++) {
    weft__gnode *n = &g->nodes[i];
    n->rop = NULL;
    for (int k = 0; k < ctx->n_ops && !n->rop; k++)
      if (strcmp(ctx->ops[k].def.op, n->op) == 0) n->rop = &ctx->ops[k];
    if (!n->rop) return unknown_op(ctx, n);
  }
  for (int i = 0; i < g->n_nodes; i++)
    if ((r = resolve_node(ctx, g, &g->nodes[i]))) return r;
  for (int i = 0; i < g->n_outputs; i++) {
    weft__goutput *o = &g->outputs[i];
    char consumer[300];
    snprintf(consumer, sizeof consumer, "graph output '%s'", o->name);
    /* a graph output takes whatever type its source has */
    weft__bind *b = &o->ref;
    const char *dot = strchr(b->text, '.');
    char node[256];
    size_t ln = (size_t)(dot - b->text);
    if (ln >= sizeof node) ln = sizeof node - 1;
    memcpy(node, b->text, ln);
    node[ln] = 0;
    int src = weft__graph_find_node(g, node);
    weft_type want = WEFT_TYPE_COUNT;
    const char *want_name = NULL;
    if (src >= 0) {
      const weft__op *sop = g->nodes[src].rop;
      int out = port_index(sop->outputs, sop->def.n_outputs, dot + 1);
      if (out >= 0) {
        want = sop->outputs[out].type;
        want_name = sop->outputs[out].type_name;
      }
    }
    if ((r = resolve_ref(ctx, g, b, consumer, want, want_name, false)))
      return r;
  }
  return order_nodes(ctx, g);
}

/* ---- inputs set from the command line ----------------------------------- */

int weft_graph_set_input(weft_ctx *ctx, weft_graph *g, const char *name,
                         const char *value) {
  int i = weft__graph_find_input(g, name);
  if (i < 0) {
    weft__err(ctx, WEFT_ENOENT, NULL, "--set %s: the graph %s has no input '%s'",
              name, g->file, name);
    const char **cand = malloc((size_t)(g->n_inputs + 1) * sizeof *cand);
    if (cand) {
      for (int k = 0; k < g->n_inputs; k++) cand[k] = g->inputs[k].name;
      weft__err_suggest(ctx, name, cand, g->n_inputs);
      free(cand);
    }
    return WEFT_ENOENT;
  }
  weft__ginput *in = &g->inputs[i];
  char what[300];
  snprintf(what, sizeof what, "--set %s", name);
  weft_value *v;
  int r = weft__parse_scalar(ctx, NULL, in->type,
                             (const char *const *)in->choices, in->min,
                             in->max, what, value, &v);
  if (r) return r;
  /* the value must suit every param it feeds (the input's own range may
   * be wider than theirs) */
  for (int k = 0; k < g->n_nodes && !r; k++) {
    const weft__gnode *n = &g->nodes[k];
    for (int j = 0; n->rop && j < n->rop->def.n_params && !r; j++) {
      const weft__bind *b = &n->params[j];
      if (b->kind != WEFT__B_INPUT || b->input != i) continue;
      const weft_param_def *p = &n->rop->params[j];
      char feeds[600];
      snprintf(feeds, sizeof feeds, "%s (node '%s' param '%s')", what, n->id,
               p->name);
      weft_value *cv = weft__scalar_convert(v, p);
      if (!cv) {
        r = weft__err(ctx, WEFT_ERANGE, NULL, "%s: '%s' is not one of the "
                      "param's choices", feeds, value);
        if (p->choices) {
          int nc = 0;
          while (p->choices[nc]) nc++;
          weft__err_suggest(ctx, value, p->choices, nc);
        }
      } else {
        r = check_range(ctx, NULL, feeds, v, p);
      }
      weft__value_release(cv);
    }
  }
  if (r) {
    weft__value_release(v);
    return r;
  }
  weft__value_release(in->value);
  in->value = v;
  return 0;
}

int weft_graph_node_count(const weft_graph *g) { return g->n_nodes; }
