/*
 * test_synth.c - synthetic models: the tiny preset written to a file loads
 * as a valid model; the in-memory image holds byte-identical tensor data
 * (independent of thread count); every quant recipe dequantizes to the
 * intended RMS with zero mean; the full-q2/full-q4 directories (skeleton
 * images, 43 layers) pass the strict published-layout check; a 1-layer
 * full-q2 generated for real loads; the vocabulary is consistent; the CLI
 * rejects bad usage with exit code 2.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "../test.h"
#include "core/ggml_type.h"
#include "gguf/gguf.h"
#include "model/forward.h"
#include "model/model.h"
#include "model/synth.h"
#include "quant/quant.h"

/* Relative tolerance on the dequantized RMS of a generated matrix
 * (docs/TOLERANCES.md, "## synth"). */
#define V4F_TOL_SYNTH_RMS_REL 0.05

static v4f_model *open_image(void *buf, size_t size, v4f_err *err) {
    v4f_gguf *g = NULL;
    if (v4f_gguf_open_memory(buf, size, "synth-image", &g, err)) return NULL;
    v4f_model *m = NULL;
    if (v4f_model_open_gguf(g, NULL, &m, NULL, err)) return NULL;
    return m;
}

TEST(synth_parse_spec) {
    const char *p = NULL;
    uint32_t l = 99;
    v4f_err err = {0};
    CHECK_STATUS(v4f_synth_parse_spec("tiny", &p, &l, &err), V4F_OK);
    CHECK_STR(p, "tiny");
    CHECK_EQ_INT(l, 0);
    CHECK_STATUS(v4f_synth_parse_spec("full-q2:8", &p, &l, &err), V4F_OK);
    CHECK_STR(p, "full-q2");
    CHECK_EQ_INT(l, 8);
    CHECK(v4f_synth_parse_spec("huge", &p, &l, &err) != V4F_OK);
    CHECK(v4f_synth_parse_spec("tiny:0", &p, &l, &err) != V4F_OK);
    CHECK(v4f_synth_parse_spec("tiny:x", &p, &l, &err) != V4F_OK);
    CHECK(v4f_synth_parse_spec("", &p, &l, &err) != V4F_OK);
}

TEST(synth_tiny_file_loads_and_matches_memory) {
    char path[512];
    snprintf(path, sizeof path, "%s/synth-tiny.gguf", test_tmp_dir());
    v4f_synth_opts o = {.preset = "tiny", .seed = 7};
    v4f_err err = {0};
    CHECK_STATUS(v4f_synth_write_file(path, &o, &err), V4F_OK);
    v4f_model *m = NULL;
    v4f_status st = v4f_model_open(path, NULL, &m, NULL, &err);
    CHECK_MSG(st == V4F_OK, "open: %s", err.msg);
    REQUIRE(m);
    CHECK_EQ_INT(m->cfg.n_layer, 6);
    CHECK_EQ_INT(m->cfg.n_embd, 256);
    CHECK_EQ_INT(m->cfg.n_vocab, 640);
    CHECK(v4f_model_published_variant(m, NULL) == NULL);

    /* the in-memory image (single thread) has identical tensor bytes */
    void *buf = NULL;
    size_t size = 0;
    v4f_synth_opts om = {.preset = "tiny", .seed = 7, .n_threads = 1};
    REQUIRE(v4f_synth_build_memory_ex(&om, &buf, &size, &err) == V4F_OK);
    v4f_gguf *g = NULL;
    REQUIRE(v4f_gguf_open_memory(buf, size, "tiny-mem", &g, &err) == V4F_OK);
    CHECK_EQ_INT(v4f_gguf_n_tensors(g), v4f_gguf_n_tensors(m->gguf));
    CHECK_EQ_INT(v4f_gguf_n_kv(g), v4f_gguf_n_kv(m->gguf));
    for (uint64_t i = 0; i < v4f_gguf_n_tensors(m->gguf); i++) {
        const v4f_gguf_tensor *a = v4f_gguf_tensor_at(m->gguf, i);
        const v4f_gguf_tensor *b = v4f_gguf_tensor_at(g, i);
        REQUIRE(a && b);
        CHECK(a->name.len == b->name.len && !memcmp(a->name.ptr, b->name.ptr, a->name.len));
        CHECK(a->n_bytes == b->n_bytes && a->file_offset == b->file_offset);
        CHECK_MSG(!memcmp(a->data, b->data, a->n_bytes), "tensor %.*s differs", (int)a->name.len,
                  a->name.ptr);
    }
    /* the whole file equals the image byte for byte */
    CHECK_EQ_INT(v4f_gguf_file_size(m->gguf), size);
    v4f_gguf_close(g);
    /* a different seed gives different weights */
    void *buf2 = NULL;
    size_t size2 = 0;
    REQUIRE(v4f_synth_build_memory("tiny", 0, 8, &buf2, &size2, &err) == V4F_OK);
    CHECK(size2 == size);
    CHECK(memcmp(buf, buf2, size) != 0);
    v4f_synth_memory_free(buf2, size2);
    v4f_synth_memory_free(buf, size);
    v4f_model_close(m);
    remove(path);
}

TEST(synth_quant_recipes_rms) {
    const uint32_t types[] = {V4F_TYPE_F16, V4F_TYPE_Q8_0, V4F_TYPE_Q2_K, V4F_TYPE_Q4_K,
                              V4F_TYPE_IQ2_XXS};
    const uint64_t n_in = 2048, rows = 64;
    float *deq = malloc(n_in * sizeof *deq);
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        v4f_synth_tensor t = {.type = types[k], .n_dims = 2, .ne = {n_in, rows, 1},
                              .role = V4F_SYNTH_ROLE_MAT, .a = 1.0f};
        snprintf(t.name, sizeof t.name, "test.%s", v4f_type_name(types[k]));
        uint64_t rb = 0;
        REQUIRE(v4f_type_row_bytes(t.type, n_in, &rb));
        uint8_t *raw = malloc(rb * rows);
        v4f_synth_gen_rows(&t, 3, 0, rows, raw);
        double s = 0, s2 = 0;
        int finite = 1;
        for (uint64_t r = 0; r < rows; r++) {
            v4f_dequant_row_ref(t.type, raw + r * rb, deq, (int64_t)n_in);
            for (uint64_t i = 0; i < n_in; i++) {
                finite &= isfinite(deq[i]) != 0;
                s += deq[i];
                s2 += (double)deq[i] * deq[i];
            }
        }
        double n = (double)(n_in * rows);
        double rms = sqrt(s2 / n), want = 1.0 / sqrt((double)n_in);
        CHECK(finite);
        CHECK_MSG(fabs(rms / want - 1) <= V4F_TOL_SYNTH_RMS_REL, "%s: rms %.5f want %.5f",
                  v4f_type_name(t.type), rms, want);
        CHECK_MSG(fabs(s / n) <= 0.05 * want, "%s: mean %.6f", v4f_type_name(t.type), s / n);
        /* rows are independent of the range they are generated in */
        uint8_t *part = malloc(rb * 3);
        v4f_synth_gen_rows(&t, 3, 10, 13, part);
        CHECK(!memcmp(part, raw + 10 * rb, rb * 3));
        free(part);
        free(raw);
    }
    free(deq);
}

TEST(synth_tid2eid_distinct) {
    v4f_synth_tensor t = {.type = V4F_TYPE_I32, .n_dims = 2, .ne = {6, 5000, 1},
                          .role = V4F_SYNTH_ROLE_TID, .a = 256};
    snprintf(t.name, sizeof t.name, "blk.0.ffn_gate_tid2eid.weight");
    int32_t *ids = malloc(6 * 5000 * sizeof *ids);
    v4f_synth_gen_rows(&t, 1, 0, 5000, ids);
    int ok = 1;
    for (int r = 0; r < 5000; r++)
        for (int i = 0; i < 6; i++) {
            int32_t e = ids[r * 6 + i];
            ok &= e >= 0 && e < 256;
            for (int k = 0; k < i; k++) ok &= ids[r * 6 + k] != e;
        }
    CHECK(ok);
    free(ids);
}

static void check_published(const char *preset, const char *want) {
    void *buf = NULL;
    size_t size = 0;
    v4f_err err = {0};
    v4f_synth_opts o = {.preset = preset, .seed = 1, .skeleton = true};
    v4f_status st = v4f_synth_build_memory_ex(&o, &buf, &size, &err);
    if (st == V4F_STATUS_OOM) {
        printf("    skip %s skeleton: %s\n", preset, err.msg);
        return;
    }
    CHECK_MSG(st == V4F_OK, "%s: %s", preset, err.msg);
    if (st) return;
    v4f_model *m = open_image(buf, size, &err);
    CHECK_MSG(m != NULL, "%s: %s", preset, err.msg);
    if (m) {
        v4f_err why = {0};
        const char *v = v4f_model_published_variant(m, &why);
        CHECK_MSG(v && !strcmp(v, want), "%s: variant %s (%s)", preset, v ? v : "none", why.msg);
        CHECK_EQ_INT(m->cfg.n_layer, 43);
        CHECK_EQ_INT(m->cfg.n_vocab, 129280);
        v4f_model_close(m);
    }
    v4f_synth_memory_free(buf, size);
}

TEST(synth_full_presets_published_layout) {
    check_published("full-q2", "q2");
    check_published("full-q4", "q4");
    /* sizes of the plans match the published files (PERF.md: 80.76 / 153.33 GiB) */
    v4f_synth_plan *p = NULL;
    v4f_err err = {0};
    REQUIRE(v4f_synth_plan_new("full-q2", 0, &p, &err) == V4F_OK);
    CHECK_NEAR((double)v4f_synth_plan_data_bytes(p) / (1u << 30), 80.76, 0.02);
    v4f_synth_plan_free(p);
    REQUIRE(v4f_synth_plan_new("full-q4", 0, &p, &err) == V4F_OK);
    CHECK_NEAR((double)v4f_synth_plan_data_bytes(p) / (1u << 30), 153.33, 0.02);
    v4f_synth_plan_free(p);
}

typedef struct hc_stats {
    double max_rms;
    int bad;
    uint32_t n_embd, n_hc, layers_seen;
} hc_stats;

static void on_hc(void *ud, uint32_t layer, uint32_t pos, const float *hc) {
    hc_stats *h = ud;
    uint64_t n = (uint64_t)h->n_embd * h->n_hc;
    double s2 = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (!isfinite(hc[i])) h->bad++;
        s2 += (double)hc[i] * hc[i];
    }
    double rms = sqrt(s2 / (double)n);
    if (rms > h->max_rms) h->max_rms = rms;
    h->layers_seen++;
}

/* Prefill n_tok random tokens; every HC state and logit must be finite and
 * of sane size (V4F_SYNTH_MAX_HC_RMS, V4F_SYNTH_MAX_LOGIT). */
#define V4F_SYNTH_MAX_HC_RMS 100.0
#define V4F_SYNTH_MAX_LOGIT 1000.0
static void check_forward_finite(const v4f_model *m, uint32_t n_tok, const char *what) {
    v4f_session *s = NULL;
    v4f_err err = {0};
    v4f_session_opts so = {.n_ctx = n_tok + 4};
    CHECK_MSG(v4f_session_new(m, &so, &s, &err) == V4F_OK, "%s: %s", what, err.msg);
    if (!s) return;
    hc_stats h = {.n_embd = m->cfg.n_embd, .n_hc = m->cfg.n_hc};
    v4f_trace tr = {.ud = &h, .hc_after_layer = on_hc};
    v4f_session_set_trace(s, &tr);
    int32_t *tok = malloc(n_tok * sizeof *tok);
    test_rng r = {42};
    tok[0] = 0;
    for (uint32_t i = 1; i < n_tok; i++) tok[i] = 2 + (int32_t)(test_rng_u64(&r) % (m->cfg.n_vocab - 2));
    float *logits = malloc((size_t)m->cfg.n_vocab * sizeof *logits);
    CHECK_MSG(v4f_session_eval(s, tok, n_tok, logits, V4F_EVAL_LOGITS_LAST, NULL, &err) == V4F_OK,
              "%s: %s", what, err.msg);
    CHECK_MSG(v4f_session_decode(s, tok[1], logits, &err) == V4F_OK, "%s: %s", what, err.msg);
    double s2 = 0, mx = 0;
    int bad = 0;
    for (uint32_t i = 0; i < m->cfg.n_vocab; i++) {
        bad += !isfinite(logits[i]);
        s2 += (double)logits[i] * logits[i];
        if (fabs(logits[i]) > mx) mx = fabs(logits[i]);
    }
    double rms = sqrt(s2 / m->cfg.n_vocab);
    CHECK_MSG(bad == 0 && h.bad == 0, "%s: %d non-finite logits, %d non-finite HC values", what,
              bad, h.bad);
    CHECK_MSG(h.layers_seen >= m->cfg.n_layer, "%s: traced %u layers", what, h.layers_seen);
    CHECK_MSG(h.max_rms < V4F_SYNTH_MAX_HC_RMS, "%s: HC rms %.3g", what, h.max_rms);
    CHECK_MSG(mx < V4F_SYNTH_MAX_LOGIT && rms > 1e-3, "%s: logits rms %.3g max %.3g", what, rms, mx);
    if (test_verbose())
        printf("    %s: max HC rms %.3f, logits rms %.3f max %.3f\n", what, h.max_rms, rms, mx);
    free(logits);
    free(tok);
    v4f_session_free(s);
}

TEST(synth_activations_finite) {
    const char *presets[] = {"tiny", "small"};
    for (int k = 0; k < 2; k++) {
        void *buf = NULL;
        size_t size = 0;
        v4f_err err = {0};
        REQUIRE(v4f_synth_build_memory(presets[k], 0, 11, &buf, &size, &err) == V4F_OK);
        v4f_model *m = open_image(buf, size, &err);
        CHECK_MSG(m != NULL, "%s", err.msg);
        if (m) check_forward_finite(m, 48, presets[k]);
        v4f_model_close(m);
        v4f_synth_memory_free(buf, size);
    }
}

TEST(synth_full_q2_one_layer_loads) {
    void *buf = NULL;
    size_t size = 0;
    v4f_err err = {0};
    v4f_status st = v4f_synth_build_memory("full-q2", 1, 5, &buf, &size, &err);
    if (st == V4F_STATUS_OOM) {
        printf("    skip: %s\n", err.msg);
        return;
    }
    REQUIRE(st == V4F_OK);
    v4f_model *m = open_image(buf, size, &err);
    CHECK_MSG(m != NULL, "%s", err.msg);
    if (m) {
        CHECK_EQ_INT(m->cfg.n_layer, 1);
        CHECK_EQ_INT(m->cfg.n_compress_ratio, 2);
        CHECK(v4f_model_published_variant(m, NULL) == NULL); /* 1 layer, not 43 */
        CHECK_EQ_INT(m->layers[0].ffn_gate_exps.type, V4F_TYPE_IQ2_XXS);
        CHECK_EQ_INT(m->layers[0].ffn_down_exps.type, V4F_TYPE_Q2_K);
        check_forward_finite(m, 8, "full-q2:1");
        v4f_model_close(m);
    }
    v4f_synth_memory_free(buf, size);
}

TEST(synth_vocab_consistent) {
    void *buf = NULL;
    size_t size = 0;
    v4f_err err = {0};
    REQUIRE(v4f_synth_build_memory("tiny", 0, 1, &buf, &size, &err) == V4F_OK);
    v4f_gguf *g = NULL;
    REQUIRE(v4f_gguf_open_memory(buf, size, "tiny", &g, &err) == V4F_OK);
    const v4f_gguf_kv *tok = v4f_gguf_kv_find(g, "tokenizer.ggml.tokens");
    const v4f_gguf_kv *mer = v4f_gguf_kv_find(g, "tokenizer.ggml.merges");
    REQUIRE(tok && mer);
    CHECK_EQ_INT(tok->arr_n, 640);
    CHECK(mer->arr_n > 100);
    v4f_str s;
    REQUIRE(v4f_gguf_arr_str(g, tok, 0, &s));
    CHECK(v4f_str_eq(s, "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"));
    REQUIRE(v4f_gguf_arr_str(g, tok, 1, &s));
    CHECK(v4f_str_eq(s, "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"));
    REQUIRE(v4f_gguf_arr_str(g, tok, 2 + 32, &s)); /* byte 0x20 -> U+0120 */
    CHECK(v4f_str_eq(s, "\xc4\xa0"));
    int found_user = 0, found_think = 0;
    /* all tokens unique; every merge "A B" has A, B and AB in the vocab */
    for (uint64_t i = 0; i < tok->arr_n; i++) {
        REQUIRE(v4f_gguf_arr_str(g, tok, i, &s));
        found_user |= v4f_str_eq(s, "<\xef\xbd\x9cUser\xef\xbd\x9c>");
        found_think |= v4f_str_eq(s, "</think>");
        for (uint64_t k = 0; k < i; k++) {
            v4f_str t;
            v4f_gguf_arr_str(g, tok, k, &t);
            CHECK(!(t.len == s.len && !memcmp(t.ptr, s.ptr, s.len)));
        }
    }
    CHECK(found_user && found_think);
    for (uint64_t i = 0; i < mer->arr_n; i++) {
        v4f_str ms;
        REQUIRE(v4f_gguf_arr_str(g, mer, i, &ms));
        const char *sp = memchr(ms.ptr, ' ', ms.len);
        REQUIRE(sp);
        char joined[256];
        size_t la = (size_t)(sp - ms.ptr), lb = ms.len - la - 1;
        REQUIRE(la + lb < sizeof joined);
        memcpy(joined, ms.ptr, la);
        memcpy(joined + la, sp + 1, lb);
        int have_a = 0, have_b = 0, have_ab = 0;
        for (uint64_t k = 0; k < tok->arr_n; k++) {
            v4f_str t;
            v4f_gguf_arr_str(g, tok, k, &t);
            have_a |= t.len == la && !memcmp(t.ptr, ms.ptr, la);
            have_b |= t.len == lb && !memcmp(t.ptr, sp + 1, lb);
            have_ab |= t.len == la + lb && !memcmp(t.ptr, joined, la + lb);
        }
        CHECK_MSG(have_a && have_b && have_ab, "merge %llu '%.*s'", (unsigned long long)i,
                  (int)ms.len, ms.ptr);
    }
    v4f_gguf_close(g);
    v4f_synth_memory_free(buf, size);
}

static int run_cli(const char *args) {
    const char *bin = getenv("V4F_BIN");
    if (!bin) return -1;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s >/dev/null 2>&1", bin, args);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -2;
}

TEST(synth_cli_usage) {
    if (!getenv("V4F_BIN")) {
        printf("    skip: V4F_BIN not set\n");
        return;
    }
    char args[600];
    CHECK_EQ_INT(run_cli("synth --help"), 0);
    CHECK_EQ_INT(run_cli("synth"), 2);
    snprintf(args, sizeof args, "synth %s/x.gguf", test_tmp_dir());
    CHECK_EQ_INT(run_cli(args), 2); /* no preset */
    snprintf(args, sizeof args, "synth %s/x.gguf --preset nope", test_tmp_dir());
    CHECK_EQ_INT(run_cli(args), 2);
    snprintf(args, sizeof args, "synth %s/x.gguf --preset tiny --layers 0", test_tmp_dir());
    CHECK_EQ_INT(run_cli(args), 2);
    snprintf(args, sizeof args, "synth %s/x.gguf --preset tiny --bogus", test_tmp_dir());
    CHECK_EQ_INT(run_cli(args), 2);
    snprintf(args, sizeof args, "synth /nonexistent-dir/x.gguf --preset tiny -q");
    CHECK_EQ_INT(run_cli(args), 1);
    snprintf(args, sizeof args, "synth %s/cli-tiny.gguf --preset tiny --layers 3 --seed 5 -q",
             test_tmp_dir());
    CHECK_EQ_INT(run_cli(args), 0);
    snprintf(args, sizeof args, "%s/cli-tiny.gguf", test_tmp_dir());
    v4f_model *m = NULL;
    v4f_err err = {0};
    CHECK_MSG(v4f_model_open(args, NULL, &m, NULL, &err) == V4F_OK, "%s", err.msg);
    if (m) CHECK_EQ_INT(m->cfg.n_layer, 3);
    v4f_model_close(m);
    /* --mtp: the same preset's MTP file, which binds to the model */
    snprintf(args, sizeof args, "synth %s/cli-tiny.mtp.gguf --preset tiny --layers 3 --seed 5 --mtp -q",
             test_tmp_dir());
    CHECK_EQ_INT(run_cli(args), 0);
    char path[600], mpath[600];
    snprintf(path, sizeof path, "%s/cli-tiny.gguf", test_tmp_dir());
    snprintf(mpath, sizeof mpath, "%s/cli-tiny.mtp.gguf", test_tmp_dir());
    m = NULL;
    CHECK_MSG(v4f_model_open(path, mpath, &m, NULL, &err) == V4F_OK, "%s", err.msg);
    if (m) CHECK(m->has_mtp);
    v4f_model_close(m);
    /* the model file is not an MTP file, nor the other way round */
    CHECK(v4f_model_open(path, path, &m, NULL, &err) != V4F_OK);
    CHECK(v4f_model_open(mpath, NULL, &m, NULL, &err) != V4F_OK);
}

/* The MTP file of a preset (v4f_synth_opts.mtp): tiny's has the tensor
 * directory of the tiny-q2 fixture's MTP file (names, order, types,
 * shapes), validates as an MTP file, binds to the tiny model and drafts
 * finite logits; the full presets' block keeps its routed experts in Q4_K,
 * as the published MTP file does. */
TEST(synth_mtp_block) {
    v4f_err err = {0};
    void *buf = NULL, *mbuf = NULL;
    size_t size = 0, msize = 0;
    v4f_synth_opts o = {.preset = "tiny", .seed = 3, .n_threads = 1};
    REQUIRE(v4f_synth_build_memory_ex(&o, &buf, &size, &err) == V4F_OK);
    o.mtp = true;
    REQUIRE(v4f_synth_build_memory_ex(&o, &mbuf, &msize, &err) == V4F_OK);
    v4f_gguf *fx = NULL, *g = NULL, *mg = NULL;
    REQUIRE(v4f_gguf_open(test_fixture_path("model/tiny-q2.mtp.gguf"), &fx, &err) == V4F_OK);
    REQUIRE(v4f_gguf_open_memory(mbuf, msize, "synth-mtp", &mg, &err) == V4F_OK);
    CHECK_EQ_INT(v4f_gguf_n_tensors(mg), v4f_gguf_n_tensors(fx));
    for (uint64_t i = 0; i < v4f_gguf_n_tensors(fx) && i < v4f_gguf_n_tensors(mg); i++) {
        const v4f_gguf_tensor *a = v4f_gguf_tensor_at(fx, i), *b = v4f_gguf_tensor_at(mg, i);
        CHECK_MSG(a->name.len == b->name.len && !memcmp(a->name.ptr, b->name.ptr, a->name.len) && a->type == b->type &&
                      a->n_dims == b->n_dims && a->ne[0] == b->ne[0] && a->ne[1] == b->ne[1] && a->ne[2] == b->ne[2],
                  "MTP tensor %llu: %.*s vs the fixture's %.*s", (unsigned long long)i, (int)b->name.len, b->name.ptr,
                  (int)a->name.len, a->name.ptr);
    }
    v4f_gguf_close(fx);
    v4f_config mc;
    CHECK(v4f_mtp_file_validate(mg, &mc, NULL, &err) == V4F_OK);
    REQUIRE(v4f_gguf_open_memory(buf, size, "synth-main", &g, &err) == V4F_OK);
    v4f_model *m = NULL;
    REQUIRE(v4f_model_open_gguf(g, mg, &m, NULL, &err) == V4F_OK);
    CHECK(m->has_mtp);
    /* the block drafts: finite logits for (hc, next token) pairs */
    v4f_session_opts so = {.n_ctx = 64, .n_threads = 1, .enable_mtp = true, .mtp_draft = true};
    v4f_session *s = NULL;
    REQUIRE(v4f_session_new(m, &so, &s, &err) == V4F_OK);
    CHECK(!v4f_session_drafts(s)); /* drafts are a GPU feature */
    const int32_t toks[4] = {5, 17, 99, 300};
    const size_t HD = (size_t)m->cfg.n_hc * m->cfg.n_embd, V = m->cfg.n_vocab;
    float *hc = malloc(4 * HD * sizeof(float)), *lg = malloc(3 * V * sizeof(float));
    REQUIRE(hc && lg);
    CHECK(v4f_session_eval(s, toks, 4, NULL, 0, hc, &err) == V4F_OK);
    CHECK(v4f_session_mtp_eval(s, hc, toks + 1, 3, lg, &err) == V4F_OK);
    int bad = 0;
    for (size_t i = 0; i < 3 * V; i++) bad += !isfinite(lg[i]);
    CHECK_EQ_INT(bad, 0);
    free(hc);
    free(lg);
    v4f_session_free(s);
    v4f_model_close(m);
    /* drafts need the block */
    v4f_session_opts bad_o = {.n_ctx = 64, .n_threads = 1, .mtp_draft = true};
    v4f_model *m2 = open_image(buf, size, &err);
    REQUIRE(m2);
    CHECK(v4f_session_new(m2, &bad_o, &s, &err) == V4F_STATUS_INVALID_ARG);
    v4f_model_close(m2);
    v4f_synth_memory_free(buf, size);
    v4f_synth_memory_free(mbuf, msize);
    /* full size: Q4_K routed experts, Q8_0 projections */
    v4f_synth_plan *p = NULL;
    REQUIRE(v4f_synth_plan_new_mtp("full-q2", 0, &p, &err) == V4F_OK);
    int experts = 0;
    for (uint32_t i = 0; i < v4f_synth_plan_n_tensors(p); i++) {
        const v4f_synth_tensor *t = v4f_synth_plan_tensor(p, i);
        CHECK(!strncmp(t->name, "mtp.0.", 6));
        if (strstr(t->name, "_exps.weight")) {
            experts++;
            CHECK_EQ_INT(t->type, V4F_TYPE_Q4_K);
        }
        if (strstr(t->name, "proj.weight")) CHECK_EQ_INT(t->type, V4F_TYPE_Q8_0);
    }
    CHECK_EQ_INT(experts, 3);
    v4f_synth_plan_free(p);
}
