/* png_io.c - PNG read/write with libpng: errors as messages, atomic writes. */
#include "png_io.h"

#include <errno.h>
#include <fcntl.h>
#include <png.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "png_alloc.h"
#include "weft/error.h"

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || !errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* ---- reading ------------------------------------------------------------ */

/* Everything the read path allocates hangs off this struct, which lives in
 * the caller's frame: after a longjmp the cleanup finds it intact. */
typedef struct read_ctx {
  const char *path;
  FILE *fp;
  png_structp png;
  png_infop info;
  uint8_t *pixels;
  png_bytep *rows;
  weft__png_image *img;
  char msg[256];     /* the first error libpng (or our read callback) raised */
  int code;          /* WEFT_E* for that error */
  char warning[128]; /* the last warning: often the detail of an error */
  uint64_t src_size; /* bytes in the source, 0 if unknown */
} read_ctx;

static void on_read_error(png_structp png, png_const_charp msg) {
  read_ctx *c = png_get_error_ptr(png);
  if (!c->msg[0]) {
    if (c->warning[0])
      snprintf(c->msg, sizeof c->msg, "%s (%s)", msg, c->warning);
    else
      snprintf(c->msg, sizeof c->msg, "%s", msg);
    c->code = WEFT_EFORMAT;
  }
  png_longjmp(png, 1);
}

/* Benign problems (a bad ancillary CRC, trailing data) are not worth a
 * failed run: libpng recovered.  The text is kept for a following error
 * ("Invalid IHDR data" comes after "Image width is zero in IHDR"). */
static void on_read_warning(png_structp png, png_const_charp msg) {
  read_ctx *c = png_get_error_ptr(png);
  snprintf(c->warning, sizeof c->warning, "%s", msg);
}

static void on_warning(png_structp png, png_const_charp msg) {
  (void)png, (void)msg;
}

static void on_read(png_structp png, png_bytep data, size_t len) {
  read_ctx *c = png_get_io_ptr(png);
  size_t n = fread(data, 1, len, c->fp);
  if (n != len) {
    if (ferror(c->fp)) {
      snprintf(c->msg, sizeof c->msg, "read error: %s", strerror(errno));
      c->code = WEFT_EIO;
    } else {
      snprintf(c->msg, sizeof c->msg, "unexpected end of file (truncated)");
      c->code = WEFT_EFORMAT;
    }
    png_error(png, c->msg);
  }
}

static int copy_text(read_ctx *c) {
  png_textp t = NULL;
  int n = 0;
  png_get_text(c->png, c->info, &t, &n);
  if (n <= 0) return 0;
  c->img->text = calloc((size_t)n, sizeof *c->img->text);
  if (!c->img->text) return WEFT_ENOMEM;
  for (int i = 0; i < n; i++) {
    weft__png_text *d = &c->img->text[c->img->n_text];
    d->key = strdup(t[i].key ? t[i].key : "");
    d->value = strdup(t[i].text ? t[i].text : "");
    c->img->n_text++;
    if (!d->key || !d->value) return WEFT_ENOMEM;
  }
  return 0;
}

/* One decoded row (8 or 16 bits, RGB or RGBA) to floats. */
static void convert_row(const uint8_t *r, png_uint_32 w, int ch, int depth,
                        float *rgb, float *alpha) {
  for (png_uint_32 x = 0; x < w; x++)
    for (int k = 0; k < ch; k++) {
      float v;
      if (depth == 16) {
        const uint8_t *p = r + ((size_t)x * ch + k) * 2; /* big endian */
        v = (float)((p[0] << 8) | p[1]) / 65535.0f;
      } else {
        v = (float)r[(size_t)x * ch + k] / 255.0f;
      }
      if (k < 3)
        rgb[(size_t)x * 3 + k] = v;
      else
        alpha[x] = v;
    }
}

static int read_impl(read_ctx *c) {
  weft__png_image *img = c->img;
  c->png =
      png_create_read_struct_2(PNG_LIBPNG_VER_STRING, c, on_read_error,
                               on_read_warning, c, weft__png_malloc,
                               weft__png_free);
  if (!c->png) return WEFT_ENOMEM;
  c->info = png_create_info_struct(c->png);
  if (!c->info) return WEFT_ENOMEM;
  if (setjmp(png_jmpbuf(c->png))) return c->code ? c->code : WEFT_EFORMAT;

  png_set_read_fn(c->png, c, on_read);
  png_set_sig_bytes(c->png, 8);
  /* Our own limits below give the clearer message; lift libpng's. */
  png_set_user_limits(c->png, 0x7fffffffu, 0x7fffffffu);
  /* Decompressed text up to 64 MiB, at most 1000 ancillary chunks kept
   * (weft__png_malloc bounds the rest). */
  png_set_chunk_malloc_max(c->png, WEFT_PNG_ALLOC_MAX);
  png_set_chunk_cache_max(c->png, 1000);
  png_read_info(c->png, c->info);

  png_uint_32 w = 0, h = 0;
  int depth = 0, ctype = 0, interlace = 0;
  png_get_IHDR(c->png, c->info, &w, &h, &depth, &ctype, &interlace, NULL, NULL);
  if (w > WEFT__PNG_MAX_SIDE || h > WEFT__PNG_MAX_SIDE ||
      (int64_t)w * h > WEFT__PNG_MAX_PIXELS) {
    snprintf(c->msg, sizeof c->msg,
             "image is %ux%u pixels; weft refuses more than %d per side or "
             "2^28 in all",
             (unsigned)w, (unsigned)h, WEFT__PNG_MAX_SIDE);
    return WEFT_EFORMAT;
  }
  /* Deflate packs at most 1032:1, so a file of src_size bytes holds at most
   * that many times its size in raw rows.  Checked before allocating, so a
   * tiny file cannot claim a giant image and have us allocate for it. */
  uint64_t raw = ((uint64_t)png_get_rowbytes(c->png, c->info) + 1) * h;
  if (c->src_size && raw > c->src_size * 1032 + 4096) {
    snprintf(c->msg, sizeof c->msg,
             "%ux%u pixels need %llu bytes of image data; a %llu-byte file "
             "cannot hold them (truncated or corrupt)",
             (unsigned)w, (unsigned)h, (unsigned long long)raw,
             (unsigned long long)c->src_size);
    return WEFT_EFORMAT;
  }
  img->width = (int32_t)w;
  img->height = (int32_t)h;
  img->bit_depth = depth;
  img->color_type = ctype;

  if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(c->png);
  if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8)
    png_set_expand_gray_1_2_4_to_8(c->png);
  if (png_get_valid(c->png, c->info, PNG_INFO_tRNS))
    png_set_tRNS_to_alpha(c->png);
  if (ctype == PNG_COLOR_TYPE_GRAY || ctype == PNG_COLOR_TYPE_GRAY_ALPHA)
    png_set_gray_to_rgb(c->png);
  png_set_interlace_handling(c->png);
  png_read_update_info(c->png, c->info);

  int ch = png_get_channels(c->png, c->info);
  int out_depth = png_get_bit_depth(c->png, c->info);
  size_t rowbytes = png_get_rowbytes(c->png, c->info);
  if ((ch != 3 && ch != 4) || (out_depth != 8 && out_depth != 16) ||
      rowbytes != (size_t)w * ch * (out_depth / 8)) {
    snprintf(c->msg, sizeof c->msg,
             "unexpected layout after conversion (%d channels, %d bits)", ch,
             out_depth);
    return WEFT_EINTERNAL;
  }

  /* Interlaced images need every row at once; others are converted row by
   * row through one buffer. */
  size_t npix = (size_t)w * h;
  size_t nrows = interlace != PNG_INTERLACE_NONE ? h : 1;
  c->pixels = malloc(rowbytes * nrows);
  c->rows = malloc(sizeof *c->rows * nrows);
  img->rgb = malloc(npix * 3 * sizeof *img->rgb);
  if (ch == 4) img->alpha = malloc(npix * sizeof *img->alpha);
  if (!c->pixels || !c->rows || !img->rgb || (ch == 4 && !img->alpha)) {
    snprintf(c->msg, sizeof c->msg, "out of memory for %ux%u pixels",
             (unsigned)w, (unsigned)h);
    return WEFT_ENOMEM;
  }
  for (size_t y = 0; y < nrows; y++)
    c->rows[y] = c->pixels + rowbytes * y;
  if (nrows > 1) png_read_image(c->png, c->rows);
  for (png_uint_32 y = 0; y < h; y++) {
    if (nrows == 1) png_read_row(c->png, c->rows[0], NULL);
    convert_row(c->rows[nrows > 1 ? y : 0], w, ch, out_depth,
                img->rgb + (size_t)y * w * 3,
                img->alpha ? img->alpha + (size_t)y * w : NULL);
  }
  /* Text chunks after IDAT land in the same info struct. */
  png_read_end(c->png, c->info);
  int rc = copy_text(c);
  if (rc) snprintf(c->msg, sizeof c->msg, "out of memory for text chunks");
  return rc;
}

/* Reads from fp (closed here); name is what messages call the source. */
static int read_fp(FILE *fp, const char *name, uint64_t src_size,
                   weft__png_image *img, char *err, size_t errlen) {
  uint8_t sig[8];
  size_t got = fread(sig, 1, sizeof sig, fp);
  if (got < sizeof sig || png_sig_cmp(sig, 0, sizeof sig) != 0) {
    int ioerr = ferror(fp);
    fclose(fp);
    if (ioerr) {
      set_err(err, errlen, "cannot read '%s'", name);
      return WEFT_EIO;
    }
    if (got < sizeof sig)
      set_err(err, errlen,
              "'%s' is not a PNG file: only %zu bytes, shorter than the PNG "
              "signature",
              name, got);
    else
      set_err(err, errlen, "'%s' is not a PNG file (bad signature)", name);
    return WEFT_EFORMAT;
  }
  read_ctx c;
  memset(&c, 0, sizeof c);
  c.path = name;
  c.fp = fp;
  c.img = img;
  c.src_size = src_size;
  int rc = read_impl(&c);
  if (c.png) png_destroy_read_struct(&c.png, c.info ? &c.info : NULL, NULL);
  free(c.rows);
  free(c.pixels);
  fclose(fp);
  if (rc) {
    if (rc == WEFT_ENOMEM && !c.msg[0])
      snprintf(c.msg, sizeof c.msg, "out of memory");
    set_err(err, errlen, "cannot read PNG '%s': %s", name, c.msg);
    weft__png_image_free(img);
  }
  return rc;
}

int weft__png_read(const char *path, weft__png_image *img, char *err,
                   size_t errlen) {
  memset(img, 0, sizeof *img);
  FILE *fp = fopen(path, "rb");
  if (!fp) {
    int e = errno;
    set_err(err, errlen, "cannot open '%s': %s", path, strerror(e));
    return e == ENOENT || e == ENOTDIR ? WEFT_ENOENT : WEFT_EIO;
  }
  struct stat st;
  uint64_t size = fstat(fileno(fp), &st) == 0 && S_ISREG(st.st_mode)
                      ? (uint64_t)st.st_size
                      : 0;
  return read_fp(fp, path, size, img, err, errlen);
}

int weft__png_read_mem(const void *data, size_t n, const char *name,
                       weft__png_image *img, char *err, size_t errlen) {
  memset(img, 0, sizeof *img);
  if (n == 0) { /* fmemopen refuses an empty buffer */
    set_err(err, errlen,
            "'%s' is not a PNG file: only 0 bytes, shorter than the PNG "
            "signature",
            name);
    return WEFT_EFORMAT;
  }
  FILE *fp = fmemopen((void *)data, n, "rb");
  if (!fp) {
    set_err(err, errlen, "cannot read '%s': %s", name, strerror(errno));
    return WEFT_ENOMEM;
  }
  return read_fp(fp, name, n, img, err, errlen);
}

void weft__png_image_free(weft__png_image *img) {
  if (!img) return;
  free(img->rgb);
  free(img->alpha);
  for (int32_t i = 0; i < img->n_text; i++) {
    free(img->text[i].key);
    free(img->text[i].value);
  }
  free(img->text);
  memset(img, 0, sizeof *img);
}

const char *weft__png_text_get(const weft__png_image *img, const char *key) {
  for (int32_t i = 0; i < img->n_text; i++)
    if (strcmp(img->text[i].key, key) == 0) return img->text[i].value;
  return NULL;
}

/* ---- writing ------------------------------------------------------------ */

uint8_t weft__png_to_u8(float x) {
  float v = 255.0f * x; /* float32, as numpy computes 255. * float32 array */
  if (!(v > 0.0f)) return 0; /* also NaN */
  if (v >= 255.0f) return 255;
  return (uint8_t)v; /* astype(uint8) truncates */
}

typedef struct write_ctx {
  const char *path; /* for messages */
  FILE *fp;
  const weft__png_pixels *px;
  const weft__png_text *text;
  int32_t n_text;
  int level;
  png_structp png;
  png_infop info;
  png_textp chunks;
  uint8_t *row;
  char msg[256];
} write_ctx;

static void on_write_error(png_structp png, png_const_charp msg) {
  write_ctx *c = png_get_error_ptr(png);
  if (!c->msg[0]) snprintf(c->msg, sizeof c->msg, "%s", msg);
  png_longjmp(png, 1);
}

static void on_write(png_structp png, png_bytep data, size_t len) {
  write_ctx *c = png_get_io_ptr(png);
  if (fwrite(data, 1, len, c->fp) != len) {
    snprintf(c->msg, sizeof c->msg, "write failed: %s", strerror(errno));
    png_error(png, c->msg);
  }
}

static void on_flush(png_structp png) {
  (void)png; /* we flush and fsync once, at the end */
}

static int is_ascii(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s >= 0x80) return 0;
  return 1;
}

/* PNG keywords: 1-79 printable Latin-1 characters, no leading, trailing or
 * doubled spaces; weft accepts the printable ASCII subset. */
static int key_ok(const char *k) {
  size_t n = strlen(k);
  if (n < 1 || n > 79 || k[0] == ' ' || k[n - 1] == ' ') return 0;
  for (size_t i = 0; i < n; i++) {
    if (k[i] < 32 || k[i] > 126) return 0;
    if (k[i] == ' ' && k[i + 1] == ' ') return 0;
  }
  return 1;
}

static int write_impl(write_ctx *c) {
  const weft__png_pixels *px = c->px;
  c->png = png_create_write_struct(PNG_LIBPNG_VER_STRING, c, on_write_error,
                                   on_warning);
  if (!c->png) return WEFT_ENOMEM;
  c->info = png_create_info_struct(c->png);
  if (!c->info) return WEFT_ENOMEM;
  c->row = malloc((size_t)px->width * px->channels);
  if (c->n_text > 0) c->chunks = calloc((size_t)c->n_text, sizeof *c->chunks);
  if (!c->row || (c->n_text > 0 && !c->chunks)) return WEFT_ENOMEM;
  if (setjmp(png_jmpbuf(c->png))) return WEFT_EIO;

  png_set_write_fn(c->png, c, on_write, on_flush);
  int ctype = px->channels == 1   ? PNG_COLOR_TYPE_GRAY
              : px->channels == 3 ? PNG_COLOR_TYPE_RGB
                                  : PNG_COLOR_TYPE_RGB_ALPHA;
  png_set_IHDR(c->png, c->info, (png_uint_32)px->width, (png_uint_32)px->height,
               8, ctype, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_set_compression_level(c->png, c->level);
  for (int32_t i = 0; i < c->n_text; i++) {
    png_text *t = &c->chunks[i];
    t->key = c->text[i].key;
    t->text = c->text[i].value;
    if (is_ascii(c->text[i].value)) {
      t->compression = PNG_TEXT_COMPRESSION_NONE;
      t->text_length = strlen(t->text);
    } else {
      t->compression = PNG_ITXT_COMPRESSION_NONE;
      t->itxt_length = strlen(t->text);
      t->lang = NULL;
      t->lang_key = NULL;
    }
  }
  if (c->n_text > 0) png_set_text(c->png, c->info, c->chunks, c->n_text);
  png_write_info(c->png, c->info);
  size_t n = (size_t)px->width * px->channels;
  for (int32_t y = 0; y < px->height; y++) {
    const float *src = px->data + (size_t)y * n;
    for (size_t i = 0; i < n; i++)
      c->row[i] = weft__png_to_u8(src[i]);
    png_write_row(c->png, c->row);
  }
  png_write_end(c->png, c->info);
  return 0;
}

static void dir_of(const char *path, char *dir, size_t len) {
  const char *slash = strrchr(path, '/');
  if (!slash)
    snprintf(dir, len, ".");
  else if (slash == path)
    snprintf(dir, len, "/");
  else
    snprintf(dir, len, "%.*s", (int)(slash - path), path);
}

static void fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    fsync(fd); /* best effort: some filesystems refuse it on directories */
    close(fd);
  }
}

int weft__png_write_temp(const char *dir, const weft__png_pixels *px,
                         const weft__png_text *text, int32_t n_text, int level,
                         char *tmp_path, size_t tmp_len, char *err,
                         size_t errlen) {
  if (!px || !px->data || px->width <= 0 || px->height <= 0 ||
      px->width > 0x7fffffff / 4 ||
      (px->channels != 1 && px->channels != 3 && px->channels != 4)) {
    set_err(err, errlen,
            "cannot write PNG in '%s': need width, height > 0 and 1, 3 or 4 "
            "channels (got %dx%d, %d channels)",
            dir, px ? px->width : 0, px ? px->height : 0,
            px ? px->channels : 0);
    return WEFT_EINVAL;
  }
  for (int32_t i = 0; i < n_text; i++) {
    if (!text[i].key || !text[i].value || !key_ok(text[i].key)) {
      set_err(err, errlen,
              "cannot write PNG in '%s': text key '%s' is invalid (PNG keys "
              "are 1-79 printable characters without leading, trailing or "
              "double spaces)",
              dir, text[i].key ? text[i].key : "(null)");
      return WEFT_EINVAL;
    }
  }
  if (level < 0 || level > 9) level = WEFT__PNG_LEVEL;

  /* A unique hidden name; O_EXCL makes a clash with anyone a retry. */
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^
                  (uint64_t)(uintptr_t)px ^ (uint64_t)(uintptr_t)&ts;
  int fd = -1;
  for (int attempt = 0; attempt < 64 && fd < 0; attempt++) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    int n = snprintf(tmp_path, tmp_len, "%s/.weft-%ld-%08x.png.tmp", dir,
                     (long)getpid(), (unsigned)(seed >> 32));
    if (n < 0 || (size_t)n >= tmp_len) {
      set_err(err, errlen, "cannot write PNG in '%s': path too long", dir);
      return WEFT_EINVAL;
    }
    fd = open(tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) {
      set_err(err, errlen, "cannot create a file in '%s': %s", dir,
              strerror(errno));
      return errno == ENOENT || errno == ENOTDIR ? WEFT_ENOENT : WEFT_EIO;
    }
  }
  if (fd < 0) {
    set_err(err, errlen, "cannot create a unique temporary file in '%s'", dir);
    return WEFT_EIO;
  }
  write_ctx c;
  memset(&c, 0, sizeof c);
  c.path = tmp_path;
  c.fp = fdopen(fd, "wb");
  c.px = px;
  c.text = text;
  c.n_text = n_text;
  c.level = level;
  int rc;
  if (!c.fp) {
    snprintf(c.msg, sizeof c.msg, "%s", strerror(errno));
    close(fd);
    rc = WEFT_EIO;
  } else {
    rc = write_impl(&c);
    if (c.png) png_destroy_write_struct(&c.png, c.info ? &c.info : NULL);
    if (rc == 0 && (fflush(c.fp) != 0 || fsync(fileno(c.fp)) != 0)) {
      snprintf(c.msg, sizeof c.msg, "flush failed: %s", strerror(errno));
      rc = WEFT_EIO;
    }
    if (fclose(c.fp) != 0 && rc == 0) {
      snprintf(c.msg, sizeof c.msg, "close failed: %s", strerror(errno));
      rc = WEFT_EIO;
    }
  }
  free(c.row);
  free(c.chunks);
  if (rc) {
    if (rc == WEFT_ENOMEM && !c.msg[0])
      snprintf(c.msg, sizeof c.msg, "out of memory");
    set_err(err, errlen, "cannot write PNG in '%s': %s", dir, c.msg);
    unlink(tmp_path);
    if (tmp_len) tmp_path[0] = '\0';
  }
  return rc;
}

int weft__png_publish(const char *tmp_path, const char *path, int noreplace,
                      char *err, size_t errlen) {
  int r;
  if (noreplace) {
    r = renameat2(AT_FDCWD, tmp_path, AT_FDCWD, path, RENAME_NOREPLACE);
    if (r != 0 && (errno == EINVAL || errno == ENOSYS || errno == ENOTSUP)) {
      /* No RENAME_NOREPLACE here: link() also refuses an existing name. */
      r = link(tmp_path, path);
      if (r == 0)
        unlink(tmp_path);
      else if (errno == EPERM || errno == ENOTSUP || errno == EXDEV) {
        struct stat st;
        if (stat(path, &st) == 0) {
          errno = EEXIST;
          r = -1;
        } else {
          r = rename(tmp_path, path); /* no hard links: small race left */
        }
      }
    }
    if (r != 0 && errno == EEXIST) return WEFT_EDUP;
  } else {
    r = rename(tmp_path, path);
  }
  if (r != 0) {
    set_err(err, errlen, "cannot rename '%s' to '%s': %s", tmp_path, path,
            strerror(errno));
    return WEFT_EIO;
  }
  char dir[4096];
  dir_of(path, dir, sizeof dir);
  fsync_dir(dir);
  return 0;
}

int weft__png_write(const char *path, const weft__png_pixels *px,
                    const weft__png_text *text, int32_t n_text, int level,
                    char *err, size_t errlen) {
  char dir[4096], tmp[4200];
  dir_of(path, dir, sizeof dir);
  int rc = weft__png_write_temp(dir, px, text, n_text, level, tmp, sizeof tmp,
                                err, errlen);
  if (rc) return rc;
  rc = weft__png_publish(tmp, path, 0, err, errlen);
  if (rc) unlink(tmp);
  return rc;
}
