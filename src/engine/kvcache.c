/*
 * kvcache.c - fingerprints, checkpoint identity and the save / restore glue
 * between session snapshots and the disk KV store (see kvcache.h).
 *
 * Snapshot bytes flow straight between the KV buffers and the store's
 * streaming sink/source (no staging copy here); the store hashes the payload
 * on the way and verifies it after the whole payload was read, so a restore
 * is only accepted once v4f_kvstore_load returned OK.
 *
 * Ownership: nothing is retained between calls. Threading: see kvcache.h.
 */
#include "engine/kvcache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- fingerprints ------------------------------------------------------------- */

typedef struct fp_state {
    v4f_kvstore_xxh64 a, b;
} fp_state;

static void fp_init(fp_state *f, const char *domain) {
    v4f_kvstore_xxh64_init(&f->a, 0x76346621u);
    v4f_kvstore_xxh64_init(&f->b, 0x9E3779B97F4A7C15ull);
    v4f_kvstore_xxh64_update(&f->a, domain, strlen(domain));
    v4f_kvstore_xxh64_update(&f->b, domain, strlen(domain));
}

static void fp_put(fp_state *f, const void *p, size_t n) {
    v4f_kvstore_xxh64_update(&f->a, p, n);
    v4f_kvstore_xxh64_update(&f->b, p, n);
}

static void fp_u64(fp_state *f, uint64_t v) { fp_put(f, &v, 8); }

static void fp_str(fp_state *f, v4f_str s) {
    fp_u64(f, s.len);
    fp_put(f, s.ptr, s.len);
}

static bool has_prefix(v4f_str s, const char *p) {
    size_t n = strlen(p);
    return s.len >= n && !memcmp(s.ptr, p, n);
}

/* family: only architecture / tokenizer keys and tensor names + shapes */
static void fp_gguf(fp_state *f, const v4f_gguf *g, bool family) {
    if (!g) {
        fp_u64(f, 0);
        return;
    }
    uint64_t nkv = v4f_gguf_n_kv(g), nt = v4f_gguf_n_tensors(g);
    fp_u64(f, 1);
    for (uint64_t i = 0; i < nkv; i++) {
        const v4f_gguf_kv *kv = v4f_gguf_kv_at(g, i);
        if (family && !has_prefix(kv->key, "deepseek4.") && !has_prefix(kv->key, "tokenizer."))
            continue;
        fp_str(f, kv->key);
        fp_u64(f, kv->type);
        fp_u64(f, kv->type == V4F_GGUF_ARRAY ? ((uint64_t)kv->arr_type << 32 | 1) : 0);
        fp_u64(f, kv->type == V4F_GGUF_ARRAY ? kv->arr_n : 0);
        fp_u64(f, kv->val_bytes);
        fp_put(f, kv->val, (size_t)kv->val_bytes);
    }
    fp_u64(f, nt);
    for (uint64_t i = 0; i < nt; i++) {
        const v4f_gguf_tensor *t = v4f_gguf_tensor_at(g, i);
        fp_str(f, t->name);
        fp_u64(f, t->n_dims);
        for (int d = 0; d < V4F_GGUF_MAX_DIMS; d++) fp_u64(f, t->ne[d]);
        if (!family) {
            fp_u64(f, t->type);
            fp_u64(f, t->n_bytes);
            fp_u64(f, t->file_offset);
            fp_u64(f, t->shard);
        }
    }
}

void v4f_kvcache_fingerprints(const v4f_model *m, v4f_kv_fp *model_fp, v4f_kv_fp *family_fp) {
    fp_state f;
    if (model_fp) {
        fp_init(&f, "v4flash model fp 1");
        fp_gguf(&f, m->gguf, false);
        fp_gguf(&f, m->mtp_gguf, false);
        model_fp->lo = v4f_kvstore_xxh64_digest(&f.a);
        model_fp->hi = v4f_kvstore_xxh64_digest(&f.b);
    }
    if (family_fp) {
        fp_init(&f, "v4flash family fp 1");
        fp_gguf(&f, m->gguf, true);
        fp_gguf(&f, m->mtp_gguf, true);
        family_fp->lo = v4f_kvstore_xxh64_digest(&f.a);
        family_fp->hi = v4f_kvstore_xxh64_digest(&f.b);
    }
}

void v4f_kvcache_ident(const v4f_model *m, uint32_t n_ctx, bool compact, bool mtp,
                       v4f_kv_ident *out) {
    memset(out, 0, sizeof *out);
    v4f_kvcache_fingerprints(m, &out->model_fp, &out->family_fp);
    out->layout_version = V4F_SNAPSHOT_LAYOUT_VERSION * 16u + (compact ? 1u : 0u) + (mtp ? 2u : 0u);
    out->n_ctx = n_ctx;
}

void v4f_kvcache_default_dir(char *out, size_t n) {
    const char *e = getenv("V4F_KV_DIR");
    if (e && *e) {
        snprintf(out, n, "%s", e);
        return;
    }
    e = getenv("XDG_CACHE_HOME");
    if (e && *e) {
        snprintf(out, n, "%s/v4flash/kv", e);
        return;
    }
    e = getenv("HOME");
    if (e && *e) snprintf(out, n, "%s/.cache/v4flash/kv", e);
    else snprintf(out, n, "./.v4flash-kv");
}

/* ---- save ------------------------------------------------------------------------- */

typedef struct produce_ctx {
    v4f_session *s;
    const float *logits;
    uint32_t n_logits;
    const void *app;
    uint32_t app_bytes;
} produce_ctx;

static v4f_status sink_wr(void *ud, const void *buf, size_t n, v4f_err *err) {
    v4f_status st = v4f_kv_sink_write(ud, buf, n);
    if (st) return v4f_err_set(err, st, "writing the snapshot payload failed");
    return V4F_OK;
}

static v4f_status produce(void *ud, v4f_kv_sink *sink, v4f_err *err) {
    produce_ctx *c = ud;
    return v4f_snapshot_write(c->s, c->logits, c->n_logits, c->app, c->app_bytes, sink_wr, sink,
                              err);
}

v4f_status v4f_kvcache_save(v4f_kvstore *st, const v4f_kv_ident *id, v4f_session *s,
                            const int32_t *tokens, uint32_t n, const float *logits,
                            uint32_t n_logits, const void *app, uint32_t app_bytes,
                            uint32_t reason, const char *session_name, char *name_out,
                            double *seconds_out, uint64_t *bytes_out, v4f_err *err) {
    if (n != v4f_session_pos(s))
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG,
                           "kv save: %u token ids given but the session holds %u positions", n,
                           v4f_session_pos(s));
    double t0 = v4f_time_s();
    produce_ctx c = {s, logits, logits ? n_logits : 0, app, app_bytes};
    v4f_kvstore_save_opts so = {.reason = reason,
                                .payload_bytes_hint = v4f_snapshot_size(s, c.n_logits, app_bytes),
                                .session_name = session_name};
    v4f_status r = v4f_kvstore_save(st, tokens, n, id, &so, produce, &c, name_out, err);
    if (seconds_out) *seconds_out = v4f_time_s() - t0;
    if (bytes_out) *bytes_out = so.payload_bytes_hint;
    return r;
}

bool v4f_kvcache_has(v4f_kvstore *st, const v4f_kv_ident *id, const int32_t *tokens, uint32_t n) {
    if (n == 0) return false;
    v4f_kvstore_lookup_opts lo = {.min_tokens = n};
    v4f_kvstore_match mt;
    v4f_err e = {0};
    return v4f_kvstore_lookup(st, tokens, n, id, &lo, &mt, &e) == V4F_OK && mt.n_tokens == n;
}

/* ---- restore ----------------------------------------------------------------------- */

typedef struct consume_ctx {
    v4f_session *s;
    float *logits;
    uint32_t n_logits;
    void *app;
    uint32_t app_cap;
    v4f_snapshot_info info;
} consume_ctx;

static v4f_status source_rd(void *ud, void *buf, size_t n, v4f_err *err) {
    v4f_status st = v4f_kv_source_read(ud, buf, n);
    if (st) return v4f_err_set(err, st, "the snapshot payload ended early or could not be read");
    return V4F_OK;
}

static v4f_status consume(void *ud, v4f_kv_source *src, uint64_t payload_bytes, v4f_err *err) {
    consume_ctx *c = ud;
    return v4f_snapshot_read(c->s, c->logits, c->n_logits, c->app, c->app_cap, &c->info,
                             source_rd, src, err);
}

v4f_status v4f_kvcache_restore_prefix(v4f_kvstore *st, const v4f_kv_ident *id, bool allow_family,
                                      uint32_t min_tokens, v4f_session *s, const int32_t *tokens,
                                      uint32_t n, float *logits, uint32_t n_logits,
                                      v4f_kvcache_hit *hit, v4f_err *err) {
    memset(hit, 0, sizeof *hit);
    double t0 = v4f_time_s();
    v4f_kvstore_lookup_opts lo = {.allow_family = allow_family, .min_tokens = min_tokens};
    char last[V4F_KVSTORE_NAME_MAX] = "";
    for (int attempt = 0; attempt < 4; attempt++) {
        v4f_kvstore_match mt;
        v4f_err e = {0};
        v4f_status r = v4f_kvstore_lookup(st, tokens, n, id, &lo, &mt, &e);
        if (r == V4F_STATUS_NOT_FOUND) break;
        if (r) {
            v4f_session_reset(s);
            hit->seconds = v4f_time_s() - t0;
            return v4f_err_set(err, r, "%s", e.msg);
        }
        if (!strcmp(mt.name, last)) break; /* the same file failed already */
        snprintf(last, sizeof last, "%s", mt.name);
        consume_ctx c = {s, logits, n_logits, NULL, 0, {0}};
        r = v4f_kvstore_load(st, mt.name, id, allow_family, consume, &c, NULL, NULL, &e);
        if (!r && c.info.pos != mt.n_tokens) {
            r = v4f_err_set(&e, V4F_STATUS_LAYOUT, "kv file %s: snapshot holds %u positions, "
                            "the checkpoint names %u tokens", mt.name, c.info.pos, mt.n_tokens);
        }
        if (!r) {
            hit->n_tokens = mt.n_tokens;
            hit->has_logits = c.info.n_logits == n_logits && logits != NULL;
            hit->bytes = c.info.payload_bytes;
            snprintf(hit->name, sizeof hit->name, "%s", mt.name);
            hit->seconds = v4f_time_s() - t0;
            return V4F_OK;
        }
        v4f_session_reset(s);
        hit->rejected++;
        v4f_log(V4F_LOG_WARN, "kv cache: cannot restore %s (%s); falling back to prefill", mt.name,
                e.msg);
        /* a damaged file was quarantined: look again for a shorter prefix */
    }
    v4f_session_reset(s);
    hit->seconds = v4f_time_s() - t0;
    return V4F_OK;
}

v4f_status v4f_kvcache_load_session(v4f_kvstore *st, const v4f_kv_ident *id, bool allow_family,
                                    const char *name, v4f_session *s, float *logits,
                                    uint32_t n_logits, void *app, uint32_t app_cap,
                                    v4f_snapshot_info *info, int32_t **tokens_out,
                                    uint32_t *n_tokens_out, v4f_err *err) {
    char file[V4F_KVSTORE_NAME_MAX];
    *tokens_out = NULL;
    *n_tokens_out = 0;
    v4f_status r = v4f_kvstore_session_file(name, file, err);
    if (r) return r;
    consume_ctx c = {s, logits, n_logits, app, app_cap, {0}};
    int32_t *ids = NULL;
    uint32_t nids = 0;
    r = v4f_kvstore_load(st, file, id, allow_family, consume, &c, &ids, &nids, err);
    if (!r && c.info.pos != nids)
        r = v4f_err_set(err, V4F_STATUS_LAYOUT,
                        "session %s: snapshot holds %u positions but %u token ids", name,
                        c.info.pos, nids);
    if (r) {
        free(ids);
        v4f_session_reset(s);
        return r;
    }
    if (info) *info = c.info;
    *tokens_out = ids;
    *n_tokens_out = nids;
    return V4F_OK;
}
