/*
 * oai.c - OpenAI-compatible requests and responses (see oai.h).
 */
#include "server/oai.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "tokenizer/chat.h"
#include "tokenizer/dsml.h"

#define BODY_MAX_DEPTH 128 /* nesting of a request body (tool schemas nest a few levels) */

/* ---- request parsing --------------------------------------------------------- */

static v4f_status bad(v4f_err *err, const char *field, const char *what) {
    return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "'%s' %s", field, what);
}

/* A JSON number member as a double in [lo, hi]; absent or null leaves *out. */
static v4f_status get_num(const v4f_json *obj, const char *key, double lo, double hi, bool integer,
                          double *out, bool *given, v4f_err *err) {
    const v4f_json *v = v4f_json_get(obj, key);
    if (!v || v->type == V4F_JSON_NULL) return V4F_OK;
    if (v->type != V4F_JSON_NUMBER) return bad(err, key, integer ? "must be an integer" : "must be a number");
    if (integer && !v->is_int) return bad(err, key, "must be an integer");
    char tmp[64];
    if (v->len >= sizeof tmp) return bad(err, key, "is out of range");
    memcpy(tmp, v->str, v->len);
    tmp[v->len] = 0;
    errno = 0;
    double x = strtod(tmp, NULL);
    if (errno || !isfinite(x) || x < lo || x > hi) {
        char msg[96];
        if (lo == hi) snprintf(msg, sizeof msg, "must be %g (the only value supported)", lo);
        else snprintf(msg, sizeof msg, "must be between %g and %g", lo, hi);
        return bad(err, key, msg);
    }
    *out = x;
    if (given) *given = true;
    return V4F_OK;
}

static v4f_status get_bool(const v4f_json *obj, const char *key, bool *out, v4f_err *err) {
    const v4f_json *v = v4f_json_get(obj, key);
    if (!v || v->type == V4F_JSON_NULL) return V4F_OK;
    if (v->type != V4F_JSON_TRUE && v->type != V4F_JSON_FALSE) return bad(err, key, "must be true or false");
    *out = v->type == V4F_JSON_TRUE;
    return V4F_OK;
}

static bool str_is(const v4f_json *v, const char *s) {
    return v && v->type == V4F_JSON_STRING && v->len == strlen(s) && !memcmp(v->str, s, v->len);
}

/* A stop list into r->stop: OpenAI's "stop" (a string, or a list of at most
 * 4), Anthropic's "stop_sequences" (a list; at most 4 non-empty). Empty
 * strings are dropped. */
static v4f_status parse_stop(const v4f_json *root, const char *key, bool openai, v4f_oai_req *r, v4f_err *err) {
    const v4f_json *v = v4f_json_get(root, key);
    if (!v || v->type == V4F_JSON_NULL) return V4F_OK;
    const char *shape = openai ? "must be a string or a list of strings" : "must be a list of strings";
    const v4f_json *one = openai && v->type == V4F_JSON_STRING ? v : NULL;
    if (!one && v->type != V4F_JSON_ARRAY) return bad(err, key, shape);
    if (openai && !one && v->n > V4F_OAI_MAX_STOP) return bad(err, key, "has more than 4 entries");
    for (const v4f_json *s = one ? one : v->child; s; s = one ? NULL : s->next) {
        if (s->type != V4F_JSON_STRING) return bad(err, key, shape);
        if (s->len == 0) continue; /* an empty stop string matches nothing useful */
        if (r->n_stop == V4F_OAI_MAX_STOP) return bad(err, key, "has more than 4 entries");
        if (s->len > V4F_OAI_STOP_MAX_BYTES) return bad(err, key, "has a string longer than 256 bytes");
        memcpy(r->stop[r->n_stop], s->str, s->len);
        r->stop[r->n_stop][s->len] = 0;
        r->stop_len[r->n_stop++] = s->len;
    }
    return V4F_OK;
}

/* {"type": "enabled" | "disabled"} -> r->thinking (anything else: an error) */
static v4f_status thinking_type(const v4f_json *t, v4f_oai_req *r, v4f_err *err) {
    const v4f_json *ty = v4f_json_get(t, "type");
    if (str_is(ty, "enabled")) r->thinking = true;
    else if (str_is(ty, "disabled")) r->thinking = false;
    else return bad(err, "thinking.type", "must be \"enabled\" or \"disabled\"");
    return V4F_OK;
}

/* thinking / think / reasoning_effort / model alias -> r->thinking, think_max */
static v4f_status parse_thinking(const v4f_json *root, const v4f_oai_defaults *d, v4f_oai_req *r, v4f_err *err) {
    const v4f_json *model = v4f_json_get(root, "model");
    if (str_is(model, "deepseek-chat")) r->thinking = false;
    if (str_is(model, "deepseek-reasoner")) r->thinking = true;
    const v4f_json *t = v4f_json_get(root, "thinking");
    if (t && t->type == V4F_JSON_OBJECT) {
        v4f_status st = thinking_type(t, r, err);
        if (st) return st;
    } else if (t && t->type != V4F_JSON_NULL) {
        v4f_status st = get_bool(root, "thinking", &r->thinking, err);
        if (st) return st;
    }
    v4f_status st = get_bool(root, "think", &r->thinking, err);
    if (st) return st;
    const v4f_json *e = v4f_json_get(root, "reasoning_effort");
    if (e && e->type != V4F_JSON_NULL) {
        static const char *const ok[] = {"minimal", "low", "medium", "high", "xhigh"};
        bool known = false;
        for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) known |= str_is(e, ok[i]);
        if (str_is(e, "none")) {
            r->thinking = false;
        } else if (str_is(e, "max")) {
            r->thinking = true;
            r->think_max = d->think_max_ok;
        } else if (!known) {
            return bad(err, "reasoning_effort", "must be one of none, minimal, low, medium, high, xhigh, max");
        }
    }
    return V4F_OK;
}

/* ---- Anthropic requests -> the OpenAI message form ------------------------------ */

/* Text of an Anthropic content value (a string, or blocks whose text parts
 * are joined by "\n\n"), appended as a JSON string literal. */
static void anth_text_literal(v4f_json_buf *b, const v4f_json *v) {
    if (v4f_json_is(v, V4F_JSON_STRING)) {
        v4f_json_write_string(b, v->str, v->len, 0);
        return;
    }
    v4f_json_buf t;
    v4f_json_buf_init(&t);
    for (const v4f_json *p = v4f_json_is(v, V4F_JSON_ARRAY) ? v->child : NULL; p; p = p->next) {
        size_t tl = 0;
        const char *tx = v4f_json_get_str(p, "text", &tl);
        if (!tx) continue;
        if (t.len) v4f_json_buf_puts(&t, "\n\n");
        v4f_json_buf_append(&t, tx, tl);
    }
    v4f_json_write_string(b, t.len ? t.data : "", t.len, 0);
    v4f_json_buf_free(&t);
}

/* One Anthropic message -> one or more OpenAI messages appended to b
 * (comma-separated; *first tracks the list). */
static v4f_status anth_message(v4f_json_buf *b, const v4f_json *m, size_t idx, bool *first, v4f_err *err) {
    size_t rl = 0;
    const char *role = v4f_json_get_str(m, "role", &rl);
    const bool user = role && !strcmp(role, "user"), asst = role && !strcmp(role, "assistant");
    if (!user && !asst)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "'messages' %zu: role must be \"user\" or \"assistant\"", idx);
    const v4f_json *c = v4f_json_get(m, "content");
    if (!v4f_json_is(c, V4F_JSON_STRING) && !v4f_json_is(c, V4F_JSON_ARRAY))
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "'messages' %zu: content must be a string or a list of blocks",
                           idx);
#define SEP() (*first ? (void)(*first = false) : v4f_json_buf_putc(b, ','))
    if (c->type == V4F_JSON_STRING) {
        SEP();
        v4f_json_buf_puts(b, user ? "{\"role\":\"user\",\"content\":" : "{\"role\":\"assistant\",\"content\":");
        v4f_json_write_string(b, c->str, c->len, 0);
        v4f_json_buf_putc(b, '}');
        return V4F_OK;
    }
    for (const v4f_json *p = c->child; p; p = p->next)
        if (!v4f_json_is(p, V4F_JSON_OBJECT) || !v4f_json_get_str(p, "type", NULL))
            return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "'messages' %zu: a content block without a type", idx);
    if (user) {
        /* tool results become tool messages; the other blocks one user
         * message, in order around them */
        const v4f_json *p = c->child;
        while (p) {
            const char *ty = v4f_json_get_str(p, "type", NULL);
            if (!strcmp(ty, "tool_result")) {
                size_t il = 0;
                const char *id = v4f_json_get_str(p, "tool_use_id", &il);
                SEP();
                v4f_json_buf_puts(b, "{\"role\":\"tool\",\"tool_call_id\":");
                v4f_json_write_string(b, id ? id : "", id ? il : 0, 0);
                v4f_json_buf_puts(b, ",\"content\":");
                anth_text_literal(b, v4f_json_get(p, "content"));
                v4f_json_buf_putc(b, '}');
                p = p->next;
                continue;
            }
            SEP();
            v4f_json_buf_puts(b, "{\"role\":\"user\",\"content\":[");
            bool f2 = true;
            for (; p && strcmp(v4f_json_get_str(p, "type", NULL), "tool_result"); p = p->next) {
                if (!f2) v4f_json_buf_putc(b, ',');
                f2 = false;
                const char *t2 = v4f_json_get_str(p, "type", NULL);
                size_t tl = 0;
                const char *tx = v4f_json_get_str(p, "text", &tl);
                if (!strcmp(t2, "text") && tx) {
                    v4f_json_buf_puts(b, "{\"type\":\"text\",\"text\":");
                    v4f_json_write_string(b, tx, tl, 0);
                    v4f_json_buf_putc(b, '}');
                } else { /* images, documents: the renderer names them unsupported */
                    v4f_json_buf_puts(b, "{\"type\":");
                    v4f_json_write_string(b, t2, strlen(t2), 0);
                    v4f_json_buf_putc(b, '}');
                }
            }
            v4f_json_buf_puts(b, "]}");
        }
        return V4F_OK;
    }
    v4f_json_buf reasoning, text, calls;
    v4f_json_buf_init(&reasoning);
    v4f_json_buf_init(&text);
    v4f_json_buf_init(&calls);
    for (const v4f_json *p = c->child; p; p = p->next) {
        const char *ty = v4f_json_get_str(p, "type", NULL);
        size_t tl = 0;
        const char *tx;
        if (!strcmp(ty, "thinking") && (tx = v4f_json_get_str(p, "thinking", &tl))) {
            v4f_json_buf_append(&reasoning, tx, tl);
        } else if (!strcmp(ty, "text") && (tx = v4f_json_get_str(p, "text", &tl))) {
            v4f_json_buf_append(&text, tx, tl);
        } else if (!strcmp(ty, "tool_use")) {
            size_t nl = 0, il = 0;
            const char *name = v4f_json_get_str(p, "name", &nl), *id = v4f_json_get_str(p, "id", &il);
            const v4f_json *in = v4f_json_get(p, "input");
            v4f_json_buf args;
            v4f_json_buf_init(&args);
            if (in) v4f_json_write(&args, in, 0);
            else v4f_json_buf_puts(&args, "{}");
            v4f_json_buf_puts(&calls, calls.len ? ",{\"id\":" : "{\"id\":");
            v4f_json_write_string(&calls, id ? id : "", id ? il : 0, 0);
            v4f_json_buf_puts(&calls, ",\"type\":\"function\",\"function\":{\"name\":");
            v4f_json_write_string(&calls, name ? name : "", name ? nl : 0, 0);
            v4f_json_buf_puts(&calls, ",\"arguments\":");
            v4f_json_write_string(&calls, args.data, args.len, 0);
            v4f_json_buf_puts(&calls, "}}");
            v4f_json_buf_free(&args);
        }
    }
    SEP();
    v4f_json_buf_puts(b, "{\"role\":\"assistant\",\"content\":");
    v4f_json_write_string(b, text.len ? text.data : "", text.len, 0);
    if (reasoning.len) {
        v4f_json_buf_puts(b, ",\"reasoning_content\":");
        v4f_json_write_string(b, reasoning.data, reasoning.len, 0);
    }
    if (calls.len) {
        v4f_json_buf_puts(b, ",\"tool_calls\":[");
        v4f_json_buf_append(b, calls.data, calls.len);
        v4f_json_buf_putc(b, ']');
    }
    v4f_json_buf_putc(b, '}');
#undef SEP
    v4f_json_buf_free(&reasoning);
    v4f_json_buf_free(&text);
    v4f_json_buf_free(&calls);
    return V4F_OK;
}

/* The Anthropic request's conversation and tools as one OpenAI-form document
 * {"messages": [...], "tools": [...]} (r->conv). */
static v4f_status anth_convert(const v4f_json *root, v4f_oai_req *r, v4f_err *err) {
    const v4f_json *msgs = v4f_json_get(root, "messages");
    if (!v4f_json_is(msgs, V4F_JSON_ARRAY) || msgs->n == 0) return bad(err, "messages", "must be a non-empty list");
    v4f_json_buf b;
    v4f_json_buf_init(&b);
    v4f_json_buf_puts(&b, "{\"messages\":[");
    bool first = true;
    const v4f_json *sys = v4f_json_get(root, "system");
    if (sys && sys->type != V4F_JSON_NULL) {
        if (!v4f_json_is(sys, V4F_JSON_STRING) && !v4f_json_is(sys, V4F_JSON_ARRAY)) {
            v4f_json_buf_free(&b);
            return bad(err, "system", "must be a string or a list of text blocks");
        }
        v4f_json_buf_puts(&b, "{\"role\":\"system\",\"content\":");
        anth_text_literal(&b, sys);
        v4f_json_buf_putc(&b, '}');
        first = false;
    }
    v4f_status st = V4F_OK;
    size_t i = 0;
    for (const v4f_json *m = msgs->child; m && !st; m = m->next, i++) {
        if (!v4f_json_is(m, V4F_JSON_OBJECT)) st = bad(err, "messages", "must hold objects");
        else st = anth_message(&b, m, i, &first, err);
    }
    v4f_json_buf_puts(&b, "],\"tools\":[");
    const v4f_json *tools = v4f_json_get(root, "tools");
    if (!st && tools && tools->type != V4F_JSON_NULL && !v4f_json_is(tools, V4F_JSON_ARRAY))
        st = bad(err, "tools", "must be a list");
    bool ft = true;
    for (const v4f_json *t = tools && tools->type == V4F_JSON_ARRAY ? tools->child : NULL; t && !st; t = t->next) {
        size_t nl = 0, dl = 0;
        const char *name = v4f_json_get_str(t, "name", &nl), *desc = v4f_json_get_str(t, "description", &dl);
        const v4f_json *schema = v4f_json_get(t, "input_schema");
        if (!name) {
            st = bad(err, "tools", "must hold objects with a name");
            break;
        }
        if (!schema) continue; /* a server tool (web search ...): not something this model calls */
        if (!ft) v4f_json_buf_putc(&b, ',');
        ft = false;
        v4f_json_buf_puts(&b, "{\"type\":\"function\",\"function\":{\"name\":");
        v4f_json_write_string(&b, name, nl, 0);
        if (desc) {
            v4f_json_buf_puts(&b, ",\"description\":");
            v4f_json_write_string(&b, desc, dl, 0);
        }
        v4f_json_buf_puts(&b, ",\"parameters\":");
        v4f_json_write(&b, schema, 0);
        v4f_json_buf_puts(&b, "}}");
    }
    v4f_json_buf_puts(&b, "]}");
    if (!st) {
        const v4f_json_limits lim = {.max_bytes = b.len + 1, .max_depth = BODY_MAX_DEPTH + 8};
        st = v4f_json_parse(b.data, b.len, &lim, &r->conv, err);
    }
    v4f_json_buf_free(&b);
    if (st) return st;
    const v4f_json *croot = v4f_json_doc_root(r->conv);
    r->messages = v4f_json_get(croot, "messages");
    const v4f_json *ct = v4f_json_get(croot, "tools");
    r->tools = ct && ct->n ? ct : NULL;
    const v4f_json *tc = v4f_json_get(root, "tool_choice");
    if (str_is(v4f_json_get(tc, "type"), "none")) r->tools = NULL;
    const v4f_json *th = v4f_json_get(root, "thinking");
    if (th && th->type != V4F_JSON_NULL && (st = thinking_type(th, r, err))) return st;
    if ((st = parse_stop(root, "stop_sequences", false, r, err))) return st;
    double mt = -1;
    st = get_num(root, "max_tokens", 1, 1e15, true, &mt, NULL, err);
    r->max_tokens = (int64_t)mt;
    return st;
}

v4f_status v4f_oai_parse(v4f_oai_kind kind, const char *body, size_t len, const v4f_oai_defaults *d,
                         v4f_oai_req *out, v4f_err *err) {
    memset(out, 0, sizeof *out);
    out->kind = kind;
    const v4f_json_limits lim = {.max_bytes = len + 1, .max_depth = BODY_MAX_DEPTH};
    v4f_json_doc *doc = NULL;
    v4f_status st = v4f_json_parse(body, len, &lim, &doc, err);
    if (st) {
        char m[sizeof err->msg];
        snprintf(m, sizeof m, "%s", err->msg);
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "the body is not valid JSON: %s", m);
    }
    const v4f_json *root = v4f_json_doc_root(doc);
    v4f_oai_req *r = out;
    r->doc = doc;
    r->thinking = d->thinking;
    r->temperature = d->temperature;
    r->top_p = d->top_p;
    r->min_p = d->min_p;
    r->top_k = d->top_k;
    r->max_tokens = -1;
    snprintf(r->model, sizeof r->model, "%s", V4F_OAI_MODEL_ID);
    if (!v4f_json_is(root, V4F_JSON_OBJECT)) {
        st = v4f_err_set(err, V4F_STATUS_INVALID_ARG, "the body must be a JSON object");
        goto fail;
    }
    size_t ml = 0;
    const char *model = v4f_json_get_str(root, "model", &ml);
    if (model && ml > 0 && ml < sizeof r->model && !memchr(model, 0, ml)) {
        memcpy(r->model, model, ml);
        r->model[ml] = 0;
    }
    if (kind == V4F_OAI_MESSAGES) {
        if ((st = anth_convert(root, r, err))) goto fail;
    } else if (kind == V4F_OAI_CHAT) {
        r->messages = v4f_json_get(root, "messages");
        if (!v4f_json_is(r->messages, V4F_JSON_ARRAY) || r->messages->n == 0) {
            st = bad(err, "messages", "must be a non-empty list");
            goto fail;
        }
        for (const v4f_json *m = r->messages->child; m; m = m->next)
            if (!v4f_json_is(m, V4F_JSON_OBJECT)) {
                st = bad(err, "messages", "must hold objects");
                goto fail;
            }
        const v4f_json *tools = v4f_json_get(root, "tools");
        if (tools && tools->type != V4F_JSON_NULL) {
            if (tools->type != V4F_JSON_ARRAY) {
                st = bad(err, "tools", "must be a list");
                goto fail;
            }
            for (const v4f_json *t = tools->child; t; t = t->next)
                if (!v4f_json_is(v4f_json_get(t, "function"), V4F_JSON_OBJECT)) {
                    st = bad(err, "tools", "must hold {\"type\": \"function\", \"function\": {...}} objects");
                    goto fail;
                }
            if (tools->n) r->tools = tools;
        }
        const v4f_json *tc = v4f_json_get(root, "tool_choice");
        if (str_is(tc, "none")) r->tools = NULL;
        if ((st = parse_thinking(root, d, r, err))) goto fail;
        double mt = -1;
        if ((st = get_num(root, "max_completion_tokens", 1, 1e15, true, &mt, NULL, err))) goto fail;
        if (mt < 0 && (st = get_num(root, "max_tokens", 1, 1e15, true, &mt, NULL, err))) goto fail;
        r->max_tokens = (int64_t)mt;
    } else {
        const v4f_json *p = v4f_json_get(root, "prompt");
        if (v4f_json_is(p, V4F_JSON_ARRAY) && p->n == 1) p = p->child;
        if (!v4f_json_is(p, V4F_JSON_STRING)) {
            st = bad(err, "prompt", "must be a string (or a list of one string)");
            goto fail;
        }
        r->prompt = p->str;
        r->prompt_len = p->len;
        static const char *const refused[] = {"echo", "suffix", "logprobs"};
        for (size_t i = 0; i < sizeof refused / sizeof *refused; i++)
            if (v4f_json_truthy(v4f_json_get(root, refused[i]))) {
                st = bad(err, refused[i], "is not supported");
                goto fail;
            }
        double mt = -1;
        if ((st = get_num(root, "max_tokens", 1, 1e15, true, &mt, NULL, err))) goto fail;
        r->max_tokens = (int64_t)mt;
    }
    double n = 1, best_of = 1;
    if ((st = get_num(root, "n", 1, 1, true, &n, NULL, err))) goto fail;
    if ((st = get_num(root, "best_of", 1, 1, true, &best_of, NULL, err))) goto fail;
    double x = r->temperature;
    if ((st = get_num(root, "temperature", 0, 100, false, &x, NULL, err))) goto fail;
    r->temperature = (float)x;
    x = r->top_p;
    if ((st = get_num(root, "top_p", 1e-9, 1, false, &x, NULL, err))) goto fail;
    r->top_p = (float)x;
    x = r->min_p;
    if ((st = get_num(root, "min_p", 0, 1, false, &x, NULL, err))) goto fail;
    r->min_p = (float)x;
    x = r->top_k;
    if ((st = get_num(root, "top_k", 0, 1 << 30, true, &x, NULL, err))) goto fail;
    r->top_k = (int32_t)x;
    x = 0;
    /* seeds are integers up to 2^53 here (JSON clients rarely send more) */
    if ((st = get_num(root, "seed", -9007199254740992.0, 9007199254740992.0, true, &x, &r->seed_given, err)))
        goto fail;
    r->seed = (uint64_t)(int64_t)x;
    if ((st = get_bool(root, "stream", &r->stream, err))) goto fail;
    const v4f_json *so = v4f_json_get(root, "stream_options");
    if (v4f_json_is(so, V4F_JSON_OBJECT) && (st = get_bool(so, "include_usage", &r->include_usage, err)))
        goto fail;
    if (kind != V4F_OAI_MESSAGES && (st = parse_stop(root, "stop", true, r, err))) goto fail;
    return V4F_OK;
fail:
    v4f_json_doc_free(doc);
    v4f_json_doc_free(r->conv);
    memset(out, 0, sizeof *out);
    return st;
}

void v4f_oai_req_free(v4f_oai_req *r) {
    if (!r) return;
    v4f_json_doc_free(r->doc);
    v4f_json_doc_free(r->conv);
    r->doc = NULL;
    r->conv = NULL;
}

v4f_status v4f_oai_prompt(const v4f_oai_req *r, char **out, size_t *out_len, v4f_err *err) {
    if (r->kind == V4F_OAI_COMPLETION) {
        char *p = v4f_xmalloc(r->prompt_len + 1);
        memcpy(p, r->prompt, r->prompt_len);
        p[r->prompt_len] = 0;
        *out = p;
        *out_len = r->prompt_len;
        return V4F_OK;
    }
    v4f_chat_opts o;
    v4f_chat_opts_default(&o);
    o.thinking = r->thinking;
    o.effort = r->thinking && r->think_max ? V4F_CHAT_EFFORT_MAX : V4F_CHAT_EFFORT_NONE;
    return v4f_chat_render(r->messages, r->tools, &o, out, out_len, err);
}

/* ---- small writers ------------------------------------------------------------ */

static void put_kv_str(v4f_json_buf *b, const char *key, const char *s, size_t n) {
    v4f_json_write_string(b, key, strlen(key), 0);
    v4f_json_buf_putc(b, ':');
    v4f_json_write_string(b, s, n, 0);
}

static void put_kv_u64(v4f_json_buf *b, const char *key, uint64_t v) {
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    v4f_json_write_string(b, key, strlen(key), 0);
    v4f_json_buf_putc(b, ':');
    v4f_json_buf_puts(b, tmp);
}

void v4f_oai_error_json_for(v4f_oai_kind kind, v4f_json_buf *b, const char *msg, const char *type,
                            const char *code) {
    if (kind != V4F_OAI_MESSAGES) {
        v4f_oai_error_json(b, msg, type, code);
        return;
    }
    v4f_json_buf_puts(b, "{\"type\":\"error\",\"error\":{");
    put_kv_str(b, "type", type, strlen(type));
    v4f_json_buf_putc(b, ',');
    put_kv_str(b, "message", msg, strlen(msg));
    v4f_json_buf_puts(b, "}}");
}

void v4f_oai_error_json(v4f_json_buf *b, const char *msg, const char *type, const char *code) {
    v4f_json_buf_puts(b, "{\"error\":{");
    put_kv_str(b, "message", msg, strlen(msg));
    v4f_json_buf_putc(b, ',');
    put_kv_str(b, "type", type, strlen(type));
    v4f_json_buf_puts(b, ",\"param\":null,\"code\":");
    if (code) v4f_json_write_string(b, code, strlen(code), 0);
    else v4f_json_buf_puts(b, "null");
    v4f_json_buf_puts(b, "}}");
}

static void model_obj(v4f_json_buf *b, uint32_t n_ctx, int64_t created) {
    v4f_json_buf_puts(b, "{\"id\":\"" V4F_OAI_MODEL_ID "\",\"object\":\"model\",");
    put_kv_u64(b, "created", (uint64_t)created);
    v4f_json_buf_puts(b, ",\"owned_by\":\"v4flash\",");
    put_kv_u64(b, "context_length", n_ctx);
    v4f_json_buf_puts(b, "}");
}

void v4f_oai_models_json(v4f_json_buf *b, uint32_t n_ctx, int64_t created, bool list) {
    if (!list) {
        model_obj(b, n_ctx, created);
        return;
    }
    v4f_json_buf_puts(b, "{\"object\":\"list\",\"data\":[");
    model_obj(b, n_ctx, created);
    v4f_json_buf_puts(b, "]}");
}

void v4f_oai_random_id(char *out, size_t cap, const char *prefix) {
    uint8_t r[16];
    size_t got = 0;
    while (got < sizeof r) {
        ssize_t k = getrandom(r + got, sizeof r - got, 0);
        if (k <= 0) break;
        got += (size_t)k;
    }
    if (got < sizeof r) { /* no getrandom: time and address bits (ids need not be secret) */
        uint64_t x = (uint64_t)(v4f_time_s() * 1e9) ^ (uint64_t)(uintptr_t)out;
        for (size_t i = got; i < sizeof r; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            r[i] = (uint8_t)(x >> 56);
        }
    }
    size_t n = (size_t)snprintf(out, cap, "%s", prefix);
    for (size_t i = 0; i < sizeof r && n + 2 < cap; i++, n += 2) snprintf(out + n, cap - n, "%02x", r[i]);
}

/* ---- responses ------------------------------------------------------------------ */

struct v4f_oai_out {
    v4f_oai_kind kind;
    bool stream, include_usage;
    char id[64], model[64];
    int64_t created;
    v4f_dsml *dsml;     /* chat */
    v4f_json_buf raw;   /* completion text */
    size_t sent_reasoning, sent_content;
    size_t scanned;     /* visible bytes already searched for stop strings */
    bool sent_role, stopped;
    size_t cut;         /* content (chat) / text (completion) ends here once stopped */
    uint32_t n_stop;
    char stop[V4F_OAI_MAX_STOP][V4F_OAI_STOP_MAX_BYTES + 1];
    size_t stop_len[V4F_OAI_MAX_STOP];
    int stop_idx;       /* the stop string that matched */
    char **call_ids;    /* one per finished tool call */
    size_t n_call_ids;
    const char *finish_reason;
    /* Anthropic streams */
    uint64_t prompt_tokens, cached_tokens;
    bool sent_start;
    int block;          /* open content block: 0 none, 1 thinking, 2 text */
    int n_blocks;       /* blocks opened so far (the next index) */
};

v4f_oai_out *v4f_oai_out_new(const v4f_oai_req *r, const char *id, int64_t created) {
    v4f_oai_out *o = v4f_xmalloc(sizeof *o);
    memset(o, 0, sizeof *o);
    o->kind = r->kind;
    o->stream = r->stream;
    o->include_usage = r->include_usage;
    snprintf(o->id, sizeof o->id, "%s", id);
    snprintf(o->model, sizeof o->model, "%s", r->model);
    o->created = created;
    if (r->kind != V4F_OAI_COMPLETION) o->dsml = v4f_dsml_new(r->thinking);
    v4f_json_buf_init(&o->raw);
    o->n_stop = r->n_stop;
    memcpy(o->stop, r->stop, sizeof o->stop);
    memcpy(o->stop_len, r->stop_len, sizeof o->stop_len);
    return o;
}

void v4f_oai_out_free(v4f_oai_out *o) {
    if (!o) return;
    v4f_dsml_free(o->dsml);
    v4f_json_buf_free(&o->raw);
    for (size_t i = 0; i < o->n_call_ids; i++) free(o->call_ids[i]);
    free(o->call_ids);
    free(o);
}

/* The visible text (content or completion text) so far. */
static const char *visible(const v4f_oai_out *o, size_t *len) {
    if (o->kind == V4F_OAI_COMPLETION) {
        *len = o->raw.len;
        return o->raw.len ? o->raw.data : "";
    }
    const char *r, *c;
    size_t rl;
    v4f_dsml_text(o->dsml, &r, &rl, &c, len);
    return c;
}

/* The first stop string in t[0..n) that ends after `from` (t[0..from) was
 * searched before); returns its start (and *idx) or n. */
static size_t find_stop(const v4f_oai_out *o, const char *t, size_t n, size_t from, int *idx) {
    size_t best = n;
    for (uint32_t i = 0; i < o->n_stop; i++) {
        size_t sl = o->stop_len[i];
        size_t start = from > sl ? from - sl + 1 : 0;
        for (size_t p = start; p + sl <= n && p < best; p++)
            if (!memcmp(t + p, o->stop[i], sl)) {
                best = p;
                *idx = (int)i;
                break;
            }
    }
    return best;
}

/* Bytes at the end of t[0..n) that could be the start of a stop string. */
static size_t stop_holdback(const v4f_oai_out *o, const char *t, size_t n) {
    size_t hold = 0;
    for (uint32_t i = 0; i < o->n_stop; i++) {
        size_t sl = o->stop_len[i];
        for (size_t k = sl - 1; k > hold; k--)
            if (k <= n && !memcmp(t + n - k, o->stop[i], k)) {
                hold = k;
                break;
            }
    }
    return hold;
}

/* "data: {id, object, created, model," of an OpenAI stream chunk */
static void chunk_open(v4f_oai_out *o, v4f_json_buf *b) {
    v4f_json_buf_puts(b, "data: {");
    put_kv_str(b, "id", o->id, strlen(o->id));
    v4f_json_buf_puts(b, o->kind == V4F_OAI_CHAT ? ",\"object\":\"chat.completion.chunk\","
                                                 : ",\"object\":\"text_completion\",");
    put_kv_u64(b, "created", (uint64_t)o->created);
    v4f_json_buf_putc(b, ',');
    put_kv_str(b, "model", o->model, strlen(o->model));
    v4f_json_buf_putc(b, ',');
}

static void chunk_head(v4f_oai_out *o, v4f_json_buf *b) {
    chunk_open(o, b);
    v4f_json_buf_puts(b, "\"choices\":[{\"index\":0,");
}

/* One delta chunk: {"delta": {key: text}} (chat) or {"text": text}. */
static void chunk_text(v4f_oai_out *o, v4f_json_buf *b, const char *key, const char *s, size_t n) {
    chunk_head(o, b);
    if (o->kind == V4F_OAI_CHAT) {
        v4f_json_buf_puts(b, "\"delta\":{");
        if (!o->sent_role) {
            v4f_json_buf_puts(b, "\"role\":\"assistant\",");
            o->sent_role = true;
        }
        put_kv_str(b, key, s, n);
        v4f_json_buf_puts(b, "},\"finish_reason\":null}]}\n\n");
    } else {
        put_kv_str(b, "text", s, n);
        v4f_json_buf_puts(b, ",\"logprobs\":null,\"finish_reason\":null}]}\n\n");
    }
}

/* ---- Anthropic responses ------------------------------------------------------------ */

void v4f_oai_out_prompt_usage(v4f_oai_out *o, uint64_t prompt_tokens, uint64_t cached_tokens) {
    o->prompt_tokens = prompt_tokens;
    o->cached_tokens = cached_tokens;
}

static void anth_event(v4f_json_buf *b, const char *name) {
    v4f_json_buf_puts(b, "event: ");
    v4f_json_buf_puts(b, name);
    v4f_json_buf_puts(b, "\ndata: ");
}

static void anth_usage(v4f_json_buf *b, uint64_t prompt, uint64_t cached, uint64_t out) {
    v4f_json_buf_puts(b, "\"usage\":{");
    put_kv_u64(b, "input_tokens", prompt > cached ? prompt - cached : 0);
    v4f_json_buf_putc(b, ',');
    put_kv_u64(b, "cache_read_input_tokens", cached);
    v4f_json_buf_puts(b, ",\"cache_creation_input_tokens\":0,");
    put_kv_u64(b, "output_tokens", out);
    v4f_json_buf_putc(b, '}');
}

static void anth_message_head(v4f_oai_out *o, v4f_json_buf *b) {
    v4f_json_buf_putc(b, '{');
    put_kv_str(b, "id", o->id, strlen(o->id));
    v4f_json_buf_puts(b, ",\"type\":\"message\",\"role\":\"assistant\",");
    put_kv_str(b, "model", o->model, strlen(o->model));
    v4f_json_buf_putc(b, ',');
}

static void anth_start(v4f_oai_out *o, v4f_json_buf *b) {
    if (o->sent_start) return;
    o->sent_start = true;
    anth_event(b, "message_start");
    v4f_json_buf_puts(b, "{\"type\":\"message_start\",\"message\":");
    anth_message_head(o, b);
    v4f_json_buf_puts(b, "\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,");
    anth_usage(b, o->prompt_tokens, o->cached_tokens, 0);
    v4f_json_buf_puts(b, "}}\n\n");
}

static void anth_close_block(v4f_oai_out *o, v4f_json_buf *b) {
    if (!o->block) return;
    anth_event(b, "content_block_stop");
    v4f_json_buf_puts(b, "{\"type\":\"content_block_stop\",");
    put_kv_u64(b, "index", (uint64_t)(o->n_blocks - 1));
    v4f_json_buf_puts(b, "}\n\n");
    o->block = 0;
}

/* Open block `kind` (1 thinking, 2 text) unless it is the open one. */
static void anth_open_block(v4f_oai_out *o, v4f_json_buf *b, int kind) {
    if (o->block == kind) return;
    anth_close_block(o, b);
    anth_event(b, "content_block_start");
    v4f_json_buf_puts(b, "{\"type\":\"content_block_start\",");
    put_kv_u64(b, "index", (uint64_t)o->n_blocks++);
    v4f_json_buf_puts(b, kind == 1 ? ",\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}\n\n"
                                   : ",\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
    o->block = kind;
}

static void anth_delta(v4f_oai_out *o, v4f_json_buf *b, int kind, const char *s, size_t n) {
    anth_open_block(o, b, kind);
    anth_event(b, "content_block_delta");
    v4f_json_buf_puts(b, "{\"type\":\"content_block_delta\",");
    put_kv_u64(b, "index", (uint64_t)(o->n_blocks - 1));
    v4f_json_buf_puts(b, kind == 1 ? ",\"delta\":{\"type\":\"thinking_delta\"," : ",\"delta\":{\"type\":\"text_delta\",");
    put_kv_str(b, kind == 1 ? "thinking" : "text", s, n);
    v4f_json_buf_puts(b, "}}\n\n");
}

/* Stream the reasoning and the content up to `upto` not sent yet. */
static void anth_deltas(v4f_oai_out *o, v4f_json_buf *b, size_t upto) {
    anth_start(o, b);
    const char *r, *c;
    size_t rl, cl;
    v4f_dsml_text(o->dsml, &r, &rl, &c, &cl);
    if (rl > o->sent_reasoning) {
        anth_delta(o, b, 1, r + o->sent_reasoning, rl - o->sent_reasoning);
        o->sent_reasoning = rl;
    }
    if (upto > cl) upto = cl;
    if (upto > o->sent_content) {
        anth_delta(o, b, 2, c + o->sent_content, upto - o->sent_content);
        o->sent_content = upto;
    }
}

/* A tool call's input: the arguments object, or {"arguments": text} when
 * the model wrote something that is not a JSON object. */
static void anth_input(v4f_json_buf *b, const v4f_dsml_call *c) {
    v4f_json_doc *d = NULL;
    v4f_err e = {0};
    if (v4f_json_parse(c->arguments, c->arguments_len, NULL, &d, &e) == V4F_OK &&
        v4f_json_is(v4f_json_doc_root(d), V4F_JSON_OBJECT)) {
        v4f_json_write(b, v4f_json_doc_root(d), 0);
    } else {
        v4f_json_buf_puts(b, "{\"arguments\":");
        v4f_json_write_string(b, c->arguments, c->arguments_len, 0);
        v4f_json_buf_putc(b, '}');
    }
    v4f_json_doc_free(d);
}

/* "stop_reason": ..., "stop_sequence": ... */
static void anth_stop_fields(v4f_oai_out *o, v4f_json_buf *b) {
    put_kv_str(b, "stop_reason", o->finish_reason, strlen(o->finish_reason));
    v4f_json_buf_puts(b, ",\"stop_sequence\":");
    if (o->stopped) v4f_json_write_string(b, o->stop[o->stop_idx], o->stop_len[o->stop_idx], 0);
    else v4f_json_buf_puts(b, "null");
}

static void anth_finish(v4f_oai_out *o, const v4f_dsml_msg *m, const char *v, size_t vl, const v4f_oai_usage *u,
                        v4f_json_buf *dst) {
    const uint64_t out_tokens = u ? u->completion_tokens : 0;
    if (u) v4f_oai_out_prompt_usage(o, u->prompt_tokens, u->cached_tokens);
    if (o->stream) {
        anth_deltas(o, dst, vl);
        anth_close_block(o, dst);
        for (size_t i = 0; i < m->n_calls; i++) {
            anth_event(dst, "content_block_start");
            v4f_json_buf_puts(dst, "{\"type\":\"content_block_start\",");
            put_kv_u64(dst, "index", (uint64_t)o->n_blocks);
            v4f_json_buf_puts(dst, ",\"content_block\":{\"type\":\"tool_use\",");
            put_kv_str(dst, "id", o->call_ids[i], strlen(o->call_ids[i]));
            v4f_json_buf_putc(dst, ',');
            put_kv_str(dst, "name", m->calls[i].name, m->calls[i].name_len);
            v4f_json_buf_puts(dst, ",\"input\":{}}}\n\n");
            v4f_json_buf in;
            v4f_json_buf_init(&in);
            anth_input(&in, &m->calls[i]);
            anth_event(dst, "content_block_delta");
            v4f_json_buf_puts(dst, "{\"type\":\"content_block_delta\",");
            put_kv_u64(dst, "index", (uint64_t)o->n_blocks);
            v4f_json_buf_puts(dst, ",\"delta\":{\"type\":\"input_json_delta\",");
            put_kv_str(dst, "partial_json", in.data, in.len);
            v4f_json_buf_puts(dst, "}}\n\n");
            v4f_json_buf_free(&in);
            anth_event(dst, "content_block_stop");
            v4f_json_buf_puts(dst, "{\"type\":\"content_block_stop\",");
            put_kv_u64(dst, "index", (uint64_t)o->n_blocks++);
            v4f_json_buf_puts(dst, "}\n\n");
        }
        anth_event(dst, "message_delta");
        v4f_json_buf_puts(dst, "{\"type\":\"message_delta\",\"delta\":{");
        anth_stop_fields(o, dst);
        v4f_json_buf_puts(dst, "},");
        anth_usage(dst, o->prompt_tokens, o->cached_tokens, out_tokens);
        v4f_json_buf_puts(dst, "}\n\n");
        anth_event(dst, "message_stop");
        v4f_json_buf_puts(dst, "{\"type\":\"message_stop\"}\n\n");
        return;
    }
    anth_message_head(o, dst);
    v4f_json_buf_puts(dst, "\"content\":[");
    bool first = true;
    if (m->reasoning_len) {
        v4f_json_buf_puts(dst, "{\"type\":\"thinking\",");
        put_kv_str(dst, "thinking", m->reasoning, m->reasoning_len);
        v4f_json_buf_puts(dst, ",\"signature\":\"\"}");
        first = false;
    }
    if (vl || (!m->reasoning_len && !m->n_calls)) {
        v4f_json_buf_puts(dst, first ? "{\"type\":\"text\"," : ",{\"type\":\"text\",");
        put_kv_str(dst, "text", v, vl);
        v4f_json_buf_putc(dst, '}');
        first = false;
    }
    for (size_t i = 0; i < m->n_calls; i++) {
        v4f_json_buf_puts(dst, first ? "{\"type\":\"tool_use\"," : ",{\"type\":\"tool_use\",");
        first = false;
        put_kv_str(dst, "id", o->call_ids[i], strlen(o->call_ids[i]));
        v4f_json_buf_putc(dst, ',');
        put_kv_str(dst, "name", m->calls[i].name, m->calls[i].name_len);
        v4f_json_buf_puts(dst, ",\"input\":");
        anth_input(dst, &m->calls[i]);
        v4f_json_buf_putc(dst, '}');
    }
    v4f_json_buf_puts(dst, "],");
    anth_stop_fields(o, dst);
    v4f_json_buf_putc(dst, ',');
    anth_usage(dst, o->prompt_tokens, o->cached_tokens, out_tokens);
    v4f_json_buf_putc(dst, '}');
}

bool v4f_oai_out_feed(v4f_oai_out *o, const char *text, size_t len, v4f_json_buf *sse) {
    if (o->stopped) return false;
    if (o->kind != V4F_OAI_COMPLETION) v4f_dsml_feed(o->dsml, text, len);
    else v4f_json_buf_append(&o->raw, text, len);
    size_t vl = 0;
    const char *v = visible(o, &vl);
    if (o->n_stop) {
        size_t at = find_stop(o, v, vl, o->scanned, &o->stop_idx);
        o->scanned = vl;
        if (at < vl) {
            o->stopped = true;
            o->cut = at;
        }
    }
    if (!o->stream) return !o->stopped;
    if (o->kind == V4F_OAI_MESSAGES) {
        anth_deltas(o, sse, o->stopped ? o->cut : vl - stop_holdback(o, v, vl));
        return !o->stopped;
    }
    if (o->kind == V4F_OAI_CHAT) {
        const char *r, *c;
        size_t rl, cl;
        v4f_dsml_text(o->dsml, &r, &rl, &c, &cl);
        if (rl > o->sent_reasoning) {
            chunk_text(o, sse, "reasoning_content", r + o->sent_reasoning, rl - o->sent_reasoning);
            o->sent_reasoning = rl;
        }
    }
    size_t upto = o->stopped ? o->cut : vl - stop_holdback(o, v, vl);
    if (upto > o->sent_content) {
        chunk_text(o, sse, "content", v + o->sent_content, upto - o->sent_content);
        o->sent_content = upto;
    }
    return !o->stopped;
}

static void write_usage(v4f_json_buf *b, const v4f_oai_usage *u) {
    v4f_json_buf_puts(b, "\"usage\":{");
    put_kv_u64(b, "prompt_tokens", u->prompt_tokens);
    v4f_json_buf_putc(b, ',');
    put_kv_u64(b, "completion_tokens", u->completion_tokens);
    v4f_json_buf_putc(b, ',');
    put_kv_u64(b, "total_tokens", u->prompt_tokens + u->completion_tokens);
    v4f_json_buf_puts(b, ",\"prompt_tokens_details\":{");
    put_kv_u64(b, "cached_tokens", u->cached_tokens);
    v4f_json_buf_puts(b, "}}");
}

static void write_calls(v4f_oai_out *o, v4f_json_buf *b, const v4f_dsml_msg *m, bool delta) {
    v4f_json_buf_puts(b, "\"tool_calls\":[");
    for (size_t i = 0; i < m->n_calls; i++) {
        if (i) v4f_json_buf_putc(b, ',');
        v4f_json_buf_putc(b, '{');
        if (delta) {
            put_kv_u64(b, "index", i);
            v4f_json_buf_putc(b, ',');
        }
        put_kv_str(b, "id", o->call_ids[i], strlen(o->call_ids[i]));
        v4f_json_buf_puts(b, ",\"type\":\"function\",\"function\":{");
        put_kv_str(b, "name", m->calls[i].name, m->calls[i].name_len);
        v4f_json_buf_putc(b, ',');
        put_kv_str(b, "arguments", m->calls[i].arguments, m->calls[i].arguments_len);
        v4f_json_buf_puts(b, "}}");
    }
    v4f_json_buf_putc(b, ']');
}

void v4f_oai_out_finish(v4f_oai_out *o, const char *reason, const v4f_oai_usage *u, v4f_json_buf *dst) {
    v4f_dsml_msg m = {0};
    if (o->kind != V4F_OAI_COMPLETION) {
        v4f_dsml_finish(o->dsml);
        v4f_dsml_result(o->dsml, &m);
        if (o->stopped) m.n_calls = 0; /* a stop string ended the text before any call */
    }
    size_t vl = 0;
    const char *v; /* m stays valid: no other parser call from here on */
    if (o->kind != V4F_OAI_COMPLETION) {
        v = m.content;
        vl = m.content_len;
    } else {
        v = visible(o, &vl);
    }
    if (o->n_stop && !o->stopped) { /* text flushed by finish may hold a stop string */
        size_t at = find_stop(o, v, vl, o->scanned, &o->stop_idx);
        o->scanned = vl;
        if (at < vl) {
            o->stopped = true;
            o->cut = at;
            m.n_calls = 0;
        }
    }
    if (o->stopped) vl = o->cut;
    if (m.n_calls && !o->n_call_ids) {
        o->call_ids = v4f_xmalloc(m.n_calls * sizeof *o->call_ids);
        for (size_t i = 0; i < m.n_calls; i++) {
            char id[64];
            v4f_oai_random_id(id, sizeof id, o->kind == V4F_OAI_MESSAGES ? "toolu_" : "call_");
            o->call_ids[i] = strdup(id);
            if (!o->call_ids[i]) abort();
        }
        o->n_call_ids = m.n_calls;
    }
    if (o->kind == V4F_OAI_MESSAGES) {
        o->finish_reason = o->stopped ? "stop_sequence" : m.n_calls ? "tool_use" : strcmp(reason, "length") ? "end_turn" : "max_tokens";
        anth_finish(o, &m, v, vl, u, dst);
        return;
    }
    o->finish_reason = o->stopped ? "stop" : m.n_calls ? "tool_calls" : strcmp(reason, "length") ? "stop" : "length";
    if (o->stream) {
        if (o->kind == V4F_OAI_CHAT && m.reasoning_len > o->sent_reasoning) {
            chunk_text(o, dst, "reasoning_content", m.reasoning + o->sent_reasoning,
                       m.reasoning_len - o->sent_reasoning);
            o->sent_reasoning = m.reasoning_len;
        }
        if (vl > o->sent_content) {
            chunk_text(o, dst, "content", v + o->sent_content, vl - o->sent_content);
            o->sent_content = vl;
        }
        chunk_head(o, dst);
        if (o->kind == V4F_OAI_CHAT) {
            v4f_json_buf_puts(dst, "\"delta\":{");
            if (!o->sent_role) {
                v4f_json_buf_puts(dst, "\"role\":\"assistant\"");
                o->sent_role = true;
                if (m.n_calls) v4f_json_buf_putc(dst, ',');
            }
            if (m.n_calls) write_calls(o, dst, &m, true);
            v4f_json_buf_puts(dst, "},");
        } else {
            v4f_json_buf_puts(dst, "\"text\":\"\",\"logprobs\":null,");
        }
        put_kv_str(dst, "finish_reason", o->finish_reason, strlen(o->finish_reason));
        v4f_json_buf_puts(dst, "}]}\n\n");
        if (o->include_usage && u) {
            chunk_open(o, dst);
            v4f_json_buf_puts(dst, "\"choices\":[],");
            write_usage(dst, u);
            v4f_json_buf_puts(dst, "}\n\n");
        }
        v4f_json_buf_puts(dst, "data: [DONE]\n\n");
        return;
    }
    v4f_json_buf_putc(dst, '{');
    put_kv_str(dst, "id", o->id, strlen(o->id));
    v4f_json_buf_puts(dst, o->kind == V4F_OAI_CHAT ? ",\"object\":\"chat.completion\"," : ",\"object\":\"text_completion\",");
    put_kv_u64(dst, "created", (uint64_t)o->created);
    v4f_json_buf_putc(dst, ',');
    put_kv_str(dst, "model", o->model, strlen(o->model));
    v4f_json_buf_puts(dst, ",\"choices\":[{\"index\":0,");
    if (o->kind == V4F_OAI_CHAT) {
        v4f_json_buf_puts(dst, "\"message\":{\"role\":\"assistant\",");
        put_kv_str(dst, "content", v, vl);
        if (m.reasoning_len) {
            v4f_json_buf_putc(dst, ',');
            put_kv_str(dst, "reasoning_content", m.reasoning, m.reasoning_len);
        }
        if (m.n_calls) {
            v4f_json_buf_putc(dst, ',');
            write_calls(o, dst, &m, false);
        }
        v4f_json_buf_puts(dst, "},");
    } else {
        put_kv_str(dst, "text", v, vl);
        v4f_json_buf_puts(dst, ",\"logprobs\":null,");
    }
    put_kv_str(dst, "finish_reason", o->finish_reason, strlen(o->finish_reason));
    v4f_json_buf_puts(dst, "}]");
    if (u) {
        v4f_json_buf_putc(dst, ',');
        write_usage(dst, u);
    }
    v4f_json_buf_puts(dst, "}");
}

const char *v4f_oai_out_finish_reason(const v4f_oai_out *o) {
    return o->finish_reason;
}
