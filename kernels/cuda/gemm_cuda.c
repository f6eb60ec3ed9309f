/* gemm_cuda.c - row-major (batched) GEMM: the dispatch by precision and
 * operand storage, and the fp32 path on cuBLAS's column-major SGEMM.
 *
 * A row-major C[m,n] is the column-major C^T[n,m], and
 * C^T = op(B)^T op(A)^T, so the product runs with the operands swapped:
 * (B, A) with m' = n, n' = m; a matrix stored row-major with row stride ld
 * is its transpose stored column-major with the same ld, so each op flag
 * stays what the caller asked for.  Batch strides of 0 (a shared weight)
 * are what cuBLAS's strided batch allows.
 *
 * Precision (see cuda.h): FP32 runs cublasSgemmStridedBatched_64, widening
 * operands that are registered as 16-bit weights into fp32 scratch first.
 * FP16/BF16 round every operand that is not already stored in that type
 * into dense 16-bit scratch (half.cu's pack) and run gemm_lt.c's cuBLASLt
 * product with fp32 accumulation and an fp32 C, or a 16-bit C for 16-bit
 * activations (weft_gemm_args.acts names the operands that are; the
 * activations of the 16-bit type are used as stored). */
#include <cublas_v2.h>

#include "internal.h"

weft_dtype weft__cuda_compute_dtype(const weft__cuda_ctx *ctx) {
  switch (ctx->precision) {
  case WEFT_CUDA_FP16: return WEFT_F16;
  case WEFT_CUDA_BF16: return WEFT_BF16;
  default: return WEFT_F32;
  }
}

const float *weft__cuda_f32_view(weft__cuda_ctx *ctx, const float *p, int64_t n,
                                 void **tmp) {
  *tmp = NULL;
  weft_dtype dt = weft__cuda_weight_dtype(ctx, p);
  if (dt == WEFT_F32 || n <= 0) return p;
  float *t = weft__cuda_alloc(ctx, (size_t)n * sizeof(float));
  if (!t) return NULL;
  int rc = weft__cuda_check(
      ctx, weft__cu_pack(ctx->stream, p, dt, t, WEFT_F32, 1, 1, 0, 0, 1, n, n),
      "widening 16-bit weights to fp32");
  if (rc) {
    weft__cuda_free(ctx, t);
    return NULL;
  }
  *tmp = t;
  return t;
}

static int sgemm(weft__cuda_ctx *ctx, const weft_gemm_args *g, int64_t batch,
                 const float *a, const float *b) {
  void *blas;
  int rc = weft__cuda_blas(ctx, &blas);
  if (rc) return rc;
  cublasStatus_t st = cublasSgemmStridedBatched_64(
      (cublasHandle_t)blas, g->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
      g->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, g->n, g->m, g->k, &g->alpha, b,
      g->ldb, g->stride_b, a, g->lda, g->stride_a, &g->beta, g->c, g->ldc,
      g->stride_c, batch);
  if (st != CUBLAS_STATUS_SUCCESS)
    return weft__cuda_fail(
        ctx, st == CUBLAS_STATUS_ALLOC_FAILED ? WEFT_ENOMEM : WEFT_EDEVICE,
        "cublasSgemmStridedBatched (m=%lld n=%lld k=%lld batch=%lld): %s",
        (long long)g->m, (long long)g->n, (long long)g->k, (long long)batch,
        cublasGetStatusString(st));
  return 0;
}

/* One operand of the 16-bit product: as stored when its type is `want`,
 * else packed dense into tmp (rows x cols per item; one item for a shared
 * operand, stride 0). */
typedef struct opnd {
  const void *p;
  int64_t ld, stride;
  void *tmp;
} opnd;

static int prep16(weft__cuda_ctx *ctx, const float *p, int dt, weft_dtype want,
                  int64_t rows, int64_t cols, int64_t ld, int64_t stride,
                  int64_t batch, opnd *o) {
  o->tmp = NULL;
  if (dt == (int)want) {
    o->p = p;
    o->ld = ld;
    o->stride = stride;
    return 0;
  }
  int64_t nb = stride == 0 ? 1 : batch;
  o->tmp = weft__cuda_alloc(ctx, (size_t)(nb * rows * cols) * 2);
  if (!o->tmp) return WEFT_ENOMEM;
  o->p = o->tmp;
  o->ld = cols;
  o->stride = stride == 0 ? 0 : rows * cols;
  return weft__cuda_check(ctx,
                          weft__cu_pack(ctx->stream, p, dt, o->tmp, want, 1, nb,
                                        0, stride, rows, cols, ld),
                          "gemm: rounding an operand to 16 bits");
}

/* A product over a few rows of A times a transposed B (a linear's x W^T:
 * SD's time embeddings, 2 rows) goes to weft__cu_gemv16: one read of the
 * weight at the memory's speed. */
static bool gemv_fits(const weft_gemm_args *g, int64_t batch, const opnd *a,
                      const opnd *b) {
  return batch == 1 && g->m <= WEFT_CU_GEMV_ROWS && !g->trans_a && g->trans_b &&
         g->alpha == 1.0f && g->beta == 0.0f && g->k % 8 == 0 &&
         a->ld % 8 == 0 && b->ld % 8 == 0 && (uintptr_t)a->p % 16 == 0 &&
         (uintptr_t)b->p % 16 == 0;
}

int weft__cuda_add_bias(weft__cuda_ctx *ctx, int c_dt, void *c,
                        const float *bias, int per_row, int64_t m, int64_t n,
                        int64_t ldc, int64_t batch, int64_t sc) {
  const size_t es = c_dt == WEFT_F32 ? 4 : 2;
  cudaError_t e = cudaSuccess;
  if (per_row)
    e = weft__cu_bias_planes(ctx->stream, c_dt, c, bias, batch, sc, m, ldc, n);
  else if (ldc == n && (batch == 1 || sc == m * n))
    e = weft__cu_bias_rows(ctx->stream, c_dt, c, bias, batch * m, n);
  else /* padded rows: row by row (no caller of weft's has them) */
    for (int64_t i = 0; i < batch * m && e == cudaSuccess; i++)
      e = weft__cu_bias_rows(
          ctx->stream, c_dt,
          (char *)c + (size_t)((i / m) * sc + (i % m) * ldc) * es, bias, 1, n);
  return weft__cuda_check(ctx, e, "gemm bias");
}

int weft__cuda_gemm_ex(weft__cuda_ctx *ctx, const weft_gemm_args *g, int a_dt,
                       int b_dt, int c_dt, const float *bias) {
  if (!g) return WEFT_EINVAL;
  int64_t batch = g->batch ? g->batch : 1;
  /* kernels/cpu's rules: non-negative sizes that fit an int, row strides
   * covering a stored row, pointers present where they are read. */
  if (g->m < 0 || g->n < 0 || g->k < 0 || batch < 0 || g->m > INT32_MAX ||
      g->n > INT32_MAX || g->k > INT32_MAX || g->lda < 0 || g->ldb < 0 ||
      g->ldc < 0 || g->lda > INT32_MAX || g->ldb > INT32_MAX ||
      g->ldc > INT32_MAX)
    return WEFT_EINVAL;
  if (g->m == 0 || g->n == 0) return 0;
  int64_t a_rows = g->trans_a ? g->k : g->m, a_cols = g->trans_a ? g->m : g->k;
  int64_t b_rows = g->trans_b ? g->n : g->k, b_cols = g->trans_b ? g->k : g->n;
  if (g->lda < (a_cols ? a_cols : 1) || g->ldb < (b_cols ? b_cols : 1) ||
      g->ldc < g->n || !g->c || (g->k > 0 && (!g->a || !g->b)))
    return WEFT_EINVAL;
  if (batch == 0) return 0;
  const weft_dtype want = weft__cuda_compute_dtype(ctx);
  if (c_dt != WEFT_F32 && c_dt != (int)want) return WEFT_EINVAL;
  /* a bias per column (linear's, or g's) goes with the product (cuBLASLt's
   * epilogue in 16-bit precision: one rounding of a 16-bit C); one per row
   * is added after it */
  if (bias && g->bias) return WEFT_EINVAL;
  if (g->bias && !g->bias_per_row) bias = g->bias;
  const float *row_bias = g->bias && g->bias_per_row ? g->bias : NULL;
#define ADD_BIAS(v, per_row)                                                   \
  weft__cuda_add_bias(ctx, c_dt, g->c, v, per_row, g->m, g->n, g->ldc, batch,  \
                      g->stride_c)
  int rc = 0;
  if (g->k == 0) { /* defined as C = beta * C (BLAS libraries differ) */
    rc = weft__cuda_check(ctx,
                          weft__cu_scale_matrix(ctx->stream, c_dt, g->c, batch,
                                                g->stride_c, g->m, g->n, g->ldc,
                                                g->beta),
                          "gemm (k = 0)");
    if (rc == 0 && bias) rc = ADD_BIAS(bias, 0);
    if (rc == 0 && row_bias) rc = ADD_BIAS(row_bias, 1);
    return rc;
  }
  if (a_dt == WEFT__DT_LOOKUP) a_dt = (int)weft__cuda_weight_dtype(ctx, g->a);
  if (b_dt == WEFT__DT_LOOKUP) b_dt = (int)weft__cuda_weight_dtype(ctx, g->b);

  if (want == WEFT_F32) {
    void *ta = NULL, *tb = NULL;
    const float *a = g->a, *b = g->b;
    if (a_dt != WEFT_F32) {
      int64_t n = weft_matrix_span(a_rows, a_cols, g->lda, g->stride_a, batch);
      if (!(ta = weft__cuda_alloc(ctx, (size_t)n * sizeof(float))))
        return WEFT_ENOMEM;
      rc = weft__cuda_check(ctx,
                            weft__cu_pack(ctx->stream, g->a, a_dt, ta, WEFT_F32,
                                          1, 1, 0, 0, 1, n, n),
                            "gemm: widening A to fp32");
      a = ta;
    }
    if (rc == 0 && b_dt != WEFT_F32) {
      int64_t n = weft_matrix_span(b_rows, b_cols, g->ldb, g->stride_b, batch);
      if (!(tb = weft__cuda_alloc(ctx, (size_t)n * sizeof(float)))) {
        rc = WEFT_ENOMEM;
      } else {
        rc = weft__cuda_check(ctx,
                              weft__cu_pack(ctx->stream, g->b, b_dt, tb,
                                            WEFT_F32, 1, 1, 0, 0, 1, n, n),
                              "gemm: widening B to fp32");
        b = tb;
      }
    }
    if (rc == 0) rc = sgemm(ctx, g, batch, a, b);
    /* bias after the product, as kernels/cpu adds it (same rounding) */
    if (rc == 0 && bias) rc = ADD_BIAS(bias, 0);
    if (rc == 0 && row_bias) rc = ADD_BIAS(row_bias, 1);
    /* back to the cache: later work on the stream is ordered after ours */
    weft__cuda_free(ctx, ta);
    weft__cuda_free(ctx, tb);
    return rc;
  }

  opnd oa = {0}, ob = {0};
  rc = prep16(ctx, g->a, a_dt, want, a_rows, a_cols, g->lda, g->stride_a, batch,
              &oa);
  if (rc == 0)
    rc = prep16(ctx, g->b, b_dt, want, b_rows, b_cols, g->ldb, g->stride_b,
                batch, &ob);
  if (rc == 0 && gemv_fits(g, batch, &oa, &ob)) {
    rc = weft__cuda_check(ctx,
                          weft__cu_gemv16(ctx->stream, (int)want, g->m, g->n,
                                          g->k, oa.p, oa.ld, ob.p, ob.ld, bias,
                                          g->c, c_dt, g->ldc),
                          "gemm (a few rows)");
  } else if (rc == 0) {
    weft__cuda_mm mm = {.trans_a = g->trans_a,
                        .trans_b = g->trans_b,
                        .m = g->m,
                        .n = g->n,
                        .k = g->k,
                        .batch = batch,
                        .alpha = g->alpha,
                        .beta = g->beta,
                        .a = oa.p,
                        .lda = oa.ld,
                        .sa = oa.stride,
                        .b = ob.p,
                        .ldb = ob.ld,
                        .sb = ob.stride,
                        .c = g->c,
                        .ldc = g->ldc,
                        .sc = g->stride_c,
                        .bias = bias,
                        .dt = want,
                        .c_dt = (weft_dtype)c_dt};
    rc = weft__cuda_mm16(ctx, &mm);
  }
  if (rc == 0 && row_bias) rc = ADD_BIAS(row_bias, 1);
#undef ADD_BIAS
  weft__cuda_free(ctx, oa.tmp);
  weft__cuda_free(ctx, ob.tmp);
  return rc;
}

int weft__cuda_gemm(weft__cuda_ctx *ctx, const weft_gemm_args *g) {
  const int act = (int)ctx->act, acts = ctx->act == WEFT_F32 ? 0 : g->acts;
  return weft__cuda_gemm_ex(ctx, g,
                            acts & WEFT_GEMM_ACT_A ? act : WEFT__DT_LOOKUP,
                            acts & WEFT_GEMM_ACT_B ? act : WEFT__DT_LOOKUP,
                            acts & WEFT_GEMM_ACT_C ? act : WEFT_F32, NULL);
}
