/* tokenizer.c - CLIP BPE tokenizer: vocabulary loading, text normalisation
 * (NFC, white space, lower-case), pre-tokenisation and byte-level BPE, giving
 * the ids of transformers' fast CLIPTokenizer. */
#define WEFT_CLIP_TOK_INTERNAL
#include "tokenizer.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* CLIP uses merges[1 : 49152 - 256 - 2 + 1] of the file (line 0 is a
 * header): 256 byte tokens + 256 "</w>" tokens + 48894 merges + 2 specials
 * = 49408. */
#define N_MERGES (49152 - 256 - 2)
#define N_BASE 512

struct weft_clip_tok {
  /* Token strings (CLIP's byte-level spelling), NUL-terminated, in one
   * block: token id i starts at text + tok_off[i]. */
  char *text;
  uint32_t tok_off[WEFT_CLIP_VOCAB_SIZE];
  /* Byte b as the first/only symbol of a word piece: byte_id[b]; as the
   * last symbol (with "</w>"): byte_id[b] + 256. */
  int32_t byte_id[256];
  /* Merge table: open addressing on (left id, right id). */
  struct merge {
    uint32_t key; /* left * VOCAB + right + 1; 0 = empty */
    int32_t rank, new_id;
  } * merges;
  size_t mcap; /* power of two */
};

static uint32_t pair_key(int32_t a, int32_t b) {
  return (uint32_t)a * WEFT_CLIP_VOCAB_SIZE + (uint32_t)b + 1;
}

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || !errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

int weft__cps_push(weft__cps *a, uint32_t cp) {
  if (a->n == a->cap) {
    size_t cap = a->cap ? a->cap * 2 : 64;
    uint32_t *v = realloc(a->v, cap * sizeof *v);
    if (!v) return WEFT_ENOMEM;
    a->v = v;
    a->cap = cap;
  }
  a->v[a->n++] = cp;
  return 0;
}

static int ids_push(weft__ids *a, int32_t id) {
  if (a->n == a->cap) {
    size_t cap = a->cap ? a->cap * 2 : 64;
    int32_t *v = realloc(a->v, cap * sizeof *v);
    if (!v) return WEFT_ENOMEM;
    a->v = v;
    a->cap = cap;
  }
  a->v[a->n++] = id;
  return 0;
}

int weft__cps_from_utf8(weft__cps *a, const char *str, size_t len) {
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0;
  while (i < len) {
    unsigned c = s[i];
    uint32_t cp;
    size_t need;
    uint32_t min;
    if (c < 0x80) {
      cp = c, need = 0, min = 0;
    } else if (c >= 0xC2 && c <= 0xDF) {
      cp = c & 0x1F, need = 1, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
      cp = c & 0x0F, need = 2, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
      cp = c & 0x07, need = 3, min = 0x10000;
    } else {
      if (weft__cps_push(a, 0xFFFD)) return WEFT_ENOMEM;
      i++;
      continue;
    }
    /* Consume continuation bytes while they can still form a valid
     * sequence; an invalid prefix becomes one U+FFFD (the "maximal subpart"
     * rule Python's decoder follows). */
    size_t k = 1;
    int ok = 1;
    for (; k <= need; k++) {
      if (i + k >= len || (s[i + k] & 0xC0) != 0x80) {
        ok = 0;
        break;
      }
      uint32_t next = (cp << 6) | (s[i + k] & 0x3F);
      /* reject overlongs, surrogates and > U+10FFFF as early as possible */
      if (k == 1) {
        if ((c == 0xE0 && s[i + 1] < 0xA0) || (c == 0xED && s[i + 1] > 0x9F) ||
            (c == 0xF0 && s[i + 1] < 0x90) || (c == 0xF4 && s[i + 1] > 0x8F)) {
          ok = 0;
          break;
        }
      }
      cp = next;
    }
    if (!ok || cp < min) {
      if (weft__cps_push(a, 0xFFFD)) return WEFT_ENOMEM;
      i += k;
      continue;
    }
    if (weft__cps_push(a, cp)) return WEFT_ENOMEM;
    i += need + 1;
  }
  return 0;
}

static size_t utf8_put(uint32_t cp, unsigned char *o) {
  if (cp < 0x80) {
    o[0] = (unsigned char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (unsigned char)(0xC0 | (cp >> 6));
    o[1] = (unsigned char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (unsigned char)(0xE0 | (cp >> 12));
    o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (unsigned char)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (unsigned char)(0xF0 | (cp >> 18));
  o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
  o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
  o[3] = (unsigned char)(0x80 | (cp & 0x3F));
  return 4;
}

/* ------------------------------------------------------------------ */
/* Unicode lookups over the generated tables                          */

static bool in_ranges(const weft__uni_range *r, size_t n, uint32_t cp) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (cp < r[mid].lo)
      hi = mid;
    else if (cp > r[mid].hi)
      lo = mid + 1;
    else
      return true;
  }
  return false;
}

static bool is_letter(uint32_t cp) {
  if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
  return in_ranges(weft__uni_letters, weft__uni_letters_n, cp);
}

static bool is_number(uint32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  return in_ranges(weft__uni_numbers, weft__uni_numbers_n, cp);
}

/* Unicode White_Space: Oniguruma's \s in the tokenizer's regexes. */
static bool is_white(uint32_t cp) {
  if (cp < 0x80) return cp == ' ' || (cp >= 0x9 && cp <= 0xD);
  return in_ranges(weft__uni_white_space, weft__uni_white_space_n, cp);
}

bool weft__uni_py_isspace(uint32_t cp) {
  return in_ranges(weft__uni_py_space, weft__uni_py_space_n, cp);
}

int weft__uni_decimal(uint32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9' ? (int)(cp - '0') : -1;
  /* Every decimal digit is in a run of ten starting at its zero. */
  size_t lo = 0, hi = weft__uni_digit_zero_n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (weft__uni_digit_zero[mid] <= cp)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo == 0) return -1;
  uint32_t z = weft__uni_digit_zero[lo - 1];
  return cp - z < 10 ? (int)(cp - z) : -1;
}

/* Per-character lower-case; writes 1 or 2 code points. */
static size_t to_lower(uint32_t cp, uint32_t out[2]) {
  if (cp < 0x80) {
    out[0] = (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
    return 1;
  }
  if (cp == 0x130) { /* LATIN CAPITAL I WITH DOT ABOVE -> i + U+0307 */
    out[0] = 'i';
    out[1] = 0x307;
    return 2;
  }
  size_t lo = 0, hi = weft__uni_lower_n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    const weft__uni_case_run *r = &weft__uni_lower[mid];
    if (cp < r->lo)
      hi = mid;
    else if (cp > r->hi)
      lo = mid + 1;
    else {
      out[0] = (cp - r->lo) % r->stride == 0 ? (uint32_t)(cp + r->delta) : cp;
      return 1;
    }
  }
  out[0] = cp;
  return 1;
}

static uint32_t ccc_of(uint32_t cp) {
  if (cp < 0x300) return 0;
  size_t lo = 0, hi = weft__uni_ccc_n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (cp < weft__uni_ccc[mid].lo)
      hi = mid;
    else if (cp > weft__uni_ccc[mid].hi)
      lo = mid + 1;
    else
      return weft__uni_ccc[mid].ccc;
  }
  return 0;
}

static const weft__uni_pair *decomp_of(uint32_t cp) {
  if (cp < 0xC0) return NULL;
  size_t lo = 0, hi = weft__uni_decomp_n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (cp < weft__uni_decomp[mid].a)
      hi = mid;
    else if (cp > weft__uni_decomp[mid].a)
      lo = mid + 1;
    else
      return &weft__uni_decomp[mid];
  }
  return NULL;
}

/* Hangul syllables decompose and compose algorithmically. */
enum {
  H_SBASE = 0xAC00,
  H_LBASE = 0x1100,
  H_VBASE = 0x1161,
  H_TBASE = 0x11A7,
  H_LCOUNT = 19,
  H_VCOUNT = 21,
  H_TCOUNT = 28,
  H_NCOUNT = H_VCOUNT * H_TCOUNT,
  H_SCOUNT = H_LCOUNT * H_NCOUNT
};

static uint32_t compose_pair(uint32_t a, uint32_t b) {
  if (a >= H_LBASE && a < H_LBASE + H_LCOUNT && b >= H_VBASE &&
      b < H_VBASE + H_VCOUNT)
    return H_SBASE + ((a - H_LBASE) * H_VCOUNT + (b - H_VBASE)) * H_TCOUNT;
  if (a >= H_SBASE && a < H_SBASE + H_SCOUNT && (a - H_SBASE) % H_TCOUNT == 0 &&
      b > H_TBASE && b < H_TBASE + H_TCOUNT)
    return a + (b - H_TBASE);
  size_t lo = 0, hi = weft__uni_comp_n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    const weft__uni_pair *p = &weft__uni_comp[mid];
    if (a < p->a || (a == p->a && b < p->b))
      hi = mid;
    else if (a > p->a || b > p->b)
      lo = mid + 1;
    else
      return p->c;
  }
  return 0;
}

static int decompose(uint32_t cp, weft__cps *out) {
  if (cp >= H_SBASE && cp < H_SBASE + H_SCOUNT) {
    uint32_t s = cp - H_SBASE;
    if (weft__cps_push(out, H_LBASE + s / H_NCOUNT) ||
        weft__cps_push(out, H_VBASE + (s % H_NCOUNT) / H_TCOUNT))
      return WEFT_ENOMEM;
    if (s % H_TCOUNT && weft__cps_push(out, H_TBASE + s % H_TCOUNT))
      return WEFT_ENOMEM;
    return 0;
  }
  const weft__uni_pair *d = decomp_of(cp);
  if (!d) return weft__cps_push(out, cp);
  int rc = decompose(d->b, out);
  if (rc) return rc;
  return d->c ? decompose(d->c, out) : 0;
}

/* NFC of in[0..n) appended to out. */
static int nfc(const uint32_t *in, size_t n, weft__cps *out) {
  size_t start = out->n;
  bool simple = true;
  for (size_t i = 0; i < n; i++)
    if (in[i] >= 0x300) simple = false;
  if (simple) { /* below U+0300 nothing composes or reorders */
    for (size_t i = 0; i < n; i++)
      if (weft__cps_push(out, in[i])) return WEFT_ENOMEM;
    return 0;
  }
  for (size_t i = 0; i < n; i++)
    if (decompose(in[i], out)) return WEFT_ENOMEM;
  uint32_t *v = out->v + start;
  size_t m = out->n - start;
  /* Canonical order: stable sort of each run of non-starters by class. */
  for (size_t i = 1; i < m; i++) {
    uint32_t c = v[i], cc = ccc_of(c);
    if (!cc) continue;
    size_t j = i;
    while (j > 0) {
      uint32_t pc = ccc_of(v[j - 1]);
      if (!pc || pc <= cc) break;
      v[j] = v[j - 1];
      j--;
    }
    v[j] = c;
  }
  /* Canonical composition. */
  size_t w = 0;         /* write index */
  long starter = -1;    /* index (in the output so far) of the last starter */
  uint32_t last_cc = 0; /* class of the last character written */
  for (size_t i = 0; i < m; i++) {
    uint32_t c = v[i], cc = ccc_of(c);
    if (starter >= 0) {
      bool blocked =
          (size_t)starter != w - 1 && (last_cc == 0 || last_cc >= cc);
      if (!blocked) {
        uint32_t comp = compose_pair(v[starter], c);
        if (comp) {
          v[starter] = comp;
          continue;
        }
      }
    }
    if (cc == 0) starter = (long)w;
    last_cc = cc;
    v[w++] = c;
  }
  out->n = start + w;
  return 0;
}

/* The tokenizer's normaliser on in[0..n): NFC, White_Space runs -> ' ',
 * lower-case each character. */
static int normalize(const uint32_t *in, size_t n, weft__cps *tmp,
                     weft__cps *out) {
  tmp->n = 0;
  if (nfc(in, n, tmp)) return WEFT_ENOMEM;
  for (size_t i = 0; i < tmp->n; i++) {
    uint32_t c = tmp->v[i];
    if (is_white(c)) {
      while (i + 1 < tmp->n && is_white(tmp->v[i + 1]))
        i++;
      if (weft__cps_push(out, ' ')) return WEFT_ENOMEM;
      continue;
    }
    uint32_t lo[2];
    size_t k = to_lower(c, lo);
    for (size_t j = 0; j < k; j++)
      if (weft__cps_push(out, lo[j])) return WEFT_ENOMEM;
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* Vocabulary                                                          */

/* CLIP's bytes_to_unicode: printable Latin-1 bytes map to themselves, the
 * others to U+0100 upwards; token id b (b < 256) is the b-th character of
 * that table in CLIP's order (printables first). */
static void byte_table(uint32_t byte_cp[256], int32_t byte_id[256]) {
  int order[256], n = 0;
  bool printable[256] = {false};
  for (int b = '!'; b <= '~'; b++)
    printable[b] = true;
  for (int b = 0xA1; b <= 0xAC; b++)
    printable[b] = true;
  for (int b = 0xAE; b <= 0xFF; b++)
    printable[b] = true;
  for (int b = 0; b < 256; b++)
    if (printable[b]) order[n++] = b;
  int extra = 0;
  for (int b = 0; b < 256; b++) {
    if (printable[b])
      byte_cp[b] = (uint32_t)b;
    else {
      byte_cp[b] = 256 + (uint32_t)extra++;
      order[n++] = b;
    }
  }
  for (int i = 0; i < 256; i++)
    byte_id[order[i]] = i;
}

static uint64_t hash_bytes(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (size_t i = 0; i < n; i++) {
    h ^= (unsigned char)s[i];
    h *= 1099511628211ull;
  }
  return h;
}

static uint64_t hash_u64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

/* Read lines 1..N_MERGES of the gz file (stopping early: the file has
 * 262k lines, CLIP uses the first 48895).  *buf receives the raw text and
 * line offsets; the caller frees *buf. */
static int read_merges(const char *path, char **buf, size_t *lines_off,
                       char *err, size_t errlen) {
  gzFile gz = gzopen(path, "rb");
  if (!gz) {
    set_err(err, errlen, "%s: cannot open: %s", path,
            errno ? strerror(errno) : "out of memory");
    return errno == ENOENT ? WEFT_ENOENT : WEFT_EIO;
  }
  size_t cap = 1 << 20, len = 0, line = 0, line_start = 0;
  char *b = malloc(cap);
  if (!b) {
    gzclose(gz);
    return WEFT_ENOMEM;
  }
  int rc = 0;
  while (line <= N_MERGES) {
    if (cap - len < 65536) {
      char *nb = realloc(b, cap * 2);
      if (!nb) {
        rc = WEFT_ENOMEM;
        break;
      }
      b = nb;
      cap *= 2;
    }
    int got = gzread(gz, b + len, 65536);
    if (got < 0) {
      int zerr;
      const char *msg = gzerror(gz, &zerr);
      set_err(err, errlen, "%s: not a readable gzip file: %s", path, msg);
      rc = WEFT_EFORMAT;
      break;
    }
    if (got == 0) {
      set_err(err, errlen,
              "%s: has only %zu lines; CLIP's merge list needs %d (is this "
              "bpe_simple_vocab_16e6.txt.gz?)",
              path, line, N_MERGES + 1);
      rc = WEFT_EFORMAT;
      break;
    }
    size_t end = len + (size_t)got;
    for (size_t i = len; i < end && line <= N_MERGES; i++) {
      if (b[i] == '\n') {
        b[i] = '\0';
        lines_off[line++] = line_start;
        line_start = i + 1;
      }
    }
    len = end;
  }
  gzclose(gz);
  if (rc) {
    free(b);
    return rc;
  }
  *buf = b;
  return 0;
}

/* String -> id table used while loading: open addressing, each slot an id
 * and the hash's top bits (compared before the strings). */
typedef struct {
  struct str_slot {
    int32_t id; /* -1: empty */
    uint32_t tag;
  } * slot;
  size_t cap;
} str_index;

static int32_t vocab_find(const weft_clip_tok *t, const str_index *x,
                          const char *s, size_t n) {
  uint64_t h = hash_u64(hash_bytes(s, n));
  uint32_t tag = (uint32_t)(h >> 32);
  for (size_t i = h & (x->cap - 1); x->slot[i].id >= 0;
       i = (i + 1) & (x->cap - 1)) {
    if (x->slot[i].tag != tag) continue;
    const char *cand = t->text + t->tok_off[x->slot[i].id];
    if (strncmp(cand, s, n) == 0 && cand[n] == '\0') return x->slot[i].id;
  }
  return -1;
}

/* Insert id under its string; a later id of the same string replaces the
 * earlier one (CLIP builds a dict from the list).  Returns true when the
 * string was there already. */
static bool vocab_insert(const weft_clip_tok *t, str_index *x, int32_t id) {
  const char *s = t->text + t->tok_off[id];
  uint64_t h = hash_u64(hash_bytes(s, strlen(s)));
  uint32_t tag = (uint32_t)(h >> 32);
  size_t i = h & (x->cap - 1);
  for (; x->slot[i].id >= 0; i = (i + 1) & (x->cap - 1)) {
    if (x->slot[i].tag == tag &&
        strcmp(t->text + t->tok_off[x->slot[i].id], s) == 0) {
      x->slot[i].id = id;
      return true;
    }
  }
  x->slot[i].id = id;
  x->slot[i].tag = tag;
  return false;
}

int weft_clip_tok_load(const char *path, weft_clip_tok **out, char *err,
                       size_t errlen) {
  *out = NULL;
  if (!path) {
    set_err(err, errlen, "no vocabulary path given");
    return WEFT_EINVAL;
  }
  weft_clip_tok *t = calloc(1, sizeof *t);
  size_t *lines = malloc((N_MERGES + 1) * sizeof *lines);
  char *raw = NULL;
  str_index idx = {NULL, (size_t)1 << 17};
  int rc = WEFT_ENOMEM;
  if (!t || !lines) goto fail;
  rc = read_merges(path, &raw, lines, err, errlen);
  if (rc) goto fail;

  /* Token strings: 256 byte characters, the same with "</w>", the merges
   * joined, then the two specials. */
  uint32_t byte_cp[256];
  byte_table(byte_cp, t->byte_id);
  size_t text_cap = 256 * 2 * 10 + 64;
  for (int i = 1; i <= N_MERGES; i++)
    text_cap += strlen(raw + lines[i]) + 1;
  t->text = malloc(text_cap);
  if (!t->text) goto fail;
  size_t pos = 0;
  uint32_t by_id[256];
  for (int b = 0; b < 256; b++)
    by_id[t->byte_id[b]] = byte_cp[b];
  for (int w = 0; w < 2; w++) {
    for (int i = 0; i < 256; i++) {
      t->tok_off[w * 256 + i] = (uint32_t)pos;
      pos += utf8_put(by_id[i], (unsigned char *)t->text + pos);
      if (w) {
        memcpy(t->text + pos, "</w>", 4);
        pos += 4;
      }
      t->text[pos++] = '\0';
    }
  }
  for (int i = 1; i <= N_MERGES; i++) {
    const char *line = raw + lines[i];
    const char *sp = strchr(line, ' ');
    if (!sp || sp == line || !sp[1] || strchr(sp + 1, ' ')) {
      set_err(err, errlen,
              "%s:%d: expected a merge \"LEFT RIGHT\", got \"%.40s\"", path,
              i + 1, line);
      rc = WEFT_EFORMAT;
      goto fail;
    }
    t->tok_off[N_BASE + i - 1] = (uint32_t)pos;
    memcpy(t->text + pos, line, (size_t)(sp - line));
    pos += (size_t)(sp - line);
    size_t rl = strlen(sp + 1);
    memcpy(t->text + pos, sp + 1, rl);
    pos += rl;
    t->text[pos++] = '\0';
  }
  static const char *const specials[2] = {"<|startoftext|>", "<|endoftext|>"};
  for (int i = 0; i < 2; i++) {
    t->tok_off[WEFT_CLIP_BOS + i] = (uint32_t)pos;
    size_t l = strlen(specials[i]);
    memcpy(t->text + pos, specials[i], l + 1);
    pos += l + 1;
  }

  /* String -> id, for resolving the merges' halves. */
  idx.slot = malloc(idx.cap * sizeof *idx.slot);
  if (!idx.slot) goto fail;
  memset(idx.slot, 0xff, idx.cap * sizeof *idx.slot);
  bool dups = false;
  for (int32_t id = 0; id < WEFT_CLIP_VOCAB_SIZE; id++)
    dups |= vocab_insert(t, &idx, id);

  t->mcap = 1 << 17;
  t->merges = calloc(t->mcap, sizeof *t->merges);
  if (!t->merges) goto fail;
  for (int i = 1; i <= N_MERGES; i++) {
    const char *line = raw + lines[i];
    const char *sp = strchr(line, ' ');
    int32_t a = vocab_find(t, &idx, line, (size_t)(sp - line));
    int32_t b = vocab_find(t, &idx, sp + 1, strlen(sp + 1));
    /* the merged token's id: its own unless a later entry repeats it */
    int32_t c = N_BASE + i - 1;
    if (dups) {
      const char *joined = t->text + t->tok_off[c];
      c = vocab_find(t, &idx, joined, strlen(joined));
    }
    if (a < 0 || b < 0 || c < 0) {
      set_err(err, errlen,
              "%s:%d: merge \"%.40s\" uses a token not in the "
              "vocabulary",
              path, i + 1, line);
      rc = WEFT_EFORMAT;
      goto fail;
    }
    uint32_t key = pair_key(a, b);
    size_t h = hash_u64(key) & (t->mcap - 1);
    while (t->merges[h].key && t->merges[h].key != key)
      h = (h + 1) & (t->mcap - 1);
    if (!t->merges[h].key) /* CLIP's list has each pair once */
      t->merges[h] = (struct merge){key, i - 1, c};
  }
  free(idx.slot);
  free(raw);
  free(lines);
  *out = t;
  return 0;

fail:
  if (rc == WEFT_ENOMEM) set_err(err, errlen, "%s: out of memory", path);
  free(idx.slot);
  free(raw);
  free(lines);
  weft_clip_tok_free(t);
  return rc;
}

void weft_clip_tok_free(weft_clip_tok *t) {
  if (!t) return;
  free(t->text);
  free(t->merges);
  free(t);
}

const char *weft_clip_tok_token(const weft_clip_tok *t, int32_t id) {
  if (!t || id < 0 || id >= WEFT_CLIP_VOCAB_SIZE) return NULL;
  return t->text + t->tok_off[id];
}

static bool merge_find(const weft_clip_tok *t, int32_t a, int32_t b,
                       int32_t *rank, int32_t *new_id) {
  uint32_t key = pair_key(a, b);
  size_t h = hash_u64(key) & (t->mcap - 1);
  while (t->merges[h].key) {
    if (t->merges[h].key == key) {
      *rank = t->merges[h].rank;
      *new_id = t->merges[h].new_id;
      return true;
    }
    h = (h + 1) & (t->mcap - 1);
  }
  return false;
}

/* ------------------------------------------------------------------ */
/* BPE                                                                 */

typedef struct {
  int32_t id;
  int32_t prev, next; /* -1 at the ends */
  bool alive;
} sym;

typedef struct {
  int32_t rank, pos;
} cand;

/* Scratch buffers of one encode call. */
typedef struct {
  sym *s;
  size_t s_cap;
  cand *h;
  size_t h_n, h_cap;
  weft__cps tmp, norm;
} scratch;

static bool cand_less(cand x, cand y) {
  return x.rank < y.rank || (x.rank == y.rank && x.pos < y.pos);
}

static int heap_push(scratch *sc, cand c) {
  if (sc->h_n == sc->h_cap) {
    size_t cap = sc->h_cap ? sc->h_cap * 2 : 64;
    cand *h = realloc(sc->h, cap * sizeof *h);
    if (!h) return WEFT_ENOMEM;
    sc->h = h;
    sc->h_cap = cap;
  }
  size_t i = sc->h_n++;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!cand_less(c, sc->h[p])) break;
    sc->h[i] = sc->h[p];
    i = p;
  }
  sc->h[i] = c;
  return 0;
}

static cand heap_pop(scratch *sc) {
  cand top = sc->h[0], last = sc->h[--sc->h_n];
  size_t i = 0, n = sc->h_n;
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    cand best = last;
    if (l < n && cand_less(sc->h[l], best)) m = l, best = sc->h[l];
    if (r < n && cand_less(sc->h[r], best)) m = r;
    if (m == i) break;
    sc->h[i] = sc->h[m];
    i = m;
  }
  if (n) sc->h[i] = last;
  return top;
}

static int push_pair(const weft_clip_tok *t, scratch *sc, int32_t pos) {
  int32_t nx = sc->s[pos].next, rank, nid;
  if (nx < 0) return 0;
  if (!merge_find(t, sc->s[pos].id, sc->s[nx].id, &rank, &nid)) return 0;
  return heap_push(sc, (cand){rank, pos});
}

/* BPE of one pre-tokenised word (bytes), appending ids.  Lowest-rank pair
 * first, leftmost on ties: the order of tokenizers' BPE and of CLIP's
 * SimpleTokenizer (they agree). */
static int bpe_word(const weft_clip_tok *t, scratch *sc, const unsigned char *w,
                    size_t n, weft__ids *out) {
  if (n == 0) return 0;
  if (n >= INT32_MAX) return WEFT_ERANGE; /* symbol links are int32 */
  if (n > sc->s_cap) {
    sym *s = realloc(sc->s, n * sizeof *s);
    if (!s) return WEFT_ENOMEM;
    sc->s = s;
    sc->s_cap = n;
  }
  for (size_t i = 0; i < n; i++) {
    sc->s[i].id = t->byte_id[w[i]] + (i + 1 == n ? 256 : 0);
    sc->s[i].prev = (int32_t)i - 1;
    sc->s[i].next = i + 1 < n ? (int32_t)i + 1 : -1;
    sc->s[i].alive = true;
  }
  sc->h_n = 0;
  for (size_t i = 0; i + 1 < n; i++)
    if (push_pair(t, sc, (int32_t)i)) return WEFT_ENOMEM;
  while (sc->h_n) {
    cand c = heap_pop(sc);
    sym *a = &sc->s[c.pos];
    if (!a->alive || a->next < 0) continue;
    sym *b = &sc->s[a->next];
    int32_t rank, nid;
    /* stale entry: the pair at this position changed since it was pushed */
    if (!merge_find(t, a->id, b->id, &rank, &nid) || rank != c.rank) continue;
    a->id = nid;
    b->alive = false;
    a->next = b->next;
    if (b->next >= 0) sc->s[b->next].prev = c.pos;
    if (a->prev >= 0 && push_pair(t, sc, a->prev)) return WEFT_ENOMEM;
    if (push_pair(t, sc, c.pos)) return WEFT_ENOMEM;
  }
  for (int32_t i = 0; i >= 0; i = sc->s[i].next)
    if (ids_push(out, sc->s[i].id)) return WEFT_ENOMEM;
  return 0;
}

/* ------------------------------------------------------------------ */
/* Pre-tokenisation                                                    */

static const uint32_t SOT[] = {'<', '|', 's', 't', 'a', 'r', 't', 'o',
                               'f', 't', 'e', 'x', 't', '|', '>'};
static const uint32_t EOT[] = {'<', '|', 'e', 'n', 'd', 'o', 'f',
                               't', 'e', 'x', 't', '|', '>'};

static bool match_at(const uint32_t *v, size_t n, size_t i, const uint32_t *p,
                     size_t pn) {
  if (n - i < pn) return false;
  for (size_t k = 0; k < pn; k++)
    if (v[i + k] != p[k]) return false;
  return true;
}

/* Length of the contraction ('s 't 're 've 'm 'll 'd) at v[i], or 0. */
static size_t contraction(const uint32_t *v, size_t n, size_t i) {
  if (v[i] != '\'' || i + 1 >= n) return 0;
  uint32_t a = v[i + 1];
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (i + 2 < n) {
    uint32_t b = v[i + 2];
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') ||
        (a == 'l' && b == 'l'))
      return 3;
  }
  return 0;
}

enum { C_WS, C_L, C_N, C_O };
static int cls(uint32_t cp) {
  if (is_letter(cp)) return C_L;
  if (is_number(cp)) return C_N;
  if (is_white(cp)) return C_WS;
  return C_O;
}

/* The byte-level step's GPT-2 regex inside one CLIP piece (which has no
 * white space): contraction | letters+ | numbers+ | others+.  It only
 * splits anything in a piece matched by CLIP's <|...|> alternatives. */
static int bytelevel_piece(const weft_clip_tok *t, scratch *sc,
                           const uint32_t *v, size_t n, weft__ids *out) {
  unsigned char buf[256];
  size_t i = 0;
  while (i < n) {
    size_t j = i + contraction(v, n, i);
    if (j == i) {
      int c = cls(v[i]);
      j = i + 1;
      while (j < n && cls(v[j]) == c)
        j++;
    }
    /* UTF-8 bytes of v[i..j) */
    unsigned char *w = buf;
    size_t wn = 0, need = (j - i) * 4;
    if (need > sizeof buf) {
      w = malloc(need);
      if (!w) return WEFT_ENOMEM;
    }
    for (size_t k = i; k < j; k++)
      wn += utf8_put(v[k], w + wn);
    int rc = bpe_word(t, sc, w, wn, out);
    if (w != buf) free(w);
    if (rc) return rc;
    i = j;
  }
  return 0;
}

/* CLIP's split regex over normalised text (no specials left in it). */
static int split_clip(const weft_clip_tok *t, scratch *sc, const uint32_t *v,
                      size_t n, weft__ids *out) {
  size_t i = 0;
  while (i < n) {
    size_t j;
    if (v[i] == '<' && match_at(v, n, i, SOT, 15))
      j = i + 15;
    else if (v[i] == '<' && match_at(v, n, i, EOT, 13))
      j = i + 13;
    else if ((j = i + contraction(v, n, i)) != i)
      ;
    else {
      int c = cls(v[i]);
      if (c == C_WS) {
        i++;
        continue;
      }
      j = i + 1;
      if (c != C_N)
        while (j < n && cls(v[j]) == c)
          j++;
    }
    int rc = bytelevel_piece(t, sc, v + i, j - i, out);
    if (rc) return rc;
    i = j;
  }
  return 0;
}

/* One stretch of raw text with no "<|endoftext|>" in it. */
static int encode_stretch(const weft_clip_tok *t, scratch *sc,
                          const uint32_t *in, size_t n, weft__ids *out) {
  sc->norm.n = 0;
  int rc = normalize(in, n, &sc->tmp, &sc->norm);
  if (rc) return rc;
  const uint32_t *v = sc->norm.v;
  size_t m = sc->norm.n, from = 0;
  for (size_t i = 0; i < m; i++) {
    if (v[i] == '<' && match_at(v, m, i, SOT, 15)) {
      if ((rc = split_clip(t, sc, v + from, i - from, out))) return rc;
      if ((rc = ids_push(out, WEFT_CLIP_BOS))) return rc;
      i += 14;
      from = i + 1;
    }
  }
  /* an empty rest adds nothing (and v may be NULL: no pointer arithmetic) */
  return m > from ? split_clip(t, sc, v + from, m - from, out) : 0;
}

int weft__clip_tok_encode_cps(const weft_clip_tok *t, const uint32_t *cps,
                              size_t n, weft__ids *out) {
  scratch sc = {0};
  int rc = 0;
  size_t from = 0;
  for (size_t i = 0; i < n && !rc; i++) {
    if (cps[i] == '<' && match_at(cps, n, i, EOT, 13)) {
      rc = encode_stretch(t, &sc, cps + from, i - from, out);
      if (!rc) rc = ids_push(out, WEFT_CLIP_EOS);
      i += 12;
      from = i + 1;
    }
  }
  if (!rc && n > from) rc = encode_stretch(t, &sc, cps + from, n - from, out);
  free(sc.s);
  free(sc.h);
  free(sc.tmp.v);
  free(sc.norm.v);
  return rc;
}

int weft_clip_tok_encode(const weft_clip_tok *t, const char *utf8, size_t len,
                         int32_t **ids, size_t *n) {
  *ids = NULL;
  *n = 0;
  weft__cps cps = {0};
  weft__ids out = {0};
  int rc = weft__cps_from_utf8(&cps, utf8, len);
  if (!rc) rc = weft__clip_tok_encode_cps(t, cps.v, cps.n, &out);
  free(cps.v);
  if (rc) {
    free(out.v);
    return rc;
  }
  *ids = out.v;
  *n = out.n;
  return 0;
}
