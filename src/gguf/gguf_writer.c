/*
 * gguf_writer.c - streaming GGUF v3 writer.
 *
 * Phases: (1) set_* / add_tensor collect metadata encodings and the tensor
 * directory in memory; (2) begin_data writes header, metadata, directory and
 * the padding up to the data section; (3) write_data streams tensor bytes in
 * declaration order, inserting alignment padding after each tensor; (4) close
 * checks every byte was written, flushes, fsyncs and closes.
 *
 * Invariants: tensor offsets are precomputed at add time (each aligned), so
 * the directory is final before any data is written; only the directory and
 * the metadata encodings are ever held in memory, never tensor data.
 * Errors in the void setters are sticky: the first one is kept and returned
 * by the next status-returning call (add_tensor, begin_data, write_data,
 * close). Any failure in close, and abort, delete the partial file.
 *
 * Ownership: the writer owns its FILE and every copied key/encoding.
 * Threading: one thread per writer.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/ggml_type.h"
#include "gguf/gguf.h"
#include "gguf/gguf_internal.h"

#define WRITE_BUF_BYTES (4u << 20)

typedef struct wkv {
    char *key;      /* owned, NUL-terminated */
    uint64_t key_len;
    uint32_t type;
    uint8_t *enc;   /* owned value encoding */
    uint64_t enc_len;
} wkv;

typedef struct wtensor {
    char *name;     /* owned */
    uint64_t name_len;
    uint32_t type, n_dims;
    uint64_t ne[V4F_GGUF_MAX_DIMS];
    uint64_t n_bytes;
    uint64_t offset; /* relative to the data section */
} wtensor;

enum { PHASE_DECLARE, PHASE_DATA };

struct v4f_gguf_writer {
    FILE *f;
    char *path;
    char *buf;        /* stdio buffer */
    uint32_t alignment;
    int phase;
    wkv *kvs;
    uint64_t n_kv, cap_kv;
    wtensor *ts;
    uint64_t n_t, cap_t;
    uint64_t data_bytes; /* running end of the data section (aligned) */
    uint64_t cur;        /* tensor being written */
    uint64_t cur_done;   /* bytes of it written */
    v4f_status st;       /* sticky error */
    v4f_err err;
};

static v4f_status fail(v4f_gguf_writer *w, v4f_status code, const char *fmt, const char *a,
                       const char *b) {
    if (w->st) return w->st;
    w->st = v4f_err_set(&w->err, code, fmt, a, b);
    return w->st;
}

static v4f_status report(const v4f_gguf_writer *w, v4f_err *err) {
    if (err) *err = w->err;
    return w->st;
}

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

v4f_status v4f_gguf_writer_open(const char *path, uint32_t alignment, v4f_gguf_writer **out,
                                v4f_err *err) {
    *out = NULL;
    if (alignment == 0) alignment = V4F_GGUF_DEFAULT_ALIGNMENT;
    if ((alignment & (alignment - 1)) || alignment > V4F_GGUF_MAX_ALIGNMENT)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG,
                           "%s: alignment %u must be a power of two <= %u", path, alignment,
                           V4F_GGUF_MAX_ALIGNMENT);
    FILE *f = fopen(path, "wb");
    if (!f) return v4f_err_set(err, V4F_STATUS_IO, "%s: cannot create: %s", path, strerror(errno));
    v4f_gguf_writer *w = v4f_xcalloc(1, sizeof *w);
    w->f = f;
    w->path = v4f_xstrdup(path);
    w->buf = v4f_xmalloc(WRITE_BUF_BYTES);
    setvbuf(f, w->buf, _IOFBF, WRITE_BUF_BYTES);
    w->alignment = alignment;
    *out = w;
    return V4F_OK;
}

/* ---- metadata ---------------------------------------------------------- */

/* Store (or replace) key with an encoding (takes ownership of enc). */
static void set_enc(v4f_gguf_writer *w, const char *key, uint64_t key_len, uint32_t type,
                    uint8_t *enc, uint64_t enc_len) {
    v4f_str k = {key, key_len};
    v4f_err e = {0};
    if (w->st) goto drop;
    if (w->phase != PHASE_DECLARE) {
        fail(w, V4F_STATUS_INVALID_ARG, "%s: metadata set after begin_data%s", w->path, "");
        goto drop;
    }
    if (v4f_gguf_name_check(k, "key", &e)) {
        fail(w, V4F_STATUS_INVALID_ARG, "%s: %s", w->path, e.msg);
        goto drop;
    }
    if (v4f_gguf_value_check(enc, enc_len, type, &e)) {
        v4f_err_prefix(&e, "key '%.*s'", (int)(key_len > 80 ? 80 : key_len), key);
        fail(w, V4F_STATUS_INVALID_ARG, "%s: %s", w->path, e.msg);
        goto drop;
    }
    for (uint64_t i = 0; i < w->n_kv; i++) {
        wkv *kv = &w->kvs[i];
        if (kv->key_len == key_len && memcmp(kv->key, key, key_len) == 0) {
            free(kv->enc);
            kv->type = type;
            kv->enc = enc;
            kv->enc_len = enc_len;
            return;
        }
    }
    if (w->n_kv == w->cap_kv) {
        w->cap_kv = w->cap_kv ? 2 * w->cap_kv : 32;
        w->kvs = v4f_xrealloc(w->kvs, w->cap_kv * sizeof *w->kvs);
    }
    wkv *kv = &w->kvs[w->n_kv++];
    kv->key = v4f_xmalloc(key_len + 1);
    memcpy(kv->key, key, key_len);
    kv->key[key_len] = '\0';
    kv->key_len = key_len;
    kv->type = type;
    kv->enc = enc;
    kv->enc_len = enc_len;
    return;
drop:
    free(enc);
}

static void set_fixed(v4f_gguf_writer *w, const char *key, uint32_t type, uint64_t bits) {
    uint32_t n = v4f_gguf_vtype_size(type);
    uint8_t *enc = v4f_xmalloc(n);
    for (uint32_t i = 0; i < n; i++) enc[i] = (uint8_t)(bits >> (8 * i));
    set_enc(w, key, strlen(key), type, enc, n);
}

void v4f_gguf_writer_set_u32(v4f_gguf_writer *w, const char *key, uint32_t v) {
    set_fixed(w, key, V4F_GGUF_U32, v);
}
void v4f_gguf_writer_set_i32(v4f_gguf_writer *w, const char *key, int32_t v) {
    set_fixed(w, key, V4F_GGUF_I32, (uint32_t)v);
}
void v4f_gguf_writer_set_u64(v4f_gguf_writer *w, const char *key, uint64_t v) {
    set_fixed(w, key, V4F_GGUF_U64, v);
}
void v4f_gguf_writer_set_f32(v4f_gguf_writer *w, const char *key, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    set_fixed(w, key, V4F_GGUF_F32, u);
}
void v4f_gguf_writer_set_bool(v4f_gguf_writer *w, const char *key, bool v) {
    set_fixed(w, key, V4F_GGUF_BOOL, v ? 1 : 0);
}

void v4f_gguf_writer_set_str(v4f_gguf_writer *w, const char *key, const char *v) {
    uint64_t n = strlen(v);
    uint8_t *enc = v4f_xmalloc(8 + n);
    put_u64(enc, n);
    memcpy(enc + 8, v, n);
    set_enc(w, key, strlen(key), V4F_GGUF_STRING, enc, 8 + n);
}

void v4f_gguf_writer_set_arr(v4f_gguf_writer *w, const char *key, uint32_t vtype,
                             const void *data, uint64_t n) {
    uint64_t esz = v4f_gguf_vtype_size(vtype), bytes, total;
    if (!esz) {
        fail(w, V4F_STATUS_INVALID_ARG, "%s: key '%s': set_arr needs a numeric element type",
             w->path, key);
        return;
    }
    if (!v4f_mul_u64(esz, n, &bytes) || !v4f_add_u64(bytes, 12, &total) || total > SIZE_MAX) {
        fail(w, V4F_STATUS_INVALID_ARG, "%s: key '%s': array too large", w->path, key);
        return;
    }
    uint8_t *enc = v4f_xmalloc((size_t)total);
    put_u32(enc, vtype);
    put_u64(enc + 4, n);
    if (bytes) memcpy(enc + 12, data, (size_t)bytes);
    set_enc(w, key, strlen(key), V4F_GGUF_ARRAY, enc, total);
}

void v4f_gguf_writer_set_arr_str(v4f_gguf_writer *w, const char *key, const char *const *strs,
                                 uint64_t n) {
    uint64_t total = 12;
    for (uint64_t i = 0; i < n; i++) total += 8 + strlen(strs[i]);
    uint8_t *enc = v4f_xmalloc(total), *p = enc + 12;
    put_u32(enc, V4F_GGUF_STRING);
    put_u64(enc + 4, n);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t len = strlen(strs[i]);
        put_u64(p, len);
        memcpy(p + 8, strs[i], len);
        p += 8 + len;
    }
    set_enc(w, key, strlen(key), V4F_GGUF_ARRAY, enc, total);
}

void v4f_gguf_writer_set_raw(v4f_gguf_writer *w, const char *key, uint32_t vtype,
                             const void *enc, uint64_t n_bytes) {
    if (n_bytes > SIZE_MAX) {
        fail(w, V4F_STATUS_INVALID_ARG, "%s: key '%s': value too large", w->path, key);
        return;
    }
    uint8_t *copy = v4f_xmalloc(n_bytes ? (size_t)n_bytes : 1);
    if (n_bytes) memcpy(copy, enc, (size_t)n_bytes);
    set_enc(w, key, strlen(key), vtype, copy, n_bytes);
}

void v4f_gguf_writer_set_kv(v4f_gguf_writer *w, const v4f_gguf_kv *kv) {
    uint64_t hdr = kv->type == V4F_GGUF_ARRAY ? 12 : 0, total;
    if (!v4f_add_u64(kv->val_bytes, hdr, &total) || total > SIZE_MAX) {
        fail(w, V4F_STATUS_INVALID_ARG, "%s: copied value too large%s", w->path, "");
        return;
    }
    uint8_t *enc = v4f_xmalloc(total ? (size_t)total : 1);
    if (hdr) {
        put_u32(enc, kv->arr_type);
        put_u64(enc + 4, kv->arr_n);
    }
    if (kv->val_bytes) memcpy(enc + hdr, kv->val, (size_t)kv->val_bytes);
    set_enc(w, kv->key.ptr, kv->key.len, kv->type, enc, total);
}

/* ---- tensors ----------------------------------------------------------- */

v4f_status v4f_gguf_writer_add_tensor(v4f_gguf_writer *w, const char *name, uint32_t type,
                                      uint32_t n_dims, const uint64_t *ne, v4f_err *err) {
    v4f_str s = {name, strlen(name)};
    v4f_err e = {0};
    if (w->st) return report(w, err);
    if (w->phase != PHASE_DECLARE)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "%s: tensor '%s' added after begin_data",
                           w->path, name);
    if (v4f_gguf_name_check(s, "tensor name", &e))
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "%s: %s", w->path, e.msg);
    const v4f_type_info *ti = v4f_type_info_get(type);
    if (!ti)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "%s: tensor '%s': unknown type id %u",
                           w->path, name, type);
    if (n_dims < 1 || n_dims > V4F_GGUF_MAX_DIMS)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "%s: tensor '%s': n_dims %u not in 1..4",
                           w->path, name, n_dims);
    for (uint64_t i = 0; i < w->n_t; i++)
        if (w->ts[i].name_len == s.len && memcmp(w->ts[i].name, name, s.len) == 0)
            return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "%s: duplicate tensor '%s'",
                               w->path, name);
    wtensor t = {0};
    uint64_t rows = 1, n_elems = 1;
    for (uint32_t d = 0; d < V4F_GGUF_MAX_DIMS; d++) {
        t.ne[d] = d < n_dims ? ne[d] : 1;
        if (t.ne[d] == 0 || t.ne[d] > (uint64_t)INT64_MAX ||
            !v4f_mul_u64(n_elems, t.ne[d], &n_elems) || n_elems > (uint64_t)INT64_MAX)
            return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "%s: tensor '%s': bad shape",
                               w->path, name);
        if (d) rows *= t.ne[d];
    }
    if (!v4f_type_row_bytes(type, t.ne[0], &t.n_bytes) || !v4f_mul_u64(t.n_bytes, rows, &t.n_bytes))
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG,
                           "%s: tensor '%s': ne[0] = %llu not a multiple of the %s block (%u)",
                           w->path, name, (unsigned long long)t.ne[0], ti->name, ti->blck_elems);
    uint64_t end;
    if (!v4f_add_u64(w->data_bytes, t.n_bytes, &end) ||
        !v4f_add_u64(end, w->alignment - 1, &end))
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "%s: data section overflows", w->path);
    t.offset = w->data_bytes;
    w->data_bytes = end & ~(uint64_t)(w->alignment - 1);
    t.name = v4f_xstrdup(name);
    t.name_len = s.len;
    t.type = type;
    t.n_dims = n_dims;
    if (w->n_t == w->cap_t) {
        w->cap_t = w->cap_t ? 2 * w->cap_t : 64;
        w->ts = v4f_xrealloc(w->ts, w->cap_t * sizeof *w->ts);
    }
    w->ts[w->n_t++] = t;
    return V4F_OK;
}

/* ---- output ------------------------------------------------------------ */

static v4f_status out_bytes(v4f_gguf_writer *w, const void *p, uint64_t n) {
    if (n && fwrite(p, 1, (size_t)n, w->f) != (size_t)n)
        return fail(w, V4F_STATUS_IO, "%s: write failed: %s", w->path, strerror(errno));
    return w->st;
}

static v4f_status out_u32(v4f_gguf_writer *w, uint32_t v) {
    uint8_t b[4];
    put_u32(b, v);
    return out_bytes(w, b, 4);
}

static v4f_status out_u64(v4f_gguf_writer *w, uint64_t v) {
    uint8_t b[8];
    put_u64(b, v);
    return out_bytes(w, b, 8);
}

static v4f_status out_zeros(v4f_gguf_writer *w, uint64_t n) {
    static const uint8_t zeros[256];
    while (n && !w->st) {
        uint64_t k = n < sizeof zeros ? n : sizeof zeros;
        out_bytes(w, zeros, k);
        n -= k;
    }
    return w->st;
}

static uint64_t pad_to(uint64_t pos, uint32_t align) {
    uint64_t r = pos % align;
    return r ? align - r : 0;
}

v4f_status v4f_gguf_writer_begin_data(v4f_gguf_writer *w, v4f_err *err) {
    if (w->st) return report(w, err);
    if (w->phase != PHASE_DECLARE)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "%s: begin_data called twice", w->path);
    bool have_align = false;
    for (uint64_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kvs[i].key, "general.alignment") == 0) have_align = true;
    if (!have_align && w->alignment != V4F_GGUF_DEFAULT_ALIGNMENT)
        v4f_gguf_writer_set_u32(w, "general.alignment", w->alignment);
    for (uint64_t i = 0; i < w->n_kv && !w->st; i++) {
        const wkv *kv = &w->kvs[i];
        if (strcmp(kv->key, "general.alignment") == 0 &&
            (kv->type != V4F_GGUF_U32 || kv->enc_len != 4 ||
             (kv->enc[0] | kv->enc[1] << 8 | kv->enc[2] << 16 | (uint32_t)kv->enc[3] << 24) !=
                 w->alignment))
            fail(w, V4F_STATUS_INVALID_ARG, "%s: general.alignment must be a u32 equal to %s",
                 w->path, "the writer's alignment");
    }
    if (w->st) return report(w, err);
    w->phase = PHASE_DATA;
    uint64_t pos = 24;
    out_u32(w, V4F_GGUF_MAGIC);
    out_u32(w, 3);
    out_u64(w, w->n_t);
    out_u64(w, w->n_kv);
    for (uint64_t i = 0; i < w->n_kv; i++) {
        const wkv *kv = &w->kvs[i];
        out_u64(w, kv->key_len);
        out_bytes(w, kv->key, kv->key_len);
        out_u32(w, kv->type);
        out_bytes(w, kv->enc, kv->enc_len);
        pos += 8 + kv->key_len + 4 + kv->enc_len;
    }
    for (uint64_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->ts[i];
        out_u64(w, t->name_len);
        out_bytes(w, t->name, t->name_len);
        out_u32(w, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) out_u64(w, t->ne[d]);
        out_u32(w, t->type);
        out_u64(w, t->offset);
        pos += 8 + t->name_len + 4 + 8ull * t->n_dims + 4 + 8;
    }
    if (w->n_t) out_zeros(w, pad_to(pos, w->alignment));
    w->cur = 0;
    w->cur_done = 0;
    return report(w, err);
}

v4f_status v4f_gguf_writer_write_data(v4f_gguf_writer *w, const void *data, uint64_t n,
                                      v4f_err *err) {
    const uint8_t *p = data;
    if (w->st) return report(w, err);
    if (w->phase != PHASE_DATA)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "%s: write_data before begin_data",
                           w->path);
    while (n) {
        if (w->cur >= w->n_t)
            return v4f_err_set(err, V4F_STATUS_INVALID_ARG,
                               "%s: %llu bytes written past the last tensor", w->path,
                               (unsigned long long)n);
        const wtensor *t = &w->ts[w->cur];
        uint64_t k = t->n_bytes - w->cur_done;
        if (k > n) k = n;
        if (out_bytes(w, p, k)) return report(w, err);
        p += k;
        n -= k;
        w->cur_done += k;
        if (w->cur_done == t->n_bytes) {
            if (out_zeros(w, pad_to(t->offset + t->n_bytes, w->alignment))) return report(w, err);
            w->cur++;
            w->cur_done = 0;
        }
    }
    return V4F_OK;
}

static void writer_free(v4f_gguf_writer *w) {
    for (uint64_t i = 0; i < w->n_kv; i++) {
        free(w->kvs[i].key);
        free(w->kvs[i].enc);
    }
    for (uint64_t i = 0; i < w->n_t; i++) free(w->ts[i].name);
    free(w->kvs);
    free(w->ts);
    free(w->path);
    free(w->buf);
    free(w);
}

v4f_status v4f_gguf_writer_close(v4f_gguf_writer *w, v4f_err *err) {
    v4f_status st = V4F_OK;
    if (w->phase == PHASE_DECLARE) st = v4f_gguf_writer_begin_data(w, err);
    if (!st && w->st) st = report(w, err);
    if (!st && w->cur < w->n_t)
        st = v4f_err_set(err, V4F_STATUS_INVALID_ARG,
                         "%s: tensor '%s' incomplete: %llu of %llu bytes written", w->path,
                         w->ts[w->cur].name, (unsigned long long)w->cur_done,
                         (unsigned long long)w->ts[w->cur].n_bytes);
    if (!st && (fflush(w->f) != 0 || fsync(fileno(w->f)) != 0))
        st = v4f_err_set(err, V4F_STATUS_IO, "%s: flush failed: %s", w->path, strerror(errno));
    if (fclose(w->f) != 0 && !st)
        st = v4f_err_set(err, V4F_STATUS_IO, "%s: close failed: %s", w->path, strerror(errno));
    if (st) unlink(w->path);
    writer_free(w);
    return st;
}

void v4f_gguf_writer_abort(v4f_gguf_writer *w) {
    if (!w) return;
    fclose(w->f);
    unlink(w->path);
    writer_free(w);
}
