/*
 * cuda_test_util.h - what the CUDA test programs share: the TRY macro (a
 * failing backend call ends the program with its message), the seeded
 * random stream and random packed weight rows of every format.
 *
 * Threading: single-threaded test programs only (one global random state).
 */
#ifndef V4F_CUDA_TEST_UTIL_H
#define V4F_CUDA_TEST_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/core.h"

/* Run a v4f call with a fresh v4f_err named err; on failure print the call
 * and its message and exit(2). */
#define TRY(call)                                                                              \
    do {                                                                                       \
        v4f_err e_ = {0};                                                                      \
        v4f_err *err = &e_;                                                                    \
        if ((call) != V4F_OK) {                                                                \
            fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call, err->msg);     \
            exit(2);                                                                           \
        }                                                                                      \
    } while (0)

/* The random stream (splitmix64), seeded 0x243f6a8885a308d3 until rnd_seed. */
void rnd_seed(uint64_t seed);
uint64_t rnd_u64(void);
/* Uniform in [lo, hi). */
float rnd_f(float lo, float hi);

/* Bytes of one row of n_in elements of type (exits on a bad shape). */
uint64_t row_bytes_of(uint32_t type, int64_t n_in);
/* Store v as f16 at p (any alignment). */
void put_f16(uint8_t *p, float v);
/* One packed row of n_in random weights: floats in [-1, 1), or random code
 * bytes with sane block scales for the quantized types. */
void fill_row(uint32_t type, uint8_t *row, int64_t n_in);

#endif /* V4F_CUDA_TEST_UTIL_H */
