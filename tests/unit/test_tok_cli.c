/*
 * test_tok_cli.c - end-to-end tests of `v4flash tokenize`, `detokenize` and
 * `render` through the built binary ($V4F_BIN, set by `make test`; skipped
 * with a message when unset): fixture ids, byte-exact prompts for every chat
 * vector, exit codes for usage and model errors.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "../test.h"

static const char *bin(void) {
    if (!test_bin()) {
        static int said;
        if (!said++) printf("    skipped: V4F_BIN is not set (run via make test)\n");
    }
    return test_bin();
}

/* Run cmd, capture stdout (binary, NUL-terminated) into *out; returns the
 * exit status. */
static int run(const char *cmd, char **out, size_t *len) {
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    for (;;) {
        if (n + 1 >= cap) b = realloc(b, cap *= 2);
        size_t r = fread(b + n, 1, cap - n - 1, p);
        if (!r) break;
        n += r;
    }
    b[n] = '\0'; /* callers may use it as a string */
    int st = pclose(p);
    if (out) {
        *out = b;
        *len = n;
    } else {
        free(b);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(tok_cli_render_vectors) {
    const char *b = bin();
    if (!b) return;
    int n = 0, ok = 0;
    for (int i = 1; i <= 99 + 4; i++) {
        char in[128], want[128], cmd[1024];
        if (i <= 4) {
            snprintf(in, sizeof in, "%schat/test_input_%d.json", test_fixture_path(""), i);
            snprintf(want, sizeof want, "%schat/test_output_%d.txt", test_fixture_path(""), i);
        } else {
            snprintf(in, sizeof in, "%schat/gen_%02d.json", test_fixture_path(""), i - 4);
            snprintf(want, sizeof want, "%schat/gen_%02d.txt", test_fixture_path(""), i - 4);
        }
        size_t wl;
        char *w = test_read_file(want, &wl);
        if (!w) continue;
        n++;
        snprintf(cmd, sizeof cmd, "'%s' render --messages '%s' %s", b, in, i == 4 ? "--no-thinking" : "");
        char *out;
        size_t ol;
        int rc = run(cmd, &out, &ol);
        if (rc == 0 && ol == wl && memcmp(out, w, wl) == 0) ok++;
        else CHECK_MSG(0, "render %s: rc %d, %zu bytes vs %zu", in, rc, ol, wl);
        free(out);
        free(w);
    }
    if (test_verbose()) printf("    render CLI: %d/%d vectors byte-exact\n", ok, n);
    CHECK(n >= 28);
    CHECK_EQ_INT(ok, n);
}

TEST(tok_cli_tokenize_detokenize) {
    const char *b = bin();
    if (!b) return;
    char path[512], cmd[2048];
    snprintf(path, sizeof path, "%s/tok_in.txt", test_tmp_dir());
    const char *text = "Hello,   world! <｜User｜>中文 123456\r\n\tx";
    FILE *f = fopen(path, "wb");
    REQUIRE(f);
    fwrite(text, 1, strlen(text), f);
    fclose(f);
    const char *v = test_fixture_path("tokenizer/vocab-tiny.gguf");
    char vocab[512];
    snprintf(vocab, sizeof vocab, "%s", v);
    snprintf(cmd, sizeof cmd, "'%s' tokenize -m '%s' --text-file '%s'", b, vocab, path);
    char *ids;
    size_t il;
    CHECK_EQ_INT(run(cmd, &ids, &il), 0);
    REQUIRE(il > 1 && ids[il - 1] == '\n');
    ids[il - 1] = '\0';
    CHECK(strstr(ids, " 1994 ") != NULL); /* <｜User｜> as one id */
    snprintf(cmd, sizeof cmd, "'%s' detokenize -m '%s' --ids '%s'", b, vocab, ids);
    char *back;
    size_t bl;
    CHECK_EQ_INT(run(cmd, &back, &bl), 0);
    CHECK(bl == strlen(text) && memcmp(back, text, bl) == 0);
    free(back);
    free(ids);
    /* --no-special: the role token is plain text */
    snprintf(cmd, sizeof cmd, "'%s' tokenize -m '%s' --text-file '%s' --no-special", b, vocab, path);
    CHECK_EQ_INT(run(cmd, &ids, &il), 0);
    CHECK(strstr(ids, " 1994 ") == NULL);
    free(ids);
    /* --text and the --text-file agree on a plain string */
    snprintf(cmd, sizeof cmd, "'%s' tokenize -m '%s' --text 'the thing'", b, vocab);
    CHECK_EQ_INT(run(cmd, &ids, &il), 0);
    CHECK(il > 1);
    free(ids);
    /* exit codes */
    snprintf(cmd, sizeof cmd, "'%s' tokenize --text x 2>/dev/null", b);
    CHECK_EQ_INT(run(cmd, NULL, NULL), 2);
    snprintf(cmd, sizeof cmd, "'%s' tokenize -m '%s' 2>/dev/null", b, vocab);
    CHECK_EQ_INT(run(cmd, NULL, NULL), 2);
    snprintf(cmd, sizeof cmd, "'%s' tokenize -m /nonexistent.gguf --text x 2>/dev/null", b);
    CHECK_EQ_INT(run(cmd, NULL, NULL), 1);
    snprintf(cmd, sizeof cmd, "'%s' tokenize -m '%s' --text x 2>/dev/null", b, path);
    CHECK_EQ_INT(run(cmd, NULL, NULL), 1); /* not a GGUF */
    snprintf(cmd, sizeof cmd, "'%s' detokenize -m '%s' --ids '1 x' 2>/dev/null", b, vocab);
    CHECK_EQ_INT(run(cmd, NULL, NULL), 2);
    snprintf(cmd, sizeof cmd, "'%s' detokenize -m '%s' --ids '99999' 2>/dev/null", b, vocab);
    CHECK_EQ_INT(run(cmd, NULL, NULL), 1);
    snprintf(cmd, sizeof cmd, "'%s' render 2>/dev/null", b);
    CHECK_EQ_INT(run(cmd, NULL, NULL), 2);
    snprintf(cmd, sizeof cmd, "'%s' render --messages /nonexistent.json 2>/dev/null", b);
    CHECK_EQ_INT(run(cmd, NULL, NULL), 1);
    snprintf(cmd, sizeof cmd, "'%s' render --messages '%s' 2>/dev/null", b, path); /* not JSON */
    CHECK_EQ_INT(run(cmd, NULL, NULL), 1);
    snprintf(cmd, sizeof cmd, "'%s' render --messages '%s' --thinking --no-thinking 2>/dev/null", b, path);
    CHECK_EQ_INT(run(cmd, NULL, NULL), 2);
    snprintf(cmd, sizeof cmd, "'%s' tokenize --help >/dev/null", b);
    CHECK_EQ_INT(run(cmd, NULL, NULL), 0);
    snprintf(cmd, sizeof cmd, "'%s' detokenize --help >/dev/null", b);
    CHECK_EQ_INT(run(cmd, NULL, NULL), 0);
    snprintf(cmd, sizeof cmd, "'%s' render --help >/dev/null", b);
    CHECK_EQ_INT(run(cmd, NULL, NULL), 0);
}

/* render --ids equals the chat_token_cases ids for one vector */
TEST(tok_cli_render_ids) {
    const char *b = bin();
    if (!b) return;
    char cmd[2048], vocab[512], in[512];
    snprintf(vocab, sizeof vocab, "%s", test_fixture_path("tokenizer/vocab-tiny.gguf"));
    snprintf(in, sizeof in, "%s", test_fixture_path("chat/gen_01.json"));
    snprintf(cmd, sizeof cmd, "'%s' render --messages '%s' -m '%s' --ids", b, in, vocab);
    char *ids;
    size_t il;
    CHECK_EQ_INT(run(cmd, &ids, &il), 0);
    size_t cl;
    char *cases = test_read_file(test_fixture_path("chat/chat_token_cases.txt"), &cl);
    REQUIRE(cases);
    char *line = strstr(cases, "\ngen_01\t");
    REQUIRE(line);
    line += 8;
    char *end = strchr(line, '\n');
    if (end) *end = '\0';
    REQUIRE(il > 0);
    ids[il - 1] = '\0';
    CHECK_STR(ids, line);
    free(cases);
    free(ids);
}
