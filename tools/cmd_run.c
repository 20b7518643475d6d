/*
 * cmd_run.c - `v4flash run -m MODEL -p PROMPT`: render the chat prompt
 * (system prompt, thinking on by default, --no-think, --think-max; --raw
 * skips the template), prefill it with a progress bar, then sample and
 * stream the reply to stdout until EOS, -n tokens or Ctrl-C.
 *
 * Reasoning (the text before </think> in thinking mode) is shown dimmed on
 * a TTY, plain when stdout is not a TTY, or sent to stderr / hidden with
 * --reasoning. Special tokens are never printed. The speed line
 * ("prefill: X t/s, generation: Y t/s") goes to stderr; --stats-json writes
 * the run's statistics.
 *
 * Disk KV cache (--kv-dir DIR, issue 6): the longest stored prefix of the
 * rendered prompt's tokens is restored (src/engine/kvcache.h) and only the
 * rest is prefilled (stats: prefill_tokens_reused); a checkpoint that fails
 * to restore is reported and skipped (plain prefill). Saves follow ds4's
 * policy (src/kvstore/kvpolicy.c): after a cold prefill of
 * --kv-min-tokens..30000 tokens (trimmed by 32 and aligned down to 2048, so
 * a re-tokenized continuation still hits), at every 10240-token frontier
 * crossed by the prefill or the generation, and the live session on exit. --kv-space-mb caps
 * the directory (eviction). The prompt must render to the same tokens (a
 * fixed --system and the same thinking mode) to hit.
 *
 * Exit codes: 0 ok (also after Ctrl-C), 1 runtime failure (missing or
 * invalid model, I/O), 2 usage error.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "backend_opts.h"
#include "cli.h"
#include "cli_model.h"
#include "core/threadpool.h"
#include "engine/kvcache.h"
#include "model/forward.h"
#include "generate.h"
#include "sampler/sampler.h"
#include "stats_json.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

#define DEFAULT_SYSTEM "You are a helpful assistant"

static volatile sig_atomic_t g_stop;
static void on_sigint(int sig) {
    (void)sig;
    g_stop = 1;
}

/* continued-frontier saves during generation (kv policy) */
typedef struct kv_run {
    v4f_kvstore *kvs;
    const v4f_kv_ident *id;
    const v4f_kv_policy *pol;
    v4f_session *s;
    const v4f_tok_ids *hist;
    const float *logits;
    uint32_t n_vocab, *last_saved;
    bool quiet;
} kv_run;

static void kv_after_decode(void *ud, uint32_t pos) {
    kv_run *k = ud;
    if (v4f_kv_policy_next_frontier(k->pol, pos - 1, pos) != pos || pos <= *k->last_saved) return;
    if (v4f_kvcache_has(k->kvs, k->id, k->hist->ids, pos)) { /* already stored */
        *k->last_saved = pos;
        return;
    }
    v4f_err err = {0};
    char nm[V4F_KVSTORE_NAME_MAX];
    double ts = 0;
    if (v4f_kvcache_save(k->kvs, k->id, k->s, k->hist->ids, (uint32_t)k->hist->n, k->logits,
                         k->n_vocab, NULL, 0, V4F_KV_REASON_CONTINUED, NULL, nm, &ts, NULL, &err)) {
        fprintf(stderr, "\nv4flash run: warning: kv cache save: %s\n", err.msg);
        return;
    }
    *k->last_saved = pos;
    if (!k->quiet) fprintf(stderr, "\nkv cache: saved %u tokens (continued) as %s in %.1f ms\n", pos, nm, 1e3 * ts);
}

static uint32_t kv_next_pause(void *ud, uint32_t pos) {
    const kv_run *k = ud;
    return v4f_kv_policy_next_frontier(k->pol, pos, UINT32_MAX);
}

int cmd_run(int argc, char **argv) {
    const char *model = "ds4flash.gguf", *synthetic = NULL, *prompt = NULL, *prompt_file = NULL, *mtp = NULL;
    const char *system = DEFAULT_SYSTEM, *stats_json = NULL, *reasoning = "auto";
    const char *precision = "default";
    bool no_think = false, think_max = false, raw = false, quiet = false, seed_given = false;
    int64_t n_max = 50000, n_ctx = 32768;
    float temp = 1.0f, top_p = 1.0f, min_p = 0.05f;
    int top_k = 0, threads = 0;
    uint64_t seed = 0, synth_seed = 1;
    const char *kv_dir = NULL, *kv_page_dir = NULL;
    int64_t kv_space_mb = 0, kv_min_tokens = 512, kv_interval = 10000, kv_align = 2048;
    bool kv_share_family = false;
    v4f_cli_backend be = V4F_CLI_BACKEND_DEFAULT;
    const v4f_opt opts[] = {
        {"model", 'm', V4F_ARG_STR, &model, 0, 0, "FILE", "model GGUF (default ./ds4flash.gguf)", NULL},
        {"synthetic", 0, V4F_ARG_STR, &synthetic, 0, 0, "PRESET[:L]", "random-weight model built in memory (tiny | small | full-q2 | full-q4)", NULL},
        {"synth-seed", 0, V4F_ARG_U64, &synth_seed, 0, 0, "S", "weights seed for --synthetic (1)", NULL},
        V4F_CLI_MTP_OPT(mtp),
        {"prompt", 'p', V4F_ARG_STR, &prompt, 0, 0, "TEXT", "the user prompt", NULL},
        {"prompt-file", 'f', V4F_ARG_STR, &prompt_file, 0, 0, "FILE", "read the prompt from FILE", NULL},
        {"system", 's', V4F_ARG_STR, &system, 0, 0, "TEXT", "system prompt (\"" DEFAULT_SYSTEM "\"; \"\" for none)", NULL},
        {"no-think", 0, V4F_ARG_FLAG, &no_think, 0, 0, NULL, "answer without a reasoning phase", NULL},
        {"think-max", 0, V4F_ARG_FLAG, &think_max, 0, 0, NULL, "maximum reasoning effort (prefix used when --ctx >= 393216)", NULL},
        {"raw", 0, V4F_ARG_FLAG, &raw, 0, 0, NULL, "send the prompt text as is (no chat template; special tokens recognised)", NULL},
        {"tokens", 'n', V4F_ARG_INT, &n_max, 0, 1 << 30, "N", "maximum generated tokens (50000, clamped to the context)", NULL},
        {"ctx", 'c', V4F_ARG_INT, &n_ctx, 16, 1048576, "N", "context size to allocate (32768, max 1048576)", NULL},
        V4F_CLI_SAMPLING_OPTS("", temp, top_k, top_p, min_p),
        {"seed", 0, V4F_ARG_U64, &seed, 0, 0, "S", "sampling seed (default: time-based)", &seed_given},
        {"threads", 't', V4F_ARG_INT32, &threads, 0, 4096, "N", "CPU threads (default: all)", NULL},
        {"precision", 0, V4F_ARG_STR, &precision, 0, 0, "MODE", "default | ref (float32 KV)", NULL},
        {"reasoning", 0, V4F_ARG_STR, &reasoning, 0, 0, "MODE", "auto | dim | plain | stderr | hide (auto: dim on a TTY, else plain)", NULL},
        {"stats-json", 0, V4F_ARG_STR, &stats_json, 0, 0, "FILE", "write run statistics as one JSON object", NULL},
        {"quiet", 'q', V4F_ARG_FLAG, &quiet, 0, 0, NULL, "no speed line on stderr", NULL},
        {"kv-dir", 0, V4F_ARG_STR, &kv_dir, 0, 0, "DIR", "disk KV cache: reuse the longest cached prompt prefix, save per policy", NULL},
        {"kv-page-dir", 0, V4F_ARG_STR, &kv_page_dir, 0, 0, "DIR", "page old compressed KV rows to an unlinked file in DIR (contexts beyond RAM)", NULL},
        {"kv-space-mb", 0, V4F_ARG_INT, &kv_space_mb, 0, 1LL << 40, "N", "disk KV cache budget in MiB (0 = unlimited)", NULL},
        {"kv-min-tokens", 0, V4F_ARG_INT, &kv_min_tokens, 1, 1 << 30, "N", "shortest prefix saved / reused (512)", NULL},
        {"kv-interval", 0, V4F_ARG_INT, &kv_interval, 0, 1 << 30, "N", "continued checkpoints every N tokens, rounded up to --kv-align (10000; 0 = off)", NULL},
        {"kv-align", 0, V4F_ARG_INT, &kv_align, 1, 1 << 30, "N", "checkpoint alignment (2048)", NULL},
        {"kv-share-family", 0, V4F_ARG_FLAG, &kv_share_family, 0, 0, NULL, "also reuse checkpoints of other quantizations of this model", NULL},
        V4F_CLI_BACKEND_OPTS(be),
        {0},
    };
    const v4f_args_spec spec = {
        .cmd = "v4flash run",
        .synopsis = "[-m MODEL | --synthetic PRESET] -p PROMPT [options]",
        .about = "Generate a reply to one prompt, streamed to stdout.",
        .opts = opts,
    };
    int rc = v4f_args_parse(&spec, argc, argv, NULL, NULL);
    if (rc == V4F_ARGS_HELP) return 0;
    if (rc) return rc;
    v4f_session_opts bso = {0};
    if (v4f_cli_backend_apply(&be, &spec, &bso)) return 2;
    if (!prompt == !prompt_file) return v4f_args_fail(&spec, "give exactly one of -p and --prompt-file");
    if (no_think && think_max) return v4f_args_fail(&spec, "--no-think and --think-max are exclusive");
    v4f_reason_mode rmode;
    if (!v4f_reason_mode_parse(reasoning, &rmode))
        return v4f_args_fail(&spec, "--reasoning: unknown mode '%s'", reasoning);
    if (strcmp(precision, "default") && strcmp(precision, "ref"))
        return v4f_args_fail(&spec, "--precision must be default or ref");
    if (!seed_given) seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);

    size_t plen = 0;
    char *ptext = NULL;
    if (prompt_file) {
        ptext = v4f_cli_read_file(prompt_file, &plen);
        if (!ptext) {
            fprintf(stderr, "v4flash run: cannot read %s: %s\n", prompt_file, strerror(errno));
            return 1;
        }
    } else {
        ptext = v4f_xstrdup(prompt);
    }

    v4f_cli_model cm;
    rc = v4f_cli_model_open("v4flash run", model, synthetic, mtp, synth_seed, threads, &cm);
    if (rc) {
        free(ptext);
        return rc;
    }
    v4f_err err = {0};
    v4f_str gname = {0};
    if (!quiet && !synthetic && v4f_gguf_get_str(cm.m->gguf, "general.name", &gname, NULL) == V4F_OK &&
        gname.len >= 10 && !memcmp(gname.ptr, "synthetic-", 10))
        fprintf(stderr, "note: %.*s is a synthetic model with random weights; its output is "
                        "meaningless text\n", (int)gname.len, gname.ptr);
    v4f_tok *tok = NULL;
    v4f_session *s = NULL;
    v4f_sampler *smp = NULL;
    char *rendered = NULL;
    float *logits = NULL;
    v4f_tok_ids ids = {0}, hist = {0};
    v4f_kvstore *kvs = NULL;
    v4f_kv_ident kvid;
    memset(&kvid, 0, sizeof kvid);
    v4f_kv_policy pol;
    v4f_kv_policy_default(&pol);
    pol.min_tokens = (uint32_t)kv_min_tokens;
    pol.continued_interval = (uint32_t)kv_interval;
    pol.boundary_align = (uint32_t)kv_align;
    uint32_t last_saved = 0;
    rc = 1;
    if (v4f_tok_from_gguf(cm.m->gguf, &tok, &err)) {
        fprintf(stderr, "v4flash run: tokenizer: %s\n", err.msg);
        goto out;
    }
    const bool think = !no_think && !raw;
    size_t rlen = 0;
    if (raw) {
        rendered = v4f_xstrdup(ptext);
        rlen = strlen(rendered);
    } else {
        bool use_max = think_max && n_ctx >= V4F_CHAT_THINK_MAX_MIN_CTX;
        if (think_max && !use_max && !quiet)
            fprintf(stderr, "v4flash run: --think-max: max-effort prefix needs --ctx >= %d; "
                            "thinking normally\n", V4F_CHAT_THINK_MAX_MIN_CTX);
        if (v4f_gen_render_prompt(system, ptext, think, use_max, &rendered, &rlen, &err)) {
            fprintf(stderr, "v4flash run: prompt: %s\n", err.msg);
            goto out;
        }
    }
    if (v4f_tok_encode(tok, rendered, rlen, V4F_TOK_ENC_SPECIAL, &ids, &err)) {
        fprintf(stderr, "v4flash run: tokenize: %s\n", err.msg);
        goto out;
    }
    if (ids.n == 0) {
        fprintf(stderr, "v4flash run: the prompt is empty\n");
        goto out;
    }
    if (ids.n >= (size_t)n_ctx) {
        fprintf(stderr, "v4flash run: the prompt has %zu tokens, more than --ctx %lld allows\n",
                ids.n, (long long)n_ctx);
        goto out;
    }
    v4f_session_opts so = bso; /* the backend choice */
    so.n_ctx = (uint32_t)n_ctx;
    so.n_threads = threads;
    so.precision = strcmp(precision, "ref") ? V4F_PRECISION_DEFAULT : V4F_PRECISION_REF;
    so.kv_page_dir = kv_page_dir;
    v4f_cli_mtp_opts(mtp, &so);
    if (v4f_session_new(cm.m, &so, &s, &err)) {
        fprintf(stderr, "v4flash run: session: %s\n", err.msg);
        goto out;
    }
    v4f_cli_backend_report(s);
    if (!quiet) v4f_cli_mtp_note(s, mtp, "v4flash run");
    v4f_sampler_params sp = {.temperature = temp, .top_k = top_k, .top_p = top_p, .min_p = min_p,
                             .seed = seed};
    if (v4f_sampler_new(&sp, cm.m->cfg.n_vocab, &smp, &err)) {
        fprintf(stderr, "v4flash run: %s\n", err.msg);
        rc = 2;
        goto out;
    }
    logits = v4f_xmalloc((size_t)cm.m->cfg.n_vocab * sizeof *logits);

    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old);
    g_stop = 0;

    v4f_gen g = {.s = s, .smp = smp, .tok = tok, .logits = logits, .rmode = rmode, .stop = &g_stop,
                 .history = &hist};
    v4f_gen_result res = {0};
    uint32_t reused = 0;
    double t_restore = 0;
    if (kv_dir) {
        v4f_err kerr = {0};
        v4f_kvstore_opts ko;
        v4f_kvstore_opts_default(&ko);
        ko.budget_bytes = (uint64_t)kv_space_mb << 20;
        ko.create = true;
        if (v4f_kvstore_open_opts(kv_dir, &ko, &kvs, &kerr)) {
            fprintf(stderr, "v4flash run: warning: --kv-dir %s: %s; running without the disk KV "
                            "cache\n", kv_dir, kerr.msg);
            kvs = NULL;
        } else {
            v4f_kvcache_ident(cm.m, (uint32_t)n_ctx, so.precision != V4F_PRECISION_REF, false, &kvid);
            v4f_kvcache_hit hit;
            if (v4f_kvcache_restore_prefix(kvs, &kvid, kv_share_family, pol.min_tokens, s, ids.ids,
                                           (uint32_t)ids.n, logits, cm.m->cfg.n_vocab, &hit, &kerr))
                fprintf(stderr, "v4flash run: warning: kv cache lookup: %s\n", kerr.msg);
            t_restore = hit.seconds;
            if (hit.n_tokens == ids.n && !hit.has_logits) {
                v4f_session_reset(s); /* a full hit needs the stored logits */
                hit.n_tokens = 0;
            }
            reused = hit.n_tokens;
            last_saved = reused;
            if (reused) {
                hist.ids = v4f_xmalloc(reused * sizeof *hist.ids);
                hist.cap = reused;
                memcpy(hist.ids, ids.ids, reused * sizeof *hist.ids);
                hist.n = reused;
                if (!quiet)
                    fprintf(stderr, "kv cache: reused %u of %zu prompt tokens from %s (%.1f ms, "
                                    "%.2f MiB)\n", reused, ids.n, hit.name, 1e3 * hit.seconds,
                            (double)hit.bytes / 1048576.0);
            }
        }
    }
    /* prefill the rest, stopping at the policy's save points */
    v4f_status st = V4F_OK;
    uint64_t n_computed = 0;
    double t_computed = 0;
    {
        size_t np = kvs ? v4f_kv_policy_plan_prefill(&pol, (uint32_t)ids.n, reused, NULL, 0) : 0;
        v4f_kv_save_point *pts = np ? v4f_xmalloc(np * sizeof *pts) : NULL;
        if (np) v4f_kv_policy_plan_prefill(&pol, (uint32_t)ids.n, reused, pts, np);
        uint32_t cur = reused;
        for (size_t i = 0; i <= np && !st; i++) {
            uint32_t end = i < np ? pts[i].pos : (uint32_t)ids.n;
            if (end > cur) {
                v4f_gen_result part = {0};
                st = v4f_gen_prefill(&g, ids.ids + cur, end - cur, &part, &err);
                n_computed += part.n_prefill;
                t_computed += part.t_prefill;
                cur += (uint32_t)part.n_prefill;
            }
            if (!st && i < np && cur == pts[i].pos && cur > last_saved &&
                !v4f_kvcache_has(kvs, &kvid, hist.ids, cur)) {
                v4f_err kerr = {0};
                char nm[V4F_KVSTORE_NAME_MAX];
                double ts = 0;
                if (v4f_kvcache_save(kvs, &kvid, s, hist.ids, (uint32_t)hist.n, logits,
                                     cm.m->cfg.n_vocab, NULL, 0, pts[i].reason, NULL, nm, &ts, NULL,
                                     &kerr))
                    fprintf(stderr, "v4flash run: warning: kv cache save: %s\n", kerr.msg);
                else {
                    last_saved = cur;
                    if (!quiet)
                        fprintf(stderr, "kv cache: saved %u tokens (%s) as %s in %.1f ms\n", cur,
                                v4f_kv_reason_name(pts[i].reason), nm, 1e3 * ts);
                }
            }
        }
        free(pts);
    }
    res.n_prefill = n_computed;
    res.t_prefill = t_computed + t_restore;
    if (st == V4F_STATUS_INTERRUPTED) {
        res.stop_reason = "interrupted";
    } else if (st) {
        fprintf(stderr, "v4flash run: prefill: %s\n", err.msg);
        goto restore;
    } else {
        kv_run kr = {kvs, &kvid, &pol, s, &hist, logits, cm.m->cfg.n_vocab, &last_saved, quiet};
        if (kvs) {
            g.after_decode = kv_after_decode;
            g.next_pause = kv_next_pause;
            g.after_decode_ud = &kr;
        }
        const uint64_t room = (uint64_t)n_ctx - v4f_session_pos(s);
        if (v4f_gen_generate(&g, (uint64_t)n_max, room, think, &res, &err)) {
            fprintf(stderr, "\nv4flash run: decode: %s\n", err.msg);
            goto restore;
        }
        fputc('\n', stdout);
        fflush(stdout);
    }
    if (kvs && !g_stop && v4f_kv_policy_save_live(&pol, v4f_session_pos(s)) &&
        v4f_session_pos(s) > last_saved && !v4f_kvcache_has(kvs, &kvid, hist.ids, (uint32_t)hist.n)) {
        v4f_err kerr = {0};
        char nm[V4F_KVSTORE_NAME_MAX];
        double ts = 0;
        if (v4f_kvcache_save(kvs, &kvid, s, hist.ids, (uint32_t)hist.n, logits, cm.m->cfg.n_vocab,
                             NULL, 0, V4F_KV_REASON_SHUTDOWN, NULL, nm, &ts, NULL, &kerr))
            fprintf(stderr, "v4flash run: warning: kv cache save: %s\n", kerr.msg);
        else if (!quiet)
            fprintf(stderr, "kv cache: saved the session (%zu tokens) as %s in %.1f ms\n", hist.n,
                    nm, 1e3 * ts);
    }
    const uint64_t n_prefilled = res.n_prefill, n_gen = res.n_gen;
    const double t_prefill = res.t_prefill, t_gen = res.t_gen, t_first = res.t_first;
    const char *stop_reason = res.stop_reason;
    double prefill_tps = t_computed > 0 ? (double)n_prefilled / t_computed : 0;
    double decode_tps = t_gen > 0 ? (double)n_gen / t_gen : 0;
    if (!quiet)
        fprintf(stderr, "prefill: %.2f t/s (%llu tokens), generation: %.2f t/s (%llu tokens, %s)\n",
                prefill_tps, (unsigned long long)n_prefilled, decode_tps,
                (unsigned long long)n_gen, stop_reason);
    if (!quiet) v4f_cli_mtp_report(s, "v4flash run");
    if (stats_json) {
        v4f_run_stats rs = {
            .load_s = cm.load_s, .prompt_tokens = ids.n, .prefill_tokens_computed = n_prefilled,
            .prefill_tokens_reused = reused, .prefill_s = t_prefill, .prefill_tps = prefill_tps,
            .gen_tokens = n_gen, .decode_s = t_gen, .decode_tps = decode_tps, .ttft_s = t_first,
            .kv_bytes = v4f_session_kv_bytes(s), .backend = "cpu",
            .model = synthetic ? synthetic : model, .n_ctx = (uint64_t)n_ctx,
            .n_threads = threads > 0 ? threads : v4f_cpu_count(), .stop_reason = stop_reason};
        if (v4f_stats_json_write(stats_json, &rs, &err)) {
            fprintf(stderr, "v4flash run: %s\n", err.msg);
            goto restore;
        }
    }
    rc = 0;
restore:
    sigaction(SIGINT, &old, NULL);
out:
    v4f_tok_ids_free(&ids);
    free(hist.ids);
    v4f_kvstore_close(kvs);
    free(logits);
    free(rendered);
    free(ptext);
    v4f_sampler_free(smp);
    v4f_session_free(s);
    v4f_tok_free(tok);
    v4f_cli_model_close(&cm);
    return rc;
}
