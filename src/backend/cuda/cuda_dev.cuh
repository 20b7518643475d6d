/*
 * cuda_dev.cuh - device functions shared by the op kernels (cuda_ops.cu) and
 * the fused forward-pass kernels (cuda_fwd.cu), so both compute the same
 * values in the same order as the CPU reference (backend/cpu/ops.c).
 *
 * Products and sums the CPU evaluates as separate float operations are
 * written with __fmul_rn / __fadd_rn (no FMA contraction). Block functions
 * (dev_*_row) must be called by every thread of the block.
 */
#ifndef V4F_CUDA_DEV_CUH
#define V4F_CUDA_DEV_CUH

#include <math.h>
#include <stdint.h>

#define OPS_MAX_HC 16

/* The int8-plane split of one group of 32 x values (cuda_quant.cu, "int8-
 * plane activations"), one full warp per group: lane l holds x[32 g + l]
 * and writes its three codes at byte 32 g + at of each plane (at = l, or
 * the IQ2_XXS weight order), lane 0 the group scale, lanes 0 and 16 the
 * sums of x over the group's halves, into a slot of n elements at base.
 * k_quant_x and the kernels that produce an x together with its planes
 * (k_swiglu, the decode attention's merges) share it, so the planes are the
 * same bits either way. */
__device__ __forceinline__ void dev_quant_x_group(float v, int lane, int at, uint8_t *base, int64_t n, int64_t g) {
    float amax = fabsf(v);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    const bool bad = __any_sync(0xffffffffu, !(fabsf(v) <= 3.402823466e38f));
    float d1 = amax / 127.0f;
    int q1 = 0, q2 = 0, q3 = 0;
    if (amax > 0 && !bad) {
        q1 = (int)rintf(v / d1);
        q1 = max(-127, min(127, q1));
        const float r1 = fmaf(-d1, (float)q1, v);
        const float d2 = d1 * (1.0f / 128.0f);
        q2 = max(-127, min(127, (int)rintf(r1 / d2)));
        const float r2 = fmaf(-d2, (float)q2, r1);
        const float d3 = d2 * (1.0f / 128.0f);
        q3 = max(-127, min(127, (int)rintf(r2 / d3)));
    }
    if (bad) d1 = __int_as_float(0x7fc00000);
    base[32 * g + at] = (uint8_t)(int8_t)q1;
    base[n + 32 * g + at] = (uint8_t)(int8_t)q2;
    base[2 * n + 32 * g + at] = (uint8_t)(int8_t)q3;
    float *d = (float *)(base + 3 * n);
    float *s16 = d + n / 32;
    if (lane == 0) d[g] = d1;
    float sum = v;
#pragma unroll
    for (int o = 8; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if ((lane & 15) == 0) s16[2 * g + (lane >> 4)] = sum;
}

/* Order-preserving map float -> uint32 (larger float, larger key); -0 is
 * +0 (top-k selection, the router's argmax). */
__device__ __forceinline__ uint32_t dev_order_key(float f) {
    uint32_t u = __float_as_uint(f == 0.0f ? 0.0f : f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float sigmoid_ref(float x) {
    return __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-x)));
}

/* ceil(log2(v)) from the float's bits (kernel.py fast_log2_ceil). */
__device__ __forceinline__ int fast_log2_ceil_d(float v) {
    const uint32_t b = __float_as_uint(v);
    const int e = (int)((b >> 23) & 0xFF);
    return e - 127 + ((b & 0x7FFFFF) != 0 ? 1 : 0);
}

/* Nearest E4M3FN value of v (|v| <= 448 after clamping), ties to even. */
__device__ __forceinline__ float e4m3_round_d(float v) {
    float a = fabsf(v);
    if (a > 448.0f) a = 448.0f;
    float step;
    if (a < 0x1p-6f) {
        step = 0x1p-9f;
    } else {
        int ex;
        frexpf(a, &ex);
        step = ldexpf(1.0f, ex - 1 - 3);
    }
    const float r = __fmul_rn(rintf(__fdiv_rn(a, step)), step);
    return signbit(v) ? -r : r;
}

__device__ __forceinline__ float e2m1_round_d(float v) {
    float a = fabsf(v);
    if (a > 6.0f) a = 6.0f;
    const float step = a < 2.0f ? 0.5f : a < 4.0f ? 1.0f : 2.0f;
    const float r = __fmul_rn(rintf(__fdiv_rn(a, step)), step);
    return signbit(v) ? -r : r;
}

/* FP4 round-trip of one 32-block held one element per lane (lane < bn). */
__device__ __forceinline__ float fp4_warp_block(float v, int lane, int64_t bn) {
    float amax = warp_max(lane < bn ? fabsf(v) : 0.0f);
    amax = fmaxf(amax, 6.0f * 0x1p-126f);
    const int e = fast_log2_ceil_d(__fmul_rn(amax, 1.0f / 6.0f));
    const float s = ldexpf(1.0f, e), inv = ldexpf(1.0f, -e);
    const float q = fminf(fmaxf(__fmul_rn(v, inv), -6.0f), 6.0f);
    return __fmul_rn(e2m1_round_d(q), s);
}

/* FP8 E4M3 round-trip of one block of bn <= 64 floats at xb, one warp:
 * lane handles elements lane and lane + 32 (power-of-two block scale). */
__device__ __forceinline__ void dev_fp8_block64(float *xb, int64_t bn, int lane) {
    const float v0 = lane < bn ? xb[lane] : 0.0f;
    const float v1 = lane + 32 < bn ? xb[lane + 32] : 0.0f;
    float amax = warp_max(fmaxf(fabsf(v0), fabsf(v1)));
    amax = fmaxf(amax, 1e-4f);
    const int e = fast_log2_ceil_d(__fmul_rn(amax, 1.0f / 448.0f));
    const float s = ldexpf(1.0f, e), inv = ldexpf(1.0f, -e);
    if (lane < bn) {
        const float v = fminf(fmaxf(__fmul_rn(v0, inv), -448.0f), 448.0f);
        xb[lane] = __fmul_rn(e4m3_round_d(v), s);
    }
    if (lane + 32 < bn) {
        const float v = fminf(fmaxf(__fmul_rn(v1, inv), -448.0f), 448.0f);
        xb[lane + 32] = __fmul_rn(e4m3_round_d(v), s);
    }
}

/* RoPE, as the CPU: cos/sin in double of the float angle p * freq, float
 * products without contraction.
 * cos and sin of the angle p * freq */
__device__ __forceinline__ void dev_rope_cs(float freq, int64_t p, float *cs, float *sn) {
    const float theta = __fmul_rn((float)p, freq);
    *cs = (float)cos((double)theta);
    *sn = (float)sin((double)theta);
}
/* (a, b) rotated by the angle of (cs, sn) */
__device__ __forceinline__ void dev_rope_apply(float *a, float *b, float cs, float sn) {
    const float x = *a, y = *b;
    *a = __fsub_rn(__fmul_rn(x, cs), __fmul_rn(y, sn));
    *b = __fadd_rn(__fmul_rn(x, sn), __fmul_rn(y, cs));
}
/* One RoPE pair (a, b) rotated by p * freq (inverse: the other way). */
__device__ __forceinline__ void dev_rope_rot(float *a, float *b, float freq, int64_t p, int inverse) {
    float cs, sn;
    dev_rope_cs(freq, p, &cs, &sn);
    dev_rope_apply(a, b, cs, inverse ? -sn : sn);
}
/* Pair i of a tail (the last n_rot dims of a head) at position p. */
__device__ __forceinline__ void dev_rope_pair(float *tail, int i, const float *freqs, int64_t p, int inverse) {
    dev_rope_rot(tail + 2 * i, tail + 2 * i + 1, freqs[i], p, inverse);
}

/* RMSNorm's float scale of a row of n from its double sum of squares */
__device__ __forceinline__ float dev_rms_scale(double ss, int64_t n, float eps) {
    return (float)(1.0 / sqrt(ss / (double)n + (double)eps));
}

/* yr = RMSNorm(xr) * w (w may be NULL; yr may equal xr) for one row of n,
 * one block: sum of squares in double, then the CPU's float scaling. part:
 * shared, blockDim.x / 32 doubles. */
__device__ __forceinline__ void dev_rmsnorm_row(const float *xr, const float *w, float *yr, int64_t n, float eps,
                                                double *part) {
    double ss = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const double v = (double)xr[i];
        ss += v * v;
    }
    ss = warp_sum_d(ss);
    __syncthreads(); /* part may be reused by consecutive calls */
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ss;
    __syncthreads();
    double tot = 0;
    for (int i = 0; i < (int)(blockDim.x >> 5); i++) tot += part[i];
    const float r = dev_rms_scale(tot, n, eps);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = __fmul_rn(xr[i], r);
        yr[i] = w ? __fmul_rn(w[i], v) : v;
    }
}

/* An HC pre (or head) weight from its scaled mixer output m:
 * sigmoid(m * s0 + base) + eps, in the CPU's operation order. */
__device__ __forceinline__ float dev_hc_pre_weight(float m, float s0, float base, float eps) {
    return __fadd_rn(sigmoid_ref(__fadd_rn(__fmul_rn(m, s0), base)), eps);
}

/* HC split + Sinkhorn of one token, one warp: m = the token's (2 + H) * H
 * mixer outputs; pre/post[lane] for lane < H, the H x H comb in C (shared).
 * Row passes run one lane per row, column passes one lane per column, each
 * summing in the CPU's order. */
__device__ __forceinline__ void dev_hc_sinkhorn_warp(const float *m, const float *scale3, const float *base, int H,
                                                     int iters, float eps, int lane, float *C, float *pre,
                                                     float *post) {
    const float s0 = scale3[0], s1 = scale3[1], s2 = scale3[2];
    if (lane < H) {
        pre[lane] = dev_hc_pre_weight(m[lane], s0, base[lane], eps);
        post[lane] = __fmul_rn(2.0f, sigmoid_ref(__fadd_rn(__fmul_rn(m[H + lane], s1), base[H + lane])));
    }
    if (H * H <= 32) {
        /* register form: lane i*H + j holds C[i][j]; every sum reads the
         * other lanes' values through shuffles in the same order as below
         * (bit-identical), without the shared-memory round trips */
        const unsigned full = 0xffffffffu;
        const int i = lane / H, j = lane % H;
        const bool act = lane < H * H;
        float c = act ? __fadd_rn(__fmul_rn(m[2 * H + lane], s2), base[2 * H + lane]) : 0.0f;
        float mx = -INFINITY;
        for (int k = 0; k < H; k++) mx = fmaxf(mx, __shfl_sync(full, c, (i * H + k) & 31));
        const float e = expf(__fsub_rn(c, mx));
        float s = 0;
        for (int k = 0; k < H; k++) s = __fadd_rn(s, __shfl_sync(full, e, (i * H + k) & 31));
        c = __fadd_rn(__fdiv_rn(e, s), eps);
        for (int it = 0; it < iters; it++) {
            if (it > 0) {
                float rs = 0;
                for (int k = 0; k < H; k++) rs = __fadd_rn(rs, __shfl_sync(full, c, (i * H + k) & 31));
                c = __fdiv_rn(c, __fadd_rn(rs, eps));
            }
            float cs = 0;
            for (int r = 0; r < H; r++) cs = __fadd_rn(cs, __shfl_sync(full, c, (r * H + j) & 31));
            c = __fdiv_rn(c, __fadd_rn(cs, eps));
        }
        if (act) C[lane] = c;
        __syncwarp();
        return;
    }
    for (int j = lane; j < H * H; j += 32) C[j] = __fadd_rn(__fmul_rn(m[2 * H + j], s2), base[2 * H + j]);
    __syncwarp();
    if (lane < H) { /* row softmax + eps */
        float *row = C + lane * H;
        float mx = -INFINITY;
        for (int k = 0; k < H; k++) mx = fmaxf(mx, row[k]);
        float s = 0;
        for (int k = 0; k < H; k++) {
            row[k] = expf(__fsub_rn(row[k], mx));
            s = __fadd_rn(s, row[k]);
        }
        for (int k = 0; k < H; k++) row[k] = __fadd_rn(__fdiv_rn(row[k], s), eps);
    }
    __syncwarp();
    for (int it = 0; it < iters; it++) {
        if (it > 0) {
            if (lane < H) {
                float *row = C + lane * H;
                float s = 0;
                for (int k = 0; k < H; k++) s = __fadd_rn(s, row[k]);
                const float d = __fadd_rn(s, eps);
                for (int k = 0; k < H; k++) row[k] = __fdiv_rn(row[k], d);
            }
            __syncwarp();
        }
        if (lane < H) {
            float s = 0;
            for (int j = 0; j < H; j++) s = __fadd_rn(s, C[j * H + lane]);
            const float d = __fadd_rn(s, eps);
            for (int j = 0; j < H; j++) C[j * H + lane] = __fdiv_rn(C[j * H + lane], d);
        }
        __syncwarp();
    }
}

/* Scaled Walsh-Hadamard transform of one row of n (a power of two) in the
 * CPU's butterfly order (stride 1, 2, 4, ...), then optionally the FP4
 * round-trip per 32-block; one block, the row staged in hs (shared, n
 * floats). xr is read and written in place. */
__device__ __forceinline__ void dev_hadamard_fp4_row(float *xr, float *hs, int n, float scale, int fp4) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) hs[i] = xr[i];
    __syncthreads();
    for (int h = 1; h < n; h *= 2) {
        for (int p = threadIdx.x; p < n / 2; p += blockDim.x) {
            const int j = (p / h) * 2 * h + (p % h);
            const float a = hs[j], b = hs[j + h];
            hs[j] = __fadd_rn(a, b);
            hs[j + h] = __fsub_rn(a, b);
        }
        __syncthreads();
    }
    for (int i = threadIdx.x; i < n; i += blockDim.x) hs[i] = __fmul_rn(hs[i], scale);
    __syncthreads();
    if (!fp4) {
        for (int i = threadIdx.x; i < n; i += blockDim.x) xr[i] = hs[i];
        __syncthreads();
        return;
    }
    const int lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    for (int b = (threadIdx.x >> 5) * 32; b < n; b += nw * 32) { /* n is a power of two: no short block beyond 32 */
        const int bn = n - b < 32 ? n - b : 32;
        const float v = lane < bn ? hs[b + lane] : 0.0f;
        const float o = fp4_warp_block(v, lane, bn);
        if (lane < bn) xr[b + lane] = o;
    }
    __syncthreads();
}

#endif /* V4F_CUDA_DEV_CUH */
