/* sched_uv.c - runs a resolved graph on a libuv loop, several runs of it at
 * once (weft_runq; weft_graph_run is a queue of one run).  The loop thread
 * owns all run state; a node whose inputs are ready goes to the thread pool
 * (uv_queue_work), so independent branches, and the nodes of different
 * runs, run at the same time.  Worker threads report progress and logs
 * through a queue drained by one uv_async_t (sends coalesce, so the
 * callback drains everything).
 *
 * Runs share the ctx's output cache.  A node whose key an earlier run in
 * flight is still computing (its "leader") follows it: it waits for the
 * leader's outputs instead of computing them again, and does not demand its
 * own producers.  When the leader cannot deliver (it failed, or its run
 * stopped before it ran), the first follower is activated - it and its
 * producers run as usual - and leads the rest.  Follow edges always point
 * to earlier runs, so they never form a cycle.
 *
 * Worker-side continuation: a chain of pool nodes would cost two thread
 * wake-ups per node (loop -> worker -> loop).  Instead, a worker that
 * finishes a node whose run goes on, and that makes a pool node ready,
 * finishes the node itself and runs that consumer next, without going
 * through the loop.  Everything it touches (the run's node states and
 * counters, plugin instances' busy flags, the hand-back list) is under the
 * queue's scheduler lock, which the loop thread holds whenever it is not
 * waiting in uv_run.  Cross-run state (the output cache, shares of keys in
 * flight) and all else (other ready consumers, failures, cancellation,
 * deferred instances, the run's end) stay with the loop: the worker hands
 * back a node's publication (cache, followers) and the other ready
 * consumers through q->back, and its node_done / node_start events through
 * the event queue, so the event callback still runs only on the loop
 * thread, in the order the scheduler made the state changes.
 * WEFT_SCHED_NO_CONTINUE=1 in the environment turns continuation off (for
 * comparisons).
 *
 * Deferred completion (ABI 1.3): a node whose run() called host->defer and
 * returned WEFT_PENDING leaves its worker at once (no continuation from
 * it) and stays in flight until host->complete, from any thread, puts it
 * on a locked queue and wakes the loop; the loop ends it as any other
 * node once both its run() returned and its complete was taken. */
#include <inttypes.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "internal.h"

typedef enum {
  NS_IDLE,    /* not needed by this run */
  NS_WAITING, /* needed, inputs not ready */
  NS_RUNNING,
  NS_DONE,
  NS_CACHED, /* outputs from the cache, or from a leader */
  NS_FAILED,
  NS_FOLLOW,   /* waits for the same key in an earlier run */
  NS_DEFERRED, /* ready; its plugin instance is busy in another run */
} nstatus;

typedef struct nstate {
  uint64_t key;
  nstatus status;
  bool cacheable;
  bool leads;        /* owns the share of its key */
  bool read;         /* CACHED and read by a needed node */
  bool reported;     /* its `cached` event was sent */
  int waiting;       /* unfinished producers (per edge) */
  weft_value **outs; /* [n_outputs] */
  weft_value **ins;  /* [n_inputs] borrowed from producers */
  weft_value **xin;  /* [n_inputs] owned: inputs moved to the node's device
                        (ABI 1.4), made on first need, dropped at its end */
  weft_value **pars; /* [n_params] owned */
  weft_call call;
  uv_work_t work;
  int rc;
  uint64_t t_start, t_end;
  bool returned;  /* deferred: its run() returned, complete not yet taken */
  bool completed; /* deferred: complete taken, run() not yet returned */
  weft__callpriv priv; /* last: ns_alloc leaves its message buffer as is */
} nstate;

/* n zeroed node states, but for the 4 KiB message buffers past their first
 * byte: zeroing those cost about a microsecond per node per run. */
static nstate *ns_alloc(int n) {
  nstate *ns = malloc((size_t)(n + 1) * sizeof *ns);
  for (int i = 0; ns && i <= n; i++) {
    memset(&ns[i], 0, offsetof(nstate, priv) + offsetof(weft__callpriv, err));
    ns[i].priv.err[0] = 0;
  }
  return ns;
}

/* events queued by worker threads */
typedef struct qevent {
  weft__run *run;
  weft_event_kind kind;
  int node;
  int64_t k, n;
  weft_log_level level;
  char *message;
  double ms;   /* NODE_DONE */
  uint64_t hr; /* when it happened (uv_hrtime) */
} qevent;

typedef struct nref {
  weft__run *run;
  int node;
} nref;

/* What a worker hands back to the loop; each holds one of its run's
 * in_flight counts until the loop takes it. */
typedef enum {
  BACK_PUBLISH,  /* node finished on a worker: cache it, resolve followers */
  BACK_DISPATCH, /* node made ready on a worker: dispatch it */
} back_kind;

typedef struct backref {
  weft__run *run;
  int node;
  back_kind kind;
} backref;

/* A key some run in flight computes, and the nodes of later runs that wait
 * for it. */
typedef struct share {
  uint64_t key;
  nref leader;
  nref *fol;
  int n_fol, cap_fol;
} share;

struct weft_run {
  weft_runq *q;
  weft_ctx *ctx;
  weft_graph *g;
  weft_graph view;      /* *g with this run's inputs (for graph_meta.c) */
  weft__ginput *inputs; /* view.inputs: g's, each value retained */
  uint64_t id, gen;
  weft_run_done_cb done;
  void *user;
  char *output_dir, *input_dir;
  uint64_t t0;
  nstate *ns;
  int in_flight;
  int status;    /* first failure, or WEFT_ECANCELED */
  bool stopping; /* nothing new starts */
  bool finished; /* nothing in flight, nothing more to do */
  int n_need, n_done, n_cached;
  char err[WEFT__ERRLEN];
  uv_mutex_t info_lock; /* run_info's strings, made on first request */
  char *info_inputs, *info_prompt;
  weft__run *next; /* submission order */
};

struct weft_runq {
  weft_ctx *ctx;
  weft_graph *g;
  int window;
  uv_loop_t loop;
  uv_async_t wake;
  uv_signal_t sigint;
  bool sigint_active;
  int sigints;
  uv_mutex_t qlock;
  qevent *q;
  int qn, qcap;
  qevent *qspare; /* drain's other buffer (loop thread) */
  int qspare_cap;
  weft__run *head, *tail; /* submitted, not yet delivered */
  int n_runs;
  uint64_t next_id;
  int *cons_off, *cons; /* consumers of i: cons[cons_off[i]..[i+1]), with
                           repeats for several edges */
  int n_edges;
  nref *inl; /* inline nodes ready to run (a stack) */
  int inl_n, inl_cap;
  bool inl_busy;
  share **smap; /* open addressing by key; NULL = empty */
  int smap_cap, smap_n;
  bool *busy; /* plugin instances (create) in flight */
  nref *deferred;
  int n_def, cap_def;
  bool entered; /* inside submit/wait/drain */
  /* worker-side continuation (see the top of the file) */
  uv_mutex_t lock; /* the scheduler lock: run state, busy, deferred, back */
  bool cont;       /* continuation enabled */
  backref *back;   /* handed back by workers, in order */
  int back_n, back_cap;
  backref *spare; /* flush_back's other buffer */
  int spare_cap;
  uint64_t n_continued; /* nodes started on a worker without the loop */
  uint64_t last_hr;     /* time of the last event delivered (loop thread) */
  /* deferred nodes' completions, from any thread (under qlock) */
  weft__callpriv *done_head, *done_tail;
};

static bool go(const weft__run *r) {
  return !r->stopping && !atomic_load(&r->ctx->cancelled);
}

/* hr: when it happened; never before an event already delivered (a worker
 * may take its time before it queues), so times never go back. */
static void emit_at(weft__run *r, weft_event *ev, uint64_t hr) {
  if (hr < r->q->last_hr) hr = r->q->last_hr;
  r->q->last_hr = hr;
  ev->t = hr > r->t0 ? (double)(hr - r->t0) / 1e9 : 0;
  ev->run_id = r->id;
  ev->run_user = r->user;
  if (r->ctx->ev_cb) r->ctx->ev_cb(ev, r->ctx->ev_user);
}

static void drain(weft_runq *q);

/* Loop thread only: events workers queued go first, so the callback sees
 * events in the order the scheduler made its state changes. */
static void emit(weft__run *r, weft_event *ev) {
  drain(r->q);
  emit_at(r, ev, uv_hrtime());
}

static void emit_node(weft__run *r, weft_event_kind kind, int i) {
  weft_event ev = {.kind = kind,
                   .node_id = r->g->nodes[i].id,
                   .op = r->g->nodes[i].rop->def.op};
  emit(r, &ev);
}

static const weft__bind *bind_at(const weft__gnode *n, int j) {
  int ni = n->rop->def.n_inputs;
  return j < ni ? &n->inputs[j] : &n->params[j - ni];
}

static int n_binds(const weft__gnode *n) {
  return n->rop->def.n_inputs + n->rop->def.n_params;
}

static int push_ref(nref **a, int *n, int *cap, weft__run *r, int i) {
  if (*n == *cap) {
    int c = *cap ? *cap * 2 : 8;
    nref *na = realloc(*a, (size_t)c * sizeof *na);
    if (!na) return WEFT_ENOMEM;
    *a = na;
    *cap = c;
  }
  (*a)[(*n)++] = (nref){r, i};
  return 0;
}

/* ---- events from worker threads ------------------------------------------ */

/* Queues an event for the loop; wake: send the loop's wake-up now (a
 * worker continuing a chain sends one per node, not per event). */
static void enqueue(weft_runq *q, const qevent *e, bool wake) {
  uv_mutex_lock(&q->qlock);
  if (q->qn == q->qcap) {
    int cap = q->qcap ? q->qcap * 2 : 64;
    qevent *nq = realloc(q->q, (size_t)cap * sizeof *nq);
    if (!nq) {
      uv_mutex_unlock(&q->qlock);
      free(e->message);
      return; /* a lost progress event is not worth failing a run */
    }
    q->q = nq;
    q->qcap = cap;
  }
  q->q[q->qn++] = *e;
  uv_mutex_unlock(&q->qlock);
  if (wake) uv_async_send(&q->wake);
}

void weft__emit_progress(weft_call *call, int64_t k, int64_t n) {
  weft__callpriv *p = call->priv;
  if (!p->run) return; /* create() outside a run */
  qevent e = {.run = p->run,
              .kind = WEFT_EV_NODE_PROGRESS,
              .node = p->node,
              .k = k,
              .n = n,
              .hr = uv_hrtime()};
  enqueue(p->run->q, &e, true);
}

void weft__emit_log(weft_call *call, weft_log_level lvl, const char *msg) {
  weft__callpriv *p = call->priv;
  if (!p->run) {
    if (lvl >= WEFT_LOG_WARN)
      fprintf(stderr, "weft: %s: %s\n", call->node_id, msg);
    return;
  }
  qevent e = {.run = p->run,
              .kind = WEFT_EV_LOG,
              .node = p->node,
              .level = lvl,
              .message = strdup(msg),
              .hr = uv_hrtime()};
  if (e.message) enqueue(p->run->q, &e, true);
}

/* Delivers the events worker threads queued, in their order (loop thread
 * only).  Every run named there is alive: a run ends only
 * after its nodes returned, and after_work_cb drains before it counts a
 * node as returned. */
static void drain(weft_runq *q) {
  uv_mutex_lock(&q->qlock);
  qevent *ev = q->q;
  int n = q->qn, cap = q->qcap;
  if (n == 0) {
    uv_mutex_unlock(&q->qlock);
    return;
  }
  q->q = q->qspare; /* two buffers, swapped: no allocation per drain */
  q->qcap = q->qspare_cap;
  q->qn = 0;
  q->qspare = NULL;
  q->qspare_cap = 0;
  uv_mutex_unlock(&q->qlock);
  for (int i = 0; i < n; i++) {
    weft__run *r = ev[i].run;
    weft_event e = {.kind = ev[i].kind,
                    .node_id = r->g->nodes[ev[i].node].id,
                    .op = r->g->nodes[ev[i].node].rop->def.op,
                    .k = ev[i].k,
                    .n = ev[i].n,
                    .level = ev[i].level,
                    .message = ev[i].message,
                    .ms = ev[i].ms};
    emit_at(r, &e, ev[i].hr);
    free(ev[i].message);
  }
  free(q->qspare); /* NULL: drain does not nest (callbacks cannot reenter) */
  q->qspare = ev;
  q->qspare_cap = cap;
}

static void maybe_finish(weft__run *r);
static void run_stop(weft__run *r);

/* Stops every run once the ctx was cancelled. */
static void check_cancel(weft_runq *q) {
  if (!atomic_load(&q->ctx->cancelled)) return;
  for (weft__run *r = q->head; r; r = r->next) {
    if (r->finished) continue;
    if (!r->stopping) {
      if (!r->status) r->status = WEFT_ECANCELED;
      run_stop(r);
    }
    maybe_finish(r);
  }
}

static void flush_back(weft_runq *q);
static void take_completions(weft_runq *q);

static void on_wake(uv_async_t *h) {
  weft_runq *q = h->data;
  uv_mutex_lock(&q->lock);
  flush_back(q);
  take_completions(q);
  check_cancel(q);
  uv_mutex_unlock(&q->lock);
  /* events of nodes a worker is chaining come here: the callback runs
   * without the lock, so a slow callback does not stall the worker (the
   * loop is the only thread that emits, so the order stays that of the
   * queue) */
  drain(q);
}

static void on_sigint(uv_signal_t *h, int signum) {
  weft_runq *q = h->data;
  if (++q->sigints > 1) {
    /* a second Ctrl-C: the user does not want to wait for nodes in flight */
    uv_signal_stop(h);
    signal(signum, SIG_DFL);
    raise(signum);
    return;
  }
  weft_ctx_cancel(q->ctx);
}

/* ---- run_info and directories -------------------------------------------- */

static const char *inputs_json(weft__run *r) {
  uv_mutex_lock(&r->info_lock);
  if (!r->info_inputs) r->info_inputs = weft__graph_inputs_json(&r->view);
  uv_mutex_unlock(&r->info_lock);
  return r->info_inputs;
}

const char *weft__run_info(weft_call *call, const char *key) {
  weft__callpriv *p = call->priv;
  weft__run *r = p->run;
  if (!r) return NULL;
  if (!strcmp(key, "graph")) return r->g->source;
  if (!strcmp(key, "graph_file")) return r->g->file;
  if (!strcmp(key, "inputs")) return inputs_json(r);
  if (strcmp(key, "prompt")) return NULL;
  uv_mutex_lock(&r->info_lock);
  if (!r->info_prompt) {
    weft_value *const **pv = malloc((size_t)r->g->n_nodes * sizeof *pv);
    if (pv) {
      for (int i = 0; i < r->g->n_nodes; i++)
        pv[i] = r->ns[i].pars;
      r->info_prompt = weft__graph_comfy_json(&r->view, pv);
      free(pv);
    }
  }
  uv_mutex_unlock(&r->info_lock);
  return r->info_prompt;
}

const char *weft__run_output_dir(weft_call *call) {
  weft__callpriv *p = call->priv;
  return p->run ? p->run->output_dir : p->ctx->output_dir;
}

const char *weft__run_input_dir(weft_call *call) {
  weft__callpriv *p = call->priv;
  return p->run ? p->run->input_dir : p->ctx->input_dir;
}

/* ---- shares: keys in flight ---------------------------------------------- */

static int smap_slot(const weft_runq *q, uint64_t key) {
  int m = q->smap_cap - 1, i = (int)(key & (uint64_t)m);
  while (q->smap[i] && q->smap[i]->key != key)
    i = (i + 1) & m;
  return i;
}

static share *smap_find(const weft_runq *q, uint64_t key) {
  return q->smap_cap ? q->smap[smap_slot(q, key)] : NULL;
}

static int smap_put(weft_runq *q, share *sh) {
  if (2 * (q->smap_n + 1) > q->smap_cap) {
    int cap = q->smap_cap ? q->smap_cap * 2 : 64;
    share **old = q->smap, **nm = calloc((size_t)cap, sizeof *nm);
    if (!nm) return WEFT_ENOMEM;
    int oc = q->smap_cap;
    q->smap = nm;
    q->smap_cap = cap;
    for (int i = 0; i < oc; i++)
      if (old[i]) q->smap[smap_slot(q, old[i]->key)] = old[i];
    free(old);
  }
  q->smap[smap_slot(q, sh->key)] = sh;
  q->smap_n++;
  return 0;
}

/* Removes key, shifting later entries of its probe run back (no
 * tombstones). */
static void smap_del(weft_runq *q, uint64_t key) {
  int m = q->smap_cap - 1, i = smap_slot(q, key);
  if (!q->smap[i]) return;
  q->smap[i] = NULL;
  q->smap_n--;
  for (int j = (i + 1) & m; q->smap[j]; j = (j + 1) & m) {
    share *sh = q->smap[j];
    q->smap[j] = NULL;
    q->smap[smap_slot(q, sh->key)] = sh;
  }
}

/* Node i of r computes its key for later runs to follow.  With a window of
 * one no later run can be in flight at the same time. */
static void share_lead(weft__run *r, int i) {
  weft_runq *q = r->q;
  nstate *s = &r->ns[i];
  if (q->window <= 1 || smap_find(q, s->key)) return;
  share *sh = calloc(1, sizeof *sh);
  if (!sh) return; /* no sharing: it still runs */
  sh->key = s->key;
  sh->leader = (nref){r, i};
  if (smap_put(q, sh)) {
    free(sh);
    return;
  }
  s->leads = true;
}

/* Whether node i of r can wait for an earlier run's node instead. */
static bool share_follow(weft__run *r, int i) {
  share *sh = smap_find(r->q, r->ns[i].key);
  if (!sh || sh->leader.run == r) return false;
  return push_ref(&sh->fol, &sh->n_fol, &sh->cap_fol, r, i) == 0;
}

static void share_drop_follower(weft_runq *q, weft__run *r, int i) {
  share *sh = smap_find(q, r->ns[i].key);
  for (int k = 0; sh && k < sh->n_fol; k++)
    if (sh->fol[k].run == r && sh->fol[k].node == i) {
      sh->fol[k] = sh->fol[--sh->n_fol];
      return;
    }
}

/* Takes the share of r's node i out of the map (NULL if it leads none). */
static share *share_take(weft__run *r, int i) {
  nstate *s = &r->ns[i];
  if (!s->leads) return NULL;
  s->leads = false;
  share *sh = smap_find(r->q, s->key);
  if (!sh || sh->leader.run != r || sh->leader.node != i) return NULL;
  smap_del(r->q, s->key);
  return sh;
}

static void share_free(share *sh) {
  if (!sh) return;
  free(sh->fol);
  free(sh);
}

/* ---- node execution ------------------------------------------------------ */

static void dispatch(weft__run *r, int i);
static weft_value *param_value(weft__run *r, const weft__gnode *n, int j);

static void run_node(nstate *s) {
  s->t_start = uv_hrtime();
  s->rc = weft__place_inputs(&s->call, s->ins, &s->xin);
  if (s->rc == 0) {
    s->priv.in_run = true;
    s->rc = s->call.def->run(&s->call);
    s->priv.in_run = false;
  }
  s->t_end = uv_hrtime();
}

static nstate *continue_on_worker(nstate *s);

/* A pool thread runs the node, then, while it can, the consumer its end
 * made ready.  w->data ends as the node after_work_cb finishes (the one
 * node of the chain the worker did not finish itself). */
static void work_cb(uv_work_t *w) {
  nstate *s = w->data;
  for (;;) {
    run_node(s);
    /* a deferred node ends with its complete, on the loop: the thread is
     * free now, and its consumers wait */
    if (s->priv.deferred) break;
    nstate *next = continue_on_worker(s);
    if (!next) break;
    s = next;
  }
  w->data = s;
}

/* Node i's outputs are there: its consumers may be ready. */
static void node_ready(weft__run *r, int i) {
  weft_runq *q = r->q;
  for (int c = q->cons_off[i]; c < q->cons_off[i + 1]; c++) {
    nstate *cs = &r->ns[q->cons[c]];
    if (cs->status == NS_WAITING && --cs->waiting == 0 && go(r))
      dispatch(r, q->cons[c]);
  }
}

/* A follower gets its leader's outputs, as from the cache. */
static void follower_resolve(weft__run *r, int i, weft_value **outs) {
  nstate *s = &r->ns[i];
  if (s->status != NS_FOLLOW) return;
  int n = r->g->nodes[i].rop->def.n_outputs;
  for (int k = 0; k < n; k++) {
    weft__value_retain(outs[k]);
    s->outs[k] = outs[k];
  }
  s->status = NS_CACHED;
  s->reported = true;
  r->n_cached++;
  weft__cache_get(&r->ctx->cache, s->key, r->gen); /* used by this run */
  emit_node(r, WEFT_EV_NODE_CACHED, i);
  node_ready(r, i);
  maybe_finish(r);
}

static void activate(weft__run *r, int root);
static void emit_reads(weft__run *r);
static void dispatch_ready(weft__run *r);

/* r's node i will not produce its key: the first follower whose run goes
 * on runs it itself and leads the others. */
static void share_release(weft__run *r, int i) {
  share *sh = share_take(r, i);
  if (!sh) return;
  for (int k = 0; k < sh->n_fol; k++) {
    weft__run *fr = sh->fol[k].run;
    int fi = sh->fol[k].node;
    nstate *fs = &fr->ns[fi];
    if (!go(fr) || fs->status != NS_FOLLOW) continue;
    fs->status = NS_IDLE;
    fr->n_need--; /* activate counts it again */
    activate(fr, fi);
    /* the others follow the new leader before anything is dispatched: an
     * inline leader may finish at once */
    share *nsh = fs->leads ? smap_find(fr->q, fs->key) : NULL;
    for (int m = k + 1; nsh && m < sh->n_fol; m++) {
      nref f = sh->fol[m];
      if (f.run != fr && f.run->ns[f.node].status == NS_FOLLOW)
        push_ref(&nsh->fol, &nsh->n_fol, &nsh->cap_fol, f.run, f.node);
    }
    emit_reads(fr);
    dispatch_ready(fr);
    maybe_finish(fr);
    break;
  }
  share_free(sh);
}

/* Nothing new starts in r; keys it will not compute go to their
 * followers. */
static void run_stop(weft__run *r) {
  if (r->stopping) return;
  r->stopping = true;
  weft_runq *q = r->q;
  for (int k = 0; k < q->n_def;) {
    if (q->deferred[k].run == r)
      q->deferred[k] = q->deferred[--q->n_def];
    else
      k++;
  }
  for (int i = 0; i < r->g->n_nodes; i++) {
    nstatus st = r->ns[i].status;
    if (r->ns[i].leads && (st == NS_WAITING || st == NS_DEFERRED))
      share_release(r, i);
  }
}

static void fail_node(weft__run *r, int i, int rc, const char *msg) {
  nstate *s = &r->ns[i];
  weft__gnode *n = &r->g->nodes[i];
  s->status = NS_FAILED;
  if (!msg || !*msg) msg = weft_strerror(rc);
  if (rc == WEFT_ECANCELED && !r->status) {
    r->status = WEFT_ECANCELED;
  } else if (rc != WEFT_ECANCELED &&
             (!r->status || r->status == WEFT_ECANCELED)) {
    r->status = rc;
    snprintf(r->err, sizeof r->err, "node '%s' (%s) failed: %s", n->id,
             n->rop->def.op, msg);
  }
  run_stop(r);
  weft_event ev = {.kind = WEFT_EV_NODE_FAILED,
                   .node_id = n->id,
                   .op = n->rop->def.op,
                   .status = rc,
                   .message = msg};
  emit(r, &ev);
  share_release(r, i);
}

/* Checks what run() stored: one value per output, of the declared type. */
static int check_outputs(nstate *s, const weft__op *op, char *msg, size_t len) {
  for (int k = 0; k < op->def.n_outputs; k++) {
    weft_value *v = s->outs[k];
    const weft_port_def *p = &op->outputs[k];
    if (!v) {
      snprintf(msg, len,
               "plugin bug: run() returned 0 but set no value for "
               "output '%s'",
               p->name);
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
    const int32_t at = weft__port_device(p, s->call.device);
    if (v->kind == WEFT__V_TENSOR && v->t.device != at) {
      char is[32], want[32];
      weft__device_name(v->t.device, is, sizeof is);
      weft__device_name(at, want, sizeof want);
      snprintf(msg, len, "plugin bug: output '%s' is on %s, its port says %s",
               p->name, is, want);
      return WEFT_EINTERNAL;
    }
  }
  return 0;
}

/* A plugin instance came free: the next run waiting for it goes. */
static void undefer(weft_runq *q, int i) {
  for (int k = 0; k < q->n_def; k++) {
    if (q->deferred[k].node != i) continue;
    weft__run *r = q->deferred[k].run;
    memmove(&q->deferred[k], &q->deferred[k + 1],
            (size_t)(q->n_def - k - 1) * sizeof *q->deferred);
    q->n_def--;
    if (r->ns[i].status == NS_DEFERRED && go(r)) {
      r->ns[i].status = NS_WAITING;
      dispatch(r, i);
      return;
    }
    k--;
  }
}

/* The loop's end of a node (scheduler lock held): the first failure wins,
 * its outputs are cached and go to followers, its consumers may start. */
static void node_finish(uv_work_t *w, int status) {
  nstate *s = w->data;
  weft__run *r = s->priv.run;
  weft_runq *q = r->q;
  int i = s->priv.node;
  const weft__op *op = r->g->nodes[i].rop;
  r->in_flight--;
  weft__drop_moved(s->xin, op->def.n_inputs);
  drain(q); /* the node's progress and logs come before its end */
  bool stateful = op->def.create != NULL;
  if (stateful) q->busy[i] = false;
  int rc = status == UV_ECANCELED ? WEFT_ECANCELED : s->rc;
  char msg[WEFT__ERRLEN];
  snprintf(msg, sizeof msg, "%s", s->priv.err);
  if (status != UV_ECANCELED && s->priv.deferred) {
    s->t_end = s->priv.t_done; /* its work ended with complete */
    if (s->rc != WEFT_PENDING) {
      snprintf(msg, sizeof msg,
               "plugin bug: run() called defer() but returned %d, not "
               "WEFT_PENDING",
               s->rc);
      rc = WEFT_EINTERNAL;
    } else if ((rc = s->priv.async_rc) > 0) {
      snprintf(msg, sizeof msg,
               "plugin bug: complete() with %d, not 0 or a WEFT_E* code", rc);
      rc = WEFT_EINTERNAL;
    }
  } else if (rc == WEFT_PENDING) {
    snprintf(msg, sizeof msg,
             "plugin bug: run() returned WEFT_PENDING without defer()");
    rc = WEFT_EINTERNAL;
  }
  if (rc == 0) rc = check_outputs(s, op, msg, sizeof msg);
  if (rc != 0) {
    fail_node(r, i, rc, msg);
  } else {
    s->status = NS_DONE;
    r->n_done++;
    if (s->cacheable)
      weft__cache_put(&r->ctx->cache, s->key, s->outs, op->def.n_outputs,
                      r->gen);
    weft_event ev = {.kind = WEFT_EV_NODE_DONE,
                     .node_id = r->g->nodes[i].id,
                     .op = op->def.op,
                     .ms = (double)(s->t_end - s->t_start) / 1e6};
    emit(r, &ev);
    share *sh = share_take(r, i);
    for (int k = 0; sh && k < sh->n_fol; k++)
      follower_resolve(sh->fol[k].run, sh->fol[k].node, s->outs);
    share_free(sh);
    check_cancel(q);
    node_ready(r, i);
  }
  if (stateful) undefer(q, i);
  maybe_finish(r);
}

/* A node's run() returned (loop thread, lock held).  A deferred node ends
 * when its complete is taken too, whichever comes last. */
static void node_returned(uv_work_t *w, int status) {
  nstate *s = w->data;
  if (status == 0 && s->priv.deferred && !s->completed) {
    s->returned = true;
    return;
  }
  node_finish(w, status);
}

static void after_work_cb(uv_work_t *w, int status) {
  weft_runq *q = ((nstate *)w->data)->priv.run->q;
  uv_mutex_lock(&q->lock);
  flush_back(q); /* what the worker handed back came before this end */
  node_returned(w, status);
  uv_mutex_unlock(&q->lock);
}

/* ---- deferred completion (ABI 1.3) --------------------------------------- */

weft_completion *weft__defer(weft_call *call) {
  weft__callpriv *p = call->priv;
  if (!p->run || !p->in_run || p->deferred) {
    snprintf(p->err, sizeof p->err, "plugin bug: defer() %s",
             p->deferred ? "called twice" : "called outside run()");
    return NULL;
  }
  p->deferred = true;
  return (weft_completion *)p;
}

/* Any thread.  The run stays alive until the loop took this completion
 * (the node holds one of its in_flight counts), and the loop takes it
 * only under qlock: the wake-up is sent under qlock too, so that the
 * queue (and q) can go the moment the loop has taken it. */
void weft__complete(weft_completion *c, int rc) {
  weft__callpriv *p = (weft__callpriv *)c;
  weft_runq *q = p->run->q;
  p->async_rc = rc;
  p->t_done = uv_hrtime();
  p->cnext = NULL;
  uv_mutex_lock(&q->qlock);
  if (q->done_tail)
    q->done_tail->cnext = p;
  else
    q->done_head = p;
  q->done_tail = p;
  uv_async_send(&q->wake);
  uv_mutex_unlock(&q->qlock);
}

/* Ends the deferred nodes whose complete came (loop thread, lock held). */
static void take_completions(weft_runq *q) {
  uv_mutex_lock(&q->qlock);
  weft__callpriv *p = q->done_head;
  q->done_head = q->done_tail = NULL;
  uv_mutex_unlock(&q->qlock);
  while (p) {
    weft__callpriv *next = p->cnext;
    nstate *s = &p->run->ns[p->node];
    s->completed = true;
    if (s->returned) {
      /* s->work is free: its own after_work_cb ran, or a worker continued
       * into s on another node's work */
      s->work.data = s;
      node_finish(&s->work, 0);
    }
    p = next;
  }
}

/* ---- worker-side continuation -------------------------------------------- */

static int push_back(weft_runq *q, weft__run *r, int i, back_kind kind) {
  if (q->back_n == q->back_cap) {
    int c = q->back_cap ? q->back_cap * 2 : 16;
    backref *nb = realloc(q->back, (size_t)c * sizeof *nb);
    if (!nb) return WEFT_ENOMEM;
    q->back = nb;
    q->back_cap = c;
  }
  q->back[q->back_n++] = (backref){r, i, kind};
  r->in_flight++;
  return 0;
}

static bool is_deferred(const weft_runq *q, int i) {
  for (int k = 0; k < q->n_def; k++)
    if (q->deferred[k].node == i) return true;
  return false;
}

/* The consumer of r's node i that i's end makes ready and that a worker
 * may run at once: a pool node whose plugin instance is free, the first
 * such in consumer order; -1 if none. */
static int pick_next(weft__run *r, int i) {
  weft_runq *q = r->q;
  for (int c = q->cons_off[i]; c < q->cons_off[i + 1]; c++) {
    int j = q->cons[c];
    nstate *cs = &r->ns[j];
    if (cs->status != NS_WAITING) continue;
    int edges = 0; /* cons repeats j once per edge from i */
    for (int e = q->cons_off[i]; e < q->cons_off[i + 1]; e++)
      edges += q->cons[e] == j;
    if (cs->waiting != edges) continue;
    const weft_node_def *d = &r->g->nodes[j].rop->def;
    if (d->flags & WEFT_NODE_INLINE) continue;
    if (d->create && q->busy[j]) continue;
    return j;
  }
  return -1;
}

/* Binds node j's inputs and node-fed params, as dispatch does.  Fails
 * (nothing else changed) when a param does not convert: the loop's
 * dispatch then fails the node with its message. */
static int bind_inputs(weft__run *r, int j) {
  nstate *s = &r->ns[j];
  weft__gnode *n = &r->g->nodes[j];
  const weft_node_def *d = &n->rop->def;
  for (int k = 0; k < d->n_inputs; k++) {
    const weft__bind *b = &n->inputs[k];
    s->ins[k] = b->kind == WEFT__B_NODE ? r->ns[b->node].outs[b->port] : NULL;
  }
  for (int k = 0; k < d->n_params; k++) {
    if (n->params[k].kind != WEFT__B_NODE) continue; /* set in prepare */
    weft__value_release(s->pars[k]);
    if (!(s->pars[k] = param_value(r, n, k))) return WEFT_ETYPE;
  }
  return 0;
}

/* Called by a pool thread after running s's node: when the node succeeded,
 * its run goes on and its end makes a pool node ready, finishes the node
 * here (the loop publishes it later) and returns the consumer, already
 * started, for this thread to run next.  Otherwise returns NULL and changes
 * nothing: after_work_cb finishes the node on the loop. */
static nstate *continue_on_worker(nstate *s) {
  weft__run *r = s->priv.run;
  weft_runq *q = r->q;
  int i = s->priv.node;
  const weft__op *op = r->g->nodes[i].rop;
  char msg[256];
  if (!q->cont || s->rc != 0 || check_outputs(s, op, msg, sizeof msg))
    return NULL;
  uv_mutex_lock(&q->lock);
  bool stateful = op->def.create != NULL;
  int j = -1;
  if (go(r) && !(stateful && is_deferred(q, i))) j = pick_next(r, i);
  bool publish = s->cacheable || s->leads;
  if (j < 0 || bind_inputs(r, j) ||
      (publish && push_back(q, r, i, BACK_PUBLISH))) {
    uv_mutex_unlock(&q->lock);
    return NULL;
  }
  /* i ends here, as in node_finish (its publication handed back) */
  r->in_flight--;
  weft__drop_moved(s->xin, op->def.n_inputs);
  if (stateful) q->busy[i] = false;
  s->status = NS_DONE;
  r->n_done++;
  qevent ev = {.run = r,
               .kind = WEFT_EV_NODE_DONE,
               .node = i,
               .ms = (double)(s->t_end - s->t_start) / 1e6,
               .hr = s->t_end};
  enqueue(q, &ev, false);
  /* its consumers: j runs here, the others go to the loop */
  for (int c = q->cons_off[i]; c < q->cons_off[i + 1]; c++) {
    int k = q->cons[c];
    nstate *cs = &r->ns[k];
    if (cs->status != NS_WAITING || --cs->waiting != 0 || k == j) continue;
    if (push_back(q, r, k, BACK_DISPATCH)) {
      /* the loop cannot be told: the run stops, failing it loudly */
      if (!r->status) {
        r->status = WEFT_ENOMEM;
        snprintf(r->err, sizeof r->err, "out of memory");
      }
      r->stopping = true;
    }
  }
  nstate *ns = &r->ns[j];
  const weft_node_def *d = &r->g->nodes[j].rop->def;
  ns->status = NS_RUNNING;
  ns->priv.err[0] = 0;
  r->in_flight++;
  if (d->create) q->busy[j] = true;
  q->n_continued++;
  qevent st = {
      .run = r, .kind = WEFT_EV_NODE_START, .node = j, .hr = uv_hrtime()};
  enqueue(q, &st, false);
  uv_mutex_unlock(&q->lock);
  uv_async_send(&q->wake);
  return ns;
}

/* Takes what workers handed back, in order (loop thread, lock held): a node
 * finished on a worker is cached and resolves its followers; a node made
 * ready is dispatched unless its run stopped meanwhile. */
static void flush_back(weft_runq *q) {
  while (q->back_n > 0) {
    backref *b = q->back;
    int n = q->back_n, cap = q->back_cap;
    q->back = q->spare; /* two buffers, swapped: no allocation per flush */
    q->back_cap = q->spare_cap;
    q->back_n = 0;
    q->spare = NULL;
    q->spare_cap = 0;
    /* the output cache is the loop's alone: it is filled without the lock,
     * so a worker chaining cacheable nodes does not wait for it (the runs
     * and their finished nodes' outputs stay: each item holds in_flight) */
    bool put = false;
    for (int k = 0; k < n && !put; k++)
      put = b[k].kind == BACK_PUBLISH && b[k].run->ns[b[k].node].cacheable;
    if (put) {
      uv_mutex_unlock(&q->lock);
      for (int k = 0; k < n; k++) {
        weft__run *r = b[k].run;
        nstate *s = &r->ns[b[k].node];
        if (b[k].kind == BACK_PUBLISH && s->cacheable)
          weft__cache_put(&r->ctx->cache, s->key, s->outs,
                          r->g->nodes[b[k].node].rop->def.n_outputs, r->gen);
      }
      uv_mutex_lock(&q->lock);
    }
    for (int k = 0; k < n; k++) {
      weft__run *r = b[k].run;
      int i = b[k].node;
      nstate *s = &r->ns[i];
      r->in_flight--;
      if (b[k].kind == BACK_PUBLISH) {
        share *sh = share_take(r, i);
        for (int f = 0; sh && f < sh->n_fol; f++)
          follower_resolve(sh->fol[f].run, sh->fol[f].node, s->outs);
        share_free(sh);
      } else if (s->status == NS_WAITING && s->waiting == 0 && go(r)) {
        dispatch(r, i);
      }
      maybe_finish(r);
    }
    free(q->spare);
    q->spare = b;
    q->spare_cap = cap;
  }
}

static weft_value *param_value(weft__run *r, const weft__gnode *n, int j) {
  const weft__bind *b = &n->params[j];
  const weft_param_def *p = &n->rop->params[j];
  switch (b->kind) {
  case WEFT__B_NONE:
  case WEFT__B_CONST: weft__value_retain(b->value); return b->value;
  case WEFT__B_INPUT:
    return weft__scalar_convert(r->view.inputs[b->input].value, p);
  case WEFT__B_NODE:
    return weft__scalar_convert(r->ns[b->node].outs[b->port], p);
  }
  return NULL;
}

static void dispatch(weft__run *r, int i) {
  weft_runq *q = r->q;
  nstate *s = &r->ns[i];
  weft__gnode *n = &r->g->nodes[i];
  const weft_node_def *d = &n->rop->def;
  bool stateful = d->create != NULL;
  if (stateful && q->busy[i]) {
    /* plugins may keep per-instance scratch in their state */
    if (push_ref(&q->deferred, &q->n_def, &q->cap_def, r, i)) {
      fail_node(r, i, WEFT_ENOMEM, NULL);
      return;
    }
    s->status = NS_DEFERRED;
    return;
  }
  if (bind_inputs(r, i)) {
    fail_node(r, i, WEFT_ETYPE, "an upstream value does not fit the param");
    return;
  }
  if (d->flags & WEFT_NODE_INLINE &&
      push_ref(&q->inl, &q->inl_n, &q->inl_cap, r, i)) {
    fail_node(r, i, WEFT_ENOMEM, NULL);
    return;
  }
  s->status = NS_RUNNING;
  s->priv.err[0] = 0;
  r->in_flight++;
  if (stateful) q->busy[i] = true;
  emit_node(r, WEFT_EV_NODE_START, i);
  s->work.data = s;
  if (d->flags & WEFT_NODE_INLINE) {
    /* run here; a chain of inline nodes (of any run) is drained
     * iteratively, not by recursion through after_work_cb */
    if (q->inl_busy) return;
    q->inl_busy = true;
    while (q->inl_n > 0) {
      nref x = q->inl[--q->inl_n];
      nstate *is = &x.run->ns[x.node];
      run_node(is);
      node_returned(&is->work, 0);
    }
    q->inl_busy = false;
    return;
  }
  int rc = uv_queue_work(&q->loop, &s->work, work_cb, after_work_cb);
  if (rc) {
    r->in_flight--;
    if (stateful) q->busy[i] = false;
    fail_node(r, i, WEFT_EINTERNAL, uv_strerror(rc));
  }
}

/* r has nothing in flight and nothing more to do (or stopped): its end is
 * reported now and delivered, in submission order, by deliver(). */
static void maybe_finish(weft__run *r) {
  if (r->finished || r->in_flight > 0) return;
  bool all = r->n_done + r->n_cached >= r->n_need;
  if (!all && !r->stopping) return;
  r->finished = true;
  for (int i = 0; i < r->g->n_nodes; i++) {
    if (r->ns[i].status == NS_FOLLOW) share_drop_follower(r->q, r, i);
    share_release(r, i); /* none should be left; never strand a follower */
  }
  if (!r->status && atomic_load(&r->ctx->cancelled)) r->status = WEFT_ECANCELED;
  if (r->status == WEFT_ECANCELED && !r->err[0])
    snprintf(r->err, sizeof r->err, "run cancelled");
  weft_event done = {.kind = WEFT_EV_RUN_DONE,
                     .status = r->status,
                     .n_done = r->n_done,
                     .n_cached = r->n_cached,
                     .n_total = r->n_need};
  emit(r, &done);
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

/* Marks root and, transitively, the producers it needs as needed: each
 * follows an earlier run's node with its key, or waits for its own
 * producers.  Dispatches nothing. */
static void activate(weft__run *r, int root) {
  weft__gnode *nodes = r->g->nodes;
  int *stack = malloc((size_t)(r->q->n_edges + 1) * sizeof *stack);
  if (!stack) {
    if (!r->status) {
      r->status = WEFT_ENOMEM;
      snprintf(r->err, sizeof r->err, "out of memory");
    }
    run_stop(r);
    return;
  }
  int sp = 0;
  stack[sp++] = root;
  while (sp > 0) {
    int i = stack[--sp];
    nstate *s = &r->ns[i];
    if (s->status != NS_IDLE) continue;
    r->n_need++;
    if (s->cacheable && share_follow(r, i)) {
      s->status = NS_FOLLOW;
      continue;
    }
    s->status = NS_WAITING;
    s->waiting = 0;
    if (s->cacheable) share_lead(r, i);
    for (int j = 0; j < n_binds(&nodes[i]); j++) {
      const weft__bind *b = bind_at(&nodes[i], j);
      if (b->kind != WEFT__B_NODE) continue;
      nstate *ps = &r->ns[b->node];
      if (ps->status == NS_CACHED) {
        ps->read = true;
        continue;
      }
      if (ps->status == NS_DONE) continue;
      s->waiting++;
      if (ps->status == NS_IDLE) stack[sp++] = b->node;
    }
  }
  free(stack);
}

/* Reports the cached nodes a needed node reads, in execution order. */
static void emit_reads(weft__run *r) {
  for (int k = 0; k < r->g->n_nodes; k++) {
    int i = r->g->order[k];
    nstate *s = &r->ns[i];
    if (s->status != NS_CACHED || !s->read || s->reported) continue;
    s->reported = true;
    r->n_cached++;
    r->n_need++;
    emit_node(r, WEFT_EV_NODE_CACHED, i);
  }
}

static void dispatch_ready(weft__run *r) {
  for (int k = 0; k < r->g->n_nodes && go(r); k++) {
    int i = r->g->order[k];
    if (r->ns[i].status == NS_WAITING && r->ns[i].waiting == 0) dispatch(r, i);
  }
}

/* Fails r before anything ran, with ctx's message. */
static int prepare_fail(weft__run *r, int rc) {
  r->status = rc;
  snprintf(r->err, sizeof r->err, "%s", r->ctx->err);
  r->stopping = true;
  return rc;
}

static int prepare(weft__run *r) {
  weft_graph *g = r->g;
  weft_runq *q = r->q;
  int rc;
  for (int k = 0; k < g->n_inputs; k++)
    if (!r->inputs[k].value)
      return prepare_fail(
          r, weft__err(r->ctx, WEFT_EMISSING, &g->inputs[k].loc,
                       "graph input '%s' has no default: set it with --set "
                       "%s=...",
                       g->inputs[k].name, g->inputs[k].name));
  for (int i = 0; i < g->n_nodes; i++) {
    weft__gnode *n = &g->nodes[i];
    nstate *s = &r->ns[i];
    const weft_node_def *d = &n->rop->def;
    s->outs = calloc((size_t)d->n_outputs + 1, sizeof *s->outs);
    s->ins = calloc((size_t)d->n_inputs + 1, sizeof *s->ins);
    s->pars = calloc((size_t)d->n_params + 1, sizeof *s->pars);
    if (!s->outs || !s->ins || !s->pars)
      return prepare_fail(
          r, weft__err(r->ctx, WEFT_ENOMEM, NULL, "out of memory"));
    call_init(r, i, s);
    for (int j = 0; j < d->n_params; j++) {
      if (n->params[j].kind == WEFT__B_NODE) continue;
      if (!(s->pars[j] = param_value(r, n, j))) {
        const weft__bind *b = &n->params[j];
        weft__ginput *in = &r->inputs[b->input];
        char val[256];
        weft__value_format(in->value, val, sizeof val);
        weft__err(r->ctx, WEFT_ERANGE, &b->loc,
                  "node '%s' param '%s': input '%s' = '%s' is not one of the "
                  "param's choices",
                  n->id, n->rop->params[j].name, in->name, val);
        const char *const *ch = n->rop->params[j].choices;
        int nc = 0;
        while (ch && ch[nc])
          nc++;
        weft__err_suggest(r->ctx, val, ch, nc);
        return prepare_fail(r, WEFT_ERANGE);
      }
    }
  }
  /* keys and cache hits, producers first */
  for (int k = 0; k < g->n_nodes; k++) {
    int i = g->order[k];
    weft__gnode *n = &g->nodes[i];
    nstate *s = &r->ns[i];
    if ((rc = create_node(r, i))) return prepare_fail(r, rc);
    s->call.state = n->state;
    s->key = node_key(r, i);
    uint32_t fl = n->rop->def.flags;
    s->cacheable = !(fl & (WEFT_NODE_OUTPUT | WEFT_NODE_NO_CACHE));
    if (!s->cacheable) continue;
    weft__centry *e = weft__cache_get(&r->ctx->cache, s->key, r->gen);
    if (e && e->n_outs == n->rop->def.n_outputs) {
      s->status = NS_CACHED;
      for (int j = 0; j < e->n_outs; j++) {
        weft__value_retain(e->outs[j]);
        s->outs[j] = e->outs[j];
      }
    }
  }
  /* what must run: every uncached sink, output node and graph output, and
   * every uncached producer of a node that runs */
  for (int k = 0; k < g->n_nodes; k++) {
    int i = g->order[k];
    bool root = (g->nodes[i].rop->def.flags & WEFT_NODE_OUTPUT) ||
                q->cons_off[i] == q->cons_off[i + 1];
    for (int o = 0; o < g->n_outputs && !root; o++)
      root = g->outputs[o].ref.node == i;
    if (!root) continue;
    if (r->ns[i].status == NS_CACHED)
      r->ns[i].read |= q->cons_off[i] == q->cons_off[i + 1];
    else
      activate(r, i);
  }
  emit_reads(r);
  return 0;
}

static void run_free(weft__run *r) {
  if (!r) return;
  for (int i = 0; r->ns && i < r->g->n_nodes; i++) {
    nstate *s = &r->ns[i];
    const weft_node_def *d = &r->g->nodes[i].rop->def;
    for (int j = 0; s->outs && j < d->n_outputs; j++)
      weft__value_release(s->outs[j]);
    for (int j = 0; s->pars && j < d->n_params; j++)
      weft__value_release(s->pars[j]);
    weft__drop_moved(s->xin, d->n_inputs);
    free(s->outs);
    free(s->ins);
    free(s->xin);
    free(s->pars);
  }
  free(r->ns);
  for (int k = 0; r->inputs && k < r->g->n_inputs; k++)
    weft__value_release(r->inputs[k].value);
  free(r->inputs);
  free(r->output_dir);
  free(r->input_dir);
  free(r->info_inputs);
  free(r->info_prompt);
  uv_mutex_destroy(&r->info_lock);
  free(r);
}

/* ---- the queue ----------------------------------------------------------- */

static void on_closed(uv_handle_t *h) {
  (void)h;
}

int weft_runq_new(weft_ctx *ctx, weft_graph *g, int window, weft_runq **out) {
  *out = NULL;
  if (window < 1)
    return weft__err(ctx, WEFT_EINVAL, NULL,
                     "run queue window %d: at least 1 run must be in flight",
                     window);
  weft_runq *q = calloc(1, sizeof *q);
  if (!q) return weft__err(ctx, WEFT_ENOMEM, NULL, "out of memory");
  q->ctx = ctx;
  q->g = g;
  q->window = window;
  q->cons_off = calloc((size_t)g->n_nodes + 1, sizeof *q->cons_off);
  q->busy = calloc((size_t)g->n_nodes + 1, sizeof *q->busy);
  if (!q->cons_off || !q->busy) goto nomem;
  /* consumers, for readiness propagation: counted, then filled */
  for (int i = 0; i < g->n_nodes; i++)
    for (int j = 0; j < n_binds(&g->nodes[i]); j++) {
      const weft__bind *b = bind_at(&g->nodes[i], j);
      if (b->kind == WEFT__B_NODE) q->cons_off[b->node + 1]++;
    }
  for (int i = 0; i < g->n_nodes; i++)
    q->cons_off[i + 1] += q->cons_off[i];
  q->n_edges = q->cons_off[g->n_nodes];
  q->cons = malloc((size_t)q->n_edges * sizeof *q->cons + 1);
  int *fill = calloc((size_t)g->n_nodes + 1, sizeof *fill);
  if (!q->cons || !fill) {
    free(fill);
    goto nomem;
  }
  for (int i = 0; i < g->n_nodes; i++)
    for (int j = 0; j < n_binds(&g->nodes[i]); j++) {
      const weft__bind *b = bind_at(&g->nodes[i], j);
      if (b->kind == WEFT__B_NODE)
        q->cons[q->cons_off[b->node] + fill[b->node]++] = i;
    }
  free(fill);
  int rc = uv_loop_init(&q->loop);
  if (rc) {
    free(q->cons_off);
    free(q->cons);
    free(q->busy);
    free(q);
    return weft__err(ctx, WEFT_EINTERNAL, NULL, "uv_loop_init: %s",
                     uv_strerror(rc));
  }
  uv_mutex_init(&q->qlock);
  uv_mutex_init(&q->lock);
  const char *nc = getenv("WEFT_SCHED_NO_CONTINUE");
  q->cont = !(nc && *nc && strcmp(nc, "0") != 0);
  uv_async_init(&q->loop, &q->wake, on_wake);
  q->wake.data = q;
  uv_mutex_lock(&ctx->lock);
  bool taken = ctx->wake != NULL;
  if (!taken) ctx->wake = &q->wake;
  uv_mutex_unlock(&ctx->lock);
  if (taken) {
    q->ctx = NULL; /* leave ctx->wake alone */
    weft_runq_free(q);
    return weft__err(ctx, WEFT_EINVAL, NULL,
                     "a run queue (or weft_graph_run) is already active on "
                     "this context");
  }
  atomic_store(&ctx->cancelled, 0);
  if (ctx->handle_sigint) {
    uv_signal_init(&q->loop, &q->sigint);
    q->sigint.data = q;
    q->sigint_active = uv_signal_start(&q->sigint, on_sigint, SIGINT) == 0;
    if (!q->sigint_active) uv_close((uv_handle_t *)&q->sigint, NULL);
  }
  *out = q;
  return 0;
nomem:
  free(q->cons_off);
  free(q->cons);
  free(q->busy);
  free(q);
  return weft__err(ctx, WEFT_ENOMEM, NULL, "out of memory");
}

/* Calls the completion callbacks of the finished runs at the head, in
 * submission order, and frees those runs.  Called only from the top of
 * submit/wait/drain, where no frame holds a run. */
static int deliver(weft_runq *q) {
  int n = 0;
  while (q->head && q->head->finished) {
    weft__run *r = q->head;
    q->head = r->next;
    if (!q->head) q->tail = NULL;
    q->n_runs--;
    if (r->done) r->done(r, r->user);
    /* what no run since this one touched is not worth keeping */
    weft__cache_trim(&r->ctx->cache, r->gen);
    run_free(r);
    n++;
  }
  return n;
}

/* With nothing in flight the loop would wait forever: every run ends now
 * (cancelled ones as such; any other is a scheduler bug, failed loudly).
 * Returns false, without touching anything, while work is in flight. */
static bool unstall(weft_runq *q) {
  flush_back(q); /* handed-back nodes count as in flight until taken */
  for (weft__run *r = q->head; r; r = r->next)
    if (r->in_flight > 0) return false;
  check_cancel(q); /* a cancelled run with nothing in flight ends here */
  for (weft__run *r = q->head; r; r = r->next) {
    if (r->finished) continue;
    if (!r->status) {
      r->status = WEFT_EINTERNAL;
      snprintf(r->err, sizeof r->err,
               "internal error: the scheduler stalled with %d of %d nodes "
               "finished",
               r->n_done + r->n_cached, r->n_need);
    }
    r->stopping = true;
    maybe_finish(r);
  }
  return true;
}

/* Runs the loop until at most `target` runs are pending. */
static void run_until(weft_runq *q, int target) {
  deliver(q);
  while (q->n_runs > target) {
    if (!unstall(q)) {
      /* callbacks take the lock; workers may finish nodes meanwhile */
      uv_mutex_unlock(&q->lock);
      uv_run(&q->loop, UV_RUN_ONCE);
      uv_mutex_lock(&q->lock);
    }
    deliver(q);
  }
}

static int refuse_reentry(weft_runq *q, const char *fn) {
  return weft__err(q->ctx, WEFT_EINVAL, NULL,
                   "%s: called from an event or completion callback of the "
                   "same run queue",
                   fn);
}

/* Applies "name=value" to the run's own copy of the inputs, with the
 * graph's own parser and checks (weft_graph_set_input on the view). */
static int apply_set(weft__run *r, const char *pair) {
  const char *eq = strchr(pair, '=');
  if (!eq || eq == pair)
    return weft__err(r->ctx, WEFT_EINVAL, NULL,
                     "run input '%s': expected name=value", pair);
  size_t n = (size_t)(eq - pair);
  char *name = malloc(n + 1);
  if (!name) return weft__err(r->ctx, WEFT_ENOMEM, NULL, "out of memory");
  memcpy(name, pair, n);
  name[n] = 0;
  int rc = weft_graph_set_input(r->ctx, &r->view, name, eq + 1);
  free(name);
  return rc;
}

int weft_runq_submit(weft_runq *q, const weft_run_opts *opts, uint64_t *id) {
  weft_ctx *ctx = q->ctx;
  if (q->entered) return refuse_reentry(q, "weft_runq_submit");
  weft_run_opts o = {sizeof o, NULL, NULL, NULL, NULL};
  if (opts) {
    size_t n = opts->struct_size < sizeof o ? opts->struct_size : sizeof o;
    if (n < offsetof(weft_run_opts, set))
      return weft__err(ctx, WEFT_EINVAL, NULL,
                       "weft_run_opts.struct_size %u is too small",
                       (unsigned)opts->struct_size);
    memcpy(&o, opts, n);
  }
  q->entered = true;
  uv_mutex_lock(&q->lock);
  run_until(q, q->window - 1);
  weft_graph *g = q->g;
  int rc = WEFT_ENOMEM;
  weft__run *r = calloc(1, sizeof *r);
  if (!r) goto fail_early;
  r->q = q;
  r->ctx = ctx;
  r->g = g;
  uv_mutex_init(&r->info_lock);
  r->ns = ns_alloc(g->n_nodes);
  r->inputs = calloc((size_t)g->n_inputs + 1, sizeof *r->inputs);
  r->output_dir = strdup(o.output_dir ? o.output_dir : ctx->output_dir);
  r->input_dir = strdup(ctx->input_dir);
  if (!r->ns || !r->inputs || !r->output_dir || !r->input_dir) {
    weft__err(ctx, rc, NULL, "out of memory");
    goto fail;
  }
  for (int k = 0; k < g->n_inputs; k++) {
    r->inputs[k] = g->inputs[k];
    if (r->inputs[k].value) weft__value_retain(r->inputs[k].value);
  }
  r->view = *g;
  r->view.inputs = r->inputs;
  r->view.out_values = NULL;
  for (int k = 0; o.set && o.set[k]; k++)
    if ((rc = apply_set(r, o.set[k]))) goto fail;
  r->done = o.done;
  r->user = o.user;
  r->id = ++q->next_id;
  r->gen = weft__cache_next_gen(&ctx->cache);
  r->t0 = uv_hrtime();
  if (q->tail)
    q->tail->next = r;
  else
    q->head = r;
  q->tail = r;
  q->n_runs++;
  if (id) *id = r->id;
  weft_event start = {.kind = WEFT_EV_RUN_START, .n_total = g->n_nodes};
  emit(r, &start);
  if (!prepare(r)) dispatch_ready(r);
  check_cancel(q);
  maybe_finish(r);
  deliver(q);
  uv_mutex_unlock(&q->lock);
  q->entered = false;
  return 0;
fail:
  run_free(r);
fail_early:
  uv_mutex_unlock(&q->lock);
  q->entered = false;
  if (rc == WEFT_ENOMEM && !r) weft__err(ctx, rc, NULL, "out of memory");
  return rc;
}

int weft_runq_wait(weft_runq *q) {
  if (q->entered) return refuse_reentry(q, "weft_runq_wait");
  q->entered = true;
  uv_mutex_lock(&q->lock);
  if (q->n_runs > 0) run_until(q, q->n_runs - 1);
  uv_mutex_unlock(&q->lock);
  q->entered = false;
  return 0;
}

int weft_runq_drain(weft_runq *q) {
  if (q->entered) return refuse_reentry(q, "weft_runq_drain");
  q->entered = true;
  uv_mutex_lock(&q->lock);
  run_until(q, 0);
  uv_mutex_unlock(&q->lock);
  q->entered = false;
  return 0;
}

int weft_runq_pending(const weft_runq *q) {
  return q->n_runs;
}

void weft_runq_free(weft_runq *q) {
  if (!q) return;
  if (q->ctx) {
    if (q->entered) return; /* refused: from one of its own callbacks */
    q->entered = true;
    uv_mutex_lock(&q->lock);
    run_until(q, 0);
    uv_mutex_unlock(&q->lock);
    uv_mutex_lock(&q->ctx->lock);
    q->ctx->wake = NULL;
    uv_mutex_unlock(&q->ctx->lock);
  }
  uv_close((uv_handle_t *)&q->wake, on_closed);
  if (q->sigint_active) uv_close((uv_handle_t *)&q->sigint, on_closed);
  uv_run(&q->loop, UV_RUN_DEFAULT);
  uv_loop_close(&q->loop);
  uv_mutex_destroy(&q->qlock);
  uv_mutex_destroy(&q->lock);
  for (int i = 0; i < q->qn; i++)
    free(q->q[i].message);
  free(q->q);
  free(q->qspare);
  for (int i = 0; i < q->smap_cap; i++)
    share_free(q->smap[i]);
  free(q->smap);
  free(q->inl);
  free(q->back);
  free(q->spare);
  free(q->deferred);
  free(q->cons_off);
  free(q->cons);
  free(q->busy);
  free(q);
}

uint64_t weft__runq_continued(weft_runq *q) {
  uv_mutex_lock(&q->lock);
  uint64_t n = q->n_continued;
  uv_mutex_unlock(&q->lock);
  return n;
}

/* ---- runs seen from their completion callback ---------------------------- */

uint64_t weft_run_id(const weft_run *run) {
  return run->id;
}
void *weft_run_user(const weft_run *run) {
  return run->user;
}
int weft_run_status(const weft_run *run) {
  return run->status;
}
const char *weft_run_error(const weft_run *run) {
  return run->err;
}
const char *weft_run_inputs_json(weft_run *run) {
  return inputs_json(run);
}

static weft_value *run_output(const weft_run *run, int i) {
  if (run->status || i < 0 || i >= run->g->n_outputs) return NULL;
  const weft__bind *b = &run->g->outputs[i].ref;
  return run->ns[b->node].outs[b->port];
}

int weft_run_output_format(const weft_run *run, int i, char *buf, size_t len) {
  weft_value *v = run_output(run, i);
  if (!v) return WEFT_EINVAL;
  weft__value_format(v, buf, len);
  return 0;
}

/* ---- one run: weft_graph_run ----------------------------------------------
 */

static void graph_run_done(weft_run *run, void *user) {
  int *rc = user;
  weft_graph *g = run->g;
  *rc = run->status;
  if (run->status) {
    snprintf(run->ctx->err, sizeof run->ctx->err, "%s", run->err);
    return;
  }
  if (!g->n_outputs) return;
  g->out_values = calloc((size_t)g->n_outputs, sizeof *g->out_values);
  for (int o = 0; g->out_values && o < g->n_outputs; o++) {
    g->out_values[o] = run_output(run, o);
    weft__value_retain(g->out_values[o]);
  }
}

int weft_graph_run(weft_ctx *ctx, weft_graph *g) {
  ctx->err[0] = 0;
  if (g->out_values) {
    for (int i = 0; i < g->n_outputs; i++)
      weft__value_release(g->out_values[i]);
    free(g->out_values);
    g->out_values = NULL;
  }
  weft_runq *q;
  int rc = weft_runq_new(ctx, g, 1, &q);
  if (rc) return rc;
  int status = WEFT_EINTERNAL;
  weft_run_opts o = {
      .struct_size = sizeof o, .done = graph_run_done, .user = &status};
  rc = weft_runq_submit(q, &o, NULL);
  weft_runq_free(q);
  return rc ? rc : status;
}

void weft_ctx_set_handle_sigint(weft_ctx *ctx, int on) {
  ctx->handle_sigint = on;
}

int weft_graph_output_count(const weft_graph *g) {
  return g->n_outputs;
}

const char *weft_graph_output_name(const weft_graph *g, int i) {
  return i >= 0 && i < g->n_outputs ? g->outputs[i].name : NULL;
}

int weft_graph_output_format(const weft_graph *g, int i, char *buf,
                             size_t len) {
  if (i < 0 || i >= g->n_outputs || !g->out_values) return WEFT_EINVAL;
  weft__value_format(g->out_values[i], buf, len);
  return 0;
}
