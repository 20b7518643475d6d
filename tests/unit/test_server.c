/*
 * test_server.c - the OpenAI protocol layer of `serve` without sockets
 * (src/server/oai.c): request validation, prompt rendering, and the
 * response / SSE text for reasoning, content, tool calls and stop strings
 * fed in awkward pieces.
 */
#include <stdlib.h>
#include <string.h>

#include "json/json.h"
#include "server/oai.h"
#include "tokenizer/chat.h"
#include "../test.h"

static const v4f_oai_defaults k_def = {.thinking = true, .temperature = 1.0f, .top_p = 1.0f, .min_p = 0.05f};

static v4f_status parse(v4f_oai_kind kind, const char *body, v4f_oai_req *r, v4f_err *err) {
    return v4f_oai_parse(kind, body, strlen(body), &k_def, r, err);
}

TEST(oai_parse_chat_fields) {
    v4f_oai_req r;
    v4f_err err = {0};
    const char *body = "{\"model\":\"deepseek-chat\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                       "\"max_completion_tokens\":7,\"temperature\":0.5,\"top_p\":0.9,\"top_k\":40,\"min_p\":0,"
                       "\"seed\":42,\"stream\":true,\"stream_options\":{\"include_usage\":true},"
                       "\"stop\":[\"END\",\"\",\"x\"],\"unknown_field\":{\"a\":[1,2]}}";
    REQUIRE(parse(V4F_OAI_CHAT, body, &r, &err) == V4F_OK);
    CHECK(!r.thinking); /* deepseek-chat */
    CHECK_EQ_INT(r.max_tokens, 7);
    CHECK_NEAR(r.temperature, 0.5, 0);
    CHECK_NEAR(r.top_p, 0.9, 1e-7);
    CHECK_EQ_INT(r.top_k, 40);
    CHECK_NEAR(r.min_p, 0, 0);
    CHECK(r.seed_given && r.seed == 42);
    CHECK(r.stream && r.include_usage);
    CHECK_EQ_INT(r.n_stop, 2); /* the empty stop string is dropped */
    CHECK_STR(r.stop[0], "END");
    CHECK_STR(r.model, "deepseek-chat");
    CHECK(r.tools == NULL);
    v4f_oai_req_free(&r);

    /* defaults, thinking switches */
    REQUIRE(parse(V4F_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", &r, &err) == V4F_OK);
    CHECK(r.thinking && !r.stream && r.max_tokens == -1 && !r.seed_given);
    CHECK_NEAR(r.min_p, 0.05, 1e-7);
    CHECK_STR(r.model, V4F_OAI_MODEL_ID);
    v4f_oai_req_free(&r);
    const char *off[] = {
        "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"thinking\":{\"type\":\"disabled\"}}",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"think\":false}",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"reasoning_effort\":\"none\"}",
    };
    for (size_t i = 0; i < sizeof off / sizeof *off; i++) {
        REQUIRE(parse(V4F_OAI_CHAT, off[i], &r, &err) == V4F_OK);
        CHECK_MSG(!r.thinking, "%s", off[i]);
        v4f_oai_req_free(&r);
    }
    /* max effort only where the context allows it */
    REQUIRE(parse(V4F_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"reasoning_effort\":\"max\"}",
                  &r, &err) == V4F_OK);
    CHECK(r.thinking && !r.think_max);
    v4f_oai_req_free(&r);
    /* tools kept, dropped by tool_choice none */
    const char *tools = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"tools\":[{\"type\":\"function\","
                        "\"function\":{\"name\":\"ls\",\"parameters\":{\"type\":\"object\"}}}]%s}";
    char b[512];
    snprintf(b, sizeof b, tools, "");
    REQUIRE(parse(V4F_OAI_CHAT, b, &r, &err) == V4F_OK);
    CHECK(r.tools && r.tools->n == 1);
    v4f_oai_req_free(&r);
    snprintf(b, sizeof b, tools, ",\"tool_choice\":\"none\"");
    REQUIRE(parse(V4F_OAI_CHAT, b, &r, &err) == V4F_OK);
    CHECK(r.tools == NULL);
    v4f_oai_req_free(&r);
}

TEST(oai_parse_rejects_bad_requests) {
    static const struct {
        v4f_oai_kind kind;
        const char *body, *needle;
    } cases[] = {
        {V4F_OAI_CHAT, "", "not valid JSON"},
        {V4F_OAI_CHAT, "{\"messages\":[", "not valid JSON"},
        {V4F_OAI_CHAT, "[1,2]", "JSON object"},
        {V4F_OAI_CHAT, "{}", "'messages'"},
        {V4F_OAI_CHAT, "{\"messages\":[]}", "'messages'"},
        {V4F_OAI_CHAT, "{\"messages\":[\"hi\"]}", "'messages'"},
        {V4F_OAI_CHAT, "{\"messages\":[{}],\"temperature\":\"hot\"}", "'temperature'"},
        {V4F_OAI_CHAT, "{\"messages\":[{}],\"temperature\":-1}", "'temperature'"},
        {V4F_OAI_CHAT, "{\"messages\":[{}],\"top_p\":0}", "'top_p'"},
        {V4F_OAI_CHAT, "{\"messages\":[{}],\"max_tokens\":0}", "'max_tokens'"},
        {V4F_OAI_CHAT, "{\"messages\":[{}],\"max_tokens\":1.5}", "'max_tokens'"},
        {V4F_OAI_CHAT, "{\"messages\":[{}],\"n\":2}", "'n'"},
        {V4F_OAI_CHAT, "{\"messages\":[{}],\"stream\":\"yes\"}", "'stream'"},
        {V4F_OAI_CHAT, "{\"messages\":[{}],\"stop\":[1]}", "'stop'"},
        {V4F_OAI_CHAT, "{\"messages\":[{}],\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", "'stop'"},
        {V4F_OAI_CHAT, "{\"messages\":[{}],\"tools\":{}}", "'tools'"},
        {V4F_OAI_CHAT, "{\"messages\":[{}],\"tools\":[{\"type\":\"function\"}]}", "'tools'"},
        {V4F_OAI_CHAT, "{\"messages\":[{}],\"thinking\":{\"type\":\"maybe\"}}", "'thinking.type'"},
        {V4F_OAI_CHAT, "{\"messages\":[{}],\"reasoning_effort\":\"huge\"}", "'reasoning_effort'"},
        {V4F_OAI_CHAT, "{\"messages\":[{}],\"seed\":1e300}", "'seed'"},
        {V4F_OAI_COMPLETION, "{}", "'prompt'"},
        {V4F_OAI_COMPLETION, "{\"prompt\":[\"a\",\"b\"]}", "'prompt'"},
        {V4F_OAI_COMPLETION, "{\"prompt\":\"a\",\"echo\":true}", "'echo'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        v4f_oai_req r;
        v4f_err err = {0};
        CHECK_MSG(parse(cases[i].kind, cases[i].body, &r, &err) == V4F_STATUS_INVALID_ARG, "%s", cases[i].body);
        CHECK_MSG(strstr(err.msg, cases[i].needle) != NULL, "%s: %s", cases[i].body, err.msg);
    }
    /* deep nesting is refused, not a stack overflow */
    static char deep[4096];
    size_t n = 0;
    n += (size_t)snprintf(deep, sizeof deep, "{\"messages\":[{}],\"x\":");
    for (int i = 0; i < 1000; i++) deep[n++] = '[';
    deep[n] = 0;
    v4f_oai_req r;
    v4f_err err = {0};
    CHECK(parse(V4F_OAI_CHAT, deep, &r, &err) == V4F_STATUS_INVALID_ARG);
}

/* The rendered prompt is the chat renderer's output for the same messages. */
TEST(oai_prompt_is_the_chat_render) {
    const char *body = "{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\","
                       "\"content\":[{\"type\":\"text\",\"text\":\"What is 2+2?\"}]}],\"think\":false}";
    v4f_oai_req r;
    v4f_err err = {0};
    REQUIRE(parse(V4F_OAI_CHAT, body, &r, &err) == V4F_OK);
    char *p = NULL;
    size_t pl = 0;
    REQUIRE(v4f_oai_prompt(&r, &p, &pl, &err) == V4F_OK);
    CHECK_STR(p, V4F_CHAT_BOS "Be brief." V4F_CHAT_USER "What is 2+2?" V4F_CHAT_ASSISTANT V4F_CHAT_THINK_END);
    free(p);
    v4f_oai_req_free(&r);
    REQUIRE(parse(V4F_OAI_COMPLETION, "{\"prompt\":[\"abc<｜User｜>\"]}", &r, &err) == V4F_OK);
    REQUIRE(v4f_oai_prompt(&r, &p, &pl, &err) == V4F_OK);
    CHECK_STR(p, "abc<｜User｜>");
    free(p);
    v4f_oai_req_free(&r);
    /* a message the renderer refuses is an error, not a crash */
    REQUIRE(parse(V4F_OAI_CHAT, "{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", &r, &err) == V4F_OK);
    CHECK(v4f_oai_prompt(&r, &p, &pl, &err) == V4F_STATUS_INVALID_ARG);
    CHECK(strstr(err.msg, "wizard") != NULL);
    v4f_oai_req_free(&r);
}

/* ---- responses ---------------------------------------------------------------- */

typedef struct sse_sum {
    v4f_json_buf reasoning, content, text, calls; /* calls: name(args) per call */
    char finish[32];
    int n_events, n_role, n_usage;
    bool done_last, bad_json;
    long prompt_tokens, cached;
} sse_sum;

static void str_member(v4f_json_buf *dst, const v4f_json *obj, const char *key) {
    const v4f_json *v = v4f_json_get(obj, key);
    if (v4f_json_is(v, V4F_JSON_STRING)) v4f_json_buf_append(dst, v->str, v->len);
}

/* Parse a whole SSE text into a summary (each event "data: JSON\n\n"). */
static void sse_parse(const char *s, size_t n, sse_sum *o) {
    memset(o, 0, sizeof *o);
    const char *end = s + n;
    while (s < end) {
        const char *e = strstr(s, "\n\n");
        if (!e) {
            o->bad_json = true;
            break;
        }
        o->done_last = false;
        if (strncmp(s, "data: ", 6)) {
            o->bad_json = true;
            break;
        }
        o->n_events++;
        const char *d = s + 6;
        if ((size_t)(e - d) == 6 && !strncmp(d, "[DONE]", 6)) {
            o->done_last = true;
            s = e + 2;
            continue;
        }
        v4f_json_doc *doc = NULL;
        v4f_err err = {0};
        if (v4f_json_parse(d, (size_t)(e - d), NULL, &doc, &err)) {
            o->bad_json = true;
            break;
        }
        const v4f_json *root = v4f_json_doc_root(doc);
        const v4f_json *u = v4f_json_get(root, "usage");
        if (u) {
            o->n_usage++;
            const v4f_json *pt = v4f_json_get(u, "prompt_tokens");
            o->prompt_tokens = pt ? strtol(pt->str, NULL, 10) : -1;
            const v4f_json *ct = v4f_json_get(v4f_json_get(u, "prompt_tokens_details"), "cached_tokens");
            o->cached = ct ? strtol(ct->str, NULL, 10) : -1;
        }
        const v4f_json *ch = v4f_json_at(v4f_json_get(root, "choices"), 0);
        if (ch) {
            const v4f_json *dl = v4f_json_get(ch, "delta");
            if (v4f_json_get(dl, "role")) o->n_role++;
            str_member(&o->reasoning, dl, "reasoning_content");
            str_member(&o->content, dl, "content");
            str_member(&o->text, ch, "text");
            const v4f_json *calls = v4f_json_get(dl, "tool_calls");
            for (const v4f_json *c = calls ? calls->child : NULL; c; c = c->next) {
                const v4f_json *f = v4f_json_get(c, "function");
                str_member(&o->calls, f, "name");
                v4f_json_buf_putc(&o->calls, '(');
                str_member(&o->calls, f, "arguments");
                v4f_json_buf_putc(&o->calls, ')');
                size_t il = 0;
                const char *id = v4f_json_get_str(c, "id", &il);
                if (!id || il != 37 || strncmp(id, "call_", 5)) o->bad_json = true;
            }
            size_t fl = 0;
            const char *fr = v4f_json_get_str(ch, "finish_reason", &fl);
            if (fr) snprintf(o->finish, sizeof o->finish, "%.*s", (int)fl, fr);
        }
        v4f_json_doc_free(doc);
        s = e + 2;
    }
}

static void sse_free(sse_sum *o) {
    v4f_json_buf_free(&o->reasoning);
    v4f_json_buf_free(&o->content);
    v4f_json_buf_free(&o->text);
    v4f_json_buf_free(&o->calls);
}

static const char *nz(const v4f_json_buf *b) {
    return b->len ? b->data : "";
}

#define TOOL_TEXT                                                                                                \
    "Let me look.</think>Listing.\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"ls\">\n<｜DSML｜parameter "  \
    "name=\"path\" string=\"true\">src/</｜DSML｜parameter>\n<｜DSML｜parameter name=\"depth\" "              \
    "string=\"false\">2</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls><｜end▁of▁sentence｜>"

/* Feed text in pieces of `step` bytes (0: whole) through an out object. */
static bool feed_all(v4f_oai_out *o, const char *text, size_t step, v4f_json_buf *sse) {
    size_t n = strlen(text);
    bool go = true;
    for (size_t i = 0; i < n && go; i += step ? step : n) {
        size_t k = step && n - i > step ? step : n - i;
        go = v4f_oai_out_feed(o, text + i, k, sse);
    }
    return go;
}

TEST(oai_stream_reasoning_content_tool_calls) {
    const size_t steps[] = {0, 1, 2, 3, 7, 64};
    for (size_t si = 0; si < sizeof steps / sizeof *steps; si++) {
        v4f_oai_req r;
        v4f_err err = {0};
        REQUIRE(parse(V4F_OAI_CHAT,
                      "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":true,"
                      "\"stream_options\":{\"include_usage\":true}}",
                      &r, &err) == V4F_OK);
        v4f_oai_out *o = v4f_oai_out_new(&r, "chatcmpl-x", 1);
        v4f_json_buf sse;
        v4f_json_buf_init(&sse);
        feed_all(o, TOOL_TEXT, steps[si], &sse);
        const v4f_oai_usage u = {.prompt_tokens = 11, .completion_tokens = 5, .cached_tokens = 3};
        v4f_oai_out_finish(o, "eos", &u, &sse);
        sse_sum s;
        sse_parse(sse.data, sse.len, &s);
        CHECK_MSG(!s.bad_json && s.done_last, "step %zu: %s", steps[si], sse.data);
        CHECK_STR(nz(&s.reasoning), "Let me look.");
        CHECK_STR(nz(&s.content), "Listing.");
        CHECK_STR(nz(&s.calls), "ls({\"path\": \"src/\", \"depth\": 2})");
        CHECK_STR(s.finish, "tool_calls");
        CHECK_EQ_INT(s.n_role, 1);
        CHECK_EQ_INT(s.n_usage, 1);
        CHECK_EQ_INT(s.prompt_tokens, 11);
        CHECK_EQ_INT(s.cached, 3);
        CHECK_STR(v4f_oai_out_finish_reason(o), "tool_calls");
        sse_free(&s);
        v4f_json_buf_free(&sse);
        v4f_oai_out_free(o);
        v4f_oai_req_free(&r);
    }
}

TEST(oai_response_object) {
    v4f_oai_req r;
    v4f_err err = {0};
    REQUIRE(parse(V4F_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", &r, &err) == V4F_OK);
    v4f_oai_out *o = v4f_oai_out_new(&r, "chatcmpl-y", 5);
    v4f_json_buf b;
    v4f_json_buf_init(&b);
    CHECK(feed_all(o, TOOL_TEXT, 5, &b));
    CHECK_EQ_INT(b.len, 0); /* nothing before finish without stream */
    const v4f_oai_usage u = {.prompt_tokens = 4, .completion_tokens = 2};
    v4f_oai_out_finish(o, "eos", &u, &b);
    v4f_json_doc *doc = NULL;
    REQUIRE(v4f_json_parse(b.data, b.len, NULL, &doc, &err) == V4F_OK);
    const v4f_json *root = v4f_json_doc_root(doc);
    CHECK_STR(v4f_json_get_str(root, "object", NULL), "chat.completion");
    CHECK_STR(v4f_json_get_str(root, "id", NULL), "chatcmpl-y");
    const v4f_json *ch = v4f_json_at(v4f_json_get(root, "choices"), 0);
    CHECK_STR(v4f_json_get_str(ch, "finish_reason", NULL), "tool_calls");
    const v4f_json *m = v4f_json_get(ch, "message");
    CHECK_STR(v4f_json_get_str(m, "role", NULL), "assistant");
    CHECK_STR(v4f_json_get_str(m, "content", NULL), "Listing.");
    CHECK_STR(v4f_json_get_str(m, "reasoning_content", NULL), "Let me look.");
    const v4f_json *c0 = v4f_json_at(v4f_json_get(m, "tool_calls"), 0);
    CHECK_STR(v4f_json_get_str(v4f_json_get(c0, "function"), "arguments", NULL), "{\"path\": \"src/\", \"depth\": 2}");
    CHECK_STR(v4f_json_get_str(c0, "type", NULL), "function");
    const v4f_json *tt = v4f_json_get(v4f_json_get(root, "usage"), "total_tokens");
    CHECK(tt && !strcmp(tt->str, "6"));
    v4f_json_doc_free(doc);
    v4f_json_buf_free(&b);
    v4f_oai_out_free(o);
    v4f_oai_req_free(&r);

    /* the reply re-renders as the DSML the model wrote: an agent's next
     * request starts with the live text */
    const char *turn2 =
        "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"Listing.\","
        "\"reasoning_content\":\"Let me look.\",\"tool_calls\":[{\"id\":\"call_1\",\"type\":\"function\","
        "\"function\":{\"name\":\"ls\",\"arguments\":\"{\\\"path\\\": \\\"src/\\\", \\\"depth\\\": 2}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"a.c\"}],\"tools\":[{\"type\":\"function\","
        "\"function\":{\"name\":\"ls\"}}]}";
    const char *turn1 = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"tools\":[{\"type\":\"function\","
                        "\"function\":{\"name\":\"ls\"}}]}";
    char *p1 = NULL, *p2 = NULL;
    size_t l1 = 0, l2 = 0;
    REQUIRE(parse(V4F_OAI_CHAT, turn1, &r, &err) == V4F_OK);
    REQUIRE(v4f_oai_prompt(&r, &p1, &l1, &err) == V4F_OK);
    v4f_oai_req_free(&r);
    REQUIRE(parse(V4F_OAI_CHAT, turn2, &r, &err) == V4F_OK);
    REQUIRE(v4f_oai_prompt(&r, &p2, &l2, &err) == V4F_OK);
    v4f_oai_req_free(&r);
    const size_t gl = strlen(TOOL_TEXT);
    CHECK_MSG(l2 > l1 + gl && !memcmp(p2, p1, l1) && !memcmp(p2 + l1, TOOL_TEXT, gl), "%s\n---\n%s", p1, p2);
    free(p1);
    free(p2);
}

TEST(oai_stop_strings_cut_and_hold_back) {
    const size_t steps[] = {0, 1, 2, 5};
    for (size_t si = 0; si < sizeof steps / sizeof *steps; si++) {
        for (int stream = 0; stream < 2; stream++) {
            char body[256];
            snprintf(body, sizeof body,
                     "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"think\":false,\"stream\":%s,"
                     "\"stop\":[\"STOP\",\"zz\"]}",
                     stream ? "true" : "false");
            v4f_oai_req r;
            v4f_err err = {0};
            REQUIRE(parse(V4F_OAI_CHAT, body, &r, &err) == V4F_OK);
            v4f_oai_out *o = v4f_oai_out_new(&r, "chatcmpl-z", 1);
            v4f_json_buf b;
            v4f_json_buf_init(&b);
            /* "STO" alone must be held back (it may begin STOP) and is sent
             * once it turns out not to */
            CHECK(feed_all(o, "one STO two S", steps[si], &b));
            if (stream) {
                sse_sum s;
                sse_parse(b.data ? b.data : "", b.len, &s);
                CHECK_MSG(strcmp(nz(&s.content), "one STO two ") == 0, "step %zu: '%s'", steps[si], nz(&s.content));
                sse_free(&s);
            }
            CHECK(!feed_all(o, "TOP three", steps[si], &b));
            CHECK(!v4f_oai_out_feed(o, "more", 4, &b)); /* stays stopped */
            v4f_oai_out_finish(o, "length", NULL, &b);
            CHECK_STR(v4f_oai_out_finish_reason(o), "stop");
            if (stream) {
                sse_sum s;
                sse_parse(b.data, b.len, &s);
                CHECK_STR(nz(&s.content), "one STO two ");
                CHECK(s.done_last && !s.bad_json && s.n_usage == 0);
                sse_free(&s);
            } else {
                CHECK_MSG(strstr(b.data, "\"content\":\"one STO two \"") != NULL, "%s", b.data);
            }
            v4f_json_buf_free(&b);
            v4f_oai_out_free(o);
            v4f_oai_req_free(&r);
        }
    }
}

TEST(oai_completion_text_and_length) {
    v4f_oai_req r;
    v4f_err err = {0};
    REQUIRE(parse(V4F_OAI_COMPLETION, "{\"prompt\":\"x\",\"stream\":true}", &r, &err) == V4F_OK);
    v4f_oai_out *o = v4f_oai_out_new(&r, "cmpl-a", 1);
    v4f_json_buf b;
    v4f_json_buf_init(&b);
    /* raw text: markers are not parsed */
    CHECK(feed_all(o, "a</think>b\xc3\xa9", 3, &b));
    v4f_oai_out_finish(o, "length", NULL, &b);
    sse_sum s;
    sse_parse(b.data, b.len, &s);
    CHECK_STR(nz(&s.text), "a</think>b\xc3\xa9");
    CHECK_STR(s.finish, "length");
    CHECK(s.done_last && !s.bad_json);
    sse_free(&s);
    v4f_json_buf_free(&b);
    v4f_oai_out_free(o);
    v4f_oai_req_free(&r);
}

TEST(oai_error_and_models_json) {
    v4f_json_buf b;
    v4f_json_buf_init(&b);
    v4f_oai_error_json(&b, "bad \"x\"", "invalid_request_error", "context_length_exceeded");
    CHECK_STR(b.data, "{\"error\":{\"message\":\"bad \\\"x\\\"\",\"type\":\"invalid_request_error\",\"param\":null,"
                      "\"code\":\"context_length_exceeded\"}}");
    b.len = 0;
    v4f_oai_models_json(&b, 4096, 7, true);
    CHECK_STR(b.data, "{\"object\":\"list\",\"data\":[{\"id\":\"deepseek-v4-flash\",\"object\":\"model\",\"created\":7,"
                      "\"owned_by\":\"v4flash\",\"context_length\":4096}]}");
    v4f_json_buf_free(&b);
    char a[64], c[64];
    v4f_oai_random_id(a, sizeof a, "call_");
    v4f_oai_random_id(c, sizeof c, "call_");
    CHECK_EQ_INT(strlen(a), 37);
    CHECK(strcmp(a, c) != 0);
}
