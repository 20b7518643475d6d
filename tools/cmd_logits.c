/*
 * cmd_logits.c - `v4flash logits -m MODEL.gguf --tokens-file IDS.txt
 *   --prefill N --out OUT.f32 [--precision ref] [--threads T] [--ctx C]
 *   [--mtp MTP.gguf]`
 *
 * Evaluates the token ids of IDS.txt (whitespace-separated): the first N in
 * ONE prefill call, the rest one at a time by decode, and writes float32
 * little-endian logits for every position, row-major [n_tokens][vocab], to
 * OUT. With --mtp the MTP block also runs (fixture convention: main final HC
 * state at position i + token i+1) and OUT.mtp receives [n_tokens-1][vocab].
 * Timing and KV sizes go to stderr.
 *
 * Exit codes: 0 ok, 1 runtime failure (bad model, I/O), 2 usage error.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "backend_opts.h"
#include "cli.h"
#include "cli_model.h"
#include "core/core.h"
#include "model/forward.h"
#include "model/kv.h"
#include "model/model.h"

static int32_t *read_tokens(const char *path, uint32_t *n_out, char *why, size_t why_len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(why, why_len, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1024, n = 0;
    int32_t *t = v4f_xmalloc(cap * sizeof *t);
    char buf[64];
    for (;;) {
        if (fscanf(f, "%63s", buf) != 1) break;
        int64_t v;
        if (!v4f_parse_i64(buf, &v) || v < 0 || v > INT32_MAX) {
            snprintf(why, why_len, "%s: bad token id '%s'", path, buf);
            free(t);
            fclose(f);
            return NULL;
        }
        if (n == cap) t = v4f_xrealloc(t, (cap *= 2) * sizeof *t);
        t[n++] = (int32_t)v;
    }
    fclose(f);
    *n_out = (uint32_t)n;
    return t;
}

static int write_f32(const char *path, const float *x, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(x, sizeof(float), n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "v4flash logits: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    return 0;
}

int cmd_logits(int argc, char **argv) {
    const char *model = NULL, *tokens_file = NULL, *out = NULL, *precision = "default", *mtp = NULL;
    const char *synthetic = NULL;
    int64_t prefill = -1, threads = 0, ctx = 0;
    v4f_cli_backend be = V4F_CLI_BACKEND_DEFAULT;
    const v4f_opt opts[] = {
        {"model", 'm', V4F_ARG_STR, &model, 0, 0, "FILE", "model GGUF (required)", NULL},
        {"tokens-file", 0, V4F_ARG_STR, &tokens_file, 0, 0, "FILE", "whitespace-separated token ids (required)", NULL},
        {"prefill", 0, V4F_ARG_INT, &prefill, 1, 1e9, "N", "tokens evaluated in the first (prefill) call; the rest are decoded one by one (default: all)", NULL},
        {"out", 'o', V4F_ARG_STR, &out, 0, 0, "FILE", "output: float32 logits [n_tokens][vocab] (required)", NULL},
        {"precision", 0, V4F_ARG_STR, &precision, 0, 0, "MODE", "default (compact exact KV) or ref (float32 KV)", NULL},
        {"threads", 't', V4F_ARG_INT, &threads, 0, 4096, "T", "worker threads (default: all cores)", NULL},
        {"ctx", 'c', V4F_ARG_INT, &ctx, 0, 1 << 30, "C", "context size (default: number of tokens)", NULL},
        {"mtp", 0, V4F_ARG_STR, &mtp, 0, 0, "FILE", "MTP GGUF: also write draft logits to OUT.mtp", NULL},
        {"synthetic", 0, V4F_ARG_STR, &synthetic, 0, 0, "PRESET[:L]", "instead of -m: random-weight model built in memory (seed 1)", NULL},
        V4F_CLI_BACKEND_OPTS(be),
        {NULL, 0, 0, NULL, 0, 0, NULL, NULL, NULL},
    };
    const v4f_args_spec spec = {
        "v4flash logits", "-m MODEL --tokens-file IDS.txt --prefill N --out OUT.f32",
        "Evaluate token ids and write the logits of every position.", opts, 0, 0, NULL};
    int rc = v4f_args_parse(&spec, argc, argv, NULL, NULL);
    if (rc == V4F_ARGS_HELP) return 0;
    if (rc != V4F_ARGS_OK) return 2;
    if ((!model && !synthetic) || !tokens_file || !out)
        return v4f_args_fail(&spec, "-m (or --synthetic), --tokens-file and --out are required");
    if (synthetic && (model || mtp)) return v4f_args_fail(&spec, "--synthetic excludes -m and --mtp");
    v4f_precision prec;
    if (!strcmp(precision, "ref")) prec = V4F_PRECISION_REF;
    else if (!strcmp(precision, "default")) prec = V4F_PRECISION_DEFAULT;
    else return v4f_args_fail(&spec, "--precision must be 'default' or 'ref'");
    v4f_session_opts so = {0};
    if (v4f_cli_backend_apply(&be, &spec, &so)) return 2;

    char why[512];
    uint32_t n = 0;
    int32_t *tok = read_tokens(tokens_file, &n, why, sizeof why);
    if (!tok) {
        fprintf(stderr, "v4flash logits: %s\n", why);
        return 1;
    }
    if (n == 0) {
        fprintf(stderr, "v4flash logits: %s holds no token ids\n", tokens_file);
        free(tok);
        return 1;
    }
    if (prefill < 0) prefill = n;
    if ((uint64_t)prefill > n) {
        free(tok);
        return v4f_args_fail(&spec, "--prefill %" PRId64 " exceeds the %u tokens", prefill, n);
    }
    v4f_err err = {0};
    v4f_model *m = NULL;
    v4f_cli_model cm = {0}; /* owns m for --synthetic */
    if (synthetic) {
        int orc = v4f_cli_model_open("v4flash logits", NULL, synthetic, NULL, 1, (int)threads, &cm);
        if (orc) {
            free(tok);
            return orc;
        }
        m = cm.m;
    } else if (v4f_model_open(model, mtp, &m, NULL, &err) != V4F_OK) {
        fprintf(stderr, "v4flash logits: %s\n", err.msg);
        free(tok);
        return 1;
    }
    so.n_ctx = ctx > 0 ? (uint32_t)ctx : n;
    so.n_threads = (int)threads;
    so.precision = prec;
    so.enable_mtp = mtp != NULL;
    if (so.n_ctx < n) so.n_ctx = n;
    v4f_session *s = NULL;
    int ret = 1;
    size_t V = m->cfg.n_vocab, HD = (size_t)m->cfg.n_hc * m->cfg.n_embd;
    float *logits = NULL, *hc = NULL, *mlog = NULL;
    if (v4f_session_new(m, &so, &s, &err) != V4F_OK) {
        fprintf(stderr, "v4flash logits: %s\n", err.msg);
        goto done;
    }
    v4f_cli_backend_report(s);
    v4f_config pub;
    v4f_kv_published_config(&pub);
    fprintf(stderr, "kv: %s storage, %.1f bytes/token (growing part), %" PRIu64
                    " bytes allocated for ctx %u; published config at 1048576 tokens: %.3f GB\n",
            prec == V4F_PRECISION_REF ? "f32" : "compact", v4f_session_kv_bytes_per_token(s),
            v4f_session_kv_bytes(s), so.n_ctx,
            (double)v4f_kv_bytes_for_ctx(&pub, 1048576, prec != V4F_PRECISION_REF) / 1e9);
    logits = malloc(V * n * sizeof(float));
    if (mtp) hc = malloc(HD * n * sizeof(float));
    if (!logits || (mtp && !hc)) {
        fprintf(stderr, "v4flash logits: out of memory\n");
        goto done;
    }
    double t0 = v4f_time_s();
    if (v4f_session_eval(s, tok, (uint32_t)prefill, logits, 0, hc, &err) != V4F_OK) goto fail;
    double t1 = v4f_time_s();
    for (uint32_t i = (uint32_t)prefill; i < n; i++)
        if (v4f_session_eval(s, tok + i, 1, logits + V * i, 0, hc ? hc + HD * i : NULL, &err))
            goto fail;
    double t2 = v4f_time_s();
    fprintf(stderr, "prefill: %" PRId64 " tokens in %.3f s (%.1f tok/s)", prefill, t1 - t0,
            (double)prefill / (t1 - t0));
    if (n > prefill)
        fprintf(stderr, "; decode: %" PRId64 " tokens in %.3f s (%.1f tok/s)", n - prefill, t2 - t1,
                (double)(n - prefill) / (t2 - t1));
    fprintf(stderr, "\n");
    if (write_f32(out, logits, V * n)) goto done;
    if (mtp && n > 1) {
        mlog = malloc(V * (n - 1) * sizeof(float));
        if (!mlog) goto done;
        if (v4f_session_mtp_eval(s, hc, tok + 1, n - 1, mlog, &err) != V4F_OK) goto fail;
        char mpath[4096];
        snprintf(mpath, sizeof mpath, "%s.mtp", out);
        if (write_f32(mpath, mlog, V * (n - 1))) goto done;
    }
    ret = 0;
    goto done;
fail:
    fprintf(stderr, "v4flash logits: %s\n", err.msg);
done:
    free(mlog);
    free(hc);
    free(logits);
    v4f_session_free(s);
    if (synthetic) v4f_cli_model_close(&cm);
    else v4f_model_close(m);
    free(tok);
    return ret;
}
