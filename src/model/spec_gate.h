/*
 * spec_gate.h - when speculative decoding pauses its drafts.
 *
 * A drafting step costs more than a plain decode step (a 2-token eval and
 * the MTP block: 1.44-1.48 decode steps on an H200, 1.70-1.71 where the
 * block's experts are read over the bus, an H200 held to an 80 GB card's
 * memory; docs/PERF_NOTES.md sessions 36-37) and pays only when enough drafts
 * are kept: break-even at 44-48% kept on the H200, 70-71% where the block's
 * experts live in host memory (in session 24 a drafting step cost 1.34
 * decode steps; the plain step got faster since, the 2-token eval less).
 * The bars are the break-evens rounded up to whole drafts. Where the MTP
 * block guesses badly (text unlike its training, a prompt it cannot
 * follow) drafting would make decoding slower than without it. The gate
 * judges the drafting steps in windows of V4F_GATE_WINDOW; a
 * window with fewer than keep_min kept drafts (V4F_GATE_KEEP_MIN_CARD or
 * V4F_GATE_KEEP_MIN, by where the block's experts are) pauses drafting for
 * a run of plain decode steps (V4F_GATE_PAUSE_MIN tokens, doubling after
 * each failed window up to V4F_GATE_PAUSE_MAX, back to the minimum after a
 * good one), after which a new window probes again.
 *
 * The decisions depend only on which drafts were kept, never on timings, so
 * a run is reproducible. Greedy picks do not depend on the gate (drafts are
 * verified against the model's own picks).
 *
 * Threading: plain data, owned by one session.
 */
#ifndef V4F_SPEC_GATE_H
#define V4F_SPEC_GATE_H

#include <stdbool.h>
#include <stdint.h>

#define V4F_GATE_WINDOW 16    /* drafting steps judged together */
/* kept drafts a window needs, the MTP block's experts in host memory: 12
 * of 16 (75%; the break-even there is 70-71%) */
#define V4F_GATE_KEEP_MIN 12
/* ... with the block on the card: 8 of 16 (50%; the H200's break-even is 44-48%) */
#define V4F_GATE_KEEP_MIN_CARD 8
#define V4F_GATE_PAUSE_MIN 64 /* plain tokens after the first failed window */
#define V4F_GATE_PAUSE_MAX 1024

typedef struct v4f_spec_gate {
    bool on;          /* false: always draft */
    uint32_t keep_min; /* kept drafts a window needs, <= V4F_GATE_WINDOW */
    uint32_t steps;   /* drafting steps of the current window */
    uint32_t kept;    /* of them, drafts kept */
    uint32_t pause;   /* plain tokens left before drafting again */
    uint32_t backoff; /* the pause after the next failed window */
} v4f_spec_gate;

/* A fresh gate (drafting, minimum backoff) that needs keep_min kept drafts
 * per window (capped at the window); on false: never pauses. */
void v4f_spec_gate_init(v4f_spec_gate *g, bool on, uint32_t keep_min);
/* Tokens to decode without drafts before the next drafting step (0: draft). */
uint32_t v4f_spec_gate_pause(const v4f_spec_gate *g);
/* A drafting step ended; kept: its draft was the model's pick. */
void v4f_spec_gate_step(v4f_spec_gate *g, bool kept);
/* n tokens were decoded without drafts during a pause. */
void v4f_spec_gate_plain(v4f_spec_gate *g, uint32_t n);

#endif /* V4F_SPEC_GATE_H */
