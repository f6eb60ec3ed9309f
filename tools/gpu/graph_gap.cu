// graph_gap.cu - what a kernel launch costs the GPU between kernels: a
// chain of N dependent kernels (N = 769, the kernels of one SD1.5 UNet
// step as weft's CUDA graph holds them), each busy for a set time on
// every SM, launched one by one on a stream, as one CUDA graph, and as
// one graph whose kernels let the next one start early (programmatic
// dependent launch: the next kernel's blocks wait in
// cudaGridDependencySynchronize instead of behind the launch), triggered
// at each kernel's end or at its start.  The gap a
// kernel is (chain time - N x busy time) / N.  Prints a markdown table
// and writes graph_gap.json to argv[1] (default .).
//
//   nvcc -O2 -arch=sm_90 tools/gpu/graph_gap.cu -o graph_gap && ./graph_gap DIR
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

#include "ck.cuh"

// Busy for `cycles` of the SM's clock (the device's clock rate converts
// the table's microseconds: the differences between the ways do not
// depend on it), one block an SM; with pdl it waits for the previous
// kernel first and lets the next one launch: at its end (pdl 1), or at
// once (pdl 2: the next kernel's blocks wait on the SMs beside it).
__global__ void busy(long long cycles, int pdl, unsigned *sink) {
  if (pdl) cudaGridDependencySynchronize();
  if (pdl == 2) cudaTriggerProgrammaticLaunchCompletion();
  const long long t0 = clock64();
  while (clock64() - t0 < cycles) {
  }
  if (pdl == 1) cudaTriggerProgrammaticLaunchCompletion();
  if (threadIdx.x == 0 && cycles < 0) sink[blockIdx.x] = 1; // never
}

enum { N = 769, REPS = 7 };

static void chain(cudaStream_t s, int blocks, long long cycles, int pdl,
                  unsigned *sink) {
  for (int i = 0; i < N; i++) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(blocks);
    cfg.blockDim = dim3(128);
    cfg.stream = s;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = pdl ? 1 : 0;
    CK(cudaLaunchKernelEx(&cfg, busy, cycles, pdl, sink));
  }
}

static int cmp(const void *a, const void *b) {
  const float x = *(const float *)a, y = *(const float *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : ".";
  int sms = 0, khz = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  CK(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, 0));
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  unsigned *sink;
  CK(cudaMalloc(&sink, 4096 * sizeof *sink));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  static const long long busy_ns[] = {0, 2000, 10000};
  static const char *const way[] = {"stream", "graph", "graph, PDL",
                                    "graph, PDL triggered at once"};
  char path[4096];
  snprintf(path, sizeof path, "%s/graph_gap.json", dir);
  FILE *js = fopen(path, "w");
  if (!js) {
    perror(path);
    return 1;
  }
  fprintf(js, "{\"kernels\": %d, \"sms\": %d, \"clock_khz\": %d, \"rows\": [",
          N, sms, khz);
  printf("| kernel busy (us) | launched | chain of %d (ms) | gap a kernel "
         "(us) |\n|---|---|---|---|\n",
         N);
  bool first = true;
  for (long long ns : busy_ns)
    for (int w = 0; w < 4; w++) {
      const long long cyc = ns * khz / 1000000;
      cudaGraphExec_t x = NULL;
      if (w > 0) {
        cudaGraph_t g;
        CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
        chain(s, sms, cyc, w - 1, sink);
        CK(cudaStreamEndCapture(s, &g));
        CK(cudaGraphInstantiate(&x, g, 0));
        CK(cudaGraphDestroy(g));
      }
      float t[REPS];
      for (int r = -1; r < REPS; r++) {
        CK(cudaEventRecord(e0, s));
        if (x)
          CK(cudaGraphLaunch(x, s));
        else
          chain(s, sms, cyc, 0, sink);
        CK(cudaEventRecord(e1, s));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        if (r >= 0) t[r] = ms;
      }
      qsort(t, REPS, sizeof *t, cmp);
      const double med = t[REPS / 2];
      const double gap = (med * 1e3 - N * ns * 1e-3) / N;
      printf("| %.0f | %s | %.3f | %.2f |\n", ns * 1e-3, way[w], med, gap);
      fprintf(js,
              "%s\n  {\"busy_us\": %.1f, \"way\": \"%s\", \"chain_ms\": %.4f, "
              "\"gap_us\": %.3f}",
              first ? "" : ",", ns * 1e-3, way[w], med, gap);
      first = false;
      if (x) CK(cudaGraphExecDestroy(x));
    }
  fprintf(js, "\n]}\n");
  fclose(js);
  return 0;
}
