/*
 * cmd_bench.c - `v4flash bench`: throughput at context frontiers (like
 * ds4-bench) and the machine's streaming-read roofline.
 *
 *   v4flash bench --membw [--membw-bytes N] [--threads T]
 *   v4flash bench (-m MODEL | --synthetic PRESET[:LAYERS]) [--ctx-start N]
 *       [--ctx-max N] [--step-incr N | --step-mul F] [--gen N] [--csv FILE]
 *
 * Method: the model loads once; prefill is incremental, so each row times
 * only the tokens added since the previous frontier (one batched prefill
 * call). At each frontier N greedy tokens are decoded with EOS suppressed;
 * the session is snapshotted in memory (src/model/snapshot.h) before the
 * probe and restored after it, so the probe tokens do not stay in the
 * context and every frontier is measured at exactly its position. The
 * snapshot size and save / restore times are reported per frontier, and the
 * last line compares restoring the last frontier's snapshot with the total
 * prefill time that built it. With --kv-dir DIR the last frontier's snapshot
 * is also saved to and restored from that disk KV store (src/engine/kvcache.h:
 * write + fsync + rename, then lookup + checksum-verified load), reporting
 * MB/s and the restore time against the prefill time.
 * Weight bytes per decoded token = every non-expert tensor + n_expert_used
 * experts per layer + one embedding row + one tid2eid row per hash layer;
 * achieved GB/s = that x decode t/s, shown against the streaming-read
 * bandwidth measured in the same run (--no-membw skips it).
 *
 * Prompt tokens: --prompt-file text tokenized with the model's tokenizer
 * (repeated to fill the context), else seeded random non-special ids.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli_model.h"
#include "cli.h"
#include "core/membw.h"
#include "core/threadpool.h"
#include "gguf/gguf.h"
#include "model/forward.h"
#include "model/model.h"
#include "model/snapshot.h"
#include "engine/kvcache.h"
#include "tokenizer/tokenizer.h"

static void cpu_name(char *out, size_t n) {
    snprintf(out, n, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "model name", 10)) {
            char *c = strchr(line, ':');
            if (c) {
                c++;
                while (*c == ' ') c++;
                c[strcspn(c, "\n")] = 0;
                snprintf(out, n, "%s", c);
            }
            break;
        }
    }
    fclose(f);
}

/* Bytes of weights one decode step reads (see the banner). */
static uint64_t decode_weight_bytes(const v4f_model *m) {
    const v4f_gguf *g = m->gguf;
    uint64_t total = 0;
    for (uint64_t i = 0; i < v4f_gguf_n_tensors(g); i++) {
        const v4f_gguf_tensor *t = v4f_gguf_tensor_at(g, i);
        char name[128];
        size_t n = t->name.len < sizeof name - 1 ? t->name.len : sizeof name - 1;
        memcpy(name, t->name.ptr, n);
        name[n] = 0;
        if (strstr(name, "_exps.")) total += t->n_bytes / t->ne[2] * m->cfg.n_expert_used;
        else if (!strcmp(name, "token_embd.weight")) total += t->n_bytes / t->ne[1];
        else if (strstr(name, "tid2eid")) total += t->n_bytes / t->ne[1];
        else total += t->n_bytes;
    }
    return total;
}

static int32_t argmax_no_eos(const float *l, uint32_t n, int32_t eos) {
    int32_t best = -1;
    for (uint32_t i = 0; i < n; i++) {
        if ((int32_t)i == eos || l[i] != l[i]) continue;
        if (best < 0 || l[i] > l[best]) best = (int32_t)i;
    }
    return best < 0 ? 0 : best;
}

/* Prompt ids for positions [0, n): tokenized text repeated, or random. */
static int32_t *make_prompt(const v4f_cli_model *bm, const char *prompt_file, uint32_t n,
                            uint64_t seed) {
    int32_t *ids = v4f_xmalloc((size_t)n * sizeof *ids);
    const uint32_t nv = bm->m->cfg.n_vocab;
    if (prompt_file) {
        v4f_err err = {0};
        v4f_tok *tok = NULL;
        FILE *f = fopen(prompt_file, "rb");
        if (!f) {
            fprintf(stderr, "v4flash bench: cannot open %s: %s\n", prompt_file, strerror(errno));
            free(ids);
            return NULL;
        }
        fseek(f, 0, SEEK_END);
        long len = ftell(f);
        fseek(f, 0, SEEK_SET);
        char *text = v4f_xmalloc((size_t)len + 1);
        size_t got = fread(text, 1, (size_t)len, f);
        fclose(f);
        v4f_tok_ids v = {0};
        if (v4f_tok_from_gguf(bm->m->gguf, &tok, &err) ||
            v4f_tok_encode(tok, text, got, 0, &v, &err) || v.n == 0) {
            fprintf(stderr, "v4flash bench: %s: %s\n", prompt_file, err.msg[0] ? err.msg : "empty");
            free(text);
            free(ids);
            v4f_tok_ids_free(&v);
            v4f_tok_free(tok);
            return NULL;
        }
        ids[0] = v4f_tok_bos(tok) >= 0 ? v4f_tok_bos(tok) : 0;
        for (uint32_t i = 1; i < n; i++) ids[i] = v.ids[(i - 1) % v.n];
        free(text);
        v4f_tok_ids_free(&v);
        v4f_tok_free(tok);
        return ids;
    }
    uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 12345;
    ids[0] = 0;
    for (uint32_t i = 1; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        ids[i] = (int32_t)(2 + x % (nv - 2)); /* never BOS (0) / EOS (1) */
    }
    return ids;
}

static int run_membw(int64_t bytes, int threads, v4f_membw_result *r) {
    v4f_err err = {0};
    if (v4f_membw_measure((uint64_t)bytes, threads, 5, r, &err)) {
        fprintf(stderr, "v4flash bench: %s\n", err.msg);
        return 1;
    }
    return 0;
}

int cmd_bench(int argc, char **argv) {
    const char *model = NULL, *synthetic = NULL, *csv = NULL, *prompt_file = NULL;
    const char *precision = "default";
    int64_t ctx_start = 2048, ctx_max = 32768, step_incr = 0, gen = 128, membw_bytes = 1 << 30;
    double step_mul = 0;
    int threads = 0;
    uint64_t seed = 1;
    bool membw_only = false, no_membw = false;
    const char *kv_dir = NULL;
    const v4f_opt opts[] = {
        {"model", 'm', V4F_ARG_STR, &model, 0, 0, "FILE", "model GGUF (default ./ds4flash.gguf unless --synthetic)", NULL},
        {"synthetic", 0, V4F_ARG_STR, &synthetic, 0, 0, "PRESET[:L]", "random weights built in memory: tiny | small | full-q2 | full-q4, optional layer count", NULL},
        {"ctx-start", 0, V4F_ARG_INT, &ctx_start, 1, 1048576, "N", "first frontier (2048)", NULL},
        {"ctx-max", 0, V4F_ARG_INT, &ctx_max, 1, 1048576, "N", "last frontier (32768)", NULL},
        {"step-incr", 0, V4F_ARG_INT, &step_incr, 1, 1048576, "N", "frontier step (default 2048)", NULL},
        {"step-mul", 0, V4F_ARG_DOUBLE, &step_mul, 1.01, 64, "F", "geometric frontier step instead of --step-incr", NULL},
        {"gen", 'n', V4F_ARG_INT, &gen, 1, 65536, "N", "greedy tokens decoded per frontier (128)", NULL},
        {"csv", 0, V4F_ARG_STR, &csv, 0, 0, "FILE", "also write the rows as CSV (- = stdout)", NULL},
        {"prompt-file", 0, V4F_ARG_STR, &prompt_file, 0, 0, "FILE", "text to prefill (tokenized, repeated); default random ids", NULL},
        {"threads", 't', V4F_ARG_INT32, &threads, 0, 4096, "N", "threads (default: all CPUs)", NULL},
        {"precision", 0, V4F_ARG_STR, &precision, 0, 0, "MODE", "default | ref", NULL},
        {"seed", 0, V4F_ARG_U64, &seed, 0, 0, "S", "synthetic weights / random prompt seed (1)", NULL},
        {"membw", 0, V4F_ARG_FLAG, &membw_only, 0, 0, NULL, "only measure the streaming-read bandwidth", NULL},
        {"membw-bytes", 0, V4F_ARG_INT, &membw_bytes, 1 << 20, 1LL << 40, "N", "bandwidth buffer size (1G)", NULL},
        {"no-membw", 0, V4F_ARG_FLAG, &no_membw, 0, 0, NULL, "skip the bandwidth measurement of a sweep", NULL},
        {"kv-dir", 0, V4F_ARG_STR, &kv_dir, 0, 0, "DIR", "also time saving/restoring the last snapshot to/from a disk KV store in DIR", NULL},
        {0},
    };
    const v4f_args_spec spec = {
        .cmd = "v4flash bench",
        .synopsis = "(-m MODEL | --synthetic PRESET[:L]) [--ctx-start N --ctx-max N --step-incr N|--step-mul F --gen N --csv FILE]\n"
                    "       v4flash bench --membw",
        .about = "Prefill and decode throughput at context frontiers (incremental prefill per\n"
                 "interval, N greedy tokens per frontier), weight bytes read per decoded token,\n"
                 "achieved GB/s and its ratio to this machine's streaming-read bandwidth.",
        .opts = opts,
    };
    int rc = v4f_args_parse(&spec, argc, argv, NULL, NULL);
    if (rc == V4F_ARGS_HELP) return 0;
    if (rc) return rc;
    if (step_incr && step_mul) return v4f_args_fail(&spec, "--step-incr and --step-mul are exclusive");
    if (model && synthetic) return v4f_args_fail(&spec, "-m and --synthetic are exclusive");
    if (ctx_start > ctx_max) return v4f_args_fail(&spec, "--ctx-start %lld > --ctx-max %lld",
                                                  (long long)ctx_start, (long long)ctx_max);
    if (strcmp(precision, "default") && strcmp(precision, "ref"))
        return v4f_args_fail(&spec, "--precision must be default or ref");
    if (!step_incr && !step_mul) step_incr = 2048;
    char cpu[256];
    cpu_name(cpu, sizeof cpu);
    int n_threads = threads > 0 ? threads : v4f_cpu_count();

    v4f_membw_result bw = {0};
    if (membw_only) {
        if (run_membw(membw_bytes, threads, &bw)) return 1;
        printf("machine: %s, %d threads\n", cpu, bw.n_threads);
        printf("membw: %.2f GB/s streaming read (best of %d, median %.2f GB/s, %.2f GiB buffer)\n",
               bw.best_gbs, bw.runs, bw.median_gbs, (double)bw.bytes / (1u << 30));
        return 0;
    }
    if (!model && !synthetic) model = "ds4flash.gguf";
    if (!no_membw && run_membw(membw_bytes < (512 << 20) ? membw_bytes : (512 << 20), threads, &bw))
        return 1;

    v4f_cli_model bm;
    rc = v4f_cli_model_open("v4flash bench", model, synthetic, seed, threads, &bm);
    if (rc) return rc;
    const double load_s = bm.load_s;
    const v4f_config *c = &bm.m->cfg;
    /* frontiers */
    int64_t fr[512];
    int nf = 0;
    for (int64_t x = ctx_start; x <= ctx_max && nf < 512;) {
        fr[nf++] = x;
        int64_t nx = step_mul ? (int64_t)((double)x * step_mul) : x + step_incr;
        if (nx <= x) nx = x + 1;
        x = nx;
    }
    uint64_t n_ctx = (uint64_t)ctx_max + (uint64_t)gen + 1; /* probes are rolled back */
    v4f_err err = {0};
    v4f_session *s = NULL;
    v4f_session_opts so = {.n_ctx = (uint32_t)n_ctx, .n_threads = threads,
                           .precision = strcmp(precision, "ref") ? V4F_PRECISION_DEFAULT : V4F_PRECISION_REF};
    if (n_ctx > 0xffffffffu || v4f_session_new(bm.m, &so, &s, &err)) {
        fprintf(stderr, "v4flash bench: session: %s\n", err.msg[0] ? err.msg : "context too large");
        v4f_cli_model_close(&bm);
        return 1;
    }
    int32_t *prompt = make_prompt(&bm, prompt_file, (uint32_t)n_ctx, seed);
    float *logits = v4f_xmalloc((size_t)c->n_vocab * sizeof *logits);
    if (!prompt) {
        v4f_session_free(s);
        v4f_cli_model_close(&bm);
        free(logits);
        return 1;
    }
    const uint64_t wbytes = decode_weight_bytes(bm.m);
    FILE *cf = NULL;
    v4f_snapshot_mem snap = {0};
    if (csv) {
        cf = strcmp(csv, "-") ? fopen(csv, "w") : stdout;
        if (!cf) {
            fprintf(stderr, "v4flash bench: cannot write %s: %s\n", csv, strerror(errno));
            rc = 1;
            goto out;
        }
        fprintf(cf, "ctx_tokens,prefill_tokens,prefill_tps,gen_tokens,gen_tps,gen_tps_ss,"
                    "first_token_sec,kvcache_bytes,weight_bytes_per_token,gen_gbs,membw_gbs,"
                    "roofline_ratio,snapshot_bytes,snapshot_save_s,snapshot_restore_s\n");
    }
    printf("machine: %s, %d threads, backend cpu\n", cpu, n_threads);
    if (bw.best_gbs > 0)
        printf("membw: %.2f GB/s streaming read (best of %d)\n", bw.best_gbs, bw.runs);
    printf("model: %s, load %.2f s, precision %s\n", bm.desc, load_s, precision);
    printf("weights read per decoded token: %.3f GB (non-expert + %u of %u experts per layer)\n",
           (double)wbytes / 1e9, c->n_expert_used, c->n_expert);
    printf("\n%10s %9s %11s %6s %9s %9s %9s %12s %8s %7s %9s %8s %8s\n", "ctx", "prefill",
           "prefill t/s", "gen", "gen t/s", "ss t/s", "1st tok s", "kv bytes", "GB/s", "roof",
           "snap MiB", "save ms", "rest ms");
    double prefill_total = 0, last_restore = 0;
    uint64_t last_snap = 0;
    const int32_t eos = 1;
    for (int f = 0; f < nf; f++) {
        uint32_t pos = v4f_session_pos(s);
        uint32_t n_new = fr[f] > pos ? (uint32_t)(fr[f] - pos) : 0;
        double tp = 0;
        if (n_new) {
            double t0 = v4f_time_s();
            if (v4f_session_eval(s, prompt + pos, n_new, logits, V4F_EVAL_LOGITS_LAST, NULL, &err)) {
                fprintf(stderr, "v4flash bench: prefill: %s\n", err.msg);
                rc = 1;
                goto out;
            }
            tp = v4f_time_s() - t0;
            prefill_total += tp;
        }
        uint32_t at = v4f_session_pos(s);
        double ts0 = v4f_time_s();
        if (v4f_snapshot_mem_save(s, logits, c->n_vocab, &snap, &err)) {
            fprintf(stderr, "v4flash bench: snapshot: %s\n", err.msg);
            rc = 1;
            goto out;
        }
        double t_save = v4f_time_s() - ts0;
        int32_t tok = argmax_no_eos(logits, c->n_vocab, eos);
        double t0 = v4f_time_s(), t_first = 0;
        for (int64_t i = 0; i < gen; i++) {
            if (v4f_session_decode(s, tok, logits, &err)) {
                fprintf(stderr, "v4flash bench: decode: %s\n", err.msg);
                rc = 1;
                goto out;
            }
            if (i == 0) t_first = v4f_time_s() - t0;
            tok = argmax_no_eos(logits, c->n_vocab, eos);
        }
        double td = v4f_time_s() - t0;
        ts0 = v4f_time_s();
        if (v4f_snapshot_mem_load(s, &snap, logits, c->n_vocab, &err)) {
            fprintf(stderr, "v4flash bench: snapshot restore: %s\n", err.msg);
            rc = 1;
            goto out;
        }
        double t_rest = v4f_time_s() - ts0;
        last_restore = t_rest;
        last_snap = snap.len;
        double ptps = tp > 0 ? n_new / tp : 0, gtps = gen / td;
        double ss = gen > 1 ? (double)(gen - 1) / (td - t_first) : gtps;
        double gbs = (double)wbytes * gtps / 1e9;
        double roof = bw.best_gbs > 0 ? gbs / bw.best_gbs : 0;
        uint64_t kvb = v4f_session_kv_bytes(s);
        printf("%10u %9u %11.1f %6lld %9.2f %9.2f %9.4f %12llu %8.2f %6.1f%% %9.2f %8.2f %8.2f\n", at,
               n_new, ptps, (long long)gen, gtps, ss, t_first, (unsigned long long)kvb, gbs,
               100 * roof, (double)snap.len / 1048576.0, 1e3 * t_save, 1e3 * t_rest);
        fflush(stdout);
        if (cf) {
            fprintf(cf, "%u,%u,%.3f,%lld,%.3f,%.3f,%.6f,%llu,%llu,%.3f,%.3f,%.4f,%zu,%.6f,%.6f\n", at,
                    n_new, ptps, (long long)gen, gtps, ss, t_first, (unsigned long long)kvb,
                    (unsigned long long)wbytes, gbs, bw.best_gbs, roof, snap.len, t_save, t_rest);
            fflush(cf);
        }
    }
    if (nf > 0 && prefill_total > 0)
        printf("\nrestore of the %u-token snapshot (%.2f MiB, in memory): %.3f ms = %.2g%% of the "
               "%.3f s of prefill that built it\n", v4f_session_pos(s),
               (double)last_snap / 1048576.0, 1e3 * last_restore,
               100.0 * last_restore / prefill_total, prefill_total);
    if (kv_dir && nf > 0) {
        v4f_kvstore *ks = NULL;
        v4f_kvstore_opts ko;
        v4f_kvstore_opts_default(&ko);
        ko.create = true;
        v4f_kv_ident kid;
        v4f_kvcache_ident(bm.m, (uint32_t)n_ctx, so.precision != V4F_PRECISION_REF, false, &kid);
        uint32_t at = v4f_session_pos(s);
        double tsave = 0;
        uint64_t bytes = 0;
        char nm[V4F_KVSTORE_NAME_MAX];
        v4f_kvcache_hit hit;
        if (v4f_kvstore_open_opts(kv_dir, &ko, &ks, &err) ||
            v4f_kvcache_save(ks, &kid, s, prompt, at, logits, c->n_vocab, NULL, 0,
                             V4F_KV_REASON_MANUAL, NULL, nm, &tsave, &bytes, &err) ||
            v4f_kvcache_restore_prefix(ks, &kid, false, 1, s, prompt, at, logits, c->n_vocab, &hit,
                                       &err)) {
            fprintf(stderr, "v4flash bench: --kv-dir: %s\n", err.msg);
            rc = 1;
        } else if (hit.n_tokens != at) {
            fprintf(stderr, "v4flash bench: --kv-dir: the snapshot did not restore\n");
            rc = 1;
        } else {
            printf("disk snapshot of %u tokens (%.2f MiB) in %s: save %.1f ms (%.0f MB/s incl. "
                   "fsync), restore %.1f ms (%.0f MB/s incl. lookup + checksum) = %.2g%% of the "
                   "prefill\n", at, (double)bytes / 1048576.0, kv_dir, 1e3 * tsave,
                   (double)bytes / 1e6 / tsave, 1e3 * hit.seconds, (double)hit.bytes / 1e6 / hit.seconds,
                   100.0 * hit.seconds / prefill_total);
            v4f_err e2 = {0};
            v4f_kvstore_remove(ks, nm, &e2);
        }
        v4f_kvstore_close(ks);
    }
out:
    v4f_snapshot_mem_free(&snap);
    if (cf && cf != stdout) fclose(cf);
    free(prompt);
    free(logits);
    v4f_session_free(s);
    v4f_cli_model_close(&bm);
    return rc;
}
