/*
 * v4flash.c - the single command-line front end: dispatches subcommands.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} command;

static const command k_commands[] = {
    {"inspect", cmd_inspect, "print a GGUF file's metadata, tensors and layout verdict"},
    {"run", cmd_run, "generate a reply to one prompt (chat template, streaming)"},
    {"chat", cmd_chat, "interactive multi-turn chat keeping the KV cache"},
    {"serve", cmd_serve, "OpenAI-compatible HTTP server (chat completions, tools, streaming)"},
    {"quantize", cmd_quantize, "re-quantize the routed experts into the other published layout (q4 <-> q2)"},
    {"synth", cmd_synth, "write a random-weight model in the published layout"},
    {"bench", cmd_bench, "prefill/decode speed at context frontiers; --membw: memory bandwidth"},
    {"logits", cmd_logits, "evaluate token ids (prefill + decode) and write all logits"},
    {"tokenize", cmd_tokenize, "text -> token ids (model or vocab-only GGUF); --bench: MB/s"},
    {"detokenize", cmd_detokenize, "token ids -> the exact bytes they stand for"},
    {"render", cmd_render, "print the chat prompt of a message list (official V4 template)"},
    {"kv", cmd_kv, "disk KV cache: ls, show, rm, verify, gc, bench (--kv-dir DIR)"},
};

static void usage(FILE *f) {
    fprintf(f, "v4flash %s - DeepSeek V4 Flash inference engine\n\n", V4F_VERSION_STRING);
    fprintf(f, "usage: v4flash COMMAND [options]   (v4flash COMMAND --help for details)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof k_commands / sizeof k_commands[0]; i++)
        fprintf(f, "  %-11s %s\n", k_commands[i].name, k_commands[i].help);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("v4flash %s\n", V4F_VERSION_STRING);
        return 0;
    }
    for (size_t i = 0; i < sizeof k_commands / sizeof k_commands[0]; i++)
        if (!strcmp(argv[1], k_commands[i].name)) return k_commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "v4flash: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
