/* cmd_nodes.c - `weft nodes [OP]`: lists the registered node types, or
 * documents one from its descriptor, as gst-inspect does. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"

static void usage(FILE *out) {
  fputs("usage: weft nodes [OP] [--plugin-dir DIR]...\n"
        "\n"
        "Without OP, lists every node type with its category and plugin.\n"
        "With OP, prints its inputs, params (type, default, range or\n"
        "choices) and outputs.\n",
        out);
}

static int cmp_def(const void *a, const void *b) {
  const weft_node_def *x = *(const weft_node_def *const *)a;
  const weft_node_def *y = *(const weft_node_def *const *)b;
  int c = strcmp(x->category ? x->category : "", y->category ? y->category : "");
  return c ? c : strcmp(x->op, y->op);
}

int weft_cmd_nodes(int argc, char **argv) {
  weft_cli_opts o = {0};
  static const struct option longopts[] = {WEFT_CLI_COMMON_LONGOPTS,
                                           {0, 0, 0, 0}};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    int r = weft_cli_common_opt(&o, c, optarg);
    if (r < 0) return 2;
    if (r) continue;
    if (c == OPT_HELP) {
      usage(stdout);
      return 0;
    }
    usage(stderr);
    return 2;
  }
  if (argc - optind > 1) {
    usage(stderr);
    return 2;
  }
  int code = 0;
  weft_ctx *ctx = weft_cli_ctx(&o, &code);
  if (!ctx) return code;
  int n = weft_op_count(ctx);
  if (optind < argc) {
    const char *op = argv[optind];
    const weft_node_def *d = weft_op_find(ctx, op);
    if (d) {
      weft_op_print(d, stdout);
      printf("\nPlugin: %s\n", weft_op_origin(ctx, op));
    } else {
      const char **names = malloc((size_t)(n + 1) * sizeof *names);
      for (int i = 0; names && i < n; i++) names[i] = weft_op_at(ctx, i)->op;
      const char *best = names ? weft_closest_name(op, names, n) : NULL;
      fprintf(stderr, "weft: no node type '%s'", op);
      if (best) fprintf(stderr, " (did you mean '%s'?)", best);
      fprintf(stderr, "\n");
      free(names);
      code = 2;
    }
  } else {
    const weft_node_def **defs = malloc((size_t)(n + 1) * sizeof *defs);
    if (!defs) {
      weft_ctx_free(ctx);
      return 1;
    }
    for (int i = 0; i < n; i++) defs[i] = weft_op_at(ctx, i);
    qsort(defs, (size_t)n, sizeof *defs, cmp_def);
    for (int i = 0; i < n; i++) {
      const char *origin = weft_op_origin(ctx, defs[i]->op);
      const char *base = strrchr(origin, '/');
      printf("%-28s %-24s %s\n", defs[i]->op,
             defs[i]->category ? defs[i]->category : "",
             base ? base + 1 : origin);
    }
    if (n == 0)
      fprintf(stderr, "weft: no plugins found (check WEFT_PLUGIN_PATH or "
                      "--plugin-dir)\n");
    free(defs);
  }
  weft_ctx_free(ctx);
  return code;
}
