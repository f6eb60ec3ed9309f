/* sd_device.c - the models' weights in device memory under a budget: the
 * blocks each model's visitor lists, a host image of them (16-bit where the
 * backend computes in fp16/bf16), one pool of device memory they are loaded
 * into, Belady eviction over the cyclic schedule, prefetch on a copy
 * stream, compaction; and the host<->backend copies of the forward passes'
 * inputs and outputs (see sd_device.h). */
#include "sd_device.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kernels/cpu/cpu.h" /* weft_cpu_convert_serial */
#include "sd_layers.h"

/* every weight starts on a 256-byte boundary (cuBLAS and cuDNN want at
 * least 16) */
#define SD_ALIGN 256

static size_t pad(size_t n) {
  return (n + SD_ALIGN - 1) / SD_ALIGN * SD_ALIGN;
}

/* ---- visiting layers
 * --------------------------------------------------------- */

static void wv(sd_wvisit *v, float **w, int64_t numel, sd_wkind k) {
  if (*w) v->weight(v, w, numel, k);
}

void sd_wv_linear(sd_wvisit *v, sd_linear *l) {
  wv(v, &l->w, l->in * l->out, SD_W_HALF);
  wv(v, &l->b, l->out, SD_W_F32);
}

void sd_wv_conv(sd_wvisit *v, sd_conv *c) {
  wv(v, &c->w, c->cout * c->cin * c->k * c->k, SD_W_HALF);
  wv(v, &c->b, c->cout, SD_W_F32);
  if (v->conv) v->conv(v, c); /* c->w may be NULL: not resident */
}

void sd_wv_norm(sd_wvisit *v, sd_norm *n) {
  wv(v, &n->g, n->c, SD_W_F32);
  wv(v, &n->b, n->c, SD_W_F32);
}

/* all but the time-embedding projection, which a UNet lists with its time
 * embedding (it runs them all at once) */
void sd_wv_resnet(sd_wvisit *v, sd_resnet *r) {
  sd_wv_norm(v, &r->norm1);
  sd_wv_conv(v, &r->conv1);
  sd_wv_norm(v, &r->norm2);
  sd_wv_conv(v, &r->conv2);
  sd_wv_conv(v, &r->shortcut);
}

void sd_wv_attn(sd_wvisit *v, sd_attn *a) {
  sd_wv_linear(v, &a->q);
  sd_wv_linear(v, &a->k);
  sd_wv_linear(v, &a->v);
  sd_wv_linear(v, &a->out);
  if (v->attn) v->attn(v, a);
}

/* ---- the budget from the environment
 * ----------------------------------------- */

int sd_vram_env_budget(uint64_t dflt, uint64_t *out, char *err, size_t n) {
  const char *s = getenv("WEFT_VRAM");
  *out = dflt;
  if (!s || !*s) return 0;
  char *end = NULL;
  unsigned long long v = strtoull(s, &end, 10);
  if (*s == '-' || !end || *end || v == 0) {
    snprintf(err, n,
             "WEFT_VRAM=%s: expected a positive number of bytes (weft run "
             "--vram 1.5G sets it)",
             s);
    return -1;
  }
  *out = (uint64_t)v;
  return 0;
}

sd_vram *sd_vram_private(weft_backend *be, int *r) {
  *r = 0;
  if (sd_be_is_host(be)) return NULL;
  uint64_t budget;
  char err[256];
  if (sd_vram_env_budget(UINT64_MAX, &budget, err, sizeof err)) {
    *r = WEFT_EINVAL;
    return NULL;
  }
  sd_vram *vr = sd_vram_new(be, budget, WEFT_F32, NULL, false);
  if (!vr) *r = WEFT_ENOMEM;
  return vr;
}

/* ---- the pool
 * ------------------------------------------------------------------ */

struct sd_vram {
  weft_backend *be;
  uint64_t budget;
  uint64_t reserve; /* kept for activations and scratch (sd_vram_reserve) */
  weft_dtype half;  /* WEFT_F32: no 16-bit weights */
  sd_xfer x;
  bool has_x;
  bool prefetch;
  int refs;
  void *pool;
  size_t pool_bytes;
  bool marked;      /* the pool is registered as 16-bit weights */
  sd_devw **models; /* joined, in order */
  int n_models, cap_models;
  void *after; /* the compute-stream event uploads wait for */
  bool dirty;  /* models joined since the pool was sized */
  sd_vram_stats st;
  sd_param **defer; /* sd_vram_defer's params, by data address */
  int n_defer;
  char err[512];
};

sd_vram *sd_vram_new(weft_backend *be, uint64_t budget, weft_dtype half,
                     const sd_xfer *xfer, bool prefetch) {
  sd_vram *vr = calloc(1, sizeof *vr);
  if (!vr) {
    if (xfer && xfer->free) xfer->free(xfer->ctx);
    return NULL;
  }
  vr->be = be;
  vr->budget = budget;
  vr->prefetch = prefetch;
  vr->refs = 1;
  if (xfer) vr->x = *xfer, vr->has_x = true;
  /* 16-bit weights need the backend to read them */
  vr->half = half != WEFT_F32 && vr->has_x && vr->x.mark_half ? half : WEFT_F32;
  if (vr->has_x && vr->x.event_new && vr->x.upload && vr->x.record_compute &&
      vr->x.compute_wait)
    vr->after = vr->x.event_new(vr->x.ctx);
  if (budget != UINT64_MAX && vr->has_x && vr->x.scratch_limit)
    vr->x.scratch_limit(vr->x.ctx, sd_vram_scratch(vr));
  return vr;
}

void sd_vram_retain(sd_vram *vr) {
  vr->refs++;
}

static bool async(const sd_vram *vr) {
  return vr->after != NULL;
}

static void pool_free(sd_vram *vr) {
  if (!vr->pool) return;
  if (vr->marked) vr->x.unmark_half(vr->x.ctx, vr->pool);
  vr->be->iface->buffer_free(vr->be, vr->pool);
  vr->pool = NULL;
  vr->pool_bytes = 0;
  vr->marked = false;
}

void sd_vram_release(sd_vram *vr) {
  if (!vr || --vr->refs > 0) return;
  pool_free(vr);
  if (vr->after) vr->x.event_free(vr->x.ctx, vr->after);
  if (vr->has_x && vr->x.free) vr->x.free(vr->x.ctx);
  free(vr->models);
  free(vr->defer);
  free(vr);
}

const sd_vram_stats *sd_vram_get_stats(const sd_vram *vr) {
  return &vr->st;
}
uint64_t sd_vram_budget(const sd_vram *vr) {
  return vr->budget;
}
size_t sd_vram_pool_bytes(const sd_vram *vr) {
  return vr->pool_bytes;
}
const char *sd_vram_error(const sd_vram *vr) {
  return vr->err;
}

static uint64_t blocks_total(const sd_vram *vr) {
  uint64_t t = 0;
  for (int i = 0; i < vr->n_models; i++)
    for (int b = 0; b < vr->models[i]->n_blocks; b++)
      t += vr->models[i]->blk[b].bytes;
  return t;
}

static uint64_t f32_total(const sd_vram *vr) {
  uint64_t t = 0;
  for (int i = 0; i < vr->n_models; i++)
    t += vr->models[i]->f32_bytes;
  return t;
}

/* bytes the blocks may use: the budget less the always-resident weights
 * and the reserve for activations and scratch */
static uint64_t pool_cap(const sd_vram *vr, uint64_t f32) {
  return vr->budget > f32 + vr->reserve ? vr->budget - f32 - vr->reserve : 0;
}

bool sd_vram_streaming(const sd_vram *vr) {
  return blocks_total(vr) > pool_cap(vr, f32_total(vr));
}

static uint64_t resident_bytes(const sd_vram *vr) {
  uint64_t t = 0;
  for (int i = 0; i < vr->n_models; i++)
    for (int b = 0; b < vr->models[i]->n_blocks; b++)
      if (vr->models[i]->blk[b].pool_off >= 0) t += vr->models[i]->blk[b].bytes;
  return t;
}

/* Values [b, end) of entry e, element b at dst: fp32 (a copy), or rounded
 * to the 16-bit type.  A channels-last entry goes by rows of one output
 * channel (the rows that start in [b, end), whole: a caller cuts such an
 * entry at rows): each converted whole into tmp (row elements of es
 * bytes), then moved [c_in, kk] -> [kk, c_in] in the order of the
 * writes. */
static void fill_part(const sd_devw *dw, const sd_devw_entry *e, int64_t b,
                      int64_t end, void *tmp, char *dst) {
  const weft_dtype dt = dw->vr->half;
  const size_t es = weft_dtype_size(dt);
  /* from the master, or from the file where it is unread (the same values:
   * the master is the file's, exactly, in fp32) */
  const weft_dtype st = e->src ? e->src_dt : WEFT_F32;
  const char *src = e->src ? e->src : (const void *)e->host;
  const size_t ss = weft_dtype_size(st);
  if (!e->hwc_kk) {
    weft_cpu_convert_serial(dst, dt, src + (size_t)b * ss, st, end - b);
    return;
  }
  const int64_t cin = e->hwc_cin, kk = e->hwc_kk, row = cin * kk;
  for (int64_t o = (b + row - 1) / row; o * row < end; o++) {
    weft_cpu_convert_serial(tmp, dt, src + (size_t)(o * row) * ss, st, row);
    char *d = dst + (size_t)(o * row - b) * es;
    /* tmp's row sits in the L1 cache: its strided reads cost less than
     * kk streams of strided writes (twice the rate on the development
     * machine) */
    if (es == 2) {
      const uint16_t *s = tmp;
      uint16_t *t = (uint16_t *)d;
      for (int64_t r = 0; r < kk; r++, t += cin)
        for (int64_t c = 0; c < cin; c++)
          t[c] = s[c * kk + r];
    } else {
      const uint32_t *s = tmp;
      uint32_t *t = (uint32_t *)d;
      for (int64_t r = 0; r < kk; r++, t += cin)
        for (int64_t c = 0; c < cin; c++)
          t[c] = s[c * kk + r];
    }
  }
}

/* The bytes of fill_part's tmp for dw's channels-last rows (0: none) */
static size_t hwc_row_bytes(const sd_devw *dw) {
  size_t m = 0;
  for (int i = 0; i < dw->n; i++) {
    const sd_devw_entry *e = &dw->e[i];
    const size_t r = (size_t)(e->hwc_cin * e->hwc_kk) * 4;
    if (e->hwc_kk && r > m) m = r;
  }
  return m;
}

/* writes entry e's values at dst: 0 or WEFT_ENOMEM */
static int fill_entry(const sd_devw *dw, const sd_devw_entry *e, char *dst) {
  void *tmp = NULL;
  if (e->hwc_kk && !(tmp = malloc((size_t)(e->hwc_cin * e->hwc_kk) * 4)))
    return WEFT_ENOMEM;
  fill_part(dw, e, 0, e->numel, tmp, dst);
  free(tmp);
  return 0;
}

static char *image_at(const sd_devw *dw, const sd_devw_entry *e) {
  return (char *)dw->image + dw->blk[e->block].img_off + e->off;
}

/* Threads that fill `values` 16-bit values: up to SD_FILL_T, one a run of
 * MIN_RUN values, no more than the cores.  (SD1.5's UNet: 860 M values
 * rounded to 16 bits, at about 1.5 G values a second on one core of the
 * development machine: a large part of a checkpoint's load on one.  On
 * the H200's 16-core host 8 threads filled the staging slots at 1.8 GB/s
 * each, 1.1 thread-seconds for SD1.5: its staging, 0.15 s, was the
 * fill's.) */
#define SD_FILL_T 16
static int fill_threads(int64_t values) {
  enum { MIN_RUN = 1 << 18 };
  int64_t t = values / MIN_RUN;
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  if (t > SD_FILL_T) t = SD_FILL_T;
  if (cores >= 1 && t > cores) t = cores;
  return t < 1 ? 1 : (int)t;
}

/* Runs fn(arg[k]) for k < t, each on a thread of its own but the first
 * (and any whose thread did not start) on this one; args of size sz. */
static void run_threads(void *(*fn)(void *), char *args, size_t sz, int t) {
  pthread_t th[SD_FILL_T];
  bool started[SD_FILL_T] = {false};
  for (int k = 1; k < t; k++)
    started[k] = pthread_create(&th[k], NULL, fn, args + k * sz) == 0;
  for (int k = 0; k < t; k++)
    if (!started[k]) fn(args + k * sz);
  for (int k = 1; k < t; k++)
    if (started[k]) pthread_join(th[k], NULL);
}

/* Every SD_W_HALF entry's image: the entries' values form one sequence;
 * each thread takes an equal run of it, cutting entries where a run ends
 * (the conversion is element by element, so the image is the same bits
 * however it is cut). */
typedef struct fill_job {
  sd_devw *dw;
  int64_t from, to; /* values of the sequence */
  void *tmp;        /* fill_part's (hwc_row_bytes) */
} fill_job;

static void *fill_run(void *arg) {
  const fill_job *j = arg;
  sd_devw *dw = j->dw;
  int64_t at = 0;
  for (int i = 0; i < dw->n && at < j->to; i++) {
    const sd_devw_entry *e = &dw->e[i];
    if (e->kind != SD_W_HALF) continue;
    const int64_t b = j->from > at ? j->from - at : 0;
    const int64_t end = j->to - at < e->numel ? j->to - at : e->numel;
    if (b < end)
      fill_part(dw, e, b, end, j->tmp, image_at(dw, e) + (size_t)b * dw->elem);
    at += e->numel;
  }
  return NULL;
}

double sd_mono_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int fill_images(sd_devw *dw) {
  int64_t total = 0;
  for (int i = 0; i < dw->n; i++)
    if (dw->e[i].kind == SD_W_HALF) total += dw->e[i].numel;
  const int t = fill_threads(total);
  fill_job jobs[SD_FILL_T];
  const int64_t per = (total + t - 1) / t;
  const size_t rb = hwc_row_bytes(dw);
  int rc = 0;
  for (int k = 0; k < t; k++) {
    jobs[k] = (fill_job){dw, per * k,
                         per * (k + 1) < total ? per * (k + 1) : total, NULL};
    if (rb && !(jobs[k].tmp = malloc(rb))) rc = WEFT_ENOMEM;
  }
  if (!rc) run_threads(fill_run, (char *)jobs, sizeof *jobs, t);
  for (int k = 0; k < t; k++)
    free(jobs[k].tmp);
  return rc;
}

/* dw's image, made where it has none yet: allocated, filled, and pinned
 * where a copy stream takes it -- the uploads are then asynchronous and
 * 5-7x as fast as from pageable memory, for a pinning that costs a
 * fraction of the copies it saves (SD1.5's 1.9 GB on the H200's host:
 * filled 0.19 s, pinned 0.05 s, copied 0.04 s against 0.29 s pageable;
 * allocating it pinned took 0.38 s a GB, tools/gpu/load_bench.sh).  A pin
 * refused leaves it pageable: its uploads then wait on the host. */
static int ensure_image(sd_devw *dw) {
  if (dw->image || !dw->image_bytes) return 0;
  sd_vram *vr = dw->vr;
  double t0 = sd_mono_s();
  if (!(dw->image = sd_huge_alloc(dw->image_bytes))) return WEFT_ENOMEM;
  double t1 = sd_mono_s();
  int rc = fill_images(dw);
  double t2 = sd_mono_s();
  if (rc) {
    free(dw->image);
    dw->image = NULL;
    return rc;
  }
  if (vr->has_x && vr->x.host_pin)
    dw->image_pinned = !vr->x.host_pin(vr->x.ctx, dw->image, dw->image_bytes);
  dw->t_image = t1 - t0, dw->t_fill = t2 - t1, dw->t_pin = sd_mono_s() - t2;
  return 0;
}

/* ---- staged uploads -----------------------------------------------------
 * A model held resident needs no image on the host: where the copy stream
 * takes pinned memory and the host can wait for its copies, a model's
 * first uploads (the loader's commit) go through pinned slots, a few
 * threads with two each, filled straight from the masters or the file and
 * copied as each fills (SD1.5's 1.9 GB on the H200's host: 0.05-0.06 s
 * with 16 threads, the channels-last moves included, where filling an
 * image took 0.19 s and pinning it 0.05 s more; the host keeps 1.9 GB
 * less).  The image is made where a block must load again
 * (streaming: at the commit; a compaction's reload): ensure_image; a pool
 * sized anew that holds every block stages them again.  WEFT_SD_STAGE=0
 * makes every image at the upload, as before. */
#define SD_STAGE_SLOT ((size_t)4 << 20)

static bool stage_wanted(const sd_vram *vr) {
  const char *e = getenv("WEFT_SD_STAGE");
  if (e && !strcmp(e, "0")) return false;
  return async(vr) && vr->x.host_pin && vr->x.host_wait;
}

/* a slot's bytes: SD_STAGE_SLOT, or WEFT_SD_STAGE_SLOT's (tests: a tiny
 * model's blocks cut into many; raised to a channels-last row's where
 * smaller, plan_block) */
static size_t stage_slot(void) {
  const char *e = getenv("WEFT_SD_STAGE_SLOT");
  long long v = e ? atoll(e) : 0;
  return v >= SD_ALIGN ? (size_t)v : SD_STAGE_SLOT;
}

/* a run of one block's image, [at, at + bytes), as pieces of entries
 * first_piece.. (in order, each cut where a slot ends, channels-last ones
 * at whole rows) */
typedef struct stage_piece {
  const sd_devw_entry *e;
  int64_t b, end;
} stage_piece;

typedef struct stage_chunk {
  sd_devw *dw;
  int block, first, n;
  size_t at, bytes;
} stage_chunk;

typedef struct stage_plan {
  stage_piece *p;
  stage_chunk *c;
  int np, nc, cap_p, cap_c;
  int blocks;  /* planned */
  size_t slot; /* a slot's bytes */
  int64_t values;
  size_t tmp_bytes; /* fill_part's, the largest channels-last row */
} stage_plan;

static int plan_piece(stage_plan *pl, const sd_devw_entry *e, int64_t b,
                      int64_t end) {
  if (pl->np == pl->cap_p) {
    int nc = pl->cap_p ? 2 * pl->cap_p : 256;
    stage_piece *np = realloc(pl->p, (size_t)nc * sizeof *np);
    if (!np) return WEFT_ENOMEM;
    pl->p = np, pl->cap_p = nc;
  }
  pl->p[pl->np++] = (stage_piece){e, b, end};
  pl->c[pl->nc - 1].n++;
  pl->values += end - b;
  return 0;
}

static int plan_chunk(stage_plan *pl, sd_devw *dw, int block, size_t at) {
  if (pl->nc == pl->cap_c) {
    int nc = pl->cap_c ? 2 * pl->cap_c : 64;
    stage_chunk *ncs = realloc(pl->c, (size_t)nc * sizeof *ncs);
    if (!ncs) return WEFT_ENOMEM;
    pl->c = ncs, pl->cap_c = nc;
  }
  pl->c[pl->nc++] = (stage_chunk){dw, block, pl->np, 0, at, 0};
  return 0;
}

/* Cuts block b of dw into slot-sized chunks of its entries' pieces. */
static int plan_block(stage_plan *pl, sd_devw *dw, int b) {
  const sd_devw_block *k = &dw->blk[b];
  const size_t es = dw->elem;
  bool open = false;
  int rc = 0;
  pl->blocks++;
  for (int i = k->first; !rc && i < k->first + k->n; i++) {
    const sd_devw_entry *e = &dw->e[i];
    if (e->kind != SD_W_HALF) continue;
    const int64_t step = e->hwc_kk ? e->hwc_cin * e->hwc_kk : 1;
    const size_t rb = (size_t)step * 4;
    if (e->hwc_kk && rb > pl->tmp_bytes) pl->tmp_bytes = rb;
    if ((size_t)step * es > pl->slot) pl->slot = (size_t)step * es;
    for (int64_t v = 0; !rc && v < e->numel;) {
      const size_t start = e->off + (size_t)v * es;
      stage_chunk *c = open ? &pl->c[pl->nc - 1] : NULL;
      size_t room =
          c && start - c->at < pl->slot ? pl->slot - (start - c->at) : 0;
      if (room < (size_t)step * es) {
        if ((rc = plan_chunk(pl, dw, b, start))) break;
        open = true;
        c = &pl->c[pl->nc - 1];
        room = pl->slot;
      }
      int64_t n = (int64_t)(room / es) / step * step;
      if (n > e->numel - v) n = e->numel - v;
      if ((rc = plan_piece(pl, e, v, v + n))) break;
      c = &pl->c[pl->nc - 1];
      c->bytes = e->off + (size_t)(v + n) * es - c->at;
      v += n;
    }
  }
  return rc;
}

typedef struct stage_run {
  sd_vram *vr;
  const stage_plan *pl;
  int next; /* the next chunk, under mu */
  int rc;
  pthread_mutex_t mu;        /* host_wait's calls, next, rc and the times */
  double fill, wait, submit; /* the threads' seconds, summed */
} stage_run;

typedef struct stage_worker {
  stage_run *r;
  char *slot[2];
  void *ev[2];
  bool used[2];
  void *tmp;
} stage_worker;

static void *stage_main(void *arg) {
  stage_worker *w = arg;
  stage_run *r = w->r;
  sd_xfer *x = &r->vr->x;
  for (int turn = 0;; turn++) {
    pthread_mutex_lock(&r->mu);
    const double t0 = sd_mono_s();
    const int ci = r->rc ? r->pl->nc : r->next++;
    const int s = turn & 1;
    int rc = ci < r->pl->nc && w->used[s] ? x->host_wait(x->ctx, w->ev[s]) : 0;
    if (rc && !r->rc) r->rc = rc;
    const double t1 = sd_mono_s();
    r->wait += t1 - t0;
    pthread_mutex_unlock(&r->mu);
    if (ci >= r->pl->nc || rc) break;
    const stage_chunk *c = &r->pl->c[ci];
    const sd_devw *dw = c->dw;
    for (int i = c->first; i < c->first + c->n; i++) {
      const stage_piece *p = &r->pl->p[i];
      fill_part(dw, p->e, p->b, p->end, w->tmp,
                w->slot[s] + (p->e->off + (size_t)p->b * dw->elem - c->at));
    }
    char *dst = (char *)r->vr->pool + dw->blk[c->block].pool_off + c->at;
    /* submitted outside the lock (the copy stream takes copies from
     * several threads; their order does not matter): at 16 threads the
     * submissions, ~50 us each, would hold it a third of the time */
    const double t2 = sd_mono_s();
    rc = x->upload(x->ctx, dst, w->slot[s], c->bytes, r->vr->after, w->ev[s]);
    const double t3 = sd_mono_s();
    w->used[s] = !rc;
    pthread_mutex_lock(&r->mu);
    if (rc && !r->rc) r->rc = rc;
    if (!rc) r->vr->st.staged_copies++;
    r->fill += t2 - t1, r->submit += t3 - t2;
    pthread_mutex_unlock(&r->mu);
  }
  return NULL;
}

/* Stages the blocks of the plan (placed in the pool already), then waits
 * for their copies: 0, or a WEFT_E* code (WEFT_EDEVICE too where the slots
 * cannot be pinned: nothing was copied, the caller loads from images). */
static int stage(sd_vram *vr, const stage_plan *pl) {
  if (!pl->nc) return 0;
  const int t = fill_threads(pl->values);
  stage_run r = {vr, pl, 0, 0, PTHREAD_MUTEX_INITIALIZER, 0, 0, 0};
  const double t0 = sd_mono_s();
  stage_worker w[SD_FILL_T];
  memset(w, 0, sizeof w);
  int rc = vr->x.record_compute(vr->x.ctx, vr->after);
  const size_t all = (size_t)t * 2 * pl->slot;
  char *slots = rc ? NULL : sd_huge_alloc(all);
  if (!rc && !slots) rc = WEFT_ENOMEM;
  bool pinned = false;
  if (!rc) {
    pinned = !vr->x.host_pin(vr->x.ctx, slots, all);
    if (!pinned) rc = WEFT_EDEVICE;
  }
  for (int k = 0; k < t && !rc; k++) {
    w[k].r = &r;
    for (int s = 0; s < 2 && !rc; s++) {
      w[k].slot[s] = slots + (size_t)(2 * k + s) * pl->slot;
      if (!(w[k].ev[s] = vr->x.event_new(vr->x.ctx))) rc = WEFT_ENOMEM;
    }
    if (!rc && pl->tmp_bytes && !(w[k].tmp = malloc(pl->tmp_bytes)))
      rc = WEFT_ENOMEM;
  }
  const double t1 = sd_mono_s();
  if (!rc) run_threads(stage_main, (char *)w, sizeof *w, t);
  if (!rc) rc = r.rc;
  const double t2 = sd_mono_s();
  /* every slot's last copy landed before the slots go */
  for (int k = 0; k < t; k++)
    for (int s = 0; s < 2; s++) {
      if (w[k].used[s]) {
        int wr = vr->x.host_wait(vr->x.ctx, w[k].ev[s]);
        if (!rc) rc = wr;
      }
      if (w[k].ev[s]) vr->x.event_free(vr->x.ctx, w[k].ev[s]);
    }
  const double t3 = sd_mono_s();
  vr->st.t_slots += t1 - t0, vr->st.t_stage += t2 - t1;
  vr->st.t_drain += t3 - t2;
  vr->st.t_fill += r.fill, vr->st.t_slot_wait += r.wait;
  vr->st.t_submit += r.submit;
  for (int k = 0; k < t; k++)
    free(w[k].tmp);
  if (pinned) vr->x.host_unpin(vr->x.ctx, slots);
  free(slots);
  pthread_mutex_destroy(&r.mu);
  return rc;
}

/* the model's pointers of block b at base (NULL: not resident) */
static void point_block(sd_devw *dw, int b, char *base) {
  const sd_devw_block *k = &dw->blk[b];
  for (int i = k->first; i < k->first + k->n; i++)
    if (dw->e[i].kind == SD_W_HALF)
      *dw->e[i].field = base ? (float *)(base + dw->e[i].off) : NULL;
}

/* the compute stream waits for block b's upload before touching it */
static int settle(sd_vram *vr, sd_devw_block *k) {
  if (!k->pending) return 0;
  k->pending = false;
  return vr->x.compute_wait(vr->x.ctx, k->copy_ev);
}

/* Drops block b.  An upload of it still in flight is waited for by the
 * compute stream, so that a compaction there cannot move another block
 * into its range before the copy has landed (later uploads follow it on
 * the copy stream anyway). */
static int evict(sd_vram *vr, sd_devw *dw, int b) {
  int rc = settle(vr, &dw->blk[b]);
  dw->blk[b].pool_off = -1;
  point_block(dw, b, NULL);
  vr->st.evictions++;
  return rc;
}

static int evict_all(sd_vram *vr) {
  int rc = 0;
  for (int i = 0; i < vr->n_models; i++)
    for (int b = 0; b < vr->models[i]->n_blocks; b++)
      if (vr->models[i]->blk[b].pool_off >= 0 && vr->models[i]->blk[b].bytes) {
        int r = evict(vr, vr->models[i], b);
        if (!rc) rc = r;
      }
  return rc;
}

/* block b now at pool offset off (its copy queued or staged) */
static void placed_at(sd_vram *vr, sd_devw *dw, int b, size_t off, bool ahead) {
  sd_devw_block *k = &dw->blk[b];
  k->pool_off = (int64_t)off;
  k->loads++;
  point_block(dw, b, (char *)vr->pool + off);
  vr->st.loads++;
  vr->st.loaded_bytes += k->bytes;
  if (ahead) vr->st.prefetches++;
  uint64_t res = resident_bytes(vr);
  if (res > vr->st.peak_resident) vr->st.peak_resident = res;
}

/* copies block b from its image (made if need be) to pool offset off */
static int copy_block(sd_vram *vr, sd_devw *dw, int b, size_t off) {
  sd_devw_block *k = &dw->blk[b];
  char *dst = (char *)vr->pool + off;
  int rc = ensure_image(dw);
  if (rc) return rc;
  const char *src = (const char *)dw->image + k->img_off;
  if (async(vr) && k->copy_ev) {
    /* after everything queued on the compute stream so far: the evicted
     * blocks' last uses and any compaction */
    rc = vr->x.record_compute(vr->x.ctx, vr->after);
    if (!rc)
      rc = vr->x.upload(vr->x.ctx, dst, src, k->bytes, vr->after, k->copy_ev);
    if (!rc) k->pending = true;
    return rc;
  }
  return vr->be->iface->buffer_copy(vr->be, dst, src, k->bytes,
                                    WEFT_COPY_HOST_TO_DEVICE);
}

static int upload(sd_vram *vr, sd_devw *dw, int b, size_t off, bool ahead) {
  int rc = copy_block(vr, dw, b, off);
  if (!rc) placed_at(vr, dw, b, off, ahead);
  return rc;
}

typedef struct placed {
  sd_devw *dw;
  int b;
  size_t off, bytes;
} placed;

static int cmp_placed(const void *a, const void *b) {
  size_t x = ((const placed *)a)->off, y = ((const placed *)b)->off;
  return x < y ? -1 : x > y;
}

/* the resident blocks by pool offset (caller frees; *n may be 0) */
static placed *list_resident(sd_vram *vr, int *n) {
  int cap = 0;
  for (int i = 0; i < vr->n_models; i++)
    cap += vr->models[i]->n_blocks;
  placed *p = malloc((size_t)(cap ? cap : 1) * sizeof *p);
  *n = 0;
  if (!p) return NULL;
  for (int i = 0; i < vr->n_models; i++)
    for (int b = 0; b < vr->models[i]->n_blocks; b++) {
      sd_devw_block *k = &vr->models[i]->blk[b];
      if (k->pool_off >= 0 && k->bytes)
        p[(*n)++] = (placed){vr->models[i], b, (size_t)k->pool_off, k->bytes};
    }
  qsort(p, (size_t)*n, sizeof *p, cmp_placed);
  return p;
}

/* first gap of `need` bytes; -1 if none */
static int64_t find_gap(const placed *p, int n, size_t pool, size_t need) {
  size_t at = 0;
  for (int i = 0; i <= n; i++) {
    size_t end = i < n ? p[i].off : pool;
    if (end >= at && end - at >= need) return (int64_t)at;
    if (i < n) at = p[i].off + p[i].bytes;
  }
  return -1;
}

/* Moves every resident block down to close the gaps, on the compute
 * stream (after their uploads): device-to-device in pieces no larger than
 * the distance moved (no piece overlaps itself), or loaded again from the
 * image when that distance is under SD_MOVE_CHUNK_MIN.  No memory beyond
 * the pool is needed. */
#define SD_MOVE_CHUNK_MIN ((size_t)4 << 20)

static int compact(sd_vram *vr) {
  int n, rc = 0;
  placed *p = list_resident(vr, &n);
  if (!p) return WEFT_ENOMEM;
  weft_backend *be = vr->be;
  size_t at = 0;
  for (int i = 0; i < n && !rc; i++) {
    sd_devw_block *k = &p[i].dw->blk[p[i].b];
    if (p[i].off != at) {
      char *src = (char *)vr->pool + p[i].off, *dst = (char *)vr->pool + at;
      if ((rc = settle(vr, k))) break;
      const size_t gap = p[i].off - at;
      if (gap >= SD_MOVE_CHUNK_MIN || gap >= k->bytes) {
        /* in pieces of at most `gap` bytes, lowest first: each piece's
         * source lies above its destination and is read before a later
         * piece overwrites it (one stream, in order) */
        for (size_t d = 0; d < k->bytes && !rc; d += gap) {
          size_t len = k->bytes - d < gap ? k->bytes - d : gap;
          rc = be->iface->buffer_copy(be, dst + d, src + d, len,
                                      WEFT_COPY_DEVICE_TO_DEVICE);
        }
      } else {
        /* a sliver of a gap: load it again instead of many tiny moves */
        rc = ensure_image(p[i].dw);
        if (!rc)
          rc = be->iface->buffer_copy(be, dst,
                                      (const char *)p[i].dw->image + k->img_off,
                                      k->bytes, WEFT_COPY_HOST_TO_DEVICE);
      }
      if (rc) break;
      k->pool_off = (int64_t)at;
      point_block(p[i].dw, p[i].b, dst);
      vr->st.moves++;
      vr->st.moved_bytes += k->bytes;
    }
    at += k->bytes;
  }
  free(p);
  return rc;
}

/* How far ahead block c of model m is needed when block t of model dw is
 * about to run: models run their blocks in a cycle, so the distance is the
 * cyclic one; another model's blocks come after the running model's. */
static uint64_t distance(const sd_devw *dw, int t, const sd_devw *m, int c) {
  if (m == dw) return (uint64_t)((c - t + m->n_blocks) % m->n_blocks);
  int from = m->pos < 0 ? 0 : m->pos + 1;
  return (uint64_t)dw->n_blocks + 1 +
         (uint64_t)((c - from + 2 * m->n_blocks) % m->n_blocks);
}

/* Makes room for block t of dw and loads it.  Victims by Belady's rule
 * (furthest next use; on a tie the larger block), never t itself nor
 * `keep` (the block running now).  WEFT_ERANGE when the room cannot be
 * made without evicting keep. */
static int load(sd_vram *vr, sd_devw *dw, int t, int keep, bool ahead) {
  const size_t need = dw->blk[t].bytes;
  uint64_t res = resident_bytes(vr);
  size_t kept =
      keep >= 0 && dw->blk[keep].pool_off >= 0 ? dw->blk[keep].bytes : 0;
  if (need + kept > vr->pool_bytes) return WEFT_ERANGE; /* before evicting */
  while (res + need > vr->pool_bytes) {
    sd_devw *vm = NULL;
    int vb = -1;
    uint64_t vd = 0;
    for (int i = 0; i < vr->n_models; i++) {
      sd_devw *m = vr->models[i];
      for (int c = 0; c < m->n_blocks; c++) {
        if (m->blk[c].pool_off < 0 || !m->blk[c].bytes) continue;
        if (m == dw && (c == t || c == keep)) continue;
        uint64_t d = distance(dw, t, m, c);
        if (vb < 0 || d > vd ||
            (d == vd && m->blk[c].bytes > vm->blk[vb].bytes))
          vm = m, vb = c, vd = d;
      }
    }
    if (vb < 0) return WEFT_ERANGE;
    res -= vm->blk[vb].bytes;
    int rc = evict(vr, vm, vb);
    if (rc) return rc;
  }
  int n;
  placed *p = list_resident(vr, &n);
  if (!p) return WEFT_ENOMEM;
  int64_t off = find_gap(p, n, vr->pool_bytes, need);
  free(p);
  if (off < 0) {
    int rc = compact(vr);
    if (rc) return rc;
    off = (int64_t)res; /* everything resident now sits below res */
  }
  return upload(vr, dw, t, (size_t)off, ahead);
}

/* (Re)sizes the pool for the models joined so far: min(what the budget
 * leaves, what all blocks take).  A new size drops every block. */
static int size_pool(sd_vram *vr) {
  uint64_t want = blocks_total(vr), cap = pool_cap(vr, f32_total(vr));
  size_t size = (size_t)(want < cap ? want : cap);
  if (size == vr->pool_bytes && (vr->pool || !size)) return 0;
  int rc = evict_all(vr);
  if (!rc && vr->pool && vr->be->iface->synchronize)
    rc = vr->be->iface->synchronize(vr->be); /* the old pool's last uses */
  pool_free(vr);
  /* the old pool back to the driver before the new one is asked for */
  if (!rc) rc = sd_vram_trim(vr);
  if (rc) return rc;
  if (!size) return 0;
  if (!(vr->pool = vr->be->iface->buffer_alloc(vr->be, size))) {
    snprintf(vr->err, sizeof vr->err,
             "cannot allocate %zu bytes of device memory for the weights' "
             "pool (budget %" PRIu64 " bytes)",
             size, vr->budget);
    return WEFT_ENOMEM;
  }
  vr->pool_bytes = size;
  if (vr->half != WEFT_F32) {
    rc = vr->x.mark_half(vr->x.ctx, vr->pool, size, vr->half);
    if (rc) {
      pool_free(vr);
      return rc;
    }
    vr->marked = true;
  }
  return 0;
}

/* The planned blocks staged (placed already); where that fails (the
 * slots not pinned, say), copied from their images instead. */
static int stage_planned(sd_vram *vr, stage_plan *pl) {
  int rc = stage(vr, pl);
  if (!rc) vr->st.staged += (uint64_t)pl->blocks;
  for (int i = 0; rc && i < pl->nc; i++) {
    const stage_chunk *c = &pl->c[i];
    if (i && c->dw == pl->c[i - 1].dw && c->block == pl->c[i - 1].block)
      continue;
    int r =
        copy_block(vr, c->dw, c->block, (size_t)c->dw->blk[c->block].pool_off);
    if (r) return r;
  }
  pl->np = pl->nc = pl->blocks = 0;
  pl->values = 0;
  return 0;
}

/* Loads blocks in order, every model's, while they fit without evicting
 * (all of them when nothing streams): a model's staged where it has no
 * image yet and staging is wanted.  Where they do not all fit, every
 * model gets its image now, for the loads to come. */
static int preload(sd_vram *vr) {
  stage_plan pl = {.slot = stage_slot()};
  const bool staging = stage_wanted(vr);
  bool full = false;
  int rc = 0;
  for (int i = 0; !rc && !full && i < vr->n_models; i++) {
    sd_devw *m = vr->models[i];
    for (int b = 0; !rc && b < m->n_blocks; b++) {
      if (m->blk[b].pool_off >= 0 || !m->blk[b].bytes) continue;
      if (resident_bytes(vr) + m->blk[b].bytes > vr->pool_bytes) {
        full = true;
        break;
      }
      int n;
      placed *p = list_resident(vr, &n);
      if (!p) {
        rc = WEFT_ENOMEM;
        break;
      }
      int64_t off = find_gap(p, n, vr->pool_bytes, m->blk[b].bytes);
      free(p);
      if (off < 0) { /* the planned blocks land before anything moves */
        rc = stage_planned(vr, &pl);
        if (!rc) rc = compact(vr);
        off = (int64_t)resident_bytes(vr);
      }
      if (!rc && staging && !m->image) {
        placed_at(vr, m, b, (size_t)off, false);
        rc = plan_block(&pl, m, b);
      } else if (!rc) {
        rc = upload(vr, m, b, (size_t)off, false);
      }
    }
  }
  if (!rc) rc = stage_planned(vr, &pl);
  free(pl.p), free(pl.c);
  for (int i = 0; !rc && full && i < vr->n_models; i++)
    rc = ensure_image(vr->models[i]);
  return rc;
}

static void mb(char *out, size_t n, uint64_t bytes) {
  snprintf(out, n, "%.1f MiB", (double)bytes / (1024.0 * 1024.0));
}

/* Adds dw to vr: checks every block against what the budget leaves. */
static int join(sd_vram *vr, sd_devw *dw) {
  vr->err[0] = 0;
  uint64_t f32 = f32_total(vr) + dw->f32_bytes, cap = pool_cap(vr, f32);
  for (int b = 0; b < dw->n_blocks; b++)
    if (dw->blk[b].bytes > cap) {
      char need[32], left[32], bud[32], fixed[32];
      mb(need, sizeof need, dw->blk[b].bytes), mb(left, sizeof left, cap);
      mb(bud, sizeof bud, vr->budget), mb(fixed, sizeof fixed, f32);
      char act[32];
      mb(act, sizeof act, vr->reserve);
      snprintf(vr->err, sizeof vr->err,
               "the %s's block '%s' needs %s (%zu bytes) of device memory "
               "but the budget of %s (%" PRIu64
               " bytes, --vram / WEFT_VRAM) leaves %s for streamed weights "
               "after %s of always-resident biases and norms and %s kept "
               "for activations and scratch: raise the budget",
               dw->model, dw->blk[b].name, need, dw->blk[b].bytes, bud,
               vr->budget, left, fixed, act);
      return WEFT_ERANGE;
    }
  if (vr->n_models == vr->cap_models) {
    int nc = vr->cap_models ? 2 * vr->cap_models : 4;
    sd_devw **nm = realloc(vr->models, (size_t)nc * sizeof *nm);
    if (!nm) return WEFT_ENOMEM;
    vr->models = nm, vr->cap_models = nc;
  }
  vr->models[vr->n_models++] = dw;
  vr->dirty = true;
  return 0;
}

int sd_vram_trim(sd_vram *vr) {
  return vr->has_x && vr->x.trim ? vr->x.trim(vr->x.ctx) : 0;
}

uint64_t sd_vram_scratch(const sd_vram *vr) {
  if (vr->budget == UINT64_MAX) return 0;
  const uint64_t want = vr->budget / 16 > SD_VRAM_SCRATCH ? vr->budget / 16
                                                          : SD_VRAM_SCRATCH;
  return want < vr->budget / 3 ? want : vr->budget / 3;
}

uint64_t sd_vram_reserved(const sd_vram *vr) {
  return vr->reserve;
}

int sd_vram_reserve(sd_vram *vr, uint64_t bytes, const sd_devw *running,
                    const char *why) {
  vr->err[0] = 0;
  if (vr->budget == UINT64_MAX || bytes == vr->reserve) return 0;
  uint64_t f32 = f32_total(vr);
  const sd_devw *big = NULL;
  int bb = -1;
  for (int i = 0; i < vr->n_models; i++) {
    const sd_devw *m = vr->models[i];
    if (running && m != running) continue;
    for (int b = 0; b < m->n_blocks; b++)
      if (!big || m->blk[b].bytes > big->blk[bb].bytes) big = m, bb = b;
  }
  uint64_t need = big ? big->blk[bb].bytes : 0;
  if (f32 + bytes + need > vr->budget) {
    char bud[32], act[32], blk[32], fixed[32];
    mb(bud, sizeof bud, vr->budget), mb(act, sizeof act, bytes);
    mb(blk, sizeof blk, need), mb(fixed, sizeof fixed, f32);
    snprintf(vr->err, sizeof vr->err,
             "the budget of %s (%" PRIu64
             " bytes, --vram / WEFT_VRAM) does not hold %s: %s (%" PRIu64
             " bytes) of activations and scratch, the %s's largest block "
             "'%s' (%s) and %s of always-resident biases and norms: raise "
             "the budget",
             bud, vr->budget, why ? why : "the next model call", act, bytes,
             big ? big->model : "model", big ? big->blk[bb].name : "", blk,
             fixed);
    return WEFT_ERANGE;
  }
  vr->reserve = bytes;
  vr->dirty = true; /* the pool is resized at the next commit or use */
  return 0;
}

int sd_vram_fit(sd_vram *vr, const sd_devw *running, uint64_t scratch,
                const char *why) {
  if (!vr || vr->budget == UINT64_MAX) return 0;
  vr->err[0] = 0;
  size_t need = 0;
  for (int i = 0; i < vr->n_models; i++) {
    const sd_devw *m = vr->models[i];
    if (running && m != running) continue;
    for (int b = 0; b < m->n_blocks; b++)
      if (m->blk[b].bytes > need) need = m->blk[b].bytes;
  }
  /* the pool is min(every block, the cap): at least `need` when the cap is */
  if (need <= pool_cap(vr, f32_total(vr))) return 0;
  int rc = sd_vram_reserve(vr, scratch, running, why);
  if (!rc) rc = sd_vram_commit(vr);
  return rc;
}

int sd_vram_commit(sd_vram *vr) {
  if (!vr->dirty) return 0;
  const double t0 = sd_mono_s();
  int rc = size_pool(vr);
  vr->st.t_pool += sd_mono_s() - t0;
  if (!rc) rc = preload(vr);
  if (!rc) vr->dirty = false;
  return rc;
}

static void leave(sd_vram *vr, sd_devw *dw) {
  for (int i = 0; i < vr->n_models; i++)
    if (vr->models[i] == dw) {
      for (int b = 0; b < dw->n_blocks; b++)
        if (dw->blk[b].pool_off >= 0 && dw->blk[b].bytes) evict(vr, dw, b);
      /* the copies and uses of its blocks before its image and F32 weights
       * go (the caching allocator orders reuse, the host image does not) */
      if (vr->be->iface->synchronize) vr->be->iface->synchronize(vr->be);
      memmove(&vr->models[i], &vr->models[i + 1],
              (size_t)(vr->n_models - i - 1) * sizeof *vr->models);
      vr->n_models--;
      break;
    }
  if (!vr->n_models) pool_free(vr);
}

/* ---- collecting a model's weights
 * ---------------------------------------------- */

typedef struct collect {
  sd_wvisit v;
  sd_devw *dw;
  int cap_e, cap_b;
  int rc;
} collect;

static void col_block(sd_wvisit *v, const char *name) {
  collect *c = (collect *)v;
  sd_devw *dw = c->dw;
  if (c->rc) return;
  if (dw->n_blocks == c->cap_b) {
    int nc = c->cap_b ? 2 * c->cap_b : 16;
    sd_devw_block *nb = realloc(dw->blk, (size_t)nc * sizeof *nb);
    if (!nb) {
      c->rc = WEFT_ENOMEM;
      return;
    }
    dw->blk = nb, c->cap_b = nc;
  }
  sd_devw_block *k = &dw->blk[dw->n_blocks++];
  memset(k, 0, sizeof *k);
  snprintf(k->name, sizeof k->name, "%s", name);
  k->pool_off = -1;
  k->first = dw->n;
}

static int cmp_param_data(const void *a, const void *b) {
  uintptr_t x = (uintptr_t)(*(sd_param *const *)a)->data,
            y = (uintptr_t)(*(sd_param *const *)b)->data;
  return x < y ? -1 : x > y;
}

int sd_vram_defer(sd_vram *vr, sd_ckpt *ck) {
  free(vr->defer);
  vr->defer = NULL, vr->n_defer = 0;
  if (!ck || !ck->n_params) return 0;
  if (!(vr->defer = malloc((size_t)ck->n_params * sizeof *vr->defer)))
    return WEFT_ENOMEM;
  for (int i = 0; i < ck->n_params; i++)
    vr->defer[i] = &ck->params[i];
  vr->n_defer = ck->n_params;
  qsort(vr->defer, (size_t)vr->n_defer, sizeof *vr->defer, cmp_param_data);
  return 0;
}

/* the unread param whose master is w (sd_vram_defer), or NULL */
static sd_param *unread_param(const sd_vram *vr, const float *w) {
  int lo = 0, hi = vr->n_defer - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    sd_param *p = vr->defer[mid];
    if (p->data == w) return p->unread ? p : NULL;
    if ((uintptr_t)p->data < (uintptr_t)w)
      lo = mid + 1;
    else
      hi = mid - 1;
  }
  return NULL;
}

static void col_weight(sd_wvisit *v, float **w, int64_t numel, sd_wkind kind) {
  collect *c = (collect *)v;
  sd_devw *dw = c->dw;
  if (!dw->n_blocks) col_block(v, "weights");
  if (c->rc) return;
  /* a deferred master: a 16-bit image's values come from the file, the
   * rest are read now (they are copied from the master or read on the
   * host) */
  sd_param *p = unread_param(dw->vr, *w);
  const void *src = NULL;
  weft_dtype src_dt = WEFT_F32;
  if (p && kind == SD_W_HALF && p->numel == numel)
    src = p->src, src_dt = p->src_dt;
  else if (p)
    sd_param_read(p);
  if (dw->n == c->cap_e) {
    int nc = c->cap_e ? 2 * c->cap_e : 64;
    sd_devw_entry *ne = realloc(dw->e, (size_t)nc * sizeof *ne);
    if (!ne) {
      c->rc = WEFT_ENOMEM;
      return;
    }
    dw->e = ne, c->cap_e = nc;
  }
  int b = dw->n_blocks - 1;
  dw->e[dw->n++] = (sd_devw_entry){
      *w, w, numel, kind, kind == SD_W_HALF ? b : -1, 0, 0, 0, src, src_dt};
  dw->blk[b].n++;
}

/* A convolution whose weight the backend takes channels last (want_hwc):
 * its entry is copied so.  1x1 kernels are the same either way; the
 * channels must suit a 16-bit NHWC convolution (multiples of 8), the
 * others (conv_in's 4, conv_out's 3 or 4) stay as they are. */
static void col_conv(sd_wvisit *v, sd_conv *c) {
  collect *col = (collect *)v;
  sd_devw *dw = col->dw;
  if (col->rc || !dw->want_hwc || c->k < 2 || c->cin % 8 || c->cout % 8)
    return;
  for (int i = dw->n - 1; i >= 0 && i >= dw->n - 2; i--)
    if (dw->e[i].field == &c->w && dw->e[i].kind == SD_W_HALF) {
      dw->e[i].hwc_cin = c->cin;
      dw->e[i].hwc_kk = c->k * c->k;
    }
}

typedef struct host_idx {
  uintptr_t host;
  int i;
} host_idx;

static int cmp_host_idx(const void *a, const void *b) {
  uintptr_t x = ((const host_idx *)a)->host, y = ((const host_idx *)b)->host;
  return x < y ? -1 : x > y;
}

/* dw->sorted: the entries by host address */
static int sort_entries(sd_devw *dw) {
  host_idx *h = malloc((size_t)(dw->n ? dw->n : 1) * sizeof *h);
  if (!h) return WEFT_ENOMEM;
  for (int i = 0; i < dw->n; i++)
    h[i] = (host_idx){(uintptr_t)dw->e[i].host, i};
  qsort(h, (size_t)dw->n, sizeof *h, cmp_host_idx);
  for (int i = 0; i < dw->n; i++)
    dw->sorted[i] = h[i].i;
  free(h);
  return 0;
}

static void devw_free(sd_devw *dw) {
  sd_vram *vr = dw->vr;
  for (int b = 0; b < dw->n_blocks; b++)
    if (dw->blk[b].copy_ev) vr->x.event_free(vr->x.ctx, dw->blk[b].copy_ev);
  if (dw->f32h) {
    if (dw->f32) vr->x.unmark_mirror(vr->x.ctx, dw->f32);
    dw->be->iface->buffer_free(dw->be, dw->f32h);
  }
  if (dw->f32) dw->be->iface->buffer_free(dw->be, dw->f32);
  if (dw->image_pinned) vr->x.host_unpin(vr->x.ctx, dw->image);
  free(dw->image);
  free(dw->e);
  free(dw->sorted);
  free(dw->blk);
  free(dw);
  sd_vram_release(vr);
}

/* points every field back at its master; read: with the values of those
 * still unread (the model runs on the host next) */
static void restore(sd_devw *dw, bool read) {
  for (int i = 0; i < dw->n; i++) {
    sd_devw_entry *e = &dw->e[i];
    if (read && e->src)
      weft_cpu_convert_serial(e->host, WEFT_F32, e->src, e->src_dt, e->numel);
    e->src = NULL;
    *e->field = e->host;
  }
}

/* ---- adjacent products --------------------------------------------------
 * The image lays a block's matrices out in visiting order, each padded to
 * SD_ALIGN, and the F32 weights likewise in their buffer: an attention's
 * q, k and v weights (and biases) then follow one another on the device
 * wherever their sizes are multiples of SD_ALIGN (every SD attention's),
 * and one product with all three stacked computes what three would.
 * The fuse visitor marks each attention whose weights lie so (sd_attn's
 * fuse_qkv, fuse_kv); sd_run_attn takes the one product then.  It marks
 * too each convolution whose weight was copied channels last (sd_conv's
 * w_hwc, col_conv). */
typedef struct fuse {
  sd_wvisit v;
  sd_devw *dw; /* NULL: clear the marks */
  bool attn;   /* mark the attentions too (else clear theirs) */
} fuse;

static const sd_devw_entry *entry_by_field(const sd_devw *dw, float **field) {
  for (int i = 0; i < dw->n; i++)
    if (dw->e[i].field == field) return &dw->e[i];
  return NULL;
}

/* Whether field b's values follow field a's in device memory. */
static bool follows(const sd_devw *dw, float **fa, float **fb) {
  const sd_devw_entry *a = entry_by_field(dw, fa), *b = entry_by_field(dw, fb);
  if (!a || !b || a->kind != b->kind) return false;
  if (a->kind == SD_W_HALF)
    return a->block == b->block &&
           b->off == a->off + (size_t)a->numel * dw->elem;
  return a->kind == SD_W_F32 &&
         b->off == a->off + (size_t)a->numel * sizeof(float);
}

/* l1 stacked under l0 as one product: same shapes, weights (and biases,
 * or none) adjacent. */
static bool stacks(const sd_devw *dw, sd_linear *l0, sd_linear *l1) {
  return l0->in == l1->in && l0->out == l1->out &&
         follows(dw, &l0->w, &l1->w) &&
         (l0->b ? l1->b && follows(dw, &l0->b, &l1->b) : !l1->b);
}

static void fuse_noop_block(sd_wvisit *v, const char *name) {
  (void)v, (void)name;
}
static void fuse_noop_weight(sd_wvisit *v, float **w, int64_t numel,
                             sd_wkind kind) {
  (void)v, (void)w, (void)numel, (void)kind;
}

/* marks c's weight channels last when its entry is (counted in dw: the
 * loader logs them) */
static void fuse_conv(sd_wvisit *v, sd_conv *c) {
  sd_devw *dw = ((fuse *)v)->dw;
  const sd_devw_entry *e = dw ? entry_by_field(dw, &c->w) : NULL;
  c->w_hwc = e && e->hwc_kk;
  if (dw) dw->n_hwc += c->w_hwc;
}

/* marks a (and counts it likewise) */
static void fuse_attn(sd_wvisit *v, sd_attn *a) {
  sd_devw *dw = ((fuse *)v)->attn ? ((fuse *)v)->dw : NULL;
  a->fuse_kv = dw && stacks(dw, &a->k, &a->v);
  a->fuse_qkv = a->fuse_kv && stacks(dw, &a->q, &a->k);
  if (!dw) return;
  dw->n_fused_qkv += a->fuse_qkv;
  dw->n_fused_kv += a->fuse_kv && !a->fuse_qkv;
}

/* dw NULL: clears every mark; attn false: the attentions' */
static void mark_fused(void *model, sd_model_visit_fn visit, sd_devw *dw,
                       bool attn) {
  fuse f = {{fuse_noop_block, fuse_noop_weight, fuse_attn, fuse_conv}, dw,
            attn};
  visit(model, &f.v);
}

/* Whether dw's attentions take stacked products: on a CUDA device (a copy
 * stream), where one product of three widths runs faster than three; not
 * on the emulated device, whose CPU products may sum a wider product in
 * another order and which must give the CPU's bits.  WEFT_SD_FUSE=1 or 0
 * says so for any device (tests). */
static bool fuse_wanted(const sd_vram *vr) {
  const char *e = getenv("WEFT_SD_FUSE");
  if (e && *e) return strcmp(e, "0") != 0;
  return vr->has_x;
}

/* Whether dw's convolution weights go channels last: for a model that
 * may (sd_devw_upload's hwc) where the backend says it runs them fastest
 * so (CUDA with cuDNN in 16-bit precision); WEFT_SD_NHWC=1 or 0 says so
 * for every model on any device (tests: the emulated device's CPU
 * convolutions take either layout, with the same bits). */
static bool hwc_wanted(const sd_vram *vr, bool model) {
  const char *e = getenv("WEFT_SD_NHWC");
  if (e && *e) return strcmp(e, "0") != 0;
  return model && vr->has_x && vr->x.conv_hwc && vr->x.conv_hwc(vr->x.ctx);
}


int sd_devw_upload(void *model, sd_model_visit_fn visit, sd_vram *vr,
                   const char *name, bool hwc, sd_devw **out) {
  *out = NULL;
  sd_devw *dw = calloc(1, sizeof *dw);
  if (!dw) return WEFT_ENOMEM;
  sd_vram_retain(vr);
  dw->vr = vr;
  dw->be = vr->be;
  dw->pos = -1;
  dw->elem = vr->half == WEFT_F32 ? 4 : 2;
  snprintf(dw->model, sizeof dw->model, "%s", name);
  dw->want_hwc = hwc_wanted(vr, hwc);
  collect c = {{col_block, col_weight, NULL, col_conv}, dw, 0, 0, 0};
  visit(model, &c.v);
  int rc = c.rc;
  if (!rc && !(dw->sorted = malloc((size_t)(dw->n ? dw->n : 1) * sizeof(int))))
    rc = WEFT_ENOMEM;
  if (!rc) rc = sort_entries(dw);
  if (rc) {
    devw_free(dw);
    return rc;
  }
  /* layout: each block's matrices one after another in the image; the
   * F32 weights in their own buffer */
  for (int b = 0; b < dw->n_blocks; b++) {
    sd_devw_block *k = &dw->blk[b];
    k->img_off = dw->image_bytes;
    for (int i = k->first; i < k->first + k->n; i++) {
      sd_devw_entry *e = &dw->e[i];
      if (e->kind == SD_W_HALF) {
        e->off = k->bytes;
        k->bytes += pad((size_t)e->numel * dw->elem);
      } else if (e->kind == SD_W_F32) {
        e->off = dw->f32_bytes;
        dw->f32_bytes += pad((size_t)e->numel * sizeof(float));
      }
    }
    dw->image_bytes += k->bytes;
    if (k->bytes && async(vr) && !(k->copy_ev = vr->x.event_new(vr->x.ctx)))
      rc = WEFT_ENOMEM;
  }
  const bool mirror = vr->half == WEFT_F16 && vr->x.mark_mirror;
  dw->arena_bytes =
      dw->image_bytes + dw->f32_bytes + (mirror ? dw->f32_bytes / 2 : 0);
  weft_backend *be = vr->be;
  if (!rc && dw->f32_bytes &&
      !(dw->f32 = be->iface->buffer_alloc(be, dw->f32_bytes)))
    rc = WEFT_ENOMEM;
  if (!rc && dw->f32_bytes && mirror &&
      !(dw->f32h = be->iface->buffer_alloc(be, dw->f32_bytes / 2)))
    rc = WEFT_ENOMEM;
  /* the image now, unless the blocks' first uploads may stage (commit) */
  if (!rc && !stage_wanted(vr)) rc = ensure_image(dw);
  for (int i = 0; !rc && i < dw->n; i++) {
    sd_devw_entry *e = &dw->e[i];
    if (e->kind == SD_W_F32)
      rc = be->iface->buffer_copy(be, (char *)dw->f32 + e->off, e->host,
                                  (size_t)e->numel * sizeof(float),
                                  WEFT_COPY_HOST_TO_DEVICE);
  }
  if (!rc && dw->f32h) {
    rc = be->iface->convert(be, dw->f32h, WEFT_F16, dw->f32, WEFT_F32,
                            (int64_t)(dw->f32_bytes / sizeof(float)));
    if (!rc)
      rc = vr->x.mark_mirror(vr->x.ctx, dw->f32, dw->f32_bytes, dw->f32h,
                             WEFT_F16);
    if (rc) { /* no mirror: the biases are rounded where they are used */
      be->iface->buffer_free(be, dw->f32h);
      dw->f32h = NULL;
      rc = 0;
    }
  }
  if (!rc) {
    /* F32 weights point at the device now; blocks as they load */
    for (int i = 0; i < dw->n; i++)
      if (dw->e[i].kind == SD_W_F32)
        *dw->e[i].field = (float *)((char *)dw->f32 + dw->e[i].off);
      else if (dw->e[i].kind == SD_W_HALF)
        *dw->e[i].field = NULL;
    rc = join(vr, dw);
    if (rc) {
      leave(vr, dw);
      restore(dw, true);
    }
  }
  if (rc) {
    devw_free(dw);
    return rc;
  }
  dw->owner = model, dw->visit = visit;
  /* the convolutions' marks always (their copies are as collected); the
   * attentions' where wanted (clear otherwise) */
  mark_fused(model, visit, dw, fuse_wanted(vr));
  *out = dw;
  return 0;
}

static void release(sd_devw *dw, bool read) {
  if (!dw) return;
  mark_fused(dw->owner, dw->visit, NULL, false);
  leave(dw->vr, dw);
  restore(dw, read);
  devw_free(dw);
}

void sd_devw_release(sd_devw *dw) {
  release(dw, true);
}

void sd_devw_discard(sd_devw *dw) {
  release(dw, false);
}

int sd_devw_use(sd_devw *dw, int b) {
  if (!dw) return 0;
  if (b < 0 || b >= dw->n_blocks) return WEFT_EINVAL;
  sd_vram *vr = dw->vr;
  sd_devw_block *k = &dw->blk[b];
  dw->pos = b;
  int rc = sd_vram_commit(vr);
  if (!rc && k->bytes && k->pool_off < 0) {
    rc = load(vr, dw, b, -1, false);
    if (rc == WEFT_ERANGE) {
      /* the node did not make room (sd_vram_fit): say so, not just ERANGE */
      char need[32], pool[32], act[32];
      mb(need, sizeof need, k->bytes), mb(pool, sizeof pool, vr->pool_bytes);
      mb(act, sizeof act, vr->reserve);
      snprintf(vr->err, sizeof vr->err,
               "the %s's block '%s' needs %s (%zu bytes) of device memory but "
               "the weights' pool holds %s (%zu bytes) now, with %s of the "
               "budget kept for activations and scratch: raise the budget",
               dw->model, k->name, need, k->bytes, pool, vr->pool_bytes, act);
    }
  }
  if (!rc) rc = settle(vr, k);
  if (rc || !vr->prefetch) return rc;
  /* the next block with weights, on the copy stream while b computes;
   * skipped when only evicting b itself would make room */
  int nx = b + 1;
  while (nx < dw->n_blocks && !dw->blk[nx].bytes)
    nx++;
  if (nx == dw->n_blocks || dw->blk[nx].pool_off >= 0) return 0;
  rc = load(vr, dw, nx, b, true);
  return rc == WEFT_ERANGE ? 0 : rc;
}

static sd_devw_entry *entry_of(const sd_devw *dw, const float *host) {
  if (!dw) return NULL;
  int lo = 0, hi = dw->n - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    sd_devw_entry *e = &dw->e[dw->sorted[mid]];
    if (e->host == host) return e;
    if ((uintptr_t)e->host < (uintptr_t)host)
      lo = mid + 1;
    else
      hi = mid - 1;
  }
  return NULL;
}

float *sd_devw_find(const sd_devw *dw, const float *host) {
  const sd_devw_entry *e = entry_of(dw, host);
  if (!e || e->kind == SD_W_HOST) return NULL;
  if (e->kind == SD_W_F32) return (float *)((char *)dw->f32 + e->off);
  const sd_devw_block *k = &dw->blk[e->block];
  if (k->pool_off < 0) return NULL;
  return (float *)((char *)dw->vr->pool + k->pool_off + e->off);
}

int sd_devw_sync(sd_devw *dw, const float *host) {
  sd_devw_entry *e = entry_of(dw, host);
  if (!e) return WEFT_ENOENT;
  dw->syncs++;
  e->src = NULL; /* the master holds the values now (LoRA read them) */
  weft_backend *be = dw->be;
  if (e->kind == SD_W_HOST) return 0;
  /* on the backend's stream: after every queued use of the old values */
  if (e->kind == SD_W_F32) {
    float *d = (float *)((char *)dw->f32 + e->off);
    int rc =
        be->iface->buffer_copy(be, d, e->host, (size_t)e->numel * sizeof(float),
                               WEFT_COPY_HOST_TO_DEVICE);
    if (!rc && dw->f32h) /* and its mirror, after the copy on the stream */
      rc = be->iface->convert(be, (char *)dw->f32h + e->off / 2, WEFT_F16, d,
                              WEFT_F32, e->numel);
    return rc;
  }
  sd_devw_block *k = &dw->blk[e->block];
  if (k->pending) {
    /* an upload in flight still reads the image: let it finish */
    int rc = settle(dw->vr, k);
    if (!rc && be->iface->synchronize) rc = be->iface->synchronize(be);
    if (rc) return rc;
  }
  const size_t bytes = (size_t)e->numel * dw->elem;
  /* the block's image where it has one (or is not resident: it loads from
   * the image next time), else a copy of the entry's alone */
  int rc = k->pool_off < 0 ? ensure_image(dw) : 0;
  char *at = dw->image ? image_at(dw, e) : malloc(bytes);
  if (!rc && !at) rc = WEFT_ENOMEM;
  if (!rc) rc = fill_entry(dw, e, at);
  if (!rc && k->pool_off >= 0)
    rc = be->iface->buffer_copy(be, (char *)dw->vr->pool + k->pool_off + e->off,
                                at, bytes, WEFT_COPY_HOST_TO_DEVICE);
  if (!dw->image) free(at);
  return rc;
}

bool sd_devw_resident(const sd_devw *dw) {
  for (int b = 0; dw && b < dw->n_blocks; b++)
    if (dw->blk[b].bytes && dw->blk[b].pool_off < 0) return false;
  return dw != NULL;
}

int sd_devw_block_index(const sd_devw *dw, const char *name) {
  for (int b = 0; dw && b < dw->n_blocks; b++)
    if (!strcmp(dw->blk[b].name, name)) return b;
  return -1;
}

/* ---- host I/O
 * ------------------------------------------------------------------ */

int sd_act_upload(weft_backend *be, float *dev, const float *host,
                  int64_t n) {
  const weft_dtype dt = weft_backend_act_dtype(be);
  if (dt == WEFT_F32)
    return be->iface->buffer_copy(be, dev, host, (size_t)n * sizeof(float),
                                  WEFT_COPY_HOST_TO_DEVICE);
  float *t = sd_alloc_f32(be, n);
  if (!t) return WEFT_ENOMEM;
  int rc = be->iface->buffer_copy(be, t, host, (size_t)n * sizeof(float),
                                  WEFT_COPY_HOST_TO_DEVICE);
  if (!rc) rc = be->iface->convert(be, dev, dt, t, WEFT_F32, n);
  sd_free(be, t); /* stream-ordered: the conversion has it until done */
  return rc;
}

int sd_act_download(weft_backend *be, float *host, const float *dev,
                    int64_t n) {
  const weft_dtype dt = weft_backend_act_dtype(be);
  if (dt == WEFT_F32)
    return be->iface->buffer_copy(be, host, dev, (size_t)n * sizeof(float),
                                  WEFT_COPY_DEVICE_TO_HOST);
  float *t = sd_alloc_f32(be, n);
  if (!t) return WEFT_ENOMEM;
  int rc = be->iface->convert(be, t, WEFT_F32, dev, dt, n);
  if (!rc)
    rc = be->iface->buffer_copy(be, host, t, (size_t)n * sizeof(float),
                                WEFT_COPY_DEVICE_TO_HOST);
  sd_free(be, t);
  return rc;
}

static int io_in(weft_backend *be, const float *host, int64_t n, bool act,
                 const float **buf, float **tmp) {
  *tmp = NULL;
  if (!host || sd_be_is_host(be)) {
    *buf = host;
    return 0;
  }
  float *d = act ? sd_alloc(be, n) : sd_alloc_f32(be, n);
  if (!d) return WEFT_ENOMEM;
  int rc = act ? sd_act_upload(be, d, host, n)
               : be->iface->buffer_copy(be, d, host, (size_t)n * sizeof(float),
                                        WEFT_COPY_HOST_TO_DEVICE);
  if (rc) {
    sd_free(be, d);
    return rc;
  }
  *buf = *tmp = d;
  return 0;
}

int sd_io_in(weft_backend *be, const float *host, int64_t n, const float **buf,
             float **tmp) {
  return io_in(be, host, n, true, buf, tmp);
}

int sd_io_in_f32(weft_backend *be, const float *host, int64_t n,
                 const float **buf, float **tmp) {
  return io_in(be, host, n, false, buf, tmp);
}

int sd_io_in_dev(weft_backend *be, const float *dev, int64_t n,
                 const float **buf, float **tmp) {
  const weft_dtype dt = weft_backend_act_dtype(be);
  *tmp = NULL;
  *buf = dev;
  if (dt == WEFT_F32 || !dev) return 0;
  float *d = sd_alloc(be, n);
  if (!d) return WEFT_ENOMEM;
  int rc = be->iface->convert(be, d, dt, dev, WEFT_F32, n);
  if (rc) {
    sd_free(be, d);
    return rc;
  }
  *buf = *tmp = d;
  return 0;
}

int sd_io_out(weft_backend *be, float *host, int64_t n, float **buf,
              float **tmp) {
  *tmp = NULL;
  if (sd_be_is_host(be)) {
    *buf = host;
    return 0;
  }
  if (!(*buf = *tmp = sd_alloc(be, n))) return WEFT_ENOMEM;
  return 0;
}

int sd_io_done(weft_backend *be, int rc, float *host, float *tmp, int64_t n) {
  if (!tmp) return rc;
  if (!rc) rc = sd_act_download(be, host, tmp, n);
  sd_free(be, tmp);
  return rc;
}
