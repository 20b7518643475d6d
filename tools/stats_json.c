/*
 * stats_json.c - writes the --stats-json object and reads the peak RSS.
 *
 * Owns nothing. Single-threaded.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "stats_json.h"

uint64_t v4f_peak_rss_bytes(void) {
    uint64_t b = 0;
    if (v4f_proc_kb("/proc/self/status", "VmHWM", &b)) return b;
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) return (uint64_t)ru.ru_maxrss * 1024; /* Linux: KiB */
    return 0;
}

static void put_str(FILE *f, const char *s) {
    if (!s) {
        fputs("null", f);
        return;
    }
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p == '\n') fputs("\\n", f);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

static void put_num(FILE *f, double v) {
    if (isfinite(v)) fprintf(f, "%.6g", v);
    else fputs("null", f);
}

v4f_status v4f_stats_json_write(const char *path, const v4f_run_stats *st, v4f_err *err) {
    FILE *f = strcmp(path, "-") ? fopen(path, "w") : stdout;
    if (!f) return v4f_err_set(err, V4F_STATUS_IO, "%s: %s", path, strerror(errno));
    uint64_t rss = st->peak_rss_bytes ? st->peak_rss_bytes : v4f_peak_rss_bytes();
    fputs("{\"load_s\": ", f);
    put_num(f, st->load_s);
    fprintf(f, ", \"prompt_tokens\": %llu", (unsigned long long)st->prompt_tokens);
    fprintf(f, ", \"prefill_tokens_computed\": %llu",
            (unsigned long long)st->prefill_tokens_computed);
    fprintf(f, ", \"prefill_tokens_reused\": %llu", (unsigned long long)st->prefill_tokens_reused);
    fputs(", \"prefill_s\": ", f);
    put_num(f, st->prefill_s);
    fputs(", \"prefill_tps\": ", f);
    put_num(f, st->prefill_tps);
    fprintf(f, ", \"gen_tokens\": %llu", (unsigned long long)st->gen_tokens);
    fputs(", \"decode_s\": ", f);
    put_num(f, st->decode_s);
    fputs(", \"decode_tps\": ", f);
    put_num(f, st->decode_tps);
    fputs(", \"ttft_s\": ", f);
    put_num(f, st->ttft_s);
    fprintf(f, ", \"kv_bytes\": %llu", (unsigned long long)st->kv_bytes);
    fprintf(f, ", \"peak_rss_bytes\": %llu", (unsigned long long)rss);
    fputs(", \"backend\": ", f);
    put_str(f, st->backend ? st->backend : "cpu");
    fputs(", \"model\": ", f);
    put_str(f, st->model);
    fprintf(f, ", \"n_ctx\": %llu, \"n_threads\": %d", (unsigned long long)st->n_ctx,
            st->n_threads);
    fputs(", \"stop_reason\": ", f);
    put_str(f, st->stop_reason);
    fputs("}\n", f);
    int bad = ferror(f);
    if (f != stdout) bad |= fclose(f) != 0;
    else fflush(f);
    if (bad) return v4f_err_set(err, V4F_STATUS_IO, "%s: write failed", path);
    return V4F_OK;
}
