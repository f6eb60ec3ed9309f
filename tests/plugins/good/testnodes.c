/* testnodes.c - small nodes the runtime's tests and the dispatch benchmark
 * drive: constants, arithmetic, failure, cancellation, a barrier that only
 * concurrent branches pass, a no-op, a gate that waits for a file, run
 * information, and a stateful instance. Built only for tests. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "weft/plugin.h"

/* ---- TestInt: a constant ---- */
static const weft_param_def int_params[] = {
    {sizeof(weft_param_def), "value", WEFT_TYPE_INT, 0, 0, NULL, -1e9, 1e9,
     NULL, 0, "the value"},
};
static const weft_port_def int_out[] = {
    {sizeof(weft_port_def), "value", WEFT_TYPE_INT, NULL, 0, NULL},
};
static int int_run(weft_call *c) {
  c->outputs[0] = c->host->int_new(c, weft_param_int(c, 0));
  return c->outputs[0] ? 0 : WEFT_ENOMEM;
}
static const weft_node_def test_int = {
    .struct_size = sizeof(weft_node_def), .op = "TestInt",
    .category = "test", .doc = "Outputs its param.", .outputs = int_out,
    .n_outputs = 1, .params = int_params, .n_params = 1, .run = int_run};

/* ---- TestAdd: a + b (+ bias) ---- */
static const weft_port_def add_in[] = {
    {sizeof(weft_port_def), "a", WEFT_TYPE_INT, NULL, 0, "first term"},
    {sizeof(weft_port_def), "b", WEFT_TYPE_INT, NULL, WEFT_PORT_OPTIONAL,
     "second term (0 when unconnected)"},
};
static const weft_param_def add_params[] = {
    {sizeof(weft_param_def), "bias", WEFT_TYPE_INT, 0, 0, NULL, -100, 100,
     NULL, 0, "added too"},
    {sizeof(weft_param_def), "mode", WEFT_TYPE_ENUM, 0, 0, NULL, 1, 0,
     (const char *const[]){"add", "subtract", NULL}, 0, "operation"},
    {sizeof(weft_param_def), "scale", WEFT_TYPE_FLOAT, 0, 1.0, NULL, 0, 10,
     NULL, 0, "multiplies the result"},
};
static int add_run(weft_call *c) {
  const weft_host *h = c->host;
  int64_t a = h->value_int(c->inputs[0]);
  int64_t b = c->inputs[1] ? h->value_int(c->inputs[1]) : 0;
  int64_t r = weft_param_int(c, 1) == 0 ? a + b : a - b;
  r = (int64_t)((double)(r + weft_param_int(c, 0)) * weft_param_float(c, 2));
  c->outputs[0] = h->int_new(c, r);
  return 0;
}
static const weft_node_def test_add = {
    .struct_size = sizeof(weft_node_def), .op = "TestAdd",
    .category = "test", .doc = "Adds or subtracts two integers.",
    .inputs = add_in, .n_inputs = 2, .outputs = int_out, .n_outputs = 1,
    .params = add_params, .n_params = 3, .run = add_run};

/* ---- TestString: outputs a STRING (for STRING ports and graph outputs) ---- */
static const weft_param_def str_params[] = {
    {sizeof(weft_param_def), "text", WEFT_TYPE_STRING, 0, 0, "hello", 1, 0,
     NULL, WEFT_PARAM_MULTILINE, "the text"},
};
static const weft_port_def str_out[] = {
    {sizeof(weft_port_def), "text", WEFT_TYPE_STRING, NULL, 0, NULL},
};
static int str_run(weft_call *c) {
  c->outputs[0] = c->host->string_new(c, weft_param_string(c, 0));
  return 0;
}
static const weft_node_def test_string = {
    .struct_size = sizeof(weft_node_def), .op = "TestString",
    .category = "test", .doc = "Outputs its text.", .outputs = str_out,
    .n_outputs = 1, .params = str_params, .n_params = 1, .run = str_run};

/* ---- TestImage: a constant IMAGE [1,h,w,3] ---- */
static const weft_param_def img_params[] = {
    {sizeof(weft_param_def), "width", WEFT_TYPE_INT, 8, 0, NULL, 1, 4096,
     NULL, 0, NULL},
    {sizeof(weft_param_def), "height", WEFT_TYPE_INT, 8, 0, NULL, 1, 4096,
     NULL, 0, NULL},
    {sizeof(weft_param_def), "value", WEFT_TYPE_FLOAT, 0, 0.5, NULL, 0, 1,
     NULL, 0, NULL},
};
static const weft_port_def img_out[] = {
    {sizeof(weft_port_def), "IMAGE", WEFT_TYPE_IMAGE, NULL, 0, NULL},
};
static int img_run(weft_call *c) {
  int64_t shape[4] = {1, weft_param_int(c, 1), weft_param_int(c, 0), 3};
  weft_tensor t;
  c->outputs[0] = c->host->tensor_new(c, WEFT_TYPE_IMAGE, WEFT_F32, 4, shape,
                                      &t);
  if (!c->outputs[0]) return WEFT_ENOMEM;
  float v = (float)weft_param_float(c, 2);
  for (int64_t i = 0; i < weft_tensor_numel(&t); i++) ((float *)t.data)[i] = v;
  return 0;
}
static const weft_node_def test_image = {
    .struct_size = sizeof(weft_node_def), .op = "TestImage",
    .category = "test", .doc = "Outputs a flat grey image.",
    .outputs = img_out, .n_outputs = 1, .params = img_params, .n_params = 3,
    .run = img_run};

/* ---- TestFail: always fails ---- */
static const weft_port_def fail_in[] = {
    {sizeof(weft_port_def), "after", WEFT_TYPE_INT, NULL, WEFT_PORT_OPTIONAL,
     "runs after this"},
};
static const weft_param_def fail_params[] = {
    {sizeof(weft_param_def), "message", WEFT_TYPE_STRING, 0, 0, "boom", 1, 0,
     NULL, 0, NULL},
};
static int fail_run(weft_call *c) {
  c->host->error(c, "%s", weft_param_string(c, 0));
  return WEFT_ERUN;
}
static const weft_node_def test_fail = {
    .struct_size = sizeof(weft_node_def), .op = "TestFail",
    .category = "test", .doc = "Fails with its message.", .inputs = fail_in,
    .n_inputs = 1, .outputs = int_out, .n_outputs = 1, .params = fail_params,
    .n_params = 1, .run = fail_run};

/* ---- TestBarrier: passes only when `count` of its kind run at once ---- */
typedef struct barrier {
  pthread_mutex_t m;
  pthread_cond_t cv;
  int arrived;
} barrier;

static barrier g_barrier = {PTHREAD_MUTEX_INITIALIZER,
                            PTHREAD_COND_INITIALIZER, 0};

static const weft_param_def bar_params[] = {
    {sizeof(weft_param_def), "count", WEFT_TYPE_INT, 2, 0, NULL, 1, 64, NULL,
     0, "how many must arrive"},
    {sizeof(weft_param_def), "tag", WEFT_TYPE_INT, 0, 0, NULL, 1, 0, NULL, 0,
     "distinguishes otherwise equal nodes"},
};
static int bar_run(weft_call *c) {
  int count = (int)weft_param_int(c, 0);
  struct timespec dl;
  clock_gettime(CLOCK_REALTIME, &dl);
  dl.tv_sec += 10;
  pthread_mutex_lock(&g_barrier.m);
  g_barrier.arrived++;
  pthread_cond_broadcast(&g_barrier.cv);
  int rc = 0;
  while (g_barrier.arrived < count && rc != ETIMEDOUT)
    rc = pthread_cond_timedwait(&g_barrier.cv, &g_barrier.m, &dl);
  pthread_mutex_unlock(&g_barrier.m);
  if (rc == ETIMEDOUT) {
    c->host->error(c, "barrier timed out: the branches did not run at the "
                      "same time");
    return WEFT_ERUN;
  }
  c->outputs[0] = c->host->int_new(c, weft_param_int(c, 1));
  return 0;
}
static const weft_node_def test_barrier = {
    .struct_size = sizeof(weft_node_def), .op = "TestBarrier",
    .category = "test",
    .doc = "Waits until `count` barrier nodes are running at once.",
    .outputs = int_out, .n_outputs = 1, .params = bar_params, .n_params = 2,
    .flags = WEFT_NODE_NO_CACHE, .run = bar_run};

/* ---- TestSpin: runs until cancelled ---- */
static int spin_run(weft_call *c) {
  for (int i = 0; i < 2000; i++) {
    if (c->host->is_cancelled(c)) return WEFT_ECANCELED;
    c->host->progress(c, i, 2000);
    struct timespec ts = {0, 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  c->host->error(c, "was never cancelled");
  return WEFT_ERUN;
}
static const weft_node_def test_spin = {
    .struct_size = sizeof(weft_node_def), .op = "TestSpin",
    .category = "test", .doc = "Reports progress until cancelled (10 s max).",
    .outputs = int_out, .n_outputs = 1, .flags = WEFT_NODE_NO_CACHE,
    .run = spin_run};

/* ---- TestProgress: reports steps 1..5 and returns ---- */
static int progress_run(weft_call *c) {
  for (int i = 1; i <= 5; i++) c->host->progress(c, i, 5);
  c->outputs[0] = c->host->int_new(c, 5);
  return 0;
}
static const weft_node_def test_progress = {
    .struct_size = sizeof(weft_node_def), .op = "TestProgress",
    .category = "test", .doc = "Reports five steps of progress.",
    .outputs = int_out, .n_outputs = 1, .flags = WEFT_NODE_NO_CACHE,
    .run = progress_run};

/* ---- TestCount: appends a line to a file each time it runs ---- */
static const weft_port_def count_in[] = {
    {sizeof(weft_port_def), "value", WEFT_TYPE_INT, NULL, 0, NULL},
};
static const weft_param_def count_params[] = {
    {sizeof(weft_param_def), "file", WEFT_TYPE_STRING, 0, 0, "", 1, 0, NULL,
     WEFT_PARAM_PATH, "log file"},
};
static int count_run(weft_call *c) {
  FILE *f = fopen(weft_param_string(c, 0), "a");
  if (!f) {
    c->host->error(c, "%s: %s", weft_param_string(c, 0), strerror(errno));
    return WEFT_EIO;
  }
  fprintf(f, "%s %lld\n", c->node_id,
          (long long)c->host->value_int(c->inputs[0]));
  fclose(f);
  c->outputs[0] = c->host->int_new(c, c->host->value_int(c->inputs[0]));
  return 0;
}
static const weft_node_def test_count = {
    .struct_size = sizeof(weft_node_def), .op = "TestCount",
    .category = "test", .doc = "Passes its input through and logs each run.",
    .inputs = count_in, .n_inputs = 1, .outputs = int_out, .n_outputs = 1,
    .params = count_params, .n_params = 1, .run = count_run};

/* ---- TestNoop: for the dispatch benchmark ---- */
static const weft_port_def noop_in[] = {
    {sizeof(weft_port_def), "in", WEFT_TYPE_INT, NULL, WEFT_PORT_OPTIONAL,
     NULL},
};
static const weft_param_def noop_params[] = {
    {sizeof(weft_param_def), "id", WEFT_TYPE_INT, 0, 0, NULL, 1, 0, NULL, 0,
     "distinguishes nodes"},
};
static int noop_run(weft_call *c) {
  c->outputs[0] = c->host->int_new(c, weft_param_int(c, 0));
  return 0;
}
static const weft_node_def test_noop = {
    .struct_size = sizeof(weft_node_def), .op = "TestNoop",
    .category = "test", .doc = "Does nothing, on the worker pool.",
    .inputs = noop_in, .n_inputs = 1, .outputs = int_out, .n_outputs = 1,
    .params = noop_params, .n_params = 1, .flags = WEFT_NODE_NO_CACHE,
    .run = noop_run};
static const weft_node_def test_noop_inline = {
    .struct_size = sizeof(weft_node_def), .op = "TestNoopInline",
    .category = "test", .doc = "Does nothing, on the scheduler's thread.",
    .inputs = noop_in, .n_inputs = 1, .outputs = int_out, .n_outputs = 1,
    .params = noop_params, .n_params = 1,
    .flags = WEFT_NODE_NO_CACHE | WEFT_NODE_INLINE, .run = noop_run};

/* ---- TestGate: waits until a file exists (tests order runs by it) ---- */
static const weft_param_def gate_params[] = {
    {sizeof(weft_param_def), "file", WEFT_TYPE_STRING, 0, 0, "", 1, 0, NULL,
     WEFT_PARAM_PATH, "waits until this file exists"},
    {sizeof(weft_param_def), "value", WEFT_TYPE_INT, 0, 0, NULL, -1e9, 1e9,
     NULL, 0, "the output"},
};
static int gate_run(weft_call *c) {
  for (int i = 0; i < 10000; i++) {
    if (access(weft_param_string(c, 0), F_OK) == 0) {
      c->outputs[0] = c->host->int_new(c, weft_param_int(c, 1));
      return 0;
    }
    if (c->host->is_cancelled(c)) return WEFT_ECANCELED;
    struct timespec ts = {0, 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  c->host->error(c, "%s never appeared", weft_param_string(c, 0));
  return WEFT_ERUN;
}
static const weft_node_def test_gate = {
    .struct_size = sizeof(weft_node_def), .op = "TestGate",
    .category = "test",
    .doc = "Outputs `value` once `file` exists (10 s max).",
    .outputs = int_out, .n_outputs = 1, .params = gate_params, .n_params = 2,
    .run = gate_run};

/* ---- TestRunInfo: what the host tells a node about its run ---- */
static const weft_param_def info_params[] = {
    {sizeof(weft_param_def), "key", WEFT_TYPE_STRING, 0, 0, "inputs", 1, 0,
     NULL, 0, "output_dir, input_dir, or a run_info key"},
};
static const weft_port_def info_in[] = {
    {sizeof(weft_port_def), "after", WEFT_TYPE_INT, NULL, WEFT_PORT_OPTIONAL,
     "runs after this"},
};
static int info_run(weft_call *c) {
  const char *key = weft_param_string(c, 0), *v;
  if (!strcmp(key, "output_dir"))
    v = c->host->output_dir(c);
  else if (!strcmp(key, "input_dir"))
    v = c->host->input_dir(c);
  else
    v = c->host->run_info(c, key);
  c->outputs[0] = c->host->string_new(c, v ? v : "(null)");
  return 0;
}
static const weft_node_def test_run_info = {
    .struct_size = sizeof(weft_node_def), .op = "TestRunInfo",
    .category = "test", .doc = "Outputs a directory or a run_info string.",
    .inputs = info_in, .n_inputs = 1, .outputs = str_out, .n_outputs = 1,
    .params = info_params, .n_params = 1, .flags = WEFT_NODE_NO_CACHE,
    .run = info_run};

/* ---- TestState: an instance with state that must not run twice at once -- */
typedef struct tstate {
  pthread_mutex_t m;
  int running, max_running;
} tstate;
static int state_create(weft_call *c, void **state) {
  (void)c;
  tstate *t = calloc(1, sizeof *t);
  if (!t) return WEFT_ENOMEM;
  pthread_mutex_init(&t->m, NULL);
  *state = t;
  return 0;
}
static void state_destroy(void *state) {
  tstate *t = state;
  pthread_mutex_destroy(&t->m);
  free(t);
}
static int state_run(weft_call *c) {
  tstate *t = c->state;
  pthread_mutex_lock(&t->m);
  int now = ++t->running;
  if (now > t->max_running) t->max_running = now;
  pthread_mutex_unlock(&t->m);
  struct timespec ts = {0, 20 * 1000 * 1000};
  nanosleep(&ts, NULL);
  pthread_mutex_lock(&t->m);
  t->running--;
  int max = t->max_running;
  pthread_mutex_unlock(&t->m);
  /* how many calls of this instance ran at once, at most, so far */
  c->outputs[0] = c->host->int_new(c, max);
  return 0;
}
static const weft_node_def test_state = {
    .struct_size = sizeof(weft_node_def), .op = "TestState",
    .category = "test",
    .doc = "Outputs how many runs of this node instance overlapped, at most.",
    .inputs = noop_in, .n_inputs = 1, .outputs = int_out, .n_outputs = 1,
    .params = noop_params, .n_params = 1, .flags = WEFT_NODE_NO_CACHE,
    .create = state_create, .run = state_run, .destroy = state_destroy};

static const weft_node_def *const nodes[] = {
    &test_int,  &test_add,  &test_string, &test_image, &test_fail,
    &test_barrier, &test_spin, &test_count, &test_noop, &test_noop_inline,
    &test_progress, &test_gate, &test_run_info, &test_state};

WEFT_PLUGIN_DEFINE("testnodes", "1.0", nodes)
