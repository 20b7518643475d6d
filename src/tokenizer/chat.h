/*
 * chat.h - DeepSeek V4 chat prompt renderer: OpenAI-style message lists
 * (system / developer / user / assistant with reasoning_content and
 * tool_calls / tool results / latest_reminder) plus tool schemas -> the exact
 * prompt text of the official encoder (encoding_dsv4.py encode_messages),
 * byte for byte. Rules: tests/fixtures/chat/README.md.
 *
 * Input is a parsed JSON tree (src/json), so key order and number text of
 * tool schemas and arguments survive into the DSML / tools block.
 * Ownership: the rendered prompt is malloc'ed and owned by the caller.
 * Threading: pure functions; no state.
 */
#ifndef V4F_CHAT_H
#define V4F_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include "core/core.h"
#include "json/json.h"

typedef enum v4f_chat_effort {
    V4F_CHAT_EFFORT_NONE = 0,
    V4F_CHAT_EFFORT_HIGH = 1, /* accepted, no effect (as officially) */
    V4F_CHAT_EFFORT_MAX = 2   /* thinking mode: the max-effort prefix */
} v4f_chat_effort;

typedef struct v4f_chat_opts {
    bool thinking;      /* thinking_mode "thinking" (else "chat") */
    bool drop_thinking; /* official default true */
    v4f_chat_effort effort;
    bool no_bos;        /* omit the leading BOS text */
} v4f_chat_opts;

/* Defaults: thinking, drop_thinking, no effort, BOS. */
void v4f_chat_opts_default(v4f_chat_opts *o);

/* Render messages (a JSON array of message objects). tools (an array of
 * OpenAI tool objects, or NULL) is attached like the official test does: to
 * messages[0] when that is a system/developer message without tools of its
 * own, otherwise an empty system message carrying them is put first.
 * Errors (INVALID_ARG, message names the message index): unknown role, empty
 * developer content, a tool without "function", arguments JSON that is not
 * an object, a non-string content where text is required, unknown task. */
v4f_status v4f_chat_render(const v4f_json *messages, const v4f_json *tools,
                           const v4f_chat_opts *opts, char **out, size_t *out_len, v4f_err *err);

/* Render a request document in any of the fixture shapes: a bare message
 * list; {"messages": [...], "tools": [...]}; or the generated-case object
 * with "thinking_mode" ("thinking"|"chat"), "drop_thinking" and
 * "reasoning_effort" (null|"high"|"max"), which override opts. */
v4f_status v4f_chat_render_doc(const v4f_json *root, const v4f_chat_opts *opts, char **out,
                               size_t *out_len, v4f_err *err);

/* The parts of such a document: messages, tools (may be NULL) and the mode
 * fields applied onto *o (fields absent from the document leave *o as is). */
v4f_status v4f_chat_doc_parts(const v4f_json *root, const v4f_json **messages,
                              const v4f_json **tools, v4f_chat_opts *o, v4f_err *err);

/* Append the DSML text of one tool call (name + OpenAI "arguments" JSON
 * string) exactly as the renderer writes it inside <｜DSML｜tool_calls>. */
v4f_status v4f_chat_render_tool_call(v4f_json_buf *b, const char *name, size_t name_len,
                                     const char *arguments, size_t args_len, v4f_err *err);

/* ds4 adds the max-effort prefix (reasoning_effort "max") only for contexts
 * of at least this many tokens; below it thinking runs without the prefix. */
#define V4F_CHAT_THINK_MAX_MIN_CTX 393216

/* The special strings of the format. */
#define V4F_CHAT_BOS "<｜begin▁of▁sentence｜>"
#define V4F_CHAT_EOS "<｜end▁of▁sentence｜>"
#define V4F_CHAT_USER "<｜User｜>"
#define V4F_CHAT_ASSISTANT "<｜Assistant｜>"
#define V4F_CHAT_REMINDER "<｜latest_reminder｜>"
#define V4F_CHAT_THINK "<think>"
#define V4F_CHAT_THINK_END "</think>"
#define V4F_CHAT_DSML "｜DSML｜"

#endif /* V4F_CHAT_H */
