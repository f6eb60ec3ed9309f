/* fuzz_batch.c - libFuzzer target for what `weft batch` reads from users:
 * manifests (JSON lines and CSV), --sweep values and --output templates.
 * Any bytes give a result or a message, never a crash or a leak.  The
 * first byte picks the parser: 'J' JSON lines, 'C' CSV, 'T' by content,
 * 'S' a sweep, anything else a template. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  char err[4096];
  const char *text = (const char *)data + 1;
  size_t len = size - 1;
  if (data[0] == 'J' || data[0] == 'C' || data[0] == 'T') {
    const char *name = data[0] == 'J'   ? "f.jsonl"
                       : data[0] == 'C' ? "f.csv"
                                        : "f.txt";
    weft__batch_manifest m;
    if (!weft__batch_manifest_parse(name, text, len, &m, err, sizeof err)) {
      /* every value belongs to a known column and a line */
      for (int r = 0; r < m.n_rows; r++)
        for (int k = 0; k < m.rows[r].n; k++)
          if (m.rows[r].col[k] < 0 || m.rows[r].col[k] >= m.n_cols ||
              m.rows[r].line < 1 || !m.rows[r].val[k])
            abort();
    } else if (strncmp(err, name, strlen(name)) &&
               strcmp(err, "out of memory")) {
      abort(); /* every message names the file */
    }
    weft__batch_manifest_free(&m);
    return 0;
  }
  char *s = malloc(len + 1);
  if (!s) return 0;
  memcpy(s, text, len);
  s[len] = 0;
  if (data[0] == 'S') {
    weft__batch_sweep sw;
    if (!weft__batch_sweep_parse(s, &sw, err, sizeof err))
      weft__batch_sweep_free(&sw);
  } else {
    static const char *const names[] = {"prompt", "seed", "cfg"};
    weft__batch_template t;
    if (!weft__batch_template_parse(s, names, 3, &t, err, sizeof err)) {
      const char *vals[] = {"A red/circle", "42", NULL};
      char *out = weft__batch_template_render(&t, 12345, vals);
      if (out) weft__batch_name_check(out, err, sizeof err);
      free(out);
      weft__batch_template_free(&t);
    }
  }
  free(s);
  return 0;
}
