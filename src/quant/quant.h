/*
 * quant.h - weight formats: dequantization, dot products and quantizers for
 * F32, F16, BF16, Q8_0, Q2_K, Q4_K, IQ2_XXS (weights) and Q8_0 / Q8_K
 * (activations).
 *
 * Every kernel has a scalar reference ("generic", the oracle, always built)
 * and, where it pays, AVX2 and AVX-512 variants chosen once at run time from
 * cpuid. v4f_quant_kernels(type) returns the active table; tests fetch a
 * specific ISA's table with v4f_quant_kernels_isa to compare it against the
 * reference.
 *
 * Rows: a weight row of n elements is n / blck_elems consecutive blocks
 * (n must be a multiple of the block size). Pointers need no alignment.
 *
 * int8-plane activations (decode matvec): v4f_quantize_planes splits an f32
 * activation row once per matvec into three int8 planes per group of 32,
 * x ~= d (p1 + p2 / 128 + p3 / 16384), d = max|x| / 127 (the residual is at
 * most d / 32768 ~= 2.4e-7 max|x| of the group); dot_planes multiplies the
 * weight codes with those planes in exact int32 sums (AVX-512 VNNI) and
 * scales the exact sums in f32 per group. Same scheme as the CUDA matvec
 * (src/backend/cuda/cuda_quant.cu, "int8-plane activations").
 *
 * Threading: all kernels are pure functions; the dispatch table is built on
 * first use (thread-safe via pthread_once).
 */
#ifndef V4F_QUANT_H
#define V4F_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/ggml_type.h"
#include "quant/quant_blocks.h"

typedef enum v4f_isa {
    V4F_ISA_GENERIC = 0,
    V4F_ISA_AVX2 = 1,
    V4F_ISA_AVX512 = 2,
    V4F_ISA_COUNT
} v4f_isa;

/* Best ISA this CPU (and this build) supports; V4F_ISA env var
 * ("generic"/"avx2"/"avx512") may lower it. */
v4f_isa v4f_isa_best(void);
const char *v4f_isa_name(v4f_isa isa);
bool v4f_isa_available(v4f_isa isa);

/* Kernels for one weight type. NULL members are not provided for that type. */
typedef struct v4f_quant_kernels {
    uint32_t type;
    /* dst[0..n) = dequantized row */
    void (*dequant_row)(const void *src, float *dst, int64_t n);
    /* sum_i w[i] * x[i], weights of this type, f32 activations; the result
     * must equal the dot of the dequantized row with x up to f32 summation
     * order. */
    float (*dot_f32)(const void *w, const float *x, int64_t n);
    /* Quantized-activation dot: act_type is V4F_TYPE_Q8_0 or V4F_TYPE_Q8_K
     * (the format this weight type pairs with); xq holds the activation row
     * quantized with v4f_quantize_act. */
    uint32_t act_type;
    float (*dot_act)(const void *w, const void *xq, int64_t n);
    /* sum_i w[i] * x[i] with x given as int8 planes (v4f_quantize_planes of
     * the same n); NULL unless this ISA has a fast kernel for the type (the
     * AVX-512 table on CPUs with VNNI and VBMI: Q2_K, Q4_K, IQ2_XXS).
     * A group of x holding a NaN or Inf makes the result NaN. */
    float (*dot_planes)(const void *w, const void *xp, int64_t n);
} v4f_quant_kernels;

/* Active kernels for type (NULL if the type is not supported). */
const v4f_quant_kernels *v4f_quant_kernels_get(uint32_t type);
/* Kernels of one ISA (NULL if that ISA is not available or has no table
 * for this type: callers fall back to generic). */
const v4f_quant_kernels *v4f_quant_kernels_isa(uint32_t type, v4f_isa isa);

/* Types the engine can compute with as weights. */
bool v4f_quant_supported(uint32_t type);

/* Activation quantizers: x[0..n) -> Q8_0 blocks (n % 32 == 0) or Q8_K
 * blocks (n % 256 == 0). dst must hold row_bytes(act_type, n). */
void v4f_quantize_act(uint32_t act_type, const float *x, void *dst, int64_t n);

/* int8-plane activations: bytes of the planes of an n-element row (n % 256
 * == 0), and the split x[0..n) -> dst (best ISA; every ISA writes the same
 * bytes as the scalar reference). dst needs no alignment. Layout in
 * quant_internal.h (v4f_planes_*). */
size_t v4f_planes_bytes(int64_t n);
void v4f_quantize_planes(const float *x, void *dst, int64_t n);
/* For tests and benchmarks: the IQ2_XXS plane dot with the grid rows read by
 * qword gathers (gather) or looked up in register tables (the AVX-512 table
 * uses the gather except on AMD CPUs); same results. NULL on CPUs without
 * the plane kernels. */
typedef float (*v4f_quant_dot_planes_fn)(const void *w, const void *xp, int64_t n);
v4f_quant_dot_planes_fn v4f_quant_iq2_planes_variant(bool gather);

/* Weight quantizers (scalar, used by synth/quantize, not on the hot path).
 * Quantize nrows rows of n_per_row floats into dst (row after row).
 * imatrix: optional per-column importance weights (n_per_row floats) used by
 * the K-quants and required-or-derived for IQ2_XXS (if NULL, IQ2_XXS uses
 * sum of squares of the column values). Returns bytes written, 0 if the type
 * cannot be quantized to or n_per_row is not a block multiple. */
size_t v4f_quantize_rows(uint32_t type, const float *src, void *dst, int64_t nrows,
                         int64_t n_per_row, const float *imatrix);
/* true if v4f_quantize_rows supports type */
bool v4f_quantize_supported(uint32_t type);

/* Convenience scalar reference dequantize (generic table). */
void v4f_dequant_row_ref(uint32_t type, const void *src, float *dst, int64_t n);

#endif /* V4F_QUANT_H */
