/* test_safetensors.c - the safetensors reader (valid, Python-written and
 * hostile files), the writer's round trip and atomicity, the family guess,
 * and `weft inspect`. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"
#include "weft/safetensors.h"
#include "weft/weft.h"

int weft_cmd_inspect(int argc, char **argv);

/* ---- helpers ----------------------------------------------------------- */

static char *path_in_tmp(const char *name) {
  static char buf[8][4096]; /* a few live paths per case are enough */
  static int k;
  char *p = buf[k++ % 8];
  snprintf(p, 4096, "%s/%s", weft_test_tmpdir(), name);
  return p;
}

static void write_bytes(const char *path, const void *buf, size_t n) {
  FILE *f = fopen(path, "wb");
  ASSERT(f != NULL);
  ASSERT_EQ(fwrite(buf, 1, n, f), n);
  ASSERT_EQ(fclose(f), 0);
}

/* Writes a safetensors file: header length (little-endian, hlen unless
 * hlen == UINT64_MAX, then strlen(header)), the header, then data_len bytes
 * 0, 1, 2, ... Returns the path. */
static const char *write_st_raw(const char *name, uint64_t hlen,
                                const char *header, size_t data_len) {
  size_t h = strlen(header);
  size_t n = 8 + h + data_len;
  unsigned char *buf = malloc(n);
  ASSERT(buf != NULL);
  uint64_t L = hlen == UINT64_MAX ? h : hlen;
  for (int i = 0; i < 8; i++)
    buf[i] = (unsigned char)(L >> (8 * i));
  memcpy(buf + 8, header, h);
  for (size_t i = 0; i < data_len; i++)
    buf[8 + h + i] = (unsigned char)i;
  const char *p = path_in_tmp(name);
  write_bytes(p, buf, n);
  free(buf);
  return p;
}

static const char *write_st(const char *header, size_t data_len) {
  return write_st_raw("t.safetensors", UINT64_MAX, header, data_len);
}

/* Opens path expecting failure rc with every needle in the message, which
 * must also start with the path. */
static void expect_bad(const char *path, int rc, const char *n1,
                       const char *n2) {
  weft_st_file *f = (weft_st_file *)1;
  char err[1024] = "";
  ASSERT_EQ(weft_st_open(path, &f, err, sizeof err), rc);
  ASSERT(f == NULL);
  fprintf(stderr, "message: %s\n", err);
  ASSERT(strncmp(err, path, strlen(path)) == 0);
  ASSERT_CONTAINS(err, n1);
  if (n2) ASSERT_CONTAINS(err, n2);
}

static weft_st_file *open_ok(const char *path) {
  weft_st_file *f = NULL;
  char err[1024] = "";
  int rc = weft_st_open(path, &f, err, sizeof err);
  if (rc) fprintf(stderr, "open failed: %s\n", err);
  ASSERT_OK(rc);
  ASSERT(f != NULL);
  return f;
}

static const char *sample(const char *name) {
  static char p[4096];
  snprintf(p, sizeof p, "%s/safetensors/samples/%s", weft_test_srcdir(), name);
  return p;
}

static uint16_t rd16(const void *p) {
  uint16_t x;
  memcpy(&x, p, 2);
  return x;
}

static char *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  ASSERT(f != NULL);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  ASSERT(buf != NULL);
  ASSERT_EQ(fread(buf, 1, (size_t)n, f), (size_t)n);
  buf[n] = '\0';
  fclose(f);
  if (len) *len = (size_t)n;
  return buf;
}

/* ---- files the Python library wrote ------------------------------------ */

TEST(reads_python_torch_sample) {
  weft_st_file *f = open_ok(sample("py_torch.safetensors"));
  ASSERT_EQ(weft_st_count(f), 15);
  ASSERT_STR_EQ(weft_st_meta(f, "format"), "pt");
  ASSERT_STR_EQ(weft_st_meta(f, "weft.note"), "fixture \xc3\xa9");
  ASSERT(weft_st_meta(f, "nope") == NULL);
  ASSERT_EQ(weft_st_meta_count(f), 2);
  ASSERT_STR_EQ(weft_st_meta_key(f, 0), "format"); /* sorted by key */
  ASSERT_STR_EQ(weft_st_meta_value(f, 1), "fixture \xc3\xa9");

  /* file order is offset order; the Python library put I64 first */
  ASSERT_STR_EQ(weft_st_at(f, 0)->key, "i64");
  for (int32_t i = 1; i < weft_st_count(f); i++)
    ASSERT(weft_st_at(f, i)->offset >= weft_st_at(f, i - 1)->offset);
  ASSERT(weft_st_at(f, 15) == NULL && weft_st_at(f, -1) == NULL);

  const weft_st_tensor *t = weft_st_find(f, "f32");
  ASSERT(t && t->dtype == WEFT_ST_F32 && t->ndim == 2);
  ASSERT_EQ(t->shape[0], 2);
  ASSERT_EQ(t->shape[1], 3);
  ASSERT_EQ(t->nbytes, 24);
  for (int i = 0; i < 6; i++) {
    float x;
    memcpy(&x, (const char *)t->data + 4 * i, 4);
    ASSERT_EQ(x * 2, i); /* 0 .5 1 1.5 2 2.5 exactly */
  }
  static const uint16_t f16[6] = {0x0000, 0x3C00, 0x4000,
                                  0x4200, 0x4400, 0x4500};
  static const uint16_t bf16[6] = {0x0000, 0x3F80, 0x4000,
                                   0x4040, 0x4080, 0x40A0};
  t = weft_st_find(f, "f16");
  ASSERT(t && t->dtype == WEFT_ST_F16 && t->ndim == 2 && t->shape[0] == 3);
  for (int i = 0; i < 6; i++)
    ASSERT_EQ(rd16((const char *)t->data + 2 * i), f16[i]);
  t = weft_st_find(f, "bf16");
  ASSERT(t && t->dtype == WEFT_ST_BF16 && t->ndim == 1 && t->shape[0] == 6);
  for (int i = 0; i < 6; i++)
    ASSERT_EQ(rd16((const char *)t->data + 2 * i), bf16[i]);
  t = weft_st_find(f, "f64");
  ASSERT(t && t->dtype == WEFT_ST_F64 && t->nbytes == 32);
  double d3;
  memcpy(&d3, (const char *)t->data + 24, 8);
  ASSERT_EQ(d3, 3);
  t = weft_st_find(f, "i64");
  ASSERT(t && t->dtype == WEFT_ST_I64 && t->nbytes == 32);
  for (int i = 0; i < 4; i++) {
    int64_t v;
    memcpy(&v, (const char *)t->data + 8 * i, 8);
    ASSERT_EQ(v, i - 2);
  }
  t = weft_st_find(f, "i32");
  int32_t i32[2];
  ASSERT(t && t->dtype == WEFT_ST_I32);
  memcpy(i32, t->data, 8);
  ASSERT(i32[0] == -7 && i32[1] == 7);
  t = weft_st_find(f, "i16");
  ASSERT(t && t->dtype == WEFT_ST_I16);
  ASSERT_EQ((int16_t)rd16(t->data), -300);
  t = weft_st_find(f, "i8");
  ASSERT(t && t->dtype == WEFT_ST_I8 && ((const int8_t *)t->data)[0] == -5);
  t = weft_st_find(f, "u8");
  ASSERT(t && t->dtype == WEFT_ST_U8 && ((const uint8_t *)t->data)[1] == 255);
  t = weft_st_find(f, "bool");
  ASSERT(t && t->dtype == WEFT_ST_BOOL && t->nbytes == 3);
  ASSERT(memcmp(t->data, "\1\0\1", 3) == 0);
  t = weft_st_find(f, "scalar");
  ASSERT(t && t->ndim == 0 && t->nbytes == 4);
  float sc;
  memcpy(&sc, t->data, 4);
  ASSERT_EQ(sc * 4, 13);
  t = weft_st_find(f, "empty");
  ASSERT(t && t->ndim == 2 && t->shape[0] == 0 && t->shape[1] == 4 &&
         t->nbytes == 0);
  t = weft_st_find(f, "f8_e4m3");
  ASSERT(t && t->dtype == WEFT_ST_F8_E4M3);
  ASSERT(memcmp(t->data, "\x38\xC0", 2) == 0); /* 1.0, -2.0 */
  t = weft_st_find(f, "f8_e5m2");
  ASSERT(t && t->dtype == WEFT_ST_F8_E5M2);
  ASSERT(memcmp(t->data, "\x3C\xC0", 2) == 0);
  ASSERT(weft_st_find(f, "F32") == NULL);
  ASSERT(weft_st_find(f, "") == NULL);
  weft_st_close(f);
}

TEST(reads_python_numpy_sample) {
  weft_st_file *f = open_ok(sample("py_numpy.safetensors"));
  ASSERT_EQ(weft_st_count(f), 4);
  ASSERT_EQ(weft_st_meta_count(f), 0);
  const weft_st_tensor *t = weft_st_find(f, "u16");
  ASSERT(t && t->dtype == WEFT_ST_U16);
  ASSERT_EQ(rd16((const char *)t->data + 2), 65535);
  t = weft_st_find(f, "u32");
  uint32_t u32;
  ASSERT(t && t->dtype == WEFT_ST_U32);
  memcpy(&u32, (const char *)t->data + 4, 4);
  ASSERT(u32 == 4294967295u);
  t = weft_st_find(f, "u64");
  uint64_t u64;
  ASSERT(t && t->dtype == WEFT_ST_U64);
  memcpy(&u64, (const char *)t->data + 8, 8);
  ASSERT(u64 == UINT64_MAX);
  t = weft_st_find(f, "f16");
  ASSERT(t && t->dtype == WEFT_ST_F16 && t->ndim == 2 && t->shape[1] == 2);
  ASSERT_EQ(rd16(t->data), 0x3800);                   /* 0.5 */
  ASSERT_EQ(rd16((const char *)t->data + 2), 0xBC00); /* -1 */
  weft_st_close(f);
}

TEST(open_memory_matches_open) {
  size_t n;
  char *buf = read_all(sample("py_torch.safetensors"), &n);
  weft_st_file *f = NULL;
  char err[256];
  ASSERT_OK(weft_st_open_memory(buf, n, "mem", &f, err, sizeof err));
  ASSERT_STR_EQ(weft_st_path(f), "mem");
  ASSERT_EQ(weft_st_count(f), 15);
  const weft_st_tensor *t = weft_st_find(f, "u8");
  ASSERT(t && (const char *)t->data >= buf &&
         (const char *)t->data + t->nbytes <= buf + n);
  weft_st_close(f);
  /* a NULL name still yields a message that says where */
  ASSERT_EQ(weft_st_open_memory(buf, 5, NULL, &f, err, sizeof err),
            WEFT_EFORMAT);
  ASSERT_CONTAINS(err, "<memory>: header:");
  free(buf);
}

TEST(view_is_contiguous_and_refuses_foreign_dtypes) {
  weft_st_file *f = open_ok(sample("py_torch.safetensors"));
  weft_tensor v;
  ASSERT_OK(weft_st_view(weft_st_find(f, "f16"), &v));
  ASSERT(v.dtype == WEFT_F16 && v.device == WEFT_DEVICE_CPU && v.ndim == 2);
  ASSERT(v.shape[0] == 3 && v.shape[1] == 2);
  ASSERT(v.stride[0] == 2 && v.stride[1] == 1);
  ASSERT(v.data == weft_st_find(f, "f16")->data);
  ASSERT_OK(weft_st_view(weft_st_find(f, "scalar"), &v));
  ASSERT(v.ndim == 0 && v.dtype == WEFT_F32);
  ASSERT_OK(weft_st_view(weft_st_find(f, "i64"), &v));
  ASSERT(v.dtype == WEFT_I64);
  ASSERT_EQ(weft_st_view(weft_st_find(f, "bool"), &v), WEFT_EUNSUPPORTED);
  ASSERT_EQ(weft_st_view(weft_st_find(f, "f64"), &v), WEFT_EUNSUPPORTED);
  weft_st_close(f);
  ASSERT_EQ(weft_st_to_dtype(WEFT_ST_BF16), WEFT_BF16);
  ASSERT_EQ(weft_st_to_dtype(WEFT_ST_U16), -1);
  ASSERT_EQ(weft_st_dtype_size(WEFT_ST_F8_E5M2), 1);
  ASSERT_EQ(weft_st_dtype_size(WEFT_ST_U64), 8);
  ASSERT_STR_EQ(weft_st_dtype_name(WEFT_ST_BOOL), "BOOL");
  ASSERT_STR_EQ(weft_st_dtype_name(WEFT_ST_DTYPE_COUNT), "?");
}

TEST(zero_size_tensors_and_empty_file_are_valid) {
  weft_st_file *f = open_ok(write_st(
      "{\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
      "\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
      "\"y\":{\"dtype\":\"F16\",\"shape\":[3,0],\"data_offsets\":[2,2]}}",
      2));
  ASSERT_EQ(weft_st_count(f), 3);
  ASSERT_STR_EQ(weft_st_at(f, 0)->key, "z");
  ASSERT_STR_EQ(weft_st_at(f, 2)->key, "y");
  weft_st_close(f);
  f = open_ok(write_st("{}", 0));
  ASSERT_EQ(weft_st_count(f), 0);
  ASSERT(weft_st_find(f, "x") == NULL);
  ASSERT_STR_EQ(weft_st_guess_family(f), "unknown");
  weft_st_close(f);
}

TEST(unknown_entry_fields_are_ignored) {
  /* the Python library ignores fields it does not know; so do we */
  weft_st_file *f = open_ok(
      write_st("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],"
               "\"extra\":[1,2]}}",
               1));
  ASSERT_EQ(weft_st_count(f), 1);
  weft_st_close(f);
}

TEST(missing_file_is_enoent) {
  const char *p = path_in_tmp("nope.safetensors");
  expect_bad(p, WEFT_ENOENT, "cannot open", strerror(ENOENT));
}

TEST(directory_is_refused) {
  const char *p = path_in_tmp("dir.safetensors");
  ASSERT_OK(mkdir(p, 0755));
  expect_bad(p, WEFT_EFORMAT, "not a regular file", NULL);
}

/* ---- hostile files ----------------------------------------------------- */

TEST(bad_empty_file) {
  const char *p = path_in_tmp("empty.safetensors");
  write_bytes(p, "", 0);
  expect_bad(p, WEFT_EFORMAT, "header: file is 0 bytes", "8-byte");
}

TEST(bad_shorter_than_8_bytes) {
  const char *p = path_in_tmp("short.safetensors");
  write_bytes(p, "\x02\0\0\0\0", 5);
  expect_bad(p, WEFT_EFORMAT, "header: file is 5 bytes", "too short");
}

TEST(bad_header_length_past_eof) {
  expect_bad(write_st_raw("t.safetensors", 1000, "{}", 0), WEFT_EFORMAT,
             "header: header length 1000 runs past the end of the file",
             "(10 bytes");
}

TEST(bad_header_length_huge) {
  expect_bad(write_st_raw("t.safetensors", 1ull << 63, "{}", 0), WEFT_EFORMAT,
             "header length 9223372036854775808 exceeds", "100000000");
}

TEST(bad_header_length_too_small) {
  expect_bad(write_st_raw("t.safetensors", 1, "{}", 0), WEFT_EFORMAT,
             "header length 1 is too small", NULL);
}

TEST(bad_non_json_header) {
  expect_bad(write_st("not json at all!", 0), WEFT_EFORMAT,
             "header: not valid JSON", "invalid token");
}

TEST(bad_header_with_nul_padding) {
  static const char buf[] = "\x08\0\0\0\0\0\0\0{}\0\0\0\0\0\0";
  const char *p = path_in_tmp("nul.safetensors");
  write_bytes(p, buf, 16);
  expect_bad(p, WEFT_EFORMAT, "header: unexpected bytes after the JSON object",
             "padded with spaces only");
}

TEST(bad_json_array_header) {
  expect_bad(write_st("[1, 2, 3]", 0), WEFT_EFORMAT,
             "header: the JSON header is an array, expected an object", NULL);
}

TEST(bad_truncated_data_section) {
  /* two tensors of 8 bytes declared, file holds 12 */
  expect_bad(
      write_st(
          "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
          "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}"
          "}",
          12),
      WEFT_EFORMAT, "tensor 'b': data_offsets [8, 16] run past the end",
      "(12 bytes; file truncated?)");
}

TEST(bad_offsets_past_eof) {
  expect_bad(write_st("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],"
                      "\"data_offsets\":[1000000,1000004]}}",
                      4),
             WEFT_EFORMAT,
             "tensor 'a': data_offsets [1000000, 1000004] run "
             "past the end of the data section (4 bytes",
             NULL);
}

TEST(bad_offsets_begin_after_end) {
  expect_bad(write_st("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],"
                      "\"data_offsets\":[8,4]}}",
                      8),
             WEFT_EFORMAT, "tensor 'a': data_offsets begin 8 > end 4", NULL);
}

TEST(bad_overlapping_tensors) {
  expect_bad(
      write_st(
          "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
          "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}"
          "}",
          12),
      WEFT_EFORMAT,
      "tensor 'b': data_offsets [4, 12] overlap tensor 'a' [0, "
      "8]",
      NULL);
}

TEST(bad_zero_size_tensor_inside_another) {
  expect_bad(
      write_st(
          "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
          "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}"
          "}",
          8),
      WEFT_EFORMAT, "tensor 'z'", "overlap tensor 'a'");
}

TEST(bad_gap_between_tensors) {
  expect_bad(
      write_st(
          "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
          "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}"
          "}",
          16),
      WEFT_EFORMAT,
      "tensor 'b': gap of 4 unused bytes before data_offsets "
      "[12, 16]",
      "tensor 'a' ends at 8");
}

TEST(bad_gap_at_start) {
  expect_bad(write_st("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],"
                      "\"data_offsets\":[2,4]}}",
                      4),
             WEFT_EFORMAT, "tensor 'a': gap of 2 unused bytes", NULL);
}

TEST(bad_trailing_bytes_after_last_tensor) {
  expect_bad(write_st("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],"
                      "\"data_offsets\":[0,2]}}",
                      5),
             WEFT_EFORMAT, "header: 3 unused bytes at the end",
             "last tensor 'a'");
}

TEST(bad_shape_byte_length_mismatch) {
  expect_bad(write_st("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],"
                      "\"data_offsets\":[0,20]}}",
                      20),
             WEFT_EFORMAT,
             "tensor 'w': shape [2, 3] of F32 needs 24 bytes but data_offsets "
             "[0, 20] hold 20",
             NULL);
}

TEST(bad_shape_product_overflows) {
  expect_bad(write_st("{\"w\":{\"dtype\":\"U8\",\"shape\":[4294967296,"
                      "4294967296,0],\"data_offsets\":[0,0]}}",
                      0),
             WEFT_EFORMAT, "tensor 'w': shape's element count overflows", NULL);
}

TEST(bad_shape_bytes_overflow) {
  /* 2^62 elements fit int64, 2^62 * 8 bytes do not fit 64 bits */
  expect_bad(write_st("{\"w\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904"
                      "],\"data_offsets\":[0,0]}}",
                      0),
             WEFT_EFORMAT, "tensor 'w': shape's byte size overflows", NULL);
}

TEST(bad_negative_dim) {
  expect_bad(write_st("{\"w\":{\"dtype\":\"U8\",\"shape\":[2,-3],"
                      "\"data_offsets\":[0,0]}}",
                      0),
             WEFT_EFORMAT, "tensor 'w': shape dimension 1 is negative (-3)",
             NULL);
}

TEST(bad_nine_dims) {
  expect_bad(write_st("{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                      "\"data_offsets\":[0,1]}}",
                      1),
             WEFT_EFORMAT, "tensor 'w': shape has 9 dimensions, at most 8",
             NULL);
}

TEST(bad_shape_not_integers) {
  expect_bad(write_st("{\"w\":{\"dtype\":\"U8\",\"shape\":[2.0],"
                      "\"data_offsets\":[0,2]}}",
                      2),
             WEFT_EFORMAT, "tensor 'w': shape dimension 0 is a real number",
             NULL);
}

TEST(bad_unknown_dtype) {
  expect_bad(write_st("{\"w\":{\"dtype\":\"F128\",\"shape\":[1],"
                      "\"data_offsets\":[0,16]}}",
                      16),
             WEFT_EFORMAT, "tensor 'w': unknown dtype 'F128'", "BF16");
}

TEST(bad_duplicate_keys) {
  expect_bad(
      write_st(
          "{\"dup\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
          "\"dup\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}"
          "}",
          2),
      WEFT_EFORMAT, "header: duplicate key \"dup\"", NULL);
}

TEST(bad_metadata_value_not_string) {
  expect_bad(write_st("{\"__metadata__\":{\"format\":\"pt\",\"steps\":1000},"
                      "\"a\":{\"dtype\":\"U8\",\"shape\":[1],"
                      "\"data_offsets\":[0,1]}}",
                      1),
             WEFT_EFORMAT,
             "header: __metadata__ value of 'steps' is an integer, expected a "
             "string",
             NULL);
}

TEST(bad_metadata_not_object) {
  expect_bad(write_st("{\"__metadata__\":[\"x\"]}", 0), WEFT_EFORMAT,
             "header: __metadata__ is an array, expected an object", NULL);
}

TEST(bad_data_offsets_not_integers) {
  expect_bad(write_st("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],"
                      "\"data_offsets\":[\"0\",\"1\"]}}",
                      1),
             WEFT_EFORMAT,
             "tensor 'w': data_offsets must be an array of 2 non-negative "
             "integers",
             NULL);
}

TEST(bad_data_offsets_three_items) {
  expect_bad(write_st("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],"
                      "\"data_offsets\":[0,1,2]}}",
                      1),
             WEFT_EFORMAT, "tensor 'w': data_offsets must be an array of 2",
             NULL);
}

TEST(bad_data_offsets_negative) {
  expect_bad(write_st("{\"w\":{\"dtype\":\"U8\",\"shape\":[0],"
                      "\"data_offsets\":[-1,-1]}}",
                      0),
             WEFT_EFORMAT, "tensor 'w': data_offsets [-1, -1] are negative",
             NULL);
}

TEST(bad_data_offset_too_big_for_json_integer) {
  expect_bad(write_st("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],"
                      "\"data_offsets\":[0,18446744073709551616]}}",
                      1),
             WEFT_EFORMAT, "header: not valid JSON: too big integer", NULL);
}

TEST(bad_missing_dtype) {
  expect_bad(write_st("{\"w\":{\"shape\":[1],\"data_offsets\":[0,1]}}", 1),
             WEFT_EFORMAT, "tensor 'w': missing 'dtype'", NULL);
}

TEST(bad_missing_shape) {
  expect_bad(write_st("{\"w\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", 1),
             WEFT_EFORMAT, "tensor 'w': missing 'shape'", NULL);
}

TEST(bad_missing_data_offsets) {
  expect_bad(write_st("{\"w\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1),
             WEFT_EFORMAT, "tensor 'w': missing 'data_offsets'", NULL);
}

TEST(bad_entry_not_object) {
  expect_bad(write_st("{\"w\":\"F32\"}", 0), WEFT_EFORMAT,
             "tensor 'w': entry is a string, expected an object", NULL);
}

TEST(bad_dtype_not_string) {
  expect_bad(write_st("{\"w\":{\"dtype\":4,\"shape\":[1],"
                      "\"data_offsets\":[0,4]}}",
                      4),
             WEFT_EFORMAT, "tensor 'w': dtype is an integer", NULL);
}

TEST(bad_key_control_chars_are_escaped) {
  expect_bad(write_st("{\"a\\u001b[2Jb\":{\"dtype\":\"X\",\"shape\":[1],"
                      "\"data_offsets\":[0,1]}}",
                      1),
             WEFT_EFORMAT, "tensor 'a\\x1b[2Jb': unknown dtype 'X'", NULL);
}

TEST(bad_invalid_utf8_header) {
  expect_bad(write_st("{\"\xff\xfe\":{}}", 0), WEFT_EFORMAT,
             "header: not valid JSON", NULL);
}

TEST(bad_error_buffer_may_be_null_or_tiny) {
  const char *p = write_st("[]", 0);
  weft_st_file *f;
  ASSERT_EQ(weft_st_open(p, &f, NULL, 0), WEFT_EFORMAT);
  char tiny[4] = "zzz";
  ASSERT_EQ(weft_st_open(p, &f, tiny, sizeof tiny), WEFT_EFORMAT);
  ASSERT_EQ(strlen(tiny), 3);
}

/* ---- writer ------------------------------------------------------------ */

TEST(writer_round_trip) {
  float f32[6] = {1, -2, 3.5f, 0, 1e-3f, 7};
  uint16_t f16[4] = {0x3C00, 0x4000, 0xBC00, 0x7C00};
  int64_t i64[3] = {-1, INT64_MAX, INT64_MIN};
  uint8_t u8[5] = {1, 2, 3, 4, 5};
  float scalar = 42;
  int64_t s23[2] = {2, 3}, s22[2] = {2, 2}, s3[1] = {3}, s5[1] = {5},
          s0[2] = {0, 7};
  weft_st_writer *w;
  ASSERT_OK(weft_st_writer_new(&w));
  ASSERT_OK(weft_st_writer_add(w, "u8", WEFT_ST_U8, 1, s5, u8));
  ASSERT_OK(weft_st_writer_add(w, "b.f32", WEFT_ST_F32, 2, s23, f32));
  ASSERT_OK(weft_st_writer_add(w, "a.f16", WEFT_ST_F16, 2, s22, f16));
  ASSERT_OK(weft_st_writer_add(w, "i64", WEFT_ST_I64, 1, s3, i64));
  ASSERT_OK(weft_st_writer_add(w, "scalar", WEFT_ST_F32, 0, NULL, &scalar));
  ASSERT_OK(weft_st_writer_add(w, "empty", WEFT_ST_BF16, 2, s0, NULL));
  ASSERT_OK(weft_st_writer_meta(w, "format", "pt"));
  ASSERT_OK(weft_st_writer_meta(w, "quote\"and\\", "line\nbreak \xc3\xa9"));
  ASSERT_OK(weft_st_writer_meta(w, "format", "weft")); /* replaces */
  const char *p = path_in_tmp("rt.safetensors");
  char err[512];
  ASSERT_OK(weft_st_writer_save(w, p, err, sizeof err));
  weft_st_writer_free(w);

  /* header: length multiple of 8, padded with spaces */
  size_t n;
  char *raw = read_all(p, &n);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--)
    hlen = (hlen << 8) | (unsigned char)raw[i];
  ASSERT_EQ(hlen % 8, 0);
  ASSERT_EQ(n, 8 + hlen + 24 + 8 + 24 + 4 + 5);
  ASSERT(raw[8] == '{');
  size_t last = 8 + hlen - 1;
  while (raw[last] == ' ')
    last--;
  ASSERT(raw[last] == '}');
  free(raw);

  weft_st_file *f = open_ok(p);
  ASSERT_EQ(weft_st_count(f), 6);
  ASSERT_EQ(weft_st_meta_count(f), 2);
  ASSERT_STR_EQ(weft_st_meta(f, "format"), "weft");
  ASSERT_STR_EQ(weft_st_meta(f, "quote\"and\\"), "line\nbreak \xc3\xa9");
  /* the Python library's order: larger dtypes first, then by key */
  static const char *const order[] = {"i64",   "b.f32", "scalar",
                                      "a.f16", "empty", "u8"};
  for (int i = 0; i < 6; i++)
    ASSERT_STR_EQ(weft_st_at(f, i)->key, order[i]);
  const weft_st_tensor *t = weft_st_find(f, "b.f32");
  ASSERT(t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3);
  ASSERT(memcmp(t->data, f32, sizeof f32) == 0);
  t = weft_st_find(f, "a.f16");
  ASSERT(t->dtype == WEFT_ST_F16 && memcmp(t->data, f16, sizeof f16) == 0);
  t = weft_st_find(f, "i64");
  ASSERT(memcmp(t->data, i64, sizeof i64) == 0);
  t = weft_st_find(f, "u8");
  ASSERT(memcmp(t->data, u8, sizeof u8) == 0);
  t = weft_st_find(f, "scalar");
  ASSERT(t->ndim == 0 && memcmp(t->data, &scalar, 4) == 0);
  t = weft_st_find(f, "empty");
  ASSERT(t->dtype == WEFT_ST_BF16 && t->nbytes == 0 && t->shape[1] == 7);
  /* every tensor is aligned to its element size in the mapping */
  for (int i = 0; i < 6; i++) {
    t = weft_st_at(f, i);
    ASSERT_EQ((uintptr_t)t->data % weft_st_dtype_size(t->dtype), 0);
  }
  weft_st_close(f);
}

TEST(writer_many_keys_all_found) {
  enum { N = 2000 };
  static uint8_t data[N];
  weft_st_writer *w;
  ASSERT_OK(weft_st_writer_new(&w));
  int64_t one = 1;
  char key[64];
  for (int i = 0; i < N; i++) {
    data[i] = (uint8_t)(i * 7);
    snprintf(key, sizeof key, "model.layers.%d.weight", i);
    ASSERT_OK(weft_st_writer_add(w, key, WEFT_ST_U8, 1, &one, &data[i]));
  }
  for (int i = 0; i < N; i += 97) { /* every key is still known */
    snprintf(key, sizeof key, "model.layers.%d.weight", i);
    ASSERT_EQ(weft_st_writer_add(w, key, WEFT_ST_U8, 1, &one, &data[i]),
              WEFT_EDUP);
  }
  const char *p = path_in_tmp("many.safetensors");
  ASSERT_OK(weft_st_writer_save(w, p, NULL, 0));
  weft_st_writer_free(w);
  weft_st_file *f = open_ok(p);
  ASSERT_EQ(weft_st_count(f), N);
  for (int i = 0; i < N; i++) {
    snprintf(key, sizeof key, "model.layers.%d.weight", i);
    const weft_st_tensor *t = weft_st_find(f, key);
    ASSERT(t != NULL);
    ASSERT_STR_EQ(t->key, key);
    ASSERT_EQ(*(const uint8_t *)t->data, (uint8_t)(i * 7));
  }
  ASSERT(weft_st_find(f, "model.layers.2000.weight") == NULL);
  weft_st_close(f);
}

static int count_dir_entries(const char *dir) {
  DIR *d = opendir(dir);
  ASSERT(d != NULL);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
  closedir(d);
  return n;
}

TEST(writer_replaces_target_atomically) {
  const char *p = path_in_tmp("out.safetensors");
  write_bytes(p, "old contents", 12);
  chmod(p, 0640);
  uint8_t b[3] = {9, 8, 7};
  int64_t s = 3;
  weft_st_writer *w;
  ASSERT_OK(weft_st_writer_new(&w));
  ASSERT_OK(weft_st_writer_add(w, "x", WEFT_ST_U8, 1, &s, b));
  ASSERT_OK(weft_st_writer_save(w, p, NULL, 0));
  weft_st_writer_free(w);
  weft_st_file *f = open_ok(p);
  ASSERT(memcmp(weft_st_find(f, "x")->data, b, 3) == 0);
  weft_st_close(f);
  struct stat st;
  ASSERT_OK(stat(p, &st));
  ASSERT_EQ(st.st_mode & 0777, 0640); /* kept the replaced file's mode */
  ASSERT_EQ(count_dir_entries(weft_test_tmpdir()), 1); /* no temp left */
}

TEST(writer_relative_path_in_cwd) {
  ASSERT_OK(chdir(weft_test_tmpdir()));
  weft_st_writer *w;
  ASSERT_OK(weft_st_writer_new(&w));
  ASSERT_OK(weft_st_writer_save(w, "rel.safetensors", NULL, 0));
  weft_st_writer_free(w);
  weft_st_file *f = open_ok("rel.safetensors");
  ASSERT_EQ(weft_st_count(f), 0);
  weft_st_close(f);
  struct stat st;
  ASSERT_OK(stat("rel.safetensors", &st));
  ASSERT_EQ(st.st_size, 16); /* 8 + "{}" padded to 8 */
}

TEST(writer_failure_leaves_nothing) {
  uint8_t b = 1;
  int64_t s = 1;
  weft_st_writer *w;
  ASSERT_OK(weft_st_writer_new(&w));
  ASSERT_OK(weft_st_writer_add(w, "x", WEFT_ST_U8, 1, &s, &b));
  char err[1024] = "";
  /* missing directory */
  const char *p = path_in_tmp("no/such/dir/x.safetensors");
  ASSERT_EQ(weft_st_writer_save(w, p, err, sizeof err), WEFT_ENOENT);
  ASSERT_CONTAINS(err, p);
  ASSERT_CONTAINS(err, "cannot create a temporary file");
  /* target is a directory: rename fails, target and folder untouched */
  p = path_in_tmp("isdir.safetensors");
  ASSERT_OK(mkdir(p, 0755));
  ASSERT_EQ(weft_st_writer_save(w, p, err, sizeof err), WEFT_EIO);
  ASSERT_CONTAINS(err, "cannot rename");
  struct stat st;
  ASSERT_OK(stat(p, &st));
  ASSERT(S_ISDIR(st.st_mode));
  ASSERT_EQ(count_dir_entries(weft_test_tmpdir()), 1);
  weft_st_writer_free(w);
}

TEST(writer_rejects_bad_input) {
  weft_st_writer *w;
  ASSERT_OK(weft_st_writer_new(&w));
  uint8_t b[4] = {0};
  int64_t s1 = 1, neg = -1, s9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  int64_t huge[2] = {INT64_MAX, 2};
  ASSERT_OK(weft_st_writer_add(w, "a", WEFT_ST_U8, 1, &s1, b));
  ASSERT_EQ(weft_st_writer_add(w, "a", WEFT_ST_U8, 1, &s1, b), WEFT_EDUP);
  ASSERT_EQ(weft_st_writer_add(w, "__metadata__", WEFT_ST_U8, 1, &s1, b),
            WEFT_EINVAL);
  ASSERT_EQ(weft_st_writer_add(w, "n", WEFT_ST_U8, 1, &neg, b), WEFT_EINVAL);
  ASSERT_EQ(weft_st_writer_add(w, "9", WEFT_ST_U8, 9, s9, b), WEFT_EINVAL);
  ASSERT_EQ(weft_st_writer_add(w, "h", WEFT_ST_U8, 2, huge, b), WEFT_ERANGE);
  ASSERT_EQ(weft_st_writer_add(w, "d", WEFT_ST_DTYPE_COUNT, 1, &s1, b),
            WEFT_EINVAL);
  ASSERT_EQ(weft_st_writer_add(w, "\xff", WEFT_ST_U8, 1, &s1, b), WEFT_EINVAL);
  ASSERT_EQ(weft_st_writer_add(w, "nodata", WEFT_ST_U8, 1, &s1, NULL),
            WEFT_EINVAL);
  ASSERT_EQ(weft_st_writer_meta(w, "k", "\xc3"), WEFT_EINVAL);
  weft_st_writer_free(w);
}

/* ---- family guess ------------------------------------------------------ */

/* Writes a file with the given keys (zero-size U8 tensors, except keys given
 * as "key=AxB", which get that shape) and returns its family. */
static const char *family_of(const char *const *keys) {
  weft_st_writer *w;
  ASSERT_OK(weft_st_writer_new(&w));
  static uint8_t zeros[1 << 16];
  for (int i = 0; keys[i]; i++) {
    char key[256];
    snprintf(key, sizeof key, "%s", keys[i]);
    int64_t shape[2] = {0, 0};
    int32_t nd = 1;
    char *eq = strchr(key, '=');
    if (eq) {
      *eq = '\0';
      ASSERT_EQ(sscanf(eq + 1, "%" SCNd64 "x%" SCNd64, &shape[0], &shape[1]),
                2);
      nd = 2;
      ASSERT(shape[0] * shape[1] <= (int64_t)sizeof zeros);
    }
    ASSERT_OK(weft_st_writer_add(w, key, WEFT_ST_U8, nd, shape, zeros));
  }
  const char *p = path_in_tmp("family.safetensors");
  ASSERT_OK(weft_st_writer_save(w, p, NULL, 0));
  weft_st_writer_free(w);
  weft_st_file *f = open_ok(p);
  const char *fam = weft_st_guess_family(f); /* a static string */
  weft_st_close(f);
  return fam;
}

#define UNET_K "model.diffusion_model.input_blocks.1.1.transformer_blocks.0."

TEST(family_sd1) {
  const char *k[] = {
      "model.diffusion_model.input_blocks.0.0.weight",
      UNET_K "attn2.to_k.weight=1x768",
      "cond_stage_model.transformer.text_model.embeddings.token_embedding."
      "weight",
      "first_stage_model.decoder.conv_in.weight", NULL};
  ASSERT_STR_EQ(family_of(k), "SD1.x");
}

TEST(family_sd1_unet_only_by_context_dim) {
  const char *k[] = {"model.diffusion_model.input_blocks.0.0.weight",
                     UNET_K "attn2.to_k.weight=64x768", NULL};
  ASSERT_STR_EQ(family_of(k), "SD1.x");
}

TEST(family_sd2_openclip) {
  const char *k[] = {"model.diffusion_model.input_blocks.0.0.weight",
                     "cond_stage_model.model.transformer.resblocks.0.attn."
                     "in_proj_weight",
                     "first_stage_model.encoder.conv_in.weight", NULL};
  ASSERT_STR_EQ(family_of(k), "SD2.x");
}

TEST(family_sd2_by_context_dim) {
  const char *k[] = {"model.diffusion_model.input_blocks.0.0.weight",
                     UNET_K "attn2.to_k.weight=1x1024",
                     "cond_stage_model.transformer.text_model.x", NULL};
  ASSERT_STR_EQ(family_of(k), "SD2.x");
}

TEST(family_sdxl) {
  const char *k[] = {"model.diffusion_model.label_emb.0.0.weight",
                     "conditioner.embedders.0.transformer.text_model.x",
                     "conditioner.embedders.1.model.ln_final.weight",
                     "first_stage_model.decoder.conv_in.weight", NULL};
  ASSERT_STR_EQ(family_of(k), "SDXL");
}

TEST(family_sdxl_unet_only_by_context_dim) {
  const char *k[] = {"model.diffusion_model.input_blocks.0.0.weight",
                     UNET_K "attn2.to_k.weight=1x2048", NULL};
  ASSERT_STR_EQ(family_of(k), "SDXL");
}

TEST(family_sd3) {
  const char *k[] = {
      "model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight",
      "model.diffusion_model.context_embedder.weight",
      "text_encoders.clip_l.transformer.text_model.x", NULL};
  ASSERT_STR_EQ(family_of(k), "SD3");
}

TEST(family_sd3_diffusers_transformer) {
  const char *k[] = {"context_embedder.weight", "x_embedder.proj.weight",
                     "transformer_blocks.0.attn.add_k_proj.weight", NULL};
  ASSERT_STR_EQ(family_of(k), "SD3");
}

TEST(family_lora_kohya) {
  const char *k[] = {
      "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
      "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight",
      "lora_te_text_model_encoder_layers_0_mlp_fc1.alpha", NULL};
  ASSERT_STR_EQ(family_of(k), "LoRA");
}

TEST(family_lora_peft) {
  const char *k[] = {"unet.down_blocks.0.attentions.0.to_q.lora_A.weight",
                     "unet.down_blocks.0.attentions.0.to_q.lora_B.weight",
                     NULL};
  ASSERT_STR_EQ(family_of(k), "LoRA");
}

TEST(family_lora_lycoris_hada) {
  const char *k[] = {"lycoris_foo.hada_w1_a", "lycoris_foo.hada_w1_b", NULL};
  ASSERT_STR_EQ(family_of(k), "LoRA");
}

TEST(family_controlnet) {
  const char *k[] = {"control_model.input_blocks.0.0.weight",
                     "control_model.input_hint_block.0.weight",
                     "control_model.zero_convs.0.0.weight", NULL};
  ASSERT_STR_EQ(family_of(k), "ControlNet");
}

TEST(family_controlnet_diffusers) {
  const char *k[] = {"controlnet_cond_embedding.conv_in.weight",
                     "down_blocks.0.attentions.0.proj_in.weight",
                     "conv_in.weight", "time_embedding.linear_1.weight", NULL};
  ASSERT_STR_EQ(family_of(k), "ControlNet");
}

TEST(family_vae_original) {
  const char *k[] = {"encoder.down.0.block.0.conv1.weight",
                     "decoder.up.0.block.0.conv1.weight", "quant_conv.weight",
                     "post_quant_conv.weight", NULL};
  ASSERT_STR_EQ(family_of(k), "VAE");
}

TEST(family_vae_diffusers) {
  const char *k[] = {"encoder.down_blocks.0.resnets.0.conv1.weight",
                     "decoder.up_blocks.0.resnets.0.conv1.weight",
                     "encoder.conv_in.weight", "post_quant_conv.bias", NULL};
  ASSERT_STR_EQ(family_of(k), "VAE");
}

TEST(family_vae_first_stage_only) {
  const char *k[] = {"first_stage_model.encoder.conv_in.weight",
                     "first_stage_model.decoder.conv_out.weight", NULL};
  ASSERT_STR_EQ(family_of(k), "VAE");
}

TEST(family_clip) {
  const char *k[] = {"text_model.embeddings.token_embedding.weight",
                     "text_model.encoder.layers.0.mlp.fc1.weight",
                     "text_model.final_layer_norm.weight", NULL};
  ASSERT_STR_EQ(family_of(k), "CLIP");
}

TEST(family_unet_diffusers) {
  const char *k[] = {"conv_in.weight", "time_embedding.linear_1.weight",
                     "down_blocks.0.attentions.0.proj_in.weight",
                     "up_blocks.1.resnets.0.conv1.weight", NULL};
  ASSERT_STR_EQ(family_of(k), "UNet");
}

TEST(family_unknown) {
  const char *k[] = {"layers.0.weight", "layers.1.weight", NULL};
  ASSERT_STR_EQ(family_of(k), "unknown");
  const char *k2[] = {"model.diffusion_model.input_blocks.0.0.weight", NULL};
  ASSERT_STR_EQ(family_of(k2), "unknown");
}

/* ---- weft inspect ------------------------------------------------------ */

typedef struct captured {
  int rc;
  char *out, *err;
} captured;

/* Runs weft_cmd_inspect with stdout and stderr sent to files. */
static captured run_inspect(int argc, const char **argv) {
  const char *po = path_in_tmp("stdout.txt"), *pe = path_in_tmp("stderr.txt");
  fflush(stdout);
  fflush(stderr);
  int so = dup(1), se = dup(2);
  int fo = open(po, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  int fe = open(pe, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT(so >= 0 && se >= 0 && fo >= 0 && fe >= 0);
  dup2(fo, 1);
  dup2(fe, 2);
  captured c;
  c.rc = weft_cmd_inspect(argc, (char **)argv);
  fflush(stdout);
  fflush(stderr);
  dup2(so, 1);
  dup2(se, 2);
  close(so), close(se), close(fo), close(fe);
  c.out = read_all(po, NULL);
  c.err = read_all(pe, NULL);
  return c;
}

static void captured_free(captured *c) {
  free(c->out);
  free(c->err);
}

TEST(inspect_prints_summary) {
  const char *p = sample("py_torch.safetensors");
  const char *argv[] = {"inspect", p};
  captured c = run_inspect(2, argv);
  fprintf(stderr, "%s", c.out);
  ASSERT_EQ(c.rc, 0);
  ASSERT_STR_EQ(c.err, "");
  ASSERT_CONTAINS(c.out, p);
  ASSERT_CONTAINS(c.out, "tensors:  15\n");
  /* f32, empty, scalar, the 1x1x1x1 weight: 4 F32 tensors, 24+0+4+4 bytes */
  ASSERT_CONTAINS(c.out, "dtypes:   F64           1 tensor              32 "
                         "bytes\n          F32           4 tensors             "
                         "32 bytes\n");
  ASSERT_CONTAINS(c.out, "\n          BOOL          1 tensor               3 "
                         "bytes\ntotal:    143 bytes\n");
  ASSERT_CONTAINS(c.out, "metadata: 2 entries\n");
  ASSERT_CONTAINS(c.out, "format = pt\n");
  ASSERT_CONTAINS(c.out, "weft.note = fixture \xc3\xa9\n");
  ASSERT_CONTAINS(c.out, "family:   unknown\n");
  ASSERT(strstr(c.out, "i64 I64") == NULL); /* no keys without --keys */
  captured_free(&c);
}

TEST(inspect_keys_lists_every_tensor) {
  const char *argv[] = {"inspect", "--keys", sample("py_torch.safetensors")};
  captured c = run_inspect(3, argv);
  ASSERT_EQ(c.rc, 0);
  ASSERT_CONTAINS(c.out, "\ni64 I64 [4] 32\n");
  ASSERT_CONTAINS(c.out, "\nf32 F32 [2,3] 24\n");
  ASSERT_CONTAINS(c.out, "\nscalar F32 [] 4\n");
  ASSERT_CONTAINS(c.out, "\nempty F32 [0,4] 0\n");
  ASSERT_CONTAINS(c.out, "\nbool BOOL [3] 3\n");
  int lines = 0;
  const char *blank = strstr(c.out, "\n\n");
  ASSERT(blank != NULL);
  for (const char *s = blank + 1; *s; s++)
    lines += *s == '\n';
  ASSERT_EQ(lines, 1 + 15); /* the blank line, then one per tensor */
  captured_free(&c);
}

TEST(inspect_json) {
  const char *p = sample("py_numpy.safetensors");
  const char *argv[] = {"inspect", "--json", "--keys", p};
  captured c = run_inspect(4, argv);
  ASSERT_EQ(c.rc, 0);
  char want[8192];
  snprintf(want, sizeof want,
           "{\"file\":\"%s\",\"tensors\":4,\"total_bytes\":32,\"dtypes\":{"
           "\"F16\":{\"tensors\":1,\"bytes\":4},"
           "\"U64\":{\"tensors\":1,\"bytes\":16},"
           "\"U32\":{\"tensors\":1,\"bytes\":8},"
           "\"U16\":{\"tensors\":1,\"bytes\":4}},"
           "\"metadata\":{},\"family\":\"unknown\",\"keys\":["
           "{\"key\":\"u64\",\"dtype\":\"U64\",\"shape\":[2],\"offset\":0,"
           "\"bytes\":16},"
           "{\"key\":\"u32\",\"dtype\":\"U32\",\"shape\":[2],\"offset\":16,"
           "\"bytes\":8},"
           "{\"key\":\"f16\",\"dtype\":\"F16\",\"shape\":[1,2],\"offset\":24,"
           "\"bytes\":4},"
           "{\"key\":\"u16\",\"dtype\":\"U16\",\"shape\":[2],\"offset\":28,"
           "\"bytes\":4}]}\n",
           p);
  ASSERT_STR_EQ(c.out, want);
  captured_free(&c);
}

TEST(inspect_json_escapes_metadata) {
  weft_st_writer *w;
  ASSERT_OK(weft_st_writer_new(&w));
  ASSERT_OK(weft_st_writer_meta(w, "k\"", "a\nb\\c\x01"));
  const char *p = path_in_tmp("meta.safetensors");
  ASSERT_OK(weft_st_writer_save(w, p, NULL, 0));
  weft_st_writer_free(w);
  const char *argv[] = {"inspect", "--json", p};
  captured c = run_inspect(3, argv);
  ASSERT_EQ(c.rc, 0);
  ASSERT_CONTAINS(c.out, "\"metadata\":{\"k\\\"\":\"a\\nb\\\\c\\u0001\"}");
  captured_free(&c);
  const char *argv2[] = {"inspect", p};
  c = run_inspect(2, argv2);
  ASSERT_CONTAINS(c.out, "k\" = a\\x0ab\\c\\x01\n");
  captured_free(&c);
}

TEST(inspect_help_returns_0) {
  const char *argv[] = {"inspect", "--help"};
  captured c = run_inspect(2, argv);
  ASSERT_EQ(c.rc, 0);
  ASSERT_CONTAINS(c.out, "usage: weft inspect [--keys] [--json] FILE");
  ASSERT_STR_EQ(c.err, "");
  captured_free(&c);
}

TEST(inspect_bad_usage_returns_2) {
  const char *a1[] = {"inspect"};
  captured c = run_inspect(1, a1);
  ASSERT_EQ(c.rc, 2);
  ASSERT_CONTAINS(c.err, "no file given");
  ASSERT_CONTAINS(c.err, "usage:");
  ASSERT_STR_EQ(c.out, "");
  captured_free(&c);
  const char *a2[] = {"inspect", "--frobnicate", "x.safetensors"};
  c = run_inspect(3, a2);
  ASSERT_EQ(c.rc, 2);
  ASSERT_CONTAINS(c.err, "unknown option '--frobnicate'");
  captured_free(&c);
  const char *a3[] = {"inspect", "a.safetensors", "b.safetensors"};
  c = run_inspect(3, a3);
  ASSERT_EQ(c.rc, 2);
  ASSERT_CONTAINS(c.err, "one file at a time");
  captured_free(&c);
}

TEST(inspect_malformed_file_returns_2) {
  const char *p = write_st("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],"
                           "\"data_offsets\":[0,20]}}",
                           20);
  const char *argv[] = {"inspect", p};
  captured c = run_inspect(2, argv);
  ASSERT_EQ(c.rc, 2);
  ASSERT_STR_EQ(c.out, "");
  char want[4200];
  snprintf(want, sizeof want, "weft: %s: tensor 'w': shape [2, 3]", p);
  ASSERT(strncmp(c.err, want, strlen(want)) == 0);
  captured_free(&c);
  const char *argv2[] = {"inspect", path_in_tmp("missing.safetensors")};
  c = run_inspect(2, argv2);
  ASSERT_EQ(c.rc, 2);
  ASSERT_CONTAINS(c.err, "weft: ");
  ASSERT_CONTAINS(c.err, "No such file or directory");
  captured_free(&c);
}

TEST(inspect_shows_family_and_readable_sizes) {
  static uint8_t big[3000];
  int64_t s[2] = {1, 768}, s2[1] = {3000 - 768 * 2};
  weft_st_writer *w;
  ASSERT_OK(weft_st_writer_new(&w));
  ASSERT_OK(weft_st_writer_add(w, UNET_K "attn2.to_k.weight", WEFT_ST_F16, 2, s,
                               big));
  ASSERT_OK(weft_st_writer_add(w, "model.diffusion_model.out.0.weight",
                               WEFT_ST_U8, 1, s2, big));
  const char *p = path_in_tmp("sd1.safetensors");
  ASSERT_OK(weft_st_writer_save(w, p, NULL, 0));
  weft_st_writer_free(w);
  const char *argv[] = {"inspect", p};
  captured c = run_inspect(2, argv);
  ASSERT_EQ(c.rc, 0);
  ASSERT_CONTAINS(c.out, "F16           1 tensor            1536 bytes "
                         "(1.50 KiB)\n");
  ASSERT_CONTAINS(c.out, "total:    3000 bytes (2.93 KiB)\n");
  ASSERT_CONTAINS(c.out, "metadata: 0 entries\nfamily:   SD1.x\n");
  captured_free(&c);
}
