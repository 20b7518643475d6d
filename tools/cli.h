/*
 * cli.h - subcommand entry points of the v4flash front end (tools/cmd_*.c).
 * Each returns the process exit code: 0 ok, 1 runtime failure (bad model
 * file, I/O), 2 usage error (unknown flag, bad value).
 */
#ifndef V4F_CLI_H
#define V4F_CLI_H

#include "v4flash.h"

int cmd_inspect(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_render(int argc, char **argv);
int cmd_kv(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_quantize(int argc, char **argv);

#endif
