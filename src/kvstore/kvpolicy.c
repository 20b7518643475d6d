/*
 * kvpolicy.c - when to save KV checkpoints (pure functions, ds4's policy and
 * defaults, PRODUCT_DS4.md §6):
 *   cold       a prompt that missed every cache, min..cold_max tokens long,
 *              is saved at n - trim aligned down to the alignment (so a
 *              re-tokenized continuation that merges tokens across the end
 *              still hits, and the prefix ends on a prefill chunk boundary),
 *              or whole when that would drop below min_tokens;
 *   continued  at every absolute frontier that is a multiple of the interval
 *              rounded up to the alignment (10000 -> 10240);
 *   evict / shutdown   the live session, when it has >= min_tokens.
 * Defaults: min 512, cold max 30000, interval 10000, trim 32, align 2048.
 *
 * Invariants: results never exceed the prompt length; arithmetic is done in
 * 64 bits so no input overflows. Ownership: none. Threading: pure.
 */
#include "kvstore/kvstore.h"

void v4f_kv_policy_default(v4f_kv_policy *p) {
    p->min_tokens = 512;
    p->cold_max_tokens = 30000;
    p->continued_interval = 10000;
    p->boundary_trim = 32;
    p->boundary_align = 2048;
}

uint32_t v4f_kv_policy_cold_len(const v4f_kv_policy *p, uint32_t n_prompt, uint32_t n_reused) {
    if (n_reused > 0 || p->cold_max_tokens == 0 || n_prompt == 0) return 0;
    if (n_prompt < p->min_tokens || n_prompt > p->cold_max_tokens) return 0;
    if ((uint64_t)n_prompt > (uint64_t)p->min_tokens + p->boundary_trim) {
        uint32_t stable = n_prompt - p->boundary_trim;
        if (p->boundary_align) stable -= stable % p->boundary_align;
        if (stable >= p->min_tokens && stable > 0) return stable;
    }
    return n_prompt;
}

uint32_t v4f_kv_policy_continued_step(const v4f_kv_policy *p) {
    if (p->continued_interval == 0) return 0;
    uint64_t step = p->continued_interval;
    if (p->boundary_align) step = (step + p->boundary_align - 1) / p->boundary_align * p->boundary_align;
    return step > UINT32_MAX ? 0 : (uint32_t)step;
}

uint32_t v4f_kv_policy_next_frontier(const v4f_kv_policy *p, uint32_t from, uint32_t to) {
    uint64_t step = v4f_kv_policy_continued_step(p);
    if (!step || to <= from) return 0;
    uint64_t f = ((uint64_t)from / step + 1) * step;
    if (f < p->min_tokens) f = ((uint64_t)p->min_tokens + step - 1) / step * step;
    return f <= to ? (uint32_t)f : 0;
}

bool v4f_kv_policy_save_live(const v4f_kv_policy *p, uint32_t n_live) {
    return n_live > 0 && n_live >= p->min_tokens;
}

size_t v4f_kv_policy_plan_prefill(const v4f_kv_policy *p, uint32_t n_prompt, uint32_t n_reused,
                                  v4f_kv_save_point *out, size_t cap) {
    size_t n = 0;
    uint32_t cold = v4f_kv_policy_cold_len(p, n_prompt, n_reused);
    bool cold_done = cold == 0;
    uint32_t from = n_reused;
    for (;;) {
        uint32_t f = v4f_kv_policy_next_frontier(p, from, n_prompt);
        if (!cold_done && (f == 0 || cold <= f)) {
            if (n < cap) out[n] = (v4f_kv_save_point){cold, V4F_KV_REASON_COLD};
            n++;
            cold_done = true;
            if (f == cold) { /* one save serves both */
                from = f;
                continue;
            }
        }
        if (f == 0) break;
        if (n < cap) out[n] = (v4f_kv_save_point){f, V4F_KV_REASON_CONTINUED};
        n++;
        from = f;
    }
    return n;
}
