/* fuzz_comfy.c - libFuzzer target for what weft reads from other tools:
 * ComfyUI API JSON and PNG text chunks (weft__import_load: the "weft"
 * record, ComfyUI's "prompt"), and the A1111 walk over a prompt
 * (weft__meta_parameters).  Any bytes give a graph or an error message
 * naming the source, never a crash or a leak. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "png_meta.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* the registry is loaded once: plugins stay loaded for the process */
  static weft_ctx *ctx;
  if (!ctx && (weft_ctx_new(&ctx) || weft_plugin_load_default(ctx, NULL)))
    abort();
  weft_graph *g = NULL;
  int r = weft__import_load(ctx, (const char *)data, size, "fuzz.json", &g);
  if (r == 0 && !g) abort();
  if (r && !strstr(weft_ctx_error(ctx), "fuzz.json") && r != WEFT_ENOMEM)
    abort(); /* every message names the source */
  weft_graph_free(g);
  char *text = malloc(size + 1);
  if (!text) return 0;
  memcpy(text, data, size);
  text[size] = 0;
  free(weft__meta_parameters(text, "9", 64, 64));
  free(weft__meta_ascii_json(text));
  free(text);
  return 0;
}
