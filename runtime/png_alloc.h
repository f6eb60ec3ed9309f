/* png_alloc.h - a bounded allocator for libpng, shared by every PNG reader.
 *
 * libpng allocates a chunk's buffer from the length the file claims, before
 * reading it: a 900-byte file whose tEXt says 2 GB gets 2 GB (libpng 1.6.39
 * checks png_set_chunk_malloc_max only for some chunks).  Its own buffers
 * (rows, zlib state, text) never need more than WEFT_PNG_ALLOC_MAX, so
 * larger requests fail, which libpng reports as a bad chunk (a warning for
 * text, an error elsewhere).  Pass both to png_create_read_struct_2. */
#ifndef WEFT_PNG_ALLOC_H
#define WEFT_PNG_ALLOC_H

#include <png.h>
#include <stdlib.h>

#define WEFT_PNG_ALLOC_MAX ((png_alloc_size_t)64 << 20)

static inline png_voidp weft__png_malloc(png_structp png,
                                         png_alloc_size_t size) {
  (void)png;
  return size <= WEFT_PNG_ALLOC_MAX ? malloc(size) : NULL;
}

static inline void weft__png_free(png_structp png, png_voidp p) {
  (void)png;
  free(p);
}

#endif
