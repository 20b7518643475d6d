/*
 * synth.c - random-weight DeepSeek V4 Flash models in the published layout
 * (see synth.h): presets, the plan (metadata + tensor directory), the
 * per-row deterministic generators of valid quant blocks, and two sinks: the
 * streaming GGUF writer (file) and an in-memory GGUF image.
 *
 * Invariants: tensor order and names match tests/fixtures/model/tiny-*.gguf
 * (globals token_embd first, per-layer blocks, the output head last); every
 * row's bytes are a pure function of (seed, tensor name, row index).
 * Ownership: a plan owns its tensor array, vocabulary and metadata arrays.
 * Threading: generation runs on a private v4f_pool; the file sink adds one
 * writer thread (double buffering); plans are read-only while generating.
 */
#include <errno.h>
#include <pthread.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/ggml_type.h"
#include "core/threadpool.h"
#include "gguf/gguf.h"
#include "model/synth_internal.h"
#include "quant/quant_blocks.h"

#define ARCH "deepseek4."

/* ---- presets --------------------------------------------------------------- */

typedef struct synth_preset {
    const char *name;
    uint32_t n_layer, d, vocab, n_head, head_dim, n_rot, q_lora, o_lora, o_groups;
    uint32_t n_exp, n_used, n_ff, n_shared, n_hash, swa, idx_heads, idx_dim, idx_topk;
    uint32_t t_gateup, t_down; /* routed expert types */
    const char *desc;
} synth_preset;

static const synth_preset k_presets[] = {
    {"tiny", 6, 256, 640, 4, 128, 64, 32, 32, 2, 8, 2, 256, 1, 3, 128, 16, 128, 16,
     V4F_TYPE_IQ2_XXS, V4F_TYPE_Q2_K, "tiny-q2 fixture dims, q2 mix"},
    {"small", 8, 1024, 32768, 16, 512, 64, 256, 256, 4, 64, 6, 512, 1, 3, 128, 32, 128, 64,
     V4F_TYPE_IQ2_XXS, V4F_TYPE_Q2_K, "d 1024, 8 layers, 64 experts, q2 mix"},
    {"full-q2", 43, 4096, 129280, 64, 512, 64, 1024, 1024, 8, 256, 6, 2048, 1, 3, 128, 64, 128,
     512, V4F_TYPE_IQ2_XXS, V4F_TYPE_Q2_K, "published dims, ds4 q2 mix"},
    {"full-q4", 43, 4096, 129280, 64, 512, 64, 1024, 1024, 8, 256, 6, 2048, 1, 3, 128, 64, 128,
     512, V4F_TYPE_Q4_K, V4F_TYPE_Q4_K, "published dims, ds4 q4 mix"},
};
#define N_PRESETS (sizeof k_presets / sizeof k_presets[0])

const char *v4f_synth_preset_names(void) { return "tiny, small, full-q2, full-q4"; }

static const synth_preset *find_preset(const char *name) {
    for (size_t i = 0; i < N_PRESETS; i++)
        if (!strcmp(k_presets[i].name, name)) return &k_presets[i];
    return NULL;
}

v4f_status v4f_synth_parse_spec(const char *spec, const char **preset_out, uint32_t *n_layer_out,
                                v4f_err *err) {
    char name[32];
    const char *colon = strchr(spec, ':');
    size_t n = colon ? (size_t)(colon - spec) : strlen(spec);
    if (n == 0 || n >= sizeof name)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "bad synthetic spec '%s'", spec);
    memcpy(name, spec, n);
    name[n] = 0;
    const synth_preset *p = find_preset(name);
    if (!p)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "unknown synthetic preset '%s' (one of %s)",
                           name, v4f_synth_preset_names());
    uint32_t layers = 0;
    if (colon) {
        char *end = NULL;
        errno = 0;
        unsigned long v = strtoul(colon + 1, &end, 10);
        if (errno || end == colon + 1 || *end || v < 1 || v > 128)
            return v4f_err_set(err, V4F_STATUS_RANGE, "synthetic spec '%s': layers must be 1..128",
                               spec);
        layers = (uint32_t)v;
    }
    *preset_out = p->name;
    *n_layer_out = layers;
    return V4F_OK;
}

/* ---- plan -------------------------------------------------------------------- */

#define ROLE_CONST V4F_SYNTH_ROLE_CONST
#define ROLE_UNIF V4F_SYNTH_ROLE_UNIF
#define ROLE_MAT V4F_SYNTH_ROLE_MAT
#define ROLE_TID V4F_SYNTH_ROLE_TID

typedef enum { MK_U32, MK_U64, MK_F32, MK_BOOL, MK_STR, MK_ARR_I32, MK_ARR_F32, MK_ARR_STR } mkind;

typedef struct meta {
    const char *key;
    mkind kind;
    uint64_t u;
    float f;
    const char *s;
    const void *arr;
    uint64_t n;
} meta;

#define MAX_META 64

struct v4f_synth_plan {
    const synth_preset *p;
    uint32_t n_layer;
    char name[64];
    v4f_synth_tensor *t;
    uint32_t n_t, cap_t;
    meta m[MAX_META];
    uint32_t n_m;
    int32_t *ratios; /* [n_layer + 1] */
    float *clamp;    /* [n_layer + 1] */
    v4f_synth_vocab vocab;
};

static void add_t(v4f_synth_plan *pl, const char *name, uint32_t type, uint32_t n_dims,
                  uint64_t ne0, uint64_t ne1, uint64_t ne2, uint8_t role, float a, float b) {
    if (pl->n_t == pl->cap_t) {
        pl->cap_t = pl->cap_t ? 2 * pl->cap_t : 256;
        pl->t = v4f_xrealloc(pl->t, pl->cap_t * sizeof *pl->t);
    }
    v4f_synth_tensor *t = &pl->t[pl->n_t++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->type = type;
    t->n_dims = n_dims;
    t->ne[0] = ne0;
    t->ne[1] = n_dims > 1 ? ne1 : 1;
    t->ne[2] = n_dims > 2 ? ne2 : 1;
    uint64_t rb = 0;
    V4F_ASSERT(v4f_type_row_bytes(type, ne0, &rb));
    t->n_bytes = rb * t->ne[1] * t->ne[2];
    t->role = role;
    t->a = a;
    t->b = b;
}

static void add_m(v4f_synth_plan *pl, meta m) {
    V4F_ASSERT(pl->n_m < MAX_META);
    pl->m[pl->n_m++] = m;
}

#define M_U32(k, v) add_m(pl, (meta){.key = (k), .kind = MK_U32, .u = (v)})
#define M_U64(k, v) add_m(pl, (meta){.key = (k), .kind = MK_U64, .u = (v)})
#define M_F32(k, v) add_m(pl, (meta){.key = (k), .kind = MK_F32, .f = (v)})
#define M_STR(k, v) add_m(pl, (meta){.key = (k), .kind = MK_STR, .s = (v)})

static uint32_t layer_ratio(uint32_t l) { return l < 2 ? 0 : (l % 2 == 0 ? 4 : 128); }

static void plan_metadata(v4f_synth_plan *pl, bool tokenizer) {
    const synth_preset *p = pl->p;
    const uint32_t L = pl->n_layer;
    M_U32("general.alignment", 32);
    M_STR("general.architecture", "deepseek4");
    M_STR("general.name", pl->name);
    M_STR("general.description",
          "Synthetic random-weight DeepSeek V4 Flash model (v4flash synth); NOT a trained model.");
    M_U64(ARCH "context_length", 1048576);
    M_U32(ARCH "block_count", L);
    M_U32(ARCH "embedding_length", p->d);
    M_U32(ARCH "vocab_size", p->vocab);
    M_U32(ARCH "attention.head_count", p->n_head);
    M_U32(ARCH "attention.head_count_kv", 1);
    M_U32(ARCH "attention.key_length", p->head_dim);
    M_U32(ARCH "attention.value_length", p->head_dim);
    M_U32(ARCH "rope.dimension_count", p->n_rot);
    M_U32(ARCH "attention.q_lora_rank", p->q_lora);
    M_U32(ARCH "attention.output_lora_rank", p->o_lora);
    M_U32(ARCH "attention.output_group_count", p->o_groups);
    M_U32(ARCH "expert_count", p->n_exp);
    M_U32(ARCH "expert_used_count", p->n_used);
    M_U32(ARCH "expert_feed_forward_length", p->n_ff);
    M_U32(ARCH "expert_shared_count", p->n_shared);
    M_U32(ARCH "hash_layer_count", p->n_hash < L ? p->n_hash : L);
    M_U32(ARCH "expert_group_count", 0);
    M_U32(ARCH "expert_group_used_count", 0);
    M_U32(ARCH "attention.sliding_window", p->swa);
    M_U32(ARCH "attention.indexer.head_count", p->idx_heads);
    M_U32(ARCH "attention.indexer.key_length", p->idx_dim);
    M_U32(ARCH "attention.indexer.top_k", p->idx_topk);
    M_U32(ARCH "hyper_connection.count", 4);
    M_U32(ARCH "hyper_connection.sinkhorn_iterations", 20);
    M_F32(ARCH "hyper_connection.epsilon", 1e-6f);
    M_F32(ARCH "attention.layer_norm_rms_epsilon", 1e-6f);
    pl->ratios = v4f_xmalloc((L + 1) * sizeof *pl->ratios);
    pl->clamp = v4f_xmalloc((L + 1) * sizeof *pl->clamp);
    for (uint32_t l = 0; l < L; l++) pl->ratios[l] = (int32_t)layer_ratio(l);
    pl->ratios[L] = 0; /* MTP block */
    for (uint32_t l = 0; l <= L; l++) pl->clamp[l] = 10.0f;
    add_m(pl, (meta){.key = ARCH "attention.compress_ratios", .kind = MK_ARR_I32,
                     .arr = pl->ratios, .n = L + 1});
    add_m(pl, (meta){.key = ARCH "swiglu_clamp_exp", .kind = MK_ARR_F32, .arr = pl->clamp,
                     .n = L + 1});
    M_F32(ARCH "rope.freq_base", 10000.0f);
    M_F32(ARCH "attention.compress_rope_freq_base", 160000.0f);
    M_F32(ARCH "rope.scaling.factor", 16.0f);
    M_U32(ARCH "rope.scaling.original_context_length", 65536);
    M_F32(ARCH "rope.scaling.yarn_beta_fast", 32.0f);
    M_F32(ARCH "rope.scaling.yarn_beta_slow", 1.0f);
    M_F32(ARCH "expert_weights_scale", 1.5f);
    add_m(pl, (meta){.key = ARCH "expert_weights_norm", .kind = MK_BOOL, .u = 1});
    M_U32(ARCH "nextn_predict_layers", 1);
    if (!tokenizer) return;
    M_STR("tokenizer.ggml.model", "gpt2");
    M_STR("tokenizer.ggml.pre", "joyai-llm");
    add_m(pl, (meta){.key = "tokenizer.ggml.tokens", .kind = MK_ARR_STR,
                     .arr = pl->vocab.tokens, .n = pl->vocab.n_tokens});
    add_m(pl, (meta){.key = "tokenizer.ggml.token_type", .kind = MK_ARR_I32,
                     .arr = pl->vocab.token_type, .n = pl->vocab.n_tokens});
    add_m(pl, (meta){.key = "tokenizer.ggml.merges", .kind = MK_ARR_STR,
                     .arr = pl->vocab.merges, .n = pl->vocab.n_merges});
    M_U32("tokenizer.ggml.bos_token_id", 0);
    M_U32("tokenizer.ggml.eos_token_id", 1);
}

/* Gains: 1 for projections that read a normalised input, 0.5 for those that
 * write into the residual stream (output_b, expert/shared down), 2 for the
 * LM head (livelier logits). Layer l (blk.l.*), or the MTP block (l ==
 * n_layer: mtp.0.*, ratio 0, not hash-routed). */
static void plan_layer(v4f_synth_plan *pl, uint32_t l) {
    const synth_preset *p = pl->p;
    const uint64_t d = p->d, mix = (2 + 4) * 4, hcd = 4 * d;
    const bool mtp = l == pl->n_layer;
    const uint32_t ratio = mtp ? 0 : layer_ratio(l);
    const int hash = !mtp && l < p->n_hash; /* n_hash is clamped to n_layer in the metadata */
    char n[64];
#define T(suffix, type, nd, a0, a1, a2, role, x, y)                       \
    do {                                                                  \
        if (mtp) snprintf(n, sizeof n, "mtp.0." suffix);                  \
        else snprintf(n, sizeof n, "blk.%u." suffix, l);                  \
        add_t(pl, n, type, nd, a0, a1, a2, role, x, y);                   \
    } while (0)
    if (mtp) {
        T("hc_head_base.weight", V4F_TYPE_F32, 1, 4, 1, 1, ROLE_UNIF, 0.0f, 0.5f);
        T("hc_head_fn.weight", V4F_TYPE_F16, 2, hcd, 4, 1, ROLE_MAT, 1.0f, 0);
        T("hc_head_scale.weight", V4F_TYPE_F32, 1, 1, 1, 1, ROLE_UNIF, 1.0f, 0.25f);
        T("e_proj.weight", V4F_TYPE_Q8_0, 2, d, d, 1, ROLE_MAT, 1.0f, 0);
        T("h_proj.weight", V4F_TYPE_Q8_0, 2, d, d, 1, ROLE_MAT, 1.0f, 0);
        T("enorm.weight", V4F_TYPE_F32, 1, d, 1, 1, ROLE_CONST, 1.0f, 0);
        T("hnorm.weight", V4F_TYPE_F32, 1, d, 1, 1, ROLE_CONST, 1.0f, 0);
        T("norm.weight", V4F_TYPE_F32, 1, d, 1, 1, ROLE_CONST, 1.0f, 0);
    }
    /* the published MTP file keeps its routed experts in Q4_K */
    const uint32_t t_gateup = mtp && p->d >= 4096 ? V4F_TYPE_Q4_K : p->t_gateup;
    const uint32_t t_down = mtp && p->d >= 4096 ? V4F_TYPE_Q4_K : p->t_down;
    T("hc_attn_fn.weight", V4F_TYPE_F16, 2, hcd, mix, 1, ROLE_MAT, 1.0f, 0);
    T("hc_attn_scale.weight", V4F_TYPE_F32, 1, 3, 1, 1, ROLE_UNIF, 0.75f, 0.25f);
    T("hc_attn_base.weight", V4F_TYPE_F32, 1, mix, 1, 1, ROLE_UNIF, 0.0f, 0.5f);
    T("hc_ffn_fn.weight", V4F_TYPE_F16, 2, hcd, mix, 1, ROLE_MAT, 1.0f, 0);
    T("hc_ffn_scale.weight", V4F_TYPE_F32, 1, 3, 1, 1, ROLE_UNIF, 0.75f, 0.25f);
    T("hc_ffn_base.weight", V4F_TYPE_F32, 1, mix, 1, 1, ROLE_UNIF, 0.0f, 0.5f);
    T("attn_norm.weight", V4F_TYPE_F32, 1, d, 1, 1, ROLE_CONST, 1.0f, 0);
    T("ffn_norm.weight", V4F_TYPE_F32, 1, d, 1, 1, ROLE_CONST, 1.0f, 0);
    T("attn_q_a.weight", V4F_TYPE_Q8_0, 2, d, p->q_lora, 1, ROLE_MAT, 1.0f, 0);
    T("attn_q_a_norm.weight", V4F_TYPE_F32, 1, p->q_lora, 1, 1, ROLE_CONST, 1.0f, 0);
    T("attn_q_b.weight", V4F_TYPE_Q8_0, 2, p->q_lora, (uint64_t)p->n_head * p->head_dim, 1,
      ROLE_MAT, 1.0f, 0);
    T("attn_kv.weight", V4F_TYPE_Q8_0, 2, d, p->head_dim, 1, ROLE_MAT, 1.0f, 0);
    T("attn_kv_a_norm.weight", V4F_TYPE_F32, 1, p->head_dim, 1, 1, ROLE_CONST, 1.0f, 0);
    T("attn_sinks.weight", V4F_TYPE_F32, 1, p->n_head, 1, 1, ROLE_UNIF, 0.0f, 0.05f);
    T("attn_output_a.weight", V4F_TYPE_Q8_0, 2, (uint64_t)p->n_head * p->head_dim / p->o_groups,
      (uint64_t)p->o_groups * p->o_lora, 1, ROLE_MAT, 1.0f, 0);
    T("attn_output_b.weight", V4F_TYPE_Q8_0, 2, (uint64_t)p->o_groups * p->o_lora, d, 1,
      ROLE_MAT, 0.5f, 0);
    if (ratio) {
        uint64_t w = (ratio == 4 ? 2 : 1) * (uint64_t)p->head_dim;
        T("attn_compressor_ape.weight", V4F_TYPE_F16, 2, w, ratio, 1, ROLE_UNIF, 0.0f, 0.5f);
        T("attn_compressor_kv.weight", V4F_TYPE_F16, 2, d, w, 1, ROLE_MAT, 1.0f, 0);
        T("attn_compressor_gate.weight", V4F_TYPE_F16, 2, d, w, 1, ROLE_MAT, 1.0f, 0);
        T("attn_compressor_norm.weight", V4F_TYPE_F32, 1, p->head_dim, 1, 1, ROLE_CONST, 1.0f, 0);
    }
    if (ratio == 4) {
        uint64_t wi = 2 * (uint64_t)p->idx_dim;
        T("indexer.attn_q_b.weight", V4F_TYPE_F16, 2, p->q_lora,
          (uint64_t)p->idx_heads * p->idx_dim, 1, ROLE_MAT, 1.0f, 0);
        T("indexer.proj.weight", V4F_TYPE_F16, 2, d, p->idx_heads, 1, ROLE_MAT, 1.0f, 0);
        T("indexer_compressor_ape.weight", V4F_TYPE_F16, 2, wi, 4, 1, ROLE_UNIF, 0.0f, 0.5f);
        T("indexer_compressor_kv.weight", V4F_TYPE_F16, 2, d, wi, 1, ROLE_MAT, 1.0f, 0);
        T("indexer_compressor_gate.weight", V4F_TYPE_F16, 2, d, wi, 1, ROLE_MAT, 1.0f, 0);
        T("indexer_compressor_norm.weight", V4F_TYPE_F32, 1, p->idx_dim, 1, 1, ROLE_CONST, 1.0f,
          0);
    }
    T("ffn_gate_inp.weight", V4F_TYPE_F16, 2, d, p->n_exp, 1, ROLE_MAT, 1.0f, 0);
    if (!hash) T("exp_probs_b.bias", V4F_TYPE_F32, 1, p->n_exp, 1, 1, ROLE_UNIF, 0.0f, 0.1f);
    if (hash)
        T("ffn_gate_tid2eid.weight", V4F_TYPE_I32, 2, p->n_used, p->vocab, 1, ROLE_TID,
          (float)p->n_exp, 0);
    T("ffn_gate_exps.weight", t_gateup, 3, d, p->n_ff, p->n_exp, ROLE_MAT, 1.0f, 0);
    T("ffn_up_exps.weight", t_gateup, 3, d, p->n_ff, p->n_exp, ROLE_MAT, 1.0f, 0);
    T("ffn_down_exps.weight", t_down, 3, p->n_ff, d, p->n_exp, ROLE_MAT, 0.5f, 0);
    uint64_t ffs = (uint64_t)p->n_ff * p->n_shared;
    T("ffn_gate_shexp.weight", V4F_TYPE_Q8_0, 2, d, ffs, 1, ROLE_MAT, 1.0f, 0);
    T("ffn_up_shexp.weight", V4F_TYPE_Q8_0, 2, d, ffs, 1, ROLE_MAT, 1.0f, 0);
    T("ffn_down_shexp.weight", V4F_TYPE_Q8_0, 2, ffs, d, 1, ROLE_MAT, 0.5f, 0);
#undef T
}

static v4f_status plan_new(const char *preset_name, uint32_t n_layer, bool mtp, v4f_synth_plan **out,
                           v4f_err *err);
v4f_status v4f_synth_plan_new(const char *preset_name, uint32_t n_layer, v4f_synth_plan **out,
                              v4f_err *err) {
    return plan_new(preset_name, n_layer, false, out, err);
}
v4f_status v4f_synth_plan_new_mtp(const char *preset_name, uint32_t n_layer, v4f_synth_plan **out,
                                  v4f_err *err) {
    return plan_new(preset_name, n_layer, true, out, err);
}

static v4f_status plan_new(const char *preset_name, uint32_t n_layer, bool mtp, v4f_synth_plan **out,
                           v4f_err *err) {
    *out = NULL;
    const synth_preset *p = find_preset(preset_name ? preset_name : "");
    if (!p)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "unknown synthetic preset '%s' (one of %s)",
                           preset_name ? preset_name : "(null)", v4f_synth_preset_names());
    if (n_layer == 0) n_layer = p->n_layer;
    if (n_layer > 128)
        return v4f_err_set(err, V4F_STATUS_RANGE, "synth: %u layers (max 128)", n_layer);
    v4f_synth_plan *pl = v4f_xcalloc(1, sizeof *pl);
    pl->p = p;
    pl->n_layer = n_layer;
    if (n_layer == p->n_layer) snprintf(pl->name, sizeof pl->name, "synthetic-%s%s", p->name, mtp ? " MTP" : "");
    else snprintf(pl->name, sizeof pl->name, "synthetic-%s-%uL%s", p->name, n_layer, mtp ? " MTP" : "");
    v4f_status st = v4f_synth_vocab_build(p->vocab, &pl->vocab, err);
    if (st) {
        v4f_synth_plan_free(pl);
        return st;
    }
    plan_metadata(pl, !mtp);
    if (mtp) { /* the MTP file: metadata and the mtp.0.* block only (MODEL.md §3.3) */
        plan_layer(pl, n_layer);
        *out = pl;
        return V4F_OK;
    }
    const uint64_t d = p->d;
    add_t(pl, "token_embd.weight", V4F_TYPE_F16, 2, d, p->vocab, 1, ROLE_UNIF, 0.0f, 1.7320508f);
    for (uint32_t l = 0; l < n_layer; l++) plan_layer(pl, l);
    add_t(pl, "output_hc_base.weight", V4F_TYPE_F32, 1, 4, 1, 1, ROLE_UNIF, 0.0f, 0.5f);
    add_t(pl, "output_hc_fn.weight", V4F_TYPE_F16, 2, 4 * d, 4, 1, ROLE_MAT, 1.0f, 0);
    add_t(pl, "output_hc_scale.weight", V4F_TYPE_F32, 1, 1, 1, 1, ROLE_UNIF, 1.0f, 0.25f);
    add_t(pl, "output_norm.weight", V4F_TYPE_F32, 1, d, 1, 1, ROLE_CONST, 1.0f, 0);
    add_t(pl, "output.weight", V4F_TYPE_Q8_0, 2, d, p->vocab, 1, ROLE_MAT, 2.0f, 0);
    *out = pl;
    return V4F_OK;
}

void v4f_synth_plan_free(v4f_synth_plan *pl) {
    if (!pl) return;
    v4f_synth_vocab_free(&pl->vocab);
    free(pl->t);
    free(pl->ratios);
    free(pl->clamp);
    free(pl);
}

uint32_t v4f_synth_plan_n_tensors(const v4f_synth_plan *p) { return p->n_t; }
const v4f_synth_tensor *v4f_synth_plan_tensor(const v4f_synth_plan *p, uint32_t i) {
    return i < p->n_t ? &p->t[i] : NULL;
}
uint64_t v4f_synth_plan_data_bytes(const v4f_synth_plan *p) {
    uint64_t s = 0;
    for (uint32_t i = 0; i < p->n_t; i++) s += p->t[i].n_bytes;
    return s;
}
uint32_t v4f_synth_plan_n_vocab(const v4f_synth_plan *p) { return p->p->vocab; }
uint32_t v4f_synth_plan_n_layer(const v4f_synth_plan *p) { return p->n_layer; }

/* ---- generators -------------------------------------------------------------- */

typedef struct srng {
    uint64_t x;
} srng;

static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static inline uint64_t srng_next(srng *r) { return mix64(r->x += 0x9E3779B97F4A7C15ULL); }
static inline float srng_unit(srng *r) { /* [0, 1) */
    return (float)(srng_next(r) >> 40) * (1.0f / 16777216.0f);
}

static uint64_t tensor_seed(const v4f_synth_tensor *t, uint64_t seed) {
    return v4f_fnv1a64(mix64(seed ^ 0x5eed5eed5eedULL), t->name, strlen(t->name));
}

static void fill_random(srng *r, uint8_t *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v = srng_next(r);
        memcpy(dst + i, &v, 8);
    }
    if (i < n) {
        uint64_t v = srng_next(r);
        memcpy(dst + i, &v, n - i);
    }
}

/* Element RMS per unit of d of the block recipes below. */
#define Q8_RMS_PER_D 73.896  /* uniform int8 in [-127, 127] (-128 folded to -127) */
#define Q2K_RMS_PER_D 10.124 /* sc in {8, 10}, m = 1.5 sc, q uniform 0..3 */
#define Q4K_RMS_PER_D 14.577 /* sc in {2, 4}, m = 7.5 sc, q uniform 0..15 */

static void gen_row_q8_0(srng *r, v4f_block_q8_0 *b, uint64_t nb, float target) {
    uint16_t d = v4f_f32_to_f16(target / (float)Q8_RMS_PER_D);
    for (uint64_t i = 0; i < nb; i++) {
        b[i].d = d;
        fill_random(r, (uint8_t *)b[i].qs, 32);
        for (int k = 0; k < 32; k++)
            if (b[i].qs[k] == -128) b[i].qs[k] = -127;
    }
}

static void gen_row_q2_k(srng *r, v4f_block_q2_K *b, uint64_t nb, float target) {
    uint16_t d = v4f_f32_to_f16(target / (float)Q2K_RMS_PER_D);
    for (uint64_t i = 0; i < nb; i++) {
        uint64_t bits = srng_next(r);
        for (int j = 0; j < 16; j++) b[i].scales[j] = (bits >> j) & 1 ? (10 | (15 << 4)) : (8 | (12 << 4));
        fill_random(r, b[i].qs, sizeof b[i].qs);
        b[i].d = d;
        b[i].dmin = d;
    }
}

static void q4k_pack(uint8_t s[12], const uint8_t sc[8], const uint8_t m[8]) {
    memset(s, 0, 12);
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)(sc[j] & 63);
        s[j + 4] = (uint8_t)(m[j] & 63);
    }
    for (int j = 4; j < 8; j++) {
        s[j + 4] = (uint8_t)((sc[j] & 15) | ((m[j] & 15) << 4));
        s[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
        s[j] |= (uint8_t)((m[j] >> 4) << 6);
    }
}

static void gen_row_q4_k(srng *r, v4f_block_q4_K *b, uint64_t nb, float target) {
    uint16_t d = v4f_f32_to_f16(target / (float)Q4K_RMS_PER_D);
    for (uint64_t i = 0; i < nb; i++) {
        uint64_t bits = srng_next(r);
        uint8_t sc[8], m[8];
        for (int j = 0; j < 8; j++) {
            sc[j] = (bits >> j) & 1 ? 4 : 2;
            m[j] = (uint8_t)(sc[j] == 4 ? 30 : 15);
        }
        b[i].d = d;
        b[i].dmin = d;
        q4k_pack(b[i].scales, sc, m);
        fill_random(r, b[i].qs, sizeof b[i].qs);
    }
}

static void gen_row_iq2_xxs(srng *r, v4f_block_iq2_xxs *b, uint64_t nb, float target) {
    uint16_t d = v4f_f32_to_f16(target / (float)V4F_SYNTH_IQ2_RMS_PER_D);
    for (uint64_t i = 0; i < nb; i++) {
        b[i].d = d;
        fill_random(r, (uint8_t *)b[i].qs, sizeof b[i].qs);
    }
}

/* 256-entry f16 table of the uniform quantiles of [c - h, c + h]. */
static void f16_table(uint16_t tab[256], float c, float h) {
    for (int k = 0; k < 256; k++) tab[k] = v4f_f32_to_f16(c + h * (((float)k + 0.5f) / 128.0f - 1.0f));
}

static void gen_tid_row(srng *r, int32_t *ids, uint64_t n, uint32_t n_exp) {
    for (uint64_t i = 0; i < n; i++) {
        for (;;) {
            int32_t e = (int32_t)(srng_next(r) % n_exp);
            int dup = 0;
            for (uint64_t k = 0; k < i; k++) dup |= ids[k] == e;
            if (!dup) {
                ids[i] = e;
                break;
            }
        }
    }
}

void v4f_synth_gen_rows(const v4f_synth_tensor *t, uint64_t seed, uint64_t row0, uint64_t row1,
                        void *dst) {
    const uint64_t ne0 = t->ne[0];
    uint64_t rb = 0;
    V4F_ASSERT(v4f_type_row_bytes(t->type, ne0, &rb));
    const uint64_t ts = tensor_seed(t, seed);
    float c = 0, h = 0, target = 0;
    if (t->role == ROLE_CONST) c = t->a;
    else if (t->role == ROLE_UNIF) c = t->a, h = t->b;
    else if (t->role == ROLE_MAT) target = t->a / sqrtf((float)ne0), h = target * 1.7320508f;
    uint16_t tab[256];
    if (t->type == V4F_TYPE_F16) f16_table(tab, c, h);
    for (uint64_t row = row0; row < row1; row++) {
        uint8_t *o = (uint8_t *)dst + (row - row0) * rb;
        srng r = {mix64(ts ^ mix64(row + 1))};
        switch (t->type) {
        case V4F_TYPE_F32: {
            float *f = (float *)o;
            for (uint64_t i = 0; i < ne0; i++)
                f[i] = t->role == ROLE_CONST ? c : c + h * (2.0f * srng_unit(&r) - 1.0f);
            break;
        }
        case V4F_TYPE_F16: {
            uint16_t *f = (uint16_t *)o;
            if (t->role == ROLE_CONST) {
                for (uint64_t i = 0; i < ne0; i++) f[i] = v4f_f32_to_f16(c);
                break;
            }
            for (uint64_t i = 0; i < ne0; i += 8) {
                uint64_t v = srng_next(&r);
                for (uint64_t k = 0; k < 8 && i + k < ne0; k++) f[i + k] = tab[(v >> (8 * k)) & 255];
            }
            break;
        }
        case V4F_TYPE_I32: gen_tid_row(&r, (int32_t *)o, ne0, (uint32_t)t->a); break;
        case V4F_TYPE_Q8_0: gen_row_q8_0(&r, (v4f_block_q8_0 *)o, ne0 / 32, target); break;
        case V4F_TYPE_Q2_K: gen_row_q2_k(&r, (v4f_block_q2_K *)o, ne0 / 256, target); break;
        case V4F_TYPE_Q4_K: gen_row_q4_k(&r, (v4f_block_q4_K *)o, ne0 / 256, target); break;
        case V4F_TYPE_IQ2_XXS: gen_row_iq2_xxs(&r, (v4f_block_iq2_xxs *)o, ne0 / 256, target); break;
        default: V4F_ASSERT(!"synth: unsupported tensor type");
        }
    }
}

/* ---- parallel chunk generation ------------------------------------------------ */

typedef struct gen_job {
    const v4f_synth_tensor *t;
    uint64_t seed, row0, row1, rows_per_task, row_bytes;
    uint8_t *dst; /* row row0 */
} gen_job;

static void gen_task(void *ctx, int64_t task, int thread) {
    const gen_job *j = ctx;
    uint64_t a = j->row0 + (uint64_t)task * j->rows_per_task;
    uint64_t b = a + j->rows_per_task;
    if (b > j->row1) b = j->row1;
    if (a >= b) return;
    v4f_synth_gen_rows(j->t, j->seed, a, b, j->dst + (a - j->row0) * j->row_bytes);
}

static void gen_parallel(v4f_pool *pool, const v4f_synth_tensor *t, uint64_t seed, uint64_t row0,
                         uint64_t row1, void *dst) {
    uint64_t rb = 0;
    V4F_ASSERT(v4f_type_row_bytes(t->type, t->ne[0], &rb));
    uint64_t rows = row1 - row0;
    /* tasks of >= 256 KiB, at most 4 per thread */
    uint64_t per = (256u << 10) / rb + 1;
    uint64_t max_tasks = 4 * (uint64_t)v4f_pool_size(pool);
    if ((rows + per - 1) / per > max_tasks) per = (rows + max_tasks - 1) / max_tasks;
    gen_job j = {t, seed, row0, row1, per, rb, dst};
    v4f_pool_run(pool, (int64_t)((rows + per - 1) / per), gen_task, &j);
}

/* ---- file sink --------------------------------------------------------------- */

static void writer_meta(v4f_gguf_writer *w, const meta *m) {
    switch (m->kind) {
    case MK_U32: v4f_gguf_writer_set_u32(w, m->key, (uint32_t)m->u); break;
    case MK_U64: v4f_gguf_writer_set_u64(w, m->key, m->u); break;
    case MK_F32: v4f_gguf_writer_set_f32(w, m->key, m->f); break;
    case MK_BOOL: v4f_gguf_writer_set_bool(w, m->key, m->u != 0); break;
    case MK_STR: v4f_gguf_writer_set_str(w, m->key, m->s); break;
    case MK_ARR_I32: v4f_gguf_writer_set_arr(w, m->key, V4F_GGUF_I32, m->arr, m->n); break;
    case MK_ARR_F32: v4f_gguf_writer_set_arr(w, m->key, V4F_GGUF_F32, m->arr, m->n); break;
    case MK_ARR_STR:
        v4f_gguf_writer_set_arr_str(w, m->key, (const char *const *)m->arr, m->n);
        break;
    }
}

#define CHUNK_BYTES (32u << 20)

/* Double-buffered writing: the calling thread (with the pool) generates
 * chunk k+1 while a writer thread hands chunk k to the GGUF writer, so the
 * generation time hides behind the disk. The writer thread is the only one
 * that touches the v4f_gguf_writer after begin_data. */
typedef struct wpipe {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    v4f_gguf_writer *w;
    uint8_t *buf[2];
    uint64_t len[2];  /* bytes filled in buf[k]; 0 = free */
    int next_write;   /* slot the writer thread takes next */
    bool done;        /* no more chunks */
    uint64_t written; /* bytes handed to the writer so far */
    v4f_status st;    /* first write error */
    v4f_err err;
} wpipe;

static void *writer_main(void *arg) {
    wpipe *q = arg;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        int k = q->next_write;
        while (q->len[k] == 0 && !q->done) pthread_cond_wait(&q->cv, &q->mu);
        if (q->len[k] == 0) break; /* done and drained */
        uint64_t n = q->len[k];
        pthread_mutex_unlock(&q->mu);
        v4f_err e = {0};
        v4f_status st = q->st ? q->st : v4f_gguf_writer_write_data(q->w, q->buf[k], n, &e);
        pthread_mutex_lock(&q->mu);
        if (st && !q->st) {
            q->st = st;
            q->err = e;
        }
        q->written += n;
        q->len[k] = 0;
        q->next_write = 1 - k;
        pthread_cond_broadcast(&q->cv);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

/* Generate every tensor chunk by chunk into the pipe. */
static v4f_status pipe_generate(const v4f_synth_plan *pl, const v4f_synth_opts *o, v4f_pool *pool,
                                wpipe *q, v4f_err *err) {
    const uint64_t total = v4f_synth_plan_data_bytes(pl);
    int slot = 0;
    for (uint32_t i = 0; i < pl->n_t; i++) {
        const v4f_synth_tensor *t = &pl->t[i];
        uint64_t rb = 0;
        V4F_ASSERT(v4f_type_row_bytes(t->type, t->ne[0], &rb));
        if (rb > CHUNK_BYTES)
            return v4f_err_set(err, V4F_STATUS_UNSUPPORTED, "synth: a row of %s exceeds %u bytes",
                               t->name, CHUNK_BYTES);
        const uint64_t rows = t->ne[1] * t->ne[2], per = CHUNK_BYTES / rb;
        for (uint64_t r0 = 0; r0 < rows; r0 += per) {
            uint64_t r1 = r0 + per < rows ? r0 + per : rows;
            pthread_mutex_lock(&q->mu);
            while (q->len[slot] != 0 && !q->st) pthread_cond_wait(&q->cv, &q->mu);
            uint64_t written = q->written;
            bool failed = q->st != V4F_OK;
            pthread_mutex_unlock(&q->mu);
            if (failed) return V4F_OK; /* reported through q->st */
            if (o->progress) o->progress(o->progress_ud, written, total);
            gen_parallel(pool, t, o->seed, r0, r1, q->buf[slot]);
            pthread_mutex_lock(&q->mu);
            q->len[slot] = rb * (r1 - r0);
            pthread_cond_broadcast(&q->cv);
            pthread_mutex_unlock(&q->mu);
            slot = 1 - slot;
        }
    }
    return V4F_OK;
}

v4f_status v4f_synth_write_file(const char *path, const v4f_synth_opts *o, v4f_err *err) {
    v4f_synth_plan *pl = NULL;
    v4f_status st = plan_new(o->preset, o->n_layer, o->mtp, &pl, err);
    if (st) return st;
    v4f_gguf_writer *w = NULL;
    st = v4f_gguf_writer_open(path, 32, &w, err);
    if (st) {
        v4f_synth_plan_free(pl);
        return st;
    }
    for (uint32_t i = 0; i < pl->n_m; i++) writer_meta(w, &pl->m[i]);
    for (uint32_t i = 0; i < pl->n_t && !st; i++)
        st = v4f_gguf_writer_add_tensor(w, pl->t[i].name, pl->t[i].type, pl->t[i].n_dims,
                                        pl->t[i].ne, err);
    if (!st) st = v4f_gguf_writer_begin_data(w, err);
    wpipe q;
    memset(&q, 0, sizeof q);
    q.w = w;
    v4f_pool *pool = NULL;
    if (!st) {
        q.buf[0] = v4f_aligned_alloc(CHUNK_BYTES);
        q.buf[1] = v4f_aligned_alloc(CHUNK_BYTES);
        pool = v4f_pool_new(o->n_threads);
        if (!q.buf[0] || !q.buf[1] || !pool)
            st = v4f_err_set(err, V4F_STATUS_OOM, "synth: cannot allocate buffers");
    }
    if (!st) {
        pthread_t th;
        pthread_mutex_init(&q.mu, NULL);
        pthread_cond_init(&q.cv, NULL);
        if (pthread_create(&th, NULL, writer_main, &q) != 0) {
            st = v4f_err_set(err, V4F_STATUS_OOM, "synth: cannot start the writer thread");
        } else {
            st = pipe_generate(pl, o, pool, &q, err);
            pthread_mutex_lock(&q.mu);
            q.done = true;
            pthread_cond_broadcast(&q.cv);
            pthread_mutex_unlock(&q.mu);
            pthread_join(th, NULL);
            if (!st && q.st) {
                st = q.st;
                if (err) *err = q.err;
            }
            if (!st && o->progress) {
                uint64_t total = v4f_synth_plan_data_bytes(pl);
                o->progress(o->progress_ud, total, total);
            }
        }
        pthread_cond_destroy(&q.cv);
        pthread_mutex_destroy(&q.mu);
    }
    v4f_pool_free(pool);
    v4f_aligned_free(q.buf[0]);
    v4f_aligned_free(q.buf[1]);
    if (st) v4f_gguf_writer_abort(w);
    else st = v4f_gguf_writer_close(w, err);
    v4f_synth_plan_free(pl);
    return st;
}

/* ---- memory sink -------------------------------------------------------------- */

typedef struct membuf {
    uint8_t *p;
    size_t n, cap;
} membuf;

static void mb_put(membuf *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        while (b->n + n > b->cap) b->cap = b->cap ? 2 * b->cap : 1 << 16;
        b->p = v4f_xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void mb_u32(membuf *b, uint32_t v) {
    uint8_t e[4];
    for (int i = 0; i < 4; i++) e[i] = (uint8_t)(v >> (8 * i));
    mb_put(b, e, 4);
}
static void mb_u64(membuf *b, uint64_t v) {
    uint8_t e[8];
    for (int i = 0; i < 8; i++) e[i] = (uint8_t)(v >> (8 * i));
    mb_put(b, e, 8);
}
static void mb_str(membuf *b, const char *s) {
    size_t n = strlen(s);
    mb_u64(b, n);
    mb_put(b, s, n);
}
static void mb_f32(membuf *b, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    mb_u32(b, u);
}

static void mb_meta(membuf *b, const meta *m) {
    mb_str(b, m->key);
    switch (m->kind) {
    case MK_U32: mb_u32(b, V4F_GGUF_U32), mb_u32(b, (uint32_t)m->u); break;
    case MK_U64: mb_u32(b, V4F_GGUF_U64), mb_u64(b, m->u); break;
    case MK_F32: mb_u32(b, V4F_GGUF_F32), mb_f32(b, m->f); break;
    case MK_BOOL: {
        uint8_t v = m->u != 0;
        mb_u32(b, V4F_GGUF_BOOL);
        mb_put(b, &v, 1);
        break;
    }
    case MK_STR: mb_u32(b, V4F_GGUF_STRING), mb_str(b, m->s); break;
    case MK_ARR_I32:
    case MK_ARR_F32:
        mb_u32(b, V4F_GGUF_ARRAY);
        mb_u32(b, m->kind == MK_ARR_I32 ? V4F_GGUF_I32 : V4F_GGUF_F32);
        mb_u64(b, m->n);
        for (uint64_t i = 0; i < m->n; i++) mb_u32(b, ((const uint32_t *)m->arr)[i]);
        break;
    case MK_ARR_STR:
        mb_u32(b, V4F_GGUF_ARRAY);
        mb_u32(b, V4F_GGUF_STRING);
        mb_u64(b, m->n);
        for (uint64_t i = 0; i < m->n; i++) mb_str(b, ((const char *const *)m->arr)[i]);
        break;
    }
}

#define SKELETON_MAX_BYTES (1u << 20)

v4f_status v4f_synth_build_memory_ex(const v4f_synth_opts *o, void **buf_out, size_t *size_out,
                                     v4f_err *err) {
    *buf_out = NULL;
    *size_out = 0;
    v4f_synth_plan *pl = NULL;
    v4f_status st = plan_new(o->preset, o->n_layer, o->mtp, &pl, err);
    if (st) return st;
    const uint64_t align = 32;
    membuf h = {0};
    mb_u32(&h, V4F_GGUF_MAGIC);
    mb_u32(&h, 3);
    mb_u64(&h, pl->n_t);
    mb_u64(&h, pl->n_m);
    for (uint32_t i = 0; i < pl->n_m; i++) mb_meta(&h, &pl->m[i]);
    uint64_t off = 0;
    uint64_t *offs = v4f_xmalloc(pl->n_t * sizeof *offs);
    for (uint32_t i = 0; i < pl->n_t; i++) {
        const v4f_synth_tensor *t = &pl->t[i];
        mb_str(&h, t->name);
        mb_u32(&h, t->n_dims);
        for (uint32_t k = 0; k < t->n_dims; k++) mb_u64(&h, t->ne[k]);
        mb_u32(&h, t->type);
        mb_u64(&h, off);
        offs[i] = off;
        off = (off + t->n_bytes + align - 1) & ~(align - 1);
    }
    uint64_t data0 = (h.n + align - 1) & ~(align - 1);
    uint64_t total = data0 + off;
    /* every page of the image gets written: past MemAvailable the kernel
     * would kill the process part-way (no error to report), so refuse up
     * front; a file written by `v4flash synth` is mmapped instead and needs
     * no such room */
    uint64_t avail = 0;
    if (!o->skeleton && v4f_mem_available(&avail) && total > avail) {
        st = v4f_err_set(err, V4F_STATUS_OOM,
                         "synth: the %s image (%u layers) needs %.1f GiB of host memory and %.1f GiB is "
                         "available; write it to disk with `v4flash synth OUT.gguf --preset %s` and load that "
                         "with -m (mmapped), or use fewer layers (--synthetic %s:N)",
                         o->preset, v4f_synth_plan_n_layer(pl), (double)total / (1u << 30), (double)avail / (1u << 30), o->preset,
                         o->preset);
        goto done;
    }
    void *mem = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
    if (mem == MAP_FAILED) {
        st = v4f_err_set(err, V4F_STATUS_OOM, "synth: cannot map %llu bytes for the %s image: %s",
                         (unsigned long long)total, o->preset, strerror(errno));
        goto done;
    }
#ifdef MADV_HUGEPAGE
    if (!o->skeleton) madvise(mem, total, MADV_HUGEPAGE); /* fewer page faults; advisory */
#endif
    memcpy(mem, h.p, h.n); /* padding and skipped tensors stay zero */
    v4f_pool *pool = v4f_pool_new(o->n_threads);
    uint64_t all = v4f_synth_plan_data_bytes(pl), done_b = 0;
    for (uint32_t i = 0; i < pl->n_t; i++) {
        const v4f_synth_tensor *t = &pl->t[i];
        done_b += t->n_bytes;
        if (o->skeleton && t->n_bytes > SKELETON_MAX_BYTES && t->type != V4F_TYPE_I32) continue;
        gen_parallel(pool, t, o->seed, 0, t->ne[1] * t->ne[2], (uint8_t *)mem + data0 + offs[i]);
        if (o->progress) o->progress(o->progress_ud, done_b, all);
    }
    v4f_pool_free(pool);
    *buf_out = mem;
    *size_out = total;
done:
    free(offs);
    free(h.p);
    v4f_synth_plan_free(pl);
    return st;
}

v4f_status v4f_synth_build_memory(const char *preset, uint32_t n_layer, uint64_t seed, void **buf,
                                  size_t *size, v4f_err *err) {
    v4f_synth_opts o = {.preset = preset, .n_layer = n_layer, .seed = seed};
    return v4f_synth_build_memory_ex(&o, buf, size, err);
}

void v4f_synth_memory_free(void *buf, size_t size) {
    if (buf) munmap(buf, size);
}
