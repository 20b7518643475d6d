/*
 * cmd_inspect.c - `v4flash inspect MODEL.gguf [--mtp MTP.gguf] [--all] [--no-tensors]`
 *
 * Prints the metadata (long arrays abbreviated unless --all), the tensor
 * table (name, type, shape, bytes), byte totals per type, and the layout
 * verdict: a valid DeepSeek V4 Flash model (published q2/q4 or custom
 * shapes), a valid stand-alone MTP file, or every layout problem found.
 * Exit code: 0 valid, 1 malformed or invalid, 2 usage.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "core/ggml_type.h"
#include "gguf/gguf.h"
#include "model/model.h"

#define ARR_PREVIEW 8

static void print_str(FILE *f, v4f_str s, uint64_t max) {
    fputc('"', f);
    for (uint64_t i = 0; i < s.len && i < max; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c == '\n') fputs("\\n", f);
        else if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\x%02x", c);
        else fputc(c, f);
    }
    if (s.len > max) fputs("...", f);
    fputc('"', f);
}

static void print_scalar(FILE *f, const v4f_gguf_kv *kv) {
    switch (kv->type) {
    case V4F_GGUF_U8: case V4F_GGUF_U16: case V4F_GGUF_U32: case V4F_GGUF_U64:
        fprintf(f, "%" PRIu64, kv->v.u64);
        break;
    case V4F_GGUF_I8: case V4F_GGUF_I16: case V4F_GGUF_I32: case V4F_GGUF_I64:
        fprintf(f, "%" PRId64, kv->v.i64);
        break;
    case V4F_GGUF_F32: case V4F_GGUF_F64: fprintf(f, "%.9g", kv->v.f64); break;
    case V4F_GGUF_BOOL: fputs(kv->v.b ? "true" : "false", f); break;
    case V4F_GGUF_STRING: print_str(f, kv->v.str, 200); break;
    default: fputs("?", f);
    }
}

static void print_array(FILE *f, const v4f_gguf *g, const v4f_gguf_kv *kv, bool all, int depth) {
    fprintf(f, "%s[%" PRIu64 "] [", v4f_gguf_vtype_name(kv->arr_type), kv->arr_n);
    uint64_t n = all ? kv->arr_n : (kv->arr_n < ARR_PREVIEW ? kv->arr_n : ARR_PREVIEW);
    for (uint64_t i = 0; i < n; i++) {
        if (i) fputs(", ", f);
        int64_t iv;
        double dv;
        v4f_str sv;
        v4f_gguf_kv sub;
        if (kv->arr_type == V4F_GGUF_STRING && v4f_gguf_arr_str(g, kv, i, &sv)) print_str(f, sv, 64);
        else if (kv->arr_type == V4F_GGUF_ARRAY && depth < 4 && v4f_gguf_arr_sub(kv, i, &sub))
            print_array(f, g, &sub, all, depth + 1);
        else if ((kv->arr_type == V4F_GGUF_F32 || kv->arr_type == V4F_GGUF_F64) &&
                 v4f_gguf_arr_float(kv, i, &dv))
            fprintf(f, "%.6g", dv);
        else if (v4f_gguf_arr_int(kv, i, &iv)) fprintf(f, "%" PRId64, iv);
        else fputs("?", f);
    }
    if (n < kv->arr_n) fprintf(f, ", ... (%" PRIu64 " more)", kv->arr_n - n);
    fputc(']', f);
}

static void print_metadata(const v4f_gguf *g, bool all) {
    printf("file: %s\nGGUF version %u, alignment %u, %u shard%s, %" PRIu64 " bytes\n",
           v4f_gguf_path(g), v4f_gguf_version(g), v4f_gguf_alignment(g), v4f_gguf_n_shards(g),
           v4f_gguf_n_shards(g) == 1 ? "" : "s", v4f_gguf_file_size(g));
    printf("\nmetadata (%" PRIu64 " keys):\n", v4f_gguf_n_kv(g));
    for (uint64_t i = 0; i < v4f_gguf_n_kv(g); i++) {
        const v4f_gguf_kv *kv = v4f_gguf_kv_at(g, i);
        printf("  %-48.*s %-7s ", (int)kv->key.len, kv->key.ptr,
               kv->type == V4F_GGUF_ARRAY ? "array" : v4f_gguf_vtype_name(kv->type));
        if (kv->type == V4F_GGUF_ARRAY) print_array(stdout, g, kv, all, 0);
        else print_scalar(stdout, kv);
        putchar('\n');
    }
}

static void print_tensors(const v4f_gguf *g, bool list) {
    uint64_t per_type[V4F_TYPE_COUNT] = {0}, count[V4F_TYPE_COUNT] = {0}, total = 0;
    uint64_t n = v4f_gguf_n_tensors(g);
    if (list) printf("\ntensors (%" PRIu64 "):\n", n);
    for (uint64_t i = 0; i < n; i++) {
        const v4f_gguf_tensor *t = v4f_gguf_tensor_at(g, i);
        char shape[96];
        size_t o = (size_t)snprintf(shape, sizeof shape, "[");
        for (uint32_t d = 0; d < t->n_dims && o < sizeof shape; d++)
            o += (size_t)snprintf(shape + o, sizeof shape - o, "%s%" PRIu64, d ? ", " : "", t->ne[d]);
        if (o < sizeof shape) snprintf(shape + o, sizeof shape - o, "]");
        if (list)
            printf("  %-44.*s %-8s %-24s %14" PRIu64 "\n", (int)t->name.len, t->name.ptr,
                   v4f_type_name(t->type), shape, t->n_bytes);
        if (t->type < V4F_TYPE_COUNT) {
            per_type[t->type] += t->n_bytes;
            count[t->type]++;
        }
        total += t->n_bytes;
    }
    printf("\nbytes per type:\n");
    for (int t = 0; t < V4F_TYPE_COUNT; t++)
        if (count[t])
            printf("  %-8s %6" PRIu64 " tensors %16" PRIu64 " bytes (%.2f GiB)\n", v4f_type_name((uint32_t)t),
                   count[t], per_type[t], (double)per_type[t] / (1024.0 * 1024 * 1024));
    printf("  %-8s %6" PRIu64 " tensors %16" PRIu64 " bytes (%.2f GiB)\n", "total", n, total,
           (double)total / (1024.0 * 1024 * 1024));
}

static void print_issues(const v4f_layout_report *r) {
    int shown = r->n_issues < V4F_LAYOUT_MAX_ISSUES ? r->n_issues : V4F_LAYOUT_MAX_ISSUES;
    for (int i = 0; i < shown; i++) printf("  - %s\n", r->issues[i]);
    if (r->n_issues > shown) printf("  ... and %d more\n", r->n_issues - shown);
}

/* Verdict for a file: main model, MTP file, or neither. Returns exit code. */
static int verdict(v4f_gguf *g, const char *mtp_path) {
    v4f_layout_report rep;
    v4f_err err = {0};
    bool is_mtp = !v4f_gguf_tensor_find(g, "token_embd.weight") &&
                  v4f_gguf_tensor_find(g, "mtp.0.e_proj.weight");
    printf("\nlayout verdict: ");
    if (is_mtp) {
        v4f_config cfg;
        if (v4f_mtp_file_validate(g, &cfg, &rep, &err) != V4F_OK) {
            printf("INVALID MTP file\n  %s\n", err.msg);
            print_issues(&rep);
            return 1;
        }
        printf("valid DeepSeek V4 Flash MTP block (d=%u, %u experts)\n", cfg.n_embd, cfg.n_expert);
        return 0;
    }
    v4f_gguf *mtp = NULL;
    if (mtp_path && v4f_gguf_open(mtp_path, &mtp, &err) != V4F_OK) {
        printf("INVALID\n  %s\n", err.msg);
        return 1;
    }
    v4f_model *m = NULL;
    /* the model takes ownership of g on success and failure; inspect keeps
     * its own handle, so reopen through the path */
    v4f_gguf *g2 = NULL;
    if (v4f_gguf_open(v4f_gguf_path(g), &g2, &err) != V4F_OK) {
        printf("INVALID\n  %s\n", err.msg);
        v4f_gguf_close(mtp);
        return 1;
    }
    if (v4f_model_open_gguf(g2, mtp, &m, &rep, &err) != V4F_OK) {
        printf("INVALID DeepSeek V4 Flash model\n  %s\n", err.msg);
        if (rep.n_issues > 1) print_issues(&rep);
        return 1;
    }
    v4f_err why = {0};
    const char *variant = v4f_model_published_variant(m, &why);
    const v4f_config *c = &m->cfg;
    printf("valid DeepSeek V4 Flash model%s\n", m->has_mtp ? " (with MTP block)" : "");
    printf("  layers %u, d %u, vocab %u, heads %u x %u (rope %u), experts %u (top-%u, ff %u)\n",
           c->n_layer, c->n_embd, c->n_vocab, c->n_head, c->head_dim, c->n_rot, c->n_expert,
           c->n_expert_used, c->n_ff_exp);
    printf("  weights bound: %" PRIu64 " bytes (%.2f GiB)\n", m->weight_bytes,
           (double)m->weight_bytes / (1024.0 * 1024 * 1024));
    if (variant) printf("  published layout: yes (%s)\n", variant);
    else printf("  published layout: no (%s)\n", why.msg);
    v4f_model_close(m);
    return 0;
}

static void usage(FILE *f) {
    fprintf(f, "usage: v4flash inspect MODEL.gguf [--mtp MTP.gguf] [--all] [--no-tensors]\n"
               "  Print metadata, the tensor table, bytes per type and the layout verdict.\n"
               "  --mtp FILE     also bind and validate a separate MTP file\n"
               "  --all          print every array element (default: the first %d)\n"
               "  --no-tensors   skip the per-tensor table\n",
            ARR_PREVIEW);
}

int cmd_inspect(int argc, char **argv) {
    const char *path = NULL, *mtp_path = NULL;
    bool all = false, list = true;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--all")) all = true;
        else if (!strcmp(argv[i], "--no-tensors")) list = false;
        else if (!strcmp(argv[i], "--mtp") && i + 1 < argc) mtp_path = argv[++i];
        else if (argv[i][0] == '-' || path) {
            fprintf(stderr, "inspect: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        } else path = argv[i];
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    v4f_gguf *g = NULL;
    v4f_err err = {0};
    if (v4f_gguf_open(path, &g, &err) != V4F_OK) {
        fprintf(stderr, "v4flash: %s\n", err.msg);
        printf("layout verdict: MALFORMED\n  %s\n", err.msg);
        return 1;
    }
    print_metadata(g, all);
    print_tensors(g, list);
    int rc;
    v4f_str arch = {0};
    v4f_err e2 = {0};
    if (v4f_gguf_get_str(g, "general.architecture", &arch, &e2) == V4F_OK &&
        !v4f_str_eq(arch, "deepseek4")) {
        printf("\nlayout verdict: not a DeepSeek V4 Flash model (general.architecture = \"%.*s\")\n",
               (int)arch.len, arch.ptr);
        rc = 1;
    } else if (v4f_gguf_n_tensors(g) == 0 && v4f_gguf_kv_find(g, "tokenizer.ggml.tokens")) {
        printf("\nlayout verdict: vocab-only GGUF (tokenizer, no weights): usable by tokenize, "
               "detokenize and render, not a model\n");
        rc = 0;
    } else {
        rc = verdict(g, mtp_path);
    }
    v4f_gguf_close(g);
    return rc;
}
