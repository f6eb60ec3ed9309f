/* test_comfy.c - ComfyUI interchange through the weft command: API-format
 * workflows run (same pixels as the equivalent YAML graphs) and convert
 * both ways; bad workflows are refused naming node id, class_type and
 * input; PNGs carry "parameters", "prompt" and "weft" text, and `weft run
 * IMAGE.png` reproduces the image bit for bit. */
#include <jansson.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "json_u64.h"
#include "png_io.h"
#include "png_meta.h"
#include "test.h"

/* ---- helpers ------------------------------------------------------------ */

static const char *weft(void) {
  return weft_test_built("cli/weft");
}

/* The source tree's root: workflows name files relative to it, as ComfyUI
 * names them relative to its input folder. */
static const char *root(void) {
  static char p[4096];
  snprintf(p, sizeof p, "%s/..", weft_test_srcdir());
  return p;
}

static char *path_of(const char *fmt, const char *a) {
  char *p = malloc(8192);
  snprintf(p, 8192, fmt, a);
  return p;
}

static char *workflow(const char *name) {
  char *p = malloc(8192);
  snprintf(p, 8192, "%s/comfy/workflows/%s", weft_test_srcdir(), name);
  return p;
}

static char *subdir(const char *name) {
  char *d = malloc(8192);
  snprintf(d, 8192, "%s/%s", weft_test_tmpdir(), name);
  return d;
}

/* "weft: <tmpdir>/" + rest: what weft prints for a file made by
 * temp_workflow. */
static const char *tmp_msg(const char *rest) {
  static char m[8192];
  snprintf(m, sizeof m, "weft: %s/%s", weft_test_tmpdir(), rest);
  return m;
}

/* Runs weft with argv (NULL-terminated, without the program); returns the
 * exit code, stdout and stderr (caller frees; either may be NULL). */
static int run_weft(const char *const *args, char **out, char **err) {
  const char *a[64];
  int n = 0;
  a[n++] = weft();
  for (int i = 0; args[i] && n < 63; i++)
    a[n++] = args[i];
  a[n] = NULL;
  char *o = NULL, *e = NULL;
  int code = weft_test_spawn(a, &o, &e, 120);
  if (out)
    *out = o;
  else
    free(o);
  if (err)
    *err = e;
  else
    free(e);
  return code;
}

/* `weft run` that must succeed. */
static void run_ok(const char *const *args) {
  char *err = NULL;
  int code = run_weft(args, NULL, &err);
  if (code) fprintf(stderr, "weft run failed (%d): %s", code, err);
  ASSERT_EQ(code, 0);
  free(err);
}

static weft__png_image read_png(const char *path) {
  weft__png_image img;
  char err[1024];
  int r = weft__png_read(path, &img, err, sizeof err);
  if (r) fprintf(stderr, "%s\n", err);
  ASSERT_OK(r);
  return img;
}

/* The two files decode to the same pixels, exactly. */
static void assert_same_pixels(const char *a, const char *b) {
  weft__png_image x = read_png(a), y = read_png(b);
  ASSERT_EQ(x.width, y.width);
  ASSERT_EQ(x.height, y.height);
  ASSERT_EQ(memcmp(x.rgb, y.rgb, sizeof(float) * 3 * x.width * x.height), 0);
  weft__png_image_free(&x);
  weft__png_image_free(&y);
}

static bool same_pixels(const char *a, const char *b) {
  weft__png_image x = read_png(a), y = read_png(b);
  bool same = x.width == y.width && x.height == y.height &&
              !memcmp(x.rgb, y.rgb, sizeof(float) * 3 * x.width * x.height);
  weft__png_image_free(&x);
  weft__png_image_free(&y);
  return same;
}

/* A PNG text chunk's value (malloc'd) or NULL. */
static char *png_text(const char *path, const char *key) {
  weft__png_image img = read_png(path);
  const char *v = weft__png_text_get(&img, key);
  char *s = v ? strdup(v) : NULL;
  weft__png_image_free(&img);
  return s;
}

/* Writes a workflow (JSON text) into the temp dir; returns its path. */
static char *temp_workflow(const char *name, const char *json) {
  return weft_test_write_file(weft_test_tmpdir(), name, json);
}

/* weft convert of JSON text: exit code and stderr. */
static int convert_text(const char *json, char **out, char **err) {
  char *p = temp_workflow("w.json", json);
  const char *a[] = {"convert", p, NULL};
  int code = run_weft(a, out, err);
  free(p);
  return code;
}

/* The error weft convert gives for a workflow (exit 2 asserted). */
static char *convert_error(const char *json) {
  char *err = NULL;
  ASSERT_EQ(convert_text(json, NULL, &err), 2);
  return err;
}

/* A small valid workflow around which the error cases are built. */
#define CKPT "tests/fixtures/sd15_tiny/sd15_tiny.safetensors"
#define LOADER_NODE                                                            \
  "\"1\": {\"class_type\": \"CheckpointLoaderSimple\", \"inputs\": "           \
  "{\"ckpt_name\": \"" CKPT "\"}}"

/* ---- running workflows -------------------------------------------------- */

TEST(txt2img_workflow_gives_the_yaml_graphs_pixels) {
  char *dj = subdir("json"), *dy = subdir("yaml");
  char *wf = workflow("txt2img_api.json");
  const char *a[] = {"run",          wf, "--input-dir", root(),
                     "--output-dir", dj, "-q",          NULL};
  run_ok(a);
  char *graph = path_of("%s/../graphs/txt2img.yaml", weft_test_srcdir());
  const char *b[] = {
      "run",          graph,
      "--input-dir",  root(),
      "--output-dir", dy,
      "--set",        "ckpt=" CKPT,
      "--set",        "prompt=a watercolor fox in a snowy forest",
      "--set",        "negative=blurry, low quality",
      "--set",        "seed=42",
      "--set",        "steps=4",
      "--set",        "cfg=7.5",
      "--set",        "sampler=euler",
      "--set",        "scheduler=normal",
      "--set",        "width=64",
      "--set",        "height=64",
      "-q",           NULL};
  run_ok(b);
  char *pj = path_of("%s/weft_txt2img_00001_.png", dj);
  char *py = path_of("%s/txt2img_00001_.png", dy);
  assert_same_pixels(pj, py);
  free(pj), free(py), free(graph), free(wf), free(dj), free(dy);
}

TEST(img2img_workflow_gives_the_yaml_graphs_pixels) {
  char *d = subdir("out");
  char *wf = workflow("img2img_api.json");
  char *graph = path_of("%s/comfy/graphs/img2img.yaml", weft_test_srcdir());
  const char *a[] = {"run",          wf, "--input-dir", root(),
                     "--output-dir", d,  "-q",          NULL};
  const char *b[] = {"run",          graph, "--input-dir", root(),
                     "--output-dir", d,     "-q",          NULL};
  run_ok(a);
  run_ok(b);
  char *pj = path_of("%s/weft_img2img_00001_.png", d);
  char *py = path_of("%s/img2img_00001_.png", d);
  assert_same_pixels(pj, py);
  /* denoise 0.6 keeps the photo's layout but is not the photo scaled: a
   * full denoise gives another image */
  const char *c[] = {"run", graph,   "--input-dir", root(), "--output-dir",
                     d,     "--set", "denoise=1",   "-q",   NULL};
  run_ok(c);
  char *full = path_of("%s/img2img_00002_.png", d);
  ASSERT(!same_pixels(py, full));
  free(full), free(pj), free(py), free(graph), free(wf), free(d);
}

/* A rank-2 kohya LoRA for the tiny model: one text-encoder linear and one
 * UNet cross-attention key projection, deterministic values. */
static void write_tiny_lora(const char *path) {
  static const struct {
    const char *key;
    int64_t rows, cols;
  } t[] = {
      {"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", 2, 32},
      {"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight", 64, 2},
      {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
       ".lora_down.weight",
       2, 32},
      {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
       ".lora_up.weight",
       32, 2},
  };
  char header[4096];
  size_t hn = 0, off = 0;
  hn += (size_t)snprintf(header + hn, sizeof header - hn, "{");
  for (int i = 0; i < 4; i++) {
    size_t bytes = (size_t)(t[i].rows * t[i].cols) * 4;
    hn += (size_t)snprintf(header + hn, sizeof header - hn,
                           "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld,%lld],"
                           "\"data_offsets\":[%zu,%zu]}",
                           i ? "," : "", t[i].key, (long long)t[i].rows,
                           (long long)t[i].cols, off, off + bytes);
    off += bytes;
  }
  hn += (size_t)snprintf(header + hn, sizeof header - hn, "}");
  while (hn % 8)
    header[hn++] = ' ';
  FILE *f = fopen(path, "wb");
  ASSERT(f != NULL);
  uint64_t len = hn;
  unsigned char le[8];
  for (int i = 0; i < 8; i++)
    le[i] = (unsigned char)(len >> (8 * i));
  fwrite(le, 1, 8, f);
  fwrite(header, 1, hn, f);
  for (int i = 0; i < 4; i++)
    for (int64_t k = 0; k < t[i].rows * t[i].cols; k++) {
      float v = 0.5f * (float)sin(0.37 * (double)(k + 1) + i);
      fwrite(&v, 4, 1, f); /* x86: little-endian like the format */
    }
  ASSERT_EQ(fclose(f), 0);
}

/* The LoRA workflow's inputs dir: the LoRA written next to a link to the
 * tree's tests/ folder, so that both relative names resolve. */
static char *lora_input_dir(void) {
  char *in = subdir("in");
  char *tests = path_of("%s/tests", in);
  ASSERT_OK(mkdir(in, 0755));
  ASSERT_OK(symlink(weft_test_srcdir(), tests));
  char *lora = path_of("%s/lora_tiny.safetensors", in);
  write_tiny_lora(lora);
  free(lora), free(tests);
  return in;
}

/* LoraLoader landed after this test was first written (then it checked
 * that the class_type was reported unknown); it now runs the workflow. */
TEST(lora_workflow_gives_the_yaml_graphs_pixels) {
  char *in = lora_input_dir(), *d = subdir("out");
  char *wf = workflow("lora_api.json");
  char *graph = path_of("%s/comfy/graphs/lora.yaml", weft_test_srcdir());
  const char *a[] = {"run",          wf, "--input-dir", in,
                     "--output-dir", d,  "-q",          NULL};
  const char *b[] = {"run",          graph, "--input-dir", in,
                     "--output-dir", d,     "-q",          NULL};
  const char *c[] = {"run", graph,   "--input-dir",      in,   "--output-dir",
                     d,     "--set", "strength_model=0", "-q", NULL};
  run_ok(a);
  run_ok(b);
  run_ok(c);
  char *pj = path_of("%s/weft_lora_00001_.png", d);
  char *py = path_of("%s/lora_00001_.png", d);
  char *p0 = path_of("%s/lora_00002_.png", d);
  assert_same_pixels(pj, py);
  ASSERT(!same_pixels(py, p0)); /* the UNet patch changes the image */
  free(pj), free(py), free(p0), free(graph), free(wf), free(d), free(in);
}

TEST(post_body_form_converts_like_the_bare_workflow) {
  char *wf = workflow("txt2img_api.json");
  char *text = weft_test_read_file(wf, NULL);
  size_t n = strlen(text) + 128;
  char *body = malloc(n);
  snprintf(body, n,
           "{\"client_id\": \"5f0e\", \"prompt\": %s, \"extra_data\": "
           "{\"extra_pnginfo\": {}}}",
           text);
  char *a = NULL, *b = NULL;
  ASSERT_EQ(convert_text(text, &a, NULL), 0);
  ASSERT_EQ(convert_text(body, &b, NULL), 0);
  ASSERT_STR_EQ(a, b);
  free(a), free(b), free(body), free(text), free(wf);
}

/* ---- conversion --------------------------------------------------------- */

TEST(convert_writes_readable_yaml) {
  char *out = NULL;
  ASSERT_EQ(
      convert_text("{\"9\": {\"class_type\": \"SaveImage\", \"inputs\": "
                   "{\"images\": [\"8\", 0], \"filename_prefix\": \"x\"}, "
                   "\"_meta\": {\"title\": \"Save Image\"}},"
                   "\"8\": {\"class_type\": \"VAEDecode\", \"inputs\": "
                   "{\"vae\": [\"1\", 2], \"samples\": [\"5\", 0]}},"
                   "\"5\": {\"class_type\": \"VAEEncode\", \"inputs\": "
                   "{\"pixels\": [\"10\", 0], \"vae\": [\"1\", 2]}},"
                   "\"10\": {\"class_type\": \"LoadImage\", \"inputs\": "
                   "{\"image\": \"a photo.png\", \"upload\": \"image\"}, "
                   "\"_meta\": {\"title\": \"Load\\nImage\"}}," LOADER_NODE "}",
                   &out, NULL),
      0);
  ASSERT_STR_EQ(
      out,
      "# Converted by weft from the ComfyUI API workflow w.json.\n"
      "# Node ids are the workflow's; a comment above a node is its ComfyUI "
      "title.\n"
      "version: 1\n"
      "description: \"ComfyUI API workflow w.json\"\n"
      "\n"
      "nodes:\n"
      "  1:\n"
      "    op: CheckpointLoaderSimple\n"
      "    params:\n"
      "      ckpt_name: tests/fixtures/sd15_tiny/sd15_tiny.safetensors\n"
      "\n"
      "  # Load Image\n"
      "  10:\n"
      "    op: LoadImage\n"
      "    params:\n"
      "      image: \"a photo.png\"\n"
      "    # not weft inputs (ComfyUI UI widgets): upload\n"
      "\n"
      "  5:\n"
      "    op: VAEEncode\n"
      "    inputs:\n"
      "      pixels: 10.IMAGE\n"
      "      vae: 1.VAE\n"
      "\n"
      "  8:\n"
      "    op: VAEDecode\n"
      "    inputs:\n"
      "      samples: 5.LATENT\n"
      "      vae: 1.VAE\n"
      "\n"
      "  # Save Image\n"
      "  9:\n"
      "    op: SaveImage\n"
      "    inputs:\n"
      "      images: 8.IMAGE\n"
      "    params:\n"
      "      filename_prefix: x\n"
      "\n"
      "outputs:\n"
      "  9: 9.files\n");
  free(out);
}

/* API JSON -> YAML -> (weft validate) -> API JSON keeps every node, class
 * and input of the original; YAML -> API -> YAML is a fixed point. */
TEST(convert_round_trips) {
  char *wf = workflow("img2img_api.json");
  char *yaml = path_of("%s/g.yaml", weft_test_tmpdir());
  char *api = path_of("%s/g_api.json", weft_test_tmpdir());
  char *yaml2 = path_of("%s/g2.yaml", weft_test_tmpdir());
  const char *a[] = {"convert", wf, "-o", yaml, NULL};
  run_ok(a);
  char *out = NULL;
  const char *v[] = {"validate", yaml, NULL};
  ASSERT_EQ(run_weft(v, &out, NULL), 0);
  ASSERT_CONTAINS(out, "g.yaml: ok (9 nodes)");
  free(out);
  const char *b[] = {"convert", yaml, "--to-api", "-o", api, NULL};
  run_ok(b);
  json_t *orig = json_load_file(wf, 0, NULL),
         *back = json_load_file(api, 0, NULL);
  ASSERT(orig && back);
  ASSERT_EQ(json_object_size(back), json_object_size(orig));
  const char *id;
  json_t *node;
  json_object_foreach(orig, id, node) {
    json_t *bn = json_object_get(back, id);
    ASSERT(bn != NULL);
    ASSERT_STR_EQ(json_string_value(json_object_get(bn, "class_type")),
                  json_string_value(json_object_get(node, "class_type")));
    const char *name;
    json_t *val;
    json_object_foreach(json_object_get(node, "inputs"), name, val) {
      if (!strcmp(name, "upload")) continue; /* a UI widget, dropped */
      json_t *bv = json_object_get(json_object_get(bn, "inputs"), name);
      if (!json_equal(val, bv)) {
        char *s = json_dumps(bv, JSON_ENCODE_ANY);
        fprintf(stderr, "node %s input %s: %s\n", id, name, s);
        free(s);
      }
      ASSERT(json_equal(val, bv));
    }
  }
  json_decref(orig), json_decref(back);
  /* the API JSON converts back to the same YAML, up to the titles */
  const char *c[] = {"convert", api, "-o", yaml2, NULL};
  run_ok(c);
  const char *v2[] = {"validate", yaml2, NULL};
  ASSERT_EQ(run_weft(v2, NULL, NULL), 0);
  const char *d[] = {"convert", yaml2, "--to-api", NULL};
  char *api2 = NULL;
  ASSERT_EQ(run_weft(d, &api2, NULL), 0);
  char *api1 = weft_test_read_file(api, NULL);
  ASSERT_STR_EQ(api2, api1);
  free(api1), free(api2), free(wf), free(yaml), free(api), free(yaml2);
}

/* Text that YAML would otherwise read differently survives conversion:
 * quotes, backslashes, line breaks, tabs, '$' (a graph input in weft),
 * "$$", non-ASCII, NEL (a YAML line break). */
TEST(convert_keeps_awkward_strings) {
  static const char *const texts[] = {"say \"hi\" \\ there",
                                      "two\nlines\tand a tab",
                                      "$prompt",
                                      "$$x",
                                      "caf\xc3\xa9 \xe2\x98\x83",
                                      "nel\xc2\x85here",
                                      "- dash",
                                      "#hash",
                                      "true",
                                      "",
                                      "key: value",
                                      "{flow}"};
  for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
    json_t *s = json_string(texts[i]);
    char *js = json_dumps(s, JSON_ENCODE_ANY);
    char wf[2048];
    snprintf(wf, sizeof wf,
             "{" LOADER_NODE ", \"2\": {\"class_type\": \"CLIPTextEncode\", "
             "\"inputs\": {\"clip\": [\"1\", 1], \"text\": %s}}}",
             js);
    char *p = temp_workflow("w.json", wf);
    char *yaml = path_of("%s/w.yaml", weft_test_tmpdir());
    const char *a[] = {"convert", p, "-o", yaml, NULL};
    run_ok(a);
    const char *b[] = {"convert", yaml, "--to-api", NULL};
    char *api = NULL;
    ASSERT_EQ(run_weft(b, &api, NULL), 0);
    json_t *back = json_loads(api, 0, NULL);
    json_t *t = json_object_get(
        json_object_get(json_object_get(back, "2"), "inputs"), "text");
    ASSERT_STR_EQ(json_string_value(t), texts[i]);
    json_decref(back), json_decref(s);
    free(api), free(js), free(p), free(yaml);
  }
}

TEST(convert_makes_ids_valid_and_keeps_them_in_comments) {
  char *out = NULL;
  ASSERT_EQ(convert_text("{\"57:1\": {\"class_type\": "
                         "\"CheckpointLoaderSimple\", \"inputs\": "
                         "{\"ckpt_name\": \"m.safetensors\"}}, \"57_1\": "
                         "{\"class_type\": \"CLIPTextEncode\", \"inputs\": "
                         "{\"clip\": [\"57:1\", 1], \"text\": \"x\"}}}",
                         &out, NULL),
            0);
  ASSERT_CONTAINS(out, "  # ComfyUI id 57:1\n  57_1_2:\n"
                       "    op: CheckpointLoaderSimple\n");
  ASSERT_CONTAINS(out, "  57_1:\n    op: CLIPTextEncode\n    inputs:\n"
                       "      clip: 57_1_2.CLIP\n");
  free(out);
}

TEST(convert_to_api_resolves_graph_inputs) {
  char *graph = path_of("%s/../graphs/txt2img.yaml", weft_test_srcdir());
  const char *a[] = {"convert", graph,   "--to-api",      "--set",
                     "steps=3", "--set", "prompt=a tree", NULL};
  char *out = NULL;
  ASSERT_EQ(run_weft(a, &out, NULL), 0);
  json_t *o = json_loads(out, 0, NULL);
  json_t *ks = json_object_get(json_object_get(o, "sample"), "inputs");
  ASSERT_EQ(json_integer_value(json_object_get(ks, "steps")), 3);
  ASSERT_EQ(json_integer_value(json_object_get(ks, "seed")), 42);
  json_t *link = json_pack("[si]", "ckpt", 0);
  ASSERT(json_equal(json_object_get(ks, "model"), link));
  json_decref(link);
  ASSERT_STR_EQ(
      json_string_value(json_object_get(
          json_object_get(json_object_get(o, "positive"), "inputs"), "text")),
      "a tree");
  json_decref(o);
  free(out), free(graph);
}

TEST(convert_refuses_a_yaml_graph_without_to_api) {
  char *graph = path_of("%s/../graphs/txt2img.yaml", weft_test_srcdir());
  const char *a[] = {"convert", graph, NULL};
  char *err = NULL;
  ASSERT_EQ(run_weft(a, NULL, &err), 2);
  ASSERT_CONTAINS(err, "is not a ComfyUI API workflow (JSON); to write a "
                       "graph as API JSON use 'weft convert");
  free(err), free(graph);
}

/* ---- refused workflows -------------------------------------------------- */

TEST(unknown_class_types_are_listed_by_node_id) {
  char *err = convert_error(
      "{" LOADER_NODE ", \"12\": {\"class_type\": \"KSamplr\", \"inputs\": "
      "{}}, \"30\": {\"class_type\": \"UpscaleModelLoader\", \"inputs\": "
      "{\"model_name\": \"4x.pth\"}}}");
  ASSERT_CONTAINS(err,
                  tmp_msg("w.json: node '12': unknown class_type "
                          "'KSamplr' (did you mean 'KSampler'?); node "
                          "'30': unknown class_type "
                          "'UpscaleModelLoader' ('weft nodes' lists the "));
  ASSERT_CONTAINS(err, " node types weft has)\n");
  free(err);
}

TEST(unknown_class_type_exits_2_through_run) {
  char *p = temp_workflow(
      "w.json", "{\"5\": {\"class_type\": \"PreviewImage\", \"inputs\": "
                "{\"images\": [\"5\", 0]}}}");
  const char *a[] = {"run", p, NULL};
  char *err = NULL;
  ASSERT_EQ(run_weft(a, NULL, &err), 2);
  ASSERT_CONTAINS(err, "w.json: node '5': unknown class_type 'PreviewImage'");
  free(err), free(p);
}

TEST(link_to_a_missing_node_is_named) {
  char *err = convert_error(
      "{" LOADER_NODE ", \"2\": {\"class_type\": \"CLIPTextEncode\", "
      "\"inputs\": {\"clip\": [\"11\", 1], \"text\": \"x\"}}}");
  ASSERT_CONTAINS(err, "w.json: node '2' (CLIPTextEncode) input 'clip': "
                       "links to node '11', which is not in the workflow "
                       "(did you mean '1'?)\n");
  free(err);
}

TEST(link_to_an_output_past_the_end_is_named) {
  char *err = convert_error(
      "{" LOADER_NODE ", \"2\": {\"class_type\": \"CLIPTextEncode\", "
      "\"inputs\": {\"clip\": [\"1\", 3], \"text\": \"x\"}}}");
  ASSERT_CONTAINS(err, "w.json: node '2' (CLIPTextEncode) input 'clip': "
                       "links to output 3 of node '1' "
                       "(CheckpointLoaderSimple), which has 3 outputs (0 "
                       "MODEL, 1 CLIP, 2 VAE)\n");
  free(err);
}

TEST(link_of_the_wrong_type_is_named) {
  char *err = convert_error(
      "{" LOADER_NODE ", \"2\": {\"class_type\": \"CLIPTextEncode\", "
      "\"inputs\": {\"clip\": [\"1\", 0], \"text\": \"x\"}}}");
  ASSERT_CONTAINS(err, "w.json: node '2' input 'clip': type mismatch: "
                       "'1.MODEL' is MODEL, but the input takes CLIP\n");
  free(err);
}

TEST(constant_for_a_data_input_is_refused) {
  char *err = convert_error("{" LOADER_NODE
                            ", \"2\": {\"class_type\": \"CLIPTextEncode\", "
                            "\"inputs\": {\"clip\": \"1\", \"text\": \"x\"}}}");
  ASSERT_CONTAINS(err, "w.json: node '2' (CLIPTextEncode) input 'clip': is a "
                       "CLIP connection: it takes a link [node_id, "
                       "output_index], not a string\n");
  free(err);
}

TEST(bad_values_name_node_and_input) {
  char *err = convert_error(
      "{\"4\": {\"class_type\": \"EmptyLatentImage\", \"inputs\": "
      "{\"width\": 64, \"height\": 8, \"batch_size\": 1}}}");
  ASSERT_STR_EQ(err, tmp_msg("w.json: node '4' (EmptyLatentImage) input "
                             "'height': 8 is outside [16, 16384]\n"));
  free(err);
  err = convert_error("{\"4\": {\"class_type\": \"EmptyLatentImage\", "
                      "\"inputs\": {\"width\": 64.5}}}");
  ASSERT_CONTAINS(err, "node '4' (EmptyLatentImage) input 'width': '64.5' "
                       "is not an integer (INT)");
  free(err);
  err = convert_error(
      "{\"5\": {\"class_type\": \"KSamplerAdvanced\", \"inputs\": "
      "{\"sampler_name\": \"eulr\"}}}");
  ASSERT_CONTAINS(err, "node '5' (KSamplerAdvanced) input 'sampler_name': "
                       "'eulr' is not one of: euler,");
  ASSERT_CONTAINS(err, "(did you mean 'euler'?)");
  free(err);
}

TEST(unknown_input_suggests_the_name) {
  char *err = convert_error(
      "{\"4\": {\"class_type\": \"EmptyLatentImage\", \"inputs\": "
      "{\"widht\": 64}}}");
  ASSERT_STR_EQ(err, tmp_msg("w.json: node '4' (EmptyLatentImage): "
                             "EmptyLatentImage has no input 'widht' (did you "
                             "mean 'width'?)\n"));
  free(err);
}

TEST(list_values_and_value_wrapping) {
  /* ComfyUI's {"__value__": ...} wraps a constant; a scalar inside is
   * taken, a list is named */
  char *out = NULL;
  ASSERT_EQ(convert_text("{\"4\": {\"class_type\": \"EmptyLatentImage\", "
                         "\"inputs\": {\"width\": {\"__value__\": 96}}}}",
                         &out, NULL),
            0);
  ASSERT_CONTAINS(out, "      width: 96\n");
  free(out);
  char *err = convert_error("{\"4\": {\"class_type\": \"EmptyLatentImage\", "
                            "\"inputs\": {\"width\": {\"__value__\": [64, "
                            "96]}}}}");
  ASSERT_CONTAINS(err, "node '4' (EmptyLatentImage) input 'width': a list is "
                       "neither a link [node_id, output_index] nor a value "
                       "weft takes: the param holds one INT\n");
  free(err);
}

TEST(cycles_are_named_without_yaml_positions) {
  char *err = convert_error(
      "{\"1\": {\"class_type\": \"ImageInvert\", \"inputs\": {\"image\": "
      "[\"2\", 0]}}, \"2\": {\"class_type\": \"ImageInvert\", \"inputs\": "
      "{\"image\": [\"1\", 0]}}}");
  ASSERT_STR_EQ(err, tmp_msg("w.json: the graph has a cycle: 2 -> 1 -> 2\n"));
  free(err);
}

TEST(missing_required_input_is_named) {
  char *err = convert_error("{" LOADER_NODE ", \"2\": {\"class_type\": "
                            "\"VAEDecode\", \"inputs\": {\"vae\": [\"1\", "
                            "2]}}}");
  ASSERT_STR_EQ(err, tmp_msg("w.json: node '2' (VAEDecode): required input "
                             "'samples' (LATENT) is not connected\n"));
  free(err);
}

TEST(ui_workflow_format_is_refused_with_the_way_out) {
  char *wf = workflow("ui_workflow.json");
  const char *a[] = {"run", wf, NULL};
  char *err = NULL;
  ASSERT_EQ(run_weft(a, NULL, &err), 2);
  ASSERT_CONTAINS(err, "ui_workflow.json: this is a ComfyUI UI workflow (it "
                       "has \"nodes\" and \"links\" lists); weft runs the API "
                       "format: in ComfyUI use Workflow > Export (API)");
  free(err), free(wf);
}

TEST(malformed_json_and_shapes_are_refused) {
  char *err = convert_error("{\"1\": {\"class_type\": \"X\",}");
  ASSERT_CONTAINS(err, tmp_msg("w.json:1:"));
  ASSERT_CONTAINS(err, ": invalid JSON: ");
  free(err);
  err = convert_error("{\"1\": [1, 2]}");
  ASSERT_STR_EQ(err, tmp_msg("w.json: node '1': is a list, not a node "
                             "({\"class_type\": ..., \"inputs\": {...}})\n"));
  free(err);
  err = convert_error("{\"1\": {\"inputs\": {}}}");
  ASSERT_CONTAINS(err, "node '1': has no \"class_type\"");
  free(err);
  err = convert_error("{}");
  ASSERT_CONTAINS(err, "w.json: the workflow has no nodes");
  free(err);
  err = convert_error("{\"1\": {\"class_type\": \"ImageInvert\"}, \"1\": "
                      "{\"class_type\": \"ImageInvert\"}}");
  ASSERT_CONTAINS(err, "invalid JSON: duplicate object key");
  free(err);
}

/* ---- PNG metadata ------------------------------------------------------- */

/* Runs graphs/txt2img.yaml on the tiny model into dir; returns the PNG. */
static char *txt2img_png(const char *dir, const char *seed) {
  char *graph = path_of("%s/../graphs/txt2img.yaml", weft_test_srcdir());
  char s[64];
  snprintf(s, sizeof s, "seed=%s", seed);
  const char *a[] = {
      "run",          graph,
      "--input-dir",  root(),
      "--output-dir", dir,
      "--set",        "ckpt=" CKPT,
      "--set",        "prompt=a watercolor fox in a snowy forest",
      "--set",        "negative=blurry, low quality",
      "--set",        s,
      "--set",        "steps=4",
      "--set",        "cfg=7.5",
      "--set",        "sampler=euler_ancestral",
      "--set",        "scheduler=karras",
      "--set",        "width=64",
      "--set",        "height=64",
      "-q",           NULL};
  run_ok(a);
  free(graph);
  return path_of("%s/txt2img_00001_.png", dir);
}

TEST(png_carries_parameters_prompt_and_weft) {
  char *d = subdir("out");
  char *png = txt2img_png(d, "18446744073709551615");
  char *params = png_text(png, "parameters");
  ASSERT_STR_EQ(params, "a watercolor fox in a snowy forest\n"
                        "Negative prompt: blurry, low quality\n"
                        "Steps: 4, Sampler: Euler a Karras, CFG scale: 7.5, "
                        "Seed: 18446744073709551615, Size: 64x64, "
                        "Model: sd15_tiny");
  /* ComfyUI's "prompt": API JSON ComfyUI's Load rebuilds the graph from */
  char *prompt = png_text(png, "prompt");
  /* 2^64-1 is written as the number ComfyUI reads (Python's ints) */
  ASSERT_CONTAINS(prompt, "\"seed\":18446744073709551615");
  json_t *p = weft__json_loadb(prompt, strlen(prompt), 0, NULL);
  ASSERT(p != NULL);
  json_t *ks = json_object_get(p, "sample");
  ASSERT_STR_EQ(json_string_value(json_object_get(ks, "class_type")),
                "KSampler");
  json_t *in = json_object_get(ks, "inputs");
  ASSERT_EQ(json_integer_value(json_object_get(in, "steps")), 4);
  ASSERT(json_real_value(json_object_get(in, "cfg")) == 7.5);
  ASSERT_STR_EQ(json_string_value(json_object_get(in, "scheduler")), "karras");
  json_t *link = json_pack("[si]", "positive", 0);
  ASSERT(json_equal(json_object_get(in, "positive"), link));
  json_decref(link);
  ASSERT_STR_EQ(
      json_string_value(json_object_get(
          json_object_get(json_object_get(p, "ckpt"), "inputs"), "ckpt_name")),
      CKPT);
  /* "weft": the YAML, the inputs, the file */
  char *rec = png_text(png, "weft");
  json_t *w = weft__json_loadb(rec, strlen(rec), 0, NULL);
  ASSERT_EQ(json_integer_value(json_object_get(w, "version")), 1);
  char *graph = path_of("%s/../graphs/txt2img.yaml", weft_test_srcdir());
  char *yaml = weft_test_read_file(graph, NULL);
  ASSERT_STR_EQ(json_string_value(json_object_get(w, "graph")), yaml);
  ASSERT_STR_EQ(json_string_value(json_object_get(w, "graph_file")), graph);
  json_t *wi = json_object_get(w, "inputs");
  ASSERT_EQ(json_object_size(wi), 11);
  ASSERT_STR_EQ(json_string_value(json_object_get(wi, "sampler")),
                "euler_ancestral");
  ASSERT_EQ(json_integer_value(json_object_get(wi, "width")), 64);
  uint64_t seed = 0;
  ASSERT(weft__json_is_u64(json_object_get(wi, "seed"), &seed));
  ASSERT(seed == UINT64_MAX);
  json_decref(p), json_decref(w);
  free(yaml), free(graph), free(rec), free(prompt), free(params), free(png);
  free(d);
}

TEST(png_from_img2img_workflow_names_denoise_and_karras) {
  char *d = subdir("out");
  char *wf = workflow("img2img_api.json");
  const char *a[] = {"run",          wf, "--input-dir", root(),
                     "--output-dir", d,  "-q",          NULL};
  run_ok(a);
  char *png = path_of("%s/weft_img2img_00001_.png", d);
  char *params = png_text(png, "parameters");
  ASSERT_STR_EQ(params, "a red circle on a blue background\n"
                        "Steps: 4, Sampler: DPM++ 2M Karras, CFG scale: 6.5, "
                        "Seed: 7, Size: 64x64, Model: sd15_tiny, "
                        "Denoising strength: 0.6");
  char *rec = png_text(png, "weft");
  json_t *w = json_loads(rec, 0, NULL);
  ASSERT_STR_EQ(json_string_value(json_object_get(w, "graph_file")), wf);
  ASSERT_CONTAINS(json_string_value(json_object_get(w, "graph")),
                  "# Converted by weft from the ComfyUI API workflow "
                  "img2img_api.json.\n");
  json_decref(w);
  free(rec), free(params), free(png), free(wf), free(d);
}

TEST(png_without_a_sampler_has_no_parameters) {
  char *d = subdir("out");
  char *graph = path_of("%s/../graphs/image-basics.yaml", weft_test_srcdir());
  const char *a[] = {"run",          graph, "--input-dir", root(),
                     "--output-dir", d,     "-q",          NULL};
  run_ok(a);
  char *png = path_of("%s/image-basics/thumb_00001_.png", d);
  char *params = png_text(png, "parameters");
  char *prompt = png_text(png, "prompt");
  char *rec = png_text(png, "weft");
  ASSERT(params == NULL);
  ASSERT(prompt != NULL && rec != NULL);
  ASSERT_CONTAINS(prompt, "\"class_type\":\"LoadImage\"");
  free(rec), free(prompt), free(png), free(graph), free(d);
}

TEST(run_png_reproduces_the_image_bit_for_bit) {
  char *d1 = subdir("first"), *d2 = subdir("again");
  char *png = txt2img_png(d1, "12345");
  /* from another directory: relative names in the graph resolve against
   * --input-dir, as on the first run */
  const char *a[] = {"run",          png, "--input-dir", root(),
                     "--output-dir", d2,  "-q",          NULL};
  run_ok(a);
  char *again = path_of("%s/txt2img_00001_.png", d2);
  assert_same_pixels(png, again);
  /* the stored inputs are defaults: --set still changes them */
  const char *b[] = {"run", png,     "--input-dir", root(), "--output-dir",
                     d2,    "--set", "seed=12346",  "-q",   NULL};
  run_ok(b);
  char *other = path_of("%s/txt2img_00002_.png", d2);
  ASSERT(!same_pixels(png, other));
  char *rec = png_text(other, "weft");
  ASSERT_CONTAINS(rec, "\"seed\":12346");
  free(rec), free(other), free(again), free(png), free(d1), free(d2);
}

TEST(run_png_of_a_workflow_reproduces_it) {
  char *d1 = subdir("first"), *d2 = subdir("again");
  char *wf = workflow("txt2img_api.json");
  const char *a[] = {"run",          wf, "--input-dir", root(),
                     "--output-dir", d1, "-q",          NULL};
  run_ok(a);
  char *png = path_of("%s/weft_txt2img_00001_.png", d1);
  const char *b[] = {"run",          png, "--input-dir", root(),
                     "--output-dir", d2,  "-q",          NULL};
  run_ok(b);
  char *again = path_of("%s/weft_txt2img_00001_.png", d2);
  assert_same_pixels(png, again);
  free(again), free(png), free(wf), free(d1), free(d2);
}

/* A PNG with ComfyUI's "prompt" only (what ComfyUI itself writes, less its
 * "workflow") runs through the importer. */
TEST(run_png_with_only_a_comfyui_prompt_imports_it) {
  char *d1 = subdir("first"), *d2 = subdir("again");
  char *png = txt2img_png(d1, "9");
  char *prompt = png_text(png, "prompt");
  weft__png_image img = read_png(png);
  weft__png_text text = {"prompt", prompt};
  weft__png_pixels px = {img.rgb, img.width, img.height, 3};
  char *comfy = path_of("%s/comfy.png", weft_test_tmpdir());
  char err[512];
  ASSERT_OK(weft__png_write(comfy, &px, &text, 1, 4, err, sizeof err));
  weft__png_image_free(&img);
  const char *a[] = {"run",          comfy, "--input-dir", root(),
                     "--output-dir", d2,    "-q",          NULL};
  run_ok(a);
  char *again = path_of("%s/txt2img_00001_.png", d2);
  assert_same_pixels(png, again);
  free(again), free(comfy), free(prompt), free(png), free(d1), free(d2);
}

TEST(run_png_without_metadata_exits_2) {
  char *png = path_of("%s/fixtures/images/photo.png", weft_test_srcdir());
  const char *a[] = {"run", png, NULL};
  char *err = NULL;
  ASSERT_EQ(run_weft(a, NULL, &err), 2);
  char want[8192];
  snprintf(want, sizeof want,
           "weft: %s: this PNG carries no graph to run: it has no 'weft' text "
           "chunk (weft's SaveImage writes one) and no ComfyUI 'prompt'\n",
           png);
  ASSERT_STR_EQ(err, want);
  free(err), free(png);
  /* an A1111 image: "parameters" alone */
  weft__png_text text = {"parameters", "a cat\nSteps: 20, Sampler: Euler"};
  float px0[3] = {0.5f, 0.5f, 0.5f};
  weft__png_pixels px = {px0, 1, 1, 3};
  char *a1111 = path_of("%s/a1111.png", weft_test_tmpdir());
  char e[512];
  ASSERT_OK(weft__png_write(a1111, &px, &text, 1, 4, e, sizeof e));
  const char *b[] = {"run", a1111, NULL};
  ASSERT_EQ(run_weft(b, NULL, &err), 2);
  ASSERT_CONTAINS(err, "; its A1111 'parameters' text alone does not say "
                       "which nodes made it\n");
  free(err), free(a1111);
}

TEST(run_png_with_a_broken_weft_record_exits_2) {
  static const char *const bad[][2] = {
      {"{\"version\": 2, \"graph\": \"version: 1\"}",
       "the 'weft' text chunk has version other than 1; this weft reads "
       "version 1"},
      {"not json", "the 'weft' text chunk is not a JSON object: "},
      {"{\"version\": 1}", "the 'weft' text chunk has no \"graph\" text"},
      {"{\"version\": 1, \"graph\": \"version: 1\\nnodes:\\n  a: {op: "
       "ImageInvert}\\n\", \"inputs\": {\"x\": 1}}",
       "required input 'image' (IMAGE) is not connected"},
      {"{\"version\": 1, \"graph\": \"version: 1\\ninputs: {n: 1}\\nnodes:\\n "
       " a: {op: LoadImage, params: {image: x.png}}\\n\", \"inputs\": "
       "{\"m\": 1}}",
       "the 'weft' text chunk sets input 'm', which its graph does not "
       "declare"},
      {"{\"version\": 1, \"graph\": \"version: 1\\ninputs: {n: {type: INT, "
       "default: 1, max: 5}}\\nnodes:\\n  a: {op: LoadImage, params: "
       "{image: x.png}}\\n\", \"inputs\": {\"n\": 9}}",
       "input 'n' stored in the image: 9 is above the maximum 5"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    weft__png_text text = {"weft", (char *)bad[i][0]};
    float px0[3] = {0};
    weft__png_pixels px = {px0, 1, 1, 3};
    char *p = path_of("%s/bad.png", weft_test_tmpdir());
    char e[512];
    ASSERT_OK(weft__png_write(p, &px, &text, 1, 4, e, sizeof e));
    const char *a[] = {"validate", p, NULL};
    char *err = NULL;
    ASSERT_EQ(run_weft(a, NULL, &err), 2);
    ASSERT_CONTAINS(err, bad[i][1]);
    free(err), free(p);
  }
}

/* A 940-byte PNG whose second tEXt chunk claims 2 GB (found by fuzz/comfy):
 * libpng would allocate the claimed length before reading it; the capped
 * allocator (runtime/png_alloc.h) refuses, and the file is reported as
 * damaged.  fuzz/comfy runs this seed with -malloc_limit_mb=256, which fails
 * on the allocation itself. */
TEST(png_with_a_text_chunk_claiming_2gb_exits_2) {
  char *png = path_of("%s/comfy/fuzz_seeds/text_chunk_claims_2gb.png",
                      weft_test_srcdir());
  const char *a[] = {"validate", png, NULL};
  char *err = NULL;
  ASSERT_EQ(run_weft(a, NULL, &err), 2);
  char want[8192];
  snprintf(want, sizeof want, "weft: %s: cannot read the PNG: ", png);
  ASSERT_EQ(strncmp(err, want, strlen(want)), 0);
  free(err), free(png);
}

/* ---- the metadata functions --------------------------------------------- */

TEST(a1111_sampler_names) {
  static const char *const cases[][4] = {
      /* sampler, scheduler, name, schedule type */
      {"euler", "normal", "Euler", NULL},
      {"euler_ancestral", "normal", "Euler a", NULL},
      {"dpmpp_2m", "karras", "DPM++ 2M Karras", NULL},
      {"dpmpp_2m_sde", "exponential", "DPM++ 2M SDE Exponential", NULL},
      {"dpm_2_ancestral", "karras", "DPM2 a Karras", NULL},
      {"lms", "sgm_uniform", "LMS", "SGM Uniform"},
      {"uni_pc", "simple", "UniPC", "Simple"},
      {"ddim", "ddim_uniform", "DDIM", "DDIM"},
      {"heun", "beta", "Heun", "Beta"},
      {"res_multistep", "normal", "res_multistep", NULL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char buf[64];
    const char *st = "unset";
    ASSERT_STR_EQ(weft__meta_sampler_name(cases[i][0], cases[i][1], &st, buf,
                                          (int)sizeof buf),
                  cases[i][2]);
    if (cases[i][3])
      ASSERT_STR_EQ(st, cases[i][3]);
    else
      ASSERT(st == NULL);
  }
}

TEST(a1111_parameters_follow_the_graph_upstream) {
  /* KSamplerAdvanced through a CLIPSetLastLayer, conditioning through an
   * extra node, latent from a VAEEncode (no EmptyLatentImage: the saved
   * size), a model name with a comma (quoted as A1111 does), an empty
   * negative (no line) */
  const char *prompt =
      "{\"c\": {\"class_type\": \"CheckpointLoaderSimple\", \"inputs\": "
      "{\"ckpt_name\": \"/m/dir\\\\sub/my,model.v2.safetensors\"}},"
      "\"skip\": {\"class_type\": \"CLIPSetLastLayer\", \"inputs\": "
      "{\"clip\": [\"c\", 1], \"stop_at_clip_layer\": -2}},"
      "\"p\": {\"class_type\": \"CLIPTextEncode\", \"inputs\": {\"clip\": "
      "[\"skip\", 0], \"text\": \"a: b\"}},"
      "\"n\": {\"class_type\": \"CLIPTextEncode\", \"inputs\": {\"clip\": "
      "[\"skip\", 0], \"text\": \"\"}},"
      "\"cn\": {\"class_type\": \"ControlNetApply\", \"inputs\": "
      "{\"conditioning\": [\"p\", 0], \"strength\": 1}},"
      "\"p2\": {\"class_type\": \"CLIPTextEncode\", \"inputs\": {\"clip\": "
      "[\"c\", 1], \"text\": \"a\\nb\"}},"
      "\"n2\": {\"class_type\": \"CLIPTextEncode\", \"inputs\": {\"clip\": "
      "[\"c\", 1], \"text\": \"ugly\"}},"
      "\"cna\": {\"class_type\": \"ControlNetApplyAdvanced\", \"inputs\": "
      "{\"strength\": 1, \"positive\": [\"p2\", 0], \"negative\": [\"n2\", "
      "0]}},"
      "\"k2\": {\"class_type\": \"KSampler\", \"inputs\": {\"model\": "
      "[\"c\", 0], \"positive\": [\"cna\", 0], \"negative\": [\"cna\", 1], "
      "\"latent_image\": [\"e\", 0], \"seed\": 1, \"steps\": 2, \"cfg\": 8, "
      "\"sampler_name\": \"euler\", \"scheduler\": \"normal\", \"denoise\": "
      "1}},"
      "\"e\": {\"class_type\": \"EmptyLatentImage\", \"inputs\": "
      "{\"width\": 512, \"height\": 768}},"
      "\"s3\": {\"class_type\": \"SaveImage\", \"inputs\": {\"images\": "
      "[\"k2\", 0]}},"
      "\"enc\": {\"class_type\": \"VAEEncode\", \"inputs\": {\"vae\": [\"c\", "
      "2]}},"
      "\"k\": {\"class_type\": \"KSamplerAdvanced\", \"inputs\": {\"model\": "
      "[\"c\", 0], \"positive\": [\"cn\", 0], \"negative\": [\"n\", 0], "
      "\"latent_image\": [\"enc\", 0], \"noise_seed\": 5, \"steps\": 30, "
      "\"cfg\": 4.25, \"sampler_name\": \"dpmpp_sde\", \"scheduler\": "
      "\"sgm_uniform\"}},"
      "\"d\": {\"class_type\": \"VAEDecode\", \"inputs\": {\"samples\": "
      "[\"k\", 0], \"vae\": [\"c\", 2]}},"
      "\"s\": {\"class_type\": \"SaveImage\", \"inputs\": {\"images\": "
      "[\"d\", 0]}},"
      "\"s2\": {\"class_type\": \"SaveImage\", \"inputs\": {\"images\": "
      "[\"enc\", 0]}}}";
  char *t = weft__meta_parameters(prompt, "s", 96, 80);
  ASSERT_STR_EQ(t, "a: b\nSteps: 30, Sampler: DPM++ SDE, Schedule type: SGM "
                   "Uniform, CFG scale: 4.25, Seed: 5, Size: 96x80, Model: "
                   "\"my,model.v2\", Clip skip: 2");
  free(t);
  /* through ControlNetApplyAdvanced each side keeps its own text; the
   * sampled latent saved as is (an unusual graph) still counts */
  t = weft__meta_parameters(prompt, "s3", 64, 96);
  ASSERT_STR_EQ(t, "a\nb\nNegative prompt: ugly\nSteps: 2, Sampler: Euler, "
                   "CFG scale: 8, Seed: 1, Size: 512x768, Model: "
                   "\"my,model.v2\"");
  free(t);
  /* nothing samples what s2 saves; an unknown node id neither */
  ASSERT(weft__meta_parameters(prompt, "s2", 8, 8) == NULL);
  ASSERT(weft__meta_parameters(prompt, "nope", 8, 8) == NULL);
  ASSERT(weft__meta_parameters("not json", "s", 8, 8) == NULL);
}

TEST(weft_record_is_ascii_json) {
  char *r =
      weft__meta_weft_record("text: caf\xc3\xa9\n", "{\"seed\": 3}", "g.yaml");
  ASSERT_STR_EQ(r, "{\"version\":1,\"graph\":\"text: caf\\u00E9\\n\","
                   "\"inputs\":{\"seed\":3},\"graph_file\":\"g.yaml\"}");
  free(r);
  r = weft__meta_weft_record("g", NULL, NULL);
  ASSERT_STR_EQ(r, "{\"version\":1,\"graph\":\"g\",\"inputs\":{}}");
  free(r);
  ASSERT(weft__meta_weft_record(NULL, "{}", "x") == NULL);
  r = weft__meta_ascii_json("{\"t\": \"\xe2\x98\x83\", \"x\": 0.5}");
  ASSERT_STR_EQ(r, "{\"t\":\"\\u2603\",\"x\":0.5}");
  free(r);
}

/* ---- the importer in process -------------------------------------------- */

TEST(import_kind_by_name_and_content) {
  ASSERT_EQ(weft__import_kind("a.json", "version: 1", 10), WEFT__IMPORT_JSON);
  ASSERT_EQ(weft__import_kind("a", "  \n{\"1\": {}}", 12), WEFT__IMPORT_JSON);
  ASSERT_EQ(weft__import_kind("a.yaml", "{version: 1}", 12), WEFT__IMPORT_NONE);
  ASSERT_EQ(weft__import_kind("a", "version: 1", 10), WEFT__IMPORT_NONE);
  ASSERT_EQ(weft__import_kind("x.yaml", "\x89PNG\r\n\x1a\n", 8),
            WEFT__IMPORT_PNG);
}

/* A weft graph written in JSON (YAML's subset) still loads as a graph. */
TEST(weft_graph_in_json_syntax_is_not_a_comfy_workflow) {
  char *p = temp_workflow(
      "g.json", "{\"version\": 1, \"nodes\": {\"load\": {\"op\": "
                "\"LoadImage\", \"params\": {\"image\": \"x.png\"}}}}");
  const char *a[] = {"validate", p, NULL};
  char *out = NULL;
  ASSERT_EQ(run_weft(a, &out, NULL), 0);
  ASSERT_CONTAINS(out, "g.json: ok (1 node)");
  free(out), free(p);
}

TEST(json_u64_reads_and_writes_seeds_above_int64) {
  const char *in = "{\"a\":18446744073709551615,\"b\":[9223372036854775808,"
                   "9223372036854775807,-5,1.5e3],\"c\":\"18446744073709551615"
                   "\",\"d\":\"x\\\"\\u0001u64:7\"}";
  json_t *o = weft__json_loadb(in, strlen(in), 0, NULL);
  ASSERT(o != NULL);
  uint64_t u = 0;
  ASSERT(weft__json_is_u64(json_object_get(o, "a"), &u));
  ASSERT(u == UINT64_MAX);
  json_t *b = json_object_get(o, "b");
  ASSERT(weft__json_is_u64(json_array_get(b, 0), &u));
  ASSERT(u == 9223372036854775808u);
  ASSERT_EQ(json_integer_value(json_array_get(b, 1)), INT64_MAX);
  ASSERT_EQ(json_integer_value(json_array_get(b, 2)), -5);
  ASSERT(json_real_value(json_array_get(b, 3)) == 1500.0);
  ASSERT(!weft__json_is_u64(json_object_get(o, "c"), &u));
  char *s = weft__json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
  ASSERT_STR_EQ(s, "{\"a\":18446744073709551615,\"b\":[9223372036854775808,"
                   "9223372036854775807,-5,1500.0],\"c\":\"18446744073709551615"
                   "\",\"d\":\"x\\\"\\u0001u64:7\"}");
  free(s);
  /* beyond 2^64 - 1 stays an error */
  json_error_t e;
  ASSERT(weft__json_loadb("[18446744073709551616]", 22, 0, &e) == NULL);
}
