/*
 * cuda_attn.cu - sparse attention with sink, indexer scores and top-k
 * selection of the CUDA backend (API in cuda_backend.h).
 *
 * Owns:
 *  - attention: k_fa_tile (head_dim 512, the model's shape): one CTA per
 *    (key split, group of 16 heads, query). It streams tiles of 32 key rows
 *    into shared memory (cp.async), computes the 16 x 32 score tile with
 *    register tiling (4 heads x 2 keys per thread, the 512 dims in four
 *    quarters), updates an online softmax per head and accumulates
 *    P . K into registers (4 heads x 8 dims per thread). Decode (few
 *    queries) splits the key range over several CTAs (flash decoding); each
 *    split writes its unnormalised accumulator, max and denominator to a
 *    static device buffer and k_fa_combine merges them with the sink logit.
 *    k_attn_generic (one block per (query, head), per-warp online softmax)
 *    covers other head sizes and devices without the shared memory.
 *  - default-precision prefill attention: k_fa_mma (head_dim 512 or 128,
 *    from V4F_CUDA_ATTN_TC_MIN_Q queries): one CTA per (query, 64 heads),
 *    f16 tensor-core products with float32 sums and softmax (description at
 *    the kernel). The keys are read once per query instead of once per
 *    16-head group. V4F_CUDA_ATTN_TC=0 turns it off (A/B).
 *  - indexer scores: k_ix_tile (d = 128, up to 64 heads): one CTA holds the
 *    query's heads in shared memory and loops over tiles of 64 key rows
 *    (4 heads x 4 keys per thread, ReLU, weights, head sum in the
 *    epilogue), or of 16 rows (4 heads x 1 key) where 64 would leave SMs
 *    idle; k_indexer_generic for other shapes.
 *  - default-precision prefill indexer scores: k_ix_mma (d = 128, 16-64
 *    heads, from V4F_CUDA_IX_TC_MIN_Q queries): bf16 tensor cores, exact
 *    products of the FP4-rounded q and key rows (description at the kernel);
 *    V4F_CUDA_IX_TC=0 turns it off (A/B).
 *  - top-k: rows up to 16K (and prefill's many rows) run k_topk (one block
 *    per row: 8-bit radix select, then an in-order compaction; rows up to
 *    TOPK_SMEM_N keys from shared memory with per-lane histogram counters,
 *    a small threshold bin finished by ranking its keys; longer ones from
 *    global memory). Long rows
 *    (few rows, k <= 2048) run a multi-CTA radix select: k_tk_hist1 (top 12
 *    key bits, all SMs), k_tk_hist2 (next 12 bits inside the threshold bin),
 *    k_tk_collect (elements above the 24-bit threshold prefix, and the
 *    candidates equal to it), k_tk_final (last 8 bits and ties by lowest
 *    index among the candidates, bitonic sort to ascending order; a row
 *    whose candidate list overflowed falls back to the one-block select).
 *
 * Invariants: attention and indexer scores are float32 with another
 * summation order than the CPU (tolerances in docs/TOLERANCES.md); top-k is
 * exact on its inputs (same index set as v4f_cpu_topk for identical x).
 * Memory ownership: no allocation; caller's buffers plus static __device__
 * scratch of this file (attention split partials, 8.1 MB; top-k histograms
 * and candidate lists, 0.4 MB), reused by every launch on the device in
 * stream order. Launches that use it must therefore not run concurrently on
 * two streams of one device (the backend has one stream per context and one
 * context per device); everything is capturable in a CUDA graph (no host
 * synchronisation, no allocation, launch shapes depend on host arguments
 * only).
 * Threading/streams: asynchronous launches on the context's stream.
 */
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_dev.cuh"
#include "backend/cuda/cuda_fwd.h"
#include "core/ggml_type.h"

#include <math.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cooperative_groups.h>

#define ARG_CHECK(cond, ...)                                                                  \
    do {                                                                                      \
        if (!(cond)) return v4f_err_set(err, V4F_STATUS_INVALID_ARG, __VA_ARGS__);            \
    } while (0)

__device__ __forceinline__ float warp_sum_f(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max_f(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* One head's online-softmax step over a tile of up to 32 keys, lane = key
 * (the tiled kernels): s is the lane's scaled score, -inf for no key; the
 * running max m and sum l move to the tile, *corr gets the factor for the
 * accumulated output. Returns the lane's weight. */
__device__ __forceinline__ float fa_softmax_step(float s, float *m, float *l, float *corr) {
    const float mn = fmaxf(*m, warp_max_f(s));
    const float p = s == -INFINITY ? 0.f : expf(s - mn);
    *corr = *m == -INFINITY ? 0.f : expf(*m - mn);
    *l = *l * *corr + warp_sum_f(p);
    *m = mn;
    return p;
}

/* 16-byte global -> shared copy (cp.async, L2 only); src_bytes 0 zero-fills. */
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, int src_bytes) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_wait_all(void) { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

/* Largest dynamic shared memory per block of the current device (opt-in),
 * cached per device; 0 on error. */
static int max_smem_optin(int device) {
    static int cache[64];
    if (device < 0 || device >= 64) return 0;
    if (!cache[device]) {
        int v = 0;
        if (cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) return 0;
        cache[device] = v;
    }
    return cache[device];
}

/* ---- attention with sink ------------------------------------------------------------ */

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

__device__ __forceinline__ void attn_counts(const v4f_cuda_attn_keys *k, int64_t t, int64_t *n_raw, int64_t *nk) {
    int64_t r = k->raw_count ? k->raw_count[t] : k->raw_count0;
    int64_t c = k->comp_count ? k->comp_count[t] : k->comp_count0;
    r = r > 0 ? r : 0;
    c = c > 0 ? c : 0;
    *n_raw = r;
    *nk = r + c;
}

/* -- tiled kernel for head_dim 512 -- */

#define FA_HG 16                 /* heads per CTA */
#define FA_KT 32                 /* keys per tile */
#define FA_HD 512                /* head_dim */
#define FA_LD (FA_HD + 4)        /* padded shared row (floats): conflict-free 16-byte column reads */
#define FA_THREADS 256
#define FA_MAX_SPLIT 128 /* <= FA_HD / 4 (k_fa_combine reads one split per thread) */
#define FA_PART_FLOATS (2 << 20) /* split partials: n_split * n_q * n_head * 512 floats */

struct fa_smem {
    float q[FA_HG][FA_LD];
    float k[FA_KT][FA_LD];
    float sp[4][FA_HG][FA_KT + 1]; /* score partials of the four dim quarters */
    float p[FA_KT][FA_HG];         /* softmax weights of the tile */
    float corr[FA_HG], m[FA_HG], l[FA_HG];
    const float *rows[FA_KT];
};

static __device__ float g_fa_part[FA_PART_FLOATS];
static __device__ float g_fa_ml[FA_PART_FLOATS / FA_HD * 2];

struct fa_args {
    const float *q;
    float *out;
    int n_head;
    int n_split;
    const float *sinks;
    float scale;
    v4f_cuda_attn_keys k;
    v4f_cuda_q_prep qp; /* k_fa_mma: qp.pos non-NULL: normalise + RoPE the raw q heads on load */
};

/* The output's int8 planes (v4f_cuda_out_planes; qx NULL: none): output
 * element e lies in slot e / n, group e % n / 32 of it. A full warp holding
 * the 32 consecutive output values of one group (lane l: element e0 + l)
 * splits them with the matvecs' own code. */
struct fa_planes {
    uint8_t *qx;
    int64_t n, row_bytes;
};
__device__ __forceinline__ void fa_plane_group(const fa_planes &pl, float v, int lane, int64_t e0) {
    dev_quant_x_group(v, lane, lane, pl.qx + e0 / pl.n * pl.row_bytes, pl.n, e0 % pl.n / 32);
}

/* The split-key kernels' (k_fa_tile, k_fa_tc) key range for CTA split of
 * query t: [*kbeg, *kend), whole tiles. false: no keys in this split
 * (decode sizes the split count for the ring's capacity); its (max, sum) =
 * (-inf, 0) are written, which the merge skips without reading the partial. */
__device__ __forceinline__ bool fa_split_keys(const fa_args &a, int split, int64_t t, int64_t n_q, int h0, int tid,
                                              int64_t *n_raw, int64_t *kbeg, int64_t *kend) {
    int64_t nk;
    attn_counts(&a.k, t, n_raw, &nk);
    const int64_t per = ((nk + a.n_split - 1) / a.n_split + FA_KT - 1) / FA_KT * FA_KT;
    *kbeg = (int64_t)split * per;
    *kend = min(nk, *kbeg + per);
    if (a.n_split > 1 && *kbeg >= *kend) {
        for (int hl = tid; hl < FA_HG; hl += FA_THREADS)
            if (h0 + hl < a.n_head) {
                const int64_t slot = ((int64_t)split * n_q + t) * a.n_head + h0 + hl;
                g_fa_ml[2 * slot] = -INFINITY, g_fa_ml[2 * slot + 1] = 0.f;
            }
        return false;
    }
    return true;
}

/* Key tile [k0, k0 + FA_KT) of query t (the split's keys end at kend) into
 * shared rows k of ld floats, float32, and its row pointers into rows
 * (NULL past the range or for a -1 index: the row reads as zeros). Returns
 * the tile's key count; barriers before (the previous tile's readers are
 * done) and after (the tile landed). */
__device__ __forceinline__ int fa_load_tile(const fa_args &a, int64_t t, int64_t k0, int64_t kend, int64_t n_raw,
                                            int tid, const float **rows, float *k, int ld) {
    const int nt = (int)min((int64_t)FA_KT, kend - k0);
    __syncthreads();
    if (tid < FA_KT) rows[tid] = tid < nt ? attn_key_row(&a.k, t, k0 + tid, n_raw, FA_HD) : NULL;
    __syncthreads();
    for (int i = tid; i < FA_KT * (FA_HD / 4); i += FA_THREADS) {
        const int j = i / (FA_HD / 4), c4 = i % (FA_HD / 4);
        const float *src = rows[j];
        cp_async16(k + (int64_t)j * ld + c4 * 4, src ? src + c4 * 4 : a.q, src ? 16 : 0); /* missing rows: zeros */
    }
    cp_async_wait_all();
    __syncthreads();
    return nt;
}

/* Where the split-key kernels put head h's output of query t, whose
 * softmax state over the split is (m, l), and the factor *f for it: one
 * split, the output itself with the sink folded in; else the split's
 * partial (factor 1), and writer stores (m, l) for the merge. */
__device__ __forceinline__ float *fa_out_dest(const fa_args &a, int split, int64_t n_q, int64_t t, int h, float m,
                                              float l, bool writer, float *f) {
    if (a.n_split == 1) {
        const float sink = a.sinks[h];
        const float M = fmaxf(sink, m);
        const float fm = m == -INFINITY ? 0.f : expf(m - M);
        const float den = expf(sink - M) + l * fm;
        *f = fm / den;
        return a.out + (t * a.n_head + h) * FA_HD;
    }
    const int64_t slot = ((int64_t)split * n_q + t) * a.n_head + h;
    *f = 1.0f;
    if (writer) g_fa_ml[2 * slot] = m, g_fa_ml[2 * slot + 1] = l;
    return g_fa_part + slot * FA_HD;
}

__global__ void __launch_bounds__(FA_THREADS, 2) k_fa_tile(fa_args a) {
    V4F_PDL_ENTRY();
    extern __shared__ __align__(16) unsigned char fa_raw[];
    fa_smem &S = *reinterpret_cast<fa_smem *>(fa_raw);
    const int split = blockIdx.x, hg = blockIdx.y;
    const int64_t t = blockIdx.z;
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    const int h0 = hg * FA_HG;
    const int64_t n_q = gridDim.z;

    int64_t n_raw, kbeg, kend;
    if (!fa_split_keys(a, split, t, n_q, h0, tid, &n_raw, &kbeg, &kend)) return;

    /* the query heads of this group (zero rows past n_head) */
    for (int i = tid; i < FA_HG * (FA_HD / 4); i += FA_THREADS) {
        const int h = i / (FA_HD / 4), c4 = i % (FA_HD / 4);
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
        if (h0 + h < a.n_head) v = reinterpret_cast<const float4 *>(a.q + (t * a.n_head + h0 + h) * FA_HD)[c4];
        *reinterpret_cast<float4 *>(&S.q[h][c4 * 4]) = v;
    }

    /* softmax state: warp w owns heads 2w, 2w+1 (all lanes hold it) */
    float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};
    /* P.K accumulator: heads 4*(w>>1)+a, dims (w&1)*256 + lane*4 + e (+128 for e >= 4) */
    const int cq = w >> 1, chalf = w & 1;
    float acc[4][8];
#pragma unroll
    for (int x = 0; x < 4; x++)
#pragma unroll
        for (int e = 0; e < 8; e++) acc[x][e] = 0.f;

    /* score mapping: dim quarter aq = w>>1, head quad 2*(w&1) + (lane>>4), keys jj and jj+16 */
    const int aq = w >> 1, ahq = 2 * (w & 1) + (lane >> 4), jj = lane & 15;

    for (int64_t k0 = kbeg; k0 < kend; k0 += FA_KT) {
        const int nt = fa_load_tile(a, t, k0, kend, n_raw, tid, S.rows, &S.k[0][0], FA_LD);

        /* scores: partial dots over the quarter [128 aq, 128 aq + 128) */
        {
            float sa[4][2];
#pragma unroll
            for (int x = 0; x < 4; x++) sa[x][0] = sa[x][1] = 0.f;
            const float *qb = &S.q[4 * ahq][128 * aq];
            const float *kb0 = &S.k[jj][128 * aq], *kb1 = &S.k[jj + 16][128 * aq];
#pragma unroll 4
            for (int d = 0; d < 128; d += 4) {
                const float4 k0v = *reinterpret_cast<const float4 *>(kb0 + d);
                const float4 k1v = *reinterpret_cast<const float4 *>(kb1 + d);
#pragma unroll
                for (int x = 0; x < 4; x++) {
                    const float4 qv = *reinterpret_cast<const float4 *>(qb + x * FA_LD + d);
                    sa[x][0] = fmaf(qv.x, k0v.x, sa[x][0]);
                    sa[x][0] = fmaf(qv.y, k0v.y, sa[x][0]);
                    sa[x][0] = fmaf(qv.z, k0v.z, sa[x][0]);
                    sa[x][0] = fmaf(qv.w, k0v.w, sa[x][0]);
                    sa[x][1] = fmaf(qv.x, k1v.x, sa[x][1]);
                    sa[x][1] = fmaf(qv.y, k1v.y, sa[x][1]);
                    sa[x][1] = fmaf(qv.z, k1v.z, sa[x][1]);
                    sa[x][1] = fmaf(qv.w, k1v.w, sa[x][1]);
                }
            }
#pragma unroll
            for (int x = 0; x < 4; x++) {
                S.sp[aq][4 * ahq + x][jj] = sa[x][0];
                S.sp[aq][4 * ahq + x][jj + 16] = sa[x][1];
            }
        }
        __syncthreads();

        /* online softmax of the tile for heads 2w, 2w+1 (lane = key) */
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int hl = 2 * w + r;
            float s = ((S.sp[0][hl][lane] + S.sp[1][hl][lane]) + S.sp[2][hl][lane]) + S.sp[3][hl][lane];
            s = (lane < nt && S.rows[lane]) ? s * a.scale : -INFINITY;
            float corr;
            const float p = fa_softmax_step(s, &m_run[r], &l_run[r], &corr);
            S.p[lane][hl] = p;
            if (lane == 0) S.corr[hl] = corr;
        }
        __syncthreads();

        /* acc = acc * corr + P . K */
        {
            float cr[4];
#pragma unroll
            for (int x = 0; x < 4; x++) cr[x] = S.corr[4 * cq + x];
#pragma unroll
            for (int x = 0; x < 4; x++)
#pragma unroll
                for (int e = 0; e < 8; e++) acc[x][e] *= cr[x];
            const float *kb = &S.k[0][chalf * 256 + lane * 4];
            for (int j = 0; j < nt; j++) {
                const float4 p4 = *reinterpret_cast<const float4 *>(&S.p[j][4 * cq]);
                const float4 ka = *reinterpret_cast<const float4 *>(kb + j * FA_LD);
                const float4 kc = *reinterpret_cast<const float4 *>(kb + j * FA_LD + 128);
                const float pv[4] = {p4.x, p4.y, p4.z, p4.w};
#pragma unroll
                for (int x = 0; x < 4; x++) {
                    acc[x][0] = fmaf(pv[x], ka.x, acc[x][0]);
                    acc[x][1] = fmaf(pv[x], ka.y, acc[x][1]);
                    acc[x][2] = fmaf(pv[x], ka.z, acc[x][2]);
                    acc[x][3] = fmaf(pv[x], ka.w, acc[x][3]);
                    acc[x][4] = fmaf(pv[x], kc.x, acc[x][4]);
                    acc[x][5] = fmaf(pv[x], kc.y, acc[x][5]);
                    acc[x][6] = fmaf(pv[x], kc.z, acc[x][6]);
                    acc[x][7] = fmaf(pv[x], kc.w, acc[x][7]);
                }
            }
        }
    }

    if (lane == 0) {
        S.m[2 * w] = m_run[0], S.m[2 * w + 1] = m_run[1];
        S.l[2 * w] = l_run[0], S.l[2 * w + 1] = l_run[1];
    }
    __syncthreads();
#pragma unroll
    for (int x = 0; x < 4; x++) {
        const int hl = 4 * cq + x, h = h0 + hl;
        if (h >= a.n_head) continue;
        float f;
        float *dst = fa_out_dest(a, split, n_q, t, h, S.m[hl], S.l[hl], lane == 0 && chalf == 0, &f);
        float *d0 = dst + chalf * 256 + lane * 4;
        *reinterpret_cast<float4 *>(d0) = make_float4(acc[x][0] * f, acc[x][1] * f, acc[x][2] * f, acc[x][3] * f);
        *reinterpret_cast<float4 *>(d0 + 128) =
            make_float4(acc[x][4] * f, acc[x][5] * f, acc[x][6] * f, acc[x][7] * f);
    }
}

/* Merge the n_split partials of (query t, head h) with the sink: one block
 * of 128 threads (4 dims each) per (h, t); with ro.freqs, then the inverse
 * RoPE of the head's last ro.n_rot dims at pos[t] (as k_rope_tail). */
/* The merge runs FA_CG groups of FA_HD / 4 threads: group g sums the listed
 * splits i = g, g + FA_CG, ... (in that order) and the groups' partial
 * sums are added in group order, so each thread's serial chain of partial
 * loads is FA_CG times shorter (with 64-128 splits holding keys, as in the
 * ratio-4 layers, one chain took ~10 us; docs/PERF_NOTES.md, session 9). */
#define FA_CG 4
#define FA_CT (FA_CG * FA_HD / 4) /* k_fa_combine's threads */
__global__ void __launch_bounds__(FA_CT) k_fa_combine(const float *sinks, int n_head, int n_split,
                                                      const v4f_cuda_out_rope ro, float *out, const fa_planes pl) {
    static_assert(FA_CT / 32 == FA_HD / 32, "k_fa_combine: a warp per group of 32 output dims");
    V4F_PDL_ENTRY();
    /* the splits' (max, sum) are read at once, one per thread (n_split <=
     * FA_MAX_SPLIT <= blockDim.x), the maximum reduced over the block, the
     * splits holding keys listed in split order; the partial loads of the
     * sums are free of branches so that several are in flight */
    constexpr int NW = FA_CT / 32, TG = FA_HD / 4;
    __shared__ float s_m[FA_MAX_SPLIT], s_l[FA_MAX_SPLIT], s_wm[NW];
    __shared__ int s_act[FA_MAX_SPLIT], s_wc[NW];
    __shared__ float4 s_o[FA_CG - 1][TG];
    __shared__ float s_den[FA_CG - 1];
    const int h = blockIdx.x, lane = threadIdx.x & 31, wl = threadIdx.x >> 5;
    const int gi = (int)threadIdx.x / TG, ti = (int)threadIdx.x % TG;
    const int64_t t = blockIdx.y, n_q = gridDim.y;
    const float sink = sinks[h];
    float mt = -INFINITY;
    if ((int)threadIdx.x < n_split) {
        const int64_t slot = ((int64_t)threadIdx.x * n_q + t) * n_head + h;
        mt = g_fa_ml[2 * slot];
        s_m[threadIdx.x] = mt;
        s_l[threadIdx.x] = g_fa_ml[2 * slot + 1];
    }
    const bool act = mt != -INFINITY;
    const unsigned ab = __ballot_sync(0xffffffffu, act);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, off));
    if (lane == 0) s_wm[wl] = mt, s_wc[wl] = __popc(ab);
    __syncthreads();
    float M = sink;
    int before = 0, n_act = 0;
    for (int w = 0; w < NW; w++) {
        M = fmaxf(M, s_wm[w]);
        before += w < wl ? s_wc[w] : 0;
        n_act += s_wc[w];
    }
    if (act) s_act[before + __popc(ab & ((1u << lane) - 1u))] = (int)threadIdx.x;
    __syncthreads();
    float den = gi == 0 ? expf(sink - M) : 0.0f;
    float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 4
    for (int i = gi; i < n_act; i += FA_CG) {
        const int s = s_act[i];
        const int64_t slot = ((int64_t)s * n_q + t) * n_head + h;
        const float m = s_m[s], l = s_l[s];
        const float f = expf(m - M);
        den += l * f;
        const float4 v = reinterpret_cast<const float4 *>(g_fa_part + slot * FA_HD)[ti];
        o.x = fmaf(v.x, f, o.x), o.y = fmaf(v.y, f, o.y), o.z = fmaf(v.z, f, o.z), o.w = fmaf(v.w, f, o.w);
    }
    if (gi > 0) {
        s_o[gi - 1][ti] = o;
        if (ti == 0) s_den[gi - 1] = den;
    }
    __syncthreads();
    if (gi == 0) {
#pragma unroll
        for (int g = 0; g < FA_CG - 1; g++) {
            const float4 v = s_o[g][ti];
            o.x += v.x, o.y += v.y, o.z += v.z, o.w += v.w;
            den += s_den[g];
        }
        const float inv = 1.0f / den;
        float4 r = make_float4(o.x * inv, o.y * inv, o.z * inv, o.w * inv);
        const int e0 = 4 * ti - (FA_HD - ro.n_rot); /* first dim of this thread in the rotated tail */
        if (ro.freqs && e0 >= 0) {
            const int64_t p = ro.pos[t];
            dev_rope_rot(&r.x, &r.y, ro.freqs[e0 / 2], p, 1);
            dev_rope_rot(&r.z, &r.w, ro.freqs[e0 / 2 + 1], p, 1);
        }
        reinterpret_cast<float4 *>(out + (t * n_head + h) * FA_HD)[ti] = r;
        s_o[0][ti] = r; /* (this thread alone read s_o[.][ti]) */
    }
    if (!pl.qx) return;
    /* the planes: warp w splits dims [32 w, 32 w + 32) of the head */
    __syncthreads();
    const int w = (int)threadIdx.x >> 5;
    fa_plane_group(pl, reinterpret_cast<const float *>(s_o[0])[32 * w + lane], lane,
                   (t * n_head + h) * FA_HD + 32 * w);
}

/* -- decode kernel: a few queries, head_dim 512, merged in a cluster --
 *
 * k_fa_dec: the CTAs (r, hg, t), r < CL, of a cluster along x take HG heads
 * of query t and the r-th of CL equal slices of its keys. The 8 warps are
 * HG / HW head sets x key subsets: a warp holds its HW heads' q and output
 * accumulators in registers (lane: dims 4 lane + 128 c + e, c, e < 4) and
 * runs an online softmax over every FD_WARPS / (HG / HW)-th key of the
 * slice, KS keys per step. The keys come through shared memory in tiles
 * of FD_KT rows, NB tiles in flight, one bulk copy per row: FD_NBUF (one
 * CTA an SM) for one-query launches (decode steps), FD_NBUF_MQ (two CTAs
 * an SM, so a verify step's 128 CTAs run in one wave) for several queries;
 * the tiles' count changes no operation, so a query's bits are the same in
 * both (fd_pick).
 * Default (HW = 1, PUSH): a warp per head and one key subset, so a warp's
 * state is the CTA's; each warp sends its (max, sum) to every rank and its
 * outputs to the rank that owns their dims (distributed shared memory
 * stores before one cluster barrier), and each CTA merges what it received
 * locally (in rank order, with the sink): no CTA merge, no remote loads, no
 * barrier before exit. H200, 8K, same call (session 37): decode 160.96 /
 * 160.93 (HW = 4, below) -> 161.81 / 161.86 (HW = 1, merged by remote
 * loads) -> 161.93 / 161.95 (pushed); alone 6.8 -> 4.4 us at one key, 9.4
 * -> 7.9 at 128. V4F_FD=4 (A/B): session 27's form, 4 heads a warp, two
 * keys a step, the warps' states merged in the CTA (key-subset order),
 * then the CTAs' by remote loads. CTA r writes dims [r FA_HD / CL, (r + 1)
 * FA_HD / CL) of its heads (cos / sin computed once per pair of the RoPE
 * tail; whole groups of 32 for the output's planes). No partials in global memory and no
 * merge launch: k_fa_tile + k_fa_combine spent ~14 + 3 us per decode layer
 * on the H200, one SM per 32 keys and 16 heads working through dependent
 * phases (docs/PERF_NOTES.md, session 27). With keys.early the counts, row
 * pointers and first FD_NBUF tiles are requested before the dependency
 * wait (cuda_backend.h). The split of the keys does not depend on the
 * number of queries: a query's result is the same bits in a decode step
 * and in a short eval. Measured (H200, 8K, in the decode graph): 10-12 us
 * a window or ratio-128 layer where the tiled kernel and its merge took
 * 16-17; 21 us for a ratio-4 layer's 640 keys against 18 (its key loop:
 * float32 products of 8 heads on 64 SMs, ~3x the tiled kernel's cost per
 * key; ~40% of its time at 640 keys is the cluster merge, Nsight Compute),
 * so the launcher sends index lists, and key bounds over FD_MAX_KEYS, to
 * the tiled kernel. */
#define FD_THREADS 256
#define FD_WARPS (FD_THREADS / 32)
#define FD_KT 16     /* keys per shared-memory tile */
#define FD_NBUF 6    /* tiles in flight (96 keys, 192 KB) */
#define FD_NBUF_MQ 2 /* ... in the several-query instance (2 CTAs an SM, <= 128 registers) */
#define FD_NQ_MAX 16 /* queries per launch (decode steps, short evals) */
/* at most this many keys per query (attn_key_guess, with the model's
 * bound: the window plus the layer's compressed-row capacity): its per-key
 * cost is ~3x the tiled kernel's (23 vs 7.5 ns a key for one query alone:
 * float32 products on 64 SMs), which outweighs its smaller fixed cost in the
 * decode graph past ~300 keys. H200, session 28: a 32K context (bound 386)
 * decoded 134.3 vs 135.5 t/s at 32K, 143.5 vs 143.4 at 2K; 8K (bound 194)
 * 138.2 vs 136.3; ratio-128 layers at 1M tokens alone 198 vs 64 us. */
#define FD_MAX_KEYS 320
/* heads per CTA, CTAs per cluster: 8 and 8 measured best of (8, 16), (8,
 * 8), (4, 8) (decode 133.3, 138.4, 133.0 t/s against 137.0 without the
 * kernel, H200, session 27) */
#define FD_HG 8
#define FD_CL 8

template <int HG, int CL, int NB = FD_NBUF> struct fd_smem {
    float k[NB][FD_KT][FA_HD]; /* key tiles; after the loop (HW = 4) the warps' scaled outputs [warp][4][FA_HD] */
    const float *rows[NB][FD_KT];
    uint64_t bar[NB]; /* a tile's bulk copies land */
    float wm[FD_WARPS][4], wl[FD_WARPS][4]; /* each warp's (max, sum) per head */
    float cm[HG], cl[HG];                   /* the CTA's merged (max, sum) per head (read by the cluster) */
    /* the CTA's merged output (read by the cluster); pushed merge: the
     * ranks' outputs of this CTA's dims, [rank][head][FA_HD / CL] */
    __align__(16) float co[HG][FA_HD];
    float rm[CL][HG], rl[CL][HG]; /* pushed merge: the ranks' (max, sum) per head */
    float cs[FA_HD / 2 / CL], sn[FA_HD / 2 / CL]; /* RoPE of this CTA's output pairs */
};

/* k_fa_dec's output dim d of head h, query t, from its merged value v:
 * the inverse RoPE of the tail's pair (d & ~1, d | 1), held by neighbouring
 * lanes, then the output and its planes (a warp holds dims d - lane .. + 31) */
__device__ __forceinline__ void fd_out(const fa_args &a, const v4f_cuda_out_rope &ro, const fa_planes &pl,
                                       const float *cs, const float *sn, float v, int64_t t, int h, int d, int pp,
                                       int lane) {
    const float pv = __shfl_xor_sync(0xffffffffu, v, 1);
    if (ro.freqs && d >= FA_HD - ro.n_rot) {
        float x = d & 1 ? pv : v, y = d & 1 ? v : pv;
        dev_rope_apply(&x, &y, cs[pp], -sn[pp]);
        v = d & 1 ? y : x;
    }
    a.out[(t * a.n_head + h) * FA_HD + d] = v;
    if (pl.qx) fa_plane_group(pl, v, lane, (t * a.n_head + h) * FA_HD + d - lane);
}

/* k_fa_dec's merge of one output value over the CL ranks' states (max m(c),
 * sum l(c), unnormalised output o(c)) with the sink: the maximum, then the
 * denominator and the output summed in rank order */
template <int CL, typename GM, typename GL, typename GO>
__device__ __forceinline__ float fd_merge(float sink, GM m, GL l, GO o) {
    float mc[CL], M = sink;
#pragma unroll
    for (int c = 0; c < CL; c++) {
        mc[c] = m(c);
        M = fmaxf(M, mc[c]);
    }
    float den = expf(sink - M), acc = 0.f;
#pragma unroll
    for (int c = 0; c < CL; c++) {
        const float f = mc[c] == -INFINITY ? 0.f : expf(mc[c] - M);
        den += l(c) * f;
        acc += o(c) * f;
    }
    return acc / den;
}

template <int HG, int CL, int HW, bool PUSH, int NB = FD_NBUF, int MB = 1>
__global__ void __launch_bounds__(FD_THREADS, MB) k_fa_dec(fa_args a, const v4f_cuda_out_rope ro, const fa_planes pl) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    /* NHQ warps' head sets of HW heads, NKS key subsets, KS keys a step */
    constexpr int NHQ = HG / HW, NKS = FD_WARPS / NHQ, PPC = FA_HD / 2 / CL, KS = HW == 1 ? 4 : 2;
    static_assert(HG % HW == 0 && FD_WARPS % NHQ == 0, "k_fa_dec: warps = head sets x key subsets");
    static_assert((HG * 2 * PPC) % FD_THREADS == 0 && (2 * PPC) % 32 == 0,
                  "k_fa_dec: uniform output loop, warps of 32 consecutive dims of a head");
    static_assert(FD_WARPS * HW <= NB * FD_KT && NB <= FD_WARPS, "k_fa_dec: tile ring size");
    static_assert(!PUSH || NKS == 1, "k_fa_dec: the pushed merge needs one key subset");
    static_assert(!PUSH || (CL <= 32 && (2 * PPC) % 4 == 0),
                  "k_fa_dec: pushed (max, sum) by lane = rank, 16-byte output groups within one rank's dims");
    extern __shared__ __align__(16) unsigned char fd_raw[];
    fd_smem<HG, CL, NB> &S = *reinterpret_cast<fd_smem<HG, CL, NB> *>(fd_raw);
    cooperative_groups::cluster_group cluster = cooperative_groups::this_cluster();
    const int r = blockIdx.x, h0 = blockIdx.y * HG; /* gridDim.x == CL: r is the rank */
    const int64_t t = blockIdx.z;
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    const int hq = w % NHQ, ks = w / NHQ;
    const bool early = a.k.early != 0;

    if (!early) V4F_PDL_ENTRY();
    int64_t n_raw, nk;
    attn_counts(&a.k, t, &n_raw, &nk);
    const int64_t per = (nk + CL - 1) / CL;
    const int64_t kb = min(nk, (int64_t)r * per), ke = min(nk, kb + per);
    const int ntile = (int)((ke - kb + FD_KT - 1) / FD_KT);
    V4F_KT_POINT(); /* counts */
    /* tile i into slot i % NB (by one warp): lane j < FD_KT finds key j's
     * row (NULL past the slice or for a -1 index) and queues its 2 KB as one
     * bulk copy; lane 0 first arms the slot's barrier with the bytes */
    auto issue = [&](int i) {
        if (i >= ntile) return;
        const int b = i % NB;
        const int64_t kk = kb + (int64_t)i * FD_KT + lane;
        const float *row = lane < FD_KT && kk < ke ? attn_key_row(&a.k, t, kk, n_raw, FA_HD) : NULL;
        if (lane < FD_KT) S.rows[b][lane] = row;
        const unsigned n = __popc(__ballot_sync(0xffffffffu, row != NULL));
        __syncwarp(); /* the rows, then the arrival (release: the waiters see them) */
        if (lane == 0) mbar_expect(&S.bar[b], n * (uint32_t)(FA_HD * sizeof(float)));
        __syncwarp();
        if (row) bulk_copy(&S.k[b][lane][0], row, (uint32_t)(FA_HD * sizeof(float)), &S.bar[b]);
    };
    if (tid < NB) mbar_init(&S.bar[tid]);
    __syncthreads();
    /* pushed merge: this CTA has started (its shared memory may be written
     * by the cluster once every CTA has arrived here) */
    if constexpr (PUSH) asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
    if (w < NB) issue(w); /* the first tiles, a warp each */
    if (early) V4F_PDL_ENTRY();

    float q[HW][16], o[HW][16], m[HW], l[HW];
#pragma unroll
    for (int h = 0; h < HW; h++) {
        const float *qh = a.q + (t * a.n_head + h0 + HW * hq + h) * FA_HD + 4 * lane;
#pragma unroll
        for (int c = 0; c < 4; c++) {
            const float4 v = *reinterpret_cast<const float4 *>(qh + 128 * c);
            q[h][4 * c] = v.x, q[h][4 * c + 1] = v.y, q[h][4 * c + 2] = v.z, q[h][4 * c + 3] = v.w;
        }
#pragma unroll
        for (int e = 0; e < 16; e++) o[h][e] = 0.f;
        m[h] = -INFINITY, l[h] = 0.f;
    }
    V4F_KT_POINT(); /* q loaded */
    for (int i = 0; i < ntile; i++) {
        const int b = i % NB;
        mbar_wait(&S.bar[b], (uint32_t)(i / NB) & 1u); /* tile i landed; its rows are visible */
        __syncwarp();
        const int nt = (int)min((int64_t)FD_KT, ke - (kb + (int64_t)i * FD_KT));
        for (int j = ks; j < nt; j += KS * NKS) {
            /* keys j + x NKS, x < KS; a slot row without a key holds stale
             * bytes: read as zeros */
            bool v[KS];
            float kv[KS][16];
            const float4 z4 = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
            for (int x = 0; x < KS; x++) {
                const int jx = j + x * NKS;
                v[x] = (x == 0 || jx < nt) && S.rows[b][jx] != NULL;
#pragma unroll
                for (int c = 0; c < 4; c++) {
                    const float4 y = v[x] ? *reinterpret_cast<const float4 *>(&S.k[b][jx][128 * c + 4 * lane]) : z4;
                    kv[x][4 * c] = y.x, kv[x][4 * c + 1] = y.y, kv[x][4 * c + 2] = y.z, kv[x][4 * c + 3] = y.w;
                }
            }
            float s[KS][HW];
#pragma unroll
            for (int x = 0; x < KS; x++)
#pragma unroll
                for (int h = 0; h < HW; h++) {
                    float acc = 0.f;
#pragma unroll
                    for (int e = 0; e < 16; e++) acc = fmaf(q[h][e], kv[x][e], acc);
                    s[x][h] = acc;
                }
#pragma unroll
            for (int off = 16; off > 0; off >>= 1)
#pragma unroll
                for (int x = 0; x < KS; x++)
#pragma unroll
                    for (int h = 0; h < HW; h++) s[x][h] += __shfl_xor_sync(0xffffffffu, s[x][h], off);
#pragma unroll
            for (int h = 0; h < HW; h++) {
                float ax[KS], p[KS];
#pragma unroll
                for (int x = 0; x < KS; x++) ax[x] = v[x] ? s[x][h] * a.scale : -INFINITY;
                /* max(m, max(a0, a1, ..)) in the two-key kernel's order */
                float am = ax[0];
#pragma unroll
                for (int x = 1; x < KS; x++) am = fmaxf(am, ax[x]);
                const float mn = fmaxf(m[h], am);
                const float corr = m[h] == -INFINITY ? 0.f : expf(m[h] - mn);
#pragma unroll
                for (int x = 0; x < KS; x++) p[x] = ax[x] == -INFINITY ? 0.f : expf(ax[x] - mn);
                float lh = l[h] * corr;
#pragma unroll
                for (int x = 0; x < KS; x++) lh += p[x];
                l[h] = lh;
                m[h] = mn;
#pragma unroll
                for (int e = 0; e < 16; e++) {
                    float oe = o[h][e] * corr;
#pragma unroll
                    for (int x = 0; x < KS; x++) oe = fmaf(p[x], kv[x][e], oe);
                    o[h][e] = oe;
                }
            }
        }
        if (i + NB < ntile) { /* refill slot b (long slices only) */
            __syncthreads();
            if (w == 0) issue(i + NB);
        }
    }
    V4F_KT_POINT(); /* keys done */

    /* cos / sin of this CTA's output pairs in the rotated tail (the same for
     * every head) */
    if (ro.freqs && tid < PPC) {
        const int d = 2 * (r * PPC + tid);
        if (d >= FA_HD - ro.n_rot) dev_rope_cs(ro.freqs[(d - (FA_HD - ro.n_rot)) / 2], ro.pos[t], &S.cs[tid], &S.sn[tid]);
    }
    if constexpr (PUSH) {
        /* each warp sends its head's state to the rank that writes each of
         * its dims: (max, sum) to every rank, outputs to their owner */
        asm volatile("barrier.cluster.wait.aligned;" ::: "memory"); /* every CTA started */
#pragma unroll
        for (int h = 0; h < HW; h++) {
            const int hl = HW * hq + h;
            if (lane < CL) {
                *cluster.map_shared_rank(&S.rm[r][hl], lane) = m[h];
                *cluster.map_shared_rank(&S.rl[r][hl], lane) = l[h];
            }
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const int d0 = 128 * c + 4 * lane, owner = d0 / (2 * PPC);
                float *dst = cluster.map_shared_rank(&S.co[0][0], owner) + (r * HG + hl) * (2 * PPC) + d0 % (2 * PPC);
                *reinterpret_cast<float4 *>(dst) =
                    make_float4(o[h][4 * c], o[h][4 * c + 1], o[h][4 * c + 2], o[h][4 * c + 3]);
            }
        }
        cluster.sync(); /* every rank's pushes landed */
    } else {
        /* the CTA's state: the key subsets' outputs scaled to the CTA's max
         * per head and summed in subset order */
        if (lane == 0)
#pragma unroll
            for (int h = 0; h < HW; h++) S.wm[w][h] = m[h], S.wl[w][h] = l[h];
        __syncthreads();
        float *po = &S.k[0][0][0];
#pragma unroll
        for (int h = 0; h < HW; h++) {
            float M = -INFINITY;
            for (int s2 = 0; s2 < NKS; s2++) M = fmaxf(M, S.wm[s2 * NHQ + hq][h]);
            const float f = m[h] == -INFINITY ? 0.f : expf(m[h] - M);
            float *dst = po + ((int64_t)w * HW + h) * FA_HD + 4 * lane;
#pragma unroll
            for (int c = 0; c < 4; c++)
                *reinterpret_cast<float4 *>(dst + 128 * c) =
                    make_float4(o[h][4 * c] * f, o[h][4 * c + 1] * f, o[h][4 * c + 2] * f, o[h][4 * c + 3] * f);
            if (ks == 0 && lane == 0) {
                float L = 0.f;
                for (int s2 = 0; s2 < NKS; s2++) {
                    const float ms = S.wm[s2 * NHQ + hq][h];
                    L += ms == -INFINITY ? 0.f : S.wl[s2 * NHQ + hq][h] * expf(ms - M);
                }
                S.cm[HW * hq + h] = M, S.cl[HW * hq + h] = L;
            }
        }
        __syncthreads();
        for (int i2 = tid; i2 < HG * (FA_HD / 4); i2 += FD_THREADS) {
            const int hl = i2 / (FA_HD / 4), c4 = i2 % (FA_HD / 4);
            /* warp hl / HW = key subset 0 of head set hl / HW */
            const float *src = po + (int64_t)hl * FA_HD + 4 * c4;
            float4 v = *reinterpret_cast<const float4 *>(src);
            for (int s2 = 1; s2 < NKS; s2++) {
                const float4 u = *reinterpret_cast<const float4 *>(src + (int64_t)s2 * NHQ * HW * FA_HD);
                v.x += u.x, v.y += u.y, v.z += u.z, v.w += u.w;
            }
            *reinterpret_cast<float4 *>(&S.co[hl][4 * c4]) = v;
        }
        V4F_KT_POINT(); /* CTA merged */
        cluster.sync(); /* every CTA's (cm, cl, co) is visible to the cluster */
    }

    /* CTA r's dims of its heads: pushed, from what it received; else by
     * remote loads of every rank's state */
    const float *rcv = &S.co[0][0];
    for (int i2 = tid; i2 < HG * 2 * PPC; i2 += FD_THREADS) {
        const int hl = i2 / (2 * PPC), j = i2 % (2 * PPC), pp = j / 2, d = 2 * PPC * r + j, h = h0 + hl;
        float v;
        if constexpr (PUSH)
            v = fd_merge<CL>(
                a.sinks[h], [&](int c) { return S.rm[c][hl]; }, [&](int c) { return S.rl[c][hl]; },
                [&](int c) { return rcv[(c * HG + hl) * (2 * PPC) + j]; });
        else
            v = fd_merge<CL>(
                a.sinks[h], [&](int c) { return *cluster.map_shared_rank(&S.cm[hl], c); },
                [&](int c) { return *cluster.map_shared_rank(&S.cl[hl], c); },
                [&](int c) { return *cluster.map_shared_rank(&S.co[hl][d], c); });
        fd_out(a, ro, pl, S.cs, S.sn, v, t, h, d, pp, lane);
    }
    V4F_KT_POINT(); /* output written */
    /* pushed: no barrier before exit (nothing here is read by another CTA
     * any more); else no CTA leaves while another reads its shared memory */
    if constexpr (!PUSH) cluster.sync();
#endif
}

/* -- tensor-core kernel for prefill chunks (default precision) --
 *
 * k_fa_mma: one CTA per (query, block of 64 heads), 16 warps. The query's
 * heads are rounded to f16 once into shared memory; key tiles of 32 rows are
 * copied as float32 with cp.async one tile ahead, and each thread rounds the
 * chunks it copied itself to f16. Per tile: S = Q K^T (mma.sync m16n8k16,
 * f16 operands, float32 sums; warp = 16 heads x 16 keys x half the dims),
 * an online softmax per head in float32 (warp = 4 heads, lane = key), P
 * rounded to f16, O += P V (warp = 16 heads x a quarter of the dims, 64
 * float32 accumulators per thread). One split: the epilogue folds in the
 * sink logit and writes the output directly. */

#define FM_HB 64      /* heads per CTA */
#define FM_KT 32      /* keys per tile */
#define FM_THREADS 512
#define FM_MAX_ROT 512 /* q preparation: n_rot <= head_dim, (head_dim - n_rot) % 4 == 0 */

template <int HD> struct fm_layout {
    static constexpr int LDH = HD + 8;        /* f16 row stride: 16-byte rows, conflict-free ldmatrix */
    static constexpr int LDS = FM_KT + 8;     /* score / P row stride */
    static constexpr size_t q_off = 0;
    static constexpr size_t k_off = q_off + (size_t)FM_HB * LDH * 2;
    static constexpr size_t st_off = k_off + (size_t)FM_KT * LDH * 2;
    static constexpr size_t s_off = st_off + (size_t)FM_KT * HD * 4;
    static constexpr size_t p_off = s_off + (size_t)2 * FM_HB * LDS * 4;
    static constexpr size_t c_off = p_off + (size_t)FM_HB * LDS * 2;
    static constexpr size_t r_off = c_off + (size_t)3 * FM_HB * 4;
    static constexpr size_t bytes = r_off + (size_t)2 * FM_KT * sizeof(void *);
};

/* four 8x8 b16 matrices from shared memory (lanes 8i .. 8i + 7 address
 * matrix i's rows) into r[0..3]; _t: transposed */
__device__ __forceinline__ void ldsm_x4(uint32_t *r, const void *p) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t *r, const void *p) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
}
__device__ __forceinline__ uint2 f4_to_h4(float4 v) {
    const __half2 lo = __floats2half2_rn(v.x, v.y), hi = __floats2half2_rn(v.z, v.w);
    uint2 r;
    r.x = *reinterpret_cast<const unsigned *>(&lo);
    r.y = *reinterpret_cast<const unsigned *>(&hi);
    return r;
}

/* -- the same on tensor cores (default precision, decode and short evals) --
 *
 * k_fa_tc: k_fa_tile's grid, split and partials, with the two products on
 * tensor cores (mma.sync m16n8k16, f16 operands, float32 sums), as k_fa_mma
 * does for prefill chunks: S = Q K^T with warp w taking keys 8 (w & 3) ..
 * + 8 of the tile and the dims' half w >> 2 (the two halves' sums added in
 * the softmax), O += P V with warp w taking dims [64 w, 64 w + 64) of the
 * 16 heads (32 float32 accumulators a thread). The q heads are rounded to
 * f16 once; the key rows stay float32 in shared memory (the same copies as
 * k_fa_tile) and are rounded as their fragments are loaded; P is rounded
 * to f16 (the softmax sums stay float32). In k_fa_tile the two products
 * read ~790 KB of shared memory per tile and were ~6.5 of its ~13.5 us a
 * tile (session 27's stamps, 16 heads x 32 keys x 512 dims). Taken where the
 * caller allows f16 products (keys.tc: v4f_cuda_attn_sink_rope_mixed's
 * few-query fallback); error bound V4F_TOL_CUDA_ATTN_TC as k_fa_mma. */

#define FT_LD 520          /* float row stride of the key tile: conflict-free 8-byte score fragments */
#define FT_LDH (FA_HD + 8) /* f16 q row stride */
#define FT_LDP (FA_KT + 8) /* f16 P row stride */

struct ft_smem {
    __half qh[FA_HG][FT_LDH];
    float k[FA_KT][FT_LD];
    float sp[2][FA_HG][FA_KT + 1]; /* score partials of the two dim halves */
    __half ph[FA_HG][FT_LDP];      /* softmax weights of the tile, f16 */
    float corr[FA_HG], m[FA_HG], l[FA_HG];
    const float *rows[FA_KT];
};

__device__ __forceinline__ uint32_t h2_bits(float lo, float hi) {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t *>(&v);
}

__global__ void __launch_bounds__(FA_THREADS, 2) k_fa_tc(fa_args a) {
    V4F_PDL_ENTRY();
    extern __shared__ __align__(16) unsigned char ft_raw[];
    ft_smem &S = *reinterpret_cast<ft_smem *>(ft_raw);
    const int split = blockIdx.x, hg = blockIdx.y;
    const int64_t t = blockIdx.z;
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    const int g = lane >> 2, c = lane & 3; /* mma fragment row group, column pair */
    const int h0 = hg * FA_HG;
    const int64_t n_q = gridDim.z;

    int64_t n_raw, kbeg, kend;
    if (!fa_split_keys(a, split, t, n_q, h0, tid, &n_raw, &kbeg, &kend)) return;

    /* the query heads of this group in f16 (zero rows past n_head) */
    for (int i = tid; i < FA_HG * (FA_HD / 4); i += FA_THREADS) {
        const int h = i / (FA_HD / 4), c4 = i % (FA_HD / 4);
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
        if (h0 + h < a.n_head) v = reinterpret_cast<const float4 *>(a.q + (t * a.n_head + h0 + h) * FA_HD)[c4];
        *reinterpret_cast<uint2 *>(&S.qh[h][c4 * 4]) = f4_to_h4(v);
    }

    /* softmax state: warp w owns heads 2w, 2w+1 (all lanes hold it) */
    float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};
    /* O: heads g (acc[n][0..1]) and g + 8 (acc[n][2..3]), dims 64 w + 8 n + 2 c, + 1 */
    float acc[8][4];
#pragma unroll
    for (int n = 0; n < 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[n][e] = 0.f;
    const int sn = w & 3, sh = w >> 2; /* scores: keys 8 sn .. 8 sn + 7, dims [256 sh, 256 sh + 256) */

    for (int64_t k0 = kbeg; k0 < kend; k0 += FA_KT) {
        const int nt = fa_load_tile(a, t, k0, kend, n_raw, tid, S.rows, &S.k[0][0], FT_LD);

        /* S = Q K^T over this warp's keys and dim half */
        {
            float sc[4] = {0.f, 0.f, 0.f, 0.f};
            const __half *q0 = &S.qh[g][256 * sh], *q1 = &S.qh[g + 8][256 * sh];
            const float *kr = &S.k[8 * sn + g][256 * sh];
#pragma unroll 4
            for (int d = 0; d < 256; d += 16) {
                uint32_t af[4], bf[2];
                af[0] = *reinterpret_cast<const uint32_t *>(q0 + d + 2 * c);
                af[1] = *reinterpret_cast<const uint32_t *>(q1 + d + 2 * c);
                af[2] = *reinterpret_cast<const uint32_t *>(q0 + d + 8 + 2 * c);
                af[3] = *reinterpret_cast<const uint32_t *>(q1 + d + 8 + 2 * c);
                const float2 b0 = *reinterpret_cast<const float2 *>(kr + d + 2 * c);
                const float2 b1 = *reinterpret_cast<const float2 *>(kr + d + 8 + 2 * c);
                bf[0] = h2_bits(b0.x, b0.y);
                bf[1] = h2_bits(b1.x, b1.y);
                v4f_mma_f16(sc, af, bf);
            }
            const int kc = 8 * sn + 2 * c;
            S.sp[sh][g][kc] = sc[0], S.sp[sh][g][kc + 1] = sc[1];
            S.sp[sh][g + 8][kc] = sc[2], S.sp[sh][g + 8][kc + 1] = sc[3];
        }
        __syncthreads();

        /* online softmax of the tile for heads 2w, 2w+1 (lane = key) */
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int hl = 2 * w + r;
            float s = S.sp[0][hl][lane] + S.sp[1][hl][lane];
            s = (lane < nt && S.rows[lane]) ? s * a.scale : -INFINITY;
            float corr;
            const float p = fa_softmax_step(s, &m_run[r], &l_run[r], &corr);
            S.ph[hl][lane] = __float2half_rn(p);
            if (lane == 0) S.corr[hl] = corr;
        }
        __syncthreads();

        /* O = O corr + P V over this warp's 64 dims (missing keys: p = 0, rows 0) */
        {
            const float cr0 = S.corr[g], cr1 = S.corr[g + 8];
#pragma unroll
            for (int n = 0; n < 8; n++) acc[n][0] *= cr0, acc[n][1] *= cr0, acc[n][2] *= cr1, acc[n][3] *= cr1;
#pragma unroll
            for (int ks = 0; ks < 2; ks++) {
                uint32_t af[4];
                af[0] = *reinterpret_cast<const uint32_t *>(&S.ph[g][16 * ks + 2 * c]);
                af[1] = *reinterpret_cast<const uint32_t *>(&S.ph[g + 8][16 * ks + 2 * c]);
                af[2] = *reinterpret_cast<const uint32_t *>(&S.ph[g][16 * ks + 8 + 2 * c]);
                af[3] = *reinterpret_cast<const uint32_t *>(&S.ph[g + 8][16 * ks + 8 + 2 * c]);
                const float *v0 = &S.k[16 * ks + 2 * c][64 * w + g]; /* keys 2c, 2c + 1 (+ 8) of the step, dim g */
#pragma unroll
                for (int n = 0; n < 8; n++) {
                    uint32_t bf[2];
                    bf[0] = h2_bits(v0[8 * n], v0[8 * n + FT_LD]);
                    bf[1] = h2_bits(v0[8 * n + 8 * FT_LD], v0[8 * n + 9 * FT_LD]);
                    v4f_mma_f16(acc[n], af, bf);
                }
            }
        }
    }

    if (lane == 0) {
        S.m[2 * w] = m_run[0], S.m[2 * w + 1] = m_run[1];
        S.l[2 * w] = l_run[0], S.l[2 * w + 1] = l_run[1];
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int hl = g + 8 * r, h = h0 + hl;
        if (h >= a.n_head) continue;
        float f;
        float *dst = fa_out_dest(a, split, n_q, t, h, S.m[hl], S.l[hl], w == 0 && c == 0, &f);
#pragma unroll
        for (int n = 0; n < 8; n++)
            *reinterpret_cast<float2 *>(dst + 64 * w + 8 * n + 2 * c) = make_float2(acc[n][2 * r] * f, acc[n][2 * r + 1] * f);
    }
}

template <int HD>
__global__ void __launch_bounds__(FM_THREADS, 1) k_fa_mma(fa_args a) {
    V4F_PDL_ENTRY();
    typedef fm_layout<HD> L;
    constexpr int LDH = L::LDH, LDS = L::LDS, C4 = HD / 4;
    extern __shared__ __align__(16) unsigned char fm_raw[];
    __half *qh = reinterpret_cast<__half *>(fm_raw + L::q_off);
    __half *kh = reinterpret_cast<__half *>(fm_raw + L::k_off);
    float *kst = reinterpret_cast<float *>(fm_raw + L::st_off);
    float *sp = reinterpret_cast<float *>(fm_raw + L::s_off); /* [2][FM_HB][LDS] */
    __half *ph = reinterpret_cast<__half *>(fm_raw + L::p_off);
    float *s_corr = reinterpret_cast<float *>(fm_raw + L::c_off), *s_m = s_corr + FM_HB, *s_l = s_m + FM_HB;
    const float **rows = reinterpret_cast<const float **>(fm_raw + L::r_off); /* [2][FM_KT] */

    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    const int h0 = blockIdx.x * FM_HB;
    const int64_t t = blockIdx.y;
    int64_t n_raw, nk;
    attn_counts(&a.k, t, &n_raw, &nk);

    if (tid < FM_KT) rows[tid] = tid < nk ? attn_key_row(&a.k, t, tid, n_raw, HD) : NULL;
    if (!a.qp.pos) {
        for (int i = tid; i < FM_HB * C4; i += FM_THREADS) {
            const int h = i / C4, c4 = i % C4;
            float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
            if (h0 + h < a.n_head) v = reinterpret_cast<const float4 *>(a.q + (t * a.n_head + h0 + h) * HD)[c4];
            *reinterpret_cast<uint2 *>(qh + h * LDH + c4 * 4) = f4_to_h4(v);
        }
    } else {
        /* the raw heads: RMSNorm (double sum of squares, the float scaling
         * of v4f_cuda_q_heads), then RoPE of the last n_rot dims with one
         * cos/sin per pair for all heads; warp w prepares heads 4w .. 4w+3,
         * lane = 16-byte chunks lane + 32 k */
        __shared__ float s_cs[FM_MAX_ROT / 2], s_sn[FM_MAX_ROT / 2];
        const int nr = a.qp.n_rot, r0 = HD - nr;
        if (tid < nr / 2) dev_rope_cs(a.qp.freqs[tid], a.qp.pos[t], &s_cs[tid], &s_sn[tid]);
        __syncthreads();
#pragma unroll 1
        for (int r = 0; r < 4; r++) {
            const int h = 4 * w + r;
            float4 v[HD / 128];
            double ss = 0;
#pragma unroll
            for (int k = 0; k < HD / 128; k++) {
                v[k] = make_float4(0.f, 0.f, 0.f, 0.f);
                if (h0 + h < a.n_head)
                    v[k] = reinterpret_cast<const float4 *>(a.q + (t * a.n_head + h0 + h) * HD)[lane + 32 * k];
                ss += (double)v[k].x * v[k].x + (double)v[k].y * v[k].y + (double)v[k].z * v[k].z +
                      (double)v[k].w * v[k].w;
            }
            ss = warp_sum_d(ss);
            const float rs = h0 + h < a.n_head ? dev_rms_scale(ss, HD, a.qp.eps) : 0.f;
#pragma unroll
            for (int k = 0; k < HD / 128; k++) {
                float e[4] = {__fmul_rn(v[k].x, rs), __fmul_rn(v[k].y, rs), __fmul_rn(v[k].z, rs),
                              __fmul_rn(v[k].w, rs)};
                const int d0 = 4 * (lane + 32 * k);
                if (d0 >= r0)
#pragma unroll
                    for (int pr = 0; pr < 2; pr++) {
                        const int i = (d0 - r0) / 2 + pr;
                        dev_rope_apply(&e[2 * pr], &e[2 * pr + 1], s_cs[i], s_sn[i]);
                    }
                *reinterpret_cast<uint2 *>(qh + h * LDH + d0) = f4_to_h4(make_float4(e[0], e[1], e[2], e[3]));
            }
        }
    }
    __syncthreads();
    /* tile copies: thread tid owns chunks tid + j * FM_THREADS of every tile */
    auto issue = [&](int buf) {
        for (int i = tid; i < FM_KT * C4; i += FM_THREADS) {
            const int j = i / C4, c4 = i % C4;
            const float *src = rows[buf * FM_KT + j];
            cp_async16(kst + j * HD + c4 * 4, src ? src + c4 * 4 : a.q, src ? 16 : 0);
        }
        asm volatile("cp.async.commit_group;\n" ::: "memory");
    };
    if (nk > 0) issue(0);

    /* softmax state: warp w owns heads 4w .. 4w+3 */
    float m_run[4], l_run[4];
#pragma unroll
    for (int r = 0; r < 4; r++) m_run[r] = -INFINITY, l_run[r] = 0.f;
    /* P.V: warp = (m-tile mt, dim quarter dq); QK: warp = (mt, key half kg, dim half dh) */
    constexpr int NT = HD / 32; /* n8 tiles of a dim quarter */
    const int mt = w & 3, dq = w >> 2, kg = (w >> 2) & 1, dh = w >> 3;
    float acc[NT][4];
#pragma unroll
    for (int n = 0; n < NT; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;

    for (int64_t k0 = 0, it = 0; k0 < nk; k0 += FM_KT, it++) {
        const int cur = (int)(it & 1);
        const int nt = (int)min((int64_t)FM_KT, nk - k0);
        cp_async_wait_all();
        __syncthreads(); /* the previous tile's readers of kh are done */
        for (int i = tid; i < FM_KT * C4; i += FM_THREADS) {
            const int j = i / C4, c4 = i % C4;
            *reinterpret_cast<uint2 *>(kh + j * LDH + c4 * 4) =
                f4_to_h4(*reinterpret_cast<const float4 *>(kst + j * HD + c4 * 4));
        }
        const bool more = k0 + FM_KT < nk;
        if (more && tid < FM_KT)
            rows[(cur ^ 1) * FM_KT + tid] =
                k0 + FM_KT + tid < nk ? attn_key_row(&a.k, t, k0 + FM_KT + tid, n_raw, HD) : NULL;
        __syncthreads(); /* kh complete, next rows visible */
        if (more) issue(cur ^ 1);

        /* S partial over dims [dh * HD/2, +HD/2): heads 16 mt.., keys 16 kg.. */
        {
            float c0[4] = {0.f, 0.f, 0.f, 0.f}, c1[4] = {0.f, 0.f, 0.f, 0.f};
            const __half *qa = qh + (16 * mt + (lane & 7) + ((lane >> 3) & 1) * 8) * LDH + (lane >> 4) * 8;
            const __half *kb = kh + (16 * kg + (lane & 7) + ((lane >> 4) << 3)) * LDH + ((lane >> 3) & 1) * 8;
#pragma unroll 4
            for (int d = dh * (HD / 2); d < (dh + 1) * (HD / 2); d += 16) {
                uint32_t af[4], bf[4];
                ldsm_x4(af, qa + d);
                ldsm_x4(bf, kb + d);
                v4f_mma_f16(c0, af, bf);
                v4f_mma_f16(c1, af, bf + 2);
            }
            float *so = sp + (dh * FM_HB + 16 * mt + (lane >> 2)) * LDS + 16 * kg + 2 * (lane & 3);
            *reinterpret_cast<float2 *>(so) = make_float2(c0[0], c0[1]);
            *reinterpret_cast<float2 *>(so + 8 * LDS) = make_float2(c0[2], c0[3]);
            *reinterpret_cast<float2 *>(so + 8) = make_float2(c1[0], c1[1]);
            *reinterpret_cast<float2 *>(so + 8 * LDS + 8) = make_float2(c1[2], c1[3]);
        }
        __syncthreads();
        /* online softmax of the tile, heads 4w.., lane = key */
        {
            const bool valid = lane < nt && rows[cur * FM_KT + lane] != NULL;
#pragma unroll
            for (int r = 0; r < 4; r++) {
                const int hl = 4 * w + r;
                float s = sp[hl * LDS + lane] + sp[(FM_HB + hl) * LDS + lane];
                s = valid ? s * a.scale : -INFINITY;
                float corr;
                const float p = fa_softmax_step(s, &m_run[r], &l_run[r], &corr);
                ph[hl * LDS + lane] = __float2half_rn(p);
                if (lane == 0) s_corr[hl] = corr;
            }
        }
        __syncthreads();
        /* O = O * corr + P V over the tile's 32 keys */
        {
            const float cr0 = s_corr[16 * mt + (lane >> 2)], cr1 = s_corr[16 * mt + (lane >> 2) + 8];
#pragma unroll
            for (int n = 0; n < NT; n++) acc[n][0] *= cr0, acc[n][1] *= cr0, acc[n][2] *= cr1, acc[n][3] *= cr1;
            const __half *pa = ph + (16 * mt + (lane & 7) + ((lane >> 3) & 1) * 8) * LDS + (lane >> 4) * 8;
            const __half *vb = kh + ((lane & 7) + ((lane >> 3) & 1) * 8) * LDH + dq * (HD / 4) + (lane >> 4) * 8;
#pragma unroll
            for (int kk = 0; kk < FM_KT; kk += 16) {
                uint32_t af[4];
                ldsm_x4(af, pa + kk);
#pragma unroll
                for (int n = 0; n < NT; n += 2) {
                    uint32_t bf[4];
                    ldsm_x4_t(bf, vb + kk * LDH + n * 8);
                    v4f_mma_f16(acc[n], af, bf);
                    v4f_mma_f16(acc[n + 1], af, bf + 2);
                }
            }
        }
    }
    if (lane == 0)
#pragma unroll
        for (int r = 0; r < 4; r++) s_m[4 * w + r] = m_run[r], s_l[4 * w + r] = l_run[r];
    __syncthreads();
#pragma unroll
    for (int half = 0; half < 2; half++) {
        const int hl = 16 * mt + (lane >> 2) + 8 * half, h = h0 + hl;
        if (h >= a.n_head) continue;
        const float m = s_m[hl], l = s_l[hl], sink = a.sinks[h];
        const float M = fmaxf(sink, m);
        const float fm = m == -INFINITY ? 0.f : expf(m - M);
        const float f = fm / (expf(sink - M) + l * fm);
        float *dst = a.out + (t * a.n_head + h) * HD + dq * (HD / 4) + 2 * (lane & 3);
#pragma unroll
        for (int n = 0; n < NT; n++)
            *reinterpret_cast<float2 *>(dst + n * 8) = make_float2(acc[n][2 * half] * f, acc[n][2 * half + 1] * f);
    }
}


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


template <int PER>
__global__ void __launch_bounds__(ATTN_WARPS * 32) k_attn_generic(attn_args a) {
    V4F_PDL_ENTRY();
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


/* Upper bound of the keys per query as far as the host knows (only tunes the
 * split count; the kernels read the real counts on the device). */
static int64_t attn_key_guess(const v4f_cuda_attn_keys *k) {
    const int64_t big = (int64_t)1 << 40;
    int64_t r = k->raw_count ? (k->raw_cap > 0 ? k->raw_cap : big) : (k->raw_count0 > 0 ? k->raw_count0 : 0);
    int64_t c;
    if (!k->comp_count)
        c = k->comp_count0 > 0 ? k->comp_count0 : 0;
    else
        c = k->comp_idx ? k->comp_idx_stride : big;
    return k->key_max > 0 && k->key_max < r + c ? k->key_max : r + c;
}

/* k_fa_dec's instances: one query (a decode step's 64 CTAs, one per SM,
 * 6 key tiles in flight), several queries (a verify step's 128 CTAs: 2
 * tiles in flight and two CTAs per SM, so every cluster runs in the first
 * wave; the same operations on each query, so the same bits), and (V4F_FD=4,
 * for A/B) session 27's form: four heads a warp, the CTA merge and remote
 * loads. V4F_FD=1: the one-query instance for every launch (A/B). H200,
 * 8K, session 38, same calls: always-wrong drafts 110.90 / 110.53 (V4F_FD=1)
 * -> 112.55 / 112.67 ss t/s (a drafting step 1.46-1.47 -> 1.44 decode
 * steps), one-token decode unchanged (162.3). */
typedef void (*fd_kernel)(fa_args, const v4f_cuda_out_rope, const fa_planes);
typedef struct fd_inst {
    fd_kernel k;
    size_t bytes;
} fd_inst;
static fd_inst fd_pick(bool multi) {
    static int v = -1;
    if (v < 0) {
        const char *e = getenv("V4F_FD");
        v = e && *e ? atoi(e) : 0;
    }
    if (v == 4) return {k_fa_dec<FD_HG, FD_CL, 4, false>, sizeof(fd_smem<FD_HG, FD_CL>)};
    if (multi && v != 1)
        return {k_fa_dec<FD_HG, FD_CL, 1, true, FD_NBUF_MQ, 2>, sizeof(fd_smem<FD_HG, FD_CL, FD_NBUF_MQ>)};
    return {k_fa_dec<FD_HG, FD_CL, 1, true>, sizeof(fd_smem<FD_HG, FD_CL>)};
}

/* Whether clusters of FD_CL CTAs of instance i are resident (with its
 * shared memory set); 0 = no */
static int fd_resident(v4f_cuda *c, fd_inst i) {
    if ((size_t)max_smem_optin(c->device) < i.bytes ||
        cudaFuncSetAttribute(i.k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)i.bytes)) {
        (void)cudaGetLastError();
        return 0;
    }
    cudaLaunchAttribute at = {};
    at.id = cudaLaunchAttributeClusterDimension;
    at.val.clusterDim.x = FD_CL, at.val.clusterDim.y = 1, at.val.clusterDim.z = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(FD_CL, 1, 1);
    cfg.blockDim = dim3(FD_THREADS, 1, 1);
    cfg.dynamicSmemBytes = i.bytes;
    cfg.attrs = &at;
    cfg.numAttrs = 1;
    int n = 0;
    if (cudaOccupancyMaxActiveClusters(&n, i.k, &cfg) || n < 1) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

/* k_fa_dec per device: 0 not usable (pre-sm_90 code or device, clusters
 * of FD_CL CTAs with this shared memory not resident, or V4F_FA_DEC=0),
 * 1 usable (the one-query instance for every launch), 2 usable with the
 * several-query instance; decided at the first call on the device. */
static int fd_usable(v4f_cuda *c) {
    static signed char state[64];
    signed char *st = &state[c->device & 63];
    if (*st) return *st > 0 ? *st : 0;
    *st = -1;
    int cc = 0;
    cudaFuncAttributes fa;
    const fd_inst one = fd_pick(false), multi = fd_pick(true);
    if (v4f_env_off("V4F_FA_DEC") || cudaDeviceGetAttribute(&cc, cudaDevAttrComputeCapabilityMajor, c->device) ||
        cc < 9 || cudaFuncGetAttributes(&fa, one.k) || fa.binaryVersion < 90)
        return 0;
    const int n = fd_resident(c, one);
    if (n < 1) return 0;
    const int n2 = multi.k == one.k ? 0 : fd_resident(c, multi);
    v4f_log(V4F_LOG_DEBUG, "cuda: device %d decode attention in clusters of %d (%d resident; several queries: %d)",
            c->device, FD_CL, n, n2);
    *st = n2 > 0 ? 2 : 1;
    return *st;
}

void v4f_cuda_attn_init(v4f_cuda *c) { (void)fd_usable(c); }

/* the planes argument's checks (v4f_cuda_out_planes) */
static bool out_planes_ok(const v4f_cuda_out_planes *pl, int64_t total) {
    return !pl || (pl->qx && (uintptr_t)pl->qx % 16 == 0 && pl->n > 0 && pl->n % 32 == 0 && pl->n <= 16384 &&
                   total % pl->n == 0 && total / pl->n <= 65535);
}

/* the kernels' form of it */
static fa_planes fa_planes_of(const v4f_cuda_out_planes *pl) {
    fa_planes r = {NULL, 1, 0};
    if (pl) r.qx = pl->qx, r.n = pl->n, r.row_bytes = (int64_t)v4f_cuda_quant_row_bytes(pl->n);
    return r;
}

/* What the attention kernel did not do to its output: the RoPE of each
 * head's tail (rope), then the matvecs' split of the final output (planes;
 * any type but IQ2_XXS's order). Each NULL when done or not wanted. */
static v4f_status attn_out_tail(v4f_cuda *c, float *out, int64_t n_q, int64_t n_head, int64_t head_dim,
                                const v4f_cuda_out_rope *rope, const v4f_cuda_out_planes *planes, v4f_err *err) {
    if (rope) {
        const v4f_status st =
            v4f_cuda_rope_tail(c, out, n_q, n_head, head_dim, rope->n_rot, rope->freqs, rope->pos, 0, 0, true, err);
        if (st) return st;
    }
    if (planes)
        return v4f_cuda_quant_rows(c, V4F_TYPE_Q8_0, out, n_q * n_head * head_dim / planes->n, planes->n, planes->n,
                                   planes->qx, err);
    return V4F_OK;
}

extern "C" v4f_status v4f_cuda_attn_sink_rope(v4f_cuda *c, const float *q, int64_t n_q, int64_t n_head,
                                              int64_t head_dim, const v4f_cuda_attn_keys *keys, const float *sinks,
                                              float scale, const v4f_cuda_out_rope *rope, float *out,
                                              const v4f_cuda_out_planes *planes, v4f_err *err) {
    ARG_CHECK(!rope || (rope->freqs && rope->pos && rope->n_rot > 0 && rope->n_rot % 2 == 0 &&
                        rope->n_rot <= head_dim),
              "cuda attn: bad output rope (n_rot %d)", rope ? rope->n_rot : 0);
    ARG_CHECK(n_q >= 0 && n_q <= 65535 && n_head > 0 && n_head <= 0x7fffffff && head_dim > 0 &&
                  head_dim % 32 == 0 && head_dim <= 32 * ATTN_MAX_PER,
              "cuda attn: bad shape n_q %lld n_head %lld head_dim %lld", (long long)n_q, (long long)n_head,
              (long long)head_dim);
    ARG_CHECK(out_planes_ok(planes, n_q * n_head * head_dim), "cuda attn: bad output planes (slots of %lld)",
              planes ? (long long)planes->n : 0ll);
    ARG_CHECK(keys && (keys->raw || (!keys->raw_count && keys->raw_count0 <= 0)) &&
                  (keys->comp || (!keys->comp_count && keys->comp_count0 <= 0)) && keys->raw_cap >= 0,
              "cuda attn: key rows missing");
    if (n_q == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    bool roped = false; /* the output RoPE was applied inside the merge */
    /* decode steps and short evals over the ring and all compressed rows
     * (window and ratio-128 layers) with up to FD_MAX_KEYS keys a query:
     * k_fa_dec. With an index list (ratio-4 layers: 512 selected rows) it
     * measured slower than the tiled kernel (H200, 8K: 21 vs 18 us a layer;
     * its key loop, not the copies, session 27), so those keep k_fa_tile +
     * k_fa_combine. */
    if (head_dim == FA_HD && n_q <= FD_NQ_MAX && n_head % FD_HG == 0 && n_head / FD_HG <= 65535 && ((uintptr_t)q & 15) == 0 &&
        (!keys->raw || ((uintptr_t)keys->raw & 15) == 0) && (!keys->comp || ((uintptr_t)keys->comp & 15) == 0) &&
        !keys->comp_idx && attn_key_guess(keys) <= FD_MAX_KEYS && fd_usable(c)) {
        fa_args a;
        memset(&a, 0, sizeof a);
        a.q = q;
        a.out = out;
        a.n_head = (int)n_head;
        a.sinks = sinks;
        a.scale = scale;
        a.k = *keys;
        v4f_cuda_out_rope ro = {NULL, NULL, 0};
        if (rope) ro = *rope;
        const fd_inst fi = fd_pick(n_q > 1 && fd_usable(c) == 2);
        v4f_launch_cluster(fi.k, dim3(FD_CL, (unsigned)(n_head / FD_HG), (unsigned)n_q), FD_THREADS, FD_CL, fi.bytes,
                           c->stream, a, ro, fa_planes_of(planes));
        CUDA_TRY_LAUNCH();
        return V4F_OK;
    }
    bool planed = false; /* the planes were written by the merge */
    /* f16 products where the caller allows them (keys->tc) */
    const bool tc = keys->tc != 0;
    const size_t fa_bytes = tc ? sizeof(ft_smem) : sizeof(fa_smem);
    const int64_t n_hg = (n_head + FA_HG - 1) / FA_HG;
    if (head_dim == FA_HD && n_hg <= 65535 && (size_t)max_smem_optin(c->device) >= fa_bytes &&
        ((uintptr_t)q & 15) == 0 && ((uintptr_t)out & 15) == 0 && (!keys->raw || ((uintptr_t)keys->raw & 15) == 0) &&
        (!keys->comp || ((uintptr_t)keys->comp & 15) == 0)) {
        static bool attr_set[2][64];
        if (!attr_set[tc][c->device & 63]) {
            if (tc) CUDA_TRY(cudaFuncSetAttribute(k_fa_tc, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)fa_bytes));
            else CUDA_TRY(cudaFuncSetAttribute(k_fa_tile, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)fa_bytes));
            attr_set[tc][c->device & 63] = true;
        }
        /* split the key range until about two CTAs per SM, at least one tile
         * per split, within the partial buffer */
        const int64_t base = n_q * n_hg, target = 2 * (int64_t)c->sm_count;
        int64_t n_split = (target + base - 1) / base;
        const int64_t tiles = (attn_key_guess(keys) + FA_KT - 1) / FA_KT;
        if (n_split > tiles) n_split = tiles;
        if (n_split > FA_MAX_SPLIT) n_split = FA_MAX_SPLIT;
        const int64_t cap = FA_PART_FLOATS / (n_q * n_head * FA_HD);
        if (n_split > cap) n_split = cap;
        if (n_split < 1) n_split = 1;
        fa_args a;
        a.q = q;
        a.out = out;
        a.n_head = (int)n_head;
        a.n_split = (int)n_split;
        a.sinks = sinks;
        a.scale = scale;
        a.k = *keys;
        const dim3 grid((unsigned)n_split, (unsigned)n_hg, (unsigned)n_q);
        if (tc) v4f_launch(k_fa_tc, grid, FA_THREADS, fa_bytes, c->stream, a);
        else v4f_launch(k_fa_tile, grid, FA_THREADS, fa_bytes, c->stream, a);
        CUDA_TRY_LAUNCH();
        if (n_split > 1) {
            /* the output RoPE rides along when it starts on a 4-dim boundary */
            const bool fuse = rope && (FA_HD - rope->n_rot) % 4 == 0;
            v4f_cuda_out_rope ro = {NULL, NULL, 0};
            if (fuse) ro = *rope;
            /* the planes too when the output is final there */
            const bool pfuse = planes && (!rope || fuse);
            v4f_launch(k_fa_combine, dim3((unsigned)n_head, (unsigned)n_q), FA_CT, 0, c->stream, sinks,
                       (int)n_head, (int)n_split, ro, out, fa_planes_of(pfuse ? planes : NULL));
            CUDA_TRY_LAUNCH();
            roped = fuse;
            planed = pfuse;
        }
    } else {
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
            v4f_launch(k_attn_generic<4>, grid, ATTN_WARPS * 32, 0, c->stream, a);
        else if (per <= 8)
            v4f_launch(k_attn_generic<8>, grid, ATTN_WARPS * 32, 0, c->stream, a);
        else
            v4f_launch(k_attn_generic<16>, grid, ATTN_WARPS * 32, 0, c->stream, a);
        CUDA_TRY_LAUNCH();
    }
    /* what the kernels did not fuse: a launch of its own each */
    return attn_out_tail(c, out, n_q, n_head, head_dim, roped ? NULL : rope, planed ? NULL : planes, err);
}

extern "C" v4f_status v4f_cuda_attn_sink_rope_mixed(v4f_cuda *c, float *q, int64_t n_q, int64_t n_head,
                                                    int64_t head_dim, const v4f_cuda_q_prep *qp,
                                                    const v4f_cuda_attn_keys *keys, const float *sinks, float scale,
                                                    const v4f_cuda_out_rope *rope, float *out,
                                                    const v4f_cuda_out_planes *planes, v4f_err *err) {
    /* V4F_CUDA_ATTN_TC=0: always the float32 kernels (A/B) */
    const bool shape = !v4f_env_off("V4F_CUDA_ATTN_TC") && (head_dim == 512 || head_dim == 128) &&
                       n_q >= V4F_CUDA_ATTN_TC_MIN_Q && n_q <= 65535 && n_head > 0 &&
                       (n_head + FM_HB - 1) / FM_HB <= 65535;
    const size_t bytes = head_dim == 512 ? fm_layout<512>::bytes : fm_layout<128>::bytes;
    const bool prep_ok = !qp || (qp->freqs && qp->pos && qp->n_rot >= 0 && qp->n_rot <= head_dim &&
                                 qp->n_rot <= FM_MAX_ROT && (head_dim - qp->n_rot) % 4 == 0);
    /* anything the tensor-core kernel does not take (including arguments the
     * float32 path rejects with an error) goes to the float32 path */
    if (!shape || !prep_ok || (size_t)max_smem_optin(c->device) < bytes || !keys ||
        (!keys->raw && (keys->raw_count || keys->raw_count0 > 0)) ||
        (!keys->comp && (keys->comp_count || keys->comp_count0 > 0)) || keys->raw_cap < 0 ||
        (rope && !(rope->freqs && rope->pos && rope->n_rot > 0 && rope->n_rot % 2 == 0 && rope->n_rot <= head_dim)) ||
        ((uintptr_t)q & 15) || ((uintptr_t)out & 15) || ((uintptr_t)keys->raw & 15) ||
        ((uintptr_t)keys->comp & 15)) {
        /* (f16 products allowed: the tiled kernel takes tensor cores) */
        v4f_cuda_attn_keys k2 = *keys;
        k2.tc = 1;
        if (qp) {
            v4f_status st = v4f_cuda_q_heads(c, q, n_q, n_head, head_dim, qp->pos, qp->freqs, qp->n_rot, qp->eps, err);
            if (st) return st;
            /* the launch right before the attention wrote only q */
            k2.early = 1;
        }
        return v4f_cuda_attn_sink_rope(c, q, n_q, n_head, head_dim, &k2, sinks, scale, rope, out, planes, err);
    }
    ARG_CHECK(out_planes_ok(planes, n_q * n_head * head_dim), "cuda attn: bad output planes (slots of %lld)",
              planes ? (long long)planes->n : 0ll);
    CUDA_TRY_DEVICE(c);
    static bool attr_set[2][64];
    const int which = head_dim == 512;
    if (!attr_set[which][c->device & 63]) {
        if (which)
            CUDA_TRY(cudaFuncSetAttribute(k_fa_mma<512>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
        else
            CUDA_TRY(cudaFuncSetAttribute(k_fa_mma<128>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
        attr_set[which][c->device & 63] = true;
    }
    fa_args a;
    a.q = q;
    a.out = out;
    a.n_head = (int)n_head;
    a.n_split = 1;
    a.sinks = sinks;
    a.scale = scale;
    a.k = *keys;
    memset(&a.qp, 0, sizeof a.qp);
    if (qp) a.qp = *qp;
    const dim3 grid((unsigned)((n_head + FM_HB - 1) / FM_HB), (unsigned)n_q);
    if (which)
        v4f_launch(k_fa_mma<512>, grid, FM_THREADS, bytes, c->stream, a);
    else
        v4f_launch(k_fa_mma<128>, grid, FM_THREADS, bytes, c->stream, a);
    CUDA_TRY_LAUNCH();
    return attn_out_tail(c, out, n_q, n_head, head_dim, rope, planes, err);
}

extern "C" v4f_status v4f_cuda_attn_sink(v4f_cuda *c, const float *q, int64_t n_q, int64_t n_head, int64_t head_dim,
                                         const v4f_cuda_attn_keys *keys, const float *sinks, float scale, float *out,
                                         v4f_err *err) {
    return v4f_cuda_attn_sink_rope(c, q, n_q, n_head, head_dim, keys, sinks, scale, NULL, out, NULL, err);
}

/* ---- indexer scores ----------------------------------------------------------------- */

/* -- tiled kernel: d = 128, n_head <= 64 --
 *
 * KM: key rows per thread; a tile is 16 KM keys. Thread (hq, jj) computes
 * heads 4hq..4hq+3 against keys jj + 16m (m < KM) of the tile, so a key's
 * score is the same sum in the same order whatever KM is (the dims in
 * order per product, then the thread's 4 heads, the lane pair, the 8 warps
 * in order). KM = 4 reuses each loaded q quad over 4 keys where the rows
 * give the SMs enough tiles; KM = 1 cuts a decode step's 2K rows (8K
 * context) into 128 tiles for 128 CTAs instead of 32 (docs/PERF_NOTES.md,
 * session 29). */

#define IX_D 128
#define IX_H 64
#define IX_LD (IX_D + 4)
#define IX_THREADS 256

template <int KM> struct ix_smem {
    float q[IX_H][IX_LD];
    float k[16 * KM][IX_LD];
    float red[IX_THREADS / 32][16 * KM];
    float w[IX_H];
};

template <int KM>
__global__ void __launch_bounds__(IX_THREADS, 2) k_ix_tile(const float *__restrict__ q, const float *__restrict__ w,
                                                          int nh, const float *__restrict__ keys, int64_t nk,
                                                          const int32_t *__restrict__ n_valid, float *score) {
    constexpr int KT = 16 * KM;
    V4F_PDL_ENTRY();
    extern __shared__ __align__(16) unsigned char ix_raw[];
    ix_smem<KM> &S = *reinterpret_cast<ix_smem<KM> *>(ix_raw);
    const int64_t t = blockIdx.y;
    const int64_t nv = n_valid ? min(nk, (int64_t)max(n_valid[t], 0)) : nk;
    const int64_t n_tiles = (nv + KT - 1) / KT;
    if ((int64_t)blockIdx.x >= n_tiles) return; /* uniform over the CTA */
    const int tid = threadIdx.x, lane = tid & 31, wl = tid >> 5;
    for (int i = tid; i < IX_H * (IX_D / 4); i += IX_THREADS) {
        const int h = i / (IX_D / 4), c4 = i % (IX_D / 4);
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
        if (h < nh) v = reinterpret_cast<const float4 *>(q + (t * nh + h) * IX_D)[c4];
        *reinterpret_cast<float4 *>(&S.q[h][c4 * 4]) = v;
    }
    if (tid < IX_H) S.w[tid] = tid < nh ? w[t * nh + tid] : 0.f;
    const int hq = 2 * wl + (lane >> 4), jj = lane & 15; /* heads 4hq..4hq+3, keys jj + 16m */
    for (int64_t tile = blockIdx.x; tile < n_tiles; tile += gridDim.x) {
        const int64_t c0 = tile * KT;
        __syncthreads(); /* previous tile's readers done (and q, w stored) */
        for (int i = tid; i < KT * (IX_D / 4); i += IX_THREADS) {
            const int j = i / (IX_D / 4), c4 = i % (IX_D / 4);
            const bool ok = c0 + j < nv;
            cp_async16(&S.k[j][c4 * 4], ok ? keys + (c0 + j) * IX_D + c4 * 4 : keys, ok ? 16 : 0);
        }
        cp_async_wait_all();
        __syncthreads();
        float acc[4][KM];
#pragma unroll
        for (int x = 0; x < 4; x++)
#pragma unroll
            for (int m = 0; m < KM; m++) acc[x][m] = 0.f;
        const float *qb = &S.q[4 * hq][0];
        const float *kb = &S.k[jj][0];
#pragma unroll 2
        for (int d = 0; d < IX_D; d += 4) {
            float4 kv[KM];
#pragma unroll
            for (int m = 0; m < KM; m++) kv[m] = *reinterpret_cast<const float4 *>(kb + 16 * m * IX_LD + d);
#pragma unroll
            for (int x = 0; x < 4; x++) {
                const float4 qv = *reinterpret_cast<const float4 *>(qb + x * IX_LD + d);
#pragma unroll
                for (int m = 0; m < KM; m++) {
                    acc[x][m] = fmaf(qv.x, kv[m].x, acc[x][m]);
                    acc[x][m] = fmaf(qv.y, kv[m].y, acc[x][m]);
                    acc[x][m] = fmaf(qv.z, kv[m].z, acc[x][m]);
                    acc[x][m] = fmaf(qv.w, kv[m].w, acc[x][m]);
                }
            }
        }
        float part[KM];
#pragma unroll
        for (int m = 0; m < KM; m++) {
            float s = 0.f;
#pragma unroll
            for (int x = 0; x < 4; x++)
                if (acc[x][m] > 0.f) s = fmaf(S.w[4 * hq + x], acc[x][m], s);
            part[m] = s + __shfl_xor_sync(0xffffffffu, s, 16);
        }
        if (lane < 16)
#pragma unroll
            for (int m = 0; m < KM; m++) S.red[wl][jj + 16 * m] = part[m];
        __syncthreads();
        if (tid < KT && c0 + tid < nv) {
            float s = 0.f;
#pragma unroll
            for (int i = 0; i < IX_THREADS / 32; i++) s += S.red[i][tid];
            score[t * nk + c0 + tid] = s;
        }
    }
}


/* -- tensor-core kernel for prefill chunks (default precision) --
 *
 * The indexer's q heads and key rows are FP4 (E2M1) values times powers of
 * two (Hadamard + FP4 round trip, MODEL.md 5.4), which bf16 holds exactly,
 * and products of two of them are exact in float32: on tensor cores only
 * the float32 sums round, as in the float32 kernel. k_ix_mma: one CTA
 * (16 warps) per 16 / (n_head / 16) queries; warp = (query, 16 heads); the
 * query's A fragments stay in registers for the whole key range, key tiles
 * of 64 rows are loaded one tile ahead into registers and stored as bf16;
 * per tile a warp computes its 16 heads x 64 keys (mma.sync m16n8k16 bf16,
 * float32 sums), applies ReLU and the head weights and sums its 16 heads
 * (shuffles); the query's warps' sums are added through shared memory in
 * head order. All queries of a CTA share each key tile (k_ix_tile reads
 * every key row once per query: 1.1 ms per 4,096-token chunk at an 8K
 * context on an H100, mostly L2 traffic). */
#define IM_KT 64
#define IM_THREADS 512
#define IM_LDK (IX_D + 8) /* bf16 row stride: 272 B, conflict-free ldmatrix */

__device__ __forceinline__ unsigned bf2(float a, float b) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<const unsigned *>(&v);
}

__global__ void __launch_bounds__(IM_THREADS, 1) k_ix_mma(const float *__restrict__ q, const float *__restrict__ w,
                                                          int64_t n_q, int n_head, const float *__restrict__ keys,
                                                          int64_t n_keys, const int32_t *__restrict__ n_valid,
                                                          float *__restrict__ score) {
    V4F_PDL_ENTRY();
    __shared__ __align__(16) __nv_bfloat16 kh[IM_KT * IM_LDK];
    __shared__ float ps[IM_THREADS / 32][IM_KT];
    __shared__ int64_t s_nt[IM_THREADS / 32];
    const int tid = threadIdx.x, lane = tid & 31, w8 = tid >> 5, g = lane >> 2, c = lane & 3;
    const int MT = n_head / 16, QB = (IM_THREADS / 32) / MT;
    const int qi = w8 / MT, mt = w8 % MT;
    const int64_t t = (int64_t)blockIdx.x * QB + qi;
    const bool live = t < n_q;
    if (lane == 0) {
        int64_t nt = 0;
        if (live) {
            nt = n_keys;
            if (n_valid) nt = n_valid[t] < 0 ? 0 : (n_valid[t] < n_keys ? n_valid[t] : n_keys);
        }
        s_nt[w8] = nt;
    }
    /* A fragments of heads 16 mt .. 16 mt + 15, all 128 dims (8 k steps) */
    uint32_t af[IX_D / 16][4];
    float wg0 = 0.f, wg1 = 0.f;
    {
        const int64_t tq = live ? t : 0;
        const float *r0 = q + (tq * n_head + 16 * mt + g) * IX_D, *r1 = r0 + 8 * IX_D;
#pragma unroll
        for (int ks = 0; ks < IX_D / 16; ks++) {
            const float2 x0 = *reinterpret_cast<const float2 *>(r0 + 16 * ks + 2 * c);
            const float2 x1 = *reinterpret_cast<const float2 *>(r1 + 16 * ks + 2 * c);
            const float2 x2 = *reinterpret_cast<const float2 *>(r0 + 16 * ks + 8 + 2 * c);
            const float2 x3 = *reinterpret_cast<const float2 *>(r1 + 16 * ks + 8 + 2 * c);
            af[ks][0] = bf2(x0.x, x0.y), af[ks][1] = bf2(x1.x, x1.y), af[ks][2] = bf2(x2.x, x2.y),
            af[ks][3] = bf2(x3.x, x3.y);
        }
        wg0 = w[tq * n_head + 16 * mt + g], wg1 = w[tq * n_head + 16 * mt + g + 8];
    }
    __syncthreads();
    int64_t nmax = 0;
    for (int i = 0; i < IM_THREADS / 32; i++) nmax = max(nmax, s_nt[i]);
    /* key tiles: thread tid owns float4 chunks tid + j * IM_THREADS (row = i / 32) */
    constexpr int PF = IM_KT * (IX_D / 4) / IM_THREADS;
    float4 pf[PF];
    auto gload = [&](int64_t kb) {
#pragma unroll
        for (int j = 0; j < PF; j++) {
            const int i = tid + j * IM_THREADS, row = i >> 5, c4 = i & 31;
            pf[j] = kb + row < nmax ? *reinterpret_cast<const float4 *>(keys + (kb + row) * IX_D + 4 * c4)
                                    : make_float4(0.f, 0.f, 0.f, 0.f);
        }
    };
    if (nmax > 0) gload(0);
    for (int64_t k0 = 0; k0 < nmax; k0 += IM_KT) {
        __syncthreads(); /* readers of kh and ps of the previous tile are done */
#pragma unroll
        for (int j = 0; j < PF; j++) {
            const int i = tid + j * IM_THREADS, row = i >> 5, c4 = i & 31;
            *reinterpret_cast<uint2 *>(&kh[row * IM_LDK + 4 * c4]) =
                make_uint2(bf2(pf[j].x, pf[j].y), bf2(pf[j].z, pf[j].w));
        }
        __syncthreads();
        if (k0 + IM_KT < nmax) gload(k0 + IM_KT);
        float acc[IM_KT / 8][4];
#pragma unroll
        for (int j = 0; j < IM_KT / 8; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
        const __nv_bfloat16 *kb = kh + ((lane & 7) + ((lane >> 4) << 3)) * IM_LDK + ((lane >> 3) & 1) * 8;
#pragma unroll
        for (int ks = 0; ks < IX_D / 16; ks++)
#pragma unroll
            for (int np = 0; np < IM_KT / 16; np++) {
                uint32_t bf[4];
                ldsm_x4(bf, kb + np * 16 * IM_LDK + 16 * ks);
                v4f_mma_bf16(acc[2 * np], af[ks], bf);
                v4f_mma_bf16(acc[2 * np + 1], af[ks], bf + 2);
            }
        /* ReLU, head weights, sum of the warp's 16 heads */
#pragma unroll
        for (int j = 0; j < IM_KT / 8; j++) {
            float v0 = fmaf(wg1, fmaxf(acc[j][2], 0.f), wg0 * fmaxf(acc[j][0], 0.f));
            float v1 = fmaf(wg1, fmaxf(acc[j][3], 0.f), wg0 * fmaxf(acc[j][1], 0.f));
#pragma unroll
            for (int o = 4; o < 32; o <<= 1) {
                v0 += __shfl_xor_sync(0xffffffffu, v0, o);
                v1 += __shfl_xor_sync(0xffffffffu, v1, o);
            }
            if (g == 0) ps[w8][8 * j + 2 * c] = v0, ps[w8][8 * j + 2 * c + 1] = v1;
        }
        __syncthreads();
        for (int i = tid; i < QB * IM_KT; i += IM_THREADS) {
            const int q2 = i / IM_KT, kk = i % IM_KT;
            const int64_t t2 = (int64_t)blockIdx.x * QB + q2;
            if (t2 >= n_q || k0 + kk >= s_nt[q2 * MT]) continue;
            float s = 0.f;
            for (int m = 0; m < MT; m++) s += ps[q2 * MT + m][kk];
            score[t2 * n_keys + k0 + kk] = s;
        }
    }
}

#define IDX_WARPS 8
#define IDX_KEYS_PER_BLOCK 64
#define IDX_MAX_Q 12288 /* n_head * d floats in shared memory (48 KB) */

template <int PER>
__global__ void __launch_bounds__(IDX_WARPS * 32) k_indexer_generic(const float *__restrict__ q,
                                                                   const float *__restrict__ w, int64_t nh, int64_t d,
                                                                   const float *__restrict__ keys, int64_t nk,
                                                                   const int32_t *__restrict__ n_valid, float *score) {
    V4F_PDL_ENTRY();
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
    const size_t ix_bytes = sizeof(ix_smem<4>);
    if (d == IX_D && n_head <= IX_H && (size_t)max_smem_optin(c->device) >= ix_bytes && ((uintptr_t)q & 15) == 0 &&
        ((uintptr_t)keys & 15) == 0) {
        static bool attr_set[64];
        if (!attr_set[c->device & 63]) {
            CUDA_TRY(cudaFuncSetAttribute(k_ix_tile<4>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)ix_bytes));
            CUDA_TRY(cudaFuncSetAttribute(k_ix_tile<1>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          (int)sizeof(ix_smem<1>)));
            attr_set[c->device & 63] = true;
        }
        /* enough CTAs for two per SM; each loops over its share of the tiles
         * (so the query load is amortised over several key tiles); tiles of
         * 16 keys where tiles of 64 would leave SMs idle (H200, one query:
         * 2K rows 6.9 -> 4.5 us; at 8K rows 16-key tiles took 13.4 us
         * against 7.4, and 32-key tiles were never the faster) */
        const bool small = (n_keys + 63) / 64 * n_q < (int64_t)c->sm_count / 2;
        const int64_t kt = small ? 16 : 64, tiles = (n_keys + kt - 1) / kt;
        int64_t gx = (2 * (int64_t)c->sm_count + n_q - 1) / n_q;
        if (gx > tiles) gx = tiles;
        if (gx < 1) gx = 1;
        const dim3 grid((unsigned)gx, (unsigned)n_q);
        if (small)
            v4f_launch(k_ix_tile<1>, grid, IX_THREADS, sizeof(ix_smem<1>), c->stream, q, w, (int)n_head, keys, n_keys,
                       n_valid, score);
        else
            v4f_launch(k_ix_tile<4>, grid, IX_THREADS, ix_bytes, c->stream, q, w, (int)n_head, keys, n_keys, n_valid,
                       score);
        CUDA_TRY_LAUNCH();
        return V4F_OK;
    }
    const dim3 grid((unsigned)((n_keys + IDX_KEYS_PER_BLOCK - 1) / IDX_KEYS_PER_BLOCK), (unsigned)n_q);
    const size_t smem = (size_t)(n_head * d) * sizeof(float);
    const int per = (int)(d / 32);
    if (per <= 4)
        v4f_launch(k_indexer_generic<4>, grid, IDX_WARPS * 32, smem, c->stream, q, w, n_head, d, keys, n_keys, n_valid,
                                                                           score);
    else if (per <= 8)
        v4f_launch(k_indexer_generic<8>, grid, IDX_WARPS * 32, smem, c->stream, q, w, n_head, d, keys, n_keys, n_valid,
                                                                           score);
    else
        v4f_launch(k_indexer_generic<16>, grid, IDX_WARPS * 32, smem, c->stream, q, w, n_head, d, keys, n_keys, n_valid,
                                                                            score);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

extern "C" v4f_status v4f_cuda_indexer_scores_mixed(v4f_cuda *c, const float *q, const float *w, int64_t n_q,
                                                    int64_t n_head, int64_t d, const float *keys, int64_t n_keys,
                                                    const int32_t *n_valid, float *score, v4f_err *err) {
    /* V4F_CUDA_IX_TC=0: always the float32 kernels (A/B) */
    if (v4f_env_off("V4F_CUDA_IX_TC") || d != IX_D || n_head % 16 || n_head < 16 || n_head > IX_H ||
        n_q < V4F_CUDA_IX_TC_MIN_Q || n_q > 65535 || n_keys <= 0 || ((uintptr_t)q & 15) || ((uintptr_t)keys & 15))
        return v4f_cuda_indexer_scores(c, q, w, n_q, n_head, d, keys, n_keys, n_valid, score, err);
    CUDA_TRY_DEVICE(c);
    const int64_t qb = (IM_THREADS / 32) / (n_head / 16);
    v4f_launch(k_ix_mma, (unsigned)((n_q + qb - 1) / qb), IM_THREADS, 0, c->stream, q, w, n_q, (int)n_head, keys, n_keys,
               n_valid, score);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

/* ---- top-k -------------------------------------------------------------------------- */

/* Exclusive prefix count of flag over the block (all NT threads call);
 * returns this thread's rank, *total the block's count. s_w: NT/32 ints. */
template <int NT>
__device__ __forceinline__ int block_rank(bool flag, int *s_w, int *total) {
    const int lane = threadIdx.x & 31, wl = threadIdx.x >> 5;
    const unsigned b = __ballot_sync(0xffffffffu, flag);
    const int in_warp = __popc(b & ((1u << lane) - 1u));
    __syncthreads();
    if (lane == 0) s_w[wl] = __popc(b);
    __syncthreads();
    int before = 0, tot = 0;
    for (int i = 0; i < NT / 32; i++) {
        if (i < wl) before += s_w[i];
        tot += s_w[i];
    }
    *total = tot;
    return before + in_warp;
}

/* One warp's search of a 256-bin histogram from the top bin down: the bin
 * holding the need-th largest (the highest b with (count above b) + cnt[b]
 * >= need, else 0), the count above it and cnt[b]. Lane l scans bins
 * 255 - 8l down to 248 - 8l after a prefix sum over the lanes; the results
 * are valid in the one lane that returns true. */
__device__ __forceinline__ bool warp_find_bin(const unsigned *cnt, int64_t need, int *bin, int64_t *above,
                                              unsigned *cb) {
    const int lane = threadIdx.x & 31, hi = 255 - 8 * lane;
    unsigned c[8], sum = 0;
#pragma unroll
    for (int j = 0; j < 8; j++) sum += c[j] = cnt[hi - j];
    unsigned incl = sum;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const unsigned t = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += t;
    }
    int64_t acc = (int64_t)(incl - sum);
    int b = -1;
    unsigned cbv = 0;
#pragma unroll
    for (int j = 0; j < 8; j++) {
        if (b < 0 && (hi - j == 0 || acc + (int64_t)c[j] >= need)) b = hi - j, cbv = c[j];
        if (b < 0) acc += c[j];
    }
    const unsigned found = __ballot_sync(0xffffffffu, b >= 0);
    *bin = b, *above = acc, *cb = cbv;
    return lane == __ffs(found) - 1;
}

/* Radix select over n_c values v(i) (32-bit keys, largest first; from
 * shared or global memory): the value V of the need-th largest and how many
 * equal to V are needed. 8 bits per pass, one block. */
template <int NT, typename GetV>
__device__ void tk_radix_select(int64_t n_c, int64_t need, GetV getv, uint32_t *V, int64_t *need_eq) {
    __shared__ unsigned hist[256];
    __shared__ uint32_t s_prefix;
    __shared__ long long s_need;
    uint32_t prefix = 0, mask = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = threadIdx.x; i < 256; i += NT) hist[i] = 0;
        __syncthreads();
        for (int64_t i = threadIdx.x; i < n_c; i += NT) {
            const uint32_t v = getv(i);
            if ((v & mask) == prefix) atomicAdd(&hist[(v >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (threadIdx.x < 32) {
            int b;
            int64_t acc;
            unsigned cb;
            if (warp_find_bin(hist, need, &b, &acc, &cb)) {
                s_prefix = prefix | ((uint32_t)b << shift);
                s_need = need - acc;
            }
        }
        __syncthreads();
        prefix = s_prefix;
        need = s_need;
        mask |= 255u << shift;
        __syncthreads();
    }
    *V = prefix;
    *need_eq = need;
}

/* One block (NT threads) selects the top k of row xr[0..n): radix select of
 * the k-th largest key (8 bits a pass), then an in-order compaction. */
template <int NT>
__device__ void topk_row_block(const float *__restrict__ xr, int64_t n, int64_t k, int32_t *out, int32_t *count) {
    __shared__ int s_w[NT / 32];
    if (n < 0) n = 0;
    const int64_t kk = k < n ? k : n;
    if (kk == n) { /* everything is selected */
        for (int64_t i = threadIdx.x; i < k; i += NT) out[i] = i < n ? (int32_t)i : -1;
        if (count && threadIdx.x == 0) *count = (int32_t)kk;
        return;
    }
    uint32_t T;
    int64_t need;
    tk_radix_select<NT>(n, kk, [&](int64_t i) { return dev_order_key(xr[i]); }, &T, &need);
    int64_t eq_base = 0, out_base = 0;
    for (int64_t c0 = 0; c0 < n; c0 += NT) {
        const int64_t i = c0 + threadIdx.x;
        const uint32_t key = i < n ? dev_order_key(xr[i]) : 0u;
        const bool eq = i < n && key == T;
        int eq_tot = 0, sel_tot = 0;
        const int eq_rank = block_rank<NT>(eq, s_w, &eq_tot);
        const bool sel = i < n && (key > T || (eq && eq_base + eq_rank < need));
        const int sel_rank = block_rank<NT>(sel, s_w, &sel_tot);
        if (sel) out[out_base + sel_rank] = (int32_t)i;
        eq_base += eq_tot;
        out_base += sel_tot;
        if (out_base >= kk) break; /* uniform across the block */
    }
    for (int64_t i = kk + threadIdx.x; i < k; i += NT) out[i] = -1;
    if (count && threadIdx.x == 0) *count = (int32_t)kk;
}

/* Rows of up to TOPK_SMEM_N keys (a decode step's indexer row: ctx / 4 + 2
 * up to 64K tokens of context): the same selection with the keys read once
 * into shared memory and the histograms without contention: every bin has
 * one counter per lane (s_hist[bin][lane], bank = lane), so a warp's 32
 * atomic adds never share an address, where float scores, sharing their
 * top bits, made the plain adds serialise on a few bins and
 * __match_any_sync aggregation did not help (H200, 2,050 / 8,192 keys: 8.5
 * / 22 us before, docs/PERF_NOTES.md session 29); no pass after the one
 * whose bin is needed whole; the in-order compaction by warps over
 * contiguous runs. Session 38: the first pass's histogram made as the
 * keys are stored; the threshold bin found by all warps at once (each
 * warp's 16 bins, then the warps' totals) with the counters cleared as
 * they are summed; a threshold bin of <= TOPK_CAND keys finished by
 * ranking its keys instead of more passes (H200, one row alone, 2,050 /
 * 8,194 / 16,384 keys: 5.33 / 8.94 / 13.14 -> 4.50 / 7.93 / 12.02 us). The
 * passes are bound by the shared-memory pipe (a pass over 16K keys ~110
 * cycles a key and thread; reading the keys 8 at a time before the
 * atomics did not help). Same indices, same order. Dynamic shared
 * memory: the histogram (TOPK_HIST_BYTES), then the row's keys. */
#define TOPK_SMEM_N 16384
#define TOPK_HIST_BYTES (256 * 32 * 4)
#define TOPK_STATIC_BYTES 8192 /* room left for k_topk's static shared memory (2.2 KB on sm_90) */

#define TOPK_CAND 64 /* a threshold bin of at most this many keys is finished by ranking them */

template <int NT>
__device__ void topk_row_smem(const float *__restrict__ xr, int n, int k, int32_t *out, int32_t *count,
                              unsigned char *dsm) {
    static_assert(NT == 512, "bin counts: two threads per bin, 16 bins a warp");
    unsigned *s_hist = (unsigned *)dsm;                       /* [256][32] */
    uint32_t *s_key = (uint32_t *)(dsm + TOPK_HIST_BYTES); /* [n] */
    __shared__ unsigned s_wt[NT / 32], s_w[NT / 32];
    __shared__ uint32_t s_prefix;
    __shared__ int s_need, s_done, s_cb, s_nc;
    __shared__ int s_ci[TOPK_CAND];
    const int tid = threadIdx.x, lane = tid & 31, wl = tid >> 5;
    const int kk = min(k, n);
    /* the keys into shared memory, eight loads in flight per thread, and
     * the first pass's histogram (top 8 bits) as they are stored */
    float v[8];
    auto load8 = [&](int i0) {
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const int i = i0 + j * NT + tid;
            v[j] = i < n ? xr[i] : 0.0f;
        }
    };
    load8(0);
    for (int i = tid; i < 256 * 32; i += NT) s_hist[i] = 0;
    if (tid == 0) s_nc = 0;
    __syncthreads();
    for (int i0 = 0; i0 < n; i0 += 8 * NT) {
        if (i0 > 0) load8(i0);
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const int i = i0 + j * NT + tid;
            if (i < n) {
                const uint32_t key = dev_order_key(v[j]);
                s_key[i] = key;
                atomicAdd(&s_hist[(key >> 24) * 32 + lane], 1u);
            }
        }
    }
    __syncthreads();
    uint32_t prefix = 0, mask = 0;
    int need = kk;
    for (int p = 0; p < 4; p++) {
        const int shift = 24 - 8 * p;
        if (p > 0) {
            for (int i = tid; i < n; i += NT) {
                const uint32_t x = s_key[i];
                if ((x & mask) == prefix) atomicAdd(&s_hist[((x >> shift) & 255u) * 32 + lane], 1u);
            }
            __syncthreads();
        }
        /* bin b = tid / 2 (warp wl: bins 16 wl .. 16 wl + 15) from lanes 16 h
         * .. 16 h + 15 (h = tid & 1), read in a rotated order so that a
         * warp's 32 reads hit 32 banks, each counter cleared as it is read */
        const int b = tid >> 1, h = tid & 1;
        unsigned c = 0;
#pragma unroll
        for (int j = 0; j < 16; j++) {
            unsigned *q = &s_hist[b * 32 + 16 * h + ((j + b) & 15)];
            c += *q;
            *q = 0;
        }
        c += __shfl_xor_sync(0xffffffffu, c, 1);
        /* the keys in the warp's bins from b up (even lanes), the warp's total */
        unsigned incl = h == 0 ? c : 0u;
#pragma unroll
        for (int o = 2; o < 32; o <<= 1) {
            const unsigned t = __shfl_down_sync(0xffffffffu, incl, o);
            if (lane + o < 32) incl += t;
        }
        if (lane == 0) s_wt[wl] = incl;
        __syncthreads();
        /* the one bin holding the need-th largest key: keys above it < need <= with it */
        unsigned above = incl - c;
        for (int w = wl + 1; w < NT / 32; w++) above += s_wt[w];
        if (h == 0 && (int)above < need && need <= (int)(above + c)) {
            s_prefix = prefix | ((uint32_t)b << shift);
            s_need = need - (int)above;
            s_done = need - (int)above == (int)c; /* the whole bin is selected */
            s_cb = (int)c;
        }
        __syncthreads();
        prefix = s_prefix;
        need = s_need;
        mask |= 255u << shift;
        if (s_done) break; /* uniform */
        if (p < 3 && s_cb <= TOPK_CAND) {
            /* a small bin: its keys' ranks (value desc, index asc) give the
             * threshold T (the need-th) and how many keys equal to T are
             * taken, as the remaining passes would */
            const int cb = s_cb;
            for (int i = tid; i < n; i += NT)
                if ((s_key[i] & mask) == prefix) s_ci[atomicAdd(&s_nc, 1)] = i;
            __syncthreads();
            if (tid < cb) {
                const int ci = s_ci[tid];
                const uint32_t kv = s_key[ci];
                int gt = 0, rank = 0;
                for (int j = 0; j < cb; j++) {
                    const int cj = s_ci[j];
                    const uint32_t kj = s_key[cj];
                    gt += kj > kv;
                    rank += kj > kv || (kj == kv && cj < ci);
                }
                if (rank == need - 1) s_prefix = kv, s_need = need - gt;
            }
            __syncthreads();
            prefix = s_prefix;
            need = s_need;
            mask = 0xffffffffu;
            break;
        }
    }
    /* key & mask above prefix: selected; equal: the first need of them.
     * Warp w compacts the run [w per, (w + 1) per) in index order, lanes
     * on consecutive keys (a thread per run had 16-way bank conflicts) */
    const int per = (n + NT / 32 - 1) / (NT / 32), w0 = min(n, wl * per), w1 = min(n, w0 + per);
    unsigned gt = 0, eq = 0;
    for (int i = w0 + lane; i < w1; i += 32) {
        const uint32_t x = s_key[i] & mask;
        gt += x > prefix;
        eq += x == prefix;
    }
    gt = __reduce_add_sync(0xffffffffu, gt);
    eq = __reduce_add_sync(0xffffffffu, eq);
    if (lane == 0) s_w[wl] = gt | eq << 16; /* both counts <= n < 2^16 */
    __syncthreads();
    unsigned before = 0;
    for (int w = 0; w < wl; w++) before += s_w[w];
    int eq_b = (int)(before >> 16), pos = (int)(before & 0xffffu) + min(eq_b, need);
    const unsigned below = (1u << lane) - 1u;
    for (int i0 = w0; i0 < w1; i0 += 32) { /* uniform over the warp */
        const int i = i0 + lane;
        const uint32_t x = i < w1 ? s_key[i] & mask : 0u;
        const bool is_eq = i < w1 && x == prefix;
        const unsigned em = __ballot_sync(0xffffffffu, is_eq);
        const bool sel = (i < w1 && x > prefix) || (is_eq && eq_b + __popc(em & below) < need);
        const unsigned sm = __ballot_sync(0xffffffffu, sel);
        if (sel) out[pos + __popc(sm & below)] = i;
        pos += __popc(sm);
        eq_b += __popc(em);
    }
    for (int i = kk + tid; i < k; i += NT) out[i] = -1;
    if (count && tid == 0) *count = kk;
}

#define TOPK_THREADS 512

/* smem_n: the keys the launch's dynamic shared memory holds (0: none) */
__global__ void __launch_bounds__(TOPK_THREADS) k_topk(const float *__restrict__ x, int64_t ld,
                                                       const int32_t *__restrict__ nr, int64_t n0, int64_t k,
                                                       int32_t *idx, int32_t *count, int smem_n) {
    V4F_PDL_ENTRY();
    extern __shared__ __align__(16) unsigned char tk_dsm[];
    const int64_t r = blockIdx.x, n = nr ? (int64_t)nr[r] : n0;
    if (n > k && n <= smem_n)
        topk_row_smem<TOPK_THREADS>(x + r * ld, (int)n, (int)k, idx + r * k, count ? count + r : NULL, tk_dsm);
    else
        topk_row_block<TOPK_THREADS>(x + r * ld, n, k, idx + r * k, count ? count + r : NULL);
}

/* -- multi-CTA radix select for long rows (few rows) -- */

#define TK_ROWS 4       /* rows per launch of the multi-CTA path */
#define TK_BINS 4096    /* 12-bit digits */
#define TK_KMAX 2048    /* k limit of the path */
#define TK_CAP 4096     /* candidates sharing the 24-bit threshold prefix */
#define TK_THREADS 512
#define TK_FIN_THREADS 1024
#define TK_MIN_N 16384  /* shorter rows: one block per row */

static __device__ unsigned g_tk_hist1[TK_ROWS][TK_BINS], g_tk_hist2[TK_ROWS][TK_BINS];
static __device__ unsigned g_tk_ndef[TK_ROWS], g_tk_ncand[TK_ROWS];
static __device__ int32_t g_tk_def[TK_ROWS][TK_KMAX];
static __device__ uint2 g_tk_cand[TK_ROWS][TK_CAP]; /* (key, index) */

__device__ __forceinline__ int64_t tk_row_n(const int32_t *nr, int64_t n0, int64_t r) {
    const int64_t n = nr ? (int64_t)nr[r] : n0;
    return n > 0 ? n : 0;
}

/* Shared-memory histogram add, aggregated over the lanes with the same bin. */
__device__ __forceinline__ void hist_add(unsigned *h, unsigned bin, bool active) {
    const unsigned am = __ballot_sync(0xffffffffu, active);
    if (!active) return;
    const unsigned peers = __match_any_sync(am, bin);
    if ((threadIdx.x & 31) == __ffs(peers) - 1) atomicAdd(&h[bin], (unsigned)__popc(peers));
}

/* Warp-aggregated append: returns the slot of this active lane in the list
 * whose counter is *ctr. */
__device__ __forceinline__ unsigned warp_append(unsigned *ctr, bool active) {
    const unsigned b = __ballot_sync(0xffffffffu, active);
    const int lane = threadIdx.x & 31;
    unsigned base = 0;
    if (b && lane == __ffs(b) - 1) base = atomicAdd(ctr, (unsigned)__popc(b));
    base = __shfl_sync(0xffffffffu, base, b ? __ffs(b) - 1 : 0);
    return base + (unsigned)__popc(b & ((1u << lane) - 1u));
}

/* Block (NT threads) search of a TK_BINS histogram from the top bin down:
 * the bin b where the count of bins > b is < need <= count of bins >= b
 * (-1 if the total is < need); *above = count of bins > b. */
template <int NT>
__device__ void tk_find_bin(const unsigned *hist, int64_t need, int *bin, int64_t *above) {
    constexpr int PER = TK_BINS / NT;
    __shared__ unsigned s_ws[NT / 32];
    __shared__ int s_bin;
    __shared__ long long s_above;
    const int tid = threadIdx.x, lane = tid & 31, wl = tid >> 5;
    /* thread tid owns bins [TK_BINS - PER (tid + 1), TK_BINS - PER tid) */
    const int hi = TK_BINS - PER * tid;
    unsigned v[PER], sum = 0;
#pragma unroll
    for (int i = 0; i < PER; i++) sum += v[i] = hist[hi - 1 - i];
    unsigned incl = sum;
    for (int o = 1; o < 32; o <<= 1) {
        const unsigned y = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += y;
    }
    if (tid == 0) s_bin = -1, s_above = 0;
    if (lane == 31) s_ws[wl] = incl;
    __syncthreads();
    unsigned before = incl - sum;
    for (int i = 0; i < wl; i++) before += s_ws[i];
    if ((int64_t)before < need && (int64_t)before + sum >= need) {
        int64_t acc = before;
#pragma unroll
        for (int i = 0; i < PER; i++) {
            if (acc + v[i] >= need) {
                s_bin = hi - 1 - i;
                s_above = acc;
                break;
            }
            acc += v[i];
        }
    }
    __syncthreads();
    *bin = s_bin;
    *above = s_above;
    __syncthreads();
}

/* Slice of row r handled by CTA blockIdx.x of gridDim.x. */
__device__ __forceinline__ void tk_slice(int64_t n, int64_t *b, int64_t *e) {
    const int64_t per = (n + gridDim.x - 1) / gridDim.x;
    *b = (int64_t)blockIdx.x * per;
    *e = min(n, *b + per);
}

__global__ void __launch_bounds__(TK_THREADS) k_tk_hist1(const float *__restrict__ x, int64_t ld,
                                                         const int32_t *__restrict__ nr, int64_t n0, int64_t k) {
    V4F_PDL_ENTRY();
    __shared__ unsigned h[TK_BINS];
    const int r = blockIdx.y;
    const int64_t n = tk_row_n(nr, n0, r);
    if (n <= k) return; /* everything selected: the final kernel does it */
    int64_t b, e;
    tk_slice(n, &b, &e);
    for (int i = threadIdx.x; i < TK_BINS; i += TK_THREADS) h[i] = 0;
    __syncthreads();
    const float *xr = x + r * ld;
    for (int64_t i0 = b; i0 < e; i0 += TK_THREADS) {
        const int64_t i = i0 + threadIdx.x;
        const bool ok = i < e;
        hist_add(h, ok ? dev_order_key(xr[i]) >> 20 : 0u, ok);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < TK_BINS; i += TK_THREADS)
        if (h[i]) atomicAdd(&g_tk_hist1[r][i], h[i]);
}

__global__ void __launch_bounds__(TK_THREADS) k_tk_hist2(const float *__restrict__ x, int64_t ld,
                                                         const int32_t *__restrict__ nr, int64_t n0, int64_t k) {
    V4F_PDL_ENTRY();
    __shared__ unsigned h[TK_BINS];
    const int r = blockIdx.y;
    const int64_t n = tk_row_n(nr, n0, r);
    if (n <= k) return;
    int b1;
    int64_t a1;
    tk_find_bin<TK_THREADS>(g_tk_hist1[r], k, &b1, &a1);
    int64_t b, e;
    tk_slice(n, &b, &e);
    for (int i = threadIdx.x; i < TK_BINS; i += TK_THREADS) h[i] = 0;
    __syncthreads();
    const float *xr = x + r * ld;
    for (int64_t i0 = b; i0 < e; i0 += TK_THREADS) {
        const int64_t i = i0 + threadIdx.x;
        const uint32_t key = i < e ? dev_order_key(xr[i]) : 0u;
        const bool ok = i < e && (int)(key >> 20) == b1;
        hist_add(h, ok ? (key >> 8) & (TK_BINS - 1) : 0u, ok);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < TK_BINS; i += TK_THREADS)
        if (h[i]) atomicAdd(&g_tk_hist2[r][i], h[i]);
}

__global__ void __launch_bounds__(TK_THREADS) k_tk_collect(const float *__restrict__ x, int64_t ld,
                                                           const int32_t *__restrict__ nr, int64_t n0, int64_t k) {
    V4F_PDL_ENTRY();
    const int r = blockIdx.y;
    const int64_t n = tk_row_n(nr, n0, r);
    if (n <= k) return;
    int b1, b2;
    int64_t a1, a2;
    tk_find_bin<TK_THREADS>(g_tk_hist1[r], k, &b1, &a1);
    tk_find_bin<TK_THREADS>(g_tk_hist2[r], k - a1, &b2, &a2);
    const uint32_t p24 = ((uint32_t)b1 << 12) | (uint32_t)b2;
    int64_t b, e;
    tk_slice(n, &b, &e);
    const float *xr = x + r * ld;
    for (int64_t i0 = b; i0 < e; i0 += TK_THREADS) {
        const int64_t i = i0 + threadIdx.x;
        const uint32_t key = i < e ? dev_order_key(xr[i]) : 0u;
        const bool def = i < e && (key >> 8) > p24;
        const bool cand = i < e && (key >> 8) == p24;
        const unsigned sd = warp_append(&g_tk_ndef[r], def);
        if (def && sd < TK_KMAX) g_tk_def[r][sd] = (int32_t)i;
        const unsigned sc = warp_append(&g_tk_ncand[r], cand);
        if (cand && sc < TK_CAP) g_tk_cand[r][sc] = make_uint2(key, (uint32_t)i);
    }
}


struct tk_final_smem {
    uint2 cand[TK_CAP];
    int32_t sel[TK_KMAX];
    unsigned n_sel;
};

__global__ void __launch_bounds__(TK_FIN_THREADS) k_tk_final(const float *__restrict__ x, int64_t ld,
                                                             const int32_t *__restrict__ nr, int64_t n0, int64_t k,
                                                             int32_t *idx, int32_t *count) {
    V4F_PDL_ENTRY();
    __shared__ tk_final_smem S;
    const int r = blockIdx.x;
    const int tid = threadIdx.x;
    const int64_t n = tk_row_n(nr, n0, r);
    int32_t *out = idx + (int64_t)r * k;
    int32_t *cnt = count ? count + r : NULL;
    if (n <= k) {
        for (int64_t i = tid; i < k; i += TK_FIN_THREADS) out[i] = i < n ? (int32_t)i : -1;
        if (cnt && tid == 0) *cnt = (int32_t)n;
        return; /* nothing was accumulated for this row */
    }
    const unsigned ndef = g_tk_ndef[r], ncand = g_tk_ncand[r];
    if (ncand > TK_CAP || ndef >= (unsigned)k) {
        /* too many candidates share the 24-bit prefix: one-block select */
        topk_row_block<TK_FIN_THREADS>(x + r * ld, n, k, out, cnt);
    } else {
        const int nc = (int)ncand;
        for (int i = tid; i < nc; i += TK_FIN_THREADS) S.cand[i] = g_tk_cand[r][i];
        for (int i = tid; i < (int)ndef; i += TK_FIN_THREADS) S.sel[i] = g_tk_def[r][i];
        if (tid == 0) S.n_sel = ndef;
        __syncthreads();
        /* the value threshold among the candidates, then the lowest indices
         * among the candidates equal to it (select the largest ~index) */
        uint32_t T, V;
        int64_t need_t, need_v;
        tk_radix_select<TK_FIN_THREADS>(nc, k - (int64_t)ndef, [&](int64_t i) { return S.cand[i].x; }, &T, &need_t);
        tk_radix_select<TK_FIN_THREADS>(
            nc, need_t, [&](int64_t i) { return S.cand[i].x == T ? ~S.cand[i].y : 0u; }, &V, &need_v);
        for (int i = tid; i < nc; i += TK_FIN_THREADS) {
            const uint2 cv = S.cand[i];
            if (cv.x > T || (cv.x == T && ~cv.y >= V)) S.sel[atomicAdd(&S.n_sel, 1u)] = (int32_t)cv.y;
        }
        __syncthreads();
        /* bitonic sort of the k selected indices (ascending), padded */
        int P = 1;
        while (P < k) P <<= 1;
        for (int i = (int)k + tid; i < P; i += TK_FIN_THREADS) S.sel[i] = 0x7fffffff;
        __syncthreads();
        for (int size = 2; size <= P; size <<= 1)
            for (int stride = size >> 1; stride > 0; stride >>= 1) {
                for (int i = tid; i < P; i += TK_FIN_THREADS) {
                    const int j = i ^ stride;
                    if (j > i) {
                        const bool up = (i & size) == 0;
                        const int32_t a = S.sel[i], bb = S.sel[j];
                        if ((a > bb) == up) S.sel[i] = bb, S.sel[j] = a;
                    }
                }
                __syncthreads();
            }
        for (int64_t i = tid; i < k; i += TK_FIN_THREADS) out[i] = S.sel[i];
        if (cnt && tid == 0) *cnt = (int32_t)k;
    }
    /* leave the scratch of this row zeroed for the next launch */
    __syncthreads();
    for (int i = tid; i < TK_BINS; i += TK_FIN_THREADS) g_tk_hist1[r][i] = 0, g_tk_hist2[r][i] = 0;
    if (tid == 0) g_tk_ndef[r] = 0, g_tk_ncand[r] = 0;
}

extern "C" v4f_status v4f_cuda_topk(v4f_cuda *c, const float *x, int64_t n_rows, int64_t ld, const int32_t *n,
                                    int64_t n0, int64_t k, int32_t *idx, int32_t *count, v4f_err *err) {
    ARG_CHECK(n_rows >= 0 && n_rows <= 0x7fffffff && k > 0 && k <= 0x7fffffff && n0 <= 0x7fffffff &&
                  (n || n0 <= ld || n_rows <= 1),
              "cuda topk: bad shape rows %lld ld %lld n %lld k %lld", (long long)n_rows, (long long)ld,
              (long long)n0, (long long)k);
    if (n_rows == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    const int64_t n_guess = n ? ld : n0;
    if (n_rows <= TK_ROWS && k <= TK_KMAX && n_guess >= TK_MIN_N) {
        int64_t g = (n_guess + 4 * TK_THREADS - 1) / (4 * TK_THREADS); /* >= 4 elements per thread */
        const int64_t gmax = (2 * (int64_t)c->sm_count + n_rows - 1) / n_rows;
        if (g > gmax) g = gmax;
        if (g < 1) g = 1;
        const dim3 grid((unsigned)g, (unsigned)n_rows);
        v4f_launch(k_tk_hist1, grid, TK_THREADS, 0, c->stream, x, ld, n, n0, k);
        CUDA_TRY_LAUNCH();
        v4f_launch(k_tk_hist2, grid, TK_THREADS, 0, c->stream, x, ld, n, n0, k);
        CUDA_TRY_LAUNCH();
        v4f_launch(k_tk_collect, grid, TK_THREADS, 0, c->stream, x, ld, n, n0, k);
        CUDA_TRY_LAUNCH();
        v4f_launch(k_tk_final, (unsigned)n_rows, TK_FIN_THREADS, 0, c->stream, x, ld, n, n0, k, idx, count);
        CUDA_TRY_LAUNCH();
        return V4F_OK;
    }
    /* the shared-memory path for rows up to TOPK_SMEM_N keys (and what
     * the device's opt-in shared memory holds) */
    int64_t smem_n = n_guess < TOPK_SMEM_N ? n_guess : TOPK_SMEM_N;
    const int64_t fit = ((int64_t)max_smem_optin(c->device) - TOPK_HIST_BYTES - TOPK_STATIC_BYTES) / 4;
    if (smem_n > fit) smem_n = fit > 0 ? fit : 0;
    const size_t tk_bytes = smem_n > 0 ? TOPK_HIST_BYTES + (size_t)smem_n * 4 : 0;
    if (tk_bytes > 48 * 1024) {
        static size_t attr_bytes[64];
        if (attr_bytes[c->device & 63] < tk_bytes) {
            CUDA_TRY(cudaFuncSetAttribute(k_topk, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)tk_bytes));
            attr_bytes[c->device & 63] = tk_bytes;
        }
    }
    v4f_launch(k_topk, (unsigned)n_rows, TOPK_THREADS, tk_bytes, c->stream, x, ld, n, n0, k, idx, count, (int)smem_n);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}
