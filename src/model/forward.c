/*
 * forward.c - the DeepSeek V4 Flash forward pass on the CPU backend
 * (MODEL.md §4-§9), layer-major over a chunk of tokens.
 *
 * One code path serves prefill and decode: eval(tokens[0..n)) runs each
 * layer over all n tokens before the next layer (decode is n == 1). Inside
 * a layer: matmuls over all tokens (blocked, parallel over row tiles x token
 * blocks), per-token element-wise stages in parallel over tokens, the
 * compressors' state machines serially in token order (cheap), the indexer
 * in parallel over tokens (decode: over row blocks of the one token) and
 * attention in parallel over (token, head group); a decode step gathers
 * (decodes) its key rows once into a shared buffer for all head groups.
 *
 * Causality inside a chunk: a token at position p sees raw rows
 * max(0, p-n_swa+1)..p (older ones from the ring, chunk ones from scratch;
 * the ring is updated after the layer's attention) and compressed rows
 * c < floor((p+1)/ratio) (rows are final once emitted, so the compressor may
 * run ahead over the whole chunk first).
 *
 * Ownership: the session owns the pool, the KV cache, the scratch arena and
 * float32 copies of small weight vectors only if a file stores them as
 * F16/BF16 (norms, HC scales/bases, sinks, biases are F32 in the published
 * layout, so normally nothing is copied); matrices and the compressor `ape`
 * tables are read in place from the model's mmapped file.
 * Threading: one caller thread; parallel regions run on the session pool and
 * write disjoint slices of scratch.
 */
#include "model/forward.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/ops.h"
#include "core/threadpool.h"
#include "model/forward_cuda.h"
#include "model/kv.h"
#include "model/spec_gate.h"
#include "quant/quant.h"

#define CHUNK_CAP 2048
#define MAX_GROUPS 64 /* output groups (8 in the published model) */
#define IDX_BLOCK 64 /* indexer rows scored per GEMM tile */
#define SCRATCH_BUDGET_BYTES (2048ull << 20)
/* Evals of 2..CPU_SHORT_EVAL tokens (the logits of the last one at most)
 * run token by token through the decode kernels, the head for the last
 * token only: the batched path (dequantize + GEMM) costs ~3x a decode step
 * at 2 tokens. full-q2:4 on the 2-vCPU dev box, token by token vs batched:
 * 2 / 4 / 6 / 8 tokens 153 / 272 / 383 / 486 vs 266 / 394 / 498 / 524 ms
 * (docs/PERF_NOTES.md, session 14); 4 leaves room for machines whose many
 * cores favour the batched GEMMs. The env V4F_CPU_SHORT_EVAL=N overrides
 * it (0 or 1: off). */
#define CPU_SHORT_EVAL 4

/* ---- phase profile (V4F_PROFILE=1: wall time per phase, printed at free) ---- */

enum {
    PH_EMBED, PH_HC, PH_ATTN_PROJ, PH_Q_ROPE, PH_COMP, PH_ATTN, PH_ATTN_OUT, PH_ROUTER,
    PH_EXP_GU, PH_SWIGLU, PH_EXP_DOWN, PH_FFN_SUM, PH_HEAD, PH_COUNT
};
static const char *const PH_NAMES[PH_COUNT] = {
    "embed", "hc pre/post (+F16 mix)", "attn q_a/kv/comp/idx + q_b", "q/idx-q norm+rope",
    "compressors+indexer", "attention", "attn out_a/out_b", "router+gather",
    "experts+shared gate/up", "swiglu", "experts+shared down", "ffn sum", "lm head"};
enum { PROF_DECODE, PROF_PREFILL, PROF_MODES };

/* ---- per-layer runtime views -------------------------------------------- */

typedef struct layer_rt {
    uint32_t ratio;
    bool hash;
    const float *rope_freqs; /* [n_rot/2] */
    float swiglu_limit;
    v4f_cpu_mat hc_attn_fn, hc_ffn_fn;
    const float *hc_attn_scale, *hc_attn_base, *hc_ffn_scale, *hc_ffn_base;
    const float *attn_norm, *q_a_norm, *kv_a_norm, *sinks, *ffn_norm;
    v4f_cpu_mat q_a, q_b, kv, out_a, out_b;
    /* compressor */
    const v4f_wt *comp_ape; /* [W, ratio], read row by row (no copy) */
    const float *comp_norm;
    v4f_cpu_mat comp_kv, comp_gate;
    /* indexer */
    v4f_cpu_mat idx_q_b, idx_proj, idx_comp_kv, idx_comp_gate;
    const v4f_wt *idx_comp_ape;
    const float *idx_comp_norm;
    /* MoE */
    v4f_cpu_mat gate_inp;
    const float *probs_b;
    const int32_t *tid2eid;
    const v4f_wt *gate_exps, *up_exps, *down_exps;
    v4f_cpu_mat gate_sh, up_sh, down_sh;
} layer_rt;

typedef struct scratch {
    float *X, *X2;           /* [N][H*d] */
    float *mix;              /* [N][mix] */
    float *pre, *post, *comb;
    float *a, *xn;           /* [N][d] */
    float *qr;               /* [N][q_lora] */
    float *q, *o;            /* [N][nh*hd] */
    float *kv;               /* [N][hd] */
    float *low;              /* [N][og*orank] */
    float *out;              /* [N][d] */
    float *ckv, *cgate;      /* [N][2*hd] */
    float *ikv, *igate;      /* [N][2*ihd] */
    float *iq;               /* [N][nih*ihd] */
    float *iw;               /* [N][nih] */
    int32_t *isel;           /* [N][topk] */
    int32_t *insel;          /* [N] (-1: all visible rows) */
    float *rlog;             /* [N][n_expert] */
    int32_t *eids;           /* [N][k] */
    float *ew;               /* [N][k] */
    int32_t *elist;          /* [N*k] (t*k + j) sorted by expert */
    int32_t *einv;           /* [N*k] place of (t*k + j) in elist */
    int32_t *ecount;         /* [n_expert + 1] offsets */
    float *xg;               /* [N*k][d] gathered inputs, then routed outputs */
    float *g, *u;            /* [N*k][n_ff] routed gate/up (g then holds the SwiGLU) */
    float *sg, *su;          /* [N][n_ff_shared] */
    float *ysh;              /* [N][d] */
    v4f_cpu_mm *mm;          /* [2*n_expert + 2] matmul jobs */
    v4f_cpu_mat *mats;       /* [3*n_expert] expert matrix views */
    float *pool_row;         /* [2*hd] compressor output row */
    float *ape_row;          /* [2*max(hd, ihd)] one row of a compressor's ape */
    float *comp_dec;         /* [cap_other][hd] decoded compressed rows (ratio != 4) */
    /* per-thread */
    float **keys;            /* [T] -> [max_gather][hd] (also the indexer's [IDX_BLOCK][nih]) */
    float **ksc;             /* [T] -> [max(max_keys * n_head, cap4)] */
    float **krow;            /* [T] -> [IDX_BLOCK * (hd + ihd)] */
} scratch;

struct v4f_session {
    const v4f_model *m;
    v4f_config cfg;
    v4f_session_opts opts;
    v4f_pool *pool;
    v4f_cpu_ctx cpu;
    v4f_kv *kv;
    uint32_t pos, mtp_pos;
    uint32_t chunk;
    uint32_t short_max; /* evals of 2..short_max tokens take the decode path per token (CPU_SHORT_EVAL) */
    uint32_t max_keys;   /* most keys one query attends (window + compressed) */
    uint32_t max_gather; /* most keys gathered per query (window + ratio-4 selection) */
    uint32_t cap4;
    uint32_t cap_other; /* most compressed rows of a layer with ratio != 4 */
    layer_rt *lr; /* [n_layer + 1]; [n_layer] = MTP block */
    float *freq_plain, *freq_comp;
    /* MTP extras */
    v4f_cpu_mat mtp_e_proj, mtp_h_proj, mtp_hc_head_fn;
    const float *mtp_enorm, *mtp_hnorm, *mtp_norm, *mtp_hc_base, *mtp_hc_scale;
    /* head */
    v4f_cpu_mat out_hc_fn, output;
    const float *out_hc_base, *out_hc_scale, *out_norm;
    scratch sc;
    void *arena;
    void **owned; /* converted vectors */
    int n_owned, cap_owned;
    v4f_trace trace;
    bool has_trace;
    v4f_debug_flags dbg;
    v4f_gpu *gpu; /* CUDA sessions: everything above except pos/opts/cfg is unused */
    /* speculative greedy decoding with MTP drafts (opts.mtp_draft, CUDA):
     * positions p0 .. p0 + n - 1 whose main HC states (in the GPU's ring,
     * v4f_gpu_spec_step) the MTP block has not taken yet; it pairs position
     * q with the token at q + 1, tok[q % cap], known for all but the last */
    struct {
        bool on;
        uint32_t p0, n, cap; /* cap: the MTP window + 2 rows, as the GPU ring */
        uint32_t *slot;      /* [cap]: the position whose HC state ring row r holds (UINT32_MAX: none) */
        int32_t *tok;        /* [cap] */
        int32_t *ptok;       /* [cap]: a step's tokens for the MTP block */
        v4f_spec_stats st;
        v4f_spec_gate gate;
        v4f_draft_fn hook;
        void *hook_ud;
    } spec;
    struct {
        bool on;      /* V4F_PROFILE set at session creation */
        int mode;     /* PROF_DECODE / PROF_PREFILL for the current eval */
        double t_last, r_last; /* wall clock, pool region time at the last mark */
        double acc[PROF_MODES][PH_COUNT];
        double serial[PROF_MODES][PH_COUNT]; /* the part outside parallel regions */
        uint64_t evals[PROF_MODES], tokens[PROF_MODES], regions[PROF_MODES];
    } prof;
};

/* time since the previous mark goes to phase ph (no-op unless profiling) */
static inline void prof_mark(v4f_session *s, int ph) {
    if (!s->prof.on) return;
    double t = v4f_time_s(), r = v4f_pool_region_s(s->pool);
    s->prof.acc[s->prof.mode][ph] += t - s->prof.t_last;
    s->prof.serial[s->prof.mode][ph] += (t - s->prof.t_last) - (r - s->prof.r_last);
    s->prof.t_last = t;
    s->prof.r_last = r;
}

static void prof_print(const v4f_session *s) {
    static const char *const mode_names[PROF_MODES] = {"decode", "prefill"};
    for (int m = 0; m < PROF_MODES; m++) {
        if (!s->prof.evals[m]) continue;
        double tot = 0, ser = 0;
        for (int p = 0; p < PH_COUNT; p++) tot += s->prof.acc[m][p], ser += s->prof.serial[m][p];
        double tok = (double)s->prof.tokens[m];
        fprintf(stderr,
                "profile %s: %llu evals, %llu tokens, %.3f ms/token (%.3f serial, outside parallel regions), "
                "%.1f parallel regions/eval\n",
                mode_names[m], (unsigned long long)s->prof.evals[m], (unsigned long long)s->prof.tokens[m],
                1e3 * tot / tok, 1e3 * ser / tok, (double)s->prof.regions[m] / (double)s->prof.evals[m]);
        for (int p = 0; p < PH_COUNT; p++)
            fprintf(stderr, "profile %s:   %-28s %8.3f ms/token %5.1f%%  serial %7.3f\n", mode_names[m],
                    PH_NAMES[p], 1e3 * s->prof.acc[m][p] / tok,
                    tot > 0 ? 100.0 * s->prof.acc[m][p] / tot : 0.0, 1e3 * s->prof.serial[m][p] / tok);
    }
}

/* ---- binding helpers -------------------------------------------------------- */

static v4f_cpu_mat mat_of(const v4f_wt *w) {
    v4f_cpu_mat m = {w->data, w->type, (int64_t)w->n_in, (int64_t)w->n_out, w->row_bytes};
    return m;
}

static v4f_cpu_mat expert_mat(const v4f_wt *w, int64_t e) {
    v4f_cpu_mat m = mat_of(w);
    m.data = (const uint8_t *)w->data + (uint64_t)e * w->mat_bytes;
    return m;
}

/* float32 view of a small vector tensor (converted copy if not F32). */
static const float *vec_of(v4f_session *s, const v4f_wt *w) {
    if (!w->data) return NULL;
    if (w->type == V4F_TYPE_F32) return (const float *)w->data;
    uint64_t n = w->n_in * w->n_out * w->n_mat;
    float *dst = v4f_xmalloc(n * sizeof(float));
    for (uint64_t r = 0; r < w->n_out * w->n_mat; r++)
        v4f_dequant_row_ref(w->type, (const uint8_t *)w->data + r * w->row_bytes,
                            dst + r * w->n_in, (int64_t)w->n_in);
    if (s->n_owned == s->cap_owned) {
        s->cap_owned = s->cap_owned ? 2 * s->cap_owned : 64;
        s->owned = v4f_xrealloc(s->owned, (size_t)s->cap_owned * sizeof *s->owned);
    }
    s->owned[s->n_owned++] = dst;
    return dst;
}

static void bind_layer(v4f_session *s, layer_rt *r, const v4f_layer_weights *w, uint32_t ratio,
                       float limit) {
    r->ratio = ratio;
    r->hash = w->hash_routed;
    r->rope_freqs = ratio ? s->freq_comp : s->freq_plain;
    r->swiglu_limit = limit;
    r->hc_attn_fn = mat_of(&w->hc_attn_fn);
    r->hc_ffn_fn = mat_of(&w->hc_ffn_fn);
    r->hc_attn_scale = vec_of(s, &w->hc_attn_scale);
    r->hc_attn_base = vec_of(s, &w->hc_attn_base);
    r->hc_ffn_scale = vec_of(s, &w->hc_ffn_scale);
    r->hc_ffn_base = vec_of(s, &w->hc_ffn_base);
    r->attn_norm = vec_of(s, &w->attn_norm);
    r->q_a_norm = vec_of(s, &w->attn_q_a_norm);
    r->kv_a_norm = vec_of(s, &w->attn_kv_a_norm);
    r->sinks = vec_of(s, &w->attn_sinks);
    r->ffn_norm = vec_of(s, &w->ffn_norm);
    r->q_a = mat_of(&w->attn_q_a);
    r->q_b = mat_of(&w->attn_q_b);
    r->kv = mat_of(&w->attn_kv);
    r->out_a = mat_of(&w->attn_output_a);
    r->out_b = mat_of(&w->attn_output_b);
    if (ratio) {
        r->comp_ape = &w->comp_ape;
        r->comp_norm = vec_of(s, &w->comp_norm);
        r->comp_kv = mat_of(&w->comp_kv);
        r->comp_gate = mat_of(&w->comp_gate);
    }
    if (ratio == 4) {
        r->idx_q_b = mat_of(&w->idx_q_b);
        r->idx_proj = mat_of(&w->idx_proj);
        r->idx_comp_kv = mat_of(&w->idx_comp_kv);
        r->idx_comp_gate = mat_of(&w->idx_comp_gate);
        r->idx_comp_ape = &w->idx_comp_ape;
        r->idx_comp_norm = vec_of(s, &w->idx_comp_norm);
    }
    r->gate_inp = mat_of(&w->ffn_gate_inp);
    r->probs_b = w->exp_probs_b.data ? vec_of(s, &w->exp_probs_b) : NULL;
    r->tid2eid = r->hash ? (const int32_t *)w->ffn_gate_tid2eid.data : NULL;
    r->gate_exps = &w->ffn_gate_exps;
    r->up_exps = &w->ffn_up_exps;
    r->down_exps = &w->ffn_down_exps;
    r->gate_sh = mat_of(&w->ffn_gate_shexp);
    r->up_sh = mat_of(&w->ffn_up_shexp);
    r->down_sh = mat_of(&w->ffn_down_shexp);
}

/* ---- scratch layout ------------------------------------------------------------ */

typedef struct {
    uint8_t *base;
    size_t off;
} carver;

static void *carve(carver *c, size_t bytes) {
    size_t o = (c->off + 63) & ~(size_t)63;
    c->off = o + bytes;
    return c->base ? c->base + o : NULL;
}

/* Lay out (base NULL: measure) the scratch for chunk N. */
static size_t layout_scratch(v4f_session *s, uint8_t *base, uint32_t N) {
    const v4f_config *c = &s->cfg;
    scratch *x = &s->sc;
    carver cv = {base, 0};
    size_t F = sizeof(float);
    uint64_t HD = (uint64_t)c->n_hc * c->n_embd, d = c->n_embd;
    uint64_t nq = (uint64_t)c->n_head * c->head_dim, mixn = v4f_config_hc_mix(c);
    uint64_t nff = (uint64_t)c->n_ff_exp * (c->n_expert_shared ? c->n_expert_shared : 1);
    if (nff < c->n_ff_exp) nff = c->n_ff_exp;
    uint64_t k = c->n_expert_used;
    x->X = carve(&cv, N * HD * F);
    x->X2 = carve(&cv, N * HD * F);
    x->mix = carve(&cv, N * mixn * F);
    x->pre = carve(&cv, N * c->n_hc * F);
    x->post = carve(&cv, N * c->n_hc * F);
    x->comb = carve(&cv, N * c->n_hc * c->n_hc * F);
    x->a = carve(&cv, N * d * F);
    x->xn = carve(&cv, N * d * F);
    x->qr = carve(&cv, N * c->q_lora_rank * F);
    x->q = carve(&cv, N * nq * F);
    x->o = carve(&cv, N * nq * F);
    x->kv = carve(&cv, N * c->head_dim * F);
    x->low = carve(&cv, N * (uint64_t)c->o_groups * c->o_lora_rank * F);
    x->out = carve(&cv, N * d * F);
    x->ckv = carve(&cv, N * 2ull * c->head_dim * F);
    x->cgate = carve(&cv, N * 2ull * c->head_dim * F);
    x->ikv = carve(&cv, N * 2ull * c->idx_head_dim * F);
    x->igate = carve(&cv, N * 2ull * c->idx_head_dim * F);
    x->iq = carve(&cv, N * (uint64_t)c->n_idx_head * c->idx_head_dim * F);
    x->iw = carve(&cv, N * (uint64_t)c->n_idx_head * F);
    x->isel = carve(&cv, N * (uint64_t)c->idx_topk * sizeof(int32_t));
    x->insel = carve(&cv, N * sizeof(int32_t));
    x->rlog = carve(&cv, N * (uint64_t)c->n_expert * F);
    x->eids = carve(&cv, N * k * sizeof(int32_t));
    x->ew = carve(&cv, N * k * F);
    x->elist = carve(&cv, N * k * sizeof(int32_t));
    x->einv = carve(&cv, N * k * sizeof(int32_t));
    x->ecount = carve(&cv, ((uint64_t)c->n_expert + 1) * sizeof(int32_t));
    x->xg = carve(&cv, N * k * d * F);
    x->g = carve(&cv, N * k * c->n_ff_exp * F);
    x->u = carve(&cv, N * k * c->n_ff_exp * F);
    x->sg = carve(&cv, N * nff * F);
    x->su = carve(&cv, N * nff * F);
    x->ysh = carve(&cv, N * d * F);
    x->mm = carve(&cv, (2ull * c->n_expert + 2) * sizeof(v4f_cpu_mm));
    x->mats = carve(&cv, 3ull * c->n_expert * sizeof(v4f_cpu_mat));
    x->pool_row = carve(&cv, 2ull * (c->head_dim > c->idx_head_dim ? c->head_dim : c->idx_head_dim) * F);
    x->ape_row = carve(&cv, 2ull * (c->head_dim > c->idx_head_dim ? c->head_dim : c->idx_head_dim) * F);
    x->comp_dec = carve(&cv, (uint64_t)s->cap_other * c->head_dim * F);
    int T = v4f_pool_size(s->pool);
    uint64_t ksz = (uint64_t)s->max_keys * c->n_head;
    if (ksz < s->cap4) ksz = s->cap4;
    if (base) {
        x->keys = v4f_xcalloc((size_t)T, sizeof *x->keys);
        x->ksc = v4f_xcalloc((size_t)T, sizeof *x->ksc);
        x->krow = v4f_xcalloc((size_t)T, sizeof *x->krow);
    }
    for (int t = 0; t < T; t++) {
        uint64_t kf = (uint64_t)s->max_gather * c->head_dim;
        if (kf < (uint64_t)IDX_BLOCK * c->n_idx_head) kf = (uint64_t)IDX_BLOCK * c->n_idx_head;
        float *k1 = carve(&cv, kf * F);
        float *k2 = carve(&cv, ksz * F);
        float *k3 = carve(&cv, (uint64_t)IDX_BLOCK * (c->head_dim + c->idx_head_dim) * F);
        if (base) {
            x->keys[t] = k1;
            x->ksc[t] = k2;
            x->krow[t] = k3;
        }
    }
    return cv.off + 64;
}

/* ---- session lifecycle ---------------------------------------------------------------- */

static int64_t max_n_in(const v4f_session *s) {
    const v4f_config *c = &s->cfg;
    int64_t m = (int64_t)c->n_hc * c->n_embd;
    int64_t cand[] = {c->n_embd, c->q_lora_rank, (int64_t)c->n_head * c->head_dim / c->o_groups,
                      (int64_t)c->o_groups * c->o_lora_rank, c->n_ff_exp,
                      (int64_t)c->n_ff_exp * (c->n_expert_shared ? c->n_expert_shared : 1)};
    for (size_t i = 0; i < sizeof cand / sizeof cand[0]; i++)
        if (cand[i] > m) m = cand[i];
    return m;
}

static uint64_t per_token_scratch(const v4f_session *s) {
    v4f_session tmp = *s;
    size_t b1 = layout_scratch(&tmp, NULL, 1), b2 = layout_scratch(&tmp, NULL, 2);
    return b2 - b1;
}

/* No pending rows, no ring row holding a known position (speculative
 * decoding; a no-op for sessions without it). */
static void spec_clear(v4f_session *s) {
    s->spec.n = 0;
    for (uint32_t r = 0; r < s->spec.cap; r++) s->spec.slot[r] = UINT32_MAX;
}

void v4f_session_free(v4f_session *s) {
    if (!s) return;
    if (s->gpu) {
        v4f_gpu_free(s->gpu);
        v4f_kv_free(s->kv);
        free(s->spec.tok);
        free(s->spec.ptok);
        free(s->spec.slot);
        free(s);
        return;
    }
    if (s->prof.on) prof_print(s);
    v4f_kv_free(s->kv);
    v4f_cpu_ctx_deinit(&s->cpu);
    v4f_pool_free(s->pool);
    v4f_aligned_free(s->arena);
    free(s->sc.keys);
    free(s->sc.ksc);
    free(s->sc.krow);
    for (int i = 0; i < s->n_owned; i++) free(s->owned[i]);
    free(s->owned);
    free(s->lr);
    free(s->freq_plain);
    free(s->freq_comp);
    free(s);
}

static void bind_all(v4f_session *s) {
    const v4f_model *m = s->m;
    const v4f_config *c = &s->cfg;
    s->lr = v4f_xcalloc(c->n_layer + 1, sizeof *s->lr);
    for (uint32_t l = 0; l < c->n_layer; l++)
        bind_layer(s, &s->lr[l], &m->layers[l], c->compress_ratio[l], c->swiglu_limit[l]);
    s->out_hc_fn = mat_of(&m->output_hc_fn);
    s->output = mat_of(&m->output);
    s->out_hc_base = vec_of(s, &m->output_hc_base);
    s->out_hc_scale = vec_of(s, &m->output_hc_scale);
    s->out_norm = vec_of(s, &m->output_norm);
    if (s->opts.enable_mtp) {
        const v4f_mtp_weights *w = &m->mtp;
        bind_layer(s, &s->lr[c->n_layer], &w->block, 0, c->swiglu_limit[c->n_layer]);
        s->lr[c->n_layer].hash = false;
        s->lr[c->n_layer].tid2eid = NULL;
        s->mtp_e_proj = mat_of(&w->e_proj);
        s->mtp_h_proj = mat_of(&w->h_proj);
        s->mtp_hc_head_fn = mat_of(&w->hc_head_fn);
        s->mtp_enorm = vec_of(s, &w->enorm);
        s->mtp_hnorm = vec_of(s, &w->hnorm);
        s->mtp_norm = vec_of(s, &w->norm);
        s->mtp_hc_base = vec_of(s, &w->hc_head_base);
        s->mtp_hc_scale = vec_of(s, &w->hc_head_scale);
    }
}

/* Sizes the fixed-capacity parts of the session support (err on failure). */
static v4f_status check_supported(const v4f_config *c, v4f_err *err) {
    if (c->n_expert_used > 64 || c->n_expert_used > c->n_expert || c->n_hc > 64 ||
        c->n_head > 1024 || c->o_groups > MAX_GROUPS)
        return v4f_err_set(err, V4F_STATUS_UNSUPPORTED,
                           "unsupported sizes: experts used %u of %u (max 64), HC streams %u, "
                           "heads %u, output groups %u",
                           c->n_expert_used, c->n_expert, c->n_hc, c->n_head, c->o_groups);
    if (c->idx_head_dim == 0 || (c->idx_head_dim & (c->idx_head_dim - 1)) != 0 ||
        c->n_rot > c->idx_head_dim || c->n_rot > c->head_dim || (c->n_rot & 1))
        return v4f_err_set(err, V4F_STATUS_UNSUPPORTED,
                           "indexer head dim %u must be a power of two (Hadamard) and hold the "
                           "%u RoPE dims (even, <= head dim %u)",
                           c->idx_head_dim, c->n_rot, c->head_dim);
    for (uint32_t l = 0; l < c->n_layer; l++)
        if (c->compress_ratio[l] > 128 || c->compress_ratio[l] == 1)
            return v4f_err_set(err, V4F_STATUS_UNSUPPORTED, "compress ratio %u at layer %u",
                               c->compress_ratio[l], l);
    return V4F_OK;
}

v4f_status v4f_session_new(const v4f_model *m, const v4f_session_opts *o, v4f_session **out,
                           v4f_err *err) {
    *out = NULL;
    v4f_status cst = check_supported(&m->cfg, err);
    if (cst) return cst;
    v4f_session *s = v4f_xcalloc(1, sizeof *s);
    const char *prof_env = getenv("V4F_PROFILE");
    s->prof.on = prof_env && prof_env[0] && strcmp(prof_env, "0") != 0;
    s->m = m;
    s->cfg = m->cfg;
    s->opts = *o;
    s->opts.kv_page_dir = NULL; /* borrowed: not kept past this call */
    if (s->opts.n_ctx == 0) s->opts.n_ctx = 4096;
    const v4f_config *c = &s->cfg;
    if (s->opts.enable_mtp && !m->has_mtp) {
        free(s);
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "MTP requested but the model has no MTP block");
    }
    if (s->opts.mtp_draft && !s->opts.enable_mtp) {
        free(s);
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "MTP drafts need the MTP block (enable_mtp)");
    }
    uint32_t n_ctx = s->opts.n_ctx;
    if (o->backend == V4F_BACKEND_CUDA) {
        if (o->kv_page_dir) {
            free(s);
            return v4f_err_set(err, V4F_STATUS_INVALID_ARG,
                               "KV paging (--kv-page-dir) applies to the CPU backend; the GPU keeps the KV on the device");
        }
        v4f_status gst = v4f_gpu_new(m, &s->opts, &s->gpu, err);
        if (gst) {
            free(s);
            return gst;
        }
        s->chunk = v4f_gpu_chunk(s->gpu);
        if (s->opts.mtp_draft && s->opts.enable_mtp) {
            s->spec.on = true;
            s->spec.cap = c->n_swa + 2;
            s->spec.tok = v4f_xmalloc(s->spec.cap * sizeof(int32_t));
            s->spec.ptok = v4f_xmalloc(s->spec.cap * sizeof(int32_t));
            s->spec.slot = v4f_xmalloc(s->spec.cap * sizeof(uint32_t));
            /* the gate's bar by what a drafting step costs (spec_gate.h) */
            v4f_spec_gate_init(&s->spec.gate, true,
                               v4f_gpu_mtp_host(s->gpu) ? V4F_GATE_KEEP_MIN : V4F_GATE_KEEP_MIN_CARD);
            spec_clear(s);
        }
        *out = s;
        return V4F_OK;
    }
    if (o->backend != V4F_BACKEND_CPU) {
        free(s);
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "unknown backend %d", (int)o->backend);
    }
    s->pool = v4f_pool_new(o->n_threads);
    if (!s->pool) {
        free(s);
        return v4f_err_set(err, V4F_STATUS_OOM, "cannot start the thread pool");
    }
    v4f_pool_set_timing(s->pool, s->prof.on);
    v4f_status st = v4f_cpu_ctx_init(&s->cpu, s->pool, max_n_in(s), err);
    if (st) {
        v4f_pool_free(s->pool);
        free(s);
        return st;
    }
    /* RoPE tables */
    int half = (int)c->n_rot / 2;
    s->freq_plain = v4f_xmalloc((size_t)half * sizeof(float));
    s->freq_comp = v4f_xmalloc((size_t)half * sizeof(float));
    v4f_rope_params rp = {c->rope_base, 0, 1, 0, 0};
    v4f_rope_freqs(&rp, (int)c->n_rot, s->freq_plain);
    v4f_rope_params rc = {c->rope_base_compress, c->yarn_orig_ctx, c->yarn_factor,
                          c->yarn_beta_fast, c->yarn_beta_slow};
    v4f_rope_freqs(&rc, (int)c->n_rot, s->freq_comp);
    bind_all(s);
    /* KV */
    st = v4f_kv_new_paged(c, n_ctx, o->precision != V4F_PRECISION_REF, s->opts.enable_mtp,
                          o->kv_page_dir, &s->kv, err);
    if (st) goto fail;
    /* attention key capacity */
    s->cap4 = n_ctx / 4 + 2;
    uint32_t c4 = c->idx_topk < s->cap4 ? c->idx_topk : s->cap4;
    s->max_gather = c->n_swa + c4;
    s->max_keys = s->max_gather;
    s->cap_other = 0;
    for (uint32_t l = 0; l < c->n_layer; l++) {
        uint32_t r = c->compress_ratio[l];
        if (r && r != 4 && n_ctx / r + 2 > s->cap_other) s->cap_other = n_ctx / r + 2;
    }
    if (s->max_keys < c->n_swa + s->cap_other) s->max_keys = c->n_swa + s->cap_other;
    /* chunk size from the scratch budget */
    uint64_t per_tok = per_token_scratch(s);
    uint64_t n_fit = SCRATCH_BUDGET_BYTES / (per_tok ? per_tok : 1);
    uint32_t N = n_ctx < CHUNK_CAP ? n_ctx : CHUNK_CAP;
    if (n_fit < N) N = n_fit < 16 ? 16 : (uint32_t)n_fit;
    if (o->max_chunk > 0 && o->max_chunk < N) N = o->max_chunk;
    s->chunk = N;
    s->short_max = v4f_env_u32("V4F_CPU_SHORT_EVAL", CPU_SHORT_EVAL, 0, 4096);
    size_t bytes = layout_scratch(s, NULL, N);
    s->arena = v4f_aligned_alloc(bytes);
    if (!s->arena) {
        st = v4f_err_set(err, V4F_STATUS_OOM, "cannot allocate %zu bytes of scratch", bytes);
        goto fail;
    }
    layout_scratch(s, s->arena, N);
    *out = s;
    return V4F_OK;
fail:
    v4f_session_free(s);
    return st;
}

uint32_t v4f_session_pos(const v4f_session *s) { return s->pos; }
uint32_t v4f_session_mtp_pos(const v4f_session *s) { return s->mtp_pos; }
uint64_t v4f_session_kv_bytes(const v4f_session *s) {
    return s->gpu ? v4f_gpu_kv_bytes(s->gpu) : s->kv->total_bytes;
}
double v4f_session_kv_bytes_per_token(const v4f_session *s) {
    /* the GPU keeps compressed and indexer rows as float32 */
    return v4f_kv_bytes_per_token(&s->cfg, s->gpu ? false : s->kv->compact);
}
uint32_t v4f_session_chunk(const v4f_session *s) { return s->chunk; }
uint32_t v4f_session_rewind_reach(const v4f_session *s) { return s->gpu ? v4f_gpu_rewind_reach(s->gpu) : 0; }
v4f_backend v4f_session_backend(const v4f_session *s) { return s->gpu ? V4F_BACKEND_CUDA : V4F_BACKEND_CPU; }
const char *v4f_session_gpu_report(const v4f_session *s) { return s->gpu ? v4f_gpu_report(s->gpu) : NULL; }
struct v4f_gpu *v4f_session_gpu(v4f_session *s) { return s->gpu; }
void v4f_session_reset(v4f_session *s) {
    /* GPU state is position-indexed: resetting the position is enough */
    if (s->kv) v4f_kv_reset(s->kv);
    if (s->gpu) v4f_gpu_reset(s->gpu);
    s->pos = 0;
    s->mtp_pos = 0;
    spec_clear(s);
}
v4f_spec_stats v4f_session_spec_stats(const v4f_session *s) { return s->spec.st; }
void v4f_session_set_draft_hook(v4f_session *s, v4f_draft_fn fn, void *ud) {
    s->spec.hook = fn;
    s->spec.hook_ud = ud;
}
void v4f_session_set_draft_gate(v4f_session *s, bool on) {
    v4f_spec_gate_init(&s->spec.gate, on, s->spec.gate.keep_min); /* the bar set at creation */
}
bool v4f_session_drafts(const v4f_session *s) { return s->spec.on; }
void v4f_session_set_drafting(v4f_session *s, bool on) {
    s->spec.on = on && s->spec.cap > 0;
    if (!s->spec.on) s->spec.n = 0;
}
void v4f_session_set_trace(v4f_session *s, const v4f_trace *t) {
    s->has_trace = t != NULL;
    if (t) s->trace = *t;
}
void v4f_session_set_debug(v4f_session *s, const v4f_debug_flags *f) {
    memset(&s->dbg, 0, sizeof s->dbg);
    if (f) s->dbg = *f;
}

/* ---- per-token parallel stages ------------------------------------------------------ */

typedef struct stage {
    v4f_session *s;
    const layer_rt *r;
    v4f_kv_layer *kvl;
    uint32_t layer, pos0, n;
    const int32_t *tokens;
    const float *hc_in; /* MTP input HC states */
    const float *hc_scale, *hc_base, *norm_w; /* HC pre */
    int hgroups;
    bool shared_keys;   /* decode: keys gathered once into keys[0] */
    uint32_t idx_t;     /* token whose indexer rows are being scored (few-token path) */
    const float *comp_rows; /* ratio != 4: float32 compressed rows [n_comp][hd] */
    uint32_t shared_nk;
} stage;

static void par_tokens(v4f_session *s, stage *st, v4f_pool_fn fn) {
    if (st->n < 4) {
        for (uint32_t t = 0; t < st->n; t++) fn(st, t, 0);
        return;
    }
    v4f_pool_run(s->pool, st->n, fn, st);
}

/* 1/sqrt(mean(X^2) + eps) over the whole flattened HC state (HC_pre and
 * HC_head both scale their mixer outputs by it); sum of squares in double. */
static float hc_flat_rscale(const float *X, int64_t n, float eps) {
    double ss = v4f_cpu_sumsq_f64(X, n);
    return (float)(1.0 / sqrt(ss / (double)n + (double)eps));
}

/* mix *= rsqrt(mean X^2); split; a = sum pre X; xn = RMSNorm(a; w) */
static void st_hc_pre(void *ctx, int64_t t, int thread) {
    stage *st = ctx;
    v4f_session *s = st->s;
    const v4f_config *c = &s->cfg;
    int H = (int)c->n_hc;
    int64_t d = c->n_embd, HD = H * d, mixn = v4f_config_hc_mix(c);
    const float *X = s->sc.X + t * HD;
    float *mix = s->sc.mix + t * mixn;
    float r = hc_flat_rscale(X, HD, c->rms_eps);
    for (int64_t i = 0; i < mixn; i++) mix[i] *= r;
    float *pre = s->sc.pre + t * H, *post = s->sc.post + t * H, *comb = s->sc.comb + t * H * H;
    v4f_cpu_hc_split_sinkhorn(mix, st->hc_scale, st->hc_base, H, (int)c->hc_iters, c->hc_eps, pre,
                              post, comb);
    float *a = s->sc.a + t * d;
    v4f_cpu_hc_weighted_sum(X, pre, H, d, a);
    v4f_cpu_rmsnorm(a, st->norm_w, s->sc.xn + t * d, d, c->rms_eps);
}

static void st_hc_post(void *ctx, int64_t t, int thread) {
    stage *st = ctx;
    v4f_session *s = st->s;
    const v4f_config *c = &s->cfg;
    int H = (int)c->n_hc;
    int64_t d = c->n_embd, HD = H * d;
    v4f_cpu_hc_post(s->sc.out + t * d, s->sc.X + t * HD, s->sc.post + t * H,
                    s->sc.comb + t * H * H, H, d, s->sc.X2 + t * HD);
}

static void hc_pre(v4f_session *s, stage *st, const v4f_cpu_mat *fn, const float *scale,
                   const float *base, const float *norm_w) {
    const v4f_config *c = &s->cfg;
    int64_t HD = (int64_t)c->n_hc * c->n_embd, mixn = v4f_config_hc_mix(c);
    v4f_cpu_matmul(&s->cpu, fn, s->sc.X, HD, st->n, s->sc.mix, mixn);
    st->hc_scale = scale;
    st->hc_base = base;
    st->norm_w = norm_w;
    par_tokens(s, st, st_hc_pre);
}

static void hc_post(v4f_session *s, stage *st) {
    par_tokens(s, st, st_hc_post);
    float *t = s->sc.X;
    s->sc.X = s->sc.X2;
    s->sc.X2 = t;
}

/* q latent norm, KV norm + RoPE + FP8 */
static void st_qkv_norm(void *ctx, int64_t t, int thread) {
    stage *st = ctx;
    v4f_session *s = st->s;
    const v4f_config *c = &s->cfg;
    float *qr = s->sc.qr + t * c->q_lora_rank;
    v4f_cpu_rmsnorm(qr, st->r->q_a_norm, qr, c->q_lora_rank, c->rms_eps);
    float *kv = s->sc.kv + t * c->head_dim;
    v4f_cpu_rmsnorm(kv, st->r->kv_a_norm, kv, c->head_dim, c->rms_eps);
    v4f_cpu_rope_tail(kv, c->head_dim, (int)c->n_rot, st->r->rope_freqs, st->pos0 + t, false);
    if (!s->dbg.no_kv_fp8) v4f_cpu_fp8_roundtrip(kv, c->head_dim - c->n_rot);
}

/* per-head q norm + RoPE of token t, heads [h0, h1) */
static void q_heads(stage *st, int64_t t, uint32_t h0, uint32_t h1) {
    v4f_session *s = st->s;
    const v4f_config *c = &s->cfg;
    float *q = s->sc.q + t * (int64_t)c->n_head * c->head_dim;
    float cs[V4F_ROPE_MAX_ROT];
    V4F_ASSERT(c->n_rot <= V4F_ROPE_MAX_ROT);
    v4f_cpu_rope_cs(st->r->rope_freqs, (int)c->n_rot, st->pos0 + t, cs);
    for (uint32_t h = h0; h < h1; h++) {
        float *qh = q + (int64_t)h * c->head_dim;
        v4f_cpu_rmsnorm(qh, NULL, qh, c->head_dim, c->rms_eps);
        v4f_cpu_rope_tail_cs(qh, c->head_dim, (int)c->n_rot, cs, false);
    }
}

static void st_q_heads(void *ctx, int64_t t, int thread) {
    stage *st = ctx;
    q_heads(st, t, 0, st->s->cfg.n_head);
}

/* indexer queries of token t, heads [h0, h1): RoPE, Hadamard, FP4; weights
 * scale */
static void idx_q_heads(stage *st, int64_t t, uint32_t h0, uint32_t h1) {
    v4f_session *s = st->s;
    const v4f_config *c = &s->cfg;
    int64_t ihd = c->idx_head_dim;
    float *q = s->sc.iq + t * (int64_t)c->n_idx_head * ihd;
    float cs[V4F_ROPE_MAX_ROT];
    V4F_ASSERT(c->n_rot <= V4F_ROPE_MAX_ROT);
    v4f_cpu_rope_cs(st->r->rope_freqs, (int)c->n_rot, st->pos0 + t, cs);
    for (uint32_t h = h0; h < h1; h++) {
        float *qh = q + h * ihd;
        v4f_cpu_rope_tail_cs(qh, ihd, (int)c->n_rot, cs, false);
        v4f_cpu_hadamard(qh, ihd);
        v4f_cpu_fp4_roundtrip(qh, ihd);
    }
    float sc = (float)(1.0 / sqrt((double)ihd)) * (float)(1.0 / sqrt((double)c->n_idx_head));
    float *w = s->sc.iw + t * c->n_idx_head;
    for (uint32_t h = h0; h < h1; h++) w[h] *= sc;
}

static void st_idx_q(void *ctx, int64_t t, int thread) {
    stage *st = ctx;
    idx_q_heads(st, t, 0, st->s->cfg.n_idx_head);
}

/* Few tokens (decode): the q heads, and on ratio-4 layers the indexer query
 * heads, of every token in blocks of QH_BLOCK heads, one parallel region
 * (per-head work, so the results equal the per-token path's). */
#define QH_BLOCK 8

/* tasks per token: the q head blocks, then (ratio 4) the indexer's */
static int64_t q_blocks_per_tok(const stage *st) {
    const v4f_config *c = &st->s->cfg;
    return (c->n_head + QH_BLOCK - 1) / QH_BLOCK + (st->r->ratio == 4 ? (c->n_idx_head + QH_BLOCK - 1) / QH_BLOCK : 0);
}

static void st_q_heads_blocks(void *ctx, int64_t task, int thread) {
    stage *st = ctx;
    const v4f_config *c = &st->s->cfg;
    int64_t nq = (c->n_head + QH_BLOCK - 1) / QH_BLOCK;
    int64_t per_tok = q_blocks_per_tok(st), t = task / per_tok, b = task % per_tok;
    if (b < nq) {
        uint32_t h0 = (uint32_t)b * QH_BLOCK, h1 = h0 + QH_BLOCK < c->n_head ? h0 + QH_BLOCK : c->n_head;
        q_heads(st, t, h0, h1);
    } else {
        uint32_t h0 = (uint32_t)(b - nq) * QH_BLOCK;
        uint32_t h1 = h0 + QH_BLOCK < c->n_idx_head ? h0 + QH_BLOCK : c->n_idx_head;
        idx_q_heads(st, t, h0, h1);
    }
}

/* ---- compressor (serial state machine over the chunk) ------------------------------ */

static void compressor_run(v4f_session *s, const layer_rt *r, v4f_kv_layer *L, bool indexer,
                           const float *A, const float *B, uint32_t pos0, uint32_t n) {
    const v4f_config *c = &s->cfg;
    uint32_t ratio = r->ratio, D = indexer ? c->idx_head_dim : c->head_dim;
    bool overlap = ratio == 4;
    uint32_t coff = overlap ? 2 : 1, W = coff * D;
    float *kvs = indexer ? L->i_kv : L->c_kv, *scs = indexer ? L->i_sc : L->c_sc;
    const v4f_wt *ape_w = indexer ? r->idx_comp_ape : r->comp_ape;
    const v4f_quant_kernels *ape_k = v4f_quant_kernels_get(ape_w->type);
    float *ape = s->sc.ape_row;
    const float *normw = indexer ? r->idx_comp_norm : r->comp_norm;
    float *row = s->sc.pool_row;
    for (uint32_t t = 0; t < n; t++) {
        uint32_t p = pos0 + t;
        uint32_t slot = overlap ? ratio + p % ratio : p % ratio;
        memcpy(kvs + (uint64_t)slot * W, A + (uint64_t)t * W, W * sizeof(float));
        ape_k->dequant_row(v4f_wt_row(ape_w, 0, p % ratio), ape, W);
        for (uint32_t j = 0; j < W; j++) scs[(uint64_t)slot * W + j] = B[(uint64_t)t * W + j] + ape[j];
        if ((p + 1) % ratio != 0) continue;
        const float *vals[256], *scores[256];
        int nc = 0;
        V4F_ASSERT(coff * ratio <= 256);
        if (overlap) {
            for (uint32_t i = 0; i < ratio; i++, nc++) {
                vals[nc] = kvs + (uint64_t)i * W;
                scores[nc] = scs + (uint64_t)i * W;
            }
            for (uint32_t i = 0; i < ratio; i++, nc++) {
                vals[nc] = kvs + (uint64_t)(ratio + i) * W + D;
                scores[nc] = scs + (uint64_t)(ratio + i) * W + D;
            }
        } else {
            for (uint32_t i = 0; i < ratio; i++, nc++) {
                vals[nc] = kvs + (uint64_t)i * W;
                scores[nc] = scs + (uint64_t)i * W;
            }
        }
        v4f_cpu_compress_pool(vals, scores, nc, D, row);
        if (overlap) {
            memcpy(kvs, kvs + (uint64_t)ratio * W, (uint64_t)ratio * W * sizeof(float));
            memcpy(scs, scs + (uint64_t)ratio * W, (uint64_t)ratio * W * sizeof(float));
        }
        v4f_cpu_rmsnorm(row, normw, row, D, c->rms_eps);
        v4f_cpu_rope_tail(row, D, (int)c->n_rot, r->rope_freqs, p + 1 - ratio, false);
        uint32_t k = (p + 1) / ratio - 1;
        if (indexer) {
            v4f_cpu_hadamard(row, D);
            v4f_cpu_fp4_roundtrip(row, D);
            v4f_kv_idx_put(s->kv, L, k, row);
            L->n_idx = k + 1;
        } else {
            if (!s->dbg.no_kv_fp8) v4f_cpu_fp8_roundtrip(row, D - c->n_rot);
            v4f_kv_comp_put(s->kv, L, k, row);
            L->n_comp = k + 1;
        }
    }
}

/* ---- indexer top-k (parallel over tokens) -------------------------------------------- */

/* score[i] = sum_h w_h relu(q_h . k_i) for indexer rows [b0, b1) of token t */
static void indexer_score_rows(const stage *st, int64_t t, uint32_t b0, uint32_t b1, float *score,
                               int thread) {
    v4f_session *s = st->s;
    const v4f_config *c = &s->cfg;
    int64_t ihd = c->idx_head_dim, nih = c->n_idx_head;
    const float *q = s->sc.iq + t * nih * ihd;
    const float *w = s->sc.iw + t * nih;
    float *S = s->sc.keys[thread];    /* [IDX_BLOCK][nih] */
    float *rows = s->sc.krow[thread]; /* [IDX_BLOCK][ihd] (compact mode) */
    for (uint32_t r0 = b0; r0 < b1; r0 += IDX_BLOCK) {
        uint32_t nb = b1 - r0 < IDX_BLOCK ? b1 - r0 : IDX_BLOCK;
        const float *K = v4f_kv_idx_ptr(s->kv, st->kvl, r0);
        if (!K) {
            for (uint32_t i = 0; i < nb; i++) v4f_kv_idx_get(s->kv, st->kvl, r0 + i, rows + i * ihd);
            K = rows;
        }
        v4f_cpu_gemm_f32(q, nih, K, ihd, nb, ihd, S, nih); /* S[i][h] = q_h . k_i */
        for (uint32_t i = 0; i < nb; i++) {
            float acc = 0;
            for (int64_t h = 0; h < nih; h++) {
                float v = S[i * nih + h];
                if (v > 0) acc += w[h] * v;
            }
            score[r0 + i] = acc;
        }
    }
}

/* prefill: one task per token (score every visible row, then top-k) */
static void st_indexer(void *ctx, int64_t t, int thread) {
    stage *st = ctx;
    v4f_session *s = st->s;
    const v4f_config *c = &s->cfg;
    uint32_t n_vis = (st->pos0 + (uint32_t)t + 1) / st->r->ratio;
    if (n_vis <= c->idx_topk) {
        s->sc.insel[t] = -1;
        return;
    }
    float *score = s->sc.ksc[thread];
    indexer_score_rows(st, t, 0, n_vis, score, thread);
    int32_t *sel = s->sc.isel + t * (int64_t)c->idx_topk;
    s->sc.insel[t] = (int32_t)v4f_cpu_topk(score, n_vis, c->idx_topk, sel);
}

#define IDX_ROWS_PER_TASK (4 * IDX_BLOCK)

/* few tokens (decode): the rows of token st->idx_t split over tasks, into ksc[0] */
static void st_indexer_rows(void *ctx, int64_t task, int thread) {
    stage *st = ctx;
    uint32_t n_vis = (st->pos0 + st->idx_t + 1) / st->r->ratio;
    uint32_t b0 = (uint32_t)task * IDX_ROWS_PER_TASK;
    uint32_t b1 = b0 + IDX_ROWS_PER_TASK < n_vis ? b0 + IDX_ROWS_PER_TASK : n_vis;
    indexer_score_rows(st, st->idx_t, b0, b1, st->s->sc.ksc[0], thread);
}

static void run_indexer(v4f_session *s, stage *st) {
    const v4f_config *c = &s->cfg;
    if (st->n >= 4 && (int)st->n >= v4f_pool_size(s->pool)) {
        par_tokens(s, st, st_indexer); /* prefill: one task per token */
        return;
    }
    for (uint32_t t = 0; t < st->n; t++) {
        uint32_t n_vis = (st->pos0 + t + 1) / st->r->ratio;
        if (n_vis <= c->idx_topk) {
            s->sc.insel[t] = -1;
            continue;
        }
        st->idx_t = t;
        v4f_pool_run(s->pool, (n_vis + IDX_ROWS_PER_TASK - 1) / IDX_ROWS_PER_TASK, st_indexer_rows, st);
        s->sc.insel[t] = (int32_t)v4f_cpu_topk(s->sc.ksc[0], n_vis, c->idx_topk,
                                               s->sc.isel + (int64_t)t * c->idx_topk);
    }
}

/* ---- attention (parallel over token x head group) ------------------------------------ */

/* Gathered key rows of chunk token t: the raw window (older rows from the
 * ring, chunk rows from scratch), then for ratio-4 layers the compressed rows
 * (the indexer's selection or all visible). Key k_i goes to keys[i] for i in
 * [i0, i1) of that list (the whole list: 0, UINT32_MAX). Returns the list
 * length. Other ratios attend every visible compressed row: those are read
 * in place as a second key segment (comp_rows_f32). */
static uint32_t gather_keys(const stage *st, int64_t t, float *keys, uint32_t i0, uint32_t i1) {
    v4f_session *s = st->s;
    const v4f_config *c = &s->cfg;
    int64_t hd = c->head_dim;
    uint32_t p = st->pos0 + (uint32_t)t;
    uint32_t lo = p + 1 > c->n_swa ? p + 1 - c->n_swa : 0;
    uint32_t n_raw = p + 1 - lo, n_sel = 0;
    const int32_t *sel = NULL;
    if (st->r->ratio == 4) { /* other ratios: the all-visible rows are segment B */
        n_sel = (p + 1) / 4;
        if (s->sc.insel[t] >= 0) {
            sel = s->sc.isel + t * (int64_t)c->idx_topk;
            n_sel = (uint32_t)s->sc.insel[t];
        }
    }
    uint32_t nk = n_raw + n_sel;
    if (i1 > nk) i1 = nk;
    for (uint32_t i = i0; i < i1; i++) {
        if (i < n_raw) {
            uint32_t q = lo + i;
            const float *src = q >= st->pos0 ? s->sc.kv + (int64_t)(q - st->pos0) * hd
                                              : st->kvl->raw + (int64_t)(q % c->n_swa) * hd;
            memcpy(keys + (int64_t)i * hd, src, (size_t)hd * sizeof(float));
        } else {
            uint32_t row = sel ? (uint32_t)sel[i - n_raw] : i - n_raw;
            v4f_kv_comp_get(s->kv, st->kvl, row, keys + (int64_t)i * hd);
        }
    }
    return nk;
}

#define GATHER_ROWS 64

/* decode: fill the shared key buffer in parallel (row blocks) */
static void st_gather_shared(void *ctx, int64_t task, int thread) {
    stage *st = ctx;
    gather_keys(st, 0, st->s->sc.keys[0], (uint32_t)task * GATHER_ROWS,
                (uint32_t)(task + 1) * GATHER_ROWS);
}

static void st_attn(void *ctx, int64_t task, int thread) {
    stage *st = ctx;
    v4f_session *s = st->s;
    const v4f_config *c = &s->cfg;
    int64_t t = task / st->hgroups, g = task % st->hgroups;
    int64_t hd = c->head_dim, nh = c->n_head;
    uint32_t p = st->pos0 + (uint32_t)t;
    const float *keys;
    int64_t nk;
    if (st->shared_keys) {
        keys = s->sc.keys[0];
        nk = st->shared_nk;
    } else {
        keys = s->sc.keys[thread];
        nk = gather_keys(st, t, s->sc.keys[thread], 0, UINT32_MAX);
    }
    int64_t per = (nh + st->hgroups - 1) / st->hgroups;
    int64_t h0 = g * per, h1 = h0 + per > nh ? nh : h0 + per;
    if (h0 >= h1) return;
    const float *q = s->sc.q + t * nh * hd;
    float *o = s->sc.o + t * nh * hd;
    const float *sinks = st->r->sinks;
    float no_sink[1024];
    if (s->dbg.no_sink) { /* debug ablation: sink logit at -inf */
        V4F_ASSERT(nh <= 1024);
        for (int64_t h = 0; h < nh; h++) no_sink[h] = -INFINITY;
        sinks = no_sink;
    }
    const float *kb = NULL;
    int64_t nkb = 0;
    if (st->r->ratio && st->r->ratio != 4) {
        kb = st->comp_rows;
        nkb = (p + 1) / st->r->ratio;
    }
    v4f_cpu_attn_sink2(q, h0, h1, hd, keys, nk, kb, nkb, sinks, (float)(1.0 / sqrt((double)hd)), o,
                       s->sc.ksc[thread]);
    float cs[V4F_ROPE_MAX_ROT];
    V4F_ASSERT(c->n_rot <= V4F_ROPE_MAX_ROT);
    v4f_cpu_rope_cs(st->r->rope_freqs, (int)c->n_rot, p, cs);
    for (int64_t h = h0; h < h1; h++) v4f_cpu_rope_tail_cs(o + h * hd, hd, (int)c->n_rot, cs, true);
}

#define DEC_ROWS 64

static void st_decode_comp(void *ctx, int64_t task, int thread) {
    stage *st = ctx;
    v4f_session *s = st->s;
    int64_t hd = s->cfg.head_dim;
    uint32_t i1 = (uint32_t)(task + 1) * DEC_ROWS;
    if (i1 > st->kvl->n_comp) i1 = st->kvl->n_comp;
    for (uint32_t i = (uint32_t)task * DEC_ROWS; i < i1; i++)
        v4f_kv_comp_get(s->kv, st->kvl, i, s->sc.comp_dec + i * hd);
}

/* All compressed rows of a ratio != 4 layer as float32 rows: in place (REF
 * storage) or decoded once per layer call into comp_dec (compact). */
static const float *comp_rows_f32(v4f_session *s, stage *st) {
    const float *p = v4f_kv_comp_ptr(s->kv, st->kvl, 0);
    if (p) return p;
    uint32_t n = st->kvl->n_comp;
    if (n <= DEC_ROWS) st_decode_comp(st, 0, 0);
    else v4f_pool_run(s->pool, (n + DEC_ROWS - 1) / DEC_ROWS, st_decode_comp, st);
    return s->sc.comp_dec;
}

/* ---- attention sublayer --------------------------------------------------------------- */

static void attention_block(v4f_session *s, stage *st) {
    const v4f_config *c = &s->cfg;
    const layer_rt *r = st->r;
    v4f_kv_layer *L = st->kvl;
    uint32_t n = st->n;
    int64_t d = c->n_embd, hd = c->head_dim, nq = (int64_t)c->n_head * hd;
    scratch *x = &s->sc;
    prof_mark(s, PH_EMBED);
    hc_pre(s, st, &r->hc_attn_fn, r->hc_attn_scale, r->hc_attn_base, r->attn_norm);
    prof_mark(s, PH_HC);
    /* every projection of xn in one parallel region, then those of qr */
    int64_t W = (r->ratio == 4 ? 2 : 1) * hd, iW = 2 * (int64_t)c->idx_head_dim;
    v4f_cpu_mm mx[7] = {{&r->q_a, x->xn, d, n, x->qr, c->q_lora_rank},
                        {&r->kv, x->xn, d, n, x->kv, hd}};
    int nmx = 2;
    if (r->ratio) {
        mx[nmx++] = (v4f_cpu_mm){&r->comp_kv, x->xn, d, n, x->ckv, W};
        mx[nmx++] = (v4f_cpu_mm){&r->comp_gate, x->xn, d, n, x->cgate, W};
    }
    if (r->ratio == 4) {
        mx[nmx++] = (v4f_cpu_mm){&r->idx_comp_kv, x->xn, d, n, x->ikv, iW};
        mx[nmx++] = (v4f_cpu_mm){&r->idx_comp_gate, x->xn, d, n, x->igate, iW};
        mx[nmx++] = (v4f_cpu_mm){&r->idx_proj, x->xn, d, n, x->iw, c->n_idx_head};
    }
    v4f_cpu_matmul_multi(&s->cpu, mx, nmx);
    par_tokens(s, st, st_qkv_norm); /* qr is normalised in place: q_b and the indexer use it */
    v4f_cpu_mm mq[2] = {{&r->q_b, x->qr, c->q_lora_rank, n, x->q, nq},
                        {&r->idx_q_b, x->qr, c->q_lora_rank, n, x->iq,
                         (int64_t)c->n_idx_head * c->idx_head_dim}};
    v4f_cpu_matmul_multi(&s->cpu, mq, r->ratio == 4 ? 2 : 1);
    prof_mark(s, PH_ATTN_PROJ);
    /* the indexer queries do not depend on the compressors: on few tokens
     * they share the q heads' region */
    bool q_blocks = n < 4;
    if (q_blocks) {
        v4f_pool_run(s->pool, (int64_t)n * q_blocks_per_tok(st), st_q_heads_blocks, st);
    } else {
        par_tokens(s, st, st_q_heads);
    }
    prof_mark(s, PH_Q_ROPE);
    if (r->ratio) compressor_run(s, r, L, false, x->ckv, x->cgate, st->pos0, n);
    if (r->ratio == 4) {
        compressor_run(s, r, L, true, x->ikv, x->igate, st->pos0, n);
        if (!q_blocks) par_tokens(s, st, st_idx_q);
        run_indexer(s, st);
    }
    if (r->ratio && r->ratio != 4) st->comp_rows = comp_rows_f32(s, st);
    prof_mark(s, PH_COMP);
    int T = v4f_pool_size(s->pool);
    st->hgroups = (int)n >= T ? 1 : (T + (int)n - 1) / (int)n;
    /* small decode steps: not worth waking the pool */
    double macs = (double)n * c->n_head * hd * 2.0 * (c->n_swa + (r->ratio ? s->max_keys - c->n_swa : 0));
    if (n == 1 && macs < V4F_CPU_INLINE_MACS) st->hgroups = 1;
    if (st->hgroups > (int)c->n_head) st->hgroups = (int)c->n_head;
    st->shared_keys = n == 1 && st->hgroups > 1;
    if (st->shared_keys) {
        /* decode over several head groups: gather (decode) the keys once */
        st->shared_nk = gather_keys(st, 0, x->keys[0], 0, 0);
        v4f_pool_run(s->pool, (st->shared_nk + GATHER_ROWS - 1) / GATHER_ROWS, st_gather_shared, st);
    }
    v4f_pool_run(s->pool, (int64_t)n * st->hgroups, st_attn, st);
    /* trace the compressed rows a ratio-4 layer attended */
    if (s->has_trace && s->trace.indexer && r->ratio == 4) {
        for (uint32_t t = 0; t < n; t++) {
            int32_t *sel = x->isel + (int64_t)t * c->idx_topk;
            int32_t ns = x->insel[t];
            if (ns < 0) {
                ns = (int32_t)((st->pos0 + t + 1) / 4);
                for (int32_t i = 0; i < ns; i++) sel[i] = i;
            }
            s->trace.indexer(s->trace.ud, st->layer, st->pos0 + t, sel, (uint32_t)ns);
        }
    }
    /* push the chunk's raw rows into the ring */
    uint32_t first = n > c->n_swa ? n - c->n_swa : 0;
    for (uint32_t t = first; t < n; t++)
        memcpy(L->raw + (int64_t)((st->pos0 + t) % c->n_swa) * hd, x->kv + (int64_t)t * hd,
               (size_t)hd * sizeof(float));
    prof_mark(s, PH_ATTN);
    /* grouped low-rank output projection */
    int64_t gin = nq / c->o_groups, orank = c->o_lora_rank;
    v4f_cpu_mat sub[MAX_GROUPS];
    v4f_cpu_mm mo[MAX_GROUPS];
    for (uint32_t g = 0; g < c->o_groups; g++) {
        sub[g] = v4f_cpu_mat_rows(&r->out_a, g * orank, orank);
        mo[g] = (v4f_cpu_mm){&sub[g], x->o + g * gin, nq, n, x->low + g * orank,
                             (int64_t)c->o_groups * orank};
    }
    v4f_cpu_matmul_multi(&s->cpu, mo, (int)c->o_groups);
    v4f_cpu_matmul(&s->cpu, &r->out_b, x->low, (int64_t)c->o_groups * orank, n, x->out, d);
    prof_mark(s, PH_ATTN_OUT);
    hc_post(s, st);
    prof_mark(s, PH_HC);
}

/* ---- MoE sublayer ----------------------------------------------------------------------- */

/* out[t] = sum_j y[inv[t*k+j]] (selection order) + shared[t] */
static void st_ffn_sum(void *ctx, int64_t t, int thread) {
    stage *st = ctx;
    v4f_session *s = st->s;
    const v4f_config *c = &s->cfg;
    int64_t d = c->n_embd, k = c->n_expert_used;
    float *out = s->sc.out + t * d;
    const float *ysh = s->sc.ysh + t * d;
    const float *rows[64];
    for (int64_t j = 0; j < k; j++) rows[j] = s->sc.xg + (int64_t)s->sc.einv[t * k + j] * d;
    /* per element ((0 + r0) + r1) + ... + shared, row by row (vectorizes) */
    for (int64_t i = 0; i < d; i++) out[i] = 0.0f;
    for (int64_t j = 0; j < k; j++) {
        const float *restrict r = rows[j];
        float *restrict o = out;
        for (int64_t i = 0; i < d; i++) o[i] += r[i];
    }
    for (int64_t i = 0; i < d; i++) out[i] += ysh[i];
}

/* gather: xg[i] = xn[token of elist[i]] for a block of 16 rows */
static void st_gather(void *ctx, int64_t task, int thread) {
    stage *st = ctx;
    v4f_session *s = st->s;
    int64_t d = s->cfg.n_embd, k = s->cfg.n_expert_used, nk = (int64_t)st->n * k;
    for (int64_t i = task * 16; i < nk && i < task * 16 + 16; i++)
        memcpy(s->sc.xg + i * d, s->sc.xn + (int64_t)(s->sc.elist[i] / k) * d,
               (size_t)d * sizeof(float));
}

/* routed SwiGLU (clamped, times the router weight) in place on g, rows
 * [16 task, 16 task + 16); the last task also does the shared expert. */
static void st_swiglu(void *ctx, int64_t task, int thread) {
    stage *st = ctx;
    v4f_session *s = st->s;
    const v4f_config *c = &s->cfg;
    int64_t nff = c->n_ff_exp, k = c->n_expert_used, nk = (int64_t)st->n * k;
    for (int64_t i = task * 16; i < nk && i < task * 16 + 16; i++)
        v4f_cpu_swiglu(s->sc.g + i * nff, s->sc.u + i * nff, nff, st->r->swiglu_limit,
                       s->sc.ew[s->sc.elist[i]], s->sc.g + i * nff);
    if (task == (nk + 15) / 16 - 1) {
        /* shared expert: no clamp (the official MoE builds it without swiglu_limit) */
        int64_t nsh = st->r->gate_sh.n_out;
        v4f_cpu_swiglu(s->sc.sg, s->sc.su, (int64_t)st->n * nsh, 0.0f, 1.0f, s->sc.sg);
    }
}

/* decode (few rows): the same SwiGLU split into SWIGLU_CHUNK-element pieces
 * so all threads share it (element-wise: results are identical). Tasks
 * [0, nk * per_row) are routed rows, the rest the shared expert. */
#define SWIGLU_CHUNK 512

static void st_swiglu_chunks(void *ctx, int64_t task, int thread) {
    stage *st = ctx;
    v4f_session *s = st->s;
    const v4f_config *c = &s->cfg;
    int64_t nff = c->n_ff_exp, nk = (int64_t)st->n * c->n_expert_used;
    int64_t per_row = (nff + SWIGLU_CHUNK - 1) / SWIGLU_CHUNK;
    if (task < nk * per_row) {
        int64_t i = task / per_row, e0 = task % per_row * SWIGLU_CHUNK;
        int64_t len = nff - e0 < SWIGLU_CHUNK ? nff - e0 : SWIGLU_CHUNK;
        v4f_cpu_swiglu(s->sc.g + i * nff + e0, s->sc.u + i * nff + e0, len, st->r->swiglu_limit,
                       s->sc.ew[s->sc.elist[i]], s->sc.g + i * nff + e0);
        return;
    }
    int64_t tot = (int64_t)st->n * st->r->gate_sh.n_out, e0 = (task - nk * per_row) * SWIGLU_CHUNK;
    int64_t len = tot - e0 < SWIGLU_CHUNK ? tot - e0 : SWIGLU_CHUNK;
    v4f_cpu_swiglu(s->sc.sg + e0, s->sc.su + e0, len, 0.0f, 1.0f, s->sc.sg + e0);
}

static void route_tokens(v4f_session *s, stage *st) {
    const v4f_config *c = &s->cfg;
    const layer_rt *r = st->r;
    scratch *x = &s->sc;
    int k = (int)c->n_expert_used;
    for (uint32_t t = 0; t < st->n; t++) {
        const int32_t *hash = NULL;
        if (r->hash) hash = r->tid2eid + (int64_t)st->tokens[t] * k;
        v4f_cpu_router(x->rlog + (int64_t)t * c->n_expert, r->probs_b, c->n_expert, k, hash,
                       c->expert_weights_norm, c->expert_weights_scale, x->eids + (int64_t)t * k,
                       x->ew + (int64_t)t * k);
        if (s->has_trace && s->trace.experts)
            s->trace.experts(s->trace.ud, st->layer, st->pos0 + t, x->eids + (int64_t)t * k,
                             (uint32_t)k);
    }
    /* bucket (token, slot) pairs by expert (counting sort, stable). After
     * this, expert e owns elist[(e ? cnt[e-1] : 0) .. cnt[e]) and einv maps
     * a pair back to its place in elist. */
    int32_t *cnt = x->ecount;
    memset(cnt, 0, ((size_t)c->n_expert + 1) * sizeof *cnt);
    int64_t nk = (int64_t)st->n * k;
    for (int64_t i = 0; i < nk; i++) {
        int32_t e = x->eids[i];
        V4F_ASSERT(e >= 0 && (uint32_t)e < c->n_expert);
        cnt[e + 1]++;
    }
    for (uint32_t e = 0; e < c->n_expert; e++) cnt[e + 1] += cnt[e];
    for (int64_t i = 0; i < nk; i++) {
        int32_t at = cnt[x->eids[i]]++;
        x->elist[at] = (int32_t)i;
        x->einv[i] = at;
    }
}

static void ffn_block(v4f_session *s, stage *st) {
    const v4f_config *c = &s->cfg;
    const layer_rt *r = st->r;
    scratch *x = &s->sc;
    uint32_t n = st->n;
    int64_t d = c->n_embd, nff = c->n_ff_exp, k = c->n_expert_used, nk = (int64_t)n * k;
    int64_t nsh = r->gate_sh.n_out;
    hc_pre(s, st, &r->hc_ffn_fn, r->hc_ffn_scale, r->hc_ffn_base, r->ffn_norm);
    prof_mark(s, PH_HC);
    v4f_cpu_matmul(&s->cpu, &r->gate_inp, x->xn, d, n, x->rlog, c->n_expert);
    route_tokens(s, st);
    int64_t n_blk = (nk + 15) / 16;
    if (nk <= 16) st_gather(st, 0, 0);
    else v4f_pool_run(s->pool, n_blk, st_gather, st);
    prof_mark(s, PH_ROUTER);
    /* gate and up of every active expert + the shared expert: one region */
    v4f_cpu_mm *mm = x->mm;
    v4f_cpu_mat *mats = x->mats;
    int nm = 0;
    for (uint32_t e = 0; e < c->n_expert; e++) {
        int32_t b = e == 0 ? 0 : x->ecount[e - 1], m = x->ecount[e] - b;
        if (m <= 0) continue;
        mats[3 * e] = expert_mat(r->gate_exps, e);
        mats[3 * e + 1] = expert_mat(r->up_exps, e);
        mats[3 * e + 2] = expert_mat(r->down_exps, e);
        mm[nm++] = (v4f_cpu_mm){&mats[3 * e], x->xg + (int64_t)b * d, d, m, x->g + (int64_t)b * nff, nff};
        mm[nm++] = (v4f_cpu_mm){&mats[3 * e + 1], x->xg + (int64_t)b * d, d, m, x->u + (int64_t)b * nff, nff};
    }
    mm[nm++] = (v4f_cpu_mm){&r->gate_sh, x->xn, d, n, x->sg, nsh};
    mm[nm++] = (v4f_cpu_mm){&r->up_sh, x->xn, d, n, x->su, nsh};
    v4f_cpu_matmul_multi(&s->cpu, mm, nm);
    prof_mark(s, PH_EXP_GU);
    if (n_blk <= 1) {
        int64_t per_row = (nff + SWIGLU_CHUNK - 1) / SWIGLU_CHUNK;
        v4f_pool_run(s->pool, nk * per_row + ((int64_t)n * nsh + SWIGLU_CHUNK - 1) / SWIGLU_CHUNK,
                     st_swiglu_chunks, st);
    } else {
        v4f_pool_run(s->pool, n_blk, st_swiglu, st);
    }
    prof_mark(s, PH_SWIGLU);
    /* down projections: routed rows land in xg (free now), shared in ysh */
    nm = 0;
    for (uint32_t e = 0; e < c->n_expert; e++) {
        int32_t b = e == 0 ? 0 : x->ecount[e - 1], m = x->ecount[e] - b;
        if (m <= 0) continue;
        mm[nm++] = (v4f_cpu_mm){&mats[3 * e + 2], x->g + (int64_t)b * nff, nff, m, x->xg + (int64_t)b * d, d};
    }
    mm[nm++] = (v4f_cpu_mm){&r->down_sh, x->sg, nsh, n, x->ysh, d};
    v4f_cpu_matmul_multi(&s->cpu, mm, nm);
    prof_mark(s, PH_EXP_DOWN);
    par_tokens(s, st, st_ffn_sum);
    prof_mark(s, PH_FFN_SUM);
    hc_post(s, st);
    prof_mark(s, PH_HC);
}

/* ---- layer / head / eval ------------------------------------------------------------------ */

/* One layer over the chunk. For the last layer with out != V4F_OUT_ROWS_ALL
 * the FFN runs for the last row only (moved to row 0 of X; returns 0) or
 * not at all: the attention has written the chunk's KV rows, and nothing
 * else reads the other rows (llama.cpp skips rows without outputs the same
 * way). Returns the row of X that holds the last token. */
static uint32_t layer_forward(v4f_session *s, uint32_t layer, v4f_kv_layer *kvl, const int32_t *tokens,
                              uint32_t pos0, uint32_t n, v4f_out_rows out) {
    stage st = {0};
    st.s = s;
    st.r = &s->lr[layer];
    st.kvl = kvl;
    st.layer = layer;
    st.pos0 = pos0;
    st.n = n;
    st.tokens = tokens;
    attention_block(s, &st);
    if (layer + 1 == s->cfg.n_layer && out != V4F_OUT_ROWS_ALL && n > 1 && !s->has_trace) {
        if (out == V4F_OUT_ROWS_NONE) return n - 1;
        int64_t HD = (int64_t)s->cfg.n_hc * s->cfg.n_embd;
        memcpy(s->sc.X, s->sc.X + (int64_t)(n - 1) * HD, (size_t)HD * sizeof(float));
        st.n = 1;
        st.pos0 = pos0 + n - 1;
        st.tokens = tokens + n - 1;
        ffn_block(s, &st);
        return 0;
    }
    ffn_block(s, &st);
    if (s->has_trace && s->trace.hc_after_layer) {
        int64_t HD = (int64_t)s->cfg.n_hc * s->cfg.n_embd;
        s->trace.hc_after_layer(s->trace.ud, layer, pos0 + n - 1, s->sc.X + (int64_t)(n - 1) * HD);
    }
    return n - 1;
}

typedef struct head_stage {
    v4f_session *s;
    const float *base, *scale, *norm;
} head_stage;

static void st_head(void *ctx, int64_t t, int thread) {
    head_stage *hs = ctx;
    v4f_session *s = hs->s;
    const v4f_config *c = &s->cfg;
    int H = (int)c->n_hc;
    int64_t d = c->n_embd, HD = H * d, mixn = v4f_config_hc_mix(c);
    const float *X = s->sc.X + t * HD;
    float *mix = s->sc.mix + t * mixn;
    float r = hc_flat_rscale(X, HD, c->rms_eps);
    float w[64];
    for (int h = 0; h < H; h++) mix[h] *= r;
    v4f_cpu_hc_head_weights(mix, hs->scale[0], hs->base, H, c->hc_eps, w);
    float *y = s->sc.a + t * d;
    v4f_cpu_hc_weighted_sum(X, w, H, d, y);
    v4f_cpu_rmsnorm(y, hs->norm, s->sc.xn + t * d, d, c->rms_eps);
}

/* logits for rows [first, n) of the chunk into out (ldy = vocab) */
static void head_forward(v4f_session *s, const v4f_cpu_mat *hc_fn, const float *base,
                         const float *scale, const float *norm, uint32_t first, uint32_t n,
                         float *out) {
    const v4f_config *c = &s->cfg;
    int64_t HD = (int64_t)c->n_hc * c->n_embd, mixn = v4f_config_hc_mix(c);
    uint32_t m = n - first;
    v4f_cpu_matmul(&s->cpu, hc_fn, s->sc.X + (int64_t)first * HD, HD, m,
                   s->sc.mix + (int64_t)first * mixn, mixn);
    head_stage hs = {s, base, scale, norm};
    /* run over rows first..n-1 */
    float *X0 = s->sc.X, *mix0 = s->sc.mix, *a0 = s->sc.a, *xn0 = s->sc.xn;
    s->sc.X += (int64_t)first * HD;
    s->sc.mix += (int64_t)first * mixn;
    s->sc.a += (int64_t)first * c->n_embd;
    s->sc.xn += (int64_t)first * c->n_embd;
    v4f_pool_run(s->pool, m, st_head, &hs);
    v4f_cpu_matmul(&s->cpu, &s->output, s->sc.xn, c->n_embd, m, out, c->n_vocab);
    s->sc.X = X0;
    s->sc.mix = mix0;
    s->sc.a = a0;
    s->sc.xn = xn0;
}

static void embed_tokens(v4f_session *s, const int32_t *tokens, uint32_t n) {
    const v4f_config *c = &s->cfg;
    const v4f_wt *E = &s->m->token_embd;
    int64_t d = c->n_embd, HD = (int64_t)c->n_hc * d;
    const v4f_quant_kernels *k = v4f_quant_kernels_get(E->type);
    for (uint32_t t = 0; t < n; t++) {
        float *X = s->sc.X + (int64_t)t * HD;
        k->dequant_row(v4f_wt_row(E, 0, (uint64_t)tokens[t]), X, d);
        for (uint32_t h = 1; h < c->n_hc; h++) memcpy(X + h * d, X, (size_t)d * sizeof(float));
    }
}

/* ---- speculative decoding with MTP drafts (opts.mtp_draft, CUDA) --------------------------- */

/* Pending rows whose ring rows were overwritten since (more than cap
 * positions on, across a rewind, or by a pipelined step past a stop) are no
 * longer pending. */
static void spec_trim(v4f_session *s) {
    while (s->spec.n && s->spec.slot[s->spec.p0 % s->spec.cap] != s->spec.p0) {
        s->spec.p0++;
        s->spec.n--;
    }
}

/* Positions q..q+k-1, just evaluated (their HC states in the GPU's ring),
 * join the pending ones: after them when they end at q (the oldest dropped
 * beyond cap: the MTP block attends a window only), else in their place.
 * The token paired with each row but the last (the input of the position
 * after it) is already in tok. */
static void spec_mark(v4f_session *s, uint32_t q, uint32_t k) {
    const uint32_t cap = s->spec.cap;
    if (s->spec.n && s->spec.p0 + s->spec.n != q) s->spec.n = 0;
    if (s->spec.n == 0) s->spec.p0 = q;
    s->spec.n = q + k - s->spec.p0;
    for (uint32_t j = k > cap ? k - cap : 0; j < k; j++) s->spec.slot[(q + j) % cap] = q + j;
    spec_trim(s);
}

/* spec_mark with the positions' input tokens (the first is also the token
 * paired with the row before them). */
static void spec_added(v4f_session *s, uint32_t q, const int32_t *tokens, uint32_t k) {
    const uint32_t cap = s->spec.cap;
    if (s->spec.n && s->spec.p0 + s->spec.n == q) s->spec.tok[(q - 1) % cap] = tokens[0];
    for (uint32_t j = 0; j + 1 < k; j++) s->spec.tok[(q + j) % cap] = tokens[j + 1];
    spec_mark(s, q, k);
}

/* Plain greedy decoding while the gate pauses drafts: each pick pairs with
 * the row before it (the decode graph writes the rows to the ring). */
typedef struct plain_rec {
    v4f_session *s;
    uint32_t p, j; /* first position, picks so far */
    v4f_pick_fn fn;
    void *ud;
    bool refused;
} plain_rec;

static bool plain_pick(void *ud, int32_t t) {
    plain_rec *r = ud;
    r->s->spec.tok[(r->p + r->j++) % r->s->spec.cap] = t;
    if (r->fn && !r->fn(r->ud, t)) return !(r->refused = true);
    return true;
}

/* The draft of the token after position p: a hook's override (-1: the MTP
 * block's), none while the gate pauses. */
static int32_t spec_over(v4f_session *s, uint32_t p, uint32_t pause) {
    int32_t over = !pause && s->spec.hook ? s->spec.hook(s->spec.hook_ud, p + 1) : -1;
    return over < (int32_t)s->cfg.n_vocab ? over : -1;
}

/* One token `a` at the session position without a draft (logits of it into
 * `logits`); its HC state joins the pending rows. pause: the gate paused
 * drafting (counted). */
static v4f_status spec_one(v4f_session *s, int32_t a, bool pause, float *logits, uint32_t *n_eval, v4f_err *err) {
    const uint32_t p = s->pos;
    v4f_status st = v4f_gpu_eval(s->gpu, &a, 1, p, logits, 0, NULL, 1, NULL, &s->dbg, err);
    if (st) {
        s->spec.n = 0;
        return st;
    }
    s->pos = p + 1;
    spec_added(s, p, &a, 1);
    ++*n_eval;
    if (pause) {
        v4f_spec_gate_plain(&s->spec.gate, 1);
        s->spec.st.paused++;
    }
    return V4F_OK;
}

/* A drafting step at the session position p: the MTP block takes the
 * pending rows and drafts (or `over`), [a, draft] is evaluated at p;
 * got = {draft, greedy pick after a, greedy pick after the draft}. */
static v4f_status spec_draft(v4f_session *s, int32_t a, int32_t suppress, int32_t over, int32_t got[3],
                             v4f_err *err) {
    const uint32_t p = s->pos, pn = s->spec.n, pp0 = s->spec.p0, cap = s->spec.cap;
    for (uint32_t i = 0; i + 1 < pn; i++) s->spec.ptok[i] = s->spec.tok[(pp0 + i) % cap];
    if (pn) s->spec.ptok[pn - 1] = a;
    v4f_status st = v4f_gpu_spec_step(s->gpu, s->spec.ptok, pn, pp0, a, p, suppress, over, got, err);
    s->spec.n = 0; /* the MTP block took them (or the ring is in doubt after an error) */
    if (st) return st;
    if (pn) s->mtp_pos = pp0 + pn;
    s->pos = p + 2;
    const int32_t in[2] = {a, got[0]};
    spec_added(s, p, in, 2);
    s->spec.st.steps++;
    s->spec.st.drafted++;
    return V4F_OK;
}

/* After a drafting step at p whose first pick was `pick`: a kept draft
 * (pick == draft) counts two evaluated tokens and is reported to fn (a
 * refusal rewinds it: *stop); a refused one is rewound. */
static v4f_status spec_settle(v4f_session *s, uint32_t p, int32_t draft, int32_t pick, v4f_pick_fn fn, void *ud,
                              uint32_t *n_eval, int32_t *next, bool *stop, v4f_err *err) {
    v4f_spec_gate_step(&s->spec.gate, pick == draft);
    *stop = false;
    if (pick != draft) {
        ++*n_eval;
        return v4f_session_rewind(s, p + 1, err);
    }
    s->spec.st.accepted++;
    *n_eval += 2;
    *next = draft;
    if (fn && !fn(ud, draft)) { /* the draft was picked and refused: not evaluated after all */
        *stop = true;
        --*n_eval;
        return v4f_session_rewind(s, p + 1, err);
    }
    return V4F_OK;
}

/* v4f_session_decode_greedy with drafts (forward.h); the caller checked
 * the arguments and the context room for max_eval tokens. */
static v4f_status spec_greedy(v4f_session *s, int32_t token, uint32_t max_eval, int32_t suppress, v4f_pick_fn fn,
                              void *ud, float *logits, uint32_t *n_eval, int32_t *next, v4f_err *err) {
    const uint32_t cap = s->spec.cap;
    int last_row = -1; /* the verify row holding the last logits (-1: `logits` has them) */
    bool graph = true;  /* plain pipelined decoding is available */
    v4f_status st = V4F_OK;
    for (int32_t a = token;;) {
        const uint32_t p = s->pos;
        if (s->spec.n && s->spec.p0 + s->spec.n != p) s->spec.n = 0;
        uint32_t pause = v4f_spec_gate_pause(&s->spec.gate);
        if (pause > max_eval - *n_eval) pause = max_eval - *n_eval;
        int32_t g;
        if (pause && graph) { /* drafting paused: plain greedy decoding, pipelined */
            if (s->spec.n) s->spec.tok[(p - 1) % cap] = a;
            plain_rec r = {s, p, 0, fn, ud, false};
            uint32_t ne = 0;
            st = v4f_gpu_decode_greedy(s->gpu, a, p, pause, suppress, plain_pick, &r, logits, &ne, &g, err);
            if (st == V4F_STATUS_UNSUPPORTED && ne == 0) { /* no decode graph: token by token */
                graph = false;
                st = V4F_OK;
                continue;
            }
            s->pos = p + ne;
            *n_eval += ne;
            spec_mark(s, p, ne);
            if (r.refused) { /* a step queued past the stop wrote the ring row of position p + ne */
                s->spec.slot[(p + ne) % cap] = UINT32_MAX;
                spec_trim(s);
            }
            v4f_spec_gate_plain(&s->spec.gate, ne);
            s->spec.st.paused += ne;
            last_row = -1;
            if (st) {
                s->spec.n = 0;
                break;
            }
            *next = g; /* picked after the batch's last token, not reported yet */
            if (r.refused || *n_eval >= max_eval || (fn && !fn(ud, g))) break;
            a = g;
            continue;
        }
        const int32_t over = spec_over(s, p, pause);
        if (pause || (s->spec.n == 0 && over < 0) || max_eval - *n_eval < 2) { /* no draft: one token */
            if ((st = spec_one(s, a, pause, logits, n_eval, err))) break;
            last_row = -1;
            g = v4f_argmax_f32_except(logits, s->cfg.n_vocab, suppress);
        } else {
            int32_t got[3];
            bool stop;
            if ((st = spec_draft(s, a, suppress, over, got, err))) break;
            last_row = 0;
            st = spec_settle(s, p, got[0], got[1], fn, ud, n_eval, next, &stop, err);
            if (st || stop) break;
            g = got[1];
            if (g == got[0]) {
                g = got[2];
                last_row = 1;
            }
        }
        *next = g;
        if (*n_eval >= max_eval || (fn && !fn(ud, g))) break;
        a = g;
    }
    if (last_row >= 0) {
        v4f_status st2 = v4f_gpu_logits_row(s->gpu, (uint32_t)last_row, logits, st ? NULL : err);
        if (st == V4F_OK) st = st2;
    }
    return st;
}

v4f_status v4f_session_eval(v4f_session *s, const int32_t *tokens, uint32_t n, float *logits,
                            unsigned flags, float *hc_out, v4f_err *err) {
    const v4f_config *c = &s->cfg;
    if (n == 0) return V4F_OK;
    if ((uint64_t)s->pos + n > s->opts.n_ctx)
        return v4f_err_set(err, V4F_STATUS_RANGE, "context full: %u + %u tokens > ctx %u", s->pos,
                           n, s->opts.n_ctx);
    for (uint32_t i = 0; i < n; i++)
        if (tokens[i] < 0 || (uint32_t)tokens[i] >= c->n_vocab)
            return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "token id %d out of range [0, %u)",
                               tokens[i], c->n_vocab);
    if (s->gpu) {
        /* with MTP drafts, the HC states of the last positions (the MTP
         * block's window) are kept for it */
        const bool rec = s->spec.on && !hc_out;
        /* HC rows: all to hc_out, the window's to the ring, or none */
        const uint32_t rows = hc_out ? n : !rec ? 0 : n < s->spec.cap - 2 ? n : s->spec.cap - 2;
        v4f_status gst = v4f_gpu_eval(s->gpu, tokens, n, s->pos, logits, flags, hc_out, rows,
                                      s->has_trace ? &s->trace : NULL, &s->dbg, err);
        if (gst == V4F_OK) {
            if (rec) spec_added(s, s->pos + n - rows, tokens + n - rows, rows);
            s->pos += n;
        } else if (rec) {
            s->spec.n = 0;
        }
        return gst;
    }
    if (n >= 2 && n <= s->short_max && (!logits || (flags & V4F_EVAL_LOGITS_LAST)) && !hc_out) {
        /* a short eval: token by token, the head for the last one only */
        for (uint32_t i = 0; i < n; i++) {
            v4f_status st = v4f_session_eval(s, tokens + i, 1, i + 1 == n ? logits : NULL, 0, NULL, err);
            if (st != V4F_OK) return st;
        }
        return V4F_OK;
    }
    int64_t HD = (int64_t)c->n_hc * c->n_embd;
    uint64_t regions0 = 0;
    if (s->prof.on) {
        s->prof.mode = n == 1 ? PROF_DECODE : PROF_PREFILL;
        s->prof.evals[s->prof.mode]++;
        s->prof.tokens[s->prof.mode] += n;
        s->prof.t_last = v4f_time_s();
        s->prof.r_last = v4f_pool_region_s(s->pool);
        regions0 = v4f_pool_regions(s->pool);
    }
    for (uint32_t done = 0; done < n;) {
        uint32_t m = n - done < s->chunk ? n - done : s->chunk;
        const int32_t *tk = tokens + done;
        embed_tokens(s, tk, m);
        const bool last_only = (flags & V4F_EVAL_LOGITS_LAST) != 0, want = logits && (!last_only || done + m == n);
        const v4f_out_rows out = v4f_eval_out_rows(logits != NULL, hc_out != NULL, flags, done + m == n);
        uint32_t row = m - 1;
        for (uint32_t l = 0; l < c->n_layer; l++) row = layer_forward(s, l, &s->kv->layers[l], tk, s->pos, m, out);
        if (hc_out) memcpy(hc_out + (int64_t)done * HD, s->sc.X, (size_t)m * HD * sizeof(float));
        if (want) {
            if (!last_only)
                head_forward(s, &s->out_hc_fn, s->out_hc_base, s->out_hc_scale, s->out_norm, 0, m,
                             logits + (int64_t)done * c->n_vocab);
            else
                head_forward(s, &s->out_hc_fn, s->out_hc_base, s->out_hc_scale, s->out_norm, row, row + 1, logits);
        }
        prof_mark(s, PH_HEAD);
        s->pos += m;
        done += m;
    }
    if (s->prof.on) s->prof.regions[s->prof.mode] += v4f_pool_regions(s->pool) - regions0;
    return V4F_OK;
}

v4f_status v4f_session_prefill(v4f_session *s, const int32_t *tokens, uint32_t n, float *logits,
                               v4f_err *err) {
    return v4f_session_eval(s, tokens, n, logits, 0, NULL, err);
}

v4f_status v4f_session_decode(v4f_session *s, int32_t token, float *logits, v4f_err *err) {
    return v4f_session_eval(s, &token, 1, logits, 0, NULL, err);
}

/* The arguments of a decoding loop (v4f_session_decode_greedy / _sampled):
 * the context room for max_eval tokens, a valid first token, a logits
 * buffer (what: the loop's name). */
static v4f_status decode_args(const v4f_session *s, int32_t token, uint32_t max_eval, const float *logits,
                              const char *what, uint32_t *n_eval, int32_t *next, v4f_err *err) {
    *n_eval = 0;
    *next = -1;
    if (max_eval == 0 || !logits)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "%s decode: max_eval 0 or no logits buffer", what);
    if ((uint64_t)s->pos + max_eval > s->opts.n_ctx)
        return v4f_err_set(err, V4F_STATUS_RANGE, "context full: %u + %u tokens > ctx %u", s->pos, max_eval,
                           s->opts.n_ctx);
    if (token < 0 || (uint32_t)token >= s->cfg.n_vocab)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "token id %d out of range [0, %u)", token, s->cfg.n_vocab);
    return V4F_OK;
}

v4f_status v4f_session_decode_greedy(v4f_session *s, int32_t token, uint32_t max_eval, int32_t suppress,
                                     v4f_pick_fn fn, void *ud, float *logits, uint32_t *n_eval, int32_t *next,
                                     v4f_err *err) {
    const v4f_config *c = &s->cfg;
    v4f_status ast = decode_args(s, token, max_eval, logits, "greedy", n_eval, next, err);
    if (ast) return ast;
    if (s->spec.on && !s->has_trace)
        return spec_greedy(s, token, max_eval, suppress, fn, ud, logits, n_eval, next, err);
    if (s->gpu && !s->has_trace && !s->dbg.no_sink && !s->dbg.no_kv_fp8) {
        v4f_err e2 = {0};
        v4f_status st = v4f_gpu_decode_greedy(s->gpu, token, s->pos, max_eval, suppress, fn, ud, logits, n_eval,
                                              next, &e2);
        s->pos += *n_eval;
        if (st != V4F_STATUS_UNSUPPORTED) {
            if (st && err) *err = e2;
            return st;
        }
    }
    for (int32_t in = token;; in = *next) {
        v4f_status st = v4f_session_eval(s, &in, 1, logits, 0, NULL, err);
        if (st) return st;
        ++*n_eval;
        *next = v4f_argmax_f32_except(logits, c->n_vocab, suppress);
        if (*n_eval == max_eval || (fn && !fn(ud, *next))) return V4F_OK;
    }
}

/* v4f_session_decode_sampled with drafts (forward.h); the caller checked
 * the arguments and the context room for max_eval tokens. Every pick is
 * drawn on the host from downloaded logits, so `logits` always holds the
 * last pick's. */
static v4f_status spec_sampled(v4f_session *s, int32_t token, uint32_t max_eval, const v4f_drawer *dw,
                               v4f_pick_fn fn, void *ud, float *logits, uint32_t *n_eval, int32_t *next,
                               v4f_err *err) {
    v4f_status st = V4F_OK;
    for (int32_t a = token;;) {
        const uint32_t p = s->pos;
        if (s->spec.n && s->spec.p0 + s->spec.n != p) s->spec.n = 0;
        const uint32_t pause = v4f_spec_gate_pause(&s->spec.gate);
        const int32_t over = spec_over(s, p, pause);
        int32_t t;
        if (pause || (s->spec.n == 0 && over < 0) || max_eval - *n_eval < 2) { /* no draft: one token */
            if ((st = spec_one(s, a, pause, logits, n_eval, err))) break;
            t = dw->draw(dw->ud, logits);
        } else {
            int32_t got[3];
            bool stop;
            if ((st = spec_draft(s, a, -1, over, got, err)) || (st = v4f_gpu_logits_row(s->gpu, 0, logits, err))) break;
            t = dw->verify(dw->ud, logits, got[0]);
            st = spec_settle(s, p, got[0], t, fn, ud, n_eval, next, &stop, err);
            if (st || stop) break;
            if (t == got[0]) { /* kept: the next pick is drawn from the draft's row */
                if ((st = v4f_gpu_logits_row(s->gpu, 1, logits, err))) break;
                t = dw->draw(dw->ud, logits);
            }
        }
        *next = t;
        if (*n_eval >= max_eval || (fn && !fn(ud, t))) break;
        a = t;
    }
    return st;
}

v4f_status v4f_session_decode_sampled(v4f_session *s, int32_t token, uint32_t max_eval, const v4f_drawer *dw,
                                      v4f_pick_fn fn, void *ud, float *logits, uint32_t *n_eval, int32_t *next,
                                      v4f_err *err) {
    v4f_status ast = decode_args(s, token, max_eval, logits, "sampled", n_eval, next, err);
    if (ast) return ast;
    if (!dw || !dw->draw || !dw->verify) return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "sampled decode: no drawer");
    if (s->spec.on && !s->has_trace)
        return spec_sampled(s, token, max_eval, dw, fn, ud, logits, n_eval, next, err);
    for (int32_t in = token;; in = *next) {
        v4f_status st = v4f_session_eval(s, &in, 1, logits, 0, NULL, err);
        if (st) return st;
        ++*n_eval;
        *next = dw->draw(dw->ud, logits);
        if (*n_eval == max_eval || (fn && !fn(ud, *next))) return V4F_OK;
    }
}

v4f_status v4f_session_rewind(v4f_session *s, uint32_t pos, v4f_err *err) {
    if (!s->gpu)
        return v4f_err_set(err, V4F_STATUS_UNSUPPORTED, "the CPU session cannot rewind; restore a snapshot instead");
    if (pos > s->pos)
        return v4f_err_set(err, V4F_STATUS_RANGE, "rewind to %u past the current position %u", pos, s->pos);
    uint32_t from = 0;
    if (!v4f_gpu_can_rewind(s->gpu, pos, &from))
        return v4f_err_set(err, V4F_STATUS_RANGE,
                           "rewind to %u: the device keeps the state of positions %u..%u only; restore a snapshot",
                           pos, from, s->pos);
    s->pos = pos;
    if (s->spec.n && pos <= s->spec.p0) s->spec.n = 0;
    else if (s->spec.n && s->spec.p0 + s->spec.n > pos) s->spec.n = pos - s->spec.p0;
    return V4F_OK;
}

v4f_status v4f_session_fake_ctx(v4f_session *s, uint32_t pos, uint64_t seed, v4f_err *err) {
    if (pos > s->opts.n_ctx)
        return v4f_err_set(err, V4F_STATUS_RANGE, "fake context %u exceeds ctx %u", pos, s->opts.n_ctx);
    if (s->gpu) {
        v4f_status st = v4f_gpu_fill_synthetic(s->gpu, seed, err);
        if (st) return st;
    } else {
        v4f_kv_fill_synthetic(s->kv, pos, seed);
    }
    s->pos = pos;
    s->mtp_pos = 0;
    spec_clear(s);
    return V4F_OK;
}

/* ---- MTP ---------------------------------------------------------------------------------- */

static void st_mtp_in(void *ctx, int64_t t, int thread) {
    stage *st = ctx;
    v4f_session *s = st->s;
    const v4f_config *c = &s->cfg;
    int64_t d = c->n_embd, H = c->n_hc;
    /* X2 holds hnorm'd streams, xn the enorm'd embedding */
    const float *hc = st->hc_in + t * H * d;
    for (int64_t h = 0; h < H; h++)
        v4f_cpu_rmsnorm(hc + h * d, s->mtp_hnorm, s->sc.X2 + (t * H + h) * d, d, c->rms_eps);
    const v4f_wt *E = &s->m->token_embd;
    float *e = s->sc.a + t * d;
    v4f_quant_kernels_get(E->type)->dequant_row(v4f_wt_row(E, 0, (uint64_t)st->tokens[t]), e, d);
    v4f_cpu_rmsnorm(e, s->mtp_enorm, s->sc.xn + t * d, d, c->rms_eps);
}

static void st_mtp_add(void *ctx, int64_t t, int thread) {
    stage *st = ctx;
    v4f_session *s = st->s;
    const v4f_config *c = &s->cfg;
    int64_t d = c->n_embd, H = c->n_hc;
    const float *E = s->sc.out + t * d;
    for (int64_t h = 0; h < H; h++) {
        float *X = s->sc.X + (t * H + h) * d;
        for (int64_t i = 0; i < d; i++) X[i] = E[i] + X[i];
    }
}

v4f_status v4f_session_mtp_eval(v4f_session *s, const float *hc, const int32_t *tokens, uint32_t n,
                                float *logits, v4f_err *err) {
    const v4f_config *c = &s->cfg;
    if (!s->opts.enable_mtp)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "session was created without MTP");
    if (s->gpu) {
        if ((uint64_t)s->mtp_pos + n > s->opts.n_ctx) return v4f_err_set(err, V4F_STATUS_RANGE, "MTP context full");
        for (uint32_t i = 0; i < n; i++)
            if (tokens[i] < 0 || (uint32_t)tokens[i] >= c->n_vocab)
                return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "token id %d out of range", tokens[i]);
        v4f_status gst = v4f_gpu_mtp_eval(s->gpu, hc, tokens, n, s->mtp_pos, logits, err);
        if (gst == V4F_OK) s->mtp_pos += n;
        return gst;
    }
    if ((uint64_t)s->mtp_pos + n > s->opts.n_ctx)
        return v4f_err_set(err, V4F_STATUS_RANGE, "MTP context full");
    for (uint32_t i = 0; i < n; i++)
        if (tokens[i] < 0 || (uint32_t)tokens[i] >= c->n_vocab)
            return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "token id %d out of range", tokens[i]);
    int64_t d = c->n_embd, HD = (int64_t)c->n_hc * d;
    for (uint32_t done = 0; done < n;) {
        uint32_t m = n - done < s->chunk ? n - done : s->chunk;
        stage st = {0};
        st.s = s;
        st.n = m;
        st.tokens = tokens + done;
        st.hc_in = hc + (int64_t)done * HD;
        v4f_pool_run(s->pool, m, st_mtp_in, &st);
        /* X[t][h] = h_proj(hnorm(H_h)) + e_proj(enorm(e)) */
        v4f_cpu_matmul(&s->cpu, &s->mtp_h_proj, s->sc.X2, d, (int64_t)m * c->n_hc, s->sc.X, d);
        v4f_cpu_matmul(&s->cpu, &s->mtp_e_proj, s->sc.xn, d, m, s->sc.out, d);
        v4f_pool_run(s->pool, m, st_mtp_add, &st);
        layer_forward(s, c->n_layer, &s->kv->layers[c->n_layer], tokens + done, s->mtp_pos, m, V4F_OUT_ROWS_ALL);
        if (logits)
            head_forward(s, &s->mtp_hc_head_fn, s->mtp_hc_base, s->mtp_hc_scale, s->mtp_norm, 0, m,
                         logits + (int64_t)done * c->n_vocab);
        s->mtp_pos += m;
        done += m;
    }
    return V4F_OK;
}

/* ---- snapshot support (src/model/snapshot.c) ---------------------------------------------- */

struct v4f_kv *v4f_session_kv(v4f_session *s) {
    if (s->gpu && !s->kv) {
        /* host mirror of the device cache for snapshots, made on first use */
        v4f_err e = {0};
        if (v4f_kv_new(&s->cfg, s->opts.n_ctx, s->opts.precision != V4F_PRECISION_REF, false, &s->kv, &e))
            v4f_log(V4F_LOG_ERROR, "snapshot: %s", e.msg);
    }
    return s->kv;
}

v4f_status v4f_session_kv_sync(v4f_session *s, bool to_host, v4f_err *err) {
    if (!s->gpu) return V4F_OK;
    if (!v4f_session_kv(s)) return v4f_err_set(err, V4F_STATUS_OOM, "cannot allocate the host copy of the GPU KV cache");
    return to_host ? v4f_gpu_kv_download(s->gpu, s->kv, s->pos, err) : v4f_gpu_kv_upload(s->gpu, s->kv, s->pos, err);
}

v4f_status v4f_session_restore_pos(v4f_session *s, uint32_t pos, uint32_t mtp_pos, v4f_err *err) {
    if (s->gpu) {
        /* the snapshot reader filled the host mirror: move it to the device */
        if (pos > s->opts.n_ctx || mtp_pos)
            return v4f_err_set(err, V4F_STATUS_RANGE, "restored position %u / MTP %u does not fit ctx %u", pos,
                               mtp_pos, s->opts.n_ctx);
        if (!s->kv) return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "GPU session: nothing to restore");
        v4f_status st = v4f_gpu_kv_upload(s->gpu, s->kv, pos, err);
        if (st) return st;
        s->pos = pos;
        s->mtp_pos = 0;
        spec_clear(s); /* the MTP block gets no HC states of the restored positions */
        return V4F_OK;
    }
    if (pos > s->opts.n_ctx || mtp_pos > s->opts.n_ctx || (mtp_pos && !s->opts.enable_mtp))
        return v4f_err_set(err, V4F_STATUS_RANGE, "restored position %u / MTP %u does not fit ctx %u",
                           pos, mtp_pos, s->opts.n_ctx);
    s->pos = pos;
    s->mtp_pos = mtp_pos;
    return V4F_OK;
}
