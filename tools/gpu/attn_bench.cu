// attn_bench.cu - the fused 16-bit attention kernel (kernels/cuda/flash16.cu,
// compiled into this program so that attn_bench.sh can build it with other
// compile-time settings) timed alone at the SD1.5 UNet's attention shapes,
// with q, k and v laid out as the UNet's stacked products leave them
// (self-attention: one [B, L, 3C] tensor; cross-attention: q [B, L, C], k
// and v one [B, 77, 2C]).  Prints one line per shape: name, microseconds a
// call (median of 7 runs of 20 calls), TFLOP/s of the 4 B H Lq Lk d
// products, and the sum of |o| (attn_bench.sh checks it against SDPA's).
//
//   attn_bench [bf16]   (bf16: a build without FA_HALF_ONLY)
#include "kernels/cuda/flash16.cu"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "tools/gpu/ck.cuh"

struct shape {
  const char *name;
  int lq, lk, d;
  bool self;
};

__global__ void fill(uint16_t *x, size_t n, uint32_t seed, int bf) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    uint32_t h = (uint32_t)i * 2654435761u ^ seed;
    h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
    const float v = (float)(h & 0xffff) / 32768.0f - 1.0f;
    x[i] = bf ? __bfloat16_as_ushort(__float2bfloat16_rn(v))
              : __half_as_ushort(__float2half_rn(v));
  }
}

int main(int argc, char **argv) {
  const int bf = argc > 1 && strcmp(argv[1], "bf16") == 0;
  const int b = 2, h = 8;
  const shape shapes[] = {
      {"64x64 self, 4096 x 4096, d 40", 4096, 4096, 40, true},
      {"64x64 cross, 4096 x 77, d 40", 4096, 77, 40, false},
      {"32x32 self, 1024 x 1024, d 80", 1024, 1024, 80, true},
      {"32x32 cross, 1024 x 77, d 80", 1024, 77, 80, false},
      {"16x16 self, 256 x 256, d 160", 256, 256, 160, true},
      {"16x16 cross, 256 x 77, d 160", 256, 77, 160, false},
      {"8x8 self, 64 x 64, d 160", 64, 64, 160, true},
      {"8x8 cross, 64 x 77, d 160", 64, 77, 160, false},
  };
  int dev = 0, sms = 0;
  CK(cudaGetDevice(&dev));
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  cudaStream_t st;
  CK(cudaStreamCreate(&st));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  for (const shape &s : shapes) {
    const int64_t c = (int64_t)h * s.d;
    // self: qkv [b, lq, 3c]; cross: q [b, lq, c], kv [b, lk, 2c]
    const size_t nq = (size_t)b * s.lq * (s.self ? 3 * c : c);
    const size_t nkv = s.self ? 0 : (size_t)b * s.lk * 2 * c;
    const size_t no = (size_t)b * s.lq * c;
    uint16_t *q, *kv = nullptr, *o;
    CK(cudaMalloc(&q, nq * 2));
    if (nkv) CK(cudaMalloc(&kv, nkv * 2));
    CK(cudaMalloc(&o, no * 2));
    fill<<<1024, 256, 0, st>>>(q, nq, 1, bf);
    if (nkv) fill<<<1024, 256, 0, st>>>(kv, nkv, 2, bf);
    weft_attn_args a = {};
    a.batch = b, a.heads = h, a.lq = s.lq, a.lk = s.lk, a.d = a.dv = s.d;
    const int64_t lq3 = s.self ? 3 * c : c, lk2 = s.self ? 3 * c : 2 * c;
    a.q = (const float *)q;
    a.q_s = {s.lq * lq3, s.d, lq3};
    const uint16_t *kb = s.self ? q + c : kv, *vb = s.self ? q + 2 * c : kv + c;
    a.k = (const float *)kb;
    a.v = (const float *)vb;
    a.k_s = a.v_s = {(s.self ? s.lq : s.lk) * lk2, s.d, lk2};
    a.o = (float *)o;
    a.o_s = {s.lq * c, s.d, c};
    void *scr;
    CK(cudaMalloc(&scr, weft__cu_flash16_scratch(&a)));
    const float scale = 1.0f / sqrtf((float)s.d);
    std::vector<float> us;
    for (int rep = 0; rep < 8; rep++) {
      CK(cudaEventRecord(e0, st));
      for (int i = 0; i < 20; i++)
        CK(weft__cu_flash16(st, &a, scale, bf, 1, sms, scr));
      CK(cudaEventRecord(e1, st));
      CK(cudaEventSynchronize(e1));
      float ms;
      CK(cudaEventElapsedTime(&ms, e0, e1));
      if (rep > 0) us.push_back(ms * 1000.0f / 20); // the first warms up
    }
    std::sort(us.begin(), us.end());
    const double med = us[us.size() / 2];
    const double flop = 4.0 * b * h * s.lq * s.lk * s.d;
    // sum |o|: attn_bench.sh checks it against SDPA's on the same inputs
    std::vector<uint16_t> oh(no);
    CK(cudaMemcpy(oh.data(), o, no * 2, cudaMemcpyDeviceToHost));
    double sum = 0;
    for (uint16_t x : oh)
      sum += fabs(bf ? (double)__bfloat162float(__ushort_as_bfloat16(x))
                     : (double)__half2float(__ushort_as_half(x)));
    printf("%s\t%.1f\t%.1f\t%.9g\n", s.name, med, flop / (med * 1e-6) / 1e12,
           sum);
    CK(cudaFree(q));
    if (kv) CK(cudaFree(kv));
    CK(cudaFree(o));
    CK(cudaFree(scr));
  }
  return 0;
}
