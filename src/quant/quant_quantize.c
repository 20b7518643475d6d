/*
 * quant_quantize.c - weight quantizers (f32 rows -> F32/F16/BF16/Q8_0/Q2_K/
 * Q4_K/IQ2_XXS blocks) for the synth/quantize tools and the tests. Scalar
 * and unhurried: not on any inference path.
 *
 * Method (our own; the formats are GGML's):
 *  - Q8_0: d = amax/127, codes rounded half away from zero (GGML's reference
 *    quantizer, bit-identical). Importance weights are ignored.
 *  - Q2_K / Q4_K: each sub-block is fitted as x ~ s*q - m (s, m >= 0) by
 *    weighted least squares over a sweep of candidate grids, then refined by
 *    re-rounding; the sub-block scales and mins are then quantized to 4/6
 *    bits with a weighted search over the super-block scale, and the codes
 *    are re-rounded against the stored (f16) scales.
 *  - IQ2_XXS: per 8-element group every one of the 256 grid points is
 *    scored in closed form (error as a quadratic in the group scale), with
 *    the even-sign-parity constraint resolved exactly per grid point by
 *    flipping the cheapest element; the 32-element scale is the weighted
 *    least-squares optimum; the super-block scale is searched against the
 *    4-bit scale grid.
 *  Element weights: w_i = imp_i * sqrt(sigma2 + x_i^2), sigma2 the mean
 *  square of the 256-element super-block, imp_i = imatrix[i] or 1 (IQ2_XXS
 *  without imatrix: the per-column sum of squares over all rows, plus its
 *  mean over the columns as a floor).
 *  Speed (one thread, dev box): Q8_0 ~90, Q2_K/Q4_K ~2, IQ2_XXS ~0.4 Melem/s.
 *
 * Memory: IQ2_XXS allocates a 74 KB scoring scratch per row and, without
 * imatrix, the derived importance vector; freed before returning.
 * Threading: pure functions.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "quant/quant_internal.h"

#define QK V4F_QK_K

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

static float fp16_round(float v) { return v4f_f16_to_f32(v4f_f32_to_f16(v)); }

/* w_i = imp_i * sqrt(sigma2 + x_i^2) over one super-block of QK elements;
 * all-zero weights fall back to 1 so the fits stay well posed. */
static void element_weights(const float *x, const float *imp, float *w) {
    double s2 = 0;
    for (int i = 0; i < QK; i++) s2 += (double)x[i] * x[i];
    const float sigma2 = (float)(s2 / QK);
    double sw = 0;
    for (int i = 0; i < QK; i++) {
        w[i] = (imp ? imp[i] : 1.0f) * sqrtf(sigma2 + x[i] * x[i]);
        sw += w[i];
    }
    if (!(sw > 0))
        for (int i = 0; i < QK; i++) w[i] = 1.0f;
}

/* ---- scalar conversions / Q8_0 ------------------------------------------ */

static void quantize_row_f16(const float *x, void *dst, int64_t n) {
    uint8_t *p = dst;
    for (int64_t i = 0; i < n; i++) {
        const uint16_t h = v4f_f32_to_f16(x[i]);
        memcpy(p + 2 * i, &h, 2);
    }
}

static void quantize_row_bf16(const float *x, void *dst, int64_t n) {
    uint8_t *p = dst;
    for (int64_t i = 0; i < n; i++) {
        const uint16_t h = v4f_f32_to_bf16(x[i]);
        memcpy(p + 2 * i, &h, 2);
    }
}

/* ---- K-quants: sub-block fit --------------------------------------------- */

typedef struct fit {
    float s, m, err; /* x ~ s*q - m */
} fit;

static float fit_error(int n, const float *x, const float *w, const uint8_t *q, float s, float m) {
    float e = 0;
    for (int i = 0; i < n; i++) {
        const float d = s * q[i] - m - x[i];
        e += w[i] * d * d;
    }
    return e;
}

static void round_codes(int n, int nmax, const float *x, float s, float m, uint8_t *q) {
    const float is = s > 0 ? 1.0f / s : 0.0f;
    for (int i = 0; i < n; i++) q[i] = (uint8_t)clampi(v4f_quant_nearest_int((x[i] + m) * is), 0, nmax);
}

/* Weighted least squares for (s, m) given codes q, with m >= 0 enforced. */
static bool solve_scale_min(int n, const float *x, const float *w, const uint8_t *q, fit *f) {
    double sw = 0, sq = 0, sq2 = 0, sx = 0, sqx = 0;
    for (int i = 0; i < n; i++) {
        sw += w[i];
        sq += (double)w[i] * q[i];
        sq2 += (double)w[i] * q[i] * q[i];
        sx += (double)w[i] * x[i];
        sqx += (double)w[i] * q[i] * x[i];
    }
    const double det = sw * sq2 - sq * sq;
    if (!(det > 0)) return false;
    double s = (sw * sqx - sq * sx) / det;
    double b = (sq2 * sx - sq * sqx) / det; /* offset, = -m */
    if (b > 0) {
        b = 0;
        s = sqx / sq2;
    }
    if (!(s > 0)) return false;
    f->s = (float)s;
    f->m = (float)-b;
    f->err = fit_error(n, x, w, q, f->s, f->m);
    return true;
}

/* Best (s, m) and codes q for one sub-block of n <= 32 elements. */
static fit fit_sub_block(int n, int nmax, const float *x, const float *w, uint8_t *q) {
    float lo = 0, hi = x[0];
    for (int i = 0; i < n; i++) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
    }
    fit best = {0, -lo, 0};
    if (!(hi > lo)) {
        for (int i = 0; i < n; i++) q[i] = 0;
        best.err = fit_error(n, x, w, q, 0, best.m);
        return best;
    }
    best.s = (hi - lo) / nmax;
    round_codes(n, nmax, x, best.s, best.m, q);
    best.err = fit_error(n, x, w, q, best.s, best.m);
    uint8_t cand[32];
    for (int k = -10; k <= 10; k++) {
        const float s0 = (hi - lo) / (nmax + 0.1f * k);
        round_codes(n, nmax, x, s0, -lo, cand);
        fit f;
        for (int iter = 0; iter < 3 && solve_scale_min(n, x, w, cand, &f); iter++) {
            if (f.err < best.err) {
                best = f;
                for (int i = 0; i < n; i++) q[i] = cand[i];
            }
            round_codes(n, nmax, x, f.s, f.m, cand);
        }
    }
    return best;
}

/* Quantize n non-negative values v to d * L (L in 0..lmax) minimizing the
 * sw-weighted squared error; returns d (0 if all v are 0). */
static float quant_scales(int n, int lmax, const float *v, const float *sw, uint8_t *L) {
    float vmax = 0;
    for (int j = 0; j < n; j++) {
        vmax = fmaxf(vmax, v[j]);
        L[j] = 0;
    }
    if (!(vmax > 0)) return 0;
    float best_d = vmax / lmax, best_e = FLT_MAX;
    uint8_t tmp[16];
    for (int k = -12; k <= 8; k++) {
        float d = vmax / (lmax + 0.05f * k * lmax / 4);
        for (int iter = 0; iter < 2; iter++) {
            double num = 0, den = 0, e = 0;
            for (int j = 0; j < n; j++) {
                tmp[j] = (uint8_t)clampi(v4f_quant_nearest_int(v[j] / d), 0, lmax);
                num += (double)sw[j] * v[j] * tmp[j];
                den += (double)sw[j] * tmp[j] * tmp[j];
            }
            for (int j = 0; j < n; j++) e += sw[j] * (d * tmp[j] - v[j]) * (d * tmp[j] - v[j]);
            if (e < best_e) {
                best_e = (float)e;
                best_d = d;
                for (int j = 0; j < n; j++) L[j] = tmp[j];
            }
            if (!(den > 0)) break;
            d = (float)(num / den);
        }
    }
    return best_d;
}

/* ---- Q2_K ------------------------------------------------------------------ */

static void quantize_block_q2_K(const float *x, const float *imp, v4f_block_q2_K *y) {
    float w[QK], s[16], m[16], sw[16];
    uint8_t q[QK], Ls[16], Lm[16];
    element_weights(x, imp, w);
    for (int g = 0; g < 16; g++) {
        const fit f = fit_sub_block(16, 3, x + 16 * g, w + 16 * g, q + 16 * g);
        s[g] = f.s;
        m[g] = f.m;
        sw[g] = 0;
        for (int i = 0; i < 16; i++) sw[g] += w[16 * g + i];
    }
    y->d = v4f_f32_to_f16(quant_scales(16, 15, s, sw, Ls));
    y->dmin = v4f_f32_to_f16(quant_scales(16, 15, m, sw, Lm));
    const float d = v4f_f16_to_f32(y->d), dmin = v4f_f16_to_f32(y->dmin);
    for (int g = 0; g < 16; g++) {
        y->scales[g] = (uint8_t)(Ls[g] | (Lm[g] << 4));
        const float dl = d * Ls[g], ml = dmin * Lm[g];
        if (dl > 0) round_codes(16, 3, x + 16 * g, dl, ml, q + 16 * g);
        else memset(q + 16 * g, 0, 16);
    }
    /* element 128h + 32s + l lives in qs[32h + l] bits 2s..2s+1 */
    memset(y->qs, 0, sizeof y->qs);
    for (int e = 0; e < QK; e++) {
        const int h = e / 128, sh = (e % 128) / 32, l = e % 32;
        y->qs[32 * h + l] |= (uint8_t)(q[e] << (2 * sh));
    }
}

/* ---- Q4_K ------------------------------------------------------------------ */

static void pack_q4k_scales(const uint8_t *Ls, const uint8_t *Lm, uint8_t *s) {
    memset(s, 0, 12);
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)(Ls[j] | ((Ls[j + 4] >> 4) << 6));
        s[j + 4] = (uint8_t)(Lm[j] | ((Lm[j + 4] >> 4) << 6));
        s[j + 8] = (uint8_t)((Ls[j + 4] & 15) | ((Lm[j + 4] & 15) << 4));
    }
}

static void quantize_block_q4_K(const float *x, const float *imp, v4f_block_q4_K *y) {
    float w[QK], s[8], m[8], sw[8];
    uint8_t q[QK], Ls[8], Lm[8];
    element_weights(x, imp, w);
    for (int j = 0; j < 8; j++) {
        const fit f = fit_sub_block(32, 15, x + 32 * j, w + 32 * j, q + 32 * j);
        s[j] = f.s;
        m[j] = f.m;
        sw[j] = 0;
        for (int i = 0; i < 32; i++) sw[j] += w[32 * j + i];
    }
    y->d = v4f_f32_to_f16(quant_scales(8, 63, s, sw, Ls));
    y->dmin = v4f_f32_to_f16(quant_scales(8, 63, m, sw, Lm));
    pack_q4k_scales(Ls, Lm, y->scales);
    const float d = v4f_f16_to_f32(y->d), dmin = v4f_f16_to_f32(y->dmin);
    for (int j = 0; j < 8; j++) {
        const float dl = d * Ls[j], ml = dmin * Lm[j];
        if (dl > 0) round_codes(32, 15, x + 32 * j, dl, ml, q + 32 * j);
        else memset(q + 32 * j, 0, 32);
    }
    /* sub-block j: nibble (j & 1) of qs[32 * (j / 2) + l] */
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++)
            y->qs[32 * c + l] = (uint8_t)(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
}

/* ---- IQ2_XXS ---------------------------------------------------------------- */

/* Per 8-element group and grid point k, with a = |x|, g = grid magnitudes:
 *   A_k = sum w g^2,  B_k = sum w g a,  C_k = min_j w g_j a_j.
 * Error at group scale S (up to a constant): S^2 A_k - 2 S B'_k with
 * B'_k = B_k - 2 C_k if the group has an odd number of negatives (the
 * cheapest element is flipped to restore even parity), else B_k. */
typedef struct grid_scores {
    float A[256], B[256];
    uint8_t flip[256]; /* element flipped for parity (if odd) */
    uint8_t neg;       /* sign bits of x */
} grid_scores;

static void score_group(const float *x, const float *w, grid_scores *gs) {
    float a[8];
    int nneg = 0;
    gs->neg = 0;
    for (int j = 0; j < 8; j++) {
        a[j] = fabsf(x[j]);
        if (x[j] < 0) {
            gs->neg |= (uint8_t)(1u << j);
            nneg++;
        }
    }
    for (int k = 0; k < 256; k++) {
        const uint8_t *g = (const uint8_t *)&v4f_quant_iq2xxs_grid[k];
        float A = 0, B = 0, C = FLT_MAX;
        int jmin = 0;
        for (int j = 0; j < 8; j++) {
            const float wg = w[j] * g[j];
            A += wg * g[j];
            B += wg * a[j];
            if (wg * a[j] < C) {
                C = wg * a[j];
                jmin = j;
            }
        }
        gs->A[k] = A;
        gs->B[k] = (nneg & 1) ? B - 2 * C : B;
        gs->flip[k] = (uint8_t)jmin;
    }
}

/* Best grid point at scale S (the first of equal ones); *err gets
 * S^2 A - 2 S B'. The errors are computed in a loop the compiler vectorizes
 * and the minimum found in eight lanes, then its first index: the same
 * result as the plain scan, ~5x faster (this is most of IQ2_XXS's time). */
static int best_grid(const grid_scores *gs, float S, float *err) {
    float e[256], m[8];
    const float s2 = S * S, s1 = 2 * S;
    for (int k = 0; k < 256; k++) e[k] = s2 * gs->A[k] - s1 * gs->B[k];
    for (int l = 0; l < 8; l++) m[l] = e[l];
    for (int k = 8; k < 256; k += 8)
        for (int l = 0; l < 8; l++) m[l] = e[k + l] < m[l] ? e[k + l] : m[l];
    float be = m[0];
    for (int l = 1; l < 8; l++) be = m[l] < be ? m[l] : be;
    int best = 0;
    while (best < 256 && e[best] != be) best++;
    if (best == 256) { /* NaN scores (a damaged input): the plain scan */
        best = 0;
        be = FLT_MAX;
        for (int k = 0; k < 256; k++)
            if (e[k] < be) {
                be = e[k];
                best = k;
            }
    }
    *err = be;
    return best;
}

/* Weighted LS group scale (in grid-byte units) for 4 groups of 8. */
static float fit_group_scale(const grid_scores *gs, const float *x) {
    float amax = 0;
    for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[i]));
    if (!(amax > 0)) return 0;
    float best_s = 0, best_v = 0;
    for (int c = 0; c < 16; c++) {
        const float S = amax / (43.0f * (0.3f + 0.06f * c));
        double sa = 0, sb = 0;
        for (int k = 0; k < 4; k++) {
            float e;
            const int idx = best_grid(&gs[k], S, &e);
            sa += gs[k].A[idx];
            sb += gs[k].B[idx];
        }
        if (sb > 0 && sa > 0 && sb * sb / sa > best_v) {
            best_v = (float)(sb * sb / sa);
            best_s = (float)(sb / sa);
        }
    }
    return best_s;
}

/* Total error of the 8 groups-of-32 for super-block scale d; picks each
 * group's 4-bit scale ls among the values next to the rounded one. */
static float iq2_block_error(const grid_scores *gs, const float *S, float d, uint8_t *ls) {
    float tot = 0;
    for (int g = 0; g < 8; g++) {
        const float u = d > 0 ? (8.0f * S[g] / d - 1.0f) * 0.5f : 0.0f;
        const int l0 = clampi(v4f_quant_nearest_int(u), 0, 15);
        float best = FLT_MAX;
        for (int l = (l0 > 0 ? l0 - 1 : 0); l <= (l0 < 15 ? l0 + 1 : 15); l++) {
            const float db = d * (0.5f + l) * 0.25f;
            float e = 0, ek;
            for (int k = 0; k < 4; k++) {
                best_grid(&gs[4 * g + k], db, &ek);
                e += ek;
            }
            if (e < best) {
                best = e;
                ls[g] = (uint8_t)l;
            }
        }
        tot += best;
    }
    return tot;
}

/* gs: scratch for the 32 groups of 8 of the block */
static void quantize_block_iq2_xxs(const float *x, const float *imp, grid_scores *gs, v4f_block_iq2_xxs *y) {
    float w[QK], S[8], smax = 0;
    element_weights(x, imp, w);
    for (int g = 0; g < 8; g++) {
        for (int k = 0; k < 4; k++) score_group(x + 32 * g + 8 * k, w + 32 * g + 8 * k, &gs[4 * g + k]);
        S[g] = fit_group_scale(&gs[4 * g], x + 32 * g);
        smax = fmaxf(smax, S[g]);
    }
    uint8_t ls[8], best_ls[8] = {0};
    float best_d = 0, best_e = FLT_MAX;
    for (int c = 0; c <= 8 && smax > 0; c++) {
        const float d = fp16_round(smax * 8.0f / (31.0f * (0.75f + 0.04f * c)));
        const float e = iq2_block_error(gs, S, d, ls);
        if (e < best_e) {
            best_e = e;
            best_d = d;
            memcpy(best_ls, ls, sizeof ls);
        }
    }
    y->d = v4f_f32_to_f16(best_d);
    uint8_t *q = (uint8_t *)y->qs;
    for (int g = 0; g < 8; g++) {
        const float db = best_d * (0.5f + best_ls[g]) * 0.25f;
        uint32_t aux = (uint32_t)best_ls[g] << 28;
        for (int k = 0; k < 4; k++) {
            const grid_scores *s = &gs[4 * g + k];
            float e;
            const int idx = best_grid(s, db, &e);
            uint8_t sg = s->neg;
            if (__builtin_popcount(sg) & 1) sg ^= (uint8_t)(1u << s->flip[idx]);
            q[8 * g + k] = (uint8_t)idx;
            aux |= (uint32_t)(sg & 127) << (7 * k);
        }
        memcpy(q + 8 * g + 4, &aux, 4);
    }
}

/* ---- rows -------------------------------------------------------------------- */

static size_t quantize_row(uint32_t type, const float *x, void *dst, int64_t n, const float *imp) {
    uint64_t bytes = 0;
    if (!v4f_type_row_bytes(type, (uint64_t)n, &bytes)) return 0;
    switch (type) {
    case V4F_TYPE_F32: memcpy(dst, x, (size_t)n * 4); break;
    case V4F_TYPE_F16: quantize_row_f16(x, dst, n); break;
    case V4F_TYPE_BF16: quantize_row_bf16(x, dst, n); break;
    case V4F_TYPE_Q8_0: v4f_quant_act_q8_0_ref(x, dst, n); break;
    case V4F_TYPE_Q2_K:
        for (int64_t i = 0; i < n / QK; i++) {
            v4f_block_q2_K b;
            quantize_block_q2_K(x + QK * i, imp ? imp + QK * i : NULL, &b);
            memcpy((uint8_t *)dst + i * sizeof b, &b, sizeof b);
        }
        break;
    case V4F_TYPE_Q4_K:
        for (int64_t i = 0; i < n / QK; i++) {
            v4f_block_q4_K b;
            quantize_block_q4_K(x + QK * i, imp ? imp + QK * i : NULL, &b);
            memcpy((uint8_t *)dst + i * sizeof b, &b, sizeof b);
        }
        break;
    case V4F_TYPE_IQ2_XXS: {
        grid_scores *gs = v4f_xmalloc(32 * sizeof *gs);
        for (int64_t i = 0; i < n / QK; i++) {
            v4f_block_iq2_xxs b;
            quantize_block_iq2_xxs(x + QK * i, imp + QK * i, gs, &b);
            memcpy((uint8_t *)dst + i * sizeof b, &b, sizeof b);
        }
        free(gs);
        break;
    }
    default: return 0;
    }
    return (size_t)bytes;
}

bool v4f_quantize_supported(uint32_t type) {
    switch (type) {
    case V4F_TYPE_F32:
    case V4F_TYPE_F16:
    case V4F_TYPE_BF16:
    case V4F_TYPE_Q8_0:
    case V4F_TYPE_Q2_K:
    case V4F_TYPE_Q4_K:
    case V4F_TYPE_IQ2_XXS: return true;
    default: return false;
    }
}

/* IQ2_XXS without an importance matrix: per-column sum of squares over the
 * rows, plus its mean over the columns as a floor (with one row the bare
 * x^2 would make near-zero weights all but free to distort). */
static float *column_sumsq(const float *src, int64_t nrows, int64_t n) {
    float *imp = v4f_xcalloc((size_t)n, sizeof *imp);
    double mean = 0;
    for (int64_t r = 0; r < nrows; r++)
        for (int64_t i = 0; i < n; i++) imp[i] += src[r * n + i] * src[r * n + i];
    for (int64_t i = 0; i < n; i++) mean += imp[i];
    mean /= (double)n;
    for (int64_t i = 0; i < n; i++) imp[i] += (float)mean;
    return imp;
}

size_t v4f_quantize_rows(uint32_t type, const float *src, void *dst, int64_t nrows,
                         int64_t n_per_row, const float *imatrix) {
    uint64_t row_bytes = 0;
    if (!v4f_quantize_supported(type) || nrows < 0 ||
        !v4f_type_row_bytes(type, (uint64_t)n_per_row, &row_bytes))
        return 0;
    float *own = NULL;
    if (type == V4F_TYPE_IQ2_XXS && !imatrix) imatrix = own = column_sumsq(src, nrows, n_per_row);
    uint8_t *out = dst;
    for (int64_t r = 0; r < nrows; r++)
        quantize_row(type, src + r * n_per_row, out + (size_t)r * row_bytes, n_per_row, imatrix);
    free(own);
    return (size_t)(row_bytes * (uint64_t)nrows);
}
