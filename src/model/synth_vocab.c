/*
 * synth_vocab.c - the byte-level BPE vocabulary of synthetic models: GPT-2
 * byte symbols, merges learned on a small built-in English/C text (a tiny
 * deterministic BPE trainer), the DeepSeek V4 chat special tokens and unique
 * filler tokens up to the requested vocabulary size.
 *
 * Layout (like tests/fixtures/model/tiny-*.gguf): 0 BOS, 1 EOS, 2..257 byte
 * symbols in byte order, then merge results in merge order, then the six
 * other special tokens, then fillers.
 *
 * Ownership: v4f_synth_vocab owns every string (one arena per array).
 * Threading: pure function of its arguments.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/synth_internal.h"

static const char k_train_text[] =
    "The quick brown fox jumps over the lazy dog. This is a synthetic model with random\n"
    "weights: it exists to test the engine, the tokenizer and the command line, and it\n"
    "says nothing useful. Hello from the demo! The model reads the prompt, computes the\n"
    "logits of the next token and samples one of them; then it does that again and again\n"
    "until it reaches the end of the sentence or the maximum number of tokens.\n"
    "In the beginning there was the word, and the word was a token. A token is a piece of\n"
    "text, and the tokenizer splits the text into pieces with the merges it has learned.\n"
    "What is the capital of France? The capital of France is Paris. What is two plus two?\n"
    "Two plus two is four. Please write a function that returns the sum of two numbers.\n"
    "int add(int a, int b) {\n    return a + b;\n}\n"
    "static int count_tokens(const char *text, int n) {\n    int count = 0;\n"
    "    for (int i = 0; i < n; i++) {\n        if (text[i] == ' ') count++;\n    }\n"
    "    return count;\n}\n"
    "def main():\n    print(\"hello, world\")\n    return 0\n"
    "The numbers 1, 2, 3, 10, 42, 100, 256, 1024 and 2048 appear in the text as well.\n"
    "We are going to run the model on the machine and measure the speed of the prefill\n"
    "and of the generation, in tokens per second, at several context lengths. The results\n"
    "are written to a table with one row for each context length that we have measured.\n"
    "She said that they would be there at the time when the sun was going down over the\n"
    "water, and he thought that it was a good idea, so they went there together.\n"
    "You are a helpful assistant. Answer the question of the user as well as you can, and\n"
    "think step by step before you give the final answer to the question.\n";

/* GPT-2 byte -> code point table. */
static uint32_t byte_cp(int b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))
        return (uint32_t)b;
    int n = 0;
    for (int x = 0; x < b; x++)
        if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) n++;
    return 256u + (uint32_t)n;
}

static int put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 63));
        return 2;
    }
    o[0] = (char)(0xE0 | (cp >> 12));
    o[1] = (char)(0x80 | ((cp >> 6) & 63));
    o[2] = (char)(0x80 | (cp & 63));
    return 3;
}

/* growable string list */
typedef struct strlist {
    char **s;
    uint32_t n, cap;
} strlist;

static uint32_t sl_add(strlist *l, const char *s) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 512;
        l->s = v4f_xrealloc(l->s, l->cap * sizeof *l->s);
    }
    l->s[l->n] = v4f_xstrdup(s);
    return l->n++;
}

static int64_t sl_find(const strlist *l, const char *s) {
    for (uint32_t i = 0; i < l->n; i++)
        if (!strcmp(l->s[i], s)) return i;
    return -1;
}

typedef struct word {
    uint32_t *sym;
    uint32_t n;
    uint32_t count;
} word;

/* Split the training text into pieces: an optional leading space plus a run
 * of non-space characters, or a run of newlines. Unique pieces with counts. */
static word *split_words(uint32_t *n_words) {
    word *w = NULL;
    uint32_t nw = 0, cap = 0;
    const char *t = k_train_text;
    size_t len = strlen(t), i = 0;
    while (i < len) {
        size_t j = i;
        if (t[j] == '\n') {
            while (j < len && t[j] == '\n') j++;
        } else {
            if (t[j] == ' ') j++;
            while (j < len && t[j] != ' ' && t[j] != '\n') j++;
        }
        uint32_t found = UINT32_MAX;
        for (uint32_t k = 0; k < nw; k++) {
            if (w[k].n != j - i) continue;
            uint32_t m = 0;
            while (m < w[k].n && w[k].sym[m] == (uint8_t)t[i + m]) m++;
            if (m == w[k].n) {
                found = k;
                break;
            }
        }
        if (found != UINT32_MAX) {
            w[found].count++;
        } else {
            if (nw == cap) {
                cap = cap ? 2 * cap : 256;
                w = v4f_xrealloc(w, cap * sizeof *w);
            }
            w[nw].n = (uint32_t)(j - i);
            w[nw].sym = v4f_xmalloc(w[nw].n * sizeof(uint32_t));
            for (uint32_t m = 0; m < w[nw].n; m++) w[nw].sym[m] = (uint8_t)t[i + m];
            w[nw].count = 1;
            nw++;
        }
        i = j;
    }
    *n_words = nw;
    return w;
}

static const char *const k_specials_tail[] = {
    "<\xef\xbd\x9cUser\xef\xbd\x9c>",
    "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>",
    "<think>",
    "</think>",
    "\xef\xbd\x9c" "DSML\xef\xbd\x9c",
    "<\xef\xbd\x9clatest_reminder\xef\xbd\x9c>",
};
#define N_SPECIAL_TAIL 6

v4f_status v4f_synth_vocab_build(uint32_t n_vocab, v4f_synth_vocab *v, v4f_err *err) {
    memset(v, 0, sizeof *v);
    const uint32_t fixed = 2 + 256 + N_SPECIAL_TAIL;
    if (n_vocab < fixed)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "synth: vocab %u < %u", n_vocab, fixed);
    strlist sym = {0}, merges = {0};
    char buf[256];
    for (int b = 0; b < 256; b++) {
        int k = put_utf8(buf, byte_cp(b));
        buf[k] = 0;
        sl_add(&sym, buf);
    }
    uint32_t nw = 0;
    word *w = split_words(&nw);
    uint32_t max_new = n_vocab - fixed, n_new = 0;
    /* pair counting in a small open-addressed table */
    enum { HBITS = 14, HSIZE = 1 << HBITS };
    uint64_t *hk = v4f_xmalloc(HSIZE * sizeof *hk);
    uint32_t *hc = v4f_xmalloc(HSIZE * sizeof *hc);
    while (n_new < max_new) {
        memset(hk, 0xff, HSIZE * sizeof *hk);
        memset(hc, 0, HSIZE * sizeof *hc);
        uint64_t best = UINT64_MAX;
        uint32_t best_c = 0;
        for (uint32_t k = 0; k < nw; k++)
            for (uint32_t m = 0; m + 1 < w[k].n; m++) {
                uint64_t key = ((uint64_t)w[k].sym[m] << 32) | w[k].sym[m + 1];
                uint32_t h = (uint32_t)((key * 0x9E3779B97F4A7C15ULL) >> (64 - HBITS));
                while (hk[h] != UINT64_MAX && hk[h] != key) h = (h + 1) & (HSIZE - 1);
                hk[h] = key;
                hc[h] += w[k].count;
                if (hc[h] > best_c || (hc[h] == best_c && key < best)) {
                    best_c = hc[h];
                    best = key;
                }
            }
        if (best_c == 0) break;
        uint32_t a = (uint32_t)(best >> 32), b = (uint32_t)best;
        size_t la = strlen(sym.s[a]), lb = strlen(sym.s[b]);
        if (la + lb + 2 > sizeof buf) break;
        memcpy(buf, sym.s[a], la);
        buf[la] = ' ';
        memcpy(buf + la + 1, sym.s[b], lb + 1);
        sl_add(&merges, buf);
        memmove(buf + la, buf + la + 1, lb + 1);
        int64_t id = sl_find(&sym, buf);
        if (id < 0) {
            id = sl_add(&sym, buf);
            n_new++;
        }
        for (uint32_t k = 0; k < nw; k++) {
            uint32_t o = 0;
            for (uint32_t m = 0; m < w[k].n; m++) {
                if (m + 1 < w[k].n && w[k].sym[m] == a && w[k].sym[m + 1] == b) {
                    w[k].sym[o++] = (uint32_t)id;
                    m++;
                } else {
                    w[k].sym[o++] = w[k].sym[m];
                }
            }
            w[k].n = o;
        }
    }
    free(hk);
    free(hc);
    for (uint32_t k = 0; k < nw; k++) free(w[k].sym);
    free(w);

    v->n_tokens = n_vocab;
    v->tokens = v4f_xcalloc(n_vocab, sizeof *v->tokens);
    v->token_type = v4f_xcalloc(n_vocab, sizeof *v->token_type);
    uint32_t t = 0;
    v->tokens[t] = v4f_xstrdup("<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>");
    v->token_type[t++] = 3;
    v->tokens[t] = v4f_xstrdup("<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>");
    v->token_type[t++] = 3;
    for (uint32_t i = 0; i < sym.n; i++) {
        v->tokens[t] = sym.s[i];
        v->token_type[t++] = 1;
    }
    free(sym.s);
    for (int i = 0; i < N_SPECIAL_TAIL; i++) {
        v->tokens[t] = v4f_xstrdup(k_specials_tail[i]);
        v->token_type[t++] = 3;
    }
    for (uint32_t f = 0; t < n_vocab; f++) {
        snprintf(buf, sizeof buf, "<filler_%06u>", f);
        v->tokens[t] = v4f_xstrdup(buf);
        v->token_type[t++] = 1;
    }
    v->merges = merges.s;
    v->n_merges = merges.n;
    return V4F_OK;
}

void v4f_synth_vocab_free(v4f_synth_vocab *v) {
    if (!v) return;
    for (uint32_t i = 0; i < v->n_tokens; i++) free(v->tokens ? v->tokens[i] : NULL);
    for (uint32_t i = 0; i < v->n_merges; i++) free(v->merges[i]);
    free(v->tokens);
    free(v->token_type);
    free(v->merges);
    memset(v, 0, sizeof *v);
}
