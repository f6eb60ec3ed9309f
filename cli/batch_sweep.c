/* batch_sweep.c - parses `--sweep name=a,b,c` and `--sweep name=1..100:5`
 * into the values the sweep takes (a list, or a range made on demand). */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"

/* More values than this in one sweep is surely a typo (1..1e9). */
#define MAX_SWEEP 10000000

void weft__batch_sweep_free(weft__batch_sweep *s) {
  for (int64_t i = 0; s->vals && i < s->n; i++)
    free(s->vals[i]);
  free(s->vals);
  free(s->name);
  free(s->arg);
  memset(s, 0, sizeof *s);
}

/* A number as ranges take it: -?digits(.digits)?; *decimals gets the count
 * after the point, *is_int whether there is none. */
static bool range_number(const char *s, size_t n, double *x, int *decimals) {
  size_t i = 0;
  if (i < n && (s[i] == '-' || s[i] == '+')) i++;
  size_t d0 = i;
  while (i < n && isdigit((unsigned char)s[i]))
    i++;
  if (i == d0) return false;
  *decimals = 0;
  if (i < n && s[i] == '.') {
    size_t f0 = ++i;
    while (i < n && isdigit((unsigned char)s[i]))
      i++;
    if (i == f0) return false;
    *decimals = (int)(i - f0);
  }
  if (i != n) return false;
  char buf[64];
  if (n >= sizeof buf) return false;
  memcpy(buf, s, n);
  buf[n] = 0;
  *x = strtod(buf, NULL);
  return true;
}

static int push(weft__batch_sweep *s, int64_t *cap, char *v) {
  if (!v) return WEFT_ENOMEM;
  if (s->n == *cap) {
    int64_t c = *cap ? *cap * 2 : 16;
    char **nv = realloc(s->vals, (size_t)c * sizeof *nv);
    if (!nv) {
      free(v);
      return WEFT_ENOMEM;
    }
    s->vals = nv;
    *cap = c;
  }
  s->vals[s->n++] = v;
  return 0;
}

/* FROM..TO[:STEP]; returns 1 if spec is not a range at all. */
static int parse_range(weft__batch_sweep *s, const char *spec, char *err,
                       size_t errlen) {
  const char *dots = strstr(spec, "..");
  if (!dots) return 1;
  const char *to = dots + 2, *colon = strchr(to, ':');
  size_t to_len = colon ? (size_t)(colon - to) : strlen(to);
  double a, b, step = 0;
  int da, db, ds = 0;
  if (!range_number(spec, (size_t)(dots - spec), &a, &da) ||
      !range_number(to, to_len, &b, &db) ||
      (colon && !range_number(colon + 1, strlen(colon + 1), &step, &ds)))
    return 1;
  if (!colon) step = a <= b ? 1 : -1;
  if (step == 0)
    return weft__batch_fail(err, errlen, WEFT_ERANGE,
                            "--sweep %s: the step is 0", s->arg);
  if ((b - a) * step < 0)
    return weft__batch_fail(err, errlen, WEFT_ERANGE,
                            "--sweep %s: a step of %g never goes from %g to %g",
                            s->arg, step, a, b);
  int dec = da > db ? da : db;
  if (ds > dec) dec = ds;
  if (dec == 0) {
    /* integers: exact, in 64 bits */
    long long ia = strtoll(spec, NULL, 10), ib = strtoll(to, NULL, 10),
              is = colon ? strtoll(colon + 1, NULL, 10) : (ia <= ib ? 1 : -1);
    unsigned long long span =
        is > 0 ? (unsigned long long)ib - ia : (unsigned long long)ia - ib;
    unsigned long long mag =
        is > 0 ? (unsigned long long)is : 0ull - (unsigned long long)is;
    unsigned long long count = span / mag + 1;
    if (count > MAX_SWEEP)
      return weft__batch_fail(err, errlen, WEFT_ERANGE,
                              "--sweep %s: %llu values; at most %d per sweep",
                              s->arg, count, MAX_SWEEP);
    s->ints = true, s->ia = ia, s->is = is, s->n = (int64_t)count;
    return 0;
  }
  /* decimals: value k is from + k*step, printed with dec decimals; the
   * small slack keeps 0..1:0.1 from losing its last value to rounding */
  double count = floor((b - a) / step + 1e-9) + 1;
  if (count > MAX_SWEEP)
    return weft__batch_fail(err, errlen, WEFT_ERANGE,
                            "--sweep %s: %.0f values; at most %d per sweep",
                            s->arg, count, MAX_SWEEP);
  s->a = a, s->step = step, s->dec = dec, s->n = (int64_t)count;
  return 0;
}

const char *weft__batch_sweep_value(const weft__batch_sweep *s, int64_t k,
                                    char buf[WEFT__SWEEP_BUF]) {
  if (s->vals) return s->vals[k];
  if (s->ints) {
    snprintf(buf, WEFT__SWEEP_BUF, "%lld",
             (long long)((unsigned long long)s->ia +
                         (unsigned long long)k * (unsigned long long)s->is));
    return buf;
  }
  snprintf(buf, WEFT__SWEEP_BUF, "%.*f", s->dec, s->a + (double)k * s->step);
  if (!strncmp(buf, "-0", 2) && strspn(buf + 2, ".0") == strlen(buf + 2))
    memmove(buf, buf + 1, strlen(buf)); /* "-0.0" is "0.0" */
  return buf;
}

int weft__batch_sweep_parse(const char *arg, weft__batch_sweep *s, char *err,
                            size_t errlen) {
  memset(s, 0, sizeof *s);
  const char *eq = strchr(arg, '=');
  if (!eq || eq == arg)
    return weft__batch_fail(
        err, errlen, WEFT_ESYNTAX,
        "--sweep %s: expected name=a,b,c or name=FROM..TO[:STEP]", arg);
  if (!(s->arg = strdup(arg)) || !(s->name = strndup(arg, (size_t)(eq - arg))))
    goto oom;
  const char *spec = eq + 1;
  int r = parse_range(s, spec, err, errlen);
  if (r <= 0) {
    if (r) weft__batch_sweep_free(s);
    return r;
  }
  /* a list: split on commas that are not escaped */
  int64_t cap = 0;
  char *cur = malloc(strlen(spec) + 1);
  if (!cur) goto oom;
  size_t k = 0;
  for (const char *p = spec;; p++) {
    if (*p == '\\' && (p[1] == ',' || p[1] == '\\')) {
      cur[k++] = *++p;
      continue;
    }
    if (*p == ',' || !*p) {
      cur[k] = 0;
      if (push(s, &cap, strdup(cur))) {
        free(cur);
        goto oom;
      }
      k = 0;
      if (!*p) break;
      continue;
    }
    cur[k++] = *p;
  }
  free(cur);
  return 0;
oom:
  weft__batch_sweep_free(s);
  return weft__batch_fail(err, errlen, WEFT_ENOMEM, "out of memory");
}
