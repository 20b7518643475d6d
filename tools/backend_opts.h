/*
 * backend_opts.h - the backend options shared by the commands that run the
 * model (logits, run, chat, bench): --backend cpu|cuda|auto, --cpu, --cuda,
 * --gpu N, --gpu-mem-gb G, --chunk N.
 *
 * auto (the default) picks CUDA when the binary was built with CUDA and a
 * device is visible, else the CPU.
 * Ownership: strings point into argv. Not thread-safe (CLI only).
 */
#ifndef V4F_TOOLS_BACKEND_OPTS_H
#define V4F_TOOLS_BACKEND_OPTS_H

#include <stdbool.h>

#include "args.h"
#include "model/forward.h"

typedef struct v4f_cli_backend {
    const char *name; /* "auto", "cpu", "cuda" */
    bool cpu, cuda;   /* shorthands */
    int gpu;          /* device index */
    double gpu_mem_gb;
    int chunk; /* prefill tokens per layer pass (0: automatic) */
} v4f_cli_backend;

#define V4F_CLI_BACKEND_DEFAULT {"auto", false, false, 0, 0.0, 0}

/* The sampler's options of run / chat / serve (four v4f_opt initializers;
 * what: "" or "default " for serve, whose requests may override them). */
#define V4F_CLI_SAMPLING_OPTS(what, temp, top_k, top_p, min_p)                                                   \
    {"temp", 0, V4F_ARG_FLOAT, &(temp), 0, 100, "T", what "temperature (1; 0 = greedy)", NULL},                  \
    {"top-k", 0, V4F_ARG_INT32, &(top_k), 0, 1 << 30, "K", what "top-k (0 = off)", NULL},                         \
    {"top-p", 0, V4F_ARG_FLOAT, &(top_p), 1e-6, 1, "P", what "nucleus top-p (1 = off)", NULL},                    \
    {"min-p", 0, V4F_ARG_FLOAT, &(min_p), 0, 1, "P", what "min-p relative to the top token (0.05)", NULL}

/* Table entries (six v4f_opt initializers) for a command's option table. */
#define V4F_CLI_BACKEND_OPTS(b)                                                                                  \
    {"backend", 0, V4F_ARG_STR, &(b).name, 0, 0, "NAME",                                                        \
     "cpu, cuda or auto (default: cuda when built with CUDA and a GPU is visible, else cpu)", NULL},            \
    {"cpu", 0, V4F_ARG_FLAG, &(b).cpu, 0, 0, NULL, "same as --backend cpu", NULL},                              \
    {"cuda", 0, V4F_ARG_FLAG, &(b).cuda, 0, 0, NULL, "same as --backend cuda", NULL},                           \
    {"gpu", 0, V4F_ARG_INT32, &(b).gpu, 0, 255, "N", "CUDA device index (default 0)", NULL},                     \
    {"gpu-mem-gb", 0, V4F_ARG_DOUBLE, &(b).gpu_mem_gb, 0, 1e6, "G",                                              \
     "GPU memory budget in GiB; routed experts beyond it stay in host memory (default: free memory)", NULL},    \
    {"chunk", 0, V4F_ARG_INT32, &(b).chunk, 1, 65536, "N",                                                      \
     "at most N prefill tokens per layer pass (default: up to 2048 on the CPU; on a GPU up to 8192, halved "    \
     "down to 512 while the routed experts do not all fit; a fixed N is kept there, leaving more experts in "   \
     "host memory)", NULL}

/* Resolve the choice into so (backend, gpu_device, gpu_mem_gb, max_chunk). Returns 0,
 * or 2 after printing a usage error through spec. */
int v4f_cli_backend_apply(const v4f_cli_backend *b, const v4f_args_spec *spec, v4f_session_opts *so);

/* After v4f_session_new: print the GPU placement report to stderr (CUDA
 * sessions only). */
void v4f_cli_backend_report(const v4f_session *s);

/* --mtp FILE of run / chat / serve / bench: the session keeps the MTP block
 * (enable_mtp) and drafts with it on a GPU (mtp_draft; greedy and sampled
 * decoding). Call after v4f_cli_backend_apply. */
#define V4F_CLI_MTP_OPT(p)                                                                                       \
    {"mtp", 0, V4F_ARG_STR, &(p), 0, 0, "FILE",                                                                 \
     "the MTP GGUF: speculative decoding with its drafts (GPU; greedy and sampled); with --synthetic, 'synthetic' " \
     "builds a random MTP block", NULL}
void v4f_cli_mtp_opts(const char *mtp, v4f_session_opts *so);
/* After v4f_session_new: a note when --mtp was given but will not draft. */
void v4f_cli_mtp_note(const v4f_session *s, const char *mtp, const char *cmd);
/* The draft acceptance of a drafting session, to stderr. */
void v4f_cli_mtp_report(const v4f_session *s, const char *cmd);

#endif
