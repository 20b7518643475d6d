/*
 * test_gguf.c - tests for src/gguf: the fixture models, writer round trips
 * (every value type, nested and string arrays, several tensor types,
 * streaming in odd chunks), split files, and a catalogue of malformed files
 * each checked for its status code and a message substring.
 *
 * Malformed files are built byte by byte with the small builder below (no
 * writer involved, so the writer cannot hide a reader bug) and opened with
 * v4f_gguf_open_memory; file-level cases (missing file, directory, shards)
 * use test_tmp_dir().
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../test.h"
#include "core/core.h"
#include "core/ggml_type.h"
#include "gguf/gguf.h"

/* ---- byte builder ---------------------------------------------------------- */

typedef struct bb {
    uint8_t *p;
    size_t n, cap;
} bb;

static void bb_bytes(bb *b, const void *p, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    if (n) memcpy(b->p + b->n, p, n);
    b->n += n;
}
static void bb_u8(bb *b, uint8_t v) { bb_bytes(b, &v, 1); }
static void bb_u32(bb *b, uint32_t v) {
    uint8_t t[4];
    for (int i = 0; i < 4; i++) t[i] = (uint8_t)(v >> (8 * i));
    bb_bytes(b, t, 4);
}
static void bb_u64(bb *b, uint64_t v) {
    uint8_t t[8];
    for (int i = 0; i < 8; i++) t[i] = (uint8_t)(v >> (8 * i));
    bb_bytes(b, t, 8);
}
static void bb_str(bb *b, const char *s) {
    bb_u64(b, strlen(s));
    bb_bytes(b, s, strlen(s));
}
static void bb_zeros(bb *b, size_t n) {
    for (size_t i = 0; i < n; i++) bb_u8(b, 0);
}
static void bb_pad(bb *b, size_t align) {
    while (b->n % align) bb_u8(b, 0);
}
static void bb_free(bb *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}
static void put_u64_at(bb *b, size_t at, uint64_t v) {
    for (int i = 0; i < 8; i++) b->p[at + (size_t)i] = (uint8_t)(v >> (8 * i));
}

static void hdr(bb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    bb_bytes(b, "GGUF", 4);
    bb_u32(b, version);
    bb_u64(b, n_tensors);
    bb_u64(b, n_kv);
}
static void kv_u32(bb *b, const char *key, uint32_t v) {
    bb_str(b, key);
    bb_u32(b, V4F_GGUF_U32);
    bb_u32(b, v);
}
static void tinfo(bb *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                  uint64_t off) {
    bb_str(b, name);
    bb_u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++) bb_u64(b, ne[i]);
    bb_u32(b, type);
    bb_u64(b, off);
}

/* A valid two-tensor file: a F32[8] at 0, b F32[4,2] at 32; one kv. */
static void base_file(bb *b) {
    static const uint64_t ne_a[1] = {8}, ne_b[2] = {4, 2};
    hdr(b, 3, 2, 1);
    kv_u32(b, "x.count", 7);
    tinfo(b, "a", 1, ne_a, V4F_TYPE_F32, 0);
    tinfo(b, "b", 2, ne_b, V4F_TYPE_F32, 32);
    bb_pad(b, 32);
    for (int i = 0; i < 64; i++) bb_u8(b, (uint8_t)i);
}

/* Open b as "bad.gguf"; expect code and a message containing sub. */
static void expect_fail_at(const char *file, int line, const void *p, size_t n,
                           v4f_status code, const char *sub) {
    v4f_gguf *g = (v4f_gguf *)1;
    v4f_err err = {0};
    v4f_status st = v4f_gguf_open_memory(p, n, "bad.gguf", &g, &err);
    if (st != code)
        test_fail(file, line, "status %d, expected %d (msg: %s)", st, code, err.msg);
    if (st && g) test_fail(file, line, "out not NULL on failure");
    if (st && (!strstr(err.msg, "bad.gguf") || !strstr(err.msg, sub)))
        test_fail(file, line, "message \"%s\" lacks \"%s\"", err.msg, sub);
    if (!st) v4f_gguf_close(g);
    if (test_verbose() && st) printf("    [%s]\n", err.msg);
}
#define EXPECT_FAIL(b, code, sub) expect_fail_at(__FILE__, __LINE__, (b)->p, (b)->n, code, sub)

static char *tmp_path(const char *name) {
    static char buf[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", test_tmp_dir(), name);
    return buf[k];
}

/* ---- fixtures ---------------------------------------------------------------- */

static void check_tensor(const v4f_gguf *g, const char *name, uint32_t type, uint64_t ne0,
                         uint64_t ne1) {
    const v4f_gguf_tensor *t = v4f_gguf_tensor_find(g, name);
    CHECK_MSG(t != NULL, "tensor %s missing", name);
    if (!t) return;
    CHECK_EQ_INT(t->type, type);
    CHECK_EQ_INT(t->ne[0], ne0);
    CHECK_EQ_INT(t->ne[1], ne1);
}

static void check_all_tensors(const v4f_gguf *g) {
    for (uint64_t i = 0; i < v4f_gguf_n_tensors(g); i++) {
        const v4f_gguf_tensor *t = v4f_gguf_tensor_at(g, i);
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        CHECK(v4f_gguf_tensor_find(g, name) == t);
        CHECK_EQ_INT(t->file_offset % v4f_gguf_alignment(g), 0);
        CHECK_EQ_INT((uintptr_t)t->data % v4f_gguf_alignment(g), 0); /* map is page-aligned */
        uint64_t rb;
        CHECK(v4f_type_row_bytes(t->type, t->ne[0], &rb));
        CHECK_EQ_INT(rb * t->ne[1] * t->ne[2] * t->ne[3], t->n_bytes);
        CHECK(t->file_offset + t->n_bytes <= v4f_gguf_file_size(g));
    }
}

static void check_model(const char *rel, int q, bool mtp) {
    v4f_gguf *g;
    v4f_err err = {0};
    v4f_status st = v4f_gguf_open(test_fixture_path(rel), &g, &err);
    CHECK_MSG(st == V4F_OK, "%s: %s", rel, err.msg);
    if (st) return;
    CHECK_EQ_INT(v4f_gguf_version(g), 3);
    CHECK_EQ_INT(v4f_gguf_alignment(g), 32);
    CHECK_EQ_INT(v4f_gguf_n_shards(g), 1);
    uint32_t u;
    CHECK_STATUS(v4f_gguf_get_u32(g, "deepseek4.block_count", &u, &err), V4F_OK);
    CHECK_EQ_INT(u, 6);
    v4f_str s;
    CHECK_STATUS(v4f_gguf_get_str(g, "general.architecture", &s, &err), V4F_OK);
    CHECK(v4f_str_eq(s, "deepseek4"));
    const v4f_gguf_kv *cr = v4f_gguf_kv_find(g, "deepseek4.attention.compress_ratios");
    REQUIRE(cr != NULL);
    CHECK_EQ_INT(cr->type, V4F_GGUF_ARRAY);
    CHECK_EQ_INT(cr->arr_n, 7);
    int64_t want[7] = {0, 0, 4, 128, 4, 128, 0}, v;
    for (int i = 0; i < 7; i++) {
        CHECK(v4f_gguf_arr_int(cr, (uint64_t)i, &v));
        CHECK_EQ_INT(v, want[i]);
    }
    CHECK(!v4f_gguf_arr_int(cr, 7, &v));
    const v4f_gguf_kv *sw = v4f_gguf_kv_find(g, "deepseek4.swiglu_clamp_exp");
    double d;
    REQUIRE(sw != NULL);
    CHECK(v4f_gguf_arr_float(sw, 6, &d));
    CHECK_NEAR(d, 10.0, 0);
    float f;
    CHECK_STATUS(v4f_gguf_get_f32(g, "deepseek4.rope.freq_base", &f, &err), V4F_OK);
    CHECK_NEAR(f, 10000.0f, 0);
    bool b;
    CHECK_STATUS(v4f_gguf_get_bool(g, "deepseek4.expert_weights_norm", &b, &err), V4F_OK);
    CHECK(b);
    if (!mtp) {
        CHECK_EQ_INT(v4f_gguf_n_tensors(g), 178);
        const v4f_gguf_kv *tok = v4f_gguf_kv_find(g, "tokenizer.ggml.tokens");
        REQUIRE(tok != NULL);
        CHECK_EQ_INT(tok->arr_type, V4F_GGUF_STRING);
        CHECK_EQ_INT(tok->arr_n, 640);
        CHECK(v4f_gguf_arr_str(g, tok, 2, &s) && v4f_str_eq(s, "\xc4\x80")); /* "Ā" */
        CHECK(v4f_gguf_arr_str(g, tok, 639, &s));
        CHECK(!v4f_gguf_arr_str(g, tok, 640, &s));
        uint32_t n_embd = 0, n_expert = 0;
        CHECK_STATUS(v4f_gguf_get_u32(g, "deepseek4.embedding_length", &n_embd, &err), V4F_OK);
        CHECK_STATUS(v4f_gguf_get_u32(g, "deepseek4.expert_count", &n_expert, &err), V4F_OK);
        CHECK_EQ_INT(n_embd, q == 16 ? 128 : 256);
        CHECK_EQ_INT(n_expert, q == 4 ? 6 : 8);
        check_tensor(g, "token_embd.weight", V4F_TYPE_F16, n_embd, 640);
        check_tensor(g, "blk.2.attn_compressor_ape.weight", V4F_TYPE_F16, 256, 4);
        check_tensor(g, "output.weight", q == 16 ? V4F_TYPE_F16 : V4F_TYPE_Q8_0, n_embd, 640);
        if (q == 2) check_tensor(g, "blk.3.attn_compressor_ape.weight", V4F_TYPE_F16, 128, 128);
        const v4f_gguf_tensor *e = v4f_gguf_tensor_find(g, "blk.5.ffn_gate_exps.weight");
        REQUIRE(e != NULL);
        CHECK_EQ_INT(e->type, q == 2 ? V4F_TYPE_IQ2_XXS : q == 4 ? V4F_TYPE_Q4_K : V4F_TYPE_F16);
        CHECK_EQ_INT(e->n_dims, 3);
        CHECK_EQ_INT(e->ne[2], n_expert);
    } else {
        CHECK_EQ_INT(v4f_gguf_n_tensors(g), 32);
        CHECK(v4f_gguf_tensor_find(g, "mtp.0.e_proj.weight") != NULL);
        CHECK(v4f_gguf_kv_find(g, "tokenizer.ggml.tokens") == NULL);
    }
    CHECK(v4f_gguf_tensor_find(g, "no.such.tensor") == NULL);
    CHECK(v4f_gguf_kv_find(g, "no.such.key") == NULL);
    check_all_tensors(g);
    v4f_gguf_close(g);
}

TEST(gguf_fixture_models) {
    check_model("model/tiny-q2.gguf", 2, false);
    check_model("model/tiny-q4.gguf", 4, false);
    check_model("model/tiny-f16.gguf", 16, false);
    check_model("model/tiny-q2.mtp.gguf", 2, true);
    check_model("model/tiny-q4.mtp.gguf", 4, true);
    check_model("model/tiny-f16.mtp.gguf", 16, true);
}

TEST(gguf_fixture_vocab) {
    v4f_gguf *g;
    v4f_err err = {0};
    CHECK_STATUS(v4f_gguf_open(test_fixture_path("tokenizer/vocab-tiny.gguf"), &g, &err), V4F_OK);
    if (!g) return;
    CHECK_EQ_INT(v4f_gguf_n_tensors(g), 0);
    CHECK_EQ_INT(v4f_gguf_n_kv(g), 14);
    const v4f_gguf_kv *tok = v4f_gguf_kv_find(g, "tokenizer.ggml.tokens");
    const v4f_gguf_kv *mer = v4f_gguf_kv_find(g, "tokenizer.ggml.merges");
    REQUIRE(tok && mer);
    CHECK_EQ_INT(tok->arr_n, 2000);
    CHECK_EQ_INT(mer->arr_n, 1736);
    v4f_str s;
    CHECK(v4f_gguf_arr_str(g, tok, 0, &s) && v4f_str_eq(s, "<\xef\xbd\x9c" "begin\xe2\x96\x81of"
                                                           "\xe2\x96\x81sentence\xef\xbd\x9c>"));
    /* The O(1) index and a copied kv (linear walk) agree on every element. */
    v4f_gguf_kv copy = *mer;
    for (uint64_t i = 0; i < mer->arr_n; i += 97) {
        v4f_str a, c;
        CHECK(v4f_gguf_arr_str(g, mer, i, &a) && v4f_gguf_arr_str(g, &copy, i, &c));
        CHECK(a.ptr == c.ptr && a.len == c.len);
    }
    uint32_t u;
    CHECK_STATUS(v4f_gguf_get_u32(g, "deepseek4.vocab_size", &u, &err), V4F_OK);
    CHECK_EQ_INT(u, 2000);
    CHECK_STATUS(v4f_gguf_get_u32(g, "tokenizer.ggml.model", &u, &err), V4F_STATUS_FORMAT);
    CHECK(strstr(err.msg, "tokenizer.ggml.model") && strstr(err.msg, "string"));
    CHECK_STATUS(v4f_gguf_get_u32(g, "nope", &u, &err), V4F_STATUS_NOT_FOUND);
    CHECK(strstr(err.msg, "nope") != NULL);
    v4f_gguf_close(g);
}

TEST(gguf_open_io_errors) {
    v4f_gguf *g = (v4f_gguf *)1;
    v4f_err err = {0};
    CHECK_STATUS(v4f_gguf_open(tmp_path("does-not-exist.gguf"), &g, &err), V4F_STATUS_IO);
    CHECK(g == NULL);
    CHECK(strstr(err.msg, "does-not-exist.gguf") && strstr(err.msg, "No such file"));
    CHECK_STATUS(v4f_gguf_open(test_tmp_dir(), &g, &err), V4F_STATUS_IO);
    CHECK(strstr(err.msg, "directory") != NULL);
    FILE *f = fopen(tmp_path("empty.gguf"), "wb");
    REQUIRE(f != NULL);
    fclose(f);
    CHECK_STATUS(v4f_gguf_open(tmp_path("empty.gguf"), &g, &err), V4F_STATUS_FORMAT);
    CHECK(strstr(err.msg, "empty") != NULL);
    v4f_gguf_close(NULL);
    v4f_gguf_writer_abort(NULL);
}

/* ---- writer round trip ------------------------------------------------------------ */

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Nested [[1,2],[3],[]] of i16 in an outer array, then [[["deep"]]] */
static size_t enc_nested(uint8_t *n) {
    uint8_t *p = n;
    put32(p, V4F_GGUF_ARRAY), put64(p + 4, 3), p += 12;
    put32(p, V4F_GGUF_I16), put64(p + 4, 2), p += 12;
    p[0] = 1, p[1] = 0, p[2] = 0xfe, p[3] = 0xff, p += 4; /* 1, -2 */
    put32(p, V4F_GGUF_I16), put64(p + 4, 1), p += 12;
    p[0] = 3, p[1] = 0, p += 2;
    put32(p, V4F_GGUF_I16), put64(p + 4, 0), p += 12;
    return (size_t)(p - n);
}
static size_t enc_nested_str(uint8_t *n) {
    uint8_t *p = n;
    put32(p, V4F_GGUF_ARRAY), put64(p + 4, 1), p += 12;
    put32(p, V4F_GGUF_ARRAY), put64(p + 4, 1), p += 12;
    put32(p, V4F_GGUF_STRING), put64(p + 4, 2), p += 12;
    put64(p, 4), memcpy(p + 8, "deep", 4), p += 12;
    put64(p, 0), p += 8;
    return (size_t)(p - n);
}

typedef struct tspec {
    const char *name;
    uint32_t type, n_dims;
    uint64_t ne[4];
    uint64_t bytes;
} tspec;

static const tspec k_tensors[] = {
    {"w.f32", V4F_TYPE_F32, 2, {5, 3, 1, 1}, 60},
    {"w.f16", V4F_TYPE_F16, 1, {7, 1, 1, 1}, 14},
    {"w.q8_0", V4F_TYPE_Q8_0, 3, {64, 2, 3, 1}, 2 * 34 * 6},
    {"w.q4_k", V4F_TYPE_Q4_K, 4, {256, 1, 2, 2}, 144 * 4},
    {"w.iq2_xxs", V4F_TYPE_IQ2_XXS, 2, {256, 2, 1, 1}, 66 * 2},
    {"w.i32", V4F_TYPE_I32, 1, {3, 1, 1, 1}, 12},
};
#define N_TENSORS (sizeof k_tensors / sizeof k_tensors[0])

static uint8_t pattern(uint64_t t, uint64_t k) { return (uint8_t)(t * 31 + k * 7 + (k >> 8)); }

static void write_sink(const char *path, uint32_t align, size_t chunk) {
    v4f_gguf_writer *w;
    v4f_err err = {0};
    REQUIRE(v4f_gguf_writer_open(path, align, &w, &err) == V4F_OK);
    uint8_t enc[256];
    v4f_gguf_writer_set_u32(w, "v.u32", 0xdeadbeefu);
    v4f_gguf_writer_set_i32(w, "v.i32", -123456);
    v4f_gguf_writer_set_u64(w, "v.u64", UINT64_MAX);
    v4f_gguf_writer_set_f32(w, "v.f32", -0.25f);
    v4f_gguf_writer_set_bool(w, "v.bool", true);
    v4f_gguf_writer_set_str(w, "v.str", "hello \xe2\x9c\x93");
    v4f_gguf_writer_set_str(w, "v.empty", "");
    enc[0] = 0xff;
    v4f_gguf_writer_set_raw(w, "v.u8", V4F_GGUF_U8, enc, 1);
    v4f_gguf_writer_set_raw(w, "v.i8", V4F_GGUF_I8, enc, 1);
    put32(enc, 0xfffe);
    v4f_gguf_writer_set_raw(w, "v.u16", V4F_GGUF_U16, enc, 2);
    v4f_gguf_writer_set_raw(w, "v.i16", V4F_GGUF_I16, enc, 2);
    put64(enc, (uint64_t)INT64_MIN);
    v4f_gguf_writer_set_raw(w, "v.i64", V4F_GGUF_I64, enc, 8);
    double dv = 1e300;
    v4f_gguf_writer_set_raw(w, "v.f64", V4F_GGUF_F64, &dv, 8);
    int32_t ia[4] = {-1, 0, 7, INT32_MAX};
    v4f_gguf_writer_set_arr(w, "v.arr_i32", V4F_GGUF_I32, ia, 4);
    uint64_t ua[2] = {1, UINT64_MAX};
    v4f_gguf_writer_set_arr(w, "v.arr_u64", V4F_GGUF_U64, ua, 2);
    double fa[2] = {0.5, -3};
    v4f_gguf_writer_set_arr(w, "v.arr_f64", V4F_GGUF_F64, fa, 2);
    uint8_t ba[3] = {1, 0, 1};
    v4f_gguf_writer_set_arr(w, "v.arr_bool", V4F_GGUF_BOOL, ba, 3);
    v4f_gguf_writer_set_arr(w, "v.arr_empty", V4F_GGUF_F32, NULL, 0);
    const char *sa[3] = {"zero", "", "\xf0\x9f\x98\x80"};
    v4f_gguf_writer_set_arr_str(w, "v.arr_str", sa, 3);
    v4f_gguf_writer_set_raw(w, "v.nested", V4F_GGUF_ARRAY, enc, enc_nested(enc));
    v4f_gguf_writer_set_raw(w, "v.nested_str", V4F_GGUF_ARRAY, enc, enc_nested_str(enc));
    v4f_gguf_writer_set_u32(w, "v.replaced", 1);
    v4f_gguf_writer_set_u32(w, "v.replaced", 2);
    for (size_t i = 0; i < N_TENSORS; i++) {
        const tspec *t = &k_tensors[i];
        REQUIRE(v4f_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, &err) == 0);
    }
    REQUIRE(v4f_gguf_writer_begin_data(w, &err) == V4F_OK);
    /* Stream all tensors in chunk-sized pieces that straddle tensor ends. */
    uint64_t total = 0;
    for (size_t i = 0; i < N_TENSORS; i++) total += k_tensors[i].bytes;
    uint8_t *all = malloc(total), *p = all;
    for (size_t i = 0; i < N_TENSORS; i++)
        for (uint64_t k = 0; k < k_tensors[i].bytes; k++) *p++ = pattern(i, k);
    for (uint64_t off = 0; off < total; off += chunk) {
        uint64_t n = total - off < chunk ? total - off : chunk;
        CHECK_STATUS(v4f_gguf_writer_write_data(w, all + off, n, &err), V4F_OK);
    }
    free(all);
    CHECK_MSG(v4f_gguf_writer_close(w, &err) == V4F_OK, "close: %s", err.msg);
}

static void check_sink_kvs(const v4f_gguf *g) {
    v4f_err err = {0};
    uint32_t u;
    uint64_t u64;
    float f;
    bool b;
    v4f_str s;
    const v4f_gguf_kv *kv;
    CHECK(!v4f_gguf_get_u32(g, "v.u32", &u, &err) && u == 0xdeadbeefu);
    CHECK_STATUS(v4f_gguf_get_u32(g, "v.i32", &u, &err), V4F_STATUS_FORMAT); /* negative */
    CHECK(strstr(err.msg, "out of range") != NULL);
    CHECK((kv = v4f_gguf_kv_find(g, "v.i32")) && kv->type == V4F_GGUF_I32 && kv->v.i64 == -123456);
    CHECK(!v4f_gguf_get_u64(g, "v.u64", &u64, &err) && u64 == UINT64_MAX);
    CHECK_STATUS(v4f_gguf_get_u32(g, "v.u64", &u, &err), V4F_STATUS_FORMAT);
    CHECK(!v4f_gguf_get_f32(g, "v.f32", &f, &err) && f == -0.25f);
    CHECK(!v4f_gguf_get_bool(g, "v.bool", &b, &err) && b);
    CHECK(!v4f_gguf_get_u32(g, "v.bool", &u, &err) && u == 1);
    CHECK(!v4f_gguf_get_str(g, "v.str", &s, &err) && v4f_str_eq(s, "hello \xe2\x9c\x93"));
    CHECK(!v4f_gguf_get_str(g, "v.empty", &s, &err) && s.len == 0);
    CHECK(!v4f_gguf_get_u32(g, "v.u8", &u, &err) && u == 255);
    CHECK((kv = v4f_gguf_kv_find(g, "v.i8")) && kv->v.i64 == -1);
    CHECK(!v4f_gguf_get_u32(g, "v.u16", &u, &err) && u == 0xfffe);
    CHECK((kv = v4f_gguf_kv_find(g, "v.i16")) && kv->v.i64 == -2);
    CHECK((kv = v4f_gguf_kv_find(g, "v.i64")) && kv->v.i64 == INT64_MIN);
    CHECK_STATUS(v4f_gguf_get_f32(g, "v.f64", &f, &err), V4F_STATUS_FORMAT); /* 1e300 */
    CHECK((kv = v4f_gguf_kv_find(g, "v.f64")) && kv->v.f64 == 1e300);
    CHECK(!v4f_gguf_get_u32(g, "v.replaced", &u, &err) && u == 2);
    CHECK_STATUS(v4f_gguf_get_bool(g, "v.u32", &b, &err), V4F_STATUS_FORMAT);
    CHECK_STATUS(v4f_gguf_get_str(g, "v.u32", &s, &err), V4F_STATUS_FORMAT);
    CHECK_STATUS(v4f_gguf_get_f32(g, "v.u32", &f, &err), V4F_STATUS_FORMAT);
}

static void check_sink_arrays(const v4f_gguf *g) {
    const v4f_gguf_kv *kv, *ks;
    int64_t iv;
    double dv;
    v4f_str s;
    v4f_gguf_kv sub, sub2;
    REQUIRE((kv = v4f_gguf_kv_find(g, "v.arr_i32")) && kv->arr_n == 4);
    CHECK(v4f_gguf_arr_int(kv, 0, &iv) && iv == -1);
    CHECK(v4f_gguf_arr_int(kv, 3, &iv) && iv == INT32_MAX);
    CHECK(v4f_gguf_arr_float(kv, 2, &dv) && dv == 7);
    REQUIRE((kv = v4f_gguf_kv_find(g, "v.arr_u64")));
    CHECK(v4f_gguf_arr_int(kv, 0, &iv) && iv == 1);
    CHECK(!v4f_gguf_arr_int(kv, 1, &iv)); /* does not fit int64 */
    REQUIRE((kv = v4f_gguf_kv_find(g, "v.arr_f64")));
    CHECK(v4f_gguf_arr_float(kv, 1, &dv) && dv == -3);
    CHECK(!v4f_gguf_arr_int(kv, 1, &iv));
    REQUIRE((kv = v4f_gguf_kv_find(g, "v.arr_bool")));
    CHECK(v4f_gguf_arr_int(kv, 2, &iv) && iv == 1);
    REQUIRE((kv = v4f_gguf_kv_find(g, "v.arr_empty")) && kv->arr_n == 0 && kv->val_bytes == 0);
    CHECK(!v4f_gguf_arr_float(kv, 0, &dv));
    REQUIRE((kv = v4f_gguf_kv_find(g, "v.arr_str")) && kv->arr_n == 3);
    CHECK(v4f_gguf_arr_str(g, kv, 0, &s) && v4f_str_eq(s, "zero"));
    CHECK(v4f_gguf_arr_str(g, kv, 1, &s) && s.len == 0);
    CHECK(v4f_gguf_arr_str(g, kv, 2, &s) && v4f_str_eq(s, "\xf0\x9f\x98\x80"));
    CHECK(!v4f_gguf_arr_int(kv, 0, &iv) && !v4f_gguf_arr_sub(kv, 0, &sub));
    REQUIRE((kv = v4f_gguf_kv_find(g, "v.nested")) && kv->arr_type == V4F_GGUF_ARRAY);
    CHECK_EQ_INT(kv->arr_n, 3);
    REQUIRE(v4f_gguf_arr_sub(kv, 0, &sub) && sub.arr_type == V4F_GGUF_I16 && sub.arr_n == 2);
    CHECK(v4f_gguf_arr_int(&sub, 1, &iv) && iv == -2);
    REQUIRE(v4f_gguf_arr_sub(kv, 1, &sub) && sub.arr_n == 1);
    CHECK(v4f_gguf_arr_int(&sub, 0, &iv) && iv == 3);
    REQUIRE(v4f_gguf_arr_sub(kv, 2, &sub) && sub.arr_n == 0);
    CHECK(!v4f_gguf_arr_sub(kv, 3, &sub));
    REQUIRE((ks = v4f_gguf_kv_find(g, "v.nested_str")));
    REQUIRE(v4f_gguf_arr_sub(ks, 0, &sub) && sub.arr_type == V4F_GGUF_ARRAY);
    REQUIRE(v4f_gguf_arr_sub(&sub, 0, &sub2) && sub2.arr_type == V4F_GGUF_STRING);
    CHECK(v4f_gguf_arr_str(g, &sub2, 0, &s) && v4f_str_eq(s, "deep"));
    CHECK(v4f_gguf_arr_str(g, &sub2, 1, &s) && s.len == 0);
    CHECK(!v4f_gguf_arr_str(g, &sub2, 2, &s));
}

static void check_sink_tensors(const v4f_gguf *g) {
    REQUIRE(v4f_gguf_n_tensors(g) == N_TENSORS);
    for (size_t i = 0; i < N_TENSORS; i++) {
        const tspec *ts = &k_tensors[i];
        const v4f_gguf_tensor *t = v4f_gguf_tensor_at(g, i);
        CHECK(v4f_str_eq(t->name, ts->name));
        CHECK(v4f_gguf_tensor_find(g, ts->name) == t);
        CHECK_EQ_INT(t->type, ts->type);
        CHECK_EQ_INT(t->n_dims, ts->n_dims);
        for (int d = 0; d < 4; d++) CHECK_EQ_INT(t->ne[d], ts->ne[d]);
        CHECK_EQ_INT(t->n_bytes, ts->bytes);
        CHECK_EQ_INT(t->file_offset % v4f_gguf_alignment(g), 0);
        const uint8_t *p = t->data;
        uint64_t bad = 0;
        for (uint64_t k = 0; k < ts->bytes; k++) bad += p[k] != pattern(i, k);
        CHECK_EQ_INT(bad, 0);
    }
}

TEST(gguf_writer_round_trip) {
    const uint32_t aligns[3] = {0, 64, 4096};
    const size_t chunks[3] = {1000000, 7, 61};
    for (int a = 0; a < 3; a++) {
        const char *path = tmp_path("sink.gguf");
        write_sink(path, aligns[a], chunks[a]);
        v4f_gguf *g;
        v4f_err err = {0};
        CHECK_MSG(v4f_gguf_open(path, &g, &err) == V4F_OK, "%s", err.msg);
        if (!g) return;
        CHECK_EQ_INT(v4f_gguf_alignment(g), aligns[a] ? aligns[a] : 32);
        check_sink_kvs(g);
        check_sink_arrays(g);
        check_sink_tensors(g);
        /* Copy every kv through set_kv into a metadata-only file. */
        v4f_gguf_writer *w;
        const char *copy = tmp_path("copy.gguf");
        REQUIRE(v4f_gguf_writer_open(copy, aligns[a], &w, &err) == V4F_OK);
        for (uint64_t i = 0; i < v4f_gguf_n_kv(g); i++)
            v4f_gguf_writer_set_kv(w, v4f_gguf_kv_at(g, i));
        CHECK_STATUS(v4f_gguf_writer_close(w, &err), V4F_OK);
        v4f_gguf *g2;
        CHECK_MSG(v4f_gguf_open(copy, &g2, &err) == V4F_OK, "%s", err.msg);
        if (g2) {
            check_sink_kvs(g2);
            check_sink_arrays(g2);
            CHECK_EQ_INT(v4f_gguf_n_kv(g2), v4f_gguf_n_kv(g));
            for (uint64_t i = 0; i < v4f_gguf_n_kv(g); i++) {
                const v4f_gguf_kv *x = v4f_gguf_kv_at(g, i), *y = v4f_gguf_kv_at(g2, i);
                CHECK(x->type == y->type && x->val_bytes == y->val_bytes &&
                      memcmp(x->val, y->val, x->val_bytes) == 0);
            }
            v4f_gguf_close(g2);
        }
        v4f_gguf_close(g);
    }
}

TEST(gguf_writer_errors) {
    v4f_gguf_writer *w;
    v4f_err err = {0};
    const char *path = tmp_path("werr.gguf");
    uint64_t ne[2] = {32, 2}, bad_ne[1] = {33}, zero_ne[1] = {0};
    CHECK_STATUS(v4f_gguf_writer_open(path, 3, &w, &err), V4F_STATUS_INVALID_ARG);
    CHECK_STATUS(v4f_gguf_writer_open(tmp_path("no/such/dir/x.gguf"), 32, &w, &err),
                 V4F_STATUS_IO);
    /* incomplete tensor: close fails and removes the file */
    REQUIRE(v4f_gguf_writer_open(path, 32, &w, &err) == V4F_OK);
    CHECK_STATUS(v4f_gguf_writer_add_tensor(w, "t", V4F_TYPE_Q8_0, 2, ne, &err), V4F_OK);
    CHECK_STATUS(v4f_gguf_writer_add_tensor(w, "t", V4F_TYPE_F32, 2, ne, &err),
                 V4F_STATUS_INVALID_ARG);
    CHECK(strstr(err.msg, "duplicate") != NULL);
    CHECK_STATUS(v4f_gguf_writer_add_tensor(w, "u", V4F_TYPE_Q8_0, 1, bad_ne, &err),
                 V4F_STATUS_INVALID_ARG);
    CHECK(strstr(err.msg, "multiple") != NULL);
    CHECK_STATUS(v4f_gguf_writer_add_tensor(w, "z", V4F_TYPE_F32, 1, zero_ne, &err),
                 V4F_STATUS_INVALID_ARG);
    CHECK_STATUS(v4f_gguf_writer_add_tensor(w, "v", 4, 1, ne, &err), V4F_STATUS_INVALID_ARG);
    CHECK_STATUS(v4f_gguf_writer_add_tensor(w, "v", V4F_TYPE_F32, 5, ne, &err),
                 V4F_STATUS_INVALID_ARG);
    CHECK_STATUS(v4f_gguf_writer_begin_data(w, &err), V4F_OK);
    CHECK_STATUS(v4f_gguf_writer_write_data(w, "abc", 3, &err), V4F_OK);
    CHECK_STATUS(v4f_gguf_writer_close(w, &err), V4F_STATUS_INVALID_ARG);
    CHECK(strstr(err.msg, "incomplete") != NULL);
    CHECK(access(path, F_OK) != 0);
    /* too many bytes */
    REQUIRE(v4f_gguf_writer_open(path, 32, &w, &err) == V4F_OK);
    CHECK_STATUS(v4f_gguf_writer_add_tensor(w, "t", V4F_TYPE_F32, 1, ne, &err), V4F_OK);
    CHECK_STATUS(v4f_gguf_writer_write_data(w, "abc", 3, &err), V4F_STATUS_INVALID_ARG);
    CHECK_STATUS(v4f_gguf_writer_begin_data(w, &err), V4F_OK);
    uint8_t buf[200] = {0};
    CHECK_STATUS(v4f_gguf_writer_write_data(w, buf, 200, &err), V4F_STATUS_INVALID_ARG);
    v4f_gguf_writer_abort(w);
    CHECK(access(path, F_OK) != 0);
    /* sticky setter errors: bad key, bad raw encoding, set after begin */
    const char *bad_keys[3] = {"", "bad\xff", NULL};
    for (int i = 0; i < 3; i++) {
        REQUIRE(v4f_gguf_writer_open(path, 32, &w, &err) == V4F_OK);
        if (bad_keys[i]) {
            v4f_gguf_writer_set_u32(w, bad_keys[i], 1);
        } else {
            uint8_t enc[12] = {V4F_GGUF_U8, 0, 0, 0, 5}; /* 5 u8 promised, 0 given */
            v4f_gguf_writer_set_raw(w, "k", V4F_GGUF_ARRAY, enc, 12);
        }
        v4f_gguf_writer_set_u32(w, "ok", 1);
        CHECK_STATUS(v4f_gguf_writer_begin_data(w, &err), V4F_STATUS_INVALID_ARG);
        CHECK_STATUS(v4f_gguf_writer_close(w, &err), V4F_STATUS_INVALID_ARG);
        CHECK(access(path, F_OK) != 0);
    }
    REQUIRE(v4f_gguf_writer_open(path, 32, &w, &err) == V4F_OK);
    CHECK_STATUS(v4f_gguf_writer_begin_data(w, &err), V4F_OK);
    v4f_gguf_writer_set_u32(w, "late", 1);
    CHECK_STATUS(v4f_gguf_writer_close(w, &err), V4F_STATUS_INVALID_ARG);
    CHECK(strstr(err.msg, "after begin_data") != NULL);
    /* general.alignment disagreeing with the writer's alignment */
    REQUIRE(v4f_gguf_writer_open(path, 64, &w, &err) == V4F_OK);
    v4f_gguf_writer_set_u32(w, "general.alignment", 32);
    CHECK_STATUS(v4f_gguf_writer_close(w, &err), V4F_STATUS_INVALID_ARG);
}

/* ---- split files ------------------------------------------------------------------ */

/* Shard i of n under prefix: tensors named "<tag>.<i>.<k>" (k < 2), each F32[8]. */
static void write_shard(const char *prefix, uint16_t i, uint16_t n, int32_t total,
                        const char *dup_name, int16_t no_override) {
    char path[1024], name[64];
    snprintf(path, sizeof path, "%s-%05u-of-%05u.gguf", prefix, i + 1u, n);
    v4f_gguf_writer *w;
    v4f_err err = {0};
    REQUIRE(v4f_gguf_writer_open(path, 32, &w, &err) == V4F_OK);
    uint16_t no = no_override >= 0 ? (uint16_t)no_override : i;
    v4f_gguf_writer_set_raw(w, "split.no", V4F_GGUF_U16, (uint8_t[2]){(uint8_t)no, 0}, 2);
    v4f_gguf_writer_set_raw(w, "split.count", V4F_GGUF_U16, (uint8_t[2]){(uint8_t)n, 0}, 2);
    v4f_gguf_writer_set_i32(w, "split.tensors.count", total);
    if (i == 0) v4f_gguf_writer_set_str(w, "only.in.first", "yes");
    else v4f_gguf_writer_set_str(w, "only.in.later", "no");
    uint64_t ne[1] = {8};
    for (int k = 0; k < 2; k++) {
        snprintf(name, sizeof name, "t.%u.%d", i, k);
        const char *nm = (dup_name && k == 1) ? dup_name : name;
        REQUIRE(v4f_gguf_writer_add_tensor(w, nm, V4F_TYPE_F32, 1, ne, &err) == V4F_OK);
    }
    REQUIRE(v4f_gguf_writer_begin_data(w, &err) == V4F_OK);
    float data[16];
    for (int k = 0; k < 16; k++) data[k] = (float)(i * 100 + k);
    REQUIRE(v4f_gguf_writer_write_data(w, data, sizeof data, &err) == V4F_OK);
    REQUIRE(v4f_gguf_writer_close(w, &err) == V4F_OK);
}

static void write_split(const char *prefix, uint16_t n) {
    for (uint16_t i = 0; i < n; i++) write_shard(prefix, i, n, 2 * n, NULL, -1);
}

TEST(gguf_split_round_trip) {
    char prefix[1024], path[1100];
    snprintf(prefix, sizeof prefix, "%s/model", test_tmp_dir());
    write_split(prefix, 3);
    for (int open_i = 1; open_i <= 3; open_i++) {
        snprintf(path, sizeof path, "%s-%05d-of-00003.gguf", prefix, open_i);
        v4f_gguf *g;
        v4f_err err = {0};
        CHECK_MSG(v4f_gguf_open(path, &g, &err) == V4F_OK, "%s", err.msg);
        if (!g) return;
        CHECK_EQ_INT(v4f_gguf_n_shards(g), 3);
        CHECK(strstr(v4f_gguf_path(g), "model-00001-of-00003.gguf") != NULL);
        CHECK_EQ_INT(v4f_gguf_n_tensors(g), 6);
        CHECK(v4f_gguf_kv_find(g, "only.in.first") != NULL);
        CHECK(v4f_gguf_kv_find(g, "only.in.later") == NULL);
        for (uint32_t i = 0; i < 3; i++) {
            char name[32];
            snprintf(name, sizeof name, "t.%u.1", i);
            const v4f_gguf_tensor *t = v4f_gguf_tensor_find(g, name);
            REQUIRE(t != NULL);
            CHECK_EQ_INT(t->shard, i);
            CHECK_NEAR(((const float *)t->data)[0], i * 100 + 8, 0);
        }
        v4f_gguf_close(g);
    }
    /* open_memory on one shard: just that file */
    v4f_gguf *g;
    v4f_err err = {0};
    write_split(prefix, 1); /* model-00001-of-00001.gguf: a single-shard "split" */
    snprintf(path, sizeof path, "%s-00001-of-00001.gguf", prefix);
    CHECK_MSG(v4f_gguf_open(path, &g, &err) == V4F_OK, "%s", err.msg);
    if (g) {
        CHECK_EQ_INT(v4f_gguf_n_shards(g), 1);
        CHECK_EQ_INT(v4f_gguf_n_tensors(g), 2);
        v4f_gguf_close(g);
    }
}

static void expect_split_fail(const char *path, v4f_status code, const char *sub, int line) {
    v4f_gguf *g;
    v4f_err err = {0};
    v4f_status st = v4f_gguf_open(path, &g, &err);
    if (st != code || !strstr(err.msg, sub))
        test_fail(__FILE__, line, "status %d (want %d), msg \"%s\" (want \"%s\")", st, code,
                  err.msg, sub);
    if (!st) v4f_gguf_close(g);
    if (test_verbose() && st) printf("    [%s]\n", err.msg);
}

TEST(gguf_split_errors) {
    char prefix[1024], path[1100], p2[1100];
    snprintf(prefix, sizeof prefix, "%s/bad", test_tmp_dir());
    snprintf(path, sizeof path, "%s-00001-of-00003.gguf", prefix);
    /* missing shard */
    write_split(prefix, 3);
    snprintf(p2, sizeof p2, "%s-00003-of-00003.gguf", prefix);
    unlink(p2);
    expect_split_fail(path, V4F_STATUS_IO, "bad-00003-of-00003.gguf (shard 3 of 3)", __LINE__);
    expect_split_fail(path, V4F_STATUS_IO, "No such file", __LINE__);
    /* duplicate tensor name across shards */
    write_split(prefix, 3);
    write_shard(prefix, 2, 3, 6, "t.0.0", -1);
    expect_split_fail(path, V4F_STATUS_FORMAT, "duplicate tensor name 't.0.0'", __LINE__);
    /* wrong split.no inside a shard */
    write_split(prefix, 3);
    write_shard(prefix, 1, 3, 6, NULL, 2);
    expect_split_fail(path, V4F_STATUS_FORMAT, "split.no = 2, split.count = 3; expected 1 and 3",
                      __LINE__);
    /* split.tensors.count disagrees */
    write_split(prefix, 3);
    write_shard(prefix, 0, 3, 7, NULL, -1);
    expect_split_fail(path, V4F_STATUS_FORMAT, "split.tensors.count = 7", __LINE__);
    /* split.count disagrees with the name */
    write_split(prefix, 2);
    rename(p2, p2); /* no-op; keep the 3-shard name for the next case */
    snprintf(p2, sizeof p2, "%s-00001-of-00002.gguf", prefix);
    snprintf(path, sizeof path, "%s/renamed-00001-of-00004.gguf", test_tmp_dir());
    CHECK(rename(p2, path) == 0);
    expect_split_fail(path, V4F_STATUS_FORMAT, "split.count = 2", __LINE__);
    /* split.count > 1 but a plain name */
    snprintf(p2, sizeof p2, "%s/plain.gguf", test_tmp_dir());
    CHECK(rename(path, p2) == 0);
    expect_split_fail(p2, V4F_STATUS_FORMAT, "does not end in", __LINE__);
    /* name says shard 1 of 3 but no split keys */
    snprintf(path, sizeof path, "%s/nokeys-00001-of-00003.gguf", test_tmp_dir());
    v4f_gguf_writer *w;
    v4f_err err = {0};
    REQUIRE(v4f_gguf_writer_open(path, 32, &w, &err) == V4F_OK);
    REQUIRE(v4f_gguf_writer_close(w, &err) == V4F_OK);
    expect_split_fail(path, V4F_STATUS_FORMAT, "split.count = 1", __LINE__);
}

/* ---- malformed files ---------------------------------------------------------------- */

TEST(gguf_base_file_valid) {
    bb b = {0};
    base_file(&b);
    v4f_gguf *g;
    v4f_err err = {0};
    CHECK_STATUS(v4f_gguf_open_memory(b.p, b.n, "base.gguf", &g, &err), V4F_OK);
    if (g) {
        CHECK_EQ_INT(v4f_gguf_n_tensors(g), 2);
        CHECK(v4f_gguf_tensor_find(g, "b")->data == b.p + b.n - 64 + 32);
        CHECK(v4f_gguf_tensor_find(g, "a")->data == b.p + b.n - 64);
        v4f_gguf_close(g);
    }
    /* version 2 is accepted too */
    b.p[4] = 2;
    CHECK_STATUS(v4f_gguf_open_memory(b.p, b.n, "v2.gguf", &g, &err), V4F_OK);
    if (g) {
        CHECK_EQ_INT(v4f_gguf_version(g), 2);
        v4f_gguf_close(g);
    }
    bb_free(&b);
}

TEST(gguf_bad_truncated_everywhere) {
    /* Every prefix of a writer-made file with every value type fails with
     * FORMAT until the last tensor's bytes are complete. */
    const char *path = tmp_path("trunc.gguf");
    write_sink(path, 32, 4096);
    FILE *f = fopen(path, "rb");
    REQUIRE(f != NULL);
    uint8_t *buf = malloc(1 << 16);
    size_t n = fread(buf, 1, 1 << 16, f);
    fclose(f);
    v4f_gguf *g;
    v4f_err err = {0};
    REQUIRE(v4f_gguf_open_memory(buf, n, "whole.gguf", &g, &err) == V4F_OK);
    const v4f_gguf_tensor *last = v4f_gguf_tensor_at(g, N_TENSORS - 1);
    size_t data_end = (size_t)(last->file_offset + last->n_bytes);
    v4f_gguf_close(g);
    int bad = 0;
    for (size_t cut = 0; cut < n; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1); /* exact size so ASan sees overreads */
        memcpy(copy, buf, cut);
        v4f_status st = v4f_gguf_open_memory(copy, cut, "cut.gguf", &g, &err);
        if (cut < data_end) {
            if (st != V4F_STATUS_FORMAT || !strstr(err.msg, "cut.gguf") ||
                !(strstr(err.msg, "truncated") || strstr(err.msg, "past end") ||
                  strstr(err.msg, "cannot fit") || strstr(err.msg, "more than")))
                if (bad++ < 5) CHECK_MSG(0, "cut %zu: st %d msg %s", cut, st, err.msg);
        } else {
            CHECK_STATUS(st, V4F_OK);
        }
        if (!st) v4f_gguf_close(g);
        free(copy);
    }
    CHECK_EQ_INT(bad, 0);
    free(buf);
}

TEST(gguf_bad_header) {
    bb b = {0};
    EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "truncated: magic");
    base_file(&b);
    b.p[0] = 'G', b.p[3] = 'X';
    EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "bad magic");
    b.p[3] = 'F';
    b.p[4] = 1;
    EXPECT_FAIL(&b, V4F_STATUS_UNSUPPORTED, "version 1");
    b.p[4] = 99;
    EXPECT_FAIL(&b, V4F_STATUS_UNSUPPORTED, "version 99");
    b.p[4] = 0, b.p[7] = 3;
    EXPECT_FAIL(&b, V4F_STATUS_UNSUPPORTED, "big-endian");
    b.p[4] = 3, b.p[7] = 0;
    put_u64_at(&b, 8, UINT64_MAX);
    EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "more than the");
    put_u64_at(&b, 8, 2);
    put_u64_at(&b, 16, 1ull << 40);
    EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "1099511627776 kv entries");
    put_u64_at(&b, 16, UINT64_MAX / 2);
    EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "more than the");
    bb_free(&b);
    /* counts that fit the bytes but pass the reader's caps (1M kv / tensors) */
    hdr(&b, 3, 0, (1u << 20) + 1);
    bb_zeros(&b, 35u << 20); /* 33 bytes per minimal tensor info */
    EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "limits");
    put_u64_at(&b, 8, (1u << 20) + 1);
    put_u64_at(&b, 16, 0);
    EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "limits");
    bb_free(&b);
    base_file(&b);
    put_u64_at(&b, 16, 2); /* one more kv than present: eats the tensor infos */
    EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "tensor info 0");
    bb_free(&b);
}

TEST(gguf_bad_kv) {
    bb b = {0};
    /* string length past end */
    hdr(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, V4F_GGUF_STRING);
    bb_u64(&b, 1000);
    bb_bytes(&b, "abc", 3);
    EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "length 1000");
    bb_free(&b);
    /* key length past end */
    hdr(&b, 3, 0, 1);
    bb_u64(&b, UINT64_MAX);
    bb_zeros(&b, 20);
    EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "key: length 18446744073709551615");
    bb_free(&b);
    /* array count huge (fixed-size and string elements) */
    const uint32_t et[3] = {V4F_GGUF_U64, V4F_GGUF_STRING, V4F_GGUF_ARRAY};
    for (int i = 0; i < 3; i++) {
        hdr(&b, 3, 0, 1);
        bb_str(&b, "arr");
        bb_u32(&b, V4F_GGUF_ARRAY);
        bb_u32(&b, et[i]);
        bb_u64(&b, 1ull << 61);
        bb_zeros(&b, 64);
        EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "cannot fit");
        bb_free(&b);
    }
    /* nesting bomb: 9 and 1000 levels */
    const int depths[2] = {9, 1000};
    for (int i = 0; i < 2; i++) {
        hdr(&b, 3, 0, 1);
        bb_str(&b, "bomb");
        bb_u32(&b, V4F_GGUF_ARRAY);
        for (int d = 1; d < depths[i]; d++) bb_u32(&b, V4F_GGUF_ARRAY), bb_u64(&b, 1);
        bb_u32(&b, V4F_GGUF_U8), bb_u64(&b, 1), bb_u8(&b, 1);
        EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "nested deeper than 8");
        bb_free(&b);
    }
    /* depth 8 is fine */
    hdr(&b, 3, 0, 1);
    bb_str(&b, "deep8");
    bb_u32(&b, V4F_GGUF_ARRAY);
    for (int d = 1; d < 8; d++) bb_u32(&b, V4F_GGUF_ARRAY), bb_u64(&b, 1);
    bb_u32(&b, V4F_GGUF_U8), bb_u64(&b, 1), bb_u8(&b, 1);
    EXPECT_FAIL(&b, V4F_OK, "");
    bb_free(&b);
    /* unknown value type (scalar, array element) */
    hdr(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, 13);
    bb_zeros(&b, 8);
    EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "unknown value type 13");
    bb_free(&b);
    hdr(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, V4F_GGUF_ARRAY);
    bb_u32(&b, 0x7fffffff);
    bb_u64(&b, 0);
    EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "unknown array element type 2147483647");
    bb_free(&b);
    /* duplicate key, non-UTF-8 key, empty key, NUL in key */
    hdr(&b, 3, 0, 2);
    kv_u32(&b, "dup", 1);
    kv_u32(&b, "dup", 2);
    EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "kv 1 'dup': duplicate key");
    bb_free(&b);
    const char *bad_keys[4] = {"a\xc3(", "\xed\xa0\x80", "", "a\0b"};
    const char *msgs[4] = {"UTF-8", "UTF-8", "empty key", "NUL"};
    for (int i = 0; i < 4; i++) {
        hdr(&b, 3, 0, 1);
        size_t len = i == 3 ? 3 : strlen(bad_keys[i]);
        bb_u64(&b, len);
        bb_bytes(&b, bad_keys[i], len);
        bb_u32(&b, V4F_GGUF_U8);
        bb_u8(&b, 0);
        bb_zeros(&b, 16);
        EXPECT_FAIL(&b, V4F_STATUS_FORMAT, msgs[i]);
        bb_free(&b);
    }
}

TEST(gguf_bad_alignment) {
    const uint32_t bad[4] = {0, 3, 48, 1u << 20};
    bb b = {0};
    for (int i = 0; i < 4; i++) {
        hdr(&b, 3, 0, 1);
        kv_u32(&b, "general.alignment", bad[i]);
        EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "general.alignment");
        bb_free(&b);
    }
    hdr(&b, 3, 0, 1);
    bb_str(&b, "general.alignment");
    bb_u32(&b, V4F_GGUF_STRING);
    bb_str(&b, "32");
    EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "general.alignment has type string");
    bb_free(&b);
    /* alignment 1 and 64 work */
    static const uint64_t ne[1] = {3};
    const uint32_t good[2] = {1, 64};
    for (int i = 0; i < 2; i++) {
        hdr(&b, 3, 1, 1);
        kv_u32(&b, "general.alignment", good[i]);
        tinfo(&b, "t", 1, ne, V4F_TYPE_I8, 0);
        bb_pad(&b, good[i]);
        bb_zeros(&b, 3);
        EXPECT_FAIL(&b, V4F_OK, "");
        bb_free(&b);
    }
}

/* File with one tensor described by (n_dims, ne, type, off) and data bytes. */
static void one_tensor(bb *b, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t off,
                       size_t data) {
    hdr(b, 3, 1, 0);
    tinfo(b, "blk.0.attn_kv.weight", n_dims, ne, type, off);
    bb_pad(b, 32);
    bb_zeros(b, data);
}

TEST(gguf_bad_tensor) {
    bb b = {0};
    const uint64_t ne5[5] = {4, 1, 1, 1, 1}, ne4[4] = {4, 2, 2, 2};
    one_tensor(&b, 0, ne5, V4F_TYPE_F32, 0, 64);
    EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "tensor 'blk.0.attn_kv.weight': n_dims = 0");
    bb_free(&b);
    one_tensor(&b, 5, ne5, V4F_TYPE_F32, 0, 64);
    EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "n_dims = 5");
    bb_free(&b);
    one_tensor(&b, 4, ne4, V4F_TYPE_F32, 0, 128);
    EXPECT_FAIL(&b, V4F_OK, "");
    bb_free(&b);
    const uint64_t ne0[2] = {4, 0};
    one_tensor(&b, 2, ne0, V4F_TYPE_F32, 0, 64);
    EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "ne[1] = 0");
    bb_free(&b);
    const uint64_t ne1[1] = {4};
    one_tensor(&b, 1, ne1, 4, 0, 64); /* retired Q4_2 */
    EXPECT_FAIL(&b, V4F_STATUS_UNSUPPORTED,
                "tensor 'blk.0.attn_kv.weight': unknown tensor type id 4");
    bb_free(&b);
    one_tensor(&b, 1, ne1, 1000, 0, 64);
    EXPECT_FAIL(&b, V4F_STATUS_UNSUPPORTED, "type id 1000");
    bb_free(&b);
    const uint64_t ne33[1] = {33};
    one_tensor(&b, 1, ne33, V4F_TYPE_Q8_0, 0, 64);
    EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "ne[0] = 33 is not a multiple of the Q8_0 block size 32");
    bb_free(&b);
    one_tensor(&b, 1, ne1, V4F_TYPE_F32, 16, 64);
    EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "offset 16 is not a multiple of the alignment 32");
    bb_free(&b);
    one_tensor(&b, 1, ne1, V4F_TYPE_F32, 64, 64);
    EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "past end of file");
    bb_free(&b);
    one_tensor(&b, 1, ne1, V4F_TYPE_F32, UINT64_MAX - 31, 64);
    EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "data offset 18446744073709551584 + 16 bytes overflows");
    bb_free(&b);
    /* data [start, end) message: 2 tensors of 16 bytes, file holds 20 */
    one_tensor(&b, 1, ne1, V4F_TYPE_F32, 0, 15);
    EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "data [96, 112) past end of file (111 bytes)");
    bb_free(&b);
    /* ne product overflow, and a byte size overflow with a small count */
    const uint64_t big[4] = {1ull << 32, 1ull << 32, 1, 1};
    one_tensor(&b, 2, big, V4F_TYPE_F32, 0, 64);
    EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "element count overflows");
    bb_free(&b);
    const uint64_t big2[2] = {1ull << 40, 1ull << 22};
    one_tensor(&b, 2, big2, V4F_TYPE_F64, 0, 64);
    EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "byte size overflows");
    bb_free(&b);
    const uint64_t huge[1] = {1ull << 63};
    one_tensor(&b, 1, huge, V4F_TYPE_I8, 0, 64);
    EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "ne[0] = 9223372036854775808");
    bb_free(&b);
    /* tensor name: empty, bad UTF-8, length past end */
    hdr(&b, 3, 1, 0);
    tinfo(&b, "", 1, ne1, V4F_TYPE_F32, 0);
    bb_zeros(&b, 64);
    EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "tensor info 0: empty tensor name");
    bb_free(&b);
    hdr(&b, 3, 1, 0);
    tinfo(&b, "\xff", 1, ne1, V4F_TYPE_F32, 0);
    bb_zeros(&b, 64);
    EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "tensor name is not valid UTF-8");
    bb_free(&b);
    hdr(&b, 3, 1, 0);
    bb_u64(&b, 1u << 20);
    bb_zeros(&b, 40);
    EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "tensor info 0: tensor name: length 1048576");
    bb_free(&b);
}

TEST(gguf_bad_overlap_and_duplicates) {
    bb b = {0};
    const uint64_t ne[1] = {16}; /* 64 bytes of f32 */
    hdr(&b, 3, 3, 0);
    tinfo(&b, "a", 1, ne, V4F_TYPE_F32, 128);
    tinfo(&b, "b", 1, ne, V4F_TYPE_F32, 0);
    tinfo(&b, "c", 1, ne, V4F_TYPE_F32, 32); /* overlaps b */
    bb_pad(&b, 32);
    bb_zeros(&b, 192);
    EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "tensors 'b' [");
    EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "and 'c' [");
    bb_free(&b);
    /* same offset twice */
    hdr(&b, 3, 2, 0);
    tinfo(&b, "a", 1, ne, V4F_TYPE_F32, 64);
    tinfo(&b, "b", 1, ne, V4F_TYPE_F32, 64);
    bb_pad(&b, 32);
    bb_zeros(&b, 128);
    EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "overlap");
    bb_free(&b);
    /* adjacent is fine, in any directory order */
    hdr(&b, 3, 2, 0);
    tinfo(&b, "a", 1, ne, V4F_TYPE_F32, 64);
    tinfo(&b, "b", 1, ne, V4F_TYPE_F32, 0);
    bb_pad(&b, 32);
    bb_zeros(&b, 128);
    EXPECT_FAIL(&b, V4F_OK, "");
    bb_free(&b);
    /* duplicate tensor name */
    hdr(&b, 3, 2, 0);
    tinfo(&b, "same", 1, ne, V4F_TYPE_F32, 0);
    tinfo(&b, "same", 1, ne, V4F_TYPE_F32, 64);
    bb_pad(&b, 32);
    bb_zeros(&b, 128);
    EXPECT_FAIL(&b, V4F_STATUS_FORMAT, "duplicate tensor name 'same'");
    bb_free(&b);
}

TEST(gguf_many_tensors_hash) {
    /* 5000 tiny tensors: every one found by name through the hash table. */
    enum { N = 5000 };
    bb b = {0};
    const uint64_t ne[1] = {8};
    char name[32];
    hdr(&b, 3, N, 0);
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "blk.%d.w", i);
        tinfo(&b, name, 1, ne, V4F_TYPE_I8, (uint64_t)i * 32);
    }
    bb_pad(&b, 32);
    bb_zeros(&b, (size_t)N * 32);
    v4f_gguf *g;
    v4f_err err = {0};
    REQUIRE(v4f_gguf_open_memory(b.p, b.n, "many.gguf", &g, &err) == V4F_OK);
    int bad = 0;
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "blk.%d.w", i);
        bad += v4f_gguf_tensor_find(g, name) != v4f_gguf_tensor_at(g, (uint64_t)i);
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(v4f_gguf_tensor_find(g, "blk.5000.w") == NULL);
    v4f_gguf_close(g);
    bb_free(&b);
}
