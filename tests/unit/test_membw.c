/*
 * test_membw.c - the streaming-read bandwidth probe returns a plausible,
 * positive figure and rejects a too-small buffer.
 */
#include "../test.h"
#include "core/membw.h"

TEST(membw_small_buffer) {
    v4f_membw_result r;
    v4f_err err = {0};
    CHECK_STATUS(v4f_membw_measure(16u << 20, 1, 3, &r, &err), V4F_OK);
    CHECK(r.best_gbs > 0.05 && r.best_gbs < 1e5);
    CHECK(r.median_gbs > 0 && r.median_gbs <= r.best_gbs);
    CHECK_EQ_INT(r.bytes, 16u << 20);
    CHECK_EQ_INT(r.n_threads, 1);
    CHECK_STATUS(v4f_membw_measure(1000, 1, 1, &r, &err), V4F_STATUS_INVALID_ARG);
}
