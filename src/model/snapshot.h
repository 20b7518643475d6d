/*
 * snapshot.h - serialize and restore the complete state of an inference
 * session (issue 6.1): position (+ MTP position), every layer's raw window
 * rows in logical order (oldest -> newest, only the valid ones), the
 * compressed and indexer rows exactly as stored (REF float32 or COMPACT
 * FP8/FP4 codes; the mode is recorded), the compressor frontier slots that
 * a later token can still read, the MTP block's window, optional
 * next-token logits and an optional application blob (chat flags).
 *
 * The byte layout (V4F_SNAPSHOT_LAYOUT_VERSION) is documented in
 * docs/FORMATS.md "Session snapshot payload". This module knows nothing
 * about files: bytes go through a caller-supplied write/read callback
 * (src/engine/kvcache.c adapts them to the disk KV store; the in-memory
 * helpers below serve `bench`). Rows are streamed straight from / into the
 * KV buffers, so saving or restoring allocates nothing.
 *
 * Guarantee: restoring a snapshot into a fresh session created with the
 * same model and options gives bitwise-equal next-token logits and
 * identical continuations on the CPU backend (tests/unit/test_snapshot.c).
 * A restore validates every size against the session (geometry, storage
 * mode, context capacity, per-layer row counts, which follow from the
 * position) before it touches the cache; on any failure the session is
 * reset to position 0 and the error says why. A damaged snapshot never
 * crashes: at worst it restores wrong-but-valid-shaped rows, which is why
 * the disk store checksums the payload and callers treat the state as
 * tentative until the checksum verified.
 *
 * Ownership: the session stays owned by the caller; the callbacks borrow
 * the buffers only for the duration of the call. v4f_snapshot_mem owns its
 * buffer (free with v4f_snapshot_mem_free).
 * Threading: like the session (one thread at a time).
 */
#ifndef V4F_SNAPSHOT_H
#define V4F_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/forward.h"

#define V4F_SNAPSHOT_MAGIC "V4FSNAP" /* 8 bytes with the NUL */
#define V4F_SNAPSHOT_TRAILER "V4FSEND" /* 8 bytes with the NUL */
#define V4F_SNAPSHOT_LAYOUT_VERSION 1u
#define V4F_SNAPSHOT_HEADER_BYTES 64u
#define V4F_SNAPSHOT_LAYER_BYTES 32u
#define V4F_SNAPSHOT_APP_MAX (1u << 20)      /* application blob limit */
#define V4F_SNAPSHOT_LOGITS_MAX (1u << 24)   /* logits count limit */

#define V4F_SNAPSHOT_FLAG_COMPACT 1u /* compressed/indexer rows in FP8/FP4 code form */
#define V4F_SNAPSHOT_FLAG_MTP 2u     /* an MTP block record follows the main layers */
#define V4F_SNAPSHOT_FLAG_LOGITS 4u  /* n_logits floats of next-token logits follow */
#define V4F_SNAPSHOT_KNOWN_FLAGS 7u

/* Write n bytes (all of them, or fail with a status + message). */
typedef v4f_status (*v4f_snapshot_write_fn)(void *ud, const void *buf, size_t n, v4f_err *err);
/* Read exactly n bytes (a short read is an error). */
typedef v4f_status (*v4f_snapshot_read_fn)(void *ud, void *buf, size_t n, v4f_err *err);

/* What a snapshot holds (filled by v4f_snapshot_read, also on most errors
 * once the header was read). */
typedef struct v4f_snapshot_info {
    uint32_t layout_version;
    uint32_t flags;
    uint32_t n_layer;
    uint32_t pos, mtp_pos;
    uint32_t n_ctx;    /* the writer's context size (informational) */
    uint32_t n_logits; /* 0 when no logits are stored */
    uint32_t app_bytes;
    uint64_t payload_bytes; /* bytes read */
} v4f_snapshot_info;

/* Exact payload size v4f_snapshot_write produces for this session now. */
uint64_t v4f_snapshot_size(v4f_session *s, uint32_t n_logits, uint32_t app_bytes);

/* Serialize the session. logits (optional, n_logits floats: the next-token
 * logits after the last position) and app (optional, app_bytes <=
 * V4F_SNAPSHOT_APP_MAX) are stored as given. */
v4f_status v4f_snapshot_write(v4f_session *s, const float *logits, uint32_t n_logits,
                              const void *app, uint32_t app_bytes, v4f_snapshot_write_fn wr,
                              void *ud, v4f_err *err);

/* Restore into s (any current state is discarded). logits (optional)
 * receives the stored logits when the snapshot has them and n_logits
 * matches (a different count is a V4F_STATUS_LAYOUT error; a snapshot
 * without logits leaves the buffer alone: check info->n_logits). app
 * (optional) receives min(app_bytes, app_cap) bytes. A snapshot with an
 * MTP record restores into a session without MTP (the record is skipped);
 * the reverse is a V4F_STATUS_LAYOUT error. On error the session is reset. */
v4f_status v4f_snapshot_read(v4f_session *s, float *logits, uint32_t n_logits, void *app,
                             uint32_t app_cap, v4f_snapshot_info *info, v4f_snapshot_read_fn rd,
                             void *ud, v4f_err *err);

/* ---- in-memory snapshots (bench probes, tests) ------------------------------ */

typedef struct v4f_snapshot_mem {
    uint8_t *data;
    size_t len; /* bytes written */
    size_t cap;
    size_t off; /* read cursor */
} v4f_snapshot_mem;

/* Snapshot into m (buffer (re)allocated to the exact size; V4F_STATUS_OOM
 * if that fails). */
v4f_status v4f_snapshot_mem_save(v4f_session *s, const float *logits, uint32_t n_logits,
                                 v4f_snapshot_mem *m, v4f_err *err);
/* Restore from m (m is not modified except its read cursor). */
v4f_status v4f_snapshot_mem_load(v4f_session *s, v4f_snapshot_mem *m, float *logits,
                                 uint32_t n_logits, v4f_err *err);
void v4f_snapshot_mem_free(v4f_snapshot_mem *m);

#endif /* V4F_SNAPSHOT_H */
