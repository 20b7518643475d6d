/*
 * cmd_chat.c - `v4flash chat`: interactive multi-turn REPL. The session's
 * KV cache lives across turns: each turn prefills only the new suffix
 * (end of the previous assistant turn, <｜User｜>, the message,
 * <｜Assistant｜> and <think> or </think>), the way ds4's REPL does, so
 * earlier reasoning stays in context.
 *
 * Commands: /help, /reset, /think, /nothink, /think-max (changes the prompt
 * prefix: resets), /stats, /save [NAME], /load NAME, /quit (or Ctrl-D).
 * Ctrl-C stops the current generation (or prefill) and returns to the
 * prompt.
 *
 * Named sessions (issue 6): --session NAME keeps the conversation in the
 * disk KV store (--kv-dir, default $V4F_KV_DIR, $XDG_CACHE_HOME/v4flash/kv
 * or ~/.cache/v4flash/kv) as a pinned session-NAME.v4kv snapshot: the KV
 * cache, the token ids, the next-token logits and the chat flags. Starting
 * with --session NAME restores it with zero recompute (printed, and shown
 * by /stats); a clean exit (/quit, Ctrl-D) saves it. /save [NAME] saves a
 * snapshot under NAME (default: the current session; without one it asks
 * for a NAME) and /load NAME
 * restores one, both without recomputing; /load first saves the live
 * conversation to its session and then makes NAME the current session. An argument containing '/' is a
 * plain file instead: /save writes the token ids as text and /load
 * re-prefills them (portable across models and builds).
 *
 * Input is read line by line from stdin (a pipe works too, for scripts).
 * Exit codes: 0 ok, 1 runtime failure, 2 usage error; SIGTERM / SIGHUP save
 * the session like /quit and exit with 128 + the signal.
 */
#include <errno.h>
#include <signal.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef V4F_HAVE_LIBEDIT
#include <editline/readline.h>
#endif

#include "args.h"
#include "backend_opts.h"
#include "cli.h"
#include "cli_model.h"
#include "engine/kvcache.h"
#include "generate.h"
#include "tokenizer/chat.h"

#define DEFAULT_SYSTEM "You are a helpful assistant"
#define SAVE_MAGIC "v4flash-chat-tokens 1"

static volatile sig_atomic_t g_stop;
static void on_sigint(int sig) {
    (void)sig;
    g_stop = 1;
}
/* SIGTERM / SIGHUP (a closed terminal, a service stop): the reply stops,
 * the session is saved as on /quit, and chat exits with 128 + the signal */
static volatile sig_atomic_t g_quit;
static void on_sigterm(int sig) {
    g_quit = sig;
    g_stop = 1;
}

typedef struct chat_state {
    v4f_cli_model cm;
    v4f_tok *tok;
    v4f_session *s;
    v4f_sampler *smp;
    float *logits;
    v4f_tok_ids hist; /* tokens in the KV */
    bool think, think_max, open_turn; /* open_turn: an assistant turn awaits its EOS */
    uint64_t n_ctx, n_max;
    const char *system;
    v4f_reason_mode rmode;
    v4f_gen_result last;
    uint64_t last_reused, turns;
    /* named sessions / disk KV store */
    const char *session;   /* --session NAME (or the last /load NAME) or NULL */
    char session_buf[V4F_KVSTORE_SESSION_NAME_MAX + 1];
    const char *kv_dir;
    uint64_t kv_budget;
    v4f_kvstore *kvs;      /* opened on first use */
    v4f_kv_ident kvid;
    bool compact;
    uint64_t restored;     /* tokens restored from a snapshot, 0 recomputed */
    double restore_s;
} chat_state;

#define APP_VERSION 1 /* the chat flags blob stored in a session snapshot */

static void chat_reset(chat_state *c) {
    v4f_session_reset(c->s);
    c->hist.n = 0;
    c->open_turn = false;
}

/* Text of a later turn's prompt suffix (the first turn goes through the
 * official renderer). Caller frees. */
static char *turn_text(const chat_state *c, const char *msg) {
    size_t cap = strlen(msg) + 256;
    char *t = v4f_xmalloc(cap);
    t[0] = 0;
    if (c->open_turn) strcat(t, V4F_CHAT_EOS);
    strcat(t, V4F_CHAT_USER);
    strcat(t, msg);
    strcat(t, V4F_CHAT_ASSISTANT);
    strcat(t, c->think ? V4F_CHAT_THINK : V4F_CHAT_THINK_END);
    return t;
}

static int do_turn(chat_state *c, const char *msg) {
    v4f_err err = {0};
    char *text = NULL;
    if (c->hist.n == 0) {
        size_t tl = 0;
        bool use_max = c->think && c->think_max && c->n_ctx >= V4F_CHAT_THINK_MAX_MIN_CTX;
        if (v4f_gen_render_prompt(c->system, msg, c->think, use_max, &text, &tl, &err)) {
            fprintf(stderr, "prompt: %s\n", err.msg);
            return 1;
        }
    } else {
        text = turn_text(c, msg);
    }
    v4f_tok_ids ids = {0};
    v4f_status st = v4f_tok_encode(c->tok, text, strlen(text), V4F_TOK_ENC_SPECIAL, &ids, &err);
    free(text);
    if (st) {
        fprintf(stderr, "tokenize: %s\n", err.msg);
        return 1;
    }
    if (v4f_session_pos(c->s) + ids.n + 1 >= c->n_ctx) {
        fprintf(stderr, "(context full: %u + %zu tokens > %llu; /reset to start over)\n",
                v4f_session_pos(c->s), ids.n, (unsigned long long)c->n_ctx);
        v4f_tok_ids_free(&ids);
        return 0;
    }
    c->last_reused = c->hist.n;
    v4f_gen g = {.s = c->s, .smp = c->smp, .tok = c->tok, .logits = c->logits,
                 .rmode = c->rmode, .stop = &g_stop, .history = &c->hist};
    v4f_gen_result r = {0};
    g_stop = 0;
    st = v4f_gen_prefill(&g, ids.ids, ids.n, &r, &err);
    v4f_tok_ids_free(&ids);
    if (st == V4F_STATUS_INTERRUPTED) {
        fprintf(stderr, "(interrupted during prefill: the context is now partial; /reset "
                        "recommended)\n");
        c->open_turn = false;
        return 0;
    }
    if (st) {
        fprintf(stderr, "prefill: %s\n", err.msg);
        return 1;
    }
    /* one position stays free for the EOS that closes the turn */
    st = v4f_gen_generate(&g, c->n_max, c->n_ctx - v4f_session_pos(c->s) - 1, c->think, &r, &err);
    fputc('\n', stdout);
    fflush(stdout);
    if (st) {
        fprintf(stderr, "decode: %s\n", err.msg);
        return 1;
    }
    /* the sampled final token (EOS, or the last one at the budget) is not
     * in the KV; the next turn starts with EOS to close this one */
    c->open_turn = true;
    c->last = r;
    c->turns++;
    if (!strcmp(r.stop_reason, "interrupted")) fprintf(stderr, "(stopped)\n");
    if (!strcmp(r.stop_reason, "context_full"))
        fprintf(stderr, "(context full at %llu tokens: the reply was cut; /reset to start over, or a larger --ctx)\n",
                (unsigned long long)c->n_ctx);
    return 0;
}

/* Open the KV store on first use (err printed). */
static bool kv_open(chat_state *c) {
    if (c->kvs) return true;
    v4f_kvstore_opts ko;
    v4f_kvstore_opts_default(&ko);
    ko.budget_bytes = c->kv_budget;
    ko.create = true;
    v4f_err err = {0};
    if (v4f_kvstore_open_opts(c->kv_dir, &ko, &c->kvs, &err)) {
        fprintf(stderr, "%s (continuing without the disk KV store)\n", err.msg);
        c->kvs = NULL;
        return false;
    }
    v4f_kvcache_ident(c->cm.m, (uint32_t)c->n_ctx, c->compact, false, &c->kvid);
    return true;
}

static bool is_path(const char *arg) { return strchr(arg, '/') != NULL; }

static void snap_save(chat_state *c, const char *name) {
    if (!kv_open(c)) return;
    if (c->hist.n == 0) {
        fprintf(stderr, "(session %s: nothing to save yet)\n", name);
        return;
    }
    uint8_t app[4] = {APP_VERSION, c->think, c->think_max, c->open_turn};
    v4f_err err = {0};
    double ts = 0;
    uint64_t bytes = 0;
    if (v4f_kvcache_save(c->kvs, &c->kvid, c->s, c->hist.ids, (uint32_t)c->hist.n, c->logits,
                         c->cm.m->cfg.n_vocab, app, sizeof app, V4F_KV_REASON_SESSION, name, NULL,
                         &ts, &bytes, &err))
        fprintf(stderr, "(session %s: save failed: %s)\n", name, err.msg);
    else
        fprintf(stderr, "(session %s saved: %zu tokens, %.2f MiB in %.1f ms)\n", name, c->hist.n,
                (double)bytes / 1048576.0, 1e3 * ts);
}

/* Restore a named session; false if it does not exist or failed (then the
 * conversation is empty). */
static bool snap_load(chat_state *c, const char *name, bool quiet_missing) {
    if (!kv_open(c)) return false;
    uint8_t app[4] = {0};
    v4f_snapshot_info info;
    int32_t *ids = NULL;
    uint32_t n = 0;
    v4f_err err = {0};
    double t0 = v4f_time_s();
    v4f_status st = v4f_kvcache_load_session(c->kvs, &c->kvid, false, name, c->s, c->logits,
                                             c->cm.m->cfg.n_vocab, app, sizeof app, &info, &ids,
                                             &n, &err);
    double dt = v4f_time_s() - t0;
    if (st) {
        c->hist.n = 0;
        c->open_turn = false;
        if (st == V4F_STATUS_NOT_FOUND) {
            if (!quiet_missing) fprintf(stderr, "(no saved session %s)\n", name);
        } else {
            fprintf(stderr, "warning: cannot restore session %s: %s; starting a new "
                            "conversation\n", name, err.msg);
        }
        return false;
    }
    free(c->hist.ids);
    c->hist.ids = ids;
    c->hist.n = c->hist.cap = n;
    if (info.app_bytes >= 4 && app[0] == APP_VERSION) {
        c->think = app[1] != 0;
        c->think_max = app[2] != 0;
        c->open_turn = app[3] != 0;
    } else {
        c->open_turn = n > 0;
    }
    c->restored = n;
    c->restore_s = dt;
    fprintf(stderr, "(restored session %s: %u tokens, 0 recomputed, %.1f ms)\n", name, n, 1e3 * dt);
    return true;
}

/* /load NAME: a session that is not on disk, or that another process
 * keeps, leaves the conversation as it is. Otherwise the live conversation
 * is saved to its own session first (unless NAME is that session: then
 * /load goes back to its saved state), NAME is claimed and restored, and
 * later saves go to NAME, also when it could not be restored (so the
 * previous session is never overwritten by what follows). */
static void load_named(chat_state *c, const char *name) {
    char file[V4F_KVSTORE_NAME_MAX];
    v4f_err err = {0};
    if (v4f_kvstore_session_file(name, file, &err)) {
        fprintf(stderr, "/load: %s\n", err.msg);
        return;
    }
    if (!kv_open(c)) return;
    const bool same = c->session && !strcmp(c->session, name);
    if (!v4f_kvstore_has(c->kvs, file)) {
        fprintf(stderr, "(no saved session %s; the conversation goes on)\n", name);
        return;
    }
    if (v4f_kvstore_session_busy(c->kvs, name)) { /* never the session this process keeps */
        fprintf(stderr, "(session %s is open in another v4flash process; not loaded)\n", name);
        return;
    }
    if (c->session && c->hist.n && !same) snap_save(c, c->session);
    if (v4f_kvstore_session_claim(c->kvs, name, &err) == V4F_STATUS_BUSY) {
        fprintf(stderr, "(%s; not loaded)\n", err.msg);
        return;
    }
    if (!snap_load(c, name, false)) chat_reset(c);
    snprintf(c->session_buf, sizeof c->session_buf, "%s", name); /* validated: <= 64 characters */
    c->session = c->session_buf;
}

/* /save [NAME]: not over a session that another process keeps. */
static void save_named(chat_state *c, const char *name) {
    if (!kv_open(c)) return;
    if (v4f_kvstore_session_busy(c->kvs, name)) { /* never the session this process keeps */
        fprintf(stderr, "(session %s is open in another v4flash process; not saved)\n", name);
        return;
    }
    snap_save(c, name);
}

static void print_stats(const chat_state *c) {
    const v4f_gen_result *r = &c->last;
    if (c->restored)
        fprintf(stderr, "session %s: restored %llu tokens from disk (0 recomputed, %.1f ms)\n",
                c->session ? c->session : "-", (unsigned long long)c->restored, 1e3 * c->restore_s);
    fprintf(stderr,
            "turns %llu, position %u of %llu, kv %.1f MiB, last turn: reused %llu, prefilled %llu "
            "(%.1f t/s), generated %llu (%.2f t/s, %s)\n",
            (unsigned long long)c->turns, v4f_session_pos(c->s), (unsigned long long)c->n_ctx,
            (double)v4f_session_kv_bytes(c->s) / (1 << 20), (unsigned long long)c->last_reused,
            (unsigned long long)r->n_prefill, r->t_prefill > 0 ? r->n_prefill / r->t_prefill : 0.0,
            (unsigned long long)r->n_gen, r->t_gen > 0 ? r->n_gen / r->t_gen : 0.0,
            r->stop_reason ? r->stop_reason : "-");
    v4f_cli_mtp_report(c->s, "v4flash chat");
}

static void do_save(const chat_state *c, const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "/save: %s: %s\n", path, strerror(errno));
        return;
    }
    fprintf(f, "%s %d %d %d\n", SAVE_MAGIC, c->think, c->think_max, c->open_turn);
    for (size_t i = 0; i < c->hist.n; i++) fprintf(f, "%d%c", c->hist.ids[i], i % 16 == 15 ? '\n' : ' ');
    fputc('\n', f);
    if (fclose(f) != 0) fprintf(stderr, "/save: %s: write failed\n", path);
    else fprintf(stderr, "(saved %zu tokens to %s)\n", c->hist.n, path);
}

static void do_load(chat_state *c, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "/load: %s: %s\n", path, strerror(errno));
        return;
    }
    char magic[64];
    int think = 0, tmax = 0, open = 0;
    if (fscanf(f, "v4flash-chat-tokens %63s %d %d %d", magic, &think, &tmax, &open) != 4 ||
        strcmp(magic, "1")) {
        fprintf(stderr, "/load: %s: not a v4flash chat file\n", path);
        fclose(f);
        return;
    }
    v4f_tok_ids ids = {0};
    int v;
    const uint32_t nv = v4f_tok_n_vocab(c->tok);
    while (fscanf(f, "%d", &v) == 1) {
        if (v < 0 || (uint32_t)v >= nv || ids.n + 2 >= c->n_ctx) {
            fprintf(stderr, "/load: %s: bad token %d or too long for --ctx\n", path, v);
            fclose(f);
            free(ids.ids);
            return;
        }
        if (ids.n == ids.cap) ids.ids = v4f_xrealloc(ids.ids, (ids.cap = ids.cap ? 2 * ids.cap : 256) * sizeof(int32_t));
        ids.ids[ids.n++] = v;
    }
    fclose(f);
    chat_reset(c);
    c->think = think;
    c->think_max = tmax;
    v4f_err err = {0};
    v4f_gen g = {.s = c->s, .smp = c->smp, .tok = c->tok, .logits = c->logits,
                 .rmode = c->rmode, .stop = &g_stop, .history = &c->hist};
    v4f_gen_result r = {0};
    g_stop = 0;
    if (ids.n && v4f_gen_prefill(&g, ids.ids, ids.n, &r, &err)) {
        fprintf(stderr, "/load: %s (session reset)\n", err.msg);
        chat_reset(c);
    } else {
        c->open_turn = open;
        fprintf(stderr, "(loaded %zu tokens from %s: %.1f t/s)\n", ids.n, path,
                r.t_prefill > 0 ? ids.n / r.t_prefill : 0.0);
    }
    free(ids.ids);
}

static void help(void) {
    fprintf(stderr, "commands: /help /reset /think on|off|max /nothink /think-max /stats /save [NAME|PATH] "
                    "/load NAME|PATH /quit   (Ctrl-C stops a reply, Ctrl-D exits; a PATH contains "
                    "'/')\n");
}

/* One input line. On a terminal with libedit: line editing (arrows,
 * Ctrl-A/E/K/W...) and history (up/down), kept across runs in
 * ~/.cache/v4flash/chat_history. Otherwise a plain fgets (pipes, scripts).
 * Returns 1 with a line, 0 at end of input, -1 when Ctrl-C interrupted the
 * read (the caller prompts again). */
#ifdef V4F_HAVE_LIBEDIT
static char g_hist_path[4096];

static void history_open(void) {
    const char *home = getenv("HOME");
    if (!home || !*home) return;
    snprintf(g_hist_path, sizeof g_hist_path, "%s/.cache/v4flash/chat_history", home);
    read_history(g_hist_path); /* absent on first use: fine */
}

static void history_close(void) {
    if (!g_hist_path[0]) return;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", g_hist_path);
    for (char *p = dir + 1; *p; p++) /* mkdir -p of the parent */
        if (*p == '/') {
            *p = 0;
            mkdir(dir, 0700);
            *p = '/';
        }
    stifle_history(1000);
    write_history(g_hist_path);
}
#endif

static int read_line(bool tty, const char *prompt, char *line, size_t cap) {
#ifdef V4F_HAVE_LIBEDIT
    if (tty) {
        char *s = readline(prompt);
        if (!s) return g_stop ? -1 : 0;
        snprintf(line, cap, "%s", s);
        if (*s) add_history(s);
        free(s);
        return 1;
    }
#endif
    if (tty) {
        fputs(prompt, stdout);
        fflush(stdout);
    }
    if (!fgets(line, (int)cap, stdin)) {
        if (g_stop && !feof(stdin)) {
            clearerr(stdin);
            return -1;
        }
        return 0;
    }
    return 1;
}

int cmd_chat(int argc, char **argv) {
    const char *model = "ds4flash.gguf", *synthetic = NULL, *system = DEFAULT_SYSTEM, *mtp = NULL;
    const char *reasoning = "auto", *precision = "default";
    bool no_think = false, think_max = false, seed_given = false;
    int64_t n_max = 50000, n_ctx = 32768;
    float temp = 1.0f, top_p = 1.0f, min_p = 0.05f;
    int top_k = 0, threads = 0;
    uint64_t seed = 0, synth_seed = 1;
    const char *session = NULL, *kv_dir = NULL, *kv_page_dir = NULL;
    int64_t kv_space_mb = 0;
    char kv_default[1024];
    v4f_kvcache_default_dir(kv_default, sizeof kv_default);
    v4f_cli_backend be = V4F_CLI_BACKEND_DEFAULT;
    const v4f_opt opts[] = {
        {"model", 'm', V4F_ARG_STR, &model, 0, 0, "FILE", "model GGUF (default ./ds4flash.gguf)", NULL},
        {"synthetic", 0, V4F_ARG_STR, &synthetic, 0, 0, "PRESET[:L]", "random-weight model built in memory", NULL},
        {"synth-seed", 0, V4F_ARG_U64, &synth_seed, 0, 0, "S", "weights seed for --synthetic (1)", NULL},
        V4F_CLI_MTP_OPT(mtp),
        {"system", 's', V4F_ARG_STR, &system, 0, 0, "TEXT", "system prompt (\"" DEFAULT_SYSTEM "\"; \"\" for none)", NULL},
        {"no-think", 0, V4F_ARG_FLAG, &no_think, 0, 0, NULL, "start without reasoning (/think toggles)", NULL},
        {"think-max", 0, V4F_ARG_FLAG, &think_max, 0, 0, NULL, "maximum reasoning effort (needs --ctx >= 393216)", NULL},
        {"tokens", 'n', V4F_ARG_INT, &n_max, 1, 1 << 30, "N", "maximum tokens per reply (50000)", NULL},
        {"ctx", 'c', V4F_ARG_INT, &n_ctx, 16, 1048576, "N", "context size (32768, max 1048576)", NULL},
        V4F_CLI_SAMPLING_OPTS("", temp, top_k, top_p, min_p),
        {"seed", 0, V4F_ARG_U64, &seed, 0, 0, "S", "sampling seed (default: time-based)", &seed_given},
        {"threads", 't', V4F_ARG_INT32, &threads, 0, 4096, "N", "CPU threads (default: all)", NULL},
        {"precision", 0, V4F_ARG_STR, &precision, 0, 0, "MODE", "default | ref", NULL},
        {"reasoning", 0, V4F_ARG_STR, &reasoning, 0, 0, "MODE", "auto | dim | plain | stderr | hide", NULL},
        {"session", 0, V4F_ARG_STR, &session, 0, 0, "NAME", "resume / keep the named conversation in the disk KV store", NULL},
        {"kv-dir", 0, V4F_ARG_STR, &kv_dir, 0, 0, "DIR", "disk KV store ($V4F_KV_DIR, else ~/.cache/v4flash/kv)", NULL},
        {"kv-page-dir", 0, V4F_ARG_STR, &kv_page_dir, 0, 0, "DIR", "page old compressed KV rows to an unlinked file in DIR (contexts beyond RAM)", NULL},
        {"kv-space-mb", 0, V4F_ARG_INT, &kv_space_mb, 0, 1LL << 40, "N", "disk KV store budget in MiB (0 = unlimited)", NULL},
        V4F_CLI_BACKEND_OPTS(be),
        {0},
    };
    const v4f_args_spec spec = {
        .cmd = "v4flash chat",
        .synopsis = "[-m MODEL | --synthetic PRESET] [options]",
        .about = "Interactive multi-turn chat; the KV cache is kept between turns.",
        .opts = opts,
        .epilog = "REPL commands: /help /reset /think /nothink /think-max /stats /save [NAME|PATH] /load NAME|PATH /quit",
    };
    int rc = v4f_args_parse(&spec, argc, argv, NULL, NULL);
    if (rc == V4F_ARGS_HELP) return 0;
    if (rc) return rc;
    v4f_session_opts bso = {0};
    if (v4f_cli_backend_apply(&be, &spec, &bso)) return 2;
    if (no_think && think_max) return v4f_args_fail(&spec, "--no-think and --think-max are exclusive");
    chat_state c;
    memset(&c, 0, sizeof c);
    if (!v4f_reason_mode_parse(reasoning, &c.rmode))
        return v4f_args_fail(&spec, "--reasoning: unknown mode '%s'", reasoning);
    if (strcmp(precision, "default") && strcmp(precision, "ref"))
        return v4f_args_fail(&spec, "--precision must be default or ref");
    if (!seed_given) seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    if (think_max && n_ctx < V4F_CHAT_THINK_MAX_MIN_CTX)
        fprintf(stderr, "note: --think-max: the max-effort prefix needs --ctx >= %d; thinking "
                        "normally\n", V4F_CHAT_THINK_MAX_MIN_CTX);
    rc = v4f_cli_model_open("v4flash chat", model, synthetic, mtp, synth_seed, threads, &c.cm);
    if (rc) return rc;
    v4f_err err = {0};
    rc = 1;
    if (v4f_tok_from_gguf(c.cm.m->gguf, &c.tok, &err)) {
        fprintf(stderr, "v4flash chat: tokenizer: %s\n", err.msg);
        goto out;
    }
    v4f_session_opts so = bso; /* the backend choice */
    so.n_ctx = (uint32_t)n_ctx;
    so.n_threads = threads;
    so.precision = strcmp(precision, "ref") ? V4F_PRECISION_DEFAULT : V4F_PRECISION_REF;
    so.kv_page_dir = kv_page_dir;
    v4f_cli_mtp_opts(mtp, &so);
    if (v4f_session_new(c.cm.m, &so, &c.s, &err)) {
        fprintf(stderr, "v4flash chat: session: %s\n", err.msg);
        goto out;
    }
    v4f_cli_backend_report(c.s);
    v4f_cli_mtp_note(c.s, mtp, "v4flash chat");
    v4f_sampler_params sp = {.temperature = temp, .top_k = top_k, .top_p = top_p, .min_p = min_p,
                             .seed = seed};
    if (v4f_sampler_new(&sp, c.cm.m->cfg.n_vocab, &c.smp, &err)) {
        fprintf(stderr, "v4flash chat: %s\n", err.msg);
        rc = 2;
        goto out;
    }
    c.logits = v4f_xmalloc((size_t)c.cm.m->cfg.n_vocab * sizeof *c.logits);
    c.think = !no_think;
    c.think_max = think_max;
    c.n_ctx = (uint64_t)n_ctx;
    c.n_max = (uint64_t)n_max;
    c.system = system && *system ? system : NULL;
    c.session = session;
    c.kv_dir = kv_dir ? kv_dir : kv_default;
    c.kv_budget = (uint64_t)kv_space_mb << 20;
    c.compact = so.precision != V4F_PRECISION_REF;
    if (session) {
        char fname[V4F_KVSTORE_NAME_MAX];
        if (v4f_kvstore_session_file(session, fname, &err)) {
            fprintf(stderr, "v4flash chat: --session: %s\n", err.msg);
            rc = 2;
            goto out;
        }
        /* one process keeps a session at a time (else each overwrites the
         * other's saves); a store that cannot take the claim cannot save
         * either and says so then */
        if (kv_open(&c)) {
            const v4f_status cs = v4f_kvstore_session_claim(c.kvs, session, &err);
            if (cs == V4F_STATUS_BUSY) {
                fprintf(stderr, "v4flash chat: --session: %s\n", err.msg);
                goto out;
            }
            if (cs) fprintf(stderr, "warning: %s\n", err.msg);
        }
        if (!snap_load(&c, session, true)) fprintf(stderr, "(new session %s in %s)\n", session, c.kv_dir);
    }

    struct sigaction sa, old, old_term, old_hup;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint; /* no SA_RESTART: Ctrl-C interrupts the line read too */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old);
    sa.sa_handler = on_sigterm;
    sigaction(SIGTERM, &sa, &old_term);
    sigaction(SIGHUP, &sa, &old_hup);
    const bool tty = isatty(0);
    if (tty) fprintf(stderr, "v4flash chat: %s. /help for commands.\n", c.cm.desc);
    char line[1 << 16];
    rc = 0;
#ifdef V4F_HAVE_LIBEDIT
    if (tty) history_open();
#endif
    for (;;) {
        if (g_quit) break;
        g_stop = 0;
        int got = read_line(tty, c.think ? "v4f> " : "v4f (no think)> ", line, sizeof line);
        if (g_quit) break;
        if (got < 0) {
            fputs("\n(Ctrl-D or /quit to exit)\n", stderr);
            continue;
        }
        if (got == 0) break;
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0]) continue;
        if (line[0] == '/') {
            char *arg = strchr(line, ' ');
            if (arg) {
                *arg++ = 0;
                while (*arg == ' ') arg++;
            }
            if (!strcmp(line, "/quit") || !strcmp(line, "/exit")) break;
            else if (!strcmp(line, "/help")) help();
            else if (!strcmp(line, "/reset")) {
                chat_reset(&c);
                fprintf(stderr, "(new conversation)\n");
            } else if (!strcmp(line, "/think") && arg && !strcmp(arg, "off")) {
                c.think = false;
                fprintf(stderr, "(thinking off)\n");
            } else if (!strcmp(line, "/think") && arg && !strcmp(arg, "max")) {
                c.think = c.think_max = true;
                chat_reset(&c);
                fprintf(stderr, "(think-max%s: new conversation)\n",
                        c.n_ctx >= V4F_CHAT_THINK_MAX_MIN_CTX ? "" : " without prefix, --ctx < 393216");
            } else if (!strcmp(line, "/think") && (!arg || !*arg || !strcmp(arg, "on"))) {
                c.think = true;
                fprintf(stderr, "(thinking on)\n");
            } else if (!strcmp(line, "/nothink")) {
                c.think = false;
                fprintf(stderr, "(thinking off)\n");
            } else if (!strcmp(line, "/think-max")) {
                c.think = c.think_max = true;
                chat_reset(&c);
                fprintf(stderr, "(think-max%s: new conversation)\n",
                        c.n_ctx >= V4F_CHAT_THINK_MAX_MIN_CTX ? "" : " without prefix, --ctx < 393216");
            } else if (!strcmp(line, "/stats")) print_stats(&c);
            else if (!strcmp(line, "/save") && arg && *arg && is_path(arg)) do_save(&c, arg);
            else if (!strcmp(line, "/load") && arg && *arg && is_path(arg)) do_load(&c, arg);
            else if (!strcmp(line, "/save") && ((arg && *arg) || c.session))
                save_named(&c, arg && *arg ? arg : c.session);
            else if (!strcmp(line, "/load") && arg && *arg)
                load_named(&c, arg);
            else if (!strcmp(line, "/save"))
                fprintf(stderr, "/save: this conversation has no session yet: /save NAME (or a PATH with '/')\n");
            else if (!strcmp(line, "/load"))
                fprintf(stderr, "/load: which one? /load NAME (or a PATH with '/')\n");
            else {
                fprintf(stderr, "unknown command %s\n", line);
                help();
            }
            continue;
        }
        if (do_turn(&c, line)) {
            rc = 1;
            break;
        }
    }
#ifdef V4F_HAVE_LIBEDIT
    if (tty) history_close();
#endif
    if (rc == 0 && c.session) snap_save(&c, c.session);
    sigaction(SIGINT, &old, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGHUP, &old_hup, NULL);
    if (g_quit) {
        fprintf(stderr, "(%s: exiting)\n", g_quit == SIGHUP ? "hangup" : "terminated");
        if (rc == 0) rc = 128 + g_quit;
    }
out:
    v4f_kvstore_close(c.kvs);
    free(c.logits);
    free(c.hist.ids);
    v4f_sampler_free(c.smp);
    v4f_session_free(c.s);
    v4f_tok_free(c.tok);
    v4f_cli_model_close(&c.cm);
    return rc;
}
