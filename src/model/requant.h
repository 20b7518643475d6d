/*
 * requant.h - re-quantize a model's routed experts into the other published
 * layout (`v4flash quantize`): q4 (Q4_K experts, 153 GiB) -> q2 (IQ2_XXS
 * gate/up, Q2_K down, 81 GiB) so the model fits one 141 GB card, or q2 -> q4
 * (no quality gained: the q2 rounding stays).
 *
 * Everything but the routed expert tensors is copied byte for byte; the
 * metadata is copied in order. Each expert matrix is dequantized to float32
 * and quantized with the engine's quantizers (IQ2_XXS with the per-column
 * importance derived from the matrix itself: the published q2 used an
 * importance matrix from real activations, which this has no access to, so
 * its rounding is somewhat worse than the published file's). The output is
 * written through the streaming GGUF writer (temp name, fsync, deleted on
 * failure) and opened again to check its layout.
 *
 * Ownership: borrows the model. Threading: uses a pool of n_threads for the
 * expert matrices (one expert per task); progress calls run on the caller's
 * thread.
 */
#ifndef V4F_MODEL_REQUANT_H
#define V4F_MODEL_REQUANT_H

#include <stdint.h>

#include "model/model.h"

typedef struct v4f_requant_opts {
    const char *experts; /* "q2" or "q4" */
    int n_threads;       /* <= 0: all CPUs */
    /* optional: after each tensor (done / total bytes of the output) */
    void (*progress)(void *ud, uint64_t done, uint64_t total);
    void *progress_ud;
} v4f_requant_opts;

typedef struct v4f_requant_stats {
    uint64_t n_tensors, n_converted; /* tensors written / re-quantized */
    uint64_t bytes_in, bytes_out;    /* tensor data */
} v4f_requant_stats;

/* Write m with its routed experts in o->experts' types to out_path.
 * INVALID_ARG for an unknown target, a target equal to the input's types
 * (nothing to do) or out_path naming an input file; I/O errors from the
 * writer (the partial file is deleted). */
v4f_status v4f_requant(const v4f_model *m, const char *out_path, const v4f_requant_opts *o,
                       v4f_requant_stats *st, v4f_err *err);

#endif /* V4F_MODEL_REQUANT_H */
