/*
 * core.h - the small shared base every module may include: status/error
 * helpers, logging, asserts, allocation wrappers, checked arithmetic, hashing
 * and timing.
 *
 * Ownership: nothing here owns long-lived state except the log sink (a process
 * global set once by the front end).
 * Threading: everything is thread-safe; the log sink must be set before
 * worker threads start.
 */
#ifndef V4F_CORE_H
#define V4F_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "v4flash.h"

#if defined(__GNUC__) || defined(__clang__)
#define V4F_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define V4F_LIKELY(x) __builtin_expect(!!(x), 1)
#define V4F_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define V4F_PRINTF(a, b)
#define V4F_LIKELY(x) (x)
#define V4F_UNLIKELY(x) (x)
#endif

/* ---- errors ------------------------------------------------------------ */

/* Fill err (if non-NULL) with code and a formatted message; returns code so
 * callers can write `return v4f_err_set(err, V4F_STATUS_IO, "...")`. */
v4f_status v4f_err_set(v4f_err *err, v4f_status code, const char *fmt, ...)
    V4F_PRINTF(3, 4);
/* Prefix an existing message: "<prefix>: <old message>". */
void v4f_err_prefix(v4f_err *err, const char *fmt, ...) V4F_PRINTF(2, 3);

/* ---- logging ----------------------------------------------------------- */

typedef enum v4f_log_level {
    V4F_LOG_ERROR = 0,
    V4F_LOG_WARN = 1,
    V4F_LOG_INFO = 2,
    V4F_LOG_DEBUG = 3
} v4f_log_level;

typedef void (*v4f_log_fn)(v4f_log_level level, const char *msg, void *ud);

/* Default sink: stderr, level <= INFO. fn == NULL silences logging. */
void v4f_log_set_sink(v4f_log_fn fn, void *ud, v4f_log_level max_level);
/* Keep the sink, change the most verbose level it gets (e.g. WARN: quiet). */
void v4f_log_set_level(v4f_log_level max_level);
void v4f_log(v4f_log_level level, const char *fmt, ...) V4F_PRINTF(2, 3);

/* ---- asserts (bugs only, never for external data) ---------------------- */

void v4f_assert_fail(const char *expr, const char *file, int line);
#define V4F_ASSERT(x) \
    ((x) ? (void)0 : v4f_assert_fail(#x, __FILE__, __LINE__))
#ifdef V4F_DEBUG
#define V4F_DASSERT(x) V4F_ASSERT(x)
#else
#define V4F_DASSERT(x) ((void)0)
#endif

/* ---- allocation -------------------------------------------------------- */

/* Small allocations: abort on OOM (redis/ds4 style). */
void *v4f_xmalloc(size_t n);
void *v4f_xcalloc(size_t n, size_t size);
void *v4f_xrealloc(void *p, size_t n);
char *v4f_xstrdup(const char *s);
/* Large fallible allocations (KV, scratch): 64-byte aligned, zeroed, NULL on
 * failure. Free with v4f_aligned_free. */
void *v4f_aligned_alloc(size_t n);
void v4f_aligned_free(void *p);

/* ---- checked arithmetic (return false on overflow) ---------------------- */

static inline bool v4f_add_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_add_overflow(a, b, out);
}
static inline bool v4f_mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}

/* ---- hashing ----------------------------------------------------------- */

/* 64-bit FNV-1a; h = V4F_FNV_SEED to start, chain calls to extend. */
#define V4F_FNV_SEED 0xcbf29ce484222325ULL
uint64_t v4f_fnv1a64(uint64_t h, const void *data, size_t n);

/* ---- strings ----------------------------------------------------------- */

/* A length-carrying string slice (e.g. into a mapped file); not NUL-ended. */
typedef struct v4f_str {
    const char *ptr;
    uint64_t len;
} v4f_str;

bool v4f_str_eq(v4f_str s, const char *cstr);
/* true if the bytes are well-formed UTF-8 (no overlongs, no surrogates). */
bool v4f_utf8_valid(const char *s, size_t n);

/* ---- time -------------------------------------------------------------- */

double v4f_time_s(void); /* monotonic seconds */

/* Developer and A/B switches of the environment. v4f_env_off: NAME is set
 * and starts with '0' (e.g. V4F_CUDA_FLEX=0 turns a path off for a
 * measurement). v4f_env_long: NAME's leading integer (strtol, base 10), or
 * dflt when NAME is unset or empty. */
bool v4f_env_off(const char *name);
long v4f_env_long(const char *name, long dflt);
/* v4f_env_long clamped to [lo, hi] (0 <= lo <= hi <= UINT32_MAX): the
 * bounded token counts of the path-choice knobs. */
uint32_t v4f_env_u32(const char *name, long dflt, long lo, long hi);

/* ---- host memory ------------------------------------------------------- */

/* The "KEY:   N kB" line of /proc text (meminfo, self/status) in bytes;
 * false when the line is absent or malformed. v4f_proc_kb reads the file
 * PATH (false where there is none). v4f_mem_available: MemAvailable of
 * /proc/meminfo, the kernel's estimate of what new allocations can take
 * without swapping. */
bool v4f_proc_kb_parse(const char *text, const char *key, uint64_t *bytes);
bool v4f_proc_kb(const char *path, const char *key, uint64_t *bytes);
bool v4f_mem_available(uint64_t *bytes);

/* Greedy argmax of x[0..n): the lowest id of the largest value; NaN never
 * wins; only -inf and NaN: the first non-NaN id; all NaN (or n = 0): 0. */
int32_t v4f_argmax_f32(const float *x, uint32_t n);
/* The same with x[except] read as -inf when 0 <= except < n (x is written
 * and restored around the scan, hence not const). */
int32_t v4f_argmax_f32_except(float *x, uint32_t n, int32_t except);

/* A token picker over the logits of one position, for decoding loops that
 * sample on the host (v4f_session_decode_sampled; the sampler makes one,
 * v4f_sampler_drawer): draw picks a token; verify returns draft with the
 * probability draw would pick it, else a draw from the rest (speculative
 * sampling), so its picks are distributed as draw's. */
typedef struct v4f_drawer {
    int32_t (*draw)(void *ud, const float *logits);
    int32_t (*verify)(void *ud, const float *logits, int32_t draft);
    void *ud;
} v4f_drawer;

/* ---- half / bfloat16 conversions (exact, scalar) ------------------------ */

float v4f_f16_to_f32(uint16_t h);
uint16_t v4f_f32_to_f16(float f); /* round to nearest even */
float v4f_bf16_to_f32(uint16_t h);
uint16_t v4f_f32_to_bf16(float f); /* round to nearest even */

#endif /* V4F_CORE_H */
