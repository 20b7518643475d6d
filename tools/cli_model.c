/*
 * cli_model.c - model opening shared by run / bench (see cli_model.h).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli_model.h"
#include "gguf/gguf.h"
#include "model/synth.h"
#include "progress.h"

static void on_build(void *ud, uint64_t done, uint64_t total) {
    v4f_progress *p = ud;
    p->total = total;
    v4f_progress_update(p, done);
}

/* The synthetic preset's MTP block built in memory (cm->mtp_img). */
static int synth_mtp(const char *cmd, const char *preset, uint32_t layers, uint64_t seed, int n_threads,
                     v4f_cli_model *cm, v4f_gguf **g) {
    v4f_err err = {0};
    v4f_synth_opts o = {.preset = preset, .n_layer = layers, .seed = seed, .n_threads = n_threads, .mtp = true};
    if (v4f_synth_build_memory_ex(&o, &cm->mtp_img, &cm->mtp_img_size, &err) ||
        v4f_gguf_open_memory(cm->mtp_img, cm->mtp_img_size, "synthetic MTP", g, &err)) {
        fprintf(stderr, "%s: synthetic MTP: %s\n", cmd, err.msg);
        return 1;
    }
    return 0;
}

int v4f_cli_model_open(const char *cmd, const char *path, const char *synthetic, const char *mtp, uint64_t seed,
                       int n_threads, v4f_cli_model *cm) {
    memset(cm, 0, sizeof *cm);
    v4f_err err = {0};
    double t0 = v4f_time_s();
    const bool mtp_synth = mtp && strcmp(mtp, "synthetic") == 0;
    if (mtp_synth && !synthetic) {
        fprintf(stderr, "%s: --mtp synthetic goes with --synthetic (a model file takes its MTP file)\n", cmd);
        return 2;
    }
    if (mtp && !mtp_synth && access(mtp, R_OK) != 0) {
        fprintf(stderr, "%s: cannot open MTP file '%s': %s\n", cmd, mtp, strerror(errno));
        return 1;
    }
    if (synthetic) {
        const char *preset = NULL;
        uint32_t layers = 0;
        if (v4f_synth_parse_spec(synthetic, &preset, &layers, &err)) {
            fprintf(stderr, "%s: --synthetic: %s\n", cmd, err.msg);
            return 2;
        }
        v4f_progress pr;
        v4f_progress_begin(&pr, "synthesize", 0, V4F_PROGRESS_BYTES);
        v4f_synth_opts o = {.preset = preset, .n_layer = layers, .seed = seed,
                            .n_threads = n_threads, .progress = on_build, .progress_ud = &pr};
        v4f_status st = v4f_synth_build_memory_ex(&o, &cm->img, &cm->img_size, &err);
        v4f_progress_end(&pr);
        if (st) {
            fprintf(stderr, "%s: %s\n", cmd, err.msg);
            return 1;
        }
        v4f_gguf *g = NULL, *mg = NULL;
        if (mtp_synth && synth_mtp(cmd, preset, layers, seed, n_threads, cm, &mg)) {
            v4f_cli_model_close(cm);
            return 1;
        }
        if (mtp && !mtp_synth && v4f_gguf_open(mtp, &mg, &err)) {
            fprintf(stderr, "%s: MTP file: %s\n", cmd, err.msg);
            v4f_cli_model_close(cm);
            return 1;
        }
        if (v4f_gguf_open_memory(cm->img, cm->img_size, synthetic, &g, &err)) {
            v4f_gguf_close(mg);
            fprintf(stderr, "%s: synthetic %s: %s\n", cmd, synthetic, err.msg);
            v4f_cli_model_close(cm);
            return 1;
        }
        if (v4f_model_open_gguf(g, mg, &cm->m, NULL, &err)) {
            fprintf(stderr, "%s: synthetic %s: %s\n", cmd, synthetic, err.msg);
            v4f_cli_model_close(cm);
            return 1;
        }
        snprintf(cm->desc, sizeof cm->desc, "synthetic %s (%u layers, seed %llu; random weights)",
                 preset, cm->m->cfg.n_layer, (unsigned long long)seed);
    } else {
        if (access(path, R_OK) != 0) {
            fprintf(stderr, "%s: cannot open model '%s': %s\n", cmd, path, strerror(errno));
            return 1;
        }
        if (v4f_model_open(path, mtp, &cm->m, NULL, &err)) {
            fprintf(stderr, "%s: invalid model: %s\n", cmd, err.msg);
            return 1;
        }
        const char *v = v4f_model_published_variant(cm->m, NULL);
        snprintf(cm->desc, sizeof cm->desc, "%s (%u layers%s%s)", path, cm->m->cfg.n_layer,
                 v ? ", published " : "", v ? v : "");
    }
    cm->load_s = v4f_time_s() - t0;
    return 0;
}

void v4f_cli_model_close(v4f_cli_model *cm) {
    v4f_model_close(cm->m);
    v4f_synth_memory_free(cm->img, cm->img_size);
    v4f_synth_memory_free(cm->mtp_img, cm->mtp_img_size);
    memset(cm, 0, sizeof *cm);
}
