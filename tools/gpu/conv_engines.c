/* conv_engines.c - every cuDNN graph-API engine configuration for SD1.5's
 * 3x3 convolutions in NHWC fp16, timed, checked and compared.
 *
 * weft's channels-last convolution (kernels/cuda/conv_cudnn.c, g_build)
 * takes the first configuration of heuristic mode A whose numerical notes
 * are only "tensor core" and that finalizes.  That is a safe pick, not
 * necessarily a fast one: this tool lists what modes A, B and FALLBACK
 * offer for each shape, times each configuration alone, says which are
 * deterministic in fact (two runs, same bits) and how far their results
 * are from weft's pick and from an fp64 reference at sampled points, so
 * that a better rule (or a table of engines) can be chosen from data.
 *
 * The graph is built exactly as weft builds it: x, w and y fp16 with dims
 * in NCHW order and NHWC strides, byte alignment 16, fp32 compute,
 * cross-correlation, dilation 1, stride 1, no padding (weft feeds cuDNN an
 * input with the zero border already written, so x here is (h+2)x(w+2)
 * with zero borders), alpha 1, beta 0.
 *
 * Usage:  conv_engines [c,h,w,k,n ...]    (default: SD1.5's UNet and VAE
 *         shapes).  OUT=dir also writes dir/conv_engines.md.
 *         CONV_ENGINES_DEADLINE_S (100): no shape starts after this many
 *         seconds; within a shape, configurations stop at 1.5 times it, so
 *         a slow shape cannot push the run past the device call's limit.
 * Build:  cc -O2 -std=c11 -Wall -Wextra -I$CUDA/include conv_engines.c
 *         -L$CUDA/lib64 -lcudnn -lcudart  (tools/gpu/conv_engines.sh finds
 *         cuDNN where the GPU machine has it).
 * Exit status: 0 when the device and cuDNN could be set up (failing
 * configurations are reported, not fatal), 1 when not, 2 on bad usage. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <cuda_runtime.h>
#include <cudnn.h>
#include <math.h> /* only the NAN and isnan macros: no -lm needed */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- settings ---- */
enum { WARMUP = 3, ROUNDS = 5, REPS = 20, SAMPLES = 256 };
/* A configuration's timed rounds are cut to about this many microseconds
 * in all (fewer calls a round), so that a slow fallback engine on the
 * 512x512 VAE shape costs seconds, not minutes. */
static const double ROUND_BUDGET_US = 2.0e6;
enum { MAX_NOTES = 32, MAX_KNOBS = 64 };
enum { MODE_A, MODE_B, MODE_F, NMODES };
static const cudnnBackendHeurMode_t heur_modes[NMODES] = {
    CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_B, CUDNN_HEUR_MODE_FALLBACK};
static const char mode_letter[NMODES] = {'A', 'B', 'F'};

typedef struct {
  int64_t c, h, w, k, n;
  const char *net;
} shape_t;

/* SD1.5's 3x3 stride-1 convolutions: the UNet at batch 2 (classifier-free
 * guidance) and the VAE decoder at batch 1 */
static const shape_t default_shapes[] = {
    {1280, 16, 16, 1280, 2, "UNet"}, {1280, 8, 8, 1280, 2, "UNet"},
    {320, 64, 64, 320, 2, "UNet"},   {640, 32, 32, 640, 2, "UNet"},
    {2560, 16, 16, 1280, 2, "UNet"}, {1280, 32, 32, 1280, 2, "UNet"},
    {2560, 8, 8, 1280, 2, "UNet"},   {1920, 16, 16, 1280, 2, "UNet"},
    {640, 64, 64, 320, 2, "UNet"},   {512, 64, 64, 512, 1, "VAE"},
    {512, 128, 128, 512, 1, "VAE"},  {256, 256, 256, 256, 1, "VAE"},
    {128, 512, 512, 128, 1, "VAE"},
};

/* Short names, indexed by the enums' values (stable across cuDNN 9
 * releases; values past a table's end print as numbers).  Tables of
 * strings rather than the enumerators: several knob enumerators are
 * marked deprecated and would warn, and a newer header may add some. */
static const char *const note_names[] = {
    "TC",   "DOWNCVT", "REDPREC", "FFT",    "NONDET",
    "WINO", "WINO4",   "WINO6",   "WINO13", "STRICT_NAN"};
static const char *const behavior_names[] = {"RTC", "FILT_I8x32", "BIAS_I8x32",
                                             "CUDAGRAPH", "CUBLASLT"};
static const char *const knob_names[] = {"SPLIT_K",
                                         "SWIZZLE",
                                         "TILE_SIZE",
                                         "USE_TEX",
                                         "EDGE",
                                         "KBLOCK",
                                         "LDGA",
                                         "LDGB",
                                         "CHUNK_K",
                                         "SPLIT_H",
                                         "WINO_TILE",
                                         "MULTIPLY",
                                         "SPLIT_K_BUF",
                                         "TILEK",
                                         "STAGES",
                                         "REDUCTION_MODE",
                                         "CTA_SPLIT_K_MODE",
                                         "SPLIT_K_SLC",
                                         "IDX_MODE",
                                         "SLICED",
                                         "SPLIT_RS",
                                         "SINGLEBUFFER",
                                         "LDGC",
                                         "SPECFILT",
                                         "KERNEL_CFG",
                                         "WORKSPACE",
                                         "TILE_CGA",
                                         "TILE_CGA_M",
                                         "TILE_CGA_N",
                                         "BLOCK_SIZE",
                                         "OCCUPANCY",
                                         "ARRAY_SIZE_PER_THREAD",
                                         "NUM_C_PER_BLOCK",
                                         "SPLIT_COLS",
                                         "TILE_ROWS",
                                         "TILE_COLS",
                                         "LOAD_SIZE",
                                         "CTA_COUNT",
                                         "STREAM_K",
                                         "SPLIT_P_SLC",
                                         "TILE_M",
                                         "TILE_N",
                                         "WARP_SPEC_CFG",
                                         "SWAP_AB"};
#define NAMES(t) ((int)(sizeof t / sizeof t[0]))

/* ---- one engine configuration ---- */
typedef struct {
  cudnnBackendDescriptor_t cfg, plan;
  int64_t gidx; /* engine global index, -1 when unreadable */
  bool notes_read;
  int nnotes, nbeh, nknobs;
  int notes[MAX_NOTES], beh[MAX_NOTES];
  int64_t ktype[MAX_KNOBS], kval[MAX_KNOBS]; /* sorted by type */
  int rank[NMODES];                          /* -1: not from that mode */
  int64_t ws;                                /* workspace bytes */
  double fin_ms;                             /* plan finalize time */
  cudnnStatus_t fin_st;
  const char *why; /* why there is no timing; NULL when timed */
  char whybuf[160];
  double us; /* median microseconds a call */
  int reps;  /* calls a timed round */
  bool checked, repeat;
  double diff, cpu_err;
} rec_t;

typedef struct {
  char label[64];
  const char *skipped;
  int nrec, nfin_fail, nexec_fail;
  double weft_us, allowed_us, any_us;
  char weft[200], allowed[240], any[280];
  char row[160]; /* a line of conv_cudnn.c's tuned_h200 table, or "" */
} summary_t;

/* ---- process-wide state ---- */
static FILE *g_md;  /* $OUT/conv_engines.md, or NULL */
static bool g_dead; /* the CUDA context hit an error: stop GPU work */
static double g_t0; /* monotonic seconds at start */
static double g_deadline = 100.0;
static int64_t g_max_rank = INT64_MAX; /* CONV_ENGINES_MAX_RANK */
static cudnnHandle_t g_h;
static cudaStream_t g_stream;
static cudaEvent_t g_ev[2];

__attribute__((format(printf, 1, 2))) static void out(const char *fmt, ...) {
  va_list a;
  va_start(a, fmt);
  vfprintf(stdout, fmt, a);
  va_end(a);
  if (g_md) {
    va_start(a, fmt);
    vfprintf(g_md, fmt, a);
    va_end(a);
  }
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
static double elapsed_s(void) {
  return now_s() - g_t0;
}

/* A CUDA error after launches may be sticky (the context is lost), so any
 * one ends the GPU work; what was measured is still written. */
static bool cuda_ok(cudaError_t e, const char *what) {
  if (e == cudaSuccess) return true;
  fprintf(stderr, "conv_engines: %s: %s\n", what, cudaGetErrorString(e));
  return false;
}

/* ---- fp16 on the host, without libm ---- */
static uint16_t f2h(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t mant = x & 0x7fffffu;
  const int exp = (int)((x >> 23) & 0xffu);
  if (exp == 0xff) return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u : 0));
  const int e = exp - 127 + 15;
  if (e >= 31) return (uint16_t)(sign | 0x7c00u);
  if (e <= 0) { /* subnormal half: round the shifted significand */
    if (e < -10) return (uint16_t)sign;
    mant |= 0x800000u;
    const int shift = 14 - e;
    uint32_t h = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (h & 1))) h++;
    return (uint16_t)(sign | h);
  }
  /* a carry out of the significand correctly bumps the exponent */
  uint32_t h = ((uint32_t)e << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;
  return (uint16_t)(sign | h);
}

static float h2f(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  uint32_t bits;
  float f;
  if (e == 0) { /* zero or subnormal: m * 2^-24, exact in float */
    f = (float)m * (1.0f / 16777216.0f);
    return sign ? -f : f;
  }
  if (e == 31)
    bits = sign | 0x7f800000u | (m << 13);
  else
    bits = sign | ((e - 15 + 127) << 23) | (m << 13);
  memcpy(&f, &bits, 4);
  return f;
}

/* fixed-seed LCG (Knuth's MMIX constants): the same data every run */
static uint64_t g_seed = 0x243f6a8885a308d3ull;
static uint32_t lcg(void) {
  g_seed = g_seed * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(g_seed >> 33);
}
static float lcg_pm1(void) { /* uniform in [-1, 1) */
  return (float)(lcg() >> 7) * (2.0f / 16777216.0f) - 1.0f;
}

static double my_sqrt(double v) { /* Newton: keeps the build off libm */
  double r = v > 1 ? v : 1;
  for (int i = 0; i < 60; i++)
    r = 0.5 * (r + v / r);
  return r;
}
static double my_abs(double v) {
  return v < 0 ? -v : v;
}

/* ---- describing a configuration ---- */
static bool tc_only(const rec_t *r) { /* weft's g_engine_ok */
  if (!r->notes_read) return false;
  for (int i = 0; i < r->nnotes; i++)
    if (r->notes[i] != CUDNN_NUMERICAL_NOTE_TENSOR_CORE) return false;
  return true;
}

static void describe(rec_t *r) {
  cudnnBackendDescriptor_t eng = NULL;
  int64_t n = 0;
  r->gidx = -1;
  if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR, &eng) ==
          CUDNN_STATUS_SUCCESS &&
      cudnnBackendGetAttribute(r->cfg, CUDNN_ATTR_ENGINECFG_ENGINE,
                               CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n,
                               &eng) == CUDNN_STATUS_SUCCESS &&
      n == 1) {
    int64_t gi = -1;
    if (cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_GLOBAL_INDEX,
                                 CUDNN_TYPE_INT64, 1, &n,
                                 &gi) == CUDNN_STATUS_SUCCESS)
      r->gidx = gi;
    cudnnBackendNumericalNote_t notes[MAX_NOTES];
    if (cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE,
                                 CUDNN_TYPE_NUMERICAL_NOTE, MAX_NOTES, &n,
                                 notes) == CUDNN_STATUS_SUCCESS) {
      r->notes_read = true;
      r->nnotes = (int)(n < MAX_NOTES ? n : MAX_NOTES);
      for (int i = 0; i < r->nnotes; i++)
        r->notes[i] = (int)notes[i];
    }
    /* behavior notes exist in every cuDNN 9 header; an older library that
     * rejects the query just leaves the column empty */
    cudnnBackendBehaviorNote_t beh[MAX_NOTES];
    if (cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE,
                                 CUDNN_TYPE_BEHAVIOR_NOTE, MAX_NOTES, &n,
                                 beh) == CUDNN_STATUS_SUCCESS) {
      r->nbeh = (int)(n < MAX_NOTES ? n : MAX_NOTES);
      for (int i = 0; i < r->nbeh; i++)
        r->beh[i] = (int)beh[i];
    }
  }
  if (eng) cudnnBackendDestroyDescriptor(eng);

  /* Knob choices: descriptors made first, as cudnn_frontend does, since
   * asking for the count with a NULL array is not documented for this
   * attribute. */
  cudnnBackendDescriptor_t kc[MAX_KNOBS];
  int made = 0;
  for (; made < MAX_KNOBS; made++)
    if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_KNOB_CHOICE_DESCRIPTOR,
                                     &kc[made]) != CUDNN_STATUS_SUCCESS)
      break;
  n = 0;
  if (made > 0 &&
      cudnnBackendGetAttribute(r->cfg, CUDNN_ATTR_ENGINECFG_KNOB_CHOICES,
                               CUDNN_TYPE_BACKEND_DESCRIPTOR, made, &n,
                               kc) == CUDNN_STATUS_SUCCESS) {
    for (int64_t i = 0; i < n && i < made; i++) {
      cudnnBackendKnobType_t t;
      int64_t v = 0, got = 0;
      if (cudnnBackendGetAttribute(kc[i], CUDNN_ATTR_KNOB_CHOICE_KNOB_TYPE,
                                   CUDNN_TYPE_KNOB_TYPE, 1, &got,
                                   &t) != CUDNN_STATUS_SUCCESS ||
          cudnnBackendGetAttribute(kc[i], CUDNN_ATTR_KNOB_CHOICE_KNOB_VALUE,
                                   CUDNN_TYPE_INT64, 1, &got,
                                   &v) != CUDNN_STATUS_SUCCESS)
        continue;
      /* insertion by type: the dedupe compares sorted lists */
      int j = r->nknobs++;
      while (j > 0 && r->ktype[j - 1] > (int64_t)t) {
        r->ktype[j] = r->ktype[j - 1], r->kval[j] = r->kval[j - 1];
        j--;
      }
      r->ktype[j] = (int64_t)t, r->kval[j] = v;
    }
  }
  for (int i = 0; i < made; i++)
    cudnnBackendDestroyDescriptor(kc[i]);
}

static bool same_config(const rec_t *a, const rec_t *b) {
  if (a->gidx != b->gidx || a->nknobs != b->nknobs) return false;
  for (int i = 0; i < a->nknobs; i++)
    if (a->ktype[i] != b->ktype[i] || a->kval[i] != b->kval[i]) return false;
  return true;
}

static void notes_str(const rec_t *r, char *s, size_t cap) {
  size_t o = 0;
  s[0] = 0;
  if (!r->notes_read) {
    snprintf(s, cap, "?");
    return;
  }
  for (int i = 0; i < r->nnotes && o < cap; i++) {
    const int v = r->notes[i];
    o += (size_t)(v >= 0 && v < NAMES(note_names)
                      ? snprintf(s + o, cap - o, "%s%s", i ? " " : "",
                                 note_names[v])
                      : snprintf(s + o, cap - o, "%snote%d", i ? " " : "", v));
  }
  if (!r->nnotes) snprintf(s, cap, "(none)");
}

static void beh_str(const rec_t *r, char *s, size_t cap) {
  size_t o = 0;
  s[0] = 0;
  for (int i = 0; i < r->nbeh && o < cap; i++) {
    const int v = r->beh[i];
    o += (size_t)(v >= 0 && v < NAMES(behavior_names)
                      ? snprintf(s + o, cap - o, "%s%s", i ? " " : "",
                                 behavior_names[v])
                      : snprintf(s + o, cap - o, "%sbeh%d", i ? " " : "", v));
  }
}

static void knobs_str(const rec_t *r, char *s, size_t cap) {
  size_t o = 0;
  s[0] = 0;
  for (int i = 0; i < r->nknobs && o < cap; i++) {
    const int64_t t = r->ktype[i];
    o +=
        (size_t)(t >= 0 && t < NAMES(knob_names)
                     ? snprintf(s + o, cap - o, "%s%s=%lld", i ? " " : "",
                                knob_names[t], (long long)r->kval[i])
                     : snprintf(s + o, cap - o, "%sknob%lld=%lld", i ? " " : "",
                                (long long)t, (long long)r->kval[i]));
  }
}

/* "engine 12 SWIZZLE=1 TILE_SIZE=3" (+ " [notes]" when asked) */
static void cfg_name(const rec_t *r, bool with_notes, char *s, size_t cap) {
  char k[160], n[80];
  knobs_str(r, k, sizeof k);
  notes_str(r, n, sizeof n);
  if (with_notes)
    snprintf(s, cap, "engine %lld%s%s [%s]", (long long)r->gidx, *k ? " " : "",
             k, n);
  else
    snprintf(s, cap, "engine %lld%s%s", (long long)r->gidx, *k ? " " : "", k);
}

/* ---- the graph (weft's g_tensor / g_build) ---- */
#define GK(call)                                                               \
  do {                                                                         \
    if ((st = (call)) != CUDNN_STATUS_SUCCESS) {                               \
      fprintf(stderr, "conv_engines: %s: %s\n", #call,                         \
              cudnnGetErrorString(st));                                        \
      goto fail;                                                               \
    }                                                                          \
  } while (0)

static cudnnStatus_t g_tensor(cudnnBackendDescriptor_t *t, int64_t uid,
                              const int64_t dims[4], const int64_t strides[4]) {
  cudnnStatus_t st;
  const cudnnDataType_t dt = CUDNN_DATA_HALF;
  const int64_t align = 16;
  GK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_TENSOR_DESCRIPTOR, t));
  GK(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_DATA_TYPE,
                              CUDNN_TYPE_DATA_TYPE, 1, &dt));
  GK(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_DIMENSIONS,
                              CUDNN_TYPE_INT64, 4, dims));
  GK(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64,
                              4, strides));
  GK(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64,
                              1, &uid));
  GK(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT,
                              CUDNN_TYPE_INT64, 1, &align));
  GK(cudnnBackendFinalize(*t));
fail:
  return st;
}

/* keep[0..5]: x, w, y, convolution, operation, operation graph */
static cudnnStatus_t build_graph(const shape_t *s,
                                 cudnnBackendDescriptor_t keep[6]) {
  const int64_t n = s->n, c = s->c, k = s->k, hp = s->h + 2, wp = s->w + 2;
  const int64_t ho = s->h, wo = s->w;
  const int64_t xd[4] = {n, c, hp, wp}, xs[4] = {hp * wp * c, 1, wp * c, c};
  const int64_t wd[4] = {k, c, 3, 3}, wsd[4] = {9 * c, 1, 3 * c, c};
  const int64_t yd[4] = {n, k, ho, wo}, ys[4] = {ho * wo * k, 1, wo * k, k};
  cudnnStatus_t st;
  GK(g_tensor(&keep[0], 'x', xd, xs));
  GK(g_tensor(&keep[1], 'w', wd, wsd));
  GK(g_tensor(&keep[2], 'y', yd, ys));
  {
    const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
    const int64_t dims = 2, dil[2] = {1, 1}, zero[2] = {0, 0}, str[2] = {1, 1};
    cudnnBackendDescriptor_t *conv = &keep[3];
    GK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR,
                                    conv));
    GK(cudnnBackendSetAttribute(*conv, CUDNN_ATTR_CONVOLUTION_COMP_TYPE,
                                CUDNN_TYPE_DATA_TYPE, 1, &comp));
    GK(cudnnBackendSetAttribute(*conv, CUDNN_ATTR_CONVOLUTION_CONV_MODE,
                                CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode));
    GK(cudnnBackendSetAttribute(*conv, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS,
                                CUDNN_TYPE_INT64, 1, &dims));
    GK(cudnnBackendSetAttribute(*conv, CUDNN_ATTR_CONVOLUTION_DILATIONS,
                                CUDNN_TYPE_INT64, 2, dil));
    GK(cudnnBackendSetAttribute(*conv, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES,
                                CUDNN_TYPE_INT64, 2, str));
    GK(cudnnBackendSetAttribute(*conv, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS,
                                CUDNN_TYPE_INT64, 2, zero));
    GK(cudnnBackendSetAttribute(*conv, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS,
                                CUDNN_TYPE_INT64, 2, zero));
    GK(cudnnBackendFinalize(*conv));
  }
  {
    const float one = 1.0f, zero = 0.0f; /* fp32 compute: float scalars */
    cudnnBackendDescriptor_t *op = &keep[4];
    GK(cudnnBackendCreateDescriptor(
        CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR, op));
    GK(cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X,
                                CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &keep[0]));
    GK(cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W,
                                CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &keep[1]));
    GK(cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y,
                                CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &keep[2]));
    GK(cudnnBackendSetAttribute(
        *op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC,
        CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &keep[3]));
    GK(cudnnBackendSetAttribute(*op,
                                CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA,
                                CUDNN_TYPE_FLOAT, 1, &one));
    GK(cudnnBackendSetAttribute(*op,
                                CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA,
                                CUDNN_TYPE_FLOAT, 1, &zero));
    GK(cudnnBackendFinalize(*op));
  }
  GK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR,
                                  &keep[5]));
  GK(cudnnBackendSetAttribute(keep[5], CUDNN_ATTR_OPERATIONGRAPH_OPS,
                              CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &keep[4]));
  GK(cudnnBackendSetAttribute(keep[5], CUDNN_ATTR_OPERATIONGRAPH_HANDLE,
                              CUDNN_TYPE_HANDLE, 1, &g_h));
  GK(cudnnBackendFinalize(keep[5]));
fail:
  return st;
}
#undef GK

/* ---- heuristics ---- */
typedef struct {
  rec_t *r;
  int n, cap;
} recs_t;

/* Appends mode m's configurations to rs (a configuration already there
 * from an earlier mode just gets its rank in m).  The count, or -1 with
 * the status in *err. */
static int collect(cudnnBackendDescriptor_t graph, int m, recs_t *rs,
                   cudnnStatus_t *err) {
  cudnnBackendDescriptor_t heur = NULL, *cfg = NULL;
  const cudnnBackendHeurMode_t mode = heur_modes[m];
  int64_t ncfg = 0, got = 0;
  cudnnStatus_t st;
  if ((st = cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR,
                                         &heur)) != CUDNN_STATUS_SUCCESS ||
      (st = cudnnBackendSetAttribute(
           heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH,
           CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph)) != CUDNN_STATUS_SUCCESS ||
      (st = cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_MODE,
                                     CUDNN_TYPE_HEUR_MODE, 1, &mode)) !=
          CUDNN_STATUS_SUCCESS ||
      (st = cudnnBackendFinalize(heur)) != CUDNN_STATUS_SUCCESS ||
      (st = cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                     CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &ncfg,
                                     NULL)) != CUDNN_STATUS_SUCCESS)
    goto fail;
  if (ncfg <= 0) goto done;
  if (!(cfg = calloc((size_t)ncfg, sizeof *cfg))) {
    st = CUDNN_STATUS_ALLOC_FAILED;
    goto fail;
  }
  for (int64_t i = 0; i < ncfg; i++)
    if ((st = cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR,
                                           &cfg[i])) != CUDNN_STATUS_SUCCESS)
      goto fail;
  if ((st = cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                     CUDNN_TYPE_BACKEND_DESCRIPTOR, ncfg, &got,
                                     cfg)) != CUDNN_STATUS_SUCCESS)
    goto fail;
  for (int64_t i = 0; i < got && i < g_max_rank; i++) {
    rec_t t;
    memset(&t, 0, sizeof t);
    t.cfg = cfg[i];
    describe(&t);
    int j = 0;
    while (j < rs->n && !same_config(&rs->r[j], &t))
      j++;
    if (j < rs->n) { /* known: cfg[i] destroyed below */
      if (rs->r[j].rank[m] < 0) rs->r[j].rank[m] = (int)i;
      continue;
    }
    if (rs->n == rs->cap) {
      const int cap = rs->cap ? 2 * rs->cap : 64;
      rec_t *p = realloc(rs->r, (size_t)cap * sizeof *p);
      if (!p) break;
      rs->r = p, rs->cap = cap;
    }
    for (int q = 0; q < NMODES; q++)
      t.rank[q] = -1;
    t.rank[m] = (int)i;
    rs->r[rs->n++] = t;
    cfg[i] = NULL; /* now rs's */
  }
done:
  st = CUDNN_STATUS_SUCCESS;
fail:
  if (cfg)
    for (int64_t i = 0; i < ncfg; i++)
      if (cfg[i]) cudnnBackendDestroyDescriptor(cfg[i]);
  free(cfg);
  if (heur) cudnnBackendDestroyDescriptor(heur);
  *err = st;
  return st == CUDNN_STATUS_SUCCESS ? (int)got : -1;
}

static void make_plan(rec_t *r) {
  cudnnBackendDescriptor_t p = NULL;
  int64_t ws = 0, n = 0;
  cudnnStatus_t st;
  const double t = now_s();
  if ((st =
           cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR,
                                        &p)) == CUDNN_STATUS_SUCCESS &&
      (st = cudnnBackendSetAttribute(p, CUDNN_ATTR_EXECUTION_PLAN_HANDLE,
                                     CUDNN_TYPE_HANDLE, 1, &g_h)) ==
          CUDNN_STATUS_SUCCESS &&
      (st = cudnnBackendSetAttribute(p, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                                     CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                     &r->cfg)) == CUDNN_STATUS_SUCCESS &&
      (st = cudnnBackendFinalize(p)) == CUDNN_STATUS_SUCCESS &&
      (st = cudnnBackendGetAttribute(
           p, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n,
           &ws)) == CUDNN_STATUS_SUCCESS) {
    r->plan = p, r->ws = ws;
  } else if (p) {
    cudnnBackendDestroyDescriptor(p);
  }
  r->fin_ms = 1e3 * (now_s() - t);
  r->fin_st = st;
}

/* ---- running one configuration ---- */
typedef struct {
  const shape_t *s;
  void *dx, *dw, *dy;
  size_t ybytes;
  uint16_t *ha, *hb, *ref; /* host copies of y */
  const int64_t *sidx;     /* sampled y indices */
  const double *sval;      /* their fp64 values */
} job_t;

static cudnnStatus_t exec_n(const rec_t *r, cudnnBackendDescriptor_t vp,
                            int n) {
  for (int i = 0; i < n; i++) {
    const cudnnStatus_t st = cudnnBackendExecute(g_h, r->plan, vp);
    if (st != CUDNN_STATUS_SUCCESS) return st;
  }
  return CUDNN_STATUS_SUCCESS;
}

static int cmp_double(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Times r, then runs it twice more on a y filled with NaNs (0xffff) to
 * compare the two results bit for bit, with weft's pick (job->ref, when
 * set) and with the fp64 samples.  A y left partly unwritten shows as
 * NaN differences. */
static void run_config(rec_t *r, job_t *job, bool is_ref) {
  void *ws = NULL;
  cudnnBackendDescriptor_t vp = NULL;
  cudnnStatus_t st = CUDNN_STATUS_SUCCESS;
  const char *phase = "variant pack";
  if (r->ws > 0 && cudaMalloc(&ws, (size_t)r->ws) != cudaSuccess) {
    cudaGetLastError(); /* an allocation failure is not sticky */
    snprintf(r->whybuf, sizeof r->whybuf, "workspace of %.0f MiB not allocated",
             (double)r->ws / 1048576.0);
    r->why = r->whybuf;
    return;
  }
  /* One variant pack per configuration, reused for every call: this times
   * the engine; weft's g_run builds a pack per call, a host cost that the
   * GPU timing below hides unless the host is the bottleneck. */
  const int64_t uids[3] = {'x', 'w', 'y'};
  void *ptrs[3] = {job->dx, job->dw, job->dy};
  if ((st = cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR,
                                         &vp)) != CUDNN_STATUS_SUCCESS ||
      (st = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS,
                                     CUDNN_TYPE_INT64, 3, uids)) !=
          CUDNN_STATUS_SUCCESS ||
      (st = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS,
                                     CUDNN_TYPE_VOID_PTR, 3, ptrs)) !=
          CUDNN_STATUS_SUCCESS ||
      (st = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE,
                                     CUDNN_TYPE_VOID_PTR, 1, &ws)) !=
          CUDNN_STATUS_SUCCESS ||
      (st = cudnnBackendFinalize(vp)) != CUDNN_STATUS_SUCCESS)
    goto fail;

  /* warm-up; the last two calls estimate the time a call, which sets how
   * many calls a round gets */
  phase = "execute";
  float ms = 0;
  if ((st = exec_n(r, vp, WARMUP - 2)) != CUDNN_STATUS_SUCCESS) goto fail;
  cudaEventRecord(g_ev[0], g_stream);
  if ((st = exec_n(r, vp, 2)) != CUDNN_STATUS_SUCCESS) goto fail;
  cudaEventRecord(g_ev[1], g_stream);
  if (!cuda_ok(cudaEventSynchronize(g_ev[1]), "warm-up") ||
      !cuda_ok(cudaEventElapsedTime(&ms, g_ev[0], g_ev[1]), "event time")) {
    g_dead = true;
    goto cuda_fail;
  }
  const double est = 1e3 * ms / 2;
  r->reps = REPS;
  if (est * ROUNDS * REPS > ROUND_BUDGET_US) {
    r->reps = (int)(ROUND_BUDGET_US / (ROUNDS * (est > 1 ? est : 1)));
    if (r->reps < 1) r->reps = 1;
  }
  double t[ROUNDS];
  for (int i = 0; i < ROUNDS; i++) {
    cudaEventRecord(g_ev[0], g_stream);
    if ((st = exec_n(r, vp, r->reps)) != CUDNN_STATUS_SUCCESS) goto fail;
    cudaEventRecord(g_ev[1], g_stream);
    if (!cuda_ok(cudaEventSynchronize(g_ev[1]), "timed round") ||
        !cuda_ok(cudaEventElapsedTime(&ms, g_ev[0], g_ev[1]), "event time")) {
      g_dead = true;
      goto cuda_fail;
    }
    t[i] = 1e3 * ms / r->reps;
  }
  qsort(t, ROUNDS, sizeof t[0], cmp_double);
  r->us = t[ROUNDS / 2];

  /* correctness: two runs, each on a y set to NaN first */
  uint16_t *dst[2] = {job->ha, job->hb};
  for (int i = 0; i < 2; i++) {
    if (!cuda_ok(cudaMemsetAsync(job->dy, 0xff, job->ybytes, g_stream),
                 "memset y")) {
      g_dead = true;
      goto cuda_fail;
    }
    if ((st = exec_n(r, vp, 1)) != CUDNN_STATUS_SUCCESS) goto fail;
    if (!cuda_ok(cudaMemcpyAsync(dst[i], job->dy, job->ybytes,
                                 cudaMemcpyDeviceToHost, g_stream),
                 "copy y") ||
        !cuda_ok(cudaStreamSynchronize(g_stream), "correctness run")) {
      g_dead = true;
      goto cuda_fail;
    }
  }
  r->checked = true;
  r->repeat = !memcmp(job->ha, job->hb, job->ybytes);
  const size_t ny = job->ybytes / 2;
  if (is_ref) memcpy(job->ref, job->ha, job->ybytes);
  if (job->ref) {
    double d = 0;
    for (size_t i = 0; i < ny; i++) {
      const double v = my_abs((double)h2f(job->ha[i]) - h2f(job->ref[i]));
      if (isnan(v)) {
        d = NAN;
        break;
      }
      if (v > d) d = v;
    }
    r->diff = d;
  } else {
    r->diff = -1; /* no reference */
  }
  double e = 0;
  for (int i = 0; i < SAMPLES; i++) {
    const double v = my_abs((double)h2f(job->ha[job->sidx[i]]) - job->sval[i]);
    if (isnan(v)) {
      e = NAN;
      break;
    }
    if (v > e) e = v;
  }
  r->cpu_err = e;
  goto done;

fail:
  snprintf(r->whybuf, sizeof r->whybuf, "%s failed: %s", phase,
           cudnnGetErrorString(st));
  r->why = r->whybuf;
  /* an execute that failed may have left launches behind */
  if (cudaStreamSynchronize(g_stream) != cudaSuccess) g_dead = true;
  goto done;
cuda_fail:
  snprintf(r->whybuf, sizeof r->whybuf, "CUDA error (run stopped here)");
  r->why = r->whybuf;
done:
  if (vp) cudnnBackendDestroyDescriptor(vp);
  if (ws) cudaFree(ws);
}

/* ---- one shape ---- */
static void fmt_diff(double v, char *s, size_t cap) {
  if (isnan(v))
    snprintf(s, cap, "nan");
  else if (v < 0)
    snprintf(s, cap, "-");
  else
    snprintf(s, cap, "%.3g", v);
}

static void rank_str(const rec_t *r, char *s, size_t cap) {
  size_t o = 0;
  for (int m = 0; m < NMODES && o < cap; m++)
    o += (size_t)(r->rank[m] >= 0
                      ? snprintf(s + o, cap - o, "%s%d", m ? "/" : "",
                                 r->rank[m])
                      : snprintf(s + o, cap - o, "%s-", m ? "/" : ""));
}

/* r as a row of conv_cudnn.c's tuned_h200 table ({n, c, h + 2, w + 2, k,
 * engine, TILE_SIZE, TILEK, TILE_CGA_M, TILE_CGA_N, WORKSPACE}), when its
 * knobs are exactly the six that table sets (IDX_MODE 0); else "". */
static void table_row(const shape_t *s, const rec_t *r, char *buf, size_t len) {
  int64_t v[29];
  bool have[29] = {false};
  buf[0] = 0;
  for (int i = 0; i < r->nknobs; i++) {
    if (r->ktype[i] < 0 || r->ktype[i] > 28) return;
    v[r->ktype[i]] = r->kval[i], have[r->ktype[i]] = true;
  }
  const int want[6] = {CUDNN_KNOB_TYPE_TILE_SIZE,  CUDNN_KNOB_TYPE_TILEK,
                       CUDNN_KNOB_TYPE_IDX_MODE,   CUDNN_KNOB_TYPE_WORKSPACE,
                       CUDNN_KNOB_TYPE_TILE_CGA_M, CUDNN_KNOB_TYPE_TILE_CGA_N};
  int n = 0;
  for (int t = 0; t < 29; t++)
    n += have[t];
  for (int i = 0; i < 6; i++)
    if (!have[want[i]]) return;
  if (n != 6 || v[CUDNN_KNOB_TYPE_IDX_MODE] != 0) return;
  snprintf(buf, len,
           "    {%lld, %lld, %lld, %lld, %lld, %lld, %lld, %lld, %lld, %lld, "
           "%lld},",
           (long long)s->n, (long long)s->c, (long long)s->h + 2,
           (long long)s->w + 2, (long long)s->k, (long long)r->gidx,
           (long long)v[CUDNN_KNOB_TYPE_TILE_SIZE],
           (long long)v[CUDNN_KNOB_TYPE_TILEK],
           (long long)v[CUDNN_KNOB_TYPE_TILE_CGA_M],
           (long long)v[CUDNN_KNOB_TYPE_TILE_CGA_N],
           (long long)v[CUDNN_KNOB_TYPE_WORKSPACE]);
}

static void run_shape(const shape_t *s, summary_t *sum) {
  const int64_t n = s->n, c = s->c, k = s->k, h = s->h, w = s->w;
  const int64_t hp = h + 2, wp = w + 2;
  const size_t nx = (size_t)(n * hp * wp * c), nw = (size_t)(k * 9 * c),
               ny = (size_t)(n * h * w * k);
  const double flop =
      2.0 * (double)n * (double)k * (double)h * (double)w * (double)c * 9.0;
  cudnnBackendDescriptor_t keep[6] = {0};
  recs_t rs = {0};
  uint16_t *hx = NULL, *hw = NULL, *ha = NULL, *hb = NULL, *ref = NULL;
  void *dx = NULL, *dw = NULL, *dy = NULL;
  int64_t sidx[SAMPLES];
  double sval[SAMPLES];
  snprintf(sum->label, sizeof sum->label, "%s n%lld %lldx%lldx%lld->%lld",
           s->net, (long long)n, (long long)c, (long long)h, (long long)w,
           (long long)k);
  sum->weft_us = sum->allowed_us = sum->any_us = -1;
  out("\n## %s (NHWC fp16, 3x3, pre-padded input %lldx%lld; %.2f GFLOP a "
      "call)\n\n",
      sum->label, (long long)hp, (long long)wp, flop * 1e-9);
  fprintf(stderr, "conv_engines: %s at %.0f s\n", sum->label, elapsed_s());

  /* ---- data: x with a zero border, w scaled so y stays near unit size */
  hx = calloc(nx, 2), hw = malloc(nw * 2), ha = malloc(ny * 2),
  hb = malloc(ny * 2), ref = malloc(ny * 2);
  if (!hx || !hw || !ha || !hb || !ref) {
    out("host allocation failed; shape skipped\n");
    sum->skipped = "host allocation failed";
    goto cleanup;
  }
  g_seed = 0x243f6a8885a308d3ull ^ (uint64_t)(c * 131 + h * 7 + k * 3 + n);
  for (int64_t b = 0; b < n; b++)
    for (int64_t i = 1; i <= h; i++)
      for (int64_t j = 1; j <= w; j++)
        for (int64_t q = 0; q < c; q++)
          hx[((b * hp + i) * wp + j) * c + q] = f2h(lcg_pm1());
  const float scale = (float)(1.0 / my_sqrt(9.0 * (double)c));
  for (size_t i = 0; i < nw; i++)
    hw[i] = f2h(lcg_pm1() * scale);
  /* fp64 values of y at sampled points, from the fp16 inputs */
  for (int i = 0; i < SAMPLES; i++) {
    const int64_t b = lcg() % n, oy = lcg() % h, ox = lcg() % w, o = lcg() % k;
    double acc = 0;
    for (int64_t r = 0; r < 3; r++)
      for (int64_t t = 0; t < 3; t++)
        for (int64_t q = 0; q < c; q++)
          acc += (double)h2f(hx[((b * hp + oy + r) * wp + ox + t) * c + q]) *
                 (double)h2f(hw[((o * 3 + r) * 3 + t) * c + q]);
    sidx[i] = ((b * h + oy) * w + ox) * k + o;
    sval[i] = acc;
  }
  if (!cuda_ok(cudaMalloc(&dx, nx * 2), "cudaMalloc x") ||
      !cuda_ok(cudaMalloc(&dw, nw * 2), "cudaMalloc w") ||
      !cuda_ok(cudaMalloc(&dy, ny * 2), "cudaMalloc y") ||
      !cuda_ok(cudaMemcpy(dx, hx, nx * 2, cudaMemcpyHostToDevice), "copy x") ||
      !cuda_ok(cudaMemcpy(dw, hw, nw * 2, cudaMemcpyHostToDevice), "copy w")) {
    cudaGetLastError();
    out("device allocation or copy failed; shape skipped\n");
    sum->skipped = "device allocation failed";
    goto cleanup;
  }

  /* ---- graph and heuristics */
  cudnnStatus_t st = build_graph(s, keep);
  if (st != CUDNN_STATUS_SUCCESS) {
    out("building the operation graph failed: %s; shape skipped\n",
        cudnnGetErrorString(st));
    sum->skipped = "graph not built";
    goto cleanup;
  }
  out("heuristics:");
  for (int m = 0; m < NMODES; m++) {
    const double t = now_s();
    const int got = collect(keep[5], m, &rs, &st);
    if (got < 0)
      out(" mode %c failed (%s);", mode_letter[m], cudnnGetErrorString(st));
    else
      out(" mode %c %d configurations (%.0f ms);", mode_letter[m], got,
          1e3 * (now_s() - t));
  }
  out(" %d distinct.\n", rs.n);
  sum->nrec = rs.n;

  /* ---- plans; weft's pick is the first of mode A's order that is only
   * TC and finalizes (configurations of A came first into rs, in order) */
  int weft = -1;
  for (int i = 0; i < rs.n; i++) {
    make_plan(&rs.r[i]);
    if (!rs.r[i].plan) sum->nfin_fail++;
  }
  {
    int best = -1;
    for (int i = 0; i < rs.n; i++)
      if (rs.r[i].plan && rs.r[i].rank[MODE_A] >= 0 && tc_only(&rs.r[i]) &&
          (best < 0 || rs.r[i].rank[MODE_A] < rs.r[best].rank[MODE_A]))
        best = i;
    weft = best;
  }
  if (sum->nfin_fail) {
    out("finalize failed for %d configuration(s):", sum->nfin_fail);
    for (int i = 0; i < rs.n; i++)
      if (!rs.r[i].plan) {
        char name[200];
        cfg_name(&rs.r[i], false, name, sizeof name);
        out(" %s (%s);", name, cudnnGetErrorString(rs.r[i].fin_st));
      }
    out("\n");
  }

  /* ---- runs: weft's pick first (the reference), then the rest */
  job_t job = {s, dx, dw, dy, ny * 2, ha, hb, NULL, sidx, sval};
  bool cut = false;
  for (int pass = 0; pass < 2; pass++)
    for (int i = 0; i < rs.n; i++) {
      rec_t *r = &rs.r[i];
      if ((pass == 0) != (i == weft) || !r->plan) continue;
      if (g_dead) {
        r->why = "not run (CUDA error earlier)";
        continue;
      }
      if (elapsed_s() > 1.5 * g_deadline) {
        r->why = "not run (deadline)";
        cut = true;
        continue;
      }
      if (i == weft) job.ref = ref;
      run_config(r, &job, i == weft);
      if (r->why) sum->nexec_fail++;
      if (i == weft && !r->checked) job.ref = NULL; /* no reference then */
    }
  if (cut) out("**deadline: some configurations of this shape not run**\n");

  /* ---- table, fastest first */
  int *ord = malloc((size_t)rs.n * sizeof *ord), nord = 0;
  int fast = -1, fast_ok = -1;
  for (int i = 0; i < rs.n; i++) {
    const rec_t *r = &rs.r[i];
    if (!r->plan) continue;
    if (ord) ord[nord++] = i;
    if (r->why) continue;
    if (fast < 0 || r->us < rs.r[fast].us) fast = i;
    if (tc_only(r) && (fast_ok < 0 || r->us < rs.r[fast_ok].us)) fast_ok = i;
  }
  for (int i = 1; ord && i < nord; i++) { /* insertion: untimed last */
    const int v = ord[i];
    int j = i;
    while (j > 0) {
      const rec_t *a = &rs.r[ord[j - 1]], *b = &rs.r[v];
      const bool later = a->why ? !b->why : (!b->why && a->us > b->us);
      if (!later) break;
      ord[j] = ord[j - 1];
      j--;
    }
    ord[j] = v;
  }
  out("\n| rank A/B/F | engine | numerical notes | behavior | knobs | ws MiB | "
      "finalize ms | us/call | TFLOP/s | max abs diff vs weft | max abs err "
      "vs fp64 | repeatable | |\n");
  out("|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|---|---|\n");
  for (int oi = 0; ord && oi < nord; oi++) {
    const int i = ord[oi];
    const rec_t *r = &rs.r[i];
    char rk[32], no[80], be[80], kn[160], us[48], tf[24], df[24], ce[24],
        mark[160];
    rank_str(r, rk, sizeof rk);
    notes_str(r, no, sizeof no);
    beh_str(r, be, sizeof be);
    knobs_str(r, kn, sizeof kn);
    if (r->why) {
      snprintf(us, sizeof us, "-");
      snprintf(tf, sizeof tf, "-");
    } else {
      snprintf(us, sizeof us, r->reps < REPS ? "%.1f (%d calls/round)" : "%.1f",
               r->us, r->reps);
      snprintf(tf, sizeof tf, "%.1f", flop / r->us * 1e-6);
    }
    fmt_diff(r->checked ? r->diff : -1, df, sizeof df);
    fmt_diff(r->checked ? r->cpu_err : -1, ce, sizeof ce);
    size_t o = 0;
    mark[0] = 0;
    if (i == weft) o += (size_t)snprintf(mark + o, sizeof mark - o, "<- weft ");
    if (i == fast_ok && o < sizeof mark)
      o += (size_t)snprintf(mark + o, sizeof mark - o, "fastest allowed ");
    if (i == fast && o < sizeof mark)
      o += (size_t)snprintf(mark + o, sizeof mark - o, "fastest ");
    if (r->why && o < sizeof mark)
      o += (size_t)snprintf(mark + o, sizeof mark - o, "%s", r->why);
    out("| %s | %lld | %s | %s | %s | %.1f | %.0f | %s | %s | %s | %s | %s | "
        "%s |\n",
        rk, (long long)r->gidx, no, be, kn, (double)r->ws / 1048576.0,
        r->fin_ms, us, tf, df, ce,
        r->checked ? (r->repeat ? "yes" : "**no**") : "-", mark);
  }
  free(ord);
  if (weft < 0)
    out("\nweft's filter allows none of mode A's configurations here: weft "
        "would fall back to the legacy API.\n");

  /* ---- for the summary */
  if (weft >= 0 && !rs.r[weft].why) {
    sum->weft_us = rs.r[weft].us;
    cfg_name(&rs.r[weft], false, sum->weft, sizeof sum->weft);
  }
  if (fast_ok >= 0) {
    sum->allowed_us = rs.r[fast_ok].us;
    cfg_name(&rs.r[fast_ok], false, sum->allowed, sizeof sum->allowed);
  }
  if (fast >= 0) {
    sum->any_us = rs.r[fast].us;
    cfg_name(&rs.r[fast], true, sum->any, sizeof sum->any);
  }
  if (fast_ok >= 0 && sum->weft_us > 0 && sum->allowed_us < 0.95 * sum->weft_us)
    table_row(s, &rs.r[fast_ok], sum->row, sizeof sum->row);

cleanup:
  for (int i = 0; i < rs.n; i++) {
    if (rs.r[i].plan) cudnnBackendDestroyDescriptor(rs.r[i].plan);
    if (rs.r[i].cfg) cudnnBackendDestroyDescriptor(rs.r[i].cfg);
  }
  free(rs.r);
  for (int i = 5; i >= 0; i--)
    if (keep[i]) cudnnBackendDestroyDescriptor(keep[i]);
  if (dx) cudaFree(dx);
  if (dw) cudaFree(dw);
  if (dy) cudaFree(dy);
  free(hx), free(hw), free(ha), free(hb), free(ref);
  if (g_md) fflush(g_md);
  fflush(stdout);
}

/* ---- main ---- */
static void usage(void) {
  fprintf(stderr,
          "usage: conv_engines [c,h,w,k,n ...]\n"
          "  each argument a 3x3 stride-1 convolution: c_in,h,w,c_out,batch\n"
          "  (default: SD1.5's UNet and VAE shapes)\n"
          "  OUT=dir also writes dir/conv_engines.md; CONV_ENGINES_DEADLINE_S "
          "(100) stops new shapes\n");
}

int main(int argc, char **argv) {
  g_t0 = now_s();
  const shape_t *shapes = default_shapes;
  int nshapes = NAMES(default_shapes);
  shape_t *given = NULL;
  if (argc > 1) {
    if (!(given = calloc((size_t)argc, sizeof *given))) return 1;
    for (int i = 1; i < argc; i++) {
      long long v[5];
      char extra;
      if (sscanf(argv[i], "%lld,%lld,%lld,%lld,%lld%c", &v[0], &v[1], &v[2],
                 &v[3], &v[4], &extra) != 5 ||
          v[0] < 1 || v[1] < 1 || v[2] < 1 || v[3] < 1 || v[4] < 1) {
        fprintf(stderr, "conv_engines: bad shape '%s'\n", argv[i]);
        usage();
        free(given);
        return 2;
      }
      given[i - 1] = (shape_t){v[0], v[1], v[2], v[3], v[4], "given"};
    }
    shapes = given, nshapes = argc - 1;
  }
  const char *dl = getenv("CONV_ENGINES_DEADLINE_S");
  if (dl && *dl) {
    char *end;
    const double v = strtod(dl, &end);
    if (end != dl && v > 0) g_deadline = v;
  }
  /* CONV_ENGINES_MAX_RANK=N: only each mode's first N configurations (a
   * quick run over many shapes) */
  const char *mr = getenv("CONV_ENGINES_MAX_RANK");
  if (mr && atoi(mr) > 0) g_max_rank = atoi(mr);
  const char *od = getenv("OUT");
  if (od && *od) {
    char path[4096];
    snprintf(path, sizeof path, "%s/conv_engines.md", od);
    if (!(g_md = fopen(path, "w")))
      fprintf(stderr, "conv_engines: cannot write %s; stdout only\n", path);
  }

  out("# cuDNN graph-API engine configurations: 3x3 convolutions, NHWC "
      "fp16\n\n");
  out("cuDNN library %zu (header %d), cudart used by cuDNN %zu\n\n",
      cudnnGetVersion(), (int)CUDNN_VERSION, cudnnGetCudartVersion());
  int ndev = 0, rtv = 0, drv = 0;
  cudaError_t ce = cudaGetDeviceCount(&ndev);
  if (ce != cudaSuccess || ndev < 1) {
    out("no CUDA device: %s\n",
        ce != cudaSuccess ? cudaGetErrorString(ce) : "none found");
    fprintf(stderr, "conv_engines: no CUDA device (%s); nothing measured\n",
            ce != cudaSuccess ? cudaGetErrorString(ce) : "none found");
    if (g_md) fclose(g_md);
    free(given);
    return 1;
  }
  struct cudaDeviceProp prop;
  memset(&prop, 0, sizeof prop);
  cudaGetDeviceProperties(&prop, 0);
  cudaRuntimeGetVersion(&rtv);
  cudaDriverGetVersion(&drv);
  out("GPU: %s (sm_%d%d, %d SMs); CUDA runtime %d, driver %d\n\n", prop.name,
      prop.major, prop.minor, prop.multiProcessorCount, rtv, drv);
  if (!cuda_ok(cudaSetDevice(0), "cudaSetDevice") ||
      !cuda_ok(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking),
               "cudaStreamCreate") ||
      !cuda_ok(cudaEventCreate(&g_ev[0]), "cudaEventCreate") ||
      !cuda_ok(cudaEventCreate(&g_ev[1]), "cudaEventCreate")) {
    out("CUDA setup failed\n");
    if (g_md) fclose(g_md);
    free(given);
    return 1;
  }
  cudnnStatus_t st = cudnnCreate(&g_h);
  if (st != CUDNN_STATUS_SUCCESS) {
    out("cudnnCreate failed: %s\n", cudnnGetErrorString(st));
    if (g_md) fclose(g_md);
    free(given);
    return 1;
  }
  cudnnSetStream(g_h, g_stream);

  out("Each configuration: %d warm-up calls, then the median of %d rounds "
      "of %d calls timed with CUDA events (fewer calls a round for slow "
      "ones, as noted), one variant pack reused.  Then two more calls, each "
      "on a y first set to NaN: \"repeatable\" is whether they gave the same "
      "bits; \"diff vs weft\" compares the first with weft's pick (the "
      "first configuration of mode A whose numerical notes are only TC and "
      "that finalizes); \"err vs fp64\" is against %d sampled outputs "
      "computed in double from the same fp16 inputs.  \"Allowed\" is what "
      "weft's filter allows: numerical notes only TC.  rank A/B/F: the "
      "configuration's place in each heuristic mode's list (0 first).  "
      "Deadline %.0f s.\n",
      WARMUP, ROUNDS, REPS, SAMPLES, g_deadline);

  summary_t *sums = calloc((size_t)nshapes, sizeof *sums);
  if (!sums) return 1;
  for (int i = 0; i < nshapes; i++) {
    if (g_dead) {
      sums[i].skipped = "CUDA error earlier";
    } else if (elapsed_s() > g_deadline) {
      sums[i].skipped = "deadline";
    } else {
      run_shape(&shapes[i], &sums[i]);
      continue;
    }
    snprintf(
        sums[i].label, sizeof sums[i].label, "%s n%lld %lldx%lldx%lld->%lld",
        shapes[i].net, (long long)shapes[i].n, (long long)shapes[i].c,
        (long long)shapes[i].h, (long long)shapes[i].w, (long long)shapes[i].k);
    out("\n## %s: skipped (%s, at %.0f s)\n", sums[i].label, sums[i].skipped,
        elapsed_s());
  }

  out("\n## Summary\n\n| shape | configs (finalize failed, run failed) | "
      "weft's pick us | fastest allowed us | vs weft | fastest any us | vs "
      "weft |\n|---|---|---|---|---:|---|---:|\n");
  for (int i = 0; i < nshapes; i++) {
    const summary_t *m = &sums[i];
    if (m->skipped && !m->nrec) {
      out("| %s | skipped: %s | | | | | |\n", m->label, m->skipped);
      continue;
    }
    char wf[240] = "-", al[300] = "-", an[340] = "-", r1[16] = "-",
         r2[16] = "-";
    if (m->weft_us >= 0)
      snprintf(wf, sizeof wf, "%.1f (%s)", m->weft_us, m->weft);
    if (m->allowed_us >= 0) {
      snprintf(al, sizeof al, "%.1f (%s)", m->allowed_us, m->allowed);
      if (m->weft_us > 0)
        snprintf(r1, sizeof r1, "%.2fx", m->weft_us / m->allowed_us);
    }
    if (m->any_us >= 0) {
      snprintf(an, sizeof an, "%.1f (%s)", m->any_us, m->any);
      if (m->weft_us > 0)
        snprintf(r2, sizeof r2, "%.2fx", m->weft_us / m->any_us);
    }
    out("| %s | %d (%d, %d) | %s | %s | %s | %s | %s |\n", m->label, m->nrec,
        m->nfin_fail, m->nexec_fail, wf, al, r1, an, r2);
  }
  out("\n\"vs weft\": weft's pick's time over that one's (above 1: faster "
      "than weft's pick).  Total %.0f s.\n",
      elapsed_s());
  out("\nRows for kernels/cuda/conv_cudnn.c's tuned_h200 (the fastest allowed "
      "configuration where it is at least 5%% faster than weft's pick):\n\n"
      "```c\n");
  for (int i = 0; i < nshapes; i++)
    if (sums[i].row[0]) out("%s\n", sums[i].row);
  out("```\n");

  free(sums);
  free(given);
  cudnnDestroy(g_h);
  for (int i = 0; i < 2; i++)
    cudaEventDestroy(g_ev[i]);
  cudaStreamDestroy(g_stream);
  if (g_md) fclose(g_md);
  return 0;
}
