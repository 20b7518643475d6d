/*
 * fuzz_tokenizer.c - libFuzzer target for the tokenizer: a small in-memory
 * byte-level vocabulary (all 256 byte symbols, a few merges, two special
 * tokens). Invariants: decode(encode(x)) == x for every byte string, with
 * and without special-token matching; the streaming detokenizer emits the
 * same bytes; with PCRE2 compiled in, both splitters give the same ids on
 * valid UTF-8.
 *
 * Owns one lazily built tokenizer for the process; single-threaded.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static v4f_tok *g_tok;

static size_t byte_sym(unsigned b, char *o) {
    unsigned cp = b;
    if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) {
        unsigned n = 0;
        for (unsigned k = 0; k < b; k++)
            if (!((k >= 33 && k <= 126) || (k >= 161 && k <= 172) || (k >= 174 && k <= 255))) n++;
        cp = 256 + n;
    }
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    o[0] = (char)(0xC0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

static v4f_tok *tok(void) {
    if (g_tok) return g_tok;
    static char sym[256][3];
    static const char *toks[264];
    static int32_t types[264];
    for (unsigned b = 0; b < 256; b++) {
        size_t l = byte_sym(b, sym[b]);
        sym[b][l] = '\0';
        toks[b] = sym[b];
        types[b] = 1;
    }
    static const char *extra[] = {"th", "the", "Ġt", "Ġthe", "in", "ing", "<s>", "</s>"};
    static const char *merges[] = {"t h", "th e", "Ġ t", "Ġt he", "Ġt h", "i n", "in g"};
    for (int i = 0; i < 8; i++) {
        toks[256 + i] = extra[i];
        types[256 + i] = i >= 6 ? 3 : 1;
    }
    v4f_err err = {0};
    if (v4f_tok_new(toks, NULL, types, 264, merges, NULL, 7, &g_tok, &err) != V4F_OK) __builtin_trap();
    return g_tok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    v4f_tok *t = tok();
    const char *s = (const char *)data;
    v4f_err err = {0};
    for (int special = 0; special < 2; special++) {
        v4f_tok_ids ids = {0};
        v4f_tok_set_splitter(t, V4F_TOK_SPLIT_BUILTIN, &err);
        v4f_tok_encode(t, s, size, special ? V4F_TOK_ENC_SPECIAL : 0, &ids, &err);
        char *d = NULL;
        size_t dl = 0;
        if (v4f_tok_decode(t, ids.ids, ids.n, &d, &dl, &err) != V4F_OK) __builtin_trap();
        if (dl != size || memcmp(d, s, size) != 0) __builtin_trap();
        free(d);
        /* streaming gives the same bytes */
        v4f_tok_stream *st = v4f_tok_stream_new(t);
        size_t k = 0;
        for (size_t i = 0; i < ids.n; i++) {
            const char *o;
            size_t ol;
            if (v4f_tok_stream_push(st, ids.ids[i], &o, &ol, &err) != V4F_OK) __builtin_trap();
            if (k + ol > size || memcmp(s + k, o, ol) != 0) __builtin_trap();
            k += ol;
        }
        const char *o;
        size_t ol;
        v4f_tok_stream_flush(st, &o, &ol);
        if (k + ol != size || memcmp(s + k, o, ol) != 0) __builtin_trap();
        v4f_tok_stream_free(st);
        if (v4f_tok_have_pcre2() && v4f_utf8_valid(s, size)) {
            v4f_tok_ids ids2 = {0};
            v4f_tok_set_splitter(t, V4F_TOK_SPLIT_PCRE2, &err);
            v4f_tok_encode(t, s, size, special ? V4F_TOK_ENC_SPECIAL : 0, &ids2, &err);
            if (ids2.n != ids.n || (ids.n && memcmp(ids2.ids, ids.ids, ids.n * sizeof *ids.ids) != 0)) __builtin_trap();
            v4f_tok_ids_free(&ids2);
        }
        v4f_tok_ids_free(&ids);
    }
    /* repeated up to >= 8 KiB: the piece-cache path must round-trip too */
    if (size) {
        size_t rl = 9000 - 9000 % size + size;
        char *rep = malloc(rl);
        for (size_t i = 0; i < rl; i++) rep[i] = s[i % size];
        v4f_tok_ids ids = {0};
        v4f_tok_set_splitter(t, V4F_TOK_SPLIT_BUILTIN, &err);
        v4f_tok_encode(t, rep, rl, V4F_TOK_ENC_SPECIAL, &ids, &err);
        char *d = NULL;
        size_t dl = 0;
        if (v4f_tok_decode(t, ids.ids, ids.n, &d, &dl, &err) != V4F_OK) __builtin_trap();
        if (dl != rl || memcmp(d, rep, rl) != 0) __builtin_trap();
        free(d);
        v4f_tok_ids_free(&ids);
        free(rep);
    }
    return 0;
}
