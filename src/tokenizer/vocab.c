/*
 * vocab.c - builds a v4f_tok from vocabulary arrays or a GGUF
 * (tokenizer.ggml.tokens / token_type / merges), string -> id lookup,
 * decoding and the streaming detokenizer.
 *
 * Invariants: ids are array indices; every token has its vocabulary string
 * and its decoded bytes (GPT-2 byte-level inverse map for normal tokens, the
 * raw text for special tokens and for strings that are not byte-level).
 * Memory: v4f_tok owns everything it points to (freed by v4f_tok_free).
 * Threading: immutable after construction.
 */
#include <stdlib.h>
#include <string.h>

#include "gguf/gguf.h"
#include "tokenizer/tok_internal.h"
#include "tokenizer/unicode.h"

/* ---- GPT-2 byte <-> code point map ------------------------------------- */

static uint32_t byte_to_cp(unsigned b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return b;
    unsigned n = 0;
    for (unsigned k = 0; k < b; k++)
        if (!((k >= 33 && k <= 126) || (k >= 161 && k <= 172) || (k >= 174 && k <= 255))) n++;
    return 256 + n;
}

/* -1 if cp is not in the byte alphabet */
static int cp_to_byte(uint32_t cp) {
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255))
        return (int)cp;
    if (cp < 256 || cp >= 256 + 68) return -1;
    unsigned n = cp - 256;
    for (unsigned b = 0; b < 256; b++) {
        if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) continue;
        if (n-- == 0) return (int)b;
    }
    return -1;
}

static size_t cp_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    o[0] = (char)(0xC0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3F));
    return 2; /* the byte alphabet is below U+0800 */
}

/* ---- string hash --------------------------------------------------------- */

static uint64_t str_hash(const char *s, size_t n) { return v4f_fnv1a64(V4F_FNV_SEED, s, n); }

int32_t v4f_tok_find(const v4f_tok *t, const char *s, size_t n) {
    if (!t || !t->str_slots) return -1;
    for (uint64_t h = str_hash(s, n) & t->str_mask;; h = (h + 1) & t->str_mask) {
        uint32_t v = t->str_slots[h];
        if (!v) return -1;
        uint32_t id = v - 1;
        uint64_t off = t->tok_off[id], len = t->tok_off[id + 1] - off;
        if (len == n && memcmp(t->blob + off, s, n) == 0) return (int32_t)id;
    }
}

static void merge_insert(v4f_tok *t, int32_t a, int32_t b, uint32_t rank, int32_t res) {
    uint64_t key = ((uint64_t)(uint32_t)(a + 1) << 32) | (uint32_t)(b + 1);
    for (uint64_t h = (key * 0x9E3779B97F4A7C15ULL >> 32) & t->m_mask;; h = (h + 1) & t->m_mask) {
        if (t->m_key[h] == key) return; /* keep the first (lowest) rank */
        if (!t->m_key[h]) {
            t->m_key[h] = key;
            t->m_rank[h] = rank;
            t->m_res[h] = res;
            return;
        }
    }
}

/* ---- construction -------------------------------------------------------- */

static int cmp_spec(const void *a, const void *b) {
    const tok_special *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

void v4f_tok_free(v4f_tok *t) {
    if (!t) return;
    v4f_tok_pcre2_free(t);
    free(t->blob);
    free(t->tok_off);
    free(t->dec);
    free(t->dec_off);
    free(t->type);
    free(t->str_slots);
    free(t->m_key);
    free(t->m_rank);
    free(t->m_res);
    free(t->spec);
    free(t);
}

v4f_status v4f_tok_new(const char *const *tokens, const size_t *token_lens, const int32_t *types,
                       uint32_t n_tokens, const char *const *merges, const size_t *merge_lens,
                       uint32_t n_merges, v4f_tok **out, v4f_err *err) {
    if (!out) return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "tokenizer: no output");
    *out = NULL;
    if (!tokens || n_tokens == 0 || n_tokens > (1u << 30))
        return v4f_err_set(err, V4F_STATUS_FORMAT, "tokenizer: bad vocabulary size %u", n_tokens);
    if (n_merges && !merges)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "tokenizer: merges missing");
    v4f_tok_unicode_init();
    v4f_tok *t = v4f_xcalloc(1, sizeof *t);
    t->n_vocab = n_tokens;
    t->bos = t->eos = -1;
    t->splitter = V4F_TOK_SPLIT_BUILTIN;

    /* strings */
    uint64_t total = 0;
    for (uint32_t i = 0; i < n_tokens; i++) {
        if (!tokens[i]) {
            v4f_tok_free(t);
            return v4f_err_set(err, V4F_STATUS_FORMAT, "tokenizer: token %u missing", i);
        }
        total += token_lens ? token_lens[i] : strlen(tokens[i]);
    }
    t->blob = v4f_xmalloc(total + 1);
    t->tok_off = v4f_xmalloc(((size_t)n_tokens + 1) * sizeof *t->tok_off);
    t->dec = v4f_xmalloc(total + 1); /* decoding never grows a token */
    t->dec_off = v4f_xmalloc(((size_t)n_tokens + 1) * sizeof *t->dec_off);
    t->type = v4f_xmalloc(n_tokens);
    uint64_t off = 0, doff = 0;
    for (uint32_t i = 0; i < n_tokens; i++) {
        size_t len = token_lens ? token_lens[i] : strlen(tokens[i]);
        t->tok_off[i] = off;
        memcpy(t->blob + off, tokens[i], len);
        int32_t ty = types ? types[i] : V4F_TOK_TYPE_NORMAL;
        t->type[i] = (uint8_t)(ty < 0 || ty > 255 ? 0 : ty);
        /* decoded bytes: inverse byte map, or the raw text if any char is
         * outside the byte alphabet (HF ByteLevel decoder behaviour) */
        t->dec_off[i] = doff;
        bool raw = t->type[i] == V4F_TOK_TYPE_CONTROL || t->type[i] == V4F_TOK_TYPE_USER_DEFINED;
        uint64_t d = doff;
        const unsigned char *s = (const unsigned char *)tokens[i];
        for (size_t k = 0; !raw && k < len;) {
            uint32_t cp;
            uint32_t l = v4f_tok_utf8_next(s + k, len - k, &cp);
            int b = cp_to_byte(cp);
            if (b < 0) raw = true;
            else t->dec[d++] = (char)b;
            k += l;
        }
        if (raw) {
            memcpy(t->dec + doff, tokens[i], len);
            d = doff + len;
        }
        doff = d;
        off += len;
    }
    t->tok_off[n_tokens] = off;
    t->dec_off[n_tokens] = doff;

    /* string -> id */
    uint64_t cap = 16;
    while (cap < (uint64_t)n_tokens * 2) cap *= 2;
    t->str_slots = v4f_xcalloc(cap, sizeof *t->str_slots);
    t->str_mask = cap - 1;
    for (uint32_t i = 0; i < n_tokens; i++) {
        uint64_t o = t->tok_off[i], l = t->tok_off[i + 1] - o;
        if (v4f_tok_find(t, t->blob + o, l) >= 0) continue; /* duplicate: first wins */
        uint64_t h = str_hash(t->blob + o, l) & t->str_mask;
        while (t->str_slots[h]) h = (h + 1) & t->str_mask;
        t->str_slots[h] = i + 1;
    }

    /* byte symbols */
    for (unsigned b = 0; b < 256; b++) {
        char u[2];
        size_t l = cp_utf8(u, byte_to_cp(b));
        t->byte_id[b] = v4f_tok_find(t, u, l);
    }

    /* merges */
    cap = 16;
    while (cap < (uint64_t)n_merges * 2) cap *= 2;
    t->m_key = v4f_xcalloc(cap, sizeof *t->m_key);
    t->m_rank = v4f_xcalloc(cap, sizeof *t->m_rank);
    t->m_res = v4f_xcalloc(cap, sizeof *t->m_res);
    t->m_mask = cap - 1;
    char *tmp = NULL;
    size_t tmp_cap = 0;
    for (uint32_t r = 0; r < n_merges; r++) {
        const char *m = merges[r];
        if (!m) continue;
        size_t ml = merge_lens ? merge_lens[r] : strlen(m);
        const char *sp = memchr(m, ' ', ml);
        if (!sp || sp == m || sp == m + ml - 1) continue; /* malformed: ignore */
        size_t la = (size_t)(sp - m), lb = ml - la - 1;
        int32_t a = v4f_tok_find(t, m, la), b = v4f_tok_find(t, sp + 1, lb);
        if (a < 0 || b < 0) continue;
        if (la + lb > tmp_cap) {
            tmp_cap = (la + lb) * 2;
            tmp = v4f_xrealloc(tmp, tmp_cap);
        }
        memcpy(tmp, m, la);
        memcpy(tmp + la, sp + 1, lb);
        int32_t res = v4f_tok_find(t, tmp, la + lb);
        if (res < 0) continue;
        merge_insert(t, a, b, r, res);
        t->n_merges++;
    }
    free(tmp);

    /* special (added) tokens: CONTROL / USER_DEFINED types; without a type
     * array, the DeepSeek V4 special strings (MODEL.md §12.1) by lookup */
    if (!types) {
        static const char *const known[] = {
            "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>",
            "<｜latest_reminder｜>", "<think>", "</think>", "｜DSML｜"};
        for (size_t k = 0; k < sizeof known / sizeof known[0]; k++) {
            int32_t id = v4f_tok_find(t, known[k], strlen(known[k]));
            if (id >= 0) t->type[id] = V4F_TOK_TYPE_USER_DEFINED;
        }
    }
    for (uint32_t i = 0; i < n_tokens; i++)
        if ((t->type[i] == V4F_TOK_TYPE_CONTROL || t->type[i] == V4F_TOK_TYPE_USER_DEFINED) &&
            t->tok_off[i + 1] > t->tok_off[i])
            t->n_spec++;
    t->spec = v4f_xcalloc(t->n_spec ? t->n_spec : 1, sizeof *t->spec);
    uint32_t ns = 0;
    for (uint32_t i = 0; i < n_tokens; i++) {
        uint64_t o = t->tok_off[i], l = t->tok_off[i + 1] - o;
        if ((t->type[i] == V4F_TOK_TYPE_CONTROL || t->type[i] == V4F_TOK_TYPE_USER_DEFINED) && l) {
            t->spec[ns++] = (tok_special){(int32_t)i, (uint32_t)l, t->blob + o};
            t->spec_first[(unsigned char)t->blob[o]] = 1;
        }
    }
    qsort(t->spec, ns, sizeof *t->spec, cmp_spec);

    v4f_status st = v4f_tok_pcre2_init(t, err);
    if (st != V4F_OK) {
        v4f_tok_free(t);
        return st;
    }
    *out = t;
    return V4F_OK;
}

v4f_status v4f_tok_from_gguf(const struct v4f_gguf *g, v4f_tok **out, v4f_err *err) {
    if (!out) return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "tokenizer: no output");
    *out = NULL;
    const v4f_gguf_kv *kt = v4f_gguf_kv_find(g, "tokenizer.ggml.tokens");
    if (!kt)
        return v4f_err_set(err, V4F_STATUS_NOT_FOUND, "%s: no tokenizer.ggml.tokens",
                           v4f_gguf_path(g));
    if (kt->type != V4F_GGUF_ARRAY || kt->arr_type != V4F_GGUF_STRING || kt->arr_n == 0 ||
        kt->arr_n > (1u << 30))
        return v4f_err_set(err, V4F_STATUS_FORMAT,
                           "%s: tokenizer.ggml.tokens is not a non-empty string array",
                           v4f_gguf_path(g));
    const v4f_gguf_kv *ky = v4f_gguf_kv_find(g, "tokenizer.ggml.token_type");
    if (ky && (ky->type != V4F_GGUF_ARRAY || ky->arr_n != kt->arr_n))
        return v4f_err_set(err, V4F_STATUS_FORMAT,
                           "%s: tokenizer.ggml.token_type has %llu entries, tokens %llu",
                           v4f_gguf_path(g), (unsigned long long)(ky ? ky->arr_n : 0),
                           (unsigned long long)kt->arr_n);
    const v4f_gguf_kv *km = v4f_gguf_kv_find(g, "tokenizer.ggml.merges");
    if (km && (km->type != V4F_GGUF_ARRAY || km->arr_type != V4F_GGUF_STRING ||
               km->arr_n > (1u << 30)))
        return v4f_err_set(err, V4F_STATUS_FORMAT, "%s: tokenizer.ggml.merges is not a string array",
                           v4f_gguf_path(g));
    uint32_t n = (uint32_t)kt->arr_n, nm = km ? (uint32_t)km->arr_n : 0;
    const char **toks = v4f_xmalloc((size_t)n * sizeof *toks);
    size_t *lens = v4f_xmalloc((size_t)n * sizeof *lens);
    int32_t *types = ky ? v4f_xmalloc((size_t)n * sizeof *types) : NULL;
    const char **mer = v4f_xmalloc((size_t)(nm ? nm : 1) * sizeof *mer);
    size_t *mlens = v4f_xmalloc((size_t)(nm ? nm : 1) * sizeof *mlens);
    v4f_status st = V4F_OK;
    for (uint32_t i = 0; i < n && st == V4F_OK; i++) {
        v4f_str s;
        if (!v4f_gguf_arr_str(g, kt, i, &s)) {
            st = v4f_err_set(err, V4F_STATUS_FORMAT, "%s: token %u unreadable", v4f_gguf_path(g), i);
            break;
        }
        toks[i] = s.ptr;
        lens[i] = (size_t)s.len;
        if (types) {
            int64_t v;
            if (!v4f_gguf_arr_int(ky, i, &v))
                st = v4f_err_set(err, V4F_STATUS_FORMAT, "%s: token_type %u unreadable",
                                 v4f_gguf_path(g), i);
            types[i] = (int32_t)(v < 0 || v > 255 ? 0 : v);
        }
    }
    for (uint32_t i = 0; i < nm && st == V4F_OK; i++) {
        v4f_str s;
        if (!v4f_gguf_arr_str(g, km, i, &s)) {
            st = v4f_err_set(err, V4F_STATUS_FORMAT, "%s: merge %u unreadable", v4f_gguf_path(g), i);
            break;
        }
        mer[i] = s.ptr;
        mlens[i] = (size_t)s.len;
    }
    if (st == V4F_OK) st = v4f_tok_new(toks, lens, types, n, mer, mlens, nm, out, err);
    if (st == V4F_OK) {
        uint32_t v;
        v4f_err e2 = {0};
        if (v4f_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &v, &e2) == V4F_OK && v < n)
            (*out)->bos = (int32_t)v;
        if (v4f_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &v, &e2) == V4F_OK && v < n)
            (*out)->eos = (int32_t)v;
    }
    free(toks);
    free(lens);
    free(types);
    free(mer);
    free(mlens);
    return st;
}

v4f_status v4f_tok_open(const char *path, v4f_tok **out, v4f_err *err) {
    v4f_gguf *g = NULL;
    v4f_status st = v4f_gguf_open(path, &g, err);
    if (st != V4F_OK) return st;
    st = v4f_tok_from_gguf(g, out, err);
    v4f_gguf_close(g);
    return st;
}

/* ---- accessors ----------------------------------------------------------- */

uint32_t v4f_tok_n_vocab(const v4f_tok *t) { return t ? t->n_vocab : 0; }
int32_t v4f_tok_bos(const v4f_tok *t) { return t ? t->bos : -1; }
int32_t v4f_tok_eos(const v4f_tok *t) { return t ? t->eos : -1; }

bool v4f_tok_is_special(const v4f_tok *t, int32_t id) {
    if (!t || id < 0 || (uint32_t)id >= t->n_vocab) return false;
    return t->type[id] == V4F_TOK_TYPE_CONTROL || t->type[id] == V4F_TOK_TYPE_USER_DEFINED;
}

void v4f_tok_ids_free(v4f_tok_ids *v) {
    if (!v) return;
    free(v->ids);
    memset(v, 0, sizeof *v);
}

void v4f_tok_ids_append(v4f_tok_ids *v, const int32_t *ids, size_t n) {
    if (v->n + n > v->cap) {
        size_t cap = v->cap ? v->cap : 256;
        while (cap < v->n + n) cap *= 2;
        v->ids = v4f_xrealloc(v->ids, cap * sizeof *v->ids);
        v->cap = cap;
    }
    memcpy(v->ids + v->n, ids, n * sizeof *ids);
    v->n += n;
}

/* ---- decoding ------------------------------------------------------------ */

bool v4f_tok_token_bytes(const v4f_tok *t, int32_t id, const char **bytes, size_t *len) {
    if (!t || id < 0 || (uint32_t)id >= t->n_vocab) return false;
    *bytes = t->dec + t->dec_off[id];
    *len = (size_t)(t->dec_off[id + 1] - t->dec_off[id]);
    return true;
}

v4f_status v4f_tok_decode(const v4f_tok *t, const int32_t *ids, size_t n, char **out,
                          size_t *out_len, v4f_err *err) {
    *out = NULL;
    if (out_len) *out_len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const char *b;
        size_t l;
        if (!v4f_tok_token_bytes(t, ids[i], &b, &l))
            return v4f_err_set(err, V4F_STATUS_RANGE, "token id %d out of range (vocabulary %u)",
                               ids[i], v4f_tok_n_vocab(t));
        total += l;
    }
    char *o = v4f_xmalloc(total + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *b = NULL;
        size_t l = 0;
        if (!v4f_tok_token_bytes(t, ids[i], &b, &l)) continue;
        memcpy(o + k, b, l);
        k += l;
    }
    o[k] = '\0';
    *out = o;
    if (out_len) *out_len = k;
    return V4F_OK;
}

/* ---- streaming ----------------------------------------------------------- */

struct v4f_tok_stream {
    const v4f_tok *t;
    char pend[4]; /* an incomplete UTF-8 character */
    size_t n_pend;
    char *buf;
    size_t cap;
};

v4f_tok_stream *v4f_tok_stream_new(const v4f_tok *t) {
    v4f_tok_stream *s = v4f_xcalloc(1, sizeof *s);
    s->t = t;
    return s;
}

void v4f_tok_stream_free(v4f_tok_stream *s) {
    if (!s) return;
    free(s->buf);
    free(s);
}

/* Length of a valid-so-far but incomplete UTF-8 sequence at the end of
 * b[0..n) (0 if the data ends on a character boundary or with bytes that
 * cannot become valid). */
static size_t incomplete_tail(const unsigned char *b, size_t n) {
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        unsigned c = b[n - back];
        if ((c & 0xC0) == 0x80) continue; /* continuation: look further back */
        size_t need = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
        if (need <= back) return 0; /* complete (or ASCII) */
        /* reject prefixes that can never be valid */
        if (c == 0xC0 || c == 0xC1 || c > 0xF4) return 0;
        if (back >= 2) {
            unsigned c1 = b[n - back + 1];
            if (c == 0xE0 && c1 < 0xA0) return 0;
            if (c == 0xED && c1 > 0x9F) return 0;
            if (c == 0xF0 && c1 < 0x90) return 0;
            if (c == 0xF4 && c1 > 0x8F) return 0;
        }
        return back;
    }
    return 0;
}

v4f_status v4f_tok_stream_push(v4f_tok_stream *s, int32_t id, const char **out, size_t *out_len,
                               v4f_err *err) {
    const char *b;
    size_t l;
    *out = "";
    *out_len = 0;
    if (!v4f_tok_token_bytes(s->t, id, &b, &l))
        return v4f_err_set(err, V4F_STATUS_RANGE, "token id %d out of range", id);
    size_t need = s->n_pend + l + 1;
    if (need > s->cap) {
        s->cap = need * 2;
        s->buf = v4f_xrealloc(s->buf, s->cap);
    }
    memcpy(s->buf, s->pend, s->n_pend);
    memcpy(s->buf + s->n_pend, b, l);
    size_t n = s->n_pend + l;
    size_t keep = incomplete_tail((const unsigned char *)s->buf, n);
    memcpy(s->pend, s->buf + n - keep, keep);
    s->n_pend = keep;
    *out = s->buf;
    *out_len = n - keep;
    return V4F_OK;
}

void v4f_tok_stream_flush(v4f_tok_stream *s, const char **out, size_t *out_len) {
    if (s->cap < 5) {
        s->cap = 16;
        s->buf = v4f_xrealloc(s->buf, s->cap);
    }
    memcpy(s->buf, s->pend, s->n_pend);
    *out = s->buf;
    *out_len = s->n_pend;
    s->n_pend = 0;
}
