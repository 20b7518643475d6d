/*
 * spec_gate.c - when speculative decoding pauses its drafts (spec_gate.h).
 */
#include "model/spec_gate.h"

void v4f_spec_gate_init(v4f_spec_gate *g, bool on, uint32_t keep_min) {
    g->on = on;
    g->keep_min = keep_min < V4F_GATE_WINDOW ? keep_min : V4F_GATE_WINDOW;
    g->steps = g->kept = g->pause = 0;
    g->backoff = V4F_GATE_PAUSE_MIN;
}

uint32_t v4f_spec_gate_pause(const v4f_spec_gate *g) { return g->on ? g->pause : 0; }

void v4f_spec_gate_step(v4f_spec_gate *g, bool kept) {
    if (!g->on) return;
    g->steps++;
    g->kept += kept;
    if (g->steps < V4F_GATE_WINDOW) return;
    if (g->kept < g->keep_min) {
        g->pause = g->backoff;
        g->backoff = g->backoff * 2 < V4F_GATE_PAUSE_MAX ? g->backoff * 2 : V4F_GATE_PAUSE_MAX;
    } else {
        g->backoff = V4F_GATE_PAUSE_MIN;
    }
    g->steps = g->kept = 0;
}

void v4f_spec_gate_plain(v4f_spec_gate *g, uint32_t n) { g->pause = n < g->pause ? g->pause - n : 0; }
