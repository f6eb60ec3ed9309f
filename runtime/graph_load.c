/* graph_load.c - reads a YAML graph (libyaml's document API, so anchors and
 * aliases work) into an unresolved weft_graph, keeping every name's
 * file:line:col for messages.  The format is described in docs/graphs.md. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <yaml.h>

#include "internal.h"

typedef struct parser {
  weft_ctx *ctx;
  weft_graph *g;
  yaml_document_t doc;
} parser;

static weft_loc mark_loc(const parser *p, yaml_mark_t m) {
  return (weft_loc){p->g->file, (int)m.line + 1, (int)m.column + 1};
}

static weft_loc node_loc(const parser *p, const yaml_node_t *n) {
  return mark_loc(p, n->start_mark);
}

static const char *kind_name(const yaml_node_t *n) {
  switch (n->type) {
  case YAML_SCALAR_NODE: return "a scalar";
  case YAML_SEQUENCE_NODE: return "a list";
  case YAML_MAPPING_NODE: return "a mapping";
  default: return "empty";
  }
}

static const char *scalar(const yaml_node_t *n) {
  return (const char *)n->data.scalar.value;
}

static bool is_quoted(const yaml_node_t *n) {
  return n->data.scalar.style == YAML_SINGLE_QUOTED_SCALAR_STYLE ||
         n->data.scalar.style == YAML_DOUBLE_QUOTED_SCALAR_STYLE ||
         n->data.scalar.style == YAML_LITERAL_SCALAR_STYLE ||
         n->data.scalar.style == YAML_FOLDED_SCALAR_STYLE;
}

static int expect(parser *p, const yaml_node_t *n, yaml_node_type_t type,
                  const char *what) {
  if (n->type == type) return 0;
  const char *want = type == YAML_MAPPING_NODE    ? "a mapping"
                     : type == YAML_SEQUENCE_NODE ? "a list"
                                                  : "a scalar";
  weft_loc l = node_loc(p, n);
  return weft__err(p->ctx, WEFT_ESYNTAX, &l, "%s must be %s, not %s", what,
                   want, kind_name(n));
}

typedef struct pair_iter {
  yaml_node_pair_t *at, *end;
} pair_iter;

/* Checks that every key of a mapping is a scalar and that no key repeats
 * (libyaml accepts duplicates; a silent "last one wins" would hide typos).
 * Linear: keys go into an open-addressing table of their hashes. */
static int check_keys(parser *p, const yaml_node_t *map, const char *what) {
  int n = (int)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
  int cap = 16;
  while (cap < 2 * n) cap *= 2;
  int *slot = malloc((size_t)cap * sizeof *slot);
  if (!slot) return WEFT_ENOMEM;
  for (int i = 0; i < cap; i++) slot[i] = -1;
  int r = 0;
  for (int i = 0; i < n && !r; i++) {
    yaml_node_pair_t *a = &map->data.mapping.pairs.start[i];
    yaml_node_t *k = yaml_document_get_node(&p->doc, a->key);
    if (!k || k->type != YAML_SCALAR_NODE) {
      weft_loc l = k ? node_loc(p, k) : (weft_loc){p->g->file, 0, 0};
      r = weft__err(p->ctx, WEFT_ESYNTAX, &l, "keys of %s must be plain names",
                    what);
      break;
    }
    int h = (int)(XXH64(scalar(k), strlen(scalar(k)), 0) & (uint64_t)(cap - 1));
    for (; slot[h] >= 0; h = (h + 1) & (cap - 1)) {
      yaml_node_t *kb = yaml_document_get_node(
          &p->doc, map->data.mapping.pairs.start[slot[h]].key);
      if (strcmp(scalar(kb), scalar(k)) == 0) {
        weft_loc l = node_loc(p, k), lb = node_loc(p, kb);
        r = weft__err(p->ctx, WEFT_EDUP, &l,
                      "duplicate key '%s' in %s (first at line %d)", scalar(k),
                      what, lb.line);
        break;
      }
    }
    slot[h] = i;
  }
  free(slot);
  return r;
}

static void bind_free(weft__bind *b) {
  free(b->text);
  weft__value_release(b->value);
}

static bool valid_id(const char *s) {
  if (!*s) return false;
  for (; *s; s++)
    if (!(isalnum((unsigned char)*s) || *s == '_' || *s == '-')) return false;
  return true;
}

/* A reference "node.output". */
static int parse_ref(parser *p, const yaml_node_t *v, weft__bind *b,
                     const char *what) {
  int r = expect(p, v, YAML_SCALAR_NODE, what);
  if (r) return r;
  b->loc = node_loc(p, v);
  const char *s = scalar(v);
  const char *dot = strchr(s, '.');
  if (!dot || dot == s || !dot[1] || strchr(dot + 1, '.'))
    return weft__err(p->ctx, WEFT_ESYNTAX, &b->loc,
                     "%s: '%s' is not a reference; write node.output "
                     "(for example 'ckpt.MODEL')",
                     what, s);
  b->kind = WEFT__B_NODE;
  b->text = strdup(s);
  b->node = b->port = -1;
  return b->text ? 0 : WEFT_ENOMEM;
}

/* A param value: a constant, or "$name" for a graph input ("$$" is a
 * literal '$'). */
static int parse_param_value(parser *p, const yaml_node_t *v, weft__bind *b,
                             const char *what) {
  int r = expect(p, v, YAML_SCALAR_NODE, what);
  if (r) return r;
  b->loc = node_loc(p, v);
  const char *s = scalar(v);
  if (s[0] == '$' && s[1] != '$' && !is_quoted(v)) {
    b->kind = WEFT__B_INPUT;
    b->text = strdup(s + 1);
    b->input = -1;
    if (b->text && !valid_id(b->text))
      return weft__err(p->ctx, WEFT_ESYNTAX, &b->loc,
                       "%s: '%s' is not a graph input name", what, s);
  } else {
    b->kind = WEFT__B_CONST;
    b->text = strdup(s[0] == '$' && s[1] == '$' ? s + 1 : s);
    b->is_quoted = is_quoted(v);
  }
  return b->text ? 0 : WEFT_ENOMEM;
}

typedef int (*value_parser)(parser *, const yaml_node_t *, weft__bind *,
                            const char *);

/* Parses a node's params or inputs mapping; kind is "param" or "input". */
static int parse_kvs(parser *p, const yaml_node_t *map, const char *node_id,
                     const char *kind, value_parser vp, weft__kv **out,
                     int *n_out) {
  char what[300];
  snprintf(what, sizeof what, "%ss of node '%s'", kind, node_id);
  int r = expect(p, map, YAML_MAPPING_NODE, what);
  if (r || (r = check_keys(p, map, what))) return r;
  int n = (int)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
  weft__kv *kv = calloc((size_t)(n ? n : 1), sizeof *kv);
  if (!kv) return WEFT_ENOMEM;
  *out = kv;
  *n_out = 0;
  for (int i = 0; i < n; i++) {
    yaml_node_pair_t *pr = &map->data.mapping.pairs.start[i];
    yaml_node_t *k = yaml_document_get_node(&p->doc, pr->key);
    yaml_node_t *v = yaml_document_get_node(&p->doc, pr->value);
    kv[i].name = strdup(scalar(k));
    kv[i].loc = node_loc(p, k);
    *n_out = i + 1;
    if (!kv[i].name) return WEFT_ENOMEM;
    char w[600];
    snprintf(w, sizeof w, "node '%s' %s '%s'", node_id, kind, scalar(k));
    if ((r = vp(p, v, &kv[i].bind, w))) return r;
  }
  return 0;
}

static const char *const top_keys[] = {"version", "description", "inputs",
                                       "nodes", "outputs"};
static const char *const node_keys[] = {"op", "params", "inputs", "doc"};
static const char *const input_keys[] = {"type", "default", "doc", "min",
                                         "max",  "choices"};

static int unknown_key(parser *p, const yaml_node_t *k, const char *where,
                       const char *const *valid, int n) {
  weft_loc l = node_loc(p, k);
  weft__err(p->ctx, WEFT_ESYNTAX, &l, "unknown key '%s' in %s", scalar(k),
            where);
  weft__err_suggest(p->ctx, scalar(k), valid, n);
  return WEFT_ESYNTAX;
}

static int parse_number(parser *p, const yaml_node_t *v, const char *what,
                        double *out) {
  int r = expect(p, v, YAML_SCALAR_NODE, what);
  if (r) return r;
  char *end;
  errno = 0;
  *out = strtod(scalar(v), &end);
  if (end == scalar(v) || *end || errno) {
    weft_loc l = node_loc(p, v);
    return weft__err(p->ctx, WEFT_ESYNTAX, &l, "%s: '%s' is not a number",
                     what, scalar(v));
  }
  return 0;
}

static int parse_graph_input(parser *p, const yaml_node_t *k,
                             const yaml_node_t *v, weft__ginput *in) {
  in->name = strdup(scalar(k));
  in->loc = node_loc(p, k);
  in->min = -INFINITY, in->max = INFINITY; /* bounds set below, if any */
  if (!in->name) return WEFT_ENOMEM;
  if (!valid_id(in->name))
    return weft__err(p->ctx, WEFT_ESYNTAX, &in->loc,
                     "graph input name '%s' may hold only letters, digits, "
                     "'_' and '-'",
                     in->name);
  char what[256];
  snprintf(what, sizeof what, "graph input '%s'", in->name);
  const yaml_node_t *def = NULL, *type = NULL;
  int r;
  if (v->type == YAML_SCALAR_NODE) {
    /* shorthand "seed: 42": the type follows from the value */
    def = v;
  } else {
    if ((r = expect(p, v, YAML_MAPPING_NODE, what)) ||
        (r = check_keys(p, v, what)))
      return r;
    for (yaml_node_pair_t *pr = v->data.mapping.pairs.start;
         pr < v->data.mapping.pairs.top; pr++) {
      yaml_node_t *kk = yaml_document_get_node(&p->doc, pr->key);
      yaml_node_t *vv = yaml_document_get_node(&p->doc, pr->value);
      const char *key = scalar(kk);
      if (strcmp(key, "type") == 0) {
        if ((r = expect(p, vv, YAML_SCALAR_NODE, what))) return r;
        type = vv;
      } else if (strcmp(key, "default") == 0) {
        def = vv;
      } else if (strcmp(key, "doc") == 0) {
        if ((r = expect(p, vv, YAML_SCALAR_NODE, what))) return r;
        if (!(in->doc = strdup(scalar(vv)))) return WEFT_ENOMEM;
      } else if (strcmp(key, "min") == 0) {
        if ((r = parse_number(p, vv, what, &in->min))) return r;
      } else if (strcmp(key, "max") == 0) {
        if ((r = parse_number(p, vv, what, &in->max))) return r;
      } else if (strcmp(key, "choices") == 0) {
        if ((r = expect(p, vv, YAML_SEQUENCE_NODE, what))) return r;
        int n = (int)(vv->data.sequence.items.top -
                      vv->data.sequence.items.start);
        in->choices = calloc((size_t)n + 1, sizeof *in->choices);
        if (!in->choices) return WEFT_ENOMEM;
        for (int i = 0; i < n; i++) {
          yaml_node_t *c =
              yaml_document_get_node(&p->doc, vv->data.sequence.items.start[i]);
          if ((r = expect(p, c, YAML_SCALAR_NODE, what))) return r;
          if (!(in->choices[i] = strdup(scalar(c)))) return WEFT_ENOMEM;
        }
      } else {
        return unknown_key(p, kk, what, input_keys, 6);
      }
    }
  }
  if (type) {
    weft_loc tl = node_loc(p, type);
    if (weft__type_from_name(scalar(type), &in->type) != 0 ||
        !weft__type_is_scalar(in->type) || in->type == WEFT_TYPE_ENUM) {
      static const char *const scalars[] = {"INT", "FLOAT", "STRING",
                                            "BOOLEAN"};
      weft__err(p->ctx, WEFT_ETYPE, &tl,
                "%s: type '%s' is not one of INT, FLOAT, STRING, BOOLEAN",
                what, scalar(type));
      weft__err_suggest(p->ctx, scalar(type), scalars, 4);
      return WEFT_ETYPE;
    }
  } else if (def && def->type == YAML_SCALAR_NODE) {
    /* infer from the default as YAML's core schema would */
    const char *s = scalar(def);
    char *end;
    in->type = WEFT_TYPE_STRING;
    if (!is_quoted(def) && *s) {
      errno = 0;
      (void)strtoll(s, &end, 10);
      if (!*end && !errno)
        in->type = WEFT_TYPE_INT;
      else if ((void)strtod(s, &end), !*end)
        in->type = WEFT_TYPE_FLOAT;
      else if (!strcmp(s, "true") || !strcmp(s, "false"))
        in->type = WEFT_TYPE_BOOL;
    }
  } else {
    return weft__err(p->ctx, WEFT_ESYNTAX, &in->loc,
                     "%s needs a type or a default", what);
  }
  if (def) {
    if ((r = expect(p, def, YAML_SCALAR_NODE, what))) return r;
    weft_loc dl = node_loc(p, def);
    r = weft__parse_scalar(p->ctx, &dl, in->type,
                           (const char *const *)in->choices, in->min, in->max,
                           what, scalar(def), &in->value);
    if (r) return r;
  }
  return 0;
}

static int parse_node(parser *p, const yaml_node_t *k, const yaml_node_t *v,
                      weft__gnode *n) {
  n->id = strdup(scalar(k));
  n->loc = node_loc(p, k);
  if (!n->id) return WEFT_ENOMEM;
  if (!valid_id(n->id))
    return weft__err(p->ctx, WEFT_ESYNTAX, &n->loc,
                     "node id '%s' may hold only letters, digits, '_' and "
                     "'-' (a '.' would make node.output references ambiguous)",
                     n->id);
  char what[256];
  snprintf(what, sizeof what, "node '%s'", n->id);
  int r;
  if ((r = expect(p, v, YAML_MAPPING_NODE, what)) ||
      (r = check_keys(p, v, what)))
    return r;
  for (yaml_node_pair_t *pr = v->data.mapping.pairs.start;
       pr < v->data.mapping.pairs.top; pr++) {
    yaml_node_t *kk = yaml_document_get_node(&p->doc, pr->key);
    yaml_node_t *vv = yaml_document_get_node(&p->doc, pr->value);
    const char *key = scalar(kk);
    if (strcmp(key, "op") == 0) {
      char w[300];
      snprintf(w, sizeof w, "the op of node '%s'", n->id);
      if ((r = expect(p, vv, YAML_SCALAR_NODE, w))) return r;
      if (!(n->op = strdup(scalar(vv)))) return WEFT_ENOMEM;
      n->op_loc = node_loc(p, vv);
    } else if (strcmp(key, "params") == 0) {
      if (vv->type == YAML_SCALAR_NODE && !*scalar(vv)) continue; /* empty */
      if ((r = parse_kvs(p, vv, n->id, "param", parse_param_value,
                         &n->raw_params, &n->n_raw_params)))
        return r;
    } else if (strcmp(key, "inputs") == 0) {
      if (vv->type == YAML_SCALAR_NODE && !*scalar(vv)) continue;
      if ((r = parse_kvs(p, vv, n->id, "input", parse_ref, &n->raw_inputs,
                         &n->n_raw_inputs)))
        return r;
    } else if (strcmp(key, "doc") == 0) {
      /* free text for readers of the file */
    } else {
      return unknown_key(p, kk, what, node_keys, 4);
    }
  }
  if (!n->op)
    return weft__err(p->ctx, WEFT_ESYNTAX, &n->loc,
                     "node '%s' has no 'op' (the node type, for example "
                     "'KSampler')",
                     n->id);
  return 0;
}

static int parse_output(parser *p, const yaml_node_t *k, const yaml_node_t *v,
                        weft__goutput *o) {
  o->name = strdup(scalar(k));
  o->loc = node_loc(p, k);
  if (!o->name) return WEFT_ENOMEM;
  char what[256];
  snprintf(what, sizeof what, "graph output '%s'", o->name);
  return parse_ref(p, v, &o->ref, what);
}

static int mapping_size(const yaml_node_t *m) {
  return (int)(m->data.mapping.pairs.top - m->data.mapping.pairs.start);
}

static int parse_root(parser *p, const yaml_node_t *root) {
  weft_graph *g = p->g;
  weft_loc top = {g->file, 1, 1};
  if (!root)
    return weft__err(p->ctx, WEFT_ESYNTAX, &top,
                     "the graph file is empty (expected 'version: 1' and "
                     "'nodes:')");
  int r;
  if ((r = expect(p, root, YAML_MAPPING_NODE, "the graph")) ||
      (r = check_keys(p, root, "the graph")))
    return r;
  const yaml_node_t *version = NULL, *inputs = NULL, *nodes = NULL,
                    *outputs = NULL;
  for (yaml_node_pair_t *pr = root->data.mapping.pairs.start;
       pr < root->data.mapping.pairs.top; pr++) {
    yaml_node_t *k = yaml_document_get_node(&p->doc, pr->key);
    yaml_node_t *v = yaml_document_get_node(&p->doc, pr->value);
    const char *key = scalar(k);
    if (strcmp(key, "version") == 0)
      version = v;
    else if (strcmp(key, "inputs") == 0)
      inputs = v;
    else if (strcmp(key, "nodes") == 0)
      nodes = v;
    else if (strcmp(key, "outputs") == 0)
      outputs = v;
    else if (strcmp(key, "description") != 0)
      return unknown_key(p, k, "the graph", top_keys, 5);
  }
  if (!version)
    return weft__err(p->ctx, WEFT_ESYNTAX, &top,
                     "missing 'version' key (add 'version: 1' at the top)");
  if ((r = expect(p, version, YAML_SCALAR_NODE, "version"))) return r;
  if (strcmp(scalar(version), "1") != 0) {
    weft_loc l = node_loc(p, version);
    return weft__err(p->ctx, WEFT_EUNSUPPORTED, &l,
                     "graph format version '%s' is not supported (this weft "
                     "reads version 1)",
                     scalar(version));
  }
  g->version = 1;
  if (!nodes)
    return weft__err(p->ctx, WEFT_ESYNTAX, &top,
                     "missing 'nodes' key: a graph needs at least one node");
  if ((r = expect(p, nodes, YAML_MAPPING_NODE, "nodes")) ||
      (r = check_keys(p, nodes, "nodes")))
    return r;
  if (inputs && !(inputs->type == YAML_SCALAR_NODE && !*scalar(inputs))) {
    if ((r = expect(p, inputs, YAML_MAPPING_NODE, "inputs")) ||
        (r = check_keys(p, inputs, "inputs")))
      return r;
    int n = mapping_size(inputs);
    if (!(g->inputs = calloc((size_t)n + 1, sizeof *g->inputs)))
      return WEFT_ENOMEM;
    for (int i = 0; i < n; i++) {
      yaml_node_pair_t *pr = &inputs->data.mapping.pairs.start[i];
      g->n_inputs = i + 1;
      if ((r = parse_graph_input(p, yaml_document_get_node(&p->doc, pr->key),
                                 yaml_document_get_node(&p->doc, pr->value),
                                 &g->inputs[i])))
        return r;
    }
  }
  int n = mapping_size(nodes);
  if (n == 0) {
    weft_loc l = node_loc(p, nodes);
    return weft__err(p->ctx, WEFT_ESYNTAX, &l, "'nodes' is empty");
  }
  if (!(g->nodes = calloc((size_t)n, sizeof *g->nodes))) return WEFT_ENOMEM;
  for (int i = 0; i < n; i++) {
    yaml_node_pair_t *pr = &nodes->data.mapping.pairs.start[i];
    g->n_nodes = i + 1;
    if ((r = parse_node(p, yaml_document_get_node(&p->doc, pr->key),
                        yaml_document_get_node(&p->doc, pr->value),
                        &g->nodes[i])))
      return r;
  }
  if (outputs && !(outputs->type == YAML_SCALAR_NODE && !*scalar(outputs))) {
    if ((r = expect(p, outputs, YAML_MAPPING_NODE, "outputs")) ||
        (r = check_keys(p, outputs, "outputs")))
      return r;
    int m = mapping_size(outputs);
    if (!(g->outputs = calloc((size_t)m + 1, sizeof *g->outputs)))
      return WEFT_ENOMEM;
    for (int i = 0; i < m; i++) {
      yaml_node_pair_t *pr = &outputs->data.mapping.pairs.start[i];
      g->n_outputs = i + 1;
      if ((r = parse_output(p, yaml_document_get_node(&p->doc, pr->key),
                            yaml_document_get_node(&p->doc, pr->value),
                            &g->outputs[i])))
        return r;
    }
  }
  return 0;
}

void weft_graph_free(weft_graph *g) {
  if (!g) return;
  for (int i = 0; i < g->n_nodes; i++) {
    weft__gnode *n = &g->nodes[i];
    if (n->created && n->rop && n->rop->def.destroy)
      n->rop->def.destroy(n->state);
    for (int j = 0; j < n->n_raw_inputs; j++) {
      free(n->raw_inputs[j].name);
      bind_free(&n->raw_inputs[j].bind);
    }
    for (int j = 0; j < n->n_raw_params; j++) {
      free(n->raw_params[j].name);
      bind_free(&n->raw_params[j].bind);
    }
    free(n->raw_inputs);
    free(n->raw_params);
    /* resolved binds share text/value with raw ones except defaults */
    if (n->params && n->rop)
      for (int j = 0; j < n->rop->def.n_params; j++)
        if (n->params[j].kind == WEFT__B_NONE)
          weft__value_release(n->params[j].value);
    free(n->inputs);
    free(n->params);
    free(n->id);
    free(n->op);
  }
  free(g->nodes);
  for (int i = 0; i < g->n_inputs; i++) {
    weft__ginput *in = &g->inputs[i];
    free(in->name);
    free(in->doc);
    weft__value_release(in->value);
    for (int c = 0; in->choices && in->choices[c]; c++) free(in->choices[c]);
    free(in->choices);
  }
  free(g->inputs);
  for (int i = 0; i < g->n_outputs; i++) {
    free(g->outputs[i].name);
    bind_free(&g->outputs[i].ref);
    if (g->out_values) weft__value_release(g->out_values[i]);
  }
  free(g->outputs);
  free(g->out_values);
  free(g->order);
  free(g->id_index);
  free(g->source);
  free(g->file);
  free(g);
}

int weft__graph_parse(weft_ctx *ctx, const char *text, size_t len,
                      const char *name, weft_graph **out) {
  *out = NULL;
  weft_graph *g = calloc(1, sizeof *g);
  if (!g || !(g->file = strdup(name))) {
    free(g);
    return WEFT_ENOMEM;
  }
  g->ctx = ctx;
  if (!(g->source = malloc(len + 1))) {
    weft_graph_free(g);
    return WEFT_ENOMEM;
  }
  memcpy(g->source, text, len);
  g->source[len] = 0;
  parser p = {.ctx = ctx, .g = g};
  yaml_parser_t yp;
  if (!yaml_parser_initialize(&yp)) {
    weft_graph_free(g);
    return WEFT_ENOMEM;
  }
  yaml_parser_set_input_string(&yp, (const unsigned char *)text, len);
  int r = 0;
  if (!yaml_parser_load(&yp, &p.doc)) {
    weft_loc l = mark_loc(&p, yp.problem_mark);
    if (yp.context)
      r = weft__err(ctx, WEFT_ESYNTAX, &l, "YAML syntax error: %s %s",
                    yp.problem ? yp.problem : "", yp.context);
    else
      r = weft__err(ctx, WEFT_ESYNTAX, &l, "YAML syntax error: %s",
                    yp.problem ? yp.problem : "unknown problem");
    yaml_parser_delete(&yp);
    weft_graph_free(g);
    return r;
  }
  /* a second document in the stream is a mistake worth naming */
  yaml_document_t extra;
  if (yaml_parser_load(&yp, &extra)) {
    yaml_node_t *root2 = yaml_document_get_root_node(&extra);
    if (root2) {
      weft_loc l = node_loc(&p, root2);
      r = weft__err(ctx, WEFT_ESYNTAX, &l,
                    "a graph file holds one YAML document; a second one "
                    "starts here");
    }
    yaml_document_delete(&extra);
  }
  if (!r) r = parse_root(&p, yaml_document_get_root_node(&p.doc));
  yaml_document_delete(&p.doc);
  yaml_parser_delete(&yp);
  if (r) {
    weft_graph_free(g);
    return r;
  }
  *out = g;
  return 0;
}

int weft_graph_load_string(weft_ctx *ctx, const char *text, size_t len,
                           const char *name, weft_graph **out) {
  ctx->err[0] = 0;
  int r = weft__graph_parse(ctx, text, len, name, out);
  if (r) return r;
  r = weft__graph_resolve(ctx, *out);
  if (r) {
    weft_graph_free(*out);
    *out = NULL;
  }
  return r;
}

int weft_graph_load(weft_ctx *ctx, const char *path, weft_graph **out) {
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f)
    return weft__err(ctx, errno == ENOENT ? WEFT_ENOENT : WEFT_EIO, NULL,
                     "%s: cannot open graph: %s", path, strerror(errno));
  char *buf = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (len == cap) {
      cap = cap ? cap * 2 : 65536;
      if (cap > ((size_t)64 << 20)) {
        free(buf);
        fclose(f);
        return weft__err(ctx, WEFT_EFORMAT, NULL,
                         "%s: graph file is larger than 64 MiB", path);
      }
      char *nb = realloc(buf, cap);
      if (!nb) {
        free(buf);
        fclose(f);
        return WEFT_ENOMEM;
      }
      buf = nb;
    }
    size_t got = fread(buf + len, 1, cap - len, f);
    len += got;
    if (got == 0) break;
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    free(buf);
    return weft__err(ctx, WEFT_EIO, NULL, "%s: read error", path);
  }
  /* a PNG weft wrote, or a ComfyUI API workflow (comfy_import.c) */
  int r = weft__import_kind(path, buf, len)
              ? weft__import_load(ctx, buf, len, path, out)
              : weft_graph_load_string(ctx, buf, len, path, out);
  free(buf);
  return r;
}
