/*
 * cmd_quantize.c - `v4flash quantize IN.gguf OUT.gguf --experts q2|q4`:
 * re-quantize the routed experts into the other published layout (e.g. the
 * 153 GiB q4 file into the 81 GiB q2 layout, which one 141 GB card holds
 * whole), everything else copied byte for byte (src/model/requant.h). The
 * output is opened again and its layout reported.
 *
 * Exit codes: 0 ok, 1 runtime failure (bad input, I/O, the output did not
 * validate), 2 usage error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "model/model.h"
#include "model/requant.h"
#include "progress.h"

static void on_progress(void *ud, uint64_t done, uint64_t total) {
    v4f_progress *p = ud;
    p->total = total;
    v4f_progress_update(p, done);
}

/* "q2" / "q4" / "not a published layout (why)" */
static void describe(const v4f_model *m, char *out, size_t n) {
    v4f_err why = {0};
    const char *v = v4f_model_published_variant(m, &why);
    if (v) snprintf(out, n, "the published %s layout", v);
    else snprintf(out, n, "not a published layout: %s", why.msg);
}

int cmd_quantize(int argc, char **argv) {
    const char *experts = NULL;
    int threads = 0;
    bool quiet = false;
    const v4f_opt opts[] = {
        {"experts", 'e', V4F_ARG_STR, &experts, 0, 0, "q2|q4",
         "routed experts as the published q2 (IQ2_XXS gate/up, Q2_K down) or q4 (Q4_K) file (required)", NULL},
        {"threads", 't', V4F_ARG_INT32, &threads, 0, 4096, "N", "threads (default: all CPUs)", NULL},
        {"quiet", 'q', V4F_ARG_FLAG, &quiet, 0, 0, NULL, "no progress output", NULL},
        {0},
    };
    const v4f_args_spec spec = {
        .cmd = "v4flash quantize",
        .synopsis = "IN.gguf OUT.gguf --experts q2|q4 [--threads N]",
        .about = "Re-quantize the routed experts of a DeepSeek V4 Flash GGUF into the other published\n"
                 "layout; every other tensor and all metadata are copied unchanged. q4 -> q2 shrinks\n"
                 "153 GiB to 81 GiB. The q2 experts are rounded from the q4 ones with an importance\n"
                 "derived from the weights themselves (the published q2 used activation statistics,\n"
                 "so its rounding is somewhat better); q2 -> q4 gains no quality.",
        .opts = opts,
        .min_pos = 2,
        .max_pos = 2,
    };
    const char *pos[2];
    int np = 0;
    int rc = v4f_args_parse(&spec, argc, argv, pos, &np);
    if (rc == V4F_ARGS_HELP) return 0;
    if (rc) return rc;
    if (!experts) return v4f_args_fail(&spec, "--experts q2|q4 is required");
    if (strcmp(experts, "q2") && strcmp(experts, "q4")) return v4f_args_fail(&spec, "--experts must be q2 or q4");
    v4f_err err = {0};
    v4f_model *m = NULL;
    if (v4f_model_open(pos[0], NULL, &m, NULL, &err)) {
        fprintf(stderr, "v4flash quantize: %s: %s\n", pos[0], err.msg);
        return 1;
    }
    char what[640];
    describe(m, what, sizeof what);
    if (!quiet) fprintf(stderr, "quantize: %s: %s\n", pos[0], what);
    v4f_progress pr;
    v4f_progress_begin(&pr, "quantize", 1, V4F_PROGRESS_BYTES);
    if (!quiet && v4f_gguf_file_size(m->gguf) > (1ull << 30)) v4f_progress_force(&pr);
    if (quiet) pr.enabled = false;
    const v4f_requant_opts o = {.experts = experts, .n_threads = threads, .progress = on_progress, .progress_ud = &pr};
    v4f_requant_stats st;
    const double t0 = v4f_time_s();
    v4f_status s = v4f_requant(m, pos[1], &o, &st, &err);
    v4f_progress_end(&pr);
    const double dt = v4f_time_s() - t0;
    v4f_model_close(m);
    if (s) {
        fprintf(stderr, "v4flash quantize: %s\n", err.msg);
        return 1;
    }
    /* the output must load as a model of the same shape */
    if (v4f_model_open(pos[1], NULL, &m, NULL, &err)) {
        fprintf(stderr, "v4flash quantize: the output %s does not load: %s\n", pos[1], err.msg);
        return 1;
    }
    describe(m, what, sizeof what);
    v4f_model_close(m);
    if (!quiet)
        fprintf(stderr,
                "quantize: wrote %s (%s): %llu tensors, %llu re-quantized, %.3f -> %.3f GiB of tensor data in "
                "%.1f s\n",
                pos[1], what, (unsigned long long)st.n_tensors, (unsigned long long)st.n_converted,
                (double)st.bytes_in / (1u << 30), (double)st.bytes_out / (1u << 30), dt);
    return 0;
}
