/* test_brownian.c - the SDE samplers' Brownian path: a Brownian motion
 * (increments of variance |dt|, independent over disjoint intervals) whose
 * value at a time never depends on what was asked before. */
#include "brownian.h"
#include "test.h"

#define N 200000

static double var(const float *a, const float *b, double scale) {
  double s = 0, s2 = 0;
  for (int i = 0; i < N; i++) {
    double d = ((double)b[i] - (b == a ? 0 : a[i])) * scale;
    s += d, s2 += d * d;
  }
  double m = s / N;
  return s2 / N - m * m;
}

TEST(brownian_increments_have_variance_dt_and_are_independent) {
  weft_brownian b;
  ASSERT_OK(weft_brownian_init(&b, N, 0.03f, 14.6f, 42));
  static float w1[N], w2[N], w3[N];
  weft_brownian_at(&b, 0.03f, w1);
  for (int i = 0; i < N; i++) ASSERT(w1[i] == 0.0f);
  weft_brownian_at(&b, 2.0f, w1);
  weft_brownian_at(&b, 5.5f, w2);
  weft_brownian_at(&b, 14.6f, w3);
  /* 1% of the variance is ~3 standard errors at N = 200000 */
  ASSERT_NEAR(var(w1, w1, 1.0), 2.0 - 0.03, 0.03 * 2.0);
  ASSERT_NEAR(var(w1, w2, 1.0), 3.5, 0.03 * 3.5);
  ASSERT_NEAR(var(w2, w3, 1.0), 9.1, 0.03 * 9.1);
  double cov = 0;
  for (int i = 0; i < N; i++)
    cov += ((double)w2[i] - w1[i]) * ((double)w3[i] - w2[i]);
  cov /= N;
  ASSERT(fabs(cov) < 0.05 * sqrt(3.5 * 9.1));
  weft_brownian_free(&b);
}

TEST(brownian_path_does_not_depend_on_query_order) {
  enum { n = 1000 };
  weft_brownian a, b;
  ASSERT_OK(weft_brownian_init(&a, n, 0.03f, 14.6f, 7));
  ASSERT_OK(weft_brownian_init(&b, n, 0.03f, 14.6f, 7));
  float x1[n], x2[n], y[n];
  weft_brownian_at(&a, 1.25f, x1);
  weft_brownian_at(&b, 9.0f, y);
  weft_brownian_at(&b, 0.5f, y);
  weft_brownian_at(&b, 1.25f, x2);
  ASSERT_EQ(memcmp(x1, x2, sizeof x1), 0);
  /* another seed is another path */
  weft_brownian c;
  ASSERT_OK(weft_brownian_init(&c, n, 0.03f, 14.6f, 8));
  weft_brownian_at(&c, 1.25f, y);
  ASSERT(memcmp(x1, y, sizeof y) != 0);
  /* the noise of a step is the normalised increment */
  float nz[n], tmp[n];
  weft_brownian_noise(&a, 9.0f, 1.25f, nz, tmp);
  weft_brownian_at(&a, 9.0f, y);
  for (int i = 0; i < n; i++)
    ASSERT_NEAR(nz[i], (x1[i] - y[i]) / sqrt(9.0 - 1.25), 1e-5);
  weft_brownian_free(&a), weft_brownian_free(&b), weft_brownian_free(&c);
}
