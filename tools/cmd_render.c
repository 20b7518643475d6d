/*
 * cmd_render.c - `v4flash render --messages FILE.json [--thinking |
 * --no-thinking | --think-max]`: print the DeepSeek V4 prompt of a message
 * list exactly (no newline added). FILE.json is a bare message list, an
 * object {"messages", "tools"}, or a generated-case object with
 * thinking_mode / drop_thinking / reasoning_effort (a mode flag overrides
 * the file). With -m MODEL and --ids it prints the prompt's token ids.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "json/json.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

int cmd_render(int argc, char **argv) {
    const char *file = NULL, *model = NULL;
    bool thinking = false, no_thinking = false, think_max = false, keep = false, ids = false,
         no_bos = false;
    const v4f_opt opts[] = {
        {"messages", 0, V4F_ARG_STR, &file, 0, 0, "FILE.json", "the conversation (required; - = stdin)", NULL},
        {"thinking", 0, V4F_ARG_FLAG, &thinking, 0, 0, NULL, "thinking mode (the default unless the file says)", NULL},
        {"no-thinking", 0, V4F_ARG_FLAG, &no_thinking, 0, 0, NULL, "chat (non-thinking) mode", NULL},
        {"think-max", 0, V4F_ARG_FLAG, &think_max, 0, 0, NULL, "thinking with reasoning_effort max", NULL},
        {"keep-thinking", 0, V4F_ARG_FLAG, &keep, 0, 0, NULL, "drop_thinking = false (keep old reasoning)", NULL},
        {"no-bos", 0, V4F_ARG_FLAG, &no_bos, 0, 0, NULL, "omit the leading BOS text", NULL},
        {"model", 'm', V4F_ARG_STR, &model, 0, 0, "MODEL", "model or vocab-only GGUF (for --ids)", NULL},
        {"ids", 0, V4F_ARG_FLAG, &ids, 0, 0, NULL, "print the prompt's token ids (needs -m) instead", NULL},
        {0},
    };
    const v4f_args_spec spec = {
        .cmd = "v4flash render",
        .synopsis = "--messages FILE.json [--thinking|--no-thinking|--think-max] [-m MODEL --ids]",
        .about = "Print the DeepSeek V4 prompt for an OpenAI-style message list, byte-exact with\n"
                 "the official encoder (encoding_dsv4.py). FILE.json: a message list, or an object\n"
                 "with \"messages\" and optional \"tools\", \"thinking_mode\", \"drop_thinking\",\n"
                 "\"reasoning_effort\".",
        .opts = opts,
    };
    int rc = v4f_args_parse(&spec, argc, argv, NULL, NULL);
    if (rc == V4F_ARGS_HELP) return 0;
    if (rc) return rc;
    if (!file) return v4f_args_fail(&spec, "--messages FILE.json is required");
    if (thinking + no_thinking + think_max > 1)
        return v4f_args_fail(&spec, "--thinking, --no-thinking and --think-max exclude each other");
    if (ids && !model) return v4f_args_fail(&spec, "--ids needs -m MODEL");

    size_t len = 0;
    char *text = v4f_cli_read_file(file, &len);
    if (!text) {
        fprintf(stderr, "v4flash render: cannot read %s\n", file);
        return 1;
    }
    v4f_json_doc *doc = NULL;
    v4f_err err = {0};
    if (v4f_json_parse(text, len, NULL, &doc, &err) != V4F_OK) {
        fprintf(stderr, "v4flash render: %s: %s\n", file, err.msg);
        free(text);
        return 1;
    }
    v4f_chat_opts o;
    v4f_chat_opts_default(&o);
    const v4f_json *messages, *tools;
    char *out = NULL;
    size_t out_len = 0;
    rc = 0;
    if (v4f_chat_doc_parts(v4f_json_doc_root(doc), &messages, &tools, &o, &err) == V4F_OK) {
        if (thinking) o.thinking = true;
        if (no_thinking) o.thinking = false;
        if (think_max) {
            o.thinking = true;
            o.effort = V4F_CHAT_EFFORT_MAX;
        }
        if (keep) o.drop_thinking = false;
        if (no_bos) o.no_bos = true;
        if (v4f_chat_render(messages, tools, &o, &out, &out_len, &err) != V4F_OK) rc = 1;
    } else {
        rc = 1;
    }
    if (rc) fprintf(stderr, "v4flash render: %s: %s\n", file, err.msg);
    if (!rc && ids) {
        v4f_tok *t = NULL;
        if (v4f_tok_open(model, &t, &err) != V4F_OK) {
            fprintf(stderr, "v4flash render: cannot load the tokenizer from %s: %s\n", model, err.msg);
            rc = 1;
        } else {
            v4f_tok_ids v = {0};
            v4f_tok_encode(t, out, out_len, V4F_TOK_ENC_SPECIAL, &v, &err);
            for (size_t i = 0; i < v.n; i++) printf(i ? " %d" : "%d", v.ids[i]);
            printf("\n");
            v4f_tok_ids_free(&v);
            v4f_tok_free(t);
        }
    } else if (!rc) {
        if (model) {
            /* validate the model even when only the text is printed */
            v4f_tok *t = NULL;
            if (v4f_tok_open(model, &t, &err) != V4F_OK) {
                fprintf(stderr, "v4flash render: cannot load the tokenizer from %s: %s\n", model, err.msg);
                rc = 1;
            }
            v4f_tok_free(t);
        }
        if (!rc && fwrite(out, 1, out_len, stdout) != out_len) rc = 1;
    }
    if (fflush(stdout) != 0) rc = 1;
    free(out);
    v4f_json_doc_free(doc);
    free(text);
    return rc;
}
