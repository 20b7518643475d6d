/*
 * cmd_synth.c - `v4flash synth OUT.gguf --preset P [--layers N] [--seed S] [--mtp]`:
 * stream a random-weight model in the published layout to disk (see
 * src/model/synth.h), with a progress bar and a final size/speed line.
 */
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "cli.h"
#include "model/synth.h"
#include "progress.h"

static void on_progress(void *ud, uint64_t done, uint64_t total) {
    v4f_progress *p = ud;
    p->total = total;
    v4f_progress_update(p, done);
}

int cmd_synth(int argc, char **argv) {
    const char *preset = NULL;
    int64_t layers = 0;
    uint64_t seed = 1;
    int threads = 0;
    bool quiet = false, mtp = false;
    const v4f_opt opts[] = {
        {"preset", 'P', V4F_ARG_STR, &preset, 0, 0, "NAME", "tiny | small | full-q2 | full-q4 (required)", NULL},
        {"layers", 'l', V4F_ARG_INT, &layers, 1, 128, "N", "number of layers (default: the preset's; 43 for full-*)", NULL},
        {"seed", 's', V4F_ARG_U64, &seed, 0, 0, "S", "random seed (default 1)", NULL},
        {"threads", 't', V4F_ARG_INT32, &threads, 0, 1024, "N", "generator threads (default: all CPUs)", NULL},
        {"quiet", 'q', V4F_ARG_FLAG, &quiet, 0, 0, NULL, "no progress output", NULL},
        {"mtp", 0, V4F_ARG_FLAG, &mtp, 0, 0, NULL, "write the preset's MTP file instead (mtp.0.* tensors, the published MTP file's layout; use it with --mtp)", NULL},
        {0},
    };
    const v4f_args_spec spec = {
        .cmd = "v4flash synth",
        .synopsis = "OUT.gguf --preset NAME [--layers N] [--seed S] [--mtp]",
        .about = "Write a random-weight DeepSeek V4 Flash model in the exact published GGUF layout\n"
                 "(valid quant blocks, sane scales; NOT a trained model). Streams to disk: the\n"
                 "full-q2 preset is ~81 GiB and full-q4 ~153 GiB at 43 layers.",
        .opts = opts,
        .min_pos = 1,
        .max_pos = 1,
    };
    const char *pos[1];
    int np = 0;
    int rc = v4f_args_parse(&spec, argc, argv, pos, &np);
    if (rc == V4F_ARGS_HELP) return 0;
    if (rc) return rc;
    if (!preset) return v4f_args_fail(&spec, "--preset is required (%s)", v4f_synth_preset_names());
    v4f_err err = {0};
    v4f_synth_plan *plan = NULL;
    if ((mtp ? v4f_synth_plan_new_mtp : v4f_synth_plan_new)(preset, (uint32_t)layers, &plan, &err))
        return v4f_args_fail(&spec, "%s", err.msg);
    uint64_t bytes = v4f_synth_plan_data_bytes(plan);
    uint32_t n_layer = v4f_synth_plan_n_layer(plan), n_t = v4f_synth_plan_n_tensors(plan);
    v4f_synth_plan_free(plan);

    v4f_progress pr;
    v4f_progress_begin(&pr, "synth", bytes, V4F_PROGRESS_BYTES);
    if (!quiet && bytes > (1ull << 30)) v4f_progress_force(&pr);
    if (quiet) pr.enabled = false;
    v4f_synth_opts o = {.preset = preset, .n_layer = (uint32_t)layers, .seed = seed,
                        .n_threads = threads, .mtp = mtp, .progress = on_progress, .progress_ud = &pr};
    double t0 = v4f_time_s();
    v4f_status st = v4f_synth_write_file(pos[0], &o, &err);
    v4f_progress_end(&pr);
    double dt = v4f_time_s() - t0;
    if (st) {
        fprintf(stderr, "v4flash synth: %s\n", err.msg);
        return 1;
    }
    if (!quiet)
        fprintf(stderr,
                "synth: wrote %s (%s%s, %u layers, %u tensors, %.3f GiB of tensor data, seed %llu) "
                "in %.2f s = %.0f MB/s\n",
                pos[0], preset, mtp ? " MTP block" : "", n_layer, n_t, (double)bytes / (1u << 30), (unsigned long long)seed, dt,
                dt > 0 ? (double)bytes / dt / 1e6 : 0.0);
    return 0;
}
