/* fuzz_graph.c - libFuzzer target for the YAML graph loader: parse and
 * resolve arbitrary text against the test nodes; any input must give either
 * a graph or an error message, never a crash, leak or hang. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

const weft_plugin *weft_plugin_entry(const weft_host *host);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static weft_ctx *ctx;
  if (!ctx) {
    if (weft_ctx_new(&ctx)) return 0;
    if (weft_plugin_register(ctx, weft_plugin_entry(&weft__host), "testnodes"))
      __builtin_trap();
  }
  weft_graph *g = NULL;
  int r = weft_graph_load_string(ctx, (const char *)data, size, "fuzz.yaml",
                                 &g);
  if (r == 0) {
    /* a loaded graph must also survive the printers and input setting */
    FILE *f = fopen("/dev/null", "w");
    if (f) {
      weft_graph_write_dot(g, f);
      fclose(f);
    }
    weft_graph_set_input(ctx, g, "x", "1");
    weft_graph_free(g);
  } else if (!weft_ctx_error(ctx)[0]) {
    __builtin_trap(); /* every failure must say why */
  }
  return 0;
}
