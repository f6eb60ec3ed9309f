/* commands.h - the weft command's subcommands and what they share. */
#ifndef WEFT_CLI_COMMANDS_H
#define WEFT_CLI_COMMANDS_H

#include <stdbool.h>
#include <stdint.h>

#include "weft/weft.h"

/* Each takes argv[0] = its own name and returns the process exit code. */
int weft_cmd_run(int argc, char **argv);
int weft_cmd_validate(int argc, char **argv);
int weft_cmd_graph(int argc, char **argv);
int weft_cmd_nodes(int argc, char **argv);
int weft_cmd_inspect(int argc, char **argv);
int weft_cmd_tokenize(int argc, char **argv);
int weft_cmd_batch(int argc, char **argv);
int weft_cmd_convert(int argc, char **argv);
int weft_cmd_plan(int argc, char **argv);

/* Options most commands share. */
typedef struct weft_cli_opts {
  const char *plugin_dirs[64];
  int n_plugin_dirs;
  const char *sets[256]; /* "name=value" */
  int n_sets;
  int threads;           /* 0: WEFT_THREADS or the CPU count */
  const char *events;    /* "auto", "tty", "json", "none" */
  const char *output_dir;
  const char *input_dir;
  bool quiet;
} weft_cli_opts;

/* Handles a shared option (getopt_long code c with optarg); returns 1 if it
 * was one, 0 if not, -1 (message printed) if its value is bad. */
int weft_cli_common_opt(weft_cli_opts *o, int c, const char *arg);
/* The getopt_long table entries for the shared options, and the codes. */
enum {
  OPT_PLUGIN_DIR = 1000,
  OPT_SET,
  OPT_THREADS,
  OPT_EVENTS,
  OPT_OUTPUT_DIR,
  OPT_INPUT_DIR,
  OPT_HELP,
  OPT_DOT,
  OPT_JSON,
  OPT_QUIET,
};
#define WEFT_CLI_COMMON_LONGOPTS                                               \
  {"plugin-dir", required_argument, 0, OPT_PLUGIN_DIR},                        \
      {"set", required_argument, 0, OPT_SET},                                  \
      {"threads", required_argument, 0, OPT_THREADS},                          \
      {"help", no_argument, 0, OPT_HELP}

/* --device DEV: checks cpu|cuda|emulated|auto (cuda: a CUDA build and a
 * device the driver sees) and sets WEFT_DEVICE for the model plugins; 0, or
 * prints why and returns 2. */
int weft_cli_use_device(const char *dev);
/* A byte count as users write it: "1500000000", "1.5G", "1536M", "512k"
 * (powers of 1024 for k/M/G/T, an optional trailing "B" or "iB").  0 and
 * *bytes set, or -1 for anything else (negative, empty, junk, overflow). */
int weft_cli_parse_bytes(const char *s, uint64_t *bytes);
/* --vram BYTES: parses it and sets WEFT_VRAM (bytes, decimal) for the model
 * plugins; 0, or prints why and returns 2. */
int weft_cli_use_vram(const char *s);
/* Creates a context with threads and plugins loaded; prints the error and
 * returns NULL on failure (*code gets the exit code). */
weft_ctx *weft_cli_ctx(const weft_cli_opts *o, int *code);
/* Loads GRAPH and applies --set values; prints the error on failure. */
weft_graph *weft_cli_graph(weft_ctx *ctx, const weft_cli_opts *o,
                           const char *path, int *code);
/* Prints "weft: <ctx error>" and returns the exit code for err. */
int weft_cli_fail(weft_ctx *ctx, int err);

const char *weft_cli_closest(const char *name, const char *const *cand,
                             int n);

/* Event rendering (events.c). */
typedef struct weft_cli_events weft_cli_events;
weft_cli_events *weft_cli_events_new(const char *mode, bool quiet);
void weft_cli_events_free(weft_cli_events *e);
void weft_cli_events_cb(const weft_event *ev, void *user);
bool weft_cli_events_json(const weft_cli_events *e);
/* An event's JSON name ("node_done") and a log level's ("warn"). */
const char *weft_cli_event_name(weft_event_kind k);
const char *weft_cli_level_name(weft_log_level l);
/* Adds an event's node, op and kind-specific fields (k/n, ms, error and
 * message, level, totals) to o, after whatever header the caller wrote. */
struct json_t;
void weft_cli_event_fields(struct json_t *o, const weft_event *ev);

#endif
