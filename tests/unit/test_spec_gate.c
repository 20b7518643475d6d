/*
 * test_spec_gate.c - the draft gate of speculative decoding (spec_gate.h):
 * windows, pauses, backoff and its reset, the off switch.
 */
#include "model/spec_gate.h"
#include "../test.h"

/* n drafting steps of which the first k kept */
static void steps(v4f_spec_gate *g, uint32_t n, uint32_t k) {
    for (uint32_t i = 0; i < n; i++) v4f_spec_gate_step(g, i < k);
}

TEST(spec_gate_window_boundary) {
    /* both bars (the MTP block's experts in host memory, on the card) */
    const uint32_t bars[2] = {V4F_GATE_KEEP_MIN, V4F_GATE_KEEP_MIN_CARD};
    for (int b = 0; b < 2; b++) {
        v4f_spec_gate g;
        v4f_spec_gate_init(&g, true, bars[b]);
        CHECK(v4f_spec_gate_pause(&g) == 0);
        /* a window with exactly the minimum kept goes on drafting */
        steps(&g, V4F_GATE_WINDOW, bars[b]);
        CHECK(v4f_spec_gate_pause(&g) == 0);
        /* one fewer pauses, for the minimum pause, only once the window is full */
        steps(&g, V4F_GATE_WINDOW - 1, bars[b] - 1);
        CHECK(v4f_spec_gate_pause(&g) == 0);
        steps(&g, 1, 0);
        CHECK(v4f_spec_gate_pause(&g) == V4F_GATE_PAUSE_MIN);
    }
    /* the two bars differ: one kept draft fewer than the host bar goes on
     * through the card's bar only */
    CHECK(V4F_GATE_KEEP_MIN_CARD < V4F_GATE_KEEP_MIN);
    v4f_spec_gate gc, gh;
    v4f_spec_gate_init(&gc, true, V4F_GATE_KEEP_MIN_CARD);
    v4f_spec_gate_init(&gh, true, V4F_GATE_KEEP_MIN);
    steps(&gc, V4F_GATE_WINDOW, V4F_GATE_KEEP_MIN - 1);
    steps(&gh, V4F_GATE_WINDOW, V4F_GATE_KEEP_MIN - 1);
    CHECK(v4f_spec_gate_pause(&gc) == 0);
    CHECK(v4f_spec_gate_pause(&gh) == V4F_GATE_PAUSE_MIN);
}

TEST(spec_gate_bar_capped_at_window) {
    /* a bar above the window means every draft must be kept, not never */
    v4f_spec_gate g;
    v4f_spec_gate_init(&g, true, 1000);
    steps(&g, V4F_GATE_WINDOW, V4F_GATE_WINDOW);
    CHECK(v4f_spec_gate_pause(&g) == 0);
    steps(&g, V4F_GATE_WINDOW, V4F_GATE_WINDOW - 1);
    CHECK(v4f_spec_gate_pause(&g) == V4F_GATE_PAUSE_MIN);
}

TEST(spec_gate_pause_counts_down) {
    v4f_spec_gate g;
    v4f_spec_gate_init(&g, true, V4F_GATE_KEEP_MIN);
    steps(&g, V4F_GATE_WINDOW, 0);
    REQUIRE(v4f_spec_gate_pause(&g) == V4F_GATE_PAUSE_MIN);
    v4f_spec_gate_plain(&g, 10);
    CHECK(v4f_spec_gate_pause(&g) == V4F_GATE_PAUSE_MIN - 10);
    v4f_spec_gate_plain(&g, 1000); /* more than left: drafting again */
    CHECK(v4f_spec_gate_pause(&g) == 0);
}

TEST(spec_gate_backoff_doubles_and_resets) {
    v4f_spec_gate g;
    v4f_spec_gate_init(&g, true, V4F_GATE_KEEP_MIN);
    uint32_t want = V4F_GATE_PAUSE_MIN;
    for (int round = 0; round < 8; round++) { /* failed probes: 64, 128, .., capped */
        steps(&g, V4F_GATE_WINDOW, 1);
        CHECK(v4f_spec_gate_pause(&g) == want);
        v4f_spec_gate_plain(&g, v4f_spec_gate_pause(&g));
        REQUIRE(v4f_spec_gate_pause(&g) == 0);
        want = want * 2 < V4F_GATE_PAUSE_MAX ? want * 2 : V4F_GATE_PAUSE_MAX;
    }
    CHECK(want == V4F_GATE_PAUSE_MAX);
    /* a good window resets the backoff: the next failure pauses the minimum */
    steps(&g, V4F_GATE_WINDOW, V4F_GATE_WINDOW);
    CHECK(v4f_spec_gate_pause(&g) == 0);
    steps(&g, V4F_GATE_WINDOW, 0);
    CHECK(v4f_spec_gate_pause(&g) == V4F_GATE_PAUSE_MIN);
}

TEST(spec_gate_windows_do_not_overlap) {
    /* kept drafts of one window do not carry into the next */
    v4f_spec_gate g;
    v4f_spec_gate_init(&g, true, V4F_GATE_KEEP_MIN);
    steps(&g, V4F_GATE_WINDOW, V4F_GATE_WINDOW);
    steps(&g, V4F_GATE_WINDOW, V4F_GATE_KEEP_MIN - 1);
    CHECK(v4f_spec_gate_pause(&g) == V4F_GATE_PAUSE_MIN);
}

TEST(spec_gate_off_never_pauses) {
    v4f_spec_gate g;
    v4f_spec_gate_init(&g, false, V4F_GATE_KEEP_MIN);
    steps(&g, 10 * V4F_GATE_WINDOW, 0);
    CHECK(v4f_spec_gate_pause(&g) == 0);
    /* switching it on starts fresh */
    v4f_spec_gate_init(&g, true, V4F_GATE_KEEP_MIN);
    steps(&g, V4F_GATE_WINDOW - 1, 0);
    CHECK(v4f_spec_gate_pause(&g) == 0);
}
