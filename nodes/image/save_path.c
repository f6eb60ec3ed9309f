/* save_path.c - SaveImage's prefix checks, counter scan and directories. */
#include "save_path.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "weft/error.h"

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || !errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* Appends s to out[*n..]; 0 or -1 when it does not fit. */
static int put(char *out, size_t outlen, size_t *n, const char *s, size_t len) {
  if (*n + len + 1 > outlen) return -1;
  memcpy(out + *n, s, len);
  *n += len;
  out[*n] = '\0';
  return 0;
}

int weft__prefix_expand(const char *prefix, int64_t width, int64_t height,
                        const struct tm *now, char *out, size_t outlen) {
  if (!outlen) return WEFT_EINVAL;
  out[0] = '\0';
  size_t n = 0;
  for (const char *p = prefix; *p;) {
    char num[32];
    const char *rep = NULL;
    size_t skip = 0;
    static const struct {
      const char *var;
      int field; /* 0 w, 1 h, 2.. tm fields */
    } vars[] = {{"%width%", 0},  {"%height%", 1}, {"%year%", 2},
                {"%month%", 3},  {"%day%", 4},    {"%hour%", 5},
                {"%minute%", 6}, {"%second%", 7}};
    if (*p == '%') {
      for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        size_t l = strlen(vars[i].var);
        if (strncmp(p, vars[i].var, l) != 0) continue;
        switch (vars[i].field) {
        case 0: snprintf(num, sizeof num, "%lld", (long long)width); break;
        case 1: snprintf(num, sizeof num, "%lld", (long long)height); break;
        case 2: snprintf(num, sizeof num, "%d", now->tm_year + 1900); break;
        case 3: snprintf(num, sizeof num, "%02d", now->tm_mon + 1); break;
        case 4: snprintf(num, sizeof num, "%02d", now->tm_mday); break;
        case 5: snprintf(num, sizeof num, "%02d", now->tm_hour); break;
        case 6: snprintf(num, sizeof num, "%02d", now->tm_min); break;
        default: snprintf(num, sizeof num, "%02d", now->tm_sec); break;
        }
        rep = num;
        skip = l;
        break;
      }
    }
    if (rep) {
      if (put(out, outlen, &n, rep, strlen(rep))) return WEFT_EINVAL;
      p += skip;
    } else {
      if (put(out, outlen, &n, p, 1)) return WEFT_EINVAL;
      p++;
    }
  }
  return 0;
}

int weft__prefix_split(const char *prefix, char *subdir, size_t sublen,
                       char *name, size_t namelen, char *err, size_t errlen) {
  if (sublen) subdir[0] = '\0';
  if (namelen) name[0] = '\0';
  if (!prefix || !prefix[0]) {
    set_err(err, errlen, "filename_prefix is empty");
    return WEFT_EINVAL;
  }
  if (prefix[0] == '/') {
    set_err(err, errlen,
            "filename_prefix '%s' is an absolute path; it must be relative to "
            "the output directory",
            prefix);
    return WEFT_EINVAL;
  }
  size_t sn = 0;
  const char *p = prefix;
  const char *last = NULL;
  size_t last_len = 0;
  while (*p) {
    const char *e = strchr(p, '/');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len == 2 && p[0] == '.' && p[1] == '.') {
      set_err(err, errlen,
              "filename_prefix '%s' has a '..' component; it must stay inside "
              "the output directory",
              prefix);
      return WEFT_EINVAL;
    }
    int skip = len == 0 || (len == 1 && p[0] == '.');
    if (!e) { /* the file name */
      if (skip) break;
      last = p;
      last_len = len;
      break;
    }
    if (!skip) {
      if ((sn && put(subdir, sublen, &sn, "/", 1)) ||
          put(subdir, sublen, &sn, p, len)) {
        set_err(err, errlen, "filename_prefix '%s' is too long", prefix);
        return WEFT_EINVAL;
      }
    }
    p = e + 1;
  }
  if (!last) {
    set_err(err, errlen,
            "filename_prefix '%s' has no file name after its last '/'", prefix);
    return WEFT_EINVAL;
  }
  size_t nn = 0;
  if (put(name, namelen, &nn, last, last_len)) {
    set_err(err, errlen, "filename_prefix '%s' is too long", prefix);
    return WEFT_EINVAL;
  }
  return 0;
}

int64_t weft__next_counter(const char *dir, const char *name) {
  DIR *d = opendir(dir);
  if (!d) return 1;
  size_t nl = strlen(name);
  int64_t best = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    const char *f = de->d_name;
    if (strncmp(f, name, nl) != 0 || f[nl] != '_') continue;
    const char *digits = f + nl + 1;
    int64_t v = 0;
    size_t i = 0;
    for (; digits[i] >= '0' && digits[i] <= '9'; i++) {
      if (v > (INT64_MAX - 9) / 10) break;
      v = v * 10 + (digits[i] - '0');
    }
    /* Python's int() of the part before the next '_' fails (0) unless it is
     * all digits. */
    if (i == 0 || (digits[i] != '_' && digits[i] != '\0')) v = 0;
    if (v > best) best = v;
  }
  closedir(d);
  return best + 1;
}

static int mkdir_one(const char *path, char *err, size_t errlen) {
  if (mkdir(path, 0777) == 0) return 0;
  int e = errno;
  struct stat st;
  if (e == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
  set_err(err, errlen, "cannot create directory '%s': %s", path,
          e == EEXIST ? "a file of that name exists" : strerror(e));
  return WEFT_EIO;
}

int weft__make_dirs(const char *root, const char *sub, char *err,
                    size_t errlen) {
  char path[4096];
  int n = snprintf(path, sizeof path, "%s%s%s", root, sub[0] ? "/" : "", sub);
  if (n < 0 || (size_t)n >= sizeof path) {
    set_err(err, errlen, "output path '%s/%s' is too long", root, sub);
    return WEFT_EINVAL;
  }
  /* Each prefix ending before a '/', then the whole path. */
  for (char *p = path + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    int rc = mkdir_one(path, err, errlen);
    *p = '/';
    if (rc) return rc;
  }
  return mkdir_one(path, err, errlen);
}

int weft__save_file_name(const char *name, int64_t batch, int64_t counter,
                         char *out, size_t outlen) {
  char num[32];
  size_t n = 0;
  if (!outlen) return WEFT_EINVAL;
  out[0] = '\0';
  snprintf(num, sizeof num, "%lld", (long long)batch);
  static const char var[] = "%batch_num%";
  for (const char *p = name; *p;) {
    if (strncmp(p, var, sizeof var - 1) == 0) {
      if (put(out, outlen, &n, num, strlen(num))) return WEFT_EINVAL;
      p += sizeof var - 1;
    } else {
      if (put(out, outlen, &n, p, 1)) return WEFT_EINVAL;
      p++;
    }
  }
  snprintf(num, sizeof num, "_%05lld_.png", (long long)counter);
  return put(out, outlen, &n, num, strlen(num)) ? WEFT_EINVAL : 0;
}
