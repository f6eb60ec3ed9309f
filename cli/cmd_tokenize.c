/* cmd_tokenize.c - `weft tokenize`: how CLIP sees a prompt.  Runs a one-node
 * graph (CLIPTokenize, from the sd plugin) so the command needs no model
 * code of its own. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"

static void usage(FILE *out) {
  fputs("usage: weft tokenize [--json] [--model CKPT] TEXT...\n"
        "\n"
        "Prints the token ids of each 77-token chunk CLIPTextEncode would\n"
        "make of TEXT (words joined by spaces), and each token's weight\n"
        "where the emphasis syntax (word:1.2), (word) gives one. --json\n"
        "prints one JSON object. --model uses that checkpoint's tokenizer.\n",
        out);
}

static const char *graph_plain =
    "version: 1\n"
    "inputs: {text: {type: STRING, default: ''}, format: text}\n"
    "nodes:\n"
    "  tok: {op: CLIPTokenize, params: {text: $text, format: $format}}\n"
    "outputs: {tokens: tok.tokens}\n";

static const char *graph_model =
    "version: 1\n"
    "inputs: {text: {type: STRING, default: ''}, format: text, ckpt: x}\n"
    "nodes:\n"
    "  ckpt: {op: CheckpointLoaderSimple, params: {ckpt_name: $ckpt}}\n"
    "  tok:\n"
    "    op: CLIPTokenize\n"
    "    inputs: {clip: ckpt.CLIP}\n"
    "    params: {text: $text, format: $format}\n"
    "outputs: {tokens: tok.tokens}\n";

int weft_cmd_tokenize(int argc, char **argv) {
  weft_cli_opts o = {0};
  static const struct option longopts[] = {
      WEFT_CLI_COMMON_LONGOPTS,
      {"json", no_argument, 0, OPT_JSON},
      {"model", required_argument, 0, 'm'},
      {0, 0, 0, 0}};
  const char *model = NULL;
  bool json = false;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    int r = weft_cli_common_opt(&o, c, optarg);
    if (r < 0) return 2;
    if (r) continue;
    switch (c) {
    case OPT_HELP: usage(stdout); return 0;
    case OPT_JSON: json = true; break;
    case 'm': model = optarg; break;
    default: usage(stderr); return 2;
    }
  }
  if (optind >= argc) {
    usage(stderr);
    return 2;
  }
  size_t len = 1;
  for (int i = optind; i < argc; i++) len += strlen(argv[i]) + 1;
  char *text = calloc(1, len);
  if (!text) return 1;
  for (int i = optind; i < argc; i++) {
    if (i > optind) strcat(text, " ");
    strcat(text, argv[i]);
  }
  int code = 0;
  weft_ctx *ctx = weft_cli_ctx(&o, &code);
  weft_graph *g = NULL;
  const char *y = model ? graph_model : graph_plain;
  int r = ctx ? weft_graph_load_string(ctx, y, strlen(y), "tokenize", &g) : 0;
  if (ctx && !r) r = weft_graph_set_input(ctx, g, "text", text);
  if (ctx && !r) r = weft_graph_set_input(ctx, g, "format", json ? "json" : "text");
  if (ctx && !r && model) r = weft_graph_set_input(ctx, g, "ckpt", model);
  if (ctx && !r) r = weft_graph_run(ctx, g);
  if (ctx && r) code = weft_cli_fail(ctx, r);
  if (ctx && !r) {
    char *out = malloc(1 << 22);
    if (out && !weft_graph_output_format(g, 0, out, 1 << 22)) {
      fputs(out, stdout);
      if (!*out || out[strlen(out) - 1] != '\n') fputc('\n', stdout);
    }
    free(out);
  }
  weft_graph_free(g);
  weft_ctx_free(ctx);
  free(text);
  return code;
}
