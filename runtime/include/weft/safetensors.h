/* safetensors.h - reading and writing safetensors files.
 *
 * The reader memory-maps the file and validates every header field before
 * anything is used: header length within the file, JSON that parses, known
 * dtypes, shapes whose element count times dtype size equals the byte range,
 * data_offsets inside the data section, no overlaps, and ranges that cover
 * the data section exactly.  Any violation fails the open with a message
 * naming the file and the tensor key.
 *
 * The format does not align tensor data: weft_st_tensor.data (and views made
 * by weft_st_view) may be unaligned for the dtype in a foreign file, so
 * readers copy or convert (memcpy) instead of dereferencing typed pointers.
 * Files from the Python library and from this writer are aligned in
 * practice (header padded to 8, larger dtypes first). */
#ifndef WEFT_SAFETENSORS_H
#define WEFT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "weft/plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifndef WEFT_API
#define WEFT_API __attribute__((visibility("default")))
#endif

/* Every dtype the format defines; weft_tensor holds the first six. */
typedef enum weft_st_dtype {
  WEFT_ST_F32 = 0,
  WEFT_ST_F16,
  WEFT_ST_BF16,
  WEFT_ST_I32,
  WEFT_ST_I64,
  WEFT_ST_U8,
  WEFT_ST_F64,
  WEFT_ST_I8,
  WEFT_ST_I16,
  WEFT_ST_U16,
  WEFT_ST_U32,
  WEFT_ST_U64,
  WEFT_ST_BOOL,
  WEFT_ST_F8_E4M3,
  WEFT_ST_F8_E5M2,
  WEFT_ST_DTYPE_COUNT
} weft_st_dtype;

typedef struct weft_st_tensor {
  const char *key;
  weft_st_dtype dtype;
  int32_t ndim;
  int64_t shape[WEFT_MAX_DIMS];
  uint64_t offset; /* from the start of the data section */
  uint64_t nbytes;
  const void *data; /* into the mapping */
} weft_st_tensor;

typedef struct weft_st_file weft_st_file;

/* Opens and validates path.  On failure returns a negative WEFT_E* code
 * (WEFT_EFORMAT for a malformed file, WEFT_EIO / WEFT_ENOENT for the OS) and
 * writes "path: what is wrong" into err.  (transfer full) */
WEFT_API int weft_st_open(const char *path, weft_st_file **out, char *err,
                          size_t errlen);
/* Same over a buffer the caller keeps alive (fuzzing, embedded files). */
WEFT_API int weft_st_open_memory(const void *buf, size_t len, const char *name,
                                 weft_st_file **out, char *err, size_t errlen);
WEFT_API void weft_st_close(weft_st_file *f);

WEFT_API int32_t weft_st_count(const weft_st_file *f);
/* Tensors in file order (by offset). (transfer none) */
WEFT_API const weft_st_tensor *weft_st_at(const weft_st_file *f, int32_t i);
WEFT_API const weft_st_tensor *weft_st_find(const weft_st_file *f,
                                            const char *key);
WEFT_API int32_t weft_st_meta_count(const weft_st_file *f);
/* Metadata entries sorted by key; i in [0, weft_st_meta_count). */
WEFT_API const char *weft_st_meta_key(const weft_st_file *f, int32_t i);
WEFT_API const char *weft_st_meta_value(const weft_st_file *f, int32_t i);
/* The value of a __metadata__ key, or NULL. (transfer none) */
WEFT_API const char *weft_st_meta(const weft_st_file *f, const char *key);
WEFT_API const char *weft_st_path(const weft_st_file *f);

WEFT_API const char *weft_st_dtype_name(weft_st_dtype dt); /* "F16" */
WEFT_API size_t weft_st_dtype_size(weft_st_dtype dt);
/* The weft_dtype of a tensor, or -1 when weft_tensor cannot hold it. */
WEFT_API int weft_st_to_dtype(weft_st_dtype dt);
/* Fills a (read-only) weft_tensor view of t; WEFT_EUNSUPPORTED for dtypes
 * weft_tensor cannot hold. */
WEFT_API int weft_st_view(const weft_st_tensor *t, weft_tensor *view);

/* Guesses the model family from key names (and the UNet's cross-attention
 * width): "SD1.x", "SD2.x", "SDXL", "SD3", "LoRA", "ControlNet", "VAE",
 * "CLIP", "UNet" (a diffusers UNet folder's weights), or "unknown".
 * (static string) */
WEFT_API const char *weft_st_guess_family(const weft_st_file *f);

/* ---- Writer ---- */
typedef struct weft_st_writer weft_st_writer;
WEFT_API int weft_st_writer_new(weft_st_writer **out);
/* Adds a tensor; key is copied, data (nbytes = numel * dtype size; may be
 * NULL when 0) is borrowed until save.  WEFT_EDUP for a key already added,
 * WEFT_EINVAL for a bad dtype/shape, "__metadata__" or non-UTF-8 key,
 * WEFT_ERANGE when the byte size overflows. */
WEFT_API int weft_st_writer_add(weft_st_writer *w, const char *key,
                                weft_st_dtype dtype, int32_t ndim,
                                const int64_t *shape, const void *data);
/* Sets a __metadata__ entry (copied; a second call for a key replaces it). */
WEFT_API int weft_st_writer_meta(weft_st_writer *w, const char *key,
                                 const char *value);
/* Writes to a temporary file beside path, fsyncs, renames over path; on any
 * error the temporary is removed and path is untouched.  Tensors are laid out
 * as the Python library does (larger dtypes first, then by key), the header
 * is padded with spaces to a multiple of 8.  The new file gets the mode of
 * the file it replaces, else 0644.  May be called more than once. */
WEFT_API int weft_st_writer_save(weft_st_writer *w, const char *path, char *err,
                                 size_t errlen);
WEFT_API void weft_st_writer_free(weft_st_writer *w);

#ifdef __cplusplus
}
#endif
#endif
