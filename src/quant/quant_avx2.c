/*
 * quant_avx2.c - the AVX2 + FMA + F16C kernel table and activation
 * quantizers (compiled with those -m flags; selected at run time only if
 * cpuid reports them). The kernels
 * themselves live in quant_x86.h so the AVX-512 unit can reuse the ones it
 * does not widen.
 *
 * Invariants: see quant_x86.h (bit-exact dequantization, f32 dots that
 * differ from the reference only in summation order).
 * Threading: pure functions; the filler runs once under the dispatch
 * pthread_once.
 */
#include "quant/quant_x86.h"

void v4f_quant_fill_avx2(v4f_quant_kernels *tab, v4f_quant_act_kernels *act) {
    act->q8_0 = act_q8_0_avx2;
    act->q8_K = act_q8_K_avx2;
    tab[V4F_TYPE_F32].dequant_row = dequant_f32_avx2;
    tab[V4F_TYPE_F32].dot_f32 = dot_f32_f32_avx2;
    tab[V4F_TYPE_F16].dequant_row = dequant_f16_avx2;
    tab[V4F_TYPE_F16].dot_f32 = dot_f32_f16_avx2;
    tab[V4F_TYPE_BF16].dequant_row = dequant_bf16_avx2;
    tab[V4F_TYPE_BF16].dot_f32 = dot_f32_bf16_avx2;
    tab[V4F_TYPE_Q8_0].dequant_row = dequant_q8_0_avx2;
    tab[V4F_TYPE_Q8_0].dot_f32 = dot_f32_q8_0_avx2;
    tab[V4F_TYPE_Q8_0].dot_act = dot_act_q8_0_avx2;
    tab[V4F_TYPE_Q2_K].dequant_row = dequant_q2_K_avx2;
    tab[V4F_TYPE_Q2_K].dot_f32 = dot_f32_q2_K_avx2;
    tab[V4F_TYPE_Q2_K].dot_act = dot_act_q2_K_avx2;
    tab[V4F_TYPE_Q4_K].dequant_row = dequant_q4_K_avx2;
    tab[V4F_TYPE_Q4_K].dot_f32 = dot_f32_q4_K_avx2;
    tab[V4F_TYPE_Q4_K].dot_act = dot_act_q4_K_avx2;
    tab[V4F_TYPE_IQ2_XXS].dequant_row = dequant_iq2_xxs_avx2;
    tab[V4F_TYPE_IQ2_XXS].dot_f32 = dot_f32_iq2_xxs_avx2;
    tab[V4F_TYPE_IQ2_XXS].dot_act = dot_act_iq2_xxs_avx2;
}
