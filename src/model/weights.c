/*
 * weights.c - bind every tensor of the DeepSeek V4 Flash layout (MODEL.md §3)
 * by name to a v4f_wt view into the mmapped GGUF, and validate presence, type
 * and shape against the config.
 *
 * Type policy: a matrix may be of any type the quant kernels support (files
 * converted by other tools use other types for the same names); float vectors
 * (norms, biases, scales, sinks, ape) must be F32/F16/BF16; tid2eid must be
 * I32. The strict "published layout" check (v4f_model_published_variant)
 * additionally pins the ds4 q2/q4 type mix.
 *
 * Every problem found is appended to a v4f_layout_report (for `inspect`); the
 * first one is returned through v4f_err. Weights are never copied.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "quant/quant.h"

typedef enum {
    KIND_MAT, /* quantizable matrix (any supported weight type) */
    KIND_VEC, /* float-only tensor (F32/F16/BF16) */
    KIND_I32, /* integer table */
} tensor_kind;

/* Type classes of the published ds4 files (strict check only). */
typedef enum {
    PUB_F32,
    PUB_F16,
    PUB_Q8,
    PUB_I32,
    PUB_EXP_GATEUP, /* q2: IQ2_XXS, q4: Q4_K */
    PUB_EXP_DOWN,   /* q2: Q2_K,    q4: Q4_K */
} pub_class;

typedef enum {
    WHEN_ALWAYS,
    WHEN_COMPRESSED, /* ratio != 0 */
    WHEN_RATIO4,     /* ratio == 4: indexer */
    WHEN_HASH,       /* hash-routed layer */
    WHEN_NOT_HASH,   /* router-biased layer */
} tensor_when;

/* Expected shape symbols, resolved per config/layer in shape_of(). */
typedef enum {
    S_1, S_3, S_D, S_HCD, S_MIX, S_NHC, S_QLORA, S_QHEADS, S_HEAD, S_NHEAD, S_OA_IN, S_OA_OUT,
    S_VOCAB, S_NEXP, S_NUSED, S_FF, S_FFSH, S_CW, S_RATIO, S_IDXQ, S_NIDXH, S_IW, S_4, S_IDXD,
} dim_sym;

typedef struct {
    const char *suffix;
    size_t off; /* offset of the v4f_wt in v4f_layer_weights / v4f_model / v4f_mtp_weights */
    tensor_kind kind;
    pub_class pub;
    tensor_when when;
    uint8_t n_dims;
    dim_sym dims[3];
} tensor_spec;

#define LW(f) offsetof(v4f_layer_weights, f)
static const tensor_spec k_layer_specs[] = {
    {"hc_attn_fn.weight", LW(hc_attn_fn), KIND_MAT, PUB_F16, WHEN_ALWAYS, 2, {S_HCD, S_MIX}},
    {"hc_attn_scale.weight", LW(hc_attn_scale), KIND_VEC, PUB_F32, WHEN_ALWAYS, 1, {S_3}},
    {"hc_attn_base.weight", LW(hc_attn_base), KIND_VEC, PUB_F32, WHEN_ALWAYS, 1, {S_MIX}},
    {"attn_norm.weight", LW(attn_norm), KIND_VEC, PUB_F32, WHEN_ALWAYS, 1, {S_D}},
    {"attn_q_a.weight", LW(attn_q_a), KIND_MAT, PUB_Q8, WHEN_ALWAYS, 2, {S_D, S_QLORA}},
    {"attn_q_a_norm.weight", LW(attn_q_a_norm), KIND_VEC, PUB_F32, WHEN_ALWAYS, 1, {S_QLORA}},
    {"attn_q_b.weight", LW(attn_q_b), KIND_MAT, PUB_Q8, WHEN_ALWAYS, 2, {S_QLORA, S_QHEADS}},
    {"attn_kv.weight", LW(attn_kv), KIND_MAT, PUB_Q8, WHEN_ALWAYS, 2, {S_D, S_HEAD}},
    {"attn_kv_a_norm.weight", LW(attn_kv_a_norm), KIND_VEC, PUB_F32, WHEN_ALWAYS, 1, {S_HEAD}},
    {"attn_sinks.weight", LW(attn_sinks), KIND_VEC, PUB_F32, WHEN_ALWAYS, 1, {S_NHEAD}},
    {"attn_output_a.weight", LW(attn_output_a), KIND_MAT, PUB_Q8, WHEN_ALWAYS, 2, {S_OA_IN, S_OA_OUT}},
    {"attn_output_b.weight", LW(attn_output_b), KIND_MAT, PUB_Q8, WHEN_ALWAYS, 2, {S_OA_OUT, S_D}},
    {"hc_ffn_fn.weight", LW(hc_ffn_fn), KIND_MAT, PUB_F16, WHEN_ALWAYS, 2, {S_HCD, S_MIX}},
    {"hc_ffn_scale.weight", LW(hc_ffn_scale), KIND_VEC, PUB_F32, WHEN_ALWAYS, 1, {S_3}},
    {"hc_ffn_base.weight", LW(hc_ffn_base), KIND_VEC, PUB_F32, WHEN_ALWAYS, 1, {S_MIX}},
    {"ffn_norm.weight", LW(ffn_norm), KIND_VEC, PUB_F32, WHEN_ALWAYS, 1, {S_D}},
    {"ffn_gate_inp.weight", LW(ffn_gate_inp), KIND_MAT, PUB_F16, WHEN_ALWAYS, 2, {S_D, S_NEXP}},
    {"exp_probs_b.bias", LW(exp_probs_b), KIND_VEC, PUB_F32, WHEN_NOT_HASH, 1, {S_NEXP}},
    {"ffn_gate_tid2eid.weight", LW(ffn_gate_tid2eid), KIND_I32, PUB_I32, WHEN_HASH, 2, {S_NUSED, S_VOCAB}},
    {"ffn_gate_exps.weight", LW(ffn_gate_exps), KIND_MAT, PUB_EXP_GATEUP, WHEN_ALWAYS, 3, {S_D, S_FF, S_NEXP}},
    {"ffn_up_exps.weight", LW(ffn_up_exps), KIND_MAT, PUB_EXP_GATEUP, WHEN_ALWAYS, 3, {S_D, S_FF, S_NEXP}},
    {"ffn_down_exps.weight", LW(ffn_down_exps), KIND_MAT, PUB_EXP_DOWN, WHEN_ALWAYS, 3, {S_FF, S_D, S_NEXP}},
    {"ffn_gate_shexp.weight", LW(ffn_gate_shexp), KIND_MAT, PUB_Q8, WHEN_ALWAYS, 2, {S_D, S_FFSH}},
    {"ffn_up_shexp.weight", LW(ffn_up_shexp), KIND_MAT, PUB_Q8, WHEN_ALWAYS, 2, {S_D, S_FFSH}},
    {"ffn_down_shexp.weight", LW(ffn_down_shexp), KIND_MAT, PUB_Q8, WHEN_ALWAYS, 2, {S_FFSH, S_D}},
    {"attn_compressor_ape.weight", LW(comp_ape), KIND_VEC, PUB_F16, WHEN_COMPRESSED, 2, {S_CW, S_RATIO}},
    {"attn_compressor_kv.weight", LW(comp_kv), KIND_MAT, PUB_F16, WHEN_COMPRESSED, 2, {S_D, S_CW}},
    {"attn_compressor_gate.weight", LW(comp_gate), KIND_MAT, PUB_F16, WHEN_COMPRESSED, 2, {S_D, S_CW}},
    {"attn_compressor_norm.weight", LW(comp_norm), KIND_VEC, PUB_F32, WHEN_COMPRESSED, 1, {S_HEAD}},
    {"indexer.attn_q_b.weight", LW(idx_q_b), KIND_MAT, PUB_F16, WHEN_RATIO4, 2, {S_QLORA, S_IDXQ}},
    {"indexer.proj.weight", LW(idx_proj), KIND_MAT, PUB_F16, WHEN_RATIO4, 2, {S_D, S_NIDXH}},
    {"indexer_compressor_ape.weight", LW(idx_comp_ape), KIND_VEC, PUB_F16, WHEN_RATIO4, 2, {S_IW, S_4}},
    {"indexer_compressor_kv.weight", LW(idx_comp_kv), KIND_MAT, PUB_F16, WHEN_RATIO4, 2, {S_D, S_IW}},
    {"indexer_compressor_gate.weight", LW(idx_comp_gate), KIND_MAT, PUB_F16, WHEN_RATIO4, 2, {S_D, S_IW}},
    {"indexer_compressor_norm.weight", LW(idx_comp_norm), KIND_VEC, PUB_F32, WHEN_RATIO4, 1, {S_IDXD}},
};
#define N_LAYER_SPECS (sizeof k_layer_specs / sizeof k_layer_specs[0])

#define MW(f) offsetof(v4f_model, f)
static const tensor_spec k_global_specs[] = {
    {"token_embd.weight", MW(token_embd), KIND_MAT, PUB_F16, WHEN_ALWAYS, 2, {S_D, S_VOCAB}},
    {"output_hc_base.weight", MW(output_hc_base), KIND_VEC, PUB_F32, WHEN_ALWAYS, 1, {S_NHC}},
    {"output_hc_fn.weight", MW(output_hc_fn), KIND_MAT, PUB_F16, WHEN_ALWAYS, 2, {S_HCD, S_NHC}},
    {"output_hc_scale.weight", MW(output_hc_scale), KIND_VEC, PUB_F32, WHEN_ALWAYS, 1, {S_1}},
    {"output_norm.weight", MW(output_norm), KIND_VEC, PUB_F32, WHEN_ALWAYS, 1, {S_D}},
    {"output.weight", MW(output), KIND_MAT, PUB_Q8, WHEN_ALWAYS, 2, {S_D, S_VOCAB}},
};

#define TW(f) offsetof(v4f_mtp_weights, f)
static const tensor_spec k_mtp_specs[] = {
    {"e_proj.weight", TW(e_proj), KIND_MAT, PUB_Q8, WHEN_ALWAYS, 2, {S_D, S_D}},
    {"h_proj.weight", TW(h_proj), KIND_MAT, PUB_Q8, WHEN_ALWAYS, 2, {S_D, S_D}},
    {"enorm.weight", TW(enorm), KIND_VEC, PUB_F32, WHEN_ALWAYS, 1, {S_D}},
    {"hnorm.weight", TW(hnorm), KIND_VEC, PUB_F32, WHEN_ALWAYS, 1, {S_D}},
    {"norm.weight", TW(norm), KIND_VEC, PUB_F32, WHEN_ALWAYS, 1, {S_D}},
    {"hc_head_fn.weight", TW(hc_head_fn), KIND_MAT, PUB_F16, WHEN_ALWAYS, 2, {S_HCD, S_NHC}},
    {"hc_head_base.weight", TW(hc_head_base), KIND_VEC, PUB_F32, WHEN_ALWAYS, 1, {S_NHC}},
    {"hc_head_scale.weight", TW(hc_head_scale), KIND_VEC, PUB_F32, WHEN_ALWAYS, 1, {S_1}},
};

typedef struct {
    const v4f_config *cfg;
    uint32_t ratio; /* of the layer being bound */
    v4f_layout_report *report;
    v4f_err *err;
    int n_issues;
} bind_ctx;

static void issue(bind_ctx *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void issue(bind_ctx *b, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (b->n_issues == 0) v4f_err_set(b->err, V4F_STATUS_LAYOUT, "%s", msg);
    if (b->report) {
        if (b->report->n_issues < V4F_LAYOUT_MAX_ISSUES)
            snprintf(b->report->issues[b->report->n_issues], sizeof b->report->issues[0], "%s",
                     msg);
        b->report->n_issues++;
    }
    b->n_issues++;
}

static uint64_t shape_of(const bind_ctx *b, dim_sym s) {
    const v4f_config *c = b->cfg;
    switch (s) {
    case S_1: return 1;
    case S_3: return 3;
    case S_4: return 4;
    case S_D: return c->n_embd;
    case S_HCD: return (uint64_t)c->n_hc * c->n_embd;
    case S_MIX: return v4f_config_hc_mix(c);
    case S_NHC: return c->n_hc;
    case S_QLORA: return c->q_lora_rank;
    case S_QHEADS: return (uint64_t)c->n_head * c->head_dim;
    case S_HEAD: return c->head_dim;
    case S_NHEAD: return c->n_head;
    case S_OA_IN: return (uint64_t)c->n_head * c->head_dim / c->o_groups;
    case S_OA_OUT: return (uint64_t)c->o_groups * c->o_lora_rank;
    case S_VOCAB: return c->n_vocab;
    case S_NEXP: return c->n_expert;
    case S_NUSED: return c->n_expert_used;
    case S_FF: return c->n_ff_exp;
    case S_FFSH: return (uint64_t)c->n_ff_exp * (c->n_expert_shared ? c->n_expert_shared : 1);
    case S_CW: return (uint64_t)(b->ratio == 4 ? 2 : 1) * c->head_dim;
    case S_RATIO: return b->ratio;
    case S_IDXQ: return (uint64_t)c->n_idx_head * c->idx_head_dim;
    case S_NIDXH: return c->n_idx_head;
    case S_IW: return 2ull * c->idx_head_dim;
    case S_IDXD: return c->idx_head_dim;
    }
    return 0;
}

static bool kind_accepts(tensor_kind k, uint32_t type) {
    switch (k) {
    case KIND_MAT: return v4f_quant_supported(type);
    case KIND_VEC: return type == V4F_TYPE_F32 || type == V4F_TYPE_F16 || type == V4F_TYPE_BF16;
    case KIND_I32: return type == V4F_TYPE_I32;
    }
    return false;
}

static const char *kind_expect(tensor_kind k) {
    switch (k) {
    case KIND_MAT: return "a supported weight type (F32, F16, BF16, Q8_0, Q2_K, Q4_K, IQ2_XXS)";
    case KIND_VEC: return "F32, F16 or BF16";
    case KIND_I32: return "I32";
    }
    return "?";
}

static void fmt_shape(char *buf, size_t n, const uint64_t *ne, uint32_t nd) {
    size_t o = (size_t)snprintf(buf, n, "[");
    for (uint32_t i = 0; i < nd && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%llu", i ? ", " : "", (unsigned long long)ne[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

/* Bind one tensor: find, check type and shape, fill the view. */
static void bind_one(bind_ctx *b, const v4f_gguf *g, const char *name, const tensor_spec *sp,
                     v4f_wt *w, uint64_t *total_bytes) {
    memset(w, 0, sizeof *w);
    const v4f_gguf_tensor *t = v4f_gguf_tensor_find(g, name);
    if (!t) {
        issue(b, "missing tensor '%s'", name);
        return;
    }
    uint64_t want[3];
    for (int i = 0; i < sp->n_dims; i++) want[i] = shape_of(b, sp->dims[i]);
    /* trailing 1-dims are equivalent (a [n,1] tensor is a vector) */
    uint32_t nd = t->n_dims;
    while (nd > sp->n_dims && t->ne[nd - 1] == 1) nd--;
    bool shape_ok = nd == sp->n_dims;
    for (int i = 0; shape_ok && i < sp->n_dims; i++) shape_ok = t->ne[i] == want[i];
    if (!shape_ok) {
        char found[96], exp[96];
        fmt_shape(found, sizeof found, t->ne, t->n_dims);
        fmt_shape(exp, sizeof exp, want, sp->n_dims);
        issue(b, "tensor '%s': shape %s, expected %s", name, found, exp);
        return;
    }
    if (!kind_accepts(sp->kind, t->type)) {
        issue(b, "tensor '%s': type %s, expected %s", name, v4f_type_name(t->type),
              kind_expect(sp->kind));
        return;
    }
    uint64_t row_bytes;
    if (!v4f_type_row_bytes(t->type, t->ne[0], &row_bytes)) {
        issue(b, "tensor '%s': row of %llu elements is not a multiple of the %s block", name,
              (unsigned long long)t->ne[0], v4f_type_name(t->type));
        return;
    }
    w->data = t->data;
    w->type = t->type;
    w->n_in = t->ne[0];
    w->n_out = sp->n_dims >= 2 ? t->ne[1] : 1;
    w->n_mat = sp->n_dims >= 3 ? t->ne[2] : 1;
    w->row_bytes = row_bytes;
    w->mat_bytes = row_bytes * w->n_out;
    *total_bytes += t->n_bytes;
}

static bool spec_applies(const tensor_spec *sp, uint32_t ratio, bool hash) {
    switch (sp->when) {
    case WHEN_ALWAYS: return true;
    case WHEN_COMPRESSED: return ratio != 0;
    case WHEN_RATIO4: return ratio == 4;
    case WHEN_HASH: return hash;
    case WHEN_NOT_HASH: return !hash;
    }
    return false;
}

/* name storage: v4f_wt.name must be a C string; keep a copy per model. */
typedef struct name_pool {
    char *buf;
    size_t len, cap;
} name_pool;

static const char *pool_add(name_pool *p, const char *s) {
    size_t n = strlen(s) + 1;
    if (p->len + n > p->cap) {
        /* never reallocate: earlier pointers must stay valid */
        return NULL;
    }
    char *d = p->buf + p->len;
    memcpy(d, s, n);
    p->len += n;
    return d;
}

struct v4f_model_priv {
    v4f_model pub;
    name_pool names;
};

static void bind_layer(bind_ctx *b, const v4f_gguf *g, const char *prefix, uint32_t ratio,
                       bool hash, v4f_layer_weights *lw, name_pool *np, uint64_t *bytes) {
    lw->compress_ratio = ratio;
    lw->hash_routed = hash;
    b->ratio = ratio;
    for (size_t i = 0; i < N_LAYER_SPECS; i++) {
        const tensor_spec *sp = &k_layer_specs[i];
        if (!spec_applies(sp, ratio, hash)) continue;
        char name[128];
        snprintf(name, sizeof name, "%s%s", prefix, sp->suffix);
        v4f_wt *w = (v4f_wt *)((char *)lw + sp->off);
        bind_one(b, g, name, sp, w, bytes);
        if (w->data) w->name = pool_add(np, name);
    }
}

static void bind_specs(bind_ctx *b, const v4f_gguf *g, const char *prefix, const tensor_spec *specs,
                       size_t n, void *base, name_pool *np, uint64_t *bytes) {
    for (size_t i = 0; i < n; i++) {
        char name[128];
        snprintf(name, sizeof name, "%s%s", prefix, specs[i].suffix);
        v4f_wt *w = (v4f_wt *)((char *)base + specs[i].off);
        bind_one(b, g, name, &specs[i], w, bytes);
        if (w->data) w->name = pool_add(np, name);
    }
}

/* tid2eid entries must be valid expert ids: checked once at load so the
 * router can index without bounds checks. */
static void check_tid2eid(bind_ctx *b, const v4f_layer_weights *lw, const v4f_config *c) {
    const v4f_wt *w = &lw->ffn_gate_tid2eid;
    if (!w->data) return;
    const uint8_t *p = w->data;
    uint64_t n = w->n_in * w->n_out;
    for (uint64_t i = 0; i < n; i++) {
        int32_t e;
        memcpy(&e, p + 4 * i, 4);
        if (e < 0 || (uint32_t)e >= c->n_expert) {
            issue(b, "tensor '%s': entry %llu = %d is not an expert id (0..%u)", w->name,
                  (unsigned long long)i, e, c->n_expert - 1);
            return;
        }
    }
}

static void check_mtp_config(bind_ctx *b, const v4f_gguf *mtp, const v4f_config *main) {
    v4f_config mc;
    v4f_err e = {0};
    if (v4f_config_load(mtp, &mc, &e) != V4F_OK) return; /* shapes are still validated */
#define SAME(f) \
    if (mc.f != main->f) issue(b, "MTP file: %s = %g differs from the model's %g", #f, (double)mc.f, (double)main->f)
    SAME(n_embd); SAME(n_head); SAME(head_dim); SAME(n_rot); SAME(q_lora_rank);
    SAME(o_lora_rank); SAME(o_groups); SAME(n_expert); SAME(n_expert_used); SAME(n_ff_exp);
    SAME(n_hc); SAME(n_swa);
#undef SAME
}

v4f_status v4f_model_open_gguf(v4f_gguf *g, v4f_gguf *mtp, v4f_model **out,
                               v4f_layout_report *report, v4f_err *err) {
    *out = NULL;
    if (report) memset(report, 0, sizeof *report);
    struct v4f_model_priv *pm = v4f_xcalloc(1, sizeof *pm);
    v4f_model *m = &pm->pub;
    m->gguf = g;
    m->mtp_gguf = mtp;
    v4f_status st = v4f_config_load(g, &m->cfg, err);
    if (st) {
        v4f_err_prefix(err, "%s", v4f_gguf_path(g));
        if (report) {
            report->n_issues = 1;
            const char *msg = err ? err->msg : "bad metadata";
            size_t n = strnlen(msg, sizeof report->issues[0] - 1);
            memcpy(report->issues[0], msg, n);
            report->issues[0][n] = '\0';
        }
        v4f_model_close(m);
        return st;
    }
    const v4f_config *c = &m->cfg;
    /* names: at most (specs per layer) * (layers + 1) + globals + mtp, < 128 chars each */
    pm->names.cap = (N_LAYER_SPECS * (c->n_layer + 1) + 32) * 64;
    pm->names.buf = v4f_xmalloc(pm->names.cap);
    m->layers = v4f_xcalloc(c->n_layer, sizeof *m->layers);

    bind_ctx b = {.cfg = c, .report = report, .err = err};
    bind_specs(&b, g, "", k_global_specs, sizeof k_global_specs / sizeof k_global_specs[0], m,
               &pm->names, &m->weight_bytes);
    for (uint32_t l = 0; l < c->n_layer; l++) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "blk.%u.", l);
        bind_layer(&b, g, prefix, c->compress_ratio[l], l < c->n_hash_layer, &m->layers[l],
                   &pm->names, &m->weight_bytes);
        check_tid2eid(&b, &m->layers[l], c);
    }
    if (mtp) {
        check_mtp_config(&b, mtp, c);
        bind_specs(&b, mtp, "mtp.0.", k_mtp_specs, sizeof k_mtp_specs / sizeof k_mtp_specs[0],
                   &m->mtp, &pm->names, &m->weight_bytes);
        bind_layer(&b, mtp, "mtp.0.", 0, false, &m->mtp.block, &pm->names, &m->weight_bytes);
        m->has_mtp = true;
    }
    if (b.n_issues) {
        v4f_err_prefix(err, "%s: invalid DeepSeek V4 Flash layout (%d problem%s)",
                       v4f_gguf_path(g), b.n_issues, b.n_issues == 1 ? "" : "s");
        v4f_model_close(m);
        return V4F_STATUS_LAYOUT;
    }
    *out = m;
    return V4F_OK;
}

v4f_status v4f_model_open(const char *path, const char *mtp_path, v4f_model **out,
                          v4f_layout_report *report, v4f_err *err) {
    *out = NULL;
    v4f_gguf *g = NULL, *mtp = NULL;
    v4f_status st = v4f_gguf_open(path, &g, err);
    if (st) return st;
    if (mtp_path) {
        st = v4f_gguf_open(mtp_path, &mtp, err);
        if (st) {
            v4f_gguf_close(g);
            return st;
        }
    }
    return v4f_model_open_gguf(g, mtp, out, report, err);
}

void v4f_model_close(v4f_model *m) {
    if (!m) return;
    struct v4f_model_priv *pm = (struct v4f_model_priv *)m;
    v4f_gguf_close(m->gguf);
    v4f_gguf_close(m->mtp_gguf);
    free(m->layers);
    free(pm->names.buf);
    free(pm);
}

v4f_status v4f_mtp_file_validate(const v4f_gguf *mtp, v4f_config *cfg,
                                 v4f_layout_report *report, v4f_err *err) {
    if (report) memset(report, 0, sizeof *report);
    v4f_status st = v4f_config_load(mtp, cfg, err);
    if (st) {
        v4f_err_prefix(err, "%s", v4f_gguf_path(mtp));
        return st;
    }
    name_pool np = {.cap = (N_LAYER_SPECS + 16) * 64};
    np.buf = v4f_xmalloc(np.cap);
    v4f_mtp_weights w;
    memset(&w, 0, sizeof w);
    uint64_t bytes = 0;
    bind_ctx b = {.cfg = cfg, .report = report, .err = err};
    bind_specs(&b, mtp, "mtp.0.", k_mtp_specs, sizeof k_mtp_specs / sizeof k_mtp_specs[0], &w,
               &np, &bytes);
    bind_layer(&b, mtp, "mtp.0.", 0, false, &w.block, &np, &bytes);
    free(np.buf);
    if (b.n_issues) {
        v4f_err_prefix(err, "%s: invalid MTP layout (%d problem%s)", v4f_gguf_path(mtp),
                       b.n_issues, b.n_issues == 1 ? "" : "s");
        return V4F_STATUS_LAYOUT;
    }
    return V4F_OK;
}

/* ---- strict published-layout check ---- */

static bool pub_type_ok(pub_class pc, uint32_t type, const char *variant) {
    bool q2 = variant[1] == '2';
    switch (pc) {
    case PUB_F32: return type == V4F_TYPE_F32;
    case PUB_F16: return type == V4F_TYPE_F16;
    case PUB_Q8: return type == V4F_TYPE_Q8_0;
    case PUB_I32: return type == V4F_TYPE_I32;
    case PUB_EXP_GATEUP: return type == (q2 ? V4F_TYPE_IQ2_XXS : V4F_TYPE_Q4_K);
    case PUB_EXP_DOWN: return type == (q2 ? V4F_TYPE_Q2_K : V4F_TYPE_Q4_K);
    }
    return false;
}

static bool check_variant(const v4f_model *m, const char *variant, v4f_err *why) {
    for (size_t i = 0; i < sizeof k_global_specs / sizeof k_global_specs[0]; i++) {
        const v4f_wt *w = (const v4f_wt *)((const char *)m + k_global_specs[i].off);
        if (!pub_type_ok(k_global_specs[i].pub, w->type, variant)) {
            v4f_err_set(why, V4F_STATUS_LAYOUT, "tensor '%s' is %s, the published %s file has another type",
                        w->name, v4f_type_name(w->type), variant);
            return false;
        }
    }
    for (uint32_t l = 0; l < m->cfg.n_layer; l++) {
        const v4f_layer_weights *lw = &m->layers[l];
        for (size_t i = 0; i < N_LAYER_SPECS; i++) {
            const tensor_spec *sp = &k_layer_specs[i];
            if (!spec_applies(sp, lw->compress_ratio, lw->hash_routed)) continue;
            const v4f_wt *w = (const v4f_wt *)((const char *)lw + sp->off);
            if (!pub_type_ok(sp->pub, w->type, variant)) {
                v4f_err_set(why, V4F_STATUS_LAYOUT,
                            "tensor '%s' is %s, the published %s file has another type", w->name,
                            v4f_type_name(w->type), variant);
                return false;
            }
        }
    }
    return true;
}

const char *v4f_model_published_variant(const v4f_model *m, v4f_err *why) {
    if (!v4f_config_is_published(&m->cfg, why)) return NULL;
    v4f_err e2 = {0};
    if (check_variant(m, "q2", why)) return "q2";
    if (check_variant(m, "q4", &e2)) return "q4";
    /* report the q2 reason when the experts look like q2, else the q4 one */
    if (why && m->layers[0].ffn_gate_exps.type != V4F_TYPE_IQ2_XXS) *why = e2;
    return NULL;
}
