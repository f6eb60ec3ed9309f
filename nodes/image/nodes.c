/* nodes.c - the "image" plugin: LoadImage, SaveImage, ImageScale,
 * ImageInvert, ImageBlur, ImageBlend, with ComfyUI's names and parameters.
 * Each node is a thin wrapper: it checks its inputs, allocates outputs
 * through the host and calls the pure functions of png_io.c, ops.c and
 * save_path.c. */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "ops.h"
#include "png_io.h"
#include "png_meta.h"
#include "save_path.h"
#include "weft/plugin.h"

/* Largest side ImageScale produces: ComfyUI's MAX_RESOLUTION. */
#define MAX_RESOLUTION 16384

/* ---- helpers shared by the nodes --------------------------------------- */

static int call_cancelled(void *ctx) {
  weft_call *call = ctx;
  return WEFT_HOST_HAS(call->host, is_cancelled) && call->host->is_cancelled(call);
}

static void progress(weft_call *call, int64_t k, int64_t n) {
  if (WEFT_HOST_HAS(call->host, progress)) call->host->progress(call, k, n);
}

/* An IMAGE input as a contiguous f32 [b, h, w, c] array on the CPU. */
typedef struct image_in {
  int64_t b, h, w, c;
  const float *data;
  float *owned; /* a contiguous copy of a strided input; freed by image_done */
} image_in;

static void image_done(image_in *im) {
  free(im->owned);
  im->owned = NULL;
}

static int get_image(weft_call *call, int index, image_in *im) {
  const weft_host *host = call->host;
  const char *port = call->def->inputs[index].name;
  memset(im, 0, sizeof *im);
  weft_value *v = call->inputs[index];
  const weft_tensor *t = v ? host->value_tensor(v) : NULL;
  if (!t) {
    host->error(call, "input '%s' is missing or is not a tensor", port);
    return WEFT_EMISSING;
  }
  if (t->dtype != WEFT_F32) {
    host->error(call, "input '%s' has dtype %d; IMAGE must be f32", port,
                (int)t->dtype);
    return WEFT_ETYPE;
  }
  if (t->device != WEFT_DEVICE_CPU) {
    host->error(call,
                "input '%s' is on device %d; the image nodes run on the CPU",
                port, (int)t->device);
    return WEFT_EUNSUPPORTED;
  }
  if (t->ndim != 4 || t->shape[0] <= 0 || t->shape[1] <= 0 ||
      t->shape[2] <= 0 || t->shape[3] <= 0) {
    host->error(call,
                "input '%s' must be an IMAGE [B,H,W,C] with every size > 0 "
                "(got %d dims)",
                port, (int)t->ndim);
    return WEFT_ETYPE;
  }
  im->b = t->shape[0];
  im->h = t->shape[1];
  im->w = t->shape[2];
  im->c = t->shape[3];
  int contiguous = t->stride[3] == 1 && t->stride[2] == im->c &&
                   t->stride[1] == im->w * im->c &&
                   (im->b == 1 || t->stride[0] == im->h * im->w * im->c);
  if (contiguous) {
    im->data = t->data;
    return 0;
  }
  im->owned = malloc(sizeof(float) * im->b * im->h * im->w * im->c);
  if (!im->owned) {
    host->error(call, "out of memory copying input '%s'", port);
    return WEFT_ENOMEM;
  }
  const float *src = t->data;
  float *d = im->owned;
  for (int64_t i = 0; i < im->b; i++)
    for (int64_t y = 0; y < im->h; y++)
      for (int64_t x = 0; x < im->w; x++)
        for (int64_t k = 0; k < im->c; k++)
          *d++ = src[i * t->stride[0] + y * t->stride[1] + x * t->stride[2] +
                     k * t->stride[3]];
  im->data = im->owned;
  return 0;
}

/* A new f32 tensor value of the given type and shape; *data receives its
 * storage.  NULL when the host is out of memory (it recorded the error). */
static weft_value *new_tensor(weft_call *call, weft_type type, int ndim,
                              const int64_t *shape, float **data) {
  weft_tensor view;
  weft_value *v =
      call->host->tensor_new(call, type, WEFT_F32, ndim, shape, &view);
  *data = v ? view.data : NULL;
  return v;
}

/* Resolves a relative path against the host's input directory. */
static int resolve_input(weft_call *call, const char *name, char *out,
                         size_t len) {
  const char *dir = NULL;
  if (name[0] != '/' && WEFT_HOST_HAS(call->host, input_dir))
    dir = call->host->input_dir(call);
  int n = dir && dir[0] ? snprintf(out, len, "%s/%s", dir, name)
                        : snprintf(out, len, "%s", name);
  return n < 0 || (size_t)n >= len ? WEFT_EINVAL : 0;
}

/* ---- LoadImage ---------------------------------------------------------- */

enum { LOAD_IMAGE };

static const weft_param_def load_params[] = {
    {.struct_size = sizeof(weft_param_def),
     .name = "image",
     .type = WEFT_TYPE_STRING,
     .def_string = "",
     .min = 1,
     .max = 0,
     .flags = WEFT_PARAM_PATH,
     .doc = "PNG file to load; a relative path is resolved against the input "
            "directory."},
};

static const weft_port_def load_outputs[] = {
    {.struct_size = sizeof(weft_port_def),
     .name = "IMAGE",
     .type = WEFT_TYPE_IMAGE,
     .doc = "The picture as RGB [1,H,W,3] in 0..1 (alpha goes to MASK)."},
    {.struct_size = sizeof(weft_port_def),
     .name = "MASK",
     .type = WEFT_TYPE_MASK,
     .doc = "1 - alpha as [1,H,W]; zeros [1,64,64] when the file has no "
            "transparency."},
};

static int load_run(weft_call *call) {
  const weft_host *host = call->host;
  const char *name = weft_param_string(call, LOAD_IMAGE);
  if (!name || !name[0]) {
    host->error(call, "param 'image' is empty: give the path of a PNG file");
    return WEFT_EINVAL;
  }
  char path[PATH_MAX];
  if (resolve_input(call, name, path, sizeof path)) {
    host->error(call, "param 'image': path '%s' is too long", name);
    return WEFT_EINVAL;
  }
  weft__png_image img;
  char err[512];
  int rc = weft__png_read(path, &img, err, sizeof err);
  if (rc) {
    host->error(call, "%s", err);
    return rc;
  }
  int64_t h = img.height, w = img.width;
  int64_t ishape[4] = {1, h, w, 3};
  float *pix = NULL, *mask = NULL;
  weft_value *iv = new_tensor(call, WEFT_TYPE_IMAGE, 4, ishape, &pix);
  int64_t mshape[3] = {1, img.alpha ? h : 64, img.alpha ? w : 64};
  weft_value *mv =
      iv ? new_tensor(call, WEFT_TYPE_MASK, 3, mshape, &mask) : NULL;
  if (!iv || !mv) {
    if (iv) host->value_release(iv);
    weft__png_image_free(&img);
    return WEFT_ENOMEM;
  }
  memcpy(pix, img.rgb, sizeof(float) * h * w * 3);
  if (img.alpha)
    for (int64_t i = 0; i < h * w; i++)
      mask[i] = 1.0f - img.alpha[i];
  else
    memset(mask, 0, sizeof(float) * 64 * 64);
  weft__png_image_free(&img);
  call->outputs[0] = iv;
  call->outputs[1] = mv;
  return 0;
}

static uint64_t mix64(uint64_t x) { /* splitmix64's finaliser */
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/* An edited file re-runs the node: its size, mtime (ns) and inode. */
static uint64_t load_fingerprint(weft_call *call) {
  const char *name = weft_param_string(call, LOAD_IMAGE);
  char path[PATH_MAX];
  struct stat st;
  if (!name || !name[0] || resolve_input(call, name, path, sizeof path) ||
      stat(path, &st) != 0)
    return 0; /* run reports the problem */
  uint64_t mt = (uint64_t)st.st_mtim.tv_sec * 1000000000ull +
                (uint64_t)st.st_mtim.tv_nsec;
  return mix64((uint64_t)st.st_size) ^ mix64(mt + 0x9e3779b97f4a7c15ull) ^
         mix64((uint64_t)st.st_ino * 3 + 1);
}

static const weft_node_def load_image = {
    .struct_size = sizeof(weft_node_def),
    .op = "LoadImage",
    .category = "image",
    .doc = "Loads a PNG file as an IMAGE and its transparency as a MASK. "
           "Reads 1- to 16-bit gray, gray+alpha, RGB, RGBA and palette files "
           "(16-bit exactly, v/65535); a tRNS chunk counts as alpha.  The "
           "file's size and modification time are part of the cache key, so "
           "an edited file is read again.",
    .outputs = load_outputs,
    .n_outputs = 2,
    .params = load_params,
    .n_params = 1,
    .run = load_run,
    .fingerprint = load_fingerprint,
};

/* ---- SaveImage ---------------------------------------------------------- */

enum { SAVE_PREFIX };

static const weft_port_def save_inputs[] = {
    {.struct_size = sizeof(weft_port_def),
     .name = "images",
     .type = WEFT_TYPE_IMAGE,
     .doc = "The images to save, one file per batch item; 1, 3 or 4 "
            "channels (gray, RGB, RGBA)."},
};

static const weft_param_def save_params[] = {
    {.struct_size = sizeof(weft_param_def),
     .name = "filename_prefix",
     .type = WEFT_TYPE_STRING,
     .def_string = "weft",
     .min = 1,
     .max = 0,
     .doc = "File name prefix inside the output directory; may contain "
            "subfolders (\"sub/name\") and %width%, %height%, %year%, "
            "%month%, %day%, %hour%, %minute%, %second%, %batch_num%.  "
            "Absolute paths and '..' are refused."},
};

static const weft_port_def save_outputs[] = {
    {.struct_size = sizeof(weft_port_def),
     .name = "images",
     .type = WEFT_TYPE_IMAGE,
     .doc = "The input images, unchanged (ComfyUI's output slot 0)."},
    {.struct_size = sizeof(weft_port_def),
     .name = "files",
     .type = WEFT_TYPE_STRING,
     .doc = "The written files' paths, one per line."},
};

/* The PNG text chunks (png_meta.h): "parameters" when a sampler made the
 * image, "prompt" and "weft" whenever the host describes the run.  Fills
 * text (values malloc'd, keys static) and returns how many; a chunk that
 * cannot be made is left out with a warning, never failing the save. */
static int32_t save_metadata(weft_call *call, int64_t w, int64_t h,
                             weft__png_text text[3]) {
  const weft_host *host = call->host;
  if (!WEFT_HOST_HAS(host, run_info)) return 0;
  const char *prompt = host->run_info(call, "prompt");
  char *vals[3] = {
      weft__meta_parameters(prompt, call->node_id, w, h),
      weft__meta_ascii_json(prompt),
      weft__meta_weft_record(host->run_info(call, "graph"),
                             host->run_info(call, "inputs"),
                             host->run_info(call, "graph_file")),
  };
  static const char *const keys[3] = {"parameters", "prompt", "weft"};
  int32_t n = 0;
  for (int i = 0; i < 3; i++) {
    if (vals[i]) {
      text[n].key = (char *)keys[i];
      text[n++].value = vals[i];
    } else if (i > 0 && WEFT_HOST_HAS(host, log)) {
      host->log(call, WEFT_LOG_WARN,
                "PNG text '%s' left out (no run "
                "description, or out of memory)",
                keys[i]);
    }
  }
  return n;
}

static int save_run(weft_call *call) {
  const weft_host *host = call->host;
  image_in im;
  int rc = get_image(call, 0, &im);
  if (rc) return rc;
  char err[1024], prefix[1024], sub[1024], name[512], dir[PATH_MAX];
  char *paths = NULL;
  size_t paths_len = 0;
  weft__png_text text[3];
  int32_t n_text = 0;
  if (im.c != 1 && im.c != 3 && im.c != 4) {
    host->error(call,
                "input 'images' has %lld channels; PNG takes 1 (gray), 3 "
                "(RGB) or 4 (RGBA)",
                (long long)im.c);
    rc = WEFT_EUNSUPPORTED;
    goto done;
  }
  if (im.w > 0x7fffffff || im.h > 0x7fffffff) {
    host->error(call, "input 'images' is too large for PNG");
    rc = WEFT_EUNSUPPORTED;
    goto done;
  }
  const char *raw = weft_param_string(call, SAVE_PREFIX);
  time_t now_t = time(NULL);
  struct tm now;
  localtime_r(&now_t, &now);
  if (weft__prefix_expand(raw ? raw : "", im.w, im.h, &now, prefix,
                          sizeof prefix)) {
    host->error(call, "param 'filename_prefix' is too long");
    rc = WEFT_EINVAL;
    goto done;
  }
  rc = weft__prefix_split(prefix, sub, sizeof sub, name, sizeof name, err,
                          sizeof err);
  if (rc) {
    host->error(call, "param %s", err);
    goto done;
  }
  const char *root = WEFT_HOST_HAS(host, output_dir) ? host->output_dir(call) : "";
  if (!root || !root[0]) root = ".";
  rc = weft__make_dirs(root, sub, err, sizeof err);
  if (rc) {
    host->error(call, "%s", err);
    goto done;
  }
  int n = snprintf(dir, sizeof dir, "%s%s%s", root, sub[0] ? "/" : "", sub);
  if (n < 0 || (size_t)n >= sizeof dir) {
    host->error(call, "output directory path is too long");
    rc = WEFT_EINVAL;
    goto done;
  }
  n_text = save_metadata(call, im.w, im.h, text);
  int64_t counter = weft__next_counter(dir, name);
  int64_t item = im.h * im.w * im.c;
  for (int64_t b = 0; b < im.b; b++) {
    if (call_cancelled(call)) {
      rc = WEFT_ECANCELED;
      goto done;
    }
    weft__png_pixels px = {im.data + b * item, (int32_t)im.w, (int32_t)im.h,
                           (int32_t)im.c};
    char tmp[PATH_MAX + 64], file[PATH_MAX + 600], fname[600];
    rc = weft__png_write_temp(dir, &px, text, n_text, WEFT__PNG_LEVEL, tmp,
                              sizeof tmp, err, sizeof err);
    if (rc) {
      host->error(call, "%s", err);
      goto done;
    }
    /* A name another writer took meanwhile is skipped, never overwritten. */
    int reported = 0; /* host->error already called */
    for (int tries = 0;; tries++, counter++) {
      if (weft__save_file_name(name, b, counter, fname, sizeof fname) ||
          snprintf(file, sizeof file, "%s/%s", dir, fname) >=
              (int)sizeof file) {
        host->error(call, "output file name for '%s' is too long", name);
        rc = WEFT_EINVAL;
        reported = 1;
        break;
      }
      rc = weft__png_publish(tmp, file, 1, err, sizeof err);
      if (rc != WEFT_EDUP) break;
      if (tries >= 100000) {
        host->error(call, "no free file name for '%s' in '%s'", name, dir);
        rc = WEFT_EIO;
        reported = 1;
        break;
      }
    }
    if (rc) {
      if (!reported) host->error(call, "%s", err);
      remove(tmp);
      goto done;
    }
    counter++;
    size_t fl = strlen(file);
    char *np = realloc(paths, paths_len + fl + 2);
    if (!np) {
      host->error(call, "out of memory");
      rc = WEFT_ENOMEM;
      goto done;
    }
    paths = np;
    if (paths_len) paths[paths_len++] = '\n';
    memcpy(paths + paths_len, file, fl + 1);
    paths_len += fl;
    progress(call, b + 1, im.b);
  }
  weft_value *pv = host->string_new(call, paths ? paths : "");
  if (!pv) {
    host->error(call, "out of memory");
    rc = WEFT_ENOMEM;
    goto done;
  }
  host->value_retain(call->inputs[0]);
  call->outputs[0] = call->inputs[0];
  call->outputs[1] = pv;
done:
  for (int32_t i = 0; i < n_text; i++)
    free(text[i].value);
  free(paths);
  image_done(&im);
  return rc;
}

static const weft_node_def save_image = {
    .struct_size = sizeof(weft_node_def),
    .op = "SaveImage",
    .category = "image",
    .doc = "Saves images as 8-bit PNG files in the output directory, named "
           "<prefix>_<counter:05>_.png as ComfyUI does (counter = 1 + the "
           "highest already there; an existing file is never overwritten).  "
           "Values are clipped to 0..1 and truncated to 8 bits like "
           "ComfyUI; each file is written to a temporary name, fsynced and "
           "renamed, so an interrupted run leaves no half image.  Every PNG "
           "carries the run as text: A1111's \"parameters\" (when a sampler "
           "made the image), ComfyUI's \"prompt\" (API JSON, which ComfyUI "
           "loads) and \"weft\" (the graph and its inputs: weft run "
           "IMAGE.png makes it again); see docs/comfyui.md.",
    .inputs = save_inputs,
    .n_inputs = 1,
    .outputs = save_outputs,
    .n_outputs = 2,
    .params = save_params,
    .n_params = 1,
    .flags = WEFT_NODE_OUTPUT,
    .run = save_run,
};

/* ---- ImageScale --------------------------------------------------------- */

enum { SCALE_METHOD, SCALE_WIDTH, SCALE_HEIGHT, SCALE_CROP };

static const char *const crop_choices[] = {"disabled", "center", NULL};

static const weft_port_def one_image_input[] = {
    {.struct_size = sizeof(weft_port_def),
     .name = "image",
     .type = WEFT_TYPE_IMAGE,
     .doc = "Input images [B,H,W,C]."},
};

static const weft_port_def one_image_output[] = {
    {.struct_size = sizeof(weft_port_def),
     .name = "IMAGE",
     .type = WEFT_TYPE_IMAGE,
     .doc = "Result images [B,H,W,C]."},
};

static const weft_param_def scale_params[] = {
    {.struct_size = sizeof(weft_param_def),
     .name = "upscale_method",
     .type = WEFT_TYPE_ENUM,
     .def_int = WEFT__RESIZE_NEAREST_EXACT,
     .min = 1,
     .max = 0,
     .choices = weft__resize_mode_names,
     .doc = "Interpolation, as torch.nn.functional.interpolate: "
            "nearest-exact, bilinear and bicubic (align_corners=False), area "
            "(adaptive average)."},
    {.struct_size = sizeof(weft_param_def),
     .name = "width",
     .type = WEFT_TYPE_INT,
     .def_int = 512,
     .min = 0,
     .max = MAX_RESOLUTION,
     .doc = "Target width; 0 keeps the aspect ratio from height."},
    {.struct_size = sizeof(weft_param_def),
     .name = "height",
     .type = WEFT_TYPE_INT,
     .def_int = 512,
     .min = 0,
     .max = MAX_RESOLUTION,
     .doc = "Target height; 0 keeps the aspect ratio from width."},
    {.struct_size = sizeof(weft_param_def),
     .name = "crop",
     .type = WEFT_TYPE_ENUM,
     .def_int = 0,
     .min = 1,
     .max = 0,
     .choices = crop_choices,
     .doc = "center: crop the input to the target aspect ratio first."},
};

static int scale_run(weft_call *call) {
  const weft_host *host = call->host;
  int64_t mode = weft_param_int(call, SCALE_METHOD);
  int64_t ow = weft_param_int(call, SCALE_WIDTH);
  int64_t oh = weft_param_int(call, SCALE_HEIGHT);
  int crop = weft_param_int(call, SCALE_CROP) == 1;
  if (mode < 0 || mode >= WEFT__RESIZE_COUNT || ow < 0 || oh < 0) {
    host->error(call,
                "bad params: upscale_method %lld, width %lld, height "
                "%lld",
                (long long)mode, (long long)ow, (long long)oh);
    return WEFT_EINVAL;
  }
  if (ow == 0 && oh == 0) { /* ComfyUI returns the input itself */
    if (!call->inputs[0]) return WEFT_EMISSING;
    host->value_retain(call->inputs[0]);
    call->outputs[0] = call->inputs[0];
    return 0;
  }
  image_in im;
  int rc = get_image(call, 0, &im);
  if (rc) return rc;
  weft__scale_target(im.w, im.h, &ow, &oh);
  if (ow > MAX_RESOLUTION || oh > MAX_RESOLUTION) {
    host->error(call,
                "scaling %lldx%lld to width %lld would make a %lldx%lld "
                "image; the limit is %d per side",
                (long long)im.w, (long long)im.h,
                (long long)weft_param_int(call, SCALE_WIDTH), (long long)ow,
                (long long)oh, MAX_RESOLUTION);
    image_done(&im);
    return WEFT_EINVAL;
  }
  int64_t shape[4] = {im.b, oh, ow, im.c};
  float *out;
  weft_value *v = new_tensor(call, WEFT_TYPE_IMAGE, 4, shape, &out);
  if (!v) {
    image_done(&im);
    return WEFT_ENOMEM;
  }
  weft__cancel cc = {call_cancelled, call};
  for (int64_t b = 0; b < im.b && !rc; b++) {
    rc = weft__image_scale(im.data + b * im.h * im.w * im.c, im.h, im.w, im.c,
                           out + b * oh * ow * im.c, oh, ow,
                           (weft__resize_mode)mode, crop, &cc);
    progress(call, b + 1, im.b);
  }
  image_done(&im);
  if (rc) {
    if (rc == WEFT_ENOMEM) host->error(call, "out of memory");
    if (rc == WEFT_EINVAL)
      host->error(call, "cannot scale to %lldx%lld", (long long)ow,
                  (long long)oh);
    host->value_release(v);
    return rc;
  }
  call->outputs[0] = v;
  return 0;
}

static const weft_node_def image_scale = {
    .struct_size = sizeof(weft_node_def),
    .op = "ImageScale",
    .category = "image/upscaling",
    .doc = "Resizes images to width x height with torch's interpolation "
           "(the same pixels as ComfyUI's ImageScale).  A 0 width or height "
           "keeps the aspect ratio; crop=center first cuts the input to the "
           "target's aspect ratio.  bicubic may overshoot 0..1, as in "
           "ComfyUI.",
    .inputs = one_image_input,
    .n_inputs = 1,
    .outputs = one_image_output,
    .n_outputs = 1,
    .params = scale_params,
    .n_params = 4,
    .run = scale_run,
};

/* ---- ImageInvert -------------------------------------------------------- */

static int invert_run(weft_call *call) {
  image_in im;
  int rc = get_image(call, 0, &im);
  if (rc) return rc;
  int64_t shape[4] = {im.b, im.h, im.w, im.c};
  float *out;
  weft_value *v = new_tensor(call, WEFT_TYPE_IMAGE, 4, shape, &out);
  if (v) weft__invert(im.data, im.b * im.h * im.w, im.c, out);
  image_done(&im);
  if (!v) return WEFT_ENOMEM;
  call->outputs[0] = v;
  return 0;
}

static const weft_node_def image_invert = {
    .struct_size = sizeof(weft_node_def),
    .op = "ImageInvert",
    .category = "image/color",
    .doc = "Inverts colours: 1 - x on every channel except alpha (a 4th "
           "channel is kept), as ComfyUI's ImageInvert.",
    .inputs = one_image_input,
    .n_inputs = 1,
    .outputs = one_image_output,
    .n_outputs = 1,
    .run = invert_run,
};

/* ---- ImageBlur ---------------------------------------------------------- */

enum { BLUR_RADIUS, BLUR_SIGMA };

static const weft_param_def blur_params[] = {
    {.struct_size = sizeof(weft_param_def),
     .name = "blur_radius",
     .type = WEFT_TYPE_INT,
     .def_int = 1,
     .min = 1,
     .max = 31,
     .doc = "Kernel radius in pixels: the kernel is 2r+1 wide."},
    {.struct_size = sizeof(weft_param_def),
     .name = "sigma",
     .type = WEFT_TYPE_FLOAT,
     .def_float = 1.0,
     .min = 0.1,
     .max = 10.0,
     .doc = "Gaussian width relative to the radius (ComfyUI samples the "
            "kernel on -1..1, so sigma 1 spans the whole radius)."},
};

static int blur_run(weft_call *call) {
  const weft_host *host = call->host;
  int64_t radius = weft_param_int(call, BLUR_RADIUS);
  double sigma = weft_param_float(call, BLUR_SIGMA);
  if (radius < 0 || radius > 1024 || !(sigma > 0.0)) {
    host->error(call, "bad params: blur_radius %lld, sigma %g",
                (long long)radius, sigma);
    return WEFT_EINVAL;
  }
  image_in im;
  int rc = get_image(call, 0, &im);
  if (rc) return rc;
  int64_t shape[4] = {im.b, im.h, im.w, im.c};
  float *out;
  weft_value *v = new_tensor(call, WEFT_TYPE_IMAGE, 4, shape, &out);
  if (!v) {
    image_done(&im);
    return WEFT_ENOMEM;
  }
  weft__cancel cc = {call_cancelled, call};
  int64_t item = im.h * im.w * im.c;
  for (int64_t b = 0; b < im.b && !rc; b++) {
    rc = weft__blur(im.data + b * item, im.h, im.w, im.c, (int)radius, sigma,
                    out + b * item, &cc);
    progress(call, b + 1, im.b);
  }
  image_done(&im);
  if (rc) {
    if (rc == WEFT_ENOMEM) host->error(call, "out of memory");
    host->value_release(v);
    return rc;
  }
  call->outputs[0] = v;
  return 0;
}

static const weft_node_def image_blur = {
    .struct_size = sizeof(weft_node_def),
    .op = "ImageBlur",
    .category = "image/postprocessing",
    .doc = "Gaussian blur with reflected borders, the same pixels as "
           "ComfyUI's ImageBlur (a (2r+1)^2 kernel sampled on -1..1).",
    .inputs = one_image_input,
    .n_inputs = 1,
    .outputs = one_image_output,
    .n_outputs = 1,
    .params = blur_params,
    .n_params = 2,
    .run = blur_run,
};

/* ---- ImageBlend --------------------------------------------------------- */

enum { BLEND_FACTOR, BLEND_MODE };

static const weft_port_def blend_inputs[] = {
    {.struct_size = sizeof(weft_port_def),
     .name = "image1",
     .type = WEFT_TYPE_IMAGE,
     .doc = "Base images; the result has their size, channels and alpha."},
    {.struct_size = sizeof(weft_port_def),
     .name = "image2",
     .type = WEFT_TYPE_IMAGE,
     .doc = "Blend layer; resized (bicubic, center crop) to image1's size "
            "when it differs."},
};

static const weft_param_def blend_params[] = {
    {.struct_size = sizeof(weft_param_def),
     .name = "blend_factor",
     .type = WEFT_TYPE_FLOAT,
     .def_float = 0.5,
     .min = 0.0,
     .max = 1.0,
     .doc = "0 gives image1, 1 the full blend mode result."},
    {.struct_size = sizeof(weft_param_def),
     .name = "blend_mode",
     .type = WEFT_TYPE_ENUM,
     .def_int = WEFT__BLEND_NORMAL,
     .min = 1,
     .max = 0,
     .choices = weft__blend_mode_names,
     .doc = "normal, multiply, screen, overlay, soft_light or difference "
            "(image1 - image2)."},
};

static int blend_run(weft_call *call) {
  const weft_host *host = call->host;
  double factor = weft_param_float(call, BLEND_FACTOR);
  int64_t mode = weft_param_int(call, BLEND_MODE);
  if (mode < 0 || mode >= WEFT__BLEND_COUNT) {
    host->error(call, "bad param blend_mode %lld", (long long)mode);
    return WEFT_EINVAL;
  }
  image_in a, b;
  int rc = get_image(call, 0, &a);
  if (rc) return rc;
  rc = get_image(call, 1, &b);
  if (rc) {
    image_done(&a);
    return rc;
  }
  weft_value *v = NULL;
  if (a.b != b.b && a.b != 1 && b.b != 1) {
    host->error(call,
                "image1 has %lld images and image2 %lld; the batch sizes "
                "must match or one must be 1",
                (long long)a.b, (long long)b.b);
    rc = WEFT_EINVAL;
    goto done;
  }
  int64_t shape[4] = {a.b > b.b ? a.b : b.b, a.h, a.w, a.c};
  float *out;
  v = new_tensor(call, WEFT_TYPE_IMAGE, 4, shape, &out);
  if (!v) {
    rc = WEFT_ENOMEM;
    goto done;
  }
  weft__cancel cc = {call_cancelled, call};
  rc = weft__blend_batch(a.data, a.b, a.h, a.w, a.c, b.data, b.b, b.h, b.w, b.c,
                         factor, (weft__blend_mode)mode, out, &cc);
  if (rc == WEFT_ENOMEM) host->error(call, "out of memory");
  if (rc == 0) {
    call->outputs[0] = v;
    v = NULL;
  }
done:
  if (v) host->value_release(v);
  image_done(&a);
  image_done(&b);
  return rc;
}

static const weft_node_def image_blend = {
    .struct_size = sizeof(weft_node_def),
    .op = "ImageBlend",
    .category = "image/postprocessing",
    .doc = "Blends image2 over image1: clamp(image1 * (1 - f) + mode(image1, "
           "image2) * f, 0, 1), as ComfyUI's ImageBlend.  image2 is resized "
           "to image1 (bicubic, center crop) and given image1's channel "
           "count; image1's alpha is kept.",
    .inputs = blend_inputs,
    .n_inputs = 2,
    .outputs = one_image_output,
    .n_outputs = 1,
    .params = blend_params,
    .n_params = 2,
    .run = blend_run,
};

/* ---- the plugin --------------------------------------------------------- */

static const weft_node_def *const image_nodes[] = {
    &load_image,   &save_image, &image_scale,
    &image_invert, &image_blur, &image_blend,
};

WEFT_PLUGIN_DEFINE("image", "0.1.0", image_nodes)
