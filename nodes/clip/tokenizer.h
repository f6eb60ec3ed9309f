/* tokenizer.h - CLIP's BPE tokenizer (the ids transformers' fast
 * CLIPTokenizer gives, which is what ComfyUI runs) and ComfyUI's prompt
 * handling on top of it: emphasis weights, word grouping and 77-token chunks.
 *
 * Text pipeline of weft_clip_tok_encode, as transformers 5.x / tokenizers:
 *   1. "<|endoftext|>" written in the text becomes id 49407 (matched on the
 *      raw text);
 *   2. every other stretch: NFC (with the Unicode 9.0 data of the Rust
 *      normaliser: marks added later count as starters), runs of Unicode
 *      White_Space -> " ", per-character lower-case (no final-sigma rule:
 *      "ΟΔΟΣ" -> "οδοσ"; "İ" -> "i" + U+0307);
 *   3. "<|startoftext|>" in the normalised text becomes id 49406 (ComfyUI's
 *      tokenizer_config marks it "normalized", so "<|StartOfText|>" does too);
 *   4. CLIP's split regex  <|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|
 *      'd|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+  (white space dropped), then the
 *      GPT-2 byte-level regex inside each piece, bytes mapped to CLIP's 256
 *      byte characters, BPE with "</w>" on the last character of a word.
 * Invalid UTF-8 is read as U+FFFD per bad sequence (Python's
 * errors="replace"); transformers never sees invalid UTF-8.
 *
 * A loaded tokenizer is immutable: any number of threads may call the encode
 * and chunk functions on it at once. */
#ifndef WEFT_CLIP_TOKENIZER_H
#define WEFT_CLIP_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "weft/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define WEFT_CLIP_VOCAB_SIZE 49408
#define WEFT_CLIP_BOS 49406 /* <|startoftext|> */
#define WEFT_CLIP_EOS 49407 /* <|endoftext|> */
#define WEFT_CLIP_CHUNK_LEN 77

typedef struct weft_clip_tok weft_clip_tok;

/* Load the vocabulary from CLIP's bpe_simple_vocab_16e6.txt.gz (shipped in
 * nodes/clip/data/).  On success *out owns the tokenizer (free it with
 * weft_clip_tok_free) and 0 is returned; on failure a negative WEFT_E* code,
 * and err (if not NULL) says which file and what is wrong. */
int weft_clip_tok_load(const char *vocab_gz_path, weft_clip_tok **out,
                       char *err, size_t errlen);
void weft_clip_tok_free(weft_clip_tok *t);

/* Raw BPE ids of utf8[0..len) without BOS/EOS: transformers'
 * tokenizer(text)["input_ids"][1:-1].  *ids is malloc'd (the caller frees it;
 * NULL when *n is 0).  Returns 0, WEFT_ENOMEM, or WEFT_ERANGE for a single
 * word (a run of letters, say) of 2 GiB or more. */
int weft_clip_tok_encode(const weft_clip_tok *t, const char *utf8, size_t len,
                         int32_t **ids, size_t *n);

/* The vocabulary entry of id in CLIP's byte-level spelling ("cat</w>",
 * "Ġ"...), as transformers' convert_ids_to_tokens; NULL if id is out of
 * range.  Valid until the tokenizer is freed. */
const char *weft_clip_tok_token(const weft_clip_tok *t, int32_t id);

/* ---- ComfyUI level (comfy/sd1_clip.py: SDTokenizer.tokenize_with_weights) */

/* Token ids of the chunk layout; weft_clip_chunk_opts_sd1 fills SD1.x's:
 * start 49406, end 49407, pad 49407 (pad_with_end). */
typedef struct weft_clip_chunk_opts {
  int32_t start_token;
  int32_t end_token;
  int32_t pad_token;
  int disable_weights; /* 1: take the text literally, every weight 1.0 */
} weft_clip_chunk_opts;
void weft_clip_chunk_opts_sd1(weft_clip_chunk_opts *o);

/* A prompt as ComfyUI hands it to CLIP: n_chunks rows of 77 (id, weight),
 * each BOS + up to 75 tokens + EOS, padded.  An empty prompt gives one
 * chunk.  Weights are ComfyUI's Python floats (doubles). */
typedef struct weft_clip_chunks {
  size_t n_chunks;
  int32_t (*ids)[WEFT_CLIP_CHUNK_LEN];
  double (*weights)[WEFT_CLIP_CHUNK_LEN];
  int has_weights; /* some weight != 1.0 (ComfyUI then encodes an empty
                      prompt too and interpolates towards it) */
  char *warnings;  /* NULL, or lines ending in '\n' that ComfyUI would log,
                      e.g. "embedding:foo does not exist, ignoring" */
} weft_clip_chunks;

/* Parse ComfyUI's emphasis syntax in utf8[0..len), tokenize each weighted
 * piece, and lay the tokens out in chunks exactly as ComfyUI does:
 *   (text) weight x1.1, nested multiplies; (text:1.3) sets 1.3 (any Python
 *   float() literal); \( and \) are literal parentheses; [text] is literal
 *   (ComfyUI has no [] de-emphasis); "embedding:NAME" after white space is
 *   an embedding reference: weft has none, so like ComfyUI with a missing
 *   embedding the name is dropped and a warning added;
 *   each piece of one weight (cut before "embedding:") is tokenized whole,
 *   as ComfyUI has done since 2025 (before, it cut at spaces): a piece of
 *   fewer than 8 tokens that does not fit in the current chunk moves whole
 *   to the next one; longer pieces are split at the boundary.
 * opts NULL means SD1.x.  On success *out is owned by the caller
 * (weft_clip_chunks_free); returns 0 or an error of weft_clip_tok_encode. */
int weft_clip_chunks_build(const weft_clip_tok *t, const char *utf8, size_t len,
                           const weft_clip_chunk_opts *opts,
                           weft_clip_chunks **out);
void weft_clip_chunks_free(weft_clip_chunks *c);

/* For `weft tokenize --json`: one JSON object
 *   {"n_chunks":N,"chunks":[{"ids":[77 ints]},...]}
 * where every chunk also carries "weights":[77 numbers] when has_weights
 * (NaN and infinities, which (x:nan) can give, are written as null), plus
 * "warnings":[strings] when there are any.  Returns a malloc'd
 * NUL-terminated string (the caller frees it) or NULL when out of memory. */
char *weft_clip_chunks_json(const weft_clip_chunks *c);

/* For `weft tokenize`: one line per chunk,
 *   chunk 1/2: 49406 320 2368:1.1 ... 49407 (+70 pad)
 * ids with ":weight" where the weight is not 1, trailing padding counted,
 * then one "warning: ..." line per warning.  malloc'd, the caller frees it;
 * NULL when out of memory. */
char *weft_clip_chunks_text(const weft_clip_chunks *c);

#ifdef __cplusplus
}
#endif

/* ---- internal to the weft_clip_tok library (not for the CLIP plugin) ---- */
#ifdef WEFT_CLIP_TOK_INTERNAL
#include <stdbool.h>

/* Tables in unicode_tables.c (generated by tools/gen_unicode_tables.py). */
typedef struct {
  uint32_t lo, hi;
} weft__uni_range;
typedef struct {
  uint32_t lo, hi; /* every stride-th code point in [lo, hi] maps to cp+delta */
  int32_t delta;
  uint32_t stride;
} weft__uni_case_run;
typedef struct {
  uint32_t lo, hi, ccc;
} weft__uni_ccc_range;
/* weft__uni_decomp: {cp, first, second (0: singleton)}, sorted by cp;
 * weft__uni_comp: {first, second, composite}, sorted by (first, second). */
typedef struct {
  uint32_t a, b, c;
} weft__uni_pair;

extern const weft__uni_range weft__uni_letters[];
extern const size_t weft__uni_letters_n;
extern const weft__uni_range weft__uni_numbers[];
extern const size_t weft__uni_numbers_n;
extern const weft__uni_range weft__uni_white_space[];
extern const size_t weft__uni_white_space_n;
extern const weft__uni_range weft__uni_py_space[];
extern const size_t weft__uni_py_space_n;
extern const weft__uni_case_run weft__uni_lower[];
extern const size_t weft__uni_lower_n;
extern const weft__uni_ccc_range weft__uni_ccc[];
extern const size_t weft__uni_ccc_n;
extern const weft__uni_pair weft__uni_decomp[];
extern const size_t weft__uni_decomp_n;
extern const weft__uni_pair weft__uni_comp[];
extern const size_t weft__uni_comp_n;
extern const uint32_t weft__uni_digit_zero[];
extern const size_t weft__uni_digit_zero_n;

/* A growable array of code points. */
typedef struct {
  uint32_t *v;
  size_t n, cap;
} weft__cps;
int weft__cps_push(weft__cps *a, uint32_t cp);
/* Decode UTF-8 (bad sequences -> U+FFFD) and append to a. */
int weft__cps_from_utf8(weft__cps *a, const char *s, size_t len);

/* Python's str.isspace() and unicodedata.decimal() (-1: not a digit). */
bool weft__uni_py_isspace(uint32_t cp);
int weft__uni_decimal(uint32_t cp);

/* A growable array of token ids. */
typedef struct {
  int32_t *v;
  size_t n, cap;
} weft__ids;

/* weft_clip_tok_encode on code points: appends the ids to out. */
int weft__clip_tok_encode_cps(const weft_clip_tok *t, const uint32_t *cps,
                              size_t n, weft__ids *out);
#endif /* WEFT_CLIP_TOK_INTERNAL */

#endif /* WEFT_CLIP_TOKENIZER_H */
