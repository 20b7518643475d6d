/*
 * test_cli_run.c - end-to-end tests of `v4flash run` and `v4flash bench` on
 * the tiny-q2 fixture and the synthetic tiny preset (needs V4F_BIN, set by
 * `make test`): exit codes, greedy / seeded determinism, EOS/-n stopping,
 * and the --stats-json fields and their consistency.
 */
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvstore/kvstore.h"
#include "model/forward.h"
#include "model/forward_cuda.h"
#include "model/model.h"
#include "../test.h"
#include "golden_cmp.h"


/* Run "BIN args", capture stdout (and stderr when err) into out
 * (NUL-terminated); exit status. */
static int run_capture_ex(const char *args, bool err, char *out, size_t cap) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s %s %s", test_bin(), args, err ? "2>&1" : "2>/dev/null");
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = 0, got;
    while (out && n + 1 < cap && (got = fread(out + n, 1, cap - 1 - n, p)) > 0) n += got;
    if (out) out[n] = 0;
    else {
        char sink[4096];
        while (fread(sink, 1, sizeof sink, p) > 0) {}
    }
    int rc = pclose(p);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -2;
}
static int run_capture(const char *args, char *out, size_t cap) { return run_capture_ex(args, false, out, cap); }

/* The exit code of `v4flash` with printf-formatted arguments (output not kept). */
__attribute__((format(printf, 1, 2))) static int run_f(const char *fmt, ...) {
    char args[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    return run_capture(args, NULL, 0);
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

/* Write text to path (a chat script); false if it cannot be written. */
static bool write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return false;
    const bool ok = fputs(text, f) >= 0;
    return fclose(f) == 0 && ok;
}

/* numeric value of "key": in a flat JSON object (or -1 when absent) */
static double json_num(const char *js, const char *key) {
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *p = strstr(js, pat);
    if (!p) return -1;
    return strtod(p + strlen(pat), NULL);
}


TEST(cli_run_tiny_fixture_stats) {
    SKIP_NO_BIN();
    char args[1024], js_path[512];
    snprintf(js_path, sizeof js_path, "%s/run-stats.json", test_tmp_dir());
    snprintf(args, sizeof args,
             "run -m %s -p 'Hello there' -n 8 --temp 0 -q --stats-json %s",
             test_fixture_path("model/tiny-q2.gguf"), js_path);
    static char out1[65536], out2[65536];
    CHECK_EQ_INT(run_capture(args, out1, sizeof out1), 0);
    CHECK_EQ_INT(run_capture(args, out2, sizeof out2), 0);
    CHECK_STR(out1, out2); /* greedy is deterministic */
    char *js = slurp(js_path);
    REQUIRE(js);
    const char *keys[] = {"load_s", "prompt_tokens", "prefill_tokens_computed",
                          "prefill_tokens_reused", "prefill_tps", "gen_tokens", "decode_tps",
                          "kv_bytes", "peak_rss_bytes", "backend"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        char pat[64];
        snprintf(pat, sizeof pat, "\"%s\": ", keys[i]);
        CHECK_MSG(strstr(js, pat) != NULL, "stats JSON lacks %s: %s", keys[i], js);
    }
    CHECK(strstr(js, "\"backend\": \"cpu\"") != NULL);
    double prompt = json_num(js, "prompt_tokens"), comp = json_num(js, "prefill_tokens_computed");
    double reused = json_num(js, "prefill_tokens_reused"), gen = json_num(js, "gen_tokens");
    CHECK(prompt > 5);
    CHECK_NEAR(prompt, comp + reused, 0);
    CHECK(gen >= 1 && gen <= 8);
    CHECK(json_num(js, "prefill_tps") > 0);
    CHECK(json_num(js, "decode_tps") > 0);
    CHECK(json_num(js, "kv_bytes") > 0);
    CHECK(json_num(js, "peak_rss_bytes") > 1e6);
    CHECK(json_num(js, "load_s") >= 0);
}

/* json_num's companion for string fields: "key": "value" present */
static bool json_has_str(const char *js, const char *key, const char *val) {
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\": \"%s\"", key, val);
    return strstr(js, pat) != NULL;
}

/* A reply cut by the context says so (context_full), one cut by -n says
 * max_tokens; greedy (pipelined) and sampled loops alike. The generated
 * tokens fill the context exactly. */
TEST(cli_run_stop_reasons) {
    SKIP_NO_BIN();
    const char *m = test_fixture_path("model/tiny-q2.gguf");
    const char *cases[][3] = {{"-n 500 -c 48 --temp 0", "context_full", "48"},
                              {"-n 500 -c 48 --temp 0.8 --seed 3", "context_full", "48"},
                              {"-n 3 -c 48 --temp 0", "max_tokens", "0"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char js_path[512];
        snprintf(js_path, sizeof js_path, "%s/run-stop-%zu.json", test_tmp_dir(), i);
        CHECK_EQ_INT(run_f("run -m %s -p 'Hello there' %s -q --no-think --stats-json %s", m, cases[i][0], js_path), 0);
        char *js = slurp(js_path);
        REQUIRE(js);
        CHECK_MSG(json_has_str(js, "stop_reason", cases[i][1]), "case %zu: %s", i, js);
        const double prompt = json_num(js, "prompt_tokens"), gen = json_num(js, "gen_tokens");
        if (atoi(cases[i][2]) > 0)
            CHECK_NEAR(prompt + gen, atof(cases[i][2]), 0);
        else
            CHECK_NEAR(gen, 3, 0);
    }
}

TEST(cli_run_seeded_sampling) {
    SKIP_NO_BIN();
    char a[1024], b[1024];
    const char *m = test_fixture_path("model/tiny-q2.gguf");
    static char o1[65536], o2[65536], o3[65536];
    snprintf(a, sizeof a, "run -m %s -p Hi -n 12 --temp 1.5 --min-p 0 --seed 7 -q --no-think", m);
    snprintf(b, sizeof b, "run -m %s -p Hi -n 12 --temp 1.5 --min-p 0 --seed 8 -q --no-think", m);
    CHECK_EQ_INT(run_capture(a, o1, sizeof o1), 0);
    CHECK_EQ_INT(run_capture(a, o2, sizeof o2), 0);
    CHECK_EQ_INT(run_capture(b, o3, sizeof o3), 0);
    CHECK_STR(o1, o2);
    CHECK(strcmp(o1, o3) != 0);
}

TEST(cli_run_raw_and_synthetic) {
    SKIP_NO_BIN();
    static char o[65536];
    char args[1024];
    snprintf(args, sizeof args, "run -m %s --raw -p 'int main' -n 4 --temp 0 -q",
             test_fixture_path("model/tiny-q2.gguf"));
    CHECK_EQ_INT(run_capture(args, o, sizeof o), 0);
    CHECK_EQ_INT(run_capture("run --synthetic tiny:2 -p Hello -n 4 --temp 0 -q", o, sizeof o), 0);
}

TEST(cli_run_errors) {
    SKIP_NO_BIN();
    const char *m = test_fixture_path("model/tiny-q2.gguf");
    CHECK_EQ_INT(run_capture("run --help", NULL, 0), 0);
    CHECK_EQ_INT(run_capture("run -m /nonexistent/model.gguf -p x", NULL, 0), 1);
    /* a valid GGUF, not a model */
    CHECK_EQ_INT(run_f("run -m %s -p x", test_fixture_path("model/tiny-q2.golden.gguf")), 1);
    CHECK_EQ_INT(run_f("run -m %s -p x --bogus", m), 2);
    CHECK_EQ_INT(run_f("run -m %s -p x --temp abc", m), 2);
    CHECK_EQ_INT(run_f("run -m %s -p x --ctx 2000000", m), 2);
    CHECK_EQ_INT(run_f("run -m %s", m), 2); /* no prompt */
    CHECK_EQ_INT(run_f("run -m %s -p x --no-think --think-max", m), 2);
    CHECK_EQ_INT(run_capture("run --synthetic nope -p x", NULL, 0), 2);
    CHECK_EQ_INT(run_f("run -m %s -p x --ctx 16", m), 1); /* prompt longer than the context */
}

/* --mtp: the MTP file (or a synthetic block) opens with the model; MTP
 * drafts apply on a GPU, so on the CPU a note says so (greedy or sampled)
 * and the reply is the one without --mtp. */
TEST(cli_run_mtp) {
    SKIP_NO_BIN();
    char args[1024];
    static char a[65536], b[65536];
    const char *m = test_fixture_path("model/tiny-q2.gguf"), *mtp = test_fixture_path("model/tiny-q2.mtp.gguf");
    snprintf(args, sizeof args, "run -m %s --mtp %s --cpu -p 'Hello there' -n 8 --temp 0", m, mtp);
    CHECK_EQ_INT(run_capture_ex(args, true, a, sizeof a), 0);
    CHECK_MSG(strstr(a, "MTP drafts are used on a GPU only; this session runs on the CPU"), "no CPU note: %s", a);
    snprintf(args, sizeof args, "run -m %s --mtp %s --cpu -p 'Hello there' -n 8 --temp 0 -q", m, mtp);
    CHECK_EQ_INT(run_capture(args, a, sizeof a), 0);
    snprintf(args, sizeof args, "run -m %s --cpu -p 'Hello there' -n 8 --temp 0 -q", m);
    CHECK_EQ_INT(run_capture(args, b, sizeof b), 0);
    CHECK_STR(a, b);
    snprintf(args, sizeof args, "run -m %s --mtp %s --cpu -p x -n 2 --temp 1", m, mtp);
    CHECK_EQ_INT(run_capture_ex(args, true, a, sizeof a), 0);
    CHECK_MSG(strstr(a, "MTP drafts are used on a GPU only") != NULL, "no CPU note when sampling: %s", a);
    CHECK_EQ_INT(run_capture("run --synthetic tiny:2 --mtp synthetic --cpu -p Hello -n 4 --temp 0 -q", a, sizeof a), 0);
    /* errors: a missing file, the synthetic block without a synthetic model,
     * an MTP file of other dimensions, --draft-accept without --mtp */
    CHECK_EQ_INT(run_f("run -m %s --mtp /nonexistent/mtp.gguf -p x", m), 1);
    CHECK_EQ_INT(run_f("run -m %s --mtp synthetic -p x", m), 2);
    CHECK_EQ_INT(run_f("run --synthetic small:2 --mtp %s -p x", mtp), 1);
    CHECK_EQ_INT(run_capture("bench --synthetic tiny --ctx-max 32 --draft-accept 0.5", NULL, 0), 2);
    CHECK_EQ_INT(run_capture("bench --synthetic tiny --ctx-max 32 --mtp synthetic --draft-accept 2", NULL, 0), 2);
}

TEST(cli_bench_tiny) {
    SKIP_NO_BIN();
    char args[1024], csv[512];
    snprintf(csv, sizeof csv, "%s/bench.csv", test_tmp_dir());
    snprintf(args, sizeof args,
             "bench --synthetic tiny --ctx-start 32 --ctx-max 96 --step-incr 32 --gen 4 "
             "--no-membw --csv %s",
             csv);
    CHECK_EQ_INT(run_capture(args, NULL, 0), 0);
    char *c = slurp(csv);
    REQUIRE(c);
    const char *hdr = "ctx_tokens,prefill_tokens,prefill_tps,gen_tokens,gen_tps";
    CHECK(!strncmp(c, hdr, strlen(hdr)));
    int lines = 0;
    for (char *p = c; *p; p++) lines += *p == '\n';
    CHECK_EQ_INT(lines, 4); /* header + frontiers 32, 64, 96 */
    CHECK_EQ_INT(run_capture("bench --membw --membw-bytes 16M", NULL, 0), 0);
    CHECK_EQ_INT(run_capture("bench --synthetic tiny --step-incr 8 --step-mul 2", NULL, 0), 2);
    CHECK_EQ_INT(run_capture("bench -m /nonexistent.gguf --no-membw", NULL, 0), 1);
    /* --evals: one row per token count after the last frontier */
    static char out[16384];
    CHECK_EQ_INT(run_capture("bench --synthetic tiny --ctx-start 32 --ctx-max 32 --gen 2 --no-membw --evals 1,3,40",
                             out, sizeof out), 0);
    const char *ev = strstr(out, "evals at context 32");
    CHECK(ev != NULL);
    if (ev) {
        CHECK(strstr(ev, "      1 tokens:") && strstr(ev, "      3 tokens:") && strstr(ev, "     40 tokens:"));
    }
    /* --expert-stats: one summary line of the routed reads */
    CHECK_EQ_INT(run_capture("bench --synthetic tiny --ctx-start 32 --ctx-max 32 --gen 2 --no-membw --cpu --expert-stats 5",
                             out, sizeof out), 0);
    CHECK(strstr(out, "experts of 5 greedy decode steps at context 32:") != NULL);
    CHECK_EQ_INT(run_capture("bench --synthetic tiny --ctx-max 32 --expert-stats 0", NULL, 0), 2);
    /* --temp: the frontier decodes drawn on the host; a negative one refused */
    CHECK_EQ_INT(run_capture("bench --synthetic tiny --ctx-start 32 --ctx-max 32 --gen 4 --no-membw --temp 0.8", out,
                             sizeof out), 0);
    CHECK(strstr(out, "decode: drawn on the host at temperature 0.80") && strstr(out, "        32        32"));
    CHECK_EQ_INT(run_capture("bench --synthetic tiny --ctx-max 32 --temp -1", NULL, 0), 2);
    CHECK_EQ_INT(run_capture("bench --synthetic tiny --ctx-max 32 --evals 2,,3", NULL, 0), 2);
    CHECK_EQ_INT(run_capture("bench --synthetic tiny --ctx-max 32 --evals 0", NULL, 0), 2);
    CHECK_EQ_INT(run_capture("bench --synthetic tiny --ctx-max 32 --evals 2x", NULL, 0), 2);
    CHECK_EQ_INT(run_capture("bench --synthetic tiny --fake-ctx 64 --evals 2", NULL, 0), 2);
}

TEST(cli_chat_script) {
    SKIP_NO_BIN();
    char script[512], save[512];
    snprintf(script, sizeof script, "%s/chat-in.txt", test_tmp_dir());
    snprintf(save, sizeof save, "%s/chat-save.txt", test_tmp_dir());
    FILE *f = fopen(script, "w");
    REQUIRE(f);
    fprintf(f, "Hello\n/stats\nSecond turn\n/save %s\n/nothink\nThird\n/load %s\n/reset\n/bogus\n"
               "After reset\n/quit\n",
            save, save);
    fclose(f);
    CHECK_EQ_INT(
        run_f("chat -m %s -n 6 --temp 0 --reasoning hide < %s", test_fixture_path("model/tiny-q2.gguf"), script), 0);
    char *s = slurp(save);
    REQUIRE(s);
    CHECK(!strncmp(s, "v4flash-chat-tokens 1 ", 22));
    /* token 0 (BOS) first, EOS (1) closing turn 1 before turn 2's <｜User｜> */
    CHECK(!strncmp(s + strcspn(s, "\n") + 1, "0 ", 2));
    CHECK(strstr(s, " 1 ") != NULL);
    CHECK_EQ_INT(run_capture("chat --help", NULL, 0), 0);
    CHECK_EQ_INT(run_capture("chat -m /nonexistent.gguf", NULL, 0), 1);
    CHECK_EQ_INT(run_capture("chat --temp x", NULL, 0), 2);
}

/* /save and /load without an argument and no session say what they need
 * (they were "unknown command"); the conversation goes on. */
TEST(cli_chat_save_load_without_name) {
    SKIP_NO_BIN();
    char script[512], args[2048];
    snprintf(script, sizeof script, "%s/chat-noname.txt", test_tmp_dir());
    REQUIRE(write_text(script, "/save\n/load\nHello\n/stats\n/quit\n"));
    snprintf(args, sizeof args, "chat -m %s -n 3 --temp 0 --reasoning hide --kv-dir %s/kv-noname < %s",
             test_fixture_path("model/tiny-q2.gguf"), test_tmp_dir(), script);
    static char out[16384];
    const int rc = run_capture_ex(args, true, out, sizeof out);
    CHECK_MSG(rc == 0, "status %d: %s", rc, out);
    CHECK_MSG(strstr(out, "/save: this conversation has no session yet") != NULL, "%s", out);
    CHECK_MSG(strstr(out, "/load: which one?") != NULL, "%s", out);
    CHECK_MSG(strstr(out, "unknown command") == NULL, "%s", out);
    CHECK_MSG(strstr(out, "turns 1,") != NULL, "%s", out); /* the turn after them ran */
}

/* Saved sessions are not lost to a mistyped /load (it used to reset the
 * conversation and then save the new one over the current session), and a
 * session another process keeps is refused at --session, /load and /save. */
TEST(cli_chat_sessions_not_overwritten) {
    SKIP_NO_BIN();
    char dir[512], script[512], args[2048];
    static char out[16384];
    snprintf(dir, sizeof dir, "%s/kv-chat-sessions", test_tmp_dir());
    snprintf(script, sizeof script, "%s/chat-sessions.txt", test_tmp_dir());
    const char *m = test_fixture_path("model/tiny-q2.gguf");
    char rm[600];
    snprintf(rm, sizeof rm, "rm -rf '%s'", dir);
    REQUIRE(system(rm) == 0);
    const char *scripts[] = {"First message\n/quit\n", "/load typo\nOther\n/quit\n"};
    int saved[2] = {0, 0};
    for (int i = 0; i < 2; i++) {
        REQUIRE(write_text(script, scripts[i]));
        snprintf(args, sizeof args, "chat -m %s -n 3 --temp 0 --reasoning hide --kv-dir %s --session A < %s", m, dir,
                 script);
        CHECK_EQ_INT(run_capture_ex(args, true, out, sizeof out), 0);
        const char *p = strstr(out, "(session A saved: ");
        REQUIRE(p);
        saved[i] = atoi(p + strlen("(session A saved: "));
        if (i == 1) CHECK_MSG(strstr(out, "(no saved session typo; the conversation goes on)") != NULL, "%s", out);
    }
    CHECK_MSG(saved[1] > saved[0], "session A: %d tokens after the second chat, %d before", saved[1], saved[0]);
    /* another holder of A (this process, through its own store) */
    v4f_kvstore *kvs = NULL;
    v4f_err err = {0};
    REQUIRE(v4f_kvstore_open(dir, 0, &kvs, &err) == V4F_OK);
    REQUIRE(v4f_kvstore_session_claim(kvs, "A", &err) == V4F_OK);
    snprintf(args, sizeof args, "chat -m %s -n 3 --temp 0 --kv-dir %s --session A < /dev/null", m, dir);
    CHECK_EQ_INT(run_capture_ex(args, true, out, sizeof out), 1);
    CHECK_MSG(strstr(out, "session A is open in another v4flash process") != NULL, "%s", out);
    REQUIRE(write_text(script, "Hi\n/save A\n/load A\n/quit\n"));
    snprintf(args, sizeof args, "chat -m %s -n 3 --temp 0 --reasoning hide --kv-dir %s < %s", m, dir, script);
    CHECK_EQ_INT(run_capture_ex(args, true, out, sizeof out), 0);
    CHECK_MSG(strstr(out, "(session A is open in another v4flash process; not saved)") != NULL, "%s", out);
    CHECK_MSG(strstr(out, "(session A is open in another v4flash process; not loaded)") != NULL, "%s", out);
    v4f_kvstore_close(kvs);
    /* released: A restores with what the second chat saved */
    snprintf(args, sizeof args, "chat -m %s -n 3 --temp 0 --kv-dir %s --session A < /dev/null", m, dir);
    CHECK_EQ_INT(run_capture_ex(args, true, out, sizeof out), 0);
    char want[64];
    snprintf(want, sizeof want, "(restored session A: %d tokens", saved[1]);
    CHECK_MSG(strstr(out, want) != NULL, "%s", out);
}

/* Append what fd delivers to out[*n..cap) until needle appears (NULL: until
 * EOF), EOF, or timeout_s seconds without data; whether needle (or EOF) came. */
static bool read_until(int fd, char *out, size_t *n, size_t cap, const char *needle, int timeout_s) {
    for (;;) {
        if (needle && strstr(out, needle)) return true;
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (*n + 1 >= cap || poll(&pf, 1, timeout_s * 1000) <= 0) return false;
        const ssize_t got = read(fd, out + *n, cap - 1 - *n);
        if (got <= 0) return needle == NULL;
        *n += (size_t)got;
        out[*n] = 0;
    }
}

/* SIGTERM (a service stop; SIGHUP likewise) while chat waits for input:
 * the session is saved as on /quit, and the exit status is 128 + 15. The
 * child runs with pipes for stdin and stderr (no shell, no sleeps: the
 * signal goes after /stats answered, i.e. at the prompt). */
TEST(cli_chat_sigterm_saves_session) {
    SKIP_NO_BIN();
    char kvdir[512];
    snprintf(kvdir, sizeof kvdir, "%s/kv-term", test_tmp_dir());
    int in[2], er[2];
    REQUIRE(pipe(in) == 0 && pipe(er) == 0);
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(er[1], 2);
        if (!freopen("/dev/null", "w", stdout)) _exit(126);
        close(in[1]);
        close(er[0]);
        execl(test_bin(), test_bin(), "chat", "-m", test_fixture_path("model/tiny-q2.gguf"), "-n", "3", "--temp", "0",
              "--reasoning", "hide", "--kv-dir", kvdir, "--session", "S", (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(er[1]);
    static char out[16384];
    size_t n = 0;
    out[0] = 0;
    /* the startup line; a turn and /stats, whose line says the turn is over
     * (chat at its prompt); then SIGTERM, and what chat says until it exits */
    bool ok = read_until(er[0], out, &n, sizeof out, "new session S", 120);
    ok = ok && write(in[1], "Hello there\n/stats\n", 19) == 19 && read_until(er[0], out, &n, sizeof out, "turns 1,", 120);
    CHECK_MSG(ok, "%s", out);
    kill(pid, ok ? SIGTERM : SIGKILL);
    if (ok) CHECK(read_until(er[0], out, &n, sizeof out, NULL, 120));
    int st = 0;
    REQUIRE(waitpid(pid, &st, 0) == pid);
    close(in[1]);
    close(er[0]);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 143, "status %d: %s", st, out);
    CHECK_MSG(strstr(out, "(session S saved: ") != NULL && strstr(out, "(terminated: exiting)") != NULL, "%s", out);
    char p[600];
    snprintf(p, sizeof p, "%s/session-S.v4kv", kvdir);
    CHECK(access(p, R_OK) == 0);
}

/* run, tokenize, logits and detokenize agree: the greedy first token of
 * `run --raw` is the argmax of `logits` over the ids `tokenize` gives. */
TEST(cli_run_matches_logits_argmax) {
    SKIP_NO_BIN();
    const char *m = test_fixture_path("model/tiny-q2.gguf");
    const char *text = "int main(void) { return 0; }";
    char args[2048], ids_path[512], out_path[512];
    static char ids[8192], run_out[4096], detok[4096];
    snprintf(args, sizeof args, "tokenize -m %s --text '%s'", m, text);
    REQUIRE(run_capture(args, ids, sizeof ids) == 0);
    snprintf(ids_path, sizeof ids_path, "%s/ids.txt", test_tmp_dir());
    snprintf(out_path, sizeof out_path, "%s/logits.f32", test_tmp_dir());
    FILE *f = fopen(ids_path, "w");
    REQUIRE(f);
    fputs(ids, f);
    fclose(f);
    int n_ids = 0;
    for (char *p = strtok(ids, " \n"); p; p = strtok(NULL, " \n")) n_ids++;
    REQUIRE(n_ids > 3);
    snprintf(args, sizeof args, "logits -m %s --tokens-file %s --out %s", m, ids_path, out_path);
    REQUIRE(run_capture(args, NULL, 0) == 0);
    f = fopen(out_path, "rb");
    REQUIRE(f);
    fseek(f, 0, SEEK_END);
    long bytes = ftell(f);
    const int n_vocab = 640;
    REQUIRE(bytes == (long)n_ids * n_vocab * 4);
    static float row[640];
    fseek(f, (long)(n_ids - 1) * n_vocab * 4, SEEK_SET);
    REQUIRE(fread(row, 4, n_vocab, f) == (size_t)n_vocab);
    fclose(f);
    int best = 0;
    for (int i = 1; i < n_vocab; i++)
        if (row[i] > row[best]) best = i;
    snprintf(args, sizeof args, "detokenize -m %s --ids %d", m, best);
    REQUIRE(run_capture(args, detok, sizeof detok) == 0);
    snprintf(args, sizeof args, "run -m %s --raw -p '%s' -n 1 --temp 0 -q", m, text);
    REQUIRE(run_capture(args, run_out, sizeof run_out) == 0);
    /* run prints the token's text then a newline (nothing for a special token) */
    size_t rl = strlen(run_out);
    REQUIRE(rl >= 1 && run_out[rl - 1] == '\n');
    run_out[rl - 1] = 0;
    if (best > 1 && best < 634) CHECK_STR(run_out, detok);
}

static long file_bytes(const char *path, char *buf, long cap) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    long n = (long)fread(buf, 1, (size_t)cap, f);
    fclose(f);
    return n;
}

/* `--synthetic tiny` (in memory) and `synth --preset tiny --seed 1` (file)
 * are the same model: logits agree bit for bit. */
TEST(cli_synthetic_equals_synth_file) {
    SKIP_NO_BIN();
    char args[2048], model[512], ids[512], a[512], b[512];
    snprintf(model, sizeof model, "%s/syn-tiny.gguf", test_tmp_dir());
    snprintf(ids, sizeof ids, "%s/syn-ids.txt", test_tmp_dir());
    snprintf(a, sizeof a, "%s/syn-a.f32", test_tmp_dir());
    snprintf(b, sizeof b, "%s/syn-b.f32", test_tmp_dir());
    FILE *f = fopen(ids, "w");
    REQUIRE(f);
    fputs("0 634 300 301 302 635 636\n", f);
    fclose(f);
    snprintf(args, sizeof args, "synth %s --preset tiny --seed 1 -q", model);
    REQUIRE(run_capture(args, NULL, 0) == 0);
    snprintf(args, sizeof args, "logits -m %s --tokens-file %s --out %s", model, ids, a);
    REQUIRE(run_capture(args, NULL, 0) == 0);
    snprintf(args, sizeof args, "logits --synthetic tiny --tokens-file %s --out %s", ids, b);
    REQUIRE(run_capture(args, NULL, 0) == 0);
    static char ba[7 * 640 * 4 + 16], bb[7 * 640 * 4 + 16];
    long na = file_bytes(a, ba, sizeof ba), nb = file_bytes(b, bb, sizeof bb);
    CHECK_EQ_INT(na, 7 * 640 * 4);
    CHECK_EQ_INT(nb, na);
    CHECK(na > 0 && !memcmp(ba, bb, (size_t)na));
    /* --chunk 3: the 7 tokens in passes of 3, 3, 1, within the chunked-prefill bound */
    snprintf(args, sizeof args, "logits --synthetic tiny --tokens-file %s --out %s --chunk 3", ids, b);
    REQUIRE(run_capture(args, NULL, 0) == 0);
    nb = file_bytes(b, bb, sizeof bb);
    CHECK_EQ_INT(nb, na);
    if (nb == na && na > 0) {
        double d = golden_max_abs((const float *)bb, (const float *)ba, (size_t)na / 4);
        CHECK_MSG(d < GOLDEN_LAST_ROW_ABS, "--chunk 3 logits differ by %g", d);
    }
    CHECK_EQ_INT(run_f("logits --synthetic tiny --tokens-file %s --out %s --chunk 0", ids, b), 2);
}

/* Backend selection: bad names and contradictions are usage errors; asking
 * for CUDA where it is not built (or no GPU is visible) is a clean runtime
 * error, and --cpu always works. */
TEST(cli_backend_flags) {
    SKIP_NO_BIN();
    const char *m = test_fixture_path("model/tiny-q2.gguf");
    CHECK_EQ_INT(run_f("run -m %s -p x -n 2 --backend bogus", m), 2);
    CHECK_EQ_INT(run_f("run -m %s -p x -n 2 --cpu --cuda", m), 2);
    CHECK_EQ_INT(run_f("run -m %s -p x -n 2 --cpu --temp 0 -q", m), 0);
    if (!v4f_gpu_available()) {
        CHECK_EQ_INT(run_f("run -m %s -p x -n 2 --cuda -q", m), 1);
    }
}

TEST(session_cuda_without_gpu) {
    if (v4f_gpu_available()) return; /* covered by tests/cuda/test_cuda_model */
    v4f_model *m = NULL;
    v4f_err err = {0};
    CHECK(v4f_model_open(test_fixture_path("model/tiny-q2.gguf"), NULL, &m, NULL, &err) == V4F_OK);
    if (!m) return;
    v4f_session_opts o = {.n_ctx = 64, .backend = V4F_BACKEND_CUDA};
    v4f_session *s = NULL;
    v4f_status st = v4f_session_new(m, &o, &s, &err);
    CHECK(st != V4F_OK && s == NULL);
    CHECK(strstr(err.msg, "CUDA") != NULL || strstr(err.msg, "cuda") != NULL);
    /* rewind is a GPU-session feature: the CPU session refuses it cleanly */
    o.backend = V4F_BACKEND_CPU;
    CHECK(v4f_session_new(m, &o, &s, &err) == V4F_OK);
    if (s) {
        CHECK(v4f_session_rewind(s, 0, &err) == V4F_STATUS_UNSUPPORTED);
        v4f_session_free(s);
    }
    v4f_model_close(m);
}

/* A synthetic image larger than the host's available memory is refused
 * before anything is allocated, with a message that names the way out
 * (the process would otherwise be killed part-way through building it).
 * Needs a host with less than the full-q4 image (153 GiB) available. */
TEST(cli_synthetic_too_large_for_host) {
    SKIP_NO_BIN();
    uint64_t avail = 0;
    if (!v4f_mem_available(&avail) || avail >= (uint64_t)160 << 30) {
        printf("    skip: MemAvailable unknown or >= 160 GiB\n");
        return;
    }
    static char out[8192];
    const int rc = run_capture_ex("bench --synthetic full-q4 --gen 1 --no-membw", true, out, sizeof out);
    CHECK_MSG(rc == 1, "status %d: %s", rc, out);
    CHECK_MSG(strstr(out, "needs 153.") && strstr(out, "v4flash synth OUT.gguf --preset full-q4"), "%s", out);
}
