/* layout.c - data movement and small generators: nearest 2x upsampling,
 * concat, timestep embeddings and dtype conversion. */
#include <math.h>
#include <string.h>

#include "internal.h"

#define PAR_ELEMS (1 << 15)

typedef struct up_job {
  const float *x;
  float *y;
  int64_t h, w;
} up_job;

static void up_rows(void *arg, int64_t b, int64_t e, int tid) {
  (void)tid;
  const up_job *j = arg;
  for (int64_t r = b; r < e; r++) { /* r = plane * h + row */
    const float *src = j->x + r * j->w;
    float *d0 = j->y + r * 4 * j->w; /* output rows 2*row and 2*row+1 */
    for (int64_t i = 0; i < j->w; i++)
      d0[2 * i] = d0[2 * i + 1] = src[i];
    memcpy(d0 + 2 * j->w, d0, (size_t)(2 * j->w) * sizeof(float));
  }
}

int weft_cpu_upsample_nearest2x(weft_cpu_ctx *ctx, const float *x, float *y,
                                int64_t planes, int64_t h, int64_t w) {
  if (!x || !y || planes < 0 || h < 0 || w < 0) return WEFT_EINVAL;
  if (w == 0) return 0;
  up_job j = {x, y, h, w};
  weft__parallel_for(ctx, planes * h, 1 + PAR_ELEMS / (4 * w), up_rows, &j);
  return 0;
}

typedef struct up_cl_job {
  const float *x;
  float *y;
  int64_t h, w, c;
} up_cl_job;

static void up_cl_rows(void *arg, int64_t b, int64_t e, int tid) {
  (void)tid;
  const up_cl_job *j = arg;
  const size_t px = (size_t)j->c * sizeof(float);
  for (int64_t r = b; r < e; r++) { /* r = image * h + row */
    const float *src = j->x + r * j->w * j->c;
    float *d0 = j->y + r * 4 * j->w * j->c; /* rows 2*row and 2*row+1 */
    for (int64_t i = 0; i < j->w; i++) {
      memcpy(d0 + 2 * i * j->c, src + i * j->c, px);
      memcpy(d0 + (2 * i + 1) * j->c, src + i * j->c, px);
    }
    memcpy(d0 + 2 * j->w * j->c, d0, 2 * (size_t)j->w * px);
  }
}

int weft_cpu_upsample_nearest2x_cl(weft_cpu_ctx *ctx, const float *x, float *y,
                                   int64_t batch, int64_t h, int64_t w,
                                   int64_t channels) {
  if (!x || !y || batch < 0 || h < 0 || w < 0 || channels < 0)
    return WEFT_EINVAL;
  if (w == 0 || channels == 0) return 0;
  up_cl_job j = {x, y, h, w, channels};
  weft__parallel_for(ctx, batch * h, 1 + PAR_ELEMS / (4 * w * channels),
                     up_cl_rows, &j);
  return 0;
}

typedef struct move_job {
  const float *src;
  float *dst;
  int64_t c, s;
  bool to_nhwc;
} move_job;

/* one image's planes or pixels per index: i = image * c + channel */
static void move_planes(void *arg, int64_t b, int64_t e, int tid) {
  (void)tid;
  const move_job *j = arg;
  for (int64_t i = b; i < e; i++) {
    const int64_t n = i / j->c, ch = i % j->c, img = n * j->c * j->s;
    if (j->to_nhwc) {
      const float *p = j->src + img + ch * j->s;
      float *d = j->dst + img + ch;
      for (int64_t q = 0; q < j->s; q++)
        d[q * j->c] = p[q];
    } else {
      const float *p = j->src + img + ch;
      float *d = j->dst + img + ch * j->s;
      for (int64_t q = 0; q < j->s; q++)
        d[q] = p[q * j->c];
    }
  }
}

int weft_cpu_nchw_nhwc(weft_cpu_ctx *ctx, const float *src, float *dst,
                       int64_t batch, int64_t channels, int64_t spatial,
                       bool to_nhwc) {
  if (!src || !dst || batch < 0 || channels < 0 || spatial < 0)
    return WEFT_EINVAL;
  if (channels == 0 || spatial == 0) return 0;
  move_job j = {src, dst, channels, spatial, to_nhwc};
  weft__parallel_for(ctx, batch * channels, 1 + PAR_ELEMS / spatial,
                     move_planes, &j);
  return 0;
}

typedef struct cat_job {
  int n;
  const float *const *xs;
  const int64_t *inner; /* elements of input i per outer index */
  int64_t total_inner;
  float *y;
} cat_job;

static void cat_outer(void *arg, int64_t b, int64_t e, int tid) {
  (void)tid;
  const cat_job *j = arg;
  for (int64_t o = b; o < e; o++) {
    float *dst = j->y + o * j->total_inner;
    for (int i = 0; i < j->n; i++) {
      memcpy(dst, j->xs[i] + o * j->inner[i],
             (size_t)j->inner[i] * sizeof(float));
      dst += j->inner[i];
    }
  }
}

int weft_cpu_concat(weft_cpu_ctx *ctx, int n, const float *const *xs, int ndim,
                    const int64_t *const *shapes, int axis, float *y) {
  if (n <= 0 || n > 1024 || !xs || !shapes || !y || ndim <= 0 ||
      ndim > WEFT_MAX_DIMS || axis < 0 || axis >= ndim)
    return WEFT_EINVAL;
  int64_t inner[1024];
  int64_t outer = 1, after = 1, total = 0;
  for (int d = 0; d < axis; d++)
    outer *= shapes[0][d];
  for (int d = axis + 1; d < ndim; d++)
    after *= shapes[0][d];
  for (int i = 0; i < n; i++) {
    if (!xs[i] || !shapes[i]) return WEFT_EINVAL;
    for (int d = 0; d < ndim; d++)
      if (shapes[i][d] < 0 || (d != axis && shapes[i][d] != shapes[0][d]))
        return WEFT_EINVAL;
    inner[i] = shapes[i][axis] * after;
    total += inner[i];
  }
  if (total == 0) return 0;
  cat_job j = {n, xs, inner, total, y};
  weft__parallel_for(ctx, outer, 1 + PAR_ELEMS / total, cat_outer, &j);
  return 0;
}

int weft_cpu_timestep_embedding(weft_cpu_ctx *ctx, const float *t, int64_t n,
                                int64_t dim, int flip_sin_to_cos,
                                float downscale_freq_shift, float scale,
                                float max_period, float *y) {
  (void)ctx;
  if (!t || !y || n < 0 || dim <= 0 || max_period <= 0) return WEFT_EINVAL;
  const int64_t half = dim / 2;
  /* Same float32 operation order as diffusers' get_timestep_embedding:
   * exponent = -log(max_period) * arange(half) / (half - shift);
   * freq = exp(exponent); arg = scale * (t * freq); [sin, cos] (or
   * [cos, sin] when flipped); an odd dim gets a zero last column.
   * exp is evaluated in double and rounded once: torch's vectorised expf
   * is within 1 ulp of that, and an ulp in freq moves t*freq by ~1e-4
   * rad at t = 999. */
  const float neg_log = (float)-log((double)max_period);
  const float denom = (float)half - downscale_freq_shift;
  for (int64_t i = 0; i < n; i++) {
    float *row = y + i * dim;
    for (int64_t k = 0; k < half; k++) {
      float ex = neg_log * (float)k;
      ex = ex / denom;
      float freq = (float)exp((double)ex);
      float arg = scale * (t[i] * freq);
      float s = sinf(arg), c = cosf(arg);
      row[flip_sin_to_cos ? half + k : k] = s;
      row[flip_sin_to_cos ? k : half + k] = c;
    }
    if (dim % 2) row[dim - 1] = 0.0f;
  }
  return 0;
}

typedef struct conv_job {
  const weft__vec *vec;
  void *dst;
  const void *src;
  int kind; /* 0 f16->f32, 1 f32->f16, 2 bf16->f32, 3 f32->bf16 */
} conv_job;

static void convert_range(void *arg, int64_t b, int64_t e, int tid) {
  (void)tid;
  const conv_job *j = arg;
  switch (j->kind) {
  case 0:
    j->vec->f16_to_f32((const uint16_t *)j->src + b, (float *)j->dst + b,
                       e - b);
    break;
  case 1:
    j->vec->f32_to_f16((const float *)j->src + b, (uint16_t *)j->dst + b,
                       e - b);
    break;
  case 2:
    j->vec->bf16_to_f32((const uint16_t *)j->src + b, (float *)j->dst + b,
                        e - b);
    break;
  case 3:
    j->vec->f32_to_bf16((const float *)j->src + b, (uint16_t *)j->dst + b,
                        e - b);
    break;
  default: break;
  }
}

/* The conv_job kind of a conversion between two different dtypes: 0..3,
 * 4 f16 -> bf16, 5 bf16 -> f16 (through f32: every 16-bit value is exact
 * in f32, so one rounding), or -1. */
static int convert_kind(weft_dtype dst_type, weft_dtype src_type) {
  static const struct {
    weft_dtype src, dst;
  } k[] = {{WEFT_F16, WEFT_F32},  {WEFT_F32, WEFT_F16}, {WEFT_BF16, WEFT_F32},
           {WEFT_F32, WEFT_BF16}, {WEFT_F16, WEFT_BF16}, {WEFT_BF16, WEFT_F16}};
  for (int i = 0; i < 6; i++)
    if (k[i].src == src_type && k[i].dst == dst_type) return i;
  return -1;
}

static void convert_between_halves(int kind, void *dst, const void *src,
                                   int64_t n) {
  const uint16_t *s = src;
  uint16_t *d = dst;
  for (int64_t i = 0; i < n; i++)
    d[i] = kind == 4 ? weft__f32_to_bf16(weft__f16_to_f32(s[i]))
                     : weft__f32_to_f16(weft__bf16_to_f32(s[i]));
}

int weft_cpu_convert(weft_cpu_ctx *ctx, void *dst, weft_dtype dst_type,
                     const void *src, weft_dtype src_type, int64_t n) {
  if (!dst || !src || n < 0) return WEFT_EINVAL;
  if (dst_type == src_type) {
    size_t es = weft_dtype_size(dst_type);
    if (!es) return WEFT_EINVAL;
    memmove(dst, src, (size_t)n * es);
    return 0;
  }
  int kind = convert_kind(dst_type, src_type);
  if (kind < 0) return WEFT_EUNSUPPORTED;
  if (kind >= 4) {
    convert_between_halves(kind, dst, src, n);
    return 0;
  }
  conv_job j = {ctx->vec, dst, src, kind};
  weft__parallel_for(ctx, n, 1 << 16, convert_range, &j);
  return 0;
}

int weft_cpu_convert_serial(void *dst, weft_dtype dst_type, const void *src,
                            weft_dtype src_type, int64_t n) {
  if (!dst || !src || n < 0) return WEFT_EINVAL;
  size_t ss = weft_dtype_size(src_type), ds = weft_dtype_size(dst_type);
  if (!ss || !ds) return WEFT_EINVAL;
  if (dst_type == src_type) {
    memmove(dst, src, (size_t)n * ss);
    return 0;
  }
  int kind = convert_kind(dst_type, src_type);
  if (kind < 0) return WEFT_EUNSUPPORTED;
#ifdef WEFT_HAVE_AVX2_BUILD
  const weft__vec *vec =
      weft__cpu_has_avx2() ? &weft__vec_avx2 : &weft__vec_portable;
#else
  const weft__vec *vec = &weft__vec_portable;
#endif
  /* a mapped file's tensor may sit at any offset: misaligned data goes
   * through aligned blocks */
  _Alignas(64) unsigned char tin[1 << 13], tout[1 << 13];
  bool misaligned = ((uintptr_t)src % ss) != 0 || ((uintptr_t)dst % ds) != 0;
  int64_t step = misaligned ? (int64_t)(sizeof tin / 4) : (n ? n : 1);
  for (int64_t b = 0; b < n; b += step) {
    int64_t m = n - b < step ? n - b : step;
    const void *s = (const char *)src + (size_t)b * ss;
    void *d = (char *)dst + (size_t)b * ds;
    if (misaligned) memcpy(tin, s, (size_t)m * ss), s = tin;
    void *o = misaligned ? (void *)tout : d;
    if (kind >= 4) {
      convert_between_halves(kind, o, s, m);
    } else {
      conv_job j = {vec, o, s, kind};
      convert_range(&j, 0, m, 0);
    }
    if (misaligned) memcpy(d, tout, (size_t)m * ds);
  }
  return 0;
}
