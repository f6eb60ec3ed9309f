/* test_batch.c - `weft batch` run as a user would: job expansion and order,
 * manifest errors, output names and collisions, shards, resume from the
 * ledger, failures, events, Ctrl-C, and kill -9 in the middle of a batch
 * of the tiny SD model. */
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "png_io.h"
#include "test.h"

extern char **environ;

static const char *weft(void) {
  return weft_test_built("cli/weft");
}

static const char *path_in(const char *fmt, const char *name) {
  static char p[8][4096];
  static int k;
  char *s = p[k++ % 8];
  snprintf(s, 4096, fmt, weft_test_srcdir(), name);
  return s;
}

static const char *graph(const char *name) {
  return path_in("%s/batch/%s", name);
}

/* The scheduler variables of whatever runs the tests must not shard them. */
static void clean_env(void) {
  const char *vars[] = {
      "SLURM_ARRAY_TASK_ID",  "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN",
      "SLURM_ARRAY_TASK_MAX", "SLURM_ARRAY_TASK_STEP",  "JOB_COMPLETION_INDEX",
      "WEFT_SHARD",           "WEFT_SHARD_COUNT"};
  for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
    unsetenv(vars[i]);
}

/* Runs `weft batch GRAPH --plugin-dir TESTNODES args... NULL`. */
static int batch(const char *g, char **out, char **err, ...) {
  const char *argv[64];
  int n = 0;
  argv[n++] = weft();
  argv[n++] = "batch";
  argv[n++] = g;
  argv[n++] = "--plugin-dir";
  argv[n++] = getenv("WEFT_TEST_PLUGINS");
  va_list ap;
  va_start(ap, err);
  const char *a;
  while ((a = va_arg(ap, const char *)) && n < 63)
    argv[n++] = a;
  va_end(ap);
  argv[n] = NULL;
  return weft_test_spawn(argv, out, err, 120);
}

static const char *outdir(const char *name) {
  static char p[4][4096];
  static int k;
  char *s = p[k++ % 4];
  snprintf(s, 4096, "%s/%s", weft_test_tmpdir(), name);
  return s;
}

/* The last line of text (without its newline). */
static const char *last_line(const char *text) {
  static char buf[1024];
  size_t n = strlen(text);
  while (n && text[n - 1] == '\n')
    n--;
  size_t s = n;
  while (s && text[s - 1] != '\n')
    s--;
  snprintf(buf, sizeof buf, "%.*s", (int)(n - s), text + s);
  return buf;
}

/* The sorted names in dir, joined with ' ' (hidden ones too). */
static const char *listing(const char *dir) {
  static char buf[16384];
  struct dirent **ents;
  int n = scandir(dir, &ents, NULL, alphasort);
  buf[0] = 0;
  if (n < 0) return "(none)";
  size_t len = 0;
  for (int i = 0; i < n; i++) {
    const char *d = ents[i]->d_name;
    if (strcmp(d, ".") && strcmp(d, ".."))
      len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s",
                              len ? " " : "", d);
    free(ents[i]);
  }
  free(ents);
  return buf;
}

static int count_lines(const char *s) {
  int n = 0;
  for (; s && *s; s++)
    n += *s == '\n';
  return n;
}

static char *ledger_text(const char *dir) {
  char p[4096];
  snprintf(p, sizeof p, "%s/.weft-ledger.jsonl", dir);
  return weft_test_read_file(p, NULL);
}

static void assert_png(const char *dir, const char *name, int w, int h) {
  char p[4096], e[1024];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  weft__png_image img;
  int r = weft__png_read(p, &img, e, sizeof e);
  if (r) fprintf(stderr, "%s\n", e);
  ASSERT_OK(r);
  ASSERT_EQ(img.width, w);
  ASSERT_EQ(img.height, h);
  weft__png_image_free(&img);
}

static char *write_tmp(const char *name, const char *text) {
  return weft_test_write_file(weft_test_tmpdir(), name, text);
}

/* ---- jobs, names, errors (dry runs: nothing runs) ----------------------- */

TEST(help_describes_batch) {
  const char *a[] = {weft(), "batch", "--help", NULL};
  char *out;
  ASSERT_EQ(weft_test_spawn(a, &out, NULL, 10), 0);
  ASSERT_CONTAINS(out, "usage: weft batch GRAPH [--manifest FILE]");
  ASSERT_CONTAINS(out, "--max-failures N");
  free(out);
  const char *b[] = {weft(), "--help", NULL};
  ASSERT_EQ(weft_test_spawn(b, &out, NULL, 10), 0);
  ASSERT_CONTAINS(out, "  batch      run a graph over a manifest or sweeps");
  free(out);
}

TEST(sweeps_expand_in_order_last_varies_fastest) {
  clean_env();
  char *out, *err;
  ASSERT_EQ(batch(graph("flat.yaml"), &out, &err, "--sweep", "label=a,b",
                  "--sweep", "seed=1..3", "--output", "{label}-{seed}.png",
                  "--dry-run", NULL),
            0);
  ASSERT_STR_EQ(out, "0\ta-1.png\t{\"label\":\"a\",\"seed\":\"1\"}\n"
                     "1\ta-2.png\t{\"label\":\"a\",\"seed\":\"2\"}\n"
                     "2\ta-3.png\t{\"label\":\"a\",\"seed\":\"3\"}\n"
                     "3\tb-1.png\t{\"label\":\"b\",\"seed\":\"1\"}\n"
                     "4\tb-2.png\t{\"label\":\"b\",\"seed\":\"2\"}\n"
                     "5\tb-3.png\t{\"label\":\"b\",\"seed\":\"3\"}\n");
  ASSERT_STR_EQ(err, "weft: shard 0/1 (not sharded): 6 of 6 jobs (dry run)\n");
  free(out);
  free(err);
  /* no sweep and no manifest: one job, the default name */
  ASSERT_EQ(batch(graph("flat.yaml"), &out, NULL, "--dry-run", NULL), 0);
  ASSERT_STR_EQ(out, "0\t00000.png\t{}\n");
  free(out);
}

TEST(manifest_rows_times_sweeps) {
  clean_env();
  char *m =
      write_tmp("m.jsonl", "{\"label\": \"Red Circle\", \"value\": 0.25}\n"
                           "\n"
                           "{\"label\": \"blue\"}\n");
  char *out;
  ASSERT_EQ(batch(graph("flat.yaml"), &out, NULL, "--manifest", m, "--sweep",
                  "seed=7,8", "--output", "{label_slug}/{seed:03}-{value}.png",
                  "--dry-run", NULL),
            0);
  ASSERT_STR_EQ(
      out, "0\tred-circle/007-0.25.png\t{\"value\":\"0.25\",\"label\":\"Red "
           "Circle\",\"seed\":\"7\"}\n"
           "1\tred-circle/008-0.25.png\t{\"value\":\"0.25\",\"label\":\"Red "
           "Circle\",\"seed\":\"8\"}\n"
           "2\tblue/007-0.5.png\t{\"label\":\"blue\",\"seed\":\"7\"}\n"
           "3\tblue/008-0.5.png\t{\"label\":\"blue\",\"seed\":\"8\"}\n");
  free(out);
  free(m);
}

TEST(csv_manifest_with_quotes_and_defaults) {
  clean_env();
  char *m = write_tmp("m.csv", "label,seed,value\n"
                               "\"a, \"\"quoted\"\" label\",1,\n"
                               "\"two\nlines\",2,0.75\n");
  char *out;
  ASSERT_EQ(batch(graph("flat.yaml"), &out, NULL, "--manifest", m, "--output",
                  "{label_slug}-{seed}-{value}.png", "--dry-run", NULL),
            0);
  ASSERT_STR_EQ(out, "0\ta-quoted-label-1-0.5.png\t{\"label\":\"a, "
                     "\\\"quoted\\\" label\",\"seed\":\"1\"}\n"
                     "1\ttwo-lines-2-0.75.png\t{\"value\":\"0.75\",\"label\":"
                     "\"two\\nlines\",\"seed\":\"2\"}\n");
  free(out);
  free(m);
}

/* Runs a dry run that must fail with exit 2 and err exactly msg, and
 * checks that nothing was created. */
static void expect_bad(const char *msg, ...) {
  const char *argv[64];
  int n = 0;
  argv[n++] = weft();
  argv[n++] = "batch";
  argv[n++] = graph("flat.yaml");
  argv[n++] = "--plugin-dir";
  argv[n++] = getenv("WEFT_TEST_PLUGINS");
  argv[n++] = "--output-dir";
  argv[n++] = outdir("never");
  va_list ap;
  va_start(ap, msg);
  const char *a;
  while ((a = va_arg(ap, const char *)) && n < 63)
    argv[n++] = a;
  va_end(ap);
  argv[n] = NULL;
  char *err;
  ASSERT_EQ(weft_test_spawn(argv, NULL, &err, 60), 2);
  ASSERT_STR_EQ(err, msg);
  free(err);
  ASSERT(access(outdir("never"), F_OK) != 0);
}

TEST(manifest_errors_name_file_line_and_exit_2) {
  clean_env();
  char *m1 = write_tmp("bad.jsonl", "{\"seed\": 1}\n{\"seed\": 2,}\n");
  char msg[8192];
  snprintf(msg, sizeof msg,
           "weft: %s:2:12: invalid JSON: string or '}' expected near '}'\n",
           m1);
  expect_bad(msg, "--manifest", m1, NULL);
  char *m2 = write_tmp("name.jsonl", "{\"seed\": 1}\n{\"sed\": 2}\n");
  snprintf(msg, sizeof msg,
           "weft: %s:2: the graph has no input 'sed' (did you mean "
           "'seed'?); its inputs: value, width, label, seed\n",
           m2);
  expect_bad(msg, "--manifest", m2, NULL);
  char *m3 = write_tmp("type.jsonl", "{\"seed\": 1}\n\n{\"seed\": \"abc\"}\n");
  snprintf(msg, sizeof msg,
           "weft: %s:3: input 'seed': 'abc' is not an integer (INT)\n", m3);
  expect_bad(msg, "--manifest", m3, NULL);
  char *m4 = write_tmp("range.jsonl", "{\"value\": 1.5}\n");
  snprintf(msg, sizeof msg,
           "weft: %s:1: input 'value': 1.5 is outside [0, 1]\n", m4);
  expect_bad(msg, "--manifest", m4, NULL);
  char *m5 = write_tmp("cols.csv", "seed,label\n1,a\n2,b,c\n");
  snprintf(msg, sizeof msg,
           "weft: %s:3: 3 fields, but the header (line 1) has 2\n", m5);
  expect_bad(msg, "--manifest", m5, NULL);
  char *m6 = write_tmp("head.csv", "seed,lable\n1,a\n");
  snprintf(msg, sizeof msg,
           "weft: %s:1: the graph has no input 'lable' (did you mean "
           "'label'?); its inputs: value, width, label, seed\n",
           m6);
  expect_bad(msg, "--manifest", m6, NULL);
  char *m7 = write_tmp("both.jsonl", "{\"label\": \"x\"}\n{\"seed\": 4}\n");
  snprintf(msg, sizeof msg,
           "weft: %s:2: input 'seed' is set here and swept by --sweep "
           "seed=1,2; drop one\n",
           m7);
  expect_bad(msg, "--manifest", m7, "--sweep", "seed=1,2", NULL);
  expect_bad("weft: /nonexistent/m.jsonl: cannot open manifest: No such file "
             "or directory\n",
             "--manifest", "/nonexistent/m.jsonl", NULL);
  free(m1), free(m2), free(m3), free(m4), free(m5), free(m6), free(m7);
}

TEST(sweep_and_template_errors_exit_2) {
  clean_env();
  expect_bad("weft: --sweep sed=1..3: the graph has no input 'sed' (did you "
             "mean 'seed'?); its inputs: value, width, label, seed\n",
             "--sweep", "sed=1..3", NULL);
  expect_bad("weft: --sweep seed=x: input 'seed': 'x' is not an integer "
             "(INT)\n",
             "--sweep", "seed=x", NULL);
  expect_bad("weft: --sweep seed=3,4: input 'seed' is already swept by "
             "--sweep seed=1,2\n",
             "--sweep", "seed=1,2", "--sweep", "seed=3,4", NULL);
  expect_bad("weft: --output {seed}-{lable_slug}.png: unknown placeholder "
             "'{lable_slug}' (did you mean '{label_slug}'?); use {job}, an "
             "input name (value, width, label, seed) or NAME_slug\n",
             "--output", "{seed}-{lable_slug}.png", NULL);
  expect_bad("weft: --output ../{seed}.png: job 0: '../0.png': '.' and '..' "
             "are not allowed in output names\n",
             "--output", "../{seed}.png", NULL);
}

TEST(colliding_output_names_exit_2_naming_both_jobs) {
  clean_env();
  expect_bad("weft: --output {label}.png: jobs 0 and 1 both write 'a.png'; "
             "add an input that tells them apart to the template, or {job}\n",
             "--sweep", "seed=1..3", "--output", "{label}.png", NULL);
  /* slugs can collide where the values do not */
  expect_bad("weft: --output {label_slug}.png: jobs 1 and 2 both write "
             "'red-circle.png'; add an input that tells them apart to the "
             "template, or {job}\n",
             "--sweep", "label=blue,Red Circle,red circle!", "--output",
             "{label_slug}.png", NULL);
}

TEST(usage_errors_exit_2) {
  clean_env();
  expect_bad("weft: --shard 4/4: shard 4 does not exist; shards of 4 count "
             "from 0 to 3\n",
             "--shard", "4/4", NULL);
  expect_bad("weft: --max-failures x: expected a whole number (0: no limit)\n",
             "--max-failures", "x", NULL);
  expect_bad("weft: --verify md5: expected hash or size\n", "--verify", "md5",
             NULL);
  expect_bad("weft: --events xml: expected auto, tty, json or none\n",
             "--events", "xml", NULL);
  setenv("JOB_COMPLETION_INDEX", "1", 1);
  expect_bad("weft: JOB_COMPLETION_INDEX=1 is set (a Kubernetes indexed Job) "
             "but WEFT_SHARD_COUNT is not: set it to the Job's completions, "
             "or pass --shard I/N\n",
             NULL);
  clean_env();
  char *g = write_tmp("nodef.yaml", "version: 1\n"
                                    "inputs:\n"
                                    "  label: {type: STRING}\n"
                                    "nodes:\n"
                                    "  img: {op: TestImage}\n"
                                    "  save:\n"
                                    "    op: SaveImage\n"
                                    "    inputs: {images: img.IMAGE}\n"
                                    "    params: {filename_prefix: $label}\n"
                                    "outputs: {file: save.files}\n");
  char *err;
  ASSERT_EQ(batch(g, NULL, &err, "--sweep", "seed=1", "--dry-run", NULL), 2);
  ASSERT_STR_EQ(err, "weft: --sweep seed=1: the graph has no input 'seed'; "
                     "its inputs: label\n");
  free(err);
  ASSERT_EQ(batch(g, NULL, &err, "--dry-run", NULL), 2);
  ASSERT_STR_EQ(err, "weft: job 0: input 'label' has no default: give it a "
                     "value in the manifest, with --sweep or with --set\n");
  free(err);
  char *out;
  ASSERT_EQ(batch(g, &out, NULL, "--set", "label=x", "--dry-run", NULL), 0);
  ASSERT_STR_EQ(out, "0\t00000.png\t{}\n");
  free(out);
  free(g);
}

/* The job numbers (first column) of a dry run's output. */
static int jobs_of(const char *out, int *jobs, int max) {
  int n = 0;
  for (const char *p = out; *p && n < max;) {
    jobs[n++] = atoi(p);
    p = strchr(p, '\n');
    if (!p) break;
    p++;
  }
  return n;
}

TEST(shards_partition_the_jobs_for_every_count) {
  clean_env();
  for (int n = 1; n <= 5; n++) {
    int seen[7] = {0};
    for (int i = 0; i < n; i++) {
      char shard[16];
      snprintf(shard, sizeof shard, "%d/%d", i, n);
      char *out, *err;
      ASSERT_EQ(batch(graph("flat.yaml"), &out, &err, "--sweep", "seed=0..6",
                      "--shard", shard, "--dry-run", NULL),
                0);
      int jobs[16];
      int k = jobs_of(out, jobs, 16);
      ASSERT_EQ(k, (7 - i + n - 1) / n);
      for (int j = 0; j < k; j++) {
        ASSERT_EQ(jobs[j] % n, i);
        ASSERT_EQ(jobs[j], i + j * n); /* in job order */
        seen[jobs[j]]++;
      }
      char line[128];
      snprintf(line, sizeof line,
               "weft: shard %d/%d (--shard): %d of 7 jobs (dry run)\n", i, n,
               k);
      ASSERT_STR_EQ(err, line);
      free(out);
      free(err);
    }
    for (int j = 0; j < 7; j++)
      ASSERT_EQ(seen[j], 1);
  }
}

TEST(shard_comes_from_slurm_and_kubernetes_variables) {
  clean_env();
  setenv("SLURM_ARRAY_TASK_ID", "5", 1);
  setenv("SLURM_ARRAY_TASK_MIN", "4", 1);
  setenv("SLURM_ARRAY_TASK_MAX", "7", 1);
  setenv("SLURM_ARRAY_TASK_COUNT", "4", 1);
  char *out, *err;
  ASSERT_EQ(batch(graph("flat.yaml"), &out, &err, "--sweep", "seed=0..9",
                  "--dry-run", NULL),
            0);
  ASSERT_STR_EQ(out, "1\t00001.png\t{\"seed\":\"1\"}\n"
                     "5\t00005.png\t{\"seed\":\"5\"}\n"
                     "9\t00009.png\t{\"seed\":\"9\"}\n");
  ASSERT_STR_EQ(err, "weft: shard 1/4 (SLURM_ARRAY_TASK_ID=5, min 4, step 1, "
                     "count 4): 3 of 10 jobs (dry run)\n");
  free(out);
  free(err);
  /* --shard wins over the environment */
  ASSERT_EQ(batch(graph("flat.yaml"), &out, NULL, "--sweep", "seed=0..9",
                  "--shard", "0/1", "--dry-run", "-q", NULL),
            0);
  ASSERT_EQ(count_lines(out), 10);
  free(out);
  clean_env();
  setenv("JOB_COMPLETION_INDEX", "2", 1);
  setenv("WEFT_SHARD_COUNT", "3", 1);
  ASSERT_EQ(batch(graph("flat.yaml"), &out, &err, "--sweep", "seed=0..9",
                  "--dry-run", NULL),
            0);
  ASSERT_STR_EQ(out, "2\t00002.png\t{\"seed\":\"2\"}\n"
                     "5\t00005.png\t{\"seed\":\"5\"}\n"
                     "8\t00008.png\t{\"seed\":\"8\"}\n");
  ASSERT_STR_EQ(err, "weft: shard 2/3 (JOB_COMPLETION_INDEX=2, "
                     "WEFT_SHARD_COUNT=3): 3 of 10 jobs (dry run)\n");
  free(out);
  free(err);
  clean_env();
}

/* ---- running ------------------------------------------------------------ */

TEST(run_publishes_named_pngs_and_a_ledger) {
  clean_env();
  const char *dir = outdir("out");
  char *out, *err;
  ASSERT_EQ(batch(graph("flat.yaml"), &out, &err, "--output-dir", dir,
                  "--sweep", "width=8,16", "--sweep", "label=x,y", "--output",
                  "{label}/{width}.png", NULL),
            0);
  ASSERT_STR_EQ(out, "");
  ASSERT_STR_EQ(err, "weft: shard 0/1 (not sharded): 4 of 4 jobs, 0 done "
                     "before, 4 to run\n"
                     "done 4, skipped 0, failed 0 (of 4)\n");
  ASSERT_STR_EQ(listing(dir), ".weft-ledger.jsonl x y");
  char sub[4096];
  snprintf(sub, sizeof sub, "%s/x", dir);
  ASSERT_STR_EQ(listing(sub), "16.png 8.png");
  assert_png(dir, "x/8.png", 8, 4);
  assert_png(dir, "y/16.png", 16, 4);
  char *led = ledger_text(dir);
  ASSERT_EQ(count_lines(led), 4);
  /* one line per job, in job order, with everything a resume needs */
  const char *line = led;
  for (int j = 0; j < 4; j++) {
    const char *nl = strchr(line, '\n');
    json_t *o = json_loadb(line, (size_t)(nl - line), 0, NULL);
    ASSERT(o != NULL);
    ASSERT_EQ(json_integer_value(json_object_get(o, "job")), j);
    ASSERT_STR_EQ(json_string_value(json_object_get(o, "status")), "ok");
    ASSERT_EQ(strlen(json_string_value(json_object_get(o, "key"))), 32);
    ASSERT_EQ(strlen(json_string_value(json_object_get(o, "xxh128"))), 32);
    ASSERT_STR_EQ(json_string_value(json_object_get(o, "shard")), "0/1");
    json_t *in = json_object_get(o, "inputs");
    ASSERT_EQ(json_integer_value(json_object_get(in, "width")), j < 2 ? 8 : 16);
    ASSERT_STR_EQ(json_string_value(json_object_get(in, "label")),
                  j % 2 ? "y" : "x");
    ASSERT(json_real_value(json_object_get(in, "value")) == 0.5);
    char name[64];
    snprintf(name, sizeof name, "%s/%d.png", j % 2 ? "y" : "x", j < 2 ? 8 : 16);
    ASSERT_STR_EQ(json_string_value(json_object_get(o, "output")), name);
    struct stat st;
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    ASSERT_OK(stat(p, &st));
    ASSERT_EQ(json_integer_value(json_object_get(o, "size")), st.st_size);
    json_decref(o);
    line = nl + 1;
  }
  free(led);
  free(out);
  free(err);
}

TEST(rerun_skips_done_jobs_and_redoes_missing_or_damaged_ones) {
  clean_env();
  const char *dir = outdir("out");
#define RUN(out, err)                                                          \
  batch(graph("flat.yaml"), out, err, "--output-dir", dir, "--sweep",          \
        "seed=1..4", "--output", "{seed}.png", "-q", NULL)
  char *err;
  ASSERT_EQ(RUN(NULL, &err), 0);
  ASSERT_STR_EQ(err, "done 4, skipped 0, failed 0 (of 4)\n");
  free(err);
  ASSERT_EQ(RUN(NULL, &err), 0);
  ASSERT_STR_EQ(err, "done 0, skipped 4, failed 0 (of 4)\n");
  free(err);
  char p[4096];
  /* damaged: same size, other bytes (only the hash sees it) */
  snprintf(p, sizeof p, "%s/2.png", dir);
  size_t len;
  char *png = weft_test_read_file(p, &len);
  png[len - 5] ^= 0x55;
  FILE *f = fopen(p, "wb");
  fwrite(png, 1, len, f);
  fclose(f);
  /* cut short, and gone */
  snprintf(p, sizeof p, "%s/3.png", dir);
  ASSERT_OK(truncate(p, 20));
  snprintf(p, sizeof p, "%s/4.png", dir);
  ASSERT_OK(unlink(p));
  ASSERT_EQ(RUN(NULL, &err), 0);
  ASSERT_STR_EQ(err, "done 3, skipped 1, failed 0 (of 4)\n");
  free(err);
  snprintf(p, sizeof p, "%s/2.png", dir);
  size_t len2;
  char *again = weft_test_read_file(p, &len2);
  png[len - 5] ^= 0x55;
  ASSERT_EQ(len2, len);
  ASSERT(memcmp(again, png, len) == 0);
  free(png);
  free(again);
  ASSERT_STR_EQ(listing(dir), ".weft-ledger.jsonl 1.png 2.png 3.png 4.png");
  for (int s = 1; s <= 4; s++) {
    char name[16];
    snprintf(name, sizeof name, "%d.png", s);
    assert_png(dir, name, 8, 4);
  }
  char *led = ledger_text(dir);
  ASSERT_EQ(count_lines(led), 7); /* 4, then 3 redone: later lines win */
  free(led);
  /* --verify size does not read the files: a same-size change passes */
  ASSERT_EQ(batch(graph("flat.yaml"), NULL, &err, "--output-dir", dir,
                  "--sweep", "seed=1..4", "--output", "{seed}.png", "--verify",
                  "size", "-q", NULL),
            0);
  ASSERT_STR_EQ(err, "done 0, skipped 4, failed 0 (of 4)\n");
  free(err);
#undef RUN
}

TEST(changed_graph_inputs_or_names_are_not_skipped) {
  clean_env();
  const char *dir = outdir("out");
  char *err;
  ASSERT_EQ(batch(graph("flat.yaml"), NULL, &err, "--output-dir", dir,
                  "--sweep", "seed=1,2", "-q", NULL),
            0);
  free(err);
  /* the same names, another value for every job: redone, not skipped */
  ASSERT_EQ(batch(graph("flat.yaml"), NULL, &err, "--output-dir", dir,
                  "--sweep", "seed=1,2", "--set", "value=0.75", "-q", NULL),
            0);
  ASSERT_STR_EQ(err, "done 2, skipped 0, failed 0 (of 2)\n");
  free(err);
  ASSERT_STR_EQ(listing(dir), ".weft-ledger.jsonl 00000.png 00001.png");
  /* the same value set explicitly to what it already is: skipped */
  ASSERT_EQ(batch(graph("flat.yaml"), NULL, &err, "--output-dir", dir,
                  "--sweep", "seed=1,2", "--set", "value=0.750", "-q", NULL),
            0);
  ASSERT_STR_EQ(err, "done 0, skipped 2, failed 0 (of 2)\n");
  free(err);
  /* another graph file (the same with a comment) */
  char *g = weft_test_read_file(graph("flat.yaml"), NULL);
  char *text = malloc(strlen(g) + 32);
  sprintf(text, "%s# changed\n", g);
  char *g2 = write_tmp("flat2.yaml", text);
  ASSERT_EQ(batch(g2, NULL, &err, "--output-dir", dir, "--sweep", "seed=1,2",
                  "--set", "value=0.75", "-q", NULL),
            0);
  ASSERT_STR_EQ(err, "done 2, skipped 0, failed 0 (of 2)\n");
  free(err);
  free(g), free(text), free(g2);
}

static const char *images(void) {
  return path_in("%s/fixtures/images%s", "");
}

TEST(failed_jobs_are_recorded_and_the_others_run) {
  clean_env();
  const char *dir = outdir("out");
  char *out, *err;
  ASSERT_EQ(batch(graph("load.yaml"), &out, &err, "--output-dir", dir,
                  "--input-dir", images(), "--sweep",
                  "image=gray_16x16.png,nope.png,photo.png,gone.png,"
                  "rgba_32x24.png",
                  "--output", "{job}-{image}", NULL),
            1);
  ASSERT_STR_EQ(last_line(err), "done 3, skipped 0, failed 2 (of 5)");
  char msg[8192];
  snprintf(msg, sizeof msg,
           "weft: job 1 (1-nope.png) failed: node 'load' (LoadImage) failed: "
           "cannot open '%s/nope.png': No such file or directory\n",
           images());
  ASSERT_CONTAINS(err, msg);
  ASSERT_STR_EQ(listing(dir), ".weft-ledger.jsonl 0-gray_16x16.png "
                              "2-photo.png 4-rgba_32x24.png");
  assert_png(dir, "4-rgba_32x24.png", 32, 24);
  char *led = ledger_text(dir);
  ASSERT_EQ(count_lines(led), 5);
  ASSERT_CONTAINS(led, "{\"job\":1,");
  ASSERT_CONTAINS(led, "\"status\":\"failed\",\"output\":\"1-nope.png\","
                       "\"error\":\"node 'load' (LoadImage) failed: cannot "
                       "open '");
  free(led);
  free(out);
  free(err);
  /* a rerun retries the failed jobs only */
  ASSERT_EQ(batch(graph("load.yaml"), NULL, &err, "--output-dir", dir,
                  "--input-dir", images(), "--sweep",
                  "image=gray_16x16.png,nope.png,photo.png,gone.png,"
                  "rgba_32x24.png",
                  "--output", "{job}-{image}", "-q", NULL),
            1);
  ASSERT_CONTAINS(err, "weft: job 3 (3-gone.png) failed: ");
  ASSERT_STR_EQ(last_line(err), "done 0, skipped 3, failed 2 (of 5)");
  free(err);
}

TEST(max_failures_stops_the_batch) {
  /* one job at a time: exactly the jobs up to the failure run */
  clean_env();
  const char *dir = outdir("out");
  char *err;
  ASSERT_EQ(batch(graph("load.yaml"), NULL, &err, "--output-dir", dir,
                  "--input-dir", images(), "--sweep",
                  "image=gray_16x16.png,nope.png,photo.png,gone.png,"
                  "rgba_32x24.png",
                  "--max-failures", "1", "--pipeline", "1", "-q", NULL),
            1);
  ASSERT_CONTAINS(err, "weft: stopping after 1 failed job (--max-failures "
                       "1); 3 jobs not run\n");
  ASSERT_STR_EQ(last_line(err), "done 1, skipped 0, failed 1 (of 5)");
  free(err);
  ASSERT_STR_EQ(listing(dir), ".weft-ledger.jsonl 00000.png");
  ASSERT_EQ(batch(graph("load.yaml"), NULL, &err, "--output-dir", dir,
                  "--input-dir", images(), "--sweep",
                  "image=gray_16x16.png,nope.png,photo.png,gone.png,"
                  "rgba_32x24.png",
                  "--max-failures", "2", "--pipeline", "1", "-q", NULL),
            1);
  ASSERT_STR_EQ(last_line(err), "done 1, skipped 1, failed 2 (of 5)");
  free(err);
  /* no limit: everything is tried */
  ASSERT_EQ(batch(graph("load.yaml"), NULL, &err, "--output-dir", dir,
                  "--input-dir", images(), "--sweep",
                  "image=gray_16x16.png,nope.png,photo.png,gone.png,"
                  "rgba_32x24.png",
                  "-q", NULL),
            1);
  ASSERT_STR_EQ(last_line(err), "done 1, skipped 2, failed 2 (of 5)");
  free(err);
}

TEST(max_failures_with_jobs_in_flight_lets_them_finish) {
  /* --pipeline 2: a job that started before the failure was seen finishes
   * and is recorded; none starts after it */
  clean_env();
  const char *dir = outdir("out");
  char *err;
  ASSERT_EQ(batch(graph("load.yaml"), NULL, &err, "--output-dir", dir,
                  "--input-dir", images(), "--sweep",
                  "image=gray_16x16.png,nope.png,photo.png,gone.png,"
                  "rgba_32x24.png",
                  "--max-failures", "1", "-q", NULL),
            1);
  int done = 0, skipped, failed, total;
  ASSERT_EQ(sscanf(last_line(err), "done %d, skipped %d, failed %d (of %d)",
                   &done, &skipped, &failed, &total),
            4);
  ASSERT_EQ(failed, 1);
  ASSERT(done == 1 ||
         done == 2); /* job 2 may have started before job 1 failed */
  char want[256];
  snprintf(want, sizeof want,
           "weft: stopping after 1 failed job (--max-failures 1); %d jobs "
           "not run\n",
           5 - done - failed);
  ASSERT_CONTAINS(err, want);
  ASSERT_STR_EQ(listing(dir), done == 1 ? ".weft-ledger.jsonl 00000.png"
                                        : ".weft-ledger.jsonl 00000.png "
                                          "00002.png");
  char *led = ledger_text(dir);
  ASSERT_EQ(count_lines(led), done + failed);
  free(led);
  free(err);
}

TEST(a_graph_that_writes_no_file_fails_its_jobs) {
  clean_env();
  const char *dir = outdir("out");
  char *err;
  ASSERT_EQ(batch(path_in("%s/cli/graphs/%s", "sum.yaml"), NULL, &err,
                  "--output-dir", dir, "--sweep", "x=1,2", "-q", NULL),
            1);
  ASSERT_CONTAINS(err, "weft: job 0 (00000.png) failed: the graph wrote no "
                       "file that one of its outputs names; end it with "
                       "SaveImage and list 'outputs: {file: save.files}'\n");
  ASSERT_STR_EQ(last_line(err), "done 0, skipped 0, failed 2 (of 2)");
  ASSERT_STR_EQ(listing(dir), ".weft-ledger.jsonl");
  free(err);
}

TEST(events_json_report_every_job) {
  clean_env();
  const char *dir = outdir("out");
  char *out, *err;
  ASSERT_EQ(batch(graph("flat.yaml"), &out, &err, "--output-dir", dir,
                  "--sweep", "seed=1,2", "--output", "s{seed}.png",
                  "--events=json", NULL),
            0);
  ASSERT_EQ(count_lines(out), 6);
  /* two jobs in flight (--pipeline 2, the default): job 1 starts before
   * job 0 is done; jobs still finish in job order */
  const char *want[] = {"batch_start", "job_start", "job_start",
                        "job_done",    "job_done",  "batch_done"};
  const int want_job[] = {-1, 0, 1, 0, 1, -1};
  const char *line = out;
  for (int i = 0; i < 6; i++) {
    const char *nl = strchr(line, '\n');
    json_t *o = json_loadb(line, (size_t)(nl - line), 0, NULL);
    ASSERT(o != NULL);
    ASSERT_STR_EQ(json_string_value(json_object_get(o, "event")), want[i]);
    ASSERT(json_is_real(json_object_get(o, "t")));
    if (want_job[i] >= 0)
      ASSERT_EQ(json_integer_value(json_object_get(o, "job")), want_job[i]);
    json_decref(o);
    line = nl + 1;
  }
  ASSERT_CONTAINS(out, "\"graph\":\"");
  ASSERT_CONTAINS(out, "\"jobs\":2,\"shard\":\"0/1\",\"shard_source\":\"not "
                       "sharded\",\"shard_jobs\":2}\n");
  ASSERT_CONTAINS(out, ",\"job\":1,\"output\":\"s2.png\",\"inputs\":{"
                       "\"value\":0.5,\"width\":8,\"label\":\"a\",\"seed\":2}"
                       "}\n");
  ASSERT_CONTAINS(out, ",\"job\":0,\"output\":\"s1.png\",\"ms\":");
  ASSERT_CONTAINS(out, ",\"done\":2,\"skipped\":0,\"failed\":0,\"total\":2,"
                       "\"status\":\"ok\"}\n");
  ASSERT_STR_EQ(last_line(err), "done 2, skipped 0, failed 0 (of 2)");
  free(out);
  free(err);
  /* again: skipped jobs, and the runtime's events with --node-events */
  ASSERT_EQ(batch(graph("flat.yaml"), &out, NULL, "--output-dir", dir,
                  "--sweep", "seed=1..3", "--output", "s{seed}.png",
                  "--events=json", "--node-events", NULL),
            0);
  ASSERT_CONTAINS(out, ",\"job\":0,\"output\":\"s1.png\"}\n");
  ASSERT_CONTAINS(out, "{\"event\":\"job_skipped\",");
  ASSERT_CONTAINS(out, "{\"event\":\"run_start\",");
  ASSERT_CONTAINS(out, ",\"job\":2,\"node\":\"save\",\"op\":\"SaveImage\",");
  ASSERT_CONTAINS(out, ",\"done\":1,\"skipped\":2,\"failed\":0,\"total\":3,"
                       "\"status\":\"ok\"}\n");
  free(out);
  /* --pipeline 1: one job after another */
  ASSERT_EQ(batch(graph("flat.yaml"), &out, NULL, "--output-dir", outdir("one"),
                  "--sweep", "seed=1,2", "--events=json", "--pipeline", "1",
                  NULL),
            0);
  const char *one[] = {"batch_start", "job_start", "job_done",
                       "job_start",   "job_done",  "batch_done"};
  line = out;
  for (int i = 0; i < 6; i++) {
    char want_ev[64];
    snprintf(want_ev, sizeof want_ev, "{\"event\":\"%s\"", one[i]);
    ASSERT(strncmp(line, want_ev, strlen(want_ev)) == 0);
    line = strchr(line, '\n') + 1;
  }
  free(out);
}

TEST(shards_sharing_a_directory_write_every_output_once) {
  clean_env();
  const char *dir = outdir("out");
  for (int i = 0; i < 3; i++) {
    char shard[8], *err;
    snprintf(shard, sizeof shard, "%d/3", i);
    ASSERT_EQ(batch(graph("flat.yaml"), NULL, &err, "--output-dir", dir,
                    "--sweep", "seed=0..6", "--output", "{seed}.png", "--shard",
                    shard, "-q", NULL),
              0);
    char want[64];
    snprintf(want, sizeof want, "done %d, skipped 0, failed 0 (of %d)\n",
             i ? 2 : 3, i ? 2 : 3);
    ASSERT_STR_EQ(err, want);
    free(err);
  }
  ASSERT_STR_EQ(listing(dir), ".weft-ledger.jsonl 0.png 1.png 2.png 3.png "
                              "4.png 5.png 6.png");
  char *led = ledger_text(dir);
  ASSERT_EQ(count_lines(led), 7);
  ASSERT_CONTAINS(led, "\"output\":\"4.png\"");
  ASSERT_CONTAINS(led, "\"shard\":\"1/3\"");
  free(led);
  /* the whole batch unsharded afterwards: all done */
  char *err;
  ASSERT_EQ(batch(graph("flat.yaml"), NULL, &err, "--output-dir", dir,
                  "--sweep", "seed=0..6", "--output", "{seed}.png", "-q", NULL),
            0);
  ASSERT_STR_EQ(err, "done 0, skipped 7, failed 0 (of 7)\n");
  free(err);
}

TEST(leftover_temporary_directories_are_removed) {
  clean_env();
  const char *dir = outdir("out");
  char p[4096];
  ASSERT_OK(mkdir(dir, 0777));
  snprintf(p, sizeof p, "%s/.weft-tmp", dir);
  ASSERT_OK(mkdir(p, 0777));
  snprintf(p, sizeof p, "%s/.weft-tmp/job-3", dir);
  ASSERT_OK(mkdir(p, 0777));
  free(weft_test_write_file(p, "flat_00001_.png", "half"));
  char *err;
  ASSERT_EQ(
      batch(graph("flat.yaml"), NULL, &err, "--output-dir", dir, "-q", NULL),
      0);
  free(err);
  ASSERT_STR_EQ(listing(dir), ".weft-ledger.jsonl 00000.png");
}

/* ---- signals ------------------------------------------------------------ */

typedef struct child {
  pid_t pid;
  FILE *out;                   /* its stdout */
  int starts, dones, max_open; /* job events read so far */
} child;

/* Counts job events in one line of stdout. */
static void tally(child *c, const char *line) {
  if (strstr(line, "{\"event\":\"job_start\""))
    c->starts++;
  else if (strstr(line, "{\"event\":\"job_done\"") ||
           strstr(line, "{\"event\":\"job_failed\""))
    c->dones++;
  if (c->starts - c->dones > c->max_open) c->max_open = c->starts - c->dones;
}

/* Starts weft with stdout on a pipe and stderr into err_path. */
static void start(child *c, const char *const *argv, const char *err_path) {
  int po[2];
  ASSERT_OK(pipe(po));
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, po[1], 1);
  posix_spawn_file_actions_addclose(&fa, po[0]);
  posix_spawn_file_actions_addopen(&fa, 2, err_path,
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_OK(
      posix_spawn(&c->pid, argv[0], &fa, NULL, (char *const *)argv, environ));
  posix_spawn_file_actions_destroy(&fa);
  close(po[1]);
  c->out = fdopen(po[0], "r");
  c->starts = c->dones = c->max_open = 0;
}

/* Reads events until the n-th line containing what; false at the end. */
static bool wait_for(child *c, const char *what, int n) {
  char line[65536];
  while (n > 0 && fgets(line, sizeof line, c->out)) {
    tally(c, line);
    if (strstr(line, what)) n--;
  }
  return n == 0;
}

static int finish(child *c) {
  char line[65536];
  while (fgets(line, sizeof line, c->out))
    tally(c, line);
  fclose(c->out);
  int st;
  ASSERT_EQ(waitpid(c->pid, &st, 0), c->pid);
  if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
  return WEXITSTATUS(st);
}

/* The tiny SD model over a seed sweep: the real graph, ~0.2 s a job. */
static const char *tiny_ckpt(void) {
  static char p[4096];
  snprintf(p, sizeof p, "ckpt=%s/fixtures/sd15_tiny/diffusers",
           weft_test_srcdir());
  if (access(p + 5, F_OK)) weft_test_skip("tests/fixtures/sd15_tiny missing");
  return p;
}

static void tiny_argv(const char **a, const char *dir, const char *sweep,
                      bool json) {
  int n = 0;
  a[n++] = weft();
  a[n++] = "batch";
  a[n++] = path_in("%s/../graphs/%s", "txt2img.yaml");
  a[n++] = "--set";
  a[n++] = tiny_ckpt();
  a[n++] = "--set";
  a[n++] = "width=64";
  a[n++] = "--set";
  a[n++] = "height=64";
  a[n++] = "--set";
  a[n++] = "steps=4";
  a[n++] = "--sweep";
  a[n++] = sweep;
  a[n++] = "--output";
  a[n++] = "{prompt_slug}-{seed:02}.png";
  a[n++] = "--output-dir";
  a[n++] = dir;
  a[n++] = "--threads";
  a[n++] = "2";
  if (json) a[n++] = "--events=json";
  a[n] = NULL;
}

static void summary_counts(const char *err, int *done, int *skipped,
                           int *failed, int *total) {
  ASSERT_EQ(sscanf(last_line(err), "done %d, skipped %d, failed %d (of %d)",
                   done, skipped, failed, total),
            4);
}

TEST(sigint_finishes_the_job_in_progress_and_exits_130) {
  clean_env();
  const char *dir = outdir("out");
  char errp[4096];
  snprintf(errp, sizeof errp, "%s/stderr", weft_test_tmpdir());
  const char *a[32];
  tiny_argv(a, dir, "seed=1..12", true);
  child c;
  start(&c, a, errp);
  ASSERT(wait_for(&c, "\"event\":\"job_done\"", 1));
  kill(c.pid, SIGINT);
  ASSERT_EQ(finish(&c), 130);
  char *err = weft_test_read_file(errp, NULL);
  ASSERT_CONTAINS(err, "weft: stopping after the jobs in progress (Ctrl-C "
                       "again cancels them)\n");
  int done, skipped, failed, total;
  summary_counts(err, &done, &skipped, &failed, &total);
  free(err);
  /* every job that started (at most two at once: --pipeline 2) finished
   * and was recorded; then nothing more started */
  ASSERT(done >= 1 && done < 12);
  ASSERT_EQ(c.starts, done);
  ASSERT_EQ(c.dones, done);
  ASSERT(c.max_open >= 1 && c.max_open <= 2);
  ASSERT_EQ(skipped, 0);
  ASSERT_EQ(failed, 0);
  ASSERT_EQ(total, 12);
  char *led = ledger_text(dir);
  ASSERT_EQ(count_lines(led), done);
  free(led);
  char want[1024] = ".weft-ledger.jsonl";
  for (int s = 1; s <= done; s++)
    snprintf(want + strlen(want), sizeof want - strlen(want),
             " a-red-circle-on-a-blue-background-%02d.png", s);
  ASSERT_STR_EQ(listing(dir), want);
  /* and the rest on the next run */
  tiny_argv(a, dir, "seed=1..12", false);
  ASSERT_EQ(weft_test_spawn(a, NULL, &err, 120), 0);
  char line[128];
  snprintf(line, sizeof line, "done %d, skipped %d, failed 0 (of 12)",
           12 - done, done);
  ASSERT_STR_EQ(last_line(err), line);
  free(err);
}

TEST(second_sigint_cancels_the_job_and_records_nothing) {
  clean_env();
  const char *dir = outdir("out");
  char errp[4096];
  snprintf(errp, sizeof errp, "%s/stderr", weft_test_tmpdir());
  const char *a[] = {weft(),
                     "batch",
                     path_in("%s/cli/graphs/%s", "spin.yaml"),
                     "--plugin-dir",
                     getenv("WEFT_TEST_PLUGINS"),
                     "--output-dir",
                     dir,
                     "--events=json",
                     "--node-events",
                     NULL};
  child c;
  start(&c, a, errp);
  ASSERT(wait_for(&c, "\"event\":\"progress\"", 1));
  kill(c.pid, SIGINT);
  /* two pending SIGINTs are one: wait until the first was taken */
  for (int i = 0; i < 1000; i++) {
    char *err = weft_test_read_file(errp, NULL);
    /* "the job in progress", or "the jobs in progress" when the signal
     * comes before the batch knows it has one job */
    bool seen = err && strstr(err, "stopping after the job");
    free(err);
    if (seen) break;
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  ASSERT(wait_for(&c, "\"event\":\"progress\"", 1)); /* still running */
  kill(c.pid, SIGINT);
  ASSERT_EQ(finish(&c), 130);
  char *err = weft_test_read_file(errp, NULL);
  ASSERT_CONTAINS(err, "weft: job 0 (00000.png) cancelled\n");
  ASSERT_STR_EQ(last_line(err), "done 0, skipped 0, failed 0 (of 1)");
  free(err);
  char *led = ledger_text(dir);
  ASSERT_STR_EQ(led, "");
  free(led);
  ASSERT_STR_EQ(listing(dir), ".weft-ledger.jsonl");
}

/* The last status of every job in the ledger; returns the line count. */
static int ledger_last(const char *dir, char status[][16], int n_jobs) {
  char *led = ledger_text(dir);
  ASSERT(led != NULL);
  int lines = 0;
  for (char *line = led; *line;) {
    char *nl = strchr(line, '\n');
    ASSERT(nl != NULL); /* every line complete */
    json_t *o = json_loadb(line, (size_t)(nl - line), 0, NULL);
    ASSERT(o != NULL);
    int job = (int)json_integer_value(json_object_get(o, "job"));
    ASSERT(job >= 0 && job < n_jobs);
    snprintf(status[job], 16, "%s",
             json_string_value(json_object_get(o, "status")));
    json_decref(o);
    lines++;
    line = nl + 1;
  }
  free(led);
  return lines;
}

TEST(kill_9_then_resume_leaves_every_output_once_and_complete) {
  clean_env();
  const char *dir = outdir("out"), *ref = outdir("ref");
  char errp[4096];
  snprintf(errp, sizeof errp, "%s/stderr", weft_test_tmpdir());
  const char *a[32];
  tiny_argv(a, dir, "seed=1..8", true);
  child c;
  start(&c, a, errp);
  ASSERT(wait_for(&c, "\"event\":\"job_done\"", 2));
  kill(c.pid, SIGKILL);
  ASSERT_EQ(finish(&c), 128 + SIGKILL);
  /* the same command again */
  tiny_argv(a, dir, "seed=1..8", false);
  char *err;
  ASSERT_EQ(weft_test_spawn(a, NULL, &err, 120), 0);
  int done, skipped, failed, total;
  summary_counts(err, &done, &skipped, &failed, &total);
  ASSERT(skipped >= 2);
  ASSERT_EQ(done + skipped, 8);
  ASSERT_EQ(failed, 0);
  ASSERT_EQ(total, 8);
  free(err);
  /* every output once, nothing temporary, nothing numbered twice */
  char want[1024] = ".weft-ledger.jsonl";
  for (int s = 1; s <= 8; s++)
    snprintf(want + strlen(want), sizeof want - strlen(want),
             " a-red-circle-on-a-blue-background-%02d.png", s);
  ASSERT_STR_EQ(listing(dir), want);
  char status[8][16] = {{0}};
  int lines = ledger_last(dir, status, 8);
  ASSERT(lines >= 8);
  for (int j = 0; j < 8; j++)
    ASSERT_STR_EQ(status[j], "ok");
  /* each file complete and the very image an uninterrupted batch makes */
  tiny_argv(a, ref, "seed=1..8", false);
  ASSERT_EQ(weft_test_spawn(a, NULL, NULL, 120), 0);
  for (int s = 1; s <= 8; s++) {
    char name[128], p[4096], q[4096];
    snprintf(name, sizeof name, "a-red-circle-on-a-blue-background-%02d.png",
             s);
    assert_png(dir, name, 64, 64);
    snprintf(p, sizeof p, "%s/%s", dir, name);
    snprintf(q, sizeof q, "%s/%s", ref, name);
    size_t n1, n2;
    char *x = weft_test_read_file(p, &n1), *y = weft_test_read_file(q, &n2);
    ASSERT_EQ(n1, n2);
    ASSERT(memcmp(x, y, n1) == 0);
    free(x);
    free(y);
  }
}

/* Appends NULL-terminated extra arguments to a NULL-terminated argv. */
static void argv_add(const char **a, ...) {
  int n = 0;
  while (a[n])
    n++;
  va_list ap;
  va_start(ap, a);
  const char *s;
  while ((s = va_arg(ap, const char *)))
    a[n++] = s;
  va_end(ap);
  a[n] = NULL;
}

/* The ledger's lines without what differs from run to run (ms, time). */
static char *ledger_stable(const char *dir) {
  char *led = ledger_text(dir);
  ASSERT(led != NULL);
  size_t cap = strlen(led) + 1, len = 0;
  char *outp = malloc(cap);
  outp[0] = 0;
  for (char *line = led; *line;) {
    char *nl = strchr(line, '\n');
    json_t *o = json_loadb(line, (size_t)(nl - line), 0, NULL);
    ASSERT(o != NULL);
    json_object_del(o, "ms");
    json_object_del(o, "time");
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    len += (size_t)snprintf(outp + len, cap - len, "%s\n", s);
    free(s);
    json_decref(o);
    line = nl + 1;
  }
  free(led);
  return outp;
}

/* The index of the first event line with all of the given parts. */
static int event_index(const char *out, const char *a, const char *b) {
  int i = 0;
  for (const char *line = out; *line; i++) {
    const char *nl = strchr(line, '\n');
    size_t n = (size_t)(nl - line);
    char buf[8192];
    snprintf(buf, sizeof buf, "%.*s", (int)(n < sizeof buf ? n : 0), line);
    if (strstr(buf, a) && (!b || strstr(buf, b))) return i;
    line = nl + 1;
  }
  return -1;
}

TEST(pipelined_jobs_give_the_same_files_and_ledger_as_one_at_a_time) {
  clean_env();
  const char *one = outdir("one"), *two = outdir("two");
  const char *a[48];
  tiny_argv(a, one, "seed=1..4", false);
  argv_add(a, "--pipeline", "1", NULL);
  char *err;
  ASSERT_EQ(weft_test_spawn(a, NULL, &err, 120), 0);
  ASSERT_STR_EQ(last_line(err), "done 4, skipped 0, failed 0 (of 4)");
  free(err);
  tiny_argv(a, two, "seed=1..4", true);
  argv_add(a, "--pipeline", "2", "--node-events", NULL);
  char *out;
  ASSERT_EQ(weft_test_spawn(a, &out, &err, 120), 0);
  ASSERT_STR_EQ(last_line(err), "done 4, skipped 0, failed 0 (of 4)");
  free(err);
  /* the same files, byte for byte, and the same ledger lines in job order
   * (the key covers every input; the hash every byte) */
  ASSERT_STR_EQ(listing(one), listing(two));
  for (int s = 1; s <= 4; s++) {
    char name[128], p[4096], q[4096];
    snprintf(name, sizeof name, "a-red-circle-on-a-blue-background-%02d.png",
             s);
    snprintf(p, sizeof p, "%s/%s", one, name);
    snprintf(q, sizeof q, "%s/%s", two, name);
    size_t n1, n2;
    char *x = weft_test_read_file(p, &n1), *y = weft_test_read_file(q, &n2);
    ASSERT(x && y);
    ASSERT_EQ(n1, n2);
    ASSERT(memcmp(x, y, n1) == 0);
    free(x);
    free(y);
  }
  char *l1 = ledger_stable(one), *l2 = ledger_stable(two);
  /* the output directory differs; nothing else may */
  ASSERT_EQ(count_lines(l1), 4);
  ASSERT_STR_EQ(l1, l2);
  free(l1);
  free(l2);
  /* job 1 started before job 0 was done: its sampler waited for job 0's
   * (the model is shared), its first nodes did not */
  int start1 = event_index(out, "\"event\":\"job_start\"", "\"job\":1,");
  int done0 = event_index(out, "\"event\":\"job_done\"", "\"job\":0,");
  int node1 = event_index(out, "\"event\":\"node_start\"", "\"job\":1,");
  ASSERT(start1 >= 0 && done0 >= 0 && node1 >= 0);
  ASSERT(start1 < done0);
  ASSERT(node1 < done0);
  /* what job 0 was still computing, job 1 took from it: the checkpoint,
   * both prompts and the empty latent; its own seed it sampled itself */
  const char *shared[] = {"ckpt", "positive", "negative", "latent"};
  for (int i = 0; i < 4; i++) {
    char want[256];
    snprintf(want, sizeof want, "\"job\":1,\"node\":\"%s\"", shared[i]);
    if (event_index(out, "{\"event\":\"node_cached\"", want) < 0)
      fprintf(stderr, "job 1 has no node_cached for %s\n", shared[i]);
    ASSERT(event_index(out, "{\"event\":\"node_cached\"", want) >= 0);
  }
  ASSERT(event_index(out, "\"event\":\"node_start\"",
                     "\"job\":1,\"node\":\"sample\"") >= 0);
  ASSERT_EQ(event_index(out, "\"event\":\"node_start\"",
                        "\"job\":1,\"node\":\"ckpt\""),
            -1);
  free(out);
}

TEST(pipeline_option_is_checked) {
  clean_env();
  char *err;
  ASSERT_EQ(batch(graph("flat.yaml"), NULL, &err, "--pipeline", "0",
                  "--dry-run", NULL),
            2);
  ASSERT_STR_EQ(err, "weft: --pipeline 0: expected a number of jobs in "
                     "flight from 1 to 64\n");
  free(err);
  ASSERT_EQ(batch(graph("flat.yaml"), NULL, &err, "--pipeline", "2x",
                  "--dry-run", NULL),
            2);
  free(err);
  const char *h[] = {weft(), "batch", "--help", NULL};
  char *out;
  ASSERT_EQ(weft_test_spawn(h, &out, NULL, 10), 0);
  ASSERT_CONTAINS(out, "--pipeline N          jobs in flight at once");
  free(out);
}

TEST(device_option_is_checked) {
  clean_env();
  char *err;
  ASSERT_EQ(batch(graph("flat.yaml"), NULL, &err, "--device", "gpu",
                  "--dry-run", NULL),
            2);
  ASSERT_STR_EQ(err,
                "weft: --device gpu: expected cpu, cuda, emulated or auto\n");
  free(err);
  ASSERT_EQ(batch(graph("flat.yaml"), NULL, &err, "--device", "cpu",
                  "--dry-run", NULL),
            0);
  free(err);
}
