/* bench_dispatch.c - how long the scheduler takes per node: runs graphs of
 * 1000 no-op nodes (a chain, where every node waits for the previous one,
 * and a fan of independent nodes) and prints microseconds per node, then
 * writes the same numbers as JSON.
 *   bench_dispatch [--nodes N] [--reps R] [--json FILE] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "weft/weft.h"

const weft_plugin *weft_plugin_entry(const weft_host *host);

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static char *graph_text(int n, int chain, const char *op) {
  size_t cap = (size_t)n * 96 + 64, len = 0;
  char *s = malloc(cap);
  len += (size_t)snprintf(s + len, cap - len, "version: 1\nnodes:\n");
  for (int i = 0; i < n; i++) {
    if (chain && i > 0)
      len += (size_t)snprintf(s + len, cap - len,
                              "  n%d: {op: %s, params: {id: %d}, inputs: "
                              "{in: n%d.value}}\n",
                              i, op, i, i - 1);
    else
      len += (size_t)snprintf(s + len, cap - len,
                              "  n%d: {op: %s, params: {id: %d}}\n", i, op,
                              i);
  }
  return s;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Returns the median microseconds per node over reps runs. */
static double bench(weft_ctx *ctx, int n, int chain, const char *op, int reps,
                    double *load) {
  char *text = graph_text(n, chain, op);
  weft_graph *g = NULL;
  double t0 = now();
  if (weft_graph_load_string(ctx, text, strlen(text), "bench.yaml", &g)) {
    fprintf(stderr, "bench: %s\n", weft_ctx_error(ctx));
    exit(1);
  }
  *load = (now() - t0) * 1e6 / n;
  free(text);
  double *t = malloc((size_t)reps * sizeof *t);
  for (int r = 0; r < reps; r++) {
    double a = now();
    if (weft_graph_run(ctx, g)) {
      fprintf(stderr, "bench: %s\n", weft_ctx_error(ctx));
      exit(1);
    }
    t[r] = (now() - a) * 1e6 / n;
  }
  qsort(t, (size_t)reps, sizeof *t, cmp_d);
  double med = t[reps / 2];
  free(t);
  weft_graph_free(g);
  return med;
}

int main(int argc, char **argv) {
  int n = 1000, reps = 21;
  const char *json = "bench_dispatch.json";
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--nodes") && i + 1 < argc)
      n = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
      reps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--json") && i + 1 < argc)
      json = argv[++i];
    else {
      fprintf(stderr, "usage: bench_dispatch [--nodes N] [--reps R] "
                      "[--json FILE]\n");
      return 2;
    }
  }
  if (n < 1 || reps < 1) return 2;
  weft_ctx *ctx;
  if (weft_ctx_new(&ctx) ||
      weft_plugin_register(ctx, weft_plugin_entry(NULL), "testnodes"))
    return 1;
  static const struct {
    const char *name, *op;
    int chain;
  } cases[] = {
      {"chain, worker pool", "TestNoop", 1},
      {"fan, worker pool", "TestNoop", 0},
      {"chain, inline", "TestNoopInline", 1},
      {"fan, inline", "TestNoopInline", 0},
  };
  double run[4], load[4];
  printf("%d no-op nodes, median of %d runs\n", n, reps);
  printf("%-22s %14s %14s\n", "graph", "us/node run", "us/node load");
  for (int i = 0; i < 4; i++) {
    run[i] = bench(ctx, n, cases[i].chain, cases[i].op, reps, &load[i]);
    printf("%-22s %14.2f %14.2f\n", cases[i].name, run[i], load[i]);
  }
  printf("target: <= 5 us per node dispatch\n"
         "(a chain on the worker pool pays two thread wake-ups per node; "
         "nodes flagged WEFT_NODE_INLINE skip them)\n");
  FILE *f = fopen(json, "w");
  if (f) {
    fprintf(f, "{\"nodes\": %d, \"reps\": %d, \"target_us\": 5, \"cases\": [",
            n, reps);
    for (int i = 0; i < 4; i++)
      fprintf(f, "%s{\"graph\": \"%s\", \"us_per_node\": %.3f, "
                 "\"load_us_per_node\": %.3f}", i ? ", " : "", cases[i].name,
              run[i], load[i]);
    fprintf(f, "]}\n");
    fclose(f);
    printf("wrote %s\n", json);
  }
  weft_ctx_free(ctx);
  return 0;
}
