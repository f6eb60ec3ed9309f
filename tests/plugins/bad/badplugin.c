/* badplugin.c - plugins the loader must refuse (or, for the duplicate pair,
 * accept once): one source, one variant per BAD_* define. */
#include "weft/plugin.h"

static __attribute__((unused)) int run(weft_call *c) {
  (void)c;
  return 0;
}

static const weft_port_def out[] = {
    {sizeof(weft_port_def), "value", WEFT_TYPE_INT, NULL, 0, NULL},
};

static const weft_node_def node = {
    .struct_size = sizeof(weft_node_def),
    .op = "TestDup",
    .category = "test",
    .outputs = out,
    .n_outputs = 1,
#ifndef BAD_NO_RUN
    .run = run,
#endif
};

static __attribute__((unused)) const weft_node_def *const nodes[] = {&node};

#if defined(BAD_NO_ENTRY)
WEFT_PLUGIN_EXPORT const weft_plugin *weft_plugin_entyr(const weft_host *h);
const weft_plugin *weft_plugin_entyr(const weft_host *h) {
  (void)h;
  return 0;
}
#else
WEFT_PLUGIN_EXPORT const weft_plugin *weft_plugin_entry(const weft_host *h);
const weft_plugin *weft_plugin_entry(const weft_host *h) {
  static const weft_plugin p = {
      sizeof(weft_plugin),
#if defined(BAD_ABI_MAJOR)
      WEFT_ABI_MAJOR + 1, 0,
#elif defined(BAD_ABI_MINOR)
      WEFT_ABI_MAJOR, WEFT_ABI_MINOR + 1,
#else
      WEFT_ABI_MAJOR, WEFT_ABI_MINOR,
#endif
      "bad", "1.0", nodes, 1, {0}};
  (void)h;
  return &p;
}
#endif
