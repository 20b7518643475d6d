/*
 * test_requant.c - `quantize` (src/model/requant.c): tiny-q4's experts
 * re-quantized to the q2 types; everything else byte-identical; each
 * converted matrix within the 2-bit rounding error of its q4 weights; the
 * result's forward pass near tiny-q4's golden logits. (The fixtures' q2 and
 * q4 files were quantized from different random weights, rel. difference
 * ~1.4, so the official q2 is no yardstick here.)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "model/forward.h"
#include "model/model.h"
#include "model/requant.h"
#include "core/ggml_type.h"
#include "quant/quant.h"
#include "../test.h"
#include "golden_cmp.h"

/* docs/TOLERANCES.md "## quantize": 2-bit rounding of the q4 experts
 * (measured on tiny-q4: IQ2_XXS 0.329-0.332, Q2_K 0.220; the forward pass
 * 0.472 rel. RMS from the q4 golden logits; wrong or misplaced experts give
 * ~1 and more) */
#define REQUANT_IQ2_XXS_REL_ERR_MAX 0.36
#define REQUANT_Q2_K_REL_ERR_MAX 0.25
#define REQUANT_LOGITS_REL_RMS_MAX 0.6

/* ||deq(x) - deq(y)|| / ||deq(y)|| over a whole tensor */
static double tensor_rel_err(const v4f_gguf_tensor *x, const v4f_gguf_tensor *y) {
    const int64_t cols = (int64_t)y->ne[0], rows = (int64_t)(y->n_elems / y->ne[0]);
    uint64_t rbx = 0, rby = 0;
    v4f_type_row_bytes(x->type, (uint64_t)cols, &rbx);
    v4f_type_row_bytes(y->type, (uint64_t)cols, &rby);
    float *a = malloc((size_t)cols * sizeof(float)), *b = malloc((size_t)cols * sizeof(float));
    double num = 0, den = 0;
    for (int64_t r = 0; r < rows; r++) {
        v4f_dequant_row_ref(x->type, (const uint8_t *)x->data + r * rbx, a, cols);
        v4f_dequant_row_ref(y->type, (const uint8_t *)y->data + r * rby, b, cols);
        for (int64_t c = 0; c < cols; c++) {
            num += ((double)a[c] - b[c]) * ((double)a[c] - b[c]);
            den += (double)b[c] * b[c];
        }
    }
    free(a);
    free(b);
    return den > 0 ? sqrt(num / den) : INFINITY;
}

static bool prefill_all(const v4f_model *m, const int32_t *tokens, int n, float *logits) {
    const v4f_session_opts so = {.n_ctx = 512, .n_threads = 2};
    v4f_session *s = NULL;
    v4f_err err = {0};
    if (v4f_session_new(m, &so, &s, &err)) return false;
    bool ok = v4f_session_prefill(s, tokens, (uint32_t)n, logits, &err) == V4F_OK;
    v4f_session_free(s);
    return ok;
}

TEST(requant_q4_to_q2) {
    char dir[512], out[600];
    snprintf(dir, sizeof dir, "%s", test_fixture_path("model"));
    snprintf(out, sizeof out, "%s/requant-q2.gguf", test_tmp_dir());
    golden_fixture q4, q2;
    char msg[1200];
    REQUIRE(golden_fixture_open(dir, "tiny-q4", false, &q4, msg, sizeof msg));
    REQUIRE(golden_fixture_open(dir, "tiny-q2", false, &q2, msg, sizeof msg));
    v4f_err err = {0};
    v4f_requant_stats st;
    const v4f_requant_opts o = {.experts = "q2", .n_threads = 2};
    REQUIRE(v4f_requant(q4.m, out, &o, &st, &err) == V4F_OK);
    CHECK_EQ_INT(st.n_converted, 3 * q4.m->cfg.n_layer);
    v4f_model *m = NULL;
    REQUIRE(v4f_model_open(out, NULL, &m, NULL, &err) == V4F_OK);
    /* expert types as the q2 file's; every other tensor the same bytes */
    const v4f_gguf *a = q4.m->gguf, *b = m->gguf, *ref = q2.m->gguf;
    REQUIRE(v4f_gguf_n_tensors(a) == v4f_gguf_n_tensors(b));
    int n_same = 0, n_conv = 0;
    for (uint64_t i = 0; i < v4f_gguf_n_tensors(a); i++) {
        const v4f_gguf_tensor *ta = v4f_gguf_tensor_at(a, i), *tb = v4f_gguf_tensor_at(b, i);
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)ta->name.len, ta->name.ptr);
        const v4f_gguf_tensor *tr = v4f_gguf_tensor_find(ref, name);
        REQUIRE(tr && tb->name.len == ta->name.len && !memcmp(tb->name.ptr, ta->name.ptr, ta->name.len));
        CHECK_MSG(tb->type == tr->type, "%s: %u, the q2 file has %u", name, tb->type, tr->type);
        if (strstr(name, "_exps.")) {
            /* each converted matrix: its rounding error against the q4 weights */
            const double e = tensor_rel_err(tb, ta);
            const double lim = tb->type == V4F_TYPE_IQ2_XXS ? REQUANT_IQ2_XXS_REL_ERR_MAX : REQUANT_Q2_K_REL_ERR_MAX;
            if (test_verbose() && n_conv < 3) printf("    %s: rel. error %.4f\n", name, e);
            CHECK_MSG(e <= lim, "%s: rel. error %.4f > %.2f", name, e, lim);
            n_conv++;
        } else {
            CHECK_MSG(tb->n_bytes == ta->n_bytes && !memcmp(tb->data, ta->data, ta->n_bytes), "%s changed", name);
            n_same++;
        }
    }
    CHECK(n_conv == (int)st.n_converted && n_same > 0);
    /* the same file again into q2: nothing to do */
    CHECK(v4f_requant(m, out, &o, &st, &err) == V4F_STATUS_INVALID_ARG);
    /* the forward pass of the result, against the q4 golden logits */
    float *l_ours = malloc((size_t)q4.n * q4.vocab * sizeof(float));
    REQUIRE(l_ours && prefill_all(m, q4.tokens, q4.n, l_ours));
    const float *g4 = golden_tensor(&q4, "prefill.logits");
    REQUIRE(g4);
    golden_stats gs;
    golden_compare(l_ours, g4, q4.n, q4.vocab, &gs);
    char s1[256];
    golden_format(&gs, s1, sizeof s1);
    if (test_verbose()) printf("    requantized q2 vs the q4 golden logits: %s\n", s1);
    CHECK_MSG(gs.rel_mean <= REQUANT_LOGITS_REL_RMS_MAX && isfinite(gs.max_abs), "%s", s1);
    free(l_ours);
    v4f_model_close(m);
    golden_fixture_close(&q4);
    golden_fixture_close(&q2);
}

TEST(requant_rejects_bad_requests) {
    v4f_model *m = NULL;
    v4f_err err = {0};
    REQUIRE(v4f_model_open(test_fixture_path("model/tiny-q2.gguf"), NULL, &m, NULL, &err) == V4F_OK);
    v4f_requant_stats st;
    char out[600];
    snprintf(out, sizeof out, "%s/requant-bad.gguf", test_tmp_dir());
    v4f_requant_opts o = {.experts = "q3"};
    CHECK(v4f_requant(m, out, &o, &st, &err) == V4F_STATUS_INVALID_ARG && strstr(err.msg, "q3"));
    o.experts = "q2"; /* already q2 */
    CHECK(v4f_requant(m, out, &o, &st, &err) == V4F_STATUS_INVALID_ARG && strstr(err.msg, "already"));
    o.experts = "q4"; /* onto the input itself */
    CHECK(v4f_requant(m, test_fixture_path("model/tiny-q2.gguf"), &o, &st, &err) == V4F_STATUS_INVALID_ARG);
    CHECK(strstr(err.msg, "input") != NULL);
    snprintf(out, sizeof out, "%s/no/such/dir/x.gguf", test_tmp_dir());
    CHECK(v4f_requant(m, out, &o, &st, &err) != V4F_OK);
    v4f_model_close(m);
}

/* The command: exit codes and what it says. */
static int run_cmd(const char *args, char *out, size_t cap) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s quantize %s 2>&1", test_bin(), args);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    const int rc = pclose(p);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -2;
}

TEST(cli_quantize) {
    SKIP_NO_BIN();
    char args[1500], out[4096];
    const char *q4 = test_fixture_path("model/tiny-q4.gguf");
    snprintf(args, sizeof args, "%s %s/cli-q2.gguf --experts q2 --threads 2", q4, test_tmp_dir());
    CHECK_EQ_INT(run_cmd(args, out, sizeof out), 0);
    CHECK_MSG(strstr(out, "18 re-quantized") != NULL, "%s", out);
    snprintf(args, sizeof args, "%s/cli-q2.gguf %s/cli-q2b.gguf --experts q2", test_tmp_dir(), test_tmp_dir());
    CHECK_EQ_INT(run_cmd(args, out, sizeof out), 1);
    CHECK_MSG(strstr(out, "already in the q2 layout") != NULL, "%s", out);
    snprintf(args, sizeof args, "%s %s/x.gguf --experts q9", q4, test_tmp_dir());
    CHECK_EQ_INT(run_cmd(args, out, sizeof out), 2);
    snprintf(args, sizeof args, "%s %s/x.gguf", q4, test_tmp_dir());
    CHECK_EQ_INT(run_cmd(args, out, sizeof out), 2);
    snprintf(args, sizeof args, "/nonexistent.gguf %s/x.gguf --experts q2", test_tmp_dir());
    CHECK_EQ_INT(run_cmd(args, out, sizeof out), 1);
    CHECK_MSG(strstr(out, "/nonexistent.gguf") != NULL, "%s", out);
}
