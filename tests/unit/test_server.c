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

/* ---- Anthropic /v1/messages ------------------------------------------------------- */

/* The Anthropic conversation renders exactly as its OpenAI equivalent. */
TEST(anth_request_renders_as_openai) {
    const char *anth =
        "{\"model\":\"claude-sonnet\",\"max_tokens\":100,\"system\":[{\"type\":\"text\",\"text\":\"You code.\"},"
        "{\"type\":\"text\",\"text\":\"Be brief.\",\"cache_control\":{\"type\":\"ephemeral\"}}],"
        "\"tools\":[{\"name\":\"ls\",\"description\":\"List files\",\"input_schema\":{\"type\":\"object\","
        "\"properties\":{\"path\":{\"type\":\"string\"}}}},{\"type\":\"web_search_20250305\",\"name\":\"web_search\"}],"
        "\"messages\":[{\"role\":\"user\",\"content\":\"List src\"},"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"thinking\",\"thinking\":\"Use ls.\",\"signature\":\"s\"},"
        "{\"type\":\"text\",\"text\":\"Listing.\"},{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"ls\","
        "\"input\":{\"path\":\"src\"}}]},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"toolu_1\",\"content\":"
        "[{\"type\":\"text\",\"text\":\"a.c\"}]},{\"type\":\"text\",\"text\":\"And now?\"}]}]}";
    const char *oai =
        "{\"messages\":[{\"role\":\"system\",\"content\":\"You code.\\n\\nBe brief.\"},"
        "{\"role\":\"user\",\"content\":\"List src\"},"
        "{\"role\":\"assistant\",\"content\":\"Listing.\",\"reasoning_content\":\"Use ls.\",\"tool_calls\":[{\"id\":"
        "\"toolu_1\",\"type\":\"function\",\"function\":{\"name\":\"ls\",\"arguments\":\"{\\\"path\\\":\\\"src\\\"}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"toolu_1\",\"content\":\"a.c\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"And now?\"}]}],"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"ls\",\"description\":\"List files\",\"parameters\":"
        "{\"type\":\"object\",\"properties\":{\"path\":{\"type\":\"string\"}}}}}]}";
    v4f_oai_req a, o;
    v4f_err err = {0};
    REQUIRE(parse(V4F_OAI_MESSAGES, anth, &a, &err) == V4F_OK);
    REQUIRE(parse(V4F_OAI_CHAT, oai, &o, &err) == V4F_OK);
    CHECK_EQ_INT(a.max_tokens, 100);
    CHECK_STR(a.model, "claude-sonnet");
    char *pa = NULL, *po = NULL;
    size_t la = 0, lo = 0;
    REQUIRE(v4f_oai_prompt(&a, &pa, &la, &err) == V4F_OK);
    REQUIRE(v4f_oai_prompt(&o, &po, &lo, &err) == V4F_OK);
    CHECK_MSG(la == lo && !memcmp(pa, po, la), "anthropic:\n%s\nopenai:\n%s", pa, po);
    CHECK(strstr(pa, "web_search") == NULL); /* a server tool is not rendered */
    free(pa);
    free(po);
    v4f_oai_req_free(&a);
    v4f_oai_req_free(&o);
    /* tool_choice none, thinking off, stop_sequences */
    REQUIRE(parse(V4F_OAI_MESSAGES,
                  "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"name\":\"ls\",\"input_schema\":{}}],"
                  "\"tool_choice\":{\"type\":\"none\"},\"thinking\":{\"type\":\"disabled\"},\"stop_sequences\":[\"##\"]}",
                  &a, &err) == V4F_OK);
    CHECK(a.tools == NULL && !a.thinking && a.n_stop == 1 && a.max_tokens == -1);
    v4f_oai_req_free(&a);
    static const char *const bad_bodies[] = {
        "{\"messages\":[{\"role\":\"system\",\"content\":\"x\"}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":5}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":\"no type\"}]}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"system\":7}",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"input_schema\":{}}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop_sequences\":\"x\"}",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"thinking\":{\"type\":\"sometimes\"}}",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":0}",
    };
    for (size_t i = 0; i < sizeof bad_bodies / sizeof *bad_bodies; i++)
        CHECK_MSG(parse(V4F_OAI_MESSAGES, bad_bodies[i], &a, &err) == V4F_STATUS_INVALID_ARG, "%s", bad_bodies[i]);
}

typedef struct anth_sum {
    v4f_json_buf thinking, text, input, names, events;
    char stop_reason[32], stop_sequence[32];
    int n_start, n_stop_events, bad;
    long in_tokens, cached, out_tokens;
} anth_sum;

static void anth_parse_stream(const char *s, size_t n, anth_sum *o) {
    memset(o, 0, sizeof *o);
    const char *end = s + n;
    int open = -1;
    while (s < end) {
        const char *e = strstr(s, "\n\n");
        const char *nl = strchr(s, '\n');
        if (!e || strncmp(s, "event: ", 7) || !nl || nl > e || strncmp(nl + 1, "data: ", 6)) {
            o->bad++;
            break;
        }
        v4f_json_buf_append(&o->events, s + 7, (size_t)(nl - s - 7));
        v4f_json_buf_putc(&o->events, ' ');
        const char *d = nl + 7;
        v4f_json_doc *doc = NULL;
        v4f_err err = {0};
        if (v4f_json_parse(d, (size_t)(e - d), NULL, &doc, &err)) {
            o->bad++;
            break;
        }
        const v4f_json *root = v4f_json_doc_root(doc);
        size_t tl = 0;
        const char *ty = v4f_json_get_str(root, "type", &tl);
        if (!ty || strncmp(ty, s + 7, (size_t)(nl - s - 7))) o->bad++; /* event name = type */
        const v4f_json *idx = v4f_json_get(root, "index");
        const long ix = idx ? strtol(idx->str, NULL, 10) : -1;
        if (ty && !strcmp(ty, "message_start")) {
            o->n_start++;
            const v4f_json *u = v4f_json_get(v4f_json_get(root, "message"), "usage");
            o->in_tokens = strtol(v4f_json_get(u, "input_tokens")->str, NULL, 10);
            o->cached = strtol(v4f_json_get(u, "cache_read_input_tokens")->str, NULL, 10);
        } else if (ty && !strcmp(ty, "content_block_start")) {
            if (open != -1) o->bad++;
            open = (int)ix;
            const v4f_json *cb = v4f_json_get(root, "content_block");
            size_t nl2 = 0;
            const char *nm = v4f_json_get_str(cb, "name", &nl2);
            if (nm) v4f_json_buf_append(&o->names, nm, nl2);
        } else if (ty && !strcmp(ty, "content_block_delta")) {
            if (ix != open) o->bad++;
            const v4f_json *dl = v4f_json_get(root, "delta");
            str_member(&o->thinking, dl, "thinking");
            str_member(&o->text, dl, "text");
            str_member(&o->input, dl, "partial_json");
        } else if (ty && !strcmp(ty, "content_block_stop")) {
            if (ix != open) o->bad++;
            open = -1;
        } else if (ty && !strcmp(ty, "message_delta")) {
            const v4f_json *dl = v4f_json_get(root, "delta");
            size_t l2 = 0;
            const char *sr = v4f_json_get_str(dl, "stop_reason", &l2);
            if (sr) snprintf(o->stop_reason, sizeof o->stop_reason, "%.*s", (int)l2, sr);
            const char *sq = v4f_json_get_str(dl, "stop_sequence", &l2);
            if (sq) snprintf(o->stop_sequence, sizeof o->stop_sequence, "%.*s", (int)l2, sq);
            o->out_tokens = strtol(v4f_json_get(v4f_json_get(root, "usage"), "output_tokens")->str, NULL, 10);
        } else if (ty && !strcmp(ty, "message_stop")) {
            o->n_stop_events++;
        }
        v4f_json_doc_free(doc);
        s = e + 2;
    }
    if (open != -1) o->bad++;
}

static void anth_free(anth_sum *o) {
    v4f_json_buf_free(&o->thinking);
    v4f_json_buf_free(&o->text);
    v4f_json_buf_free(&o->input);
    v4f_json_buf_free(&o->names);
    v4f_json_buf_free(&o->events);
}

TEST(anth_stream_blocks) {
    const size_t steps[] = {0, 1, 3, 8};
    for (size_t si = 0; si < sizeof steps / sizeof *steps; si++) {
        v4f_oai_req r;
        v4f_err err = {0};
        REQUIRE(parse(V4F_OAI_MESSAGES, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":true}", &r,
                      &err) == V4F_OK);
        v4f_oai_out *o = v4f_oai_out_new(&r, "msg_x", 1);
        v4f_oai_out_prompt_usage(o, 20, 15);
        v4f_json_buf b;
        v4f_json_buf_init(&b);
        feed_all(o, TOOL_TEXT, steps[si], &b);
        const v4f_oai_usage u = {.prompt_tokens = 20, .completion_tokens = 9, .cached_tokens = 15};
        v4f_oai_out_finish(o, "eos", &u, &b);
        anth_sum s;
        anth_parse_stream(b.data, b.len, &s);
        CHECK_MSG(s.bad == 0 && s.n_start == 1 && s.n_stop_events == 1, "step %zu: %s", steps[si], b.data);
        CHECK_STR(nz(&s.thinking), "Let me look.");
        CHECK_STR(nz(&s.text), "Listing.");
        CHECK_STR(nz(&s.names), "ls");
        CHECK_STR(nz(&s.input), "{\"path\":\"src/\",\"depth\":2}");
        CHECK_STR(s.stop_reason, "tool_use");
        CHECK_EQ_INT(s.in_tokens, 5);
        CHECK_EQ_INT(s.cached, 15);
        CHECK_EQ_INT(s.out_tokens, 9);
        anth_free(&s);
        v4f_json_buf_free(&b);
        v4f_oai_out_free(o);
        v4f_oai_req_free(&r);
    }
}

TEST(anth_message_object_and_stop_sequence) {
    v4f_oai_req r;
    v4f_err err = {0};
    REQUIRE(parse(V4F_OAI_MESSAGES, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", &r, &err) == V4F_OK);
    v4f_oai_out *o = v4f_oai_out_new(&r, "msg_y", 1);
    v4f_json_buf b;
    v4f_json_buf_init(&b);
    feed_all(o, TOOL_TEXT, 4, &b);
    const v4f_oai_usage u = {.prompt_tokens = 7, .completion_tokens = 3, .cached_tokens = 2};
    v4f_oai_out_finish(o, "eos", &u, &b);
    v4f_json_doc *doc = NULL;
    REQUIRE(v4f_json_parse(b.data, b.len, NULL, &doc, &err) == V4F_OK);
    const v4f_json *root = v4f_json_doc_root(doc);
    CHECK_STR(v4f_json_get_str(root, "type", NULL), "message");
    CHECK_STR(v4f_json_get_str(root, "stop_reason", NULL), "tool_use");
    const v4f_json *c = v4f_json_get(root, "content");
    REQUIRE(c && c->n == 3);
    CHECK_STR(v4f_json_get_str(v4f_json_at(c, 0), "thinking", NULL), "Let me look.");
    CHECK_STR(v4f_json_get_str(v4f_json_at(c, 1), "text", NULL), "Listing.");
    const v4f_json *tu = v4f_json_at(c, 2);
    CHECK_STR(v4f_json_get_str(tu, "type", NULL), "tool_use");
    size_t il = 0;
    const char *id = v4f_json_get_str(tu, "id", &il);
    CHECK(id && il == 38 && !strncmp(id, "toolu_", 6));
    CHECK_STR(v4f_json_get_str(v4f_json_get(tu, "input"), "path", NULL), "src/");
    const v4f_json *it = v4f_json_get(v4f_json_get(root, "usage"), "input_tokens");
    CHECK(it && !strcmp(it->str, "5"));
    v4f_json_doc_free(doc);
    v4f_json_buf_free(&b);
    v4f_oai_out_free(o);
    v4f_oai_req_free(&r);

    REQUIRE(parse(V4F_OAI_MESSAGES,
                  "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"thinking\":{\"type\":\"disabled\"},"
                  "\"stop_sequences\":[\"END\"],\"stream\":true}",
                  &r, &err) == V4F_OK);
    o = v4f_oai_out_new(&r, "msg_z", 1);
    v4f_json_buf_init(&b);
    CHECK(feed_all(o, "abc EN", 1, &b)); /* "EN" may begin END: held back */
    CHECK(!feed_all(o, "D tail", 1, &b));
    v4f_oai_out_finish(o, "length", NULL, &b);
    anth_sum s;
    anth_parse_stream(b.data, b.len, &s);
    CHECK_MSG(s.bad == 0, "%s", b.data);
    CHECK_STR(nz(&s.text), "abc ");
    CHECK_STR(s.stop_reason, "stop_sequence");
    CHECK_STR(s.stop_sequence, "END");
    anth_free(&s);
    v4f_json_buf_free(&b);
    v4f_oai_out_free(o);
    v4f_oai_req_free(&r);

    v4f_json_buf_init(&b);
    v4f_oai_error_json_for(V4F_OAI_MESSAGES, &b, "no", "invalid_request_error", NULL);
    CHECK_STR(b.data, "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"no\"}}");
    v4f_json_buf_free(&b);
}

/* ---- the live session (src/server/srv.c) on the CPU ------------------------------- */

#include "model/forward.h"
#include "model/model.h"
#include "server/srv.h"
#include "tokenizer/tokenizer.h"

typedef struct srv_cap {
    char text[4096];
    size_t n;
    int stop_after; /* pieces to accept (0: all) */
    int pieces, cancel_at_poll, polls;
} srv_cap;

static bool cap_text(void *ud, const char *s, size_t n) {
    srv_cap *c = ud;
    if (c->n + n < sizeof c->text) {
        memcpy(c->text + c->n, s, n);
        c->n += n;
        c->text[c->n] = 0;
    }
    return !c->stop_after || ++c->pieces < c->stop_after;
}

static bool cap_cancel(void *ud) {
    srv_cap *c = ud;
    return c->cancel_at_poll && ++c->polls >= c->cancel_at_poll;
}

static v4f_status srv_go(v4f_srv *w, const char *prompt, uint64_t max_tokens, float temp, srv_cap *c,
                         v4f_srv_result *r, v4f_err *err) {
    v4f_srv_job j = {.prompt = prompt, .prompt_len = strlen(prompt), .max_tokens = max_tokens};
    j.sp = v4f_sampler_params_default();
    j.sp.temperature = temp;
    j.sp.seed = 7;
    const v4f_srv_sink k = {.ud = c, .text = cap_text, .cancelled = cap_cancel};
    return v4f_srv_generate(w, &j, &k, r, err);
}

TEST(srv_session_ends_and_errors) {
    v4f_model *m = NULL;
    v4f_err err = {0};
    REQUIRE(v4f_model_open(test_fixture_path("model/tiny-q2.gguf"), NULL, &m, NULL, &err) == V4F_OK);
    v4f_tok *tok = NULL;
    REQUIRE(v4f_tok_from_gguf(m->gguf, &tok, &err) == V4F_OK);
    const v4f_session_opts so = {.n_ctx = 64, .n_threads = 2};
    v4f_session *s = NULL;
    REQUIRE(v4f_session_new(m, &so, &s, &err) == V4F_OK);
    const v4f_srv_opts o = {.n_vocab = m->cfg.n_vocab, .snapshot_min = 4};
    v4f_srv *w = v4f_srv_new(s, tok, 64, &o);
    srv_cap c = {0};
    v4f_srv_result r;
    /* the reply stops at max_tokens; the KV holds the prompt and the
     * evaluated reply tokens (the last sampled one is not evaluated) */
    REQUIRE(srv_go(w, "Hello there, model", 5, 0.8f, &c, &r, &err) == V4F_OK);
    CHECK_STR(r.end, "length");
    CHECK_EQ_INT(r.n_gen, 5);
    CHECK_EQ_INT(v4f_srv_pos(w), r.n_prompt + 4);
    CHECK_EQ_INT(v4f_session_pos(s), v4f_srv_pos(w));
    /* the context: a prompt that does not fit is refused before the KV moves */
    static char big[4096];
    size_t n = 0;
    for (int i = 0; i < 100; i++) n += (size_t)snprintf(big + n, sizeof big - n, "w%d ", i);
    const uint32_t before = v4f_srv_pos(w);
    memset(&c, 0, sizeof c);
    CHECK(srv_go(w, big, 5, 0, &c, &r, &err) == V4F_STATUS_RANGE);
    CHECK(strstr(err.msg, "context holds 64") != NULL);
    CHECK_EQ_INT(v4f_srv_pos(w), before);
    /* the reply runs into the context's end: "length" at 64 positions */
    memset(&c, 0, sizeof c);
    REQUIRE(srv_go(w, "Hello there, model", 0, 0, &c, &r, &err) == V4F_OK);
    CHECK_STR(r.end, "length"); /* greedy from this prompt meets no EOS (deterministic) */
    CHECK_EQ_INT(r.n_prompt + r.n_gen, 64);
    CHECK_EQ_INT(v4f_session_pos(s), v4f_srv_pos(w));
    /* the sink stops it (a stop string): the stopping token is not evaluated */
    memset(&c, 0, sizeof c);
    c.stop_after = 2;
    REQUIRE(srv_go(w, "Hello there, model", 20, 0, &c, &r, &err) == V4F_OK);
    CHECK_STR(r.end, "stop");
    CHECK_EQ_INT(r.n_gen, 2);
    CHECK_EQ_INT(v4f_session_pos(s), v4f_srv_pos(w));
    CHECK_EQ_INT(v4f_srv_pos(w), r.n_prompt + 1);
    /* cancelled before the first prefill piece: nothing evaluated, the
     * next request still works and reuses what is there */
    memset(&c, 0, sizeof c);
    c.cancel_at_poll = 1;
    REQUIRE(srv_go(w, "A different prompt entirely", 5, 0, &c, &r, &err) == V4F_OK);
    CHECK_STR(r.end, "cancelled");
    CHECK_EQ_INT(r.n_gen, 0);
    CHECK_EQ_INT(v4f_session_pos(s), v4f_srv_pos(w));
    memset(&c, 0, sizeof c);
    REQUIRE(srv_go(w, "A different prompt entirely", 3, 0, &c, &r, &err) == V4F_OK);
    CHECK_STR(r.end, "length");
    v4f_srv_free(w);
    v4f_session_free(s);
    v4f_tok_free(tok);
    v4f_model_close(m);
}
