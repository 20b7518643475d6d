/*
 * ops_internal.h - private declarations shared by the CPU backend files:
 * the per-ISA GEMM tile kernels (Y[t][r] = W[r] . X[t] for a float32 row
 * tile W of nr rows x K, nt activation rows). Not for use outside
 * src/backend/cpu/ and its tests.
 */
#ifndef V4F_CPU_OPS_INTERNAL_H
#define V4F_CPU_OPS_INTERNAL_H

#include <stdint.h>

typedef void (*v4f_cpu_gemm_tile_fn)(const float *W, int64_t nr, const float *X, int64_t ldx,
                                     int64_t nt, int64_t K, float *Y, int64_t ldy);

void v4f_cpu_gemm_tile_generic(const float *W, int64_t nr, const float *X, int64_t ldx, int64_t nt,
                               int64_t K, float *Y, int64_t ldy);
void v4f_cpu_gemm_tile_avx2(const float *W, int64_t nr, const float *X, int64_t ldx, int64_t nt,
                            int64_t K, float *Y, int64_t ldy);
void v4f_cpu_gemm_tile_avx512(const float *W, int64_t nr, const float *X, int64_t ldx, int64_t nt,
                              int64_t K, float *Y, int64_t ldy);
/* The AVX-512 kernel's K chunking: every output is the sum, in k order, of
 * sequential FMA chains over chunks of V4F_CPU_GEMM_KC k values starting at
 * k = 0, KC, 2 KC, ... A caller that splits K itself (to keep an X chunk in
 * L2 over many row tiles) must split at multiples of V4F_CPU_GEMM_KC and
 * pass accumulate = 1 after the first chunk (Y += the chunk's sums); the
 * results are then bit-identical to one call over the whole K. W: nr rows
 * of K floats, row stride ldw. */
#define V4F_CPU_GEMM_KC 256
typedef void (*v4f_cpu_gemm_chunk_fn)(const float *W, int64_t ldw, int64_t nr, const float *X,
                                      int64_t ldx, int64_t nt, int64_t K, float *Y, int64_t ldy,
                                      int accumulate);
void v4f_cpu_gemm_chunk_avx512(const float *W, int64_t ldw, int64_t nr, const float *X, int64_t ldx,
                               int64_t nt, int64_t K, float *Y, int64_t ldy, int accumulate);
/* xs[t][0..kc) = X[t][0..kc) for t < nt, xs rows V4F_CPU_GEMM_KC floats
 * apart (64-byte aligned) */
void v4f_cpu_gemm_pack_x_avx512(const float *X, int64_t ldx, int64_t nt, int64_t kc, float *xs);
/* the chunk kernel for this CPU, or NULL (no AVX-512: the tile kernel) */
v4f_cpu_gemm_chunk_fn v4f_cpu_gemm_chunk_get(void);

/* y[i] += a * x[i] */
typedef void (*v4f_cpu_axpy_fn)(float *y, float a, const float *x, int64_t n);
void v4f_cpu_axpy_generic(float *y, float a, const float *x, int64_t n);
void v4f_cpu_axpy_avx2(float *y, float a, const float *x, int64_t n);
void v4f_cpu_axpy_avx512(float *y, float a, const float *x, int64_t n);
v4f_cpu_axpy_fn v4f_cpu_axpy_get(void);

/* The hyper-connection mixes of ops.h (v4f_cpu_hc_weighted_sum,
 * v4f_cpu_hc_post) in one pass over the elements, one vector of each stream
 * at a time (the generic code makes H + 2 passes per output stream, ~25 us
 * for H = 4, d = 4096, serial in every decode step). Every ISA does the same
 * per-element operations in the same order (separate multiply and add, no
 * FMA), so the results are bit-identical to the generic ones. */
typedef void (*v4f_cpu_hc_wsum_fn)(const float *X, const float *w, int H, int64_t d, float *y);
typedef void (*v4f_cpu_hc_post_fn)(const float *o, const float *X, const float *post, const float *comb,
                                   int H, int64_t d, float *Xout);
void v4f_cpu_hc_weighted_sum_generic(const float *X, const float *w, int H, int64_t d, float *y);
void v4f_cpu_hc_weighted_sum_avx2(const float *X, const float *w, int H, int64_t d, float *y);
void v4f_cpu_hc_weighted_sum_avx512(const float *X, const float *w, int H, int64_t d, float *y);
void v4f_cpu_hc_post_generic(const float *o, const float *X, const float *post, const float *comb, int H,
                             int64_t d, float *Xout);
void v4f_cpu_hc_post_avx2(const float *o, const float *X, const float *post, const float *comb, int H,
                          int64_t d, float *Xout);
void v4f_cpu_hc_post_avx512(const float *o, const float *X, const float *post, const float *comb, int H,
                            int64_t d, float *Xout);

/* FMA peak probes: iters x 12 independent vector FMAs (a = a*m + c); the
 * return value only keeps the loop alive. Flops = iters * 12 * lanes * 2. */
float v4f_cpu_fma_loop_avx2(int64_t iters);   /* 8 lanes */
float v4f_cpu_fma_loop_avx512(int64_t iters); /* 16 lanes */

/* The kernel for this CPU (cpuid / V4F_ISA, chosen once). */
v4f_cpu_gemm_tile_fn v4f_cpu_gemm_tile_get(void);

#endif
