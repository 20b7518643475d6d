/*
 * unicode.h - code point classes for the DeepSeek V4 pre-tokenizer:
 * General_Category L/M/N/P/S and the White_Space property, from the generated
 * range table unicode_tables.c (tools/gen/gen_unicode_tables.py).
 *
 * v4f_tok_ucls is O(1): ASCII from a 128-entry table, everything else from a
 * two-stage table built once (thread-safe, pthread_once) from the ranges.
 * Threading: read-only after the one-time build.
 */
#ifndef V4F_TOK_UNICODE_H
#define V4F_TOK_UNICODE_H

#include <stddef.h>
#include <stdint.h>

enum {
    V4F_UC_L = 1,
    V4F_UC_M = 2,
    V4F_UC_N = 4,
    V4F_UC_P = 8,
    V4F_UC_S = 16,
    V4F_UC_WS = 32
};

typedef struct v4f_tok_urange {
    uint32_t lo, hi;
    uint8_t cls;
} v4f_tok_urange;

extern const char v4f_tok_unicode_version[];
extern const uint32_t v4f_tok_unicode_n_ranges;
extern const v4f_tok_urange v4f_tok_unicode_ranges[];

extern uint8_t v4f_tok_ucls_ascii[128];
extern const uint8_t *v4f_tok_ucls_stage2;
extern uint16_t v4f_tok_ucls_stage1[0x110000 >> 8];

/* Build the lookup tables (idempotent, thread-safe). Must run before
 * v4f_tok_ucls; v4f_tok_new does it. */
void v4f_tok_unicode_init(void);

/* Class bits of code point cp (cp > 0x10FFFF: 0). */
static inline unsigned v4f_tok_ucls(uint32_t cp) {
    if (cp < 128) return v4f_tok_ucls_ascii[cp];
    if (cp > 0x10FFFF) return 0;
    return v4f_tok_ucls_stage2[((uint32_t)v4f_tok_ucls_stage1[cp >> 8] << 8) | (cp & 0xFF)];
}

/* Decode one UTF-8 code point at s[0..n) (n >= 1). Returns its byte length;
 * an invalid or truncated sequence yields length 1 and cp = 0x110000 (a
 * "character" of class 0), so every byte string can be split. */
static inline uint32_t v4f_tok_utf8_next(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned c = s[0];
    if (c < 0x80) { *cp = c; return 1; }
    uint32_t len, v, min;
    if ((c & 0xE0) == 0xC0) { len = 2; v = c & 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { len = 3; v = c & 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { len = 4; v = c & 0x07; min = 0x10000; }
    else { *cp = 0x110000; return 1; }
    if (n < len) { *cp = 0x110000; return 1; }
    for (uint32_t k = 1; k < len; k++) {
        if ((s[k] & 0xC0) != 0x80) { *cp = 0x110000; return 1; }
        v = (v << 6) | (s[k] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) { *cp = 0x110000; return 1; }
    *cp = v;
    return len;
}

#endif /* V4F_TOK_UNICODE_H */
