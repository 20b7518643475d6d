/*
 * gemm_avx512.c - AVX-512 f32 GEMM micro-kernel for the prefill matmul:
 * Y[t][r] = W[r] . X[t] for a dequantized row tile W (nr rows of K floats,
 * contiguous) and nt activation rows.
 *
 * Register blocking: 4 rows x 6 tokens = 24 accumulators of 16 lanes (10
 * loads per 24 FMAs), then 4 x 3 (the structure of gemm_avx2.c) and single
 * pairs for the remainders; cache blocking over tokens and K (see
 * tile_block).
 * Invariant: every output is computed with the same arithmetic whatever the
 * blocking (16 lanes, FMA over k in steps of 16, the tail k into lane k % 16,
 * the same final reduction), so results do not depend on tile sizes or
 * thread counts.
 *
 * Ownership: none. Threading: pure function.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#include "backend/cpu/ops_internal.h"

static inline float hsum16(__m512 v) {
    /* fold 16 -> 8 lanes (l + l+8), then the 8-lane order of the AVX2 kernel */
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    float a[4];
    _mm_storeu_ps(a, q);
    return (a[0] + a[1]) + (a[2] + a[3]);
}

/* tail: elements k >= K16 go to lane k % 16 (masked load) */
static inline __m512 tail_fma(__m512 acc, const float *w, const float *x, int64_t K16, int64_t K) {
    if (K16 == K) return acc;
    __mmask16 m = (__mmask16)((1u << (K - K16)) - 1u);
    return _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + K16), _mm512_maskz_loadu_ps(m, x + K16), acc);
}

/* Blocking: tokens in groups of TG, K in chunks of KC, so that a chunk of
 * the W tile (<= 16 rows) and of the token group stay in L1; the 16-lane
 * partial sums of every (row, token) pair live in acc[] between chunks, so
 * the per-lane FMA sequence (and the result) is the same as one pass over K. */
#define TG 12
#define KC 256
#define RB 16 /* rows per call handled at once (the dequant tile height) */

/* Keep a vector in a register: GCC otherwise folds the weight load into
 * each of the three FMAs that use it (12 loads per 12 FMAs instead of 4);
 * measured +10-15% on the prefill projections (docs/PERF_NOTES.md). */
#define IN_REG(v) __asm__("" : "+v"(v))

static void tile_block(const float *W, int64_t nr, const float *X, int64_t ldx, int64_t nt,
                       int64_t K, float *Y, int64_t ldy) {
    int64_t K8 = K & ~(int64_t)15;
    __m512 acc[TG * RB];
    for (int64_t i = 0; i < nt * RB; i++) acc[i] = _mm512_setzero_ps();
    for (int64_t k0 = 0; k0 < K8; k0 += KC) {
        int64_t k1 = k0 + KC < K8 ? k0 + KC : K8;
        int64_t t = 0;
        /* 4 rows x 6 tokens: 24 accumulators, 10 loads per 24 FMAs */
        for (; t + 6 <= nt; t += 6) {
            const float *x0 = X + t * ldx;
            int64_t r = 0;
            for (; r + 4 <= nr; r += 4) {
                const float *w0 = W + r * K;
                __m512 *A = acc + t * RB + r;
                __m512 a00 = A[0 * RB + 0], a01 = A[1 * RB + 0], a02 = A[2 * RB + 0], a03 = A[3 * RB + 0];
                __m512 a04 = A[4 * RB + 0], a05 = A[5 * RB + 0], a10 = A[0 * RB + 1], a11 = A[1 * RB + 1];
                __m512 a12 = A[2 * RB + 1], a13 = A[3 * RB + 1], a14 = A[4 * RB + 1], a15 = A[5 * RB + 1];
                __m512 a20 = A[0 * RB + 2], a21 = A[1 * RB + 2], a22 = A[2 * RB + 2], a23 = A[3 * RB + 2];
                __m512 a24 = A[4 * RB + 2], a25 = A[5 * RB + 2], a30 = A[0 * RB + 3], a31 = A[1 * RB + 3];
                __m512 a32 = A[2 * RB + 3], a33 = A[3 * RB + 3], a34 = A[4 * RB + 3], a35 = A[5 * RB + 3];
                for (int64_t k = k0; k < k1; k += 16) {
                    const __m512 v0 = _mm512_loadu_ps(x0 + 0 * ldx + k);
                    const __m512 v1 = _mm512_loadu_ps(x0 + 1 * ldx + k);
                    const __m512 v2 = _mm512_loadu_ps(x0 + 2 * ldx + k);
                    const __m512 v3 = _mm512_loadu_ps(x0 + 3 * ldx + k);
                    const __m512 v4 = _mm512_loadu_ps(x0 + 4 * ldx + k);
                    const __m512 v5 = _mm512_loadu_ps(x0 + 5 * ldx + k);
                    __m512 w = _mm512_loadu_ps(w0 + 0 * K + k);
                    IN_REG(w);
                    a00 = _mm512_fmadd_ps(w, v0, a00);
                    a01 = _mm512_fmadd_ps(w, v1, a01);
                    a02 = _mm512_fmadd_ps(w, v2, a02);
                    a03 = _mm512_fmadd_ps(w, v3, a03);
                    a04 = _mm512_fmadd_ps(w, v4, a04);
                    a05 = _mm512_fmadd_ps(w, v5, a05);
                    w = _mm512_loadu_ps(w0 + 1 * K + k);
                    IN_REG(w);
                    a10 = _mm512_fmadd_ps(w, v0, a10);
                    a11 = _mm512_fmadd_ps(w, v1, a11);
                    a12 = _mm512_fmadd_ps(w, v2, a12);
                    a13 = _mm512_fmadd_ps(w, v3, a13);
                    a14 = _mm512_fmadd_ps(w, v4, a14);
                    a15 = _mm512_fmadd_ps(w, v5, a15);
                    w = _mm512_loadu_ps(w0 + 2 * K + k);
                    IN_REG(w);
                    a20 = _mm512_fmadd_ps(w, v0, a20);
                    a21 = _mm512_fmadd_ps(w, v1, a21);
                    a22 = _mm512_fmadd_ps(w, v2, a22);
                    a23 = _mm512_fmadd_ps(w, v3, a23);
                    a24 = _mm512_fmadd_ps(w, v4, a24);
                    a25 = _mm512_fmadd_ps(w, v5, a25);
                    w = _mm512_loadu_ps(w0 + 3 * K + k);
                    IN_REG(w);
                    a30 = _mm512_fmadd_ps(w, v0, a30);
                    a31 = _mm512_fmadd_ps(w, v1, a31);
                    a32 = _mm512_fmadd_ps(w, v2, a32);
                    a33 = _mm512_fmadd_ps(w, v3, a33);
                    a34 = _mm512_fmadd_ps(w, v4, a34);
                    a35 = _mm512_fmadd_ps(w, v5, a35);
                }
                A[0 * RB + 0] = a00; A[1 * RB + 0] = a01; A[2 * RB + 0] = a02; A[3 * RB + 0] = a03;
                A[4 * RB + 0] = a04; A[5 * RB + 0] = a05; A[0 * RB + 1] = a10; A[1 * RB + 1] = a11;
                A[2 * RB + 1] = a12; A[3 * RB + 1] = a13; A[4 * RB + 1] = a14; A[5 * RB + 1] = a15;
                A[0 * RB + 2] = a20; A[1 * RB + 2] = a21; A[2 * RB + 2] = a22; A[3 * RB + 2] = a23;
                A[4 * RB + 2] = a24; A[5 * RB + 2] = a25; A[0 * RB + 3] = a30; A[1 * RB + 3] = a31;
                A[2 * RB + 3] = a32; A[3 * RB + 3] = a33; A[4 * RB + 3] = a34; A[5 * RB + 3] = a35;
            }
            for (; r < nr; r++)
                for (int64_t tt = t; tt < t + 6; tt++) {
                    __m512 a = acc[tt * RB + r];
                    for (int64_t k = k0; k < k1; k += 16)
                        a = _mm512_fmadd_ps(_mm512_loadu_ps(W + r * K + k),
                                            _mm512_loadu_ps(X + tt * ldx + k), a);
                    acc[tt * RB + r] = a;
                }
        }
        for (; t + 3 <= nt; t += 3) {
            const float *x0 = X + t * ldx, *x1 = x0 + ldx, *x2 = x1 + ldx;
            int64_t r = 0;
            for (; r + 4 <= nr; r += 4) {
                const float *w0 = W + r * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
                __m512 *A0 = acc + t * RB + r, *A1 = A0 + RB, *A2 = A1 + RB;
                __m512 a00 = A0[0], a01 = A1[0], a02 = A2[0], a10 = A0[1], a11 = A1[1],
                       a12 = A2[1], a20 = A0[2], a21 = A1[2], a22 = A2[2], a30 = A0[3],
                       a31 = A1[3], a32 = A2[3];
                for (int64_t k = k0; k < k1; k += 16) {
                    __m512 v0 = _mm512_loadu_ps(x0 + k), v1 = _mm512_loadu_ps(x1 + k),
                           v2 = _mm512_loadu_ps(x2 + k);
                    __m512 w = _mm512_loadu_ps(w0 + k);
                    IN_REG(w);
                    a00 = _mm512_fmadd_ps(w, v0, a00);
                    a01 = _mm512_fmadd_ps(w, v1, a01);
                    a02 = _mm512_fmadd_ps(w, v2, a02);
                    w = _mm512_loadu_ps(w1 + k);
                    IN_REG(w);
                    a10 = _mm512_fmadd_ps(w, v0, a10);
                    a11 = _mm512_fmadd_ps(w, v1, a11);
                    a12 = _mm512_fmadd_ps(w, v2, a12);
                    w = _mm512_loadu_ps(w2 + k);
                    IN_REG(w);
                    a20 = _mm512_fmadd_ps(w, v0, a20);
                    a21 = _mm512_fmadd_ps(w, v1, a21);
                    a22 = _mm512_fmadd_ps(w, v2, a22);
                    w = _mm512_loadu_ps(w3 + k);
                    IN_REG(w);
                    a30 = _mm512_fmadd_ps(w, v0, a30);
                    a31 = _mm512_fmadd_ps(w, v1, a31);
                    a32 = _mm512_fmadd_ps(w, v2, a32);
                }
                A0[0] = a00; A1[0] = a01; A2[0] = a02;
                A0[1] = a10; A1[1] = a11; A2[1] = a12;
                A0[2] = a20; A1[2] = a21; A2[2] = a22;
                A0[3] = a30; A1[3] = a31; A2[3] = a32;
            }
            for (; r < nr; r++)
                for (int64_t tt = t; tt < t + 3; tt++) {
                    __m512 a = acc[tt * RB + r];
                    for (int64_t k = k0; k < k1; k += 16)
                        a = _mm512_fmadd_ps(_mm512_loadu_ps(W + r * K + k),
                                            _mm512_loadu_ps(X + tt * ldx + k), a);
                    acc[tt * RB + r] = a;
                }
        }
        for (; t < nt; t++)
            for (int64_t r = 0; r < nr; r++) {
                __m512 a = acc[t * RB + r];
                for (int64_t k = k0; k < k1; k += 16)
                    a = _mm512_fmadd_ps(_mm512_loadu_ps(W + r * K + k),
                                        _mm512_loadu_ps(X + t * ldx + k), a);
                acc[t * RB + r] = a;
            }
    }
    for (int64_t t = 0; t < nt; t++)
        for (int64_t r = 0; r < nr; r++)
            Y[t * ldy + r] = hsum16(tail_fma(acc[t * RB + r], W + r * K, X + t * ldx, K8, K));
}

void v4f_cpu_gemm_tile_avx512(const float *W, int64_t nr, const float *X, int64_t ldx, int64_t nt,
                            int64_t K, float *Y, int64_t ldy) {
    for (int64_t r0 = 0; r0 < nr; r0 += RB)
        for (int64_t t0 = 0; t0 < nt; t0 += TG)
            tile_block(W + r0 * K, nr - r0 < RB ? nr - r0 : RB, X + t0 * ldx, ldx,
                       nt - t0 < TG ? nt - t0 : TG, K, Y + t0 * ldy + r0, ldy);
}

void v4f_cpu_axpy_avx512(float *y, float a, const float *x, int64_t n) {
    __m512 va = _mm512_set1_ps(a);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    for (; i < n; i++) y[i] = fmaf(a, x[i], y[i]);
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
