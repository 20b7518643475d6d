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

/* v4f_proc_kb_parse: the MemAvailable line in bytes wherever it sits;
 * false when it is absent, not a number, not in kB or too large. */
TEST(proc_kb_parses) {
    static const struct {
        const char *text;
        bool ok;
        uint64_t want;
    } cases[] = {
        {"MemTotal:       32768000 kB\nMemFree:         1000 kB\nMemAvailable:   24084044 kB\nBuffers: 1 kB\n", true,
         24084044ull * 1024},
        {"MemAvailable: 0 kB", true, 0},
        {"MemAvailable:\t7 kB\n", true, 7168},
        {"MemTotal:       32768000 kB\nMemFree:         1000 kB\n", false, 0},
        {"XMemAvailable: 5 kB\n", false, 0},
        {"MemAvailableX: 5 kB\nMemAvailable: 6 kB\n", true, 6144}, /* the key, not a longer one */
        {"MemAvailable:   abc kB\n", false, 0},
        {"MemAvailable:   12 MB\n", false, 0},
        {"MemAvailable:   99999999999999999999 kB\n", false, 0},
        {"MemAvailable:   18014398509481984 kB\n", false, 0}, /* 2^54 kB: bytes overflow */
        {"", false, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t got = 12345;
        const bool ok = v4f_proc_kb_parse(cases[i].text, "MemAvailable", &got);
        CHECK_MSG(ok == cases[i].ok, "case %zu: ok %d, want %d", i, ok, cases[i].ok);
        if (ok && cases[i].ok) CHECK_MSG(got == cases[i].want, "case %zu: %llu, want %llu", i,
                                         (unsigned long long)got, (unsigned long long)cases[i].want);
    }
    uint64_t live = 0;
    if (v4f_mem_available(&live)) CHECK(live > 0);
}
