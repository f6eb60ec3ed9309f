/* sched_uv.c - runs a resolved graph on a libuv loop.  The loop thread owns
 * all run state; a node whose inputs are ready goes to the thread pool
 * (uv_queue_work), so independent branches run at the same time.  Worker
 * threads report progress and logs through a queue drained by one
 * uv_async_t (sends coalesce, so the callback drains everything). */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "internal.h"

typedef enum {
  NS_IDLE,     /* not needed this run */
  NS_WAITING,  /* needed, inputs not ready */
  NS_RUNNING,
  NS_DONE,
  NS_CACHED,
  NS_FAILED,
} nstatus;

typedef struct nstate {
  uint64_t key;
  nstatus status;
  bool needrun;
  bool cacheable;
  int waiting;           /* unfinished producers */
  int *consumers;        /* node indices, with repeats for several edges */
  int n_consumers;
  weft_value **outs;     /* [n_outputs] */
  weft_value **ins;      /* [n_inputs] borrowed from producers */
  weft_value **pars;     /* [n_params] owned */
  weft_call call;
  weft__callpriv priv;
  uv_work_t work;
  int rc;
  uint64_t t_start, t_end;
} nstate;

/* events queued by worker threads */
typedef struct qevent {
  weft_event_kind kind;
  int node;
  int64_t k, n;
  weft_log_level level;
  char *message;
} qevent;

struct weft__run {
  weft_ctx *ctx;
  weft_graph *g;
  uv_loop_t loop;
  uv_async_t wake;
  uv_signal_t sigint;
  bool sigint_active;
  uv_mutex_t qlock;
  qevent *q;
  int qn, qcap;
  uint64_t t0;
  nstate *ns;
  int in_flight;
  int status;            /* first failure, or WEFT_ECANCELED */
  bool stopping;
  bool closing;
  int n_need, n_done, n_cached;
  int sigints;
  int *inline_q;         /* inline nodes ready to run (a stack) */
  int inline_n;
  bool inline_busy;
  uv_mutex_t info_lock;  /* run_info's strings, made on first request */
  char *info_inputs, *info_prompt;
};

static double now_s(const weft__run *r) {
  return (double)(uv_hrtime() - r->t0) / 1e9;
}

static void emit(weft__run *r, weft_event *ev) {
  ev->t = now_s(r);
  if (r->ctx->ev_cb) r->ctx->ev_cb(ev, r->ctx->ev_user);
}

static void emit_node(weft__run *r, weft_event_kind kind, int i) {
  weft_event ev = {.kind = kind, .node_id = r->g->nodes[i].id,
                   .op = r->g->nodes[i].rop->def.op};
  emit(r, &ev);
}

/* ---- events from worker threads ------------------------------------------ */

static void enqueue(weft__run *r, const qevent *e) {
  uv_mutex_lock(&r->qlock);
  if (r->qn == r->qcap) {
    int cap = r->qcap ? r->qcap * 2 : 64;
    qevent *nq = realloc(r->q, (size_t)cap * sizeof *nq);
    if (!nq) {
      uv_mutex_unlock(&r->qlock);
      free(e->message);
      return; /* a lost progress event is not worth failing a run */
    }
    r->q = nq;
    r->qcap = cap;
  }
  r->q[r->qn++] = *e;
  uv_mutex_unlock(&r->qlock);
  uv_async_send(&r->wake);
}

void weft__emit_progress(weft_call *call, int64_t k, int64_t n) {
  weft__callpriv *p = call->priv;
  if (!p->run) return; /* create() outside a run */
  qevent e = {.kind = WEFT_EV_NODE_PROGRESS, .node = p->node, .k = k, .n = n};
  enqueue(p->run, &e);
}

void weft__emit_log(weft_call *call, weft_log_level lvl, const char *msg) {
  weft__callpriv *p = call->priv;
  if (!p->run) {
    if (lvl >= WEFT_LOG_WARN) fprintf(stderr, "weft: %s: %s\n", call->node_id, msg);
    return;
  }
  qevent e = {.kind = WEFT_EV_LOG, .node = p->node, .level = lvl,
              .message = strdup(msg)};
  if (e.message) enqueue(p->run, &e);
}

static void maybe_finish(weft__run *r);

/* Delivers the events worker threads queued, in their order. */
static void drain(weft__run *r) {
  uv_mutex_lock(&r->qlock);
  qevent *q = r->q;
  int n = r->qn;
  r->q = NULL;
  r->qn = r->qcap = 0;
  uv_mutex_unlock(&r->qlock);
  for (int i = 0; i < n; i++) {
    weft_event ev = {.kind = q[i].kind, .node_id = r->g->nodes[q[i].node].id,
                     .op = r->g->nodes[q[i].node].rop->def.op, .k = q[i].k,
                     .n = q[i].n, .level = q[i].level,
                     .message = q[i].message};
    emit(r, &ev);
    free(q[i].message);
  }
  free(q);
}

static void on_wake(uv_async_t *h) {
  weft__run *r = h->data;
  drain(r);
  if (atomic_load(&r->ctx->cancelled) && !r->stopping) {
    r->stopping = true;
    if (!r->status) r->status = WEFT_ECANCELED;
  }
  maybe_finish(r);
}

static void on_sigint(uv_signal_t *h, int signum) {
  weft__run *r = h->data;
  if (++r->sigints > 1) {
    /* a second Ctrl-C: the user does not want to wait for nodes in flight */
    uv_signal_stop(h);
    signal(signum, SIG_DFL);
    raise(signum);
    return;
  }
  weft_ctx_cancel(r->ctx);
}

/* ---- run_info ------------------------------------------------------------ */

const char *weft__run_info(weft_call *call, const char *key) {
  weft__callpriv *p = call->priv;
  weft__run *r = p->run;
  if (!r) return NULL;
  if (!strcmp(key, "graph")) return r->g->source;
  if (!strcmp(key, "graph_file")) return r->g->file;
  const char *out = NULL;
  uv_mutex_lock(&r->info_lock);
  if (!strcmp(key, "inputs")) {
    if (!r->info_inputs) r->info_inputs = weft__graph_inputs_json(r->g);
    out = r->info_inputs;
  } else if (!strcmp(key, "prompt")) {
    if (!r->info_prompt) {
      weft_value *const **pv = malloc((size_t)r->g->n_nodes * sizeof *pv);
      if (pv) {
        for (int i = 0; i < r->g->n_nodes; i++) pv[i] = r->ns[i].pars;
        r->info_prompt = weft__graph_comfy_json(r->g, pv);
        free(pv);
      }
    }
    out = r->info_prompt;
  }
  uv_mutex_unlock(&r->info_lock);
  return out;
}

/* ---- node execution ------------------------------------------------------ */

static void dispatch(weft__run *r, int i);

static void work_cb(uv_work_t *w) {
  nstate *s = w->data;
  s->t_start = uv_hrtime();
  s->rc = s->call.def->run(&s->call);
  s->t_end = uv_hrtime();
}

static void fail_node(weft__run *r, int i, int rc, const char *msg) {
  nstate *s = &r->ns[i];
  weft__gnode *n = &r->g->nodes[i];
  s->status = NS_FAILED;
  if (rc == WEFT_ECANCELED && !r->status) {
    r->status = WEFT_ECANCELED;
  } else if (!r->status || r->status == WEFT_ECANCELED) {
    r->status = rc;
    weft__err(r->ctx, rc, NULL, "node '%s' (%s) failed: %s", n->id,
              n->rop->def.op, msg && *msg ? msg : weft_strerror(rc));
  }
  r->stopping = true;
  weft_event ev = {.kind = WEFT_EV_NODE_FAILED, .node_id = n->id,
                   .op = n->rop->def.op, .status = rc,
                   .message = msg && *msg ? msg : weft_strerror(rc)};
  emit(r, &ev);
}

/* Checks what run() stored: one value per output, of the declared type. */
static int check_outputs(nstate *s, const weft__op *op, char *msg,
                         size_t len) {
  for (int k = 0; k < op->def.n_outputs; k++) {
    weft_value *v = s->outs[k];
    const weft_port_def *p = &op->outputs[k];
    if (!v) {
      snprintf(msg, len, "plugin bug: run() returned 0 but set no value for "
                         "output '%s'", p->name);
      return WEFT_EINTERNAL;
    }
    bool ok = v->type == p->type ||
              (p->type == WEFT_TYPE_TENSOR && v->kind == WEFT__V_TENSOR) ||
              (p->type == WEFT_TYPE_STRING && v->type == WEFT_TYPE_ENUM);
    if (ok && p->type == WEFT_TYPE_CUSTOM)
      ok = v->type_name && strcmp(v->type_name, p->type_name) == 0;
    if (!ok) {
      snprintf(msg, len, "plugin bug: output '%s' should be %s, got %s",
               p->name, weft__type_name(p->type, p->type_name),
               weft__type_name(v->type, v->type_name));
      return WEFT_EINTERNAL;
    }
  }
  return 0;
}

static void after_work_cb(uv_work_t *w, int status) {
  nstate *s = w->data;
  weft__run *r = s->priv.run;
  int i = (int)(s - r->ns);
  const weft__op *op = r->g->nodes[i].rop;
  r->in_flight--;
  drain(r); /* the node's progress and logs come before its end */
  int rc = status == UV_ECANCELED ? WEFT_ECANCELED : s->rc;
  char msg[WEFT__ERRLEN];
  snprintf(msg, sizeof msg, "%s", s->priv.err);
  if (rc == 0) rc = check_outputs(s, op, msg, sizeof msg);
  if (rc != 0) {
    fail_node(r, i, rc, msg);
    maybe_finish(r);
    return;
  }
  s->status = NS_DONE;
  r->n_done++;
  if (s->cacheable) weft__cache_put(&r->ctx->cache, s->key, s->outs,
                                    op->def.n_outputs);
  weft_event ev = {.kind = WEFT_EV_NODE_DONE, .node_id = r->g->nodes[i].id,
                   .op = op->def.op,
                   .ms = (double)(s->t_end - s->t_start) / 1e6};
  emit(r, &ev);
  if (atomic_load(&r->ctx->cancelled) && !r->stopping) {
    r->stopping = true;
    if (!r->status) r->status = WEFT_ECANCELED;
  }
  for (int c = 0; c < s->n_consumers; c++) {
    nstate *cs = &r->ns[s->consumers[c]];
    if (cs->status == NS_WAITING && --cs->waiting == 0 && !r->stopping)
      dispatch(r, s->consumers[c]);
  }
  maybe_finish(r);
}

static weft_value *param_value(weft__run *r, const weft__gnode *n, int j) {
  const weft__bind *b = &n->params[j];
  const weft_param_def *p = &n->rop->params[j];
  switch (b->kind) {
  case WEFT__B_NONE:
  case WEFT__B_CONST: weft__value_retain(b->value); return b->value;
  case WEFT__B_INPUT:
    return weft__scalar_convert(r->g->inputs[b->input].value, p);
  case WEFT__B_NODE:
    return weft__scalar_convert(r->ns[b->node].outs[b->port], p);
  }
  return NULL;
}

static void dispatch(weft__run *r, int i) {
  nstate *s = &r->ns[i];
  weft__gnode *n = &r->g->nodes[i];
  const weft_node_def *d = &n->rop->def;
  for (int j = 0; j < d->n_inputs; j++) {
    const weft__bind *b = &n->inputs[j];
    s->ins[j] = b->kind == WEFT__B_NODE ? r->ns[b->node].outs[b->port] : NULL;
  }
  for (int j = 0; j < d->n_params; j++) {
    if (n->params[j].kind != WEFT__B_NODE) continue; /* set in prepare */
    weft__value_release(s->pars[j]);
    if (!(s->pars[j] = param_value(r, n, j))) {
      fail_node(r, i, WEFT_ETYPE, "an upstream value does not fit the param");
      return;
    }
  }
  s->status = NS_RUNNING;
  s->priv.err[0] = 0;
  r->in_flight++;
  emit_node(r, WEFT_EV_NODE_START, i);
  s->work.data = s;
  if (d->flags & WEFT_NODE_INLINE) {
    /* run here; a chain of inline nodes is drained iteratively, not by
     * recursion through after_work_cb */
    r->inline_q[r->inline_n++] = i;
    if (r->inline_busy) return;
    r->inline_busy = true;
    while (r->inline_n > 0) {
      nstate *is = &r->ns[r->inline_q[--r->inline_n]];
      work_cb(&is->work);
      after_work_cb(&is->work, 0);
    }
    r->inline_busy = false;
    return;
  }
  int rc = uv_queue_work(&r->loop, &s->work, work_cb, after_work_cb);
  if (rc) {
    r->in_flight--;
    fail_node(r, i, WEFT_EINTERNAL, uv_strerror(rc));
  }
}

static void on_closed(uv_handle_t *h) { (void)h; }

static void maybe_finish(weft__run *r) {
  if (r->closing || r->in_flight > 0) return;
  bool all = r->n_done + r->n_cached >= r->n_need;
  if (!all && !r->stopping) return;
  r->closing = true;
  uv_mutex_lock(&r->ctx->lock);
  r->ctx->wake = NULL;
  uv_mutex_unlock(&r->ctx->lock);
  uv_close((uv_handle_t *)&r->wake, on_closed);
  if (r->sigint_active) uv_close((uv_handle_t *)&r->sigint, on_closed);
}

/* ---- preparation --------------------------------------------------------- */

static void call_init(weft__run *r, int i, nstate *s) {
  weft__gnode *n = &r->g->nodes[i];
  s->priv.ctx = r->ctx;
  s->priv.run = r;
  s->priv.node = i;
  s->call.struct_size = sizeof s->call;
  s->call.host = &weft__host;
  s->call.def = &n->rop->def;
  s->call.node_id = n->id;
  s->call.inputs = s->ins;
  s->call.params = s->pars;
  s->call.outputs = s->outs;
  s->call.device = WEFT_DEVICE_CPU;
  s->call.priv = &s->priv;
}

/* Node instances are created lazily, on their first run, with the params
 * known then (inputs are not available to create). */
static int create_node(weft__run *r, int i) {
  weft__gnode *n = &r->g->nodes[i];
  nstate *s = &r->ns[i];
  if (n->created || !n->rop->def.create) return 0;
  s->call.inputs = NULL;
  s->priv.err[0] = 0;
  int rc = n->rop->def.create(&s->call, &n->state);
  s->call.inputs = s->ins;
  if (rc)
    return weft__err(r->ctx, rc, &n->loc, "node '%s' (%s): %s", n->id,
                     n->rop->def.op,
                     s->priv.err[0] ? s->priv.err : weft_strerror(rc));
  n->created = true;
  return 0;
}

static uint64_t node_key(weft__run *r, int i) {
  weft__gnode *n = &r->g->nodes[i];
  nstate *s = &r->ns[i];
  const weft_node_def *d = &n->rop->def;
  uint64_t h = XXH64(d->op, strlen(d->op), 0x77656674);
  for (int j = 0; j < d->n_params; j++) {
    const weft__bind *b = &n->params[j];
    if (b->kind == WEFT__B_NODE) {
      uint64_t pk[2] = {r->ns[b->node].key, (uint64_t)b->port};
      h = XXH64(pk, sizeof pk, h);
    } else {
      h = weft__value_hash(s->pars[j], h);
    }
  }
  for (int j = 0; j < d->n_inputs; j++) {
    const weft__bind *b = &n->inputs[j];
    uint64_t pk[2] = {b->kind == WEFT__B_NODE ? r->ns[b->node].key : 0,
                      b->kind == WEFT__B_NODE ? (uint64_t)b->port : ~0ull};
    h = XXH64(pk, sizeof pk, h);
  }
  if (d->fingerprint) {
    s->priv.err[0] = 0;
    s->call.state = n->state;
    uint64_t f = d->fingerprint(&s->call);
    h = XXH64(&f, sizeof f, h);
  }
  return h;
}

static int prepare(weft__run *r) {
  weft_graph *g = r->g;
  int rc;
  for (int k = 0; k < g->n_inputs; k++)
    if (!g->inputs[k].value)
      return weft__err(r->ctx, WEFT_EMISSING, &g->inputs[k].loc,
                       "graph input '%s' has no default: set it with --set "
                       "%s=...",
                       g->inputs[k].name, g->inputs[k].name);
  for (int i = 0; i < g->n_nodes; i++) {
    weft__gnode *n = &g->nodes[i];
    nstate *s = &r->ns[i];
    const weft_node_def *d = &n->rop->def;
    s->outs = calloc((size_t)d->n_outputs + 1, sizeof *s->outs);
    s->ins = calloc((size_t)d->n_inputs + 1, sizeof *s->ins);
    s->pars = calloc((size_t)d->n_params + 1, sizeof *s->pars);
    if (!s->outs || !s->ins || !s->pars) return WEFT_ENOMEM;
    call_init(r, i, s);
    for (int j = 0; j < d->n_params; j++) {
      if (n->params[j].kind == WEFT__B_NODE) continue;
      if (!(s->pars[j] = param_value(r, n, j))) {
        const weft__bind *b = &n->params[j];
        weft__ginput *in = &g->inputs[b->input];
        char val[256];
        weft__value_format(in->value, val, sizeof val);
        weft__err(r->ctx, WEFT_ERANGE, &b->loc,
                  "node '%s' param '%s': input '%s' = '%s' is not one of the "
                  "param's choices",
                  n->id, n->rop->params[j].name, in->name, val);
        const char *const *ch = n->rop->params[j].choices;
        int nc = 0;
        while (ch && ch[nc]) nc++;
        weft__err_suggest(r->ctx, val, ch, nc);
        return WEFT_ERANGE;
      }
    }
    /* consumers, for readiness propagation */
    for (int j = 0; j < d->n_inputs + d->n_params; j++) {
      const weft__bind *b =
          j < d->n_inputs ? &n->inputs[j] : &n->params[j - d->n_inputs];
      if (b->kind != WEFT__B_NODE) continue;
      nstate *ps = &r->ns[b->node];
      int *nc = realloc(ps->consumers,
                        (size_t)(ps->n_consumers + 1) * sizeof *nc);
      if (!nc) return WEFT_ENOMEM;
      ps->consumers = nc;
      nc[ps->n_consumers++] = i;
    }
  }
  /* keys and cache hits, producers first */
  for (int k = 0; k < g->n_nodes; k++) {
    int i = g->order[k];
    weft__gnode *n = &g->nodes[i];
    nstate *s = &r->ns[i];
    if ((rc = create_node(r, i))) return rc;
    s->call.state = n->state;
    s->key = node_key(r, i);
    uint32_t fl = n->rop->def.flags;
    s->cacheable = !(fl & (WEFT_NODE_OUTPUT | WEFT_NODE_NO_CACHE));
    weft__centry *e = weft__cache_get(&r->ctx->cache, s->key);
    if (s->cacheable && e && e->n_outs == n->rop->def.n_outputs) {
      s->status = NS_CACHED;
      for (int j = 0; j < e->n_outs; j++) {
        weft__value_retain(e->outs[j]);
        s->outs[j] = e->outs[j];
      }
    }
  }
  /* which nodes must run: every uncached sink and output node, and every
   * uncached producer of a node that runs; consumers first */
  for (int k = g->n_nodes - 1; k >= 0; k--) {
    int i = g->order[k];
    nstate *s = &r->ns[i];
    bool need = (g->nodes[i].rop->def.flags & WEFT_NODE_OUTPUT) ||
                s->n_consumers == 0;
    for (int c = 0; c < s->n_consumers && !need; c++)
      need = r->ns[s->consumers[c]].needrun;
    for (int o = 0; o < g->n_outputs && !need; o++)
      need = g->outputs[o].ref.node == i;
    s->needrun = need && s->status != NS_CACHED;
  }
  for (int k = 0; k < g->n_nodes; k++) {
    int i = g->order[k];
    nstate *s = &r->ns[i];
    if (s->status == NS_CACHED) {
      /* report only the cached nodes whose outputs this run reads */
      bool used = s->n_consumers == 0;
      for (int c = 0; c < s->n_consumers && !used; c++)
        used = r->ns[s->consumers[c]].needrun;
      if (used) {
        r->n_cached++;
        emit_node(r, WEFT_EV_NODE_CACHED, i);
      }
      continue;
    }
    if (!s->needrun) continue;
    r->n_need++;
    s->status = NS_WAITING;
    weft__gnode *n = &g->nodes[i];
    const weft_node_def *d = &n->rop->def;
    for (int j = 0; j < d->n_inputs + d->n_params; j++) {
      const weft__bind *b =
          j < d->n_inputs ? &n->inputs[j] : &n->params[j - d->n_inputs];
      if (b->kind == WEFT__B_NODE && r->ns[b->node].status != NS_CACHED)
        s->waiting++;
    }
  }
  r->n_need += r->n_cached;
  return 0;
}

static void run_free(weft__run *r) {
  if (!r->ns) return;
  for (int i = 0; i < r->g->n_nodes; i++) {
    nstate *s = &r->ns[i];
    const weft_node_def *d = &r->g->nodes[i].rop->def;
    for (int j = 0; s->outs && j < d->n_outputs; j++)
      weft__value_release(s->outs[j]);
    for (int j = 0; s->pars && j < d->n_params; j++)
      weft__value_release(s->pars[j]);
    free(s->outs);
    free(s->ins);
    free(s->pars);
    free(s->consumers);
  }
  free(r->ns);
  free(r->inline_q);
  free(r->info_inputs);
  free(r->info_prompt);
  for (int i = 0; i < r->qn; i++) free(r->q[i].message);
  free(r->q);
}

int weft_graph_run(weft_ctx *ctx, weft_graph *g) {
  ctx->err[0] = 0;
  atomic_store(&ctx->cancelled, 0);
  weft__run run;
  memset(&run, 0, sizeof run);
  weft__run *r = &run;
  r->ctx = ctx;
  r->g = g;
  r->t0 = uv_hrtime();
  if (g->out_values) {
    for (int i = 0; i < g->n_outputs; i++)
      weft__value_release(g->out_values[i]);
    free(g->out_values);
    g->out_values = NULL;
  }
  r->ns = calloc((size_t)g->n_nodes, sizeof *r->ns);
  r->inline_q = malloc((size_t)g->n_nodes * sizeof *r->inline_q);
  if (!r->ns || !r->inline_q) {
    free(r->ns);
    free(r->inline_q);
    return WEFT_ENOMEM;
  }
  uv_mutex_init(&r->info_lock);
  weft_event start = {.kind = WEFT_EV_RUN_START, .n_total = g->n_nodes};
  emit(r, &start);
  int rc = prepare(r);
  if (rc) {
    run_free(r);
    uv_mutex_destroy(&r->info_lock);
    return rc;
  }
  if ((rc = uv_loop_init(&r->loop))) {
    run_free(r);
    uv_mutex_destroy(&r->info_lock);
    return weft__err(ctx, WEFT_EINTERNAL, NULL, "uv_loop_init: %s",
                     uv_strerror(rc));
  }
  uv_mutex_init(&r->qlock);
  uv_async_init(&r->loop, &r->wake, on_wake);
  r->wake.data = r;
  if (ctx->handle_sigint) {
    uv_signal_init(&r->loop, &r->sigint);
    r->sigint.data = r;
    r->sigint_active = uv_signal_start(&r->sigint, on_sigint, SIGINT) == 0;
    if (!r->sigint_active) uv_close((uv_handle_t *)&r->sigint, NULL);
  }
  uv_mutex_lock(&ctx->lock);
  ctx->wake = &r->wake;
  uv_mutex_unlock(&ctx->lock);
  for (int k = 0; k < g->n_nodes && !r->stopping; k++) {
    int i = g->order[k];
    if (r->ns[i].status == NS_WAITING && r->ns[i].waiting == 0) dispatch(r, i);
  }
  maybe_finish(r);
  uv_run(&r->loop, UV_RUN_DEFAULT);
  uv_loop_close(&r->loop);
  uv_mutex_destroy(&r->qlock);
  rc = r->status;
  if (!rc && atomic_load(&ctx->cancelled)) rc = WEFT_ECANCELED;
  if (rc == WEFT_ECANCELED && !ctx->err[0])
    weft__err(ctx, rc, NULL, "run cancelled");
  if (!rc && g->n_outputs) {
    g->out_values = calloc((size_t)g->n_outputs, sizeof *g->out_values);
    for (int o = 0; g->out_values && o < g->n_outputs; o++) {
      const weft__bind *b = &g->outputs[o].ref;
      g->out_values[o] = r->ns[b->node].outs[b->port];
      weft__value_retain(g->out_values[o]);
    }
  }
  weft__cache_trim(&ctx->cache);
  weft_event done = {.kind = WEFT_EV_RUN_DONE, .status = rc,
                     .n_done = r->n_done, .n_cached = r->n_cached,
                     .n_total = r->n_need};
  emit(r, &done);
  run_free(r);
  uv_mutex_destroy(&r->info_lock);
  return rc;
}

void weft_ctx_set_handle_sigint(weft_ctx *ctx, int on) {
  ctx->handle_sigint = on;
}

int weft_graph_output_count(const weft_graph *g) { return g->n_outputs; }

const char *weft_graph_output_name(const weft_graph *g, int i) {
  return i >= 0 && i < g->n_outputs ? g->outputs[i].name : NULL;
}

int weft_graph_output_format(const weft_graph *g, int i, char *buf,
                             size_t len) {
  if (i < 0 || i >= g->n_outputs || !g->out_values) return WEFT_EINVAL;
  weft__value_format(g->out_values[i], buf, len);
  return 0;
}
