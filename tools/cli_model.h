/*
 * cli_model.h - open the model of a CLI command: a GGUF file (-m) or a
 * synthetic preset built in memory (--synthetic PRESET[:LAYERS]); both go
 * through the same layout validation (v4f_model_open_gguf).
 *
 * Ownership: v4f_cli_model owns the model and, for synthetic models, the
 * in-memory image; release with v4f_cli_model_close. CLI only.
 */
#ifndef V4F_TOOLS_CLI_MODEL_H
#define V4F_TOOLS_CLI_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"

typedef struct v4f_cli_model {
    v4f_model *m;
    void *img; /* synthetic image (NULL for files) */
    size_t img_size;
    void *mtp_img; /* synthetic MTP image (--mtp synthetic) */
    size_t mtp_img_size;
    char desc[256];
    double load_s;
} v4f_cli_model;

/* Exactly one of path / synthetic is used (synthetic wins if both are set).
 * mtp (optional): the MTP GGUF, or "synthetic" (with --synthetic: the
 * preset's MTP block built in memory). Prints a clear message to stderr and
 * returns the exit code on failure: 1 (missing/invalid model file), 2 (bad
 * --synthetic spec or option mix). 0 on success. */
int v4f_cli_model_open(const char *cmd, const char *path, const char *synthetic, const char *mtp, uint64_t seed,
                       int n_threads, v4f_cli_model *out);
void v4f_cli_model_close(v4f_cli_model *cm);

#endif /* V4F_TOOLS_CLI_MODEL_H */
