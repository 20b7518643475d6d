/*
 * cuda_fwd.h - what the GPU forward pass (model/forward_cuda.c) needs from
 * the CUDA backend beyond the ops of cuda_backend.h: device memory info,
 * host-mapped (zero-copy) memory for weights that do not fit the card,
 * asynchronous copies through pinned buffers, CUDA graph capture, and the
 * small glue kernels of a token step (cuda_fwd.cu).
 *
 * Invariants: every kernel here takes the positions of the tokens it works
 * on from device memory (an int32 pos array or the chunk's first position),
 * never from host arguments, so one captured decode graph serves every
 * position; host arguments are shapes and capacities only.
 * Ownership: buffers belong to the caller; a v4f_cuda_graph belongs to the
 * caller (v4f_cuda_graph_free).
 * Threading: as cuda_backend.h (one owner thread per context).
 */
#ifndef V4F_CUDA_FWD_H
#define V4F_CUDA_FWD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/cuda/cuda_backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- memory ----------------------------------------------------------------- */

v4f_status v4f_cuda_mem_info(v4f_cuda *c, size_t *free_bytes, size_t *total_bytes, v4f_err *err);

/* Pin and map existing host memory [p, p + bytes) read-only for the device
 * (weights in the model's mmap); *dev is the device address of p. The range
 * is widened to whole pages internally; ranges must not overlap earlier
 * registrations. DEVICE with the driver's reason if the system refuses. */
v4f_status v4f_cuda_host_register(v4f_cuda *c, void *p, size_t bytes, void **dev, v4f_err *err);
void v4f_cuda_host_unregister(v4f_cuda *c, void *p); /* p as registered; NULL-safe */

/* Pinned, device-mapped host memory: *host for the CPU, *dev for kernels. */
v4f_status v4f_cuda_host_alloc(v4f_cuda *c, size_t bytes, void **host, void **dev, v4f_err *err);
void v4f_cuda_host_free(v4f_cuda *c, void *host); /* NULL-safe */

/* Copies queued on the stream without waiting (src/dst host memory must be
 * pinned and stay valid until the stream reaches the copy). */
v4f_status v4f_cuda_upload_async(v4f_cuda *c, void *dst, const void *src, size_t bytes, v4f_err *err);
v4f_status v4f_cuda_download_async(v4f_cuda *c, void *dst, const void *src, size_t bytes, v4f_err *err);

/* Device-to-device copy bandwidth of `device` (bytes read + written per
 * second, median of several copies of `bytes`), measured with a temporary
 * context; run it before the model takes the memory. */
v4f_status v4f_cuda_measure_copy_bw(int device, size_t bytes, double *gbs, v4f_err *err);

/* Fill n floats with seeded uniform values in [-1, 1) (benchmarks only). */
v4f_status v4f_cuda_fill_random(v4f_cuda *c, float *x, int64_t n, uint64_t seed, v4f_err *err);

/* Copy queued on the stream between any two addresses the device can reach
 * (device, pinned or host-mapped memory; the copy engine picks the route). */
v4f_status v4f_cuda_copy_any(v4f_cuda *c, void *dst, const void *src, size_t bytes, v4f_err *err);

/* ---- fork / join ------------------------------------------------------------------
 * fork: later launches go to a second stream (with its own matvec scratch)
 * that first waits for the work queued so far on the main stream;
 * fork_end: back to the main stream (launches run beside the second
 * stream's); join: the main stream waits for everything queued on the
 * second one. In a capture these become parallel graph branches. Launches
 * on the second stream must not use the attention/top-k kernels (their
 * scratch is per device). fork_init allocates the stream, events and
 * scratch once. */
v4f_status v4f_cuda_fork_init(v4f_cuda *c, v4f_err *err);
v4f_status v4f_cuda_fork(v4f_cuda *c, v4f_err *err);
v4f_status v4f_cuda_fork_end(v4f_cuda *c, v4f_err *err);
v4f_status v4f_cuda_join(v4f_cuda *c, v4f_err *err);

/* ---- prefetch copies ------------------------------------------------------------
 * Copies on a third stream that overlap the main stream's kernels (e.g. the
 * next layer's host-resident experts during this layer's prefill work).
 * prefetch: queues n copies dst[i] <- src[i] of bytes[i] that start only
 * once the work queued so far on the main stream is done (so the previous
 * readers of dst have finished), and marks their completion on `slot`;
 * prefetch_wait: later work on the main stream waits for the copies last
 * marked on `slot`. prefetch_init creates the stream and events once. Not
 * for graph capture. */
#define V4F_CUDA_PREFETCH_SLOTS 2
v4f_status v4f_cuda_prefetch_init(v4f_cuda *c, v4f_err *err);
v4f_status v4f_cuda_prefetch(v4f_cuda *c, int slot, void *const *dst, const void *const *src, const size_t *bytes,
                             int n, v4f_err *err);
v4f_status v4f_cuda_prefetch_wait(v4f_cuda *c, int slot, v4f_err *err);

/* ---- copies chosen on the device, in a captured graph ------------------------------
 * While capturing: after the work captured so far, group j < n copies
 * dst[j][i] <- src[j][i] (bytes[j][i], i < 3; any memory the copy engine
 * reaches) when, at run time, one of ids[0..k) (device int32) equals
 * want[j]; work captured later waits for every group. The test runs in a
 * small kernel that sets one conditional graph node per group; the copies
 * go to the copy engines (the routed experts a decode step picks among
 * those in host memory: DMA at the bus's speed, about twice what kernels
 * reading host memory reach). n <= V4F_CUDA_COND_MAX. UNSUPPORTED when the
 * stream is not capturing. */
#define V4F_CUDA_COND_MAX 32
v4f_status v4f_cuda_cond_copies(v4f_cuda *c, const int32_t *ids, int k, int n, const int32_t *want,
                                void *const (*dst)[3], const void *const (*src)[3], const size_t (*bytes)[3],
                                v4f_err *err);

/* ---- graphs --------------------------------------------------------------------
 * Everything queued on the context's stream between begin and end becomes
 * one graph (nothing runs at capture time). */
typedef struct v4f_cuda_graph v4f_cuda_graph;
v4f_status v4f_cuda_capture_begin(v4f_cuda *c, v4f_err *err);
/* Ends the capture (also after an error in between: pass ok = false to
 * discard it; *out is then NULL). */
v4f_status v4f_cuda_capture_end(v4f_cuda *c, bool ok, v4f_cuda_graph **out, v4f_err *err);
v4f_status v4f_cuda_graph_launch(v4f_cuda *c, v4f_cuda_graph *g, v4f_err *err);
void v4f_cuda_graph_free(v4f_cuda_graph *g);

/* ---- phase timing (profiling) ---------------------------------------------------
 * A pool of n device events; v4f_cuda_mark records event i on the stream;
 * v4f_cuda_marks_read waits for event last and writes ms[i] = time from
 * event i - 1 to event i for 0 < i <= last. */
typedef struct v4f_cuda_marks v4f_cuda_marks;
v4f_status v4f_cuda_marks_new(v4f_cuda *c, int n, v4f_cuda_marks **out, v4f_err *err);
void v4f_cuda_marks_free(v4f_cuda_marks *m);
v4f_status v4f_cuda_mark(v4f_cuda *c, v4f_cuda_marks *m, int i, v4f_err *err);
v4f_status v4f_cuda_marks_read(v4f_cuda_marks *m, int last, float *ms, v4f_err *err);
/* The host waits until the stream has passed mark i (pipelining). */
v4f_status v4f_cuda_mark_wait(v4f_cuda_marks *m, int i, v4f_err *err);

/* ---- glue kernels of a token step -------------------------------------------- */

/* The greedy pick of a decode step made on the device: the argmax of
 * logits[0..n) exactly as v4f_sampler_greedy picks it (ties -> lowest id,
 * NaN never wins; only -inf and NaN: the first non-NaN id; all NaN: 0), with
 * logits[*suppress] read as -inf when suppress is non-NULL and 0 <= *suppress
 * < n. With slot = pos0[0] & 1: tok[0] = the pick, pick_out[slot] = the pick
 * (optional; e.g. mapped host memory), keep[slot * n ..] = the logits
 * (optional), then pos0[0] += 1, so that a replayed decode graph evaluates
 * the pick at the next position with no host in between. scratch: 16
 * device bytes, zero before the first launch and left zero by each. */
v4f_status v4f_cuda_greedy_next(v4f_cuda *c, const float *logits, int64_t n, const int32_t *suppress,
                                int32_t *tok, int32_t *pos0, float *keep, int32_t *pick_out, void *scratch,
                                v4f_err *err);

/* Rows [0, n) of src ([n][w] floats) into rows (pos0[0] + i) % cap of ring
 * ([cap][w]), the position read on the device (a replayed decode graph keeps
 * the speculative ring of HC states fed). */
v4f_status v4f_cuda_ring_put(v4f_cuda *c, const float *src, int64_t n, int64_t w, float *ring, int32_t cap,
                             const int32_t *pos0, v4f_err *err);

#define V4F_CUDA_MAX_RATIOS 4

/* For t < n, p = pos0[0] + t: pos[t] = p, raw_first[t] = max(0, p - n_swa + 1),
 * raw_count[t] = p + 1 - raw_first[t], and nvis[r * n + t] = (p + 1) /
 * ratios[r] for r < n_ratios (compressed rows visible at p). */
v4f_status v4f_cuda_step_prep(v4f_cuda *c, const int32_t *pos0, int64_t n, int32_t n_swa, int n_ratios,
                              const uint32_t *ratios, int32_t *pos, int32_t *raw_first, int32_t *raw_count,
                              int32_t *nvis, v4f_err *err);

/* X[t][h][:] = row tokens[t] of the embedding (F32, F16 or BF16 rows of
 * row_bytes; E may be host-mapped) for h < n_hc. */
v4f_status v4f_cuda_embed(v4f_cuda *c, const void *E, uint32_t type, uint64_t row_bytes, int64_t n_vocab,
                          const int32_t *tokens, int64_t n, int64_t d, int n_hc, float *X, v4f_err *err);

/* mix[t][0..mixn) *= 1 / sqrt(mean(X[t][0..HD)^2) + eps), the sum of squares
 * in double (HC_pre and HC_head scale their mixer outputs this way). */
v4f_status v4f_cuda_hc_mix_scale(v4f_cuda *c, const float *X, int64_t n, int64_t HD, float *mix, int64_t mixn,
                                 float eps, v4f_err *err);

/* Compressor inputs of n tokens into position rings (capacity R rows of
 * W): kv_ring[p mod R] = A[t], sc_ring[p mod R] = B[t] + ape[p mod ratio]
 * (ape: [ratio][W] float32), p = pos[t]. */
v4f_status v4f_cuda_comp_store(v4f_cuda *c, const float *A, const float *B, const float *ape, int64_t n, int64_t W,
                               int32_t ratio, const int32_t *pos, float *kv_ring, float *sc_ring, int64_t R,
                               v4f_err *err);

/* Bucket the n * k (token, slot) pairs of eids [n][k] by expert (one
 * CTA; n * k <= 65536, n_expert <= 4096): offs [n_expert + 1], elist[i] =
 * pair at place i, einv[pair] = its place, wrow[i] = ew[elist[i]]; act
 * (unless NULL, [n_expert + 1]): act[0] = the number of experts with pairs,
 * act[1..] = those experts in ascending order. Order inside a bucket is
 * unspecified (results do not depend on it). */
v4f_status v4f_cuda_moe_bucket(v4f_cuda *c, const int32_t *eids, const float *ew, int64_t n, int k, int n_expert,
                               int32_t *offs, int32_t *elist, int32_t *einv, float *wrow, int32_t *act, v4f_err *err);

/* dst[i][0..d) = src[(idx[i] / div)][0..d) for i < n. */
v4f_status v4f_cuda_gather_rows(v4f_cuda *c, const float *src, const int32_t *idx, int32_t div, int64_t n, int64_t d,
                                float *dst, v4f_err *err);

/* X[t][h][i] = E[t][i] + X[t][h][i] (the MTP block's input). */
v4f_status v4f_cuda_add_streams(v4f_cuda *c, const float *E, int64_t n, int n_hc, int64_t d, float *X, v4f_err *err);

/* ---- fused kernels (one launch where the unfused ops of cuda_backend.h
 * would take several; same math and order, validated end to end by the
 * golden model test) ---------------------------------------------------------- */

/* The HC mixer as split-K partial sums, for few outputs (M <= 32) over a
 * long input (the flattened HC state): part[t][s][j] = sum over slice s of
 * W[j][i] X[t][i], ss[t][s] = sum over slice s of X[t][i]^2 (double), for
 * n_split slices of K (K % n_split == 0). W is F32, F16 or BF16 rows of
 * row_bytes. */
v4f_status v4f_cuda_hc_mix_partial(v4f_cuda *c, const void *W, uint32_t type, uint64_t row_bytes, int M, int64_t K,
                                   const float *X, int64_t n, int n_split, float *part, double *ss, v4f_err *err);

/* HC_pre per token from those partials: mix = sum_s part (slice order),
 * scaled by 1/sqrt(sum_s ss / K + rms_eps); split + Sinkhorn -> pre, post,
 * comb; a = sum_h pre_h X_h; xn = RMSNorm(a) * norm_w. K = H * d.
 * part_sel: HCP_ALL does both; HCP_NORM only xn (from the H pre weights,
 * pre/post/comb untouched); HCP_SINKHORN only pre, post and comb (xn, a
 * untouched). The two halves are independent: a caller may run them on two
 * streams so that Sinkhorn (needed only at HC_post) is off the path to xn. */
enum { HCP_ALL = 0, HCP_HEAD = 1, HCP_NORM = 2, HCP_SINKHORN = 3 };
v4f_status v4f_cuda_hc_pre_fused(v4f_cuda *c, const float *X, const float *part, const double *ss, int n_split,
                                 const float *scale3, const float *base, int64_t n, int H, int64_t d, int iters,
                                 float hc_eps, float rms_eps, const float *norm_w, float *pre, float *post,
                                 float *comb, float *a, float *xn, int part_sel, v4f_err *err);

/* HC head per token from the mixer partials (M = H): w_h = sigmoid(mix_h *
 * r * scale[0] + base_h) + hc_eps with r as above; xn = RMSNorm(sum_h w_h
 * X_h) * norm_w; a: scratch [n][d] (used when H > 4 or d > 4096). */
v4f_status v4f_cuda_hc_head_fused(v4f_cuda *c, const float *X, const float *part, const double *ss, int n_split,
                                  const float *scale, const float *base, int64_t n, int H, int64_t d, float hc_eps,
                                  float rms_eps, const float *norm_w, float *a, float *xn, v4f_err *err);

/* Per token: qr = RMSNorm(qr) * q_norm; kv = RMSNorm(kv) * kv_norm, RoPE
 * on its last n_rot dims at pos[t], FP8 round-trip of the other dims (if
 * fp8), and the row stored into the raw ring at pos[t] mod R. */
v4f_status v4f_cuda_qkv_tail(v4f_cuda *c, float *qr, int64_t q_rank, const float *q_norm, float *kv, int64_t hd,
                             const float *kv_norm, int64_t n, const int32_t *pos, const float *freqs, int n_rot,
                             bool fp8, float eps, float *ring, int64_t R, v4f_err *err);

/* Per (token, head): RMSNorm without weight, then RoPE at pos[t]. */
v4f_status v4f_cuda_q_heads(v4f_cuda *c, float *q, int64_t n, int64_t n_head, int64_t hd, const int32_t *pos,
                            const float *freqs, int n_rot, float eps, v4f_err *err);

/* Compressed rows completed by the chunk of n tokens starting at pos0[0]:
 * block g < ng_max makes row k = ceil((p0 + 1) / ratio) - 1 + g if k <=
 * (p0 + n) / ratio - 1 (else nothing): pooled from the rings (softmax over
 * the candidate scores per dim, as v4f_cpu_compress_pool; overlap (ratio
 * 4): the previous window's positions on dims [0, D) and the current one's
 * on [D, 2D), W = 2D, positions < 0 skipped; else the current window, W =
 * D), RMSNorm'd (norm_w), RoPE'd at k * ratio and rounded (mode 0: FP8 on
 * the first D - n_rot dims, 1: Hadamard + FP4, 2: none), written to
 * rows[k]. R >= n + 2 * ratio; D <= 1024. */
v4f_status v4f_cuda_comp_emit(v4f_cuda *c, const float *kv_ring, const float *sc_ring, int64_t R, int64_t W,
                              int64_t D, int32_t ratio, bool overlap, const int32_t *pos0, int64_t n, int64_t ng_max,
                              const float *norm_w, const float *freqs, int n_rot, int mode, float eps, float *rows,
                              v4f_err *err);

/* Indexer queries per (token, head): RoPE at pos[t], Hadamard + FP4 (d a
 * power of two <= 1024); then iw[t][h] *= w_scale. */
v4f_status v4f_cuda_idx_q(v4f_cuda *c, float *iq, float *iw, int64_t n, int64_t n_head, int64_t d,
                          const int32_t *pos, const float *freqs, int n_rot, float w_scale, v4f_err *err);

/* MoE output and HC_post in one pass: o = (sum_j y[einv[t*k+j]]) + ysh[t]
 * (v4f_cuda_moe_sum), Xout[t][j] = post[t][j] * o + sum_i comb[t][i][j] *
 * X[t][i] (v4f_cuda_hc_post). Xout must not alias X. */
v4f_status v4f_cuda_moe_sum_post(v4f_cuda *c, const float *y, const int32_t *einv, const float *ysh, int64_t n, int k,
                                 int64_t d, const float *X, const float *post, const float *comb, int H, float *Xout,
                                 v4f_err *err);

/* HC_post (o given: attention; else the MoE sum of k_moe_sum_post) fused
 * with the next HC mixer's partials over the new streams, exactly as
 * v4f_cuda_hc_post / v4f_cuda_moe_sum_post followed by
 * v4f_cuda_hc_mix_partial(W, type, row_bytes, M, H * d, Xout, n, n_split):
 * same results, one launch instead of two. gram (NULL: not computed):
 * [n][n_split][10] doubles, the per-split sums of X_h[i] X_h'[i] (h <= h',
 * row-major pairs; zeros outside stream 0) of the new streams, for
 * v4f_cuda_hc_norm; needs every split inside one stream. einv NULL (n = 1
 * only): the identity pair map (row j of y for slot j). */
v4f_status v4f_cuda_post_mix(v4f_cuda *c, const float *o, const float *y, const int32_t *einv, int k,
                             const float *ysh, const float *X, const float *post, const float *comb, int64_t n, int H,
                             int64_t d, float *Xout, const void *W, uint32_t type, uint64_t row_bytes, int M,
                             int n_split, float *part, double *ss, double *gram, v4f_err *err);

/* HC_pre's norm half (as v4f_cuda_hc_pre_fused HCP_NORM: xn from the pre
 * weights) from post_mix's partials, ss and Gram partials, over several CTAs
 * per token: the norm's sum of squares is pre^T G pre (d % 4 == 0). */
v4f_status v4f_cuda_hc_norm(v4f_cuda *c, const float *X, const float *part, const double *ss, const double *gram,
                            int n_split, int M, int64_t n, int H, int64_t d, const float *scale3, const float *base,
                            float hc_eps, float rms_eps, const float *norm_w, float *xn, v4f_err *err);

#ifdef __cplusplus
}
#endif

#endif /* V4F_CUDA_FWD_H */
