/* batch_manifest.c - reads `weft batch --manifest` files: JSON lines or CSV
 * into rows of input values, with file:line in every error. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "json_u64.h"

void weft__batch_manifest_free(weft__batch_manifest *m) {
  for (int i = 0; i < m->n_cols; i++)
    free(m->cols[i]);
  for (int r = 0; r < m->n_rows; r++) {
    for (int k = 0; k < m->rows[r].n; k++)
      free(m->rows[r].val[k]);
    free(m->rows[r].col);
    free(m->rows[r].val);
  }
  free(m->cols);
  free(m->col_line);
  free(m->rows);
  free(m->name);
  memset(m, 0, sizeof *m);
}

/* The column named name (created on first sight), or -1: out of memory. */
static int column(weft__batch_manifest *m, const char *name, size_t len,
                  int line) {
  for (int i = 0; i < m->n_cols; i++)
    if (strlen(m->cols[i]) == len && memcmp(m->cols[i], name, len) == 0)
      return i;
  char **c = realloc(m->cols, (size_t)(m->n_cols + 1) * sizeof *c);
  if (!c) return -1;
  m->cols = c;
  int *cl = realloc(m->col_line, (size_t)(m->n_cols + 1) * sizeof *cl);
  if (!cl) return -1;
  m->col_line = cl;
  if (!(m->cols[m->n_cols] = strndup(name, len))) return -1;
  m->col_line[m->n_cols] = line;
  return m->n_cols++;
}

static weft__batch_row *new_row(weft__batch_manifest *m, int line) {
  weft__batch_row *r = realloc(m->rows, (size_t)(m->n_rows + 1) * sizeof *r);
  if (!r) return NULL;
  m->rows = r;
  r = &m->rows[m->n_rows++];
  memset(r, 0, sizeof *r);
  r->line = line;
  return r;
}

/* Takes ownership of val (freed on failure). */
static int row_add(weft__batch_row *r, int col, char *val) {
  int *c = realloc(r->col, (size_t)(r->n + 1) * sizeof *c);
  if (c) r->col = c;
  char **v = c ? realloc(r->val, (size_t)(r->n + 1) * sizeof *v) : NULL;
  if (!v) {
    free(val);
    return WEFT_ENOMEM;
  }
  r->val = v;
  r->col[r->n] = col;
  r->val[r->n++] = val;
  return 0;
}

/* The shortest decimal text that reads back as x. */
static void real_text(double x, char *buf, size_t len) {
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(buf, len, "%.*g", prec, x);
    if (strtod(buf, NULL) == x) return;
  }
}

static const char *json_kind(const json_t *v) {
  switch (json_typeof(v)) {
  case JSON_OBJECT: return "an object";
  case JSON_ARRAY: return "an array";
  case JSON_STRING: return "a string";
  case JSON_INTEGER:
  case JSON_REAL: return "a number";
  case JSON_TRUE:
  case JSON_FALSE: return "a boolean";
  case JSON_NULL: return "null";
  }
  return "?";
}

static int parse_jsonl(weft__batch_manifest *m, const char *text, size_t len,
                       char *err, size_t errlen) {
  int line = 0;
  for (size_t pos = 0; pos < len;) {
    const char *s = text + pos;
    const char *nl = memchr(s, '\n', len - pos);
    size_t n = nl ? (size_t)(nl - s) : len - pos;
    pos += n + (nl ? 1 : 0);
    line++;
    if (n && s[n - 1] == '\r') n--;
    size_t k = 0;
    while (k < n && (s[k] == ' ' || s[k] == '\t'))
      k++;
    if (k == n) continue; /* blank line */
    json_error_t je;
    json_t *o = weft__json_loadb(s, n, JSON_REJECT_DUPLICATES, &je);
    if (!o)
      return weft__batch_fail(err, errlen, WEFT_ESYNTAX,
                              "%s:%d:%d: invalid JSON: %s", m->name, line,
                              je.column > 0 ? je.column : 1, je.text);
    if (!json_is_object(o)) {
      int r = weft__batch_fail(
          err, errlen, WEFT_ETYPE,
          "%s:%d: expected a JSON object ({\"input\": value, ...}), "
          "got %s",
          m->name, line, json_kind(o));
      json_decref(o);
      return r;
    }
    weft__batch_row *row = new_row(m, line);
    if (!row) {
      json_decref(o);
      return weft__batch_fail(err, errlen, WEFT_ENOMEM, "out of memory");
    }
    const char *key;
    json_t *v;
    int rc = 0;
    json_object_foreach(o, key, v) {
      char buf[64];
      const char *val = buf;
      if (!key[0]) {
        rc = weft__batch_fail(err, errlen, WEFT_ESYNTAX,
                              "%s:%d: an empty input name", m->name, line);
        break;
      }
      uint64_t big;
      switch (json_typeof(v)) {
      case JSON_STRING:
        if (weft__json_is_u64(v, &big))
          snprintf(buf, sizeof buf, "%" PRIu64, big);
        else
          val = json_string_value(v);
        break;
      case JSON_INTEGER:
        snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT,
                 json_integer_value(v));
        break;
      case JSON_REAL: real_text(json_real_value(v), buf, sizeof buf); break;
      case JSON_TRUE: val = "true"; break;
      case JSON_FALSE: val = "false"; break;
      case JSON_NULL: continue; /* null: the input keeps its default */
      default:
        rc = weft__batch_fail(
            err, errlen, WEFT_ETYPE,
            "%s:%d: '%s': expected a string, number or boolean, got %s",
            m->name, line, key, json_kind(v));
        break;
      }
      if (rc) break;
      int col = column(m, key, strlen(key), line);
      char *copy = col >= 0 ? strdup(val) : NULL;
      if (!copy || row_add(row, col, copy)) {
        rc = weft__batch_fail(err, errlen, WEFT_ENOMEM, "out of memory");
        break;
      }
    }
    json_decref(o);
    if (rc) return rc;
  }
  return 0;
}

/* ---- CSV ---------------------------------------------------------------- */

typedef struct csv_field {
  char *text;
  bool quoted;
} csv_field;

typedef struct csv_rec {
  csv_field *f;
  int n, cap;
  int line; /* where it starts */
} csv_rec;

static void rec_clear(csv_rec *r) {
  for (int i = 0; i < r->n; i++)
    free(r->f[i].text);
  r->n = 0;
}

static int rec_push(csv_rec *r, const char *s, size_t n, bool quoted) {
  if (r->n == r->cap) {
    int cap = r->cap ? r->cap * 2 : 8;
    csv_field *f = realloc(r->f, (size_t)cap * sizeof *f);
    if (!f) return WEFT_ENOMEM;
    r->f = f;
    r->cap = cap;
  }
  char *t = malloc(n + 1);
  if (!t) return WEFT_ENOMEM;
  /* a quoted field's "" stands for one quote */
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    t[k++] = s[i];
    if (quoted && s[i] == '"') i++;
  }
  t[k] = 0;
  r->f[r->n].text = t;
  r->f[r->n++].quoted = quoted;
  return 0;
}

/* Reads one record starting at *pos; returns 1 when one was read, 0 at the
 * end of the text, or a WEFT_E* code.  *line counts newlines. */
static int csv_next(const char *name, const char *s, size_t len, size_t *pos,
                    int *line, csv_rec *r, char *err, size_t errlen) {
  rec_clear(r);
  size_t i = *pos;
  if (i >= len) return 0;
  r->line = *line;
  for (;;) {
    /* one field */
    if (i < len && s[i] == '"') {
      int qline = *line;
      size_t start = ++i;
      for (;;) {
        if (i >= len)
          return weft__batch_fail(err, errlen, WEFT_ESYNTAX,
                                  "%s:%d: a quoted field is never closed", name,
                                  qline);
        if (s[i] == '"') {
          if (i + 1 < len && s[i + 1] == '"') {
            i += 2;
            continue;
          }
          break;
        }
        if (s[i] == '\n') (*line)++;
        i++;
      }
      if (rec_push(r, s + start, i - start, true))
        return weft__batch_fail(err, errlen, WEFT_ENOMEM, "out of memory");
      i++; /* the closing quote */
      if (i < len && s[i] == '\r' && i + 1 < len && s[i + 1] == '\n') i++;
      if (i < len && s[i] != ',' && s[i] != '\n') {
        /* the column: bytes since the last newline */
        size_t bol = i;
        while (bol > 0 && s[bol - 1] != '\n')
          bol--;
        return weft__batch_fail(
            err, errlen, WEFT_ESYNTAX,
            "%s:%d:%zu: '%c' after a closing quote; a field is either "
            "all quoted (\"a, b\") or not quoted at all",
            name, *line, i - bol + 1, s[i]);
      }
    } else {
      size_t start = i;
      while (i < len && s[i] != ',' && s[i] != '\n')
        i++;
      size_t end = i;
      if (end > start && s[end - 1] == '\r' && (i == len || s[i] == '\n'))
        end--;
      if (rec_push(r, s + start, end - start, false))
        return weft__batch_fail(err, errlen, WEFT_ENOMEM, "out of memory");
    }
    if (i >= len) {
      *pos = i;
      return 1;
    }
    if (s[i] == '\n') {
      (*line)++;
      *pos = i + 1;
      return 1;
    }
    i++; /* ',' */
  }
}

static bool rec_blank(const csv_rec *r) {
  return r->n == 1 && !r->f[0].quoted && r->f[0].text[0] == 0;
}

static int parse_csv(weft__batch_manifest *m, const char *text, size_t len,
                     char *err, size_t errlen) {
  size_t pos = 0;
  int line = 1, rc;
  csv_rec rec = {0};
  /* the header: the first record that is not blank */
  do {
    rc = csv_next(m->name, text, len, &pos, &line, &rec, err, errlen);
  } while (rc == 1 && rec_blank(&rec));
  if (rc <= 0) {
    if (rc == 0)
      rc = weft__batch_fail(
          err, errlen, WEFT_EFORMAT,
          "%s: empty CSV file: expected a header row of input names", m->name);
    goto out;
  }
  int n_head = rec.n, head_line = rec.line;
  for (int i = 0; i < rec.n; i++) {
    /* names are trimmed: "seed, prompt" is a common way to write them */
    char *t = rec.f[i].text;
    size_t a = 0, b = strlen(t);
    while (a < b && (t[a] == ' ' || t[a] == '\t'))
      a++;
    while (b > a && (t[b - 1] == ' ' || t[b - 1] == '\t'))
      b--;
    if (a == b) {
      rc = weft__batch_fail(err, errlen, WEFT_ESYNTAX,
                            "%s:%d: column %d of the header has no name",
                            m->name, head_line, i + 1);
      goto out;
    }
    for (int k = 0; k < m->n_cols; k++)
      if (strlen(m->cols[k]) == b - a && !memcmp(m->cols[k], t + a, b - a)) {
        rc = weft__batch_fail(err, errlen, WEFT_EDUP,
                              "%s:%d: column '%s' appears twice in the header",
                              m->name, head_line, m->cols[k]);
        goto out;
      }
    if (column(m, t + a, b - a, head_line) < 0) {
      rc = weft__batch_fail(err, errlen, WEFT_ENOMEM, "out of memory");
      goto out;
    }
  }
  while ((rc = csv_next(m->name, text, len, &pos, &line, &rec, err, errlen)) ==
         1) {
    if (rec_blank(&rec)) continue;
    if (rec.n != n_head) {
      rc = weft__batch_fail(
          err, errlen, WEFT_EFORMAT,
          "%s:%d: %d field%s, but the header (line %d) has %d", m->name,
          rec.line, rec.n, rec.n == 1 ? "" : "s", head_line, n_head);
      goto out;
    }
    weft__batch_row *row = new_row(m, rec.line);
    if (!row) {
      rc = weft__batch_fail(err, errlen, WEFT_ENOMEM, "out of memory");
      goto out;
    }
    for (int i = 0; i < rec.n; i++) {
      /* an empty unquoted cell leaves the input at its default; "" sets it
       * to the empty string */
      if (!rec.f[i].quoted && !rec.f[i].text[0]) continue;
      if (row_add(row, i, rec.f[i].text)) {
        rec.f[i].text = NULL;
        rc = weft__batch_fail(err, errlen, WEFT_ENOMEM, "out of memory");
        goto out;
      }
      rec.f[i].text = NULL;
    }
  }
out:
  rec_clear(&rec);
  free(rec.f);
  return rc < 0 ? rc : 0;
}

static bool ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && strcasecmp(s + a - b, suffix) == 0;
}

int weft__batch_manifest_parse(const char *name, const char *text, size_t len,
                               weft__batch_manifest *m, char *err,
                               size_t errlen) {
  memset(m, 0, sizeof *m);
  if (!(m->name = strdup(name)))
    return weft__batch_fail(err, errlen, WEFT_ENOMEM, "out of memory");
  if (len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) text += 3, len -= 3;
  if (memchr(text, 0, len)) {
    weft__batch_manifest_free(m);
    return weft__batch_fail(err, errlen, WEFT_EFORMAT,
                            "%s: contains NUL bytes: not a text file", name);
  }
  bool json;
  if (ends_with(name, ".csv"))
    json = false;
  else if (ends_with(name, ".jsonl") || ends_with(name, ".ndjson") ||
           ends_with(name, ".json"))
    json = true;
  else {
    size_t i = 0;
    while (i < len && strchr(" \t\r\n", text[i]))
      i++;
    json = i < len && text[i] == '{';
  }
  int rc = json ? parse_jsonl(m, text, len, err, errlen)
                : parse_csv(m, text, len, err, errlen);
  if (rc) weft__batch_manifest_free(m);
  return rc;
}

int weft__batch_manifest_load(const char *path, weft__batch_manifest *m,
                              char *err, size_t errlen) {
  memset(m, 0, sizeof *m);
  bool std_in = strcmp(path, "-") == 0;
  FILE *f = std_in ? stdin : fopen(path, "rb");
  if (!f)
    return weft__batch_fail(
        err, errlen, errno == ENOENT ? WEFT_ENOENT : WEFT_EIO,
        "%s: cannot open manifest: %s", path, strerror(errno));
  char *buf = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (cap - len < 65536) {
      cap = cap ? cap * 2 : 131072;
      char *nb = realloc(buf, cap);
      if (!nb) {
        free(buf);
        if (!std_in) fclose(f);
        return weft__batch_fail(err, errlen, WEFT_ENOMEM, "out of memory");
      }
      buf = nb;
    }
    size_t k = fread(buf + len, 1, cap - len, f);
    len += k;
    if (k == 0) break;
  }
  int bad = ferror(f);
  if (!std_in) fclose(f);
  if (bad) {
    free(buf);
    return weft__batch_fail(err, errlen, WEFT_EIO, "%s: cannot read manifest",
                            path);
  }
  int rc = weft__batch_manifest_parse(std_in ? "<stdin>" : path, buf, len, m,
                                      err, errlen);
  free(buf);
  return rc;
}
