/* cmd_run.c - `weft run`, `weft validate` and `weft graph`: the commands that
 * load one graph. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"

#if defined(__SANITIZE_ADDRESS__)
#define WEFT_CLI_LEAK_CHECKED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(leak_sanitizer)
#define WEFT_CLI_LEAK_CHECKED 1
#endif
#endif
#ifndef WEFT_CLI_LEAK_CHECKED
#define WEFT_CLI_LEAK_CHECKED 0
#endif

/* After a run that succeeded, whether to leave without freeing: every
 * output is written (renamed into place) and printed, and what a teardown
 * would undo -- the models' host and device memory, cuDNN's and cuBLAS's
 * handles, the CUDA context, the plugins -- the process's exit undoes
 * anyway.  Builds with a leak checker free everything, as does
 * WEFT_EXIT_FREE=1. */
static bool exit_without_freeing(void) {
  const char *e = getenv("WEFT_EXIT_FREE");
  return !WEFT_CLI_LEAK_CHECKED && !(e && !strcmp(e, "1"));
}

static void run_usage(FILE *out) {
  fputs("usage: weft run GRAPH [options]\n"
        "\n"
        "Runs a graph. Nodes whose inputs are ready run at the same time.\n"
        "GRAPH is a weft YAML file, a ComfyUI API workflow (.json), or a PNG\n"
        "weft or ComfyUI wrote (the graph it carries).\n"
        "Ctrl-C cancels cleanly (exit 130); no half-written file is left.\n"
        "\n"
        "  --set NAME=VALUE    set a graph input (repeatable)\n"
        "  --output-dir DIR    where SaveImage writes (default: output)\n"
        "  --input-dir DIR     relative input paths resolve here (default: .)\n"
        "  --events MODE       auto (default), tty, json (JSON lines on\n"
        "                      stdout), none\n"
        "  --threads N         worker threads (default: WEFT_THREADS or the\n"
        "                      number of CPUs)\n"
        "  --plugin-dir DIR    load plugins from DIR too (repeatable)\n"
        "  --device DEV        where the models run: cpu, cuda or auto (sets\n"
        "                      WEFT_DEVICE; default: WEFT_DEVICE, else auto =\n"
        "                      CUDA when weft was built with it and a GPU is\n"
        "                      there, else the CPU); emulated: the CPU\n"
        "                      kernels behind device pointers, to test the\n"
        "                      device paths without a GPU (slow)\n"
        "  --vram BYTES        device memory the models may hold (1.5G,\n"
        "                      1536M, bytes; sets WEFT_VRAM; default: what\n"
        "                      the device has free)\n"
        "  -q, --quiet         print only errors\n"
        "\n"
        "Exit status: 0 ok, 1 a node failed, 2 bad input, 130 cancelled.\n",
        out);
}

/* weft run's own option codes, after commands.h's shared ones */
enum { OPT_RUN_DEVICE = 1100, OPT_RUN_VRAM };

static void print_outputs(const weft_graph *g, bool json, bool quiet) {
  for (int i = 0; i < weft_graph_output_count(g); i++) {
    char val[4096];
    if (weft_graph_output_format(g, i, val, sizeof val)) continue;
    const char *name = weft_graph_output_name(g, i);
    if (json) {
      json_t *o = json_pack("{s:s, s:s, s:s}", "event", "output", "name",
                            name, "value", val);
      char *s = o ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII |
                                           JSON_REAL_PRECISION(9)) : NULL;
      if (s) puts(s);
      free(s);
      json_decref(o);
    } else if (!quiet) {
      printf("%s: %s\n", name, val);
    }
  }
}

int weft_cmd_run(int argc, char **argv) {
  weft_cli_opts o = {.events = "auto"};
  static const struct option longopts[] = {
      WEFT_CLI_COMMON_LONGOPTS,
      {"events", required_argument, 0, OPT_EVENTS},
      {"output-dir", required_argument, 0, OPT_OUTPUT_DIR},
      {"input-dir", required_argument, 0, OPT_INPUT_DIR},
      {"quiet", no_argument, 0, OPT_QUIET},
      {"device", required_argument, 0, OPT_RUN_DEVICE},
      {"vram", required_argument, 0, OPT_RUN_VRAM},
      {0, 0, 0, 0}};
  const char *device = NULL;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "q", longopts, NULL)) != -1) {
    int r = weft_cli_common_opt(&o, c, optarg);
    if (r < 0) return 2;
    if (r) continue;
    switch (c) {
    case OPT_HELP: run_usage(stdout); return 0;
    case OPT_EVENTS: o.events = optarg; break;
    case OPT_OUTPUT_DIR: o.output_dir = optarg; break;
    case OPT_INPUT_DIR: o.input_dir = optarg; break;
    case OPT_RUN_DEVICE: device = optarg; break;
    case OPT_RUN_VRAM:
      if (weft_cli_use_vram(optarg)) return 2;
      break;
    case 'q':
    case OPT_QUIET: o.quiet = true; break;
    default: run_usage(stderr); return 2;
    }
  }
  if (optind != argc - 1) {
    run_usage(stderr);
    return 2;
  }
  if (device && weft_cli_use_device(device)) return 2;
  weft_cli_events *ev = weft_cli_events_new(o.events, o.quiet);
  if (!ev) {
    fprintf(stderr, "weft: --events %s: expected auto, tty, json or none\n",
            o.events);
    return 2;
  }
  int code = 0;
  weft_ctx *ctx = weft_cli_ctx(&o, &code);
  weft_graph *g = ctx ? weft_cli_graph(ctx, &o, argv[optind], &code) : NULL;
  if (g) {
    weft_ctx_set_event_cb(ctx, weft_cli_events_cb, ev);
    weft_ctx_set_handle_sigint(ctx, 1);
    int r = weft_graph_run(ctx, g);
    bool json = weft_cli_events_json(ev);
    weft_cli_events_free(ev);
    ev = NULL;
    if (r)
      code = weft_cli_fail(ctx, r);
    else
      print_outputs(g, json, o.quiet);
    if (!code && exit_without_freeing()) {
      fflush(NULL);
      _exit(0);
    }
  }
  weft_cli_events_free(ev);
  weft_graph_free(g);
  weft_ctx_free(ctx);
  return code;
}

static void validate_usage(FILE *out) {
  fputs("usage: weft validate GRAPH [--set NAME=VALUE]... "
        "[--plugin-dir DIR]...\n"
        "\n"
        "Checks a graph without running it: YAML syntax, ops, ports and\n"
        "params, types of every connection, references, cycles, required\n"
        "inputs and param ranges. Errors read file:line:col: message.\n"
        "Exit status: 0 valid, 2 invalid.\n",
        out);
}

int weft_cmd_validate(int argc, char **argv) {
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
      validate_usage(stdout);
      return 0;
    }
    validate_usage(stderr);
    return 2;
  }
  if (optind != argc - 1) {
    validate_usage(stderr);
    return 2;
  }
  int code = 0;
  weft_ctx *ctx = weft_cli_ctx(&o, &code);
  weft_graph *g = ctx ? weft_cli_graph(ctx, &o, argv[optind], &code) : NULL;
  if (g)
    printf("%s: ok (%d node%s)\n", argv[optind], weft_graph_node_count(g),
           weft_graph_node_count(g) == 1 ? "" : "s");
  weft_graph_free(g);
  weft_ctx_free(ctx);
  return code;
}

static void graph_usage(FILE *out) {
  fputs("usage: weft graph GRAPH --dot [--set NAME=VALUE]... "
        "[--plugin-dir DIR]...\n"
        "\n"
        "Prints the graph in Graphviz dot; render it with\n"
        "  weft graph g.yaml --dot | dot -Tsvg > g.svg\n",
        out);
}

int weft_cmd_graph(int argc, char **argv) {
  weft_cli_opts o = {0};
  static const struct option longopts[] = {
      WEFT_CLI_COMMON_LONGOPTS, {"dot", no_argument, 0, OPT_DOT}, {0, 0, 0, 0}};
  int c;
  optind = 1;
  bool dot = false;
  while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    int r = weft_cli_common_opt(&o, c, optarg);
    if (r < 0) return 2;
    if (r) continue;
    if (c == OPT_HELP) {
      graph_usage(stdout);
      return 0;
    }
    if (c == OPT_DOT) {
      dot = true;
      continue;
    }
    graph_usage(stderr);
    return 2;
  }
  if (optind != argc - 1 || !dot) {
    graph_usage(stderr);
    return 2;
  }
  int code = 0;
  weft_ctx *ctx = weft_cli_ctx(&o, &code);
  weft_graph *g = ctx ? weft_cli_graph(ctx, &o, argv[optind], &code) : NULL;
  if (g && weft_graph_write_dot(g, stdout)) code = 1;
  weft_graph_free(g);
  weft_ctx_free(ctx);
  return code;
}
