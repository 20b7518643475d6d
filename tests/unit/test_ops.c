/*
 * test_ops.c - unit tests of the CPU backend ops (src/backend/cpu/ops.h) and
 * the thread pool, on hand-computed values.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../test.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/ops_internal.h"
#include "core/threadpool.h"
#include "quant/quant.h"

TEST(ops_fp8_e4m3_round) {
    CHECK(v4f_fp8_e4m3_round(1.0f) == 1.0f);
    CHECK(v4f_fp8_e4m3_round(1.0625f) == 1.0f);   /* midpoint -> even mantissa 0 */
    CHECK(v4f_fp8_e4m3_round(1.1875f) == 1.25f);  /* midpoint 1.125|1.25 -> even (m=2) */
    CHECK(v4f_fp8_e4m3_round(1.07f) == 1.125f);
    CHECK(v4f_fp8_e4m3_round(-3.3f) == -3.25f);
    CHECK(v4f_fp8_e4m3_round(448.0f) == 448.0f);
    CHECK(v4f_fp8_e4m3_round(440.0f) == 448.0f);  /* step 32 above 256 */
    CHECK(v4f_fp8_e4m3_round(432.0f) == 448.0f);  /* midpoint 416|448 -> even (m=6) */
    CHECK(v4f_fp8_e4m3_round(400.0f) == 384.0f);  /* midpoint 384|416 -> even (m=4) */
    /* subnormals: step 2^-9 */
    CHECK(v4f_fp8_e4m3_round(0x1p-10f) == 0.0f);          /* midpoint 0|2^-9 -> 0 */
    CHECK(v4f_fp8_e4m3_round(1.5f * 0x1p-9f) == 0x1p-8f); /* midpoint 1|2 -> 2 */
    CHECK(v4f_fp8_e4m3_round(2.5f * 0x1p-9f) == 0x1p-8f); /* midpoint 2|3 -> 2 */
    CHECK(v4f_fp8_e4m3_round(7.6f * 0x1p-9f) == 0x1p-6f); /* rounds up into the normals */
    /* every code decodes to a value that rounds to itself */
    for (int c = 0; c < 256; c++) {
        if ((c & 0x7f) == 0x7f) continue; /* NaN codes */
        float v = v4f_fp8_e4m3_to_f32((uint8_t)c);
        CHECK(v4f_fp8_e4m3_round(v) == v);
    }
}

/* The definitions the bit-level FP8 / FP4 rounding in ops.c must equal:
 * round |v| (clamped) to a multiple of the step of its binade, ties to
 * even (rintf), and the code of the result. */
static float ref_fp8_round(float v) {
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
    float r = rintf(a / step) * step;
    return signbit(v) ? -r : r;
}
static uint8_t ref_fp8_code(float r) {
    uint8_t s = signbit(r) ? 0x80 : 0;
    float a = fabsf(r);
    if (a < 0x1p-6f) return (uint8_t)(s | (uint8_t)(a * 512.0f));
    int ex;
    float m = frexpf(a, &ex);
    return (uint8_t)(s | ((ex + 6) << 3) | (int)((m * 2.0f - 1.0f) * 8.0f));
}
static float ref_fp4_round(float v) {
    float a = fabsf(v);
    if (a > 6.0f) a = 6.0f;
    float step = a < 2.0f ? 0.5f : a < 4.0f ? 1.0f : 2.0f;
    float r = rintf(a / step) * step;
    return signbit(v) ? -r : r;
}

static int fp8_agrees(float v) {
    const float r = v4f_fp8_e4m3_round(v), rr = ref_fp8_round(v);
    if (fabsf(v) > 448.0f) return memcmp(&r, &rr, 4) == 0; /* the block would scale it down */
    float x[64], y[64];
    for (int i = 0; i < 64; i++) x[i] = 0;
    x[0] = v;
    x[1] = 448.0f; /* block exponent 0: the codes are those of v itself */
    uint8_t codes[64];
    int8_t e;
    v4f_fp8_encode_block64(x, codes, &e);
    v4f_fp8_decode_block64(codes, e, y);
    return e == 0 && memcmp(&r, &rr, 4) == 0 && codes[0] == ref_fp8_code(rr) && (y[0] == rr || (rr == 0 && y[0] == 0));
}

TEST(ops_fp8_fp4_bits_match_definition) {
    /* every 4099th float bit pattern up to past 448 and its negative, each
     * representable value's neighbours and the midpoints between codes */
    int bad = 0;
    for (uint32_t b = 0; b <= 0x43f00000u && bad < 5; b += 4099) {
        float v;
        memcpy(&v, &b, 4);
        if (!fp8_agrees(v) || !fp8_agrees(-v)) bad++, fprintf(stderr, "fp8 differs at %a\n", v);
        const float f4 = v4f_fp4_e2m1_round(v), r4 = ref_fp4_round(v);
        const float n4 = v4f_fp4_e2m1_round(-v), m4 = ref_fp4_round(-v);
        if (memcmp(&f4, &r4, 4) || memcmp(&n4, &m4, 4)) bad++, fprintf(stderr, "fp4 differs at %a\n", v);
    }
    for (int c = 0; c < 0x7f && bad < 5; c++) {
        const float lo = v4f_fp8_e4m3_to_f32((uint8_t)c), hi = v4f_fp8_e4m3_to_f32((uint8_t)(c + 1));
        const float probes[4] = {nextafterf(lo, 0.0f), nextafterf(lo, 1e9f), 0.5f * (lo + hi), nextafterf(0.5f * (lo + hi), 1e9f)};
        for (int k = 0; k < 4; k++)
            if (!fp8_agrees(probes[k]) || !fp8_agrees(-probes[k])) bad++, fprintf(stderr, "fp8 differs at %a\n", probes[k]);
    }
    static const float fp4v[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    for (int i = 0; i + 1 < 8; i++) {
        const float mid = 0.5f * (fp4v[i] + fp4v[i + 1]);
        const float probes[3] = {mid, nextafterf(mid, 0.0f), nextafterf(mid, 9.0f)};
        for (int k = 0; k < 3; k++) {
            const float f = v4f_fp4_e2m1_round(probes[k]), r = ref_fp4_round(probes[k]);
            if (memcmp(&f, &r, 4)) bad++, fprintf(stderr, "fp4 differs at %a\n", probes[k]);
        }
    }
    CHECK(bad == 0);
    /* FP4 block codes decode to the rounded values */
    float x[32], y[32];
    test_rng r = {11};
    for (int trial = 0; trial < 100; trial++) {
        for (int i = 0; i < 32; i++) x[i] = test_rng_normal(&r) * ((i % 5) ? 1.0f : 1e-3f);
        uint8_t codes[16];
        int8_t e;
        v4f_fp4_encode_block32(x, codes, &e);
        v4f_fp4_decode_block32(codes, e, y);
        const float s = ldexpf(1.0f, e);
        for (int i = 0; i < 32; i++) {
            float v = x[i] / s;
            v = v > 6.0f ? 6.0f : v < -6.0f ? -6.0f : v;
            CHECK(y[i] == ref_fp4_round(v) * s);
        }
    }
}

TEST(ops_fp8_roundtrip_block) {
    float x[64];
    for (int i = 0; i < 64; i++) x[i] = 0;
    x[0] = 1.0f;   /* amax 1 -> scale 2^ceil(log2(1/448)) = 2^-8 */
    x[1] = 0.3f;   /* 0.3*256 = 76.8 -> 80 -> 0.3125 */
    x[2] = -0.01f; /* 2.56 -> 2.5 */
    v4f_cpu_fp8_roundtrip(x, 64);
    CHECK(x[0] == 1.0f);
    CHECK(x[1] == 0.3125f);
    CHECK(x[2] == -2.5f / 256.0f);
    /* all-zero block: amax floor, stays zero */
    float z[64] = {0};
    v4f_cpu_fp8_roundtrip(z, 64);
    for (int i = 0; i < 64; i++) CHECK(z[i] == 0.0f);
    /* encode/decode == round-trip, and re-encoding a rounded row is lossless */
    test_rng r = {7};
    for (int trial = 0; trial < 200; trial++) {
        float a[64], b[64], y[64];
        float mag = ldexpf(1.0f, (int)(test_rng_u64(&r) % 40) - 20);
        for (int i = 0; i < 64; i++) a[i] = test_rng_normal(&r) * mag * ((i % 7) ? 1.0f : 1e-3f);
        memcpy(b, a, sizeof a);
        v4f_cpu_fp8_roundtrip(b, 64);
        uint8_t codes[64];
        int8_t e;
        v4f_fp8_encode_block64(a, codes, &e);
        v4f_fp8_decode_block64(codes, e, y);
        CHECK(memcmp(y, b, sizeof y) == 0);
        v4f_fp8_encode_block64(b, codes, &e);
        v4f_fp8_decode_block64(codes, e, y);
        CHECK(memcmp(y, b, sizeof y) == 0);
    }
}

TEST(ops_fp4_round_and_roundtrip) {
    CHECK(v4f_fp4_e2m1_round(0.25f) == 0.0f); /* ties to even code */
    CHECK(v4f_fp4_e2m1_round(0.75f) == 1.0f);
    CHECK(v4f_fp4_e2m1_round(1.25f) == 1.0f);
    CHECK(v4f_fp4_e2m1_round(1.75f) == 2.0f);
    CHECK(v4f_fp4_e2m1_round(2.5f) == 2.0f);
    CHECK(v4f_fp4_e2m1_round(3.5f) == 4.0f);
    CHECK(v4f_fp4_e2m1_round(5.0f) == 4.0f);
    CHECK(v4f_fp4_e2m1_round(5.5f) == 6.0f);
    CHECK(v4f_fp4_e2m1_round(-2.9f) == -3.0f);
    float x[32] = {0};
    x[0] = 1.0f;  /* amax 1 -> scale 2^ceil(log2(1/6)) = 1/4 */
    x[1] = 0.3f;  /* 1.2 -> 1.0 -> 0.25 */
    x[2] = -0.6f; /* -2.4 -> -2 -> -0.5 */
    v4f_cpu_fp4_roundtrip(x, 32);
    CHECK(x[0] == 1.0f);
    CHECK(x[1] == 0.25f);
    CHECK(x[2] == -0.5f);
    test_rng r = {9};
    for (int trial = 0; trial < 200; trial++) {
        float a[32], b[32], y[32];
        for (int i = 0; i < 32; i++) a[i] = test_rng_normal(&r) * ldexpf(1.0f, trial % 30 - 15);
        memcpy(b, a, sizeof a);
        v4f_cpu_fp4_roundtrip(b, 32);
        uint8_t codes[16];
        int8_t e;
        v4f_fp4_encode_block32(a, codes, &e);
        v4f_fp4_decode_block32(codes, e, y);
        CHECK(memcmp(y, b, sizeof y) == 0);
        v4f_fp4_encode_block32(b, codes, &e);
        v4f_fp4_decode_block32(codes, e, y);
        CHECK(memcmp(y, b, sizeof y) == 0);
    }
}

TEST(ops_hadamard) {
    float x[4] = {1, 0, 0, 0};
    v4f_cpu_hadamard(x, 4);
    for (int i = 0; i < 4; i++) CHECK_NEAR(x[i], 0.5, 1e-7);
    float y[4] = {1, 2, 3, 4};
    v4f_cpu_hadamard(y, 4); /* [10, -2, -4, 0] / 2 */
    CHECK_NEAR(y[0], 5, 1e-6);
    CHECK_NEAR(y[1], -1, 1e-6);
    CHECK_NEAR(y[2], -2, 1e-6);
    CHECK_NEAR(y[3], 0, 1e-6);
    float z[128], z0[128];
    test_rng r = {3};
    for (int i = 0; i < 128; i++) z[i] = z0[i] = test_rng_f32(&r);
    v4f_cpu_hadamard(z, 128);
    v4f_cpu_hadamard(z, 128); /* orthonormal and symmetric: an involution */
    for (int i = 0; i < 128; i++) CHECK_NEAR(z[i], z0[i], 1e-5);
}

TEST(ops_sinkhorn) {
    float mix[24] = {0}, scale[3] = {1, 1, 1}, base[24] = {0};
    float pre[4], post[4], comb[16];
    v4f_cpu_hc_split_sinkhorn(mix, scale, base, 4, 20, 1e-6f, pre, post, comb);
    for (int i = 0; i < 4; i++) {
        CHECK_NEAR(pre[i], 0.5 + 1e-6, 1e-7);
        CHECK_NEAR(post[i], 1.0, 1e-7);
    }
    for (int i = 0; i < 16; i++) CHECK_NEAR(comb[i], 0.25, 1e-5);
    /* random: doubly stochastic after 20 iterations */
    test_rng r = {5};
    for (int i = 0; i < 24; i++) {
        mix[i] = 3 * test_rng_f32(&r);
        base[i] = test_rng_f32(&r);
    }
    v4f_cpu_hc_split_sinkhorn(mix, scale, base, 4, 20, 1e-6f, pre, post, comb);
    for (int i = 0; i < 4; i++) {
        double rs = 0, cs = 0;
        for (int j = 0; j < 4; j++) {
            rs += comb[i * 4 + j];
            cs += comb[j * 4 + i];
        }
        CHECK_NEAR(rs, 1.0, 1e-3);
        CHECK_NEAR(cs, 1.0, 1e-5); /* the last step normalises columns */
        CHECK(post[i] > 0 && post[i] < 2);
        CHECK_NEAR(pre[i], 1.0 / (1.0 + exp(-(mix[i] + base[i]))) + 1e-6, 1e-6);
    }
    /* iteration count matters: 1 iteration differs from 20 */
    float comb1[16];
    v4f_cpu_hc_split_sinkhorn(mix, scale, base, 4, 1, 1e-6f, pre, post, comb1);
    double diff = 0;
    for (int i = 0; i < 16; i++) diff += fabs(comb1[i] - comb[i]);
    CHECK(diff > 1e-4);
}

TEST(ops_yarn_published) {
    v4f_rope_params p = {160000.0f, 65536, 16.0f, 32.0f, 1.0f};
    int lo, hi;
    v4f_rope_yarn_range(&p, 64, &lo, &hi);
    CHECK_EQ_INT(lo, 15);
    CHECK_EQ_INT(hi, 25);
    float f[32];
    v4f_rope_freqs(&p, 64, f);
    CHECK_NEAR(f[0], 1.0, 1e-7);
    double f10 = pow(160000.0, -20.0 / 64.0), f31 = pow(160000.0, -62.0 / 64.0);
    CHECK_NEAR(f[10], f10, 1e-6 * f10); /* below low: unchanged */
    CHECK_NEAR(f[31], f31 / 16.0, 1e-5 * f31);
    double f20 = pow(160000.0, -40.0 / 64.0);
    CHECK_NEAR(f[20], f20 * 0.5 + f20 / 16.0 * 0.5, 1e-5 * f20); /* ramp 0.5 */
    v4f_rope_params plain = {10000.0f, 0, 1, 0, 0};
    v4f_rope_freqs(&plain, 64, f);
    CHECK_NEAR(f[16], pow(10000.0, -0.5), 1e-8);
}

TEST(ops_rope_tail_inverse) {
    float x[128], x0[128], fr[32];
    test_rng r = {11};
    for (int i = 0; i < 128; i++) x[i] = x0[i] = test_rng_f32(&r);
    v4f_rope_params p = {10000.0f, 0, 1, 0, 0};
    v4f_rope_freqs(&p, 64, fr);
    v4f_cpu_rope_tail(x, 128, 64, fr, 1234, false);
    for (int i = 0; i < 64; i++) CHECK(x[i] == x0[i]); /* non-RoPE dims untouched */
    /* pair 0 rotates by angle = pos (freq 1), adjacent pairs */
    double c = cos(1234.0), s = sin(1234.0);
    CHECK_NEAR(x[64], x0[64] * c - x0[65] * s, 1e-5);
    CHECK_NEAR(x[65], x0[64] * s + x0[65] * c, 1e-5);
    v4f_cpu_rope_tail(x, 128, 64, fr, 1234, true);
    for (int i = 0; i < 128; i++) CHECK_NEAR(x[i], x0[i], 1e-5);
}

TEST(ops_swiglu_shared_vs_routed) {
    float g[3] = {12.0f, -3.0f, 11.0f}, u[3] = {11.0f, -12.0f, 2.0f}, h[3];
    /* shared expert: no clamp, values above 10 pass through */
    v4f_cpu_swiglu(g, u, 3, 0.0f, 1.0f, h);
    CHECK_NEAR(h[0], 12.0 / (1 + exp(-12.0)) * 11.0, 1e-4);
    CHECK_NEAR(h[1], -3.0 / (1 + exp(3.0)) * -12.0, 1e-5);
    CHECK_NEAR(h[2], 11.0 / (1 + exp(-11.0)) * 2.0, 1e-4);
    /* routed: gate <= 10, up in [-10, 10], times the router weight */
    v4f_cpu_swiglu(g, u, 3, 10.0f, 0.5f, h);
    CHECK_NEAR(h[0], 0.5 * 10.0 / (1 + exp(-10.0)) * 10.0, 1e-4);
    CHECK_NEAR(h[1], 0.5 * -3.0 / (1 + exp(3.0)) * -10.0, 1e-5);
    CHECK_NEAR(h[2], 0.5 * 10.0 / (1 + exp(-10.0)) * 2.0, 1e-4);
}

TEST(ops_router) {
    float logits[6] = {0.0f, 2.0f, -1.0f, 2.0f, 25.0f, 1.0f};
    float bias[6] = {0, 0, 0, 0, -10.0f, 0};
    int32_t ids[2];
    float w[2];
    v4f_cpu_router(logits, bias, 6, 2, NULL, true, 1.5f, ids, w);
    /* scores sqrt(softplus): e4 = 5 biased to -5; e1 == e3 tie -> lowest first */
    CHECK_EQ_INT(ids[0], 1);
    CHECK_EQ_INT(ids[1], 3);
    CHECK_NEAR(w[0], 0.75, 1e-6);
    CHECK_NEAR(w[1], 0.75, 1e-6);
    int32_t hash[2] = {4, 0};
    v4f_cpu_router(logits, NULL, 6, 2, hash, true, 1.5f, ids, w);
    CHECK_EQ_INT(ids[0], 4);
    CHECK_EQ_INT(ids[1], 0);
    double s4 = 5.0, s0 = sqrt(log(2.0));
    CHECK_NEAR(w[0], s4 / (s4 + s0) * 1.5, 1e-5);
    CHECK_NEAR(w[1], s0 / (s4 + s0) * 1.5, 1e-5);
}

TEST(ops_topk_ties) {
    float x[6] = {1, 3, 3, 2, 3, 0};
    int32_t idx[6];
    CHECK_EQ_INT(v4f_cpu_topk(x, 6, 2, idx), 2);
    CHECK_EQ_INT(idx[0], 1);
    CHECK_EQ_INT(idx[1], 2);
    CHECK_EQ_INT(v4f_cpu_topk(x, 6, 4, idx), 4);
    CHECK_EQ_INT(idx[0], 1);
    CHECK_EQ_INT(idx[1], 2);
    CHECK_EQ_INT(idx[2], 3);
    CHECK_EQ_INT(idx[3], 4);
    CHECK_EQ_INT(v4f_cpu_topk(x, 3, 8, idx), 3);
}

/* random scores with many ties vs the definition: i is kept iff fewer than k
 * elements rank before it by (score desc, index asc) */
TEST(ops_topk_bruteforce) {
    test_rng r = {21};
    int bad = 0;
    for (int trial = 0; trial < 500; trial++) {
        int n = 1 + (int)(test_rng_u64(&r) % 300), k = 1 + (int)(test_rng_u64(&r) % 40);
        float x[300];
        int32_t idx[300];
        for (int i = 0; i < n; i++) x[i] = (float)(test_rng_u64(&r) % 20);
        int64_t m = v4f_cpu_topk(x, n, k, idx);
        int cnt = 0;
        for (int i = 0; i < n; i++) {
            int rank = 0;
            for (int j = 0; j < n; j++) rank += x[j] > x[i] || (x[j] == x[i] && j < i);
            if (rank < k) {
                if (cnt >= m || idx[cnt] != i) bad++;
                cnt++;
            }
        }
        if (cnt != m) bad++;
    }
    CHECK_EQ_INT(bad, 0);
}

TEST(ops_attn_sink_and_pool) {
    float q[2] = {1.0f, 0.0f}, keys[4] = {2.0f, 1.0f, 0.0f, 3.0f}, sinks[1] = {0.5f}, out[2], sc[2];
    v4f_cpu_attn_sink(q, 0, 1, 2, keys, 2, sinks, 1.0f, out, sc);
    double e0 = exp(2.0), e1 = exp(0.0), es = exp(0.5), den = e0 + e1 + es;
    CHECK_NEAR(out[0], (e0 * 2 + e1 * 0) / den, 1e-6);
    CHECK_NEAR(out[1], (e0 * 1 + e1 * 3) / den, 1e-6);
    /* compressor pooling: a -inf score contributes nothing */
    float v0[2] = {1, 2}, v1[2] = {3, 4}, s0[2] = {0, -INFINITY}, s1[2] = {0, 1};
    const float *vals[2] = {v0, v1}, *scores[2] = {s0, s1};
    float o[2];
    v4f_cpu_compress_pool(vals, scores, 2, 2, o);
    CHECK_NEAR(o[0], 2.0, 1e-6);
    CHECK_NEAR(o[1], 4.0, 1e-6);
    float n0[1] = {-INFINITY}, n1[1] = {-INFINITY};
    const float *sn[2] = {n0, n1};
    v4f_cpu_compress_pool(vals, sn, 2, 1, o);
    CHECK(o[0] == 0.0f);
    float ix[2] = {2.0f, -1.0f}, iw[2] = {0.5f, 3.0f}, ik[2] = {1.0f, 0.0f}, isc;
    v4f_cpu_indexer_scores(ix, iw, 2, 1, ik, 1, &isc); /* 0.5*relu(2) + 3*relu(-1) */
    CHECK_NEAR(isc, 1.0, 1e-7);
}

TEST(ops_rmsnorm) {
    float x[4] = {1, 2, 3, 4}, w[4] = {1, 1, 2, 0.5f}, y[4];
    v4f_cpu_rmsnorm(x, w, y, 4, 0.0f);
    double r = 1.0 / sqrt(7.5);
    CHECK_NEAR(y[0], r, 1e-6);
    CHECK_NEAR(y[2], 6 * r, 1e-6);
    CHECK_NEAR(y[3], 2 * r, 1e-6);
}

/* The one-pass HC mixes of every available ISA equal the generic ones bit
 * for bit (same per-element multiply and add order, no FMA): lengths
 * around the vector widths (masked tails), H = 1..5, +-0 and mixed-sign
 * coefficients and streams; NaN-poisoned outputs with a canary past d. */
TEST(ops_hc_mix_isa) {
    static const int64_t ds[] = {1, 7, 8, 9, 15, 16, 17, 31, 33, 100, 4096, 4099};
    static const struct {
        v4f_isa isa;
        v4f_cpu_hc_wsum_fn wsum;
        v4f_cpu_hc_post_fn post;
    } isas[] = {{V4F_ISA_AVX2, v4f_cpu_hc_weighted_sum_avx2, v4f_cpu_hc_post_avx2},
                {V4F_ISA_AVX512, v4f_cpu_hc_weighted_sum_avx512, v4f_cpu_hc_post_avx512}};
    const int64_t dmax = 4099;
    float *X = malloc(5 * dmax * sizeof *X), *o = malloc(dmax * sizeof *o);
    float *want = malloc((5 * dmax + 1) * sizeof *want), *have = malloc((5 * dmax + 1) * sizeof *have);
    uint32_t st = 12345;
    for (int64_t i = 0; i < 5 * dmax; i++) {
        st = st * 1664525u + 1013904223u;
        X[i] = (i % 13 == 0) ? ((i / 13) % 2 ? -0.0f : 0.0f) : ((float)(st >> 8) / 16777216.0f - 0.5f) * 3.0f;
    }
    for (int64_t i = 0; i < dmax; i++) o[i] = (i % 11 == 0) ? -0.0f : (float)((i * 7) % 23) * 0.37f - 4.0f;
    /* weights [0, 5), post [5, 10), comb [10, 10 + 25) (H <= 5) */
    const float coef[35] = {0.5f,  -1.25f, 0.0f,  -0.0f, 3.1f,   0.7f, 1e-3f, -2.0f, 0.33f, 1.0f, -0.0f, 0.25f,
                            5.5f,  -0.125f, 0.9f, 1.1f,  -3.3f,  0.01f, 2.2f, -0.6f, 0.0f,  0.45f, -7.0f, 0.2f,
                            1.5f,  -0.0f,  0.8f,  -1.9f, 0.125f, 4.0f, -0.3f, 0.0f,  2.75f, -5.0f, 0.06f};
    int n_isa = 0;
    for (size_t a = 0; a < sizeof isas / sizeof isas[0]; a++) {
        if (!v4f_isa_available(isas[a].isa)) {
            printf("    skip %s: not available on this CPU\n", v4f_isa_name(isas[a].isa));
            continue;
        }
        n_isa++;
        for (int H = 1; H <= 5; H++)
            for (size_t di = 0; di < sizeof ds / sizeof ds[0]; di++) {
                const int64_t d = ds[di];
                for (int64_t i = 0; i <= 5 * dmax; i++) want[i] = have[i] = NAN;
                have[d] = 42.0f;
                v4f_cpu_hc_weighted_sum_generic(X, coef, H, d, want);
                isas[a].wsum(X, coef, H, d, have);
                CHECK_MSG(memcmp(want, have, (size_t)d * sizeof *want) == 0 && have[d] == 42.0f,
                          "%s hc_weighted_sum H=%d d=%lld differs from generic", v4f_isa_name(isas[a].isa), H,
                          (long long)d);
                have[H * d] = 42.0f;
                v4f_cpu_hc_post_generic(o, X, coef + 5, coef + 10, H, d, want);
                isas[a].post(o, X, coef + 5, coef + 10, H, d, have);
                CHECK_MSG(memcmp(want, have, (size_t)(H * d) * sizeof *want) == 0 && have[H * d] == 42.0f,
                          "%s hc_post H=%d d=%lld differs from generic", v4f_isa_name(isas[a].isa), H, (long long)d);
            }
    }
    if (test_verbose()) printf("    HC mixes: %d SIMD ISA(s) equal to generic\n", n_isa);
    free(X);
    free(o);
    free(want);
    free(have);
}

/* the eight-chain double sum of squares against a plain double loop, on
 * lengths around its 8-element step (tails 0..7) */
TEST(ops_sumsq_f64) {
    float x[67];
    for (int i = 0; i < 67; i++) x[i] = (float)((i * 37 % 23) - 11) * 0.37f + 1e-3f * (float)i;
    for (int n = 0; n <= 67; n++) {
        double want = 0;
        for (int i = 0; i < n; i++) want += (double)x[i] * (double)x[i];
        double got = v4f_cpu_sumsq_f64(x, n);
        CHECK_MSG(fabs(got - want) <= 1e-14 * want, "n=%d: %.17g vs %.17g", n, got, want);
    }
}

static void add_task(void *ctx, int64_t t, int thread) {
    int64_t *acc = ctx;
    acc[t] += t + 1;
}

TEST(threadpool_parallel_for) {
    v4f_pool *p = v4f_pool_new(4);
    REQUIRE(p != NULL);
    CHECK_EQ_INT(v4f_pool_size(p), 4);
    int64_t acc[1000];
    memset(acc, 0, sizeof acc);
    for (int rep = 0; rep < 200; rep++) v4f_pool_run(p, 1000, add_task, acc);
    for (int i = 0; i < 1000; i++) CHECK_EQ_INT(acc[i], 200 * (i + 1));
    v4f_pool_free(p);
    v4f_pool_free(NULL);
    int64_t one[3] = {0};
    v4f_pool_run(NULL, 3, add_task, one);
    CHECK_EQ_INT(one[2], 3);
}

typedef struct {
    int64_t *acc;
    int64_t gen;
} stress_ctx;

static void stress_task(void *ctx, int64_t t, int thread) {
    stress_ctx *c = ctx;
    c->acc[t] += c->gen; /* each task index is run exactly once per generation */
}

/* Many short generations with varying task counts: late or sleeping workers
 * must never run a task twice or with a stale job. */
TEST(threadpool_stress_generations) {
    v4f_pool *p = v4f_pool_new(3);
    REQUIRE(p != NULL);
    int64_t acc[64], want[64];
    memset(acc, 0, sizeof acc);
    memset(want, 0, sizeof want);
    for (int64_t g = 1; g <= 30000; g++) {
        int64_t n = 1 + (g * 7) % 23;
        stress_ctx c = {acc, g};
        v4f_pool_run(p, n, stress_task, &c);
        for (int64_t i = 0; i < n; i++) want[i] += g;
    }
    for (int i = 0; i < 64; i++) CHECK_EQ_INT(acc[i], want[i]);
    v4f_pool_free(p);
}

static void check_matmul(uint32_t type, int64_t n_in, int64_t n_out, int64_t n) {
    test_rng r = {type * 100 + (unsigned long long)n};
    float *w = malloc(sizeof(float) * n_in * n_out), *wd = malloc(sizeof(float) * n_in * n_out);
    float *x = malloc(sizeof(float) * n_in * n), *y = malloc(sizeof(float) * n_out * n);
    for (int64_t i = 0; i < n_in * n_out; i++) w[i] = test_rng_f32(&r);
    for (int64_t i = 0; i < n_in * n; i++) x[i] = test_rng_f32(&r);
    size_t rb = 0;
    void *wq = NULL;
    if (type == V4F_TYPE_F32) {
        wq = w;
        rb = (size_t)n_in * 4;
    } else if (type == V4F_TYPE_F16) {
        uint16_t *h = malloc(2 * (size_t)n_in * n_out);
        for (int64_t i = 0; i < n_in * n_out; i++) h[i] = v4f_f32_to_f16(w[i]);
        wq = h;
        rb = (size_t)n_in * 2;
    } else {
        rb = (size_t)n_in / 32 * 34;
        wq = malloc(rb * n_out);
        REQUIRE(v4f_quantize_rows(type, w, wq, n_out, n_in, NULL) == rb * n_out);
    }
    for (int64_t o = 0; o < n_out; o++)
        v4f_dequant_row_ref(type, (uint8_t *)wq + o * rb, wd + o * n_in, n_in);
    v4f_pool *p = v4f_pool_new(3);
    v4f_cpu_ctx c;
    REQUIRE(v4f_cpu_ctx_init(&c, p, n_in, NULL) == V4F_OK);
    v4f_cpu_mat m = {wq, type, n_in, n_out, rb};
    v4f_cpu_matmul(&c, &m, x, n_in, n, y, n_out);
    double maxerr = 0;
    for (int64_t t = 0; t < n; t++)
        for (int64_t o = 0; o < n_out; o++) {
            double ref = 0;
            for (int64_t i = 0; i < n_in; i++) ref += (double)wd[o * n_in + i] * x[t * n_in + i];
            double e = fabs(ref - y[t * n_out + o]);
            if (e > maxerr) maxerr = e;
        }
    CHECK_MSG(maxerr < 1e-4, "matmul type %u n_in %lld n_out %lld n %lld: max err %g", type,
              (long long)n_in, (long long)n_out, (long long)n, maxerr);
    v4f_cpu_ctx_deinit(&c);
    v4f_pool_free(p);
    if (wq != w) free(wq);
    free(w);
    free(wd);
    free(x);
    free(y);
}

/* The GEMM micro-kernels (AVX-512: 16 rows x 16 tokens and the 1..15
 * token remainders, a 16-row tile and a 5-row tail, K chunks of 256 and a
 * 45-value tail; AVX2: 4x6, 4x3 and single blocks, the K % 8 tail) must
 * give every (row, token) output bit-identically
 * whatever the batch it is computed in: a token alone (n = 1 per call) and
 * inside batches of awkward sizes, rows alone and in tiles. Also close to a
 * double reference. */
TEST(ops_gemm_blocking_invariant) {
    const int64_t K = 301, NR = 21, NT = 41, LDX = 320, LDY = 24;
    test_rng r = {4242};
    float *W = malloc(sizeof(float) * K * NR), *X = malloc(sizeof(float) * LDX * NT);
    float *Y = malloc(sizeof(float) * LDY * NT), *y1 = malloc(sizeof(float) * LDY);
    for (int64_t i = 0; i < K * NR; i++) W[i] = test_rng_f32(&r);
    for (int64_t i = 0; i < LDX * NT; i++) X[i] = test_rng_f32(&r);
    const int64_t batches[] = {NT, 6, 7, 13, 1};
    for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++) {
        int64_t nb = batches[b];
        for (int64_t t0 = 0; t0 < NT; t0 += nb)
            v4f_cpu_gemm_f32(W, NR, X + t0 * LDX, LDX, NT - t0 < nb ? NT - t0 : nb, K, Y + t0 * LDY, LDY);
        for (int64_t t = 0; t < NT; t++) {
            for (int64_t o = 0; o < NR; o++) {
                v4f_cpu_gemm_f32(W + o * K, 1, X + t * LDX, LDX, 1, K, y1, 1);
                CHECK_MSG(memcmp(&y1[0], &Y[t * LDY + o], sizeof(float)) == 0,
                          "batch %lld token %lld row %lld: %.9g vs alone %.9g", (long long)nb,
                          (long long)t, (long long)o, Y[t * LDY + o], y1[0]);
                double ref = 0;
                for (int64_t i = 0; i < K; i++) ref += (double)W[o * K + i] * X[t * LDX + i];
                CHECK_MSG(fabs(ref - Y[t * LDY + o]) < 1e-4, "token %lld row %lld: %.9g vs %.9g",
                          (long long)t, (long long)o, Y[t * LDY + o], ref);
            }
        }
    }
    free(W);
    free(X);
    free(Y);
    free(y1);
}

/* Relative tolerance of the f32 GEMM paths against a double reference,
 * |y - ref| <= GEMM_REL_TOL * sum_k |w_k x_k|: float FMA chains over chunks
 * of up to 256 k values (u = 6e-8: 256 u = 1.5e-5 worst case, ~1e-6
 * typical). */
#define GEMM_REL_TOL 2e-5

/* The prefill matmul (row groups, K chunks of 256 with X copied and Y summed
 * in scratch, dequantized per chunk, token blocks of the pool) against the
 * plain GEMM over the dequantized rows: bit-identical (both sum every output
 * in the same fixed K chunks), at awkward shapes (K tails, row counts past a
 * row group and not a multiple of 16, token counts past a token block and
 * not a multiple of the register block), and close to a double reference. */
static void check_gemm_shape(uint32_t type, int64_t K, int64_t n_out, int64_t n, int threads) {
    test_rng r = {(unsigned long long)(K * 1000 + n_out * 10 + n)};
    float *w = malloc(sizeof(float) * K * n_out), *wd = malloc(sizeof(float) * K * n_out);
    float *x = malloc(sizeof(float) * K * n), *y = malloc(sizeof(float) * n_out * n);
    float *y2 = malloc(sizeof(float) * n_out * n);
    for (int64_t i = 0; i < K * n_out; i++) w[i] = test_rng_f32(&r);
    for (int64_t i = 0; i < K * n; i++) x[i] = test_rng_f32(&r);
    uint64_t rb = 0;
    REQUIRE(v4f_type_row_bytes(type, (uint64_t)K, &rb));
    uint8_t *wq = malloc(rb * (uint64_t)n_out);
    if (type == V4F_TYPE_F32) memcpy(wq, w, rb * (uint64_t)n_out);
    else if (type == V4F_TYPE_F16)
        for (int64_t i = 0; i < K * n_out; i++) ((uint16_t *)wq)[i] = v4f_f32_to_f16(w[i]);
    else REQUIRE(v4f_quantize_rows(type, w, wq, n_out, K, NULL) == rb * (uint64_t)n_out);
    for (int64_t o = 0; o < n_out; o++) v4f_dequant_row_ref(type, wq + o * rb, wd + o * K, K);
    v4f_pool *p = v4f_pool_new(threads);
    v4f_cpu_ctx c;
    REQUIRE(v4f_cpu_ctx_init(&c, p, K, NULL) == V4F_OK);
    v4f_cpu_mat m = {wq, type, K, n_out, rb};
    v4f_cpu_matmul(&c, &m, x, K, n, y, n_out);
    v4f_cpu_gemm_f32(wd, n_out, x, K, n, K, y2, n_out);
    int64_t diff = 0;
    double worst = 0;
    for (int64_t t = 0; t < n; t++)
        for (int64_t o = 0; o < n_out; o++) {
            if (memcmp(&y[t * n_out + o], &y2[t * n_out + o], sizeof(float))) diff++;
            double ref = 0, mag = 0;
            for (int64_t i = 0; i < K; i++) {
                ref += (double)wd[o * K + i] * x[t * K + i];
                mag += fabs((double)wd[o * K + i] * x[t * K + i]);
            }
            double e = fabs(ref - y[t * n_out + o]) / (mag > 0 ? mag : 1);
            if (e > worst) worst = e;
        }
    CHECK_MSG(diff == 0, "type %u K %lld n_out %lld n %lld: %lld outputs differ from the plain GEMM", type,
              (long long)K, (long long)n_out, (long long)n, (long long)diff);
    CHECK_MSG(worst <= GEMM_REL_TOL, "type %u K %lld n_out %lld n %lld: relative error %g", type, (long long)K,
              (long long)n_out, (long long)n, worst);
    v4f_cpu_ctx_deinit(&c);
    v4f_pool_free(p);
    free(wq);
    free(w);
    free(wd);
    free(x);
    free(y);
    free(y2);
}

TEST(ops_gemm_chunked_shapes) {
    check_gemm_shape(V4F_TYPE_Q8_0, 800, 300, 37, 1);  /* K chunks 256 x 3 + 32, 2 row groups */
    check_gemm_shape(V4F_TYPE_Q8_0, 800, 150, 300, 3); /* 2 token blocks */
    check_gemm_shape(V4F_TYPE_Q8_0, 512, 33, 17, 1);   /* K a multiple of the chunk */
    check_gemm_shape(V4F_TYPE_F32, 301, 37, 2, 2);     /* K tail of 45, weights read in place */
    check_gemm_shape(V4F_TYPE_F32, 1000, 17, 65, 2);
    check_gemm_shape(V4F_TYPE_F16, 608, 129, 31, 2);
}

TEST(ops_matmul_types) {
    int64_t ns[] = {1, 3, 37, 130};
    for (size_t i = 0; i < 4; i++) {
        check_matmul(V4F_TYPE_F32, 96, 53, ns[i]);
        check_matmul(V4F_TYPE_F16, 128, 301, ns[i]);
        check_matmul(V4F_TYPE_Q8_0, 256, 77, ns[i]);
    }
}

/* The decode matvec's int8-plane path (n == 1, types with dot_planes): every
 * output equals the row's dot_planes over the planes of x (bit for bit, any
 * thread count, X shared by several matmuls of one region or not), the f32
 * path (planes_types = 0) equals dot_f32, and both are close to the double
 * reference. On CPUs without the plane kernels both runs are the f32 path. */
TEST(ops_matmul_planes) {
    static const uint32_t types[] = {V4F_TYPE_Q8_0, V4F_TYPE_Q2_K, V4F_TYPE_Q4_K, V4F_TYPE_IQ2_XXS};
    const int64_t n_in = 768, n_out = 37;
    test_rng r = {99};
    float *w = malloc(sizeof(float) * n_in * n_out), *wd = malloc(sizeof(float) * n_in * n_out);
    float *x = malloc(sizeof(float) * 2 * n_in), *y = malloc(sizeof(float) * 4 * n_out);
    uint8_t *wq = malloc((size_t)n_in * n_out * 2), *xp = malloc(v4f_planes_bytes(n_in));
    for (int64_t i = 0; i < n_in * n_out; i++) w[i] = test_rng_f32(&r);
    for (int64_t i = 0; i < 2 * n_in; i++) x[i] = test_rng_f32(&r);
    v4f_pool *p1 = v4f_pool_new(1), *p3 = v4f_pool_new(3);
    v4f_cpu_ctx c1, c3;
    REQUIRE(v4f_cpu_ctx_init(&c1, p1, n_in, NULL) == V4F_OK && v4f_cpu_ctx_init(&c3, p3, n_in, NULL) == V4F_OK);
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        const uint32_t type = types[t];
        uint64_t rb = 0;
        REQUIRE(v4f_type_row_bytes(type, (uint64_t)n_in, &rb));
        REQUIRE(v4f_quantize_rows(type, w, wq, n_out, n_in, NULL) == rb * n_out);
        for (int64_t o = 0; o < n_out; o++) v4f_dequant_row_ref(type, wq + o * rb, wd + o * n_in, n_in);
        const v4f_quant_kernels *k = v4f_quant_kernels_get(type);
        v4f_cpu_mat m = {wq, type, n_in, n_out, rb}, half = v4f_cpu_mat_rows(&m, 5, 20);
        double max_rel[2] = {0, 0};
        for (int pl = 0; pl < 2; pl++) {
            c1.planes_types = c3.planes_types = pl ? ~(uint64_t)0 : 0;
            /* one region: W x0, W x1, rows 5..24 of W x0 (X shared with the first) */
            const v4f_cpu_mm mm[3] = {{&m, x, n_in, 1, y, n_out},
                                      {&m, x + n_in, n_in, 1, y + n_out, n_out},
                                      {&half, x, n_in, 1, y + 2 * n_out, 20}};
            v4f_cpu_matmul_multi(&c3, mm, 3);
            v4f_cpu_matmul(&c1, &m, x, n_in, 1, y + 3 * n_out, n_out);
            const bool planes = pl && k->dot_planes;
            for (int xi = 0; xi < 2; xi++) {
                if (planes) v4f_quantize_planes(x + xi * n_in, xp, n_in);
                for (int64_t o = 0; o < n_out; o++) {
                    const float *xr = x + xi * n_in;
                    const uint8_t *wr = wq + o * rb;
                    const float want = planes ? k->dot_planes(wr, xp, n_in) : k->dot_f32(wr, xr, n_in);
                    double ref = 0, mag = 0;
                    for (int64_t i = 0; i < n_in; i++) {
                        ref += (double)wd[o * n_in + i] * xr[i];
                        mag += fabs((double)wd[o * n_in + i] * xr[i]);
                    }
                    const float got = y[xi * n_out + o];
                    if (mag > 0 && fabs(got - ref) / mag > max_rel[pl]) max_rel[pl] = fabs(got - ref) / mag;
                    CHECK_MSG(memcmp(&got, &want, 4) == 0, "%s planes %d x%d row %lld: %.9g vs kernel %.9g",
                              v4f_type_name(type), pl, xi, (long long)o, got, want);
                    CHECK_MSG(fabs(got - ref) <= 1e-5 * mag, "%s planes %d x%d row %lld: %.9g vs ref %.9g",
                              v4f_type_name(type), pl, xi, (long long)o, got, ref);
                    if (xi == 0) {
                        CHECK(memcmp(&y[3 * n_out + o], &got, 4) == 0); /* 1 thread, alone */
                        if (o >= 5 && o < 25) CHECK(memcmp(&y[2 * n_out + o - 5], &got, 4) == 0);
                    }
                }
            }
        }
        if (test_verbose())
            printf("    %-8s decode matvec max err / sum|w x|: f32 %.2e, planes %.2e%s\n", v4f_type_name(type),
                   max_rel[0], max_rel[1], k->dot_planes ? "" : " (no plane kernel)");
    }
    v4f_cpu_ctx_deinit(&c1);
    v4f_cpu_ctx_deinit(&c3);
    v4f_pool_free(p1);
    v4f_pool_free(p3);
    free(w);
    free(wd);
    free(x);
    free(y);
    free(wq);
    free(xp);
}
