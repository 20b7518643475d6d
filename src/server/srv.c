/*
 * srv.c - the server's live session: prefix reuse, prefill, sampling (see
 * srv.h).
 */
#include "server/srv.h"

#include <stdlib.h>
#include <string.h>

#include "engine/kvcache.h"
#include "model/snapshot.h"

#define SRV_CPU_PIECE 512 /* most prompt tokens per CPU eval (cancellation checks) */

struct v4f_srv {
    v4f_session *s;
    const v4f_tok *tok;
    uint32_t n_ctx, n_vocab, snapshot_min;
    int32_t eos;
    /* what the KV holds: ids, their text, and where each token's text ends */
    int32_t *ids;
    uint64_t *ends;
    size_t n, cap;
    char *text;
    size_t text_len, text_cap;
    float *logits;
    v4f_snapshot_mem snap; /* the KV at the end of an earlier prompt */
    v4f_kvstore *kvs;      /* disk checkpoints (borrowed; NULL: none) */
    const v4f_kv_ident *kv_id;
    v4f_kv_policy kv_pol;
    bool kv_allow_family;
    uint32_t snap_pos;     /* 0: none; valid while ids[0..snap_pos) are unchanged */
};

v4f_srv *v4f_srv_new(v4f_session *s, const v4f_tok *tok, uint32_t n_ctx, const v4f_srv_opts *o) {
    v4f_srv *w = v4f_xmalloc(sizeof *w);
    memset(w, 0, sizeof *w);
    w->s = s;
    w->tok = tok;
    w->n_ctx = n_ctx;
    w->n_vocab = o->n_vocab;
    w->snapshot_min = o->snapshot_min;
    w->kvs = o->kvs;
    w->kv_id = o->kv_id;
    w->kv_pol = o->kv_pol;
    w->kv_allow_family = o->kv_allow_family;
    w->eos = v4f_tok_eos(tok) >= 0 ? v4f_tok_eos(tok) : 1;
    w->logits = v4f_xmalloc((size_t)o->n_vocab * sizeof *w->logits);
    return w;
}

void v4f_srv_free(v4f_srv *w) {
    if (!w) return;
    free(w->ids);
    free(w->ends);
    free(w->text);
    free(w->logits);
    v4f_snapshot_mem_free(&w->snap);
    free(w);
}

uint32_t v4f_srv_pos(const v4f_srv *w) {
    return (uint32_t)w->n;
}

/* ---- history ---------------------------------------------------------------- */

static void hist_push(v4f_srv *w, const int32_t *ids, size_t n) {
    if (w->n + n > w->cap) {
        size_t cap = w->cap ? w->cap : 1024;
        while (cap < w->n + n) cap *= 2;
        w->ids = v4f_xrealloc(w->ids, cap * sizeof *w->ids);
        w->ends = v4f_xrealloc(w->ends, cap * sizeof *w->ends);
        w->cap = cap;
    }
    for (size_t i = 0; i < n; i++) {
        const char *b = NULL;
        size_t bl = 0;
        if (!v4f_tok_token_bytes(w->tok, ids[i], &b, &bl)) bl = 0; /* ids were validated by the model */
        if (w->text_len + bl + 1 > w->text_cap) {
            size_t cap = w->text_cap ? w->text_cap : 4096;
            while (cap < w->text_len + bl + 1) cap *= 2;
            w->text = v4f_xrealloc(w->text, cap);
            w->text_cap = cap;
        }
        memcpy(w->text + w->text_len, b, bl);
        w->text_len += bl;
        w->ids[w->n] = ids[i];
        w->ends[w->n++] = w->text_len;
    }
}

static void hist_cut(v4f_srv *w, size_t n) {
    if (n >= w->n) return;
    w->n = n;
    w->text_len = n ? w->ends[n - 1] : 0;
    if (w->snap_pos > n) w->snap_pos = 0; /* its tokens are gone */
}

/* Move the session back to position c (< w->n); returns the position reached
 * and the way ("rewind", "snapshot", "cold"). */
static uint32_t back_to(v4f_srv *w, uint32_t c, const char **how) {
    v4f_err e = {0};
    if (v4f_session_backend(w->s) == V4F_BACKEND_CUDA && v4f_session_rewind(w->s, c, &e) == V4F_OK) {
        hist_cut(w, c);
        *how = "rewind";
        return c;
    }
    if (w->snap_pos && w->snap_pos <= c) {
        w->snap.off = 0;
        if (v4f_snapshot_mem_load(w->s, &w->snap, NULL, 0, &e) == V4F_OK) {
            hist_cut(w, w->snap_pos);
            *how = "snapshot";
            return w->snap_pos;
        }
        v4f_log(V4F_LOG_WARN, "serve: the prompt snapshot did not restore (%s); prefilling", e.msg);
        w->snap_pos = 0;
    }
    v4f_session_reset(w->s);
    hist_cut(w, 0);
    *how = "cold";
    return 0;
}

/* ---- disk checkpoints --------------------------------------------------------------- */

/* Save what the KV holds now (tokens ids[0..n), n == the session position)
 * unless the store has it. */
static void disk_save(v4f_srv *w, uint32_t reason) {
    if (!w->kvs || !w->n || v4f_kvcache_has(w->kvs, w->kv_id, w->ids, (uint32_t)w->n)) return;
    v4f_err e = {0};
    char nm[V4F_KVSTORE_NAME_MAX];
    double secs = 0;
    if (v4f_kvcache_save(w->kvs, w->kv_id, w->s, w->ids, (uint32_t)w->n, NULL, 0, NULL, 0, reason, NULL, nm, &secs,
                         NULL, &e))
        v4f_log(V4F_LOG_WARN, "serve: kv cache save: %s", e.msg);
    else
        v4f_log(V4F_LOG_INFO, "serve: kv cache: saved %zu tokens (%s) as %s in %.1f ms", w->n,
                v4f_kv_reason_name(reason), nm, 1e3 * secs);
}

/* Before the live KV is cut back to c: keep it on disk when that drops a
 * useful amount (another conversation comes in; it may come back). */
static void disk_save_evicted(v4f_srv *w, size_t c) {
    if (w->kvs && v4f_kv_policy_save_live(&w->kv_pol, (uint32_t)w->n) && w->n - c >= w->kv_pol.min_tokens)
        disk_save(w, V4F_KV_REASON_EVICT);
}

void v4f_srv_save_live(v4f_srv *w) {
    if (w->kvs && v4f_kv_policy_save_live(&w->kv_pol, (uint32_t)w->n)) disk_save(w, V4F_KV_REASON_SHUTDOWN);
}

/* ---- prefix reuse ------------------------------------------------------------------- */

/* The prompt's tokens (*all) and how many of them the live KV can keep
 * (*keep; the session is not moved yet): the live text when the prompt
 * starts with it, else the common token prefix, leaving at least one token
 * to evaluate. */
static v4f_status live_match(v4f_srv *w, const v4f_srv_job *j, v4f_tok_ids *all, size_t *keep, v4f_err *err) {
    v4f_status st;
    const char *prompt = j->prompt;
    const size_t len = j->prompt_len;
    if (w->n && len > w->text_len && !memcmp(prompt, w->text, w->text_len)) {
        v4f_tok_ids_append(all, w->ids, w->n);
        if ((st = v4f_tok_encode(w->tok, prompt + w->text_len, len - w->text_len, V4F_TOK_ENC_SPECIAL, all, err)))
            return st;
        *keep = w->n;
    } else {
        if (j->ids) v4f_tok_ids_append(all, j->ids, j->n_ids);
        else if ((st = v4f_tok_encode(w->tok, prompt, len, V4F_TOK_ENC_SPECIAL, all, err))) return st;
        size_t c = 0;
        while (c < w->n && c < all->n && w->ids[c] == all->ids[c]) c++;
        if (c == all->n && c) c--; /* evaluate at least the last token */
        *keep = c;
    }
    if (all->n == 0 || *keep >= all->n) return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "the prompt is empty");
    return V4F_OK;
}

/* Restore the longest disk checkpoint of all[0..n-1) into the session (the
 * live KV is replaced); the tokens restored (0: the session is reset). */
static size_t disk_restore(v4f_srv *w, const v4f_tok_ids *all, v4f_srv_result *r) {
    v4f_kvcache_hit hit;
    v4f_err e = {0};
    if (v4f_kvcache_restore_prefix(w->kvs, w->kv_id, w->kv_allow_family, w->kv_pol.min_tokens, w->s, all->ids,
                                   (uint32_t)all->n - 1, NULL, 0, &hit, &e))
        v4f_log(V4F_LOG_WARN, "serve: kv cache restore: %s", e.msg);
    hist_cut(w, 0); /* the session holds the checkpoint now (or nothing) */
    w->snap_pos = 0;
    hist_push(w, all->ids, hit.n_tokens);
    r->cache = hit.n_tokens ? "disk" : "cold";
    return hit.n_tokens;
}

/* Move the session to the best reusable prefix of all[0..n): the live KV,
 * a longer disk checkpoint, or back to the live prefix (rewind, snapshot),
 * else the disk checkpoint after all, else cold. Returns the tokens kept. */
static size_t reuse(v4f_srv *w, const v4f_tok_ids *all, size_t keep, v4f_srv_result *r) {
    r->cache = keep ? "live" : "cold";
    uint32_t on_disk = 0; /* the longest checkpoint's tokens */
    if (w->kvs && all->n - 1 >= w->kv_pol.min_tokens && keep < all->n - 1) {
        const v4f_kvstore_lookup_opts lo = {.allow_family = w->kv_allow_family, .min_tokens = w->kv_pol.min_tokens,
                                            .max_ctx = w->n_ctx};
        v4f_kvstore_match m;
        v4f_err e = {0};
        const v4f_status ls = v4f_kvstore_lookup(w->kvs, all->ids, (uint32_t)all->n - 1, w->kv_id, &lo, &m, &e);
        if (ls != V4F_OK && ls != V4F_STATUS_NOT_FOUND) v4f_log(V4F_LOG_WARN, "serve: kv cache lookup: %s", e.msg);
        if (ls == V4F_OK) on_disk = m.n_tokens;
        if (on_disk > keep) {
            disk_save_evicted(w, 0);
            return disk_restore(w, all, r);
        }
    }
    if (keep < w->n) {
        disk_save_evicted(w, keep);
        keep = back_to(w, (uint32_t)keep, &r->cache);
        /* a GPU session whose rings no longer reach back (a long prefill
         * switched its placement), no snapshot: a checkpoint still beats cold */
        if (keep == 0 && on_disk) return disk_restore(w, all, r);
    }
    return keep;
}

/* ---- generation ---------------------------------------------------------------- */

typedef struct gen {
    v4f_srv *w;
    const v4f_srv_job *j;
    const v4f_srv_sink *k;
    v4f_srv_result *r;
    v4f_tok_stream *ts;
    uint64_t n_max;
    bool done, push; /* push: record accepted tokens in the history (greedy loop) */
} gen;

static bool cancelled(const v4f_srv_sink *k) {
    return k->cancelled && k->cancelled(k->ud);
}

/* Report sampled token t; false when generation ends with it (EOS, the
 * budget, the sink) or before it (cancelled: t dropped unseen). */
static bool emit(void *ud, int32_t t) {
    gen *g = ud;
    v4f_srv_result *r = g->r;
    if (cancelled(g->k)) {
        r->end = "cancelled";
        return !(g->done = true);
    }
    r->n_gen++;
    const char *b = NULL;
    size_t bl = 0;
    bool go = true;
    if (t == g->w->eos) {
        r->end = "eos";
        v4f_tok_stream_flush(g->ts, &b, &bl);
        if (bl) g->k->text(g->k->ud, b, bl);
        if (g->j->emit_eos && v4f_tok_token_bytes(g->w->tok, t, &b, &bl)) g->k->text(g->k->ud, b, bl);
        return !(g->done = true);
    }
    if (v4f_tok_is_special(g->w->tok, t)) {
        v4f_tok_stream_flush(g->ts, &b, &bl);
        if (bl) go = g->k->text(g->k->ud, b, bl);
        if (go && v4f_tok_token_bytes(g->w->tok, t, &b, &bl)) go = g->k->text(g->k->ud, b, bl);
    } else if (v4f_tok_stream_push(g->ts, t, &b, &bl, NULL) == V4F_OK && bl) {
        go = g->k->text(g->k->ud, b, bl);
    }
    if (!go) {
        r->end = "stop";
        return !(g->done = true);
    }
    if (r->n_gen >= g->n_max) return !(g->done = true); /* r->end is "length" already */
    if (g->push) hist_push(g->w, &t, 1);
    return true;
}

/* Sample from w->logits until the end; the history follows the KV. */
static v4f_status generate(v4f_srv *w, gen *g, v4f_sampler *smp, v4f_err *err) {
    v4f_status st = V4F_OK;
    const bool greedy = v4f_sampler_is_greedy(smp);
    const v4f_drawer dw = v4f_sampler_drawer(smp);
    g->push = greedy || v4f_session_drafts(w->s); /* the session feeds its picks itself */
    int32_t t = -1;
    bool fresh = false; /* t picked by the greedy loop, not yet reported */
    while (g->n_max > 0) {
        if (!fresh) t = v4f_sampler_sample(smp, w->logits);
        fresh = false;
        if (!emit(g, t)) break;
        if (!g->push) {
            if ((st = v4f_session_decode(w->s, t, w->logits, err))) break;
            hist_push(w, &t, 1);
            continue;
        }
        /* greedy (picked on a GPU, pipelined) or drafting (drawn by the
         * sampler, drafts verified): the session feeds the picks itself; emit
         * recorded t and records every pick it accepts, and each accepted
         * pick is evaluated (the one at max_eval comes back unreported) */
        const size_t h0 = w->n - 1;
        uint64_t max_eval = g->n_max - g->r->n_gen;
        if (max_eval > UINT32_MAX) max_eval = UINT32_MAX;
        uint32_t n_eval = 0;
        int32_t next = -1;
        st = greedy ? v4f_session_decode_greedy(w->s, t, (uint32_t)max_eval, -1, emit, g, w->logits, &n_eval, &next, err)
                    : v4f_session_decode_sampled(w->s, t, (uint32_t)max_eval, &dw, emit, g, w->logits, &n_eval, &next,
                                                 err);
        if (st) {
            hist_cut(w, h0 + n_eval); /* only what is in the KV */
            break;
        }
        if (g->done) break;
        t = next;
        fresh = true;
    }
    return st; /* an incomplete character held by the stream is dropped */
}

v4f_status v4f_srv_generate(v4f_srv *w, const v4f_srv_job *j, const v4f_srv_sink *k, v4f_srv_result *r,
                            v4f_err *err) {
    memset(r, 0, sizeof *r);
    r->end = "length";
    r->cache = "cold";
    double t0 = v4f_time_s();
    v4f_tok_ids all = {0};
    v4f_sampler *smp = NULL;
    v4f_status st = v4f_sampler_new(&j->sp, w->n_vocab, &smp, err);
    if (st) return st;
    /* each request drafts from the start: a text the MTP block drafts well
     * is not held back by a pause an earlier request earned */
    v4f_session_set_draft_gate(w->s, true);
    const v4f_spec_stats sp0 = v4f_session_spec_stats(w->s);
    size_t keep = 0;
    if ((st = live_match(w, j, &all, &keep, err))) goto out;
    if (all.n >= w->n_ctx) { /* the prompt must leave room for one reply token (checked before the KV moves) */
        st = v4f_err_set(err, V4F_STATUS_RANGE, "the prompt has %zu tokens; the context holds %u", all.n, w->n_ctx);
        goto out;
    }
    keep = reuse(w, &all, keep, r);
    r->n_prompt = (uint32_t)all.n;
    r->n_cached = (uint32_t)keep;
    /* the snapshot goes before the prompt's last token: a thinking prompt
     * ends with <think>, which the next turn's history renders differently */
    const size_t snap_pos = all.n - 1;
    /* the CPU session cannot rewind; a GPU session only as far as its rings
     * reach, not behind the placement switch of an eval of more than two
     * decode chunks (cards with experts in host memory), nor before a reply
     * longer than that reach: keep the snapshot for a prefill of more than
     * two such chunks (a KV download, ~64 ms per 8K tokens on an H100) */
    const size_t reach = v4f_session_rewind_reach(w->s);
    const bool snap = w->snapshot_min && snap_pos >= w->snapshot_min && snap_pos > keep && snap_pos != w->snap_pos &&
                      (!reach || snap_pos - keep > 2 * reach);
    /* disk checkpoints at the policy's points (a cold prefix, continued frontiers) */
    v4f_kv_save_point pts[64];
    size_t n_pts = w->kvs ? v4f_kv_policy_plan_prefill(&w->kv_pol, (uint32_t)all.n, (uint32_t)keep, pts, 64) : 0;
    if (n_pts > 64) n_pts = 64;
    /* a checkpoint of the whole prompt could not serve the same prompt again
     * (it has no logits to start the reply from): stop one token short */
    if (n_pts && pts[n_pts - 1].pos >= all.n) {
        pts[n_pts - 1].pos = (uint32_t)all.n - 1;
        if (pts[n_pts - 1].pos <= keep || (n_pts > 1 && pts[n_pts - 2].pos >= pts[n_pts - 1].pos)) n_pts--;
    }
    uint32_t chunk = v4f_session_chunk(w->s);
    if (chunk == 0 || (chunk > SRV_CPU_PIECE && v4f_session_backend(w->s) != V4F_BACKEND_CUDA)) chunk = SRV_CPU_PIECE;
    size_t next_pt = 0;
    for (size_t done = keep; done < all.n;) {
        if (cancelled(k)) {
            r->end = "cancelled";
            goto out;
        }
        while (next_pt < n_pts && pts[next_pt].pos <= done) next_pt++;
        size_t n = all.n - done < chunk ? all.n - done : chunk;
        if (snap && done < snap_pos && done + n > snap_pos) n = snap_pos - done;
        if (next_pt < n_pts && done + n > pts[next_pt].pos) n = pts[next_pt].pos - done;
        const bool last = done + n == all.n;
        if ((st = v4f_session_eval(w->s, all.ids + done, (uint32_t)n, last ? w->logits : NULL, V4F_EVAL_LOGITS_LAST,
                                   NULL, err)))
            goto out;
        hist_push(w, all.ids + done, n);
        done += n;
        if (snap && done == snap_pos) {
            v4f_err e = {0};
            if (v4f_snapshot_mem_save(w->s, NULL, 0, &w->snap, &e) == V4F_OK) {
                w->snap_pos = (uint32_t)w->n;
            } else {
                w->snap_pos = 0;
                v4f_log(V4F_LOG_WARN, "serve: no prompt snapshot (%s)", e.msg);
            }
        }
        if (next_pt < n_pts && done == pts[next_pt].pos) disk_save(w, pts[next_pt++].reason);
    }
    r->t_prefill = v4f_time_s() - t0;
    if (k->prefilled) k->prefilled(k->ud, r->n_prompt, r->n_cached);
    double t1 = v4f_time_s();
    gen g = {.w = w, .j = j, .k = k, .r = r, .ts = v4f_tok_stream_new(w->tok)};
    uint64_t room = w->n_ctx - w->n;
    g.n_max = j->max_tokens && j->max_tokens < room ? j->max_tokens : room;
    st = generate(w, &g, smp, err);
    v4f_tok_stream_free(g.ts);
    r->t_gen = v4f_time_s() - t1;
    const v4f_spec_stats sp1 = v4f_session_spec_stats(w->s);
    r->drafted = sp1.drafted - sp0.drafted;
    r->accepted = sp1.accepted - sp0.accepted;
    r->paused = sp1.paused - sp0.paused;
out:
    v4f_tok_ids_free(&all);
    v4f_sampler_free(smp);
    return st;
}
