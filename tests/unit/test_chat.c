/*
 * test_chat.c - the prompt renderer against every official and generated
 * encoder vector in tests/fixtures/chat (byte-exact), plus error handling.
 */
#include <stdlib.h>
#include <string.h>

#include "json/json.h"
#include "../test.h"
#include "tokenizer/chat.h"

/* Render fixture `in` with opts (NULL: the doc decides) and compare with
 * `want`. Returns 1 on an exact match, -1 if the files are missing. */
static int check_vector(const char *in, const char *want, const v4f_chat_opts *opts) {
    size_t jl, wl;
    char *js = test_read_file(test_fixture_path(in), &jl);
    char *w = test_read_file(test_fixture_path(want), &wl);
    if (!js || !w) {
        free(js);
        free(w);
        return -1;
    }
    v4f_json_doc *doc = NULL;
    v4f_err err = {0};
    int ok = 0;
    if (v4f_json_parse(js, jl, NULL, &doc, &err) != V4F_OK) {
        CHECK_MSG(0, "%s: %s", in, err.msg);
    } else {
        char *out = NULL;
        size_t ol = 0;
        if (v4f_chat_render_doc(v4f_json_doc_root(doc), opts, &out, &ol, &err) != V4F_OK) {
            CHECK_MSG(0, "%s: render failed: %s", in, err.msg);
        } else if (ol != wl || memcmp(out, w, wl) != 0) {
            size_t d = 0;
            while (d < ol && d < wl && out[d] == w[d]) d++;
            CHECK_MSG(0, "%s: differs at byte %zu (got %zu bytes, want %zu): got \"%.60s\" want \"%.60s\"",
                      in, d, ol, wl, out + d, w + d);
        } else {
            ok = 1;
        }
        free(out);
    }
    v4f_json_doc_free(doc);
    free(js);
    free(w);
    return ok;
}

TEST(chat_official_vectors) {
    int ok = 0;
    for (int i = 1; i <= 4; i++) {
        char in[64], want[64];
        snprintf(in, sizeof in, "chat/test_input_%d.json", i);
        snprintf(want, sizeof want, "chat/test_output_%d.txt", i);
        v4f_chat_opts o;
        v4f_chat_opts_default(&o);
        o.thinking = i != 4; /* official modes: 1-3 thinking, 4 chat */
        int r = check_vector(in, want, &o);
        CHECK_MSG(r >= 0, "missing %s", in);
        ok += r == 1;
    }
    if (test_verbose()) printf("    official vectors: %d/4\n", ok);
    CHECK_EQ_INT(ok, 4);
}

TEST(chat_generated_vectors) {
    int ok = 0, n = 0;
    for (int i = 1; i <= 99; i++) {
        char in[64], want[64];
        snprintf(in, sizeof in, "chat/gen_%02d.json", i);
        snprintf(want, sizeof want, "chat/gen_%02d.txt", i);
        int r = check_vector(in, want, NULL);
        if (r < 0) continue;
        n++;
        ok += r;
    }
    if (test_verbose()) printf("    generated vectors: %d/%d\n", ok, n);
    CHECK(n >= 24);
    CHECK_EQ_INT(ok, n);
}

static v4f_status render_str(const char *json, const v4f_chat_opts *o, char **out) {
    v4f_json_doc *doc = NULL;
    v4f_err err = {0};
    v4f_status st = v4f_json_parse(json, strlen(json), NULL, &doc, &err);
    if (st != V4F_OK) return st;
    size_t l;
    st = v4f_chat_render_doc(v4f_json_doc_root(doc), o, out, &l, &err);
    v4f_json_doc_free(doc);
    return st;
}

TEST(chat_errors_and_modes) {
    char *out = NULL;
    CHECK_STATUS(render_str("[{\"role\":\"bogus\",\"content\":\"x\"}]", NULL, &out), V4F_STATUS_INVALID_ARG);
    CHECK_STATUS(render_str("[{\"role\":\"developer\",\"content\":\"\"}]", NULL, &out), V4F_STATUS_INVALID_ARG);
    CHECK_STATUS(render_str("{\"messages\":3}", NULL, &out), V4F_STATUS_INVALID_ARG);
    CHECK_STATUS(render_str("[1]", NULL, &out), V4F_STATUS_INVALID_ARG);
    CHECK_STATUS(render_str("[{\"role\":\"user\",\"content\":\"q\",\"task\":\"nope\"}]", NULL, &out),
                 V4F_STATUS_INVALID_ARG);
    CHECK_STATUS(render_str("[{\"role\":\"assistant\",\"tool_calls\":[{\"function\":{\"name\":\"f\","
                            "\"arguments\":\"[1]\"}}]}]", NULL, &out), V4F_STATUS_INVALID_ARG);
    /* modes */
    v4f_chat_opts o;
    v4f_chat_opts_default(&o);
    REQUIRE(render_str("[{\"role\":\"user\",\"content\":\"hi\"}]", &o, &out) == V4F_OK);
    CHECK_STR(out, V4F_CHAT_BOS V4F_CHAT_USER "hi" V4F_CHAT_ASSISTANT V4F_CHAT_THINK);
    free(out);
    o.thinking = false;
    REQUIRE(render_str("[{\"role\":\"user\",\"content\":\"hi\"}]", &o, &out) == V4F_OK);
    CHECK_STR(out, V4F_CHAT_BOS V4F_CHAT_USER "hi" V4F_CHAT_ASSISTANT V4F_CHAT_THINK_END);
    free(out);
    o.thinking = true;
    o.effort = V4F_CHAT_EFFORT_MAX;
    REQUIRE(render_str("[{\"role\":\"user\",\"content\":\"hi\"}]", &o, &out) == V4F_OK);
    CHECK(strstr(out, "Reasoning Effort: Absolute maximum") != NULL);
    free(out);
    /* invalid JSON arguments -> one raw string parameter; object arguments kept whole */
    v4f_chat_opts_default(&o);
    o.thinking = false;
    REQUIRE(render_str("[{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":"
                       "{\"name\":\"f\",\"arguments\":\"{bad\"}}]}]", &o, &out) == V4F_OK);
    CHECK(strstr(out, "<｜DSML｜parameter name=\"arguments\" string=\"true\">{bad</｜DSML｜parameter>") != NULL);
    free(out);
    /* duplicate keys: first position, last value (Python dict) */
    REQUIRE(render_str("[{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":"
                       "{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":1,\\\"b\\\":2,\\\"a\\\":3.50}\"}}]}]",
                       &o, &out) == V4F_OK);
    CHECK(strstr(out, "name=\"a\" string=\"false\">3.5</｜DSML｜parameter>\n<｜DSML｜parameter name=\"b\"") != NULL);
    free(out);
    /* tools given separately with a user-first conversation: a system message is made */
    REQUIRE(render_str("{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],"
                       "\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}", NULL, &out) == V4F_OK);
    CHECK(strncmp(out, V4F_CHAT_BOS "\n\n## Tools\n", strlen(V4F_CHAT_BOS "\n\n## Tools\n")) == 0);
    free(out);
}
