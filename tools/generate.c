/*
 * generate.c - shared prefill + streaming generation loop (see generate.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "generate.h"
#include "progress.h"
#include "json/json.h"
#include "tokenizer/chat.h"

#define GEN_CPU_PIECE 512 /* most prompt tokens per CPU eval (progress and interrupts) */

/* Prompt text through the official renderer: [system?] + user. */
v4f_status v4f_gen_render_prompt(const char *system, const char *prompt, bool think, bool think_max,
                                char **out, size_t *out_len, v4f_err *err) {
    v4f_json_buf b;
    v4f_json_buf_init(&b);
    v4f_json_buf_putc(&b, '[');
    if (system && *system) {
        v4f_json_buf_puts(&b, "{\"role\": \"system\", \"content\": ");
        v4f_json_write_string(&b, system, strlen(system), 0);
        v4f_json_buf_puts(&b, "}, ");
    }
    v4f_json_buf_puts(&b, "{\"role\": \"user\", \"content\": ");
    v4f_json_write_string(&b, prompt, strlen(prompt), 0);
    v4f_json_buf_puts(&b, "}]");
    size_t jl = 0;
    char *js = v4f_json_buf_take(&b, &jl);
    v4f_json_doc *doc = NULL;
    v4f_status st = v4f_json_parse(js, jl, NULL, &doc, err);
    if (!st) {
        v4f_chat_opts o;
        v4f_chat_opts_default(&o);
        o.thinking = think;
        o.effort = think && think_max ? V4F_CHAT_EFFORT_MAX : V4F_CHAT_EFFORT_NONE;
        st = v4f_chat_render(v4f_json_doc_root(doc), NULL, &o, out, out_len, err);
    }
    v4f_json_doc_free(doc);
    free(js);
    return st;
}

bool v4f_reason_mode_parse(const char *s, v4f_reason_mode *out) {
    if (!strcmp(s, "auto")) *out = isatty(1) ? V4F_REASON_DIM : V4F_REASON_PLAIN;
    else if (!strcmp(s, "dim")) *out = V4F_REASON_DIM;
    else if (!strcmp(s, "plain")) *out = V4F_REASON_PLAIN;
    else if (!strcmp(s, "stderr")) *out = V4F_REASON_STDERR;
    else if (!strcmp(s, "hide")) *out = V4F_REASON_HIDE;
    else return false;
    return true;
}

static void hist_push(v4f_tok_ids *h, const int32_t *ids, uint64_t n) {
    if (h) v4f_tok_ids_append(h, ids, n);
}

v4f_status v4f_gen_prefill(v4f_gen *g, const int32_t *ids, uint64_t n, v4f_gen_result *r,
                           v4f_err *err) {
    v4f_progress pr;
    v4f_progress_begin(&pr, "prefill", n, V4F_PROGRESS_TOKENS);
    /* pieces of one eval each (progress, interrupts): on a GPU the session's
     * whole chunk (an eval of 512 tokens ran the GPU at 2,029 instead of
     * 5,085 t/s on an H200: docs/PERF_NOTES.md, session 15); on the CPU at
     * most 512 tokens, seconds of work */
    uint32_t chunk = v4f_session_chunk(g->s);
    if (chunk == 0 || (chunk > GEN_CPU_PIECE && v4f_session_backend(g->s) != V4F_BACKEND_CUDA))
        chunk = GEN_CPU_PIECE;
    uint64_t done = 0;
    v4f_status st = V4F_OK;
    while (done < n) {
        if (g->stop && *g->stop) {
            st = V4F_STATUS_INTERRUPTED;
            v4f_err_set(err, st, "prefill interrupted");
            break;
        }
        uint32_t k = (uint32_t)(n - done < chunk ? n - done : chunk);
        bool last = done + k == n;
        st = v4f_session_eval(g->s, ids + done, k, last ? g->logits : NULL, V4F_EVAL_LOGITS_LAST,
                              NULL, err);
        if (st) break;
        hist_push(g->history, ids + done, k);
        done += k;
        v4f_progress_update(&pr, done);
    }
    r->t_prefill = v4f_progress_end(&pr);
    r->n_prefill = done;
    return st;
}

static void out_text(v4f_reason_mode m, bool reasoning, const char *b, size_t n) {
    if (reasoning && m == V4F_REASON_HIDE) return;
    FILE *o = reasoning && m == V4F_REASON_STDERR ? stderr : stdout;
    fwrite(b, 1, n, o);
    fflush(o);
}

/* One sampled token's bookkeeping, shared by the step-by-step and the
 * pipelined greedy loops. */
typedef struct gen_emit {
    v4f_gen *g;
    v4f_gen_result *r;
    uint64_t n_max;
    bool reasoning, done, push; /* push: record accepted tokens in the history (greedy loop) */
    v4f_tok_stream *ts;
    int32_t eos, think_end;
    double t0;
} gen_emit;

/* Counts and streams token t; false when generation ends with it (EOS, the
 * budget) or before it (interrupt: t is dropped unseen). */
static bool gen_emit_token(void *ud, int32_t t) {
    gen_emit *e = ud;
    v4f_gen *g = e->g;
    v4f_gen_result *r = e->r;
    if (g->stop && *g->stop) {
        r->stop_reason = "interrupted";
        return !(e->done = true);
    }
    r->n_gen++;
    if (r->n_gen == 1) r->t_first = r->t_prefill + (v4f_time_s() - e->t0);
    if (t == e->eos) {
        r->stop_reason = "eos";
        r->ended_with_eos = true;
        return !(e->done = true);
    }
    if (t == e->think_end && e->reasoning) {
        e->reasoning = false;
        if (g->rmode == V4F_REASON_DIM) fputs("\033[0m\n", stdout);
        else if (g->rmode == V4F_REASON_PLAIN) fputs("\n", stdout);
        else if (g->rmode == V4F_REASON_STDERR) fputs("\n", stderr);
    } else if (!v4f_tok_is_special(g->tok, t)) {
        const char *b = NULL;
        size_t bl = 0;
        if (v4f_tok_stream_push(e->ts, t, &b, &bl, NULL) == V4F_OK && bl) out_text(g->rmode, e->reasoning, b, bl);
    }
    if (r->n_gen >= e->n_max) return !(e->done = true); /* stop_reason set by v4f_gen_generate */
    if (e->push) hist_push(g->history, &t, 1);
    return true;
}

v4f_status v4f_gen_generate(v4f_gen *g, uint64_t n_max, uint64_t n_room, bool reasoning, v4f_gen_result *r,
                            v4f_err *err) {
    const v4f_tok *tok = g->tok;
    const char *at_limit = n_room < n_max ? "context_full" : "max_tokens";
    if (n_room < n_max) n_max = n_room;
    gen_emit e = {.g = g, .r = r, .n_max = n_max, .reasoning = reasoning};
    e.eos = v4f_tok_eos(tok) >= 0 ? v4f_tok_eos(tok) : 1;
    e.think_end = v4f_tok_find(tok, V4F_CHAT_THINK_END, strlen(V4F_CHAT_THINK_END));
    e.ts = v4f_tok_stream_new(tok);
    r->n_gen = 0;
    r->stop_reason = at_limit; /* unless EOS or an interrupt ends it first */
    r->ended_with_eos = false;
    /* each reply drafts from the start: a text the MTP block drafts well is
     * not held back by a pause an earlier one earned */
    v4f_session_set_draft_gate(g->s, true);
    e.t0 = v4f_time_s();
    if (reasoning && g->rmode == V4F_REASON_DIM) fputs("\033[2m", stdout);
    /* greedy sampling, or a session that drafts with the MTP block: the
     * session feeds the picks itself (greedy: picked on a GPU and
     * pipelined; sampled: drawn by the sampler, the drafts verified),
     * pausing where after_decode needs the logits */
    const bool greedy = v4f_sampler_is_greedy(g->smp), batch = greedy || v4f_session_drafts(g->s);
    const v4f_drawer dw = v4f_sampler_drawer(g->smp);
    e.push = batch;
    v4f_status st = V4F_OK;
    int32_t t = -1;
    bool fresh = false; /* t sampled but not yet reported */
    while (n_max > 0) {
        if (!fresh) t = v4f_sampler_sample(g->smp, g->logits);
        if (!gen_emit_token(&e, t)) break;
        fresh = false;
        if (!batch) {
            st = v4f_session_decode(g->s, t, g->logits, err);
            if (st) break;
            hist_push(g->history, &t, 1);
            if (g->after_decode) g->after_decode(g->after_decode_ud, v4f_session_pos(g->s));
            continue;
        }
        const uint32_t pos = v4f_session_pos(g->s);
        uint64_t max_eval = n_max - r->n_gen; /* each evaluation yields one more sample */
        if (g->next_pause) {
            const uint32_t np = g->next_pause(g->after_decode_ud, pos);
            if (np > pos && np - pos < max_eval) max_eval = np - pos;
        }
        if (max_eval > UINT32_MAX) max_eval = UINT32_MAX;
        /* the history already holds t (gen_emit_token records what it accepts) */
        const size_t h0 = g->history ? g->history->n - 1 : 0;
        uint32_t n_eval = 0;
        int32_t next = -1;
        st = greedy ? v4f_session_decode_greedy(g->s, t, (uint32_t)max_eval, -1, gen_emit_token, &e, g->logits,
                                                &n_eval, &next, err)
                    : v4f_session_decode_sampled(g->s, t, (uint32_t)max_eval, &dw, gen_emit_token, &e, g->logits,
                                                 &n_eval, &next, err);
        if (st) {
            if (g->history) g->history->n = h0 + n_eval; /* only what is in the KV */
            break;
        }
        if (g->after_decode) g->after_decode(g->after_decode_ud, v4f_session_pos(g->s));
        if (e.done) break;
        t = next; /* picked at max_eval, not reported yet */
        fresh = true;
    }
    const char *b = NULL;
    size_t bl = 0;
    v4f_tok_stream_flush(e.ts, &b, &bl);
    if (bl) out_text(g->rmode, e.reasoning, b, bl);
    if (e.reasoning && g->rmode == V4F_REASON_DIM) fputs("\033[0m", stdout);
    fflush(stdout);
    r->t_gen = v4f_time_s() - e.t0;
    v4f_tok_stream_free(e.ts);
    return st;
}
