/*
 * stats_json.h - the --stats-json report: one JSON object per run with the
 * key names fixed by the issue (load_s, prompt_tokens,
 * prefill_tokens_computed, prefill_tokens_reused, prefill_tps, gen_tokens,
 * decode_tps, kv_bytes, peak_rss_bytes, backend) plus a few extras, and the
 * peak-RSS probe.
 *
 * Ownership: caller-owned struct; strings are borrowed. Single-threaded.
 */
#ifndef V4F_TOOLS_STATS_JSON_H
#define V4F_TOOLS_STATS_JSON_H

#include <stdint.h>

#include "core/core.h"

typedef struct v4f_run_stats {
    double load_s;
    uint64_t prompt_tokens;           /* tokens of the rendered prompt */
    uint64_t prefill_tokens_computed; /* of those, computed by prefill */
    uint64_t prefill_tokens_reused;   /* of those, taken from a cached KV */
    double prefill_s;
    double prefill_tps; /* computed / prefill_s */
    uint64_t gen_tokens;
    double decode_s;
    double decode_tps;  /* gen_tokens / decode_s */
    double ttft_s;      /* request start to first generated token */
    uint64_t kv_bytes;
    uint64_t peak_rss_bytes; /* 0: filled by the writer */
    const char *backend;     /* "cpu", "cuda", ... */
    const char *model;       /* path or "synthetic:PRESET" (may be NULL) */
    uint64_t n_ctx;
    int n_threads;
    const char *stop_reason; /* "eos", "max_tokens", "context_full", "interrupted" (may be NULL) */
} v4f_run_stats;

/* Peak resident set size of this process in bytes (VmHWM from
 * /proc/self/status, else getrusage ru_maxrss); 0 if unknown. */
uint64_t v4f_peak_rss_bytes(void);

/* Write st as one JSON object (plus newline) to path ("-" = stdout). */
v4f_status v4f_stats_json_write(const char *path, const v4f_run_stats *st, v4f_err *err);

#endif /* V4F_TOOLS_STATS_JSON_H */
