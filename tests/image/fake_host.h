/* fake_host.h - a minimal weft_host for driving node plugins in unit tests,
 * without the runtime: refcounted values, tensors on the CPU, captured
 * errors, input/output directories and a cancellation switch. */
#ifndef WEFT_TEST_FAKE_HOST_H
#define WEFT_TEST_FAKE_HOST_H

#include "weft/plugin.h"

typedef struct fake_run {
  weft_host host;
  char error[4096]; /* the last host->error() message */
  int n_errors;
  const char *input_dir;  /* NULL: none */
  const char *output_dir; /* NULL: none */
  int cancel_after;       /* is_cancelled() turns true after this many polls;
                             -1 never */
  int polls;
  int64_t progress_k, progress_n; /* last progress() */
  int n_progress;
} fake_run;

/* The entry point of the plugin linked into the test binary. */
const weft_plugin *weft_plugin_entry(const weft_host *host);

void fake_init(fake_run *r);
/* The node named op of the linked plugin, or NULL. */
const weft_node_def *fake_node(fake_run *r, const char *op);

/* New values, one reference each (release with fake_release). */
weft_value *fake_tensor(weft_type type, int ndim, const int64_t *shape,
                        const float *data /* copied; NULL: zeros */);
weft_value *fake_image(int64_t b, int64_t h, int64_t w, int64_t c,
                       const float *data);
weft_value *fake_string(const char *s);
weft_value *fake_int(int64_t x);
weft_value *fake_float(double x);
weft_value *fake_enum(const weft_node_def *def, const char *param,
                      const char *choice); /* aborts on an unknown one */
void fake_release(weft_value *v);

/* Accessors for checking outputs. */
const weft_tensor *fake_tensor_of(const weft_value *v);
const char *fake_string_of(const weft_value *v);
weft_type fake_type_of(const weft_value *v);
int fake_refs(const weft_value *v);
/* Values alive now (all fake_* values and those the plugin made). */
int fake_live_values(void);

/* Params by name: a NULL-terminated list of name, value pairs; every param
 * not named gets its default.  Runs def->run with the given inputs
 * (def->n_inputs of them) and stores outputs into outputs[def->n_outputs]
 * (NULL when run left one unset).  The params made here are released;
 * inputs stay the caller's.  Returns run's code. */
int fake_run_node(fake_run *r, const weft_node_def *def, weft_value **inputs,
                  weft_value **outputs, ...);
/* The same for def->fingerprint. */
uint64_t fake_fingerprint(fake_run *r, const weft_node_def *def, ...);

#endif
