/* asyncnodes.c - a test plugin whose nodes defer their end (ABI 1.3): run()
 * hands the work to a thread of the plugin's own, which completes the node
 * after a delay, from outside the worker pool.  Built only for tests
 * (tests/runtime/test_async.c). */
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "weft/plugin.h"

static const weft_port_def in_ports[] = {
    {sizeof(weft_port_def), "in", WEFT_TYPE_INT, NULL, WEFT_PORT_OPTIONAL,
     "0 when unconnected"},
    {sizeof(weft_port_def), "in2", WEFT_TYPE_INT, NULL, WEFT_PORT_OPTIONAL,
     "0 when unconnected"},
};
static const weft_port_def out_ports[] = {
    {sizeof(weft_port_def), "value", WEFT_TYPE_INT, NULL, 0, NULL},
};
static const weft_param_def params[] = {
    {sizeof(weft_param_def), "add", WEFT_TYPE_INT, 1, 0, NULL, -1e9, 1e9, NULL,
     0, "added to the inputs"},
    {sizeof(weft_param_def), "delay_ms", WEFT_TYPE_INT, 0, 0, NULL, 0, 1e6,
     NULL, 0, "how long the plugin's thread works before it completes"},
    {sizeof(weft_param_def), "fail", WEFT_TYPE_STRING, 0, 0, "", 0, -1, NULL, 0,
     "non-empty: complete fails the node with this message"},
    {sizeof(weft_param_def), "mode", WEFT_TYPE_ENUM, 0, 0, NULL, 1, 0,
     (const char *const[]){"thread", "sync", "nodefer", "wait", "signal", NULL},
     0,
     "thread: complete from the job's thread; sync: complete inside run, "
     "before it returns; nodefer: return WEFT_PENDING without defer (a "
     "plugin bug the runtime reports); wait: as thread, but the job "
     "completes only once a signal node ran (else fails after 10 s); "
     "signal: no defer, marks that it ran"},
};

/* One deferred run's work; the thread owns and frees it. */
typedef struct job {
  weft_call *call;
  weft_completion *done;
  int64_t value;
  int64_t delay_ms;
  char fail[256];
  int wait; /* mode wait */
} job;

static void sleep_ms(int64_t ms) {
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* How many signal nodes ran in this process: a wait job needs one to run
 * while it is pending (test-only state; tests run one per process). */
static atomic_int g_signals;

static void *job_main(void *arg) {
  job *j = arg;
  weft_call *c = j->call;
  const weft_host *h = c->host;
  int rc = 0;
  for (int t = 0; j->wait && !atomic_load(&g_signals); t++) {
    if (t == 10000) {
      h->error(c, "no other node ran while this one was pending");
      rc = WEFT_EINTERNAL;
      break;
    }
    sleep_ms(1);
  }
  h->progress(c, 0, 1); /* pending now */
  /* works in 1 ms slices, watching for cancellation as a GPU poll would */
  for (int64_t t = 0; t < j->delay_ms; t++) {
    if (h->is_cancelled(c)) {
      rc = WEFT_ECANCELED;
      break;
    }
    sleep_ms(1);
  }
  if (!rc && h->is_cancelled(c)) rc = WEFT_ECANCELED;
  if (!rc && j->fail[0]) {
    h->error(c, "%s", j->fail);
    rc = WEFT_EIO;
  }
  if (!rc) {
    h->progress(c, 1, 1);
    c->outputs[0] = h->int_new(c, j->value);
    if (!c->outputs[0]) rc = WEFT_ENOMEM;
  }
  weft_completion *done = j->done;
  free(j);
  h->complete(done, rc); /* nothing of the call after this */
  return NULL;
}

/* in + in2 + add, computed now, delivered by the job's thread */
static int async_run(weft_call *c) {
  const weft_host *h = c->host;
  if (!WEFT_HOST_HAS(h, complete)) {
    h->error(c, "the runtime is older than plugin ABI 1.3 (no defer)");
    return WEFT_EABI;
  }
  job *j = calloc(1, sizeof *j);
  if (!j) return WEFT_ENOMEM;
  j->call = c;
  j->value = (c->inputs[0] ? h->value_int(c->inputs[0]) : 0) +
             (c->inputs[1] ? h->value_int(c->inputs[1]) : 0) +
             weft_param_int(c, 0);
  j->delay_ms = weft_param_int(c, 1);
  const char *f = weft_param_string(c, 2);
  snprintf(j->fail, sizeof j->fail, "%s", f ? f : "");
  int64_t mode = weft_param_int(c, 3);
  if (mode == 4) {
    atomic_fetch_add(&g_signals, 1);
    free(j);
    c->outputs[0] = h->int_new(c, weft_param_int(c, 0));
    return c->outputs[0] ? 0 : WEFT_ENOMEM;
  }
  j->wait = mode == 3;
  if (mode == 2) {
    free(j);
    return WEFT_PENDING;
  }
  j->done = h->defer(c);
  if (j->done && mode == 1) {
    job_main(j); /* frees j, completes */
    return WEFT_PENDING;
  }
  if (!j->done) {
    free(j);
    return WEFT_EINTERNAL;
  }
  pthread_attr_t a;
  pthread_t t;
  pthread_attr_init(&a);
  pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
  int e = pthread_create(&t, &a, job_main, j);
  pthread_attr_destroy(&a);
  if (e) {
    /* deferred already: the node still ends through complete */
    weft_completion *done = j->done;
    free(j);
    h->error(c, "cannot start the job's thread");
    h->complete(done, WEFT_EINTERNAL);
  }
  return WEFT_PENDING;
}

static const weft_node_def async_inc = {.struct_size = sizeof(weft_node_def),
                                        .op = "AsyncInc",
                                        .category = "test",
                                        .doc = "in + in2 + add, completed "
                                               "later by a thread of the "
                                               "plugin's own.",
                                        .inputs = in_ports,
                                        .n_inputs = 2,
                                        .outputs = out_ports,
                                        .n_outputs = 1,
                                        .params = params,
                                        .n_params = 4,
                                        .run = async_run};

static const weft_node_def *const nodes[] = {&async_inc};
WEFT_PLUGIN_DEFINE("asyncnodes", "1.0", nodes)
