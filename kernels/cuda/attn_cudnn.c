/* attn_cudnn.c - attention with fp16 activations on cuDNN's fused
 * flash-attention engine, driven through its graph API from C.
 *
 * The graph is the one cudnn_frontend builds for an inference SDPA node
 * before cuDNN 9.21 (its composite softmax), which cuDNN's runtime fusion
 * recognises as one fused kernel (on an H200, cuDNN 9.19, the engine torch
 * picks for SD's attention):
 *
 *   S  = Q K^T               matmul, fp32 (virtual)
 *   S2 = S * scale           pointwise, the scale passed by value
 *   M  = max_row(S2)         reduction
 *   E  = exp(S2 - M)         pointwise sub, exp
 *   Z  = sum_row(E)          reduction
 *   P  = E / Z               pointwise, rounded to the 16-bit type
 *   O  = P V                 matmul, O in the 16-bit type
 *   L  = M + log(Z)          pointwise log, add: the softmax's statistics,
 *                            virtual (the frontend's composite softmax
 *                            always has them; the fusion wants them)
 *
 * Q, K, V and O are the activations where they lie (16-bit activations:
 * weft_cuda_set_act_dtype), [B, H, L, d] by their strides, so SD's stacked
 * q/k/v products are read in place.  Taken for fp16 activations where
 * cuDNN offers an engine for the shape, the head dim a multiple of 8, d ==
 * dv, no causal mask (CLIP's causal attention stays on flash16.cu), every
 * stride and pointer 16-byte aligned; elsewhere flash16.cu runs.  bf16
 * stays on flash16.cu: cuDNN's bf16 output missed tests/kernels_cuda's
 * tolerance on small values of the d 40 case (3.8e-4 against 2.6e-4) where
 * flash16's met it.  An engine is picked once per shape, in the heuristic's
 * order, the first that needs no runtime compilation and finalizes (else
 * the first that finalizes): every process runs the same kernel, so a run
 * repeats bit for bit.  On an H200 with cuDNN 9.19 mode A offers 2-3
 * configurations per SD shape, all runtime-compiled (NVRTC): a process's
 * first plans of the UNet's eight shapes cost about 0.4 s (a fresh `weft
 * run`'s sampling 0.91 s against 0.51 on flash16.cu), after which the
 * step is 0.6 ms faster (6.63 against 7.22 ms).
 * WEFT_CUDA_ATTN_CUDNN=0 (or weft_cuda_set_cudnn_attention) keeps
 * flash16.cu everywhere: an A/B switch.
 *
 * Plans kept on disk.  cuDNN serializes a runtime-compiled plan (its JSON
 * representation, the compiled code in it) and finalizes one from that
 * without NVRTC, so a plan compiled once is kept for later processes:
 * one file per shape under WEFT_CACHE_DIR (default $XDG_CACHE_HOME/weft or
 * ~/.cache/weft; WEFT_CACHE_DIR=off keeps none), named and headed by
 * cuDNN's version, the GPU (compute capability, multiprocessors, driver)
 * and the shape's key.  The file holds the configuration the rule above
 * picked, so a kept plan runs the kernel a build would.  A file that does
 * not match or does not finalize is built anew and written again
 * (written whole, then renamed into place). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

bool weft__cudnn_attn_fits(const weft__cuda_ctx *ctx, const weft_attn_args *a) {
  static int env = -1;
  if (!WEFT_HAVE_CUDNN || ctx->attn_cudnn_off || ctx->attn_unfused ||
      !weft__cuda_env_on("WEFT_CUDA_ATTN_CUDNN", &env) ||
      ctx->act != WEFT_F16 || ctx->cc < 80)
    return false;
  if (a->causal || a->d != a->dv || a->d % 8 != 0 || a->d > 256 ||
      a->lq > INT32_MAX || a->lk > INT32_MAX ||
      a->batch * a->heads > INT32_MAX)
    return false;
  /* 16-byte rows and starts: strides in elements, multiples of 8 */
  const weft_attn_strides s[4] = {a->q_s, a->k_s, a->v_s, a->o_s};
  for (int i = 0; i < 4; i++)
    if (s[i].b % 8 || s[i].h % 8 || s[i].l % 8) return false;
  const void *p[4] = {a->q, a->k, a->v, a->o};
  for (int i = 0; i < 4; i++)
    if ((uintptr_t)p[i] % 16) return false;
  return true;
}

#if WEFT_HAVE_CUDNN
#include <cudnn.h>

#define H(ctx) ((cudnnHandle_t)(ctx)->cudnn)

/* ---- the plan cache ----
 * A plan per shape and strides (the dtype, b, h, lq, lk, d and the four
 * tensors' strides), built once and kept until the backend goes, with the
 * descriptors it was built from.  SD makes about ten shapes (the UNet's
 * eight, the VAE's none: d 512). */
enum { AKEY = 18, ASLOTS = 64, ADESCS = 40 };

typedef struct aplan {
  int64_t key[AKEY];
  cudnnBackendDescriptor_t plan;
  cudnnBackendDescriptor_t keep[ADESCS];
  int nkeep;
  int64_t ws;
  bool none; /* no engine: flash16.cu runs the shape */
  bool rtc;  /* its engine is runtime-compiled: worth keeping on disk */
} aplan;

typedef struct aplans {
  pthread_mutex_t mu;
  int n;
  aplan p[ASLOTS];
} aplans;

static void aplan_free(aplan *p) {
  if (p->plan) cudnnBackendDestroyDescriptor(p->plan);
  for (int i = p->nkeep - 1; i >= 0; i--)
    if (p->keep[i]) cudnnBackendDestroyDescriptor(p->keep[i]);
  memset(p, 0, sizeof *p);
}

void weft__cudnn_attn_free(weft__cuda_ctx *ctx) {
  aplans *c = ctx->cudnn_attn;
  if (!c) return;
  for (int i = 0; i < c->n; i++)
    aplan_free(&c->p[i]);
  pthread_mutex_destroy(&c->mu);
  free(c);
  ctx->cudnn_attn = NULL;
}

#define AK(call)                                                               \
  do {                                                                         \
    if ((st = (call)) != CUDNN_STATUS_SUCCESS) goto fail;                      \
  } while (0)

/* A descriptor of type t kept with p (destroyed with it). */
static cudnnStatus_t make(aplan *p, cudnnBackendDescriptorType_t t,
                          cudnnBackendDescriptor_t *d) {
  *d = NULL;
  if (p->nkeep == ADESCS) return CUDNN_STATUS_INTERNAL_ERROR;
  cudnnStatus_t st = cudnnBackendCreateDescriptor(t, d);
  if (st == CUDNN_STATUS_SUCCESS) p->keep[p->nkeep++] = *d;
  return st;
}

static cudnnStatus_t set_desc(cudnnBackendDescriptor_t d,
                              cudnnBackendAttributeName_t name,
                              cudnnBackendDescriptor_t v) {
  return cudnnBackendSetAttribute(d, name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                  &v);
}

/* A 4-d tensor; virtual ones live only inside the fused kernel, a
 * by-value one is a host scalar given at execution. */
static cudnnStatus_t tensor(aplan *p, cudnnBackendDescriptor_t *t, int64_t uid,
                            cudnnDataType_t dt, const int64_t dims[4],
                            const int64_t strides[4], bool virt,
                            bool by_value) {
  cudnnStatus_t st;
  const int64_t align = 16;
  const bool v = virt, bv = by_value;
  AK(make(p, CUDNN_BACKEND_TENSOR_DESCRIPTOR, t));
  AK(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_DATA_TYPE,
                              CUDNN_TYPE_DATA_TYPE, 1, &dt));
  AK(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_DIMENSIONS,
                              CUDNN_TYPE_INT64, 4, dims));
  AK(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64,
                              4, strides));
  AK(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64,
                              1, &uid));
  AK(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT,
                              CUDNN_TYPE_INT64, 1, &align));
  if (v)
    AK(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_IS_VIRTUAL,
                                CUDNN_TYPE_BOOLEAN, 1, &v));
  if (bv)
    AK(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_IS_BY_VALUE,
                                CUDNN_TYPE_BOOLEAN, 1, &bv));
  AK(cudnnBackendFinalize(*t));
fail:
  return st;
}

/* y = mode(x[, b]) in fp32 math. */
static cudnnStatus_t pointwise(aplan *p, cudnnPointwiseMode_t mode,
                               cudnnBackendDescriptor_t x,
                               cudnnBackendDescriptor_t b,
                               cudnnBackendDescriptor_t y,
                               cudnnBackendDescriptor_t *op) {
  cudnnStatus_t st;
  cudnnBackendDescriptor_t pw;
  const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
  AK(make(p, CUDNN_BACKEND_POINTWISE_DESCRIPTOR, &pw));
  AK(cudnnBackendSetAttribute(pw, CUDNN_ATTR_POINTWISE_MODE,
                              CUDNN_TYPE_POINTWISE_MODE, 1, &mode));
  AK(cudnnBackendSetAttribute(pw, CUDNN_ATTR_POINTWISE_MATH_PREC,
                              CUDNN_TYPE_DATA_TYPE, 1, &f32));
  AK(cudnnBackendFinalize(pw));
  AK(make(p, CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, op));
  AK(set_desc(*op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw));
  AK(set_desc(*op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x));
  if (b) AK(set_desc(*op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, b));
  AK(set_desc(*op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y));
  AK(cudnnBackendFinalize(*op));
fail:
  return st;
}

/* y = the rows of x reduced by r (max or sum), fp32. */
static cudnnStatus_t reduction(aplan *p, cudnnReduceTensorOp_t r,
                               cudnnBackendDescriptor_t x,
                               cudnnBackendDescriptor_t y,
                               cudnnBackendDescriptor_t *op) {
  cudnnStatus_t st;
  cudnnBackendDescriptor_t rd;
  const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
  AK(make(p, CUDNN_BACKEND_REDUCTION_DESCRIPTOR, &rd));
  AK(cudnnBackendSetAttribute(rd, CUDNN_ATTR_REDUCTION_OPERATOR,
                              CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &r));
  AK(cudnnBackendSetAttribute(rd, CUDNN_ATTR_REDUCTION_COMP_TYPE,
                              CUDNN_TYPE_DATA_TYPE, 1, &f32));
  AK(cudnnBackendFinalize(rd));
  AK(make(p, CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR, op));
  AK(set_desc(*op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, x));
  AK(set_desc(*op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, y));
  AK(set_desc(*op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, rd));
  AK(cudnnBackendFinalize(*op));
fail:
  return st;
}

/* c = a b (batched over the first two dims), fp32 accumulation. */
static cudnnStatus_t matmul(aplan *p, cudnnBackendDescriptor_t a,
                            cudnnBackendDescriptor_t b,
                            cudnnBackendDescriptor_t c,
                            cudnnBackendDescriptor_t *op) {
  cudnnStatus_t st;
  cudnnBackendDescriptor_t md;
  const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
  AK(make(p, CUDNN_BACKEND_MATMUL_DESCRIPTOR, &md));
  AK(cudnnBackendSetAttribute(md, CUDNN_ATTR_MATMUL_COMP_TYPE,
                              CUDNN_TYPE_DATA_TYPE, 1, &f32));
  AK(cudnnBackendFinalize(md));
  AK(make(p, CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, op));
  AK(set_desc(*op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, a));
  AK(set_desc(*op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, b));
  AK(set_desc(*op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, c));
  AK(set_desc(*op, CUDNN_ATTR_OPERATION_MATMUL_DESC, md));
  AK(cudnnBackendFinalize(*op));
fail:
  return st;
}

/* The tensors' unique ids: the variant pack's for Q, K, V, O and the
 * scale; the virtual ones' only name them. */
enum {
  U_Q = 1,
  U_K,
  U_V,
  U_O,
  U_SCALE,
  U_S,
  U_S2,
  U_M,
  U_D,
  U_E,
  U_Z,
  U_P,
  U_LZ,
  U_L
};

/* Whether the engine of cfg carries behaviour note n. */
static bool has_behavior(cudnnBackendDescriptor_t cfg,
                         cudnnBackendBehaviorNote_t n) {
  cudnnBackendDescriptor_t eng = NULL;
  bool has = false;
  int64_t got = 0;
  if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR, &eng) !=
      CUDNN_STATUS_SUCCESS)
    return false;
  if (cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE,
                               CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &got,
                               &eng) == CUDNN_STATUS_SUCCESS &&
      got == 1) {
    cudnnBackendBehaviorNote_t notes[CUDNN_BEHAVIOR_NOTE_TYPE_COUNT];
    int64_t nn = 0;
    if (cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE,
                                 CUDNN_TYPE_BEHAVIOR_NOTE,
                                 CUDNN_BEHAVIOR_NOTE_TYPE_COUNT, &nn,
                                 notes) == CUDNN_STATUS_SUCCESS)
      for (int64_t i = 0; i < nn; i++)
        if (notes[i] == n) has = true;
  }
  cudnnBackendDestroyDescriptor(eng);
  return has;
}

/* An execution plan of cfg into p->plan: true when it finalizes. */
static bool finalize(weft__cuda_ctx *ctx, aplan *p,
                     cudnnBackendDescriptor_t cfg) {
  cudnnBackendDescriptor_t plan = NULL;
  cudnnHandle_t hd = H(ctx);
  int64_t n = 0;
  if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR,
                                   &plan) != CUDNN_STATUS_SUCCESS)
    return false;
  if (cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE,
                               CUDNN_TYPE_HANDLE, 1,
                               &hd) == CUDNN_STATUS_SUCCESS &&
      set_desc(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, cfg) ==
          CUDNN_STATUS_SUCCESS &&
      cudnnBackendFinalize(plan) == CUDNN_STATUS_SUCCESS &&
      cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                               CUDNN_TYPE_INT64, 1, &n,
                               &p->ws) == CUDNN_STATUS_SUCCESS) {
    p->plan = plan;
    return true;
  }
  cudnnBackendDestroyDescriptor(plan);
  return false;
}

static int log_level(void) {
  static int v = -1;
  return weft__cuda_env_int("WEFT_CUDA_ATTN_LOG", &v);
}

/* The first configuration of the heuristic's list in mode that finalizes
 * into p->plan, precompiled engines first (a runtime-compiled one costs
 * seconds of NVRTC at its first plan): true when one did.  *tried counts
 * the configurations tried. */
static bool plan_from(weft__cuda_ctx *ctx, aplan *p,
                      cudnnBackendDescriptor_t graph,
                      cudnnBackendHeurMode_t mode, int *tried) {
  cudnnBackendDescriptor_t heur = NULL, *cfg = NULL;
  int64_t ncfg = 0, got = 0;
  if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR,
                                   &heur) != CUDNN_STATUS_SUCCESS)
    return false;
  if (set_desc(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph) ==
          CUDNN_STATUS_SUCCESS &&
      cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_MODE,
                               CUDNN_TYPE_HEUR_MODE, 1,
                               &mode) == CUDNN_STATUS_SUCCESS &&
      cudnnBackendFinalize(heur) == CUDNN_STATUS_SUCCESS &&
      cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                               CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &ncfg,
                               NULL) == CUDNN_STATUS_SUCCESS &&
      ncfg > 0 && (cfg = calloc((size_t)ncfg, sizeof *cfg))) {
    for (int64_t i = 0; i < ncfg; i++)
      if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR,
                                       &cfg[i]) != CUDNN_STATUS_SUCCESS)
        cfg[i] = NULL;
    if (cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                 CUDNN_TYPE_BACKEND_DESCRIPTOR, ncfg, &got,
                                 cfg) != CUDNN_STATUS_SUCCESS)
      got = 0;
  }
  for (int pass = 0; pass < 2 && !p->plan; pass++)
    for (int64_t i = 0; i < got && !p->plan; i++) {
      if (!cfg[i] ||
          has_behavior(cfg[i], CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION) !=
              (pass == 1))
        continue;
      ++*tried;
      if (p->nkeep < ADESCS && finalize(ctx, p, cfg[i])) {
        p->rtc = pass == 1;
        p->keep[p->nkeep++] = cfg[i];
        cfg[i] = NULL; /* p's */
        if (log_level())
          fprintf(stderr,
                  "weft cuda: attention [cuDNN]: heuristic mode %d, engine "
                  "configuration %lld of %lld%s, workspace %.1f MiB\n",
                  (int)mode, (long long)i, (long long)got,
                  pass ? " (runtime-compiled)" : "", (double)p->ws / 1048576.0);
      } else if (log_level() > 1) {
        char why[256] = "";
        cudnnGetLastErrorString(why, sizeof why);
        fprintf(stderr,
                "weft cuda: attention [cuDNN]: mode %d configuration %lld of "
                "%lld does not finalize: %s\n",
                (int)mode, (long long)i, (long long)got, why);
      }
    }
  if (log_level() > 1)
    fprintf(stderr, "weft cuda: attention [cuDNN]: mode %d offers %lld\n",
            (int)mode, (long long)got);
  for (int64_t i = 0; cfg && i < ncfg; i++)
    if (cfg[i]) cudnnBackendDestroyDescriptor(cfg[i]);
  free(cfg);
  cudnnBackendDestroyDescriptor(heur);
  return p->plan != NULL;
}

/* ---- plans kept on disk ---- */

/* The folder of kept plans into dir (made if missing): false for none. */
static bool cache_dir(char *dir, size_t n) {
  const char *e = getenv("WEFT_CACHE_DIR"), *x = getenv("XDG_CACHE_HOME"),
             *home = getenv("HOME");
  int w;
  if (e) {
    if (!*e || !strcmp(e, "off") || !strcmp(e, "0")) return false;
    w = snprintf(dir, n, "%s", e);
  } else if (x && *x) {
    w = snprintf(dir, n, "%s/weft", x);
  } else if (home && *home) {
    char up[4096];
    if ((size_t)snprintf(up, sizeof up, "%s/.cache", home) >= sizeof up)
      return false;
    if (mkdir(up, 0755) != 0 && errno != EEXIST) return false;
    w = snprintf(dir, n, "%s/weft", up);
  } else {
    return false;
  }
  if (w < 0 || (size_t)w >= n) return false;
  return mkdir(dir, 0755) == 0 || errno == EEXIST;
}

/* p's file (path) and the header line that must open it (head) */
static bool cache_names(weft__cuda_ctx *ctx, const aplan *p, char *path,
                        size_t np, char *head, size_t nh) {
  char dir[4096];
  int drv = 0;
  if (!cache_dir(dir, sizeof dir) || cudaDriverGetVersion(&drv) != cudaSuccess)
    return false;
  int w = snprintf(head, nh,
                   "weft cuDNN attention plan 1; cuDNN %zu; sm %d, %d "
                   "multiprocessors, driver %d; key",
                   cudnnGetVersion(), ctx->cc, ctx->sm_count, drv);
  for (int i = 0; i < AKEY && w > 0 && (size_t)w < nh; i++)
    w += snprintf(head + w, nh - (size_t)w, " %lld", (long long)p->key[i]);
  if (w <= 0 || (size_t)w + 2 > nh) return false;
  head[w++] = '\n', head[w] = 0;
  uint64_t hash = 1469598103934665603ull; /* FNV-1a of the header */
  for (int i = 0; i < w; i++)
    hash = (hash ^ (unsigned char)head[i]) * 1099511628211ull;
  w = snprintf(path, np, "%s/cudnn-attn-%zu-sm%d-%016llx.plan", dir,
               cudnnGetVersion(), ctx->cc, (unsigned long long)hash);
  return w > 0 && (size_t)w < np;
}

/* p's plan from its file: true when one was there, matched and finalized */
static bool cache_load(weft__cuda_ctx *ctx, aplan *p) {
  char path[4608], head[1024];
  if (!cache_names(ctx, p, path, sizeof path, head, sizeof head)) return false;
  FILE *f = fopen(path, "rb");
  if (!f) return false;
  enum { MAX_PLAN = 64 << 20 };
  char *buf = NULL;
  long n = -1;
  if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 && n <= MAX_PLAN &&
      fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n)) &&
      fread(buf, 1, (size_t)n, f) != (size_t)n)
    n = -1;
  fclose(f);
  const size_t hl = strlen(head);
  bool ok = buf && n > (long)hl && !memcmp(buf, head, hl);
  cudnnBackendDescriptor_t plan = NULL;
  cudnnHandle_t hd = H(ctx);
  int64_t got = 0;
  ok = ok &&
       cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR,
                                    &plan) == CUDNN_STATUS_SUCCESS;
  ok = ok &&
       cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE,
                                CUDNN_TYPE_HANDLE, 1,
                                &hd) == CUDNN_STATUS_SUCCESS &&
       cudnnBackendSetAttribute(
           plan, CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION, CUDNN_TYPE_CHAR,
           (int64_t)((size_t)n - hl), buf + hl) == CUDNN_STATUS_SUCCESS &&
       cudnnBackendFinalize(plan) == CUDNN_STATUS_SUCCESS &&
       cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                CUDNN_TYPE_INT64, 1, &got,
                                &p->ws) == CUDNN_STATUS_SUCCESS;
  free(buf);
  if (!ok) {
    if (plan) cudnnBackendDestroyDescriptor(plan);
    if (log_level())
      fprintf(stderr,
              "weft cuda: attention [cuDNN]: %s: no plan kept there "
              "that matches\n",
              path);
    return false;
  }
  p->plan = plan;
  p->rtc = true;
  weft__cuda_plan_time(ctx, WEFT__PLAN_KEPT, 0);
  if (log_level())
    fprintf(stderr,
            "weft cuda: attention [cuDNN]: plan from %s, workspace "
            "%.1f MiB\n",
            path, (double)p->ws / 1048576.0);
  return true;
}

/* Keeps p's runtime-compiled plan in its file (errors ignored: the next
 * process compiles it again). */
static void cache_store(weft__cuda_ctx *ctx, const aplan *p) {
  char path[4608], tmp[4800], head[1024];
  if (!p->rtc || !cache_names(ctx, p, path, sizeof path, head, sizeof head))
    return;
  int64_t n = 0;
  if (cudnnBackendGetAttribute(
          p->plan, CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION,
          CUDNN_TYPE_CHAR, 0, &n, NULL) != CUDNN_STATUS_SUCCESS ||
      n <= 0)
    return;
  char *js = malloc((size_t)n);
  if (!js) return;
  if (cudnnBackendGetAttribute(
          p->plan, CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION,
          CUDNN_TYPE_CHAR, n, &n, js) != CUDNN_STATUS_SUCCESS)
    n = 0;
  while (n > 0 && !js[n - 1]) /* the text, without its terminator */
    n--;
  /* a name of this process's own, also where hosts share the folder */
  char host[64] = "";
  gethostname(host, sizeof host - 1);
  snprintf(tmp, sizeof tmp, "%s.%.63s.%ld.tmp", path, host, (long)getpid());
  FILE *f = n > 0 ? fopen(tmp, "wb") : NULL;
  bool ok =
      f && fputs(head, f) >= 0 && fwrite(js, 1, (size_t)n, f) == (size_t)n;
  if (f && fclose(f) != 0) ok = false;
  if (f && (!ok || rename(tmp, path) != 0)) {
    ok = false;
    unlink(tmp);
  }
  if (ok) weft__cuda_plan_time(ctx, WEFT__PLAN_STORED, 0);
  if (log_level())
    fprintf(stderr, "weft cuda: attention [cuDNN]: plan %s %s\n",
            ok ? "kept in" : "could not be kept in", path);
  free(js);
}

/* Builds the graph of a and its plan into p (or takes the plan from its
 * file): 0, or WEFT_EUNSUPPORTED (p->none) when cuDNN offers no engine
 * that finalizes. */
static int build(weft__cuda_ctx *ctx, const weft_attn_args *a, aplan *p) {
  if (cache_load(ctx, p)) return 0;
  const cudnnDataType_t io =
      ctx->act == WEFT_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF;
  const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
  const int64_t b = a->batch, h = a->heads, lq = a->lq, lk = a->lk, d = a->d;
  const int64_t qd[4] = {b, h, lq, d},
                qs[4] = {a->q_s.b, a->q_s.h, a->q_s.l, 1};
  const int64_t kd[4] = {b, h, d, lk}, /* K^T: k's rows as columns */
      ks[4] = {a->k_s.b, a->k_s.h, 1, a->k_s.l};
  const int64_t vd[4] = {b, h, lk, d},
                vs[4] = {a->v_s.b, a->v_s.h, a->v_s.l, 1};
  const int64_t os[4] = {a->o_s.b, a->o_s.h, a->o_s.l, 1};
  const int64_t sd[4] = {b, h, lq, lk}, ss[4] = {h * lq * lk, lq * lk, lk, 1};
  const int64_t rd[4] = {b, h, lq, 1}, rs[4] = {h * lq, lq, 1, 1};
  const int64_t one[4] = {1, 1, 1, 1};
  cudnnBackendDescriptor_t q, k, v, o, sc, s, s2, m, dd, e, z, pr, lz, l;
  cudnnBackendDescriptor_t ops[10], graph;
  cudnnHandle_t hd = H(ctx);
  int tried = 0;
  cudnnStatus_t st;
  AK(tensor(p, &q, U_Q, io, qd, qs, false, false));
  AK(tensor(p, &k, U_K, io, kd, ks, false, false));
  AK(tensor(p, &v, U_V, io, vd, vs, false, false));
  AK(tensor(p, &o, U_O, io, qd, os, false, false));
  AK(tensor(p, &sc, U_SCALE, f32, one, one, false, true));
  AK(tensor(p, &s, U_S, f32, sd, ss, true, false));
  AK(tensor(p, &s2, U_S2, f32, sd, ss, true, false));
  AK(tensor(p, &m, U_M, f32, rd, rs, true, false));
  AK(tensor(p, &dd, U_D, f32, sd, ss, true, false));
  AK(tensor(p, &e, U_E, f32, sd, ss, true, false));
  AK(tensor(p, &z, U_Z, f32, rd, rs, true, false));
  AK(tensor(p, &pr, U_P, io, sd, ss, true, false));
  AK(tensor(p, &lz, U_LZ, f32, rd, rs, true, false));
  AK(tensor(p, &l, U_L, f32, rd, rs, true, false));
  AK(matmul(p, q, k, s, &ops[0]));
  AK(pointwise(p, CUDNN_POINTWISE_MUL, s, sc, s2, &ops[1]));
  AK(reduction(p, CUDNN_REDUCE_TENSOR_MAX, s2, m, &ops[2]));
  AK(pointwise(p, CUDNN_POINTWISE_SUB, s2, m, dd, &ops[3]));
  AK(pointwise(p, CUDNN_POINTWISE_EXP, dd, NULL, e, &ops[4]));
  AK(reduction(p, CUDNN_REDUCE_TENSOR_ADD, e, z, &ops[5]));
  AK(pointwise(p, CUDNN_POINTWISE_DIV, e, z, pr, &ops[6]));
  AK(matmul(p, pr, v, o, &ops[7]));
  AK(pointwise(p, CUDNN_POINTWISE_LOG, z, NULL, lz, &ops[8]));
  AK(pointwise(p, CUDNN_POINTWISE_ADD, m, lz, l, &ops[9]));
  AK(make(p, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, &graph));
  AK(cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS,
                              CUDNN_TYPE_BACKEND_DESCRIPTOR, 10, ops));
  AK(cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE,
                              CUDNN_TYPE_HANDLE, 1, &hd));
  AK(cudnnBackendFinalize(graph));
  /* mode A (what cudnn_frontend asks for SDPA), then the fallback list */
  for (int i = 0; i < 2 && !p->plan; i++)
    if (plan_from(ctx, p, graph,
                  i ? CUDNN_HEUR_MODE_FALLBACK : CUDNN_HEUR_MODE_A, &tried))
      break;
  if (p->plan) cache_store(ctx, p);
  st = CUDNN_STATUS_SUCCESS;
fail:
  if (st != CUDNN_STATUS_SUCCESS || !p->plan) {
    if (log_level()) {
      char why[256] = "";
      cudnnGetLastErrorString(why, sizeof why);
      fprintf(stderr,
              "weft cuda: attention %lldx%lld heads, %lld x %lld keys, d %lld "
              "[cuDNN]: %s, %d configurations tried (flash16 instead)%s%s\n",
              (long long)b, (long long)h, (long long)lq, (long long)lk,
              (long long)d,
              st != CUDNN_STATUS_SUCCESS ? cudnnGetErrorString(st)
                                         : "no engine finalizes",
              tried, why[0] ? ": " : "", why);
    }
    int64_t key[AKEY];
    memcpy(key, p->key, sizeof key);
    aplan_free(p);
    memcpy(p->key, key, sizeof key);
    p->none = true;
    return WEFT_EUNSUPPORTED;
  }
  return 0;
}
#undef AK

/* a's plan (built on first use) into *out: 0 or WEFT_EUNSUPPORTED.  *own:
 * the cache was full and the caller frees the plan after its call. */
static int get_plan(weft__cuda_ctx *ctx, const weft_attn_args *a, aplan *out,
                    bool *own) {
  *own = false;
  if (!weft__cudnn_ensure(ctx)) return WEFT_EUNSUPPORTED;
  if (!ctx->cudnn_attn) {
    aplans *c = calloc(1, sizeof *c);
    if (!c || pthread_mutex_init(&c->mu, NULL) != 0) {
      free(c);
      return WEFT_EUNSUPPORTED;
    }
    ctx->cudnn_attn = c;
  }
  aplans *c = ctx->cudnn_attn;
  const int64_t key[AKEY] = {
      ctx->act, a->batch, a->heads, a->lq,   a->lk,   a->d,
      a->q_s.b, a->q_s.h, a->q_s.l, a->k_s.b, a->k_s.h, a->k_s.l,
      a->v_s.b, a->v_s.h, a->v_s.l, a->o_s.b, a->o_s.h, a->o_s.l};
  pthread_mutex_lock(&c->mu);
  for (int i = 0; i < c->n; i++)
    if (!memcmp(c->p[i].key, key, sizeof key)) {
      *out = c->p[i];
      pthread_mutex_unlock(&c->mu);
      return out->none ? WEFT_EUNSUPPORTED : 0;
    }
  aplan p;
  memset(&p, 0, sizeof p);
  memcpy(p.key, key, sizeof key);
  const double t0 = weft__cuda_now();
  int rc = build(ctx, a, &p);
  weft__cuda_plan_time(ctx, WEFT__PLAN_CUDNN, weft__cuda_now() - t0);
  if (c->n < ASLOTS)
    c->p[c->n++] = p;
  else
    *own = rc == 0;
  pthread_mutex_unlock(&c->mu);
  *out = p;
  return rc;
}

int weft__cudnn_attn_plan(weft__cuda_ctx *ctx, const weft_attn_args *a,
                          size_t *ws) {
  aplan p;
  bool own;
  int rc = get_plan(ctx, a, &p, &own);
  *ws = rc == 0 ? (size_t)p.ws : 0;
  if (own) aplan_free(&p);
  return rc;
}

int weft__cudnn_attn(weft__cuda_ctx *ctx, const weft_attn_args *a,
                     float scale) {
  aplan p;
  bool own;
  int rc = get_plan(ctx, a, &p, &own);
  if (rc) return rc;
  void *ws = NULL;
  if (p.ws > 0) {
    ws = a->scratch_bytes >= (size_t)p.ws && ((uintptr_t)a->scratch & 255) == 0
             ? a->scratch
             : weft__cuda_scratch(ctx, (size_t)p.ws);
    if (!ws) {
      if (own) aplan_free(&p);
      return WEFT_ENOMEM;
    }
  }
  cudnnBackendDescriptor_t vp = NULL;
  const int64_t uids[5] = {U_Q, U_K, U_V, U_O, U_SCALE};
  void *ptrs[5] = {(void *)a->q, (void *)a->k, (void *)a->v, a->o, &scale};
  cudnnStatus_t st;
  if ((st = cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR,
                                         &vp)) == CUDNN_STATUS_SUCCESS &&
      (st = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS,
                                     CUDNN_TYPE_INT64, 5, uids)) ==
          CUDNN_STATUS_SUCCESS &&
      (st = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS,
                                     CUDNN_TYPE_VOID_PTR, 5, ptrs)) ==
          CUDNN_STATUS_SUCCESS &&
      (st = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE,
                                     CUDNN_TYPE_VOID_PTR, 1, &ws)) ==
          CUDNN_STATUS_SUCCESS &&
      (st = cudnnBackendFinalize(vp)) == CUDNN_STATUS_SUCCESS)
    st = cudnnBackendExecute(H(ctx), p.plan, vp);
  if (vp) cudnnBackendDestroyDescriptor(vp);
  if (own) aplan_free(&p);
  if (st != CUDNN_STATUS_SUCCESS)
    return weft__cuda_fail(ctx, WEFT_EDEVICE,
                           "attention (cuDNN, %lld x %lld keys, d %lld): %s",
                           (long long)a->lq, (long long)a->lk,
                           (long long)a->d, cudnnGetErrorString(st));
  return 0;
}

#else /* !WEFT_HAVE_CUDNN */

void weft__cudnn_attn_free(weft__cuda_ctx *ctx) {
  (void)ctx;
}

int weft__cudnn_attn_plan(weft__cuda_ctx *ctx, const weft_attn_args *a,
                          size_t *ws) {
  (void)ctx, (void)a;
  *ws = 0;
  return WEFT_EUNSUPPORTED;
}

int weft__cudnn_attn(weft__cuda_ctx *ctx, const weft_attn_args *a,
                     float scale) {
  (void)ctx, (void)a, (void)scale;
  return WEFT_EUNSUPPORTED;
}

#endif
