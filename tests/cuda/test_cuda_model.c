/*
 * test_cuda_model.c - the whole model on the GPU (model/forward_cuda.c)
 * against the official reference's golden outputs for the tiny fixtures,
 * with the same rules as the CPU golden test (tests/unit/test_golden.c,
 * golden_cmp.h): Tier A in --precision ref for one-call prefill, prefill +
 * decode at the golden split (decode replays the captured CUDA graph) and
 * stepwise (--prefill 1, every token through the graph); at least Tier B in
 * the default mode. Also: per-layer HC drift and routed-expert sets vs the
 * golden traces, and placement: with a memory budget that leaves half the
 * routed experts in host memory the logits must be bitwise equal to the
 * all-on-device run (same kernels, other memory). Built and run by
 * `make CUDA=1 test-cuda`; needs a GPU. Exit status 0 only if all pass.
 *
 * Memory: per case. Threading: single-threaded.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/golden_cmp.h"
#include "core/core.h"
#include "gguf/gguf.h"
#include "model/forward.h"
#include "model/forward_cuda.h"
#include "model/model.h"
#include "model/spec_gate.h"
#include "sampler/sampler.h"
#include "model/snapshot.h"
#include "model/synth.h"
#include "server/srv.h"
#include "tokenizer/tokenizer.h"

/* docs/TOLERANCES.md "## golden (forward pass)": the CPU test's bound */
#define GPU_HC_DRIFT_TOL 2e-2
/* routed-expert sets may differ only where the router's top-k gap is tiny
 * (fixtures README: at most 6 near-ties per run) */
#define GPU_EXPERT_MISMATCH_MAX 8

static int g_fail, g_pass;
static const char *g_dir = "tests/fixtures/model";

#define CHECK(cond, ...)                          \
    do {                                          \
        if (cond) {                               \
            g_pass++;                             \
        } else {                                  \
            g_fail++;                             \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);         \
            fputc('\n', stderr);                  \
        }                                         \
    } while (0)

typedef golden_fixture fixture;

static int fixture_open(const char *name, fixture *f) {
    char msg[1200];
    if (golden_fixture_open(g_dir, name, false, f, msg, sizeof msg)) return 1;
    fprintf(stderr, "%s\n", msg);
    return 0;
}

typedef struct trace_rec {
    uint32_t n_layer, HD, k, n_pos;
    float *hc;         /* [L][HD] at the last position of the last call */
    int32_t *experts;  /* [L][n_pos][k] */
} trace_rec;

static void tr_hc(void *ud, uint32_t layer, uint32_t pos, const float *hc) {
    trace_rec *t = ud;
    if (layer < t->n_layer) memcpy(t->hc + (size_t)layer * t->HD, hc, t->HD * sizeof(float));
}
static void tr_experts(void *ud, uint32_t layer, uint32_t pos, const int32_t *ids, uint32_t k) {
    trace_rec *t = ud;
    if (layer < t->n_layer && pos < t->n_pos) memcpy(t->experts + ((size_t)layer * t->n_pos + pos) * t->k, ids, k * 4);
}

/* A GPU session of 512 positions (NULL and a message on failure); its
 * placement report into report if given. */
static v4f_session *open_gpu(const fixture *f, v4f_precision prec, double mem_gb, char *report, size_t report_len) {
    v4f_session_opts o = {.n_ctx = 512, .precision = prec, .backend = V4F_BACKEND_CUDA, .gpu_mem_gb = mem_gb};
    v4f_session *s = NULL;
    v4f_err err = {0};
    if (v4f_session_new(f->m, &o, &s, &err) != V4F_OK) {
        fprintf(stderr, "gpu session: %s\n", err.msg);
        return NULL;
    }
    if (report) snprintf(report, report_len, "%s", v4f_session_gpu_report(s));
    return s;
}

/* tokens[0..n) with the first split in one call, the rest one by one. */
static int run_gpu(const fixture *f, v4f_precision prec, int split, double mem_gb, float *logits, trace_rec *tr,
                   char *report, size_t report_len) {
    v4f_session *s = open_gpu(f, prec, mem_gb, report, report_len);
    v4f_err err = {0};
    if (!s) return 0;
    if (tr) {
        v4f_trace t = {tr, tr_hc, tr_experts, NULL};
        v4f_session_set_trace(s, &t);
    }
    int ok = v4f_session_eval(s, f->tokens, (uint32_t)split, logits, 0, NULL, &err) == V4F_OK;
    for (int i = split; ok && i < f->n; i++)
        ok = v4f_session_eval(s, f->tokens + i, 1, logits + (size_t)i * f->vocab, 0, NULL, &err) == V4F_OK;
    if (!ok) fprintf(stderr, "gpu eval: %s\n", err.msg);
    v4f_session_free(s);
    return ok;
}

/* The whole fixture as evals of `step` tokens, logits of every position. */
static int run_gpu_steps(const fixture *f, v4f_precision prec, int step, float *logits) {
    v4f_session *s = open_gpu(f, prec, 0, NULL, 0);
    v4f_err err = {0};
    if (!s) return 0;
    int ok = 1;
    for (int i = 0; ok && i < f->n; i += step) {
        const int m = f->n - i < step ? f->n - i : step;
        ok = v4f_session_eval(s, f->tokens + i, (uint32_t)m, logits + (size_t)i * f->vocab, 0, NULL, &err) == V4F_OK;
    }
    if (!ok) fprintf(stderr, "gpu eval: %s\n", err.msg);
    v4f_session_free(s);
    return ok;
}

/* Evals of seg[0], 1 x seg[1], seg[2], 1 x the rest of the tokens, logits
 * of every position: with V4F_CUDA_CHUNK_TIGHT=64 and V4F_CUDA_MAX_EXPERTS=k0,k1
 * seg[0] and seg[2] (> 128 tokens) run in the long-eval placement (chunk
 * 512, k1 experts per layer on the device) and the single tokens in the
 * decode one (graph; chunk 64, k0 experts), so the KV rings, the expert
 * tables and k0 - k1 experts per layer move back and forth twice. */
static int run_gpu_flex(const fixture *f, double mem_gb, const uint32_t seg[3], float *logits, char *report,
                        size_t report_len, v4f_status rewind_st[3]) {
    v4f_session *s = open_gpu(f, V4F_PRECISION_REF, mem_gb, report, report_len);
    v4f_err err = {0};
    if (!s) return 0;
    uint32_t at = 0;
    int ok = 1;
    for (int k = 0; k < 4 && ok; k++) {
        uint32_t n = k == 3 ? (uint32_t)f->n - at : k == 1 ? seg[1] : seg[k];
        uint32_t step = k & 1 ? 1 : n;
        for (uint32_t i = 0; i < n && ok; i += step)
            ok = v4f_session_eval(s, f->tokens + at + i, step, logits + (size_t)(at + i) * f->vocab, 0, NULL, &err) ==
                 V4F_OK;
        at += n;
    }
    if (!ok) fprintf(stderr, "gpu eval: %s\n", err.msg);
    /* back to after the last switch, then to before it (RANGE with two placements) */
    rewind_st[0] = v4f_session_rewind(s, (uint32_t)f->n - 2, &err);
    rewind_st[1] = v4f_session_rewind(s, seg[0], &err);
    /* after a reset nothing older is kept: 20 tokens, back to 10 */
    v4f_session_reset(s);
    rewind_st[2] = v4f_session_eval(s, f->tokens, 20, NULL, 0, NULL, &err);
    if (rewind_st[2] == V4F_OK) rewind_st[2] = v4f_session_rewind(s, 10, &err);
    v4f_session_free(s);
    return ok;
}

static void report_cmp(const char *what, const golden_stats *st, int tier_ok) {
    char buf[512];
    golden_format(st, buf, sizeof buf);
    printf("%-40s %s %s\n", what, buf, tier_ok ? "ok" : "FAIL");
}

static void test_fixture(const char *name) {
    fixture f;
    if (!fixture_open(name, &f)) {
        g_fail++;
        return;
    }
    size_t V = (size_t)f.vocab, n = (size_t)f.n;
    float *lg = malloc(n * V * sizeof(float)), *lg2 = malloc(n * V * sizeof(float));
    const float *gp = golden_tensor(&f, "prefill.logits"), *gd = golden_tensor(&f, "decode.logits"), *gs = golden_tensor(&f, "stepwise.logits");
    char what[128];
    golden_stats st;
    /* 1. one-call prefill, reference precision, with traces */
    const v4f_config *c = &f.m->cfg;
    trace_rec tr = {c->n_layer, c->n_hc * c->n_embd, c->n_expert_used, (uint32_t)n, NULL, NULL};
    tr.hc = calloc((size_t)c->n_layer * tr.HD, sizeof(float));
    tr.experts = calloc((size_t)c->n_layer * n * tr.k, sizeof(int32_t));
    if (run_gpu(&f, V4F_PRECISION_REF, f.n, 0, lg, &tr, NULL, 0)) {
        golden_compare(lg, gp, f.n, f.vocab, &st);
        snprintf(what, sizeof what, "%s prefill ref", name);
        report_cmp(what, &st, golden_tier_a(&st));
        CHECK(golden_tier_a(&st), "%s", what);
        double worst = 0;
        int worst_l = -1;
        for (uint32_t l = 0; l < c->n_layer; l++) {
            char hn[64];
            snprintf(hn, sizeof hn, "prefill.hc.%u", l);
            const float *ref = golden_tensor(&f, hn);
            if (!ref) continue;
            double num = 0, den = 0;
            for (uint32_t i = 0; i < tr.HD; i++) {
                double dlt = (double)tr.hc[(size_t)l * tr.HD + i] - ref[i];
                num += dlt * dlt;
                den += (double)ref[i] * ref[i];
            }
            double rel = sqrt(num / (den > 0 ? den : 1));
            if (rel > worst) worst = rel, worst_l = (int)l;
        }
        printf("%-40s worst layer %d rel-RMS %.2e\n", "  HC drift", worst_l, worst);
        CHECK(worst <= GPU_HC_DRIFT_TOL, "%s: HC drift %.3g at layer %d", name, worst, worst_l);
        int mism = 0, tot = 0;
        for (uint32_t l = 0; l < c->n_layer; l++) {
            char en[64];
            snprintf(en, sizeof en, "prefill.experts.%u", l);
            const int32_t *ref = golden_tensor(&f, en);
            if (!ref) continue;
            for (size_t p = 0; p < n; p++) {
                const int32_t *got = tr.experts + ((size_t)l * n + p) * tr.k;
                int same = 1;
                for (uint32_t a = 0; a < tr.k && same; a++) {
                    int found = 0;
                    for (uint32_t b = 0; b < tr.k; b++) found |= got[b] == ref[p * tr.k + a];
                    same = found;
                }
                mism += !same;
                tot++;
            }
        }
        printf("%-40s %d/%d positions with the golden expert set\n", "  experts", tot - mism, tot);
        CHECK(tot > 0 && mism <= GPU_EXPERT_MISMATCH_MAX, "%s: %d expert-set mismatches", name, mism);
    } else {
        g_fail++;
    }
    free(tr.hc);
    free(tr.experts);
    /* 2. prefill + decode at the golden split (decode through the graph) */
    if (run_gpu(&f, V4F_PRECISION_REF, f.split, 0, lg, NULL, NULL, 0)) {
        golden_compare(lg, gp, f.split, f.vocab, &st);
        snprintf(what, sizeof what, "%s prefill %d ref", name, f.split);
        report_cmp(what, &st, golden_tier_a(&st));
        CHECK(golden_tier_a(&st), "%s", what);
        if (gd) {
            golden_compare(lg + (size_t)f.split * V, gd, f.n - f.split, f.vocab, &st);
            snprintf(what, sizeof what, "%s decode %d ref (graph)", name, f.n - f.split);
            report_cmp(what, &st, golden_tier_a(&st));
            CHECK(golden_tier_a(&st), "%s", what);
        }
    } else {
        g_fail++;
    }
    /* 3. stepwise: every token through the decode graph */
    if (gs && run_gpu(&f, V4F_PRECISION_REF, 1, 0, lg, NULL, NULL, 0)) {
        golden_compare(lg, gs, f.n, f.vocab, &st);
        snprintf(what, sizeof what, "%s stepwise ref (graph)", name);
        report_cmp(what, &st, golden_tier_a(&st));
        CHECK(golden_tier_a(&st), "%s", what);
    }
    /* 4. default precision: at least Tier B */
    if (run_gpu(&f, V4F_PRECISION_DEFAULT, f.n, 0, lg, NULL, NULL, 0)) {
        golden_compare(lg, gp, f.n, f.vocab, &st);
        snprintf(what, sizeof what, "%s prefill default", name);
        report_cmp(what, &st, golden_tier_b(&st));
        CHECK(golden_tier_b(&st), "%s (tier A: %s)", what, golden_tier_a(&st) ? "yes" : "no");
    } else {
        g_fail++;
    }
    /* 4b. every prefill chunk multiplies its routed experts pair by pair (the decode matvecs,
     * V4F_CUDA_PAIR_EVAL beyond the chunk) instead of by grouped matmuls: Tier A in ref
     * precision, Tier B in the default one, like the grouped path */
    /* 4c. the same expert by expert (v4f_cuda_matvec_experts: each routed expert read once for
     * all its tokens, V4F_CUDA_MVEXP_EVAL beyond the chunk); 4b with it off; 4d grouped matmuls
     * (both off) */
    static const char *const path_env[3][2] = {{"100000", "0"}, {"0", "100000"}, {"0", "0"}};
    static const char *const path_name[3] = {"pair by pair", "expert by expert", "grouped"};
    for (int path = 0; path < 3; path++) {
        setenv("V4F_CUDA_PAIR_EVAL", path_env[path][0], 1);
        setenv("V4F_CUDA_MVEXP_EVAL", path_env[path][1], 1);
        for (int prec = 0; prec < 2; prec++) {
            const v4f_precision pm = prec ? V4F_PRECISION_DEFAULT : V4F_PRECISION_REF;
            if (run_gpu(&f, pm, f.n, 0, lg, NULL, NULL, 0)) {
                golden_compare(lg, gp, f.n, f.vocab, &st);
                snprintf(what, sizeof what, "%s prefill %s, experts %s", name, prec ? "default" : "ref",
                         path_name[path]);
                const int pass = prec ? golden_tier_b(&st) : golden_tier_a(&st);
                report_cmp(what, &st, pass);
                CHECK(pass, "%s", what);
            } else {
                g_fail++;
            }
        }
    }
    unsetenv("V4F_CUDA_PAIR_EVAL");
    unsetenv("V4F_CUDA_MVEXP_EVAL");
    /* 4e. the prompt as evals of 7 tokens (short evals: dense matvecs of several columns, experts
     * pair by pair) and of 3 (two plane columns, the last eval 0 mod 3): Tier A in ref precision,
     * Tier B in the default one, against the one-call prefill's golden logits */
    static const int steps[2] = {7, 3};
    for (int si = 0; si < 2; si++)
        for (int prec = 0; prec < 2; prec++) {
            const v4f_precision pm = prec ? V4F_PRECISION_DEFAULT : V4F_PRECISION_REF;
            if (run_gpu_steps(&f, pm, steps[si], lg)) {
                golden_compare(lg, gp, f.n, f.vocab, &st);
                snprintf(what, sizeof what, "%s evals of %d %s", name, steps[si], prec ? "default" : "ref");
                const int pass = prec ? golden_tier_b(&st) : golden_tier_a(&st);
                report_cmp(what, &st, pass);
                CHECK(pass, "%s", what);
            } else {
                g_fail++;
            }
        }
    /* 5. placement: half the routed experts in host memory -> bitwise equal */
    {
        v4f_session_opts o = {.n_ctx = 512, .precision = V4F_PRECISION_REF, .backend = V4F_BACKEND_CUDA};
        v4f_session *s = NULL;
        v4f_err err = {0};
        if (v4f_session_new(f.m, &o, &s, &err) == V4F_OK) {
            uint64_t fixed = 0, per_expert = 0;
            v4f_gpu_budget_parts(v4f_session_gpu(s), &fixed, &per_expert);
            v4f_session_free(s);
            double gb = ((double)fixed + (double)per_expert * (c->n_expert / 2) + 0.5 * per_expert) / (double)(1ull << 30);
            char rep[2048];
            int ok1 = run_gpu(&f, V4F_PRECISION_REF, f.split, 0, lg, NULL, NULL, 0);
            int ok2 = run_gpu(&f, V4F_PRECISION_REF, f.split, gb, lg2, NULL, rep, sizeof rep);
            printf("%s", rep);
            CHECK(ok1 && ok2 && strstr(rep, "in host memory") && !strstr(rep, ", 0 in host memory"),
                  "%s: placement did not put experts in host memory", name);
            CHECK(ok1 && ok2 && memcmp(lg, lg2, n * V * sizeof(float)) == 0,
                  "%s: logits with host-resident experts differ from the all-device run", name);
            printf("%-40s %s\n", "  host-resident experts bitwise equal", ok1 && ok2 && !memcmp(lg, lg2, n * V * 4) ? "ok" : "FAIL");
            /* the same through the pinned copy (taken where pinning the mmap in place is refused) and
             * through a decode graph that reads host memory (taken beyond V4F_CUDA_COND_MAX host
             * experts per layer or when the capture with conditional copies fails) */
            static const char *const knob[2] = {"V4F_CUDA_HOST_COPY", "V4F_CUDA_DECODE_DMA"}, *const val[2] = {"1", "0"};
            static const char *const says[2] = {"pinned copy", "decode reads them over the bus"};
            for (int kk = 0; kk < 2; kk++) {
                setenv(knob[kk], val[kk], 1);
                int ok3 = run_gpu(&f, V4F_PRECISION_REF, f.split, gb, lg2, NULL, rep, sizeof rep);
                unsetenv(knob[kk]);
                CHECK(ok3 && strstr(rep, says[kk]), "%s: %s=%s: the report does not say '%s'", name, knob[kk],
                      val[kk], says[kk]);
                CHECK(ok1 && ok3 && memcmp(lg, lg2, n * V * sizeof(float)) == 0,
                      "%s: %s=%s: logits with host-resident experts differ from the all-device run", name, knob[kk],
                      val[kk]);
            }
            /* the prefill pair by pair: the host-resident experts its pairs route to copied in line
             * (default) or all of them one layer ahead (V4F_CUDA_STAGE_USED=0), bitwise equal to the
             * all-device run of the same path */
            for (int mx = 0; mx < 2; mx++) {
                /* the same expert by expert (mx) */
                float *lg3 = malloc(n * V * sizeof(float));
                setenv("V4F_CUDA_PAIR_EVAL", mx ? "0" : "100000", 1);
                setenv("V4F_CUDA_MVEXP_EVAL", mx ? "100000" : "0", 1);
                int oka = lg3 && run_gpu(&f, V4F_PRECISION_REF, f.split, 0, lg3, NULL, NULL, 0);
                for (int su = 0; su < 2; su++) {
                    if (su) setenv("V4F_CUDA_STAGE_USED", "0", 1);
                    int okb = oka && run_gpu(&f, V4F_PRECISION_REF, f.split, gb, lg2, NULL, rep, sizeof rep);
                    unsetenv("V4F_CUDA_STAGE_USED");
                    const int same = okb && strstr(rep, "in host memory") && !memcmp(lg3, lg2, n * V * sizeof(float));
                    CHECK(same, "%s: %s prefill with host-resident experts (%s) differs from the all-device run",
                          name, mx ? "expert-by-expert" : "pair-by-pair", su ? "all copied ahead" : "routed ones copied");
                    printf("%-40s %s\n",
                           su ? (mx ? "  by expert, host experts copied ahead" : "  pairs, host experts copied ahead")
                              : (mx ? "  by expert, routed host experts copied" : "  pairs, routed host experts copied"),
                           same ? "ok" : "FAIL");
                }
                unsetenv("V4F_CUDA_PAIR_EVAL");
                unsetenv("V4F_CUDA_MVEXP_EVAL");
                free(lg3);
            }
            /* two placements (a 64-token chunk for decode and short evals, the 512-token one for longer
             * evals, with fewer experts on the device): bitwise equal to the all-device run of the same
             * evals (the same chunks: the all-device session's chunk is 512) */
            const uint32_t seg[3] = {130, 10, 140};
            const uint32_t k0 = c->n_expert / 2 + 1, k1 = c->n_expert / 4 ? c->n_expert / 4 : 1;
            if (f.n >= 290 && c->n_expert >= 4) {
                char kv[32], want0[64], want1[96];
                snprintf(kv, sizeof kv, "%u,%u", k0, k1);
                snprintf(want0, sizeof want0, "%u of %u per layer on the GPU", k0, c->n_expert);
                snprintf(want1, sizeof want1, "evals of more than 128 tokens: chunk 512, %u experts per layer on the GPU",
                         k1);
                v4f_status rw_all[3], rw_two[3];
                int ok4 = run_gpu_flex(&f, 0, seg, lg, NULL, 0, rw_all);
                setenv("V4F_CUDA_CHUNK_TIGHT", "64", 1);
                setenv("V4F_CUDA_MAX_EXPERTS", kv, 1);
                int ok5 = run_gpu_flex(&f, 0, seg, lg2, rep, sizeof rep, rw_two);
                unsetenv("V4F_CUDA_CHUNK_TIGHT");
                unsetenv("V4F_CUDA_MAX_EXPERTS");
                printf("%s", rep);
                CHECK(ok4 && ok5 && strstr(rep, "(chunk 64)") && strstr(rep, want0) && strstr(rep, want1),
                      "%s: no long-eval placement with V4F_CUDA_CHUNK_TIGHT=64", name);
                CHECK(ok4 && ok5 && memcmp(lg, lg2, n * V * sizeof(float)) == 0,
                      "%s: logits with two placements differ from the all-device run", name);
                CHECK(ok4 && ok5 && rw_all[0] == V4F_OK && rw_all[1] == V4F_OK && rw_all[2] == V4F_OK &&
                          rw_two[0] == V4F_OK && rw_two[1] == V4F_STATUS_RANGE && rw_two[2] == V4F_OK,
                      "%s: rewinds %d %d %d (all-device), %d %d %d (two placements): want 0 0 0, 0 RANGE 0", name,
                      rw_all[0], rw_all[1], rw_all[2], rw_two[0], rw_two[1], rw_two[2]);
                printf("%-40s %s\n", "  two placements bitwise equal",
                       ok4 && ok5 && !memcmp(lg, lg2, n * V * 4) ? "ok" : "FAIL");
            } else {
                CHECK(0, "%s: %d tokens, %u experts: the placement test needs 290 and 4", name, f.n, c->n_expert);
            }
        } else {
            fprintf(stderr, "session: %s\n", err.msg);
            g_fail++;
        }
    }
    free(lg);
    free(lg2);
    golden_fixture_close(&f);
}

/* Snapshots: a GPU session saved after the golden split and restored into
 * a fresh GPU session decodes bitwise the same; the same snapshot restored
 * into a CPU session, and a CPU snapshot restored into a GPU session, decode
 * the golden tail within Tier A. */
static v4f_session *new_sess(const fixture *f, v4f_backend be) {
    v4f_session_opts o = {.n_ctx = 512, .precision = V4F_PRECISION_REF, .backend = be};
    v4f_session *s = NULL;
    v4f_err err = {0};
    if (v4f_session_new(f->m, &o, &s, &err) != V4F_OK) fprintf(stderr, "session: %s\n", err.msg);
    return s;
}

static int decode_tail(const fixture *f, v4f_session *s, float *lg) {
    v4f_err err = {0};
    for (int i = f->split; i < f->n; i++)
        if (v4f_session_eval(s, f->tokens + i, 1, lg + (size_t)(i - f->split) * f->vocab, 0, NULL, &err) != V4F_OK) {
            fprintf(stderr, "decode: %s\n", err.msg);
            return 0;
        }
    return 1;
}

static void test_snapshots(const char *name) {
    fixture f;
    if (!fixture_open(name, &f)) {
        g_fail++;
        return;
    }
    size_t nt = (size_t)(f.n - f.split) * f.vocab;
    float *a = malloc(nt * sizeof(float)), *b = malloc(nt * sizeof(float)), *cc = malloc(nt * sizeof(float));
    const float *gd = golden_tensor(&f, "decode.logits");
    v4f_err err = {0};
    v4f_snapshot_mem snap = {0}, snap_cpu = {0};
    v4f_session *g1 = new_sess(&f, V4F_BACKEND_CUDA), *g2 = new_sess(&f, V4F_BACKEND_CUDA);
    v4f_session *c1 = new_sess(&f, V4F_BACKEND_CPU), *c2 = new_sess(&f, V4F_BACKEND_CPU);
    int ok = g1 && g2 && c1 && c2;
    ok = ok && v4f_session_eval(g1, f.tokens, (uint32_t)f.split, NULL, 0, NULL, &err) == V4F_OK;
    ok = ok && v4f_snapshot_mem_save(g1, NULL, 0, &snap, &err) == V4F_OK;
    ok = ok && decode_tail(&f, g1, a);
    ok = ok && v4f_snapshot_mem_load(g2, &snap, NULL, 0, &err) == V4F_OK && v4f_session_pos(g2) == (uint32_t)f.split;
    ok = ok && decode_tail(&f, g2, b);
    CHECK(ok, "%s: GPU snapshot round trip failed: %s", name, err.msg);
    if (ok) {
        CHECK(memcmp(a, b, nt * sizeof(float)) == 0, "%s: GPU decode after a GPU snapshot restore differs", name);
        printf("%-40s %s\n", "  GPU snapshot -> GPU: bitwise equal", memcmp(a, b, nt * 4) ? "FAIL" : "ok");
    }
    /* GPU snapshot into a CPU session */
    golden_stats st;
    int ok2 = ok && v4f_snapshot_mem_load(c1, &snap, NULL, 0, &err) == V4F_OK && decode_tail(&f, c1, cc);
    CHECK(ok2, "%s: GPU snapshot into a CPU session failed: %s", name, err.msg);
    if (ok2 && gd) {
        golden_compare(cc, gd, f.n - f.split, f.vocab, &st);
        report_cmp("  GPU snapshot -> CPU decode", &st, golden_tier_a(&st));
        CHECK(golden_tier_a(&st), "%s: CPU decode from a GPU snapshot misses Tier A", name);
    }
    /* CPU snapshot into a GPU session */
    int ok3 = c2 && v4f_session_eval(c2, f.tokens, (uint32_t)f.split, NULL, 0, NULL, &err) == V4F_OK &&
              v4f_snapshot_mem_save(c2, NULL, 0, &snap_cpu, &err) == V4F_OK;
    v4f_session *g3 = ok3 ? new_sess(&f, V4F_BACKEND_CUDA) : NULL;
    ok3 = ok3 && g3 && v4f_snapshot_mem_load(g3, &snap_cpu, NULL, 0, &err) == V4F_OK && decode_tail(&f, g3, cc);
    CHECK(ok3, "%s: CPU snapshot into a GPU session failed: %s", name, err.msg);
    if (ok3 && gd) {
        golden_compare(cc, gd, f.n - f.split, f.vocab, &st);
        report_cmp("  CPU snapshot -> GPU decode (graph)", &st, golden_tier_a(&st));
        CHECK(golden_tier_a(&st), "%s: GPU decode from a CPU snapshot misses Tier A", name);
    }
    v4f_session_free(g3);
    v4f_session_free(g1);
    v4f_session_free(g2);
    v4f_session_free(c1);
    v4f_session_free(c2);
    v4f_snapshot_mem_free(&snap);
    v4f_snapshot_mem_free(&snap_cpu);
    free(a);
    free(b);
    free(cc);
    golden_fixture_close(&f);
}

/* Pipelined greedy decoding (v4f_session_decode_greedy: the decode graph
 * picks on the device, the host one step behind) against the step-by-step
 * loop of graph replays and the host's greedy pick (core's
 * v4f_argmax_f32_except, as the sampler's greedy with the suppressed id at
 * -inf): the same picks
 * and bitwise the same final logits, without and with a suppressed id (one
 * the loop picks); a stop after the fifth pick leaves the session where the
 * loop is after five steps (the step queued past the stop is dropped), and
 * decoding on from there gives the loop's logits bit for bit. */
#define GREEDY_STEPS 24

typedef struct pick_rec {
    int32_t picks[GREEDY_STEPS];
    int n, stop_after; /* stop_after 0: never refuse */
} pick_rec;

static bool pick_cb(void *ud, int32_t t) {
    pick_rec *r = ud;
    if (r->n < GREEDY_STEPS) r->picks[r->n] = t;
    r->n++;
    return r->stop_after == 0 || r->n < r->stop_after;
}

static void greedy_pipe_case(const char *name, const fixture *f, v4f_session *a, v4f_session *b, int32_t sup, int32_t *loop_picks) {
    const uint32_t V = (uint32_t)f->vocab, K = GREEDY_STEPS, split = (uint32_t)f->split;
    float *la = malloc((size_t)(K + 1) * V * sizeof(float)), *lb = malloc((size_t)V * sizeof(float));
    v4f_err err = {0};
    int ok = v4f_session_rewind(a, split, &err) == V4F_OK && v4f_session_rewind(b, split, &err) == V4F_OK;
    /* the loop: la[i] = logits after step i */
    const int32_t tok0 = f->tokens[split];
    int32_t tok = tok0;
    for (uint32_t i = 0; ok && i < K; i++) {
        ok = v4f_session_eval(a, &tok, 1, la + (size_t)i * V, 0, NULL, &err) == V4F_OK;
        tok = loop_picks[i] = v4f_argmax_f32_except(la + (size_t)i * V, V, sup);
    }
    pick_rec rec = {.n = 0};
    uint32_t n_eval = 0;
    int32_t next = -1;
    ok = ok && v4f_session_decode_greedy(b, tok0, K, sup, pick_cb, &rec, lb, &n_eval, &next, &err) == V4F_OK;
    CHECK(ok, "%s: greedy decode failed: %s", name, err.msg);
    if (!ok) goto out;
    int same = n_eval == K && rec.n == (int)K - 1 && next == loop_picks[K - 1] &&
               v4f_session_pos(b) == split + K && !memcmp(rec.picks, loop_picks, (K - 1) * sizeof(int32_t)) &&
               !memcmp(lb, la + (size_t)(K - 1) * V, V * sizeof(float));
    CHECK(same, "%s (suppress %d): pipelined greedy != the step loop (n_eval %u, reported %d, next %d vs %d)",
          name, sup, n_eval, rec.n, next, loop_picks[K - 1]);
    /* stop after the fifth pick, then decode on step by step */
    pick_rec r5 = {.n = 0, .stop_after = 5};
    ok = v4f_session_rewind(b, split, &err) == V4F_OK &&
         v4f_session_decode_greedy(b, tok0, K, sup, pick_cb, &r5, lb, &n_eval, &next, &err) == V4F_OK;
    same = ok && n_eval == 5 && r5.n == 5 && next == loop_picks[4] && v4f_session_pos(b) == split + 5 &&
           !memcmp(lb, la + 4 * (size_t)V, V * sizeof(float));
    for (uint32_t i = 5; same && i < K; i++) {
        same = v4f_session_eval(b, &next, 1, lb, 0, NULL, &err) == V4F_OK &&
               !memcmp(lb, la + (size_t)i * V, V * sizeof(float));
        next = loop_picks[i];
    }
    CHECK(same, "%s (suppress %d): decoding on after a pipelined stop differs from the loop (%s)", name, sup,
          err.msg);
    printf("  greedy pipeline (suppress %6d): %s\n", sup, same ? "bitwise equal to the step loop" : "FAIL");
out:
    free(la);
    free(lb);
}

static void test_greedy_pipe(const char *name) {
    fixture f;
    if (!fixture_open(name, &f)) {
        g_fail++;
        return;
    }
    v4f_session_opts o = {.n_ctx = 512, .backend = V4F_BACKEND_CUDA};
    v4f_session *a = NULL, *b = NULL;
    v4f_err err = {0};
    int ok = v4f_session_new(f.m, &o, &a, &err) == V4F_OK && v4f_session_new(f.m, &o, &b, &err) == V4F_OK &&
             v4f_session_eval(a, f.tokens, (uint32_t)f.split, NULL, 0, NULL, &err) == V4F_OK &&
             v4f_session_eval(b, f.tokens, (uint32_t)f.split, NULL, 0, NULL, &err) == V4F_OK;
    CHECK(ok, "%s: greedy pipeline sessions: %s", name, err.msg);
    if (ok) {
        int32_t picks[GREEDY_STEPS];
        greedy_pipe_case(name, &f, a, b, -1, picks);
        greedy_pipe_case(name, &f, a, b, picks[2], picks); /* a token the loop picked: the sequence turns there */
    }
    v4f_session_free(a);
    v4f_session_free(b);
    golden_fixture_close(&f);
}

/* Speculative greedy decoding with MTP drafts (opts.mtp_draft): the picks
 * are the model's greedy picks, taken from the logits of 2-token evals, so
 * they may leave the one-token loop's only where the loop's top two logits
 * are within SPEC_TIE_MARGIN (docs/TOLERANCES.md "## cuda model"). Checked
 * with the MTP block's own drafts, with oracle drafts that are always right
 * (every step keeps its draft) and always wrong (every draft rewound), and
 * with stops on a kept draft and after it: the session then stands where
 * the loop is, and decodes on with the loop's picks. */
#define SPEC_STEPS GREEDY_STEPS
#define SPEC_TIE_MARGIN 1e-3f

typedef struct spec_oracle {
    const int32_t *picks; /* the loop's: the token at position at + 1 + i */
    uint32_t at;
    int right; /* 1: draft the loop's pick, 0: a wrong token, -1: the MTP block's */
    uint32_t vocab;
} spec_oracle;

static int32_t spec_draft(void *ud, uint32_t pos) {
    const spec_oracle *o = ud;
    if (o->right < 0) return -1; /* the MTP block's */
    if (pos <= o->at || pos - o->at - 1 >= SPEC_STEPS) return -1;
    const int32_t r = o->picks[pos - o->at - 1];
    return o->right ? r : (int32_t)(((uint32_t)r + 1) % o->vocab);
}

/* the first index where the picks differ (n: none); a difference must sit
 * on a near-tie of the loop's logits */
static int spec_agree(const char *what, const int32_t *loop, const float *margin, const int32_t *got, int n) {
    for (int i = 0; i < n; i++)
        if (got[i] != loop[i]) {
            CHECK(margin[i] < SPEC_TIE_MARGIN, "%s: pick %d is %d, the loop's %d (top-2 margin %.3g)", what, i, got[i],
                  loop[i], margin[i]);
            return i;
        }
    return n;
}

/* V4F_CUDA_MAX_EXPERTS for the drafting session of spec_open (NULL: all
 * routed experts on the device) */
static const char *g_spec_b_experts;

/* A fixture and two CUDA sessions that evaluated its first `split` tokens:
 * *a without drafts, *b drafting (the MTP block, opts.mtp_draft; with
 * g_spec_b_experts routed experts per layer on the device, the rest in host
 * memory). false (a failure counted, everything closed) when a step fails. */
static bool spec_open(const char *name, v4f_precision prec, fixture *f, v4f_session **a, v4f_session **b) {
    char msg[1200];
    *a = *b = NULL;
    if (!golden_fixture_open(g_dir, name, true, f, msg, sizeof msg)) {
        fprintf(stderr, "%s\n", msg);
        g_fail++;
        return false;
    }
    const uint32_t split = (uint32_t)f->split;
    v4f_session_opts oa = {.n_ctx = 512, .precision = prec, .backend = V4F_BACKEND_CUDA}, ob = oa;
    ob.enable_mtp = ob.mtp_draft = true;
    v4f_err err = {0};
    bool ok = v4f_session_new(f->m, &oa, a, &err) == V4F_OK;
    if (g_spec_b_experts) setenv("V4F_CUDA_MAX_EXPERTS", g_spec_b_experts, 1);
    ok = ok && v4f_session_new(f->m, &ob, b, &err) == V4F_OK;
    unsetenv("V4F_CUDA_MAX_EXPERTS");
    uint32_t on_dev = ok ? v4f_gpu_experts_on_device(v4f_session_gpu(*b)) : 0;
    /* (main-model experts in host memory put the MTP block's there too) */
    ok = ok && (g_spec_b_experts ? on_dev == (uint32_t)atoi(g_spec_b_experts) : on_dev == f->m->cfg.n_expert) &&
         v4f_gpu_mtp_host(v4f_session_gpu(*b)) == (g_spec_b_experts != NULL) &&
         v4f_session_drafts(*b) && !v4f_session_drafts(*a) &&
         v4f_session_eval(*a, f->tokens, split, NULL, 0, NULL, &err) == V4F_OK &&
         v4f_session_eval(*b, f->tokens, split, NULL, 0, NULL, &err) == V4F_OK;
    CHECK(ok, "%s: spec sessions: %s", name, err.msg);
    if (!ok) {
        v4f_session_free(*a);
        v4f_session_free(*b);
        golden_fixture_close(f);
    }
    return ok;
}

static void spec_close(fixture *f, v4f_session *a, v4f_session *b) {
    v4f_session_free(a);
    v4f_session_free(b);
    golden_fixture_close(f);
}

/* n one-token greedy steps of a from the fixture's split token: the picks
 * and their top-2 margins (la: [vocab] scratch) */
static bool spec_loop(v4f_session *a, const fixture *f, uint32_t n, float *la, int32_t *loop, float *margin) {
    const uint32_t V = (uint32_t)f->vocab;
    v4f_err err = {0};
    int32_t tok = f->tokens[f->split];
    for (uint32_t i = 0; i < n; i++) {
        if (v4f_session_eval(a, &tok, 1, la, 0, NULL, &err) != V4F_OK) {
            CHECK(false, "spec loop: %s", err.msg);
            return false;
        }
        tok = loop[i] = v4f_argmax_f32_except(la, V, -1);
        float second = -INFINITY;
        for (uint32_t v = 0; v < V; v++)
            if ((int32_t)v != tok && la[v] > second) second = la[v];
        margin[i] = la[tok] - second;
    }
    return true;
}

static void test_spec_greedy(const char *name, v4f_precision prec) {
    fixture f;
    v4f_session *a, *b;
    if (!spec_open(name, prec, &f, &a, &b)) return;
    const uint32_t V = (uint32_t)f.vocab, K = SPEC_STEPS, split = (uint32_t)f.split;
    const char *pn = prec == V4F_PRECISION_REF ? "ref" : "default";
    v4f_err err = {0};
    float *la = malloc((size_t)V * sizeof(float)), *lb = malloc((size_t)V * sizeof(float));
    float margin[SPEC_STEPS];
    int32_t loop[SPEC_STEPS], tok;
    int ok = spec_loop(a, &f, K, la, loop, margin);
    spec_oracle orc = {loop, split, -1, V};
    v4f_session_set_draft_hook(b, spec_draft, &orc);
    v4f_session_set_draft_gate(b, false); /* every step drafts (test_spec_gate has the gate) */
    const char *modes[3] = {"MTP drafts", "right drafts", "wrong drafts"};
    for (int m = 0; ok && m < 3; m++) {
        orc.right = m == 0 ? -1 : m == 1 ? 1 : 0;
        pick_rec rec = {.n = 0};
        uint32_t n_eval = 0;
        int32_t next = -1;
        const v4f_spec_stats s0 = v4f_session_spec_stats(b);
        ok = v4f_session_rewind(b, split, &err) == V4F_OK &&
             v4f_session_decode_greedy(b, f.tokens[split], K, -1, pick_cb, &rec, lb, &n_eval, &next, &err) == V4F_OK;
        CHECK(ok, "%s %s %s: decode failed: %s", name, pn, modes[m], err.msg);
        if (!ok) break;
        const v4f_spec_stats s1 = v4f_session_spec_stats(b);
        const uint64_t nd = s1.drafted - s0.drafted, na = s1.accepted - s0.accepted;
        int32_t got[SPEC_STEPS];
        memcpy(got, rec.picks, (K - 1) * sizeof(int32_t));
        got[K - 1] = next;
        char what[160];
        snprintf(what, sizeof what, "%s %s %s", name, pn, modes[m]);
        const int agree = spec_agree(what, loop, margin, got, (int)K);
        CHECK(n_eval == K && rec.n == (int)K - 1 && v4f_session_pos(b) == split + K, "%s: n_eval %u, %d picks, pos %u",
              what, n_eval, rec.n, v4f_session_pos(b));
        /* every step drafts (the prefill fed the MTP block); right drafts
         * are all kept until the picks leave the loop's, wrong ones never */
        if (m == 1 && agree == (int)K) CHECK(na == nd && nd >= K / 2 - 1, "%s: %llu of %llu kept", what,
                                            (unsigned long long)na, (unsigned long long)nd);
        if (m == 2) CHECK(na == 0 && nd == K - 1, "%s: %llu of %llu kept", what, (unsigned long long)na,
                          (unsigned long long)nd);
        if (m == 0) CHECK(nd >= K / 2 - 1, "%s: only %llu drafts", what, (unsigned long long)nd);
        printf("  spec greedy %-8s %-13s: %llu of %llu drafts kept, picks %s\n", pn, modes[m],
               (unsigned long long)na, (unsigned long long)nd,
               agree == (int)K ? "equal to the one-token loop" : "leave the loop's at a near-tie");
    }
    /* stops: on a kept draft (the 5th pick) and on the pick after one (4th) */
    orc.right = 1;
    for (int stop = 4; ok && stop <= 5; stop++) {
        pick_rec r = {.n = 0, .stop_after = stop};
        uint32_t n_eval = 0;
        int32_t next = -1;
        ok = v4f_session_rewind(b, split, &err) == V4F_OK &&
             v4f_session_decode_greedy(b, f.tokens[split], K, -1, pick_cb, &r, lb, &n_eval, &next, &err) == V4F_OK;
        int same = ok && n_eval == (uint32_t)stop && r.n == stop && v4f_session_pos(b) == split + (uint32_t)stop;
        int32_t got[SPEC_STEPS];
        int n = 0;
        for (int i = 0; i < stop - 1; i++) got[n++] = r.picks[i];
        got[n++] = next;
        /* decode on from the stop, one token at a time */
        for (tok = next; same && n < (int)K; n++) {
            same = v4f_session_eval(b, &tok, 1, lb, 0, NULL, &err) == V4F_OK;
            tok = got[n] = v4f_argmax_f32_except(lb, V, -1);
        }
        char what[160];
        snprintf(what, sizeof what, "%s %s stop after pick %d", name, pn, stop);
        CHECK(same, "%s: n_eval %u, %d picks, pos %u (%s)", what, n_eval, r.n, v4f_session_pos(b), err.msg);
        if (same) spec_agree(what, loop, margin, got, (int)K);
    }
    spec_close(&f, a, b);
    free(la);
    free(lb);
}

/* The draft gate (spec_gate.h) on a drafting session, default precision:
 * GATE_STEPS greedy tokens after the fixture's split with drafts that are
 * always wrong pause after each window (64 plain tokens after the first,
 * then the rest), with drafts that are always right never; the picks equal
 * the one-token loop's either way (up to a near-tie, SPEC_TIE_MARGIN). */
#define GATE_STEPS 100

typedef struct gate_rec {
    int32_t picks[GATE_STEPS];
    int n;
} gate_rec;

static bool gate_cb(void *ud, int32_t t) {
    gate_rec *r = ud;
    if (r->n < GATE_STEPS) r->picks[r->n] = t;
    r->n++;
    return true;
}

typedef struct gate_oracle {
    const int32_t *picks; /* the loop's: the token at position at + 1 + i */
    uint32_t at, vocab;
    bool right;
} gate_oracle;

static int32_t gate_draft(void *ud, uint32_t pos) {
    const gate_oracle *o = ud;
    if (pos <= o->at || pos - o->at - 1 >= GATE_STEPS) return -1;
    const int32_t r = o->picks[pos - o->at - 1];
    return o->right ? r : (int32_t)(((uint32_t)r + 1) % o->vocab);
}

static void test_spec_gate(const char *name) {
    fixture f;
    v4f_session *a, *b;
    if (!spec_open(name, V4F_PRECISION_DEFAULT, &f, &a, &b)) return;
    const uint32_t V = (uint32_t)f.vocab, K = GATE_STEPS, split = (uint32_t)f.split;
    v4f_err err = {0};
    float *la = malloc((size_t)V * sizeof(float)), *lb = malloc((size_t)V * sizeof(float));
    float margin[GATE_STEPS];
    int32_t loop[GATE_STEPS];
    int ok = spec_loop(a, &f, K, la, loop, margin);
    gate_oracle orc = {loop, split, V, false};
    v4f_session_set_draft_hook(b, gate_draft, &orc);
    for (int right = 0; ok && right <= 1; right++) {
        orc.right = right;
        v4f_session_set_draft_gate(b, true);
        gate_rec rec = {.n = 0};
        uint32_t n_eval = 0;
        int32_t next = -1;
        const v4f_spec_stats s0 = v4f_session_spec_stats(b);
        ok = v4f_session_rewind(b, split, &err) == V4F_OK &&
             v4f_session_decode_greedy(b, f.tokens[split], K, -1, gate_cb, &rec, lb, &n_eval, &next, &err) == V4F_OK;
        char what[160];
        snprintf(what, sizeof what, "%s gate, %s drafts", name, right ? "right" : "wrong");
        CHECK(ok, "%s: decode failed: %s", what, err.msg);
        if (!ok) break;
        const v4f_spec_stats s1 = v4f_session_spec_stats(b);
        const uint64_t nd = s1.drafted - s0.drafted, na = s1.accepted - s0.accepted, np = s1.paused - s0.paused;
        int32_t got[GATE_STEPS];
        memcpy(got, rec.picks, (K - 1) * sizeof(int32_t));
        got[K - 1] = next;
        const int agree = spec_agree(what, loop, margin, got, (int)K);
        CHECK(n_eval == K && rec.n == (int)K - 1 && v4f_session_pos(b) == split + K, "%s: n_eval %u, %d picks, pos %u",
              what, n_eval, rec.n, v4f_session_pos(b));
        /* wrong: a window of drafting steps (one token each), 64 plain
         * tokens, a second window, then plain to the end; right: no pause */
        if (!right)
            CHECK(na == 0 && nd == 2 * V4F_GATE_WINDOW && np == K - nd, "%s: %llu of %llu kept, %llu paused", what,
                  (unsigned long long)na, (unsigned long long)nd, (unsigned long long)np);
        else if (agree == (int)K)
            CHECK(np == 0 && na == nd && nd >= K / 2 - 1, "%s: %llu of %llu kept, %llu paused", what,
                  (unsigned long long)na, (unsigned long long)nd, (unsigned long long)np);
        printf("  spec gate %-6s drafts: %llu of %llu kept, %llu tokens paused, picks %s\n", right ? "right" : "wrong",
               (unsigned long long)na, (unsigned long long)nd, (unsigned long long)np,
               agree == (int)K ? "equal to the one-token loop" : "leave the loop's at a near-tie");
    }
    spec_close(&f, a, b);
    free(la);
    free(lb);
}

/* Sampled decoding with MTP drafts (v4f_session_decode_sampled, default
 * precision, the draft gate off so that every step drafts):
 *  - drafts the sampler can never pick (the position's lowest logit, below
 *    the min-p cut) are refused without an extra RNG draw, so the tokens
 *    equal a plain sampled loop with the same seed;
 *  - drafted with the likeliest token, the first pick over SPEC_SAMPLE_TRIALS
 *    seeds follows the sampler's distribution (each of the 4 likeliest
 *    tokens within SPEC_SAMPLE_SIGMAS binomial sigmas, docs/TOLERANCES.md):
 *    the draft is kept with its probability, not more, not less. */
#define SPEC_SAMPLE_STEPS 24
#define SPEC_SAMPLE_TRIALS 1000
#define SPEC_SAMPLE_SIGMAS 5.0

typedef struct sample_oracle {
    const int32_t *drafts; /* the draft of position at + 1 + i */
    uint32_t at, n;
} sample_oracle;

static int32_t sample_draft(void *ud, uint32_t pos) {
    const sample_oracle *o = ud;
    return pos <= o->at || pos - o->at - 1 >= o->n ? -1 : o->drafts[pos - o->at - 1];
}

static bool stop_first(void *ud, int32_t t) {
    (void)ud, (void)t;
    return false;
}

static void test_spec_sampled(const char *name) {
    fixture f;
    v4f_session *a, *b;
    if (!spec_open(name, V4F_PRECISION_DEFAULT, &f, &a, &b)) return;
    const uint32_t V = (uint32_t)f.vocab, K = SPEC_SAMPLE_STEPS, split = (uint32_t)f.split;
    v4f_sampler *sa = NULL, *sb = NULL;
    v4f_err err = {0};
    const v4f_sampler_params sp = {.temperature = 0.7f, .top_k = 0, .top_p = 1.0f, .min_p = 0.05f, .seed = 11};
    float *la = malloc((size_t)V * sizeof(float)), *lb = malloc((size_t)V * sizeof(float));
    int32_t loop[SPEC_SAMPLE_STEPS], low[SPEC_SAMPLE_STEPS];
    int ok = v4f_sampler_new(&sp, V, &sa, &err) == V4F_OK && v4f_sampler_new(&sp, V, &sb, &err) == V4F_OK;
    /* the plain loop: one eval and one draw per token; the lowest logit of
     * each position is the next test's draft */
    int32_t tok = f.tokens[split];
    int below = 0; /* positions whose lowest logit is under the min-p cut */
    for (uint32_t i = 0; ok && i < K; i++) {
        ok = v4f_session_eval(a, &tok, 1, la, 0, NULL, &err) == V4F_OK;
        low[i] = 0;
        float hi = la[0];
        for (uint32_t v = 1; v < V; v++) {
            if (la[v] < la[low[i]]) low[i] = (int32_t)v;
            hi = la[v] > hi ? la[v] : hi;
        }
        below += (double)(hi - la[low[i]]) / sp.temperature > log(1.0 / sp.min_p) + 1e-3;
        tok = loop[i] = v4f_sampler_sample(sa, la);
    }
    CHECK(ok && below == (int)K, "%s spec sampled: samplers and loop: %s; %d of %u lowest logits under the cut", name, err.msg,
          below, K);
    sample_oracle orc = {low, split, K};
    v4f_session_set_draft_hook(b, sample_draft, &orc);
    v4f_session_set_draft_gate(b, false);
    const v4f_drawer dw = v4f_sampler_drawer(sb);
    if (ok) {
        gate_rec rec = {.n = 0};
        uint32_t n_eval = 0;
        int32_t next = -1;
        const v4f_spec_stats s0 = v4f_session_spec_stats(b);
        ok = v4f_session_decode_sampled(b, f.tokens[split], K, &dw, gate_cb, &rec, lb, &n_eval, &next, &err) == V4F_OK;
        const v4f_spec_stats s1 = v4f_session_spec_stats(b);
        int same = ok && n_eval == K && rec.n == (int)K - 1 && next == loop[K - 1];
        for (uint32_t i = 0; same && i + 1 < K; i++) same = rec.picks[i] == loop[i];
        CHECK(same && s1.drafted - s0.drafted == K - 1 && s1.accepted == s0.accepted,
              "%s spec sampled, unpickable drafts: tokens %s the plain loop's, %llu drafts, %llu kept (%s)", name,
              same ? "equal" : "differ from", (unsigned long long)(s1.drafted - s0.drafted),
              (unsigned long long)(s1.accepted - s0.accepted), err.msg);
        printf("  spec sampled, unpickable drafts: %s\n", same ? "tokens equal the plain sampled loop" : "DIFFER");
    }
    /* the first pick after the split, drafted with the likeliest token */
    int32_t ids[4];
    double probs[4];
    long cnt[4] = {0};
    ok = ok && v4f_session_rewind(a, split, &err) == V4F_OK &&
         v4f_session_eval(a, f.tokens + split, 1, la, 0, NULL, &err) == V4F_OK;
    const uint32_t nd = ok ? v4f_sampler_dist(sa, la, ids, probs, 4) : 0;
    int32_t likely = nd ? ids[0] : 0;
    orc.drafts = &likely;
    orc.n = 1;
    const v4f_spec_stats s0 = v4f_session_spec_stats(b);
    for (int trial = 0; ok && nd && trial < SPEC_SAMPLE_TRIALS; trial++) {
        v4f_sampler_reseed(sb, 1000 + (uint64_t)trial);
        uint32_t n_eval = 0;
        int32_t next = -1;
        ok = v4f_session_rewind(b, split, &err) == V4F_OK &&
             v4f_session_decode_sampled(b, f.tokens[split], 2, &dw, stop_first, NULL, lb, &n_eval, &next, &err) ==
                 V4F_OK &&
             n_eval == 1;
        for (uint32_t k = 0; ok && k < nd && k < 4; k++) cnt[k] += next == ids[k];
    }
    const v4f_spec_stats s1 = v4f_session_spec_stats(b);
    CHECK(ok && nd && s1.drafted - s0.drafted == SPEC_SAMPLE_TRIALS, "%s spec sampled trials: %u candidates, %llu drafts (%s)",
          name, nd, (unsigned long long)(s1.drafted - s0.drafted), err.msg);
    for (uint32_t k = 0; ok && k < nd && k < 4; k++) {
        const double fr = (double)cnt[k] / SPEC_SAMPLE_TRIALS;
        const double sigma = sqrt(probs[k] * (1 - probs[k]) / SPEC_SAMPLE_TRIALS);
        CHECK(fabs(fr - probs[k]) <= SPEC_SAMPLE_SIGMAS * sigma + 1e-12,
              "%s spec sampled: token %d (%s) drawn %.4f of trials, p %.4f (%.1f sigma)", name, ids[k],
              k ? "not drafted" : "the draft", fr, probs[k], sigma > 0 ? fabs(fr - probs[k]) / sigma : 0.0);
        printf("  spec sampled: %s token p %.4f, drawn %.4f of %d trials\n", k ? "other" : "drafted", probs[k], fr,
               SPEC_SAMPLE_TRIALS);
    }
    v4f_sampler_free(sa);
    v4f_sampler_free(sb);
    spec_close(&f, a, b);
    free(la);
    free(lb);
}

/* Two sessions of one model at once, both with routed experts in host
 * memory: the second cannot pin the pages the first pinned (it takes a
 * pinned copy) and its uploads of ranges next to them go through a bounce
 * buffer; both give the logits of a session with every expert on the
 * device, bit for bit. */
static void test_two_host_sessions(const char *name) {
    char msg[1200];
    fixture f;
    if (!golden_fixture_open(g_dir, name, true, &f, msg, sizeof msg)) {
        fprintf(stderr, "%s\n", msg);
        g_fail++;
        return;
    }
    const uint32_t V = (uint32_t)f.vocab, split = (uint32_t)f.split;
    v4f_session_opts o = {.n_ctx = 512, .backend = V4F_BACKEND_CUDA};
    v4f_session *s[3] = {NULL, NULL, NULL};
    v4f_err err = {0};
    float *lg = malloc(3 * (size_t)V * sizeof(float));
    int ok = v4f_session_new(f.m, &o, &s[0], &err) == V4F_OK;
    setenv("V4F_CUDA_MAX_EXPERTS", "3", 1);
    for (int i = 1; ok && i < 3; i++) ok = v4f_session_new(f.m, &o, &s[i], &err) == V4F_OK;
    unsetenv("V4F_CUDA_MAX_EXPERTS");
    for (int i = 0; ok && i < 3; i++)
        ok = v4f_session_eval(s[i], f.tokens, split, lg + (size_t)i * V, V4F_EVAL_LOGITS_LAST, NULL, &err) == V4F_OK &&
             (i == 0 || v4f_gpu_experts_on_device(v4f_session_gpu(s[i])) == 3);
    const int same = ok && !memcmp(lg, lg + V, V * sizeof(float)) && !memcmp(lg, lg + 2 * (size_t)V, V * sizeof(float));
    CHECK(same, "%s: two sessions with host-resident experts: %s (%s)", name, ok ? "logits differ" : "failed", err.msg);
    printf("  two sessions with host-resident experts at once: %s\n", same ? "logits equal the all-device run" : "FAIL");
    for (int i = 0; i < 3; i++) v4f_session_free(s[i]);
    free(lg);
    golden_fixture_close(&f);
}

/* The decode graph of a drafting session writes each step's final HC state
 * to the speculative ring (the rows the MTP block takes after plain steps):
 * one-token evals (the graph) and a 3-token eval (a chunk) leave rows equal,
 * bit for bit, to the HC states of the same evals on a session without
 * drafts (the same kernels). */
static void test_spec_ring(const char *name) {
    fixture f;
    v4f_session *a, *b;
    if (!spec_open(name, V4F_PRECISION_DEFAULT, &f, &a, &b)) return;
    const uint32_t split = (uint32_t)f.split, n = 8;
    v4f_err err = {0};
    const size_t HD = (size_t)f.m->cfg.n_hc * f.m->cfg.n_embd;
    float *ha = malloc(n * HD * sizeof(float)), *hb = malloc(HD * sizeof(float));
    float *lg = malloc((size_t)f.vocab * sizeof(float));
    int ok = 1;
    for (uint32_t i = 0; ok && i < n - 3; i++) /* reference: the same evals, HC out */
        ok = v4f_session_eval(a, f.tokens + split + i, 1, NULL, 0, ha + i * HD, &err) == V4F_OK;
    ok = ok && v4f_session_eval(a, f.tokens + split + n - 3, 3, NULL, 0, ha + (n - 3) * HD, &err) == V4F_OK;
    for (uint32_t i = 0; ok && i < n - 3; i++)
        ok = v4f_session_eval(b, f.tokens + split + i, 1, NULL, 0, NULL, &err) == V4F_OK;
    ok = ok && v4f_session_eval(b, f.tokens + split + n - 3, 3, NULL, V4F_EVAL_LOGITS_LAST, NULL, &err) == V4F_OK;
    CHECK(ok, "%s spec ring: evals failed: %s", name, err.msg);
    int same = 0;
    for (uint32_t i = 0; ok && i < n; i++) {
        ok = v4f_gpu_spec_ring_row(v4f_session_gpu(b), split + i, hb, &err) == V4F_OK;
        same += ok && memcmp(hb, ha + i * HD, HD * sizeof(float)) == 0;
    }
    CHECK(ok && same == (int)n, "%s spec ring: %d of %u rows equal the HC states (%s)", name, same, n, err.msg);
    printf("  spec ring: %d of %u rows of evals equal the HC states\n", same, n);
    /* pipelined greedy decoding (drafting off: the plain graph loop, as
     * while the draft gate pauses) writes the rows of its steps too */
    enum { G = 6 };
    gate_rec rec = {.n = 0};
    uint32_t n_eval = 0;
    int32_t next = -1, in[G];
    in[0] = f.tokens[split + n];
    v4f_session_set_drafting(b, false);
    ok = ok && v4f_session_decode_greedy(b, in[0], G, -1, gate_cb, &rec, lg, &n_eval, &next, &err) == V4F_OK &&
         n_eval == G;
    v4f_session_set_drafting(b, true);
    for (int i = 1; ok && i < G; i++) in[i] = rec.picks[i - 1];
    for (int i = 0; ok && i < G; i++)
        ok = v4f_session_eval(a, in + i, 1, NULL, 0, ha + (size_t)(i % n) * HD, &err) == V4F_OK &&
             v4f_gpu_spec_ring_row(v4f_session_gpu(b), split + n + (uint32_t)i, hb, &err) == V4F_OK &&
             memcmp(hb, ha + (size_t)(i % n) * HD, HD * sizeof(float)) == 0;
    CHECK(ok, "%s spec ring: a row of pipelined greedy decoding differs from the HC state (%s)", name, err.msg);
    printf("  spec ring: the %d rows of pipelined greedy steps %s\n", G, ok ? "equal the HC states" : "DIFFER");
    spec_close(&f, a, b);
    free(ha);
    free(hb);
    free(lg);
}

/* The MTP draft of a speculative step (v4f_gpu_spec_step: the block over
 * the pending rows, its query side and FFN for the last row only) equals the
 * greedy pick from the block's logits of every row (v4f_session_mtp_eval)
 * at that position, up to a near-tie (SPEC_TIE_MARGIN); after prefixes
 * longer and shorter than the block's window, with its routed experts on
 * the device and in host memory (V4F_CUDA_MTP_HOST=1). */
static void test_mtp_drafts(const char *name) {
    fixture f;
    char msg[1200];
    if (!golden_fixture_open(g_dir, name, true, &f, msg, sizeof msg)) {
        fprintf(stderr, "%s\n", msg);
        g_fail++;
        return;
    }
    const uint32_t V = (uint32_t)f.vocab, split = (uint32_t)f.split, cap = f.m->cfg.n_swa + 2;
    const size_t HD = (size_t)f.m->cfg.n_hc * f.m->cfg.n_embd;
    float *hc = malloc((size_t)(split + 1) * HD * sizeof(float)), *lg = malloc((size_t)split * V * sizeof(float));
    int32_t *ptok = malloc((size_t)cap * sizeof(int32_t));
    v4f_session_opts o = {.n_ctx = 512, .backend = V4F_BACKEND_CUDA, .enable_mtp = true};
    v4f_session *s = NULL;
    v4f_err err = {0};
    int ok = v4f_session_new(f.m, &o, &s, &err) == V4F_OK &&
             v4f_session_eval(s, f.tokens, split + 1, NULL, 0, hc, &err) == V4F_OK &&
             v4f_session_mtp_eval(s, hc, f.tokens + 1, split, lg, &err) == V4F_OK;
    v4f_session_free(s);
    CHECK(ok, "%s mtp drafts: reference failed: %s", name, err.msg);
    const uint32_t prefix[3] = {split, split - 5, 40 < split ? 40 : split / 2};
    o.mtp_draft = true;
    for (int host = 0; ok && host <= 1; host++) {
        int agree = 0, ties = 0;
        for (int k = 0; ok && k < 3; k++) {
            const uint32_t P = prefix[k], pn = P < cap ? P : cap, pp0 = P - pn;
            for (uint32_t i = 0; i < pn; i++) ptok[i] = f.tokens[pp0 + 1 + i];
            if (host) setenv("V4F_CUDA_MTP_HOST", "1", 1);
            ok = v4f_session_new(f.m, &o, &s, &err) == V4F_OK;
            unsetenv("V4F_CUDA_MTP_HOST");
            int32_t out[3] = {-1, -1, -1};
            ok = ok && v4f_gpu_mtp_host(v4f_session_gpu(s)) == (host == 1) &&
                 v4f_session_eval(s, f.tokens, P, NULL, V4F_EVAL_LOGITS_LAST, NULL, &err) == V4F_OK &&
                 v4f_gpu_spec_step(v4f_session_gpu(s), ptok, pn, pp0, f.tokens[P], P, -1, -1, out, &err) == V4F_OK;
            v4f_session_free(s);
            CHECK(ok, "%s mtp drafts (host %d, prefix %u): %s", name, host, P, err.msg);
            if (!ok) break;
            float *row = lg + (size_t)(P - 1) * V;
            const int32_t want = v4f_argmax_f32_except(row, V, -1);
            float second = -INFINITY;
            for (uint32_t v = 0; v < V; v++)
                if ((int32_t)v != want && row[v] > second) second = row[v];
            agree += out[0] == want;
            ties += out[0] != want && row[want] - second < SPEC_TIE_MARGIN;
            CHECK(out[0] == want || row[want] - second < SPEC_TIE_MARGIN,
                  "%s mtp drafts (host %d, prefix %u, %u pending rows): draft %d, the block's pick %d (margin %.3g)", name,
                  host, P, pn, out[0], want, row[want] - second);
        }
        printf("  mtp drafts, experts %s: %d of 3 equal the block's picks (%d near-ties)\n",
               host ? "in host memory" : "on the GPU", agree, ties);
    }
    free(hc);
    free(lg);
    free(ptok);
    golden_fixture_close(&f);
}

/* The MTP block on the GPU (fixture convention): the final HC states of a
 * one-call prefill and the next tokens give the draft logits; Tier A vs
 * the golden mtp.logits in ref precision, Tier B in the default mode. */
static void test_mtp(const char *name, v4f_precision prec) {
    char path[512], mpath[512], gpath[512];
    snprintf(path, sizeof path, "%s/%s.gguf", g_dir, name);
    snprintf(mpath, sizeof mpath, "%s/%s.mtp.gguf", g_dir, name);
    snprintf(gpath, sizeof gpath, "%s/%s.golden.gguf", g_dir, name);
    v4f_model *m = NULL;
    v4f_gguf *gold_f = NULL;
    v4f_err err = {0};
    if (v4f_model_open(path, mpath, &m, NULL, &err) != V4F_OK || v4f_gguf_open(gpath, &gold_f, &err) != V4F_OK) {
        fprintf(stderr, "mtp open: %s\n", err.msg);
        g_fail++;
        v4f_model_close(m);
        return;
    }
    const v4f_gguf_tensor *tk = v4f_gguf_tensor_find(gold_f, "tokens"), *gm = v4f_gguf_tensor_find(gold_f, "mtp.logits");
    int n = (int)tk->ne[0], V = (int)m->cfg.n_vocab;
    size_t HD = (size_t)m->cfg.n_hc * m->cfg.n_embd;
    float *hc = calloc((size_t)n * HD, sizeof(float)), *lg = calloc((size_t)n * V, sizeof(float));
    v4f_session_opts o = {.n_ctx = 512, .precision = prec, .enable_mtp = true, .backend = V4F_BACKEND_CUDA};
    v4f_session *s = NULL;
    int ok = v4f_session_new(m, &o, &s, &err) == V4F_OK;
    ok = ok && v4f_session_eval(s, tk->data, (uint32_t)n, NULL, 0, hc, &err) == V4F_OK;
    ok = ok && v4f_session_mtp_eval(s, hc, (const int32_t *)tk->data + 1, (uint32_t)n - 1, lg, &err) == V4F_OK;
    CHECK(ok && gm, "%s: GPU MTP failed: %s", name, err.msg);
    if (ok && gm) {
        golden_stats st;
        golden_compare(lg, gm->data, n - 1, V, &st);
        char what[128];
        bool ref = prec == V4F_PRECISION_REF;
        snprintf(what, sizeof what, "%s mtp %s", name, ref ? "ref" : "default");
        bool pass = ref ? golden_tier_a(&st) : golden_tier_b(&st);
        report_cmp(what, &st, pass);
        CHECK(pass, "%s", what);
    }
    v4f_session_free(s);
    s = NULL;
    /* the MTP block's routed experts in host memory (V4F_CUDA_MTP_HOST=1,
     * as when the main model's do not all fit): the same kernels read them
     * over the bus, so the same bits */
    if (ok) {
        float *lh = calloc((size_t)n * V, sizeof(float));
        setenv("V4F_CUDA_MTP_HOST", "1", 1);
        int okh = v4f_session_new(m, &o, &s, &err) == V4F_OK;
        unsetenv("V4F_CUDA_MTP_HOST");
        const v4f_gpu *g = okh ? v4f_session_gpu(s) : NULL;
        okh = okh && v4f_gpu_mtp_host(g) && v4f_gpu_experts_on_device(g) == m->cfg.n_expert;
        okh = okh && v4f_session_mtp_eval(s, hc, (const int32_t *)tk->data + 1, (uint32_t)n - 1, lh, &err) == V4F_OK;
        CHECK(okh && memcmp(lg, lh, (size_t)(n - 1) * V * sizeof(float)) == 0,
              "%s: MTP %s with its experts in host memory differs from the device-resident run (%s)", name,
              prec == V4F_PRECISION_REF ? "ref" : "default", err.msg);
        v4f_session_free(s);
        free(lh);
    }
    free(hc);
    free(lg);
    v4f_gguf_close(gold_f);
    v4f_model_close(m);
}

/* One session over tokens[0..n) in one call (the backend splits it into
 * chunks), logits of every position. */
static int run_long(const fixture *f, v4f_backend be, v4f_precision prec, const int32_t *tokens, int n, float *lg) {
    v4f_session_opts o = {.n_ctx = (uint32_t)n + 8, .precision = prec, .backend = be};
    v4f_session *s = NULL;
    v4f_err err = {0};
    if (v4f_session_new(f->m, &o, &s, &err) != V4F_OK) {
        fprintf(stderr, "long session: %s\n", err.msg);
        return 0;
    }
    int ok = v4f_session_eval(s, tokens, (uint32_t)n, lg, 0, NULL, &err) == V4F_OK;
    if (!ok) fprintf(stderr, "long eval: %s\n", err.msg);
    v4f_session_free(s);
    return ok;
}

/* A prompt longer than one GPU prefill chunk: 9,000 tokens (the fixture's
 * prompt repeated) are an 8,192-token chunk and a partial one, with far more
 * compressed rows and top-k candidates than the 300-token golden run. No
 * golden data exists for it, so the CPU in reference precision is the
 * reference: the GPU must meet Tier A in reference precision and Tier B in
 * the default mode (tensor-core GEMMs and attention). */
static void test_long(const char *name) {
    fixture f;
    if (!fixture_open(name, &f)) {
        g_fail++;
        return;
    }
    enum { N_LONG = 9000 };
    const size_t V = (size_t)f.vocab;
    int32_t *tok = malloc(N_LONG * sizeof(int32_t));
    float *ref = malloc(N_LONG * V * sizeof(float)), *lg = malloc(N_LONG * V * sizeof(float));
    for (int i = 0; i < N_LONG; i++) tok[i] = f.tokens[i % f.n];
    char what[128];
    golden_stats st;
    if (!run_long(&f, V4F_BACKEND_CPU, V4F_PRECISION_REF, tok, N_LONG, ref)) {
        CHECK(0, "%s long: cpu run", name);
    } else {
        for (int p = 0; p < 2; p++) {
            const v4f_precision prec = p ? V4F_PRECISION_DEFAULT : V4F_PRECISION_REF;
            snprintf(what, sizeof what, "%s long %d tokens gpu %s vs cpu ref", name, N_LONG, p ? "default" : "ref");
            if (!run_long(&f, V4F_BACKEND_CUDA, prec, tok, N_LONG, lg)) {
                CHECK(0, "%s: gpu run", what);
                continue;
            }
            golden_compare(lg, ref, N_LONG, f.vocab, &st);
            const int ok = p ? golden_tier_b(&st) : golden_tier_a(&st);
            report_cmp(what, &st, ok);
            CHECK(ok, "%s", what);
        }
    }
    free(tok), free(ref), free(lg);
    golden_fixture_close(&f);
}

/* Last-position logits without the HC output (forward_cuda.c, out_rows:
 * the last layer's query side and FFN for the last row only, none in the
 * chunks before), against a session with the same chunks (max_chunk 37:
 * 37, 37, 26; GPU results depend on the chunking) that computes every row:
 * the decode steps after the prefill give the same bits (the KV rows are the
 * same), and the last row's logits (the one row takes the decode kernels)
 * are within GOLDEN_LAST_ROW_ABS in reference precision (as the CPU test
 * forward_logits_last_skips_rows) and within Tier B in the default one (its
 * prefill GEMMs round activations to f16, the decode matvecs do not). The
 * fixtures end with a ratio-128 layer; a synthetic tiny model of 5 layers
 * ends with a ratio-4 one (indexer queries, scores and top-k on the moved
 * row), as the published model does. */
static void logits_last_case(const char *name, const v4f_model *m, const int32_t *tokens) {
    const int n = 100, steps = 3;
    const size_t vocab = m->cfg.n_vocab;
    float *all = calloc((size_t)n * vocab, 4), *last = calloc(vocab, 4);
    float *da = calloc(vocab, 4), *db = calloc(vocab, 4);
    for (int prec = 0; prec < 2; prec++) {
        v4f_session_opts o = {.n_ctx = 512, .precision = prec ? V4F_PRECISION_REF : V4F_PRECISION_DEFAULT,
                              .backend = V4F_BACKEND_CUDA};
        o.max_chunk = 37;
        v4f_session *a = NULL, *b = NULL;
        v4f_err err = {0};
        int ok = v4f_session_new(m, &o, &a, &err) == V4F_OK && v4f_session_new(m, &o, &b, &err) == V4F_OK;
        ok = ok && v4f_session_eval(a, tokens, (uint32_t)n, all, 0, NULL, &err) == V4F_OK;
        ok = ok && v4f_session_eval(b, tokens, (uint32_t)n, last, V4F_EVAL_LOGITS_LAST, NULL, &err) == V4F_OK;
        CHECK(ok, "%s logits-last sessions: %s", name, err.msg);
        if (ok) {
            golden_stats st;
            golden_compare(last, all + (size_t)(n - 1) * vocab, 1, (int)vocab, &st);
            const double d = st.max_abs;
            char buf[400];
            golden_format(&st, buf, sizeof buf);
            printf("  %s %s: last-row logits vs all rows: max abs %.2e, %s\n", name, prec ? "ref" : "default", d, buf);
            CHECK(prec ? d < GOLDEN_LAST_ROW_ABS : golden_tier_b(&st), "%s %s: last-position logits differ by %g", name,
                  prec ? "ref" : "default", d);
            for (int k = 0; k < steps && ok; k++) {
                ok = v4f_session_eval(a, tokens + n + k, 1, da, 0, NULL, &err) == V4F_OK &&
                     v4f_session_eval(b, tokens + n + k, 1, db, 0, NULL, &err) == V4F_OK;
                CHECK(ok && memcmp(da, db, vocab * 4) == 0, "%s %s: decode step %d after the prefill differs", name,
                      prec ? "ref" : "default", k);
            }
        }
        v4f_session_free(a);
        v4f_session_free(b);
    }
    free(all);
    free(last);
    free(da);
    free(db);
}

static void test_logits_last(const char *name) {
    fixture f;
    if (!fixture_open(name, &f)) return;
    logits_last_case(name, f.m, f.tokens);
    golden_fixture_close(&f);
}

static void test_logits_last_synth(void) {
    void *buf = NULL;
    size_t size = 0;
    v4f_err err = {0};
    v4f_gguf *g = NULL;
    v4f_model *m = NULL;
    int ok = v4f_synth_build_memory("tiny", 5, 3, &buf, &size, &err) == V4F_OK &&
             v4f_gguf_open_memory(buf, size, "synth-image", &g, &err) == V4F_OK &&
             v4f_model_open_gguf(g, NULL, &m, NULL, &err) == V4F_OK;
    CHECK(ok, "synthetic tiny:5: %s", err.msg);
    if (ok) {
        CHECK(m->cfg.compress_ratio[m->cfg.n_layer - 1] == 4, "synthetic tiny:5: last layer ratio %u",
              m->cfg.compress_ratio[m->cfg.n_layer - 1]);
        int32_t tok[103];
        uint64_t r = 12345;
        for (int i = 0; i < 103; i++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            tok[i] = (int32_t)((r >> 33) % m->cfg.n_vocab);
        }
        logits_last_case("synthetic tiny:5", m, tok);
    }
    v4f_model_close(m); /* it owns g, also after a failed open */
    if (buf) v4f_synth_memory_free(buf, size);
}

/* Short evals (2..V4F_CUDA_SHORT_EVAL tokens, logits of the last one or none) replay the
 * decode graph once per token: they must equal single-token evals bit for
 * bit (logits, and the next decode step, so positions and state advanced
 * alike), and agree with the batched kernels (V4F_CUDA_SHORT_EVAL=0) as the
 * last-row test does: GOLDEN_LAST_ROW_ABS in reference precision, Tier B
 * in the default one; bit for bit up to SHORT_COLS_EXACT tokens, which the
 * batched path multiplies column by column with the decode matvecs
 * (forward_cuda.c GPU_COLS_EVAL, 6: a speculative verify step then equals
 * one-token steps). */
#define SHORT_COLS_EXACT 5
static void test_short_eval(const char *name) {
    fixture f;
    if (!fixture_open(name, &f)) {
        g_fail++;
        return;
    }
    const size_t V = f.vocab;
    float *la = calloc(V, 4), *lb = calloc(V, 4), *lc = calloc(V, 4);
    static const int ks[] = {2, 5, 8, 3};
    for (int prec = 0; prec < 2; prec++) {
        const char *pn = prec ? "ref" : "default";
        v4f_session_opts o = {.n_ctx = 512, .precision = prec ? V4F_PRECISION_REF : V4F_PRECISION_DEFAULT,
                              .backend = V4F_BACKEND_CUDA};
        v4f_session *a = NULL, *b = NULL, *c = NULL;
        v4f_err err = {0};
        setenv("V4F_CUDA_SHORT_EVAL", "8", 1); /* a: up to 8 tokens by the decode graph, whatever the default */
        int ok = v4f_session_new(f.m, &o, &a, &err) == V4F_OK && v4f_session_new(f.m, &o, &b, &err) == V4F_OK;
        setenv("V4F_CUDA_SHORT_EVAL", "0", 1);
        ok = ok && v4f_session_new(f.m, &o, &c, &err) == V4F_OK;
        unsetenv("V4F_CUDA_SHORT_EVAL");
        v4f_session *all[3] = {a, b, c};
        for (int i = 0; ok && i < 3; i++)
            ok = v4f_session_eval(all[i], f.tokens, (uint32_t)f.split, NULL, 0, NULL, &err) == V4F_OK;
        CHECK(ok, "%s %s: short-eval sessions: %s", name, pn, err.msg);
        int at = f.split;
        for (size_t e = 0; ok && e < sizeof ks / sizeof ks[0]; e++) {
            const int k = ks[e];
            const bool nolog = e == 3; /* the last case asks for no logits */
            ok = v4f_session_eval(a, f.tokens + at, (uint32_t)k, nolog ? NULL : la, V4F_EVAL_LOGITS_LAST, NULL, &err) ==
                     V4F_OK &&
                 v4f_session_eval(c, f.tokens + at, (uint32_t)k, nolog ? NULL : lc, V4F_EVAL_LOGITS_LAST, NULL, &err) ==
                     V4F_OK;
            for (int i = 0; ok && i < k; i++)
                ok = v4f_session_eval(b, f.tokens + at + i, 1, lb, 0, NULL, &err) == V4F_OK;
            at += k;
            CHECK(ok, "%s %s: eval of %d tokens: %s", name, pn, k, err.msg);
            if (!ok) break;
            CHECK(v4f_session_pos(a) == (uint32_t)at && v4f_session_pos(b) == (uint32_t)at &&
                      v4f_session_pos(c) == (uint32_t)at,
                  "%s %s: positions %u %u %u after %d tokens, want %d", name, pn, v4f_session_pos(a),
                  v4f_session_pos(b), v4f_session_pos(c), k, at);
            if (nolog) continue;
            CHECK(memcmp(la, lb, V * 4) == 0, "%s %s: a short eval of %d tokens differs from %d single steps", name,
                  pn, k, k);
            golden_stats st;
            golden_compare(la, lc, 1, (int)V, &st);
            char buf[400];
            golden_format(&st, buf, sizeof buf);
            printf("  %s %s: %d-token eval, decode graph vs batched kernels: max abs %.2e, %s\n", name, pn, k,
                   st.max_abs, buf);
            CHECK(prec ? st.max_abs < GOLDEN_LAST_ROW_ABS : golden_tier_b(&st),
                  "%s %s: %d-token eval differs from the batched kernels by %g", name, pn, k, st.max_abs);
            CHECK(k > SHORT_COLS_EXACT || memcmp(la, lc, V * 4) == 0,
                  "%s %s: the batched kernels' %d-token eval is not bit for bit the decode graph's (max abs %g)", name,
                  pn, k, st.max_abs);
        }
        /* one more step after the last (logit-less) short eval */
        ok = ok && v4f_session_eval(a, f.tokens + at, 1, la, 0, NULL, &err) == V4F_OK &&
             v4f_session_eval(b, f.tokens + at, 1, lb, 0, NULL, &err) == V4F_OK;
        CHECK(ok && memcmp(la, lb, V * 4) == 0, "%s %s: the step after a short eval differs (%s)", name, pn, err.msg);
        for (int i = 0; i < 3; i++) v4f_session_free(all[i]);
    }
    free(la);
    free(lb);
    free(lc);
    golden_fixture_close(&f);
}

/* Compact (default precision) snapshots: the KV rows coded on the device
 * (FP8 / FP4 kernels) are the same bytes as the host coders make
 * (V4F_CUDA_KV_DEVICE_CODES=0), and a restore decoded on the device or on
 * the host continues bitwise like the saved session. */
static void test_snapshot_codes(const char *name) {
    fixture f;
    if (!fixture_open(name, &f)) {
        g_fail++;
        return;
    }
    const size_t nt = (size_t)(f.n - f.split) * f.vocab;
    float *a = malloc(nt * sizeof(float)), *b = malloc(nt * sizeof(float));
    v4f_session_opts o = {.n_ctx = 512, .precision = V4F_PRECISION_DEFAULT, .backend = V4F_BACKEND_CUDA};
    v4f_err err = {0};
    v4f_snapshot_mem dev = {0}, host = {0};
    v4f_session *g1 = NULL;
    int ok = v4f_session_new(f.m, &o, &g1, &err) == V4F_OK;
    ok = ok && v4f_session_eval(g1, f.tokens, (uint32_t)f.split, NULL, 0, NULL, &err) == V4F_OK;
    ok = ok && v4f_snapshot_mem_save(g1, NULL, 0, &dev, &err) == V4F_OK;
    setenv("V4F_CUDA_KV_DEVICE_CODES", "0", 1);
    ok = ok && v4f_snapshot_mem_save(g1, NULL, 0, &host, &err) == V4F_OK;
    unsetenv("V4F_CUDA_KV_DEVICE_CODES");
    ok = ok && decode_tail(&f, g1, a);
    CHECK(ok, "%s: compact GPU snapshot failed: %s", name, err.msg);
    if (ok) {
        const int same = dev.len == host.len && memcmp(dev.data, host.data, dev.len) == 0;
        CHECK(same, "%s: device-coded snapshot (%zu bytes) differs from the host-coded one (%zu)", name, dev.len,
              host.len);
        printf("%-40s %s (%zu bytes)\n", "  KV codes device == host", same ? "ok" : "FAIL", dev.len);
    }
    for (int mode = 0; ok && mode < 2; mode++) { /* restore: device decode, then host decode */
        if (mode) setenv("V4F_CUDA_KV_DEVICE_CODES", "0", 1);
        v4f_session *g2 = NULL;
        dev.off = 0;
        int ok2 = v4f_session_new(f.m, &o, &g2, &err) == V4F_OK &&
                  v4f_snapshot_mem_load(g2, &dev, NULL, 0, &err) == V4F_OK && decode_tail(&f, g2, b);
        unsetenv("V4F_CUDA_KV_DEVICE_CODES");
        CHECK(ok2, "%s: compact GPU snapshot restore failed: %s", name, err.msg);
        if (ok2) {
            const int same = memcmp(a, b, nt * sizeof(float)) == 0;
            CHECK(same, "%s: decode after a compact restore (%s decode) differs", name, mode ? "host" : "device");
            printf("%-40s %s\n", mode ? "  compact restore, host decode: bitwise" : "  compact restore, device decode: bitwise",
                   same ? "ok" : "FAIL");
        }
        v4f_session_free(g2);
    }
    v4f_session_free(g1);
    v4f_snapshot_mem_free(&dev);
    v4f_snapshot_mem_free(&host);
    free(a);
    free(b);
    golden_fixture_close(&f);
}

/* ---- the server's live session on the GPU (src/server/srv.c) --------------------
 * Requests on one session reuse its KV ("live" text, "rewind" to a token
 * prefix); each greedy reply must equal a fresh session's reply to the same
 * prompt. */
typedef struct srv_text {
    char buf[4096];
    size_t n;
} srv_text;

static bool srv_text_cb(void *ud, const char *s, size_t n) {
    srv_text *t = ud;
    if (t->n + n < sizeof t->buf) {
        memcpy(t->buf + t->n, s, n);
        t->n += n;
        t->buf[t->n] = 0;
    }
    return true;
}

static int srv_run(v4f_srv *w, const char *prompt, srv_text *out, v4f_srv_result *r) {
    v4f_srv_job j = {.prompt = prompt, .prompt_len = strlen(prompt), .max_tokens = 8};
    j.sp = v4f_sampler_params_default();
    j.sp.temperature = 0;
    memset(out, 0, sizeof *out);
    const v4f_srv_sink k = {.ud = out, .text = srv_text_cb};
    v4f_err err = {0};
    if (v4f_srv_generate(w, &j, &k, r, &err) != V4F_OK) {
        fprintf(stderr, "srv: %s\n", err.msg);
        return 0;
    }
    return 1;
}

static void test_serve_session(const char *name) {
    fixture f;
    if (!fixture_open(name, &f)) {
        CHECK(0, "%s: fixture", name);
        return;
    }
    v4f_tok *tok = NULL;
    v4f_err err = {0};
    v4f_session *a = new_sess(&f, V4F_BACKEND_CUDA);
    int ok = a && v4f_tok_from_gguf(f.m->gguf, &tok, &err) == V4F_OK;
    CHECK(ok, "%s: serve session: %s", name, err.msg);
    if (ok) {
        const v4f_srv_opts so = {.n_vocab = f.vocab};
        v4f_srv *w = v4f_srv_new(a, tok, 512, &so);
        const char *p1 = "The quick brown fox jumps", *p2 = "The quick brown fox jumps over the lazy dog";
        /* 1: p2 extends p1 but not p1's reply (8 tokens in the KV): back to p1;
         * 2: p1 again: back to all but its last token; 3: the last prompt and
         * its reply's text plus more: the live text (or, when the reply ended
         * inside a character the stream held back, its token prefix) */
        static char p4[8192];
        const char *prompts[] = {p1, p2, p1, p4};
        const char *want_cache[] = {"cold", "rewind", "rewind", NULL};
        srv_text prev = {0};
        for (int i = 0; i < 4; i++) {
            if (i == 3) snprintf(p4, sizeof p4, "%s%s and then", p1, prev.buf);
            srv_text got, fresh;
            v4f_srv_result r, rf;
            v4f_session *b = new_sess(&f, V4F_BACKEND_CUDA);
            v4f_srv *wb = b ? v4f_srv_new(b, tok, 512, &so) : NULL;
            ok = wb && srv_run(w, prompts[i], &got, &r) && srv_run(wb, prompts[i], &fresh, &rf);
            CHECK(ok, "%s: serve request %d", name, i);
            if (ok) {
                if (want_cache[i])
                    CHECK(!strcmp(r.cache, want_cache[i]), "%s: request %d: cache %s, expected %s", name, i, r.cache,
                          want_cache[i]);
                else
                    CHECK(!strcmp(r.cache, "live") || (!strcmp(r.cache, "rewind") && r.n_cached > 5),
                          "%s: request %d: cache %s, %u cached", name, i, r.cache, r.n_cached);
                CHECK(i == 0 || r.n_cached > 0, "%s: request %d: nothing reused", name, i);
                CHECK(got.n == fresh.n && !memcmp(got.buf, fresh.buf, got.n) && r.n_gen == rf.n_gen,
                      "%s: request %d (%s): reply differs from a fresh session's (%zu vs %zu bytes)", name, i,
                      r.cache, got.n, fresh.n);
            }
            prev = got;
            v4f_srv_free(wb);
            v4f_session_free(b);
        }
        v4f_srv_free(w);
    }
    v4f_tok_free(tok);
    v4f_session_free(a);
    golden_fixture_close(&f);
}

/* A card with experts in host memory: a long prefill switches placement,
 * after which the session cannot rewind behind it; the server keeps a
 * snapshot for such prompts, and a retry of the prompt restores it and
 * gives the fresh session's reply. */
static void test_serve_flex(const char *name) {
    fixture f;
    if (!fixture_open(name, &f)) {
        CHECK(0, "%s: fixture", name);
        return;
    }
    const v4f_config *c = &f.m->cfg;
    char kv[32];
    snprintf(kv, sizeof kv, "%u,%u", c->n_expert / 2 + 1, c->n_expert / 4 ? c->n_expert / 4 : 1);
    setenv("V4F_CUDA_CHUNK_TIGHT", "64", 1);
    setenv("V4F_CUDA_MAX_EXPERTS", kv, 1);
    v4f_tok *tok = NULL;
    v4f_err err = {0};
    int ok = v4f_tok_from_gguf(f.m->gguf, &tok, &err) == V4F_OK;
    static char prompt[4096];
    size_t n = 0;
    for (int i = 0; i < 120; i++) n += (size_t)snprintf(prompt + n, sizeof prompt - n, "w%d ", i);
    const v4f_srv_opts so = {.n_vocab = f.vocab, .snapshot_min = 4};
    /* 80 reply tokens: more than the 64-position reach */
    v4f_srv_job j = {.prompt = prompt, .prompt_len = n, .max_tokens = 80};
    j.sp = v4f_sampler_params_default();
    j.sp.temperature = 0;
    srv_text t[3];
    v4f_srv_result r[3];
    memset(t, 0, sizeof t);
    const v4f_srv_sink k[3] = {{.ud = &t[0], .text = srv_text_cb}, {.ud = &t[1], .text = srv_text_cb},
                               {.ud = &t[2], .text = srv_text_cb}};
    /* one session: the prompt, then the same prompt again; then a fresh one */
    for (int sess = 0; sess < 2 && ok; sess++) {
        v4f_session *s = new_sess(&f, V4F_BACKEND_CUDA);
        v4f_srv *w = s ? v4f_srv_new(s, tok, 512, &so) : NULL;
        ok = w != NULL;
        for (int i = sess ? 2 : 0; i < (sess ? 3 : 2) && ok; i++)
            ok = v4f_srv_generate(w, &j, &k[i], &r[i], &err) == V4F_OK;
        v4f_srv_free(w);
        v4f_session_free(s);
    }
    CHECK(ok, "%s: flex serve: %s", name, err.msg);
    if (ok) {
        CHECK(r[0].n_prompt > 130 && !strcmp(r[0].cache, "cold"), "%s: flex: %u prompt tokens, %s", name,
              r[0].n_prompt, r[0].cache);
        CHECK(!strcmp(r[1].cache, "snapshot") && r[1].n_cached == r[1].n_prompt - 1, "%s: flex retry: %s, %u of %u cached",
              name, r[1].cache, r[1].n_cached, r[1].n_prompt);
        CHECK(t[0].n == t[2].n && !memcmp(t[0].buf, t[2].buf, t[0].n) && t[1].n == t[2].n &&
                  !memcmp(t[1].buf, t[2].buf, t[1].n),
              "%s: flex replies differ from a fresh session's (%zu / %zu / %zu bytes)", name, t[0].n, t[1].n, t[2].n);
    }
    unsetenv("V4F_CUDA_CHUNK_TIGHT");
    unsetenv("V4F_CUDA_MAX_EXPERTS");
    v4f_tok_free(tok);
    golden_fixture_close(&f);
}

int main(int argc, char **argv) {
    if (argc > 1) g_dir = argv[1];
    if (!v4f_gpu_available()) {
        fprintf(stderr, "test_cuda_model: no CUDA device\n");
        return 1;
    }
    const char *names[] = {"tiny-f16", "tiny-q2", "tiny-q4"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (argc <= 2 || !strcmp(argv[2], names[i])) { /* [DIR [NAME]] */
            test_fixture(names[i]);
            test_snapshots(names[i]);
            test_snapshot_codes(names[i]);
            test_mtp(names[i], V4F_PRECISION_REF);
            test_mtp(names[i], V4F_PRECISION_DEFAULT);
            test_mtp_drafts(names[i]);
            test_logits_last(names[i]);
            test_greedy_pipe(names[i]);
            test_spec_greedy(names[i], V4F_PRECISION_REF);
            test_spec_greedy(names[i], V4F_PRECISION_DEFAULT);
            test_spec_gate(names[i]);
            test_spec_ring(names[i]);
            test_spec_sampled(names[i]);
            test_short_eval(names[i]);
            test_serve_session(names[i]);
        }
    if (argc <= 2 || !strcmp(argv[2], "tiny-q2")) test_long("tiny-q2");
    if (argc <= 2 || !strcmp(argv[2], "tiny-q2")) test_serve_flex("tiny-q2");
    if (argc <= 2 || !strcmp(argv[2], "tiny-q2")) {
        /* drafting with routed experts in host memory (the verify step
         * stages the routed ones from the host, paused stretches run the
         * decode graph's DMA copies); the reference session holds them all */
        printf("speculative decoding, 3 routed experts per layer on the GPU (V4F_CUDA_MAX_EXPERTS=3):\n");
        g_spec_b_experts = "3";
        test_spec_greedy("tiny-q2", V4F_PRECISION_DEFAULT);
        test_spec_gate("tiny-q2");
        test_spec_sampled("tiny-q2");
        g_spec_b_experts = NULL;
        test_two_host_sessions("tiny-q2");
    }
    if (argc <= 2 || !strcmp(argv[2], "synth")) test_logits_last_synth(); /* [DIR synth]: only this */
    /* one chain only (V4F_CUDA_FORK=0, the schedule used when no second
     * stream can be made): whole HC_pre kernels, compressors in line */
    if (argc <= 2 || !strcmp(argv[2], "tiny-q2")) {
        printf("single stream (V4F_CUDA_FORK=0):\n");
        setenv("V4F_CUDA_FORK", "0", 1);
        test_fixture("tiny-q2");
        unsetenv("V4F_CUDA_FORK");
    }
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
