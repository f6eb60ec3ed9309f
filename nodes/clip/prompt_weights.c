/* prompt_weights.c - ComfyUI's prompt handling around the CLIP tokenizer:
 * emphasis weights, embedding references, word grouping into 77-token
 * chunks, and the JSON / text views of the chunks. */
#define WEFT_CLIP_TOK_INTERNAL
#include "prompt_weights.h"
#include "tokenizer.h"

#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* escape_important's markers for "\(" and "\)".  ComfyUI uses "\0\2" and
 * "\0\1"; code points above U+10FFFF cannot come from UTF-8 text. */
#define ESC_OPEN 0x110001u
#define ESC_CLOSE 0x110002u

/* ComfyUI's SDTokenizer.max_word_length: a piece of fewer tokens than this
 * is never split across chunks. */
#define MAX_WORD_LENGTH 8

/* ------------------------------------------------------------------ */
/* Python's float()                                                    */

static int py_float_cps(const uint32_t *v, size_t n, double *out) {
  /* As CPython: non-ASCII white space -> ' ', non-ASCII decimal digits ->
   * ASCII, any other non-ASCII character (and DEL) makes it invalid; then
   * strip ASCII white space. */
  char stackbuf[128];
  char *s = n + 1 <= sizeof stackbuf ? stackbuf : malloc(n + 1);
  if (!s) return WEFT_ENOMEM;
  int rc = WEFT_ESYNTAX;
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t c = v[i];
    if (c < 127)
      s[m++] = (char)c;
    else if (weft__uni_py_isspace(c))
      s[m++] = ' ';
    else {
      int d = weft__uni_decimal(c);
      if (d < 0) goto done;
      s[m++] = (char)('0' + d);
    }
  }
  s[m] = '\0';
  const char *p = s, *e = s + m;
  while (p < e && strchr(" \t\n\r\v\f", *p) && *p)
    p++;
  while (e > p && strchr(" \t\n\r\v\f", e[-1]) && e[-1])
    e--;
  /* Validate Python's grammar and copy without underscores. */
  char clean_buf[128];
  size_t cl = (size_t)(e - p);
  char *clean = cl + 1 <= sizeof clean_buf ? clean_buf : malloc(cl + 1);
  if (!clean) {
    rc = WEFT_ENOMEM;
    goto done;
  }
  size_t k = 0;
  const char *q = p;
  if (q < e && (*q == '+' || *q == '-')) clean[k++] = *q++;
  size_t rest = (size_t)(e - q);
  if ((rest == 3 && strncasecmp(q, "inf", 3) == 0) ||
      (rest == 8 && strncasecmp(q, "infinity", 8) == 0)) {
    *out = (k && clean[0] == '-') ? -INFINITY : INFINITY;
    rc = 0;
    goto done_clean;
  }
  if (rest == 3 && strncasecmp(q, "nan", 3) == 0) {
    *out = NAN;
    rc = 0;
    goto done_clean;
  }
  /* digitpart: digit (["_"] digit)* */
#define DIGITS(count)                                                          \
  do {                                                                         \
    count = 0;                                                                 \
    while (q < e && *q >= '0' && *q <= '9') {                                  \
      clean[k++] = *q++;                                                       \
      count++;                                                                 \
      if (q + 1 < e && *q == '_' && q[1] >= '0' && q[1] <= '9') q++;           \
    }                                                                          \
  } while (0)
  size_t int_digits, frac_digits = 0, exp_digits;
  DIGITS(int_digits);
  if (q < e && *q == '.') {
    clean[k++] = *q++;
    DIGITS(frac_digits);
  }
  if (int_digits + frac_digits == 0) goto done_clean;
  if (q < e && (*q == 'e' || *q == 'E')) {
    clean[k++] = *q++;
    if (q < e && (*q == '+' || *q == '-')) clean[k++] = *q++;
    DIGITS(exp_digits);
    if (!exp_digits) goto done_clean;
  }
#undef DIGITS
  if (q != e) goto done_clean;
  clean[k] = '\0';
  /* Correctly rounded like CPython's dtoa, and independent of the
   * process's LC_NUMERIC. */
  locale_t c_loc = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
  if (!c_loc) {
    rc = WEFT_ENOMEM;
    goto done_clean;
  }
  *out = strtod_l(clean, NULL, c_loc);
  freelocale(c_loc);
  rc = 0;
done_clean:
  if (clean != clean_buf) free(clean);
done:
  if (s != stackbuf) free(s);
  return rc;
}

int weft_clip_py_float(const char *utf8, size_t len, double *out) {
  weft__cps cps = {0};
  int rc = weft__cps_from_utf8(&cps, utf8, len);
  if (!rc) rc = py_float_cps(cps.v, cps.n, out);
  free(cps.v);
  return rc;
}

/* ------------------------------------------------------------------ */
/* Emphasis: escape_important, token_weights, parse_parentheses        */

typedef struct {
  size_t lo, hi; /* code point range in the escaped text */
  double w;
  bool parse; /* token_weights' stack: parse this range (else emit it) */
} span;

typedef struct {
  span *v;
  size_t n, cap;
} spans;

static int spans_push(spans *a, span s) {
  if (a->n == a->cap) {
    size_t cap = a->cap ? a->cap * 2 : 16;
    span *v = realloc(a->v, cap * sizeof *v);
    if (!v) return WEFT_ENOMEM;
    a->v = v;
    a->cap = cap;
  }
  a->v[a->n++] = s;
  return 0;
}

/* escape_important: "\)" then "\(" become markers, in place. */
static void escape_important(weft__cps *t) {
  static const uint32_t pairs[2][2] = {{')', ESC_CLOSE}, {'(', ESC_OPEN}};
  for (int p = 0; p < 2; p++) {
    size_t w = 0;
    for (size_t i = 0; i < t->n; i++) {
      if (t->v[i] == '\\' && i + 1 < t->n && t->v[i + 1] == pairs[p][0]) {
        t->v[w++] = pairs[p][1];
        i++;
      } else {
        t->v[w++] = t->v[i];
      }
    }
    t->n = w;
  }
}

/* parse_parentheses on v[lo, hi): the top-level items, each a contiguous
 * range, appended to items with weight w.  A ')' that closes nothing drives
 * the level negative and stays text, as in ComfyUI. */
static int parse_parentheses(const uint32_t *v, size_t lo, size_t hi, double w,
                             spans *items) {
  long level = 0;
  size_t start = lo;
  for (size_t i = lo; i < hi; i++) {
    if (v[i] == '(') {
      if (level == 0) {
        if (start < i && spans_push(items, (span){start, i, w, false}))
          return WEFT_ENOMEM;
        start = i;
      }
      level++;
    } else if (v[i] == ')') {
      level--;
      if (level == 0) {
        if (spans_push(items, (span){start, i + 1, w, false}))
          return WEFT_ENOMEM;
        start = i + 1;
      }
    }
  }
  if (start < hi && spans_push(items, (span){start, hi, w, false}))
    return WEFT_ENOMEM;
  return 0;
}

/* token_weights(v[0, n), 1.0) without recursion (the nesting depth is the
 * user's): a stack of ranges to parse or emit, leftmost on top. */
static int token_weights(const uint32_t *v, size_t n, spans *out) {
  spans stack = {0}, items = {0};
  int rc = spans_push(&stack, (span){0, n, 1.0, true});
  while (!rc && stack.n) {
    span job = stack.v[--stack.n];
    if (!job.parse) {
      rc = spans_push(out, job);
      continue;
    }
    items.n = 0;
    if ((rc = parse_parentheses(v, job.lo, job.hi, job.w, &items))) break;
    for (size_t k = items.n; k-- > 0 && !rc;) {
      span it = items.v[k];
      if (it.hi - it.lo >= 2 && v[it.lo] == '(' && v[it.hi - 1] == ')') {
        size_t ilo = it.lo + 1, ihi = it.hi - 1;
        double w = it.w * 1.1; /* every group multiplies by 1.1 ... */
        size_t colon = ihi;
        for (size_t i = ihi; i-- > ilo;)
          if (v[i] == ':') {
            colon = i;
            break;
          }
        if (colon < ihi && colon > ilo) { /* x.rfind(":") > 0 */
          double f;
          int frc = py_float_cps(v + colon + 1, ihi - colon - 1, &f);
          if (frc == WEFT_ENOMEM) {
            rc = frc;
            break;
          }
          if (frc == 0) { /* ... unless it states its own weight */
            w = f;
            ihi = colon;
          }
        }
        rc = spans_push(&stack, (span){ilo, ihi, w, true});
      } else {
        rc = spans_push(&stack, it); /* plain text: emit */
      }
    }
  }
  free(stack.v);
  free(items.v);
  return rc;
}

/* Escape and weight text; spans index into esc. */
static int weighted_spans(const char *utf8, size_t len, int disable_weights,
                          weft__cps *esc, spans *out) {
  int rc = weft__cps_from_utf8(esc, utf8, len);
  if (rc) return rc;
  escape_important(esc);
  if (disable_weights) {
    if (esc->n == 0) return 0; /* [("", 1.0)] tokenizes to nothing */
    return spans_push(out, (span){0, esc->n, 1.0, false});
  }
  return token_weights(esc->v, esc->n, out);
}

static uint32_t unescape(uint32_t c) {
  return c == ESC_OPEN ? '(' : c == ESC_CLOSE ? ')' : c;
}

/* Append the UTF-8 of cps to a growable byte buffer. */
typedef struct {
  char *v;
  size_t n, cap;
} buf;

static int buf_reserve(buf *b, size_t more) {
  if (b->n + more + 1 <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->n + more + 1)
    cap *= 2;
  char *v = realloc(b->v, cap);
  if (!v) return WEFT_ENOMEM;
  b->v = v;
  b->cap = cap;
  return 0;
}

static int buf_put_cp(buf *b, uint32_t cp) {
  if (buf_reserve(b, 4)) return WEFT_ENOMEM;
  unsigned char *o = (unsigned char *)b->v + b->n;
  if (cp < 0x80) {
    o[0] = (unsigned char)cp;
    b->n += 1;
  } else if (cp < 0x800) {
    o[0] = (unsigned char)(0xC0 | (cp >> 6));
    o[1] = (unsigned char)(0x80 | (cp & 0x3F));
    b->n += 2;
  } else if (cp < 0x10000) {
    o[0] = (unsigned char)(0xE0 | (cp >> 12));
    o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (unsigned char)(0x80 | (cp & 0x3F));
    b->n += 3;
  } else {
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    b->n += 4;
  }
  b->v[b->n] = '\0';
  return 0;
}

static int buf_printf(buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int need = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (need < 0 || buf_reserve(b, (size_t)need)) return WEFT_ENOMEM;
  va_start(ap, fmt);
  vsnprintf(b->v + b->n, (size_t)need + 1, fmt, ap);
  va_end(ap);
  b->n += (size_t)need;
  return 0;
}

int weft_clip_parse_weights(const char *utf8, size_t len, int disable_weights,
                            weft_clip_weighted **out, size_t *n) {
  *out = NULL;
  *n = 0;
  weft__cps esc = {0};
  spans sp = {0};
  int rc = weighted_spans(utf8, len, disable_weights, &esc, &sp);
  weft_clip_weighted *w = NULL;
  if (!rc && sp.n) {
    w = calloc(sp.n, sizeof *w);
    if (!w) rc = WEFT_ENOMEM;
  }
  for (size_t i = 0; !rc && i < sp.n; i++) {
    buf b = {0};
    if (!(rc = buf_reserve(&b, 0))) b.v[0] = '\0';
    for (size_t k = sp.v[i].lo; !rc && k < sp.v[i].hi; k++)
      rc = buf_put_cp(&b, unescape(esc.v[k]));
    w[i] = (weft_clip_weighted){b.v, b.n, sp.v[i].w};
  }
  free(esc.v);
  free(sp.v);
  if (rc) {
    weft_clip_weighted_free(w, sp.n);
    return rc;
  }
  *out = w;
  *n = sp.n;
  return 0;
}

void weft_clip_weighted_free(weft_clip_weighted *w, size_t n) {
  if (!w) return;
  for (size_t i = 0; i < n; i++)
    free(w[i].text);
  free(w);
}

/* ------------------------------------------------------------------ */
/* Tokens of the pieces, embedding references                         */

/* One "word" of tokenize_with_weights: the tokens of one piece. */
typedef struct {
  size_t lo, hi; /* range in the shared ids array */
  double w;
} group;

typedef struct {
  group *v;
  size_t n, cap;
} groups;

static int groups_push(groups *a, group g) {
  if (a->n == a->cap) {
    size_t cap = a->cap ? a->cap * 2 : 16;
    group *v = realloc(a->v, cap * sizeof *v);
    if (!v) return WEFT_ENOMEM;
    a->v = v;
    a->cap = cap;
  }
  a->v[a->n++] = g;
  return 0;
}

typedef struct {
  const weft_clip_tok *t;
  weft__ids ids;
  groups g;
  buf warn;
} tok_state;

static int tokenize_word(tok_state *st, const uint32_t *v, size_t n, double w) {
  size_t lo = st->ids.n;
  int rc = weft__clip_tok_encode_cps(st->t, v, n, &st->ids);
  if (rc) return rc;
  return groups_push(&st->g, (group){lo, st->ids.n, w});
}

static const uint32_t EMB[] = {'e', 'm', 'b', 'e', 'd',
                               'd', 'i', 'n', 'g', ':'};
#define EMB_LEN 10

static bool is_emb_at(const uint32_t *v, size_t n, size_t i) {
  if (n - i < EMB_LEN) return false;
  for (size_t k = 0; k < EMB_LEN; k++)
    if (v[i + k] != EMB[k]) return false;
  return true;
}

static int push_range(weft__cps *a, const uint32_t *v, size_t lo, size_t hi) {
  for (size_t k = lo; k < hi; k++)
    if (weft__cps_push(a, v[k])) return WEFT_ENOMEM;
  return 0;
}

/* A word starting with "embedding:": _try_get_embedding with an embedding
 * that never exists (weft has none).  ComfyUI logs a warning, drops the
 * name and tokenizes what it calls the leftover. */
static int embedding_word(tok_state *st, const uint32_t *v, size_t n,
                          double w) {
  size_t lo = EMB_LEN, hi = n;
  while (lo < hi && v[lo] == '\n')
    lo++; /* .strip('\n') */
  while (hi > lo && v[hi - 1] == '\n')
    hi--;
  /* split_embed = name.split(); the name is the first field */
  size_t i = lo;
  while (i < hi && weft__uni_py_isspace(v[i]))
    i++;
  if (i == hi) /* ComfyUI raises IndexError here; weft only warns */
    return buf_printf(&st->warn, "embedding: without a name, ignoring\n");
  size_t name_lo = i;
  while (i < hi && !weft__uni_py_isspace(v[i]))
    i++;
  size_t name_hi = i, field_hi = i;
  weft__cps rest = {0}, left = {0};
  int rc = 0;
  /* rest = ' '.join(split_embed[1:]) */
  for (;;) {
    while (i < hi && weft__uni_py_isspace(v[i]))
      i++;
    if (i >= hi) break;
    size_t f = i;
    while (i < hi && !weft__uni_py_isspace(v[i]))
      i++;
    if (rest.n && (rc = weft__cps_push(&rest, ' '))) goto out;
    if ((rc = push_range(&rest, v, f, i))) goto out;
  }
  /* the name stops at the first '<' or '[':
   * leftover = name[m:] + (" " + leftover if leftover else "") */
  for (size_t k = name_lo; k < field_hi; k++)
    if (v[k] == '<' || v[k] == '[') {
      name_hi = k;
      break;
    }
  /* name.strip(',') shorter than the name:
   * leftover = "{} {}".format(name[len(stripped):], leftover) */
  size_t s_lo = name_lo, s_hi = name_hi;
  while (s_lo < s_hi && v[s_lo] == ',')
    s_lo++;
  while (s_hi > s_lo && v[s_hi - 1] == ',')
    s_hi--;
  if (s_hi - s_lo < name_hi - name_lo) {
    if ((rc = push_range(&left, v, name_lo + (s_hi - s_lo), name_hi)) ||
        (rc = weft__cps_push(&left, ' ')))
      goto out;
  }
  if (name_hi < field_hi) {
    if ((rc = push_range(&left, v, name_hi, field_hi))) goto out;
    if (rest.n && (rc = weft__cps_push(&left, ' '))) goto out;
  }
  if ((rc = push_range(&left, rest.v, 0, rest.n))) goto out;

  if ((rc = buf_printf(&st->warn, "embedding:"))) goto out;
  for (size_t k = name_lo; k < name_hi && !rc; k++)
    rc = buf_put_cp(&st->warn, v[k]);
  if (!rc) rc = buf_printf(&st->warn, " does not exist, ignoring\n");
  if (!rc && left.n) rc = tokenize_word(st, left.v, left.n, w);
out:
  free(rest.v);
  free(left.v);
  return rc;
}

/* One weighted piece: unescape, split before "embedding:" that follows
 * white space, tokenize each part as one word. */
static int tokenize_piece(tok_state *st, const uint32_t *esc, span sp,
                          weft__cps *tmp) {
  tmp->n = 0;
  for (size_t k = sp.lo; k < sp.hi; k++)
    if (weft__cps_push(tmp, unescape(esc[k]))) return WEFT_ENOMEM;
  const uint32_t *v = tmp->v;
  size_t n = tmp->n, start = 0;
  for (size_t i = 1; i <= n; i++) {
    bool cut = i == n || (is_emb_at(v, n, i) && weft__uni_py_isspace(v[i - 1]));
    if (!cut) continue;
    if (i > start) {
      int rc = is_emb_at(v, n, start)
                   ? embedding_word(st, v + start, i - start, sp.w)
                   : tokenize_word(st, v + start, i - start, sp.w);
      if (rc) return rc;
    }
    start = i;
    if (i < n) i += EMB_LEN - 1;
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* Chunks                                                              */

void weft_clip_chunk_opts_sd1(weft_clip_chunk_opts *o) {
  o->start_token = WEFT_CLIP_BOS;
  o->end_token = WEFT_CLIP_EOS;
  o->pad_token = WEFT_CLIP_EOS;
  o->disable_weights = 0;
}

typedef struct {
  weft_clip_chunks *c;
  size_t cap;
  size_t len; /* filled positions of the last chunk */
} chunk_builder;

static int new_chunk(chunk_builder *b, const weft_clip_chunk_opts *o) {
  weft_clip_chunks *c = b->c;
  if (c->n_chunks == b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 4;
    void *ids = realloc(c->ids, cap * sizeof *c->ids);
    if (!ids) return WEFT_ENOMEM;
    c->ids = ids;
    void *ws = realloc(c->weights, cap * sizeof *c->weights);
    if (!ws) return WEFT_ENOMEM;
    c->weights = ws;
    b->cap = cap;
  }
  c->n_chunks++;
  b->len = 0;
  if (o->start_token >= 0) {
    c->ids[c->n_chunks - 1][0] = o->start_token;
    c->weights[c->n_chunks - 1][0] = 1.0;
    b->len = 1;
  }
  return 0;
}

static void put(chunk_builder *b, int32_t id, double w) {
  size_t k = b->c->n_chunks - 1;
  b->c->ids[k][b->len] = id;
  b->c->weights[k][b->len] = w;
  b->len++;
}

static void pad(chunk_builder *b, const weft_clip_chunk_opts *o, size_t n) {
  for (size_t i = 0; i < n && b->len < WEFT_CLIP_CHUNK_LEN; i++)
    put(b, o->pad_token, 1.0);
}

int weft_clip_chunks_build(const weft_clip_tok *t, const char *utf8, size_t len,
                           const weft_clip_chunk_opts *opts,
                           weft_clip_chunks **out) {
  *out = NULL;
  weft_clip_chunk_opts sd1;
  if (!opts) {
    weft_clip_chunk_opts_sd1(&sd1);
    opts = &sd1;
  }
  weft__cps esc = {0}, tmp = {0};
  spans sp = {0};
  tok_state st = {.t = t};
  chunk_builder b = {0};
  int rc = weighted_spans(utf8, len, opts->disable_weights, &esc, &sp);
  for (size_t i = 0; !rc && i < sp.n; i++)
    rc = tokenize_piece(&st, esc.v, sp.v[i], &tmp);
  free(esc.v);
  free(tmp.v);
  free(sp.v);
  if (!rc && !(b.c = calloc(1, sizeof *b.c))) rc = WEFT_ENOMEM;
  if (rc) goto fail;

  /* tokenize_with_weights' layout loop */
  const size_t max_len = WEFT_CLIP_CHUNK_LEN;
  const size_t has_end = opts->end_token >= 0;
  if ((rc = new_chunk(&b, opts))) goto fail;
  for (size_t gi = 0; gi < st.g.n; gi++) {
    group g = st.g.v[gi];
    bool is_large = g.hi - g.lo >= MAX_WORD_LENGTH;
    while (g.lo < g.hi) {
      size_t glen = g.hi - g.lo;
      if (glen + b.len > max_len - has_end) {
        size_t remaining = max_len - b.len - has_end;
        if (is_large) { /* break the word in two */
          for (size_t k = 0; k < remaining; k++)
            put(&b, st.ids.v[g.lo + k], g.w);
          g.lo += remaining;
          if (has_end) put(&b, opts->end_token, 1.0);
        } else { /* end this chunk and move the word to the next */
          if (has_end) put(&b, opts->end_token, 1.0);
          pad(&b, opts, remaining);
        }
        if ((rc = new_chunk(&b, opts))) goto fail;
      } else {
        for (size_t k = g.lo; k < g.hi; k++)
          put(&b, st.ids.v[k], g.w);
        g.lo = g.hi;
      }
    }
  }
  if (has_end) put(&b, opts->end_token, 1.0);
  pad(&b, opts, max_len - b.len);

  weft_clip_chunks *c = b.c;
  for (size_t k = 0; k < c->n_chunks; k++)
    for (size_t j = 0; j < max_len; j++)
      if (c->weights[k][j] != 1.0) c->has_weights = 1;
  c->warnings = st.warn.v; /* NULL when nothing was written */
  free(st.ids.v);
  free(st.g.v);
  *out = c;
  return 0;

fail:
  free(st.ids.v);
  free(st.g.v);
  free(st.warn.v);
  weft_clip_chunks_free(b.c);
  return rc;
}

void weft_clip_chunks_free(weft_clip_chunks *c) {
  if (!c) return;
  free(c->ids);
  free(c->weights);
  free(c->warnings);
  free(c);
}

/* ------------------------------------------------------------------ */
/* Views                                                               */

/* Shortest "%.*g" that reads back as the same double (Python's repr
 * digits). */
static int put_double(buf *b, double x) {
  char s[40];
  for (int prec = 15; prec <= 17; prec++) {
    snprintf(s, sizeof s, "%.*g", prec, x);
    if (strtod(s, NULL) == x) break;
  }
  return buf_printf(b, "%s", s);
}

static int put_json_string(buf *b, const char *s, size_t n) {
  int rc = buf_printf(b, "\"");
  for (size_t i = 0; i < n && !rc; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\')
      rc = buf_printf(b, "\\%c", c);
    else if (c == '\n')
      rc = buf_printf(b, "\\n");
    else if (c < 0x20)
      rc = buf_printf(b, "\\u%04x", c);
    else
      rc = buf_printf(b, "%c", c);
  }
  return rc ? rc : buf_printf(b, "\"");
}

static char *chunks_json(const weft_clip_chunks *c) {
  buf b = {0};
  int rc = buf_printf(&b, "{\"n_chunks\":%zu,\"chunks\":[", c->n_chunks);
  for (size_t k = 0; k < c->n_chunks && !rc; k++) {
    rc = buf_printf(&b, "%s{\"ids\":[", k ? "," : "");
    for (size_t j = 0; j < WEFT_CLIP_CHUNK_LEN && !rc; j++)
      rc = buf_printf(&b, "%s%d", j ? "," : "", (int)c->ids[k][j]);
    if (!rc) rc = buf_printf(&b, "]");
    if (!rc && c->has_weights) {
      rc = buf_printf(&b, ",\"weights\":[");
      for (size_t j = 0; j < WEFT_CLIP_CHUNK_LEN && !rc; j++) {
        double w = c->weights[k][j];
        if (j) rc = buf_printf(&b, ",");
        if (!rc) rc = isfinite(w) ? put_double(&b, w) : buf_printf(&b, "null");
      }
      if (!rc) rc = buf_printf(&b, "]");
    }
    if (!rc) rc = buf_printf(&b, "}");
  }
  if (!rc) rc = buf_printf(&b, "]");
  if (!rc && c->warnings) {
    rc = buf_printf(&b, ",\"warnings\":[");
    const char *p = c->warnings;
    bool first = true;
    while (*p && !rc) {
      const char *nl = strchr(p, '\n');
      size_t n = nl ? (size_t)(nl - p) : strlen(p);
      if (!first) rc = buf_printf(&b, ",");
      if (!rc) rc = put_json_string(&b, p, n);
      first = false;
      p += n + (nl ? 1 : 0);
    }
    if (!rc) rc = buf_printf(&b, "]");
  }
  if (!rc) rc = buf_printf(&b, "}");
  if (rc) {
    free(b.v);
    return NULL;
  }
  return b.v;
}

static char *chunks_text(const weft_clip_chunks *c) {
  buf b = {0};
  int rc = buf_reserve(&b, 0);
  if (!rc) b.v[0] = '\0';
  for (size_t k = 0; k < c->n_chunks && !rc; k++) {
    /* trailing padding: the run of pad ids at weight 1 at the end, less
     * the chunk's end token when padding with it (SD1.x) */
    const int32_t *ids = c->ids[k];
    const double *ws = c->weights[k];
    size_t end = WEFT_CLIP_CHUNK_LEN;
    int32_t padid = ids[WEFT_CLIP_CHUNK_LEN - 1];
    while (end > 0 && ids[end - 1] == padid && ws[end - 1] == 1.0)
      end--;
    size_t n_pad = WEFT_CLIP_CHUNK_LEN - end;
    if (n_pad && padid == WEFT_CLIP_EOS) {
      end++;
      n_pad--;
    }
    rc = buf_printf(&b, "chunk %zu/%zu:", k + 1, c->n_chunks);
    for (size_t j = 0; j < end && !rc; j++) {
      rc = buf_printf(&b, " %d", (int)ids[j]);
      if (!rc && ws[j] != 1.0) {
        rc = buf_printf(&b, ":");
        if (!rc) rc = put_double(&b, ws[j]);
      }
    }
    if (!rc && n_pad) rc = buf_printf(&b, " (+%zu pad)", n_pad);
    if (!rc) rc = buf_printf(&b, "\n");
  }
  if (!rc && c->warnings) {
    const char *p = c->warnings;
    while (*p && !rc) {
      const char *nl = strchr(p, '\n');
      size_t n = nl ? (size_t)(nl - p) : strlen(p);
      rc = buf_printf(&b, "warning: %.*s\n", (int)n, p);
      p += n + (nl ? 1 : 0);
    }
  }
  if (rc) {
    free(b.v);
    return NULL;
  }
  return b.v;
}

/* Numbers are written in the "C" locale whatever the host program set with
 * setlocale (a decimal comma would break the JSON). */
static char *in_c_locale(char *(*fn)(const weft_clip_chunks *),
                         const weft_clip_chunks *c) {
  locale_t c_loc = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
  if (!c_loc) return NULL;
  locale_t old = uselocale(c_loc);
  char *r = fn(c);
  uselocale(old);
  freelocale(c_loc);
  return r;
}

char *weft_clip_chunks_json(const weft_clip_chunks *c) {
  return in_c_locale(chunks_json, c);
}

char *weft_clip_chunks_text(const weft_clip_chunks *c) {
  return in_c_locale(chunks_text, c);
}
