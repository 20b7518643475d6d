/*
 * json.h - JSON parser (DOM) and writer that keep what the DeepSeek V4 prompt
 * format needs: object member order, duplicate keys, and the original text of
 * every number.
 *
 * Why our own: the chat renderer must re-emit tool schemas and tool-call
 * arguments exactly like Python's json.dumps(..., ensure_ascii=False) does on
 * the json.loads result (member order, ", " / ": " separators, Python float
 * repr, last-duplicate-wins values at the first key's position). cJSON and
 * jansson convert numbers to double on parse (losing big integers and the
 * int/float distinction) and neither writes Python float reprs.
 *
 * Parser: RFC 8259 strict (no comments, no trailing commas, no NaN), input
 * must be valid UTF-8, \u escapes incl. surrogate pairs (a lone surrogate
 * becomes U+FFFD), depth and size limits, never crashes on bad input.
 * Ownership: a v4f_json_doc owns every node and string it hands out (one
 * arena); everything lives until v4f_json_doc_free.
 * Threading: a parsed document is immutable; safe to read from many threads.
 */
#ifndef V4F_JSON_H
#define V4F_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

typedef enum v4f_json_type {
    V4F_JSON_NULL = 0,
    V4F_JSON_FALSE,
    V4F_JSON_TRUE,
    V4F_JSON_NUMBER,
    V4F_JSON_STRING,
    V4F_JSON_ARRAY,
    V4F_JSON_OBJECT
} v4f_json_type;

/* One value. Arrays and objects hold their children as a singly linked list
 * (first child, next sibling); an object member carries its key. Strings are
 * decoded UTF-8 and NUL-terminated (they may also contain NUL: use len).
 * Numbers keep their source text in str/len; is_int is true when the text has
 * no fraction and no exponent. */
typedef struct v4f_json {
    uint8_t type;   /* v4f_json_type */
    bool is_int;    /* numbers only */
    uint32_t n;     /* arrays/objects: number of children */
    const char *str; /* string value or number text */
    size_t len;
    const char *key; /* object members only, else NULL */
    size_t key_len;
    struct v4f_json *child;
    struct v4f_json *next;
} v4f_json;

typedef struct v4f_json_doc v4f_json_doc;

typedef struct v4f_json_limits {
    size_t max_bytes;  /* input size (0: 256 MiB) */
    uint32_t max_depth; /* nesting (0: 512) */
} v4f_json_limits;

/* Parse text[0..len). lim may be NULL (defaults). On success *out owns the
 * tree; on failure *out is NULL and err says where (byte offset) and why. */
v4f_status v4f_json_parse(const char *text, size_t len, const v4f_json_limits *lim,
                          v4f_json_doc **out, v4f_err *err);
const v4f_json *v4f_json_doc_root(const v4f_json_doc *doc);
void v4f_json_doc_free(v4f_json_doc *doc);

/* ---- reading helpers (all accept NULL and then return NULL/false/0) ---- */
bool v4f_json_is(const v4f_json *v, v4f_json_type t);
/* Member by key. Python dict semantics: the last of duplicate keys wins. */
const v4f_json *v4f_json_get(const v4f_json *obj, const char *key);
/* String member or NULL (also NULL when present but not a string). */
const char *v4f_json_get_str(const v4f_json *obj, const char *key, size_t *len);
/* Python truthiness: null/false/0/""/[]/{} are false, absent is false. */
bool v4f_json_truthy(const v4f_json *v);
const v4f_json *v4f_json_at(const v4f_json *arr, uint32_t i);
bool v4f_json_key_eq(const v4f_json *member, const char *key);

/* ---- growable output buffer ---- */
typedef struct v4f_json_buf {
    char *data; /* NUL-terminated when len > 0 or after any append */
    size_t len;
    size_t cap;
} v4f_json_buf;

void v4f_json_buf_init(v4f_json_buf *b);
void v4f_json_buf_free(v4f_json_buf *b);
void v4f_json_buf_append(v4f_json_buf *b, const char *s, size_t n);
void v4f_json_buf_puts(v4f_json_buf *b, const char *s);
void v4f_json_buf_putc(v4f_json_buf *b, char c);
/* Detach the data (caller frees with free()); the buffer is reset. Never
 * returns NULL (an empty buffer gives ""). */
char *v4f_json_buf_take(v4f_json_buf *b, size_t *len);

/* ---- writing ---- */
enum {
    /* Python json.dumps style: ", " and ": " separators, ints normalised,
     * floats as Python repr, duplicate keys collapsed (last value at first
     * position). Without it: compact separators, numbers as in the source. */
    V4F_JSON_WRITE_PY = 1u << 0,
    /* \uXXXX-escape everything above U+007F (ensure_ascii=True). */
    V4F_JSON_WRITE_ASCII = 1u << 1
};

void v4f_json_write(v4f_json_buf *b, const v4f_json *v, unsigned flags);
/* A JSON string literal of s[0..n) (quotes included), escaped like Python
 * (\" \\ \n \r \t \b \f, other controls as \u00XX). s should be UTF-8;
 * invalid bytes are written as U+FFFD. */
void v4f_json_write_string(v4f_json_buf *b, const char *s, size_t n, unsigned flags);
/* Python repr() of a double ("0.5", "1e-05", "100.0", "inf" -> "Infinity"
 * as json.dumps writes it). */
void v4f_json_write_double_py(v4f_json_buf *b, double x);

#endif /* V4F_JSON_H */
