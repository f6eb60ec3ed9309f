/* probe.h - what the graph-running model tests share (test_lora.c,
 * test_controlnet.c, test_img2img.c; probe.c is compiled into each): the
 * sd15_extras fixtures, the ProbeLatent and ProbeImage nodes, an in-process
 * graph runner, probe files, PNG helpers and the weft command.
 *
 * A probe node writes its value as "out" to <output dir>/<out>.safetensors,
 * where `out` is its parameter; the runner sets both the output and the
 * input directory to the case's temp dir, so a test writes the pictures a
 * graph loads and reads back what its probes wrote. */
#ifndef WEFT_TEST_PROBE_H
#define WEFT_TEST_PROBE_H

#include <stdint.h>

#include "test.h"
#include "weft/safetensors.h"
#include "weft/weft.h"

/* tests/fixtures/sd15_extras/rel, opened (caller closes) */
weft_st_file *ex_open(const char *rel);
/* f's tensor key; fails the case when it is missing */
const weft_st_tensor *ex_get(weft_st_file *f, const char *key);
/* f's float32 tensor key (numel elements unless 0), borrowed from f */
const float *ex_ref(weft_st_file *f, const char *key, int64_t numel);

/* A probe of the caller's own (a node's run): writes data [shape] as "out"
 * (and noise_mask when not NULL) to <output dir>/<name>.safetensors and
 * makes its path the node's output 0.  Returns 0 or the writer's error,
 * reported through the host. */
int probe_save(weft_call *c, const char *name, int ndim, const int64_t *shape,
               const float *data, const weft_tensor *noise_mask);

/* Warnings and failures a run logged, one a line. */
typedef struct probe_log {
  char text[16384];
} probe_log;

/* Runs tests/models/graphs/<name> in process: the built plugins, the
 * ProbeLatent / ProbeImage nodes and extra (may be NULL: the caller's own
 * probes), 2 threads.  The input "ckpt" is set to the tiny checkpoint
 * (fixtures/sd15_tiny/sd15_tiny.safetensors), then sets ("name=value",
 * NULL-terminated, may be NULL).  Returns the run's code (errors are
 * printed); log (may be NULL) gets the run's log. */
int probe_run_graph(const char *name, const char *const *sets,
                    const weft_plugin *extra, probe_log *log);

/* <temp dir>/<name>.safetensors (a probe's file), opened (caller closes) */
weft_st_file *probe_file(const char *name);
/* its "out", numel floats, copied (caller frees) */
float *probe_read(const char *name, int64_t numel);

/* A U8 [H, W, 3] fixture image written as <temp dir>/<name>, a PNG whose
 * levels read back as the same u8; with mask ([H, W]; may be NULL) RGBA
 * with alpha 1 - mask, as LoadImage's MASK expects. */
void probe_write_png(const weft_st_tensor *t, const float *mask,
                     const char *name);

/* The 64x64 PNG at png against a U8 [64, 64, 3] reference: every channel
 * value within tol levels. */
void probe_compare_png(const char *png, const weft_st_tensor *want, int tol,
                       const char *what);

/* An unscaled LATENT of n values against a reference: the sampler
 * trajectory tolerance 1e-3 + 1e-5 |x| in model scale (test_trajectories.c),
 * divided by the scale 0.18215. */
void probe_check_latent(const float *got, const float *want, int64_t n,
                        const char *what);

/* weft run with args (NULL-terminated, after "run"); exit code 0 asserted.
 * Its stderr into *err (caller frees; may be NULL). */
void probe_weft_run(const char *const *args, char **err);
/* weft validate graphs/<graph> (the repository's graphs/ folder) exits 0 */
void probe_weft_validate(const char *graph);

#endif
