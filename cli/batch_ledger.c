/* batch_ledger.c - the batch's record of finished jobs (OUTDIR/.weft-ledger
 * .jsonl, one JSON object per line, appended under a lock and fsynced), and
 * the file helpers batch needs: hashing, mkdir -p, rm -rf, fsync of a
 * directory. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "batch.h"

/* ---- files -------------------------------------------------------------- */

static void hex128(XXH128_hash_t h, char hex[33]) {
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, h);
  for (int i = 0; i < 16; i++)
    snprintf(hex + 2 * i, 3, "%02x", c.digest[i]);
}

void weft__batch_hash_hex(const void *data, size_t n, char hex[33]) {
  hex128(XXH3_128bits(data, n), hex);
}

int weft__batch_file_hash(const char *path, int64_t *size, char hex[33],
                          char *err, size_t errlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return weft__batch_fail(err, errlen,
                            errno == ENOENT ? WEFT_ENOENT : WEFT_EIO, "%s: %s",
                            path, strerror(errno));
  XXH3_state_t *st = XXH3_createState();
  char *buf = malloc(1 << 20);
  if (!st || !buf) {
    XXH3_freeState(st);
    free(buf);
    close(fd);
    return weft__batch_fail(err, errlen, WEFT_ENOMEM, "out of memory");
  }
  XXH3_128bits_reset(st);
  int64_t total = 0;
  int rc = 0;
  for (;;) {
    ssize_t k = read(fd, buf, 1 << 20);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) {
      rc = weft__batch_fail(err, errlen, WEFT_EIO, "%s: %s", path,
                            strerror(errno));
      break;
    }
    if (k == 0) break;
    XXH3_128bits_update(st, buf, (size_t)k);
    total += k;
  }
  if (!rc) {
    hex128(XXH3_128bits_digest(st), hex);
    *size = total;
  }
  XXH3_freeState(st);
  free(buf);
  close(fd);
  return rc;
}

int weft__batch_mkdirs(const char *path, char *err, size_t errlen) {
  char *p = strdup(path);
  if (!p) return weft__batch_fail(err, errlen, WEFT_ENOMEM, "out of memory");
  int rc = 0;
  for (char *s = p + 1;; s++) {
    if (*s != '/' && *s) continue;
    char c = *s;
    *s = 0;
    struct stat st;
    if (mkdir(p, 0777) && errno != EEXIST) {
      rc = weft__batch_fail(err, errlen, WEFT_EIO,
                            "cannot create directory %s: %s", p,
                            strerror(errno));
      break;
    }
    if (stat(p, &st) || !S_ISDIR(st.st_mode)) {
      rc = weft__batch_fail(err, errlen, WEFT_EIO, "%s: not a directory", p);
      break;
    }
    *s = c;
    if (!c) break;
  }
  free(p);
  return rc;
}

static int rm_one(const char *path, const struct stat *st, int flag,
                  struct FTW *ftw) {
  (void)st, (void)ftw;
  if (flag == FTW_DP || flag == FTW_D)
    rmdir(path);
  else
    unlink(path);
  return 0;
}

int weft__batch_rmtree(const char *path) {
  struct stat st;
  if (lstat(path, &st)) return errno == ENOENT ? 0 : WEFT_EIO;
  nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  return lstat(path, &st) == 0 ? WEFT_EIO : 0;
}

int weft__batch_fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return WEFT_EIO;
  int r = fsync(fd);
  close(fd);
  return r ? WEFT_EIO : 0;
}

/* ---- the ledger --------------------------------------------------------- */

static int by_key_then_seq(const void *a, const void *b) {
  const weft__ledger_entry *x = a, *y = b;
  int c = strcmp(x->key, y->key);
  if (c) return c;
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static bool hex32(const char *s) {
  if (!s || strlen(s) != 32) return false;
  for (int i = 0; i < 32; i++)
    if (!strchr("0123456789abcdef", s[i])) return false;
  return true;
}

/* One line into an entry; false when it is not one weft wrote. */
static bool read_entry(const char *s, size_t n, weft__ledger_entry *e) {
  json_t *o = json_loadb(s, n, 0, NULL);
  if (!json_is_object(o)) {
    json_decref(o);
    return false;
  }
  const char *key = json_string_value(json_object_get(o, "key"));
  const char *status = json_string_value(json_object_get(o, "status"));
  json_t *job = json_object_get(o, "job");
  bool good = hex32(key) && status && json_is_integer(job);
  if (good) {
    memset(e, 0, sizeof *e);
    memcpy(e->key, key, 33);
    e->job = json_integer_value(job);
    e->ok = !strcmp(status, "ok");
    const char *out = json_string_value(json_object_get(o, "output"));
    const char *hash = json_string_value(json_object_get(o, "xxh128"));
    json_t *size = json_object_get(o, "size");
    if (e->ok && (!out || !hex32(hash) || !json_is_integer(size)))
      good = false;
    else if (e->ok) {
      memcpy(e->hash, hash, 33);
      e->size = json_integer_value(size);
      good = (e->output = strdup(out)) != NULL;
    }
  }
  json_decref(o);
  return good;
}

int weft__ledger_open(const char *dir, weft__ledger *l, char *err,
                      size_t errlen) {
  memset(l, 0, sizeof *l);
  l->fd = -1;
  size_t n = strlen(dir) + sizeof WEFT__LEDGER_NAME + 2;
  if (!(l->path = malloc(n)))
    return weft__batch_fail(err, errlen, WEFT_ENOMEM, "out of memory");
  snprintf(l->path, n, "%s/%s", dir, WEFT__LEDGER_NAME);
  l->fd = open(l->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
  if (l->fd < 0) {
    int r = weft__batch_fail(err, errlen, WEFT_EIO,
                             "%s: cannot open the ledger: %s", l->path,
                             strerror(errno));
    weft__ledger_close(l);
    return r;
  }
  FILE *f = fopen(l->path, "rb");
  if (!f) {
    int r = weft__batch_fail(err, errlen, WEFT_EIO, "%s: %s", l->path,
                             strerror(errno));
    weft__ledger_close(l);
    return r;
  }
  char *line = NULL;
  size_t cap = 0;
  ssize_t k;
  int cap_e = 0, lineno = 0;
  int rc = 0;
  while ((k = getline(&line, &cap, f)) >= 0) {
    lineno++;
    size_t len = (size_t)k;
    while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
      len--;
    if (!len) continue;
    if (l->n == cap_e) {
      int c = cap_e ? cap_e * 2 : 64;
      weft__ledger_entry *ne = realloc(l->e, (size_t)c * sizeof *ne);
      if (!ne) {
        rc = weft__batch_fail(err, errlen, WEFT_ENOMEM, "out of memory");
        break;
      }
      l->e = ne;
      cap_e = c;
    }
    if (!read_entry(line, len, &l->e[l->n])) {
      if (!l->n_bad++) l->first_bad = lineno;
      continue;
    }
    l->e[l->n].seq = lineno;
    l->n++;
  }
  free(line);
  fclose(f);
  if (rc) {
    weft__ledger_close(l);
    return rc;
  }
  /* sorted by key, the last line of each key kept */
  if (l->n > 1) qsort(l->e, (size_t)l->n, sizeof *l->e, by_key_then_seq);
  int j = 0;
  for (int i = 0; i < l->n; i++) {
    if (i + 1 < l->n && !strcmp(l->e[i].key, l->e[i + 1].key)) {
      free(l->e[i].output);
      continue;
    }
    l->e[j++] = l->e[i];
  }
  l->n = j;
  return 0;
}

void weft__ledger_close(weft__ledger *l) {
  if (l->fd >= 0) close(l->fd);
  for (int i = 0; i < l->n; i++)
    free(l->e[i].output);
  free(l->e);
  free(l->path);
  memset(l, 0, sizeof *l);
  l->fd = -1;
}

const weft__ledger_entry *weft__ledger_find(const weft__ledger *l,
                                            const char *key) {
  int lo = 0, hi = l->n - 1;
  while (lo <= hi) {
    int mid = lo + (hi - lo) / 2;
    int c = strcmp(l->e[mid].key, key);
    if (!c) return &l->e[mid];
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid - 1;
  }
  return NULL;
}

static int write_all(int fd, const char *s, size_t n) {
  while (n) {
    ssize_t k = write(fd, s, n);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return -1;
    s += k;
    n -= (size_t)k;
  }
  return 0;
}

int weft__ledger_append(weft__ledger *l, const char *line, char *err,
                        size_t errlen) {
  /* a lock that cannot be had (some network file systems) is not a reason
   * to stop: each line still goes out in one write */
  bool locked = flock(l->fd, LOCK_EX) == 0;
  size_t n = strlen(line);
  char *buf = malloc(n + 2);
  if (!buf) {
    if (locked) flock(l->fd, LOCK_UN);
    return weft__batch_fail(err, errlen, WEFT_ENOMEM, "out of memory");
  }
  /* a line cut short by a crash must not swallow this one */
  size_t k = 0;
  struct stat st;
  char last = '\n';
  if (!fstat(l->fd, &st) && st.st_size > 0 &&
      pread(l->fd, &last, 1, st.st_size - 1) == 1 && last != '\n')
    buf[k++] = '\n';
  memcpy(buf + k, line, n);
  k += n;
  buf[k++] = '\n';
  int r = write_all(l->fd, buf, k);
  if (!r) r = fsync(l->fd);
  int e = errno;
  free(buf);
  if (locked) flock(l->fd, LOCK_UN);
  if (r)
    return weft__batch_fail(err, errlen, WEFT_EIO, "%s: cannot append: %s",
                            l->path, strerror(e));
  return 0;
}
