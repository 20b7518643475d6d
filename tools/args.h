/*
 * args.h - the tiny option parser shared by the v4flash subcommands.
 *
 * A command declares a table of v4f_opt (terminated by an entry with
 * name == NULL) pointing at its own variables, then calls v4f_args_parse.
 * Supported syntax: --name VALUE, --name=VALUE, -x VALUE (short alias),
 * bare flags, "--" to end options; -h/--help prints the usage. Everything
 * not starting with '-' (and "-" itself) is a positional argument.
 * Typed values are parsed strictly (the whole string must be consumed) and
 * range-checked against [min, max] when min < max.
 *
 * Exit-code contract of the CLI: usage errors (unknown flag, missing or bad
 * value, too many/few positionals) print the message and the usage to
 * stderr and make the command return 2.
 *
 * Ownership: string values point into argv. No allocation. Not thread-safe
 * (CLI only).
 */
#ifndef V4F_TOOLS_ARGS_H
#define V4F_TOOLS_ARGS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef enum v4f_arg_kind {
    V4F_ARG_FLAG,  /* bool *: set to true (no value) */
    V4F_ARG_STR,   /* const char **: the value as given */
    V4F_ARG_INT,   /* int64_t *: decimal, optional k/K (x1024) or m/M (x1048576) suffix */
    V4F_ARG_INT32, /* int *: as INT, must fit int */
    V4F_ARG_U64,   /* uint64_t *: decimal or 0x hex (seeds) */
    V4F_ARG_FLOAT, /* float *: finite decimal */
    V4F_ARG_DOUBLE /* double *: finite decimal */
} v4f_arg_kind;

typedef struct v4f_opt {
    const char *name;  /* long form without dashes, e.g. "ctx"; NULL ends the table */
    char shrt;         /* short alias letter ('c' for -c) or 0 */
    v4f_arg_kind kind;
    void *dst;
    double min, max;   /* accepted range (inclusive) for numbers; ignored if min >= max */
    const char *meta;  /* value placeholder in the usage ("N", "FILE") */
    const char *help;  /* one line; may mention the default */
    bool *seen;        /* optional: set when the option appears */
} v4f_opt;

typedef struct v4f_args_spec {
    const char *cmd;        /* "v4flash run" */
    const char *synopsis;   /* "[options] -m MODEL -p PROMPT" */
    const char *about;      /* one paragraph, may be NULL */
    const v4f_opt *opts;
    int min_pos, max_pos;   /* positional argument count range */
    const char *epilog;     /* printed after the options, may be NULL */
} v4f_args_spec;

#define V4F_ARGS_OK 0
#define V4F_ARGS_HELP 1  /* --help was printed to stdout: return 0 */
#define V4F_ARGS_USAGE 2 /* error + usage printed to stderr: return 2 */

/* Parse argv[1..argc) (argv[0] is the subcommand name). Positionals are
 * stored in pos[0..*n_pos) (pos needs max_pos entries; may be NULL when
 * max_pos == 0). Returns V4F_ARGS_OK, V4F_ARGS_HELP or V4F_ARGS_USAGE. */
int v4f_args_parse(const v4f_args_spec *spec, int argc, char **argv, const char **pos,
                   int *n_pos);

void v4f_args_usage(const v4f_args_spec *spec, FILE *f);

/* Print "CMD: message" + usage to stderr; returns 2 (for `return v4f_args_fail(...)`). */
int v4f_args_fail(const v4f_args_spec *spec, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Read a whole file ("-" = stdin) into a malloc'd, NUL-terminated buffer
 * (caller frees); *len gets the byte count (without the NUL). NULL on any
 * open/read/allocation failure, with errno from the failing call. */
char *v4f_cli_read_file(const char *path, size_t *len);

/* Strict typed parsers (also used for "PRESET:LAYERS"-style sub-values). */
bool v4f_parse_i64(const char *s, int64_t *out);
bool v4f_parse_u64(const char *s, uint64_t *out);
bool v4f_parse_f64(const char *s, double *out);

#endif /* V4F_TOOLS_ARGS_H */
