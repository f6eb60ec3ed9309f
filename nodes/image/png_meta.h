/* png_meta.h - the text SaveImage writes next to the pixels, so that other
 * tools can read how an image was made:
 *
 *   "parameters"  A1111's infotext ("prompt\nNegative prompt: ...\nSteps:
 *                 20, Sampler: Euler, ..."), which A1111, Forge, civitai and
 *                 most image viewers show and parse;
 *   "prompt"      the run in ComfyUI's API format (ComfyUI's own key: its
 *                 "Load" / drag-and-drop rebuilds the workflow from it);
 *   "weft"        {"version": 1, "graph": YAML, "inputs": {...},
 *                 "graph_file": name}: `weft run IMAGE.png` reruns it.
 *
 * Pure functions over the JSON the runtime's run_info service gives; no
 * runtime needed.  Every returned string is malloc'd; the caller frees. */
#ifndef WEFT_IMAGE_PNG_META_H
#define WEFT_IMAGE_PNG_META_H

#include <stdint.h>

/* A1111's "parameters" text for the image the node save_id of prompt_json
 * (ComfyUI API JSON) saves, found by walking upstream from it: the nearest
 * KSampler or KSamplerAdvanced gives Steps, Sampler (with the scheduler),
 * CFG scale, Seed and Denoising strength; its positive and negative inputs
 * lead to CLIPTextEncode texts, latent_image to an EmptyLatentImage's size
 * (else width x height, the saved image's), model to a
 * CheckpointLoaderSimple's ckpt_name (the Model field: its file name
 * without folder and extension), the positive encoder's clip to a
 * CLIPSetLastLayer (Clip skip).  NULL when no sampler feeds the node (or
 * the JSON is unreadable, or memory runs out). */
char *weft__meta_parameters(const char *prompt_json, const char *save_id,
                            int64_t width, int64_t height);

/* A1111's name for a ComfyUI sampler and scheduler: "Euler", "Euler a",
 * "DPM++ 2M Karras" (karras and exponential are part of the name, as
 * A1111 before 1.9 and civitai write them; other schedulers go to a
 * "Schedule type" field, *schedule_type set, NULL for normal/karras/
 * exponential).  Names A1111 lacks stay as ComfyUI spells them.  Writes
 * into buf (64 bytes are enough for the known names). */
const char *weft__meta_sampler_name(const char *sampler, const char *scheduler,
                                    const char **schedule_type, char *buf,
                                    int len);

/* The "weft" record as ASCII JSON (so it fits a tEXt chunk); inputs_json
 * and graph_file may be NULL.  NULL when graph is NULL or on failure. */
char *weft__meta_weft_record(const char *graph, const char *inputs_json,
                             const char *graph_file);

/* json re-encoded with non-ASCII characters escaped (Python's json.dumps
 * default, which ComfyUI uses), so it fits a tEXt chunk.  NULL when json
 * does not parse. */
char *weft__meta_ascii_json(const char *json);

#endif
