/*
 * cmd_bench.c - `v4flash bench`: throughput at context frontiers (like
 * ds4-bench) and the machine's streaming-read roofline.
 *
 *   v4flash bench --membw [--membw-bytes N] [--threads T]
 *   v4flash bench (-m MODEL | --synthetic PRESET[:LAYERS]) [--ctx-start N]
 *       [--ctx-max N] [--step-incr N | --step-mul F] [--gen N] [--csv FILE]
 *       [--temp T] [--mtp FILE|synthetic [--draft-accept P,..]]
 *
 * Method: the model loads once; prefill is incremental, so each row times
 * only the tokens added since the previous frontier (one batched prefill
 * call). At each frontier N greedy tokens are decoded with EOS suppressed
 * (v4f_session_decode_greedy: on a GPU the device picks each token and the
 * host stays one step behind, as `run` decodes greedily; with --temp T the
 * tokens are drawn on the host at temperature T, min-p 0.05, seeded with
 * --seed, as `run --temp T` samples: v4f_session_decode_sampled);
 * the session is snapshotted in memory (src/model/snapshot.h) before the
 * probe and restored after it (a GPU session rewinds instead where its
 * position rings still hold the frontier: the restore time is then the
 * rewind's), so the probe tokens do not stay in the context and every
 * frontier is measured at exactly its position. The
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
 *
 * --mtp FILE|synthetic: a GPU session drafts with the MTP block
 * (speculative decoding, forward.h; sampled with --temp); each frontier reports how many
 * drafts were kept. --draft-accept P,.. adds at each frontier decoding
 * without drafts, with always-wrong drafts (recording the picks) and with
 * oracle drafts right with probability P (the draft gate off: the cost of
 * drafting at known acceptances, since random weights draft nothing right),
 * then with the gate on (spec_gate.h) for the MTP block's drafts and for
 * wrong ones: what a session pays where drafts miss.
 *
 * --fake-ctx N (synthetic-KV decode timing, for contexts too long to
 * prefill here): the KV cache is filled with seeded random rows as if N
 * tokens had been evaluated (v4f_kv_fill_synthetic: the row counts and
 * access pattern are real, the values are not), the position set to N, and
 * --gen tokens are decoded and timed one by one. With --kv-page-dir a RAM
 * session and one whose ratio-4 compressed rows live in a file-backed
 * mapping are timed step by step in turn; --kv-evict adds a third that
 * drops those rows from RAM before every step (the worst case: every
 * selected row is read back from the file). Reports per-token time, KV
 * bytes (RAM / file), the file-backed bytes resident, and the per-step
 * working set.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "backend_opts.h"
#include "cli_model.h"
#include "cli.h"
#include "backend/cpu/ops.h"
#include "core/membw.h"
#include "core/threadpool.h"
#include "gguf/gguf.h"
#include "model/forward.h"
#include "model/forward_cuda.h"
#include "model/kv.h"
#include "model/model.h"
#include "model/snapshot.h"
#include "sampler/sampler.h"
#include "engine/kvcache.h"
#include "tokenizer/tokenizer.h"
#include "core/ggml_type.h"
#include "quant/quant.h"

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

/* --draft-accept P,..: oracle drafts for speculative decoding (--mtp).
 * At each frontier decoding is timed without drafts, then the picks are
 * recorded with a draft that is always wrong (the suppressed EOS: every step
 * a 2-token eval whose draft is dropped, the picks taken from the same
 * kernels as in the drafting runs; random weights leave many near-ties,
 * where the one-token path may pick otherwise), then each P drafts the
 * recorded pick with probability P (else a wrong token): the cost of
 * drafting at known acceptances on random weights. */
typedef struct oracle {
    int32_t *ref; /* picks for positions at + 1 .. */
    uint32_t at, n, cap, vocab;
    int32_t avoid; /* never drafted (the suppressed EOS) */
    double p;      /* < 0: the MTP block's drafts; > 1: always wrong */
    uint64_t rng;
} oracle;

/* Decode timing through v4f_session_decode_greedy (pipelined on a GPU):
 * the wall time at which each pick reaches the host; rec (optional)
 * records the picks for the oracle. */
typedef struct pick_clock {
    double *at;
    int64_t n, cap;
    oracle *rec;
} pick_clock;

static bool pick_time(void *ud, int32_t token) {
    pick_clock *pc = ud;
    if (pc->n < pc->cap) pc->at[pc->n++] = v4f_time_s();
    if (pc->rec && pc->rec->n < pc->rec->cap) pc->rec->ref[pc->rec->n++] = token;
    return true;
}

static int32_t oracle_draft(void *ud, uint32_t pos) {
    oracle *o = ud;
    if (o->p < 0) return -1; /* the MTP block's */
    if (o->p > 1) return o->avoid;
    if (pos <= o->at || pos - o->at - 1 >= o->n) return -1;
    const int32_t r = o->ref[pos - o->at - 1];
    o->rng = o->rng * 6364136223846793005ULL + 1442695040888963407ULL;
    if ((double)(o->rng >> 11) * 0x1.0p-53 < o->p) return r;
    int32_t w = (int32_t)(((uint32_t)r + 1) % o->vocab);
    if (w == o->avoid) w = (int32_t)(((uint32_t)w + 1) % o->vocab);
    return w;
}

/* A comma-separated list of at most max numbers in [lo, hi] (integers
 * when integral) into out: the count, or -1 when malformed. */
static int parse_list(const char *s, double lo, double hi, bool integral, double *out, int max) {
    int n = 0;
    for (const char *p = s; *p;) {
        char *end;
        const double v = integral ? (double)strtoll(p, &end, 10) : strtod(p, &end);
        if (end == p || v < lo || v > hi || n == max || (*end && *end != ',')) return -1;
        out[n++] = v;
        p = *end ? end + 1 : end;
    }
    return n;
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

/* ---- --gemm: dense-projection GEMM vs the measured FMA peak ------------------- */

/* The prefill's dense Q8_0 projections at the published shapes (MODEL.md):
 * n_in -> n_out, `groups` independent matmuls of that shape in one call
 * (attn_output_a: 8 groups, each reading its slice of the attention output). */
typedef struct {
    const char *name;
    int64_t n_in, n_out, groups;
} gemm_shape;

static const gemm_shape GEMM_SHAPES[] = {
    {"attn_q_a 4096->1024", 4096, 1024, 1},   {"attn_kv 4096->512", 4096, 512, 1},
    {"attn_q_b 1024->32768", 1024, 32768, 1}, {"attn_out_a 8x 4096->1024", 4096, 1024, 8},
    {"attn_out_b 8192->4096", 8192, 4096, 1}, {"shared gate 4096->2048", 4096, 2048, 1},
    {"shared up 4096->2048", 4096, 2048, 1},  {"shared down 2048->4096", 2048, 4096, 1},
};
#define N_GEMM_SHAPES (sizeof GEMM_SHAPES / sizeof GEMM_SHAPES[0])
#define GEMM_X_STRIDE 32768 /* floats per activation row (the widest input: attention output) */
#define GEMM_Y_STRIDE 32768
#define GEMM_Q8_SCALE_F16 0x2000 /* 2^-7: products stay in a normal range */
#define GEMM_REPS 3

static uint64_t xorshift(uint64_t *st) {
    uint64_t x = *st;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *st = x;
}

#define POOL_PROBE_REGIONS 20000

#define POOL_PROBE_TASK_US 2.0

/* a task that keeps its thread busy for POOL_PROBE_TASK_US */
static void busy_task(void *ctx, int64_t task, int thread) {
    double end = v4f_time_s() + POOL_PROBE_TASK_US * 1e-6;
    while (v4f_time_s() < end) {
    }
}

static int run_gemm_bench(int threads, int64_t tokens_opt) {
    v4f_pool *pool = v4f_pool_new(threads);
    if (!pool) {
        fprintf(stderr, "v4flash bench: cannot start the thread pool\n");
        return 1;
    }
    char cpu[256];
    cpu_name(cpu, sizeof cpu);
    int lanes = 0;
    double peak = v4f_cpu_fma_peak_gflops(pool, 1.0, &lanes);
    printf("machine: %s, %d threads\n", cpu, v4f_pool_size(pool));
    printf("fma peak: %.1f GFLOP/s f32 (%d-lane FMA chains on every thread, best of ~1 s)\n", peak,
           lanes);
    /* cost of one parallel region (wake-up + claim + completion): T tasks of
     * POOL_PROBE_TASK_US each take that long if every thread joins at once */
    int T = v4f_pool_size(pool);
    double tp = v4f_time_s();
    for (int i = 0; i < POOL_PROBE_REGIONS; i++) v4f_pool_run(pool, T, busy_task, NULL);
    double region_us = (v4f_time_s() - tp) / POOL_PROBE_REGIONS * 1e6;
    printf("pool: %.2f us per parallel region of %d x %.0f us tasks (ideal %.0f us; %d regions)\n",
           region_us, T, POOL_PROBE_TASK_US, POOL_PROBE_TASK_US, POOL_PROBE_REGIONS);
    int64_t max_tok = tokens_opt > 0 ? tokens_opt : 2048;
    v4f_cpu_ctx ctx;
    v4f_err err = {0};
    if (v4f_cpu_ctx_init(&ctx, pool, 8192, &err)) {
        fprintf(stderr, "v4flash bench: %s\n", err.msg);
        v4f_pool_free(pool);
        return 1;
    }
    uint8_t *wdata[N_GEMM_SHAPES];
    v4f_cpu_mat wm[N_GEMM_SHAPES];
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < N_GEMM_SHAPES; i++) {
        const gemm_shape *g = &GEMM_SHAPES[i];
        uint64_t rb = (uint64_t)g->n_in / 32 * 34, rows = (uint64_t)(g->n_out * g->groups);
        wdata[i] = v4f_xmalloc(rb * rows);
        for (uint64_t r = 0; r < rows; r++)
            for (uint64_t b = 0; b < rb; b += 34) {
                uint8_t *blk = wdata[i] + r * rb + b;
                blk[0] = GEMM_Q8_SCALE_F16 & 0xff;
                blk[1] = GEMM_Q8_SCALE_F16 >> 8;
                for (int k = 0; k < 32; k++) blk[2 + k] = (uint8_t)xorshift(&seed);
            }
        wm[i] = (v4f_cpu_mat){.type = V4F_TYPE_Q8_0, .data = wdata[i], .n_in = g->n_in,
                              .n_out = g->n_out * g->groups, .row_bytes = rb};
    }
    float *X = v4f_aligned_alloc((size_t)max_tok * GEMM_X_STRIDE * sizeof(float));
    float *Y = v4f_aligned_alloc((size_t)max_tok * GEMM_Y_STRIDE * sizeof(float));
    for (int64_t i = 0; i < max_tok * GEMM_X_STRIDE; i++)
        X[i] = (float)((double)(xorshift(&seed) >> 11) * 0x1p-53 * 2.0 - 1.0);
    int64_t toks[2] = {512, 2048};
    int nt = 2;
    if (tokens_opt > 0) {
        toks[0] = tokens_opt;
        nt = 1;
    }
    printf("\n%-28s %7s %10s %10s %8s\n", "projection (Q8_0)", "tokens", "ms", "GFLOP/s", "% peak");
    for (int ti = 0; ti < nt; ti++) {
        int64_t n = toks[ti];
        double tot_flop = 0, tot_s = 0;
        for (size_t i = 0; i < N_GEMM_SHAPES; i++) {
            const gemm_shape *g = &GEMM_SHAPES[i];
            v4f_cpu_mat sub[8];
            v4f_cpu_mm mm[8];
            for (int64_t k = 0; k < g->groups; k++) {
                sub[k] = v4f_cpu_mat_rows(&wm[i], k * g->n_out, g->n_out);
                mm[k] = (v4f_cpu_mm){&sub[k], X + k * g->n_in, GEMM_X_STRIDE, n, Y + k * g->n_out,
                                     GEMM_Y_STRIDE};
            }
            double best = 1e30;
            for (int rep = 0; rep <= GEMM_REPS; rep++) { /* rep 0: warm-up */
                double t0 = v4f_time_s();
                v4f_cpu_matmul_multi(&ctx, mm, (int)g->groups);
                double dt = v4f_time_s() - t0;
                if (rep && dt < best) best = dt;
            }
            double flop = 2.0 * (double)n * (double)g->n_in * (double)g->n_out * (double)g->groups;
            tot_flop += flop;
            tot_s += best;
            printf("%-28s %7lld %10.3f %10.1f %7.1f%%\n", g->name, (long long)n, best * 1e3,
                   flop / best * 1e-9, 100.0 * flop / best * 1e-9 / peak);
        }
        printf("%-28s %7lld %10.3f %10.1f %7.1f%%\n", "all dense projections", (long long)n,
               tot_s * 1e3, tot_flop / tot_s * 1e-9, 100.0 * tot_flop / tot_s * 1e-9 / peak);
    }
    for (size_t i = 0; i < N_GEMM_SHAPES; i++) free(wdata[i]);
    v4f_aligned_free(X);
    v4f_aligned_free(Y);
    v4f_cpu_ctx_deinit(&ctx);
    v4f_pool_free(pool);
    return 0;
}

static int run_membw(int64_t bytes, int threads, v4f_membw_result *r) {
    v4f_err err = {0};
    if (v4f_membw_measure((uint64_t)bytes, threads, 5, r, &err)) {
        fprintf(stderr, "v4flash bench: %s\n", err.msg);
        return 1;
    }
    return 0;
}

/* ---- --kernels: decode matvec kernels, in cache (1 thread) and streaming ---- */

/* The weight types of the published layouts; each is timed as a 4096-wide
 * matrix: one thread over a 192 KiB slice (in L2) per ISA table (dot_f32,
 * then "+planes": the int8-plane dot_planes where the type has one, both
 * IQ2_XXS grid lookups), then all threads over a 1 GiB matrix through
 * v4f_cpu_matmul (the decode path), with the f32 kernels and with planes. */
static const struct {
    uint32_t type;
    const char *name;
    int scale_off[2]; /* byte offsets of the f16 scales in a block (-1: none) */
} KB_TYPES[] = {
    {V4F_TYPE_F16, "F16", {-1, -1}},      {V4F_TYPE_Q8_0, "Q8_0", {0, -1}},
    {V4F_TYPE_Q2_K, "Q2_K", {80, 82}},    {V4F_TYPE_Q4_K, "Q4_K", {0, 2}},
    {V4F_TYPE_IQ2_XXS, "IQ2_XXS", {0, -1}},
};
#define KB_N_IN 4096
#define KB_STREAM_BYTES (1ull << 30)
#define KB_CACHE_BYTES (192u << 10)

/* random codes with sane scales (no NaN / denormal f16) */
static void kb_fill(int ti, uint8_t *p, uint64_t bytes, uint64_t *seed) {
    for (uint64_t i = 0; i + 8 <= bytes; i += 8) {
        uint64_t r = xorshift(seed);
        memcpy(p + i, &r, 8);
    }
    uint32_t type = KB_TYPES[ti].type;
    const v4f_type_info *info = v4f_type_info_get(type);
    uint64_t bb = info->blck_bytes;
    if (type == V4F_TYPE_F16) {
        for (uint64_t i = 0; i + 2 <= bytes; i += 2) {
            uint16_t h = (uint16_t)((p[i] | p[i + 1] << 8) & 0x83ff) | 0x3000;
            memcpy(p + i, &h, 2);
        }
        return;
    }
    for (uint64_t b = 0; b + bb <= bytes; b += bb)
        for (int k = 0; k < 2; k++)
            if (KB_TYPES[ti].scale_off[k] >= 0) {
                p[b + KB_TYPES[ti].scale_off[k]] = GEMM_Q8_SCALE_F16 & 0xff;
                p[b + KB_TYPES[ti].scale_off[k] + 1] = GEMM_Q8_SCALE_F16 >> 8;
            }
}

static int run_kernel_bench(int threads) {
    v4f_pool *pool = v4f_pool_new(threads);
    if (!pool) return 1;
    v4f_membw_result bw = {0};
    if (run_membw(KB_STREAM_BYTES, threads, &bw)) return 1;
    char cpu[256];
    cpu_name(cpu, sizeof cpu);
    printf("machine: %s, %d threads, membw %.2f GB/s (best of %d)\n", cpu, v4f_pool_size(pool),
           bw.best_gbs, bw.runs);
    v4f_cpu_ctx ctx;
    v4f_err err = {0};
    if (v4f_cpu_ctx_init(&ctx, pool, KB_N_IN, &err)) {
        v4f_pool_free(pool);
        return 1;
    }
    uint8_t *W = v4f_aligned_alloc(KB_STREAM_BYTES);
    float *x = v4f_aligned_alloc(KB_N_IN * sizeof(float));
    float *y = v4f_aligned_alloc((KB_STREAM_BYTES / 512) * sizeof(float));
    uint64_t seed = 0x243f6a8885a308d3ull;
    for (int i = 0; i < KB_N_IN; i++) x[i] = (float)((double)(xorshift(&seed) >> 11) * 0x1p-53 - 0.5);
    printf("%-8s %-10s %12s %12s %8s\n", "type", "isa", "1T cache GB/s", "all-T GB/s", "% membw");
    for (size_t ti = 0; ti < sizeof KB_TYPES / sizeof KB_TYPES[0]; ti++) {
        uint32_t type = KB_TYPES[ti].type;
        const char *only = getenv("V4F_KB_TYPE"); /* time one type only */
        if (only && *only && strcmp(only, KB_TYPES[ti].name) != 0) continue;
        uint64_t rb = 0;
        v4f_type_row_bytes(type, KB_N_IN, &rb);
        kb_fill((int)ti, W, KB_STREAM_BYTES, &seed);
        int64_t rows_c = KB_CACHE_BYTES / rb;
        for (int isa = 0; isa < V4F_ISA_COUNT; isa++) {
            const v4f_quant_kernels *k = v4f_quant_kernels_isa(type, (v4f_isa)isa);
            if (!k || !k->dot_f32) continue;
            volatile float sink = 0;
            int64_t reps = 0;
            double t0 = v4f_time_s(), dt;
            do {
                for (int64_t r = 0; r < rows_c; r++) sink += k->dot_f32(W + r * rb, x, KB_N_IN);
                reps++;
                dt = v4f_time_s() - t0;
            } while (dt < 0.25);
            printf("%-8s %-10s %12.2f\n", KB_TYPES[ti].name, v4f_isa_name((v4f_isa)isa),
                   (double)reps * rows_c * rb / dt * 1e-9);
            if (!k->dot_planes) continue;
            /* the int8-plane kernel over the same rows (x split once, as the
             * decode matvec does per call); IQ2_XXS: both grid lookups */
            v4f_quantize_planes(x, ctx.planes, KB_N_IN);
            const bool iq2 = type == V4F_TYPE_IQ2_XXS;
            for (int var = 0; var < (iq2 ? 2 : 1); var++) {
                v4f_quant_dot_planes_fn dot = iq2 ? v4f_quant_iq2_planes_variant(var == 0) : k->dot_planes;
                reps = 0;
                t0 = v4f_time_s();
                do {
                    for (int64_t r = 0; r < rows_c; r++) sink += dot(W + r * rb, ctx.planes, KB_N_IN);
                    reps++;
                    dt = v4f_time_s() - t0;
                } while (dt < 0.25);
                printf("%-8s %-10s %12.2f%s\n", KB_TYPES[ti].name, !iq2 ? "+planes" : var ? "+pl-table" : "+pl-gather",
                       (double)reps * rows_c * rb / dt * 1e-9, iq2 && dot == k->dot_planes ? "  (used)" : "");
            }
        }
        v4f_cpu_mat m = {.data = W, .type = type, .n_in = KB_N_IN,
                         .n_out = (int64_t)(KB_STREAM_BYTES / rb), .row_bytes = rb};
        /* the decode path, f32 dots then (if the type has them) planes */
        const v4f_quant_kernels *kb = v4f_quant_kernels_get(type);
        const uint64_t planes_env = ctx.planes_types;
        for (int pl = 0; pl < (kb->dot_planes ? 2 : 1); pl++) {
            ctx.planes_types = pl ? ~(uint64_t)0 : 0;
            double best = 1e30;
            for (int rep = 0; rep < 6; rep++) {
                double t0 = v4f_time_s();
                v4f_cpu_matmul(&ctx, &m, x, KB_N_IN, 1, y, m.n_out);
                double dt = v4f_time_s() - t0;
                if (rep && dt < best) best = dt;
            }
            double gbs = (double)m.n_out * rb / best * 1e-9;
            printf("%-8s %-10s %12s %12.2f %7.1f%%\n", KB_TYPES[ti].name, pl ? "+planes" : v4f_isa_name(v4f_isa_best()),
                   "(stream)", gbs, 100.0 * gbs / bw.best_gbs);
        }
        ctx.planes_types = planes_env;
    }
    v4f_aligned_free(W);
    v4f_aligned_free(x);
    v4f_aligned_free(y);
    v4f_cpu_ctx_deinit(&ctx);
    v4f_pool_free(pool);
    return 0;
}


static int cmp_dbl(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double rss_mib(void) {
    uint64_t b = 0;
    return v4f_proc_kb("/proc/self/status", "VmRSS", &b) ? (double)b / 1048576.0 : 0;
}

/* --fake-ctx: decode timing at position `pos` over a synthetic KV (banner).
 * Without a page dir one RAM session; with one, sessions with the KV in RAM,
 * file-backed, and (--kv-evict) file-backed with the rows dropped from RAM
 * before each step, filled identically and stepped in turn so that load
 * fluctuations on the machine hit every mode alike. */
#define FAKE_MODES 3
static int bench_fake_ctx(const v4f_cli_model *bm, const char *cpu, int threads, bool ref,
                          int64_t pos, int64_t gen, const char *page_dir, bool evict,
                          uint64_t seed) {
    static const char *const names[FAKE_MODES] = {"KV in RAM", "file-backed, resident",
                                                  "file-backed, evicted before each step"};
    const v4f_config *c = &bm->m->cfg;
    const int nm = page_dir ? (evict ? 3 : 2) : 1;
    v4f_err err = {0};
    v4f_session *s[FAKE_MODES] = {0};
    double *dt[FAKE_MODES] = {0};
    int32_t tok[FAKE_MODES] = {2, 2, 2};
    float *logits = v4f_xmalloc((size_t)c->n_vocab * sizeof *logits);
    int rc = 0;
    uint64_t n_ctx = (uint64_t)pos + (uint64_t)gen + 1;
    printf("machine: %s, %d threads, backend cpu\n", cpu, threads > 0 ? threads : v4f_cpu_count());
    printf("model: %s, precision %s\n", bm->desc, ref ? "ref" : "default");
    for (int k = 0; k < nm; k++) {
        v4f_session_opts so = {.n_ctx = (uint32_t)n_ctx, .n_threads = threads,
                               .precision = ref ? V4F_PRECISION_REF : V4F_PRECISION_DEFAULT,
                               .kv_page_dir = k ? page_dir : NULL};
        if (n_ctx > 0xffffffffu || v4f_session_new(bm->m, &so, &s[k], &err)) {
            fprintf(stderr, "v4flash bench: session: %s\n", err.msg[0] ? err.msg : "context too large");
            rc = 1;
            goto out;
        }
        struct v4f_kv *kv = v4f_session_kv(s[k]);
        double t0 = v4f_time_s();
        v4f_kv_fill_synthetic(kv, (uint64_t)pos, seed);
        double t_fill = v4f_time_s() - t0;
        if (v4f_session_restore_pos(s[k], (uint32_t)pos, 0, &err)) {
            fprintf(stderr, "v4flash bench: %s\n", err.msg);
            rc = 1;
            goto out;
        }
        if (k == 2) v4f_kv_page_out(kv);
        printf("%-38s kv %.1f MiB: %.1f MiB in RAM + %.1f MiB file-backed (%.1f MiB of it resident); "
               "filled in %.1f s\n", names[k], (double)kv->total_bytes / 1048576.0,
               (double)(kv->total_bytes - (kv->page_map ? kv->page_bytes : 0)) / 1048576.0,
               (double)kv->page_bytes / 1048576.0,
               (double)v4f_kv_paged_resident(kv) / 1048576.0, t_fill);
        dt[k] = v4f_xmalloc((size_t)gen * sizeof(double));
    }
    uint64_t hot = 0, cold = 0;
    v4f_kv_step_working_set(c, (uint64_t)pos, v4f_session_kv(s[0])->compact, c->idx_topk, &hot, &cold);
    printf("SYNTHETIC KV: %lld positions of seeded random rows (values meaningless; row counts and "
           "access pattern real)\n", (long long)pos);
    printf("step working set: %.1f MiB read in full (indexer + ratio-128 rows + windows) + %.2f "
           "MiB of pages of the %u selected rows per ratio-4 layer\n", (double)hot / 1048576.0,
           (double)cold / 1048576.0, c->idx_topk);
    for (int64_t i = 0; i < gen && !rc; i++) {
        for (int k = 0; k < nm; k++) {
            if (k == 2) v4f_kv_page_out(v4f_session_kv(s[k]));
            double a = v4f_time_s();
            if (v4f_session_decode(s[k], tok[k], logits, &err)) {
                fprintf(stderr, "v4flash bench: decode: %s\n", err.msg);
                rc = 1;
                break;
            }
            dt[k][i] = v4f_time_s() - a;
            tok[k] = v4f_argmax_f32_except(logits, c->n_vocab, 1); /* EOS never: the probe never stops */
        }
    }
    for (int k = 0; k < nm && !rc; k++) {
        double sum = 0;
        for (int64_t i = 0; i < gen; i++) sum += dt[k][i];
        qsort(dt[k], (size_t)gen, sizeof(double), cmp_dbl);
        printf("decode at %lld, %-38s %lld tokens: mean %.2f ms/token, median %.2f, min %.2f; "
               "file-backed resident after: %.1f MiB\n", (long long)pos, names[k], (long long)gen,
               1e3 * sum / (double)gen, 1e3 * dt[k][gen / 2], 1e3 * dt[k][0],
               (double)v4f_kv_paged_resident(v4f_session_kv(s[k])) / 1048576.0);
    }
    printf("process RSS %.0f MiB\n", rss_mib());
out:
    for (int k = 0; k < FAKE_MODES; k++) {
        free(dt[k]);
        v4f_session_free(s[k]);
    }
    free(logits);
    return rc;
}

/* CUDA: decode timing over synthetic KV at pos (and at 2048 for the
 * long-context ratio) in one session sized for pos. */
static int bench_fake_ctx_gpu(const v4f_cli_model *bm, v4f_session_opts so, int64_t pos, int64_t gen, uint64_t seed,
                              double copy_gbs, uint64_t wbytes) {
    const v4f_config *c = &bm->m->cfg;
    v4f_err err = {0};
    v4f_session *s = NULL;
    uint64_t n_ctx = (uint64_t)pos + (uint64_t)gen + 1;
    so.n_ctx = (uint32_t)n_ctx;
    if (n_ctx > 0xffffffffu || v4f_session_new(bm->m, &so, &s, &err)) {
        fprintf(stderr, "v4flash bench: session: %s\n", err.msg[0] ? err.msg : "context too large");
        return 1;
    }
    v4f_cli_backend_report(s);
    printf("model: %s, precision %s\n", bm->desc, so.precision == V4F_PRECISION_REF ? "ref" : "default");
    printf("SYNTHETIC KV: seeded random rows as if the context were evaluated (values meaningless; row "
           "counts and attention cost real)\n");
    float *logits = v4f_xmalloc((size_t)c->n_vocab * sizeof *logits);
    double *dt = v4f_xmalloc((size_t)gen * sizeof(double));
    int64_t at[2] = {pos > 2048 ? 2048 : pos, pos};
    double med[2] = {0, 0};
    int rc = 0;
    for (int k = (pos > 2048 ? 0 : 1); k < 2 && !rc; k++) {
        if (v4f_session_fake_ctx(s, (uint32_t)at[k], seed, &err)) {
            fprintf(stderr, "v4flash bench: %s\n", err.msg);
            rc = 1;
            break;
        }
        /* gen greedy steps, EOS suppressed; dt[i]: from pick i - 1 (the
         * start for i = 0) to pick i, the last one at the return */
        pick_clock pc = {dt, 0, gen, NULL};
        uint32_t n_eval = 0;
        int32_t next = 0;
        const double a = v4f_time_s();
        if (v4f_session_decode_greedy(s, 2, (uint32_t)gen, 1, pick_time, &pc, logits, &n_eval, &next, &err)) {
            fprintf(stderr, "v4flash bench: decode: %s\n", err.msg);
            rc = 1;
            break;
        }
        if (pc.n < gen) dt[pc.n++] = v4f_time_s();
        for (int64_t i = gen - 1; i > 0; i--) dt[i] -= dt[i - 1];
        dt[0] -= a;
        /* with the host a step behind, single intervals jitter around the
         * step time (a late wake-up shortens the next one): the rate is the
         * steady-state mean, tokens 2..gen (the first includes the launch) */
        double sum = 0;
        for (int64_t i = 1; i < gen; i++) sum += dt[i];
        const double first = dt[0], steady = gen > 1 ? sum / (double)(gen - 1) : first;
        qsort(dt, (size_t)gen, sizeof(double), cmp_dbl);
        med[k] = steady;
        double tps = 1.0 / steady, gbs = (double)wbytes * tps / 1e9;
        printf("decode at %lld: %lld tokens, steady %.3f ms/token (%.1f t/s; median %.3f, min %.3f, first %.3f); "
               "weights %.1f GB/s = %.1f%% of the %.0f GB/s device copy\n",
               (long long)at[k], (long long)gen, 1e3 * steady, tps, 1e3 * dt[gen / 2], 1e3 * dt[0], 1e3 * first, gbs,
               copy_gbs > 0 ? 100.0 * gbs / copy_gbs : 0.0, copy_gbs);
    }
    if (!rc && pos > 2048 && med[0] > 0 && med[1] > 0)
        printf("decode at %lld = %.1f%% of decode at 2048 (tokens/s)\n", (long long)pos, 100.0 * med[0] / med[1]);
    free(dt);
    free(logits);
    v4f_session_free(s);
    return rc;
}

/* Back to the frontier at `at` after a probe: a GPU session rewinds (its
 * state is position-indexed, so that drops the probe's tokens) as far as its
 * position rings reach, else (and a CPU session always) reloads the
 * frontier's snapshot (saved at every frontier). Prints the error; 0 or 1. */
static int rollback(v4f_session *s, bool gpu, uint32_t at, v4f_snapshot_mem *snap, float *logits, uint32_t n_vocab) {
    v4f_err err = {0};
    v4f_status st = gpu ? v4f_session_rewind(s, at, &err) : V4F_STATUS_RANGE;
    if (st == V4F_STATUS_RANGE) st = v4f_snapshot_mem_load(s, snap, logits, n_vocab, &err);
    if (st) {
        fprintf(stderr, "v4flash bench: snapshot restore: %s\n", err.msg);
        return 1;
    }
    return 0;
}

/* --expert-stats: routed expert reads of n greedy decode steps (through the
 * session trace, so no graph), by layer kind, and how many of them hit the
 * experts a GPU session keeps in host memory (ids >= on_dev). */
typedef struct expert_count {
    uint32_t n_layer, n_hash, on_dev, n_exp;
    uint64_t reads, host, hash_reads, hash_host;
    uint8_t *seen; /* [n_layer][n_exp] over the probe */
} expert_count;

static void count_experts(void *ud, uint32_t layer, uint32_t pos, const int32_t *ids, uint32_t k) {
    (void)pos;
    expert_count *ec = ud;
    if (layer >= ec->n_layer) return;
    for (uint32_t i = 0; i < k; i++) {
        if (ids[i] < 0 || (uint32_t)ids[i] >= ec->n_exp) continue;
        bool host = ec->on_dev && (uint32_t)ids[i] >= ec->on_dev;
        ec->reads++;
        ec->host += host;
        if (layer < ec->n_hash) {
            ec->hash_reads++;
            ec->hash_host += host;
        }
        ec->seen[(size_t)layer * ec->n_exp + (uint32_t)ids[i]] = 1;
    }
}

static int expert_stats_probe(v4f_session *s, v4f_snapshot_mem *snap, float *logits, const v4f_config *c,
                              uint32_t n, bool gpu) {
    v4f_err err = {0};
    uint32_t at = v4f_session_pos(s);
    expert_count ec = {c->n_layer, 0, 0, c->n_expert, 0, 0, 0, 0, NULL};
    for (uint32_t l = 0; l < c->n_layer; l++) ec.n_hash += l < c->n_hash_layer;
    if (gpu) ec.on_dev = v4f_gpu_experts_on_device(v4f_session_gpu(s));
    if (ec.on_dev >= c->n_expert) ec.on_dev = 0; /* all on the device */
    ec.seen = v4f_xcalloc((size_t)c->n_layer * c->n_expert, 1);
    v4f_trace tr = {&ec, NULL, count_experts, NULL};
    v4f_session_set_trace(s, &tr);
    const int32_t eos = 1;
    int32_t tok = v4f_argmax_f32_except(logits, c->n_vocab, eos);
    int rc = 0;
    for (uint32_t i = 0; i < n && !rc; i++) {
        if (v4f_session_eval(s, &tok, 1, logits, 0, NULL, &err)) {
            fprintf(stderr, "v4flash bench: --expert-stats decode: %s\n", err.msg);
            rc = 1;
        }
        tok = v4f_argmax_f32_except(logits, c->n_vocab, eos);
    }
    v4f_session_set_trace(s, NULL);
    if (!rc) rc = rollback(s, gpu, at, snap, logits, c->n_vocab);
    if (!rc) {
        uint64_t distinct = 0;
        for (size_t i = 0; i < (size_t)c->n_layer * c->n_expert; i++) distinct += ec.seen[i];
        printf("\nexperts of %u greedy decode steps at context %u: %.1f routed reads per token (%.1f in %u hash "
               "layers), %.1f distinct experts per layer over the probe\n",
               n, at, (double)ec.reads / n, (double)ec.hash_reads / n, ec.n_hash, (double)distinct / c->n_layer);
        if (ec.on_dev)
            printf("host-resident experts (ids >= %u, %.1f%% of each layer): %.2f reads per token (%.1f%%; %.2f in "
                   "hash layers), uniform routing would give %.2f\n",
                   ec.on_dev, 100.0 * (c->n_expert - ec.on_dev) / c->n_expert, (double)ec.host / n,
                   ec.reads ? 100.0 * (double)ec.host / (double)ec.reads : 0.0, (double)ec.hash_host / n,
                   (double)ec.reads / n * (c->n_expert - ec.on_dev) / c->n_expert);
    }
    free(ec.seen);
    fflush(stdout);
    return rc;
}

/* --evals: one eval of each token count (a chat turn's few new tokens) at
 * the current frontier, logits of the last token, median of 3, each rolled
 * back. */
static int evals_probe(v4f_session *s, v4f_snapshot_mem *snap, float *logits, const v4f_config *c,
                       const int32_t *prompt, const int64_t *evals, int n_evals, bool gpu) {
    v4f_err err = {0};
    uint32_t at = v4f_session_pos(s);
    printf("\nevals at context %u (logits of the last token; median of 3, rolled back):\n", at);
    for (int e = 0; e < n_evals; e++) {
        double t[3];
        for (int r = 0; r < 3; r++) {
            double t0 = v4f_time_s();
            if (v4f_session_eval(s, prompt, (uint32_t)evals[e], logits, V4F_EVAL_LOGITS_LAST, NULL, &err)) {
                fprintf(stderr, "v4flash bench: eval of %lld tokens: %s\n", (long long)evals[e], err.msg);
                return 1;
            }
            t[r] = v4f_time_s() - t0;
            if (rollback(s, gpu, at, snap, logits, c->n_vocab)) return 1;
        }
        qsort(t, 3, sizeof t[0], cmp_dbl);
        printf("  %6lld tokens: %9.2f ms  (%.2f ms/token, %.1f t/s)\n", (long long)evals[e], 1e3 * t[1],
               1e3 * t[1] / (double)evals[e], (double)evals[e] / t[1]);
    }
    fflush(stdout);
    return 0;
}

/* --draft-accept at the frontier `at` (tok: the first token): decode
 * without drafts, then with wrong drafts recording the picks, then with
 * oracle drafts right with each probability (these with the draft gate off:
 * every step drafts, the cost at a known acceptance), then with the gate on
 * (as run / serve decode): the MTP block's own drafts and wrong ones; one
 * line each, rolled back. */
static int draft_probe(v4f_session *s, bool gpu, uint32_t at, v4f_snapshot_mem *snap, float *logits,
                       const v4f_config *c, int32_t tok, int64_t gen, oracle *orc, const double *accepts,
                       int n_accepts) {
    v4f_err err = {0};
    int rc = 0;
    double ss_plain = 0; /* steady state without drafts */
    for (int i = -2; i < n_accepts + 2 && !rc; i++) {
        if ((rc = rollback(s, gpu, at, snap, logits, c->n_vocab))) break;
        const bool gated = i >= n_accepts;
        v4f_session_set_drafting(s, i >= -1);
        v4f_session_set_draft_gate(s, gated);
        orc->at = at;
        if (i == -1) orc->n = 0;
        orc->p = i == -1 || i == n_accepts + 1 ? 2 : i < 0 || gated ? -1 : accepts[i];
        double first_at = 0;
        pick_clock pc = {&first_at, 0, 1, i == -1 ? orc : NULL};
        uint32_t n_eval = 0;
        int32_t next = 0;
        const v4f_spec_stats s0 = v4f_session_spec_stats(s);
        double t0 = v4f_time_s();
        v4f_status st = v4f_session_decode_greedy(s, tok, (uint32_t)gen, 1, pick_time, &pc, logits, &n_eval, &next, &err);
        double td = v4f_time_s() - t0, t_first = pc.n ? first_at - t0 : td;
        if (st) {
            fprintf(stderr, "v4flash bench: decode: %s\n", err.msg);
            rc = 1;
            break;
        }
        const v4f_spec_stats s1 = v4f_session_spec_stats(s);
        const uint64_t nd = s1.drafted - s0.drafted, na = s1.accepted - s0.accepted, np = s1.paused - s0.paused;
        const double ss = gen > 1 ? (double)(gen - 1) / (td - t_first) : gen / td;
        if (i == -2) {
            printf("%10s no drafts: %9.2f t/s, ss %9.2f t/s\n", "", gen / td, ss);
            ss_plain = ss;
        } else if (i == -1) {
            /* every step drafted and yielded one token: its cost in plain
             * steps, and the share of kept drafts above which drafting pays */
            printf("%10s wrong drafts: %9.2f t/s, ss %9.2f t/s, %llu of %llu kept", "", gen / td, ss,
                   (unsigned long long)na, (unsigned long long)nd);
            if (na == 0 && nd > 0 && ss > 0 && ss_plain > 0)
                printf("; a drafting step costs %.2f decode steps: drafts pay above %.0f%% kept", ss_plain / ss,
                       100.0 * (ss_plain / ss - 1.0));
            printf("\n");
        } else if (!gated)
            printf("%10s oracle drafts right with p %.2f: %9.2f t/s, ss %9.2f t/s, %llu of %llu kept (%.1f%%)\n", "",
                   accepts[i], gen / td, ss, (unsigned long long)na, (unsigned long long)nd,
                   nd ? 100.0 * (double)na / (double)nd : 0.0);
        else
            printf("%10s gated, %s drafts: %9.2f t/s, ss %9.2f t/s, %llu of %llu kept, %llu tokens paused\n", "",
                   i == n_accepts ? "MTP" : "wrong", gen / td, ss, (unsigned long long)na, (unsigned long long)nd,
                   (unsigned long long)np);
        fflush(stdout);
    }
    orc->p = -1;
    v4f_session_set_drafting(s, true);
    v4f_session_set_draft_gate(s, true);
    return rc ? rc : rollback(s, gpu, at, snap, logits, c->n_vocab);
}

int cmd_bench(int argc, char **argv) {
    const char *model = NULL, *synthetic = NULL, *csv = NULL, *prompt_file = NULL, *mtp = NULL;
    const char *precision = "default";
    const char *draft_accept = NULL;
    int64_t ctx_start = 2048, ctx_max = 32768, step_incr = 0, gen = 128, membw_bytes = 1 << 30;
    double step_mul = 0;
    int threads = 0;
    uint64_t seed = 1;
    bool membw_only = false, no_membw = false, gemm = false, kernels = false;
    int64_t gemm_tokens = 0;
    const char *kv_dir = NULL, *kv_page_dir = NULL;
    int64_t fake_ctx = 0;
    bool kv_evict = false;
    const char *evals_opt = NULL;
    int64_t expert_stats = 0;
    float temp = 0;
    v4f_cli_backend be = V4F_CLI_BACKEND_DEFAULT;
    const v4f_opt opts[] = {
        {"model", 'm', V4F_ARG_STR, &model, 0, 0, "FILE", "model GGUF (default ./ds4flash.gguf unless --synthetic)", NULL},
        {"synthetic", 0, V4F_ARG_STR, &synthetic, 0, 0, "PRESET[:L]", "random weights built in memory: tiny | small | full-q2 | full-q4, optional layer count", NULL},
        {"ctx-start", 0, V4F_ARG_INT, &ctx_start, 1, 1048576, "N", "first frontier (2048)", NULL},
        {"ctx-max", 0, V4F_ARG_INT, &ctx_max, 1, 1048576, "N", "last frontier (32768)", NULL},
        {"step-incr", 0, V4F_ARG_INT, &step_incr, 1, 1048576, "N", "frontier step (default 2048)", NULL},
        {"step-mul", 0, V4F_ARG_DOUBLE, &step_mul, 1.01, 64, "F", "geometric frontier step instead of --step-incr", NULL},
        {"gen", 'n', V4F_ARG_INT, &gen, 1, 65536, "N", "tokens decoded per frontier (128)", NULL},
        {"temp", 0, V4F_ARG_FLOAT, &temp, 0, 100, "T", "decode by drawing at temperature T on the host (min-p 0.05, --seed) instead of greedily (0)", NULL},
        {"csv", 0, V4F_ARG_STR, &csv, 0, 0, "FILE", "also write the rows as CSV (- = stdout)", NULL},
        {"prompt-file", 0, V4F_ARG_STR, &prompt_file, 0, 0, "FILE", "text to prefill (tokenized, repeated); default random ids", NULL},
        {"threads", 't', V4F_ARG_INT32, &threads, 0, 4096, "N", "threads (default: all CPUs)", NULL},
        {"precision", 0, V4F_ARG_STR, &precision, 0, 0, "MODE", "default | ref", NULL},
        {"seed", 0, V4F_ARG_U64, &seed, 0, 0, "S", "synthetic weights / random prompt seed (1)", NULL},
        {"membw", 0, V4F_ARG_FLAG, &membw_only, 0, 0, NULL, "only measure the streaming-read bandwidth", NULL},
        {"membw-bytes", 0, V4F_ARG_INT, &membw_bytes, 1 << 20, 1LL << 40, "N", "bandwidth buffer size (1G)", NULL},
        {"gemm", 0, V4F_ARG_FLAG, &gemm, 0, 0, NULL, "only measure the prefill's dense Q8_0 projections (GFLOP/s) against the f32 FMA peak", NULL},
        {"kernels", 0, V4F_ARG_FLAG, &kernels, 0, 0, NULL, "only time the decode matvec kernels per weight type, f32 and int8-plane (1 thread in cache, all threads streaming)", NULL},
        {"gemm-tokens", 0, V4F_ARG_INT, &gemm_tokens, 1, 65536, "N", "tokens for --gemm (default: 512 and 2048)", NULL},
        {"no-membw", 0, V4F_ARG_FLAG, &no_membw, 0, 0, NULL, "skip the bandwidth measurement of a sweep", NULL},
        {"kv-dir", 0, V4F_ARG_STR, &kv_dir, 0, 0, "DIR", "also time saving/restoring the last snapshot to/from a disk KV store in DIR", NULL},
        {"kv-page-dir", 0, V4F_ARG_STR, &kv_page_dir, 0, 0, "DIR", "page the ratio-4 compressed KV rows to an unlinked file in DIR", NULL},
        {"fake-ctx", 0, V4F_ARG_INT, &fake_ctx, 1, 1048576, "N", "SYNTHETIC-KV decode timing: random rows as if N tokens were evaluated, no prefill", NULL},
        {"kv-evict", 0, V4F_ARG_FLAG, &kv_evict, 0, 0, NULL, "with --fake-ctx and --kv-page-dir: drop the file-backed rows from RAM before every step", NULL},
        {"expert-stats", 0, V4F_ARG_INT, &expert_stats, 1, 65536, "N", "after the last frontier, decode N greedy tokens step by step and count the routed experts they read, and on a GPU how many of those live in host memory", NULL},
        {"evals", 0, V4F_ARG_STR, &evals_opt, 0, 0, "N,N,..", "after the last frontier, time one eval of each token count (a turn's new tokens; median of 3, rolled back)", NULL},
        V4F_CLI_MTP_OPT(mtp),
        {"draft-accept", 0, V4F_ARG_STR, &draft_accept, 0, 0, "P,P,..", "with --mtp: also time, at each frontier, decoding without drafts, with always-wrong drafts (recording the picks), with ORACLE drafts right with probability P (speculative decoding at known acceptances, every step drafting), and with the draft gate on", NULL},
        V4F_CLI_BACKEND_OPTS(be),
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
    double accepts[8];
    int n_accepts = 0;
    if (draft_accept) {
        if (!mtp) return v4f_args_fail(&spec, "--draft-accept needs --mtp");
        if ((n_accepts = parse_list(draft_accept, 0, 1, false, accepts, 8)) < 0)
            return v4f_args_fail(&spec, "--draft-accept wants up to 8 probabilities 0..1 separated by commas");
    }
    int64_t evals[16], eval_max = 0;
    int n_evals = 0;
    if (evals_opt) {
        double ev[16];
        if ((n_evals = parse_list(evals_opt, 1, 65536, true, ev, 16)) < 0)
            return v4f_args_fail(&spec, "--evals wants up to 16 token counts 1..65536 separated by commas");
        for (int i = 0; i < n_evals; i++) {
            evals[i] = (int64_t)ev[i];
            if (evals[i] > eval_max) eval_max = evals[i];
        }
        if (!n_evals) return v4f_args_fail(&spec, "--evals wants at least one token count");
        if (fake_ctx) return v4f_args_fail(&spec, "--evals needs a prefilled context, not --fake-ctx");
    }
    v4f_session_opts bso = {0};
    if (v4f_cli_backend_apply(&be, &spec, &bso)) return 2;
    const bool gpu = bso.backend == V4F_BACKEND_CUDA;
    if (gpu && kv_page_dir) return v4f_args_fail(&spec, "--kv-page-dir applies to the CPU backend");
    char cpu[256];
    cpu_name(cpu, sizeof cpu);
    int n_threads = threads > 0 ? threads : v4f_cpu_count();

    if (gemm) return run_gemm_bench(threads, gemm_tokens);
    if (kernels) return run_kernel_bench(threads);
    v4f_membw_result bw = {0};
    if (membw_only) {
        if (run_membw(membw_bytes, threads, &bw)) return 1;
        printf("machine: %s, %d threads\n", cpu, bw.n_threads);
        printf("membw: %.2f GB/s streaming read (best of %d, median %.2f GB/s, %.2f GiB buffer, %s)\n",
               bw.best_gbs, bw.runs, bw.median_gbs, (double)bw.bytes / (1u << 30),
               bw.prefetched ? "prefetched reads" : "plain reads");
        return 0;
    }
    if (!model && !synthetic) model = "ds4flash.gguf";
    if (kv_evict && !(fake_ctx && kv_page_dir))
        return v4f_args_fail(&spec, "--kv-evict needs --fake-ctx and --kv-page-dir");
    double copy_gbs = 0;
    if (gpu && !membw_only && !gemm && !kernels) {
        /* the device's ceiling, measured before the model takes the memory */
        v4f_err e2 = {0};
        if (v4f_gpu_copy_bw(bso.gpu_device, &copy_gbs, &e2))
            fprintf(stderr, "v4flash bench: device copy bandwidth: %s\n", e2.msg);
        else
            printf("device copy bandwidth: %.0f GB/s (read + write, 1 GiB copies, median)\n", copy_gbs);
    }
    if (fake_ctx && gpu) {
        v4f_cli_model fm;
        rc = v4f_cli_model_open("v4flash bench", model, synthetic, NULL, seed, threads, &fm);
        if (rc) return rc;
        bso.n_threads = threads;
        bso.precision = strcmp(precision, "ref") ? V4F_PRECISION_DEFAULT : V4F_PRECISION_REF;
        printf("weights read per decoded token: %.3f GB\n", (double)decode_weight_bytes(fm.m) / 1e9);
        rc = bench_fake_ctx_gpu(&fm, bso, fake_ctx, gen, seed, copy_gbs, decode_weight_bytes(fm.m));
        v4f_cli_model_close(&fm);
        return rc;
    }
    if (fake_ctx) {
        v4f_cli_model fm;
        rc = v4f_cli_model_open("v4flash bench", model, synthetic, NULL, seed, threads, &fm);
        if (rc) return rc;
        rc = bench_fake_ctx(&fm, cpu, threads, !strcmp(precision, "ref"), fake_ctx, gen,
                            kv_page_dir, kv_evict, seed);
        v4f_cli_model_close(&fm);
        return rc;
    }
    if (!gpu && !no_membw && run_membw(membw_bytes < (512 << 20) ? membw_bytes : (512 << 20), threads, &bw))
        return 1;
    if (gpu) bw.best_gbs = copy_gbs; /* the roofline of a GPU run is the device copy bandwidth */

    v4f_cli_model bm;
    rc = v4f_cli_model_open("v4flash bench", model, synthetic, mtp, seed, threads, &bm);
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
    /* probes are rolled back */
    int64_t probe_max = gen > eval_max ? gen : eval_max;
    if (expert_stats > probe_max) probe_max = expert_stats;
    uint64_t n_ctx = (uint64_t)ctx_max + (uint64_t)probe_max + 1;
    v4f_err err = {0};
    v4f_session *s = NULL;
    v4f_session_opts so = bso;
    so.n_ctx = (uint32_t)n_ctx;
    so.n_threads = threads;
    so.precision = strcmp(precision, "ref") ? V4F_PRECISION_DEFAULT : V4F_PRECISION_REF;
    so.kv_page_dir = kv_page_dir;
    v4f_cli_mtp_opts(mtp, &so);
    if (n_ctx > 0xffffffffu || v4f_session_new(bm.m, &so, &s, &err)) {
        fprintf(stderr, "v4flash bench: session: %s\n", err.msg[0] ? err.msg : "context too large");
        v4f_cli_model_close(&bm);
        return 1;
    }
    v4f_cli_backend_report(s);
    v4f_cli_mtp_note(s, mtp, "v4flash bench");
    oracle orc = {.p = -1, .vocab = c->n_vocab, .avoid = 1, .rng = seed};
    if (n_accepts && v4f_session_drafts(s)) {
        orc.cap = (uint32_t)gen + 1;
        orc.ref = v4f_xmalloc(orc.cap * sizeof(int32_t));
        v4f_session_set_draft_hook(s, oracle_draft, &orc);
    }
    int32_t *prompt = make_prompt(&bm, prompt_file, (uint32_t)n_ctx, seed);
    float *logits = v4f_xmalloc((size_t)c->n_vocab * sizeof *logits);
    v4f_sampler *smp = NULL;
    if (temp > 0) {
        v4f_sampler_params sp = v4f_sampler_params_default();
        sp.temperature = temp;
        sp.seed = seed;
        if (v4f_sampler_new(&sp, c->n_vocab, &smp, &err)) {
            fprintf(stderr, "v4flash bench: sampler: %s\n", err.msg);
            free(prompt);
            prompt = NULL;
        }
    }
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
    if (gpu) {
        printf("machine: %s, backend cuda (%s)\n", cpu, v4f_gpu_device_name(v4f_session_gpu(s)));
    } else {
        printf("machine: %s, %d threads, backend cpu\n", cpu, n_threads);
        if (bw.best_gbs > 0)
            printf("membw: %.2f GB/s streaming read (best of %d, %s)\n", bw.best_gbs, bw.runs,
                   bw.prefetched ? "prefetched reads" : "plain reads");
    }
    printf("model: %s, load %.2f s, precision %s\n", bm.desc, load_s, precision);
    printf("weights read per decoded token: %.3f GB (non-expert + %u of %u experts per layer)\n",
           (double)wbytes / 1e9, c->n_expert_used, c->n_expert);
    if (smp) printf("decode: drawn on the host at temperature %.2f, min-p 0.05, seed %llu\n", (double)temp,
                    (unsigned long long)seed);
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
        int32_t tok = v4f_argmax_f32_except(logits, c->n_vocab, eos), next = 0;
        uint32_t n_eval = 0;
        orc.p = -1;
        const v4f_spec_stats sp0 = v4f_session_spec_stats(s);
        /* gen greedy steps with EOS suppressed, the picks fed by the session
         * (on a GPU without waiting for the host), or gen draws (--temp);
         * t_first: the first pick */
        double first_at = 0;
        pick_clock pc = {&first_at, 0, 1, NULL};
        if (smp) v4f_sampler_reseed(smp, seed); /* every frontier draws the same way */
        const v4f_drawer dw = smp ? v4f_sampler_drawer(smp) : (v4f_drawer){0};
        double t0 = v4f_time_s();
        if (smp ? v4f_session_decode_sampled(s, tok, (uint32_t)gen, &dw, pick_time, &pc, logits, &n_eval, &next, &err)
                : v4f_session_decode_greedy(s, tok, (uint32_t)gen, eos, pick_time, &pc, logits, &n_eval, &next, &err)) {
            fprintf(stderr, "v4flash bench: decode: %s\n", err.msg);
            rc = 1;
            goto out;
        }
        double td = v4f_time_s() - t0, t_first = pc.n ? first_at - t0 : td;
        ts0 = v4f_time_s();
        if ((rc = rollback(s, gpu, at, &snap, logits, c->n_vocab))) goto out;
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
        if (v4f_session_drafts(s)) {
            const v4f_spec_stats sp1 = v4f_session_spec_stats(s);
            const uint64_t nd = sp1.drafted - sp0.drafted, na = sp1.accepted - sp0.accepted;
            printf("%10s MTP drafts: %llu of %llu kept (%.1f%%)\n", "", (unsigned long long)na,
                   (unsigned long long)nd, nd ? 100.0 * (double)na / (double)nd : 0.0);
        }
        if (orc.ref && (rc = draft_probe(s, gpu, at, &snap, logits, c, tok, gen, &orc, accepts, n_accepts)))
            goto out;
        fflush(stdout);
        if (cf) {
            fprintf(cf, "%u,%u,%.3f,%lld,%.3f,%.3f,%.6f,%llu,%llu,%.3f,%.3f,%.4f,%zu,%.6f,%.6f\n", at,
                    n_new, ptps, (long long)gen, gtps, ss, t_first, (unsigned long long)kvb,
                    (unsigned long long)wbytes, gbs, bw.best_gbs, roof, snap.len, t_save, t_rest);
            fflush(cf);
        }
    }
    if (expert_stats && nf > 0 && (rc = expert_stats_probe(s, &snap, logits, c, (uint32_t)expert_stats, gpu)))
        goto out;
    if (n_evals && nf > 0 && (rc = evals_probe(s, &snap, logits, c, prompt, evals, n_evals, gpu))) goto out;
    if (!gpu && nf > 0 && prefill_total > 0)
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
    free(orc.ref);
    v4f_sampler_free(smp);
    v4f_snapshot_mem_free(&snap);
    if (cf && cf != stdout) fclose(cf);
    free(prompt);
    free(logits);
    v4f_session_free(s);
    v4f_cli_model_close(&bm);
    return rc;
}
