/*
 * srv.h - the live session of `v4flash serve`: one model session that every
 * request runs on in turn, reusing whatever prefix of the new prompt its KV
 * cache already holds.
 *
 * Prefix reuse, in order (the result says which applied):
 *   "live"      the new prompt text starts with the exact bytes the KV holds
 *               (the previous prompt + the sampled reply): only the rest is
 *               tokenized and prefilled, so a reply the tokenizer would have
 *               split differently still matches;
 *   "live"      otherwise the longest common token prefix, when the KV holds
 *               nothing beyond it;
 *   "rewind"    the session moves back to that prefix (CUDA sessions, as far
 *               as their position rings reach);
 *   "snapshot"  an in-memory snapshot taken during the previous prompt's
 *               prefill, before its last token, when that is a prefix of
 *               the new prompt (the CPU session cannot rewind, nor a GPU
 *               session behind the placement switch of a long prefill; an
 *               agent's next request usually starts with its previous
 *               prompt, up to the <think> that ends a thinking prompt);
 *   "disk"      a disk checkpoint holding a longer prefix than the live KV
 *               (--kv-dir: after a restart, or a conversation that was
 *               evicted by another);
 *   "cold"      a fresh prefill.
 * At least one prompt token is always evaluated (its logits start the reply).
 *
 * Ownership: the server borrows the session and tokenizer (they outlive it)
 * and owns its token history, scratch and snapshot. Threading: one thread
 * (the worker) uses it; the sink's callbacks run on that thread.
 */
#ifndef V4F_SERVER_SRV_H
#define V4F_SERVER_SRV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "kvstore/kvstore.h"
#include "model/forward.h"
#include "sampler/sampler.h"
#include "tokenizer/tokenizer.h"

typedef struct v4f_srv_opts {
    uint32_t n_vocab;
    uint32_t snapshot_min; /* snapshot prompts of more than this many tokens (0: never); on a GPU
                            * only those whose prefill spans more than two chunks */
    /* disk checkpoints (optional): restored when one holds a longer prefix
     * of a prompt than the live KV; saved at the policy's points of a
     * prefill, before the live KV is cut back by at least min_tokens
     * (evict), and by v4f_srv_save_live (shutdown) */
    v4f_kvstore *kvs;
    const v4f_kv_ident *kv_id;
    v4f_kv_policy kv_pol;
    bool kv_allow_family;
} v4f_srv_opts;

typedef struct v4f_srv v4f_srv;

v4f_srv *v4f_srv_new(v4f_session *s, const v4f_tok *tok, uint32_t n_ctx, const v4f_srv_opts *o);
void v4f_srv_free(v4f_srv *w);

typedef struct v4f_srv_sink {
    void *ud;
    /* generated text (decoded bytes, special tokens as their text); false:
     * stop generating (a stop string matched, the client went away) */
    bool (*text)(void *ud, const char *s, size_t n);
    /* polled between prefill pieces and tokens (may be NULL) */
    bool (*cancelled)(void *ud);
    /* the prompt is in the KV: its tokens and how many came from the cache
     * (may be NULL) */
    void (*prefilled)(void *ud, uint32_t n_prompt, uint32_t n_cached);
} v4f_srv_sink;

typedef struct v4f_srv_job {
    const char *prompt; /* prompt text (special tokens recognised) */
    size_t prompt_len;
    const int32_t *ids; /* optional: its tokens, already encoded (v4f_tok_encode with
                         * V4F_TOK_ENC_SPECIAL), used when the live text does not match */
    size_t n_ids;
    v4f_sampler_params sp;
    uint64_t max_tokens; /* 0: as many as the context holds */
    bool emit_eos;       /* pass the EOS token's text to the sink (the DSML parser wants it) */
} v4f_srv_job;

typedef struct v4f_srv_result {
    uint32_t n_prompt;  /* prompt tokens */
    uint32_t n_cached;  /* of them taken from the KV cache, not prefilled */
    uint64_t n_gen;     /* sampled tokens (EOS included) */
    const char *end;    /* "eos", "length" (max_tokens or the context), "stop" (the sink said
                         * so), "cancelled" */
    const char *cache;  /* "live", "rewind", "snapshot", "cold" */
    double t_prefill, t_gen;
    uint64_t drafted, accepted; /* MTP drafts of this request, and those kept */
    uint64_t paused;            /* its tokens decoded while the draft gate paused drafting */
} v4f_srv_result;

/* Run one request. Errors: RANGE (the prompt does not fit the context,
 * nothing evaluated), model failures (the history is then cut to what the
 * KV holds). */
v4f_status v4f_srv_generate(v4f_srv *w, const v4f_srv_job *j, const v4f_srv_sink *k, v4f_srv_result *r,
                            v4f_err *err);

/* Save the live KV as a disk checkpoint (shutdown), when there is a store
 * and the policy wants it. */
void v4f_srv_save_live(v4f_srv *w);

/* Tokens the KV cache holds now (tests). */
uint32_t v4f_srv_pos(const v4f_srv *w);

#endif /* V4F_SERVER_SRV_H */
