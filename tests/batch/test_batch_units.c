/* test_batch_units.c - the parts of `weft batch` on their own: manifest
 * parsing (JSON lines, CSV), sweeps, output-name templates and slugs,
 * shards from flags and environments, the ledger and file hashes. */
#include <fcntl.h>
#include <jansson.h>
#include <unistd.h>

#include "batch.h"
#include "json_u64.h"
#include "test.h"

static char err[4096];

static weft__batch_manifest parse_ok(const char *name, const char *text) {
  weft__batch_manifest m;
  int r =
      weft__batch_manifest_parse(name, text, strlen(text), &m, err, sizeof err);
  if (r) fprintf(stderr, "unexpected error: %s\n", err);
  ASSERT_OK(r);
  return m;
}

static const char *parse_err(const char *name, const char *text) {
  weft__batch_manifest m;
  int r =
      weft__batch_manifest_parse(name, text, strlen(text), &m, err, sizeof err);
  ASSERT(r < 0);
  ASSERT_EQ(m.n_rows, 0);
  weft__batch_manifest_free(&m);
  return err;
}

/* "col=value" of row r's k-th value. */
static const char *cell(const weft__batch_manifest *m, int r, int k) {
  static char buf[1024];
  snprintf(buf, sizeof buf, "%s=%s", m->cols[m->rows[r].col[k]],
           m->rows[r].val[k]);
  return buf;
}

TEST(jsonl_rows_take_typed_values_as_text) {
  weft__batch_manifest m = parse_ok(
      "m.jsonl", "{\"prompt\": \"a red circle\", \"seed\": 7}\n"
                 "\n"
                 "  \r\n"
                 "{\"seed\": -3, \"cfg\": 7.5, \"hires\": true, \"x\": 0.1}\r\n"
                 "{\"prompt\": \"caf\\u00e9 \\\"q\\\"\", \"cfg\": null, "
                 "\"y\": false, \"big\": 1e20}");
  ASSERT_EQ(m.n_rows, 3);
  ASSERT_EQ(m.n_cols, 7);
  ASSERT_STR_EQ(m.cols[0], "prompt");
  ASSERT_STR_EQ(m.cols[1], "seed");
  ASSERT_STR_EQ(m.cols[2], "cfg");
  ASSERT_EQ(m.col_line[2], 4);
  ASSERT_EQ(m.rows[0].line, 1);
  ASSERT_EQ(m.rows[0].n, 2);
  ASSERT_STR_EQ(cell(&m, 0, 0), "prompt=a red circle");
  ASSERT_STR_EQ(cell(&m, 0, 1), "seed=7");
  ASSERT_EQ(m.rows[1].line, 4);
  ASSERT_EQ(m.rows[1].n, 4);
  ASSERT_STR_EQ(cell(&m, 1, 0), "seed=-3");
  ASSERT_STR_EQ(cell(&m, 1, 1), "cfg=7.5");
  ASSERT_STR_EQ(cell(&m, 1, 2), "hires=true");
  ASSERT_STR_EQ(cell(&m, 1, 3), "x=0.1");
  /* null leaves an input at its default: cfg is not in row 3 */
  ASSERT_EQ(m.rows[2].line, 5);
  ASSERT_EQ(m.rows[2].n, 3);
  ASSERT_STR_EQ(cell(&m, 2, 0), "prompt=caf\xc3\xa9 \"q\"");
  ASSERT_STR_EQ(cell(&m, 2, 1), "y=false");
  ASSERT_STR_EQ(cell(&m, 2, 2), "big=1e+20");
  weft__batch_manifest_free(&m);
}

TEST(jsonl_errors_name_file_line_and_column) {
  ASSERT_STR_EQ(parse_err("m.jsonl", "{\"seed\": 1}\n{\"seed\": 2,}\n"),
                "m.jsonl:2:12: invalid JSON: string or '}' expected near "
                "'}'");
  ASSERT_STR_EQ(parse_err("m.jsonl", "{\"seed\": 1}\n\n[1, 2]\n"),
                "m.jsonl:3: expected a JSON object ({\"input\": value, ...}), "
                "got an array");
  ASSERT_STR_EQ(parse_err("m.jsonl", "{\"seed\": {\"a\": 1}}"),
                "m.jsonl:1: 'seed': expected a string, number or boolean, "
                "got an object");
  ASSERT_STR_EQ(parse_err("m.jsonl", "{\"seed\": 1, \"seed\": 2}"),
                "m.jsonl:1:18: invalid JSON: duplicate object key near "
                "'\"seed\"'");
  ASSERT_STR_EQ(parse_err("m.jsonl", "{\"\": 1}"),
                "m.jsonl:1: an empty input name");
  ASSERT_STR_EQ(parse_err("m.jsonl", "{\"a\": 1}\n{\"a\": 2"),
                "m.jsonl:2:7: invalid JSON: '}' expected near end of file");
}

TEST(csv_quotes_commas_newlines_and_crlf) {
  weft__batch_manifest m = parse_ok("m.csv", "\xEF\xBB\xBFprompt, seed ,neg\r\n"
                                             "\"a, b\",1,\r\n"
                                             "\"say \"\"hi\"\"\",2,\"\"\r\n"
                                             "\r\n"
                                             "\"two\nlines\",3,x\n"
                                             "plain 5\" tall,4,y");
  ASSERT_EQ(m.n_cols, 3);
  ASSERT_STR_EQ(m.cols[0], "prompt");
  ASSERT_STR_EQ(m.cols[1], "seed");
  ASSERT_STR_EQ(m.cols[2], "neg");
  ASSERT_EQ(m.n_rows, 4);
  ASSERT_EQ(m.rows[0].line, 2);
  ASSERT_EQ(m.rows[0].n, 2); /* an empty unquoted cell sets nothing */
  ASSERT_STR_EQ(cell(&m, 0, 0), "prompt=a, b");
  ASSERT_STR_EQ(cell(&m, 0, 1), "seed=1");
  ASSERT_EQ(m.rows[1].line, 3);
  ASSERT_EQ(m.rows[1].n, 3); /* "" sets the empty string */
  ASSERT_STR_EQ(cell(&m, 1, 0), "prompt=say \"hi\"");
  ASSERT_STR_EQ(cell(&m, 1, 2), "neg=");
  ASSERT_EQ(m.rows[2].line, 5);
  ASSERT_STR_EQ(cell(&m, 2, 0), "prompt=two\nlines");
  ASSERT_STR_EQ(cell(&m, 2, 2), "neg=x");
  ASSERT_EQ(m.rows[3].line, 7);
  ASSERT_STR_EQ(cell(&m, 3, 0), "prompt=plain 5\" tall");
  ASSERT_STR_EQ(cell(&m, 3, 2), "neg=y");
  weft__batch_manifest_free(&m);
}

TEST(csv_errors_name_file_and_line) {
  ASSERT_STR_EQ(parse_err("m.csv", "a,b\n1,2\n1,2,3\n"),
                "m.csv:3: 3 fields, but the header (line 1) has 2");
  ASSERT_STR_EQ(parse_err("m.csv", "a,b\n1,2\n\"x\ny\",2\n5\n"),
                "m.csv:5: 1 field, but the header (line 1) has 2");
  ASSERT_STR_EQ(parse_err("m.csv", "a,b\n1,\"open\n2,3\n"),
                "m.csv:2: a quoted field is never closed");
  ASSERT_STR_EQ(parse_err("m.csv", "a,b\n\"x\"y,2\n"),
                "m.csv:2:4: 'y' after a closing quote; a field is either all "
                "quoted (\"a, b\") or not quoted at all");
  ASSERT_STR_EQ(parse_err("m.csv", "seed,prompt,seed\n"),
                "m.csv:1: column 'seed' appears twice in the header");
  ASSERT_STR_EQ(parse_err("m.csv", "seed,,x\n"),
                "m.csv:1: column 2 of the header has no name");
  ASSERT_STR_EQ(parse_err("m.csv", "\n\n"),
                "m.csv: empty CSV file: expected a header row of input names");
}

TEST(manifest_format_follows_extension_then_content) {
  /* .csv wins over content that looks like JSON */
  weft__batch_manifest m = parse_ok("m.csv", "{a}\nx\n");
  ASSERT_EQ(m.n_rows, 1);
  ASSERT_STR_EQ(m.cols[0], "{a}");
  weft__batch_manifest_free(&m);
  m = parse_ok("rows.txt", "  {\"a\": 1}\n");
  ASSERT_EQ(m.n_rows, 1);
  ASSERT_STR_EQ(cell(&m, 0, 0), "a=1");
  weft__batch_manifest_free(&m);
  m = parse_ok("rows.txt", "a\n1\n");
  ASSERT_EQ(m.n_rows, 1);
  ASSERT_STR_EQ(cell(&m, 0, 0), "a=1");
  weft__batch_manifest_free(&m);
  m = parse_ok("m.jsonl", "");
  ASSERT_EQ(m.n_rows, 0);
  weft__batch_manifest_free(&m);
}

TEST(manifest_load_reads_files_and_names_missing_ones) {
  char *path = weft_test_write_file(weft_test_tmpdir(), "m.jsonl",
                                    "{\"seed\": 1}\n{\"seed\": 2}\n");
  weft__batch_manifest m;
  ASSERT_OK(weft__batch_manifest_load(path, &m, err, sizeof err));
  ASSERT_EQ(m.n_rows, 2);
  ASSERT_STR_EQ(m.name, path);
  weft__batch_manifest_free(&m);
  free(path);
  ASSERT_EQ(
      weft__batch_manifest_load("/nonexistent/m.csv", &m, err, sizeof err),
      WEFT_ENOENT);
  ASSERT_STR_EQ(err, "/nonexistent/m.csv: cannot open manifest: No such file "
                     "or directory");
}

static weft__batch_sweep sweep_ok(const char *arg) {
  weft__batch_sweep s;
  int r = weft__batch_sweep_parse(arg, &s, err, sizeof err);
  if (r) fprintf(stderr, "unexpected error: %s\n", err);
  ASSERT_OK(r);
  return s;
}

/* The values joined with '|'. */
static const char *joined(const weft__batch_sweep *s) {
  static char buf[4096];
  size_t n = 0;
  buf[0] = 0;
  char v[WEFT__SWEEP_BUF];
  for (int64_t i = 0; i < s->n; i++)
    n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%s", i ? "|" : "",
                          weft__batch_sweep_value(s, i, v));
  return buf;
}

TEST(sweep_lists_split_on_unescaped_commas) {
  weft__batch_sweep s = sweep_ok("prompt=a red circle,a\\, b,c\\\\d,");
  ASSERT_STR_EQ(s.name, "prompt");
  ASSERT_EQ(s.n, 4);
  ASSERT_STR_EQ(joined(&s), "a red circle|a, b|c\\d|");
  weft__batch_sweep_free(&s);
  s = sweep_ok("sampler=euler");
  ASSERT_STR_EQ(joined(&s), "euler");
  weft__batch_sweep_free(&s);
  /* not a range: a list with one value */
  s = sweep_ok("label=1..b");
  ASSERT_STR_EQ(joined(&s), "1..b");
  weft__batch_sweep_free(&s);
  s = sweep_ok("v=a=b");
  ASSERT_STR_EQ(s.name, "v");
  ASSERT_STR_EQ(joined(&s), "a=b");
  weft__batch_sweep_free(&s);
}

TEST(sweep_integer_ranges_with_steps_both_ways) {
  weft__batch_sweep s = sweep_ok("seed=1..5");
  ASSERT_STR_EQ(joined(&s), "1|2|3|4|5");
  weft__batch_sweep_free(&s);
  s = sweep_ok("seed=1..100:25");
  ASSERT_STR_EQ(joined(&s), "1|26|51|76");
  weft__batch_sweep_free(&s);
  s = sweep_ok("seed=3..-3:-2");
  ASSERT_STR_EQ(joined(&s), "3|1|-1|-3");
  weft__batch_sweep_free(&s);
  s = sweep_ok("seed=5..2");
  ASSERT_STR_EQ(joined(&s), "5|4|3|2");
  weft__batch_sweep_free(&s);
  s = sweep_ok("seed=7..7");
  ASSERT_STR_EQ(joined(&s), "7");
  weft__batch_sweep_free(&s);
  s = sweep_ok("seed=9223372036854775806..9223372036854775807");
  ASSERT_STR_EQ(joined(&s), "9223372036854775806|9223372036854775807");
  weft__batch_sweep_free(&s);
  /* the largest range stores nothing: each value is made when asked */
  s = sweep_ok("seed=1..10000000");
  ASSERT_EQ(s.n, 10000000);
  ASSERT(s.vals == NULL);
  char v[WEFT__SWEEP_BUF];
  ASSERT_STR_EQ(weft__batch_sweep_value(&s, 0, v), "1");
  ASSERT_STR_EQ(weft__batch_sweep_value(&s, 9999999, v), "10000000");
  weft__batch_sweep_free(&s);
}

TEST(sweep_decimal_ranges_print_their_decimals) {
  weft__batch_sweep s = sweep_ok("cfg=0..1:0.1");
  ASSERT_STR_EQ(joined(&s), "0.0|0.1|0.2|0.3|0.4|0.5|0.6|0.7|0.8|0.9|1.0");
  weft__batch_sweep_free(&s);
  s = sweep_ok("cfg=5.5..7");
  ASSERT_STR_EQ(joined(&s), "5.5|6.5");
  weft__batch_sweep_free(&s);
  s = sweep_ok("denoise=0.25..-0.25:-0.125");
  ASSERT_STR_EQ(joined(&s), "0.250|0.125|0.000|-0.125|-0.250");
  weft__batch_sweep_free(&s);
}

TEST(sweep_errors_say_what_is_wrong) {
  weft__batch_sweep s;
  ASSERT_EQ(weft__batch_sweep_parse("seed", &s, err, sizeof err), WEFT_ESYNTAX);
  ASSERT_STR_EQ(err, "--sweep seed: expected name=a,b,c or "
                     "name=FROM..TO[:STEP]");
  ASSERT_EQ(weft__batch_sweep_parse("=1,2", &s, err, sizeof err), WEFT_ESYNTAX);
  ASSERT_EQ(weft__batch_sweep_parse("seed=1..10:0", &s, err, sizeof err),
            WEFT_ERANGE);
  ASSERT_STR_EQ(err, "--sweep seed=1..10:0: the step is 0");
  ASSERT_EQ(weft__batch_sweep_parse("seed=1..10:-1", &s, err, sizeof err),
            WEFT_ERANGE);
  ASSERT_STR_EQ(err, "--sweep seed=1..10:-1: a step of -1 never goes from 1 "
                     "to 10");
  ASSERT_EQ(weft__batch_sweep_parse("seed=0..100000000", &s, err, sizeof err),
            WEFT_ERANGE);
  ASSERT_STR_EQ(err, "--sweep seed=0..100000000: 100000001 values; at most "
                     "10000000 per sweep");
}

static const char *const names[] = {"prompt", "seed", "cfg", "sampler"};

static const char *render(const char *tpl, int64_t job,
                          const char *const *vals) {
  static char out[4096];
  weft__batch_template t;
  int r = weft__batch_template_parse(tpl, names, 4, &t, err, sizeof err);
  if (r) fprintf(stderr, "unexpected error: %s\n", err);
  ASSERT_OK(r);
  char *s = weft__batch_template_render(&t, job, vals);
  ASSERT(s != NULL);
  snprintf(out, sizeof out, "%s", s);
  free(s);
  weft__batch_template_free(&t);
  return out;
}

TEST(template_renders_inputs_slugs_and_job_numbers) {
  const char *v[] = {"A Red Circle, on BLUE!", "42", "7.5", "dpmpp_2m"};
  ASSERT_STR_EQ(render("{prompt_slug}-{seed}.png", 3, v),
                "a-red-circle-on-blue-42.png");
  ASSERT_STR_EQ(render("{job:05}.png", 3, v), "00003.png");
  ASSERT_STR_EQ(render("{job:5}.png", 123456, v), "123456.png");
  ASSERT_STR_EQ(render("{job}", 0, v), "0");
  ASSERT_STR_EQ(render("{sampler}/{seed:06}-cfg{cfg}.png", 1, v),
                "dpmpp_2m/000042-cfg7.5.png");
  /* a width on a value that is not an integer leaves it as it is */
  ASSERT_STR_EQ(render("{cfg:4}", 1, v), "7.5");
  ASSERT_STR_EQ(render("{{literal}} {{{seed}}}", 1, v), "{literal} {42}");
  /* values never add directories or control bytes */
  const char *w[] = {"a/b\\c\td", "-5", "1", "x"};
  ASSERT_STR_EQ(render("{prompt}.png", 1, w), "a_b_c_d.png");
  ASSERT_STR_EQ(render("{seed:03}", 1, w), "-05");
  const char *none[] = {NULL, NULL, NULL, NULL};
  ASSERT_STR_EQ(render("x{prompt}{prompt_slug}.png", 1, none), "x.png");
}

TEST(slug_is_lowercase_ascii_dashes_at_most_40) {
  char s[41];
  weft__batch_slug("  Hello,   World!! ", s);
  ASSERT_STR_EQ(s, "hello-world");
  weft__batch_slug("caf\xc3\xa9 au lait", s);
  ASSERT_STR_EQ(s, "caf-au-lait");
  weft__batch_slug("a_b.c-d", s);
  ASSERT_STR_EQ(s, "a-b-c-d");
  weft__batch_slug("!!!", s);
  ASSERT_STR_EQ(s, "");
  weft__batch_slug("a photograph of an astronaut riding a horse on mars", s);
  ASSERT_STR_EQ(s, "a-photograph-of-an-astronaut-riding-a-ho");
  ASSERT_EQ(strlen(s), 40);
  /* the cut never leaves a dash at the end */
  weft__batch_slug("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa bbb", s);
  ASSERT_STR_EQ(s, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
}

static const char *tpl_err(const char *tpl) {
  weft__batch_template t;
  ASSERT(weft__batch_template_parse(tpl, names, 4, &t, err, sizeof err) < 0);
  ASSERT_EQ(t.n, 0);
  return err;
}

TEST(template_errors_suggest_names) {
  ASSERT_STR_EQ(tpl_err("{sede}.png"),
                "--output {sede}.png: unknown placeholder '{sede}' (did you "
                "mean '{seed}'?); use {job}, an input name (prompt, seed, "
                "cfg, sampler) or NAME_slug");
  ASSERT_CONTAINS(tpl_err("{prompt_slg}"), "(did you mean '{prompt_slug}'?)");
  ASSERT_STR_EQ(tpl_err("{seed"), "--output {seed: the '{' at column 1 is "
                                  "never closed (write '{{' for a literal "
                                  "one)");
  ASSERT_STR_EQ(tpl_err("a}b"), "--output a}b: a '}' at column 2 closes "
                                "nothing (write '}}' for a literal one)");
  ASSERT_STR_EQ(tpl_err("{job:x}"), "--output {job:x}: '{job:x}': the width "
                                    "after ':' is a number from 1 to 20 (e.g. "
                                    "{job:05})");
  ASSERT_STR_EQ(tpl_err("{prompt_slug:3}"),
                "--output {prompt_slug:3}: '{prompt_slug:3}': a slug takes no "
                "width");
  ASSERT_STR_EQ(tpl_err(""), "--output: empty template");
}

TEST(output_names_stay_inside_the_output_directory) {
  ASSERT_OK(weft__batch_name_check("a/b/c.png", err, sizeof err));
  ASSERT_OK(weft__batch_name_check(".hidden.png", err, sizeof err));
  ASSERT_OK(weft__batch_name_check("a/.weft-x", err, sizeof err));
  ASSERT_EQ(weft__batch_name_check("", err, sizeof err), WEFT_EINVAL);
  ASSERT_STR_EQ(err, "the output name is empty");
  ASSERT_EQ(weft__batch_name_check("/etc/x.png", err, sizeof err), WEFT_EINVAL);
  ASSERT_STR_EQ(err, "'/etc/x.png': an output name is relative to "
                     "--output-dir");
  ASSERT_EQ(weft__batch_name_check("a/../../x.png", err, sizeof err),
            WEFT_EINVAL);
  ASSERT_STR_EQ(err, "'a/../../x.png': '.' and '..' are not allowed in "
                     "output names");
  ASSERT_EQ(weft__batch_name_check("a//b.png", err, sizeof err), WEFT_EINVAL);
  ASSERT_EQ(weft__batch_name_check("dir/", err, sizeof err), WEFT_EINVAL);
  ASSERT_EQ(weft__batch_name_check(".weft-ledger.jsonl", err, sizeof err),
            WEFT_EINVAL);
  ASSERT_STR_EQ(err, "'.weft-ledger.jsonl': names starting with '.weft-' are "
                     "weft's own");
  char longname[300];
  memset(longname, 'a', 256);
  longname[256] = 0;
  ASSERT_EQ(weft__batch_name_check(longname, err, sizeof err), WEFT_EINVAL);
}

/* A fake environment: "NAME=value" strings. */
static const char *fake_env(const char *name, void *user) {
  for (const char *const *e = user; *e; e++) {
    size_t n = strlen(name);
    if (!strncmp(*e, name, n) && (*e)[n] == '=') return *e + n + 1;
  }
  return NULL;
}

static int shard_env(const char *const *env, weft__batch_shard *s) {
  return weft__batch_shard_from_env(fake_env, (void *)env, s, err, sizeof err);
}

TEST(shard_flag_parses_i_of_n) {
  weft__batch_shard s;
  ASSERT_OK(weft__batch_shard_parse("2/5", &s, err, sizeof err));
  ASSERT_EQ(s.index, 2);
  ASSERT_EQ(s.count, 5);
  ASSERT_STR_EQ(s.source, "--shard");
  ASSERT_EQ(weft__batch_shard_parse("5/5", &s, err, sizeof err), WEFT_ERANGE);
  ASSERT_STR_EQ(err, "--shard 5/5: shard 5 does not exist; shards of 5 count "
                     "from 0 to 4");
  ASSERT_EQ(weft__batch_shard_parse("1/0", &s, err, sizeof err), WEFT_ESYNTAX);
  ASSERT_STR_EQ(err, "--shard 1/0: expected I/N with whole numbers, N >= 1, "
                     "e.g. 0/4");
  ASSERT_EQ(weft__batch_shard_parse("3", &s, err, sizeof err), WEFT_ESYNTAX);
  ASSERT_STR_EQ(err, "--shard 3: expected I/N, e.g. 0/4 (shards count from "
                     "0)");
  ASSERT_EQ(weft__batch_shard_parse("-1/4", &s, err, sizeof err), WEFT_ESYNTAX);
}

TEST(shard_from_slurm_array_variables) {
  weft__batch_shard s;
  const char *none[] = {NULL};
  ASSERT_OK(shard_env(none, &s));
  ASSERT_EQ(s.index, 0);
  ASSERT_EQ(s.count, 1);
  ASSERT_STR_EQ(s.source, "not sharded");
  /* --array=1-4: ids 1..4 are shards 0..3 */
  const char *a[] = {"SLURM_ARRAY_TASK_ID=3", "SLURM_ARRAY_TASK_COUNT=4",
                     "SLURM_ARRAY_TASK_MIN=1", "SLURM_ARRAY_TASK_MAX=4", NULL};
  ASSERT_OK(shard_env(a, &s));
  ASSERT_EQ(s.index, 2);
  ASSERT_EQ(s.count, 4);
  ASSERT_STR_EQ(s.source, "SLURM_ARRAY_TASK_ID=3, min 1, step 1, count 4");
  /* MIN/MAX without COUNT (older Slurm) */
  const char *b[] = {"SLURM_ARRAY_TASK_ID=12", "SLURM_ARRAY_TASK_MIN=10",
                     "SLURM_ARRAY_TASK_MAX=15", NULL};
  ASSERT_OK(shard_env(b, &s));
  ASSERT_EQ(s.index, 2);
  ASSERT_EQ(s.count, 6);
  /* --array=0-12:4: ids 0, 4, 8, 12 */
  const char *c[] = {"SLURM_ARRAY_TASK_ID=8",   "SLURM_ARRAY_TASK_COUNT=4",
                     "SLURM_ARRAY_TASK_MIN=0",  "SLURM_ARRAY_TASK_MAX=12",
                     "SLURM_ARRAY_TASK_STEP=4", NULL};
  ASSERT_OK(shard_env(c, &s));
  ASSERT_EQ(s.index, 2);
  ASSERT_EQ(s.count, 4);
  /* COUNT alone: ids from 0 */
  const char *d[] = {"SLURM_ARRAY_TASK_ID=1", "SLURM_ARRAY_TASK_COUNT=2", NULL};
  ASSERT_OK(shard_env(d, &s));
  ASSERT_EQ(s.index, 1);
  ASSERT_EQ(s.count, 2);
  /* --array=1,3,7: ids with gaps cannot be numbered */
  const char *e[] = {"SLURM_ARRAY_TASK_ID=7", "SLURM_ARRAY_TASK_COUNT=3",
                     "SLURM_ARRAY_TASK_MIN=1", "SLURM_ARRAY_TASK_MAX=7", NULL};
  ASSERT_EQ(shard_env(e, &s), WEFT_ERANGE);
  ASSERT_STR_EQ(err, "SLURM_ARRAY_TASK_ID=7 does not fit an array of 3 tasks "
                     "from 1 in steps of 1 (an array with gaps, like "
                     "--array=1,3,7?): pass --shard I/N");
  const char *f[] = {"SLURM_ARRAY_TASK_ID=2", NULL};
  ASSERT_EQ(shard_env(f, &s), WEFT_EINVAL);
  ASSERT_STR_EQ(err, "SLURM_ARRAY_TASK_ID=2 is set but neither "
                     "SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MIN and "
                     "_MAX: pass --shard I/N");
  const char *g[] = {"SLURM_ARRAY_TASK_ID=x1", NULL};
  ASSERT_EQ(shard_env(g, &s), WEFT_ESYNTAX);
  ASSERT_STR_EQ(err, "SLURM_ARRAY_TASK_ID=x1: expected a non-negative whole "
                     "number");
}

TEST(shard_from_kubernetes_and_weft_shard) {
  weft__batch_shard s;
  const char *a[] = {"JOB_COMPLETION_INDEX=3", "WEFT_SHARD_COUNT=8", NULL};
  ASSERT_OK(shard_env(a, &s));
  ASSERT_EQ(s.index, 3);
  ASSERT_EQ(s.count, 8);
  ASSERT_STR_EQ(s.source, "JOB_COMPLETION_INDEX=3, WEFT_SHARD_COUNT=8");
  const char *b[] = {"JOB_COMPLETION_INDEX=3", NULL};
  ASSERT_EQ(shard_env(b, &s), WEFT_EINVAL);
  ASSERT_STR_EQ(err, "JOB_COMPLETION_INDEX=3 is set (a Kubernetes indexed "
                     "Job) but WEFT_SHARD_COUNT is not: set it to the Job's "
                     "completions, or pass --shard I/N");
  const char *c[] = {"JOB_COMPLETION_INDEX=8", "WEFT_SHARD_COUNT=8", NULL};
  ASSERT_EQ(shard_env(c, &s), WEFT_ERANGE);
  ASSERT_STR_EQ(err, "JOB_COMPLETION_INDEX=8 is not below "
                     "WEFT_SHARD_COUNT=8");
  /* WEFT_SHARD wins over the schedulers' variables */
  const char *d[] = {"WEFT_SHARD=1/2", "SLURM_ARRAY_TASK_ID=3",
                     "JOB_COMPLETION_INDEX=0", NULL};
  ASSERT_OK(shard_env(d, &s));
  ASSERT_EQ(s.index, 1);
  ASSERT_EQ(s.count, 2);
  ASSERT_STR_EQ(s.source, "WEFT_SHARD");
  const char *e[] = {"WEFT_SHARD=2/2", NULL};
  ASSERT_EQ(shard_env(e, &s), WEFT_ERANGE);
  ASSERT_STR_EQ(err, "WEFT_SHARD=2/2: shard 2 does not exist; shards of 2 "
                     "count from 0 to 1");
  /* Slurm wins over Kubernetes */
  const char *f[] = {"SLURM_ARRAY_TASK_ID=0", "SLURM_ARRAY_TASK_COUNT=2",
                     "JOB_COMPLETION_INDEX=5", NULL};
  ASSERT_OK(shard_env(f, &s));
  ASSERT_EQ(s.count, 2);
}

TEST(file_hash_is_size_and_xxh3_128) {
  char hex[33];
  weft__batch_hash_hex("", 0, hex);
  ASSERT_STR_EQ(hex, "99aa06d3014798d86001c324468d497f");
  weft__batch_hash_hex("abc", 3, hex);
  ASSERT_STR_EQ(hex, "06b05ab6733a618578af5f94892f3950");
  char *path = weft_test_write_file(weft_test_tmpdir(), "f", "abc");
  int64_t size;
  ASSERT_OK(weft__batch_file_hash(path, &size, hex, err, sizeof err));
  ASSERT_EQ(size, 3);
  ASSERT_STR_EQ(hex, "06b05ab6733a618578af5f94892f3950");
  free(path);
  ASSERT_EQ(weft__batch_file_hash("/nonexistent", &size, hex, err, sizeof err),
            WEFT_ENOENT);
}

#define K1 "11111111111111111111111111111111"
#define K2 "22222222222222222222222222222222"
#define K3 "33333333333333333333333333333333"
#define HX "abcdefabcdefabcdefabcdefabcdef00"

TEST(ledger_keeps_the_last_line_per_key_and_skips_bad_lines) {
  const char *dir = weft_test_tmpdir();
  char *p = weft_test_write_file(
      dir, WEFT__LEDGER_NAME,
      "{\"job\":0,\"key\":\"" K1 "\",\"status\":\"failed\",\"output\":\"a."
      "png\",\"error\":\"boom\"}\n"
      "{\"job\":1,\"key\":\"" K2 "\",\"status\":\"ok\",\"output\":\"b.png\","
      "\"size\":5,\"xxh128\":\"" HX "\"}\n"
      "not json\n"
      "{\"job\":0,\"key\":\"" K1 "\",\"status\":\"ok\",\"output\":\"a.png\","
      "\"size\":7,\"xxh128\":\"" HX "\"}\n"
      "{\"job\":2,\"key\":\"short\",\"status\":\"ok\"}\n"
      "{\"job\":1,\"key\":\"" K2 "\",\"status\":\"ok\",\"output\":\"b.png\","
      "\"size\":9,\"xxh128\":\"" HX "\"}\n"
      "{\"job\":3,\"key\":\"" K3 "\",\"status\":\"ok\",\"outp");
  free(p);
  weft__ledger l;
  ASSERT_OK(weft__ledger_open(dir, &l, err, sizeof err));
  ASSERT_EQ(l.n, 2);
  ASSERT_EQ(l.n_bad, 3);
  ASSERT_EQ(l.first_bad, 3);
  const weft__ledger_entry *e = weft__ledger_find(&l, K1);
  ASSERT(e != NULL);
  ASSERT(e->ok);
  ASSERT_EQ(e->job, 0);
  ASSERT_EQ(e->size, 7);
  ASSERT_STR_EQ(e->output, "a.png");
  e = weft__ledger_find(&l, K2);
  ASSERT(e != NULL);
  ASSERT_EQ(e->size, 9);
  ASSERT(weft__ledger_find(&l, K3) == NULL);
  /* the cut line does not swallow the next one */
  ASSERT_OK(weft__ledger_append(
      &l, "{\"job\":3,\"key\":\"" K3 "\",\"status\":\"failed\"}", err,
      sizeof err));
  weft__ledger_close(&l);
  ASSERT_OK(weft__ledger_open(dir, &l, err, sizeof err));
  ASSERT_EQ(l.n, 3);
  e = weft__ledger_find(&l, K3);
  ASSERT(e != NULL);
  ASSERT(!e->ok);
  weft__ledger_close(&l);
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, WEFT__LEDGER_NAME);
  char *text = weft_test_read_file(path, NULL);
  ASSERT_CONTAINS(text, "\"outp\n{\"job\":3,\"key\":\"" K3
                        "\",\"status\":\"failed\"}\n");
  free(text);
}

TEST(ledger_is_created_empty_in_a_new_directory) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/out/sub", weft_test_tmpdir());
  ASSERT_OK(weft__batch_mkdirs(dir, err, sizeof err));
  weft__ledger l;
  ASSERT_OK(weft__ledger_open(dir, &l, err, sizeof err));
  ASSERT_EQ(l.n, 0);
  ASSERT(weft__ledger_find(&l, K1) == NULL);
  weft__ledger_close(&l);
  snprintf(dir, sizeof dir, "%s/out", weft_test_tmpdir());
  ASSERT_OK(weft__batch_rmtree(dir));
  ASSERT(access(dir, F_OK) != 0);
  ASSERT_OK(weft__batch_rmtree(dir)); /* gone already: fine */
}

TEST(graph_inputs_json_keeps_seeds_beyond_int64_as_digits) {
  json_t *o = weft__batch_inputs_load(
      "{\"seed\":18446744073709551615,\"small\":-9223372036854775808,"
      "\"s\":\"99999999999999999999 \\\" 1e400\",\"f\":1.5e300,"
      "\"b\":true}");
  ASSERT(o != NULL);
  uint64_t seed = 0;
  ASSERT(weft__json_is_u64(json_object_get(o, "seed"), &seed));
  ASSERT(seed == UINT64_MAX);
  ASSERT(json_integer_value(json_object_get(o, "small")) == INT64_MIN);
  ASSERT_STR_EQ(json_string_value(json_object_get(o, "s")),
                "99999999999999999999 \" 1e400");
  ASSERT(json_real_value(json_object_get(o, "f")) == 1.5e300);
  ASSERT(json_is_true(json_object_get(o, "b")));
  json_decref(o);
  /* below INT64_MIN is no value weft writes */
  ASSERT(weft__batch_inputs_load("{\"neg\":-18446744073709551615}") == NULL);
  ASSERT(weft__batch_inputs_load("[1]") == NULL);
  ASSERT(weft__batch_inputs_load("{") == NULL);
  ASSERT(weft__batch_inputs_load(NULL) == NULL);
}
