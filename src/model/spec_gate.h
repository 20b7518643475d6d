/*
 * spec_gate.h - when speculative decoding pauses its drafts.
 *
 * A drafting step costs more than a plain decode step (a 2-token eval and
 * the MTP block: 1.45 decode steps on an H200, more where experts live in
 * host memory, docs/PERF_NOTES.md session 21) and pays only when enough
 * drafts are kept: break-even near 45% kept on the H200, ~55% on the H100.
 * Where the MTP block guesses badly (text unlike its training, a prompt it
 * cannot follow) drafting would make decoding slower than without it. The
 * gate judges the drafting steps in windows of V4F_GATE_WINDOW; a window
 * with fewer than V4F_GATE_KEEP_MIN kept drafts pauses drafting for a run
 * of plain decode steps (V4F_GATE_PAUSE_MIN tokens, doubling after each
 * failed window up to V4F_GATE_PAUSE_MAX, back to the minimum after a good
 * one), after which a new window probes again.
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
#define V4F_GATE_KEEP_MIN 8   /* kept drafts a window needs (50%: above the H200's ~45% break-even) */
#define V4F_GATE_PAUSE_MIN 64 /* plain tokens after the first failed window */
#define V4F_GATE_PAUSE_MAX 1024

typedef struct v4f_spec_gate {
    bool on;          /* false: always draft */
    uint32_t steps;   /* drafting steps of the current window */
    uint32_t kept;    /* of them, drafts kept */
    uint32_t pause;   /* plain tokens left before drafting again */
    uint32_t backoff; /* the pause after the next failed window */
} v4f_spec_gate;

/* A fresh gate (drafting, minimum backoff); on false: never pauses. */
void v4f_spec_gate_init(v4f_spec_gate *g, bool on);
/* Tokens to decode without drafts before the next drafting step (0: draft). */
uint32_t v4f_spec_gate_pause(const v4f_spec_gate *g);
/* A drafting step ended; kept: its draft was the model's pick. */
void v4f_spec_gate_step(v4f_spec_gate *g, bool kept);
/* n tokens were decoded without drafts during a pause. */
void v4f_spec_gate_plain(v4f_spec_gate *g, uint32_t n);

#endif /* V4F_SPEC_GATE_H */
