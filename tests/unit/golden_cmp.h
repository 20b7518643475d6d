/*
 * golden_cmp.h - logit comparison against the golden fixtures with the
 * Tier A / Tier B rules of tests/fixtures/model/README.md (tolerances are
 * named constants, documented in docs/TOLERANCES.md "## golden (forward
 * pass)").
 *
 * Ownership: pure functions over caller arrays. Threading: none.
 */
#ifndef V4F_GOLDEN_CMP_H
#define V4F_GOLDEN_CMP_H

#include <stdbool.h>
#include <stdint.h>

/* Tier A (reference mode: float32 everywhere, exact weights) */
#define GOLDEN_A_MEDIAN_REL_RMS 1e-3
#define GOLDEN_A_MEAN_REL_RMS 3e-3
#define GOLDEN_A_OUTLIER_REL_RMS 2e-2 /* at most a = max(1, n/100) positions above */
/* Tier B (production storage) */
#define GOLDEN_B_MEDIAN_REL_RMS 1.5e-2
#define GOLDEN_B_MEAN_REL_RMS 3e-2
/* top-1 rule: positions whose golden margin is below this are exempt */
#define GOLDEN_MARGIN_EXEMPT 0.05

typedef struct golden_stats {
    int n;                 /* positions compared */
    double max_abs;
    double rel_median, rel_mean, rel_max;
    double kl_mean, kl_max;
    double top1_agree;     /* fraction over all positions */
    int n_rel_outliers;    /* positions with rel RMS > GOLDEN_A_OUTLIER_REL_RMS */
    int n_top1_bad;        /* top-1 mismatches at margin >= GOLDEN_MARGIN_EXEMPT */
    int first_outlier;     /* position (or -1) */
    int first_top1_bad;
    double first_top1_bad_margin;
} golden_stats;

/* got/ref: [n][vocab] */
void golden_compare(const float *got, const float *ref, int n, int vocab, golden_stats *st);
bool golden_tier_a(const golden_stats *st);
bool golden_tier_b(const golden_stats *st);
/* One line: "max-abs .. rel-RMS med/mean/max .. KL mean/max .. top1 ..". */
void golden_format(const golden_stats *st, char *buf, int len);

#endif
