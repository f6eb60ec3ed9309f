/* test_util.c - file helpers shared by the image plugin's tests. */
#include "test_util.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "test.h"

static char *rotate(void) {
  static char bufs[8][4096];
  static int next;
  return bufs[next++ % 8];
}

const char *fixture(const char *rel) {
  char *b = rotate();
  snprintf(b, 4096, "%s/fixtures/images/%s", weft_test_srcdir(), rel);
  return b;
}

const char *tmp_path(const char *rel) {
  char *b = rotate();
  snprintf(b, 4096, "%s/%s", weft_test_tmpdir(), rel);
  return b;
}

uint8_t *read_file(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *d = malloc(len > 0 ? (size_t)len : 1);
  *n = fread(d, 1, (size_t)len, f);
  fclose(f);
  return d;
}

void write_file(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  ASSERT(f != NULL);
  ASSERT_EQ(fwrite(data, 1, n, f), n);
  fclose(f);
}

int count_entries(const char *dir, const char *prefix) {
  DIR *d = opendir(dir);
  if (!d) return 0;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
        strncmp(e->d_name, prefix, strlen(prefix)) == 0)
      n++;
  closedir(d);
  return n;
}

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         p[3];
}

long png_chunk_offset(const uint8_t *png, size_t n, const char *tag) {
  size_t off = 8;
  while (off + 12 <= n) {
    uint32_t len = be32(png + off);
    if (memcmp(png + off + 4, tag, 4) == 0) return (long)off;
    off += 12 + (size_t)len;
  }
  return -1;
}

void png_fix_crc(uint8_t *png, long off) {
  uint32_t len = be32(png + off);
  uLong crc = crc32(0L, png + off + 4, len + 4);
  uint8_t *p = png + off + 8 + len;
  p[0] = (uint8_t)(crc >> 24);
  p[1] = (uint8_t)(crc >> 16);
  p[2] = (uint8_t)(crc >> 8);
  p[3] = (uint8_t)crc;
}

int v8(int x, int y, int k) {
  return (37 * x + 91 * y + 53 * k + 11) % 256;
}

int v16(int x, int y, int k) {
  return (int)((7919LL * x + 104729LL * y + 15485863LL * k + 12345) % 65536);
}
