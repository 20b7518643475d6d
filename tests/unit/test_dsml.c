/*
 * test_dsml.c - the incremental DSML parser: round trip of every assistant
 * turn in the chat fixtures (render the turn as a completion, parse it back,
 * compare reasoning / content / calls), fed whole, byte by byte and split at
 * every byte boundary; malformed and truncated input; streaming invariants.
 */
#include <stdlib.h>
#include <string.h>

#include "json/json.h"
#include "../test.h"
#include "tokenizer/chat.h"
#include "tokenizer/dsml.h"

typedef struct expect {
    v4f_json_buf text;      /* the completion */
    v4f_json_buf reasoning; /* expected */
    v4f_json_buf content;
    v4f_json_buf calls;     /* "name\x01args\x02" per call */
    bool thinking;
} expect;

static void put_str(v4f_json_buf *b, const v4f_json *v) {
    if (v && v->type == V4F_JSON_STRING) v4f_json_buf_append(b, v->str, v->len);
}

/* Build the completion of an assistant message as the renderer writes it. */
static bool build(const v4f_json *m, bool thinking, expect *e) {
    memset(e, 0, sizeof *e);
    e->thinking = thinking;
    v4f_json_buf_append(&e->text, "", 0);
    v4f_json_buf_append(&e->reasoning, "", 0);
    v4f_json_buf_append(&e->content, "", 0);
    v4f_json_buf_append(&e->calls, "", 0);
    if (thinking) {
        put_str(&e->text, v4f_json_get(m, "reasoning_content"));
        put_str(&e->reasoning, v4f_json_get(m, "reasoning_content"));
        v4f_json_buf_puts(&e->text, V4F_CHAT_THINK_END);
    }
    put_str(&e->text, v4f_json_get(m, "content"));
    put_str(&e->content, v4f_json_get(m, "content"));
    const v4f_json *calls = v4f_json_get(m, "tool_calls");
    if (v4f_json_truthy(calls)) {
        v4f_json_buf_puts(&e->text, "\n\n<｜DSML｜tool_calls>\n");
        for (const v4f_json *c = calls->child; c; c = c->next) {
            const v4f_json *f = v4f_json_get(c, "function");
            size_t nl, al;
            const char *name = v4f_json_get_str(f, "name", &nl);
            const char *args = v4f_json_get_str(f, "arguments", &al);
            if (!name || !args) return false;
            if (c != calls->child) v4f_json_buf_puts(&e->text, "\n");
            v4f_err err = {0};
            if (v4f_chat_render_tool_call(&e->text, name, nl, args, al, &err) != V4F_OK) return false;
            /* expected arguments: what the official decoder rebuilds */
            v4f_json_doc *d = NULL;
            v4f_json_buf_append(&e->calls, name, nl);
            v4f_json_buf_putc(&e->calls, '\x01');
            if (v4f_json_parse(args, al, NULL, &d, &err) == V4F_OK) {
                v4f_json_write(&e->calls, v4f_json_doc_root(d), V4F_JSON_WRITE_PY);
                v4f_json_doc_free(d);
            } else {
                v4f_json_buf_puts(&e->calls, "{\"arguments\": ");
                v4f_json_write_string(&e->calls, args, al, 0);
                v4f_json_buf_putc(&e->calls, '}');
            }
            v4f_json_buf_putc(&e->calls, '\x02');
        }
        v4f_json_buf_puts(&e->text, "\n</｜DSML｜tool_calls>");
    }
    v4f_json_buf_puts(&e->text, V4F_CHAT_EOS);
    return true;
}

static void expect_free(expect *e) {
    v4f_json_buf_free(&e->text);
    v4f_json_buf_free(&e->reasoning);
    v4f_json_buf_free(&e->content);
    v4f_json_buf_free(&e->calls);
}

/* Feed text split at the given cut points; compare with e. */
static bool parse_matches(const expect *e, const size_t *cuts, size_t n_cuts, const char *label) {
    v4f_dsml *p = v4f_dsml_new(e->thinking);
    size_t prev = 0;
    for (size_t i = 0; i <= n_cuts; i++) {
        size_t at = i < n_cuts ? cuts[i] : e->text.len;
        v4f_dsml_feed(p, e->text.data + prev, at - prev);
        prev = at;
    }
    v4f_dsml_finish(p);
    v4f_dsml_msg r;
    v4f_dsml_result(p, &r);
    v4f_json_buf calls;
    v4f_json_buf_init(&calls);
    v4f_json_buf_append(&calls, "", 0);
    for (size_t i = 0; i < r.n_calls; i++) {
        v4f_json_buf_append(&calls, r.calls[i].name, r.calls[i].name_len);
        v4f_json_buf_putc(&calls, '\x01');
        v4f_json_buf_append(&calls, r.calls[i].arguments, r.calls[i].arguments_len);
        v4f_json_buf_putc(&calls, '\x02');
    }
    bool ok = r.flags == 0 && r.eos && r.reasoning_len == e->reasoning.len &&
              memcmp(r.reasoning, e->reasoning.data, r.reasoning_len) == 0 &&
              r.content_len == e->content.len && memcmp(r.content, e->content.data, r.content_len) == 0 &&
              calls.len == e->calls.len && memcmp(calls.data, e->calls.data, calls.len) == 0;
    if (!ok)
        CHECK_MSG(0, "%s: flags %u eos %d calls got [%.200s] want [%.200s] content [%.80s]", label,
                  r.flags, r.eos, calls.data, e->calls.data, r.content);
    v4f_json_buf_free(&calls);
    v4f_dsml_free(p);
    return ok;
}

static int round_trip_file(const char *rel, bool thinking_default, int *n_turns, int *n_with_calls) {
    size_t jl;
    char *js = test_read_file(test_fixture_path(rel), &jl);
    if (!js) return -1;
    v4f_json_doc *doc = NULL;
    v4f_err err = {0};
    int ok = 0;
    if (v4f_json_parse(js, jl, NULL, &doc, &err) == V4F_OK) {
        const v4f_json *root = v4f_json_doc_root(doc);
        bool thinking = thinking_default;
        size_t ml;
        const char *mode = v4f_json_get_str(root, "thinking_mode", &ml);
        if (mode) thinking = !strcmp(mode, "thinking");
        const v4f_json *msgs = root->type == V4F_JSON_ARRAY ? root : v4f_json_get(root, "messages");
        for (const v4f_json *m = msgs ? msgs->child : NULL; m; m = m->next) {
            size_t rl;
            const char *role = v4f_json_get_str(m, "role", &rl);
            if (!role || strcmp(role, "assistant") != 0) continue;
            expect e;
            if (!build(m, thinking, &e)) {
                expect_free(&e);
                continue;
            }
            (*n_turns)++;
            if (v4f_json_truthy(v4f_json_get(m, "tool_calls"))) (*n_with_calls)++;
            bool good = parse_matches(&e, NULL, 0, rel);
            /* byte by byte */
            size_t n = e.text.len;
            size_t *cuts = malloc((n + 1) * sizeof *cuts);
            for (size_t i = 0; i + 1 < n; i++) cuts[i] = i + 1;
            good = good && parse_matches(&e, cuts, n ? n - 1 : 0, "byte-by-byte");
            /* every single split point */
            for (size_t i = 1; good && i < n; i++) {
                size_t c = i;
                good = parse_matches(&e, &c, 1, "split");
            }
            free(cuts);
            ok += good;
            expect_free(&e);
        }
    }
    v4f_json_doc_free(doc);
    free(js);
    return ok;
}

TEST(dsml_fixture_round_trip) {
    int turns = 0, with_calls = 0, ok = 0;
    for (int i = 1; i <= 4; i++) {
        char rel[64];
        snprintf(rel, sizeof rel, "chat/test_input_%d.json", i);
        int r = round_trip_file(rel, i != 4, &turns, &with_calls);
        if (r > 0) ok += r;
    }
    for (int i = 1; i <= 99; i++) {
        char rel[64];
        snprintf(rel, sizeof rel, "chat/gen_%02d.json", i);
        int r = round_trip_file(rel, true, &turns, &with_calls);
        if (r > 0) ok += r;
    }
    if (test_verbose()) printf("    assistant turns round-tripped: %d/%d (%d with tool calls)\n", ok, turns, with_calls);
    CHECK(turns >= 20);
    CHECK(with_calls >= 10);
    CHECK_EQ_INT(ok, turns);
}

static v4f_dsml_msg parse_once(v4f_dsml **pp, const char *s, bool thinking) {
    *pp = v4f_dsml_new(thinking);
    v4f_dsml_feed(*pp, s, strlen(s));
    v4f_dsml_finish(*pp);
    v4f_dsml_msg r;
    v4f_dsml_result(*pp, &r);
    return r;
}

TEST(dsml_malformed_becomes_content) {
    static const char *bad[] = {
        /* junk instead of ">\n" */
        "hi\n\n<｜DSML｜tool_calls>X\n<｜DSML｜invoke name=\"f\">\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>",
        /* bad header */
        "hi\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke nom=\"f\">\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>",
        /* bad string flag */
        "hi\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"a\" string=\"maybe\">1</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>",
        /* duplicate parameter */
        "hi\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"a\" string=\"true\">1</｜DSML｜parameter>\n<｜DSML｜parameter name=\"a\" string=\"true\">2</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>",
        /* text after the block */
        "hi\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>more",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v4f_dsml *p;
        v4f_dsml_msg r = parse_once(&p, bad[i], false);
        CHECK_MSG(r.flags & V4F_DSML_MALFORMED, "case %zu not flagged", i);
        CHECK_EQ_INT(r.n_calls, 0);
        CHECK_MSG(r.content_len == strlen(bad[i]) && memcmp(r.content, bad[i], r.content_len) == 0,
                  "case %zu: content is not the raw text", i);
        v4f_dsml_free(p);
    }
    /* with EOS: the raw block is content, up to EOS */
    v4f_dsml *p;
    v4f_dsml_msg r = parse_once(&p, "a\n\n<｜DSML｜tool_calls>oops<｜end▁of▁sentence｜>tail", false);
    CHECK(r.flags & V4F_DSML_MALFORMED);
    CHECK(r.flags & V4F_DSML_TRAILING);
    CHECK(r.eos);
    CHECK_STR(r.content, "a\n\n<｜DSML｜tool_calls>oops");
    v4f_dsml_free(p);
    /* EOS inside a parameter value ends the block: malformed */
    r = parse_once(&p, "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"a\" string=\"true\">x<｜end▁of▁sentence｜>", false);
    CHECK(r.flags & V4F_DSML_MALFORMED);
    CHECK(r.eos);
    v4f_dsml_free(p);
}

TEST(dsml_valid_forms) {
    v4f_dsml *p;
    /* no parameters, string and JSON parameters, two invokes, no EOS at the end */
    const char *s =
        "<think>no</think>\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"a\">\n\n</｜DSML｜invoke>\n"
        "<｜DSML｜invoke name=\"b\">\n<｜DSML｜parameter name=\"q\" string=\"true\">x \"y\"\n</｜DSML｜parameter>\n"
        "<｜DSML｜parameter name=\"n\" string=\"false\">[1, 2.50]</｜DSML｜parameter>\n</｜DSML｜invoke>\n"
        "</｜DSML｜tool_calls>";
    v4f_dsml_msg r = parse_once(&p, s + 7, true); /* the prompt already holds <think> */
    CHECK_EQ_INT(r.flags, 0);
    CHECK_STR(r.reasoning, "no");
    CHECK_STR(r.content, "");
    REQUIRE(r.n_calls == 2);
    CHECK(r.calls[0].name_len == 1 && r.calls[0].name[0] == 'a');
    CHECK_STR(r.calls[0].arguments, "{}");
    CHECK_STR(r.calls[1].arguments, "{\"q\": \"x \\\"y\\\"\\n\", \"n\": [1, 2.50]}");
    v4f_dsml_free(p);
    {
        v4f_json_buf jb;
        v4f_json_buf_init(&jb);
        r = parse_once(&p, "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"a\">\n\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>", false);
        v4f_dsml_msg_write_json(&jb, &r, V4F_JSON_WRITE_PY);
        CHECK_STR(jb.data, "{\"role\": \"assistant\", \"content\": \"\", \"reasoning_content\": \"\", "
                           "\"tool_calls\": [{\"type\": \"function\", \"function\": {\"name\": \"a\", "
                           "\"arguments\": \"{}\"}}]}");
        v4f_json_buf_free(&jb);
        v4f_dsml_free(p);
    }
    /* an empty block (the opening marker, ">\n", the closing marker) is
     * well formed: the official parser reads ">\n" up to the closing marker
     * and returns no calls, so the content is the text before it */
    r = parse_once(&p, "hi\n\n<｜DSML｜tool_calls>\n</｜DSML｜tool_calls><｜end▁of▁sentence｜>", false);
    CHECK_EQ_INT(r.flags, 0);
    CHECK(r.eos);
    CHECK_EQ_INT(r.n_calls, 0);
    CHECK_STR(r.content, "hi");
    v4f_dsml_free(p);
    /* truncated reasoning stays reasoning, flagged */
    r = parse_once(&p, "thinking about it", true);
    CHECK(r.flags & V4F_DSML_NO_THINK_END);
    CHECK(r.flags & V4F_DSML_TRUNCATED);
    CHECK_STR(r.reasoning, "thinking about it");
    v4f_dsml_free(p);
    /* special token text in content is flagged but kept */
    r = parse_once(&p, "a<think>b<｜end▁of▁sentence｜>", false);
    CHECK(r.flags & V4F_DSML_SPECIAL_IN_TEXT);
    CHECK_STR(r.content, "a<think>b");
    v4f_dsml_free(p);
}

/* Streaming: committed content never shrinks and never shows a marker
 * prefix that later turns out to be a marker. */
TEST(dsml_streaming_commits) {
    const char *s = "Hello\n\n world\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n\n</｜DSML｜invoke>\n"
                    "</｜DSML｜tool_calls><｜end▁of▁sentence｜>";
    v4f_dsml *p = v4f_dsml_new(false);
    size_t last = 0;
    for (size_t i = 0; s[i]; i++) {
        v4f_dsml_feed(p, s + i, 1);
        v4f_dsml_msg r;
        v4f_dsml_result(p, &r);
        CHECK(r.content_len >= last);
        CHECK(r.content_len <= strlen("Hello\n\n world"));
        last = r.content_len;
    }
    v4f_dsml_msg r;
    v4f_dsml_result(p, &r);
    CHECK_EQ_INT(v4f_dsml_get_state(p), V4F_DSML_DONE);
    CHECK_STR(r.content, "Hello\n\n world");
    CHECK_EQ_INT(r.n_calls, 1);
    v4f_dsml_free(p);
}

/* Property: in chat mode, without EOS, content + (calls? block : "") is the
 * input; every prefix of a valid completion is handled without crashing. */
TEST(dsml_prefixes_are_safe) {
    const char *s = "ok\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"a\" "
                    "string=\"true\">v</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
    size_t n = strlen(s);
    for (size_t k = 0; k <= n; k++) {
        v4f_dsml *p = v4f_dsml_new(false);
        v4f_dsml_feed(p, s, k);
        v4f_dsml_finish(p);
        v4f_dsml_msg r;
        v4f_dsml_result(p, &r);
        if (r.n_calls == 0)
            CHECK_MSG(r.content_len == k && memcmp(r.content, s, k) == 0, "prefix %zu", k);
        else
            CHECK_MSG(k == n && r.content_len == 2, "prefix %zu parsed calls", k);
        v4f_dsml_free(p);
    }
}

/* Feeding whole or byte by byte must give the same message, also when an
 * EOS sits inside a broken block and a later marker would "complete" it
 * (found by fuzz_dsml; EOS ends the generation, so the block is malformed). */
TEST(dsml_whole_equals_bytewise) {
    static const char *cases[] = {
        "hi\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"a\" string=\"true\">v</\xef#\xbd\x9c" "DSML｜parameter>\n"
        "</｜DSML｜invoke>\n</｜DSML｜tool_calls><｜end▁of▁sentence｜>ls></｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls><｜end▁of▁sentence｜>",
        "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n\n</｜DSML｜invoke>\n</｜DSML｜tool_calls><｜end▁of▁sentence｜><｜end▁of▁sentence｜>",
        "a<｜end▁of▁sentence｜>\n\n<｜DSML｜tool_calls>",
        "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"<｜end▁of▁sentence｜>\">\n\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>",
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (int thinking = 0; thinking < 2; thinking++) {
            const char *s = cases[c];
            size_t n = strlen(s);
            v4f_dsml *w = v4f_dsml_new(thinking), *b = v4f_dsml_new(thinking);
            v4f_dsml_feed(w, s, n);
            v4f_dsml_finish(w);
            for (size_t i = 0; i < n; i++) v4f_dsml_feed(b, s + i, 1);
            v4f_dsml_finish(b);
            v4f_dsml_msg x, y;
            v4f_dsml_result(w, &x);
            v4f_dsml_result(b, &y);
            CHECK_MSG(x.flags == y.flags && x.eos == y.eos && x.n_calls == y.n_calls &&
                          x.content_len == y.content_len && x.reasoning_len == y.reasoning_len &&
                          memcmp(x.content, y.content, x.content_len) == 0,
                      "case %zu thinking %d: whole flags %u calls %zu content %zu, bytewise flags %u calls %zu content %zu",
                      c, thinking, x.flags, x.n_calls, x.content_len, y.flags, y.n_calls, y.content_len);
            if (c == 0 && !thinking) CHECK(x.flags & V4F_DSML_MALFORMED);
            if (c == 1 && !thinking) CHECK(x.n_calls == 1 && (x.flags & V4F_DSML_TRAILING));
            v4f_dsml_free(w);
            v4f_dsml_free(b);
        }
    }
}

/* Every assistant turn inside the official/generated prompt texts (from
 * after "<｜Assistant｜><think>" or "</think>" up to its EOS) is a valid
 * completion: it must parse without flags and re-render to the same bytes. */
static int turns_in_prompt(const char *rel, int *n_turns) {
    size_t len;
    char *s = test_read_file(test_fixture_path(rel), &len);
    if (!s) return -1;
    static const char A[] = V4F_CHAT_ASSISTANT, EOS[] = V4F_CHAT_EOS, USER[] = V4F_CHAT_USER;
    int ok = 0;
    for (char *p = strstr(s, A); p; p = strstr(p + 1, A)) {
        char *q = p + strlen(A);
        bool thinking;
        if (!strncmp(q, V4F_CHAT_THINK, strlen(V4F_CHAT_THINK))) {
            thinking = true;
            q += strlen(V4F_CHAT_THINK);
        } else if (!strncmp(q, V4F_CHAT_THINK_END, strlen(V4F_CHAT_THINK_END))) {
            thinking = false;
            q += strlen(V4F_CHAT_THINK_END);
        } else {
            continue;
        }
        char *e = strstr(q, EOS), *u = strstr(q, USER);
        if (!e || (u && u < e)) continue; /* generation prompt or no EOS */
        size_t n = (size_t)(e + strlen(EOS) - q);
        (*n_turns)++;
        v4f_dsml *d = v4f_dsml_new(thinking);
        for (size_t i = 0; i < n; i += 7) v4f_dsml_feed(d, q + i, n - i < 7 ? n - i : 7);
        v4f_dsml_finish(d);
        v4f_dsml_msg r;
        v4f_dsml_result(d, &r);
        v4f_json_buf b;
        v4f_json_buf_init(&b);
        v4f_json_buf_append(&b, "", 0);
        if (thinking) {
            v4f_json_buf_append(&b, r.reasoning, r.reasoning_len);
            v4f_json_buf_puts(&b, V4F_CHAT_THINK_END);
        }
        v4f_json_buf_append(&b, r.content, r.content_len);
        if (r.n_calls) {
            v4f_json_buf_puts(&b, "\n\n<｜DSML｜tool_calls>\n");
            for (size_t i = 0; i < r.n_calls; i++) {
                v4f_err err = {0};
                if (i) v4f_json_buf_puts(&b, "\n");
                v4f_chat_render_tool_call(&b, r.calls[i].name, r.calls[i].name_len, r.calls[i].arguments,
                                          r.calls[i].arguments_len, &err);
            }
            v4f_json_buf_puts(&b, "\n</｜DSML｜tool_calls>");
        }
        v4f_json_buf_puts(&b, EOS);
        bool good = r.flags == 0 && r.eos && b.len == n && memcmp(b.data, q, n) == 0;
        CHECK_MSG(good, "%s: turn at byte %zu: flags %u, re-rendered %zu vs %zu bytes", rel,
                  (size_t)(q - s), r.flags, b.len, n);
        ok += good;
        v4f_json_buf_free(&b);
        v4f_dsml_free(d);
    }
    free(s);
    return ok;
}

TEST(dsml_turns_in_official_prompts) {
    int n = 0, ok = 0;
    for (int i = 1; i <= 4; i++) {
        char rel[64];
        snprintf(rel, sizeof rel, "chat/test_output_%d.txt", i);
        int r = turns_in_prompt(rel, &n);
        if (r > 0) ok += r;
    }
    for (int i = 1; i <= 99; i++) {
        char rel[64];
        snprintf(rel, sizeof rel, "chat/gen_%02d.txt", i);
        int r = turns_in_prompt(rel, &n);
        if (r > 0) ok += r;
    }
    if (test_verbose()) printf("    assistant turns in rendered prompts: %d/%d\n", ok, n);
    CHECK(n >= 20);
    CHECK_EQ_INT(ok, n);
}
