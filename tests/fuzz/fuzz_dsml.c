/*
 * fuzz_dsml.c - libFuzzer target for the incremental DSML parser.
 * Byte 0 picks thinking mode and the chunking; the rest is the completion.
 * Invariants: feeding in chunks gives exactly the result of feeding it
 * whole; in chat mode, for input without EOS text, either content is the
 * input itself (malformed blocks come back as plain content), or content is
 * a prefix of the input and the rest is a tool-call block that parsed (with
 * calls, or an empty one, which the official parser accepts too).
 *
 * Owns nothing between runs; single-threaded.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/chat.h"
#include "tokenizer/dsml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void same(const v4f_dsml_msg *a, const v4f_dsml_msg *b) {
    if (a->flags != b->flags || a->eos != b->eos || a->n_calls != b->n_calls ||
        a->content_len != b->content_len || a->reasoning_len != b->reasoning_len ||
        memcmp(a->content, b->content, a->content_len) != 0 ||
        memcmp(a->reasoning, b->reasoning, a->reasoning_len) != 0)
        __builtin_trap();
    for (size_t i = 0; i < a->n_calls; i++)
        if (a->calls[i].name_len != b->calls[i].name_len ||
            a->calls[i].arguments_len != b->calls[i].arguments_len ||
            memcmp(a->calls[i].name, b->calls[i].name, a->calls[i].name_len) != 0 ||
            memcmp(a->calls[i].arguments, b->calls[i].arguments, a->calls[i].arguments_len) != 0)
            __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    bool thinking = data[0] & 1;
    unsigned chunk = (data[0] >> 1) % 8 + 1;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;

    v4f_dsml *whole = v4f_dsml_new(thinking), *parts = v4f_dsml_new(thinking);
    v4f_dsml_feed(whole, s, n);
    v4f_dsml_finish(whole);
    for (size_t i = 0; i < n; i += chunk) {
        v4f_dsml_feed(parts, s + i, n - i < chunk ? n - i : chunk);
        v4f_dsml_msg mid;
        v4f_dsml_result(parts, &mid); /* must be callable at any point */
    }
    v4f_dsml_finish(parts);
    v4f_dsml_msg a, b;
    v4f_dsml_result(whole, &a);
    v4f_dsml_result(parts, &b);
    same(&a, &b);
    if (!thinking && !memmem(s, n, V4F_CHAT_EOS, strlen(V4F_CHAT_EOS))) {
        static const char start[] = "\n\n<" V4F_CHAT_DSML "tool_calls";
        const bool whole_text = a.content_len == n && memcmp(a.content, s, n) == 0;
        const bool block_after = a.content_len <= n && memcmp(a.content, s, a.content_len) == 0 &&
                                 n - a.content_len >= sizeof start - 1 &&
                                 memcmp(s + a.content_len, start, sizeof start - 1) == 0 &&
                                 !(a.flags & V4F_DSML_MALFORMED);
        if (a.n_calls == 0 && !whole_text && !block_after) __builtin_trap();
        if (a.n_calls && !block_after) __builtin_trap();
    }
    v4f_dsml_free(whole);
    v4f_dsml_free(parts);
    return 0;
}
