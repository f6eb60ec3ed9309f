/* plans_list.h - the text of a kept plan list (plans_kept.c): which cuDNN
 * and cuBLASLt plans a process made, by the keys of its plan caches, so the
 * next process can make them ahead, on the threads that start those
 * libraries, while its models load.
 *
 * The text is a header line that must match the reader's own (the file is
 * made for one library version and device) and then one line per plan: a
 * kind's name and its key's integers, in decimal, space separated:
 *
 *   weft plans 1; cuDNN 91900; cuBLASLt 130100; sm 90, 132 ...
 *   conv 1 0 2 320 66 66 320 3 3 1 1 0 0 0 0 0 0 1
 *   lt 1 1 0 1 8192 320 320 ...
 *
 * Plain C with no CUDA, so the parser is tested and fuzzed on any host.
 * The file is outside input: a key is used only when weft__plans_key_ok
 * finds every value in the range the caches ever hold. */
#ifndef WEFT_KERNELS_CUDA_PLANS_LIST_H
#define WEFT_KERNELS_CUDA_PLANS_LIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum weft__plan_list_kind {
  WEFT__KEPT_CONV = 0, /* conv_cudnn.c's graph-API plan of an NHWC band */
  WEFT__KEPT_ATTN,     /* attn_cudnn.c's fused attention plan */
  WEFT__KEPT_LT,       /* gemm_lt.c's cuBLASLt product */
  WEFT__KEPT_KINDS
} weft__plan_list_kind;

/* The most integers a key has, and each kind's count. */
#define WEFT__KEPT_KEY_MAX 20
extern const int weft__kept_key_len[WEFT__KEPT_KINDS];

/* The most plan lines a list holds (and a reader takes). */
#define WEFT__KEPT_MAX_PLANS 1024

/* One plan line into out (with its newline): the characters written, or
 * 0 when they do not fit. */
size_t weft__plans_format(char *out, size_t n, int kind, const int64_t *key);

/* Calls fn for each well-formed line of buf[0, n) after a first line equal
 * to head (head without its newline), in order, up to
 * WEFT__KEPT_MAX_PLANS; stops at the first line that is not one (an
 * unknown kind, a count or a number out of place, a key
 * weft__plans_key_ok refuses).  The lines given to fn, or -1 when the
 * header does not match. */
int weft__plans_parse(const char *buf, size_t n, const char *head,
                      void (*fn)(void *user, int kind, const int64_t *key),
                      void *user);

/* Whether every value of a kind's key lies where the caches' keys do:
 * sizes whose products the plan builders form without overflow, dtypes,
 * flags and alignments they know. */
bool weft__plans_key_ok(int kind, const int64_t *key);

#endif
