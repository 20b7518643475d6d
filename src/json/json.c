/*
 * json.c - JSON parse (order- and number-text-preserving DOM) and
 * Python-compatible writing. See json.h for the contract.
 *
 * The parser is iterative over containers only through recursion bounded by
 * max_depth (default 512 levels, a few hundred bytes of stack each), reads
 * with a checked cursor and allocates every node and string from one arena
 * owned by the document. Nothing here asserts on input.
 * Threading: no globals; documents are immutable after parse.
 */
#include "json/json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena ------------------------------------------------------------- */

typedef struct arena_chunk {
    struct arena_chunk *prev;
    size_t used, cap;
    max_align_t data[];
} arena_chunk;

struct v4f_json_doc {
    arena_chunk *chunk;
    v4f_json *root;
};

static void *arena_alloc(v4f_json_doc *d, size_t n) {
    n = (n + 15) & ~(size_t)15;
    arena_chunk *c = d->chunk;
    if (!c || c->cap - c->used < n) {
        size_t cap = 64 * 1024;
        if (n > cap / 4) cap = n;
        c = v4f_xmalloc(sizeof *c + cap);
        c->prev = d->chunk;
        c->used = 0;
        c->cap = cap;
        d->chunk = c;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    return p;
}

void v4f_json_doc_free(v4f_json_doc *doc) {
    if (!doc) return;
    arena_chunk *c = doc->chunk;
    while (c) {
        arena_chunk *p = c->prev;
        free(c);
        c = p;
    }
    free(doc);
}

const v4f_json *v4f_json_doc_root(const v4f_json_doc *doc) { return doc ? doc->root : NULL; }

/* ---- parser ------------------------------------------------------------ */

typedef struct parser {
    const char *s;
    size_t n, i;
    uint32_t depth, max_depth;
    v4f_json_doc *doc;
    v4f_err *err;
    v4f_status st;
} parser;

static v4f_status perr(parser *p, const char *what) {
    if (p->st == V4F_OK) p->st = v4f_err_set(p->err, V4F_STATUS_FORMAT, "json: %s at byte %zu", what, p->i);
    return p->st;
}

static void skip_ws(parser *p) {
    while (p->i < p->n) {
        char c = p->s[p->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->i++;
    }
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool read_hex4(parser *p, uint32_t *out) {
    if (p->n - p->i < 4) return false;
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexval(p->s[p->i + (size_t)k]);
        if (h < 0) return false;
        v = (v << 4) | (uint32_t)h;
    }
    p->i += 4;
    *out = v;
    return true;
}

static size_t put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the valid UTF-8 sequence at s[0..n), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    uint32_t cp, min;
    if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; min = 0x10000; }
    else return 0;
    if (n < len) return 0;
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

/* Parse a string literal at p->i (which is at '"'); decoded result in arena. */
static bool parse_string(parser *p, const char **out, size_t *out_len) {
    p->i++; /* opening quote */
    /* first pass: find the end and an upper bound of the decoded size */
    size_t j = p->i;
    while (j < p->n && p->s[j] != '"') {
        if (p->s[j] == '\\') j++;
        j++;
    }
    if (j >= p->n) { perr(p, "unterminated string"); return false; }
    size_t cap = j - p->i + 1; /* decoding never grows the text */
    char *o = arena_alloc(p->doc, cap);
    size_t k = 0;
    while (p->s[p->i] != '"') {
        unsigned char c = (unsigned char)p->s[p->i];
        if (c < 0x20) { perr(p, "control character in string"); return false; }
        if (c != '\\') {
            size_t l = utf8_len((const unsigned char *)p->s + p->i, p->n - p->i);
            if (!l) { perr(p, "invalid UTF-8 in string"); return false; }
            memcpy(o + k, p->s + p->i, l);
            k += l;
            p->i += l;
            continue;
        }
        p->i++;
        char e = p->s[p->i++];
        switch (e) {
        case '"': o[k++] = '"'; break;
        case '\\': o[k++] = '\\'; break;
        case '/': o[k++] = '/'; break;
        case 'b': o[k++] = '\b'; break;
        case 'f': o[k++] = '\f'; break;
        case 'n': o[k++] = '\n'; break;
        case 'r': o[k++] = '\r'; break;
        case 't': o[k++] = '\t'; break;
        case 'u': {
            uint32_t cp;
            if (!read_hex4(p, &cp)) { perr(p, "bad \\u escape"); return false; }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                uint32_t lo;
                if (p->n - p->i >= 6 && p->s[p->i] == '\\' && p->s[p->i + 1] == 'u') {
                    size_t save = p->i;
                    p->i += 2;
                    if (read_hex4(p, &lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    } else {
                        p->i = save;
                        cp = 0xFFFD;
                    }
                } else {
                    cp = 0xFFFD;
                }
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                cp = 0xFFFD;
            }
            /* 6 source bytes ("\uXXXX") always cover <= 4 output bytes, and
             * U+FFFD (3 bytes) replaces >= 6 source bytes. */
            k += put_utf8(o + k, cp);
            break;
        }
        default: p->i--; perr(p, "bad escape"); return false;
        }
    }
    p->i++; /* closing quote */
    o[k] = '\0';
    *out = o;
    *out_len = k;
    return true;
}

static bool parse_number(parser *p, v4f_json *v) {
    size_t st = p->i;
    bool is_int = true;
    if (p->i < p->n && p->s[p->i] == '-') p->i++;
    if (p->i >= p->n) { perr(p, "bad number"); return false; }
    if (p->s[p->i] == '0') {
        p->i++;
    } else if (p->s[p->i] >= '1' && p->s[p->i] <= '9') {
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
    } else {
        perr(p, "bad number");
        return false;
    }
    if (p->i < p->n && p->s[p->i] == '.') {
        is_int = false;
        p->i++;
        size_t d = p->i;
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
        if (p->i == d) { perr(p, "bad number fraction"); return false; }
    }
    if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
        is_int = false;
        p->i++;
        if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-')) p->i++;
        size_t d = p->i;
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
        if (p->i == d) { perr(p, "bad number exponent"); return false; }
    }
    size_t len = p->i - st;
    char *t = arena_alloc(p->doc, len + 1);
    memcpy(t, p->s + st, len);
    t[len] = '\0';
    v->type = V4F_JSON_NUMBER;
    v->is_int = is_int;
    v->str = t;
    v->len = len;
    return true;
}

static bool lit(parser *p, const char *w) {
    size_t l = strlen(w);
    if (p->n - p->i < l || memcmp(p->s + p->i, w, l) != 0) return false;
    p->i += l;
    return true;
}

static bool parse_value(parser *p, v4f_json *v);

static bool parse_container(parser *p, v4f_json *v, bool obj) {
    if (++p->depth > p->max_depth) { perr(p, "nesting too deep"); return false; }
    p->i++;
    v->type = obj ? V4F_JSON_OBJECT : V4F_JSON_ARRAY;
    v4f_json **tail = &v->child;
    skip_ws(p);
    if (p->i < p->n && p->s[p->i] == (obj ? '}' : ']')) {
        p->i++;
        p->depth--;
        return true;
    }
    for (;;) {
        v4f_json *c = arena_alloc(p->doc, sizeof *c);
        memset(c, 0, sizeof *c);
        skip_ws(p);
        if (obj) {
            if (p->i >= p->n || p->s[p->i] != '"') { perr(p, "expected object key"); return false; }
            if (!parse_string(p, &c->key, &c->key_len)) return false;
            skip_ws(p);
            if (p->i >= p->n || p->s[p->i] != ':') { perr(p, "expected ':'"); return false; }
            p->i++;
        }
        if (!parse_value(p, c)) return false;
        if (v->n == UINT32_MAX) { perr(p, "too many elements"); return false; }
        v->n++;
        *tail = c;
        tail = &c->next;
        skip_ws(p);
        if (p->i >= p->n) { perr(p, obj ? "unterminated object" : "unterminated array"); return false; }
        char ch = p->s[p->i++];
        if (ch == ',') continue;
        if (ch == (obj ? '}' : ']')) break;
        p->i--;
        perr(p, obj ? "expected ',' or '}'" : "expected ',' or ']'");
        return false;
    }
    p->depth--;
    return true;
}

static bool parse_value(parser *p, v4f_json *v) {
    skip_ws(p);
    if (p->i >= p->n) { perr(p, "unexpected end of input"); return false; }
    char c = p->s[p->i];
    switch (c) {
    case '{': return parse_container(p, v, true);
    case '[': return parse_container(p, v, false);
    case '"':
        v->type = V4F_JSON_STRING;
        return parse_string(p, &v->str, &v->len);
    case 't': if (lit(p, "true")) { v->type = V4F_JSON_TRUE; return true; } break;
    case 'f': if (lit(p, "false")) { v->type = V4F_JSON_FALSE; return true; } break;
    case 'n': if (lit(p, "null")) { v->type = V4F_JSON_NULL; return true; } break;
    default:
        if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p, v);
    }
    perr(p, "unexpected character");
    return false;
}

v4f_status v4f_json_parse(const char *text, size_t len, const v4f_json_limits *lim,
                          v4f_json_doc **out, v4f_err *err) {
    if (!out) return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "json: no output");
    *out = NULL;
    if (!text && len) return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "json: no input");
    size_t max_bytes = lim && lim->max_bytes ? lim->max_bytes : (size_t)256 << 20;
    if (len > max_bytes)
        return v4f_err_set(err, V4F_STATUS_RANGE, "json: input of %zu bytes exceeds the limit of %zu",
                           len, max_bytes);
    v4f_json_doc *d = v4f_xcalloc(1, sizeof *d);
    parser p = {.s = text ? text : "", .n = len, .doc = d, .err = err,
                .max_depth = lim && lim->max_depth ? lim->max_depth : 512};
    v4f_json *root = arena_alloc(d, sizeof *root);
    memset(root, 0, sizeof *root);
    if (parse_value(&p, root)) {
        skip_ws(&p);
        if (p.i != p.n) perr(&p, "trailing characters");
    }
    if (p.st != V4F_OK) {
        v4f_json_doc_free(d);
        return p.st;
    }
    d->root = root;
    *out = d;
    return V4F_OK;
}

/* ---- reading helpers --------------------------------------------------- */

bool v4f_json_is(const v4f_json *v, v4f_json_type t) { return v && v->type == t; }

bool v4f_json_key_eq(const v4f_json *m, const char *key) {
    size_t l = strlen(key);
    return m && m->key && m->key_len == l && memcmp(m->key, key, l) == 0;
}

const v4f_json *v4f_json_get(const v4f_json *obj, const char *key) {
    if (!obj || obj->type != V4F_JSON_OBJECT) return NULL;
    const v4f_json *found = NULL;
    for (const v4f_json *c = obj->child; c; c = c->next)
        if (v4f_json_key_eq(c, key)) found = c;
    return found;
}

const char *v4f_json_get_str(const v4f_json *obj, const char *key, size_t *len) {
    const v4f_json *v = v4f_json_get(obj, key);
    if (!v || v->type != V4F_JSON_STRING) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = v->len;
    return v->str;
}

bool v4f_json_truthy(const v4f_json *v) {
    if (!v) return false;
    switch (v->type) {
    case V4F_JSON_NULL:
    case V4F_JSON_FALSE: return false;
    case V4F_JSON_TRUE: return true;
    case V4F_JSON_NUMBER: return strtod(v->str, NULL) != 0.0;
    case V4F_JSON_STRING: return v->len > 0;
    default: return v->n > 0;
    }
}

const v4f_json *v4f_json_at(const v4f_json *arr, uint32_t i) {
    if (!arr || (arr->type != V4F_JSON_ARRAY && arr->type != V4F_JSON_OBJECT) || i >= arr->n)
        return NULL;
    const v4f_json *c = arr->child;
    while (i-- && c) c = c->next;
    return c;
}

/* ---- buffer ------------------------------------------------------------ */

void v4f_json_buf_init(v4f_json_buf *b) { memset(b, 0, sizeof *b); }

void v4f_json_buf_free(v4f_json_buf *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

static void buf_reserve(v4f_json_buf *b, size_t extra) {
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap *= 2;
    b->data = v4f_xrealloc(b->data, cap);
    b->cap = cap;
}

void v4f_json_buf_append(v4f_json_buf *b, const char *s, size_t n) {
    buf_reserve(b, n);
    if (n) memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void v4f_json_buf_puts(v4f_json_buf *b, const char *s) { v4f_json_buf_append(b, s, strlen(s)); }

void v4f_json_buf_putc(v4f_json_buf *b, char c) { v4f_json_buf_append(b, &c, 1); }

char *v4f_json_buf_take(v4f_json_buf *b, size_t *len) {
    if (!b->data) v4f_json_buf_append(b, "", 0);
    char *d = b->data;
    if (len) *len = b->len;
    memset(b, 0, sizeof *b);
    return d;
}

/* ---- writer ------------------------------------------------------------ */

void v4f_json_write_string(v4f_json_buf *b, const char *s, size_t n, unsigned flags) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    buf_reserve(b, n + 2);
    v4f_json_buf_putc(b, '"');
    size_t i = 0;
    while (i < n) {
        size_t run = i;
        unsigned char top = (flags & V4F_JSON_WRITE_ASCII) ? 0x7F : 0x80; /* ascii mode escapes DEL */
        while (run < n && u[run] >= 0x20 && u[run] < top && u[run] != '"' && u[run] != '\\') run++;
        if (run > i) {
            v4f_json_buf_append(b, s + i, run - i);
            i = run;
            if (i >= n) break;
        }
        unsigned char c = u[i];
        char esc[12];
        switch (c) {
        case '"': v4f_json_buf_append(b, "\\\"", 2); i++; continue;
        case '\\': v4f_json_buf_append(b, "\\\\", 2); i++; continue;
        case '\n': v4f_json_buf_append(b, "\\n", 2); i++; continue;
        case '\r': v4f_json_buf_append(b, "\\r", 2); i++; continue;
        case '\t': v4f_json_buf_append(b, "\\t", 2); i++; continue;
        case '\b': v4f_json_buf_append(b, "\\b", 2); i++; continue;
        case '\f': v4f_json_buf_append(b, "\\f", 2); i++; continue;
        default: break;
        }
        if (c < 0x20 || c == 0x7F) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            v4f_json_buf_append(b, esc, 6);
            i++;
            continue;
        }
        size_t l = utf8_len(u + i, n - i);
        uint32_t cp = 0xFFFD;
        if (l) {
            if (!(flags & V4F_JSON_WRITE_ASCII)) {
                v4f_json_buf_append(b, s + i, l);
                i += l;
                continue;
            }
            cp = l == 2 ? (u[i] & 0x1Fu) : l == 3 ? (u[i] & 0x0Fu) : (u[i] & 0x07u);
            for (size_t k = 1; k < l; k++) cp = (cp << 6) | (u[i + k] & 0x3Fu);
            i += l;
        } else {
            i++;
        }
        if (!(flags & V4F_JSON_WRITE_ASCII)) {
            v4f_json_buf_append(b, "\xEF\xBF\xBD", 3);
            continue;
        }
        uint32_t units[2];
        int nu = 0;
        if (cp >= 0x10000) {
            cp -= 0x10000;
            units[nu++] = 0xD800 + (cp >> 10);
            units[nu++] = 0xDC00 + (cp & 0x3FF);
        } else {
            units[nu++] = cp;
        }
        for (int k = 0; k < nu; k++) {
            esc[0] = '\\';
            esc[1] = 'u';
            for (int h = 0; h < 4; h++) esc[2 + h] = hex[(units[k] >> (12 - 4 * h)) & 15];
            v4f_json_buf_append(b, esc, 6);
        }
    }
    v4f_json_buf_putc(b, '"');
}

void v4f_json_write_double_py(v4f_json_buf *b, double x) {
    if (isnan(x)) { v4f_json_buf_puts(b, "NaN"); return; }
    if (isinf(x)) { v4f_json_buf_puts(b, x < 0 ? "-Infinity" : "Infinity"); return; }
    /* shortest digits that round-trip (repr's mode 0) */
    char e[40];
    int prec;
    for (prec = 0; prec < 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec, x);
        if (strtod(e, NULL) == x) break;
    }
    if (prec == 17) snprintf(e, sizeof e, "%.*e", 16, x);
    /* e = [-]D[.DDD]e[+-]XX -> digits + decimal exponent */
    const char *q = e;
    bool neg = false;
    if (*q == '-') { neg = true; q++; }
    char dig[24];
    int nd = 0;
    while (*q && *q != 'e') {
        if (*q != '.' && nd < 23) dig[nd++] = *q;
        q++;
    }
    int exp10 = *q == 'e' ? atoi(q + 1) : 0;
    while (nd > 1 && dig[nd - 1] == '0') nd--; /* strip trailing zeros */
    dig[nd] = '\0';
    int decpt = exp10 + 1; /* digits d1.d2.. x 10^exp10 = 0.d1d2.. x 10^decpt */
    char out[64];
    int o = 0;
    if (neg) out[o++] = '-';
    if (x == 0.0) decpt = 1;
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            out[o++] = '0';
            out[o++] = '.';
            for (int k = 0; k < -decpt; k++) out[o++] = '0';
            for (int k = 0; k < nd; k++) out[o++] = dig[k];
        } else {
            for (int k = 0; k < decpt; k++) out[o++] = k < nd ? dig[k] : '0';
            out[o++] = '.';
            if (nd > decpt)
                for (int k = decpt; k < nd; k++) out[o++] = dig[k];
            else
                out[o++] = '0';
        }
    } else {
        out[o++] = dig[0];
        if (nd > 1) {
            out[o++] = '.';
            for (int k = 1; k < nd; k++) out[o++] = dig[k];
        }
        int ex = decpt - 1;
        o += snprintf(out + o, sizeof out - (size_t)o, "e%c%02d", ex < 0 ? '-' : '+', ex < 0 ? -ex : ex);
    }
    v4f_json_buf_append(b, out, (size_t)o);
}

static void write_number(v4f_json_buf *b, const v4f_json *v, unsigned flags) {
    if (!(flags & V4F_JSON_WRITE_PY)) {
        v4f_json_buf_append(b, v->str, v->len);
        return;
    }
    if (v->is_int) {
        /* Python int: exact digits; "-0" is 0 */
        const char *s = v->str;
        size_t n = v->len;
        if (n == 2 && s[0] == '-' && s[1] == '0') { s++; n--; }
        v4f_json_buf_append(b, s, n);
        return;
    }
    v4f_json_write_double_py(b, strtod(v->str, NULL));
}

/* Python dict semantics for a parsed object with duplicate keys: a key sits
 * at its first position and holds its last value. */
static bool member_is_first(const v4f_json *obj, const v4f_json *m) {
    for (const v4f_json *c = obj->child; c && c != m; c = c->next)
        if (c->key_len == m->key_len && memcmp(c->key, m->key, m->key_len) == 0) return false;
    return true;
}

static const v4f_json *member_last_value(const v4f_json *m) {
    const v4f_json *r = m;
    for (const v4f_json *c = m->next; c; c = c->next)
        if (c->key_len == m->key_len && memcmp(c->key, m->key, m->key_len) == 0) r = c;
    return r;
}

static void write_value(v4f_json_buf *b, const v4f_json *v, unsigned flags, int depth) {
    bool py = flags & V4F_JSON_WRITE_PY;
    switch (v->type) {
    case V4F_JSON_NULL: v4f_json_buf_puts(b, "null"); return;
    case V4F_JSON_FALSE: v4f_json_buf_puts(b, "false"); return;
    case V4F_JSON_TRUE: v4f_json_buf_puts(b, "true"); return;
    case V4F_JSON_NUMBER: write_number(b, v, flags); return;
    case V4F_JSON_STRING: v4f_json_write_string(b, v->str, v->len, flags); return;
    case V4F_JSON_ARRAY: {
        v4f_json_buf_putc(b, '[');
        for (const v4f_json *c = v->child; c; c = c->next) {
            if (c != v->child) v4f_json_buf_append(b, py ? ", " : ",", py ? 2 : 1);
            write_value(b, c, flags, depth + 1);
        }
        v4f_json_buf_putc(b, ']');
        return;
    }
    case V4F_JSON_OBJECT: {
        v4f_json_buf_putc(b, '{');
        bool first = true;
        bool dedupe = py && v->n > 1 && v->n <= 1024; /* O(n^2); huge objects skip it */
        for (const v4f_json *c = v->child; c; c = c->next) {
            const v4f_json *val = c;
            if (dedupe) {
                if (!member_is_first(v, c)) continue;
                val = member_last_value(c);
            }
            if (!first) v4f_json_buf_append(b, py ? ", " : ",", py ? 2 : 1);
            first = false;
            v4f_json_write_string(b, c->key, c->key_len, flags);
            v4f_json_buf_append(b, py ? ": " : ":", py ? 2 : 1);
            write_value(b, val, flags, depth + 1);
        }
        v4f_json_buf_putc(b, '}');
        return;
    }
    }
}

void v4f_json_write(v4f_json_buf *b, const v4f_json *v, unsigned flags) {
    if (!v) {
        v4f_json_buf_puts(b, "null");
        return;
    }
    write_value(b, v, flags, 0);
}
