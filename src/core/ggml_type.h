/*
 * ggml_type.h - the GGML tensor type numbering used in GGUF files, with block
 * geometry (elements per block, bytes per block) for every type the format
 * defines. Pure data: which types the engine can compute with is decided by
 * quant/ (v4f_quant_supported), not here.
 */
#ifndef V4F_GGML_TYPE_H
#define V4F_GGML_TYPE_H

#include <stdbool.h>
#include <stdint.h>

typedef enum v4f_ggml_type {
    V4F_TYPE_F32 = 0,
    V4F_TYPE_F16 = 1,
    V4F_TYPE_Q4_0 = 2,
    V4F_TYPE_Q4_1 = 3,
    V4F_TYPE_Q5_0 = 6,
    V4F_TYPE_Q5_1 = 7,
    V4F_TYPE_Q8_0 = 8,
    V4F_TYPE_Q8_1 = 9,
    V4F_TYPE_Q2_K = 10,
    V4F_TYPE_Q3_K = 11,
    V4F_TYPE_Q4_K = 12,
    V4F_TYPE_Q5_K = 13,
    V4F_TYPE_Q6_K = 14,
    V4F_TYPE_Q8_K = 15,
    V4F_TYPE_IQ2_XXS = 16,
    V4F_TYPE_IQ2_XS = 17,
    V4F_TYPE_IQ3_XXS = 18,
    V4F_TYPE_IQ1_S = 19,
    V4F_TYPE_IQ4_NL = 20,
    V4F_TYPE_IQ3_S = 21,
    V4F_TYPE_IQ2_S = 22,
    V4F_TYPE_IQ4_XS = 23,
    V4F_TYPE_I8 = 24,
    V4F_TYPE_I16 = 25,
    V4F_TYPE_I32 = 26,
    V4F_TYPE_I64 = 27,
    V4F_TYPE_F64 = 28,
    V4F_TYPE_IQ1_M = 29,
    V4F_TYPE_BF16 = 30,
    V4F_TYPE_TQ1_0 = 34,
    V4F_TYPE_TQ2_0 = 35,
    V4F_TYPE_MXFP4 = 39,
    V4F_TYPE_COUNT = 40
} v4f_ggml_type;

typedef struct v4f_type_info {
    const char *name;    /* NULL for ids the format does not define */
    uint32_t blck_elems; /* elements per block */
    uint32_t blck_bytes; /* bytes per block */
} v4f_type_info;

/* NULL for unknown ids (including retired ones such as 4, 5, 31-33). */
const v4f_type_info *v4f_type_info_get(uint32_t type);
const char *v4f_type_name(uint32_t type); /* "?" if unknown */
/* Parse a name such as "q8_0" / "IQ2_XXS" (case-insensitive); -1 if unknown. */
int v4f_type_from_name(const char *name);
/* Bytes of a row of n elements; false if n is not a multiple of the block
 * size, the type is unknown, or the result overflows. */
bool v4f_type_row_bytes(uint32_t type, uint64_t n, uint64_t *out);

#endif /* V4F_GGML_TYPE_H */
