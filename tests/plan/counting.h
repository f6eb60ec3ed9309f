/* counting.h - a CPU backend that counts what reaches it (buffer_alloc,
 * buffer_free, copies, two ops), for the recorder tests: a recorder's
 * inner backend must see no allocation in a replayed step.  Test-only.
 *
 * It shares the CPU backend's context (be.ctx), so every op it does not
 * count is the CPU backend's own function; the counters live beside the
 * weft_backend, which is the struct's first member. */
#ifndef WEFT_TEST_PLAN_COUNTING_H
#define WEFT_TEST_PLAN_COUNTING_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"

/* An op a graph holds (cnt_graphs_on): act, scale_add or a device copy. */
typedef struct cnt_call {
  int kind; /* 0 act, 1 scale_add, 2 copy */
  weft_act act;
  float *y;
  const float *a, *b;
  float alpha, beta;
  int64_t n; /* elements (bytes for a copy) */
} cnt_call;

typedef struct cnt_graph {
  cnt_call *calls;
  int n, cap;
} cnt_graph;

typedef struct cnt_backend {
  weft_backend be; /* first: a weft_backend * is a cnt_backend * */
  weft_backend_iface iface;
  weft_backend *cpu;
  int64_t allocs, frees, copies, ops, live;
  /* graphs: ops between begin and end are queued, not run (nor counted
   * in ops); a host copy there fails the capture, as on CUDA */
  cnt_graph *open;
  bool broken;                   /* the open capture failed */
  bool refuse_begin, refuse_end; /* a test's failures */
  int64_t begins, ends, launches, launched_ops, graphs_live;
} cnt_backend;

#define CNT(b) ((cnt_backend *)(b))

static int cnt_run(weft_backend *cpu, const cnt_call *c) {
  switch (c->kind) {
  case 0: return cpu->iface->act(cpu, c->act, c->a, c->y, c->n);
  case 1:
    return cpu->iface->scale_add(cpu, c->y, c->alpha, c->a, c->beta, c->b,
                                 c->n);
  default:
    return cpu->iface->buffer_copy(cpu, c->y, c->a, (size_t)c->n,
                                   WEFT_COPY_DEVICE_TO_DEVICE);
  }
}

/* Queues c in the open capture: true, or false (run it) when none. */
static bool cnt_queue(cnt_backend *c, cnt_call call) {
  cnt_graph *g = c->open;
  if (!g) return false;
  if (g->n == g->cap) {
    g->cap = g->cap ? 2 * g->cap : 16;
    g->calls = realloc(g->calls, (size_t)g->cap * sizeof *g->calls);
  }
  g->calls[g->n++] = call;
  return true;
}

static void cnt_free(weft_backend *be) {
  weft_backend_free(CNT(be)->cpu);
  free(be);
}
static void *cnt_alloc(weft_backend *be, size_t n) {
  CNT(be)->allocs++;
  CNT(be)->live++;
  return CNT(be)->cpu->iface->buffer_alloc(CNT(be)->cpu, n);
}
static void cnt_buf_free(weft_backend *be, void *p) {
  CNT(be)->frees++;
  CNT(be)->live--;
  CNT(be)->cpu->iface->buffer_free(CNT(be)->cpu, p);
}
static int cnt_copy(weft_backend *be, void *d, const void *s, size_t n,
                    weft_copy_kind k) {
  cnt_backend *c = CNT(be);
  if (c->open && k != WEFT_COPY_DEVICE_TO_DEVICE) {
    c->broken = true;
    return WEFT_EDEVICE;
  }
  if (cnt_queue(c, (cnt_call){2, 0, d, s, NULL, 0, 0, (int64_t)n})) return 0;
  c->copies++;
  return c->cpu->iface->buffer_copy(c->cpu, d, s, n, k);
}
static int cnt_scale_add(weft_backend *be, float *y, float a, const float *x,
                         float b, const float *z, int64_t n) {
  cnt_backend *c = CNT(be);
  if (cnt_queue(c, (cnt_call){1, 0, y, x, z, a, b, n})) return 0;
  c->ops++;
  return c->cpu->iface->scale_add(c->cpu, y, a, x, b, z, n);
}
static int cnt_act(weft_backend *be, weft_act act, const float *x, float *y,
                   int64_t n) {
  cnt_backend *c = CNT(be);
  if (cnt_queue(c, (cnt_call){0, act, y, x, NULL, 0, 0, n})) return 0;
  c->ops++;
  return c->cpu->iface->act(c->cpu, act, x, y, n);
}

static int cnt_graph_begin(weft_backend *be) {
  cnt_backend *c = CNT(be);
  if (c->refuse_begin || c->open) return WEFT_EDEVICE;
  c->begins++;
  c->open = calloc(1, sizeof *c->open);
  c->broken = false;
  return 0;
}
static int cnt_graph_end(weft_backend *be, void **graph) {
  cnt_backend *c = CNT(be);
  cnt_graph *g = c->open;
  *graph = NULL;
  if (!g) return WEFT_EINVAL;
  c->open = NULL;
  c->ends++;
  if (c->broken || c->refuse_end) {
    free(g->calls), free(g);
    return WEFT_EDEVICE;
  }
  c->graphs_live++;
  *graph = g;
  return 0;
}
static int cnt_graph_launch(weft_backend *be, void *graph) {
  cnt_backend *c = CNT(be);
  const cnt_graph *g = graph;
  c->launches++;
  for (int i = 0; i < g->n; i++) {
    c->launched_ops++;
    int rc = cnt_run(c->cpu, &g->calls[i]);
    if (rc) return rc;
  }
  return 0;
}
static void cnt_graph_free(weft_backend *be, void *graph) {
  cnt_graph *g = graph;
  if (!g) return;
  CNT(be)->graphs_live--;
  free(g->calls), free(g);
}

/* Gives c's backend the four graph members (backend.h). */
static inline void cnt_graphs_on(weft_backend *be) {
  cnt_backend *c = CNT(be);
  c->iface.graph_begin = cnt_graph_begin;
  c->iface.graph_end = cnt_graph_end;
  c->iface.graph_launch = cnt_graph_launch;
  c->iface.graph_free = cnt_graph_free;
}

/* A counting CPU backend (2 threads); device says it is a device (its
 * buffers still host memory: only DRY recordings may be run on such a
 * one).  (transfer full: weft_backend_free) */
static inline weft_backend *cnt_backend_new(bool device) {
  cnt_backend *c = calloc(1, sizeof *c);
  if (!c || !(c->cpu = weft_backend_cpu_new(2))) {
    free(c);
    return NULL;
  }
  c->iface = *c->cpu->iface;
  c->iface.name = "counting";
  if (device) c->iface.device_kind = WEFT_DEVICE_KIND_CUDA;
  c->iface.free = cnt_free;
  c->iface.buffer_alloc = cnt_alloc;
  c->iface.buffer_free = cnt_buf_free;
  c->iface.buffer_copy = cnt_copy;
  c->iface.scale_add = cnt_scale_add;
  c->iface.act = cnt_act;
  c->be.iface = &c->iface;
  c->be.ctx = c->cpu->ctx;
  return &c->be;
}

#endif
