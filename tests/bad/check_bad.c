/* check_bad.c - runs `weft validate` on one file of the bad-input corpus and
 * checks the exit code and the exact "file:line:col: message" it prints,
 * as listed in tests/bad/expected.tsv (name, exit code, location+message). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: check_bad NAME\n");
    return 2;
  }
  char tsv[4096];
  snprintf(tsv, sizeof tsv, "%s/bad/expected.tsv", weft_test_srcdir());
  char *table = weft_test_read_file(tsv, NULL);
  if (!table) {
    fprintf(stderr, "cannot read %s\n", tsv);
    return 1;
  }
  int want_code = -1;
  const char *want_msg = NULL;
  for (char *line = strtok(table, "\n"); line; line = strtok(NULL, "\n")) {
    char *t1 = strchr(line, '\t');
    if (!t1) continue;
    *t1 = 0;
    char *t2 = strchr(t1 + 1, '\t');
    if (!t2 || strcmp(line, argv[1]) != 0) continue;
    *t2 = 0;
    want_code = atoi(t1 + 1);
    want_msg = t2 + 1;
  }
  if (!want_msg) {
    fprintf(stderr, "%s is not listed in %s\n", argv[1], tsv);
    return 1;
  }
  char yaml[4096], expect[8192];
  snprintf(yaml, sizeof yaml, "%s/bad/%s.yaml", weft_test_srcdir(), argv[1]);
  snprintf(expect, sizeof expect, "weft: %s:%s\n", yaml, want_msg);
  const char *args[] = {weft_test_built("cli/weft"), "validate", "--plugin-dir",
                        getenv("WEFT_TEST_PLUGINS"), yaml, NULL};
  char *err = NULL;
  int code = weft_test_spawn(args, NULL, &err, 30);
  int ok = code == want_code && strcmp(err, expect) == 0;
  if (!ok)
    fprintf(stderr, "exit %d (want %d)\n got: %s want: %s", code, want_code,
            err, expect);
  free(err);
  free(table);
  return ok ? 0 : 1;
}
