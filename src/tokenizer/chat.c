/*
 * chat.c - the DeepSeek V4 prompt renderer (see chat.h and
 * tests/fixtures/chat/README.md for the rules it reproduces).
 *
 * Pipeline, mirroring the official encoder's observable behaviour:
 *   1. merge: tool messages become tool_result blocks of a user message;
 *      consecutive tool results share it and a following plain user message
 *      joins it (a user message always becomes a block list, so consecutive
 *      user messages join as well, unless the earlier one has a task);
 *   2. reorder tool_result blocks by the call order of the latest assistant
 *      message with tool calls (stable; unknown ids sort as 0);
 *   3. tools anywhere (on a non-user message) turn drop_thinking off; in
 *      thinking mode with drop on, messages before the last user/developer
 *      lose reasoning (assistant) or vanish (developer and unknown roles);
 *   4. render each message plus its transition text.
 * Memory: one array of message views over the caller's JSON tree, freed
 * before returning; output is a malloc'ed string.
 * Threading: reentrant.
 */
#include "tokenizer/chat.h"

#include <stdlib.h>
#include <string.h>

static const char k_effort_max[] =
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to "
    "resolve the root cause, rigorously stress-testing your logic against all potential paths, "
    "edge cases, and adversarial scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, "
    "considered alternative, and rejected hypothesis to ensure absolutely no assumption is left "
    "unchecked.\n\n";

static const char k_tools_head[] =
    "## Tools\n\n"
    "You have access to a set of tools to help answer the user's question. You can invoke tools "
    "by writing a \"<｜DSML｜tool_calls>\" block like the following:\n\n"
    "<｜DSML｜tool_calls>\n"
    "<｜DSML｜invoke name=\"$TOOL_NAME\">\n"
    "<｜DSML｜parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE"
    "</｜DSML｜parameter>\n"
    "...\n"
    "</｜DSML｜invoke>\n"
    "<｜DSML｜invoke name=\"$TOOL_NAME2\">\n"
    "...\n"
    "</｜DSML｜invoke>\n"
    "</｜DSML｜tool_calls>\n\n"
    "String parameters should be specified as is and set `string=\"true\"`. For all other types "
    "(numbers, booleans, arrays, objects), pass the value in JSON format and set "
    "`string=\"false\"`.\n\n"
    "If thinking_mode is enabled (triggered by <think>), you MUST output your complete reasoning "
    "inside <think>...</think> BEFORE any tool calls or final response.\n\n"
    "Otherwise, output directly after </think> with tool calls or final response.\n\n"
    "### Available Tool Schemas\n\n";

static const char k_tools_tail[] =
    "\n\nYou MUST strictly follow the above defined tool name and parameter schemas to invoke "
    "tool calls.\n";

static const char k_response_format[] =
    "\n\n## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n";

static const struct {
    const char *name, *token;
} k_tasks[] = {
    {"action", "<｜action｜>"}, {"query", "<｜query｜>"},   {"authority", "<｜authority｜>"},
    {"domain", "<｜domain｜>"}, {"title", "<｜title｜>"},   {"read_url", "<｜read_url｜>"},
};

enum { R_SYSTEM, R_DEVELOPER, R_USER, R_ASSISTANT, R_REMINDER, R_TOOL, R_OTHER };

enum { B_TEXT, B_TOOL_RESULT };

typedef struct block {
    int type;
    const v4f_json *val;     /* text: the user content; tool_result: the content */
    const char *id;          /* tool_use_id */
    size_t id_len;
    int order;               /* sort key: call position */
    size_t seq;              /* original position (stable sort) */
} block;

typedef struct cmsg {
    int role;
    const v4f_json *src;     /* original message (NULL for a merged tool message) */
    const v4f_json *tools;   /* tools of the message (NULL for merged user) */
    const v4f_json *task;    /* non-null task value or NULL */
    bool drop_reasoning;
    block *blocks;           /* user messages */
    size_t n_blocks, cap_blocks;
} cmsg;

void v4f_chat_opts_default(v4f_chat_opts *o) {
    memset(o, 0, sizeof *o);
    o->thinking = true;
    o->drop_thinking = true;
}

static int role_of(const v4f_json *m) {
    size_t n;
    const char *r = v4f_json_get_str(m, "role", &n);
    if (!r) return R_OTHER;
    if (!strcmp(r, "system")) return R_SYSTEM;
    if (!strcmp(r, "developer")) return R_DEVELOPER;
    if (!strcmp(r, "user")) return R_USER;
    if (!strcmp(r, "assistant")) return R_ASSISTANT;
    if (!strcmp(r, "latest_reminder")) return R_REMINDER;
    if (!strcmp(r, "tool")) return R_TOOL;
    return R_OTHER;
}

static void add_block(cmsg *m, block b) {
    if (m->n_blocks == m->cap_blocks) {
        m->cap_blocks = m->cap_blocks ? m->cap_blocks * 2 : 4;
        m->blocks = v4f_xrealloc(m->blocks, m->cap_blocks * sizeof *m->blocks);
    }
    m->blocks[m->n_blocks++] = b;
}

static const v4f_json *non_null(const v4f_json *v) {
    return v && v->type != V4F_JSON_NULL ? v : NULL;
}

/* ---- text helpers ---------------------------------------------------------- */

#define PUTS(b, s) v4f_json_buf_append((b), (s), sizeof(s) - 1)

/* Text of a content value: string as is; null/absent as null_text; a list of
 * {"type":"text"} parts joined by "\n\n" (others as "[Unsupported T]"). */
static v4f_status put_content(v4f_json_buf *b, const v4f_json *v, const char *null_text,
                              size_t idx, v4f_err *err) {
    if (!v || v->type == V4F_JSON_NULL) {
        v4f_json_buf_puts(b, null_text);
        return V4F_OK;
    }
    if (v->type == V4F_JSON_STRING) {
        v4f_json_buf_append(b, v->str, v->len);
        return V4F_OK;
    }
    if (v->type == V4F_JSON_ARRAY) {
        for (const v4f_json *p = v->child; p; p = p->next) {
            if (p != v->child) PUTS(b, "\n\n");
            size_t tl;
            const char *ty = v4f_json_get_str(p, "type", &tl);
            if (ty && !strcmp(ty, "text")) {
                const v4f_json *t = v4f_json_get(p, "text");
                if (t && t->type == V4F_JSON_STRING) v4f_json_buf_append(b, t->str, t->len);
                else if (t && t->type != V4F_JSON_NULL)
                    return v4f_err_set(err, V4F_STATUS_INVALID_ARG,
                                       "chat: message %zu: text part is not a string", idx);
            } else {
                PUTS(b, "[Unsupported ");
                const v4f_json *tv = v4f_json_get(p, "type");
                if (ty) v4f_json_buf_append(b, ty, tl);
                else if (tv) v4f_json_write(b, tv, V4F_JSON_WRITE_PY);
                else PUTS(b, "None");
                PUTS(b, "]");
            }
        }
        return V4F_OK;
    }
    return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "chat: message %zu: content is not a string",
                       idx);
}

static v4f_status put_tools(v4f_json_buf *b, const v4f_json *tools, size_t idx, v4f_err *err) {
    PUTS(b, "\n\n");
    PUTS(b, k_tools_head);
    for (const v4f_json *t = tools->child; t; t = t->next) {
        const v4f_json *f = v4f_json_get(t, "function");
        if (!f)
            return v4f_err_set(err, V4F_STATUS_INVALID_ARG,
                               "chat: message %zu: a tool has no \"function\"", idx);
        if (t != tools->child) PUTS(b, "\n");
        v4f_json_write(b, f, V4F_JSON_WRITE_PY);
    }
    PUTS(b, k_tools_tail);
    return V4F_OK;
}

static bool same_key(const v4f_json *a, const v4f_json *b) {
    return a->key_len == b->key_len && memcmp(a->key, b->key, a->key_len) == 0;
}

static void put_param(v4f_json_buf *b, const char *key, size_t key_len, const v4f_json *v) {
    PUTS(b, "<｜DSML｜parameter name=\"");
    v4f_json_buf_append(b, key, key_len);
    if (v->type == V4F_JSON_STRING) {
        PUTS(b, "\" string=\"true\">");
        v4f_json_buf_append(b, v->str, v->len);
    } else {
        PUTS(b, "\" string=\"false\">");
        v4f_json_write(b, v, V4F_JSON_WRITE_PY);
    }
    PUTS(b, "</｜DSML｜parameter>");
}

/* One invoke element. args: the OpenAI arguments value (normally a JSON
 * string holding an object). */
static v4f_status put_call(v4f_json_buf *b, const char *name, size_t name_len,
                           const v4f_json *args, size_t idx, v4f_err *err) {
    PUTS(b, "<｜DSML｜invoke name=\"");
    v4f_json_buf_append(b, name, name_len);
    PUTS(b, "\">\n");
    v4f_status st = V4F_OK;
    if (args && args->type == V4F_JSON_STRING) {
        v4f_json_doc *doc = NULL;
        v4f_err e2 = {0};
        if (v4f_json_parse(args->str, args->len, NULL, &doc, &e2) != V4F_OK) {
            put_param(b, "arguments", 9, args); /* not JSON: one raw string */
        } else {
            const v4f_json *o = v4f_json_doc_root(doc);
            if (o->type != V4F_JSON_OBJECT) {
                st = v4f_err_set(err, V4F_STATUS_INVALID_ARG,
                                 "chat: message %zu: tool call arguments are not a JSON object", idx);
            } else {
                bool first = true;
                for (const v4f_json *m = o->child; m; m = m->next) {
                    /* dict semantics: first position, last value */
                    bool dup = false;
                    for (const v4f_json *q = o->child; q != m; q = q->next)
                        if (same_key(q, m)) { dup = true; break; }
                    if (dup) continue;
                    const v4f_json *val = m;
                    for (const v4f_json *q = m->next; q; q = q->next)
                        if (same_key(q, m)) val = q;
                    if (!first) PUTS(b, "\n");
                    first = false;
                    put_param(b, m->key, m->key_len, val);
                }
            }
            v4f_json_doc_free(doc);
        }
    } else if (args) {
        /* a non-string arguments value fails json.loads officially and is
         * kept whole as one parameter */
        put_param(b, "arguments", 9, args);
    } else {
        v4f_json null_v = {.type = V4F_JSON_NULL};
        put_param(b, "arguments", 9, &null_v);
    }
    PUTS(b, "\n</｜DSML｜invoke>");
    return st;
}

v4f_status v4f_chat_render_tool_call(v4f_json_buf *b, const char *name, size_t name_len,
                                     const char *arguments, size_t args_len, v4f_err *err) {
    v4f_json a = {.type = V4F_JSON_STRING, .str = arguments, .len = args_len};
    return put_call(b, name, name_len, &a, 0, err);
}

/* ---- preprocessing ---------------------------------------------------------- */

static int cmp_block(const void *x, const void *y) {
    const block *a = x, *b = y;
    if (a->order != b->order) return a->order < b->order ? -1 : 1;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static void sort_tool_results(cmsg *ms, size_t n) {
    const v4f_json *calls = NULL; /* tool_calls of the latest assistant with calls */
    for (size_t i = 0; i < n; i++) {
        cmsg *m = &ms[i];
        if (m->role == R_ASSISTANT && m->src && v4f_json_truthy(v4f_json_get(m->src, "tool_calls"))) {
            calls = v4f_json_get(m->src, "tool_calls");
            bool any = false;
            for (const v4f_json *c = calls->child; c; c = c->next) {
                size_t l;
                const char *id = v4f_json_get_str(c, "id", &l);
                if (!id || !l) id = v4f_json_get_str(v4f_json_get(c, "function"), "id", &l);
                if (id && l) any = true;
            }
            if (!any) calls = NULL;
            continue;
        }
        if (m->role != R_USER || !calls || m->n_blocks < 2) continue;
        size_t nt = 0;
        for (size_t k = 0; k < m->n_blocks; k++) nt += m->blocks[k].type == B_TOOL_RESULT;
        if (nt < 2) continue;
        block *tb = v4f_xmalloc(nt * sizeof *tb);
        size_t j = 0;
        for (size_t k = 0; k < m->n_blocks; k++) {
            if (m->blocks[k].type != B_TOOL_RESULT) continue;
            block bl = m->blocks[k];
            bl.order = 0;
            int pos = 0;
            for (const v4f_json *c = calls->child; c; c = c->next, pos++) {
                size_t l;
                const char *id = v4f_json_get_str(c, "id", &l);
                if (!id || !l) id = v4f_json_get_str(v4f_json_get(c, "function"), "id", &l);
                /* the dict keeps the last index of a repeated id */
                if (id && l && l == bl.id_len && memcmp(id, bl.id, l) == 0) bl.order = pos;
            }
            bl.seq = j;
            tb[j++] = bl;
        }
        qsort(tb, nt, sizeof *tb, cmp_block);
        j = 0;
        for (size_t k = 0; k < m->n_blocks; k++)
            if (m->blocks[k].type == B_TOOL_RESULT) m->blocks[k] = tb[j++];
        free(tb);
    }
}

static size_t merge_messages(const v4f_json *messages, cmsg *out) {
    size_t n = 0;
    for (const v4f_json *src = messages->child; src; src = src->next) {
        int role = role_of(src);
        cmsg *last = n ? &out[n - 1] : NULL;
        if (role == R_TOOL) {
            size_t il;
            const char *id = v4f_json_get_str(src, "tool_call_id", &il);
            block b = {B_TOOL_RESULT, v4f_json_get(src, "content"), id ? id : "", id ? il : 0, 0, 0};
            if (last && last->role == R_USER && last->n_blocks) {
                add_block(last, b);
            } else {
                cmsg m = {.role = R_USER};
                add_block(&m, b);
                out[n++] = m;
            }
        } else if (role == R_USER) {
            block b = {B_TEXT, v4f_json_get(src, "content"), NULL, 0, 0, 0};
            if (last && last->role == R_USER && last->n_blocks && !last->task) {
                add_block(last, b);
            } else {
                cmsg m = {.role = R_USER, .src = src, .task = non_null(v4f_json_get(src, "task"))};
                add_block(&m, b);
                out[n++] = m;
            }
        } else {
            out[n++] = (cmsg){.role = role, .src = src, .tools = v4f_json_get(src, "tools"),
                              .task = non_null(v4f_json_get(src, "task"))};
        }
    }
    return n;
}

/* ---- rendering -------------------------------------------------------------- */

static v4f_status render_one(v4f_json_buf *b, const cmsg *ms, size_t n, size_t i, size_t last_user,
                             bool has_last_user, const v4f_chat_opts *o, bool drop, v4f_err *err) {
    const cmsg *m = &ms[i];
    const v4f_json *src = m->src;
    v4f_status st = V4F_OK;
    if (i == 0 && o->thinking && o->effort == V4F_CHAT_EFFORT_MAX) PUTS(b, k_effort_max);
    const v4f_json *rf = src ? v4f_json_get(src, "response_format") : NULL;

    switch (m->role) {
    case R_SYSTEM:
    case R_DEVELOPER: {
        const v4f_json *c = v4f_json_get(src, "content");
        if (m->role == R_DEVELOPER) {
            if (!v4f_json_truthy(c))
                return v4f_err_set(err, V4F_STATUS_INVALID_ARG,
                                   "chat: message %zu: developer message needs content", i);
            PUTS(b, V4F_CHAT_USER);
        }
        if ((st = put_content(b, c, "", i, err)) != V4F_OK) return st;
        if (v4f_json_truthy(m->tools)) {
            if (m->tools->type != V4F_JSON_ARRAY)
                return v4f_err_set(err, V4F_STATUS_INVALID_ARG,
                                   "chat: message %zu: tools is not a list", i);
            if ((st = put_tools(b, m->tools, i, err)) != V4F_OK) return st;
        }
        if (v4f_json_truthy(rf)) {
            PUTS(b, k_response_format);
            v4f_json_write(b, rf, V4F_JSON_WRITE_PY);
        }
        break;
    }
    case R_USER:
        PUTS(b, V4F_CHAT_USER);
        for (size_t k = 0; k < m->n_blocks; k++) {
            if (k) PUTS(b, "\n\n");
            const block *bl = &m->blocks[k];
            if (bl->type == B_TEXT) {
                st = put_content(b, bl->val, "", i, err);
            } else {
                PUTS(b, "<tool_result>");
                if (bl->val && bl->val->type != V4F_JSON_STRING && bl->val->type != V4F_JSON_ARRAY &&
                    bl->val->type != V4F_JSON_NULL)
                    v4f_json_write(b, bl->val, V4F_JSON_WRITE_PY); /* an object result */
                else
                    st = put_content(b, bl->val, bl->val ? "None" : "", i, err);
                PUTS(b, "</tool_result>");
            }
            if (st != V4F_OK) return st;
        }
        break;
    case R_REMINDER:
        PUTS(b, V4F_CHAT_REMINDER);
        if ((st = put_content(b, v4f_json_get(src, "content"), "None", i, err)) != V4F_OK) return st;
        break;
    case R_ASSISTANT: {
        bool prev_task = i > 0 && ms[i - 1].task;
        if (o->thinking && !prev_task && (!drop || !has_last_user || i > last_user)) {
            if (!m->drop_reasoning)
                if ((st = put_content(b, v4f_json_get(src, "reasoning_content"), "", i, err)) != V4F_OK)
                    return st;
            PUTS(b, V4F_CHAT_THINK_END);
        }
        if ((st = put_content(b, v4f_json_get(src, "content"), "", i, err)) != V4F_OK) return st;
        const v4f_json *calls = v4f_json_get(src, "tool_calls");
        if (v4f_json_truthy(calls)) {
            if (calls->type != V4F_JSON_ARRAY)
                return v4f_err_set(err, V4F_STATUS_INVALID_ARG,
                                   "chat: message %zu: tool_calls is not a list", i);
            PUTS(b, "\n\n<｜DSML｜tool_calls>\n");
            for (const v4f_json *c = calls->child; c; c = c->next) {
                const v4f_json *f = v4f_json_get(c, "function");
                if (!v4f_json_is(f, V4F_JSON_OBJECT))
                    return v4f_err_set(err, V4F_STATUS_INVALID_ARG,
                                       "chat: message %zu: tool call without \"function\"", i);
                if (c != calls->child) PUTS(b, "\n");
                size_t nl;
                const char *name = v4f_json_get_str(f, "name", &nl);
                if (!name) { name = "None"; nl = 4; }
                if ((st = put_call(b, name, nl, v4f_json_get(f, "arguments"), i, err)) != V4F_OK)
                    return st;
            }
            PUTS(b, "\n</｜DSML｜tool_calls>");
        }
        if (!v4f_json_truthy(v4f_json_get(src, "wo_eos"))) PUTS(b, V4F_CHAT_EOS);
        break;
    }
    default: {
        size_t rl;
        const char *r = v4f_json_get_str(src, "role", &rl);
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "chat: message %zu: unknown role '%.40s'", i,
                           r ? r : "(none)");
    }
    }

    /* transition */
    if (i + 1 < n && ms[i + 1].role != R_ASSISTANT && ms[i + 1].role != R_REMINDER) return V4F_OK;
    if (m->task) {
        size_t tl = 0;
        const char *t = m->task->type == V4F_JSON_STRING ? m->task->str : NULL;
        if (t) tl = m->task->len;
        for (size_t k = 0; k < sizeof k_tasks / sizeof k_tasks[0]; k++) {
            if (!t || strlen(k_tasks[k].name) != tl || memcmp(t, k_tasks[k].name, tl) != 0) continue;
            if (k == 0) {
                PUTS(b, V4F_CHAT_ASSISTANT);
                v4f_json_buf_puts(b, o->thinking ? V4F_CHAT_THINK : V4F_CHAT_THINK_END);
            }
            v4f_json_buf_puts(b, k_tasks[k].token);
            return V4F_OK;
        }
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "chat: message %zu: invalid task", i);
    }
    if (m->role == R_USER || m->role == R_DEVELOPER) {
        PUTS(b, V4F_CHAT_ASSISTANT);
        bool open = o->thinking && (!drop || (has_last_user && i >= last_user));
        v4f_json_buf_puts(b, open ? V4F_CHAT_THINK : V4F_CHAT_THINK_END);
    }
    return V4F_OK;
}

static bool find_last_user(const cmsg *ms, size_t n, size_t *idx) {
    for (size_t i = n; i-- > 0;)
        if (ms[i].role == R_USER || ms[i].role == R_DEVELOPER) {
            *idx = i;
            return true;
        }
    return false;
}

v4f_status v4f_chat_render(const v4f_json *messages, const v4f_json *tools,
                           const v4f_chat_opts *opts, char **out, size_t *out_len, v4f_err *err) {
    *out = NULL;
    if (out_len) *out_len = 0;
    if (!v4f_json_is(messages, V4F_JSON_ARRAY))
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "chat: messages must be a list");
    for (const v4f_json *m = messages->child; m; m = m->next)
        if (m->type != V4F_JSON_OBJECT)
            return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "chat: every message must be an object");
    if (tools && tools->type != V4F_JSON_ARRAY && tools->type != V4F_JSON_NULL)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "chat: tools must be a list");
    v4f_chat_opts o;
    if (opts) o = *opts;
    else v4f_chat_opts_default(&o);

    size_t cap = (size_t)messages->n + 1;
    cmsg *ms = v4f_xcalloc(cap, sizeof *ms);
    size_t n = 0;
    bool tools_first = v4f_json_truthy(tools);
    if (tools_first && messages->child) {
        int r0 = role_of(messages->child);
        if ((r0 == R_SYSTEM || r0 == R_DEVELOPER) && !v4f_json_truthy(v4f_json_get(messages->child, "tools")))
            tools_first = false; /* attach to messages[0] below */
    }
    static const v4f_json empty_sys = {.type = V4F_JSON_OBJECT};
    if (tools_first) ms[n++] = (cmsg){.role = R_SYSTEM, .src = &empty_sys, .tools = tools};
    n += merge_messages(messages, ms + n);
    if (v4f_json_truthy(tools) && !tools_first) ms[0].tools = tools;
    sort_tool_results(ms, n);

    bool drop = o.drop_thinking;
    for (size_t i = 0; i < n; i++)
        if (ms[i].role != R_USER && v4f_json_truthy(ms[i].tools)) drop = false;

    if (o.thinking && drop) {
        size_t lu;
        if (find_last_user(ms, n, &lu)) {
            size_t k = 0;
            for (size_t i = 0; i < n; i++) {
                int r = ms[i].role;
                if (i >= lu || r == R_USER || r == R_SYSTEM || r == R_REMINDER) {
                    ms[k++] = ms[i];
                } else if (r == R_ASSISTANT) {
                    ms[i].drop_reasoning = true;
                    ms[k++] = ms[i];
                } else {
                    free(ms[i].blocks);
                }
            }
            n = k;
        }
    }

    size_t last_user = 0;
    bool has_last = find_last_user(ms, n, &last_user);
    v4f_json_buf b;
    v4f_json_buf_init(&b);
    if (!o.no_bos) PUTS(&b, V4F_CHAT_BOS);
    v4f_status st = V4F_OK;
    for (size_t i = 0; i < n && st == V4F_OK; i++)
        st = render_one(&b, ms, n, i, last_user, has_last, &o, drop, err);
    for (size_t i = 0; i < n; i++) free(ms[i].blocks);
    free(ms);
    if (st != V4F_OK) {
        v4f_json_buf_free(&b);
        return st;
    }
    *out = v4f_json_buf_take(&b, out_len);
    return V4F_OK;
}

v4f_status v4f_chat_doc_parts(const v4f_json *root, const v4f_json **messages,
                              const v4f_json **tools, v4f_chat_opts *o, v4f_err *err) {
    *messages = *tools = NULL;
    if (v4f_json_is(root, V4F_JSON_ARRAY)) {
        *messages = root;
        return V4F_OK;
    }
    if (!v4f_json_is(root, V4F_JSON_OBJECT))
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG,
                           "chat: expected a message list or an object with \"messages\"");
    size_t l;
    const char *mode = v4f_json_get_str(root, "thinking_mode", &l);
    if (mode) {
        if (!strcmp(mode, "thinking")) o->thinking = true;
        else if (!strcmp(mode, "chat")) o->thinking = false;
        else return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "chat: bad thinking_mode '%.20s'", mode);
    }
    const v4f_json *d = v4f_json_get(root, "drop_thinking");
    if (d && (d->type == V4F_JSON_TRUE || d->type == V4F_JSON_FALSE))
        o->drop_thinking = d->type == V4F_JSON_TRUE;
    const v4f_json *e = v4f_json_get(root, "reasoning_effort");
    if (e && e->type == V4F_JSON_STRING) {
        if (!strcmp(e->str, "max")) o->effort = V4F_CHAT_EFFORT_MAX;
        else if (!strcmp(e->str, "high")) o->effort = V4F_CHAT_EFFORT_HIGH;
        else return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "chat: bad reasoning_effort '%.20s'", e->str);
    } else if (e && e->type != V4F_JSON_NULL) {
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "chat: bad reasoning_effort");
    }
    *messages = v4f_json_get(root, "messages");
    *tools = v4f_json_get(root, "tools");
    if (!*messages)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "chat: the object has no \"messages\"");
    return V4F_OK;
}

v4f_status v4f_chat_render_doc(const v4f_json *root, const v4f_chat_opts *opts, char **out,
                               size_t *out_len, v4f_err *err) {
    v4f_chat_opts o;
    if (opts) o = *opts;
    else v4f_chat_opts_default(&o);
    *out = NULL;
    if (out_len) *out_len = 0;
    const v4f_json *messages, *tools;
    v4f_status st = v4f_chat_doc_parts(root, &messages, &tools, &o, err);
    if (st != V4F_OK) return st;
    return v4f_chat_render(messages, tools, &o, out, out_len, err);
}
