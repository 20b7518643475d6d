/*
 * cuda_gemm.cu - batched matrix multiplication for prefill: Y = X W^T for
 * n_tok rows of float32 activations X and a weight matrix W in any of the
 * seven weight formats (F32, F16, BF16, Q8_0, Q2_K, Q4_K, IQ2_XXS), dense
 * (v4f_cuda_matmul) or grouped by routed expert with the grouping read on
 * the device (v4f_cuda_matmul_grouped). API in cuda_backend.h, section
 * "batched matmul".
 *
 * Two kernels, chosen by the caller's `exact` flag:
 *
 *  - k_gemm_tc (tensor cores): a CTA computes a BM x BN tile of Y (BM token
 *    rows, BN output columns) with 8 warps in a 2 x 4 grid, each warp
 *    WM x WN through mma.sync m16n8k16 (f16 operands, float32
 *    accumulators). The K loop steps by BK = 32. The float32 X tile runs
 *    through a 3-stage cp.async ring in shared memory (each thread later
 *    converts exactly the bytes it copied, so the ring needs no barrier);
 *    the raw weight bytes of step s+2 are loaded into registers right after
 *    the MMAs of step s (volatile loads, not sunk to their use). After the
 *    MMAs of step s, X of step s+1 is rounded to f16 and W of step s+1 is
 *    dequantized (reference order of quant_ref.c, then rounded to f16)
 *    into the other f16 buffer; one barrier per step. Every weight element is dequantized once
 *    per CTA; fragments come from shared memory through ldmatrix (rows
 *    padded to 80 bytes: conflict-free). Tiles are ordered token-tile
 *    fastest, so the CTAs that share a weight tile run together and the
 *    weight matrix is streamed from DRAM about once.
 *    Fast-path conditions (else the exact kernel runs): weights F16 or
 *    quantized (F32 and BF16 values may exceed the f16 range), n_in % 32 == 0,
 *    weight data and row_bytes multiples of 16, X 16-byte aligned, ldx % 4
 *    == 0. All model shapes meet them.
 *
 *  - k_gemm_exact (reference mode): float32 products and accumulation
 *    (FMA), 64 x 64 tiles, 4 x 4 outputs per thread, weights dequantized to
 *    the exact reference floats (quant_ref.c order, explicit __fmul_rn /
 *    __fsub_rn) with byte loads (any alignment, any n_in that is a block
 *    multiple). Each output sums per 32-element K step into a fresh partial
 *    and adds that to its total, which bounds the rounding error by about
 *    (32 + n_in / 32) ulp of sum |w x| (docs/TOLERANCES.md, "## cuda gemm").
 *
 * Grouped launches: grid.x enumerates (expert, token tile) pairs up to a
 * host bound derived from max_rows; each CTA finds its pair with a block
 * scan over the per-expert tile counts from offs (device), so no host
 * synchronisation is needed (graph capture). Idle CTAs exit at once.
 *
 * The IQ2_XXS grid (2 KB) is passed by value as a kernel parameter, copied
 * per launch from the CPU table (v4f_quant_iq2xxs_grid), so this file needs
 * no device state of its own; kernels copy it into shared memory.
 *
 * Ownership: kernels read caller-owned X and weights and write only Y.
 * Threading: launchers queue on the context's stream (one owner thread).
 */
#include "backend/cuda/cuda_common.cuh"

#include <stdlib.h>

#include <cuda_fp16.h>

extern "C" {
#include "core/ggml_type.h"
#include "quant/quant_internal.h"
}

namespace {

constexpr int kThreads = 256;
constexpr int kBK = 32;          /* K step of both kernels */
constexpr int kLds = kBK + 8;    /* f16 elements per shared row (80 bytes) */

struct iq2_grid_t {
    uint64_t v[256];
};
struct no_grid_t {
    uint64_t v[1];
};
template <int T> struct grid_of {
    typedef no_grid_t type;
};
template <> struct grid_of<V4F_TYPE_IQ2_XXS> {
    typedef iq2_grid_t type;
};

struct gemm_args {
    const uint8_t *w; /* dense: the matrix */
    uint64_t row_bytes;
    int64_t n_in, n_out;
    const float *x;
    int64_t ldx;
    float *y;
    int64_t ldy;
    int64_t n_tok; /* dense: rows of X and Y */
    /* grouped */
    const void *const *tab;
    int32_t tab_off;
    const int32_t *offs;
    int n_expert;
};

/* ---- small device helpers -------------------------------------------------- */

__device__ __forceinline__ float h2f(uint32_t bits) { return __half2float(__ushort_as_half((unsigned short)(bits & 0xffffu))); }
__device__ __forceinline__ uint32_t ld8(const uint8_t *p) { return __ldg(p); }
/* Weight-unit loads of the tensor-core kernel as volatile asm: they stay
 * where they are written (before the MMAs of the current step), so their
 * latency is hidden behind that step instead of being sunk to their use. */
__device__ __forceinline__ uint32_t vld8(const uint8_t *p) {
    uint32_t v;
    asm volatile("ld.global.nc.u8 %0, [%1];\n" : "=r"(v) : "l"(p));
    return v;
}
__device__ __forceinline__ uint32_t vld16(const uint8_t *p) {
    unsigned short v;
    asm volatile("ld.global.nc.u16 %0, [%1];\n" : "=h"(v) : "l"(p));
    return v;
}
__device__ __forceinline__ uint32_t vld32(const uint8_t *p) {
    uint32_t v;
    asm volatile("ld.global.nc.u32 %0, [%1];\n" : "=r"(v) : "l"(p));
    return v;
}
__device__ __forceinline__ uint2 vld64(const uint8_t *p) {
    uint2 v;
    asm volatile("ld.global.nc.v2.u32 {%0, %1}, [%2];\n" : "=r"(v.x), "=r"(v.y) : "l"(p));
    return v;
}
__device__ __forceinline__ uint4 vld128(const uint8_t *p) {
    uint4 v;
    asm volatile("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}
__device__ __forceinline__ void cp_async16(void *smem_dst, const void *gmem_src) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem_dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem_src) : "memory");
}
__device__ __forceinline__ void cp_async_commit(void) { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait(void) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
/* byte-wise (any alignment) */
__device__ __forceinline__ uint32_t lb16(const uint8_t *p) { return ld8(p) | ld8(p + 1) << 8; }
__device__ __forceinline__ uint32_t lb32(const uint8_t *p) { return lb16(p) | lb16(p + 2) << 16; }
__device__ __forceinline__ uint32_t ksign(uint32_t k7) { return k7 | ((uint32_t)(__popc(k7) & 1) << 7); }

__device__ __forceinline__ uint32_t pack_h16(float lo, float hi) {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *(const uint32_t *)&v;
}

/* Element e of a row, exactly as quant_ref.c computes it (byte loads). */
template <int T> __device__ __forceinline__ float ref_elem(const uint8_t *row, int64_t e, const uint64_t *grid) {
    if constexpr (T == V4F_TYPE_F32) {
        return __uint_as_float(lb32(row + 4 * e));
    } else if constexpr (T == V4F_TYPE_F16) {
        return h2f(lb16(row + 2 * e));
    } else if constexpr (T == V4F_TYPE_BF16) {
        return __uint_as_float(lb16(row + 2 * e) << 16);
    } else if constexpr (T == V4F_TYPE_Q8_0) {
        const uint8_t *b = row + (e >> 5) * 34;
        return __fmul_rn(h2f(lb16(b)), (float)(int8_t)ld8(b + 2 + (e & 31)));
    } else if constexpr (T == V4F_TYPE_Q2_K) {
        const uint8_t *b = row + (e >> 8) * 84;
        const int k = (int)(e & 255), h = k >> 7, s = (k >> 5) & 3, l = k & 31;
        const uint32_t sc = ld8(b + 8 * h + 2 * s + (l >= 16));
        const float dl = __fmul_rn(h2f(lb16(b + 80)), (float)(sc & 15));
        const float ml = __fmul_rn(h2f(lb16(b + 82)), (float)(sc >> 4));
        const uint32_t q = (ld8(b + 16 + 32 * h + l) >> (2 * s)) & 3;
        return __fsub_rn(__fmul_rn(dl, (float)q), ml);
    } else if constexpr (T == V4F_TYPE_Q4_K) {
        const uint8_t *b = row + (e >> 8) * 144;
        const int k = (int)(e & 255), j = k >> 5, l = k & 31;
        const uint8_t *s = b + 4;
        uint32_t sc, m;
        if (j < 4) {
            sc = ld8(s + j) & 63;
            m = ld8(s + j + 4) & 63;
        } else {
            sc = (ld8(s + j + 4) & 15) | ((ld8(s + j - 4) >> 6) << 4);
            m = (ld8(s + j + 4) >> 4) | ((ld8(s + j) >> 6) << 4);
        }
        const float dl = __fmul_rn(h2f(lb16(b)), (float)sc);
        const float ml = __fmul_rn(h2f(lb16(b + 2)), (float)m);
        const uint32_t q = (ld8(b + 16 + 32 * (j >> 1) + l) >> (4 * (j & 1))) & 15;
        return __fsub_rn(__fmul_rn(dl, (float)q), ml);
    } else { /* IQ2_XXS */
        const uint8_t *b = row + (e >> 8) * 66;
        const int k = (int)(e & 255), g = k >> 5, l = (k >> 3) & 3, j = k & 7;
        const uint32_t aux = lb32(b + 2 + 8 * g + 4);
        const float db = __fmul_rn(__fmul_rn(h2f(lb16(b)), 0.5f + (float)(aux >> 28)), 0.25f);
        const uint64_t gv = grid[ld8(b + 2 + 8 * g + l)];
        const uint32_t signs = ksign((aux >> (7 * l)) & 127);
        const float v = __fmul_rn(db, (float)((gv >> (8 * j)) & 255));
        return ((signs >> j) & 1) ? -v : v;
    }
}

/* ---- tensor-core path: raw weight units of 8 elements ------------------------
 * A unit is 8 consecutive elements [e0, e0 + 8) of one row (e0 % 8 == 0);
 * wload fetches its bytes (aligned loads, row 16-byte aligned), wdeq turns
 * them into 4 packed f16 pairs (reference-order floats, then rounded). */
template <int T> struct wraw;
template <> struct wraw<V4F_TYPE_F32> { float4 a, b; };
template <> struct wraw<V4F_TYPE_F16> { uint4 v; };
template <> struct wraw<V4F_TYPE_BF16> { uint4 v; };
template <> struct wraw<V4F_TYPE_Q8_0> { uint32_t d, q0, q1; };
template <> struct wraw<V4F_TYPE_Q2_K> { uint32_t q0, q1, sc, dd; };
template <> struct wraw<V4F_TYPE_Q4_K> { uint4 head; uint2 q; };
template <> struct wraw<V4F_TYPE_IQ2_XXS> { uint32_t d, idx, B; };

template <int T> __device__ __forceinline__ void wload(const uint8_t *row, int64_t e0, wraw<T> &r) {
    if constexpr (T == V4F_TYPE_F32) {
        const uint4 a = vld128(row + 4 * e0), b = vld128(row + 4 * e0 + 16);
        r.a = make_float4(__uint_as_float(a.x), __uint_as_float(a.y), __uint_as_float(a.z), __uint_as_float(a.w));
        r.b = make_float4(__uint_as_float(b.x), __uint_as_float(b.y), __uint_as_float(b.z), __uint_as_float(b.w));
    } else if constexpr (T == V4F_TYPE_F16 || T == V4F_TYPE_BF16) {
        r.v = vld128(row + 2 * e0);
    } else if constexpr (T == V4F_TYPE_Q8_0) {
        const uint8_t *b = row + 34 * (e0 >> 5);
        const uint8_t *q = b + 2 + (e0 & 31);
        r.d = vld16(b);
        if (((uintptr_t)q & 3) == 0) {
            r.q0 = vld32(q);
            r.q1 = vld32(q + 4);
        } else {
            r.q0 = vld16(q) | vld16(q + 2) << 16;
            r.q1 = vld16(q + 4) | vld16(q + 6) << 16;
        }
    } else if constexpr (T == V4F_TYPE_Q2_K) {
        const uint8_t *b = row + 84 * (e0 >> 8);
        const int k = (int)(e0 & 255), h = k >> 7, s = (k >> 5) & 3, l0 = k & 31;
        const uint8_t *q = b + 16 + 32 * h + l0;
        r.q0 = vld32(q);
        r.q1 = vld32(q + 4);
        r.sc = vld32(b + 8 * h + 4 * (s >> 1));
        r.dd = vld32(b + 80);
    } else if constexpr (T == V4F_TYPE_Q4_K) {
        const uint8_t *b = row + 144 * (e0 >> 8);
        const int k = (int)(e0 & 255), j = k >> 5, l0 = k & 31;
        r.head = vld128(b);
        r.q = vld64(b + 16 + 32 * (j >> 1) + l0);
    } else { /* IQ2_XXS */
        const uint8_t *b = row + 66 * (e0 >> 8);
        const int k = (int)(e0 & 255), g = k >> 5, l = (k >> 3) & 3;
        r.d = vld16(b);
        r.idx = vld8(b + 2 + 8 * g + l);
        r.B = vld16(b + 6 + 8 * g) | vld16(b + 8 + 8 * g) << 16;
    }
}

template <int T>
__device__ __forceinline__ uint4 wdeq(const wraw<T> &r, int64_t e0, const uint64_t *grid) {
    if constexpr (T == V4F_TYPE_F32) {
        return make_uint4(pack_h16(r.a.x, r.a.y), pack_h16(r.a.z, r.a.w), pack_h16(r.b.x, r.b.y),
                          pack_h16(r.b.z, r.b.w));
    } else if constexpr (T == V4F_TYPE_BF16) {
        return r.v;
    } else if constexpr (T == V4F_TYPE_F16) {
        const uint32_t w[4] = {r.v.x, r.v.y, r.v.z, r.v.w};
        uint32_t o[4];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const float2 f = __half22float2(*(const __half2 *)&w[i]);
            o[i] = pack_h16(f.x, f.y);
        }
        return make_uint4(o[0], o[1], o[2], o[3]);
    } else {
        float v[8];
        if constexpr (T == V4F_TYPE_Q8_0) {
            const float d = h2f(r.d);
#pragma unroll
            for (int i = 0; i < 4; i++) {
                v[i] = __fmul_rn(d, (float)(int8_t)(r.q0 >> (8 * i)));
                v[4 + i] = __fmul_rn(d, (float)(int8_t)(r.q1 >> (8 * i)));
            }
        } else if constexpr (T == V4F_TYPE_Q2_K) {
            const int k = (int)(e0 & 255), s = (k >> 5) & 3, l0 = k & 31;
            const uint32_t sc = (r.sc >> (8 * (2 * (s & 1) + (l0 >= 16)))) & 255;
            const float dl = __fmul_rn(h2f(r.dd), (float)(sc & 15));
            const float ml = __fmul_rn(h2f(r.dd >> 16), (float)(sc >> 4));
#pragma unroll
            for (int i = 0; i < 4; i++) {
                v[i] = __fsub_rn(__fmul_rn(dl, (float)((r.q0 >> (8 * i + 2 * s)) & 3)), ml);
                v[4 + i] = __fsub_rn(__fmul_rn(dl, (float)((r.q1 >> (8 * i + 2 * s)) & 3)), ml);
            }
        } else if constexpr (T == V4F_TYPE_Q4_K) {
            const int j = (int)((e0 & 255) >> 5);
            /* scales[i] = byte i of head.y, head.z, head.w */
#define SB(i) ((((i) < 4 ? r.head.y : (i) < 8 ? r.head.z : r.head.w) >> (8 * ((i) & 3))) & 255u)
            uint32_t sc, m;
            if (j < 4) {
                sc = SB(j) & 63;
                m = SB(j + 4) & 63;
            } else {
                sc = (SB(j + 4) & 15) | ((SB(j - 4) >> 6) << 4);
                m = (SB(j + 4) >> 4) | ((SB(j) >> 6) << 4);
            }
#undef SB
            const float dl = __fmul_rn(h2f(r.head.x), (float)sc);
            const float ml = __fmul_rn(h2f(r.head.x >> 16), (float)m);
            const int sh = 4 * (j & 1);
#pragma unroll
            for (int i = 0; i < 4; i++) {
                v[i] = __fsub_rn(__fmul_rn(dl, (float)((r.q.x >> (8 * i + sh)) & 15)), ml);
                v[4 + i] = __fsub_rn(__fmul_rn(dl, (float)((r.q.y >> (8 * i + sh)) & 15)), ml);
            }
        } else { /* IQ2_XXS */
            const int l = (int)((e0 >> 3) & 3);
            const float db = __fmul_rn(__fmul_rn(h2f(r.d), 0.5f + (float)(r.B >> 28)), 0.25f);
            const uint64_t gv = grid[r.idx];
            const uint32_t signs = ksign((r.B >> (7 * l)) & 127);
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const float a = __fmul_rn(db, (float)((gv >> (8 * j)) & 255));
                v[j] = ((signs >> j) & 1) ? -a : a;
            }
        }
        return make_uint4(pack_h16(v[0], v[1]), pack_h16(v[2], v[3]), pack_h16(v[4], v[5]), pack_h16(v[6], v[7]));
    }
}

/* ---- tile assignment ---------------------------------------------------------- */

struct tile_t {
    int64_t r0, r1;   /* token rows [r0, r1) */
    const uint8_t *w; /* matrix */
};

/* Dense: token tile mt. Grouped: the mt-th (expert, token tile) pair in
 * expert order, found with a block scan over ceil(count_e / BM). Returns
 * false for an idle CTA (uniform over the CTA). Must be called by all
 * threads. */
template <int BM, bool G> __device__ __forceinline__ bool find_tile(const gemm_args &a, int64_t mt, tile_t *t) {
    if constexpr (!G) {
        t->r0 = mt * BM;
        t->r1 = min(a.n_tok, t->r0 + BM);
        t->w = a.w;
        return t->r0 < t->r1;
    } else {
        __shared__ int s_warp[kThreads / 32];
        __shared__ int s_found[2];
        const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
        const int per = (a.n_expert + kThreads - 1) / kThreads;
        const int e_lo = min(a.n_expert, tid * per), e_hi = min(a.n_expert, e_lo + per);
        int cnt = 0;
        for (int e = e_lo; e < e_hi; e++) {
            const int c = __ldg(a.offs + e + 1) - __ldg(a.offs + e);
            cnt += c > 0 ? (c + BM - 1) / BM : 0;
        }
        int incl = cnt;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const int v = __shfl_up_sync(0xffffffffu, incl, o);
            if (lane >= o) incl += v;
        }
        if (lane == 31) s_warp[warp] = incl;
        if (tid == 0) s_found[0] = -1;
        __syncthreads();
        int base = 0;
        for (int w = 0; w < warp; w++) base += s_warp[w];
        const int excl = base + incl - cnt;
        if (mt >= excl && mt < excl + cnt) {
            int left = (int)mt - excl;
            for (int e = e_lo; e < e_hi; e++) {
                const int c = __ldg(a.offs + e + 1) - __ldg(a.offs + e);
                const int nt = c > 0 ? (c + BM - 1) / BM : 0;
                if (left < nt) {
                    s_found[0] = e;
                    s_found[1] = left;
                    break;
                }
                left -= nt;
            }
        }
        __syncthreads();
        const int e = s_found[0];
        if (e < 0) return false;
        const int64_t beg = __ldg(a.offs + e), end = __ldg(a.offs + e + 1);
        t->r0 = beg + (int64_t)s_found[1] * BM;
        t->r1 = min(end, t->r0 + BM);
        t->w = (const uint8_t *)a.tab[a.tab_off + e];
        return true;
    }
}

/* ---- tensor-core kernel ------------------------------------------------------- */

__device__ __forceinline__ void ldsm_x4(uint32_t *r, const void *p) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
}

__device__ __forceinline__ void mma_f16(float *c, const uint32_t *a, const uint32_t *b) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

constexpr int kStages = 3; /* float32 X stages in flight (cp.async ring) */
template <int BM, int BN> constexpr size_t tc_smem() {
    return (size_t)kStages * BM * kBK * 4 + (size_t)2 * (BM + BN) * kLds * 2;
}

template <int T, int BM, int BN, bool G>
__global__ void __launch_bounds__(kThreads, (BM * BN <= 128 * 128 && BN <= 128) ? 2 : 1)
    k_gemm_tc(const __grid_constant__ gemm_args a, const __grid_constant__ typename grid_of<T>::type gt) {
    V4F_PDL_ENTRY();
    constexpr int WARPS_M = 2, WARPS_N = 4;
    constexpr int WM = BM / WARPS_M, WN = BN / WARPS_N;
    constexpr int MT = WM / 16, NT = WN / 8;
    constexpr int UPR = kBK / 8;                  /* units per tile row */
    constexpr int XU = BM * UPR / kThreads;       /* X units per thread */
    constexpr int WU = BN * UPR / kThreads;       /* W units per thread */
    static_assert(XU >= 1 && WU >= 1 && NT % 2 == 0, "tile shape");

    extern __shared__ __align__(16) uint8_t smem[];
    float *xraw = (float *)smem;                                      /* [kStages][BM * kBK] */
    __half *sx = (__half *)(xraw + kStages * BM * kBK); /* [2][BM][kLds] */
    __half *sw = sx + 2 * BM * kLds;                            /* [2][BN][kLds] */
    __shared__ uint64_t s_grid[T == V4F_TYPE_IQ2_XXS ? 256 : 1];
    if constexpr (T == V4F_TYPE_IQ2_XXS)
        for (int i = threadIdx.x; i < 256; i += kThreads) s_grid[i] = gt.v[i];
    __syncthreads();

    tile_t t;
    if (!find_tile<BM, G>(a, blockIdx.x, &t)) return;
    const int64_t n0 = (int64_t)blockIdx.y * BN;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp / WARPS_N, wn = warp % WARPS_N;
    const int64_t nrow = t.r1 - t.r0, ncol = min((int64_t)BN, a.n_out - n0);
    const int64_t nsteps = a.n_in / kBK;

    /* per-thread unit sources (rows past the end re-read the last valid row).
     * X unit u (row u / UPR, elements 8 (u % UPR)..) sits at xraw + 8u of its
     * stage: each thread converts exactly the bytes it copied itself, so the
     * cp.async ring needs no barrier of its own. */
    const float *xsrc[XU];
    const uint8_t *wsrc[WU];
#pragma unroll
    for (int i = 0; i < XU; i++) {
        const int u = tid + i * kThreads;
        xsrc[i] = a.x + (t.r0 + min((int64_t)(u / UPR), nrow - 1)) * a.ldx + 8 * (u % UPR);
    }
#pragma unroll
    for (int i = 0; i < WU; i++) {
        const int u = tid + i * kThreads;
        wsrc[i] = t.w + (uint64_t)(n0 + min((int64_t)(u / UPR), ncol - 1)) * a.row_bytes;
    }

    wraw<T> wr[WU];
    auto xissue = [&](int64_t step) { /* always commits a group (maybe empty) */
        if (step < nsteps) {
            float *st = xraw + (int)(step % kStages) * BM * kBK;
#pragma unroll
            for (int i = 0; i < XU; i++) {
                const int u = tid + i * kThreads;
                cp_async16(st + 8 * u, xsrc[i] + step * kBK);
                cp_async16(st + 8 * u + 4, xsrc[i] + step * kBK + 4);
            }
        }
        cp_async_commit();
    };
    auto wfetch = [&](int64_t step) {
#pragma unroll
        for (int i = 0; i < WU; i++) wload<T>(wsrc[i], step * kBK + 8 * ((tid + i * kThreads) % UPR), wr[i]);
    };
    auto convert = [&](int buf, int64_t step) {
        const float *st = xraw + (int)(step % kStages) * BM * kBK;
#pragma unroll
        for (int i = 0; i < XU; i++) {
            const int u = tid + i * kThreads;
            const float4 p = *(const float4 *)(st + 8 * u), q = *(const float4 *)(st + 8 * u + 4);
            const uint4 v = make_uint4(pack_h16(p.x, p.y), pack_h16(p.z, p.w), pack_h16(q.x, q.y), pack_h16(q.z, q.w));
            *(uint4 *)(sx + (buf * BM + u / UPR) * kLds + 8 * (u % UPR)) = v;
        }
#pragma unroll
        for (int i = 0; i < WU; i++) {
            const int u = tid + i * kThreads;
            *(uint4 *)(sw + (buf * BN + u / UPR) * kLds + 8 * (u % UPR)) =
                wdeq<T>(wr[i], step * kBK + 8 * (u % UPR), s_grid);
        }
    };

    float acc[MT][NT][4];
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int k = 0; k < 4; k++) acc[i][j][k] = 0.f;

    /* prologue: X stages 0..2 in flight, W of step 0 in registers */
    xissue(0);
    xissue(1);
    wfetch(0);
    cp_async_wait<1>(); /* stage 0 */
    convert(0, 0);
    xissue(2);
    if (nsteps > 1) wfetch(1);
    __syncthreads();
    for (int64_t s = 0; s < nsteps; s++) {
        const int buf = (int)(s & 1);
        const __half *bx = sx + buf * BM * kLds, *bw = sw + buf * BN * kLds;
#pragma unroll
        for (int kk = 0; kk < kBK; kk += 16) {
            uint32_t af[MT][4], bfr[NT][2];
#pragma unroll
            for (int i = 0; i < MT; i++)
                ldsm_x4(af[i], bx + (wm * WM + i * 16 + (lane & 15)) * kLds + kk + (lane >> 4) * 8);
#pragma unroll
            for (int j = 0; j < NT / 2; j++) {
                uint32_t r[4];
                ldsm_x4(r, bw + (wn * WN + j * 16 + (lane & 7) + (lane >> 4) * 8) * kLds + kk + ((lane >> 3) & 1) * 8);
                bfr[2 * j][0] = r[0], bfr[2 * j][1] = r[1];
                bfr[2 * j + 1][0] = r[2], bfr[2 * j + 1][1] = r[3];
            }
#pragma unroll
            for (int i = 0; i < MT; i++)
#pragma unroll
                for (int j = 0; j < NT; j++) mma_f16(acc[i][j], af[i], bfr[j]);
        }
        if (s + 1 < nsteps) {
            cp_async_wait<1>(); /* stage s + 1 (stage s + 2 may stay in flight) */
            convert(buf ^ 1, s + 1);
            xissue(s + 3);
            if (s + 2 < nsteps) wfetch(s + 2);
        }
        __syncthreads();
    }
    cp_async_wait<0>();

    /* c0, c1: row lane/4, cols 2(lane%4) + {0, 1}; c2, c3: row + 8 */
#pragma unroll
    for (int i = 0; i < MT; i++) {
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int64_t rl = wm * WM + i * 16 + (lane >> 2) + 8 * h;
            if (rl >= nrow) continue;
            float *yr = a.y + (t.r0 + rl) * a.ldy + n0;
#pragma unroll
            for (int j = 0; j < NT; j++) {
                const int64_t cl = wn * WN + j * 8 + 2 * (lane & 3);
                const float v0 = acc[i][j][2 * h], v1 = acc[i][j][2 * h + 1];
                if (cl + 1 < ncol && ((uintptr_t)(yr + cl) & 7) == 0) {
                    *(float2 *)(yr + cl) = make_float2(v0, v1);
                } else {
                    if (cl < ncol) yr[cl] = v0;
                    if (cl + 1 < ncol) yr[cl + 1] = v1;
                }
            }
        }
    }
}

/* ---- exact (float32) kernel ---------------------------------------------------- */

constexpr int kEM = 64, kEN = 64;

template <int T, bool G>
__global__ void __launch_bounds__(kThreads)
    k_gemm_exact(const __grid_constant__ gemm_args a, const __grid_constant__ typename grid_of<T>::type gt) {
    V4F_PDL_ENTRY();
    __shared__ __align__(16) float sx[kBK][kEM + 4];
    __shared__ __align__(16) float sw[kBK][kEN + 4];
    __shared__ uint64_t s_grid[T == V4F_TYPE_IQ2_XXS ? 256 : 1];
    if constexpr (T == V4F_TYPE_IQ2_XXS)
        for (int i = threadIdx.x; i < 256; i += kThreads) s_grid[i] = gt.v[i];
    __syncthreads();

    tile_t t;
    if (!find_tile<kEM, G>(a, blockIdx.x, &t)) return;
    const int64_t n0 = (int64_t)blockIdx.y * kEN;
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const int64_t nrow = t.r1 - t.r0, ncol = min((int64_t)kEN, a.n_out - n0);
    /* loader: row lr (of X and of W), 8 elements from k-chunk lc */
    const int lr = tid & 63, lc = tid >> 6;
    const float *xrow = a.x + (t.r0 + min((int64_t)lr, nrow - 1)) * a.ldx;
    const uint8_t *wrow = t.w + (uint64_t)(n0 + min((int64_t)lr, ncol - 1)) * a.row_bytes;

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.f;

    for (int64_t k0 = 0; k0 < a.n_in; k0 += kBK) {
        float xv[8], wv[8];
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const int64_t k = k0 + 8 * lc + i;
            const bool in = k < a.n_in;
            xv[i] = in ? xrow[k] : 0.f;
            wv[i] = in ? ref_elem<T>(wrow, k, s_grid) : 0.f;
        }
        __syncthreads(); /* previous step's reads done; s_grid ready */
#pragma unroll
        for (int i = 0; i < 8; i++) {
            sx[8 * lc + i][lr] = xv[i];
            sw[8 * lc + i][lr] = wv[i];
        }
        __syncthreads();
        float part[4][4];
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) part[i][j] = 0.f;
#pragma unroll 8
        for (int k = 0; k < kBK; k++) {
            const float4 xa = *(const float4 *)&sx[k][4 * ty];
            const float4 wb = *(const float4 *)&sw[k][4 * tx];
            const float xs[4] = {xa.x, xa.y, xa.z, xa.w}, ws[4] = {wb.x, wb.y, wb.z, wb.w};
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) part[i][j] = fmaf(xs[i], ws[j], part[i][j]);
        }
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) acc[i][j] += part[i][j];
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int64_t rl = 4 * ty + i;
        if (rl >= nrow) continue;
        float *yr = a.y + (t.r0 + rl) * a.ldy + n0;
#pragma unroll
        for (int j = 0; j < 4; j++)
            if (4 * tx + j < ncol) yr[4 * tx + j] = acc[i][j];
    }
}

/* ---- host side ------------------------------------------------------------------ */

/* Tile configurations of the tensor-core kernel. */
enum { CFG_128x128 = 1, CFG_128x256 = 2, CFG_64x128 = 3, CFG_64x256 = 4 };

/* V4F_GEMM_TILE (1..4) forces a configuration (benchmarks); unset or 0 =
 * automatic. Read per call (a short environment scan) so a benchmark can
 * switch it. */
static int forced_cfg(void) {
    const char *s = getenv("V4F_GEMM_TILE");
    const int k = s ? atoi(s) : 0;
    return k >= 1 && k <= 4 ? k : 0;
}

template <int T, int BM, int BN, bool G>
static v4f_status launch_tc(v4f_cuda *c, const gemm_args &a, const typename grid_of<T>::type &gt, int64_t m_tiles,
                            v4f_err *err) {
    const size_t smem = tc_smem<BM, BN>();
    /* Raise this kernel's dynamic shared-memory limit once per device (not a
     * stream operation; the first launch of each configuration, in practice
     * before any graph capture). One bit per device < 64. */
    static unsigned long long done = 0;
    const unsigned long long bit = c->device < 64 ? 1ull << c->device : 0;
    if (smem > 48 * 1024 && !(__atomic_load_n(&done, __ATOMIC_RELAXED) & bit)) {
        CUDA_TRY(cudaFuncSetAttribute(k_gemm_tc<T, BM, BN, G>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        __atomic_fetch_or(&done, bit, __ATOMIC_RELAXED);
    }
    const dim3 grid((unsigned)m_tiles, (unsigned)((a.n_out + BN - 1) / BN));
    v4f_launch(k_gemm_tc<T, BM, BN, G>, grid, kThreads, smem, c->stream, a, gt);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

/* Upper bound of the (expert, tile) pairs: sum_e ceil(c_e / bm) <=
 * (max_rows + n_expert (bm - 1)) / bm, and <= max_rows (each has a row). */
static int64_t grouped_tiles(int64_t max_rows, int n_expert, int bm) {
    int64_t t = (max_rows + (int64_t)n_expert * (bm - 1)) / bm;
    return t < max_rows ? t : max_rows;
}

template <int T>
static v4f_status launch_type(v4f_cuda *c, const gemm_args &a, bool grouped, int64_t rows, bool exact, v4f_err *err) {
    typename grid_of<T>::type gt;
    if constexpr (T == V4F_TYPE_IQ2_XXS)
        memcpy(gt.v, v4f_quant_iq2xxs_grid, sizeof gt.v);
    else
        gt.v[0] = 0;
    const int64_t n_tiles_128 = (a.n_out + 127) / 128;
    if (exact) {
        const int64_t mt = grouped ? grouped_tiles(rows, a.n_expert, kEM) : (rows + kEM - 1) / kEM;
        const dim3 grid((unsigned)mt, (unsigned)((a.n_out + kEN - 1) / kEN));
        if (grouped)
            v4f_launch(k_gemm_exact<T, true>, grid, kThreads, 0, c->stream, a, gt);
        else
            v4f_launch(k_gemm_exact<T, false>, grid, kThreads, 0, c->stream, a, gt);
        CUDA_TRY_LAUNCH();
        return V4F_OK;
    }
    int cfg = forced_cfg();
    if (cfg == 0) {
        /* measured on H100 (docs/PERF_NOTES.md, "CUDA prefill GEMM (session
         * 3)"): 128 x 128 wins on the large dense shapes (128 x 256 within
         * noise), 64 x 128 on the routed experts and when 128 x 128 leaves
         * SMs idle */
        if (grouped)
            cfg = CFG_64x128;
        else if (rows <= 64 || ((rows + 127) / 128) * n_tiles_128 < (int64_t)c->sm_count)
            cfg = CFG_64x128;
        else
            cfg = CFG_128x128;
    }
    if (T == V4F_TYPE_F32 && cfg == CFG_128x256) cfg = CFG_128x128; /* register budget */
    if (T == V4F_TYPE_F32 && cfg == CFG_64x256) cfg = CFG_64x128;
    auto tiles = [&](int bm) { return grouped ? grouped_tiles(rows, a.n_expert, bm) : (rows + bm - 1) / bm; };
    if (grouped) {
        switch (cfg) {
        case CFG_128x128: return launch_tc<T, 128, 128, true>(c, a, gt, tiles(128), err);
        case CFG_128x256: if constexpr (T != V4F_TYPE_F32) return launch_tc<T, 128, 256, true>(c, a, gt, tiles(128), err);
                          return V4F_STATUS_INVALID_ARG;
        case CFG_64x256: if constexpr (T != V4F_TYPE_F32) return launch_tc<T, 64, 256, true>(c, a, gt, tiles(64), err);
                         return V4F_STATUS_INVALID_ARG;
        default: return launch_tc<T, 64, 128, true>(c, a, gt, tiles(64), err);
        }
    }
    switch (cfg) {
    case CFG_128x128: return launch_tc<T, 128, 128, false>(c, a, gt, tiles(128), err);
    case CFG_128x256: if constexpr (T != V4F_TYPE_F32) return launch_tc<T, 128, 256, false>(c, a, gt, tiles(128), err);
                      return V4F_STATUS_INVALID_ARG;
    case CFG_64x256: if constexpr (T != V4F_TYPE_F32) return launch_tc<T, 64, 256, false>(c, a, gt, tiles(64), err);
                     return V4F_STATUS_INVALID_ARG;
    default: return launch_tc<T, 64, 128, false>(c, a, gt, tiles(64), err);
    }
}

static v4f_status dispatch(v4f_cuda *c, uint32_t type, const gemm_args &a, bool grouped, int64_t rows, bool exact,
                           v4f_err *err) {
    switch (type) {
    case V4F_TYPE_F32: return launch_type<V4F_TYPE_F32>(c, a, grouped, rows, exact, err);
    case V4F_TYPE_F16: return launch_type<V4F_TYPE_F16>(c, a, grouped, rows, exact, err);
    case V4F_TYPE_BF16: return launch_type<V4F_TYPE_BF16>(c, a, grouped, rows, exact, err);
    case V4F_TYPE_Q8_0: return launch_type<V4F_TYPE_Q8_0>(c, a, grouped, rows, exact, err);
    case V4F_TYPE_Q2_K: return launch_type<V4F_TYPE_Q2_K>(c, a, grouped, rows, exact, err);
    case V4F_TYPE_Q4_K: return launch_type<V4F_TYPE_Q4_K>(c, a, grouped, rows, exact, err);
    default: return launch_type<V4F_TYPE_IQ2_XXS>(c, a, grouped, rows, exact, err);
    }
}

/* Shape checks shared by both entry points (data not looked at). */
static v4f_status check_shape(const v4f_cuda_mat *w, v4f_err *err) {
    uint64_t packed = 0;
    if (!w) return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda gemm: NULL matrix");
    if (!v4f_cuda_type_supported(w->type))
        return v4f_err_set(err, V4F_STATUS_UNSUPPORTED, "cuda gemm: no kernels for type %s", v4f_type_name(w->type));
    if (w->n_in <= 0 || w->n_out < 0 || w->n_out > ((int64_t)1 << 31) ||
        !v4f_type_row_bytes(w->type, (uint64_t)w->n_in, &packed))
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda gemm: bad %s matrix shape n_in %lld n_out %lld",
                           v4f_type_name(w->type), (long long)w->n_in, (long long)w->n_out);
    if (w->row_bytes < packed)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda gemm: row_bytes %llu < packed row %llu",
                           (unsigned long long)w->row_bytes, (unsigned long long)packed);
    return V4F_OK;
}

static bool tc_ok(const v4f_cuda_mat *w, bool check_data, const float *X, int64_t ldx) {
    /* f16 operands: F32 and BF16 weights may lie outside the f16 range (no
     * published tensor uses them for a matrix): exact kernel */
    return w->type != V4F_TYPE_F32 && w->type != V4F_TYPE_BF16 && w->n_in % kBK == 0 && w->row_bytes % 16 == 0 && (!check_data || (uintptr_t)w->data % 16 == 0) &&
           (uintptr_t)X % 16 == 0 && ldx % 4 == 0;
}

} /* namespace */

v4f_status v4f_cuda_matmul(v4f_cuda *c, const v4f_cuda_mat *w, const float *X, int64_t ldx, int64_t n_tok, float *Y,
                           int64_t ldy, bool exact, v4f_err *err) {
    v4f_status st = check_shape(w, err);
    if (st != V4F_OK) return st;
    if (!w->data || !X || !Y || n_tok < 0 || ldx < w->n_in || ldy < w->n_out || n_tok > ((int64_t)1 << 31))
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda gemm: bad arguments (n_tok %lld, ldx %lld, ldy %lld)",
                           (long long)n_tok, (long long)ldx, (long long)ldy);
    if (n_tok == 0 || w->n_out == 0) return V4F_OK;
    gemm_args a;
    memset(&a, 0, sizeof a);
    a.w = (const uint8_t *)w->data;
    a.row_bytes = w->row_bytes;
    a.n_in = w->n_in;
    a.n_out = w->n_out;
    a.x = X;
    a.ldx = ldx;
    a.y = Y;
    a.ldy = ldy;
    a.n_tok = n_tok;
    CUDA_TRY_DEVICE(c);
    return dispatch(c, w->type, a, false, n_tok, exact || !tc_ok(w, true, X, ldx), err);
}

v4f_status v4f_cuda_matmul_grouped(v4f_cuda *c, const v4f_cuda_mat *shape, const void *const *tab, int32_t tab_off,
                                   const int32_t *offs, int n_expert, int64_t max_rows, const float *X, int64_t ldx,
                                   float *Y, int64_t ldy, bool exact, v4f_err *err) {
    v4f_status st = check_shape(shape, err);
    if (st != V4F_OK) return st;
    if (!tab || !offs || !X || !Y || tab_off < 0 || n_expert < 1 || max_rows < 0 || ldx < shape->n_in ||
        ldy < shape->n_out || max_rows > ((int64_t)1 << 31))
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG,
                           "cuda gemm grouped: bad arguments (n_expert %d, max_rows %lld, tab_off %d, ldx %lld, ldy %lld)",
                           n_expert, (long long)max_rows, (int)tab_off, (long long)ldx, (long long)ldy);
    if (max_rows == 0 || shape->n_out == 0) return V4F_OK;
    gemm_args a;
    memset(&a, 0, sizeof a);
    a.row_bytes = shape->row_bytes;
    a.n_in = shape->n_in;
    a.n_out = shape->n_out;
    a.x = X;
    a.ldx = ldx;
    a.y = Y;
    a.ldy = ldy;
    a.tab = tab;
    a.tab_off = tab_off;
    a.offs = offs;
    a.n_expert = n_expert;
    CUDA_TRY_DEVICE(c);
    return dispatch(c, shape->type, a, true, max_rows, exact || !tc_ok(shape, false, X, ldx), err);
}
