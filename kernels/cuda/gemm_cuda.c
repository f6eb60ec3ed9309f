/* gemm_cuda.c - row-major (batched) GEMM on cuBLAS's column-major SGEMM.
 *
 * A row-major C[m,n] is the column-major C^T[n,m], and
 * C^T = op(B)^T op(A)^T, so the product runs as one
 * cublasSgemmStridedBatched_64 with the operands swapped: (B, A) with
 * m' = n, n' = m; a matrix stored row-major with row stride ld is its
 * transpose stored column-major with the same ld, so each op flag stays
 * what the caller asked for.  Batch strides of 0 (a shared weight) are
 * what cuBLAS's strided batch allows. */
#include <cublas_v2.h>

#include "internal.h"

int weft__cuda_gemm(weft__cuda_ctx *ctx, const weft_gemm_args *g) {
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
  int64_t a_cols = g->trans_a ? g->m : g->k;
  int64_t b_cols = g->trans_b ? g->k : g->n;
  if (g->lda < (a_cols ? a_cols : 1) || g->ldb < (b_cols ? b_cols : 1) ||
      g->ldc < g->n || !g->c || (g->k > 0 && (!g->a || !g->b)))
    return WEFT_EINVAL;
  if (batch == 0) return 0;
  if (g->k == 0) /* defined as C = beta * C (BLAS libraries differ) */
    return weft__cuda_check(ctx,
                            weft__cu_scale_matrix(ctx->stream, g->c, batch,
                                                  g->stride_c, g->m, g->n,
                                                  g->ldc, g->beta),
                            "gemm (k = 0)");
  cublasStatus_t st = cublasSgemmStridedBatched_64(
      (cublasHandle_t)ctx->blas, g->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
      g->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, g->n, g->m, g->k, &g->alpha, g->b,
      g->ldb, g->stride_b, g->a, g->lda, g->stride_a, &g->beta, g->c, g->ldc,
      g->stride_c, batch);
  if (st != CUBLAS_STATUS_SUCCESS)
    return weft__cuda_fail(
        ctx, st == CUBLAS_STATUS_ALLOC_FAILED ? WEFT_ENOMEM : WEFT_EDEVICE,
        "cublasSgemmStridedBatched (m=%lld n=%lld k=%lld batch=%lld): %s",
        (long long)g->m, (long long)g->n, (long long)g->k, (long long)batch,
        cublasGetStatusString(st));
  return 0;
}
