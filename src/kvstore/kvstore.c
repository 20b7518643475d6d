/*
 * kvstore.c - a directory of KV checkpoint files: naming, atomic saves,
 * longest-prefix lookup (by token ids or by rendered-text hash), verified
 * loads with hit statistics, quarantine of bad files, and eviction to a
 * space budget.
 *
 * Directory contents:
 *   <16 hex token hash>-<8 hex model>.v4kv   automatic checkpoints
 *   session-<NAME>.v4kv                      named sessions (pinned)
 *   <name>.bad                               quarantined (damaged) files
 *   .tmp-<pid>-<n>-<rand>                    a save in progress (flock'ed)
 *   .lock                                    the mutation lock (flock)
 *   .claim-<NAME>                            flock'ed by the process that keeps
 *                                            session NAME (v4f_kvstore_session_claim)
 * There is no index file: the index is rebuilt by scanning the 192-byte
 * fixed headers, so nothing besides the checkpoints themselves can be
 * corrupted.
 *
 * Invariants / process safety:
 *   - A checkpoint appears under its final name only through rename() of a
 *     complete, fsynced temp file, followed by fsync of the directory.
 *   - Mutations (rename into place, eviction, removal, quarantine, stats
 *     updates, temp cleanup) hold an exclusive flock on DIR/.lock. Readers
 *     take no lock: a file may vanish between readdir and open (skipped) or
 *     be unlinked while open (the fd keeps the old inode readable).
 *   - A temp file is flock'ed by its writer until the save ends, so cleanup
 *     removes only temp files whose writer died (unlocked and > 10 s old).
 *   - flock locks belong to an open file description: open a store after
 *     fork(), never share one v4f_kvstore between processes or threads.
 * Ownership: v4f_kvstore owns dir (string), dirfd, lockfd and claimfd.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kvstore/kvstore.h"

#define SUFFIX ".v4kv"
#define BAD_SUFFIX ".bad"
#define TMP_PREFIX ".tmp-"
#define SESSION_PREFIX "session-"
#define TMP_STALE_S 10

struct v4f_kvstore {
    char *dir;
    int dirfd;
    int lockfd; /* -1: read-only store (lock file could not be created) */
    int claimfd; /* the flock'ed .claim-NAME of the session this store keeps, or -1 */
    char claim[V4F_KVSTORE_SESSION_NAME_MAX + 1];
    v4f_kvstore_opts o;
    uint32_t tmp_seq;
};

/* ---- small helpers ------------------------------------------------------------- */

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !memcmp(s + a - b, suf, b);
}

static int64_t now_s(const v4f_kvstore *s) { return s->o.now_fn ? s->o.now_fn() : (int64_t)time(NULL); }

/* A file name inside the directory: no '/', not hidden, bounded. */
static bool name_ok(const char *name) {
    size_t n = name ? strlen(name) : 0;
    return n > 0 && n < V4F_KVSTORE_NAME_MAX && name[0] != '.' && !strchr(name, '/');
}

static v4f_status lock_dir(v4f_kvstore *s, v4f_err *err) {
    if (s->lockfd < 0)
        return v4f_err_set(err, V4F_STATUS_IO, "kv store %s: read-only (cannot create %s/.lock)", s->dir, s->dir);
    while (flock(s->lockfd, LOCK_EX) != 0) {
        if (errno == EINTR) continue;
        return v4f_err_set(err, V4F_STATUS_IO, "kv store %s: flock failed: %s", s->dir, strerror(errno));
    }
    return V4F_OK;
}

static void unlock_dir(v4f_kvstore *s) { (void)flock(s->lockfd, LOCK_UN); }

static v4f_status mkdir_p(const char *path, v4f_err *err) {
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "kv store: bad directory path");
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != 0) continue;
        char c = buf[i];
        buf[i] = 0;
        if (mkdir(buf, 0700) != 0 && errno != EEXIST) {
            int e = errno;
            return v4f_err_set(err, V4F_STATUS_IO, "kv store %s: cannot create %s: %s", path, buf, strerror(e));
        }
        buf[i] = c;
    }
    return V4F_OK;
}

/* Remove temp files whose writer is gone. Caller holds the lock. */
static void clean_tmp(v4f_kvstore *s) {
    int fd = openat(s->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return;
    }
    struct dirent *de;
    int64_t now = (int64_t)time(NULL);
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, TMP_PREFIX, strlen(TMP_PREFIX)) != 0) continue;
        int tfd = openat(s->dirfd, de->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (tfd < 0) continue;
        struct stat st;
        if (fstat(tfd, &st) == 0 && S_ISREG(st.st_mode) && now - (int64_t)st.st_mtime > TMP_STALE_S &&
            flock(tfd, LOCK_EX | LOCK_NB) == 0) {
            if (unlinkat(s->dirfd, de->d_name, 0) == 0)
                v4f_log(V4F_LOG_INFO, "kv store %s: removed abandoned temp file %s", s->dir, de->d_name);
        }
        close(tfd);
    }
    closedir(d);
}

/* ---- open / close ---------------------------------------------------------------- */

void v4f_kvstore_opts_default(v4f_kvstore_opts *o) {
    memset(o, 0, sizeof *o);
    o->create = true;
    o->quarantine = true;
    o->half_life_s = V4F_KVSTORE_HALF_LIFE_S;
}

v4f_status v4f_kvstore_open(const char *dir, uint64_t budget_bytes, v4f_kvstore **out, v4f_err *err) {
    v4f_kvstore_opts o;
    v4f_kvstore_opts_default(&o);
    o.budget_bytes = budget_bytes;
    return v4f_kvstore_open_opts(dir, &o, out, err);
}

v4f_status v4f_kvstore_open_opts(const char *dir, const v4f_kvstore_opts *opts, v4f_kvstore **out,
                                 v4f_err *err) {
    *out = NULL;
    if (!dir || !*dir || !opts) return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "kv store: no directory given");
    if (opts->create) {
        v4f_status st = mkdir_p(dir, err);
        if (st) return st;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        int e = errno;
        return v4f_err_set(err, e == ENOENT ? V4F_STATUS_NOT_FOUND : V4F_STATUS_IO,
                           "kv store %s: cannot open the directory: %s", dir, strerror(e));
    }
    v4f_kvstore *s = v4f_xcalloc(1, sizeof *s);
    s->dir = v4f_xstrdup(dir);
    s->dirfd = dfd;
    s->claimfd = -1;
    s->o = *opts;
    if (s->o.half_life_s <= 0) s->o.half_life_s = V4F_KVSTORE_HALF_LIFE_S;
    s->lockfd = openat(dfd, ".lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (s->lockfd < 0) {
        s->lockfd = openat(dfd, ".lock", O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (s->lockfd >= 0) { /* flock works on read-only fds; writes will fail on their own */
        } else if (opts->create) {
            int e = errno;
            v4f_kvstore_close(s);
            return v4f_err_set(err, V4F_STATUS_IO, "kv store %s: cannot create the lock file: %s", dir,
                               strerror(e));
        }
    }
    if (s->lockfd >= 0 && !lock_dir(s, NULL)) {
        clean_tmp(s);
        unlock_dir(s);
    }
    *out = s;
    return V4F_OK;
}

void v4f_kvstore_close(v4f_kvstore *s) {
    if (!s) return;
    if (s->lockfd >= 0) close(s->lockfd);
    if (s->claimfd >= 0) close(s->claimfd);
    if (s->dirfd >= 0) close(s->dirfd);
    free(s->dir);
    free(s);
}

bool v4f_kvstore_has(v4f_kvstore *s, const char *name) {
    struct stat stt;
    return name_ok(name) && fstatat(s->dirfd, name, &stt, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(stt.st_mode);
}

/* ---- session claims ------------------------------------------------------------- */

#define CLAIM_PREFIX ".claim-"

/* Open (creating) the claim file of session and flock it without waiting:
 * *fd_out on success; V4F_STATUS_BUSY when another open file description
 * holds it. */
static v4f_status claim_try(v4f_kvstore *s, const char *session, int *fd_out, v4f_err *err) {
    char file[V4F_KVSTORE_NAME_MAX];
    v4f_status st = v4f_kvstore_session_file(session, file, err); /* validates the name */
    if (st) return st;
    snprintf(file, sizeof file, "%s%s", CLAIM_PREFIX, session);
    const int fd = openat(s->dirfd, file, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return v4f_err_set(err, V4F_STATUS_IO, "kv store %s: cannot create %s: %s", s->dir, file, strerror(errno));
    while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EINTR) continue;
        const int e = errno;
        close(fd);
        if (e == EWOULDBLOCK)
            return v4f_err_set(err, V4F_STATUS_BUSY,
                               "session %s is open in another v4flash process (kv store %s); its saves and this "
                               "one's would overwrite each other",
                               session, s->dir);
        return v4f_err_set(err, V4F_STATUS_IO, "kv store %s: flock %s: %s", s->dir, file, strerror(e));
    }
    *fd_out = fd;
    return V4F_OK;
}

static bool claimed(const v4f_kvstore *s, const char *session) {
    return s->claimfd >= 0 && !strcmp(s->claim, session);
}

v4f_status v4f_kvstore_session_claim(v4f_kvstore *s, const char *session, v4f_err *err) {
    if (claimed(s, session)) return V4F_OK;
    int fd;
    const v4f_status st = claim_try(s, session, &fd, err);
    if (st) return st;
    if (s->claimfd >= 0) close(s->claimfd);
    s->claimfd = fd;
    snprintf(s->claim, sizeof s->claim, "%s", session);
    return V4F_OK;
}

bool v4f_kvstore_session_busy(v4f_kvstore *s, const char *session) {
    if (claimed(s, session)) return false;
    int fd;
    const v4f_status st = claim_try(s, session, &fd, NULL);
    if (st == V4F_OK) close(fd);
    return st == V4F_STATUS_BUSY;
}

const char *v4f_kvstore_dir(const v4f_kvstore *s) { return s->dir; }

/* ---- scanning -------------------------------------------------------------------------- */

/* Returns false if the file vanished (raced with a removal). */
static bool entry_load(v4f_kvstore *s, const char *name, v4f_kvstore_entry *e) {
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    e->is_session = !strncmp(name, SESSION_PREFIX, strlen(SESSION_PREFIX));
    int fd = openat(s->dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT) return false;
        e->bad = true;
        e->status = V4F_STATUS_IO;
        snprintf(e->msg, sizeof e->msg, "open failed: %s", strerror(errno));
        return true;
    }
    struct stat st;
    if (fstat(fd, &st) == 0) {
        e->file_bytes = (uint64_t)st.st_size;
        e->dev = (uint64_t)st.st_dev;
        e->ino = (uint64_t)st.st_ino;
        e->is_reg = S_ISREG(st.st_mode);
    }
    if (ends_with(name, BAD_SUFFIX)) {
        e->bad = true;
        e->status = V4F_STATUS_FORMAT;
        snprintf(e->msg, sizeof e->msg, "quarantined");
    } else {
        v4f_err err = {0};
        if (v4f_kvfile_peek(fd, name, &e->hdr, &err)) {
            e->bad = true;
            e->status = err.code;
            snprintf(e->msg, sizeof e->msg, "%.150s", err.msg);
        }
    }
    close(fd);
    return true;
}

v4f_status v4f_kvstore_scan(v4f_kvstore *s, v4f_kvstore_entry **entries, size_t *n, v4f_err *err) {
    *entries = NULL;
    *n = 0;
    int fd = openat(s->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0) close(fd);
        return v4f_err_set(err, V4F_STATUS_IO, "kv store %s: cannot list the directory: %s", s->dir,
                           strerror(errno));
    }
    size_t cap = 0;
    v4f_kvstore_entry *v = NULL;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *nme = de->d_name;
        if (nme[0] == '.' || strlen(nme) >= V4F_KVSTORE_NAME_MAX) continue;
        if (!ends_with(nme, SUFFIX) && !ends_with(nme, SUFFIX BAD_SUFFIX)) continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            v = v4f_xrealloc(v, cap * sizeof *v);
        }
        if (entry_load(s, nme, &v[*n])) (*n)++;
    }
    closedir(d);
    *entries = v;
    return V4F_OK;
}

/* ---- quarantine / stats --------------------------------------------------------------- */

/* Report NAME and rename it to NAME.bad if it is still the (regular) inode
 * we found bad. */
static void quarantine_id(v4f_kvstore *s, const char *name, uint64_t dev, uint64_t ino, bool is_reg,
                          const char *why) {
    v4f_log(V4F_LOG_WARN, "kv store %s: skipping %s: %s", s->dir, name, why);
    if (!s->o.quarantine || !is_reg || lock_dir(s, NULL)) return;
    struct stat now;
    if (fstatat(s->dirfd, name, &now, AT_SYMLINK_NOFOLLOW) == 0 && (uint64_t)now.st_ino == ino &&
        (uint64_t)now.st_dev == dev) {
        char bad[V4F_KVSTORE_NAME_MAX + 8];
        snprintf(bad, sizeof bad, "%s" BAD_SUFFIX, name);
        if (renameat(s->dirfd, name, s->dirfd, bad) == 0) {
            (void)fsync(s->dirfd);
            v4f_log(V4F_LOG_WARN, "kv store %s: quarantined %s as %s", s->dir, name, bad);
        }
    }
    unlock_dir(s);
}

static void quarantine(v4f_kvstore *s, const char *name, const struct stat *seen, const char *why) {
    quarantine_id(s, name, (uint64_t)seen->st_dev, (uint64_t)seen->st_ino, S_ISREG(seen->st_mode), why);
}

static void note_hit(v4f_kvstore *s, const char *name, uint64_t header_hash) {
    if (lock_dir(s, NULL)) return;
    int fd = openat(s->dirfd, name, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0) {
        v4f_kvfile_header h;
        if (!v4f_kvfile_peek(fd, name, &h, NULL) && h.header_hash == header_hash)
            (void)v4f_kvfile_stats_write(fd, name, &h, h.hits < UINT32_MAX ? h.hits + 1 : h.hits,
                                         (uint64_t)now_s(s), NULL);
        close(fd);
    }
    unlock_dir(s);
}

/* ---- lookup ------------------------------------------------------------------------------ */

typedef struct cand {
    size_t idx;
    uint64_t key_len; /* bytes of the query the entry covers */
    uint64_t key_hash;
    bool hit;
} cand;

static int cand_cmp_len(const void *a, const void *b) {
    const cand *x = a, *y = b;
    return x->key_len < y->key_len ? -1 : x->key_len > y->key_len;
}

static bool ident_ok(const v4f_kvfile_header *h, const v4f_kv_ident *ident, const v4f_kvstore_lookup_opts *lo) {
    if (v4f_kvfile_check_ident(h, ident, lo && lo->allow_family, NULL, NULL)) return false;
    if (lo && lo->min_tokens && h->n_tokens < lo->min_tokens) return false;
    if (lo && lo->max_ctx && h->n_ctx > lo->max_ctx) return false;
    return h->n_tokens > 0;
}

/* Shared longest-prefix search: by_text selects text_bytes/text_hash, else
 * the token ids (as LE u32 bytes; int32 memory on a little-endian host). */
static v4f_status lookup_common(v4f_kvstore *s, const uint8_t *q, uint64_t q_len, bool by_text,
                                const v4f_kv_ident *ident, const v4f_kvstore_lookup_opts *lo,
                                v4f_kvstore_match *match, v4f_err *err) {
    memset(match, 0, sizeof *match);
    v4f_kvstore_entry *ents;
    size_t n_ents;
    v4f_status st = v4f_kvstore_scan(s, &ents, &n_ents, err);
    if (st) return st;
    cand *c = v4f_xmalloc((n_ents ? n_ents : 1) * sizeof *c);
    size_t n_c = 0;
    for (size_t i = 0; i < n_ents; i++) {
        const v4f_kvfile_header *h = &ents[i].hdr;
        if (ents[i].bad && ents[i].status == V4F_STATUS_FORMAT && !ends_with(ents[i].name, BAD_SUFFIX))
            quarantine_id(s, ents[i].name, ents[i].dev, ents[i].ino, ents[i].is_reg, ents[i].msg);
        if (ents[i].bad || !ident_ok(h, ident, lo)) continue;
        uint64_t len = by_text ? h->text_bytes : (uint64_t)h->n_tokens * 4;
        if (by_text && !(h->flags & V4F_KVFILE_FLAG_TEXT)) continue;
        if (len > q_len || (by_text && len == 0)) continue;
        c[n_c++] = (cand){i, len, by_text ? h->text_hash : h->token_hash, false};
    }
    /* One pass over the query: digest the running hash at each candidate length. */
    qsort(c, n_c, sizeof *c, cand_cmp_len);
    v4f_kvstore_xxh64 hs;
    v4f_kvstore_xxh64_init(&hs, 0);
    uint64_t fed = 0;
    for (size_t i = 0; i < n_c; i++) {
        v4f_kvstore_xxh64_update(&hs, q + fed, (size_t)(c[i].key_len - fed));
        fed = c[i].key_len;
        c[i].hit = v4f_kvstore_xxh64_digest(&hs) == c[i].key_hash;
    }
    st = V4F_STATUS_NOT_FOUND;
    for (size_t k = n_c; k-- > 0 && st == V4F_STATUS_NOT_FOUND;) {
        if (!c[k].hit) continue;
        const char *name = ents[c[k].idx].name;
        int fd = openat(s->dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) continue; /* evicted meanwhile */
        struct stat fst;
        v4f_kvfile_header h;
        int32_t *ids = NULL;
        v4f_err e2 = {0};
        v4f_status hs_st = fstat(fd, &fst) == 0 ? v4f_kvfile_read_header(fd, name, &h, by_text ? NULL : &ids, &e2)
                                                : V4F_STATUS_IO;
        close(fd);
        if (hs_st == V4F_STATUS_FORMAT) {
            quarantine(s, name, &fst, e2.msg);
            continue;
        }
        if (hs_st) continue;
        bool same = ident_ok(&h, ident, lo) &&
                    (by_text ? h.text_bytes == c[k].key_len && h.text_hash == c[k].key_hash
                             : (uint64_t)h.n_tokens * 4 == c[k].key_len && !memcmp(ids, q, (size_t)c[k].key_len));
        free(ids);
        if (!same) continue; /* replaced meanwhile, or a hash collision */
        snprintf(match->name, sizeof match->name, "%s", name);
        match->hdr = h;
        match->n_tokens = h.n_tokens;
        st = V4F_OK;
    }
    free(c);
    free(ents);
    if (st == V4F_STATUS_NOT_FOUND)
        v4f_err_set(err, st, "kv store %s: no stored prefix matches (%" PRIu64 " %s)", s->dir,
                    by_text ? q_len : q_len / 4, by_text ? "bytes" : "tokens");
    return st;
}

v4f_status v4f_kvstore_lookup(v4f_kvstore *s, const int32_t *tokens, uint32_t n, const v4f_kv_ident *ident,
                              const v4f_kvstore_lookup_opts *lo, v4f_kvstore_match *match, v4f_err *err) {
    if (!s || !ident || !match || (n && !tokens))
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "kv store: bad lookup arguments");
    return lookup_common(s, (const uint8_t *)tokens, (uint64_t)n * 4, false, ident, lo, match, err);
}

v4f_status v4f_kvstore_lookup_text(v4f_kvstore *s, const char *text, size_t len, const v4f_kv_ident *ident,
                                   const v4f_kvstore_lookup_opts *lo, v4f_kvstore_match *match, v4f_err *err) {
    if (!s || !ident || !match || (len && !text))
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "kv store: bad lookup arguments");
    return lookup_common(s, (const uint8_t *)text, len, true, ident, lo, match, err);
}

/* ---- eviction ----------------------------------------------------------------------------- */

double v4f_kvstore_score(const v4f_kvfile_header *h, int64_t now_unix, double half_life_s) {
    double base = 1.0;
    if (h->reason == V4F_KV_REASON_COLD || h->reason == V4F_KV_REASON_EVICT ||
        h->reason == V4F_KV_REASON_SHUTDOWN || h->reason == V4F_KV_REASON_MANUAL)
        base = 2.0;
    double age = (double)(now_unix - (int64_t)h->last_used_unix);
    if (age < 0) age = 0; /* clock skew between processes / machines */
    if (half_life_s <= 0) half_life_s = V4F_KVSTORE_HALF_LIFE_S;
    return (base + (double)h->hits) * exp2(-age / half_life_s);
}

typedef struct victim {
    size_t idx;
    double score;
    uint64_t last_used;
    const char *name;
} victim;

static int victim_cmp(const void *a, const void *b) {
    const victim *x = a, *y = b;
    if (x->score != y->score) return x->score < y->score ? -1 : 1;
    if (x->last_used != y->last_used) return x->last_used < y->last_used ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Caller holds the lock. */
static v4f_status gc_locked(v4f_kvstore *s, uint64_t budget, const char *protect, size_t *evicted, v4f_err *err) {
    v4f_kvstore_entry *ents;
    size_t n;
    v4f_status st = v4f_kvstore_scan(s, &ents, &n, err);
    if (st) return st;
    size_t removed = 0;
    uint64_t total = 0;
    victim *v = v4f_xmalloc((n ? n : 1) * sizeof *v);
    size_t n_v = 0;
    int64_t now = now_s(s);
    for (size_t i = 0; i < n; i++) {
        v4f_kvstore_entry *e = &ents[i];
        bool bad_format = e->bad && e->status == V4F_STATUS_FORMAT;
        if (bad_format) { /* damaged: disposable */
            if (unlinkat(s->dirfd, e->name, 0) == 0) {
                removed++;
                v4f_log(V4F_LOG_INFO, "kv store %s: removed bad file %s (%s)", s->dir, e->name, e->msg);
            }
            continue;
        }
        total += e->file_bytes;
        if (e->is_session || (protect && !strcmp(protect, e->name))) continue;
        /* Unreadable / other-version files are evicted first (score -1). */
        v[n_v++] = (victim){i, e->bad ? -1.0 : v4f_kvstore_score(&e->hdr, now, s->o.half_life_s),
                            e->hdr.last_used_unix, e->name};
    }
    qsort(v, n_v, sizeof *v, victim_cmp);
    for (size_t k = 0; k < n_v && budget && total > budget; k++) {
        v4f_kvstore_entry *e = &ents[v[k].idx];
        if (unlinkat(s->dirfd, e->name, 0) != 0) continue;
        total -= e->file_bytes;
        removed++;
        v4f_log(V4F_LOG_INFO, "kv store %s: evicted %s (%" PRIu32 " tokens, %" PRIu32 " hits, %.1f MiB, score %.3g)",
                s->dir, e->name, e->hdr.n_tokens, e->hdr.hits, (double)e->file_bytes / 1048576.0, v[k].score);
    }
    if (removed) (void)fsync(s->dirfd);
    if (budget && total > budget)
        v4f_log(V4F_LOG_WARN, "kv store %s: %.1f MiB in pinned/protected files exceed the budget of %.1f MiB", s->dir,
                (double)total / 1048576.0, (double)budget / 1048576.0);
    free(v);
    free(ents);
    if (evicted) *evicted = removed;
    return V4F_OK;
}

v4f_status v4f_kvstore_gc(v4f_kvstore *s, uint64_t budget_bytes, const char *protect, size_t *evicted_out,
                          v4f_err *err) {
    if (evicted_out) *evicted_out = 0;
    v4f_status st = lock_dir(s, err);
    if (st) return st;
    clean_tmp(s);
    st = gc_locked(s, budget_bytes ? budget_bytes : s->o.budget_bytes, protect, evicted_out, err);
    unlock_dir(s);
    return st;
}

/* ---- save -------------------------------------------------------------------------------- */

v4f_status v4f_kvstore_session_file(const char *session, char out[V4F_KVSTORE_NAME_MAX], v4f_err *err) {
    size_t n = session ? strlen(session) : 0;
    bool ok = n > 0 && n <= V4F_KVSTORE_SESSION_NAME_MAX && session[0] != '.';
    for (size_t i = 0; ok && i < n; i++) {
        char c = session[i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
             c == '-';
    }
    if (!ok)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG,
                           "kv store: bad session name '%s' (1-64 of A-Z a-z 0-9 . _ -, not starting with '.')",
                           session ? session : "");
    snprintf(out, V4F_KVSTORE_NAME_MAX, SESSION_PREFIX "%s" SUFFIX, session);
    return V4F_OK;
}

static bool fits_budget(uint64_t budget, uint64_t file_bytes) {
    if (!budget) return true;
    uint64_t slack = file_bytes / 100 + (file_bytes % 100 != 0);
    uint64_t need;
    return v4f_add_u64(file_bytes, slack, &need) && need <= budget;
}

v4f_status v4f_kvstore_save(v4f_kvstore *s, const int32_t *tokens, uint32_t n, const v4f_kv_ident *ident,
                            const v4f_kvstore_save_opts *so, v4f_kv_produce_fn produce, void *ud, char *name_out,
                            v4f_err *err) {
    if (!s || !ident || !produce || n == 0 || !tokens)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "kv store: bad save arguments (need >= 1 token)");
    if (n > V4F_KVFILE_MAX_TOKENS)
        return v4f_err_set(err, V4F_STATUS_RANGE, "kv store %s: %" PRIu32 " tokens exceed the limit", s->dir, n);
    v4f_kvstore_save_opts dflt = {0};
    if (!so) so = &dflt;
    char name[V4F_KVSTORE_NAME_MAX];
    if (so->session_name) {
        v4f_status st = v4f_kvstore_session_file(so->session_name, name, err);
        if (st) return st;
    } else {
        uint64_t th = v4f_kvstore_xxh64_oneshot(tokens, (size_t)n * 4, 0);
        snprintf(name, sizeof name, "%016" PRIx64 "-%08" PRIx32 SUFFIX, th, (uint32_t)ident->model_fp.lo);
    }
    uint64_t poff = v4f_kvfile_payload_offset(n);
    if (so->payload_bytes_hint && !fits_budget(s->o.budget_bytes, poff + so->payload_bytes_hint))
        return v4f_err_set(err, V4F_STATUS_RANGE,
                           "kv store %s: a %.1f MiB checkpoint does not fit the budget of %.1f MiB (skipped)", s->dir,
                           (double)(poff + so->payload_bytes_hint) / 1048576.0,
                           (double)s->o.budget_bytes / 1048576.0);
    if (s->lockfd < 0)
        return v4f_err_set(err, V4F_STATUS_IO, "kv store %s: read-only (no lock file)", s->dir);

    char tmp[V4F_KVSTORE_NAME_MAX];
    uint64_t salt[3] = {(uint64_t)(v4f_time_s() * 1e9), (uint64_t)getpid(), (uint64_t)(uintptr_t)s};
    uint64_t rnd = v4f_kvstore_xxh64_oneshot(salt, sizeof salt, (uint64_t)time(NULL));
    snprintf(tmp, sizeof tmp, TMP_PREFIX "%ld-%" PRIu32 "-%08" PRIx32, (long)getpid(), s->tmp_seq++,
             (uint32_t)rnd);
    int fd = openat(s->dirfd, tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return v4f_err_set(err, V4F_STATUS_IO, "kv store %s: cannot create a temp file: %s", s->dir,
                           strerror(errno));
    (void)flock(fd, LOCK_EX); /* marks the temp file as live for clean_tmp() */
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", s->dir, name);
    v4f_kvfile_meta meta = {.ident = *ident,
                            .tokens = tokens,
                            .n_tokens = n,
                            .reason = so->reason,
                            .has_text = so->has_text,
                            .text_hash = so->text_hash,
                            .text_bytes = so->text_bytes,
                            .created_unix = (uint64_t)now_s(s)};
    uint64_t payload_bytes = 0;
    v4f_status st = v4f_kvfile_write(fd, path, &meta, produce, ud, s->o.pwrite_fn, &payload_bytes, err);
    if (!st && !fits_budget(s->o.budget_bytes, poff + payload_bytes))
        st = v4f_err_set(err, V4F_STATUS_RANGE,
                         "kv store %s: the %.1f MiB checkpoint does not fit the budget of %.1f MiB (discarded)", s->dir,
                         (double)(poff + payload_bytes) / 1048576.0, (double)s->o.budget_bytes / 1048576.0);
    if (!st) st = lock_dir(s, err);
    if (st) {
        (void)unlinkat(s->dirfd, tmp, 0);
        close(fd);
        return st;
    }
    if (renameat(s->dirfd, tmp, s->dirfd, name) != 0) {
        int e = errno;
        (void)unlinkat(s->dirfd, tmp, 0);
        unlock_dir(s);
        close(fd);
        return v4f_err_set(err, V4F_STATUS_IO, "kv store %s: rename to %s failed: %s", s->dir, name, strerror(e));
    }
    if (fsync(s->dirfd) != 0) {
        int e = errno;
        unlock_dir(s);
        close(fd);
        return v4f_err_set(err, V4F_STATUS_IO, "kv store %s: fsync of the directory failed: %s", s->dir,
                           strerror(e));
    }
    if (s->o.budget_bytes) (void)gc_locked(s, s->o.budget_bytes, name, NULL, NULL);
    unlock_dir(s);
    close(fd);
    if (name_out) snprintf(name_out, V4F_KVSTORE_NAME_MAX, "%s", name);
    return V4F_OK;
}

/* ---- load / remove -------------------------------------------------------------------------- */

v4f_status v4f_kvstore_load(v4f_kvstore *s, const char *name, const v4f_kv_ident *ident, bool allow_family,
                            v4f_kv_consume_fn consume, void *ud, int32_t **tokens_out, uint32_t *n_tokens_out,
                            v4f_err *err) {
    if (tokens_out) *tokens_out = NULL;
    if (n_tokens_out) *n_tokens_out = 0;
    if (!s || !ident || !name_ok(name))
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "kv store: bad file name '%s'", name ? name : "");
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", s->dir, name);
    int fd = openat(s->dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        int e = errno;
        return v4f_err_set(err, e == ENOENT ? V4F_STATUS_NOT_FOUND : V4F_STATUS_IO, "kv file %s: open failed: %s",
                           path, strerror(e));
    }
    struct stat fst;
    v4f_kvfile_header h;
    int32_t *ids = NULL;
    v4f_status st = fstat(fd, &fst) == 0 ? V4F_OK
                                         : v4f_err_set(err, V4F_STATUS_IO, "kv file %s: fstat failed", path);
    bool damaged = false;
    if (!st) {
        st = v4f_kvfile_read_header(fd, path, &h, tokens_out ? &ids : NULL, err);
        damaged = st == V4F_STATUS_FORMAT;
    }
    if (!st) st = v4f_kvfile_check_ident(&h, ident, allow_family, path, err);
    if (!st) st = v4f_kvfile_read_payload_ex(fd, path, &h, consume, ud, &damaged, err);
    close(fd);
    if (st) {
        free(ids);
        if (damaged) quarantine(s, name, &fst, err ? err->msg : "damaged");
        return st;
    }
    note_hit(s, name, h.header_hash);
    if (tokens_out) *tokens_out = ids;
    if (n_tokens_out) *n_tokens_out = h.n_tokens;
    return V4F_OK;
}

v4f_status v4f_kvstore_remove(v4f_kvstore *s, const char *name, v4f_err *err) {
    if (!s || !name_ok(name)) return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "kv store: bad file name");
    v4f_status st = lock_dir(s, err);
    if (st) return st;
    if (unlinkat(s->dirfd, name, 0) != 0) {
        int e = errno;
        unlock_dir(s);
        return v4f_err_set(err, e == ENOENT ? V4F_STATUS_NOT_FOUND : V4F_STATUS_IO, "kv store %s: cannot remove %s: %s",
                           s->dir, name, strerror(e));
    }
    (void)fsync(s->dirfd);
    unlock_dir(s);
    return V4F_OK;
}
