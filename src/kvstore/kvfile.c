/*
 * kvfile.c - the KV checkpoint file format: encode/decode of the fixed
 * header, streaming payload write with hashing and bounded dirty pages,
 * streaming payload read with hash verification, stats-record updates.
 * Byte layout: docs/FORMATS.md ("KV checkpoint file").
 *
 *   [0, 192)            fixed header (152 hashed bytes, header_hash, stats)
 *   [192, 192 + 4n)     token ids, u32 LE
 *   [.., payload_off)   zero padding (payload_off = align_up(192 + 4n, 4096))
 *   [payload_off, end)  payload (opaque engine bytes), end = file size
 *
 * Invariants: every field read from a file is range-checked before use; all
 * offset arithmetic is overflow-checked; the parser never trusts a size it
 * has not compared with the real file size; nothing aborts on file content.
 * Ownership: the sink/source and their buffers live on the heap of one
 * write/read call and are freed before it returns; fds belong to the caller.
 * Threading: no shared state; one call per fd at a time. Inside one save or
 * load, pieces >= 1 MiB are moved by a helper thread (io_worker, started
 * lazily, joined before the save/load returns) so hashing overlaps the
 * I/O; no job is pending when v4f_kv_sink_write / v4f_kv_source_read
 * returns, so the engine's buffer is only used during that call.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kvstore/kvstore.h"

#define IO_BUF_BYTES (4u << 20)      /* sink/source staging buffer */
#define DIRECT_MIN_BYTES (1u << 20)  /* larger pieces bypass the buffer */
#ifndef V4F_KVFILE_WB_WINDOW          /* -DV4F_KVFILE_WB_WINDOW=0 disables (A/B benchmarks) */
#define V4F_KVFILE_WB_WINDOW (32u << 20) /* writeback window (sync_file_range) */
#endif
#define WB_WINDOW_BYTES V4F_KVFILE_WB_WINDOW
#define HASHED_FIXED_BYTES 152u      /* fixed bytes covered by header_hash */
#define OFF_HEADER_HASH 152u

/* ---- little-endian field access -------------------------------------------- */

static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static uint64_t get64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static const char *nm(const char *path) { return path ? path : "(kv file)"; }

const char *v4f_kv_reason_name(uint32_t reason) {
    static const char *const names[V4F_KV_REASON_COUNT_] = {
        "unknown", "cold", "continued", "evict", "shutdown", "session", "manual"};
    return reason < V4F_KV_REASON_COUNT_ ? names[reason] : "?";
}

uint64_t v4f_kvfile_payload_offset(uint32_t n_tokens) {
    uint64_t end = V4F_KVFILE_FIXED_BYTES + 4ull * n_tokens;
    return (end + V4F_KVFILE_ALIGN - 1) / V4F_KVFILE_ALIGN * V4F_KVFILE_ALIGN;
}

/* ---- plain I/O helpers ---------------------------------------------------------- */

/* Read up to n bytes at off; returns bytes read (< n only at EOF) or -1. */
static ssize_t pread_full(int fd, void *buf, size_t n, uint64_t off) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (uint8_t *)buf + got, n - got, (off_t)(off + got));
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

static v4f_status pwrite_all(int fd, const char *path, v4f_kv_pwrite_fn fn, const void *buf,
                             size_t n, uint64_t off, v4f_err *err) {
    size_t done = 0;
    if (!fn) fn = pwrite;
    while (done < n) {
        size_t piece = n - done;
        if (piece > (1u << 30)) piece = 1u << 30;
        ssize_t w = fn(fd, (const uint8_t *)buf + done, piece, (off_t)(off + done));
        if (w < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            return v4f_err_set(err, V4F_STATUS_IO, "kv file %s: write at offset %" PRIu64 " failed: %s%s",
                               nm(path), off + done, strerror(e),
                               e == ENOSPC ? " (disk full)" : "");
        }
        if (w == 0)
            return v4f_err_set(err, V4F_STATUS_IO, "kv file %s: write at offset %" PRIu64 " wrote nothing",
                               nm(path), off + done);
        done += (size_t)w;
    }
    return V4F_OK;
}

/* ---- the I/O worker: overlaps hashing with disk I/O ------------------------------- *
 * One helper thread per save/load, started lazily at the first large piece.
 * It runs one job at a time (depth 1): the main thread submits the write of
 * chunk k and hashes chunk k meanwhile (save), or submits the read of chunk
 * k+1 and hashes chunk k meanwhile (load), so a piece costs max(io, hash)
 * instead of io + hash. Job fields are handed over under mu; the data
 * buffers are only read by both sides (save) or touched in disjoint chunks
 * (load). If the thread cannot be created, the I/O runs inline. */

#define IO_CHUNK_BYTES (8u << 20)

typedef struct io_worker {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool running, has_job, quit;
    /* the job */
    bool is_write;
    int fd;
    uint8_t *ptr;
    size_t n;
    uint64_t off;
    v4f_kv_pwrite_fn pwrite_fn;
    /* the result */
    size_t done;
    int err_no; /* 0, or errno of the failed call (-1: wrote nothing) */
} io_worker;

/* Do the job: returns bytes transferred; *err_no set on failure. */
static size_t io_run(bool is_write, int fd, uint8_t *ptr, size_t n, uint64_t off, v4f_kv_pwrite_fn fn,
                     int *err_no) {
    *err_no = 0;
    if (!is_write) {
        ssize_t r = pread_full(fd, ptr, n, off);
        if (r < 0) {
            *err_no = errno;
            return 0;
        }
        return (size_t)r;
    }
    if (!fn) fn = pwrite;
    size_t done = 0;
    while (done < n) {
        size_t piece = n - done < (1u << 30) ? n - done : (1u << 30);
        ssize_t w = fn(fd, ptr + done, piece, (off_t)(off + done));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            *err_no = w < 0 ? errno : -1;
            break;
        }
        done += (size_t)w;
    }
    return done;
}

static void *io_worker_main(void *arg) {
    io_worker *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->has_job && !w->quit) pthread_cond_wait(&w->cv, &w->mu);
        if (!w->has_job) break;
        bool is_write = w->is_write;
        int fd = w->fd;
        uint8_t *ptr = w->ptr;
        size_t n = w->n;
        uint64_t off = w->off;
        v4f_kv_pwrite_fn fn = w->pwrite_fn;
        pthread_mutex_unlock(&w->mu);
        int e = 0;
        size_t done = io_run(is_write, fd, ptr, n, off, fn, &e);
        pthread_mutex_lock(&w->mu);
        w->done = done;
        w->err_no = e;
        w->has_job = false;
        pthread_cond_broadcast(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static void io_worker_start(io_worker *w) {
#ifdef V4F_KVFILE_NO_IO_THREAD /* A/B benchmarks: all I/O inline */
    return;
#endif
    if (w->running) return;
    memset(w, 0, sizeof *w);
    if (pthread_mutex_init(&w->mu, NULL)) return;
    if (pthread_cond_init(&w->cv, NULL)) {
        pthread_mutex_destroy(&w->mu);
        return;
    }
    if (pthread_create(&w->th, NULL, io_worker_main, w)) {
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        return;
    }
    w->running = true;
}

static void io_worker_stop(io_worker *w) {
    if (!w->running) return;
    pthread_mutex_lock(&w->mu);
    w->quit = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->th, NULL);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    w->running = false;
}

/* Start a job (inline when no thread: it is then complete on return). */
static void io_submit(io_worker *w, bool is_write, int fd, uint8_t *ptr, size_t n, uint64_t off,
                      v4f_kv_pwrite_fn fn) {
    if (!w->running) {
        w->done = io_run(is_write, fd, ptr, n, off, fn, &w->err_no);
        return;
    }
    pthread_mutex_lock(&w->mu);
    w->is_write = is_write, w->fd = fd, w->ptr = ptr, w->n = n, w->off = off, w->pwrite_fn = fn;
    w->has_job = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Wait for the job; returns bytes transferred, *err_no as io_run. */
static size_t io_wait(io_worker *w, int *err_no) {
    if (w->running) {
        pthread_mutex_lock(&w->mu);
        while (w->has_job) pthread_cond_wait(&w->cv, &w->mu);
        pthread_mutex_unlock(&w->mu);
    }
    *err_no = w->err_no;
    return w->done;
}

/* ---- header encode / decode ------------------------------------------------------ */

static void encode_stats(uint8_t rec[32], uint64_t header_hash, uint32_t hits, uint64_t last_used) {
    memset(rec, 0, 32);
    put32(rec + 0, hits);
    put64(rec + 8, last_used);
    put64(rec + 24, v4f_kvstore_xxh64_oneshot(rec, 24, header_hash));
}

/* Fixed bytes [0, 152) from h. */
static void encode_fixed(uint8_t b[V4F_KVFILE_FIXED_BYTES], const v4f_kvfile_header *h) {
    memset(b, 0, V4F_KVFILE_FIXED_BYTES);
    memcpy(b, V4F_KVFILE_MAGIC, 8);
    put32(b + 8, h->version);
    put32(b + 12, V4F_KVFILE_FIXED_BYTES);
    put32(b + 16, h->flags);
    put32(b + 20, h->layout_version);
    put64(b + 24, h->model_fp.lo);
    put64(b + 32, h->model_fp.hi);
    put64(b + 40, h->family_fp.lo);
    put64(b + 48, h->family_fp.hi);
    put32(b + 56, h->n_tokens);
    put32(b + 60, h->n_ctx);
    put32(b + 64, h->reason);
    /* 68..72 reserved */
    put64(b + 72, h->created_unix);
    put64(b + 80, h->token_hash);
    put64(b + 88, h->text_hash);
    put64(b + 96, h->text_bytes);
    put64(b + 104, h->payload_offset);
    put64(b + 112, h->payload_bytes);
    put64(b + 120, h->payload_hash);
    /* 128..152 reserved */
}

static bool all_zero(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i]) return false;
    return true;
}

v4f_status v4f_kvfile_parse_fixed(const uint8_t b[V4F_KVFILE_FIXED_BYTES], uint64_t file_size,
                                  const char *path, v4f_kvfile_header *h, v4f_err *err) {
    memset(h, 0, sizeof *h);
    if (memcmp(b, V4F_KVFILE_MAGIC, 8) != 0)
        return v4f_err_set(err, V4F_STATUS_FORMAT, "kv file %s: not a v4flash KV file (bad magic)", nm(path));
    h->version = get32(b + 8);
    if (h->version == 0)
        return v4f_err_set(err, V4F_STATUS_FORMAT, "kv file %s: invalid format version 0", nm(path));
    if (h->version != V4F_KVFILE_VERSION)
        return v4f_err_set(err, V4F_STATUS_UNSUPPORTED,
                           "kv file %s: format version %" PRIu32 ", this build reads version %u", nm(path),
                           h->version, V4F_KVFILE_VERSION);
    uint32_t fixed = get32(b + 12);
    if (fixed != V4F_KVFILE_FIXED_BYTES)
        return v4f_err_set(err, V4F_STATUS_FORMAT, "kv file %s: header size %" PRIu32 " (expected %u)",
                           nm(path), fixed, V4F_KVFILE_FIXED_BYTES);
    h->flags = get32(b + 16);
    if (h->flags & ~(uint32_t)V4F_KVFILE_KNOWN_FLAGS)
        return v4f_err_set(err, V4F_STATUS_UNSUPPORTED, "kv file %s: unknown flags 0x%" PRIx32, nm(path),
                           h->flags);
    h->layout_version = get32(b + 20);
    h->model_fp.lo = get64(b + 24);
    h->model_fp.hi = get64(b + 32);
    h->family_fp.lo = get64(b + 40);
    h->family_fp.hi = get64(b + 48);
    h->n_tokens = get32(b + 56);
    h->n_ctx = get32(b + 60);
    h->reason = get32(b + 64);
    h->created_unix = get64(b + 72);
    h->token_hash = get64(b + 80);
    h->text_hash = get64(b + 88);
    h->text_bytes = get64(b + 96);
    h->payload_offset = get64(b + 104);
    h->payload_bytes = get64(b + 112);
    h->payload_hash = get64(b + 120);
    h->header_hash = get64(b + OFF_HEADER_HASH);
    if (!all_zero(b + 68, 4) || !all_zero(b + 128, 24))
        return v4f_err_set(err, V4F_STATUS_FORMAT, "kv file %s: reserved header bytes are not zero", nm(path));
    if (h->n_tokens > V4F_KVFILE_MAX_TOKENS)
        return v4f_err_set(err, V4F_STATUS_FORMAT, "kv file %s: token count %" PRIu32 " exceeds the limit %u",
                           nm(path), h->n_tokens, V4F_KVFILE_MAX_TOKENS);
    if (!(h->flags & V4F_KVFILE_FLAG_TEXT) && (h->text_hash || h->text_bytes))
        return v4f_err_set(err, V4F_STATUS_FORMAT, "kv file %s: text hash set without the text flag", nm(path));
    if (h->payload_offset != v4f_kvfile_payload_offset(h->n_tokens))
        return v4f_err_set(err, V4F_STATUS_FORMAT,
                           "kv file %s: payload offset %" PRIu64 " does not match %" PRIu32 " tokens", nm(path),
                           h->payload_offset, h->n_tokens);
    uint64_t end;
    if (!v4f_add_u64(h->payload_offset, h->payload_bytes, &end) || end > (uint64_t)INT64_MAX)
        return v4f_err_set(err, V4F_STATUS_FORMAT, "kv file %s: payload size %" PRIu64 " overflows", nm(path),
                           h->payload_bytes);
    if (file_size < end)
        return v4f_err_set(err, V4F_STATUS_FORMAT,
                           "kv file %s: truncated (%" PRIu64 " bytes, header says %" PRIu64 ")", nm(path),
                           file_size, end);
    if (file_size > end)
        return v4f_err_set(err, V4F_STATUS_FORMAT,
                           "kv file %s: %" PRIu64 " trailing bytes after the payload", nm(path), file_size - end);
    /* The stats record is bound to this header through its seed. */
    const uint8_t *rec = b + V4F_KVFILE_STATS_OFF;
    uint8_t chk[32];
    encode_stats(chk, h->header_hash, get32(rec), get64(rec + 8));
    h->stats_ok = memcmp(chk, rec, 32) == 0;
    if (h->stats_ok) {
        h->hits = get32(rec);
        h->last_used_unix = get64(rec + 8);
    } else {
        h->hits = 0;
        h->last_used_unix = h->created_unix;
    }
    return V4F_OK;
}

static v4f_status file_size_of(int fd, const char *path, uint64_t *size, v4f_err *err) {
    struct stat st;
    if (fstat(fd, &st) != 0)
        return v4f_err_set(err, V4F_STATUS_IO, "kv file %s: fstat failed: %s", nm(path), strerror(errno));
    if (!S_ISREG(st.st_mode))
        return v4f_err_set(err, V4F_STATUS_FORMAT, "kv file %s: not a regular file", nm(path));
    *size = (uint64_t)st.st_size;
    return V4F_OK;
}

/* Read and parse the fixed header into b and h. */
static v4f_status peek_into(int fd, const char *path, v4f_kvfile_header *h, uint8_t b[V4F_KVFILE_FIXED_BYTES],
                            v4f_err *err) {
    uint64_t size = 0;
    v4f_status st = file_size_of(fd, path, &size, err);
    if (st) return st;
    if (size == 0) return v4f_err_set(err, V4F_STATUS_FORMAT, "kv file %s: empty file", nm(path));
    ssize_t r = pread_full(fd, b, V4F_KVFILE_FIXED_BYTES, 0);
    if (r < 0) return v4f_err_set(err, V4F_STATUS_IO, "kv file %s: read failed: %s", nm(path), strerror(errno));
    if ((size_t)r < V4F_KVFILE_FIXED_BYTES) {
        if (r >= 8 && memcmp(b, V4F_KVFILE_MAGIC, 8) != 0)
            return v4f_err_set(err, V4F_STATUS_FORMAT, "kv file %s: not a v4flash KV file (bad magic)", nm(path));
        return v4f_err_set(err, V4F_STATUS_FORMAT, "kv file %s: truncated header (%zd of %u bytes)", nm(path), r,
                           V4F_KVFILE_FIXED_BYTES);
    }
    return v4f_kvfile_parse_fixed(b, size, path, h, err);
}

v4f_status v4f_kvfile_peek(int fd, const char *path, v4f_kvfile_header *h, v4f_err *err) {
    uint8_t b[V4F_KVFILE_FIXED_BYTES];
    return peek_into(fd, path, h, b, err);
}

v4f_status v4f_kvfile_read_header(int fd, const char *path, v4f_kvfile_header *h, int32_t **tokens_out,
                                  v4f_err *err) {
    if (tokens_out) *tokens_out = NULL;
    uint8_t b[V4F_KVFILE_FIXED_BYTES];
    v4f_status st = peek_into(fd, path, h, b, err);
    if (st) return st;
    size_t region = (size_t)(h->payload_offset - V4F_KVFILE_FIXED_BYTES);
    uint8_t *buf = malloc(region ? region : 1);
    if (!buf)
        return v4f_err_set(err, V4F_STATUS_OOM, "kv file %s: cannot allocate %zu bytes for token ids", nm(path),
                           region);
    ssize_t r = pread_full(fd, buf, region, V4F_KVFILE_FIXED_BYTES);
    if (r < 0 || (size_t)r != region) {
        free(buf);
        return v4f_err_set(err, r < 0 ? V4F_STATUS_IO : V4F_STATUS_FORMAT, "kv file %s: cannot read token ids%s%s",
                           nm(path), r < 0 ? ": " : " (truncated)", r < 0 ? strerror(errno) : "");
    }
    size_t tok_bytes = (size_t)h->n_tokens * 4;
    v4f_kvstore_xxh64 hs;
    v4f_kvstore_xxh64_init(&hs, 0);
    v4f_kvstore_xxh64_update(&hs, b, HASHED_FIXED_BYTES);
    v4f_kvstore_xxh64_update(&hs, buf, region);
    if (v4f_kvstore_xxh64_digest(&hs) != h->header_hash) {
        free(buf);
        return v4f_err_set(err, V4F_STATUS_FORMAT, "kv file %s: header checksum mismatch (damaged header)", nm(path));
    }
    /* Covered by the header hash already; these catch a writer bug. */
    if (!all_zero(buf + tok_bytes, region - tok_bytes) ||
        v4f_kvstore_xxh64_oneshot(buf, tok_bytes, 0) != h->token_hash) {
        free(buf);
        return v4f_err_set(err, V4F_STATUS_FORMAT, "kv file %s: token id block inconsistent", nm(path));
    }
    if (tokens_out && h->n_tokens) {
        *tokens_out = (int32_t *)(void *)buf;
        return V4F_OK;
    }
    free(buf);
    return V4F_OK;
}

v4f_status v4f_kvfile_check_ident(const v4f_kvfile_header *h, const v4f_kv_ident *ident, bool allow_family,
                                  const char *path, v4f_err *err) {
    if (h->layout_version != ident->layout_version)
        return v4f_err_set(err, V4F_STATUS_LAYOUT,
                           "kv file %s: KV layout version %" PRIu32 ", this engine uses %" PRIu32, nm(path),
                           h->layout_version, ident->layout_version);
    if (v4f_kv_fp_eq(h->model_fp, ident->model_fp)) return V4F_OK;
    if (allow_family && v4f_kv_fp_eq(h->family_fp, ident->family_fp)) return V4F_OK;
    return v4f_err_set(err, V4F_STATUS_LAYOUT,
                       "kv file %s: written for model %016" PRIx64 "%016" PRIx64 " (family %016" PRIx64
                       "%016" PRIx64 "), this model is %016" PRIx64 "%016" PRIx64 "%s",
                       nm(path), h->model_fp.hi, h->model_fp.lo, h->family_fp.hi, h->family_fp.lo,
                       ident->model_fp.hi, ident->model_fp.lo,
                       v4f_kv_fp_eq(h->family_fp, ident->family_fp) ? " (same family: allow sharing to use it)"
                                                                    : "");
}

/* ---- streaming write --------------------------------------------------------------- */

struct v4f_kv_sink {
    int fd;
    const char *path;
    v4f_kv_pwrite_fn pwrite_fn;
    uint8_t *buf;
    size_t fill;
    uint64_t start;    /* payload offset */
    uint64_t off;      /* next file offset to write */
    uint64_t wb_mark;  /* start of the writeback window not yet started */
    uint64_t wb_done;  /* everything before this is on disk and dropped */
    v4f_kvstore_xxh64 hash;
    v4f_status status;
    v4f_err err;
    io_worker io;
};

/* Bounded dirty pages: start writeback of each finished window and wait for
 * the one before it, then drop it from the page cache (keeps the page cache
 * free for the mmapped model). Errors here are re-detected by fsync. */
static void writeback(v4f_kv_sink *s, bool final) {
    if (WB_WINDOW_BYTES == 0) return;
    while (s->off - s->wb_mark >= WB_WINDOW_BYTES || (final && s->off > s->wb_mark)) {
        uint64_t len = s->off - s->wb_mark;
        if (len > WB_WINDOW_BYTES) len = WB_WINDOW_BYTES;
        (void)sync_file_range(s->fd, (off_t)s->wb_mark, (off_t)len, SYNC_FILE_RANGE_WRITE);
        if (s->wb_mark > s->wb_done) {
            uint64_t plen = s->wb_mark - s->wb_done;
            (void)sync_file_range(s->fd, (off_t)s->wb_done, (off_t)plen,
                                  SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                      SYNC_FILE_RANGE_WAIT_AFTER);
            (void)posix_fadvise(s->fd, (off_t)s->wb_done, (off_t)plen, POSIX_FADV_DONTNEED);
            s->wb_done = s->wb_mark;
        }
        s->wb_mark += len;
    }
}

static v4f_status sink_put(v4f_kv_sink *s, const void *p, size_t n) {
    v4f_status st = pwrite_all(s->fd, s->path, s->pwrite_fn, p, n, s->off, &s->err);
    if (st) return s->status = st;
    s->off += n;
    writeback(s, false);
    return V4F_OK;
}

/* A large piece straight from the caller's memory, hashed chunk by chunk
 * while the worker writes that chunk. Nothing is pending on return. */
static v4f_status sink_put_hashed(v4f_kv_sink *s, const uint8_t *p, size_t n) {
    io_worker_start(&s->io);
    for (size_t i = 0; i < n;) {
        size_t k = n - i < IO_CHUNK_BYTES ? n - i : IO_CHUNK_BYTES;
        io_submit(&s->io, true, s->fd, (uint8_t *)(uintptr_t)(p + i), k, s->off, s->pwrite_fn);
        v4f_kvstore_xxh64_update(&s->hash, p + i, k);
        int e = 0;
        size_t done = io_wait(&s->io, &e);
        if (done != k)
            return s->status = v4f_err_set(&s->err, V4F_STATUS_IO,
                                           "kv file %s: write at offset %" PRIu64 " failed: %s%s", nm(s->path),
                                           s->off + done, e > 0 ? strerror(e) : "wrote nothing",
                                           e == ENOSPC ? " (disk full)" : "");
        s->off += k;
        i += k;
        writeback(s, false);
    }
    return V4F_OK;
}

static v4f_status sink_flush(v4f_kv_sink *s) {
    if (!s->fill) return V4F_OK;
    v4f_status st = sink_put(s, s->buf, s->fill);
    s->fill = 0;
    return st;
}

v4f_status v4f_kv_sink_write(v4f_kv_sink *s, const void *buf, size_t n) {
    if (s->status) return s->status;
    if (!n) return V4F_OK;
    if (!buf) return s->status = v4f_err_set(&s->err, V4F_STATUS_INVALID_ARG, "kv sink: NULL buffer");
    uint64_t end;
    if (!v4f_add_u64(s->off + s->fill, n, &end) || end > (uint64_t)INT64_MAX)
        return s->status = v4f_err_set(&s->err, V4F_STATUS_RANGE, "kv file %s: payload too large", nm(s->path));
    const uint8_t *p = buf;
    if (s->fill) {
        size_t take = IO_BUF_BYTES - s->fill;
        if (take > n) take = n;
        v4f_kvstore_xxh64_update(&s->hash, p, take);
        memcpy(s->buf + s->fill, p, take);
        s->fill += take, p += take, n -= take;
        if (s->fill == IO_BUF_BYTES && sink_flush(s)) return s->status;
    }
    if (n >= DIRECT_MIN_BYTES) return sink_put_hashed(s, p, n);
    if (n) {
        v4f_kvstore_xxh64_update(&s->hash, p, n);
        memcpy(s->buf + s->fill, p, n);
        s->fill += n;
    }
    return V4F_OK;
}

v4f_status v4f_kvfile_write(int fd, const char *path, const v4f_kvfile_meta *meta, v4f_kv_produce_fn produce,
                            void *ud, v4f_kv_pwrite_fn pwrite_fn, uint64_t *payload_bytes_out, v4f_err *err) {
    if (!meta || !produce || (meta->n_tokens && !meta->tokens))
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "kv file %s: bad save arguments", nm(path));
    if (meta->n_tokens > V4F_KVFILE_MAX_TOKENS)
        return v4f_err_set(err, V4F_STATUS_RANGE, "kv file %s: %" PRIu32 " tokens exceed the limit %u", nm(path),
                           meta->n_tokens, V4F_KVFILE_MAX_TOKENS);
    v4f_kvfile_header h = {0};
    h.version = V4F_KVFILE_VERSION;
    h.flags = meta->has_text ? V4F_KVFILE_FLAG_TEXT : 0;
    h.layout_version = meta->ident.layout_version;
    h.model_fp = meta->ident.model_fp;
    h.family_fp = meta->ident.family_fp;
    h.n_tokens = meta->n_tokens;
    h.n_ctx = meta->ident.n_ctx;
    h.reason = meta->reason;
    h.created_unix = meta->created_unix ? meta->created_unix : (uint64_t)time(NULL);
    h.text_hash = meta->has_text ? meta->text_hash : 0;
    h.text_bytes = meta->has_text ? meta->text_bytes : 0;
    h.payload_offset = v4f_kvfile_payload_offset(meta->n_tokens);

    v4f_kv_sink *s = v4f_xcalloc(1, sizeof *s);
    s->buf = v4f_aligned_alloc(IO_BUF_BYTES);
    if (!s->buf) {
        free(s);
        return v4f_err_set(err, V4F_STATUS_OOM, "kv file %s: cannot allocate the write buffer", nm(path));
    }
    s->fd = fd;
    s->path = path;
    s->pwrite_fn = pwrite_fn;
    s->start = s->off = s->wb_mark = s->wb_done = h.payload_offset;
    v4f_kvstore_xxh64_init(&s->hash, 0);
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);

    v4f_err perr = {0};
    v4f_status st = produce(ud, s, &perr);
    io_worker_stop(&s->io); /* nothing is pending between sink calls */
    if (s->status) { /* the sink failed: that is the root cause */
        st = s->status;
        perr = s->err;
    } else if (st && !perr.msg[0]) {
        v4f_err_set(&perr, st, "kv file %s: payload writer failed", nm(path));
    }
    if (!st && sink_flush(s)) {
        st = s->status;
        perr = s->err;
    }
    uint64_t payload_bytes = s->off - s->start;
    uint64_t payload_hash = v4f_kvstore_xxh64_digest(&s->hash);
    if (st) {
        v4f_aligned_free(s->buf);
        free(s);
        if (err) {
            *err = perr;
            err->code = st;
        }
        return st;
    }
    writeback(s, true);
    v4f_aligned_free(s->buf);
    free(s);

    h.payload_bytes = payload_bytes;
    h.payload_hash = payload_hash;
    h.token_hash = v4f_kvstore_xxh64_oneshot(meta->tokens ? (const void *)meta->tokens : (const void *)"",
                                             (size_t)meta->n_tokens * 4, 0);
    size_t head = (size_t)h.payload_offset;
    uint8_t *hb = calloc(1, head);
    if (!hb) return v4f_err_set(err, V4F_STATUS_OOM, "kv file %s: cannot allocate %zu header bytes", nm(path), head);
    encode_fixed(hb, &h);
    if (meta->n_tokens) memcpy(hb + V4F_KVFILE_FIXED_BYTES, meta->tokens, (size_t)meta->n_tokens * 4);
    v4f_kvstore_xxh64 hs;
    v4f_kvstore_xxh64_init(&hs, 0);
    v4f_kvstore_xxh64_update(&hs, hb, HASHED_FIXED_BYTES);
    v4f_kvstore_xxh64_update(&hs, hb + V4F_KVFILE_FIXED_BYTES, head - V4F_KVFILE_FIXED_BYTES);
    h.header_hash = v4f_kvstore_xxh64_digest(&hs);
    put64(hb + OFF_HEADER_HASH, h.header_hash);
    encode_stats(hb + V4F_KVFILE_STATS_OFF, h.header_hash, 0, h.created_unix);
    st = pwrite_all(fd, path, pwrite_fn, hb, head, 0, err);
    free(hb);
    if (st) return st;
    if (fsync(fd) != 0)
        return v4f_err_set(err, V4F_STATUS_IO, "kv file %s: fsync failed: %s", nm(path), strerror(errno));
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    if (payload_bytes_out) *payload_bytes_out = payload_bytes;
    return V4F_OK;
}

/* ---- streaming read ------------------------------------------------------------------ */

struct v4f_kv_source {
    int fd;
    const char *path;
    uint8_t *buf;
    size_t cap, pos, len; /* buffered bytes [pos, len) */
    uint64_t off;         /* next file offset to read */
    uint64_t end;         /* payload end */
    uint64_t delivered;   /* bytes handed to the consumer */
    uint64_t total;       /* payload bytes */
    v4f_kvstore_xxh64 hash;
    v4f_status status;    /* sticky error returned to the consumer */
    bool io_failed;       /* the file itself could not be read (status says why) */
    v4f_err err;
    io_worker io;
};

static v4f_status source_fill(v4f_kv_source *s, void *dst, size_t n) {
    ssize_t r = pread_full(s->fd, dst, n, s->off);
    if (r < 0 || (size_t)r != n) {
        s->io_failed = true;
        if (r < 0)
            return s->status = v4f_err_set(&s->err, V4F_STATUS_IO,
                                           "kv file %s: read at offset %" PRIu64 " failed: %s", nm(s->path), s->off,
                                           strerror(errno));
        return s->status = v4f_err_set(&s->err, V4F_STATUS_FORMAT,
                                       "kv file %s: truncated while reading the payload", nm(s->path));
    }
    v4f_kvstore_xxh64_update(&s->hash, dst, n);
    s->off += n;
    return V4F_OK;
}

/* A large read straight into the caller's buffer: the worker reads chunk
 * k+1 while chunk k is hashed. Nothing is pending on return. */
static v4f_status source_read_hashed(v4f_kv_source *s, uint8_t *p, size_t n) {
    io_worker_start(&s->io);
    size_t k = n < IO_CHUNK_BYTES ? n : IO_CHUNK_BYTES;
    io_submit(&s->io, false, s->fd, p, k, s->off, NULL);
    for (size_t i = 0; i < n;) {
        int e = 0;
        size_t got = io_wait(&s->io, &e);
        if (got != k) {
            s->io_failed = true;
            if (e)
                return s->status = v4f_err_set(&s->err, V4F_STATUS_IO,
                                               "kv file %s: read at offset %" PRIu64 " failed: %s", nm(s->path),
                                               s->off, strerror(e));
            return s->status = v4f_err_set(&s->err, V4F_STATUS_FORMAT,
                                           "kv file %s: truncated while reading the payload", nm(s->path));
        }
        size_t next = i + k;
        size_t k2 = n - next < IO_CHUNK_BYTES ? n - next : IO_CHUNK_BYTES;
        if (k2) io_submit(&s->io, false, s->fd, p + next, k2, s->off + k, NULL);
        v4f_kvstore_xxh64_update(&s->hash, p + i, k);
        s->off += k;
        i = next;
        k = k2;
    }
    return V4F_OK;
}

uint64_t v4f_kv_source_remaining(const v4f_kv_source *s) { return s->total - s->delivered; }

v4f_status v4f_kv_source_read(v4f_kv_source *s, void *buf, size_t n) {
    if (s->status) return s->status;
    if (!n) return V4F_OK;
    if (!buf) return s->status = v4f_err_set(&s->err, V4F_STATUS_INVALID_ARG, "kv source: NULL buffer");
    if ((uint64_t)n > s->total - s->delivered)
        return s->status = v4f_err_set(&s->err, V4F_STATUS_LAYOUT,
                                       "kv file %s: payload shorter than the reader expects (wants %zu more bytes, "
                                       "%" PRIu64 " left)",
                                       nm(s->path), n, s->total - s->delivered);
    uint8_t *p = buf;
    size_t avail = s->len - s->pos;
    if (avail) {
        size_t take = avail < n ? avail : n;
        memcpy(p, s->buf + s->pos, take);
        s->pos += take, p += take, n -= take, s->delivered += take;
    }
    if (!n) return V4F_OK;
    if (n >= DIRECT_MIN_BYTES) {
        if (source_read_hashed(s, p, n)) return s->status;
        s->delivered += n;
        return V4F_OK;
    }
    uint64_t left = s->end - s->off;
    size_t want = left < s->cap ? (size_t)left : s->cap;
    if (source_fill(s, s->buf, want)) return s->status;
    s->len = want;
    memcpy(p, s->buf, n);
    s->pos = n;
    s->delivered += n;
    return V4F_OK;
}

v4f_status v4f_kvfile_read_payload_ex(int fd, const char *path, const v4f_kvfile_header *h,
                                      v4f_kv_consume_fn consume, void *ud, bool *damaged, v4f_err *err) {
    if (damaged) *damaged = false;
    v4f_kv_source *s = v4f_xcalloc(1, sizeof *s);
    s->fd = fd;
    s->path = path;
    s->cap = h->payload_bytes < IO_BUF_BYTES ? (size_t)h->payload_bytes : IO_BUF_BYTES;
    if (s->cap < 4096) s->cap = 4096;
    s->buf = v4f_aligned_alloc(s->cap);
    if (!s->buf) {
        free(s);
        return v4f_err_set(err, V4F_STATUS_OOM, "kv file %s: cannot allocate the read buffer", nm(path));
    }
    s->off = h->payload_offset;
    s->end = h->payload_offset + h->payload_bytes;
    s->total = h->payload_bytes;
    v4f_kvstore_xxh64_init(&s->hash, 0);
    (void)posix_fadvise(fd, (off_t)s->off, (off_t)h->payload_bytes, POSIX_FADV_SEQUENTIAL);

    v4f_status st = V4F_OK;
    v4f_err cerr = {0};
    if (consume) {
        v4f_status cst = consume(ud, s, h->payload_bytes, &cerr);
        if (s->status) { /* a source error is the root cause */
            st = s->status;
            cerr = s->err;
        } else if (cst) {
            st = cst;
            if (!cerr.msg[0]) v4f_err_set(&cerr, st, "kv file %s: payload reader failed", nm(path));
        }
    }
    io_worker_stop(&s->io); /* nothing is pending between source calls */
    uint64_t unread = s->total - s->delivered;
    /* Hash whatever the consumer left (everything, when only verifying). */
    while (!s->io_failed && s->off < s->end) {
        uint64_t left = s->end - s->off;
        source_fill(s, s->buf, left < s->cap ? (size_t)left : s->cap);
    }
    if (s->io_failed) {
        if (!st || st != s->status) cerr = s->err;
        st = s->status;
        if (damaged) *damaged = st == V4F_STATUS_FORMAT;
    } else if (v4f_kvstore_xxh64_digest(&s->hash) != h->payload_hash) {
        st = V4F_STATUS_FORMAT;
        v4f_err_set(&cerr, st, "kv file %s: payload checksum mismatch (damaged payload)", nm(path));
        if (damaged) *damaged = true;
    } else if (!st && consume && unread) {
        st = V4F_STATUS_LAYOUT;
        v4f_err_set(&cerr, st, "kv file %s: the payload reader left %" PRIu64 " of %" PRIu64 " bytes unread",
                    nm(path), unread, h->payload_bytes);
    }
    (void)posix_fadvise(fd, (off_t)h->payload_offset, (off_t)h->payload_bytes, POSIX_FADV_DONTNEED);
    v4f_aligned_free(s->buf);
    free(s);
    if (st && err) {
        *err = cerr;
        err->code = st;
    }
    return st;
}

v4f_status v4f_kvfile_read_payload(int fd, const char *path, const v4f_kvfile_header *h,
                                   v4f_kv_consume_fn consume, void *ud, v4f_err *err) {
    return v4f_kvfile_read_payload_ex(fd, path, h, consume, ud, NULL, err);
}

v4f_status v4f_kvfile_verify_path(const char *path, v4f_kvfile_header *h_out, v4f_err *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return v4f_err_set(err, e == ENOENT ? V4F_STATUS_NOT_FOUND : V4F_STATUS_IO, "kv file %s: open failed: %s",
                           path, strerror(e));
    }
    v4f_kvfile_header h;
    v4f_status st = v4f_kvfile_read_header(fd, path, &h, NULL, err);
    if (!st) st = v4f_kvfile_read_payload(fd, path, &h, NULL, NULL, err);
    close(fd);
    if (h_out) *h_out = h;
    return st;
}

v4f_status v4f_kvfile_stats_write(int fd, const char *path, const v4f_kvfile_header *h, uint32_t hits,
                                  uint64_t last_used_unix, v4f_err *err) {
    uint8_t rec[32];
    encode_stats(rec, h->header_hash, hits, last_used_unix);
    return pwrite_all(fd, path, NULL, rec, sizeof rec, V4F_KVFILE_STATS_OFF, err);
}
