/* test_cli.c - the weft command, run as a user would: exit codes, output,
 * events, errors and Ctrl-C. */
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

static const char *weft(void) { return weft_test_built("cli/weft"); }

static const char *graph(const char *name) {
  static char p[4][4096];
  static int k;
  char *s = p[k++ % 4];
  snprintf(s, 4096, "%s/cli/graphs/%s", weft_test_srcdir(), name);
  return s;
}

static const char *plugins(void) { return getenv("WEFT_TEST_PLUGINS"); }

TEST(version_prints_version_and_abi) {
  const char *a[] = {weft(), "--version", NULL};
  char *out;
  ASSERT_EQ(weft_test_spawn(a, &out, NULL, 10), 0);
  ASSERT_CONTAINS(out, "weft 0.1.0 (plugin ABI 1.4)");
  free(out);
}

TEST(help_lists_commands) {
  const char *a[] = {weft(), "--help", NULL};
  char *out;
  ASSERT_EQ(weft_test_spawn(a, &out, NULL, 10), 0);
  ASSERT_CONTAINS(out, "usage: weft <command>");
  ASSERT_CONTAINS(out, "  run ");
  ASSERT_CONTAINS(out, "  validate ");
  ASSERT_CONTAINS(out, "  inspect ");
  free(out);
  const char *b[] = {weft(), "run", "--help", NULL};
  ASSERT_EQ(weft_test_spawn(b, &out, NULL, 10), 0);
  ASSERT_CONTAINS(out, "usage: weft run GRAPH [options]");
  ASSERT_CONTAINS(out, "ComfyUI API workflow");
  ASSERT_CONTAINS(out, "--set NAME=VALUE");
  free(out);
}

TEST(unknown_command_suggests_and_exits_2) {
  const char *a[] = {weft(), "rnu", NULL};
  char *err;
  ASSERT_EQ(weft_test_spawn(a, NULL, &err, 10), 2);
  ASSERT_CONTAINS(err, "weft: unknown command 'rnu' (did you mean 'run'?)");
  free(err);
}

TEST(run_prints_outputs_and_exits_0) {
  const char *a[] = {weft(), "run", "--plugin-dir", plugins(), graph("sum.yaml"),
                     "--set", "x=10", NULL};
  char *out, *err;
  ASSERT_EQ(weft_test_spawn(a, &out, &err, 20), 0);
  ASSERT_STR_EQ(out, "total: 13\n");
  ASSERT_STR_EQ(err, ""); /* not a terminal: no progress line */
  free(out);
  free(err);
}

TEST(run_events_json_are_one_object_per_line_in_order) {
  const char *a[] = {weft(), "run", "--plugin-dir", plugins(), "--events=json",
                     graph("sum.yaml"), NULL};
  char *out;
  ASSERT_EQ(weft_test_spawn(a, &out, NULL, 20), 0);
  char *start_sum = strstr(out, "{\"event\":\"node_start\"");
  ASSERT(start_sum != NULL);
  ASSERT_CONTAINS(out, "\"event\":\"run_start\"");
  ASSERT_CONTAINS(out, "\"event\":\"node_done\"");
  ASSERT_CONTAINS(out, "\"node\":\"sum\",\"op\":\"TestAdd\"");
  ASSERT_CONTAINS(out, "\"event\":\"run_done\"");
  ASSERT_CONTAINS(out, "\"status\":\"OK\",\"done\":3,\"cached\":0,\"total\":3");
  /* every line is a JSON object; run_start first, run_done last */
  ASSERT(strncmp(out, "{\"event\":\"run_start\"", 20) == 0);
  int lines = 0;
  for (char *p = out; *p; p++)
    if (*p == '\n') {
      lines++;
      ASSERT(p[-1] == '}');
    }
  ASSERT_EQ(lines, 1 + 3 + 3 + 1 + 1); /* starts, dones, outputs line */
  ASSERT_CONTAINS(out, "{\"event\":\"output\",\"name\":\"total\",\"value\":\"5\"}\n");
  free(out);
}

TEST(failing_node_exits_1_naming_node) {
  const char *a[] = {weft(), "run", "--plugin-dir", plugins(),
                     graph("fail.yaml"), NULL};
  char *err;
  ASSERT_EQ(weft_test_spawn(a, NULL, &err, 20), 1);
  ASSERT_STR_EQ(err, "weft: node 'bad' (TestFail) failed: out of paint\n");
  free(err);
}

TEST(bad_set_and_bad_options_exit_2) {
  const char *a[] = {weft(), "run", "--plugin-dir", plugins(),
                     graph("sum.yaml"), "--set", "x=many", NULL};
  char *err;
  ASSERT_EQ(weft_test_spawn(a, NULL, &err, 20), 2);
  ASSERT_STR_EQ(err, "weft: --set x: 'many' is not an integer (INT)\n");
  free(err);
  const char *b[] = {weft(), "run", graph("sum.yaml"), "--set", "novalue",
                     NULL};
  ASSERT_EQ(weft_test_spawn(b, NULL, &err, 20), 2);
  ASSERT_CONTAINS(err, "--set novalue: expected name=value");
  free(err);
  const char *c[] = {weft(), "run", "--threads", "0", graph("sum.yaml"), NULL};
  ASSERT_EQ(weft_test_spawn(c, NULL, &err, 20), 2);
  free(err);
  const char *d[] = {weft(), "run", "--events", "xml", graph("sum.yaml"), NULL};
  ASSERT_EQ(weft_test_spawn(d, NULL, &err, 20), 2);
  ASSERT_CONTAINS(err, "--events xml: expected auto, tty, json or none");
  free(err);
  const char *bad_vram[] = {"1.5x", "-1G", "0", "", "G", "1e30T"};
  for (size_t i = 0; i < sizeof bad_vram / sizeof *bad_vram; i++) {
    const char *e[] = {weft(), "run", "--vram", bad_vram[i],
                       graph("sum.yaml"), NULL};
    ASSERT_EQ(weft_test_spawn(e, NULL, &err, 20), 2);
    ASSERT_CONTAINS(err, "expected a positive byte count");
    free(err);
  }
  /* good sizes pass the option and the graph runs */
  const char *good_vram[] = {"1.5G", "1536MiB", "512k", "1500000000"};
  for (size_t i = 0; i < sizeof good_vram / sizeof *good_vram; i++) {
    const char *e[] = {weft(),      "run",  "--plugin-dir",    plugins(),
                       "--vram",    good_vram[i], graph("sum.yaml"), "-q",
                       NULL};
    ASSERT_EQ(weft_test_spawn(e, NULL, &err, 20), 0);
    free(err);
  }
}

TEST(missing_graph_file_exits_2) {
  const char *a[] = {weft(), "validate", "/nonexistent/g.yaml", NULL};
  char *err;
  ASSERT_EQ(weft_test_spawn(a, NULL, &err, 20), 2);
  ASSERT_STR_EQ(err, "weft: /nonexistent/g.yaml: cannot open graph: No such "
                     "file or directory\n");
  free(err);
}

TEST(validate_ok_counts_nodes) {
  const char *a[] = {weft(), "validate", "--plugin-dir", plugins(),
                     graph("sum.yaml"), NULL};
  char *out;
  ASSERT_EQ(weft_test_spawn(a, &out, NULL, 20), 0);
  ASSERT_CONTAINS(out, "sum.yaml: ok (3 nodes)");
  free(out);
}

TEST(nodes_lists_and_documents_ops) {
  const char *a[] = {weft(), "nodes", "--plugin-dir", plugins(), NULL};
  char *out;
  ASSERT_EQ(weft_test_spawn(a, &out, NULL, 20), 0);
  ASSERT_CONTAINS(out, "TestAdd                      test                     "
                       "testnodes.so");
  free(out);
  const char *b[] = {weft(), "nodes", "--plugin-dir", plugins(), "TestAdd",
                     NULL};
  ASSERT_EQ(weft_test_spawn(b, &out, NULL, 20), 0);
  ASSERT_CONTAINS(out, "Adds or subtracts two integers.");
  ASSERT_CONTAINS(out, "one of: add, subtract");
  ASSERT_CONTAINS(out, "Plugin: ");
  free(out);
  const char *c[] = {weft(), "nodes", "--plugin-dir", plugins(), "TestAd",
                     NULL};
  char *err;
  ASSERT_EQ(weft_test_spawn(c, NULL, &err, 20), 2);
  ASSERT_STR_EQ(err, "weft: no node type 'TestAd' (did you mean 'TestAdd'?)\n");
  free(err);
}

TEST(graph_dot_prints_graphviz) {
  const char *a[] = {weft(), "graph", "--dot", "--plugin-dir", plugins(),
                     graph("sum.yaml"), NULL};
  char *out;
  ASSERT_EQ(weft_test_spawn(a, &out, NULL, 20), 0);
  ASSERT(strncmp(out, "digraph weft {", 14) == 0);
  ASSERT_CONTAINS(out, "\"b\" -> \"sum\"");
  free(out);
}

TEST(plugin_path_env_is_searched) {
  setenv("WEFT_PLUGIN_PATH", plugins(), 1);
  const char *a[] = {weft(), "validate", graph("sum.yaml"), NULL};
  char *out;
  ASSERT_EQ(weft_test_spawn(a, &out, NULL, 20), 0);
  free(out);
  unsetenv("WEFT_PLUGIN_PATH");
  char *err;
  ASSERT_EQ(weft_test_spawn(a, NULL, &err, 20), 2);
  ASSERT_CONTAINS(err, "unknown op 'TestInt'");
  free(err);
}

TEST(bad_weft_threads_env_exits_2) {
  setenv("WEFT_THREADS", "lots", 1);
  const char *a[] = {weft(), "validate", "--plugin-dir", plugins(),
                     graph("sum.yaml"), NULL};
  char *err;
  ASSERT_EQ(weft_test_spawn(a, NULL, &err, 20), 2);
  ASSERT_CONTAINS(err, "WEFT_THREADS=lots");
  free(err);
  unsetenv("WEFT_THREADS");
}

TEST(sigint_cancels_cleanly_with_exit_130) {
  int po[2];
  ASSERT_OK(pipe(po));
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, po[1], 1);
  posix_spawn_file_actions_addclose(&fa, po[0]);
  const char *a[] = {weft(), "run", "--plugin-dir", plugins(), "--events=json",
                     graph("spin.yaml"), NULL};
  extern char **environ;
  pid_t pid;
  ASSERT_OK(posix_spawn(&pid, a[0], &fa, NULL, (char *const *)a, environ));
  posix_spawn_file_actions_destroy(&fa);
  close(po[1]);
  /* wait until the node reports progress: it is running, inside the loop */
  FILE *f = fdopen(po[0], "r");
  char line[1024];
  int progress = 0;
  while (!progress && fgets(line, sizeof line, f))
    progress = strstr(line, "\"event\":\"progress\"") != NULL;
  ASSERT(progress);
  kill(pid, SIGINT);
  char rest[65536];
  size_t n = fread(rest, 1, sizeof rest - 1, f);
  rest[n] = 0;
  fclose(f);
  int st;
  ASSERT_EQ(waitpid(pid, &st, 0), pid);
  ASSERT(WIFEXITED(st));
  ASSERT_EQ(WEXITSTATUS(st), 130);
  ASSERT_CONTAINS(rest, "\"event\":\"node_failed\"");
  ASSERT_CONTAINS(rest, "\"error\":\"ECANCELED\"");
  ASSERT_CONTAINS(rest, "\"status\":\"ECANCELED\"");
}

TEST(tokenize_prints_chunks_and_weights) {
  const char *a[] = {weft(), "tokenize", "a", "photo", "of", "a", "(cat:1.5)",
                     NULL};
  char *out;
  ASSERT_EQ(weft_test_spawn(a, &out, NULL, 30), 0);
  ASSERT_STR_EQ(out, "chunk 1/1: 49406 320 1125 539 320 2368:1.5 49407 "
                     "(+70 pad)\n");
  free(out);
  const char *b[] = {weft(), "tokenize", "--json", "a photo of a cat", NULL};
  ASSERT_EQ(weft_test_spawn(b, &out, NULL, 30), 0);
  ASSERT(strncmp(out, "{\"n_chunks\":1,\"chunks\":[{\"ids\":[49406,320,1125,539,"
                      "320,2368,49407,49407,", 70) == 0);
  free(out);
  const char *c[] = {weft(), "tokenize", NULL};
  ASSERT_EQ(weft_test_spawn(c, NULL, NULL, 30), 2);
}
