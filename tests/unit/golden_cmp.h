/*
 * golden_cmp.h - logit comparison against the golden fixtures with the
 * Tier A / Tier B rules of tests/fixtures/model/README.md (tolerances are
 * named constants, documented in docs/TOLERANCES.md "## golden (forward
 * pass)").
 *
 * Also the fixture loader both golden tests use (CPU and CUDA).
 *
 * Ownership: the comparisons are pure functions over caller arrays; a
 * golden_fixture owns its model and golden file until golden_fixture_close.
 * Threading: none.
 */
#ifndef V4F_GOLDEN_CMP_H
#define V4F_GOLDEN_CMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf/gguf.h"
#include "model/model.h"

/* Tier A (reference mode: float32 everywhere, exact weights) */
#define GOLDEN_A_MEDIAN_REL_RMS 1e-3
#define GOLDEN_A_MEAN_REL_RMS 3e-3
#define GOLDEN_A_OUTLIER_REL_RMS 2e-2 /* at most a = max(1, n/100) positions above */
/* Tier B (production storage) */
#define GOLDEN_B_MEDIAN_REL_RMS 1.5e-2
#define GOLDEN_B_MEAN_REL_RMS 3e-2
/* top-1 rule: positions whose golden margin is below this are exempt */
#define GOLDEN_MARGIN_EXEMPT 0.05
/* Last-position logits (or the HC state) of one eval computed two ways that
 * differ only in float32 rounding (the last layer's FFN/query side for that
 * row alone with the decode kernels, vs every row with the prefill kernels;
 * or a prefill in chunks of 37 vs one call), max abs: measured 2-7e-6; the
 * bound is far above that and far below what a wrong row, skipped layer or
 * scale would move (docs/TOLERANCES.md). */
#define GOLDEN_LAST_ROW_ABS 1e-3

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
/* max |got[i] - ref[i]| over n values (NaN differences ignored, as fmax does) */
double golden_max_abs(const float *got, const float *ref, size_t n);
bool golden_tier_a(const golden_stats *st);
bool golden_tier_b(const golden_stats *st);
/* One line: "max-abs .. rel-RMS med/mean/max .. KL mean/max .. top1 ..". */
void golden_format(const golden_stats *st, char *buf, int len);

/* A public fixture: DIR/NAME.gguf (with mtp also DIR/NAME.mtp.gguf) and its
 * golden file DIR/NAME.golden.gguf; tokens, count, vocabulary and the
 * golden prefill/decode split (oracle.decode.prefill_tokens, else 260). */
typedef struct golden_fixture {
    v4f_model *m;
    v4f_gguf *gold;
    const int32_t *tokens;
    int n, vocab, split;
} golden_fixture;

/* false with the reason in msg (nothing left open) on failure */
bool golden_fixture_open(const char *dir, const char *name, bool mtp, golden_fixture *f, char *msg, size_t len);
void golden_fixture_close(golden_fixture *f);
/* The golden tensor's data, or NULL if the file has none of that name. */
const void *golden_tensor(const golden_fixture *f, const char *name);

#endif
