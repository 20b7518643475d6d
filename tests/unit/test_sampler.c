/*
 * test_sampler.c - sampler unit tests on hand-made logit vectors: greedy and
 * its tie rule, top-k = 1, min-p, top-p, temperature, seeding, a known-answer
 * test of the RNG (cross-platform determinism) and empirical frequencies.
 */
#include <math.h>
#include <stdlib.h>
#include <time.h>

#include "sampler/sampler.h"
#include "../test.h"

/* Empirical frequency check: every token's observed frequency must lie
 * within V4F_TOL_SAMPLER_SIGMAS binomial standard deviations of its
 * expected probability (docs/TOLERANCES.md, "## sampler"). */
#define V4F_TOL_SAMPLER_SIGMAS 5.0
#define V4F_SAMPLER_FREQ_DRAWS 200000

static v4f_sampler *mk(float temp, int top_k, float top_p, float min_p, uint64_t seed,
                       uint32_t nv) {
    v4f_sampler_params p = {temp, top_k, top_p, min_p, seed};
    v4f_sampler *s = NULL;
    v4f_err err = {0};
    if (v4f_sampler_new(&p, nv, &s, &err) != V4F_OK) return NULL;
    return s;
}

/* logits whose softmax (T = 1) is exactly probs */
static void logits_from_probs(const double *probs, float *logits, int n) {
    for (int i = 0; i < n; i++) logits[i] = (float)log(probs[i]);
}

TEST(sampler_rng_known_answer) {
    v4f_rng r;
    v4f_rng_seed(&r, 42);
    CHECK(v4f_rng_u64(&r) == 0x15780b2e0c2ec716ULL);
    CHECK(v4f_rng_u64(&r) == 0x6104d9866d113a7eULL);
    CHECK(v4f_rng_u64(&r) == 0xae17533239e499a1ULL);
    for (int i = 0; i < 1000; i++) {
        double u = v4f_rng_uniform(&r);
        CHECK(u >= 0 && u < 1);
    }
}

TEST(sampler_greedy) {
    float l[6] = {0.5f, 2.0f, -1.0f, 2.0f, NAN, 1.9f};
    CHECK_EQ_INT(v4f_sampler_greedy(l, 6), 1); /* tie 1 vs 3 -> lowest id */
    float nan_first[3] = {NAN, -3.0f, -2.0f};
    CHECK_EQ_INT(v4f_sampler_greedy(nan_first, 3), 2);
    v4f_sampler *s = mk(0.0f, 0, 1.0f, 0.05f, 7, 6);
    REQUIRE(s);
    for (int i = 0; i < 10; i++) CHECK_EQ_INT(v4f_sampler_sample(s, l), 1);
    int32_t id;
    double p;
    CHECK_EQ_INT(v4f_sampler_dist(s, l, &id, &p, 1), 1);
    CHECK_EQ_INT(id, 1);
    CHECK_NEAR(p, 1.0, 0);
    v4f_sampler_free(s);
}

/* v4f_argmax_f32_except: the excluded id reads as -inf (the runner-up
 * wins, or the first non-NaN id when only -inf and NaN remain), an id out
 * of range excludes nothing, and the array comes back unchanged. */
TEST(argmax_except) {
    float l[6] = {0.5f, 2.0f, -1.0f, 2.0f, NAN, 1.9f};
    CHECK_EQ_INT(v4f_argmax_f32_except(l, 6, 1), 3); /* the tie partner */
    CHECK_EQ_INT(v4f_argmax_f32_except(l, 6, 3), 1);
    CHECK_EQ_INT(v4f_argmax_f32_except(l, 6, -1), 1);
    CHECK_EQ_INT(v4f_argmax_f32_except(l, 6, 6), 1);
    CHECK(l[1] == 2.0f && l[3] == 2.0f);
    float one[3] = {NAN, 5.0f, -INFINITY};
    CHECK_EQ_INT(v4f_argmax_f32_except(one, 3, 1), 1); /* only -inf left: the first non-NaN id */
    CHECK(one[1] == 5.0f);
}

/* The definition v4f_sampler_greedy implements lane-wise: the first of
 * the largest non-NaN values, 0 if every value is NaN. */
static int32_t greedy_oracle(const float *l, uint32_t n) {
    int32_t best = -1;
    for (uint32_t i = 0; i < n; i++)
        if (l[i] == l[i] && (best < 0 || l[i] > l[best])) best = (int32_t)i;
    return best < 0 ? 0 : best;
}

/* Random vectors of awkward lengths (tails of every size, the real vocab)
 * drawn from a small value set so ties, NaN, +-inf and +-0 are common. */
TEST(sampler_greedy_random) {
    static const float vals[] = {0.0f, -0.0f, 1.0f, 1.0f, -2.5f, 3.0f, INFINITY, -INFINITY, -INFINITY, NAN, NAN};
    const int nv = (int)(sizeof vals / sizeof vals[0]);
    v4f_rng r;
    v4f_rng_seed(&r, 5);
    float *l = malloc(129280 * sizeof *l);
    REQUIRE(l);
    for (int t = 0; t < 3000; t++) {
        const uint32_t n = t == 0 ? 129280 : 1 + (uint32_t)(v4f_rng_u64(&r) % (t < 2000 ? 40 : 3000));
        /* some vectors from a narrower set: only NaN and -inf, only NaN, only zeros */
        const int lo = t % 7 == 3 ? 7 : t % 7 == 5 ? 9 : 0, hi = t % 7 == 6 ? 2 : nv;
        for (uint32_t i = 0; i < n; i++) l[i] = vals[lo + (int)(v4f_rng_u64(&r) % (uint64_t)(hi - lo))];
        const int32_t want = greedy_oracle(l, n), got = v4f_sampler_greedy(l, n);
        CHECK_EQ_INT(got, want);
        if (got != want) break;
    }
    /* distinct random values (no ties) */
    for (uint32_t i = 0; i < 129280; i++) l[i] = (float)v4f_rng_uniform(&r) * 40.0f - 20.0f;
    CHECK_EQ_INT(v4f_sampler_greedy(l, 129280), greedy_oracle(l, 129280));
    free(l);
}

TEST(sampler_top_k1_is_greedy) {
    enum { NV = 1000 };
    float *l = malloc(NV * sizeof *l);
    test_rng r = {123};
    v4f_sampler *s = mk(1.3f, 1, 1.0f, 0.0f, 99, NV);
    REQUIRE(s && l);
    for (int trial = 0; trial < 50; trial++) {
        for (int i = 0; i < NV; i++) l[i] = 4 * test_rng_f32(&r);
        CHECK_EQ_INT(v4f_sampler_sample(s, l), v4f_sampler_greedy(l, NV));
    }
    v4f_sampler_free(s);
    free(l);
}

TEST(sampler_top_k_keeps_k_best) {
    float l[8] = {1, 5, 3, 5, 0, 4, 2, -1};
    v4f_sampler *s = mk(1.0f, 3, 1.0f, 0.0f, 1, 8);
    REQUIRE(s);
    int32_t ids[8];
    double pr[8];
    uint32_t n = v4f_sampler_dist(s, l, ids, pr, 8);
    CHECK_EQ_INT(n, 3);
    CHECK_EQ_INT(ids[0], 1);
    CHECK_EQ_INT(ids[1], 3);
    CHECK_EQ_INT(ids[2], 5);
    double e = exp(-1.0);
    CHECK_NEAR(pr[0], 1 / (2 + e), 1e-12);
    CHECK_NEAR(pr[2], e / (2 + e), 1e-12);
    for (int i = 0; i < 500; i++) {
        int32_t t = v4f_sampler_sample(s, l);
        CHECK(t == 1 || t == 3 || t == 5);
    }
    v4f_sampler_free(s);
}

TEST(sampler_min_p) {
    const double probs[6] = {0.5, 0.3, 0.1, 0.06, 0.03, 0.01};
    float l[6];
    logits_from_probs(probs, l, 6);
    /* min_p 0.1: threshold 0.05 -> keep 0.5, 0.3, 0.1, 0.06 */
    v4f_sampler *s = mk(1.0f, 0, 1.0f, 0.1f, 1, 6);
    REQUIRE(s);
    int32_t ids[6];
    double pr[6];
    uint32_t n = v4f_sampler_dist(s, l, ids, pr, 6);
    CHECK_EQ_INT(n, 4);
    CHECK_NEAR(pr[0], 0.5 / 0.96, 1e-6);
    CHECK_NEAR(pr[3], 0.06 / 0.96, 1e-6);
    for (int i = 0; i < 2000; i++) CHECK(v4f_sampler_sample(s, l) < 4);
    v4f_sampler_free(s);
    /* min_p 0.05 (default): threshold 0.025 -> keep 5 */
    s = mk(1.0f, 0, 1.0f, 0.05f, 1, 6);
    REQUIRE(s);
    CHECK_EQ_INT(v4f_sampler_dist(s, l, ids, pr, 6), 5);
    v4f_sampler_free(s);
    /* min_p 0 keeps all, min_p 1 keeps only the max */
    s = mk(1.0f, 0, 1.0f, 0.0f, 1, 6);
    REQUIRE(s);
    CHECK_EQ_INT(v4f_sampler_dist(s, l, ids, pr, 6), 6);
    v4f_sampler_free(s);
    s = mk(1.0f, 0, 1.0f, 1.0f, 1, 6);
    REQUIRE(s);
    CHECK_EQ_INT(v4f_sampler_dist(s, l, ids, pr, 6), 1);
    v4f_sampler_free(s);
}

TEST(sampler_top_p_smallest_nucleus) {
    const double probs[5] = {0.1, 0.45, 0.05, 0.25, 0.15}; /* sorted: 1,3,4,0,2 */
    float l[5];
    logits_from_probs(probs, l, 5);
    struct {
        float top_p;
        uint32_t keep;
    } cases[] = {{0.3f, 1}, {0.45f, 1}, {0.5f, 2}, {0.69f, 2}, {0.71f, 3},
                 {0.86f, 4}, {0.96f, 5}, {1.0f, 5}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        v4f_sampler *s = mk(1.0f, 0, cases[c].top_p, 0.0f, 3, 5);
        REQUIRE(s);
        int32_t ids[5];
        double pr[5];
        uint32_t n = v4f_sampler_dist(s, l, ids, pr, 5);
        CHECK_MSG(n == cases[c].keep, "top_p %g kept %u, want %u", (double)cases[c].top_p, n,
                  cases[c].keep);
        const int32_t order[5] = {1, 3, 4, 0, 2};
        double kept = 0;
        for (uint32_t i = 0; i < n; i++) kept += probs[order[i]];
        for (uint32_t i = 0; i < n && i < 5; i++) {
            CHECK_EQ_INT(ids[i], order[i]);
            CHECK_NEAR(pr[i], probs[order[i]] / kept, 1e-6);
        }
        v4f_sampler_free(s);
    }
}

TEST(sampler_temperature) {
    const double probs[4] = {0.4, 0.3, 0.2, 0.1};
    float l[4];
    logits_from_probs(probs, l, 4);
    int32_t ids[4];
    double pr[4];
    /* T = 0.5 squares the probabilities (sharper), T = 2 takes square roots */
    const float temps[2] = {0.5f, 2.0f};
    for (int t = 0; t < 2; t++) {
        v4f_sampler *s = mk(temps[t], 0, 1.0f, 0.0f, 5, 4);
        REQUIRE(s);
        CHECK_EQ_INT(v4f_sampler_dist(s, l, ids, pr, 4), 4);
        double z = 0;
        for (int i = 0; i < 4; i++) z += pow(probs[i], 1.0 / temps[t]);
        for (int i = 0; i < 4; i++) CHECK_NEAR(pr[i], pow(probs[ids[i]], 1.0 / temps[t]) / z, 1e-6);
        if (t == 0) CHECK(pr[0] > 0.4 + 0.1);
        if (t == 1) CHECK(pr[0] < 0.4 - 0.05);
        v4f_sampler_free(s);
    }
}

TEST(sampler_seed_determinism) {
    enum { NV = 64, STEPS = 300 };
    float l[NV];
    test_rng r = {77};
    for (int i = 0; i < NV; i++) l[i] = 2 * test_rng_f32(&r);
    int32_t a[STEPS], b[STEPS], c[STEPS];
    v4f_sampler *s1 = mk(1.0f, 0, 0.95f, 0.05f, 1234, NV);
    v4f_sampler *s2 = mk(1.0f, 0, 0.95f, 0.05f, 1234, NV);
    v4f_sampler *s3 = mk(1.0f, 0, 0.95f, 0.05f, 1235, NV);
    REQUIRE(s1 && s2 && s3);
    for (int i = 0; i < STEPS; i++) {
        a[i] = v4f_sampler_sample(s1, l);
        b[i] = v4f_sampler_sample(s2, l);
        c[i] = v4f_sampler_sample(s3, l);
    }
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(memcmp(a, c, sizeof a) != 0);
    /* reseed restarts the stream */
    v4f_sampler_reseed(s1, 1234);
    for (int i = 0; i < STEPS; i++) b[i] = v4f_sampler_sample(s1, l);
    CHECK(memcmp(a, b, sizeof a) == 0);
    v4f_sampler_free(s1);
    v4f_sampler_free(s2);
    v4f_sampler_free(s3);
}

/* every token's count of V4F_SAMPLER_FREQ_DRAWS draws within the sigma
 * tolerance of its probability */
static void check_freqs(const long *cnt, const double *probs, int n, const char *what) {
    for (int i = 0; i < n; i++) {
        double f = (double)cnt[i] / V4F_SAMPLER_FREQ_DRAWS;
        double sigma = sqrt(probs[i] * (1 - probs[i]) / V4F_SAMPLER_FREQ_DRAWS);
        CHECK_MSG(fabs(f - probs[i]) <= V4F_TOL_SAMPLER_SIGMAS * sigma + 1e-12,
                  "%s: token %d freq %.5f vs p %.5f (%.1f sigma)", what, i, f, probs[i],
                  sigma > 0 ? fabs(f - probs[i]) / sigma : 0.0);
    }
}

TEST(sampler_empirical_frequencies) {
    const double probs[8] = {0.30, 0.20, 0.15, 0.12, 0.10, 0.08, 0.04, 0.01};
    float l[8];
    logits_from_probs(probs, l, 8);
    /* temperature 1, no filters: frequencies must follow probs */
    v4f_sampler *s = mk(1.0f, 0, 1.0f, 0.0f, 2024, 8);
    REQUIRE(s);
    long cnt[8] = {0};
    for (int i = 0; i < V4F_SAMPLER_FREQ_DRAWS; i++) {
        int32_t t = v4f_sampler_sample(s, l);
        REQUIRE(t >= 0 && t < 8);
        cnt[t]++;
    }
    check_freqs(cnt, probs, 8, "T 1");
    v4f_sampler_free(s);
    /* with min_p 0.3 (cut at 0.09) and T = 1: renormalised over the first 5 */
    s = mk(1.0f, 0, 1.0f, 0.3f, 99, 8);
    REQUIRE(s);
    memset(cnt, 0, sizeof cnt);
    for (int i = 0; i < V4F_SAMPLER_FREQ_DRAWS; i++) cnt[v4f_sampler_sample(s, l)]++;
    double kept = 0.30 + 0.20 + 0.15 + 0.12 + 0.10, pk[8];
    for (int i = 0; i < 8; i++) pk[i] = i < 5 ? probs[i] / kept : 0;
    check_freqs(cnt, pk, 8, "min_p");
    v4f_sampler_free(s);
}

TEST(sampler_bad_params) {
    v4f_sampler *s = NULL;
    v4f_err err = {0};
    v4f_sampler_params p = v4f_sampler_params_default();
    CHECK_NEAR(p.min_p, 0.05, 1e-7);
    p.temperature = -1;
    CHECK_STATUS(v4f_sampler_new(&p, 10, &s, &err), V4F_STATUS_RANGE);
    p = v4f_sampler_params_default();
    p.top_p = 0;
    CHECK_STATUS(v4f_sampler_new(&p, 10, &s, &err), V4F_STATUS_RANGE);
    p = v4f_sampler_params_default();
    p.min_p = 1.5f;
    CHECK_STATUS(v4f_sampler_new(&p, 10, &s, &err), V4F_STATUS_RANGE);
    p = v4f_sampler_params_default();
    CHECK_STATUS(v4f_sampler_new(&p, 0, &s, &err), V4F_STATUS_INVALID_ARG);
    CHECK(s == NULL);
    v4f_sampler_free(NULL);
}

TEST(sampler_all_masked) {
    float l[4] = {-INFINITY, NAN, -INFINITY, -INFINITY};
    v4f_sampler *s = mk(1.0f, 0, 0.9f, 0.05f, 1, 4);
    REQUIRE(s);
    int32_t t = v4f_sampler_sample(s, l);
    CHECK(t >= 0 && t < 4);
    float l2[4] = {-INFINITY, 0.0f, -INFINITY, NAN};
    for (int i = 0; i < 50; i++) CHECK_EQ_INT(v4f_sampler_sample(s, l2), 1);
    v4f_sampler_free(s);
}

static int cmp_desc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x > y ? -1 : x < y;
}

/* Large vocabulary: the top-p prefilter gives exactly the brute-force
 * nucleus (narrow and wide nuclei), and sampling stays fast. */
TEST(sampler_top_p_large_vocab) {
    enum { NV = 129280 };
    float *l = malloc(NV * sizeof *l);
    double *p = malloc(NV * sizeof *p);
    int32_t *ids = malloc(NV * sizeof *ids);
    double *pr = malloc(NV * sizeof *pr);
    REQUIRE(l && p && ids && pr);
    const float scales[2] = {8.0f, 0.5f}; /* peaked (nucleus < 1024) and flat (> 1024) */
    for (int sc = 0; sc < 2; sc++) {
        test_rng r = {5 + (unsigned)sc};
        for (int i = 0; i < NV; i++) l[i] = scales[sc] * test_rng_normal(&r);
        double mx = -1e30, all = 0;
        for (int i = 0; i < NV; i++) mx = l[i] > mx ? l[i] : mx;
        for (int i = 0; i < NV; i++) all += (p[i] = exp(l[i] - mx));
        qsort(p, NV, sizeof *p, cmp_desc);
        uint32_t want = 0;
        double cum = 0;
        while (want < NV && cum < 0.9 * all) cum += p[want++];
        v4f_sampler *s = mk(1.0f, 0, 0.9f, 0.0f, 1, NV);
        REQUIRE(s);
        uint32_t n = v4f_sampler_dist(s, l, ids, pr, NV);
        CHECK_MSG(n == want, "scale %g: nucleus %u, brute force %u", (double)scales[sc], n, want);
        for (uint32_t i = 1; i < n && i < NV; i++) CHECK(l[ids[i - 1]] >= l[ids[i]]);
        double t0 = (double)clock() / CLOCKS_PER_SEC;
        for (int i = 0; i < 20; i++) v4f_sampler_sample(s, l);
        double dt = ((double)clock() / CLOCKS_PER_SEC - t0) / 20;
        if (test_verbose()) printf("    scale %g: nucleus %u, %.2f ms/sample\n", (double)scales[sc], n, 1e3 * dt);
        v4f_sampler_free(s);
    }
    free(l);
    free(p);
    free(ids);
    free(pr);
}

/* Speculative sampling (v4f_sampler_verify): whatever the draft, the result
 * follows the sampler's distribution; the draft is kept with its
 * probability; a draft outside the candidates leaves the draws exactly as
 * v4f_sampler_sample's; greedy ignores the draft. */
TEST(sampler_verify_frequencies) {
    const double probs[8] = {0.30, 0.20, 0.15, 0.12, 0.10, 0.08, 0.04, 0.01};
    float l[8];
    logits_from_probs(probs, l, 8);
    const int32_t drafts[3] = {0, 2, 7}; /* likely, middle, rare */
    for (int k = 0; k < 3; k++) {
        v4f_sampler *s = mk(1.0f, 0, 1.0f, 0.0f, 77 + (uint64_t)k, 8);
        REQUIRE(s);
        long cnt[8] = {0};
        for (int i = 0; i < V4F_SAMPLER_FREQ_DRAWS; i++) {
            int32_t t = v4f_sampler_verify(s, l, drafts[k]);
            REQUIRE(t >= 0 && t < 8);
            cnt[t]++;
        }
        check_freqs(cnt, probs, 8, k == 0 ? "draft 0" : k == 1 ? "draft 2" : "draft 7");
        v4f_sampler_free(s);
    }
    /* with min_p 0.3 the draft 6 (p 0.04) is no candidate: never returned */
    v4f_sampler *s = mk(1.0f, 0, 1.0f, 0.3f, 5, 8);
    REQUIRE(s);
    long six = 0;
    for (int i = 0; i < 20000; i++) six += v4f_sampler_verify(s, l, 6) == 6;
    CHECK(six == 0);
    v4f_sampler_free(s);
}

TEST(sampler_verify_outside_draft_is_sample) {
    /* random logits, min-p 0.2: a draft below the cut costs no draw, so the
     * sequence and the RNG state equal v4f_sampler_sample's */
    enum { NV = 300, STEPS = 400 };
    v4f_sampler *a = mk(0.8f, 0, 0.95f, 0.2f, 31, NV), *b = mk(0.8f, 0, 0.95f, 0.2f, 31, NV);
    REQUIRE(a && b);
    v4f_rng r;
    v4f_rng_seed(&r, 8);
    float l[NV];
    int same = 0;
    for (int step = 0; step < STEPS; step++) {
        int32_t lo = 0;
        for (int i = 0; i < NV; i++) {
            l[i] = (float)(6.0 * v4f_rng_uniform(&r));
            if (l[i] < l[lo]) lo = i;
        }
        l[lo] = -20.0f; /* far below the min-p cut */
        same += v4f_sampler_sample(a, l) == v4f_sampler_verify(b, l, lo);
    }
    CHECK_MSG(same == STEPS, "%d of %d equal", same, STEPS);
    v4f_sampler_free(a);
    v4f_sampler_free(b);
    /* greedy: the argmax whatever the draft */
    v4f_sampler *g = mk(0.0f, 0, 1.0f, 0.0f, 1, 4);
    REQUIRE(g);
    const float lg[4] = {0.5f, 2.0f, 1.0f, -1.0f};
    CHECK(v4f_sampler_verify(g, lg, 0) == 1 && v4f_sampler_verify(g, lg, 1) == 1 && v4f_sampler_verify(g, lg, 3) == 1);
    v4f_sampler_free(g);
}

/* The min-p filter's float prefilter keeps exactly the logits whose
 * tempered value passes the double test, also right at the cut: logits
 * spread over a few ulps around it, several temperatures. */
TEST(sampler_min_p_cut_exact) {
    enum { NV = 4099 };
    static float l[NV];
    static int32_t ids[NV];
    static double probs[NV];
    const float temps[3] = {0.7f, 1.0f, 1.3f}, minps[3] = {0.05f, 0.2f, 0.9f};
    int bad = 0;
    for (int k = 0; k < 3; k++) {
        const double t = temps[k];
        l[0] = 5.0f; /* the max */
        const double zcut = (double)l[0] / t + log((double)minps[k]);
        float c = (float)(zcut * t);
        for (int i = 1; i < NV; i++) { /* ulps around the cut, and some far away */
            c = i % 2 ? nextafterf(c, INFINITY) : c;
            l[i] = i % 17 == 0 ? -3.0f : i % 3 == 0 ? nextafterf(c, -INFINITY) : c;
            if (i % 5 == 0) l[i] = nextafterf(nextafterf(l[i], -INFINITY), -INFINITY);
        }
        uint32_t want = 0;
        for (int i = 0; i < NV; i++) want += (double)l[i] / t >= zcut;
        v4f_sampler *s = mk(temps[k], 0, 1.0f, minps[k], 1, NV);
        REQUIRE(s);
        const uint32_t got = v4f_sampler_dist(s, l, ids, probs, NV);
        bad += got != want;
        CHECK_MSG(got == want, "T %.1f min_p %.2f: %u candidates, the double test keeps %u", temps[k], minps[k], got,
                  want);
        v4f_sampler_free(s);
    }
    CHECK(bad == 0);
}
