/*
 * ggml_type.c - block geometry of every GGML type id (GGUF spec values).
 */
#include "core/ggml_type.h"

#include <strings.h>

#include "core/core.h"

static const v4f_type_info k_types[V4F_TYPE_COUNT] = {
    [V4F_TYPE_F32] = {"F32", 1, 4},
    [V4F_TYPE_F16] = {"F16", 1, 2},
    [V4F_TYPE_Q4_0] = {"Q4_0", 32, 18},
    [V4F_TYPE_Q4_1] = {"Q4_1", 32, 20},
    [V4F_TYPE_Q5_0] = {"Q5_0", 32, 22},
    [V4F_TYPE_Q5_1] = {"Q5_1", 32, 24},
    [V4F_TYPE_Q8_0] = {"Q8_0", 32, 34},
    [V4F_TYPE_Q8_1] = {"Q8_1", 32, 36},
    [V4F_TYPE_Q2_K] = {"Q2_K", 256, 84},
    [V4F_TYPE_Q3_K] = {"Q3_K", 256, 110},
    [V4F_TYPE_Q4_K] = {"Q4_K", 256, 144},
    [V4F_TYPE_Q5_K] = {"Q5_K", 256, 176},
    [V4F_TYPE_Q6_K] = {"Q6_K", 256, 210},
    [V4F_TYPE_Q8_K] = {"Q8_K", 256, 292},
    [V4F_TYPE_IQ2_XXS] = {"IQ2_XXS", 256, 66},
    [V4F_TYPE_IQ2_XS] = {"IQ2_XS", 256, 74},
    [V4F_TYPE_IQ3_XXS] = {"IQ3_XXS", 256, 98},
    [V4F_TYPE_IQ1_S] = {"IQ1_S", 256, 50},
    [V4F_TYPE_IQ4_NL] = {"IQ4_NL", 32, 18},
    [V4F_TYPE_IQ3_S] = {"IQ3_S", 256, 110},
    [V4F_TYPE_IQ2_S] = {"IQ2_S", 256, 82},
    [V4F_TYPE_IQ4_XS] = {"IQ4_XS", 256, 136},
    [V4F_TYPE_I8] = {"I8", 1, 1},
    [V4F_TYPE_I16] = {"I16", 1, 2},
    [V4F_TYPE_I32] = {"I32", 1, 4},
    [V4F_TYPE_I64] = {"I64", 1, 8},
    [V4F_TYPE_F64] = {"F64", 1, 8},
    [V4F_TYPE_IQ1_M] = {"IQ1_M", 256, 56},
    [V4F_TYPE_BF16] = {"BF16", 1, 2},
    [V4F_TYPE_TQ1_0] = {"TQ1_0", 256, 54},
    [V4F_TYPE_TQ2_0] = {"TQ2_0", 256, 66},
    [V4F_TYPE_MXFP4] = {"MXFP4", 32, 17},
};

const v4f_type_info *v4f_type_info_get(uint32_t type) {
    if (type >= V4F_TYPE_COUNT || !k_types[type].name) return NULL;
    return &k_types[type];
}

const char *v4f_type_name(uint32_t type) {
    const v4f_type_info *ti = v4f_type_info_get(type);
    return ti ? ti->name : "?";
}

int v4f_type_from_name(const char *name) {
    for (int t = 0; t < V4F_TYPE_COUNT; t++)
        if (k_types[t].name && strcasecmp(k_types[t].name, name) == 0) return t;
    return -1;
}

bool v4f_type_row_bytes(uint32_t type, uint64_t n, uint64_t *out) {
    const v4f_type_info *ti = v4f_type_info_get(type);
    if (!ti || n % ti->blck_elems) return false;
    return v4f_mul_u64(n / ti->blck_elems, ti->blck_bytes, out);
}
