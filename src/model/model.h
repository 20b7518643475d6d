/*
 * model.h - DeepSeek V4 Flash model description: the configuration read from
 * GGUF metadata (every dimension comes from here; nothing is compiled in),
 * and the weights bound by name to views into the mmapped file(s).
 *
 * Layout validation: every tensor of MODEL.md §3 is checked for presence,
 * type (any type the kernels support for a matrix; F32/F16/BF16 for float
 * vectors; I32 for tid2eid) and shape against the config. A separate strict
 * check tells whether a file is one of the published ds4 layouts (the real
 * hyperparameters plus the q2 or q4 type mix).
 *
 * Ownership: v4f_model owns its v4f_gguf handles (main file and optional MTP
 * file); every v4f_wt points into those maps and lives until v4f_model_close.
 * Threading: immutable after open.
 */
#ifndef V4F_MODEL_H
#define V4F_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "core/core.h"
#include "gguf/gguf.h"

#define V4F_MAX_LAYERS 128 /* array capacity only; the model says how many */
#define V4F_MAX_HC 8

typedef struct v4f_config {
    uint32_t n_layer;         /* deepseek4.block_count (43) */
    uint32_t n_embd;          /* embedding_length (4096) */
    uint32_t n_vocab;         /* vocab_size (129280) */
    uint32_t n_head;          /* attention.head_count (64) */
    uint32_t n_head_kv;       /* attention.head_count_kv (1) */
    uint32_t head_dim;        /* attention.key_length == value_length (512) */
    uint32_t n_rot;           /* rope.dimension_count: last n_rot dims of a head (64) */
    uint32_t q_lora_rank;     /* attention.q_lora_rank (1024) */
    uint32_t o_lora_rank;     /* attention.output_lora_rank (1024) */
    uint32_t o_groups;        /* attention.output_group_count (8) */
    uint32_t n_expert;        /* expert_count (256) */
    uint32_t n_expert_used;   /* expert_used_count (6) */
    uint32_t n_ff_exp;        /* expert_feed_forward_length (2048) */
    uint32_t n_expert_shared; /* expert_shared_count (1) */
    uint32_t n_hash_layer;    /* hash_layer_count (3): layers [0, n) use tid2eid */
    uint32_t n_swa;           /* attention.sliding_window (128), incl. current token */
    uint32_t n_idx_head;      /* attention.indexer.head_count (64) */
    uint32_t idx_head_dim;    /* attention.indexer.key_length (128) */
    uint32_t idx_topk;        /* attention.indexer.top_k (512) */
    uint32_t n_hc;            /* hyper_connection.count (4) */
    uint32_t hc_iters;        /* hyper_connection.sinkhorn_iterations (20) */
    float hc_eps;             /* hyper_connection.epsilon (1e-6) */
    float rms_eps;            /* attention.layer_norm_rms_epsilon (1e-6) */
    /* compress ratio per layer (0, 4 or 128); entry n_layer is the MTP block
     * (0) when the metadata carries it. */
    uint32_t compress_ratio[V4F_MAX_LAYERS + 1];
    uint32_t n_compress_ratio; /* entries present in the metadata */
    float swiglu_limit[V4F_MAX_LAYERS + 1]; /* swiglu_clamp_exp per layer (10) */
    float rope_base;          /* rope.freq_base (10000): ratio-0 layers, MTP */
    float rope_base_compress; /* attention.compress_rope_freq_base (160000) */
    float yarn_factor;        /* rope.scaling.factor (16) */
    uint64_t yarn_orig_ctx;   /* rope.scaling.original_context_length (65536) */
    float yarn_beta_fast;     /* rope.scaling.yarn_beta_fast (32) */
    float yarn_beta_slow;     /* rope.scaling.yarn_beta_slow (1) */
    float expert_weights_scale; /* expert_weights_scale (1.5) */
    bool expert_weights_norm;   /* expert_weights_norm (true) */
    uint64_t context_length;    /* context_length (informational, 1M) */
} v4f_config;

/* Read every deepseek4.* key of MODEL.md §2 and check internal consistency
 * (positive sizes, head_dim > n_rot, n_head divisible by o_groups, ...). */
v4f_status v4f_config_load(const v4f_gguf *g, v4f_config *cfg, v4f_err *err);
/* true if cfg has exactly the published DeepSeek V4 Flash hyperparameters. */
bool v4f_config_is_published(const v4f_config *cfg, v4f_err *why);
/* Derived sizes. */
static inline uint32_t v4f_config_hc_mix(const v4f_config *c) { return (2 + c->n_hc) * c->n_hc; }

/* A weight tensor view. 1-D vectors have n_out = n_mat = 1; 2-D matrices have
 * n_mat = 1; routed experts are 3-D with n_mat = n_expert. Row r of matrix m
 * starts at data + m*mat_bytes + r*row_bytes. data == NULL: absent. */
typedef struct v4f_wt {
    const void *data;
    uint32_t type;       /* v4f_ggml_type */
    uint64_t n_in;       /* ne[0]: inputs per row */
    uint64_t n_out;      /* ne[1]: rows */
    uint64_t n_mat;      /* ne[2]: matrices (experts) */
    uint64_t row_bytes;
    uint64_t mat_bytes;
    const char *name;    /* tensor name (for messages) */
} v4f_wt;

static inline const void *v4f_wt_row(const v4f_wt *w, uint64_t mat, uint64_t row) {
    return (const uint8_t *)w->data + mat * w->mat_bytes + row * w->row_bytes;
}

/* Per-layer weights; GGUF names `blk.L.<field>` (MTP: `mtp.0.<field>`). */
typedef struct v4f_layer_weights {
    uint32_t compress_ratio; /* 0, 4 or 128 */
    bool hash_routed;        /* uses ffn_gate_tid2eid instead of the router top-k */

    /* hyper-connection mixers */
    v4f_wt hc_attn_fn;    /* [n_hc*d, mix] */
    v4f_wt hc_attn_scale; /* [3] */
    v4f_wt hc_attn_base;  /* [mix] */
    v4f_wt hc_ffn_fn, hc_ffn_scale, hc_ffn_base;

    /* attention */
    v4f_wt attn_norm;      /* [d] */
    v4f_wt attn_q_a;       /* [d, q_lora] */
    v4f_wt attn_q_a_norm;  /* [q_lora] */
    v4f_wt attn_q_b;       /* [q_lora, n_head*head_dim] */
    v4f_wt attn_kv;        /* [d, head_dim] */
    v4f_wt attn_kv_a_norm; /* [head_dim] */
    v4f_wt attn_sinks;     /* [n_head] */
    v4f_wt attn_output_a;  /* [n_head*head_dim/o_groups, o_groups*o_lora] */
    v4f_wt attn_output_b;  /* [o_groups*o_lora, d] */

    /* compressor (compress_ratio != 0); W = (ratio == 4 ? 2 : 1) * head_dim */
    v4f_wt comp_ape;  /* [W, ratio] */
    v4f_wt comp_kv;   /* [d, W] */
    v4f_wt comp_gate; /* [d, W] */
    v4f_wt comp_norm; /* [head_dim] */

    /* indexer (compress_ratio == 4); Wi = 2 * idx_head_dim */
    v4f_wt idx_q_b;       /* [q_lora, n_idx_head*idx_head_dim] */
    v4f_wt idx_proj;      /* [d, n_idx_head] */
    v4f_wt idx_comp_ape;  /* [Wi, 4] */
    v4f_wt idx_comp_kv;   /* [d, Wi] */
    v4f_wt idx_comp_gate; /* [d, Wi] */
    v4f_wt idx_comp_norm; /* [idx_head_dim] */

    /* MoE */
    v4f_wt ffn_norm;       /* [d] */
    v4f_wt ffn_gate_inp;   /* [d, n_expert] router */
    v4f_wt exp_probs_b;    /* [n_expert] selection bias (non-hash layers) */
    v4f_wt ffn_gate_tid2eid; /* [n_expert_used, n_vocab] I32 (hash layers) */
    v4f_wt ffn_gate_exps;  /* [d, n_ff, n_expert] */
    v4f_wt ffn_up_exps;    /* [d, n_ff, n_expert] */
    v4f_wt ffn_down_exps;  /* [n_ff, d, n_expert] */
    v4f_wt ffn_gate_shexp; /* [d, n_ff*n_shared] */
    v4f_wt ffn_up_shexp;   /* [d, n_ff*n_shared] */
    v4f_wt ffn_down_shexp; /* [n_ff*n_shared, d] */
} v4f_layer_weights;

typedef struct v4f_mtp_weights {
    v4f_wt e_proj;        /* [d, d] */
    v4f_wt h_proj;        /* [d, d] */
    v4f_wt enorm, hnorm;  /* [d] */
    v4f_wt norm;          /* [d] */
    v4f_wt hc_head_fn;    /* [n_hc*d, n_hc] */
    v4f_wt hc_head_base;  /* [n_hc] */
    v4f_wt hc_head_scale; /* [1] */
    v4f_layer_weights block; /* ratio 0, biased top-k routing */
} v4f_mtp_weights;

typedef struct v4f_model {
    v4f_gguf *gguf;     /* main file (maybe split) */
    v4f_gguf *mtp_gguf; /* optional separate MTP file */
    v4f_config cfg;

    v4f_wt token_embd;      /* [d, n_vocab] */
    v4f_wt output_hc_fn;    /* [n_hc*d, n_hc] */
    v4f_wt output_hc_base;  /* [n_hc] */
    v4f_wt output_hc_scale; /* [1] */
    v4f_wt output_norm;     /* [d] */
    v4f_wt output;          /* [d, n_vocab] LM head */

    v4f_layer_weights *layers; /* [n_layer] */
    bool has_mtp;
    v4f_mtp_weights mtp;

    uint64_t weight_bytes; /* bytes of all bound tensors */
} v4f_model;

/* Layout problems collected during binding (for `inspect`). */
#define V4F_LAYOUT_MAX_ISSUES 64
typedef struct v4f_layout_report {
    int n_issues;      /* may exceed V4F_LAYOUT_MAX_ISSUES; only the first are kept */
    char issues[V4F_LAYOUT_MAX_ISSUES][256];
} v4f_layout_report;

/* Bind and validate. Opens path (split files too) and, if mtp_path is not
 * NULL, the MTP file (whose metadata must agree with the main config).
 * report (optional) receives every layout issue; err gets the first. */
v4f_status v4f_model_open(const char *path, const char *mtp_path, v4f_model **out,
                          v4f_layout_report *report, v4f_err *err);
/* Bind from already-open gguf handles (takes ownership of both on success
 * and on failure). */
v4f_status v4f_model_open_gguf(v4f_gguf *g, v4f_gguf *mtp, v4f_model **out,
                               v4f_layout_report *report, v4f_err *err);
void v4f_model_close(v4f_model *m);

/* Validate a stand-alone MTP file (mtp.0.* tensors) against its own
 * deepseek4.* metadata (used by `inspect`; engines bind MTP through
 * v4f_model_open). */
v4f_status v4f_mtp_file_validate(const v4f_gguf *mtp, v4f_config *cfg,
                                 v4f_layout_report *report, v4f_err *err);

/* Which published variant this is: "q2", "q4" (real hyperparameters and the
 * published type mix), NULL otherwise (why explains the first difference). */
const char *v4f_model_published_variant(const v4f_model *m, v4f_err *why);

#endif /* V4F_MODEL_H */
