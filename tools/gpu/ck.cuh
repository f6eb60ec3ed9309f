// ck.cuh - CK(call): a CUDA runtime call that must succeed, else the
// file:line and the error on stderr and exit 1.  For the standalone GPU
// benchmarks of tools/gpu (attn_bench.cu, move_bench.cu), which include it
// after <cstdio> and <cstdlib>.
#ifndef WEFT_TOOLS_GPU_CK_CUH
#define WEFT_TOOLS_GPU_CK_CUH
#define CK(x)                                                                  \
  do {                                                                         \
    cudaError_t e_ = (x);                                                      \
    if (e_ != cudaSuccess) {                                                   \
      fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__,                       \
              cudaGetErrorString(e_));                                         \
      exit(1);                                                                 \
    }                                                                          \
  } while (0)
#endif
