/* test_clip_tok.c - CLIP tokenizer and ComfyUI prompt chunking, against
 * fixtures from tools/fixtures/gen_tokenizer_cases.py (transformers 5.x
 * CLIPTokenizer ids; a port of ComfyUI's sd1_clip.py for the chunks). */
#include "test.h"

#include <jansson.h>

#include "prompt_weights.h"
#include "tokenizer.h"

static weft_clip_tok *load(void) {
  char path[4096], err[512];
  snprintf(path, sizeof path,
           "%s/../nodes/clip/data/bpe_simple_vocab_16e6.txt.gz",
           weft_test_srcdir());
  weft_clip_tok *t = NULL;
  int rc = weft_clip_tok_load(path, &t, err, sizeof err);
  if (rc) fprintf(stderr, "%s\n", err);
  ASSERT_OK(rc);
  return t;
}

static json_t *fixture(const char *name) {
  char path[4096];
  snprintf(path, sizeof path, "%s/fixtures/tokenizer/%s", weft_test_srcdir(),
           name);
  json_error_t e;
  json_t *j = json_load_file(path, JSON_ALLOW_NUL, &e);
  if (!j) fprintf(stderr, "%s:%d: %s\n", path, e.line, e.text);
  ASSERT(j && json_is_array(j));
  return j;
}

/* Compare ids[0..n) to want[from..from+n). */
static int same_ids(const int32_t *ids, size_t n, json_t *want, size_t from) {
  if (json_array_size(want) < from + n) return 0;
  for (size_t i = 0; i < n; i++)
    if (ids[i] != json_integer_value(json_array_get(want, from + i))) return 0;
  return 1;
}

static void print_ids(const char *label, const int32_t *ids, size_t n) {
  fprintf(stderr, "  %s:", label);
  for (size_t i = 0; i < n; i++)
    fprintf(stderr, " %d", (int)ids[i]);
  fprintf(stderr, "\n");
}

static size_t unhex(const char *hex, char *out) {
  size_t n = 0;
  for (; hex[0] && hex[1]; hex += 2) {
    unsigned v;
    sscanf(hex, "%2x", &v);
    out[n++] = (char)v;
  }
  return n;
}

TEST(photo_of_a_cat) {
  weft_clip_tok *t = load();
  int32_t *ids;
  size_t n;
  ASSERT_OK(weft_clip_tok_encode(t, "a photo of a cat", 16, &ids, &n));
  int32_t want[] = {320, 1125, 539, 320, 2368};
  ASSERT_EQ(n, 5);
  for (size_t i = 0; i < n; i++)
    ASSERT_EQ(ids[i], want[i]);
  free(ids);
  weft_clip_tok_free(t);
}

TEST(vocabulary_spelling) {
  weft_clip_tok *t = load();
  ASSERT_STR_EQ(weft_clip_tok_token(t, 0), "!");
  ASSERT_STR_EQ(weft_clip_tok_token(t, 188), "Ā"); /* byte 0x00 */
  ASSERT_STR_EQ(weft_clip_tok_token(t, 256), "!</w>");
  ASSERT_STR_EQ(weft_clip_tok_token(t, 512), "in"); /* first merge */
  ASSERT_STR_EQ(weft_clip_tok_token(t, 320), "a</w>");
  ASSERT_STR_EQ(weft_clip_tok_token(t, 2368), "cat</w>");
  ASSERT_STR_EQ(weft_clip_tok_token(t, 49405), "jekyll</w>"); /* last merge */
  ASSERT_STR_EQ(weft_clip_tok_token(t, 49406), "<|startoftext|>");
  ASSERT_STR_EQ(weft_clip_tok_token(t, 49407), "<|endoftext|>");
  ASSERT(weft_clip_tok_token(t, 49408) == NULL);
  ASSERT(weft_clip_tok_token(t, -1) == NULL);
  weft_clip_tok_free(t);
}

/* Every fixture prompt gives transformers' ids (without BOS/EOS). */
TEST(ids_match_transformers) {
  weft_clip_tok *t = load();
  json_t *cases = fixture("cases.json");
  ASSERT(json_array_size(cases) >= 250);
  size_t i, bad = 0;
  json_t *c;
  json_array_foreach(cases, i, c) {
    char raw[4096];
    const char *text;
    size_t len;
    json_t *hex = json_object_get(c, "hex");
    if (hex) {
      ASSERT(strlen(json_string_value(hex)) / 2 < sizeof raw);
      len = unhex(json_string_value(hex), raw);
      text = raw;
    } else {
      json_t *s = json_object_get(c, "text");
      text = json_string_value(s);
      len = json_string_length(s);
    }
    json_t *want = json_object_get(c, "ids");
    ASSERT_EQ(json_integer_value(json_array_get(want, 0)), WEFT_CLIP_BOS);
    int32_t *ids;
    size_t n;
    ASSERT_OK(weft_clip_tok_encode(t, text, len, &ids, &n));
    if (!same_ids(ids, n, want, 1) || json_array_size(want) != n + 2 ||
        json_integer_value(json_array_get(want, n + 1)) != WEFT_CLIP_EOS) {
      fprintf(stderr, "case %zu: %.*s\n", i, (int)(len > 200 ? 200 : len),
              text);
      print_ids("weft", ids, n);
      bad++;
    }
    free(ids);
  }
  ASSERT_EQ(bad, 0);
  json_decref(cases);
  weft_clip_tok_free(t);
}

/* ComfyUI's chunks: exact ids, weights to 1e-6, and its warnings. */
TEST(chunks_match_comfyui) {
  weft_clip_tok *t = load();
  json_t *cases = fixture("chunks.json");
  ASSERT(json_array_size(cases) >= 40);
  size_t i, bad = 0;
  json_t *c;
  json_array_foreach(cases, i, c) {
    json_t *s = json_object_get(c, "text");
    const char *text = json_string_value(s);
    weft_clip_chunks *ch;
    ASSERT_OK(
        weft_clip_chunks_build(t, text, json_string_length(s), NULL, &ch));
    json_t *want = json_object_get(c, "chunks");
    int ok = ch->n_chunks == json_array_size(want);
    int any_weight = 0;
    for (size_t k = 0; ok && k < ch->n_chunks; k++) {
      json_t *wk = json_array_get(want, k);
      ok = same_ids(ch->ids[k], WEFT_CLIP_CHUNK_LEN, json_object_get(wk, "ids"),
                    0);
      json_t *ws = json_object_get(wk, "weights");
      for (size_t j = 0; ok && j < WEFT_CLIP_CHUNK_LEN; j++) {
        json_t *w = json_array_get(ws, j);
        double got = ch->weights[k][j];
        if (json_is_string(w)) { /* "nan", "inf", "-inf" */
          const char *ws_ = json_string_value(w);
          ok = strcmp(ws_, "nan") == 0   ? isnan(got)
               : strcmp(ws_, "inf") == 0 ? isinf(got) && got > 0
                                         : isinf(got) && got < 0;
          any_weight = 1;
        } else {
          double e = json_real_value(w);
          ok = fabs(got - e) <= 1e-6;
          if (e != 1.0) any_weight = 1;
        }
      }
    }
    ok = ok && ch->has_weights == any_weight;
    /* warnings: the same lines in the same order */
    json_t *warn = json_object_get(c, "warnings");
    char expect[4096] = "";
    size_t wi;
    json_t *w;
    json_array_foreach(warn, wi, w) {
      strncat(expect, json_string_value(w), sizeof expect - strlen(expect) - 2);
      strcat(expect, "\n");
    }
    ok = ok && strcmp(expect, ch->warnings ? ch->warnings : "") == 0;
    if (!ok) {
      fprintf(stderr, "case %zu: %s\n", i, text);
      char *txt = weft_clip_chunks_text(ch);
      fprintf(stderr, "%s", txt);
      free(txt);
      bad++;
    }
    weft_clip_chunks_free(ch);
  }
  ASSERT_EQ(bad, 0);
  json_decref(cases);
  weft_clip_tok_free(t);
}

TEST(empty_prompt_is_one_padded_chunk) {
  weft_clip_tok *t = load();
  weft_clip_chunks *ch;
  ASSERT_OK(weft_clip_chunks_build(t, "", 0, NULL, &ch));
  ASSERT_EQ(ch->n_chunks, 1);
  ASSERT_EQ(ch->ids[0][0], WEFT_CLIP_BOS);
  for (int j = 1; j < WEFT_CLIP_CHUNK_LEN; j++) {
    ASSERT_EQ(ch->ids[0][j], WEFT_CLIP_EOS);
    ASSERT_EQ(ch->weights[0][j], 1.0);
  }
  ASSERT_EQ(ch->has_weights, 0);
  ASSERT(ch->warnings == NULL);
  weft_clip_chunks_free(ch);
  weft_clip_tok_free(t);
}

/* A short word never straddles two chunks; a long one (>= 8 tokens) is cut
 * at the boundary with an end token. */
TEST(chunk_boundary_keeps_short_words_whole) {
  weft_clip_tok *t = load();
  char text[1024] = "";
  for (int i = 0; i < 74; i++)
    strcat(text, "(x) ");
  strcat(text, "(a b:1.5)");
  weft_clip_chunks *ch;
  ASSERT_OK(weft_clip_chunks_build(t, text, strlen(text), NULL, &ch));
  /* "x" is 1 token: 74 of them fill positions 1..74, "a b" (2 tokens) does
   * not fit before the end token at 76, so it opens chunk 2 */
  ASSERT_EQ(ch->n_chunks, 2);
  ASSERT_EQ(ch->ids[0][74], 343); /* x */
  ASSERT_EQ(ch->ids[0][75], WEFT_CLIP_EOS);
  ASSERT_EQ(ch->ids[0][76], WEFT_CLIP_EOS);
  ASSERT_NEAR(ch->weights[0][74], 1.1, 1e-12);
  ASSERT_EQ(ch->ids[1][0], WEFT_CLIP_BOS);
  ASSERT_EQ(ch->ids[1][1], 320); /* a */
  ASSERT_EQ(ch->ids[1][2], 321); /* b */
  ASSERT_EQ(ch->weights[1][1], 1.5);
  ASSERT_EQ(ch->ids[1][3], WEFT_CLIP_EOS);
  weft_clip_chunks_free(ch);
  weft_clip_tok_free(t);
}

TEST(disable_weights_keeps_syntax_literal) {
  weft_clip_tok *t = load();
  weft_clip_chunk_opts o;
  weft_clip_chunk_opts_sd1(&o);
  o.disable_weights = 1;
  weft_clip_chunks *ch;
  ASSERT_OK(weft_clip_chunks_build(t, "(cat:1.5)", 9, &o, &ch));
  int32_t *ids;
  size_t n;
  ASSERT_OK(weft_clip_tok_encode(t, "(cat:1.5)", 9, &ids, &n));
  ASSERT_EQ(ch->n_chunks, 1);
  for (size_t j = 0; j < n; j++)
    ASSERT_EQ(ch->ids[0][j + 1], ids[j]);
  ASSERT_EQ(ch->ids[0][n + 1], WEFT_CLIP_EOS);
  ASSERT_EQ(ch->has_weights, 0);
  free(ids);
  weft_clip_chunks_free(ch);
  weft_clip_tok_free(t);
}

/* The examples of ComfyUI's token_weights docstring. */
TEST(parse_weights_like_comfyui_docstring) {
  static const struct {
    const char *text;
    int n;
    const char *seg[5];
    double w[5];
  } cases[] = {
      {"(foo)", 1, {"foo"}, {1.1}},
      {"(foo)(bar)", 2, {"foo", "bar"}, {1.1, 1.1}},
      {"(foo:2.0)", 1, {"foo"}, {2.0}},
      {"((foo))", 1, {"foo"}, {1.1 * 1.1}},
      {"((foo):1.1)", 1, {"foo"}, {1.1 * 1.1}},
      {"((foo:1.1))", 1, {"foo"}, {1.1}},
      {"(foo:0.0)", 1, {"foo"}, {0.0}},
      {"((foo:1.0):0.0)", 1, {"foo"}, {1.0}},
      {"foo ((((lol (cat:666) attack:100)))) baz",
       5,
       {"foo ", "lol ", "cat", " attack", " baz"},
       {1.0, 100.0, 666.0, 100.0, 1.0}},
      {"foo ((((lol (cat:666) attack):100))) baz",
       5,
       {"foo ", "lol ", "cat", " attack", " baz"},
       {1.0, 100.0 * 1.1, 666.0, 100.0 * 1.1, 1.0}},
      {"\\(foo\\)(bar)", 2, {"(foo)", "bar"}, {1.0, 1.1}},
      {"[foo] (bar:x)", 2, {"[foo] ", "bar:x"}, {1.0, 1.1}},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    weft_clip_weighted *w;
    size_t n;
    ASSERT_OK(weft_clip_parse_weights(cases[c].text, strlen(cases[c].text), 0,
                                      &w, &n));
    ASSERT_EQ(n, cases[c].n);
    for (size_t i = 0; i < n; i++) {
      ASSERT_STR_EQ(w[i].text, cases[c].seg[i]);
      ASSERT_EQ(w[i].len, strlen(cases[c].seg[i]));
      ASSERT_EQ(w[i].weight, cases[c].w[i]);
    }
    weft_clip_weighted_free(w, n);
  }
}

TEST(py_float_accepts_what_python_accepts) {
  static const struct {
    const char *s;
    int ok;
    double v;
  } cases[] = {
      {"1.5", 1, 1.5},
      {" 1.5 ", 1, 1.5},
      {"\t1\n", 1, 1.0},
      {"\x0b"
       "1\x0c",
       1, 1.0},
      {"1_0", 1, 10.0},
      {"1e1_0", 1, 1e10},
      {".5", 1, 0.5},
      {"5.", 1, 5.0},
      {"+.5e-1", 1, 0.05},
      {"1e5", 1, 1e5},
      {"-2", 1, -2.0},
      {"1e-3", 1, 0.001},
      {"\u2003"
       "1.5",
       1, 1.5},
      {"1.5\xc2\x85", 1, 1.5},
      {"\u0661.\u0665", 1, 1.5}, /* Arabic-Indic digits */
      {"\uff11.\uff12", 1, 1.2}, /* fullwidth digits */
      {"1.2100000000000002", 1, 1.2100000000000002},
      {"\x1c"
       "1.5",
       0, 0},
      {"1.5\x1c", 0, 0},
      {"1__0", 0, 0},
      {"_1", 0, 0},
      {"1_.5", 0, 0},
      {"1.5e", 0, 0},
      {".", 0, 0},
      {"0x10", 0, 0},
      {"  ", 0, 0},
      {"", 0, 0},
      {"1 .5", 0, 0},
      {"1.5.2", 0, 0},
      {"inf5", 0, 0},
      {"1e+_5", 0, 0},
      {"\xc2\xbd", 0, 0},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    double v = -12345;
    int rc = weft_clip_py_float(cases[c].s, strlen(cases[c].s), &v);
    if (cases[c].ok) {
      if (rc) fprintf(stderr, "rejected \"%s\"\n", cases[c].s);
      ASSERT_OK(rc);
      ASSERT_EQ(v, cases[c].v);
    } else {
      if (rc != WEFT_ESYNTAX) fprintf(stderr, "accepted \"%s\"\n", cases[c].s);
      ASSERT_EQ(rc, WEFT_ESYNTAX);
    }
  }
  double v;
  ASSERT_OK(weft_clip_py_float("-Infinity", 9, &v));
  ASSERT(isinf(v) && v < 0);
  ASSERT_OK(weft_clip_py_float("nAn", 3, &v));
  ASSERT(isnan(v));
  ASSERT_OK(weft_clip_py_float("+inf", 4, &v));
  ASSERT(isinf(v) && v > 0);
}

TEST(json_lists_weights_only_when_used) {
  weft_clip_tok *t = load();
  weft_clip_chunks *ch;
  ASSERT_OK(weft_clip_chunks_build(t, "a cat", 5, NULL, &ch));
  char *js = weft_clip_chunks_json(ch);
  ASSERT_CONTAINS(js, "{\"n_chunks\":1,\"chunks\":[{\"ids\":[49406,320,2368,"
                      "49407,49407,");
  ASSERT(strstr(js, "weights") == NULL);
  ASSERT(strstr(js, "warnings") == NULL);
  json_error_t e;
  json_t *j = json_loads(js, 0, &e);
  ASSERT(j);
  ASSERT_EQ(json_array_size(json_object_get(
                json_array_get(json_object_get(j, "chunks"), 0), "ids")),
            77);
  json_decref(j);
  free(js);
  weft_clip_chunks_free(ch);

  const char *p = "((a)) (cat:nan) embedding:neg";
  ASSERT_OK(weft_clip_chunks_build(t, p, strlen(p), NULL, &ch));
  js = weft_clip_chunks_json(ch);
  ASSERT_CONTAINS(js, "\"weights\":[1,1.2100000000000002,null,1,1,");
  ASSERT_CONTAINS(js, "\"warnings\":[\"embedding:neg does not exist, "
                      "ignoring\"]");
  j = json_loads(js, 0, &e);
  ASSERT(j);
  json_decref(j);
  free(js);
  weft_clip_chunks_free(ch);
  weft_clip_tok_free(t);
}

TEST(text_view_one_line_per_chunk) {
  weft_clip_tok *t = load();
  weft_clip_chunks *ch;
  ASSERT_OK(weft_clip_chunks_build(t, "a (cat:1.5)", 11, NULL, &ch));
  char *txt = weft_clip_chunks_text(ch);
  ASSERT_STR_EQ(txt, "chunk 1/1: 49406 320 2368:1.5 49407 (+73 pad)\n");
  free(txt);
  weft_clip_chunks_free(ch);

  char text[700] = "";
  for (int i = 0; i < 80; i++)
    strcat(text, "x ");
  strcat(text, "embedding:neg");
  ASSERT_OK(weft_clip_chunks_build(t, text, strlen(text), NULL, &ch));
  txt = weft_clip_chunks_text(ch);
  ASSERT_CONTAINS(txt, "chunk 1/2: 49406 343 343");
  ASSERT_CONTAINS(txt, " 343 49407\nchunk 2/2: 49406 343 343 343 343 343 "
                       "49407 (+70 pad)\nwarning: embedding:neg does not "
                       "exist, ignoring\n");
  free(txt);
  weft_clip_chunks_free(ch);
  weft_clip_tok_free(t);
}

TEST(load_missing_file_names_it) {
  char path[4096], err[512] = "";
  snprintf(path, sizeof path, "%s/nope.txt.gz", weft_test_tmpdir());
  weft_clip_tok *t = (weft_clip_tok *)1;
  ASSERT_EQ(weft_clip_tok_load(path, &t, err, sizeof err), WEFT_ENOENT);
  ASSERT(t == NULL);
  ASSERT_CONTAINS(err, path);
}

TEST(load_short_file_is_format_error) {
  char path[4096], err[512] = "";
  snprintf(path, sizeof path, "%s/short.txt", weft_test_tmpdir());
  FILE *f = fopen(path, "w");
  ASSERT(f);
  fputs("#version: 0.2\ni n\nt h\n", f);
  fclose(f);
  weft_clip_tok *t = NULL;
  ASSERT_EQ(weft_clip_tok_load(path, &t, err, sizeof err), WEFT_EFORMAT);
  ASSERT_CONTAINS(err, path);
  ASSERT_CONTAINS(err, "has only 3 lines");
}

TEST(load_bad_merge_line_names_line) {
  char path[4096], err[512] = "";
  snprintf(path, sizeof path, "%s/bad.txt", weft_test_tmpdir());
  FILE *f = fopen(path, "w");
  ASSERT(f);
  fputs("#version: 0.2\ni n\nthree parts here\n", f);
  for (int i = 0; i < 49000; i++)
    fputs("a b\n", f);
  fclose(f);
  weft_clip_tok *t = NULL;
  ASSERT_EQ(weft_clip_tok_load(path, &t, err, sizeof err), WEFT_EFORMAT);
  ASSERT_CONTAINS(err, "bad.txt:3: expected a merge");
}
