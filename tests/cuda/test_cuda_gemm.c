/*
 * test_cuda_gemm.c - conformance test and benchmark of the CUDA prefill
 * GEMMs (src/backend/cuda/cuda_gemm.cu: v4f_cuda_matmul,
 * v4f_cuda_matmul_blockdiag, v4f_cuda_matmul_grouped) through the C API of
 * cuda_backend.h. Built and run by `make CUDA=1 test-cuda`; needs a GPU.
 *
 * Conformance: every weight type, dense, block-diagonal and grouped, exact
 * mode and tensor-core mode (automatic tile and each forced tile
 * configuration, V4F_GEMM_TILE), on seeded random inputs of awkward sizes
 * (n_tok 1, 3, 17, 70, 200; n_out not a multiple of any tile; padded ldx/ldy; misaligned X or W,
 * which sends the tensor-core request to the exact kernel; grouped with
 * empty experts, uneven counts, more experts than threads per CTA, repeated
 * table entries, tab_off > 0 and matrices in host-mapped memory).
 * Y is NaN-poisoned (bytes 0xff) before every launch; every element that
 * must be written is checked finite and every element that must not be
 * written (row padding, rows past the groups) is checked still poisoned.
 * Metric per output: |y - ref| / (max_i |w_oi| * sum_i |x_ti|), ref in
 * double on the host from v4f_dequant_row_ref:
 *  - exact:  vs the float32 inputs, <= V4F_TOL_CUDA_GEMM_EXACT;
 *  - tensor: vs the same inputs rounded to f16 (what the kernel
 *    multiplies), <= V4F_TOL_CUDA_GEMM_TC_ROUNDED, and vs the float32
 *    inputs, <= V4F_TOL_CUDA_GEMM_TC.
 * Reasons in docs/TOLERANCES.md, "## cuda gemm". Exit status 0 only if
 * every check passes.
 *
 * Weight check (part of the conformance run): the tensor-core path must
 * multiply each weight as the reference float of quant_ref.c rounded to
 * f16, bit for bit: one-hot X rows (token t = element t) make Y the
 * dequantized matrix (one nonzero product per output, summed exactly),
 * compared with the host's f16 rounding of v4f_dequant_row_ref for every
 * forced tile, with block scales over the whole f16 range below overflow
 * (subnormal ones included). Prints a hash of the Y bits per type, so two
 * builds can be compared directly. --wcheck runs only this check.
 *
 * --bench [FILTER]: TFLOP/s (median of device-event times of bursts of
 * launches) of the published prefill shapes at n_tok = 2048 or
 * $V4F_BENCH_NTOK (routed
 * experts: 256 distinct matrices, so they stream from DRAM as in the
 * model), tile variants of the large shapes (V4F_GEMM_TILE), and one
 * layer's GEMM set (q2 and q4 models) with the projected whole-model GEMM
 * time per 2048-token chunk. FILTER runs only the shapes whose label
 * contains it (for a profiler).
 *
 * Memory: host and device buffers per case. Threading: single-threaded.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "backend/cuda/cuda_backend.h"
#include "cuda_test_util.h"
#include "core/core.h"
#include "core/ggml_type.h"
#include "quant/quant.h"

/* docs/TOLERANCES.md "## cuda gemm" */
#define V4F_TOL_CUDA_GEMM_EXACT 6e-5
#define V4F_TOL_CUDA_GEMM_TC_ROUNDED 6e-5
#define V4F_TOL_CUDA_GEMM_TC 2e-3

static int g_fail;
static double g_err_exact[V4F_TYPE_COUNT], g_err_tcb[V4F_TYPE_COUNT], g_err_tcf[V4F_TYPE_COUNT];
static int g_cases[V4F_TYPE_COUNT];

#define CU(call)                                                                          \
    do {                                                                                  \
        const cudaError_t e_ = (call);                                                    \
        if (e_ != cudaSuccess) {                                                          \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            exit(2);                                                                      \
        }                                                                                 \
    } while (0)

/* ---- random data (cuda_test_util.h) -------------------------------------------- */

static float h16_round(float v) { return v4f_f16_to_f32(v4f_f32_to_f16(v)); }

/* ---- host matrices --------------------------------------------------------------- */

typedef struct hmat {
    uint32_t type;
    int64_t n_in, n_out;
    uint64_t row_bytes;
    uint8_t *raw;      /* n_out * row_bytes */
    float *wf, *wb;    /* dequantized, and rounded to f16 [n_out][n_in] */
    double *amax, *amaxb;
} hmat;

static void hmat_make(hmat *m, uint32_t type, int64_t n_in, int64_t n_out, uint64_t pad) {
    m->type = type, m->n_in = n_in, m->n_out = n_out;
    m->row_bytes = row_bytes_of(type, n_in) + pad;
    m->raw = v4f_xcalloc((size_t)(n_out * (int64_t)m->row_bytes) + 16, 1);
    m->wf = v4f_xmalloc((size_t)(n_out * n_in) * sizeof(float));
    m->wb = v4f_xmalloc((size_t)(n_out * n_in) * sizeof(float));
    m->amax = v4f_xcalloc((size_t)n_out, sizeof(double));
    m->amaxb = v4f_xcalloc((size_t)n_out, sizeof(double));
    for (int64_t r = 0; r < n_out; r++) {
        fill_row(type, m->raw + r * (int64_t)m->row_bytes, n_in);
        v4f_dequant_row_ref(type, m->raw + r * (int64_t)m->row_bytes, m->wf + r * n_in, n_in);
        for (int64_t i = 0; i < n_in; i++) {
            const float v = m->wf[r * n_in + i], b = h16_round(v);
            m->wb[r * n_in + i] = b;
            if (fabs(v) > m->amax[r]) m->amax[r] = fabs(v);
            if (fabs(b) > m->amaxb[r]) m->amaxb[r] = fabs(b);
        }
    }
}

static void hmat_free(hmat *m) {
    free(m->raw);
    free(m->wf);
    free(m->wb);
    free(m->amax);
    free(m->amaxb);
}

/* Reference of one token row x against matrix rows [o0, o0 + n): the
 * double dot products with the float32 inputs (ref) and with the inputs
 * rounded to f16 (refb), and the metric's scales. */
typedef struct rref {
    double *ref, *refb, *sc, *scb;
} rref;

static void rref_make(rref *r, const hmat *m, int64_t o0, int64_t n, const float *x) {
    const int64_t ni = m->n_in;
    r->ref = v4f_xmalloc((size_t)n * sizeof(double));
    r->refb = v4f_xmalloc((size_t)n * sizeof(double));
    r->sc = v4f_xmalloc((size_t)n * sizeof(double));
    r->scb = v4f_xmalloc((size_t)n * sizeof(double));
    double sx = 0, sxb = 0;
    float *xb = v4f_xmalloc((size_t)ni * sizeof(float));
    for (int64_t i = 0; i < ni; i++) {
        xb[i] = h16_round(x[i]);
        sx += fabs(x[i]);
        sxb += fabs(xb[i]);
    }
    for (int64_t k = 0; k < n; k++) {
        const int64_t o = o0 + k;
        const float *wf = m->wf + o * ni, *wb = m->wb + o * ni;
        double ref = 0, refb = 0;
        for (int64_t i = 0; i < ni; i++) {
            ref += (double)wf[i] * x[i];
            refb += (double)wb[i] * xb[i];
        }
        r->ref[k] = ref;
        r->refb[k] = refb;
        r->sc[k] = m->amax[o] * sx > 1e-30 ? m->amax[o] * sx : 1e-30;
        r->scb[k] = m->amaxb[o] * sxb > 1e-30 ? m->amaxb[o] * sxb : 1e-30;
    }
    free(xb);
}

static void rref_free(rref *r) {
    free(r->ref);
    free(r->refb);
    free(r->sc);
    free(r->scb);
}

/* Check outputs y[0 .. n) against reference rr of matrix m (type and
 * sizes for the report). */
static void check_out(const hmat *m, const rref *rr, int64_t n, const float *y, bool exact, bool rounded_ok,
                      const char *what, int64_t row) {
    for (int64_t k = 0; k < n; k++) {
        const double v = y[k];
        const double ef = isfinite(v) ? fabs(v - rr->ref[k]) / rr->sc[k] : INFINITY;
        bool bad;
        if (exact) {
            bad = !(ef <= V4F_TOL_CUDA_GEMM_EXACT);
            if (ef > g_err_exact[m->type]) g_err_exact[m->type] = ef;
        } else {
            bad = !(ef <= V4F_TOL_CUDA_GEMM_TC);
            if (ef > g_err_tcf[m->type]) g_err_tcf[m->type] = ef;
            if (rounded_ok) {
                const double eb = isfinite(v) ? fabs(v - rr->refb[k]) / rr->scb[k] : INFINITY;
                bad = bad || !(eb <= V4F_TOL_CUDA_GEMM_TC_ROUNDED);
                if (eb > g_err_tcb[m->type]) g_err_tcb[m->type] = eb;
            }
        }
        if (bad) {
            if (g_fail < 20)
                fprintf(stderr, "FAIL %s %s %s n_in %lld n_out %lld row %lld col %lld: got %.9g want %.9g (f16 %.9g)\n",
                        what, exact ? "exact" : "tc", v4f_type_name(m->type), (long long)m->n_in, (long long)n,
                        (long long)row, (long long)k, v, rr->ref[k], rr->refb[k]);
            g_fail++;
        }
    }
}

/* y[from .. to) must still hold the 0xff poison */
static void check_poison(const float *y, int64_t from, int64_t to, const char *what, int64_t row) {
    for (int64_t o = from; o < to; o++) {
        uint32_t bits;
        memcpy(&bits, &y[o], 4);
        if (bits != 0xffffffffu) {
            if (g_fail < 20)
                fprintf(stderr, "FAIL %s: padding column %lld of row %lld was written\n", what, (long long)o,
                        (long long)row);
            g_fail++;
            return;
        }
    }
}

/* Modes of every case: 0 exact; 1.. tensor cores with V4F_GEMM_TILE
 * "0" (automatic) and each forced tile configuration (cuda_gemm.cu, 1..7). */
#define N_TILE_CFGS 7
#define N_MODES (2 + N_TILE_CFGS)
static void set_mode(int mode) {
    if (mode >= 1) {
        char v[4];
        snprintf(v, sizeof v, "%d", mode - 1);
        setenv("V4F_GEMM_TILE", v, 1);
    }
}

/* ---- dense and block-diagonal cases ------------------------------------------------
 * groups > 1: block-diagonal (v4f_cuda_matmul_blockdiag) with `groups`
 * groups of n_out rows of one matrix; else v4f_cuda_matmul. */
static void run_dense(v4f_cuda *c, uint32_t type, int64_t n_in, int64_t n_out, int64_t n_tok, int64_t ldx_pad,
                      int64_t ldy_pad, size_t w_off, size_t x_off, int groups) {
    const int gr = groups > 1 ? groups : 1;
    hmat m;
    hmat_make(&m, type, n_in, n_out * gr, 0);
    const int64_t ldx = n_in * gr + ldx_pad, ldy = n_out * gr + ldy_pad;
    float *hx = v4f_xmalloc((size_t)(n_tok * ldx) * sizeof(float));
    for (int64_t i = 0; i < n_tok * ldx; i++) hx[i] = rnd_f(-1, 1);
    const size_t wbytes = (size_t)(n_out * gr * (int64_t)m.row_bytes);
    void *dw, *dx, *dy;
    TRY(v4f_cuda_alloc(c, wbytes + w_off, &dw, err));
    TRY(v4f_cuda_upload(c, (uint8_t *)dw + w_off, m.raw, wbytes, err));
    TRY(v4f_cuda_alloc(c, (size_t)(n_tok * ldx) * sizeof(float) + x_off * sizeof(float), &dx, err));
    float *x = (float *)dx + x_off;
    TRY(v4f_cuda_upload(c, x, hx, (size_t)(n_tok * ldx) * sizeof(float), err));
    const size_t ybytes = (size_t)(n_tok * ldy) * sizeof(float);
    TRY(v4f_cuda_alloc(c, ybytes, &dy, err));
    float *hy = v4f_xmalloc(ybytes);
    rref *rr = v4f_xmalloc((size_t)(n_tok * gr) * sizeof *rr);
    for (int64_t t = 0; t < n_tok; t++)
        for (int g = 0; g < gr; g++) rref_make(&rr[t * gr + g], &m, g * n_out, n_out, hx + t * ldx + g * n_in);
    const v4f_cuda_mat w = {(uint8_t *)dw + w_off, type, n_in, n_out, m.row_bytes};
    /* the tensor-core path's conditions (else exact runs) */
    const bool tc_path = type != V4F_TYPE_F32 && type != V4F_TYPE_BF16 && n_in % 32 == 0 && m.row_bytes % 16 == 0 &&
                         w_off % 16 == 0 && x_off % 4 == 0 && ldx % 4 == 0;
    const char *what = groups > 1 ? "blockdiag" : "dense";
    for (int mode = 0; mode < N_MODES; mode++) {
        const bool exact = mode == 0;
        set_mode(mode);
        TRY(v4f_cuda_memset(c, dy, 0xff, ybytes, err));
        if (groups > 1)
            TRY(v4f_cuda_matmul_blockdiag(c, &w, groups, x, ldx, n_tok, (float *)dy, ldy, exact, err));
        else
            TRY(v4f_cuda_matmul(c, &w, x, ldx, n_tok, (float *)dy, ldy, exact, err));
        TRY(v4f_cuda_download(c, hy, dy, ybytes, err));
        for (int64_t t = 0; t < n_tok; t++) {
            for (int g = 0; g < gr; g++)
                check_out(&m, &rr[t * gr + g], n_out, hy + t * ldy + g * n_out, exact, tc_path, what, t);
            check_poison(hy + t * ldy, n_out * gr, ldy, what, t);
        }
    }
    unsetenv("V4F_GEMM_TILE");
    g_cases[type]++;
    for (int64_t i = 0; i < n_tok * gr; i++) rref_free(&rr[i]);
    free(rr);
    free(hy);
    free(hx);
    v4f_cuda_free(c, dw);
    v4f_cuda_free(c, dx);
    v4f_cuda_free(c, dy);
    hmat_free(&m);
}

/* ---- grouped cases ------------------------------------------------------------------
 * n_expert groups with counts cnt[]; n_mats distinct matrices, expert e uses
 * matrix e % n_mats; matrices with index in `mapped` (bitmask) live in
 * host-mapped memory; tab has tab_off leading junk entries. */
static void run_grouped(v4f_cuda *c, uint32_t type, int64_t n_in, int64_t n_out, int n_expert, const int32_t *cnt,
                        int n_mats, uint32_t mapped, int64_t extra_rows) {
    hmat *m = v4f_xcalloc((size_t)n_mats, sizeof *m);
    void **dmat = v4f_xcalloc((size_t)n_mats, sizeof *dmat);
    for (int k = 0; k < n_mats; k++) {
        hmat_make(&m[k], type, n_in, n_out, 0);
        const size_t bytes = (size_t)(n_out * (int64_t)m[k].row_bytes);
        if (mapped >> k & 1) {
            void *h = NULL;
            CU(cudaHostAlloc(&h, bytes + 256, cudaHostAllocMapped));
            memcpy(h, m[k].raw, bytes);
            void *d = NULL;
            CU(cudaHostGetDevicePointer(&d, h, 0));
            if (d != h) {
                fprintf(stderr, "host-mapped pointer differs from its device pointer (no UVA?)\n");
                exit(2);
            }
            dmat[k] = h;
        } else {
            TRY(v4f_cuda_alloc(c, bytes, &dmat[k], err));
            TRY(v4f_cuda_upload(c, dmat[k], m[k].raw, bytes, err));
        }
    }
    const int32_t tab_off = 3;
    const void **htab = v4f_xcalloc((size_t)(tab_off + n_expert), sizeof *htab);
    for (int i = 0; i < tab_off; i++) htab[i] = (const void *)(uintptr_t)0x10; /* never read */
    for (int e = 0; e < n_expert; e++) htab[tab_off + e] = dmat[e % n_mats];
    int32_t *hoffs = v4f_xmalloc((size_t)(n_expert + 1) * sizeof(int32_t));
    hoffs[0] = 0;
    for (int e = 0; e < n_expert; e++) hoffs[e + 1] = hoffs[e] + cnt[e];
    const int64_t total = hoffs[n_expert];
    const int64_t ldx = n_in + 4, ldy = n_out + 1, yrows = total + 5;
    float *hx = v4f_xmalloc((size_t)((total ? total : 1) * ldx) * sizeof(float));
    for (int64_t i = 0; i < total * ldx; i++) hx[i] = rnd_f(-1, 1);
    void *dtab, *doffs, *dx, *dy;
    TRY(v4f_cuda_alloc(c, (size_t)(tab_off + n_expert) * sizeof(void *), &dtab, err));
    TRY(v4f_cuda_upload(c, dtab, htab, (size_t)(tab_off + n_expert) * sizeof(void *), err));
    TRY(v4f_cuda_alloc(c, (size_t)(n_expert + 1) * sizeof(int32_t), &doffs, err));
    TRY(v4f_cuda_upload(c, doffs, hoffs, (size_t)(n_expert + 1) * sizeof(int32_t), err));
    TRY(v4f_cuda_alloc(c, (size_t)((total ? total : 1) * ldx) * sizeof(float), &dx, err));
    if (total) TRY(v4f_cuda_upload(c, dx, hx, (size_t)(total * ldx) * sizeof(float), err));
    const size_t ybytes = (size_t)(yrows * ldy) * sizeof(float);
    TRY(v4f_cuda_alloc(c, ybytes, &dy, err));
    float *hy = v4f_xmalloc(ybytes);
    rref *rr = v4f_xmalloc((size_t)(total ? total : 1) * sizeof *rr);
    for (int e = 0; e < n_expert; e++)
        for (int64_t r = hoffs[e]; r < hoffs[e + 1]; r++) rref_make(&rr[r], &m[e % n_mats], 0, n_out, hx + r * ldx);
    const v4f_cuda_mat shape = {NULL, type, n_in, n_out, m[0].row_bytes};
    const bool tc_path = type != V4F_TYPE_F32 && type != V4F_TYPE_BF16 && n_in % 32 == 0 && m[0].row_bytes % 16 == 0 &&
                         ldx % 4 == 0;
    for (int mode = 0; mode < N_MODES; mode++) {
        const bool exact = mode == 0;
        set_mode(mode);
        TRY(v4f_cuda_memset(c, dy, 0xff, ybytes, err));
        TRY(v4f_cuda_matmul_grouped(c, &shape, (const void *const *)dtab, tab_off, (const int32_t *)doffs, n_expert,
                                    total + extra_rows, (const float *)dx, ldx, (float *)dy, ldy, exact, err));
        TRY(v4f_cuda_download(c, hy, dy, ybytes, err));
        for (int e = 0; e < n_expert; e++)
            for (int64_t r = hoffs[e]; r < hoffs[e + 1]; r++) {
                check_out(&m[e % n_mats], &rr[r], n_out, hy + r * ldy, exact, tc_path, "grouped", r);
                check_poison(hy + r * ldy, n_out, ldy, "grouped", r);
            }
        for (int64_t i = total * ldy; i < yrows * ldy; i++) {
            uint32_t bits;
            memcpy(&bits, &hy[i], 4);
            if (bits != 0xffffffffu) {
                if (g_fail < 20) fprintf(stderr, "FAIL grouped %s: row %lld past the groups was written\n",
                                         v4f_type_name(type), (long long)(i / ldy));
                g_fail++;
                break;
            }
        }
    }
    unsetenv("V4F_GEMM_TILE");
    g_cases[type]++;
    for (int64_t r = 0; r < total; r++) rref_free(&rr[r]);
    free(rr);
    for (int k = 0; k < n_mats; k++) {
        if (mapped >> k & 1)
            CU(cudaFreeHost(dmat[k]));
        else
            v4f_cuda_free(c, dmat[k]);
        hmat_free(&m[k]);
    }
    free(m);
    free(dmat);
    free(htab);
    free(hoffs);
    free(hx);
    free(hy);
    v4f_cuda_free(c, dtab);
    v4f_cuda_free(c, doffs);
    v4f_cuda_free(c, dx);
    v4f_cuda_free(c, dy);
}

static void conformance(v4f_cuda *c) {
    static const uint32_t types[] = {V4F_TYPE_F32,  V4F_TYPE_F16,  V4F_TYPE_BF16,   V4F_TYPE_Q8_0,
                                     V4F_TYPE_Q2_K, V4F_TYPE_Q4_K, V4F_TYPE_IQ2_XXS};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const uint32_t type = types[ti];
        const int64_t be = v4f_type_info_get(type)->blck_elems;
        int64_t k1, k2, k3;
        if (be == 1)
            k1 = 96, k2 = 1024, k3 = 100; /* 100: not a multiple of 32 -> exact kernel */
        else if (type == V4F_TYPE_Q8_0)
            k1 = 64, k2 = 1024, k3 = 4096;
        else
            k1 = 256, k2 = 768, k3 = 2048;
        run_dense(c, type, k1, 37, 1, 0, 0, 0, 0, 1);
        run_dense(c, type, k1, 130, 3, 0, 0, 0, 0, 1);
        run_dense(c, type, k2, 300, 17, 8, 3, 0, 0, 1);
        run_dense(c, type, k2, 257, 200, 0, 0, 0, 0, 1);
        run_dense(c, type, k3, 129, 200, 4, 1, 0, 0, 1);
        run_dense(c, type, k2, 65, 130, 0, 0, 0, 1, 1); /* misaligned X -> exact kernel */
        run_dense(c, type, k2, 65, 5, 0, 0, type == V4F_TYPE_F32 ? 4 : 2, 0, 1); /* misaligned W */
        run_dense(c, type, be == 1 ? k2 : k3, 33, 70, 4, 2, 0, 0, 3); /* block-diagonal, 3 groups */
        static const int32_t cnt7[7] = {5, 0, 70, 1, 0, 130, 17};
        run_grouped(c, type, 2048, 130, 7, cnt7, 7, (1u << 2) | (1u << 5), 0); /* 16-byte rows: tensor path */
        run_grouped(c, type, k2, 33, 7, cnt7, 3, 1u << 1, 0);
        /* 300 experts (> threads per CTA), small uneven counts, 5 matrices */
        int32_t cnt300[300];
        for (int e = 0; e < 300; e++) cnt300[e] = (rnd_u64() % 3 == 0) ? 0 : (int32_t)(rnd_u64() % 7);
        cnt300[299] = 66;
        run_grouped(c, type, k1, 40, 300, cnt300, 5, 1u << 1, 33);
    }
}

/* ---- weight check ---------------------------------------------------------------- */

/* random f16 bits: any sign, exponent field 0..emax (0: subnormal or zero) */
static uint16_t rnd_h16(int emax) {
    const uint64_t r = rnd_u64();
    return (uint16_t)((r & 0x83ffu) | (uint16_t)(((r >> 16) % (uint64_t)(emax + 1)) << 10));
}

static void wcheck(v4f_cuda *c) {
    static const uint32_t types[] = {V4F_TYPE_F16, V4F_TYPE_Q8_0, V4F_TYPE_Q2_K, V4F_TYPE_Q4_K, V4F_TYPE_IQ2_XXS};
    const int64_t n_in = 2048, n_out = 256, n_tok = n_in; /* rows of every type 16-byte multiples: tc path */
    float *hx = v4f_xcalloc((size_t)(n_tok * n_in), sizeof(float));
    for (int64_t t = 0; t < n_tok; t++) hx[t * n_in + t] = 1.f;
    void *dx, *dy, *dw;
    TRY(v4f_cuda_alloc(c, (size_t)(n_tok * n_in) * sizeof(float), &dx, err));
    TRY(v4f_cuda_upload(c, dx, hx, (size_t)(n_tok * n_in) * sizeof(float), err));
    const size_t ybytes = (size_t)(n_tok * n_out) * sizeof(float);
    TRY(v4f_cuda_alloc(c, ybytes, &dy, err));
    float *hy = v4f_xmalloc(ybytes), *wb = v4f_xmalloc((size_t)(n_out * n_in) * sizeof(float));
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const uint32_t type = types[ti];
        const uint64_t rb = row_bytes_of(type, n_in);
        uint8_t *raw = v4f_xcalloc((size_t)(n_out * (int64_t)rb), 1);
        const v4f_type_info *inf = v4f_type_info_get(type);
        for (int64_t r = 0; r < n_out; r++) {
            uint8_t *row = raw + r * (int64_t)rb;
            fill_row(type, row, n_in);
            /* scales (F16: the values) over the f16 range that cannot
             * overflow: |d| < 2^6 (Q4_K: 15 * 63 * 64 < 65504), IQ2_XXS
             * and Q8_0 |d| < 2^8 */
            const int64_t nb = n_in / inf->blck_elems;
            for (int64_t b = 0; b < nb; b++) {
                uint8_t *blk = row + b * inf->blck_bytes;
                uint16_t h[2];
                switch (type) {
                case V4F_TYPE_F16: h[0] = rnd_h16(30); memcpy(blk, h, 2); break;
                case V4F_TYPE_Q8_0:
                case V4F_TYPE_IQ2_XXS: h[0] = rnd_h16(22); memcpy(blk, h, 2); break;
                case V4F_TYPE_Q2_K: h[0] = rnd_h16(20), h[1] = rnd_h16(20); memcpy(blk + 80, h, 4); break;
                case V4F_TYPE_Q4_K: h[0] = rnd_h16(20), h[1] = rnd_h16(20); memcpy(blk, h, 4); break;
                default: break;
                }
            }
            v4f_dequant_row_ref(type, row, wb + r * n_in, n_in);
            for (int64_t i = 0; i < n_in; i++) wb[r * n_in + i] = h16_round(wb[r * n_in + i]);
        }
        TRY(v4f_cuda_alloc(c, (size_t)(n_out * (int64_t)rb), &dw, err));
        TRY(v4f_cuda_upload(c, dw, raw, (size_t)(n_out * (int64_t)rb), err));
        const v4f_cuda_mat w = {dw, type, n_in, n_out, rb};
        uint64_t hash = 0xcbf29ce484222325ull;
        int64_t bad = 0;
        for (int mode = 2; mode < N_MODES; mode++) {
            set_mode(mode);
            TRY(v4f_cuda_memset(c, dy, 0xff, ybytes, err));
            TRY(v4f_cuda_matmul(c, &w, (const float *)dx, n_in, n_tok, (float *)dy, n_out, false, err));
            TRY(v4f_cuda_download(c, hy, dy, ybytes, err));
            for (int64_t t = 0; t < n_tok; t++)
                for (int64_t o = 0; o < n_out; o++) {
                    const float y = hy[t * n_out + o], e = wb[o * n_in + t];
                    uint32_t u;
                    memcpy(&u, &y, 4);
                    hash = (hash ^ u) * 0x100000001b3ull;
                    if (!(y == e)) {
                        if (bad < 5)
                            fprintf(stderr, "FAIL wcheck %s tile %d: w[%lld][%lld] = %.9g, want %.9g\n",
                                    v4f_type_name(type), mode - 1, (long long)o, (long long)t, y, e);
                        bad++;
                    }
                }
        }
        unsetenv("V4F_GEMM_TILE");
        printf("wcheck %-8s %lld mismatches, hash %016llx\n", v4f_type_name(type), (long long)bad,
               (unsigned long long)hash);
        if (bad) g_fail++;
        v4f_cuda_free(c, dw);
        free(raw);
    }
    free(hx);
    free(hy);
    free(wb);
    v4f_cuda_free(c, dx);
    v4f_cuda_free(c, dy);
}

/* ---- benchmark ------------------------------------------------------------------------ */

static int cmp_f(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

#define REPS 7
#define BURST 5

typedef struct bmat {
    uint32_t type;
    int64_t n_in, n_out;
    uint64_t rb;
    void *d; /* device */
} bmat;

static void bmat_make(v4f_cuda *c, bmat *b, uint32_t type, int64_t n_in, int64_t n_out, int copies) {
    b->type = type, b->n_in = n_in, b->n_out = n_out;
    b->rb = row_bytes_of(type, n_in);
    const size_t one = (size_t)(b->rb * (uint64_t)n_out);
    uint8_t *h = v4f_xmalloc(one);
    for (int64_t r = 0; r < n_out; r++) fill_row(type, h + r * (int64_t)b->rb, n_in);
    TRY(v4f_cuda_alloc(c, one * (size_t)copies, &b->d, err));
    for (int k = 0; k < copies; k++) TRY(v4f_cuda_upload(c, (uint8_t *)b->d + one * (size_t)k, h, one, err));
    free(h);
}

static void *g_x, *g_y;
static size_t g_x_bytes = (size_t)12288 * 8192 * 4, g_y_bytes = (size_t)2048 * 129280 * 4;

/* median ms per launch of fn over bursts */
typedef void (*launch_fn)(v4f_cuda *c, void *ctx);
static float time_ms(v4f_cuda *c, launch_fn fn, void *ctx) {
    float t[REPS];
    fn(c, ctx);
    TRY(v4f_cuda_sync(c, err));
    for (int r = 0; r < REPS; r++) {
        TRY(v4f_cuda_timer_start(c, err));
        for (int b = 0; b < BURST; b++) fn(c, ctx);
        float ms;
        TRY(v4f_cuda_timer_stop(c, &ms, err));
        t[r] = ms / BURST;
    }
    qsort(t, REPS, sizeof t[0], cmp_f);
    return t[REPS / 2];
}

typedef struct dense_ctx {
    v4f_cuda_mat w;
    int64_t n_tok, ldx, ldy, xoff, yoff;
    bool exact;
    int groups; /* > 1: out_a style, `groups` calls on row slices */
} dense_ctx;

static void dense_launch(v4f_cuda *c, void *p) {
    const dense_ctx *d = p;
    if (d->groups <= 1) {
        TRY(v4f_cuda_matmul(c, &d->w, (const float *)g_x, d->ldx, d->n_tok, (float *)g_y, d->ldy, d->exact, err));
        return;
    }
    v4f_cuda_mat s = d->w; /* one group's rows */
    s.n_out = d->w.n_out / d->groups;
    TRY(v4f_cuda_matmul_blockdiag(c, &s, d->groups, (const float *)g_x, d->ldx, d->n_tok, (float *)g_y, d->ldy,
                                  d->exact, err));
}

typedef struct grouped_ctx {
    v4f_cuda_mat shape;
    void *tab, *offs;
    int n_expert;
    int64_t rows;
    bool exact;
} grouped_ctx;

static void grouped_launch(v4f_cuda *c, void *p) {
    const grouped_ctx *d = p;
    TRY(v4f_cuda_matmul_grouped(c, &d->shape, (const void *const *)d->tab, 0, (const int32_t *)d->offs, d->n_expert,
                                d->rows, (const float *)g_x, d->shape.n_in, (float *)g_y, d->shape.n_out, d->exact, err));
}

/* --bench FILTER: only the shapes whose label contains FILTER (profiling) */
static const char *g_filter;
static bool skipped(const char *label) { return g_filter && !strstr(label, g_filter); }

/* one dense shape (groups > 1: block-diagonal, one launch); returns ms */
/* The prefill GEMM shapes of one layer (the layer set sums them all; the
 * tile sweep times those marked tile_sweep, and every routed shape). */
typedef struct gemm_shape {
    const char *name;
    uint32_t type;
    int64_t n_in, n_out;
    int groups, tile_sweep;
} gemm_shape;
static const gemm_shape k_dense[] = {
    /* attention (Q8_0) */
    {"attn q_a", V4F_TYPE_Q8_0, 4096, 1024, 1, 1},
    {"attn kv", V4F_TYPE_Q8_0, 4096, 512, 1, 1},
    {"attn q_b", V4F_TYPE_Q8_0, 1024, 32768, 1, 1},
    {"attn out_a (8 groups, 1 launch)", V4F_TYPE_Q8_0, 4096, 8192, 8, 1},
    {"attn out_b", V4F_TYPE_Q8_0, 8192, 4096, 1, 1},
    /* shared expert (Q8_0) */
    {"shared gate", V4F_TYPE_Q8_0, 4096, 2048, 1, 1},
    {"shared up", V4F_TYPE_Q8_0, 4096, 2048, 1, 0},
    {"shared down", V4F_TYPE_Q8_0, 2048, 4096, 1, 0},
    /* F16: compressors, indexer, HC, router */
    {"f16 4096->1024", V4F_TYPE_F16, 4096, 1024, 1, 1},
    {"f16 4096->512", V4F_TYPE_F16, 4096, 512, 1, 1},
    {"f16 4096->256", V4F_TYPE_F16, 4096, 256, 1, 1},
    {"f16 4096->64", V4F_TYPE_F16, 4096, 64, 1, 1},
    {"f16 4096->256 (router)", V4F_TYPE_F16, 4096, 256, 1, 0},
    {"f16 hc 16384->24", V4F_TYPE_F16, 16384, 24, 1, 1},
    {"f16 hc 16384->24 (ffn)", V4F_TYPE_F16, 16384, 24, 1, 0},
    {"f16 1024->8192", V4F_TYPE_F16, 1024, 8192, 1, 1},
};
static const gemm_shape k_routed[] = {
    {"routed gate (q2)", V4F_TYPE_IQ2_XXS, 4096, 2048, 1, 1},
    {"routed down (q2)", V4F_TYPE_Q2_K, 2048, 4096, 1, 1},
    {"routed gate (q4)", V4F_TYPE_Q4_K, 4096, 2048, 1, 1},
    {"routed down (q4)", V4F_TYPE_Q4_K, 2048, 4096, 1, 1},
};

static float bench_dense(v4f_cuda *c, const char *label, uint32_t type, int64_t n_in, int64_t n_out, int groups,
                         bool exact, int64_t n_tok) {
    if (skipped(label)) return 0.f;
    bmat b;
    bmat_make(c, &b, type, n_in, n_out, 1);
    dense_ctx d = {{b.d, type, n_in, n_out, b.rb}, n_tok, groups > 1 ? n_in * groups : n_in, n_out, 0, 0, exact, groups};
    const float ms = time_ms(c, dense_launch, &d);
    const double fl = 2.0 * (double)n_tok * (double)n_in * (double)n_out;
    printf("%-28s %-8s %6lld x %5lld -> %6lld %s  %8.3f ms  %7.1f TFLOP/s\n", label, v4f_type_name(type),
           (long long)n_tok, (long long)(groups > 1 ? n_in : n_in), (long long)n_out, exact ? "exact" : "tc   ", ms,
           fl / (ms * 1e-3) / 1e12);
    fflush(stdout);
    v4f_cuda_free(c, b.d);
    return ms;
}

/* routed experts: 256 experts, each its own matrix (as in the model: the
 * weights stream from DRAM, not L2), n_tok * 6 rows with uneven counts;
 * returns ms */
static float bench_grouped(v4f_cuda *c, const char *label, uint32_t type, int64_t n_in, int64_t n_out, int64_t n_tok,
                           bool exact) {
    if (skipped(label)) return 0.f;
    const int n_expert = 256, distinct = 256;
    bmat b;
    bmat_make(c, &b, type, n_in, n_out, distinct);
    const size_t one = (size_t)(b.rb * (uint64_t)n_out);
    void *htab[256];
    for (int e = 0; e < n_expert; e++) htab[e] = (uint8_t *)b.d + one * (size_t)(e % distinct);
    const int64_t rows = n_tok * 6;
    int32_t cnt[256] = {0}, offs[257];
    /* skewed: expert e has weight 1 + (e % 7) */
    for (int64_t r = 0; r < rows; r++) {
        for (;;) {
            const int e = (int)(rnd_u64() % 256);
            if ((int)(rnd_u64() % 7) <= e % 7) {
                cnt[e]++;
                break;
            }
        }
    }
    offs[0] = 0;
    int mx = 0, mn = 1 << 30;
    for (int e = 0; e < n_expert; e++) {
        offs[e + 1] = offs[e] + cnt[e];
        mx = cnt[e] > mx ? cnt[e] : mx;
        mn = cnt[e] < mn ? cnt[e] : mn;
    }
    grouped_ctx d = {{NULL, type, n_in, n_out, b.rb}, NULL, NULL, n_expert, rows, exact};
    TRY(v4f_cuda_alloc(c, sizeof htab, &d.tab, err));
    TRY(v4f_cuda_upload(c, d.tab, htab, sizeof htab, err));
    TRY(v4f_cuda_alloc(c, sizeof offs, &d.offs, err));
    TRY(v4f_cuda_upload(c, d.offs, offs, sizeof offs, err));
    const float ms = time_ms(c, grouped_launch, &d);
    const double fl = 2.0 * (double)rows * (double)n_in * (double)n_out;
    printf("%-28s %-8s %6lld x %5lld -> %6lld %s  %8.3f ms  %7.1f TFLOP/s  (256 experts, rows %d..%d)\n", label,
           v4f_type_name(type), (long long)rows, (long long)n_in, (long long)n_out, exact ? "exact" : "tc   ", ms,
           fl / (ms * 1e-3) / 1e12, mn, mx);
    fflush(stdout);
    v4f_cuda_free(c, d.tab);
    v4f_cuda_free(c, d.offs);
    v4f_cuda_free(c, b.d);
    return ms;
}

static void bench(v4f_cuda *c) {
    /* V4F_BENCH_NTOK: another token count (the prefill chunk is up to 8,192;
     * routed experts then get about n_tok * 6 / 256 rows each) */
    const char *nt = getenv("V4F_BENCH_NTOK");
    const int64_t T = nt && atoll(nt) > 0 && atoll(nt) <= 16384 ? atoll(nt) : 2048;
    if (T > 2048) {
        g_x_bytes = (size_t)(6 * T) * 8192 * 4;
        g_y_bytes = (size_t)T * 129280 * 4;
    }
    TRY(v4f_cuda_alloc(c, g_x_bytes, &g_x, err));
    TRY(v4f_cuda_alloc(c, g_y_bytes, &g_y, err));
    {   /* random X (never zeros) */
        const size_t n = g_x_bytes / 4, chunk = (size_t)1 << 24;
        float *h = v4f_xmalloc(chunk * 4);
        for (size_t i = 0; i < chunk; i++) h[i] = rnd_f(-1, 1);
        for (size_t o = 0; o < n; o += chunk)
            TRY(v4f_cuda_upload(c, (float *)g_x + o, h, (n - o < chunk ? n - o : chunk) * 4, err));
        free(h);
    }
    printf("== per shape, n_tok %lld (tile auto unless noted)\n", (long long)T);
    double fl_q2 = 0, ms_q2 = 0, fl_q4 = 0, ms_q4 = 0;
    for (size_t i = 0; i < sizeof k_dense / sizeof k_dense[0]; i++) {
        const gemm_shape *sh = &k_dense[i];
        const float ms_ = bench_dense(c, sh->name, sh->type, sh->n_in, sh->n_out, sh->groups, false, T);
        const double f_ = 2.0 * (double)T * (double)sh->n_in * (double)sh->n_out;
        fl_q2 += f_, ms_q2 += ms_, fl_q4 += f_, ms_q4 += ms_;
    }
    /* routed experts */
    {
        const double fg = 2.0 * (double)(T * 6) * 4096.0 * 2048.0;
        const float g2 = bench_grouped(c, "routed gate (q2)", V4F_TYPE_IQ2_XXS, 4096, 2048, T, false);
        bench_grouped(c, "routed gate (q2) again", V4F_TYPE_IQ2_XXS, 4096, 2048, T, false); /* spread */
        const float d2 = bench_grouped(c, "routed down (q2)", V4F_TYPE_Q2_K, 2048, 4096, T, false);
        const float g4 = bench_grouped(c, "routed gate (q4)", V4F_TYPE_Q4_K, 4096, 2048, T, false);
        const float d4 = bench_grouped(c, "routed down (q4)", V4F_TYPE_Q4_K, 2048, 4096, T, false);
        fl_q2 += 3 * fg, ms_q2 += 2 * g2 + d2;
        fl_q4 += 3 * fg, ms_q4 += 2 * g4 + d4;
    }
    const float lm = bench_dense(c, "lm head", V4F_TYPE_Q8_0, 4096, 129280, 1, false, T);
    if (!g_filter) {
        printf("== one layer's GEMM set at n_tok %lld\n", (long long)T);
        printf("q2 layer: %.3f ms, %.1f TFLOP/s; 43 layers + head: %.1f ms per chunk -> %.0f tokens/s (GEMMs only)\n",
               ms_q2, fl_q2 / (ms_q2 * 1e-3) / 1e12, 43 * ms_q2 + lm, T / ((43 * ms_q2 + lm) * 1e-3));
        printf("q4 layer: %.3f ms, %.1f TFLOP/s; 43 layers + head: %.1f ms per chunk -> %.0f tokens/s (GEMMs only)\n",
               ms_q4, fl_q4 / (ms_q4 * 1e-3) / 1e12, 43 * ms_q4 + lm, T / ((43 * ms_q4 + lm) * 1e-3));
    }
    printf("== tile variants (V4F_GEMM_TILE, W rows x tokens, warps W x tokens, X staging: 1=256x64 8x1 cp, "
           "2=128x128 8x1 cp, 3=128x64 8x1 cp, 4=128x128 4x2 reg, 5=256x64 8x1 reg, 6=128x64 4x2 reg, "
           "7=128x128 4x2 cp)\n");
    for (int k = 1; k <= N_TILE_CFGS; k++) {
        char v[4];
        snprintf(v, sizeof v, "%d", k);
        setenv("V4F_GEMM_TILE", v, 1);
        char l[64];
        for (size_t i = 0; i < sizeof k_dense / sizeof k_dense[0]; i++) {
            const gemm_shape *sh = &k_dense[i];
            if (!sh->tile_sweep) continue;
            snprintf(l, sizeof l, "tile %d %s", k, sh->name);
            bench_dense(c, l, sh->type, sh->n_in, sh->n_out, sh->groups, false, T);
        }
        for (size_t i = 0; i < sizeof k_routed / sizeof k_routed[0]; i++) {
            snprintf(l, sizeof l, "tile %d %s", k, k_routed[i].name);
            bench_grouped(c, l, k_routed[i].type, k_routed[i].n_in, k_routed[i].n_out, T, false);
        }
    }
    unsetenv("V4F_GEMM_TILE");
    printf("== exact (reference) mode\n");
    bench_dense(c, "exact out_b", V4F_TYPE_Q8_0, 8192, 4096, 1, true, T);
    bench_grouped(c, "exact routed gate", V4F_TYPE_IQ2_XXS, 4096, 2048, T, true);
    v4f_cuda_free(c, g_x);
    v4f_cuda_free(c, g_y);
}

int main(int argc, char **argv) {
    int do_bench = 0, only_w = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--wcheck")) {
            only_w = 1;
        } else if (!strcmp(argv[i], "--bench")) {
            do_bench = 1;
            if (i + 1 < argc) g_filter = argv[++i];
        } else {
            fprintf(stderr, "usage: %s [--wcheck | --bench [FILTER]]\n", argv[0]);
            return 2;
        }
    }
    if (v4f_cuda_device_count() == 0) {
        fprintf(stderr, "test_cuda_gemm: no CUDA device\n");
        return 2;
    }
    v4f_cuda *c;
    TRY(v4f_cuda_open(0, &c, err));
    printf("device: %s, %d SMs\n", v4f_cuda_device_name(c), v4f_cuda_sm_count(c));
    if (do_bench) {
        bench(c);
        TRY(v4f_cuda_sync(c, err));
        v4f_cuda_close(c);
        return 0;
    }
    if (!only_w) conformance(c);
    wcheck(c);
    TRY(v4f_cuda_sync(c, err));
    printf("%-8s %5s %12s %12s %12s  (tolerances: exact %.0e, tc vs f16-rounded %.0e, tc vs f32 %.0e)\n", "type",
           "cases", "exact", "tc(f16 in)", "tc(f32 in)", V4F_TOL_CUDA_GEMM_EXACT, V4F_TOL_CUDA_GEMM_TC_ROUNDED,
           V4F_TOL_CUDA_GEMM_TC);
    for (int t = 0; t < V4F_TYPE_COUNT; t++)
        if (g_cases[t])
            printf("%-8s %5d %12.3e %12.3e %12.3e\n", v4f_type_name((uint32_t)t), g_cases[t], g_err_exact[t],
                   g_err_tcb[t], g_err_tcf[t]);
    v4f_cuda_close(c);
    printf("%s (%d failures)\n", g_fail ? "FAIL" : "PASS", g_fail);
    return g_fail ? 1 : 0;
}
