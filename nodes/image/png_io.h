/* png_io.h - PNG read/write for the image plugin (libpng), no runtime needed.
 *
 * Reading turns any PNG (1..16-bit gray, gray+alpha, RGB, RGBA, palette,
 * interlaced or not) into float RGB in 0..1 plus an alpha plane when the file
 * carries transparency (an alpha channel or a tRNS chunk).  Every libpng error
 * becomes a message naming the file; nothing longjmps out of this file.
 *
 * Writing makes an 8-bit gray/RGB/RGBA PNG from floats the way ComfyUI's
 * SaveImage does (np.clip(255 * x, 0, 255).astype(np.uint8): truncation),
 * with text chunks, at zlib level 4, into a temporary file in the target
 * directory that is fsynced and then renamed, so no reader ever sees half a
 * file. */
#ifndef WEFT_IMAGE_PNG_IO_H
#define WEFT_IMAGE_PNG_IO_H

#include <stddef.h>
#include <stdint.h>

/* Refused on read: more than this per side, or more pixels in all. */
#define WEFT__PNG_MAX_SIDE 16384
#define WEFT__PNG_MAX_PIXELS ((int64_t)1 << 28)

/* Compression level ComfyUI's SaveImage uses. */
#define WEFT__PNG_LEVEL 4

/* A text chunk: tEXt, zTXt or iTXt on read (value as stored: Latin-1 for
 * tEXt/zTXt, UTF-8 for iTXt); on write a pure-ASCII value goes into tEXt and
 * anything else into an uncompressed iTXt (UTF-8), as Pillow does. */
typedef struct weft__png_text {
  char *key;
  char *value;
} weft__png_text;

typedef struct weft__png_image {
  int32_t width, height;
  float *rgb;        /* [height][width][3], 0..1 */
  float *alpha;      /* [height][width], 0..1 (1 = opaque), or NULL: no alpha */
  int32_t bit_depth; /* of the file: 1, 2, 4, 8 or 16 */
  int32_t color_type;   /* of the file: PNG_COLOR_TYPE_* */
  weft__png_text *text; /* [n_text] */
  int32_t n_text;
} weft__png_image;

/* Reads the PNG at path into *img.  Returns 0, or WEFT_ENOENT (no such
 * file), WEFT_EIO (cannot open or read), WEFT_EFORMAT (not a PNG, corrupt,
 * truncated, too large) or WEFT_ENOMEM, with a message naming path in err.
 * On success img owns its buffers (free with weft__png_image_free); on
 * failure img is zeroed.  err may be NULL. */
int weft__png_read(const char *path, weft__png_image *img, char *err,
                   size_t errlen);
void weft__png_image_free(weft__png_image *img);

/* The same from n bytes in memory; name stands for the source in messages.
 * Never returns WEFT_ENOENT. */
int weft__png_read_mem(const void *data, size_t n, const char *name,
                       weft__png_image *img, char *err, size_t errlen);

/* The text chunk named key, or NULL (borrowed from img). */
const char *weft__png_text_get(const weft__png_image *img, const char *key);

/* Pixels to write: height rows of width pixels of channels floats
 * (1 = gray, 3 = RGB, 4 = RGBA), row-major and contiguous. */
typedef struct weft__png_pixels {
  const float *data;
  int32_t width, height, channels;
} weft__png_pixels;

/* The 8-bit value weft writes for x: ComfyUI's clip(255 * x, 0, 255) then
 * truncation, computed in float32 like numpy does; NaN gives 0. */
uint8_t weft__png_to_u8(float x);

/* Encodes px into a new temporary file in dir (a hidden ".weft-*.tmp" name),
 * flushed and fsynced, and writes its path into tmp_path.  Returns 0 or a
 * WEFT_E* code with a message in err; on failure nothing is left behind.
 * The caller publishes the file with weft__png_publish or unlinks it. */
int weft__png_write_temp(const char *dir, const weft__png_pixels *px,
                         const weft__png_text *text, int32_t n_text, int level,
                         char *tmp_path, size_t tmp_len, char *err,
                         size_t errlen);

/* Renames tmp_path to path (same directory) and fsyncs the directory.  With
 * noreplace an existing path is left alone and WEFT_EDUP is returned (tmp
 * stays, for the caller to retry under another name).  Other failures give
 * WEFT_EIO with a message. */
int weft__png_publish(const char *tmp_path, const char *path, int noreplace,
                      char *err, size_t errlen);

/* weft__png_write_temp into path's directory + weft__png_publish (replacing
 * an existing file).  level: 0..9. */
int weft__png_write(const char *path, const weft__png_pixels *px,
                    const weft__png_text *text, int32_t n_text, int level,
                    char *err, size_t errlen);

#endif
