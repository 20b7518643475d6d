/*
 * fuzz_json.c - libFuzzer target for src/json: parse with a small depth
 * limit; on success write it back compactly and in Python style, re-parse
 * the compact text and require a byte-identical second write (the writer
 * is a fixed point). Any crash, sanitizer report or trap is a bug.
 *
 * Owns nothing between runs; single-threaded.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    v4f_json_limits lim = {.max_bytes = 1 << 20, .max_depth = 64};
    v4f_json_doc *d = NULL;
    v4f_err err = {0};
    if (v4f_json_parse((const char *)data, size, &lim, &d, &err) != V4F_OK) {
        if (d || !err.msg[0]) __builtin_trap();
        return 0;
    }
    v4f_json_buf a, b, p;
    v4f_json_buf_init(&a);
    v4f_json_buf_init(&b);
    v4f_json_buf_init(&p);
    v4f_json_write(&a, v4f_json_doc_root(d), 0);
    v4f_json_write(&p, v4f_json_doc_root(d), V4F_JSON_WRITE_PY);
    v4f_json_write(&p, v4f_json_doc_root(d), V4F_JSON_WRITE_PY | V4F_JSON_WRITE_ASCII);
    v4f_json_doc *d2 = NULL;
    if (v4f_json_parse(a.data, a.len, &lim, &d2, &err) != V4F_OK) __builtin_trap();
    v4f_json_write(&b, v4f_json_doc_root(d2), 0);
    if (a.len != b.len || memcmp(a.data, b.data, a.len) != 0) __builtin_trap();
    v4f_json_doc_free(d2);
    v4f_json_doc_free(d);
    v4f_json_buf_free(&a);
    v4f_json_buf_free(&b);
    v4f_json_buf_free(&p);
    return 0;
}
