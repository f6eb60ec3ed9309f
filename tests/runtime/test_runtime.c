/* test_runtime.c - errors, suggestions, the plugin loader and registry. */
#include "common.h"

TEST(error_names_and_exit_codes) {
  ASSERT_STR_EQ(weft_err_name(WEFT_ESYNTAX), "ESYNTAX");
  ASSERT_STR_EQ(weft_strerror(WEFT_ECYCLE), "graph has a cycle");
  ASSERT_STR_EQ(weft_err_name(12345), "EUNKNOWN");
  ASSERT_EQ(weft_exit_code(0), 0);
  ASSERT_EQ(weft_exit_code(WEFT_ESYNTAX), 2);
  ASSERT_EQ(weft_exit_code(WEFT_ETYPE), 2);
  ASSERT_EQ(weft_exit_code(WEFT_EFORMAT), 2);
  ASSERT_EQ(weft_exit_code(WEFT_ERUN), 1);
  ASSERT_EQ(weft_exit_code(WEFT_ENOMEM), 1);
  ASSERT_EQ(weft_exit_code(WEFT_ECANCELED), 130);
  ASSERT(WEFT_EINVAL < 0 && WEFT_EINTERNAL < 0);
}

TEST(edit_distance_counts_edits_and_transpositions) {
  ASSERT_EQ(weft__edit_distance("KSampler", "KSampler"), 0);
  ASSERT_EQ(weft__edit_distance("KSamplr", "KSampler"), 1);
  ASSERT_EQ(weft__edit_distance("KSmapler", "KSampler"), 1);
  ASSERT_EQ(weft__edit_distance("ksampler", "KSampler"), 0);
  ASSERT_EQ(weft__edit_distance("", "abc"), 3);
  ASSERT_EQ(weft__edit_distance("kitten", "sitting"), 3);
}

TEST(closest_name_suggests_only_close_names) {
  const char *const ops[] = {"KSampler", "KSamplerAdvanced", "VAEDecode",
                             "CLIPTextEncode"};
  ASSERT_STR_EQ(weft__closest("KSamplr", ops, 4), "KSampler");
  ASSERT_STR_EQ(weft__closest("VAEDecod", ops, 4), "VAEDecode");
  ASSERT_STR_EQ(weft__closest("cliptextencode", ops, 4), "CLIPTextEncode");
  ASSERT(weft__closest("Banana", ops, 4) == NULL);
  ASSERT(weft__closest("x", ops, 0) == NULL);
}

static char *bad_path(const char *name) {
  static char p[4096];
  snprintf(p, sizeof p, "%s/bad_%s.so", getenv("WEFT_TEST_BAD_PLUGINS"),
           name);
  return p;
}

TEST(plugin_loads_and_registers_its_ops) {
  weft_ctx *ctx = test_ctx();
  ASSERT(weft_op_count(ctx) >= 9);
  const weft_node_def *d = weft_op_find(ctx, "TestAdd");
  ASSERT(d != NULL);
  ASSERT_EQ(d->n_inputs, 2);
  ASSERT_EQ(d->n_params, 3);
  ASSERT_STR_EQ(d->params[1].choices[1], "subtract");
  ASSERT_CONTAINS(weft_op_origin(ctx, "TestAdd"), "testnodes.so");
  ASSERT(weft_op_find(ctx, "Nope") == NULL);
  weft_ctx_free(ctx);
}

TEST(plugin_of_other_abi_major_is_refused_naming_file_and_versions) {
  weft_ctx *ctx;
  ASSERT_OK(weft_ctx_new(&ctx));
  ASSERT_EQ(weft_plugin_load(ctx, bad_path("abi_major")), WEFT_EABI);
  ASSERT_CONTAINS(weft_ctx_error(ctx), "bad_abi_major.so");
  char want[128];
  snprintf(want, sizeof want, "built for weft ABI %d.0, this runtime has ABI "
           "%d.%d", WEFT_ABI_MAJOR + 1, WEFT_ABI_MAJOR, WEFT_ABI_MINOR);
  ASSERT_CONTAINS(weft_ctx_error(ctx), want);
  ASSERT_EQ(weft_op_count(ctx), 0);
  weft_ctx_free(ctx);
}

TEST(plugin_of_newer_abi_minor_is_refused) {
  weft_ctx *ctx;
  ASSERT_OK(weft_ctx_new(&ctx));
  ASSERT_EQ(weft_plugin_load(ctx, bad_path("abi_minor")), WEFT_EABI);
  ASSERT_CONTAINS(weft_ctx_error(ctx), "bad_abi_minor.so");
  ASSERT_CONTAINS(weft_ctx_error(ctx), "newer than this runtime");
  weft_ctx_free(ctx);
}

TEST(plugin_without_entry_symbol_is_refused_naming_file) {
  weft_ctx *ctx;
  ASSERT_OK(weft_ctx_new(&ctx));
  ASSERT_EQ(weft_plugin_load(ctx, bad_path("no_entry")), WEFT_EPLUGIN);
  ASSERT_CONTAINS(weft_ctx_error(ctx), "bad_no_entry.so: not a weft plugin");
  ASSERT_CONTAINS(weft_ctx_error(ctx), "weft_plugin_entry");
  weft_ctx_free(ctx);
}

TEST(plugin_node_without_run_is_refused_naming_op_and_field) {
  weft_ctx *ctx;
  ASSERT_OK(weft_ctx_new(&ctx));
  ASSERT_EQ(weft_plugin_load(ctx, bad_path("no_run")), WEFT_EPLUGIN);
  ASSERT_CONTAINS(weft_ctx_error(ctx),
                  "bad_no_run.so: node 'TestDup': required callback 'run' "
                  "is missing");
  weft_ctx_free(ctx);
}

TEST(duplicate_op_names_both_files) {
  weft_ctx *ctx;
  ASSERT_OK(weft_ctx_new(&ctx));
  ASSERT_OK(weft_plugin_load(ctx, bad_path("dup_a")));
  ASSERT_EQ(weft_plugin_load(ctx, bad_path("dup_b")), WEFT_EDUP);
  ASSERT_CONTAINS(weft_ctx_error(ctx), "op 'TestDup' from ");
  ASSERT_CONTAINS(weft_ctx_error(ctx), "bad_dup_b.so is already registered "
                                       "by ");
  ASSERT_CONTAINS(weft_ctx_error(ctx), "bad_dup_a.so");
  ASSERT_EQ(weft_op_count(ctx), 1);
  weft_ctx_free(ctx);
}

TEST(missing_plugin_file_is_an_error_naming_it) {
  weft_ctx *ctx;
  ASSERT_OK(weft_ctx_new(&ctx));
  ASSERT_EQ(weft_plugin_load(ctx, "/nonexistent/x.so"), WEFT_ENOENT);
  ASSERT_CONTAINS(weft_ctx_error(ctx), "/nonexistent/x.so");
  /* a missing directory on the plugin path is fine */
  ASSERT_OK(weft_plugin_load_dir(ctx, "/nonexistent"));
  weft_ctx_free(ctx);
}

/* A descriptor from an older minor: smaller structs must still load, with
 * the missing fields read as zero. */
typedef struct old_port {
  uint32_t struct_size;
  const char *name;
  weft_type type;
  const char *type_name;
} old_port;

static int old_run(weft_call *c) {
  c->outputs[0] = c->host->int_new(c, 7);
  return 0;
}

TEST(descriptor_with_smaller_struct_sizes_loads) {
  static const old_port outs[] = {
      {sizeof(old_port), "value", WEFT_TYPE_INT, NULL}};
  static weft_node_def def;
  memset(&def, 0, sizeof def);
  def.struct_size = offsetof(weft_node_def, destroy); /* no destroy/fp */
  def.op = "OldNode";
  def.outputs = (const weft_port_def *)(const void *)outs;
  def.n_outputs = 1;
  def.run = old_run;
  static const weft_node_def *const nodes[] = {&def};
  weft_plugin p = {offsetof(weft_plugin, reserved), WEFT_ABI_MAJOR, 0, "old",
                   "1", nodes, 1, {0}};
  weft_ctx *ctx;
  ASSERT_OK(weft_ctx_new(&ctx));
  ASSERT_OK(weft_plugin_register(ctx, &p, "old-plugin"));
  const weft_node_def *d = weft_op_find(ctx, "OldNode");
  ASSERT(d && d->outputs[0].flags == 0 && d->outputs[0].doc == NULL);
  ASSERT(d->fingerprint == NULL);
  weft_graph *g;
  const char *y = "version: 1\nnodes:\n  a: {op: OldNode}\n"
                  "outputs:\n  v: a.value\n";
  ASSERT_OK(weft_graph_load_string(ctx, y, strlen(y), "g.yaml", &g));
  ASSERT_OK(weft_graph_run(ctx, g));
  char buf[64];
  ASSERT_OK(weft_graph_output_format(g, 0, buf, sizeof buf));
  ASSERT_STR_EQ(buf, "7");
  weft_graph_free(g);
  weft_ctx_free(ctx);
}

TEST(op_print_documents_inputs_params_and_outputs) {
  weft_ctx *ctx = test_ctx();
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  weft_op_print(weft_op_find(ctx, "TestAdd"), f);
  fclose(f);
  ASSERT_CONTAINS(text, "TestAdd  (test)");
  ASSERT_CONTAINS(text, "Adds or subtracts two integers.");
  ASSERT_CONTAINS(text, "b                      INT           optional");
  ASSERT_CONTAINS(text, "bias                   INT           default 0 "
                        "[-100..100]");
  ASSERT_CONTAINS(text, "mode                   ENUM          default add  "
                        "one of: add, subtract");
  ASSERT_CONTAINS(text, "scale                  FLOAT         default 1 "
                        "[0..10]");
  free(text);
  weft_ctx_free(ctx);
}

TEST(values_refcount_and_attributes) {
  int64_t shape[2] = {2, 3};
  weft_value *t = weft__value_tensor(WEFT_TYPE_LATENT, WEFT_F32, 2, shape);
  ASSERT(t && t->t.stride[0] == 3 && t->t.stride[1] == 1);
  ASSERT_EQ(((uintptr_t)t->t.data) % 64, 0);
  weft_value *m = weft__value_int(WEFT_TYPE_INT, 5);
  ASSERT_OK(weft__host.value_set_attr(t, "noise_mask", m));
  weft__value_release(m); /* t holds it now */
  ASSERT_EQ(weft__host.value_int(weft__host.value_get_attr(t, "noise_mask")),
            5);
  ASSERT(weft__host.value_get_attr(t, "other") == NULL);
  weft__value_retain(t);
  ASSERT_EQ(atomic_load(&t->refs), 2);
  weft__value_release(t);
  weft__value_release(t); /* ASan checks nothing leaks */
  /* an impossible shape fails cleanly */
  int64_t huge[2] = {INT64_MAX / 2, 4};
  ASSERT(weft__value_tensor(WEFT_TYPE_TENSOR, WEFT_F32, 2, huge) == NULL);
}
