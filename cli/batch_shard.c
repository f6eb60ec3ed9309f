/* batch_shard.c - which share of a batch this process runs: `--shard I/N`,
 * or from the environment of a Slurm array task or a Kubernetes indexed
 * Job. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"

/* More shards than this is a typo, not a cluster. */
#define MAX_SHARDS 10000000

/* A non-negative decimal integer, whole string. */
static bool number(const char *s, int64_t *out) {
  if (!s || !isdigit((unsigned char)*s)) return false;
  char *end;
  long long x = strtoll(s, &end, 10);
  if (*end || x > MAX_SHARDS * 100LL) return false;
  *out = x;
  return true;
}

/* label names the source in messages ("--shard 5/4", "WEFT_SHARD=5/4"). */
static int parse_pair(const char *label, const char *arg, weft__batch_shard *s,
                      char *err, size_t errlen) {
  const char *slash = strchr(arg, '/');
  char head[32];
  size_t n = slash ? (size_t)(slash - arg) : 0;
  if (!slash || n >= sizeof head)
    return weft__batch_fail(err, errlen, WEFT_ESYNTAX,
                            "%s: expected I/N, e.g. 0/4 (shards count from 0)",
                            label);
  memcpy(head, arg, n);
  head[n] = 0;
  int64_t i, c;
  if (!number(head, &i) || !number(slash + 1, &c) || c < 1 || c > MAX_SHARDS)
    return weft__batch_fail(
        err, errlen, WEFT_ESYNTAX,
        "%s: expected I/N with whole numbers, N >= 1, e.g. 0/4", label);
  if (i >= c)
    return weft__batch_fail(
        err, errlen, WEFT_ERANGE,
        "%s: shard %lld does not exist; shards of %lld count from "
        "0 to %lld",
        label, (long long)i, (long long)c, (long long)c - 1);
  s->index = i;
  s->count = c;
  return 0;
}

int weft__batch_shard_parse(const char *arg, weft__batch_shard *s, char *err,
                            size_t errlen) {
  memset(s, 0, sizeof *s);
  char label[300];
  snprintf(label, sizeof label, "--shard %s", arg);
  int r = parse_pair(label, arg, s, err, errlen);
  if (!r) snprintf(s->source, sizeof s->source, "--shard");
  return r;
}

static int env_num(weft__batch_getenv get, void *user, const char *name,
                   int64_t *out, bool *present, char *err, size_t errlen) {
  const char *v = get(name, user);
  *present = v && *v;
  if (!*present) return 0;
  if (!number(v, out))
    return weft__batch_fail(err, errlen, WEFT_ESYNTAX,
                            "%s=%s: expected a non-negative whole number", name,
                            v);
  return 0;
}

static int from_slurm(weft__batch_getenv get, void *user, int64_t id,
                      weft__batch_shard *s, char *err, size_t errlen) {
  int64_t count = 0, min = 0, max = 0, step = 1;
  bool has_count, has_min, has_max, has_step;
  int r;
  if ((r = env_num(get, user, "SLURM_ARRAY_TASK_COUNT", &count, &has_count, err,
                   errlen)) ||
      (r = env_num(get, user, "SLURM_ARRAY_TASK_MIN", &min, &has_min, err,
                   errlen)) ||
      (r = env_num(get, user, "SLURM_ARRAY_TASK_MAX", &max, &has_max, err,
                   errlen)) ||
      (r = env_num(get, user, "SLURM_ARRAY_TASK_STEP", &step, &has_step, err,
                   errlen)))
    return r;
  if (step < 1) step = 1;
  if (!has_count) {
    if (!has_min || !has_max || max < min)
      return weft__batch_fail(
          err, errlen, WEFT_EINVAL,
          "SLURM_ARRAY_TASK_ID=%lld is set but neither "
          "SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MIN and _MAX: "
          "pass --shard I/N",
          (long long)id);
    count = (max - min) / step + 1;
  }
  /* task ids run min, min+step, ...: the shard is the position in that */
  int64_t off = id - min;
  if (count < 1 || off < 0 || off % step || off / step >= count)
    return weft__batch_fail(
        err, errlen, WEFT_ERANGE,
        "SLURM_ARRAY_TASK_ID=%lld does not fit an array of %lld "
        "task%s from %lld in steps of %lld (an array with gaps, like "
        "--array=1,3,7?): pass --shard I/N",
        (long long)id, (long long)count, count == 1 ? "" : "s", (long long)min,
        (long long)step);
  if (count > MAX_SHARDS)
    return weft__batch_fail(err, errlen, WEFT_ERANGE,
                            "SLURM_ARRAY_TASK_COUNT=%lld: too many shards",
                            (long long)count);
  s->index = off / step;
  s->count = count;
  snprintf(s->source, sizeof s->source,
           "SLURM_ARRAY_TASK_ID=%lld, min %lld, step %lld, count %lld",
           (long long)id, (long long)min, (long long)step, (long long)count);
  return 0;
}

int weft__batch_shard_from_env(weft__batch_getenv get, void *user,
                               weft__batch_shard *s, char *err, size_t errlen) {
  memset(s, 0, sizeof *s);
  s->count = 1;
  snprintf(s->source, sizeof s->source, "not sharded");
  const char *w = get("WEFT_SHARD", user);
  if (w && *w) {
    char label[300];
    snprintf(label, sizeof label, "WEFT_SHARD=%s", w);
    int r = parse_pair(label, w, s, err, errlen);
    if (!r) snprintf(s->source, sizeof s->source, "WEFT_SHARD");
    return r;
  }
  int64_t id;
  bool has;
  int r = env_num(get, user, "SLURM_ARRAY_TASK_ID", &id, &has, err, errlen);
  if (r) return r;
  if (has) return from_slurm(get, user, id, s, err, errlen);
  if ((r = env_num(get, user, "JOB_COMPLETION_INDEX", &id, &has, err, errlen)))
    return r;
  if (has) {
    int64_t count;
    bool has_count;
    if ((r = env_num(get, user, "WEFT_SHARD_COUNT", &count, &has_count, err,
                     errlen)))
      return r;
    if (!has_count || count < 1 || count > MAX_SHARDS)
      return weft__batch_fail(
          err, errlen, WEFT_EINVAL,
          "JOB_COMPLETION_INDEX=%lld is set (a Kubernetes indexed "
          "Job) but WEFT_SHARD_COUNT is not: set it to the Job's "
          "completions, or pass --shard I/N",
          (long long)id);
    if (id >= count)
      return weft__batch_fail(err, errlen, WEFT_ERANGE,
                              "JOB_COMPLETION_INDEX=%lld is not below "
                              "WEFT_SHARD_COUNT=%lld",
                              (long long)id, (long long)count);
    s->index = id;
    s->count = count;
    snprintf(s->source, sizeof s->source,
             "JOB_COMPLETION_INDEX=%lld, WEFT_SHARD_COUNT=%lld", (long long)id,
             (long long)count);
  }
  return 0;
}
