/*
 * tokenizer.h - DeepSeek V4 byte-level BPE tokenizer ("joyai-llm" / V3
 * pre-tokenizer), special-token matching, detokenization and a streaming
 * UTF-8-safe detokenizer.
 *
 * Encoding = cut out special tokens (leftmost, longest first; optional) ->
 * pre-tokenize each stretch with the three nested splits of MODEL.md §12.1
 * (\p{N}{1,3}; CJK/kana runs; the six-alternative word regex) -> GPT-2 byte
 * map -> lowest-rank-first merges. Two interchangeable splitters: a built-in
 * matcher over generated Unicode tables (always available) and PCRE2 with
 * JIT running the exact regexes (when built with V4F_HAVE_PCRE2). Both give
 * identical pieces; the default is chosen by measurement (see tokenizer.c).
 *
 * Ownership: v4f_tok owns copies of all vocabulary data (the GGUF can be
 * closed after loading). Returned id arrays / byte strings are malloc'ed and
 * belong to the caller unless stated otherwise.
 * Threading: a v4f_tok is immutable after creation (v4f_tok_set_splitter is
 * the one setter; call it before sharing); encode/decode are thread-safe.
 * A v4f_tok_stream belongs to one thread.
 */
#ifndef V4F_TOKENIZER_H
#define V4F_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

typedef struct v4f_tok v4f_tok;
struct v4f_gguf;

/* GGUF token_type values */
enum { V4F_TOK_TYPE_NORMAL = 1, V4F_TOK_TYPE_CONTROL = 3, V4F_TOK_TYPE_USER_DEFINED = 4 };

/* Build from in-memory arrays: tokens[i] (len token_lens[i], or strlen when
 * token_lens is NULL) is id i; types may be NULL (all normal); merges are
 * "LEFT RIGHT" strings, rank = index. Tokens of type CONTROL or
 * USER_DEFINED are the special (added) tokens matched in text; without a
 * type array the DeepSeek V4 special strings (BOS, EOS, <｜User｜>,
 * <｜Assistant｜>, <｜latest_reminder｜>, <think>, </think>, ｜DSML｜) are
 * looked up by string instead. */
v4f_status v4f_tok_new(const char *const *tokens, const size_t *token_lens, const int32_t *types,
                       uint32_t n_tokens, const char *const *merges, const size_t *merge_lens,
                       uint32_t n_merges, v4f_tok **out, v4f_err *err);
/* Load tokenizer.ggml.{tokens,token_type,merges} (+ bos/eos ids) from an
 * open GGUF (model or vocab-only). */
v4f_status v4f_tok_from_gguf(const struct v4f_gguf *g, v4f_tok **out, v4f_err *err);
/* Open path, load, close the file. */
v4f_status v4f_tok_open(const char *gguf_path, v4f_tok **out, v4f_err *err);
void v4f_tok_free(v4f_tok *t);

uint32_t v4f_tok_n_vocab(const v4f_tok *t);
int32_t v4f_tok_bos(const v4f_tok *t); /* -1 if unknown */
int32_t v4f_tok_eos(const v4f_tok *t);
/* Id of the token whose vocabulary string is s[0..n) exactly, or -1. */
int32_t v4f_tok_find(const v4f_tok *t, const char *s, size_t n);
bool v4f_tok_is_special(const v4f_tok *t, int32_t id);

/* ---- splitter selection ---- */
typedef enum v4f_tok_splitter {
    V4F_TOK_SPLIT_DEFAULT = 0, /* the measured default (see v4f_tok_splitter_name) */
    V4F_TOK_SPLIT_BUILTIN = 1,
    V4F_TOK_SPLIT_PCRE2 = 2
} v4f_tok_splitter;

bool v4f_tok_have_pcre2(void);
/* UNSUPPORTED when PCRE2 is requested but not compiled in. */
v4f_status v4f_tok_set_splitter(v4f_tok *t, v4f_tok_splitter s, v4f_err *err);
const char *v4f_tok_splitter_name(const v4f_tok *t);

/* ---- encoding ---- */
enum { V4F_TOK_ENC_SPECIAL = 1u << 0 }; /* match special tokens in the text */

typedef struct v4f_tok_ids {
    int32_t *ids;
    size_t n, cap;
} v4f_tok_ids;
void v4f_tok_ids_free(v4f_tok_ids *v);
/* Append ids[0..n) (grows the array; aborts only when memory runs out). */
void v4f_tok_ids_append(v4f_tok_ids *v, const int32_t *ids, size_t n);

/* Append the ids of text[0..len) to out (any bytes, NUL included; invalid
 * UTF-8 bytes are single-byte pieces). Never fails on content. */
v4f_status v4f_tok_encode(const v4f_tok *t, const char *text, size_t len, unsigned flags,
                          v4f_tok_ids *out, v4f_err *err);

/* Pre-tokenizer pieces (for tests and tools): fn is called for each piece in
 * order with its bytes, or with special_id >= 0 (and the token text) for a
 * matched special token. */
typedef void (*v4f_tok_piece_fn)(void *ud, const char *piece, size_t len, int32_t special_id);
void v4f_tok_pieces(const v4f_tok *t, const char *text, size_t len, unsigned flags,
                    v4f_tok_piece_fn fn, void *ud);

/* ---- decoding ---- */
/* The bytes token id stands for (byte-level decoded; special tokens as their
 * text). Points into t; false if id is out of range. */
bool v4f_tok_token_bytes(const v4f_tok *t, int32_t id, const char **bytes, size_t *len);
/* Concatenated bytes of ids (malloc'ed, NUL-terminated; caller frees).
 * RANGE if an id is out of range (message names it). */
v4f_status v4f_tok_decode(const v4f_tok *t, const int32_t *ids, size_t n, char **out,
                          size_t *out_len, v4f_err *err);

/* Streaming detokenizer: emits only complete UTF-8 characters; a character
 * split across tokens is held back until its last byte arrives. Bytes that
 * can never start/continue a valid character are passed through at once. */
typedef struct v4f_tok_stream v4f_tok_stream;
v4f_tok_stream *v4f_tok_stream_new(const v4f_tok *t);
void v4f_tok_stream_free(v4f_tok_stream *s);
/* Feed one id; *out and *out_len receive the bytes now ready (valid until the
 * next call on s). RANGE for a bad id (nothing emitted). */
v4f_status v4f_tok_stream_push(v4f_tok_stream *s, int32_t id, const char **out, size_t *out_len,
                               v4f_err *err);
/* End of stream: whatever is held back (an incomplete character). */
void v4f_tok_stream_flush(v4f_tok_stream *s, const char **out, size_t *out_len);

#endif /* V4F_TOKENIZER_H */
