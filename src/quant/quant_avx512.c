/*
 * quant_avx512.c - the AVX-512 (F, BW, VL, DQ) + FMA + F16C kernel table,
 * selected at run time only if cpuid reports all of them. dequant_row and
 * dot_f32 are widened to 16 lanes (masked loads for the F32/F16/BF16
 * tails; Q2_K / Q4_K / IQ2_XXS dots read their weights from 16-entry
 * vpermps tables); the Q4_K activation dot uses 512-bit integer ops; the
 * other quantized-activation dots and the activation quantizers reuse the
 * 256-bit kernels of quant_x86.h.
 *
 * Invariants: as quant_x86.h (bit-exact dequantization; f32 dots differ
 * from the reference only in summation order).
 * Threading: pure functions; the filler runs once under the dispatch
 * pthread_once.
 */
#include <stdlib.h>

#include "quant/quant_x86.h"

static inline float hsum512(__m512 v) { return _mm512_reduce_add_ps(v); }

static inline __mmask16 tail16(int64_t rem) { return (__mmask16)((1u << rem) - 1u); }

/* 16 bytes (zero-extended) -> 16 floats */
static inline __m512 u8x16_ps(__m128i v) { return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(v)); }

/* ---- F32 / F16 / BF16 ------------------------------------------------------- */

static float dot_f32_f32(const void *w, const float *x, int64_t n) {
    const float *p = w;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(p + i), _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(p + i + 16), _mm512_loadu_ps(x + i + 16), a1);
        a2 = _mm512_fmadd_ps(_mm512_loadu_ps(p + i + 32), _mm512_loadu_ps(x + i + 32), a2);
        a3 = _mm512_fmadd_ps(_mm512_loadu_ps(p + i + 48), _mm512_loadu_ps(x + i + 48), a3);
    }
    for (; i + 16 <= n; i += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(p + i), _mm512_loadu_ps(x + i), a0);
    if (i < n) {
        const __mmask16 m = tail16(n - i);
        a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, p + i), _mm512_maskz_loadu_ps(m, x + i), a1);
    }
    return hsum512(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

static inline __m512 f16x16(__m256i v) { return _mm512_cvtph_ps(v); }
static inline __m512 bf16x16(__m256i v) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
}

#define DEFINE_HALF(name, cvt16)                                                        \
    static void dequant_##name(const void *src, float *dst, int64_t n) {                \
        const uint8_t *p = src;                                                         \
        int64_t i = 0;                                                                  \
        for (; i + 16 <= n; i += 16)                                                    \
            _mm512_storeu_ps(dst + i, cvt16(_mm256_loadu_si256((const __m256i *)(p + 2 * i)))); \
        if (i < n) {                                                                    \
            const __mmask16 m = tail16(n - i);                                          \
            _mm512_mask_storeu_ps(dst + i, m, cvt16(_mm256_maskz_loadu_epi16(m, p + 2 * i))); \
        }                                                                               \
    }                                                                                   \
    static float dot_f32_##name(const void *w, const float *x, int64_t n) {             \
        const uint8_t *p = w;                                                           \
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                      \
        int64_t i = 0;                                                                  \
        for (; i + 64 <= n; i += 64) {                                                  \
            const __m256i *q = (const __m256i *)(p + 2 * i);                            \
            a0 = _mm512_fmadd_ps(cvt16(_mm256_loadu_si256(q)), _mm512_loadu_ps(x + i), a0); \
            a1 = _mm512_fmadd_ps(cvt16(_mm256_loadu_si256(q + 1)), _mm512_loadu_ps(x + i + 16), a1); \
            a2 = _mm512_fmadd_ps(cvt16(_mm256_loadu_si256(q + 2)), _mm512_loadu_ps(x + i + 32), a2); \
            a3 = _mm512_fmadd_ps(cvt16(_mm256_loadu_si256(q + 3)), _mm512_loadu_ps(x + i + 48), a3); \
        }                                                                               \
        for (; i + 16 <= n; i += 16)                                                    \
            a0 = _mm512_fmadd_ps(cvt16(_mm256_loadu_si256((const __m256i *)(p + 2 * i))), \
                                 _mm512_loadu_ps(x + i), a0);                           \
        if (i < n) {                                                                    \
            const __mmask16 m = tail16(n - i);                                          \
            a1 = _mm512_fmadd_ps(cvt16(_mm256_maskz_loadu_epi16(m, p + 2 * i)),         \
                                 _mm512_maskz_loadu_ps(m, x + i), a1);                  \
        }                                                                               \
        return hsum512(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));    \
    }

DEFINE_HALF(f16, f16x16)
DEFINE_HALF(bf16, bf16x16)

/* ---- Q8_0 -------------------------------------------------------------------- */

static inline void q8_0_codes(const uint8_t *qs, __m512 *q0, __m512 *q1) {
    *q0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)qs)));
    *q1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(qs + 16))));
}

static void dequant_q8_0(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / 32; i++, b += X86_Q8_0_BYTES, dst += 32) {
        const __m512 d = _mm512_set1_ps(x86_f16(b));
        __m512 q0, q1;
        q8_0_codes(b + 2, &q0, &q1);
        _mm512_storeu_ps(dst, _mm512_mul_ps(d, q0));
        _mm512_storeu_ps(dst + 16, _mm512_mul_ps(d, q1));
    }
}

/* Q8_0 dot; pf > 0: a software prefetch pf bytes ahead of the weights,
 * one per two blocks (68 bytes). Inlined with a constant 0 for the plain
 * kernel, so the loop has no prefetch test there. */
static inline float q8_0_dot(const void *w, const float *x, int64_t n, int64_t pf) {
    const uint8_t *b = w;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
    int64_t i = 0;
    for (; i + 2 <= n / 32; i += 2, b += 2 * X86_Q8_0_BYTES, x += 64) {
        if (pf) _mm_prefetch((const char *)b + pf, _MM_HINT_T0);
        __m512 q0, q1, q2, q3;
        q8_0_codes(b + 2, &q0, &q1);
        q8_0_codes(b + X86_Q8_0_BYTES + 2, &q2, &q3);
        const __m512 s0 = _mm512_fmadd_ps(q1, _mm512_loadu_ps(x + 16), _mm512_mul_ps(q0, _mm512_loadu_ps(x)));
        const __m512 s1 = _mm512_fmadd_ps(q3, _mm512_loadu_ps(x + 48), _mm512_mul_ps(q2, _mm512_loadu_ps(x + 32)));
        acc0 = _mm512_fmadd_ps(_mm512_set1_ps(x86_f16(b)), s0, acc0);
        acc1 = _mm512_fmadd_ps(_mm512_set1_ps(x86_f16(b + X86_Q8_0_BYTES)), s1, acc1);
    }
    if (i < n / 32) {
        __m512 q0, q1;
        q8_0_codes(b + 2, &q0, &q1);
        const __m512 s0 = _mm512_fmadd_ps(q1, _mm512_loadu_ps(x + 16), _mm512_mul_ps(q0, _mm512_loadu_ps(x)));
        acc0 = _mm512_fmadd_ps(_mm512_set1_ps(x86_f16(b)), s0, acc0);
    }
    return hsum512(_mm512_add_ps(acc0, acc1));
}

static float dot_f32_q8_0(const void *w, const float *x, int64_t n) { return q8_0_dot(w, x, n, 0); }

/* The same with the prefetch: decode matvecs stream every row once. On the
 * 16-core Xeon host a 1 KiB distance first measured best in an A/B of one
 * noisy decode run (4-16 KiB slower, docs/PERF_NOTES.md, "CPU speed
 * (session 3)"); a direct all-thread Q8_0 streaming test there in session 8
 * gave 80-89 GB/s at 1 KiB, 95-105 at 2 KiB, 110-112 at 4 KiB, 104-119 at
 * 8 KiB and 65-74 without. Set once by the filler (V4F_Q8_PF=bytes, 0: off). */
#define Q8_PF_BYTES 4096
static int64_t g_q8_pf;
static float dot_f32_q8_0_pf(const void *w, const float *x, int64_t n) { return q8_0_dot(w, x, n, g_q8_pf); }

/* ---- Q2_K: one 16-lane vector is exactly one scale group ---------------------- */

/* codes of group g (16 elements) */
static inline __m512 q2_group(const uint8_t *b, int g) {
    const int h = g / 8, s = (g % 8) / 2, half = g & 1;
    const __m128i v = _mm_loadu_si128((const __m128i *)(b + V4F_Q2K_QS + 32 * h + 16 * half));
    return u8x16_ps(_mm_and_si128(_mm_srli_epi16(v, 2 * s), _mm_set1_epi8(3)));
}

static void dequant_q2_K(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / 256; i++, b += X86_Q2K_BYTES, dst += 256) {
        float dl[16], ml[16];
        x86_q2k_scales(b, dl, ml);
        for (int g = 0; g < 16; g++)
            _mm512_storeu_ps(dst + 16 * g,
                             _mm512_fmsub_ps(_mm512_set1_ps(dl[g]), q2_group(b, g), _mm512_set1_ps(ml[g])));
    }
}

/* dot: the 4 possible weights of a scale group, dl * (k & 3) - ml, form a
 * 16-entry table indexed by the low 4 bits of each lane (vpermps), so a
 * lane's code needs only a shift; table entries are exactly the
 * dequantized values. */
static float dot_f32_q2_K(const void *w, const float *x, int64_t n) {
    const uint8_t *b = w;
    const __m512 iota4 = _mm512_setr_ps(0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
    for (int64_t i = 0; i < n / 256; i++, b += X86_Q2K_BYTES, x += 256) {
        float dl[16], ml[16];
        x86_q2k_scales(b, dl, ml);
        for (int h = 0; h < 2; h++) {
            for (int half = 0; half < 2; half++) {
                const __m512i idx = _mm512_cvtepu8_epi32(
                    _mm_loadu_si128((const __m128i *)(b + V4F_Q2K_QS + 32 * h + 16 * half)));
                for (int s = 0; s < 4; s += 2) {
                    const int g = 8 * h + 2 * s + half;
                    const __m512 t0 = _mm512_fmsub_ps(_mm512_set1_ps(dl[g]), iota4, _mm512_set1_ps(ml[g]));
                    const __m512 t1 = _mm512_fmsub_ps(_mm512_set1_ps(dl[g + 2]), iota4, _mm512_set1_ps(ml[g + 2]));
                    const __m512 w0 = _mm512_permutexvar_ps(_mm512_srli_epi32(idx, 2 * s), t0);
                    const __m512 w1 = _mm512_permutexvar_ps(_mm512_srli_epi32(idx, 2 * s + 2), t1);
                    const float *xg = x + 128 * h + 32 * s + 16 * half;
                    acc0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xg), acc0);
                    acc1 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xg + 32), acc1);
                }
            }
        }
    }
    return hsum512(_mm512_add_ps(acc0, acc1));
}

/* ---- Q4_K ---------------------------------------------------------------------- */

/* 16 nibbles (low or high) of the 16 bytes at p */
static inline __m512 q4_codes16(const uint8_t *p, int hi) {
    __m128i v = _mm_loadu_si128((const __m128i *)p);
    if (hi) v = _mm_srli_epi16(v, 4);
    return u8x16_ps(_mm_and_si128(v, _mm_set1_epi8(15)));
}

static void dequant_q4_K(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / 256; i++, b += X86_Q4K_BYTES, dst += 256) {
        float dl[8], ml[8];
        x86_q4k_scales(b, dl, ml);
        for (int j = 0; j < 8; j++) {
            const __m512 vd = _mm512_set1_ps(dl[j]), vm = _mm512_set1_ps(ml[j]);
            for (int l = 0; l < 32; l += 16) {
                const __m512 q = q4_codes16(b + V4F_Q4K_QS + 32 * (j / 2) + l, j & 1);
                _mm512_storeu_ps(dst + 32 * j + l, _mm512_fmsub_ps(vd, q, vm));
            }
        }
    }
}

/* dot: the 16 possible weights of a sub-block, dl * k - ml, form a table
 * indexed by the low 4 bits of each lane (vpermps): the low nibble needs no
 * mask and the high one a single shift. */
static float dot_f32_q4_K(const void *w, const float *x, int64_t n) {
    const uint8_t *b = w;
    const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
    for (int64_t i = 0; i < n / 256; i++, b += X86_Q4K_BYTES, x += 256) {
        float dl[8], ml[8];
        x86_q4k_scales(b, dl, ml);
        for (int c = 0; c < 4; c++) {
            const __m512 t0 = _mm512_fmsub_ps(_mm512_set1_ps(dl[2 * c]), iota, _mm512_set1_ps(ml[2 * c]));
            const __m512 t1 = _mm512_fmsub_ps(_mm512_set1_ps(dl[2 * c + 1]), iota, _mm512_set1_ps(ml[2 * c + 1]));
            for (int l = 0; l < 32; l += 16) {
                const __m512i idx =
                    _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b + V4F_Q4K_QS + 32 * c + l)));
                const __m512 w0 = _mm512_permutexvar_ps(idx, t0);
                const __m512 w1 = _mm512_permutexvar_ps(_mm512_srli_epi32(idx, 4), t1);
                acc0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + 64 * c + l), acc0);
                acc1 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + 64 * c + 32 + l), acc1);
            }
        }
    }
    return hsum512(_mm512_add_ps(acc0, acc1));
}

/* 64 nibbles of one 32-byte chunk line up with 64 consecutive Q8_K codes:
 * low nibbles = sub-block 2c, high = 2c + 1. */
static float dot_act_q4_K(const void *w, const void *xq, int64_t n) {
    const uint8_t *a = w, *b = xq;
    __m512 acc = _mm512_setzero_ps();
    float accm = 0;
    for (int64_t i = 0; i < n / 256; i++, a += X86_Q4K_BYTES, b += X86_Q8K_BYTES) {
        uint8_t sc[8], m[8];
        x86_q4k_scale_bytes(a + V4F_Q4K_SCALES, sc, m);
        const int32_t msum = x86_q4k_minsum(m, b);
        __m512i sumi = _mm512_setzero_si512();
        for (int c = 0; c < 4; c++) {
            const __m256i q4 = _mm256_loadu_si256((const __m256i *)(a + V4F_Q4K_QS + 32 * c));
            const __m256i lo = _mm256_and_si256(q4, _mm256_set1_epi8(15));
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), _mm256_set1_epi8(15));
            const __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
            const __m512i y = _mm512_loadu_si512((const void *)(b + V4F_Q8K_QS + 64 * c));
            const __m512i scv = _mm512_inserti64x4(_mm512_set1_epi16(sc[2 * c]), _mm256_set1_epi16(sc[2 * c + 1]), 1);
            sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(_mm512_maddubs_epi16(q, y), scv));
        }
        const float xd = v4f_quant_rd_f32(b + V4F_Q8K_D);
        acc = _mm512_fmadd_ps(_mm512_set1_ps(xd * x86_f16(a + V4F_Q4K_D)), _mm512_cvtepi32_ps(sumi), acc);
        accm += xd * x86_f16(a + V4F_Q4K_DMIN) * (float)msum;
    }
    return hsum512(acc) - accm;
}

/* ---- IQ2_XXS: 16 lanes = two grid points --------------------------------------- */

/* The grid bytes 0x08, 0x19, 0x2b have distinct low nibbles (8, 9, 11), so
 * a 16-entry table {8: db*8, 9: db*25, 11: db*43} indexed by the zero-
 * extended grid bytes (vpermps) yields the magnitudes; signs flip the sign
 * bit under a mask. Entries are db * byte, exact like the reference. */
static inline __m512 iq2_lut(float db) {
    const __m512 base = _mm512_setr_ps(0, 0, 0, 0, 0, 0, 0, 0, 8, 25, 0, 43, 0, 0, 0, 0);
    return _mm512_mul_ps(_mm512_set1_ps(db), base);
}

static inline __m512 iq2_w16(__m512 tab, const uint8_t *idx, uint32_t aux) {
    const __m128i g = _mm_set_epi64x((long long)v4f_quant_iq2xxs_grid[idx[1]],
                                     (long long)v4f_quant_iq2xxs_grid[idx[0]]);
    const __mmask16 neg = (__mmask16)(v4f_quant_ksigns[aux & 127] | (v4f_quant_ksigns[(aux >> 7) & 127] << 8));
    const __m512i w = _mm512_castps_si512(_mm512_permutexvar_ps(_mm512_cvtepu8_epi32(g), tab));
    return _mm512_castsi512_ps(_mm512_mask_xor_epi32(w, neg, w, _mm512_set1_epi32((int)0x80000000u)));
}

static void dequant_iq2_xxs(const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / 256; i++, b += X86_IQ2_BYTES, dst += 256) {
        float db[8];
        x86_iq2_dbs(b, db);
        for (int g = 0; g < 8; g++) {
            const uint8_t *q = b + V4F_IQ2_QS + 8 * g;
            const uint32_t aux = v4f_quant_rd_u32(q + 4);
            const __m512 tab = iq2_lut(db[g]);
            _mm512_storeu_ps(dst + 32 * g, iq2_w16(tab, q, aux));
            _mm512_storeu_ps(dst + 32 * g + 16, iq2_w16(tab, q + 2, aux >> 14));
        }
    }
}

static float dot_f32_iq2_xxs(const void *w, const float *x, int64_t n) {
    const uint8_t *b = w;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
    for (int64_t i = 0; i < n / 256; i++, b += X86_IQ2_BYTES, x += 256) {
        float db[8];
        x86_iq2_dbs(b, db);
        for (int g = 0; g < 8; g++) {
            const uint8_t *q = b + V4F_IQ2_QS + 8 * g;
            const uint32_t aux = v4f_quant_rd_u32(q + 4);
            const __m512 tab = iq2_lut(db[g]);
            acc0 = _mm512_fmadd_ps(iq2_w16(tab, q, aux), _mm512_loadu_ps(x + 32 * g), acc0);
            acc1 = _mm512_fmadd_ps(iq2_w16(tab, q + 2, aux >> 14), _mm512_loadu_ps(x + 32 * g + 16), acc1);
        }
    }
    return hsum512(_mm512_add_ps(acc0, acc1));
}

/* ---- table -------------------------------------------------------------------------- */

void v4f_quant_fill_avx512(v4f_quant_kernels *tab, v4f_quant_act_kernels *act) {
    act->q8_0 = act_q8_0_avx2;
    act->q8_K = act_q8_K_avx2;
    tab[V4F_TYPE_F32].dot_f32 = dot_f32_f32;
    tab[V4F_TYPE_F16].dequant_row = dequant_f16;
    tab[V4F_TYPE_F16].dot_f32 = dot_f32_f16;
    tab[V4F_TYPE_BF16].dequant_row = dequant_bf16;
    tab[V4F_TYPE_BF16].dot_f32 = dot_f32_bf16;
    tab[V4F_TYPE_Q8_0].dequant_row = dequant_q8_0;
    tab[V4F_TYPE_Q8_0].dot_f32 = dot_f32_q8_0;
    tab[V4F_TYPE_Q8_0].dot_act = dot_act_q8_0_avx2;
    tab[V4F_TYPE_Q2_K].dequant_row = dequant_q2_K;
    tab[V4F_TYPE_Q2_K].dot_f32 = dot_f32_q2_K;
    tab[V4F_TYPE_Q2_K].dot_act = dot_act_q2_K_avx2;
    tab[V4F_TYPE_Q4_K].dequant_row = dequant_q4_K;
    tab[V4F_TYPE_Q4_K].dot_f32 = dot_f32_q4_K;
    tab[V4F_TYPE_Q4_K].dot_act = dot_act_q4_K;
    tab[V4F_TYPE_IQ2_XXS].dequant_row = dequant_iq2_xxs;
    tab[V4F_TYPE_IQ2_XXS].dot_f32 = dot_f32_iq2_xxs;
    /* Q8_0 decode matvec: software prefetch Q8_PF_BYTES ahead unless
     * V4F_Q8_PF=0 (or another distance in bytes) */
    const char *pf = getenv("V4F_Q8_PF");
    g_q8_pf = pf && *pf ? atoi(pf) : Q8_PF_BYTES;
    if (g_q8_pf > 0) tab[V4F_TYPE_Q8_0].dot_f32 = dot_f32_q8_0_pf;
    tab[V4F_TYPE_IQ2_XXS].dot_act = dot_act_iq2_xxs_avx2;
}
