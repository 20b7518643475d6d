/*
 * cuda_quant.cu - weight-format kernels: matrix-vector products y = W x
 * (float32 x and y) for W in F32, F16, BF16, Q8_0, Q2_K, Q4_K, IQ2_XXS, one
 * matrix or a batch of (W, x, y) triples per launch, and row dequantization
 * to float32 (API in cuda_backend.h).
 *
 * Fast matvec (k_matvec): one CTA computes R consecutive rows of one triple
 * (blockIdx.y). The rows are streamed through shared memory in chunks of
 * whole "superblocks" (the least run of blocks whose size is a multiple of
 * 16 bytes: Q8_0 8 blocks = 272 B, Q2_K 4 = 336 B, Q4_K 1 = 144 B, IQ2_XXS
 * 8 = 528 B, F16/BF16 8 elements, F32 4) with coalesced 16-byte cp.async
 * copies that bypass L1; then each thread decodes "units" (4..32 elements of
 * one block) from shared memory, loads the matching x values once into
 * registers and applies them to all R rows (x is re-read from L1/L2 once per
 * R rows, not once per row). Partial sums are reduced with warp shuffles and
 * one shared-memory step. Many CTAs per SM (small shared footprint) keep
 * enough bytes in flight to saturate DRAM. The weight copies carry an L2
 * evict-first policy (v4f_cuda_set_weight_evict_first, on by default): a
 * decode step streams 3.3 GB of weights through the 50 MB L2 once, and
 * without the hint they push out the activations and KV rows the next
 * kernels read (H200 decode +4%, docs/PERF_NOTES.md session 26).
 * Two ways to multiply, chosen per type at compile time:
 *  - f32 (F32, F16, BF16; quantized types with n_in > QX_MAX_IN): codes
 *    become floats without the slow I2F path (a byte is placed in the
 *    mantissa of 2^23 with one byte-permute, 2^23 subtracted, exact), FMA.
 *  - int8 planes (Q8_0, Q2_K, Q4_K, IQ2_XXS): a pre-pass (k_quant_x) splits
 *    each distinct x of the launch into three int8 planes per group of 32
 *    (residual < 2.5e-7 max|x|, near f32 rounding), then __dp4a multiplies
 *    4 codes per instruction with exact int32 sums; the kernels multiply
 *    all three or the first two (v4f_cuda_set_x_planes: residual < 3.1e-5
 *    max|x|, the default precision's decode, a third fewer __dp4a and x
 *    loads), instantiated per count. The f32 path is bound
 *    by instruction issue for these types (measured in docs/PERF_NOTES.md,
 *    "CUDA matvec"); the scratch for the planes is allocated at open.
 *
 * Several columns (k_matvec with C = 4, v4f_cuda_matvec_cols): the same CTA
 * multiplies each loaded unit by up to 4 x (their planes made once per call
 * by k_quant_x in rows mode), for the dense projections of short evals.
 *
 * Expert by expert (k_mvexp): the routed experts of a chunk of a few dozen
 * to a few hundred tokens, each expert's rows read once and each unit of
 * them decoded once (unit_codes) for up to 4 of its tokens' int8 planes
 * (unit_acc), the pairs found through the bucketing's lists (no host
 * synchronisation).
 *
 * Slow matvec (k_matvec_slow): one warp per row reading single bytes; any
 * alignment, any n_in that is a block multiple. Used only when a fast-path
 * condition (cuda_backend.h) fails; same tolerance.
 *
 * Dequantization (k_dequant): one thread per output element, computed with
 * the exact operation order of quant_ref.c (explicit __fmul_rn/__fsub_rn, no
 * FMA contraction), so results are bit-identical to v4f_dequant_row_ref.
 *
 * Tables: the IQ2_XXS grid is copied from the CPU table
 * (v4f_quant_iq2xxs_grid, quant_tables.c) into a __device__ array at
 * v4f_cuda_open, never typed twice (the int8-plane path gets it as byte-
 * permute selectors, g_iq2xxs_sel, derived from it there); the sign masks
 * come from their definition (k | parity(k) << 7), checked against
 * v4f_quant_ksigns at init.
 * The grid is read with per-lane indices, so it lives in global memory
 * rather than __constant__ (whose cache serializes divergent reads); the
 * fast kernel copies it into shared memory per CTA (fewer wavefronts than
 * divergent L1 reads), the byte-level path reads it through __ldg.
 *
 * Ownership: kernels read caller-owned device buffers and write only y/dst
 * (and the context's int8-plane scratch, c->qx).
 * Threading: launchers queue on the context's stream (one owner thread).
 */
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_dev.cuh"

#include <cuda_fp16.h>
#include <stdlib.h>

extern "C" {
#include "core/ggml_type.h"
#include "quant/quant_internal.h"
}

__device__ uint64_t g_iq2xxs_grid[256];
/* The grid again for the int8-plane path, as byte-permute selectors: entry
 * i holds the 3-bit code (0, 1, 2 for the grid values 8, 25, 43) of weight j
 * of grid point i in nibble iq2_nib(j), built at v4f_cuda_quant_init. */
__device__ uint32_t g_iq2xxs_sel[256];

/* ---- small device helpers ------------------------------------------------ */

__device__ __forceinline__ float f16_to_f32(uint32_t bits) {
    return __half2float(__ushort_as_half((unsigned short)(bits & 0xffffu)));
}

/* Byte k (runtime 0..3) of w as an exact float: 2^23 + b, minus 2^23. */
#define V4F_MAGIC_BITS 0x4B000000u
__device__ __forceinline__ float byte_f(uint32_t w, int k) {
    return __int_as_float((int)__byte_perm(w, V4F_MAGIC_BITS, 0x7540u | (uint32_t)k)) - 8388608.0f;
}
/* Same for a word whose bytes were xor-ed with 0x80 (signed codes): -128. */
__device__ __forceinline__ float sbyte_f(uint32_t w_x80, int k) {
    return __int_as_float((int)__byte_perm(w_x80, V4F_MAGIC_BITS, 0x7540u | (uint32_t)k)) - 8388736.0f;
}

__device__ __forceinline__ uint32_t ksign_mask(uint32_t k7) { return k7 | ((uint32_t)(__popc(k7) & 1) << 7); }

/* IQ2_XXS on the int8-plane path, a group of 8 weights in about 15
 * integer instructions (was 21, session 12):
 *  - weight j's code sits in selector nibble iq2_nib(j) (0,2,4,6,1,3,5,7),
 *    so the prmt of the low half yields weights (0,4,1,5) and of the high
 *    half (2,6,3,7); the x planes are permuted the same way once per unit
 *    (iq2_perm_x), shared by the CTA's rows;
 *  - the sign of weight j is bit 2 of its nibble, and the value table holds
 *    8, 25, 43 at selectors 0-2 and -8, -25, -43 at 4-6: a sign is an xor;
 *  - that nibble order is the one into which a single multiplication
 *    spreads the seven stored sign bits: k * 0x00810204 puts bit j at
 *    j + 2 + 7t for t = 0..3, all positions distinct (no carries), and the
 *    wanted copy of bit j (t = j for j < 4, t = j - 4 above) at bit
 *    4 * iq2_nib(j) + 2; the eighth sign (the parity of k) goes to bit 30
 *    from popc(k) << 30, whose stray bit 31 is masked off the high half
 *    (bit 3 of a selector nibble must be 0: it asks prmt for sign
 *    replication). */
#define IQ2_SIGN_SPREAD 0x00810204u
#define IQ2_SIGN_BITS 0x04444444u
#define IQ2_VAL_LO 0x002B1908u /* bytes 8, 25, 43, 0 */
#define IQ2_VAL_HI 0x00D5E7F8u /* bytes -8, -25, -43, 0 */
__host__ __device__ static inline int iq2_nib(int j) { return j < 4 ? 2 * j : 2 * (j - 4) + 1; }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* The warp sums of N values per lane (N a power of two <= 32) with N - 1 +
 * 5 - log2(N) shuffles instead of 5 N: at the offsets 16, 8, .. the first
 * log2(N) steps each halve what a lane holds (the lane with the offset's bit
 * set keeps the upper half and receives its partner's upper half), then the
 * plain butterfly. Returns the sum of value lane >> (5 - log2(N)) (every lane
 * of that group of 32 / N lanes). Each value's additions are warp_sum's (own
 * + partner's at offsets 16, 8, 4, 2, 1, commutative), so the same bits. */
template <int N> __device__ __forceinline__ float warp_sum_n(float *v, int lane) {
    static_assert(N >= 1 && N <= 32 && (N & (N - 1)) == 0, "N: a power of two <= 32");
    int o = 16;
#pragma unroll
    for (int n = N; n > 1; n >>= 1, o >>= 1) {
        const bool up = (lane & o) != 0;
#pragma unroll
        for (int i = 0; i < n / 2; i++) {
            const float send = up ? v[i] : v[i + n / 2];
            const float keep = up ? v[i + n / 2] : v[i];
            v[i] = keep + __shfl_xor_sync(0xffffffffu, send, o);
        }
    }
    float s = v[0];
#pragma unroll
    for (; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    return s;
}

__device__ __forceinline__ void cp_async16(void *smem_dst, const void *gmem_src) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem_dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem_src) : "memory");
}
/* The same with an L2 cache policy (createpolicy, l2_evict_first_policy). */
__device__ __forceinline__ void cp_async16_hint(void *smem_dst, const void *gmem_src, uint64_t pol) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem_dst);
    asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem_src), "l"(pol)
                 : "memory");
}
/* A policy that asks L2 to evict the lines a load brings in first. */
__device__ __forceinline__ uint64_t l2_evict_first_policy(void) {
    uint64_t pol;
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(pol));
    return pol;
}
__device__ __forceinline__ void cp_async_wait_all(void) {
    asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;\n" ::: "memory");
}

/* bulk copies (V4F_BULK, mbar_*, bulk_copy*): cuda_common.cuh */

/* 8 bytes starting at a 2-aligned shared-memory offset, as two words
 * (reads up to 4 bytes past the 8: the smem buffer has slack). */
__device__ __forceinline__ void lds_8at2(const uint8_t *s, uint32_t off, uint32_t *lo, uint32_t *hi) {
    const uint32_t *w = (const uint32_t *)(s + (off & ~3u));
    const uint32_t sh = (off & 3u) * 8u;
    const uint32_t a0 = w[0], a1 = w[1], a2 = w[2];
    *lo = __funnelshift_r(a0, a1, sh);
    *hi = __funnelshift_r(a1, a2, sh);
}

/* ---- reference-order element access (slow matvec, dequant) --------------- */

__device__ __forceinline__ uint32_t ldb(const uint8_t *p) { return __ldg(p); }
__device__ __forceinline__ uint32_t ldb16(const uint8_t *p) { return ldb(p) | ldb(p + 1) << 8; }
__device__ __forceinline__ uint32_t ldb32(const uint8_t *p) { return ldb16(p) | ldb16(p + 2) << 16; }

/* Element e of a row, computed exactly as quant_ref.c does. */
template <int T> __device__ __forceinline__ float elem(const uint8_t *row, int64_t e) {
    if constexpr (T == V4F_TYPE_F32) {
        return __uint_as_float(ldb32(row + 4 * e));
    } else if constexpr (T == V4F_TYPE_F16) {
        return f16_to_f32(ldb16(row + 2 * e));
    } else if constexpr (T == V4F_TYPE_BF16) {
        return __uint_as_float(ldb16(row + 2 * e) << 16);
    } else if constexpr (T == V4F_TYPE_Q8_0) {
        const uint8_t *b = row + (e / 32) * 34;
        return __fmul_rn(f16_to_f32(ldb16(b)), (float)(int8_t)ldb(b + 2 + e % 32));
    } else if constexpr (T == V4F_TYPE_Q2_K) {
        const uint8_t *b = row + (e / 256) * 84;
        const int k = (int)(e % 256), h = k / 128, s = (k % 128) / 32, l = k % 32;
        const uint32_t sc = ldb(b + 8 * h + 2 * s + (l >= 16));
        const float dl = __fmul_rn(f16_to_f32(ldb16(b + 80)), (float)(sc & 15));
        const float ml = __fmul_rn(f16_to_f32(ldb16(b + 82)), (float)(sc >> 4));
        const uint32_t q = (ldb(b + 16 + 32 * h + l) >> (2 * s)) & 3;
        return __fsub_rn(__fmul_rn(dl, (float)q), ml);
    } else if constexpr (T == V4F_TYPE_Q4_K) {
        const uint8_t *b = row + (e / 256) * 144;
        const int k = (int)(e % 256), j = k / 32, l = k % 32;
        const uint8_t *s = b + 4;
        uint32_t sc, m;
        if (j < 4) {
            sc = ldb(s + j) & 63;
            m = ldb(s + j + 4) & 63;
        } else {
            sc = (ldb(s + j + 4) & 15) | ((ldb(s + j - 4) >> 6) << 4);
            m = (ldb(s + j + 4) >> 4) | ((ldb(s + j) >> 6) << 4);
        }
        const float dl = __fmul_rn(f16_to_f32(ldb16(b)), (float)sc);
        const float ml = __fmul_rn(f16_to_f32(ldb16(b + 2)), (float)m);
        const uint32_t q = (ldb(b + 16 + 32 * (j / 2) + l) >> (4 * (j & 1))) & 15;
        return __fsub_rn(__fmul_rn(dl, (float)q), ml);
    } else { /* IQ2_XXS */
        const uint8_t *b = row + (e / 256) * 66;
        const int k = (int)(e % 256), g = k / 32, l = (k % 32) / 8, j = k % 8;
        const uint32_t aux = ldb32(b + 2 + 8 * g + 4);
        const float db = __fmul_rn(__fmul_rn(f16_to_f32(ldb16(b)), 0.5f + (float)(aux >> 28)), 0.25f);
        const uint64_t grid = __ldg(&g_iq2xxs_grid[ldb(b + 2 + 8 * g + l)]);
        const uint32_t signs = ksign_mask((aux >> (7 * l)) & 127);
        const float v = __fmul_rn(db, (float)((grid >> (8 * j)) & 255));
        return ((signs >> j) & 1) ? -v : v;
    }
}

/* ---- fast-path formats ---------------------------------------------------- */

/* SBB: superblock bytes (multiple of 16), SBE: its elements, UE: elements
 * of one thread work unit, R: rows per CTA (x reuse). */
template <int T> struct fmt;
template <> struct fmt<V4F_TYPE_F32> { enum { SBB = 16, SBE = 4, UE = 4, R = 1, BE = 1 }; };
template <> struct fmt<V4F_TYPE_F16> { enum { SBB = 16, SBE = 8, UE = 8, R = 2, BE = 1 }; };
template <> struct fmt<V4F_TYPE_BF16> { enum { SBB = 16, SBE = 8, UE = 8, R = 2, BE = 1 }; };
#ifndef V4F_Q8_ROWS
#define V4F_Q8_ROWS 2 /* where MV_WIDE_ROWS does not apply (q_a+kv, out_b): 4 left one wave on them */
#endif
template <> struct fmt<V4F_TYPE_Q8_0> { enum { SBB = 272, SBE = 256, UE = 8, R = V4F_Q8_ROWS, BE = 32 }; };
template <> struct fmt<V4F_TYPE_Q4_K> { enum { SBB = 144, SBE = 256, UE = 32, R = 4, BE = 256 }; };
#ifndef V4F_Q2K_ROWS
#define V4F_Q2K_ROWS 8 /* 4 -> 8: experts down 15.0 -> 14.0 us on the H200 (session 9) */
#endif
#ifndef V4F_IQ2_ROWS
#define V4F_IQ2_ROWS 8 /* 4 and 16 were slower on the H200 (30.0 and 28.3 us vs 26.6, session 9) */
#endif
template <> struct fmt<V4F_TYPE_Q2_K> { enum { SBB = 336, SBE = 1024, UE = 32, R = V4F_Q2K_ROWS, BE = 256 }; };
template <> struct fmt<V4F_TYPE_IQ2_XXS> { enum { SBB = 528, SBE = 2048, UE = 32, R = V4F_IQ2_ROWS, BE = 256 }; };

__device__ __forceinline__ void ldx4(const float *p, float *r) {
    const float4 v = __ldg((const float4 *)p);
    r[0] = v.x, r[1] = v.y, r[2] = v.z, r[3] = v.w;
}

/* x values of unit u (xc: x at the chunk start, 16-byte aligned), and the
 * per-sub-block sums of x the K-quants need for their mins. */
template <int T> __device__ __forceinline__ void load_x(const float *xc, int u, float *xr, float *xs) {
    if constexpr (T == V4F_TYPE_F32) {
        ldx4(xc + 4 * u, xr);
    } else if constexpr (T == V4F_TYPE_F16 || T == V4F_TYPE_BF16 || T == V4F_TYPE_Q8_0) {
        ldx4(xc + 8 * u, xr);
        ldx4(xc + 8 * u + 4, xr + 4);
    } else if constexpr (T == V4F_TYPE_Q4_K) {
        /* unit = (block u/8, qs pair p, half hh): sub-blocks 2p and 2p+1,
         * elements l in [16hh, 16hh + 16) of each */
        const int b = u >> 3, p = (u >> 1) & 3, hh = u & 1;
        const float *x0 = xc + 256 * b + 64 * p + 16 * hh;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            ldx4(x0 + 4 * i, xr + 4 * i);
            ldx4(x0 + 32 + 4 * i, xr + 16 + 4 * i);
        }
        float s0 = 0, s1 = 0;
#pragma unroll
        for (int i = 0; i < 16; i++) s0 += xr[i], s1 += xr[16 + i];
        xs[0] = s0, xs[1] = s1;
    } else if constexpr (T == V4F_TYPE_Q2_K) {
        /* unit = (block u/8, half h, scale half i, shift pair sp): elements
         * 128h + 32s + 16i + l for the shifts s = 2sp + ss, ss in {0, 1},
         * and l in [0, 16) */
        const int b = u >> 3, h = (u >> 2) & 1, i = (u >> 1) & 1, sp = u & 1;
        const float *x0 = xc + 256 * b + 128 * h + 16 * i + 64 * sp;
#pragma unroll
        for (int ss = 0; ss < 2; ss++) {
#pragma unroll
            for (int v = 0; v < 4; v++) ldx4(x0 + 32 * ss + 4 * v, xr + 16 * ss + 4 * v);
            float t = 0;
#pragma unroll
            for (int l = 0; l < 16; l++) t += xr[16 * ss + l];
            xs[ss] = t;
        }
    } else { /* IQ2_XXS: unit = (block u/8, group u%8) = 32 consecutive elements */
#pragma unroll
        for (int v = 0; v < 8; v++) ldx4(xc + 32 * u + 4 * v, xr + 4 * v);
    }
}

/* Dot of unit u of one row (s: the row's chunk in shared memory, 16-byte
 * aligned) with the unit's x values. grid_tab: the IQ2_XXS grid in shared
 * memory (IQ2_XXS only). */
template <int T>
__device__ __forceinline__ float dot_unit(const uint8_t *s, int u, const float *xr, const float *xs,
                                          const uint64_t *grid_tab) {
    if constexpr (T == V4F_TYPE_F32) {
        const float4 w = *(const float4 *)(s + 16 * u);
        return w.x * xr[0] + w.y * xr[1] + w.z * xr[2] + w.w * xr[3];
    } else if constexpr (T == V4F_TYPE_F16) {
        const uint4 w = *(const uint4 *)(s + 16 * u);
        const uint32_t ws[4] = {w.x, w.y, w.z, w.w};
        float acc = 0;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const float2 f = __half22float2(*(const __half2 *)&ws[i]);
            acc = fmaf(f.x, xr[2 * i], acc);
            acc = fmaf(f.y, xr[2 * i + 1], acc);
        }
        return acc;
    } else if constexpr (T == V4F_TYPE_BF16) {
        const uint4 w = *(const uint4 *)(s + 16 * u);
        const uint32_t ws[4] = {w.x, w.y, w.z, w.w};
        float acc = 0;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            acc = fmaf(__uint_as_float(ws[i] << 16), xr[2 * i], acc);
            acc = fmaf(__uint_as_float(ws[i] & 0xffff0000u), xr[2 * i + 1], acc);
        }
        return acc;
    } else if constexpr (T == V4F_TYPE_Q8_0) {
        const int b = u >> 2, q = u & 3;
        const float d = f16_to_f32(*(const uint16_t *)(s + 34 * b));
        uint32_t lo, hi;
        lds_8at2(s, 34u * b + 2u + 8u * q, &lo, &hi);
        lo ^= 0x80808080u, hi ^= 0x80808080u;
        float acc = 0;
#pragma unroll
        for (int k = 0; k < 4; k++) acc = fmaf(sbyte_f(lo, k), xr[k], acc);
#pragma unroll
        for (int k = 0; k < 4; k++) acc = fmaf(sbyte_f(hi, k), xr[4 + k], acc);
        return d * acc;
    } else if constexpr (T == V4F_TYPE_Q4_K) {
        const int b = u >> 3, p = (u >> 1) & 3, hh = u & 1;
        const uint8_t *blk = s + 144 * b;
        const uint32_t dd = *(const uint32_t *)blk;
        const uint32_t s0 = *(const uint32_t *)(blk + 4), s1 = *(const uint32_t *)(blk + 8),
                       s2 = *(const uint32_t *)(blk + 12);
        const uint4 qv = *(const uint4 *)(blk + 16 + 32 * p + 16 * hh);
        /* 6-bit scale/min of sub-blocks j = 2p + t (MODEL.md 10, Q4_K) */
        const int k = (2 * p) & 3, sh0 = 8 * k, sh1 = 8 * k + 8;
        uint32_t sc0, sc1, m0, m1;
        if (p < 2) {
            sc0 = (s0 >> sh0) & 63, sc1 = (s0 >> sh1) & 63;
            m0 = (s1 >> sh0) & 63, m1 = (s1 >> sh1) & 63;
        } else {
            sc0 = ((s2 >> sh0) & 15) | (((s0 >> sh0) & 0xc0) >> 2);
            sc1 = ((s2 >> sh1) & 15) | (((s0 >> sh1) & 0xc0) >> 2);
            m0 = ((s2 >> sh0) & 0xf0) >> 4 | (((s1 >> sh0) & 0xc0) >> 2);
            m1 = ((s2 >> sh1) & 0xf0) >> 4 | (((s1 >> sh1) & 0xc0) >> 2);
        }
        const uint32_t qw[4] = {qv.x, qv.y, qv.z, qv.w};
        float a0 = 0, a1 = 0;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const uint32_t lo = qw[i] & 0x0f0f0f0fu, hi = (qw[i] >> 4) & 0x0f0f0f0fu;
#pragma unroll
            for (int t = 0; t < 4; t++) {
                a0 = fmaf(byte_f(lo, t), xr[4 * i + t], a0);
                a1 = fmaf(byte_f(hi, t), xr[16 + 4 * i + t], a1);
            }
        }
        const float d = f16_to_f32(dd), dmin = f16_to_f32(dd >> 16);
        return d * ((float)sc0 * a0 + (float)sc1 * a1) - dmin * ((float)m0 * xs[0] + (float)m1 * xs[1]);
    } else if constexpr (T == V4F_TYPE_Q2_K) {
        const int b = u >> 3, h = (u >> 2) & 1, i = (u >> 1) & 1, sp = u & 1;
        const uint8_t *blk = s + 84 * b; /* 4-byte aligned */
        const uint32_t *qp = (const uint32_t *)(blk + 16 + 32 * h + 16 * i);
        const uint32_t qw[4] = {qp[0], qp[1], qp[2], qp[3]};
        /* scale bytes 8h + 2s + i for s = 2sp + ss: byte 2ss + i of word sp */
        const uint32_t sw = *(const uint32_t *)(blk + 8 * h + 4 * sp);
        const uint32_t dd = *(const uint32_t *)(blk + 80);
        float dsum = 0, msum = 0;
#pragma unroll
        for (int ss = 0; ss < 2; ss++) {
            const uint32_t sc = (sw >> (8 * (2 * ss + i))) & 255;
            const int shift = 4 * sp + 2 * ss;
            float a = 0;
#pragma unroll
            for (int v = 0; v < 4; v++) {
                const uint32_t c = (qw[v] >> shift) & 0x03030303u;
#pragma unroll
                for (int t = 0; t < 4; t++) a = fmaf(byte_f(c, t), xr[16 * ss + 4 * v + t], a);
            }
            dsum = fmaf((float)(sc & 15), a, dsum);
            msum = fmaf((float)(sc >> 4), xs[ss], msum);
        }
        return f16_to_f32(dd) * dsum - f16_to_f32(dd >> 16) * msum;
    } else { /* IQ2_XXS */
        const int b = u >> 3, g = u & 7;
        const float d = f16_to_f32(*(const uint16_t *)(s + 66 * b));
        uint32_t A, B;
        lds_8at2(s, 66u * b + 2u + 8u * g, &A, &B);
        float acc = 0;
#pragma unroll
        for (int l = 0; l < 4; l++) {
            const uint64_t grid = grid_tab[(A >> (8 * l)) & 255];
            const uint32_t g0 = (uint32_t)grid, g1 = (uint32_t)(grid >> 32);
            const uint32_t signs = ksign_mask((B >> (7 * l)) & 127);
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const uint32_t flip = (signs << (31 - j)) & 0x80000000u;
                const float xv = __uint_as_float(__float_as_uint(xr[8 * l + j]) ^ flip);
                acc = fmaf(byte_f(j < 4 ? g0 : g1, j & 3), xv, acc);
            }
        }
        return d * (0.5f + (float)(B >> 28)) * 0.25f * acc;
    }
}

/* ---- int8-plane activations (Q2_K, Q4_K, IQ2_XXS) ------------------------- */

/* For the low-bit types the f32 path is bound by instruction issue (about 3
 * instructions per weight to turn a code into a float and multiply), not by
 * DRAM. There, x is first split per group of 32 into three int8 planes,
 * x ~= d (p1 + p2 / 128 + p3 / 16384) with d = max|x| / 127, so that the
 * residual is below d / 32768 (about 2.4e-7 max|x|, near f32 rounding), and
 * the codes are multiplied with __dp4a (4 products per instruction, exact
 * int32 sums). Slot layout for n_in elements: planes p1, p2, p3 (n_in bytes
 * each), d[n_in / 32] (float), s16[n_in / 16] (float sums of x over runs of
 * 16, for the K-quant mins). A group containing a non-finite x gets d = NaN
 * so that the result is NaN, as in the f32 path. */

#define QX_MAX_IN 16384 /* n_in of the largest low-bit matrix the scratch fits */

__host__ __device__ static inline size_t qx_slot_bytes(int64_t n_in) {
    const size_t b = (size_t)n_in * 3 + (size_t)(n_in / 32) * 4 + (size_t)(n_in / 16) * 4;
    return (b + 255) / 256 * 256;
}

typedef struct qx_args {
    const float *x[V4F_CUDA_MATVEC_MAX_BATCH];
    uint8_t *q[V4F_CUDA_MATVEC_MAX_BATCH];
    int64_t n_in;
    /* rows mode (ldx > 0): slot y is x[0] + y ldx into q[0] + y qstride */
    int64_t ldx;
    uint64_t qstride;
    int perm; /* planes in the IQ2_XXS weight order (iq2_perm_x) */
    /* let the next kernel launch before this one's wait: only where that
     * kernel reads nothing but weights before its own wait (the matvec
     * that prepare_planes precedes), so it requests them one kernel
     * earlier; "kernel N + 1 launched => N - 1 done" no longer holds for it */
    int trigger_first;
} qx_args;

/* One warp per group of 32 elements; blockIdx.y = slot. */
__global__ void __launch_bounds__(256) k_quant_x(const __grid_constant__ qx_args a) {
    if (a.trigger_first) v4f_pdl_trigger();
    V4F_PDL_ENTRY();
    const int64_t n = a.n_in;
    const int64_t g = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (g >= n / 32) return; /* uniform over the warp */
    const int lane = threadIdx.x & 31;
    uint8_t *base = a.ldx ? a.q[0] + (uint64_t)blockIdx.y * a.qstride : a.q[blockIdx.y];
    const float v = (a.ldx ? a.x[0] + (int64_t)blockIdx.y * a.ldx : a.x[blockIdx.y])[32 * g + lane];
    /* element j of a group of 8 at byte iq2_nib(j) in the permuted order */
    const int at = a.perm ? (lane & 24) + iq2_nib(lane & 7) : lane;
    dev_quant_x_group(v, lane, at, base, n, g);
}

/* The x planes of one unit of 32 consecutive elements starting at e0. */
struct xq_unit {
    uint32_t p[3][8]; /* 32 int8 per plane */
    float d;          /* group scale */
    float s0, s1;     /* sums of x over [e0, e0 + 16) and [e0 + 16, e0 + 32) */
};

/* NP: the planes a kernel multiplies, 3 or 2 (v4f_cuda_set_x_planes; the
 * kernels are instantiated per count, p[2] unused with 2) */
template <int NP> __device__ __forceinline__ void load_xq(const uint8_t *xq, int64_t n_in, int64_t e0, xq_unit *x) {
#pragma unroll
    for (int k = 0; k < NP; k++) {
        const uint4 *src = (const uint4 *)(xq + k * n_in + e0);
        const uint4 a = __ldg(src), b = __ldg(src + 1);
        x->p[k][0] = a.x, x->p[k][1] = a.y, x->p[k][2] = a.z, x->p[k][3] = a.w;
        x->p[k][4] = b.x, x->p[k][5] = b.y, x->p[k][6] = b.z, x->p[k][7] = b.w;
    }
    const float *d = (const float *)(xq + 3 * n_in);
    x->d = __ldg(d + e0 / 32);
    const float2 s = __ldg((const float2 *)(d + n_in / 32 + e0 / 16));
    x->s0 = s.x, x->s1 = s.y;
}

/* sum over words [w0, w0 + nw) of codes . x planes (NP of them), combined
 * in float; with two planes s3 stays 0 and adds +0.0f */
template <int NW, int NP>
__device__ __forceinline__ float dot_planes(const uint32_t *codes, const xq_unit *x, int w0) {
    int s1 = 0, s2 = 0, s3 = 0;
#pragma unroll
    for (int w = 0; w < NW; w++) {
        s1 = __dp4a((int)codes[w], (int)x->p[0][w0 + w], s1);
        s2 = __dp4a((int)codes[w], (int)x->p[1][w0 + w], s2);
        if (NP == 3) s3 = __dp4a((int)codes[w], (int)x->p[2][w0 + w], s3);
    }
    /* |s1| <= 32 * 127 * 127, so s1 * 128 + s2 is exact in int32 */
    return (float)(s1 * 128 + s2) * (1.0f / 128.0f) + (float)s3 * (1.0f / 16384.0f);
}

/* dp4a of unsigned bytes a with signed bytes b */
__device__ __forceinline__ int dp4a_us(uint32_t a, uint32_t b, int c) {
    int d;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

/* dot_planes<4, 2> of 16 Q2_K codes left in place (code << 2s, <= 192:
 * one AND a word instead of a shift and an AND), the sum scaled back by
 * 4^-s: the same value as dot_planes'. The plane sums are 4^s times
 * dot_planes' (|s1 * 128 + s2| <= 16 * 3 * 127 * 129 < 2^20 there), so S1 *
 * 128 + S2 fits int32 and, a multiple of 4^s below 2^26, converts to float
 * exactly; times 2^-7-2s it is dot_planes' exact product (dot_planes adds
 * (float)0 * 2^-14 for the absent third plane, and the product is never
 * -0). Two planes only (with three, unit_acc spilled 48 bytes). H200:
 * routed down 11.8 -> 11.2 us (docs/PERF_NOTES.md, session 33). */
__device__ __forceinline__ float dot_planes_q2(const uint32_t *codes, const xq_unit *x, int w0, int s) {
    int s1 = 0, s2 = 0;
#pragma unroll
    for (int w = 0; w < 4; w++) {
        s1 = dp4a_us(codes[w], x->p[0][w0 + w], s1);
        s2 = dp4a_us(codes[w], x->p[1][w0 + w], s2);
    }
    return (float)(s1 * 128 + s2) * __int_as_float((120 - 2 * s) << 23);
}

/* 4 * NW bytes at a 2-aligned shared-memory offset as NW words (reads up to
 * 4 bytes past the end: the smem buffer has slack). */
template <int NW> __device__ __forceinline__ void lds_words_at2(const uint8_t *s, uint32_t off, uint32_t *out) {
    const uint32_t *w = (const uint32_t *)(s + (off & ~3u));
    const uint32_t sh = (off & 3u) * 8u;
    uint32_t a[NW + 1];
#pragma unroll
    for (int i = 0; i <= NW; i++) a[i] = w[i];
#pragma unroll
    for (int i = 0; i < NW; i++) out[i] = __funnelshift_r(a[i], a[i + 1], sh);
}

/* Unit u (32 elements) of the int8-plane path:
 *  Q8_0    u = block b:                    elements l
 *  Q2_K    u = (block b, half h, shift s): elements 128h + 32s + l
 *  Q4_K    u = (block b, sub-block j):     elements 32j + l
 *  IQ2_XXS u = (block b, group g):         elements 32g + l
 * so a unit is always one x group; unit_e0 gives its first element. */
template <int T> __device__ __forceinline__ int unit_e0(int u) {
    if constexpr (T == V4F_TYPE_Q2_K)
        return 256 * (u >> 3) + 128 * ((u >> 2) & 1) + 32 * (u & 3);
    else
        return 32 * u;
}

/* IQ2_XXS: the x planes of a unit in the weight order of the selector
 * prmt (see IQ2_SIGN_SPREAD): per group of 8, (0,4,1,5) and (2,6,3,7). */
template <int NP> __device__ __forceinline__ void iq2_perm_x(xq_unit *x) {
#pragma unroll
    for (int k = 0; k < NP; k++) {
#pragma unroll
        for (int w = 0; w < 8; w += 2) {
            const uint32_t a = x->p[k][w], b = x->p[k][w + 1];
            x->p[k][w] = __byte_perm(a, b, 0x5140);
            x->p[k][w + 1] = __byte_perm(a, b, 0x7362);
        }
    }
}

/* The decoded weights of one unit (32 codes) and the scale terms the
 * product needs, apart from x (unit_codes), so that a kernel that
 * multiplies one unit by several x decodes it once (k_mvexp); unit_acc
 * adds its product with one x to a sum; acc_unit_q = unit_acc(unit_codes). */
struct ucode {
    uint32_t c[8]; /* 32 codes, 4 per word (IQ2_XXS: in the iq2_perm_x order) */
    float a, b;    /* Q8_0, IQ2_XXS: a = block scale; Q2_K: a = d, b = dmin; Q4_K: a = d sc, b = dmin m */
    uint32_t k;    /* Q2_K: the two 8-bit sub-block scales (two planes: the unit's shift s in bits 16-17) */
};

template <int T, int NP> __device__ __forceinline__ void unit_codes(const uint8_t *s, int u, const uint32_t *gsel, ucode *w) {
    if constexpr (T == V4F_TYPE_Q8_0) {
        w->a = f16_to_f32(*(const uint16_t *)(s + 34 * u));
        lds_words_at2<8>(s, 34u * u + 2u, w->c);
    } else if constexpr (T == V4F_TYPE_Q2_K) {
        const int b = u >> 3, h = (u >> 2) & 1, sft = u & 3;
        const uint8_t *blk = s + 84 * b; /* 4-byte aligned */
        const uint32_t *qp = (const uint32_t *)(blk + 16 + 32 * h);
        /* two planes: the codes in place, code << 2s (unit_acc scales by
         * 4^-s, dot_planes_q2); three: shifted down */
        const uint32_t m = 0x03030303u << (2 * sft);
#pragma unroll
        for (int i = 0; i < 8; i++) w->c[i] = NP == 2 ? qp[i] & m : (qp[i] >> (2 * sft)) & 0x03030303u;
        /* scale bytes 8h + 2s (l < 16) and 8h + 2s + 1 (l >= 16) */
        w->k = (*(const uint32_t *)(blk + 8 * h + 4 * (sft >> 1)) >> (16 * (sft & 1))) & 0xffffu;
        if constexpr (NP == 2) w->k |= (uint32_t)sft << 16;
        const uint32_t dd = *(const uint32_t *)(blk + 80);
        w->a = f16_to_f32(dd);
        w->b = f16_to_f32(dd >> 16);
    } else if constexpr (T == V4F_TYPE_Q4_K) {
        const int b = u >> 3, j = u & 7;
        const uint8_t *blk = s + 144 * b;
        const uint32_t dd = *(const uint32_t *)blk;
        const uint32_t s0 = *(const uint32_t *)(blk + 4), s1 = *(const uint32_t *)(blk + 8),
                       s2 = *(const uint32_t *)(blk + 12);
        const int k = j & 3, sh = 8 * k;
        uint32_t sc, m;
        if (j < 4) {
            sc = (s0 >> sh) & 63, m = (s1 >> sh) & 63;
        } else {
            sc = ((s2 >> sh) & 15) | (((s0 >> sh) & 0xc0) >> 2);
            m = ((s2 >> sh) & 0xf0) >> 4 | (((s1 >> sh) & 0xc0) >> 2);
        }
        const uint4 *qp = (const uint4 *)(blk + 16 + 32 * (j >> 1));
        const uint4 qa = qp[0], qb = qp[1];
        const uint32_t raw[8] = {qa.x, qa.y, qa.z, qa.w, qb.x, qb.y, qb.z, qb.w};
        const int nsh = 4 * (j & 1);
#pragma unroll
        for (int i = 0; i < 8; i++) w->c[i] = (raw[i] >> nsh) & 0x0f0f0f0fu;
        w->a = f16_to_f32(dd) * (float)sc;
        w->b = f16_to_f32(dd >> 16) * (float)m;
    } else { /* IQ2_XXS */
        const int b = u >> 3, g = u & 7;
        const float d = f16_to_f32(*(const uint16_t *)(s + 66 * b));
        uint32_t A, B;
        lds_8at2(s, 66u * b + 2u + 8u * g, &A, &B);
        /* gsel is in shared memory, 1 KiB aligned (alignas at the kernels'
         * s_gsel), so an entry's address is (4 index) | base: one LOP3 after
         * the shift instead of a mask and an add per lookup */
        const uint32_t gbase = (uint32_t)__cvta_generic_to_shared(gsel);
#pragma unroll
        for (int l = 0; l < 4; l++) {
            /* signs from their definition (k and its parity, checked
             * against the CPU table at init), see IQ2_SIGN_SPREAD */
            const uint32_t k = (B >> (7 * l)) & 127;
            /* bit 30 of the grid selector is 0 (codes <= 2), so the add
             * sets it to the parity; its carry leaves through bit 31, which
             * only the high half sees (masked there) */
            const uint32_t ga = (l ? A >> (8 * l - 2) : A << 2) & 0x3fcu | gbase;
            uint32_t gs;
            asm volatile("ld.shared.u32 %0, [%1];" : "=r"(gs) : "r"(ga));
            const uint32_t sel = (gs ^ ((k * IQ2_SIGN_SPREAD) & IQ2_SIGN_BITS)) + ((uint32_t)__popc(k) << 30);
            w->c[2 * l] = v4f_prmt(IQ2_VAL_LO, IQ2_VAL_HI, sel);
            w->c[2 * l + 1] = v4f_prmt(IQ2_VAL_LO, IQ2_VAL_HI, (sel >> 16) & 0x7fffu);
        }
        w->a = d * (0.5f + (float)(B >> 28)) * 0.25f;
    }
}

/* acc plus the unit's product with one x. The roundings are spelled out
 * (_rn intrinsics are never contracted or reassociated), so an edit
 * elsewhere in a kernel cannot move an FMA and change the bits: a kernel
 * edit that should keep the results can be checked for equal bits. */
template <int T, int NP> __device__ __forceinline__ float unit_acc(const ucode *w, const xq_unit *x, float acc) {
    if constexpr (T == V4F_TYPE_Q2_K) {
        float lo, hi;
        if constexpr (NP == 2) {
            const int sft = (int)(w->k >> 16);
            lo = dot_planes_q2(w->c, x, 0, sft), hi = dot_planes_q2(w->c + 4, x, 4, sft);
        } else {
            lo = dot_planes<4, NP>(w->c, x, 0), hi = dot_planes<4, NP>(w->c + 4, x, 4);
        }
        const uint32_t sc0 = w->k & 255, sc1 = (w->k >> 8) & 255; /* (bits 16-17: s) */
        const float dsum = __fmaf_rn((float)(sc0 & 15), lo, __fmul_rn((float)(sc1 & 15), hi));
        const float msum = __fmaf_rn((float)(sc0 >> 4), x->s0, __fmul_rn((float)(sc1 >> 4), x->s1));
        return __fmaf_rn(__fmul_rn(w->a, x->d), dsum, __fmaf_rn(-w->b, msum, acc));
    } else if constexpr (T == V4F_TYPE_Q4_K) {
        return __fmaf_rn(__fmul_rn(w->a, x->d), dot_planes<8, NP>(w->c, x, 0),
                         __fmaf_rn(-w->b, __fadd_rn(x->s0, x->s1), acc));
    } else { /* Q8_0; IQ2_XXS with x in the permuted order */
        return __fmaf_rn(__fmul_rn(w->a, x->d), dot_planes<8, NP>(w->c, x, 0), acc);
    }
}

template <int T, int NP>
__device__ __forceinline__ float acc_unit_q(const uint8_t *s, int u, const xq_unit *x, const uint32_t *gsel, float acc) {
    ucode w;
    unit_codes<T, NP>(s, u, gsel, &w);
    return unit_acc<T, NP>(&w, x, acc);
}

/* ---- kernels -------------------------------------------------------------- */

typedef struct mv_pair {
    const uint8_t *w;
    const float *x;
    const uint8_t *xq; /* int8-plane slot of x (Q path only) */
    float *y;
    int64_t n_out;
    uint64_t row_bytes;
    int32_t tab_off, slot; /* indirect launches: w = tab[tab_off + ids[slot]] */
    int64_t ldy;           /* several-column launches: column j into y + j ldy */
} mv_pair;

typedef struct mv_args {
    mv_pair p[V4F_CUDA_MATVEC_MAX_BATCH];
    int64_t n_in;
    /* several x per pair (k_matvec with C > 1): column j of pair p
     * multiplies the planes at p.xq + j xq_col (int8-plane types) or the
     * floats at p.x + j x_col (the others) into p.y + j p.ldy, j < ncol <= C;
     * ncol 0: one x per pair, planes made by the launcher */
    int ncol;
    uint64_t xq_col;
    int64_t x_col;
    const void *const *tab; /* NULL: direct (p[i].w) */
    const int32_t *ids;
    int evict_first; /* the weight copies ask L2 to evict their lines first */
    int ids_ready;   /* ids written two or more launches back: read before the wait */
} mv_args;

/* The matrix of pair p: direct, or looked up on the device (routed experts). */
__device__ __forceinline__ const uint8_t *mv_w(const mv_args &a, const mv_pair &p) {
    return a.tab ? (const uint8_t *)a.tab[p.tab_off + a.ids[p.slot]] : p.w;
}

#define MV_THREADS 128 /* max threads of a fast-matvec CTA */
#ifndef V4F_MV_XHOIST
#define V4F_MV_XHOIST 1 /* k_matvec: the first unit's x requested before the weights' wait */
#endif
#ifndef MV_SHORT_ROWS
#define MV_SHORT_ROWS 8 /* Q8_0 rows per CTA when a row is one warp's worth of units (n_in <= 1024) */
#endif
#define MV_SMEM_BUDGET (32 * 1024)
#define MV_Q4K_THREADS 64 /* threads of a Q4_K int8-plane CTA */
#ifndef MV_WIDE_ROWS
#define MV_WIDE_ROWS 4096 /* Q8_0 launches of this many rows or more take MV_SHORT_ROWS rows per CTA */
#endif
#define MV_SMEM_WIDE (40 * 1024) /* ... when those rows fit this in one chunk (n_in <= 4608) */
#define MV_SMEM_SLACK 16 /* lds_8at2 may read 4 bytes past a row chunk */
#define MV_COLS 4        /* x per pair of a several-column launch (v4f_cuda_matvec_cols) */
/* Resident CTAs asked of the int8-plane instances: one column 8 (64
 * registers), two 5 (96: at 6 the 8-row instances spilled 56-216 bytes),
 * up to MV_COLS 4 (the accumulators grow with R x C). */
#define MV_MIN_BLOCKS(Q, C) ((Q) ? ((C) > 2 ? 4 : (C) > 1 ? 5 : 8) : 0)

template <int T, bool Q, int R, int C = 1, int NP = 3>
__global__ void __launch_bounds__(MV_THREADS, MV_MIN_BLOCKS(Q, C))
    k_matvec(const __grid_constant__ mv_args a, int chunk_sb) {
    /* the int8-plane path always uses units of 32 elements */
    constexpr int SBB = fmt<T>::SBB, SBE = fmt<T>::SBE, UE = fmt<T>::UE, UPS = SBE / (Q ? 32 : UE);
    extern __shared__ __align__(16) uint8_t smem[];
    __shared__ float red[MV_THREADS / 32][R * C];
    /* IQ2_XXS: per-lane random grid reads; shared memory serves them with
     * fewer wavefronts than L1 (filled before the first barrier below) */
    __shared__ uint64_t s_grid[T == V4F_TYPE_IQ2_XXS && !Q ? 256 : 1];
    __shared__ alignas(T == V4F_TYPE_IQ2_XXS && Q ? 1024 : 4) uint32_t s_gsel[T == V4F_TYPE_IQ2_XXS && Q ? 256 : 1];

    const mv_pair &p = a.p[blockIdx.y];
    const int64_t row0 = (int64_t)blockIdx.x * R;
    if (row0 >= p.n_out) return; /* uniform over the CTA */
    const int nrows = (int)min((int64_t)R, p.n_out - row0);
    const int64_t n_sb = a.n_in / SBE;
    const int chunk_bytes = chunk_sb * SBB;
    /* bulk copies where they measured faster: CTAs of 8 or more rows (H200,
     * session 9: q_b 14.0 -> 12.6 us, experts gate+up 26.7 -> 24.7; with 2
     * rows out_b went 15.3 -> 16.4) */
    constexpr bool BULK = V4F_BULK && R >= 8;
    /* bulk copies: completion of the current chunk's first and second half
     * of the rows, so the first half is multiplied while the second lands
     * (H200, session 13: the expert kernels alone unchanged, 21.5 -> 21.7
     * and 12.4 -> 12.3 us; decode in the graph 126.5 -> 127.8 t/s) */
    constexpr int RH = R / 2;
    __shared__ uint64_t mbar[2];
    const uint64_t pol = a.evict_first ? l2_evict_first_policy() : 0;
    auto bcopy = [&](void *d, const void *s, uint32_t n, uint64_t *bar) {
        if (a.evict_first) bulk_copy_hint(d, s, n, bar, pol);
        else bulk_copy(d, s, n, bar);
    };
    auto issue = [&](const uint8_t *pw, int64_t sb0) {
        const int nsb = (int)min((int64_t)chunk_sb, n_sb - sb0);
        const uint8_t *src0 = pw + (uint64_t)row0 * p.row_bytes + (uint64_t)sb0 * SBB;
        if (BULK) {
            if (threadIdx.x != 0) return;
            const uint32_t bytes = (uint32_t)(nsb * SBB);
            const bool contiguous = bytes == (uint32_t)chunk_bytes && (uint64_t)chunk_bytes == p.row_bytes;
            for (int h = 0; h < 2; h++) {
                const int r0 = h * RH, r1 = min(nrows, r0 + RH);
                mbar_expect(&mbar[h], r1 > r0 ? bytes * (uint32_t)(r1 - r0) : 0u);
                if (r1 > r0 && contiguous)
                    bcopy(smem + r0 * chunk_bytes, src0 + (uint64_t)r0 * p.row_bytes, bytes * (uint32_t)(r1 - r0),
                          &mbar[h]);
                else
                    for (int r = r0; r < r1; r++)
                        bcopy(smem + r * chunk_bytes, src0 + (uint64_t)r * p.row_bytes, bytes, &mbar[h]);
            }
            return;
        }
        const int nvec = nsb * (SBB / 16);
        for (int r = 0; r < nrows; r++) {
            const uint8_t *src = src0 + (uint64_t)r * p.row_bytes;
            uint8_t *dst = smem + r * chunk_bytes;
            if (a.evict_first)
                for (int v = threadIdx.x; v < nvec; v += blockDim.x) cp_async16_hint(dst + 16 * v, src + 16 * v, pol);
            else
                for (int v = threadIdx.x; v < nvec; v += blockDim.x) cp_async16(dst + 16 * v, src + 16 * v);
        }
    };
    if (BULK && threadIdx.x == 0) mbar_init(&mbar[0]), mbar_init(&mbar[1]);
    /* A direct matrix does not depend on earlier kernels: its first chunk
     * is requested before waiting for them (programmatic dependent launch,
     * cuda_common.cuh); an indirect one is picked by an earlier kernel, so
     * only where the caller says that kernel is done (ids_ready). */
    const bool early = a.tab == NULL || a.ids_ready;
    if (early) issue(mv_w(a, p), 0);
    V4F_PDL_ENTRY();
    const uint8_t *pw = mv_w(a, p);

    float acc[R][C];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int j = 0; j < C; j++) acc[r][j] = 0;
    if constexpr (T == V4F_TYPE_IQ2_XXS && Q)
        for (int i = threadIdx.x; i < 256; i += blockDim.x) s_gsel[i] = g_iq2xxs_sel[i];
    else if constexpr (T == V4F_TYPE_IQ2_XXS)
        for (int i = threadIdx.x; i < 256; i += blockDim.x) s_grid[i] = g_iq2xxs_grid[i];

    if (BULK) __syncthreads(); /* the barrier's init (and the grid table) before anyone waits */
    uint32_t phase = 0;
    for (int64_t sb0 = 0; sb0 < n_sb; sb0 += chunk_sb) {
        const int nsb = (int)min((int64_t)chunk_sb, n_sb - sb0);
        if (!early || sb0 > 0) issue(pw, sb0);
        const int nunits = nsb * UPS;
        /* Q8_0, one column, two planes: the x of the thread's first unit is
         * requested before the wait for the weights, so the two latencies
         * overlap (the other types' instances spilled 32-164 bytes with it;
         * the q2 experts' x is loaded early by k_mvfix) */
        constexpr bool XH = Q && C == 1 && NP == 2 && T == V4F_TYPE_Q8_0 && V4F_MV_XHOIST;
        xq_unit xh;
        if (XH && threadIdx.x < nunits) load_xq<NP>(p.xq, a.n_in, sb0 * SBE + unit_e0<T>(threadIdx.x), &xh);
        if (BULK) { /* the barrier's completion makes the bytes visible to every waiter */
            mbar_wait(&mbar[0], phase);
        } else {
            cp_async_wait_all();
            __syncthreads();
        }
        /* rows past the end recompute the last valid row (no branch, no
         * unwritten shared memory); their sums are dropped */
        if constexpr (Q && C == 2 && (T == V4F_TYPE_Q8_0 || T == V4F_TYPE_Q4_K)) {
            /* two columns (a 2-token eval, a speculative verify step): the x
             * of both held at once and each row's unit decoded once for
             * them (unit_codes, then unit_acc per column: the arithmetic of
             * acc_unit_q, so the same bits as the loop below). Q2_K and
             * IQ2_XXS keep that loop: this form spilled 88 / 56 bytes there
             * at 96 registers (their several-column launches are rare: the
             * routed experts of a few tokens go pair by pair). */
            for (int u = threadIdx.x; u < nunits; u += blockDim.x) {
                xq_unit xu[2];
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    if (j >= a.ncol) break; /* uniform */
                    load_xq<NP>(p.xq + j * a.xq_col, a.n_in, sb0 * SBE + unit_e0<T>(u), &xu[j]);
                }
#pragma unroll
                for (int r = 0; r < R; r++) {
                    if (BULK && r == RH) mbar_wait(&mbar[1], phase);
                    ucode w;
                    unit_codes<T, NP>(smem + min(r, nrows - 1) * chunk_bytes, u, s_gsel, &w);
#pragma unroll
                    for (int j = 0; j < 2; j++) {
                        if (j >= a.ncol) break;
                        acc[r][j] = unit_acc<T, NP>(&w, &xu[j], acc[r][j]);
                    }
                }
            }
        } else if constexpr (Q) {
            /* x of unit u (in the weight order) times its rows, column j */
            auto unit_rows = [&](int u, int j, xq_unit &xu) {
                if constexpr (T == V4F_TYPE_IQ2_XXS) iq2_perm_x<NP>(&xu);
#pragma unroll
                for (int r = 0; r < R; r++) {
                    if (BULK && r == RH) mbar_wait(&mbar[1], phase);
                    acc[r][j] = acc_unit_q<T, NP>(smem + min(r, nrows - 1) * chunk_bytes, u, &xu, s_gsel, acc[r][j]);
                }
            };
            int u = threadIdx.x;
            if (XH && u < nunits) { /* the first unit's x, loaded above */
                unit_rows(u, 0, xh);
                u += blockDim.x;
            }
            for (; u < nunits; u += blockDim.x) {
#pragma unroll
                for (int j = 0; j < C; j++) {
                    if (C > 1 && j >= a.ncol) break; /* uniform */
                    xq_unit xu;
                    load_xq<NP>(p.xq + j * a.xq_col, a.n_in, sb0 * SBE + unit_e0<T>(u), &xu);
                    unit_rows(u, j, xu);
                }
            }
        } else {
            for (int u = threadIdx.x; u < nunits; u += blockDim.x) {
#pragma unroll
                for (int j = 0; j < C; j++) {
                    if (C > 1 && j >= a.ncol) break; /* uniform */
                    float xr[UE], xs[4];
                    load_x<T>(p.x + (C > 1 ? j * a.x_col : 0) + sb0 * SBE, u, xr, xs);
#pragma unroll
                    for (int r = 0; r < R; r++) {
                        if (BULK && r == RH) mbar_wait(&mbar[1], phase);
                        acc[r][j] += dot_unit<T>(smem + min(r, nrows - 1) * chunk_bytes, u, xr, xs, s_grid);
                    }
                }
            }
        }
        __syncthreads(); /* smem is overwritten by the next chunk */
        phase ^= 1u;
    }

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int ncol = C > 1 ? a.ncol : 1;
    {
        /* the R x C sums at once (unused columns sum their zeros) */
        constexpr int N = R * C;
        const float v = warp_sum_n<N>(&acc[0][0], lane);
        if ((lane & (32 / N - 1)) == 0) red[warp][lane / (32 / N)] = v;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < nrows * ncol; i += blockDim.x) {
        const int r = i % nrows, j = i / nrows;
        float v = 0;
        for (int w = 0; w < (int)(blockDim.x >> 5); w++) v += red[w][r * C + j];
        p.y[(C > 1 ? j * p.ldy : 0) + row0 + r] = v;
    }
}

/* The fixed shapes (mv_fixed_chunk: the q2 model's routed gate/up and
 * down; rows of one CB-byte chunk, packed, all R-row tiles full): TT tiles
 * per CTA, each requested as the one before it is multiplied; each
 * thread's x unit (one per thread) loaded once for all tiles, before the
 * wait for the weights. Per row the same operations in the same order as
 * k_matvec (one unit per thread, warp_sum_n, the warps' sums added in
 * order), so the same bits. */
#define MVFIX_MAX_TILES 4

template <int T, int NP, int CB, int TT>
__global__ void __launch_bounds__(MV_THREADS, MV_MIN_BLOCKS(true, 1)) k_mvfix(const __grid_constant__ mv_args a) {
    constexpr int R = fmt<T>::R, TB = R * CB; /* bytes of a tile */
    extern __shared__ __align__(16) uint8_t smem[];
    __shared__ float red[MV_THREADS / 32][R];
    __shared__ alignas(T == V4F_TYPE_IQ2_XXS ? 1024 : 4) uint32_t s_gsel[T == V4F_TYPE_IQ2_XXS ? 256 : 1];
#if V4F_BULK
    __shared__ uint64_t mbar[TT]; /* tile t's copy landed */
#endif
    const mv_pair &p = a.p[blockIdx.y];
    const int ntiles = (int)(p.n_out / R), t0 = (int)blockIdx.x * TT;
    if (t0 >= ntiles) return; /* uniform over the CTA */
    const int nt = min(TT, ntiles - t0);
    /* tile t's copy (bulk: thread 0 alone); each tile has its own buffer */
    auto issue = [&](const uint8_t *pw, int t) {
        const uint8_t *src = pw + (uint64_t)(t0 + t) * TB;
#if V4F_BULK
        if (threadIdx.x != 0) return;
        mbar_expect(&mbar[t], (uint32_t)TB);
        if (a.evict_first) bulk_copy_hint(smem + t * TB, src, (uint32_t)TB, &mbar[t], l2_evict_first_policy());
        else bulk_copy(smem + t * TB, src, (uint32_t)TB, &mbar[t]);
#else
        for (int v = threadIdx.x; v < TB / 16; v += blockDim.x) cp_async16(smem + t * TB + 16 * v, src + 16 * v);
        asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
    };
#if V4F_BULK
    if (threadIdx.x == 0)
        for (int t = 0; t < TT; t++) mbar_init(&mbar[t]);
#endif
    const bool early = a.tab == NULL || a.ids_ready;
    if (early) issue(mv_w(a, p), 0);
    V4F_PDL_ENTRY();
    const uint8_t *pw = mv_w(a, p);
    if (!early) issue(pw, 0);
    if constexpr (T == V4F_TYPE_IQ2_XXS)
        for (int i = threadIdx.x; i < 256; i += blockDim.x) s_gsel[i] = g_iq2xxs_sel[i];
    const int u = threadIdx.x; /* blockDim.x: the units of a row */
    xq_unit xu;
    load_xq<NP>(p.xq, a.n_in, unit_e0<T>(u), &xu);
    if constexpr (T == V4F_TYPE_IQ2_XXS) iq2_perm_x<NP>(&xu);
    __syncthreads(); /* the table, the barriers' init */
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int t = 0; t < nt; t++) {
        /* the next tile is requested as this one is multiplied (all at the
         * start queued each SM's later CTAs' first tiles behind the first
         * CTAs' last ones) */
        if (t + 1 < nt) issue(pw, t + 1);
#if V4F_BULK
        mbar_wait(&mbar[t], 0);
#else
        if (t + 1 < nt) asm volatile("cp.async.wait_group 1;\n" ::: "memory");
        else asm volatile("cp.async.wait_group 0;\n" ::: "memory");
        __syncthreads();
#endif
        float acc[R];
#pragma unroll
        for (int r = 0; r < R; r++) acc[r] = acc_unit_q<T, NP>(smem + t * TB + r * CB, u, &xu, s_gsel, 0.0f);
        const float v = warp_sum_n<R>(acc, lane);
        if ((lane & (32 / R - 1)) == 0) red[warp][lane / (32 / R)] = v;
        __syncthreads();
        if (threadIdx.x < R) {
            float y = 0;
            for (int w = 0; w < (int)(blockDim.x >> 5); w++) y += red[w][threadIdx.x];
            p.y[(int64_t)(t0 + t) * R + threadIdx.x] = y;
        }
        __syncthreads(); /* red is reused */
    }
}

#define MV_SLOW_WARPS 4

template <int T> __global__ void __launch_bounds__(32 * MV_SLOW_WARPS) k_matvec_slow(const __grid_constant__ mv_args a) {
    V4F_PDL_ENTRY();
    const mv_pair &p = a.p[blockIdx.y];
    const int64_t row = (int64_t)blockIdx.x * MV_SLOW_WARPS + (threadIdx.x >> 5);
    if (row >= p.n_out) return; /* uniform over the warp */
    const uint8_t *w = mv_w(a, p) + (uint64_t)row * p.row_bytes;
    float acc = 0;
    for (int64_t e = threadIdx.x & 31; e < a.n_in; e += 32) acc = fmaf(elem<T>(w, e), p.x[e], acc);
    acc = warp_sum(acc);
    if ((threadIdx.x & 31) == 0) p.y[row] = acc;
}

/* Routed experts, several tokens per matrix read (k_mvexp): CTA (x, y, z)
 * multiplies rows [MX_ROWS x, MX_ROWS x + MX_ROWS) of the y-th expert that
 * has pairs (act) in matrix z (gate / up / down: tab_off[z]) by the x of
 * every pair routed to it. The rows come into shared memory once, each at
 * a 16-byte aligned stride. Warp w owns rows MX_RW w .. MX_RW w + MX_RW - 1
 * and lane l the units l, l + 32, ...: per unit the warp's rows are decoded
 * once (unit_codes) and applied to up to MX_PASS pairs' x planes
 * (unit_acc); each lane sums its units in order, then warp_sum: per (row,
 * pair) a fixed order, so results do not depend on the bucket order. x
 * planes: one row per token (gate/up: row p / xdiv, xdiv = k) or per pair
 * (down: xdiv = 1), in the weight order of the type (v4f_cuda_quant_rows).
 * Rows per warp and pairs per pass: of (4, 4), (4, 2), (2, 8), (2, 4), (2,
 * 2), (1, 8) and 8 rows per warp with 4 lanes per row, (4, 4) was the
 * fastest on the H100 for evals of 64 to 256 tokens (docs/PERF_NOTES.md,
 * session 17). */
typedef struct mx_args {
    const void *const *tab;
    int32_t tab_off[V4F_CUDA_MVEXP_MATS];
    float *y[V4F_CUDA_MVEXP_MATS];
    int64_t ldy;
    const int32_t *act, *offs, *elist;
    const uint8_t *xq;
    uint64_t xq_stride;
    int32_t xdiv;
    int64_t n_in, n_out;
    uint64_t row_bytes;
    uint32_t rs; /* shared-memory row stride */
} mx_args;

#define MX_THREADS 128
#define MX_RW 4                          /* rows per warp */
#define MX_ROWS (MX_THREADS / 32 * MX_RW) /* rows per CTA */
#define MX_PASS 4                        /* pairs per pass over the rows */
#define MX_SMEM_MAX (96 * 1024)          /* opted in above 40 KB (16 Q8_0 rows of 4096: 70 KB) */

template <int T, int NP> __global__ void __launch_bounds__(MX_THREADS, 4) k_mvexp(const __grid_constant__ mx_args a) {
    constexpr int RW = MX_RW, C = MX_PASS, R = MX_ROWS;
    extern __shared__ __align__(16) uint8_t smem[];
    __shared__ alignas(T == V4F_TYPE_IQ2_XXS ? 1024 : 4) uint32_t s_gsel[T == V4F_TYPE_IQ2_XXS ? 256 : 1];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    V4F_PDL_ENTRY();
    if ((int)blockIdx.y >= __ldg(a.act)) return; /* uniform over the CTA */
    const int e = __ldg(a.act + 1 + blockIdx.y);
    const int beg = __ldg(a.offs + e), cnt = __ldg(a.offs + e + 1) - beg;
    const int64_t row0 = (int64_t)blockIdx.x * R;
    const int nrows = (int)min((int64_t)R, a.n_out - row0);
    if (cnt <= 0 || nrows <= 0) return;
    const uint8_t *src = (const uint8_t *)a.tab[a.tab_off[blockIdx.z] + e] + (uint64_t)row0 * a.row_bytes;
    const int rb = (int)a.row_bytes;
    if (((uintptr_t)src & 15) == 0 && rb % 16 == 0) {
        const int nv = rb / 16;
        for (int i = tid; i < nrows * nv; i += MX_THREADS) {
            const int r = i / nv, v = i - r * nv;
            cp_async16(smem + r * a.rs + 16 * v, src + r * rb + 16 * v);
        }
    } else { /* rows not 16-byte aligned (small models): 2-byte loads (row_bytes is even for every type) */
        const int nh = rb / 2;
        for (int i = tid; i < nrows * nh; i += MX_THREADS) {
            const int r = i / nh, h = i - r * nh;
            *(uint16_t *)(smem + r * a.rs + 2 * h) = __ldg((const uint16_t *)(src + r * rb) + h);
        }
    }
    if constexpr (T == V4F_TYPE_IQ2_XXS)
        for (int i = tid; i < 256; i += MX_THREADS) s_gsel[i] = g_iq2xxs_sel[i];
    cp_async_wait_all();
    __syncthreads();

    const uint8_t *rows[RW];
#pragma unroll
    for (int r = 0; r < RW; r++) rows[r] = smem + min(warp * RW + r, nrows - 1) * a.rs;
    const int U = (int)(a.n_in / 32);
    float *y = a.y[blockIdx.z];
    for (int c0 = 0; c0 < cnt; c0 += C) {
        const int nc = min(C, cnt - c0);
        int32_t xr[C];
#pragma unroll
        for (int j = 0; j < C; j++) xr[j] = __ldg(a.elist + beg + c0 + min(j, nc - 1)) / a.xdiv;
        float acc[RW][C];
#pragma unroll
        for (int r = 0; r < RW; r++)
#pragma unroll
            for (int j = 0; j < C; j++) acc[r][j] = 0.f;
        for (int u = lane; u < U; u += 32) {
            ucode w[RW];
#pragma unroll
            for (int r = 0; r < RW; r++) unit_codes<T, NP>(rows[r], u, s_gsel, &w[r]);
            const int64_t e0 = unit_e0<T>(u);
#pragma unroll
            for (int j = 0; j < C; j++) {
                if (j < nc) { /* uniform */
                    xq_unit xu;
                    load_xq<NP>(a.xq + (uint64_t)xr[j] * a.xq_stride, a.n_in, e0, &xu);
#pragma unroll
                    for (int r = 0; r < RW; r++) acc[r][j] = unit_acc<T, NP>(&w[r], &xu, acc[r][j]);
                }
            }
        }
#pragma unroll
        for (int j = 0; j < C; j++) {
            if (j >= nc) break;
            const int64_t p = __ldg(a.elist + beg + c0 + j);
#pragma unroll
            for (int r = 0; r < RW; r++) {
                const float v = warp_sum(acc[r][j]);
                if (lane == 0 && warp * RW + r < nrows) y[p * a.ldy + row0 + warp * RW + r] = v;
            }
        }
    }
}

template <int T>
__global__ void k_dequant(const uint8_t *w, uint64_t row_bytes, int64_t n_in, int64_t n_total, float *dst) {
    V4F_PDL_ENTRY();
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n_total; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / n_in, e = i - r * n_in;
        dst[i] = elem<T>(w + (uint64_t)r * row_bytes, e);
    }
}

/* ---- host side ------------------------------------------------------------- */

v4f_status v4f_cuda_quant_init(v4f_cuda *c, v4f_err *err) {
    /* The sign table is computed on the device from its definition; make
     * sure the CPU table agrees (both come from MODEL.md 10). */
    for (uint32_t k = 0; k < 128; k++) {
        const uint32_t want = k | ((uint32_t)(__builtin_popcount(k) & 1) << 7);
        if (v4f_quant_ksigns[k] != want)
            return v4f_err_set(err, V4F_STATUS_FORMAT, "cuda: ksigns[%u] = %u, expected %u", k, v4f_quant_ksigns[k],
                               want);
    }
    uint32_t sel[256];
    for (int i = 0; i < 256; i++) {
        sel[i] = 0;
        for (int j = 0; j < 8; j++) {
            const uint32_t v = (uint32_t)(v4f_quant_iq2xxs_grid[i] >> (8 * j)) & 255u;
            const int code = v4f_quant_iq2xxs_mag_code(v);
            if (code < 0)
                return v4f_err_set(err, V4F_STATUS_FORMAT, "cuda: iq2xxs grid[%d] byte %d = %u, expected 8, 25 or 43",
                                   i, j, v);
            sel[i] |= (uint32_t)code << (4 * iq2_nib(j));
        }
    }
    CUDA_TRY(cudaMemcpyToSymbolAsync(g_iq2xxs_grid, v4f_quant_iq2xxs_grid, sizeof g_iq2xxs_grid, 0,
                                     cudaMemcpyHostToDevice, c->stream));
    CUDA_TRY(cudaMemcpyToSymbolAsync(g_iq2xxs_sel, sel, sizeof sel, 0, cudaMemcpyHostToDevice, c->stream));
    CUDA_TRY(cudaStreamSynchronize(c->stream));
    c->qx_max_in = QX_MAX_IN;
    c->x_planes = 3;
    c->mv_evict_first = true;
    c->qx_slot_bytes = qx_slot_bytes(QX_MAX_IN);
    c->qx_plane_bytes = c->qx_slot_bytes * V4F_CUDA_MATVEC_MAX_BATCH;
    c->qx_bytes = c->qx_plane_bytes + V4F_CUDA_SPLITK_BYTES;
    CUDA_TRY(cudaMalloc((void **)&c->qx, c->qx_bytes));
    return V4F_OK;
}

void v4f_cuda_quant_deinit(v4f_cuda *c) {
    if (c->qx) (void)cudaFree(c->qx);
    c->qx = NULL;
}

v4f_status v4f_cuda_set_x_planes(v4f_cuda *c, int n, v4f_err *err) {
    if (n != 2 && n != 3) return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda: %d x planes (2 or 3)", n);
    c->x_planes = n;
    return V4F_OK;
}

void v4f_cuda_set_weight_evict_first(v4f_cuda *c, bool on) { c->mv_evict_first = on; }

void v4f_cuda_set_split_trigger_first(v4f_cuda *c, bool on) { c->split_trigger_first = on; }

bool v4f_cuda_type_supported(uint32_t type) {
    switch (type) {
    case V4F_TYPE_F32: case V4F_TYPE_F16: case V4F_TYPE_BF16: case V4F_TYPE_Q8_0:
    case V4F_TYPE_Q2_K: case V4F_TYPE_Q4_K: case V4F_TYPE_IQ2_XXS:
        return true;
    default:
        return false;
    }
}

static constexpr bool uses_planes(int type) {
    return type == V4F_TYPE_Q8_0 || type == V4F_TYPE_Q2_K || type == V4F_TYPE_Q4_K || type == V4F_TYPE_IQ2_XXS;
}

/* Split the distinct x of a batch into int8 planes (scratch slots) and point
 * each pair at its slot. */
/* The index of x among the *n distinct pointers of seen, appended if new. */
static int distinct_index(const float **seen, int *n, const float *x) {
    int k = 0;
    while (k < *n && seen[k] != x) k++;
    if (k == *n) seen[(*n)++] = x;
    return k;
}

static v4f_status prepare_planes(v4f_cuda *c, mv_args *a, int n, v4f_err *err) {
    qx_args q;
    memset(&q, 0, sizeof q);
    q.n_in = a->n_in;
    q.trigger_first = c->split_trigger_first;
    int n_uniq = 0;
    for (int i = 0; i < n; i++) {
        const int k = distinct_index(q.x, &n_uniq, a->p[i].x);
        q.q[k] = c->qx + (size_t)k * c->qx_slot_bytes;
        a->p[i].xq = q.q[k];
    }
    const int64_t groups = a->n_in / 32;
    const dim3 grid((unsigned)((groups + 7) / 8), (unsigned)n_uniq);
    v4f_launch(k_quant_x, grid, 256, 0, c->stream, q);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

/* V4F_CUDA_Q8_F32=1 (experiment): Q8_0 matvecs multiply float32 x directly
 * instead of splitting x into int8 planes first (one launch instead of two). */
static bool q8_f32(void) {
    const char *e = getenv("V4F_CUDA_Q8_F32");
    return e && e[0] == '1';
}

/* Tiles per CTA of k_mvfix, both shapes. H200, routed experts alone
 * (session 34): IQ2_XXS gate/up 1: 18.7 us, 2: 17.9, 3: 18.2, 4: 17.9; Q2_K
 * down 1: 10.3, 2: 10.5, 3 and 4: 12.3 (its 64-thread CTAs losing residency
 * to shared memory). The down takes 2 all the same: at 1 its 3,072 CTAs are
 * all resident at once and the shared expert's down (second stream) starts
 * only as they finish (kernel trace: ~7 us after it); at 2 (1,536 CTAs) both
 * run together: decode 160.35 -> 161.4 t/s (session 35). */
#define MVFIX_TILES 2
/* ... and 3 where one tile per CTA would make more than MVFIX_MANY_CTAS
 * CTAs (a verify step's 12 pairs). H200, session 36: V4F_MV_FIX=3 for every
 * launch made a drafting step 1.47 -> 1.44-1.45 decode steps but one-token
 * decode 161.4 -> 160.6 t/s; by the launch's size, against 2 everywhere
 * (same call): always-wrong drafts 110.04 / 110.59 -> 110.96 / 111.05 ss
 * t/s, one-token decode unchanged */
#define MVFIX_TILES_MANY 3
#define MVFIX_MANY_CTAS 3072

/* V4F_MV_FIX: 0 = the fixed shapes by k_matvec instead of k_mvfix (A/B),
 * 1 .. MVFIX_MAX_TILES = that many tiles per CTA (tests); unset:
 * MVFIX_TILES or MVFIX_TILES_MANY by the launch's size. Read at each launch
 * (host only: a captured graph keeps what it was built with). */
static int mvfix_mode(void) {
    const char *e = getenv("V4F_MV_FIX");
    if (!e || !e[0]) return -1;
    const int v = atoi(e);
    return v < 0 ? -1 : v > MVFIX_MAX_TILES ? MVFIX_MAX_TILES : v;
}

/* The row bytes of the shapes k_mvfix runs: the q2 routed experts' gate/up
 * (IQ2_XXS, n_in 4096) and down (Q2_K, n_in 2048); 0: none. */
template <int T> constexpr int mv_fixed_chunk() {
    return T == V4F_TYPE_IQ2_XXS ? 4096 / 256 * 66 : T == V4F_TYPE_Q2_K ? 2048 / 256 * 84 : 0;
}

/* The int8-plane instances of k_matvec with NP planes: two columns, up to
 * MV_COLS, or one; RS rows per CTA for short / wide rows; fixed: the shape
 * is k_mvfix's (one chunk of mv_fixed_chunk bytes, packed rows, full tiles). */
template <int T, int RS, int NP>
static void launch_planes(v4f_cuda *c, const mv_args *a, dim3 grid, int threads, size_t smem, int chunk_sb, bool two,
                          bool shortrow, bool fixed) {
    constexpr int R = fmt<T>::R;
    if constexpr (mv_fixed_chunk<T>() > 0) {
        const int mode = fixed && !two && a->ncol == 0 && !shortrow ? mvfix_mode() : 0;
        if (mode != 0) {
            constexpr int CB = mv_fixed_chunk<T>();
            void (*kern[MVFIX_MAX_TILES + 1])(mv_args) = {NULL, k_mvfix<T, NP, CB, 1>, k_mvfix<T, NP, CB, 2>,
                                                         k_mvfix<T, NP, CB, 3>, k_mvfix<T, NP, CB, 4>};
            const int tt = mode > 0 ? mode
                           : (int64_t)grid.x * grid.y > MVFIX_MANY_CTAS ? MVFIX_TILES_MANY
                                                                          : MVFIX_TILES;
            const dim3 g2((unsigned)(((int64_t)grid.x + tt - 1) / tt), grid.y);
            v4f_launch(kern[tt], g2, threads, (size_t)tt * R * CB + MV_SMEM_SLACK, c->stream, *a);
            return;
        }
    }
    if (two && shortrow) v4f_launch(k_matvec<T, true, RS, 2, NP>, grid, threads, smem, c->stream, *a, chunk_sb);
    else if (two) v4f_launch(k_matvec<T, true, R, 2, NP>, grid, threads, smem, c->stream, *a, chunk_sb);
    else if (a->ncol > 0 && shortrow)
        v4f_launch(k_matvec<T, true, RS, MV_COLS, NP>, grid, threads, smem, c->stream, *a, chunk_sb);
    else if (a->ncol > 0) v4f_launch(k_matvec<T, true, R, MV_COLS, NP>, grid, threads, smem, c->stream, *a, chunk_sb);
    else if (shortrow) v4f_launch(k_matvec<T, true, RS, 1, NP>, grid, threads, smem, c->stream, *a, chunk_sb);
    else v4f_launch(k_matvec<T, true, R, 1, NP>, grid, threads, smem, c->stream, *a, chunk_sb);
}

/* xq_given: p[i].xq holds x's planes, made by the caller with this file's
 * split in the natural order (k_matvec permutes IQ2_XXS units itself) */
template <int T>
static v4f_status launch_matvec(v4f_cuda *c, mv_args *a, int n, bool fast, bool xq_given, v4f_err *err) {
    int64_t max_out = 0;
    for (int i = 0; i < n; i++) max_out = a->p[i].n_out > max_out ? a->p[i].n_out : max_out;
    if (max_out == 0) return V4F_OK;
    a->evict_first = c->mv_evict_first;
    if (fast) {
        constexpr bool kPlanes = uses_planes(T);
        const bool planes = kPlanes && a->n_in <= c->qx_max_in && !(T == V4F_TYPE_Q8_0 && q8_f32());
        /* ncol > 0 or xq_given: the caller made the planes (v4f_cuda_matvec_cols,
         * the _planes entry points) */
        if (planes && a->ncol == 0 && !xq_given) {
            const v4f_status st = prepare_planes(c, a, n, err);
            if (st != V4F_OK) return st;
        }
        constexpr int SBB = fmt<T>::SBB, SBE = fmt<T>::SBE, UE = fmt<T>::UE;
        /* short Q8_0 rows (a single warp's worth of units, e.g. q_b's 1024):
         * more rows per CTA, so each x unit serves more rows and the grid
         * is not tens of thousands of one-warp CTAs; the same for "wide"
         * launches (>= MV_WIDE_ROWS rows whose 8-row tile fits one chunk:
         * LM head 79% -> 98% of copy, out_a and the shared expert 10-20%
         * faster on the H200, session 12) */
        constexpr int RS = T == V4F_TYPE_Q8_0 ? MV_SHORT_ROWS : fmt<T>::R;
        const int64_t n_sb = a->n_in / SBE;
        const bool wide =
            T == V4F_TYPE_Q8_0 && planes && max_out * n >= MV_WIDE_ROWS && n_sb * SBB * RS <= MV_SMEM_WIDE;
        const bool shortrow = (T == V4F_TYPE_Q8_0 && a->n_in * (planes ? 1 : 32 / UE) <= 32 * 32) || wide;
        const int R = shortrow ? RS : fmt<T>::R;
        int64_t chunk_sb = (wide ? MV_SMEM_WIDE : MV_SMEM_BUDGET) / (R * SBB);
        if (chunk_sb < 1) chunk_sb = 1;
        if (chunk_sb > n_sb) chunk_sb = n_sb;
        const int64_t units = chunk_sb * (SBE / (planes ? 32 : UE));
        int threads = (int)((units + 31) / 32 * 32);
        if (threads > MV_THREADS) threads = MV_THREADS;
        /* Q4_K: two units per thread (H200, session 24: the q4 layer's
         * routed gate+up 30.3 -> 27.8 us; IQ2_XXS and Q2_K unchanged or
         * slower that way, Q8_0 slower) */
        if (T == V4F_TYPE_Q4_K && planes && threads > MV_Q4K_THREADS) threads = MV_Q4K_THREADS;
        const size_t smem = (size_t)R * (size_t)chunk_sb * SBB + MV_SMEM_SLACK;
        const dim3 grid((unsigned)((max_out + R - 1) / R), (unsigned)n);
        /* two columns (a 2-token eval, a speculative verify step) in an
         * instance with fewer accumulators and more resident CTAs */
        const bool two = a->ncol > 0 && a->ncol <= 2;
        bool fixed = mv_fixed_chunk<T>() > 0 && chunk_sb * SBB == mv_fixed_chunk<T>() && chunk_sb == n_sb;
        for (int i = 0; i < n; i++)
            fixed = fixed && a->p[i].n_out % R == 0 && a->p[i].row_bytes == (uint64_t)mv_fixed_chunk<T>();
        if constexpr (kPlanes) {
            if (planes && c->x_planes == 2)
                launch_planes<T, RS, 2>(c, a, grid, threads, smem, (int)chunk_sb, two, shortrow, fixed);
            else if (planes)
                launch_planes<T, RS, 3>(c, a, grid, threads, smem, (int)chunk_sb, two, shortrow, fixed);
            else if (shortrow)
                v4f_launch(k_matvec<T, false, RS>, grid, threads, smem, c->stream, *a, (int)chunk_sb);
            else
                v4f_launch(k_matvec<T, false, fmt<T>::R>, grid, threads, smem, c->stream, *a, (int)chunk_sb);
        } else if (two) { /* float types: columns of p.x */
            v4f_launch(k_matvec<T, false, fmt<T>::R, 2>, grid, threads, smem, c->stream, *a, (int)chunk_sb);
        } else if (a->ncol > 0) {
            v4f_launch(k_matvec<T, false, fmt<T>::R, MV_COLS>, grid, threads, smem, c->stream, *a, (int)chunk_sb);
        } else {
            v4f_launch(k_matvec<T, false, fmt<T>::R>, grid, threads, smem, c->stream, *a, (int)chunk_sb);
        }
    } else {
        const dim3 grid((unsigned)((max_out + MV_SLOW_WARPS - 1) / MV_SLOW_WARPS), (unsigned)n);
        v4f_launch(k_matvec_slow<T>, grid, 32 * MV_SLOW_WARPS, 0, c->stream, *a);
    }
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

static v4f_status launch_type(v4f_cuda *c, uint32_t type, mv_args *a, int n, bool fast, v4f_err *err,
                              bool xq_given = false) {
    switch (type) {
    case V4F_TYPE_F32: return launch_matvec<V4F_TYPE_F32>(c, a, n, fast, xq_given, err);
    case V4F_TYPE_F16: return launch_matvec<V4F_TYPE_F16>(c, a, n, fast, xq_given, err);
    case V4F_TYPE_BF16: return launch_matvec<V4F_TYPE_BF16>(c, a, n, fast, xq_given, err);
    case V4F_TYPE_Q8_0: return launch_matvec<V4F_TYPE_Q8_0>(c, a, n, fast, xq_given, err);
    case V4F_TYPE_Q2_K: return launch_matvec<V4F_TYPE_Q2_K>(c, a, n, fast, xq_given, err);
    case V4F_TYPE_Q4_K: return launch_matvec<V4F_TYPE_Q4_K>(c, a, n, fast, xq_given, err);
    default: return launch_matvec<V4F_TYPE_IQ2_XXS>(c, a, n, fast, xq_given, err);
    }
}

static int64_t fast_sbe(uint32_t type) {
    switch (type) {
    case V4F_TYPE_F32: return fmt<V4F_TYPE_F32>::SBE;
    case V4F_TYPE_F16: return fmt<V4F_TYPE_F16>::SBE;
    case V4F_TYPE_BF16: return fmt<V4F_TYPE_BF16>::SBE;
    case V4F_TYPE_Q8_0: return fmt<V4F_TYPE_Q8_0>::SBE;
    case V4F_TYPE_Q2_K: return fmt<V4F_TYPE_Q2_K>::SBE;
    case V4F_TYPE_Q4_K: return fmt<V4F_TYPE_Q4_K>::SBE;
    default: return fmt<V4F_TYPE_IQ2_XXS>::SBE;
    }
}

/* Checks one matrix; *packed = bytes of one packed row. */
static v4f_status check_mat(const v4f_cuda_mat *w, uint64_t *packed, v4f_err *err) {
    if (!w || !w->data) return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda: NULL matrix");
    if (!v4f_cuda_type_supported(w->type))
        return v4f_err_set(err, V4F_STATUS_UNSUPPORTED, "cuda: no kernels for type %s", v4f_type_name(w->type));
    if (w->n_in <= 0 || w->n_out < 0 || w->n_out > ((int64_t)1 << 31) ||
        !v4f_type_row_bytes(w->type, (uint64_t)w->n_in, packed))
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda: bad %s matrix shape n_in %lld n_out %lld",
                           v4f_type_name(w->type), (long long)w->n_in, (long long)w->n_out);
    if (w->row_bytes < *packed)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda: row_bytes %llu < packed row %llu",
                           (unsigned long long)w->row_bytes, (unsigned long long)*packed);
    return V4F_OK;
}

/* A pair's given x planes (the _planes entry points): 16-byte aligned. */
static v4f_status set_given_planes(mv_pair *p, const uint8_t *xq, v4f_err *err) {
    if (!xq || (uintptr_t)xq % 16 != 0)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda: NULL or unaligned x planes");
    p->xq = xq;
    return V4F_OK;
}

/* Rows of n_in whose x planes a caller can make (v4f_cuda_quant_row_bytes' slots). */
static bool planes_n_in_ok(int64_t n_in) { return n_in % 32 == 0 && n_in <= QX_MAX_IN; }

static v4f_status matvec_batch(v4f_cuda *c, int n, const v4f_cuda_mat *w, const float *const *x,
                               const uint8_t *const *xq, float *const *y, v4f_err *err) {
    if (n < 1 || n > V4F_CUDA_MATVEC_MAX_BATCH)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda: matvec batch of %d (1..%d)", n,
                           V4F_CUDA_MATVEC_MAX_BATCH);
    mv_args a;
    memset(&a, 0, sizeof a);
    a.n_in = w[0].n_in;
    const uint32_t type = w[0].type;
    bool fast = a.n_in % fast_sbe(type) == 0;
    for (int i = 0; i < n; i++) {
        uint64_t packed;
        const v4f_status st = check_mat(&w[i], &packed, err);
        if (st != V4F_OK) return st;
        if (w[i].type != type || w[i].n_in != a.n_in)
            return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda: matvec batch mixes types or n_in");
        if (!x[i] || !y[i]) return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda: NULL x or y");
        const v4f_status sp = xq ? set_given_planes(&a.p[i], xq[i], err) : V4F_OK;
        if (sp) return sp;
        a.p[i].w = (const uint8_t *)w[i].data;
        a.p[i].x = x[i];
        a.p[i].y = y[i];
        a.p[i].n_out = w[i].n_out;
        a.p[i].row_bytes = w[i].row_bytes;
        fast = fast && ((uintptr_t)w[i].data % 16 == 0) && (w[i].row_bytes % 16 == 0) && ((uintptr_t)x[i] % 16 == 0);
    }
    CUDA_TRY_DEVICE(c);
    return launch_type(c, type, &a, n, fast, err, xq != NULL);
}

v4f_status v4f_cuda_matvec_batch(v4f_cuda *c, int n, const v4f_cuda_mat *w, const float *const *x, float *const *y,
                                 v4f_err *err) {
    return matvec_batch(c, n, w, x, NULL, y, err);
}

v4f_status v4f_cuda_matvec_batch_planes(v4f_cuda *c, int n, const v4f_cuda_mat *w, const float *const *x,
                                        const uint8_t *const *xq, float *const *y, v4f_err *err) {
    if (!xq) return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda: NULL x planes");
    if (n >= 1 && !planes_n_in_ok(w[0].n_in))
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda: x planes of n_in %lld", (long long)w[0].n_in);
    return matvec_batch(c, n, w, x, xq, y, err);
}

bool v4f_cuda_takes_planes(const v4f_cuda_mat *w) {
    return w && (w->type == V4F_TYPE_Q8_0 || w->type == V4F_TYPE_Q2_K || w->type == V4F_TYPE_Q4_K ||
                 w->type == V4F_TYPE_IQ2_XXS) &&
           planes_n_in_ok(w->n_in) && !(w->type == V4F_TYPE_Q8_0 && q8_f32());
}

v4f_status v4f_cuda_matvec(v4f_cuda *c, const v4f_cuda_mat *w, const float *x, float *y, v4f_err *err) {
    return v4f_cuda_matvec_batch(c, 1, w, &x, &y, err);
}

static v4f_status matvec_indirect(v4f_cuda *c, int n, const v4f_cuda_mat *shape, const void *const *tab,
                                  const int32_t *ids, const int32_t *tab_off, const int32_t *slot,
                                  const float *const *x, const uint8_t *const *xq, float *const *y, bool ids_ready,
                                  v4f_err *err) {
    if (n < 1 || n > V4F_CUDA_MATVEC_MAX_BATCH || !tab || !ids || !tab_off || !slot)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda: indirect matvec of %d pairs (1..%d) or NULL table",
                           n, V4F_CUDA_MATVEC_MAX_BATCH);
    mv_args a;
    memset(&a, 0, sizeof a);
    v4f_cuda_mat probe = *shape;
    probe.data = tab; /* any non-NULL pointer: check_mat looks at the shape */
    uint64_t packed;
    const v4f_status st = check_mat(&probe, &packed, err);
    if (st != V4F_OK) return st;
    a.n_in = shape->n_in;
    a.tab = tab;
    a.ids = ids;
    /* with given planes no split launch comes between the caller's kernels
     * and this one (a split may let this launch start before its own wait) */
    a.ids_ready = ids_ready && xq != NULL;
    bool fast = a.n_in % fast_sbe(shape->type) == 0 && shape->row_bytes % 16 == 0;
    for (int i = 0; i < n; i++) {
        if (!x[i] || !y[i] || tab_off[i] < 0 || slot[i] < 0)
            return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda: indirect matvec pair %d: NULL x/y or bad slot", i);
        const v4f_status sp = xq ? set_given_planes(&a.p[i], xq[i], err) : V4F_OK;
        if (sp) return sp;
        a.p[i].x = x[i];
        a.p[i].y = y[i];
        a.p[i].n_out = shape->n_out;
        a.p[i].row_bytes = shape->row_bytes;
        a.p[i].tab_off = tab_off[i];
        a.p[i].slot = slot[i];
        fast = fast && ((uintptr_t)x[i] % 16 == 0);
    }
    CUDA_TRY_DEVICE(c);
    return launch_type(c, shape->type, &a, n, fast, err, xq != NULL);
}

v4f_status v4f_cuda_matvec_indirect(v4f_cuda *c, int n, const v4f_cuda_mat *shape, const void *const *tab,
                                    const int32_t *ids, const int32_t *tab_off, const int32_t *slot,
                                    const float *const *x, float *const *y, v4f_err *err) {
    return matvec_indirect(c, n, shape, tab, ids, tab_off, slot, x, NULL, y, false, err);
}

static v4f_status indirect_planes(v4f_cuda *c, int n, const v4f_cuda_mat *shape, const void *const *tab,
                                  const int32_t *ids, const int32_t *tab_off, const int32_t *slot,
                                  const float *const *x, const uint8_t *const *xq, float *const *y, bool ids_ready,
                                  v4f_err *err) {
    if (!xq || !shape || !planes_n_in_ok(shape->n_in))
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda: x planes missing or of n_in %lld",
                           shape ? (long long)shape->n_in : 0ll);
    return matvec_indirect(c, n, shape, tab, ids, tab_off, slot, x, xq, y, ids_ready, err);
}

v4f_status v4f_cuda_matvec_indirect_planes(v4f_cuda *c, int n, const v4f_cuda_mat *shape, const void *const *tab,
                                           const int32_t *ids, const int32_t *tab_off, const int32_t *slot,
                                           const float *const *x, const uint8_t *const *xq, float *const *y,
                                           v4f_err *err) {
    return indirect_planes(c, n, shape, tab, ids, tab_off, slot, x, xq, y, false, err);
}

v4f_status v4f_cuda_matvec_indirect_planes_ready(v4f_cuda *c, int n, const v4f_cuda_mat *shape,
                                                 const void *const *tab, const int32_t *ids, const int32_t *tab_off,
                                                 const int32_t *slot, const float *const *x,
                                                 const uint8_t *const *xq, float *const *y, v4f_err *err) {
    return indirect_planes(c, n, shape, tab, ids, tab_off, slot, x, xq, y, true, err);
}

/* ---- int8-plane rows (several columns, expert by expert) ------------------ */

size_t v4f_cuda_quant_row_bytes(int64_t n_in) { return qx_slot_bytes(n_in); }

static v4f_status quant_rows(v4f_cuda *c, bool perm, const float *x, int64_t n, int64_t n_in, int64_t ldx, uint8_t *xq,
                             v4f_err *err) {
    if (!x || !xq || n < 0 || n > 65535 || n_in <= 0 || n_in % 32 != 0 || n_in > QX_MAX_IN || ldx < n_in ||
        (uintptr_t)xq % 16 != 0)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda: quant rows of %lld x %lld (ldx %lld)", (long long)n,
                           (long long)n_in, (long long)ldx);
    if (n == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    qx_args q;
    memset(&q, 0, sizeof q);
    q.x[0] = x;
    q.q[0] = xq;
    q.n_in = n_in;
    q.ldx = ldx;
    q.qstride = qx_slot_bytes(n_in);
    q.perm = perm;
    const dim3 grid((unsigned)((n_in / 32 + 7) / 8), (unsigned)n);
    v4f_launch(k_quant_x, grid, 256, 0, c->stream, q);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

v4f_status v4f_cuda_quant_rows(v4f_cuda *c, uint32_t type, const float *x, int64_t n, int64_t n_in, int64_t ldx,
                               uint8_t *xq, v4f_err *err) {
    return quant_rows(c, type == V4F_TYPE_IQ2_XXS, x, n, n_in, ldx, xq, err);
}

int64_t v4f_cuda_matvec_cols_rows(const v4f_cuda *c, int64_t n_in) {
    return n_in > 0 && n_in <= QX_MAX_IN ? (int64_t)(c->qx_plane_bytes / qx_slot_bytes(n_in)) : 0;
}

/* F32 / F16 / BF16: the float path of k_matvec, columns read in place */
static bool cols_float(uint32_t type) {
    return type == V4F_TYPE_F32 || type == V4F_TYPE_F16 || type == V4F_TYPE_BF16;
}

bool v4f_cuda_matvec_cols_ok(const v4f_cuda_mat *w) {
    if (!w || w->n_in <= 0 || w->n_out <= 0 || w->row_bytes % 16 != 0 || (uintptr_t)w->data % 16 != 0) return false;
    if (cols_float(w->type)) return w->n_in % fast_sbe(w->type) == 0;
    return uses_planes(w->type) && w->n_in <= QX_MAX_IN && w->n_in % fast_sbe(w->type) == 0 &&
           !(w->type == V4F_TYPE_Q8_0 && q8_f32()); /* the int8-plane path only */
}

/* Pair p of a several-column launch of type and n_in: matrix w, column t's
 * outputs at y + t ldy (of n columns). false: w unsupported or mixed in, or
 * y missing or its stride short. */
static bool cols_pair(mv_pair *p, const v4f_cuda_mat *w, uint32_t type, int64_t n_in, float *y, int64_t ldy, int n) {
    if (!v4f_cuda_matvec_cols_ok(w) || w->type != type || w->n_in != n_in || !y || (n > 1 && ldy < w->n_out))
        return false;
    p->w = (const uint8_t *)w->data;
    p->y = y;
    p->ldy = ldy;
    p->n_out = w->n_out;
    p->row_bytes = w->row_bytes;
    return true;
}

/* The launches of a several-column matvec whose x (float types: a.p[i].x,
 * a.x_col) or planes (a.p[i].xq, a.xq_col) are set: MV_COLS columns each. */
static v4f_status cols_launch(v4f_cuda *c, uint32_t type, mv_args *a, int n_mat, int n, const int64_t *ldy,
                              v4f_err *err) {
    const bool fl = cols_float(type);
    for (int c0 = 0; c0 < n; c0 += MV_COLS) {
        a->ncol = n - c0 < MV_COLS ? n - c0 : MV_COLS;
        const v4f_status st = launch_type(c, type, a, n_mat, true, err);
        if (st != V4F_OK) return st;
        for (int i = 0; i < n_mat; i++) {
            if (fl) a->p[i].x += MV_COLS * a->x_col;
            else a->p[i].xq += MV_COLS * a->xq_col;
            a->p[i].y += MV_COLS * ldy[i];
        }
    }
    return V4F_OK;
}

v4f_status v4f_cuda_matvec_cols(v4f_cuda *c, int n_mat, const v4f_cuda_mat *w, const float *const *x, int64_t ldx,
                                int n, float *const *y, const int64_t *ldy, v4f_err *err) {
    if (n_mat < 1 || n_mat > V4F_CUDA_MATVEC_MAX_BATCH || n < 1 || ldx < w[0].n_in)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda: matvec of %d matrices x %d columns", n_mat, n);
    mv_args a;
    memset(&a, 0, sizeof a);
    a.n_in = w[0].n_in;
    const uint32_t type = w[0].type;
    const uint64_t slot = qx_slot_bytes(a.n_in);
    const int64_t max_rows = v4f_cuda_matvec_cols_rows(c, a.n_in);
    for (int i = 0; i < n_mat; i++) {
        if (!x[i] || !cols_pair(&a.p[i], &w[i], type, a.n_in, y[i], ldy[i], n))
            return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda: matvec columns: matrix %d unsupported or mixed", i);
    }
    CUDA_TRY_DEVICE(c);
    /* float types: x read in place (16-byte aligned rows); the others: the
     * distinct x of the launch, n plane rows each, in scratch slots */
    const bool fl = cols_float(type);
    if (fl && ldx % 4 != 0) return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda: matvec columns: ldx %lld", (long long)ldx);
    const float *ux[V4F_CUDA_MATVEC_MAX_BATCH];
    int nu = 0;
    for (int i = 0; i < n_mat; i++) {
        if (fl && (uintptr_t)x[i] % 16 != 0)
            return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda: matvec columns: unaligned x %d", i);
        if (fl) a.p[i].x = x[i];
        else a.p[i].xq = c->qx + (size_t)distinct_index(ux, &nu, x[i]) * n * slot;
    }
    if ((int64_t)nu * n > max_rows)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda: matvec columns: %d x %d plane rows (scratch: %lld)", nu,
                           n, (long long)max_rows);
    if ((int64_t)nu * n <= V4F_CUDA_MATVEC_MAX_BATCH && nu > 1) {
        /* every plane row in one launch (out_a: 8 group slices x 2 tokens
         * were 8 launches per layer); natural order: k_matvec permutes
         * IQ2_XXS x units itself */
        qx_args q;
        memset(&q, 0, sizeof q);
        q.n_in = a.n_in;
        for (int k = 0; k < nu; k++)
            for (int t = 0; t < n; t++) {
                q.x[k * n + t] = ux[k] + (int64_t)t * ldx;
                q.q[k * n + t] = c->qx + ((size_t)k * n + t) * slot;
            }
        v4f_launch(k_quant_x, dim3((unsigned)((a.n_in / 32 + 7) / 8), (unsigned)(nu * n)), 256, 0, c->stream, q);
        CUDA_TRY_LAUNCH();
    } else {
        for (int k = 0; k < nu; k++) {
            const v4f_status st = quant_rows(c, false, ux[k], n, a.n_in, ldx, c->qx + (size_t)k * n * slot, err);
            if (st != V4F_OK) return st;
        }
    }
    a.xq_col = slot;
    a.x_col = ldx;
    return cols_launch(c, type, &a, n_mat, n, ldy, err);
}

v4f_status v4f_cuda_matvec_cols_planes(v4f_cuda *c, int n_mat, const v4f_cuda_mat *w, const uint8_t *const *xq,
                                       int64_t xq_col, int n, float *const *y, const int64_t *ldy, v4f_err *err) {
    if (!w || n_mat < 1 || n_mat > V4F_CUDA_MATVEC_MAX_BATCH || n < 1 || !xq || xq_col % 16 != 0 ||
        xq_col < (int64_t)qx_slot_bytes(w[0].n_in))
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda: matvec of %d matrices x %d columns of given planes",
                           n_mat, n);
    mv_args a;
    memset(&a, 0, sizeof a);
    a.n_in = w[0].n_in;
    const uint32_t type = w[0].type;
    for (int i = 0; i < n_mat; i++) {
        if (!v4f_cuda_takes_planes(&w[i]) || !cols_pair(&a.p[i], &w[i], type, a.n_in, y[i], ldy[i], n))
            return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda: matvec columns: matrix %d unsupported or mixed", i);
        const v4f_status st = set_given_planes(&a.p[i], xq[i], err);
        if (st != V4F_OK) return st;
    }
    CUDA_TRY_DEVICE(c);
    a.xq_col = (uint64_t)xq_col;
    return cols_launch(c, type, &a, n_mat, n, ldy, err);
}

/* ---- routed experts by expert (k_mvexp) ---------------------------------- */

/* shared-memory row stride: 16-byte aligned (cp.async destinations, Q4_K's
 * 16-byte reads); a warp's lanes read one row at a time, so no padding */
static uint32_t mvexp_stride(uint64_t row_bytes) { return (uint32_t)((row_bytes + 15) / 16 * 16); }
static size_t mvexp_smem(uint64_t row_bytes) { return (size_t)MX_ROWS * mvexp_stride(row_bytes) + MV_SMEM_SLACK; }

bool v4f_cuda_mvexp_ok(const v4f_cuda_mat *shape) {
    uint64_t packed;
    if (!shape || !uses_planes(shape->type) || shape->n_in <= 0 || shape->n_in > QX_MAX_IN || shape->n_out <= 0 ||
        !v4f_type_row_bytes(shape->type, (uint64_t)shape->n_in, &packed) || shape->row_bytes < packed)
        return false;
    if (shape->n_in % v4f_type_info_get(shape->type)->blck_elems != 0 || shape->n_in % 32 != 0) return false;
    /* row starts: Q4_K reads 16-byte words, Q2_K 4-byte words, the others 2-byte ones */
    if (shape->row_bytes % (shape->type == V4F_TYPE_Q4_K ? 16 : shape->type == V4F_TYPE_Q2_K ? 4 : 2) != 0)
        return false;
    return mvexp_smem(shape->row_bytes) <= MX_SMEM_MAX;
}

template <int T, int NP>
static v4f_status launch_mvexp_np(v4f_cuda *c, const mx_args *a, int n_mat, int max_act, v4f_err *err) {
    static unsigned long long optin = 0;
    const v4f_status st = v4f_smem_optin(c, k_mvexp<T, NP>, MX_SMEM_MAX, &optin, err); /* the most any shape takes */
    if (st != V4F_OK) return st;
    const dim3 grid((unsigned)((a->n_out + MX_ROWS - 1) / MX_ROWS), (unsigned)max_act, (unsigned)n_mat);
    v4f_launch(k_mvexp<T, NP>, grid, MX_THREADS, mvexp_smem(a->row_bytes), c->stream, *a);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

template <int T> static v4f_status launch_mvexp(v4f_cuda *c, const mx_args *a, int n_mat, int max_act, v4f_err *err) {
    return c->x_planes == 2 ? launch_mvexp_np<T, 2>(c, a, n_mat, max_act, err)
                            : launch_mvexp_np<T, 3>(c, a, n_mat, max_act, err);
}

v4f_status v4f_cuda_matvec_experts(v4f_cuda *c, int n_mat, const v4f_cuda_mat *shape, const void *const *tab,
                                   const int32_t *tab_off, const int32_t *act, const int32_t *offs,
                                   const int32_t *elist, int max_act, const uint8_t *xq, int32_t xdiv,
                                   float *const *y, int64_t ldy, v4f_err *err) {
    if (n_mat < 1 || n_mat > V4F_CUDA_MVEXP_MATS || !v4f_cuda_mvexp_ok(shape) || !tab || !tab_off || !act || !offs ||
        !elist || !xq || xdiv < 1 || !y || ldy < shape->n_out || max_act < 0 || max_act > 65535)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda: expert matvec: bad arguments (%d matrices, %s %lld x %lld)",
                           n_mat, shape ? v4f_type_name(shape->type) : "-", shape ? (long long)shape->n_out : 0LL,
                           shape ? (long long)shape->n_in : 0LL);
    if (max_act == 0) return V4F_OK;
    mx_args a;
    memset(&a, 0, sizeof a);
    a.tab = tab;
    for (int i = 0; i < n_mat; i++) {
        if (!y[i] || tab_off[i] < 0)
            return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda: expert matvec: NULL y or bad table offset");
        a.tab_off[i] = tab_off[i];
        a.y[i] = y[i];
    }
    a.ldy = ldy;
    a.act = act, a.offs = offs, a.elist = elist;
    a.xq = xq;
    a.xq_stride = qx_slot_bytes(shape->n_in);
    a.xdiv = xdiv;
    a.n_in = shape->n_in, a.n_out = shape->n_out;
    a.row_bytes = shape->row_bytes;
    a.rs = mvexp_stride(shape->row_bytes);
    CUDA_TRY_DEVICE(c);
    switch (shape->type) {
    case V4F_TYPE_Q8_0: return launch_mvexp<V4F_TYPE_Q8_0>(c, &a, n_mat, max_act, err);
    case V4F_TYPE_Q2_K: return launch_mvexp<V4F_TYPE_Q2_K>(c, &a, n_mat, max_act, err);
    case V4F_TYPE_Q4_K: return launch_mvexp<V4F_TYPE_Q4_K>(c, &a, n_mat, max_act, err);
    default: return launch_mvexp<V4F_TYPE_IQ2_XXS>(c, &a, n_mat, max_act, err);
    }
}

template <int T>
static v4f_status launch_dequant(v4f_cuda *c, const uint8_t *w, uint64_t row_bytes, int64_t n_in, int64_t n_rows,
                                 float *dst, v4f_err *err) {
    const int64_t total = n_in * n_rows;
    const int threads = 256;
    int64_t blocks = (total + threads - 1) / threads;
    const int64_t cap = (int64_t)c->sm_count * 32;
    if (blocks > cap) blocks = cap;
    v4f_launch(k_dequant<T>, (unsigned)blocks, threads, 0, c->stream, w, row_bytes, n_in, total, dst);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

v4f_status v4f_cuda_dequant_rows(v4f_cuda *c, const v4f_cuda_mat *w, int64_t row0, int64_t n_rows, float *dst,
                                 v4f_err *err) {
    uint64_t packed;
    const v4f_status st = check_mat(w, &packed, err);
    if (st != V4F_OK) return st;
    if (row0 < 0 || n_rows < 0 || row0 > w->n_out - n_rows || !dst)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda: dequant rows [%lld, +%lld) of %lld", (long long)row0,
                           (long long)n_rows, (long long)w->n_out);
    if (n_rows == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    const uint8_t *base = (const uint8_t *)w->data + (uint64_t)row0 * w->row_bytes;
    switch (w->type) {
    case V4F_TYPE_F32: return launch_dequant<V4F_TYPE_F32>(c, base, w->row_bytes, w->n_in, n_rows, dst, err);
    case V4F_TYPE_F16: return launch_dequant<V4F_TYPE_F16>(c, base, w->row_bytes, w->n_in, n_rows, dst, err);
    case V4F_TYPE_BF16: return launch_dequant<V4F_TYPE_BF16>(c, base, w->row_bytes, w->n_in, n_rows, dst, err);
    case V4F_TYPE_Q8_0: return launch_dequant<V4F_TYPE_Q8_0>(c, base, w->row_bytes, w->n_in, n_rows, dst, err);
    case V4F_TYPE_Q2_K: return launch_dequant<V4F_TYPE_Q2_K>(c, base, w->row_bytes, w->n_in, n_rows, dst, err);
    case V4F_TYPE_Q4_K: return launch_dequant<V4F_TYPE_Q4_K>(c, base, w->row_bytes, w->n_in, n_rows, dst, err);
    default: return launch_dequant<V4F_TYPE_IQ2_XXS>(c, base, w->row_bytes, w->n_in, n_rows, dst, err);
    }
}
