/* test.h - weft's tiny test harness (after libuv's runner).
 *
 * A test file defines cases with TEST(name) { ... }; meson reads the file,
 * finds every "TEST(" at the start of a line and registers one meson test per
 * case, so a case runs alone in its own process with a timeout and a crash
 * hides nothing else.  Run a binary without arguments to run every case, or
 * with case names to run those.  ASSERT_* print both sides and abort. */
#ifndef WEFT_TEST_H
#define WEFT_TEST_H

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*weft_test_fn)(void);
void weft_test_register(const char *name, weft_test_fn fn);
/* Directory of the source tree's tests/ folder, and the build's, from the
 * environment meson sets (WEFT_TEST_SRCDIR / WEFT_TEST_BUILDDIR). */
const char *weft_test_srcdir(void);
const char *weft_test_builddir(void);
/* A fresh empty temporary directory for this case (removed at exit). */
const char *weft_test_tmpdir(void);
/* Skip this case with a reason (exit code 77, which meson reports as SKIP). */
void weft_test_skip(const char *why) __attribute__((noreturn));

/* Runs argv (argv[0] a path) with stdout and stderr captured into malloc'd
 * strings (caller frees; either may be NULL to discard).  Returns the exit
 * status, 128+signal if it was killed, or -1 if it could not start.
 * timeout_s > 0 kills it (SIGKILL) after that long. */
int weft_test_spawn(const char *const argv[], char **out, char **err,
                    int timeout_s);
/* Path of a program built in the build tree ("cli/weft"). */
const char *weft_test_built(const char *rel);
/* Path of a file of the source tree ("graphs/txt2img.yaml"; the test's
 * environment names the tree in WEFT_SOURCE_DIR), malloc'd. */
char *weft_test_repo(const char *rel);
/* Reads a whole file into a malloc'd, NUL-terminated string (NULL if it
 * cannot); *len gets its length when len is not NULL. */
char *weft_test_read_file(const char *path, size_t *len);
/* Writes text to dir/name and returns the path (static buffer per call
 * site is not needed: the result is malloc'd; caller frees). */
char *weft_test_write_file(const char *dir, const char *name,
                           const char *text);

#define TEST(name)                                                             \
  static void test_##name(void);                                               \
  __attribute__((constructor)) static void test_reg_##name(void) {             \
    weft_test_register(#name, test_##name);                                    \
  }                                                                            \
  static void test_##name(void)

#define WEFT_TEST_FAIL_(...)                                                   \
  do {                                                                         \
    fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                            \
    fprintf(stderr, __VA_ARGS__);                                              \
    fputc('\n', stderr);                                                       \
    abort();                                                                   \
  } while (0)

#define ASSERT(cond)                                                           \
  do {                                                                         \
    if (!(cond)) WEFT_TEST_FAIL_("assertion failed: %s", #cond);              \
  } while (0)

#define ASSERT_EQ(a, b)                                                        \
  do {                                                                         \
    long long a_ = (long long)(a), b_ = (long long)(b);                        \
    if (a_ != b_)                                                              \
      WEFT_TEST_FAIL_("%s == %s: %lld != %lld", #a, #b, a_, b_);               \
  } while (0)

#define ASSERT_OK(a) ASSERT_EQ(a, 0)

#define ASSERT_STR_EQ(a, b)                                                    \
  do {                                                                         \
    const char *a_ = (a), *b_ = (b);                                           \
    if (!a_ || !b_ || strcmp(a_, b_) != 0)                                     \
      WEFT_TEST_FAIL_("%s == %s: \"%s\" != \"%s\"", #a, #b,                    \
                      a_ ? a_ : "(null)", b_ ? b_ : "(null)");                 \
  } while (0)

#define ASSERT_CONTAINS(hay, needle)                                           \
  do {                                                                         \
    const char *h_ = (hay), *n_ = (needle);                                    \
    if (!h_ || !strstr(h_, n_))                                                \
      WEFT_TEST_FAIL_("\"%s\" does not contain \"%s\"", h_ ? h_ : "(null)",    \
                      n_);                                                     \
  } while (0)

/* |a - b| <= tol */
#define ASSERT_NEAR(a, b, tol)                                                 \
  do {                                                                         \
    double a_ = (double)(a), b_ = (double)(b), t_ = (double)(tol);             \
    if (!(fabs(a_ - b_) <= t_))                                                \
      WEFT_TEST_FAIL_("%s ~= %s: %.9g vs %.9g (diff %.3g > tol %.3g)", #a,     \
                      #b, a_, b_, fabs(a_ - b_), t_);                          \
  } while (0)

#endif
