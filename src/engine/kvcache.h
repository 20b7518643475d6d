/*
 * kvcache.h - the engine's glue between sessions and the disk KV store
 * (issue 6): model/family fingerprints, the checkpoint identity, saving a
 * session snapshot (src/model/snapshot.c) as a checkpoint, restoring the
 * longest cached prefix of a prompt with fallback, and named sessions.
 *
 * Identity of a checkpoint (v4f_kv_ident):
 *   model_fp   XXH64 (two seeds -> 128 bits) of the GGUF metadata (every
 *              key, type and raw value bytes) and tensor directory (name,
 *              type, dims, byte size, offset, shard) of the main file and,
 *              when loaded, the MTP file: q2 and q4 files differ.
 *   family_fp  the same hash over only the deepseek4.* and tokenizer.* keys
 *              and the tensor names and shapes (no types, sizes, offsets):
 *              equal for quantizations of one model, so q2/q4 may share a
 *              checkpoint when the user asks (--kv-share-family).
 *   layout_version  V4F_SNAPSHOT_LAYOUT_VERSION * 16 + storage mode bits
 *              (bit 0 compact KV rows, bit 1 MTP block present): a payload
 *              written in another mode never matches a lookup.
 * Layouts are in docs/FORMATS.md ("Session snapshot payload").
 *
 * Failure policy: a checkpoint that cannot be restored (damaged, foreign,
 * wrong shape) is reported with v4f_log(WARN), the session is reset and the
 * caller falls back to prefill; the store quarantines damaged files.
 *
 * Ownership: the caller owns the store, the session and all buffers; outputs
 * that allocate say so. Threading: one thread per store and session.
 */
#ifndef V4F_ENGINE_KVCACHE_H
#define V4F_ENGINE_KVCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvstore/kvstore.h"
#include "model/forward.h"
#include "model/model.h"
#include "model/snapshot.h"

/* Fingerprints of an open model (see the banner). */
void v4f_kvcache_fingerprints(const v4f_model *m, v4f_kv_fp *model_fp, v4f_kv_fp *family_fp);

/* The identity checkpoints of this model + session mode carry. */
void v4f_kvcache_ident(const v4f_model *m, uint32_t n_ctx, bool compact, bool mtp,
                       v4f_kv_ident *out);

/* Default store directory: $V4F_KV_DIR, else $XDG_CACHE_HOME/v4flash/kv,
 * else $HOME/.cache/v4flash/kv, else ./.v4flash-kv. */
void v4f_kvcache_default_dir(char *out, size_t n);

/* Save the session (tokens[0..n) must be exactly what its KV holds, n ==
 * v4f_session_pos) with optional next-token logits and application blob.
 * session_name: save as a named (pinned) session instead of by prefix.
 * *seconds_out / *bytes_out (optional): time and payload size. */
v4f_status v4f_kvcache_save(v4f_kvstore *st, const v4f_kv_ident *id, v4f_session *s,
                            const int32_t *tokens, uint32_t n, const float *logits,
                            uint32_t n_logits, const void *app, uint32_t app_bytes,
                            uint32_t reason, const char *session_name, char *name_out,
                            double *seconds_out, uint64_t *bytes_out, v4f_err *err);

/* Whether a checkpoint of exactly tokens[0..n) for this identity is stored
 * (header verified; the payload is not read). Policy saves skip those. */
bool v4f_kvcache_has(v4f_kvstore *st, const v4f_kv_ident *id, const int32_t *tokens, uint32_t n);

typedef struct v4f_kvcache_hit {
    uint32_t n_tokens;  /* restored positions (0: nothing restored) */
    bool has_logits;    /* logits[] holds the next-token logits after them */
    char name[V4F_KVSTORE_NAME_MAX];
    double seconds;     /* lookup + restore time */
    uint64_t bytes;     /* payload bytes read */
    uint32_t rejected;  /* candidates that failed and were skipped */
} v4f_kvcache_hit;

/* Restore the longest stored prefix of tokens[0..n) (at least min_tokens)
 * into s. V4F_OK with hit->n_tokens == 0 when nothing usable was found (the
 * session is then reset); an error only for failures of the store itself
 * (e.g. an unreadable directory), also with the session reset. logits
 * (n_logits floats, optional) receives the stored next-token logits. */
v4f_status v4f_kvcache_restore_prefix(v4f_kvstore *st, const v4f_kv_ident *id, bool allow_family,
                                      uint32_t min_tokens, v4f_session *s, const int32_t *tokens,
                                      uint32_t n, float *logits, uint32_t n_logits,
                                      v4f_kvcache_hit *hit, v4f_err *err);

/* Restore the named session NAME. On success *tokens_out (malloc'd, caller
 * frees) / *n_tokens_out hold the ids in its KV, logits / app are filled as
 * in v4f_snapshot_read, info (optional) describes the snapshot.
 * V4F_STATUS_NOT_FOUND when there is no such session; other errors reset the
 * session. */
v4f_status v4f_kvcache_load_session(v4f_kvstore *st, const v4f_kv_ident *id, bool allow_family,
                                    const char *name, v4f_session *s, float *logits,
                                    uint32_t n_logits, void *app, uint32_t app_cap,
                                    v4f_snapshot_info *info, int32_t **tokens_out,
                                    uint32_t *n_tokens_out, v4f_err *err);

#endif /* V4F_ENGINE_KVCACHE_H */
