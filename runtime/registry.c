/* registry.c - the op table: plugin descriptors are checked, normalised to
 * this runtime's struct sizes (reading only fields a plugin's struct_size
 * covers, as OBS does) and registered by op name. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Does a struct of size `size` contain the field ending at `end`? */
#define HAS_FIELD(size, type, field)                                           \
  ((size) >= offsetof(type, field) + sizeof(((type *)0)->field))

static int copy_ports(weft_ctx *ctx, const char *origin, const char *op,
                      const char *what, const weft_port_def *src, int n,
                      weft_port_def **out) {
  *out = NULL;
  if (n < 0 || n > 256)
    return weft__err(ctx, WEFT_EPLUGIN, NULL,
                     "%s: node '%s': bad %s count %d", origin, op, what, n);
  if (n == 0) return 0;
  if (!src)
    return weft__err(ctx, WEFT_EPLUGIN, NULL, "%s: node '%s': %s is NULL",
                     origin, op, what);
  /* the array's element size is the plugin's sizeof(weft_port_def) */
  uint32_t stride = src[0].struct_size;
  if (stride < offsetof(weft_port_def, type) + sizeof(weft_type) ||
      stride > 4096)
    return weft__err(ctx, WEFT_EPLUGIN, NULL,
                     "%s: node '%s': %s[0].struct_size %u is invalid", origin,
                     op, what, stride);
  weft_port_def *a = calloc((size_t)n, sizeof *a);
  if (!a) return WEFT_ENOMEM;
  for (int i = 0; i < n; i++) {
    const weft_port_def *p =
        (const weft_port_def *)((const char *)src + (size_t)i * stride);
    size_t sz = p->struct_size < sizeof *a ? p->struct_size : sizeof *a;
    memcpy(&a[i], p, sz);
    a[i].struct_size = sizeof *a;
    if (!a[i].name || (unsigned)a[i].type >= WEFT_TYPE_COUNT ||
        (a[i].type == WEFT_TYPE_CUSTOM && !a[i].type_name)) {
      free(a);
      return weft__err(ctx, WEFT_EPLUGIN, NULL,
                       "%s: node '%s': %s[%d] has no name or a bad type",
                       origin, op, what, i);
    }
    for (int j = 0; j < i; j++)
      if (strcmp(a[j].name, a[i].name) == 0) {
        int r = weft__err(ctx, WEFT_EPLUGIN, NULL,
                          "%s: node '%s': two %s named '%s'", origin, op,
                          what, a[i].name);
        free(a);
        return r;
      }
  }
  *out = a;
  return 0;
}

static int copy_params(weft_ctx *ctx, const char *origin, const char *op,
                       const weft_param_def *src, int n,
                       weft_param_def **out) {
  *out = NULL;
  if (n < 0 || n > 256)
    return weft__err(ctx, WEFT_EPLUGIN, NULL,
                     "%s: node '%s': bad params count %d", origin, op, n);
  if (n == 0) return 0;
  if (!src)
    return weft__err(ctx, WEFT_EPLUGIN, NULL, "%s: node '%s': params is NULL",
                     origin, op);
  uint32_t stride = src[0].struct_size;
  if (stride < offsetof(weft_param_def, choices) + sizeof(void *) ||
      stride > 4096)
    return weft__err(ctx, WEFT_EPLUGIN, NULL,
                     "%s: node '%s': params[0].struct_size %u is invalid",
                     origin, op, stride);
  weft_param_def *a = calloc((size_t)n, sizeof *a);
  if (!a) return WEFT_ENOMEM;
  for (int i = 0; i < n; i++) {
    const weft_param_def *p =
        (const weft_param_def *)((const char *)src + (size_t)i * stride);
    size_t sz = p->struct_size < sizeof *a ? p->struct_size : sizeof *a;
    memcpy(&a[i], p, sz);
    a[i].struct_size = sizeof *a;
    const char *bad = NULL;
    if (!a[i].name)
      bad = "has no name";
    else if (!weft__type_is_scalar(a[i].type))
      bad = "is not INT, FLOAT, STRING, BOOLEAN or ENUM";
    else if (a[i].type == WEFT_TYPE_ENUM) {
      int nc = 0;
      while (a[i].choices && a[i].choices[nc]) nc++;
      if (nc == 0)
        bad = "is an ENUM without choices";
      else if (a[i].def_int < 0 || a[i].def_int >= nc)
        bad = "has a default outside its choices";
    } else if (a[i].type == WEFT_TYPE_INT && a[i].min <= a[i].max &&
               (a[i].def_int < a[i].min || a[i].def_int > a[i].max))
      bad = "has a default outside its range";
    else if (a[i].type == WEFT_TYPE_FLOAT && a[i].min <= a[i].max &&
             (a[i].def_float < a[i].min || a[i].def_float > a[i].max))
      bad = "has a default outside its range";
    for (int j = 0; j < i && !bad; j++)
      if (strcmp(a[j].name, a[i].name) == 0) bad = "is declared twice";
    if (bad) {
      int r = weft__err(ctx, WEFT_EPLUGIN, NULL,
                        "%s: node '%s': param '%s' %s", origin, op,
                        a[i].name ? a[i].name : "?", bad);
      free(a);
      return r;
    }
  }
  *out = a;
  return 0;
}

static int register_node(weft_ctx *ctx, const weft_node_def *src,
                         const char *origin) {
  if (!src || src->struct_size < offsetof(weft_node_def, run) + sizeof(void *))
    return weft__err(ctx, WEFT_EPLUGIN, NULL,
                     "%s: a node descriptor is NULL or too small", origin);
  weft__op op;
  memset(&op, 0, sizeof op);
  size_t sz = src->struct_size < sizeof op.def ? src->struct_size
                                               : sizeof op.def;
  memcpy(&op.def, src, sz);
  op.def.struct_size = sizeof op.def;
  const char *name = op.def.op;
  if (!name || !*name)
    return weft__err(ctx, WEFT_EPLUGIN, NULL, "%s: a node has no op name",
                     origin);
  for (const char *p = name; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
          (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' || *p == '.'))
      return weft__err(ctx, WEFT_EPLUGIN, NULL,
                       "%s: op name '%s' has characters other than letters, "
                       "digits, '_', '-' and '.'",
                       origin, name);
  if (!op.def.run)
    return weft__err(ctx, WEFT_EPLUGIN, NULL,
                     "%s: node '%s': required callback 'run' is missing",
                     origin, name);
  for (int i = 0; i < ctx->n_ops; i++)
    if (strcmp(ctx->ops[i].def.op, name) == 0)
      return weft__err(ctx, WEFT_EDUP, NULL,
                       "op '%s' from %s is already registered by %s", name,
                       origin, ctx->ops[i].origin);
  int r;
  if ((r = copy_ports(ctx, origin, name, "inputs", op.def.inputs,
                      op.def.n_inputs, &op.inputs)) ||
      (r = copy_ports(ctx, origin, name, "outputs", op.def.outputs,
                      op.def.n_outputs, &op.outputs)) ||
      (r = copy_params(ctx, origin, name, op.def.params, op.def.n_params,
                       &op.params))) {
    free(op.inputs);
    free(op.outputs);
    return r;
  }
  /* a param and an input of the same name would make references ambiguous */
  for (int i = 0; i < op.def.n_params; i++)
    for (int j = 0; j < op.def.n_inputs; j++)
      if (strcmp(op.params[i].name, op.inputs[j].name) == 0) {
        r = weft__err(ctx, WEFT_EPLUGIN, NULL,
                      "%s: node '%s': '%s' is both an input and a param",
                      origin, name, op.params[i].name);
        free(op.inputs);
        free(op.outputs);
        free(op.params);
        return r;
      }
  op.def.inputs = op.inputs;
  op.def.outputs = op.outputs;
  op.def.params = op.params;
  op.origin = strdup(origin);
  if (ctx->n_ops == ctx->cap_ops) {
    int cap = ctx->cap_ops ? ctx->cap_ops * 2 : 64;
    weft__op *n = realloc(ctx->ops, (size_t)cap * sizeof *n);
    if (!n || !op.origin) {
      free(op.inputs), free(op.outputs), free(op.params), free(op.origin);
      if (n) ctx->ops = n;
      return WEFT_ENOMEM;
    }
    /* defs point into their own op's arrays, which stay put on realloc */
    ctx->ops = n;
    ctx->cap_ops = cap;
  }
  ctx->ops[ctx->n_ops++] = op;
  return 0;
}

int weft_plugin_register(weft_ctx *ctx, const weft_plugin *p,
                         const char *origin) {
  if (!p)
    return weft__err(ctx, WEFT_EPLUGIN, NULL,
                     "%s: weft_plugin_entry returned NULL", origin);
  if (p->struct_size < offsetof(weft_plugin, n_nodes) + sizeof(int32_t))
    return weft__err(ctx, WEFT_EPLUGIN, NULL,
                     "%s: plugin descriptor is too small (struct_size %u)",
                     origin, p->struct_size);
  if (p->abi_major != WEFT_ABI_MAJOR)
    return weft__err(ctx, WEFT_EABI, NULL,
                     "%s: plugin '%s' was built for weft ABI %u.%u, this "
                     "runtime has ABI %d.%d (the major versions differ; "
                     "rebuild the plugin against this weft)",
                     origin, p->name ? p->name : "?", p->abi_major,
                     p->abi_minor, WEFT_ABI_MAJOR, WEFT_ABI_MINOR);
  if (p->abi_minor > WEFT_ABI_MINOR)
    return weft__err(ctx, WEFT_EABI, NULL,
                     "%s: plugin '%s' was built for weft ABI %u.%u, newer "
                     "than this runtime's %d.%d (upgrade weft)",
                     origin, p->name ? p->name : "?", p->abi_major,
                     p->abi_minor, WEFT_ABI_MAJOR, WEFT_ABI_MINOR);
  if (p->n_nodes < 0 || (p->n_nodes > 0 && !p->nodes))
    return weft__err(ctx, WEFT_EPLUGIN, NULL, "%s: bad node table", origin);
  /* all or nothing: check every node before registering any */
  int first = ctx->n_ops;
  for (int i = 0; i < p->n_nodes; i++) {
    int r = register_node(ctx, p->nodes[i], origin);
    if (r) {
      while (ctx->n_ops > first) {
        weft__op *o = &ctx->ops[--ctx->n_ops];
        free(o->inputs), free(o->outputs), free(o->params), free(o->origin);
      }
      return r;
    }
  }
  return 0;
}

int weft_op_count(const weft_ctx *ctx) { return ctx->n_ops; }

const weft_node_def *weft_op_at(const weft_ctx *ctx, int i) {
  return i >= 0 && i < ctx->n_ops ? &ctx->ops[i].def : NULL;
}

static const weft__op *find_op(const weft_ctx *ctx, const char *op) {
  for (int i = 0; i < ctx->n_ops; i++)
    if (strcmp(ctx->ops[i].def.op, op) == 0) return &ctx->ops[i];
  return NULL;
}

const weft_node_def *weft_op_find(const weft_ctx *ctx, const char *op) {
  const weft__op *o = find_op(ctx, op);
  return o ? &o->def : NULL;
}

const char *weft_op_origin(const weft_ctx *ctx, const char *op) {
  const weft__op *o = find_op(ctx, op);
  return o ? o->origin : NULL;
}

static void print_range(FILE *out, const weft_param_def *p) {
  if (p->min > p->max) return;
  if (p->type == WEFT_TYPE_INT)
    fprintf(out, " [%.0f..%.0f]", p->min, p->max);
  else
    fprintf(out, " [%g..%g]", p->min, p->max);
}

void weft_op_print(const weft_node_def *d, FILE *out) {
  fprintf(out, "%s", d->op);
  if (d->category) fprintf(out, "  (%s)", d->category);
  fputc('\n', out);
  if (d->doc) fprintf(out, "\n  %s\n", d->doc);
  fprintf(out, "\nInputs:\n");
  if (!d->n_inputs) fprintf(out, "  (none)\n");
  for (int i = 0; i < d->n_inputs; i++) {
    const weft_port_def *p = &d->inputs[i];
    fprintf(out, "  %-22s %-14s%s%s%s\n", p->name,
            weft__type_name(p->type, p->type_name),
            p->flags & WEFT_PORT_OPTIONAL ? "optional" : "required",
            p->doc ? "  " : "", p->doc ? p->doc : "");
  }
  fprintf(out, "\nParams:\n");
  if (!d->n_params) fprintf(out, "  (none)\n");
  for (int i = 0; i < d->n_params; i++) {
    const weft_param_def *p = &d->params[i];
    fprintf(out, "  %-22s %-14s", p->name, weft__type_name(p->type, NULL));
    switch (p->type) {
    case WEFT_TYPE_INT:
      fprintf(out, "default %lld", (long long)p->def_int);
      print_range(out, p);
      break;
    case WEFT_TYPE_FLOAT:
      fprintf(out, "default %g", p->def_float);
      print_range(out, p);
      break;
    case WEFT_TYPE_BOOL:
      fprintf(out, "default %s", p->def_int ? "true" : "false");
      break;
    case WEFT_TYPE_STRING:
      fprintf(out, "default \"%s\"", p->def_string ? p->def_string : "");
      break;
    case WEFT_TYPE_ENUM:
      fprintf(out, "default %s  one of:", p->choices[p->def_int]);
      for (int c = 0; p->choices[c]; c++)
        fprintf(out, "%s%s", c ? ", " : " ", p->choices[c]);
      break;
    default: break;
    }
    fputc('\n', out);
    if (p->doc) fprintf(out, "  %-22s %s\n", "", p->doc);
  }
  fprintf(out, "\nOutputs:\n");
  if (!d->n_outputs) fprintf(out, "  (none)\n");
  for (int i = 0; i < d->n_outputs; i++) {
    const weft_port_def *p = &d->outputs[i];
    fprintf(out, "  %-22s %-14s%s\n", p->name,
            weft__type_name(p->type, p->type_name), p->doc ? p->doc : "");
  }
  if (d->flags & WEFT_NODE_OUTPUT)
    fprintf(out, "\nOutput node: always runs, never cached.\n");
}
