/*
 * ops.h - the CPU backend's model operations (the reference implementation of
 * the op list a CUDA backend implements too).
 *
 * Every op takes its dimensions as arguments and reads no model constant.
 * Activations are float32, row-major; "rows" of a batch are tokens. The
 * math follows the official DeepSeek V4 inference code (MODEL.md §5-§9):
 * float32 activations and accumulation; RMSNorm sums of squares in double.
 *
 * Ownership: ops never allocate; the caller passes outputs and scratch.
 * v4f_cpu_ctx owns the per-thread scratch of the matmul and a pool pointer
 * (not the pool).
 * Threading: the plain ops are pure functions of their arguments (call them
 * from any thread); v4f_cpu_matmul runs a parallel-for on the ctx's pool and
 * must be called from the pool's owner thread.
 */
#ifndef V4F_CPU_OPS_H
#define V4F_CPU_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "core/threadpool.h"

/* ---- weight matrices ------------------------------------------------------ */

/* A weight matrix of any supported type: n_out rows of n_in inputs; row r
 * starts at data + r * row_bytes. */
typedef struct v4f_cpu_mat {
    const void *data;
    uint32_t type; /* v4f_ggml_type */
    int64_t n_in;
    int64_t n_out;
    uint64_t row_bytes;
} v4f_cpu_mat;

/* Rows [row0, row0 + n_rows) of m as a matrix of its own. */
static inline v4f_cpu_mat v4f_cpu_mat_rows(const v4f_cpu_mat *m, int64_t row0, int64_t n_rows) {
    v4f_cpu_mat r = *m;
    r.data = (const uint8_t *)m->data + (uint64_t)row0 * m->row_bytes;
    r.n_out = n_rows;
    return r;
}

/* Matmul context: the pool, per-thread dequantization scratch and the
 * int8-plane scratch of the decode matvec. */
typedef struct v4f_cpu_ctx {
    v4f_pool *pool;
    int n_threads;
    int64_t max_n_in;   /* largest n_in the scratch fits */
    float **tile;       /* [n_threads] -> max(V4F_CPU_TILE_ROWS * max_n_in, the chunked
                         * prefill GEMM's X/Y blocks) floats (ops.c tile_floats) */
    /* planes of the distinct X rows of one decode region (quant.h,
     * v4f_quantize_planes): V4F_CPU_PLANE_SLOTS rows of max_n_in, packed */
    uint8_t *planes;
    size_t planes_cap;
    /* bit t set: decode matvecs of type t use its dot_planes kernel where
     * it has one (default: all types). Env V4F_CPU_PLANES at ctx init: 0 =
     * none (the f32 dot_f32 kernels, for A/B), or a comma list of type
     * names (e.g. IQ2_XXS,Q2_K). */
    uint64_t planes_types;
} v4f_cpu_ctx;

#define V4F_CPU_TILE_ROWS 16
#define V4F_CPU_PLANE_SLOTS 16
/* Jobs below this many multiply-adds run on the calling thread. */
#define V4F_CPU_INLINE_MACS (256.0 * 1024.0)

/* pool may be NULL (single-threaded). Returns V4F_STATUS_OOM on failure. */
v4f_status v4f_cpu_ctx_init(v4f_cpu_ctx *c, v4f_pool *pool, int64_t max_n_in, v4f_err *err);
void v4f_cpu_ctx_deinit(v4f_cpu_ctx *c);

/* Y[t][r] = W[r] . X[t] for t < n, r < W->n_out. X rows have stride ldx
 * floats, Y rows stride ldy. n == 1 uses the type's dot kernel per row
 * (parallel over row blocks): dot_planes over the planes of X, split once
 * per call on the calling thread, where the type has that kernel and is in
 * the ctx's planes_types and the planes fit the scratch; dot_f32 otherwise. n > 1
 * dequantizes row tiles to float32 once and runs a blocked f32 kernel over
 * all n rows of X (parallel over row tiles). Results do not depend on the
 * thread count. */
void v4f_cpu_matmul(v4f_cpu_ctx *c, const v4f_cpu_mat *W, const float *X, int64_t ldx, int64_t n,
                    float *Y, int64_t ldy);
/* Several independent matmuls in one parallel region (one pool wake-up):
 * job i computes mms[i].Y = mms[i].W x mms[i].X as v4f_cpu_matmul does. The
 * W pointers must stay valid during the call. */
typedef struct v4f_cpu_mm {
    const v4f_cpu_mat *W;
    const float *X;
    int64_t ldx, n;
    float *Y;
    int64_t ldy;
} v4f_cpu_mm;
void v4f_cpu_matmul_multi(v4f_cpu_ctx *c, const v4f_cpu_mm *mms, int n_mm);
/* Single-threaded version (for use inside a parallel task). tile: scratch of
 * V4F_CPU_TILE_ROWS * W->n_in floats (used when n > 1; may be NULL if n==1). */
void v4f_cpu_matmul_st(const v4f_cpu_mat *W, const float *X, int64_t ldx, int64_t n, float *Y,
                       int64_t ldy, float *tile);
/* Y[t][r] = W[r] . X[t] for float32 W (nr rows of K, contiguous) and nt rows
 * of X (stride ldx), single-threaded, best ISA (blocked GEMM micro-kernel).
 * Each output's arithmetic is independent of nr/nt (no tiling effects). */
void v4f_cpu_gemm_f32(const float *W, int64_t nr, const float *X, int64_t ldx, int64_t nt,
                      int64_t K, float *Y, int64_t ldy);
/* The machine's f32 FMA peak, measured: every pool thread runs independent
 * vector FMA chains of the best ISA (AVX-512 16 lanes, AVX2 8, else scalar)
 * for about `seconds`; returns GFLOP/s over all threads (2 flops per FMA
 * lane) and the vector width used in *lanes. */
double v4f_cpu_fma_peak_gflops(v4f_pool *pool, double seconds, int *lanes);
/* f32 dot with a fixed summation order (8 lanes). */
float v4f_cpu_dot_f32(const float *a, const float *b, int64_t n);

/* ---- norms ------------------------------------------------------------ */

/* sum of x[i]^2 in double, in a fixed order (eight interleaved partial
 * sums); rmsnorm's sum of squares. */
double v4f_cpu_sumsq_f64(const float *x, int64_t n);
/* y = x / sqrt(mean(x^2) + eps) * w (w NULL: no weight). y may equal x. */
void v4f_cpu_rmsnorm(const float *x, const float *w, float *y, int64_t n, float eps);

/* ---- RoPE ----------------------------------------------------------------- */

typedef struct v4f_rope_params {
    float base;
    /* YaRN (orig_ctx == 0: off) */
    uint64_t orig_ctx;
    float factor, beta_fast, beta_slow;
} v4f_rope_params;

/* freqs[i], i < n_rot/2: the (YaRN-blended) per-pair frequency in float32. */
void v4f_rope_freqs(const v4f_rope_params *p, int n_rot, float *freqs);
/* The YaRN ramp bounds (low, high) for p (0/0 when YaRN is off). */
void v4f_rope_yarn_range(const v4f_rope_params *p, int n_rot, int *low, int *high);
/* Rotate the last n_rot dims of x (one head of head_dim floats) by position
 * pos, adjacent pairs; inverse = conjugate rotation. */
void v4f_cpu_rope_tail(float *x, int64_t head_dim, int n_rot, const float *freqs, int64_t pos,
                       bool inverse);
/* The same in two steps, so heads at one position share the trigonometry:
 * cs[2i], cs[2i+1] = cos, sin of pos * freqs[i] (float of the double
 * functions, as rope_tail), then the rotation (bit-identical to rope_tail). */
#define V4F_ROPE_MAX_ROT 256
void v4f_cpu_rope_cs(const float *freqs, int n_rot, int64_t pos, float *cs);
void v4f_cpu_rope_tail_cs(float *x, int64_t head_dim, int n_rot, const float *cs, bool inverse);

/* ---- KV quantizer simulations ------------------------------------------ */

/* FP8 E4M3FN round-trip of x[0..n) in blocks of 64 (a shorter last block if
 * n % 64 != 0), power-of-
 * two scales 2^ceil(log2(amax/448)), amax floor 1e-4, ties to even. */
void v4f_cpu_fp8_roundtrip(float *x, int64_t n);
/* Encode one block of 64: codes (E4M3FN bytes) and the scale exponent e
 * (scale = 2^e). Decoding gives exactly the round-trip values. */
void v4f_fp8_encode_block64(const float *x, uint8_t *codes, int8_t *exp);
void v4f_fp8_decode_block64(const uint8_t *codes, int8_t exp, float *y);
float v4f_fp8_e4m3_to_f32(uint8_t code);
/* Round v (already scaled, |v| <= 448) to the nearest E4M3FN value. */
float v4f_fp8_e4m3_round(float v);

/* Walsh-Hadamard transform of x[0..n) (n a power of two), scaled by n^-1/2. */
void v4f_cpu_hadamard(float *x, int64_t n);
/* FP4 E2M1 round-trip in blocks of 32 (shorter last block allowed), scales
 * 2^ceil(log2(amax/6)), amax floor 6*2^-126, ties to even. */
void v4f_cpu_fp4_roundtrip(float *x, int64_t n);
/* Encode one block of 32: 16 bytes of codes (low nibble first) + exponent. */
void v4f_fp4_encode_block32(const float *x, uint8_t *codes, int8_t *exp);
void v4f_fp4_decode_block32(const uint8_t *codes, int8_t exp, float *y);
float v4f_fp4_e2m1_round(float v);

/* ---- hyper-connections --------------------------------------------------- */

/* Split the (2+H)*H mixer outputs into pre[H], post[H], comb[H][H]
 * (Sinkhorn-normalised with `iters` iterations, eps inside every division). */
void v4f_cpu_hc_split_sinkhorn(const float *mix, const float *scale3, const float *base, int n_hc,
                               int iters, float eps, float *pre, float *post, float *comb);
/* y[d] = sum_h w[h] * X[h][d] */
void v4f_cpu_hc_weighted_sum(const float *X, const float *w, int n_hc, int64_t d, float *y);
/* Xout[j] = post[j]*o + sum_i comb[i][j]*X[i]  (Xout must not alias X) */
void v4f_cpu_hc_post(const float *o, const float *X, const float *post, const float *comb,
                     int n_hc, int64_t d, float *Xout);
/* Head collapse weights: w[h] = sigmoid(mix[h]*scale + base[h]) + eps */
void v4f_cpu_hc_head_weights(const float *mix, float scale, const float *base, int n_hc, float eps,
                             float *w);

/* ---- attention ------------------------------------------------------------ */

/* Heads [h0, h1) of one query: q [n_head][hd], keys [nk][hd] (K = V),
 * sinks [n_head]; out [n_head][hd] (only heads h0..h1 written).
 * o_h = sum_i e^{s_i-m} k_i / (e^{sink_h-m} + sum_i e^{s_i-m}),
 * s_i = scale * q_h.k_i. scratch: nk * (h1 - h0) floats. */
void v4f_cpu_attn_sink(const float *q, int64_t h0, int64_t h1, int64_t hd, const float *keys,
                       int64_t nk, const float *sinks, float scale, float *out, float *scratch);
/* The same over the key list keys_a[0..nka) followed by keys_b[0..nkb) (two
 * separately stored segments, e.g. the window and the compressed rows);
 * scratch: (nka + nkb) * (h1 - h0) floats. */
void v4f_cpu_attn_sink2(const float *q, int64_t h0, int64_t h1, int64_t hd, const float *keys_a,
                        int64_t nka, const float *keys_b, int64_t nkb, const float *sinks,
                        float scale, float *out, float *scratch);

/* Indexer: score[c] = sum_h w[h] * max(0, q_h . k_c), q [nh][d], keys [nk][d]. */
void v4f_cpu_indexer_scores(const float *q, const float *w, int64_t nh, int64_t d,
                            const float *keys, int64_t nk, float *score);
/* Indices of the k largest of x[0..n) (ties: lowest index first), written in
 * ascending index order to idx[0..min(k,n)); returns min(k, n). */
int64_t v4f_cpu_topk(const float *x, int64_t n, int64_t k, int32_t *idx);

/* Compressor pooling: out[j] = sum_c softmax_c(score_c[j]) * val_c[j] over
 * n_cand candidate rows (pointers; a NULL score row counts as -inf). All
 * -inf: out[j] = 0. */
void v4f_cpu_compress_pool(const float *const *vals, const float *const *scores, int n_cand,
                           int64_t D, float *out);

/* ---- MoE --------------------------------------------------------------- */

/* Router: scores s = sqrt(softplus(logits)); selection by top-k of s + bias
 * (bias NULL: none) or the given hash ids; weights = s[sel] / sum * scale
 * (renormalised if norm). ids/w have k entries, in selection order. */
void v4f_cpu_router(const float *logits, const float *bias, int64_t n_expert, int k,
                    const int32_t *hash_ids, bool norm, float scale, int32_t *ids, float *w);
/* h[i] = weight * SiLU(min(g,limit)) * clamp(u, -limit, limit); limit <= 0:
 * no clamp (the shared expert). */
void v4f_cpu_swiglu(const float *g, const float *u, int64_t n, float limit, float weight,
                    float *h);

#endif /* V4F_CPU_OPS_H */
