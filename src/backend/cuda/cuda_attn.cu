/*
 * cuda_attn.cu - sparse attention with sink, indexer scores and top-k
 * selection of the CUDA backend (API in cuda_backend.h).
 *
 * Owns: k_attn_sink (one block per (query, head): each warp runs an online
 * softmax over a strided share of the key rows, then the warps' partial
 * (max, denominator, accumulator) are merged with the sink logit in the
 * denominator), k_indexer_scores (the query's heads in shared memory, one
 * warp per key row) and k_topk (one block per row: 8-bit radix select of the
 * k-th largest value on order-preserving integer keys, then an in-order
 * compaction that takes every greater element and the lowest-index equal
 * ones, so ties go to the lowest index and the output is ascending).
 *
 * Invariants: attention and indexer scores are float32 with another
 * summation order than the CPU (tolerances in docs/TOLERANCES.md); top-k is
 * exact on its inputs (same index set as v4f_cpu_topk for identical x).
 * Memory ownership: no allocation; caller's device buffers only.
 * Threading/streams: asynchronous launches on the context's stream.
 */
#include "backend/cuda/cuda_common.cuh"

#include <math.h>

#define ARG_CHECK(cond, ...)                                                                  \
    do {                                                                                      \
        if (!(cond)) return v4f_err_set(err, V4F_STATUS_INVALID_ARG, __VA_ARGS__);            \
    } while (0)

__device__ __forceinline__ float warp_sum_f(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* ---- attention with sink ------------------------------------------------------------ */

#define ATTN_WARPS 4
#define ATTN_MAX_PER 16 /* head_dim / 32 <= 16: head_dim <= 512 */

struct attn_args {
    const float *q;
    float *out;
    int64_t n_head, hd;
    const float *sinks;
    float scale;
    v4f_cuda_attn_keys k;
};

/* Row pointer of key i of query t, NULL to skip. */
__device__ __forceinline__ const float *attn_key_row(const v4f_cuda_attn_keys *k, int64_t t, int64_t i, int64_t n_raw,
                                                     int64_t hd) {
    if (i < n_raw) {
        int64_t r = (int64_t)(k->raw_first ? k->raw_first[t] : k->raw_first0) + i;
        if (k->raw_cap > 0) r %= k->raw_cap;
        return k->raw + r * hd;
    }
    const int64_t j = i - n_raw;
    const int64_t row = k->comp_idx ? (int64_t)k->comp_idx[t * k->comp_idx_stride + j] : j;
    return row < 0 ? NULL : k->comp + row * hd;
}

template <int PER>
__global__ void __launch_bounds__(ATTN_WARPS * 32) k_attn_sink(attn_args a) {
    __shared__ float s_m[ATTN_WARPS], s_l[ATTN_WARPS];
    __shared__ float s_acc[ATTN_WARPS][PER * 32];
    const int64_t h = blockIdx.x, t = blockIdx.y;
    const int wl = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t hd = a.hd;
    const float *qh = a.q + (t * a.n_head + h) * hd;
    float qv[PER], acc[PER];
#pragma unroll
    for (int i = 0; i < PER; i++) {
        const int64_t d = lane + 32 * i;
        qv[i] = d < hd ? qh[d] : 0.0f;
        acc[i] = 0.0f;
    }
    const int64_t n_raw = a.k.raw_count ? a.k.raw_count[t] : a.k.raw_count0;
    const int64_t n_comp = a.k.comp_count ? a.k.comp_count[t] : a.k.comp_count0;
    const int64_t nk = (n_raw > 0 ? n_raw : 0) + (n_comp > 0 ? n_comp : 0);
    float m = -INFINITY, l = 0.0f;
    for (int64_t i = wl; i < nk; i += ATTN_WARPS) {
        const float *kr = attn_key_row(&a.k, t, i, n_raw > 0 ? n_raw : 0, hd);
        if (!kr) continue;
        float kv[PER];
        float dot = 0.0f;
#pragma unroll
        for (int j = 0; j < PER; j++) {
            const int64_t d = lane + 32 * j;
            kv[j] = d < hd ? kr[d] : 0.0f;
            dot = fmaf(qv[j], kv[j], dot);
        }
        const float s = warp_sum_f(dot) * a.scale;
        const float mn = fmaxf(m, s);
        const float corr = m == -INFINITY ? 0.0f : expf(m - mn);
        const float p = expf(s - mn);
        l = l * corr + p;
#pragma unroll
        for (int j = 0; j < PER; j++) acc[j] = fmaf(p, kv[j], acc[j] * corr);
        m = mn;
    }
    if (lane == 0) {
        s_m[wl] = m;
        s_l[wl] = l;
    }
#pragma unroll
    for (int j = 0; j < PER; j++) s_acc[wl][lane + 32 * j] = acc[j];
    __syncthreads();
    const float sink = a.sinks[h];
    float M = sink;
    for (int w = 0; w < ATTN_WARPS; w++) M = fmaxf(M, s_m[w]);
    float f[ATTN_WARPS];
    float den = expf(sink - M);
    for (int w = 0; w < ATTN_WARPS; w++) {
        f[w] = s_m[w] == -INFINITY ? 0.0f : expf(s_m[w] - M);
        den += s_l[w] * f[w];
    }
    const float inv = 1.0f / den;
    float *oh = a.out + (t * a.n_head + h) * hd;
    for (int64_t d = threadIdx.x; d < hd; d += blockDim.x) {
        float v = 0.0f;
        for (int w = 0; w < ATTN_WARPS; w++) v = fmaf(s_acc[w][d], f[w], v);
        oh[d] = v * inv;
    }
}

extern "C" v4f_status v4f_cuda_attn_sink(v4f_cuda *c, const float *q, int64_t n_q, int64_t n_head, int64_t head_dim,
                                         const v4f_cuda_attn_keys *keys, const float *sinks, float scale, float *out,
                                         v4f_err *err) {
    ARG_CHECK(n_q >= 0 && n_q <= 65535 && n_head > 0 && n_head <= 0x7fffffff && head_dim > 0 &&
                  head_dim % 32 == 0 && head_dim <= 32 * ATTN_MAX_PER,
              "cuda attn: bad shape n_q %lld n_head %lld head_dim %lld", (long long)n_q, (long long)n_head,
              (long long)head_dim);
    ARG_CHECK(keys && (keys->raw || (!keys->raw_count && keys->raw_count0 <= 0)) &&
                  (keys->comp || (!keys->comp_count && keys->comp_count0 <= 0)) && keys->raw_cap >= 0,
              "cuda attn: key rows missing");
    if (n_q == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    attn_args a;
    a.q = q;
    a.out = out;
    a.n_head = n_head;
    a.hd = head_dim;
    a.sinks = sinks;
    a.scale = scale;
    a.k = *keys;
    const dim3 grid((unsigned)n_head, (unsigned)n_q);
    const int per = (int)(head_dim / 32);
    if (per <= 4)
        k_attn_sink<4><<<grid, ATTN_WARPS * 32, 0, c->stream>>>(a);
    else if (per <= 8)
        k_attn_sink<8><<<grid, ATTN_WARPS * 32, 0, c->stream>>>(a);
    else
        k_attn_sink<16><<<grid, ATTN_WARPS * 32, 0, c->stream>>>(a);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

/* ---- indexer scores ----------------------------------------------------------------- */

#define IDX_WARPS 8
#define IDX_KEYS_PER_BLOCK 64
#define IDX_MAX_Q 12288 /* n_head * d floats in shared memory (48 KB) */

template <int PER>
__global__ void __launch_bounds__(IDX_WARPS * 32) k_indexer_scores(const float *__restrict__ q,
                                                                   const float *__restrict__ w, int64_t nh, int64_t d,
                                                                   const float *__restrict__ keys, int64_t nk,
                                                                   const int32_t *__restrict__ n_valid, float *score) {
    extern __shared__ float qs[];
    const int64_t t = blockIdx.y;
    const int64_t nv = n_valid ? min(nk, (int64_t)n_valid[t]) : nk;
    if ((int64_t)blockIdx.x * IDX_KEYS_PER_BLOCK >= nv) return; /* uniform over the CTA */
    const float *qt = q + t * nh * d;
    for (int64_t i = threadIdx.x; i < nh * d; i += blockDim.x) qs[i] = qt[i];
    __syncthreads();
    const int wl = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const float *wt = w + t * nh;
    const int64_t c0 = (int64_t)blockIdx.x * IDX_KEYS_PER_BLOCK;
    for (int64_t cidx = c0 + wl; cidx < c0 + IDX_KEYS_PER_BLOCK && cidx < nv; cidx += IDX_WARPS) {
        const float *kr = keys + cidx * d;
        float kv[PER];
#pragma unroll
        for (int j = 0; j < PER; j++) {
            const int64_t dd = lane + 32 * j;
            kv[j] = dd < d ? kr[dd] : 0.0f;
        }
        float s = 0.0f;
        for (int64_t h = 0; h < nh; h++) {
            const float *qh = qs + h * d;
            float dot = 0.0f;
#pragma unroll
            for (int j = 0; j < PER; j++) {
                const int64_t dd = lane + 32 * j;
                if (dd < d) dot = fmaf(qh[dd], kv[j], dot);
            }
            dot = warp_sum_f(dot);
            if (dot > 0.0f) s = fmaf(wt[h], dot, s);
        }
        if (lane == 0) score[t * nk + cidx] = s;
    }
}

extern "C" v4f_status v4f_cuda_indexer_scores(v4f_cuda *c, const float *q, const float *w, int64_t n_q,
                                              int64_t n_head, int64_t d, const float *keys, int64_t n_keys,
                                              const int32_t *n_valid, float *score, v4f_err *err) {
    ARG_CHECK(n_q >= 0 && n_q <= 65535 && n_head > 0 && d > 0 && d % 32 == 0 && d <= 512 &&
                  n_head * d <= IDX_MAX_Q && n_keys >= 0,
              "cuda indexer scores: bad shape n_head %lld d %lld", (long long)n_head, (long long)d);
    if (n_q == 0 || n_keys == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    const dim3 grid((unsigned)((n_keys + IDX_KEYS_PER_BLOCK - 1) / IDX_KEYS_PER_BLOCK), (unsigned)n_q);
    const size_t smem = (size_t)(n_head * d) * sizeof(float);
    const int per = (int)(d / 32);
    if (per <= 4)
        k_indexer_scores<4><<<grid, IDX_WARPS * 32, smem, c->stream>>>(q, w, n_head, d, keys, n_keys, n_valid,
                                                                          score);
    else if (per <= 8)
        k_indexer_scores<8><<<grid, IDX_WARPS * 32, smem, c->stream>>>(q, w, n_head, d, keys, n_keys, n_valid,
                                                                          score);
    else
        k_indexer_scores<16><<<grid, IDX_WARPS * 32, smem, c->stream>>>(q, w, n_head, d, keys, n_keys, n_valid,
                                                                          score);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

/* ---- top-k -------------------------------------------------------------------------- */

#define TOPK_THREADS 512
#define TOPK_WARPS (TOPK_THREADS / 32)

/* Order-preserving map float -> uint32 (larger float, larger key); -0 is +0. */
__device__ __forceinline__ uint32_t topk_key(float f) {
    uint32_t u = __float_as_uint(f == 0.0f ? 0.0f : f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* Exclusive prefix count of flag over the block (all threads call); returns
 * this thread's rank, *total the block's count. Uses s_w (TOPK_WARPS ints). */
__device__ __forceinline__ int block_rank(bool flag, int *s_w, int *total) {
    const int lane = threadIdx.x & 31, wl = threadIdx.x >> 5;
    const unsigned b = __ballot_sync(0xffffffffu, flag);
    const int in_warp = __popc(b & ((1u << lane) - 1u));
    __syncthreads();
    if (lane == 0) s_w[wl] = __popc(b);
    __syncthreads();
    int before = 0, tot = 0;
    for (int i = 0; i < TOPK_WARPS; i++) {
        if (i < wl) before += s_w[i];
        tot += s_w[i];
    }
    *total = tot;
    return before + in_warp;
}

__global__ void __launch_bounds__(TOPK_THREADS) k_topk(const float *__restrict__ x, int64_t ld,
                                                       const int32_t *__restrict__ nr, int64_t n0, int64_t k,
                                                       int32_t *idx, int32_t *count) {
    __shared__ unsigned hist[256];
    __shared__ uint32_t s_prefix;
    __shared__ int64_t s_need;
    __shared__ int s_w[TOPK_WARPS];
    const int64_t r = blockIdx.x;
    const float *xr = x + r * ld;
    int64_t n = nr ? (int64_t)nr[r] : n0;
    if (n < 0) n = 0;
    int32_t *out = idx + r * k;
    const int64_t kk = k < n ? k : n;
    if (kk == n) { /* everything is selected */
        for (int64_t i = threadIdx.x; i < k; i += blockDim.x) out[i] = i < n ? (int32_t)i : -1;
        if (count && threadIdx.x == 0) count[r] = (int32_t)kk;
        return;
    }
    /* radix select: find the key T of the kk-th largest and how many equal
     * to T are needed (need), MSB byte first. */
    uint32_t prefix = 0, mask = 0;
    int64_t need = kk;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
        __syncthreads();
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
            const uint32_t key = topk_key(xr[i]);
            if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            int64_t acc = 0;
            int b = 255;
            for (; b > 0; b--) {
                if (acc + (int64_t)hist[b] >= need) break;
                acc += hist[b];
            }
            s_prefix = prefix | ((uint32_t)b << shift);
            s_need = need - acc;
        }
        __syncthreads();
        prefix = s_prefix;
        need = s_need;
        mask |= 255u << shift;
        __syncthreads();
    }
    const uint32_t T = prefix;
    /* in-order compaction */
    int64_t eq_base = 0, out_base = 0;
    for (int64_t c0 = 0; c0 < n; c0 += blockDim.x) {
        const int64_t i = c0 + threadIdx.x;
        const uint32_t key = i < n ? topk_key(xr[i]) : 0u;
        const bool eq = i < n && key == T;
        int eq_tot = 0, sel_tot = 0;
        const int eq_rank = block_rank(eq, s_w, &eq_tot);
        const bool sel = i < n && (key > T || (eq && eq_base + eq_rank < need));
        const int sel_rank = block_rank(sel, s_w, &sel_tot);
        if (sel) out[out_base + sel_rank] = (int32_t)i;
        eq_base += eq_tot;
        out_base += sel_tot;
        if (out_base >= kk) break; /* uniform across the block */
    }
    for (int64_t i = kk + threadIdx.x; i < k; i += blockDim.x) out[i] = -1;
    if (count && threadIdx.x == 0) count[r] = (int32_t)kk;
}

extern "C" v4f_status v4f_cuda_topk(v4f_cuda *c, const float *x, int64_t n_rows, int64_t ld, const int32_t *n,
                                    int64_t n0, int64_t k, int32_t *idx, int32_t *count, v4f_err *err) {
    ARG_CHECK(n_rows >= 0 && n_rows <= 0x7fffffff && k > 0 && k <= 0x7fffffff && n0 <= 0x7fffffff &&
                  (n || n0 <= ld || n_rows <= 1),
              "cuda topk: bad shape rows %lld ld %lld n %lld k %lld", (long long)n_rows, (long long)ld,
              (long long)n0, (long long)k);
    if (n_rows == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    k_topk<<<(unsigned)n_rows, TOPK_THREADS, 0, c->stream>>>(x, ld, n, n0, k, idx, count);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}
