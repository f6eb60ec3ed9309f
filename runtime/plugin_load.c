/* plugin_load.c - finds plugin shared objects on the plugin path, dlopens
 * them (RTLD_NOW | RTLD_LOCAL, never dlclosed: CUDA static state makes
 * unloading unsafe) and registers what their entry point returns. */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "weft_config.h"

int weft_plugin_load(weft_ctx *ctx, const char *path) {
  struct stat st;
  if (stat(path, &st) != 0)
    return weft__err(ctx, WEFT_ENOENT, NULL, "%s: cannot load plugin: %s",
                     path, strerror(errno));
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h)
    return weft__err(ctx, WEFT_EPLUGIN, NULL, "%s: cannot load plugin: %s",
                     path, dlerror());
  void *sym = dlsym(h, WEFT_PLUGIN_ENTRY_SYMBOL);
  if (!sym)
    return weft__err(ctx, WEFT_EPLUGIN, NULL,
                     "%s: not a weft plugin: it does not export '%s'", path,
                     WEFT_PLUGIN_ENTRY_SYMBOL);
  weft_plugin_entry_fn entry;
  /* POSIX guarantees object/function pointer conversion through dlsym */
  memcpy(&entry, &sym, sizeof entry);
  return weft_plugin_register(ctx, entry(&weft__host), path);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_plugin_file(const char *name) {
  size_t n = strlen(name);
  return n > 3 && strcmp(name + n - 3, ".so") == 0 && name[0] != '.';
}

static bool is_visible(const char *name) { return name[0] != '.'; }

/* Calls fn(ctx, "dir/name") for each entry that keep() accepts, in name
 * order, stopping at the first error.  A missing dir is not an error. */
static int for_each_entry(weft_ctx *ctx, const char *dir,
                          bool (*keep)(const char *),
                          int (*fn)(weft_ctx *, const char *)) {
  DIR *d = opendir(dir);
  if (!d) return 0;
  char **names = NULL;
  int n = 0, cap = 0, r = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!keep(e->d_name)) continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 16;
      char **nn = realloc(names, (size_t)cap * sizeof *nn);
      if (!nn) {
        r = WEFT_ENOMEM;
        break;
      }
      names = nn;
    }
    if (!(names[n] = strdup(e->d_name))) {
      r = WEFT_ENOMEM;
      break;
    }
    n++;
  }
  closedir(d);
  if (n > 1) qsort(names, (size_t)n, sizeof *names, cmp_str);
  for (int i = 0; i < n && !r; i++) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    r = fn(ctx, path);
  }
  for (int i = 0; i < n; i++) free(names[i]);
  free(names);
  return r;
}

int weft_plugin_load_dir(weft_ctx *ctx, const char *dir) {
  return for_each_entry(ctx, dir, is_plugin_file, weft_plugin_load);
}

/* Running from the build tree (tests, the quick start before install): the
 * built-in plugins are the ones under <build>/nodes/<family>/. */
static bool running_from_build_tree(void) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return false;
  exe[n] = 0;
  size_t lb = strlen(WEFT_BUILD_DIR);
  return strncmp(exe, WEFT_BUILD_DIR, lb) == 0 && exe[lb] == '/';
}

/* The installed plugin directory, found relative to the file holding this
 * code (the weft binary, or libweft.so for an embedding program), so that a
 * moved or DESTDIR-staged install finds its own plugins; the configured
 * absolute directory is the fallback. */
static void installed_dir(char *out, size_t n) {
  Dl_info info;
  char self[PATH_MAX];
  snprintf(out, n, "%s", WEFT_PLUGIN_DIR);
  if (!dladdr((void *)(uintptr_t)installed_dir, &info) || !info.dli_fname ||
      !realpath(info.dli_fname, self))
    return;
  char *slash = strrchr(self, '/');
  if (!slash) return;
  *slash = 0;
  const char *rel[] = {WEFT_PLUGIN_RELDIR, "weft/plugins"};
  for (int i = 0; i < 2; i++) {
    char cand[PATH_MAX + 64];
    struct stat st;
    if (rel[i][0] == '/') continue;
    snprintf(cand, sizeof cand, "%s/%s", self, rel[i]);
    if (stat(cand, &st) == 0 && S_ISDIR(st.st_mode)) {
      snprintf(out, n, "%s", cand);
      return;
    }
  }
}

int weft_plugin_load_default(weft_ctx *ctx, const char *const *extra_dirs) {
  char builtin[PATH_MAX + 64];
  installed_dir(builtin, sizeof builtin);
  int r = running_from_build_tree()
              ? for_each_entry(ctx, WEFT_BUILD_DIR "/nodes", is_visible,
                               weft_plugin_load_dir)
                                    : weft_plugin_load_dir(ctx, builtin);
  if (r) return r;
  const char *env = getenv("WEFT_PLUGIN_PATH");
  if (env && *env) {
    char *copy = strdup(env), *save = NULL;
    if (!copy) return WEFT_ENOMEM;
    for (char *dir = strtok_r(copy, ":", &save); dir && !r;
         dir = strtok_r(NULL, ":", &save))
      r = weft_plugin_load_dir(ctx, dir);
    free(copy);
    if (r) return r;
  }
  for (int i = 0; extra_dirs && extra_dirs[i] && !r; i++) {
    struct stat st;
    if (stat(extra_dirs[i], &st) != 0 || !S_ISDIR(st.st_mode))
      return weft__err(ctx, WEFT_ENOENT, NULL,
                       "--plugin-dir %s: not a directory", extra_dirs[i]);
    r = weft_plugin_load_dir(ctx, extra_dirs[i]);
  }
  return r;
}
