/*
 * snapshot.c - session snapshot serialize / restore (see snapshot.h; byte
 * layout in docs/FORMATS.md "Session snapshot payload").
 *
 * What a later token can read, and therefore what is stored (pos = the
 * number of evaluated positions of the layer's stream; the MTP block uses
 * mtp_pos):
 *  - raw window: positions max(0, pos - n_swa) .. pos - 1, ring slot
 *    q % n_swa; written oldest -> newest as one or two contiguous runs.
 *  - compressed rows 0 .. pos/ratio - 1 and (ratio 4) indexer rows, the
 *    stored bytes as they are (REF float32 or COMPACT codes).
 *  - compressor frontier: the ratio-4 (overlapping) compressor keeps the
 *    previous window in slots [0, 4) and fills slots [4, 4 + pos % 4); the
 *    ratio-128 one fills [0, pos % 128). Only slots [0, n_slots) are stored,
 *    n_slots = (ratio == 4 ? 4 : 0) + pos % ratio, values then scores; the
 *    other slots are rewritten before any read, so a restore leaves them in
 *    the reset state (0 / -inf) and the next pooled row is bit-identical.
 *
 * Invariants: nothing in the session is modified before the header checks
 * pass; any later failure resets the session. Every count read from the
 * stream is compared with the value the session's geometry implies before
 * it is used as a size. Ownership/threading: see snapshot.h.
 */
#include "model/snapshot.h"

#include <stdlib.h>
#include <string.h>

#include "model/kv.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "snapshots are little-endian");

/* ---- helpers -------------------------------------------------------------- */

static uint32_t coff_of(uint32_t ratio) { return ratio == 4 ? 2 : 1; }

static uint32_t frontier_slots(uint32_t ratio, uint32_t pos) {
    if (!ratio) return 0;
    return (ratio == 4 ? ratio : 0) + pos % ratio;
}

static uint32_t n_layers_of(const v4f_kv *kv) { return kv->n_layer + (kv->has_mtp ? 1 : 0); }

/* The expected shape of one layer record at position pos. */
typedef struct layer_shape {
    uint32_t ratio, n_raw, n_comp, n_idx, c_slots, c_width, i_slots, i_width;
} layer_shape;

static layer_shape shape_of(const v4f_kv *kv, uint32_t ratio, uint32_t pos) {
    layer_shape sh = {0};
    sh.ratio = ratio;
    sh.n_raw = pos < kv->n_swa ? pos : kv->n_swa;
    if (ratio) {
        sh.n_comp = pos / ratio;
        sh.c_slots = frontier_slots(ratio, pos);
        sh.c_width = coff_of(ratio) * kv->hd;
        if (ratio == 4) {
            sh.n_idx = pos / 4;
            sh.i_slots = sh.c_slots;
            sh.i_width = coff_of(ratio) * kv->idx_hd;
        }
    }
    return sh;
}

static uint64_t layer_payload_bytes(const v4f_kv *kv, const layer_shape *sh) {
    return V4F_SNAPSHOT_LAYER_BYTES + (uint64_t)sh->n_raw * kv->hd * 4 +
           (uint64_t)sh->n_comp * kv->comp_row_bytes + (uint64_t)sh->n_idx * kv->idx_row_bytes +
           2ull * sh->c_slots * sh->c_width * 4 + 2ull * sh->i_slots * sh->i_width * 4;
}

static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static uint32_t get32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

uint64_t v4f_snapshot_size(v4f_session *s, uint32_t n_logits, uint32_t app_bytes) {
    const v4f_kv *kv = v4f_session_kv(s);
    if (!kv) return 0; /* GPU session whose host mirror could not be allocated */
    uint32_t pos = v4f_session_pos(s), mpos = v4f_session_mtp_pos(s);
    uint64_t t = V4F_SNAPSHOT_HEADER_BYTES + 8 + app_bytes;
    for (uint32_t l = 0; l < n_layers_of(kv); l++) {
        layer_shape sh = shape_of(kv, kv->layers[l].ratio, l < kv->n_layer ? pos : mpos);
        t += layer_payload_bytes(kv, &sh);
    }
    return t + (uint64_t)n_logits * 4 + 8;
}

/* ---- write ------------------------------------------------------------------ */

static v4f_status write_layer(const v4f_kv *kv, const v4f_kv_layer *L, uint32_t pos,
                              v4f_snapshot_write_fn wr, void *ud, v4f_err *err) {
    layer_shape sh = shape_of(kv, L->ratio, pos);
    uint8_t h[V4F_SNAPSHOT_LAYER_BYTES];
    const uint32_t f[8] = {sh.ratio, sh.n_raw, sh.n_comp, sh.n_idx,
                           sh.c_slots, sh.c_width, sh.i_slots, sh.i_width};
    for (int i = 0; i < 8; i++) put32(h + 4 * i, f[i]);
    v4f_status st = wr(ud, h, sizeof h, err);
    if (st) return st;
    /* raw window, oldest first: one or two contiguous runs of the ring */
    if (sh.n_raw) {
        uint32_t lo = pos - sh.n_raw, s0 = lo % kv->n_swa;
        uint32_t first = kv->n_swa - s0 < sh.n_raw ? kv->n_swa - s0 : sh.n_raw;
        size_t row = (size_t)kv->hd * sizeof(float);
        st = wr(ud, L->raw + (size_t)s0 * kv->hd, first * row, err);
        if (!st && sh.n_raw > first) st = wr(ud, L->raw, (sh.n_raw - first) * row, err);
        if (st) return st;
    }
    if (sh.n_comp) {
        V4F_ASSERT(L->n_comp == sh.n_comp);
        st = wr(ud, L->comp, (size_t)sh.n_comp * kv->comp_row_bytes, err);
        if (st) return st;
    }
    if (sh.n_idx) {
        V4F_ASSERT(L->n_idx == sh.n_idx);
        st = wr(ud, L->idx, (size_t)sh.n_idx * kv->idx_row_bytes, err);
        if (st) return st;
    }
    if (sh.c_slots) {
        size_t b = (size_t)sh.c_slots * sh.c_width * sizeof(float);
        st = wr(ud, L->c_kv, b, err);
        if (!st) st = wr(ud, L->c_sc, b, err);
        if (st) return st;
    }
    if (sh.i_slots) {
        size_t b = (size_t)sh.i_slots * sh.i_width * sizeof(float);
        st = wr(ud, L->i_kv, b, err);
        if (!st) st = wr(ud, L->i_sc, b, err);
        if (st) return st;
    }
    return V4F_OK;
}

v4f_status v4f_snapshot_write(v4f_session *s, const float *logits, uint32_t n_logits,
                              const void *app, uint32_t app_bytes, v4f_snapshot_write_fn wr,
                              void *ud, v4f_err *err) {
    const v4f_kv *kv = v4f_session_kv(s);
    if (!kv) return v4f_err_set(err, V4F_STATUS_OOM, "snapshot: no host copy of the KV cache");
    v4f_status sst = v4f_session_kv_sync(s, true, err); /* GPU sessions: device -> host mirror */
    if (sst) return sst;
    if (!logits) n_logits = 0;
    if (n_logits > V4F_SNAPSHOT_LOGITS_MAX || app_bytes > V4F_SNAPSHOT_APP_MAX ||
        (app_bytes && !app))
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "snapshot: bad logits/app arguments");
    uint32_t pos = v4f_session_pos(s), mpos = v4f_session_mtp_pos(s);
    uint32_t flags = (kv->compact ? V4F_SNAPSHOT_FLAG_COMPACT : 0) |
                     (kv->has_mtp ? V4F_SNAPSHOT_FLAG_MTP : 0) |
                     (n_logits ? V4F_SNAPSHOT_FLAG_LOGITS : 0);
    uint8_t h[V4F_SNAPSHOT_HEADER_BYTES + 8];
    memset(h, 0, sizeof h);
    memcpy(h, V4F_SNAPSHOT_MAGIC, 8);
    const uint32_t f[14] = {V4F_SNAPSHOT_LAYOUT_VERSION, V4F_SNAPSHOT_HEADER_BYTES, flags,
                            kv->n_layer, kv->n_swa, kv->hd, kv->n_rot, kv->idx_hd,
                            (uint32_t)kv->comp_row_bytes, (uint32_t)kv->idx_row_bytes, pos, mpos,
                            (uint32_t)kv->n_ctx, n_logits};
    for (int i = 0; i < 14; i++) put32(h + 8 + 4 * i, f[i]);
    put32(h + 64, app_bytes); /* + u32 reserved (0) */
    v4f_status st = wr(ud, h, sizeof h, err);
    if (!st && app_bytes) st = wr(ud, app, app_bytes, err);
    for (uint32_t l = 0; !st && l < n_layers_of(kv); l++)
        st = write_layer(kv, &kv->layers[l], l < kv->n_layer ? pos : mpos, wr, ud, err);
    if (!st && n_logits) st = wr(ud, logits, (size_t)n_logits * sizeof(float), err);
    if (!st) st = wr(ud, V4F_SNAPSHOT_TRAILER, 8, err);
    return st;
}

/* ---- read -------------------------------------------------------------------- */

typedef struct reader {
    v4f_snapshot_read_fn rd;
    void *ud;
    uint64_t n;
} reader;

static v4f_status rd_bytes(reader *r, void *buf, size_t n, v4f_err *err) {
    if (!n) return V4F_OK;
    v4f_status st = r->rd(r->ud, buf, n, err);
    if (!st) r->n += n;
    return st;
}

static v4f_status rd_skip(reader *r, uint64_t n, v4f_err *err) {
    uint8_t tmp[16384];
    while (n) {
        size_t k = n < sizeof tmp ? (size_t)n : sizeof tmp;
        v4f_status st = rd_bytes(r, tmp, k, err);
        if (st) return st;
        n -= k;
    }
    return V4F_OK;
}

static v4f_status read_layer(const v4f_kv *kv, v4f_kv_layer *L, uint32_t l, uint32_t ratio,
                             uint32_t pos, bool discard, reader *r, v4f_err *err) {
    uint8_t h[V4F_SNAPSHOT_LAYER_BYTES];
    v4f_status st = rd_bytes(r, h, sizeof h, err);
    if (st) return st;
    layer_shape want = shape_of(kv, ratio, pos);
    const uint32_t w[8] = {want.ratio, want.n_raw, want.n_comp, want.n_idx,
                           want.c_slots, want.c_width, want.i_slots, want.i_width};
    static const char *const names[8] = {"compress ratio", "window rows", "compressed rows",
                                         "indexer rows", "frontier slots", "frontier width",
                                         "indexer frontier slots", "indexer frontier width"};
    for (int i = 0; i < 8; i++)
        if (get32(h + 4 * i) != w[i])
            return v4f_err_set(err, V4F_STATUS_LAYOUT,
                               "snapshot layer %u: %s %u, expected %u at position %u", l, names[i],
                               get32(h + 4 * i), w[i], pos);
    if (discard) return rd_skip(r, layer_payload_bytes(kv, &want) - V4F_SNAPSHOT_LAYER_BYTES, err);
    if (want.n_comp > L->comp_cap)
        return v4f_err_set(err, V4F_STATUS_RANGE, "snapshot layer %u: %u compressed rows exceed "
                           "the capacity %u", l, want.n_comp, L->comp_cap);
    if (want.n_raw) {
        uint32_t lo = pos - want.n_raw, s0 = lo % kv->n_swa;
        uint32_t first = kv->n_swa - s0 < want.n_raw ? kv->n_swa - s0 : want.n_raw;
        size_t row = (size_t)kv->hd * sizeof(float);
        st = rd_bytes(r, L->raw + (size_t)s0 * kv->hd, first * row, err);
        if (!st && want.n_raw > first) st = rd_bytes(r, L->raw, (want.n_raw - first) * row, err);
        if (st) return st;
    }
    st = rd_bytes(r, L->comp, (size_t)want.n_comp * kv->comp_row_bytes, err);
    if (!st) st = rd_bytes(r, L->idx, (size_t)want.n_idx * kv->idx_row_bytes, err);
    if (st) return st;
    L->n_comp = want.n_comp;
    L->n_idx = want.n_idx;
    size_t cb = (size_t)want.c_slots * want.c_width * sizeof(float);
    size_t ib = (size_t)want.i_slots * want.i_width * sizeof(float);
    if (cb) {
        st = rd_bytes(r, L->c_kv, cb, err);
        if (!st) st = rd_bytes(r, L->c_sc, cb, err);
    }
    if (!st && ib) {
        st = rd_bytes(r, L->i_kv, ib, err);
        if (!st) st = rd_bytes(r, L->i_sc, ib, err);
    }
    return st;
}

static v4f_status read_body(v4f_session *s, const uint8_t *h, float *logits, uint32_t n_logits,
                            void *app, uint32_t app_cap, v4f_snapshot_info *info, reader *r,
                            v4f_err *err) {
    v4f_kv *kv = v4f_session_kv(s);
    if (!kv) return v4f_err_set(err, V4F_STATUS_OOM, "snapshot: no host copy of the KV cache");
    /* header fields (after the 8-byte magic) */
    uint32_t version = get32(h + 8), hbytes = get32(h + 12), flags = get32(h + 16);
    uint32_t n_layer = get32(h + 20), n_swa = get32(h + 24), hd = get32(h + 28);
    uint32_t n_rot = get32(h + 32), idx_hd = get32(h + 36), crb = get32(h + 40);
    uint32_t irb = get32(h + 44), pos = get32(h + 48), mpos = get32(h + 52);
    uint32_t wctx = get32(h + 56), nlog = get32(h + 60);
    uint32_t app_bytes = get32(h + 64), reserved = get32(h + 68);
    info->layout_version = version;
    info->flags = flags;
    info->n_layer = n_layer;
    info->pos = pos;
    info->mtp_pos = mpos;
    info->n_ctx = wctx;
    info->n_logits = (flags & V4F_SNAPSHOT_FLAG_LOGITS) ? nlog : 0;
    info->app_bytes = app_bytes;
    if (version != V4F_SNAPSHOT_LAYOUT_VERSION)
        return v4f_err_set(err, V4F_STATUS_UNSUPPORTED,
                           "snapshot layout version %u; this build reads version %u", version,
                           V4F_SNAPSHOT_LAYOUT_VERSION);
    if (hbytes != V4F_SNAPSHOT_HEADER_BYTES || reserved != 0)
        return v4f_err_set(err, V4F_STATUS_FORMAT, "snapshot header is malformed");
    if (flags & ~V4F_SNAPSHOT_KNOWN_FLAGS)
        return v4f_err_set(err, V4F_STATUS_UNSUPPORTED, "snapshot has unknown flags 0x%x", flags);
    if (app_bytes > V4F_SNAPSHOT_APP_MAX || nlog > V4F_SNAPSHOT_LOGITS_MAX ||
        (!(flags & V4F_SNAPSHOT_FLAG_LOGITS) && nlog) ||
        ((flags & V4F_SNAPSHOT_FLAG_LOGITS) && !nlog))
        return v4f_err_set(err, V4F_STATUS_FORMAT, "snapshot header has bad logits/app sizes");
    if (n_layer != kv->n_layer || n_swa != kv->n_swa || hd != kv->hd || n_rot != kv->n_rot ||
        idx_hd != kv->idx_hd)
        return v4f_err_set(err, V4F_STATUS_LAYOUT,
                           "snapshot geometry (layers %u, window %u, head dim %u/%u, indexer dim "
                           "%u) differs from the model's (%u, %u, %u/%u, %u)",
                           n_layer, n_swa, hd, n_rot, idx_hd, kv->n_layer, kv->n_swa, kv->hd,
                           kv->n_rot, kv->idx_hd);
    bool compact = (flags & V4F_SNAPSHOT_FLAG_COMPACT) != 0;
    if (compact != kv->compact)
        return v4f_err_set(err, V4F_STATUS_LAYOUT,
                           "snapshot stores %s KV rows but this session uses %s rows (use the "
                           "same --precision)", compact ? "compact FP8/FP4" : "float32 (ref)",
                           kv->compact ? "compact FP8/FP4" : "float32 (ref)");
    if (crb != kv->comp_row_bytes || irb != kv->idx_row_bytes)
        return v4f_err_set(err, V4F_STATUS_LAYOUT, "snapshot row sizes %u/%u differ from %llu/%llu",
                           crb, irb, (unsigned long long)kv->comp_row_bytes,
                           (unsigned long long)kv->idx_row_bytes);
    if (pos > kv->n_ctx || mpos > kv->n_ctx)
        return v4f_err_set(err, V4F_STATUS_RANGE,
                           "snapshot holds %u positions (written with a %u-token context) but "
                           "this session's context is %llu tokens; use --ctx %u or more",
                           pos > mpos ? pos : mpos, wctx, (unsigned long long)kv->n_ctx,
                           pos > mpos ? pos : mpos);
    bool snap_mtp = (flags & V4F_SNAPSHOT_FLAG_MTP) != 0;
    if (kv->has_mtp && !snap_mtp)
        return v4f_err_set(err, V4F_STATUS_LAYOUT,
                           "snapshot has no MTP state but this session has an MTP block");
    if (!snap_mtp && mpos)
        return v4f_err_set(err, V4F_STATUS_FORMAT, "snapshot has an MTP position without MTP state");
    if (info->n_logits && logits && info->n_logits != n_logits)
        return v4f_err_set(err, V4F_STATUS_LAYOUT, "snapshot has %u logits, the model has %u",
                           info->n_logits, n_logits);
    /* from here on the session is modified */
    v4f_session_reset(s);
    uint32_t keep = app && app_bytes > app_cap ? app_cap : app_bytes;
    v4f_status st = app ? rd_bytes(r, app, keep, err) : V4F_OK;
    if (!st) st = rd_skip(r, app_bytes - (app ? keep : 0), err);
    for (uint32_t l = 0; !st && l < kv->n_layer; l++)
        st = read_layer(kv, &kv->layers[l], l, kv->layers[l].ratio, pos, false, r, err);
    if (!st && snap_mtp)
        st = read_layer(kv, kv->has_mtp ? &kv->layers[kv->n_layer] : NULL, kv->n_layer, 0, mpos,
                        !kv->has_mtp, r, err);
    if (!st && info->n_logits) {
        if (logits) st = rd_bytes(r, logits, (size_t)n_logits * sizeof(float), err);
        else st = rd_skip(r, (uint64_t)info->n_logits * 4, err);
    }
    uint8_t tr[8];
    if (!st) st = rd_bytes(r, tr, 8, err);
    if (!st && memcmp(tr, V4F_SNAPSHOT_TRAILER, 8) != 0)
        st = v4f_err_set(err, V4F_STATUS_FORMAT, "snapshot trailer is missing");
    if (!st) st = v4f_session_restore_pos(s, pos, kv->has_mtp ? mpos : 0, err);
    return st;
}

v4f_status v4f_snapshot_read(v4f_session *s, float *logits, uint32_t n_logits, void *app,
                             uint32_t app_cap, v4f_snapshot_info *info, v4f_snapshot_read_fn rd,
                             void *ud, v4f_err *err) {
    v4f_snapshot_info tmp;
    if (!info) info = &tmp;
    memset(info, 0, sizeof *info);
    reader r = {rd, ud, 0};
    uint8_t h[V4F_SNAPSHOT_HEADER_BYTES + 8];
    v4f_status st = rd_bytes(&r, h, sizeof h, err);
    if (!st && memcmp(h, V4F_SNAPSHOT_MAGIC, 8) != 0)
        st = v4f_err_set(err, V4F_STATUS_FORMAT, "not a v4flash session snapshot (bad magic)");
    if (!st) st = read_body(s, h, logits, n_logits, app, app_cap, info, &r, err);
    info->payload_bytes = r.n;
    if (st) v4f_session_reset(s);
    return st;
}

/* ---- in memory ------------------------------------------------------------------ */

static v4f_status mem_write(void *ud, const void *buf, size_t n, v4f_err *err) {
    v4f_snapshot_mem *m = ud;
    if (n > m->cap - m->len)
        return v4f_err_set(err, V4F_STATUS_RANGE, "snapshot larger than its computed size");
    memcpy(m->data + m->len, buf, n);
    m->len += n;
    return V4F_OK;
}

static v4f_status mem_read(void *ud, void *buf, size_t n, v4f_err *err) {
    v4f_snapshot_mem *m = ud;
    if (n > m->len - m->off)
        return v4f_err_set(err, V4F_STATUS_FORMAT, "snapshot is truncated");
    memcpy(buf, m->data + m->off, n);
    m->off += n;
    return V4F_OK;
}

v4f_status v4f_snapshot_mem_save(v4f_session *s, const float *logits, uint32_t n_logits,
                                 v4f_snapshot_mem *m, v4f_err *err) {
    uint64_t need = v4f_snapshot_size(s, logits ? n_logits : 0, 0);
    if (need > SIZE_MAX) return v4f_err_set(err, V4F_STATUS_OOM, "snapshot too large");
    if (m->cap < need) {
        uint8_t *p = realloc(m->data, (size_t)need);
        if (!p)
            return v4f_err_set(err, V4F_STATUS_OOM, "cannot allocate %llu bytes for a snapshot",
                               (unsigned long long)need);
        m->data = p;
        m->cap = (size_t)need;
    }
    m->len = m->off = 0;
    return v4f_snapshot_write(s, logits, n_logits, NULL, 0, mem_write, m, err);
}

v4f_status v4f_snapshot_mem_load(v4f_session *s, v4f_snapshot_mem *m, float *logits,
                                 uint32_t n_logits, v4f_err *err) {
    m->off = 0;
    v4f_status st = v4f_snapshot_read(s, logits, n_logits, NULL, 0, NULL, mem_read, m, err);
    if (!st && m->off != m->len) {
        v4f_session_reset(s);
        st = v4f_err_set(err, V4F_STATUS_FORMAT, "snapshot has %zu trailing bytes", m->len - m->off);
    }
    return st;
}

void v4f_snapshot_mem_free(v4f_snapshot_mem *m) {
    free(m->data);
    memset(m, 0, sizeof *m);
}
