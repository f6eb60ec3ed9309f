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

typedef struct cnt_backend {
  weft_backend be; /* first: a weft_backend * is a cnt_backend * */
  weft_backend_iface iface;
  weft_backend *cpu;
  int64_t allocs, frees, copies, ops, live;
} cnt_backend;

#define CNT(b) ((cnt_backend *)(b))

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
  CNT(be)->copies++;
  return CNT(be)->cpu->iface->buffer_copy(CNT(be)->cpu, d, s, n, k);
}
static int cnt_scale_add(weft_backend *be, float *y, float a, const float *x,
                         float b, const float *z, int64_t n) {
  CNT(be)->ops++;
  return CNT(be)->cpu->iface->scale_add(CNT(be)->cpu, y, a, x, b, z, n);
}
static int cnt_act(weft_backend *be, weft_act act, const float *x, float *y,
                   int64_t n) {
  CNT(be)->ops++;
  return CNT(be)->cpu->iface->act(CNT(be)->cpu, act, x, y, n);
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
