/* json_u64.h - JSON that keeps integers up to 2^64 - 1 (ComfyUI's seeds),
 * which jansson's signed 64-bit integers cannot hold.  Such a number is
 * carried as a marked string, "\u0001u64:N", that weft__json_dumps writes
 * back as the bare number N. */
#ifndef WEFT_JSON_U64_H
#define WEFT_JSON_U64_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

/* As json_loadb; an integer above 2^63 - 1 becomes a marked string.  The
 * caller owns the result. */
json_t *weft__json_loadb(const char *text, size_t len, size_t flags,
                         json_error_t *e);
/* As json_dumps, with marked strings written as bare numbers; steals o
 * (NULL gives NULL).  The caller frees the result. */
char *weft__json_dumps(json_t *o, size_t flags);
/* A new marked string for u */
json_t *weft__json_u64(uint64_t u);
/* true when v is a marked string (*u its value) */
bool weft__json_is_u64(const json_t *v, uint64_t *u);

#endif
