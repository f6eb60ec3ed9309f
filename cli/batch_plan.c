/* batch_plan.c - binds a manifest and sweeps to a graph: every job's inputs,
 * checked by the graph's own input parser, its output name and its
 * identity key, all before the first job runs. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "json_u64.h"

/* Jobs in one batch; more is a mistake or wants splitting into batches. */
#define MAX_JOBS 10000000

void weft__batch_plan_free(weft__batch_plan *p) {
  for (int i = 0; i < p->n_inputs; i++) {
    free(p->names[i]);
    free(p->base[i]);
  }
  for (int64_t j = 0; p->outputs && j < p->n_jobs; j++)
    free(p->outputs[j]);
  free(p->names);
  free(p->base);
  free(p->col_input);
  free(p->sw_input);
  free(p->outputs);
  free(p->keys);
  free(p->dirty);
  weft__batch_template_free(&p->tpl);
  memset(p, 0, sizeof *p);
}

/* A JSON scalar as the text the graph's input parser reads back to the
 * same value; NULL for null (no value). malloc'd. */
static char *value_text(const json_t *v) {
  char buf[64];
  uint64_t big;
  switch (json_typeof(v)) {
  case JSON_STRING:
    if (!weft__json_is_u64(v, &big)) return strdup(json_string_value(v));
    snprintf(buf, sizeof buf, "%" PRIu64, big);
    return strdup(buf);
  case JSON_INTEGER:
    snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    return strdup(buf);
  case JSON_REAL: {
    double x = json_real_value(v);
    for (int prec = 1; prec <= 17; prec++) {
      snprintf(buf, sizeof buf, "%.*g", prec, x);
      if (strtod(buf, NULL) == x) break;
    }
    return strdup(buf);
  }
  case JSON_TRUE: return strdup("true");
  case JSON_FALSE: return strdup("false");
  default: return NULL;
  }
}

json_t *weft__batch_inputs_load(const char *js) {
  if (!js) return NULL;
  /* seeds up to 2^64 - 1 come as marked strings (json_u64.h) */
  json_t *o = weft__json_loadb(js, strlen(js), 0, NULL);
  if (o && !json_is_object(o)) {
    json_decref(o);
    o = NULL;
  }
  return o;
}

static int find(char *const *names, int n, const char *name) {
  for (int i = 0; i < n; i++)
    if (!strcmp(names[i], name)) return i;
  return -1;
}

/* "unknown input 'sed' (did you mean 'seed'?); the graph's inputs: ..." */
static void unknown_input(const weft__batch_plan *p, const char *name,
                          char *msg, size_t len) {
  const char *best =
      weft_closest_name(name, (const char *const *)p->names, p->n_inputs);
  size_t n = (size_t)snprintf(msg, len, "the graph has no input '%s'", name);
  if (best && n < len)
    n += (size_t)snprintf(msg + n, len - n, " (did you mean '%s'?)", best);
  for (int i = 0; i < p->n_inputs && n + 64 < len; i++)
    n += (size_t)snprintf(msg + n, len - n, "%s%s",
                          i ? ", " : "; its inputs: ", p->names[i]);
  if (!p->n_inputs && n < len)
    snprintf(msg + n, len - n,
             "; it declares none (see 'inputs:' in "
             "docs/graphs.md)");
}

/* A job's values: vals[input] (NULL: not set; a range's value is printed
 * into buf[input]) and where each came from: src[input] = -1 manifest,
 * k >= 0 sweep k; line: the manifest row's. */
typedef struct job_vals {
  const char **vals;
  char (*buf)[WEFT__SWEEP_BUF];
  int *src;
  int line;
} job_vals;

static int job_vals_new(const weft__batch_plan *p, job_vals *v) {
  size_t n = (size_t)p->n_inputs + 1;
  v->vals = calloc(n, sizeof *v->vals);
  v->buf = calloc(n, sizeof *v->buf);
  v->src = calloc(n, sizeof *v->src);
  v->line = 0;
  return v->vals && v->buf && v->src ? 0 : WEFT_ENOMEM;
}

static void job_vals_free(job_vals *v) {
  free(v->vals), free(v->buf), free(v->src);
}

static void job_values(const weft__batch_plan *p, int64_t job, job_vals *v) {
  for (int i = 0; i < p->n_inputs; i++)
    v->vals[i] = NULL, v->src[i] = -1;
  int64_t row = job / p->combos, c = job % p->combos;
  v->line = 0;
  if (p->m && p->m->n_rows) {
    const weft__batch_row *r = &p->m->rows[row];
    v->line = r->line;
    for (int k = 0; k < r->n; k++)
      v->vals[p->col_input[r->col[k]]] = r->val[k];
  }
  for (int k = p->n_sw - 1; k >= 0; k--) {
    int in = p->sw_input[k];
    v->vals[in] =
        weft__batch_sweep_value(&p->sw[k], c % p->sw[k].n, v->buf[in]);
    v->src[in] = k;
    c /= p->sw[k].n;
  }
}

static int set_one(weft__batch_plan *p, weft_ctx *ctx, weft_graph *g, int in,
                   const char *val, const char *where, char *err,
                   size_t errlen) {
  int r = weft_graph_set_input(ctx, g, p->names[in], val);
  if (!r) return 0;
  /* the runtime words it for --set; say where the value came from */
  const char *msg = weft_ctx_error(ctx);
  char prefix[300];
  snprintf(prefix, sizeof prefix, "--set %s: ", p->names[in]);
  if (!strncmp(msg, prefix, strlen(prefix))) msg += strlen(prefix);
  return weft__batch_fail(err, errlen, r, "%s: input '%s': %s", where,
                          p->names[in], msg);
}

static void where_of(const weft__batch_plan *p, int src, int line, char *buf,
                     size_t len) {
  if (src >= 0)
    snprintf(buf, len, "--sweep %s", p->sw[src].arg);
  else
    snprintf(buf, len, "%s:%d", p->m->name, line);
}

/* Sets a job's values (v, from job_values) on g; inputs the last job set
 * and this one does not go back to the graph's defaults. */
static int apply_vals(weft__batch_plan *p, weft_ctx *ctx, weft_graph *g,
                      const job_vals *v, char *err, size_t errlen) {
  int rc = 0;
  for (int i = 0; i < p->n_inputs && !rc; i++) {
    char where[1200];
    if (v->vals[i]) {
      where_of(p, v->src[i], v->line, where, sizeof where);
      rc = set_one(p, ctx, g, i, v->vals[i], where, err, errlen);
      p->dirty[i] = true;
    } else if (p->dirty[i] && p->base[i]) {
      rc =
          set_one(p, ctx, g, i, p->base[i], "the graph's default", err, errlen);
      p->dirty[i] = false;
    }
  }
  return rc;
}

int weft__batch_apply(weft__batch_plan *p, weft_ctx *ctx, weft_graph *g,
                      int64_t job, char *err, size_t errlen) {
  job_vals v;
  if (job_vals_new(p, &v)) {
    job_vals_free(&v);
    return weft__batch_fail(err, errlen, WEFT_ENOMEM, "out of memory");
  }
  job_values(p, job, &v);
  int rc = apply_vals(p, ctx, g, &v, err, errlen);
  job_vals_free(&v);
  return rc;
}

char *weft__batch_job_set_json(const weft__batch_plan *p, int64_t job) {
  job_vals v;
  json_t *o = json_object();
  char *s = NULL;
  if (!job_vals_new(p, &v) && o) {
    job_values(p, job, &v);
    for (int i = 0; i < p->n_inputs; i++)
      if (v.vals[i])
        json_object_set_new(o, p->names[i], json_string(v.vals[i]));
    s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
  }
  json_decref(o);
  job_vals_free(&v);
  return s;
}

static int read_graph_hash(const char *path, char hex[33], char *err,
                           size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return weft__batch_fail(err, errlen, WEFT_EIO, "%s: cannot read", path);
  char *buf = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (len == cap) {
      cap = cap ? cap * 2 : 65536;
      char *nb = realloc(buf, cap);
      if (!nb) {
        free(buf);
        fclose(f);
        return weft__batch_fail(err, errlen, WEFT_ENOMEM, "out of memory");
      }
      buf = nb;
    }
    size_t k = fread(buf + len, 1, cap - len, f);
    if (!k) break;
    len += k;
  }
  fclose(f);
  weft__batch_hash_hex(buf, len, hex);
  free(buf);
  return 0;
}

/* The graph's inputs and their values before any job runs. */
static int read_inputs(weft__batch_plan *p, weft_graph *g, char *err,
                       size_t errlen) {
  char *js = weft__graph_inputs_json(g);
  json_t *o = weft__batch_inputs_load(js);
  free(js);
  if (!o) {
    json_decref(o);
    return weft__batch_fail(err, errlen, WEFT_ENOMEM, "out of memory");
  }
  int n = (int)json_object_size(o);
  p->names = calloc((size_t)n + 1, sizeof *p->names);
  p->base = calloc((size_t)n + 1, sizeof *p->base);
  p->dirty = calloc((size_t)n + 1, sizeof *p->dirty);
  if (!p->names || !p->base || !p->dirty) {
    json_decref(o);
    return weft__batch_fail(err, errlen, WEFT_ENOMEM, "out of memory");
  }
  const char *key;
  json_t *v;
  json_object_foreach(o, key, v) {
    p->names[p->n_inputs] = strdup(key);
    p->base[p->n_inputs++] = value_text(v);
  }
  json_decref(o);
  return 0;
}

static int by_name(const void *a, const void *b, void *names) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  char **o = names;
  int c = strcmp(o[x], o[y]);
  return c ? c : (x > y) - (x < y);
}

/* Sorting indices by name needs the names: qsort_r's context. */
static int check_unique(const weft__batch_plan *p, char *err, size_t errlen) {
  int64_t *ix = malloc((size_t)(p->n_jobs + 1) * sizeof *ix);
  if (!ix) return weft__batch_fail(err, errlen, WEFT_ENOMEM, "out of memory");
  for (int64_t j = 0; j < p->n_jobs; j++)
    ix[j] = j;
  qsort_r(ix, (size_t)p->n_jobs, sizeof *ix, by_name, p->outputs);
  int rc = 0;
  for (int64_t k = 0; k + 1 < p->n_jobs; k++)
    if (!strcmp(p->outputs[ix[k]], p->outputs[ix[k + 1]])) {
      rc = weft__batch_fail(
          err, errlen, WEFT_EDUP,
          "--output %s: jobs %lld and %lld both write '%s'; add an "
          "input that tells them apart to the template, or {job}",
          p->tpl.text, (long long)ix[k], (long long)ix[k + 1],
          p->outputs[ix[k]]);
      break;
    }
  free(ix);
  return rc;
}

/* Renders job's output name and key from g's current inputs. */
static int name_job(weft__batch_plan *p, weft_graph *g, int64_t job,
                    const char **vals, char *err, size_t errlen) {
  char *js = weft__graph_inputs_json(g);
  json_t *o = weft__batch_inputs_load(js);
  if (!o) {
    free(js);
    json_decref(o);
    return weft__batch_fail(err, errlen, WEFT_ENOMEM, "out of memory");
  }
  char **texts = calloc((size_t)p->n_inputs + 1, sizeof *texts);
  int rc =
      texts ? 0 : weft__batch_fail(err, errlen, WEFT_ENOMEM, "out of memory");
  for (int i = 0; !rc && i < p->n_inputs; i++) {
    texts[i] = value_text(json_object_get(o, p->names[i]));
    if (!texts[i] && !vals[i] && !p->base[i]) {
      int64_t row = job / p->combos;
      char where[1100] = "";
      if (p->m && p->m->n_rows)
        snprintf(where, sizeof where, " (%s:%d)", p->m->name,
                 p->m->rows[row].line);
      rc = weft__batch_fail(
          err, errlen, WEFT_EMISSING,
          "job %lld%s: input '%s' has no default: give it a value in "
          "the manifest, with --sweep or with --set",
          (long long)job, where, p->names[i]);
    }
  }
  char *name = NULL;
  if (!rc && !(name = weft__batch_template_render(&p->tpl, job,
                                                  (const char *const *)texts)))
    rc = weft__batch_fail(err, errlen, WEFT_ENOMEM, "out of memory");
  char why[4600];
  if (!rc && weft__batch_name_check(name, why, sizeof why))
    rc = weft__batch_fail(err, errlen, WEFT_EINVAL, "--output %s: job %lld: %s",
                          p->tpl.text, (long long)job, why);
  if (!rc) {
    /* identity: the graph file, every input's value, the output name */
    size_t n = strlen(js) + strlen(name) + 64;
    char *id = malloc(n);
    if (!id) {
      rc = weft__batch_fail(err, errlen, WEFT_ENOMEM, "out of memory");
    } else {
      int k = snprintf(id, n, "%s\n%s\n%s", p->graph_hash, js, name);
      weft__batch_hash_hex(id, (size_t)k, p->keys[job]);
      free(id);
      p->outputs[job] = name;
      name = NULL;
    }
  }
  free(name);
  for (int i = 0; texts && i < p->n_inputs; i++)
    free(texts[i]);
  free(texts);
  json_decref(o);
  free(js);
  return rc;
}

int weft__batch_plan_build(weft__batch_plan *p, weft_ctx *ctx, weft_graph *g,
                           const char *graph_path,
                           const weft__batch_manifest *m,
                           const weft__batch_sweep *sw, int n_sw,
                           const char *tpl, char *err, size_t errlen) {
  memset(p, 0, sizeof *p);
  p->m = m;
  p->sw = sw;
  p->n_sw = n_sw;
  int rc;
  if ((rc = read_graph_hash(graph_path, p->graph_hash, err, errlen)) ||
      (rc = read_inputs(p, g, err, errlen)))
    return rc;
  char msg[2048];
  int n_cols = m ? m->n_cols : 0;
  p->col_input = calloc((size_t)n_cols + 1, sizeof *p->col_input);
  p->sw_input = calloc((size_t)n_sw + 1, sizeof *p->sw_input);
  if (!p->col_input || !p->sw_input)
    return weft__batch_fail(err, errlen, WEFT_ENOMEM, "out of memory");
  for (int c = 0; c < n_cols; c++) {
    if ((p->col_input[c] = find(p->names, p->n_inputs, m->cols[c])) < 0) {
      unknown_input(p, m->cols[c], msg, sizeof msg);
      return weft__batch_fail(err, errlen, WEFT_ENOENT, "%s:%d: %s", m->name,
                              m->col_line[c], msg);
    }
  }
  for (int k = 0; k < n_sw; k++) {
    if ((p->sw_input[k] = find(p->names, p->n_inputs, sw[k].name)) < 0) {
      unknown_input(p, sw[k].name, msg, sizeof msg);
      return weft__batch_fail(err, errlen, WEFT_ENOENT, "--sweep %s: %s",
                              sw[k].arg, msg);
    }
    for (int j = 0; j < k; j++)
      if (p->sw_input[j] == p->sw_input[k])
        return weft__batch_fail(
            err, errlen, WEFT_EDUP,
            "--sweep %s: input '%s' is already swept by --sweep %s", sw[k].arg,
            sw[k].name, sw[j].arg);
  }
  for (int r = 0; m && r < m->n_rows; r++)
    for (int k = 0; k < m->rows[r].n; k++)
      for (int s = 0; s < n_sw; s++)
        if (p->col_input[m->rows[r].col[k]] == p->sw_input[s])
          return weft__batch_fail(
              err, errlen, WEFT_EDUP,
              "%s:%d: input '%s' is set here and swept by --sweep "
              "%s; drop one",
              m->name, m->rows[r].line, sw[s].name, sw[s].arg);
  if ((rc = weft__batch_template_parse(tpl, (const char *const *)p->names,
                                       p->n_inputs, &p->tpl, err, errlen)))
    return rc;
  p->combos = 1;
  for (int k = 0; k < n_sw; k++) {
    if (sw[k].n > MAX_JOBS / p->combos)
      return weft__batch_fail(
          err, errlen, WEFT_ERANGE,
          "the sweeps make more than %d jobs; split the batch", MAX_JOBS);
    p->combos *= sw[k].n;
  }
  int64_t rows = m ? m->n_rows : 1;
  if (rows > MAX_JOBS / p->combos)
    return weft__batch_fail(
        err, errlen, WEFT_ERANGE,
        "%lld manifest rows x %lld sweep values is more than %d "
        "jobs; split the batch",
        (long long)rows, (long long)p->combos, MAX_JOBS);
  p->n_jobs = rows * p->combos;
  p->outputs = calloc((size_t)p->n_jobs + 1, sizeof *p->outputs);
  p->keys = calloc((size_t)p->n_jobs + 1, sizeof *p->keys);
  job_vals v;
  if (job_vals_new(p, &v) || !p->outputs || !p->keys) rc = WEFT_ENOMEM;
  if (rc) weft__batch_fail(err, errlen, rc, "out of memory");
  for (int64_t j = 0; !rc && j < p->n_jobs; j++) {
    job_values(p, j, &v);
    if (!(rc = apply_vals(p, ctx, g, &v, err, errlen)))
      rc = name_job(p, g, j, v.vals, err, errlen);
  }
  job_vals_free(&v);
  if (!rc) rc = check_unique(p, err, errlen);
  return rc;
}
