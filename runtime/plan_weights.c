/* plan_weights.c - which weight blocks are resident at each step under a
 * memory budget: load on use, evict the block needed furthest in the future
 * (Belady's rule; the schedule is known ahead, unlike ComfyUI's
 * least-recently-loaded order).  O(steps x blocks). */
#include <stdlib.h>
#include <string.h>

#include "weft/plan.h"

void weft_residency_free(weft_plan_step *steps, int32_t n_steps) {
  for (int32_t s = 0; steps && s < n_steps; s++) {
    free(steps[s].evict);
    steps[s].evict = NULL;
    steps[s].n_evict = 0;
  }
}

int weft_residency_plan(const uint64_t *bytes, int32_t n_blocks,
                        weft_plan_step *steps, int32_t n_steps,
                        uint64_t budget, weft_residency_stats *stats) {
  if (n_blocks < 0 || n_steps < 0 || (n_steps && (!steps || !bytes)))
    return WEFT_EINVAL;
  for (int32_t s = 0; s < n_steps; s++) {
    if (steps[s].block < 0 || steps[s].block >= n_blocks) return WEFT_EINVAL;
    if (bytes[steps[s].block] > budget) return WEFT_ERANGE;
    steps[s].load = false, steps[s].n_evict = 0, steps[s].evict = NULL;
  }
  /* next[s]: the next step using the same block, n_steps for none */
  int32_t *next = malloc((size_t)(n_steps + 1) * sizeof *next);
  int32_t *seen = malloc((size_t)(n_blocks + 1) * sizeof *seen);
  int32_t *next_use = malloc((size_t)(n_blocks + 1) * sizeof *next_use);
  bool *res = calloc((size_t)(n_blocks + 1), sizeof *res);
  if (!next || !seen || !next_use || !res) {
    free(next), free(seen), free(next_use), free(res);
    return WEFT_ENOMEM;
  }
  for (int32_t b = 0; b < n_blocks; b++) seen[b] = n_steps;
  for (int32_t s = n_steps - 1; s >= 0; s--) {
    next[s] = seen[steps[s].block];
    seen[steps[s].block] = s;
  }
  weft_residency_stats st = {0};
  uint64_t resident = 0;
  int rc = 0;
  for (int32_t s = 0; s < n_steps && !rc; s++) {
    int32_t b = steps[s].block;
    next_use[b] = next[s];
    if (res[b]) continue;
    while (resident + bytes[b] > budget) {
      /* furthest next use; on a tie the larger block frees more */
      int32_t v = -1;
      for (int32_t c = 0; c < n_blocks; c++)
        if (res[c] && c != b &&
            (v < 0 || next_use[c] > next_use[v] ||
             (next_use[c] == next_use[v] && bytes[c] > bytes[v])))
          v = c;
      int32_t *e = realloc(steps[s].evict,
                           (size_t)(steps[s].n_evict + 1) * sizeof *e);
      if (!e) {
        rc = WEFT_ENOMEM;
        break;
      }
      steps[s].evict = e;
      e[steps[s].n_evict++] = v;
      res[v] = false;
      resident -= bytes[v];
    }
    if (rc) break;
    res[b] = true;
    resident += bytes[b];
    steps[s].load = true;
    st.loads++;
    st.loaded_bytes += bytes[b];
    if (resident > st.peak_resident) st.peak_resident = resident;
  }
  free(next), free(seen), free(next_use), free(res);
  if (rc)
    weft_residency_free(steps, n_steps);
  else if (stats)
    *stats = st;
  return rc;
}
