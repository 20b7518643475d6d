/*
 * cuda_test_util.c - shared helpers of the CUDA test programs (see
 * cuda_test_util.h).
 */
#include "cuda_test_util.h"

#include <string.h>

#include "core/ggml_type.h"
#include "quant/quant.h"

static uint64_t g_rng = 0x243f6a8885a308d3ULL;

void rnd_seed(uint64_t seed) { g_rng = seed; }

uint64_t rnd_u64(void) {
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

float rnd_f(float lo, float hi) { return lo + (hi - lo) * (float)((rnd_u64() >> 40) * (1.0 / 16777216.0)); }

uint64_t row_bytes_of(uint32_t type, int64_t n_in) {
    uint64_t rb = 0;
    if (!v4f_type_row_bytes(type, (uint64_t)n_in, &rb)) {
        fprintf(stderr, "bad shape %s %lld\n", v4f_type_name(type), (long long)n_in);
        exit(2);
    }
    return rb;
}

void put_f16(uint8_t *p, float v) {
    const uint16_t h = v4f_f32_to_f16(v);
    memcpy(p, &h, 2);
}

void fill_row(uint32_t type, uint8_t *row, int64_t n_in) {
    const uint64_t rb = row_bytes_of(type, n_in);
    if (type == V4F_TYPE_F32) {
        for (int64_t i = 0; i < n_in; i++) {
            const float v = rnd_f(-1, 1);
            memcpy(row + 4 * i, &v, 4);
        }
        return;
    }
    if (type == V4F_TYPE_F16 || type == V4F_TYPE_BF16) {
        for (int64_t i = 0; i < n_in; i++) {
            const float v = rnd_f(-1, 1);
            const uint16_t h = type == V4F_TYPE_F16 ? v4f_f32_to_f16(v) : v4f_f32_to_bf16(v);
            memcpy(row + 2 * i, &h, 2);
        }
        return;
    }
    for (uint64_t i = 0; i < rb; i += 8) {
        const uint64_t r = rnd_u64();
        memcpy(row + i, &r, rb - i < 8 ? rb - i : 8);
    }
    const v4f_type_info *ti = v4f_type_info_get(type);
    for (int64_t b = 0; b < n_in / ti->blck_elems; b++) {
        uint8_t *blk = row + b * ti->blck_bytes;
        switch (type) {
        case V4F_TYPE_Q8_0: put_f16(blk, rnd_f(-0.02f, 0.02f)); break;
        case V4F_TYPE_Q2_K:
            put_f16(blk + 80, rnd_f(0, 0.05f));
            put_f16(blk + 82, rnd_f(0, 0.05f));
            break;
        case V4F_TYPE_Q4_K:
            put_f16(blk, rnd_f(0, 0.01f));
            put_f16(blk + 2, rnd_f(0, 0.01f));
            break;
        case V4F_TYPE_IQ2_XXS: put_f16(blk, rnd_f(-0.01f, 0.01f)); break;
        default: break;
        }
    }
}
