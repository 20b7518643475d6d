/*
 * test_quant_simd.c - every kernel of every available ISA (generic included)
 * against the scalar reference: dequant_row bit for bit, dot_f32 against the
 * double-precision dot of the reference-dequantized row, dot_act against the
 * generic dot_act. Seeded random valid blocks, lengths that exercise vector
 * tails, misaligned weight/activation/output pointers, NaN-poisoned outputs
 * with canaries past the end; the activation quantizers of each ISA byte for
 * byte against the reference (ties, zero blocks, max-magnitude ties). An
 * ISA the CPU lacks is skipped (and logged).
 */
#include "test_quant_util.h"

/* dot_f32 vs the double oracle, relative to sum |w x|: SIMD kernels sum in
 * f32 over up to ~4097/16 terms per lane plus a horizontal reduction, so
 * the error is a few hundred ulp of the magnitude at worst (~1e-5). */
#define DOT_F32_REL_TOL 1e-5
/* dot_act vs the generic dot_act, relative to sum |w| |xq|: integer sums are
 * exact; only the f32 application of block scales differs (~1e-6). */
#define DOT_ACT_REL_TOL 1e-5

static const uint32_t k_types[] = {V4F_TYPE_F32,  V4F_TYPE_F16,  V4F_TYPE_BF16,   V4F_TYPE_Q8_0,
                                   V4F_TYPE_Q2_K, V4F_TYPE_Q4_K, V4F_TYPE_IQ2_XXS};

/* Row lengths to try: any n for the float types, 1..9 and 16 blocks else. */
static int lengths(uint32_t type, int64_t *out) {
    int c = 0;
    if (tq_blck_elems(type) == 1) {
        for (int n = 1; n <= 67; n++) out[c++] = n;
        out[c++] = 255;
        out[c++] = 1000;
        out[c++] = 4097;
    } else {
        for (int nb = 1; nb <= 9; nb++) out[c++] = nb * (int64_t)tq_blck_elems(type);
        out[c++] = 16 * (int64_t)tq_blck_elems(type);
    }
    return c;
}

/* sum |w| |xq| with xq the dequantized activation row */
static double act_magnitude(uint32_t act_type, const float *w, const uint8_t *xq, int64_t n) {
    double m = 0;
    if (act_type == V4F_TYPE_Q8_0) {
        for (int64_t i = 0; i < n; i++) {
            const uint8_t *b = xq + (i / 32) * 34;
            m += fabs(w[i] * v4f_quant_rd_f16(b) * (int8_t)b[2 + i % 32]);
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            const uint8_t *b = xq + (i / 256) * 292;
            m += fabs(w[i] * v4f_quant_rd_f32(b) * (int8_t)b[4 + i % 256]);
        }
    }
    return m;
}

typedef struct bufs {
    uint8_t *wbuf, *abuf;
    float *xbuf, *ybuf, *yref;
} bufs;

/* One (type, isa, n, misalignment) case; returns the number of failures. */
static int check_case(const v4f_quant_kernels *k, const v4f_quant_kernels *ref, test_rng *r, bufs *b,
                      int64_t n, int off, double *max_rel) {
    const uint32_t type = k->type;
    uint8_t *w = b->wbuf + off;
    float *x = b->xbuf + off, *y = b->ybuf + off;
    int fails = 0;
    tq_rand_row(r, type, w, n);
    for (int64_t i = 0; i < n; i++) x[i] = test_rng_normal(r);
    for (int64_t i = 0; i < n + 8; i++) y[i] = NAN;
    ref->dequant_row(w, b->yref, n);
    k->dequant_row(w, y, n);
    if (memcmp(y, b->yref, (size_t)n * sizeof *y) != 0 || !isnan(y[n]) || !isnan(y[n + 7])) {
        test_fail(__FILE__, __LINE__, "%s dequant_row differs (n=%lld off=%d)", v4f_type_name(type),
                  (long long)n, off);
        fails++;
    }
    double mag;
    const double exact = tq_dot(b->yref, x, n, &mag);
    const double got = k->dot_f32(w, x, n);
    if (mag > 0 && fabs(got - exact) / mag > *max_rel) *max_rel = fabs(got - exact) / mag;
    if (!(fabs(got - exact) <= DOT_F32_REL_TOL * mag)) {
        test_fail(__FILE__, __LINE__, "%s dot_f32 n=%lld off=%d: %.9g vs %.9g (mag %g)", v4f_type_name(type),
                  (long long)n, off, got, exact, mag);
        fails++;
    }
    if (k->dot_act) {
        uint8_t *a = b->abuf + off;
        v4f_quantize_act(k->act_type, x, a, n);
        const double want = ref->dot_act(w, a, n);
        const double have = k->dot_act(w, a, n);
        const double amag = act_magnitude(k->act_type, b->yref, a, n);
        if (!(fabs(have - want) <= DOT_ACT_REL_TOL * amag)) {
            test_fail(__FILE__, __LINE__, "%s dot_act n=%lld off=%d: %.9g vs %.9g (mag %g)",
                      v4f_type_name(type), (long long)n, off, have, want, amag);
            fails++;
        }
    }
    return fails;
}

static void check_isa(v4f_isa isa) {
    if (!v4f_isa_available(isa)) {
        printf("    skip: ISA %s not available on this CPU\n", v4f_isa_name(isa));
        return;
    }
    test_rng r = {1234 + (unsigned)isa};
    const int64_t nmax = 16 * 256 + 4096;
    bufs b = {malloc(nmax * 4 + 64), malloc(nmax * 2 + 64), malloc((nmax + 16) * 4),
              malloc((nmax + 16) * 4), malloc((nmax + 16) * 4)};
    for (size_t t = 0; t < sizeof k_types / sizeof k_types[0]; t++) {
        const v4f_quant_kernels *k = v4f_quant_kernels_isa(k_types[t], isa);
        const v4f_quant_kernels *ref = v4f_quant_kernels_isa(k_types[t], V4F_ISA_GENERIC);
        REQUIRE(k && ref && k->dequant_row && k->dot_f32);
        CHECK((k->dot_act == NULL) == (ref->dot_act == NULL) && k->act_type == ref->act_type);
        int64_t ns[80];
        const int cnt = lengths(k_types[t], ns);
        int fails = 0;
        double max_rel = 0;
        for (int i = 0; i < cnt && fails < 5; i++)
            for (int off = 0; off < 4 && fails < 5; off++)
                fails += check_case(k, ref, &r, &b, ns[i], off, &max_rel);
        if (test_verbose())
            printf("    %-7s %-8s dot_f32 max rel err %.2e\n", v4f_isa_name(isa), v4f_type_name(k_types[t]),
                   max_rel);
    }
    free(b.wbuf);
    free(b.abuf);
    free(b.xbuf);
    free(b.ybuf);
    free(b.yref);
}

TEST(quant_simd_generic) { check_isa(V4F_ISA_GENERIC); }
TEST(quant_simd_avx2) { check_isa(V4F_ISA_AVX2); }
TEST(quant_simd_avx512) { check_isa(V4F_ISA_AVX512); }

/* The dispatched table is the best ISA's (V4F_ISA may lower it). */
TEST(quant_dispatch_best) {
    const v4f_isa best = v4f_isa_best();
    CHECK(v4f_isa_available(best));
    CHECK(v4f_quant_kernels_get(V4F_TYPE_Q4_K) == v4f_quant_kernels_isa(V4F_TYPE_Q4_K, best));
    if (test_verbose()) printf("    best ISA: %s\n", v4f_isa_name(best));
}

/* Activation rows that stress the quantizers: random normals, an all-zero
 * block, exact .5 ties (power-of-two scales) and a tie for the largest
 * magnitude with opposite signs (the first one must win). */
static void act_test_row(test_rng *r, float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = test_rng_normal(r);
    if (n < 512) return;
    for (int64_t i = 0; i < 32; i++) x[i] = 0.0f;
    /* block 32..63 (Q8_0) and 256..511 (Q8_K): amax = 127/64 -> scale 64 */
    for (int64_t i = 32; i < 64; i++) x[i] = ((float)(i % 9) - 4.5f) / 64.0f;
    x[40] = 127.0f / 64.0f;
    for (int64_t i = 256; i < 512; i++) x[i] = ((float)(i % 13) - 6.5f) / 64.0f;
    x[300] = -127.0f / 64.0f;
    x[301] = 127.0f / 64.0f;
}

static void check_act_isa(v4f_isa isa) {
    if (!v4f_isa_available(isa)) {
        printf("    skip: ISA %s not available on this CPU\n", v4f_isa_name(isa));
        return;
    }
    const v4f_quant_act_kernels *k = v4f_quant_act_isa(isa), *ref = v4f_quant_act_isa(V4F_ISA_GENERIC);
    REQUIRE(k && ref);
    test_rng r = {99 + (unsigned)isa};
    const int64_t ns[] = {256, 512, 768, 4096};
    float *x = malloc((4096 + 4) * sizeof *x);
    uint8_t *a = malloc(5000), *b = malloc(5000);
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
        for (int off = 0; off < 4; off++) {
            const int64_t n = ns[t];
            act_test_row(&r, x + off, n);
            for (int ty = 0; ty < 2; ty++) {
                const uint32_t type = ty ? V4F_TYPE_Q8_K : V4F_TYPE_Q8_0;
                const size_t bytes = tq_row_bytes(type, n);
                memset(a, 0xAA, bytes + 8);
                memset(b, 0x55, bytes + 8);
                (ty ? ref->q8_K : ref->q8_0)(x + off, a + off, n);
                (ty ? k->q8_K : k->q8_0)(x + off, b + off, n);
                CHECK_MSG(memcmp(a + off, b + off, bytes) == 0 && b[off + bytes] == 0x55,
                          "%s %s quantizer differs from reference (n=%lld off=%d)", v4f_isa_name(isa),
                          v4f_type_name(type), (long long)n, off);
            }
        }
    }
    /* the tie cases really are ties: Q8_0 .5 rounds away from zero, Q8_K to even */
    act_test_row(&r, x, 512);
    k->q8_0(x, a, 512);
    CHECK_EQ_INT((int8_t)a[34 + 2 + 0], 1);  /* x[32] * 64 = 0.5 */
    CHECK_EQ_INT((int8_t)a[34 + 2 + 4], -5); /* x[36] * 64 = -4.5 */
    k->q8_K(x + 256, b, 256);
    float d;
    memcpy(&d, b, 4);
    CHECK(d > 0); /* the first max-magnitude element, -127/64, maps to -127 */
    CHECK_EQ_INT((int8_t)b[4 + 44], -127);
    CHECK_EQ_INT((int8_t)b[4 + 45], 127);
    CHECK_EQ_INT((int8_t)b[4 + 4], -6); /* x[260] * 64 = -6.5 */
    CHECK_EQ_INT((int8_t)b[4 + 1], 4);  /* x[257] * 64 = 3.5 */
    free(x);
    free(a);
    free(b);
}

TEST(quant_act_simd_avx2) { check_act_isa(V4F_ISA_AVX2); }
TEST(quant_act_simd_avx512) { check_act_isa(V4F_ISA_AVX512); }
