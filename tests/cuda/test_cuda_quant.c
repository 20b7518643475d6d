/*
 * test_cuda_quant.c - conformance test and bandwidth benchmark of the CUDA
 * weight-format kernels (src/backend/cuda/cuda_quant.cu), through the C API
 * of cuda_backend.h. Built and run by `make CUDA=1 test-cuda` (conformance)
 * and `make CUDA=1 bench-cuda` (--bench); needs a GPU.
 *
 * Conformance (with 3 x planes, 2, and 2 with plain weight copies): every
 * matvec (single and batched) and every row dequantizer
 * is compared with the CPU scalar reference (v4f_dequant_row_ref, dot in
 * double) on seeded random matrices: random block bytes with sane f16
 * scales, awkward sizes (n_out not a multiple of the rows per CTA, n_in of
 * 1..k blocks, F32/F16 n_in not a multiple of 8), padded row strides,
 * misaligned weights and x (the slow path), indirect matvecs through a
 * device table of pointers with device ids (one entry in pinned host-mapped
 * memory), and the decode shapes of the published model. Outputs are
 * NaN-poisoned before every launch. Metric: |y - y_ref| / (max|w_row| * sum|x|) <=
 * V4F_TOL_CUDA_MATVEC (docs/TOLERANCES.md, "## cuda"); dequantization must
 * be bit-exact. Exit status 0 only if every check passes.
 *
 * Benchmark (--bench): device copy bandwidth (cudaMemcpy D2D, 1 GiB, bytes
 * read + written), then per type the matvec bandwidth on 4096 x 32768
 * matrices and on the decode expert shapes (6 of a pool of 64 experts per
 * launch), rotating buffers so the 50 MB L2 cannot serve repeats; median of
 * device-event times of bursts of launches queued behind a blocker (device
 * throughput without host launch gaps), reported as a fraction of the copy
 * bandwidth. First the per-layer decode set (bench_layer: every weight
 * matvec of one layer, CUDA graphs over 3 weight copies), then the
 * single shapes. --hot times each group on one copy (weights L2-resident
 * where they fit), --no-evict-first with plain weight copies (no L2
 * evict-first hint). --profile runs one 4096 x 32768 matvec per type
 * (for ncu).
 *
 * Memory: host buffers malloc'd and freed per case; device buffers per case.
 * Threading: single-threaded.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_backend.h"
#include "cuda_test_util.h"
#include "backend/cuda/cuda_fwd.h"
#include "core/core.h"
#include "core/ggml_type.h"
#include "quant/quant.h"

/* f32 accumulation error bound relative to max|w| * sum|x|: see
 * docs/TOLERANCES.md "## cuda". */
#define V4F_TOL_CUDA_MATVEC 3e-5
/* With two int8 planes of x (v4f_cuda_set_x_planes): each x within
 * max|x_group| / (127 * 2 * 128) of its value, added per case as
 * V4F_X2_RESIDUAL * n_in * max|x| / sum|x| (a bound of sum |w_i| |r_i|
 * relative to max|w| * sum|x|) */
#define V4F_X2_RESIDUAL (1.0 / (127.0 * 2.0 * 128.0))

static int g_fail;
static int g_x_planes = 3; /* the context's setting for the running pass */
static double g_max_err[V4F_TYPE_COUNT];
static int g_cases[V4F_TYPE_COUNT];

/* ---- conformance ------------------------------------------------------------- */

typedef struct mcase {
    uint32_t type;
    int64_t n_in, n_out;
    uint64_t row_bytes;      /* stride */
    size_t w_off, x_off;     /* misalignment in bytes / floats */
    uint8_t *hw;             /* host matrix (n_out * row_bytes) */
    float *hx;               /* host x (n_in) */
} mcase;

static void mcase_make(mcase *m, uint32_t type, int64_t n_in, int64_t n_out, uint64_t pad, size_t w_off,
                       size_t x_off) {
    m->type = type, m->n_in = n_in, m->n_out = n_out;
    m->row_bytes = row_bytes_of(type, n_in) + pad;
    m->w_off = w_off, m->x_off = x_off;
    m->hw = v4f_xcalloc((size_t)(n_out * m->row_bytes) + 1, 1);
    for (int64_t r = 0; r < n_out; r++) fill_row(type, m->hw + r * m->row_bytes, n_in);
    m->hx = v4f_xmalloc((size_t)n_in * sizeof(float));
    for (int64_t i = 0; i < n_in; i++) m->hx[i] = rnd_f(-1, 1);
}

static void mcase_free(mcase *m) {
    free(m->hw);
    free(m->hx);
}

/* the types the kernels multiply with int8 planes of x (n_in <= 16384) */
static bool plane_type(uint32_t type) {
    return type == V4F_TYPE_Q8_0 || type == V4F_TYPE_Q2_K || type == V4F_TYPE_Q4_K || type == V4F_TYPE_IQ2_XXS;
}

/* Compare y (n_out floats from the device) with the reference. */
static void check_y(const mcase *m, const float *y, const char *what) {
    float *w = v4f_xmalloc((size_t)m->n_in * sizeof(float));
    double sx = 0, xmax = 0;
    for (int64_t i = 0; i < m->n_in; i++) {
        sx += fabs(m->hx[i]);
        if (fabs(m->hx[i]) > xmax) xmax = fabs(m->hx[i]);
    }
    /* the two-plane residual applies to the int8-plane types only */
    const double tol = V4F_TOL_CUDA_MATVEC + (g_x_planes == 2 && plane_type(m->type) && sx > 0
                                                  ? V4F_X2_RESIDUAL * (double)m->n_in * xmax / sx
                                                  : 0.0);
    double worst = 0;
    for (int64_t r = 0; r < m->n_out; r++) {
        v4f_dequant_row_ref(m->type, m->hw + r * m->row_bytes, w, m->n_in);
        double ref = 0, amax = 0;
        for (int64_t i = 0; i < m->n_in; i++) {
            ref += (double)w[i] * m->hx[i];
            if (fabs(w[i]) > amax) amax = fabs(w[i]);
        }
        const double scale = amax * sx > 1e-30 ? amax * sx : 1e-30;
        const double e = isfinite(y[r]) ? fabs(y[r] - ref) / scale : INFINITY;
        if (!(e <= tol)) {
            if (g_fail < 20)
                fprintf(stderr, "FAIL %s %s n_in %lld n_out %lld row %lld: got %.9g want %.9g (rel %.3g)\n", what,
                        v4f_type_name(m->type), (long long)m->n_in, (long long)m->n_out, (long long)r, y[r], ref, e);
            g_fail++;
        }
        if (e > worst) worst = e;
    }
    if (worst > g_max_err[m->type]) g_max_err[m->type] = worst;
    g_cases[m->type]++;
    free(w);
}

static void upload_case(v4f_cuda *c, const mcase *m, void **dw, float **dx) {
    TRY(v4f_cuda_alloc(c, m->w_off + (size_t)(m->n_out * m->row_bytes), dw, err));
    TRY(v4f_cuda_upload(c, (uint8_t *)*dw + m->w_off, m->hw, (size_t)(m->n_out * m->row_bytes), err));
    void *x = NULL;
    TRY(v4f_cuda_alloc(c, (m->x_off + (size_t)m->n_in) * sizeof(float), &x, err));
    *dx = (float *)x + m->x_off;
    TRY(v4f_cuda_upload(c, *dx, m->hx, (size_t)m->n_in * sizeof(float), err));
}

static void run_single(v4f_cuda *c, uint32_t type, int64_t n_in, int64_t n_out, uint64_t pad, size_t w_off,
                       size_t x_off) {
    mcase m;
    mcase_make(&m, type, n_in, n_out, pad, w_off, x_off);
    void *dw;
    float *dx;
    upload_case(c, &m, &dw, &dx);
    void *dy;
    TRY(v4f_cuda_alloc(c, (size_t)n_out * sizeof(float), &dy, err));
    TRY(v4f_cuda_memset(c, dy, 0xff, (size_t)n_out * sizeof(float), err)); /* NaN poison */
    const v4f_cuda_mat w = {(uint8_t *)dw + w_off, type, n_in, n_out, m.row_bytes};
    TRY(v4f_cuda_matvec(c, &w, dx, dy, err));
    float *y = v4f_xmalloc((size_t)n_out * sizeof(float));
    TRY(v4f_cuda_download(c, y, dy, (size_t)n_out * sizeof(float), err));
    check_y(&m, y, "matvec");

    /* dequantize rows [row0, n_out): bit-exact */
    const int64_t row0 = n_out / 3, nr = n_out - row0;
    void *dd;
    TRY(v4f_cuda_alloc(c, (size_t)(nr * n_in) * sizeof(float), &dd, err));
    TRY(v4f_cuda_memset(c, dd, 0xff, (size_t)(nr * n_in) * sizeof(float), err));
    TRY(v4f_cuda_dequant_rows(c, &w, row0, nr, dd, err));
    float *got = v4f_xmalloc((size_t)(nr * n_in) * sizeof(float));
    float *want = v4f_xmalloc((size_t)n_in * sizeof(float));
    TRY(v4f_cuda_download(c, got, dd, (size_t)(nr * n_in) * sizeof(float), err));
    for (int64_t r = 0; r < nr; r++) {
        v4f_dequant_row_ref(type, m.hw + (row0 + r) * m.row_bytes, want, n_in);
        if (memcmp(want, got + r * n_in, (size_t)n_in * sizeof(float)) != 0) {
            if (g_fail < 20)
                fprintf(stderr, "FAIL dequant %s n_in %lld row %lld differs from the reference\n", v4f_type_name(type),
                        (long long)n_in, (long long)(row0 + r));
            g_fail++;
            break;
        }
    }
    free(got);
    free(want);
    free(y);
    v4f_cuda_free(c, dd);
    v4f_cuda_free(c, dy);
    v4f_cuda_free(c, dw);
    v4f_cuda_free(c, dx - m.x_off);
    mcase_free(&m);
}

/* 12 pairs like decode's gate/up of 6 experts: distinct matrices, n_out
 * (from n_out0) varying per pair, x shared by pairs (2i, 2i+1). */
static void run_batch(v4f_cuda *c, uint32_t type, int64_t n_in, int n, int64_t n_out0) {
    mcase m[V4F_CUDA_MATVEC_MAX_BATCH];
    void *dw[V4F_CUDA_MATVEC_MAX_BATCH], *dy[V4F_CUDA_MATVEC_MAX_BATCH];
    float *dx[V4F_CUDA_MATVEC_MAX_BATCH];
    const float *xs[V4F_CUDA_MATVEC_MAX_BATCH];
    float *ys[V4F_CUDA_MATVEC_MAX_BATCH];
    v4f_cuda_mat w[V4F_CUDA_MATVEC_MAX_BATCH];
    for (int i = 0; i < n; i++) {
        mcase_make(&m[i], type, n_in, n_out0 + 13 * i, 0, 0, 0);
        if (i & 1) memcpy(m[i].hx, m[i - 1].hx, (size_t)n_in * sizeof(float));
        upload_case(c, &m[i], &dw[i], &dx[i]);
        TRY(v4f_cuda_alloc(c, (size_t)m[i].n_out * sizeof(float), &dy[i], err));
        TRY(v4f_cuda_memset(c, dy[i], 0xff, (size_t)m[i].n_out * sizeof(float), err));
        w[i] = (v4f_cuda_mat){dw[i], type, n_in, m[i].n_out, m[i].row_bytes};
        xs[i] = (i & 1) ? dx[i - 1] : dx[i];
        ys[i] = dy[i];
    }
    TRY(v4f_cuda_matvec_batch(c, n, w, xs, ys, err));
    for (int i = 0; i < n; i++) {
        float *y = v4f_xmalloc((size_t)m[i].n_out * sizeof(float));
        TRY(v4f_cuda_download(c, y, dy[i], (size_t)m[i].n_out * sizeof(float), err));
        check_y(&m[i], y, "matvec_batch");
        free(y);
    }
    /* x's planes made beforehand (the split a producer kernel shares, in
     * the natural order, which the IQ2_XXS kernel permutes itself) give
     * the same bits */
    if (n_in % 32 == 0 && n_in <= 16384) {
        const size_t qb = v4f_cuda_quant_row_bytes(n_in);
        uint8_t *dq[V4F_CUDA_MATVEC_MAX_BATCH];
        const uint8_t *xqs[V4F_CUDA_MATVEC_MAX_BATCH];
        float *yp[V4F_CUDA_MATVEC_MAX_BATCH];
        for (int i = 0; i < n; i++) {
            TRY(v4f_cuda_alloc(c, qb, (void **)&dq[i], err));
            TRY(v4f_cuda_quant_rows(c, V4F_TYPE_Q8_0, xs[i], 1, n_in, n_in, dq[i], err));
            xqs[i] = dq[i];
            TRY(v4f_cuda_alloc(c, (size_t)m[i].n_out * sizeof(float), (void **)&yp[i], err));
        }
        TRY(v4f_cuda_matvec_batch_planes(c, n, w, xs, xqs, yp, err));
        for (int i = 0; i < n; i++) {
            const size_t yb = (size_t)m[i].n_out * sizeof(float);
            float *a = v4f_xmalloc(yb), *b = v4f_xmalloc(yb);
            TRY(v4f_cuda_download(c, a, dy[i], yb, err));
            TRY(v4f_cuda_download(c, b, yp[i], yb, err));
            if (memcmp(a, b, yb) != 0) {
                fprintf(stderr, "FAIL %s n_in %lld pair %d: matvec_batch_planes differs from matvec_batch\n",
                        v4f_type_name(type), (long long)n_in, i);
                g_fail++;
            }
            free(a), free(b);
            v4f_cuda_free(c, dq[i]);
            v4f_cuda_free(c, yp[i]);
        }
    }
    for (int i = 0; i < n; i++) {
        v4f_cuda_free(c, dw[i]);
        v4f_cuda_free(c, dx[i]);
        v4f_cuda_free(c, dy[i]);
        mcase_free(&m[i]);
    }
}

/* Indirect (device-selected) matvecs, as the routed experts use them: a
 * table of NPOOL matrices per "layer" (two layers, the second a different
 * permutation of the same pool), one pool entry in pinned host-mapped
 * memory (overflow experts on small cards), device ids chosen so every
 * entry is used, awkward n_out and a padded stride; pairs with shared and
 * distinct x. The expected matrix is resolved on the host. */
/* A pool of expert matrices as the indirect kernels read them: n random
 * matrices, entry host_k in pinned host-mapped memory (an overflow expert
 * on a small card), the others on the device, behind a device table of two
 * halves (entry k, then entry perm2[k]: the "up" matrices of a second
 * layer or of gate/up pairs). */
#define XPOOL_MAX 8
typedef struct xpool {
    int n, host_k;
    mcase m[XPOOL_MAX];
    void *dw[XPOOL_MAX], *host, *dtab;
} xpool;

static void xpool_make(v4f_cuda *c, xpool *p, int n, int host_k, const int *perm2, uint32_t type, int64_t n_in,
                       int64_t n_out, uint64_t pad) {
    p->n = n, p->host_k = host_k, p->host = NULL;
    const void *ptrs[2 * XPOOL_MAX];
    for (int k = 0; k < n; k++) {
        mcase_make(&p->m[k], type, n_in, n_out, pad, 0, 0);
        const size_t bytes = (size_t)(n_out * p->m[k].row_bytes);
        if (k == host_k) {
            void *hdev = NULL;
            TRY(v4f_cuda_host_alloc(c, bytes, &p->host, &hdev, err));
            memcpy(p->host, p->m[k].hw, bytes);
            p->dw[k] = hdev;
        } else {
            TRY(v4f_cuda_alloc(c, bytes, &p->dw[k], err));
            TRY(v4f_cuda_upload(c, p->dw[k], p->m[k].hw, bytes, err));
        }
    }
    for (int k = 0; k < n; k++) ptrs[k] = p->dw[k], ptrs[n + k] = p->dw[perm2[k]];
    TRY(v4f_cuda_alloc(c, 2 * (size_t)n * sizeof(void *), &p->dtab, err));
    TRY(v4f_cuda_upload(c, p->dtab, ptrs, 2 * (size_t)n * sizeof(void *), err));
}

static void xpool_free(v4f_cuda *c, xpool *p) {
    v4f_cuda_free(c, p->dtab);
    for (int k = 0; k < p->n; k++) {
        if (k != p->host_k) v4f_cuda_free(c, p->dw[k]);
        mcase_free(&p->m[k]);
    }
    v4f_cuda_host_free(c, p->host);
}

#define IND_POOL 5
#define IND_PAIRS 9
_Static_assert(IND_POOL <= XPOOL_MAX, "pool size");
/* keep: NULL, or IND_PAIRS n_out floats that receive the outputs */
static void run_indirect(v4f_cuda *c, uint32_t type, int64_t n_in, int64_t n_out, uint64_t pad, size_t x_off,
                         float *keep) {
    static const int perm2[IND_POOL] = {3, 0, 4, 2, 1};
    xpool pool;
    xpool_make(c, &pool, IND_POOL, 2, perm2, type, n_in, n_out, pad); /* entry 2 host-mapped */
    const mcase *m = pool.m;
    void *dids;
    int32_t ids[6];
    for (int s = 0; s < 6; s++) ids[s] = (int32_t)(rnd_u64() % IND_POOL);
    ids[0] = 2, ids[3] = 2; /* the host-mapped one, in both layers' positions */
    TRY(v4f_cuda_alloc(c, sizeof ids, &dids, err));
    TRY(v4f_cuda_upload(c, dids, ids, sizeof ids, err));
    /* x: 3 distinct vectors, pair i uses x[i % 3] */
    float *hx[3], *dx[3];
    for (int k = 0; k < 3; k++) {
        hx[k] = v4f_xmalloc((size_t)n_in * sizeof(float));
        for (int64_t i = 0; i < n_in; i++) hx[k][i] = rnd_f(-1, 1);
        void *p;
        TRY(v4f_cuda_alloc(c, (x_off + (size_t)n_in) * sizeof(float), &p, err));
        dx[k] = (float *)p + x_off;
        TRY(v4f_cuda_upload(c, dx[k], hx[k], (size_t)n_in * sizeof(float), err));
    }
    int32_t tab_off[IND_PAIRS], slot[IND_PAIRS];
    const float *xs[IND_PAIRS];
    float *ys[IND_PAIRS];
    void *dy;
    TRY(v4f_cuda_alloc(c, (size_t)(IND_PAIRS * n_out) * sizeof(float), &dy, err));
    TRY(v4f_cuda_memset(c, dy, 0xff, (size_t)(IND_PAIRS * n_out) * sizeof(float), err));
    for (int i = 0; i < IND_PAIRS; i++) {
        tab_off[i] = (i & 1) ? IND_POOL : 0;
        slot[i] = (i * 5) % 6;
        xs[i] = dx[i % 3];
        ys[i] = (float *)dy + i * n_out;
    }
    const v4f_cuda_mat shape = {NULL, type, n_in, n_out, m[0].row_bytes};
    TRY(v4f_cuda_matvec_indirect(c, IND_PAIRS, &shape, (const void *const *)pool.dtab, (const int32_t *)dids, tab_off,
                                 slot, xs, ys, err));
    float *y = v4f_xmalloc((size_t)(IND_PAIRS * n_out) * sizeof(float));
    TRY(v4f_cuda_download(c, y, dy, (size_t)(IND_PAIRS * n_out) * sizeof(float), err));
    for (int i = 0; i < IND_PAIRS; i++) {
        const int e = tab_off[i] ? perm2[ids[slot[i]]] : ids[slot[i]];
        mcase t = m[e];
        t.hx = hx[i % 3];
        check_y(&t, y + i * n_out, "matvec_indirect");
    }
    if (keep) memcpy(keep, y, (size_t)(IND_PAIRS * n_out) * sizeof(float));
    /* x's planes made beforehand (natural order for every type) give the same bits */
    if (n_in % 32 == 0 && n_in <= 16384 && x_off % 4 == 0) {
        const size_t qb = v4f_cuda_quant_row_bytes(n_in), yb = (size_t)(IND_PAIRS * n_out) * sizeof(float);
        uint8_t *dq[3];
        const uint8_t *xqs[IND_PAIRS];
        for (int k = 0; k < 3; k++) {
            TRY(v4f_cuda_alloc(c, qb, (void **)&dq[k], err));
            TRY(v4f_cuda_quant_rows(c, V4F_TYPE_Q8_0, dx[k], 1, n_in, n_in, dq[k], err));
        }
        void *dy2;
        TRY(v4f_cuda_alloc(c, yb, &dy2, err));
        float *ys2[IND_PAIRS];
        for (int i = 0; i < IND_PAIRS; i++) xqs[i] = dq[i % 3], ys2[i] = (float *)dy2 + i * n_out;
        TRY(v4f_cuda_matvec_indirect_planes(c, IND_PAIRS, &shape, (const void *const *)pool.dtab,
                                            (const int32_t *)dids, tab_off, slot, xs, xqs, ys2, err));
        float *y2 = v4f_xmalloc(yb);
        TRY(v4f_cuda_download(c, y2, dy2, yb, err));
        if (memcmp(y, y2, yb) != 0) {
            fprintf(stderr, "FAIL %s n_in %lld: matvec_indirect_planes differs from matvec_indirect\n",
                    v4f_type_name(type), (long long)n_in);
            g_fail++;
        }
        /* ids written long before this launch (an upload): the _ready form
         * requests the weights before its wait, the same bits */
        TRY(v4f_cuda_memset(c, dy2, 0xff, yb, err));
        TRY(v4f_cuda_matvec_indirect_planes_ready(c, IND_PAIRS, &shape, (const void *const *)pool.dtab,
                                                  (const int32_t *)dids, tab_off, slot, xs, xqs, ys2, err));
        TRY(v4f_cuda_download(c, y2, dy2, yb, err));
        if (memcmp(y, y2, yb) != 0) {
            fprintf(stderr, "FAIL %s n_in %lld: matvec_indirect_planes_ready differs from matvec_indirect\n",
                    v4f_type_name(type), (long long)n_in);
            g_fail++;
        }
        free(y2);
        v4f_cuda_free(c, dy2);
        for (int k = 0; k < 3; k++) v4f_cuda_free(c, dq[k]);
    }
    free(y);
    v4f_cuda_free(c, dy);
    for (int k = 0; k < 3; k++) {
        v4f_cuda_free(c, dx[k] - x_off);
        free(hx[k]);
    }
    v4f_cuda_free(c, dids);
    xpool_free(c, &pool);
}

/* Several x per matrix (v4f_cuda_matvec_cols), as short evals' dense
 * projections use it: n_mat matrices (the first two sharing x), n columns
 * (more than one launch's 4 for n > 4), x rows in a padded stride, outputs
 * in a padded stride of their own per matrix. */
static void run_cols(v4f_cuda *c, uint32_t type, int64_t n_in, int64_t n_out, int n_mat, int n) {
    mcase m[3];
    void *dw[3], *dx[3], *dy[3];
    const int64_t ldx = n_in + 64;
    int64_t ldy[3]; /* matrix i has n_out + 7 i rows, its outputs a stride of n_out + 12 i + 5 */
    float *hx[3];
    v4f_cuda_mat w[3];
    const float *xs[3];
    float *ys[3];
    for (int i = 0; i < n_mat; i++) {
        mcase_make(&m[i], type, n_in, n_out + 7 * i, 0, 0, 0);
        ldy[i] = n_out + 12 * i + 5;
        TRY(v4f_cuda_alloc(c, (size_t)(m[i].n_out * m[i].row_bytes), &dw[i], err));
        TRY(v4f_cuda_upload(c, dw[i], m[i].hw, (size_t)(m[i].n_out * m[i].row_bytes), err));
        w[i] = (v4f_cuda_mat){dw[i], type, n_in, m[i].n_out, m[i].row_bytes};
        hx[i] = v4f_xmalloc((size_t)(n * ldx) * sizeof(float));
        for (int64_t k = 0; k < n * ldx; k++) hx[i][k] = rnd_f(-1, 1);
        if (i == 1) memcpy(hx[1], hx[0], (size_t)(n * ldx) * sizeof(float));
        TRY(v4f_cuda_alloc(c, (size_t)(n * ldx) * sizeof(float), &dx[i], err));
        TRY(v4f_cuda_upload(c, dx[i], hx[i], (size_t)(n * ldx) * sizeof(float), err));
        TRY(v4f_cuda_alloc(c, (size_t)(n * ldy[i]) * sizeof(float), &dy[i], err));
        TRY(v4f_cuda_memset(c, dy[i], 0xff, (size_t)(n * ldy[i]) * sizeof(float), err));
        xs[i] = i == 1 ? (const float *)dx[0] : (const float *)dx[i];
        ys[i] = dy[i];
    }
    if (!v4f_cuda_matvec_cols_ok(&w[0])) {
        fprintf(stderr, "FAIL matvec_cols_ok false for %s %lld x %lld\n", v4f_type_name(type), (long long)n_out,
                (long long)n_in);
        g_fail++;
    }
    TRY(v4f_cuda_matvec_cols(c, n_mat, w, xs, ldx, n, ys, ldy, err));
    float *y = v4f_xmalloc((size_t)(n * ldy[n_mat - 1]) * sizeof(float));
    /* each column must equal a one-token matvec of that column bit for bit,
     * alone and with the launch's matrices batched (the same units per
     * thread and reductions: a short eval then computes what one-token
     * steps do) */
    void *d1;
    TRY(v4f_cuda_alloc(c, (size_t)(3 * (n_out + 16)) * sizeof(float), &d1, err));
    float *h1 = v4f_xmalloc((size_t)(3 * (n_out + 16)) * sizeof(float));
    for (int i = 0; i < n_mat; i++) {
        TRY(v4f_cuda_download(c, y, dy[i], (size_t)(n * ldy[i]) * sizeof(float), err));
        for (int t = 0; t < n; t++) {
            mcase tc = m[i];
            tc.hx = hx[i == 1 ? 0 : i] + (int64_t)t * ldx;
            check_y(&tc, y + (int64_t)t * ldy[i], "matvec_cols");
            const float *xt = xs[i] + (int64_t)t * ldx;
            TRY(v4f_cuda_matvec(c, &w[i], xt, (float *)d1, err));
            TRY(v4f_cuda_download(c, h1, d1, (size_t)m[i].n_out * sizeof(float), err));
            int diff = 0;
            for (int64_t r = 0; r < m[i].n_out; r++) diff += memcmp(&h1[r], &y[(int64_t)t * ldy[i] + r], 4) != 0;
            const float *xb[3];
            float *yb[3];
            for (int q = 0; q < n_mat; q++) {
                xb[q] = xs[q] + (int64_t)t * ldx;
                yb[q] = (float *)d1 + q * (n_out + 16);
            }
            TRY(v4f_cuda_matvec_batch(c, n_mat, w, xb, yb, err));
            TRY(v4f_cuda_download(c, h1, d1, (size_t)(3 * (n_out + 16)) * sizeof(float), err));
            int diffb = 0;
            for (int64_t r = 0; r < m[i].n_out; r++)
                diffb += memcmp(&h1[i * (n_out + 16) + r], &y[(int64_t)t * ldy[i] + r], 4) != 0;
            if (diff || diffb) {
                fprintf(stderr, "FAIL matvec_cols %s %lld x %lld, %d matrices, %d columns: matrix %d column %d: %d rows "
                        "differ from a single matvec, %d from a batched one\n", v4f_type_name(type),
                        (long long)m[i].n_out, (long long)n_in, n_mat, n, i, t, diff, diffb);
                g_fail++;
            }
        }
    }
    /* the columns' planes made beforehand (as the decode attention writes a
     * verify step's out_a planes), in a padded column stride: the same bits */
    if (v4f_cuda_takes_planes(&w[0])) {
        const int64_t xq_col = (int64_t)v4f_cuda_quant_row_bytes(n_in) + 48;
        uint8_t *dq[3];
        const uint8_t *xqs[3];
        float *yq[3];
        for (int i = 0; i < n_mat; i++) {
            TRY(v4f_cuda_alloc(c, (size_t)(n * xq_col), (void **)&dq[i], err));
            for (int t = 0; t < n; t++)
                TRY(v4f_cuda_quant_rows(c, V4F_TYPE_Q8_0, xs[i] + (int64_t)t * ldx, 1, n_in, n_in,
                                        dq[i] + t * xq_col, err));
            xqs[i] = dq[i];
            TRY(v4f_cuda_alloc(c, (size_t)(n * ldy[i]) * sizeof(float), (void **)&yq[i], err));
            TRY(v4f_cuda_memset(c, yq[i], 0xff, (size_t)(n * ldy[i]) * sizeof(float), err));
        }
        TRY(v4f_cuda_matvec_cols_planes(c, n_mat, w, xqs, xq_col, n, yq, ldy, err));
        float *yg = v4f_xmalloc((size_t)(n * ldy[n_mat - 1]) * sizeof(float));
        for (int i = 0; i < n_mat; i++) {
            TRY(v4f_cuda_download(c, y, dy[i], (size_t)(n * ldy[i]) * sizeof(float), err));
            TRY(v4f_cuda_download(c, yg, yq[i], (size_t)(n * ldy[i]) * sizeof(float), err));
            int diff = 0;
            for (int t = 0; t < n; t++)
                for (int64_t r = 0; r < m[i].n_out; r++)
                    diff += memcmp(&y[(int64_t)t * ldy[i] + r], &yg[(int64_t)t * ldy[i] + r], 4) != 0;
            if (diff) {
                fprintf(stderr, "FAIL matvec_cols_planes %s %lld x %lld, %d matrices, %d columns: matrix %d: %d "
                        "outputs differ from matvec_cols\n", v4f_type_name(type), (long long)m[i].n_out,
                        (long long)n_in, n_mat, n, i, diff);
                g_fail++;
            }
            v4f_cuda_free(c, dq[i]);
            v4f_cuda_free(c, yq[i]);
        }
        free(yg);
    }
    v4f_cuda_free(c, d1);
    free(h1);
    free(y);
    for (int i = 0; i < n_mat; i++) {
        v4f_cuda_free(c, dw[i]);
        v4f_cuda_free(c, dx[i]);
        v4f_cuda_free(c, dy[i]);
        free(hx[i]);
        mcase_free(&m[i]);
    }
}

/* Routed experts expert by expert (v4f_cuda_matvec_experts), as a chunk's
 * gate/up (two matrices per expert, x per token: xdiv = k) and down (one
 * matrix, x per pair: xdiv = 1) use them: a pool of MX_POOL experts (one in
 * pinned host-mapped memory) behind a table of two halves, n_tok tokens of
 * k picks each (experts left empty, one expert with more pairs than a
 * kernel pass takes), outputs in a padded stride. The bucketing (offsets,
 * pair lists in a shuffled order, the active list) is made on the host. */
#define MX_POOL 7
_Static_assert(MX_POOL <= XPOOL_MAX, "pool size");
static void run_mvexp(v4f_cuda *c, uint32_t type, int64_t n_in, int64_t n_out, int n_tok, int k, int xdiv) {
    const int np = n_tok * k;
    /* table half 1: another permutation of the pool (the "up" matrices) */
    static const int perm2[MX_POOL] = {4, 6, 0, 3, 1, 5, 2};
    xpool pool;
    xpool_make(c, &pool, MX_POOL, 3, perm2, type, n_in, n_out, 0); /* entry 3 host-mapped */
    const mcase *m = pool.m;
    const v4f_cuda_mat shape = {NULL, type, n_in, n_out, m[0].row_bytes};
    if (!v4f_cuda_mvexp_ok(&shape)) {
        fprintf(stderr, "FAIL mvexp_ok false for %s %lld x %lld\n", v4f_type_name(type), (long long)n_out,
                (long long)n_in);
        g_fail++;
    }
    /* picks: experts 1 and 5 never; expert 2 takes the first 11 pairs (more than one pass) */
    int32_t *eid = v4f_xmalloc((size_t)np * sizeof(int32_t));
    static const int used[5] = {0, 2, 3, 4, 6};
    for (int p = 0; p < np; p++) eid[p] = p < 11 ? 2 : used[rnd_u64() % 5];
    int32_t offs[MX_POOL + 1], act[MX_POOL + 1], *elist = v4f_xmalloc((size_t)np * sizeof(int32_t));
    int na = 0, at = 0;
    for (int e = 0; e < MX_POOL; e++) {
        offs[e] = at;
        const int start = at;
        for (int p = 0; p < np; p++)
            if (eid[p] == e) elist[at++] = p;
        for (int i = at - 1; i > start; i--) { /* the device bucketing's order is unspecified */
            const int j = start + (int)(rnd_u64() % (uint64_t)(i - start + 1));
            const int32_t t = elist[i];
            elist[i] = elist[j], elist[j] = t;
        }
        if (at > start) act[1 + na++] = e;
    }
    offs[MX_POOL] = at;
    act[0] = na;
    void *doffs, *dact, *delist;
    TRY(v4f_cuda_alloc(c, sizeof offs, &doffs, err));
    TRY(v4f_cuda_upload(c, doffs, offs, sizeof offs, err));
    TRY(v4f_cuda_alloc(c, sizeof act, &dact, err));
    TRY(v4f_cuda_upload(c, dact, act, sizeof act, err));
    TRY(v4f_cuda_alloc(c, (size_t)np * sizeof(int32_t), &delist, err));
    TRY(v4f_cuda_upload(c, delist, elist, (size_t)np * sizeof(int32_t), err));
    /* x rows: one per token (xdiv = k) or per pair (xdiv = 1), stride n_in + 32 */
    const int nx = np / xdiv;
    const int64_t ldx = n_in + 32;
    float *hx = v4f_xmalloc((size_t)(nx * ldx) * sizeof(float));
    for (int64_t i = 0; i < nx * ldx; i++) hx[i] = rnd_f(-1, 1);
    void *dx, *dq, *dy;
    TRY(v4f_cuda_alloc(c, (size_t)(nx * ldx) * sizeof(float), &dx, err));
    TRY(v4f_cuda_upload(c, dx, hx, (size_t)(nx * ldx) * sizeof(float), err));
    TRY(v4f_cuda_alloc(c, (size_t)nx * v4f_cuda_quant_row_bytes(n_in), &dq, err));
    TRY(v4f_cuda_quant_rows(c, type, dx, nx, n_in, ldx, dq, err));
    const int64_t ldy = n_out + 3;
    const int n_mat = xdiv > 1 ? 2 : 1;
    TRY(v4f_cuda_alloc(c, (size_t)(n_mat * np * ldy) * sizeof(float), &dy, err));
    TRY(v4f_cuda_memset(c, dy, 0xff, (size_t)(n_mat * np * ldy) * sizeof(float), err)); /* NaN poison */
    const int32_t tab_off[2] = {0, MX_POOL};
    float *ys[2] = {(float *)dy, (float *)dy + np * ldy};
    TRY(v4f_cuda_matvec_experts(c, n_mat, &shape, (const void *const *)pool.dtab, tab_off, dact, doffs, delist,
                                np < MX_POOL ? np : MX_POOL, dq, xdiv, ys, ldy, err));
    float *y = v4f_xmalloc((size_t)(n_mat * np * ldy) * sizeof(float));
    TRY(v4f_cuda_download(c, y, dy, (size_t)(n_mat * np * ldy) * sizeof(float), err));
    for (int mt = 0; mt < n_mat; mt++)
        for (int p = 0; p < np; p++) {
            mcase t = m[mt ? perm2[eid[p]] : eid[p]];
            t.hx = hx + (int64_t)(p / xdiv) * ldx;
            check_y(&t, y + ((int64_t)mt * np + p) * ldy, "matvec_experts");
        }
    free(y);
    free(hx);
    free(elist);
    free(eid);
    v4f_cuda_free(c, dy);
    v4f_cuda_free(c, dq);
    v4f_cuda_free(c, dx);
    v4f_cuda_free(c, delist);
    v4f_cuda_free(c, dact);
    v4f_cuda_free(c, doffs);
    xpool_free(c, &pool);
}

static void conformance(v4f_cuda *c) {
    static const uint32_t types[] = {V4F_TYPE_F32,  V4F_TYPE_F16,  V4F_TYPE_BF16,   V4F_TYPE_Q8_0,
                                     V4F_TYPE_Q2_K, V4F_TYPE_Q4_K, V4F_TYPE_IQ2_XXS};
    static const int64_t n_outs[] = {1, 5, 37, 130, 257};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        const uint32_t type = types[t];
        const int64_t be = v4f_type_info_get(type)->blck_elems;
        int64_t nins[12];
        int nn = 0;
        if (be == 1) {
            static const int64_t f[] = {1, 3, 4, 7, 8, 36, 100, 1000, 4096, 4100, 4104};
            for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) nins[nn++] = f[i];
        } else if (type == V4F_TYPE_Q8_0) {
            static const int64_t k[] = {1, 2, 3, 7, 8, 9, 16, 24, 128, 512};
            for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) nins[nn++] = 32 * k[i];
        } else {
            static const int64_t k[] = {1, 2, 3, 4, 5, 7, 8, 12, 16, 24};
            for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) nins[nn++] = 256 * k[i];
        }
        for (int i = 0; i < nn; i++)
            for (size_t o = 0; o < sizeof n_outs / sizeof n_outs[0]; o++) run_single(c, type, nins[i], n_outs[o], 0, 0, 0);
        /* a fast-path shape with: padded stride, misaligned weights, misaligned x */
        const int64_t nf = be == 1 ? 4096 : (type == V4F_TYPE_Q8_0 ? 4096 : 2048);
        run_single(c, type, nf, 77, 16, 0, 0);
        run_single(c, type, nf, 77, 0, 2, 0);
        run_single(c, type, nf, 77, 0, 0, 1);
        run_batch(c, type, nf, 12, 29);
        run_batch(c, type, be == 1 ? 1001 : 3 * be, 6, 29); /* slow path batched (Q4_K: fast) */
        /* the quantized types switch from int8 activation planes to the f32
         * path above n_in 16384: cover that path too */
        if (type == V4F_TYPE_Q8_0 || type == V4F_TYPE_Q2_K || type == V4F_TYPE_Q4_K)
            run_single(c, type, 17408, 37, 0, 0, 0);
        if (type == V4F_TYPE_IQ2_XXS) run_single(c, type, 18432, 37, 0, 0, 0);
        /* indirect: fast path (padded stride, decode-like and odd shapes),
         * slow path (misaligned x) */
        run_indirect(c, type, nf, 131, 0, 0, NULL);
        run_indirect(c, type, nf, 37, 16, 0, NULL);
        run_indirect(c, type, be == 1 ? 1000 : 3 * be, 19, 0, 0, NULL);
        run_indirect(c, type, nf, 37, 0, 1, NULL);
        /* expert by expert: gate/up-like (x per token) and down-like (x per pair), tails of rows */
        if (plane_type(type)) {
            run_mvexp(c, type, type == V4F_TYPE_Q8_0 ? 1024 : nf, 37, 9, 3, 3);
            /* 16 rows of 4,352 bytes: above 48 KB of shared memory (the opted-in limit) */
            if (type == V4F_TYPE_Q8_0) run_mvexp(c, type, 4096, 70, 4, 6, 6);
            /* several columns: 2, 7 (two launches) and 5 x 3 matrices; short and wide Q8_0 rows */
            run_cols(c, type, nf, 37, 1, 2);
            run_cols(c, type, nf, 131, 3, 7);
            run_cols(c, type, type == V4F_TYPE_Q8_0 ? 1024 : nf, 4101, 2, 5);
            run_mvexp(c, type, 2 * be, 131, 5, 4, 1);
            run_mvexp(c, type, 3 * be, 9, 6, 2, 2);
        }
        /* several columns of float x read in place (compressor, indexer and
         * router projections of a short eval): 2, 4 + 3 and 4 + 1 columns */
        if (type == V4F_TYPE_F32 || type == V4F_TYPE_F16 || type == V4F_TYPE_BF16) {
            run_cols(c, type, nf, 37, 1, 2);
            run_cols(c, type, nf, 131, 3, 7);
            run_cols(c, type, 4096, 1031, 2, 5);
        }
    }
    /* the decode shapes of the published model, including the split-K
     * (few rows) and multi-chunk (long rows) plans of the fast kernel */
    run_single(c, V4F_TYPE_F16, 16384, 24, 0, 0, 0);
    run_single(c, V4F_TYPE_F16, 4096, 64, 0, 0, 0);
    run_single(c, V4F_TYPE_F16, 1024, 517, 0, 0, 0);
    run_single(c, V4F_TYPE_Q8_0, 8192, 300, 0, 0, 0);
    run_single(c, V4F_TYPE_Q8_0, 1024, 1000, 0, 0, 0);
    run_single(c, V4F_TYPE_Q8_0, 1024, 1003, 0, 0, 0); /* 8 rows per CTA, a tail of 3 */
    run_single(c, V4F_TYPE_Q8_0, 4096, 512, 0, 0, 0);
    /* launches of >= MV_WIDE_ROWS (4096) rows whose 8 rows fit one chunk:
     * 8 rows per CTA (LM head, shared expert, out_a), tails of 3 and 5
     * rows, n_in 2048 (64 threads) and 4608 (the largest that fits) */
    run_single(c, V4F_TYPE_Q8_0, 4096, 65539, 0, 0, 0);
    run_single(c, V4F_TYPE_Q8_0, 2048, 4099, 0, 0, 0);
    run_single(c, V4F_TYPE_Q8_0, 4608, 4101, 0, 0, 0);
    run_batch(c, V4F_TYPE_Q8_0, 4096, 12, 400); /* 12 x up to 543 rows: pairs with idle CTAs */
    run_single(c, V4F_TYPE_Q8_0, 8192, 4099, 0, 0, 0); /* out_b's shape, a tail of 3 */
    run_single(c, V4F_TYPE_Q2_K, 2048, 4096, 0, 0, 0);
    run_single(c, V4F_TYPE_IQ2_XXS, 4096, 2048, 0, 0, 0);
    run_single(c, V4F_TYPE_Q4_K, 4096, 2048, 0, 0, 0);
    run_single(c, V4F_TYPE_Q4_K, 2048, 4096, 0, 0, 0);
    /* the routed experts' shapes (k_mvfix) by id: by k_matvec (0), tiles
     * per CTA chosen and forced to 1 .. 4; k_mvfix's outputs bit for bit
     * k_matvec's (the same operations per row, same inputs: same seed) */
    static const char *const fix[] = {"0", "", "1", "2", "3", "4"};
    static const struct { uint32_t type; int64_t n_in, n_out; } fsh[2] = {{V4F_TYPE_Q2_K, 2048, 4096},
                                                                           {V4F_TYPE_IQ2_XXS, 4096, 2048}};
    for (int k = 0; k < 2; k++) {
        const size_t ny = (size_t)(IND_PAIRS * fsh[k].n_out);
        float *ref = v4f_xmalloc(ny * sizeof(float)), *got = v4f_xmalloc(ny * sizeof(float));
        for (int i = 0; i < (int)(sizeof fix / sizeof fix[0]); i++) {
            setenv("V4F_MV_FIX", fix[i], 1);
            rnd_seed(0x6d76666978ull + (uint64_t)k);
            run_indirect(c, fsh[k].type, fsh[k].n_in, fsh[k].n_out, 0, 0, i ? got : ref);
            if (i && memcmp(ref, got, ny * sizeof(float)) != 0) {
                fprintf(stderr, "FAIL %s n_in %lld: V4F_MV_FIX=%s differs from k_matvec\n", v4f_type_name(fsh[k].type),
                        (long long)fsh[k].n_in, fix[i]);
                g_fail++;
            }
            if (k == 1) run_single(c, V4F_TYPE_IQ2_XXS, 4096, 2048, 0, 0, 0);
        }
        free(ref);
        free(got);
    }
    unsetenv("V4F_MV_FIX");
}

/* ---- benchmark ---------------------------------------------------------------- */

static int cmp_f(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

#define BENCH_REPS 9
#define BENCH_BURST 20

static void *g_blocker;
static size_t g_blocker_bytes = (size_t)1 << 30;

static double bench_copy(v4f_cuda *c) {
    const size_t bytes = (size_t)1 << 30;
    void *a, *b;
    TRY(v4f_cuda_alloc(c, bytes, &a, err));
    TRY(v4f_cuda_alloc(c, bytes, &b, err));
    TRY(v4f_cuda_memset(c, a, 0x5a, bytes, err));
    float t[10];
    for (int i = 0; i < 2; i++) TRY(v4f_cuda_copy(c, b, a, bytes, err));
    for (int i = 0; i < 10; i++) {
        TRY(v4f_cuda_timer_start(c, err));
        TRY(v4f_cuda_copy(c, (i & 1) ? a : b, (i & 1) ? b : a, bytes, err));
        TRY(v4f_cuda_timer_stop(c, &t[i], err));
    }
    qsort(t, 10, sizeof t[0], cmp_f);
    v4f_cuda_free(c, a);
    v4f_cuda_free(c, b);
    const double bw = 2.0 * (double)bytes / (t[5] * 1e-3);
    printf("copy D2D 1 GiB: median %.3f ms, min %.3f ms -> %.1f GB/s (read + write); attribute peak %.1f GB/s\n", t[5],
           t[0], bw / 1e9, v4f_cuda_peak_bw(c) / 1e9);
    return bw;
}

/* Bench one configuration: a pool of n_pool matrices (type, n_in, n_out);
 * each launch runs `batch` of them (random distinct picks when batch > 1,
 * round-robin when batch == 1). */
static void bench_mv(v4f_cuda *c, double copy_bw, const char *label, uint32_t type, int64_t n_in, int64_t n_out,
                     int n_pool, int batch) {
    const uint64_t rb = row_bytes_of(type, n_in);
    const size_t mbytes = (size_t)(rb * (uint64_t)n_out);
    uint8_t *h = v4f_xmalloc(mbytes);
    for (int64_t r = 0; r < n_out; r++) fill_row(type, h + r * rb, n_in);
    void **pool = v4f_xcalloc((size_t)n_pool, sizeof *pool);
    for (int i = 0; i < n_pool; i++) {
        TRY(v4f_cuda_alloc(c, mbytes, &pool[i], err));
        TRY(v4f_cuda_upload(c, pool[i], h, mbytes, err));
    }
    free(h);
    float *hx = v4f_xmalloc((size_t)n_in * sizeof(float));
    for (int64_t i = 0; i < n_in; i++) hx[i] = rnd_f(-1, 1);
    void *dx, *dy;
    TRY(v4f_cuda_alloc(c, (size_t)n_in * sizeof(float), &dx, err));
    TRY(v4f_cuda_upload(c, dx, hx, (size_t)n_in * sizeof(float), err));
    TRY(v4f_cuda_alloc(c, (size_t)(n_out * batch) * sizeof(float), &dy, err));
    free(hx);

    /* Each timed sample is BENCH_BURST launches queued behind a blocker
     * (a memset of g_blocker_bytes), so the host is ahead of the GPU and the
     * launches run back to back: device throughput, as under a CUDA graph,
     * not host launch latency. */
    float t[BENCH_REPS];
    int rr = 0;
    static v4f_cuda_mat w[BENCH_BURST][V4F_CUDA_MATVEC_MAX_BATCH];
    static const float *xs[BENCH_BURST][V4F_CUDA_MATVEC_MAX_BATCH];
    static float *ys[BENCH_BURST][V4F_CUDA_MATVEC_MAX_BATCH];
    for (int it = -1; it < BENCH_REPS; it++) {
        for (int q = 0; q < BENCH_BURST; q++) {
            int used[V4F_CUDA_MATVEC_MAX_BATCH];
            for (int b = 0; b < batch; b++) {
                int k;
                if (batch == 1) {
                    k = rr++ % n_pool;
                } else {
                    for (;;) {
                        k = (int)(rnd_u64() % (uint64_t)n_pool);
                        int dup = 0;
                        for (int j = 0; j < b; j++) dup |= used[j] == k;
                        if (!dup) break;
                    }
                }
                used[b] = k;
                w[q][b] = (v4f_cuda_mat){pool[k], type, n_in, n_out, rb};
                xs[q][b] = dx;
                ys[q][b] = (float *)dy + b * n_out;
            }
        }
        TRY(v4f_cuda_memset(c, g_blocker, it & 0xff, g_blocker_bytes, err));
        TRY(v4f_cuda_timer_start(c, err));
        for (int q = 0; q < BENCH_BURST; q++) TRY(v4f_cuda_matvec_batch(c, batch, w[q], xs[q], ys[q], err));
        float ms;
        TRY(v4f_cuda_timer_stop(c, &ms, err));
        if (it >= 0) t[it] = ms / BENCH_BURST;
    }
    qsort(t, BENCH_REPS, sizeof t[0], cmp_f);
    const double bytes = (double)mbytes * batch; /* weights read; x and y are < 0.5% */
    const double bw = bytes / (t[BENCH_REPS / 2] * 1e-3);
    printf("%-34s %-8s %9.2f MB  floor %8.1f us  median %8.1f us (min %8.1f)  %7.1f GB/s  %5.1f%% of copy\n", label,
           v4f_type_name(type), bytes / 1e6, bytes / copy_bw * 1e6, t[BENCH_REPS / 2] * 1e3, t[0] * 1e3, bw / 1e9,
           100.0 * bw / copy_bw);
    fflush(stdout);
    for (int i = 0; i < n_pool; i++) v4f_cuda_free(c, pool[i]);
    free(pool);
    v4f_cuda_free(c, dx);
    v4f_cuda_free(c, dy);
}

/* Enough buffers that a round trip over them is >= 400 MB (L2 is 50 MB). */
static int pool_for(uint32_t type, int64_t n_in, int64_t n_out) {
    const double mb = (double)row_bytes_of(type, n_in) * (double)n_out;
    int n = (int)(400e6 / mb) + 1;
    return n < 2 ? 2 : n;
}

/* ---- per-layer decode set (--bench) --------------------------------------------
 * Every weight matvec of one decode layer (43 per token) at the published
 * shapes, launched as the forward would (shared-x matrices batched): Q8_0
 * q_a+kv, q_b, out_a (8 groups), out_b, shared gate+up, shared down; F16
 * compressor kv+gate (ratio-4 layer), indexer compressor kv+gate, indexer
 * proj, indexer q_b, two HC mixers, router; routed experts through
 * v4f_cuda_matvec_indirect (gate+up: 12 pairs, down: 6 pairs; IQ2_XXS/Q2_K
 * for q2, Q4_K for q4). LAYER_COPIES copies of all weights (each > 200 MB,
 * 50 MB L2) are captured as one CUDA graph each and replayed in turn. */
#define LAYER_COPIES 3
#define LAYER_POOL 16 /* experts per copy */
enum { LG_QA_KV, LG_QB, LG_OUTA, LG_OUTB, LG_SH_GU, LG_SH_D, LG_CMP, LG_ICMP, LG_IPROJ, LG_IQB, LG_HC1, LG_HC2,
       LG_ROUTER, LG_EXP_GU, LG_EXP_D, LG_N };
static const char *const lg_name[LG_N] = {"q_a+kv 4096->1024+512 Q8_0", "q_b 1024->32768 Q8_0",
                                          "out_a 8x 4096->1024 Q8_0",   "out_b 8192->4096 Q8_0",
                                          "shared gate+up 2x 4096->2048", "shared down 2048->4096",
                                          "compressor 2x 4096->1024 F16", "idx compressor 2x 4096->256 F16",
                                          "idx proj 4096->64 F16",      "idx q_b 1024->8192 F16",
                                          "HC mixer 16384->24 F16",     "HC mixer 16384->24 F16",
                                          "router 4096->256 F16",       "experts gate+up 12x 4096->2048",
                                          "experts down 6x 2048->4096"};

typedef struct lmat {
    uint32_t type;
    int64_t n_in, n_out;
} lmat;

typedef struct lcopy {
    void *q8[15]; /* qa kv qb outa0..7 outb sg su sd */
    void *f16[9]; /* ckv cg ikv ig iproj iqb hc1 hc2 router */
    void *exp[3 * LAYER_POOL];
    void *tab;
} lcopy;

static const lmat l_q8[15] = {{V4F_TYPE_Q8_0, 4096, 1024}, {V4F_TYPE_Q8_0, 4096, 512}, {V4F_TYPE_Q8_0, 1024, 32768},
                              {V4F_TYPE_Q8_0, 4096, 1024}, {V4F_TYPE_Q8_0, 4096, 1024}, {V4F_TYPE_Q8_0, 4096, 1024},
                              {V4F_TYPE_Q8_0, 4096, 1024}, {V4F_TYPE_Q8_0, 4096, 1024}, {V4F_TYPE_Q8_0, 4096, 1024},
                              {V4F_TYPE_Q8_0, 4096, 1024}, {V4F_TYPE_Q8_0, 4096, 1024}, {V4F_TYPE_Q8_0, 8192, 4096},
                              {V4F_TYPE_Q8_0, 4096, 2048}, {V4F_TYPE_Q8_0, 4096, 2048}, {V4F_TYPE_Q8_0, 2048, 4096}};
static const lmat l_f16[9] = {{V4F_TYPE_F16, 4096, 1024}, {V4F_TYPE_F16, 4096, 1024},  {V4F_TYPE_F16, 4096, 256},
                              {V4F_TYPE_F16, 4096, 256},  {V4F_TYPE_F16, 4096, 64},    {V4F_TYPE_F16, 1024, 8192},
                              {V4F_TYPE_F16, 16384, 24},  {V4F_TYPE_F16, 16384, 24},   {V4F_TYPE_F16, 4096, 256}};

static size_t lmat_bytes(const lmat *m) { return (size_t)(row_bytes_of(m->type, m->n_in) * (uint64_t)m->n_out); }

static void *upload_random(v4f_cuda *c, const lmat *m) {
    const size_t bytes = lmat_bytes(m);
    const uint64_t rb = row_bytes_of(m->type, m->n_in);
    uint8_t *h = v4f_xmalloc(bytes);
    for (int64_t r = 0; r < m->n_out; r++) fill_row(m->type, h + r * rb, m->n_in);
    void *d;
    TRY(v4f_cuda_alloc(c, bytes, &d, err));
    TRY(v4f_cuda_upload(c, d, h, bytes, err));
    free(h);
    return d;
}

typedef struct lbufs {
    float *xa, *x1024, *x8192, *xo[8], *xf, *x2048, *x16384, *h[6];
    float *y; /* output area, 64K floats per group slot */
    int32_t *ids;
} lbufs;

static float *dev_rand(v4f_cuda *c, int64_t n) {
    float *h = v4f_xmalloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) h[i] = rnd_f(-1, 1);
    void *d;
    TRY(v4f_cuda_alloc(c, (size_t)n * sizeof(float), &d, err));
    TRY(v4f_cuda_upload(c, d, h, (size_t)n * sizeof(float), err));
    free(h);
    return d;
}

#define LY(g) (b->y + (size_t)(g) * 65536 * 2)
/* Queue group g of copy cp. */
static void layer_group(v4f_cuda *c, const lcopy *cp, const lbufs *b, int g, uint32_t et_gu, uint32_t et_d) {
    v4f_cuda_mat w[12];
    const float *xs[12];
    float *ys[12];
    int n = 0;
#define ADDM(tab, i, arr, xx)                                                                              \
    do {                                                                                                   \
        w[n] = (v4f_cuda_mat){cp->tab[i], arr[i].type, arr[i].n_in, arr[i].n_out, row_bytes_of(arr[i].type, arr[i].n_in)}; \
        xs[n] = (xx);                                                                                      \
        ys[n] = LY(g) + (size_t)n * 8192;                                                                  \
        n++;                                                                                               \
    } while (0)
    switch (g) {
    case LG_QA_KV: ADDM(q8, 0, l_q8, b->xa); ADDM(q8, 1, l_q8, b->xa); break;
    case LG_QB: ys[0] = LY(g); w[0] = (v4f_cuda_mat){cp->q8[2], V4F_TYPE_Q8_0, 1024, 32768, row_bytes_of(V4F_TYPE_Q8_0, 1024)};
        xs[0] = b->x1024; n = 1; break;
    case LG_OUTA: for (int i = 0; i < 8; i++) ADDM(q8, 3 + i, l_q8, b->xo[i]); break;
    case LG_OUTB: ADDM(q8, 11, l_q8, b->x8192); break;
    case LG_SH_GU: ADDM(q8, 12, l_q8, b->xf); ADDM(q8, 13, l_q8, b->xf); break;
    case LG_SH_D: ADDM(q8, 14, l_q8, b->x2048); break;
    case LG_CMP: ADDM(f16, 0, l_f16, b->xa); ADDM(f16, 1, l_f16, b->xa); break;
    case LG_ICMP: ADDM(f16, 2, l_f16, b->xa); ADDM(f16, 3, l_f16, b->xa); break;
    case LG_IPROJ: ADDM(f16, 4, l_f16, b->xa); break;
    case LG_IQB: ADDM(f16, 5, l_f16, b->x1024); break;
    case LG_HC1: ADDM(f16, 6, l_f16, b->x16384); break;
    case LG_HC2: ADDM(f16, 7, l_f16, b->x16384); break;
    case LG_ROUTER: ADDM(f16, 8, l_f16, b->xa); break;
    case LG_EXP_GU: {
        int32_t off[12], slot[12];
        for (int i = 0; i < 12; i++) {
            off[i] = (i & 1) ? LAYER_POOL : 0;
            slot[i] = i >> 1;
            xs[i] = b->xf;
            ys[i] = LY(g) + (size_t)i * 2048;
        }
        const v4f_cuda_mat shape = {NULL, et_gu, 4096, 2048, row_bytes_of(et_gu, 4096)};
        TRY(v4f_cuda_matvec_indirect(c, 12, &shape, (const void *const *)cp->tab, b->ids, off, slot, xs, ys, err));
        return;
    }
    case LG_EXP_D: {
        int32_t off[6], slot[6];
        for (int i = 0; i < 6; i++) {
            off[i] = 2 * LAYER_POOL;
            slot[i] = i;
            xs[i] = b->h[i];
            ys[i] = LY(g) + (size_t)i * 4096;
        }
        const v4f_cuda_mat shape = {NULL, et_d, 2048, 4096, row_bytes_of(et_d, 2048)};
        TRY(v4f_cuda_matvec_indirect(c, 6, &shape, (const void *const *)cp->tab, b->ids, off, slot, xs, ys, err));
        return;
    }
    default: break;
    }
#undef ADDM
    TRY(v4f_cuda_matvec_batch(c, n, w, xs, ys, err));
}

static double group_bytes(int g, uint32_t et_gu, uint32_t et_d) {
    double s = 0;
    switch (g) {
    case LG_QA_KV: s = lmat_bytes(&l_q8[0]) + lmat_bytes(&l_q8[1]); break;
    case LG_QB: s = lmat_bytes(&l_q8[2]); break;
    case LG_OUTA: s = 8.0 * lmat_bytes(&l_q8[3]); break;
    case LG_OUTB: s = lmat_bytes(&l_q8[11]); break;
    case LG_SH_GU: s = 2.0 * lmat_bytes(&l_q8[12]); break;
    case LG_SH_D: s = lmat_bytes(&l_q8[14]); break;
    case LG_CMP: s = 2.0 * lmat_bytes(&l_f16[0]); break;
    case LG_ICMP: s = 2.0 * lmat_bytes(&l_f16[2]); break;
    case LG_IPROJ: s = lmat_bytes(&l_f16[4]); break;
    case LG_IQB: s = lmat_bytes(&l_f16[5]); break;
    case LG_HC1: case LG_HC2: s = lmat_bytes(&l_f16[6]); break;
    case LG_ROUTER: s = lmat_bytes(&l_f16[8]); break;
    case LG_EXP_GU: { const lmat m = {et_gu, 4096, 2048}; s = 12.0 * lmat_bytes(&m); break; }
    case LG_EXP_D: { const lmat m = {et_d, 2048, 4096}; s = 6.0 * lmat_bytes(&m); break; }
    default: break;
    }
    return s;
}

/* Median ms of one replay of graphs[0..ng) in turn (rounds of all). */
static float time_graphs(v4f_cuda *c, v4f_cuda_graph **gs, int ng, int rounds) {
    float t[BENCH_REPS];
    for (int k = 0; k < ng; k++) TRY(v4f_cuda_graph_launch(c, gs[k], err));
    for (int it = 0; it < BENCH_REPS; it++) {
        TRY(v4f_cuda_memset(c, g_blocker, it & 0xff, g_blocker_bytes, err));
        TRY(v4f_cuda_timer_start(c, err));
        for (int r = 0; r < rounds; r++)
            for (int k = 0; k < ng; k++) TRY(v4f_cuda_graph_launch(c, gs[k], err));
        float ms;
        TRY(v4f_cuda_timer_stop(c, &ms, err));
        t[it] = ms / (float)(rounds * ng);
    }
    qsort(t, BENCH_REPS, sizeof t[0], cmp_f);
    return t[BENCH_REPS / 2];
}

/* --hot: each group's launches read one copy of its weights (the L2 cache
 * holds what fits: the speed of weights read from L2) */
static bool g_hot;

static void bench_layer(v4f_cuda *c, double copy_bw, bool q4) {
    const uint32_t et_gu = q4 ? V4F_TYPE_Q4_K : V4F_TYPE_IQ2_XXS, et_d = q4 ? V4F_TYPE_Q4_K : V4F_TYPE_Q2_K;
    lcopy cp[LAYER_COPIES];
    const lmat egu = {et_gu, 4096, 2048}, ed = {et_d, 2048, 4096};
    for (int k = 0; k < LAYER_COPIES; k++) {
        for (int i = 0; i < 15; i++) cp[k].q8[i] = upload_random(c, &l_q8[i]);
        for (int i = 0; i < 9; i++) cp[k].f16[i] = upload_random(c, &l_f16[i]);
        for (int i = 0; i < 3 * LAYER_POOL; i++) cp[k].exp[i] = upload_random(c, i < 2 * LAYER_POOL ? &egu : &ed);
        TRY(v4f_cuda_alloc(c, sizeof cp[k].exp, &cp[k].tab, err));
        TRY(v4f_cuda_upload(c, cp[k].tab, cp[k].exp, sizeof cp[k].exp, err));
    }
    lbufs b;
    b.xa = dev_rand(c, 4096), b.x1024 = dev_rand(c, 1024), b.x8192 = dev_rand(c, 8192), b.xf = dev_rand(c, 4096);
    b.x2048 = dev_rand(c, 2048), b.x16384 = dev_rand(c, 16384);
    for (int i = 0; i < 8; i++) b.xo[i] = dev_rand(c, 4096);
    for (int i = 0; i < 6; i++) b.h[i] = dev_rand(c, 2048);
    void *y;
    TRY(v4f_cuda_alloc(c, (size_t)LG_N * 65536 * 2 * sizeof(float), &y, err));
    b.y = y;
    int32_t ids[6] = {3, 14, 7, 0, 9, 12};
    void *dids;
    TRY(v4f_cuda_alloc(c, sizeof ids, &dids, err));
    TRY(v4f_cuda_upload(c, dids, ids, sizeof ids, err));
    b.ids = dids;
    double total = 0;
    for (int g = 0; g < LG_N; g++) total += group_bytes(g, et_gu, et_d);

    printf("\nper-layer decode set (%s experts), %.2f MB of weights per layer, %d copies rotated%s:\n",
           q4 ? "q4: Q4_K" : "q2: IQ2_XXS/Q2_K", total / 1e6, LAYER_COPIES,
           g_hot ? " (groups: one copy, L2-hot)" : "");
    float tg[LG_N];
    v4f_cuda_graph *gs[LAYER_COPIES];
    for (int k = 0; k < LAYER_COPIES; k++) {
        TRY(v4f_cuda_capture_begin(c, err));
        for (int g = 0; g < LG_N; g++) layer_group(c, &cp[k], &b, g, et_gu, et_d);
        TRY(v4f_cuda_capture_end(c, true, &gs[k], err));
    }
    const float tall = time_graphs(c, gs, LAYER_COPIES, 10);
    for (int k = 0; k < LAYER_COPIES; k++) v4f_cuda_graph_free(gs[k]);
    for (int g = 0; g < LG_N; g++) {
        /* one group: a graph of 4 launches over the copies in turn */
        TRY(v4f_cuda_capture_begin(c, err));
        for (int r = 0; r < 4; r++) layer_group(c, &cp[g_hot ? 0 : r % LAYER_COPIES], &b, g, et_gu, et_d);
        v4f_cuda_graph *g1;
        TRY(v4f_cuda_capture_end(c, true, &g1, err));
        tg[g] = time_graphs(c, &g1, 1, 10) / 4.0f;
        v4f_cuda_graph_free(g1);
    }
    printf("%-34s %9s  %10s %6s %6s\n", "group", "MB", "us", "GB/s", "%copy");
    for (int g = 0; g < LG_N; g++) {
        const double by = group_bytes(g, et_gu, et_d);
        printf("%-34s %9.2f  %10.1f %6.0f %5.1f%%\n", lg_name[g], by / 1e6, tg[g] * 1e3, by / (tg[g] * 1e-3) / 1e9,
               100.0 * by / (tg[g] * 1e-3) / copy_bw);
    }
    printf("%-34s %9.2f  %10.1f %6.0f %5.1f%%\n", "WHOLE LAYER (one graph)", total / 1e6, tall * 1e3,
           total / (tall * 1e-3) / 1e9, 100.0 * total / (tall * 1e-3) / copy_bw);
    printf("(copy bandwidth %.1f GB/s; floor per layer %.1f us; x 43 layers: %.2f ms/token)\n", copy_bw / 1e9,
           total / copy_bw * 1e6, tall * 43.0);
    fflush(stdout);
    for (int k = 0; k < LAYER_COPIES; k++) {
        for (int i = 0; i < 15; i++) v4f_cuda_free(c, cp[k].q8[i]);
        for (int i = 0; i < 9; i++) v4f_cuda_free(c, cp[k].f16[i]);
        for (int i = 0; i < 3 * LAYER_POOL; i++) v4f_cuda_free(c, cp[k].exp[i]);
        v4f_cuda_free(c, cp[k].tab);
    }
    v4f_cuda_free(c, dids);
    v4f_cuda_free(c, y);
    v4f_cuda_free(c, b.xa), v4f_cuda_free(c, b.x1024), v4f_cuda_free(c, b.x8192), v4f_cuda_free(c, b.xf);
    v4f_cuda_free(c, b.x2048), v4f_cuda_free(c, b.x16384);
    for (int i = 0; i < 8; i++) v4f_cuda_free(c, b.xo[i]);
    for (int i = 0; i < 6; i++) v4f_cuda_free(c, b.h[i]);
}

static void bench(v4f_cuda *c) {
    const double copy_bw = bench_copy(c);
    TRY(v4f_cuda_alloc(c, g_blocker_bytes, &g_blocker, err));
    bench_layer(c, copy_bw, false);
    bench_layer(c, copy_bw, true);
    printf("\nsingle matvecs:\n");
    static const uint32_t types[] = {V4F_TYPE_F32,  V4F_TYPE_F16,  V4F_TYPE_BF16,   V4F_TYPE_Q8_0,
                                     V4F_TYPE_Q2_K, V4F_TYPE_Q4_K, V4F_TYPE_IQ2_XXS};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++)
        bench_mv(c, copy_bw, "matvec 4096 x 32768", types[t], 4096, 32768, pool_for(types[t], 4096, 32768), 1);
    /* decode-shaped dense matrices (attention projections, shared expert) */
    bench_mv(c, copy_bw, "matvec 4096 x 1024 (small)", V4F_TYPE_Q8_0, 4096, 1024, pool_for(V4F_TYPE_Q8_0, 4096, 1024), 1);
    bench_mv(c, copy_bw, "matvec 4096 x 4096", V4F_TYPE_Q8_0, 4096, 4096, pool_for(V4F_TYPE_Q8_0, 4096, 4096), 1);
    bench_mv(c, copy_bw, "matvec 16384 x 4096", V4F_TYPE_Q8_0, 16384, 4096, pool_for(V4F_TYPE_Q8_0, 16384, 4096), 1);
    bench_mv(c, copy_bw, "matvec 4096 x 4096", V4F_TYPE_F16, 4096, 4096, pool_for(V4F_TYPE_F16, 4096, 4096), 1);
    bench_mv(c, copy_bw, "LM head 4096 x 129280", V4F_TYPE_Q8_0, 4096, 129280, pool_for(V4F_TYPE_Q8_0, 4096, 129280), 1);
    /* routed experts: 6 of 64 per launch; gate+up = 12 matrices 4096 -> 2048,
     * down = 6 matrices 2048 -> 4096 */
    bench_mv(c, copy_bw, "experts gate+up 12 x (4096 x 2048)", V4F_TYPE_IQ2_XXS, 4096, 2048, 128, 12);
    bench_mv(c, copy_bw, "experts down 6 x (2048 x 4096)", V4F_TYPE_Q2_K, 2048, 4096, 64, 6);
    bench_mv(c, copy_bw, "experts gate+up 12 x (4096 x 2048)", V4F_TYPE_Q4_K, 4096, 2048, 128, 12);
    bench_mv(c, copy_bw, "experts down 6 x (2048 x 4096)", V4F_TYPE_Q4_K, 2048, 4096, 64, 6);
    v4f_cuda_free(c, g_blocker);
}

/* --bench-layer: the q2 and q4 per-layer decode sets and the expert matvecs
 * (a short A/B of k_matvec builds). */
static void bench_short(v4f_cuda *c) {
    const double copy_bw = bench_copy(c);
    TRY(v4f_cuda_alloc(c, g_blocker_bytes, &g_blocker, err));
    bench_layer(c, copy_bw, false);
    bench_layer(c, copy_bw, true);
    bench_mv(c, copy_bw, "LM head 4096 x 129280", V4F_TYPE_Q8_0, 4096, 129280, pool_for(V4F_TYPE_Q8_0, 4096, 129280), 1);
    bench_mv(c, copy_bw, "experts gate+up 12 x (4096 x 2048)", V4F_TYPE_IQ2_XXS, 4096, 2048, 128, 12);
    bench_mv(c, copy_bw, "experts down 6 x (2048 x 4096)", V4F_TYPE_Q2_K, 2048, 4096, 64, 6);
    v4f_cuda_free(c, g_blocker);
}

/* --profile: one 4096 x 32768 matvec per type, for ncu. */
static void profile(v4f_cuda *c) {
    static const uint32_t types[] = {V4F_TYPE_F16, V4F_TYPE_Q8_0, V4F_TYPE_Q2_K, V4F_TYPE_Q4_K, V4F_TYPE_IQ2_XXS};
    const int64_t n_in = 4096, n_out = 32768;
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        mcase m;
        mcase_make(&m, types[t], n_in, n_out, 0, 0, 0);
        void *dw, *dy;
        float *dx;
        upload_case(c, &m, &dw, &dx);
        TRY(v4f_cuda_alloc(c, (size_t)n_out * sizeof(float), &dy, err));
        const v4f_cuda_mat w = {dw, types[t], n_in, n_out, m.row_bytes};
        TRY(v4f_cuda_matvec(c, &w, dx, dy, err));
        TRY(v4f_cuda_sync(c, err));
        v4f_cuda_free(c, dw);
        v4f_cuda_free(c, dx);
        v4f_cuda_free(c, dy);
        mcase_free(&m);
    }
}

int main(int argc, char **argv) {
    rnd_seed(0x9e3779b97f4a7c15ULL); /* this program's random cases */
    int do_bench = 0, do_profile = 0, bench_planes = 2;
    bool no_evict = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--bench")) do_bench = 1;
        else if (!strcmp(argv[i], "--bench-layer")) do_bench = 2;
        else if (!strcmp(argv[i], "--profile")) do_profile = 1;
        else if (!strcmp(argv[i], "--hot")) g_hot = true;
        else if (!strcmp(argv[i], "--no-evict-first")) no_evict = true;
        else if (!strcmp(argv[i], "--x-planes") && i + 1 < argc) bench_planes = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--bench | --bench-layer | --profile] [--x-planes 2|3 (benches: 2)] [--hot] [--no-evict-first]\n",
                    argv[0]);
            return 2;
        }
    }
    if (v4f_cuda_device_count() == 0) {
        fprintf(stderr, "test_cuda_quant: no CUDA device\n");
        return 2;
    }
    v4f_cuda *c;
    TRY(v4f_cuda_open(0, &c, err));
    printf("device: %s, %d SMs\n", v4f_cuda_device_name(c), v4f_cuda_sm_count(c));
    if (do_bench || do_profile) { /* the default precision's decode: two x planes */
        TRY(v4f_cuda_set_x_planes(c, bench_planes, err));
        v4f_cuda_set_weight_evict_first(c, !no_evict);
        printf("x planes: %d, weight copies %s\n", bench_planes, no_evict ? "plain" : "L2 evict-first");
        if (do_bench == 2) bench_short(c);
        else if (do_bench) bench(c);
        else profile(c);
        v4f_cuda_close(c);
        return 0;
    }
    /* every case with three x planes (the context's default, --precision
     * ref), then with two (the default precision's decode), then two again
     * with plain weight copies (no L2 evict-first hint: the other copy
     * instructions of k_matvec) */
    for (int pass = 0; pass < 3; pass++) {
        g_x_planes = pass ? 2 : 3;
        TRY(v4f_cuda_set_x_planes(c, g_x_planes, err));
        v4f_cuda_set_weight_evict_first(c, pass < 2);
        memset(g_max_err, 0, sizeof g_max_err);
        memset(g_cases, 0, sizeof g_cases);
        conformance(c);
        TRY(v4f_cuda_sync(c, err));
        printf("%d x planes%s: %-8s %6s %12s  (tolerance %.1e of max|w| * sum|x|%s; dequant bit-exact)\n", g_x_planes,
               pass == 2 ? ", plain copies" : "", "type", "cases", "max rel err", V4F_TOL_CUDA_MATVEC,
               g_x_planes == 2 ? " + the planes' residual" : "");
        for (int t = 0; t < V4F_TYPE_COUNT; t++)
            if (g_cases[t]) printf("%-8s %6d %12.3e\n", v4f_type_name((uint32_t)t), g_cases[t], g_max_err[t]);
    }
    v4f_err xerr = {0};
    const v4f_status bad = v4f_cuda_set_x_planes(c, 4, &xerr);
    if (bad != V4F_STATUS_INVALID_ARG) {
        fprintf(stderr, "FAIL v4f_cuda_set_x_planes(4) returned %d\n", (int)bad);
        g_fail++;
    }
    v4f_cuda_close(c);
    printf("%s (%d failures)\n", g_fail ? "FAIL" : "PASS", g_fail);
    return g_fail ? 1 : 0;
}
