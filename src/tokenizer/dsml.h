/*
 * dsml.h - incremental parser for DeepSeek V4 generated text: splits a
 * completion (fed piece by piece, e.g. token by token) into reasoning
 * (up to </think>), content, and DSML tool calls, producing the assistant
 * message the official parser (encoding_dsv4.py
 * parse_message_from_completion_text) would return for well-formed text.
 *
 * Grammar after the content: "\n\n<｜DSML｜tool_calls>\n", invokes
 * "<｜DSML｜invoke name=\"N\">\n" + parameters joined by "\n" +
 * "\n</｜DSML｜invoke>", joined by "\n", then "\n</｜DSML｜tool_calls>", then
 * EOS (or the end). Parameters: "<｜DSML｜parameter name=\"K\"
 * string=\"true|false\">V</｜DSML｜parameter>"; true = raw string, false =
 * JSON text (copied verbatim into the arguments, like the official code).
 *
 * Never fails on content: a malformed or truncated tool-call block is
 * returned as plain content (the raw text, appended to the content) with
 * V4F_DSML_MALFORMED (and V4F_DSML_TRUNCATED if it was cut off); no tool
 * calls are returned then. An empty block (the opening marker, ">\n", the
 * closing marker) is well formed, as for the official parser: no calls,
 * the content is the text before it. EOS ends the generation wherever it
 * appears (an EOS inside an unfinished block makes the block malformed).
 * Text after EOS is ignored (V4F_DSML_TRAILING).
 *
 * Where this differs from the official parser (which raises): reasoning
 * ends only at </think> (DSML markers inside reasoning are not executable,
 * as in ds4); reasoning cut off without </think> stays reasoning, flagged
 * NO_THINK_END | TRUNCATED; content without EOS is kept, flagged TRUNCATED;
 * special-token text inside reasoning/content is kept, flagged
 * SPECIAL_IN_TEXT. "\s*" before name= in an invoke header accepts ASCII
 * whitespace only.
 *
 * Streaming: reasoning and content only ever grow with committed bytes (a
 * possible marker prefix is held back), so a caller may forward
 * content[sent..content_len) after each feed.
 * Ownership: the parser owns all result strings; they live until the next
 * feed/finish (pointers may move as buffers grow) or v4f_dsml_free.
 * Threading: one parser per stream; no globals.
 */
#ifndef V4F_DSML_H
#define V4F_DSML_H

#include <stdbool.h>
#include <stddef.h>

#include "core/core.h"

enum {
    V4F_DSML_MALFORMED = 1u << 0,  /* tool-call block did not parse: kept as content */
    V4F_DSML_TRUNCATED = 1u << 1,  /* finished without EOS inside reasoning or a block,
                                      or content without EOS */
    V4F_DSML_NO_THINK_END = 1u << 2, /* thinking mode, no </think> before EOS/end */
    V4F_DSML_SPECIAL_IN_TEXT = 1u << 3, /* a special token string inside reasoning/content */
    V4F_DSML_TRAILING = 1u << 4    /* bytes after EOS (ignored) */
};

typedef enum v4f_dsml_state {
    V4F_DSML_IN_REASONING = 0,
    V4F_DSML_IN_CONTENT,
    V4F_DSML_IN_TOOL_CALLS,
    V4F_DSML_DONE
} v4f_dsml_state;

typedef struct v4f_dsml_call {
    const char *name;      /* raw name text */
    size_t name_len;
    const char *arguments; /* JSON object text, as the official decoder builds it */
    size_t arguments_len;
} v4f_dsml_call;

typedef struct v4f_dsml_msg {
    const char *reasoning; /* NUL-terminated */
    size_t reasoning_len;
    const char *content;   /* NUL-terminated */
    size_t content_len;
    const v4f_dsml_call *calls; /* complete after finish / EOS only */
    size_t n_calls;
    unsigned flags;        /* V4F_DSML_* */
    bool eos;              /* EOS was seen */
} v4f_dsml_msg;

typedef struct v4f_dsml v4f_dsml;

/* thinking: the prompt ended with <think>, so output starts as reasoning. */
v4f_dsml *v4f_dsml_new(bool thinking);
void v4f_dsml_free(v4f_dsml *p);
/* Feed generated text (any split, any bytes). */
void v4f_dsml_feed(v4f_dsml *p, const char *text, size_t len);
/* End of generation (also implied by EOS): flushes held-back bytes and
 * settles a pending tool-call block. Idempotent. */
void v4f_dsml_finish(v4f_dsml *p);
v4f_dsml_state v4f_dsml_get_state(const v4f_dsml *p);
/* Snapshot of the result so far (valid until the next call on p). Scans
 * the text for special tokens (the flags): O(text) per call. */
void v4f_dsml_result(const v4f_dsml *p, v4f_dsml_msg *out);
/* The reasoning and content committed so far, without the scan (streaming:
 * O(1) per call; valid until the next feed/finish). */
void v4f_dsml_text(const v4f_dsml *p, const char **reasoning, size_t *reasoning_len, const char **content,
                   size_t *content_len);

/* Append the message as the official parser returns it, as JSON:
 * {"role": "assistant", "content": ..., "reasoning_content": ...,
 *  "tool_calls": [{"type": "function", "function": {"name": ..,
 *  "arguments": ..}}]} (arguments as a JSON string holding the object
 * text). flags: V4F_JSON_WRITE_* (Python separators or compact). */
struct v4f_json_buf;
void v4f_dsml_msg_write_json(struct v4f_json_buf *b, const v4f_dsml_msg *m, unsigned flags);

#endif /* V4F_DSML_H */
