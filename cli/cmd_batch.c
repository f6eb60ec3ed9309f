/* cmd_batch.c - `weft batch`: runs one graph over a manifest and/or sweeps,
 * in one process and one context (models load once), several jobs in
 * flight on one run queue (--pipeline), with templated, atomically
 * published outputs, a ledger for resume, and sharding for Slurm arrays
 * and Kubernetes indexed Jobs. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "batch.h"
#include "commands.h"
#include "json_u64.h"

#define MAX_SWEEPS 64
#define MAX_PIPELINE 64

static void usage(FILE *out) {
  fputs(
      "usage: weft batch GRAPH [--manifest FILE] [--sweep "
      "NAME=VALUES]...\n"
      "                  [--output TEMPLATE] [--output-dir DIR] [options]\n"
      "\n"
      "Runs GRAPH once per job, in one process: models load once. Jobs are\n"
      "the manifest's rows times every combination of the sweeps (the last\n"
      "--sweep varies fastest); job N is the N-th of that list, from 0.\n"
      "Each job's image is written to a temporary directory and renamed to\n"
      "its templated name, and recorded in DIR/.weft-ledger.jsonl; running\n"
      "the same command again skips finished jobs and redoes the rest.\n"
      "\n"
      "  --manifest FILE       JSON lines ({\"prompt\": \"...\", \"seed\": 1} "
      "per\n"
      "                        line) or CSV with a header row; '-' is stdin\n"
      "  --sweep NAME=a,b,c    values of one input (\\, is a literal comma);\n"
      "  --sweep NAME=1..100   or a range, with an optional step: 0..1:0.25\n"
      "  --set NAME=VALUE      an input for every job (the manifest and the\n"
      "                        sweeps override it)\n"
      "  --output TEMPLATE     output name, relative to DIR (default\n"
      "                        '{job:05}.png'): {NAME} an input's value,\n"
      "                        {NAME_slug} as [a-z0-9-], at most 40 chars,\n"
      "                        {job} the job number, {job:05} zero-padded\n"
      "  --output-dir DIR      where outputs and the ledger go (default:\n"
      "                        output)\n"
      "  --input-dir DIR       relative input paths resolve here (default: .)\n"
      "  --shard I/N           run the jobs with number % N == I (default:\n"
      "                        from WEFT_SHARD, SLURM_ARRAY_TASK_ID/_COUNT\n"
      "                        or JOB_COMPLETION_INDEX/WEFT_SHARD_COUNT)\n"
      "  --max-failures N      stop after N failed jobs (default: never)\n"
      "  --pipeline N          jobs in flight at once: the next job's first\n"
      "                        nodes run while the last one finishes; 1 runs\n"
      "                        them one after another (default 2, or 1 with\n"
      "                        8 threads or more)\n"
      "  --verify MODE         what resume checks before it skips a job:\n"
      "                        hash (default: size and XXH3-128) or size\n"
      "  --dry-run             check everything, print this shard's jobs\n"
      "                        (number, output, inputs) and run nothing\n"
      "  --events MODE         auto (default: a progress line on a\n"
      "                        terminal), tty, json (JSON lines on stdout),\n"
      "                        none\n"
      "  --node-events         with --events=json: the runtime's node events\n"
      "                        too, each with its job\n"
      "  --threads N           worker threads (default: WEFT_THREADS or the\n"
      "                        number of CPUs)\n"
      "  --plugin-dir DIR      load plugins from DIR too (repeatable)\n"
      "  --device DEV          where the models run: cpu, cuda, emulated or\n"
      "                        auto (as weft run --device)\n"
      "  --vram BYTES          device memory the models may hold (as weft\n"
      "                        run --vram)\n"
      "  -q, --quiet           print only errors and the summary\n"
      "\n"
      "Ends with 'done N, skipped N, failed N (of N)' on stderr. Ctrl-C\n"
      "finishes the jobs in progress and stops (twice: cancels them).\n"
      "Exit status: 0 every job done, 1 some job failed, 2 bad input or\n"
      "usage (nothing ran), 130 interrupted. docs/batch.md has the details.\n",
      out);
}

/* ---- signals ------------------------------------------------------------ */

/* SIGINT and SIGTERM are blocked in every thread (the runtime's pools are
 * created later and inherit the mask) and taken by one thread with
 * sigwait, which may then call weft_ctx_cancel: no async-signal-safety
 * limits, no global state. */
typedef struct sigwatch {
  pthread_t th;
  bool started;
  sigset_t set, old;
  atomic_int stop; /* 0 go on, 1 stop after the jobs in flight, 2 cancel them */
  atomic_int sig;  /* the first signal that asked to stop */
  atomic_bool quit;
  pthread_mutex_t m; /* ctx: cancelled only while its run queue exists */
  int pipeline;      /* (m) jobs in flight, for the message */
  weft_ctx *ctx;
} sigwatch;

static void *watch(void *arg) {
  sigwatch *w = arg;
  int n_int = 0;
  for (;;) {
    int sig = 0;
    if (sigwait(&w->set, &sig)) continue;
    if (atomic_load(&w->quit)) return NULL;
    if (sig != SIGINT && sig != SIGTERM) continue;
    int none = 0;
    atomic_compare_exchange_strong(&w->sig, &none, sig);
    if (sig == SIGINT && ++n_int == 1) {
      atomic_store(&w->stop, 1);
      static const char one[] = "\nweft: stopping after the job in progress "
                                "(Ctrl-C again cancels it)\n";
      static const char some[] = "\nweft: stopping after the jobs in "
                                 "progress (Ctrl-C again cancels them)\n";
      pthread_mutex_lock(&w->m);
      const char *msg = w->pipeline > 1 ? some : one;
      pthread_mutex_unlock(&w->m);
      if (write(STDERR_FILENO, msg, strlen(msg)) < 0) { /* nothing */
      }
      continue;
    }
    if (sig == SIGINT && n_int >= 3) _exit(130);
    atomic_store(&w->stop, 2);
    pthread_mutex_lock(&w->m);
    if (w->ctx) weft_ctx_cancel(w->ctx);
    pthread_mutex_unlock(&w->m);
  }
}

/* Lets the watcher cancel ctx's runs (NULL: no longer). */
static void sigwatch_set_ctx(sigwatch *w, weft_ctx *ctx) {
  pthread_mutex_lock(&w->m);
  w->ctx = ctx;
  pthread_mutex_unlock(&w->m);
}

/* The window, known once the context (its thread count) exists. */
static void sigwatch_set_pipeline(sigwatch *w, int pipeline) {
  pthread_mutex_lock(&w->m);
  w->pipeline = pipeline;
  pthread_mutex_unlock(&w->m);
}

/* before any thread starts: they inherit the blocked signals */
static void sigwatch_start(sigwatch *w) {
  memset(w, 0, sizeof *w);
  pthread_mutex_init(&w->m, NULL);
  sigemptyset(&w->set);
  sigaddset(&w->set, SIGINT);
  sigaddset(&w->set, SIGTERM);
  sigaddset(&w->set, SIGUSR2); /* wakes the watcher to quit */
  pthread_sigmask(SIG_BLOCK, &w->set, &w->old);
  w->started = pthread_create(&w->th, NULL, watch, w) == 0;
}

static void sigwatch_stop(sigwatch *w) {
  if (w->started) {
    atomic_store(&w->quit, true);
    pthread_kill(w->th, SIGUSR2);
    pthread_join(w->th, NULL);
  }
  pthread_sigmask(SIG_SETMASK, &w->old, NULL);
  pthread_mutex_destroy(&w->m);
}

/* ---- the batch ---------------------------------------------------------- */

typedef struct batch {
  const char *graph_path;
  const char *outdir;
  char tmproot[PATH_MAX];
  weft_ctx *ctx;
  weft_graph *g;
  weft__batch_plan plan;
  weft__batch_shard shard;
  weft__ledger ledger;
  weft__bprog prog;
  sigwatch sw;
  bool verify_hash;
  char shard_text[64];
  int pipeline; /* jobs in flight at once (--pipeline) */
  weft_runq *q;
  int64_t started; /* jobs submitted */
  bool cancelled;  /* a job ended cancelled */
  bool fatal;      /* the batch's own files failed */
} batch;

static char *path_join(const char *a, const char *b) {
  size_t n = strlen(a) + strlen(b) + 2;
  char *p = malloc(n);
  if (p) snprintf(p, n, "%s/%s", a, b);
  return p;
}

/* Whether job's output is there as the ledger recorded it; *why says what
 * differs when it is there but damaged. */
static bool finished(batch *b, int64_t job, char *why, size_t len) {
  why[0] = 0;
  const weft__ledger_entry *e =
      weft__ledger_find(&b->ledger, b->plan.keys[job]);
  if (!e || !e->ok || strcmp(e->output, b->plan.outputs[job])) return false;
  char *path = path_join(b->outdir, e->output);
  struct stat st;
  bool ok = path && stat(path, &st) == 0 && S_ISREG(st.st_mode);
  if (ok && st.st_size != e->size) {
    snprintf(why, len, "%lld bytes, the ledger says %lld",
             (long long)st.st_size, (long long)e->size);
    ok = false;
  }
  if (ok && b->verify_hash) {
    int64_t size;
    char hex[33], err[512];
    if (weft__batch_file_hash(path, &size, hex, err, sizeof err)) {
      snprintf(why, len, "%s", err);
      ok = false;
    } else if (strcmp(hex, e->hash)) {
      snprintf(why, len, "its XXH3-128 differs from the ledger's");
      ok = false;
    }
  }
  free(path);
  return ok;
}

/* The file the job's graph wrote: the first graph output that names one
 * regular file inside the job's directory. */
static int produced_file(batch *b, weft_run *run, const char *jobdir, char *out,
                         size_t len, char *msg, size_t msglen) {
  char real_dir[PATH_MAX];
  if (!realpath(jobdir, real_dir)) {
    snprintf(msg, msglen, "%s: %s", jobdir, strerror(errno));
    return WEFT_EIO;
  }
  size_t rl = strlen(real_dir);
  size_t cap = 65536;
  char *val = malloc(cap);
  if (!val) return WEFT_ENOMEM;
  int rc = WEFT_ENOENT;
  for (int i = 0; i < weft_graph_output_count(b->g) && rc; i++) {
    if (weft_run_output_format(run, i, val, cap)) continue;
    char *nl = strchr(val, '\n');
    int lines = 1;
    for (char *p = nl; p; p = strchr(p + 1, '\n'))
      lines++;
    if (nl) *nl = 0;
    char real[PATH_MAX];
    struct stat st;
    if (!val[0] || !realpath(val, real) || strncmp(real, real_dir, rl) ||
        real[rl] != '/' || stat(real, &st) || !S_ISREG(st.st_mode))
      continue;
    if (lines > 1) {
      snprintf(msg, msglen,
               "the graph wrote %d images (output '%s'); weft batch takes "
               "one image per job (batch_size 1)",
               lines, weft_graph_output_name(b->g, i));
      rc = WEFT_EUNSUPPORTED;
      break;
    }
    snprintf(out, len, "%s", real);
    rc = 0;
  }
  free(val);
  if (rc == WEFT_ENOENT)
    snprintf(msg, msglen,
             "the graph wrote no file that one of its outputs names; end it "
             "with SaveImage and list 'outputs: {file: save.files}'");
  return rc;
}

/* Moves the job's file to its name and fsyncs the directory, so that a
 * name is either absent or complete. */
static int publish(batch *b, const char *src, const char *name, char *msg,
                   size_t msglen) {
  char *dest = path_join(b->outdir, name);
  if (!dest) return WEFT_ENOMEM;
  char *dir = strdup(dest);
  if (!dir) {
    free(dest);
    return WEFT_ENOMEM;
  }
  *strrchr(dir, '/') = 0;
  int rc = weft__batch_mkdirs(dir, msg, msglen);
  if (!rc && rename(src, dest)) {
    snprintf(msg, msglen, "cannot rename %s to %s: %s", src, dest,
             strerror(errno));
    rc = WEFT_EIO;
  }
  if (!rc && weft__batch_fsync_dir(dir)) {
    snprintf(msg, msglen, "cannot fsync %s: %s", dir, strerror(errno));
    rc = WEFT_EIO;
  }
  free(dir);
  free(dest);
  return rc;
}

static void utc_now(char *buf, size_t len) {
  time_t t = time(NULL);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Appends the job's line to the ledger; inputs is the job's JSON. */
static int record(batch *b, int64_t job, const char *inputs, bool ok,
                  int64_t size, const char *hash, double ms,
                  const char *error) {
  json_t *o = json_object();
  char when[32];
  utc_now(when, sizeof when);
  json_object_set_new(o, "job", json_integer(job));
  json_object_set_new(o, "key", json_string(b->plan.keys[job]));
  json_object_set_new(o, "status", json_string(ok ? "ok" : "failed"));
  json_object_set_new(o, "output", json_string(b->plan.outputs[job]));
  if (ok) {
    json_object_set_new(o, "size", json_integer(size));
    json_object_set_new(o, "xxh128", json_string(hash));
  } else {
    json_object_set_new(o, "error", json_string(error));
  }
  json_object_set_new(o, "ms", json_real(ms));
  json_t *in = weft__batch_inputs_load(inputs);
  json_object_set_new(o, "inputs", in ? in : json_object());
  json_object_set_new(o, "graph", json_string(b->graph_path));
  json_object_set_new(o, "graph_xxh128", json_string(b->plan.graph_hash));
  json_object_set_new(o, "shard", json_string(b->shard_text));
  json_object_set_new(o, "time", json_string(when));
  char *line = weft__json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER |
                                       JSON_REAL_PRECISION(9));
  if (!line) return WEFT_ENOMEM;
  char err[1024];
  int rc = weft__ledger_append(&b->ledger, line, err, sizeof err);
  free(line);
  if (rc) weft__bprog_note(&b->prog, "weft: %s", err);
  return rc;
}

/* One job in flight: what its completion needs. */
typedef struct job {
  batch *b;
  int64_t num;
  char *dir;    /* its own output directory, DIR/.weft-tmp/job-N */
  char *inputs; /* every input's value, JSON */
  double t0;
} job;

static void job_free(job *jb) {
  if (!jb) return;
  free(jb->dir);
  free(jb->inputs);
  free(jb);
}

/* The run of a job completed (called from inside weft_runq_*, in job
 * order): publish its file, record it, report it. */
static void job_finished(weft_run *run, void *user) {
  job *jb = user;
  batch *b = jb->b;
  int64_t j = jb->num;
  const char *output = b->plan.outputs[j];
  char msg[8192] = "", file[PATH_MAX], hash[33] = "";
  int64_t size = 0;
  int rc = weft_run_status(run);
  if (rc == WEFT_ECANCELED) {
    weft__batch_rmtree(jb->dir);
    weft__bprog_note(&b->prog, "weft: job %lld (%s) cancelled", (long long)j,
                     output);
    b->cancelled = true;
    job_free(jb);
    return;
  }
  if (rc) {
    const char *e = weft_run_error(run);
    snprintf(msg, sizeof msg, "%s", *e ? e : weft_strerror(rc));
  }
  if (!rc)
    rc = produced_file(b, run, jb->dir, file, sizeof file, msg, sizeof msg);
  if (!rc) rc = weft__batch_file_hash(file, &size, hash, msg, sizeof msg);
  if (!rc) rc = publish(b, file, output, msg, sizeof msg);
  double ms = (weft__bprog_now() - jb->t0) * 1e3;
  if (record(b, j, jb->inputs, !rc, size, hash, ms, msg)) b->fatal = true;
  weft__batch_rmtree(jb->dir);
  if (rc)
    weft__bprog_job_failed(&b->prog, j, output, ms, msg);
  else
    weft__bprog_job_done(&b->prog, j, output, ms, size);
  job_free(jb);
}

/* Sets job j's inputs on the graph and submits its run; the run takes a
 * copy of them, so the next job may set its own at once.  false: the
 * batch's own directories failed (no later job would fare better). */
static bool start_job(batch *b, int64_t j) {
  char name[64], msg[8192] = "";
  snprintf(name, sizeof name, "job-%lld", (long long)j);
  job *jb = calloc(1, sizeof *jb);
  if (!jb || !(jb->dir = path_join(b->tmproot, name))) {
    job_free(jb);
    weft__bprog_note(&b->prog, "weft: job %lld: out of memory", (long long)j);
    return false;
  }
  jb->b = b;
  jb->num = j;
  weft__batch_rmtree(jb->dir);
  int rc = weft__batch_mkdirs(jb->dir, msg, sizeof msg);
  if (!rc) rc = weft__batch_apply(&b->plan, b->ctx, b->g, j, msg, sizeof msg);
  if (!rc && !(jb->inputs = weft__graph_inputs_json(b->g))) {
    snprintf(msg, sizeof msg, "out of memory");
    rc = WEFT_ENOMEM;
  }
  if (rc) {
    weft__bprog_note(&b->prog, "weft: job %lld: %s", (long long)j, msg);
    weft__batch_rmtree(jb->dir);
    job_free(jb);
    return false;
  }
  weft__bprog_job_start(&b->prog, j, b->plan.outputs[j], jb->inputs);
  jb->t0 = weft__bprog_now();
  weft_run_opts o = {.struct_size = sizeof o,
                     .output_dir = jb->dir,
                     .done = job_finished,
                     .user = jb};
  b->started++;
  if ((rc = weft_runq_submit(b->q, &o, NULL))) {
    weft__bprog_note(&b->prog, "weft: job %lld: %s", (long long)j,
                     weft_ctx_error(b->ctx));
    weft__batch_rmtree(jb->dir);
    job_free(jb);
    return false;
  }
  return true;
}

/* The runtime's node events, tagged with their job. */
static void node_event(const weft_event *ev, void *user) {
  batch *b = user;
  const job *jb = ev->run_user;
  weft__bprog_node_event(&b->prog, ev, jb ? jb->num : -1);
}

/* Clears what a killed run left in .weft-tmp: all of it when this process
 * runs every job; else only this shard's job directories, as other shards
 * may be running in the same directory. */
static void clear_leftovers(batch *b) {
  if (b->shard.count == 1) {
    weft__batch_rmtree(b->tmproot);
    return;
  }
  struct stat st;
  if (stat(b->tmproot, &st)) return;
  for (int64_t j = b->shard.index; j < b->plan.n_jobs; j += b->shard.count) {
    char name[64];
    snprintf(name, sizeof name, "job-%lld", (long long)j);
    char *d = path_join(b->tmproot, name);
    if (d) weft__batch_rmtree(d);
    free(d);
  }
}

static int run_batch(batch *b, int64_t max_failures) {
  char err[4096];
  int rc = weft__batch_mkdirs(b->outdir, err, sizeof err);
  if (!rc) rc = weft__ledger_open(b->outdir, &b->ledger, err, sizeof err);
  if (rc) {
    fprintf(stderr, "weft: %s\n", err);
    return 1;
  }
  if (b->ledger.n_bad && !b->prog.quiet)
    fprintf(stderr,
            "weft: %s: %d unreadable line%s ignored (the first is line %d)\n",
            b->ledger.path, b->ledger.n_bad, b->ledger.n_bad == 1 ? "" : "s",
            b->ledger.first_bad);
  snprintf(b->tmproot, sizeof b->tmproot, "%s/%s", b->outdir, WEFT__TMP_NAME);
  clear_leftovers(b);

  weft__bprog *p = &b->prog;
  int64_t n = b->plan.n_jobs, idx = b->shard.index, step = b->shard.count;
  p->total = idx < n ? (n - idx + step - 1) / step : 0;
  weft__bprog_batch_start(p, b->graph_path, &b->shard, n);
  /* pass 1: what is already done */
  bool *todo = calloc((size_t)p->total + 1, sizeof *todo);
  if (!todo) return 1;
  int64_t k = 0;
  for (int64_t j = idx; j < n; j += step, k++) {
    char why[1024];
    if (finished(b, j, why, sizeof why)) {
      weft__bprog_job_skipped(p, j, b->plan.outputs[j]);
      continue;
    }
    if (why[0] && !p->quiet)
      weft__bprog_note(p, "weft: job %lld: %s is damaged (%s); redoing it",
                       (long long)j, b->plan.outputs[j], why);
    todo[k] = true;
    p->to_run++;
  }
  if (!p->quiet)
    weft__bprog_note(p,
                     "weft: shard %s (%s): %lld of %lld jobs, %lld done "
                     "before, %lld to run",
                     b->shard_text, b->shard.source, (long long)p->total,
                     (long long)n, (long long)p->skipped, (long long)p->to_run);
  /* pass 2: the rest, in job order, up to --pipeline of them in flight:
   * the next job's first nodes start while the last one finishes */
  weft_ctx_set_event_cb(b->ctx, node_event, b);
  if (weft_runq_new(b->ctx, b->g, b->pipeline, &b->q)) {
    fprintf(stderr, "weft: %s\n", weft_ctx_error(b->ctx));
    free(todo);
    return 1;
  }
  sigwatch_set_ctx(&b->sw, b->ctx);
  bool limit = false;
  k = 0;
  for (int64_t j = idx; j < n; j += step, k++) {
    if (!todo[k]) continue;
    /* room first, so that what stops the batch is seen before it grows */
    while (weft_runq_pending(b->q) >= b->pipeline)
      weft_runq_wait(b->q);
    if (b->cancelled || b->fatal || atomic_load(&b->sw.stop)) break;
    if (max_failures > 0 && p->failed >= max_failures) {
      limit = true;
      break;
    }
    if (!start_job(b, j)) {
      b->fatal = true;
      break;
    }
  }
  /* the jobs in flight finish (or end cancelled) and are recorded */
  weft_runq_drain(b->q);
  if (!limit && max_failures > 0 && p->failed >= max_failures)
    limit = !b->cancelled && !b->fatal && !atomic_load(&b->sw.stop);
  if (limit) {
    int64_t left = p->to_run - b->started;
    weft__bprog_note(p,
                     "weft: stopping after %lld failed job%s "
                     "(--max-failures %lld); %lld job%s not run",
                     (long long)p->failed, p->failed == 1 ? "" : "s",
                     (long long)max_failures, (long long)left,
                     left == 1 ? "" : "s");
  }
  sigwatch_set_ctx(&b->sw, NULL); /* before the queue's wake-up goes */
  weft_runq_free(b->q);
  b->q = NULL;
  weft_ctx_set_event_cb(b->ctx, NULL, NULL);
  bool cancelled = b->cancelled || atomic_load(&b->sw.stop);
  bool fatal = b->fatal;
  free(todo);
  rmdir(b->tmproot); /* only when no other shard is using it */
  weft__bprog_batch_done(p, cancelled);
  if (cancelled) return atomic_load(&b->sw.sig) == SIGTERM ? 143 : 130;
  if (fatal) return 1;
  return p->failed ? 1 : 0;
}

static void dry_run(const batch *b) {
  int64_t n = b->plan.n_jobs, idx = b->shard.index, step = b->shard.count;
  if (!b->prog.quiet)
    fprintf(stderr, "weft: shard %s (%s): %lld of %lld jobs (dry run)\n",
            b->shard_text, b->shard.source,
            (long long)(idx < n ? (n - idx + step - 1) / step : 0),
            (long long)n);
  for (int64_t j = b->shard.index; j < b->plan.n_jobs; j += b->shard.count) {
    char *set = weft__batch_job_set_json(&b->plan, j);
    printf("%lld\t%s\t%s\n", (long long)j, b->plan.outputs[j],
           set ? set : "{}");
    free(set);
  }
  fflush(stdout);
}

static const char *env_get(const char *name, void *user) {
  (void)user;
  return getenv(name);
}

enum {
  OPT_MANIFEST = 2000,
  OPT_SWEEP,
  OPT_OUTPUT,
  OPT_SHARD,
  OPT_MAX_FAILURES,
  OPT_VERIFY,
  OPT_DRY_RUN,
  OPT_NODE_EVENTS,
  OPT_PIPELINE,
  OPT_DEVICE,
  OPT_VRAM,
};

int weft_cmd_batch(int argc, char **argv) {
  weft_cli_opts o = {.events = "auto"};
  static const struct option longopts[] = {
      WEFT_CLI_COMMON_LONGOPTS,
      {"events", required_argument, 0, OPT_EVENTS},
      {"output-dir", required_argument, 0, OPT_OUTPUT_DIR},
      {"input-dir", required_argument, 0, OPT_INPUT_DIR},
      {"quiet", no_argument, 0, OPT_QUIET},
      {"manifest", required_argument, 0, OPT_MANIFEST},
      {"sweep", required_argument, 0, OPT_SWEEP},
      {"output", required_argument, 0, OPT_OUTPUT},
      {"shard", required_argument, 0, OPT_SHARD},
      {"max-failures", required_argument, 0, OPT_MAX_FAILURES},
      {"verify", required_argument, 0, OPT_VERIFY},
      {"dry-run", no_argument, 0, OPT_DRY_RUN},
      {"node-events", no_argument, 0, OPT_NODE_EVENTS},
      {"pipeline", required_argument, 0, OPT_PIPELINE},
      {"device", required_argument, 0, OPT_DEVICE},
      {"vram", required_argument, 0, OPT_VRAM},
      {0, 0, 0, 0}};
  const char *manifest = NULL, *tpl = "{job:05}.png", *shard_arg = NULL;
  const char *sweeps[MAX_SWEEPS];
  int n_sweeps = 0;
  int64_t max_failures = 0;
  int pipeline = 0; /* auto */
  bool dry = false, node_events = false, verify_hash = true;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "q", longopts, NULL)) != -1) {
    int r = weft_cli_common_opt(&o, c, optarg);
    if (r < 0) return 2;
    if (r) continue;
    switch (c) {
    case OPT_HELP: usage(stdout); return 0;
    case OPT_EVENTS: o.events = optarg; break;
    case OPT_OUTPUT_DIR: o.output_dir = optarg; break;
    case OPT_INPUT_DIR: o.input_dir = optarg; break;
    case 'q':
    case OPT_QUIET: o.quiet = true; break;
    case OPT_MANIFEST:
      if (manifest) {
        fprintf(stderr, "weft: --manifest given twice; a batch reads one\n");
        return 2;
      }
      manifest = optarg;
      break;
    case OPT_SWEEP:
      if (n_sweeps == MAX_SWEEPS) {
        fprintf(stderr, "weft: more than %d --sweep options\n", MAX_SWEEPS);
        return 2;
      }
      sweeps[n_sweeps++] = optarg;
      break;
    case OPT_OUTPUT: tpl = optarg; break;
    case OPT_SHARD: shard_arg = optarg; break;
    case OPT_MAX_FAILURES: {
      char *end;
      long long x = strtoll(optarg, &end, 10);
      if (!*optarg || *end || x < 0) {
        fprintf(stderr,
                "weft: --max-failures %s: expected a whole number (0: no "
                "limit)\n",
                optarg);
        return 2;
      }
      max_failures = x;
      break;
    }
    case OPT_VERIFY:
      if (strcmp(optarg, "hash") && strcmp(optarg, "size")) {
        fprintf(stderr, "weft: --verify %s: expected hash or size\n", optarg);
        return 2;
      }
      verify_hash = !strcmp(optarg, "hash");
      break;
    case OPT_DRY_RUN: dry = true; break;
    case OPT_NODE_EVENTS: node_events = true; break;
    case OPT_DEVICE:
      if (weft_cli_use_device(optarg)) return 2;
      break;
    case OPT_VRAM:
      if (weft_cli_use_vram(optarg)) return 2;
      break;
    case OPT_PIPELINE: {
      char *end;
      long x = strtol(optarg, &end, 10);
      if (!*optarg || *end || x < 1 || x > MAX_PIPELINE) {
        fprintf(stderr,
                "weft: --pipeline %s: expected a number of jobs in flight "
                "from 1 to %d\n",
                optarg, MAX_PIPELINE);
        return 2;
      }
      pipeline = (int)x;
      break;
    }
    default: usage(stderr); return 2;
    }
  }
  if (optind != argc - 1) {
    if (optind < argc - 1)
      fprintf(stderr, "weft: batch runs one graph; unexpected '%s'\n",
              argv[optind + 1]);
    usage(stderr);
    return 2;
  }
  batch *b = calloc(1, sizeof *b);
  if (!b) return 1;
  b->ledger.fd = -1;
  b->graph_path = argv[optind];
  b->outdir = o.output_dir ? o.output_dir : "output";
  b->verify_hash = verify_hash;
  b->pipeline = pipeline;
  o.output_dir = NULL; /* each job gets its own; see run_job */
  int code = 2;
  char err[8192];
  weft__batch_manifest m = {0};
  weft__batch_sweep sw[MAX_SWEEPS];
  int n_sw = 0;
  if (weft__bprog_init(&b->prog, o.events, o.quiet, node_events)) {
    fprintf(stderr, "weft: --events %s: expected auto, tty, json or none\n",
            o.events);
    goto out;
  }
  if (manifest && weft__batch_manifest_load(manifest, &m, err, sizeof err)) {
    fprintf(stderr, "weft: %s\n", err);
    goto out;
  }
  for (; n_sw < n_sweeps; n_sw++)
    if (weft__batch_sweep_parse(sweeps[n_sw], &sw[n_sw], err, sizeof err)) {
      fprintf(stderr, "weft: %s\n", err);
      goto out;
    }
  if ((shard_arg
           ? weft__batch_shard_parse(shard_arg, &b->shard, err, sizeof err)
           : weft__batch_shard_from_env(env_get, NULL, &b->shard, err,
                                        sizeof err))) {
    fprintf(stderr, "weft: %s\n", err);
    goto out;
  }
  snprintf(b->shard_text, sizeof b->shard_text, "%lld/%lld",
           (long long)b->shard.index, (long long)b->shard.count);
  sigwatch_start(&b->sw);
  b->ctx = weft_cli_ctx(&o, &code);
  /* by default 2 jobs in flight; with 8 threads or more the CPU kernels'
   * pool, which serves one node at a time, makes overlap slower */
  if (b->ctx && !b->pipeline)
    b->pipeline = weft_ctx_threads(b->ctx) < 8 ? 2 : 1;
  sigwatch_set_pipeline(&b->sw, b->pipeline);
  if (b->ctx) b->g = weft_cli_graph(b->ctx, &o, b->graph_path, &code);
  if (b->g) {
    int rc = weft__batch_plan_build(&b->plan, b->ctx, b->g, b->graph_path,
                                    manifest ? &m : NULL, sw, n_sw, tpl, err,
                                    sizeof err);
    if (rc) {
      fprintf(stderr, "weft: %s\n", err);
      code = weft_exit_code(rc);
    } else if (atomic_load(&b->sw.stop)) {
      code = atomic_load(&b->sw.sig) == SIGTERM ? 143 : 130;
    } else if (dry) {
      dry_run(b);
      code = 0;
    } else {
      code = run_batch(b, max_failures);
    }
  }
  sigwatch_stop(&b->sw);
out:
  weft__ledger_close(&b->ledger);
  weft__batch_plan_free(&b->plan);
  weft_graph_free(b->g);
  weft_ctx_free(b->ctx);
  for (int i = 0; i < n_sw; i++)
    weft__batch_sweep_free(&sw[i]);
  weft__batch_manifest_free(&m);
  free(b);
  return code;
}
