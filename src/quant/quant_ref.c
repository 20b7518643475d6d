/*
 * quant_ref.c - the scalar reference ("generic") kernels: the oracle every
 * SIMD kernel is tested against, and the fallback on CPUs without AVX2.
 *
 * Owns: dequant_row / dot_f32 for F32, F16, BF16, Q8_0, Q2_K, Q4_K, IQ2_XXS;
 * dot_act for Q8_0 (x Q8_0 activations) and Q2_K, Q4_K, IQ2_XXS (x Q8_K
 * activations, as GGML pairs them); the activation quantizers Q8_0 / Q8_K;
 * the int8-plane split and the plane dots of Q2_K, Q4_K, IQ2_XXS (not in
 * the generic table: the oracle of the VNNI kernels only).
 *
 * Invariants:
 *  - dequantization follows MODEL.md section 10 and GGML exactly; every
 *    dequantized weight is computed as a product of exact terms and at most
 *    one rounding (dl*q - ml with dl*q exact), so the SIMD files can
 *    reproduce it bit for bit.
 *  - dot_f32 is literally the dot of the dequantized row with x, accumulated
 *    in double (the oracle; the result is rounded to float once).
 *  - dot_act expects activations produced by v4f_quantize_act (codes in
 *    [-127, 127]); integer partial sums are exact, scales applied in double.
 *  - plane dots: per group, exact integer sums of codes x planes, combined
 *    as d_w d_x (S1 + S2 / 128 + S3 / 16384) in double; K-quant mins use the
 *    f32 sums of x (s16), as the CUDA kernel does.
 *
 * Threading: pure functions, no state.
 */
#include <math.h>
#include <stddef.h>

#include "quant/quant_internal.h"

#define QK V4F_QK_K

/* ---- F32 / F16 / BF16 ---------------------------------------------------- */

static void dequant_f32(const void *src, float *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static float dot_f32_f32(const void *w, const float *x, int64_t n) {
    const uint8_t *p = w;
    double acc = 0;
    for (int64_t i = 0; i < n; i++) {
        float v;
        memcpy(&v, p + 4 * i, 4);
        acc += (double)v * x[i];
    }
    return (float)acc;
}

static void dequant_f16(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) dst[i] = v4f_f16_to_f32(v4f_quant_rd_u16(p + 2 * i));
}

static float dot_f32_f16(const void *w, const float *x, int64_t n) {
    const uint8_t *p = w;
    double acc = 0;
    for (int64_t i = 0; i < n; i++)
        acc += (double)v4f_f16_to_f32(v4f_quant_rd_u16(p + 2 * i)) * x[i];
    return (float)acc;
}

static void dequant_bf16(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) dst[i] = v4f_bf16_to_f32(v4f_quant_rd_u16(p + 2 * i));
}

static float dot_f32_bf16(const void *w, const float *x, int64_t n) {
    const uint8_t *p = w;
    double acc = 0;
    for (int64_t i = 0; i < n; i++)
        acc += (double)v4f_bf16_to_f32(v4f_quant_rd_u16(p + 2 * i)) * x[i];
    return (float)acc;
}

/* ---- one-block dequantizers (the format definitions) --------------------- */

_Static_assert(offsetof(v4f_block_q8_0, qs) == V4F_Q8_0_QS, "q8_0 layout");
_Static_assert(offsetof(v4f_block_q2_K, qs) == V4F_Q2K_QS && offsetof(v4f_block_q2_K, d) == V4F_Q2K_D &&
                   offsetof(v4f_block_q2_K, dmin) == V4F_Q2K_DMIN,
               "q2_K layout");
_Static_assert(offsetof(v4f_block_q4_K, scales) == V4F_Q4K_SCALES && offsetof(v4f_block_q4_K, qs) == V4F_Q4K_QS,
               "q4_K layout");
_Static_assert(offsetof(v4f_block_iq2_xxs, qs) == V4F_IQ2_QS, "iq2_xxs layout");
_Static_assert(offsetof(v4f_block_q8_K, qs) == V4F_Q8K_QS && offsetof(v4f_block_q8_K, bsums) == V4F_Q8K_BSUMS,
               "q8_K layout");

static void dequant_block_q8_0(const uint8_t *b, float *y) {
    const float d = v4f_quant_rd_f16(b + V4F_Q8_0_D);
    const int8_t *qs = (const int8_t *)(b + V4F_Q8_0_QS);
    for (int i = 0; i < V4F_QK8_0; i++) y[i] = d * (float)qs[i];
}

/* Element 128h + 32s + l: code (qs[32h + l] >> 2s) & 3, scale byte
 * scales[8h + 2s + (l >= 16)]. */
static void dequant_block_q2_K(const uint8_t *b, float *y) {
    const float d = v4f_quant_rd_f16(b + V4F_Q2K_D);
    const float dmin = v4f_quant_rd_f16(b + V4F_Q2K_DMIN);
    const uint8_t *scales = b + V4F_Q2K_SCALES, *qs = b + V4F_Q2K_QS;
    for (int h = 0; h < 2; h++) {
        for (int s = 0; s < 4; s++) {
            for (int l = 0; l < 32; l++) {
                const uint8_t sc = scales[8 * h + 2 * s + (l >= 16)];
                const float dl = d * (float)(sc & 15);
                const float ml = dmin * (float)(sc >> 4);
                const int q = (qs[32 * h + l] >> (2 * s)) & 3;
                y[128 * h + 32 * s + l] = dl * (float)q - ml;
            }
        }
    }
}

/* Sub-block j (32 elements) uses nibble (j & 1) of qs[32 * (j / 2) + l]. */
static void dequant_block_q4_K(const uint8_t *b, float *y) {
    const float d = v4f_quant_rd_f16(b + V4F_Q4K_D);
    const float dmin = v4f_quant_rd_f16(b + V4F_Q4K_DMIN);
    const uint8_t *qs = b + V4F_Q4K_QS;
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        v4f_quant_q4k_scale_min(b + V4F_Q4K_SCALES, j, &sc, &m);
        const float dl = d * (float)sc;
        const float ml = dmin * (float)m;
        const int shift = 4 * (j & 1);
        for (int l = 0; l < 32; l++) {
            const int q = (qs[32 * (j / 2) + l] >> shift) & 15;
            y[32 * j + l] = dl * (float)q - ml;
        }
    }
}

/* IQ2_XXS group g (32 elements) of a block's qs: the signed grid values
 * (+-8, 25 or 43) into c; returns the group's aux word (scale in bits 28..31). */
static uint32_t iq2_group_codes(const uint8_t *q, int g, int *c) {
    const uint32_t aux = v4f_quant_rd_u32(q + 8 * g + 4);
    for (int l = 0; l < 4; l++) {
        const uint8_t *grid = (const uint8_t *)&v4f_quant_iq2xxs_grid[q[8 * g + l]];
        const uint8_t signs = v4f_quant_ksigns[(aux >> (7 * l)) & 127];
        for (int j = 0; j < 8; j++) c[8 * l + j] = ((signs >> j) & 1) ? -grid[j] : grid[j];
    }
    return aux;
}

static void dequant_block_iq2_xxs(const uint8_t *b, float *y) {
    const float d = v4f_quant_rd_f16(b + V4F_IQ2_D);
    const uint8_t *q = b + V4F_IQ2_QS;
    int c[32];
    for (int g = 0; g < 8; g++) {
        const uint32_t aux = iq2_group_codes(q, g, c);
        const float db = d * (0.5f + (float)(aux >> 28)) * 0.25f;
        /* db * (-v) == -(db * v) exactly */
        for (int j = 0; j < 32; j++) y[32 * g + j] = db * (float)c[j];
    }
}

/* ---- row dequantizers and f32 dots over blocks --------------------------- */

#define DEFINE_BLOCK_ROW(name, btype, nelem)                                   \
    static void dequant_##name(const void *src, float *dst, int64_t n) {       \
        const uint8_t *b = src;                                                \
        for (int64_t i = 0; i < n / (nelem); i++)                              \
            dequant_block_##name(b + i * sizeof(btype), dst + i * (nelem));    \
    }                                                                          \
    static float dot_f32_##name(const void *w, const float *x, int64_t n) {    \
        const uint8_t *b = w;                                                  \
        float tmp[nelem];                                                      \
        double acc = 0;                                                        \
        for (int64_t i = 0; i < n / (nelem); i++) {                            \
            dequant_block_##name(b + i * sizeof(btype), tmp);                  \
            const float *xb = x + i * (nelem);                                 \
            for (int k = 0; k < (nelem); k++) acc += (double)tmp[k] * xb[k];   \
        }                                                                      \
        return (float)acc;                                                     \
    }

DEFINE_BLOCK_ROW(q8_0, v4f_block_q8_0, V4F_QK8_0)
DEFINE_BLOCK_ROW(q2_K, v4f_block_q2_K, QK)
DEFINE_BLOCK_ROW(q4_K, v4f_block_q4_K, QK)
DEFINE_BLOCK_ROW(iq2_xxs, v4f_block_iq2_xxs, QK)

/* ---- quantized-activation dots ------------------------------------------ */

#define Q8_0_BYTES sizeof(v4f_block_q8_0)
#define Q8_K_BYTES sizeof(v4f_block_q8_K)

static int16_t q8k_bsum(const uint8_t *b, int g) {
    return (int16_t)v4f_quant_rd_u16(b + V4F_Q8K_BSUMS + 2 * g);
}

static float dot_act_q8_0(const void *w, const void *xq, int64_t n) {
    const uint8_t *a = w, *b = xq;
    double acc = 0;
    for (int64_t i = 0; i < n / V4F_QK8_0; i++, a += Q8_0_BYTES, b += Q8_0_BYTES) {
        const int8_t *qa = (const int8_t *)(a + V4F_Q8_0_QS), *qb = (const int8_t *)(b + V4F_Q8_0_QS);
        int32_t s = 0;
        for (int k = 0; k < V4F_QK8_0; k++) s += (int32_t)qa[k] * qb[k];
        acc += (double)(v4f_quant_rd_f16(a) * v4f_quant_rd_f16(b)) * s;
    }
    return (float)acc;
}

/* sum_e w_e x_e = xd * (d * sum_g sc_g <q, qx>_g - dmin * sum_g m_g bsum_g) */
static float dot_act_q2_K(const void *w, const void *xq, int64_t n) {
    const uint8_t *a = w, *b = xq;
    double acc = 0;
    for (int64_t i = 0; i < n / QK; i++, a += sizeof(v4f_block_q2_K), b += Q8_K_BYTES) {
        const uint8_t *scales = a + V4F_Q2K_SCALES, *qs = a + V4F_Q2K_QS;
        const int8_t *qx = (const int8_t *)(b + V4F_Q8K_QS);
        int32_t isum = 0, msum = 0;
        for (int e0 = 0; e0 < QK; e0 += 16) {
            const int h = e0 / 128, s = (e0 % 128) / 32, g = e0 / 16;
            int32_t t = 0;
            for (int e = e0; e < e0 + 16; e++) t += ((qs[32 * h + e % 32] >> (2 * s)) & 3) * qx[e];
            isum += (scales[g] & 15) * t;
            msum += (scales[g] >> 4) * q8k_bsum(b, g);
        }
        const double xd = v4f_quant_rd_f32(b + V4F_Q8K_D);
        acc += xd * v4f_quant_rd_f16(a + V4F_Q2K_D) * isum - xd * v4f_quant_rd_f16(a + V4F_Q2K_DMIN) * msum;
    }
    return (float)acc;
}

static float dot_act_q4_K(const void *w, const void *xq, int64_t n) {
    const uint8_t *a = w, *b = xq;
    double acc = 0;
    for (int64_t i = 0; i < n / QK; i++, a += sizeof(v4f_block_q4_K), b += Q8_K_BYTES) {
        const uint8_t *qs = a + V4F_Q4K_QS;
        const int8_t *qx = (const int8_t *)(b + V4F_Q8K_QS);
        int32_t isum = 0, msum = 0;
        for (int j = 0; j < 8; j++) {
            uint8_t sc, m;
            v4f_quant_q4k_scale_min(a + V4F_Q4K_SCALES, j, &sc, &m);
            const int shift = 4 * (j & 1);
            int32_t t = 0;
            for (int l = 0; l < 32; l++) t += ((qs[32 * (j / 2) + l] >> shift) & 15) * qx[32 * j + l];
            isum += sc * t;
            msum += m * (q8k_bsum(b, 2 * j) + q8k_bsum(b, 2 * j + 1));
        }
        const double xd = v4f_quant_rd_f32(b + V4F_Q8K_D);
        acc += xd * v4f_quant_rd_f16(a + V4F_Q4K_D) * isum - xd * v4f_quant_rd_f16(a + V4F_Q4K_DMIN) * msum;
    }
    return (float)acc;
}

/* w = d (0.5 + ls) / 4 * grid * sign = d / 8 * (2 ls + 1) * grid * sign */
static float dot_act_iq2_xxs(const void *w, const void *xq, int64_t n) {
    const uint8_t *a = w, *b = xq;
    double acc = 0;
    for (int64_t i = 0; i < n / QK; i++, a += sizeof(v4f_block_iq2_xxs), b += Q8_K_BYTES) {
        const uint8_t *q = a + V4F_IQ2_QS;
        const int8_t *qx = (const int8_t *)(b + V4F_Q8K_QS);
        int32_t bsum = 0;
        int c[32];
        for (int g = 0; g < 8; g++) {
            const uint32_t aux = iq2_group_codes(q, g, c);
            int32_t t = 0;
            for (int j = 0; j < 32; j++) t += c[j] * qx[32 * g + j];
            bsum += t * (int32_t)(2 * (aux >> 28) + 1);
        }
        acc += (double)v4f_quant_rd_f16(a + V4F_IQ2_D) * v4f_quant_rd_f32(b + V4F_Q8K_D) * 0.125 * bsum;
    }
    return (float)acc;
}

/* ---- activation quantizers ----------------------------------------------- */

/* Per 32: d = amax / 127 (stored as f16), q = round(x / d) half away from 0. */
void v4f_quant_act_q8_0_ref(const float *x, void *dst, int64_t n) {
    uint8_t *out = dst;
    for (int64_t i = 0; i < n / V4F_QK8_0; i++) {
        const float *xb = x + i * V4F_QK8_0;
        v4f_block_q8_0 y;
        float amax = 0;
        for (int k = 0; k < V4F_QK8_0; k++) amax = fmaxf(amax, fabsf(xb[k]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y.d = v4f_f32_to_f16(d);
        for (int k = 0; k < V4F_QK8_0; k++) y.qs[k] = (int8_t)roundf(xb[k] * id);
        memcpy(out + i * sizeof y, &y, sizeof y);
    }
}

/* Per 256: the element of largest magnitude, max, maps to -127 (d = -max/127
 * keeps its sign); codes rounded to nearest even; bsums per 16. */
void v4f_quant_act_q8_K_ref(const float *x, void *dst, int64_t n) {
    uint8_t *out = dst;
    for (int64_t i = 0; i < n / QK; i++) {
        const float *xb = x + i * QK;
        v4f_block_q8_K y;
        float amax = 0, max = 0;
        for (int k = 0; k < QK; k++) {
            if (fabsf(xb[k]) > amax) {
                amax = fabsf(xb[k]);
                max = xb[k];
            }
        }
        memset(&y, 0, sizeof y);
        if (amax == 0.0f) {
            memcpy(out + i * sizeof y, &y, sizeof y);
            continue;
        }
        const float iscale = -127.0f / max;
        for (int k = 0; k < QK; k++) {
            const int v = v4f_quant_nearest_int(iscale * xb[k]);
            y.qs[k] = (int8_t)(v > 127 ? 127 : v);
        }
        for (int g = 0; g < QK / 16; g++) {
            int s = 0;
            for (int k = 0; k < 16; k++) s += y.qs[16 * g + k];
            y.bsums[g] = (int16_t)s;
        }
        y.d = 1.0f / iscale;
        memcpy(out + i * sizeof y, &y, sizeof y);
    }
}

/* ---- int8-plane activations (layout: quant_internal.h) ------------------- */

/* rne(t / dk) with the quotient clamped to [-127, 127]; dk == 0 (a plane
 * below the float range of a tiny group) gives 0 */
static int plane_code(float r, float dk) {
    if (!(dk > 0.0f)) return 0;
    float t = r / dk;
    t = t > 127.0f ? 127.0f : (t < -127.0f ? -127.0f : t);
    return v4f_quant_nearest_int(t);
}

/* the 16-lane halving reduction: (v_i + v_i+8), then + lane i+4, i+2, i+1 */
static float sum16_tree(const float *v) {
    float t8[8], t4[4], t2[2];
    for (int i = 0; i < 8; i++) t8[i] = v[i] + v[i + 8];
    for (int i = 0; i < 4; i++) t4[i] = t8[i] + t8[i + 4];
    for (int i = 0; i < 2; i++) t2[i] = t4[i] + t4[i + 2];
    return t2[0] + t2[1];
}

void v4f_quant_planes_ref(const float *x, void *dst, int64_t n) {
    uint8_t *out = dst;
    float *dg = (float *)(out + v4f_planes_off_d(n)), *s16 = (float *)(out + v4f_planes_off_s16(n));
    for (int64_t g = 0; g < n / 32; g++) {
        const float *v = x + 32 * g;
        float amax = 0;
        int bad = 0;
        for (int l = 0; l < 32; l++) {
            const float a = fabsf(v[l]);
            if (!(a <= 3.402823466e38f)) bad = 1;
            if (a > amax) amax = a;
        }
        const float d1 = amax / 127.0f, d2 = d1 * (1.0f / 128.0f), d3 = d2 * (1.0f / 128.0f);
        for (int l = 0; l < 32; l++) {
            uint8_t *p = out + v4f_planes_elem_off(g, l);
            int q1 = 0, q2 = 0, q3 = 0;
            if (!bad && amax > 0.0f) {
                q1 = plane_code(v[l], d1);
                const float r1 = fmaf(-d1, (float)q1, v[l]);
                q2 = plane_code(r1, d2);
                const float r2 = fmaf(-d2, (float)q2, r1);
                q3 = plane_code(r2, d3);
            }
            p[0] = (uint8_t)(int8_t)q1;
            p[64] = (uint8_t)(int8_t)q2;
            p[128] = (uint8_t)(int8_t)q3;
        }
        float dv = d1, s0 = sum16_tree(v), s1 = sum16_tree(v + 16);
        if (bad) dv = s0 = s1 = NAN;
        memcpy(dg + g, &dv, 4);
        memcpy(s16 + 2 * g, &s0, 4);
        memcpy(s16 + 2 * g + 1, &s1, 4);
    }
    /* the bias of +64-biased weight codes, per block and dpbusd lane */
    uint8_t *bias = out + v4f_planes_off_bias(n);
    for (int64_t b = 0; b < n / 256; b++)
        for (int l = 0; l < 16; l++) {
            int32_t v = 0;
            for (int j = 0; j < 4; j++) {
                const int8_t *p = (const int8_t *)(out + 768 * b + 192 * j);
                for (int i = 4 * l; i < 4 * l + 4; i++) v += 64 * (16384 * p[i] + 128 * p[64 + i] + p[128 + i]);
            }
            memcpy(bias + 4 * (16 * b + l), &v, 4);
        }
}

/* The x of one group: scale and the three planes as integers. */
typedef struct plane_grp {
    double d;
    int p[3][32];
} plane_grp;

static void plane_group(const uint8_t *xp, int64_t n, int64_t g, plane_grp *pg) {
    pg->d = v4f_quant_rd_f32(xp + v4f_planes_off_d(n) + 4 * g);
    for (int k = 0; k < 3; k++)
        for (int l = 0; l < 32; l++) pg->p[k][l] = (int8_t)xp[v4f_planes_elem_off(g, l) + 64 * k];
}

static double plane_s16(const uint8_t *xp, int64_t n, int64_t i) {
    return v4f_quant_rd_f32(xp + v4f_planes_off_s16(n) + 4 * i);
}

/* sum over l in [l0, l1) of c[l] * (p1 + p2 / 128 + p3 / 16384), from the
 * exact integer sums */
static double plane_dot(const int *c, const plane_grp *pg, int l0, int l1) {
    int64_t s[3] = {0, 0, 0};
    for (int k = 0; k < 3; k++)
        for (int l = l0; l < l1; l++) s[k] += (int64_t)c[l] * pg->p[k][l];
    return (double)s[0] + (double)s[1] / 128.0 + (double)s[2] / 16384.0;
}

/* element 128h + 32s + l of a block: group 8b + 4h + s, code of shift s */
static float dot_planes_q2_K(const void *w, const void *xp, int64_t n) {
    const uint8_t *a = w;
    double acc = 0;
    plane_grp pg;
    int c[32];
    for (int64_t b = 0; b < n / QK; b++, a += sizeof(v4f_block_q2_K)) {
        const uint8_t *scales = a + V4F_Q2K_SCALES, *qs = a + V4F_Q2K_QS;
        const double d = v4f_quant_rd_f16(a + V4F_Q2K_D), dmin = v4f_quant_rd_f16(a + V4F_Q2K_DMIN);
        for (int h = 0; h < 2; h++) {
            for (int s = 0; s < 4; s++) {
                plane_group(xp, n, 8 * b + 4 * h + s, &pg);
                for (int l = 0; l < 32; l++) c[l] = (qs[32 * h + l] >> (2 * s)) & 3;
                for (int t = 0; t < 2; t++) {
                    const int g = 8 * h + 2 * s + t;
                    acc += d * (scales[g] & 15) * pg.d * plane_dot(c, &pg, 16 * t, 16 * t + 16) -
                           dmin * (scales[g] >> 4) * plane_s16(xp, n, 16 * b + g);
                }
            }
        }
    }
    return (float)acc;
}

static float dot_planes_q4_K(const void *w, const void *xp, int64_t n) {
    const uint8_t *a = w;
    double acc = 0;
    plane_grp pg;
    int c[32];
    for (int64_t b = 0; b < n / QK; b++, a += sizeof(v4f_block_q4_K)) {
        const uint8_t *qs = a + V4F_Q4K_QS;
        const double d = v4f_quant_rd_f16(a + V4F_Q4K_D), dmin = v4f_quant_rd_f16(a + V4F_Q4K_DMIN);
        for (int j = 0; j < 8; j++) {
            uint8_t sc, m;
            v4f_quant_q4k_scale_min(a + V4F_Q4K_SCALES, j, &sc, &m);
            plane_group(xp, n, 8 * b + j, &pg);
            for (int l = 0; l < 32; l++) c[l] = (qs[32 * (j / 2) + l] >> (4 * (j & 1))) & 15;
            const double xs = plane_s16(xp, n, 16 * b + 2 * j) + plane_s16(xp, n, 16 * b + 2 * j + 1);
            acc += d * sc * pg.d * plane_dot(c, &pg, 0, 32) - dmin * m * xs;
        }
    }
    return (float)acc;
}

static float dot_planes_iq2_xxs(const void *w, const void *xp, int64_t n) {
    const uint8_t *a = w;
    double acc = 0;
    plane_grp pg;
    int c[32];
    for (int64_t b = 0; b < n / QK; b++, a += sizeof(v4f_block_iq2_xxs)) {
        const double d = v4f_quant_rd_f16(a + V4F_IQ2_D);
        const uint8_t *q = a + V4F_IQ2_QS;
        for (int g = 0; g < 8; g++) {
            const uint32_t aux = iq2_group_codes(q, g, c);
            plane_group(xp, n, 8 * b + g, &pg);
            acc += d * (0.5 + (aux >> 28)) * 0.25 * pg.d * plane_dot(c, &pg, 0, 32);
        }
    }
    return (float)acc;
}

v4f_quant_dot_planes_fn v4f_quant_dot_planes_ref(uint32_t type) {
    switch (type) {
    case V4F_TYPE_Q2_K: return dot_planes_q2_K;
    case V4F_TYPE_Q4_K: return dot_planes_q4_K;
    case V4F_TYPE_IQ2_XXS: return dot_planes_iq2_xxs;
    default: return NULL;
    }
}

/* ---- table ---------------------------------------------------------------- */

void v4f_quant_fill_generic(v4f_quant_kernels *tab, v4f_quant_act_kernels *act) {
    act->q8_0 = v4f_quant_act_q8_0_ref;
    act->q8_K = v4f_quant_act_q8_K_ref;
    /* dot_planes (last member): none here, the plane dots above are the
     * oracle of the VNNI kernels, not a decode path */
    tab[V4F_TYPE_F32] = (v4f_quant_kernels){V4F_TYPE_F32, dequant_f32, dot_f32_f32, V4F_TYPE_F32, NULL, NULL};
    tab[V4F_TYPE_F16] = (v4f_quant_kernels){V4F_TYPE_F16, dequant_f16, dot_f32_f16, V4F_TYPE_F32, NULL, NULL};
    tab[V4F_TYPE_BF16] =
        (v4f_quant_kernels){V4F_TYPE_BF16, dequant_bf16, dot_f32_bf16, V4F_TYPE_F32, NULL, NULL};
    tab[V4F_TYPE_Q8_0] =
        (v4f_quant_kernels){V4F_TYPE_Q8_0, dequant_q8_0, dot_f32_q8_0, V4F_TYPE_Q8_0, dot_act_q8_0, NULL};
    tab[V4F_TYPE_Q2_K] =
        (v4f_quant_kernels){V4F_TYPE_Q2_K, dequant_q2_K, dot_f32_q2_K, V4F_TYPE_Q8_K, dot_act_q2_K, NULL};
    tab[V4F_TYPE_Q4_K] =
        (v4f_quant_kernels){V4F_TYPE_Q4_K, dequant_q4_K, dot_f32_q4_K, V4F_TYPE_Q8_K, dot_act_q4_K, NULL};
    tab[V4F_TYPE_IQ2_XXS] = (v4f_quant_kernels){V4F_TYPE_IQ2_XXS, dequant_iq2_xxs, dot_f32_iq2_xxs,
                                                V4F_TYPE_Q8_K, dot_act_iq2_xxs, NULL};
}
