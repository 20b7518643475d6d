/*
 * fuzz_gguf.c - libFuzzer target for the GGUF reader.
 *
 * Feeds the input to v4f_gguf_open_memory (so no file, no split handling)
 * and, when it opens, walks everything the public API exposes: every kv
 * (scalars through the typed getters, every numeric and string array
 * element, nested arrays through v4f_gguf_arr_sub), every tensor (name
 * lookup must find it again, its bytes must lie inside the input and are all
 * read). Invariant violations trap so libFuzzer reports them.
 *
 * Owns nothing between runs; single-threaded.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/ggml_type.h"
#include "gguf/gguf.h"

#define WALK_CAP 64 /* elements visited per nested level (linear lookups) */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t sink;

static void walk_array(const v4f_gguf *g, const v4f_gguf_kv *kv, int depth, int top) {
    uint64_t n = kv->arr_n;
    if (depth > 16) __builtin_trap(); /* reader caps nesting at 8 */
    for (uint64_t i = 0; i < n; i++) {
        if (!top && i >= WALK_CAP && i != n - 1) continue;
        int64_t iv;
        double dv;
        v4f_str s;
        v4f_gguf_kv sub;
        switch (kv->arr_type) {
        case V4F_GGUF_STRING:
            if (!v4f_gguf_arr_str(g, kv, i, &s)) __builtin_trap();
            if (s.len && (s.ptr[0] ^ s.ptr[s.len - 1])) sink++;
            break;
        case V4F_GGUF_ARRAY:
            if (i >= WALK_CAP && i != n - 1) break;
            if (!v4f_gguf_arr_sub(kv, i, &sub)) __builtin_trap();
            walk_array(g, &sub, depth + 1, 0);
            break;
        case V4F_GGUF_F32:
        case V4F_GGUF_F64:
            if (!v4f_gguf_arr_float(kv, i, &dv)) __builtin_trap();
            sink += dv == dv;
            break;
        default:
            if (v4f_gguf_arr_int(kv, i, &iv)) sink += (uint64_t)iv;
            if (!v4f_gguf_arr_float(kv, i, &dv) && kv->arr_type != V4F_GGUF_BOOL) __builtin_trap();
            break;
        }
    }
    int64_t iv;
    double dv;
    v4f_str s;
    v4f_gguf_kv sub;
    if (v4f_gguf_arr_int(kv, n, &iv) || v4f_gguf_arr_float(kv, n, &dv) ||
        v4f_gguf_arr_str(g, kv, n, &s) || v4f_gguf_arr_sub(kv, n, &sub))
        __builtin_trap(); /* one past the end must fail */
}

static void walk_kvs(const v4f_gguf *g) {
    for (uint64_t i = 0; i < v4f_gguf_n_kv(g); i++) {
        const v4f_gguf_kv *kv = v4f_gguf_kv_at(g, i);
        char *key = malloc(kv->key.len + 1);
        memcpy(key, kv->key.ptr, kv->key.len);
        key[kv->key.len] = '\0';
        if (v4f_gguf_kv_find(g, key) != kv) __builtin_trap();
        v4f_err err = {0};
        uint32_t u32;
        uint64_t u64;
        float f;
        bool b;
        v4f_str s;
        if (!v4f_gguf_get_u32(g, key, &u32, &err)) sink += u32;
        if (!v4f_gguf_get_u64(g, key, &u64, &err)) sink += u64;
        if (!v4f_gguf_get_f32(g, key, &f, &err)) sink += f == f;
        if (!v4f_gguf_get_bool(g, key, &b, &err)) sink += b;
        if (!v4f_gguf_get_str(g, key, &s, &err)) {
            if (s.len) sink += (uint8_t)s.ptr[s.len - 1];
        }
        if (kv->type == V4F_GGUF_ARRAY) walk_array(g, kv, 1, 1);
        free(key);
    }
}

static void walk_tensors(const v4f_gguf *g, const uint8_t *data, size_t size) {
    for (uint64_t i = 0; i < v4f_gguf_n_tensors(g); i++) {
        const v4f_gguf_tensor *t = v4f_gguf_tensor_at(g, i);
        char *name = malloc(t->name.len + 1);
        memcpy(name, t->name.ptr, t->name.len);
        name[t->name.len] = '\0';
        if (v4f_gguf_tensor_find(g, name) != t) __builtin_trap();
        free(name);
        const uint8_t *p = t->data;
        if (p < data || t->n_bytes > size || (uint64_t)(p - data) > size - t->n_bytes)
            __builtin_trap();
        if (t->file_offset % v4f_gguf_alignment(g) || t->n_dims < 1 || t->n_dims > 4 ||
            !v4f_type_info_get(t->type))
            __builtin_trap();
        uint64_t acc = 0;
        for (uint64_t k = 0; k < t->n_bytes; k++) acc += p[k];
        sink += acc;
    }
    if (v4f_gguf_tensor_find(g, "") != NULL) __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    v4f_gguf *g = NULL;
    v4f_err err = {0};
    if (v4f_gguf_open_memory(data, size, "fuzz.gguf", &g, &err) != V4F_OK) {
        if (!err.msg[0] || memchr(err.msg, 0, sizeof err.msg) == NULL) __builtin_trap();
        return 0;
    }
    walk_kvs(g);
    walk_tensors(g, data, size);
    (void)v4f_gguf_kv_at(g, v4f_gguf_n_kv(g));
    (void)v4f_gguf_tensor_at(g, v4f_gguf_n_tensors(g));
    v4f_gguf_close(g);
    return 0;
}
