/* batch_template.c - `--output` templates: parsing '{prompt_slug}-{seed}.png'
 * against the graph's inputs, rendering one job's file name, slugs. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"

#define SLUG_MAX 40

void weft__batch_template_free(weft__batch_template *t) {
  for (int i = 0; i < t->n; i++)
    free(t->seg[i].text);
  free(t->seg);
  free(t->text);
  memset(t, 0, sizeof *t);
}

static weft__batch_seg *add_seg(weft__batch_template *t, int kind) {
  weft__batch_seg *s = realloc(t->seg, (size_t)(t->n + 1) * sizeof *s);
  if (!s) return NULL;
  t->seg = s;
  s = &t->seg[t->n++];
  memset(s, 0, sizeof *s);
  s->kind = kind;
  return s;
}

static int find(const char *const *names, int n, const char *name) {
  for (int i = 0; i < n; i++)
    if (!strcmp(names[i], name)) return i;
  return -1;
}

/* "{sede}": says which names exist and which is closest. */
static int unknown(const char *tpl, const char *name, const char *const *names,
                   int n, char *err, size_t errlen) {
  const char **cand = malloc((size_t)(2 * n + 1) * sizeof *cand);
  char **slugs = calloc((size_t)n + 1, sizeof *slugs);
  const char *best = NULL;
  if (cand && slugs) {
    int k = 0;
    cand[k++] = "job";
    for (int i = 0; i < n; i++) {
      cand[k++] = names[i];
      size_t l = strlen(names[i]);
      if ((slugs[i] = malloc(l + 6))) {
        snprintf(slugs[i], l + 6, "%s_slug", names[i]);
        cand[k++] = slugs[i];
      }
    }
    best = weft_closest_name(name, cand, k);
  }
  char list[1024];
  size_t len = 0;
  list[0] = 0;
  for (int i = 0; i < n && len + 64 < sizeof list; i++)
    len += (size_t)snprintf(list + len, sizeof list - len, "%s%s",
                            i ? ", " : "", names[i]);
  int r = weft__batch_fail(
      err, errlen, WEFT_ENOENT,
      "--output %s: unknown placeholder '{%s}'%s%s%s; use {job}, an "
      "input name (%s) or NAME_slug",
      tpl, name, best ? " (did you mean '{" : "", best ? best : "",
      best ? "}'?)" : "", len ? list : "the graph has no inputs");
  for (int i = 0; slugs && i < n; i++)
    free(slugs[i]);
  free(slugs);
  free(cand);
  return r;
}

int weft__batch_template_parse(const char *tpl, const char *const *names,
                               int n_names, weft__batch_template *t, char *err,
                               size_t errlen) {
  memset(t, 0, sizeof *t);
  if (!(t->text = strdup(tpl))) goto oom;
  if (!tpl[0]) {
    weft__batch_template_free(t);
    return weft__batch_fail(err, errlen, WEFT_EINVAL,
                            "--output: empty template");
  }
  char *lit = malloc(strlen(tpl) + 1);
  if (!lit) goto oom;
  size_t nl = 0;
  int rc = 0;
  for (const char *p = tpl; *p && !rc; p++) {
    if ((p[0] == '{' && p[1] == '{') || (p[0] == '}' && p[1] == '}')) {
      lit[nl++] = *p++;
      continue;
    }
    if (*p == '}') {
      rc = weft__batch_fail(
          err, errlen, WEFT_ESYNTAX,
          "--output %s: a '}' at column %d closes nothing (write '}}' "
          "for a literal one)",
          tpl, (int)(p - tpl) + 1);
      break;
    }
    if (*p != '{') {
      lit[nl++] = *p;
      continue;
    }
    const char *close = strchr(p, '}');
    if (!close) {
      rc = weft__batch_fail(
          err, errlen, WEFT_ESYNTAX,
          "--output %s: the '{' at column %d is never closed (write "
          "'{{' for a literal one)",
          tpl, (int)(p - tpl) + 1);
      break;
    }
    if (nl) {
      weft__batch_seg *s = add_seg(t, WEFT__SEG_TEXT);
      if (!s || !(s->text = strndup(lit, nl))) {
        rc = WEFT_ENOMEM;
        break;
      }
      nl = 0;
    }
    char name[256];
    size_t n = (size_t)(close - p - 1);
    if (n >= sizeof name) n = sizeof name - 1;
    memcpy(name, p + 1, n);
    name[n] = 0;
    int width = 0;
    char *colon = strchr(name, ':');
    if (colon) {
      *colon = 0;
      char *end;
      long w = strtol(colon + 1, &end, 10);
      if (!isdigit((unsigned char)colon[1]) || *end || w < 1 || w > 20) {
        rc = weft__batch_fail(
            err, errlen, WEFT_ESYNTAX,
            "--output %s: '{%s:%s}': the width after ':' is a number "
            "from 1 to 20 (e.g. {%s:05})",
            tpl, name, colon + 1, name);
        break;
      }
      width = (int)w;
    }
    weft__batch_seg *s = NULL;
    int in = find(names, n_names, name);
    size_t ln = strlen(name);
    bool slug = false;
    if (in < 0 && ln > 5 && !strcmp(name + ln - 5, "_slug")) {
      name[ln - 5] = 0;
      if ((in = find(names, n_names, name)) >= 0)
        slug = true;
      else
        name[ln - 5] = '_';
    }
    if (in >= 0) {
      s = add_seg(t, WEFT__SEG_INPUT);
      if (s) s->input = in, s->slug = slug;
    } else if (!strcmp(name, "job")) {
      s = add_seg(t, WEFT__SEG_JOB);
    } else {
      rc = unknown(tpl, name, names, n_names, err, errlen);
      break;
    }
    if (!s) {
      rc = WEFT_ENOMEM;
      break;
    }
    if (width && slug) {
      rc =
          weft__batch_fail(err, errlen, WEFT_ESYNTAX,
                           "--output %s: '{%s_slug:%d}': a slug takes no width",
                           tpl, name, width);
      break;
    }
    s->width = width;
    p = close;
  }
  if (!rc && nl) {
    weft__batch_seg *s = add_seg(t, WEFT__SEG_TEXT);
    if (!s || !(s->text = strndup(lit, nl))) rc = WEFT_ENOMEM;
  }
  free(lit);
  if (rc == WEFT_ENOMEM) goto oom;
  if (rc) weft__batch_template_free(t);
  return rc;
oom:
  weft__batch_template_free(t);
  return weft__batch_fail(err, errlen, WEFT_ENOMEM, "out of memory");
}

void weft__batch_slug(const char *s, char *out) {
  size_t n = 0;
  bool dash = false;
  for (; *s && n < SLUG_MAX; s++) {
    unsigned char c = (unsigned char)*s;
    if (isalnum(c) && c < 128) {
      if (dash && n) out[n++] = '-';
      dash = false;
      if (n < SLUG_MAX) out[n++] = (char)tolower(c);
    } else {
      dash = true;
    }
  }
  while (n && out[n - 1] == '-')
    n--;
  out[n] = 0;
}

typedef struct sbuf {
  char *p;
  size_t n, cap;
  bool oom;
} sbuf;

static void put(sbuf *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->n + n + 1 > b->cap) {
    size_t cap = (b->n + n + 1) * 2;
    char *np = realloc(b->p, cap);
    if (!np) {
      b->oom = true;
      return;
    }
    b->p = np;
    b->cap = cap;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = 0;
}

/* An integer padded to width, or the text as is when it is not one. */
static void put_number(sbuf *b, const char *v, int width) {
  char *end;
  long long x = strtoll(v, &end, 10);
  if (width && *v && !*end && !isspace((unsigned char)*v)) {
    char buf[64];
    int n = snprintf(buf, sizeof buf, "%0*lld", width, x);
    put(b, buf, (size_t)n);
  } else {
    put(b, v, strlen(v));
  }
}

char *weft__batch_template_render(const weft__batch_template *t, int64_t job,
                                  const char *const *vals) {
  sbuf b = {0};
  put(&b, "", 0);
  for (int i = 0; i < t->n; i++) {
    const weft__batch_seg *s = &t->seg[i];
    switch (s->kind) {
    case WEFT__SEG_TEXT: put(&b, s->text, strlen(s->text)); break;
    case WEFT__SEG_JOB: {
      char buf[32];
      snprintf(buf, sizeof buf, "%lld", (long long)job);
      put_number(&b, buf, s->width);
      break;
    }
    case WEFT__SEG_INPUT: {
      const char *v = vals[s->input] ? vals[s->input] : "";
      if (s->slug) {
        char slug[SLUG_MAX + 1];
        weft__batch_slug(v, slug);
        put(&b, slug, strlen(slug));
      } else if (s->width) {
        put_number(&b, v, s->width);
      } else {
        /* a value never adds directories or control bytes to a name */
        for (const char *c = v; *c; c++) {
          char ch =
              (unsigned char)*c < 0x20 || *c == 0x7f || *c == '/' || *c == '\\'
                  ? '_'
                  : *c;
          put(&b, &ch, 1);
        }
      }
      break;
    }
    }
  }
  if (b.oom) {
    free(b.p);
    return NULL;
  }
  return b.p;
}

int weft__batch_name_check(const char *name, char *err, size_t errlen) {
  if (!name[0])
    return weft__batch_fail(err, errlen, WEFT_EINVAL,
                            "the output name is empty");
  if (name[0] == '/')
    return weft__batch_fail(err, errlen, WEFT_EINVAL,
                            "'%s': an output name is relative to --output-dir",
                            name);
  if (strlen(name) > 4000)
    return weft__batch_fail(err, errlen, WEFT_EINVAL,
                            "'%.40s...': name too long", name);
  const char *part = name;
  for (int first = 1;; first = 0) {
    const char *slash = strchr(part, '/');
    size_t n = slash ? (size_t)(slash - part) : strlen(part);
    if (n == 0)
      return weft__batch_fail(
          err, errlen, WEFT_EINVAL,
          "'%s': an empty directory name (\"//\" or a trailing '/')", name);
    if ((n == 1 && part[0] == '.') || (n == 2 && !strncmp(part, "..", 2)))
      return weft__batch_fail(
          err, errlen, WEFT_EINVAL,
          "'%s': '.' and '..' are not allowed in output names", name);
    if (n > 255)
      return weft__batch_fail(
          err, errlen, WEFT_EINVAL,
          "'%s': a part of the name is longer than 255 bytes", name);
    if (first && !strncmp(part, ".weft-", 6))
      return weft__batch_fail(
          err, errlen, WEFT_EINVAL,
          "'%s': names starting with '.weft-' are weft's own", name);
    if (!slash) break;
    part = slash + 1;
  }
  return 0;
}
