/* fuzz_png.c - libFuzzer target for the PNG reader (nodes/image/png_io.c):
 * any bytes give an image or an error message, never a crash or a leak. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "png_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  weft__png_image img;
  char err[512];
  int rc = weft__png_read_mem(data, size, "fuzz", &img, err, sizeof err);
  if (rc == 0) {
    /* Touch every pixel so a short buffer shows up under ASan. */
    volatile float sum = 0.0f;
    size_t n = (size_t)img.width * img.height;
    for (size_t i = 0; i < n * 3; i++)
      sum += img.rgb[i];
    if (img.alpha)
      for (size_t i = 0; i < n; i++)
        sum += img.alpha[i];
    for (int32_t i = 0; i < img.n_text; i++)
      sum += (float)strlen(img.text[i].key) + strlen(img.text[i].value);
    if (!(sum >= 0.0f)) abort(); /* values are in 0..1 */
    weft__png_image_free(&img);
  } else if (!strstr(err, "fuzz")) {
    abort(); /* every message names the source */
  }
  return 0;
}
