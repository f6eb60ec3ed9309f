/* comfy_import.c - graphs that do not come as weft YAML: ComfyUI API-format
 * workflows (workflow_api.json, or the body of a POST /prompt), converted
 * to weft YAML, and the graph a PNG carries (weft's "weft" text chunk, or
 * ComfyUI's "prompt").
 *
 * The converted YAML goes through the normal loader, so one set of rules
 * applies to every graph.  What can be checked on the JSON itself (node
 * shapes, class_types, input names, links, constant values) is checked
 * first, so that messages name the workflow's node ids, class_types and
 * input names rather than lines of YAML the user never wrote; the few
 * errors only the loader finds (types on links, cycles) have their YAML
 * line:col taken off. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "json_u64.h"
#include "png_alloc.h"

/* ---- a growable string --------------------------------------------------- */

typedef struct sbuf {
  char *s;
  size_t n, cap;
  bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->n + n + 1)
      cap *= 2;
    char *ns = realloc(b->s, cap);
    if (!ns) {
      b->oom = true;
      return;
    }
    b->s = ns;
    b->cap = cap;
  }
  memcpy(b->s + b->n, s, n);
  b->n += n;
  b->s[b->n] = 0;
}

static void sb_str(sbuf *b, const char *s) {
  sb_put(b, s, strlen(s));
}

static void sb_printf(sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
  char small[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n < sizeof small) {
    sb_put(b, small, (size_t)n);
    return;
  }
  char *big = malloc((size_t)n + 1);
  if (!big) {
    b->oom = true;
    return;
  }
  va_start(ap, fmt);
  vsnprintf(big, (size_t)n + 1, fmt, ap);
  va_end(ap);
  sb_put(b, big, (size_t)n);
  free(big);
}

/* ---- YAML text ----------------------------------------------------------- */

/* Decodes one UTF-8 code point (the input is valid UTF-8: jansson checked
 * it); returns its length. */
static int utf8_next(const unsigned char *s, uint32_t *cp) {
  if (s[0] < 0x80) {
    *cp = s[0];
    return 1;
  }
  if ((s[0] & 0xe0) == 0xc0 && s[1]) {
    *cp = ((uint32_t)(s[0] & 0x1f) << 6) | (s[1] & 0x3f);
    return 2;
  }
  if ((s[0] & 0xf0) == 0xe0 && s[1] && s[2]) {
    *cp = ((uint32_t)(s[0] & 0x0f) << 12) | ((uint32_t)(s[1] & 0x3f) << 6) |
          (s[2] & 0x3f);
    return 3;
  }
  if ((s[0] & 0xf8) == 0xf0 && s[1] && s[2] && s[3]) {
    *cp = ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3f) << 12) |
          ((uint32_t)(s[2] & 0x3f) << 6) | (s[3] & 0x3f);
    return 4;
  }
  *cp = 0xfffd;
  return 1;
}

/* What libyaml's reader accepts as printable (YAML 1.1 c-printable); line
 * breaks other than \n (NEL, LS, PS) are excluded too, since they would
 * fold a double-quoted scalar or end a comment. */
static bool yaml_printable(uint32_t c) {
  return c == 0x09 || (c >= 0x20 && c <= 0x7e) ||
         (c >= 0xa0 && c <= 0xd7ff && c != 0x2028 && c != 0x2029) ||
         (c >= 0xe000 && c <= 0xfffd && c != 0xfeff) ||
         (c >= 0x10000 && c <= 0x10ffff);
}

/* A plain scalar reads back as exactly this text: letters, digits and a
 * few marks, not starting with an indicator. */
static bool plain_safe(const char *s) {
  if (!*s) return false;
  if (!(isalnum((unsigned char)s[0]) ||
        (s[0] == '-' && isdigit((unsigned char)s[1])) ||
        (s[0] == '.' && isdigit((unsigned char)s[1]))))
    return false;
  for (const char *p = s; *p; p++)
    if (!(isalnum((unsigned char)*p) || strchr("_.-+/", *p))) return false;
  return true;
}

/* Writes s as a YAML scalar that weft reads back as the constant s: plain
 * when that is unambiguous, else double-quoted with escapes.  A leading '$'
 * would read as a graph input, so such text is quoted, and "$$" (which weft
 * reads as a literal '$') gets one more '$'. */
static void yaml_scalar(sbuf *b, const char *s) {
  if (plain_safe(s)) {
    sb_str(b, s);
    return;
  }
  sb_put(b, "\"", 1);
  if (s[0] == '$' && s[1] == '$') sb_put(b, "$", 1);
  const unsigned char *p = (const unsigned char *)s;
  while (*p) {
    uint32_t c;
    int n = utf8_next(p, &c);
    switch (c) {
    case '"': sb_str(b, "\\\""); break;
    case '\\': sb_str(b, "\\\\"); break;
    case '\n': sb_str(b, "\\n"); break;
    case '\t': sb_str(b, "\\t"); break;
    case '\r': sb_str(b, "\\r"); break;
    default:
      if (yaml_printable(c))
        sb_put(b, (const char *)p, (size_t)n);
      else if (c <= 0xff)
        sb_printf(b, "\\x%02X", (unsigned)c);
      else
        sb_printf(b, "\\u%04X", (unsigned)c);
    }
    p += n;
  }
  sb_put(b, "\"", 1);
}

/* Free text as the rest of a comment line: one line, printable. */
static void yaml_comment(sbuf *b, const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  while (*p) {
    uint32_t c;
    int n = utf8_next(p, &c);
    if (c == '\t' || !yaml_printable(c))
      sb_put(b, " ", 1);
    else
      sb_put(b, (const char *)p, (size_t)n);
    p += n;
  }
}

/* The shortest decimal text that reads back as x. */
static void fmt_double(char *buf, size_t len, double x) {
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(buf, len, "%.*g", prec, x);
    if (strtod(buf, NULL) == x) return;
  }
}

/* ---- the workflow -------------------------------------------------------- */

/* One API node.  key/class_type/title are borrowed from the JSON tree. */
typedef struct cnode {
  const char *key;
  char *id; /* the weft id: key, or key with invalid characters replaced */
  const char *class_type;
  const char *title;
  const weft__op *op;
  json_t *inputs;
  char **port_ref;  /* [n_inputs] "src.OUT" for each connected port */
  char **param_ref; /* [n_params] "src.OUT" for a param fed by a link */
  char **param_val; /* [n_params] a constant's text */
  char *ignored;    /* UI-only widgets dropped, for a comment */
  int *deps;
  int n_deps;
} cnode;

typedef struct importer {
  weft_ctx *ctx;
  const char *name; /* the workflow file, for messages */
  cnode *n;
  int nn;
  int *by_key; /* node indices sorted by key, for lookups */
} importer;

static void nodes_free(importer *m) {
  for (int i = 0; i < m->nn; i++) {
    cnode *c = &m->n[i];
    int np = c->op ? c->op->def.n_inputs : 0;
    int npar = c->op ? c->op->def.n_params : 0;
    for (int j = 0; c->port_ref && j < np; j++)
      free(c->port_ref[j]);
    for (int j = 0; c->param_ref && j < npar; j++)
      free(c->param_ref[j]);
    for (int j = 0; c->param_val && j < npar; j++)
      free(c->param_val[j]);
    free(c->port_ref);
    free(c->param_ref);
    free(c->param_val);
    free(c->ignored);
    free(c->deps);
    free(c->id);
  }
  free(m->n);
  free(m->by_key);
}

/* "workflow.json: node '3' (KSampler) input 'steps': " + the message. */
static int node_err(importer *m, int code, const cnode *c, const char *input,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int node_err(importer *m, int code, const cnode *c, const char *input,
                    const char *fmt, ...) {
  char what[1024], msg[3072];
  int n = snprintf(what, sizeof what, "node '%s'", c->key);
  if (c->class_type && n > 0 && (size_t)n < sizeof what)
    n += snprintf(what + n, sizeof what - (size_t)n, " (%s)", c->class_type);
  if (input && n > 0 && (size_t)n < sizeof what)
    snprintf(what + n, sizeof what - (size_t)n, " input '%s'", input);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  weft_loc loc = {m->name, 0, 0};
  return weft__err(m->ctx, code, &loc, "%s: %s", what, msg);
}

/* Orders ids as a reader expects: numbers by value, before other names. */
static int key_cmp(const char *a, const char *b) {
  bool da = *a && strspn(a, "0123456789") == strlen(a);
  bool db = *b && strspn(b, "0123456789") == strlen(b);
  if (da != db) return da ? -1 : 1;
  if (da) {
    while (*a == '0' && a[1])
      a++;
    while (*b == '0' && b[1])
      b++;
    size_t la = strlen(a), lb = strlen(b);
    if (la != lb) return la < lb ? -1 : 1;
  }
  return strcmp(a, b);
}

static int by_key_cmp(const void *x, const void *y, void *m_) {
  const importer *m = m_;
  return strcmp(m->n[*(const int *)x].key, m->n[*(const int *)y].key);
}

/* qsort_r is not C11; a small insertion/merge sort keeps this portable. */
static void sort_keys(importer *m) {
  int n = m->nn;
  int *a = m->by_key, *t = malloc((size_t)(n ? n : 1) * sizeof *t);
  if (!t) {
    /* fall back to insertion sort, O(n^2) but allocation-free */
    for (int i = 1; i < n; i++)
      for (int j = i; j > 0 && by_key_cmp(&a[j - 1], &a[j], m) > 0; j--) {
        int s = a[j];
        a[j] = a[j - 1];
        a[j - 1] = s;
      }
    return;
  }
  for (int w = 1; w < n; w *= 2)
    for (int lo = 0; lo < n - w; lo += 2 * w) {
      int mid = lo + w, hi = lo + 2 * w < n ? lo + 2 * w : n;
      int i = lo, j = mid, k = 0;
      while (i < mid && j < hi)
        t[k++] = by_key_cmp(&a[j], &a[i], m) < 0 ? a[j++] : a[i++];
      while (i < mid)
        t[k++] = a[i++];
      while (j < hi)
        t[k++] = a[j++];
      memcpy(a + lo, t, (size_t)k * sizeof *t);
    }
  free(t);
}

static int find_key(const importer *m, const char *key) {
  int lo = 0, hi = m->nn - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    int c = strcmp(m->n[m->by_key[mid]].key, key);
    if (c == 0) return m->by_key[mid];
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid - 1;
  }
  return -1;
}

static bool valid_weft_id(const char *s) {
  if (!*s) return false;
  for (; *s; s++)
    if (!(isalnum((unsigned char)*s) || *s == '_' || *s == '-')) return false;
  return true;
}

/* Gives every node a weft id: its key when valid ("3", "ckpt"), else the
 * key with other characters as '_' ("57:12" -> "57_12"), made unique. */
static int assign_ids(importer *m) {
  for (int i = 0; i < m->nn; i++) {
    cnode *c = &m->n[i];
    if (valid_weft_id(c->key)) {
      if (!(c->id = strdup(c->key))) return WEFT_ENOMEM;
      continue;
    }
  }
  for (int i = 0; i < m->nn; i++) {
    cnode *c = &m->n[i];
    if (c->id) continue;
    size_t len = strlen(c->key);
    char *base = malloc(len + 6);
    if (!base) return WEFT_ENOMEM;
    size_t k = 0;
    for (const char *p = c->key; *p; p++)
      base[k++] = isalnum((unsigned char)*p) || *p == '-' ? *p : '_';
    if (!k) memcpy(base, "node", 5), k = 4;
    base[k] = 0;
    char *id = malloc(k + 24);
    if (!id) {
      free(base);
      return WEFT_ENOMEM;
    }
    strcpy(id, base);
    for (int suffix = 2;; suffix++) {
      bool taken = false;
      for (int j = 0; j < m->nn && !taken; j++)
        taken = m->n[j].id && strcmp(m->n[j].id, id) == 0;
      if (!taken) break;
      snprintf(id, k + 24, "%s_%d", base, suffix);
    }
    free(base);
    c->id = id;
  }
  return 0;
}

/* ComfyUI's is_link: [source id (a string), output index]. */
static bool as_link(json_t *v, const char **src, json_int_t *slot) {
  if (!json_is_array(v) || json_array_size(v) != 2) return false;
  json_t *a = json_array_get(v, 0), *b = json_array_get(v, 1);
  if (!json_is_string(a)) return false;
  if (json_is_integer(b))
    *slot = json_integer_value(b);
  else if (json_is_real(b) && fabs(json_real_value(b)) < 1e9 &&
           json_real_value(b) == floor(json_real_value(b)))
    *slot = (json_int_t)json_real_value(b);
  else
    return false;
  *src = json_string_value(a);
  return true;
}

/* A constant as text, as ComfyUI would coerce it (str(), int(), float()). */
/* A JSON constant as the text weft's scalar parser reads.  u64: the
 * param's range reaches past 2^63 - 1, so a negative integer is the bit
 * pattern of one above it (how weft before 0.1 stored such seeds). */
static bool const_text(json_t *v, bool u64, char *buf, size_t len,
                       const char **text) {
  uint64_t big;
  switch (json_typeof(v)) {
  case JSON_STRING:
    if (!weft__json_is_u64(v, &big)) {
      *text = json_string_value(v);
      return true;
    }
    snprintf(buf, len, "%" PRIu64, big);
    break;
  case JSON_INTEGER:
    if (u64 && json_integer_value(v) < 0)
      snprintf(buf, len, "%" PRIu64, (uint64_t)json_integer_value(v));
    else
      snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    break;
  case JSON_REAL: fmt_double(buf, len, json_real_value(v)); break;
  case JSON_TRUE: snprintf(buf, len, "true"); break;
  case JSON_FALSE: snprintf(buf, len, "false"); break;
  default: return false;
  }
  *text = buf;
  return true;
}

static const char *json_kind(json_t *v) {
  switch (json_typeof(v)) {
  case JSON_OBJECT: return "an object";
  case JSON_ARRAY: return "a list";
  case JSON_NULL: return "null";
  default: return "a value";
  }
}

static int port_index(const weft__op *op, const char *name) {
  for (int i = 0; i < op->def.n_inputs; i++)
    if (strcmp(op->inputs[i].name, name) == 0) return i;
  return -1;
}

static int param_index(const weft__op *op, const char *name) {
  for (int i = 0; i < op->def.n_params; i++)
    if (strcmp(op->params[i].name, name) == 0) return i;
  return -1;
}

/* Widgets ComfyUI's frontend writes into API JSON that are no inputs of the
 * node (its backend ignores them): LoadImage's upload button, the seed
 * widget's "control after generate". */
static bool ui_only_widget(const char *name) {
  return strcmp(name, "upload") == 0 ||
         strcmp(name, "control_after_generate") == 0;
}

/* Resolves a link to "src.OUTPUT" after checking that the node and output
 * exist; records the dependency. */
static int link_ref(importer *m, cnode *c, const char *input, const char *src,
                    json_int_t slot, char **out) {
  int s = find_key(m, src);
  if (s < 0) {
    node_err(m, WEFT_ENOENT, c, input,
             "links to node '%s', which is not in the workflow", src);
    const char **cand = malloc((size_t)m->nn * sizeof *cand);
    if (cand) {
      for (int i = 0; i < m->nn; i++)
        cand[i] = m->n[i].key;
      weft__err_suggest(m->ctx, src, cand, m->nn);
      free(cand);
    }
    return WEFT_ENOENT;
  }
  const weft__op *sop = m->n[s].op;
  if (slot < 0 || slot >= sop->def.n_outputs) {
    char list[512] = "";
    size_t k = 0;
    for (int i = 0; i < sop->def.n_outputs && k < sizeof list - 64; i++)
      k += (size_t)snprintf(list + k, sizeof list - k, "%s%d %s", i ? ", " : "",
                            i, sop->outputs[i].name);
    return node_err(m, WEFT_ENOENT, c, input,
                    "links to output %" JSON_INTEGER_FORMAT
                    " of node '%s' (%s), which has %d output%s%s%s%s",
                    slot, src, sop->def.op, sop->def.n_outputs,
                    sop->def.n_outputs == 1 ? "" : "s",
                    sop->def.n_outputs ? " (" : "", list,
                    sop->def.n_outputs ? ")" : "");
  }
  size_t len = strlen(m->n[s].id) + strlen(sop->outputs[slot].name) + 2;
  if (!(*out = malloc(len))) return WEFT_ENOMEM;
  snprintf(*out, len, "%s.%s", m->n[s].id, sop->outputs[slot].name);
  int *nd = realloc(c->deps, (size_t)(c->n_deps + 1) * sizeof *nd);
  if (!nd) return WEFT_ENOMEM;
  c->deps = nd;
  c->deps[c->n_deps++] = s;
  return 0;
}

static int note_ignored(cnode *c, const char *name) {
  size_t old = c->ignored ? strlen(c->ignored) : 0;
  char *ni = realloc(c->ignored, old + strlen(name) + 3);
  if (!ni) return WEFT_ENOMEM;
  if (old)
    sprintf(ni + old, ", %s", name);
  else
    strcpy(ni, name);
  c->ignored = ni;
  return 0;
}

/* Maps one API input onto the op: a link to a port or a param, or a
 * constant for a param (checked as the YAML loader would check it). */
static int map_input(importer *m, cnode *c, const char *name, json_t *v) {
  const weft__op *op = c->op;
  int pi = port_index(op, name), ai = param_index(op, name);
  /* ComfyUI wraps list constants so they cannot read as links */
  const char *src = NULL;
  json_int_t slot = 0;
  bool link = false;
  if (json_is_object(v) && json_object_get(v, "__value__"))
    v = json_object_get(v, "__value__");
  else
    link = as_link(v, &src, &slot);
  if (pi < 0 && ai < 0) {
    if (ui_only_widget(name) && !link) return note_ignored(c, name);
    node_err(m, WEFT_ENOENT, c, NULL, "%s has no input '%s'", op->def.op, name);
    const char *cand[512];
    int nc = 0;
    for (int i = 0; i < op->def.n_inputs && nc < 512; i++)
      cand[nc++] = op->inputs[i].name;
    for (int i = 0; i < op->def.n_params && nc < 512; i++)
      cand[nc++] = op->params[i].name;
    weft__err_suggest(m->ctx, name, cand, nc);
    return WEFT_ENOENT;
  }
  if (link)
    return link_ref(m, c, name, src, slot,
                    pi >= 0 ? &c->port_ref[pi] : &c->param_ref[ai]);
  if (pi >= 0)
    return node_err(
        m, WEFT_ETYPE, c, name,
        "is a %s connection: it takes a link [node_id, "
        "output_index], not %s",
        weft__type_name(op->inputs[pi].type, op->inputs[pi].type_name),
        json_is_string(v) ? "a string" : json_kind(v));
  const weft_param_def *p = &op->params[ai];
  char buf[64];
  const char *text = NULL;
  bool u64 = p->type == WEFT_TYPE_INT && p->min >= 0 && p->max >= 9.3e18;
  if (!const_text(v, u64, buf, sizeof buf, &text)) {
    if (json_is_array(v))
      return node_err(m, WEFT_ETYPE, c, name,
                      "a list is neither a link [node_id, output_index] nor "
                      "a value weft takes: the param holds one %s",
                      weft__type_name(p->type, NULL));
    return node_err(m, WEFT_ETYPE, c, name, "%s is not a value for a %s param",
                    json_kind(v), weft__type_name(p->type, NULL));
  }
  char what[1024];
  snprintf(what, sizeof what, "%s: node '%s' (%s) input '%s'", m->name, c->key,
           c->class_type, name);
  weft_value *val = NULL;
  int r = weft__parse_scalar(m->ctx, NULL, p->type,
                             p->type == WEFT_TYPE_ENUM ? p->choices : NULL,
                             p->min, p->max, what, text, &val);
  weft__value_release(val);
  if (r) return r;
  return (c->param_val[ai] = strdup(text)) ? 0 : WEFT_ENOMEM;
}

/* The names of the registry's ops, for "did you mean". */
static const char **op_names(const weft_ctx *ctx) {
  const char **cand = malloc((size_t)(ctx->n_ops + 1) * sizeof *cand);
  if (cand)
    for (int i = 0; i < ctx->n_ops; i++)
      cand[i] = ctx->ops[i].def.op;
  return cand;
}

static const weft__op *find_op(const weft_ctx *ctx, const char *name) {
  for (int i = 0; i < ctx->n_ops; i++)
    if (strcmp(ctx->ops[i].def.op, name) == 0) return &ctx->ops[i];
  return NULL;
}

/* Every node whose class_type weft lacks, in one message: a user porting a
 * workflow wants the whole list, as ComfyUI's missing-nodes dialog gives. */
static int check_ops(importer *m) {
  sbuf msg = {0};
  int unknown = 0;
  const char **cand = op_names(m->ctx);
  if (!cand) return WEFT_ENOMEM;
  for (int i = 0; i < m->nn; i++) {
    cnode *c = &m->n[i];
    if ((c->op = find_op(m->ctx, c->class_type))) continue;
    const char *best = weft__closest(c->class_type, cand, m->ctx->n_ops);
    sb_printf(&msg, "%snode '%s': unknown class_type '%s'", unknown ? "; " : "",
              c->key, c->class_type);
    if (best) sb_printf(&msg, " (did you mean '%s'?)", best);
    unknown++;
  }
  free(cand);
  if (!unknown) return 0;
  weft_loc loc = {m->name, 0, 0};
  if (m->ctx->n_ops == 0)
    sb_str(&msg, " (no plugins are loaded: check WEFT_PLUGIN_PATH or "
                 "--plugin-dir)");
  else
    sb_printf(&msg, " ('weft nodes' lists the %d node types weft has)",
              m->ctx->n_ops);
  weft__err(m->ctx, WEFT_ENOENT, &loc, "%s", msg.s ? msg.s : "out of memory");
  free(msg.s);
  return WEFT_ENOENT;
}

/* Reads the workflow's nodes (not yet their inputs). */
static int read_nodes(importer *m, json_t *prompt) {
  weft_loc loc = {m->name, 0, 0};
  size_t n = json_object_size(prompt);
  if (n == 0)
    return weft__err(m->ctx, WEFT_ESYNTAX, &loc,
                     "the workflow has no nodes (expected {\"<id>\": "
                     "{\"class_type\": ..., \"inputs\": {...}}, ...})");
  if (!(m->n = calloc(n, sizeof *m->n)) ||
      !(m->by_key = malloc(n * sizeof *m->by_key)))
    return WEFT_ENOMEM;
  const char *key;
  json_t *v;
  json_object_foreach(prompt, key, v) {
    cnode *c = &m->n[m->nn];
    c->key = key;
    m->by_key[m->nn] = m->nn;
    m->nn++;
    if (!json_is_object(v))
      return node_err(m, WEFT_ESYNTAX, c, NULL,
                      "is %s, not a node ({\"class_type\": ..., \"inputs\": "
                      "{...}})",
                      json_is_string(v) ? "a string" : json_kind(v));
    json_t *ct = json_object_get(v, "class_type");
    if (!json_is_string(ct))
      return node_err(m, WEFT_ESYNTAX, c, NULL,
                      "has no \"class_type\" (the node type, for example "
                      "\"KSampler\")");
    c->class_type = json_string_value(ct);
    c->inputs = json_object_get(v, "inputs");
    if (c->inputs && !json_is_object(c->inputs))
      return node_err(m, WEFT_ESYNTAX, c, NULL,
                      "\"inputs\" must be an object of name: value or "
                      "[node_id, output_index]");
    json_t *meta = json_object_get(v, "_meta");
    json_t *title = meta ? json_object_get(meta, "title") : NULL;
    if (json_is_string(title)) c->title = json_string_value(title);
  }
  sort_keys(m);
  for (int i = 1; i < m->nn; i++)
    if (!strcmp(m->n[m->by_key[i]].key, m->n[m->by_key[i - 1]].key))
      return node_err(m, WEFT_EDUP, &m->n[m->by_key[i]], NULL,
                      "the id appears twice");
  return 0;
}

static int map_nodes(importer *m) {
  for (int i = 0; i < m->nn; i++) {
    cnode *c = &m->n[i];
    const weft_node_def *d = &c->op->def;
    c->port_ref = calloc((size_t)d->n_inputs + 1, sizeof *c->port_ref);
    c->param_ref = calloc((size_t)d->n_params + 1, sizeof *c->param_ref);
    c->param_val = calloc((size_t)d->n_params + 1, sizeof *c->param_val);
    if (!c->port_ref || !c->param_ref || !c->param_val) return WEFT_ENOMEM;
    const char *name;
    json_t *v;
    int r;
    if (c->inputs) json_object_foreach(c->inputs, name, v) {
        if ((r = map_input(m, c, name, v))) return r;
      }
  }
  return 0;
}

/* Topological order, taking among the ready nodes the one with the lowest
 * id, so the YAML reads from loaders to savers as the ids go.  Nodes on a
 * cycle come last in workflow order; the loader then names the cycle. */
static int *topo_order(const importer *m) {
  int *order = malloc((size_t)m->nn * sizeof *order);
  bool *done = calloc((size_t)m->nn, sizeof *done);
  if (!order || !done) {
    free(order), free(done);
    return NULL;
  }
  int k = 0;
  for (; k < m->nn; k++) {
    int best = -1;
    for (int i = 0; i < m->nn; i++) {
      if (done[i]) continue;
      bool ready = true;
      for (int j = 0; j < m->n[i].n_deps && ready; j++)
        ready = done[m->n[i].deps[j]] || m->n[i].deps[j] == i;
      if (ready && (best < 0 || key_cmp(m->n[i].key, m->n[best].key) < 0))
        best = i;
    }
    if (best < 0) break;
    order[k] = best;
    done[best] = true;
  }
  for (int i = 0; i < m->nn && k < m->nn; i++)
    if (!done[i]) order[k++] = i;
  free(done);
  return order;
}

static bool is_output_node(const cnode *c) {
  if (!(c->op->def.flags & WEFT_NODE_OUTPUT)) return false;
  for (int i = 0; i < c->op->def.n_outputs; i++)
    if (!strcmp(c->op->outputs[i].name, "files")) return true;
  return false;
}

static void yaml_key(sbuf *b, const char *s) {
  if (s[0] == '-')
    yaml_scalar(b, s); /* quoted: "-x" could read as a list item */
  else
    sb_str(b, s);
}

static char *emit_yaml(const importer *m) {
  int *order = topo_order(m);
  if (!order) return NULL;
  sbuf b = {0};
  const char *base = strrchr(m->name, '/');
  base = base ? base + 1 : m->name;
  sb_str(&b, "# Converted by weft from the ComfyUI API workflow ");
  yaml_comment(&b, base);
  sb_str(&b, ".\n# Node ids are the workflow's; a comment above a node is "
             "its ComfyUI title.\nversion: 1\ndescription: ");
  char desc[1200];
  snprintf(desc, sizeof desc, "ComfyUI API workflow %s", base);
  yaml_scalar(&b, desc);
  sb_str(&b, "\n\nnodes:\n");
  for (int k = 0; k < m->nn; k++) {
    const cnode *c = &m->n[order[k]];
    const weft__op *op = c->op;
    if (k) sb_str(&b, "\n");
    if (c->title || strcmp(c->id, c->key)) {
      sb_str(&b, "  # ");
      if (c->title) yaml_comment(&b, c->title);
      if (strcmp(c->id, c->key)) {
        sb_str(&b, c->title ? " (ComfyUI id " : "ComfyUI id ");
        yaml_comment(&b, c->key);
        if (c->title) sb_str(&b, ")");
      }
      sb_str(&b, "\n");
    }
    sb_str(&b, "  ");
    yaml_key(&b, c->id);
    sb_str(&b, ":\n    op: ");
    sb_str(&b, op->def.op);
    sb_str(&b, "\n");
    bool any = false;
    for (int j = 0; j < op->def.n_inputs; j++)
      if (c->port_ref[j]) {
        if (!any) sb_str(&b, "    inputs:\n");
        any = true;
        sb_printf(&b, "      %s: ", op->inputs[j].name);
        yaml_key(&b, c->port_ref[j]);
        sb_str(&b, "\n");
      }
    for (int j = 0; j < op->def.n_params; j++)
      if (c->param_ref[j]) {
        if (!any) sb_str(&b, "    inputs:\n");
        any = true;
        sb_printf(&b, "      %s: ", op->params[j].name);
        yaml_key(&b, c->param_ref[j]);
        sb_str(&b, "\n");
      }
    any = false;
    for (int j = 0; j < op->def.n_params; j++)
      if (c->param_val[j]) {
        if (!any) sb_str(&b, "    params:\n");
        any = true;
        sb_printf(&b, "      %s: ", op->params[j].name);
        yaml_scalar(&b, c->param_val[j]);
        sb_str(&b, "\n");
      }
    if (c->ignored) {
      sb_str(&b, "    # not weft inputs (ComfyUI UI widgets): ");
      yaml_comment(&b, c->ignored);
      sb_str(&b, "\n");
    }
  }
  bool any = false;
  for (int k = 0; k < m->nn; k++) {
    const cnode *c = &m->n[order[k]];
    if (!is_output_node(c)) continue;
    if (!any) sb_str(&b, "\noutputs:\n");
    any = true;
    sb_str(&b, "  ");
    yaml_key(&b, c->id);
    sb_str(&b, ": ");
    size_t len = strlen(c->id) + 8;
    char *ref = malloc(len);
    if (!ref) {
      b.oom = true;
      break;
    }
    snprintf(ref, len, "%s.files", c->id);
    yaml_key(&b, ref);
    free(ref);
    sb_str(&b, "\n");
  }
  free(order);
  if (b.oom) {
    free(b.s);
    return NULL;
  }
  return b.s;
}

/* The loader's "name:line:col: " refers to YAML the user never saw; keep
 * "name: " and the message (which names node ids and inputs). */
static void drop_yaml_position(weft_ctx *ctx, const char *name) {
  size_t n = strlen(name);
  if (strncmp(ctx->err, name, n) != 0 || ctx->err[n] != ':') return;
  char *p = ctx->err + n + 1;
  char *q = p;
  if (!isdigit((unsigned char)*q)) return;
  while (isdigit((unsigned char)*q))
    q++;
  if (*q++ != ':' || !isdigit((unsigned char)*q)) return;
  while (isdigit((unsigned char)*q))
    q++;
  if (*q++ != ':') return;
  memmove(p, q, strlen(q) + 1);
}

/* Where the nodes of a parsed document are: a workflow, a POST /prompt
 * body, or something else (reported). */
static int find_prompt(weft_ctx *ctx, json_t *root, const char *name,
                       json_t **prompt) {
  weft_loc loc = {name, 0, 0};
  if (!json_is_object(root))
    return weft__err(ctx, WEFT_ESYNTAX, &loc,
                     "a ComfyUI API workflow is a JSON object of nodes, not "
                     "%s",
                     json_is_string(root) ? "a string" : json_kind(root));
  if (json_is_array(json_object_get(root, "nodes")) &&
      (json_object_get(root, "links") || json_object_get(root, "last_node_id")))
    return weft__err(ctx, WEFT_EUNSUPPORTED, &loc,
                     "this is a ComfyUI UI workflow (it has \"nodes\" and "
                     "\"links\" lists); weft runs the API format: in ComfyUI "
                     "use Workflow > Export (API), or \"Save (API Format)\" "
                     "with the dev mode options on");
  json_t *p = json_object_get(root, "prompt");
  /* the body of POST /prompt: {"prompt": {...}, "client_id": ...} (a node
   * whose id is "prompt" has a class_type instead) */
  if (json_is_object(p) && !json_object_get(p, "class_type")) {
    *prompt = p;
    return 0;
  }
  *prompt = root;
  return 0;
}

static int parse_json(weft_ctx *ctx, const char *text, size_t len,
                      const char *name, json_t **out) {
  json_error_t e;
  *out = weft__json_loadb(text, len, JSON_REJECT_DUPLICATES, &e);
  if (*out) return 0;
  weft_loc loc = {name, e.line > 0 ? e.line : 0, e.column > 0 ? e.column : 0};
  if (loc.line && !loc.col) loc.col = 1;
  return weft__err(ctx, WEFT_ESYNTAX, &loc, "invalid JSON: %s%s", e.text,
                   strstr(e.text, "too big integer")
                       ? " (weft reads integers up to 2^64-1)"
                       : "");
}

int weft__comfy_import(weft_ctx *ctx, const char *json, size_t len,
                       const char *name, char **yaml_out, weft_graph **g_out) {
  if (yaml_out) *yaml_out = NULL;
  if (g_out) *g_out = NULL;
  ctx->err[0] = 0;
  json_t *root = NULL, *prompt = NULL;
  int r = parse_json(ctx, json, len, name, &root);
  if (!r) r = find_prompt(ctx, root, name, &prompt);
  importer m = {.ctx = ctx, .name = name};
  if (!r) r = read_nodes(&m, prompt);
  if (!r) r = check_ops(&m);
  if (!r) r = assign_ids(&m);
  if (!r) r = map_nodes(&m);
  char *yaml = NULL;
  if (!r && !(yaml = emit_yaml(&m))) r = WEFT_ENOMEM;
  nodes_free(&m);
  json_decref(root);
  weft_graph *g = NULL;
  if (!r) {
    r = weft_graph_load_string(ctx, yaml, strlen(yaml), name, &g);
    if (r) drop_yaml_position(ctx, name);
  }
  if (!r && yaml_out) {
    *yaml_out = yaml;
    yaml = NULL;
  }
  if (!r && g_out) {
    *g_out = g;
    g = NULL;
  }
  free(yaml);
  weft_graph_free(g);
  return r;
}

/* ---- PNG text ------------------------------------------------------------ */

typedef struct png_meta {
  char *weft, *prompt; /* UTF-8, malloc'd */
  bool parameters;     /* an A1111 "parameters" chunk is there */
  bool oom;
} png_meta;

typedef struct mem_src {
  const unsigned char *p;
  size_t n, off;
} mem_src;

typedef struct png_err {
  char msg[256];
} png_err;

static void mem_read(png_structp png, png_bytep out, size_t n) {
  mem_src *s = png_get_io_ptr(png);
  if (n > s->n - s->off) png_error(png, "the file is truncated");
  memcpy(out, s->p + s->off, n);
  s->off += n;
}

static void on_png_error(png_structp png, png_const_charp msg) {
  png_err *e = png_get_error_ptr(png);
  snprintf(e->msg, sizeof e->msg, "%s", msg);
  png_longjmp(png, 1);
}

static void on_png_warning(png_structp png, png_const_charp msg) {
  (void)png, (void)msg; /* a damaged ancillary chunk is only skipped */
}

/* tEXt and zTXt hold Latin-1; iTXt holds UTF-8. */
static char *text_utf8(const png_text *t) {
  const unsigned char *s = (const unsigned char *)t->text;
  size_t n = t->compression >= PNG_ITXT_COMPRESSION_NONE ? t->itxt_length
                                                         : t->text_length;
  if (!s) return strdup("");
  if (t->compression >= PNG_ITXT_COMPRESSION_NONE) return strndup(t->text, n);
  char *out = malloc(2 * n + 1), *o = out;
  if (!out) return NULL;
  for (size_t i = 0; i < n && s[i]; i++) {
    if (s[i] < 0x80) {
      *o++ = (char)s[i];
    } else {
      *o++ = (char)(0xc0 | (s[i] >> 6));
      *o++ = (char)(0x80 | (s[i] & 0x3f));
    }
  }
  *o = 0;
  return out;
}

static void collect_text(png_structp png, png_infop info, png_meta *pm) {
  png_textp t = NULL;
  int n = 0;
  png_get_text(png, info, &t, &n);
  for (int i = 0; i < n; i++) {
    if (!strcmp(t[i].key, "weft") && !pm->weft) {
      if (!(pm->weft = text_utf8(&t[i]))) pm->oom = true;
    } else if (!strcmp(t[i].key, "prompt") && !pm->prompt) {
      if (!(pm->prompt = text_utf8(&t[i]))) pm->oom = true;
    } else if (!strcmp(t[i].key, "parameters")) {
      pm->parameters = true;
    }
  }
}

/* Reads the text chunks of a PNG in memory.  Writers put them before the
 * pixels; chunks after IDAT are found by decoding the rows (one row buffer)
 * for images up to 2^28 pixels. */
static int read_png_text(weft_ctx *ctx, const unsigned char *buf, size_t len,
                         const char *path, png_meta *pm) {
  png_err e = {{0}};
  weft_loc loc = {path, 0, 0};
  png_structp png = png_create_read_struct_2(
      PNG_LIBPNG_VER_STRING, &e, on_png_error, on_png_warning, NULL,
      weft__png_malloc, weft__png_free);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  if (!info) {
    png_destroy_read_struct(&png, NULL, NULL);
    return WEFT_ENOMEM;
  }
  mem_src src = {buf, len, 0};
  png_bytep volatile row = NULL;
  if (setjmp(png_jmpbuf(png))) {
    free(row);
    png_destroy_read_struct(&png, &info, NULL);
    if (pm->weft || pm->prompt) return 0; /* damage after the graph */
    return weft__err(ctx, WEFT_EFORMAT, &loc, "cannot read the PNG: %s", e.msg);
  }
  png_set_read_fn(png, &src, mem_read);
  png_set_chunk_malloc_max(png, WEFT_PNG_ALLOC_MAX);
  png_read_info(png, info);
  collect_text(png, info, pm);
  if (!pm->weft && !pm->prompt && !pm->oom) {
    png_uint_32 w = png_get_image_width(png, info);
    png_uint_32 h = png_get_image_height(png, info);
    if ((uint64_t)w * h <= ((uint64_t)1 << 28)) {
      int passes = png_set_interlace_handling(png);
      png_read_update_info(png, info);
      row = malloc(png_get_rowbytes(png, info));
      if (!row) png_error(png, "out of memory");
      for (int p = 0; p < passes; p++)
        for (png_uint_32 y = 0; y < h; y++)
          png_read_row(png, row, NULL);
      png_read_end(png, info);
      collect_text(png, info, pm);
    }
  }
  free(row);
  png_destroy_read_struct(&png, &info, NULL);
  return pm->oom ? WEFT_ENOMEM : 0;
}

/* Sets a graph input from the value the "weft" record stored. */
static int apply_input(weft_ctx *ctx, weft_graph *g, const char *path,
                       const char *name, json_t *v) {
  weft_loc loc = {path, 0, 0};
  int i = weft__graph_find_input(g, name);
  if (i < 0)
    return weft__err(ctx, WEFT_EFORMAT, &loc,
                     "the 'weft' text chunk sets input '%s', which its graph "
                     "does not declare",
                     name);
  if (json_is_null(v)) return 0;
  weft__ginput *in = &g->inputs[i];
  char buf[64];
  const char *text = NULL;
  bool u64 = in->type == WEFT_TYPE_INT && in->min >= 0;
  if (json_is_real(v)) {
    snprintf(buf, sizeof buf, "%.17g", json_real_value(v));
    text = buf;
  } else if (!const_text(v, u64, buf, sizeof buf, &text)) {
    return weft__err(ctx, WEFT_EFORMAT, &loc,
                     "the 'weft' text chunk gives input '%s' %s", name,
                     json_kind(v));
  }
  char what[1024];
  snprintf(what, sizeof what, "%s: input '%s' stored in the image", path, name);
  weft_value *val;
  int r =
      weft__parse_scalar(ctx, NULL, in->type, (const char *const *)in->choices,
                         in->min, in->max, what, text, &val);
  if (r) return r;
  weft__value_release(in->value);
  in->value = val;
  return 0;
}

/* The "weft" record: {"version": 1, "graph": YAML, "inputs": {...},
 * "graph_file": name}. */
static int load_weft_record(weft_ctx *ctx, const char *text, const char *path,
                            weft_graph **out) {
  weft_loc loc = {path, 0, 0};
  json_error_t e;
  json_t *root = weft__json_loadb(text, strlen(text), 0, &e);
  if (!json_is_object(root)) {
    json_decref(root);
    return weft__err(ctx, WEFT_EFORMAT, &loc,
                     "the 'weft' text chunk is not a JSON object%s%s",
                     root ? "" : ": ", root ? "" : e.text);
  }
  int r = 0;
  json_t *ver = json_object_get(root, "version");
  json_t *graph = json_object_get(root, "graph");
  json_t *inputs = json_object_get(root, "inputs");
  if (!json_is_integer(ver) || json_integer_value(ver) != 1)
    r = weft__err(ctx, WEFT_EUNSUPPORTED, &loc,
                  "the 'weft' text chunk has version %s; this weft reads "
                  "version 1",
                  json_is_integer(ver) ? "other than 1" : "missing");
  else if (!json_is_string(graph))
    r = weft__err(ctx, WEFT_EFORMAT, &loc,
                  "the 'weft' text chunk has no \"graph\" text");
  else if (inputs && !json_is_object(inputs))
    r = weft__err(ctx, WEFT_EFORMAT, &loc,
                  "the 'weft' text chunk's \"inputs\" is not an object");
  if (!r)
    r = weft_graph_load_string(ctx, json_string_value(graph),
                               json_string_length(graph), path, out);
  const char *name;
  json_t *v;
  if (!r && inputs) json_object_foreach(inputs, name, v) {
      if ((r = apply_input(ctx, *out, path, name, v))) break;
    }
  if (r && *out) {
    weft_graph_free(*out);
    *out = NULL;
  }
  json_decref(root);
  return r;
}

static const unsigned char png_sig[8] = {0x89, 'P',  'N',  'G',
                                         '\r', '\n', 0x1a, '\n'};

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && strcasecmp(s + n - k, suffix) == 0;
}

int weft__import_kind(const char *path, const char *buf, size_t len) {
  if (len >= 8 && memcmp(buf, png_sig, 8) == 0) return WEFT__IMPORT_PNG;
  if (ends_with(path, ".yaml") || ends_with(path, ".yml"))
    return WEFT__IMPORT_NONE;
  if (ends_with(path, ".json")) return WEFT__IMPORT_JSON;
  size_t i = 0;
  if (len >= 3 && !memcmp(buf, "\xef\xbb\xbf", 3)) i = 3; /* UTF-8 BOM */
  while (i < len && isspace((unsigned char)buf[i]))
    i++;
  return i < len && buf[i] == '{' ? WEFT__IMPORT_JSON : WEFT__IMPORT_NONE;
}

/* A weft graph written in JSON syntax (YAML's subset): "version" and a
 * "nodes" mapping.  It goes to the YAML loader. */
static bool is_weft_graph_json(const char *buf, size_t len) {
  json_t *root = json_loadb(buf, len, 0, NULL);
  bool yes = json_is_object(root) && json_object_get(root, "version") &&
             json_is_object(json_object_get(root, "nodes"));
  json_decref(root);
  return yes;
}

int weft__import_load(weft_ctx *ctx, const char *buf, size_t len,
                      const char *path, weft_graph **out) {
  *out = NULL;
  ctx->err[0] = 0;
  int kind = weft__import_kind(path, buf, len);
  if (kind == WEFT__IMPORT_JSON) {
    if (is_weft_graph_json(buf, len))
      return weft_graph_load_string(ctx, buf, len, path, out);
    return weft__comfy_import(ctx, buf, len, path, NULL, out);
  }
  if (kind != WEFT__IMPORT_PNG)
    return weft_graph_load_string(ctx, buf, len, path, out);
  png_meta pm = {0};
  int r = read_png_text(ctx, (const unsigned char *)buf, len, path, &pm);
  weft_loc loc = {path, 0, 0};
  if (!r) {
    if (pm.weft)
      r = load_weft_record(ctx, pm.weft, path, out);
    else if (pm.prompt)
      r = weft__comfy_import(ctx, pm.prompt, strlen(pm.prompt), path, NULL,
                             out);
    else
      r = weft__err(ctx, WEFT_EFORMAT, &loc,
                    "this PNG carries no graph to run: it has no 'weft' text "
                    "chunk (weft's SaveImage writes one) and no ComfyUI "
                    "'prompt'%s",
                    pm.parameters ? "; its A1111 'parameters' text alone "
                                    "does not say which nodes made it"
                                  : "");
  }
  free(pm.weft);
  free(pm.prompt);
  return r;
}
