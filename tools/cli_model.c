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

int v4f_cli_model_open(const char *cmd, const char *path, const char *synthetic, uint64_t seed,
                       int n_threads, v4f_cli_model *cm) {
    memset(cm, 0, sizeof *cm);
    v4f_err err = {0};
    double t0 = v4f_time_s();
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
        v4f_gguf *g = NULL;
        if (v4f_gguf_open_memory(cm->img, cm->img_size, synthetic, &g, &err) ||
            v4f_model_open_gguf(g, NULL, &cm->m, NULL, &err)) {
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
        if (v4f_model_open(path, NULL, &cm->m, NULL, &err)) {
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
    memset(cm, 0, sizeof *cm);
}
