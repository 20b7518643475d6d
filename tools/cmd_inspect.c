/*
 * cmd_inspect.c - `v4flash inspect MODEL.gguf`.
 */
#include <stdio.h>

#include "cli.h"

int cmd_inspect(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "inspect: not yet available\n");
    return 1;
}
