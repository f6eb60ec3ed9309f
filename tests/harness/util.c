/* util.c - test helpers: directories, skipping, running a program with its
 * output captured, reading and writing files. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

#include <ftw.h>

static char g_tmp[4096];

const char *weft_test_srcdir(void) {
  const char *s = getenv("WEFT_TEST_SRCDIR");
  return s ? s : "tests";
}

const char *weft_test_builddir(void) {
  const char *s = getenv("WEFT_TEST_BUILDDIR");
  return s ? s : ".";
}

static int rm_cb(const char *p, const struct stat *sb, int flag,
                 struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(p);
}

static void tmp_cleanup(void) {
  if (g_tmp[0] && !getenv("WEFT_TEST_KEEP")) nftw(g_tmp, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

const char *weft_test_tmpdir(void) {
  if (!g_tmp[0]) {
    const char *base = getenv("TMPDIR");
    snprintf(g_tmp, sizeof g_tmp, "%s/weft-test-XXXXXX", base ? base : "/tmp");
    if (!mkdtemp(g_tmp)) {
      perror("mkdtemp");
      abort();
    }
    atexit(tmp_cleanup);
  }
  return g_tmp;
}

void weft_test_skip(const char *why) {
  fprintf(stderr, "SKIP: %s\n", why);
  fflush(stderr);
  exit(77);
}


extern char **environ;

typedef struct buf {
  char *p;
  size_t n, cap;
} buf;

static void buf_add(buf *b, const char *s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    b->cap = (b->n + n + 1) * 2;
    b->p = realloc(b->p, b->cap);
    if (!b->p) abort();
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = 0;
}

int weft_test_spawn(const char *const argv[], char **out, char **err,
                    int timeout_s) {
  int po[2], pe[2];
  if (pipe2(po, O_CLOEXEC) || pipe2(pe, O_CLOEXEC)) return -1;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, po[1], 1);
  posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
  pid_t pid;
  int r = posix_spawn(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(po[1]);
  close(pe[1]);
  if (r) {
    close(po[0]);
    close(pe[0]);
    return -1;
  }
  buf bo = {0}, be = {0};
  buf_add(&bo, "", 0);
  buf_add(&be, "", 0);
  struct pollfd fds[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
  int open_fds = 2;
  time_t start = time(NULL);
  while (open_fds > 0) {
    int n = poll(fds, 2, 200);
    if (timeout_s > 0 && time(NULL) - start > timeout_s) {
      kill(pid, SIGKILL);
      break;
    }
    if (n <= 0) continue;
    for (int i = 0; i < 2; i++) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP))) continue;
      char tmp[4096];
      ssize_t k = read(fds[i].fd, tmp, sizeof tmp);
      if (k <= 0) {
        close(fds[i].fd);
        fds[i].fd = -1;
        open_fds--;
      } else {
        buf_add(i ? &be : &bo, tmp, (size_t)k);
      }
    }
  }
  for (int i = 0; i < 2; i++)
    if (fds[i].fd >= 0) close(fds[i].fd);
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (out) *out = bo.p; else free(bo.p);
  if (err) *err = be.p; else free(be.p);
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
  return -1;
}

const char *weft_test_built(const char *rel) {
  static char path[8][4096];
  static int next;
  char *p = path[next++ % 8];
  snprintf(p, 4096, "%s/%s", weft_test_builddir(), rel);
  return p;
}

char *weft_test_repo(const char *rel) {
  const char *src = getenv("WEFT_SOURCE_DIR");
  ASSERT(src != NULL);
  char *p = malloc(4096);
  ASSERT(p != NULL);
  snprintf(p, 4096, "%s/%s", src, rel);
  return p;
}

char *weft_test_read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  buf b = {0};
  buf_add(&b, "", 0);
  char tmp[65536];
  size_t k;
  while ((k = fread(tmp, 1, sizeof tmp, f)) > 0) buf_add(&b, tmp, k);
  fclose(f);
  if (len) *len = b.n;
  return b.p;
}

char *weft_test_write_file(const char *dir, const char *name,
                           const char *text) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *path = malloc(n);
  if (!path) abort();
  snprintf(path, n, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  if (!f) {
    perror(path);
    abort();
  }
  fputs(text, f);
  fclose(f);
  return path;
}
