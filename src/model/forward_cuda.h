/*
 * forward_cuda.h - the forward pass on one NVIDIA GPU (forward_cuda.c),
 * behind the session API of forward.h (a session created with
 * backend = V4F_BACKEND_CUDA delegates here).
 *
 * Weights are uploaded once at creation; the KV cache, the compressor
 * state and all scratch live on the GPU. Every token-dependent quantity
 * (positions, counts, routed experts, indexer selections) stays in device
 * memory, so a decode step runs with no host synchronisation and is
 * replayed from one captured CUDA graph. Routed experts that do not fit the
 * card's memory budget stay in host memory (the model's own pages, pinned
 * and mapped for the GPU) and are read over the bus by the same kernels.
 *
 * Ownership: borrows the model (must outlive it); owns its device buffers,
 * pinned staging buffers, host registrations and graph.
 * Threading: one caller thread at a time.
 * In a build without CUDA every entry point returns V4F_STATUS_UNSUPPORTED.
 */
#ifndef V4F_FORWARD_CUDA_H
#define V4F_FORWARD_CUDA_H

#include <stdbool.h>
#include <stdint.h>

#include "model/forward.h"

typedef struct v4f_gpu v4f_gpu;

/* Rows of a chunk's last-layer output an eval needs, the rule both forward
 * passes (forward.c, forward_cuda.c) use to skip the others in the last
 * layer: all (every position's logits, or the HC state), the last one (its
 * logits only: V4F_EVAL_LOGITS_LAST in the eval's last chunk) or none (an
 * earlier chunk, or no logits: only its KV rows are kept). */
typedef enum { V4F_OUT_ROWS_ALL, V4F_OUT_ROWS_LAST, V4F_OUT_ROWS_NONE } v4f_out_rows;
static inline v4f_out_rows v4f_eval_out_rows(bool logits, bool hc_out, unsigned flags, bool last_chunk) {
    const bool last_only = (flags & V4F_EVAL_LOGITS_LAST) != 0;
    if (hc_out || (logits && !last_only)) return V4F_OUT_ROWS_ALL;
    return logits && last_chunk ? V4F_OUT_ROWS_LAST : V4F_OUT_ROWS_NONE;
}

/* true when this binary was built with CUDA and a device is visible */
bool v4f_gpu_available(void);
/* Device-to-device copy bandwidth of a device (read + write bytes/s / 1e9,
 * 1 GiB copies): the ceiling a GPU benchmark reports against. */
v4f_status v4f_gpu_copy_bw(int device, double *gbs, v4f_err *err);

v4f_status v4f_gpu_new(const v4f_model *m, const v4f_session_opts *o, v4f_gpu **out, v4f_err *err);
void v4f_gpu_free(v4f_gpu *g);

/* Evaluate n tokens at positions pos..pos+n-1 (flags as v4f_session_eval).
 * hc_out (optional) receives the final HC state of the last min(n,
 * hc_rows) positions, [min(n, hc_rows)][n_hc * n_embd]; hc_out NULL with
 * hc_rows > 0: they go to the speculative ring instead (opts.mtp_draft,
 * v4f_gpu_spec_step; positions q at row q % (n_swa + 2)). trace (optional):
 * hc_after_layer and experts are reported (copied back from the device;
 * slow, for tests). */
v4f_status v4f_gpu_eval(v4f_gpu *g, const int32_t *tokens, uint32_t n, uint32_t pos, float *logits,
                        unsigned flags, float *hc_out, uint32_t hc_rows, const v4f_trace *trace,
                        const v4f_debug_flags *dbg, v4f_err *err);

/* Pipelined greedy decoding (v4f_session_decode_greedy's contract; pos is
 * the session position): the decode graph picks each next token on the
 * device and the next step is queued before the host reads the pick. logits
 * is required. UNSUPPORTED, with nothing evaluated, when the decode graph
 * is unavailable (capture failed, phase profiling): the caller then decodes
 * step by step. */
v4f_status v4f_gpu_decode_greedy(v4f_gpu *g, int32_t token, uint32_t pos, uint32_t max_eval, int32_t suppress,
                                 v4f_pick_fn fn, void *ud, float *logits, uint32_t *n_eval, int32_t *next,
                                 v4f_err *err);

/* Benchmarks only: fill the KV state (raw rings, compressed and indexer
 * rows, compressor rings) with seeded random values as if pos tokens had
 * been evaluated; the caller then sets the position to pos. The values are
 * meaningless; the row counts, and so the cost of attention, are real. */
v4f_status v4f_gpu_fill_synthetic(v4f_gpu *g, uint64_t seed, v4f_err *err);

/* Snapshot support: copy the device state at position pos into a host
 * v4f_kv (the CPU session's layout; compact or not) or back. Raw window
 * rows, compressed and indexer rows (exact: they hold FP8/FP4-rounded
 * values) and the compressor frontier slots the CPU layout keeps (the
 * previous window's positions < 0 as the reset state). Both synchronize. */
struct v4f_kv;
v4f_status v4f_gpu_kv_download(v4f_gpu *g, struct v4f_kv *kv, uint32_t pos, v4f_err *err);
v4f_status v4f_gpu_kv_upload(v4f_gpu *g, const struct v4f_kv *kv, uint32_t pos, v4f_err *err);

/* The MTP block (fixture convention, as v4f_session_mtp_eval) over n
 * positions pos.. of its own cache; hc: host [n][n_hc * n_embd]. */
v4f_status v4f_gpu_mtp_eval(v4f_gpu *g, const float *hc, const int32_t *tokens, uint32_t n, uint32_t pos,
                            float *logits, v4f_err *err);

/* Tests: the speculative ring's row for position pos (the HC state the
 * last eval or decode step at pos left there) into dst [n_hc * n_embd].
 * INVALID_ARG without a ring. */
v4f_status v4f_gpu_spec_ring_row(v4f_gpu *g, uint32_t pos, float *dst, v4f_err *err);

/* One speculative greedy step (opts.mtp_draft; forward.c's spec_greedy).
 * When pn > 0 the MTP block takes the ring rows of positions pp0 .. p - 1
 * (pp0 + pn == p) with the next tokens ptok[0..pn) (the last is `a`) and
 * drafts greedily; over >= 0 replaces that draft (over required when pn is
 * 0). Then [a, draft] is evaluated at p, p + 1, both rows' HC states go to
 * the ring and their greedy picks (suppress: an id never picked, -1 none)
 * come back: out = {draft, pick after a, pick after the draft}. Both
 * rows' logits stay on the device (v4f_gpu_logits_row). On a device that
 * holds every expert the 2-token part is replayed from a CUDA graph. */
v4f_status v4f_gpu_spec_step(v4f_gpu *g, const int32_t *ptok, uint32_t pn, uint32_t pp0, int32_t a, uint32_t p,
                             int32_t suppress, int32_t over, int32_t out[3], v4f_err *err);
/* Row `row` of the last head's logits (a verify step's rows 0, 1) to dst. */
v4f_status v4f_gpu_logits_row(v4f_gpu *g, uint32_t row, float *dst, v4f_err *err);

uint64_t v4f_gpu_kv_bytes(const v4f_gpu *g);
/* Whether the device state can go back to pos (v4f_session_rewind): its
 * position rings hold the rows of the last chunk's worth of positions, and
 * of the position of the last placement switch or KV upload on; *from: the
 * earliest such position. */
bool v4f_gpu_can_rewind(const v4f_gpu *g, uint32_t pos, uint32_t *from);
/* The session went back to position 0 (v4f_session_reset): nothing to keep. */
void v4f_gpu_reset(v4f_gpu *g);
uint32_t v4f_gpu_chunk(const v4f_gpu *g);
/* Positions the device state always reaches back after writing (the decode
 * placement's chunk; an eval of more than two of them switches placement,
 * and a switch is not crossed back either). */
uint32_t v4f_gpu_rewind_reach(const v4f_gpu *g);
/* Human-readable placement report (device, budget, what lives where);
 * valid until v4f_gpu_free. */
const char *v4f_gpu_report(const v4f_gpu *g);
/* Bytes of weights read over the bus (host-resident experts) per token if
 * routing were uniform, and the numbers of device / host experts. */
void v4f_gpu_placement(const v4f_gpu *g, uint32_t *experts_dev, uint32_t *experts_host, uint64_t *dev_bytes,
                       uint64_t *host_bytes);
const char *v4f_gpu_device_name(const v4f_gpu *g);
/* Routed experts per layer held on the device: ids [0, n) there, the rest
 * in host memory (0 without CUDA). */
uint32_t v4f_gpu_experts_on_device(const v4f_gpu *g);
/* Whether the MTP block's routed experts stay in host memory (they do when
 * the main model's routed experts do not all fit; false without CUDA). */
bool v4f_gpu_mtp_host(const v4f_gpu *g);
/* Budget arithmetic (tests, reports): *fixed = dense weights + KV +
 * scratch on the device, *per_expert = bytes of one routed expert (gate,
 * up, down) summed over all layers. */
void v4f_gpu_budget_parts(const v4f_gpu *g, uint64_t *fixed, uint64_t *per_expert);

#endif /* V4F_FORWARD_CUDA_H */
