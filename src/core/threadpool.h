/*
 * threadpool.h - a persistent pthread pool with a parallel-for primitive.
 *
 * v4f_pool_run(pool, n_tasks, fn, ctx) runs fn(ctx, task, thread) for every
 * task in [0, n_tasks) on the pool's threads (the caller's thread is worker
 * 0 and takes part) and returns when all tasks are done (a full barrier:
 * every write made by a task is visible to the caller afterwards). Tasks are
 * handed out dynamically (an atomic counter), so per-task work may vary.
 * `thread` is in [0, v4f_pool_size(pool)) and is stable for the duration of
 * one task: use it to index per-thread scratch.
 *
 * Latency: idle workers spin for a short while (a decode step issues many
 * small parallel-fors back to back) and then sleep on a condition variable.
 *
 * Ownership: the pool owns its threads; v4f_pool_free joins them.
 * Threading: v4f_pool_run must be called from one thread at a time (the
 * owner); it is not re-entrant (fn must not call v4f_pool_run on the same
 * pool). A NULL pool or a pool of size 1 runs everything inline.
 */
#ifndef V4F_THREADPOOL_H
#define V4F_THREADPOOL_H

#include <stdint.h>

typedef struct v4f_pool v4f_pool;
typedef void (*v4f_pool_fn)(void *ctx, int64_t task, int thread);

/* n_threads <= 0: use the number of online CPUs. Returns NULL on failure. */
v4f_pool *v4f_pool_new(int n_threads);
void v4f_pool_free(v4f_pool *pool);
int v4f_pool_size(const v4f_pool *pool); /* 1 for NULL */
void v4f_pool_run(v4f_pool *pool, int64_t n_tasks, v4f_pool_fn fn, void *ctx);
/* Parallel regions started so far (v4f_pool_run calls that woke the pool);
 * read by the owner thread only (profiling). 0 for NULL. */
uint64_t v4f_pool_regions(const v4f_pool *pool);
/* Profiling: with timing on, the pool sums the wall time the owner spends
 * inside parallel regions (two clock reads per region); v4f_pool_region_s
 * returns that sum. The time outside it is the owner's serial work. Owner
 * thread only; 0 for NULL or with timing off. */
void v4f_pool_set_timing(v4f_pool *pool, int on);
double v4f_pool_region_s(const v4f_pool *pool);
/* Spin-wait hint (pause) for a loop polling another thread's flag. */
static inline void v4f_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}
/* Number of online CPUs (>= 1). */
int v4f_cpu_count(void);

#endif /* V4F_THREADPOOL_H */
