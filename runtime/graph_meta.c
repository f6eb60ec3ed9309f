/* graph_meta.c - a graph described for the files it produces: its input
 * values as JSON, and the run in ComfyUI's API format (the "prompt" text
 * chunk ComfyUI reads back from a PNG). */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "json_u64.h"

/* A param whose range reaches past INT64_MAX (ComfyUI's seeds, up to
 * 2^64 - 1) holds the unsigned value's bit pattern: it is written as the
 * unsigned number (json_u64.h). */
static json_t *value_json(const weft_value *v, double max) {
  if (!v) return json_null();
  switch (v->kind) {
  case WEFT__V_INT:
    if (v->type == WEFT_TYPE_BOOL) return json_boolean(v->i);
    if (v->i < 0 && max >= 9.3e18) return weft__json_u64((uint64_t)v->i);
    return json_integer(v->i);
  case WEFT__V_FLOAT: return json_real(v->f);
  case WEFT__V_STRING: return json_string(v->s);
  default: return json_null();
  }
}

static char *dump(json_t *o) {
  return weft__json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(17));
}

char *weft__graph_inputs_json(const weft_graph *g) {
  json_t *o = json_object();
  for (int i = 0; o && i < g->n_inputs; i++)
    json_object_set_new(o, g->inputs[i].name,
                        value_json(g->inputs[i].value, g->inputs[i].max));
  return dump(o);
}

char *weft__graph_comfy_json(const weft_graph *g,
                             weft_value *const *const *param_values) {
  json_t *root = json_object();
  for (int i = 0; root && i < g->n_nodes; i++) {
    const weft__gnode *n = &g->nodes[i];
    const weft__op *op = n->rop;
    json_t *node = json_object(), *in = json_object();
    for (int j = 0; j < op->def.n_params; j++) {
      const weft__bind *b = &n->params[j];
      json_t *v;
      double max = op->params[j].max;
      if (b->kind == WEFT__B_NODE)
        v = json_pack("[si]", g->nodes[b->node].id, b->port);
      else if (param_values && param_values[i])
        v = value_json(param_values[i][j], max);
      else if (b->kind == WEFT__B_INPUT)
        v = value_json(g->inputs[b->input].value, max);
      else
        v = value_json(b->value, max);
      json_object_set_new(in, op->params[j].name, v);
    }
    for (int j = 0; j < op->def.n_inputs; j++) {
      const weft__bind *b = &n->inputs[j];
      if (b->kind == WEFT__B_NODE)
        json_object_set_new(in, op->inputs[j].name,
                            json_pack("[si]", g->nodes[b->node].id, b->port));
    }
    json_object_set_new(node, "inputs", in);
    json_object_set_new(node, "class_type", json_string(op->def.op));
    json_object_set_new(node, "_meta", json_pack("{ss}", "title", n->id));
    json_object_set_new(root, n->id, node);
  }
  return dump(root);
}
