/*
 * gemm_avx2.c - AVX2+FMA f32 GEMM micro-kernel for the prefill matmul:
 * Y[t][r] = W[r] . X[t] for a dequantized row tile W (nr rows of K floats,
 * contiguous) and nt activation rows.
 *
 * Register blocking: 4 rows x 3 tokens = 12 accumulators of 8 lanes; each
 * k-step loads 4 weight vectors and 3 activation vectors for 12 FMAs; cache
 * blocking over tokens and K (see tile_block).
 * Invariant: every output is computed with the same arithmetic whatever the
 * blocking (8 lanes, FMA over k in steps of 8, the tail k into lane k % 8,
 * the same final reduction), so results do not depend on tile sizes or
 * thread counts.
 *
 * Ownership: none. Threading: pure function.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#include "backend/cpu/ops_internal.h"

static inline float hsum8(__m256 v) {
    /* the generic order: ((l0+l4)+(l1+l5)) + ((l2+l6)+(l3+l7)) */
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    float a[4];
    _mm_storeu_ps(a, s);
    return (a[0] + a[1]) + (a[2] + a[3]);
}

/* tail: elements k >= K8 go to lane k % 8 */
static inline __m256 tail_fma(__m256 acc, const float *w, const float *x, int64_t K8, int64_t K) {
    if (K8 == K) return acc;
    float wa[8] = {0}, xa[8] = {0};
    for (int64_t k = K8; k < K; k++) {
        wa[k - K8] = w[k];
        xa[k - K8] = x[k];
    }
    return _mm256_fmadd_ps(_mm256_loadu_ps(wa), _mm256_loadu_ps(xa), acc);
}

/* Blocking: tokens in groups of TG, K in chunks of KC, so that a chunk of
 * the W tile (<= 16 rows) and of the token group stay in L1; the 8-lane
 * partial sums of every (row, token) pair live in acc[] between chunks, so
 * the per-lane FMA sequence (and the result) is the same as one pass over K. */
#define TG 12
#define KC 256
#define RB 16 /* rows per call handled at once (the dequant tile height) */

/* Keep a vector in a register (see gemm_avx512.c). */
#define IN_REG(v) __asm__("" : "+v"(v))

static void tile_block(const float *W, int64_t nr, const float *X, int64_t ldx, int64_t nt,
                       int64_t K, float *Y, int64_t ldy) {
    int64_t K8 = K & ~(int64_t)7;
    __m256 acc[TG * RB];
    for (int64_t i = 0; i < nt * RB; i++) acc[i] = _mm256_setzero_ps();
    for (int64_t k0 = 0; k0 < K8; k0 += KC) {
        int64_t k1 = k0 + KC < K8 ? k0 + KC : K8;
        int64_t t = 0;
        for (; t + 3 <= nt; t += 3) {
            const float *x0 = X + t * ldx, *x1 = x0 + ldx, *x2 = x1 + ldx;
            int64_t r = 0;
            for (; r + 4 <= nr; r += 4) {
                const float *w0 = W + r * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
                __m256 *A0 = acc + t * RB + r, *A1 = A0 + RB, *A2 = A1 + RB;
                __m256 a00 = A0[0], a01 = A1[0], a02 = A2[0], a10 = A0[1], a11 = A1[1],
                       a12 = A2[1], a20 = A0[2], a21 = A1[2], a22 = A2[2], a30 = A0[3],
                       a31 = A1[3], a32 = A2[3];
                for (int64_t k = k0; k < k1; k += 8) {
                    __m256 v0 = _mm256_loadu_ps(x0 + k), v1 = _mm256_loadu_ps(x1 + k),
                           v2 = _mm256_loadu_ps(x2 + k);
                    __m256 w = _mm256_loadu_ps(w0 + k);
                    IN_REG(w);
                    a00 = _mm256_fmadd_ps(w, v0, a00);
                    a01 = _mm256_fmadd_ps(w, v1, a01);
                    a02 = _mm256_fmadd_ps(w, v2, a02);
                    w = _mm256_loadu_ps(w1 + k);
                    IN_REG(w);
                    a10 = _mm256_fmadd_ps(w, v0, a10);
                    a11 = _mm256_fmadd_ps(w, v1, a11);
                    a12 = _mm256_fmadd_ps(w, v2, a12);
                    w = _mm256_loadu_ps(w2 + k);
                    IN_REG(w);
                    a20 = _mm256_fmadd_ps(w, v0, a20);
                    a21 = _mm256_fmadd_ps(w, v1, a21);
                    a22 = _mm256_fmadd_ps(w, v2, a22);
                    w = _mm256_loadu_ps(w3 + k);
                    IN_REG(w);
                    a30 = _mm256_fmadd_ps(w, v0, a30);
                    a31 = _mm256_fmadd_ps(w, v1, a31);
                    a32 = _mm256_fmadd_ps(w, v2, a32);
                }
                A0[0] = a00; A1[0] = a01; A2[0] = a02;
                A0[1] = a10; A1[1] = a11; A2[1] = a12;
                A0[2] = a20; A1[2] = a21; A2[2] = a22;
                A0[3] = a30; A1[3] = a31; A2[3] = a32;
            }
            for (; r < nr; r++)
                for (int64_t tt = t; tt < t + 3; tt++) {
                    __m256 a = acc[tt * RB + r];
                    for (int64_t k = k0; k < k1; k += 8)
                        a = _mm256_fmadd_ps(_mm256_loadu_ps(W + r * K + k),
                                            _mm256_loadu_ps(X + tt * ldx + k), a);
                    acc[tt * RB + r] = a;
                }
        }
        for (; t < nt; t++)
            for (int64_t r = 0; r < nr; r++) {
                __m256 a = acc[t * RB + r];
                for (int64_t k = k0; k < k1; k += 8)
                    a = _mm256_fmadd_ps(_mm256_loadu_ps(W + r * K + k),
                                        _mm256_loadu_ps(X + t * ldx + k), a);
                acc[t * RB + r] = a;
            }
    }
    for (int64_t t = 0; t < nt; t++)
        for (int64_t r = 0; r < nr; r++)
            Y[t * ldy + r] = hsum8(tail_fma(acc[t * RB + r], W + r * K, X + t * ldx, K8, K));
}

void v4f_cpu_gemm_tile_avx2(const float *W, int64_t nr, const float *X, int64_t ldx, int64_t nt,
                            int64_t K, float *Y, int64_t ldy) {
    for (int64_t r0 = 0; r0 < nr; r0 += RB)
        for (int64_t t0 = 0; t0 < nt; t0 += TG)
            tile_block(W + r0 * K, nr - r0 < RB ? nr - r0 : RB, X + t0 * ldx, ldx,
                       nt - t0 < TG ? nt - t0 : TG, K, Y + t0 * ldy + r0, ldy);
}

void v4f_cpu_axpy_avx2(float *y, float a, const float *x, int64_t n) {
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] = fmaf(a, x[i], y[i]);
}

/* HC mixes (see gemm_avx512.c), 8 lanes, the tail by maskload/maskstore */
static inline __m256i tail_mask8(int64_t left) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(left >= 8 ? 8 : (int)left), idx);
}

void v4f_cpu_hc_weighted_sum_avx2(const float *X, const float *w, int H, int64_t d, float *y) {
    for (int64_t i = 0; i < d; i += 8) {
        const __m256i m = tail_mask8(d - i);
        __m256 acc = _mm256_setzero_ps();
        for (int h = 0; h < H; h++)
            acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(w[h]), _mm256_maskload_ps(X + h * d + i, m)));
        _mm256_maskstore_ps(y + i, m, acc);
    }
}

void v4f_cpu_hc_post_avx2(const float *o, const float *X, const float *post, const float *comb, int H,
                          int64_t d, float *Xout) {
    for (int64_t i = 0; i < d; i += 8) {
        const __m256i m = tail_mask8(d - i);
        const __m256 vo = _mm256_maskload_ps(o + i, m);
        for (int j = 0; j < H; j++) {
            __m256 acc = _mm256_setzero_ps();
            for (int k = 0; k < H; k++)
                acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(comb[k * H + j]),
                                                       _mm256_maskload_ps(X + k * d + i, m)));
            _mm256_maskstore_ps(Xout + j * d + i, m, _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(post[j]), vo), acc));
        }
    }
}

/* FMA peak probe (see gemm_avx512.c): FMA_CHAINS independent 8-lane chains. */
#define FMA_CHAINS 12
/* FMA_CHAINS named accumulators (not an array: an array stays in memory at
 * -O2 and the probe then measures store-to-load forwarding, not the FMAs). */
float v4f_cpu_fma_loop_avx2(int64_t iters) {
    __m256 a0 = _mm256_set1_ps(0.00f), a1 = _mm256_set1_ps(0.01f), a2 = _mm256_set1_ps(0.02f);
    __m256 a3 = _mm256_set1_ps(0.03f), a4 = _mm256_set1_ps(0.04f), a5 = _mm256_set1_ps(0.05f);
    __m256 a6 = _mm256_set1_ps(0.06f), a7 = _mm256_set1_ps(0.07f), a8 = _mm256_set1_ps(0.08f);
    __m256 a9 = _mm256_set1_ps(0.09f), a10 = _mm256_set1_ps(0.10f), a11 = _mm256_set1_ps(0.11f);
    const __m256 m = _mm256_set1_ps(0.999f), c = _mm256_set1_ps(0.001f);
    for (int64_t it = 0; it < iters; it++) {
        a0 = _mm256_fmadd_ps(a0, m, c);
        a1 = _mm256_fmadd_ps(a1, m, c);
        a2 = _mm256_fmadd_ps(a2, m, c);
        a3 = _mm256_fmadd_ps(a3, m, c);
        a4 = _mm256_fmadd_ps(a4, m, c);
        a5 = _mm256_fmadd_ps(a5, m, c);
        a6 = _mm256_fmadd_ps(a6, m, c);
        a7 = _mm256_fmadd_ps(a7, m, c);
        a8 = _mm256_fmadd_ps(a8, m, c);
        a9 = _mm256_fmadd_ps(a9, m, c);
        a10 = _mm256_fmadd_ps(a10, m, c);
        a11 = _mm256_fmadd_ps(a11, m, c);
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)), _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
    float t[8];
    _mm256_storeu_ps(t, s);
    return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
}
