/* prompt_weights.h - ComfyUI's prompt emphasis parsing (comfy/sd1_clip.py:
 * escape_important, token_weights, parse_parentheses, unescape_important)
 * and Python's float() as ComfyUI uses it for "(text:1.3)".
 * weft_clip_chunks_build (tokenizer.h) runs these; they are exposed for the
 * tests and for tools that want the weighted pieces themselves. */
#ifndef WEFT_CLIP_PROMPT_WEIGHTS_H
#define WEFT_CLIP_PROMPT_WEIGHTS_H

#include <stddef.h>

#include "weft/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One weighted piece of a prompt: UTF-8 text (NUL-terminated, len bytes)
 * with escapes resolved ("\(" -> "("), and its weight. */
typedef struct weft_clip_weighted {
  char *text;
  size_t len;
  double weight;
} weft_clip_weighted;

/* ComfyUI's token_weights(escape_important(text), 1.0) with every piece
 * unescaped: "a (b:1.5) ((c))" -> ("a ", 1), ("b", 1.5), (" ", 1),
 * ("c", 1.21).  Unbalanced parentheses are kept as text the way ComfyUI's
 * parser keeps them.  disable_weights gives the whole text at weight 1.
 * On success *out (n pieces; NULL when n is 0) belongs to the caller:
 * weft_clip_weighted_free.  Returns 0 or WEFT_ENOMEM. */
int weft_clip_parse_weights(const char *utf8, size_t len, int disable_weights,
                            weft_clip_weighted **out, size_t *n);
void weft_clip_weighted_free(weft_clip_weighted *w, size_t n);

/* Python's float(s): surrounding white space, sign, digits with single
 * underscores between them, fraction, exponent, inf/infinity/nan in any
 * case, non-ASCII decimal digits and white space as Python accepts them.
 * Returns 0 and sets *out, or WEFT_ESYNTAX when Python would raise
 * ValueError. */
int weft_clip_py_float(const char *utf8, size_t len, double *out);

#ifdef __cplusplus
}
#endif

#endif /* WEFT_CLIP_PROMPT_WEIGHTS_H */
