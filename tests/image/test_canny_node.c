/* test_canny_node.c - the canny example plugin's node through a fake host
 * (its own binary: each plugin defines weft_plugin_entry). */
#include "canny_core.h"
#include "fake_host.h"
#include "test.h"

TEST(canny_node_outputs_three_channel_edges) {
  fake_run r;
  fake_init(&r);
  const weft_plugin *p = weft_plugin_entry(&r.host);
  ASSERT_STR_EQ(p->name, "canny");
  ASSERT_EQ(p->abi_major, WEFT_ABI_MAJOR);
  const weft_node_def *d = fake_node(&r, "Canny");
  ASSERT(d != NULL);
  ASSERT_STR_EQ(d->params[0].name, "low_threshold");
  ASSERT_NEAR(d->params[0].def_float, 0.4, 0);
  ASSERT_NEAR(d->params[0].min, 0.01, 0);
  ASSERT_NEAR(d->params[0].max, 0.99, 0);
  ASSERT_STR_EQ(d->params[1].name, "high_threshold");
  ASSERT_NEAR(d->params[1].def_float, 0.8, 0);

  float px[2 * 32 * 32 * 3];
  for (int b = 0; b < 2; b++)
    for (int y = 0; y < 32; y++)
      for (int x = 0; x < 32; x++)
        for (int k = 0; k < 3; k++)
          px[((b * 32 + y) * 32 + x) * 3 + k] =
              (b == 0 && y >= 8 && y < 24 && x >= 8 && x < 24) ? 1.0f : 0.0f;
  weft_value *img = fake_image(2, 32, 32, 3, px), *out[1];
  ASSERT_OK(fake_run_node(&r, d, &img, out, NULL));
  const weft_tensor *t = fake_tensor_of(out[0]);
  ASSERT(t->shape[0] == 2 && t->shape[1] == 32 && t->shape[2] == 32 &&
         t->shape[3] == 3);
  uint8_t want[32 * 32];
  float gray[32 * 32];
  for (int i = 0; i < 32 * 32; i++)
    gray[i] = px[3 * i];
  ASSERT_OK(canny_edges(gray, 32, 32, 1, 0.4, 0.8, want, NULL, NULL));
  const float *o = t->data;
  int edges = 0;
  for (int i = 0; i < 32 * 32; i++)
    for (int k = 0; k < 3; k++) {
      ASSERT(o[3 * i + k] == (float)want[i]);
      ASSERT(o[32 * 32 * 3 + 3 * i + k] == 0.0f); /* image 2 is flat */
      edges += want[i];
    }
  ASSERT_EQ(edges, 3 * 60);
  ASSERT(r.progress_k == 2 && r.progress_n == 2);
  fake_release(out[0]);

  ASSERT_EQ(fake_run_node(&r, d, &img, out, "low_threshold", fake_float(0.9),
                          "high_threshold", fake_float(0.5), NULL),
            WEFT_EINVAL);
  ASSERT_CONTAINS(r.error, "low_threshold (0.9)");
  ASSERT(out[0] == NULL);
  r.cancel_after = 0;
  ASSERT_EQ(fake_run_node(&r, d, &img, out, NULL), WEFT_ECANCELED);
  ASSERT(out[0] == NULL);
  fake_release(img);
  ASSERT_EQ(fake_live_values(), 0);
}
