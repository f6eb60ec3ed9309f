/* bench_dispatch.c - how long the scheduler takes per node: runs graphs of
 * 1000 no-op nodes (a chain, where every node waits for the previous one,
 * and a fan of independent nodes; on the worker pool and inline), a chain
 * of cacheable nodes (keys hashed, outputs cached, new keys every run), and
 * the pool chain again with worker-side continuation off
 * (WEFT_SCHED_NO_CONTINUE=1, every node through the loop), and prints
 * microseconds per node (median and best of R runs), then writes the same
 * numbers as JSON.
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

/* op "cached": TestInt($seed) then a chain of TestAdd (cacheable). */
static char *graph_text(int n, int chain, const char *op) {
  size_t cap = (size_t)n * 96 + 128, len = 0;
  char *s = malloc(cap);
  if (!s) exit(1);
  len += (size_t)snprintf(s + len, cap - len,
                          "version: 1\ninputs: {seed: 0}\nnodes:\n");
  for (int i = 0; i < n; i++) {
    if (!strcmp(op, "cached"))
      len +=
          (size_t)snprintf(s + len, cap - len,
                           i ? "  n%d: {op: TestAdd, inputs: {a: n%d.value}}\n"
                             : "  n%d: {op: TestInt, params: {value: $seed}}\n",
                           i, i - 1);
    else if (chain && i > 0)
      len += (size_t)snprintf(s + len, cap - len,
                              "  n%d: {op: %s, params: {id: %d}, inputs: "
                              "{in: n%d.value}}\n",
                              i, op, i, i - 1);
    else
      len += (size_t)snprintf(s + len, cap - len,
                              "  n%d: {op: %s, params: {id: %d}}\n", i, op, i);
  }
  return s;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Returns the median microseconds per node over reps runs; *best the
 * fastest run's. */
static double bench(weft_ctx *ctx, int n, int chain, const char *op, int reps,
                    double *load, double *best) {
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
    char seed[32];
    snprintf(seed, sizeof seed, "%d", r + 1); /* new keys: nothing cached */
    if (weft_graph_set_input(ctx, g, "seed", seed)) {
      fprintf(stderr, "bench: %s\n", weft_ctx_error(ctx));
      exit(1);
    }
    double a = now();
    if (weft_graph_run(ctx, g)) {
      fprintf(stderr, "bench: %s\n", weft_ctx_error(ctx));
      exit(1);
    }
    t[r] = (now() - a) * 1e6 / n;
  }
  qsort(t, (size_t)reps, sizeof *t, cmp_d);
  double med = t[reps / 2];
  *best = t[0];
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
    int chain, no_cont;
  } cases[] = {
      {"chain, worker pool", "TestNoop", 1, 0},
      {"fan, worker pool", "TestNoop", 0, 0},
      {"chain, inline", "TestNoopInline", 1, 0},
      {"fan, inline", "TestNoopInline", 0, 0},
      {"chain, pool, cached op", "cached", 1, 0},
      {"chain, pool, via loop", "TestNoop", 1, 1},
  };
  enum { NC = sizeof cases / sizeof cases[0] };
  double run[NC], load[NC], best[NC];
  printf("%d no-op nodes, median (best) of %d runs\n", n, reps);
  printf("%-24s %18s %14s\n", "graph", "us/node run", "us/node load");
  for (int i = 0; i < NC; i++) {
    if (cases[i].no_cont)
      setenv("WEFT_SCHED_NO_CONTINUE", "1", 1);
    else
      unsetenv("WEFT_SCHED_NO_CONTINUE");
    run[i] =
        bench(ctx, n, cases[i].chain, cases[i].op, reps, &load[i], &best[i]);
    printf("%-24s %8.2f (%6.2f) %14.2f\n", cases[i].name, run[i], best[i],
           load[i]);
  }
  unsetenv("WEFT_SCHED_NO_CONTINUE");
  printf("target: <= 5 us per node dispatch\n"
         "(a pool node whose end makes its consumer ready runs that consumer "
         "on its own thread;\n \"via loop\" turns that off: two thread "
         "wake-ups per node; cached op: TestInt then TestAdd, keys\n hashed "
         "and outputs cached, new keys every run)\n");
  FILE *f = fopen(json, "w");
  if (f) {
    fprintf(f, "{\"nodes\": %d, \"reps\": %d, \"target_us\": 5, \"cases\": [",
            n, reps);
    for (int i = 0; i < NC; i++)
      fprintf(f,
              "%s{\"graph\": \"%s\", \"continuation\": %s, \"us_per_node\": "
              "%.3f, \"best_us_per_node\": %.3f, \"load_us_per_node\": %.3f, "
              "\"meets_target\": %s}",
              i ? ", " : "", cases[i].name, cases[i].no_cont ? "false" : "true",
              run[i], best[i], load[i], run[i] <= 5.0 ? "true" : "false");
    fprintf(f, "]}\n");
    fclose(f);
    printf("wrote %s\n", json);
  }
  weft_ctx_free(ctx);
  return 0;
}
