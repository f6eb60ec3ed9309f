// ctx_mem.cu - where a CUDA process's device memory goes before weft
// allocates anything: the device's used bytes (cudaMemGetInfo, what
// nvidia-smi counts for the process on an otherwise idle GPU) after each
// step a weft process takes at start (the context, cuBLAS, cuBLASLt,
// cuDNN's handle, a first kernel, a kernel with a large stack frame), and
// what lowering the stack limit gives back.  Built and run by
// tools/gpu/ctx_mem.sh; prints one line per step.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <stdio.h>

static size_t used(void) {
  size_t f = 0, t = 0;
  cudaMemGetInfo(&f, &t);
  return t - f;
}

static size_t last;
static void step(const char *what) {
  const size_t u = used();
  size_t stack = 0;
  cudaDeviceGetLimit(&stack, cudaLimitStackSize);
  printf("%-44s used %8.1f MiB  (+%7.1f)  stack limit %zu B\n", what,
         u / 1048576.0, ((double)u - (double)last) / 1048576.0, stack);
  last = u;
}

__global__ void tiny(float *p) {
  if (p) p[threadIdx.x] = 1.0f;
}

// a frame of 4 KiB a thread: the driver sizes local memory for it
__global__ void deep(float *p, int n) {
  volatile float buf[1024];
  for (int i = 0; i < 1024; i++) buf[i] = (float)(i * n);
  if (p) p[threadIdx.x] = buf[(threadIdx.x * 7) & 1023];
}

int main(void) {
  last = 0;
  cudaFree(0);
  step("context (cudaFree(0))");
  tiny<<<1, 32>>>(nullptr);
  cudaDeviceSynchronize();
  step("a first kernel");
  cublasHandle_t b;
  cublasCreate(&b);
  step("cublasCreate");
  cublasLtHandle_t lt;
  cublasLtCreate(&lt);
  step("cublasLtCreate");
  cudnnHandle_t d;
  cudnnCreate(&d);
  step("cudnnCreate");
  deep<<<1, 32>>>(nullptr, 3);
  cudaDeviceSynchronize();
  step("a kernel with a 4 KiB stack frame");
  cudaDeviceSetLimit(cudaLimitStackSize, 1024);
  step("stack limit set back to 1024 B");
  cudaDeviceSetLimit(cudaLimitStackSize, 256);
  step("stack limit set to 256 B");
  cudnnDestroy(d);
  cublasLtDestroy(lt);
  cublasDestroy(b);
  step("handles destroyed");
  return 0;
}
