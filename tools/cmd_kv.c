/*
 * cmd_kv.c - `v4flash kv ls|show|rm|verify|gc --kv-dir DIR [--kv-space-mb N]`
 *
 * Manages a disk KV store directory (src/kvstore):
 *   ls           one line per checkpoint: name, tokens, size, model
 *                fingerprint (high 64 bits), age, hits, save reason; bad
 *                files are listed with the reason
 *   show FILE    every header field of one checkpoint (header verified)
 *   rm FILE      remove one checkpoint (under the store lock)
 *   verify [FILE] check header and payload checksums of every file (or one);
 *                exit 1 if any is bad
 *   gc           remove bad and abandoned temp files, then evict to the
 *                --kv-space-mb budget
 *   bench        snapshot save/load MB/s of a --mb MiB synthetic payload next
 *                to raw sequential write+fsync / read of the same size in DIR
 * FILE is a name inside --kv-dir, or a path (its directory is then the store).
 * Exit codes: 0 ok, 1 failure / bad files found, 2 usage.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "cli.h"
#include "kvstore/kvstore.h"

static void fmt_age(char *buf, size_t n, int64_t age) {
    if (age < 0) age = 0;
    if (age < 120) snprintf(buf, n, "%" PRId64 "s", age);
    else if (age < 7200) snprintf(buf, n, "%" PRId64 "m", age / 60);
    else if (age < 172800) snprintf(buf, n, "%" PRId64 "h", age / 3600);
    else snprintf(buf, n, "%" PRId64 "d", age / 86400);
}

static int kv_ls(v4f_kvstore *s, uint64_t budget) {
    v4f_kvstore_entry *e = NULL;
    size_t n = 0;
    v4f_err err = {0};
    if (v4f_kvstore_scan(s, &e, &n, &err)) {
        fprintf(stderr, "v4flash kv: %s\n", err.msg);
        return 1;
    }
    int64_t now = (int64_t)time(NULL);
    uint64_t total = 0;
    size_t bad = 0;
    printf("%-40s %9s %10s %-16s %6s %5s %s\n", "name", "tokens", "MiB", "model", "age", "hits", "reason");
    for (size_t i = 0; i < n; i++) {
        total += e[i].file_bytes;
        if (e[i].bad) {
            printf("%-40s BAD: %s\n", e[i].name, e[i].msg);
            bad++;
            continue;
        }
        const v4f_kvfile_header *h = &e[i].hdr;
        char age[32];
        fmt_age(age, sizeof age, now - (int64_t)h->last_used_unix);
        printf("%-40s %9" PRIu32 " %10.2f %016" PRIx64 " %6s %5" PRIu32 " %s%s\n", e[i].name, h->n_tokens,
               (double)e[i].file_bytes / 1048576.0, h->model_fp.hi, age, h->hits, v4f_kv_reason_name(h->reason),
               e[i].is_session ? " (pinned)" : "");
    }
    printf("%zu file%s, %.2f MiB", n, n == 1 ? "" : "s", (double)total / 1048576.0);
    if (budget) printf(" of a %.0f MiB budget", (double)budget / 1048576.0);
    if (bad) printf(", %zu bad", bad);
    printf("\n");
    free(e);
    return 0;
}

static int kv_show(const char *dir, const char *name) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "v4flash kv: cannot open %s\n", path);
        return 1;
    }
    v4f_kvfile_header h;
    int32_t *ids = NULL;
    v4f_err err = {0};
    v4f_status st = v4f_kvfile_read_header(fileno(f), path, &h, &ids, &err);
    fclose(f);
    if (st) {
        fprintf(stderr, "v4flash kv: %s\n", err.msg);
        return 1;
    }
    char age[32];
    fmt_age(age, sizeof age, (int64_t)time(NULL) - (int64_t)h.last_used_unix);
    printf("file            %s\n", path);
    printf("format version  %" PRIu32 "\n", h.version);
    printf("layout version  %" PRIu32 "\n", h.layout_version);
    printf("model fp        %016" PRIx64 "%016" PRIx64 "\n", h.model_fp.hi, h.model_fp.lo);
    printf("family fp       %016" PRIx64 "%016" PRIx64 "\n", h.family_fp.hi, h.family_fp.lo);
    printf("tokens          %" PRIu32 "\n", h.n_tokens);
    printf("ctx             %" PRIu32 "\n", h.n_ctx);
    printf("reason          %s\n", v4f_kv_reason_name(h.reason));
    printf("created         %" PRIu64 " (unix)\n", h.created_unix);
    printf("last used       %" PRIu64 " (%s ago)\n", h.last_used_unix, age);
    printf("hits            %" PRIu32 "%s\n", h.hits, h.stats_ok ? "" : " (stats record damaged: reset)");
    printf("token hash      %016" PRIx64 "\n", h.token_hash);
    if (h.flags & V4F_KVFILE_FLAG_TEXT)
        printf("text            %" PRIu64 " bytes, hash %016" PRIx64 "\n", h.text_bytes, h.text_hash);
    printf("payload         %" PRIu64 " bytes at offset %" PRIu64 ", hash %016" PRIx64 "\n", h.payload_bytes,
           h.payload_offset, h.payload_hash);
    printf("header hash     %016" PRIx64 " (verified)\n", h.header_hash);
    printf("first tokens   ");
    for (uint32_t i = 0; i < h.n_tokens && i < 16; i++) printf(" %" PRId32, ids[i]);
    printf("%s\n", h.n_tokens > 16 ? " ..." : "");
    free(ids);
    return 0;
}

static int kv_verify(v4f_kvstore *s, const char *dir, const char *only) {
    v4f_kvstore_entry *e = NULL;
    size_t n = 0;
    v4f_err err = {0};
    if (v4f_kvstore_scan(s, &e, &n, &err)) {
        fprintf(stderr, "v4flash kv: %s\n", err.msg);
        return 1;
    }
    size_t bad = 0, checked = 0;
    double t0 = v4f_time_s();
    uint64_t bytes = 0;
    for (size_t i = 0; i < n; i++) {
        if (only && strcmp(only, e[i].name)) continue;
        checked++;
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", dir, e[i].name);
        v4f_err verr = {0};
        if (v4f_kvfile_verify_path(path, NULL, &verr)) {
            printf("BAD  %s: %s\n", e[i].name, verr.msg);
            bad++;
        } else {
            printf("ok   %s\n", e[i].name);
            bytes += e[i].file_bytes;
        }
    }
    double dt = v4f_time_s() - t0;
    if (only && !checked) {
        fprintf(stderr, "v4flash kv: %s: no such checkpoint in %s\n", only, dir);
        free(e);
        return 1;
    }
    printf("%zu checked, %zu bad (%.1f MiB verified in %.2f s)\n", checked, bad, (double)bytes / 1048576.0, dt);
    free(e);
    return bad ? 1 : 0;
}

/* ---- bench: snapshot write/read MB/s vs raw sequential I/O ---------------------- */

typedef struct bench_prod {
    const uint8_t *buf;
    size_t piece;
    uint64_t total;
} bench_prod;

static v4f_status bench_produce(void *ud, v4f_kv_sink *sink, v4f_err *err) {
    bench_prod *p = ud;
    for (uint64_t done = 0; done < p->total;) {
        size_t k = p->total - done < p->piece ? (size_t)(p->total - done) : p->piece;
        v4f_status st = v4f_kv_sink_write(sink, p->buf, k);
        if (st) return st;
        done += k;
    }
    (void)err;
    return V4F_OK;
}

static v4f_status bench_consume(void *ud, v4f_kv_source *src, uint64_t n, v4f_err *err) {
    bench_prod *p = ud;
    for (uint64_t done = 0; done < n;) {
        size_t k = n - done < p->piece ? (size_t)(n - done) : p->piece;
        v4f_status st = v4f_kv_source_read(src, (void *)p->buf, k);
        if (st) return st;
        done += k;
    }
    (void)err;
    return V4F_OK;
}

/* Raw sequential write: pwrite() of `piece` bytes at increasing offsets, then
 * fsync (the disk's write ceiling; on the dev VM plain write() measured 2-4x
 * slower than pwrite() for the same pattern, see PERF_NOTES). MB/s or -1. */
static double raw_write(const char *path, const uint8_t *buf, size_t piece, uint64_t total) {
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return -1;
    double t0 = v4f_time_s();
    for (uint64_t done = 0; done < total; done += piece)
        if (pwrite(fd, buf, piece, (off_t)done) != (ssize_t)piece) {
            close(fd);
            return -1;
        }
    int ok = fsync(fd) == 0;
    double mbs = (double)total / 1e6 / (v4f_time_s() - t0);
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
    return ok ? mbs : -1;
}

/* Raw sequential read after dropping the file from the page cache. */
static double raw_read(const char *path, uint8_t *buf, size_t piece) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    off_t n = lseek(fd, 0, SEEK_END);
    double t0 = v4f_time_s();
    for (off_t off = 0; off < n; off += (off_t)piece)
        if (pread(fd, buf, piece, off) < 0) {
            close(fd);
            return -1;
        }
    double mbs = (double)n / 1e6 / (v4f_time_s() - t0);
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
    return mbs;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Each repetition writes a raw file and a snapshot of the same size, then
 * reads both back (cache dropped); the order alternates between repetitions
 * so a noisy/shared disk or host cache favours neither. Medians at the end. */
static int kv_bench(v4f_kvstore *s, const char *dir, int64_t mb, int reps) {
    const size_t piece = 4u << 20;
    uint64_t total = (uint64_t)mb << 20;
    uint8_t *buf = v4f_aligned_alloc(piece);
    if (!buf || reps > 64) return 1;
    for (size_t i = 0; i < piece; i++) buf[i] = (uint8_t)(i * 2654435761u >> 13);
    double t0 = v4f_time_s();
    volatile uint64_t sink = 0;
    for (int i = 0; i < 256; i++) sink += v4f_kvstore_xxh64_oneshot(buf, piece, (uint64_t)i);
    printf("xxh64 in memory: %.0f MB/s (4 MiB blocks, cache-warm; digest sum %016llx)\n",
           256.0 * (double)piece / 1e6 / (v4f_time_s() - t0), (unsigned long long)sink);
    char raw[4200], snap[4200];
    snprintf(raw, sizeof raw, "%s/.bench-raw", dir);
    int32_t tok[64];
    for (int i = 0; i < 64; i++) tok[i] = i;
    v4f_kv_ident id = {{0xbe, 0x9c}, {0xbe, 0x9c}, 1, 0};
    double rw[64], sw[64], rr[64], sr[64];
    int rc = 0;
    for (int r = 0; r < reps && !rc; r++) {
        bench_prod p = {buf, piece, total};
        v4f_kvstore_save_opts so = {.reason = V4F_KV_REASON_MANUAL, .session_name = "bench"};
        char name[V4F_KVSTORE_NAME_MAX];
        v4f_err err = {0};
        for (int k = 0; k < 2 && !rc; k++) {
            if ((k + r) % 2 == 0) {
                rw[r] = raw_write(raw, buf, piece, total);
                if (rw[r] < 0) rc = 1;
            } else {
                t0 = v4f_time_s();
                if (v4f_kvstore_save(s, tok, 64, &id, &so, bench_produce, &p, name, &err)) rc = 1;
                sw[r] = (double)total / 1e6 / (v4f_time_s() - t0);
            }
        }
        snprintf(snap, sizeof snap, "%s/%s", dir, name);
        for (int k = 0; k < 2 && !rc; k++) {
            if ((k + r) % 2 == 0) {
                rr[r] = raw_read(raw, buf, piece);
                if (rr[r] < 0) rc = 1;
            } else {
                t0 = v4f_time_s();
                if (v4f_kvstore_load(s, name, &id, false, bench_consume, &p, NULL, NULL, &err)) rc = 1;
                sr[r] = (double)total / 1e6 / (v4f_time_s() - t0);
            }
        }
        if (rc) {
            fprintf(stderr, "v4flash kv: bench failed: %s\n", err.msg[0] ? err.msg : "raw I/O error");
            break;
        }
        (void)v4f_kvstore_remove(s, name, NULL);
        unlink(raw);
        printf("rep %d, %" PRId64 " MiB: write+fsync raw %.0f MB/s, snapshot save %.0f MB/s | read raw %.0f MB/s, "
               "snapshot load %.0f MB/s\n",
               r + 1, mb, rw[r], sw[r], rr[r], sr[r]);
        fflush(stdout);
    }
    unlink(raw);
    if (!rc) {
        double mrw = median(rw, reps), msw = median(sw, reps), mrr = median(rr, reps), msr = median(sr, reps);
        printf("median of %d: save %.0f MB/s = %.2fx raw write+fsync (%.0f); load %.0f MB/s = %.2fx raw read (%.0f)\n",
               reps, msw, msw / mrw, mrw, msr, msr / mrr, mrr);
    }
    v4f_aligned_free(buf);
    return rc;
}

int cmd_kv(int argc, char **argv) {
    const char *dir = NULL;
    int64_t space_mb = 0, bench_mb = 1024, reps = 4;
    const v4f_opt opts[] = {
        {"kv-dir", 0, V4F_ARG_STR, &dir, 0, 0, "DIR", "the KV store directory (required unless FILE is a path)", NULL},
        {"kv-space-mb", 0, V4F_ARG_INT, &space_mb, 0, 1e9, "N", "space budget in MiB (ls: shown; gc: evict to it)",
         NULL},
        {"mb", 0, V4F_ARG_INT, &bench_mb, 1, 1e6, "N", "bench: payload size in MiB (default 1024)", NULL},
        {"reps", 0, V4F_ARG_INT, &reps, 1, 64, "N", "bench: repetitions (default 4)", NULL},
        {NULL, 0, 0, NULL, 0, 0, NULL, NULL, NULL},
    };
    const v4f_args_spec spec = {
        "v4flash kv",
        "ls|show FILE|rm FILE|verify [FILE]|gc|bench --kv-dir DIR [--kv-space-mb N]",
        "Manage a disk KV cache directory. ls lists checkpoints (name, tokens, MiB, model fingerprint, age, hits, "
        "reason); show prints one header; rm removes one; verify checks every checksum (exit 1 if any file is bad); "
        "gc removes bad/abandoned files and evicts to the budget; bench compares snapshot save/load MB/s with raw "
        "sequential write+fsync/read of the same size in DIR.",
        opts,
        1,
        2,
        NULL,
    };
    const char *pos[2] = {NULL, NULL};
    int n_pos = 0;
    int rc = v4f_args_parse(&spec, argc, argv, pos, &n_pos);
    if (rc == V4F_ARGS_HELP) return 0;
    if (rc) return rc;
    const char *sub = pos[0];
    const char *file = n_pos > 1 ? pos[1] : NULL;
    bool need_file = !strcmp(sub, "show") || !strcmp(sub, "rm");
    bool takes_file = need_file || !strcmp(sub, "verify");
    if (strcmp(sub, "ls") && strcmp(sub, "gc") && strcmp(sub, "bench") && !takes_file)
        return v4f_args_fail(&spec, "unknown subcommand '%s'", sub);
    if (need_file && !file) return v4f_args_fail(&spec, "%s needs a FILE", sub);
    if (file && !takes_file) return v4f_args_fail(&spec, "%s takes no FILE", sub);
    char dirbuf[4096];
    if (file && strchr(file, '/')) { /* a path: its directory is the store */
        const char *slash = strrchr(file, '/');
        snprintf(dirbuf, sizeof dirbuf, "%.*s", (int)(slash - file), file);
        if (!dirbuf[0]) snprintf(dirbuf, sizeof dirbuf, "/");
        if (dir && strcmp(dir, dirbuf))
            return v4f_args_fail(&spec, "FILE %s is not inside --kv-dir %s", file, dir);
        dir = dirbuf;
        file = slash + 1;
    }
    if (!dir) return v4f_args_fail(&spec, "--kv-dir DIR is required");
    uint64_t budget = (uint64_t)space_mb << 20;

    v4f_kvstore_opts o;
    v4f_kvstore_opts_default(&o);
    o.create = false;
    o.budget_bytes = budget;
    v4f_kvstore *s = NULL;
    v4f_err err = {0};
    if (v4f_kvstore_open_opts(dir, &o, &s, &err)) {
        fprintf(stderr, "v4flash kv: %s\n", err.msg);
        return 1;
    }
    if (!strcmp(sub, "ls")) rc = kv_ls(s, budget);
    else if (!strcmp(sub, "show")) rc = kv_show(dir, file);
    else if (!strcmp(sub, "verify")) rc = kv_verify(s, dir, file);
    else if (!strcmp(sub, "bench")) rc = kv_bench(s, dir, bench_mb, (int)reps);
    else if (!strcmp(sub, "rm")) {
        rc = v4f_kvstore_remove(s, file, &err) ? 1 : 0;
        if (rc) fprintf(stderr, "v4flash kv: %s\n", err.msg);
        else printf("removed %s\n", file);
    } else { /* gc */
        size_t evicted = 0;
        rc = v4f_kvstore_gc(s, budget, NULL, &evicted, &err) ? 1 : 0;
        if (rc) fprintf(stderr, "v4flash kv: %s\n", err.msg);
        else printf("gc: removed %zu file%s\n", evicted, evicted == 1 ? "" : "s");
    }
    v4f_kvstore_close(s);
    return rc;
}
