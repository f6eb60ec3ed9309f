/* main.c - the weft command: dispatches to its subcommands. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "weft/weft.h"

static const struct command {
  const char *name;
  int (*fn)(int argc, char **argv);
  const char *summary;
} commands[] = {
    {"run", weft_cmd_run, "run a graph (YAML)"},
    {"batch", weft_cmd_batch, "run a graph over a manifest or sweeps"},
    {"validate", weft_cmd_validate, "check a graph without running it"},
    {"plan", weft_cmd_plan, "print a graph's memory plan (weights, arenas)"},
    {"nodes", weft_cmd_nodes, "list node types, or document one"},
    {"graph", weft_cmd_graph, "print a graph (Graphviz dot)"},
    {"inspect", weft_cmd_inspect, "describe a .safetensors file"},
    {"tokenize", weft_cmd_tokenize, "show how CLIP splits and weights a prompt"},
    {"convert", weft_cmd_convert, "ComfyUI API JSON to a YAML graph, or back"},
};

#define N_COMMANDS (int)(sizeof commands / sizeof commands[0])

static void usage(FILE *out) {
  fprintf(out,
          "usage: weft <command> [options]\n"
          "\n"
          "weft runs diffusion image pipelines written as YAML graphs.\n"
          "\n"
          "commands:\n");
  for (int i = 0; i < N_COMMANDS; i++)
    fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
  fprintf(out, "\n'weft <command> --help' describes a command's options.\n"
               "'weft --version' prints the version.\n");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[1];
  if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
    if (argc > 2 && strcmp(cmd, "help") == 0) {
      for (int i = 0; i < N_COMMANDS; i++)
        if (!strcmp(argv[2], commands[i].name)) {
          char *args[] = {argv[2], "--help", NULL};
          return commands[i].fn(2, args);
        }
    }
    usage(stdout);
    return 0;
  }
  if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V")) {
    printf("weft %s (plugin ABI %d.%d)\n", weft_version(), WEFT_ABI_MAJOR,
           WEFT_ABI_MINOR);
    return 0;
  }
  for (int i = 0; i < N_COMMANDS; i++)
    if (!strcmp(cmd, commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
  const char *names[N_COMMANDS];
  for (int i = 0; i < N_COMMANDS; i++) names[i] = commands[i].name;
  fprintf(stderr, "weft: unknown command '%s'", cmd);
  const char *best = weft_cli_closest(cmd, names, N_COMMANDS);
  if (best) fprintf(stderr, " (did you mean '%s'?)", best);
  fprintf(stderr, "\n");
  usage(stderr);
  return 2;
}
