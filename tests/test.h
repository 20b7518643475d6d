/*
 * test.h - the in-tree test harness (no external framework).
 *
 * A test is a function declared with TEST(name); it registers itself at load
 * time (constructor attribute), so adding a test file needs no central list.
 * Checks record a failure and continue; REQUIRE variants return from the test.
 * Runner: tests/run_tests.c (--list, --filter SUBSTR, -v).
 *
 * Fixture paths: test_fixture_path("model/tiny-q2.gguf") resolves against
 * tests/fixtures (V4F_FIXTURE_DIR env var overrides).
 */
#ifndef V4F_TEST_H
#define V4F_TEST_H

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef void (*test_fn)(void);
void test_register(const char *name, const char *file, test_fn fn);
void test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int test_verbose(void);
const char *test_fixture_path(const char *rel); /* one of 8 rotating static buffers */
const char *test_tmp_dir(void);                  /* per-run scratch dir */
/* The v4flash binary of the end-to-end tests ($V4F_BIN, which `make test`
 * sets), or NULL when unset or empty. */
const char *test_bin(void);
/* Leave an end-to-end test early (saying so) when there is no binary. */
#define SKIP_NO_BIN()                                      \
    do {                                                   \
        if (!test_bin()) {                                 \
            printf("    skip: V4F_BIN not set (make test sets it)\n"); \
            return;                                        \
        }                                                  \
    } while (0)
/* Whole file as a malloc'd, NUL-terminated buffer (caller frees); *len (if
 * non-NULL) gets the byte count. NULL if the file cannot be read. */
char *test_read_file(const char *path, size_t *len);

#define TEST(name)                                                         \
    static void test_##name(void);                                         \
    __attribute__((constructor)) static void test_reg_##name(void) {       \
        test_register(#name, __FILE__, test_##name);                       \
    }                                                                      \
    static void test_##name(void)

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) test_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);    \
    } while (0)

#define REQUIRE(cond)                                                      \
    do {                                                                   \
        if (!(cond)) {                                                     \
            test_fail(__FILE__, __LINE__, "REQUIRE(%s)", #cond);           \
            return;                                                        \
        }                                                                  \
    } while (0)

#define CHECK_MSG(cond, ...)                                               \
    do {                                                                   \
        if (!(cond)) test_fail(__FILE__, __LINE__, __VA_ARGS__);           \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                 \
    do {                                                                   \
        long long va_ = (long long)(a), vb_ = (long long)(b);              \
        if (va_ != vb_)                                                    \
            test_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a,    \
                      #b, va_, vb_);                                       \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                              \
    do {                                                                   \
        double va_ = (double)(a), vb_ = (double)(b);                       \
        if (!(fabs(va_ - vb_) <= (double)(tol)))                           \
            test_fail(__FILE__, __LINE__, "%s ~= %s: %.9g vs %.9g (tol %g)", \
                      #a, #b, va_, vb_, (double)(tol));                    \
    } while (0)

#define CHECK_STATUS(expr, expected)                                       \
    do {                                                                   \
        int st_ = (int)(expr);                                             \
        if (st_ != (int)(expected))                                        \
            test_fail(__FILE__, __LINE__, "%s returned %d, expected %d",   \
                      #expr, st_, (int)(expected));                        \
    } while (0)

#define CHECK_STR(a, b)                                                    \
    do {                                                                   \
        const char *sa_ = (a), *sb_ = (b);                                 \
        if (!sa_ || !sb_ || strcmp(sa_, sb_) != 0)                         \
            test_fail(__FILE__, __LINE__, "%s == %s: \"%s\" != \"%s\"",    \
                      #a, #b, sa_ ? sa_ : "(null)", sb_ ? sb_ : "(null)"); \
    } while (0)

/* Deterministic PRNG for tests (splitmix64). */
typedef struct test_rng {
    unsigned long long s;
} test_rng;
static inline unsigned long long test_rng_u64(test_rng *r) {
    unsigned long long z = (r->s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
/* uniform in [-1, 1) */
static inline float test_rng_f32(test_rng *r) {
    return (float)((double)(test_rng_u64(r) >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}
/* approximately normal(0,1) (sum of 4 uniforms, scaled) */
static inline float test_rng_normal(test_rng *r) {
    float s = 0;
    for (int i = 0; i < 4; i++) s += test_rng_f32(r);
    return s * 0.8660254f;
}

#endif /* V4F_TEST_H */
