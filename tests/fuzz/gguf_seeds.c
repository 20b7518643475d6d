/*
 * gguf_seeds.c - writes the hand-made seed corpus for fuzz_gguf into a
 * directory (default tests/fuzz/corpus/gguf): small valid files made with
 * the writer (every value type, nested and string arrays, tensors of
 * several types, non-default alignment, metadata-only, tensors-only) and
 * broken variants of them (truncations, bad magic, versions 1/99, huge
 * counts, a nesting bomb, bad types, overlaps, a misaligned offset).
 * Not a fuzz target (no fuzz_ prefix); see tests/fuzz/README.md.
 *
 * Build (from the repo root): cc -std=c11 -Iinclude -Isrc -D_GNU_SOURCE \
 *   tests/fuzz/gguf_seeds.c src/gguf/gguf.c src/gguf/gguf_writer.c \
 *   src/core/core.c src/core/ggml_type.c -lm -o build/gguf_seeds
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ggml_type.h"
#include "gguf/gguf.h"

static const char *g_dir;

static void die(const char *what, const v4f_err *err) {
    fprintf(stderr, "gguf_seeds: %s: %s\n", what, err ? err->msg : "");
    exit(1);
}

static char *path_of(const char *name) {
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", g_dir, name);
    return buf;
}

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* A file with every value type and a few tensors; returns its size. */
static void make_valid(const char *name, uint32_t align, int with_kv, int with_tensors) {
    v4f_gguf_writer *w;
    v4f_err err = {0};
    if (v4f_gguf_writer_open(path_of(name), align, &w, &err)) die(name, &err);
    if (with_kv) {
        uint8_t b[64];
        v4f_gguf_writer_set_u32(w, "t.u32", 7);
        v4f_gguf_writer_set_i32(w, "t.i32", -7);
        v4f_gguf_writer_set_u64(w, "t.u64", 1ull << 40);
        v4f_gguf_writer_set_f32(w, "t.f32", 1.5f);
        v4f_gguf_writer_set_bool(w, "t.bool", true);
        v4f_gguf_writer_set_str(w, "t.str", "h\xc3\xa9llo");
        b[0] = 200;
        v4f_gguf_writer_set_raw(w, "t.u8", V4F_GGUF_U8, b, 1);
        b[0] = 0x80;
        v4f_gguf_writer_set_raw(w, "t.i8", V4F_GGUF_I8, b, 1);
        put32(b, 0xfffe);
        v4f_gguf_writer_set_raw(w, "t.u16", V4F_GGUF_U16, b, 2);
        v4f_gguf_writer_set_raw(w, "t.i16", V4F_GGUF_I16, b, 2);
        put64(b, (uint64_t)-5);
        v4f_gguf_writer_set_raw(w, "t.i64", V4F_GGUF_I64, b, 8);
        double d = -2.25;
        v4f_gguf_writer_set_raw(w, "t.f64", V4F_GGUF_F64, &d, 8);
        int32_t ia[5] = {0, 0, 4, 128, 4};
        v4f_gguf_writer_set_arr(w, "t.arr_i32", V4F_GGUF_I32, ia, 5);
        float fa[3] = {10.f, -1.f, 0.5f};
        v4f_gguf_writer_set_arr(w, "t.arr_f32", V4F_GGUF_F32, fa, 3);
        const char *sa[4] = {"a", "", "<|end|>", "\xe4\xb8\xad"};
        v4f_gguf_writer_set_arr_str(w, "t.arr_str", sa, 4);
        /* [[1,2],[3]] as u16 arrays nested in an array, then [["x"]] */
        uint8_t n[64], *p = n;
        put32(p, V4F_GGUF_ARRAY), put64(p + 4, 2), p += 12;
        put32(p, V4F_GGUF_U16), put64(p + 4, 2), p += 12;
        p[0] = 1, p[1] = 0, p[2] = 2, p[3] = 0, p += 4;
        put32(p, V4F_GGUF_U16), put64(p + 4, 1), p += 12;
        p[0] = 3, p[1] = 0, p += 2;
        v4f_gguf_writer_set_raw(w, "t.nested", V4F_GGUF_ARRAY, n, (uint64_t)(p - n));
        p = n;
        put32(p, V4F_GGUF_ARRAY), put64(p + 4, 1), p += 12;
        put32(p, V4F_GGUF_STRING), put64(p + 4, 1), p += 12;
        put64(p, 1), p[8] = 'x', p += 9;
        v4f_gguf_writer_set_raw(w, "t.nested_str", V4F_GGUF_ARRAY, n, (uint64_t)(p - n));
    }
    if (with_tensors) {
        uint64_t ne_a[2] = {8, 3}, ne_b[1] = {64}, ne_c[3] = {32, 2, 2}, ne_d[1] = {256};
        if (v4f_gguf_writer_add_tensor(w, "a.f32", V4F_TYPE_F32, 2, ne_a, &err) ||
            v4f_gguf_writer_add_tensor(w, "b.f16", V4F_TYPE_F16, 1, ne_b, &err) ||
            v4f_gguf_writer_add_tensor(w, "c.q8_0", V4F_TYPE_Q8_0, 3, ne_c, &err) ||
            v4f_gguf_writer_add_tensor(w, "d.q4_k", V4F_TYPE_Q4_K, 1, ne_d, &err))
            die(name, &err);
    }
    if (v4f_gguf_writer_begin_data(w, &err)) die(name, &err);
    uint8_t chunk[512];
    for (int i = 0; i < 512; i++) chunk[i] = (uint8_t)(i * 37 + 1);
    uint64_t total = with_tensors ? 96 + 128 + 4 * 34 + 144 : 0;
    while (total) {
        uint64_t k = total < sizeof chunk ? total : sizeof chunk;
        if (v4f_gguf_writer_write_data(w, chunk, k, &err)) die(name, &err);
        total -= k;
    }
    if (v4f_gguf_writer_close(w, &err)) die(name, &err);
}

static uint8_t *slurp(const char *name, size_t *n) {
    FILE *f = fopen(path_of(name), "rb");
    if (!f) die(name, NULL);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*n + 64);
    if (fread(b, 1, *n, f) != *n) die(name, NULL);
    fclose(f);
    return b;
}

static void spit(const char *name, const uint8_t *b, size_t n) {
    FILE *f = fopen(path_of(name), "wb");
    if (!f || fwrite(b, 1, n, f) != n || fclose(f)) die(name, NULL);
}

/* Broken variants of the kitchen-sink file. */
static void make_broken(void) {
    size_t n;
    uint8_t *b = slurp("valid-all.gguf", &n), *c = malloc(n + 64);
    const size_t cuts[] = {3, 8, 20, 30, 60, 200, 400, n - 300, n - 200};
    char nm[64];
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        snprintf(nm, sizeof nm, "broken-trunc-%zu.gguf", cuts[i]);
        spit(nm, b, cuts[i]);
    }
    memcpy(c, b, n), c[0] = 'X', spit("broken-magic.gguf", c, n);
    memcpy(c, b, n), put32(c + 4, 1), spit("broken-v1.gguf", c, n);
    memcpy(c, b, n), put32(c + 4, 99), spit("broken-v99.gguf", c, n);
    memcpy(c, b, n), put64(c + 8, 1ull << 60), spit("broken-ntensors.gguf", c, n);
    memcpy(c, b, n), put64(c + 16, 1ull << 62), spit("broken-nkv.gguf", c, n);
    memcpy(c, b, n), c[36] = 0xff, spit("broken-key-utf8.gguf", c, n);
    /* Nesting bomb: one kv holding 10 levels of single-element arrays. */
    uint8_t bomb[512], *p = bomb;
    memcpy(p, "GGUF", 4), put32(p + 4, 3), put64(p + 8, 0), put64(p + 16, 1), p += 24;
    put64(p, 1), p[8] = 'k', put32(p + 9, V4F_GGUF_ARRAY), p += 13;
    for (int i = 0; i < 10; i++) put32(p, V4F_GGUF_ARRAY), put64(p + 4, 1), p += 12;
    put32(p, V4F_GGUF_U8), put64(p + 4, 1), p[12] = 1, p += 13;
    spit("broken-nest-bomb.gguf", bomb, (size_t)(p - bomb));
    free(b);
    free(c);
}

/* Offset of the n_dims field of tensor info `name` in b, or 0. */
static size_t tinfo_at(const uint8_t *b, size_t n, const char *name) {
    size_t len = strlen(name);
    for (size_t i = 8; i + len + 4 <= n; i++)
        if (b[i - 8] == len && memcmp(b + i, name, len) == 0) return i + len;
    return 0;
}

/* Directory-level breakage of the tensors-only file. */
static void make_broken_tensors(void) {
    size_t n;
    uint8_t *b = slurp("valid-tensors-only.gguf", &n), *c = malloc(n);
    size_t a = tinfo_at(b, n, "a.f32"), q = tinfo_at(b, n, "c.q8_0");
    size_t a_type = a + 4 + 16, a_off = a_type + 4;       /* a.f32 has 2 dims */
    size_t q_ne0 = q + 4, q_off = q + 4 + 24 + 4;          /* c.q8_0 has 3 dims */
    if (!a || !q) die("tensor info not found", NULL);
    memcpy(c, b, n), put32(c + a_type, 4), spit("broken-ttype.gguf", c, n);
    memcpy(c, b, n), put32(c + a, 0), spit("broken-ndims0.gguf", c, n);
    memcpy(c, b, n), put32(c + a, 5), spit("broken-ndims5.gguf", c, n);
    memcpy(c, b, n), put64(c + q_ne0, 33), spit("broken-ne-block.gguf", c, n);
    memcpy(c, b, n), put64(c + q_ne0, 0), spit("broken-ne-zero.gguf", c, n);
    memcpy(c, b, n), put64(c + a_off, 16), spit("broken-misaligned.gguf", c, n);
    memcpy(c, b, n), put64(c + a_off, 1u << 20), spit("broken-offset-past.gguf", c, n);
    memcpy(c, b, n), memcpy(c + q_off, c + a_off, 8), spit("broken-overlap.gguf", c, n);
    memcpy(c, b, n), memcpy(c + tinfo_at(b, n, "b.f16") - 5, "a.f32", 5);
    spit("broken-dup-tensor.gguf", c, n);
    free(b);
    free(c);
}

int main(int argc, char **argv) {
    g_dir = argc > 1 ? argv[1] : "tests/fuzz/corpus/gguf";
    make_valid("valid-all.gguf", 32, 1, 1);
    make_valid("valid-align64.gguf", 64, 1, 1);
    make_valid("valid-kv-only.gguf", 0, 1, 0);
    make_valid("valid-tensors-only.gguf", 32, 0, 1);
    make_valid("valid-empty.gguf", 32, 0, 0);
    make_broken();
    make_broken_tensors();
    return 0;
}
