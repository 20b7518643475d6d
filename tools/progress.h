/*
 * progress.h - a one-line progress bar on stderr for model load, prefill and
 * synth: done/total, rate and ETA. Drawn only when stderr is a TTY (or when
 * forced), redrawn at most ~10 times a second, erased by v4f_progress_end.
 * V4F_NO_PROGRESS=1 in the environment disables it.
 *
 * Ownership: caller-owned struct, no allocation. Single-threaded (call from
 * the thread that drives the work).
 */
#ifndef V4F_TOOLS_PROGRESS_H
#define V4F_TOOLS_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

typedef enum v4f_progress_unit {
    V4F_PROGRESS_TOKENS, /* "tok", rate in tok/s */
    V4F_PROGRESS_BYTES   /* human units (MiB/GiB), rate in MB/s */
} v4f_progress_unit;

typedef struct v4f_progress {
    const char *label;
    uint64_t total, done;
    v4f_progress_unit unit;
    double t0, t_last;
    bool enabled;
    bool drawn;
    bool plain; /* forced on a non-TTY: one line per update */
} v4f_progress;

/* Start; enabled iff stderr is a TTY (unless V4F_NO_PROGRESS is set). */
void v4f_progress_begin(v4f_progress *p, const char *label, uint64_t total, v4f_progress_unit u);
/* Draw even when stderr is not a TTY (lines end in '\n' then, at most one
 * every 2 s): for long jobs such as synth full-q2. */
void v4f_progress_force(v4f_progress *p);
void v4f_progress_update(v4f_progress *p, uint64_t done);
/* Erase the bar (TTY) and return the elapsed seconds. */
double v4f_progress_end(v4f_progress *p);

#endif /* V4F_TOOLS_PROGRESS_H */
