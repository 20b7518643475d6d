/*
 * sampler.c - temperature / top-k / min-p / top-p sampling with a seeded
 * xoshiro256** RNG (see sampler.h for the exact pipeline order).
 *
 * Owns: the candidate scratch (n_vocab entries) allocated at creation; no
 * allocation afterwards (an in-place heapsort instead of qsort, which may
 * malloc). Invariant: candidates are always ordered by
 * (z desc, id asc), a total order, so every step is deterministic.
 * Threading: one sampler per stream; no shared state.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "sampler/sampler.h"

typedef struct cand {
    double z; /* tempered logit */
    double e; /* exp(z - zmax), the unnormalised probability (computed once) */
    int32_t id;
} cand;

struct v4f_sampler {
    v4f_sampler_params p;
    uint32_t n_vocab;
    v4f_rng rng;
    cand *c;     /* [n_vocab] scratch */
    double zmax; /* largest tempered logit of the last build */
};

/* Candidates examined first by top-p before falling back to a full sort. */
#define TOP_P_PREFILTER 1024u

/* ---- RNG ----------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

void v4f_rng_seed(v4f_rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t v4f_rng_u64(v4f_rng *r) {
    uint64_t *s = r->s;
    uint64_t res = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return res;
}

double v4f_rng_uniform(v4f_rng *r) { return (double)(v4f_rng_u64(r) >> 11) * 0x1.0p-53; }

/* ---- params / lifecycle -------------------------------------------------- */

v4f_sampler_params v4f_sampler_params_default(void) {
    v4f_sampler_params p = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.05f,
                            .seed = 0};
    return p;
}

v4f_status v4f_sampler_new(const v4f_sampler_params *p, uint32_t n_vocab, v4f_sampler **out,
                           v4f_err *err) {
    *out = NULL;
    if (!p || n_vocab == 0)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "sampler: n_vocab must be > 0");
    if (!isfinite(p->temperature) || p->temperature < 0)
        return v4f_err_set(err, V4F_STATUS_RANGE, "sampler: temperature %g must be >= 0",
                           (double)p->temperature);
    if (p->top_k < 0)
        return v4f_err_set(err, V4F_STATUS_RANGE, "sampler: top_k %d must be >= 0", p->top_k);
    if (!(p->top_p > 0 && p->top_p <= 1))
        return v4f_err_set(err, V4F_STATUS_RANGE, "sampler: top_p %g must be in (0, 1]",
                           (double)p->top_p);
    if (!(p->min_p >= 0 && p->min_p <= 1))
        return v4f_err_set(err, V4F_STATUS_RANGE, "sampler: min_p %g must be in [0, 1]",
                           (double)p->min_p);
    v4f_sampler *s = v4f_xcalloc(1, sizeof *s);
    s->p = *p;
    s->n_vocab = n_vocab;
    s->c = v4f_aligned_alloc((size_t)n_vocab * sizeof(cand));
    if (!s->c) {
        free(s);
        return v4f_err_set(err, V4F_STATUS_OOM, "sampler: cannot allocate %u candidates",
                           n_vocab);
    }
    v4f_rng_seed(&s->rng, p->seed);
    *out = s;
    return V4F_OK;
}

void v4f_sampler_free(v4f_sampler *s) {
    if (!s) return;
    v4f_aligned_free(s->c);
    free(s);
}

void v4f_sampler_reseed(v4f_sampler *s, uint64_t seed) {
    s->p.seed = seed;
    v4f_rng_seed(&s->rng, seed);
}

const v4f_sampler_params *v4f_sampler_params_get(const v4f_sampler *s) { return &s->p; }

/* ---- selection ----------------------------------------------------------- */

int32_t v4f_sampler_greedy(const float *logits, uint32_t n) { return v4f_argmax_f32(logits, n); }

/* a ranks before b */
static inline int better(const cand *a, const cand *b) {
    return a->z > b->z || (a->z == b->z && a->id < b->id);
}

/* Min-heap of the k best (root = worst kept). */
static void heap_down(cand *h, uint32_t n, uint32_t i) {
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && better(&h[w], &h[l])) w = l;
        if (r < n && better(&h[w], &h[r])) w = r;
        if (w == i) return;
        cand t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

/* In-place heapsort, best first (qsort may allocate; sampling must not). */
static void sort_cands(cand *c, uint32_t n) {
    if (n < 2) return;
    for (uint32_t i = n / 2; i-- > 0;) heap_down(c, n, i);
    for (uint32_t end = n - 1; end > 0; end--) {
        cand t = c[0]; /* worst remaining goes last */
        c[0] = c[end];
        c[end] = t;
        heap_down(c, end, 0);
    }
}

/* Move the k best of c[0..n) to c[0..k) (unordered); c stays a
 * permutation of its input. */
static uint32_t select_top_k(cand *c, uint32_t n, uint32_t k) {
    for (uint32_t i = k / 2; i-- > 0;) heap_down(c, k, i);
    for (uint32_t i = k; i < n; i++) {
        if (better(&c[i], &c[0])) {
            cand t = c[0];
            c[0] = c[i];
            c[i] = t;
            heap_down(c, k, 0);
        }
    }
    return k;
}

/* Steps 2-5 of the pipeline: fills s->c[0..n) (rank order when ordered, or
 * when top-k / top-p need it) and returns n; *mass gets the unnormalised
 * kept mass; probabilities are c[i].e = exp(z - s->zmax) / *mass. */
static uint32_t build_candidates(v4f_sampler *s, const float *logits, double *mass, int ordered) {
    const double t = s->p.temperature;
    const uint32_t nv = s->n_vocab;
    /* the largest logit (NaN never wins; the SIMD argmax: one chain of
     * scalar max was 55% of a sample) */
    const float lmax = logits[v4f_argmax_f32(logits, nv)];
    if (!(lmax > -INFINITY)) return 0;
    const double zmax = (double)lmax / t;
    s->zmax = zmax;
    const double zcut = s->p.min_p > 0 ? zmax + log((double)s->p.min_p) : -INFINITY;

    cand *c = s->c;
    uint32_t n = 0;
    /* The min-p cut as a logit a little below it: z = l / t rises with l,
     * so every logit that passes the exact test (z >= zcut) passes a float
     * compare with it, and only those pay for the division (a decode step's
     * 129,280 logits: 372 -> ~40 us on a Xeon core). */
    const double lc = zcut * t;
    const bool pre = s->p.min_p > 0 && isfinite(lc);
    const float lo = pre ? (float)(lc - fabs(lc) * 1e-6 - 1e-30) : -INFINITY;
    for (uint32_t i0 = 0; i0 < nv; i0 += 8) {
        const uint32_t i1 = i0 + 8 < nv ? i0 + 8 : nv;
#if defined(__SSE2__)
        if (pre && i1 == i0 + 8) { /* 8 below the cut (or NaN) at once */
            const __m128 cut = _mm_set1_ps(lo);
            const __m128 g = _mm_or_ps(_mm_cmpge_ps(_mm_loadu_ps(logits + i0), cut),
                                       _mm_cmpge_ps(_mm_loadu_ps(logits + i0 + 4), cut));
            if (!_mm_movemask_ps(g)) continue;
        }
#endif
        for (uint32_t i = i0; i < i1; i++) {
            float l = logits[i];
            if (!(l > -INFINITY) || (pre && !(l >= lo))) continue; /* NaN, -inf, below the cut */
            double z = (double)l / t;
            if (z >= zcut) c[n++] = (cand){z, 0, (int32_t)i};
        }
    }
    uint32_t k = (uint32_t)s->p.top_k;
    if (k > 0 && n > k) n = select_top_k(c, n, k);
    double all = 0; /* mass of the min-p / top-k survivors */
    for (uint32_t i = 0; i < n; i++) all += c[i].e = exp(c[i].z - zmax);
    if (s->p.top_p >= 1) {
        /* Pure temperature sampling over many candidates needs no order: the
         * walk in id order (ids are ascending here) is just as deterministic. */
        if (ordered || k > 0 || n <= 4096) sort_cands(c, n);
        *mass = all;
        return n;
    }
    const double target = (double)s->p.top_p * all;
    if (n > 2 * TOP_P_PREFILTER) {
        /* The nucleus usually lies among the few best candidates: if the best
         * TOP_P_PREFILTER already hold the target mass, sort only them (same
         * result as sorting everything). */
        select_top_k(c, n, TOP_P_PREFILTER);
        double best = 0;
        for (uint32_t i = 0; i < TOP_P_PREFILTER; i++) best += c[i].e;
        if (best >= target * (1 + 1e-9)) n = TOP_P_PREFILTER;
    }
    sort_cands(c, n);
    double cum = 0;
    uint32_t keep = n;
    for (uint32_t i = 0; i < n; i++) {
        cum += c[i].e;
        if (cum >= target) {
            keep = i + 1;
            break;
        }
    }
    double sum = 0; /* mass of the kept prefix */
    for (uint32_t i = 0; i < keep; i++) sum += c[i].e;
    *mass = sum;
    return keep;
}

static int use_greedy(const v4f_sampler *s) { return s->p.temperature <= 0 || s->p.top_k == 1; }

bool v4f_sampler_is_greedy(const v4f_sampler *s) { return use_greedy(s) != 0; }

/* Step 6 over c[0..n) without the candidate `skip` (-1: none): the first
 * whose cumulative mass exceeds u (unnormalised), else the last one. */
static int32_t walk(const v4f_sampler *s, uint32_t n, double u, int32_t skip) {
    double cum = 0;
    int32_t last = -1;
    for (uint32_t i = 0; i < n; i++) {
        if (s->c[i].id == skip) continue;
        cum += s->c[i].e;
        last = s->c[i].id;
        if (u < cum) return last;
    }
    return last;
}

int32_t v4f_sampler_sample(v4f_sampler *s, const float *logits) {
    if (use_greedy(s)) return v4f_sampler_greedy(logits, s->n_vocab);
    double sum = 0;
    uint32_t n = build_candidates(s, logits, &sum, 0);
    if (n == 0) return v4f_sampler_greedy(logits, s->n_vocab);
    return walk(s, n, v4f_rng_uniform(&s->rng) * sum, -1);
}

int32_t v4f_sampler_verify(v4f_sampler *s, const float *logits, int32_t draft) {
    if (use_greedy(s)) return v4f_sampler_greedy(logits, s->n_vocab);
    double sum = 0;
    uint32_t n = build_candidates(s, logits, &sum, 0);
    if (n == 0) return v4f_sampler_greedy(logits, s->n_vocab);
    double pd = 0; /* the draft's unnormalised mass (0: not a candidate) */
    for (uint32_t i = 0; i < n; i++)
        if (s->c[i].id == draft) {
            pd = s->c[i].e;
            break;
        }
    if (pd <= 0) return walk(s, n, v4f_rng_uniform(&s->rng) * sum, -1); /* as v4f_sampler_sample */
    if (v4f_rng_uniform(&s->rng) * sum < pd) return draft;
    /* refused: a draw from the other candidates, renormalised (none left:
     * the draft had all the mass, and the test above kept it) */
    const int32_t t = walk(s, n, v4f_rng_uniform(&s->rng) * (sum - pd), draft);
    return t >= 0 ? t : draft;
}

uint32_t v4f_sampler_dist(v4f_sampler *s, const float *logits, int32_t *ids, double *probs,
                          uint32_t max_out) {
    if (use_greedy(s)) {
        if (max_out > 0) {
            ids[0] = v4f_sampler_greedy(logits, s->n_vocab);
            probs[0] = 1.0;
        }
        return 1;
    }
    double sum = 0;
    uint32_t n = build_candidates(s, logits, &sum, 1);
    for (uint32_t i = 0; i < n && i < max_out; i++) {
        ids[i] = s->c[i].id;
        probs[i] = s->c[i].e / sum;
    }
    return n;
}

static int32_t drawer_draw(void *ud, const float *logits) { return v4f_sampler_sample(ud, logits); }
static int32_t drawer_verify(void *ud, const float *logits, int32_t draft) {
    return v4f_sampler_verify(ud, logits, draft);
}
v4f_drawer v4f_sampler_drawer(v4f_sampler *s) { return (v4f_drawer){drawer_draw, drawer_verify, s}; }
