/* test_util.h - file helpers shared by the image plugin's tests. */
#ifndef WEFT_TEST_IMAGE_UTIL_H
#define WEFT_TEST_IMAGE_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* tests/fixtures/images/<rel>, in a buffer of 8 that rotate per call. */
const char *fixture(const char *rel);
/* <tmpdir>/<rel>, rotating the same way. */
const char *tmp_path(const char *rel);
/* The whole file (caller frees), or NULL; *n receives its size. */
uint8_t *read_file(const char *path, size_t *n);
void write_file(const char *path, const void *data, size_t n);
/* Entries of dir whose name starts with prefix ("" for all), not counting
 * "." and "..". */
int count_entries(const char *dir, const char *prefix);
/* Offset of the first chunk of type tag (e.g. "IDAT") in a PNG, or -1. */
long png_chunk_offset(const uint8_t *png, size_t n, const char *tag);
/* Recomputes the CRC of the chunk at off (after editing its data). */
void png_fix_crc(uint8_t *png, long off);
/* The fixture formulas of tools/fixtures/gen_image_ops.py. */
int v8(int x, int y, int k);
int v16(int x, int y, int k);

#endif
