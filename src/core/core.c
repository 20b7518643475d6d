/*
 * core.c - status strings, error reports, logging, asserts, allocation,
 * hashing, UTF-8 validation, time and scalar f16/bf16 conversion.
 *
 * The only global state is the log sink (g_log_*), written once by the front
 * end before threads start and read afterwards.
 */
#include "core.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <time.h>

const char *v4f_status_str(v4f_status st) {
    switch (st) {
    case V4F_OK: return "ok";
    case V4F_STATUS_IO: return "i/o error";
    case V4F_STATUS_FORMAT: return "malformed input";
    case V4F_STATUS_UNSUPPORTED: return "unsupported";
    case V4F_STATUS_INVALID_ARG: return "invalid argument";
    case V4F_STATUS_OOM: return "out of memory";
    case V4F_STATUS_NOT_FOUND: return "not found";
    case V4F_STATUS_LAYOUT: return "layout mismatch";
    case V4F_STATUS_RANGE: return "out of range";
    case V4F_STATUS_DEVICE: return "device error";
    case V4F_STATUS_INTERRUPTED: return "interrupted";
    case V4F_STATUS_BUSY: return "busy";
    }
    return "unknown status";
}

v4f_status v4f_err_set(v4f_err *err, v4f_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

void v4f_err_prefix(v4f_err *err, const char *fmt, ...) {
    if (!err) return;
    char prefix[256], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    size_t np = strlen(prefix);
    if (np > sizeof err->msg - 3) np = sizeof err->msg - 3;
    memcpy(err->msg, prefix, np);
    memcpy(err->msg + np, ": ", 2);
    size_t room = sizeof err->msg - np - 3, no = strnlen(old, sizeof old - 1);
    if (no > room) no = room;
    memcpy(err->msg + np + 2, old, no);
    err->msg[np + 2 + no] = '\0';
}

/* ---- logging ----------------------------------------------------------- */

static void log_stderr(v4f_log_level level, const char *msg, void *ud) {
    (void)ud;
    static const char *names[] = {"error", "warn", "info", "debug"};
    fprintf(stderr, "v4flash: %s: %s\n", names[level], msg);
}

static v4f_log_fn g_log_fn = log_stderr;
static void *g_log_ud = NULL;
static v4f_log_level g_log_max = V4F_LOG_INFO;

void v4f_log_set_sink(v4f_log_fn fn, void *ud, v4f_log_level max_level) {
    g_log_fn = fn;
    g_log_ud = ud;
    g_log_max = max_level;
}

void v4f_log_set_level(v4f_log_level max_level) {
    g_log_max = max_level;
}

void v4f_log(v4f_log_level level, const char *fmt, ...) {
    if (!g_log_fn || level > g_log_max) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    g_log_fn(level, buf, g_log_ud);
}

void v4f_assert_fail(const char *expr, const char *file, int line) {
    fprintf(stderr, "v4flash: assertion failed: %s (%s:%d)\n", expr, file, line);
    abort();
}

/* ---- allocation -------------------------------------------------------- */

static void oom(size_t n) {
    fprintf(stderr, "v4flash: out of memory allocating %zu bytes\n", n);
    abort();
}

void *v4f_xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) oom(n);
    return p;
}

void *v4f_xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) oom(n * size);
    return p;
}

void *v4f_xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) oom(n);
    return q;
}

char *v4f_xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = v4f_xmalloc(n);
    memcpy(p, s, n);
    return p;
}

void *v4f_aligned_alloc(size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 1) != 0) return NULL;
    memset(p, 0, n);
    return p;
}

void v4f_aligned_free(void *p) { free(p); }

/* ---- hashing ----------------------------------------------------------- */

uint64_t v4f_fnv1a64(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* ---- strings ----------------------------------------------------------- */

bool v4f_str_eq(v4f_str s, const char *cstr) {
    size_t n = strlen(cstr);
    return s.len == n && memcmp(s.ptr, cstr, n) == 0;
}

bool v4f_utf8_valid(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        if (c < 0x80) { i++; continue; }
        size_t len;
        uint32_t cp, min;
        if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; min = 0x80; }
        else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; min = 0x800; }
        else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; min = 0x10000; }
        else return false;
        if (n - i < len) return false;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += len;
    }
    return true;
}

/* ---- time -------------------------------------------------------------- */

double v4f_time_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- f16 / bf16 -------------------------------------------------------- */

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float v4f_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1F;
    uint32_t man = h & 0x3FF;
    if (exp == 0) {
        /* zero or subnormal: value = man * 2^-24 */
        float v = (float)man * 5.9604644775390625e-08f;
        return bits_f32(f32_bits(v) | sign);
    }
    if (exp == 31) return bits_f32(sign | 0x7F800000u | (man << 13));
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t v4f_f32_to_f16(float f) {
    uint32_t x = f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7FFFFFFF;
    if (absx >= 0x7F800000) /* inf or nan */
        return (uint16_t)(sign | 0x7C00 | (absx > 0x7F800000 ? 0x200 : 0));
    if (absx >= 0x477FF000) /* rounds to >= 65520 -> inf */
        return (uint16_t)(sign | 0x7C00);
    if (absx < 0x38800000) { /* below 2^-14: subnormal half */
        /* value / 2^-24, rounded to nearest even */
        float v = bits_f32(absx) * 16777216.0f;
        uint32_t m = (uint32_t)v;
        float r = v - (float)m;
        if (r > 0.5f || (r == 0.5f && (m & 1))) m++;
        return (uint16_t)(sign | m);
    }
    uint32_t e = ((absx >> 23) - 112) << 10;
    uint32_t m = (absx >> 13) & 0x3FF;
    uint32_t rest = absx & 0x1FFF;
    uint32_t h = e | m;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

float v4f_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t v4f_f32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7FFFFFFF) > 0x7F800000) return (uint16_t)((x >> 16) | 0x40);
    x += 0x7FFF + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

/* ---- argmax ---------------------------------------------------------------- */

/* The first (lowest id) of the largest non-NaN logits, as 8
 * independent lanes (element i in lane i % 8, each keeping its first
 * strictly greater value: a NaN never compares greater), with SSE2 (the
 * x86-64 baseline) where available: 129,280 logits in ~0.02 ms instead of
 * ~0.08 ms for the scalar loop, once per decoded token. The lanes merge by
 * value, then lowest id; if no value beats -inf (only -inf and NaN), the
 * first non-NaN one is the answer. */
#define GREEDY_LANES 8

int32_t v4f_argmax_f32(const float *logits, uint32_t n) {
    float mv[GREEDY_LANES];
    int32_t mi[GREEDY_LANES];
    uint32_t i = 0;
#if defined(__SSE2__)
    __m128 v0 = _mm_set1_ps(-INFINITY), v1 = v0;
    __m128i i0 = _mm_set1_epi32(-1), i1 = i0;
    __m128i c0 = _mm_setr_epi32(0, 1, 2, 3), c1 = _mm_setr_epi32(4, 5, 6, 7);
    const __m128i step = _mm_set1_epi32(GREEDY_LANES);
    for (; i + GREEDY_LANES <= n; i += GREEDY_LANES) {
        const __m128 x0 = _mm_loadu_ps(logits + i), x1 = _mm_loadu_ps(logits + i + 4);
        const __m128i g0 = _mm_castps_si128(_mm_cmpgt_ps(x0, v0)), g1 = _mm_castps_si128(_mm_cmpgt_ps(x1, v1));
        v0 = _mm_max_ps(x0, v0); /* x0 > v0 ? x0 : v0, also for a NaN x0 */
        v1 = _mm_max_ps(x1, v1);
        i0 = _mm_or_si128(_mm_and_si128(g0, c0), _mm_andnot_si128(g0, i0));
        i1 = _mm_or_si128(_mm_and_si128(g1, c1), _mm_andnot_si128(g1, i1));
        c0 = _mm_add_epi32(c0, step);
        c1 = _mm_add_epi32(c1, step);
    }
    _mm_storeu_ps(mv, v0);
    _mm_storeu_ps(mv + 4, v1);
    _mm_storeu_si128((__m128i *)mi, i0);
    _mm_storeu_si128((__m128i *)(mi + 4), i1);
#else
    for (int k = 0; k < GREEDY_LANES; k++) mv[k] = -INFINITY, mi[k] = -1;
#endif
    /* the tail (everything without SSE2); i is a multiple of the lanes here */
    for (int k = 0; i < n; i++, k = (k + 1) % GREEDY_LANES)
        if (logits[i] > mv[k]) mv[k] = logits[i], mi[k] = (int32_t)i;
    int32_t best = -1;
    float bv = 0;
    for (int k = 0; k < GREEDY_LANES; k++)
        if (mi[k] >= 0 && (best < 0 || mv[k] > bv || (mv[k] == bv && mi[k] < best))) best = mi[k], bv = mv[k];
    if (best >= 0) return best;
    for (i = 0; i < n; i++)
        if (logits[i] == logits[i]) return (int32_t)i; /* only -inf (and NaN) */
    return 0;
}

bool v4f_env_off(const char *name) {
    const char *e = getenv(name);
    return e && e[0] == '0';
}

long v4f_env_long(const char *name, long dflt) {
    const char *e = getenv(name);
    return e && *e ? strtol(e, NULL, 10) : dflt;
}

uint32_t v4f_env_u32(const char *name, long dflt, long lo, long hi) {
    const long v = v4f_env_long(name, dflt);
    return (uint32_t)(v < lo ? lo : v > hi ? hi : v);
}

bool v4f_proc_kb_parse(const char *text, const char *key, uint64_t *bytes) {
    const size_t kn = strlen(key);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, key, kn) != 0 || p[kn] != ':') continue;
        p += kn + 1;
        while (*p == ' ' || *p == '\t') p++;
        uint64_t kb = 0;
        if (*p < '0' || *p > '9') return false;
        for (; *p >= '0' && *p <= '9'; p++)
            if (!v4f_mul_u64(kb, 10, &kb) || !v4f_add_u64(kb, (uint64_t)(*p - '0'), &kb)) return false;
        while (*p == ' ' || *p == '\t') p++;
        return strncmp(p, "kB", 2) == 0 && v4f_mul_u64(kb, 1024, bytes);
    }
    return false;
}

bool v4f_proc_kb(const char *path, const char *key, uint64_t *bytes) {
    FILE *f = fopen(path, "r");
    if (!f) return false;
    char buf[8192];
    const size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return v4f_proc_kb_parse(buf, key, bytes);
}

bool v4f_mem_available(uint64_t *bytes) { return v4f_proc_kb("/proc/meminfo", "MemAvailable", bytes); }

int32_t v4f_argmax_f32_except(float *x, uint32_t n, int32_t except) {
    if (except < 0 || (uint32_t)except >= n) return v4f_argmax_f32(x, n);
    const float keep = x[except];
    x[except] = -INFINITY;
    const int32_t best = v4f_argmax_f32(x, n);
    x[except] = keep;
    return best;
}
