/*
 * synth.h - random-weight DeepSeek V4 Flash models in the exact published
 * GGUF layout (MODEL.md §2-§3, names/order as the tiny fixtures and ds4):
 * for demos, CI and speed tests without the real 81 GiB file.
 *
 * Presets: "tiny" (the tiny-q2 fixture dims: d 256, 6 layers, vocab 640),
 * "small" (d 1024, 8 layers, vocab 32768, 64 experts; ~0.4 GB), "full-q2" and
 * "full-q4" (the real hyperparameters and the ds4 q2 / q4 type mix; 80.8 and
 * 153 GiB at 43 layers). n_layer overrides the preset's layer count (the
 * compress-ratio schedule 0,0,4,128,4,... and the per-layer arrays follow;
 * the published-layout check requires 43).
 *
 * Weights are random but valid and sane: quant blocks are written directly
 * (random codes, f16 scales chosen so every dequantized matrix has RMS
 * gain/sqrt(n_in), gain 1 for inputs and 0.5 for the residual-writing
 * projections) so activations stay O(1) through all layers; norms are 1; HC
 * fn/base/scale are small; router bias and attention sinks are near 0;
 * tid2eid rows hold distinct valid expert ids. Generation is deterministic
 * per (seed, tensor name, row): the file and the in-memory variants hold
 * byte-identical tensor data, independent of the thread count.
 *
 * Tokenizer: GPT-2 byte-level BPE like the fixtures: ids 0/1 BOS/EOS, 2..257
 * the byte symbols, then merges learned on a small built-in text, then the
 * chat special tokens (MODEL.md §12.1), then unique filler tokens up to
 * n_vocab.
 *
 * Ownership: plans and memory images are owned by the caller (free with the
 * matching _free). Threading: every call is self-contained; generation uses
 * an internal pool of n_threads.
 */
#ifndef V4F_MODEL_SYNTH_H
#define V4F_MODEL_SYNTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

/* Expected element RMS of a random IQ2_XXS block per unit of d (grid RMS
 * 23.118 x E[((0.5 + ls)/4)^2]^0.5 with ls uniform in 0..15). */
#define V4F_SYNTH_IQ2_RMS_PER_D 53.362

/* Generation recipes (v4f_synth_tensor.role). */
enum {
    V4F_SYNTH_ROLE_CONST = 0, /* every element = a */
    V4F_SYNTH_ROLE_UNIF = 1,  /* uniform in [a - b, a + b] */
    V4F_SYNTH_ROLE_MAT = 2,   /* matrix: element RMS = a / sqrt(ne[0]), mean 0 */
    V4F_SYNTH_ROLE_TID = 3,   /* tid2eid: rows of ne[0] distinct ids in [0, a) */
};

typedef struct v4f_synth_tensor {
    char name[64];
    uint32_t type; /* v4f_ggml_type */
    uint32_t n_dims;
    uint64_t ne[3];
    uint64_t n_bytes;
    /* generation recipe */
    uint8_t role;   /* V4F_SYNTH_ROLE_* */
    float a, b;     /* role parameters (gain, or center/half-width) */
} v4f_synth_tensor;

typedef struct v4f_synth_plan v4f_synth_plan;

/* progress(ud, bytes_done, bytes_total) is called from the generating
 * thread after each chunk (may be NULL). */
typedef void (*v4f_synth_progress_fn)(void *ud, uint64_t done, uint64_t total);

typedef struct v4f_synth_opts {
    const char *preset; /* tiny | small | full-q2 | full-q4 */
    uint32_t n_layer;   /* 0: the preset's */
    uint64_t seed;
    int n_threads;      /* 0: all CPUs */
    /* memory only: leave every tensor above 1 MiB as zero pages (valid
     * all-zero blocks) so the directory of a full-size model can be
     * validated cheaply; small tensors (tid2eid, vectors) are generated. */
    bool skeleton;
    /* build the preset's MTP file instead (metadata and the mtp.0.* block,
     * the published MTP file's layout: Q4_K routed experts at full size) */
    bool mtp;
    v4f_synth_progress_fn progress;
    void *progress_ud;
} v4f_synth_opts;

/* Parse "PRESET" or "PRESET:LAYERS" (the --synthetic syntax). preset_out
 * receives a static string. */
v4f_status v4f_synth_parse_spec(const char *spec, const char **preset_out, uint32_t *n_layer_out,
                                v4f_err *err);
/* Comma-separated preset names, for help texts. */
const char *v4f_synth_preset_names(void);

/* The tensor directory and metadata of a preset (no data). */
v4f_status v4f_synth_plan_new(const char *preset, uint32_t n_layer, v4f_synth_plan **out,
                              v4f_err *err);
/* The preset's MTP file (v4f_synth_opts.mtp). */
v4f_status v4f_synth_plan_new_mtp(const char *preset, uint32_t n_layer, v4f_synth_plan **out,
                                  v4f_err *err);
void v4f_synth_plan_free(v4f_synth_plan *p);
uint32_t v4f_synth_plan_n_tensors(const v4f_synth_plan *p);
const v4f_synth_tensor *v4f_synth_plan_tensor(const v4f_synth_plan *p, uint32_t i);
uint64_t v4f_synth_plan_data_bytes(const v4f_synth_plan *p); /* tensor bytes, unpadded */
uint32_t v4f_synth_plan_n_vocab(const v4f_synth_plan *p);
uint32_t v4f_synth_plan_n_layer(const v4f_synth_plan *p);

/* Generate rows [row0, row1) of tensor t (rows = ne[0]-element rows over
 * all higher dims) into dst (row-major, (row1-row0) * row_bytes bytes). */
void v4f_synth_gen_rows(const v4f_synth_tensor *t, uint64_t seed, uint64_t row0, uint64_t row1,
                        void *dst);

/* Stream a model to path with the GGUF writer (never holds tensor data
 * beyond a few chunk buffers). The partial file is deleted on failure. */
v4f_status v4f_synth_write_file(const char *path, const v4f_synth_opts *o, v4f_err *err);

/* Build the same GGUF image in memory (anonymous mapping). Open it with
 * v4f_gguf_open_memory(*buf, *size, ...); release with v4f_synth_memory_free. */
v4f_status v4f_synth_build_memory_ex(const v4f_synth_opts *o, void **buf, size_t *size,
                                     v4f_err *err);
v4f_status v4f_synth_build_memory(const char *preset, uint32_t n_layer, uint64_t seed,
                                  void **buf, size_t *size, v4f_err *err);
void v4f_synth_memory_free(void *buf, size_t size);

#endif /* V4F_MODEL_SYNTH_H */
