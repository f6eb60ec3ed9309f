// load_bench.cu - the ways a checkpoint's 16-bit weights can go from a file
// in the page cache to the device, timed on the GPU machine: what the
// loader's fill (the image from the file, nodes/sd/sd_device.c) and its
// copies cost, and what pinned staging, more copy threads or a pipeline
// of the two would.  Host code only (no kernels).  Prints one line per
// way: seconds, GB/s of the bytes moved.
//
//   load_bench FILE_MB [PATH]   the ways
//   load_bench exit MB [FILE]   allocates MB on the device (and maps and
//                               reads FILE), then _exits
//   (tools/gpu/load_bench.sh builds and runs it)
#include <cuda_runtime.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

static double now() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

#define CK(x)                                                                  \
  do {                                                                         \
    cudaError_t e_ = (x);                                                      \
    if (e_ != cudaSuccess) {                                                   \
      fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e_));                 \
      exit(1);                                                                 \
    }                                                                          \
  } while (0)

static size_t S;        // bytes
static const char *F;   // the file, mapped
static char *D;         // device destination
static const int T = 8; // fill threads, as the loader's

static void row(const char *what, double s) {
  printf("%s\t%.3f\t%.1f\n", what, s, S / s / 1e9);
  fflush(stdout);
}

static char *fresh_host() { // as sd_huge_alloc: anonymous, not touched
  void *p =
      mmap(NULL, S, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) exit(1);
  madvise(p, S, MADV_HUGEPAGE);
  return (char *)p;
}

// ---- threads over [0, S) in chunks handed out in order ----------------------
struct job {
  std::atomic<size_t> next{0};
  size_t chunk;
  void (*fn)(job *, size_t off, size_t n, int t);
  char *dst;
  int fd;
  std::atomic<int> *done; // chunks done, by chunk
  char *ring[T][2];
  cudaStream_t st[T];
  cudaEvent_t ev[T][2];
};
struct targ {
  job *j;
  int t;
};
static void *worker(void *a) {
  targ *ta = (targ *)a;
  job *j = ta->j;
  for (;;) {
    size_t off = j->next.fetch_add(j->chunk);
    if (off >= S) break;
    size_t n = S - off < j->chunk ? S - off : j->chunk;
    j->fn(j, off, n, ta->t);
  }
  return NULL;
}
static void run_threads(job *j, int nt) {
  pthread_t th[T];
  targ a[T];
  for (int t = 0; t < nt; t++) {
    a[t] = {j, t};
    pthread_create(&th[t], NULL, worker, &a[t]);
  }
  for (int t = 0; t < nt; t++)
    pthread_join(th[t], NULL);
}

static void fill_mmap(job *j, size_t off, size_t n, int) {
  memcpy(j->dst + off, F + off, n);
  if (j->done) j->done[off / j->chunk].store(1, std::memory_order_release);
}
static void fill_pread(job *j, size_t off, size_t n, int) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = pread(j->fd, j->dst + off + got, n - got, off + got);
    if (r <= 0) exit(1);
    got += r;
  }
}
static void copy_pageable(job *j, size_t off, size_t n, int t) {
  CK(cudaMemcpyAsync(D + off, j->dst + off, n, cudaMemcpyHostToDevice,
                     j->st[t]));
  CK(cudaStreamSynchronize(j->st[t]));
}
// the file's bytes into a pinned slot of the thread's own, then to the
// device; a slot waits for its last copy before it is written again
static int slot_of[T];
static void stage_pinned(job *j, size_t off, size_t n, int t) {
  int s = slot_of[t]++ & 1;
  CK(cudaEventSynchronize(j->ev[t][s]));
  memcpy(j->ring[t][s], F + off, n);
  CK(cudaMemcpyAsync(D + off, j->ring[t][s], n, cudaMemcpyHostToDevice,
                     j->st[t]));
  CK(cudaEventRecord(j->ev[t][s], j->st[t]));
}

int main(int argc, char **argv) {
  if (argc > 2 && !strcmp(argv[1], "exit")) { // the context's teardown
    CK(cudaFree(0));
    size_t n = (size_t)atol(argv[2]) << 20;
    if (n) {
      CK(cudaMalloc(&D, n));
      CK(cudaMemset(D, 0, n));
      CK(cudaDeviceSynchronize());
    }
    if (argc > 3) { // a file mapped and read whole, as a staged load leaves it
      int fd = open(argv[3], O_RDONLY);
      off_t len = fd >= 0 ? lseek(fd, 0, SEEK_END) : 0;
      const volatile char *f =
          len > 0 ? (const volatile char *)mmap(NULL, (size_t)len, PROT_READ,
                                                MAP_PRIVATE, fd, 0)
                  : NULL;
      unsigned sum = 0;
      for (off_t o = 0; f && f != MAP_FAILED && o < len; o += 4096)
        sum += f[o];
      if (sum == 1) printf("\n");
    }
    timespec t; // the wall clock: the shell's date reads it after the end
    clock_gettime(CLOCK_REALTIME, &t);
    printf("%.6f\n", t.tv_sec + 1e-9 * t.tv_nsec);
    fflush(stdout);
    _exit(0);
  }
  S = (size_t)(argc > 1 ? atol(argv[1]) : 1960) << 20;
  const char *path = argc > 2 ? argv[2] : "/tmp/load_bench.bin";
  double t0 = now();
  CK(cudaFree(0));
  row("context (cudaFree(0))", now() - t0);
  // the file, written once (page cache)
  {
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    std::vector<char> buf(64 << 20);
    for (size_t i = 0; i < buf.size(); i++)
      buf[i] = (char)(i * 2654435761u >> 13);
    for (size_t o = 0; o < S; o += buf.size())
      if (write(fd, buf.data(), S - o < buf.size() ? S - o : buf.size()) < 0)
        exit(1);
    close(fd);
  }
  int fd = open(path, O_RDONLY);
  CK(cudaMalloc(&D, S));
  t0 = now();
  CK(cudaMemset(D, 0, S));
  CK(cudaDeviceSynchronize());
  job j;
  j.fd = fd;
  for (int t = 0; t < T; t++) {
    CK(cudaStreamCreateWithFlags(&j.st[t], cudaStreamNonBlocking));
    for (int s = 0; s < 2; s++)
      CK(cudaEventCreateWithFlags(&j.ev[t][s], cudaEventDisableTiming));
  }

  // fill: the file mapped, read by 8 threads into a fresh buffer
  F = (const char *)mmap(NULL, S, PROT_READ, MAP_PRIVATE, fd, 0);
  j.dst = fresh_host();
  j.chunk = 8 << 20, j.fn = fill_mmap, j.done = NULL, j.next = 0;
  t0 = now();
  run_threads(&j, T);
  row("fill: mmap, 8 threads, fresh buffer", now() - t0);
  munmap((void *)F, S);
  munmap(j.dst, S);

  F = (const char *)mmap(NULL, S, PROT_READ, MAP_PRIVATE, fd, 0);
  j.dst = fresh_host();
  t0 = now();
  for (size_t o = 0; o < S; o += 4096)
    ((volatile char *)j.dst)[o] = 0;
  row("touch a fresh buffer (1 thread)", now() - t0);
  j.next = 0;
  t0 = now();
  run_threads(&j, T);
  row("fill: mmap, 8 threads, touched buffer", now() - t0);
  munmap((void *)F, S);

  t0 = now();
  F = (const char *)mmap(NULL, S, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
  row("mmap with MAP_POPULATE", now() - t0);
  j.next = 0;
  t0 = now();
  run_threads(&j, T);
  row("fill: populated mmap, 8 threads, touched buffer", now() - t0);

  j.fn = fill_pread, j.next = 0;
  t0 = now();
  run_threads(&j, T);
  row("fill: pread, 8 threads, touched buffer", now() - t0);

  // copies from the pageable buffer
  t0 = now();
  CK(cudaMemcpy(D, j.dst, S, cudaMemcpyHostToDevice));
  row("copy: pageable, one cudaMemcpy", now() - t0);
  for (int nt = 1; nt <= 4; nt *= 2)
    for (size_t ch = 16 << 20; ch <= (64u << 20); ch *= 4) {
      j.fn = copy_pageable, j.chunk = ch, j.next = 0;
      t0 = now();
      run_threads(&j, nt);
      char w[96];
      snprintf(w, sizeof w, "copy: pageable, %d thread(s), %zu MB pieces", nt,
               ch >> 20);
      row(w, now() - t0);
    }

  // pinned memory: what it costs
  for (size_t mb = 16; mb <= 256; mb *= 4) {
    void *p;
    t0 = now();
    CK(cudaHostAlloc(&p, mb << 20, cudaHostAllocPortable));
    double a = now() - t0;
    t0 = now();
    CK(cudaFreeHost(p));
    printf("cudaHostAlloc %zu MB\t%.4f\tfree %.4f\n", mb, a, now() - t0);
  }
  t0 = now();
  CK(cudaHostRegister(j.dst, S, cudaHostRegisterPortable));
  row("cudaHostRegister of the whole buffer", now() - t0);
  t0 = now();
  CK(cudaMemcpy(D, j.dst, S, cudaMemcpyHostToDevice));
  row("copy: registered, one cudaMemcpy", now() - t0);
  t0 = now();
  CK(cudaHostUnregister(j.dst));
  row("cudaHostUnregister", now() - t0);

  // staged: the file's bytes into pinned slots by N threads, copied from
  // there (the image never written)
  for (int nt = 2; nt <= T; nt *= 2)
    for (size_t ch = 4 << 20; ch <= (16u << 20); ch *= 4) {
      t0 = now();
      for (int t = 0; t < nt; t++)
        for (int s = 0; s < 2; s++)
          CK(cudaHostAlloc(&j.ring[t][s], ch, cudaHostAllocPortable));
      double ta = now() - t0;
      j.fn = stage_pinned, j.chunk = ch, j.next = 0;
      t0 = now();
      run_threads(&j, nt);
      CK(cudaDeviceSynchronize());
      double tr = now() - t0;
      char w[128];
      snprintf(w, sizeof w,
               "staged: %d threads, 2 x %zu MB pinned each (alloc %.3f s)", nt,
               ch >> 20, ta);
      row(w, tr);
      for (int t = 0; t < nt; t++)
        for (int s = 0; s < 2; s++)
          CK(cudaFreeHost(j.ring[t][s]));
    }

  // the pipeline: 8 threads fill a fresh buffer in 64 MB pieces in order,
  // this thread copies each piece (pageable) once it is filled
  {
    munmap(j.dst, S);
    j.dst = fresh_host();
    j.chunk = 64 << 20, j.fn = fill_mmap, j.next = 0;
    size_t n = (S + j.chunk - 1) / j.chunk;
    j.done = new std::atomic<int>[n];
    for (size_t i = 0; i < n; i++)
      j.done[i] = 0;
    t0 = now();
    pthread_t th;
    struct bg {
      static void *run(void *a) {
        run_threads((job *)a, T);
        return NULL;
      }
    };
    pthread_create(&th, NULL, bg::run, &j);
    for (size_t i = 0; i < n; i++) {
      while (!j.done[i].load(std::memory_order_acquire))
        usleep(50);
      size_t off = i * j.chunk, m = S - off < j.chunk ? S - off : j.chunk;
      CK(cudaMemcpyAsync(D + off, j.dst + off, m, cudaMemcpyHostToDevice,
                         j.st[0]));
    }
    CK(cudaStreamSynchronize(j.st[0]));
    pthread_join(th, NULL);
    row("pipeline: fill (8 threads, fresh buffer) and pageable copies",
        now() - t0);
  }
  return 0;
}
