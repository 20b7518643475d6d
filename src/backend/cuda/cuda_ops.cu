/*
 * cuda_ops.cu - the row-wise and per-token model ops of the CUDA backend:
 * RMSNorm, RoPE tail, FP8 E4M3 and Hadamard+FP4 E2M1 round-trips and
 * storage codes (encode/decode),
 * hyper-connection split/Sinkhorn, weighted sum, post and head weights,
 * router, SwiGLU and compressor pooling (API in cuda_backend.h; attention,
 * indexer scores and top-k are in cuda_attn.cu).
 *
 * Invariants: each kernel mirrors the CPU reference (backend/cpu/ops.c) in
 * its order of operations; products and sums that the CPU evaluates as
 * separate float operations are written with __fmul_rn / __fadd_rn so nvcc
 * cannot contract them into FMAs. Then the ops without transcendentals
 * (weighted sum, post, FP8/FP4 round-trips, Hadamard) are bit-exact, and
 * the others differ only through expf/log1pf ulps (CUDA's are within 2 ulp).
 * RMSNorm sums squares in double like the CPU.
 *
 * Memory ownership: no allocation; all buffers are the caller's device
 * memory. Threading/streams: every launcher runs on the context's stream,
 * asynchronously, from the context's owner thread.
 */
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_dev.cuh"

#include <math.h>


static inline unsigned grid1(int64_t n, int threads) { return (unsigned)((n + threads - 1) / threads); }

#define ARG_CHECK(cond, ...)                                                                  \
    do {                                                                                      \
        if (!(cond)) return v4f_err_set(err, V4F_STATUS_INVALID_ARG, __VA_ARGS__);            \
    } while (0)

/* ---- RMSNorm -------------------------------------------------------------------- */

#define RMS_THREADS 256

/* One block per row (dev_rmsnorm_row). */
__global__ void k_rmsnorm(const float *__restrict__ x, const float *__restrict__ w, float *y, int64_t n,
                          float eps) {
    V4F_PDL_ENTRY();
    __shared__ double part[RMS_THREADS / 32];
    dev_rmsnorm_row(x + (int64_t)blockIdx.x * n, w, y + (int64_t)blockIdx.x * n, n, eps, part);
}

extern "C" v4f_status v4f_cuda_rmsnorm(v4f_cuda *c, const float *x, const float *w, float *y, int64_t n_rows,
                                       int64_t n, float eps, v4f_err *err) {
    ARG_CHECK(n_rows >= 0 && n > 0 && n_rows <= 0x7fffffff, "cuda rmsnorm: bad shape %lld x %lld",
              (long long)n_rows, (long long)n);
    if (n_rows == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    v4f_launch(k_rmsnorm, (unsigned)n_rows, RMS_THREADS, 0, c->stream, x, w, y, n, eps);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

/* ---- RoPE tail -------------------------------------------------------------------- */

/* One thread per (token, head, pair) (dev_rope_pair). */
__global__ void k_rope_tail(float *x, int64_t n_tok, int64_t n_head, int64_t head_dim, int n_rot,
                            const float *__restrict__ freqs, const int32_t *__restrict__ pos, int64_t pos0,
                            int64_t pos_step, int inverse) {
    V4F_PDL_ENTRY();
    const int half = n_rot / 2;
    const int64_t gid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (gid >= n_tok * n_head * half) return;
    const int i = (int)(gid % half);
    const int64_t th = gid / half; /* token * n_head + head */
    const int64_t t = th / n_head;
    const int64_t p = pos ? (int64_t)pos[t] : pos0 + t * pos_step;
    dev_rope_pair(x + th * head_dim + head_dim - n_rot, i, freqs, p, inverse);
}

extern "C" v4f_status v4f_cuda_rope_tail(v4f_cuda *c, float *x, int64_t n_tok, int64_t n_head, int64_t head_dim,
                                         int n_rot, const float *freqs, const int32_t *pos, int64_t pos0,
                                         int64_t pos_step, bool inverse, v4f_err *err) {
    ARG_CHECK(n_tok >= 0 && n_head > 0 && n_rot > 0 && n_rot % 2 == 0 && n_rot <= head_dim,
              "cuda rope: bad shape n_tok %lld n_head %lld head_dim %lld n_rot %d", (long long)n_tok,
              (long long)n_head, (long long)head_dim, n_rot);
    const int64_t n = n_tok * n_head * (n_rot / 2);
    if (n == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    v4f_launch(k_rope_tail, grid1(n, 256), 256, 0, c->stream, x, n_tok, n_head, head_dim, n_rot, freqs, pos, pos0, pos_step,
                                                      inverse ? 1 : 0);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

/* ---- FP8 E4M3 round-trip ------------------------------------------------------------ */

/* One warp per 64-block (dev_fp8_block64). */
__global__ void k_fp8_roundtrip(float *x, int64_t n_rows, int64_t row_stride, int64_t n, int64_t n_blk) {
    V4F_PDL_ENTRY();
    const int64_t wid = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (wid >= n_rows * n_blk) return; /* whole warp exits together */
    const int64_t r = wid / n_blk, b = (wid % n_blk) * 64;
    const int64_t bn = n - b < 64 ? n - b : 64;
    dev_fp8_block64(x + r * row_stride + b, bn, lane);
}

extern "C" v4f_status v4f_cuda_fp8_roundtrip(v4f_cuda *c, float *x, int64_t n_rows, int64_t row_stride, int64_t n,
                                             v4f_err *err) {
    ARG_CHECK(n_rows >= 0 && n >= 0 && (n_rows <= 1 || row_stride >= n), "cuda fp8: bad shape");
    const int64_t n_blk = (n + 63) / 64;
    if (n_rows == 0 || n_blk == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    v4f_launch(k_fp8_roundtrip, grid1(n_rows * n_blk * 32, 256), 256, 0, c->stream, x, n_rows, row_stride, n, n_blk);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

/* ---- FP8 / FP4 storage codes -------------------------------------------------------- */

/* E4M3FN byte of an already rounded value r (|r| <= 448), as ops.c fp8_code. */
__device__ __forceinline__ uint8_t e4m3_code_d(float r) {
    const uint8_t s = signbit(r) ? 0x80 : 0;
    const float a = fabsf(r);
    if (a < 0x1p-6f) return (uint8_t)(s | (uint8_t)__fmul_rn(a, 512.0f));
    int ex;
    const float m = frexpf(a, &ex);
    const int mant = (int)__fmul_rn(__fsub_rn(__fmul_rn(m, 2.0f), 1.0f), 8.0f);
    return (uint8_t)(s | ((ex + 6) << 3) | mant);
}

__device__ __forceinline__ float e4m3_value_d(uint8_t code) {
    const int e = (code >> 3) & 15, m = code & 7;
    const float a = e == 0 ? ldexpf((float)m, -9) : ldexpf(1.0f + (float)m / 8.0f, e - 7);
    return (code & 0x80) ? -a : a;
}

/* One warp per 64-block (elements lane, lane + 32). */
__global__ void k_fp8_encode(const float *__restrict__ x, int64_t n_rows, int64_t row_stride, int64_t n_blk,
                             uint8_t *codes, int64_t code_stride, int8_t *exps) {
    V4F_PDL_ENTRY();
    const int64_t wid = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (wid >= n_rows * n_blk) return;
    const int64_t r = wid / n_blk, b = wid % n_blk;
    const float *xb = x + r * row_stride + b * 64;
    const float v0 = xb[lane], v1 = xb[lane + 32];
    const float amax = fmaxf(warp_max(fmaxf(fabsf(v0), fabsf(v1))), 1e-4f);
    const int e = fast_log2_ceil_d(__fmul_rn(amax, 1.0f / 448.0f));
    const float inv = ldexpf(1.0f, -e);
    uint8_t *cb = codes + r * code_stride + b * 64;
    cb[lane] = e4m3_code_d(e4m3_round_d(fminf(fmaxf(__fmul_rn(v0, inv), -448.0f), 448.0f)));
    cb[lane + 32] = e4m3_code_d(e4m3_round_d(fminf(fmaxf(__fmul_rn(v1, inv), -448.0f), 448.0f)));
    if (lane == 0) exps[wid] = (int8_t)e;
}

__global__ void k_fp8_decode(const uint8_t *__restrict__ codes, int64_t code_stride, const int8_t *__restrict__ exps,
                             int64_t n_rows, int64_t n, float *y, int64_t row_stride) {
    V4F_PDL_ENTRY();
    const int64_t gid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (gid >= n_rows * n) return;
    const int64_t r = gid / n, i = gid % n;
    const float s = ldexpf(1.0f, exps[r * (n / 64) + i / 64]);
    y[r * row_stride + i] = __fmul_rn(e4m3_value_d(codes[r * code_stride + i]), s);
}

extern "C" v4f_status v4f_cuda_fp8_encode(v4f_cuda *c, const float *x, int64_t n_rows, int64_t row_stride,
                                          int64_t n, uint8_t *codes, int64_t code_stride, int8_t *exps,
                                          v4f_err *err) {
    ARG_CHECK(n_rows >= 0 && n >= 0 && n % 64 == 0 && (n_rows <= 1 || (row_stride >= n && code_stride >= n)),
              "cuda fp8 encode: bad shape (n %lld must be a multiple of 64)", (long long)n);
    const int64_t n_blk = n / 64;
    if (n_rows == 0 || n_blk == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    v4f_launch(k_fp8_encode, grid1(n_rows * n_blk * 32, 256), 256, 0, c->stream, x, n_rows, row_stride, n_blk, codes,
                                                                         code_stride, exps);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

extern "C" v4f_status v4f_cuda_fp8_decode(v4f_cuda *c, const uint8_t *codes, int64_t code_stride, const int8_t *exps,
                                          int64_t n_rows, int64_t n, float *y, int64_t row_stride, v4f_err *err) {
    ARG_CHECK(n_rows >= 0 && n >= 0 && n % 64 == 0 && (n_rows <= 1 || (row_stride >= n && code_stride >= n)),
              "cuda fp8 decode: bad shape (n %lld must be a multiple of 64)", (long long)n);
    if (n_rows * n == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    v4f_launch(k_fp8_decode, grid1(n_rows * n, 256), 256, 0, c->stream, codes, code_stride, exps, n_rows, n, y, row_stride);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

__device__ __forceinline__ float e2m1_value_d(unsigned c) {
    const unsigned m = c & 7;
    const float a = m < 4 ? 0.5f * (float)m : m == 4 ? 2.0f : m == 5 ? 3.0f : m == 6 ? 4.0f : 6.0f;
    return (c & 8) ? -a : a;
}

__device__ __forceinline__ unsigned e2m1_code_d(float r) { /* r already an E2M1 value */
    const unsigned s = signbit(r) ? 8u : 0u;
    const float a = fabsf(r);
    const unsigned m = a < 2.0f ? (unsigned)__fmul_rn(a, 2.0f) : a == 2.0f ? 4u : a == 3.0f ? 5u : a == 4.0f ? 6u : 7u;
    return s | m;
}

/* One warp per 32-block: lane i encodes element i; even lanes pack a byte. */
__global__ void k_fp4_encode(const float *__restrict__ x, int64_t n_rows, int64_t row_stride, int64_t n_blk,
                             uint8_t *codes, int64_t code_stride, int8_t *exps) {
    V4F_PDL_ENTRY();
    const int64_t wid = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (wid >= n_rows * n_blk) return;
    const int64_t r = wid / n_blk, b = wid % n_blk;
    const float v = x[r * row_stride + b * 32 + lane];
    const float amax = fmaxf(warp_max(fabsf(v)), 6.0f * 0x1p-126f);
    const int e = fast_log2_ceil_d(__fmul_rn(amax, 1.0f / 6.0f));
    const unsigned code = e2m1_code_d(e2m1_round_d(__fmul_rn(v, ldexpf(1.0f, -e))));
    const unsigned hi = __shfl_down_sync(0xffffffffu, code, 1);
    if ((lane & 1) == 0) codes[r * code_stride + b * 16 + lane / 2] = (uint8_t)(code | (hi << 4));
    if (lane == 0) exps[wid] = (int8_t)e;
}

__global__ void k_fp4_decode(const uint8_t *__restrict__ codes, int64_t code_stride, const int8_t *__restrict__ exps,
                             int64_t n_rows, int64_t n, float *y, int64_t row_stride) {
    V4F_PDL_ENTRY();
    const int64_t gid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (gid >= n_rows * n) return;
    const int64_t r = gid / n, i = gid % n;
    const float s = ldexpf(1.0f, exps[r * (n / 32) + i / 32]);
    const unsigned c4 = (codes[r * code_stride + (i / 32) * 16 + (i % 32) / 2] >> (4 * (i & 1))) & 15u;
    y[r * row_stride + i] = __fmul_rn(e2m1_value_d(c4), s);
}

extern "C" v4f_status v4f_cuda_fp4_encode(v4f_cuda *c, const float *x, int64_t n_rows, int64_t row_stride,
                                          int64_t n, uint8_t *codes, int64_t code_stride, int8_t *exps,
                                          v4f_err *err) {
    ARG_CHECK(n_rows >= 0 && n >= 0 && n % 32 == 0 && (n_rows <= 1 || (row_stride >= n && code_stride >= n / 2)),
              "cuda fp4 encode: bad shape (n %lld must be a multiple of 32)", (long long)n);
    const int64_t n_blk = n / 32;
    if (n_rows == 0 || n_blk == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    v4f_launch(k_fp4_encode, grid1(n_rows * n_blk * 32, 256), 256, 0, c->stream, x, n_rows, row_stride, n_blk, codes,
                                                                         code_stride, exps);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

extern "C" v4f_status v4f_cuda_fp4_decode(v4f_cuda *c, const uint8_t *codes, int64_t code_stride, const int8_t *exps,
                                          int64_t n_rows, int64_t n, float *y, int64_t row_stride, v4f_err *err) {
    ARG_CHECK(n_rows >= 0 && n >= 0 && n % 32 == 0 && (n_rows <= 1 || (row_stride >= n && code_stride >= n / 2)),
              "cuda fp4 decode: bad shape (n %lld must be a multiple of 32)", (long long)n);
    if (n_rows * n == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    v4f_launch(k_fp4_decode, grid1(n_rows * n, 256), 256, 0, c->stream, codes, code_stride, exps, n_rows, n, y, row_stride);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

/* ---- Hadamard + FP4 E2M1 round-trip ---------------------------------------------------- */

__global__ void k_fp4_roundtrip(float *x, int64_t n_rows, int64_t row_stride, int64_t n, int64_t n_blk) {
    V4F_PDL_ENTRY();
    const int64_t wid = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (wid >= n_rows * n_blk) return;
    const int64_t r = wid / n_blk, b = (wid % n_blk) * 32;
    const int64_t bn = n - b < 32 ? n - b : 32;
    float *xb = x + r * row_stride + b;
    const float v = lane < bn ? xb[lane] : 0.0f;
    const float o = fp4_warp_block(v, lane, bn);
    if (lane < bn) xb[lane] = o;
}

/* One block per row (dev_hadamard_fp4_row). */
__global__ void k_hadamard(float *x, int64_t row_stride, int n, float scale, int fp4) {
    V4F_PDL_ENTRY();
    extern __shared__ float hs[];
    dev_hadamard_fp4_row(x + (int64_t)blockIdx.x * row_stride, hs, n, scale, fp4);
}

extern "C" v4f_status v4f_cuda_hadamard_fp4(v4f_cuda *c, float *x, int64_t n_rows, int64_t row_stride, int64_t n,
                                            bool hadamard, bool fp4, v4f_err *err) {
    ARG_CHECK(n_rows >= 0 && n >= 0 && (n_rows <= 1 || row_stride >= n), "cuda hadamard/fp4: bad shape");
    if (n_rows == 0 || n == 0 || (!hadamard && !fp4)) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    if (hadamard) {
        ARG_CHECK(n <= 4096 && (n & (n - 1)) == 0 && n_rows <= 0x7fffffff,
                  "cuda hadamard: n %lld is not a power of two <= 4096", (long long)n);
        const float scale = (float)(1.0 / sqrt((double)n));
        const int threads = n >= 256 ? 128 : 32;
        v4f_launch(k_hadamard, (unsigned)n_rows, threads, (size_t)n * sizeof(float), c->stream, x, row_stride, (int)n, scale,
                                                                                        fp4 ? 1 : 0);
    } else {
        const int64_t n_blk = (n + 31) / 32;
        v4f_launch(k_fp4_roundtrip, grid1(n_rows * n_blk * 32, 256), 256, 0, c->stream, x, n_rows, row_stride, n, n_blk);
    }
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

/* ---- hyper-connections -------------------------------------------------------------- */

#define HC_WARPS 4

/* One warp per token (dev_hc_sinkhorn_warp). */
__global__ void k_hc_split_sinkhorn(const float *__restrict__ mix, const float *__restrict__ scale3,
                                    const float *__restrict__ base, int64_t n_tok, int H, int iters, float eps,
                                    float *pre, float *post, float *comb) {
    V4F_PDL_ENTRY();
    __shared__ float cm[HC_WARPS][OPS_MAX_HC * OPS_MAX_HC];
    const int wl = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t t = (int64_t)blockIdx.x * HC_WARPS + wl;
    if (t >= n_tok) return;
    float *C = cm[wl];
    dev_hc_sinkhorn_warp(mix + t * (int64_t)(2 + H) * H, scale3, base, H, iters, eps, lane, C, pre + t * H,
                         post + t * H);
    for (int j = lane; j < H * H; j += 32) comb[t * H * H + j] = C[j];
}

extern "C" v4f_status v4f_cuda_hc_split_sinkhorn(v4f_cuda *c, const float *mix, const float *scale3,
                                                 const float *base, int64_t n_tok, int n_hc, int iters, float eps,
                                                 float *pre, float *post, float *comb, v4f_err *err) {
    ARG_CHECK(n_tok >= 0 && n_hc > 0 && n_hc <= OPS_MAX_HC && iters >= 1, "cuda hc split: bad n_hc %d / iters %d",
              n_hc, iters);
    if (n_tok == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    v4f_launch(k_hc_split_sinkhorn, grid1(n_tok, HC_WARPS), HC_WARPS * 32, 0, c->stream, mix, scale3, base, n_tok, n_hc,
                                                                                 iters, eps, pre, post, comb);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

__global__ void k_hc_weighted_sum(const float *__restrict__ X, const float *__restrict__ w, int64_t n_tok, int H,
                                  int64_t d, float *y) {
    V4F_PDL_ENTRY();
    const int64_t gid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (gid >= n_tok * d) return;
    const int64_t t = gid / d, i = gid % d;
    const float *xt = X + t * H * d + i;
    const float *wt = w + t * H;
    float s = 0;
    for (int h = 0; h < H; h++) s = __fadd_rn(s, __fmul_rn(wt[h], xt[h * d]));
    y[gid] = s;
}

extern "C" v4f_status v4f_cuda_hc_weighted_sum(v4f_cuda *c, const float *X, const float *w, int64_t n_tok, int n_hc,
                                               int64_t d, float *y, v4f_err *err) {
    ARG_CHECK(n_tok >= 0 && n_hc > 0 && d >= 0, "cuda hc weighted sum: bad shape");
    if (n_tok * d == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    v4f_launch(k_hc_weighted_sum, grid1(n_tok * d, 256), 256, 0, c->stream, X, w, n_tok, n_hc, d, y);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

/* One thread per (token, element i) computes the H new streams of i: the H
 * inputs and o are loaded once (one thread per output loaded each of them H
 * times and spent most of its time in 64-bit index divisions: 0.72 ms per
 * 4,096-token chunk on an H100). Same operations in the same order. */
__global__ void k_hc_post(const float *__restrict__ o, const float *__restrict__ X, const float *__restrict__ post,
                          const float *__restrict__ comb, int H, int64_t d, float *Xout) {
    V4F_PDL_ENTRY();
    __shared__ float cs[OPS_MAX_HC * OPS_MAX_HC], ps[OPS_MAX_HC];
    const int64_t t = blockIdx.y;
    if ((int)threadIdx.x < H * H) cs[threadIdx.x] = comb[t * H * H + threadIdx.x];
    if ((int)threadIdx.x < H) ps[threadIdx.x] = post[t * H + threadIdx.x];
    __syncthreads();
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= d) return;
    const float *xt = X + t * H * d + i;
    float xv[OPS_MAX_HC];
#pragma unroll
    for (int k = 0; k < OPS_MAX_HC; k++) xv[k] = k < H ? xt[k * d] : 0.0f;
    const float ov = o[t * d + i];
    for (int j = 0; j < H; j++) {
        float s = 0;
#pragma unroll
        for (int k = 0; k < OPS_MAX_HC; k++)
            if (k < H) s = __fadd_rn(s, __fmul_rn(cs[k * H + j], xv[k]));
        Xout[(t * H + j) * d + i] = __fadd_rn(__fmul_rn(ps[j], ov), s);
    }
}

extern "C" v4f_status v4f_cuda_hc_post(v4f_cuda *c, const float *o, const float *X, const float *post,
                                       const float *comb, int64_t n_tok, int n_hc, int64_t d, float *Xout,
                                       v4f_err *err) {
    ARG_CHECK(n_tok >= 0 && n_tok <= 65535 && n_hc > 0 && n_hc <= OPS_MAX_HC && d >= 0, "cuda hc post: bad shape");
    if (n_tok * d == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    v4f_launch(k_hc_post, dim3(grid1(d, 256), (unsigned)n_tok), 256, 0, c->stream, o, X, post, comb, n_hc, d, Xout);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

__global__ void k_hc_head_weights(const float *__restrict__ mix, const float *__restrict__ scale,
                                  const float *__restrict__ base, int64_t n_tok, int H, float eps, float *w) {
    V4F_PDL_ENTRY();
    const int64_t gid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (gid >= n_tok * H) return;
    const int h = (int)(gid % H);
    w[gid] = dev_hc_pre_weight(mix[gid], scale[0], base[h], eps);
}

extern "C" v4f_status v4f_cuda_hc_head_weights(v4f_cuda *c, const float *mix, const float *scale, const float *base,
                                               int64_t n_tok, int n_hc, float eps, float *w, v4f_err *err) {
    ARG_CHECK(n_tok >= 0 && n_hc > 0, "cuda hc head: bad shape");
    if (n_tok == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    v4f_launch(k_hc_head_weights, grid1(n_tok * n_hc, 128), 128, 0, c->stream, mix, scale, base, n_tok, n_hc, eps, w);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

/* ---- router ---------------------------------------------------------------------------- */

#define ROUTER_MAX_EXPERT 4096
#define ROUTER_MAX_K 64

/* The routing weights of one token from its chosen experts' scores s_w[0..k)
 * (shared memory, visible to all after the caller's barrier): the first
 * thread sums them in selection order, as the CPU; then, normalised (norm)
 * and scaled, thread i of n writes weights i, i + n, ... CTA: the block's
 * threads (else one warp). */
template <bool CTA>
__device__ __forceinline__ void router_weights(const float *s_w, float *s_sum, int k, int norm, float scale, float *wt,
                                               int i0, int n) {
    if (i0 == 0) {
        float sum = 0;
        for (int i = 0; i < k; i++) sum = __fadd_rn(sum, s_w[i]);
        *s_sum = sum;
    }
    if constexpr (CTA) __syncthreads();
    else __syncwarp();
    for (int i = i0; i < k; i += n) {
        float v = s_w[i];
        if (norm) v = __fdiv_rn(v, *s_sum);
        wt[i] = __fmul_rn(v, scale);
    }
}

__device__ __forceinline__ float router_score(float l) {
    return sqrtf(l > 20.0f ? l : log1pf(expf(l)));
}

/* The routed experts' x split into int8 planes by extra CTAs of the router's
 * launch (v4f_cuda_router_planes): CTAs n_tok.. of the grid take a group of
 * 32 elements per warp, in the natural order, with the split's own device
 * function, so the planes are k_quant_x's bits. They run beside the routing
 * CTAs, so the routed gate/up matvec needs no split launch of its own on the
 * decode chain. x NULL: none. */
typedef struct router_split {
    const float *x; /* [n_tok][n_in] */
    uint8_t *q;     /* row t at q + t row_bytes */
    int64_t n_in;
    uint64_t row_bytes;
    int64_t n_tok; /* routing CTAs: blockIdx.x < n_tok */
} router_split;

__device__ __forceinline__ void router_split_group(const router_split &s) {
    const int64_t groups = s.n_in / 32;
    const int64_t gid = (blockIdx.x - s.n_tok) * (int64_t)(blockDim.x >> 5) + (threadIdx.x >> 5);
    if (gid >= s.n_tok * groups) return; /* uniform over the warp */
    const int64_t t = gid / groups, g = gid - t * groups;
    const int lane = threadIdx.x & 31;
    dev_quant_x_group(s.x[t * s.n_in + 32 * g + lane], lane, lane, s.q + t * s.row_bytes, s.n_in, g);
}

/* One warp per token: hash routing (the experts come from tid2eid; their
 * scores are read in parallel), and learned routing past RT_WARPS x 32
 * experts (k_router_wide takes the published 256): k rounds of a warp argmax
 * (value desc, index asc) over the unchosen experts, whose selection values
 * (score + bias), scores and chosen flags live in shared memory. The chosen
 * experts' scores are kept in shared memory as they are picked; lane 0 sums
 * them in selection order, as the CPU. */
__global__ void k_router(const float *__restrict__ logits, const float *__restrict__ bias, int64_t n_expert, int k,
                         const int32_t *__restrict__ tid2eid, const int32_t *__restrict__ tokens, int norm,
                         float scale, int32_t *ids, float *w, const __grid_constant__ router_split sp) {
    V4F_PDL_ENTRY();
    if (blockIdx.x >= sp.n_tok) return router_split_group(sp); /* uniform over the CTA */
    extern __shared__ float rs[]; /* learned: [n_expert] selection values, [n_expert] scores, [n_expert] chosen flags */
    __shared__ float s_w[ROUTER_MAX_K];
    __shared__ float s_sum;
    const int64_t t = blockIdx.x;
    const int lane = threadIdx.x;
    const float *lg = logits + t * n_expert;
    int32_t *id = ids + t * k;
    float *wt = w + t * k;
    if (tid2eid) {
        for (int i = lane; i < k; i += 32) {
            const int32_t e = tid2eid[(int64_t)tokens[t] * k + i];
            id[i] = e;
            s_w[i] = router_score(lg[e]);
        }
    } else {
        float *sc = rs + n_expert;
        unsigned char *chosen = (unsigned char *)(rs + 2 * n_expert);
        for (int64_t e = lane; e < n_expert; e += 32) {
            sc[e] = router_score(lg[e]);
            rs[e] = __fadd_rn(sc[e], bias ? bias[e] : 0.0f);
            chosen[e] = 0;
        }
        __syncwarp();
        for (int i = 0; i < k; i++) {
            float bv = -INFINITY;
            int bi = 0x7fffffff;
            for (int64_t e = lane; e < n_expert; e += 32) {
                if (chosen[e]) continue;
                const float v = rs[e];
                if (bi == 0x7fffffff || v > bv) { /* ascending: first max wins */
                    bv = v;
                    bi = (int)e;
                }
            }
            for (int o = 16; o > 0; o >>= 1) {
                const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
                const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
                if (oi != 0x7fffffff && (bi == 0x7fffffff || ov > bv || (ov == bv && oi < bi))) {
                    bv = ov;
                    bi = oi;
                }
            }
            /* every lane holds the winner; its owner records it */
            if ((bi & 31) == lane) {
                s_w[i] = sc[bi];
                chosen[bi] = 1;
                id[i] = bi;
            }
            __syncwarp();
        }
    }
    __syncwarp();
    router_weights<false>(s_w, &s_sum, k, norm, scale, wt, lane, 32);
}

/* Learned routing of up to RT_WARPS x 32 experts (the published 256), one
 * CTA of RT_WARPS warps per token, a thread per expert: each round every
 * warp reduces its unchosen experts to one candidate (largest value as an
 * order-preserving key, then the lowest index) and every thread picks the
 * round's winner among the warps' candidates (one barrier a round,
 * candidates double-buffered by round parity). The same picks in the same
 * order as k_router for finite values, and the same weights. Session 30's
 * stamps of the one-warp form (8 experts a lane) in decode: 3.2-4.1 us to
 * the scores (8 dependent-latency softplus chains a lane), 2.1 us for the 6
 * rounds; this form: decode at 8K +1.7% (H200, 145.2 -> 147.8 ss t/s). */
#define RT_WARPS 8
__global__ void __launch_bounds__(RT_WARPS * 32) k_router_wide(const float *__restrict__ logits,
                                                              const float *__restrict__ bias, int64_t n_expert, int k,
                                                              int norm, float scale, int32_t *ids, float *w,
                                                              const __grid_constant__ router_split sp) {
    V4F_PDL_ENTRY();
    if (blockIdx.x >= sp.n_tok) return router_split_group(sp); /* uniform over the CTA */
    __shared__ uint32_t s_key[2][RT_WARPS];
    __shared__ uint32_t s_idx[2][RT_WARPS];
    __shared__ float s_w[ROUTER_MAX_K];
    __shared__ float s_sum;
    const int64_t t = blockIdx.x;
    const int e = threadIdx.x, lane = e & 31, wl = e >> 5;
    bool live = e < n_expert;
    float sc = 0.0f;
    uint32_t key = 0;
    if (live) {
        sc = router_score(logits[t * n_expert + e]);
        key = dev_order_key(__fadd_rn(sc, bias ? bias[e] : 0.0f));
    }
    int32_t *id = ids + t * k;
    for (int i = 0; i < k; i++) {
        const int b = i & 1;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
        const uint32_t wmax = __reduce_max_sync(0xffffffffu, live ? key : 0u);
        const uint32_t widx = __reduce_min_sync(0xffffffffu, live && key == wmax ? (uint32_t)e : 0xffffffffu);
#else
        uint32_t wmax = live ? key : 0u;
        for (int o = 16; o > 0; o >>= 1) wmax = max(wmax, __shfl_xor_sync(0xffffffffu, wmax, o));
        uint32_t widx = live && key == wmax ? (uint32_t)e : 0xffffffffu;
        for (int o = 16; o > 0; o >>= 1) widx = min(widx, __shfl_xor_sync(0xffffffffu, widx, o));
#endif
        if (lane == 0) s_key[b][wl] = wmax, s_idx[b][wl] = widx;
        __syncthreads();
        uint32_t bk = 0, bi = 0xffffffffu;
#pragma unroll
        for (int j = 0; j < RT_WARPS; j++) {
            const uint32_t kj = s_key[b][j], ij = s_idx[b][j];
            if (ij != 0xffffffffu && (bi == 0xffffffffu || kj > bk || (kj == bk && ij < bi))) bk = kj, bi = ij;
        }
        if ((uint32_t)e == bi) {
            live = false;
            s_w[i] = sc;
            id[i] = e;
        }
    }
    __syncthreads();
    router_weights<true>(s_w, &s_sum, k, norm, scale, w + t * k, e, RT_WARPS * 32);
}

extern "C" v4f_status v4f_cuda_router_planes(v4f_cuda *c, const float *logits, const float *bias, int64_t n_tok,
                                             int64_t n_expert, int k, const int32_t *tid2eid, const int32_t *tokens,
                                             bool norm, float scale, int32_t *ids, float *w, const float *x,
                                             int64_t n_in, uint8_t *xq, v4f_err *err) {
    ARG_CHECK(n_tok >= 0 && n_tok <= 0x7fffffff && n_expert > 0 && n_expert <= ROUTER_MAX_EXPERT && k > 0 &&
                  k <= ROUTER_MAX_K && k <= n_expert,
              "cuda router: bad shape n_expert %lld k %d", (long long)n_expert, k);
    ARG_CHECK(!tid2eid || tokens, "cuda router: hash routing needs tokens");
    ARG_CHECK(!x || (xq && (uintptr_t)xq % 16 == 0 && n_in > 0 && n_in % 32 == 0 && n_in <= 16384),
              "cuda router: x planes of n_in %lld (n_in %% 32 == 0, <= 16384, 16-byte aligned planes)",
              (long long)n_in);
    if (n_tok == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    const bool wide = !tid2eid && n_expert <= RT_WARPS * 32;
    const int threads = wide ? RT_WARPS * 32 : 32;
    router_split sp = {x, xq, x ? n_in : 0, x ? (uint64_t)v4f_cuda_quant_row_bytes(n_in) : 0, n_tok};
    const int64_t split_ctas = x ? (n_tok * (n_in / 32) + threads / 32 - 1) / (threads / 32) : 0;
    ARG_CHECK(n_tok + split_ctas <= 0x7fffffff, "cuda router: %lld rows of x planes", (long long)n_tok);
    const unsigned grid = (unsigned)(n_tok + split_ctas);
    if (wide)
        v4f_launch(k_router_wide, grid, threads, 0, c->stream, logits, bias, n_expert, k, norm ? 1 : 0, scale, ids, w,
                   sp);
    else
        v4f_launch(k_router, grid, threads, tid2eid ? 0 : (size_t)n_expert * (2 * sizeof(float) + 1), c->stream,
                   logits, bias, n_expert, k, tid2eid, tokens, norm ? 1 : 0, scale, ids, w, sp);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

extern "C" v4f_status v4f_cuda_router(v4f_cuda *c, const float *logits, const float *bias, int64_t n_tok,
                                      int64_t n_expert, int k, const int32_t *tid2eid, const int32_t *tokens,
                                      bool norm, float scale, int32_t *ids, float *w, v4f_err *err) {
    return v4f_cuda_router_planes(c, logits, bias, n_tok, n_expert, k, tid2eid, tokens, norm, scale, ids, w, NULL, 0,
                                  NULL, err);
}

/* ---- SwiGLU ---------------------------------------------------------------------------- */

/* PL: also the int8 planes of each output row (a warp per group of 32:
 * rows of n % 32 == 0 elements, so a warp's 32 outputs are one group) */
template <bool PL>
__global__ void k_swiglu(const float *__restrict__ g, const float *__restrict__ u, int64_t n_rows, int64_t n,
                         float limit, const float *__restrict__ weight, float *h, uint8_t *qx, uint64_t qx_bytes) {
    V4F_PDL_ENTRY();
    const int64_t gid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (gid >= n_rows * n) return; /* (PL: uniform over the warp, n_rows n % 32 == 0) */
    float gv = g[gid], uv = u[gid];
    if (limit > 0) {
        uv = uv < -limit ? -limit : uv > limit ? limit : uv;
        gv = gv > limit ? limit : gv;
    }
    const float s = __fdiv_rn(gv, __fadd_rn(1.0f, expf(-gv)));
    const float wt = weight ? weight[gid / n] : 1.0f;
    const float v = __fmul_rn(wt, __fmul_rn(s, uv));
    h[gid] = v;
    if constexpr (PL) {
        const int64_t r = gid / n;
        const int lane = threadIdx.x & 31;
        dev_quant_x_group(v, lane, lane, qx + r * qx_bytes, n, (gid - r * n) / 32);
    }
}

extern "C" v4f_status v4f_cuda_swiglu(v4f_cuda *c, const float *g, const float *u, int64_t n_rows, int64_t n,
                                      float limit, const float *weight, float *h, v4f_err *err) {
    ARG_CHECK(n_rows >= 0 && n >= 0, "cuda swiglu: bad shape");
    if (n_rows * n == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    v4f_launch(k_swiglu<false>, grid1(n_rows * n, 256), 256, 0, c->stream, g, u, n_rows, n, limit, weight, h,
               (uint8_t *)NULL, (uint64_t)0);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

extern "C" v4f_status v4f_cuda_swiglu_planes(v4f_cuda *c, const float *g, const float *u, int64_t n_rows, int64_t n,
                                             float limit, const float *weight, float *h, uint8_t *qx, v4f_err *err) {
    ARG_CHECK(n_rows >= 0 && n > 0 && n % 32 == 0 && n <= 16384 && qx && (uintptr_t)qx % 16 == 0,
              "cuda swiglu planes: bad shape (n %lld) or planes", (long long)n);
    if (n_rows == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    v4f_launch(k_swiglu<true>, grid1(n_rows * n, 256), 256, 0, c->stream, g, u, n_rows, n, limit, weight, h, qx,
               (uint64_t)v4f_cuda_quant_row_bytes(n));
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

/* ---- compressor pooling ----------------------------------------------------------------- */

/* One thread per (group, dim): max, then the CPU's sequential softmax sums. */
__global__ void k_compress_pool(const float *__restrict__ vals, const float *__restrict__ scores, int64_t n_groups,
                                int64_t group_stride, int n_cand, int64_t ld, int n_lo, int64_t hi_off, int64_t D,
                                float *out) {
    V4F_PDL_ENTRY();
    const int64_t gid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (gid >= n_groups * D) return;
    const int64_t g = gid / D, j = gid % D;
    const int64_t base = g * group_stride + j;
    float m = -INFINITY;
    for (int i = 0; i < n_cand; i++) m = fmaxf(m, scores[base + i * ld + (i >= n_lo ? hi_off : 0)]);
    if (m == -INFINITY) {
        out[gid] = 0.0f;
        return;
    }
    float den = 0, num = 0;
    for (int i = 0; i < n_cand; i++) {
        const int64_t o = base + i * ld + (i >= n_lo ? hi_off : 0);
        const float e = expf(__fsub_rn(scores[o], m));
        den = __fadd_rn(den, e);
        num = __fadd_rn(num, __fmul_rn(e, vals[o]));
    }
    out[gid] = __fdiv_rn(num, den);
}

extern "C" v4f_status v4f_cuda_compress_pool(v4f_cuda *c, const float *vals, const float *scores, int64_t n_groups,
                                             int64_t group_stride, int n_cand, int64_t ld, int n_lo, int64_t hi_off,
                                             int64_t D, float *out, v4f_err *err) {
    ARG_CHECK(n_groups >= 0 && n_cand >= 0 && D >= 0, "cuda compress pool: bad shape");
    if (n_groups * D == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    v4f_launch(k_compress_pool, grid1(n_groups * D, 256), 256, 0, c->stream, vals, scores, n_groups, group_stride, n_cand, ld,
                                                                     n_lo, hi_off, D, out);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}
