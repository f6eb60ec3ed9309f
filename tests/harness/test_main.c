/* test_main.c - the runner behind test.h: registry, selection, TAP output. */
#define _POSIX_C_SOURCE 200809L
#include "test.h"

#include <sys/wait.h>
#include <unistd.h>

#define MAX_TESTS 1024

typedef struct {
  const char *name;
  weft_test_fn fn;
} test_entry;

static test_entry g_tests[MAX_TESTS];
static int g_n;

void weft_test_register(const char *name, weft_test_fn fn) {
  if (g_n < MAX_TESTS) g_tests[g_n++] = (test_entry){name, fn};
}

static int run_one(const test_entry *t) {
  t->fn();
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "--list") == 0) {
    for (int i = 0; i < g_n; i++) printf("%s\n", g_tests[i].name);
    return 0;
  }
  if (argc == 2) { /* one case, in this process: what meson runs */
    for (int i = 0; i < g_n; i++)
      if (strcmp(g_tests[i].name, argv[1]) == 0) return run_one(&g_tests[i]);
    fprintf(stderr, "no test named '%s'\n", argv[1]);
    return 2;
  }
  /* every case, each in a child process, TAP on stdout */
  int failed = 0;
  printf("1..%d\n", g_n);
  for (int i = 0; i < g_n; i++) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) _exit(run_one(&g_tests[i]));
    int st = 0;
    waitpid(pid, &st, 0);
    int ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    int skip = WIFEXITED(st) && WEXITSTATUS(st) == 77;
    if (!ok && !skip) failed++;
    printf("%s %d - %s%s\n", ok || skip ? "ok" : "not ok", i + 1,
           g_tests[i].name, skip ? " # SKIP" : "");
  }
  return failed ? 1 : 0;
}
