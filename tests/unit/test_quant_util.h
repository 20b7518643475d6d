/*
 * test_quant_util.h - helpers shared by the quant unit tests: random valid
 * blocks, misaligned copies, the double-precision oracle dot and the GGML
 * test-quantize-fns data/metric. Header-only (static functions).
 */
#ifndef V4F_TEST_QUANT_UTIL_H
#define V4F_TEST_QUANT_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "quant/quant.h"
#include "quant/quant_internal.h"
#include "../test.h"

static inline uint32_t tq_blck_elems(uint32_t type) { return v4f_type_info_get(type)->blck_elems; }

static inline size_t tq_row_bytes(uint32_t type, int64_t n) {
    uint64_t b = 0;
    if (!v4f_type_row_bytes(type, (uint64_t)n, &b)) return 0;
    return (size_t)b;
}

/* A random f16 of magnitude in [2^-10, 2^-2), random sign if signed_ok. */
static inline uint16_t tq_rand_scale(test_rng *r, int signed_ok) {
    const double e = -10.0 + 8.0 * (double)(test_rng_u64(r) >> 11) / 9007199254740992.0;
    float v = (float)pow(2.0, e);
    if (signed_ok && (test_rng_u64(r) & 1)) v = -v;
    return v4f_f32_to_f16(v);
}

static inline void tq_put_u16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

/* Random but valid row of n elements of type: random code bytes, sane f16
 * scales (d, dmin), normal-distributed F32/F16/BF16 values. */
static inline void tq_rand_row(test_rng *r, uint32_t type, uint8_t *dst, int64_t n) {
    const size_t bytes = tq_row_bytes(type, n);
    for (size_t i = 0; i < bytes; i++) dst[i] = (uint8_t)test_rng_u64(r);
    const int64_t nb = n / tq_blck_elems(type);
    for (int64_t i = 0; i < n && type == V4F_TYPE_F32; i++) {
        const float v = test_rng_normal(r);
        memcpy(dst + 4 * i, &v, 4);
    }
    for (int64_t i = 0; i < n && (type == V4F_TYPE_F16 || type == V4F_TYPE_BF16); i++) {
        const float v = test_rng_normal(r);
        tq_put_u16(dst + 2 * i, type == V4F_TYPE_F16 ? v4f_f32_to_f16(v) : v4f_f32_to_bf16(v));
    }
    for (int64_t i = 0; i < nb; i++) {
        switch (type) {
        case V4F_TYPE_Q8_0: tq_put_u16(dst + 34 * i, tq_rand_scale(r, 1)); break;
        case V4F_TYPE_Q2_K:
            tq_put_u16(dst + 84 * i + V4F_Q2K_D, tq_rand_scale(r, 0));
            tq_put_u16(dst + 84 * i + V4F_Q2K_DMIN, tq_rand_scale(r, 0));
            break;
        case V4F_TYPE_Q4_K:
            tq_put_u16(dst + 144 * i + V4F_Q4K_D, tq_rand_scale(r, 0));
            tq_put_u16(dst + 144 * i + V4F_Q4K_DMIN, tq_rand_scale(r, 0));
            break;
        case V4F_TYPE_IQ2_XXS: tq_put_u16(dst + 66 * i, tq_rand_scale(r, 1)); break;
        default: break;
        }
    }
}

/* sum x*y in double, and sum |x*y| (the scale of the rounding error). */
static inline double tq_dot(const float *x, const float *y, int64_t n, double *mag) {
    double s = 0, m = 0;
    for (int64_t i = 0; i < n; i++) {
        s += (double)x[i] * y[i];
        m += fabs((double)x[i] * y[i]);
    }
    if (mag) *mag = m;
    return s;
}

/* GGML test-quantize-fns synthetic data: 0.1 + 2 cos(i + offset). */
static inline void tq_ggml_data(float offset, int64_t n, float *dst) {
    for (int64_t i = 0; i < n; i++) dst[i] = 0.1f + 2.0f * cosf((float)i + offset);
}

/* GGML test-quantize-fns "rmse": sqrt(sum d^2) / n (sic, not / sqrt(n)). */
static inline double tq_ggml_rmse(const float *a, const float *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return sqrt(s) / (double)n;
}

static inline double tq_rms(const float *a, const float *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return sqrt(s / (double)n);
}

#endif /* V4F_TEST_QUANT_UTIL_H */
