/*
 * oai.h - the OpenAI-compatible wire protocol of `v4flash serve`, without
 * sockets: request bodies -> a validated request (the prompt text through
 * the official chat renderer), and generated text -> response bodies or
 * server-sent events.
 *
 * Requests (POST bodies):
 *   chat        /v1/chat/completions: messages, tools, tool_choice ("none"
 *               renders without the tools), model, max_tokens |
 *               max_completion_tokens, temperature, top_p, top_k, min_p, seed,
 *               stop (string or up to 4 strings), stream,
 *               stream_options.include_usage, n (1 only), thinking
 *               ({"type": "enabled"|"disabled"} or a bool), think (bool),
 *               reasoning_effort ("none" turns thinking off, "max" asks for
 *               the max-effort prefix). Model "deepseek-chat" means no
 *               thinking, "deepseek-reasoner" thinking. Unknown keys are
 *               ignored, as OpenAI clients send many.
 *   completion  /v1/completions: prompt (a string, or a list of one string)
 *               sent as raw text (special tokens recognised, no template),
 *               plus the sampling, stop and stream fields; echo, suffix,
 *               best_of and logprobs are refused.
 *   messages    Anthropic /v1/messages (Claude Code): system (a string or
 *               text blocks), messages with content blocks (text, thinking,
 *               tool_use, tool_result; images become "[Unsupported image]"
 *               as the renderer writes them), tools (name, description,
 *               input_schema), tool_choice ({"type": "none"} renders without
 *               the tools), max_tokens, stop_sequences, temperature, top_p,
 *               top_k, stream, thinking ({"type": "enabled"|"disabled"}).
 *               Converted to the OpenAI message form the renderer reads:
 *               thinking -> reasoning_content, tool_use -> tool_calls
 *               (input as the arguments JSON), tool_result -> a tool message.
 * A bad value gets INVALID_ARG with a message naming the field.
 *
 * Responses: v4f_oai_out follows one generation. Feed it the generated text
 * (decoded bytes, special tokens as their text, in any pieces); chat output
 * goes through the DSML parser (reasoning_content, content, tool_calls). In
 * stream mode each feed appends "data: {chunk}\n\n" events (the role first,
 * then reasoning / content deltas, tool calls when complete; the tail of the
 * content that could begin a stop string is held back); finish appends the
 * last chunk with finish_reason, the usage chunk if asked, and
 * "data: [DONE]". Otherwise finish writes the whole response object.
 * finish_reason: "stop" (EOS or a stop string), "tool_calls", "length".
 * Anthropic: a message object with thinking / text / tool_use blocks
 * (toolu_ ids), stop_reason end_turn / tool_use / max_tokens / stop_sequence;
 * streamed as message_start, content_block_start / _delta / _stop,
 * message_delta and message_stop events. usage: input_tokens (the prompt
 * tokens not taken from the cache), cache_read_input_tokens, output_tokens.
 *
 * Ownership: a v4f_oai_req owns its parsed document; a v4f_oai_out owns its
 * parser and copies what it needs from the request. Output goes into
 * caller-owned v4f_json_bufs. Threading: none inside; one object per thread.
 */
#ifndef V4F_SERVER_OAI_H
#define V4F_SERVER_OAI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "json/json.h"

#define V4F_OAI_MODEL_ID "deepseek-v4-flash"
#define V4F_OAI_MAX_STOP 4
#define V4F_OAI_STOP_MAX_BYTES 256

typedef enum v4f_oai_kind {
    V4F_OAI_CHAT = 0,       /* OpenAI /v1/chat/completions */
    V4F_OAI_COMPLETION = 1, /* OpenAI /v1/completions */
    V4F_OAI_MESSAGES = 2    /* Anthropic /v1/messages */
} v4f_oai_kind;

/* Server-wide defaults a request starts from. */
typedef struct v4f_oai_defaults {
    bool thinking;          /* chat: thinking mode unless the request says */
    bool think_max_ok;      /* the context is large enough for the max-effort prefix */
    float temperature, top_p, min_p;
    int32_t top_k;
} v4f_oai_defaults;

typedef struct v4f_oai_req {
    v4f_oai_kind kind;
    v4f_json_doc *doc;            /* the parsed body (owned) */
    v4f_json_doc *conv;           /* messages: the OpenAI form of the conversation (owned) */
    const v4f_json *messages;     /* chat */
    const v4f_json *tools;        /* chat, NULL when absent or tool_choice "none" */
    const char *prompt;           /* completion (points into doc) */
    size_t prompt_len;
    bool thinking, think_max;     /* chat rendering mode */
    float temperature, top_p, min_p;
    int32_t top_k;
    uint64_t seed;
    bool seed_given;
    int64_t max_tokens;           /* -1: not given */
    bool stream, include_usage;
    char model[64];               /* as sent (or the default id), for the response */
    uint32_t n_stop;
    char stop[V4F_OAI_MAX_STOP][V4F_OAI_STOP_MAX_BYTES + 1];
    size_t stop_len[V4F_OAI_MAX_STOP];
} v4f_oai_req;

/* Parse and validate a request body. On failure *out holds nothing to free
 * and err names the field. */
v4f_status v4f_oai_parse(v4f_oai_kind kind, const char *body, size_t len, const v4f_oai_defaults *d,
                         v4f_oai_req *out, v4f_err *err);
void v4f_oai_req_free(v4f_oai_req *r);

/* The prompt text: chat through the official renderer (BOS, tools,
 * messages, then <think> or </think>), completion as sent. *out is
 * malloc'ed (caller frees). INVALID_ARG for messages the renderer refuses. */
v4f_status v4f_oai_prompt(const v4f_oai_req *r, char **out, size_t *out_len, v4f_err *err);

/* {"error": {"message": msg, "type": type, "param": null, "code": code|null}};
 * for Anthropic requests {"type": "error", "error": {"type": type, "message": msg}} */
void v4f_oai_error_json(v4f_json_buf *b, const char *msg, const char *type, const char *code);
void v4f_oai_error_json_for(v4f_oai_kind kind, v4f_json_buf *b, const char *msg, const char *type,
                            const char *code);

/* The model list / one model object (GET /v1/models[/id]). */
void v4f_oai_models_json(v4f_json_buf *b, uint32_t n_ctx, int64_t created, bool list);

/* Random ids: prefix + 32 lowercase hex digits (getrandom, /dev/urandom). */
void v4f_oai_random_id(char *out, size_t cap, const char *prefix);

typedef struct v4f_oai_usage {
    uint64_t prompt_tokens, completion_tokens, cached_tokens;
} v4f_oai_usage;

typedef struct v4f_oai_out v4f_oai_out;

/* A generation's output for request r (id and created as given). */
v4f_oai_out *v4f_oai_out_new(const v4f_oai_req *r, const char *id, int64_t created);
void v4f_oai_out_free(v4f_oai_out *o);
/* The prompt's token counts, once the prefill is done (Anthropic streams
 * send them in their first event). */
void v4f_oai_out_prompt_usage(v4f_oai_out *o, uint64_t prompt_tokens, uint64_t cached_tokens);
/* Generated text; stream mode appends events to sse. Returns false once a
 * stop string matched (the text after it is dropped; stop generating). */
bool v4f_oai_out_feed(v4f_oai_out *o, const char *text, size_t len, v4f_json_buf *sse);
/* End: reason "eos" | "length" | "stop" (what ended the generation; a
 * matched stop string or complete tool calls take precedence). Stream mode
 * appends the final events, otherwise the whole response object. */
void v4f_oai_out_finish(v4f_oai_out *o, const char *reason, const v4f_oai_usage *u, v4f_json_buf *dst);
/* After finish: the finish_reason sent. */
const char *v4f_oai_out_finish_reason(const v4f_oai_out *o);

#endif /* V4F_SERVER_OAI_H */
