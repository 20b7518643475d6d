/*
 * forward.h - the inference session: KV cache + scratch + the forward pass
 * (MODEL.md §4-§9) on the CPU backend.
 *
 * A session evaluates tokens at consecutive positions. Prefill runs n tokens
 * layer-major in one batched call (chunked internally when n exceeds the
 * scratch chunk; chunking is semantically invisible); decode is a prefill of
 * one token. Both share the KV cache, so prefill(N) + decode(k) computes the
 * same function as prefill(N + k).
 *
 * Precision: DEFAULT and REF run the same float32 math; REF keeps every KV
 * row as float32, DEFAULT stores compressed/indexer rows in their exact
 * FP8/FP4 code form (lossless, several times smaller).
 *
 * Ownership: the session borrows the model (which must outlive it) and owns
 * its pool, KV cache and scratch, all allocated in v4f_session_new; prefill
 * and decode never allocate. Outputs are caller-owned.
 * Threading: a session is used by one thread at a time; it runs its own
 * worker pool internally.
 */
#ifndef V4F_FORWARD_H
#define V4F_FORWARD_H

#include <stdbool.h>
#include <stdint.h>

#include "model/model.h"

typedef enum { V4F_PRECISION_DEFAULT = 0, V4F_PRECISION_REF = 1 } v4f_precision;
typedef enum { V4F_BACKEND_CPU = 0, V4F_BACKEND_CUDA = 1 } v4f_backend;

typedef struct v4f_session_opts {
    uint32_t n_ctx;        /* maximum positions (0: 4096) */
    int n_threads;         /* <= 0: all online CPUs */
    v4f_precision precision;
    bool enable_mtp;       /* allocate the MTP block's cache (model must have MTP) */
    bool mtp_draft;        /* speculative decoding with MTP drafts (CUDA; needs enable_mtp):
                            * v4f_session_decode_greedy / _sampled verify the MTP block's draft of
                            * the next token with each step, and evals keep the MTP block fed */
    uint32_t max_chunk;    /* tokens per layer-major pass (0: automatic, from n_ctx up to 2048 on
                            * the CPU, 8192 on the GPU) */
    const char *kv_page_dir; /* NULL: KV in RAM; else page the ratio-4 compressed rows to an
                              * unlinked file in this directory (kv.h); read only in
                              * v4f_session_new */
    v4f_backend backend;   /* CPU (default) or CUDA (forward_cuda.h) */
    int gpu_device;        /* CUDA device index */
    double gpu_mem_gb;     /* CUDA memory budget in GiB (<= 0: free memory minus a reserve) */
} v4f_session_opts;

typedef struct v4f_session v4f_session;

v4f_status v4f_session_new(const v4f_model *m, const v4f_session_opts *o, v4f_session **out,
                           v4f_err *err);
void v4f_session_free(v4f_session *s);

/* Evaluate n tokens at positions pos..pos+n-1 in one batched layer-major
 * call. logits: NULL, or [n][n_vocab] (every position). */
v4f_status v4f_session_prefill(v4f_session *s, const int32_t *tokens, uint32_t n, float *logits,
                               v4f_err *err);
/* One token at position pos. logits: NULL or [n_vocab]. */
v4f_status v4f_session_decode(v4f_session *s, int32_t token, float *logits, v4f_err *err);

#define V4F_EVAL_LOGITS_LAST 1u /* logits receives only the last position: [n_vocab] */
/* General form: flags V4F_EVAL_*; hc_out (optional) receives the final HC
 * state (before the head) of every position, [n][n_hc * n_embd]. */
v4f_status v4f_session_eval(v4f_session *s, const int32_t *tokens, uint32_t n, float *logits,
                            unsigned flags, float *hc_out, v4f_err *err);

/* Greedy decoding: evaluates `token` at the current position, then picks
 * the argmax of the last logits (as v4f_sampler_greedy; `suppress` >= 0 is
 * an id never picked, read as -inf) and calls fn(ud, pick) (fn NULL: always
 * go on); the pick is evaluated next if fn returns true and fewer than
 * max_eval (>= 1) tokens were evaluated by this call. *n_eval: tokens
 * evaluated (the position advanced by that much); *next: the last pick, not
 * evaluated (fn refused it, or it is unreported because max_eval was
 * reached). logits (required, [n_vocab]) receives the logits of the last
 * evaluated position, from which *next was picked. On CUDA the picks are
 * made on the device and the next step is queued before the host reads a
 * pick, so the GPU does not wait for the host between tokens; the result is
 * the same as the step-by-step loop. On error *n_eval tokens were
 * evaluated. */
typedef bool (*v4f_pick_fn)(void *ud, int32_t token);
/* With opts.mtp_draft on a CUDA session the same call drafts: each step
 * evaluates [token, draft] in one 2-token eval, where draft is the MTP
 * block's greedy guess of the token after `token`; the draft is kept when
 * the model's own pick equals it (two tokens for one step) and dropped
 * (rewound) otherwise. The picks are the model's greedy picks either way,
 * from the logits of the 2-token eval, which may differ from one-token
 * decode steps in the last bits (GPU batched kernels), so a near-tie can
 * resolve differently than without drafts. */
v4f_status v4f_session_decode_greedy(v4f_session *s, int32_t token, uint32_t max_eval, int32_t suppress,
                                     v4f_pick_fn fn, void *ud, float *logits, uint32_t *n_eval, int32_t *next,
                                     v4f_err *err);

/* Sampled decoding with the same contract as v4f_session_decode_greedy,
 * the picks made on the host by a drawer (core.h; e.g. v4f_sampler_drawer).
 * On a drafting session (opts.mtp_draft, CUDA) each step evaluates [token,
 * MTP draft] in one 2-token eval and verifies the draft against the first
 * row's logits (the picks keep the drawer's distribution); the draft gate
 * applies as in greedy decoding. Elsewhere: one eval and one draw per
 * token. logits (required) receives the logits the last pick was drawn
 * from. */
v4f_status v4f_session_decode_sampled(v4f_session *s, int32_t token, uint32_t max_eval, const v4f_drawer *dw,
                                      v4f_pick_fn fn, void *ud, float *logits, uint32_t *n_eval, int32_t *next,
                                      v4f_err *err);

/* Speculative decoding counters (opts.mtp_draft): verify steps, draft
 * tokens proposed, drafts accepted, tokens decoded without drafts while the
 * gate paused drafting; since session creation. */
typedef struct v4f_spec_stats {
    uint64_t steps, drafted, accepted, paused;
} v4f_spec_stats;
v4f_spec_stats v4f_session_spec_stats(const v4f_session *s);
/* The draft gate (spec_gate.h, on by default): drafting pauses for a run of
 * plain (pipelined) decode steps where too few drafts are kept, so drafts
 * that miss cost little. Off: every step drafts (benchmarks that time a
 * fixed acceptance). Resets the gate's state. */
void v4f_session_set_draft_gate(v4f_session *s, bool on);
/* Benchmarks and tests: the draft of the token at position pos instead of
 * the MTP block's (which stays on the device), or -1 to keep the block's
 * (none when the block has no HC state of the position before: then the
 * step evaluates one token). NULL: the MTP block's drafts. */
typedef int32_t (*v4f_draft_fn)(void *ud, uint32_t pos);
void v4f_session_set_draft_hook(v4f_session *s, v4f_draft_fn fn, void *ud);
/* Whether greedy decoding drafts (opts.mtp_draft on a CUDA session, and
 * not turned off). */
bool v4f_session_drafts(const v4f_session *s);
/* Turn drafting off (benchmarks, tests: evals then skip keeping the MTP
 * block fed, and decoding runs as without opts.mtp_draft) or
 * back on (only where opts.mtp_draft made it possible; the MTP block has
 * then missed the positions evaluated meanwhile, which costs draft
 * quality for up to its window, not correctness). */
void v4f_session_set_drafting(v4f_session *s, bool on);

uint32_t v4f_session_pos(const v4f_session *s);
uint64_t v4f_session_kv_bytes(const v4f_session *s);
/* Bytes of KV that grow per token with this session's storage mode. */
double v4f_session_kv_bytes_per_token(const v4f_session *s);
uint32_t v4f_session_chunk(const v4f_session *s); /* max tokens per layer pass */
/* The backend the session runs on, and for CUDA the placement report
 * (forward_cuda.h; NULL on the CPU). */
v4f_backend v4f_session_backend(const v4f_session *s);
const char *v4f_session_gpu_report(const v4f_session *s);
struct v4f_gpu *v4f_session_gpu(v4f_session *s); /* NULL on the CPU */
void v4f_session_reset(v4f_session *s);

/* Move the position back to pos <= the current one, dropping the tokens
 * after it. CUDA sessions only: their device state is indexed by position,
 * so the dropped positions are simply rewritten by the next tokens, as far
 * back as the device's position rings reach (about a prefill chunk; RANGE
 * beyond, v4f_gpu_can_rewind). The CPU session's compressor state cannot
 * rewind (use a snapshot): UNSUPPORTED. */
v4f_status v4f_session_rewind(v4f_session *s, uint32_t pos, v4f_err *err);
/* How far back a rewind is sure to reach after more tokens were evaluated
 * (0: never, the CPU session; a GPU session: its decode chunk, and not
 * behind an eval of more than two such chunks). */
uint32_t v4f_session_rewind_reach(const v4f_session *s);

/* Benchmarks only: the KV cache filled with seeded random rows as if pos
 * tokens had been evaluated (row counts and access pattern real, values
 * meaningless), position set to pos. */
v4f_status v4f_session_fake_ctx(v4f_session *s, uint32_t pos, uint64_t seed, v4f_err *err);

/* ---- MTP (speculative draft block, fixture convention) ---------------------
 * Runs the MTP block over n positions mtp_pos..mtp_pos+n-1 of its own cache:
 * position i takes the main model's final HC state hc[i] ([n_hc*n_embd],
 * before the head, for main position p) and the NEXT token tokens[i]
 * (= token p+1); logits[i] is the draft for token p+2. */
v4f_status v4f_session_mtp_eval(v4f_session *s, const float *hc, const int32_t *tokens, uint32_t n,
                                float *logits, v4f_err *err);
uint32_t v4f_session_mtp_pos(const v4f_session *s);

/* ---- tracing (tests, drift diagnosis) --------------------------------------
 * Callbacks run on the calling thread during eval. layer == n_layer means
 * the MTP block. */
typedef struct v4f_trace {
    void *ud;
    /* HC state [n_hc*n_embd] after each layer, at the last position of a call */
    void (*hc_after_layer)(void *ud, uint32_t layer, uint32_t pos, const float *hc);
    /* routed experts of one position, selection order */
    void (*experts)(void *ud, uint32_t layer, uint32_t pos, const int32_t *ids, uint32_t k);
    /* compressed rows attended by a ratio-4 layer at one position
     * (indexer selection, or every visible row), ascending */
    void (*indexer)(void *ud, uint32_t layer, uint32_t pos, const int32_t *rows, uint32_t n);
} v4f_trace;
void v4f_session_set_trace(v4f_session *s, const v4f_trace *t); /* NULL: off */

/* Debug knobs for feature-ablation checks (tests only; default all false). */
typedef struct v4f_debug_flags {
    bool no_sink;     /* drop the sink logit from the softmax denominator */
    bool no_kv_fp8;   /* skip the FP8 round-trip of KV rows */
} v4f_debug_flags;
void v4f_session_set_debug(v4f_session *s, const v4f_debug_flags *f);

/* ---- snapshot support (src/model/snapshot.c) --------------------------------
 * The session's KV cache (owned by the session; for a CUDA session a host
 * mirror of the device cache, NULL if it cannot be allocated), and setting the positions
 * after a snapshot restore filled the cache (the only state besides the KV
 * cache that carries across tokens). RANGE if a position exceeds the ctx. */
struct v4f_kv;
struct v4f_kv *v4f_session_kv(v4f_session *s);
/* CUDA sessions keep the cache on the device; v4f_session_kv returns a
 * host mirror (allocated on first use) that this copies from (to_host) or
 * to the device at the current position. No-op for the CPU. The snapshot
 * writer syncs to the host first; restore_pos uploads the mirror. */
v4f_status v4f_session_kv_sync(v4f_session *s, bool to_host, v4f_err *err);
v4f_status v4f_session_restore_pos(v4f_session *s, uint32_t pos, uint32_t mtp_pos, v4f_err *err);

#endif /* V4F_FORWARD_H */
