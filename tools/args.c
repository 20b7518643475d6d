/*
 * args.c - the shared subcommand option parser (see args.h).
 *
 * Owns nothing; values are written to the caller's variables, strings point
 * into argv. Single-threaded (CLI only).
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"

bool v4f_parse_i64(const char *s, int64_t *out) {
    if (!s || !*s) return false;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s) return false;
    int64_t mul = 1;
    if (*end == 'k' || *end == 'K') mul = 1024, end++;
    else if (*end == 'm' || *end == 'M') mul = 1024 * 1024, end++;
    if (*end) return false;
    int64_t r;
    if (__builtin_mul_overflow((int64_t)v, mul, &r)) return false;
    *out = r;
    return true;
}

bool v4f_parse_u64(const char *s, uint64_t *out) {
    if (!s || !*s || *s == '-' || *s == '+') return false;
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end) return false;
    *out = (uint64_t)v;
    return true;
}

bool v4f_parse_f64(const char *s, double *out) {
    if (!s || !*s) return false;
    errno = 0;
    char *end = NULL;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return false;
    *out = v;
    return true;
}

static const char *kind_meta(const v4f_opt *o) {
    if (o->meta) return o->meta;
    switch (o->kind) {
    case V4F_ARG_FLAG: return "";
    case V4F_ARG_STR: return "STR";
    case V4F_ARG_FLOAT:
    case V4F_ARG_DOUBLE: return "X";
    default: return "N";
    }
}

void v4f_args_usage(const v4f_args_spec *spec, FILE *f) {
    fprintf(f, "usage: %s %s\n", spec->cmd, spec->synopsis ? spec->synopsis : "[options]");
    if (spec->about) fprintf(f, "\n%s\n", spec->about);
    fprintf(f, "\noptions:\n");
    for (const v4f_opt *o = spec->opts; o && o->name; o++) {
        char left[64];
        const char *m = kind_meta(o);
        if (o->shrt)
            snprintf(left, sizeof left, "-%c, --%s%s%s", o->shrt, o->name, *m ? " " : "", m);
        else
            snprintf(left, sizeof left, "    --%s%s%s", o->name, *m ? " " : "", m);
        fprintf(f, "  %-26s %s\n", left, o->help ? o->help : "");
    }
    fprintf(f, "  %-26s %s\n", "-h, --help", "show this help");
    if (spec->epilog) fprintf(f, "\n%s\n", spec->epilog);
}

int v4f_args_fail(const v4f_args_spec *spec, const char *fmt, ...) {
    fprintf(stderr, "%s: ", spec->cmd);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n\n", stderr);
    v4f_args_usage(spec, stderr);
    return V4F_ARGS_USAGE;
}

static bool in_range(const v4f_opt *o, double v) {
    return o->min >= o->max || (v >= o->min && v <= o->max);
}

/* Store a value; returns V4F_ARGS_OK or prints the error. */
static int store(const v4f_args_spec *spec, const v4f_opt *o, const char *val) {
    int64_t i;
    uint64_t u;
    double d;
    switch (o->kind) {
    case V4F_ARG_FLAG: *(bool *)o->dst = true; break;
    case V4F_ARG_STR: *(const char **)o->dst = val; break;
    case V4F_ARG_INT:
    case V4F_ARG_INT32:
        if (!v4f_parse_i64(val, &i))
            return v4f_args_fail(spec, "--%s: '%s' is not an integer", o->name, val);
        if (!in_range(o, (double)i) ||
            (o->kind == V4F_ARG_INT32 && (i < -2147483647LL - 1 || i > 2147483647LL)))
            return v4f_args_fail(spec, "--%s: %s is out of range [%.0f, %.0f]", o->name, val,
                                 o->min, o->max);
        if (o->kind == V4F_ARG_INT) *(int64_t *)o->dst = i;
        else *(int *)o->dst = (int)i;
        break;
    case V4F_ARG_U64:
        if (!v4f_parse_u64(val, &u))
            return v4f_args_fail(spec, "--%s: '%s' is not an unsigned integer", o->name, val);
        if (!in_range(o, (double)u))
            return v4f_args_fail(spec, "--%s: %s is out of range [%.0f, %.0f]", o->name, val,
                                 o->min, o->max);
        *(uint64_t *)o->dst = u;
        break;
    case V4F_ARG_FLOAT:
    case V4F_ARG_DOUBLE:
        if (!v4f_parse_f64(val, &d))
            return v4f_args_fail(spec, "--%s: '%s' is not a number", o->name, val);
        if (!in_range(o, d))
            return v4f_args_fail(spec, "--%s: %s is out of range [%g, %g]", o->name, val, o->min,
                                 o->max);
        if (o->kind == V4F_ARG_FLOAT) *(float *)o->dst = (float)d;
        else *(double *)o->dst = d;
        break;
    }
    if (o->seen) *o->seen = true;
    return V4F_ARGS_OK;
}

int v4f_args_parse(const v4f_args_spec *spec, int argc, char **argv, const char **pos,
                   int *n_pos) {
    int np = 0;
    bool opts_done = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (opts_done || a[0] != '-' || a[1] == '\0') {
            if (np >= spec->max_pos)
                return v4f_args_fail(spec, "unexpected argument '%s'", a);
            pos[np++] = a;
            continue;
        }
        if (!strcmp(a, "--")) {
            opts_done = true;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            v4f_args_usage(spec, stdout);
            return V4F_ARGS_HELP;
        }
        const v4f_opt *o = NULL;
        const char *inline_val = NULL;
        if (a[1] == '-') {
            const char *nm = a + 2;
            const char *eq = strchr(nm, '=');
            size_t len = eq ? (size_t)(eq - nm) : strlen(nm);
            for (const v4f_opt *p = spec->opts; p && p->name; p++)
                if (strlen(p->name) == len && !strncmp(p->name, nm, len)) o = p;
            if (eq) inline_val = eq + 1;
        } else if (a[2] == '\0') {
            for (const v4f_opt *p = spec->opts; p && p->name; p++)
                if (p->shrt && p->shrt == a[1]) o = p;
        }
        if (!o) return v4f_args_fail(spec, "unknown option '%s'", a);
        if (o->kind == V4F_ARG_FLAG) {
            if (inline_val) return v4f_args_fail(spec, "option '--%s' takes no value", o->name);
            int rc = store(spec, o, NULL);
            if (rc) return rc;
            continue;
        }
        const char *val = inline_val;
        if (!val) {
            if (i + 1 >= argc) return v4f_args_fail(spec, "option '%s' needs a value", a);
            val = argv[++i];
        }
        int rc = store(spec, o, val);
        if (rc) return rc;
    }
    if (np < spec->min_pos)
        return v4f_args_fail(spec, "missing argument%s", spec->min_pos - np > 1 ? "s" : "");
    if (n_pos) *n_pos = np;
    return V4F_ARGS_OK;
}

char *v4f_cli_read_file(const char *path, size_t *len) {
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    while (b) {
        if (n + 1 >= cap) { /* keep room for the NUL */
            char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
            cap *= 2;
        }
        size_t r = fread(b + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    int saved = errno;
    if (b && ferror(f)) {
        free(b);
        b = NULL;
    }
    if (f != stdin) fclose(f);
    errno = saved;
    if (!b) return NULL;
    b[n] = '\0';
    *len = n;
    return b;
}
