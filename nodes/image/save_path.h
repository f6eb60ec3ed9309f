/* save_path.h - SaveImage's file naming, as ComfyUI's get_save_image_path.
 *
 * filename_prefix "sub/dir/name" saves <output_dir>/sub/dir/name_00001_.png,
 * the counter being 1 + the highest already there.  The prefix must stay
 * inside the output directory: absolute paths and ".." components are
 * refused (ComfyUI refuses them too, after the fact). */
#ifndef WEFT_IMAGE_SAVE_PATH_H
#define WEFT_IMAGE_SAVE_PATH_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Replaces %width%, %height%, %year%, %month%, %day%, %hour%, %minute% and
 * %second% (zero-padded to 2 digits, as ComfyUI) in prefix; other text is
 * copied.  Returns 0, or WEFT_EINVAL when out is too small. */
int weft__prefix_expand(const char *prefix, int64_t width, int64_t height,
                        const struct tm *now, char *out, size_t outlen);

/* Splits an expanded prefix into its subfolder ("" or "a/b", normalised:
 * empty and "." components dropped) and file name.  Returns 0 or WEFT_EINVAL
 * with a message in err saying what is wrong: empty, absolute, a ".."
 * component, no file name after the last '/', or too long. */
int weft__prefix_split(const char *prefix, char *subdir, size_t sublen,
                       char *name, size_t namelen, char *err, size_t errlen);

/* 1 + the highest counter of files "<name>_<digits>[_...]" in dir (ComfyUI:
 * int(rest.split('_')[0]), files that do not parse count as 0); 1 when dir
 * has none or does not exist. */
int64_t weft__next_counter(const char *dir, const char *name);

/* mkdir -p of root/sub (sub may be "").  Returns 0 or WEFT_EIO with a
 * message naming the directory that could not be made. */
int weft__make_dirs(const char *root, const char *sub, char *err,
                    size_t errlen);

/* "<name>_<counter:05>_.png" with %batch_num% in name replaced by batch.
 * Returns 0 or WEFT_EINVAL when out is too small. */
int weft__save_file_name(const char *name, int64_t batch, int64_t counter,
                         char *out, size_t outlen);

#endif
