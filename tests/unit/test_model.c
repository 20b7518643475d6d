/*
 * test_model.c - model config + layout validation on the tiny fixtures and
 * on byte-patched copies of them (missing tensor, wrong shape, wrong type,
 * missing key, bad compress ratio, bad tid2eid entry, MTP mismatch).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ggml_type.h"
#include "model/model.h"
#include "../test.h"

static const char *k_models[] = {"tiny-f16", "tiny-q2", "tiny-q4"};

/* Find a GGUF string (u64 length + bytes) and return the offset just past it. */
static size_t find_gguf_string(const unsigned char *buf, size_t n, const char *s) {
    size_t len = strlen(s);
    for (size_t i = 0; i + 8 + len <= n; i++) {
        uint64_t l;
        memcpy(&l, buf + i, 8);
        if (l == len && memcmp(buf + i + 8, s, len) == 0) return i + 8 + len;
    }
    return 0;
}

typedef void (*patch_fn)(unsigned char *buf, size_t n);

/* Copy fixture `name`, apply patch, try to open it as a model; returns the
 * status and fills err. */
static v4f_status open_patched(const char *fixture, patch_fn patch, v4f_err *err,
                               v4f_layout_report *rep) {
    size_t n;
    unsigned char *buf = (unsigned char *)test_read_file(test_fixture_path(fixture), &n);
    if (!buf) return V4F_STATUS_IO;
    patch(buf, n);
    char path[512];
    snprintf(path, sizeof path, "%s/patched.gguf", test_tmp_dir());
    FILE *f = fopen(path, "wb");
    fwrite(buf, 1, n, f);
    fclose(f);
    free(buf);
    v4f_model *m = NULL;
    v4f_status st = v4f_model_open(path, NULL, &m, rep, err);
    v4f_model_close(m);
    return st;
}

TEST(model_fixtures_valid) {
    for (int i = 0; i < 3; i++) {
        char path[256], mtp[256];
        snprintf(path, sizeof path, "%s%s.gguf", test_fixture_path("model/"), k_models[i]);
        snprintf(mtp, sizeof mtp, "%s%s.mtp.gguf", test_fixture_path("model/"), k_models[i]);
        v4f_model *m = NULL;
        v4f_err err = {0};
        v4f_layout_report rep;
        v4f_status st = v4f_model_open(path, mtp, &m, &rep, &err);
        CHECK_MSG(st == V4F_OK, "%s: %s", k_models[i], err.msg);
        if (st) continue;
        CHECK_EQ_INT(m->cfg.n_layer, 6);
        CHECK_EQ_INT(m->cfg.n_hc, 4);
        CHECK_EQ_INT(m->cfg.compress_ratio[2], 4);
        CHECK_EQ_INT(m->cfg.compress_ratio[3], 128);
        CHECK_EQ_INT(m->cfg.n_compress_ratio, 7);
        CHECK(m->layers[0].hash_routed && m->layers[2].hash_routed && !m->layers[3].hash_routed);
        CHECK(m->layers[2].idx_q_b.data != NULL);
        CHECK(m->layers[3].idx_q_b.data == NULL && m->layers[3].comp_kv.data != NULL);
        CHECK(m->layers[0].comp_kv.data == NULL);
        CHECK(m->layers[3].exp_probs_b.data != NULL && m->layers[1].exp_probs_b.data == NULL);
        CHECK(m->has_mtp && m->mtp.e_proj.data && m->mtp.block.exp_probs_b.data);
        CHECK(m->layers[5].ffn_down_exps.n_mat == m->cfg.n_expert);
        /* tiny models are not the published layout, and say why */
        v4f_err why = {0};
        CHECK(v4f_model_published_variant(m, &why) == NULL);
        CHECK(strstr(why.msg, "n_layer") != NULL);
        v4f_model_close(m);
    }
}

TEST(model_tiny_q2_shapes_and_types) {
    v4f_model *m = NULL;
    v4f_err err = {0};
    REQUIRE(v4f_model_open(test_fixture_path("model/tiny-q2.gguf"), NULL, &m, NULL, &err) == 0);
    CHECK_EQ_INT(m->cfg.n_embd, 256);
    CHECK_EQ_INT(m->token_embd.type, V4F_TYPE_F16);
    CHECK_EQ_INT(m->token_embd.n_in, 256);
    CHECK_EQ_INT(m->token_embd.n_out, 640);
    CHECK_EQ_INT(m->layers[0].ffn_gate_exps.type, V4F_TYPE_IQ2_XXS);
    CHECK_EQ_INT(m->layers[0].ffn_down_exps.type, V4F_TYPE_Q2_K);
    CHECK_EQ_INT(m->layers[0].attn_q_b.type, V4F_TYPE_Q8_0);
    CHECK_EQ_INT(m->layers[0].attn_q_b.n_in, 32);
    CHECK_EQ_INT(m->layers[0].attn_q_b.n_out, 512);
    CHECK_EQ_INT(m->layers[0].ffn_gate_exps.row_bytes, 66); /* one IQ2_XXS block */
    CHECK_EQ_INT(m->layers[0].ffn_gate_exps.mat_bytes, 66 * 256);
    CHECK_EQ_INT(m->layers[3].comp_ape.n_in, 128);
    CHECK_EQ_INT(m->layers[3].comp_ape.n_out, 128);
    CHECK_EQ_INT(m->layers[2].comp_ape.n_in, 256);
    CHECK_STR(m->layers[4].attn_kv.name, "blk.4.attn_kv.weight");
    v4f_model_close(m);
}

static void patch_rename_tensor(unsigned char *buf, size_t n) {
    size_t o = find_gguf_string(buf, n, "blk.3.attn_kv.weight");
    if (o) buf[o - 8] = 'X'; /* "blk.3.attn_kv.weigXt" */
}
TEST(model_missing_tensor) {
    v4f_err err = {0};
    v4f_layout_report rep;
    CHECK_STATUS(open_patched("model/tiny-q2.gguf", patch_rename_tensor, &err, &rep),
                 V4F_STATUS_LAYOUT);
    CHECK_MSG(strstr(err.msg, "missing tensor 'blk.3.attn_kv.weight'"), "%s", err.msg);
    CHECK(rep.n_issues >= 1);
}

/* the directory entry after a name: u32 n_dims, u64 ne[n_dims], u32 type, u64 offset */
static void patch_shape(unsigned char *buf, size_t n) {
    size_t o = find_gguf_string(buf, n, "blk.1.attn_kv.weight");
    if (!o) return;
    uint64_t ne1;
    memcpy(&ne1, buf + o + 4 + 8, 8);
    ne1 /= 2; /* smaller: stays inside the file, no overlap */
    memcpy(buf + o + 4 + 8, &ne1, 8);
}
TEST(model_wrong_shape) {
    v4f_err err = {0};
    CHECK_STATUS(open_patched("model/tiny-q2.gguf", patch_shape, &err, NULL), V4F_STATUS_LAYOUT);
    CHECK_MSG(strstr(err.msg, "'blk.1.attn_kv.weight': shape [256, 64], expected [256, 128]"),
              "%s", err.msg);
}

static void patch_norm_type(unsigned char *buf, size_t n) {
    size_t o = find_gguf_string(buf, n, "blk.2.ffn_norm.weight");
    if (!o) return;
    uint32_t nd;
    memcpy(&nd, buf + o, 4);
    uint32_t i32 = V4F_TYPE_I32; /* same element size as F32 */
    memcpy(buf + o + 4 + 8 * nd, &i32, 4);
}
TEST(model_wrong_type) {
    v4f_err err = {0};
    CHECK_STATUS(open_patched("model/tiny-q2.gguf", patch_norm_type, &err, NULL),
                 V4F_STATUS_LAYOUT);
    CHECK_MSG(strstr(err.msg, "'blk.2.ffn_norm.weight': type I32, expected F32, F16 or BF16"),
              "%s", err.msg);
}

static void patch_key(unsigned char *buf, size_t n) {
    size_t o = find_gguf_string(buf, n, "deepseek4.expert_used_count");
    if (o) buf[o - 1] = 'T';
}
TEST(model_missing_key) {
    v4f_err err = {0};
    CHECK_STATUS(open_patched("model/tiny-q4.gguf", patch_key, &err, NULL), V4F_STATUS_LAYOUT);
    CHECK_MSG(strstr(err.msg, "missing required metadata key 'deepseek4.expert_used_count'"), "%s",
              err.msg);
}

static void patch_ratio(unsigned char *buf, size_t n) {
    size_t o = find_gguf_string(buf, n, "deepseek4.attention.compress_ratios");
    if (!o) return;
    /* u32 array type, u32 elem type, u64 count, then elements (i32) */
    int32_t bad = 5;
    memcpy(buf + o + 4 + 4 + 8 + 4 * 3, &bad, 4);
}
TEST(model_bad_compress_ratio) {
    v4f_err err = {0};
    CHECK_STATUS(open_patched("model/tiny-f16.gguf", patch_ratio, &err, NULL), V4F_STATUS_LAYOUT);
    CHECK_MSG(strstr(err.msg, "compress_ratios'[3] = 5: expected 0, 4 or 128"), "%s", err.msg);
}

TEST(model_bad_tid2eid) {
    /* locate the tensor's file offset through the reader, then patch */
    v4f_gguf *g = NULL;
    v4f_err err = {0};
    REQUIRE(v4f_gguf_open(test_fixture_path("model/tiny-q2.gguf"), &g, &err) == 0);
    const v4f_gguf_tensor *t = v4f_gguf_tensor_find(g, "blk.1.ffn_gate_tid2eid.weight");
    REQUIRE(t != NULL);
    uint64_t off = t->file_offset;
    v4f_gguf_close(g);
    size_t n;
    unsigned char *buf = (unsigned char *)test_read_file(test_fixture_path("model/tiny-q2.gguf"), &n);
    REQUIRE(buf != NULL);
    int32_t bad = 99;
    memcpy(buf + off + 4 * 7, &bad, 4);
    char path[512];
    snprintf(path, sizeof path, "%s/tid2eid.gguf", test_tmp_dir());
    FILE *f = fopen(path, "wb");
    fwrite(buf, 1, n, f);
    fclose(f);
    free(buf);
    v4f_model *m = NULL;
    CHECK_STATUS(v4f_model_open(path, NULL, &m, NULL, &err), V4F_STATUS_LAYOUT);
    CHECK_MSG(strstr(err.msg, "'blk.1.ffn_gate_tid2eid.weight': entry 7 = 99 is not an expert id"),
              "%s", err.msg);
    v4f_model_close(m);
}

TEST(model_mtp_mismatch) {
    /* tiny-f16 (d=128) with the q2 MTP block (d=256): both config and shapes differ */
    v4f_model *m = NULL;
    v4f_err err = {0};
    v4f_layout_report rep;
    CHECK_STATUS(v4f_model_open(test_fixture_path("model/tiny-f16.gguf"),
                                test_fixture_path("model/tiny-q2.mtp.gguf"), &m, &rep, &err),
                 V4F_STATUS_LAYOUT);
    CHECK_MSG(strstr(err.msg, "MTP file: n_embd = 256 differs from the model's 128"), "%s", err.msg);
    CHECK(rep.n_issues > 1);
    v4f_model_close(m);
}

TEST(model_not_a_model) {
    v4f_model *m = NULL;
    v4f_err err = {0};
    CHECK_STATUS(v4f_model_open(test_fixture_path("tokenizer/vocab-tiny.gguf"), NULL, &m, NULL, &err),
                 V4F_STATUS_LAYOUT);
    CHECK(strstr(err.msg, "vocab-tiny.gguf") && strstr(err.msg, "deepseek4.block_count"));
    CHECK_STATUS(v4f_model_open("/nonexistent/model.gguf", NULL, &m, NULL, &err), V4F_STATUS_IO);
    CHECK(strstr(err.msg, "/nonexistent/model.gguf") != NULL);
}

TEST(model_published_config_check) {
    v4f_config c;
    memset(&c, 0, sizeof c);
    c.n_layer = 43; c.n_embd = 4096; c.n_vocab = 129280; c.n_head = 64; c.n_head_kv = 1;
    c.head_dim = 512; c.n_rot = 64; c.q_lora_rank = 1024; c.o_lora_rank = 1024; c.o_groups = 8;
    c.n_expert = 256; c.n_expert_used = 6; c.n_ff_exp = 2048; c.n_expert_shared = 1;
    c.n_hash_layer = 3; c.n_swa = 128; c.n_idx_head = 64; c.idx_head_dim = 128; c.idx_topk = 512;
    c.n_hc = 4; c.hc_iters = 20; c.hc_eps = 1e-6f; c.rms_eps = 1e-6f; c.rope_base = 10000;
    c.rope_base_compress = 160000; c.yarn_factor = 16; c.yarn_orig_ctx = 65536;
    c.yarn_beta_fast = 32; c.yarn_beta_slow = 1; c.expert_weights_scale = 1.5f;
    c.expert_weights_norm = true;
    for (int l = 0; l < 43; l++) {
        c.compress_ratio[l] = l < 2 ? 0 : (l % 2 == 0 ? 4 : 128);
        c.swiglu_limit[l] = 10.0f;
    }
    v4f_err why = {0};
    CHECK(v4f_config_is_published(&c, &why));
    c.compress_ratio[41] = 4;
    CHECK(!v4f_config_is_published(&c, &why));
    CHECK(strstr(why.msg, "compress_ratios[41]") != NULL);
}
