/*
 * quant_x86.h - the AVX2 (256-bit) kernels as static inline functions:
 * dequant_row / dot_f32 for every type, dot_act for Q8_0 / Q2_K / Q4_K /
 * IQ2_XXS, and the Q8_0 / Q8_K activation quantizers. Included only by the
 * per-ISA translation units (quant_avx2.c, quant_avx512.c), which are
 * compiled with the matching -m flags; never include it from a baseline
 * file.
 *
 * Invariants (shared with quant_ref.c):
 *  - dequantized weights are bit-identical to the scalar reference: every
 *    weight is an exact product (f16 scale x small integer) and at most one
 *    rounding, which fmsub(dl, q, ml) reproduces exactly; signs are applied
 *    by flipping the sign bit.
 *  - dot_f32 = sum of (dequantized weight) * x in f32 with several
 *    accumulators; only the summation order differs from the reference.
 *  - dot_act: integer partial sums are exact (maddubs inputs stay below
 *    saturation: activations in [-127, 127], weight codes <= 128); scales
 *    are applied in f32.
 *  - activation quantizers: byte-identical output to quant_ref.c (same
 *    roundings: roundf for Q8_0, round-to-nearest-even for Q8_K).
 *
 * Threading: pure functions.
 */
#ifndef V4F_QUANT_X86_H
#define V4F_QUANT_X86_H

#include <immintrin.h>

#include "quant/quant_internal.h"

#define X86_Q8_0_BYTES 34
#define X86_Q2K_BYTES 84
#define X86_Q4K_BYTES 144
#define X86_IQ2_BYTES 66
#define X86_Q8K_BYTES 292

static inline float x86_hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float x86_f16(const uint8_t *p) { return _cvtsh_ss(v4f_quant_rd_u16(p)); }

/* 8 bytes (zero-extended) -> 8 floats */
static inline __m256 x86_u8x8_ps(const void *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

/* ---- F32 / F16 / BF16 (any n) ----------------------------------------------- */

static inline __m256i x86_tail_mask(int64_t rem) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)rem), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

static inline void dequant_f32_avx2(const void *src, float *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static inline float dot_f32_f32_avx2(const void *w, const float *x, int64_t n) {
    const float *p = w;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(p + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(p + i + 8), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(p + i + 16), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(p + i + 24), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(p + i), _mm256_loadu_ps(x + i), a0);
    if (i < n) {
        const __m256i m = x86_tail_mask(n - i);
        a1 = _mm256_fmadd_ps(_mm256_maskload_ps(p + i, m), _mm256_maskload_ps(x + i, m), a1);
    }
    return x86_hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}

/* 8 halves / bfloat16s at p -> floats */
static inline __m256 x86_f16x8(const uint8_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
static inline __m256 x86_bf16x8(const uint8_t *p) {
    const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

#define X86_DEFINE_HALF(name, cvt8)                                                     \
    static inline void dequant_##name##_avx2(const void *src, float *dst, int64_t n) { \
        const uint8_t *p = src;                                                         \
        int64_t i = 0;                                                                  \
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, cvt8(p + 2 * i));          \
        if (i < n) {                                                                    \
            uint8_t t[16] = {0};                                                        \
            float y[8];                                                                 \
            memcpy(t, p + 2 * i, (size_t)(n - i) * 2);                                  \
            _mm256_storeu_ps(y, cvt8(t));                                               \
            memcpy(dst + i, y, (size_t)(n - i) * sizeof(float));                        \
        }                                                                               \
    }                                                                                   \
    static inline float dot_f32_##name##_avx2(const void *w, const float *x, int64_t n) { \
        const uint8_t *p = w;                                                           \
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                      \
        int64_t i = 0;                                                                  \
        for (; i + 32 <= n; i += 32) {                                                  \
            a0 = _mm256_fmadd_ps(cvt8(p + 2 * i), _mm256_loadu_ps(x + i), a0);          \
            a1 = _mm256_fmadd_ps(cvt8(p + 2 * i + 16), _mm256_loadu_ps(x + i + 8), a1); \
            a2 = _mm256_fmadd_ps(cvt8(p + 2 * i + 32), _mm256_loadu_ps(x + i + 16), a2); \
            a3 = _mm256_fmadd_ps(cvt8(p + 2 * i + 48), _mm256_loadu_ps(x + i + 24), a3); \
        }                                                                               \
        for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(cvt8(p + 2 * i), _mm256_loadu_ps(x + i), a0); \
        if (i < n) {                                                                    \
            uint8_t t[16] = {0};                                                        \
            memcpy(t, p + 2 * i, (size_t)(n - i) * 2);                                  \
            a1 = _mm256_fmadd_ps(cvt8(t), _mm256_maskload_ps(x + i, x86_tail_mask(n - i)), a1); \
        }                                                                               \
        return x86_hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3))); \
    }

X86_DEFINE_HALF(f16, x86_f16x8)
X86_DEFINE_HALF(bf16, x86_bf16x8)

/* ---- Q8_0 ---------------------------------------------------------------------- */

/* the 32 codes of a block as 4 x 8 floats */
static inline void x86_q8_0_codes(const uint8_t *qs, __m256 q[4]) {
    const __m128i lo = _mm_loadu_si128((const __m128i *)qs);
    const __m128i hi = _mm_loadu_si128((const __m128i *)(qs + 16));
    q[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo));
    q[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)));
    q[2] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi));
    q[3] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)));
}

static inline void dequant_q8_0_avx2(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / 32; i++, b += X86_Q8_0_BYTES, dst += 32) {
        const __m256 d = _mm256_set1_ps(x86_f16(b));
        __m256 q[4];
        x86_q8_0_codes(b + 2, q);
        for (int k = 0; k < 4; k++) _mm256_storeu_ps(dst + 8 * k, _mm256_mul_ps(d, q[k]));
    }
}

static inline float dot_f32_q8_0_avx2(const void *w, const float *x, int64_t n) {
    const uint8_t *b = w;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
    for (int64_t i = 0; i < n / 32; i++, b += X86_Q8_0_BYTES, x += 32) {
        __m256 q[4];
        x86_q8_0_codes(b + 2, q);
        __m256 s0 = _mm256_mul_ps(q[0], _mm256_loadu_ps(x));
        __m256 s1 = _mm256_mul_ps(q[1], _mm256_loadu_ps(x + 8));
        s0 = _mm256_fmadd_ps(q[2], _mm256_loadu_ps(x + 16), s0);
        s1 = _mm256_fmadd_ps(q[3], _mm256_loadu_ps(x + 24), s1);
        const __m256 d = _mm256_set1_ps(x86_f16(b));
        if (i & 1) acc1 = _mm256_fmadd_ps(d, _mm256_add_ps(s0, s1), acc1);
        else acc0 = _mm256_fmadd_ps(d, _mm256_add_ps(s0, s1), acc0);
    }
    return x86_hsum256(_mm256_add_ps(acc0, acc1));
}

static inline float dot_act_q8_0_avx2(const void *w, const void *xq, int64_t n) {
    const uint8_t *a = w, *b = xq;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / 32; i++, a += X86_Q8_0_BYTES, b += X86_Q8_0_BYTES) {
        const __m256i qa = _mm256_loadu_si256((const __m256i *)(a + 2));
        const __m256i qb = _mm256_loadu_si256((const __m256i *)(b + 2));
        const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(qa, qa), _mm256_sign_epi8(qb, qa));
        const __m256 p = _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, ones));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(x86_f16(a) * x86_f16(b)), p, acc);
    }
    return x86_hsum256(acc);
}

/* ---- Q2_K ---------------------------------------------------------------------- */

/* per-16 scales of a Q2_K block: dl[g] = d * (sc & 15), ml[g] = dmin * (sc >> 4)
 * (vector products, the same IEEE operations as the reference) */
static inline void x86_q2k_scales(const uint8_t *b, float *dl, float *ml) {
    const __m256 d = _mm256_set1_ps(x86_f16(b + V4F_Q2K_D)), dmin = _mm256_set1_ps(x86_f16(b + V4F_Q2K_DMIN));
    const __m128i s = _mm_loadu_si128((const __m128i *)(b + V4F_Q2K_SCALES));
    const __m128i lo = _mm_and_si128(s, _mm_set1_epi8(15));
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(s, 4), _mm_set1_epi8(15));
    _mm256_storeu_ps(dl, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo))));
    _mm256_storeu_ps(dl + 8, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)))));
    _mm256_storeu_ps(ml, _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi))));
    _mm256_storeu_ps(ml + 8, _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)))));
}

/* 8 codes of shift s from the 8 bytes at p */
static inline __m256 x86_q2_codes8(const uint8_t *p, int s) {
    const __m128i v = _mm_and_si128(_mm_srli_epi16(_mm_loadl_epi64((const __m128i *)p), 2 * s), _mm_set1_epi8(3));
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
}

static inline void dequant_q2_K_avx2(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / 256; i++, b += X86_Q2K_BYTES, dst += 256) {
        float dl[16], ml[16];
        x86_q2k_scales(b, dl, ml);
        for (int e = 0; e < 256; e += 8) {
            const int h = e / 128, s = (e % 128) / 32, l = e % 32, g = e / 16;
            const __m256 q = x86_q2_codes8(b + V4F_Q2K_QS + 32 * h + l, s);
            _mm256_storeu_ps(dst + e, _mm256_fmsub_ps(_mm256_set1_ps(dl[g]), q, _mm256_set1_ps(ml[g])));
        }
    }
}

/* dot: the 4 possible weights of a scale group, dl * (k & 3) - ml, repeat
 * in an 8-entry table indexed by the low 3 bits of each lane (vpermps), so
 * a code needs only a shift; the entries are exactly the dequantized values. */
static inline float dot_f32_q2_K_avx2(const void *w, const float *x, int64_t n) {
    const uint8_t *b = w;
    const __m256 iota4 = _mm256_setr_ps(0, 1, 2, 3, 0, 1, 2, 3);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
    for (int64_t i = 0; i < n / 256; i++, b += X86_Q2K_BYTES, x += 256) {
        float dl[16], ml[16];
        x86_q2k_scales(b, dl, ml);
        for (int h = 0; h < 2; h++) {
            for (int half = 0; half < 2; half++) {
                const uint8_t *p = b + V4F_Q2K_QS + 32 * h + 16 * half;
                const __m256i i0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
                const __m256i i1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + 8)));
                for (int s = 0; s < 4; s++) {
                    const int g = 8 * h + 2 * s + half;
                    const __m256 t = _mm256_fmsub_ps(_mm256_set1_ps(dl[g]), iota4, _mm256_set1_ps(ml[g]));
                    const float *xg = x + 128 * h + 32 * s + 16 * half;
                    const __m256 w0 = _mm256_permutevar8x32_ps(t, _mm256_srli_epi32(i0, 2 * s));
                    const __m256 w1 = _mm256_permutevar8x32_ps(t, _mm256_srli_epi32(i1, 2 * s));
                    acc0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xg), acc0);
                    acc1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xg + 8), acc1);
                }
            }
        }
    }
    return x86_hsum256(_mm256_add_ps(acc0, acc1));
}

static inline int32_t x86_q8k_bsum(const uint8_t *b, int g) {
    return (int16_t)v4f_quant_rd_u16(b + V4F_Q8K_BSUMS + 2 * g);
}

static inline float dot_act_q2_K_avx2(const void *w, const void *xq, int64_t n) {
    const uint8_t *a = w, *b = xq;
    __m256 acc = _mm256_setzero_ps();
    float accm = 0;
    for (int64_t i = 0; i < n / 256; i++, a += X86_Q2K_BYTES, b += X86_Q8K_BYTES) {
        const uint8_t *sc = a + V4F_Q2K_SCALES;
        int32_t msum = 0;
        for (int g = 0; g < 16; g++) msum += (sc[g] >> 4) * x86_q8k_bsum(b, g);
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i q2 = _mm256_loadu_si256((const __m256i *)(a + V4F_Q2K_QS + 32 * h));
            for (int s = 0; s < 4; s++) {
                const __m256i codes = _mm256_and_si256(_mm256_srli_epi16(q2, 2 * s), _mm256_set1_epi8(3));
                const __m256i y = _mm256_loadu_si256((const __m256i *)(b + V4F_Q8K_QS + 128 * h + 32 * s));
                const int g = 8 * h + 2 * s;
                const __m256i scv = _mm256_setr_m128i(_mm_set1_epi16(sc[g] & 15), _mm_set1_epi16(sc[g + 1] & 15));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(codes, y), scv));
            }
        }
        const float xd = v4f_quant_rd_f32(b + V4F_Q8K_D);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(xd * x86_f16(a + V4F_Q2K_D)), _mm256_cvtepi32_ps(sumi), acc);
        accm += xd * x86_f16(a + V4F_Q2K_DMIN) * (float)msum;
    }
    return x86_hsum256(acc) - accm;
}

/* ---- Q4_K ---------------------------------------------------------------------- */

/* The 8 six-bit scales and mins of a Q4_K block as two 8-byte groups,
 * branch-free on 32-bit words (same packing as v4f_quant_q4k_scale_min):
 * sc[0..3] = s[0..3] & 63, m[0..3] = s[4..7] & 63,
 * sc[4..7] = (s[8..11] & 15) | (s[0..3] >> 6) << 4,
 * m[4..7] = (s[8..11] >> 4) | (s[4..7] >> 6) << 4. */
static inline void x86_q4k_scale_bytes(const uint8_t *s, uint8_t sc[8], uint8_t m[8]) {
    const uint32_t a = v4f_quant_rd_u32(s), b = v4f_quant_rd_u32(s + 4), c = v4f_quant_rd_u32(s + 8);
    const uint32_t w[4] = {a & 0x3f3f3f3fu, (c & 0x0f0f0f0fu) | ((a >> 2) & 0x30303030u), b & 0x3f3f3f3fu,
                           ((c >> 4) & 0x0f0f0f0fu) | ((b >> 2) & 0x30303030u)};
    memcpy(sc, w, 8);
    memcpy(m, w + 2, 8);
}

static inline void x86_q4k_scales(const uint8_t *b, float *dl, float *ml) {
    uint8_t sc[8], m[8];
    x86_q4k_scale_bytes(b + V4F_Q4K_SCALES, sc, m);
    const __m256 d = _mm256_set1_ps(x86_f16(b + V4F_Q4K_D)), dmin = _mm256_set1_ps(x86_f16(b + V4F_Q4K_DMIN));
    _mm256_storeu_ps(dl, _mm256_mul_ps(d, x86_u8x8_ps(sc)));
    _mm256_storeu_ps(ml, _mm256_mul_ps(dmin, x86_u8x8_ps(m)));
}

/* 8 nibbles (low if hi == 0) of the 8 bytes at p */
static inline __m256 x86_q4_codes8(const uint8_t *p, int hi) {
    __m128i v = _mm_loadl_epi64((const __m128i *)p);
    if (hi) v = _mm_srli_epi16(v, 4);
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_and_si128(v, _mm_set1_epi8(15))));
}

static inline void dequant_q4_K_avx2(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / 256; i++, b += X86_Q4K_BYTES, dst += 256) {
        float dl[8], ml[8];
        x86_q4k_scales(b, dl, ml);
        for (int j = 0; j < 8; j++) {
            const __m256 vd = _mm256_set1_ps(dl[j]), vm = _mm256_set1_ps(ml[j]);
            for (int l = 0; l < 32; l += 8) {
                const __m256 q = x86_q4_codes8(b + V4F_Q4K_QS + 32 * (j / 2) + l, j & 1);
                _mm256_storeu_ps(dst + 32 * j + l, _mm256_fmsub_ps(vd, q, vm));
            }
        }
    }
}

static inline float dot_f32_q4_K_avx2(const void *w, const float *x, int64_t n) {
    const uint8_t *b = w;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
    for (int64_t i = 0; i < n / 256; i++, b += X86_Q4K_BYTES, x += 256) {
        float dl[8], ml[8];
        x86_q4k_scales(b, dl, ml);
        for (int c = 0; c < 4; c++) {
            const __m256 d0 = _mm256_set1_ps(dl[2 * c]), m0 = _mm256_set1_ps(ml[2 * c]);
            const __m256 d1 = _mm256_set1_ps(dl[2 * c + 1]), m1 = _mm256_set1_ps(ml[2 * c + 1]);
            for (int l = 0; l < 32; l += 8) {
                const uint8_t *p = b + V4F_Q4K_QS + 32 * c + l;
                const __m256 w0 = _mm256_fmsub_ps(d0, x86_q4_codes8(p, 0), m0);
                const __m256 w1 = _mm256_fmsub_ps(d1, x86_q4_codes8(p, 1), m1);
                acc0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + 64 * c + l), acc0);
                acc1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + 64 * c + 32 + l), acc1);
            }
        }
    }
    return x86_hsum256(_mm256_add_ps(acc0, acc1));
}

/* sum_j m_j * (bsums[2j] + bsums[2j+1]) of a Q4_K x Q8_K block pair */
static inline int32_t x86_q4k_minsum(const uint8_t m[8], const uint8_t *b) {
    const __m128i mv = _mm_loadl_epi64((const __m128i *)m);
    const __m128i m2 = _mm_unpacklo_epi8(mv, mv); /* m0 m0 m1 m1 ... */
    const __m256i bs = _mm256_loadu_si256((const __m256i *)(b + V4F_Q8K_BSUMS));
    const __m256i p = _mm256_madd_epi16(bs, _mm256_cvtepu8_epi16(m2));
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

static inline float dot_act_q4_K_avx2(const void *w, const void *xq, int64_t n) {
    const uint8_t *a = w, *b = xq;
    __m256 acc = _mm256_setzero_ps();
    float accm = 0;
    for (int64_t i = 0; i < n / 256; i++, a += X86_Q4K_BYTES, b += X86_Q8K_BYTES) {
        uint8_t sc[8], m[8];
        x86_q4k_scale_bytes(a + V4F_Q4K_SCALES, sc, m);
        const int32_t msum = x86_q4k_minsum(m, b);
        __m256i sumi = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            const __m256i q4 = _mm256_loadu_si256((const __m256i *)(a + V4F_Q4K_QS + 32 * c));
            const __m256i lo = _mm256_and_si256(q4, _mm256_set1_epi8(15));
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), _mm256_set1_epi8(15));
            const __m256i y0 = _mm256_loadu_si256((const __m256i *)(b + V4F_Q8K_QS + 64 * c));
            const __m256i y1 = _mm256_loadu_si256((const __m256i *)(b + V4F_Q8K_QS + 64 * c + 32));
            const __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, y0), _mm256_set1_epi16(sc[2 * c]));
            const __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, y1), _mm256_set1_epi16(sc[2 * c + 1]));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
        }
        const float xd = v4f_quant_rd_f32(b + V4F_Q8K_D);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(xd * x86_f16(a + V4F_Q4K_D)), _mm256_cvtepi32_ps(sumi), acc);
        accm += xd * x86_f16(a + V4F_Q4K_DMIN) * (float)msum;
    }
    return x86_hsum256(acc) - accm;
}

/* ---- IQ2_XXS ------------------------------------------------------------------- */

/* The 8 group scales of an IQ2_XXS block, db[g] = d * (0.5 + ls_g) * 0.25
 * (same IEEE operations as the reference); ls_g is the top nibble of the
 * second u32 of group g, i.e. of the odd dwords of qs. */
static inline void x86_iq2_dbs(const uint8_t *b, float db[8]) {
    const __m256 v0 = _mm256_loadu_ps((const float *)(b + V4F_IQ2_QS));
    const __m256 v1 = _mm256_loadu_ps((const float *)(b + V4F_IQ2_QS + 32));
    /* odd dwords: groups 0 1 4 5 | 2 3 6 7, then restore the order */
    const __m256 odd = _mm256_shuffle_ps(v0, v1, _MM_SHUFFLE(3, 1, 3, 1));
    const __m256i aux = _mm256_permute4x64_epi64(_mm256_castps_si256(odd), _MM_SHUFFLE(3, 1, 2, 0));
    const __m256 ls = _mm256_cvtepi32_ps(_mm256_srli_epi32(aux, 28));
    const __m256 d = _mm256_set1_ps(x86_f16(b + V4F_IQ2_D));
    _mm256_storeu_ps(db, _mm256_mul_ps(_mm256_mul_ps(d, _mm256_add_ps(_mm256_set1_ps(0.5f), ls)), _mm256_set1_ps(0.25f)));
}

/* The low 3 bits of the grid bytes 0x08, 0x19, 0x2b are 0, 1, 3, so an
 * 8-entry table {db*8, db*25, -, db*43} indexed by the zero-extended grid
 * bytes (vpermps) gives the magnitudes, exactly as the reference computes
 * them; the sign comes from the expanded sign-bit table. */
static inline __m256 x86_iq2_lut(float db) {
    return _mm256_mul_ps(_mm256_set1_ps(db), _mm256_setr_ps(8, 25, 0, 43, 0, 0, 0, 0));
}

/* dequantized 8 weights of grid point idx with 7-bit sign index si */
static inline __m256 x86_iq2_w8(__m256 tab, uint8_t idx, uint32_t si) {
    const __m256i g = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)&v4f_quant_iq2xxs_grid[idx]));
    const __m256 sign = _mm256_loadu_ps((const float *)v4f_quant_ksigns_f32[si & 127]);
    return _mm256_xor_ps(_mm256_permutevar8x32_ps(tab, g), sign);
}

static inline void dequant_iq2_xxs_avx2(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / 256; i++, b += X86_IQ2_BYTES, dst += 256) {
        float db[8];
        x86_iq2_dbs(b, db);
        for (int g = 0; g < 8; g++) {
            const uint8_t *q = b + V4F_IQ2_QS + 8 * g;
            const uint32_t aux = v4f_quant_rd_u32(q + 4);
            const __m256 tab = x86_iq2_lut(db[g]);
            for (int l = 0; l < 4; l++) _mm256_storeu_ps(dst + 32 * g + 8 * l, x86_iq2_w8(tab, q[l], aux >> (7 * l)));
        }
    }
}

/* dot: the 8 weights of a grid point are db * (grid row read as 8 floats
 * from v4f_quant_iq2xxs_gridf) with the sign bits flipped from the expanded
 * sign table: two table loads, a multiply, a xor and the FMA per 8 lanes,
 * no shuffles: 1.3-1.6x the byte-extract + vpermps version in cache, on
 * the dev EPYC and the Xeon host (AVX2 table). The AVX-512 table keeps its
 * 16-lane vpermps kernel, which did as well in the all-core decode
 * (docs/PERF_NOTES.md, "CPU speed (session 3)"). The products db * grid
 * are the reference's exact dequantized weights. */
static inline __m256 x86_iq2_w8t(__m256 vdb, uint32_t idx, uint32_t si) {
    const __m256 g = _mm256_load_ps(v4f_quant_iq2xxs_gridf[idx]);
    const __m256 sign = _mm256_load_ps((const float *)v4f_quant_ksigns_f32[si & 127]);
    return _mm256_xor_ps(_mm256_mul_ps(vdb, g), sign);
}

static inline float dot_f32_iq2_xxs_avx2(const void *w, const float *x, int64_t n) {
    const uint8_t *b = w;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    for (int64_t i = 0; i < n / 256; i++, b += X86_IQ2_BYTES, x += 256) {
        float db[8];
        x86_iq2_dbs(b, db);
        for (int g = 0; g < 8; g++) {
            const uint8_t *q = b + V4F_IQ2_QS + 8 * g;
            const uint32_t idx = v4f_quant_rd_u32(q), aux = v4f_quant_rd_u32(q + 4);
            const __m256 vdb = _mm256_set1_ps(db[g]);
            const float *xg = x + 32 * g;
            acc0 = _mm256_fmadd_ps(x86_iq2_w8t(vdb, idx & 255, aux), _mm256_loadu_ps(xg), acc0);
            acc1 = _mm256_fmadd_ps(x86_iq2_w8t(vdb, (idx >> 8) & 255, aux >> 7), _mm256_loadu_ps(xg + 8), acc1);
            acc2 = _mm256_fmadd_ps(x86_iq2_w8t(vdb, (idx >> 16) & 255, aux >> 14), _mm256_loadu_ps(xg + 16), acc2);
            acc3 = _mm256_fmadd_ps(x86_iq2_w8t(vdb, idx >> 24, aux >> 21), _mm256_loadu_ps(xg + 24), acc3);
        }
    }
    return x86_hsum256(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
}

/* 32 bytes of +1/-1 from four 7-bit sign indices */
static inline __m256i x86_sign_bytes(uint32_t aux) {
    return _mm256_setr_epi64x((long long)v4f_quant_ksigns_pm1[aux & 127],
                              (long long)v4f_quant_ksigns_pm1[(aux >> 7) & 127],
                              (long long)v4f_quant_ksigns_pm1[(aux >> 14) & 127],
                              (long long)v4f_quant_ksigns_pm1[(aux >> 21) & 127]);
}

static inline float dot_act_iq2_xxs_avx2(const void *w, const void *xq, int64_t n) {
    const uint8_t *a = w, *b = xq;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / 256; i++, a += X86_IQ2_BYTES, b += X86_Q8K_BYTES) {
        __m256i sumi = _mm256_setzero_si256();
        for (int g = 0; g < 8; g++) {
            const uint8_t *q = a + V4F_IQ2_QS + 8 * g;
            const uint32_t aux = v4f_quant_rd_u32(q + 4);
            const __m256i gv = _mm256_setr_epi64x(
                (long long)v4f_quant_iq2xxs_grid[q[0]], (long long)v4f_quant_iq2xxs_grid[q[1]],
                (long long)v4f_quant_iq2xxs_grid[q[2]], (long long)v4f_quant_iq2xxs_grid[q[3]]);
            const __m256i y = _mm256_loadu_si256((const __m256i *)(b + V4F_Q8K_QS + 32 * g));
            const __m256i p16 = _mm256_maddubs_epi16(gv, _mm256_sign_epi8(y, x86_sign_bytes(aux)));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p16, _mm256_set1_epi16((short)(2 * (aux >> 28) + 1))));
        }
        const float dd = x86_f16(a) * v4f_quant_rd_f32(b + V4F_Q8K_D) * 0.125f;
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dd), _mm256_cvtepi32_ps(sumi), acc);
    }
    return x86_hsum256(acc);
}

/* ---- activation quantizers (bit-identical to quant_ref.c) ------------------------- */

static inline float x86_hmax256(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* 4 x 8 int32 (each in [-128, 127]) -> 32 int8 in order */
static inline __m256i x86_pack_i8(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
    /* lanes now hold a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7 */
    return _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* roundf (half away from zero), exactly: truncate, then step away from
 * zero when the dropped fraction is >= 0.5 */
static inline __m256 x86_roundf(__m256 v) {
    const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 half = _mm256_cmp_ps(_mm256_and_ps(_mm256_sub_ps(v, t), absmask), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    const __m256 one = _mm256_or_ps(_mm256_andnot_ps(absmask, v), _mm256_set1_ps(1.0f)); /* +-1 */
    return _mm256_add_ps(t, _mm256_and_ps(half, one));
}

static inline void act_q8_0_avx2(const float *x, void *dst, int64_t n) {
    uint8_t *out = dst;
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int64_t i = 0; i < n / 32; i++, x += 32, out += X86_Q8_0_BYTES) {
        __m256 v[4], m = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(x + 8 * k);
            m = _mm256_max_ps(m, _mm256_and_ps(v[k], absmask));
        }
        const float d = x86_hmax256(m) / 127.0f;
        const __m256 id = _mm256_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
        const uint16_t dh = v4f_f32_to_f16(d);
        memcpy(out, &dh, 2);
        __m256i q[4];
        for (int k = 0; k < 4; k++) q[k] = _mm256_cvttps_epi32(x86_roundf(_mm256_mul_ps(v[k], id)));
        _mm256_storeu_si256((__m256i *)(out + 2), x86_pack_i8(q[0], q[1], q[2], q[3]));
    }
}

/* the first element of largest magnitude (the reference's strict '>' scan) */
static inline float x86_first_absmax(const float *x, float amax) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int k = 0; k < 256; k += 8) {
        const __m256 a = _mm256_and_ps(_mm256_loadu_ps(x + k), absmask);
        const int bits = _mm256_movemask_ps(_mm256_cmp_ps(a, _mm256_set1_ps(amax), _CMP_EQ_OQ));
        if (bits) return x[k + __builtin_ctz((unsigned)bits)];
    }
    return 0.0f;
}

static inline void act_q8_K_avx2(const float *x, void *dst, int64_t n) {
    uint8_t *out = dst;
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int64_t i = 0; i < n / 256; i++, x += 256, out += X86_Q8K_BYTES) {
        __m256 m = _mm256_setzero_ps();
        for (int k = 0; k < 256; k += 8) m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(x + k), absmask));
        const float amax = x86_hmax256(m);
        memset(out, 0, X86_Q8K_BYTES);
        if (amax == 0.0f) continue;
        const float iscale = -127.0f / x86_first_absmax(x, amax);
        const __m256 vs = _mm256_set1_ps(iscale);
        int16_t bsums[16];
        for (int k = 0; k < 256; k += 32) {
            __m256i q[4];
            for (int j = 0; j < 4; j++) {
                const __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(vs, _mm256_loadu_ps(x + k + 8 * j)));
                q[j] = _mm256_min_epi32(v, _mm256_set1_epi32(127));
            }
            _mm256_storeu_si256((__m256i *)(out + V4F_Q8K_QS + k), x86_pack_i8(q[0], q[1], q[2], q[3]));
            /* q[0..1] are the first 16 codes, q[2..3] the next 16 */
            const __m256i s = _mm256_hadd_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            const __m256i s2 = _mm256_hadd_epi32(s, s); /* lane0: g0 part, lane1: g1 part (per 128 half) */
            bsums[k / 16] = (int16_t)(_mm256_extract_epi32(s2, 0) + _mm256_extract_epi32(s2, 4));
            bsums[k / 16 + 1] = (int16_t)(_mm256_extract_epi32(s2, 1) + _mm256_extract_epi32(s2, 5));
        }
        memcpy(out + V4F_Q8K_BSUMS, bsums, sizeof bsums);
        const float d = 1.0f / iscale;
        memcpy(out + V4F_Q8K_D, &d, 4);
    }
}

#endif /* V4F_QUANT_X86_H */
