/* batch_progress.c - what `weft batch` shows while it runs: one progress line
 * for the whole batch on a terminal (jobs, images/s, ETA), or JSON lines on
 * stdout with --events=json (job events, and node events with
 * --node-events).  Several jobs may be in flight (--pipeline): the line
 * shows each one's node and step. */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "batch.h"
#include "commands.h"

double weft__bprog_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int weft__bprog_init(weft__bprog *p, const char *mode, bool quiet,
                     bool node_events) {
  memset(p, 0, sizeof *p);
  p->quiet = quiet;
  p->node_events = node_events;
  p->t0 = weft__bprog_now();
  p->t_first = -1;
  for (int i = 0; i < WEFT__BP_SLOTS; i++)
    p->slot[i].job = -1;
  if (!mode || !strcmp(mode, "auto"))
    p->mode = isatty(STDERR_FILENO) && !quiet ? WEFT__BP_TTY : WEFT__BP_NONE;
  else if (!strcmp(mode, "tty"))
    p->mode = WEFT__BP_TTY;
  else if (!strcmp(mode, "json"))
    p->mode = WEFT__BP_JSON;
  else if (!strcmp(mode, "none"))
    p->mode = WEFT__BP_NONE;
  else
    return -1;
  return 0;
}

/* Writes o as one line on stdout and frees it. */
static void emit(json_t *o) {
  char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII |
                              JSON_REAL_PRECISION(9) | JSON_PRESERVE_ORDER);
  if (s) {
    puts(s);
    fflush(stdout);
    free(s);
  }
  json_decref(o);
}

/* A new event object: its name, then seconds since the batch started. */
static json_t *event(const weft__bprog *p, const char *name) {
  json_t *o = json_object();
  json_object_set_new(o, "event", json_string(name));
  json_object_set_new(o, "t", json_real(weft__bprog_now() - p->t0));
  return o;
}

static void clear_line(weft__bprog *p) {
  if (p->line_open) fputs("\r\033[K", stderr);
  p->line_open = false;
}

static void draw(weft__bprog *p) {
  if (p->mode != WEFT__BP_TTY) return;
  int64_t finished = p->done + p->skipped + p->failed;
  char rate[64] = "", eta[64] = "";
  double now = weft__bprog_now();
  int64_t ran = p->done + p->failed;
  if (p->t_first >= 0 && ran > 0) {
    double s = now - p->t_first, per = s / (double)ran;
    snprintf(rate, sizeof rate, " %.2f img/s", (double)p->done / s);
    double left = per * (double)(p->to_run - ran);
    if (left < 0) left = 0;
    long l = (long)(left + 0.5);
    if (l >= 3600)
      snprintf(eta, sizeof eta, ", ETA %ld:%02ld:%02ld", l / 3600, l / 60 % 60,
               l % 60);
    else
      snprintf(eta, sizeof eta, ", ETA %ld:%02ld", l / 60, l % 60);
  }
  fprintf(stderr, "\r\033[K[%lld/%lld]%s%s", (long long)finished,
          (long long)p->total, rate, eta);
  if (p->failed) fprintf(stderr, ", %lld failed", (long long)p->failed);
  for (int i = 0; i < WEFT__BP_SLOTS; i++)
    if (p->slot[i].job >= 0)
      fprintf(stderr, " | job %lld%s%s", (long long)p->slot[i].job,
              p->slot[i].node[0] ? " " : "", p->slot[i].node);
  fflush(stderr);
  p->line_open = true;
}

void weft__bprog_note(weft__bprog *p, const char *fmt, ...) {
  clear_line(p);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  draw(p);
}

void weft__bprog_batch_start(weft__bprog *p, const char *graph,
                             const weft__batch_shard *sh, int64_t n_jobs) {
  if (p->mode == WEFT__BP_JSON) {
    json_t *o = event(p, "batch_start");
    char shard[64];
    snprintf(shard, sizeof shard, "%lld/%lld", (long long)sh->index,
             (long long)sh->count);
    json_object_set_new(o, "graph", json_string(graph));
    json_object_set_new(o, "jobs", json_integer(n_jobs));
    json_object_set_new(o, "shard", json_string(shard));
    json_object_set_new(o, "shard_source", json_string(sh->source));
    json_object_set_new(o, "shard_jobs", json_integer(p->total));
    emit(o);
  }
}

void weft__bprog_job_skipped(weft__bprog *p, int64_t job, const char *output) {
  p->skipped++;
  if (p->mode == WEFT__BP_JSON) {
    json_t *o = event(p, "job_skipped");
    json_object_set_new(o, "job", json_integer(job));
    json_object_set_new(o, "output", json_string(output));
    emit(o);
  }
}

void weft__bprog_job_start(weft__bprog *p, int64_t job, const char *output,
                           const char *inputs) {
  if (p->t_first < 0) p->t_first = weft__bprog_now();
  for (int i = 0; i < WEFT__BP_SLOTS; i++)
    if (p->slot[i].job < 0) {
      p->slot[i].job = job;
      p->slot[i].node[0] = 0;
      break;
    }
  if (p->mode == WEFT__BP_JSON) {
    json_t *o = event(p, "job_start");
    json_object_set_new(o, "job", json_integer(job));
    json_object_set_new(o, "output", json_string(output));
    json_t *in = weft__batch_inputs_load(inputs);
    json_object_set_new(o, "inputs", in ? in : json_object());
    emit(o);
  }
  draw(p);
}

/* The job left the progress line; later ones move up. */
static void slot_free(weft__bprog *p, int64_t job) {
  for (int i = 0; i < WEFT__BP_SLOTS; i++)
    if (p->slot[i].job == job) {
      memmove(&p->slot[i], &p->slot[i + 1],
              (size_t)(WEFT__BP_SLOTS - i - 1) * sizeof p->slot[0]);
      p->slot[WEFT__BP_SLOTS - 1].job = -1;
      return;
    }
}

void weft__bprog_job_done(weft__bprog *p, int64_t job, const char *output,
                          double ms, int64_t size) {
  p->done++;
  slot_free(p, job);
  if (p->mode == WEFT__BP_JSON) {
    json_t *o = event(p, "job_done");
    json_object_set_new(o, "job", json_integer(job));
    json_object_set_new(o, "output", json_string(output));
    json_object_set_new(o, "ms", json_real(ms));
    json_object_set_new(o, "size", json_integer(size));
    emit(o);
  }
  draw(p);
}

void weft__bprog_job_failed(weft__bprog *p, int64_t job, const char *output,
                            double ms, const char *message) {
  p->failed++;
  slot_free(p, job);
  if (p->mode == WEFT__BP_JSON) {
    json_t *o = event(p, "job_failed");
    json_object_set_new(o, "job", json_integer(job));
    json_object_set_new(o, "output", json_string(output));
    json_object_set_new(o, "ms", json_real(ms));
    json_object_set_new(o, "error", json_string(message));
    emit(o);
  }
  /* a failure is worth a line of its own in every mode */
  weft__bprog_note(p, "weft: job %lld (%s) failed: %s", (long long)job, output,
                   message);
}

static void node_json(weft__bprog *p, const weft_event *ev, int64_t job) {
  json_t *o = event(p, weft_cli_event_name(ev->kind));
  json_object_set_new(o, "job", json_integer(job));
  weft_cli_event_fields(o, ev);
  /* node events keep the runtime's clock: seconds since the run started */
  json_object_set_new(o, "run_t", json_real(ev->t));
  emit(o);
}

void weft__bprog_node_event(weft__bprog *p, const weft_event *ev, int64_t job) {
  if (p->mode == WEFT__BP_JSON) {
    if (p->node_events) node_json(p, ev, job);
    return;
  }
  if (ev->kind == WEFT_EV_LOG && ev->level >= WEFT_LOG_WARN && !p->quiet) {
    weft__bprog_note(p, "job %lld: %s: %s: %s", (long long)job,
                     ev->node_id ? ev->node_id : "weft",
                     weft_cli_level_name(ev->level), ev->message);
    return;
  }
  if (p->mode != WEFT__BP_TTY) return;
  char *node = NULL;
  for (int i = 0; i < WEFT__BP_SLOTS && !node; i++)
    if (p->slot[i].job == job) node = p->slot[i].node;
  if (!node) return;
  if (ev->kind == WEFT_EV_NODE_START)
    snprintf(node, sizeof p->slot[0].node, "%s", ev->node_id);
  else if (ev->kind == WEFT_EV_NODE_PROGRESS && ev->n > 1)
    snprintf(node, sizeof p->slot[0].node, "%s %lld/%lld", ev->node_id,
             (long long)ev->k, (long long)ev->n);
  else
    return;
  draw(p);
}

void weft__bprog_batch_done(weft__bprog *p, bool cancelled) {
  clear_line(p);
  if (p->mode == WEFT__BP_JSON) {
    json_t *o = event(p, "batch_done");
    json_object_set_new(o, "done", json_integer(p->done));
    json_object_set_new(o, "skipped", json_integer(p->skipped));
    json_object_set_new(o, "failed", json_integer(p->failed));
    json_object_set_new(o, "total", json_integer(p->total));
    json_object_set_new(o, "status",
                        json_string(cancelled   ? "cancelled"
                                    : p->failed ? "failed"
                                                : "ok"));
    emit(o);
  }
  fprintf(stderr, "done %lld, skipped %lld, failed %lld (of %lld)\n",
          (long long)p->done, (long long)p->skipped, (long long)p->failed,
          (long long)p->total);
}
