/*
 * ops.c - CPU reference implementations of the model ops (see ops.h).
 *
 * Semantics follow the official DeepSeek V4 inference code (model.py and
 * kernel.py): float32 math, FP8/FP4 scale computation by the kernels' bit
 * tricks (ceil(log2(amax * (1/max))) from the float's bits), Sinkhorn in the
 * kernel's operation order, sink logit only in the softmax denominator.
 *
 * Ownership: nothing is allocated here except the ctx's per-thread tiles and
 * its int8-plane scratch (both at ctx init).
 * Threading: plain ops are pure; v4f_cpu_matmul uses the ctx's pool. The
 * int8 planes of a decode region's distinct X are split by the region's
 * first tasks (one X each, claimed before any row task); a row task that
 * reads planes waits for its X's ready flag (release/acquire), so the planes
 * are written once and read-only afterwards.
 */
#include "backend/cpu/ops.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/ops_internal.h"
#include "quant/quant.h"

#define V4F_CPU_MAX_HC_ 16

/* ---- matmul -------------------------------------------------------------- */

/* V4F_CPU_PLANES: unset or 1 = every type, 0 = none, else a comma list of
 * type names */
static uint64_t planes_env(void) {
    const char *e = getenv("V4F_CPU_PLANES");
    if (!e || !*e || strcmp(e, "1") == 0) return ~(uint64_t)0;
    uint64_t m = 0;
    for (uint32_t t = 0; t < V4F_TYPE_COUNT && t < 64; t++) {
        const char *name = v4f_type_name(t), *p = e;
        const size_t len = name[0] == '?' ? 0 : strlen(name);
        while (len && (p = strstr(p, name)) != NULL) {
            if ((p == e || p[-1] == ',') && (p[len] == ',' || p[len] == 0)) m |= (uint64_t)1 << t;
            p += len;
        }
    }
    return m;
}

/* Prefill scratch of the AVX-512 chunked matmul (matmul_rows_chunked): an X
 * chunk of CHUNK_TOKENS x KC floats, the Y sums of CHUNK_ROWS rows and a
 * dequantized 16 x KC W chunk. Each thread's tile holds the larger of that
 * and V4F_CPU_TILE_ROWS x max_n_in floats. */
#define CHUNK_ROWS 256 /* 128: the same at 2 threads, -3% at 1 on the dev box */
#define CHUNK_TOKENS 256
#define CHUNK_SCRATCH_FLOATS \
    ((int64_t)(CHUNK_TOKENS + V4F_CPU_TILE_ROWS) * V4F_CPU_GEMM_KC + (int64_t)CHUNK_TOKENS * CHUNK_ROWS)

static int64_t tile_floats(const v4f_cpu_ctx *c) {
    int64_t f = (int64_t)V4F_CPU_TILE_ROWS * c->max_n_in;
    return f > CHUNK_SCRATCH_FLOATS ? f : CHUNK_SCRATCH_FLOATS;
}

v4f_status v4f_cpu_ctx_init(v4f_cpu_ctx *c, v4f_pool *pool, int64_t max_n_in, v4f_err *err) {
    memset(c, 0, sizeof *c);
    c->pool = pool;
    c->n_threads = v4f_pool_size(pool);
    c->max_n_in = max_n_in;
    c->tile = v4f_xcalloc((size_t)c->n_threads, sizeof *c->tile);
    for (int i = 0; i < c->n_threads; i++) {
        c->tile[i] = v4f_aligned_alloc((size_t)tile_floats(c) * sizeof(float));
        if (!c->tile[i]) {
            v4f_cpu_ctx_deinit(c);
            return v4f_err_set(err, V4F_STATUS_OOM, "cpu ctx: cannot allocate matmul tiles");
        }
    }
    c->planes_types = planes_env();
    c->planes_cap = V4F_CPU_PLANE_SLOTS * ((v4f_planes_bytes((max_n_in + 255) / 256 * 256) + 63) & ~(size_t)63);
    c->planes = v4f_aligned_alloc(c->planes_cap);
    if (!c->planes) {
        v4f_cpu_ctx_deinit(c);
        return v4f_err_set(err, V4F_STATUS_OOM, "cpu ctx: cannot allocate the plane scratch");
    }
    return V4F_OK;
}

void v4f_cpu_ctx_deinit(v4f_cpu_ctx *c) {
    v4f_aligned_free(c->planes);
    c->planes = NULL;
    if (!c->tile) return;
    for (int i = 0; i < c->n_threads; i++) v4f_aligned_free(c->tile[i]);
    free(c->tile);
    c->tile = NULL;
}

float v4f_cpu_dot_f32(const float *a, const float *b, int64_t n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += a[i + l] * b[i + l];
    for (; i < n; i++) acc[i & 7] += a[i] * b[i];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/* 4 rows x 1 token with shared loads of x. */
static void dot4(const float *w, int64_t ldw, const float *x, int64_t n, float *y) {
    float a0[8] = {0}, a1[8] = {0}, a2[8] = {0}, a3[8] = {0};
    const float *w0 = w, *w1 = w + ldw, *w2 = w + 2 * ldw, *w3 = w + 3 * ldw;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) {
            float xv = x[i + l];
            a0[l] += w0[i + l] * xv;
            a1[l] += w1[i + l] * xv;
            a2[l] += w2[i + l] * xv;
            a3[l] += w3[i + l] * xv;
        }
    for (; i < n; i++) {
        a0[i & 7] += w0[i] * x[i];
        a1[i & 7] += w1[i] * x[i];
        a2[i & 7] += w2[i] * x[i];
        a3[i & 7] += w3[i] * x[i];
    }
#define RED(a) (((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])))
    y[0] = RED(a0);
    y[1] = RED(a1);
    y[2] = RED(a2);
    y[3] = RED(a3);
#undef RED
}

void v4f_cpu_gemm_tile_generic(const float *W, int64_t nr, const float *X, int64_t ldx, int64_t nt,
                               int64_t K, float *Y, int64_t ldy) {
    for (int64_t t = 0; t < nt; t++) {
        const float *x = X + t * ldx;
        float *y = Y + t * ldy;
        int64_t r = 0;
        for (; r + 4 <= nr; r += 4) dot4(W + r * K, K, x, K, y + r);
        for (; r < nr; r++) y[r] = v4f_cpu_dot_f32(W + r * K, x, K);
    }
}

void v4f_cpu_axpy_generic(float *y, float a, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

static v4f_cpu_gemm_tile_fn g_gemm_tile;
static v4f_cpu_gemm_chunk_fn g_gemm_chunk;
static v4f_cpu_axpy_fn g_axpy;
static v4f_cpu_hc_wsum_fn g_hc_wsum;
static v4f_cpu_hc_post_fn g_hc_post;
static pthread_once_t g_gemm_once = PTHREAD_ONCE_INIT;

static void gemm_pick(void) {
    v4f_isa isa = v4f_isa_best();
    g_gemm_tile = isa >= V4F_ISA_AVX512 ? v4f_cpu_gemm_tile_avx512
                  : isa >= V4F_ISA_AVX2 ? v4f_cpu_gemm_tile_avx2
                                        : v4f_cpu_gemm_tile_generic;
    g_gemm_chunk = isa >= V4F_ISA_AVX512 ? v4f_cpu_gemm_chunk_avx512 : NULL;
    g_axpy = isa >= V4F_ISA_AVX512 ? v4f_cpu_axpy_avx512
             : isa >= V4F_ISA_AVX2 ? v4f_cpu_axpy_avx2
                                   : v4f_cpu_axpy_generic;
    g_hc_wsum = isa >= V4F_ISA_AVX512 ? v4f_cpu_hc_weighted_sum_avx512
                : isa >= V4F_ISA_AVX2 ? v4f_cpu_hc_weighted_sum_avx2
                                      : v4f_cpu_hc_weighted_sum_generic;
    g_hc_post = isa >= V4F_ISA_AVX512 ? v4f_cpu_hc_post_avx512
                : isa >= V4F_ISA_AVX2 ? v4f_cpu_hc_post_avx2
                                      : v4f_cpu_hc_post_generic;
}

v4f_cpu_axpy_fn v4f_cpu_axpy_get(void) {
    pthread_once(&g_gemm_once, gemm_pick);
    return g_axpy;
}

v4f_cpu_gemm_chunk_fn v4f_cpu_gemm_chunk_get(void) {
    pthread_once(&g_gemm_once, gemm_pick);
    return g_gemm_chunk;
}

v4f_cpu_gemm_tile_fn v4f_cpu_gemm_tile_get(void) {
    pthread_once(&g_gemm_once, gemm_pick);
    return g_gemm_tile;
}

void v4f_cpu_gemm_f32(const float *W, int64_t nr, const float *X, int64_t ldx, int64_t nt,
                      int64_t K, float *Y, int64_t ldy) {
    v4f_cpu_gemm_tile_get()(W, nr, X, ldx, nt, K, Y, ldy);
}

/* The AVX-512 prefill path: K in chunks of V4F_CPU_GEMM_KC outside the row
 * tiles of a group of CHUNK_ROWS rows. The X chunk (<= CHUNK_TOKENS tokens x
 * KC floats) is copied into a contiguous block and the group's Y sums are
 * kept in another, so both stay in L2 (256 + 256 KiB) while every 16-row
 * tile of the group streams over them. One pass over K per row tile instead
 * read the whole X block (4 MiB at K = 4096, 256 tokens) from L3 for every
 * 16 rows; and X or Y read in place with a power-of-two row stride map all
 * tokens onto the same L2 sets. Each tile's K chunk is dequantized into a
 * third block (16 x KC floats). Results are bit-identical to one gemm call
 * over the whole K (ops_internal.h). Returns false (nothing done) when the
 * scratch is too small or the type's blocks do not divide KC. */
static bool matmul_rows_chunked(const v4f_cpu_mat *W, const float *X, int64_t ldx, int64_t n, float *Y,
                                int64_t ldy, float *tile, int64_t tile_floats,
                                const v4f_quant_kernels *k) {
    const int64_t K = W->n_in, KC = V4F_CPU_GEMM_KC;
    uint64_t kc_bytes = 0, rb2 = 0;
    if (tile_floats < CHUNK_SCRATCH_FLOATS) return false;
    /* the chunks must start on block boundaries: row bytes linear in KC */
    if (!v4f_type_row_bytes(W->type, (uint64_t)KC, &kc_bytes) ||
        !v4f_type_row_bytes(W->type, (uint64_t)(2 * KC), &rb2) || rb2 != 2 * kc_bytes)
        return false;
    float *xs = tile, *ys = xs + CHUNK_TOKENS * KC, *wt = ys + CHUNK_TOKENS * CHUNK_ROWS;
    v4f_cpu_gemm_chunk_fn chunk = v4f_cpu_gemm_chunk_get();
    for (int64_t t0 = 0; t0 < n; t0 += CHUNK_TOKENS) {
        int64_t nt = n - t0 < CHUNK_TOKENS ? n - t0 : CHUNK_TOKENS;
        const float *x = X + t0 * ldx;
        float *y = Y + t0 * ldy;
        for (int64_t g0 = 0; g0 < W->n_out; g0 += CHUNK_ROWS) {
            int64_t gn = W->n_out - g0 < CHUNK_ROWS ? W->n_out - g0 : CHUNK_ROWS;
            for (int64_t k0 = 0; k0 < K; k0 += KC) {
                int64_t kc = K - k0 < KC ? K - k0 : KC;
                v4f_cpu_gemm_pack_x_avx512(x + k0, ldx, nt, kc, xs);
                for (int64_t r0 = 0; r0 < gn; r0 += V4F_CPU_TILE_ROWS) {
                    int64_t nr = gn - r0 < V4F_CPU_TILE_ROWS ? gn - r0 : V4F_CPU_TILE_ROWS;
                    const uint8_t *src = (const uint8_t *)W->data + (uint64_t)(g0 + r0) * W->row_bytes;
                    const float *w = wt;
                    int64_t ldw = kc;
                    if (W->type == V4F_TYPE_F32) {
                        w = (const float *)src + k0;
                        ldw = K;
                    } else {
                        const uint64_t off = (uint64_t)(k0 / KC) * kc_bytes;
                        for (int64_t r = 0; r < nr; r++)
                            k->dequant_row(src + (uint64_t)r * W->row_bytes + off, wt + r * kc, kc);
                    }
                    chunk(w, ldw, nr, xs, KC, nt, kc, ys + r0, CHUNK_ROWS, k0 > 0);
                }
            }
            for (int64_t t = 0; t < nt; t++)
                memcpy(y + t * ldy + g0, ys + t * CHUNK_ROWS, (size_t)gn * sizeof(float));
        }
    }
    return true;
}

/* v4f_cpu_matmul_st; xp: the planes of X (n == 1, a type with dot_planes)
 * or NULL */
static void matmul_rows(const v4f_cpu_mat *W, const float *X, int64_t ldx, int64_t n, float *Y,
                        int64_t ldy, float *tile, int64_t tile_floats, const void *xp) {
    const v4f_quant_kernels *k = v4f_quant_kernels_get(W->type);
    V4F_ASSERT(k != NULL);
    if (xp) {
        for (int64_t r = 0; r < W->n_out; r++)
            Y[r] = k->dot_planes((const uint8_t *)W->data + (uint64_t)r * W->row_bytes, xp, W->n_in);
        return;
    }
    if (n == 1 && k->dot_f32) {
        for (int64_t r = 0; r < W->n_out; r++)
            Y[r] = k->dot_f32((const uint8_t *)W->data + (uint64_t)r * W->row_bytes, X, W->n_in);
        return;
    }
    if (v4f_cpu_gemm_chunk_get() && matmul_rows_chunked(W, X, ldx, n, Y, ldy, tile, tile_floats, k)) return;
    v4f_cpu_gemm_tile_fn gemm = v4f_cpu_gemm_tile_get();
    for (int64_t r0 = 0; r0 < W->n_out; r0 += V4F_CPU_TILE_ROWS) {
        int64_t nr = W->n_out - r0 < V4F_CPU_TILE_ROWS ? W->n_out - r0 : V4F_CPU_TILE_ROWS;
        const float *w = tile;
        if (W->type == V4F_TYPE_F32) {
            w = (const float *)((const uint8_t *)W->data + (uint64_t)r0 * W->row_bytes);
        } else {
            for (int64_t r = 0; r < nr; r++)
                k->dequant_row((const uint8_t *)W->data + (uint64_t)(r0 + r) * W->row_bytes,
                               tile + r * W->n_in, W->n_in);
        }
        gemm(w, nr, X, ldx, n, W->n_in, Y + r0, ldy);
    }
}

void v4f_cpu_matmul_st(const v4f_cpu_mat *W, const float *X, int64_t ldx, int64_t n, float *Y,
                       int64_t ldy, float *tile) {
    matmul_rows(W, X, ldx, n, Y, ldy, tile, (int64_t)V4F_CPU_TILE_ROWS * W->n_in, NULL);
}

/* Prefill: a task dequantizes its row tile once per TOK_BLOCK tokens (256:
 * +10% GFLOP/s over 64 on the Xeon host's dense projections at 2048
 * tokens, docs/PERF_NOTES.md; results do not depend on it). */
#define TOK_BLOCK 256
#define MULTI_BATCH 64

typedef struct {
    v4f_cpu_mm mm;
    int64_t rows_per_task, n_row_tasks, task0, n_tasks;
    const void *xp; /* planes of mm.X (decode, dot_planes) or NULL */
    int split;      /* index of the split that writes xp (-1: none) */
} mm_plan;

/* one X to split into planes: x[0..n) -> dst */
typedef struct {
    const float *x;
    int64_t n;
    uint8_t *dst;
} mm_split;

typedef struct {
    v4f_cpu_ctx *c;
    mm_plan *plans;
    int n;
    mm_split *splits;
    int n_splits; /* tasks [0, n_splits) split, the row tasks follow */
    _Atomic int ready[MULTI_BATCH];
} multi_job;

/* Decode (n == 1) task sizing: DECODE_TASKS_PER_THREAD contiguous row runs
 * per thread and matrix (load balance), each at least DECODE_MIN_ROWS rows or
 * DECODE_MIN_TASK_BYTES, whichever is fewer rows: the wide-row HC mixers
 * (24 rows of 32 KiB) then spread over 12 threads instead of 2, every other
 * matrix keeps the 16-row minimum. (Sizing by equal bytes over a whole
 * multi-matmul region, 8 tasks per thread, was tried: not better on the
 * Xeon host, see docs/PERF_NOTES.md.) */
#define DECODE_TASKS_PER_THREAD 4
#define DECODE_MIN_ROWS 16
#define DECODE_MIN_TASK_BYTES (64 * 1024)

static void plan_mm(const v4f_cpu_mm *m, int64_t nt, int64_t task0, mm_plan *p) {
    p->mm = *m;
    p->xp = NULL;
    int64_t n_out = m->W->n_out;
    if (m->n == 1) {
        int64_t per = (n_out + nt * DECODE_TASKS_PER_THREAD - 1) / (nt * DECODE_TASKS_PER_THREAD);
        int64_t rb = m->W->row_bytes ? (int64_t)m->W->row_bytes : 1;
        int64_t min_rows = (DECODE_MIN_TASK_BYTES + rb - 1) / rb;
        if (min_rows > DECODE_MIN_ROWS) min_rows = DECODE_MIN_ROWS;
        p->rows_per_task = per < min_rows ? min_rows : per;
    } else {
        /* prefill: row tiles x token blocks; a task dequantizes its rows once
         * per token block */
        int64_t n_tok_tasks = (m->n + TOK_BLOCK - 1) / TOK_BLOCK;
        int64_t per = V4F_CPU_TILE_ROWS;
        while (per < 512 && (n_out / (per * 2)) * n_tok_tasks >= 8 * nt) per *= 2;
        p->rows_per_task = per;
    }
    p->n_row_tasks = (n_out + p->rows_per_task - 1) / p->rows_per_task;
    p->task0 = task0;
    p->n_tasks = p->n_row_tasks * ((m->n + TOK_BLOCK - 1) / TOK_BLOCK);
}

static void multi_task(void *ctx, int64_t task, int thread) {
    multi_job *mj = ctx;
    if (task < mj->n_splits) {
        const mm_split *sp = &mj->splits[task];
        v4f_quantize_planes(sp->x, sp->dst, sp->n);
        atomic_store_explicit(&mj->ready[task], 1, memory_order_release);
        return;
    }
    task -= mj->n_splits;
    int i = 0;
    while (i + 1 < mj->n && task >= mj->plans[i + 1].task0) i++;
    const mm_plan *j = &mj->plans[i];
    task -= j->task0;
    int64_t rt = task % j->n_row_tasks, tt = task / j->n_row_tasks;
    int64_t r0 = rt * j->rows_per_task;
    int64_t nr = j->mm.W->n_out - r0 < j->rows_per_task ? j->mm.W->n_out - r0 : j->rows_per_task;
    int64_t t0 = tt * TOK_BLOCK;
    int64_t nt = j->mm.n - t0 < TOK_BLOCK ? j->mm.n - t0 : TOK_BLOCK;
    v4f_cpu_mat sub = v4f_cpu_mat_rows(j->mm.W, r0, nr);
    if (j->split >= 0) /* its split task was claimed before this one: it is running or done */
        while (!atomic_load_explicit(&mj->ready[j->split], memory_order_acquire)) v4f_cpu_relax();
    matmul_rows(&sub, j->mm.X + t0 * j->mm.ldx, j->mm.ldx, nt, j->mm.Y + t0 * j->mm.ldy + r0, j->mm.ldy,
                mj->c->tile[thread], tile_floats(mj->c), j->xp);
}

/* Decode matvecs of types with a plane kernel: each distinct X (same
 * pointer and n_in) gets a place in the ctx scratch and one split (returned
 * in splits, to run before the row tasks read it); an X whose planes no
 * longer fit keeps the f32 path. Returns the number of splits. */
static int plan_planes(v4f_cpu_ctx *c, mm_plan *plans, int np, mm_split *splits) {
    int ns = 0;
    for (int i = 0; i < np; i++) plans[i].split = -1;
    if (!c->planes_types) return 0;
    size_t used = 0;
    for (int i = 0; i < np; i++) {
        const v4f_cpu_mm *m = &plans[i].mm;
        const v4f_quant_kernels *k = v4f_quant_kernels_get(m->W->type);
        if (m->n != 1 || !k || !k->dot_planes || m->W->type >= 64 || !((c->planes_types >> m->W->type) & 1))
            continue;
        for (int j = 0; j < i && !plans[i].xp; j++)
            if (plans[j].xp && plans[j].mm.X == m->X && plans[j].mm.W->n_in == m->W->n_in) {
                plans[i].xp = plans[j].xp;
                plans[i].split = plans[j].split;
            }
        if (plans[i].xp) continue;
        const size_t need = (v4f_planes_bytes(m->W->n_in) + 63) & ~(size_t)63;
        if (used + need > c->planes_cap) continue;
        splits[ns] = (mm_split){m->X, m->W->n_in, c->planes + used};
        plans[i].xp = c->planes + used;
        plans[i].split = ns++;
        used += need;
    }
    return ns;
}

void v4f_cpu_matmul_multi(v4f_cpu_ctx *c, const v4f_cpu_mm *mms, int n_mm) {
    for (int b = 0; b < n_mm; b += MULTI_BATCH) {
        int nb = n_mm - b < MULTI_BATCH ? n_mm - b : MULTI_BATCH;
        mm_plan plans[MULTI_BATCH];
        double macs = 0;
        int np = 0;
        int64_t tasks = 0;
        for (int i = 0; i < nb; i++) {
            const v4f_cpu_mm *m = &mms[b + i];
            if (m->n <= 0 || m->W->n_out <= 0) continue;
            V4F_ASSERT(m->W->n_in <= c->max_n_in || m->n == 1);
            macs += (double)m->W->n_out * (double)m->W->n_in * (double)m->n;
            plan_mm(m, c->n_threads, tasks, &plans[np]);
            tasks += plans[np].n_tasks;
            np++;
        }
        if (np == 0) continue;
        mm_split splits[MULTI_BATCH];
        const int ns = plan_planes(c, plans, np, splits);
        if (macs < V4F_CPU_INLINE_MACS) {
            /* too small to pay for waking the pool */
            for (int i = 0; i < ns; i++) v4f_quantize_planes(splits[i].x, splits[i].dst, splits[i].n);
            for (int i = 0; i < np; i++)
                matmul_rows(plans[i].mm.W, plans[i].mm.X, plans[i].mm.ldx, plans[i].mm.n, plans[i].mm.Y,
                            plans[i].mm.ldy, c->tile[0], tile_floats(c), plans[i].xp);
            continue;
        }
        multi_job mj = {.c = c, .plans = plans, .n = np, .splits = splits, .n_splits = ns};
        for (int i = 0; i < ns; i++) atomic_init(&mj.ready[i], 0);
        v4f_pool_run(c->pool, ns + tasks, multi_task, &mj);
    }
}

void v4f_cpu_matmul(v4f_cpu_ctx *c, const v4f_cpu_mat *W, const float *X, int64_t ldx, int64_t n,
                    float *Y, int64_t ldy) {
    v4f_cpu_mm m = {W, X, ldx, n, Y, ldy};
    v4f_cpu_matmul_multi(c, &m, 1);
}

/* ---- FMA peak probe ------------------------------------------------------- */

#define FMA_PROBE_CHAINS 12
#define FMA_PROBE_ITERS 100000 /* per task: 1.2M vector FMAs, ~0.5 ms */

static float fma_loop_scalar(int64_t iters) {
    float a[FMA_PROBE_CHAINS];
    for (int i = 0; i < FMA_PROBE_CHAINS; i++) a[i] = (float)i * 0.01f;
    for (int64_t it = 0; it < iters; it++)
        for (int i = 0; i < FMA_PROBE_CHAINS; i++) a[i] = fmaf(a[i], 0.999f, 0.001f);
    float s = 0;
    for (int i = 0; i < FMA_PROBE_CHAINS; i++) s += a[i];
    return s;
}

typedef struct {
    float (*loop)(int64_t);
    volatile float sink[256];
} fma_probe;

static void fma_probe_task(void *ctx, int64_t task, int thread) {
    fma_probe *p = ctx;
    p->sink[thread & 255] += p->loop(FMA_PROBE_ITERS);
}

double v4f_cpu_fma_peak_gflops(v4f_pool *pool, double seconds, int *lanes) {
    v4f_isa isa = v4f_isa_best();
    fma_probe p = {0};
    int w = 1;
    p.loop = fma_loop_scalar;
    if (isa >= V4F_ISA_AVX512) {
        p.loop = v4f_cpu_fma_loop_avx512;
        w = 16;
    } else if (isa >= V4F_ISA_AVX2) {
        p.loop = v4f_cpu_fma_loop_avx2;
        w = 8;
    }
    if (lanes) *lanes = w;
    int T = v4f_pool_size(pool);
    int64_t tasks = 4 * (int64_t)T; /* several per thread: dynamic claiming evens them out */
    v4f_pool_run(pool, tasks, fma_probe_task, &p); /* warm-up (clocks, wake-up) */
    double best = 0, t_end = v4f_time_s() + seconds;
    do {
        double t0 = v4f_time_s();
        v4f_pool_run(pool, tasks, fma_probe_task, &p);
        double dt = v4f_time_s() - t0;
        double gf = (double)tasks * FMA_PROBE_ITERS * FMA_PROBE_CHAINS * w * 2.0 / dt * 1e-9;
        if (gf > best) best = gf;
    } while (v4f_time_s() < t_end);
    return best;
}

/* ---- norms ----------------------------------------------------------------- */

/* Eight independent double chains (element i into chain i % 8, combined
 * pairwise at the end): the single-chain loop was bound by the add latency
 * (4 cycles per element; 64 heads x 512 q norms and the 16K-element HC
 * norms cost ~6 ms per decoded token at 43 layers). Fixed order, so every
 * caller (prefill, decode, any thread count) gets the same value. */
double v4f_cpu_sumsq_f64(const float *x, int64_t n) {
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        a0 += (double)x[i + 0] * (double)x[i + 0];
        a1 += (double)x[i + 1] * (double)x[i + 1];
        a2 += (double)x[i + 2] * (double)x[i + 2];
        a3 += (double)x[i + 3] * (double)x[i + 3];
        a4 += (double)x[i + 4] * (double)x[i + 4];
        a5 += (double)x[i + 5] * (double)x[i + 5];
        a6 += (double)x[i + 6] * (double)x[i + 6];
        a7 += (double)x[i + 7] * (double)x[i + 7];
    }
    for (; i < n; i++) a0 += (double)x[i] * (double)x[i];
    return ((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7));
}

void v4f_cpu_rmsnorm(const float *x, const float *w, float *y, int64_t n, float eps) {
    double ss = v4f_cpu_sumsq_f64(x, n);
    float r = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
    if (w)
        for (int64_t i = 0; i < n; i++) y[i] = w[i] * (x[i] * r);
    else
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * r;
}

/* ---- RoPE ------------------------------------------------------------------ */

static double yarn_corr_dim(double n_rot_d, double rot, double base, double orig) {
    return n_rot_d * log(orig / (rot * 2.0 * M_PI)) / (2.0 * log(base));
}

void v4f_rope_yarn_range(const v4f_rope_params *p, int n_rot, int *low, int *high) {
    if (p->orig_ctx == 0) {
        *low = *high = 0;
        return;
    }
    double lo = floor(yarn_corr_dim(n_rot, p->beta_fast, p->base, (double)p->orig_ctx));
    double hi = ceil(yarn_corr_dim(n_rot, p->beta_slow, p->base, (double)p->orig_ctx));
    *low = lo < 0 ? 0 : (int)lo;
    *high = hi > n_rot - 1 ? n_rot - 1 : (int)hi;
}

void v4f_rope_freqs(const v4f_rope_params *p, int n_rot, float *freqs) {
    int half = n_rot / 2;
    int low = 0, high = 0;
    v4f_rope_yarn_range(p, n_rot, &low, &high);
    for (int i = 0; i < half; i++) {
        float e = (float)(2 * i) / (float)n_rot;
        float f = (float)(1.0 / (double)powf(p->base, e));
        if (p->orig_ctx > 0) {
            float lo = (float)low, hi = (float)high;
            if (lo == hi) hi += 0.001f;
            float ramp = ((float)i - lo) / (hi - lo);
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            float smooth = 1.0f - ramp;
            f = f / p->factor * (1.0f - smooth) + f * smooth;
        }
        freqs[i] = f;
    }
}

void v4f_cpu_rope_cs(const float *freqs, int n_rot, int64_t pos, float *cs) {
    for (int i = 0; i < n_rot / 2; i++) {
        float theta = (float)pos * freqs[i];
        cs[2 * i] = (float)cos((double)theta);
        cs[2 * i + 1] = (float)sin((double)theta);
    }
}

void v4f_cpu_rope_tail_cs(float *x, int64_t head_dim, int n_rot, const float *cs, bool inverse) {
    float *t = x + head_dim - n_rot;
    for (int i = 0; i < n_rot / 2; i++) {
        float c = cs[2 * i], s = inverse ? -cs[2 * i + 1] : cs[2 * i + 1];
        float a = t[2 * i], b = t[2 * i + 1];
        t[2 * i] = a * c - b * s;
        t[2 * i + 1] = a * s + b * c;
    }
}

void v4f_cpu_rope_tail(float *x, int64_t head_dim, int n_rot, const float *freqs, int64_t pos,
                       bool inverse) {
    float cs[V4F_ROPE_MAX_ROT];
    V4F_ASSERT(n_rot <= V4F_ROPE_MAX_ROT);
    v4f_cpu_rope_cs(freqs, n_rot, pos, cs);
    v4f_cpu_rope_tail_cs(x, head_dim, n_rot, cs, inverse);
}

/* ---- FP8 / FP4 ------------------------------------------------------------- */

/* ceil(log2(v)) from the float's bits (kernel.py fast_log2_ceil). */
static int fast_log2_ceil(float v) {
    uint32_t b;
    memcpy(&b, &v, sizeof b);
    int e = (int)((b >> 23) & 0xFF);
    return e - 127 + ((b & 0x7FFFFF) != 0 ? 1 : 0);
}

/* E4M3 rounding of |v| (clamped to 448) to nearest, ties to even: below
 * 2^-6 in steps of 2^-9 (k = lrintf(|v| 512), 0..8), else the float's
 * significand to 4 bits (k in [8, 16]; 16 carries into the exponent). On
 * bits, without libm calls (the frexpf / ldexpf / division form took ~30 ns
 * per value: an 8K-token GPU snapshot spent ~0.7 s encoding its rows;
 * docs/PERF_NOTES.md, session 15). tests/unit/test_ops.c checks both
 * against that form. */
static inline uint32_t fp8_abs_bits(float v, uint32_t *sign) {
    uint32_t b;
    memcpy(&b, &v, sizeof b);
    *sign = b & 0x80000000u;
    b &= 0x7fffffffu;
    return b > 0x43e00000u ? 0x43e00000u : b; /* 448 */
}

static inline uint32_t fp8_sig4(uint32_t b) {
    const uint32_t S = (b & 0x7fffffu) | 0x800000u;
    return (S + 0x7ffffu + ((S >> 20) & 1u)) >> 20;
}

float v4f_fp8_e4m3_round(float v) {
    uint32_t sign, b = fp8_abs_bits(v, &sign), rb;
    if (b < 0x3c800000u) { /* 2^-6 */
        float a, r;
        memcpy(&a, &b, sizeof a);
        r = (float)lrintf(a * 512.0f) * 0x1p-9f;
        memcpy(&rb, &r, sizeof rb);
    } else {
        rb = (b & 0x7f800000u) + ((fp8_sig4(b) - 8u) << 20);
    }
    rb |= sign;
    float r;
    memcpy(&r, &rb, sizeof r);
    return r;
}

/* The E4M3 code of v4f_fp8_e4m3_round(v): sign, exponent field e + 7, 3
 * mantissa bits (subnormals: the count of 2^-9 steps). */
static inline uint8_t fp8_encode1(float v) {
    uint32_t sign, b = fp8_abs_bits(v, &sign);
    const uint8_t s = sign ? 0x80 : 0;
    if (b < 0x3c800000u) {
        float a;
        memcpy(&a, &b, sizeof a);
        return (uint8_t)(s | (uint8_t)lrintf(a * 512.0f));
    }
    return (uint8_t)(s | ((((b >> 23) - 120u) << 3) + fp8_sig4(b) - 8u));
}

float v4f_fp8_e4m3_to_f32(uint8_t code) {
    int e = (code >> 3) & 15, m = code & 7;
    float a = e == 0 ? ldexpf((float)m, -9) : ldexpf(1.0f + (float)m / 8.0f, e - 7);
    return (code & 0x80) ? -a : a;
}

static int fp8_block_exp(const float *x, int64_t n) {
    float amax = 0;
    for (int64_t i = 0; i < n; i++) amax = fmaxf(amax, fabsf(x[i]));
    amax = fmaxf(amax, 1e-4f);
    return fast_log2_ceil(amax * (1.0f / 448.0f));
}

void v4f_cpu_fp8_roundtrip(float *x, int64_t n) {
    for (int64_t b = 0; b < n; b += 64) {
        int64_t bn = n - b < 64 ? n - b : 64; /* a short last block if n % 64 != 0 */
        int e = fp8_block_exp(x + b, bn);
        float s = ldexpf(1.0f, e), inv = ldexpf(1.0f, -e);
        for (int64_t i = 0; i < bn; i++) {
            float v = x[b + i] * inv;
            v = v > 448.0f ? 448.0f : v < -448.0f ? -448.0f : v;
            x[b + i] = v4f_fp8_e4m3_round(v) * s;
        }
    }
}

void v4f_fp8_encode_block64(const float *x, uint8_t *codes, int8_t *exp) {
    int e = fp8_block_exp(x, 64);
    float inv = ldexpf(1.0f, -e);
    for (int i = 0; i < 64; i++) {
        float v = x[i] * inv;
        codes[i] = fp8_encode1(v); /* clamps to +-448 itself */
    }
    *exp = (int8_t)e;
}

static float g_fp8_lut[256];
static pthread_once_t g_fp8_once = PTHREAD_ONCE_INIT;

static void fp8_lut_init(void) {
    for (int c = 0; c < 256; c++) g_fp8_lut[c] = v4f_fp8_e4m3_to_f32((uint8_t)c);
}

void v4f_fp8_decode_block64(const uint8_t *codes, int8_t exp, float *y) {
    pthread_once(&g_fp8_once, fp8_lut_init);
    float s = ldexpf(1.0f, exp); /* exact power of two: the product is exact */
    for (int i = 0; i < 64; i++) y[i] = g_fp8_lut[codes[i]] * s;
}

void v4f_cpu_hadamard(float *x, int64_t n) {
    for (int64_t h = 1; h < n; h *= 2)
        for (int64_t i = 0; i < n; i += 2 * h)
            for (int64_t j = i; j < i + h; j++) {
                float a = x[j], b = x[j + h];
                x[j] = a + b;
                x[j + h] = a - b;
            }
    float s = (float)(1.0 / sqrt((double)n));
    for (int64_t i = 0; i < n; i++) x[i] *= s;
}

/* the values of the 16 E2M1 codes, sign bit 8 included (-0 for code 8) */
static const float k_fp4[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

/* Index into k_fp4 of |v| (clamped to 6) rounded to nearest, ties to
 * even, in steps of 0.5 / 1 / 2 below 2 / 4 / 6: below 1 the count of 0.5
 * steps, else the float's significand to 2 bits (k in [2, 4]; 4 carries into
 * the next binade's index), exponent field e + 1. Without branches: random
 * rows made a three-way branch cost ~13 ns per value. */
static inline uint8_t fp4_index(float v) {
    uint32_t b;
    memcpy(&b, &v, sizeof b);
    b &= 0x7fffffffu;
    b = b > 0x40c00000u ? 0x40c00000u : b; /* 6 */
    float a;
    memcpy(&a, &b, sizeof a);
    const uint32_t sub = (uint32_t)lrintf(a * 2.0f), S = (b & 0x7fffffu) | 0x800000u;
    const uint32_t norm = (((b >> 23) - 126u) << 1) + ((S + 0x1fffffu + ((S >> 22) & 1u)) >> 22) - 2u;
    return (uint8_t)(b < 0x3f800000u ? sub : norm); /* 1 */
}

static inline uint8_t fp4_code(float v) { return (uint8_t)((signbit(v) ? 8 : 0) | fp4_index(v)); }

float v4f_fp4_e2m1_round(float v) { return k_fp4[fp4_code(v)]; }

static int fp4_block_exp(const float *x, int64_t n) {
    float amax = 0;
    for (int64_t i = 0; i < n; i++) amax = fmaxf(amax, fabsf(x[i]));
    amax = fmaxf(amax, 6.0f * 0x1p-126f);
    return fast_log2_ceil(amax * (1.0f / 6.0f));
}

void v4f_cpu_fp4_roundtrip(float *x, int64_t n) {
    for (int64_t b = 0; b < n; b += 32) {
        int64_t bn = n - b < 32 ? n - b : 32;
        int e = fp4_block_exp(x + b, bn);
        float s = ldexpf(1.0f, e), inv = ldexpf(1.0f, -e);
        for (int64_t i = 0; i < bn; i++) {
            float v = x[b + i] * inv;
            v = v > 6.0f ? 6.0f : v < -6.0f ? -6.0f : v;
            x[b + i] = v4f_fp4_e2m1_round(v) * s;
        }
    }
}

void v4f_fp4_encode_block32(const float *x, uint8_t *codes, int8_t *exp) {
    int e = fp4_block_exp(x, 32);
    float inv = ldexpf(1.0f, -e);
    for (int i = 0; i < 16; i++) {
        float v0 = x[2 * i] * inv, v1 = x[2 * i + 1] * inv;
        uint8_t c0 = fp4_code(v0), c1 = fp4_code(v1);
        codes[i] = (uint8_t)(c0 | (c1 << 4));
    }
    *exp = (int8_t)e;
}

/* (-a) s == -(a s): the signed table gives the old decode's values */
void v4f_fp4_decode_block32(const uint8_t *codes, int8_t exp, float *y) {
    float s = ldexpf(1.0f, exp);
    for (int i = 0; i < 16; i++) {
        y[2 * i] = k_fp4[codes[i] & 15] * s;
        y[2 * i + 1] = k_fp4[codes[i] >> 4] * s;
    }
}

/* ---- hyper-connections ------------------------------------------------------ */

static float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

void v4f_cpu_hc_split_sinkhorn(const float *mix, const float *scale3, const float *base, int H,
                               int iters, float eps, float *pre, float *post, float *comb) {
    for (int j = 0; j < H; j++) pre[j] = sigmoidf_(mix[j] * scale3[0] + base[j]) + eps;
    for (int j = 0; j < H; j++) post[j] = 2.0f * sigmoidf_(mix[H + j] * scale3[1] + base[H + j]);
    for (int j = 0; j < H * H; j++) comb[j] = mix[2 * H + j] * scale3[2] + base[2 * H + j];
    float rs[V4F_CPU_MAX_HC_], cs[V4F_CPU_MAX_HC_];
    V4F_ASSERT(H <= V4F_CPU_MAX_HC_);
    for (int j = 0; j < H; j++) {
        float m = -INFINITY;
        for (int k = 0; k < H; k++) m = fmaxf(m, comb[j * H + k]);
        float s = 0;
        for (int k = 0; k < H; k++) {
            comb[j * H + k] = expf(comb[j * H + k] - m);
            s += comb[j * H + k];
        }
        rs[j] = s;
    }
    for (int j = 0; j < H; j++)
        for (int k = 0; k < H; k++) comb[j * H + k] = comb[j * H + k] / rs[j] + eps;
    for (int k = 0; k < H; k++) {
        cs[k] = 0;
        for (int j = 0; j < H; j++) cs[k] += comb[j * H + k];
    }
    for (int j = 0; j < H; j++)
        for (int k = 0; k < H; k++) comb[j * H + k] /= (cs[k] + eps);
    for (int it = 0; it < iters - 1; it++) {
        for (int j = 0; j < H; j++) {
            rs[j] = 0;
            for (int k = 0; k < H; k++) rs[j] += comb[j * H + k];
        }
        for (int j = 0; j < H; j++)
            for (int k = 0; k < H; k++) comb[j * H + k] /= (rs[j] + eps);
        for (int k = 0; k < H; k++) {
            cs[k] = 0;
            for (int j = 0; j < H; j++) cs[k] += comb[j * H + k];
        }
        for (int j = 0; j < H; j++)
            for (int k = 0; k < H; k++) comb[j * H + k] /= (cs[k] + eps);
    }
}

/* y[i] += a * x[i] with y and x not overlapping (restrict: GCC vectorizes
 * it at -O2 without an alias check; per-element arithmetic unchanged) */
static void axpy_nr(float *restrict y, float a, const float *restrict x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

void v4f_cpu_hc_weighted_sum_generic(const float *X, const float *w, int H, int64_t d, float *y) {
    /* per element: ((0 + w0 x0) + w1 x1) + ..., stream by stream (vectorizes) */
    for (int64_t i = 0; i < d; i++) y[i] = 0.0f;
    for (int h = 0; h < H; h++) axpy_nr(y, w[h], X + h * d, d);
}

/* y[i] = a * o[i] + y[i] (no overlap; vectorizes) */
static void axpy_post(float *restrict y, float a, const float *restrict o, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = a * o[i] + y[i];
}

void v4f_cpu_hc_post_generic(const float *o, const float *X, const float *post, const float *comb, int H,
                             int64_t d, float *Xout) {
    /* Xout[j][i] = post[j] * o[i] + (sum over k in order of comb[k][j] * X[k][i]) */
    for (int j = 0; j < H; j++) {
        float *y = Xout + j * d;
        for (int64_t i = 0; i < d; i++) y[i] = 0.0f;
        for (int k = 0; k < H; k++) axpy_nr(y, comb[k * H + j], X + k * d, d);
        axpy_post(y, post[j], o, d);
    }
}

/* the per-ISA one-pass versions (bit-identical, ops_internal.h) */
void v4f_cpu_hc_weighted_sum(const float *X, const float *w, int H, int64_t d, float *y) {
    pthread_once(&g_gemm_once, gemm_pick);
    g_hc_wsum(X, w, H, d, y);
}

void v4f_cpu_hc_post(const float *o, const float *X, const float *post, const float *comb, int H,
                     int64_t d, float *Xout) {
    pthread_once(&g_gemm_once, gemm_pick);
    g_hc_post(o, X, post, comb, H, d, Xout);
}

void v4f_cpu_hc_head_weights(const float *mix, float scale, const float *base, int H, float eps,
                             float *w) {
    for (int h = 0; h < H; h++) w[h] = sigmoidf_(mix[h] * scale + base[h]) + eps;
}

/* ---- attention ---------------------------------------------------------------- */

void v4f_cpu_attn_sink2(const float *q, int64_t h0, int64_t h1, int64_t hd, const float *keys_a,
                        int64_t nka, const float *keys_b, int64_t nkb, const float *sinks,
                        float scale, float *out, float *sc) {
    /* S[i][h] = q_h . k_i for all heads of the range at once (GEMM tile
     * kernel: keys are loaded once per head block), then per head the sink
     * softmax, then o_h = sum_i p[i][h] k_i. sc: (nka + nkb) * (h1-h0). */
    int64_t nh = h1 - h0, nk = nka + nkb;
    v4f_cpu_gemm_tile_fn gemm = v4f_cpu_gemm_tile_get();
    gemm(q + h0 * hd, nh, keys_a, hd, nka, hd, sc, nh);
    if (nkb) gemm(q + h0 * hd, nh, keys_b, hd, nkb, hd, sc + nka * nh, nh);
    v4f_cpu_axpy_fn axpy = v4f_cpu_axpy_get();
    for (int64_t h = 0; h < nh; h++) {
        float m = sinks[h0 + h];
        for (int64_t i = 0; i < nk; i++) {
            float v = sc[i * nh + h] * scale;
            sc[i * nh + h] = v;
            m = fmaxf(m, v);
        }
        float den = expf(sinks[h0 + h] - m);
        for (int64_t i = 0; i < nk; i++) {
            float e = expf(sc[i * nh + h] - m);
            sc[i * nh + h] = e;
            den += e;
        }
        float inv = 1.0f / den;
        for (int64_t i = 0; i < nk; i++) sc[i * nh + h] *= inv;
    }
    memset(out + h0 * hd, 0, (size_t)(nh * hd) * sizeof(float));
    for (int64_t i = 0; i < nk; i++) {
        const float *k = i < nka ? keys_a + i * hd : keys_b + (i - nka) * hd;
        for (int64_t h = 0; h < nh; h++) axpy(out + (h0 + h) * hd, sc[i * nh + h], k, hd);
    }
}

void v4f_cpu_attn_sink(const float *q, int64_t h0, int64_t h1, int64_t hd, const float *keys,
                       int64_t nk, const float *sinks, float scale, float *out, float *sc) {
    v4f_cpu_attn_sink2(q, h0, h1, hd, keys, nk, NULL, 0, sinks, scale, out, sc);
}

void v4f_cpu_indexer_scores(const float *q, const float *w, int64_t nh, int64_t d,
                            const float *keys, int64_t nk, float *score) {
    for (int64_t c = 0; c < nk; c++) {
        const float *k = keys + c * d;
        float s = 0;
        for (int64_t h = 0; h < nh; h++) {
            float v = v4f_cpu_dot_f32(q + h * d, k, d);
            if (v > 0) s += w[h] * v;
        }
        score[c] = s;
    }
}

/* heap order: a is "worse" than b if lower score, or equal score and a
 * higher index (ties keep the lowest index) */
static bool topk_worse(const float *x, int32_t a, int32_t b) {
    return x[a] < x[b] || (x[a] == x[b] && a > b);
}

static void topk_sift_down(const float *x, int32_t *h, int64_t n, int64_t i) {
    for (;;) {
        int64_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && topk_worse(x, h[l], h[w])) w = l;
        if (r < n && topk_worse(x, h[r], h[w])) w = r;
        if (w == i) return;
        int32_t t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

int64_t v4f_cpu_topk(const float *x, int64_t n, int64_t k, int32_t *idx) {
    if (k > n) k = n;
    if (k <= 0) return 0;
    /* min-heap of the k best (root = the worst kept): O(n log k) */
    for (int64_t i = 0; i < k; i++) idx[i] = (int32_t)i;
    for (int64_t i = k / 2 - 1; i >= 0; i--) topk_sift_down(x, idx, k, i);
    for (int64_t i = k; i < n; i++) {
        /* a later index with an equal score never displaces (lowest index wins) */
        if (x[i] > x[idx[0]]) {
            idx[0] = (int32_t)i;
            topk_sift_down(x, idx, k, 0);
        }
    }
    qsort(idx, (size_t)k, sizeof *idx, cmp_i32);
    return k;
}

void v4f_cpu_compress_pool(const float *const *vals, const float *const *scores, int n_cand,
                           int64_t D, float *out) {
    for (int64_t j = 0; j < D; j++) {
        float m = -INFINITY;
        for (int c = 0; c < n_cand; c++)
            if (scores[c]) m = fmaxf(m, scores[c][j]);
        if (m == -INFINITY) {
            out[j] = 0;
            continue;
        }
        float den = 0, num = 0;
        for (int c = 0; c < n_cand; c++) {
            if (!scores[c]) continue;
            float e = expf(scores[c][j] - m);
            den += e;
            num += e * vals[c][j];
        }
        out[j] = num / den;
    }
}

/* ---- MoE ------------------------------------------------------------------------ */

void v4f_cpu_router(const float *logits, const float *bias, int64_t n_expert, int k,
                    const int32_t *hash_ids, bool norm, float scale, int32_t *ids, float *w) {
    /* scores are recomputed on the fly: sqrt(softplus(l)) */
#define SCORE(e) (sqrtf(logits[e] > 20.0f ? logits[e] : log1pf(expf(logits[e]))))
    if (hash_ids) {
        for (int i = 0; i < k; i++) ids[i] = hash_ids[i];
    } else {
        int cnt = 0;
        float sel[64];
        V4F_ASSERT(k <= 64);
        for (int64_t e = 0; e < n_expert; e++) {
            float v = SCORE(e) + (bias ? bias[e] : 0.0f);
            if (cnt == k) {
                if (!(v > sel[cnt - 1])) continue;
                cnt--;
            }
            int p = cnt;
            while (p > 0 && v > sel[p - 1]) {
                sel[p] = sel[p - 1];
                ids[p] = ids[p - 1];
                p--;
            }
            sel[p] = v;
            ids[p] = (int32_t)e;
            cnt++;
        }
    }
    float sum = 0;
    for (int i = 0; i < k; i++) {
        w[i] = SCORE(ids[i]);
        sum += w[i];
    }
#undef SCORE
    for (int i = 0; i < k; i++) {
        if (norm) w[i] /= sum;
        w[i] *= scale;
    }
}

void v4f_cpu_swiglu(const float *g, const float *u, int64_t n, float limit, float weight, float *h) {
    for (int64_t i = 0; i < n; i++) {
        float gv = g[i], uv = u[i];
        if (limit > 0) {
            uv = uv < -limit ? -limit : uv > limit ? limit : uv;
            gv = gv > limit ? limit : gv;
        }
        float s = gv / (1.0f + expf(-gv));
        h[i] = weight * (s * uv);
    }
}
