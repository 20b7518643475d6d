/*
 * threadpool.c - persistent pthread pool (see threadpool.h).
 *
 * Protocol. A job (fn, ctx, n_tasks) is published in slot gen % 2 and made
 * claimable by storing ticket = (gen << 32 | 0). Anyone (owner or worker)
 * claims task i by a CAS of ticket (gen, i) -> (gen, i + 1) with i < n_tasks;
 * the CAS validates the snapshot of the job fields it read, so a worker that
 * wakes late for an old generation can never run a task of a newer job with
 * stale fields (the fields of slot gen % 2 are rewritten only for gen + 2,
 * after the ticket has left gen; fields are written with release and read
 * with acquire so that a worker that sees new fields also sees the newer
 * ticket). Completion is counted per task (`done`), not per worker: the
 * owner never waits for a worker that did not take part, so a descheduled
 * or sleeping worker costs nothing.
 *
 * Waiting: idle workers spin for a while on the ticket's generation, then
 * sleep on cv_work (the owner broadcasts only if someone sleeps); the owner
 * spins on `done`, then sleeps on cv_done (the finisher of the last task
 * signals only if the owner sleeps). Sleep flags are re-checked under the
 * mutex, so no wake-up is lost.
 *
 * Ownership: the pool owns its threads and the sync objects.
 * Threading: one owner thread calls v4f_pool_run; workers only run tasks.
 */
#include "core/threadpool.h"

#include "core/core.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#define SPIN_ITERS 20000

typedef struct job_slot {
    _Atomic(v4f_pool_fn) fn;
    _Atomic(void *) ctx;
    _Atomic int64_t n_tasks;
} job_slot;

struct v4f_pool {
    int n_threads; /* including the owner */
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    _Atomic uint64_t ticket; /* gen << 32 | next task */
    _Atomic int64_t done;    /* tasks finished in the current generation */
    _Atomic int n_sleeping;  /* workers waiting on cv_work */
    _Atomic int owner_sleeping;
    _Atomic int stop;
    job_slot slot[2];
    uint32_t gen; /* owner-only copy of the current generation */
    uint64_t regions; /* owner-only: parallel regions started */
    int timing;       /* owner-only: sum region wall time into region_s */
    double region_s;
};

typedef struct {
    v4f_pool *pool;
    int id;
} worker_arg;

int v4f_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* Claim and run tasks of generation g until none is left (or the ticket
 * moved on). */
static void run_tasks(v4f_pool *p, uint32_t g, int id) {
    job_slot *js = &p->slot[g & 1];
    for (;;) {
        uint64_t t = atomic_load_explicit(&p->ticket, memory_order_acquire);
        if ((uint32_t)(t >> 32) != g) return;
        v4f_pool_fn fn = atomic_load_explicit(&js->fn, memory_order_acquire);
        void *ctx = atomic_load_explicit(&js->ctx, memory_order_acquire);
        int64_t n = atomic_load_explicit(&js->n_tasks, memory_order_acquire);
        uint32_t i = (uint32_t)t;
        if ((int64_t)i >= n) return;
        if (!atomic_compare_exchange_weak_explicit(&p->ticket, &t, t + 1, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue;
        fn(ctx, (int64_t)i, id);
        /* seq_cst pair with the owner's (store owner_sleeping; load done) */
        if (atomic_fetch_add(&p->done, 1) + 1 == n && atomic_load(&p->owner_sleeping)) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->cv_done);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

static void *worker_main(void *arg) {
    worker_arg *wa = arg;
    v4f_pool *p = wa->pool;
    int id = wa->id;
    free(wa);
    uint32_t seen = 0;
    for (;;) {
        uint32_t g = (uint32_t)(atomic_load_explicit(&p->ticket, memory_order_acquire) >> 32);
        for (int i = 0; g == seen && i < SPIN_ITERS; i++) {
            v4f_cpu_relax();
            g = (uint32_t)(atomic_load_explicit(&p->ticket, memory_order_acquire) >> 32);
        }
        if (g == seen) {
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->n_sleeping, 1);
            while ((g = (uint32_t)(atomic_load(&p->ticket) >> 32)) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->cv_work, &p->mu);
            atomic_fetch_sub(&p->n_sleeping, 1);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) break;
        seen = g;
        run_tasks(p, g, id);
    }
    return NULL;
}

v4f_pool *v4f_pool_new(int n_threads) {
    if (n_threads <= 0) n_threads = v4f_cpu_count();
    v4f_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv_work, NULL);
    pthread_cond_init(&p->cv_done, NULL);
    atomic_init(&p->ticket, 0);
    atomic_init(&p->done, 0);
    atomic_init(&p->n_sleeping, 0);
    atomic_init(&p->owner_sleeping, 0);
    atomic_init(&p->stop, 0);
    for (int i = 0; i < 2; i++) {
        atomic_init(&p->slot[i].fn, NULL);
        atomic_init(&p->slot[i].ctx, NULL);
        atomic_init(&p->slot[i].n_tasks, 0);
    }
    if (n_threads > 1) {
        p->threads = calloc((size_t)n_threads - 1, sizeof *p->threads);
        if (!p->threads) {
            free(p);
            return NULL;
        }
        for (int i = 1; i < n_threads; i++) {
            worker_arg *wa = malloc(sizeof *wa);
            if (wa) *wa = (worker_arg){p, i};
            if (!wa || pthread_create(&p->threads[i - 1], NULL, worker_main, wa) != 0) {
                free(wa);
                p->n_threads = i; /* join only those started */
                v4f_pool_free(p);
                return NULL;
            }
        }
    }
    return p;
}

void v4f_pool_free(v4f_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n_threads; i++) pthread_join(p->threads[i - 1], NULL);
    free(p->threads);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv_work);
    pthread_cond_destroy(&p->cv_done);
    free(p);
}

int v4f_pool_size(const v4f_pool *p) { return p ? p->n_threads : 1; }

uint64_t v4f_pool_regions(const v4f_pool *p) { return p ? p->regions : 0; }
void v4f_pool_set_timing(v4f_pool *p, int on) {
    if (p) p->timing = on;
}
double v4f_pool_region_s(const v4f_pool *p) { return p ? p->region_s : 0.0; }

static void pool_run(v4f_pool *p, int64_t n_tasks, v4f_pool_fn fn, void *ctx);

void v4f_pool_run(v4f_pool *p, int64_t n_tasks, v4f_pool_fn fn, void *ctx) {
    if (p && p->timing && p->n_threads > 1 && n_tasks > 1) {
        const double t0 = v4f_time_s();
        pool_run(p, n_tasks, fn, ctx);
        p->region_s += v4f_time_s() - t0;
        return;
    }
    pool_run(p, n_tasks, fn, ctx);
}

static void pool_run(v4f_pool *p, int64_t n_tasks, v4f_pool_fn fn, void *ctx) {
    if (n_tasks <= 0) return;
    if (!p || p->n_threads == 1 || n_tasks == 1) {
        for (int64_t t = 0; t < n_tasks; t++) fn(ctx, t, 0);
        return;
    }
    /* generations alternate between the two job slots; gen 0 (the initial
     * ticket) is "nothing yet" only before the first job, and wrapping keeps
     * the parity alternating */
    uint32_t g = ++p->gen;
    p->regions++;
    job_slot *js = &p->slot[g & 1];
    atomic_store_explicit(&js->fn, fn, memory_order_release);
    atomic_store_explicit(&js->ctx, ctx, memory_order_release);
    atomic_store_explicit(&js->n_tasks, n_tasks, memory_order_release);
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    atomic_store(&p->ticket, (uint64_t)g << 32); /* seq_cst: pairs with n_sleeping */
    if (atomic_load(&p->n_sleeping) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv_work);
        pthread_mutex_unlock(&p->mu);
    }

    run_tasks(p, g, 0);

    for (int i = 0; i < SPIN_ITERS; i++) {
        if (atomic_load_explicit(&p->done, memory_order_acquire) == n_tasks) return;
        v4f_cpu_relax();
    }
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->owner_sleeping, 1);
    while (atomic_load(&p->done) != n_tasks)
        pthread_cond_wait(&p->cv_done, &p->mu);
    atomic_store(&p->owner_sleeping, 0);
    pthread_mutex_unlock(&p->mu);
}
