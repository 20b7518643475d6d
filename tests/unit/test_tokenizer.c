/*
 * test_tokenizer.c - tokenizer against the HF golden fixtures
 * (tests/fixtures/tokenizer/: tokenizer_cases.txt, tokenizer_fuzz.txt,
 * vocab-tiny.gguf): ids, decode round trip and pre-tokenizer pieces, for the
 * built-in splitter and (when compiled in) PCRE2; plus the streaming
 * detokenizer, special-token handling and the chat prompts' token ids
 * (../chat/chat_token_cases.txt).
 */
#include <stdlib.h>
#include <string.h>

#include "../test.h"
#include "tokenizer/tokenizer.h"

/* ---- fixture helpers ---- */

static int hexv(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* decode hex[0..n) into a malloc'ed buffer ("-" = empty) */
static char *unhex(const char *h, size_t n, size_t *out_len) {
    char *o = malloc(n / 2 + 1);
    size_t k = 0;
    if (!(n == 1 && h[0] == '-'))
        for (size_t i = 0; i + 1 < n; i += 2) o[k++] = (char)(hexv(h[i]) * 16 + hexv(h[i + 1]));
    o[k] = '\0';
    *out_len = k;
    return o;
}

static v4f_tok *g_tok;

static v4f_tok *tiny(void) {
    if (!g_tok) {
        v4f_err err = {0};
        if (v4f_tok_open(test_fixture_path("tokenizer/vocab-tiny.gguf"), &g_tok, &err) != V4F_OK) {
            fprintf(stdout, "    cannot load vocab-tiny.gguf: %s\n", err.msg);
            return NULL;
        }
    }
    return g_tok;
}

typedef struct piece_acc {
    char buf[1 << 16];
    size_t len;
} piece_acc;

static void piece_cb(void *ud, const char *p, size_t n, int32_t sid) {
    static const char hx[] = "0123456789abcdef";
    piece_acc *a = ud;
    if (a->len && a->len < sizeof a->buf - 1) a->buf[a->len++] = ',';
    if (sid >= 0) {
        a->len += (size_t)snprintf(a->buf + a->len, sizeof a->buf - a->len, "@%d", sid);
        return;
    }
    for (size_t i = 0; i < n && a->len + 2 < sizeof a->buf; i++) {
        a->buf[a->len++] = hx[(unsigned char)p[i] >> 4];
        a->buf[a->len++] = hx[(unsigned char)p[i] & 15];
    }
    a->buf[a->len] = '\0';
}

static void ids_str(const v4f_tok_ids *v, char *out, size_t cap) {
    size_t k = 0;
    out[0] = '\0';
    if (v->n == 0) {
        snprintf(out, cap, "-");
        return;
    }
    for (size_t i = 0; i < v->n && k + 12 < cap; i++)
        k += (size_t)snprintf(out + k, cap - k, i ? " %d" : "%d", v->ids[i]);
}

/* Runs every case of a case file; returns the number that passed. */
static int run_case_file(const char *rel, v4f_tok_splitter sp, int *n_cases) {
    v4f_tok *t = tiny();
    *n_cases = 0;
    if (!t) return 0;
    v4f_err err = {0};
    if (v4f_tok_set_splitter(t, sp, &err) != V4F_OK) return 0;
    size_t len;
    char *data = test_read_file(test_fixture_path(rel), &len);
    CHECK_MSG(data != NULL, "cannot read %s", rel);
    if (!data) return 0;
    int passed = 0;
    char *save = NULL;
    static char got[1 << 17];
    static piece_acc acc;
    for (char *line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#' || !line[0]) continue;
        char *f[7];
        int nf = 0;
        char *p = line;
        while (nf < 7) {
            f[nf++] = p;
            char *tab = strchr(p, '\t');
            if (!tab) break;
            *tab = '\0';
            p = tab + 1;
        }
        if (nf < 6) continue;
        (*n_cases)++;
        size_t in_len;
        char *in = unhex(f[2], strlen(f[2]), &in_len);
        v4f_tok_ids ids = {0};
        v4f_tok_encode(t, in, in_len, V4F_TOK_ENC_SPECIAL, &ids, &err);
        ids_str(&ids, got, sizeof got);
        bool ok = strcmp(got, f[3]) == 0;
        CHECK_MSG(ok, "%s [%s] ids: got %.200s want %.200s", f[0], v4f_tok_splitter_name(t), got, f[3]);
        char *dec = NULL;
        size_t dec_len = 0;
        v4f_tok_decode(t, ids.ids, ids.n, &dec, &dec_len, &err);
        bool rt = dec && dec_len == in_len && memcmp(dec, in, in_len) == 0;
        CHECK_MSG(rt, "%s decode round trip", f[0]);
        acc.len = 0;
        acc.buf[0] = '\0';
        v4f_tok_pieces(t, in, in_len, V4F_TOK_ENC_SPECIAL, piece_cb, &acc);
        const char *want_p = f[5];
        bool pk = strcmp(acc.buf, strcmp(want_p, "-") == 0 ? "" : want_p) == 0;
        CHECK_MSG(pk, "%s [%s] pieces: got %.300s want %.300s", f[0], v4f_tok_splitter_name(t),
                  acc.buf, want_p);
        if (ok && rt && pk) passed++;
        free(dec);
        free(in);
        v4f_tok_ids_free(&ids);
    }
    free(data);
    v4f_tok_set_splitter(t, V4F_TOK_SPLIT_DEFAULT, &err);
    return passed;
}

TEST(tok_cases_builtin) {
    int n, ok = run_case_file("tokenizer/tokenizer_cases.txt", V4F_TOK_SPLIT_BUILTIN, &n);
    if (test_verbose()) printf("    tokenizer_cases (builtin): %d/%d\n", ok, n);
    CHECK(n >= 210);
    CHECK_EQ_INT(ok, n);
}

TEST(tok_fuzz_builtin) {
    int n, ok = run_case_file("tokenizer/tokenizer_fuzz.txt", V4F_TOK_SPLIT_BUILTIN, &n);
    if (test_verbose()) printf("    tokenizer_fuzz (builtin): %d/%d\n", ok, n);
    CHECK(n >= 840);
    CHECK_EQ_INT(ok, n);
}

TEST(tok_cases_pcre2) {
    if (!v4f_tok_have_pcre2()) {
        if (test_verbose()) printf("    skipped: built without PCRE2\n");
        return;
    }
    int n, ok = run_case_file("tokenizer/tokenizer_cases.txt", V4F_TOK_SPLIT_PCRE2, &n);
    if (test_verbose()) printf("    tokenizer_cases (pcre2): %d/%d\n", ok, n);
    CHECK(n >= 210);
    CHECK_EQ_INT(ok, n);
}

TEST(tok_fuzz_pcre2) {
    if (!v4f_tok_have_pcre2()) return;
    int n, ok = run_case_file("tokenizer/tokenizer_fuzz.txt", V4F_TOK_SPLIT_PCRE2, &n);
    if (test_verbose()) printf("    tokenizer_fuzz (pcre2): %d/%d\n", ok, n);
    CHECK(n >= 840);
    CHECK_EQ_INT(ok, n);
}

/* Built-in vs PCRE2 pieces on random valid UTF-8 drawn from class-rich
 * code point pools (beyond the fixture strings). */
static size_t put_cp(char *o, uint32_t cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 63)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 63));
        o[2] = (char)(0x80 | (cp & 63));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 63));
    o[2] = (char)(0x80 | ((cp >> 6) & 63));
    o[3] = (char)(0x80 | (cp & 63));
    return 4;
}

TEST(tok_builtin_vs_pcre2_random) {
    if (!v4f_tok_have_pcre2()) return;
    v4f_tok *t = tiny();
    REQUIRE(t);
    static const uint32_t pool[] = {
        ' ', ' ', 'a', 'Z', 'q', '1', '9', '\n', '\r', '\t', '.', ',', '\'', '"', '<', '>', '_',
        '{', '}', '~', '$', '-', 0x0B, 0x0C, 0x1C, 0x00, 0x01, 0x7F, 0x85, 0xA0, 0xAD, 0xB2, 0xBD,
        0xE9, 0x301, 0x3A9, 0x416, 0x5D0, 0x627, 0x660, 0x915, 0x93F, 0x966, 0xE01, 0xE31, 0x1100,
        0x180E, 0x2003, 0x200B, 0x200D, 0x2028, 0x2029, 0x2060, 0x2160, 0x2460, 0x3000, 0x3001,
        0x3007, 0x3042, 0x3099, 0x309B, 0x30A0, 0x30AB, 0x30FB, 0x30FC, 0x3400, 0x4E00, 0x9FA5,
        0x9FA6, 0xAC00, 0xFE0F, 0xFF0C, 0xFF11, 0xFF76, 0x1F600, 0x1F3F3, 0x1D7D8, 0x20000, 0xE0041};
    test_rng r = {7};
    static piece_acc a1, a2;
    int mismatches = 0;
    for (int it = 0; it < 3000; it++) {
        char s[256];
        size_t n = 0;
        int len = (int)(test_rng_u64(&r) % 40);
        for (int k = 0; k < len; k++) n += put_cp(s + n, pool[test_rng_u64(&r) % (sizeof pool / sizeof pool[0])]);
        v4f_err err = {0};
        a1.len = a2.len = 0;
        a1.buf[0] = a2.buf[0] = '\0';
        v4f_tok_set_splitter(t, V4F_TOK_SPLIT_BUILTIN, &err);
        v4f_tok_pieces(t, s, n, 0, piece_cb, &a1);
        v4f_tok_set_splitter(t, V4F_TOK_SPLIT_PCRE2, &err);
        v4f_tok_pieces(t, s, n, 0, piece_cb, &a2);
        if (strcmp(a1.buf, a2.buf) != 0 && mismatches++ < 5)
            CHECK_MSG(0, "builtin %s != pcre2 %s", a1.buf, a2.buf);
    }
    v4f_err err = {0};
    v4f_tok_set_splitter(t, V4F_TOK_SPLIT_DEFAULT, &err);
    CHECK_EQ_INT(mismatches, 0);
}

/* chat_token_cases.txt: ids of each rendered prompt (special tokens on). */
TEST(tok_chat_prompts) {
    v4f_tok *t = tiny();
    REQUIRE(t);
    size_t len;
    char *data = test_read_file(test_fixture_path("chat/chat_token_cases.txt"), &len);
    REQUIRE(data);
    int n = 0, ok = 0;
    char *save = NULL;
    static char got[1 << 17];
    for (char *line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#' || !line[0]) continue;
        char *tab = strchr(line, '\t');
        if (!tab) continue;
        *tab = '\0';
        char rel[128];
        snprintf(rel, sizeof rel, "chat/%s.txt", line);
        size_t tl;
        char *text = test_read_file(test_fixture_path(rel), &tl);
        CHECK_MSG(text != NULL, "missing %s", rel);
        if (!text) continue;
        n++;
        v4f_tok_ids ids = {0};
        v4f_err err = {0};
        v4f_tok_encode(t, text, tl, V4F_TOK_ENC_SPECIAL, &ids, &err);
        ids_str(&ids, got, sizeof got);
        if (strcmp(got, tab + 1) == 0) ok++;
        else CHECK_MSG(0, "%s: ids differ", line);
        v4f_tok_ids_free(&ids);
        free(text);
    }
    free(data);
    if (test_verbose()) printf("    chat_token_cases: %d/%d\n", ok, n);
    CHECK(n >= 24);
    CHECK_EQ_INT(ok, n);
}

TEST(tok_special_tokens) {
    v4f_tok *t = tiny();
    REQUIRE(t);
    CHECK_EQ_INT(v4f_tok_n_vocab(t), 2000);
    CHECK_EQ_INT(v4f_tok_bos(t), 0);
    CHECK_EQ_INT(v4f_tok_eos(t), 1);
    const char *s = "<｜User｜>hi<think>";
    v4f_tok_ids a = {0}, b = {0};
    v4f_err err = {0};
    v4f_tok_encode(t, s, strlen(s), V4F_TOK_ENC_SPECIAL, &a, &err);
    REQUIRE(a.n >= 3);
    CHECK_EQ_INT(a.ids[0], 1994);
    CHECK_EQ_INT(a.ids[a.n - 1], 1996);
    v4f_tok_encode(t, s, strlen(s), 0, &b, &err);
    for (size_t i = 0; i < b.n; i++) CHECK(!v4f_tok_is_special(t, b.ids[i]));
    CHECK(b.n > a.n);
    char *d = NULL;
    size_t dl = 0;
    v4f_tok_decode(t, b.ids, b.n, &d, &dl, &err);
    CHECK(d && dl == strlen(s) && memcmp(d, s, dl) == 0);
    free(d);
    int32_t bad = 5000;
    CHECK_STATUS(v4f_tok_decode(t, &bad, 1, &d, &dl, &err), V4F_STATUS_RANGE);
    v4f_tok_ids_free(&a);
    v4f_tok_ids_free(&b);
}

TEST(tok_stream_utf8) {
    v4f_tok *t = tiny();
    REQUIRE(t);
    /* byte tokens are ids 2 + byte: feed "é中😀" one byte at a time */
    const char *s = "a\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x98\x80z";
    size_t n = strlen(s);
    v4f_tok_stream *st = v4f_tok_stream_new(t);
    char out[64];
    size_t k = 0;
    static const size_t expect_emit[] = {1, 0, 2, 0, 0, 3, 0, 0, 0, 4, 1};
    for (size_t i = 0; i < n; i++) {
        const char *o;
        size_t ol;
        v4f_err err = {0};
        CHECK_STATUS(v4f_tok_stream_push(st, 2 + (unsigned char)s[i], &o, &ol, &err), V4F_OK);
        CHECK_EQ_INT(ol, expect_emit[i]);
        memcpy(out + k, o, ol);
        k += ol;
    }
    CHECK(k == n && memcmp(out, s, n) == 0);
    /* an incomplete character is flushed at the end; invalid bytes pass */
    const char *o;
    size_t ol;
    v4f_err err = {0};
    v4f_tok_stream_push(st, 2 + 0xE4, &o, &ol, &err);
    CHECK_EQ_INT(ol, 0);
    v4f_tok_stream_flush(st, &o, &ol);
    CHECK_EQ_INT(ol, 1);
    v4f_tok_stream_push(st, 2 + 0xFF, &o, &ol, &err);
    CHECK_EQ_INT(ol, 1);
    v4f_tok_stream_push(st, 2 + 0xC3, &o, &ol, &err);
    v4f_tok_stream_push(st, 2 + 'x', &o, &ol, &err);
    CHECK_EQ_INT(ol, 2); /* lead byte + ASCII: both out, no waiting */
    CHECK_STATUS(v4f_tok_stream_push(st, -1, &o, &ol, &err), V4F_STATUS_RANGE);
    v4f_tok_stream_free(st);
}

TEST(tok_in_memory_vocab_and_bad_input) {
    /* a tiny in-memory vocabulary: bytes a, b, merge "a b" */
    const char *toks[] = {"a", "b", "ab", "<s>"};
    int32_t types[] = {1, 1, 1, 3};
    const char *merges[] = {"a b", "bogus", "x y", "ab ab"};
    v4f_tok *t = NULL;
    v4f_err err = {0};
    REQUIRE(v4f_tok_new(toks, NULL, types, 4, merges, NULL, 4, &t, &err) == V4F_OK);
    v4f_tok_ids ids = {0};
    v4f_tok_encode(t, "abab<s>a", 8, V4F_TOK_ENC_SPECIAL, &ids, &err);
    REQUIRE(ids.n == 4);
    CHECK_EQ_INT(ids.ids[0], 2);
    CHECK_EQ_INT(ids.ids[2], 3);
    v4f_tok_ids_free(&ids);
    /* bytes with no token are dropped, invalid UTF-8 never crashes */
    v4f_tok_encode(t, "\xFF\xC3zz\x80", 5, 0, &ids, &err);
    CHECK_EQ_INT(ids.n, 0);
    v4f_tok_ids_free(&ids);
    v4f_tok_free(t);
    CHECK_STATUS(v4f_tok_new(toks, NULL, NULL, 0, NULL, NULL, 0, &t, &err), V4F_STATUS_FORMAT);
    /* no type array: the V4 special strings are found by lookup */
    const char *toks2[] = {"<", "t", "<think>", "<｜User｜>"};
    REQUIRE(v4f_tok_new(toks2, NULL, NULL, 4, NULL, NULL, 0, &t, &err) == V4F_OK);
    const char *s2 = "<t<think><｜User｜>";
    v4f_tok_encode(t, s2, strlen(s2), V4F_TOK_ENC_SPECIAL, &ids, &err);
    REQUIRE(ids.n == 4);
    CHECK_EQ_INT(ids.ids[2], 2);
    CHECK_EQ_INT(ids.ids[3], 3);
    CHECK(v4f_tok_is_special(t, 3));
    v4f_tok_ids_free(&ids);
    v4f_tok_free(t);
    CHECK_STATUS(v4f_tok_open("/nonexistent/x.gguf", &t, &err), V4F_STATUS_IO);
}

TEST(tok_zz_cleanup) {
    v4f_tok_free(g_tok);
    g_tok = NULL;
}

/* Inputs of 8 KiB and more go through the piece cache: the ids must equal
 * piece-by-piece encoding (small calls, no cache), for both splitters. */
typedef struct cat_ctx {
    const v4f_tok *t;
    v4f_tok_ids ids;
} cat_ctx;

static void cat_cb(void *ud, const char *p, size_t n, int32_t sid) {
    cat_ctx *c = ud;
    v4f_err err = {0};
    if (sid >= 0) {
        if (c->ids.n == c->ids.cap) {
            c->ids.cap = c->ids.cap ? c->ids.cap * 2 : 64;
            c->ids.ids = realloc(c->ids.ids, c->ids.cap * sizeof *c->ids.ids);
        }
        c->ids.ids[c->ids.n++] = sid;
    } else {
        v4f_tok_encode(c->t, p, n, 0, &c->ids, &err);
    }
}

TEST(tok_large_input_cache) {
    v4f_tok *t = tiny();
    REQUIRE(t);
    size_t len;
    char *text = test_read_file(test_fixture_path("tokenizer/train_corpus.txt"), &len);
    REQUIRE(text && len > 8192);
    for (int sp = 1; sp <= 2; sp++) {
        v4f_err err = {0};
        if (v4f_tok_set_splitter(t, (v4f_tok_splitter)sp, &err) != V4F_OK) continue;
        v4f_tok_ids whole = {0};
        v4f_tok_encode(t, text, len, V4F_TOK_ENC_SPECIAL, &whole, &err);
        cat_ctx c = {t, {0}};
        v4f_tok_pieces(t, text, len, V4F_TOK_ENC_SPECIAL, cat_cb, &c);
        CHECK_EQ_INT(whole.n, c.ids.n);
        CHECK(whole.n == c.ids.n && memcmp(whole.ids, c.ids.ids, whole.n * sizeof *whole.ids) == 0);
        char *d = NULL;
        size_t dl = 0;
        v4f_tok_decode(t, whole.ids, whole.n, &d, &dl, &err);
        CHECK(d && dl == len && memcmp(d, text, len) == 0);
        free(d);
        v4f_tok_ids_free(&whole);
        v4f_tok_ids_free(&c.ids);
    }
    v4f_err err = {0};
    v4f_tok_set_splitter(t, V4F_TOK_SPLIT_DEFAULT, &err);
    free(text);
}
