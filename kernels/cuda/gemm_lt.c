/* gemm_lt.c - the 16-bit products of the FP16/BF16 precision modes:
 * cublasLtMatmul with fp16 or bf16 A and B, fp32 accumulation
 * (CUBLAS_COMPUTE_32F) and fp32 C/D (or C/D in the 16-bit type, for
 * 16-bit activations: rounded once, after the bias), linear's fp32 bias as
 * a cuBLASLt epilogue.
 *
 * Row-major to column-major as gemm_cuda.c: D^T[n,m] = op(B)^T op(A)^T,
 * so cuBLASLt's A is our B and its B our A.  The workspace is one block
 * from the backend's caching allocator, made on first use and kept until
 * the backend goes, so steady-state calls make no cudaMalloc.
 *
 * cuBLASLt's heuristic assumes 256-byte aligned matrices unless told
 * otherwise; weights inside a marked block and row strides like 77
 * elements are not, so each call states the alignment it really has
 * (pointer, row stride and batch stride together).  Where cuBLASLt then
 * offers no algorithm, cublasGemmStridedBatchedEx_64 (same types, any
 * alignment) runs instead, with the bias as a separate kernel. */
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <cublas_v2.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define LT(ctx) ((cublasLtHandle_t)(ctx)->lt)

/* 32 MiB: what cuBLAS recommends for Hopper. */
#define LT_WS_BYTES ((size_t)32 << 20)
/* Behind the workspace, in the same block: a 16-bit D's bias (32768
 * values; SD's widest product has 10240 columns). */
#define LT_BIAS_BYTES ((size_t)64 << 10)

int weft__cuda_lt_init(weft__cuda_ctx *ctx, char *err, size_t err_size) {
  cublasLtHandle_t h;
  cublasStatus_t st = cublasLtCreate(&h);
  if (st != CUBLAS_STATUS_SUCCESS) {
    snprintf(err, err_size, "cublasLtCreate: %s", cublasGetStatusString(st));
    return WEFT_EDEVICE;
  }
  ctx->lt = h;
  return 0;
}

static void *lt_warm_main(void *arg) {
  (void)arg;
  cublasLtHandle_t h;
  if (cublasLtCreate(&h) != CUBLAS_STATUS_SUCCESS) return NULL;
  cublasLtMatmulDesc_t op = NULL;
  cublasLtMatrixLayout_t a = NULL, b = NULL, c = NULL;
  cublasLtMatmulPreference_t pref = NULL;
  /* a text encoder's product, 154 x 768 by 768 x 768 in fp16 */
  if (cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F) ==
          CUBLAS_STATUS_SUCCESS &&
      cublasLtMatrixLayoutCreate(&a, CUDA_R_16F, 768, 768, 768) ==
          CUBLAS_STATUS_SUCCESS &&
      cublasLtMatrixLayoutCreate(&b, CUDA_R_16F, 768, 154, 768) ==
          CUBLAS_STATUS_SUCCESS &&
      cublasLtMatrixLayoutCreate(&c, CUDA_R_16F, 768, 154, 768) ==
          CUBLAS_STATUS_SUCCESS &&
      cublasLtMatmulPreferenceCreate(&pref) == CUBLAS_STATUS_SUCCESS) {
    cublasLtMatmulHeuristicResult_t r, chk;
    int got = 0;
    if (cublasLtMatmulAlgoGetHeuristic(h, op, a, b, c, c, pref, 1, &r, &got) ==
            CUBLAS_STATUS_SUCCESS &&
        got == 1)
      (void)cublasLtMatmulAlgoCheck(h, op, a, b, c, c, &r.algo, &chk);
  }
  if (pref) cublasLtMatmulPreferenceDestroy(pref);
  if (c) cublasLtMatrixLayoutDestroy(c);
  if (b) cublasLtMatrixLayoutDestroy(b);
  if (a) cublasLtMatrixLayoutDestroy(a);
  if (op) cublasLtMatmulDescDestroy(op);
  cublasLtDestroy(h);
  return NULL;
}

void weft__cuda_lt_warm_start(weft__cuda_ctx *ctx) {
  static int env = -1;
  if (ctx->lt_warming || !weft__cuda_env_on("WEFT_CUDA_LT_WARM", &env)) return;
  ctx->lt_warming =
      pthread_create(&ctx->lt_warm_thread, NULL, lt_warm_main, NULL) == 0;
}

void weft__cuda_lt_warm_join(weft__cuda_ctx *ctx) {
  if (!ctx->lt_warming) return;
  pthread_join(ctx->lt_warm_thread, NULL);
  ctx->lt_warming = false;
}

void weft__cuda_lt_destroy(weft__cuda_ctx *ctx) {
  weft__cuda_lt_plans_free(ctx);
  if (ctx->lt_ws) weft__cuda_free(ctx, ctx->lt_ws);
  ctx->lt_ws = NULL;
  ctx->lt_ws_bytes = 0;
  if (ctx->lt) cublasLtDestroy(LT(ctx));
  ctx->lt = NULL;
}

/* The alignment every element row of a matrix keeps: the lowest set bit
 * of the address, the row stride and the batch stride in bytes, capped at
 * cuBLASLt's default of 256. */
static uint32_t alignment(const void *p, int64_t ld, int64_t stride,
                          size_t es) {
  uint64_t v =
      (uint64_t)(uintptr_t)p | (uint64_t)ld * es | (uint64_t)stride * es | 256u;
  return (uint32_t)(v & (~v + 1));
}

typedef struct lt_objs {
  cublasLtMatmulDesc_t op;
  cublasLtMatrixLayout_t la, lb, lc;
  cublasLtMatmulPreference_t pref;
} lt_objs;

static void lt_free(lt_objs *o) {
  if (o->pref) cublasLtMatmulPreferenceDestroy(o->pref);
  if (o->lc) cublasLtMatrixLayoutDestroy(o->lc);
  if (o->lb) cublasLtMatrixLayoutDestroy(o->lb);
  if (o->la) cublasLtMatrixLayoutDestroy(o->la);
  if (o->op) cublasLtMatmulDescDestroy(o->op);
}

static cublasStatus_t layout(cublasLtMatrixLayout_t *l, cudaDataType_t t,
                             int64_t rows, int64_t cols, int64_t ld,
                             int64_t batch, int64_t stride) {
  cublasStatus_t st =
      cublasLtMatrixLayoutCreate(l, t, (uint64_t)rows, (uint64_t)cols, ld);
  if (st != CUBLAS_STATUS_SUCCESS || batch == 1) return st;
  int32_t bc = (int32_t)batch;
  st = cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                        &bc, sizeof bc);
  if (st != CUBLAS_STATUS_SUCCESS) return st;
  return cublasLtMatrixLayoutSetAttribute(
      *l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride);
}

#define LT_CK(call)                                                            \
  do {                                                                         \
    st = (call);                                                               \
    if (st != CUBLAS_STATUS_SUCCESS) {                                         \
      what = #call;                                                            \
      goto out;                                                                \
    }                                                                          \
  } while (0)

/* ---- the plan cache ----
 * Making the descriptors and asking cuBLASLt's heuristic costs tens of
 * microseconds of host time a product, more than many of SD's products
 * take on the GPU (a UNet step makes about 180 of a few dozen shapes): the
 * descriptors and the algorithm are kept per problem, keyed by everything
 * that decides them (the heuristic answers the same for the same
 * descriptors and preferences, so a kept answer is the one a fresh query
 * would give).  Open addressing; a full table starts over. */
#define LT_KEY 20
#define LT_SLOTS 512

typedef struct lt_plan {
  bool used;
  bool algo_ok; /* false: cuBLASLt offered none (the caller falls back) */
  int64_t key[LT_KEY];
  lt_objs o;
  cublasLtMatmulAlgo_t algo;
} lt_plan;

typedef struct lt_cache {
  pthread_mutex_t mu;
  int n;
  lt_plan p[LT_SLOTS];
} lt_cache;

static void lt_cache_clear(lt_cache *c) {
  for (int i = 0; i < LT_SLOTS; i++)
    if (c->p[i].used) lt_free(&c->p[i].o);
  memset(c->p, 0, sizeof c->p);
  c->n = 0;
}

void weft__cuda_lt_plans_free(weft__cuda_ctx *ctx) {
  lt_cache *c = ctx->lt_plans;
  if (!c) return;
  lt_cache_clear(c);
  pthread_mutex_destroy(&c->mu);
  free(c);
  ctx->lt_plans = NULL;
}

static uint64_t lt_hash(const int64_t *k) {
  uint64_t h = 1469598103934665603ull;
  for (int i = 0; i < LT_KEY; i++) {
    h ^= (uint64_t)k[i];
    h *= 1099511628211ull;
  }
  return h;
}

/* ---- measured algorithms ----
 * Timed alone on an H200 (the study below: ten calls back to back, the
 * operands in L2), the heuristic's first algorithm is within 10% of the
 * fastest it offers for most of SD's products (8192x320x320: 7.6 us
 * there, 18 in the UNet's per-op profile); a few gain 10-40%.  The table
 * holds, per problem of the UNet at batch 2 in fp16, the
 * configuration that the study below (WEFT_CUDA_LT_STUDY,
 * tools/gpu/gemm_study.py) timed fastest among those the heuristic offers,
 * where it beat the first by 5% or more.  A problem found here on a GPU of
 * the same kind (compute 9.0, 132 SMs) with cuBLASLt 13 runs that
 * configuration if cuBLASLt accepts it (cublasLtMatmulAlgoCheck), else
 * the heuristic's first: no timing at run time, so every process gives
 * the same bits.  WEFT_CUDA_LT_TUNED=0 turns it off (an A/B switch). */
typedef struct tuned_mm {
  int trans_a, trans_b, c16, epilogue;
  int64_t m, n, k, batch;
  int32_t algo;                             /* CUBLASLT_ALGO_CONFIG_ID */
  uint32_t tile, stages, red, swizzle, custom; /* the config's values */
  int32_t splitk;
  uint16_t inner, cluster;
} tuned_mm;

/* tools/gpu/gemm_study.py's rows from the study of 95382ea (the weft16
 * stage's three processes; cuBLASLt 13.0, the heuristic offering 5-8
 * algorithms a problem): microseconds a call, timed alone.  The first row
 * (the 1280x8x8 convolutions' split-K products, conv_cudnn.c) from the
 * study of 07a6390. */
static const tuned_mm tuned_h200[] = {
    {0, 1, 0, 0, 128, 1280, 960, 12, 66, 18, 35, 0, 0, 3, 1, 0, 5},  /* 11.1 -> 9.9 */
    {0, 1, 1, 0, 128, 3840, 1280, 1, 66, 15, 35, 0, 0, 3, 1, 0, 7},  /* 7.2 -> 6.6 */
    {0, 0, 1, 0, 320, 4096, 36, 2, 23, 23, 9, 0, 0, 0, 1, 0, 0},     /* 8.3 -> 7.6 */
    {0, 1, 1, 0, 320, 4096, 320, 2, 66, 400, 35, 0, 0, 3, 1, 0, 5},  /* 7.3 -> 6.8 */
    {0, 0, 1, 0, 512, 4096, 36, 1, 23, 20, 10, 0, 0, 0, 1, 0, 0},    /* 10.1 -> 6.2 */
    {0, 1, 0, 0, 1024, 4096, 512, 1, 66, 20, 35, 0, 0, 1, 1, 0, 3},  /* 12.2 -> 10.3 */
    {0, 1, 1, 0, 2048, 1920, 640, 1, 66, 20, 35, 0, 0, 3, 1, 0, 5},  /* 11.2 -> 10.4 */
    {0, 1, 1, 0, 8192, 320, 320, 1, 66, 135, 35, 0, 0, 0, 1, 0, 3},  /* 7.6 -> 6.7 */
    {0, 1, 1, 0, 8192, 960, 320, 1, 66, 28, 35, 0, 0, 0, 1, 0, 3},   /* 14.1 -> 12.2 */
};

/* A configuration's settable attributes and where tuned_mm keeps them:
 * lt_tuned_algo sets them, the study reads them back. */
typedef struct algo_field {
  cublasLtMatmulAlgoConfigAttributes_t attr;
  size_t off, size;
} algo_field;

#define ALGO_FIELD(a, m) {a, offsetof(tuned_mm, m), sizeof(((tuned_mm *)0)->m)}
static const algo_field algo_fields[] = {
    ALGO_FIELD(CUBLASLT_ALGO_CONFIG_TILE_ID, tile),
    ALGO_FIELD(CUBLASLT_ALGO_CONFIG_STAGES_ID, stages),
    ALGO_FIELD(CUBLASLT_ALGO_CONFIG_SPLITK_NUM, splitk),
    ALGO_FIELD(CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, red),
    ALGO_FIELD(CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, swizzle),
    ALGO_FIELD(CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, custom),
    ALGO_FIELD(CUBLASLT_ALGO_CONFIG_INNER_SHAPE_ID, inner),
    ALGO_FIELD(CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, cluster),
};
#undef ALGO_FIELD
#define N_ALGO_FIELDS (sizeof algo_fields / sizeof algo_fields[0])

static bool lt_tuned_wanted(void) {
  static int v = -1;
  return weft__cuda_env_on("WEFT_CUDA_LT_TUNED", &v);
}

static const tuned_mm *lt_tuned_find(const weft__cuda_ctx *ctx,
                                     const weft__cuda_mm *mm, bool epilogue) {
  if (!lt_tuned_wanted() || mm->dt != WEFT_F16 || ctx->cc != 90 ||
      ctx->sm_count != 132 || cublasLtGetVersion() / 10000 != 13)
    return NULL;
  for (size_t i = 0; i < sizeof tuned_h200 / sizeof tuned_h200[0]; i++) {
    const tuned_mm *t = &tuned_h200[i];
    if (t->trans_a == mm->trans_a &&
        t->trans_b == mm->trans_b && t->c16 == (mm->c_dt != WEFT_F32) &&
        t->epilogue == epilogue && t->m == mm->m && t->n == mm->n &&
        t->k == mm->k && t->batch == mm->batch)
      return t;
  }
  return NULL;
}

/* t's configuration for o's problem into *algo: true when cuBLASLt
 * accepts it with at most ws bytes of workspace. */
static bool lt_tuned_algo(weft__cuda_ctx *ctx, const lt_objs *o,
                          const tuned_mm *t, cudaDataType_t ab,
                          cudaDataType_t cd, uint64_t ws,
                          cublasLtMatmulAlgo_t *algo) {
  cublasLtMatmulAlgo_t a;
  if (cublasLtMatmulAlgoInit(LT(ctx), CUBLAS_COMPUTE_32F, CUDA_R_32F, ab, ab,
                             cd, cd, t->algo, &a) != CUBLAS_STATUS_SUCCESS)
    return false;
  for (size_t i = 0; i < N_ALGO_FIELDS; i++)
    if (cublasLtMatmulAlgoConfigSetAttribute(
            &a, algo_fields[i].attr, (const char *)t + algo_fields[i].off,
            algo_fields[i].size) != CUBLAS_STATUS_SUCCESS)
      return false;
  cublasLtMatmulHeuristicResult_t r;
  if (cublasLtMatmulAlgoCheck(LT(ctx), o->op, o->la, o->lb, o->lc, o->lc, &a,
                              &r) != CUBLAS_STATUS_SUCCESS ||
      r.workspaceSize > ws)
    return false;
  *algo = a;
  return true;
}

/* ---- the study (WEFT_CUDA_LT_STUDY=file) ----
 * For each new problem: every algorithm the heuristic offers (up to 32),
 * timed on scratch operands of the problem's sizes (10 calls between two
 * events, the least of 3 such means), a line each appended to the file:
 *   mm ta tb c16 epi m n k batch beta | rank algo tile stages splitk red
 *   swizzle custom inner cluster ws | us
 * tools/gpu/gemm_study.py turns it into tuned_h200's rows.  Slow (a
 * cudaMalloc and a synchronization per problem): a measurement mode. */
static void lt_study(weft__cuda_ctx *ctx, const weft__cuda_mm *mm,
                     bool epilogue, const lt_objs *o, const char *path) {
  FILE *f = fopen(path, "a");
  if (!f) return;
  const size_t ec = mm->c_dt == WEFT_F32 ? 4 : 2;
  const int64_t ra = mm->trans_a ? mm->k : mm->m;
  const int64_t rb = mm->trans_b ? mm->n : mm->k;
  const size_t na = (size_t)((mm->batch - 1) * mm->sa + ra * mm->lda);
  const size_t nb = (size_t)((mm->batch - 1) * mm->sb + rb * mm->ldb);
  const size_t nc = (size_t)((mm->batch - 1) * mm->sc + mm->m * mm->ldc);
  void *a = NULL, *b = NULL, *c = NULL, *bias = NULL;
  cudaEvent_t e0 = NULL, e1 = NULL;
  cublasLtMatmulHeuristicResult_t res[32];
  int got = 0;
  if (cudaMalloc(&a, na * 2) || cudaMalloc(&b, nb * 2) ||
      cudaMalloc(&c, nc * ec) || cudaMalloc(&bias, (size_t)mm->n * 4) ||
      cudaEventCreate(&e0) || cudaEventCreate(&e1))
    goto out;
  cudaMemset(a, 0x31, na * 2), cudaMemset(b, 0x31, nb * 2);
  cudaMemset(c, 0, nc * ec), cudaMemset(bias, 0, (size_t)mm->n * 4);
  if (epilogue)
    cublasLtMatmulDescSetAttribute(o->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                   &bias, sizeof bias);
  if (cublasLtMatmulAlgoGetHeuristic(LT(ctx), o->op, o->la, o->lb, o->lc,
                                     o->lc, o->pref, 32, res, &got) !=
      CUBLAS_STATUS_SUCCESS)
    goto out;
  for (int i = 0; i < got; i++) {
    float best = -1;
    for (int rep = 0; rep < 4 && best != 0; rep++) {
      cudaEventRecord(e0, ctx->stream);
      bool ok = true;
      for (int j = 0; j < 10 && ok; j++)
        ok = cublasLtMatmul(LT(ctx), o->op, &mm->alpha, b, o->la, a, o->lb,
                            &mm->beta, c, o->lc, c, o->lc, &res[i].algo,
                            ctx->lt_ws, ctx->lt_ws_bytes,
                            ctx->stream) == CUBLAS_STATUS_SUCCESS;
      cudaEventRecord(e1, ctx->stream);
      float ms = 0;
      if (!ok || cudaEventSynchronize(e1) ||
          cudaEventElapsedTime(&ms, e0, e1))
        best = 0;
      else if (rep > 0 && (best < 0 || ms < best)) /* rep 0: a warm-up */
        best = ms;
    }
    tuned_mm cf = {0};
    size_t w;
    const cublasLtMatmulAlgo_t *al = &res[i].algo;
    cublasLtMatmulAlgoConfigGetAttribute(al, CUBLASLT_ALGO_CONFIG_ID, &cf.algo,
                                         sizeof cf.algo, &w);
    for (size_t k = 0; k < N_ALGO_FIELDS; k++)
      cublasLtMatmulAlgoConfigGetAttribute(al, algo_fields[k].attr,
                                           (char *)&cf + algo_fields[k].off,
                                           algo_fields[k].size, &w);
    fprintf(f,
            "mm %d %d %d %d %lld %lld %lld %lld %g | %d %d %u %u %d %u %u %u "
            "%u %u %zu | %.3f\n",
            mm->trans_a, mm->trans_b, mm->c_dt != WEFT_F32, epilogue,
            (long long)mm->m, (long long)mm->n, (long long)mm->k,
            (long long)mm->batch, mm->beta, i, cf.algo, cf.tile, cf.stages,
            cf.splitk, cf.red, cf.swizzle, cf.custom, cf.inner, cf.cluster,
            res[i].workspaceSize,
            best > 0 ? best * 100.0f : -1.0f); /* ms / 10 calls -> us */
  }
out:
  cudaStreamSynchronize(ctx->stream);
  if (e0) cudaEventDestroy(e0);
  if (e1) cudaEventDestroy(e1);
  cudaFree(a), cudaFree(b), cudaFree(c), cudaFree(bias);
  cudaGetLastError(); /* a failed study leaves no error behind */
  fclose(f);
}

/* Makes p's descriptors and asks the heuristic; a cuBLAS status. */
static cublasStatus_t lt_make(weft__cuda_ctx *ctx, const weft__cuda_mm *mm,
                              bool epilogue, const uint32_t al[3], lt_plan *p,
                              const char **failed) {
  const cudaDataType_t t = mm->dt == WEFT_BF16 ? CUDA_R_16BF : CUDA_R_16F;
  const cudaDataType_t tc = mm->c_dt == WEFT_F32 ? CUDA_R_32F : t;
  lt_objs *o = &p->o;
  cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
  const char *what = "";
  /* cuBLASLt's A = our B (n x k after op), its B = our A (k x m). */
  const cublasOperation_t ta = mm->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t tb = mm->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  LT_CK(cublasLtMatmulDescCreate(&o->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  LT_CK(cublasLtMatmulDescSetAttribute(o->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta,
                                       sizeof ta));
  LT_CK(cublasLtMatmulDescSetAttribute(o->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb,
                                       sizeof tb));
  if (epilogue) { /* the bias in D's type (the default: lt_matmul) */
    const cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_BIAS;
    LT_CK(cublasLtMatmulDescSetAttribute(o->op, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                         &ep, sizeof ep));
  }
  LT_CK(layout(&o->la, t, mm->trans_b ? mm->k : mm->n,
               mm->trans_b ? mm->n : mm->k, mm->ldb, mm->batch, mm->sb));
  LT_CK(layout(&o->lb, t, mm->trans_a ? mm->m : mm->k,
               mm->trans_a ? mm->k : mm->m, mm->lda, mm->batch, mm->sa));
  LT_CK(layout(&o->lc, tc, mm->n, mm->m, mm->ldc, mm->batch, mm->sc));
  LT_CK(cublasLtMatmulPreferenceCreate(&o->pref));
  const uint64_t ws = ctx->lt_ws_bytes;
  LT_CK(cublasLtMatmulPreferenceSetAttribute(
      o->pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
  LT_CK(cublasLtMatmulPreferenceSetAttribute(
      o->pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al[0],
      sizeof al[0]));
  LT_CK(cublasLtMatmulPreferenceSetAttribute(
      o->pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al[1],
      sizeof al[1]));
  LT_CK(cublasLtMatmulPreferenceSetAttribute(
      o->pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al[2],
      sizeof al[2]));
  LT_CK(cublasLtMatmulPreferenceSetAttribute(
      o->pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al[2],
      sizeof al[2]));
  const char *study = getenv("WEFT_CUDA_LT_STUDY");
  if (study && *study) lt_study(ctx, mm, epilogue, o, study);
  const tuned_mm *tn = lt_tuned_find(ctx, mm, epilogue);
  if (tn && lt_tuned_algo(ctx, o, tn, t, tc, ws, &p->algo)) {
    p->algo_ok = true;
    return CUBLAS_STATUS_SUCCESS;
  }
  cublasLtMatmulHeuristicResult_t res;
  int got = 0;
  st = cublasLtMatmulAlgoGetHeuristic(LT(ctx), o->op, o->la, o->lb, o->lc,
                                      o->lc, o->pref, 1, &res, &got);
  p->algo_ok = st == CUBLAS_STATUS_SUCCESS && got >= 1;
  if (p->algo_ok) p->algo = res.algo;
  return CUBLAS_STATUS_SUCCESS; /* no algorithm: the caller falls back */
out:
  *failed = what;
  return st;
}

/* 0; WEFT_EUNSUPPORTED when cuBLASLt has no algorithm for this problem
 * (ctx->err untouched); another code with ctx->err set. */
static int lt_matmul(weft__cuda_ctx *ctx, const weft__cuda_mm *mm) {
  if (!ctx->lt || mm->batch > INT32_MAX) return WEFT_EUNSUPPORTED;
  if (!ctx->lt_ws) {
    ctx->lt_ws = weft__cuda_alloc(ctx, LT_WS_BYTES + LT_BIAS_BYTES);
    if (ctx->lt_ws)
      ctx->lt_ws_bytes = LT_WS_BYTES;
    else
      ctx->err[0] = 0; /* run without a workspace */
  }
  if (!ctx->lt_plans) {
    lt_cache *c = calloc(1, sizeof *c);
    if (!c) return weft__cuda_fail(ctx, WEFT_ENOMEM, "out of memory");
    pthread_mutex_init(&c->mu, NULL);
    ctx->lt_plans = c;
  }
  lt_cache *c = ctx->lt_plans;
  /* The bias epilogue only for a 16-byte aligned bias: other projects
   * report wrong sums with less (Marian's cuBLASLt wrapper); else a
   * kernel adds it after the product.  cuBLASLt takes a bias of D's type
   * only (an fp32 bias beside a 16-bit D left it no algorithm: every such
   * product went to GemmEx and a bias kernel, 657 us of an H200's UNet
   * step): for an fp16 D the fp32 bias is rounded into the bias area
   * behind the workspace first, one small kernel, and added in fp32 by
   * the epilogue before D's one rounding (diffusers' fp16 models keep
   * fp16 biases too); a bias with a 16-bit mirror (nodes/sd keeps one of
   * its fp32 weights) is read from it.  A bf16 bias would lose 8 bits (2^-9 of
   * its size: outside tests/kernels_cuda's tolerance of a 1x1 convolution):
   * bf16 keeps the kernel after the product. */
  bool epilogue =
      mm->bias && (uintptr_t)mm->bias % 16 == 0 && mm->c_dt != WEFT_BF16;
  const void *bias = mm->bias;
  const void *m16 = epilogue && mm->c_dt != WEFT_F32
                        ? weft__cuda_mirror16(ctx, mm->bias, mm->c_dt)
                        : NULL;
  if (m16 && (uintptr_t)m16 % 16 == 0) {
    bias = m16; /* its 16-bit mirror (weft_cuda_mark_mirror) */
  } else if (epilogue && mm->c_dt != WEFT_F32) {
    epilogue = ctx->lt_ws && (size_t)mm->n * 2 <= LT_BIAS_BYTES;
    if (epilogue) {
      void *b16 = (char *)ctx->lt_ws + ctx->lt_ws_bytes;
      int rc16 = weft__cuda_check(ctx,
                                  weft__cu_pack(ctx->stream, mm->bias, WEFT_F32,
                                                b16, (int)mm->c_dt, 1, 1, 0, 0,
                                                1, mm->n, mm->n),
                                  "gemm: the bias in 16 bits");
      if (rc16) return rc16;
      bias = b16;
    }
  }
  const uint32_t al[3] = {
      alignment(mm->b, mm->ldb, mm->sb, 2),
      alignment(mm->a, mm->lda, mm->sa, 2),
      alignment(mm->c, mm->ldc, mm->sc, mm->c_dt == WEFT_F32 ? 4 : 2)};
  const int64_t key[LT_KEY] = {mm->dt,
                               mm->c_dt,
                               mm->trans_a,
                               mm->trans_b,
                               mm->m,
                               mm->n,
                               mm->k,
                               mm->batch,
                               mm->lda,
                               mm->ldb,
                               mm->ldc,
                               mm->sa,
                               mm->sb,
                               mm->sc,
                               epilogue,
                               al[0],
                               al[1],
                               al[2],
                               (int64_t)ctx->lt_ws_bytes,
                               1};
  cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
  const char *what = "";
  int rc = 0;
  pthread_mutex_lock(&c->mu);
  if (c->n >= LT_SLOTS * 3 / 4) lt_cache_clear(c);
  lt_plan *p = NULL;
  for (uint64_t h = lt_hash(key) % LT_SLOTS;; h = (h + 1) % LT_SLOTS) {
    p = &c->p[h];
    if (!p->used || !memcmp(p->key, key, sizeof key)) break;
  }
  if (!p->used) {
    const double t0 = weft__cuda_now();
    st = lt_make(ctx, mm, epilogue, al, p, &what);
    weft__cuda_plan_time(ctx, WEFT__PLAN_LT, weft__cuda_now() - t0);
    if (st != CUBLAS_STATUS_SUCCESS) {
      lt_free(&p->o);
      memset(p, 0, sizeof *p);
      goto out;
    }
    p->used = true;
    memcpy(p->key, key, sizeof key);
    c->n++;
  }
  if (!p->algo_ok) {
    rc = WEFT_EUNSUPPORTED; /* no algorithm: the caller falls back */
    goto out;
  }
  if (epilogue) {
    const void *bp = bias;
    LT_CK(cublasLtMatmulDescSetAttribute(
        p->o.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof bp));
  }
  st = cublasLtMatmul(LT(ctx), p->o.op, &mm->alpha, mm->b, p->o.la, mm->a,
                      p->o.lb, &mm->beta, mm->c, p->o.lc, mm->c, p->o.lc,
                      &p->algo, ctx->lt_ws, ctx->lt_ws_bytes, ctx->stream);
  if (st == CUBLAS_STATUS_NOT_SUPPORTED) {
    rc = WEFT_EUNSUPPORTED;
    st = CUBLAS_STATUS_SUCCESS;
  }
  what = "cublasLtMatmul";
out:
  pthread_mutex_unlock(&c->mu);
  if (st == CUBLAS_STATUS_SUCCESS && rc == 0 && mm->bias && !epilogue)
    rc = weft__cuda_add_bias(ctx, mm->c_dt, mm->c, mm->bias, 0, mm->m, mm->n,
                             mm->ldc, mm->batch, mm->sc);
  if (st != CUBLAS_STATUS_SUCCESS)
    rc = weft__cuda_fail(
        ctx, st == CUBLAS_STATUS_ALLOC_FAILED ? WEFT_ENOMEM : WEFT_EDEVICE,
        "%s (m=%lld n=%lld k=%lld batch=%lld, %s): %s", what, (long long)mm->m,
        (long long)mm->n, (long long)mm->k, (long long)mm->batch,
        mm->dt == WEFT_BF16 ? "bf16" : "fp16", cublasGetStatusString(st));
  return rc;
}

int weft__cuda_mm16(weft__cuda_ctx *ctx, const weft__cuda_mm *mm) {
  int rc = lt_matmul(ctx, mm);
  if (rc == 0) ctx->n_lt++;
  if (rc != WEFT_EUNSUPPORTED) return rc;
  ctx->n_lt_fallback++;
  void *blas;
  if ((rc = weft__cuda_blas(ctx, &blas))) return rc;
  const cudaDataType_t t = mm->dt == WEFT_BF16 ? CUDA_R_16BF : CUDA_R_16F;
  cublasStatus_t st = cublasGemmStridedBatchedEx_64(
      (cublasHandle_t)blas, mm->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
      mm->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, mm->n, mm->m, mm->k, &mm->alpha,
      mm->b, t, mm->ldb, mm->sb, mm->a, t, mm->lda, mm->sa, &mm->beta, mm->c,
      mm->c_dt == WEFT_F32 ? CUDA_R_32F : t, mm->ldc, mm->sc, mm->batch,
      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  if (st != CUBLAS_STATUS_SUCCESS)
    return weft__cuda_fail(
        ctx, st == CUBLAS_STATUS_ALLOC_FAILED ? WEFT_ENOMEM : WEFT_EDEVICE,
        "cublasGemmStridedBatchedEx (m=%lld n=%lld k=%lld batch=%lld, %s): "
        "%s",
        (long long)mm->m, (long long)mm->n, (long long)mm->k,
        (long long)mm->batch, mm->dt == WEFT_BF16 ? "bf16" : "fp16",
        cublasGetStatusString(st));
  if (mm->bias)
    return weft__cuda_add_bias(ctx, mm->c_dt, mm->c, mm->bias, 0, mm->m, mm->n,
                               mm->ldc, mm->batch, mm->sc);
  return 0;
}
