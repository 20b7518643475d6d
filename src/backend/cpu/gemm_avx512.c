/*
 * gemm_avx512.c - AVX-512 f32 GEMM micro-kernel for the prefill matmul:
 * Y[t][r] = W[r] . X[t] for a dequantized row tile W (nr rows of K floats,
 * row stride ldw) and nt activation rows.
 *
 * Outer-product formulation (BLIS / tinyBLAS style): 16 rows x 16 tokens =
 * 16 accumulators, W packed k-major per chunk of KC k values, X broadcast
 * from memory; see the micro-kernel section below. The caller
 * (ops.c, matmul_rows_chunked) keeps the X chunk and the Y sums in L2.
 *
 * Ownership: none. Threading: pure functions (Wp is on the stack).
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#include "backend/cpu/ops_internal.h"

/* ---- outer-product micro-kernel -------------------------------------------
 * Y[t][r0..r0+15] = sum over k of Wp[k][0..15] * X[t][k]: the 16 rows of a
 * tile sit in the lanes of one zmm (W packed k-major, 16 floats per k), each
 * token's X[t][k] is broadcast from memory (an embedded-broadcast FMA
 * operand), so a k step is 1 vector load + NR broadcast FMAs into NR
 * accumulators and no horizontal sums are needed: a token's 16 outputs are
 * one vector stored into Y.
 * Invariant: every output is a sequential FMA chain over k inside fixed
 * chunks of KC k values (k0 = 0, KC, 2 KC, ...; each chunk starts from 0),
 * and the chunk sums are added to Y in k order; nothing depends on the
 * token count, the token group (NR or a remainder), the row count or the
 * thread. */
#define MR 16  /* rows per packed tile: the lanes of a zmm */
#define NR 16  /* tokens per register block: 16 accumulators */
#define KC V4F_CPU_GEMM_KC /* k values per packed chunk: 16 KiB of Wp, stays in L1 */
#define PACK_X_AHEAD 4 /* tokens v4f_cpu_gemm_pack_x_avx512 prefetches ahead */

/* Wp[k][0..15] = W[r][k0 + k] for r < mr, 0 for r >= mr, k < kc: 16 x 16
 * blocks transposed in registers (unpack, shuffle, 128-bit lane shuffles). */
static void pack_w(const float *W, int64_t mr, int64_t ldw, int64_t k0, int64_t kc, float *Wp) {
    for (int64_t kb = 0; kb < kc; kb += 16) {
        int64_t n = kc - kb < 16 ? kc - kb : 16;
        __mmask16 m = (__mmask16)((1u << n) - 1u);
        __m512 r[16], t[16], u[16];
        for (int i = 0; i < 16; i++)
            r[i] = i < mr ? _mm512_maskz_loadu_ps(m, W + i * ldw + k0 + kb) : _mm512_setzero_ps();
        for (int i = 0; i < 16; i += 2) {
            t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
        }
        for (int i = 0; i < 16; i += 4) {
            u[i + 0] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
            u[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
            u[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
            u[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
        }
        /* u[4g + c] = columns c, c+4, c+8, c+12 of rows 4g..4g+3 */
        for (int c = 0; c < 4; c++) {
            __m512 v0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88);
            __m512 v1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xDD);
            __m512 v2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
            __m512 v3 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xDD);
            __m512 col[4] = {_mm512_shuffle_f32x4(v0, v2, 0x88), _mm512_shuffle_f32x4(v1, v3, 0x88),
                             _mm512_shuffle_f32x4(v0, v2, 0xDD), _mm512_shuffle_f32x4(v1, v3, 0xDD)};
            for (int q = 0; q < 4; q++)
                if (c + 4 * q < n) _mm512_store_ps(Wp + (kb + c + 4 * q) * 16, col[q]);
        }
    }
}

#define BC(p) _mm512_set1_ps(*(p))
#define FMA_T(j)                                                                         \
    if (nt > j) a##j = _mm512_fmadd_ps(w, BC(x + (j) * ldx + k), a##j)
#define OUT_T(j)                                                                         \
    if (nt > j) {                                                                        \
        float *y = Y + (j) * ldy;                                                        \
        __m512 s = first ? a##j : _mm512_add_ps(_mm512_maskz_loadu_ps(m, y), a##j);      \
        _mm512_mask_storeu_ps(y, m, s);                                                  \
    }

/* Forced inlining gives every token count and both X layouts a kernel of
 * its own (32 copies). Sanitizer builds (SAN=...) keep one out-of-line copy
 * with nt at run time: clang -O1 with ASan/UBSan ran for over 12 minutes
 * on the inlined copies (CI's fuzz build). */
#ifdef V4F_SANITIZE
#define UK_INLINE static __attribute__((noinline))
#else
#define UK_INLINE static inline __attribute__((always_inline))
#endif

/* nt (<= NR) tokens x 16 packed rows over kc k values; nt is a constant
 * after inlining, so the unused accumulators and branches fold away */
UK_INLINE void ukernel(const float *Wp, int64_t kc, const float *x, int64_t ldx, const int nt, float *Y,
                       int64_t ldy, __mmask16 m, int first) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0;
    __m512 a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0, a12 = a0, a13 = a0, a14 = a0, a15 = a0;
    for (int64_t k = 0; k < kc; k++) {
        __m512 w = _mm512_load_ps(Wp + k * 16);
        FMA_T(0); FMA_T(1); FMA_T(2); FMA_T(3); FMA_T(4); FMA_T(5); FMA_T(6);
        FMA_T(7); FMA_T(8); FMA_T(9); FMA_T(10); FMA_T(11); FMA_T(12); FMA_T(13); FMA_T(14); FMA_T(15);
    }
    OUT_T(0); OUT_T(1); OUT_T(2); OUT_T(3); OUT_T(4); OUT_T(5); OUT_T(6);
    OUT_T(7); OUT_T(8); OUT_T(9); OUT_T(10); OUT_T(11); OUT_T(12); OUT_T(13); OUT_T(14); OUT_T(15);
}

/* all nt tokens of one packed chunk: blocks of NR, then the remainder */
UK_INLINE void tokens(const float *Wp, int64_t kc, const float *x, int64_t ldx, int64_t nt, float *y,
                      int64_t ldy, __mmask16 m, int first) {
    int64_t t = 0;
    for (; t + NR <= nt; t += NR) ukernel(Wp, kc, x + t * ldx, ldx, NR, y + t * ldy, ldy, m, first);
    switch (nt - t) {
#define REM(j) case j: ukernel(Wp, kc, x + t * ldx, ldx, j, y + t * ldy, ldy, m, first); break
        REM(1); REM(2); REM(3); REM(4); REM(5); REM(6); REM(7);
        REM(8); REM(9); REM(10); REM(11); REM(12); REM(13); REM(14); REM(15);
#undef REM
    default: break;
    }
}

void v4f_cpu_gemm_chunk_avx512(const float *W, int64_t ldw, int64_t nr, const float *X, int64_t ldx,
                               int64_t nt, int64_t K, float *Y, int64_t ldy, int accumulate) {
    _Alignas(64) float Wp[KC * MR];
    for (int64_t r0 = 0; r0 < nr; r0 += MR) {
        int64_t mr = nr - r0 < MR ? nr - r0 : MR;
        __mmask16 m = (__mmask16)((1u << mr) - 1u);
        if (K == 0 && !accumulate)
            for (int64_t t = 0; t < nt; t++)
                _mm512_mask_storeu_ps(Y + t * ldy + r0, m, _mm512_setzero_ps());
        for (int64_t k0 = 0; k0 < K; k0 += KC) {
            int64_t kc = K - k0 < KC ? K - k0 : KC;
            int first = k0 == 0 && !accumulate;
            pack_w(W + r0 * ldw, mr, ldw, k0, kc, Wp);
            /* ldx == KC (the chunked matmul's packed X): all tokens
             * addressed from one base register with constant offsets */
            if (ldx == KC) tokens(Wp, kc, X + k0, KC, nt, Y + r0, ldy, m, first);
            else tokens(Wp, kc, X + k0, ldx, nt, Y + r0, ldy, m, first);
        }
    }
}

void v4f_cpu_gemm_pack_x_avx512(const float *X, int64_t ldx, int64_t nt, int64_t kc, float *xs) {
    __mmask16 mt = (__mmask16)((1u << (kc & 15)) - 1u);
    for (int64_t t = 0; t < nt; t++) {
        const float *x = X + t * ldx;
        float *d = xs + t * KC;
        /* each token's chunk starts a new page: fetch PACK_X_AHEAD rows ahead */
        if (t + PACK_X_AHEAD < nt)
            for (int64_t k = 0; k < kc; k += 16)
                _mm_prefetch((const char *)(x + PACK_X_AHEAD * ldx + k), _MM_HINT_T0);
        int64_t k = 0;
        for (; k + 16 <= kc; k += 16) _mm512_store_ps(d + k, _mm512_loadu_ps(x + k));
        if (k < kc) _mm512_mask_storeu_ps(d + k, mt, _mm512_maskz_loadu_ps(mt, x + k));
    }
}

void v4f_cpu_gemm_tile_avx512(const float *W, int64_t nr, const float *X, int64_t ldx, int64_t nt,
                              int64_t K, float *Y, int64_t ldy) {
    v4f_cpu_gemm_chunk_avx512(W, K, nr, X, ldx, nt, K, Y, ldy, 0);
}
#undef BC
#undef FMA_T
#undef OUT_T

void v4f_cpu_axpy_avx512(float *y, float a, const float *x, int64_t n) {
    __m512 va = _mm512_set1_ps(a);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    for (; i < n; i++) y[i] = fmaf(a, x[i], y[i]);
}

/* lanes 0 .. min(left, 16) - 1 */
static inline __mmask16 tail_mask16(int64_t left) {
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1u);
}

/* HC mixes (ops_internal.h): per element ((0 + w0 x0) + w1 x1) + ... and
 * post_j o + that, as the generic code; the tail through masked loads and
 * stores (a scalar tail could be contracted into FMAs by the compiler). */
void v4f_cpu_hc_weighted_sum_avx512(const float *X, const float *w, int H, int64_t d, float *y) {
    for (int64_t i = 0; i < d; i += 16) {
        const __mmask16 m = tail_mask16(d - i);
        __m512 acc = _mm512_setzero_ps();
        for (int h = 0; h < H; h++)
            acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_set1_ps(w[h]), _mm512_maskz_loadu_ps(m, X + h * d + i)));
        _mm512_mask_storeu_ps(y + i, m, acc);
    }
}

void v4f_cpu_hc_post_avx512(const float *o, const float *X, const float *post, const float *comb, int H,
                            int64_t d, float *Xout) {
    for (int64_t i = 0; i < d; i += 16) {
        const __mmask16 m = tail_mask16(d - i);
        const __m512 vo = _mm512_maskz_loadu_ps(m, o + i);
        for (int j = 0; j < H; j++) {
            __m512 acc = _mm512_setzero_ps();
            for (int k = 0; k < H; k++)
                acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_set1_ps(comb[k * H + j]),
                                                       _mm512_maskz_loadu_ps(m, X + k * d + i)));
            _mm512_mask_storeu_ps(Xout + j * d + i, m, _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(post[j]), vo), acc));
        }
    }
}

/* FMA peak probe: FMA_CHAINS independent 16-lane chains (enough to cover
 * 2 FMA ports x 4-cycle latency), each a = a * m + c with |m| < 1 so values
 * stay normal. Returns a sum so the loop is not dropped. */
#define FMA_CHAINS 12
/* FMA_CHAINS named accumulators (not an array: an array stays in memory at
 * -O2 and the probe then measures store-to-load forwarding, not the FMAs). */
float v4f_cpu_fma_loop_avx512(int64_t iters) {
    __m512 a0 = _mm512_set1_ps(0.00f), a1 = _mm512_set1_ps(0.01f), a2 = _mm512_set1_ps(0.02f);
    __m512 a3 = _mm512_set1_ps(0.03f), a4 = _mm512_set1_ps(0.04f), a5 = _mm512_set1_ps(0.05f);
    __m512 a6 = _mm512_set1_ps(0.06f), a7 = _mm512_set1_ps(0.07f), a8 = _mm512_set1_ps(0.08f);
    __m512 a9 = _mm512_set1_ps(0.09f), a10 = _mm512_set1_ps(0.10f), a11 = _mm512_set1_ps(0.11f);
    const __m512 m = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(0.001f);
    for (int64_t it = 0; it < iters; it++) {
        a0 = _mm512_fmadd_ps(a0, m, c);
        a1 = _mm512_fmadd_ps(a1, m, c);
        a2 = _mm512_fmadd_ps(a2, m, c);
        a3 = _mm512_fmadd_ps(a3, m, c);
        a4 = _mm512_fmadd_ps(a4, m, c);
        a5 = _mm512_fmadd_ps(a5, m, c);
        a6 = _mm512_fmadd_ps(a6, m, c);
        a7 = _mm512_fmadd_ps(a7, m, c);
        a8 = _mm512_fmadd_ps(a8, m, c);
        a9 = _mm512_fmadd_ps(a9, m, c);
        a10 = _mm512_fmadd_ps(a10, m, c);
        a11 = _mm512_fmadd_ps(a11, m, c);
    }
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)), _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
    return _mm512_reduce_add_ps(s);
}
