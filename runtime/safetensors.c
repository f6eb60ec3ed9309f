/* safetensors.c - validating safetensors reader (mmap or caller buffer) and
 * atomic writer, plus the model-family guess used by `weft inspect`.
 *
 * File layout: u64 little-endian N, N bytes of JSON header, data section.
 * The header maps each tensor key to {"dtype", "shape", "data_offsets"} and
 * may carry "__metadata__" (string -> string).  Offsets are relative to the
 * data section.  Every field is checked before anything is exposed, so a
 * caller may trust each weft_st_tensor's range without checking again.
 *
 * Alignment: the format does not align tensor data.  Files written by the
 * Python library (and by this writer) pad the header to a multiple of 8 and
 * order tensors by decreasing dtype size, so their data is naturally aligned
 * in practice, but a hostile or foreign file may place an F32 at an odd
 * address.  weft_st_tensor.data and weft_st_view() views may therefore be
 * unaligned: readers that do not know better copy or convert (memcpy) rather
 * than dereference typed pointers. */
#include "weft/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "weft/error.h"

/* The Python/Rust library refuses headers above 100 MB; so do we, so that a
 * corrupt length cannot make us parse (or allocate) gigabytes. */
#define ST_MAX_HEADER 100000000ull

/* ---- dtypes ------------------------------------------------------------ */

static const struct {
  const char *name;
  size_t size;
  int weft; /* weft_dtype or -1 */
} dtype_info[WEFT_ST_DTYPE_COUNT] = {
    [WEFT_ST_F32] = {"F32", 4, WEFT_F32},
    [WEFT_ST_F16] = {"F16", 2, WEFT_F16},
    [WEFT_ST_BF16] = {"BF16", 2, WEFT_BF16},
    [WEFT_ST_I32] = {"I32", 4, WEFT_I32},
    [WEFT_ST_I64] = {"I64", 8, WEFT_I64},
    [WEFT_ST_U8] = {"U8", 1, WEFT_U8},
    [WEFT_ST_F64] = {"F64", 8, -1},
    [WEFT_ST_I8] = {"I8", 1, -1},
    [WEFT_ST_I16] = {"I16", 2, -1},
    [WEFT_ST_U16] = {"U16", 2, -1},
    [WEFT_ST_U32] = {"U32", 4, -1},
    [WEFT_ST_U64] = {"U64", 8, -1},
    [WEFT_ST_BOOL] = {"BOOL", 1, -1},
    [WEFT_ST_F8_E4M3] = {"F8_E4M3", 1, -1},
    [WEFT_ST_F8_E5M2] = {"F8_E5M2", 1, -1},
};

const char *weft_st_dtype_name(weft_st_dtype dt) {
  if ((unsigned)dt >= WEFT_ST_DTYPE_COUNT) return "?";
  return dtype_info[dt].name;
}

size_t weft_st_dtype_size(weft_st_dtype dt) {
  if ((unsigned)dt >= WEFT_ST_DTYPE_COUNT) return 0;
  return dtype_info[dt].size;
}

int weft_st_to_dtype(weft_st_dtype dt) {
  if ((unsigned)dt >= WEFT_ST_DTYPE_COUNT) return -1;
  return dtype_info[dt].weft;
}

static int dtype_from_name(const char *s, weft_st_dtype *out) {
  for (int i = 0; i < WEFT_ST_DTYPE_COUNT; i++)
    if (strcmp(s, dtype_info[i].name) == 0) {
      *out = (weft_st_dtype)i;
      return 0;
    }
  return -1;
}

/* ---- the open file ----------------------------------------------------- */

typedef struct meta_entry {
  char *key, *value;
} meta_entry;

struct weft_st_file {
  char *path;          /* owned */
  const uint8_t *base; /* whole file / buffer */
  size_t size;
  bool mapped;         /* base is our mmap: munmap on close */
  const uint8_t *data; /* data section */
  uint64_t data_size;
  weft_st_tensor *tensors; /* [n], by offset; keys owned */
  int32_t n;
  int32_t *table; /* open addressing, -1 empty; [mask + 1] */
  uint32_t mask;
  meta_entry *meta; /* [n_meta], sorted by key; strings owned */
  int32_t n_meta;
};

/* Writes "prefix: msg" into err; tolerates err == NULL. */
static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || errlen == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* A key as it may appear in a message: control bytes escaped, long keys cut,
 * so a hostile header cannot garble a terminal or flood a log. */
static const char *escape_msg(const char *key, char *buf, size_t cap,
                              bool quotes) {
  size_t o = 0;
  for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
    if (o + 8 >= cap) {
      memcpy(buf + o, "...", 4);
      return buf;
    }
    if (*p < 0x20 || *p == 0x7f || (quotes && (*p == '\'' || *p == '\\')))
      o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", *p);
    else
      buf[o++] = (char)*p;
  }
  buf[o] = '\0';
  return buf;
}

static const char *key_for_msg(const char *key, char *buf, size_t cap) {
  return escape_msg(key, buf, cap, true);
}

static const char *json_kind(const json_t *j) {
  switch (json_typeof(j)) {
  case JSON_OBJECT: return "an object";
  case JSON_ARRAY: return "an array";
  case JSON_STRING: return "a string";
  case JSON_INTEGER: return "an integer";
  case JSON_REAL: return "a real number";
  case JSON_TRUE:
  case JSON_FALSE: return "a boolean";
  case JSON_NULL: return "null";
  }
  return "?";
}

void weft_st_close(weft_st_file *f) {
  if (!f) return;
  if (f->mapped && f->base) munmap((void *)f->base, f->size);
  for (int32_t i = 0; i < f->n; i++)
    free((char *)f->tensors[i].key);
  free(f->tensors);
  free(f->table);
  for (int32_t i = 0; i < f->n_meta; i++) {
    free(f->meta[i].key);
    free(f->meta[i].value);
  }
  free(f->meta);
  free(f->path);
  free(f);
}

static uint64_t hash_key(const char *k) {
  return XXH3_64bits(k, strlen(k));
}

static int build_table(weft_st_file *f) {
  uint32_t cap = 8;
  while (cap < (uint32_t)f->n * 2u)
    cap *= 2;
  f->table = malloc(cap * sizeof *f->table);
  if (!f->table) return WEFT_ENOMEM;
  memset(f->table, 0xff, cap * sizeof *f->table);
  f->mask = cap - 1;
  for (int32_t i = 0; i < f->n; i++) {
    uint32_t h = (uint32_t)hash_key(f->tensors[i].key) & f->mask;
    while (f->table[h] >= 0)
      h = (h + 1) & f->mask;
    f->table[h] = i;
  }
  return 0;
}

static int cmp_tensor_offset(const void *a, const void *b) {
  const weft_st_tensor *x = a, *y = b;
  if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
  if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
  return strcmp(x->key, y->key);
}

static int cmp_meta(const void *a, const void *b) {
  return strcmp(((const meta_entry *)a)->key, ((const meta_entry *)b)->key);
}

/* Reads one tensor entry.  Returns 0, or WEFT_EFORMAT after writing err;
 * t->key is set by the caller.  The layout is checked later, over all. */
static int parse_entry(const char *name, const char *key, json_t *v,
                       weft_st_tensor *t, char *err, size_t errlen) {
  char kb[256];
#define BAD(...)                                                               \
  do {                                                                         \
    char m_[512];                                                              \
    snprintf(m_, sizeof m_, __VA_ARGS__);                                      \
    seterr(err, errlen, "%s: tensor '%s': %s", name,                           \
           key_for_msg(key, kb, sizeof kb), m_);                               \
    return WEFT_EFORMAT;                                                       \
  } while (0)

  if (!json_is_object(v)) BAD("entry is %s, expected an object", json_kind(v));

  json_t *jd = json_object_get(v, "dtype");
  if (!jd) BAD("missing 'dtype'");
  if (!json_is_string(jd)) BAD("dtype is %s, expected a string", json_kind(jd));
  const char *ds = json_string_value(jd);
  if (dtype_from_name(ds, &t->dtype) != 0) {
    char db[64];
    BAD("unknown dtype '%s' (known: F64 F32 F16 BF16 I64 I32 I16 I8 U64 U32 "
        "U16 U8 BOOL F8_E4M3 F8_E5M2)",
        key_for_msg(ds, db, sizeof db));
  }

  json_t *js = json_object_get(v, "shape");
  if (!js) BAD("missing 'shape'");
  if (!json_is_array(js)) BAD("shape is %s, expected an array", json_kind(js));
  size_t nd = json_array_size(js);
  if (nd > WEFT_MAX_DIMS)
    BAD("shape has %zu dimensions, at most %d are supported", nd,
        WEFT_MAX_DIMS);
  t->ndim = (int32_t)nd;
  int64_t numel = 1;
  bool overflow = false;
  for (size_t i = 0; i < nd; i++) {
    json_t *d = json_array_get(js, i);
    if (!json_is_integer(d))
      BAD("shape dimension %zu is %s, expected a non-negative integer", i,
          json_kind(d));
    json_int_t x = json_integer_value(d);
    if (x < 0) BAD("shape dimension %zu is negative (%lld)", i, (long long)x);
    t->shape[i] = (int64_t)x;
    if (__builtin_mul_overflow(numel, (int64_t)x, &numel)) overflow = true;
  }
  /* A zero dimension makes the product 0 even if others overflowed alone;
   * still refuse: no real tensor has such a shape. */
  if (overflow) BAD("shape's element count overflows 64 bits");
  uint64_t need;
  if (__builtin_mul_overflow((uint64_t)numel,
                             (uint64_t)weft_st_dtype_size(t->dtype), &need))
    BAD("shape's byte size overflows 64 bits");

  json_t *jo = json_object_get(v, "data_offsets");
  if (!jo) BAD("missing 'data_offsets'");
  if (!json_is_array(jo) || json_array_size(jo) != 2 ||
      !json_is_integer(json_array_get(jo, 0)) ||
      !json_is_integer(json_array_get(jo, 1)))
    BAD("data_offsets must be an array of 2 non-negative integers [begin, "
        "end]");
  json_int_t b = json_integer_value(json_array_get(jo, 0));
  json_int_t e = json_integer_value(json_array_get(jo, 1));
  if (b < 0 || e < 0)
    BAD("data_offsets [%lld, %lld] are negative", (long long)b, (long long)e);
  if (b > e)
    BAD("data_offsets begin %lld > end %lld", (long long)b, (long long)e);
  t->offset = (uint64_t)b;
  t->nbytes = (uint64_t)(e - b);
  if (t->nbytes != need) {
    char sb[WEFT_MAX_DIMS * 21 + 4];
    size_t o = 0;
    sb[o++] = '[';
    for (int i = 0; i < t->ndim; i++)
      o += (size_t)snprintf(sb + o, sizeof sb - o, "%s%lld", i ? ", " : "",
                            (long long)t->shape[i]);
    snprintf(sb + o, sizeof sb - o, "]");
    BAD("shape %s of %s needs %llu bytes but data_offsets [%lld, %lld] hold "
        "%llu",
        sb, weft_st_dtype_name(t->dtype), (unsigned long long)need,
        (long long)b, (long long)e, (unsigned long long)t->nbytes);
  }
  return 0;
#undef BAD
}

static int parse_metadata(weft_st_file *f, const char *name, json_t *m,
                          char *err, size_t errlen) {
  char kb[256];
  if (!json_is_object(m)) {
    seterr(err, errlen, "%s: header: __metadata__ is %s, expected an object",
           name, json_kind(m));
    return WEFT_EFORMAT;
  }
  size_t n = json_object_size(m);
  f->meta = calloc(n ? n : 1, sizeof *f->meta);
  if (!f->meta) return WEFT_ENOMEM;
  const char *k;
  json_t *v;
  json_object_foreach(m, k, v) {
    if (!json_is_string(v)) {
      seterr(err, errlen,
             "%s: header: __metadata__ value of '%s' is %s, expected a string",
             name, key_for_msg(k, kb, sizeof kb), json_kind(v));
      return WEFT_EFORMAT;
    }
    meta_entry *e = &f->meta[f->n_meta];
    e->key = strdup(k);
    e->value = strdup(json_string_value(v));
    if (!e->key || !e->value) {
      free(e->key);
      free(e->value);
      return WEFT_ENOMEM;
    }
    f->n_meta++;
  }
  qsort(f->meta, (size_t)f->n_meta, sizeof *f->meta, cmp_meta);
  return 0;
}

/* Checks that the sorted ranges tile the data section exactly. */
static int check_layout(weft_st_file *f, const char *name, char *err,
                        size_t errlen) {
  char kb[256], kb2[256];
  uint64_t cursor = 0;
  const weft_st_tensor *last = NULL; /* the tensor that ends at cursor */
  for (int32_t i = 0; i < f->n; i++) {
    const weft_st_tensor *t = &f->tensors[i];
    uint64_t end = t->offset + t->nbytes; /* no overflow: both < 2^63 */
    if (end > f->data_size) {
      seterr(err, errlen,
             "%s: tensor '%s': data_offsets [%llu, %llu] run past the end of "
             "the data section (%llu bytes; file truncated?)",
             name, key_for_msg(t->key, kb, sizeof kb),
             (unsigned long long)t->offset, (unsigned long long)end,
             (unsigned long long)f->data_size);
      return WEFT_EFORMAT;
    }
    if (t->offset < cursor) {
      seterr(err, errlen,
             "%s: tensor '%s': data_offsets [%llu, %llu] overlap tensor '%s' "
             "[%llu, %llu]",
             name, key_for_msg(t->key, kb, sizeof kb),
             (unsigned long long)t->offset, (unsigned long long)end,
             last ? key_for_msg(last->key, kb2, sizeof kb2) : "?",
             last ? (unsigned long long)last->offset : 0ull,
             (unsigned long long)cursor);
      return WEFT_EFORMAT;
    }
    if (t->offset > cursor) {
      if (last)
        seterr(err, errlen,
               "%s: tensor '%s': gap of %llu unused bytes before data_offsets "
               "[%llu, %llu] (tensor '%s' ends at %llu)",
               name, key_for_msg(t->key, kb, sizeof kb),
               (unsigned long long)(t->offset - cursor),
               (unsigned long long)t->offset, (unsigned long long)end,
               key_for_msg(last->key, kb2, sizeof kb2),
               (unsigned long long)cursor);
      else
        seterr(err, errlen,
               "%s: tensor '%s': gap of %llu unused bytes before data_offsets "
               "[%llu, %llu] (the data section starts at offset 0)",
               name, key_for_msg(t->key, kb, sizeof kb),
               (unsigned long long)(t->offset - cursor),
               (unsigned long long)t->offset, (unsigned long long)end);
      return WEFT_EFORMAT;
    }
    if (t->nbytes > 0 || !last) last = t;
    cursor = end;
  }
  if (cursor != f->data_size) {
    if (last)
      seterr(err, errlen,
             "%s: header: %llu unused bytes at the end of the data section "
             "(last tensor '%s' ends at %llu of %llu)",
             name, (unsigned long long)(f->data_size - cursor),
             key_for_msg(last->key, kb, sizeof kb), (unsigned long long)cursor,
             (unsigned long long)f->data_size);
    else
      seterr(err, errlen,
             "%s: header: no tensors, but the data section holds %llu bytes",
             name, (unsigned long long)f->data_size);
    return WEFT_EFORMAT;
  }
  return 0;
}

/* Parses and validates f->base[0..size).  f->path is set. */
static int parse(weft_st_file *f, char *err, size_t errlen) {
  const char *name = f->path;
  if (f->size < 8) {
    seterr(err, errlen,
           "%s: header: file is %zu bytes, too short for the 8-byte header "
           "length (not a safetensors file?)",
           name, f->size);
    return WEFT_EFORMAT;
  }
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--)
    hlen = (hlen << 8) | f->base[i];
  if (hlen > ST_MAX_HEADER) {
    seterr(err, errlen,
           "%s: header: header length %llu exceeds the %llu-byte limit (not a "
           "safetensors file?)",
           name, (unsigned long long)hlen, ST_MAX_HEADER);
    return WEFT_EFORMAT;
  }
  if (hlen < 2) {
    seterr(err, errlen,
           "%s: header: header length %llu is too small for a JSON object",
           name, (unsigned long long)hlen);
    return WEFT_EFORMAT;
  }
  if (hlen > f->size - 8) {
    seterr(err, errlen,
           "%s: header: header length %llu runs past the end of the file "
           "(%zu bytes; file truncated?)",
           name, (unsigned long long)hlen, f->size);
    return WEFT_EFORMAT;
  }
  f->data = f->base + 8 + hlen;
  f->data_size = f->size - 8 - hlen;

  json_error_t je;
  json_t *root = json_loadb((const char *)f->base + 8, (size_t)hlen,
                            JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
  if (!root) {
    if (json_error_code(&je) == json_error_duplicate_key) {
      /* jansson says: duplicate object key near '"name"' */
      const char *near = strstr(je.text, "near '");
      seterr(err, errlen, "%s: header: duplicate key %.*s at byte %d", name,
             near ? (int)strlen(near + 6) - 1 : 1, near ? near + 6 : "?",
             je.position);
    } else if (json_error_code(&je) == json_error_end_of_input_expected) {
      seterr(err, errlen,
             "%s: header: unexpected bytes after the JSON object at byte %d "
             "(the header may be padded with spaces only)",
             name, je.position);
    } else {
      char tb[256]; /* jansson quotes the offending bytes: escape them */
      seterr(err, errlen, "%s: header: not valid JSON: %s (byte %d of %llu)",
             name, escape_msg(je.text, tb, sizeof tb, false), je.position,
             (unsigned long long)hlen);
    }
    return WEFT_EFORMAT;
  }
  int rc = 0;
  if (!json_is_object(root)) {
    seterr(err, errlen, "%s: header: the JSON header is %s, expected an object",
           name, json_kind(root));
    rc = WEFT_EFORMAT;
    goto out;
  }

  size_t cap = json_object_size(root);
  if (cap > INT32_MAX / 2) {
    seterr(err, errlen, "%s: header: too many entries (%zu)", name, cap);
    rc = WEFT_EFORMAT;
    goto out;
  }
  f->tensors = calloc(cap ? cap : 1, sizeof *f->tensors);
  if (!f->tensors) {
    rc = WEFT_ENOMEM;
    goto out;
  }
  const char *k;
  json_t *v;
  json_object_foreach(root, k, v) {
    if (strcmp(k, "__metadata__") == 0) {
      rc = parse_metadata(f, name, v, err, errlen);
      if (rc) goto out;
      continue;
    }
    weft_st_tensor *t = &f->tensors[f->n];
    memset(t, 0, sizeof *t);
    rc = parse_entry(name, k, v, t, err, errlen);
    if (rc) goto out;
    t->key = strdup(k);
    if (!t->key) {
      rc = WEFT_ENOMEM;
      goto out;
    }
    f->n++;
  }
  qsort(f->tensors, (size_t)f->n, sizeof *f->tensors, cmp_tensor_offset);
  rc = check_layout(f, name, err, errlen);
  if (rc) goto out;
  for (int32_t i = 0; i < f->n; i++)
    f->tensors[i].data = f->data + f->tensors[i].offset;
  rc = build_table(f);
out:
  if (rc == WEFT_ENOMEM) seterr(err, errlen, "%s: out of memory", name);
  json_decref(root);
  return rc;
}

static weft_st_file *file_new(const char *name) {
  weft_st_file *f = calloc(1, sizeof *f);
  if (!f) return NULL;
  f->path = strdup(name ? name : "<memory>");
  if (!f->path) {
    free(f);
    return NULL;
  }
  return f;
}

int weft_st_open_memory(const void *buf, size_t len, const char *name,
                        weft_st_file **out, char *err, size_t errlen) {
  if (!out || (!buf && len)) return WEFT_EINVAL;
  *out = NULL;
  weft_st_file *f = file_new(name);
  if (!f) {
    seterr(err, errlen, "%s: out of memory", name ? name : "<memory>");
    return WEFT_ENOMEM;
  }
  static const uint8_t empty[1];
  f->base = buf ? buf : empty;
  f->size = len;
  int rc = parse(f, err, errlen);
  if (rc) {
    weft_st_close(f);
    return rc;
  }
  *out = f;
  return 0;
}

int weft_st_open(const char *path, weft_st_file **out, char *err,
                 size_t errlen) {
  if (!path || !out) return WEFT_EINVAL;
  *out = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    seterr(err, errlen, "%s: cannot open: %s", path, strerror(e));
    return e == ENOENT || e == ENOTDIR ? WEFT_ENOENT : WEFT_EIO;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    seterr(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
    close(fd);
    return WEFT_EIO;
  }
  if (!S_ISREG(st.st_mode)) { /* the user named the wrong thing: bad input */
    seterr(err, errlen, "%s: not a regular file%s", path,
           S_ISDIR(st.st_mode) ? " (a directory)" : "");
    close(fd);
    return WEFT_EFORMAT;
  }
  weft_st_file *f = file_new(path);
  if (!f) {
    close(fd);
    seterr(err, errlen, "%s: out of memory", path);
    return WEFT_ENOMEM;
  }
  static const uint8_t empty[1];
  f->size = (size_t)st.st_size;
  f->base = empty;
  if (f->size > 0) {
    /* MAP_PRIVATE + PROT_READ: nothing we do can reach the file.  A file
     * truncated by someone else while mapped raises SIGBUS on access; that
     * cannot be validated away and is documented as the caller's risk. */
    void *p = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      seterr(err, errlen, "%s: cannot map %zu bytes: %s", path, f->size,
             strerror(errno));
      close(fd);
      weft_st_close(f);
      return WEFT_EIO;
    }
    f->base = p;
    f->mapped = true;
  }
  close(fd);
  int rc = parse(f, err, errlen);
  if (rc) {
    weft_st_close(f);
    return rc;
  }
  *out = f;
  return 0;
}

/* ---- accessors --------------------------------------------------------- */

int32_t weft_st_count(const weft_st_file *f) {
  return f ? f->n : 0;
}

const weft_st_tensor *weft_st_at(const weft_st_file *f, int32_t i) {
  if (!f || i < 0 || i >= f->n) return NULL;
  return &f->tensors[i];
}

const weft_st_tensor *weft_st_find(const weft_st_file *f, const char *key) {
  if (!f || !key || f->n == 0) return NULL;
  uint32_t h = (uint32_t)hash_key(key) & f->mask;
  for (; f->table[h] >= 0; h = (h + 1) & f->mask)
    if (strcmp(f->tensors[f->table[h]].key, key) == 0)
      return &f->tensors[f->table[h]];
  return NULL;
}

int32_t weft_st_meta_count(const weft_st_file *f) {
  return f ? f->n_meta : 0;
}

const char *weft_st_meta_key(const weft_st_file *f, int32_t i) {
  if (!f || i < 0 || i >= f->n_meta) return NULL;
  return f->meta[i].key;
}

const char *weft_st_meta_value(const weft_st_file *f, int32_t i) {
  if (!f || i < 0 || i >= f->n_meta) return NULL;
  return f->meta[i].value;
}

const char *weft_st_meta(const weft_st_file *f, const char *key) {
  if (!f || !key || f->n_meta == 0) return NULL; /* bsearch wants a base */
  meta_entry probe = {(char *)key, NULL};
  const meta_entry *e =
      bsearch(&probe, f->meta, (size_t)f->n_meta, sizeof *f->meta, cmp_meta);
  return e ? e->value : NULL;
}

const char *weft_st_path(const weft_st_file *f) {
  return f ? f->path : NULL;
}

int weft_st_view(const weft_st_tensor *t, weft_tensor *view) {
  if (!t || !view) return WEFT_EINVAL;
  int dt = weft_st_to_dtype(t->dtype);
  if (dt < 0) return WEFT_EUNSUPPORTED;
  memset(view, 0, sizeof *view);
  view->dtype = (weft_dtype)dt;
  view->device = WEFT_DEVICE_CPU;
  view->ndim = t->ndim;
  int64_t stride = 1;
  for (int i = t->ndim - 1; i >= 0; i--) {
    view->shape[i] = t->shape[i];
    view->stride[i] = stride;
    stride *= t->shape[i] ? t->shape[i] : 1;
  }
  view->data = (void *)t->data; /* read-only: the mapping is PROT_READ */
  return 0;
}

/* ---- family guess ------------------------------------------------------ */

static bool starts(const char *s, const char *p) {
  return strncmp(s, p, strlen(p)) == 0;
}

static bool ends(const char *s, const char *suf) {
  size_t n = strlen(s), m = strlen(suf);
  return n >= m && memcmp(s + n - m, suf, m) == 0;
}

/* The rules look at prefixes first (they are unambiguous for the original
 * single-file layouts) and fall back to one shape, the UNet's cross-attention
 * key projection, whose input width is the text encoder's context dim:
 * 768 SD1.x (CLIP-L), 1024 SD2.x (OpenCLIP-H), 2048 SDXL. */
const char *weft_st_guess_family(const weft_st_file *f) {
  if (!f || f->n == 0) return "unknown";
  int32_t n_unet = 0, n_clip_l = 0, n_openclip = 0, n_xl = 0, n_joint = 0,
          n_lora = 0, n_control = 0, n_vae_sd = 0, n_vae = 0, n_text = 0,
          n_down = 0, n_conv_in = 0, n_time = 0, n_ctx_emb = 0, n_x_emb = 0;
  int64_t ctx_dim = 0;
  for (int32_t i = 0; i < f->n; i++) {
    const weft_st_tensor *t = &f->tensors[i];
    const char *k = t->key;
    if (starts(k, "lora_unet_") || starts(k, "lora_te_") ||
        starts(k, "lora_te1_") || starts(k, "lora_te2_") ||
        strstr(k, ".lora_down.") || strstr(k, ".lora_up.") ||
        strstr(k, ".lora_A.") || strstr(k, ".lora_B.") || strstr(k, ".hada_") ||
        strstr(k, ".lokr_"))
      n_lora++;
    if (starts(k, "control_model.") || strstr(k, "controlnet_cond_embedding") ||
        strstr(k, "input_hint_block") || starts(k, "controlnet_"))
      n_control++;
    if (strstr(k, "joint_blocks.")) n_joint++;
    /* diffusers SD3Transformer2DModel (Flux has no x_embedder.proj) */
    if (starts(k, "context_embedder.")) n_ctx_emb++;
    if (starts(k, "x_embedder.proj.")) n_x_emb++;
    if (starts(k, "conditioner.embedders.")) n_xl++;
    if (starts(k, "model.diffusion_model.")) {
      n_unet++;
      if (ends(k, ".attn2.to_k.weight") && t->ndim == 2 && !ctx_dim)
        ctx_dim = t->shape[1];
    }
    if (starts(k, "cond_stage_model.transformer.")) n_clip_l++;
    if (starts(k, "cond_stage_model.model.")) n_openclip++;
    if (starts(k, "first_stage_model.")) n_vae_sd++;
    if (starts(k, "encoder.") || starts(k, "decoder.") ||
        starts(k, "quant_conv.") || starts(k, "post_quant_conv."))
      n_vae++;
    if (starts(k, "text_model.") || starts(k, "text_projection.")) n_text++;
    if (starts(k, "down_blocks.")) n_down++;
    if (starts(k, "conv_in.")) n_conv_in++;
    if (starts(k, "time_embedding.")) n_time++;
  }
  if (n_lora) return "LoRA";
  if (n_control) return "ControlNet";
  if (n_joint || (n_ctx_emb && n_x_emb)) return "SD3";
  if (n_xl) return "SDXL";
  if (n_unet) {
    if (n_openclip || ctx_dim == 1024) return "SD2.x";
    if (ctx_dim == 2048) return "SDXL";
    if (n_clip_l || ctx_dim == 768) return "SD1.x";
    return "unknown";
  }
  /* Standalone VAEs sometimes carry stray keys (loss.*, model_ema.*), so
   * the bare encoder/decoder layout needs only a majority. */
  if (n_vae_sd) return "VAE";
  if (n_vae * 2 > f->n) return "VAE";
  if (n_text || n_clip_l || n_openclip) return "CLIP";
  if (n_down && n_conv_in && n_time) return "UNet";
  return "unknown";
}

/* ---- writer ------------------------------------------------------------ */

typedef struct wtensor {
  char *key;
  weft_st_dtype dtype;
  int32_t ndim;
  int64_t shape[WEFT_MAX_DIMS];
  uint64_t nbytes;
  const void *data; /* borrowed */
} wtensor;

struct weft_st_writer {
  wtensor *t;
  int32_t n, cap;
  int32_t *table; /* indices into t, -1 empty; [2 * cap], rebuilt on growth */
  meta_entry *meta;
  int32_t n_meta, cap_meta;
};

int weft_st_writer_new(weft_st_writer **out) {
  if (!out) return WEFT_EINVAL;
  *out = calloc(1, sizeof **out);
  return *out ? 0 : WEFT_ENOMEM;
}

void weft_st_writer_free(weft_st_writer *w) {
  if (!w) return;
  for (int32_t i = 0; i < w->n; i++)
    free(w->t[i].key);
  free(w->t);
  free(w->table);
  for (int32_t i = 0; i < w->n_meta; i++) {
    free(w->meta[i].key);
    free(w->meta[i].value);
  }
  free(w->meta);
  free(w);
}

/* jansson refuses strings that are not valid UTF-8; find out at add time. */
static bool valid_json_string(const char *s) {
  json_t *j = json_string(s);
  if (!j) return false;
  json_decref(j);
  return true;
}

int weft_st_writer_add(weft_st_writer *w, const char *key, weft_st_dtype dtype,
                       int32_t ndim, const int64_t *shape, const void *data) {
  if (!w || !key || (unsigned)dtype >= WEFT_ST_DTYPE_COUNT || ndim < 0 ||
      ndim > WEFT_MAX_DIMS || (ndim > 0 && !shape))
    return WEFT_EINVAL;
  if (strcmp(key, "__metadata__") == 0 || !valid_json_string(key))
    return WEFT_EINVAL;
  int64_t numel = 1;
  for (int32_t i = 0; i < ndim; i++) {
    if (shape[i] < 0) return WEFT_EINVAL;
    if (__builtin_mul_overflow(numel, shape[i], &numel)) return WEFT_ERANGE;
  }
  uint64_t nbytes;
  if (__builtin_mul_overflow((uint64_t)numel,
                             (uint64_t)weft_st_dtype_size(dtype), &nbytes) ||
      nbytes > (uint64_t)INT64_MAX)
    return WEFT_ERANGE;
  if (nbytes > 0 && !data) return WEFT_EINVAL;
  if (w->n == w->cap) {
    if (w->cap > INT32_MAX / 4) return WEFT_ERANGE;
    int32_t nc = w->cap ? w->cap * 2 : 16;
    wtensor *nt = realloc(w->t, (size_t)nc * sizeof *nt);
    if (!nt) return WEFT_ENOMEM;
    w->t = nt;
    int32_t *tab = malloc((size_t)nc * 2 * sizeof *tab);
    if (!tab) return WEFT_ENOMEM;
    free(w->table);
    w->table = tab;
    w->cap = nc;
    memset(tab, 0xff, (size_t)nc * 2 * sizeof *tab);
    uint32_t mask = (uint32_t)nc * 2 - 1;
    for (int32_t i = 0; i < w->n; i++) {
      uint32_t h = (uint32_t)hash_key(w->t[i].key) & mask;
      while (tab[h] >= 0)
        h = (h + 1) & mask;
      tab[h] = i;
    }
  }
  /* checkpoints and LoRA merges add thousands of keys: hash, not scan */
  uint32_t mask = (uint32_t)w->cap * 2 - 1;
  uint32_t h = (uint32_t)hash_key(key) & mask;
  for (; w->table[h] >= 0; h = (h + 1) & mask)
    if (strcmp(w->t[w->table[h]].key, key) == 0) return WEFT_EDUP;
  wtensor *t = &w->t[w->n];
  memset(t, 0, sizeof *t);
  t->key = strdup(key);
  if (!t->key) return WEFT_ENOMEM;
  t->dtype = dtype;
  t->ndim = ndim;
  for (int32_t i = 0; i < ndim; i++)
    t->shape[i] = shape[i];
  t->nbytes = nbytes;
  t->data = data;
  w->table[h] = w->n++;
  return 0;
}

int weft_st_writer_meta(weft_st_writer *w, const char *key, const char *value) {
  if (!w || !key || !value || !valid_json_string(key) ||
      !valid_json_string(value))
    return WEFT_EINVAL;
  for (int32_t i = 0; i < w->n_meta; i++)
    if (strcmp(w->meta[i].key, key) == 0) {
      char *v = strdup(value);
      if (!v) return WEFT_ENOMEM;
      free(w->meta[i].value);
      w->meta[i].value = v;
      return 0;
    }
  if (w->n_meta == w->cap_meta) {
    int32_t nc = w->cap_meta ? w->cap_meta * 2 : 8;
    meta_entry *nm = realloc(w->meta, (size_t)nc * sizeof *nm);
    if (!nm) return WEFT_ENOMEM;
    w->meta = nm;
    w->cap_meta = nc;
  }
  char *k = strdup(key), *v = strdup(value);
  if (!k || !v) {
    free(k);
    free(v);
    return WEFT_ENOMEM;
  }
  w->meta[w->n_meta++] = (meta_entry){k, v};
  return 0;
}

/* The Python library's order: larger dtypes first (so every tensor stays
 * aligned to its element size once the header is padded to 8), then key. */
static int cmp_wtensor(const void *a, const void *b) {
  const wtensor *x = *(const wtensor *const *)a,
                *y = *(const wtensor *const *)b;
  size_t sx = weft_st_dtype_size(x->dtype), sy = weft_st_dtype_size(y->dtype);
  if (sx != sy) return sx > sy ? -1 : 1;
  return strcmp(x->key, y->key);
}

static int write_all(int fd, const void *buf, size_t n) {
  const uint8_t *p = buf;
  while (n > 0) {
    ssize_t k = write(fd, p, n > (1u << 30) ? (1u << 30) : n);
    if (k < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

/* Builds the padded header; returns a malloc'd buffer (caller frees) and its
 * length, or NULL when out of memory. order[] is the data order. */
static char *build_header(const weft_st_writer *w, wtensor **order,
                          size_t *len) {
  json_t *root = json_object();
  if (!root) return NULL;
  char *text = NULL;
  if (w->n_meta) {
    json_t *m = json_object();
    if (!m || json_object_set_new(root, "__metadata__", m)) goto out;
    for (int32_t i = 0; i < w->n_meta; i++)
      if (json_object_set_new(m, w->meta[i].key, json_string(w->meta[i].value)))
        goto out;
  }
  uint64_t off = 0;
  for (int32_t i = 0; i < w->n; i++) {
    const wtensor *t = order[i];
    json_t *shape = json_array();
    json_t *e = json_pack(
        "{s:s, s:o, s:[I, I]}", "dtype", weft_st_dtype_name(t->dtype), "shape",
        shape, "data_offsets", (json_int_t)off, (json_int_t)(off + t->nbytes));
    if (!e) goto out; /* json_pack released shape */
    if (json_object_set_new(root, t->key, e)) goto out;
    for (int32_t d = 0; d < t->ndim; d++)
      if (json_array_append_new(shape, json_integer(t->shape[d]))) goto out;
    off += t->nbytes;
  }
  char *s = json_dumps(root, JSON_COMPACT);
  if (!s) goto out;
  size_t n = strlen(s), padded = (n + 7) & ~(size_t)7;
  text = malloc(padded);
  if (text) {
    memcpy(text, s, n);
    memset(text + n, ' ', padded - n);
    *len = padded;
  }
  free(s);
out:
  json_decref(root);
  return text;
}

int weft_st_writer_save(weft_st_writer *w, const char *path, char *err,
                        size_t errlen) {
  if (!w || !path) return WEFT_EINVAL;
  int rc = 0, fd = -1;
  char *tmp = NULL, *header = NULL, *dir = NULL;
  wtensor **order = malloc((size_t)(w->n ? w->n : 1) * sizeof *order);
  if (!order) goto nomem;
  for (int32_t i = 0; i < w->n; i++)
    order[i] = &w->t[i];
  qsort(order, (size_t)w->n, sizeof *order, cmp_wtensor);
  uint64_t total = 0;
  for (int32_t i = 0; i < w->n; i++)
    if (__builtin_add_overflow(total, order[i]->nbytes, &total) ||
        total > (uint64_t)INT64_MAX) {
      seterr(err, errlen, "%s: tensors total more than 2^63 bytes", path);
      rc = WEFT_ERANGE;
      goto out;
    }
  size_t hlen = 0;
  header = build_header(w, order, &hlen);
  if (!header) goto nomem;

  /* The temporary lives beside the target so rename() stays on one file
   * system and is atomic; its name starts with '.' so globs skip it. */
  const char *slash = strrchr(path, '/');
  size_t dlen = slash ? (size_t)(slash - path) : 0;
  const char *base = slash ? slash + 1 : path;
  dir = slash ? strndup(path, dlen ? dlen : 1) : strdup(".");
  size_t tlen = dlen + strlen(base) + 32;
  tmp = malloc(tlen);
  if (!dir || !tmp) goto nomem;
  snprintf(tmp, tlen, "%.*s%s.%s.tmp-XXXXXX", (int)dlen, path, slash ? "/" : "",
           base);
  fd = mkstemp(tmp);
  if (fd < 0) {
    int e = errno;
    seterr(err, errlen, "%s: cannot create a temporary file in '%s': %s", path,
           dir, strerror(e));
    rc = e == ENOENT || e == ENOTDIR ? WEFT_ENOENT : WEFT_EIO;
    free(tmp);
    tmp = NULL; /* nothing to unlink */
    goto out;
  }
  /* mkstemp makes 0600; give the file the mode the target had, or the
   * usual 0644 (reading the umask would change process-wide state). */
  struct stat st;
  fchmod(fd, stat(path, &st) == 0 ? (st.st_mode & 07777) : 0644);

  uint8_t len8[8];
  for (int i = 0; i < 8; i++)
    len8[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
  if (write_all(fd, len8, 8) || write_all(fd, header, hlen)) goto ioerr;
  for (int32_t i = 0; i < w->n; i++)
    if (order[i]->nbytes &&
        write_all(fd, order[i]->data, (size_t)order[i]->nbytes))
      goto ioerr;
  if (fsync(fd) != 0) goto ioerr;
  if (close(fd) != 0) {
    fd = -1;
    goto ioerr;
  }
  fd = -1;
  if (rename(tmp, path) != 0) {
    int e = errno;
    seterr(err, errlen, "%s: cannot rename '%s' over it: %s", path, tmp,
           strerror(e));
    rc = WEFT_EIO;
    goto out;
  }
  free(tmp);
  tmp = NULL;
  /* Make the rename itself durable; failure here loses nothing written. */
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  goto out;

ioerr:
  seterr(err, errlen, "%s: cannot write '%s': %s", path, tmp, strerror(errno));
  rc = WEFT_EIO;
  goto out;
nomem:
  seterr(err, errlen, "%s: out of memory", path);
  rc = WEFT_ENOMEM;
out:
  if (fd >= 0) close(fd);
  if (tmp) unlink(tmp);
  free(tmp);
  free(dir);
  free(header);
  free(order);
  return rc;
}
