/*
 * test_core.c - small core helpers: the bounded environment knobs.
 */
#include <stdlib.h>

#include "../test.h"
#include "core/core.h"

/* v4f_env_u32: the default when unset or empty, the leading integer
 * otherwise, clamped to [lo, hi] at both ends. */
TEST(env_u32_clamps) {
    static const struct {
        const char *val; /* NULL: unset */
        long lo, hi;
        uint32_t want;
    } cases[] = {{NULL, 1, 100, 7},         {"", 1, 100, 7},          {"42", 1, 100, 42},
                 {"0", 1, 100, 1},          {"-5", 0, 100, 0},        {"100000", 0, 65535, 65535},
                 {"5000000000", 0, (long)UINT32_MAX, UINT32_MAX},   {"12abc", 0, 100, 12}};
    const char *k = "V4F_TEST_ENV_U32";
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (cases[i].val)
            setenv(k, cases[i].val, 1);
        else
            unsetenv(k);
        const uint32_t got = v4f_env_u32(k, 7, cases[i].lo, cases[i].hi);
        CHECK_MSG(got == cases[i].want, "case %zu ('%s'): %u, want %u", i, cases[i].val ? cases[i].val : "unset",
                  got, cases[i].want);
    }
    unsetenv(k);
}
