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
#include "cli.h"
#include "cli_model.h"
#include "core/threadpool.h"
#include "model/forward.h"
#include "generate.h"
#include "sampler/sampler.h"
#include "stats_json.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

#define DEFAULT_SYSTEM "You are a helpful assistant"
#define THINK_MAX_MIN_CTX 393216 /* ds4 adds the max-effort prefix only from here */

static volatile sig_atomic_t g_stop;
static void on_sigint(int sig) {
    (void)sig;
    g_stop = 1;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *b = v4f_xmalloc(cap);
    size_t got;
    while ((got = fread(b + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (n + 1 == cap) b = v4f_xrealloc(b, cap *= 2);
    }
    fclose(f);
    b[n] = 0;
    *len = n;
    return b;
}

int cmd_run(int argc, char **argv) {
    const char *model = "ds4flash.gguf", *synthetic = NULL, *prompt = NULL, *prompt_file = NULL;
    const char *system = DEFAULT_SYSTEM, *stats_json = NULL, *reasoning = "auto";
    const char *precision = "default";
    bool no_think = false, think_max = false, raw = false, quiet = false, seed_given = false;
    int64_t n_max = 50000, n_ctx = 32768;
    float temp = 1.0f, top_p = 1.0f, min_p = 0.05f;
    int top_k = 0, threads = 0;
    uint64_t seed = 0, synth_seed = 1;
    const v4f_opt opts[] = {
        {"model", 'm', V4F_ARG_STR, &model, 0, 0, "FILE", "model GGUF (default ./ds4flash.gguf)", NULL},
        {"synthetic", 0, V4F_ARG_STR, &synthetic, 0, 0, "PRESET[:L]", "random-weight model built in memory (tiny | small | full-q2 | full-q4)", NULL},
        {"synth-seed", 0, V4F_ARG_U64, &synth_seed, 0, 0, "S", "weights seed for --synthetic (1)", NULL},
        {"prompt", 'p', V4F_ARG_STR, &prompt, 0, 0, "TEXT", "the user prompt", NULL},
        {"prompt-file", 'f', V4F_ARG_STR, &prompt_file, 0, 0, "FILE", "read the prompt from FILE", NULL},
        {"system", 's', V4F_ARG_STR, &system, 0, 0, "TEXT", "system prompt (\"" DEFAULT_SYSTEM "\"; \"\" for none)", NULL},
        {"no-think", 0, V4F_ARG_FLAG, &no_think, 0, 0, NULL, "answer without a reasoning phase", NULL},
        {"think-max", 0, V4F_ARG_FLAG, &think_max, 0, 0, NULL, "maximum reasoning effort (prefix used when --ctx >= 393216)", NULL},
        {"raw", 0, V4F_ARG_FLAG, &raw, 0, 0, NULL, "send the prompt text as is (no chat template; special tokens recognised)", NULL},
        {"tokens", 'n', V4F_ARG_INT, &n_max, 0, 1 << 30, "N", "maximum generated tokens (50000, clamped to the context)", NULL},
        {"ctx", 'c', V4F_ARG_INT, &n_ctx, 16, 1048576, "N", "context size to allocate (32768, max 1048576)", NULL},
        {"temp", 0, V4F_ARG_FLOAT, &temp, 0, 100, "T", "temperature (1; 0 = greedy)", NULL},
        {"top-k", 0, V4F_ARG_INT32, &top_k, 0, 1 << 30, "K", "top-k (0 = off)", NULL},
        {"top-p", 0, V4F_ARG_FLOAT, &top_p, 1e-6, 1, "P", "nucleus top-p (1 = off)", NULL},
        {"min-p", 0, V4F_ARG_FLOAT, &min_p, 0, 1, "P", "min-p relative to the top token (0.05)", NULL},
        {"seed", 0, V4F_ARG_U64, &seed, 0, 0, "S", "sampling seed (default: time-based)", &seed_given},
        {"threads", 't', V4F_ARG_INT32, &threads, 0, 4096, "N", "CPU threads (default: all)", NULL},
        {"precision", 0, V4F_ARG_STR, &precision, 0, 0, "MODE", "default | ref (float32 KV)", NULL},
        {"reasoning", 0, V4F_ARG_STR, &reasoning, 0, 0, "MODE", "auto | dim | plain | stderr | hide (auto: dim on a TTY, else plain)", NULL},
        {"stats-json", 0, V4F_ARG_STR, &stats_json, 0, 0, "FILE", "write run statistics as one JSON object", NULL},
        {"quiet", 'q', V4F_ARG_FLAG, &quiet, 0, 0, NULL, "no speed line on stderr", NULL},
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
        ptext = read_file(prompt_file, &plen);
        if (!ptext) {
            fprintf(stderr, "v4flash run: cannot read %s: %s\n", prompt_file, strerror(errno));
            return 1;
        }
    } else {
        ptext = v4f_xstrdup(prompt);
    }

    v4f_cli_model cm;
    rc = v4f_cli_model_open("v4flash run", model, synthetic, synth_seed, threads, &cm);
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
    v4f_tok_ids ids = {0};
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
        bool use_max = think_max && n_ctx >= THINK_MAX_MIN_CTX;
        if (think_max && !use_max && !quiet)
            fprintf(stderr, "v4flash run: --think-max: max-effort prefix needs --ctx >= %d; "
                            "thinking normally\n", THINK_MAX_MIN_CTX);
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
    v4f_session_opts so = {.n_ctx = (uint32_t)n_ctx, .n_threads = threads,
                           .precision = strcmp(precision, "ref") ? V4F_PRECISION_DEFAULT : V4F_PRECISION_REF};
    if (v4f_session_new(cm.m, &so, &s, &err)) {
        fprintf(stderr, "v4flash run: session: %s\n", err.msg);
        goto out;
    }
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

    v4f_gen g = {.s = s, .smp = smp, .tok = tok, .logits = logits, .rmode = rmode, .stop = &g_stop};
    v4f_gen_result res = {0};
    v4f_status st = v4f_gen_prefill(&g, ids.ids, ids.n, &res, &err);
    if (st == V4F_STATUS_INTERRUPTED) {
        res.stop_reason = "interrupted";
    } else if (st) {
        fprintf(stderr, "v4flash run: prefill: %s\n", err.msg);
        goto restore;
    } else {
        uint64_t budget = (uint64_t)n_ctx - v4f_session_pos(s);
        if ((uint64_t)n_max < budget) budget = (uint64_t)n_max;
        if (v4f_gen_generate(&g, budget, think, &res, &err)) {
            fprintf(stderr, "\nv4flash run: decode: %s\n", err.msg);
            goto restore;
        }
        fputc('\n', stdout);
        fflush(stdout);
    }
    const uint64_t n_prefilled = res.n_prefill, n_gen = res.n_gen;
    const double t_prefill = res.t_prefill, t_gen = res.t_gen, t_first = res.t_first;
    const char *stop_reason = res.stop_reason;
    double prefill_tps = t_prefill > 0 ? (double)n_prefilled / t_prefill : 0;
    double decode_tps = t_gen > 0 ? (double)n_gen / t_gen : 0;
    if (!quiet)
        fprintf(stderr, "prefill: %.2f t/s (%llu tokens), generation: %.2f t/s (%llu tokens, %s)\n",
                prefill_tps, (unsigned long long)n_prefilled, decode_tps,
                (unsigned long long)n_gen, stop_reason);
    if (stats_json) {
        v4f_run_stats rs = {
            .load_s = cm.load_s, .prompt_tokens = ids.n, .prefill_tokens_computed = n_prefilled,
            .prefill_tokens_reused = 0, .prefill_s = t_prefill, .prefill_tps = prefill_tps,
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
    free(logits);
    free(rendered);
    free(ptext);
    v4f_sampler_free(smp);
    v4f_session_free(s);
    v4f_tok_free(tok);
    v4f_cli_model_close(&cm);
    return rc;
}
