/* test_txt2img.c - graphs/txt2img.yaml end to end through the weft command
 * on the tiny checkpoint, against diffusers' StableDiffusionPipeline with
 * EulerDiscreteScheduler and the same initial noise (txt2img_e2e*.fixtures):
 * every pixel within 2/255.  Both checkpoint layouts give the same image. */
#include "png_io.h"
#include "sd_fixture.h"

/* events: NULL, or where the run's --events json lines go (caller frees) */
static char *run_graph_ev(const char *ckpt, const char *scheduler, int steps,
                          const char *outdir, char **events) {
  char graph[4096], ck[4096], st[32], sc[64];
  snprintf(graph, sizeof graph, "%s/../graphs/txt2img.yaml",
           weft_test_srcdir());
  snprintf(ck, sizeof ck, "ckpt=%s/fixtures/sd15_tiny/%s", weft_test_srcdir(),
           ckpt);
  snprintf(st, sizeof st, "steps=%d", steps);
  snprintf(sc, sizeof sc, "scheduler=%s", scheduler);
  const char *a[] = {weft_test_built("cli/weft"), "run", graph,
                     "--set", ck,
                     "--set", "prompt=a watercolor fox in a snowy forest",
                     "--set", "negative=blurry, low quality",
                     "--set", "seed=42", "--set", st, "--set", sc,
                     "--set", "cfg=7.5", "--set", "sampler=euler",
                     "--set", "width=64", "--set", "height=64",
                     "--output-dir", outdir,
                     events ? "--events=json" : "-q", NULL};
  char *out = NULL, *err = NULL;
  int code = weft_test_spawn(a, &out, &err, 120);
  if (code) fprintf(stderr, "weft run: %s", err);
  ASSERT_EQ(code, 0);
  if (events)
    *events = out;
  else
    free(out);
  free(err);
  char *png = malloc(8192);
  snprintf(png, 8192, "%s/txt2img_00001_.png", outdir);
  return png;
}

static char *run_graph(const char *ckpt, const char *scheduler, int steps,
                       const char *outdir) {
  return run_graph_ev(ckpt, scheduler, steps, outdir, NULL);
}

static void compare(const char *png, const char *fixture, const char *key,
                    int tol) {
  weft__png_image img;
  char err[1024];
  int r = weft__png_read(png, &img, err, sizeof err);
  if (r) fprintf(stderr, "%s\n", err);
  ASSERT_OK(r);
  ASSERT_EQ(img.width, 64);
  ASSERT_EQ(img.height, 64);
  weft_st_file *f = fx_open(fixture);
  const weft_st_tensor *want = weft_st_find(f, key);
  ASSERT(want && want->nbytes == 64 * 64 * 3);
  const uint8_t *w = want->data;
  int worst = 0;
  for (int i = 0; i < 64 * 64 * 3; i++) {
    int got = (int)lrintf(img.rgb[i] * 255.0f);
    int d = abs(got - w[i]);
    if (d > worst) worst = d;
  }
  fprintf(stderr, "%s %s: max pixel diff %d/255\n", fixture, key, worst);
  ASSERT(worst <= tol);
  weft_st_close(f);
  weft__png_image_free(&img);
}

static char *subdir(const char *name) {
  char *d = malloc(4096);
  snprintf(d, 4096, "%s/%s", weft_test_tmpdir(), name);
  return d;
}

TEST(txt2img_euler_normal_matches_diffusers) {
  char *dir = subdir("normal");
  char *png = run_graph("diffusers", "normal", 10, dir);
  compare(png, "txt2img_e2e_normal.safetensors", "image", 2);
  compare(png, "txt2img_e2e_normal.safetensors", "comfy_image", 2);
  free(png), free(dir);
}

TEST(txt2img_euler_simple_matches_diffusers) {
  char *dir = subdir("simple");
  char *png = run_graph("diffusers", "simple", 8, dir);
  compare(png, "txt2img_e2e.safetensors", "image", 2);
  compare(png, "txt2img_e2e.safetensors", "comfy_image", 2);
  free(png), free(dir);
}

TEST(single_file_and_diffusers_folder_give_the_same_image) {
  char *da = subdir("a"), *db = subdir("b");
  char *pa = run_graph("diffusers", "normal", 10, da);
  char *pb = run_graph("sd15_tiny.safetensors", "normal", 10, db);
  weft__png_image a, b;
  ASSERT_OK(weft__png_read(pa, &a, NULL, 0));
  ASSERT_OK(weft__png_read(pb, &b, NULL, 0));
  ASSERT_EQ(memcmp(a.rgb, b.rgb, 64 * 64 * 3 * sizeof(float)), 0);
  weft__png_image_free(&a), weft__png_image_free(&b);
  free(pa), free(pb), free(da), free(db);
}

TEST(ksampler_advanced_two_stages_equal_one_ksampler) {
  char graph[4096];
  snprintf(graph, sizeof graph, "%s/models/graphs/two_stage.yaml",
           weft_test_srcdir());
  char *dir = subdir("two");
  char ck[4096];
  snprintf(ck, sizeof ck, "ckpt=%s/fixtures/sd15_tiny/diffusers",
           weft_test_srcdir());
  const char *a[] = {weft_test_built("cli/weft"), "run", graph, "--set", ck,
                     "--output-dir", dir, "-q", NULL};
  char *err = NULL;
  int code = weft_test_spawn(a, NULL, &err, 120);
  if (code) fprintf(stderr, "%s", err);
  ASSERT_EQ(code, 0);
  free(err);
  char p1[4200], p2[4200];
  snprintf(p1, sizeof p1, "%s/one_00001_.png", dir);
  snprintf(p2, sizeof p2, "%s/two_00001_.png", dir);
  weft__png_image a1, a2;
  ASSERT_OK(weft__png_read(p1, &a1, NULL, 0));
  ASSERT_OK(weft__png_read(p2, &a2, NULL, 0));
  /* the split only re-scales the latent between the stages: a pixel may
   * round to the neighbouring level, no more */
  int worst = 0, same = 0;
  for (int i = 0; i < 64 * 64 * 3; i++) {
    int d = abs((int)lrintf(a1.rgb[i] * 255) - (int)lrintf(a2.rgb[i] * 255));
    worst = d > worst ? d : worst;
    same += d == 0;
  }
  ASSERT(worst <= 1);
  ASSERT(same > 64 * 64 * 3 * 9 / 10);
  weft__png_image_free(&a1), weft__png_image_free(&a2);
  free(dir);
}

/* The model nodes' deferred path (plugin ABI 1.3: body on a thread of its
 * own, host->complete to the loop; what a GPU run takes), forced on the
 * CPU with WEFT_SD_ASYNC=1 and one worker thread: the same image bit for
 * bit, and each of the four model nodes says it was deferred. */
TEST(deferred_model_nodes_give_the_same_image) {
  char *da = subdir("sync"), *db = subdir("deferred");
  setenv("WEFT_THREADS", "1", 1); /* both: the kernels' sums in one order */
  char *pa = run_graph("sd15_tiny.safetensors", "normal", 6, da);
  setenv("WEFT_SD_ASYNC", "1", 1);
  char *ev = NULL;
  char *pb = run_graph_ev("sd15_tiny.safetensors", "normal", 6, db, &ev);
  unsetenv("WEFT_SD_ASYNC");
  unsetenv("WEFT_THREADS");
  int n = 0;
  for (const char *q = ev; (q = strstr(q, "deferred: runs on a thread"));
       q++)
    n++;
  ASSERT_EQ(n, 4); /* CLIPTextEncode x2, KSampler, VAEDecode */
  ASSERT_CONTAINS(ev, "\"status\":\"OK\"");
  weft__png_image a, b;
  ASSERT_OK(weft__png_read(pa, &a, NULL, 0));
  ASSERT_OK(weft__png_read(pb, &b, NULL, 0));
  ASSERT_EQ(memcmp(a.rgb, b.rgb, 64 * 64 * 3 * sizeof(float)), 0);
  weft__png_image_free(&a), weft__png_image_free(&b);
  free(ev), free(pa), free(pb), free(da), free(db);
}
