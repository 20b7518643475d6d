/*
 * membw.c - streaming-read bandwidth probe (see membw.h).
 *
 * Each run hands every thread a contiguous slice (64-byte aligned) and sums
 * it with 8 independent 64-bit accumulators (the compiler vectorises the
 * loop); the elapsed time covers the parallel-for barrier to barrier.
 * Every run is made twice, as a plain read and with a software prefetch
 * MEMBW_PF_BYTES ahead (as the decode kernels read their weights), and the
 * result is the better of the two: on the 16-core Xeon host the plain read
 * gave 87-92 GB/s while a Q8_0 decode matvec with a 4 KiB prefetch streamed
 * 110 GB/s from the same DRAM (docs/PERF_NOTES.md, session 8), so the plain
 * read alone understated the machine.
 * Owns only the temporary buffer and pool of one call.
 */
#include <stdlib.h>
#include <string.h>

#include "core/membw.h"
#include "core/threadpool.h"

#define MEMBW_PF_BYTES 4096

typedef struct bw_job {
    const uint64_t *buf;
    uint64_t n_words;
    int n_tasks;
    int prefetch; /* this run: with the software prefetch */
    uint64_t sums[256];
} bw_job;

/* the sum of p[0..n) with 8 independent accumulators; pf: a software
 * prefetch that many bytes ahead (0: none; a constant after inlining) */
static inline uint64_t sum_words(const uint64_t *p, uint64_t n, uint64_t pf) {
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
    uint64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        if (pf) __builtin_prefetch(p + i + pf / 8, 0, 3);
        a0 += p[i];
        a1 += p[i + 1];
        a2 += p[i + 2];
        a3 += p[i + 3];
        a4 += p[i + 4];
        a5 += p[i + 5];
        a6 += p[i + 6];
        a7 += p[i + 7];
    }
    for (; i < n; i++) a0 += p[i];
    return a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
}

static void bw_task(void *ctx, int64_t task, int thread) {
    bw_job *j = ctx;
    uint64_t per = (j->n_words / (uint64_t)j->n_tasks) & ~(uint64_t)7;
    uint64_t a = (uint64_t)task * per;
    uint64_t b = task == j->n_tasks - 1 ? j->n_words : a + per;
    j->sums[task] = j->prefetch ? sum_words(j->buf + a, b - a, MEMBW_PF_BYTES) : sum_words(j->buf + a, b - a, 0);
}

static void fill_task(void *ctx, int64_t task, int thread) {
    bw_job *j = ctx;
    uint64_t per = (j->n_words / (uint64_t)j->n_tasks) & ~(uint64_t)7;
    uint64_t a = (uint64_t)task * per;
    uint64_t b = task == j->n_tasks - 1 ? j->n_words : a + per;
    uint64_t *w = (uint64_t *)j->buf;
    for (uint64_t i = a; i < b; i++) w[i] = i * 0x9E3779B97F4A7C15ULL;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

v4f_status v4f_membw_measure(uint64_t bytes, int n_threads, int runs, v4f_membw_result *out,
                             v4f_err *err) {
    memset(out, 0, sizeof *out);
    if (bytes == 0) bytes = 1ull << 30;
    if (runs <= 0) runs = 5;
    if (runs > 64) runs = 64;
    bytes &= ~(uint64_t)63;
    if (bytes < (1u << 20))
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "membw: buffer of %llu bytes is too small",
                           (unsigned long long)bytes);
    uint64_t *buf = v4f_aligned_alloc(bytes);
    if (!buf)
        return v4f_err_set(err, V4F_STATUS_OOM, "membw: cannot allocate %llu bytes",
                           (unsigned long long)bytes);
    v4f_pool *pool = v4f_pool_new(n_threads);
    if (!pool) {
        v4f_aligned_free(buf);
        return v4f_err_set(err, V4F_STATUS_OOM, "membw: cannot start threads");
    }
    bw_job *j = v4f_xcalloc(1, sizeof *j);
    j->buf = buf;
    j->n_words = bytes / 8;
    j->n_tasks = v4f_pool_size(pool);
    if (j->n_tasks > 256) j->n_tasks = 256;
    v4f_pool_run(pool, j->n_tasks, fill_task, j); /* first touch by the readers' threads */
    double t[2][64];
    uint64_t check = 0;
    v4f_pool_run(pool, j->n_tasks, bw_task, j); /* warm-up */
    for (int r = 0; r < runs; r++)
        for (int v = 0; v < 2; v++) { /* plain, prefetched: alternating, alike in the machine's load */
            j->prefetch = v;
            double t0 = v4f_time_s();
            v4f_pool_run(pool, j->n_tasks, bw_task, j);
            t[v][r] = v4f_time_s() - t0;
            for (int k = 0; k < j->n_tasks; k++) check += j->sums[k];
        }
    for (int v = 0; v < 2; v++) qsort(t[v], (size_t)runs, sizeof t[v][0], cmp_d);
    const int vb = t[1][0] < t[0][0]; /* the variant with the best run */
    out->best_gbs = (double)bytes / t[vb][0] / 1e9;
    out->median_gbs = (double)bytes / t[vb][runs / 2] / 1e9;
    out->prefetched = vb;
    out->bytes = bytes;
    out->n_threads = v4f_pool_size(pool);
    out->runs = runs;
    out->checksum = check;
    free(j);
    v4f_pool_free(pool);
    v4f_aligned_free(buf);
    return V4F_OK;
}
