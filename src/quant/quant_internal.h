/*
 * quant_internal.h - private declarations shared by the files of src/quant/:
 * the IQ2_XXS format tables, the scalar reference kernels (quant_ref.c), the
 * per-ISA table fillers (quant_avx2.c, quant_avx512.c) and small inline
 * helpers. Not for use outside src/quant/ and its unit tests.
 *
 * Invariants: every kernel here is a pure function of its arguments; the
 * tables are const format data.
 */
#ifndef V4F_QUANT_INTERNAL_H
#define V4F_QUANT_INTERNAL_H

#include <stdint.h>
#include <string.h>

#include "core/core.h"
#include "quant/quant.h"

/* ---- IQ2_XXS format data (quant_tables.c) ------------------------------ */

/* 256 grid points; byte j of entry k is the magnitude of element j, one of
 * {0x08, 0x19, 0x2b}. Bit-for-bit equal to GGML's iq2xxs_grid. */
extern const uint64_t v4f_quant_iq2xxs_grid[256];
/* 7-bit sign index -> 8-bit sign mask: k | (parity(k) << 7). */
extern const uint8_t v4f_quant_ksigns[128];
/* ksigns[k] expanded: byte j = -1 (0xFF) if bit j is set, else +1. */
extern const uint64_t v4f_quant_ksigns_pm1[128];
/* ksigns[k] expanded: lane j = 0x80000000 if bit j is set, else 0. */
extern const uint32_t v4f_quant_ksigns_f32[128][8];
/* iq2xxs_grid as floats: gridf[k][j] = (float)(byte j of grid entry k).
 * Filled once by v4f_quant_iq2_gridf_init (quant.c calls it before any
 * kernel table is handed out); read-only afterwards. */
extern float v4f_quant_iq2xxs_gridf[256][8];
void v4f_quant_iq2_gridf_init(void);

/* ---- helpers ------------------------------------------------------------ */

static inline uint32_t v4f_quant_rd_u32(const void *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline uint16_t v4f_quant_rd_u16(const void *p) {
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline float v4f_quant_rd_f16(const void *p) {
    return v4f_f16_to_f32(v4f_quant_rd_u16(p));
}

static inline float v4f_quant_rd_f32(const void *p) {
    float v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Byte offsets inside the blocks (the kernels address blocks through byte
 * pointers so that rows need no alignment). */
enum {
    V4F_Q8_0_D = 0, V4F_Q8_0_QS = 2,
    V4F_Q2K_SCALES = 0, V4F_Q2K_QS = 16, V4F_Q2K_D = 80, V4F_Q2K_DMIN = 82,
    V4F_Q4K_D = 0, V4F_Q4K_DMIN = 2, V4F_Q4K_SCALES = 4, V4F_Q4K_QS = 16,
    V4F_IQ2_D = 0, V4F_IQ2_QS = 2,
    V4F_Q8K_D = 0, V4F_Q8K_QS = 4, V4F_Q8K_BSUMS = 260
};

/* Q4_K: 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes. */
static inline void v4f_quant_q4k_scale_min(const uint8_t *s, int j, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (uint8_t)((s[j + 4] & 15) | ((s[j - 4] >> 6) << 4));
        *m = (uint8_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

/* Round to nearest, ties to even (matches the GGML K-quant helper for the
 * magnitudes that occur, |v| < 2^22). */
static inline int v4f_quant_nearest_int(float v) {
    float t = v + 12582912.0f; /* 1.5 * 2^23 */
    int32_t i;
    memcpy(&i, &t, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

/* ---- kernel tables ---------------------------------------------------------- */

/* Activation quantizers of one ISA (every member non-NULL once filled). */
typedef void (*v4f_quant_act_fn)(const float *x, void *dst, int64_t n);
typedef struct v4f_quant_act_kernels {
    v4f_quant_act_fn q8_0; /* n % 32 == 0 */
    v4f_quant_act_fn q8_K; /* n % 256 == 0 */
} v4f_quant_act_kernels;

/* Activation quantizers of one ISA, bit-identical to the reference; NULL if
 * the ISA is not available (quant.c). */
const v4f_quant_act_kernels *v4f_quant_act_isa(v4f_isa isa);

/* Scalar reference (quant_ref.c): fill tab[type] for every supported type
 * (tab has V4F_TYPE_COUNT entries; others untouched) and act. */
void v4f_quant_fill_generic(v4f_quant_kernels *tab, v4f_quant_act_kernels *act);
void v4f_quant_act_q8_0_ref(const float *x, void *dst, int64_t n);
void v4f_quant_act_q8_K_ref(const float *x, void *dst, int64_t n);

/* Per-ISA fillers: override members of tables that already hold the
 * next-lower ISA's kernels. */
void v4f_quant_fill_avx2(v4f_quant_kernels *tab, v4f_quant_act_kernels *act);
void v4f_quant_fill_avx512(v4f_quant_kernels *tab, v4f_quant_act_kernels *act);

#endif /* V4F_QUANT_INTERNAL_H */
