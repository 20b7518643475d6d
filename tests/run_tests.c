/*
 * run_tests.c - runner for the self-registering tests of tests/test.h.
 *
 * usage: v4flash_tests [--list] [--filter SUBSTR] [-v]
 * Prints one line per failing check, a line per test, and finally the plain
 * line "N passed, N failed" (CI reads it). Exit code 0 iff nothing failed.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core.h"
#include "test.h"

#define MAX_TESTS 4096

typedef struct {
    const char *name;
    const char *file;
    test_fn fn;
} test_entry;

static test_entry g_tests[MAX_TESTS];
static int g_n_tests;
static int g_cur_failures;
static int g_verbose;
static char g_tmp[256];

void test_register(const char *name, const char *file, test_fn fn) {
    if (g_n_tests >= MAX_TESTS) {
        fprintf(stderr, "too many tests\n");
        abort();
    }
    g_tests[g_n_tests++] = (test_entry){name, file, fn};
}

void test_fail(const char *file, int line, const char *fmt, ...) {
    g_cur_failures++;
    if (g_cur_failures > 20) return; /* keep logs readable */
    fprintf(stdout, "    %s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
}

int test_verbose(void) { return g_verbose; }

const char *test_fixture_path(const char *rel) {
    /* a few rotating buffers so one expression may use several paths */
    static _Thread_local char bufs[8][4096];
    static _Thread_local unsigned next;
    char *buf = bufs[next++ % 8];
    const char *dir = getenv("V4F_FIXTURE_DIR");
    if (!dir || !*dir) dir = "tests/fixtures";
    snprintf(buf, sizeof bufs[0], "%s/%s", dir, rel);
    return buf;
}

const char *test_tmp_dir(void) { return g_tmp; }

const char *test_bin(void) {
    const char *b = getenv("V4F_BIN");
    return b && *b ? b : NULL;
}

char *test_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        buf = malloc((size_t)n + 1);
        if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        }
    }
    fclose(f);
    if (!buf) return NULL;
    buf[n] = '\0';
    if (len) *len = (size_t)n;
    return buf;
}

/* filter: comma-separated substrings; a test runs if any one matches */
static int matches_filter(const char *name, const char *filter) {
    const char *p = filter;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        char part[128];
        if (n >= sizeof part) n = sizeof part - 1;
        memcpy(part, p, n);
        part[n] = '\0';
        if (n && strstr(name, part)) return 1;
        if (!comma) break;
        p = comma + 1;
    }
    return 0;
}

static int cmp_entry(const void *a, const void *b) {
    const test_entry *x = a, *y = b;
    int c = strcmp(x->file, y->file);
    return c ? c : strcmp(x->name, y->name);
}

int main(int argc, char **argv) {
    const char *filter = NULL;
    int list = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--list")) list = 1;
        else if (!strcmp(argv[i], "-v")) g_verbose = 1;
        else if (!strcmp(argv[i], "--filter") && i + 1 < argc) filter = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--list] [--filter SUBSTR[,SUBSTR...]] [-v]\n", argv[0]);
            return 2;
        }
    }
    qsort(g_tests, (size_t)g_n_tests, sizeof g_tests[0], cmp_entry);
    if (list) {
        for (int i = 0; i < g_n_tests; i++) printf("%s\n", g_tests[i].name);
        return 0;
    }
    /* library log lines are noise in test output unless asked for */
    if (!g_verbose) v4f_log_set_sink(NULL, NULL, V4F_LOG_ERROR);
    snprintf(g_tmp, sizeof g_tmp, "/tmp/v4f-test-%d", (int)getpid());
    mkdir(g_tmp, 0700);

    int passed = 0, failed = 0;
    for (int i = 0; i < g_n_tests; i++) {
        if (filter && !matches_filter(g_tests[i].name, filter)) continue;
        g_cur_failures = 0;
        if (g_verbose) {
            printf("RUN  %s\n", g_tests[i].name);
            fflush(stdout);
        }
        g_tests[i].fn();
        if (g_cur_failures) {
            printf("FAIL %s (%d check%s)\n", g_tests[i].name, g_cur_failures,
                   g_cur_failures == 1 ? "" : "s");
            failed++;
        } else {
            if (g_verbose) printf("ok   %s\n", g_tests[i].name);
            passed++;
        }
        fflush(stdout);
    }
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", g_tmp);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
