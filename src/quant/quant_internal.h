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
/* Index (0, 1, 2) of a grid byte among those magnitudes, -1 for any other
 * byte (kernels that code the magnitudes in 2 or 3 bits check the grid). */
static inline int v4f_quant_iq2xxs_mag_code(uint32_t b) {
    return b == 0x08 ? 0 : b == 0x19 ? 1 : b == 0x2b ? 2 : -1;
}
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

/* ---- int8-plane activations (quant.h, v4f_quantize_planes) ------------------- */

/* Layout of the planes of an n-element row (n % 256 == 0, the block size of
 * every type with a plane kernel; 8 groups of 32 per block):
 *  [0, 3n)     plane records. Block b, chunk j (0..3): 192 bytes at
 *              768 b + 192 j, planes p1, p2, p3 of 64 bytes each; bytes
 *              8k..8k+7 of a plane are elements 8j..8j+7 of group 8b + k
 *              (k = 0..7). So a vpdpbusd lane pair 2k, 2k+1 holds group k in
 *              every chunk of a block, and a kernel can add the integer sums
 *              of the four chunks before it scales them once per block.
 *  off_d       float d[n / 32], natural group order; NaN for a group with a
 *              non-finite x (its planes are 0).
 *  off_s16     float s16[n / 16]: sums of x over runs of 16 (the K-quant
 *              mins), each summed as the tree ((x_i + x_i+8) + (.. + x_i+4))
 *              + ..., i.e. the 16-lane halving reduction; NaN in a bad group.
 *  off_bias    int32 bias[n / 16]: per block (at 16 b) the 16 lanes of
 *              vpdpbusd, lane l = bytes 4l..4l+3 of the block's 4 chunks:
 *              64 * sum over those 16 elements of (16384 p1 + 128 p2 + p3),
 *              the term that weight codes biased by +64 add to the block's
 *              plane sums (the IQ2_XXS kernel applies its signs to the biased
 *              grid bytes, 64 +- g, instead of to the three planes).
 *              |bias| <= 16 * 64 * 127 * 16513 < 2^31.
 * Plane codes are int8 in [-127, 127]: p1 = rne(x / d), r1 = fma(-d, p1, x),
 * p2 = rne(r1 / (d / 128)), r2 likewise, p3 = rne(r2 / (d / 16384)), each
 * quotient clamped to [-127, 127] first (|p2|, |p3| <= 64 in fact); r1 and
 * r2 are exact, so |x - d (p1 + p2 / 128 + p3 / 16384)| <= d / 32768, times
 * 1 + 2^-17 for the f32 rounding of the last quotient (for d / 16384 in the
 * normal range; a plane whose step underflows to 0 is 0). */
static inline size_t v4f_planes_off_d(int64_t n) { return ((size_t)n * 3 + 63) & ~(size_t)63; }
static inline size_t v4f_planes_off_s16(int64_t n) {
    return v4f_planes_off_d(n) + (((size_t)n / 32 * 4 + 63) & ~(size_t)63);
}
static inline size_t v4f_planes_off_bias(int64_t n) {
    return v4f_planes_off_s16(n) + (((size_t)n / 16 * 4 + 63) & ~(size_t)63);
}
/* byte offset of plane p1 of element l (0..31) of group g; p2 and p3
 * follow at +64, +128 */
static inline size_t v4f_planes_elem_off(int64_t g, int l) {
    return (size_t)(768 * (g / 8) + 192 * (l / 8) + 8 * (g % 8) + l % 8);
}

typedef void (*v4f_quant_planes_fn)(const float *x, void *dst, int64_t n);
/* The scalar reference split and plane dots (quant_ref.c): integer sums per
 * group exact, combined in double. NULL for a type without plane support. */
void v4f_quant_planes_ref(const float *x, void *dst, int64_t n);
v4f_quant_dot_planes_fn v4f_quant_dot_planes_ref(uint32_t type);
/* The AVX-512 split (byte-identical to the reference) and the VNNI plane
 * dots (quant_planes_avx512.c); only called on CPUs with AVX-512 F/BW/VL/DQ,
 * VNNI and VBMI. gather_fast picks the IQ2_XXS grid lookup (a qword gather,
 * else register tables; identical results). */
void v4f_quant_planes_avx512(const float *x, void *dst, int64_t n);
void v4f_quant_fill_planes_avx512(v4f_quant_kernels *tab, bool gather_fast);
/* the IQ2_XXS plane dot with the gather (true) or the table lookup */
v4f_quant_dot_planes_fn v4f_quant_iq2_planes_avx512(bool gather);

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
