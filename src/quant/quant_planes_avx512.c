/*
 * quant_planes_avx512.c - int8-plane activations on AVX-512 + VNNI + VBMI:
 * the plane split of an f32 row (byte-identical to v4f_quant_planes_ref) and
 * the plane dots of Q2_K, Q4_K and IQ2_XXS, the dot_planes members of the
 * AVX-512 table (quant.c fills them only where cpuid reports VNNI and VBMI).
 * The file is compiled with the AVX-512 flags; every function carries the
 * VNNI/VBMI target attribute (so nothing else in the build assumes them).
 *
 * Why: the f32 dots of the 2-bit types are bound by the instructions that
 * turn codes into floats (docs/PERF_NOTES.md, "CPU speed (session 3)"). Here
 * x is split once per matvec into three int8 planes per group of 32
 * (quant_internal.h) and vpdpbusd multiplies 64 unsigned weight bytes with 64
 * signed plane bytes per instruction, summing groups of 4 into 16 int32
 * lanes. The weight codes are the unsigned operand (Q2_K / Q4_K codes; for
 * IQ2_XXS the signed grid values biased by +64, 64 +- g, the sign applied by
 * one masked byte subtraction from 128 per chunk, and the bias 64 * sum of
 * the planes subtracted per lane from the split's bias lanes: the same
 * integers as the signs applied to the three planes, one op instead of
 * three). (A Q8_0 kernel of the same kind, |code| with the sign on
 * the planes, ran at parity with the f32 one in decode on the Xeon host and
 * slower on the EPYC: not kept, docs/PERF_NOTES.md.)
 *
 * A block's 4 chunks of 64 weights against the plane records of the same
 * elements (quant_internal.h: lanes 2k, 2k + 1 hold group k in every chunk):
 * each chunk adds one dpbusd per plane into the block's sums S1, S2, S3, and
 * once per block T = (((S1 << 7) + S2) << 7) + S3 per lane (IQ2_XXS minus the
 * block's bias lanes), converted to float and multiplied by the lane's scale
 * d_w * d_x / 16384 (Q2_K: two such sums per block, chunks 0-1 and 2-3, whose
 * 16-element scales differ). The int32 arithmetic wraps at most in the
 * partial sums: the true T of a lane is at most 16 * 43 * 127 * 16513 < 2^31
 * (IQ2_XXS: 16 elements of |code| <= 43; Q4_K 16 * 15, Q2_K 8 * 3 in place of
 * 16 * 43), so the wrapped result is exact. Per block that is 2 shifts, 1
 * conversion and 1 FMA instead of 8, 4 and 4 when each chunk was scaled on
 * its own (Xeon host: IQ2_XXS streaming +8-20%, docs/PERF_NOTES.md "Session
 * 32"); the split's bias lanes are such block sums too. K-quant mins use the
 * f32 sums of x (s16). A group of x with a NaN or Inf has d_x = NaN, which
 * makes the result NaN. The weights are prefetched g_pf bytes ahead
 * (default PLANES_PF_BYTES).
 *
 * Invariants: the integer sums equal the reference's exactly; the results
 * differ from v4f_quant_dot_planes_ref only by f32 rounding (the lane
 * conversions, the scale products and the summation order).
 * Threading: pure functions; g_pf and the IQ2_XXS code tables are written
 * once by the filler (under the dispatch pthread_once), read-only after.
 */
#include <math.h>
#include <stdlib.h>

#include "quant/quant_x86.h"

#define VNNI_FN __attribute__((target("avx512vnni,avx512vbmi")))
#define INV16384 (1.0f / 16384.0f)

/* Software prefetch distance of the weight rows: 1 KiB took the all-thread
 * streaming matvec on the 16-core Xeon host from 49-57 to 66-67 GB/s (Q2_K),
 * 64-71 to 82-83 (Q4_K), 30-31 to 32-35 (IQ2_XXS) (docs/PERF_NOTES.md).
 * V4F_PLANES_PF=bytes overrides it (0: none). */
#define PLANES_PF_BYTES 1024
static int64_t g_pf;

/* prefetch the n_lines cache lines of the block at p, g_pf bytes ahead */
static inline void pf_block(const uint8_t *p, int n_lines) {
    if (!g_pf) return;
    for (int i = 0; i < n_lines; i++) _mm_prefetch((const char *)p + g_pf + 64 * i, _MM_HINT_T0);
}

/* The three plane sums S1, S2, S3 of a block, added over its chunks (named
 * members, not an array: GCC keeps an indexed one on the stack) */
typedef struct psum {
    __m512i s1, s2, s3;
} psum;

VNNI_FN static inline psum psum_zero(void) {
    const __m512i z = _mm512_setzero_si512();
    return (psum){z, z, z};
}

/* t + the dpbusd of weight chunk a with the three planes of the chunk
 * record at p */
VNNI_FN static inline psum psum_add(psum t, __m512i a, const uint8_t *p) {
    t.s1 = _mm512_dpbusd_epi32(t.s1, a, _mm512_loadu_si512((const void *)p));
    t.s2 = _mm512_dpbusd_epi32(t.s2, a, _mm512_loadu_si512((const void *)(p + 64)));
    t.s3 = _mm512_dpbusd_epi32(t.s3, a, _mm512_loadu_si512((const void *)(p + 128)));
    return t;
}

/* T = 16384 S1 + 128 S2 + S3 per lane, mod 2^32: exact wherever the true T
 * fits in int32, whatever the partial sums wrapped to */
VNNI_FN static inline __m512i psum_t(psum t) {
    return _mm512_add_epi32(_mm512_slli_epi32(_mm512_add_epi32(_mm512_slli_epi32(t.s1, 7), t.s2), 7), t.s3);
}

/* 16 lanes from an 8-float vector: lanes 2k, 2k + 1 = s[k] (group k) */
VNNI_FN static inline __m512 group_lanes(__m256 s) {
    const __m512i dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    return _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(s));
}

/* ---- the split ----------------------------------------------------------------- */

/* the 16-lane halving sum of quant_internal.h (s16) */
VNNI_FN static inline float sum16(__m512 v) {
    const __m256 t8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    const __m128 t4 = _mm_add_ps(_mm256_castps256_ps128(t8), _mm256_extractf128_ps(t8, 1));
    const __m128 t2 = _mm_add_ps(t4, _mm_movehl_ps(t4, t4));
    return _mm_cvtss_f32(_mm_add_ss(t2, _mm_movehdup_ps(t2)));
}

/* rne(r / dk), the quotient clamped to [-127, 127] (as plane_code) */
VNNI_FN static inline __m512 plane_q(__m512 r, float dk) {
    if (!(dk > 0.0f)) return _mm512_setzero_ps();
    __m512 t = _mm512_div_ps(r, _mm512_set1_ps(dk));
    t = _mm512_min_ps(_mm512_max_ps(t, _mm512_set1_ps(-127.0f)), _mm512_set1_ps(127.0f));
    return _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

/* the 16 codes of q: 8 at p, 8 at p + 192 (two chunks' records) */
VNNI_FN static inline void store_codes(uint8_t *p, __m512 q) {
    const __m128i c = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(q));
    _mm_storel_epi64((__m128i *)p, c);
    _mm_storel_epi64((__m128i *)(p + 192), _mm_unpackhi_epi64(c, c));
}

VNNI_FN void v4f_quant_planes_avx512(const float *x, void *dst, int64_t n) {
    uint8_t *out = dst;
    uint8_t *dg = out + v4f_planes_off_d(n), *s16 = out + v4f_planes_off_s16(n), *bias = out + v4f_planes_off_bias(n);
    const __m512 fmax = _mm512_set1_ps(3.402823466e38f);
    for (int64_t g = 0; g < n / 32; g++) {
        const __m512 v[2] = {_mm512_loadu_ps(x + 32 * g), _mm512_loadu_ps(x + 32 * g + 16)};
        const __m512 a0 = _mm512_abs_ps(v[0]), a1 = _mm512_abs_ps(v[1]);
        const int bad = (_mm512_cmp_ps_mask(a0, fmax, _CMP_NLE_UQ) | _mm512_cmp_ps_mask(a1, fmax, _CMP_NLE_UQ)) != 0;
        const float amax = _mm512_reduce_max_ps(_mm512_max_ps(a0, a1));
        const float d1 = amax / 127.0f, d2 = d1 * (1.0f / 128.0f), d3 = d2 * (1.0f / 128.0f);
        uint8_t *p = out + v4f_planes_elem_off(g, 0);
        for (int h = 0; h < 2; h++) {
            __m512 q1 = _mm512_setzero_ps(), q2 = q1, q3 = q1;
            if (!bad && amax > 0.0f) {
                q1 = plane_q(v[h], d1);
                const __m512 r1 = _mm512_fnmadd_ps(_mm512_set1_ps(d1), q1, v[h]);
                q2 = plane_q(r1, d2);
                const __m512 r2 = _mm512_fnmadd_ps(_mm512_set1_ps(d2), q2, r1);
                q3 = plane_q(r2, d3);
            }
            store_codes(p + 384 * h, q1);
            store_codes(p + 384 * h + 64, q2);
            store_codes(p + 384 * h + 128, q3);
        }
        float dv = d1, s0 = sum16(v[0]), s1 = sum16(v[1]);
        if (bad) dv = s0 = s1 = NAN;
        memcpy(dg + 4 * g, &dv, 4);
        memcpy(s16 + 8 * g, &s0, 4);
        memcpy(s16 + 8 * g + 4, &s1, 4);
        if (g % 8 == 7) { /* block done: its bias lanes */
            const uint8_t *r = out + 768 * (g / 8);
            psum t = psum_zero();
            for (int j = 0; j < 4; j++) t = psum_add(t, _mm512_set1_epi8(64), r + 192 * j);
            _mm512_storeu_si512((void *)(bias + 64 * (g / 8)), psum_t(t));
        }
    }
}

/* ---- Q2_K: chunk j, qword k = the codes of elements 8j..8j+7 of group k: qs
 * qword 4 (k / 4) + j, shifted right by 2 (k % 4); the scale groups of 16 of
 * lanes 2k, 2k + 1 are 2k (chunks 0, 1) and 2k + 1 (chunks 2, 3) ------------- */

VNNI_FN static float dot_planes_q2_K(const void *w, const void *xp, int64_t n) {
    const uint8_t *a = w, *xq = xp;
    const float *dx = (const float *)(xq + v4f_planes_off_d(n));
    const float *xs = (const float *)(xq + v4f_planes_off_s16(n));
    /* scale group g of a block lies in x group g >> 1 */
    const __m512i half = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const __m512i even = _mm512_setr_epi32(0, 0, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10, 12, 12, 14, 14);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const __m512i shift = _mm512_setr_epi64(0, 2, 4, 6, 0, 2, 4, 6);
    const __m512i m3 = _mm512_set1_epi8(3);
    __m512i qw[4];
    for (int j = 0; j < 4; j++) qw[j] = _mm512_setr_epi64(j, j, j, j, 4 + j, 4 + j, 4 + j, 4 + j);
    __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    __m512 accm = _mm512_setzero_ps();
    for (int64_t b = 0; b < n / 256; b++, a += X86_Q2K_BYTES) {
        pf_block(a, 2);
        const __m512i qs = _mm512_loadu_si512((const void *)(a + V4F_Q2K_QS));
        const __m128i sc = _mm_loadu_si128((const __m128i *)(a + V4F_Q2K_SCALES));
        const __m128i m4 = _mm_set1_epi8(15);
        const __m512 scf = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(sc, m4)));
        const __m512 mf = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(sc, 4), m4)));
        const __m512 dx16 = _mm512_permutexvar_ps(half, _mm512_castps256_ps512(_mm256_loadu_ps(dx + 8 * b)));
        const __m512 sd = _mm512_mul_ps(_mm512_mul_ps(scf, _mm512_set1_ps(x86_f16(a + V4F_Q2K_D) * INV16384)), dx16);
        const __m512 ml = _mm512_mul_ps(mf, _mm512_set1_ps(x86_f16(a + V4F_Q2K_DMIN)));
        accm = _mm512_fmadd_ps(ml, _mm512_loadu_ps(xs + 16 * b), accm);
        const uint8_t *p = xq + 768 * b;
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            psum t = psum_zero();
#pragma GCC unroll 2
            for (int j = 2 * h; j < 2 * h + 2; j++)
                t = psum_add(t, _mm512_and_si512(_mm512_srlv_epi64(_mm512_permutexvar_epi64(qw[j], qs), shift), m3),
                         p + 192 * j);
            acc[h] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(psum_t(t)), _mm512_permutexvar_ps(h ? odd : even, sd), acc[h]);
        }
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1])) - _mm512_reduce_add_ps(accm);
}

/* ---- Q4_K: chunk j, qword k = elements 8j..8j+7 of group (sub-block) k:
 * nibble k & 1 of qs qword 4 (k / 2) + j ------------------------------------- */

VNNI_FN static float dot_planes_q4_K(const void *w, const void *xp, int64_t n) {
    const uint8_t *a = w, *xq = xp;
    const float *dx = (const float *)(xq + v4f_planes_off_d(n));
    const float *xs = (const float *)(xq + v4f_planes_off_s16(n));
    const __m512i half = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const __m512i shift = _mm512_setr_epi64(0, 4, 0, 4, 0, 4, 0, 4);
    const __m512i m15 = _mm512_set1_epi8(15);
    __m512i qw[4];
    for (int j = 0; j < 4; j++) qw[j] = _mm512_setr_epi64(j, j, 4 + j, 4 + j, 8 + j, 8 + j, 12 + j, 12 + j);
    __m512 acc = _mm512_setzero_ps();
    __m512 accm = _mm512_setzero_ps();
    for (int64_t b = 0; b < n / 256; b++, a += X86_Q4K_BYTES) {
        pf_block(a, 3);
        uint8_t sc[8], m[8];
        x86_q4k_scale_bytes(a + V4F_Q4K_SCALES, sc, m);
        const __m256 s = _mm256_mul_ps(
            _mm256_mul_ps(x86_u8x8_ps(sc), _mm256_set1_ps(x86_f16(a + V4F_Q4K_D) * INV16384)),
            _mm256_loadu_ps(dx + 8 * b));
        const __m256 ml = _mm256_mul_ps(x86_u8x8_ps(m), _mm256_set1_ps(x86_f16(a + V4F_Q4K_DMIN)));
        accm = _mm512_fmadd_ps(_mm512_permutexvar_ps(half, _mm512_castps256_ps512(ml)), _mm512_loadu_ps(xs + 16 * b),
                               accm);
        const uint8_t *q = a + V4F_Q4K_QS, *p = xq + 768 * b;
        const __m512i q0 = _mm512_loadu_si512((const void *)q), q1 = _mm512_loadu_si512((const void *)(q + 64));
        psum t = psum_zero();
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++)
            t = psum_add(t, _mm512_and_si512(_mm512_srlv_epi64(_mm512_permutex2var_epi64(q0, qw[j], q1), shift), m15),
                     p + 192 * j);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(psum_t(t)), group_lanes(s), acc);
    }
    return _mm512_reduce_add_ps(acc) - _mm512_reduce_add_ps(accm);
}

/* ---- IQ2_XXS --------------------------------------------------------------------- */

/* Per block, from the 64 bytes of qs in one register (qword k = group k: 4
 * grid indices, then aux = 4 x 7 sign bits + the 4-bit scale): the sign
 * bytes come from vpmultishiftqb (bits 32 + 7l of each qword, l = 0..3) and
 * vpermi2b (the 128-entry ksigns table, low 7 bits of the index); a byte
 * permute (k_rows) puts row j of group k at byte 8j + k, so qword j is the
 * 64-bit mask of chunk j. Chunk j holds row j (elements 8j..8j+7) of each
 * group, the order of the plane records. The grid rows (64 magnitude bytes
 * per chunk, each + 64; the mask turns 64 + g into 128 - (64 + g) = 64 - g)
 * come from one of two lookups, chosen at fill time (same bytes, so the same
 * results):
 *  - gather: vpermb zero-extends the chunk's 8 indices to qwords, a qword
 *    gather reads the 8 rows (Intel: faster than the table);
 *  - table: each row as 8 two-bit codes (0, 1, 2 for 0x08, 0x19, 0x2b), 16
 *    bits per row held in 8 registers (low and high bytes of 256 rows); per
 *    block 4 vpermi2b + 2 blends look up the 32 rows, per chunk a vpermi2b
 *    puts each row's two code bytes into its qword, vpmultishiftqb and a
 *    64-entry vpermb expand them to bytes (AMD: gathers are slow there).
 *    docs/PERF_NOTES.md, "CPU int8-plane decode kernels" and "Session 32".
 * The block's 4 chunks add into one set of plane sums (lanes 2k, 2k + 1 =
 * group k in every chunk), which its bias lanes unbias: |true T| <= 16 * 43 *
 * 127 * 16513 < 2^31, so the wrapped int32 arithmetic gives it exactly. */

/* clang-format off */
/* byte 8k of qword k: grid index j of group k (chunk j's row of group k) */
static const uint8_t k_gidx[4][64] = {
    {0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 24, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0, 0, 0, 0, 0, 0, 40, 0, 0, 0, 0, 0, 0, 0, 48, 0, 0, 0, 0, 0, 0, 0, 56, 0, 0, 0, 0, 0, 0, 0},
    {1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0, 0, 25, 0, 0, 0, 0, 0, 0, 0, 33, 0, 0, 0, 0, 0, 0, 0, 41, 0, 0, 0, 0, 0, 0, 0, 49, 0, 0, 0, 0, 0, 0, 0, 57, 0, 0, 0, 0, 0, 0, 0},
    {2, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 18, 0, 0, 0, 0, 0, 0, 0, 26, 0, 0, 0, 0, 0, 0, 0, 34, 0, 0, 0, 0, 0, 0, 0, 42, 0, 0, 0, 0, 0, 0, 0, 50, 0, 0, 0, 0, 0, 0, 0, 58, 0, 0, 0, 0, 0, 0, 0},
    {3, 0, 0, 0, 0, 0, 0, 0, 11, 0, 0, 0, 0, 0, 0, 0, 19, 0, 0, 0, 0, 0, 0, 0, 27, 0, 0, 0, 0, 0, 0, 0, 35, 0, 0, 0, 0, 0, 0, 0, 43, 0, 0, 0, 0, 0, 0, 0, 51, 0, 0, 0, 0, 0, 0, 0, 59, 0, 0, 0, 0, 0, 0, 0}};
/* byte 8j + k = byte 8k + j (row j of group k, j < 4): the grid indices or
 * the sign bytes of a block in chunk order */
static const uint8_t k_rows[64] = {0, 8, 16, 24, 32, 40, 48, 56, 1, 9, 17, 25, 33, 41, 49, 57, 2, 10, 18, 26, 34, 42, 50, 58, 3, 11, 19, 27, 35, 43, 51, 59, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
/* qword k, bytes 0 and 1: the low and high code bytes of row 8j + k of the
 * looked-up rows (vpermi2b of lo, hi) */
static const uint8_t k_spread[4][64] = {
    {0, 64, 0, 0, 0, 0, 0, 0, 1, 65, 0, 0, 0, 0, 0, 0, 2, 66, 0, 0, 0, 0, 0, 0, 3, 67, 0, 0, 0, 0, 0, 0, 4, 68, 0, 0, 0, 0, 0, 0, 5, 69, 0, 0, 0, 0, 0, 0, 6, 70, 0, 0, 0, 0, 0, 0, 7, 71, 0, 0, 0, 0, 0, 0},
    {8, 72, 0, 0, 0, 0, 0, 0, 9, 73, 0, 0, 0, 0, 0, 0, 10, 74, 0, 0, 0, 0, 0, 0, 11, 75, 0, 0, 0, 0, 0, 0, 12, 76, 0, 0, 0, 0, 0, 0, 13, 77, 0, 0, 0, 0, 0, 0, 14, 78, 0, 0, 0, 0, 0, 0, 15, 79, 0, 0, 0, 0, 0, 0},
    {16, 80, 0, 0, 0, 0, 0, 0, 17, 81, 0, 0, 0, 0, 0, 0, 18, 82, 0, 0, 0, 0, 0, 0, 19, 83, 0, 0, 0, 0, 0, 0, 20, 84, 0, 0, 0, 0, 0, 0, 21, 85, 0, 0, 0, 0, 0, 0, 22, 86, 0, 0, 0, 0, 0, 0, 23, 87, 0, 0, 0, 0, 0, 0},
    {24, 88, 0, 0, 0, 0, 0, 0, 25, 89, 0, 0, 0, 0, 0, 0, 26, 90, 0, 0, 0, 0, 0, 0, 27, 91, 0, 0, 0, 0, 0, 0, 28, 92, 0, 0, 0, 0, 0, 0, 29, 93, 0, 0, 0, 0, 0, 0, 30, 94, 0, 0, 0, 0, 0, 0, 31, 95, 0, 0, 0, 0, 0, 0}};
/* clang-format on */

/* the grid rows as two-bit codes, low and high byte tables; magnitude of a
 * code by its low 2 bits (filled once by v4f_quant_fill_planes_avx512) */
static uint8_t g_code_lo[256], g_code_hi[256], g_mag[64];
/* the grid rows with every byte biased by +64 (the gather's table) */
static uint64_t g_grid64[256];

/* The per-block part shared by both lookups: the scale lanes (d_w d_x /
 * 16384 of group k in lanes 2k, 2k + 1) and the sign masks of the 4 chunks. */
VNNI_FN static inline __m512 iq2_block(const uint8_t *a, __m512i q, const float *dxb, __mmask64 mk[4]) {
    const __m512i ks_lo = _mm512_loadu_si512((const void *)v4f_quant_ksigns);
    const __m512i ks_hi = _mm512_loadu_si512((const void *)(v4f_quant_ksigns + 64));
    const __m512i sel = _mm512_set1_epi64(0x352e2720352e2720ll); /* bit offsets 32, 39, 46, 53 */
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 1, 3, 5, 7, 9, 11, 13, 15);
    const __m256i aux = _mm512_castsi512_si256(_mm512_permutexvar_epi32(odd, q));
    const __m256 ls = _mm256_cvtepi32_ps(_mm256_srli_epi32(aux, 28));
    const __m256 db = _mm256_mul_ps(
        _mm256_mul_ps(_mm256_set1_ps(x86_f16(a + V4F_IQ2_D)), _mm256_add_ps(_mm256_set1_ps(0.5f), ls)),
        _mm256_set1_ps(0.25f));
    const __m512i sgn = _mm512_permutex2var_epi8(ks_lo, _mm512_multishift_epi64_epi8(sel, q), ks_hi);
    /* The 4 masks go through memory on purpose (one store, 4 kmovq k, m64
     * on the load ports); GCC turns a plain store and reload into vmovq /
     * vpextrq / valignq + kmovq k, r64, ~11 port-0/5 ops per block (dev box:
     * gather kernel 2.9-3.0 -> 3.1-3.2 GB/s in cache), hence the asm store. */
    const __m256i m4 = _mm512_castsi512_si256(_mm512_permutexvar_epi8(_mm512_loadu_si512((const void *)k_rows), sgn));
    __asm__("vmovdqu64 %1, %0" : "=m"(*(__m256i *)mk) : "v"(m4));
    return group_lanes(_mm256_mul_ps(_mm256_mul_ps(db, _mm256_loadu_ps(dxb)), _mm256_set1_ps(INV16384)));
}

/* the block's scaled, unbiased sum into acc */
VNNI_FN static inline __m512 iq2_acc(__m512 acc, psum t, const uint8_t *bias, __m512 s) {
    const __m512i v = _mm512_sub_epi32(psum_t(t), _mm512_loadu_si512((const void *)bias));
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(v), s, acc);
}

VNNI_FN static float dot_planes_iq2_xxs_gather(const void *w, const void *xp, int64_t n) {
    const uint8_t *a = w, *xq = xp;
    const float *dx = (const float *)(xq + v4f_planes_off_d(n));
    const uint8_t *bias = xq + v4f_planes_off_bias(n);
    const long long *grid = (const long long *)g_grid64;
    const __m512i c128 = _mm512_set1_epi8(-128);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t b = 0; b < n / 256; b++, a += X86_IQ2_BYTES, bias += 64) {
        pf_block(a, 2);
        const __m512i q = _mm512_loadu_si512((const void *)(a + V4F_IQ2_QS));
        __mmask64 mk[4];
        const __m512 s = iq2_block(a, q, dx + 8 * b, mk);
        const uint8_t *p = xq + 768 * b;
        psum t = psum_zero();
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            const __m512i gi =
                _mm512_maskz_permutexvar_epi8(0x0101010101010101ull, _mm512_loadu_si512((const void *)k_gidx[j]), q);
            const __m512i wv = _mm512_i64gather_epi64(gi, grid, 8);
            t = psum_add(t, _mm512_mask_sub_epi8(wv, mk[j], c128, wv), p + 192 * j);
        }
        acc = iq2_acc(acc, t, bias, s);
    }
    return _mm512_reduce_add_ps(acc);
}

VNNI_FN static float dot_planes_iq2_xxs_table(const void *w, const void *xp, int64_t n) {
    const uint8_t *a = w, *xq = xp;
    const float *dx = (const float *)(xq + v4f_planes_off_d(n));
    const __m512i l0 = _mm512_loadu_si512((const void *)g_code_lo);
    const __m512i l1 = _mm512_loadu_si512((const void *)(g_code_lo + 64));
    const __m512i l2 = _mm512_loadu_si512((const void *)(g_code_lo + 128));
    const __m512i l3 = _mm512_loadu_si512((const void *)(g_code_lo + 192));
    const __m512i h0 = _mm512_loadu_si512((const void *)g_code_hi);
    const __m512i h1 = _mm512_loadu_si512((const void *)(g_code_hi + 64));
    const __m512i h2 = _mm512_loadu_si512((const void *)(g_code_hi + 128));
    const __m512i h3 = _mm512_loadu_si512((const void *)(g_code_hi + 192));
    const __m512i mag = _mm512_loadu_si512((const void *)g_mag), rows = _mm512_loadu_si512((const void *)k_rows);
    const __m512i sel2 = _mm512_set1_epi64(0x0e0c0a0806040200ll); /* bit offsets 0, 2, .., 14 */
    const __m512i c128 = _mm512_set1_epi8(-128);
    __m512i spread[4];
    for (int j = 0; j < 4; j++) spread[j] = _mm512_loadu_si512((const void *)k_spread[j]);
    const uint8_t *bias = xq + v4f_planes_off_bias(n);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t b = 0; b < n / 256; b++, a += X86_IQ2_BYTES, bias += 64) {
        pf_block(a, 2);
        const __m512i q = _mm512_loadu_si512((const void *)(a + V4F_IQ2_QS));
        __mmask64 mk[4];
        const __m512 s = iq2_block(a, q, dx + 8 * b, mk);
        /* codes of the 32 rows (bit 7 of an index picks rows 128..255) */
        const __m512i idx = _mm512_permutexvar_epi8(rows, q);
        const __mmask64 m7 = _mm512_movepi8_mask(idx);
        const __m512i lo =
            _mm512_mask_blend_epi8(m7, _mm512_permutex2var_epi8(l0, idx, l1), _mm512_permutex2var_epi8(l2, idx, l3));
        const __m512i hi =
            _mm512_mask_blend_epi8(m7, _mm512_permutex2var_epi8(h0, idx, h1), _mm512_permutex2var_epi8(h2, idx, h3));
        const uint8_t *p = xq + 768 * b;
        psum t = psum_zero();
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            /* the 16-bit code of the chunk's row k in qword k, its 8 two-bit
             * codes to bytes (garbage above bit 1), magnitudes */
            const __m512i cw = _mm512_permutex2var_epi8(lo, spread[j], hi);
            const __m512i wv = _mm512_permutexvar_epi8(_mm512_multishift_epi64_epi8(sel2, cw), mag);
            t = psum_add(t, _mm512_mask_sub_epi8(wv, mk[j], c128, wv), p + 192 * j);
        }
        acc = iq2_acc(acc, t, bias, s);
    }
    return _mm512_reduce_add_ps(acc);
}

v4f_quant_dot_planes_fn v4f_quant_iq2_planes_avx512(bool gather) {
    return gather ? dot_planes_iq2_xxs_gather : dot_planes_iq2_xxs_table;
}

/* ---- table -------------------------------------------------------------------------- */

void v4f_quant_fill_planes_avx512(v4f_quant_kernels *tab, bool gather_fast) {
    const char *pf = getenv("V4F_PLANES_PF");
    g_pf = pf && *pf ? atoi(pf) : PLANES_PF_BYTES;
    for (int k = 0; k < 256; k++) {
        const uint8_t *row = (const uint8_t *)&v4f_quant_iq2xxs_grid[k];
        unsigned c = 0;
        for (int m = 0; m < 8; m++) c |= (unsigned)v4f_quant_iq2xxs_mag_code(row[m]) << (2 * m);
        g_code_lo[k] = (uint8_t)c;
        g_code_hi[k] = (uint8_t)(c >> 8);
    }
    for (int k = 0; k < 64; k++) g_mag[k] = 64 + (k % 4 == 0 ? 0x08 : k % 4 == 1 ? 0x19 : 0x2b);
    for (int k = 0; k < 256; k++) g_grid64[k] = v4f_quant_iq2xxs_grid[k] + 0x4040404040404040ull;
    tab[V4F_TYPE_Q2_K].dot_planes = dot_planes_q2_K;
    tab[V4F_TYPE_Q4_K].dot_planes = dot_planes_q4_K;
    tab[V4F_TYPE_IQ2_XXS].dot_planes = gather_fast ? dot_planes_iq2_xxs_gather : dot_planes_iq2_xxs_table;
}
