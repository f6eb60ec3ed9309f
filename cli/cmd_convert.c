/* cmd_convert.c - `weft convert`: a ComfyUI API-format workflow to a weft
 * YAML graph, and (--to-api) any graph weft loads to ComfyUI API JSON. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
/* the converters are not public API yet (see docs/comfyui.md) */
#include "internal.h"

static void convert_usage(FILE *out) {
  fputs("usage: weft convert WORKFLOW_api.json [-o GRAPH.yaml]\n"
        "       weft convert GRAPH --to-api [-o WORKFLOW_api.json] "
        "[--set NAME=VALUE]...\n"
        "\n"
        "Converts a ComfyUI workflow in API format (ComfyUI: Workflow >\n"
        "Export (API)) into a weft YAML graph: node ids stay, class_type\n"
        "becomes op, links become inputs, constants params, ComfyUI titles\n"
        "comments.  The graph is checked as 'weft validate' would.\n"
        "\n"
        "With --to-api, the reverse: GRAPH (YAML, API JSON, or a PNG weft\n"
        "wrote) is written as ComfyUI API JSON with every value resolved\n"
        "(graph inputs and --set applied).\n"
        "\n"
        "  -o, --output FILE   write FILE (atomically) instead of stdout\n"
        "  --to-api            convert a graph to ComfyUI API JSON\n"
        "  --set NAME=VALUE    set a graph input first (with --to-api)\n"
        "  --plugin-dir DIR    load plugins from DIR too (repeatable)\n"
        "\n"
        "Exit status: 0 ok, 2 bad input (unknown node types are listed by\n"
        "node id and class_type).\n",
        out);
}

/* Reads a whole file; NULL with a message printed on failure. */
static char *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "weft: %s: cannot open: %s\n", path, strerror(errno));
    return NULL;
  }
  char *buf = NULL;
  size_t n = 0, cap = 0;
  for (;;) {
    if (n == cap) {
      cap = cap ? cap * 2 : 65536;
      char *nb = cap <= ((size_t)64 << 20) ? realloc(buf, cap) : NULL;
      if (!nb) {
        fprintf(stderr, "weft: %s: %s\n", path,
                cap > ((size_t)64 << 20) ? "larger than 64 MiB"
                                         : "out of memory");
        free(buf);
        fclose(f);
        return NULL;
      }
      buf = nb;
    }
    size_t got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (got == 0) break;
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    fprintf(stderr, "weft: %s: read error\n", path);
    free(buf);
    return NULL;
  }
  *len = n;
  return buf;
}

/* Writes text to path through a temporary name, or to stdout. */
static int write_out(const char *path, const char *text) {
  if (!path) {
    fputs(text, stdout);
    return fflush(stdout) == 0 ? 0 : 1;
  }
  size_t n = strlen(path) + 32;
  char *tmp = malloc(n);
  if (!tmp) return 1;
  snprintf(tmp, n, "%s.tmp%ld", path, (long)getpid());
  FILE *f = fopen(tmp, "wb");
  int ok = f && fputs(text, f) >= 0;
  if (f && fclose(f) != 0) ok = 0;
  if (ok && rename(tmp, path) != 0) ok = 0;
  if (!ok) {
    fprintf(stderr, "weft: cannot write %s: %s\n", path, strerror(errno));
    remove(tmp);
  }
  free(tmp);
  return ok ? 0 : 1;
}

/* GRAPH -> API JSON, indented as ComfyUI's own export. */
static char *to_api(weft_graph *g) {
  char *compact = weft__graph_comfy_json(g, NULL);
  json_t *o = compact ? json_loads(compact, 0, NULL) : NULL;
  free(compact);
  char *s = o ? json_dumps(o, JSON_INDENT(2) | JSON_ENSURE_ASCII |
                                  JSON_REAL_PRECISION(17))
              : NULL;
  json_decref(o);
  if (!s) return NULL;
  size_t n = strlen(s);
  char *nl = realloc(s, n + 2);
  if (!nl) {
    free(s);
    return NULL;
  }
  nl[n] = '\n';
  nl[n + 1] = 0;
  return nl;
}

int weft_cmd_convert(int argc, char **argv) {
  enum { OPT_TO_API = 2000, OPT_OUTPUT };
  weft_cli_opts o = {0};
  static const struct option longopts[] = {
      WEFT_CLI_COMMON_LONGOPTS,
      {"to-api", no_argument, 0, OPT_TO_API},
      {"output", required_argument, 0, OPT_OUTPUT},
      {0, 0, 0, 0}};
  const char *output = NULL;
  bool api = false;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "o:", longopts, NULL)) != -1) {
    int r = weft_cli_common_opt(&o, c, optarg);
    if (r < 0) return 2;
    if (r) continue;
    switch (c) {
    case OPT_HELP: convert_usage(stdout); return 0;
    case OPT_TO_API: api = true; break;
    case 'o':
    case OPT_OUTPUT: output = optarg; break;
    default: convert_usage(stderr); return 2;
    }
  }
  if (optind != argc - 1) {
    convert_usage(stderr);
    return 2;
  }
  const char *path = argv[optind];
  if (!api && o.n_sets) {
    fprintf(stderr, "weft: --set applies to --to-api only (a converted "
                    "workflow has no graph inputs)\n");
    return 2;
  }
  int code = 0;
  weft_ctx *ctx = weft_cli_ctx(&o, &code);
  if (!ctx) return code;
  char *text = NULL;
  if (api) {
    weft_graph *g = weft_cli_graph(ctx, &o, path, &code);
    if (g && !(text = to_api(g))) {
      fprintf(stderr, "weft: out of memory\n");
      code = 1;
    }
    weft_graph_free(g);
  } else {
    size_t len = 0;
    char *buf = read_all(path, &len);
    if (!buf) {
      code = 2;
    } else if (weft__import_kind(path, buf, len) != WEFT__IMPORT_JSON) {
      fprintf(stderr,
              "weft: %s is not a ComfyUI API workflow (JSON); to write a "
              "graph as API JSON use 'weft convert %s --to-api'\n",
              path, path);
      code = 2;
    } else {
      int r = weft__comfy_import(ctx, buf, len, path, &text, NULL);
      if (r) code = weft_cli_fail(ctx, r);
    }
    free(buf);
  }
  if (text && write_out(output, text)) code = 1;
  free(text);
  weft_ctx_free(ctx);
  return code;
}
