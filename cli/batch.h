/* batch.h - the parts of `weft batch`: manifests, sweeps, output-name
 * templates, shards, the ledger and progress output.  Everything here but
 * batch_plan.c works without a graph, so tests/batch drives it directly.
 *
 * Functions that can fail return 0 or a negative WEFT_E* code and write a
 * message that says where and what into err (errlen bytes, never NULL). */
#ifndef WEFT_CLI_BATCH_H
#define WEFT_CLI_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <stdarg.h>
#include <stdio.h>

#include "weft/weft.h"

/* Formats a message into err (errlen bytes) and returns code: the batch
 * parsers' one way to fail. */
static inline int weft__batch_fail(char *err, size_t errlen, int code,
                                   const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static inline int weft__batch_fail(char *err, size_t errlen, int code,
                                   const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return code;
}

/* ---- manifests (batch_manifest.c) --------------------------------------- */

/* One manifest row: the inputs it sets.  val[k] is the text for column
 * col[k]; a row lists only the columns it sets (a JSON key that is absent or
 * null, a CSV cell that is empty and unquoted). */
typedef struct weft__batch_row {
  int line; /* 1-based line where the row starts */
  int n;
  int *col;
  char **val;
} weft__batch_row;

typedef struct weft__batch_manifest {
  char *name; /* the file as named in messages */
  int n_cols;
  char **cols;   /* input names, in order of first appearance */
  int *col_line; /* the line each column first appears on */
  int n_rows;
  weft__batch_row *rows;
} weft__batch_manifest;

/* Parses JSON lines (one object per line, blank lines skipped) or CSV (RFC
 * 4180, header row first).  The format follows the name's extension (.csv;
 * .jsonl, .ndjson, .json), else the first character ('{' is JSON lines).
 * On failure m is left empty (weft__batch_manifest_free is still safe). */
int weft__batch_manifest_parse(const char *name, const char *text, size_t len,
                               weft__batch_manifest *m, char *err,
                               size_t errlen);
/* Reads path ("-" is standard input) and parses it. */
int weft__batch_manifest_load(const char *path, weft__batch_manifest *m,
                              char *err, size_t errlen);
void weft__batch_manifest_free(weft__batch_manifest *m);

/* ---- sweeps (batch_sweep.c) --------------------------------------------- */

typedef struct weft__batch_sweep {
  char *name;
  char *arg; /* the option as given, for messages */
  int64_t n;
  char **vals; /* a list's values; NULL for a range, whose values are made
                  on demand (weft__batch_sweep_value): 1..10000000 costs no
                  memory */
  /* a range: value k is ia + k*is (ints), else a + k*step printed with
   * dec decimals */
  bool ints;
  long long ia, is;
  double a, step;
  int dec;
} weft__batch_sweep;

/* Room for any range value (a long long, or a double with its decimals). */
#define WEFT__SWEEP_BUF 400

/* Value i (0 <= i < s->n) of s: a list's own string, or a range's printed
 * into buf.  (transfer none: s's or buf's) */
const char *weft__batch_sweep_value(const weft__batch_sweep *s, int64_t i,
                                    char buf[WEFT__SWEEP_BUF]);

/* Parses "name=a,b,c" (`\,` is a literal comma, `\\` a backslash) or
 * "name=FROM..TO[:STEP]" (integers, or decimals such as 0.5..2:0.25, whose
 * values are printed with the most decimals of the three). */
int weft__batch_sweep_parse(const char *arg, weft__batch_sweep *s, char *err,
                            size_t errlen);
void weft__batch_sweep_free(weft__batch_sweep *s);

/* ---- output names (batch_template.c) ------------------------------------ */

enum { WEFT__SEG_TEXT, WEFT__SEG_INPUT, WEFT__SEG_JOB };

typedef struct weft__batch_seg {
  int kind;
  char *text; /* TEXT */
  int input;  /* INPUT: index into the names the template was parsed with */
  bool slug;
  int width; /* zero-padded width of a number; 0 = as is */
} weft__batch_seg;

typedef struct weft__batch_template {
  char *text;
  int n;
  weft__batch_seg *seg;
} weft__batch_template;

/* Parses TEMPLATE: `{name}`, `{name_slug}`, `{name:05}`, `{job}`,
 * `{job:05}`; `{{` and `}}` are literal braces.  names are the graph's
 * input names. */
int weft__batch_template_parse(const char *tpl, const char *const *names,
                               int n_names, weft__batch_template *t, char *err,
                               size_t errlen);
void weft__batch_template_free(weft__batch_template *t);
/* The name of job `job` whose inputs have the texts vals[] (indexed like the
 * names; NULL renders as ""). malloc'd; caller frees; NULL: out of memory. */
char *weft__batch_template_render(const weft__batch_template *t, int64_t job,
                                  const char *const *vals);
/* s lower-cased to [a-z0-9-]: every run of other bytes becomes one '-',
 * no '-' at either end, at most 40 characters.  out holds >= 41 bytes. */
void weft__batch_slug(const char *s, char *out);
/* Checks a rendered name: relative, no empty, "." or ".." part, no part
 * longer than 255 bytes, not in weft's reserved ".weft-*" names. */
int weft__batch_name_check(const char *name, char *err, size_t errlen);

/* ---- shards (batch_shard.c) --------------------------------------------- */

typedef struct weft__batch_shard {
  int64_t index, count; /* this process takes jobs with job % count == index */
  char source[256];     /* where it came from, for the "shard" line */
} weft__batch_shard;

/* "I/N" with 0 <= I < N. */
int weft__batch_shard_parse(const char *arg, weft__batch_shard *s, char *err,
                            size_t errlen);
/* From the environment: WEFT_SHARD (I/N), else SLURM_ARRAY_TASK_ID with
 * SLURM_ARRAY_TASK_COUNT or _MIN/_MAX (and _STEP), else
 * JOB_COMPLETION_INDEX with WEFT_SHARD_COUNT; none of them: 0/1.  get
 * is getenv's stand-in (tests pass their own). */
typedef const char *(*weft__batch_getenv)(const char *name, void *user);
int weft__batch_shard_from_env(weft__batch_getenv get, void *user,
                               weft__batch_shard *s, char *err, size_t errlen);

/* ---- files and the ledger (batch_ledger.c) ------------------------------ */

#define WEFT__LEDGER_NAME ".weft-ledger.jsonl"
#define WEFT__TMP_NAME ".weft-tmp"

/* A file's size and XXH3-128 (32 hex digits). */
int weft__batch_file_hash(const char *path, int64_t *size, char hex[33],
                          char *err, size_t errlen);
/* XXH3-128 of n bytes, as 32 hex digits. */
void weft__batch_hash_hex(const void *data, size_t n, char hex[33]);
/* mkdir -p; rm -rf (a missing path is fine); fsync of a directory. */
int weft__batch_mkdirs(const char *path, char *err, size_t errlen);
int weft__batch_rmtree(const char *path);
int weft__batch_fsync_dir(const char *dir);

typedef struct weft__ledger_entry {
  char key[33];
  int64_t job;
  char *output;
  int64_t size;
  char hash[33];
  bool ok;
  int64_t seq; /* line order; later lines win */
} weft__ledger_entry;

typedef struct weft__ledger {
  char *path;
  int fd; /* open for appending; -1 before weft__ledger_open */
  int n;
  weft__ledger_entry *e; /* one per key: the last line with it, by key */
  int n_bad;             /* lines that could not be read */
  int first_bad;         /* line number of the first one */
} weft__ledger;

/* Reads dir/.weft-ledger.jsonl (missing: empty) and opens it for
 * appending.  Unreadable lines (a line cut short by a crash) are counted
 * and skipped. */
int weft__ledger_open(const char *dir, weft__ledger *l, char *err,
                      size_t errlen);
void weft__ledger_close(weft__ledger *l);
/* The last entry with this key, or NULL.  (transfer none) */
const weft__ledger_entry *weft__ledger_find(const weft__ledger *l,
                                            const char *key);
/* Appends one line (the text, without its newline) under an exclusive
 * lock, so shards sharing the directory interleave whole lines, and fsyncs
 * the file. */
int weft__ledger_append(weft__ledger *l, const char *line, char *err,
                        size_t errlen);

/* ---- progress and events (batch_progress.c) ----------------------------- */

typedef enum { WEFT__BP_NONE, WEFT__BP_TTY, WEFT__BP_JSON } weft__bp_mode;

/* Jobs in flight the progress line shows (the --pipeline window). */
#define WEFT__BP_SLOTS 8

typedef struct weft__bprog {
  weft__bp_mode mode;
  bool quiet, node_events;
  double t0;      /* monotonic seconds at the start */
  double t_first; /* when the first job to run started; < 0 before */
  int64_t total;  /* jobs of this shard */
  int64_t to_run; /* of which not skipped */
  int64_t done, skipped, failed;
  struct {
    int64_t job;          /* -1: free */
    char node[128];       /* node and step shown on the progress line */
  } slot[WEFT__BP_SLOTS]; /* the jobs in flight, oldest first */
  bool line_open;
} weft__bprog;

/* mode: "auto" (a line on a terminal, else nothing), "tty", "json" or
 * "none"; returns -1 for anything else. */
int weft__bprog_init(weft__bprog *p, const char *mode, bool quiet,
                     bool node_events);
double weft__bprog_now(void);
void weft__bprog_batch_start(weft__bprog *p, const char *graph,
                             const weft__batch_shard *sh, int64_t n_jobs);
void weft__bprog_job_skipped(weft__bprog *p, int64_t job, const char *output);
/* inputs: the job's inputs as compact JSON. */
void weft__bprog_job_start(weft__bprog *p, int64_t job, const char *output,
                           const char *inputs);
void weft__bprog_job_done(weft__bprog *p, int64_t job, const char *output,
                          double ms, int64_t size);
void weft__bprog_job_failed(weft__bprog *p, int64_t job, const char *output,
                            double ms, const char *message);
/* A runtime event of job `job`'s run. */
void weft__bprog_node_event(weft__bprog *p, const weft_event *ev, int64_t job);
/* Prints a message line (keeps the progress line below it). */
void weft__bprog_note(weft__bprog *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void weft__bprog_batch_done(weft__bprog *p, bool cancelled);

/* ---- jobs bound to a graph (batch_plan.c) ------------------------------- */

/* The expanded batch: manifest rows x sweeps, every job's output name and
 * identity key, checked against the graph before anything runs.  Job j is
 * manifest row j / combos with sweep combination j % combos; the last
 * --sweep varies fastest. */
typedef struct weft__batch_plan {
  const weft__batch_manifest *m; /* NULL: no manifest (borrowed) */
  const weft__batch_sweep *sw;   /* [n_sw] (borrowed) */
  int n_sw;
  int n_inputs;
  char **names;   /* the graph's inputs */
  char **base;    /* their values before any job (defaults, --set) */
  int *col_input; /* manifest column -> input */
  int *sw_input;  /* sweep -> input */
  weft__batch_template tpl;
  int64_t n_jobs;
  int64_t combos; /* jobs per manifest row */
  char graph_hash[33];
  char **outputs;   /* [n_jobs] output names */
  char (*keys)[33]; /* [n_jobs] identity: graph, all inputs, output name */
  bool *dirty;      /* inputs the last weft__batch_apply set */
} weft__batch_plan;

/* Binds manifest (or NULL) and sweeps to graph g (loaded from graph_path,
 * --set applied), expands every job, renders and checks its output name
 * from template tpl, and refuses two jobs with one name.  Errors name
 * file:line, the option, or the two jobs.  g is left with the last job's
 * inputs. */
int weft__batch_plan_build(weft__batch_plan *p, weft_ctx *ctx, weft_graph *g,
                           const char *graph_path,
                           const weft__batch_manifest *m,
                           const weft__batch_sweep *sw, int n_sw,
                           const char *tpl, char *err, size_t errlen);
void weft__batch_plan_free(weft__batch_plan *p);
/* Sets job's inputs on g; inputs the previous job set and this one does
 * not go back to their base values. */
int weft__batch_apply(weft__batch_plan *p, weft_ctx *ctx, weft_graph *g,
                      int64_t job, char *err, size_t errlen);
/* The inputs that the manifest row and sweeps give job, as compact JSON
 * (texts as given).  malloc'd; caller frees. */
char *weft__batch_job_set_json(const weft__batch_plan *p, int64_t job);

/* Parses weft__graph_inputs_json's text; integers beyond int64 (seeds up
 * to 2^64 - 1) become strings of their digits.  NULL if it is not a JSON
 * object.  The caller owns the result (json_decref). */
typedef struct json_t json_t;
json_t *weft__batch_inputs_load(const char *js);

/* Not yet in weft.h: the graph's inputs and their current values as a JSON
 * object (runtime/graph_meta.c; malloc'd, caller frees). */
char *weft__graph_inputs_json(const weft_graph *g);

#endif
