/*
 * membw.h - the machine's streaming-read bandwidth (the roofline every
 * decode speed is reported against): n threads each sum a disjoint slice of
 * a large buffer, as a plain read and with a software prefetch ahead; best
 * of several runs of the better variant.
 *
 * Ownership: the buffer is allocated and freed inside the call.
 * Threading: spawns its own worker pool for the duration of the call.
 */
#ifndef V4F_MEMBW_H
#define V4F_MEMBW_H

#include <stdint.h>

#include "core/core.h"

typedef struct v4f_membw_result {
    double best_gbs;   /* best run, 1e9 bytes per second */
    double median_gbs; /* median run (of the variant with the best run) */
    uint64_t bytes;    /* buffer size actually used */
    int n_threads;
    int runs;
    uint64_t checksum; /* sum of the data (keeps the reads alive) */
    int prefetched;    /* the best run was the prefetching variant */
} v4f_membw_result;

/* bytes: buffer size (0: 1 GiB); n_threads <= 0: all CPUs; runs <= 0: 5. */
v4f_status v4f_membw_measure(uint64_t bytes, int n_threads, int runs, v4f_membw_result *out,
                             v4f_err *err);

#endif /* V4F_MEMBW_H */
