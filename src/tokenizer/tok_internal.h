/*
 * tok_internal.h - the v4f_tok object shared by vocab.c (construction,
 * lookup, decoding) and bpe.c (pre-tokenizer, merges, encoding). Not a
 * public header: tests use tokenizer.h.
 */
#ifndef V4F_TOK_INTERNAL_H
#define V4F_TOK_INTERNAL_H

#include "tokenizer/tokenizer.h"

typedef struct tok_special {
    int32_t id;
    uint32_t len;
    const char *text; /* into t->blob */
} tok_special;

struct v4f_tok {
    uint32_t n_vocab;
    char *blob;          /* all vocabulary strings, back to back */
    uint64_t *tok_off;   /* [n_vocab + 1] offsets into blob */
    char *dec;           /* decoded bytes of every token, back to back */
    uint64_t *dec_off;   /* [n_vocab + 1] */
    uint8_t *type;       /* [n_vocab] GGUF token_type (clamped to u8) */
    uint32_t *str_slots; /* string hash: id + 1, 0 = empty */
    uint64_t str_mask;
    int32_t byte_id[256]; /* id of the single-byte symbol, -1 if absent */
    /* merges: (left id, right id) -> rank, result id */
    uint64_t *m_key;     /* ((left+1) << 32) | (right+1); 0 = empty */
    uint32_t *m_rank;
    int32_t *m_res;
    uint64_t m_mask;
    uint32_t n_merges;
    tok_special *spec;   /* longest first */
    uint32_t n_spec;
    uint8_t spec_first[256]; /* 1 if some special token starts with this byte */
    int32_t bos, eos;
    int splitter;        /* v4f_tok_splitter, never DEFAULT */
    void *re[3];         /* PCRE2 codes when compiled in and selected/available */
};

/* bpe.c: set up / tear down the PCRE2 codes (no-ops without PCRE2). */
v4f_status v4f_tok_pcre2_init(v4f_tok *t, v4f_err *err);
void v4f_tok_pcre2_free(v4f_tok *t);

#endif /* V4F_TOK_INTERNAL_H */
