/* cmd_plan.c - `weft plan`: the memory plan of a graph (per node: device,
 * resident weights, activation arena against its lower bound, transfers,
 * peak) without running its models. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "weft/plan.h"

static void plan_usage(FILE *out) {
  fputs("usage: weft plan GRAPH [options]\n"
        "\n"
        "Prints the memory plan of a graph without running its models: for\n"
        "every node, in execution order, the device it runs on, the weights\n"
        "resident while it runs, its activation arena (one buffer planned\n"
        "from tensor lifetimes) with the lower bound no plan can beat, the\n"
        "bytes copied between host and device, and the peak (weights +\n"
        "arena); then the graph's peak. Loaders and cheap nodes run for\n"
        "real; model nodes record their forward pass without computing it;\n"
        "output nodes (SaveImage) are skipped and write nothing.\n"
        "\n"
        "  --set NAME=VALUE    set a graph input (repeatable)\n"
        "  --vram BYTES        device memory budget for weights (1.5G,\n"
        "                      1536M, bytes; sets WEFT_VRAM; default:\n"
        "                      WEFT_VRAM, else unlimited)\n"
        "  --device DEV        cpu, cuda, emulated or auto, as weft run\n"
        "  --json              one JSON object with exact byte counts\n"
        "  --input-dir DIR     relative input paths resolve here\n"
        "  --threads N         worker threads\n"
        "  --plugin-dir DIR    load plugins from DIR too (repeatable)\n"
        "\n"
        "Exit status: 0 ok, 1 a node failed, 2 bad input.\n",
        out);
}

enum { OPT_PLAN_DEVICE = 1200, OPT_PLAN_VRAM };

int weft_cmd_plan(int argc, char **argv) {
  weft_cli_opts o = {0};
  static const struct option longopts[] = {
      WEFT_CLI_COMMON_LONGOPTS,
      {"json", no_argument, 0, OPT_JSON},
      {"input-dir", required_argument, 0, OPT_INPUT_DIR},
      {"device", required_argument, 0, OPT_PLAN_DEVICE},
      {"vram", required_argument, 0, OPT_PLAN_VRAM},
      {0, 0, 0, 0}};
  const char *device = NULL, *vram = NULL;
  bool json = false;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    int r = weft_cli_common_opt(&o, c, optarg);
    if (r < 0) return 2;
    if (r) continue;
    switch (c) {
    case OPT_HELP: plan_usage(stdout); return 0;
    case OPT_JSON: json = true; break;
    case OPT_INPUT_DIR: o.input_dir = optarg; break;
    case OPT_PLAN_DEVICE: device = optarg; break;
    case OPT_PLAN_VRAM: vram = optarg; break;
    default: plan_usage(stderr); return 2;
    }
  }
  if (optind != argc - 1) {
    plan_usage(stderr);
    return 2;
  }
  if (vram && weft_cli_use_vram(vram)) return 2;
  if (device && weft_cli_use_device(device)) return 2;
  /* the budget the model plugins see (WEFT_VRAM) is the plan's */
  uint64_t budget = 0;
  const char *env = getenv("WEFT_VRAM");
  if (env && *env && weft_cli_parse_bytes(env, &budget)) {
    fprintf(stderr, "weft: WEFT_VRAM=%s: expected a byte count\n", env);
    return 2;
  }
  int code = 0;
  weft_ctx *ctx = weft_cli_ctx(&o, &code);
  weft_graph *g = ctx ? weft_cli_graph(ctx, &o, argv[optind], &code) : NULL;
  if (g) {
    weft_plan_report *rep = NULL;
    int r = weft_graph_plan(ctx, g, budget, &rep);
    if (r)
      code = weft_cli_fail(ctx, r);
    else if (weft_plan_print(rep, stdout, json) || fflush(stdout))
      code = 1;
    weft_plan_report_free(rep);
  }
  weft_graph_free(g);
  weft_ctx_free(ctx);
  return code;
}
