/*
 * cuda_backend.h - the C API of the CUDA backend (C11 callers; the
 * implementation is in src/backend/cuda/ *.cu, built only with `make CUDA=1`).
 *
 * Owns: one device context (v4f_cuda: a device index, one non-blocking stream,
 * two timing events), device buffers, and the launchers of the weight-format
 * kernels: matrix-vector products y = W x with float32 activations for W in
 * F32, F16, BF16, Q8_0, Q2_K, Q4_K, IQ2_XXS (one matrix, or a batch of
 * independent (W, x, y) triples in one launch), row dequantization to
 * float32, and the non-matmul model ops (cuda_ops.cu, cuda_attn.cu: norms,
 * RoPE, FP8/FP4 simulations and codes, hyper-connections, attention with
 * sink, indexer scores, top-k, router, SwiGLU, compressor pooling), each
 * the twin of a CPU op in backend/cpu/ops.h.
 *
 * Invariants:
 *  - Matrices use the GGUF/GGML block layouts (quant/quant_blocks.h,
 *    MODEL.md section 10) unchanged: row r of a v4f_cuda_mat starts at
 *    data + r * row_bytes, n_in is a multiple of the type's block size.
 *  - Every buffer from v4f_cuda_alloc starts 256-byte aligned and is padded
 *    to a multiple of 256 bytes (padding zeroed). The fast matvec kernels
 *    read whole 16-byte aligned chunks, so every matrix must lie inside such
 *    an allocation (or another allocation with the same guarantee).
 *  - Fast path conditions (else a slower, alignment-agnostic kernel runs and
 *    gives the same results within the same tolerance): data and row_bytes
 *    multiples of 16, x 16-byte aligned. All shapes of the model meet them
 *    (e.g. Q8_0 needs n_in % 256 == 0, Q2_K n_in % 1024, IQ2_XXS n_in % 2048,
 *    Q4_K any, F16/BF16 n_in % 8, F32 n_in % 4).
 *  - Launchers are asynchronous on the context's stream; argument errors are
 *    reported before anything is queued; device faults surface as
 *    V4F_STATUS_DEVICE at the next synchronizing call (v4f_cuda_sync,
 *    download, timer stop).
 *
 * Memory ownership: device buffers belong to the caller who allocated them
 * (v4f_cuda_free); the context owns its stream, events and a small scratch
 * (about 1.8 MB, allocated at open) where the quantized-weight matvecs put
 * the int8 split of x, so launches never allocate. Consecutive calls on
 * the context reuse that scratch in stream order.
 * Threading: a v4f_cuda is used by one thread at a time (the device's owner
 * thread); every entry point makes its device current for that thread.
 */
#ifndef V4F_CUDA_BACKEND_H
#define V4F_CUDA_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "v4flash.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct v4f_cuda v4f_cuda;

/* Largest number of (W, x, y) triples in one v4f_cuda_matvec_batch call
 * (decode: 6 routed experts x {gate, up} = 12). */
#define V4F_CUDA_MATVEC_MAX_BATCH 32
/* Device scratch per stream for the partial sums of split-K matmuls (dense
 * launches of few tiles, cuda_gemm.cu), allocated at open. */
#define V4F_CUDA_SPLITK_BYTES ((size_t)16 << 20)

/* A weight matrix in device memory: n_out rows of n_in inputs. */
typedef struct v4f_cuda_mat {
    const void *data;   /* device pointer; row r at data + r * row_bytes */
    uint32_t type;      /* v4f_ggml_type */
    int64_t n_in;       /* elements per row (multiple of the block size) */
    int64_t n_out;      /* rows */
    uint64_t row_bytes; /* stride between rows, >= packed bytes of a row */
} v4f_cuda_mat;

/* Number of visible CUDA devices; 0 when there is no driver or no device. */
int v4f_cuda_device_count(void);

/* Open device `device`: makes it current, creates the stream and events,
 * uploads the format tables (IQ2_XXS grid) and allocates the matvec
 * scratch. *out is freed with
 * v4f_cuda_close. Errors: V4F_STATUS_DEVICE (no device, driver error). */
v4f_status v4f_cuda_open(int device, v4f_cuda **out, v4f_err *err);
/* Synchronizes, destroys the stream/events; accepts NULL. Buffers allocated
 * from the context must be freed before. */
void v4f_cuda_close(v4f_cuda *c);

/* "NVIDIA H100 80GB HBM3" etc.; valid until close. */
const char *v4f_cuda_device_name(const v4f_cuda *c);
/* Device memory bandwidth from the device attributes (bus width x memory
 * clock), bytes/s; 0 if unknown. A datasheet figure, not a measurement. */
double v4f_cuda_peak_bw(const v4f_cuda *c);
int v4f_cuda_sm_count(const v4f_cuda *c);

/* Wait for all queued work; returns the first asynchronous fault. */
v4f_status v4f_cuda_sync(v4f_cuda *c, v4f_err *err);

/* ---- buffers ------------------------------------------------------------ */

/* cudaMalloc of `bytes` rounded up to 256 (plain device memory, never
 * managed); the padding is zeroed. Errors: V4F_STATUS_OOM when the device is
 * full, V4F_STATUS_DEVICE otherwise. Free with v4f_cuda_free. */
v4f_status v4f_cuda_alloc(v4f_cuda *c, size_t bytes, void **out, v4f_err *err);
void v4f_cuda_free(v4f_cuda *c, void *p); /* accepts NULL */

/* Host -> device and device -> host copies; both wait for completion (the
 * stream's earlier work included), so host memory can be reused at once. */
v4f_status v4f_cuda_upload(v4f_cuda *c, void *dst, const void *src, size_t bytes, v4f_err *err);
v4f_status v4f_cuda_download(v4f_cuda *c, void *dst, const void *src, size_t bytes, v4f_err *err);
/* Device -> device copy and byte fill, queued on the stream. */
v4f_status v4f_cuda_copy(v4f_cuda *c, void *dst, const void *src, size_t bytes, v4f_err *err);
/* Device -> device copy of rows: width bytes of each of `rows` rows, row r
 * from src + r * spitch to dst + r * dpitch, queued on the stream. */
v4f_status v4f_cuda_copy_2d(v4f_cuda *c, void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                            size_t rows, v4f_err *err);
v4f_status v4f_cuda_memset(v4f_cuda *c, void *dst, int byte, size_t bytes, v4f_err *err);

/* ---- timing (device events on the stream) --------------------------------- */

v4f_status v4f_cuda_timer_start(v4f_cuda *c, v4f_err *err);
/* Records the stop event, waits for it, returns the elapsed milliseconds. */
v4f_status v4f_cuda_timer_stop(v4f_cuda *c, float *ms, v4f_err *err);

/* ---- weight-format kernels (cuda_quant.cu) --------------------------------- */

/* true for F32, F16, BF16, Q8_0, Q2_K, Q4_K, IQ2_XXS */
bool v4f_cuda_type_supported(uint32_t type);

/* How many int8 planes of x the quantized matvecs multiply (Q8_0, Q2_K,
 * Q4_K, IQ2_XXS with n_in <= 16384; every matvec entry point below): 3
 * (the default at open: x to within 2.4e-7 of its group's max|x|, near
 * float32) or 2 (within 3.1e-5 of it, still 60x finer than bf16; a third
 * fewer __dp4a and x bytes per weight: the decode of the default precision,
 * docs/PERF_NOTES.md session 25). Applies to launches queued after the
 * call; a graph keeps the count it was captured with. Errors:
 * V4F_STATUS_INVALID_ARG for another n. */
v4f_status v4f_cuda_set_x_planes(v4f_cuda *c, int n, v4f_err *err);

/* Whether the fast matvecs' weight copies carry an L2 evict-first policy
 * (on from open): the weights stream through once per step, and without
 * the hint they push out what kernels read again soon (activations, KV
 * rows, attention partials); H200 decode +4%, docs/PERF_NOTES.md session
 * 26. A hint only: results are the same either way. Applies to launches
 * queued after the call; a graph keeps what it was captured with. */
void v4f_cuda_set_weight_evict_first(v4f_cuda *c, bool on);

/* With on, the plane split that precedes a matvec lets the matvec launch
 * before the split's own dependency wait, so the matvec requests its
 * weights one kernel earlier (during the kernel before the split). Off by
 * default (from open); the caller turns it on around chosen calls and off
 * after. Worth it only where the kernel before the split is itself a
 * bandwidth-bound grid (out_a before out_b): beside a latency-bound chain
 * kernel the extra requests slow the chain more than they save. */
void v4f_cuda_set_split_trigger_first(v4f_cuda *c, bool on);

/* y[0..n_out) = W x[0..n_in); x and y device pointers (float32). y must
 * not overlap x or W. */
v4f_status v4f_cuda_matvec(v4f_cuda *c, const v4f_cuda_mat *w, const float *x, float *y, v4f_err *err);

/* For i in [0, n): y[i] = w[i] x[i], in one launch. All w[i] share type
 * and n_in; n_out and row_bytes may differ. x[i] may repeat (gate and up of
 * one token share x); the y[i] must not overlap anything. Arrays are host
 * arrays of device pointers; n <= V4F_CUDA_MATVEC_MAX_BATCH. */
v4f_status v4f_cuda_matvec_batch(v4f_cuda *c, int n, const v4f_cuda_mat *w, const float *const *x, float *const *y,
                                 v4f_err *err);

/* The same with x's int8 planes already made (xq[i]: a slot of
 * v4f_cuda_quant_row_bytes(n_in) bytes, 16-byte aligned, in the natural
 * order as v4f_cuda_quant_rows(V4F_TYPE_Q8_0) makes them, for every type:
 * the matvec kernel permutes IQ2_XXS's units itself; written by a
 * kernel that produced x with the matvecs' own split: v4f_cuda_swiglu_planes,
 * the decode attention with v4f_cuda_out_planes):
 * launches that multiply planes read them instead of splitting x again
 * (one launch fewer on the decode chain); the others use x. Same results
 * as v4f_cuda_matvec_batch when the planes are x's. n_in % 32 == 0 and
 * n_in <= 16384. */
v4f_status v4f_cuda_matvec_batch_planes(v4f_cuda *c, int n, const v4f_cuda_mat *w, const float *const *x,
                                        const uint8_t *const *xq, float *const *y, v4f_err *err);

/* Whether a matvec of w reads given planes (the entry points above and
 * below): Q8_0, Q2_K, Q4_K and IQ2_XXS with n_in % 32 == 0 and n_in <=
 * 16384. For other matrices a producer need not make them. */
bool v4f_cuda_takes_planes(const v4f_cuda_mat *w);

/* Matvecs whose matrices are chosen on the device (routed experts; no host
 * synchronisation, capturable in a graph): pair i multiplies the matrix at
 * tab[tab_off[i] + ids[slot[i]]] (tab: device array of pointers to device or
 * host-mapped memory, each 16-byte aligned; ids: device int32) of shape
 * `shape` (data ignored) with x[i] into y[i]. tab_off and slot are host
 * arrays of n entries; n <= V4F_CUDA_MATVEC_MAX_BATCH. Same results as
 * v4f_cuda_matvec on the chosen matrix. */
v4f_status v4f_cuda_matvec_indirect(v4f_cuda *c, int n, const v4f_cuda_mat *shape, const void *const *tab,
                                    const int32_t *ids, const int32_t *tab_off, const int32_t *slot,
                                    const float *const *x, float *const *y, v4f_err *err);

/* The same with x's int8 planes already made (as v4f_cuda_matvec_batch_planes). */
v4f_status v4f_cuda_matvec_indirect_planes(v4f_cuda *c, int n, const v4f_cuda_mat *shape, const void *const *tab,
                                           const int32_t *ids, const int32_t *tab_off, const int32_t *slot,
                                           const float *const *x, const uint8_t *const *xq, float *const *y,
                                           v4f_err *err);
/* The same, with ids already written when this launch starts: by a kernel
 * two or more launches back on the stream, none of the launches between
 * letting the next one start before its own wait (the routed down after the
 * router, the gate/up and the SwiGLU). The kernel then requests the chosen
 * matrices' first bytes before waiting for the kernel just before it. */
v4f_status v4f_cuda_matvec_indirect_planes_ready(v4f_cuda *c, int n, const v4f_cuda_mat *shape,
                                                 const void *const *tab, const int32_t *ids, const int32_t *tab_off,
                                                 const int32_t *slot, const float *const *x,
                                                 const uint8_t *const *xq, float *const *y, v4f_err *err);

/* Several x per matrix (short evals: the dense projections of a few
 * tokens): for i < n_mat, t < n: y[i] + t ldy[i] = w[i] (x[i] + t ldx), each
 * weight read once per 4 columns (the decode kernel: int8 planes, or the
 * float x read in place for F32 / F16 / BF16, then 16-byte aligned x and
 * ldx % 4 == 0). All w[i] share type and n_in; x[i] may repeat.
 * v4f_cuda_matvec_cols_ok tells whether a matrix qualifies (F32 / F16 /
 * BF16, or quantized types with int8 planes and n_in <= 16384; 16-byte
 * aligned rows); n_distinct_x * n <= the plane scratch (32 rows of 16384).
 * Same results per column as v4f_cuda_matvec. */
bool v4f_cuda_matvec_cols_ok(const v4f_cuda_mat *w);
int64_t v4f_cuda_matvec_cols_rows(const v4f_cuda *c, int64_t n_in); /* plane rows (distinct x times n) it holds */
v4f_status v4f_cuda_matvec_cols(v4f_cuda *c, int n_mat, const v4f_cuda_mat *w, const float *const *x, int64_t ldx,
                                int n, float *const *y, const int64_t *ldy, v4f_err *err);
/* The same with x's int8 planes already made (as v4f_cuda_matvec_batch_planes):
 * column t of matrix i at xq[i] + t xq_col (xq_col >= v4f_cuda_quant_row_bytes(
 * n_in), a multiple of 16); matrices that v4f_cuda_takes_planes only (a verify
 * step's out_a, its planes written by the attention). */
v4f_status v4f_cuda_matvec_cols_planes(v4f_cuda *c, int n_mat, const v4f_cuda_mat *w, const uint8_t *const *xq,
                                       int64_t xq_col, int n, float *const *y, const int64_t *ldy, v4f_err *err);

/* Routed experts grouped by expert (evals of a few to a few hundred
 * tokens): every matrix is read once for all the pairs routed to it. For
 * each expert e listed in act (device: act[0] = count, act[1..] = experts
 * with pairs; at most max_act, the grid bound) and each matrix m < n_mat
 * (tab[tab_off[m] + e], shape `shape`): y[m][p ldy + i] = row i . x(p) for
 * every pair p in elist[offs[e] .. offs[e + 1]), where x(p) is row p / xdiv
 * of the int8-plane rows xq made by v4f_cuda_quant_rows for this type.
 * v4f_cuda_mvexp_ok tells whether a shape is supported (quantized types
 * with int8 planes, n_in <= 16384, rows that fit shared memory). Tolerance
 * as v4f_cuda_matvec (the summation order differs from it). */
#define V4F_CUDA_MVEXP_MATS 2
bool v4f_cuda_mvexp_ok(const v4f_cuda_mat *shape);
v4f_status v4f_cuda_matvec_experts(v4f_cuda *c, int n_mat, const v4f_cuda_mat *shape, const void *const *tab,
                                   const int32_t *tab_off, const int32_t *act, const int32_t *offs,
                                   const int32_t *elist, int max_act, const uint8_t *xq, int32_t xdiv,
                                   float *const *y, int64_t ldy, v4f_err *err);

/* The int8 planes of n rows of x (row stride ldx floats, n_in % 32 == 0,
 * n_in <= 16384, n <= 65535) for multiplying weights of `type`: row t at xq
 * + t v4f_cuda_quant_row_bytes(n_in) (xq 16-byte aligned). */
size_t v4f_cuda_quant_row_bytes(int64_t n_in);
v4f_status v4f_cuda_quant_rows(v4f_cuda *c, uint32_t type, const float *x, int64_t n, int64_t n_in, int64_t ldx,
                               uint8_t *xq, v4f_err *err);

/* dst[r * n_in + i] = element i of row row0 + r, r in [0, n_rows): bit-exact
 * with v4f_dequant_row_ref. dst is a device pointer. */
v4f_status v4f_cuda_dequant_rows(v4f_cuda *c, const v4f_cuda_mat *w, int64_t row0, int64_t n_rows, float *dst,
                                 v4f_err *err);


/* ---- model ops (cuda_ops.cu, cuda_attn.cu) --------------------------------
 * The CUDA twins of the CPU ops in backend/cpu/ops.h (the reference). All
 * pointers are device pointers unless said otherwise; dims are arguments
 * (no model constants); launches are asynchronous on the context's stream
 * and never synchronize the host. Rows are contiguous unless a stride is
 * given. Argument errors return V4F_STATUS_INVALID_ARG before anything is
 * queued. Tolerances against the CPU: docs/TOLERANCES.md "## cuda ops". */

/* y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w for rows r < n_rows of n floats
 * (sum of squares in double, as the CPU). w may be NULL (no weight); y may
 * equal x. */
v4f_status v4f_cuda_rmsnorm(v4f_cuda *c, const float *x, const float *w, float *y, int64_t n_rows, int64_t n,
                            float eps, v4f_err *err);

/* RoPE on the last n_rot dims of every head: x [n_tok][n_head][head_dim];
 * token t is at position pos[t] (device int32, if pos != NULL) else
 * pos0 + t * pos_step. freqs: n_rot/2 floats (v4f_rope_freqs, uploaded).
 * inverse: conjugate rotation. n_rot even, <= head_dim. */
v4f_status v4f_cuda_rope_tail(v4f_cuda *c, float *x, int64_t n_tok, int64_t n_head, int64_t head_dim, int n_rot,
                              const float *freqs, const int32_t *pos, int64_t pos0, int64_t pos_step, bool inverse,
                              v4f_err *err);

/* FP8 E4M3FN round-trip of x[r * row_stride + 0..n) for r < n_rows, in
 * blocks of 64 (a shorter last block), as v4f_cpu_fp8_roundtrip. */
v4f_status v4f_cuda_fp8_roundtrip(v4f_cuda *c, float *x, int64_t n_rows, int64_t row_stride, int64_t n,
                                  v4f_err *err);

/* FP8 storage form of the same round-trip: row r's block b (n a multiple
 * of 64) becomes E4M3FN bytes codes[r * code_stride + 64 b + i] and the scale
 * exponent exps[r * (n / 64) + b] (scale 2^e), bit-exact with
 * v4f_fp8_encode_block64; decode writes y[r * row_stride + i] as
 * v4f_fp8_decode_block64 (= the round-trip values). */
v4f_status v4f_cuda_fp8_encode(v4f_cuda *c, const float *x, int64_t n_rows, int64_t row_stride, int64_t n,
                               uint8_t *codes, int64_t code_stride, int8_t *exps, v4f_err *err);
v4f_status v4f_cuda_fp8_decode(v4f_cuda *c, const uint8_t *codes, int64_t code_stride, const int8_t *exps,
                               int64_t n_rows, int64_t n, float *y, int64_t row_stride, v4f_err *err);
/* FP4 E2M1 likewise in blocks of 32 (n a multiple of 32): 16 bytes per
 * block at codes[r * code_stride + 16 b] (low nibble first), exponent
 * exps[r * (n / 32) + b]; bit-exact with v4f_fp4_encode_block32 /
 * v4f_fp4_decode_block32. */
v4f_status v4f_cuda_fp4_encode(v4f_cuda *c, const float *x, int64_t n_rows, int64_t row_stride, int64_t n,
                               uint8_t *codes, int64_t code_stride, int8_t *exps, v4f_err *err);
v4f_status v4f_cuda_fp4_decode(v4f_cuda *c, const uint8_t *codes, int64_t code_stride, const int8_t *exps,
                               int64_t n_rows, int64_t n, float *y, int64_t row_stride, v4f_err *err);

/* Per row x[r * row_stride + 0..n): if hadamard, the scaled Walsh-Hadamard
 * transform (n a power of two, <= 4096; v4f_cpu_hadamard); then if fp4, the
 * FP4 E2M1 round-trip in blocks of 32 (v4f_cpu_fp4_roundtrip; any n when
 * !hadamard). */
v4f_status v4f_cuda_hadamard_fp4(v4f_cuda *c, float *x, int64_t n_rows, int64_t row_stride, int64_t n,
                                 bool hadamard, bool fp4, v4f_err *err);

/* Hyper-connections, batched over n_tok tokens (n_hc <= 16):
 * split+Sinkhorn: mix [n_tok][(2+n_hc)*n_hc], scale3 [3], base [(2+n_hc)*n_hc]
 * -> pre [n_tok][n_hc], post [n_tok][n_hc], comb [n_tok][n_hc][n_hc]. */
v4f_status v4f_cuda_hc_split_sinkhorn(v4f_cuda *c, const float *mix, const float *scale3, const float *base,
                                      int64_t n_tok, int n_hc, int iters, float eps, float *pre, float *post,
                                      float *comb, v4f_err *err);
/* y[t][i] = sum_h w[t][h] * X[t][h][i]; X [n_tok][n_hc][d], w [n_tok][n_hc]. */
v4f_status v4f_cuda_hc_weighted_sum(v4f_cuda *c, const float *X, const float *w, int64_t n_tok, int n_hc, int64_t d,
                                    float *y, v4f_err *err);
/* Xout[t][j] = post[t][j] * o[t] + sum_i comb[t][i][j] * X[t][i]; o [n_tok][d].
 * Xout must not alias X. */
v4f_status v4f_cuda_hc_post(v4f_cuda *c, const float *o, const float *X, const float *post, const float *comb,
                            int64_t n_tok, int n_hc, int64_t d, float *Xout, v4f_err *err);
/* w[t][h] = sigmoid(mix[t][h] * scale[0] + base[h]) + eps (scale: device). */
v4f_status v4f_cuda_hc_head_weights(v4f_cuda *c, const float *mix, const float *scale, const float *base,
                                    int64_t n_tok, int n_hc, float eps, float *w, v4f_err *err);

/* Key set of sparse attention, per query t (all arrays device, [n_q]; a
 * NULL array means the scalar *0 value for every query):
 *  raw rows raw + ((raw_first[t] + i) mod raw_cap) * head_dim, i < raw_count[t]
 *    (raw_cap 0: no wrap);
 *  then compressed rows comp + row * head_dim for i < comp_count[t], row =
 *    comp_idx[t * comp_idx_stride + i] (negative entries skipped) or i when
 *    comp_idx is NULL. */
typedef struct v4f_cuda_attn_keys {
    const float *raw;
    int64_t raw_cap;
    const int32_t *raw_first, *raw_count;
    int32_t raw_first0, raw_count0;
    const float *comp;
    const int32_t *comp_count;
    int32_t comp_count0;
    const int32_t *comp_idx;
    int64_t comp_idx_stride;
    /* > 0: no query has more keys (raw + compressed) than this, a bound the
     * caller knows when the counts are on the device (the model: the window
     * plus the layer's compressed-row capacity or top-k); it picks the
     * kernel and the key split. 0: unknown. */
    int64_t key_max;
    /* 1: the counts, indices and key rows were written two or more launches
     * before the attention on its stream (the launch right before it wrote
     * only q): the decode kernel requests them before its dependency wait.
     * 0 (zeroed): nothing is read before the wait. */
    int early;
    /* 1: f16 products with float32 sums are good enough (the default
     * precision, V4F_TOL_CUDA_ATTN_TC): the split-key tiled kernel runs
     * them on tensor cores. 0: float32 products. */
    int tc;
} v4f_cuda_attn_keys;

/* Attention with sink (v4f_cpu_attn_sink) for n_q queries: q, out
 * [n_q][n_head][head_dim], K = V rows of head_dim (head_dim % 32 == 0,
 * <= 512), sinks [n_head], s_i = scale * q_h . k_i; online softmax. A query
 * with no keys gets 0. out must not alias q or the keys. */
v4f_status v4f_cuda_attn_sink(v4f_cuda *c, const float *q, int64_t n_q, int64_t n_head, int64_t head_dim,
                              const v4f_cuda_attn_keys *keys, const float *sinks, float scale, float *out,
                              v4f_err *err);

/* The same, then the inverse RoPE of every output head's last n_rot dims at
 * the query's position pos[t] (as v4f_cuda_rope_tail(..., inverse)): inside
 * the split-K merge when decoding, else as a second launch. Bit-identical
 * to the two calls. */
typedef struct v4f_cuda_out_rope {
    const float *freqs;  /* [n_rot / 2] */
    const int32_t *pos;  /* [n_q] (device) */
    int n_rot;
} v4f_cuda_out_rope;
/* With planes (may be NULL): also the int8 planes of the output (after its
 * RoPE) for the matvecs that take it, the matvecs' own split: the n_q
 * n_head head_dim output floats in slots of n (n % 32 == 0, n <= 16384,
 * dividing the total), slot s at qx + s v4f_cuda_quant_row_bytes(n) (qx
 * 16-byte aligned). The decode kernels write them as they write the
 * output (one launch fewer on the decode chain); other paths split the
 * output after it. */
typedef struct v4f_cuda_out_planes {
    uint8_t *qx;
    int64_t n;
} v4f_cuda_out_planes;
v4f_status v4f_cuda_attn_sink_rope(v4f_cuda *c, const float *q, int64_t n_q, int64_t n_head, int64_t head_dim,
                                   const v4f_cuda_attn_keys *keys, const float *sinks, float scale,
                                   const v4f_cuda_out_rope *rope, float *out, const v4f_cuda_out_planes *planes,
                                   v4f_err *err);

/* Preparation of raw query heads (as v4f_cuda_q_heads): RMSNorm without
 * weight, then RoPE of each head's last n_rot dims at pos[t]. */
typedef struct v4f_cuda_q_prep {
    const float *freqs; /* [n_rot / 2] */
    const int32_t *pos; /* [n_q] (device) */
    int n_rot;
    float eps;
} v4f_cuda_q_prep;

/* The same in default (mixed) precision: from V4F_CUDA_ATTN_TC_MIN_Q
 * queries with head_dim 512 or 128, q and the key rows are rounded to f16
 * for tensor-core products (float32 sums, float32 softmax, P rounded to
 * f16); other shapes, or a device without the shared memory, run
 * v4f_cuda_attn_sink_rope with keys->tc set (its split-key tiled kernel,
 * head_dim 512, then takes the same f16 products). Error
 * bound in docs/TOLERANCES.md (V4F_TOL_CUDA_ATTN_TC). With qp, q holds the
 * raw heads: the tensor-core kernel prepares them as it loads them (q is
 * left unchanged), the fallback runs v4f_cuda_q_heads on q first. */
#define V4F_CUDA_ATTN_TC_MIN_Q 32
v4f_status v4f_cuda_attn_sink_rope_mixed(v4f_cuda *c, float *q, int64_t n_q, int64_t n_head, int64_t head_dim,
                                         const v4f_cuda_q_prep *qp, const v4f_cuda_attn_keys *keys,
                                         const float *sinks, float scale, const v4f_cuda_out_rope *rope, float *out,
                                         const v4f_cuda_out_planes *planes, v4f_err *err);

/* Indexer scores: score[t][c] = sum_h w[t][h] * max(0, q[t][h] . keys[c]) for
 * c < n_t; q [n_q][n_head][d], w [n_q][n_head], keys [n_keys][d], score rows
 * of n_keys (entries c >= n_t untouched). n_t = min(n_keys, n_valid[t]) when
 * n_valid (device int32 [n_q]) is given, else n_keys: with n_keys a
 * capacity, the launch needs no host-known count (graphs). d % 32 == 0,
 * d <= 512, n_head * d <= 12288. */
v4f_status v4f_cuda_indexer_scores(v4f_cuda *c, const float *q, const float *w, int64_t n_q, int64_t n_head,
                                   int64_t d, const float *keys, int64_t n_keys, const int32_t *n_valid,
                                   float *score, v4f_err *err);
/* The same in default precision: from V4F_CUDA_IX_TC_MIN_Q queries with
 * d = 128 and 16-64 heads (a multiple of 16), bf16 tensor cores. q and the
 * key rows are the FP4-rounded indexer rows, which bf16 holds exactly, so
 * only the float32 sums round (same tolerance as the float32 kernel); other
 * inputs are rounded to bf16. Other shapes run v4f_cuda_indexer_scores. */
#define V4F_CUDA_IX_TC_MIN_Q 32
v4f_status v4f_cuda_indexer_scores_mixed(v4f_cuda *c, const float *q, const float *w, int64_t n_q, int64_t n_head,
                                         int64_t d, const float *keys, int64_t n_keys, const int32_t *n_valid,
                                         float *score, v4f_err *err);

/* Top-k per row (v4f_cpu_topk): row r is x[r * ld + 0..n_r), n_r = n[r]
 * (device) or n0 when n is NULL; idx[r * k + 0..min(k, n_r)) gets the
 * indices of the k largest (ties: lowest index) in ascending index order,
 * the rest of the row -1; count[r] (optional) = min(k, n_r). Finite inputs;
 * -0 equals +0. */
v4f_status v4f_cuda_topk(v4f_cuda *c, const float *x, int64_t n_rows, int64_t ld, const int32_t *n, int64_t n0,
                         int64_t k, int32_t *idx, int32_t *count, v4f_err *err);

/* Router (v4f_cpu_router) for n_tok tokens: logits [n_tok][n_expert]
 * (n_expert <= 4096), bias [n_expert] or NULL; hash routing when tid2eid is
 * not NULL: ids[t] = tid2eid[tokens[t] * k + 0..k). ids, w [n_tok][k] in
 * selection order (k <= 64). */
v4f_status v4f_cuda_router(v4f_cuda *c, const float *logits, const float *bias, int64_t n_tok, int64_t n_expert,
                           int k, const int32_t *tid2eid, const int32_t *tokens, bool norm, float scale, int32_t *ids,
                           float *w, v4f_err *err);
/* The same, and the int8 planes of the routed experts' x (n_tok rows of
 * n_in floats, n_in % 32 == 0, n_in <= 16384): row t at xq + t
 * v4f_cuda_quant_row_bytes(n_in) (16-byte aligned), in the natural order as
 * v4f_cuda_quant_rows(V4F_TYPE_Q8_0) makes them, bit for bit; made by extra
 * CTAs of the router's launch, beside the routing, for
 * v4f_cuda_matvec_indirect_planes (one launch fewer on the decode chain).
 * x NULL: the router alone. */
v4f_status v4f_cuda_router_planes(v4f_cuda *c, const float *logits, const float *bias, int64_t n_tok,
                                  int64_t n_expert, int k, const int32_t *tid2eid, const int32_t *tokens, bool norm,
                                  float scale, int32_t *ids, float *w, const float *x, int64_t n_in, uint8_t *xq,
                                  v4f_err *err);

/* h[r][i] = weight[r] * SiLU(min(g, limit)) * clamp(u, -limit, limit) for
 * rows r < n_rows of n (limit <= 0: no clamp; weight NULL: 1). */
v4f_status v4f_cuda_swiglu(v4f_cuda *c, const float *g, const float *u, int64_t n_rows, int64_t n, float limit,
                           const float *weight, float *h, v4f_err *err);
/* The same, and the int8 planes of each output row r at qx + r
 * v4f_cuda_quant_row_bytes(n) (the matvecs' own split, for
 * v4f_cuda_matvec_batch_planes / v4f_cuda_matvec_indirect_planes; n % 32
 * == 0, n <= 16384, qx 16-byte aligned). */
v4f_status v4f_cuda_swiglu_planes(v4f_cuda *c, const float *g, const float *u, int64_t n_rows, int64_t n, float limit,
                                  const float *weight, float *h, uint8_t *qx, v4f_err *err);

/* Compressor pooling (v4f_cpu_compress_pool) for n_groups output rows:
 * group g, candidate i < n_cand reads value and score rows at
 * base + g * group_stride + i * ld + (i >= n_lo ? hi_off : 0) (floats) of
 * vals and scores; out[g][j] = sum_i softmax_i(score_i[j]) * val_i[j],
 * j < D; all scores -inf: 0. */
v4f_status v4f_cuda_compress_pool(v4f_cuda *c, const float *vals, const float *scores, int64_t n_groups,
                                  int64_t group_stride, int n_cand, int64_t ld, int n_lo, int64_t hi_off, int64_t D,
                                  float *out, v4f_err *err);

/* ---- batched matmul (cuda_gemm.cu) ------------------------------------------
 * Prefill GEMMs. Tolerances: docs/TOLERANCES.md "## cuda gemm". */

/* Y[t * ldy + o] = sum_i W[o][i] * X[t * ldx + i] for t < n_tok, o < n_out. exact: float32 products
   and accumulation (the reference mode); else tensor cores (X and dequantized W rounded to f16,
   float32 accumulation; F32 and BF16 weights, whose values may exceed the f16 range, always run the
   exact kernel). W any of the 7 types (F32, F16, BF16, Q8_0, Q2_K, Q4_K, IQ2_XXS; layouts as the
   matvec kernels in cuda_quant.cu, v4f_cuda_mat). Asynchronous on the context stream, no allocation,
   capturable in a CUDA graph. The tensor-core path needs n_in % 32 == 0, W data and row_bytes
   multiples of 16, X 16-byte aligned and ldx % 4 == 0; otherwise the exact kernel runs. Y must not
   overlap X or W. The first tensor-core launch of each (type, tile) configuration on a device raises
   that kernel's shared-memory limit (cudaFuncSetAttribute, not a stream operation): warm up once per
   weight type outside capture before capturing a graph (capture-time behaviour not verified). */
v4f_status v4f_cuda_matmul(v4f_cuda *c, const v4f_cuda_mat *w, const float *X, int64_t ldx, int64_t n_tok,
                           float *Y, int64_t ldy, bool exact, v4f_err *err);

/* Block-diagonal matmul in one launch: `groups` (<= 65535) independent products, the same as
   v4f_cuda_matmul on each group g with the matrix rows [g * w->n_out, (g + 1) * w->n_out) (data at
   w->data + g * w->n_out * row_bytes; w describes one group), input X + g * w->n_in and output
   Y + g * w->n_out (ldx >= groups * n_in, ldy >= groups * n_out). Same modes and conditions. */
v4f_status v4f_cuda_matmul_blockdiag(v4f_cuda *c, const v4f_cuda_mat *w, int groups, const float *X, int64_t ldx,
                                     int64_t n_tok, float *Y, int64_t ldy, bool exact, v4f_err *err);

/* Grouped (routed-expert) matmul with device-side grouping: X holds rows sorted by expert; rows
   [offs[e], offs[e+1]) (offs: device int32 [n_expert + 1], offs[0] = 0) are multiplied by the matrix at
   tab[tab_off + e] (tab: device array of device or host-mapped pointers, 16-byte aligned) of shape
   `shape` (data ignored): Y[r * ldy + o] = W_e[o] . X[r * ldx + ...]. max_rows (host) bounds offs[n_expert]
   and sizes the grid (the grid may have idle CTAs); rows past it are not computed. Same exact/tensor-core
   switch. Rows of Y outside [0, offs[n_expert]) are not written. */
v4f_status v4f_cuda_matmul_grouped(v4f_cuda *c, const v4f_cuda_mat *shape, const void *const *tab,
                                   int32_t tab_off, const int32_t *offs, int n_expert, int64_t max_rows,
                                   const float *X, int64_t ldx, float *Y, int64_t ldy, bool exact, v4f_err *err);

#ifdef __cplusplus
}
#endif

#endif /* V4F_CUDA_BACKEND_H */
