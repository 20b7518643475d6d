/*
 * cuda_gemm.cu - batched matrix multiplication for prefill: Y = X W^T for
 * n_tok rows of float32 activations X and a weight matrix W in any of the
 * seven weight formats (F32, F16, BF16, Q8_0, Q2_K, Q4_K, IQ2_XXS), dense
 * (v4f_cuda_matmul), block-diagonal (v4f_cuda_matmul_blockdiag: several
 * independent row slices of one matrix in one launch) or grouped by routed
 * expert with the grouping read on the device (v4f_cuda_matmul_grouped).
 * API in cuda_backend.h, section "batched matmul".
 *
 * Kernels, chosen by the caller's `exact` flag and the shape:
 *
 *  - k_gemm_tc (tensor cores): a CTA computes BNW output columns x BMT
 *    token rows of Y with 8 warps and mma.sync m16n8k16 (f16 operands,
 *    float32 accumulators). W is the A operand. The warps form a WN x
 *    (8 / WN) grid: each owns BNW / WN rows of W and BMT / (8 / WN) tokens
 *    (WN = 8: every W row dequantized once, all tokens per warp; WN = 4:
 *    each W row dequantized by two warps, half the X fragment reads per
 *    MMA). K is permuted (kpos) so that the k slots a thread holds in its
 *    fragments at a step stand for 8 consecutive elements (IQ2_XXS and
 *    grouped Q4_K: in four consecutive steps the four units of one
 *    32-element group, grouped Q2_K: in two steps the two units of one
 *    16-element sub-block, whose header is then decoded once); each
 *    thread dequantizes whole 8-element units of its own rows straight
 *    into A fragments (no f16 W tile, no ldmatrix), and reads its X
 *    fragment with one 16-byte load from the f16 X tile. Configurations
 *    (W rows x tokens, warps, X staging; CFG_*): 256 x 64 8x1 for the routed
 *    experts (about 48 rows per expert; Q4_K, and Q2_K from 32 rows per
 *    expert, with X through registers),
 *    128 x 128 4x2 with X through registers for large Q8_0 grids, 128 x 128
 *    8x1 for other dense shapes, 128 x 64 8x1 for small grids.
 *    K steps by 32, with one barrier per step. W (and X unless XR) arrive
 *    through cp.async rings committed in the same groups, PD steps ahead:
 *      X, cp.async (XR false): float32, PD stages; each thread converts to
 *         f16 exactly the bytes it copied itself (no barrier of its own).
 *      X, registers (XR true): each thread loads its float32 units of step
 *         s + 2 at the end of step s and stores them as f16 at the end of
 *         step s + 1 (no float32 stage in shared memory: its copy, read and
 *         conversion were a third of the dense tile's shared-memory
 *         traffic).
 *         Either way, token rows past the tile's end are neither loaded
 *         nor converted (their f16 rows stay zero) and their MMAs are
 *         skipped (8-row granularity).
 *      W: the raw weight bytes, in stages of KC elements per row (one
 *         superblock for the K-quants and IQ2_XXS, 32 for Q8_0 and F16):
 *         per row, the CPR 16-byte chunks that cover the stage's bytes (a
 *         row is 16-byte aligned, a superblock need not be). A stage rides
 *         in the copy group of its first step, so it is complete (every
 *         thread waited on its own copies, then a barrier) when that step's
 *         MMAs read it, PD - 1 steps after its issue; NW buffers keep the
 *         one being read apart from those in flight.
 *    Dequantization (wdeq) follows the reference order of quant_ref.c (the
 *    same float32 operations, so the same floats), then rounds to f16;
 *    Q8_0 multiplies in f16 (d q is exact in float32, so one f16 rounding
 *    of it is the same number). Byte-to-float conversions use the exact
 *    2^23 trick instead of I2F;
 *    IQ2_XXS and Q2_K values take only 3 and 4 magnitudes per unit of 8
 *    elements, which are rounded once and picked by byte permutes (IQ2_XXS
 *    signs by XOR of the f16 sign bits).
 *    Tile order: dense launches run token tiles fastest (the CTAs sharing a
 *    weight tile run together; W streams from DRAM about once, X is re-read
 *    from L2); grouped launches run output tiles fastest (an expert's
 *    weight tile serves one token tile, and its X rows come from DRAM once
 *    and from L2 for the other output tiles).
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
 * Grouped launches: the grid enumerates (expert, token tile) pairs up to a
 * host bound derived from max_rows; each CTA finds its pair with a block
 * scan over the per-expert tile counts from offs (device), so no host
 * synchronisation is needed (graph capture). Idle CTAs exit at once.
 * Block-diagonal launches: grid.z = group.
 *
 * The IQ2_XXS grid (2 KB) is passed by value as a kernel parameter, copied
 * per launch from the CPU table (v4f_quant_iq2xxs_grid), so this file needs
 * no device state of its own; the tensor-core kernels build a table of
 * byte-permute selectors from it in shared memory.
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
constexpr int kBK = 32; /* K step of both kernels */

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

/* The IQ2_XXS grid bytes take 3 values (quant_internal.h); the
 * tensor-core kernel relies on it (checked on the host, iq2_grid_ok). */
constexpr uint32_t kIq2Mag[3] = {0x08, 0x19, 0x2b};
/* the same as floats (scalar constants: device code may read them) */
constexpr float kIq2M0 = (float)kIq2Mag[0], kIq2M1 = (float)kIq2Mag[1], kIq2M2 = (float)kIq2Mag[2];

struct gemm_args {
    const uint8_t *w; /* dense: the matrix */
    uint64_t row_bytes;
    int64_t n_in, n_out;
    const float *x;
    int64_t ldx;
    float *y;
    int64_t ldy;
    int64_t n_tok; /* dense: rows of X and Y */
    /* block-diagonal: per blockIdx.z, W advances wz bytes, X xz and Y yz floats */
    uint64_t wz;
    int64_t xz, yz;
    /* grouped */
    const void *const *tab;
    int32_t tab_off;
    const int32_t *offs;
    int n_expert;
};

/* ---- small device helpers -------------------------------------------------- */

__device__ __forceinline__ float h2f(uint32_t bits) { return __half2float(__ushort_as_half((unsigned short)(bits & 0xffffu))); }
__device__ __forceinline__ uint32_t ld8(const uint8_t *p) { return __ldg(p); }
__device__ __forceinline__ void cp_async16(void *smem_dst, const void *gmem_src) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem_dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem_src) : "memory");
}
/* 16 zero bytes through the copy unit (no global read) */
__device__ __forceinline__ void cp_async16_zero(void *smem_dst, const void *gmem_any) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem_dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, 0;\n" ::"r"(s), "l"(gmem_any) : "memory");
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
/* Byte i of w as a float, exactly: (2^23 + b) - 2^23 (no I2F). */
__device__ __forceinline__ float ubyte_f(uint32_t w, int i) {
    return __uint_as_float(__byte_perm(w, 0x4b000000u, 0x7440 + i)) - 8388608.f;
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

/* ---- tensor-core path: staged raw weights ------------------------------------
 * A W stage holds KC elements of each row of the tile: the CPR 16-byte
 * chunks from ws = bs & ~15, where bs is the stage's first byte in the row
 * (rows are 16-byte aligned). window_ok checks, for every stage offset
 * o = bs % 16 the format can produce, that the chunks cover [o, o + L)
 * (L = the stage's bytes) and end at or before the 16-byte rounded end of
 * those bytes, so no copy leaves the row. n_in is a multiple of KC (a
 * superblock for the K-quants; 32 otherwise, the fast path's condition). */
template <int T> struct wfmt;
template <> struct wfmt<V4F_TYPE_F16> {
    static constexpr int KC = 32, CPR = 4, BE = 1, BB = 2;
};
template <> struct wfmt<V4F_TYPE_Q8_0> {
    static constexpr int KC = 32, CPR = 3, BE = 32, BB = 34;
};
template <> struct wfmt<V4F_TYPE_Q2_K> {
    static constexpr int KC = 256, CPR = 6, BE = 256, BB = 84;
};
template <> struct wfmt<V4F_TYPE_Q4_K> {
    static constexpr int KC = 256, CPR = 9, BE = 256, BB = 144;
};
template <> struct wfmt<V4F_TYPE_IQ2_XXS> {
    static constexpr int KC = 256, CPR = 5, BE = 256, BB = 66;
};
template <int T> constexpr bool window_ok() {
    typedef wfmt<T> F;
    const int L = F::KC / F::BE * F::BB;
    for (int j = 0; j < 16; j++) {
        const int o = (j * L) % 16;
        if (16 * F::CPR < o + L || 16 * F::CPR > (o + L + 15) / 16 * 16) return false;
    }
    return true;
}
static_assert(window_ok<V4F_TYPE_F16>() && window_ok<V4F_TYPE_Q8_0>() && window_ok<V4F_TYPE_Q2_K>() &&
                  window_ok<V4F_TYPE_Q4_K>() && window_ok<V4F_TYPE_IQ2_XXS>(),
              "weight stage windows");

/* first byte of stage j in a row */
template <int T> __device__ __forceinline__ uint64_t stage_byte(int j) {
    typedef wfmt<T> F;
    return (uint64_t)j * (uint64_t)(F::KC / F::BE * F::BB);
}

/* IQ2_XXS table in shared memory: sel[idx] holds the byte-permute
 * selectors of the 4 element pairs of grid entry idx (.x pairs 0 and 1 in
 * its halves, .y pairs 2 and 3) picking from the packed magnitudes
 * {m0, m1 | m2, 0}. */
struct iq2_tab_t {
    uint2 sel[256];
};
struct no_tab_t {
    int unused;
};
template <int T> struct tab_of {
    typedef no_tab_t type;
};
template <> struct tab_of<V4F_TYPE_IQ2_XXS> {
    typedef iq2_tab_t type;
};

__device__ __forceinline__ __half2 u2h2(uint32_t v) { return *(const __half2 *)&v; }
__device__ __forceinline__ uint32_t h22u(__half2 v) { return *(const uint32_t *)&v; }
__device__ __forceinline__ uint32_t lds16(const uint8_t *p) { return *(const unsigned short *)p; }
__device__ __forceinline__ uint32_t lds32(const uint8_t *p) { return *(const uint32_t *)p; }

/* IQ2_XXS group g of a staged superblock (p: its first byte): its three
 * magnitudes d_b {8, 25, 43} as f16 pairs t0 = {m0, m1}, t1 = {m2, 0}, each
 * the reference float (quant_ref.c order) rounded to f16. Shared by the
 * group's four 8-element units (the sign/scale word, iq2_aux, is re-read
 * from shared memory per unit: holding it too cost the grouped 256 x 64
 * kernel 24 bytes of spills). */
struct iq2_hdr {
    uint32_t t0, t1;
};
__device__ __forceinline__ uint32_t iq2_aux(const uint8_t *p, int g) {
    return lds16(p + 6 + 8 * g) | lds16(p + 8 + 8 * g) << 16;
}
__device__ __forceinline__ iq2_hdr iq2_head(const uint8_t *p, int g) {
    iq2_hdr h;
    const float db = __fmul_rn(__fmul_rn(h2f(lds16(p)), 0.5f + ubyte_f(iq2_aux(p, g) >> 28, 0)), 0.25f);
    h.t0 = pack_h16(__fmul_rn(db, kIq2M0), __fmul_rn(db, kIq2M1));
    h.t1 = pack_h16(__fmul_rn(db, kIq2M2), 0.f);
    return h;
}
/* Unit l (elements 8l .. 8l + 7) of that group as 4 packed f16 pairs. */
__device__ __forceinline__ uint4 iq2_unit(const uint8_t *p, int g, int l, const iq2_hdr &h, const iq2_tab_t &tab) {
    const uint2 sel = tab.sel[p[2 + 8 * g + l]];
    /* sign bits s_j of the 8 elements; pair p's f16 sign mask (bit 15 =
     * s_2p, bit 31 = s_2p+1) is (s * (2^(15-2p) + 2^(30-2p))) & 0x80008000:
     * the two shifted copies occupy disjoint bits, so no carries. The
     * selectors' nibbles are <= 5 (bit 3 clear), as v4f_prmt needs. */
    const uint32_t sg = ksign((iq2_aux(p, g) >> (7 * l)) & 127);
    return make_uint4(v4f_prmt(h.t0, h.t1, sel.x) ^ ((sg * 0x40008000u) & 0x80008000u),
                      v4f_prmt(h.t0, h.t1, sel.x >> 16) ^ ((sg * 0x10002000u) & 0x80008000u),
                      v4f_prmt(h.t0, h.t1, sel.y) ^ ((sg * 0x04000800u) & 0x80008000u),
                      v4f_prmt(h.t0, h.t1, sel.y >> 16) ^ ((sg * 0x01000200u) & 0x80008000u));
}

/* Q2_K 16-element sub-block sb of a staged superblock (p: its first
 * byte): the four values q = 0..3 take, dl q - ml in the reference's
 * float32 operations, rounded to f16: {v0, v1}, {v2, v3}. Shared by the
 * sub-block's two 8-element units. */
__device__ __forceinline__ uint2 q2k_head(const uint8_t *p, int sb) {
    const uint32_t sc = p[sb], dd = lds32(p + 80);
    const float dl = __fmul_rn(h2f(dd), ubyte_f(sc & 15, 0));
    const float ml = __fmul_rn(h2f(dd >> 16), ubyte_f(sc >> 4, 0));
    return make_uint2(pack_h16(__fsub_rn(__fmul_rn(dl, 0.f), ml), __fsub_rn(__fmul_rn(dl, 1.f), ml)),
                      pack_h16(__fsub_rn(__fmul_rn(dl, 2.f), ml), __fsub_rn(__fmul_rn(dl, 3.f), ml)));
}
/* Elements [el, el + 8) (el % 8 == 0) of that superblock from their
 * sub-block's values t. */
__device__ __forceinline__ uint4 q2k_unit(const uint8_t *p, int el, uint2 t) {
    const int h = el >> 7, s = (el >> 5) & 3, l0 = el & 31;
    const uint32_t q0 = lds32(p + 16 + 32 * h + l0), q1 = lds32(p + 20 + 32 * h + l0);
    /* codes q_i in the low bits of each byte; a pair (q_a, q_b) picks
     * bytes {2 q_a, 2 q_a + 1, 2 q_b, 2 q_b + 1}: selector
     * (q_a + 256 q_b) * 34 + 0x1010 (nibbles <= 7, as v4f_prmt needs) */
    const uint32_t c0 = (q0 >> (2 * s)) & 0x03030303u, c1 = (q1 >> (2 * s)) & 0x03030303u;
    return make_uint4(v4f_prmt(t.x, t.y, (c0 & 0xffffu) * 34u + 0x1010u),
                      v4f_prmt(t.x, t.y, (c0 >> 16) * 34u + 0x1010u),
                      v4f_prmt(t.x, t.y, (c1 & 0xffffu) * 34u + 0x1010u),
                      v4f_prmt(t.x, t.y, (c1 >> 16) * 34u + 0x1010u));
}
/* Q4_K 32-element sub-block j of a staged superblock (p: its first byte):
 * its scale and min as the reference floats {dl, ml}. Shared by the
 * sub-block's four 8-element units. */
__device__ __forceinline__ float2 q4k_head(const uint8_t *p, int j) {
    const uint4 head = *(const uint4 *)p;
    /* scales[i] = byte i of head.y, head.z, head.w */
#define SB(i) ((((i) < 4 ? head.y : (i) < 8 ? head.z : head.w) >> (8 * ((i) & 3))) & 255u)
    uint32_t sc, m;
    if (j < 4) {
        sc = SB(j) & 63;
        m = SB(j + 4) & 63;
    } else {
        sc = (SB(j + 4) & 15) | ((SB(j - 4) >> 6) << 4);
        m = (SB(j + 4) >> 4) | ((SB(j) >> 6) << 4);
    }
#undef SB
    return make_float2(__fmul_rn(h2f(head.x), ubyte_f(sc, 0)), __fmul_rn(h2f(head.x >> 16), ubyte_f(m, 0)));
}
/* Elements [el, el + 8) (el % 8 == 0) of that superblock, dl q - ml. */
__device__ __forceinline__ uint4 q4k_unit(const uint8_t *p, int el, float2 dm) {
    const int j = el >> 5, l0 = el & 31;
    const uint2 q = *(const uint2 *)(p + 16 + 32 * (j >> 1) + l0);
    const int sh = 4 * (j & 1);
    const uint32_t n0 = (q.x >> sh) & 0x0f0f0f0fu, n1 = (q.y >> sh) & 0x0f0f0f0fu;
    float v[8];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        v[i] = __fsub_rn(__fmul_rn(dm.x, ubyte_f(n0, i)), dm.y);
        v[4 + i] = __fsub_rn(__fmul_rn(dm.x, ubyte_f(n1, i)), dm.y);
    }
    return make_uint4(pack_h16(v[0], v[1]), pack_h16(v[2], v[3]), pack_h16(v[4], v[5]), pack_h16(v[6], v[7]));
}

/* The run-sharing decoders of kpos<KU> for KU > 1 (IQ2_XXS, grouped
 * Q4_K: runs of 32 elements; grouped Q2_K: runs of 16): run r of a staged
 * superblock shares the header run_head gives, and run_unit is its unit l
 * (elements 8 KU r + 8 l .. + 7) as 4 packed f16 pairs. */
template <int T> struct run_hdr { /* types without runs */
    typedef int type;
};
template <> struct run_hdr<V4F_TYPE_IQ2_XXS> {
    typedef iq2_hdr type;
};
template <> struct run_hdr<V4F_TYPE_Q2_K> {
    typedef uint2 type;
};
template <> struct run_hdr<V4F_TYPE_Q4_K> {
    typedef float2 type;
};
template <int T> __device__ __forceinline__ typename run_hdr<T>::type run_head(const uint8_t *p, int r) {
    if constexpr (T == V4F_TYPE_IQ2_XXS)
        return iq2_head(p, r);
    else if constexpr (T == V4F_TYPE_Q2_K)
        return q2k_head(p, r);
    else
        return q4k_head(p, r);
}
template <int T, int KU>
__device__ __forceinline__ uint4 run_unit(const uint8_t *p, int r, int l, const typename run_hdr<T>::type &h,
                                          const typename tab_of<T>::type &tab) {
    static_assert((T == V4F_TYPE_Q2_K) == (KU == 2) && (T == V4F_TYPE_IQ2_XXS || T == V4F_TYPE_Q2_K ||
                                                         T == V4F_TYPE_Q4_K),
                  "run length of the type");
    if constexpr (T == V4F_TYPE_IQ2_XXS)
        return iq2_unit(p, r, l, h, tab);
    else if constexpr (T == V4F_TYPE_Q2_K)
        return q2k_unit(p, 8 * KU * r + 8 * l, h);
    else
        return q4k_unit(p, 8 * KU * r + 8 * l, h);
}

/* Elements [el, el + 8) of a staged row (p: the row's stage bytes, from
 * bs; el % 8 == 0, el < KC) as 4 packed f16 pairs: the reference floats
 * of quant_ref.c, rounded to f16 (launches with KU 1). Runs of KU > 1
 * units go through run_head / run_unit instead (IQ2_XXS always). */
template <int T> __device__ __forceinline__ uint4 wdeq(const uint8_t *p, int el) {
    if constexpr (T == V4F_TYPE_F16) {
        return *(const uint4 *)(p + 2 * el); /* f16 -> float -> f16 is the identity */
    } else if constexpr (T == V4F_TYPE_Q8_0) {
        /* d * q is exact in float32 (11 x 8 significant bits), so rounding
         * the float32 product to f16 equals one f16 multiplication of d by
         * q (exact in f16): q_f16 = (1024 + (q ^ 0x80)) - 1152, built by a
         * byte permute under the f16 exponent of 1024, then HMUL2. */
        const uint32_t dh = lds16(p);
        const uint8_t *q = p + 2 + el;
        uint32_t q0, q1;
        if (((uintptr_t)q & 3) == 0) {
            q0 = lds32(q);
            q1 = lds32(q + 4);
        } else {
            q0 = lds16(q) | lds16(q + 2) << 16;
            q1 = lds16(q + 4) | lds16(q + 6) << 16;
        }
        q0 ^= 0x80808080u;
        q1 ^= 0x80808080u;
        const __half2 d2 = u2h2(dh | dh << 16), off = u2h2(0x64806480u); /* {1152, 1152} */
        return make_uint4(h22u(__hmul2(__hsub2(u2h2(__byte_perm(q0, 0x64646464u, 0x4140)), off), d2)),
                          h22u(__hmul2(__hsub2(u2h2(__byte_perm(q0, 0x64646464u, 0x4342)), off), d2)),
                          h22u(__hmul2(__hsub2(u2h2(__byte_perm(q1, 0x64646464u, 0x4140)), off), d2)),
                          h22u(__hmul2(__hsub2(u2h2(__byte_perm(q1, 0x64646464u, 0x4342)), off), d2)));
    } else if constexpr (T == V4F_TYPE_Q2_K) {
        return q2k_unit(p, el, q2k_head(p, el >> 4));
    } else if constexpr (T == V4F_TYPE_Q4_K) {
        return q4k_unit(p, el, q4k_head(p, el >> 5));
    } else {
        static_assert(T < 0, "no wdeq for this type (IQ2_XXS: iq2_head / iq2_unit)");
        return make_uint4(0, 0, 0, 0);
    }
}

/* Build the IQ2_XXS table (all threads; a barrier must follow). */
__device__ __forceinline__ void iq2_tab_build(iq2_tab_t &tab, const iq2_grid_t &gt) {
    const int tid = threadIdx.x;
    for (int i = tid; i < 256; i += kThreads) {
        const uint64_t g = gt.v[i];
        uint32_t s[4];
#pragma unroll
        for (int p = 0; p < 4; p++) {
            uint32_t sel = 0;
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const uint32_t b = (uint32_t)(g >> (8 * (2 * p + h))) & 255u;
                const uint32_t c = b == kIq2Mag[0] ? 0u : b == kIq2Mag[1] ? 1u : 2u;
                sel |= ((2 * c) | (2 * c + 1) << 4) << (8 * h);
            }
            s[p] = sel;
        }
        tab.sel[i] = make_uint2(s[0] | s[1] << 16, s[2] | s[3] << 16);
    }
}

/* ---- tile assignment ---------------------------------------------------------- */

struct tile_t {
    int64_t r0, r1;   /* token rows [r0, r1) */
    const uint8_t *w; /* matrix */
    const float *x;   /* X and Y (row r at x + r ldx, y + r ldy) */
    float *y;
};

/* Dense: token tile mt of block-diagonal group blockIdx.z. Grouped: the
 * mt-th (expert, token tile) pair in expert order, found with a block scan
 * over ceil(count_e / BM). Returns false for an idle CTA (uniform over the
 * CTA). Must be called by all threads. */
template <int BM, bool G> __device__ __forceinline__ bool find_tile(const gemm_args &a, int64_t mt, tile_t *t) {
    if constexpr (!G) {
        t->r0 = mt * BM;
        t->r1 = min(a.n_tok, t->r0 + BM);
        t->w = a.w + blockIdx.z * a.wz;
        t->x = a.x + blockIdx.z * a.xz;
        t->y = a.y + blockIdx.z * a.yz;
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
        t->x = a.x;
        t->y = a.y;
        return true;
    }
}

/* ---- tensor-core kernel ------------------------------------------------------- */

/* Fragment mapping of k_gemm_tc: the k slots a thread holds in its A and B
 * fragments ({2q, 2q+1, 2q+8, 2q+9} of each k16, q = lane % 4) stand for
 * the 8 elements from kpos<KU>(s, q) (8q .. 8q + 7 of the 32-element step
 * when KU = 1), the same permutation for A and B. A: rows
 * warp WR + 16 i + lane / 4 (+ 8) of the tile, from the unit's 4 pairs
 * {.x, .y} (k16 0) and {.z, .w} (k16 1); B: token 8 n + lane / 4, one
 * 16-byte load. Token n8 tiles with no valid row skip their loads and MMAs
 * (grouped: by a branch out of the loop; dense: predicated); dense warps
 * whose rows all lie past n_out skip theirs. */
/* Shared memory: with XR, X travels global -> registers (loaded one step
 * ahead) -> f16 tile, else through PD float32 X stages (cp.async); NW W
 * stages (stage j is written PD steps before its first use, which must
 * come after the last use of stage j - NW: (NW - 1) KC / 32 >= PD); two f16
 * X tiles. PD: 4 steps (3 where two CTAs would not fit an SM at 4; with
 * XR and 256-element W stages, 8 at the same shared-memory size). */
template <int T, int BNW, int BMT, bool XR> __host__ __device__ constexpr size_t tc_smem_for(int pd) {
    return (XR ? (size_t)0 : (size_t)pd * BMT * kBK * 4) +
           (size_t)(1 + (pd + wfmt<T>::KC / kBK - 1) / (wfmt<T>::KC / kBK)) * BNW * wfmt<T>::CPR * 16 +
           (size_t)2 * BMT * kBK * 2;
}
template <int T, int BNW, int BMT, bool XR> __host__ __device__ constexpr int tc_depth() {
    const size_t lim = 113 * 1024 - sizeof(typename tab_of<T>::type); /* two CTAs per SM */
    if (XR && wfmt<T>::KC >= 8 * kBK && tc_smem_for<T, BNW, BMT, XR>(8) <= lim) return 8;
    return tc_smem_for<T, BNW, BMT, XR>(4) <= lim ? 4 : 3;
}
template <int T, int BNW, int BMT, bool XR> __host__ __device__ constexpr int tc_wstages() {
    return 1 + (tc_depth<T, BNW, BMT, XR>() + wfmt<T>::KC / kBK - 1) / (wfmt<T>::KC / kBK);
}
template <int T, int BNW, int BMT, bool XR> constexpr size_t tc_smem() {
    return tc_smem_for<T, BNW, BMT, XR>(tc_depth<T, BNW, BMT, XR>());
}

/* K order inside a W stage: the first of the 8 consecutive elements that
 * the k slots of quad lane q (0..3) stand for at step s, the same for the A
 * (W) and B (X) fragments (a sum does not care about the order). KU steps
 * go together over KU * 32 elements, slot q taking unit s % KU of the
 * block's q-th run of KU units, so a thread meets each run in KU
 * consecutive steps and decodes the header the run shares once instead of
 * once per unit: KU 4 for IQ2_XXS (a 32-element group: scale and
 * magnitudes, iq2_head) and grouped Q4_K (a 32-element sub-block: scale
 * and min, q4k_head); KU 2 for grouped Q2_K with X through cp.async (a
 * 16-element sub-block's four values, q2k_head). KU 1: 32 s + 8 q. Dense
 * Q2_K / Q4_K launches and Q2_K with X in registers keep KU 1: ptxas
 * spills registers there with KU > 1 (Q2_K with X in registers measured
 * slower with it at 2,048 and 8,192 tokens, docs/PERF_NOTES.md). */
template <int KU> __device__ __forceinline__ int64_t kpos(int s, int q) {
    static_assert(KU == 1 || KU == 2 || KU == 4, "kpos run length");
    return (int64_t)KU * kBK * (s / KU) + 8 * KU * q + 8 * (s % KU);
}

/* WN warps along W's rows, 8 / WN along the tokens (a warp owns BNW / WN
 * rows and BMT / (8 / WN) tokens; WN < 8 dequantizes each W row in 8 / WN
 * warps but reads fewer X fragments per MMA). */
template <int T, int BNW, int BMT, int WN, bool XR, bool G>
__global__ void __launch_bounds__(kThreads, 2)
    k_gemm_tc(const __grid_constant__ gemm_args a, const __grid_constant__ typename grid_of<T>::type gt) {
    V4F_PDL_ENTRY();
    typedef wfmt<T> F;
    constexpr int PD = tc_depth<T, BNW, BMT, XR>(), NW = tc_wstages<T, BNW, BMT, XR>();
    constexpr int SPS = F::KC / kBK, WROW = 16 * F::CPR; /* steps per W stage, staged bytes per row */
    constexpr int WM = kThreads / 32 / WN;               /* warps along the tokens */
    constexpr int WR = BNW / WN, TW = BMT / WM;          /* W rows, tokens per warp */
    constexpr int MT = WR / 16, NT = TW / 8;
    constexpr int UPR = kBK / 8;             /* 8-element units per tile row */
    constexpr int XU = BMT * UPR / kThreads; /* X units per thread */
    constexpr int WCH = BNW * F::CPR;        /* 16-byte chunks per W stage */
    constexpr int WPT = (WCH + kThreads - 1) / kThreads;
    /* steps per unrolled group (kpos) */
    constexpr int KU = T == V4F_TYPE_IQ2_XXS ? 4 : !G ? 1 : T == V4F_TYPE_Q4_K ? 4 : T == V4F_TYPE_Q2_K && !XR ? 2 : 1;
    static_assert(WN * WM == kThreads / 32 && XU >= 1 && MT >= 1 && NT >= 1 && WR % 16 == 0 && TW % 8 == 0,
                  "tile shape");

    extern __shared__ __align__(16) uint8_t smem[];
    float *xraw = (float *)smem;                                   /* !XR: [PD][BMT * kBK] */
    uint8_t *wraw = smem + (XR ? (size_t)0 : (size_t)PD * BMT * kBK * 4); /* [NW][BNW][WROW] */
    __half *sx = (__half *)(wraw + (size_t)NW * BNW * WROW);        /* [2][BMT][kBK] */
    __shared__ typename tab_of<T>::type s_tab;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, q = lane & 3;
    const int wn = warp % WN, tok0 = (warp / WN) * TW;
    if constexpr (T == V4F_TYPE_IQ2_XXS) iq2_tab_build(s_tab, gt);
    for (int i = tid; i < 2 * BMT * kBK / 8; i += kThreads) ((uint4 *)sx)[i] = make_uint4(0, 0, 0, 0);
    __syncthreads();

    int64_t mt, nt;
    if constexpr (G) {
        const int64_t ntn = (a.n_out + BNW - 1) / BNW;
        mt = (int64_t)blockIdx.x / ntn;
        nt = (int64_t)blockIdx.x % ntn;
    } else {
        mt = blockIdx.x;
        nt = blockIdx.y;
    }
    tile_t t;
    if (!find_tile<BMT, G>(a, mt, &t)) return;
    const int64_t n0 = nt * BNW;
    const int nrow = (int)(t.r1 - t.r0), ncol = (int)min((int64_t)BNW, a.n_out - n0);
    const int nsteps = (int)(a.n_in / kBK), nstages = (int)(a.n_in / F::KC);
    const uint8_t *wtile = t.w + (uint64_t)n0 * a.row_bytes;

    /* X rows (KU > 1: the row start; every unit of a thread is in slot
     * tid % UPR) and a step's offset from them (kpos) */
    const float *xsrc[XU];
    const int xslot = tid % UPR;
    auto xoff = [&](int step) -> int64_t { return KU == 1 ? (int64_t)step * kBK : kpos<KU>(step, xslot); };
    bool xok[XU];
#pragma unroll
    for (int i = 0; i < XU; i++) {
        const int u = tid + i * kThreads;
        xok[i] = u / UPR < nrow;
        xsrc[i] = t.x + (t.r0 + (xok[i] ? u / UPR : 0)) * a.ldx + (KU == 1 ? 8 * (u % UPR) : 0);
    }
    float4 xr[XR ? XU : 1][2]; /* XR: X of the next step */
    auto xissue = [&](int step) {
        float *st = xraw + (step % PD) * BMT * kBK;
#pragma unroll
        for (int i = 0; i < XU; i++) {
            const int u = tid + i * kThreads;
            if (xok[i]) {
                cp_async16(st + 8 * u, xsrc[i] + xoff(step));
                cp_async16(st + 8 * u + 4, xsrc[i] + xoff(step) + 4);
            }
        }
    };
    auto xload = [&](int step) {
#pragma unroll
        for (int i = 0; i < XU; i++)
            if (xok[i]) {
                const float4 *src = (const float4 *)(xsrc[i] + xoff(step));
                xr[XR ? i : 0][0] = __ldg(src);
                xr[XR ? i : 0][1] = __ldg(src + 1);
            }
    };
    auto xstore = [&](int buf) {
        __half *dx = sx + buf * BMT * kBK;
#pragma unroll
        for (int i = 0; i < XU; i++) {
            const int u = tid + i * kThreads;
            if (xok[i]) {
                const float4 p = xr[XR ? i : 0][0], r = xr[XR ? i : 0][1];
                *(uint4 *)(dx + 8 * u) =
                    make_uint4(pack_h16(p.x, p.y), pack_h16(p.z, p.w), pack_h16(r.x, r.y), pack_h16(r.z, r.w));
            }
        }
    };
    auto wissue = [&](int j) {
        uint8_t *st = wraw + (j % NW) * BNW * WROW;
        const uint64_t ws = stage_byte<T>(j) & ~(uint64_t)15;
#pragma unroll
        for (int k = 0; k < WPT; k++) {
            const int c = tid + k * kThreads;
            if (WCH % kThreads == 0 || c < WCH) {
                const int r = c / F::CPR, ch = c % F::CPR;
                uint8_t *dst = st + r * WROW + 16 * ch;
                if (r < ncol)
                    cp_async16(dst, wtile + (uint64_t)r * a.row_bytes + ws + 16 * ch);
                else
                    cp_async16_zero(dst, wtile);
            }
        }
    };
    /* the copy group of step g: X(g) (unless XR), plus W stage j when
     * g == j SPS (its first step); always commits (maybe empty) */
    auto issue = [&](int g) {
        if (g < nsteps) {
            if constexpr (!XR) xissue(g);
            if (g % SPS == 0 && g / SPS < nstages) wissue(g / SPS);
        }
        cp_async_commit();
    };
    auto xconvert = [&](int buf, int step) {
        const float *st = xraw + (step % PD) * BMT * kBK;
        __half *dx = sx + buf * BMT * kBK;
#pragma unroll
        for (int i = 0; i < XU; i++) {
            const int u = tid + i * kThreads;
            if (xok[i]) {
                const float4 p = *(const float4 *)(st + 8 * u), r = *(const float4 *)(st + 8 * u + 4);
                *(uint4 *)(dx + 8 * u) =
                    make_uint4(pack_h16(p.x, p.y), pack_h16(p.z, p.w), pack_h16(r.x, r.y), pack_h16(r.z, r.w));
            }
        }
    };

    float acc[MT][NT][4];
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int k = 0; k < 4; k++) acc[i][j][k] = 0.f;

    /* prologue: groups 0 .. PD - 1 in flight; X of step 0 in its f16 tile
     * (XR: X of step 1 in registers) */
#pragma unroll
    for (int g = 0; g < PD; g++) issue(g);
    if constexpr (XR) {
        xload(0);
        xstore(0);
        if (nsteps > 1) xload(1);
    }
    cp_async_wait<PD - 1>(); /* group 0 (own copies) */
    __syncthreads();         /* W stage 0 complete for all threads */
    if constexpr (!XR) {
        xconvert(0, 0);
        __syncthreads();
    }
    const uint8_t *wrow0 = wraw + (wn * WR + (lane >> 2)) * WROW;
    /* warp-uniform: rows of W (grouped: n_out is a tile multiple in
     * practice) and tokens to do */
    const bool wact = (G || wn * WR < ncol) && tok0 < nrow;
    const int nact = wact ? min(NT, (nrow - tok0 + 7) / 8) : 0; /* token n8 tiles with rows (grouped) */
    for (int s0 = 0; s0 < nsteps; s0 += KU) {
        /* KU > 1: the headers of the runs that steps s0 .. s0 + KU - 1 share */
        [[maybe_unused]] typename run_hdr<T>::type hd[MT][2];
#pragma unroll
        for (int u = 0; u < KU; u++) {
            const int s = s0 + u;
            /* A fragments: rows wn WR + 16 i + lane / 4 (+ 8), the 8 elements
             * from kpos(s, q) */
            const int j = s / SPS;
            const uint8_t *wb = wrow0 + (j % NW) * BNW * WROW + (int)(stage_byte<T>(j) & 15);
            uint4 wf[MT][2];
#pragma unroll
            for (int i = 0; i < MT; i++)
#pragma unroll
                for (int h = 0; h < 2; h++)
                    if (wact) {
                        const uint8_t *pr = wb + (16 * i + 8 * h) * WROW;
                        if constexpr (KU > 1) {
                            const int run = 4 * ((s0 % SPS) / KU) + q; /* kpos: quad lane q's run in the stage */
                            if (u == 0) hd[i][h] = run_head<T>(pr, run);
                            wf[i][h] = run_unit<T, KU>(pr, run, u, hd[i][h], s_tab);
                        } else {
                            wf[i][h] = wdeq<T>(pr, (s % SPS) * kBK + 8 * q); /* = kpos(s, q) in the stage */
                        }
                    }
            const __half *bx = sx + (s & 1) * BMT * kBK + (tok0 + (lane >> 2)) * kBK + 8 * q;
            auto mma_tile = [&](int n) { /* token n8 tile n (n a constant after unrolling) */
                const uint4 xv = *(const uint4 *)(bx + 8 * n * kBK);
                const uint32_t b0[2] = {xv.x, xv.y}, b1[2] = {xv.z, xv.w};
#pragma unroll
                for (int i = 0; i < MT; i++) {
                    const uint32_t a0[4] = {wf[i][0].x, wf[i][1].x, wf[i][0].y, wf[i][1].y};
                    const uint32_t a1[4] = {wf[i][0].z, wf[i][1].z, wf[i][0].w, wf[i][1].w};
                    v4f_mma_f16(acc[i][n], a0, b0);
                    v4f_mma_f16(acc[i][n], a1, b1);
                }
            };
            /* warp-uniform conditions. Grouped tiles often hold a few tokens:
             * a partial tile leaves the loop by a branch instead of issuing
             * NT predicated MMA groups (measured: the predicated form is
             * faster for full tiles, the branch for tiles of 1-2 n8 rows) */
            if constexpr (G) {
                if (nact == NT) {
#pragma unroll
                    for (int n = 0; n < NT; n++) mma_tile(n);
                } else {
#pragma unroll
                    for (int n = 0; n < NT; n++) {
                        if (n >= nact) break;
                        mma_tile(n);
                    }
                }
            } else {
#pragma unroll
                for (int n = 0; n < NT; n++)
                    if (wact && tok0 + 8 * n < nrow) mma_tile(n);
            }
            if (s + 1 < nsteps) {
                if constexpr (XR) {
                    xstore((s + 1) & 1); /* read at step s - 1, before the last barrier */
                    if (s + 2 < nsteps) xload(s + 2);
                }
                cp_async_wait<PD - 2>(); /* group s + 1 (own copies) */
                if constexpr (!XR) xconvert((s + 1) & 1, s + 1);
                issue(s + PD);
            }
            __syncthreads();
        }
    }
    cp_async_wait<0>();

    /* c0, c1: W row lane/4, tokens 2q + {0, 1}; c2, c3: W row + 8 */
#pragma unroll
    for (int i = 0; i < MT; i++) {
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int cl = wn * WR + 16 * i + (lane >> 2) + 8 * h;
            if (cl >= ncol) continue;
#pragma unroll
            for (int n = 0; n < NT; n++) {
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int rl = tok0 + 8 * n + 2 * q + e;
                    if (rl < nrow) t.y[(t.r0 + rl) * a.ldy + n0 + cl] = acc[i][n][2 * h + e];
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
    const float *xrow = t.x + (t.r0 + min((int64_t)lr, nrow - 1)) * a.ldx;
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
        float *yr = t.y + (t.r0 + rl) * a.ldy + n0;
#pragma unroll
        for (int j = 0; j < 4; j++)
            if (4 * tx + j < ncol) yr[4 * tx + j] = acc[i][j];
    }
}

/* ---- host side ------------------------------------------------------------------ */

/* Tile configurations of k_gemm_tc: W rows x tokens, warps along W x
 * along the tokens, X staging (cp: float32 cp.async ring; reg: registers
 * one step ahead). */
enum {
    CFG_W256x64 = 1,       /* 8x1, cp */
    CFG_W128x128 = 2,      /* 8x1, cp */
    CFG_W128x64 = 3,       /* 8x1, cp */
    CFG_W128x128_42R = 4,  /* 4x2, reg */
    CFG_W256x64_R = 5,     /* 8x1, reg */
    CFG_W128x64_42R = 6,   /* 4x2, reg */
    CFG_W128x128_42 = 7,   /* 4x2, cp */
    CFG_COUNT = 7
};
/* Grouped Q2_K takes CFG_W256x64_R (KU 1) from this many rows per expert
 * on average, CFG_W256x64 (KU 2) below: H200, session 19, 256 experts:
 * 12 rows per expert 0.90 vs 0.96 ms, 48 rows 1.55 vs 1.49 ms. */
static const int64_t kQ2kRegRows = 32;

/* V4F_GEMM_TILE (1..CFG_COUNT) forces a configuration (benchmarks); unset
 * or 0 = automatic. Read per call (a short environment scan) so a
 * benchmark can switch it. */
static int forced_cfg(void) {
    const char *s = getenv("V4F_GEMM_TILE");
    const int k = s ? atoi(s) : 0;
    return k >= 1 && k <= CFG_COUNT ? k : 0;
}

/* Largest dynamic shared memory a block may opt into on the context's
 * device (cached per device < 64). */
static v4f_status smem_optin(v4f_cuda *c, int *out, v4f_err *err) {
    static int cache[64];
    int v = c->device < 64 ? __atomic_load_n(&cache[c->device], __ATOMIC_RELAXED) : 0;
    if (!v) {
        CUDA_TRY(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, c->device));
        if (c->device < 64) __atomic_store_n(&cache[c->device], v, __ATOMIC_RELAXED);
    }
    *out = v;
    return V4F_OK;
}

/* The tensor-core IQ2_XXS dequantization picks among the 3 grid magnitudes
 * of kIq2Mag; check once that the grid has no other byte. */
static bool iq2_grid_ok(void) {
    static int state; /* 0 unknown, 1 ok, 2 not */
    int s = __atomic_load_n(&state, __ATOMIC_RELAXED);
    if (!s) {
        s = 1;
        for (int i = 0; i < 256; i++)
            for (int j = 0; j < 8; j++) {
                const uint32_t b = (uint32_t)(v4f_quant_iq2xxs_grid[i] >> (8 * j)) & 255u;
                if (v4f_quant_iq2xxs_mag_code(b) < 0) s = 2;
            }
        __atomic_store_n(&state, s, __ATOMIC_RELAXED);
    }
    return s == 1;
}

/* Grid of a launch: dense (m_tiles token tiles fastest, output tiles,
 * groups) or grouped (1D: output tiles fastest, then the bound m_tiles on
 * the (expert, token tile) pairs). */
static v4f_status tile_grid(bool grouped, int64_t m_tiles, int64_t n_tiles, int groups, dim3 *grid, v4f_err *err) {
    if (grouped ? m_tiles * n_tiles > INT32_MAX : m_tiles > INT32_MAX || n_tiles > 65535)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda gemm: grid too large");
    *grid = grouped ? dim3((unsigned)(m_tiles * n_tiles))
                    : dim3((unsigned)m_tiles, (unsigned)n_tiles, (unsigned)groups);
    return V4F_OK;
}

/* m_tiles: token tiles (dense) or the bound on (expert, token tile) pairs
 * (grouped); groups: block-diagonal groups. */
template <int T, int BNW, int BMT, int WN, bool XR, bool G>
static v4f_status launch_tc(v4f_cuda *c, const gemm_args &a, const typename grid_of<T>::type &gt, int64_t m_tiles,
                            int groups, v4f_err *err) {
    static unsigned long long done = 0;
    const size_t smem = tc_smem<T, BNW, BMT, XR>();
    dim3 grid;
    v4f_status st = v4f_smem_optin(c, k_gemm_tc<T, BNW, BMT, WN, XR, G>, smem, &done, err);
    if (st == V4F_OK) st = tile_grid(G, m_tiles, (a.n_out + BNW - 1) / BNW, groups, &grid, err);
    if (st != V4F_OK) return st;
    v4f_launch(k_gemm_tc<T, BNW, BMT, WN, XR, G>, grid, kThreads, smem, c->stream, a, gt);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

/* Upper bound of the (expert, tile) pairs: sum_e ceil(c_e / bm) <=
 * (max_rows + n_expert (bm - 1)) / bm, and <= max_rows (each has a row). */
static int64_t grouped_tiles(int64_t max_rows, int n_expert, int bm) {
    int64_t t = (max_rows + (int64_t)n_expert * (bm - 1)) / bm;
    return t < max_rows ? t : max_rows;
}

/* dynamic shared memory of a configuration */
template <int T> static size_t cfg_smem(int cfg) {
    switch (cfg) {
    case CFG_W256x64: return tc_smem<T, 256, 64, false>();
    case CFG_W128x128: return tc_smem<T, 128, 128, false>();
    case CFG_W128x128_42R: return tc_smem<T, 128, 128, true>();
    case CFG_W256x64_R: return tc_smem<T, 256, 64, true>();
    case CFG_W128x64_42R: return tc_smem<T, 128, 64, true>();
    case CFG_W128x128_42: return tc_smem<T, 128, 128, false>();
    default: return tc_smem<T, 128, 64, false>();
    }
}

template <int T, bool G>
static v4f_status launch_cfg(v4f_cuda *c, int cfg, const gemm_args &a, const typename grid_of<T>::type &gt,
                             int64_t (*tiles)(const gemm_args &, int64_t, int), int64_t rows, int groups,
                             v4f_err *err) {
    switch (cfg) {
    case CFG_W256x64: return launch_tc<T, 256, 64, 8, false, G>(c, a, gt, tiles(a, rows, 64), groups, err);
    case CFG_W128x128: return launch_tc<T, 128, 128, 8, false, G>(c, a, gt, tiles(a, rows, 128), groups, err);
    case CFG_W128x128_42R: return launch_tc<T, 128, 128, 4, true, G>(c, a, gt, tiles(a, rows, 128), groups, err);
    case CFG_W256x64_R: return launch_tc<T, 256, 64, 8, true, G>(c, a, gt, tiles(a, rows, 64), groups, err);
    case CFG_W128x64_42R: return launch_tc<T, 128, 64, 4, true, G>(c, a, gt, tiles(a, rows, 64), groups, err);
    case CFG_W128x128_42: return launch_tc<T, 128, 128, 4, false, G>(c, a, gt, tiles(a, rows, 128), groups, err);
    default: return launch_tc<T, 128, 64, 8, false, G>(c, a, gt, tiles(a, rows, 64), groups, err);
    }
}

static int64_t tiles_dense(const gemm_args &a, int64_t rows, int bm) { return (rows + bm - 1) / bm; }
static int64_t tiles_grouped(const gemm_args &a, int64_t rows, int bm) { return grouped_tiles(rows, a.n_expert, bm); }

template <int T>
static v4f_status launch_type(v4f_cuda *c, const gemm_args &a, bool grouped, int64_t rows, int groups, bool exact,
                              v4f_err *err) {
    typename grid_of<T>::type gt;
    if constexpr (T == V4F_TYPE_IQ2_XXS)
        memcpy(gt.v, v4f_quant_iq2xxs_grid, sizeof gt.v);
    else
        gt.v[0] = 0;
    if constexpr (T != V4F_TYPE_F32 && T != V4F_TYPE_BF16) { /* those two never take tensor cores */
        if (!exact && (T != V4F_TYPE_IQ2_XXS || iq2_grid_ok())) {
            int cfg = forced_cfg();
            if (cfg == 0) {
                /* measured on H100 (docs/PERF_NOTES.md, "CUDA prefill GEMM"
                 * sessions 4, 6 and 19). Routed experts: 256 x 64 (Q4_K with
                 * X through registers; Q2_K too from kQ2kRegRows rows per
                 * expert, where KU 1 with X in registers beats KU 2 with X
                 * through cp.async). Dense: 128 x 64 where 128 x 128 would
                 * leave more than half the SMs idle; Q8_0 grids of at least
                 * two 128 x 128 tiles per SM: 4 x 2 warps, X through
                 * registers; F16 grids under that: 128 x 64; else 128 x 128 */
                const int64_t t128 = ((rows + 127) / 128) * ((a.n_out + 127) / 128) * groups;
                const int64_t sm = c->sm_count;
                if (grouped)
                    cfg = T == V4F_TYPE_Q4_K || (T == V4F_TYPE_Q2_K && rows >= kQ2kRegRows * a.n_expert) ? CFG_W256x64_R
                                                                                                      : CFG_W256x64;
                else if (t128 < sm / 2 || (T == V4F_TYPE_F16 && t128 < 2 * sm))
                    cfg = CFG_W128x64;
                else if (T == V4F_TYPE_Q8_0 && t128 >= 2 * sm)
                    cfg = CFG_W128x128_42R;
                else
                    cfg = CFG_W128x128;
            }
            int optin = 0;
            const v4f_status st = smem_optin(c, &optin, err);
            if (st != V4F_OK) return st;
            if (cfg_smem<T>(cfg) > (size_t)optin) cfg = CFG_W128x64; /* < 96 KB: fits every supported device */
            if (grouped) return launch_cfg<T, true>(c, cfg, a, gt, tiles_grouped, rows, 1, err);
            return launch_cfg<T, false>(c, cfg, a, gt, tiles_dense, rows, groups, err);
        }
    }
    const int64_t mt = grouped ? tiles_grouped(a, rows, kEM) : tiles_dense(a, rows, kEM),
                  ntn = (a.n_out + kEN - 1) / kEN;
    if (mt > INT32_MAX || ntn > 65535) return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda gemm: grid too large");
    const dim3 grid((unsigned)mt, (unsigned)ntn, (unsigned)groups);
    if (grouped)
        v4f_launch(k_gemm_exact<T, true>, grid, kThreads, 0, c->stream, a, gt);
    else
        v4f_launch(k_gemm_exact<T, false>, grid, kThreads, 0, c->stream, a, gt);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

static v4f_status dispatch(v4f_cuda *c, uint32_t type, const gemm_args &a, bool grouped, int64_t rows, int groups,
                           bool exact, v4f_err *err) {
    switch (type) {
    case V4F_TYPE_F32: return launch_type<V4F_TYPE_F32>(c, a, grouped, rows, groups, exact, err);
    case V4F_TYPE_F16: return launch_type<V4F_TYPE_F16>(c, a, grouped, rows, groups, exact, err);
    case V4F_TYPE_BF16: return launch_type<V4F_TYPE_BF16>(c, a, grouped, rows, groups, exact, err);
    case V4F_TYPE_Q8_0: return launch_type<V4F_TYPE_Q8_0>(c, a, grouped, rows, groups, exact, err);
    case V4F_TYPE_Q2_K: return launch_type<V4F_TYPE_Q2_K>(c, a, grouped, rows, groups, exact, err);
    case V4F_TYPE_Q4_K: return launch_type<V4F_TYPE_Q4_K>(c, a, grouped, rows, groups, exact, err);
    default: return launch_type<V4F_TYPE_IQ2_XXS>(c, a, grouped, rows, groups, exact, err);
    }
}

/* Shape checks shared by the entry points (data not looked at). */
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
    return w->type != V4F_TYPE_F32 && w->type != V4F_TYPE_BF16 && w->n_in % kBK == 0 && w->n_in < ((int64_t)1 << 31) &&
           w->row_bytes % 16 == 0 && (!check_data || (uintptr_t)w->data % 16 == 0) && (uintptr_t)X % 16 == 0 &&
           ldx % 4 == 0;
}

} /* namespace */

/* The launch arguments every matmul shares: the matrix shape, X and Y
 * (the rest zero). */
static gemm_args args_for(const v4f_cuda_mat *w, const float *X, int64_t ldx, float *Y, int64_t ldy) {
    gemm_args a;
    memset(&a, 0, sizeof a);
    a.row_bytes = w->row_bytes;
    a.n_in = w->n_in;
    a.n_out = w->n_out;
    a.x = X;
    a.ldx = ldx;
    a.y = Y;
    a.ldy = ldy;
    return a;
}

/* ---- split-K ----------------------------------------------------------------------
 * A dense launch of few tiles (a few tokens, or a matrix of few rows: q_a,
 * kv, out_b, the shared expert, the router) runs on a fraction of the SMs,
 * each CTA walking the whole K in 32-element steps (q_a at 8 tokens: 8 CTAs
 * of 128 steps). Such a launch is split along K into `ways` slices run as
 * the block-diagonal groups of one launch (slice z: W from byte z wz of
 * each row, X from element z K / ways, Y into partial slab z of the
 * stream's scratch), then k_splitk_sum adds the slabs in slice order into
 * Y. Deterministic (fixed order); the sums differ from the unsplit launch
 * only by float32 association (the tensor-core path only: exact launches
 * are never split). A slice must start a row on a 16-byte boundary and a
 * whole weight stage. V4F_CUDA_SPLITK=0 turns it off. */

__global__ void k_splitk_sum(const float *__restrict__ part, int ways, int64_t n_tok, int64_t n_out, float *y,
                             int64_t ldy) {
    V4F_PDL_ENTRY();
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, n = n_tok * n_out;
    if (i >= n) return;
    float s = part[i];
    for (int z = 1; z < ways; z++) s += part[(int64_t)z * n + i];
    y[(i / n_out) * ldy + i % n_out] = s;
}

/* A weight stage of the tensor-core kernel is one block, at least kBK
 * elements (the type table's block then gives a slice's stage quantum) */
template <int T> constexpr bool stage_is_block() {
    return wfmt<T>::KC == (wfmt<T>::BE > kBK ? wfmt<T>::BE : kBK);
}
static_assert(stage_is_block<V4F_TYPE_F16>() && stage_is_block<V4F_TYPE_Q8_0>() && stage_is_block<V4F_TYPE_Q2_K>() &&
                  stage_is_block<V4F_TYPE_Q4_K>() && stage_is_block<V4F_TYPE_IQ2_XXS>(),
              "split-K stage quantum");

/* How many K slices a dense tensor-core launch gets (1: none): up to
 * SPLITK_MAX, while the 128 x 64 tiles times the slices stay within
 * SPLITK_CTAS_PER_SM per SM, each slice keeps at least SPLITK_MIN_STEPS
 * K steps, and the partial slabs fit the scratch. */
#define SPLITK_MAX 16
#define SPLITK_CTAS_PER_SM 2
#define SPLITK_MIN_STEPS 8
static int splitk_ways(const v4f_cuda *c, const v4f_cuda_mat *w, int64_t n_tok) {
    if (v4f_env_off("V4F_CUDA_SPLITK")) return 1;
    const v4f_type_info *t = v4f_type_info_get(w->type);
    const int64_t be = t->blck_elems, kc = be > kBK ? be : kBK;
    int64_t m = 1; /* blocks per 16-byte-aligned run */
    while ((m * t->blck_bytes) % 16) m++;
    /* a slice: whole aligned runs and whole stages (m, be and kc are powers
     * of two, so the larger of the two quanta is a multiple of the other) */
    const int64_t quantum = m * be > kc ? m * be : kc;
    const int64_t tiles = ((w->n_out + 127) / 128) * ((n_tok + 63) / 64);
    int ways = 1;
    for (int s = 2; s <= SPLITK_MAX; s *= 2) {
        const int64_t k = w->n_in / s;
        if (w->n_in % s || k % quantum || k / kBK < SPLITK_MIN_STEPS) break;
        if (tiles * s > (int64_t)SPLITK_CTAS_PER_SM * c->sm_count) break;
        if ((size_t)s * (size_t)n_tok * (size_t)w->n_out * sizeof(float) > V4F_CUDA_SPLITK_BYTES) break;
        ways = s;
    }
    return ways;
}

static v4f_status matmul_splitk(v4f_cuda *c, const v4f_cuda_mat *w, int ways, const float *X, int64_t ldx,
                                int64_t n_tok, float *Y, int64_t ldy, v4f_err *err) {
    const v4f_type_info *t = v4f_type_info_get(w->type);
    float *part = (float *)(c->qx + c->qx_plane_bytes);
    const int64_t k = w->n_in / ways;
    gemm_args a = args_for(w, X, ldx, part, w->n_out);
    a.w = (const uint8_t *)w->data;
    a.n_in = k;
    a.n_tok = n_tok;
    a.wz = (uint64_t)(k / t->blck_elems) * t->blck_bytes;
    a.xz = k;
    a.yz = n_tok * w->n_out;
    const v4f_status st = dispatch(c, w->type, a, false, n_tok, ways, false, err);
    if (st != V4F_OK) return st;
    const int64_t n = n_tok * w->n_out;
    v4f_launch(k_splitk_sum, (unsigned)((n + 255) / 256), 256, 0, c->stream, (const float *)part, ways, n_tok,
               w->n_out, Y, ldy);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

v4f_status v4f_cuda_matmul_blockdiag(v4f_cuda *c, const v4f_cuda_mat *w, int groups, const float *X, int64_t ldx,
                                     int64_t n_tok, float *Y, int64_t ldy, bool exact, v4f_err *err) {
    v4f_status st = check_shape(w, err);
    if (st != V4F_OK) return st;
    if (!w->data || !X || !Y || groups < 1 || groups > 65535 || n_tok < 0 || ldx < groups * w->n_in ||
        ldy < groups * w->n_out || n_tok > ((int64_t)1 << 31))
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG,
                           "cuda gemm: bad arguments (groups %d, n_tok %lld, ldx %lld, ldy %lld)", groups,
                           (long long)n_tok, (long long)ldx, (long long)ldy);
    if (n_tok == 0 || w->n_out == 0) return V4F_OK;
    gemm_args a = args_for(w, X, ldx, Y, ldy);
    a.w = (const uint8_t *)w->data;
    a.n_tok = n_tok;
    a.wz = (uint64_t)w->n_out * w->row_bytes;
    a.xz = w->n_in;
    a.yz = w->n_out;
    CUDA_TRY_DEVICE(c);
    const bool tc = !exact && tc_ok(w, true, X, ldx);
    if (tc && groups == 1) {
        const int ways = splitk_ways(c, w, n_tok);
        if (ways > 1) return matmul_splitk(c, w, ways, X, ldx, n_tok, Y, ldy, err);
    }
    return dispatch(c, w->type, a, false, n_tok, groups, !tc, err);
}

v4f_status v4f_cuda_matmul(v4f_cuda *c, const v4f_cuda_mat *w, const float *X, int64_t ldx, int64_t n_tok, float *Y,
                           int64_t ldy, bool exact, v4f_err *err) {
    return v4f_cuda_matmul_blockdiag(c, w, 1, X, ldx, n_tok, Y, ldy, exact, err);
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
    gemm_args a = args_for(shape, X, ldx, Y, ldy);
    a.tab = tab;
    a.tab_off = tab_off;
    a.offs = offs;
    a.n_expert = n_expert;
    CUDA_TRY_DEVICE(c);
    return dispatch(c, shape->type, a, true, max_rows, 1, exact || !tc_ok(shape, false, X, ldx), err);
}
