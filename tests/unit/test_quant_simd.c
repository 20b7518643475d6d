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

/* ---- int8-plane activations ------------------------------------------------------ */

/* |x - d (p1 + p2 / 128 + p3 / 16384)| <= d / 32768 = max|x_group| / (127 *
 * 32768) per element: the residuals r1, r2 of the split are exact and the
 * last plane rounds the f32 quotient r2 / (d / 16384) to nearest; that
 * quotient (|.| <= 64) is itself off by up to 2^-18, so the bound holds up
 * to a factor 1 + 2^-17 (PLANE_RESID_SLACK). */
#define PLANE_RESID (1.0 / (127.0 * 32768.0))
#define PLANE_RESID_SLACK 1e-5
/* VNNI dot_planes vs the scalar plane reference, relative to sum_i m_i |x_i|
 * (m_i = |dl q| + |ml| of element i, |w_i| for IQ2_XXS): the
 * integer sums are exact on both sides; the kernel rounds each lane's sum of
 * 4 products to f32, multiplies by two scale products and accumulates up to
 * n / 64 chunks per lane plus a 16-lane reduction in f32, the same shape as
 * DOT_F32_REL_TOL's bound (a few hundred ulp at worst, ~1e-7 observed). */
#define DOT_PLANES_REL_TOL 1e-5

/* x rows that stress the split: normals scaled by `scale`, a zero group, a
 * group with one spike (the other elements then sit in the low planes), a
 * group of tiny values, and optionally a NaN or an Inf group. */
static void planes_test_row(test_rng *r, float *x, int64_t n, float scale, int special) {
    for (int64_t i = 0; i < n; i++) x[i] = test_rng_normal(r) * scale;
    if (n >= 128) {
        for (int i = 32; i < 64; i++) x[i] = 0.0f;
        x[64 + 7] = 1000.0f * scale;
        for (int i = 96; i < 128; i++) x[i] *= 1e-6f;
    }
    if (special == 1) x[n - 5] = NAN;
    if (special == 2) x[n / 2] = -INFINITY;
}

/* |x_i - xhat_i| bound check of a reference split, group by group */
static int check_split_bound(const float *x, const uint8_t *xp, int64_t n) {
    for (int64_t g = 0; g < n / 32; g++) {
        double amax = 0;
        for (int l = 0; l < 32; l++) amax = fmax(amax, fabs(x[32 * g + l]));
        const float d = v4f_quant_rd_f32(xp + v4f_planes_off_d(n) + 4 * g);
        for (int l = 0; l < 32; l++) {
            const uint8_t *p = xp + v4f_planes_elem_off(g, l);
            const double xh = d * ((int8_t)p[0] + (int8_t)p[64] / 128.0 + (int8_t)p[128] / 16384.0);
            if (!(fabs(xh - x[32 * g + l]) <= amax * PLANE_RESID * (1 + PLANE_RESID_SLACK))) {
                test_fail(__FILE__, __LINE__, "plane split n=%lld group %lld elem %d: %.9g vs %.9g (amax %g)",
                          (long long)n, (long long)g, l, xh, x[32 * g + l], amax);
                return 1;
            }
        }
    }
    return 0;
}

static bool planes_isa(void) {
    const v4f_quant_kernels *k = v4f_quant_kernels_isa(V4F_TYPE_Q2_K, V4F_ISA_AVX512);
    return k && k->dot_planes;
}

/* The split: the reference meets its residual bound; the AVX-512 split
 * writes the same bytes (d and s16 NaN patterns included). */
TEST(quant_planes_split) {
    const int64_t ns[] = {256, 512, 768, 4096, 16384};
    const float scales[] = {1.0f, 1e-20f, 1e20f};
    test_rng r = {777};
    float *x = malloc((16384 + 8) * sizeof *x);
    uint8_t *a = malloc(v4f_planes_bytes(16384) + 8), *b = malloc(v4f_planes_bytes(16384) + 8);
    const bool simd = planes_isa();
    if (!simd) printf("    skip SIMD part: no AVX-512 VNNI/VBMI plane kernels on this CPU\n");
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++)
        for (size_t s = 0; s < sizeof scales / sizeof scales[0]; s++)
            for (int special = 0; special < 3; special++) {
                const int64_t n = ns[t];
                const int off = (int)(t % 4);
                planes_test_row(&r, x + off, n, scales[s], special);
                const size_t bytes = v4f_planes_bytes(n);
                memset(a, 0xAA, bytes + 8);
                memset(b, 0x55, bytes + 8);
                v4f_quant_planes_ref(x + off, a + off, n);
                if (special == 0) CHECK(check_split_bound(x + off, a + off, n) == 0);
                if (special) {
                    const int64_t bad_g = (special == 1 ? n - 5 : n / 2) / 32;
                    CHECK(isnan(v4f_quant_rd_f32(a + off + v4f_planes_off_d(n) + 4 * bad_g)));
                }
                if (!simd) continue;
                v4f_quant_planes_avx512(x + off, b + off, n);
                /* the gaps between sections are not written */
                const size_t od = v4f_planes_off_d(n), os = v4f_planes_off_s16(n), ob = v4f_planes_off_bias(n);
                int same = memcmp(a + off, b + off, 3 * (size_t)n) == 0 &&
                           memcmp(a + off + od, b + off + od, (size_t)n / 32 * 4) == 0 &&
                           memcmp(a + off + os, b + off + os, (size_t)n / 16 * 4) == 0 &&
                           memcmp(a + off + ob, b + off + ob, (size_t)n / 4) == 0;
                CHECK_MSG(same && b[off + bytes] == 0x55, "avx512 plane split differs (n=%lld scale %g special %d)",
                          (long long)n, scales[s], special);
            }
    free(x);
    free(a);
    free(b);
}

/* IQ2_XXS sign and bias cases (the kernel applies the signs to grid bytes
 * biased by +64 and subtracts the split's bias lanes; a wrong bias or sign
 * offsets the result by ~64 sum|p| per lane, far beyond the tolerance):
 * every sign negative, every sign positive, alternating groups; every grid
 * index random or the largest-magnitude row with scale nibble 15 (lane sums
 * near the int32 bound); x all +1, all -1 (p1 = +-127), normals, or a spike
 * per group (large low planes). Gather and table agree bit for bit and stay
 * within DOT_PLANES_REL_TOL of the scalar plane reference. */
TEST(quant_planes_iq2_signs) {
    if (!planes_isa()) {
        printf("    skip: no AVX-512 VNNI/VBMI plane kernels on this CPU\n");
        return;
    }
    const int64_t n = 4096;
    uint8_t *w = malloc(n + 64), *xp = malloc(v4f_planes_bytes(n) + 64);
    float *x = malloc(n * sizeof *x), *wd = malloc(n * sizeof *wd);
    const v4f_quant_dot_planes_fn ref = v4f_quant_dot_planes_ref(V4F_TYPE_IQ2_XXS);
    const v4f_quant_dot_planes_fn gat = v4f_quant_iq2_planes_variant(true), tab = v4f_quant_iq2_planes_variant(false);
    REQUIRE(ref && gat && tab);
    CHECK(v4f_quant_ksigns[0] == 0 && v4f_quant_ksigns[127] == 0xff);
    int big = 0; /* the grid row with the largest byte sum */
    for (int k = 0, best = -1; k < 256; k++) {
        int sum = 0;
        for (int j = 0; j < 8; j++) sum += (int)((v4f_quant_iq2xxs_grid[k] >> (8 * j)) & 0xff);
        if (sum > best) best = sum, big = k;
    }
    test_rng r = {9876};
    double max_err = 0;
    for (int sm = 0; sm < 3; sm++)
        for (int gm = 0; gm < 2; gm++)
            for (int xm = 0; xm < 4; xm++) {
                for (int64_t i = 0; i < n; i++)
                    x[i] = xm == 0 ? 1.0f : xm == 1 ? -1.0f : xm == 2 ? test_rng_normal(&r) :
                           i % 32 == 5 ? 1000.0f : test_rng_normal(&r);
                v4f_quantize_planes(x, xp, n);
                tq_rand_row(&r, V4F_TYPE_IQ2_XXS, w, n);
                for (int64_t b = 0; b < n / 256; b++)
                    for (int g = 0; g < 8; g++) {
                        uint8_t *q = w + 66 * b + V4F_IQ2_QS + 8 * g;
                        uint32_t aux = v4f_quant_rd_u32(q + 4);
                        const bool neg = sm == 0 || (sm == 2 && g % 2);
                        aux = neg ? aux | 0x0fffffffu : aux & 0xf0000000u; /* ksigns[127] = 0xff, [0] = 0 */
                        if (gm) {
                            aux |= 0xf0000000u;
                            for (int l = 0; l < 4; l++) q[l] = (uint8_t)big;
                        }
                        memcpy(q + 4, &aux, 4);
                    }
                const float have = gat(w, xp, n), have_t = tab(w, xp, n);
                const double want = ref(w, xp, n);
                v4f_dequant_row_ref(V4F_TYPE_IQ2_XXS, w, wd, n);
                double mag = 0;
                for (int64_t i = 0; i < n; i++) mag += fabs((double)wd[i] * x[i]);
                max_err = fmax(max_err, fabs(have - want) / mag);
                CHECK_MSG(memcmp(&have, &have_t, 4) == 0, "IQ2_XXS signs %d grid %d x %d: gather %.9g, table %.9g", sm,
                          gm, xm, have, have_t);
                CHECK_MSG(fabs(have - want) <= DOT_PLANES_REL_TOL * mag,
                          "IQ2_XXS signs %d grid %d x %d: %.9g, plane ref %.9g (mag %g)", sm, gm, xm, have, want, mag);
            }
    if (test_verbose()) printf("    IQ2_XXS sign/bias cases: max rel err vs plane ref %.2e\n", max_err);
    free(w);
    free(xp);
    free(x);
    free(wd);
}

/* per-element magnitude of the dequantized terms: |dl q| + |ml| (K-quants),
 * else |w| */
static void planes_mag(uint32_t type, const uint8_t *w, const float *wd, int64_t n, float *m) {
    for (int64_t i = 0; i < n; i++) m[i] = fabsf(wd[i]);
    if (type != V4F_TYPE_Q2_K && type != V4F_TYPE_Q4_K) return;
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *b = w + (i / 256) * (type == V4F_TYPE_Q2_K ? 84 : 144);
        const int e = (int)(i % 256);
        float dl, ml;
        if (type == V4F_TYPE_Q2_K) {
            const uint8_t sc = b[V4F_Q2K_SCALES + 8 * (e / 128) + 2 * ((e % 128) / 32) + (e % 32 >= 16)];
            const int q = (b[V4F_Q2K_QS + 32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
            dl = v4f_quant_rd_f16(b + V4F_Q2K_D) * (sc & 15) * q;
            ml = v4f_quant_rd_f16(b + V4F_Q2K_DMIN) * (sc >> 4);
        } else {
            uint8_t sc, mn;
            v4f_quant_q4k_scale_min(b + V4F_Q4K_SCALES, e / 32, &sc, &mn);
            const int q = (b[V4F_Q4K_QS + 32 * (e / 64) + e % 32] >> (4 * ((e / 32) & 1))) & 15;
            dl = v4f_quant_rd_f16(b + V4F_Q4K_D) * sc * q;
            ml = v4f_quant_rd_f16(b + V4F_Q4K_DMIN) * mn;
        }
        m[i] = fabsf(dl) + fabsf(ml);
    }
}

/* dot_planes of the AVX-512 table against (a) the scalar plane reference
 * (DOT_PLANES_REL_TOL) and (b) the double dot of the reference-dequantized
 * row with the f32 x: DOT_F32_REL_TOL of sum m|x| plus the split's residual
 * bound, sum_i |w_i| max|x_group(i)| PLANE_RESID. A group with a NaN or Inf
 * gives NaN on both plane paths. */
TEST(quant_planes_dot) {
    if (!planes_isa()) {
        printf("    skip: no AVX-512 VNNI/VBMI plane kernels on this CPU\n");
        return;
    }
    static const uint32_t types[] = {V4F_TYPE_Q2_K, V4F_TYPE_Q4_K, V4F_TYPE_IQ2_XXS};
    const int64_t ns[] = {256, 512, 768, 4096, 16384};
    const float scales[] = {1.0f, 1e-20f, 1e20f};
    const int64_t nmax = 16384;
    uint8_t *w = malloc(nmax * 2 + 64), *xp = malloc(v4f_planes_bytes(nmax) + 64);
    float *x = malloc((nmax + 8) * sizeof *x), *wd = malloc(nmax * sizeof *wd), *m = malloc(nmax * sizeof *m);
    test_rng r = {4321};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        const uint32_t type = types[t];
        const v4f_quant_kernels *k = v4f_quant_kernels_isa(type, V4F_ISA_AVX512);
        const v4f_quant_dot_planes_fn ref = v4f_quant_dot_planes_ref(type);
        REQUIRE(k && k->dot_planes && ref);
        double max_a = 0, max_b = 0;
        int fails = 0;
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0] && fails < 5; ni++) {
            const int64_t n = ns[ni];
            for (size_t s = 0; s < sizeof scales / sizeof scales[0]; s++) {
                for (int special = 0; special < 3; special++) {
                    const int off = (int)((ni + s + special) % 4);
                    planes_test_row(&r, x + off, n, scales[s], special);
                    v4f_quantize_planes(x + off, xp + off, n);
                    for (int row = 0; row < 3; row++) {
                        tq_rand_row(&r, type, w + off, n);
                        const float have_f = k->dot_planes(w + off, xp + off, n);
                        const double have = have_f, want = ref(w + off, xp + off, n);
                        if (type == V4F_TYPE_IQ2_XXS) {
                            /* the two grid lookups give the same integers and
                             * the same f32 operations */
                            const float g = v4f_quant_iq2_planes_variant(true)(w + off, xp + off, n);
                            const float tb = v4f_quant_iq2_planes_variant(false)(w + off, xp + off, n);
                            CHECK_MSG(memcmp(&g, &have_f, 4) == 0 && memcmp(&tb, &have_f, 4) == 0,
                                      "IQ2_XXS gather %.9g / table %.9g / table entry %.9g differ (n=%lld)", g, tb,
                                      have_f, (long long)n);
                        }
                        if (special) {
                            CHECK_MSG(isnan(have) && isnan(want), "%s n=%lld: non-finite x gives %g / %g, not NaN",
                                      v4f_type_name(type), (long long)n, have, want);
                            continue;
                        }
                        v4f_dequant_row_ref(type, w + off, wd, n);
                        planes_mag(type, w + off, wd, n, m);
                        double mag = 0, resid = 0;
                        const double exact = tq_dot(wd, x + off, n, NULL);
                        for (int64_t i = 0; i < n; i++) mag += (double)m[i] * fabs(x[off + i]);
                        for (int64_t g = 0; g < n / 32; g++) {
                            double amax = 0, sw = 0;
                            for (int l = 0; l < 32; l++) {
                                amax = fmax(amax, fabs(x[off + 32 * g + l]));
                                sw += fabs(wd[32 * g + l]);
                            }
                            resid += sw * amax * PLANE_RESID * (1 + PLANE_RESID_SLACK);
                        }
                        if (mag > 0) {
                            max_a = fmax(max_a, fabs(have - want) / mag);
                            max_b = fmax(max_b, fabs(have - exact) / mag);
                        }
                        if (!(fabs(have - want) <= DOT_PLANES_REL_TOL * mag) ||
                            !(fabs(have - exact) <= DOT_F32_REL_TOL * mag + resid)) {
                            test_fail(__FILE__, __LINE__,
                                      "%s dot_planes n=%lld scale %g row %d: %.9g, plane ref %.9g, f32 ref %.9g "
                                      "(mag %g, resid bound %g)",
                                      v4f_type_name(type), (long long)n, scales[s], row, have, want, exact, mag, resid);
                            fails++;
                        }
                    }
                }
            }
        }
        if (test_verbose())
            printf("    %-8s dot_planes max rel err vs plane ref %.2e, vs f32 ref %.2e (of sum m|x|)\n",
                   v4f_type_name(type), max_a, max_b);
    }
    free(w);
    free(xp);
    free(x);
    free(wd);
    free(m);
}
