/*
 * golden_cmp.c - Tier A/B logit comparison (see golden_cmp.h).
 *
 * Rules (fixtures README): per position rel RMS = ||l - g|| / ||g||, margin =
 * golden top-1 minus top-2 logit, KL(golden || got) over the softmax.
 * a = max(1, floor(n/100)).
 * Tier A: median <= 1e-3, mean <= 3e-3, rel > 2e-2 at <= a positions,
 *         top-1 differs at <= a positions with margin >= 0.05.
 * Tier B: median <= 1.5e-2, mean <= 3e-2, top-1 differs at <= max(2, n/50)
 *         positions with margin >= 0.05.
 */
#include "golden_cmp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double log_softmax_norm(const float *x, int n, double *mx) {
    double m = -INFINITY;
    for (int i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    double s = 0;
    for (int i = 0; i < n; i++) s += exp((double)x[i] - m);
    *mx = m;
    return log(s);
}

double golden_max_abs(const float *got, const float *ref, size_t n) {
    double d = 0;
    for (size_t i = 0; i < n; i++) d = fmax(d, fabs(got[i] - ref[i]));
    return d;
}

void golden_compare(const float *got, const float *ref, int n, int vocab, golden_stats *st) {
    double *rel = calloc((size_t)n, sizeof *rel);
    st->n = n;
    st->max_abs = 0;
    st->rel_mean = st->rel_max = 0;
    st->kl_mean = st->kl_max = 0;
    st->n_rel_outliers = st->n_top1_bad = 0;
    st->first_outlier = st->first_top1_bad = -1;
    st->first_top1_bad_margin = 0;
    int agree = 0;
    for (int p = 0; p < n; p++) {
        const float *g = got + (size_t)p * vocab, *r = ref + (size_t)p * vocab;
        double num = 0, den = 0;
        int tg = 0, tr = 0, tr2 = -1;
        for (int i = 0; i < vocab; i++) {
            double dlt = (double)g[i] - r[i];
            num += dlt * dlt;
            den += (double)r[i] * r[i];
            if (fabs(dlt) > st->max_abs) st->max_abs = fabs(dlt);
            if (g[i] > g[tg]) tg = i;
            if (r[i] > r[tr]) tr = i;
        }
        for (int i = 0; i < vocab; i++)
            if (i != tr && (tr2 < 0 || r[i] > r[tr2])) tr2 = i;
        double margin = tr2 >= 0 ? (double)r[tr] - r[tr2] : INFINITY;
        rel[p] = den > 0 ? sqrt(num / den) : sqrt(num);
        st->rel_mean += rel[p];
        if (rel[p] > st->rel_max) st->rel_max = rel[p];
        if (rel[p] > GOLDEN_A_OUTLIER_REL_RMS) {
            if (st->first_outlier < 0) st->first_outlier = p;
            st->n_rel_outliers++;
        }
        if (tg == tr) {
            agree++;
        } else if (margin >= GOLDEN_MARGIN_EXEMPT) {
            if (st->first_top1_bad < 0) {
                st->first_top1_bad = p;
                st->first_top1_bad_margin = margin;
            }
            st->n_top1_bad++;
        }
        double mg, mr;
        double lg = log_softmax_norm(g, vocab, &mg), lr = log_softmax_norm(r, vocab, &mr);
        double kl = 0;
        for (int i = 0; i < vocab; i++) {
            double lpr = (double)r[i] - mr - lr, lpg = (double)g[i] - mg - lg;
            kl += exp(lpr) * (lpr - lpg);
        }
        if (kl < 0) kl = 0;
        st->kl_mean += kl;
        if (kl > st->kl_max) st->kl_max = kl;
    }
    st->rel_mean /= n;
    st->kl_mean /= n;
    st->top1_agree = (double)agree / n;
    qsort(rel, (size_t)n, sizeof *rel, cmp_double);
    st->rel_median = n % 2 ? rel[n / 2] : 0.5 * (rel[n / 2 - 1] + rel[n / 2]);
    free(rel);
}

static int allow_a(int n) { return n / 100 > 1 ? n / 100 : 1; }

bool golden_tier_a(const golden_stats *st) {
    int a = allow_a(st->n);
    return st->rel_median <= GOLDEN_A_MEDIAN_REL_RMS && st->rel_mean <= GOLDEN_A_MEAN_REL_RMS &&
           st->n_rel_outliers <= a && st->n_top1_bad <= a;
}

bool golden_tier_b(const golden_stats *st) {
    int b = st->n / 50 > 2 ? st->n / 50 : 2;
    return st->rel_median <= GOLDEN_B_MEDIAN_REL_RMS && st->rel_mean <= GOLDEN_B_MEAN_REL_RMS &&
           st->n_top1_bad <= b;
}

void golden_format(const golden_stats *st, char *buf, int len) {
    snprintf(buf, (size_t)len,
             "n=%d max-abs %.2e rel-RMS med %.2e mean %.2e max %.2e KL mean %.2e max %.2e "
             "top1 %.4f (bad@margin>=.05: %d, first pos %d margin %.3f; rel>2e-2: %d, first %d)",
             st->n, st->max_abs, st->rel_median, st->rel_mean, st->rel_max, st->kl_mean,
             st->kl_max, st->top1_agree, st->n_top1_bad, st->first_top1_bad,
             st->first_top1_bad_margin, st->n_rel_outliers, st->first_outlier);
}

bool golden_fixture_open(const char *dir, const char *name, bool mtp, golden_fixture *f, char *msg, size_t len) {
    char path[512], mpath[512], gpath[512];
    snprintf(path, sizeof path, "%s/%s.gguf", dir, name);
    snprintf(mpath, sizeof mpath, "%s/%s.mtp.gguf", dir, name);
    snprintf(gpath, sizeof gpath, "%s/%s.golden.gguf", dir, name);
    memset(f, 0, sizeof *f);
    v4f_err err = {0};
    if (v4f_model_open(path, mtp ? mpath : NULL, &f->m, NULL, &err) != V4F_OK) {
        snprintf(msg, len, "open %s: %s", path, err.msg);
        return false;
    }
    if (v4f_gguf_open(gpath, &f->gold, &err) != V4F_OK) {
        snprintf(msg, len, "open %s: %s", gpath, err.msg);
        v4f_model_close(f->m);
        return false;
    }
    const v4f_gguf_tensor *tk = v4f_gguf_tensor_find(f->gold, "tokens");
    if (!tk) {
        snprintf(msg, len, "%s: no tokens tensor", gpath);
        golden_fixture_close(f);
        return false;
    }
    f->tokens = tk->data;
    f->n = (int)tk->ne[0];
    f->vocab = (int)f->m->cfg.n_vocab;
    f->split = 260;
    uint32_t sp;
    if (v4f_gguf_get_u32(f->gold, "oracle.decode.prefill_tokens", &sp, NULL) == V4F_OK) f->split = (int)sp;
    return true;
}

void golden_fixture_close(golden_fixture *f) {
    v4f_gguf_close(f->gold);
    v4f_model_close(f->m);
}

const void *golden_tensor(const golden_fixture *f, const char *name) {
    const v4f_gguf_tensor *t = v4f_gguf_tensor_find(f->gold, name);
    return t ? t->data : NULL;
}
