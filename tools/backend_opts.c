/*
 * backend_opts.c - resolution of the shared backend options (backend_opts.h).
 */
#include "backend_opts.h"

#include <stdio.h>
#include <string.h>

#include "model/forward_cuda.h"

int v4f_cli_backend_apply(const v4f_cli_backend *b, const v4f_args_spec *spec, v4f_session_opts *so) {
    const char *name = b->name ? b->name : "auto";
    if (b->cpu && b->cuda) return v4f_args_fail(spec, "--cpu and --cuda exclude each other");
    if (b->cpu) name = "cpu";
    if (b->cuda) name = "cuda";
    if (!strcmp(name, "cpu")) {
        so->backend = V4F_BACKEND_CPU;
    } else if (!strcmp(name, "cuda")) {
        so->backend = V4F_BACKEND_CUDA;
    } else if (!strcmp(name, "auto")) {
        so->backend = v4f_gpu_available() ? V4F_BACKEND_CUDA : V4F_BACKEND_CPU;
    } else {
        return v4f_args_fail(spec, "--backend must be cpu, cuda or auto (got '%s')", name);
    }
    so->gpu_device = b->gpu;
    so->gpu_mem_gb = b->gpu_mem_gb;
    if (b->chunk > 0) so->max_chunk = (uint32_t)b->chunk;
    return 0;
}

void v4f_cli_backend_report(const v4f_session *s) {
    const char *r = v4f_session_gpu_report(s);
    if (r) fputs(r, stderr);
}

void v4f_cli_mtp_opts(const char *mtp, v4f_session_opts *so) {
    so->enable_mtp = mtp != NULL;
    so->mtp_draft = mtp != NULL && so->backend == V4F_BACKEND_CUDA;
}

void v4f_cli_mtp_note(const v4f_session *s, const char *mtp, const char *cmd) {
    if (!mtp || v4f_session_drafts(s)) return;
    fprintf(stderr, "%s: note: MTP drafts are used on a GPU only; this session runs on the CPU\n", cmd);
}

void v4f_cli_mtp_report(const v4f_session *s, const char *cmd) {
    if (!v4f_session_drafts(s)) return;
    const v4f_spec_stats st = v4f_session_spec_stats(s);
    fprintf(stderr, "%s: MTP drafts: %llu of %llu accepted (%.1f%%)", cmd, (unsigned long long)st.accepted,
            (unsigned long long)st.drafted, st.drafted ? 100.0 * (double)st.accepted / (double)st.drafted : 0.0);
    if (st.paused) fprintf(stderr, "; %llu tokens decoded with drafting paused (too few kept)", (unsigned long long)st.paused);
    fputc('\n', stderr);
}
