/*
 * bpe.c - the DeepSeek V4 pre-tokenizer (built-in matcher and PCRE2 path),
 * special-token cutting, and the byte-level BPE merge loop.
 *
 * Pre-tokenizer (HF "Split ... Isolated" x3, nested): split 1 \p{N}{1,3};
 * split 2 CJK/kana runs [U+4E00-9FA5 U+3040-30FF]+; split 3 the six-way
 * alternation below, run over every piece of split 2, which runs over every
 * piece of split 1. Matches and the stretches between them are pieces.
 *
 *   A1 [ASCII punct/symbol][A-Za-z]+
 *   A2 [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+
 *   A3  ?[\p{P}\p{S}]+[\r\n]*
 *   A4 \s*[\r\n]+      A5 \s+(?!\S)      A6 \s+
 *
 * \s is Unicode White_Space (Oniguruma's \s, which HF uses). PCRE2's own \s
 * with UCP also matches U+180E (a format character since Unicode 6.3; checked
 * with PCRE2 10.42), so the PCRE2 patterns spell the class out.
 *
 * BPE: symbols start as the byte tokens; the adjacent pair with the lowest
 * merge rank (leftmost on ties) merges until none has a rank. Short pieces
 * use an array with cached pair ranks; long ones a binary heap (O(n log n)).
 *
 * Memory: scratch lives on the stack or in per-call heap blocks (a piece
 * cache for inputs of 8 KiB and more).
 * Threading: reentrant; v4f_tok is only read. PCRE2 match data is per call.
 */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"
#include "tokenizer/unicode.h"

#ifdef V4F_HAVE_PCRE2
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#endif

/* ---- piece sink ------------------------------------------------------------ */

/* Per-call piece cache for large inputs (words repeat): direct-mapped,
 * short pieces only, 64-byte entries, 4096..16384 of them by input size
 * (calloc'ed, so only touched pages cost anything; NULL on failure just
 * means no cache). */
#define CACHE_MIN_INPUT 8192
#define CACHE_MIN_ENTRIES 4096
#define CACHE_MAX_ENTRIES 16384 /* 1 MiB; 65536 measured slower (cache misses) */
#define CACHE_MAX_BYTES 22
#define CACHE_MAX_IDS 8

typedef struct cache_entry {
    uint32_t hash;
    uint8_t len;     /* 0 = empty */
    uint8_t n_ids;
    char bytes[CACHE_MAX_BYTES];
    int32_t ids[CACHE_MAX_IDS];
} cache_entry;

typedef struct sink {
    const v4f_tok *t;
    cache_entry *cache;    /* NULL when not worth it */
    size_t cache_mask;
    v4f_tok_ids *ids;      /* encode mode */
    v4f_tok_piece_fn fn;   /* pieces mode */
    void *ud;
} sink;

static void ids_push(v4f_tok_ids *v, int32_t id) {
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 64;
        v->ids = v4f_xrealloc(v->ids, v->cap * sizeof *v->ids);
    }
    v->ids[v->n++] = id;
}

/* ---- merges ---------------------------------------------------------------- */

static inline bool merge_find(const v4f_tok *t, int32_t a, int32_t b, uint32_t *rank, int32_t *res) {
    uint64_t key = ((uint64_t)(uint32_t)(a + 1) << 32) | (uint32_t)(b + 1);
    for (uint64_t h = (key * 0x9E3779B97F4A7C15ULL >> 32) & t->m_mask;; h = (h + 1) & t->m_mask) {
        uint64_t k = t->m_key[h];
        if (k == key) {
            *rank = t->m_rank[h];
            *res = t->m_res[h];
            return true;
        }
        if (!k) return false;
    }
}

#define SMALL_PIECE 64 /* symbol buffer on the stack */
#define SCAN_PIECE 16   /* up to this many symbols: O(m^2) scan, else heap */

static void bpe_small(const v4f_tok *t, int32_t *sym, size_t m, v4f_tok_ids *out) {
    uint32_t rank[SMALL_PIECE];
    int32_t res[SMALL_PIECE];
    for (size_t i = 0; i + 1 < m; i++)
        if (!merge_find(t, sym[i], sym[i + 1], &rank[i], &res[i])) rank[i] = UINT32_MAX;
    while (m > 1) {
        size_t bi = 0;
        uint32_t best = UINT32_MAX;
        for (size_t i = 0; i + 1 < m; i++)
            if (rank[i] < best) { best = rank[i]; bi = i; }
        if (best == UINT32_MAX) break;
        sym[bi] = res[bi];
        size_t tail = m - bi - 2; /* symbols after the merged pair */
        memmove(sym + bi + 1, sym + bi + 2, tail * sizeof *sym);
        if (tail > 1) {
            memmove(rank + bi + 1, rank + bi + 2, (tail - 1) * sizeof *rank);
            memmove(res + bi + 1, res + bi + 2, (tail - 1) * sizeof *res);
        }
        m--;
        if (bi + 1 < m && !merge_find(t, sym[bi], sym[bi + 1], &rank[bi], &res[bi])) rank[bi] = UINT32_MAX;
        if (bi + 1 >= m) rank[bi] = UINT32_MAX;
        if (bi > 0 && !merge_find(t, sym[bi - 1], sym[bi], &rank[bi - 1], &res[bi - 1]))
            rank[bi - 1] = UINT32_MAX;
    }
    for (size_t i = 0; i < m; i++) ids_push(out, sym[i]);
}

typedef struct hent {
    uint32_t rank;
    uint32_t pos; /* left symbol index */
    int32_t a, b;
} hent;

static inline bool hless(const hent *x, const hent *y) {
    return x->rank < y->rank || (x->rank == y->rank && x->pos < y->pos);
}

static void heap_push(hent *h, size_t *n, hent e) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!hless(&e, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}

static hent heap_pop(hent *h, size_t *n) {
    hent top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const hent *mv = &last;
        if (l < *n && hless(&h[l], mv)) { m = l; mv = &h[l]; }
        if (r < *n && hless(&h[r], mv)) { m = r; }
        if (m == i) break;
        h[i] = h[m];
        i = m;
    }
    if (*n) h[i] = last;
    return top;
}

#define LARGE_STACK 256

static void bpe_large(const v4f_tok *t, int32_t *sym, size_t m, v4f_tok_ids *out) {
    uint32_t next_s[LARGE_STACK], prev_s[LARGE_STACK];
    hent h_s[3 * LARGE_STACK + 1];
    bool heap_mem = m > LARGE_STACK;
    uint32_t *next = heap_mem ? v4f_xmalloc(m * sizeof *next) : next_s;
    uint32_t *prev = heap_mem ? v4f_xmalloc(m * sizeof *prev) : prev_s;
    /* every merge adds at most 2 entries; initial m-1 */
    hent *h = heap_mem ? v4f_xmalloc((3 * m + 1) * sizeof *h) : h_s;
    size_t nh = 0;
    for (size_t i = 0; i < m; i++) {
        next[i] = (uint32_t)(i + 1);
        prev[i] = (uint32_t)(i ? i - 1 : UINT32_MAX);
    }
    for (size_t i = 0; i + 1 < m; i++) {
        uint32_t r;
        int32_t res;
        if (merge_find(t, sym[i], sym[i + 1], &r, &res))
            heap_push(h, &nh, (hent){r, (uint32_t)i, sym[i], sym[i + 1]});
    }
    while (nh) {
        hent e = heap_pop(h, &nh);
        uint32_t i = e.pos, j = next[i];
        if (sym[i] < 0 || j >= m || sym[i] != e.a || sym[j] != e.b) continue; /* stale */
        uint32_t r = 0;
        int32_t res = -1;
        if (!merge_find(t, e.a, e.b, &r, &res)) continue;
        sym[i] = res;
        sym[j] = -1;
        next[i] = next[j];
        if (next[j] < m) prev[next[j]] = i;
        if (prev[i] != UINT32_MAX && merge_find(t, sym[prev[i]], sym[i], &r, &res))
            heap_push(h, &nh, (hent){r, prev[i], sym[prev[i]], sym[i]});
        if (next[i] < m && merge_find(t, sym[i], sym[next[i]], &r, &res))
            heap_push(h, &nh, (hent){r, i, sym[i], sym[next[i]]});
    }
    for (size_t i = 0; i < m; i = next[i]) ids_push(out, sym[i]);
    if (heap_mem) {
        free(next);
        free(prev);
        free(h);
    }
}

static void bpe_piece(const v4f_tok *t, const unsigned char *s, size_t n, v4f_tok_ids *out) {
    if (n == 0) return;
    if (n == 1) {
        if (t->byte_id[s[0]] >= 0) ids_push(out, t->byte_id[s[0]]);
        return;
    }
    int32_t small[SMALL_PIECE];
    int32_t *sym = n <= SMALL_PIECE ? small : v4f_xmalloc(n * sizeof *sym);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (t->byte_id[s[i]] >= 0) sym[m++] = t->byte_id[s[i]]; /* no byte token: dropped */
    if (m <= SCAN_PIECE) bpe_small(t, sym, m, out);
    else bpe_large(t, sym, m, out);
    if (sym != small) free(sym);
}

static void emit_piece(sink *k, const char *s, size_t n) {
    if (!n) return;
    if (!k->ids) {
        k->fn(k->ud, s, n, -1);
        return;
    }
    if (!k->cache || n > CACHE_MAX_BYTES || n < 2) {
        bpe_piece(k->t, (const unsigned char *)s, n, k->ids);
        return;
    }
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    cache_entry *e = &k->cache[(h ^ (h >> 15)) & k->cache_mask];
    if (e->len == n && e->hash == h && memcmp(e->bytes, s, n) == 0) {
        for (uint32_t i = 0; i < e->n_ids; i++) ids_push(k->ids, e->ids[i]);
        return;
    }
    size_t before = k->ids->n;
    bpe_piece(k->t, (const unsigned char *)s, n, k->ids);
    size_t got = k->ids->n - before;
    if (got <= CACHE_MAX_IDS) {
        e->hash = h;
        e->len = (uint8_t)n;
        e->n_ids = (uint8_t)got;
        memcpy(e->bytes, s, n);
        memcpy(e->ids, k->ids->ids + before, got * sizeof *e->ids);
    }
}

/* ---- built-in splitter ------------------------------------------------------ */

static inline unsigned cls_at(const unsigned char *s, size_t n, size_t i, uint32_t *len, uint32_t *cp) {
    uint32_t c;
    if (s[i] < 0x80) {
        *len = 1;
        if (cp) *cp = s[i];
        return v4f_tok_ucls_ascii[s[i]];
    }
    *len = v4f_tok_utf8_next(s + i, n - i, &c);
    if (cp) *cp = c;
    return v4f_tok_ucls(c);
}

static inline bool is_ascii_alpha(unsigned char c) { return (unsigned char)((c | 0x20) - 'a') < 26; }

static inline bool is_ascii_punct(unsigned char c) {
    return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) ||
           (c >= 0x7B && c <= 0x7E);
}

/* end of the run of chars whose class has any of mask, starting at i */
static inline size_t scan_cls(const unsigned char *s, size_t n, size_t i, unsigned mask) {
    while (i < n) {
        uint32_t l;
        if (!(cls_at(s, n, i, &l, NULL) & mask)) break;
        i += l;
    }
    return i;
}

/* Length of the split-3 match at i (0: no alternative matches here). */
static size_t match3(const unsigned char *s, size_t n, size_t i) {
    uint32_t l, cp;
    unsigned k = cls_at(s, n, i, &l, &cp);
    /* A1 */
    if (cp < 0x80 && is_ascii_punct((unsigned char)cp) && i + 1 < n && is_ascii_alpha(s[i + 1])) {
        size_t j = i + 1;
        while (j < n && is_ascii_alpha(s[j])) j++;
        return j - i;
    }
    /* A2 */
    if (cp != '\r' && cp != '\n' && !(k & (V4F_UC_L | V4F_UC_P | V4F_UC_S)) && i + l < n) {
        size_t j = scan_cls(s, n, i + l, V4F_UC_L | V4F_UC_M);
        if (j > i + l) return j - i;
    }
    if (k & (V4F_UC_L | V4F_UC_M)) return scan_cls(s, n, i, V4F_UC_L | V4F_UC_M) - i;
    /* A3 */
    size_t p = i;
    if (cp == ' ' && i + 1 < n) {
        uint32_t l2;
        if (cls_at(s, n, i + 1, &l2, NULL) & (V4F_UC_P | V4F_UC_S)) p = i + 1;
    }
    if (p > i || (k & (V4F_UC_P | V4F_UC_S))) {
        size_t j = scan_cls(s, n, p, V4F_UC_P | V4F_UC_S);
        while (j < n && (s[j] == '\r' || s[j] == '\n')) j++;
        return j - i;
    }
    /* A4..A6 */
    if (k & V4F_UC_WS) {
        size_t j = i, last_nl = SIZE_MAX, last_start = i;
        while (j < n) {
            uint32_t lw;
            if (!(cls_at(s, n, j, &lw, NULL) & V4F_UC_WS)) break;
            if (s[j] == '\r' || s[j] == '\n') last_nl = j;
            last_start = j;
            j += lw;
        }
        if (last_nl != SIZE_MAX) return last_nl + 1 - i; /* A4 */
        if (j == n) return j - i;                        /* A5 at the end */
        if (last_start > i) return last_start - i;      /* A5: leave one */
        return j - i;                                    /* A6 */
    }
    return 0;
}

static void split3_builtin(sink *k, const char *ps, size_t n) {
    const unsigned char *s = (const unsigned char *)ps;
    size_t i = 0, gap = SIZE_MAX;
    while (i < n) {
        size_t m = match3(s, n, i);
        if (m) {
            if (gap != SIZE_MAX) {
                emit_piece(k, ps + gap, i - gap);
                gap = SIZE_MAX;
            }
            emit_piece(k, ps + i, m);
            i += m;
        } else {
            if (gap == SIZE_MAX) gap = i;
            uint32_t l;
            cls_at(s, n, i, &l, NULL);
            i += l;
        }
    }
    if (gap != SIZE_MAX) emit_piece(k, ps + gap, n - gap);
}

static inline bool is_cjk(uint32_t cp) {
    return (cp >= 0x4E00 && cp <= 0x9FA5) || (cp >= 0x3040 && cp <= 0x30FF);
}

static void split2_builtin(sink *k, const char *ps, size_t n) {
    const unsigned char *s = (const unsigned char *)ps;
    size_t i = 0, start = 0;
    while (i < n) {
        if (s[i] < 0xE3 || s[i] > 0xE9) { /* every CJK/kana code point starts E3..E9 */
            i++;
            continue;
        }
        uint32_t cp, l = v4f_tok_utf8_next(s + i, n - i, &cp);
        if (!is_cjk(cp)) {
            i += l;
            continue;
        }
        size_t j = i + l;
        while (j < n) {
            uint32_t c2, l2 = v4f_tok_utf8_next(s + j, n - j, &c2);
            if (!is_cjk(c2)) break;
            j += l2;
        }
        if (i > start) split3_builtin(k, ps + start, i - start);
        split3_builtin(k, ps + i, j - i);
        start = i = j;
    }
    if (n > start) split3_builtin(k, ps + start, n - start);
}

static void split1_builtin(sink *k, const char *ps, size_t n) {
    const unsigned char *s = (const unsigned char *)ps;
    size_t i = 0, start = 0;
    while (i < n) {
        uint32_t l;
        if (!(cls_at(s, n, i, &l, NULL) & V4F_UC_N)) {
            i += l;
            continue;
        }
        if (i > start) split2_builtin(k, ps + start, i - start);
        /* a digit run, cut every 3 characters; split 2/3 leave digits whole */
        for (;;) {
            size_t j = i;
            int cnt = 0;
            while (j < n && cnt < 3) {
                uint32_t l2;
                if (!(cls_at(s, n, j, &l2, NULL) & V4F_UC_N)) break;
                j += l2;
                cnt++;
            }
            if (!cnt) break;
            emit_piece(k, ps + i, j - i);
            i = j;
        }
        start = i;
    }
    if (n > start) split2_builtin(k, ps + start, n - start);
}

/* ---- PCRE2 splitter --------------------------------------------------------- */

#ifdef V4F_HAVE_PCRE2
#define WS_CLASS "\\t\\n\\x0B\\f\\r\\x{85}\\p{Zs}\\p{Zl}\\p{Zp}"
static const char *const k_patterns[3] = {
    "\\p{N}{1,3}",
    "[\\x{4E00}-\\x{9FA5}\\x{3040}-\\x{309F}\\x{30A0}-\\x{30FF}]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+"
    "|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
    "| ?[\\p{P}\\p{S}]+[\\r\\n]*"
    "|[" WS_CLASS "]*[\\r\\n]+"
    "|[" WS_CLASS "]+(?![^" WS_CLASS "])"
    "|[" WS_CLASS "]+",
};

v4f_status v4f_tok_pcre2_init(v4f_tok *t, v4f_err *err) {
    for (int i = 0; i < 3; i++) {
        int ec;
        PCRE2_SIZE eo;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)k_patterns[i], PCRE2_ZERO_TERMINATED,
                                       PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
        if (!re) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(ec, msg, sizeof msg);
            return v4f_err_set(err, V4F_STATUS_UNSUPPORTED, "tokenizer: PCRE2 pattern %d: %s", i,
                               (const char *)msg);
        }
        pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* interpreter if JIT is unavailable */
        t->re[i] = re;
    }
    return V4F_OK;
}

void v4f_tok_pcre2_free(v4f_tok *t) {
    for (int i = 0; i < 3; i++) {
        pcre2_code_free((pcre2_code *)t->re[i]);
        t->re[i] = NULL;
    }
}

typedef struct pctx {
    sink *k;
    pcre2_match_data *md;
} pctx;

static void split_pcre2(pctx *c, int level, const char *s, size_t n) {
    if (level == 3) {
        emit_piece(c->k, s, n);
        return;
    }
    const pcre2_code *re = c->k->t->re[level];
    size_t off = 0, last = 0;
    while (off < n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK, c->md, NULL);
        if (rc < 0) break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
        size_t a = ov[0], b = ov[1];
        if (b <= a) break; /* none of the patterns matches empty */
        if (a > last) split_pcre2(c, level + 1, s + last, a - last);
        split_pcre2(c, level + 1, s + a, b - a);
        last = off = b;
    }
    if (n > last) split_pcre2(c, level + 1, s + last, n - last);
}
#else
v4f_status v4f_tok_pcre2_init(v4f_tok *t, v4f_err *err) {
    (void)t;
    (void)err;
    return V4F_OK;
}
void v4f_tok_pcre2_free(v4f_tok *t) { (void)t; }
#endif

bool v4f_tok_have_pcre2(void) {
#ifdef V4F_HAVE_PCRE2
    return true;
#else
    return false;
#endif
}

/* Measured (docs/PERF_NOTES.md "Tokenizer"): the built-in matcher is faster
 * than PCRE2-JIT on mixed text, so it is the default; PCRE2 is the
 * cross-check and an opt-in runtime path. */
v4f_status v4f_tok_set_splitter(v4f_tok *t, v4f_tok_splitter s, v4f_err *err) {
    if (s == V4F_TOK_SPLIT_DEFAULT) s = V4F_TOK_SPLIT_BUILTIN;
    if (s == V4F_TOK_SPLIT_PCRE2 && !v4f_tok_have_pcre2())
        return v4f_err_set(err, V4F_STATUS_UNSUPPORTED, "tokenizer: built without PCRE2");
    if (s != V4F_TOK_SPLIT_BUILTIN && s != V4F_TOK_SPLIT_PCRE2)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "tokenizer: unknown splitter %d", (int)s);
    t->splitter = (int)s;
    return V4F_OK;
}

const char *v4f_tok_splitter_name(const v4f_tok *t) {
    return t->splitter == V4F_TOK_SPLIT_PCRE2 ? "pcre2-jit" : "builtin";
}

/* ---- driver ----------------------------------------------------------------- */

static void pretok(sink *k, const char *s, size_t n) {
    if (!n) return;
#ifdef V4F_HAVE_PCRE2
    if (k->t->splitter == V4F_TOK_SPLIT_PCRE2 && v4f_utf8_valid(s, n)) {
        pctx c = {k, pcre2_match_data_create_from_pattern((const pcre2_code *)k->t->re[2], NULL)};
        split_pcre2(&c, 0, s, n);
        pcre2_match_data_free(c.md);
        return;
    }
#endif
    split1_builtin(k, s, n);
}

static void run(sink *k, const char *text, size_t len, unsigned flags) {
    const v4f_tok *t = k->t;
    if (!(flags & V4F_TOK_ENC_SPECIAL) || !t->n_spec) {
        pretok(k, text, len);
        return;
    }
    const unsigned char *s = (const unsigned char *)text;
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        if (!t->spec_first[s[i]]) continue;
        for (uint32_t q = 0; q < t->n_spec; q++) {
            const tok_special *sp = &t->spec[q];
            if (sp->len > len - i || (unsigned char)sp->text[0] != s[i] ||
                memcmp(sp->text, text + i, sp->len) != 0)
                continue;
            pretok(k, text + start, i - start);
            if (k->ids) ids_push(k->ids, sp->id);
            else k->fn(k->ud, sp->text, sp->len, sp->id);
            i += sp->len - 1;
            start = i + 1;
            break;
        }
    }
    pretok(k, text + start, len - start);
}

v4f_status v4f_tok_encode(const v4f_tok *t, const char *text, size_t len, unsigned flags,
                          v4f_tok_ids *out, v4f_err *err) {
    if (!t || !out || (!text && len))
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "tokenizer: bad encode arguments");
    sink k = {.t = t, .ids = out};
    if (len >= CACHE_MIN_INPUT) {
        /* about one entry per 32 input bytes, a power of two in [4096, 65536] */
        size_t ne = CACHE_MIN_ENTRIES;
        while (ne < CACHE_MAX_ENTRIES && ne * 32 < len) ne *= 2;
        k.cache = calloc(ne, sizeof *k.cache);
        k.cache_mask = ne - 1;
    }
    run(&k, text, len, flags);
    free(k.cache);
    return V4F_OK;
}

void v4f_tok_pieces(const v4f_tok *t, const char *text, size_t len, unsigned flags,
                    v4f_tok_piece_fn fn, void *ud) {
    if (!t || !fn || (!text && len)) return;
    sink k = {.t = t, .fn = fn, .ud = ud};
    run(&k, text, len, flags);
}
