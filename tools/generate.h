/*
 * generate.h - the prefill + sample/stream loop shared by `run` and `chat`:
 * chunked prefill with the TTY progress bar, then sampling until EOS, a
 * token budget or an interrupt flag, streaming the decoded text (reasoning
 * before </think> dimmed, plain, to stderr, or hidden).
 *
 * Ownership: borrows everything in v4f_gen; `history` (optional) receives
 * every token whose KV entry exists (prefilled + decoded), so a caller can
 * rebuild the session later. CLI only, single-threaded (the session runs
 * its own pool).
 */
#ifndef V4F_TOOLS_GENERATE_H
#define V4F_TOOLS_GENERATE_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "model/forward.h"
#include "sampler/sampler.h"
#include "tokenizer/tokenizer.h"

typedef enum { V4F_REASON_DIM, V4F_REASON_PLAIN, V4F_REASON_STDERR, V4F_REASON_HIDE } v4f_reason_mode;

/* "auto" | "dim" | "plain" | "stderr" | "hide" -> mode (auto: dim when
 * stdout is a TTY, else plain); false if unknown. */
bool v4f_reason_mode_parse(const char *s, v4f_reason_mode *out);

/* The official chat rendering of one user prompt with an optional system
 * prompt: BOS, [max-effort prefix], system, <｜User｜>prompt<｜Assistant｜>,
 * then <think> (think) or </think>. *out is malloc'ed (caller frees). */
v4f_status v4f_gen_render_prompt(const char *system, const char *prompt, bool think,
                                 bool think_max, char **out, size_t *out_len, v4f_err *err);

typedef struct v4f_gen {
    v4f_session *s;
    v4f_sampler *smp;
    const v4f_tok *tok;
    float *logits; /* [n_vocab] scratch; holds the last position's logits */
    v4f_reason_mode rmode;
    volatile sig_atomic_t *stop; /* set asynchronously (SIGINT) to stop */
    v4f_tok_ids *history;        /* optional */
    /* optional: called after each decoded token is in the KV (pos = new
     * session position), e.g. to save a KV checkpoint at a frontier;
     * g->logits then holds the next-token logits */
    void (*after_decode)(void *ud, uint32_t pos);
    void *after_decode_ud;
    /* optional, for greedy sampling, whose tokens the session feeds itself
     * (v4f_session_decode_greedy): the first position > pos at which
     * after_decode must run (0: none). With greedy sampling after_decode
     * runs only there and when generation ends. */
    uint32_t (*next_pause)(void *ud, uint32_t pos);
} v4f_gen;

typedef struct v4f_gen_result {
    uint64_t n_prefill; /* tokens computed by the prefill */
    double t_prefill;
    uint64_t n_gen;     /* tokens sampled (EOS included) */
    double t_gen;
    double t_first;     /* from the start of the prefill to the first sample */
    const char *stop_reason; /* "eos", "max_tokens", "context_full", "interrupted" */
    bool ended_with_eos;
} v4f_gen_result;

/* Prefill ids[0..n) at the session's current position (progress bar on a
 * TTY). Leaves the last position's logits in g->logits. */
v4f_status v4f_gen_prefill(v4f_gen *g, const int32_t *ids, uint64_t n, v4f_gen_result *r,
                           v4f_err *err);
/* Sample and stream up to min(n_max, n_room) tokens: n_max is the caller's
 * limit (-n), n_room what the context still holds. Stopping at n_room
 * before n_max reports "context_full" (at n_max: "max_tokens");
 * `reasoning` = the reply starts inside a <think> block. */
v4f_status v4f_gen_generate(v4f_gen *g, uint64_t n_max, uint64_t n_room, bool reasoning, v4f_gen_result *r,
                            v4f_err *err);

#endif /* V4F_TOOLS_GENERATE_H */
