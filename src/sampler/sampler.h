/*
 * sampler.h - logits to the next token: temperature, top-k, min-p, top-p and
 * a seeded RNG (xoshiro256** seeded through splitmix64, so a given seed gives
 * the same token sequence on every platform).
 *
 * Pipeline (fixed order, documented so results are reproducible):
 *   1. temperature <= 0 (or top_k == 1): greedy argmax, ties -> lowest id;
 *      no RNG draw is consumed.
 *   2. z_i = logit_i / temperature.
 *   3. min-p: keep i with p_i >= min_p * p_max, i.e. z_i >= z_max + ln(min_p)
 *      (computed on the tempered distribution; min_p = 0 keeps all).
 *   4. sort the survivors by (z desc, id asc) - a total order, so the result
 *      does not depend on the sort algorithm;
 *      top-k (k > 0): keep the first k.
 *   5. top-p (< 1): keep the smallest prefix whose probability mass
 *      (renormalised over the survivors of 3-4) reaches top_p.
 *   6. draw u in [0,1) (53 random bits) and walk the cumulative mass (in
 *      rank order; with no top-k/top-p and > 4096 survivors, in id order,
 *      which needs no sort and is just as deterministic).
 *      v4f_sampler_verify (speculative decoding) first tests a draft.
 * Cost: O(n_vocab) per token plus a sort of the survivors; top-p first
 * tries the best 1024 candidates, so it sorts the whole vocabulary only
 * when the nucleus is wider than that.
 * Non-finite logits (NaN, -inf) are never selected unless every logit is.
 *
 * Ownership: the sampler owns scratch sized for n_vocab at creation; sampling
 * never allocates. Threading: a sampler is single-threaded state (the RNG);
 * use one per generation stream.
 */
#ifndef V4F_SAMPLER_H
#define V4F_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/core.h"

typedef struct v4f_sampler_params {
    float temperature; /* 0 = greedy (default 1) */
    int32_t top_k;     /* 0 = off (default 0) */
    float top_p;       /* 1 = off (default 1) */
    float min_p;       /* 0 = off (default 0.05, as ds4) */
    uint64_t seed;     /* RNG seed (default 0; the CLI picks one) */
} v4f_sampler_params;

typedef struct v4f_sampler v4f_sampler;

/* ds4 defaults: temperature 1, top_k 0, top_p 1, min_p 0.05, seed 0. */
v4f_sampler_params v4f_sampler_params_default(void);

/* Validate params (temperature >= 0 and finite, top_k >= 0, top_p in (0,1],
 * min_p in [0,1]) and n_vocab > 0; allocate the scratch. */
v4f_status v4f_sampler_new(const v4f_sampler_params *p, uint32_t n_vocab, v4f_sampler **out,
                           v4f_err *err);
void v4f_sampler_free(v4f_sampler *s);

/* Restart the RNG stream from seed (same seed -> same sequence). */
void v4f_sampler_reseed(v4f_sampler *s, uint64_t seed);
const v4f_sampler_params *v4f_sampler_params_get(const v4f_sampler *s);

/* true when sampling is the greedy argmax (temperature <= 0 or top_k 1) */
bool v4f_sampler_is_greedy(const v4f_sampler *s);

/* Pick the next token from logits[0..n_vocab). */
int32_t v4f_sampler_sample(v4f_sampler *s, const float *logits);

/* Speculative sampling with a deterministic draft (e.g. the MTP block's
 * greedy guess, already evaluated): with P the distribution of steps 1-5,
 * returns draft with probability P(draft) (one draw), else a draw from P
 * without the draft, renormalised (a second draw), so the result is
 * distributed as v4f_sampler_sample's. A draft outside the candidates
 * (P(draft) = 0) costs no extra draw: the result and the RNG state are
 * then exactly those of v4f_sampler_sample. Greedy: the argmax, no draw. */
int32_t v4f_sampler_verify(v4f_sampler *s, const float *logits, int32_t draft);
/* The sampler as a drawer (core.h): draw = v4f_sampler_sample, verify =
 * v4f_sampler_verify. */
v4f_drawer v4f_sampler_drawer(v4f_sampler *s);

/* The final distribution the sampler would draw from (steps 1-5), most
 * likely first: writes up to max_out (id, prob) pairs, returns the number of
 * candidates (may exceed max_out). Greedy gives one candidate with prob 1.
 * Consumes no RNG state. */
uint32_t v4f_sampler_dist(v4f_sampler *s, const float *logits, int32_t *ids, double *probs,
                          uint32_t max_out);

/* Argmax over logits[0..n); ties -> lowest id; NaN never wins. */
int32_t v4f_sampler_greedy(const float *logits, uint32_t n);

/* The RNG on its own (for tests and other seeded users). */
typedef struct v4f_rng {
    uint64_t s[4];
} v4f_rng;
void v4f_rng_seed(v4f_rng *r, uint64_t seed);
uint64_t v4f_rng_u64(v4f_rng *r);
double v4f_rng_uniform(v4f_rng *r); /* [0, 1), 53 bits */

#endif /* V4F_SAMPLER_H */
