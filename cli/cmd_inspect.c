/* cmd_inspect.c - `weft inspect`: summarises a safetensors file (tensor
 * count, dtypes, bytes, metadata, guessed model family), optionally listing
 * every tensor, as text or as one JSON object. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "weft/safetensors.h"
#include "weft/weft.h"

int weft_cmd_inspect(int argc, char **argv);

/* Metadata values (training settings of a LoRA, say) can run to kilobytes;
 * text output shows the start, --json the whole value. */
#define META_TEXT_MAX 200

static void usage(FILE *out) {
  fputs(
      "usage: weft inspect [--keys] [--json] FILE.safetensors\n"
      "\n"
      "Validates a safetensors file and prints its tensor count, tensors and\n"
      "bytes per dtype, total bytes, metadata and the model family guessed\n"
      "from its key names (SD1.x, SD2.x, SDXL, SD3, LoRA, ControlNet, VAE,\n"
      "CLIP, UNet or unknown).\n"
      "\n"
      "  --keys   also list every tensor, in file order:\n"
      "           KEY DTYPE [SHAPE] BYTES\n"
      "  --json   print one JSON object instead of text\n"
      "  --help   print this help\n"
      "\n"
      "Exit status: 0 ok, 2 bad usage or malformed file, 1 I/O error.\n",
      out);
}

/* Text output: the bytes as they are, but control characters escaped so a
 * hostile key or value cannot drive the terminal. */
static void put_text(FILE *out, const char *s, size_t max) {
  size_t n = 0;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++, n++) {
    if (n == max) {
      fprintf(out, "... (%zu bytes)", strlen(s));
      return;
    }
    if (*p < 0x20 || *p == 0x7f)
      fprintf(out, "\\x%02x", *p);
    else
      fputc(*p, out);
  }
}

static void put_json_string(FILE *out, const char *s) {
  fputc('"', out);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    switch (*p) {
    case '"': fputs("\\\"", out); break;
    case '\\': fputs("\\\\", out); break;
    case '\n': fputs("\\n", out); break;
    case '\r': fputs("\\r", out); break;
    case '\t': fputs("\\t", out); break;
    default:
      if (*p < 0x20 || *p == 0x7f)
        fprintf(out, "\\u%04x", *p);
      else
        fputc(*p, out); /* the reader checked the header is UTF-8 */
    }
  }
  fputc('"', out);
}

/* " (1.50 GiB)" for sizes where the byte count is hard to read. */
static void put_human(FILE *out, uint64_t n) {
  static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double x = (double)n;
  int u = 0;
  while (x >= 1024.0 && u < 5) {
    x /= 1024.0;
    u++;
  }
  if (u > 0) fprintf(out, " (%.2f %s)", x, unit[u]);
}

/* Dtypes in the order people read them: floats, then ints, widest first. */
static const weft_st_dtype dtype_order[WEFT_ST_DTYPE_COUNT] = {
    WEFT_ST_F64,     WEFT_ST_F32, WEFT_ST_F16, WEFT_ST_BF16, WEFT_ST_F8_E4M3,
    WEFT_ST_F8_E5M2, WEFT_ST_I64, WEFT_ST_I32, WEFT_ST_I16,  WEFT_ST_I8,
    WEFT_ST_U64,     WEFT_ST_U32, WEFT_ST_U16, WEFT_ST_U8,   WEFT_ST_BOOL};

static void put_shape(FILE *out, const weft_st_tensor *t) {
  fputc('[', out);
  for (int32_t d = 0; d < t->ndim; d++)
    fprintf(out, "%s%lld", d ? "," : "", (long long)t->shape[d]);
  fputc(']', out);
}

typedef struct summary {
  int32_t count[WEFT_ST_DTYPE_COUNT];
  uint64_t bytes[WEFT_ST_DTYPE_COUNT];
  uint64_t total;
} summary;

static void summarise(const weft_st_file *f, summary *s) {
  memset(s, 0, sizeof *s);
  for (int32_t i = 0; i < weft_st_count(f); i++) {
    const weft_st_tensor *t = weft_st_at(f, i);
    s->count[t->dtype]++;
    s->bytes[t->dtype] += t->nbytes;
    s->total += t->nbytes;
  }
}

static void print_text(const weft_st_file *f, bool keys, FILE *out) {
  summary s;
  summarise(f, &s);
  fputs("file:     ", out);
  put_text(out, weft_st_path(f), SIZE_MAX);
  fprintf(out, "\ntensors:  %d\n", (int)weft_st_count(f));
  bool first = true;
  for (int i = 0; i < WEFT_ST_DTYPE_COUNT; i++) {
    weft_st_dtype d = dtype_order[i];
    if (!s.count[d]) continue;
    fprintf(out, "%s%-8s %6d %-7s %14llu bytes",
            first ? "dtypes:   " : "          ", weft_st_dtype_name(d),
            (int)s.count[d], s.count[d] == 1 ? "tensor" : "tensors",
            (unsigned long long)s.bytes[d]);
    put_human(out, s.bytes[d]);
    fputc('\n', out);
    first = false;
  }
  fprintf(out, "total:    %llu bytes", (unsigned long long)s.total);
  put_human(out, s.total);
  fprintf(out, "\nmetadata: %d entries\n", (int)weft_st_meta_count(f));
  for (int32_t i = 0; i < weft_st_meta_count(f); i++) {
    fputs("          ", out);
    put_text(out, weft_st_meta_key(f, i), META_TEXT_MAX);
    fputs(" = ", out);
    put_text(out, weft_st_meta_value(f, i), META_TEXT_MAX);
    fputc('\n', out);
  }
  fprintf(out, "family:   %s\n", weft_st_guess_family(f));
  if (!keys) return;
  fputc('\n', out);
  for (int32_t i = 0; i < weft_st_count(f); i++) {
    const weft_st_tensor *t = weft_st_at(f, i);
    put_text(out, t->key, SIZE_MAX);
    fprintf(out, " %s ", weft_st_dtype_name(t->dtype));
    put_shape(out, t);
    fprintf(out, " %llu\n", (unsigned long long)t->nbytes);
  }
}

static void print_json(const weft_st_file *f, bool keys, FILE *out) {
  summary s;
  summarise(f, &s);
  fputs("{\"file\":", out);
  put_json_string(out, weft_st_path(f));
  fprintf(out, ",\"tensors\":%d,\"total_bytes\":%llu,\"dtypes\":{",
          (int)weft_st_count(f), (unsigned long long)s.total);
  bool first = true;
  for (int i = 0; i < WEFT_ST_DTYPE_COUNT; i++) {
    weft_st_dtype d = dtype_order[i];
    if (!s.count[d]) continue;
    fprintf(out, "%s\"%s\":{\"tensors\":%d,\"bytes\":%llu}", first ? "" : ",",
            weft_st_dtype_name(d), (int)s.count[d],
            (unsigned long long)s.bytes[d]);
    first = false;
  }
  fputs("},\"metadata\":{", out);
  for (int32_t i = 0; i < weft_st_meta_count(f); i++) {
    if (i) fputc(',', out);
    put_json_string(out, weft_st_meta_key(f, i));
    fputc(':', out);
    put_json_string(out, weft_st_meta_value(f, i));
  }
  fprintf(out, "},\"family\":\"%s\"", weft_st_guess_family(f));
  if (keys) {
    fputs(",\"keys\":[", out);
    for (int32_t i = 0; i < weft_st_count(f); i++) {
      const weft_st_tensor *t = weft_st_at(f, i);
      fputs(i ? ",{\"key\":" : "{\"key\":", out);
      put_json_string(out, t->key);
      fprintf(out,
              ",\"dtype\":\"%s\",\"shape\":", weft_st_dtype_name(t->dtype));
      put_shape(out, t);
      fprintf(out, ",\"offset\":%llu,\"bytes\":%llu}",
              (unsigned long long)t->offset, (unsigned long long)t->nbytes);
    }
    fputc(']', out);
  }
  fputs("}\n", out);
}

int weft_cmd_inspect(int argc, char **argv) {
  bool keys = false, json = false, opts = true;
  const char *path = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (opts && strcmp(a, "--") == 0) {
      opts = false;
    } else if (opts && (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)) {
      usage(stdout);
      return 0;
    } else if (opts && strcmp(a, "--keys") == 0) {
      keys = true;
    } else if (opts && strcmp(a, "--json") == 0) {
      json = true;
    } else if (opts && a[0] == '-' && a[1] != '\0') {
      fprintf(stderr, "weft inspect: unknown option '%s'\n", a);
      usage(stderr);
      return 2;
    } else if (path) {
      fprintf(stderr, "weft inspect: one file at a time ('%s' and '%s')\n",
              path, a);
      usage(stderr);
      return 2;
    } else {
      path = a;
    }
  }
  if (!path) {
    fputs("weft inspect: no file given\n", stderr);
    usage(stderr);
    return 2;
  }
  char err[1024] = "";
  weft_st_file *f = NULL;
  int rc = weft_st_open(path, &f, err, sizeof err);
  if (rc) {
    fprintf(stderr, "weft: %s\n", err[0] ? err : weft_strerror(rc));
    return weft_exit_code(rc);
  }
  if (json)
    print_json(f, keys, stdout);
  else
    print_text(f, keys, stdout);
  weft_st_close(f);
  if (fflush(stdout) != 0) {
    perror("weft: writing output");
    return 1;
  }
  return 0;
}
