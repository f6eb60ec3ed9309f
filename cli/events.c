/* events.c - renders run events: a progress line on a terminal, JSON lines
 * for tools (--events=json), or nothing. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"

typedef enum { EV_NONE, EV_TTY, EV_JSON } ev_mode;

struct weft_cli_events {
  ev_mode mode;
  bool quiet;
  int running, done, cached, total;
  bool line_open; /* a progress line is on screen */
};

weft_cli_events *weft_cli_events_new(const char *mode, bool quiet) {
  weft_cli_events *e = calloc(1, sizeof *e);
  if (!e) return NULL;
  e->quiet = quiet;
  if (!mode || !strcmp(mode, "auto"))
    e->mode = isatty(STDERR_FILENO) && !quiet ? EV_TTY : EV_NONE;
  else if (!strcmp(mode, "tty"))
    e->mode = EV_TTY;
  else if (!strcmp(mode, "json"))
    e->mode = EV_JSON;
  else if (!strcmp(mode, "none"))
    e->mode = EV_NONE;
  else {
    free(e);
    return NULL;
  }
  return e;
}

void weft_cli_events_free(weft_cli_events *e) {
  if (e && e->line_open) fputc('\n', stderr);
  free(e);
}

bool weft_cli_events_json(const weft_cli_events *e) {
  return e->mode == EV_JSON;
}

const char *weft_cli_event_name(weft_event_kind k) {
  switch (k) {
  case WEFT_EV_RUN_START: return "run_start";
  case WEFT_EV_NODE_START: return "node_start";
  case WEFT_EV_NODE_PROGRESS: return "progress";
  case WEFT_EV_NODE_DONE: return "node_done";
  case WEFT_EV_NODE_CACHED: return "node_cached";
  case WEFT_EV_NODE_FAILED: return "node_failed";
  case WEFT_EV_LOG: return "log";
  case WEFT_EV_RUN_DONE: return "run_done";
  }
  return "?";
}

const char *weft_cli_level_name(weft_log_level l) {
  static const char *const n[] = {"debug", "info", "warn", "error"};
  return (unsigned)l < 4 ? n[l] : "?";
}

void weft_cli_event_fields(json_t *o, const weft_event *ev) {
  if (ev->node_id) {
    json_object_set_new(o, "node", json_string(ev->node_id));
    json_object_set_new(o, "op", json_string(ev->op));
  }
  switch (ev->kind) {
  case WEFT_EV_NODE_PROGRESS:
    json_object_set_new(o, "k", json_integer(ev->k));
    json_object_set_new(o, "n", json_integer(ev->n));
    break;
  case WEFT_EV_NODE_DONE:
    json_object_set_new(o, "ms", json_real(ev->ms));
    break;
  case WEFT_EV_NODE_FAILED:
    json_object_set_new(o, "error", json_string(weft_err_name(ev->status)));
    json_object_set_new(o, "message", json_string(ev->message));
    break;
  case WEFT_EV_LOG:
    json_object_set_new(o, "level",
                        json_string(weft_cli_level_name(ev->level)));
    json_object_set_new(o, "message", json_string(ev->message));
    break;
  case WEFT_EV_RUN_START:
    json_object_set_new(o, "nodes", json_integer(ev->n_total));
    break;
  case WEFT_EV_RUN_DONE:
    json_object_set_new(o, "status", json_string(weft_err_name(ev->status)));
    json_object_set_new(o, "done", json_integer(ev->n_done));
    json_object_set_new(o, "cached", json_integer(ev->n_cached));
    json_object_set_new(o, "total", json_integer(ev->n_total));
    break;
  default: break;
  }
}

static void put_json(const weft_event *ev) {
  json_t *o = json_object();
  json_object_set_new(o, "event", json_string(weft_cli_event_name(ev->kind)));
  json_object_set_new(o, "t", json_real(ev->t));
  weft_cli_event_fields(o, ev);
  char *s =
      json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(9));
  if (s) {
    puts(s);
    fflush(stdout);
    free(s);
  }
  json_decref(o);
}

static void put_tty(weft_cli_events *e, const weft_event *ev) {
  switch (ev->kind) {
  case WEFT_EV_NODE_START: e->running++; break;
  case WEFT_EV_NODE_DONE: e->running--, e->done++; break;
  case WEFT_EV_NODE_CACHED: e->cached++; break;
  case WEFT_EV_NODE_FAILED: e->running--; break;
  case WEFT_EV_RUN_DONE:
    if (e->line_open) fputs("\r\033[K", stderr);
    e->line_open = false;
    if (!ev->status)
      fprintf(stderr, "done: %d node%s run, %d cached, %.2f s\n", ev->n_done,
              ev->n_done == 1 ? "" : "s", ev->n_cached, ev->t);
    return;
  case WEFT_EV_LOG:
    if (ev->level < WEFT_LOG_INFO) return;
    if (e->line_open) fputs("\r\033[K", stderr);
    e->line_open = false;
    fprintf(stderr, "%s: %s: %s\n", ev->node_id, weft_cli_level_name(ev->level),
            ev->message);
    return;
  case WEFT_EV_RUN_START: e->total = ev->n_total; return;
  case WEFT_EV_NODE_PROGRESS: break;
  }
  if (!ev->node_id) return;
  fprintf(stderr, "\r\033[K[%d/%d] %s (%s)", e->done + e->cached, e->total,
          ev->node_id, ev->op);
  if (ev->kind == WEFT_EV_NODE_PROGRESS)
    fprintf(stderr, " %lld/%lld", (long long)ev->k, (long long)ev->n);
  else if (ev->kind == WEFT_EV_NODE_DONE)
    fprintf(stderr, " done in %.1f ms", ev->ms);
  else if (ev->kind == WEFT_EV_NODE_CACHED)
    fprintf(stderr, " cached");
  fprintf(stderr, "  %.1fs", ev->t);
  e->line_open = true;
}

void weft_cli_events_cb(const weft_event *ev, void *user) {
  weft_cli_events *e = user;
  switch (e->mode) {
  case EV_JSON: put_json(ev); break;
  case EV_TTY: put_tty(e, ev); break;
  case EV_NONE:
    if (ev->kind == WEFT_EV_LOG && ev->level >= WEFT_LOG_WARN && !e->quiet)
      fprintf(stderr, "%s: %s: %s\n", ev->node_id,
              weft_cli_level_name(ev->level), ev->message);
    break;
  }
}
