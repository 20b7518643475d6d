/*
 * kvstore.h - the disk KV store: one checkpoint file format (kvfile.c), a
 * directory of checkpoints with longest-prefix lookup, atomic saves, a space
 * budget with eviction and cross-process locking (kvstore.c), the save
 * policy (kvpolicy.c) and the payload hash (kvhash.c).
 *
 * The store never interprets the payload: the engine serializes its session
 * through a sink (v4f_kv_sink_write) and restores it from a source
 * (v4f_kv_source_read). Payloads are streamed in pieces, so a multi-GB
 * snapshot of a 1M-token context never needs one big buffer; the payload hash
 * is computed while streaming. The byte layout is documented in
 * docs/FORMATS.md ("KV checkpoint file").
 *
 * Invariants:
 *   - A file is visible under its final name only after it was completely
 *     written and fsynced (temp file + fsync + rename + fsync(dir)).
 *   - Every byte of a file except the 32-byte stats record is covered by the
 *     header hash or the payload hash; a damaged stats record only resets the
 *     hit statistics, it never makes a file valid or invalid.
 *   - Nothing read from a file is trusted before it is checked; bad files are
 *     reported through v4f_err / v4f_log and skipped, never a crash.
 *
 * Ownership: v4f_kvstore owns its directory path and lock fd; results handed
 * to the caller say who frees them.
 * Threading: one v4f_kvstore per thread (no internal mutex). Any number of
 * processes may share a directory: mutations (rename into place, eviction,
 * removal, stats updates) hold an flock on DIR/.lock; readers need no lock.
 */
#ifndef V4F_KVSTORE_H
#define V4F_KVSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/core.h"

/* ---- hash (XXH64, built in; kvhash.c) -------------------------------------- */

typedef struct v4f_kvstore_xxh64 {
    uint64_t v[4];
    uint64_t total_len;
    uint64_t seed;
    uint8_t mem[32];
    uint32_t mem_len;
} v4f_kvstore_xxh64;

uint64_t v4f_kvstore_xxh64_oneshot(const void *data, size_t n, uint64_t seed);
void v4f_kvstore_xxh64_init(v4f_kvstore_xxh64 *st, uint64_t seed);
void v4f_kvstore_xxh64_update(v4f_kvstore_xxh64 *st, const void *data, size_t n);
/* Digest of everything fed so far; the state stays usable (may keep updating). */
uint64_t v4f_kvstore_xxh64_digest(const v4f_kvstore_xxh64 *st);

/* ---- identities ------------------------------------------------------------- */

/* A 128-bit fingerprint computed by the engine (e.g. a hash of the GGUF
 * metadata and tensor directory). */
typedef struct v4f_kv_fp {
    uint64_t lo, hi;
} v4f_kv_fp;

static inline bool v4f_kv_fp_eq(v4f_kv_fp a, v4f_kv_fp b) { return a.lo == b.lo && a.hi == b.hi; }

/* What a checkpoint was written for; checked on every lookup and load. */
typedef struct v4f_kv_ident {
    v4f_kv_fp model_fp;      /* exact model (q2 and q4 differ) */
    v4f_kv_fp family_fp;     /* same shapes/architecture (q2 and q4 share it) */
    uint32_t layout_version; /* the engine's KV payload layout version */
    uint32_t n_ctx;          /* context the session was sized for (0 = unknown) */
} v4f_kv_ident;

/* Why a checkpoint was saved (stored in the file, shown by `kv ls`). */
typedef enum v4f_kv_reason {
    V4F_KV_REASON_UNKNOWN = 0,
    V4F_KV_REASON_COLD = 1,      /* after a long cold prefill */
    V4F_KV_REASON_CONTINUED = 2, /* at a continued frontier */
    V4F_KV_REASON_EVICT = 3,     /* before the live session was replaced */
    V4F_KV_REASON_SHUTDOWN = 4,  /* on clean shutdown */
    V4F_KV_REASON_SESSION = 5,   /* a named session (`chat --session NAME`) */
    V4F_KV_REASON_MANUAL = 6,    /* an explicit user/tool request */
    V4F_KV_REASON_COUNT_
} v4f_kv_reason;

const char *v4f_kv_reason_name(uint32_t reason); /* "cold", ...; "?" if unknown */

/* ---- streaming payload interface ------------------------------------------- */

typedef struct v4f_kv_sink v4f_kv_sink;
typedef struct v4f_kv_source v4f_kv_source;

/* Append n bytes to the payload being saved. After the first error every
 * later call returns that error again. */
v4f_status v4f_kv_sink_write(v4f_kv_sink *sink, const void *buf, size_t n);

/* Read exactly n payload bytes. Reading past the payload end is an error
 * (V4F_STATUS_LAYOUT: the payload does not have the layout the reader expects). The payload hash is checked only when the whole payload
 * was read, so a consumer must treat restored state as tentative until
 * v4f_kvfile_read_payload / v4f_kvstore_load returns V4F_OK. */
v4f_status v4f_kv_source_read(v4f_kv_source *src, void *buf, size_t n);
uint64_t v4f_kv_source_remaining(const v4f_kv_source *src);

/* The engine's serializer: write the whole payload through the sink. */
typedef v4f_status (*v4f_kv_produce_fn)(void *ud, v4f_kv_sink *sink, v4f_err *err);
/* The engine's deserializer: read the payload (payload_bytes in all). */
typedef v4f_status (*v4f_kv_consume_fn)(void *ud, v4f_kv_source *src, uint64_t payload_bytes,
                                        v4f_err *err);

/* Optional write hook (tests simulate a full disk with it): same contract as
 * pwrite(2). NULL = pwrite. */
typedef ssize_t (*v4f_kv_pwrite_fn)(int fd, const void *buf, size_t n, off_t off);

/* ---- the file format (kvfile.c) --------------------------------------------- */

#define V4F_KVFILE_MAGIC "V4FKV\r\n\x1a" /* 8 bytes, no NUL */
#define V4F_KVFILE_VERSION 1u
#define V4F_KVFILE_FIXED_BYTES 192u   /* fixed header incl. the stats record */
#define V4F_KVFILE_STATS_OFF 160u     /* 32-byte mutable stats record */
#define V4F_KVFILE_ALIGN 4096u        /* payload offset alignment */
#define V4F_KVFILE_MAX_TOKENS (1u << 24) /* 16M tokens (64 MiB of ids) */
#define V4F_KVFILE_FLAG_TEXT 1u       /* text_hash/text_bytes are valid */
#define V4F_KVFILE_KNOWN_FLAGS V4F_KVFILE_FLAG_TEXT

/* The decoded fixed header. */
typedef struct v4f_kvfile_header {
    uint32_t version;
    uint32_t flags;
    uint32_t layout_version;
    v4f_kv_fp model_fp, family_fp;
    uint32_t n_tokens;
    uint32_t n_ctx;
    uint32_t reason;
    uint64_t created_unix;
    uint64_t token_hash; /* XXH64(seed 0) of the token ids as LE u32 */
    uint64_t text_hash;  /* caller's hash of the rendered text (flag TEXT) */
    uint64_t text_bytes;
    uint64_t payload_offset;
    uint64_t payload_bytes;
    uint64_t payload_hash;
    uint64_t header_hash;
    /* stats record (mutable, separately checked; zero/created when damaged) */
    uint32_t hits;
    uint64_t last_used_unix;
    bool stats_ok;
} v4f_kvfile_header;

/* Metadata of a checkpoint to write. tokens are int32 ids (stored as u32). */
typedef struct v4f_kvfile_meta {
    v4f_kv_ident ident;
    const int32_t *tokens;
    uint32_t n_tokens;
    uint32_t reason;
    bool has_text;
    uint64_t text_hash, text_bytes;
    uint64_t created_unix; /* 0 = now */
} v4f_kvfile_meta;

/* Payload offset for n_tokens ids (aligned to V4F_KVFILE_ALIGN). */
uint64_t v4f_kvfile_payload_offset(uint32_t n_tokens);

/* Decode and check the fixed 192-byte header (no I/O): magic, version, sizes,
 * reserved fields, flags. file_size is the size of the whole file (it must
 * equal payload_offset + payload_bytes). path only names the file in err. */
v4f_status v4f_kvfile_parse_fixed(const uint8_t buf[V4F_KVFILE_FIXED_BYTES], uint64_t file_size,
                                  const char *path, v4f_kvfile_header *h, v4f_err *err);

/* Read and fully check the header of an open file: the fixed part, the token
 * ids and the padding against header_hash and token_hash. On success
 * *tokens_out (if non-NULL) receives a malloc'd copy of the ids (caller
 * frees; NULL when n_tokens == 0). Does not read the payload. */
v4f_status v4f_kvfile_read_header(int fd, const char *path, v4f_kvfile_header *h,
                                  int32_t **tokens_out, v4f_err *err);

/* Only the fixed header (192 bytes) + file size check: cheap, used for scans.
 * header_hash is NOT verified (call v4f_kvfile_read_header before trusting). */
v4f_status v4f_kvfile_peek(int fd, const char *path, v4f_kvfile_header *h, v4f_err *err);

/* Check the header against what the caller runs: layout version and the model
 * fingerprint; with allow_family a different model with the same family
 * fingerprint is accepted. Returns V4F_STATUS_LAYOUT with a message naming
 * the mismatch. */
v4f_status v4f_kvfile_check_ident(const v4f_kvfile_header *h, const v4f_kv_ident *ident,
                                  bool allow_family, const char *path, v4f_err *err);

/* Write a complete checkpoint into fd (an empty regular file, e.g. a temp
 * file): payload from produce(), then header and ids, then fsync. On error
 * the file content is undefined (the caller unlinks it). *payload_bytes_out
 * (optional) gets the payload size. pwrite_fn may be NULL. */
v4f_status v4f_kvfile_write(int fd, const char *path, const v4f_kvfile_meta *meta,
                            v4f_kv_produce_fn produce, void *ud, v4f_kv_pwrite_fn pwrite_fn,
                            uint64_t *payload_bytes_out, v4f_err *err);

/* Stream the payload of a file whose header h was read by
 * v4f_kvfile_read_header into consume(), verifying the payload hash. consume
 * may be NULL (verify only). The payload is always hashed to its end, so a
 * damaged payload is reported as V4F_STATUS_FORMAT even when the consumer
 * failed first; a consumer that over-reads or leaves bytes unread of an
 * intact payload gets V4F_STATUS_LAYOUT. */
v4f_status v4f_kvfile_read_payload(int fd, const char *path, const v4f_kvfile_header *h,
                                   v4f_kv_consume_fn consume, void *ud, v4f_err *err);

/* As v4f_kvfile_read_payload; *damaged (optional) is set when the failure
 * proves the file itself is bad (checksum mismatch, truncation) as opposed
 * to an I/O error or a reader that does not fit the payload
 * (V4F_STATUS_LAYOUT: over-read or bytes left unread of an intact payload). */
v4f_status v4f_kvfile_read_payload_ex(int fd, const char *path, const v4f_kvfile_header *h,
                                      v4f_kv_consume_fn consume, void *ud, bool *damaged, v4f_err *err);

/* Header + payload check of a whole file (open, read, close). */
v4f_status v4f_kvfile_verify_path(const char *path, v4f_kvfile_header *h_out, v4f_err *err);

/* Rewrite the stats record in place (one 32-byte pwrite). */
v4f_status v4f_kvfile_stats_write(int fd, const char *path, const v4f_kvfile_header *h,
                                  uint32_t hits, uint64_t last_used_unix, v4f_err *err);

/* ---- the directory store (kvstore.c) ----------------------------------------- */

#define V4F_KVSTORE_NAME_MAX 96
#define V4F_KVSTORE_SESSION_NAME_MAX 64
#define V4F_KVSTORE_HALF_LIFE_S (6.0 * 3600.0) /* hit/recency decay (ds4's 6 h) */

typedef struct v4f_kvstore v4f_kvstore;

typedef struct v4f_kvstore_opts {
    uint64_t budget_bytes;       /* 0 = unlimited */
    bool create;                 /* mkdir the directory (parents too) if missing */
    bool quarantine;             /* rename bad files to NAME.bad (default true) */
    double half_life_s;          /* 0 = V4F_KVSTORE_HALF_LIFE_S */
    v4f_kv_pwrite_fn pwrite_fn;  /* tests only; NULL = pwrite */
    int64_t (*now_fn)(void);     /* tests only: unix seconds; NULL = time() */
} v4f_kvstore_opts;

void v4f_kvstore_opts_default(v4f_kvstore_opts *o);

/* Open (and with create, make) a store directory. Removes abandoned temp
 * files. Caller frees with v4f_kvstore_close. */
v4f_status v4f_kvstore_open(const char *dir, uint64_t budget_bytes, v4f_kvstore **out,
                            v4f_err *err);
v4f_status v4f_kvstore_open_opts(const char *dir, const v4f_kvstore_opts *opts,
                                 v4f_kvstore **out, v4f_err *err);
void v4f_kvstore_close(v4f_kvstore *s);
const char *v4f_kvstore_dir(const v4f_kvstore *s);

/* One entry of a directory scan. */
typedef struct v4f_kvstore_entry {
    char name[V4F_KVSTORE_NAME_MAX]; /* file name inside the directory */
    v4f_kvfile_header hdr;           /* fixed header (header_hash not yet verified) */
    uint64_t file_bytes;
    bool is_session;                 /* session-NAME.v4kv: pinned, never evicted */
    bool bad;                        /* could not be parsed; msg says why */
    v4f_status status;               /* why it is bad (FORMAT = damaged, UNSUPPORTED = newer, IO) */
    uint64_t dev, ino;               /* identity of the scanned inode (quarantine re-checks it) */
    bool is_reg;                     /* a regular file */
    char msg[160];
} v4f_kvstore_entry;

/* Scan every *.v4kv file (reads 192 bytes of each). *entries is malloc'd
 * (caller frees). Bad files are listed with bad = true. */
v4f_status v4f_kvstore_scan(v4f_kvstore *s, v4f_kvstore_entry **entries, size_t *n,
                            v4f_err *err);

typedef struct v4f_kvstore_lookup_opts {
    bool allow_family;   /* accept a different model of the same family */
    uint32_t min_tokens; /* ignore shorter entries (0 = any) */
    uint32_t max_ctx;    /* ignore entries written for a larger ctx (0 = any) */
} v4f_kvstore_lookup_opts;

typedef struct v4f_kvstore_match {
    char name[V4F_KVSTORE_NAME_MAX];
    v4f_kvfile_header hdr; /* fully verified header */
    uint32_t n_tokens;     /* == hdr.n_tokens: tokens[0..n_tokens) are reusable */
} v4f_kvstore_match;

/* Longest stored checkpoint whose token list is a prefix of tokens[0..n)
 * (including the whole query) and whose identity matches. The candidate's
 * header is fully verified; a bad one is reported, quarantined and the next
 * longest is tried (files whose fixed header is already malformed are
 * reported and quarantined during the scan). Returns V4F_STATUS_NOT_FOUND
 * when nothing applies. */
v4f_status v4f_kvstore_lookup(v4f_kvstore *s, const int32_t *tokens, uint32_t n,
                              const v4f_kv_ident *ident, const v4f_kvstore_lookup_opts *lo,
                              v4f_kvstore_match *match, v4f_err *err);

/* Longest checkpoint saved with a text hash whose text_bytes bytes are a prefix
 * of text[0..len) (hashed with XXH64 seed 0, the same function the caller
 * must use when saving: v4f_kvstore_xxh64_oneshot(text, text_bytes, 0)). */
v4f_status v4f_kvstore_lookup_text(v4f_kvstore *s, const char *text, size_t len,
                                   const v4f_kv_ident *ident, const v4f_kvstore_lookup_opts *lo,
                                   v4f_kvstore_match *match, v4f_err *err);

typedef struct v4f_kvstore_save_opts {
    uint32_t reason;            /* v4f_kv_reason */
    bool has_text;
    uint64_t text_hash, text_bytes;
    uint64_t payload_bytes_hint; /* expected payload size for the budget check; 0 = unknown */
    const char *session_name;   /* save as session-NAME.v4kv instead of by hash */
} v4f_kvstore_save_opts;

/* Save a checkpoint of tokens[0..n): temp file in the directory, payload
 * streamed from produce(), fsync, rename over NAME, fsync(dir), then evict
 * to the budget (never the file just written). A save whose hinted size
 * cannot fit the budget (with 1% slack) is skipped (V4F_STATUS_RANGE). On any
 * error no partial file remains. name_out (optional, V4F_KVSTORE_NAME_MAX)
 * receives the file name. */
v4f_status v4f_kvstore_save(v4f_kvstore *s, const int32_t *tokens, uint32_t n,
                            const v4f_kv_ident *ident, const v4f_kvstore_save_opts *so,
                            v4f_kv_produce_fn produce, void *ud, char *name_out,
                            v4f_err *err);

/* Load NAME: full header check, identity check, payload streamed into
 * consume() with hash verification. On success the hit count and last-used
 * time are updated. *tokens_out / *n_tokens_out (optional) receive the
 * stored ids (malloc'd, caller frees). A damaged file is reported
 * (V4F_STATUS_FORMAT) and quarantined. */
v4f_status v4f_kvstore_load(v4f_kvstore *s, const char *name, const v4f_kv_ident *ident,
                            bool allow_family, v4f_kv_consume_fn consume, void *ud,
                            int32_t **tokens_out, uint32_t *n_tokens_out, v4f_err *err);

/* File name of a named session ("session-NAME.v4kv"); NAME must be 1..64
 * characters of [A-Za-z0-9._-] not starting with '.'. */
v4f_status v4f_kvstore_session_file(const char *session, char out[V4F_KVSTORE_NAME_MAX],
                                    v4f_err *err);

/* Whether the store holds a file NAME (a plain file; NAME as
 * v4f_kvstore_session_file gives it). */
bool v4f_kvstore_has(v4f_kvstore *s, const char *name);

/* Named sessions are kept by one process at a time: two processes that
 * both kept session NAME would each overwrite the other's saves.
 * v4f_kvstore_session_claim takes an exclusive flock on DIR/.claim-NAME
 * (created on demand; hidden files are not entries) and holds it until the
 * store is closed or another claim of this store replaces it (the previous
 * one is released only once the new one is held). V4F_STATUS_BUSY when
 * another process holds NAME (the store's current claim stays);
 * V4F_STATUS_IO when the claim file cannot be created (a read-only store).
 * v4f_kvstore_session_busy: whether another process holds NAME now (this
 * store's own claim is not "busy"). */
v4f_status v4f_kvstore_session_claim(v4f_kvstore *s, const char *session, v4f_err *err);
bool v4f_kvstore_session_busy(v4f_kvstore *s, const char *session);

/* Remove NAME (under the lock). */
v4f_status v4f_kvstore_remove(v4f_kvstore *s, const char *name, v4f_err *err);

/* Evict unpinned entries with the lowest score until the total size fits
 * budget_bytes (0 = the store's budget; if both are 0 nothing happens).
 * protect (optional) names a file that is not evicted. Bad files are removed
 * first. *evicted_out counts removed files. */
v4f_status v4f_kvstore_gc(v4f_kvstore *s, uint64_t budget_bytes, const char *protect,
                          size_t *evicted_out, v4f_err *err);

/* Eviction score of an entry at time now (higher = keep):
 *   (base(reason) + hits) * 2^(-(now - last_used) / half_life)
 * base = 2 for cold/evict/shutdown/manual checkpoints, 1 otherwise. */
double v4f_kvstore_score(const v4f_kvfile_header *h, int64_t now_unix, double half_life_s);

/* ---- save policy (kvpolicy.c, pure functions) -------------------------------- */

typedef struct v4f_kv_policy {
    uint32_t min_tokens;          /* never save/load a shorter checkpoint (ds4: 512) */
    uint32_t cold_max_tokens;     /* cold saves for prompts up to this (30000; 0 = off) */
    uint32_t continued_interval;  /* continued frontier spacing (10000; 0 = off) */
    uint32_t boundary_trim;       /* cold save trims this tail (32) */
    uint32_t boundary_align;      /* ... and aligns down to this (2048) */
} v4f_kv_policy;

void v4f_kv_policy_default(v4f_kv_policy *p);

/* Length of a cold checkpoint for a prompt of n_prompt tokens that missed
 * every cache (n_reused == 0): n_prompt - trim aligned down to the alignment
 * when that stays >= min_tokens, else the whole prompt; 0 = no cold save
 * (too short, too long, disabled, or part of the prompt came from a cache). */
uint32_t v4f_kv_policy_cold_len(const v4f_kv_policy *p, uint32_t n_prompt, uint32_t n_reused);

/* Continued frontier spacing: the interval rounded up to the alignment
 * (10000 -> 10240); 0 when disabled. */
uint32_t v4f_kv_policy_continued_step(const v4f_kv_policy *p);

/* The first continued frontier f with from < f <= to (a multiple of the
 * step, f >= min_tokens); 0 if none. Iterate with from = f. */
uint32_t v4f_kv_policy_next_frontier(const v4f_kv_policy *p, uint32_t from, uint32_t to);

/* Save the live session of n_live tokens before it is replaced / on shutdown? */
bool v4f_kv_policy_save_live(const v4f_kv_policy *p, uint32_t n_live);

typedef struct v4f_kv_save_point {
    uint32_t pos;    /* save after the first pos tokens are in the KV */
    uint32_t reason; /* V4F_KV_REASON_COLD or _CONTINUED */
} v4f_kv_save_point;

/* All save points of one prefill of tokens (n_reused, n_prompt]: the cold
 * point (if any) and every continued frontier, ascending, without
 * duplicates. Returns the number of points (may exceed cap; only cap are
 * written). */
size_t v4f_kv_policy_plan_prefill(const v4f_kv_policy *p, uint32_t n_prompt, uint32_t n_reused,
                                  v4f_kv_save_point *out, size_t cap);

#endif /* V4F_KVSTORE_H */
