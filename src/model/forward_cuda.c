/*
 * forward_cuda.c - the DeepSeek V4 Flash forward pass on one NVIDIA GPU
 * (MODEL.md §4-§9), the device twin of forward.c (the reference).
 *
 * One code path serves prefill and decode: eval of a chunk of n tokens runs
 * every layer over all n tokens (layer-major) with the ops of
 * backend/cuda; decode (n == 1) is the same sequence, captured once as a
 * CUDA graph and replayed for every later token. Nothing in a step depends
 * on host-side positions: the chunk's first position and its tokens are
 * copied to the device first, a prep kernel derives per-token positions,
 * window bounds and visible compressed-row counts, and every kernel reads
 * those.
 *
 * State on the device, per layer: the raw KV rows in a position ring of
 * n_swa + chunk rows (the chunk's own rows are written before attention,
 * so prefill and decode read keys the same way), compressed rows and
 * indexer rows as float32 (capacity ctx / ratio + 2; their values are
 * exactly the FP8/FP4-rounded values the CPU's compact cache stores), and
 * the compressor inputs (values, scores + ape) in position rings of chunk +
 * 2 * ratio rows, from which completed windows are pooled.
 *
 * Placement: dense weights, KV and scratch first; routed experts fill the
 * rest of the budget (--gpu-mem-gb, default: free memory minus a reserve),
 * the same number per layer; the others stay in the model's mapping,
 * pinned and mapped for the device (falling back to a pinned copy if the
 * system refuses to pin the mapping). Each layer has a device table of
 * expert pointers, so the routed-expert kernels read device or host
 * memory alike. When experts overflow, the embedding (read one row per
 * token) moves to host memory first, and the chunk drops (down to 512)
 * for decode and short evals; evals of more than two such chunks switch to
 * a second placement of the same arena with the larger chunk (its scratch
 * and KV rings where the first placement keeps more experts; apply_place,
 * set_place).
 *
 * Ownership and threading: see forward_cuda.h.
 */
#include "model/forward_cuda.h"

#ifndef V4F_CUDA

bool v4f_gpu_available(void) { return false; }
v4f_status v4f_gpu_copy_bw(int device, double *gbs, v4f_err *err) {
    (void)device;
    *gbs = 0;
    return v4f_err_set(err, V4F_STATUS_UNSUPPORTED, "built without CUDA");
}
v4f_status v4f_gpu_new(const v4f_model *m, const v4f_session_opts *o, v4f_gpu **out, v4f_err *err) {
    (void)m;
    (void)o;
    *out = NULL;
    return v4f_err_set(err, V4F_STATUS_UNSUPPORTED, "this binary was built without CUDA (rebuild with make CUDA=1)");
}
void v4f_gpu_free(v4f_gpu *g) { (void)g; }
v4f_status v4f_gpu_eval(v4f_gpu *g, const int32_t *tokens, uint32_t n, uint32_t pos, float *logits,
                        unsigned flags, float *hc_out, uint32_t hc_rows, const v4f_trace *trace,
                        const v4f_debug_flags *dbg, v4f_err *err) {
    (void)g, (void)tokens, (void)n, (void)pos, (void)logits, (void)flags, (void)hc_out, (void)hc_rows, (void)trace,
        (void)dbg;
    return v4f_err_set(err, V4F_STATUS_UNSUPPORTED, "built without CUDA");
}
v4f_status v4f_gpu_decode_greedy(v4f_gpu *g, int32_t token, uint32_t pos, uint32_t max_eval, int32_t suppress,
                                 v4f_pick_fn fn, void *ud, float *logits, uint32_t *n_eval, int32_t *next,
                                 v4f_err *err) {
    (void)g, (void)token, (void)pos, (void)max_eval, (void)suppress, (void)fn, (void)ud, (void)logits;
    *n_eval = 0;
    *next = -1;
    return v4f_err_set(err, V4F_STATUS_UNSUPPORTED, "built without CUDA");
}
uint64_t v4f_gpu_kv_bytes(const v4f_gpu *g) { (void)g; return 0; }
bool v4f_gpu_can_rewind(const v4f_gpu *g, uint32_t pos, uint32_t *from) {
    (void)g, (void)pos;
    *from = 0;
    return false;
}
void v4f_gpu_reset(v4f_gpu *g) { (void)g; }
v4f_status v4f_gpu_mtp_eval(v4f_gpu *g, const float *hc, const int32_t *tokens, uint32_t n, uint32_t pos,
                            float *logits, v4f_err *err) {
    (void)g, (void)hc, (void)tokens, (void)n, (void)pos, (void)logits;
    return v4f_err_set(err, V4F_STATUS_UNSUPPORTED, "built without CUDA");
}
v4f_status v4f_gpu_spec_step(v4f_gpu *g, const int32_t *ptok, uint32_t pn, uint32_t pp0, int32_t a, uint32_t p,
                             int32_t suppress, int32_t over, int32_t out[3], v4f_err *err) {
    (void)g, (void)ptok, (void)pn, (void)pp0, (void)a, (void)p, (void)suppress, (void)over, (void)out;
    return v4f_err_set(err, V4F_STATUS_UNSUPPORTED, "built without CUDA");
}
v4f_status v4f_gpu_logits_row(v4f_gpu *g, uint32_t row, float *dst, v4f_err *err) {
    (void)g, (void)row, (void)dst;
    return v4f_err_set(err, V4F_STATUS_UNSUPPORTED, "built without CUDA");
}
v4f_status v4f_gpu_spec_ring_row(v4f_gpu *g, uint32_t pos, float *dst, v4f_err *err) {
    (void)g, (void)pos, (void)dst;
    return v4f_err_set(err, V4F_STATUS_UNSUPPORTED, "built without CUDA");
}
v4f_status v4f_gpu_kv_download(v4f_gpu *g, struct v4f_kv *kv, uint32_t pos, v4f_err *err) {
    (void)g, (void)kv, (void)pos;
    return v4f_err_set(err, V4F_STATUS_UNSUPPORTED, "built without CUDA");
}
v4f_status v4f_gpu_kv_upload(v4f_gpu *g, const struct v4f_kv *kv, uint32_t pos, v4f_err *err) {
    (void)g, (void)kv, (void)pos;
    return v4f_err_set(err, V4F_STATUS_UNSUPPORTED, "built without CUDA");
}
v4f_status v4f_gpu_fill_synthetic(v4f_gpu *g, uint64_t seed, v4f_err *err) {
    (void)g, (void)seed;
    return v4f_err_set(err, V4F_STATUS_UNSUPPORTED, "built without CUDA");
}
uint32_t v4f_gpu_chunk(const v4f_gpu *g) { (void)g; return 0; }
uint32_t v4f_gpu_rewind_reach(const v4f_gpu *g) { (void)g; return 0; }
const char *v4f_gpu_report(const v4f_gpu *g) { (void)g; return ""; }
void v4f_gpu_placement(const v4f_gpu *g, uint32_t *experts_dev, uint32_t *experts_host, uint64_t *dev_bytes,
                       uint64_t *host_bytes) {
    (void)g;
    *experts_dev = *experts_host = 0;
    *dev_bytes = *host_bytes = 0;
}
const char *v4f_gpu_device_name(const v4f_gpu *g) { (void)g; return ""; }
uint32_t v4f_gpu_experts_on_device(const v4f_gpu *g) { (void)g; return 0; }
bool v4f_gpu_mtp_host(const v4f_gpu *g) { (void)g; return false; }
void v4f_gpu_budget_parts(const v4f_gpu *g, uint64_t *fixed, uint64_t *per_expert) {
    (void)g;
    *fixed = *per_expert = 0;
}

#else

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/cpu/ops.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_fwd.h"
#include "model/kv.h"
#include "quant/quant.h"

#define GPU_CHUNK_CAP 8192                    /* prefill chunk (tokens) when memory allows */
#define GPU_CHUNK_TIGHT 512                   /* chunk when experts overflow to the host */
/* Left free when placing (the context is already counted in the free
 * memory measured then): graphs, lazily loaded kernels, local memory. H100,
 * full-q2, 8K prompt + 128 decoded tokens + short evals, peak use by
 * nvidia-smi: reserve 1,536 / 640 / 320 MiB left 1,832 / 930 / 672 MiB
 * unused, decode 84.5 / 88.3 / 90.3 t/s (fewer experts in host memory);
 * V4F_CUDA_RESERVE_MB overrides (docs/PERF_NOTES.md, session 15) */
#define GPU_RESERVE_BYTES (512ull << 20)
#define GPU_ISCORE_BUDGET (512ull << 20)      /* indexer score matrix [chunk][ctx/4] */
#define GPU_HEAD_ROWS 64                      /* logits rows per head pass in prefill */
#define GPU_MAX_GROUPS 64
#define MV_BATCH V4F_CUDA_MATVEC_MAX_BATCH
/* Chunks of up to GPU_PLANE_TOKENS tokens (a decode step, a speculative
 * verify step) get the int8 x planes of the routed experts, the shared
 * expert's down and out_a from the launches before them (the router's, the
 * SwiGLUs', the attention's) instead of split launches (verify step, H200:
 * 1.50 -> 1.46 decode steps, docs/PERF_NOTES.md session 36) */
#define GPU_PLANE_TOKENS 2
#define H_IN_EXTRA 5 /* h_in after the N tokens: pos0, suppress, a verify step's two tokens and pos0 */
/* Evals of 2..GPU_SHORT_EVAL tokens (logits of the last one at most) can
 * run as that many decode-graph replays (7.6 ms per token on the H200,
 * full-q2, 8K context). The batched kernels now beat them from 2 tokens:
 * 12.3 vs 15.2 ms on the H200 with the several-column dense matvecs
 * (session 17; 16.6 vs 15.2 in session 16, 44 vs 15 in session 14, when
 * the crossover was 8), so the default is 0. V4F_CUDA_SHORT_EVAL=N turns
 * the replays on for up to N tokens (0 or 1: off). */
#define GPU_SHORT_EVAL 0
#define GPU_SHORT_MAX 64 /* the largest override */
/* Chunks of 2..GPU_PAIR_EVAL tokens multiply each (token, expert) pair's
 * routed expert with the decode matvecs (each weight decoded per pair)
 * instead of the grouped tensor-core matmuls, which dequantize a whole
 * 256-row tile per expert for one or two tokens. H100, full-q2, 8K
 * context: evals of 16 / 32 / 48 / 64 tokens 67.7 / 98.0 / 119.1 / 139.3
 * -> 51.4 / 63.3 / 85.5 / 108.9 ms (docs/PERF_NOTES.md, session 16);
 * V4F_CUDA_PAIR_EVAL=N overrides it (0: off). */
#define GPU_PAIR_EVAL 64
/* Chunks of GPU_MVEXP_MIN + 1 .. GPU_MVEXP_EVAL tokens multiply their
 * routed experts expert by expert (v4f_cuda_matvec_experts: each expert's
 * rows read once and each unit decoded once for up to 4 of its tokens)
 * instead of the two paths above. H100 (9 experts per layer in host
 * memory), full-q2, 8K context, evals of 32 / 64 / 96 / 128 / 192 / 256
 * tokens: 63.2 / 109.3 / 157.7 / 182.1 / 203.2 / 212.4 ms before, 64.2 /
 * 97.5 / 121.3 / 152.8 / 204.3 / 246.8 expert by expert
 * (docs/PERF_NOTES.md, session 17). Since the grouped matmuls decode an
 * IQ2_XXS group's header once and skip empty token tiles by a branch
 * (session 18) the crossover is ~112 tokens: H200, 8K context, evals of
 * 96 / 112 / 128 / 144 / 160 tokens 120.1 / 131.8 / 151.4 / 169.7 / 181.3
 * ms expert by expert vs 127.3 / 132.6 / 145.0 / 155.6 / 159.6 grouped
 * (H100: 128 / 160 tokens 154.3 / 182.7 vs 146.9 / 160.6). With grouped
 * Q2_K / Q4_K sharing sub-block headers too (session 19) it is ~96: H200,
 * evals of 80 / 96 / 104 / 112 / 120 tokens 108.9 / 119.8 / 125.8 / 131.5
 * / 137.1 ms expert by expert vs 115.0 / 120.5 / 123.4 / 125.8 / 127.7
 * grouped (H100: 104 / 112 tokens 128.2 / 132.6 vs 124.4 / 126.9).
 * V4F_CUDA_MVEXP_EVAL=N and V4F_CUDA_MVEXP_MIN=N override them
 * (EVAL 0: off). */
#define GPU_MVEXP_MIN 32
#define GPU_MVEXP_EVAL 96
/* Chunks of 2..GPU_COLS_EVAL tokens multiply their dense quantized
 * matrices with the decode kernel, 4 x per weight read
 * (v4f_cuda_matvec_cols), instead of split-K tensor-core matmuls. H200,
 * full-q2, 8K context, evals of 3 / 4 / 6 / 8 / 12 / 16 tokens: 17.9 / 20.8
 * / 23.9 / 25.6 / 32.6 / 37.8 ms split-K, 14.4 / 17.3 / 23.1 / 27.1 / 36.9
 * / 45.4 through these (docs/PERF_NOTES.md, session 17).
 * V4F_CUDA_COLS_EVAL=N overrides it (0: off). */
#define GPU_COLS_EVAL 6
/* A pair-by-pair chunk copies only the host experts it routes to, in line
 * (stage_used), where that is expected to beat copying all of them one
 * layer ahead, which overlaps the layer's work (stage_used_now). The model
 * of a layer: u(n) routed host experts of e_host (uniform routing) at
 * GPU_BUS_BPS each, plus n x GPU_PAIR_TOKEN_S of pair-path work. H100 (9
 * per layer in host memory), 2 / 8 / 12 / 16 / 24 / 32 tokens: 17.8 / 33.0
 * / 43.3 / 50.3 / 70.0 / 88.0 ms routed ones vs 52.2 / 52.0 / 52.8 / 53.0 /
 * 52.9 / 63.5 all ahead (session 16); the model switches between 16 and 24.
 * q4 on an H200 (27 per layer in host memory), 4 / 8 / 16 / 32 / 48 tokens:
 * 46 / 75 / 137 / 227 / 297 ms vs ~300-313 all ahead. */
#define GPU_BUS_BPS 50e9        /* host -> device copy engine, PCIe 5 x16 (measured 49-54 GB/s) */
#define GPU_PAIR_TOKEN_S 40e-6  /* pair-path time per token and layer (H100 39.6 us, H200 38.4 us) */

#define TRY(x)                        \
    do {                              \
        v4f_status st_ = (x);         \
        if (st_ != V4F_OK) return st_; \
    } while (0)

typedef v4f_cuda_mat gmat;

/* phase profile (V4F_PROFILE=1: device time per phase from events, decode
 * without the graph; printed at free) */
enum {
    GP_PREP, GP_HC, GP_PROJ, GP_COMP, GP_INDEX, GP_ATTN, GP_OUT, GP_ROUTE, GP_EXP_GU, GP_SWIGLU, GP_EXP_DOWN,
    GP_SUM, GP_HEAD, GP_COUNT
};
static const char *const GP_NAMES[GP_COUNT] = {
    "prep+embed", "hc pre/post", "attn projections+norms+rope", "compressors", "indexer q+scores+top-k",
    "attention (window+compressed)", "attn out_a/out_b", "router", "experts+shared gate/up", "swiglu",
    "experts+shared down", "moe sum", "lm head"};
#define GP_MAX_MARKS 8192
/* profile modes: one-token evals, evals of 2..GPU_COLS_EVAL tokens (short
 * evals, speculative verify steps), longer ones, the MTP block */
enum { GP_DECODE, GP_SHORT, GP_PREFILL, GP_MTP, GP_MODES };

typedef struct glayer {
    uint32_t ratio;
    int ratio_slot; /* index into the nvis arrays (ratio != 0) */
    bool hash;
    float limit;
    const float *freqs;
    gmat hc_attn_fn, hc_ffn_fn, q_a, q_b, kv, out_a, out_b;
    gmat comp_kv, comp_gate, idx_q_b, idx_proj, idx_comp_kv, idx_comp_gate;
    gmat gate_inp, gate_sh, up_sh, down_sh;
    gmat exp_gate, exp_up, exp_down; /* shapes only (data: expert 0 or NULL) */
    const float *hc_attn_scale, *hc_attn_base, *hc_ffn_scale, *hc_ffn_base;
    const float *attn_norm, *q_a_norm, *kv_a_norm, *sinks, *ffn_norm;
    const float *comp_ape, *comp_norm, *idx_comp_ape, *idx_comp_norm, *probs_b;
    const int32_t *tid2eid;
    const void *const *etab; /* device [3 * n_expert]: gate, up, down pointers */
    const void *const *ptab; /* prefill: host-resident experts read from the staging buffer */
    const void *hsrc[3];     /* mapped address of the first host-resident expert per tensor */
    uint64_t hbytes[3];      /* bytes of the host-resident experts per tensor */
    /* KV state */
    float *raw;          /* [Rraw][hd], position ring */
    float *comp;         /* [cap][hd] */
    float *idx;          /* [cap4][ihd] */
    float *c_kv, *c_sc;  /* [Rc][W], position rings */
    float *i_kv, *i_sc;  /* [Rc4][2 ihd], position rings */
    uint32_t cap, cap_i;
    int64_t Rraw, Rc, Rc_i;
    /* the fields above that depend on the placement (v4f_gpu.place), per placement */
    struct lplace {
        const void *const *etab, *const *ptab;
        const void *hsrc[3];
        uint64_t hbytes[3];
        float *raw, *c_kv, *c_sc, *i_kv, *i_sc;
        int64_t Rraw, Rc, Rc_i;
    } pl[2];
} glayer;

typedef struct gscratch {
    int32_t *tok, *pos0;           /* [N], [1] (uploaded per chunk; the decode graph's greedy pick
                                    * writes tok[0] and advances pos0) */
    int32_t *suppress;             /* [1]: id the decode graph's greedy pick never takes (-1: none) */
    int32_t *short_tok;            /* [GPU_SHORT_MAX]: the tokens of a short eval (eval_short) */
    int32_t *pos, *rf, *rc, *nvis; /* [N], [N], [N], [n_ratios][N] */
    float *X, *X2, *mix, *pre, *post, *comb, *a, *xn, *qr, *q, *o, *kv, *low, *out;
    float *ckv, *cgate, *ikv, *igate, *iq, *iw, *iscore;
    int32_t *isel, *icnt;
    float *rlog, *ew, *wrow, *xg, *g, *u, *sg, *su, *yd, *ysh;
    int32_t *eids, *offs, *elist, *einv, *ident;
    int32_t *act; /* [n_expert + 1]: the experts with pairs (v4f_cuda_moe_bucket) */
    float *hw;     /* head weights [N][n_hc] */
    float *mixp;   /* HC mixer partials [N][splits][mix] */
    double *mixss; /* [N][splits] */
    const gmat *mix_of; /* the mixer whose partials mixp/mixss hold for this chunk (post_mix), or NULL */
    double *gram;       /* [N][128][10] stream Gram partials of post_mix */
    bool gram_ok;       /* gram holds them for mix_of */
    float *logits; /* [GPU_HEAD_ROWS][vocab] */
    float *logits_keep; /* [2][vocab]: the decode graph's logits by position parity */
    void *greedy_scr;   /* 16 bytes of the greedy pick's reduction (zero between launches) */
    float *no_sink;
    uint8_t *gq, *sgq; /* int8 planes of the SwiGLU rows of <= GPU_PLANE_TOKENS tokens (routed pairs, shared expert) */
    uint8_t *xnq;      /* int8 planes of <= GPU_PLANE_TOKENS tokens' FFN input (made beside the routing) */
    uint8_t *oq;       /* the same of the attention output (out_a's groups), rows [token][group] */
} gscratch;

struct v4f_gpu {
    const v4f_model *m;
    v4f_config cfg;
    v4f_cuda *c;
    uint32_t n_ctx, N; /* context, chunk */
    bool exact;        /* --precision ref: float32 everywhere */
    glayer *L;
    uint32_t n_ratios;
    uint32_t ratios[V4F_CUDA_MAX_RATIOS];
    /* MTP block (L[n_layer] when enabled) */
    bool mtp;
    gmat mtp_e_proj, mtp_h_proj, mtp_hc_fn;
    const float *mtp_enorm, *mtp_hnorm, *mtp_norm, *mtp_hc_base, *mtp_hc_scale;
    /* head */
    gmat out_hc_fn, output;
    const float *out_hc_base, *out_hc_scale, *out_norm;
    const void *embd;
    uint32_t embd_type;
    uint64_t embd_row_bytes;
    /* device memory */
    void *w_arena, *e_arena, *kv_arena, *s_arena;
    size_t w_bytes, e_bytes, kv_bytes, s_bytes;
    gscratch s;
    /* host side */
    int32_t *h_in;   /* pinned [N + H_IN_EXTRA]: tokens, then pos0, suppress */
    volatile int32_t *h_pick; /* pinned, mapped [2]: the decode graph's greedy picks by position parity */
    int32_t *d_pick;          /* its device address */
    float *h_logits; /* pinned [GPU_HEAD_ROWS][vocab] */
    void *reg[4 * V4F_MAX_LAYERS + 8]; /* registered host ranges */
    int n_reg;
    void *host_copy; /* pinned copy of host experts when pinning the mapping failed */
    /* Placements of s_arena. 0: the scratch for chunks of N tokens, the
     * staging slots and the routed experts [e_dev of 1, e_dev of 0) of every
     * layer; 1 (flex only; evals of more than flex_min tokens): the scratch
     * and the KV position rings for a larger chunk and larger staging slots,
     * those experts read from host memory. Switching copies the rings' live
     * rows; back to 0 uploads the experts again (set_place). */
    struct gplace {
        uint32_t N, e_dev, e_host;
        uint64_t stage_bytes; /* staging of the host-resident experts: two slots of stage_bytes at
                               * stage (after the scratch), layer l in slot l & 1 */
        uint8_t *stage;
    } pl[2];
    int place;
    uint32_t keep_from; /* the earliest position the device state can go back to (the rings hold
                         * the last chunk's worth of rows; a switch moves the rows of its position) */
    bool flex;
    uint32_t flex_min;
    const void **x_dst, **x_src; /* [n_layer][3][e_dev 0 - e_dev 1]: placement 0's extra experts */
    uint64_t x_bytes[V4F_MAX_LAYERS][3];
    bool prefetch;   /* layer l + 1's host experts are copied during layer l (copy stream) */
    bool decode_dma; /* the decode graph copies the picked host experts into the staging slot */
    bool capturing;  /* chunk_body is being captured as the decode graph */
    uint32_t e_dev, e_host; /* routed experts per layer on the device / host */
    uint64_t per_expert;    /* one expert's bytes summed over the layers */
    uint64_t host_expert_bytes;
    bool embd_host;
    bool mtp_host; /* the MTP block's routed experts stay in host memory, read over the bus */
    v4f_cuda_graph *graph;
    bool graph_failed;
    v4f_cuda_marks *pipe; /* two events: the picks of pipelined greedy steps */
    bool fork; /* independent chains on a second stream (V4F_CUDA_FORK=0 turns it off) */
    uint32_t short_max; /* evals of 2..short_max tokens replay the decode graph (GPU_SHORT_EVAL) */
    uint32_t pair_max;  /* chunks of 2..pair_max tokens multiply their routed experts pair by pair
                         * (decode matvecs) instead of by grouped matmuls (GPU_PAIR_EVAL) */
    uint32_t mx_min, mx_max; /* chunks of mx_min + 1 .. mx_max tokens: expert by expert (GPU_MVEXP_*) */
    uint32_t cols_max;       /* chunks of 2..cols_max tokens: dense matvecs of several columns (GPU_COLS_EVAL) */
    int32_t *h_used;    /* pinned [n_expert + 1]: bucket offsets of the host-resident experts */
    /* speculative decoding (opts.mtp_draft, v4f_gpu_spec_step): the main HC
     * states the MTP block has not taken yet, position q at row q % spec_cap */
    float *spec_hc;              /* device [spec_cap][n_hc * n_embd] */
    uint32_t spec_cap;
    int32_t *spec_dev;           /* device [2]: the draft, a counter the greedy kernel advances */
    volatile int32_t *h_spec;    /* pinned, mapped [3]: the draft, the picks of the two rows */
    int32_t *d_spec;             /* its device address */
    v4f_cuda_graph *vgraph;      /* a verify step (2 tokens, logits and picks of both rows) */
    bool vgraph_failed;
    struct {
        bool on;
        v4f_cuda_marks *marks;
        int n;
        uint8_t phase[GP_MAX_MARKS];
        float ms[GP_MAX_MARKS];
        double acc[GP_MODES][GP_COUNT];
        uint64_t tokens[GP_MODES], evals[GP_MODES];
    } prof;
    char report[2048];
};

static void pmark(v4f_gpu *g, int phase) {
    if (!g->prof.on || g->prof.n >= GP_MAX_MARKS) return;
    if (v4f_cuda_mark(g->c, g->prof.marks, g->prof.n, NULL) == V4F_OK) g->prof.phase[g->prof.n++] = (uint8_t)phase;
}

/* after the stream is synchronized: fold the marks of this eval into mode */
static void prof_collect(v4f_gpu *g, int mode, uint32_t tokens) {
    if (!g->prof.on || g->prof.n < 2) {
        g->prof.n = 0;
        return;
    }
    if (v4f_cuda_marks_read(g->prof.marks, g->prof.n - 1, g->prof.ms, NULL) == V4F_OK)
        for (int i = 1; i < g->prof.n; i++) g->prof.acc[mode][g->prof.phase[i]] += g->prof.ms[i];
    g->prof.tokens[mode] += tokens;
    g->prof.evals[mode]++;
    g->prof.n = 0;
}

static void prof_print(const v4f_gpu *g) {
    static const char *const mode_names[GP_MODES] = {"decode", "short", "prefill", "mtp"};
    for (int m = 0; m < GP_MODES; m++) {
        if (!g->prof.evals[m]) continue;
        double tot = 0, tok = (double)g->prof.tokens[m];
        for (int p = 0; p < GP_COUNT; p++) tot += g->prof.acc[m][p];
        fprintf(stderr, "gpu profile %s: %llu evals, %llu tokens, %.3f ms/token of device time (no graph)\n",
                mode_names[m], (unsigned long long)g->prof.evals[m], (unsigned long long)g->prof.tokens[m],
                tot / tok);
        for (int p = 0; p < GP_COUNT; p++)
            fprintf(stderr, "gpu profile %s:   %-32s %8.4f ms/token %5.1f%%\n", mode_names[m], GP_NAMES[p],
                    g->prof.acc[m][p] / tok, tot > 0 ? 100.0 * g->prof.acc[m][p] / tot : 0.0);
    }
}

/* ---- helpers ----------------------------------------------------------------------------- */

typedef struct carver {
    uint8_t *base;
    size_t off;
} carver;

static void *carve(carver *c, size_t bytes) {
    size_t o = (c->off + 255) & ~(size_t)255;
    c->off = o + ((bytes + 255) & ~(size_t)255);
    return c->base ? c->base + o : NULL;
}

static uint64_t mat_bytes_of(const v4f_wt *w) { return w->n_out * w->row_bytes; }

/* Place a matrix (pass 1: measure; pass 2: upload). */
static v4f_status up_mat(v4f_gpu *g, carver *cv, const v4f_wt *w, gmat *out, v4f_err *err) {
    memset(out, 0, sizeof *out);
    if (!w->data) return V4F_OK;
    uint64_t bytes = mat_bytes_of(w);
    void *d = carve(cv, bytes);
    out->type = w->type;
    out->n_in = (int64_t)w->n_in;
    out->n_out = (int64_t)w->n_out;
    out->row_bytes = w->row_bytes;
    out->data = d;
    if (!cv->base) return V4F_OK;
    if (!v4f_cuda_type_supported(w->type))
        return v4f_err_set(err, V4F_STATUS_UNSUPPORTED, "cuda: tensor %s has type %s without GPU kernels", w->name,
                           v4f_type_name(w->type));
    return v4f_cuda_upload(g->c, d, w->data, bytes, err);
}

/* Place a float vector (any float type converted to F32; NULL if absent). */
static v4f_status up_vec(v4f_gpu *g, carver *cv, const v4f_wt *w, const float **out, v4f_err *err) {
    *out = NULL;
    if (!w->data) return V4F_OK;
    uint64_t n = w->n_in * w->n_out * w->n_mat;
    float *d = carve(cv, n * sizeof(float));
    *out = d;
    if (!cv->base) return V4F_OK;
    float *tmp = v4f_xmalloc(n * sizeof(float));
    for (uint64_t r = 0; r < w->n_out * w->n_mat; r++)
        v4f_dequant_row_ref(w->type, (const uint8_t *)w->data + r * w->row_bytes, tmp + r * w->n_in,
                            (int64_t)w->n_in);
    v4f_status st = v4f_cuda_upload(g->c, d, tmp, n * sizeof(float), err);
    free(tmp);
    return st;
}

static v4f_status up_raw(v4f_gpu *g, carver *cv, const void *src, size_t bytes, const void **out, v4f_err *err) {
    void *d = carve(cv, bytes);
    *out = d;
    if (!cv->base) return V4F_OK;
    return v4f_cuda_upload(g->c, d, src, bytes, err);
}

static int ratio_slot(v4f_gpu *g, uint32_t ratio) {
    for (uint32_t i = 0; i < g->n_ratios; i++)
        if (g->ratios[i] == ratio) return (int)i;
    return -1;
}

/* ---- weights --------------------------------------------------------------------------------- */

static v4f_status place_layer(v4f_gpu *g, carver *cv, glayer *r, const v4f_layer_weights *w, uint32_t ratio,
                              float limit, const float *fplain, const float *fcomp, v4f_err *err) {
    v4f_status st = V4F_OK;
#define M(field, wt) \
    if ((st = up_mat(g, cv, &w->wt, &r->field, err))) return st
#define V(field, wt) \
    if ((st = up_vec(g, cv, &w->wt, &r->field, err))) return st
    r->ratio = ratio;
    r->hash = w->hash_routed;
    r->limit = limit;
    r->freqs = ratio ? fcomp : fplain;
    M(hc_attn_fn, hc_attn_fn);
    M(hc_ffn_fn, hc_ffn_fn);
    M(q_a, attn_q_a);
    M(q_b, attn_q_b);
    M(kv, attn_kv);
    M(out_a, attn_output_a);
    M(out_b, attn_output_b);
    M(gate_inp, ffn_gate_inp);
    M(gate_sh, ffn_gate_shexp);
    M(up_sh, ffn_up_shexp);
    M(down_sh, ffn_down_shexp);
    V(hc_attn_scale, hc_attn_scale);
    V(hc_attn_base, hc_attn_base);
    V(hc_ffn_scale, hc_ffn_scale);
    V(hc_ffn_base, hc_ffn_base);
    V(attn_norm, attn_norm);
    V(q_a_norm, attn_q_a_norm);
    V(kv_a_norm, attn_kv_a_norm);
    V(sinks, attn_sinks);
    V(ffn_norm, ffn_norm);
    V(probs_b, exp_probs_b);
    if (ratio) {
        M(comp_kv, comp_kv);
        M(comp_gate, comp_gate);
        V(comp_ape, comp_ape);
        V(comp_norm, comp_norm);
    }
    if (ratio == 4) {
        M(idx_q_b, idx_q_b);
        M(idx_proj, idx_proj);
        M(idx_comp_kv, idx_comp_kv);
        M(idx_comp_gate, idx_comp_gate);
        V(idx_comp_ape, idx_comp_ape);
        V(idx_comp_norm, idx_comp_norm);
    }
#undef M
#undef V
    r->tid2eid = NULL;
    if (r->hash && w->ffn_gate_tid2eid.data) {
        const v4f_wt *t = &w->ffn_gate_tid2eid;
        if ((st = up_raw(g, cv, t->data, t->n_in * t->n_out * sizeof(int32_t), (const void **)&r->tid2eid, err)))
            return st;
    }
    /* expert shapes */
    const v4f_wt *ex[3] = {&w->ffn_gate_exps, &w->ffn_up_exps, &w->ffn_down_exps};
    gmat *sh[3] = {&r->exp_gate, &r->exp_up, &r->exp_down};
    for (int i = 0; i < 3; i++) {
        sh[i]->type = ex[i]->type;
        sh[i]->n_in = (int64_t)ex[i]->n_in;
        sh[i]->n_out = (int64_t)ex[i]->n_out;
        sh[i]->row_bytes = ex[i]->row_bytes;
        sh[i]->data = NULL;
        if (cv->base && !v4f_cuda_type_supported(ex[i]->type))
            return v4f_err_set(err, V4F_STATUS_UNSUPPORTED, "cuda: tensor %s has type %s without GPU kernels",
                               ex[i]->name, v4f_type_name(ex[i]->type));
    }
    return V4F_OK;
}

static uint64_t expert_bytes_one(const v4f_layer_weights *w) {
    return ((w->ffn_gate_exps.mat_bytes + 255) & ~255ull) + ((w->ffn_up_exps.mat_bytes + 255) & ~255ull) +
           ((w->ffn_down_exps.mat_bytes + 255) & ~255ull);
}

/* The MTP block's expert pointer table (L[n_layer].etab): expert e of gate
 * / up / down at base[i] + e matrices, base[i] being where the device sees
 * the tensor (its upload, or its mapped host pages). */
static v4f_status mtp_etab(v4f_gpu *g, const void *const base[3], v4f_err *err) {
    const uint32_t E = g->cfg.n_expert;
    const v4f_layer_weights *b = &g->m->mtp.block;
    const v4f_wt *ex[3] = {&b->ffn_gate_exps, &b->ffn_up_exps, &b->ffn_down_exps};
    const void **tab = v4f_xmalloc(3ull * E * sizeof(void *));
    for (int i = 0; i < 3; i++)
        for (uint32_t e = 0; e < E; e++)
            tab[(size_t)i * E + e] = (const uint8_t *)base[i] + (uint64_t)e * ex[i]->mat_bytes;
    const v4f_status st =
        v4f_cuda_upload(g->c, (void *)g->L[g->cfg.n_layer].etab, tab, 3ull * E * sizeof(void *), err);
    free(tab);
    return st;
}

/* Dense weights: pass 1 (base NULL) measures. */
static v4f_status place_dense(v4f_gpu *g, uint8_t *base, size_t *bytes, v4f_err *err) {
    const v4f_model *m = g->m;
    const v4f_config *c = &g->cfg;
    carver cv = {base, 0};
    v4f_status st;
    /* RoPE tables */
    int half = (int)c->n_rot / 2;
    float fp[V4F_ROPE_MAX_ROT], fc[V4F_ROPE_MAX_ROT];
    v4f_rope_params rp = {c->rope_base, 0, 1, 0, 0};
    v4f_rope_freqs(&rp, (int)c->n_rot, fp);
    v4f_rope_params rc = {c->rope_base_compress, c->yarn_orig_ctx, c->yarn_factor, c->yarn_beta_fast,
                          c->yarn_beta_slow};
    v4f_rope_freqs(&rc, (int)c->n_rot, fc);
    const float *dfp, *dfc;
    if ((st = up_raw(g, &cv, fp, (size_t)half * sizeof(float), (const void **)&dfp, err))) return st;
    if ((st = up_raw(g, &cv, fc, (size_t)half * sizeof(float), (const void **)&dfc, err))) return st;
    for (uint32_t l = 0; l < c->n_layer; l++)
        if ((st = place_layer(g, &cv, &g->L[l], &m->layers[l], c->compress_ratio[l], c->swiglu_limit[l], dfp, dfc,
                              err)))
            return st;
    if (g->mtp) {
        /* the MTP block: a ratio-0 layer with biased top-k routing; its routed
         * experts are uploaded whole (one layer's worth), or stay in host
         * memory (mtp_host: their table is filled by place_experts) */
        const v4f_mtp_weights *w = &m->mtp;
        glayer *r = &g->L[c->n_layer];
        if ((st = place_layer(g, &cv, r, &w->block, 0, c->swiglu_limit[c->n_layer], dfp, dfc, err))) return st;
        r->hash = false;
        r->tid2eid = NULL;
        if ((st = up_mat(g, &cv, &w->e_proj, &g->mtp_e_proj, err))) return st;
        if ((st = up_mat(g, &cv, &w->h_proj, &g->mtp_h_proj, err))) return st;
        if ((st = up_mat(g, &cv, &w->hc_head_fn, &g->mtp_hc_fn, err))) return st;
        if ((st = up_vec(g, &cv, &w->enorm, &g->mtp_enorm, err))) return st;
        if ((st = up_vec(g, &cv, &w->hnorm, &g->mtp_hnorm, err))) return st;
        if ((st = up_vec(g, &cv, &w->norm, &g->mtp_norm, err))) return st;
        if ((st = up_vec(g, &cv, &w->hc_head_base, &g->mtp_hc_base, err))) return st;
        if ((st = up_vec(g, &cv, &w->hc_head_scale, &g->mtp_hc_scale, err))) return st;
        const v4f_wt *ex[3] = {&w->block.ffn_gate_exps, &w->block.ffn_up_exps, &w->block.ffn_down_exps};
        const void *ebase[3];
        for (int i = 0; i < 3 && !g->mtp_host; i++)
            if ((st = up_raw(g, &cv, ex[i]->data, ex[i]->n_mat * ex[i]->mat_bytes, &ebase[i], err))) return st;
        r->etab = carve(&cv, 3ull * c->n_expert * sizeof(void *));
        r->ptab = r->etab;
        if (cv.base && !g->mtp_host && (st = mtp_etab(g, ebase, err))) return st;
    }
    if ((st = up_mat(g, &cv, &m->output_hc_fn, &g->out_hc_fn, err))) return st;
    if ((st = up_mat(g, &cv, &m->output, &g->output, err))) return st;
    if ((st = up_vec(g, &cv, &m->output_hc_base, &g->out_hc_base, err))) return st;
    if ((st = up_vec(g, &cv, &m->output_hc_scale, &g->out_hc_scale, err))) return st;
    if ((st = up_vec(g, &cv, &m->output_norm, &g->out_norm, err))) return st;
    /* embedding */
    const v4f_wt *E = &m->token_embd;
    g->embd_type = E->type;
    g->embd_row_bytes = E->row_bytes;
    if (!g->embd_host) {
        if ((st = up_raw(g, &cv, E->data, mat_bytes_of(E), &g->embd, err))) return st;
    }
    /* expert pointer tables, one pair per placement */
    for (uint32_t l = 0; l < c->n_layer; l++)
        for (int k = 0; k < 2; k++) {
            g->L[l].pl[k].etab = carve(&cv, 3ull * c->n_expert * sizeof(void *));
            g->L[l].pl[k].ptab = carve(&cv, 3ull * c->n_expert * sizeof(void *));
        }
    *bytes = cv.off;
    return V4F_OK;
}

/* Register the host-resident expert ranges [e_dev, n_expert) of every layer
 * (merged, page-aligned) and fill the pointer tables. */
typedef struct hrange {
    uintptr_t lo, hi;
    uint8_t *dev;
} hrange;

static int cmp_range(const void *a, const void *b) {
    const hrange *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Look up the device address of host address a in the registered ranges. */
static const void *host_dev_ptr(const hrange *rg, size_t nr, uintptr_t a) {
    for (size_t k = 0; k < nr; k++)
        if (a >= rg[k].lo && a < rg[k].hi) return rg[k].dev + (a - rg[k].lo);
    return NULL;
}

/* staging slot of layer l's host-resident experts in placement p */
static uint8_t *stage_slot(const struct gplace *p, uint32_t l) {
    return p->stage + (uint64_t)(l & 1) * p->stage_bytes;
}

/* Placement 0's extra experts (those placement 1 reads from host memory)
 * from host memory into their place (queued on the stream). */
static v4f_status upload_extra(v4f_gpu *g, v4f_err *err) {
    const uint32_t nx = g->pl[0].e_dev - g->pl[1].e_dev;
    for (uint32_t l = 0; l < g->cfg.n_layer; l++)
        for (int i = 0; i < 3; i++)
            for (uint32_t j = 0; j < nx; j++) {
                size_t o = ((size_t)l * 3 + i) * nx + j;
                TRY(v4f_cuda_copy_any(g->c, (void *)g->x_dst[o], g->x_src[o], g->x_bytes[l][i], err));
            }
    return V4F_OK;
}

/* Upload the experts [0, e_dev) of the last placement to e_arena, then pin +
 * map what stays in host memory in some placement (experts [e_dev of the
 * last placement, n_expert) of every layer and, if chosen, the embedding)
 * as merged page-aligned ranges, fill both placements' pointer tables and
 * upload placement 0's extra experts. Uploads from pageable memory come
 * first: a pageable copy whose source overlaps a pinned range is refused by
 * the driver. */
static v4f_status place_experts(v4f_gpu *g, v4f_err *err) {
    const v4f_config *c = &g->cfg;
    const v4f_model *m = g->m;
    const int np = g->flex ? 2 : 1;
    uint32_t E = c->n_expert, ed = g->pl[np - 1].e_dev, e0 = g->pl[0].e_dev, nx = e0 - ed;
    v4f_status st = V4F_OK;
    const void **tab = v4f_xcalloc(3ull * E * c->n_layer, sizeof(void *));
    carver ev = {g->e_arena, 0};
    for (uint32_t l = 0; l < c->n_layer && st == V4F_OK; l++) {
        const v4f_wt *ex[3] = {&m->layers[l].ffn_gate_exps, &m->layers[l].ffn_up_exps, &m->layers[l].ffn_down_exps};
        for (int i = 0; i < 3 && st == V4F_OK; i++) {
            uint64_t mb = ex[i]->mat_bytes, mba = (mb + 255) & ~255ull;
            uint8_t *dbase = ed ? carve(&ev, (size_t)ed * mba) : NULL;
            for (uint32_t e = 0; e < ed && st == V4F_OK; e++) {
                uint8_t *d = dbase + (size_t)e * mba;
                tab[((size_t)l * 3 + i) * E + e] = d;
                st = v4f_cuda_upload(g->c, d, (const uint8_t *)ex[i]->data + (uint64_t)e * mb, mb, err);
            }
        }
    }
    /* host ranges */
    size_t nr = 0;
    hrange *rg = v4f_xcalloc(3ull * c->n_layer + 5, sizeof *rg);
    long pg = sysconf(_SC_PAGESIZE);
    uintptr_t pmask = (uintptr_t)(pg > 0 ? pg : 4096) - 1;
    const v4f_wt *mx[3] = {&m->mtp.block.ffn_gate_exps, &m->mtp.block.ffn_up_exps, &m->mtp.block.ffn_down_exps};
    for (int i = 0; i < 3 && g->mtp_host; i++) {
        rg[nr].lo = (uintptr_t)mx[i]->data & ~pmask;
        rg[nr].hi = ((uintptr_t)mx[i]->data + mx[i]->n_mat * mx[i]->mat_bytes + pmask) & ~pmask;
        nr++;
    }
    if (st == V4F_OK && ed < E) {
        for (uint32_t l = 0; l < c->n_layer; l++) {
            const v4f_wt *ex[3] = {&m->layers[l].ffn_gate_exps, &m->layers[l].ffn_up_exps,
                                   &m->layers[l].ffn_down_exps};
            for (int i = 0; i < 3; i++) {
                rg[nr].lo = ((uintptr_t)ex[i]->data + (uintptr_t)ed * ex[i]->mat_bytes) & ~pmask;
                rg[nr].hi = ((uintptr_t)ex[i]->data + (uintptr_t)E * ex[i]->mat_bytes + pmask) & ~pmask;
                nr++;
            }
        }
    }
    if (st == V4F_OK && g->embd_host) {
        rg[nr].lo = (uintptr_t)m->token_embd.data & ~pmask;
        rg[nr].hi = ((uintptr_t)m->token_embd.data + mat_bytes_of(&m->token_embd) + pmask) & ~pmask;
        nr++;
    }
    if (nr) {
        qsort(rg, nr, sizeof *rg, cmp_range);
        size_t k = 0;
        for (size_t i = 0; i < nr; i++) {
            if (k && rg[i].lo <= rg[k - 1].hi) {
                if (rg[i].hi > rg[k - 1].hi) rg[k - 1].hi = rg[i].hi;
            } else {
                rg[k++] = rg[i];
            }
        }
        nr = k;
        /* V4F_CUDA_HOST_COPY=1 takes the pinned-copy path below even where
         * pinning in place works (measurements; docs/PERF_NOTES.md, session 14) */
        const char *hc = getenv("V4F_CUDA_HOST_COPY");
        const bool copy = hc && hc[0] == '1';
        for (size_t i = 0; i < nr && st == V4F_OK && !copy; i++) {
            void *dev = NULL;
            st = v4f_cuda_host_register(g->c, (void *)rg[i].lo, rg[i].hi - rg[i].lo, &dev, err);
            if (st == V4F_OK) {
                g->reg[g->n_reg++] = (void *)rg[i].lo;
                rg[i].dev = dev;
            }
        }
        if (copy || st != V4F_OK) {
            /* pinning the mapping was refused: one pinned copy of what stays on the host */
            v4f_log(V4F_LOG_WARN, "%s; copying the host-resident weights to pinned memory",
                    copy ? "cuda: V4F_CUDA_HOST_COPY=1" : err->msg);
            for (int i = 0; i < g->n_reg; i++) v4f_cuda_host_unregister(g->c, g->reg[i]);
            g->n_reg = 0;
            size_t tot = 0;
            for (size_t i = 0; i < nr; i++) tot += rg[i].hi - rg[i].lo;
            void *host = NULL, *dev = NULL;
            st = v4f_cuda_host_alloc(g->c, tot, &host, &dev, err);
            if (st == V4F_OK) {
                g->host_copy = host;
                size_t off = 0;
                for (size_t i = 0; i < nr; i++) {
                    memcpy((uint8_t *)host + off, (const void *)rg[i].lo, rg[i].hi - rg[i].lo);
                    rg[i].dev = (uint8_t *)dev + off;
                    off += rg[i].hi - rg[i].lo;
                }
            }
        }
    }
    /* placement 0's extra experts: after its staging slots */
    carver xv = {g->pl[0].stage + 2 * g->pl[0].stage_bytes, 0};
    if (nx) {
        g->x_dst = v4f_xcalloc(3ull * c->n_layer * nx, sizeof(void *));
        g->x_src = v4f_xcalloc(3ull * c->n_layer * nx, sizeof(void *));
    }
    const void **pt = v4f_xmalloc(3ull * E * sizeof(void *));
    for (uint32_t l = 0; l < c->n_layer && st == V4F_OK; l++) {
        const v4f_wt *ex[3] = {&m->layers[l].ffn_gate_exps, &m->layers[l].ffn_up_exps, &m->layers[l].ffn_down_exps};
        const void **lt = tab + (size_t)l * 3 * E;
        for (int i = 0; i < 3; i++)
            for (uint32_t e = ed; e < E; e++)
                lt[(size_t)i * E + e] = host_dev_ptr(rg, nr, (uintptr_t)ex[i]->data + (uintptr_t)e * ex[i]->mat_bytes);
        for (int i = 0; i < 3 && nx; i++) {
            uint64_t mb = ex[i]->mat_bytes, mba = (mb + 255) & ~255ull;
            uint8_t *xb = carve(&xv, (size_t)nx * mba);
            g->x_bytes[l][i] = mb;
            for (uint32_t j = 0; j < nx; j++) {
                g->x_dst[((size_t)l * 3 + i) * nx + j] = xb + (size_t)j * mba;
                g->x_src[((size_t)l * 3 + i) * nx + j] = lt[(size_t)i * E + ed + j];
            }
        }
        for (int k = 0; k < np && st == V4F_OK; k++) {
            /* placement k: its extra experts on the device; the rest in host
             * memory, and in the prefill table (ptab) at their place in the
             * staging slot (tensor i's host experts copied contiguously, as
             * in the file) */
            struct lplace *lp = &g->L[l].pl[k];
            const uint32_t ek = g->pl[k].e_dev;
            memcpy(pt, lt, 3ull * E * sizeof(void *));
            for (int i = 0; i < 3; i++)
                for (uint32_t e = ed; e < ek; e++) pt[(size_t)i * E + e] = g->x_dst[((size_t)l * 3 + i) * nx + e - ed];
            st = v4f_cuda_upload(g->c, (void *)lp->etab, pt, 3ull * E * sizeof(void *), err);
            if (st || ek == E) continue;
            uint64_t off = 0;
            for (int i = 0; i < 3; i++) {
                lp->hsrc[i] = lt[(size_t)i * E + ek];
                lp->hbytes[i] = (uint64_t)(E - ek) * ex[i]->mat_bytes;
                for (uint32_t e = ek; e < E; e++)
                    pt[(size_t)i * E + e] = stage_slot(&g->pl[k], l) + off + (uint64_t)(e - ek) * ex[i]->mat_bytes;
                off += (lp->hbytes[i] + 255) & ~255ull;
            }
            st = v4f_cuda_upload(g->c, (void *)lp->ptab, pt, 3ull * E * sizeof(void *), err);
        }
    }
    free(pt);
    if (st == V4F_OK && g->mtp_host) { /* each tensor lies in one mapped range */
        const void *mb[3];
        for (int i = 0; i < 3 && st == V4F_OK; i++)
            if (!(mb[i] = host_dev_ptr(rg, nr, (uintptr_t)mx[i]->data)))
                st = v4f_err_set(err, V4F_STATUS_DEVICE, "cuda: MTP experts not mapped");
        if (st == V4F_OK) st = mtp_etab(g, mb, err);
    }
    if (st == V4F_OK && nx) st = upload_extra(g, err);
    if (st == V4F_OK && g->embd_host) {
        g->embd = host_dev_ptr(rg, nr, (uintptr_t)m->token_embd.data);
        if (!g->embd) st = v4f_err_set(err, V4F_STATUS_DEVICE, "cuda: embedding not mapped");
    }
    free(tab);
    free(rg);
    return st;
}

/* ---- KV and scratch layout ------------------------------------------------------------------------ */

/* KV on the device. fixed: the compressed and indexer rows, and the MTP
 * layer's ring (sized for chunks of N_max tokens, the same in both
 * placements); always: the position rings of placement k for chunks of N
 * tokens. Pass 1 (base NULL) measures. */
static size_t layout_kv(v4f_gpu *g, uint8_t *base, bool fixed, int k, uint32_t N, uint32_t N_max) {
    const v4f_config *c = &g->cfg;
    carver cv = {base, 0};
    uint64_t hd = c->head_dim, ihd = c->idx_head_dim;
    for (uint32_t l = 0; l < c->n_layer + (g->mtp ? 1 : 0); l++) {
        glayer *r = &g->L[l];
        struct lplace *p = &r->pl[k];
        uint32_t ratio = r->ratio;
        if (l == c->n_layer) {
            if (!fixed) continue;
            p->Rraw = (int64_t)c->n_swa + N_max;
            p->raw = carve(&cv, (uint64_t)p->Rraw * hd * sizeof(float));
            r->pl[1 - k] = *p;
            continue;
        }
        p->Rraw = (int64_t)c->n_swa + N;
        p->raw = carve(&cv, (uint64_t)p->Rraw * hd * sizeof(float));
        if (ratio) {
            uint64_t W = (ratio == 4 ? 2 : 1) * hd;
            r->cap = g->n_ctx / ratio + 2;
            if (fixed) r->comp = carve(&cv, (uint64_t)r->cap * hd * sizeof(float));
            p->Rc = (int64_t)(N + 2 * ratio);
            p->c_kv = carve(&cv, (uint64_t)p->Rc * W * sizeof(float));
            p->c_sc = carve(&cv, (uint64_t)p->Rc * W * sizeof(float));
        }
        if (ratio == 4) {
            r->cap_i = g->n_ctx / 4 + 2;
            if (fixed) r->idx = carve(&cv, (uint64_t)r->cap_i * ihd * sizeof(float));
            p->Rc_i = (int64_t)(N + 8);
            p->i_kv = carve(&cv, (uint64_t)p->Rc_i * 2 * ihd * sizeof(float));
            p->i_sc = carve(&cv, (uint64_t)p->Rc_i * 2 * ihd * sizeof(float));
        }
    }
    return cv.off;
}


static size_t layout_scratch(v4f_gpu *g, uint8_t *base, uint32_t N) {
    const v4f_config *c = &g->cfg;
    gscratch *x = &g->s;
    carver cv = {base, 0};
    size_t F = sizeof(float), I = sizeof(int32_t);
    uint64_t HD = (uint64_t)c->n_hc * c->n_embd, d = c->n_embd, nq = (uint64_t)c->n_head * c->head_dim;
    uint64_t mixn = v4f_config_hc_mix(c), k = c->n_expert_used, nk = N * k;
    uint64_t nsh = (uint64_t)c->n_ff_exp * (c->n_expert_shared ? c->n_expert_shared : 1);
    uint64_t cap4 = g->n_ctx / 4 + 2;
#define C(field, n, sz) x->field = carve(&cv, (uint64_t)(n) * (sz))
    C(tok, N, I);
    C(pos0, 1, I);
    C(suppress, 1, I);
    C(short_tok, GPU_SHORT_MAX, I);
    C(pos, N, I);
    C(rf, N, I);
    C(rc, N, I);
    C(nvis, (uint64_t)V4F_CUDA_MAX_RATIOS * N, I);
    C(X, N * HD, F);
    C(X2, N * HD, F);
    C(mix, N * mixn, F);
    C(pre, N * c->n_hc, F);
    C(post, N * c->n_hc, F);
    C(comb, N * c->n_hc * c->n_hc, F);
    C(a, N * d, F);
    C(xn, N * d, F);
    C(qr, N * c->q_lora_rank, F);
    C(q, N * nq, F);
    C(o, N * nq, F);
    C(kv, N * c->head_dim, F);
    C(low, N * (uint64_t)c->o_groups * c->o_lora_rank, F);
    C(oq, GPU_PLANE_TOKENS * (uint64_t)c->o_groups * v4f_cuda_quant_row_bytes(nq / c->o_groups), 1);
    C(out, N * d, F);
    C(ckv, N * 2 * c->head_dim, F);
    C(cgate, N * 2 * c->head_dim, F);
    C(ikv, N * 2 * c->idx_head_dim, F);
    C(igate, N * 2 * c->idx_head_dim, F);
    C(iq, N * (uint64_t)c->n_idx_head * c->idx_head_dim, F);
    C(iw, N * (uint64_t)c->n_idx_head, F);
    C(iscore, N * cap4, F);
    C(isel, N * (uint64_t)c->idx_topk, I);
    C(icnt, N, I);
    C(rlog, N * (uint64_t)c->n_expert, F);
    C(eids, nk, I);
    C(ew, nk, F);
    C(wrow, nk, F);
    C(offs, (uint64_t)c->n_expert + 1, I);
    C(elist, nk, I);
    C(einv, nk, I);
    C(ident, nk, I);
    C(act, (uint64_t)c->n_expert + 1, I);
    C(xg, nk * d, F);
    C(g, nk * c->n_ff_exp, F);
    C(u, nk * c->n_ff_exp, F);
    C(sg, N * nsh, F);
    C(gq, GPU_PLANE_TOKENS * k * v4f_cuda_quant_row_bytes(c->n_ff_exp), 1);
    C(sgq, GPU_PLANE_TOKENS * v4f_cuda_quant_row_bytes(nsh), 1);
    C(xnq, GPU_PLANE_TOKENS * v4f_cuda_quant_row_bytes(d), 1);
    C(su, N * nsh, F);
    C(yd, nk * d, F);
    C(ysh, N * d, F);
    C(hw, N * c->n_hc, F);
    C(mixp, (uint64_t)N * 128 * mixn, F);
    C(mixss, (uint64_t)N * 128, sizeof(double));
    C(gram, (uint64_t)N * 128 * 10, sizeof(double));
    C(logits, (uint64_t)GPU_HEAD_ROWS * c->n_vocab, F);
    C(logits_keep, 2 * (uint64_t)c->n_vocab, F);
    C(greedy_scr, 2, sizeof(uint64_t));
    C(no_sink, c->n_head, F);
#undef C
    return cv.off;
}

/* Make placement k the live one: chunk, expert counts, staging, the
 * scratch layout, each layer's tables and KV rings. */
static void apply_place(v4f_gpu *g, int k) {
    const struct gplace *p = &g->pl[k];
    const v4f_config *c = &g->cfg;
    g->place = k;
    g->N = p->N;
    g->e_dev = p->e_dev;
    g->e_host = p->e_host;
    layout_scratch(g, g->s_arena, p->N);
    for (uint32_t l = 0; l < c->n_layer + (g->mtp ? 1 : 0); l++) {
        glayer *r = &g->L[l];
        const struct lplace *q = &r->pl[k];
        if (l < c->n_layer) {
            r->etab = q->etab;
            r->ptab = q->ptab;
            memcpy(r->hsrc, q->hsrc, sizeof r->hsrc);
            memcpy(r->hbytes, q->hbytes, sizeof r->hbytes);
        }
        r->raw = q->raw;
        r->c_kv = q->c_kv;
        r->c_sc = q->c_sc;
        r->i_kv = q->i_kv;
        r->i_sc = q->i_sc;
        r->Rraw = q->Rraw;
        r->Rc = q->Rc;
        r->Rc_i = q->Rc_i;
    }
}

/* Scratch that keeps values between evals: the identity pair map, the
 * -inf sinks, no suppressed id, the greedy pick's zeroed reduction. */
static v4f_status scratch_init(v4f_gpu *g, v4f_err *err) {
    const v4f_config *c = &g->cfg;
    uint64_t nk = (uint64_t)g->N * c->n_expert_used;
    int32_t *id = v4f_xmalloc(nk * sizeof(int32_t));
    for (uint64_t i = 0; i < nk; i++) id[i] = (int32_t)i;
    v4f_status st = v4f_cuda_upload(g->c, g->s.ident, id, nk * sizeof(int32_t), err);
    free(id);
    float *ns = v4f_xmalloc(c->n_head * sizeof(float));
    for (uint32_t h = 0; h < c->n_head; h++) ns[h] = -INFINITY;
    if (st == V4F_OK) st = v4f_cuda_upload(g->c, g->s.no_sink, ns, c->n_head * sizeof(float), err);
    free(ns);
    if (st == V4F_OK) st = v4f_cuda_memset(g->c, g->s.suppress, 0xff, sizeof(int32_t), err); /* -1 */
    if (st == V4F_OK) st = v4f_cuda_memset(g->c, g->s.greedy_scr, 0, 2 * sizeof(uint64_t), err);
    return st;
}

/* ---- creation ------------------------------------------------------------------------------------------ */

bool v4f_gpu_available(void) { return v4f_cuda_device_count() > 0; }
v4f_status v4f_gpu_copy_bw(int device, double *gbs, v4f_err *err) {
    return v4f_cuda_measure_copy_bw(device, 1ull << 30, gbs, err);
}

void v4f_gpu_free(v4f_gpu *g) {
    if (!g) return;
    if (g->prof.on) prof_print(g);
    v4f_cuda_marks_free(g->prof.marks);
    v4f_cuda_marks_free(g->pipe);
    if (g->c) {
        (void)v4f_cuda_sync(g->c, NULL);
        v4f_cuda_graph_free(g->graph);
        v4f_cuda_graph_free(g->vgraph);
        v4f_cuda_free(g->c, g->spec_hc);
        v4f_cuda_free(g->c, g->spec_dev);
        v4f_cuda_host_free(g->c, (void *)g->h_spec);
        for (int i = 0; i < g->n_reg; i++) v4f_cuda_host_unregister(g->c, g->reg[i]);
        v4f_cuda_host_free(g->c, g->host_copy);
        v4f_cuda_host_free(g->c, g->h_in);
        v4f_cuda_host_free(g->c, g->h_used);
        v4f_cuda_host_free(g->c, (void *)g->h_pick);
        v4f_cuda_host_free(g->c, g->h_logits);
        v4f_cuda_free(g->c, g->w_arena);
        v4f_cuda_free(g->c, g->e_arena);
        v4f_cuda_free(g->c, g->kv_arena);
        v4f_cuda_free(g->c, g->s_arena);
        v4f_cuda_close(g->c);
    }
    free(g->x_dst);
    free(g->x_src);
    free(g->L);
    free(g);
}

static double gib(uint64_t b) { return (double)b / (double)(1ull << 30); }

v4f_status v4f_gpu_new(const v4f_model *m, const v4f_session_opts *o, v4f_gpu **out, v4f_err *err) {
    *out = NULL;
    const v4f_config *c = &m->cfg;
    if (o->enable_mtp && !m->has_mtp)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "MTP requested but the model has no MTP block");
    if (c->n_expert_used > 16 || c->n_hc > 16 || c->o_groups > GPU_MAX_GROUPS || c->n_expert > 4096)
        return v4f_err_set(err, V4F_STATUS_UNSUPPORTED, "cuda: unsupported sizes (experts used %u, HC %u, groups %u)",
                           c->n_expert_used, c->n_hc, c->o_groups);
    if (m->token_embd.type != V4F_TYPE_F32 && m->token_embd.type != V4F_TYPE_F16 &&
        m->token_embd.type != V4F_TYPE_BF16)
        return v4f_err_set(err, V4F_STATUS_UNSUPPORTED, "cuda: embedding type %s (F32/F16/BF16 supported)",
                           v4f_type_name(m->token_embd.type));
    for (uint32_t l = 0; l < c->n_layer; l++) {
        const v4f_wt *f[2] = {&m->layers[l].hc_attn_fn, &m->layers[l].hc_ffn_fn};
        for (int i = 0; i < 2; i++)
            if (f[i]->type != V4F_TYPE_F32 && f[i]->type != V4F_TYPE_F16 && f[i]->type != V4F_TYPE_BF16)
                return v4f_err_set(err, V4F_STATUS_UNSUPPORTED, "cuda: HC mixer %s is %s (F32/F16/BF16 supported)",
                                   f[i]->name, v4f_type_name(f[i]->type));
    }
    v4f_gpu *g = v4f_xcalloc(1, sizeof *g);
    g->m = m;
    g->cfg = *c;
    g->n_ctx = o->n_ctx ? o->n_ctx : 4096;
    g->exact = o->precision == V4F_PRECISION_REF;
    g->mtp = o->enable_mtp;
    g->L = v4f_xcalloc(c->n_layer + 1, sizeof *g->L);
    g->L[c->n_layer].ratio_slot = -1;
    v4f_status st = v4f_cuda_open(o->gpu_device, &g->c, err);
    if (st) goto fail;
    /* the default precision multiplies two int8 planes of x (residual
     * 3.1e-5 of a group's max|x|), --precision ref three (2.4e-7) */
    st = v4f_cuda_set_x_planes(g->c, g->exact ? 3 : 2, err);
    if (st) goto fail;
    for (uint32_t l = 0; l < c->n_layer; l++) {
        uint32_t r = c->compress_ratio[l];
        if (r && ratio_slot(g, r) < 0) {
            if (g->n_ratios == V4F_CUDA_MAX_RATIOS) {
                st = v4f_err_set(err, V4F_STATUS_UNSUPPORTED, "cuda: more than %d distinct compress ratios",
                                 V4F_CUDA_MAX_RATIOS);
                goto fail;
            }
            g->ratios[g->n_ratios++] = r;
        }
        g->L[l].ratio = r;
    }
    for (uint32_t l = 0; l < c->n_layer; l++) g->L[l].ratio_slot = c->compress_ratio[l] ? ratio_slot(g, c->compress_ratio[l]) : -1;

    /* budget */
    size_t free_b = 0, total_b = 0;
    if ((st = v4f_cuda_mem_info(g->c, &free_b, &total_b, err))) goto fail;
    uint64_t reserve = GPU_RESERVE_BYTES;
    const long reserve_mb = v4f_env_long("V4F_CUDA_RESERVE_MB", -1); /* measurements of the reserve */
    if (reserve_mb >= 0) reserve = (uint64_t)reserve_mb << 20;
    uint64_t budget = free_b > reserve ? free_b - reserve : 0;
    if (o->gpu_mem_gb > 0) {
        uint64_t want = (uint64_t)(o->gpu_mem_gb * (double)(1ull << 30));
        if (want < budget) budget = want;
    }
    uint64_t per_layer_expert = 0, embd_bytes = (mat_bytes_of(&m->token_embd) + 255) & ~255ull;
    for (uint32_t l = 0; l < c->n_layer; l++) per_layer_expert += expert_bytes_one(&m->layers[l]);
    /* chunk: as large as allowed (the routed-expert GEMMs get more tokens
     * per expert tile); halved while the routed experts do not all fit, down
     * to GPU_CHUNK_TIGHT */
    uint32_t N = g->n_ctx < GPU_CHUNK_CAP ? g->n_ctx : GPU_CHUNK_CAP;
    if (o->max_chunk && o->max_chunk < N) N = o->max_chunk;
    uint64_t cap4 = g->n_ctx / 4 + 2;
    while (N > 16 && (uint64_t)N * cap4 * 4 > GPU_ISCORE_BUDGET) N /= 2;
    const uint32_t N0 = N; /* the largest chunk: the MTP ring's size, placement 1's first try */
    const uint32_t E = c->n_expert;
    /* Developer knobs (tests, and placements of smaller cards on a larger
     * one): V4F_CUDA_CHUNK_TIGHT=N, the chunk floor; V4F_CUDA_MAX_EXPERTS=k0[,k1],
     * at most k0 routed experts per layer on the device (k1 in placement 1). */
    uint32_t tight = GPU_CHUNK_TIGHT, cap0 = E, cap1 = E;
    {
        const long v = v4f_env_long("V4F_CUDA_CHUNK_TIGHT", 0);
        if (v >= 16 && v <= GPU_CHUNK_CAP) tight = (uint32_t)v;
        const char *mx = getenv("V4F_CUDA_MAX_EXPERTS");
        char *end = NULL;
        long a = mx && *mx ? strtol(mx, &end, 10) : -1, b = end && *end == ',' ? strtol(end + 1, NULL, 10) : -1;
        if (a >= 0 && a < (long)E) cap0 = (uint32_t)a;
        if (b >= 0 && b < (long)cap0) cap1 = (uint32_t)b;
    }
    /* The MTP block's routed experts (one layer's worth, read once per
     * drafting step and not at all in plain decoding) go to host memory
     * first when the main model's do not all fit: the device memory they
     * free holds main-model experts, read at every token.
     * V4F_CUDA_MTP_HOST=1 / 0: always / never (tests, measurements). */
    const long mtp_env = v4f_env_long("V4F_CUDA_MTP_HOST", -1);
    g->mtp_host = g->mtp && mtp_env == 1;
    size_t dense = 0, kvb = 0, scr = 0;
    for (;;) {
        g->embd_host = false;
        if ((st = place_dense(g, NULL, &dense, err))) goto fail;
        kvb = layout_kv(g, NULL, true, 0, N, N0);
        scr = layout_scratch(g, NULL, N);
        uint64_t fixed = dense + kvb + scr;
        uint64_t all = fixed + per_layer_expert * c->n_expert;
        const bool fits = all <= budget && cap0 == E;
        if (!fits && g->mtp && !g->mtp_host && mtp_env != 0) {
            g->mtp_host = true;
            continue;
        }
        if (fits || N <= tight || o->max_chunk) break;
        N = N / 2 > tight ? N / 2 : tight;
    }
    uint64_t fixed = dense + kvb + scr;
    if (fixed + per_layer_expert * c->n_expert > budget && embd_bytes > (64ull << 20)) {
        g->embd_host = true; /* one row per token: cheap over the bus */
        if ((st = place_dense(g, NULL, &dense, err))) goto fail;
        fixed = dense + kvb + scr;
    }
    if (fixed > budget) {
        st = v4f_err_set(err, V4F_STATUS_OOM,
                         "cuda: %.2f GiB of dense weights, KV and scratch (ctx %u) do not fit the %.2f GiB budget "
                         "on %s (free %.2f GiB); lower --ctx or raise --gpu-mem-gb",
                         gib(fixed), g->n_ctx, gib(budget), v4f_cuda_device_name(g->c), gib(free_b));
        goto fail;
    }
    uint64_t rem = budget - fixed;
    uint64_t ed = per_layer_expert ? rem / per_layer_expert : E;
    /* prefill stages one layer's host-resident experts on the device (one
     * copy per layer instead of re-reading them over the bus per tile), in
     * two slots so that the next layer's copy overlaps this layer's work */
    uint64_t one_layer = 0;
    for (uint32_t l = 0; l < c->n_layer; l++) {
        uint64_t b = expert_bytes_one(&m->layers[l]);
        if (b > one_layer) one_layer = b;
    }
    while (ed < E && ed > 0 && ed * per_layer_expert + 2 * (E - ed) * one_layer > rem) ed--;
    const uint32_t ed0 = ed > cap0 ? cap0 : (uint32_t)ed;
    /* Placement 1: when the routed experts do not all fit, evals of more
     * than flex_min tokens run with a larger chunk (the prefill's cost per
     * chunk is mostly fixed: H200, 8K prompt, chunk 512 / 2,048 / 8,192:
     * 2,029 / 4,348 / 5,085 t/s) in the memory that placement 0 fills with
     * experts; those are read from host memory meanwhile and uploaded again
     * after (docs/PERF_NOTES.md, session 15). V4F_CUDA_FLEX=0: off. */
    uint32_t N1 = N, ed1 = ed0;
    size_t scr1 = 0, rings1 = 0;
    {
        const bool flex_off = v4f_env_off("V4F_CUDA_FLEX");
        for (uint32_t cand = N0; !flex_off && !o->max_chunk && ed0 < E && cand > N; cand /= 2) {
            size_t sc = layout_scratch(g, NULL, cand), rn = layout_kv(g, NULL, false, 1, cand, N0);
            uint64_t f1 = dense + kvb + sc + rn;
            if (f1 >= budget) continue;
            uint64_t rem1 = budget - f1, e1 = rem1 / per_layer_expert;
            if (e1 > ed0) e1 = ed0;
            if (e1 > cap1) e1 = cap1;
            while (e1 > 0 && e1 * per_layer_expert + 2 * (E - e1) * one_layer > rem1) e1--;
            if (2 * (E - e1) * one_layer > rem1) continue;
            N1 = cand;
            ed1 = (uint32_t)e1;
            scr1 = sc;
            rings1 = rn;
            g->flex = true;
            break;
        }
    }
    const uint64_t stage0 = (uint64_t)(E - ed0) * one_layer, stage1 = (uint64_t)(E - ed1) * one_layer;
    const uint64_t flex0 = scr + 2 * stage0 + (uint64_t)(ed0 - ed1) * per_layer_expert;
    const uint64_t flex1 = g->flex ? scr1 + rings1 + 2 * stage1 : 0;
    g->per_expert = per_layer_expert;
    g->host_expert_bytes = per_layer_expert * (E - ed0);

    /* allocate and upload */
    g->w_bytes = dense;
    g->kv_bytes = kvb;
    g->s_bytes = flex0 > flex1 ? flex0 : flex1;
    g->e_bytes = (size_t)per_layer_expert * ed1;
    if ((st = v4f_cuda_alloc(g->c, dense, &g->w_arena, err))) goto fail;
    if (g->e_bytes && (st = v4f_cuda_alloc(g->c, g->e_bytes, &g->e_arena, err))) goto fail;
    if ((st = v4f_cuda_alloc(g->c, kvb, &g->kv_arena, err))) goto fail;
    if ((st = v4f_cuda_alloc(g->c, g->s_bytes, &g->s_arena, err))) goto fail;
    uint8_t *sa = g->s_arena;
    g->pl[0] = (struct gplace){N, ed0, E - ed0, stage0, sa + scr};
    g->pl[1] = (struct gplace){N1, ed1, E - ed1, stage1, sa + scr1 + rings1};
    if ((st = place_dense(g, g->w_arena, &dense, err))) goto fail;
    layout_kv(g, g->kv_arena, true, 0, N, N0);
    if (g->flex) layout_kv(g, sa + scr1, false, 1, N1, N0);
    if ((st = place_experts(g, err))) goto fail;
    apply_place(g, 0); /* after place_experts: it fills the placements' tables */
    if ((st = scratch_init(g, err))) goto fail;
    g->flex_min = v4f_env_u32("V4F_CUDA_FLEX_MIN", 2 * (long)N, 1, (long)UINT32_MAX);
    if (!v4f_env_off("V4F_CUDA_FORK")) {
        v4f_err e2 = {0};
        g->fork = v4f_cuda_fork_init(g->c, &e2) == V4F_OK;
        if (!g->fork) v4f_log(V4F_LOG_WARN, "cuda: no second stream (%s); running one chain", e2.msg);
    }
    if ((st = v4f_cuda_host_alloc(g->c, ((size_t)(g->flex ? N1 : N) + H_IN_EXTRA) * sizeof(int32_t),
                                  (void **)&g->h_in, NULL, err)))
        goto fail;
    if ((st = v4f_cuda_host_alloc(g->c, 2 * sizeof(int32_t), (void **)&g->h_pick, (void **)&g->d_pick, err)))
        goto fail;
    if ((st = v4f_cuda_marks_new(g->c, 2, &g->pipe, err))) goto fail;
    if ((st = v4f_cuda_host_alloc(g->c, (size_t)GPU_HEAD_ROWS * c->n_vocab * sizeof(float), (void **)&g->h_logits,
                                  NULL, err)))
        goto fail;
    if (g->e_host) {
        v4f_err e2 = {0};
        if (!v4f_env_off("V4F_CUDA_PREFETCH")) { /* 0: stage each layer's experts in line (A/B) */
            g->prefetch = v4f_cuda_prefetch_init(g->c, &e2) == V4F_OK;
            if (!g->prefetch) v4f_log(V4F_LOG_WARN, "cuda: no copy stream (%s); staging experts in line", e2.msg);
        }
        /* V4F_CUDA_DECODE_DMA=0: the decode graph reads host experts over the bus */
        g->decode_dma = g->e_host <= V4F_CUDA_COND_MAX && !v4f_env_off("V4F_CUDA_DECODE_DMA");
        /* V4F_CUDA_STAGE_USED=0: pair-by-pair chunks copy all host experts one layer ahead */
        if (!v4f_env_off("V4F_CUDA_STAGE_USED") &&
            (st = v4f_cuda_host_alloc(g->c, ((size_t)c->n_expert + 1) * sizeof(int32_t), (void **)&g->h_used, NULL,
                                      err)))
            goto fail;
    }
    if (o->mtp_draft && g->mtp) {
        g->spec_cap = c->n_swa + 2;
        if ((st = v4f_cuda_alloc(g->c, (size_t)g->spec_cap * c->n_hc * c->n_embd * sizeof(float), (void **)&g->spec_hc,
                                 err)) ||
            (st = v4f_cuda_alloc(g->c, 2 * sizeof(int32_t), (void **)&g->spec_dev, err)) ||
            (st = v4f_cuda_host_alloc(g->c, 4 * sizeof(int32_t), (void **)&g->h_spec, (void **)&g->d_spec, err)))
            goto fail;
    }
    g->short_max = v4f_env_u32("V4F_CUDA_SHORT_EVAL", GPU_SHORT_EVAL, 0, GPU_SHORT_MAX);
    g->pair_max = v4f_env_u32("V4F_CUDA_PAIR_EVAL", GPU_PAIR_EVAL, 0, INT32_MAX);
    g->mx_max = v4f_env_u32("V4F_CUDA_MVEXP_EVAL", GPU_MVEXP_EVAL, 0, 65535);
    g->mx_min = v4f_env_u32("V4F_CUDA_MVEXP_MIN", GPU_MVEXP_MIN, 1, 65535);
    g->cols_max = v4f_env_u32("V4F_CUDA_COLS_EVAL", GPU_COLS_EVAL, 0, 32);
    {
        const char *pe = getenv("V4F_PROFILE");
        if (pe && pe[0] && strcmp(pe, "0") != 0 &&
            v4f_cuda_marks_new(g->c, GP_MAX_MARKS, &g->prof.marks, NULL) == V4F_OK)
            g->prof.on = true;
    }
    if ((st = v4f_cuda_sync(g->c, err))) goto fail;
    char how[256] = "all weights on the GPU";
    if (g->e_host)
        snprintf(how, sizeof how, "host-resident experts: decode %s; prefill %s (copy engine, %d x %.2f GiB)",
                 g->decode_dma ? "copies the picked ones (copy engine)" : "reads them over the bus",
                 g->prefetch ? "copies each layer's during the layer before" : "stages each layer's",
                 g->prefetch ? 2 : 1, gib(g->pl[0].stage_bytes));
    char fl[256] = "", mh[160] = "";
    if (g->mtp_host) {
        const v4f_layer_weights *mb = &m->mtp.block;
        const uint64_t hb = mb->ffn_gate_exps.n_mat * mb->ffn_gate_exps.mat_bytes +
                            mb->ffn_up_exps.n_mat * mb->ffn_up_exps.mat_bytes +
                            mb->ffn_down_exps.n_mat * mb->ffn_down_exps.mat_bytes;
        snprintf(mh, sizeof mh, "gpu: MTP block: routed experts in host memory (%.2f GiB), read over the bus "
                 "when drafting\n", gib(hb));
    }
    if (g->flex)
        snprintf(fl, sizeof fl,
                 "gpu: evals of more than %u tokens: chunk %u, %u experts per layer on the GPU, %u in host memory "
                 "(%.2f GiB of experts uploaded again after them)\n",
                 g->flex_min, N1, ed1, E - ed1, gib((uint64_t)(ed0 - ed1) * per_layer_expert));
    snprintf(g->report, sizeof g->report,
             "gpu: %s, budget %.2f GiB (free %.2f of %.2f GiB)\n"
             "gpu: dense weights %.2f GiB%s, KV %.2f GiB (ctx %u), scratch %.2f GiB (chunk %u)\n"
             "gpu: routed experts %u of %u per layer on the GPU (%.2f GiB), %u in host memory (%.2f GiB%s)\n"
             "gpu: %s\n%s%s",
             v4f_cuda_device_name(g->c), gib(budget), gib(free_b), gib(total_b), gib(dense),
             g->embd_host ? " (embedding in host memory)" : "", gib(kvb), g->n_ctx, gib(scr), N, g->e_dev,
             c->n_expert, gib((uint64_t)ed0 * per_layer_expert), g->e_host, gib(g->host_expert_bytes),
             g->e_host ? (g->host_copy ? ", pinned copy" : ", model pages pinned in place") : "", how, mh, fl);
    *out = g;
    return V4F_OK;
fail:
    v4f_gpu_free(g);
    return st;
}

uint64_t v4f_gpu_kv_bytes(const v4f_gpu *g) { return g->kv_bytes; }

/* Position of CPU frontier slot sl at pos (compressor_run's layout: with
 * overlap, slots [0, r) hold the previous window, [r, r + m) the current
 * one; without, [0, m)); m = pos mod r tokens of the current window. */
static int64_t frontier_pos(uint32_t ratio, uint32_t pos, uint32_t sl) {
    int64_t m = pos % ratio;
    if (ratio == 4) return sl < ratio ? (int64_t)pos - m - ratio + sl : (int64_t)pos - m + (sl - ratio);
    return (int64_t)pos - m + sl;
}

/* Rows of positions [q0, q1) (all >= 0) of a device position ring (R rows
 * of W floats) and host rows (position q at host + ((q - hb) % hm) * W):
 * dir 0 device -> host, 1 host -> device; one copy per stretch that is
 * contiguous on the device (staged through buf, R rows). A row at a time
 * took ~1 s for an 8K-token snapshot on the H100 (session 15). */
static v4f_status ring_xfer(v4f_gpu *g, int dir, float *dev, int64_t R, float *host, int64_t hb, int64_t hm,
                            int64_t q0, int64_t q1, int64_t W, float *buf, v4f_err *err) {
    const size_t rb = (size_t)W * sizeof(float);
    for (int64_t q = q0; q < q1;) {
        const int64_t id = q % R, k = q1 - q < R - id ? q1 - q : R - id;
        if (dir == 1)
            for (int64_t i = 0; i < k; i++) memcpy(buf + i * W, host + ((q + i - hb) % hm) * W, rb);
        TRY(dir == 0 ? v4f_cuda_download(g->c, buf, dev + id * W, (size_t)k * rb, err)
                     : v4f_cuda_upload(g->c, dev + id * W, buf, (size_t)k * rb, err));
        if (dir == 0)
            for (int64_t i = 0; i < k; i++) memcpy(host + ((q + i - hb) % hm) * W, buf + i * W, rb);
        q += k;
    }
    return V4F_OK;
}

/* dir 0: device -> host, 1: host -> device, for the frontier of one
 * compressor: host slot sl holds position f0 + sl (frontier_pos) */
static v4f_status frontier_xfer(v4f_gpu *g, int dir, uint32_t ratio, uint32_t pos, float *h_kv, float *h_sc,
                                float *d_kv, float *d_sc, int64_t R, int64_t W, float *buf, v4f_err *err) {
    const int64_t slots = (ratio == 4 ? ratio : 0) + pos % ratio, f0 = frontier_pos(ratio, pos, 0);
    for (int64_t sl = 0; dir == 0 && sl < slots && f0 + sl < 0; sl++)
        for (int64_t j = 0; j < W; j++) { /* positions < 0: the device skips them */
            h_kv[sl * W + j] = 0.0f;
            h_sc[sl * W + j] = -INFINITY;
        }
    const int64_t q0 = f0 < 0 ? 0 : f0, q1 = f0 + slots;
    TRY(ring_xfer(g, dir, d_kv, R, h_kv, f0, INT64_MAX, q0, q1, W, buf, err));
    return ring_xfer(g, dir, d_sc, R, h_sc, f0, INT64_MAX, q0, q1, W, buf, err);
}

/* The first n compressed or indexer rows of one layer: device float32 rows
 * of width floats <-> the host cache's row form (put/get encode/decode the
 * compact codes exactly). buf holds n rows. */
typedef void (*row_put_fn)(const v4f_kv *, v4f_kv_layer *, uint32_t, const float *);
typedef void (*row_get_fn)(const v4f_kv *, const v4f_kv_layer *, uint32_t, float *);

static v4f_status rows_xfer(v4f_gpu *g, int dir, v4f_kv *kv, v4f_kv_layer *L, float *dev, uint32_t n, uint64_t width,
                            float *buf, row_put_fn put, row_get_fn get, v4f_err *err) {
    size_t bytes = (size_t)n * width * sizeof(float);
    if (dir == 0) {
        TRY(v4f_cuda_download(g->c, buf, dev, bytes, err));
        for (uint32_t i = 0; i < n; i++) put(kv, L, i, buf + (size_t)i * width);
        return V4F_OK;
    }
    for (uint32_t i = 0; i < n; i++) get(kv, L, i, buf + (size_t)i * width);
    return v4f_cuda_upload(g->c, dev, buf, bytes, err);
}

/* The same for a compact host cache, coded on the device: each host row is
 * [codes][block exponents][the last W - nq dims as float32], the first nq
 * dims as FP8 E4M3 in blocks of 64 (compressed rows) or FP4 E2M1 in blocks
 * of 32 (indexer rows). The device kernels are bit-exact with the CPU block
 * coders that v4f_kv_comp_put / v4f_kv_idx_put use, so the host rows are the
 * same bytes; only codes cross the bus (a quarter of the float32 bytes for
 * FP8) and the host merely interleaves them (the CPU coding of an 8K-token
 * snapshot was most of its 246 ms save on the H100, session 16). Pieces of
 * rows go through the chunk's residual buffer X, which no eval holds
 * between calls. V4F_CUDA_KV_DEVICE_CODES=0: code on the host (rows_xfer). */
static v4f_status rows_xfer_coded(v4f_gpu *g, int dir, uint8_t *host, uint64_t hrb, float *dev, uint32_t n, int64_t W,
                                  int64_t nq, bool fp4, uint8_t *buf, v4f_err *err) {
    const v4f_config *c = &g->cfg;
    const size_t cb = (size_t)(fp4 ? nq / 2 : nq), eb = (size_t)(fp4 ? nq / 32 : nq / 64);
    const size_t fb = (size_t)(W - nq) * sizeof(float), rowb = cb + eb + fb;
    if (cb + eb + fb != hrb) return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "gpu kv transfer: row form mismatch");
    const size_t room = (size_t)g->pl[g->place].N * c->n_hc * c->n_embd * sizeof(float);
    const uint32_t piece = (uint32_t)(room / rowb);
    if (piece == 0) return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "gpu kv transfer: no room for a row");
    uint8_t *S = (uint8_t *)g->s.X;
    for (uint32_t i = 0; i < n;) {
        const uint32_t k = n - i < piece ? n - i : piece;
        uint8_t *codes = S, *exps = S + (size_t)k * cb, *tail = S + (size_t)k * (cb + eb);
        float *d = dev + (size_t)i * W;
        if (dir == 0) {
            TRY(fp4 ? v4f_cuda_fp4_encode(g->c, d, k, W, nq, codes, (int64_t)cb, (int8_t *)exps, err)
                    : v4f_cuda_fp8_encode(g->c, d, k, W, nq, codes, (int64_t)cb, (int8_t *)exps, err));
            TRY(v4f_cuda_copy_2d(g->c, tail, fb, d + nq, (size_t)W * sizeof(float), fb, k, err));
            TRY(v4f_cuda_download(g->c, buf, S, (size_t)k * rowb, err));
        }
        /* host row j: [codes][exps][tail] <-> buf: the k codes, the k exps, the k tails */
        for (uint32_t j = 0; j < k; j++) {
            uint8_t *h = host + (uint64_t)(i + j) * hrb;
            const size_t part[3][3] = {{0, (size_t)j * cb, cb},
                                       {cb, (size_t)k * cb + (size_t)j * eb, eb},
                                       {cb + eb, (size_t)k * (cb + eb) + (size_t)j * fb, fb}};
            for (int q = 0; q < 3; q++)
                if (dir == 0) memcpy(h + part[q][0], buf + part[q][1], part[q][2]);
                else memcpy(buf + part[q][1], h + part[q][0], part[q][2]);
        }
        if (dir == 1) {
            TRY(v4f_cuda_upload(g->c, S, buf, (size_t)k * rowb, err));
            TRY(fp4 ? v4f_cuda_fp4_decode(g->c, codes, (int64_t)cb, (const int8_t *)exps, k, nq, d, W, err)
                    : v4f_cuda_fp8_decode(g->c, codes, (int64_t)cb, (const int8_t *)exps, k, nq, d, W, err));
            TRY(v4f_cuda_copy_2d(g->c, d + nq, (size_t)W * sizeof(float), tail, fb, fb, k, err));
            TRY(v4f_cuda_sync(g->c, err)); /* S is reused by the next piece's upload */
        }
        i += k;
    }
    return V4F_OK;
}

static v4f_status kv_xfer(v4f_gpu *g, int dir, v4f_kv *kv, uint32_t pos, v4f_err *err) {
    const v4f_config *c = &g->cfg;
    if (kv->n_layer != c->n_layer || kv->hd != c->head_dim || kv->n_swa != c->n_swa || kv->idx_hd != c->idx_head_dim)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "gpu kv transfer: host cache of another shape");
    if (pos > g->n_ctx) return v4f_err_set(err, V4F_STATUS_RANGE, "gpu kv transfer: position %u > ctx %u", pos, g->n_ctx);
    TRY(v4f_cuda_sync(g->c, err));
    uint64_t hd = c->head_dim, ihd = c->idx_head_dim;
    uint64_t maxrows = g->n_ctx / 4 + 2, ring = 0;
    for (uint32_t l = 0; l < c->n_layer; l++) {
        const glayer *r = &g->L[l];
        uint64_t a = (uint64_t)r->Rraw * hd, b = (uint64_t)r->Rc * 2 * hd, e = (uint64_t)r->Rc_i * 2 * ihd;
        ring = a > ring ? a : ring;
        ring = r->ratio && b > ring ? b : ring;
        ring = r->ratio == 4 && e > ring ? e : ring;
    }
    uint64_t nb = maxrows * (hd > ihd ? hd : ihd);
    float *buf = v4f_xmalloc((size_t)(nb > ring ? nb : ring) * sizeof(float));
    const bool coded = kv->compact && !v4f_env_off("V4F_CUDA_KV_DEVICE_CODES");
    v4f_status st = V4F_OK;
    for (uint32_t l = 0; l < c->n_layer && st == V4F_OK; l++) {
        glayer *r = &g->L[l];
        v4f_kv_layer *L = &kv->layers[l];
        /* raw window: positions [pos - n_raw, pos), host row q % n_swa */
        uint32_t n_raw = pos < c->n_swa ? pos : c->n_swa;
        st = ring_xfer(g, dir, r->raw, r->Rraw, L->raw, 0, c->n_swa, pos - n_raw, pos, (int64_t)hd, buf, err);
        if (st || !r->ratio) continue;
        uint32_t nc = pos / r->ratio;
        if (nc > L->comp_cap || nc > r->cap) {
            st = v4f_err_set(err, V4F_STATUS_RANGE, "gpu kv transfer: %u compressed rows exceed the capacity", nc);
            break;
        }
        st = coded ? rows_xfer_coded(g, dir, L->comp, kv->comp_row_bytes, r->comp, nc, (int64_t)hd,
                                     (int64_t)(hd - c->n_rot), false, (uint8_t *)buf, err)
                   : rows_xfer(g, dir, kv, L, r->comp, nc, hd, buf, v4f_kv_comp_put, v4f_kv_comp_get, err);
        if (st == V4F_OK && dir == 0) L->n_comp = nc;
        if (st == V4F_OK)
            st = frontier_xfer(g, dir, r->ratio, pos, L->c_kv, L->c_sc, r->c_kv, r->c_sc, r->Rc,
                               (r->ratio == 4 ? 2 : 1) * (int64_t)hd, buf, err);
        if (st || r->ratio != 4) continue;
        uint32_t ni = pos / 4;
        st = coded ? rows_xfer_coded(g, dir, L->idx, kv->idx_row_bytes, r->idx, ni, (int64_t)ihd, (int64_t)ihd, true,
                                     (uint8_t *)buf, err)
                   : rows_xfer(g, dir, kv, L, r->idx, ni, ihd, buf, v4f_kv_idx_put, v4f_kv_idx_get, err);
        if (st == V4F_OK && dir == 0) L->n_idx = ni;
        if (st == V4F_OK)
            st = frontier_xfer(g, dir, 4, pos, L->i_kv, L->i_sc, r->i_kv, r->i_sc, r->Rc_i, 2 * (int64_t)ihd, buf, err);
    }
    free(buf);
    return st;
}

/* Rows of positions [q0, q1) (q0 < 0: from 0) of a position ring from (src,
 * Rs rows) to (dst, Rd rows), W floats per row: device copies on the stream. */
static v4f_status ring_rows(v4f_gpu *g, const float *src, int64_t Rs, float *dst, int64_t Rd, int64_t q0, int64_t q1,
                            int64_t W, v4f_err *err) {
    for (int64_t q = q0 < 0 ? 0 : q0; q < q1;) {
        int64_t is = q % Rs, id = q % Rd, k = q1 - q;
        if (k > Rs - is) k = Rs - is;
        if (k > Rd - id) k = Rd - id;
        TRY(v4f_cuda_copy(g->c, dst + id * W, src + is * W, (size_t)(k * W) * sizeof(float), err));
        q += k;
    }
    return V4F_OK;
}

/* The live rows of every layer's position rings at pos (what kv_xfer moves:
 * the raw window and the compressor and indexer frontiers) from placement
 * a's rings to placement b's. */
static v4f_status rings_move(v4f_gpu *g, int a, int b, uint32_t pos, v4f_err *err) {
    const v4f_config *c = &g->cfg;
    const int64_t hd = c->head_dim, ihd = c->idx_head_dim;
    for (uint32_t l = 0; l < c->n_layer; l++) {
        const struct lplace *s = &g->L[l].pl[a];
        const struct lplace *d = &g->L[l].pl[b];
        const uint32_t ratio = g->L[l].ratio, n_raw = pos < c->n_swa ? pos : c->n_swa;
        TRY(ring_rows(g, s->raw, s->Rraw, d->raw, d->Rraw, (int64_t)pos - n_raw, pos, hd, err));
        if (!ratio) continue;
        const int64_t f0 = frontier_pos(ratio, pos, 0), W = (ratio == 4 ? 2 : 1) * hd;
        TRY(ring_rows(g, s->c_kv, s->Rc, d->c_kv, d->Rc, f0, pos, W, err));
        TRY(ring_rows(g, s->c_sc, s->Rc, d->c_sc, d->Rc, f0, pos, W, err));
        if (ratio != 4) continue;
        TRY(ring_rows(g, s->i_kv, s->Rc_i, d->i_kv, d->Rc_i, f0, pos, 2 * ihd, err));
        TRY(ring_rows(g, s->i_sc, s->Rc_i, d->i_sc, d->Rc_i, f0, pos, 2 * ihd, err));
    }
    return V4F_OK;
}

/* Switch to placement k with the session at pos (queued on the stream:
 * the rings' live rows, then, back to 0, its extra experts from host
 * memory). The decode graph exists in placement 0 only. */
static v4f_status set_place(v4f_gpu *g, int k, uint32_t pos, v4f_err *err) {
    if (!g->flex || k == g->place) return V4F_OK;
    TRY(rings_move(g, g->place, k, pos, err));
    g->keep_from = pos;
    if (k == 0) TRY(upload_extra(g, err));
    apply_place(g, k);
    return scratch_init(g, err);
}

v4f_status v4f_gpu_kv_download(v4f_gpu *g, struct v4f_kv *kv, uint32_t pos, v4f_err *err) {
    return kv_xfer(g, 0, kv, pos, err);
}

v4f_status v4f_gpu_kv_upload(v4f_gpu *g, const struct v4f_kv *kv, uint32_t pos, v4f_err *err) {
    TRY(kv_xfer(g, 1, (v4f_kv *)kv, pos, err));
    g->keep_from = pos;
    return V4F_OK;
}

/* Positions [0, end) were written: the state at p stays in the rings
 * while p >= end - N (raw ring n_swa + N rows, frontier rings >= N + 8) */
static void wrote(v4f_gpu *g, uint64_t end) {
    if (end > g->N && end - g->N > g->keep_from) g->keep_from = (uint32_t)(end - g->N);
}

bool v4f_gpu_can_rewind(const v4f_gpu *g, uint32_t pos, uint32_t *from) {
    *from = g->keep_from;
    return pos >= g->keep_from;
}

void v4f_gpu_reset(v4f_gpu *g) { g->keep_from = 0; }
v4f_status v4f_gpu_fill_synthetic(v4f_gpu *g, uint64_t seed, v4f_err *err) {
    g->keep_from = 0;
    TRY(v4f_cuda_fill_random(g->c, (float *)g->kv_arena, (int64_t)(g->kv_bytes / sizeof(float)), seed, err));
    return v4f_cuda_sync(g->c, err);
}
uint32_t v4f_gpu_chunk(const v4f_gpu *g) { return g->flex ? g->pl[1].N : g->pl[0].N; }
uint32_t v4f_gpu_rewind_reach(const v4f_gpu *g) { return g->pl[0].N; }
const char *v4f_gpu_report(const v4f_gpu *g) { return g->report; }
const char *v4f_gpu_device_name(const v4f_gpu *g) { return v4f_cuda_device_name(g->c); }
uint32_t v4f_gpu_experts_on_device(const v4f_gpu *g) { return g->e_dev; }
void v4f_gpu_budget_parts(const v4f_gpu *g, uint64_t *fixed, uint64_t *per_expert) {
    *fixed = g->w_bytes + g->kv_bytes + g->s_bytes;
    *per_expert = g->per_expert;
}
void v4f_gpu_placement(const v4f_gpu *g, uint32_t *experts_dev, uint32_t *experts_host, uint64_t *dev_bytes,
                       uint64_t *host_bytes) {
    *experts_dev = g->e_dev;
    *experts_host = g->e_host;
    *dev_bytes = g->w_bytes + g->e_bytes;
    *host_bytes = g->host_expert_bytes;
}
bool v4f_gpu_mtp_host(const v4f_gpu *g) { return g->mtp_host; }

/* ---- matmul dispatch ----------------------------------------------------------------------------------- */

/* whether w times the x of a chunk of n > 1 tokens takes the several-column matvec */
static bool cols_fit(v4f_gpu *g, const gmat *w, int64_t n) {
    return (uint64_t)n <= g->cols_max && v4f_cuda_matvec_cols_ok(w) && n <= v4f_cuda_matvec_cols_rows(g->c, w->n_in);
}

/* Y[t] = W X[t] for t < n (rows of ldx / ldy floats): matvec for one token,
 * several-column matvecs for a few, else the batched matmul (float32 in
 * --precision ref, tensor cores otherwise). A few tokens whose matrix the
 * several-column kernel does not take (a small model's shapes: n_in not a
 * whole superblock) go column by column through the one-token matvec, so
 * that a short eval (a speculative verify step) computes what one-token
 * steps do, bit for bit (test_cuda_model's short-eval checks). */
static v4f_status mm(v4f_gpu *g, const gmat *w, const float *X, int64_t ldx, int64_t n, float *Y, int64_t ldy,
                     v4f_err *err) {
    if (n == 1) return v4f_cuda_matvec(g->c, w, X, Y, err);
    if (cols_fit(g, w, n))
        return v4f_cuda_matvec_cols(g->c, 1, w, &X, ldx, (int)n, &Y, &ldy, err);
    if ((uint64_t)n <= g->cols_max) {
        for (int64_t t = 0; t < n; t++) TRY(v4f_cuda_matvec(g->c, w, X + t * ldx, Y + t * ldy, err));
        return V4F_OK;
    }
    return v4f_cuda_matmul(g->c, w, X, ldx, n, Y, ldy, g->exact, err);
}

/* The HC mixers read the raw residual state (not normalized, and feeding
 * Sinkhorn): always float32. Their 24 or 4 outputs make this cheap. */
static v4f_status mm_exact(v4f_gpu *g, const gmat *w, const float *X, int64_t ldx, int64_t n, float *Y, int64_t ldy,
                           v4f_err *err) {
    if (n == 1) return v4f_cuda_matvec(g->c, w, X, Y, err);
    return v4f_cuda_matmul(g->c, w, X, ldx, n, Y, ldy, true, err);
}

/* Several matrices of one input: batched in one launch when decoding and
 * they share type and n_in. */
typedef struct mmjob {
    const gmat *w;
    const float *X;
    int64_t ldx;
    float *Y;
    int64_t ldy;
} mmjob;

static v4f_status mm_multi(v4f_gpu *g, const mmjob *j, int nj, int64_t n, v4f_err *err) {
    /* jobs of one type and n_in go out in one launch: one token, a batch of
     * matvecs; a few tokens, several-column matvecs of one x stride and at
     * most the plane rows the scratch holds (one plane split: q_a and kv of
     * a verify step were two launches and two splits), the others one by one */
    const bool cols = n > 1;
    bool done[MV_BATCH] = {0};
    for (int i = 0; i < nj; i++) {
        if (done[i]) continue;
        if (cols && !cols_fit(g, j[i].w, n)) {
            TRY(mm(g, j[i].w, j[i].X, j[i].ldx, n, j[i].Y, j[i].ldy, err));
            continue;
        }
        gmat ws[MV_BATCH];
        const float *xs[MV_BATCH], *ux[MV_BATCH];
        float *ys[MV_BATCH];
        int64_t ldys[MV_BATCH];
        int nb = 0, nu = 0;
        for (int k = i; k < nj; k++) {
            if (done[k] || j[k].w->type != j[i].w->type || j[k].w->n_in != j[i].w->n_in) continue;
            if (cols) { /* same x stride; a new x must fit the plane rows */
                if (j[k].ldx != j[i].ldx || !cols_fit(g, j[k].w, n)) continue;
                int u = 0;
                while (u < nu && ux[u] != j[k].X) u++;
                if (u == nu && (int64_t)(nu + 1) * n > v4f_cuda_matvec_cols_rows(g->c, j[i].w->n_in)) continue;
                if (u == nu) ux[nu++] = j[k].X;
            }
            ws[nb] = *j[k].w;
            xs[nb] = j[k].X;
            ys[nb] = j[k].Y;
            ldys[nb] = j[k].ldy;
            nb++;
            done[k] = true;
        }
        TRY(cols ? v4f_cuda_matvec_cols(g->c, nb, ws, xs, j[i].ldx, (int)n, ys, ldys, err)
                 : v4f_cuda_matvec_batch(g->c, nb, ws, xs, ys, err));
    }
    return V4F_OK;
}

/* ---- the layer --------------------------------------------------------------------------------------------- */

/* split-K slices of the HC mixer: enough CTAs to fill the GPU for one
 * token; for a chunk (the tiled kernel, 32 tokens a CTA) 16, which keeps
 * each split's float sum to 1,024 terms (K / splits must stay whole) */
static int hc_splits(int64_t K, int64_t n, int n_hc) {
    int s = n >= 64 ? 16 : 128;
    while (s > 1 && (K % s || s * (2 + n_hc) * n_hc > 128 * 24)) s /= 2; /* kernel's shared capacity */
    return s;
}

/* One HC_pre: its mixer, scale, base and the norm weight of its block. */
typedef struct hcmix {
    const gmat *fn;
    const float *scale, *base, *norm;
} hcmix;

/* HC_pre's Sinkhorn half (post, comb) on the second stream. */
static v4f_status hc_sinkhorn(v4f_gpu *g, int64_t n, const hcmix *hm, v4f_err *err) {
    const v4f_config *c = &g->cfg;
    gscratch *x = &g->s;
    int ns = hc_splits((int64_t)c->n_hc * c->n_embd, n, (int)c->n_hc);
    TRY(v4f_cuda_fork(g->c, err));
    v4f_status st = v4f_cuda_hc_pre_fused(g->c, x->X, x->mixp, x->mixss, ns, hm->scale, hm->base, n, (int)c->n_hc,
                                          c->n_embd, (int)c->hc_iters, c->hc_eps, c->rms_eps, hm->norm, x->pre,
                                          x->post, x->comb, x->a, x->xn, HCP_SINKHORN, err);
    v4f_status se = v4f_cuda_fork_end(g->c, st ? NULL : err);
    return st ? st : se;
}

/* HC_pre. With a second stream its Sinkhorn half (post, comb: needed only
 * at HC_post, after a join) runs there, now or, defer, when the caller
 * calls hc_sinkhorn (after other work of that stream that is needed
 * sooner); the main stream computes xn. */
static v4f_status hc_pre(v4f_gpu *g, int64_t n, const hcmix *hm, bool defer, v4f_err *err) {
    const v4f_config *c = &g->cfg;
    gscratch *x = &g->s;
    const gmat *fn = hm->fn;
    int64_t HD = (int64_t)c->n_hc * c->n_embd, mixn = v4f_config_hc_mix(c), d = c->n_embd;
    int ns = hc_splits(HD, n, (int)c->n_hc);
    bool have_mix = x->mix_of == fn, have_gram = have_mix && x->gram_ok; /* from the post_mix before */
    x->mix_of = NULL;
    x->gram_ok = false;
    if (!have_mix)
        TRY(v4f_cuda_hc_mix_partial(g->c, fn->data, fn->type, fn->row_bytes, (int)mixn, HD, x->X, n, ns, x->mixp,
                                    x->mixss, err));
    int sel = HCP_ALL;
    if (g->fork) {
        if (!defer) TRY(hc_sinkhorn(g, n, hm, err));
        if (have_gram)
            return v4f_cuda_hc_norm(g->c, x->X, x->mixp, x->mixss, x->gram, ns, (int)mixn, n, (int)c->n_hc, d,
                                    hm->scale, hm->base, c->hc_eps, c->rms_eps, hm->norm, x->xn, err);
        sel = HCP_NORM;
    }
    return v4f_cuda_hc_pre_fused(g->c, x->X, x->mixp, x->mixss, ns, hm->scale, hm->base, n, (int)c->n_hc, d,
                                 (int)c->hc_iters, c->hc_eps, c->rms_eps, hm->norm, x->pre, x->post, x->comb, x->a,
                                 x->xn, sel, err);
}

/* A mixer post_mix can fold into the HC_post before it: decode-sized
 * chunks (hc_splits' split count for few tokens), F32/F16/BF16 rows, as
 * many outputs as the HC_pre mixers have. */
static bool mix_fusable(const v4f_gpu *g, int64_t n, const hcmix *next) {
    const gmat *f = next ? next->fn : NULL;
    return f && n < 64 && (f->type == V4F_TYPE_F32 || f->type == V4F_TYPE_F16 || f->type == V4F_TYPE_BF16) &&
           f->n_out == v4f_config_hc_mix(&g->cfg);
}

/* HC_post of the branch output: o (attention), or with o NULL the MoE sum
 * (routed rows yd gathered through einv: the bucketing's inverse, or the
 * identity map when yd holds the pairs in slot order; shared ysh). With
 * next, the following HC_pre's mixer partials are computed in the same
 * launch (x->mix_of). */
static v4f_status hc_post(v4f_gpu *g, int64_t n, const float *o, const int32_t *einv, const hcmix *next,
                          v4f_err *err) {
    const v4f_config *c = &g->cfg;
    gscratch *x = &g->s;
    int H = (int)c->n_hc, k = (int)c->n_expert_used;
    int64_t d = c->n_embd;
    if (mix_fusable(g, n, next)) {
        const gmat *f = next->fn;
        int ns = hc_splits((int64_t)H * d, n, H);
        int64_t len = (int64_t)H * d / ns;
        bool gram = g->fork && H <= 4 && d % 4 == 0 && d % len == 0; /* for v4f_cuda_hc_norm */
        /* a single token's pairs are in slot order: the identity map (NULL) */
        TRY(v4f_cuda_post_mix(g->c, o, o ? NULL : x->yd, o || n == 1 ? NULL : einv, o ? 0 : k, o ? NULL : x->ysh, x->X,
                              x->post, x->comb, n, H, d, x->X2, f->data, f->type, f->row_bytes, (int)f->n_out, ns,
                              x->mixp, x->mixss, gram ? x->gram : NULL, err));
        x->mix_of = f;
        x->gram_ok = gram;
    } else if (o) {
        TRY(v4f_cuda_hc_post(g->c, o, x->X, x->post, x->comb, n, H, d, x->X2, err));
    } else {
        TRY(v4f_cuda_moe_sum_post(g->c, x->yd, einv, x->ysh, n, k, d, x->X, x->post, x->comb, H, x->X2, err));
    }
    float *t = x->X;
    x->X = x->X2;
    x->X2 = t;
    return V4F_OK;
}

/* One compressor over the chunk: store inputs, pool completed windows,
 * norm + RoPE + rounding, commit rows. */
static v4f_status compressor(v4f_gpu *g, const glayer *r, bool indexer, const float *A, const float *B, int64_t n,
                             const v4f_debug_flags *dbg, v4f_err *err) {
    const v4f_config *c = &g->cfg;
    gscratch *x = &g->s;
    int64_t D = indexer ? c->idx_head_dim : c->head_dim;
    int32_t ratio = (int32_t)r->ratio;
    bool overlap = ratio == 4;
    int64_t W = (overlap ? 2 : 1) * D;
    float *kvr = indexer ? r->i_kv : r->c_kv, *scr = indexer ? r->i_sc : r->c_sc;
    int64_t R = indexer ? r->Rc_i : r->Rc;
    const float *ape = indexer ? r->idx_comp_ape : r->comp_ape;
    const float *normw = indexer ? r->idx_comp_norm : r->comp_norm;
    int64_t ng = n / ratio + 2;
    TRY(v4f_cuda_comp_store(g->c, A, B, ape, n, W, ratio, x->pos, kvr, scr, R, err));
    int mode = indexer ? 1 : dbg->no_kv_fp8 ? 2 : 0;
    return v4f_cuda_comp_emit(g->c, kvr, scr, R, W, D, ratio, overlap, x->pos0, n, ng, normw, r->freqs, (int)c->n_rot,
                              mode, c->rms_eps, indexer ? r->idx : r->comp, err);
}

/* One layer's attention over the chunk's n rows. The KV side (projections,
 * raw ring, compressors, indexer keys) covers every row; the query side
 * (q_b, indexer queries and scores, attention, output projection, HC_post)
 * rows [q0, n) only, moved to rows [0, n - q0) of the scratch (X, post and
 * comb rows are moved before HC_post). q0 = n: no query side at all. */
static v4f_status attention(v4f_gpu *g, const glayer *r, int64_t n, int64_t q0, const v4f_debug_flags *dbg,
                            v4f_err *err) {
    const v4f_config *c = &g->cfg;
    gscratch *x = &g->s;
    int64_t d = c->n_embd, hd = c->head_dim, nh = c->n_head, nq = nh * hd;
    int64_t W = (r->ratio == 4 ? 2 : 1) * hd, iW = 2 * (int64_t)c->idx_head_dim;
    int64_t nih = c->n_idx_head, ihd = c->idx_head_dim;
    hcmix ha = {&r->hc_attn_fn, r->hc_attn_scale, r->hc_attn_base, r->attn_norm};
    /* the compressor/indexer branch below is the longer one: Sinkhorn waits
     * behind it on the second stream (joined only before HC_post) */
    bool fk = g->fork && r->ratio;
    TRY(hc_pre(g, n, &ha, fk, err));
    pmark(g, GP_HC);
    /* The compressors and the indexer queries feed only the compressed
     * keys and the indexer: with a second stream they run beside the q/KV
     * path (their projections too), joined before the indexer scores. */
    mmjob jc[5];
    int nc = 0;
    if (r->ratio) {
        jc[nc++] = (mmjob){&r->comp_kv, x->xn, d, x->ckv, W};
        jc[nc++] = (mmjob){&r->comp_gate, x->xn, d, x->cgate, W};
    }
    if (r->ratio == 4) {
        jc[nc++] = (mmjob){&r->idx_comp_kv, x->xn, d, x->ikv, iW};
        jc[nc++] = (mmjob){&r->idx_comp_gate, x->xn, d, x->igate, iW};
        jc[nc++] = (mmjob){&r->idx_proj, x->xn, d, x->iw, nih};
    }
    if (fk) {
        TRY(v4f_cuda_fork(g->c, err));
        v4f_status st = mm_multi(g, jc, nc, n, err);
        if (st == V4F_OK) st = compressor(g, r, false, x->ckv, x->cgate, n, dbg, err);
        if (st == V4F_OK && r->ratio == 4) st = compressor(g, r, true, x->ikv, x->igate, n, dbg, err);
        v4f_status se = v4f_cuda_fork_end(g->c, st ? NULL : err);
        if (st) return st;
        if (se) return se;
    }
    mmjob jx[7] = {{&r->q_a, x->xn, d, x->qr, c->q_lora_rank}, {&r->kv, x->xn, d, x->kv, hd}};
    int nj = 2;
    for (int i = 0; !fk && i < nc; i++) jx[nj++] = jc[i];
    TRY(mm_multi(g, jx, nj, n, err));
    /* q latent norm; KV norm + RoPE + FP8, into the raw ring */
    TRY(v4f_cuda_qkv_tail(g->c, x->qr, c->q_lora_rank, r->q_a_norm, x->kv, hd, r->kv_a_norm, n, x->pos, r->freqs,
                          (int)c->n_rot, !dbg->no_kv_fp8, c->rms_eps, r->raw, r->Rraw, err));
    float isc = (float)(1.0 / sqrt((double)ihd)) * (float)(1.0 / sqrt((double)nih));
    /* the query side: rows [q0, n) of the per-row inputs, nqr of them */
    const int64_t nqr = n - q0;
    const float *qr = x->qr + q0 * c->q_lora_rank;
    float *iw = x->iw + q0 * nih; /* idx_q scales it in place */
    const int32_t *qpos = x->pos + q0;
    bool fq = fk && r->ratio == 4 && nqr > 0;
    if (fq) {
        TRY(v4f_cuda_fork(g->c, err));
        v4f_status st = mm(g, &r->idx_q_b, qr, c->q_lora_rank, nqr, x->iq, nih * ihd, err);
        if (st == V4F_OK)
            st = v4f_cuda_idx_q(g->c, x->iq, iw, nqr, nih, ihd, qpos, r->freqs, (int)c->n_rot, isc, err);
        v4f_status se = v4f_cuda_fork_end(g->c, st ? NULL : err);
        if (st) return st;
        if (se) return se;
    }
    mmjob jq[2] = {{&r->q_b, qr, c->q_lora_rank, x->q, nq}, {&r->idx_q_b, qr, c->q_lora_rank, x->iq, nih * ihd}};
    if (nqr > 0) TRY(mm_multi(g, jq, r->ratio == 4 && !fq ? 2 : 1, nqr, err));
    /* per-head q norm + RoPE (default precision: inside the attention call,
     * except in a ratio-4 layer's decode-sized step with the indexer beside
     * it: there now, beside the indexer queries, rather than on the chain
     * after the top-k; the attention's float32 path, which those steps
     * take, would launch the same kernel right before it) */
    const bool q_now = g->exact || (fq && nqr < V4F_CUDA_ATTN_TC_MIN_Q);
    if (q_now && nqr > 0)
        TRY(v4f_cuda_q_heads(g->c, x->q, nqr, nh, hd, qpos, r->freqs, (int)c->n_rot, c->rms_eps, err));
    pmark(g, GP_PROJ);
    /* compressors (unless forked above), indexer */
    if (r->ratio && !fk) TRY(compressor(g, r, false, x->ckv, x->cgate, n, dbg, err));
    const int32_t *nvis = r->ratio ? x->nvis + (int64_t)r->ratio_slot * n + q0 : NULL;
    if (r->ratio == 4 && !fk) TRY(compressor(g, r, true, x->ikv, x->igate, n, dbg, err));
    if (r->ratio == 4 && !fq && nqr > 0)
        TRY(v4f_cuda_idx_q(g->c, x->iq, iw, nqr, nih, ihd, qpos, r->freqs, (int)c->n_rot, isc, err));
    if (fk) {
        TRY(v4f_cuda_join(g->c, err));
        if (nqr > 0) TRY(hc_sinkhorn(g, n, &ha, err)); /* deferred by hc_pre */
    }
    pmark(g, GP_COMP);
    if (nqr == 0) /* the KV rows are written; no row's output is wanted (join HC_pre's Sinkhorn branch) */
        return g->fork ? v4f_cuda_join(g->c, err) : V4F_OK;
    if (r->ratio == 4) {
        int64_t cap4 = r->cap_i;
        if (g->exact)
            TRY(v4f_cuda_indexer_scores(g->c, x->iq, iw, nqr, nih, ihd, r->idx, cap4, nvis, x->iscore, err));
        else /* tensor cores for prefill chunks */
            TRY(v4f_cuda_indexer_scores_mixed(g->c, x->iq, iw, nqr, nih, ihd, r->idx, cap4, nvis, x->iscore, err));
        TRY(v4f_cuda_topk(g->c, x->iscore, nqr, cap4, nvis, 0, c->idx_topk, x->isel, x->icnt, err));
        pmark(g, GP_INDEX);
    }
    /* attention over the ring (the chunk's rows were stored by qkv_tail) */
    v4f_cuda_attn_keys keys;
    memset(&keys, 0, sizeof keys);
    keys.raw = r->raw;
    keys.raw_cap = r->Rraw;
    keys.raw_first = x->rf + q0;
    keys.raw_count = x->rc + q0;
    keys.key_max = (int64_t)c->n_swa; /* a query's window */
    if (r->ratio == 4) {
        keys.comp = r->comp;
        keys.comp_count = x->icnt;
        keys.comp_idx = x->isel;
        keys.comp_idx_stride = c->idx_topk;
        keys.key_max += c->idx_topk;
    } else if (r->ratio) {
        keys.comp = r->comp;
        keys.comp_count = nvis;
        keys.key_max += r->cap;
    }
    const float *sinks = dbg->no_sink ? x->no_sink : r->sinks;
    /* attention, then the inverse RoPE of the output heads (fused when decoding) */
    v4f_cuda_out_rope oro = {r->freqs, qpos, (int)c->n_rot};
    const float asc = (float)(1.0 / sqrt((double)hd));
    const v4f_cuda_q_prep qp = {r->freqs, qpos, (int)c->n_rot, c->rms_eps};
    int64_t og = c->o_groups, gin = nq / og, orank = c->o_lora_rank;
    gmat sub = r->out_a;
    sub.n_out = orank;
    /* several columns (a verify step): out_a's group slices in one launch */
    const bool ocols = nqr > 1 && (uint64_t)nqr <= g->cols_max && og <= MV_BATCH && v4f_cuda_matvec_cols_ok(&sub) &&
                       og * nqr <= v4f_cuda_matvec_cols_rows(g->c, sub.n_in);
    /* one token or two: the attention also writes out_a's planes (a launch
     * fewer), rows [token][group] */
    const bool opl = (nqr == 1 || (ocols && nqr <= GPU_PLANE_TOKENS)) && og <= MV_BATCH && v4f_cuda_takes_planes(&sub);
    const v4f_cuda_out_planes opq = {x->oq, gin};
    if (g->exact)
        TRY(v4f_cuda_attn_sink_rope(g->c, x->q, nqr, nh, hd, &keys, sinks, asc, &oro, x->o, opl ? &opq : NULL, err));
    else /* tensor cores for prefill chunks */
        TRY(v4f_cuda_attn_sink_rope_mixed(g->c, x->q, nqr, nh, hd, q_now ? NULL : &qp, &keys, sinks, asc, &oro, x->o,
                                          opl ? &opq : NULL, err));
    pmark(g, GP_ATTN);
    /* grouped low-rank output projection */
    /* group gi: rows [gi orank, +orank) of out_a times x->o's slice gi */
    gmat ws[GPU_MAX_GROUPS];
    const float *xs[GPU_MAX_GROUPS];
    float *ys[GPU_MAX_GROUPS];
    int64_t ldys[GPU_MAX_GROUPS];
    for (int64_t gi = 0; gi < og; gi++) {
        ws[gi] = sub;
        ws[gi].data = (const uint8_t *)r->out_a.data + (uint64_t)(gi * orank) * r->out_a.row_bytes;
        xs[gi] = x->o + gi * gin;
        ys[gi] = x->low + gi * orank;
        ldys[gi] = og * orank;
    }
    const size_t oqb = v4f_cuda_quant_row_bytes(gin);
    if (ocols && opl) {
        const uint8_t *xq[GPU_MAX_GROUPS];
        for (int64_t gi = 0; gi < og; gi++) xq[gi] = x->oq + gi * oqb;
        TRY(v4f_cuda_matvec_cols_planes(g->c, (int)og, ws, xq, (int64_t)(og * oqb), (int)nqr, ys, ldys, err));
    } else if (ocols) {
        TRY(v4f_cuda_matvec_cols(g->c, (int)og, ws, xs, nq, (int)nqr, ys, ldys, err));
    } else if (nqr == 1 || (uint64_t)nqr <= g->cols_max) { /* one token, or a few column by column (as mm) */
        for (int64_t t = 0; t < nqr; t++) {
            const float *xt[GPU_MAX_GROUPS];
            float *yt[GPU_MAX_GROUPS];
            for (int64_t gi = 0; gi < og; gi++) xt[gi] = xs[gi] + t * nq, yt[gi] = ys[gi] + t * og * orank;
            if (opl) { /* (og <= MV_BATCH) */
                const uint8_t *xq[GPU_MAX_GROUPS];
                for (int64_t gi = 0; gi < og; gi++) xq[gi] = x->oq + gi * oqb;
                TRY(v4f_cuda_matvec_batch_planes(g->c, (int)og, ws, xt, xq, yt, err));
                continue;
            }
            for (int64_t g0 = 0; g0 < og; g0 += MV_BATCH) {
                int nb = (int)(og - g0 < MV_BATCH ? og - g0 : MV_BATCH);
                TRY(v4f_cuda_matvec_batch(g->c, nb, ws + g0, xt + g0, yt + g0, err));
            }
        }
    } else {
        /* the o_groups row slices in one launch (block-diagonal) */
        TRY(v4f_cuda_matmul_blockdiag(g->c, &sub, (int)og, x->o, nq, nqr, x->low, og * orank, g->exact, err));
    }
    /* out_b's plane split lets out_b launch before the split's own wait, so
     * out_b requests its weights during out_a's tail (out_a is itself a
     * bandwidth-bound grid, not a latency-bound chain kernel that a second
     * stream of requests would slow): 152.4 -> 153.0 ss t/s on an H200
     * (docs/PERF_NOTES.md, "Session 32") */
    v4f_cuda_set_split_trigger_first(g->c, true);
    const v4f_status st_outb = mm(g, &r->out_b, x->low, og * orank, nqr, x->out, d, err);
    v4f_cuda_set_split_trigger_first(g->c, false);
    TRY(st_outb);
    pmark(g, GP_OUT);
    if (g->fork) TRY(v4f_cuda_join(g->c, err)); /* Sinkhorn of hc_pre */
    if (q0 > 0) { /* the query rows' residual and HC_post weights to rows [0, nqr) */
        const int64_t H = c->n_hc, HD = H * d;
        TRY(v4f_cuda_copy(g->c, x->X, x->X + q0 * HD, (size_t)(nqr * HD) * sizeof(float), err));
        TRY(v4f_cuda_copy(g->c, x->post, x->post + q0 * H, (size_t)(nqr * H) * sizeof(float), err));
        TRY(v4f_cuda_copy(g->c, x->comb, x->comb + q0 * H * H, (size_t)(nqr * H * H) * sizeof(float), err));
    }
    hcmix hf = {&r->hc_ffn_fn, r->hc_ffn_scale, r->hc_ffn_base, r->ffn_norm};
    TRY(hc_post(g, nqr, x->out, NULL, &hf, err));
    pmark(g, GP_HC);
    return V4F_OK;
}

/* Layer l's host-resident experts into its staging slot: synchronous copies
 * on the stream (stage_copy), or on the copy stream after the work queued so
 * far (stage_issue; ffn waits for them). */
static void stage_jobs(v4f_gpu *g, uint32_t l, void *dst[3], const void *src[3], size_t bytes[3]) {
    uint64_t off = 0;
    for (int i = 0; i < 3; i++) {
        dst[i] = stage_slot(&g->pl[g->place], l) + off;
        src[i] = g->L[l].hsrc[i];
        bytes[i] = g->L[l].hbytes[i];
        off += (g->L[l].hbytes[i] + 255) & ~255ull;
    }
}

static v4f_status stage_copy(v4f_gpu *g, uint32_t l, v4f_err *err) {
    void *dst[3];
    const void *src[3];
    size_t bytes[3];
    stage_jobs(g, l, dst, src, bytes);
    for (int i = 0; i < 3; i++)
        if (bytes[i]) TRY(v4f_cuda_copy_any(g->c, dst[i], src[i], bytes[i], err));
    return V4F_OK;
}

static v4f_status stage_issue(v4f_gpu *g, uint32_t l, v4f_err *err) {
    void *dst[3];
    const void *src[3];
    size_t bytes[3];
    stage_jobs(g, l, dst, src, bytes);
    return v4f_cuda_prefetch(g->c, (int)(l & 1), dst, src, bytes, 3, err);
}

/* Decode graph: the host-resident experts the router picks are copied into
 * layer l's staging slot by the copy engines (conditional graph nodes, one
 * per host-resident expert), where the staging table (ptab) points.
 * docs/PERF_NOTES.md, session 14: H100 decode 70.9 -> 82.1 t/s. */
/* host-resident expert j (id e_dev + j) of layer l: its three matrices'
 * copies into the staging slot, which holds each tensor's host experts in id
 * order */
static void stage_expert_jobs(v4f_gpu *g, uint32_t l, uint32_t j, void *dst[3], const void *src[3],
                              size_t bytes[3]) {
    stage_jobs(g, l, dst, src, bytes);
    for (int i = 0; i < 3; i++) {
        bytes[i] /= g->e_host;
        dst[i] = (uint8_t *)dst[i] + j * bytes[i];
        src[i] = (const uint8_t *)src[i] + j * bytes[i];
    }
}

static v4f_status stage_picked(v4f_gpu *g, uint32_t l, v4f_err *err) {
    const uint32_t nh = g->e_host;
    int32_t want[V4F_CUDA_COND_MAX];
    void *dst[V4F_CUDA_COND_MAX][3];
    const void *src[V4F_CUDA_COND_MAX][3];
    size_t bytes[V4F_CUDA_COND_MAX][3];
    for (uint32_t j = 0; j < nh; j++) {
        want[j] = (int32_t)(g->e_dev + j);
        stage_expert_jobs(g, l, j, dst[j], src[j], bytes[j]);
    }
    return v4f_cuda_cond_copies(g->c, g->s.eids, (int)g->cfg.n_expert_used, (int)nh, want,
                                (void *const (*)[3])dst, (const void *const (*)[3])src,
                                (const size_t (*)[3])bytes, err);
}

/* Whether a chunk of n tokens copies only the host experts it routes to
 * (stage_used): a pair-by-pair or expert-by-expert chunk on a card with
 * host-resident experts, where the cost model of GPU_BUS_BPS says so. */
static bool stage_used_now(const v4f_gpu *g, int64_t n) {
    if (n < 2 || (uint64_t)n > (g->pair_max > g->mx_max ? g->pair_max : g->mx_max) || !g->e_host || !g->h_used)
        return false;
    const v4f_config *c = &g->cfg;
    const glayer *r = &g->L[0];
    const double h = g->e_host, per = (double)(r->hbytes[0] + r->hbytes[1] + r->hbytes[2]) / h;
    const double tx = per / GPU_BUS_BPS, work = (double)n * GPU_PAIR_TOKEN_S;
    const double u = h * (1.0 - pow(1.0 - (double)c->n_expert_used / (double)c->n_expert, (double)n));
    return u * tx + work < fmax(h * tx, work);
}

/* A pair-by-pair chunk (a few tokens) copies into layer l's staging slot
 * only the host-resident experts its pairs route to, in line after the
 * router and the bucketing (whose offsets the host reads back), instead of
 * all of them one layer ahead: on the H100 (9 per layer in host memory)
 * those copies put a floor of ~51 ms under every eval of 2-24 tokens
 * (docs/PERF_NOTES.md, session 16). */
static v4f_status stage_used(v4f_gpu *g, uint32_t l, v4f_err *err) {
    const uint32_t nh = g->e_host;
    TRY(v4f_cuda_download(g->c, g->h_used, g->s.offs + g->e_dev, ((size_t)nh + 1) * sizeof(int32_t), err));
    for (uint32_t j = 0; j < nh; j++) {
        if (g->h_used[j + 1] == g->h_used[j]) continue;
        void *dst[3];
        const void *src[3];
        size_t bytes[3];
        stage_expert_jobs(g, l, j, dst, src, bytes);
        for (int i = 0; i < 3; i++)
            if (bytes[i]) TRY(v4f_cuda_copy_any(g->c, dst[i], src[i], bytes[i], err));
    }
    return V4F_OK;
}

/* Whether a chunk of n tokens multiplies its routed experts expert by
 * expert (v4f_cuda_matvec_experts), their int8 planes in the grouped
 * path's gather buffer xg (idle then). */
static bool mvexp_now(const v4f_gpu *g, const glayer *r, int64_t n) {
    if ((uint64_t)n <= g->mx_min || (uint64_t)n > g->mx_max) return false;
    const v4f_config *c = &g->cfg;
    const uint64_t room = (uint64_t)g->N * c->n_expert_used * c->n_embd * sizeof(float);
    const uint64_t np = (uint64_t)n * c->n_expert_used;
    return v4f_cuda_mvexp_ok(&r->exp_gate) && v4f_cuda_mvexp_ok(&r->exp_up) && v4f_cuda_mvexp_ok(&r->exp_down) &&
           (uint64_t)n * v4f_cuda_quant_row_bytes(r->exp_gate.n_in) <= room &&
           np * v4f_cuda_quant_row_bytes(r->exp_down.n_in) <= room && np <= 65535;
}

/* The routed experts' gate and up (mat 0) or down (mat 1) of a chunk expert
 * by expert: x planes of the tokens (gate/up) or of the pairs (down), the
 * outputs by pair like the pair path's. */
static v4f_status mvexp_run(v4f_gpu *g, const glayer *r, int64_t n, const void *const *tabp, int mat, v4f_err *err) {
    const v4f_config *c = &g->cfg;
    gscratch *x = &g->s;
    const int64_t k = c->n_expert_used, E = c->n_expert, np = n * k;
    const int max_act = (int)(np < E ? np : E);
    uint8_t *xq = (uint8_t *)x->xg;
    if (mat == 1) {
        TRY(v4f_cuda_quant_rows(g->c, r->exp_down.type, x->g, np, r->exp_down.n_in, r->exp_down.n_in, xq, err));
        const int32_t off = (int32_t)(2 * E);
        float *y = x->yd;
        return v4f_cuda_matvec_experts(g->c, 1, &r->exp_down, tabp, &off, x->act, x->offs, x->elist, max_act, xq, 1,
                                       &y, c->n_embd, err);
    }
    TRY(v4f_cuda_quant_rows(g->c, r->exp_gate.type, x->xn, n, c->n_embd, c->n_embd, xq, err));
    const gmat *a = &r->exp_gate, *b = &r->exp_up;
    const bool same = a->type == b->type && a->n_in == b->n_in && a->n_out == b->n_out && a->row_bytes == b->row_bytes;
    int32_t off[2] = {0, (int32_t)E};
    float *y[2] = {x->g, x->u};
    if (same)
        return v4f_cuda_matvec_experts(g->c, 2, a, tabp, off, x->act, x->offs, x->elist, max_act, xq, (int32_t)k, y,
                                       a->n_out, err);
    TRY(v4f_cuda_matvec_experts(g->c, 1, a, tabp, off, x->act, x->offs, x->elist, max_act, xq, (int32_t)k, y,
                                a->n_out, err));
    if (b->type != a->type) /* the planes are in the weight order of the type */
        TRY(v4f_cuda_quant_rows(g->c, b->type, x->xn, n, c->n_embd, c->n_embd, xq, err));
    return v4f_cuda_matvec_experts(g->c, 1, b, tabp, off + 1, x->act, x->offs, x->elist, max_act, xq, (int32_t)k,
                                   y + 1, b->n_out, err);
}

/* next: the HC mixer that follows (the next layer's attention), or NULL */
static v4f_status ffn(v4f_gpu *g, const glayer *r, int64_t n, const hcmix *next, v4f_err *err) {
    const v4f_config *c = &g->cfg;
    gscratch *x = &g->s;
    int64_t d = c->n_embd, nff = c->n_ff_exp, k = c->n_expert_used, E = c->n_expert;
    int64_t nsh = r->gate_sh.n_out;
    hcmix hf = {&r->hc_ffn_fn, r->hc_ffn_scale, r->hc_ffn_base, r->ffn_norm};
    TRY(hc_pre(g, n, &hf, false, err));
    pmark(g, GP_HC);
    /* the shared expert depends only on xn: beside the routed path */
    if (g->fork) {
        TRY(v4f_cuda_fork(g->c, err));
        mmjob js[2] = {{&r->gate_sh, x->xn, d, x->sg, nsh}, {&r->up_sh, x->xn, d, x->su, nsh}};
        v4f_status st = mm_multi(g, js, 2, n, err);
        /* no clamp (the official MoE builds the shared expert without swiglu_limit);
         * one token or two: SwiGLU also splits its rows into the down matvec's planes */
        const bool two = n == 2 && cols_fit(g, &r->down_sh, n);
        if ((n == 1 || two) && v4f_cuda_takes_planes(&r->down_sh)) {
            const float *xs = x->sg;
            const uint8_t *xq = x->sgq;
            float *ys = x->ysh;
            const int64_t ldy = d;
            if (st == V4F_OK) st = v4f_cuda_swiglu_planes(g->c, x->sg, x->su, n, nsh, 0.0f, NULL, x->sg, x->sgq, err);
            if (st == V4F_OK && two)
                st = v4f_cuda_matvec_cols_planes(g->c, 1, &r->down_sh, &xq, (int64_t)v4f_cuda_quant_row_bytes(nsh), 2,
                                                 &ys, &ldy, err);
            else if (st == V4F_OK)
                st = v4f_cuda_matvec_batch_planes(g->c, 1, &r->down_sh, &xs, &xq, &ys, err);
        } else {
            if (st == V4F_OK) st = v4f_cuda_swiglu(g->c, x->sg, x->su, n, nsh, 0.0f, NULL, x->sg, err);
            if (st == V4F_OK) st = mm(g, &r->down_sh, x->sg, nsh, n, x->ysh, d, err);
        }
        v4f_status se = v4f_cuda_fork_end(g->c, st ? NULL : err);
        if (st) return st;
        if (se) return se;
    }
    /* a chunk of a few tokens: pair by pair, in pair order (slot p = token
     * p / k's choice p % k), like a decode step */
    const bool mvx = mvexp_now(g, r, n);
    const bool grouped = n > 1 && !mvx && (uint64_t)n > g->pair_max;
    /* one token (or a verify step's two): the router's launch also splits xn
     * into the routed gate/up's planes (extra CTAs beside the routing: no
     * split launch on the chain; H200, 8K: 152.6 -> 153.0 ss t/s,
     * docs/PERF_NOTES.md session 33) */
    const bool xpl = n <= GPU_PLANE_TOKENS && !grouped && !mvx && v4f_cuda_takes_planes(&r->exp_gate) &&
                     v4f_cuda_takes_planes(&r->exp_up);
    TRY(mm(g, &r->gate_inp, x->xn, d, n, x->rlog, E, err));
    TRY(v4f_cuda_router_planes(g->c, x->rlog, r->probs_b, n, E, (int)k, r->hash ? r->tid2eid : NULL, x->tok,
                               c->expert_weights_norm, c->expert_weights_scale, x->eids, x->ew, xpl ? x->xn : NULL, d,
                               xpl ? x->xnq : NULL, err));
    pmark(g, GP_ROUTE);
    int64_t np = n * k;
    const void *const *tabp = r->etab;
    /* (the MTP layer's experts are on the device or read over the bus) */
    const bool host_chunk = n > 1 && g->e_host && r < g->L + c->n_layer;
    const bool used = host_chunk && stage_used_now(g, n);
    /* bucket the (token, slot) pairs by expert: for the grouped matmuls, expert by expert, and
     * for copying only the routed host experts */
    if (grouped || mvx || used)
        TRY(v4f_cuda_moe_bucket(g->c, x->eids, x->ew, n, (int)k, (int)E, x->offs, x->elist, x->einv, x->wrow, x->act,
                                err));
    if (host_chunk) {
        /* this layer's host-resident experts on the device (copy engine, full
         * bus speed) so the grouped matmuls read device memory: copied
         * during the previous layer (stage_issue), else here */
        const uint32_t l = (uint32_t)(r - g->L);
        if (used) { /* only those routed to */
            TRY(stage_used(g, l, err));
        } else if (g->prefetch) {
            TRY(v4f_cuda_prefetch_wait(g->c, (int)(l & 1), err));
        } else {
            TRY(stage_copy(g, l, err));
        }
        tabp = r->ptab;
    } else if (g->e_host && g->decode_dma && g->capturing && r < g->L + c->n_layer) {
        /* decode graph: DMA of the picked host-resident experts (about
         * twice the bus speed that kernels reading host memory reach) */
        TRY(stage_picked(g, (uint32_t)(r - g->L), err));
        tabp = r->ptab;
    }
    if (grouped) {
        TRY(v4f_cuda_gather_rows(g->c, x->xn, x->elist, (int32_t)k, np, d, x->xg, err));
        TRY(v4f_cuda_matmul_grouped(g->c, &r->exp_gate, tabp, 0, x->offs, (int)E, np, x->xg, d, x->g, nff, g->exact,
                                    err));
        TRY(v4f_cuda_matmul_grouped(g->c, &r->exp_up, tabp, (int32_t)E, x->offs, (int)E, np, x->xg, d, x->u, nff,
                                    g->exact, err));
    } else if (mvx) {
        TRY(mvexp_run(g, r, n, tabp, 0, err));
    } else {
        /* decode (and short chunks): pair j reads expert eids[j], selected on the device */
        int32_t off[MV_BATCH], slot[MV_BATCH];
        const float *xs[MV_BATCH];
        const uint8_t *xq[MV_BATCH];
        float *ys[MV_BATCH];
        for (int64_t p0 = 0; p0 < np; p0 += MV_BATCH / 2) {
            int nb = (int)(np - p0 < MV_BATCH / 2 ? np - p0 : MV_BATCH / 2);
            bool same = r->exp_gate.type == r->exp_up.type && r->exp_gate.n_in == r->exp_up.n_in &&
                        r->exp_gate.n_out == r->exp_up.n_out && r->exp_gate.row_bytes == r->exp_up.row_bytes;
            for (int h = 0; h < 2; h++) {
                int m = 0;
                for (int i = 0; i < nb; i++)
                    for (int hh = same ? 0 : h; hh <= (same ? 1 : h); hh++) {
                        int64_t p = p0 + i;
                        off[m] = hh ? (int32_t)E : 0;
                        slot[m] = (int32_t)p;
                        xs[m] = x->xn + (p / k) * d;
                        xq[m] = x->xnq + (p / k) * v4f_cuda_quant_row_bytes(d); /* (read only when xpl) */
                        ys[m] = (hh ? x->u : x->g) + p * nff;
                        m++;
                    }
                if (xpl)
                    TRY(v4f_cuda_matvec_indirect_planes(g->c, m, h ? &r->exp_up : &r->exp_gate, tabp, x->eids, off,
                                                        slot, xs, xq, ys, err));
                else
                    TRY(v4f_cuda_matvec_indirect(g->c, m, h ? &r->exp_up : &r->exp_gate, tabp, x->eids, off, slot,
                                                 xs, ys, err));
                if (same) break;
            }
        }
    }
    if (!g->fork) {
        mmjob js[2] = {{&r->gate_sh, x->xn, d, x->sg, nsh}, {&r->up_sh, x->xn, d, x->su, nsh}};
        TRY(mm_multi(g, js, 2, n, err));
    }
    pmark(g, GP_EXP_GU);
    /* one token or two: SwiGLU also splits each pair's row into the down matvecs' planes */
    const bool gpl = n <= GPU_PLANE_TOKENS && !grouped && !mvx && v4f_cuda_takes_planes(&r->exp_down);
    if (gpl) TRY(v4f_cuda_swiglu_planes(g->c, x->g, x->u, np, nff, r->limit, x->ew, x->g, x->gq, err));
    else TRY(v4f_cuda_swiglu(g->c, x->g, x->u, np, nff, r->limit, grouped ? x->wrow : x->ew, x->g, err));
    /* shared expert: no clamp (the official MoE builds it without swiglu_limit) */
    if (!g->fork) TRY(v4f_cuda_swiglu(g->c, x->sg, x->su, n, nsh, 0.0f, NULL, x->sg, err));
    pmark(g, GP_SWIGLU);
    if (grouped) {
        TRY(v4f_cuda_matmul_grouped(g->c, &r->exp_down, tabp, (int32_t)(2 * E), x->offs, (int)E, np, x->g, nff, x->yd,
                                    d, g->exact, err));
    } else if (mvx) {
        TRY(mvexp_run(g, r, n, tabp, 1, err));
    } else {
        for (int64_t p0 = 0; p0 < np; p0 += MV_BATCH) {
            int nb = (int)(np - p0 < MV_BATCH ? np - p0 : MV_BATCH);
            int32_t off[MV_BATCH], slot[MV_BATCH];
            const float *xs[MV_BATCH];
            const uint8_t *xq[MV_BATCH];
            float *ys[MV_BATCH];
            const size_t qb = v4f_cuda_quant_row_bytes(nff);
            for (int i = 0; i < nb; i++) {
                int64_t p = p0 + i;
                off[i] = (int32_t)(2 * E);
                slot[i] = (int32_t)p;
                xs[i] = x->g + p * nff;
                xq[i] = x->gq + (size_t)p * qb;
                ys[i] = x->yd + p * d;
            }
            /* the ids were made by the router, two launches back (gate/up,
             * SwiGLU between): the down's first weights are requested
             * while the SwiGLU runs */
            if (gpl)
                TRY(v4f_cuda_matvec_indirect_planes_ready(g->c, nb, &r->exp_down, tabp, x->eids, off, slot, xs, xq,
                                                          ys, err));
            else
                TRY(v4f_cuda_matvec_indirect(g->c, nb, &r->exp_down, tabp, x->eids, off, slot, xs, ys, err));
        }
    }
    if (g->fork) TRY(v4f_cuda_join(g->c, err));
    else TRY(mm(g, &r->down_sh, x->sg, nsh, n, x->ysh, d, err));
    pmark(g, GP_EXP_DOWN);
    TRY(hc_post(g, n, NULL, grouped ? x->einv : x->ident, next, err));
    pmark(g, GP_SUM);
    return V4F_OK;
}

/* Head over rows [r0, r0 + m) of X into s.logits[0..m). */
static v4f_status head_with(v4f_gpu *g, int64_t r0, int64_t m, const gmat *fn, const float *hbase,
                            const float *hscale, const float *norm, v4f_err *err) {
    const v4f_config *c = &g->cfg;
    gscratch *x = &g->s;
    int64_t HD = (int64_t)c->n_hc * c->n_embd, d = c->n_embd, H = c->n_hc;
    const float *X = x->X + r0 * HD;
    if (fn->type == V4F_TYPE_F32 || fn->type == V4F_TYPE_F16 || fn->type == V4F_TYPE_BF16) {
        int ns = hc_splits(HD, m, (int)H);
        TRY(v4f_cuda_hc_mix_partial(g->c, fn->data, fn->type, fn->row_bytes, (int)H, HD, X, m, ns, x->mixp, x->mixss,
                                    err));
        TRY(v4f_cuda_hc_head_fused(g->c, X, x->mixp, x->mixss, ns, hscale, hbase, m, (int)H, d, c->hc_eps, c->rms_eps,
                                   norm, x->a, x->xn, err));
    } else {
        TRY(mm_exact(g, fn, X, HD, m, x->mix, H, err));
        TRY(v4f_cuda_hc_mix_scale(g->c, X, m, HD, x->mix, H, c->rms_eps, err));
        TRY(v4f_cuda_hc_head_weights(g->c, x->mix, hscale, hbase, m, (int)H, c->hc_eps, x->hw, err));
        TRY(v4f_cuda_hc_weighted_sum(g->c, X, x->hw, m, (int)H, d, x->a, err));
        TRY(v4f_cuda_rmsnorm(g->c, x->a, norm, x->xn, m, d, c->rms_eps, err));
    }
    TRY(mm(g, &g->output, x->xn, d, m, x->logits, c->n_vocab, err));
    pmark(g, GP_HEAD);
    return V4F_OK;
}

static v4f_status head(v4f_gpu *g, int64_t r0, int64_t m, v4f_err *err) {
    return head_with(g, r0, m, &g->out_hc_fn, g->out_hc_base, g->out_hc_scale, g->out_norm, err);
}

/* The device work of one chunk whose tokens and pos0 are already on the
 * device; with_head: logits of the last row into s.logits[0]. Where `out`
 * allows it, the last layer's query side and FFN run for the last row only
 * (moved to row 0 of X) or not at all, as llama.cpp does for rows without
 * outputs: the layer's KV side still covers every row, and nothing else
 * reads the other rows. Returns in *out_row0 the row of X that holds the
 * last token's final state (n - 1, or 0 when moved). */
static v4f_status chunk_body(v4f_gpu *g, int64_t n, bool head_last, const v4f_debug_flags *dbg, const v4f_trace *tr,
                             uint32_t pos0_host, v4f_out_rows out, int64_t *out_row0, v4f_err *err) {
    const v4f_config *c = &g->cfg;
    gscratch *x = &g->s;
    x->mix_of = NULL;
    TRY(v4f_cuda_step_prep(g->c, x->pos0, n, (int32_t)c->n_swa, (int)g->n_ratios, g->ratios, x->pos, x->rf, x->rc,
                           x->nvis, err));
    TRY(v4f_cuda_embed(g->c, g->embd, g->embd_type, g->embd_row_bytes, c->n_vocab, x->tok, n, c->n_embd,
                       (int)c->n_hc, x->X, err));
    pmark(g, GP_PREP);
    int64_t HD = (int64_t)c->n_hc * c->n_embd, k = c->n_expert_used;
    float *hbuf = NULL;
    int32_t *ebuf = NULL;
    if (tr && tr->hc_after_layer) hbuf = v4f_xmalloc((size_t)HD * sizeof(float));
    if (tr && tr->experts) ebuf = v4f_xmalloc((size_t)n * k * sizeof(int32_t));
    v4f_status st = V4F_OK;
    int64_t row0 = n - 1;
    /* a chunk's host-resident experts: layer l + 1's are copied while layer
     * l runs (its attention and FFN), layer 0's from here */
    const bool pf = n > 1 && g->prefetch && !stage_used_now(g, n);
    if (pf) st = stage_issue(g, 0, err);
    for (uint32_t l = 0; l < c->n_layer && st == V4F_OK; l++) {
        if (pf && l + 1 < c->n_layer && (st = stage_issue(g, l + 1, err))) break;
        /* the last layer: the query side and the FFN for the last row only
         * (moved to row 0), or none */
        if (l + 1 == c->n_layer && out != V4F_OUT_ROWS_ALL && n > 1 && !tr && !g->L[l].hash) {
            st = attention(g, &g->L[l], n, out == V4F_OUT_ROWS_NONE ? n : n - 1, dbg, err);
            if (st == V4F_OK && out == V4F_OUT_ROWS_LAST) st = ffn(g, &g->L[l], 1, NULL, err);
            row0 = 0;
            break;
        }
        st = attention(g, &g->L[l], n, 0, dbg, err);
        if (st == V4F_OK) {
            const glayer *nx = l + 1 < c->n_layer ? &g->L[l + 1] : NULL;
            hcmix hn = {nx ? &nx->hc_attn_fn : NULL, nx ? nx->hc_attn_scale : NULL, nx ? nx->hc_attn_base : NULL,
                        nx ? nx->attn_norm : NULL};
            st = ffn(g, &g->L[l], n, nx ? &hn : NULL, err);
        }
        if (st == V4F_OK && ebuf) {
            st = v4f_cuda_download(g->c, ebuf, x->eids, (size_t)n * k * sizeof(int32_t), err);
            for (int64_t t = 0; st == V4F_OK && t < n; t++)
                tr->experts(tr->ud, l, pos0_host + (uint32_t)t, ebuf + t * k, (uint32_t)k);
        }
        if (st == V4F_OK && hbuf) {
            st = v4f_cuda_download(g->c, hbuf, x->X + (n - 1) * HD, (size_t)HD * sizeof(float), err);
            if (st == V4F_OK) tr->hc_after_layer(tr->ud, l, pos0_host + (uint32_t)n - 1, hbuf);
        }
    }
    free(hbuf);
    free(ebuf);
    /* copies issued for a layer whose chunk FFN did not run (the last one)
     * end before the stream does */
    for (int i = 0; pf && st == V4F_OK && i < V4F_CUDA_PREFETCH_SLOTS; i++) st = v4f_cuda_prefetch_wait(g->c, i, err);
    if (out_row0) *out_row0 = row0;
    if (st == V4F_OK && head_last) st = head(g, row0, 1, err);
    return st;
}

static v4f_status capture_decode(v4f_gpu *g, v4f_err *err) {
    static const v4f_debug_flags none = {0};
    TRY(v4f_cuda_capture_begin(g->c, err));
    g->capturing = true;
    v4f_status st = chunk_body(g, 1, true, &none, NULL, 0, V4F_OUT_ROWS_ALL, NULL, err);
    g->capturing = false;
    /* a drafting session's ring of HC states gets the step's row, so that
     * one-token evals and paused drafting (plain greedy decoding) keep the
     * MTP block's pending rows */
    if (st == V4F_OK && g->spec_hc)
        st = v4f_cuda_ring_put(g->c, g->s.X, 1, (int64_t)g->cfg.n_hc * g->cfg.n_embd, g->spec_hc, (int32_t)g->spec_cap,
                               g->s.pos0, err);
    /* the greedy pick, for pipelined greedy decoding (v4f_gpu_decode_greedy);
     * plain replays stage their own token and position over it */
    if (st == V4F_OK)
        st = v4f_cuda_greedy_next(g->c, g->s.logits, g->cfg.n_vocab, g->s.suppress, g->s.tok, g->s.pos0,
                                  g->s.logits_keep, g->d_pick, g->s.greedy_scr, err);
    v4f_status st2 = v4f_cuda_capture_end(g->c, st == V4F_OK, &g->graph, st == V4F_OK ? err : NULL);
    return st ? st : st2;
}

/* The captured decode graph, captured on first use; false (and a warning,
 * once) when capturing fails: callers then launch kernel by kernel. */
static bool decode_graph(v4f_gpu *g) {
    if (!g->graph && !g->graph_failed) {
        v4f_err e2 = {0};
        if (g->decode_dma && capture_decode(g, &e2) != V4F_OK) {
            v4f_log(V4F_LOG_WARN, "cuda: decode graph with copies of the picked host experts failed (%s); "
                                  "reading them over the bus", e2.msg);
            g->decode_dma = false;
            g->graph = NULL;
        }
        if (!g->graph && capture_decode(g, &e2) != V4F_OK) {
            v4f_log(V4F_LOG_WARN, "cuda: decode graph capture failed (%s); running without a graph", e2.msg);
            g->graph_failed = true;
            g->graph = NULL;
        }
    }
    return g->graph != NULL;
}

/* Tokens and first position of a chunk to the device (through the pinned
 * staging buffer; queued, not waited for). */
static v4f_status stage_chunk(v4f_gpu *g, const int32_t *tokens, uint32_t m, uint32_t pos0, v4f_err *err) {
    memcpy(g->h_in, tokens, (size_t)m * sizeof(int32_t));
    g->h_in[g->N] = (int32_t)pos0;
    TRY(v4f_cuda_upload_async(g->c, g->s.tok, g->h_in, (size_t)m * sizeof(int32_t), err));
    return v4f_cuda_upload_async(g->c, g->s.pos0, g->h_in + g->N, sizeof(int32_t), err);
}

/* The id the device's greedy picks never take (-1: none), through its
 * pinned staging slot (queued, not waited for). */
static v4f_status stage_suppress(v4f_gpu *g, int32_t id, v4f_err *err) {
    g->h_in[g->N + 1] = id;
    return v4f_cuda_upload_async(g->c, g->s.suppress, g->h_in + g->N + 1, sizeof(int32_t), err);
}

/* Logits of chunk rows [r0, m) through a head (the model's or the MTP
 * block's) into dst, row r at dst + (r - r0) * n_vocab, GPU_HEAD_ROWS rows
 * per pass. */
static v4f_status head_logits(v4f_gpu *g, const gmat *fn, const float *hbase, const float *hscale, const float *norm,
                              uint32_t r0, uint32_t m, float *dst, v4f_err *err) {
    size_t V = g->cfg.n_vocab;
    for (uint32_t r = r0; r < m; r += GPU_HEAD_ROWS) {
        uint32_t mr = m - r < GPU_HEAD_ROWS ? m - r : GPU_HEAD_ROWS;
        TRY(head_with(g, r, mr, fn, hbase, hscale, norm, err));
        TRY(v4f_cuda_download_async(g->c, g->h_logits, g->s.logits, (size_t)mr * V * sizeof(float), err));
        TRY(v4f_cuda_sync(g->c, err));
        memcpy(dst + (size_t)(r - r0) * V, g->h_logits, (size_t)mr * V * sizeof(float));
    }
    return V4F_OK;
}

/* n (2..short_max, and <= N: the pinned h_in holds N tokens) tokens as n
 * replays of the decode graph, queued back to back: each replay's token is
 * copied from short_tok into tok[0] (over the previous replay's greedy
 * pick), and the graph advances pos0 itself. The same kernels as n
 * single-token evals, so the same results bit for bit. logits: NULL or
 * [n_vocab] of the last token. */
static v4f_status eval_short(v4f_gpu *g, const int32_t *tokens, uint32_t n, uint32_t pos, float *logits,
                             v4f_err *err) {
    memcpy(g->h_in, tokens, (size_t)n * sizeof(int32_t));
    g->h_in[g->N] = (int32_t)pos;
    TRY(v4f_cuda_upload_async(g->c, g->s.short_tok, g->h_in, (size_t)n * sizeof(int32_t), err));
    TRY(v4f_cuda_upload_async(g->c, g->s.pos0, g->h_in + g->N, sizeof(int32_t), err));
    for (uint32_t i = 0; i < n; i++) {
        TRY(v4f_cuda_copy(g->c, g->s.tok, g->s.short_tok + i, sizeof(int32_t), err));
        TRY(v4f_cuda_graph_launch(g->c, g->graph, err));
    }
    const size_t V = g->cfg.n_vocab;
    if (logits) TRY(v4f_cuda_download_async(g->c, g->h_logits, g->s.logits, V * sizeof(float), err));
    TRY(v4f_cuda_sync(g->c, err));
    if (logits) memcpy(logits, g->h_logits, V * sizeof(float));
    return V4F_OK;
}

/* Rows [0, n) of src (device, [n][HD]) into the speculative ring as
 * positions q..q+n-1, or back (to_ring false: ring rows of q.. into src). */
static v4f_status spec_ring(v4f_gpu *g, float *src, uint32_t q, uint32_t n, bool to_ring, v4f_err *err) {
    const size_t HD = (size_t)g->cfg.n_hc * g->cfg.n_embd;
    for (uint32_t i = 0; i < n;) {
        const uint32_t r = (q + i) % g->spec_cap, k = n - i < g->spec_cap - r ? n - i : g->spec_cap - r;
        float *rp = g->spec_hc + (size_t)r * HD, *sp = src + (size_t)i * HD;
        TRY(v4f_cuda_copy(g->c, to_ring ? rp : sp, to_ring ? sp : rp, (size_t)k * HD * sizeof(float), err));
        i += k;
    }
    return V4F_OK;
}

v4f_status v4f_gpu_eval(v4f_gpu *g, const int32_t *tokens, uint32_t n, uint32_t pos, float *logits,
                        unsigned flags, float *hc_out, uint32_t hc_rows, const v4f_trace *trace,
                        const v4f_debug_flags *dbg, v4f_err *err) {
    /* hc_out NULL with hc_rows: the HC states go to the speculative ring */
    const bool ring = !hc_out && hc_rows > 0;
    if (ring && !g->spec_hc) return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda: no speculative ring");
    const v4f_config *c = &g->cfg;
    static const v4f_debug_flags none = {0};
    if (!dbg) dbg = &none;
    bool plain_dbg = !dbg->no_sink && !dbg->no_kv_fp8;
    bool tracing = trace && (trace->hc_after_layer || trace->experts);
    gscratch *x = &g->s;
    int64_t HD = (int64_t)c->n_hc * c->n_embd;
    bool last_only = (flags & V4F_EVAL_LOGITS_LAST) != 0;
    /* (the decode graph writes each step's HC row to the ring itself) */
    bool plain = plain_dbg && !tracing && !hc_out && (!ring || hc_rows >= n) && !g->prof.on;
    /* the first row whose HC state goes to hc_out or the ring (n: none) */
    const uint32_t hc_from = !hc_out && !ring ? n : hc_rows >= n ? 0 : n - hc_rows;
    TRY(set_place(g, n > g->flex_min ? 1 : 0, pos, err));
    wrote(g, (uint64_t)pos + n);
    if (n >= 2 && n <= g->short_max && n <= g->N && (last_only || !logits) && plain && g->place == 0 &&
        decode_graph(g))
        return eval_short(g, tokens, n, pos, logits, err);
    for (uint32_t done = 0; done < n;) {
        uint32_t m = n - done < g->N ? n - done : g->N;
        TRY(stage_chunk(g, tokens + done, m, pos + done, err));
        bool want_logits = logits && (!last_only || done + m == n);
        bool use_graph = m == 1 && plain && g->place == 0;
        if (use_graph && decode_graph(g)) {
            TRY(v4f_cuda_graph_launch(g->c, g->graph, err));
            if (want_logits)
                TRY(v4f_cuda_download_async(g->c, g->h_logits, x->logits, (size_t)c->n_vocab * sizeof(float), err));
            TRY(v4f_cuda_sync(g->c, err));
            if (want_logits) memcpy(logits + (last_only ? 0 : (int64_t)done * c->n_vocab), g->h_logits,
                                    (size_t)c->n_vocab * sizeof(float));
            done += m;
            continue;
        }
        pmark(g, GP_PREP);
        const bool chunk_hc = done + m > hc_from;
        const v4f_out_rows out = v4f_eval_out_rows(logits != NULL, chunk_hc, flags, done + m == n);
        int64_t row0 = m - 1;
        TRY(chunk_body(g, m, false, dbg, tracing ? trace : NULL, pos + done, out, &row0, err));
        if (chunk_hc) {
            const uint32_t r0 = hc_from > done ? hc_from - done : 0;
            if (ring)
                TRY(spec_ring(g, x->X + (int64_t)r0 * HD, pos + done + r0, m - r0, true, err));
            else
                TRY(v4f_cuda_download(g->c, hc_out + (int64_t)(done + r0 - hc_from) * HD, x->X + (int64_t)r0 * HD,
                                      (size_t)(m - r0) * HD * sizeof(float), err));
        }
        if (want_logits)
            TRY(head_logits(g, &g->out_hc_fn, g->out_hc_base, g->out_hc_scale, g->out_norm, last_only ? row0 : 0,
                            last_only ? row0 + 1 : m, last_only ? logits : logits + (int64_t)done * c->n_vocab, err));
        TRY(v4f_cuda_sync(g->c, err));
        prof_collect(g, m == 1 ? GP_DECODE : m <= GPU_COLS_EVAL ? GP_SHORT : GP_PREFILL, m);
        done += m;
    }
    return V4F_OK;
}

v4f_status v4f_gpu_decode_greedy(v4f_gpu *g, int32_t token, uint32_t pos, uint32_t max_eval, int32_t suppress,
                                 v4f_pick_fn fn, void *ud, float *logits, uint32_t *n_eval, int32_t *next,
                                 v4f_err *err) {
    *n_eval = 0;
    *next = -1;
    TRY(set_place(g, 0, pos, err));
    if (g->prof.on || !decode_graph(g))
        return v4f_err_set(err, V4F_STATUS_UNSUPPORTED, "no decode graph: decode step by step");
    const size_t V = g->cfg.n_vocab;
    TRY(stage_chunk(g, &token, 1, pos, err));
    TRY(stage_suppress(g, suppress, err));
    /* The host stays one step behind the device: step k + 1 is queued (it
     * reads step k's pick on the device) before the host reads pick k, so
     * the GPU never waits for the host. The graph's last kernel leaves step
     * k's pick in h_pick and its logits in logits_keep, both at slot (pos +
     * k) & 1, so one step in flight overwrites neither. A step queued past
     * the caller's stop only wrote state at a position the session drops. */
    uint32_t launched = 0, done = 0;
    v4f_status st = V4F_OK;
    while (st == V4F_OK) {
        while (st == V4F_OK && launched < max_eval && launched <= done + 1) {
            st = v4f_cuda_graph_launch(g->c, g->graph, err);
            if (st == V4F_OK) st = v4f_cuda_mark(g->c, g->pipe, (int)(launched & 1), err);
            launched++;
        }
        if (st || (st = v4f_cuda_mark_wait(g->pipe, (int)(done & 1), err))) break;
        const int32_t t = g->h_pick[(pos + done) & 1];
        done++;
        *next = t;
        if (done == max_eval || (fn && !fn(ud, t))) break;
    }
    v4f_status st2 = v4f_cuda_sync(g->c, st ? NULL : err);
    wrote(g, (uint64_t)pos + launched);
    *n_eval = done;
    if (st || st2) return st ? st : st2;
    /* (s.suppress keeps this call's id: only the picks of pipelined calls,
     * which each set it, are read) */
    return v4f_cuda_download(g->c, logits, g->s.logits_keep + ((pos + done - 1) & 1) * V, V * sizeof(float), err);
}

/* The MTP block over m staged positions (tokens and pos0 on the device,
 * the main HC states in X2); leaves its final HC states in X. last: the
 * query side and the FFN for the last row only, its state in row 0 (a
 * draft needs that row alone; the block's KV rows still cover every row,
 * and a single layer's KV does not depend on its FFN). */
static v4f_status mtp_body(v4f_gpu *g, uint32_t m, bool last, v4f_err *err) {
    const v4f_config *c = &g->cfg;
    static const v4f_debug_flags none = {0};
    gscratch *x = &g->s;
    const int64_t d = c->n_embd, H = c->n_hc;
    TRY(v4f_cuda_step_prep(g->c, x->pos0, m, (int32_t)c->n_swa, (int)g->n_ratios, g->ratios, x->pos, x->rf, x->rc,
                           x->nvis, err));
    /* X[t][h] = h_proj(hnorm(hc[t][h])) + e_proj(enorm(embed(token))) */
    TRY(v4f_cuda_rmsnorm(g->c, x->X2, g->mtp_hnorm, x->X2, (int64_t)m * H, d, c->rms_eps, err));
    TRY(v4f_cuda_embed(g->c, g->embd, g->embd_type, g->embd_row_bytes, c->n_vocab, x->tok, m, d, 1, x->a, err));
    TRY(v4f_cuda_rmsnorm(g->c, x->a, g->mtp_enorm, x->xn, m, d, c->rms_eps, err));
    TRY(mm(g, &g->mtp_h_proj, x->X2, d, (int64_t)m * H, x->X, d, err));
    TRY(mm(g, &g->mtp_e_proj, x->xn, d, m, x->out, d, err));
    TRY(v4f_cuda_add_streams(g->c, x->out, m, (int)H, d, x->X, err));
    x->mix_of = NULL;
    const int64_t q0 = last ? (int64_t)m - 1 : 0;
    TRY(attention(g, &g->L[c->n_layer], m, q0, &none, err));
    return ffn(g, &g->L[c->n_layer], (int64_t)m - q0, NULL, err);
}

/* The device part of a verify step: the 2-token chunk staged, both rows'
 * logits, their greedy picks into the mapped h_spec[1..2]. */
static v4f_status verify_body(v4f_gpu *g, v4f_err *err) {
    static const v4f_debug_flags none = {0};
    gscratch *x = &g->s;
    const size_t V = g->cfg.n_vocab;
    int64_t row0 = 1;
    TRY(chunk_body(g, 2, false, &none, NULL, 0, V4F_OUT_ROWS_ALL, &row0, err));
    TRY(head(g, 0, 2, err));
    for (int i = 0; i < 2; i++)
        TRY(v4f_cuda_greedy_next(g->c, x->logits + i * V, (int64_t)V, x->suppress, g->d_spec + 1 + i, g->spec_dev + 1,
                                 NULL, NULL, x->greedy_scr, err));
    return V4F_OK;
}

v4f_status v4f_gpu_spec_step(v4f_gpu *g, const int32_t *ptok, uint32_t pn, uint32_t pp0, int32_t a, uint32_t p,
                             int32_t suppress, int32_t over, int32_t out[3], v4f_err *err) {
    const v4f_config *c = &g->cfg;
    gscratch *x = &g->s;
    if (!g->spec_hc || (pn == 0 && over < 0) || pn > g->spec_cap || (pn && pp0 + pn != p) || p + 2 > g->n_ctx)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda: speculative step without a draft or ring");
    TRY(set_place(g, 0, p, err));
    wrote(g, (uint64_t)p + 2);
    TRY(stage_suppress(g, suppress, err));
    if (pn) {
        /* the MTP block takes the pending rows; its greedy guess of the
         * token after `a` goes to the device draft slot */
        TRY(stage_chunk(g, ptok, pn, pp0, err));
        TRY(spec_ring(g, x->X2, pp0, pn, false, err));
        TRY(mtp_body(g, pn, true, err));
        TRY(head_with(g, 0, 1, &g->mtp_hc_fn, g->mtp_hc_base, g->mtp_hc_scale, g->mtp_norm, err));
        TRY(v4f_cuda_greedy_next(g->c, x->logits, c->n_vocab, x->suppress, g->spec_dev, g->spec_dev + 1, NULL, NULL,
                                 x->greedy_scr, err));
        prof_collect(g, GP_MTP, pn);
    }
    /* the verify chunk: [a, draft] at p (an override replaces the MTP
     * draft); its own h_in slots, the MTP's tokens may not be copied yet */
    int32_t *hv = g->h_in + g->N + 2;
    hv[0] = a;
    hv[1] = over;
    hv[2] = (int32_t)p;
    TRY(v4f_cuda_upload_async(g->c, x->tok, hv, (over >= 0 ? 2 : 1) * sizeof(int32_t), err));
    if (over < 0) TRY(v4f_cuda_copy(g->c, x->tok + 1, g->spec_dev, sizeof(int32_t), err));
    TRY(v4f_cuda_copy(g->c, g->d_spec, x->tok + 1, sizeof(int32_t), err));
    TRY(v4f_cuda_upload_async(g->c, x->pos0, hv + 2, sizeof(int32_t), err));
    /* a graph where the step needs no host in between (all experts on the
     * device; host experts are staged per chunk by the host) */
    const bool graphable = !g->e_host && !g->prof.on && !g->vgraph_failed && !v4f_env_off("V4F_CUDA_VERIFY_GRAPH");
    if (graphable && !g->vgraph) {
        v4f_err e2 = {0};
        v4f_status st = v4f_cuda_capture_begin(g->c, &e2);
        if (st == V4F_OK) {
            st = verify_body(g, &e2);
            v4f_status st2 = v4f_cuda_capture_end(g->c, st == V4F_OK, &g->vgraph, st == V4F_OK ? &e2 : NULL);
            if (st == V4F_OK) st = st2;
        }
        if (st != V4F_OK) {
            v4f_log(V4F_LOG_WARN, "cuda: verify graph capture failed (%s); launching kernel by kernel", e2.msg);
            g->vgraph_failed = true;
            g->vgraph = NULL;
        }
    }
    if (graphable && g->vgraph) TRY(v4f_cuda_graph_launch(g->c, g->vgraph, err));
    else TRY(verify_body(g, err));
    TRY(spec_ring(g, x->X, p, 2, true, err));
    TRY(v4f_cuda_sync(g->c, err));
    prof_collect(g, GP_SHORT, 2);
    out[0] = g->h_spec[0];
    out[1] = g->h_spec[1];
    out[2] = g->h_spec[2];
    return V4F_OK;
}

v4f_status v4f_gpu_spec_ring_row(v4f_gpu *g, uint32_t pos, float *dst, v4f_err *err) {
    const size_t HD = (size_t)g->cfg.n_hc * g->cfg.n_embd;
    if (!g->spec_hc) return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "cuda: no speculative ring");
    return v4f_cuda_download(g->c, dst, g->spec_hc + (size_t)(pos % g->spec_cap) * HD, HD * sizeof(float), err);
}

v4f_status v4f_gpu_logits_row(v4f_gpu *g, uint32_t row, float *dst, v4f_err *err) {
    const size_t V = g->cfg.n_vocab;
    if (row >= GPU_HEAD_ROWS) return v4f_err_set(err, V4F_STATUS_RANGE, "cuda: logits row %u", row);
    return v4f_cuda_download(g->c, dst, g->s.logits + row * V, V * sizeof(float), err);
}

v4f_status v4f_gpu_mtp_eval(v4f_gpu *g, const float *hc, const int32_t *tokens, uint32_t n, uint32_t pos,
                            float *logits, v4f_err *err) {
    const v4f_config *c = &g->cfg;
    if (!g->mtp) return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "session was created without MTP");
    gscratch *x = &g->s;
    int64_t d = c->n_embd, H = c->n_hc, HD = H * d;
    for (uint32_t done = 0; done < n;) {
        uint32_t m = n - done < g->N ? n - done : g->N;
        TRY(stage_chunk(g, tokens + done, m, pos + done, err));
        TRY(v4f_cuda_upload(g->c, x->X2, hc + (int64_t)done * HD, (size_t)m * HD * sizeof(float), err));
        TRY(mtp_body(g, m, false, err));
        if (logits)
            TRY(head_logits(g, &g->mtp_hc_fn, g->mtp_hc_base, g->mtp_hc_scale, g->mtp_norm, 0, m,
                            logits + (int64_t)done * c->n_vocab, err));
        TRY(v4f_cuda_sync(g->c, err));
        prof_collect(g, GP_MTP, m);
        done += m;
    }
    return V4F_OK;
}

#endif /* V4F_CUDA */
