/*
 * config.c - read the deepseek4.* hyperparameters (MODEL.md §2) into a
 * v4f_config and check that they are internally consistent. Every dimension
 * the engine uses comes from here; the published values are only used by
 * v4f_config_is_published (the strict check), never to size anything.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "model/model.h"

#define ARCH "deepseek4."

typedef struct {
    const char *key;
    size_t off; /* offset of the uint32_t field in v4f_config */
} u32_key;

#define U32K(k, f) {ARCH k, offsetof(v4f_config, f)}
static const u32_key k_u32_keys[] = {
    U32K("block_count", n_layer),
    U32K("embedding_length", n_embd),
    U32K("vocab_size", n_vocab),
    U32K("attention.head_count", n_head),
    U32K("attention.head_count_kv", n_head_kv),
    U32K("attention.key_length", head_dim),
    U32K("rope.dimension_count", n_rot),
    U32K("attention.q_lora_rank", q_lora_rank),
    U32K("attention.output_lora_rank", o_lora_rank),
    U32K("attention.output_group_count", o_groups),
    U32K("expert_count", n_expert),
    U32K("expert_used_count", n_expert_used),
    U32K("expert_feed_forward_length", n_ff_exp),
    U32K("expert_shared_count", n_expert_shared),
    U32K("hash_layer_count", n_hash_layer),
    U32K("attention.sliding_window", n_swa),
    U32K("attention.indexer.head_count", n_idx_head),
    U32K("attention.indexer.key_length", idx_head_dim),
    U32K("attention.indexer.top_k", idx_topk),
    U32K("hyper_connection.count", n_hc),
    U32K("hyper_connection.sinkhorn_iterations", hc_iters),
};

typedef struct {
    const char *key;
    size_t off; /* offset of the float field */
} f32_key;

#define F32K(k, f) {ARCH k, offsetof(v4f_config, f)}
static const f32_key k_f32_keys[] = {
    F32K("hyper_connection.epsilon", hc_eps),
    F32K("attention.layer_norm_rms_epsilon", rms_eps),
    F32K("rope.freq_base", rope_base),
    F32K("attention.compress_rope_freq_base", rope_base_compress),
    F32K("rope.scaling.factor", yarn_factor),
    F32K("rope.scaling.yarn_beta_fast", yarn_beta_fast),
    F32K("rope.scaling.yarn_beta_slow", yarn_beta_slow),
    F32K("expert_weights_scale", expert_weights_scale),
};

static v4f_status need(v4f_status st, const char *key, v4f_err *err) {
    if (st == V4F_STATUS_NOT_FOUND)
        return v4f_err_set(err, V4F_STATUS_LAYOUT, "missing required metadata key '%s'", key);
    return st;
}

static v4f_status load_per_layer_arrays(const v4f_gguf *g, v4f_config *c, v4f_err *err) {
    const char *rkey = ARCH "attention.compress_ratios";
    const v4f_gguf_kv *kv = v4f_gguf_kv_find(g, rkey);
    if (!kv) return v4f_err_set(err, V4F_STATUS_LAYOUT, "missing required metadata key '%s'", rkey);
    if (kv->type != V4F_GGUF_ARRAY || kv->arr_n < c->n_layer || kv->arr_n > V4F_MAX_LAYERS + 1)
        return v4f_err_set(err, V4F_STATUS_LAYOUT,
                           "'%s': expected an integer array of %u or %u entries, found %s of %llu",
                           rkey, c->n_layer, c->n_layer + 1, v4f_gguf_vtype_name(kv->type),
                           (unsigned long long)(kv->type == V4F_GGUF_ARRAY ? kv->arr_n : 0));
    c->n_compress_ratio = (uint32_t)kv->arr_n;
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        int64_t v;
        if (!v4f_gguf_arr_int(kv, i, &v))
            return v4f_err_set(err, V4F_STATUS_LAYOUT, "'%s': element %llu is not an integer",
                               rkey, (unsigned long long)i);
        if (v != 0 && v != 4 && v != 128)
            return v4f_err_set(err, V4F_STATUS_LAYOUT,
                               "'%s'[%llu] = %lld: expected 0, 4 or 128", rkey,
                               (unsigned long long)i, (long long)v);
        c->compress_ratio[i] = (uint32_t)v;
    }
    if (kv->arr_n > c->n_layer && c->compress_ratio[c->n_layer] != 0)
        return v4f_err_set(err, V4F_STATUS_LAYOUT, "'%s': MTP entry [%u] must be 0", rkey,
                           c->n_layer);

    const char *skey = ARCH "swiglu_clamp_exp";
    kv = v4f_gguf_kv_find(g, skey);
    if (!kv) return v4f_err_set(err, V4F_STATUS_LAYOUT, "missing required metadata key '%s'", skey);
    if (kv->type != V4F_GGUF_ARRAY || kv->arr_n < c->n_layer)
        return v4f_err_set(err, V4F_STATUS_LAYOUT,
                           "'%s': expected a float array of at least %u entries", skey,
                           c->n_layer);
    for (uint64_t i = 0; i <= c->n_layer; i++) {
        double v = 0;
        uint64_t src = i < kv->arr_n ? i : kv->arr_n - 1; /* MTP reuses the last limit */
        if (!v4f_gguf_arr_float(kv, src, &v) || !(v > 0) || !isfinite(v))
            return v4f_err_set(err, V4F_STATUS_LAYOUT,
                               "'%s'[%llu]: expected a positive float", skey,
                               (unsigned long long)src);
        c->swiglu_limit[i] = (float)v;
    }
    return V4F_OK;
}

static v4f_status check_consistency(const v4f_config *c, v4f_err *err) {
#define REQ(cond, ...) \
    do { if (!(cond)) return v4f_err_set(err, V4F_STATUS_LAYOUT, __VA_ARGS__); } while (0)
    REQ(c->n_layer >= 1 && c->n_layer <= V4F_MAX_LAYERS, "block_count %u out of range 1..%d",
        c->n_layer, V4F_MAX_LAYERS);
    REQ(c->n_embd > 0 && c->n_vocab > 0 && c->n_head > 0, "zero embedding/vocab/head count");
    REQ(c->n_head_kv == 1, "attention.head_count_kv = %u: this model has one shared K=V head",
        c->n_head_kv);
    REQ(c->n_rot > 0 && c->n_rot % 2 == 0 && c->n_rot < c->head_dim,
        "rope.dimension_count %u must be even and smaller than key_length %u", c->n_rot,
        c->head_dim);
    REQ(c->n_rot < c->idx_head_dim, "rope.dimension_count %u must be smaller than the indexer key_length %u",
        c->n_rot, c->idx_head_dim);
    REQ(c->o_groups > 0 && c->n_head % c->o_groups == 0,
        "head_count %u not divisible by output_group_count %u", c->n_head, c->o_groups);
    REQ(c->q_lora_rank > 0 && c->o_lora_rank > 0, "zero LoRA rank");
    REQ(c->n_expert > 0 && c->n_expert_used > 0 && c->n_expert_used <= c->n_expert,
        "expert_used_count %u must be in 1..expert_count %u", c->n_expert_used, c->n_expert);
    REQ(c->n_ff_exp > 0, "expert_feed_forward_length is 0");
    REQ(c->n_expert_shared <= 1, "expert_shared_count %u: at most one shared expert is supported",
        c->n_expert_shared);
    REQ(c->n_hash_layer <= c->n_layer, "hash_layer_count %u > block_count %u", c->n_hash_layer,
        c->n_layer);
    REQ(c->n_swa > 0, "sliding_window is 0");
    REQ(c->n_idx_head > 0 && c->idx_head_dim > 0 && c->idx_topk > 0, "zero indexer size");
    REQ(c->n_hc >= 1 && c->n_hc <= V4F_MAX_HC, "hyper_connection.count %u out of range 1..%d",
        c->n_hc, V4F_MAX_HC);
    REQ(c->hc_iters >= 1 && c->hc_iters <= 1000, "sinkhorn_iterations %u out of range",
        c->hc_iters);
    REQ(c->hc_eps > 0 && c->rms_eps > 0, "epsilons must be positive");
    REQ(c->rope_base > 1 && c->rope_base_compress > 1, "RoPE bases must exceed 1");
    REQ(c->yarn_factor >= 1 && c->yarn_orig_ctx > 0, "bad YaRN factor/original context");
    REQ(c->yarn_beta_fast > 0 && c->yarn_beta_slow > 0, "bad YaRN betas");
    REQ(c->expert_weights_scale > 0 && isfinite(c->expert_weights_scale),
        "expert_weights_scale must be positive");
#undef REQ
    return V4F_OK;
}

v4f_status v4f_config_load(const v4f_gguf *g, v4f_config *c, v4f_err *err) {
    memset(c, 0, sizeof *c);
    v4f_status st;
    for (size_t i = 0; i < sizeof k_u32_keys / sizeof k_u32_keys[0]; i++) {
        uint32_t *dst = (uint32_t *)((char *)c + k_u32_keys[i].off);
        st = need(v4f_gguf_get_u32(g, k_u32_keys[i].key, dst, err), k_u32_keys[i].key, err);
        if (st) return st;
    }
    uint32_t vlen = 0;
    st = need(v4f_gguf_get_u32(g, ARCH "attention.value_length", &vlen, err),
              ARCH "attention.value_length", err);
    if (st) return st;
    if (vlen != c->head_dim)
        return v4f_err_set(err, V4F_STATUS_LAYOUT,
                           "attention.value_length %u != key_length %u (K and V share one row)",
                           vlen, c->head_dim);
    for (size_t i = 0; i < sizeof k_f32_keys / sizeof k_f32_keys[0]; i++) {
        float *dst = (float *)((char *)c + k_f32_keys[i].off);
        st = need(v4f_gguf_get_f32(g, k_f32_keys[i].key, dst, err), k_f32_keys[i].key, err);
        if (st) return st;
    }
    st = need(v4f_gguf_get_u64(g, ARCH "rope.scaling.original_context_length", &c->yarn_orig_ctx,
                               err),
              ARCH "rope.scaling.original_context_length", err);
    if (st) return st;
    st = need(v4f_gguf_get_bool(g, ARCH "expert_weights_norm", &c->expert_weights_norm, err),
              ARCH "expert_weights_norm", err);
    if (st) return st;
    /* optional */
    c->context_length = 0;
    st = v4f_gguf_get_u64(g, ARCH "context_length", &c->context_length, err);
    if (st && st != V4F_STATUS_NOT_FOUND) return st;
    const char *grp[] = {ARCH "expert_group_count", ARCH "expert_group_used_count"};
    for (int i = 0; i < 2; i++) {
        uint32_t v = 0;
        st = v4f_gguf_get_u32(g, grp[i], &v, err);
        if (st && st != V4F_STATUS_NOT_FOUND) return st;
        if (!st && v > 1)
            return v4f_err_set(err, V4F_STATUS_LAYOUT,
                               "'%s' = %u: group-limited routing is not part of this model", grp[i], v);
    }
    if (err) err->code = V4F_OK;
    if ((st = load_per_layer_arrays(g, c, err))) return st;
    return check_consistency(c, err);
}

bool v4f_config_is_published(const v4f_config *c, v4f_err *why) {
#define PUB(field, val)                                                             \
    do {                                                                            \
        if ((double)c->field != (double)(val)) {                                    \
            v4f_err_set(why, V4F_STATUS_LAYOUT, "%s = %g, published model has %g",  \
                        #field, (double)c->field, (double)(val));                   \
            return false;                                                           \
        }                                                                           \
    } while (0)
    PUB(n_layer, 43); PUB(n_embd, 4096); PUB(n_vocab, 129280); PUB(n_head, 64);
    PUB(n_head_kv, 1); PUB(head_dim, 512); PUB(n_rot, 64); PUB(q_lora_rank, 1024);
    PUB(o_lora_rank, 1024); PUB(o_groups, 8); PUB(n_expert, 256); PUB(n_expert_used, 6);
    PUB(n_ff_exp, 2048); PUB(n_expert_shared, 1); PUB(n_hash_layer, 3); PUB(n_swa, 128);
    PUB(n_idx_head, 64); PUB(idx_head_dim, 128); PUB(idx_topk, 512); PUB(n_hc, 4);
    PUB(hc_iters, 20); PUB(rope_base, 10000); PUB(rope_base_compress, 160000);
    PUB(yarn_factor, 16); PUB(yarn_orig_ctx, 65536); PUB(yarn_beta_fast, 32);
    PUB(yarn_beta_slow, 1); PUB(expert_weights_scale, 1.5f);
    PUB(hc_eps, 1e-6f); PUB(rms_eps, 1e-6f);
#undef PUB
    for (uint32_t l = 0; l < c->n_layer; l++) {
        uint32_t want = l < 2 ? 0 : (l % 2 == 0 ? 4 : 128);
        if (c->compress_ratio[l] != want) {
            v4f_err_set(why, V4F_STATUS_LAYOUT,
                        "compress_ratios[%u] = %u, published model has %u", l,
                        c->compress_ratio[l], want);
            return false;
        }
        if (c->swiglu_limit[l] != 10.0f) {
            v4f_err_set(why, V4F_STATUS_LAYOUT, "swiglu_clamp_exp[%u] = %g, published has 10", l,
                        (double)c->swiglu_limit[l]);
            return false;
        }
    }
    if (!c->expert_weights_norm) {
        v4f_err_set(why, V4F_STATUS_LAYOUT, "expert_weights_norm is false, published has true");
        return false;
    }
    return true;
}
