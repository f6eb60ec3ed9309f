/* graph_dot.c - writes a resolved graph as Graphviz dot (`weft graph --dot`). */
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* dot string literal: escape quotes and backslashes */
static void put_str(FILE *out, const char *s) {
  fputc('"', out);
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') fputc('\\', out);
    if (*s == '\n')
      fputs("\\n", out);
    else
      fputc(*s, out);
  }
  fputc('"', out);
}

static void edge(FILE *out, const weft_graph *g, const weft__bind *b,
                 const char *to, const char *port) {
  const weft__gnode *src = &g->nodes[b->node];
  char label[256];
  snprintf(label, sizeof label, "%s \xe2\x86\x92 %s",
           src->rop->outputs[b->port].name, port);
  fprintf(out, "  ");
  put_str(out, src->id);
  fprintf(out, " -> ");
  put_str(out, to);
  fprintf(out, " [label=");
  put_str(out, label);
  fprintf(out, "];\n");
}

int weft_graph_write_dot(const weft_graph *g, FILE *out) {
  fprintf(out, "digraph weft {\n  rankdir=LR;\n  node [shape=box, "
               "style=rounded, fontname=\"Helvetica\"];\n");
  for (int i = 0; i < g->n_inputs; i++) {
    char label[512];
    char val[256];
    weft__value_format(g->inputs[i].value, val, sizeof val);
    snprintf(label, sizeof label, "$%s\n%s = %.60s", g->inputs[i].name,
             weft__type_name(g->inputs[i].type, NULL), val);
    fprintf(out, "  ");
    char id[300];
    snprintf(id, sizeof id, "$%s", g->inputs[i].name);
    put_str(out, id);
    fprintf(out, " [shape=ellipse, label=");
    put_str(out, label);
    fprintf(out, "];\n");
  }
  for (int i = 0; i < g->n_nodes; i++) {
    const weft__gnode *n = &g->nodes[i];
    char label[600];
    snprintf(label, sizeof label, "%s\n%s", n->id, n->rop->def.op);
    fprintf(out, "  ");
    put_str(out, n->id);
    fprintf(out, " [label=");
    put_str(out, label);
    if (n->rop->def.flags & WEFT_NODE_OUTPUT) fprintf(out, ", peripheries=2");
    fprintf(out, "];\n");
  }
  for (int i = 0; i < g->n_nodes; i++) {
    const weft__gnode *n = &g->nodes[i];
    const weft__op *op = n->rop;
    for (int j = 0; j < op->def.n_inputs; j++)
      if (n->inputs[j].kind == WEFT__B_NODE)
        edge(out, g, &n->inputs[j], n->id, op->inputs[j].name);
    for (int j = 0; j < op->def.n_params; j++) {
      if (n->params[j].kind == WEFT__B_NODE)
        edge(out, g, &n->params[j], n->id, op->params[j].name);
      if (n->params[j].kind == WEFT__B_INPUT) {
        char id[300];
        snprintf(id, sizeof id, "$%s", g->inputs[n->params[j].input].name);
        fprintf(out, "  ");
        put_str(out, id);
        fprintf(out, " -> ");
        put_str(out, n->id);
        fprintf(out, " [style=dashed, label=");
        put_str(out, op->params[j].name);
        fprintf(out, "];\n");
      }
    }
  }
  for (int i = 0; i < g->n_outputs; i++) {
    fprintf(out, "  ");
    char id[300];
    snprintf(id, sizeof id, "out:%s", g->outputs[i].name);
    put_str(out, id);
    fprintf(out, " [shape=ellipse, label=");
    put_str(out, g->outputs[i].name);
    fprintf(out, "];\n");
    edge(out, g, &g->outputs[i].ref, id, g->outputs[i].name);
  }
  fprintf(out, "}\n");
  return ferror(out) ? WEFT_EIO : 0;
}
