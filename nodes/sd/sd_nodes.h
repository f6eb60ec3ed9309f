/* sd_nodes.h - what the sd plugin's node files share: descriptor macros and
 * the node definitions each file contributes to the plugin's table. */
#ifndef WEFT_SD_NODES_H
#define WEFT_SD_NODES_H

#include <stdbool.h>

#include "weft/plugin.h"

#define SD_PORT(n, t, d) {sizeof(weft_port_def), n, t, NULL, 0, d}
#define SD_P_INT(n, def, lo, hi, d)                                            \
  {sizeof(weft_param_def), n, WEFT_TYPE_INT, def, 0, NULL, lo, hi, NULL, 0, d}
#define SD_P_FLOAT(n, def, lo, hi, d)                                          \
  {sizeof(weft_param_def), n, WEFT_TYPE_FLOAT, 0, def, NULL, lo, hi, NULL, 0, d}
#define SD_P_ENUM(n, def, ch, d)                                               \
  {sizeof(weft_param_def), n, WEFT_TYPE_ENUM, def, 0, NULL, 1, 0, ch, 0, d}
#define SD_P_STR(n, def, fl, d)                                                \
  {sizeof(weft_param_def), n, WEFT_TYPE_STRING, 0, 0, def, 1, 0, NULL, fl, d}

/* latent_nodes.c */
extern const weft_node_def sd_latent_upscale_def;
extern const weft_node_def sd_latent_upscale_by_def;
extern const weft_node_def sd_set_noise_mask_def;

/* Resizes planes of h x w floats to oh x ow with one of LatentUpscale's
 * methods (index into its list), optionally center-cropped first. */
int sd_latent_resize(const float *src, int64_t planes, int64_t h, int64_t w,
                     float *dst, int64_t oh, int64_t ow, int mode, bool crop);

#endif
