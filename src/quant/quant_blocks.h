/*
 * quant_blocks.h - GGML-compatible block layouts, defined once and shared by
 * C and CUDA (plain C structs, no C11-only syntax besides static_assert
 * guarded for C++/CUDA). Sizes are checked at compile time.
 */
#ifndef V4F_QUANT_BLOCKS_H
#define V4F_QUANT_BLOCKS_H

#include <stdint.h>

#ifdef __cplusplus
#define V4F_STATIC_ASSERT(c, m) static_assert(c, m)
#else
#include <assert.h>
#define V4F_STATIC_ASSERT(c, m) _Static_assert(c, m)
#endif

#define V4F_QK8_0 32
#define V4F_QK_K 256

typedef uint16_t v4f_half; /* IEEE binary16 bits */

/* Q8_0: w = d * qs[i] */
typedef struct {
    v4f_half d;
    int8_t qs[V4F_QK8_0];
} v4f_block_q8_0;
V4F_STATIC_ASSERT(sizeof(v4f_block_q8_0) == 34, "q8_0 block size");

/* Q2_K: 16 sub-blocks of 16; scales low nibble = scale, high = min. */
typedef struct {
    uint8_t scales[V4F_QK_K / 16];
    uint8_t qs[V4F_QK_K / 4];
    v4f_half d;
    v4f_half dmin;
} v4f_block_q2_K;
V4F_STATIC_ASSERT(sizeof(v4f_block_q2_K) == 84, "q2_K block size");

/* Q4_K: 8 sub-blocks of 32 with 6-bit scales/mins packed in 12 bytes. */
typedef struct {
    v4f_half d;
    v4f_half dmin;
    uint8_t scales[12];
    uint8_t qs[V4F_QK_K / 2];
} v4f_block_q4_K;
V4F_STATIC_ASSERT(sizeof(v4f_block_q4_K) == 144, "q4_K block size");

/* IQ2_XXS: d, then per 32 weights two u32 (4 grid indices; signs + scale). */
typedef struct {
    v4f_half d;
    uint16_t qs[V4F_QK_K / 8];
} v4f_block_iq2_xxs;
V4F_STATIC_ASSERT(sizeof(v4f_block_iq2_xxs) == 66, "iq2_xxs block size");

/* Q8_K (activations only): d is f32, 16 partial sums of 16 codes. */
typedef struct {
    float d;
    int8_t qs[V4F_QK_K];
    int16_t bsums[V4F_QK_K / 16];
} v4f_block_q8_K;
V4F_STATIC_ASSERT(sizeof(v4f_block_q8_K) == 292, "q8_K block size");

#endif /* V4F_QUANT_BLOCKS_H */
