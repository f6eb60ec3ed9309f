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
#include <cublas_v2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define LT(ctx) ((cublasLtHandle_t)(ctx)->lt)

/* 32 MiB: what cuBLAS recommends for Hopper. */
#define LT_WS_BYTES ((size_t)32 << 20)

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
  if (epilogue) {
    const cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_BIAS;
    LT_CK(cublasLtMatmulDescSetAttribute(o->op, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                         &ep, sizeof ep));
    if (tc != CUDA_R_32F) { /* the bias stays fp32 (D's type by default) */
      const cudaDataType_t bt = CUDA_R_32F;
      LT_CK(cublasLtMatmulDescSetAttribute(
          o->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
    }
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
    ctx->lt_ws = weft__cuda_alloc(ctx, LT_WS_BYTES);
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
   * kernel adds it after the product. */
  const bool epilogue = mm->bias && (uintptr_t)mm->bias % 16 == 0;
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
    st = lt_make(ctx, mm, epilogue, al, p, &what);
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
    const void *bp = mm->bias;
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
  const cudaDataType_t t = mm->dt == WEFT_BF16 ? CUDA_R_16BF : CUDA_R_16F;
  cublasStatus_t st = cublasGemmStridedBatchedEx_64(
      (cublasHandle_t)ctx->blas, mm->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
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
