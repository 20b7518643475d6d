/*
 * progress.c - TTY progress bar (see progress.h).
 *
 * Owns nothing; writes only to stderr. Single-threaded.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/core.h"
#include "progress.h"

void v4f_progress_begin(v4f_progress *p, const char *label, uint64_t total, v4f_progress_unit u) {
    memset(p, 0, sizeof *p);
    p->label = label;
    p->total = total;
    p->unit = u;
    p->t0 = p->t_last = v4f_time_s();
    const char *no = getenv("V4F_NO_PROGRESS");
    p->enabled = isatty(2) && !(no && *no && strcmp(no, "0"));
}

void v4f_progress_force(v4f_progress *p) {
    const char *no = getenv("V4F_NO_PROGRESS");
    if (no && *no && strcmp(no, "0")) return;
    if (!p->enabled) p->plain = true;
    p->enabled = true;
}

static void fmt_amount(char *b, size_t n, double v, v4f_progress_unit u) {
    if (u == V4F_PROGRESS_TOKENS) snprintf(b, n, "%.0f", v);
    else if (v >= 1024.0 * 1024 * 1024) snprintf(b, n, "%.2f GiB", v / (1024.0 * 1024 * 1024));
    else snprintf(b, n, "%.1f MiB", v / (1024.0 * 1024));
}

static void fmt_eta(char *b, size_t n, double s) {
    if (s < 0 || s > 1e7) snprintf(b, n, "--");
    else if (s < 60) snprintf(b, n, "%.0fs", s);
    else if (s < 3600) snprintf(b, n, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(b, n, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

static void draw(v4f_progress *p, double now) {
    double el = now - p->t0;
    double rate = el > 0 ? (double)p->done / el : 0;
    double frac = p->total ? (double)p->done / (double)p->total : 0;
    if (frac > 1) frac = 1;
    char bar[25];
    int fill = (int)(frac * 24);
    for (int i = 0; i < 24; i++) bar[i] = i < fill ? '#' : '.';
    bar[24] = 0;
    char d[32], t[32], eta[32];
    fmt_amount(d, sizeof d, (double)p->done, p->unit);
    fmt_amount(t, sizeof t, (double)p->total, p->unit);
    fmt_eta(eta, sizeof eta, rate > 0 ? (double)(p->total - (p->done < p->total ? p->done : p->total)) / rate : -1);
    char r[32];
    if (p->unit == V4F_PROGRESS_TOKENS) snprintf(r, sizeof r, "%.1f tok/s", rate);
    else snprintf(r, sizeof r, "%.0f MB/s", rate / 1e6);
    fprintf(stderr, "%s%s [%s] %s/%s %5.1f%%  %s  ETA %s%s", p->plain ? "" : "\r",
            p->label, bar, d, t, 100 * frac, r, eta, p->plain ? "\n" : "\033[K");
    fflush(stderr);
    p->drawn = true;
}

void v4f_progress_update(v4f_progress *p, uint64_t done) {
    p->done = done;
    if (!p->enabled) return;
    double now = v4f_time_s();
    double every = p->plain ? 2.0 : 0.1;
    if (p->drawn && now - p->t_last < every && done < p->total) return;
    p->t_last = now;
    draw(p, now);
}

double v4f_progress_end(v4f_progress *p) {
    double el = v4f_time_s() - p->t0;
    if (p->enabled && p->drawn && !p->plain) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }
    p->enabled = false;
    return el;
}
