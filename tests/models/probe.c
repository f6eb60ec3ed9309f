/* probe.c - the graph-running model tests' shared helpers (probe.h). */
#include "probe.h"

#include "png_io.h"

weft_st_file *ex_open(const char *rel) {
  char path[4096], err[1024];
  snprintf(path, sizeof path, "%s/fixtures/sd15_extras/%s", weft_test_srcdir(),
           rel);
  weft_st_file *f = NULL;
  int r = weft_st_open(path, &f, err, sizeof err);
  if (r) fprintf(stderr, "%s\n", err);
  ASSERT_OK(r);
  return f;
}

const weft_st_tensor *ex_get(weft_st_file *f, const char *key) {
  const weft_st_tensor *t = weft_st_find(f, key);
  if (!t) fprintf(stderr, "fixture has no '%s'\n", key);
  ASSERT(t != NULL);
  return t;
}

const float *ex_ref(weft_st_file *f, const char *key, int64_t numel) {
  const weft_st_tensor *t = ex_get(f, key);
  ASSERT(t->dtype == WEFT_ST_F32);
  if (numel) ASSERT_EQ(t->nbytes, numel * 4);
  return t->data;
}

/* ---- probe nodes --------------------------------------------------------- */

int probe_save(weft_call *c, const char *name, int ndim, const int64_t *shape,
               const float *data, const weft_tensor *noise_mask) {
  const weft_host *h = c->host;
  char path[4096], err[1024];
  snprintf(path, sizeof path, "%s/%s.safetensors", h->output_dir(c), name);
  weft_st_writer *w = NULL;
  int r = weft_st_writer_new(&w);
  if (!r) r = weft_st_writer_add(w, "out", WEFT_ST_F32, ndim, shape, data);
  if (!r && noise_mask)
    r = weft_st_writer_add(w, "noise_mask", WEFT_ST_F32, noise_mask->ndim,
                           noise_mask->shape, noise_mask->data);
  if (!r) r = weft_st_writer_save(w, path, err, sizeof err);
  weft_st_writer_free(w);
  if (r) h->error(c, "cannot write %s", path);
  if (!r && !(c->outputs[0] = h->string_new(c, path))) r = WEFT_ENOMEM;
  return r;
}

/* ProbeLatent (with the LATENT's noise_mask) and ProbeImage */
static int probe_value_run(weft_call *c) {
  const weft_host *h = c->host;
  const weft_tensor *t = h->value_tensor(c->inputs[0]);
  const weft_value *nm = h->value_get_attr(c->inputs[0], "noise_mask");
  return probe_save(c, weft_param_string(c, 0), t->ndim, t->shape, t->data,
                    nm ? h->value_tensor(nm) : NULL);
}

static const weft_port_def latent_in[] = {
    {sizeof(weft_port_def), "samples", WEFT_TYPE_LATENT, NULL, 0, "probe"}};
static const weft_port_def image_in[] = {
    {sizeof(weft_port_def), "image", WEFT_TYPE_IMAGE, NULL, 0, "probe"}};
static const weft_port_def path_out[] = {
    {sizeof(weft_port_def), "path", WEFT_TYPE_STRING, NULL, 0, "probe"}};
static const weft_param_def probe_params[] = {
    {sizeof(weft_param_def), "out", WEFT_TYPE_STRING, 0, 0, "", 1, 0, NULL, 0,
     "file name to write in the output directory, without .safetensors"}};
static const weft_node_def probe_latent_def = {
    .struct_size = sizeof(weft_node_def),
    .op = "ProbeLatent",
    .category = "test",
    .doc = "Writes a LATENT (and its noise_mask) to a safetensors file.",
    .inputs = latent_in,
    .n_inputs = 1,
    .outputs = path_out,
    .n_outputs = 1,
    .params = probe_params,
    .n_params = 1,
    .flags = WEFT_NODE_OUTPUT,
    .run = probe_value_run};
static const weft_node_def probe_image_def = {
    .struct_size = sizeof(weft_node_def),
    .op = "ProbeImage",
    .category = "test",
    .doc = "Writes an IMAGE to a safetensors file.",
    .inputs = image_in,
    .n_inputs = 1,
    .outputs = path_out,
    .n_outputs = 1,
    .params = probe_params,
    .n_params = 1,
    .flags = WEFT_NODE_OUTPUT,
    .run = probe_value_run};
static const weft_node_def *const probe_nodes[] = {&probe_latent_def,
                                                   &probe_image_def};
static const weft_plugin probe_plugin = {sizeof(weft_plugin),
                                         WEFT_ABI_MAJOR,
                                         WEFT_ABI_MINOR,
                                         "model-test-probes",
                                         "1",
                                         probe_nodes,
                                         2,
                                         {0}};

/* ---- the in-process runner ----------------------------------------------- */

static void on_event(const weft_event *e, void *user) {
  probe_log *l = user;
  if ((e->kind == WEFT_EV_LOG || e->kind == WEFT_EV_NODE_FAILED) &&
      e->message) {
    size_t n = strlen(l->text);
    snprintf(l->text + n, sizeof l->text - n, "%s\n", e->message);
  }
}

static void set_input(weft_ctx *ctx, weft_graph *g, const char *set) {
  const char *eq = strchr(set, '=');
  ASSERT(eq != NULL);
  char key[256];
  snprintf(key, sizeof key, "%.*s", (int)(eq - set), set);
  int r = weft_graph_set_input(ctx, g, key, eq + 1);
  if (r) fprintf(stderr, "%s\n", weft_ctx_error(ctx));
  ASSERT_OK(r);
}

int probe_run_graph(const char *name, const char *const *sets,
                    const weft_plugin *extra, probe_log *log) {
  probe_log own;
  if (!log) log = &own;
  memset(log, 0, sizeof *log);
  weft_ctx *ctx = NULL;
  ASSERT_OK(weft_ctx_new(&ctx));
  weft_ctx_set_threads(ctx, 2);
  int r = weft_plugin_load_default(ctx, NULL);
  if (r) fprintf(stderr, "%s\n", weft_ctx_error(ctx));
  ASSERT_OK(r);
  ASSERT_OK(weft_plugin_register(ctx, &probe_plugin, "tests/models/probe.c"));
  if (extra) ASSERT_OK(weft_plugin_register(ctx, extra, extra->name));
  ASSERT_OK(weft_ctx_set_output_dir(ctx, weft_test_tmpdir()));
  ASSERT_OK(weft_ctx_set_input_dir(ctx, weft_test_tmpdir()));
  char path[4096];
  snprintf(path, sizeof path, "%s/models/graphs/%s", weft_test_srcdir(), name);
  weft_graph *g = NULL;
  r = weft_graph_load(ctx, path, &g);
  if (r) fprintf(stderr, "%s\n", weft_ctx_error(ctx));
  ASSERT_OK(r);
  snprintf(path, sizeof path,
           "ckpt=%s/fixtures/sd15_tiny/sd15_tiny.safetensors",
           weft_test_srcdir());
  set_input(ctx, g, path);
  for (int i = 0; sets && sets[i]; i++)
    set_input(ctx, g, sets[i]);
  weft_ctx_set_event_cb(ctx, on_event, log);
  r = weft_graph_run(ctx, g);
  if (r) fprintf(stderr, "run: %s\n%s\n", weft_ctx_error(ctx), log->text);
  weft_graph_free(g);
  weft_ctx_free(ctx);
  return r;
}

/* ---- files --------------------------------------------------------------- */

weft_st_file *probe_file(const char *name) {
  char path[4096], err[1024];
  snprintf(path, sizeof path, "%s/%s.safetensors", weft_test_tmpdir(), name);
  weft_st_file *f = NULL;
  int r = weft_st_open(path, &f, err, sizeof err);
  if (r) fprintf(stderr, "%s\n", err);
  ASSERT_OK(r);
  return f;
}

float *probe_read(const char *name, int64_t numel) {
  weft_st_file *f = probe_file(name);
  const float *d = ex_ref(f, "out", numel);
  float *x = malloc((size_t)numel * sizeof *x);
  ASSERT(x != NULL);
  memcpy(x, d, (size_t)numel * sizeof *x);
  weft_st_close(f);
  return x;
}

void probe_write_png(const weft_st_tensor *t, const float *mask,
                     const char *name) {
  ASSERT(t->dtype == WEFT_ST_U8 && t->ndim == 3 && t->shape[2] == 3);
  int64_t n = t->shape[0] * t->shape[1];
  int ch = mask ? 4 : 3;
  float *px = malloc((size_t)(n * ch) * sizeof *px);
  ASSERT(px != NULL);
  const uint8_t *u = t->data;
  /* the middle of each level: SaveImage-style truncation gives u back */
  for (int64_t i = 0; i < n; i++) {
    for (int c = 0; c < 3; c++)
      px[i * ch + c] = ((float)u[i * 3 + c] + 0.5f) / 255.0f;
    if (mask) px[i * ch + 3] = 1.0f - mask[i];
  }
  weft__png_pixels p = {px, (int32_t)t->shape[1], (int32_t)t->shape[0], ch};
  char path[4096], err[1024];
  snprintf(path, sizeof path, "%s/%s", weft_test_tmpdir(), name);
  int r = weft__png_write(path, &p, NULL, 0, 6, err, sizeof err);
  if (r) fprintf(stderr, "%s\n", err);
  ASSERT_OK(r);
  free(px);
}

/* ---- comparisons --------------------------------------------------------- */

void probe_compare_png(const char *png, const weft_st_tensor *want, int tol,
                       const char *what) {
  weft__png_image img;
  char err[1024];
  int r = weft__png_read(png, &img, err, sizeof err);
  if (r) fprintf(stderr, "%s\n", err);
  ASSERT_OK(r);
  ASSERT_EQ(img.width, 64);
  ASSERT_EQ(img.height, 64);
  ASSERT(want->dtype == WEFT_ST_U8 && want->nbytes == 64 * 64 * 3);
  const uint8_t *w = want->data;
  int worst = 0;
  for (int i = 0; i < 64 * 64 * 3; i++) {
    int d = abs((int)lrintf(img.rgb[i] * 255.0f) - w[i]);
    worst = d > worst ? d : worst;
  }
  fprintf(stderr, "%s: max pixel diff %d/255\n", what, worst);
  ASSERT(worst <= tol);
  weft__png_image_free(&img);
}

void probe_check_latent(const float *got, const float *want, int64_t n,
                        const char *what) {
  const double s = 0.18215;
  double worst = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = fabs((double)got[i] - want[i]);
    double tol = (1e-3 + 1e-5 * fabs(want[i] * s)) / s;
    if (!(d <= tol))
      fprintf(stderr, "%s [%lld]: %.7g want %.7g\n", what, (long long)i, got[i],
              want[i]);
    ASSERT(d <= tol);
    worst = d > worst ? d : worst;
  }
  fprintf(stderr, "%s: latent max diff %.3g\n", what, worst);
}

/* ---- the weft command ---------------------------------------------------- */

void probe_weft_run(const char *const *args, char **err_out) {
  const char *a[96] = {weft_test_built("cli/weft"), "run"};
  int n = 2;
  for (int i = 0; args[i]; i++) {
    ASSERT(n < 95);
    a[n++] = args[i];
  }
  a[n] = NULL;
  char *err = NULL;
  int code = weft_test_spawn(a, NULL, &err, 120);
  if (code) fprintf(stderr, "weft run: %s", err ? err : "");
  ASSERT_EQ(code, 0);
  if (err_out)
    *err_out = err;
  else
    free(err);
}

void probe_weft_validate(const char *graph) {
  char g[4096];
  snprintf(g, sizeof g, "%s/../graphs/%s", weft_test_srcdir(), graph);
  const char *a[] = {weft_test_built("cli/weft"), "validate", g, NULL};
  char *err = NULL;
  int code = weft_test_spawn(a, NULL, &err, 60);
  if (code) fprintf(stderr, "%s", err ? err : "");
  ASSERT_EQ(code, 0);
  free(err);
}
