/* fuzz_clip_tok.c - libFuzzer target for the CLIP tokenizer and ComfyUI's
 * prompt parsing: any bytes tokenize, and every chunk layout is well formed
 * (BOS first, end token present, ids in the vocabulary, views render). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"
#include "weft_config.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static weft_clip_tok *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  char err[512];
  if (weft_clip_tok_load(WEFT_SOURCE_DIR
                         "/nodes/clip/data/bpe_simple_vocab_16e6.txt.gz",
                         &tok, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    abort();
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *s = (const char *)data;
  int32_t *ids;
  size_t n;
  if (weft_clip_tok_encode(tok, s, size, &ids, &n)) __builtin_trap();
  for (size_t i = 0; i < n; i++)
    if (ids[i] < 0 || ids[i] >= WEFT_CLIP_VOCAB_SIZE) __builtin_trap();
  free(ids);

  weft_clip_chunks *c;
  if (weft_clip_chunks_build(tok, s, size, NULL, &c)) __builtin_trap();
  if (c->n_chunks < 1) __builtin_trap();
  for (size_t k = 0; k < c->n_chunks; k++) {
    if (c->ids[k][0] != WEFT_CLIP_BOS) __builtin_trap();
    int has_end = 0;
    for (int j = 1; j < WEFT_CLIP_CHUNK_LEN; j++) {
      if (c->ids[k][j] < 0 || c->ids[k][j] >= WEFT_CLIP_VOCAB_SIZE)
        __builtin_trap();
      has_end |= c->ids[k][j] == WEFT_CLIP_EOS;
    }
    if (!has_end) __builtin_trap();
  }
  char *js = weft_clip_chunks_json(c), *txt = weft_clip_chunks_text(c);
  if (!js || !txt) __builtin_trap();
  free(js);
  free(txt);
  weft_clip_chunks_free(c);
  return 0;
}
