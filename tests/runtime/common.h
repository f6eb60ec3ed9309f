/* common.h - shared set-up for the runtime tests: a context with the test
 * plugin loaded, graph loading from a string, and an event recorder. */
#ifndef WEFT_TEST_RUNTIME_COMMON_H
#define WEFT_TEST_RUNTIME_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "test.h"

static inline weft_ctx *test_ctx(void) {
  weft_ctx *ctx;
  ASSERT_OK(weft_ctx_new(&ctx));
  char path[4096];
  snprintf(path, sizeof path, "%s/testnodes.so", getenv("WEFT_TEST_PLUGINS"));
  int r = weft_plugin_load(ctx, path);
  if (r) fprintf(stderr, "%s\n", weft_ctx_error(ctx));
  ASSERT_OK(r);
  weft_ctx_set_output_dir(ctx, weft_test_tmpdir());
  return ctx;
}

/* Loads tests/plugins/NAME.so of the build tree into ctx. */
static inline void test_load_plugin(weft_ctx *ctx, const char *name) {
  char path[4096];
  snprintf(path, sizeof path, "%s/tests/plugins/%s.so",
           getenv("WEFT_TEST_BUILDDIR"), name);
  int r = weft_plugin_load(ctx, path);
  if (r) fprintf(stderr, "%s\n", weft_ctx_error(ctx));
  ASSERT_OK(r);
}

static inline int load(weft_ctx *ctx, const char *yaml, weft_graph **g) {
  return weft_graph_load_string(ctx, yaml, strlen(yaml), "g.yaml", g);
}

/* Records events as "kind:node" strings for order checks. */
typedef struct rec {
  char ev[512][96];
  int n;
} rec;

static inline void rec_cb(const weft_event *e, void *user) {
  rec *r = user;
  static const char *const k[] = {"run_start", "start", "progress", "done",
                                  "cached",    "failed", "log", "run_done"};
  if (r->n < 512 && e->kind != WEFT_EV_NODE_PROGRESS)
    snprintf(r->ev[r->n++], 96, "%s:%s", k[e->kind],
             e->node_id ? e->node_id : "");
}

static inline int rec_find(const rec *r, const char *s) {
  for (int i = 0; i < r->n; i++)
    if (strcmp(r->ev[i], s) == 0) return i;
  return -1;
}

static inline int rec_count_prefix(const rec *r, const char *prefix) {
  int n = 0;
  for (int i = 0; i < r->n; i++)
    if (strncmp(r->ev[i], prefix, strlen(prefix)) == 0) n++;
  return n;
}

#endif
