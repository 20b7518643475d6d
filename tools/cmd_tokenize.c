/*
 * cmd_tokenize.c - `v4flash tokenize` (text -> ids, one line, space
 * separated; --bench measures single-thread MB/s of every available
 * pre-tokenizer path) and `v4flash detokenize` (ids -> raw bytes, nothing
 * added). Both take a model or a vocab-only GGUF.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "args.h"
#include "cli.h"
#include "tokenizer/tokenizer.h"

static int load(const char *cmd, const char *model, v4f_tok **t) {
    v4f_err err = {0};
    if (v4f_tok_open(model, t, &err) != V4F_OK) {
        fprintf(stderr, "%s: cannot load the tokenizer from %s: %s\n", cmd, model, err.msg);
        return 1;
    }
    return 0;
}

/* CPU time of this thread: single-thread speed, robust to a busy machine */
static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void bench(v4f_tok *t, const char *text, size_t len, unsigned flags) {
    static const v4f_tok_splitter paths[2] = {V4F_TOK_SPLIT_BUILTIN, V4F_TOK_SPLIT_PCRE2};
    for (int k = 0; k < 2; k++) {
        v4f_err err = {0};
        if (v4f_tok_set_splitter(t, paths[k], &err) != V4F_OK) {
            fprintf(stderr, "bench: %-9s unavailable (%s)\n", k ? "pcre2-jit" : "builtin", err.msg);
            continue;
        }
        v4f_tok_ids ids = {0};
        double best = 1e30, total = 0, best_wall = 1e30;
        size_t n_ids = 0;
        int runs = 0;
        while (runs < 5 || (total < 1.0 && runs < 1000)) {
            ids.n = 0;
            double w0 = v4f_time_s(), t0 = cpu_s();
            v4f_tok_encode(t, text, len, flags, &ids, &err);
            double dt = cpu_s() - t0, dw = v4f_time_s() - w0;
            if (dt < best) best = dt;
            if (dw < best_wall) best_wall = dw;
            total += dt;
            n_ids = ids.n;
            runs++;
        }
        fprintf(stderr,
                "bench: %-9s %8.1f MB/s (best, thread CPU time), %8.1f MB/s mean, %8.1f MB/s best wall"
                " (%zu bytes -> %zu tokens, %d runs)\n",
                v4f_tok_splitter_name(t), (double)len / best / 1e6, (double)len * runs / total / 1e6,
                (double)len / best_wall / 1e6, len, n_ids, runs);
        v4f_tok_ids_free(&ids);
    }
    v4f_err err = {0};
    v4f_tok_set_splitter(t, V4F_TOK_SPLIT_DEFAULT, &err);
}

int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *text = NULL, *file = NULL, *splitter = NULL;
    bool no_special = false, do_bench = false;
    const v4f_opt opts[] = {
        {"model", 'm', V4F_ARG_STR, &model, 0, 0, "MODEL", "model or vocab-only GGUF (required)", NULL},
        {"text", 0, V4F_ARG_STR, &text, 0, 0, "S", "the text to tokenize", NULL},
        {"text-file", 'f', V4F_ARG_STR, &file, 0, 0, "F", "read the text (raw bytes) from F (- = stdin)", NULL},
        {"no-special", 0, V4F_ARG_FLAG, &no_special, 0, 0, NULL, "do not match special tokens in the text", NULL},
        {"splitter", 0, V4F_ARG_STR, &splitter, 0, 0, "NAME", "pre-tokenizer: builtin | pcre2 (default builtin)", NULL},
        {"bench", 0, V4F_ARG_FLAG, &do_bench, 0, 0, NULL,
         "print single-thread MB/s of each pre-tokenizer path to stderr instead of the ids", NULL},
        {0},
    };
    const v4f_args_spec spec = {
        .cmd = "v4flash tokenize",
        .synopsis = "-m MODEL (--text S | --text-file F) [--no-special]",
        .about = "Print the token ids of the text on one line, separated by spaces.",
        .opts = opts,
    };
    int rc = v4f_args_parse(&spec, argc, argv, NULL, NULL);
    if (rc == V4F_ARGS_HELP) return 0;
    if (rc) return rc;
    if (!model) return v4f_args_fail(&spec, "-m MODEL is required");
    if (!!text == !!file) return v4f_args_fail(&spec, "give exactly one of --text and --text-file");
    v4f_tok_splitter sp = V4F_TOK_SPLIT_DEFAULT;
    if (splitter && !strcmp(splitter, "builtin")) sp = V4F_TOK_SPLIT_BUILTIN;
    else if (splitter && !strcmp(splitter, "pcre2")) sp = V4F_TOK_SPLIT_PCRE2;
    else if (splitter) return v4f_args_fail(&spec, "unknown --splitter '%s'", splitter);

    size_t len = 0;
    char *buf = NULL;
    if (file) {
        buf = v4f_cli_read_file(file, &len);
        if (!buf) {
            fprintf(stderr, "v4flash tokenize: cannot read %s\n", file);
            return 1;
        }
    } else {
        len = strlen(text);
    }
    v4f_tok *t = NULL;
    if (load("v4flash tokenize", model, &t)) {
        free(buf);
        return 1;
    }
    v4f_err err = {0};
    if (v4f_tok_set_splitter(t, sp, &err) != V4F_OK) {
        fprintf(stderr, "v4flash tokenize: %s\n", err.msg);
        v4f_tok_free(t);
        free(buf);
        return 2;
    }
    const char *s = buf ? buf : text;
    unsigned flags = no_special ? 0 : V4F_TOK_ENC_SPECIAL;
    rc = 0;
    if (do_bench) {
        bench(t, s, len, flags);
    } else {
        v4f_tok_ids ids = {0};
        v4f_tok_encode(t, s, len, flags, &ids, &err);
        for (size_t i = 0; i < ids.n; i++) printf(i ? " %d" : "%d", ids.ids[i]);
        printf("\n");
        v4f_tok_ids_free(&ids);
        if (fflush(stdout) != 0) rc = 1;
    }
    v4f_tok_free(t);
    free(buf);
    return rc;
}

int cmd_detokenize(int argc, char **argv) {
    const char *model = NULL, *ids_s = NULL;
    const v4f_opt opts[] = {
        {"model", 'm', V4F_ARG_STR, &model, 0, 0, "MODEL", "model or vocab-only GGUF (required)", NULL},
        {"ids", 0, V4F_ARG_STR, &ids_s, 0, 0, "\"1 2 3\"", "token ids, separated by spaces or commas (required)", NULL},
        {0},
    };
    const v4f_args_spec spec = {
        .cmd = "v4flash detokenize",
        .synopsis = "-m MODEL --ids \"1 2 3\"",
        .about = "Print the bytes the ids stand for, exactly (no newline is added).",
        .opts = opts,
    };
    int rc = v4f_args_parse(&spec, argc, argv, NULL, NULL);
    if (rc == V4F_ARGS_HELP) return 0;
    if (rc) return rc;
    if (!model) return v4f_args_fail(&spec, "-m MODEL is required");
    if (!ids_s) return v4f_args_fail(&spec, "--ids is required");
    size_t cap = 16, n = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    for (const char *p = ids_s; *p;) {
        if (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n') {
            p++;
            continue;
        }
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p || v < 0 || v > INT32_MAX ||
            (*end && *end != ' ' && *end != ',' && *end != '\t' && *end != '\n')) {
            free(ids);
            return v4f_args_fail(&spec, "bad token id in --ids near '%.20s'", p);
        }
        if (n == cap) {
            cap *= 2;
            ids = realloc(ids, cap * sizeof *ids);
            if (!ids) return 1;
        }
        ids[n++] = (int32_t)v;
        p = end;
    }
    v4f_tok *t = NULL;
    if (load("v4flash detokenize", model, &t)) {
        free(ids);
        return 1;
    }
    char *out = NULL;
    size_t out_len = 0;
    v4f_err err = {0};
    rc = 0;
    if (v4f_tok_decode(t, ids, n, &out, &out_len, &err) != V4F_OK) {
        fprintf(stderr, "v4flash detokenize: %s\n", err.msg);
        rc = 1;
    } else if (fwrite(out, 1, out_len, stdout) != out_len || fflush(stdout) != 0) {
        rc = 1;
    }
    free(out);
    free(ids);
    v4f_tok_free(t);
    return rc;
}
