/*
 * gguf.c - GGUF v2/v3 reader: mmap, checked parse of header, metadata and
 * tensor directory, split-file assembly, lookups.
 *
 * Invariants after a successful open:
 *   - every kv has a valid UTF-8, NUL-free, unique key; every value (nested
 *     arrays included, depth <= V4F_GGUF_MAX_NESTING) lies inside its file;
 *   - every string array at top level has an index (kv_strs) so element
 *     access is O(1) (up to MAX_INDEXED_STRINGS strings per file; past that
 *     budget, access walks the encoding);
 *   - counts are capped (MAX_KV, MAX_TENSORS) so a hostile header cannot
 *     drive an allocation that would abort;
 *   - every tensor has a known type, 1..4 dims each >= 1, ne[0] a multiple of
 *     the block size, a byte size without overflow, an offset that is a
 *     multiple of its shard's alignment, bytes inside its shard, no overlap
 *     with another tensor of the same shard, and a name unique over all
 *     shards (hash table, open addressing, FNV-1a).
 * Parsing never trusts a count: every count is checked against the bytes
 * left before anything is allocated, and every offset/length arithmetic is
 * overflow-checked. Error messages carry no file name from the inner
 * parsers; the entry points prefix "<file>: " once.
 *
 * Ownership: v4f_gguf owns the maps, the paths and every table; pointers it
 * hands out live until v4f_gguf_close. Memory buffers passed to
 * v4f_gguf_open_memory stay owned by the caller.
 * Threading: immutable after open; any number of readers.
 */
#include "gguf/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/ggml_type.h"
#include "gguf/gguf_internal.h"

/* Smallest possible encodings, used to reject absurd counts up front. */
#define MIN_KV_BYTES 14     /* u64 key len, 1 key byte, u32 type, 1 value byte */
#define MIN_TENSOR_BYTES 33 /* u64 len, 1 name byte, u32 n_dims, 1 ne, u32 type, u64 offset */
#define MIN_ARRAY_BYTES 12  /* u32 element type + u64 count */
#define MAX_SHARDS 9999
/* Sanity caps so a hostile header cannot make us allocate without bound
 * (real models: ~50 kv, a few thousand tensors, ~130k tokens). */
#define MAX_KV (1u << 20)
#define MAX_TENSORS (1u << 20)
#define MAX_INDEXED_STRINGS (1ull << 25) /* per file; beyond it arr_str walks */
#define NAME_SHOWN 80       /* at most this many name bytes in a message */

typedef struct shard {
    char *path;           /* owned */
    const uint8_t *base;  /* map or caller buffer */
    uint64_t size;
    void *map;            /* NULL for a caller buffer */
    size_t map_len;
} shard;

/* Result of parsing one file. */
typedef struct meta {
    uint32_t version;
    uint32_t alignment;
    v4f_gguf_kv *kvs;
    uint64_t n_kv;
    v4f_str **kv_strs;    /* [n_kv]: index of top-level string arrays or NULL */
    uint64_t *kv_slots;   /* open-addressing table: kv index + 1, 0 = empty */
    uint64_t kv_cap;      /* power of two */
    v4f_gguf_tensor *tensors;
    uint64_t n_tensors;
} meta;

struct v4f_gguf {
    char *path;           /* first shard's path or the memory name */
    shard *shards;
    uint32_t n_shards;
    meta m;               /* metadata of shard 0; m.tensors holds all shards' */
    uint64_t *t_slots;    /* tensor name table: index + 1, 0 = empty */
    uint64_t t_cap;
};

/* ---- little-endian decoding -------------------------------------------- */

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}
static uint64_t le64(const uint8_t *p) { return le32(p) | ((uint64_t)le32(p + 4) << 32); }
static double f32_at(const uint8_t *p) {
    uint32_t u = le32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static double f64_at(const uint8_t *p) {
    uint64_t u = le64(p);
    double d;
    memcpy(&d, &u, 8);
    return d;
}

static int shown(uint64_t len) { return len > NAME_SHOWN ? NAME_SHOWN : (int)len; }

#define U(x) ((unsigned long long)(x))

/* ---- value types --------------------------------------------------------- */

const char *v4f_gguf_vtype_name(uint32_t vtype) {
    static const char *const names[V4F_GGUF_VTYPE_COUNT] = {
        "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool",
        "string", "array", "u64", "i64", "f64"};
    return vtype < V4F_GGUF_VTYPE_COUNT ? names[vtype] : "?";
}

uint32_t v4f_gguf_vtype_size(uint32_t vtype) {
    switch (vtype) {
    case V4F_GGUF_U8: case V4F_GGUF_I8: case V4F_GGUF_BOOL: return 1;
    case V4F_GGUF_U16: case V4F_GGUF_I16: return 2;
    case V4F_GGUF_U32: case V4F_GGUF_I32: case V4F_GGUF_F32: return 4;
    case V4F_GGUF_U64: case V4F_GGUF_I64: case V4F_GGUF_F64: return 8;
    default: return 0;
    }
}

static bool vtype_is_int(uint32_t t) {
    return t == V4F_GGUF_U8 || t == V4F_GGUF_I8 || t == V4F_GGUF_U16 || t == V4F_GGUF_I16 ||
           t == V4F_GGUF_U32 || t == V4F_GGUF_I32 || t == V4F_GGUF_U64 || t == V4F_GGUF_I64;
}
static bool vtype_is_signed(uint32_t t) {
    return t == V4F_GGUF_I8 || t == V4F_GGUF_I16 || t == V4F_GGUF_I32 || t == V4F_GGUF_I64;
}

/* Decode a fixed-size integer/bool element as (signed?, value). */
static void int_at(const uint8_t *p, uint32_t t, int64_t *i, uint64_t *u) {
    switch (t) {
    case V4F_GGUF_U8: case V4F_GGUF_BOOL: *u = p[0]; break;
    case V4F_GGUF_I8: *i = (int8_t)p[0]; break;
    case V4F_GGUF_U16: *u = le16(p); break;
    case V4F_GGUF_I16: *i = (int16_t)le16(p); break;
    case V4F_GGUF_U32: *u = le32(p); break;
    case V4F_GGUF_I32: *i = (int32_t)le32(p); break;
    case V4F_GGUF_U64: *u = le64(p); break;
    case V4F_GGUF_I64: *i = (int64_t)le64(p); break;
    default: *u = 0; break;
    }
}

/* ---- checked cursor ------------------------------------------------------ */

typedef struct cursor {
    const uint8_t *base;
    uint64_t size;
    uint64_t pos;
    v4f_err *err;          /* may be NULL (silent walks) */
    uint64_t str_budget;   /* strings the string-array index may still hold */
} cursor;

static uint64_t left(const cursor *c) { return c->size - c->pos; }

static v4f_status take(cursor *c, uint64_t n, const char *what, const uint8_t **out) {
    if (left(c) < n) {
        v4f_err_set(c->err, V4F_STATUS_FORMAT,
                    "truncated: %s needs %llu bytes at offset %llu, only %llu left "
                    "(file is %llu bytes)",
                    what, U(n), U(c->pos), U(left(c)), U(c->size));
        return V4F_STATUS_FORMAT;
    }
    *out = c->base + c->pos;
    c->pos += n;
    return V4F_OK;
}

static v4f_status rd_u32(cursor *c, const char *what, uint32_t *v) {
    const uint8_t *p = NULL;
    v4f_status st = take(c, 4, what, &p);
    if (st == V4F_OK) *v = le32(p);
    return st;
}

static v4f_status rd_u64(cursor *c, const char *what, uint64_t *v) {
    const uint8_t *p = NULL;
    v4f_status st = take(c, 8, what, &p);
    if (st == V4F_OK) *v = le64(p);
    return st;
}

static v4f_status rd_str(cursor *c, const char *what, v4f_str *s) {
    uint64_t at = c->pos, n;
    v4f_status st = rd_u64(c, what, &n);
    if (st) return st;
    if (n > left(c))
        return v4f_err_set(c->err, V4F_STATUS_FORMAT,
                           "%s: length %llu at offset %llu runs past end of file "
                           "(%llu bytes left of %llu)",
                           what, U(n), U(at), U(left(c)), U(c->size));
    s->ptr = (const char *)c->base + c->pos;
    s->len = n;
    c->pos += n;
    return V4F_OK;
}

v4f_status v4f_gguf_name_check(v4f_str s, const char *what, v4f_err *err) {
    if (s.len == 0) return v4f_err_set(err, V4F_STATUS_FORMAT, "empty %s", what);
    if (s.len > V4F_GGUF_MAX_NAME)
        return v4f_err_set(err, V4F_STATUS_FORMAT, "%s of %llu bytes (max %d)", what,
                           U(s.len), V4F_GGUF_MAX_NAME);
    if (memchr(s.ptr, 0, s.len))
        return v4f_err_set(err, V4F_STATUS_FORMAT, "%s '%.*s' contains a NUL byte", what,
                           shown(s.len), s.ptr);
    if (!v4f_utf8_valid(s.ptr, s.len))
        return v4f_err_set(err, V4F_STATUS_FORMAT, "%s is not valid UTF-8", what);
    return V4F_OK;
}

/* ---- value walking --------------------------------------------------------- */

static v4f_status skip_value(cursor *c, uint32_t vtype, uint32_t depth);

/* Array body: element type, count, elements. depth = nesting level of this
 * array (1 = a top-level array). If strs != NULL and the elements are strings,
 * *strs receives a new index of them (caller frees). */
static v4f_status skip_array(cursor *c, uint32_t depth, uint32_t *arr_type, uint64_t *arr_n,
                             v4f_str **strs) {
    uint32_t t;
    uint64_t n;
    v4f_status st;
    if (depth > V4F_GGUF_MAX_NESTING)
        return v4f_err_set(c->err, V4F_STATUS_FORMAT, "arrays nested deeper than %d",
                           V4F_GGUF_MAX_NESTING);
    if ((st = rd_u32(c, "array element type", &t)) || (st = rd_u64(c, "array count", &n)))
        return st;
    if (t >= V4F_GGUF_VTYPE_COUNT)
        return v4f_err_set(c->err, V4F_STATUS_FORMAT,
                           "unknown array element type %u at offset %llu", t, U(c->pos - 12));
    *arr_type = t;
    *arr_n = n;
    uint32_t esz = v4f_gguf_vtype_size(t);
    uint64_t min = esz ? esz : (t == V4F_GGUF_STRING ? 8 : MIN_ARRAY_BYTES);
    if (n > left(c) / min)
        return v4f_err_set(c->err, V4F_STATUS_FORMAT,
                           "array of %llu %s elements at offset %llu cannot fit in the %llu "
                           "bytes left",
                           U(n), v4f_gguf_vtype_name(t), U(c->pos - 12), U(left(c)));
    if (esz) {
        c->pos += n * esz; /* n * esz <= left, checked above */
        return V4F_OK;
    }
    v4f_str *idx = NULL;
    if (strs && t == V4F_GGUF_STRING && n && n <= c->str_budget) {
        idx = v4f_xmalloc(n * sizeof *idx);
        c->str_budget -= n;
    }
    for (uint64_t i = 0; i < n; i++) {
        if (t == V4F_GGUF_STRING) {
            v4f_str s;
            st = rd_str(c, "array string", &s);
            if (idx && !st) idx[i] = s;
        } else {
            st = skip_value(c, t, depth + 1);
        }
        if (st) {
            free(idx);
            return st;
        }
    }
    if (strs) *strs = idx;
    return V4F_OK;
}

static v4f_status skip_value(cursor *c, uint32_t vtype, uint32_t depth) {
    const uint8_t *p = NULL;
    v4f_str s;
    uint32_t at;
    uint64_t an;
    if (vtype >= V4F_GGUF_VTYPE_COUNT)
        return v4f_err_set(c->err, V4F_STATUS_FORMAT, "unknown value type %u", vtype);
    if (vtype == V4F_GGUF_STRING) return rd_str(c, "string", &s);
    if (vtype == V4F_GGUF_ARRAY) return skip_array(c, depth, &at, &an, NULL);
    return take(c, v4f_gguf_vtype_size(vtype), v4f_gguf_vtype_name(vtype), &p);
}

v4f_status v4f_gguf_value_check(const void *enc, uint64_t n, uint32_t vtype, v4f_err *err) {
    cursor c = {enc, n, 0, err, 0};
    v4f_status st = skip_value(&c, vtype, 1);
    if (st) return st;
    if (c.pos != n)
        return v4f_err_set(err, V4F_STATUS_FORMAT, "%llu trailing bytes after the %s value",
                           U(n - c.pos), v4f_gguf_vtype_name(vtype));
    return V4F_OK;
}

/* Parse one kv value at the cursor into kv (key already set). */
static v4f_status parse_value(cursor *c, v4f_gguf_kv *kv, v4f_str **strs) {
    uint64_t start = c->pos;
    v4f_status st;
    const uint8_t *p = c->base + c->pos;
    if (kv->type == V4F_GGUF_ARRAY) {
        st = skip_array(c, 1, &kv->arr_type, &kv->arr_n, strs);
        if (st) return st;
        kv->val = p + MIN_ARRAY_BYTES;
        kv->val_bytes = c->pos - start - MIN_ARRAY_BYTES;
        return V4F_OK;
    }
    st = skip_value(c, kv->type, 1);
    if (st) return st;
    kv->val = p;
    kv->val_bytes = c->pos - start;
    switch (kv->type) {
    case V4F_GGUF_STRING:
        kv->v.str.ptr = (const char *)p + 8;
        kv->v.str.len = kv->val_bytes - 8;
        break;
    case V4F_GGUF_F32: kv->v.f64 = f32_at(p); break;
    case V4F_GGUF_F64: kv->v.f64 = f64_at(p); break;
    case V4F_GGUF_BOOL: kv->v.b = p[0] != 0; break;
    default:
        int_at(p, kv->type, &kv->v.i64, &kv->v.u64);
        break;
    }
    return V4F_OK;
}

/* ---- hash tables ------------------------------------------------------------ */

static uint64_t table_cap(uint64_t n) {
    uint64_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    return cap;
}

static uint64_t str_hash(const char *p, uint64_t n) { return v4f_fnv1a64(V4F_FNV_SEED, p, n); }

/* Find name in slots (values are index + 1 into names via get). Returns the
 * slot index: either holding a match or empty. */
static uint64_t kv_probe(const meta *m, const char *p, uint64_t n) {
    uint64_t mask = m->kv_cap - 1, i = str_hash(p, n) & mask;
    for (;;) {
        uint64_t s = m->kv_slots[i];
        if (!s) return i;
        const v4f_str *k = &m->kvs[s - 1].key;
        if (k->len == n && memcmp(k->ptr, p, n) == 0) return i;
        i = (i + 1) & mask;
    }
}

static uint64_t t_probe(const v4f_gguf *g, const char *p, uint64_t n) {
    uint64_t mask = g->t_cap - 1, i = str_hash(p, n) & mask;
    for (;;) {
        uint64_t s = g->t_slots[i];
        if (!s) return i;
        const v4f_str *k = &g->m.tensors[s - 1].name;
        if (k->len == n && memcmp(k->ptr, p, n) == 0) return i;
        i = (i + 1) & mask;
    }
}

/* ---- metadata ------------------------------------------------------------- */

static void meta_free(meta *m) {
    if (m->kv_strs)
        for (uint64_t i = 0; i < m->n_kv; i++) free(m->kv_strs[i]);
    free(m->kv_strs);
    free(m->kvs);
    free(m->kv_slots);
    free(m->tensors);
    memset(m, 0, sizeof *m);
}

static v4f_status parse_kvs(cursor *c, meta *m) {
    v4f_status st;
    m->kvs = v4f_xcalloc(m->n_kv ? m->n_kv : 1, sizeof *m->kvs);
    m->kv_strs = v4f_xcalloc(m->n_kv ? m->n_kv : 1, sizeof *m->kv_strs);
    m->kv_cap = table_cap(m->n_kv);
    m->kv_slots = v4f_xcalloc(m->kv_cap, sizeof *m->kv_slots);
    for (uint64_t i = 0; i < m->n_kv; i++) {
        v4f_gguf_kv *kv = &m->kvs[i];
        if ((st = rd_str(c, "key", &kv->key))) goto fail_nokey;
        if ((st = v4f_gguf_name_check(kv->key, "key", c->err))) goto fail_nokey;
        uint64_t slot = kv_probe(m, kv->key.ptr, kv->key.len);
        if (m->kv_slots[slot]) {
            st = v4f_err_set(c->err, V4F_STATUS_FORMAT, "duplicate key (first is kv %llu)",
                             U(m->kv_slots[slot] - 1));
            goto fail;
        }
        if ((st = rd_u32(c, "value type", &kv->type))) goto fail;
        if (kv->type >= V4F_GGUF_VTYPE_COUNT) {
            st = v4f_err_set(c->err, V4F_STATUS_FORMAT, "unknown value type %u", kv->type);
            goto fail;
        }
        if ((st = parse_value(c, kv, &m->kv_strs[i]))) goto fail;
        m->kv_slots[slot] = i + 1;
        continue;
    fail:
        v4f_err_prefix(c->err, "kv %llu '%.*s'", U(i), shown(kv->key.len), kv->key.ptr);
        return st;
    fail_nokey:
        v4f_err_prefix(c->err, "kv %llu", U(i));
        return st;
    }
    return V4F_OK;
}

static const v4f_gguf_kv *meta_find(const meta *m, const char *key) {
    if (!m->kv_slots) return NULL;
    uint64_t s = m->kv_slots[kv_probe(m, key, strlen(key))];
    return s ? &m->kvs[s - 1] : NULL;
}

/* Integer value of a scalar kv (any integer type or bool); false otherwise. */
static bool kv_int(const v4f_gguf_kv *kv, bool *neg, uint64_t *mag) {
    if (kv->type == V4F_GGUF_BOOL) {
        *neg = false;
        *mag = kv->v.b;
        return true;
    }
    if (!vtype_is_int(kv->type)) return false;
    if (vtype_is_signed(kv->type)) {
        *neg = kv->v.i64 < 0;
        *mag = *neg ? (uint64_t)0 - (uint64_t)kv->v.i64 : (uint64_t)kv->v.i64;
    } else {
        *neg = false;
        *mag = kv->v.u64;
    }
    return true;
}

static v4f_status read_alignment(meta *m, v4f_err *err) {
    m->alignment = V4F_GGUF_DEFAULT_ALIGNMENT;
    const v4f_gguf_kv *kv = meta_find(m, "general.alignment");
    if (!kv) return V4F_OK;
    bool neg;
    uint64_t a;
    if (!kv_int(kv, &neg, &a) || kv->type == V4F_GGUF_BOOL)
        return v4f_err_set(err, V4F_STATUS_FORMAT, "general.alignment has type %s, expected u32",
                           v4f_gguf_vtype_name(kv->type));
    if (neg || a == 0 || (a & (a - 1)) || a > V4F_GGUF_MAX_ALIGNMENT)
        return v4f_err_set(err, V4F_STATUS_FORMAT,
                           "general.alignment = %s%llu: must be a power of two in [1, %u]",
                           neg ? "-" : "", U(a), V4F_GGUF_MAX_ALIGNMENT);
    m->alignment = (uint32_t)a;
    return V4F_OK;
}

/* ---- tensor directory -------------------------------------------------------- */

/* Read one tensor info and check everything that does not need the data
 * section's position. */
static v4f_status parse_tensor(cursor *c, v4f_gguf_tensor *t, uint64_t i, uint32_t align) {
    v4f_status st;
    if ((st = rd_str(c, "tensor name", &t->name)) ||
        (st = v4f_gguf_name_check(t->name, "tensor name", c->err))) {
        v4f_err_prefix(c->err, "tensor info %llu", U(i));
        return st;
    }
    int nl = shown(t->name.len);
    const char *np = t->name.ptr;
    if ((st = rd_u32(c, "n_dims", &t->n_dims))) goto fail;
    if (t->n_dims < 1 || t->n_dims > V4F_GGUF_MAX_DIMS) {
        st = v4f_err_set(c->err, V4F_STATUS_FORMAT, "n_dims = %u (must be 1..%d)", t->n_dims,
                         V4F_GGUF_MAX_DIMS);
        goto fail;
    }
    t->n_elems = 1;
    for (uint32_t d = 0; d < V4F_GGUF_MAX_DIMS; d++) {
        t->ne[d] = 1;
        if (d >= t->n_dims) continue;
        if ((st = rd_u64(c, "ne", &t->ne[d]))) goto fail;
        if (t->ne[d] == 0 || t->ne[d] > (uint64_t)INT64_MAX) {
            st = v4f_err_set(c->err, V4F_STATUS_FORMAT, "ne[%u] = %llu (must be 1..2^63-1)", d,
                             U(t->ne[d]));
            goto fail;
        }
        if (!v4f_mul_u64(t->n_elems, t->ne[d], &t->n_elems) || t->n_elems > (uint64_t)INT64_MAX) {
            st = v4f_err_set(c->err, V4F_STATUS_FORMAT, "element count overflows");
            goto fail;
        }
    }
    if ((st = rd_u32(c, "tensor type", &t->type)) ||
        (st = rd_u64(c, "tensor offset", &t->file_offset)))
        goto fail;
    const v4f_type_info *ti = v4f_type_info_get(t->type);
    if (!ti) {
        st = v4f_err_set(c->err, V4F_STATUS_UNSUPPORTED, "unknown tensor type id %u", t->type);
        goto fail;
    }
    if (t->ne[0] % ti->blck_elems) {
        st = v4f_err_set(c->err, V4F_STATUS_FORMAT,
                         "ne[0] = %llu is not a multiple of the %s block size %u", U(t->ne[0]),
                         ti->name, ti->blck_elems);
        goto fail;
    }
    uint64_t rows = t->n_elems / t->ne[0];
    if (!v4f_type_row_bytes(t->type, t->ne[0], &t->n_bytes) ||
        !v4f_mul_u64(t->n_bytes, rows, &t->n_bytes)) {
        st = v4f_err_set(c->err, V4F_STATUS_FORMAT, "byte size overflows (%s)", ti->name);
        goto fail;
    }
    if (t->file_offset % align) {
        st = v4f_err_set(c->err, V4F_STATUS_FORMAT,
                         "data offset %llu is not a multiple of the alignment %u",
                         U(t->file_offset), align);
        goto fail;
    }
    return V4F_OK;
fail:
    v4f_err_prefix(c->err, "tensor '%.*s'", nl, np);
    return st;
}

/* Directory, then place every tensor in the data section of base. */
static v4f_status parse_tensors(cursor *c, meta *m, uint32_t shard_idx) {
    v4f_status st;
    m->tensors = v4f_xcalloc(m->n_tensors ? m->n_tensors : 1, sizeof *m->tensors);
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        if ((st = parse_tensor(c, &m->tensors[i], i, m->alignment))) return st;
        m->tensors[i].shard = shard_idx;
    }
    uint64_t data_start = c->pos;
    uint64_t rem = data_start % m->alignment;
    if (rem && !v4f_add_u64(data_start, m->alignment - rem, &data_start))
        return v4f_err_set(c->err, V4F_STATUS_FORMAT, "data section offset overflows");
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        v4f_gguf_tensor *t = &m->tensors[i];
        uint64_t begin, end;
        if (!v4f_add_u64(data_start, t->file_offset, &begin) ||
            !v4f_add_u64(begin, t->n_bytes, &end))
            return v4f_err_set(c->err, V4F_STATUS_FORMAT,
                               "tensor '%.*s': data offset %llu + %llu bytes overflows "
                               "(data section at %llu)",
                               shown(t->name.len), t->name.ptr, U(t->file_offset),
                               U(t->n_bytes), U(data_start));
        if (end > c->size)
            return v4f_err_set(c->err, V4F_STATUS_FORMAT,
                               "tensor '%.*s': data [%llu, %llu) past end of file (%llu bytes)",
                               shown(t->name.len), t->name.ptr, U(begin), U(end), U(c->size));
        t->file_offset = begin;
        t->data = c->base + begin;
    }
    return V4F_OK;
}

/* ---- one file -------------------------------------------------------------- */

static v4f_status parse_header(cursor *c, meta *m) {
    uint32_t magic;
    v4f_status st;
    if ((st = rd_u32(c, "magic", &magic))) return st;
    if (magic != V4F_GGUF_MAGIC)
        return v4f_err_set(c->err, V4F_STATUS_FORMAT,
                           "bad magic %02x %02x %02x %02x (not a GGUF file)", c->base[0],
                           c->base[1], c->base[2], c->base[3]);
    if ((st = rd_u32(c, "version", &m->version))) return st;
    if (m->version == 1)
        return v4f_err_set(c->err, V4F_STATUS_UNSUPPORTED,
                           "GGUF version 1 is not supported (32-bit counts; re-convert the file)");
    if (m->version == 0x02000000u || m->version == 0x03000000u)
        return v4f_err_set(c->err, V4F_STATUS_UNSUPPORTED, "big-endian GGUF is not supported");
    if (m->version != 2 && m->version != 3)
        return v4f_err_set(c->err, m->version == 0 ? V4F_STATUS_FORMAT : V4F_STATUS_UNSUPPORTED,
                           "GGUF version %u is not supported (expected 3, or 2)", m->version);
    if ((st = rd_u64(c, "tensor count", &m->n_tensors)) || (st = rd_u64(c, "kv count", &m->n_kv)))
        return st;
    uint64_t need_kv, need_t, need;
    if (!v4f_mul_u64(m->n_kv, MIN_KV_BYTES, &need_kv) ||
        !v4f_mul_u64(m->n_tensors, MIN_TENSOR_BYTES, &need_t) ||
        !v4f_add_u64(need_kv, need_t, &need) || need > left(c)) {
        v4f_status r = v4f_err_set(c->err, V4F_STATUS_FORMAT,
                                   "header claims %llu kv entries and %llu tensors, more than the "
                                   "%llu bytes after the header can hold (truncated or corrupt)",
                                   U(m->n_kv), U(m->n_tensors), U(left(c)));
        m->n_kv = m->n_tensors = 0;
        return r;
    }
    if (m->n_kv > MAX_KV || m->n_tensors > MAX_TENSORS) {
        v4f_status r = v4f_err_set(c->err, V4F_STATUS_FORMAT,
                                   "header claims %llu kv entries and %llu tensors; the reader's "
                                   "limits are %u and %u",
                                   U(m->n_kv), U(m->n_tensors), MAX_KV, MAX_TENSORS);
        m->n_kv = m->n_tensors = 0;
        return r;
    }
    return V4F_OK;
}

static v4f_status parse_file(const uint8_t *base, uint64_t size, uint32_t shard_idx, meta *m,
                             v4f_err *err) {
    cursor c = {base, size, 0, err, MAX_INDEXED_STRINGS};
    v4f_status st;
    memset(m, 0, sizeof *m);
    if ((st = parse_header(&c, m))) return st;
    if ((st = parse_kvs(&c, m))) return st;
    if ((st = read_alignment(m, err))) return st;
    return parse_tensors(&c, m, shard_idx);
}

/* ---- assembling ------------------------------------------------------------ */

typedef struct span {
    uint64_t begin, end, idx;
    uint32_t shard;
} span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->shard != y->shard) return x->shard < y->shard ? -1 : 1;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->idx < y->idx ? -1 : (x->idx > y->idx);
}

static v4f_status check_overlap(const v4f_gguf *g, v4f_err *err) {
    uint64_t n = g->m.n_tensors;
    if (n < 2) return V4F_OK;
    span *s = v4f_xmalloc(n * sizeof *s);
    for (uint64_t i = 0; i < n; i++) {
        const v4f_gguf_tensor *t = &g->m.tensors[i];
        s[i] = (span){t->file_offset, t->file_offset + t->n_bytes, i, t->shard};
    }
    qsort(s, n, sizeof *s, span_cmp);
    v4f_status st = V4F_OK;
    for (uint64_t i = 1; i < n && !st; i++) {
        if (s[i].shard != s[i - 1].shard || s[i].begin >= s[i - 1].end) continue;
        const v4f_gguf_tensor *a = &g->m.tensors[s[i - 1].idx], *b = &g->m.tensors[s[i].idx];
        st = v4f_err_set(err, V4F_STATUS_FORMAT,
                         "tensors '%.*s' [%llu, %llu) and '%.*s' [%llu, %llu) overlap",
                         shown(a->name.len), a->name.ptr, U(s[i - 1].begin), U(s[i - 1].end),
                         shown(b->name.len), b->name.ptr, U(s[i].begin), U(s[i].end));
    }
    free(s);
    return st;
}

static v4f_status build_tensor_table(v4f_gguf *g, v4f_err *err) {
    g->t_cap = table_cap(g->m.n_tensors);
    g->t_slots = v4f_xcalloc(g->t_cap, sizeof *g->t_slots);
    for (uint64_t i = 0; i < g->m.n_tensors; i++) {
        const v4f_gguf_tensor *t = &g->m.tensors[i];
        uint64_t slot = t_probe(g, t->name.ptr, t->name.len);
        if (g->t_slots[slot]) {
            const v4f_gguf_tensor *o = &g->m.tensors[g->t_slots[slot] - 1];
            if (o->shard != t->shard)
                return v4f_err_set(err, V4F_STATUS_FORMAT,
                                   "duplicate tensor name '%.*s' (in %s and %s)",
                                   shown(t->name.len), t->name.ptr, g->shards[o->shard].path,
                                   g->shards[t->shard].path);
            return v4f_err_set(err, V4F_STATUS_FORMAT, "duplicate tensor name '%.*s'",
                               shown(t->name.len), t->name.ptr);
        }
        g->t_slots[slot] = i + 1;
    }
    return check_overlap(g, err);
}

static v4f_status map_file(const char *path, shard *s, v4f_err *err) {
    memset(s, 0, sizeof *s);
    s->path = v4f_xstrdup(path);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* no hang on a FIFO */
    if (fd < 0) return v4f_err_set(err, V4F_STATUS_IO, "cannot open: %s", strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return v4f_err_set(err, V4F_STATUS_IO, "cannot stat: %s", strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return v4f_err_set(err, V4F_STATUS_IO, "not a regular file%s",
                           S_ISDIR(sb.st_mode) ? " (it is a directory)" : "");
    }
    s->size = (uint64_t)sb.st_size;
    if (s->size == 0 || s->size > SIZE_MAX) {
        close(fd);
        if (s->size == 0) return v4f_err_set(err, V4F_STATUS_FORMAT, "empty file (0 bytes)");
        return v4f_err_set(err, V4F_STATUS_IO, "file too large to map");
    }
    void *p = mmap(NULL, (size_t)s->size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED)
        return v4f_err_set(err, V4F_STATUS_IO, "mmap of %llu bytes failed: %s", U(s->size),
                           strerror(e));
    s->map = p;
    s->map_len = (size_t)s->size;
    s->base = p;
    return V4F_OK;
}

static void shard_release(shard *s) {
    if (s->map) munmap(s->map, s->map_len);
    free(s->path);
    memset(s, 0, sizeof *s);
}

void v4f_gguf_close(v4f_gguf *g) {
    if (!g) return;
    for (uint32_t i = 0; i < g->n_shards; i++) shard_release(&g->shards[i]);
    free(g->shards);
    meta_free(&g->m);
    free(g->t_slots);
    free(g->path);
    free(g);
}

v4f_status v4f_gguf_open_memory(const void *buf, size_t size, const char *name, v4f_gguf **out,
                                v4f_err *err) {
    *out = NULL;
    if (!name) name = "(memory)";
    v4f_gguf *g = v4f_xcalloc(1, sizeof *g);
    g->path = v4f_xstrdup(name);
    g->shards = v4f_xcalloc(1, sizeof *g->shards);
    g->n_shards = 1;
    g->shards[0].path = v4f_xstrdup(name);
    g->shards[0].base = buf;
    g->shards[0].size = buf ? size : 0;
    v4f_status st = parse_file(g->shards[0].base, g->shards[0].size, 0, &g->m, err);
    if (!st) st = build_tensor_table(g, err);
    if (st) {
        v4f_err_prefix(err, "%s", name);
        v4f_gguf_close(g);
        return st;
    }
    *out = g;
    return V4F_OK;
}

/* ---- split files ----------------------------------------------------------- */

/* "<prefix>-NNNNN-of-MMMMM.gguf" (gguf-split naming, 1-based NNNNN). */
#define SPLIT_SUFFIX_LEN 20

static bool split_name(const char *path, size_t *prefix_len, uint32_t *no, uint32_t *count) {
    size_t n = strlen(path);
    if (n < SPLIT_SUFFIX_LEN) return false;
    const char *s = path + n - SPLIT_SUFFIX_LEN;
    if (s[0] != '-' || memcmp(s + 6, "-of-", 4) != 0 || memcmp(s + 15, ".gguf", 5) != 0)
        return false;
    uint32_t a = 0, b = 0;
    for (int i = 0; i < 5; i++) {
        if (s[1 + i] < '0' || s[1 + i] > '9' || s[10 + i] < '0' || s[10 + i] > '9') return false;
        a = a * 10 + (uint32_t)(s[1 + i] - '0');
        b = b * 10 + (uint32_t)(s[10 + i] - '0');
    }
    if (a < 1 || b < 1 || a > b) return false;
    *prefix_len = n - SPLIT_SUFFIX_LEN;
    *no = a;
    *count = b;
    return true;
}

/* Optional integer key in [0, max]; *out untouched if absent. */
static v4f_status split_key(const meta *m, const char *key, uint64_t max, bool *present,
                            uint64_t *out, v4f_err *err) {
    const v4f_gguf_kv *kv = meta_find(m, key);
    bool neg;
    uint64_t v;
    *present = kv != NULL;
    if (!kv) return V4F_OK;
    if (!kv_int(kv, &neg, &v) || kv->type == V4F_GGUF_BOOL)
        return v4f_err_set(err, V4F_STATUS_FORMAT, "%s has type %s, expected an integer", key,
                           v4f_gguf_vtype_name(kv->type));
    if (neg || v > max)
        return v4f_err_set(err, V4F_STATUS_FORMAT, "%s = %s%llu out of range [0, %llu]", key,
                           neg ? "-" : "", U(v), U(max));
    *out = v;
    return V4F_OK;
}

/* split.count (1 if absent) and split.no (0 if absent) of a parsed file. */
static v4f_status split_info(const meta *m, uint32_t *count, uint32_t *no, v4f_err *err) {
    bool have_count, have_no;
    uint64_t c = 1, n = 0;
    v4f_status st = split_key(m, "split.count", MAX_SHARDS, &have_count, &c, err);
    if (!st) st = split_key(m, "split.no", MAX_SHARDS, &have_no, &n, err);
    if (st) return st;
    if (c == 0) return v4f_err_set(err, V4F_STATUS_FORMAT, "split.count = 0");
    if (n >= c)
        return v4f_err_set(err, V4F_STATUS_FORMAT, "split.no = %llu but split.count = %llu",
                           U(n), U(c));
    if (c > 1 && !have_no)
        return v4f_err_set(err, V4F_STATUS_FORMAT, "split.count = %llu but split.no is missing",
                           U(c));
    *count = (uint32_t)c;
    *no = (uint32_t)n;
    return V4F_OK;
}

/* Map and parse shard i of a split model into g (shards[i], tensors appended). */
static v4f_status add_shard(v4f_gguf *g, const char *path, uint32_t i, uint32_t count,
                            v4f_err *err) {
    meta m;
    uint32_t c, no;
    shard *s = &g->shards[i];
    v4f_status st = map_file(path, s, err);
    g->n_shards = i + 1;
    if (st) return st;
    st = parse_file(s->base, s->size, i, &m, err);
    if (!st) st = split_info(&m, &c, &no, err);
    if (!st && (c != count || no != i))
        st = v4f_err_set(err, V4F_STATUS_FORMAT,
                         "split.no = %u, split.count = %u; expected %u and %u", no, c, i, count);
    if (st) {
        meta_free(&m);
        return st;
    }
    if (i == 0) {
        g->m = m;
        return V4F_OK;
    }
    uint64_t n = g->m.n_tensors + m.n_tensors;
    g->m.tensors = v4f_xrealloc(g->m.tensors, (n ? n : 1) * sizeof *g->m.tensors);
    memcpy(g->m.tensors + g->m.n_tensors, m.tensors, m.n_tensors * sizeof *m.tensors);
    g->m.n_tensors = n;
    meta_free(&m);
    return V4F_OK;
}

/* Open all shards of prefix[0..plen)-NNNNN-of-count.gguf. */
static v4f_status open_split(v4f_gguf *g, const char *path, size_t plen, uint32_t count,
                             v4f_err *err) {
    size_t len = plen + SPLIT_SUFFIX_LEN + 1;
    char *name = v4f_xmalloc(len);
    v4f_status st = V4F_OK;
    g->shards = v4f_xcalloc(count, sizeof *g->shards);
    for (uint32_t i = 0; i < count && !st; i++) {
        snprintf(name, len, "%.*s-%05u-of-%05u.gguf", (int)plen, path, i + 1, count);
        st = add_shard(g, name, i, count, err);
        if (st) v4f_err_prefix(err, "%s (shard %u of %u)", name, i + 1, count);
    }
    free(name);
    if (st) return st;
    g->path = v4f_xstrdup(g->shards[0].path);
    bool have;
    uint64_t total = 0;
    if ((st = split_key(&g->m, "split.tensors.count", INT32_MAX, &have, &total, err)))
        return st;
    if (have && total != g->m.n_tensors)
        return v4f_err_set(err, V4F_STATUS_FORMAT,
                           "split.tensors.count = %llu but the %u shards hold %llu tensors",
                           U(total), count, U(g->m.n_tensors));
    return V4F_OK;
}

v4f_status v4f_gguf_open(const char *path, v4f_gguf **out, v4f_err *err) {
    *out = NULL;
    v4f_gguf *g = v4f_xcalloc(1, sizeof *g);
    g->shards = v4f_xcalloc(1, sizeof *g->shards);
    g->n_shards = 1;
    v4f_status st = map_file(path, &g->shards[0], err);
    uint32_t count = 1, no = 0, name_no = 0, name_count = 0;
    size_t plen = 0;
    bool named = split_name(path, &plen, &name_no, &name_count);
    if (!st) st = parse_file(g->shards[0].base, g->shards[0].size, 0, &g->m, err);
    if (!st) st = split_info(&g->m, &count, &no, err);
    if (!st && named && name_count > 1 && count != name_count)
        st = v4f_err_set(err, V4F_STATUS_FORMAT,
                         "file name says shard %u of %u but split.count = %u", name_no,
                         name_count, count);
    if (!st && count > 1 && !named)
        st = v4f_err_set(err, V4F_STATUS_FORMAT,
                         "split.count = %u but the name does not end in -NNNNN-of-%05u.gguf",
                         count, count);
    if (!st && count > 1 && no + 1 != name_no)
        st = v4f_err_set(err, V4F_STATUS_FORMAT, "file name says shard %u but split.no = %u",
                         name_no, no);
    if (st) {
        v4f_err_prefix(err, "%s", path);
        v4f_gguf_close(g);
        return st;
    }
    if (count > 1) {
        /* Reopen every shard in order; shard 0 supplies the metadata. */
        shard_release(&g->shards[0]);
        free(g->shards);
        g->shards = NULL;
        g->n_shards = 0;
        meta_free(&g->m);
        st = open_split(g, path, plen, count, err);
        if (!st) st = build_tensor_table(g, err);
        if (st && g->path) v4f_err_prefix(err, "%s", g->path);
    } else {
        g->path = v4f_xstrdup(path);
        st = build_tensor_table(g, err);
        if (st) v4f_err_prefix(err, "%s", path);
    }
    if (st) {
        v4f_gguf_close(g);
        return st;
    }
    *out = g;
    return V4F_OK;
}

/* ---- accessors ----------------------------------------------------------------- */

const char *v4f_gguf_path(const v4f_gguf *g) { return g->path; }
uint32_t v4f_gguf_version(const v4f_gguf *g) { return g->m.version; }
uint32_t v4f_gguf_alignment(const v4f_gguf *g) { return g->m.alignment; }
uint32_t v4f_gguf_n_shards(const v4f_gguf *g) { return g->n_shards; }

uint64_t v4f_gguf_file_size(const v4f_gguf *g) {
    uint64_t n = 0;
    for (uint32_t i = 0; i < g->n_shards; i++) n += g->shards[i].size;
    return n;
}

uint64_t v4f_gguf_n_kv(const v4f_gguf *g) { return g->m.n_kv; }

const v4f_gguf_kv *v4f_gguf_kv_at(const v4f_gguf *g, uint64_t i) {
    return i < g->m.n_kv ? &g->m.kvs[i] : NULL;
}

const v4f_gguf_kv *v4f_gguf_kv_find(const v4f_gguf *g, const char *key) {
    return meta_find(&g->m, key);
}

uint64_t v4f_gguf_n_tensors(const v4f_gguf *g) { return g->m.n_tensors; }

const v4f_gguf_tensor *v4f_gguf_tensor_at(const v4f_gguf *g, uint64_t i) {
    return i < g->m.n_tensors ? &g->m.tensors[i] : NULL;
}

const v4f_gguf_tensor *v4f_gguf_tensor_find(const v4f_gguf *g, const char *name) {
    if (!g->t_slots) return NULL;
    uint64_t s = g->t_slots[t_probe(g, name, strlen(name))];
    return s ? &g->m.tensors[s - 1] : NULL;
}

/* ---- typed getters --------------------------------------------------------------- */

static v4f_status get_kv(const v4f_gguf *g, const char *key, const v4f_gguf_kv **kv,
                        v4f_err *err) {
    *kv = meta_find(&g->m, key);
    if (*kv) return V4F_OK;
    v4f_err_set(err, V4F_STATUS_NOT_FOUND, "%s: key '%s' not found", g->path, key);
    return V4F_STATUS_NOT_FOUND;
}

static v4f_status mismatch(const v4f_gguf *g, const v4f_gguf_kv *kv, const char *want,
                           v4f_err *err) {
    return v4f_err_set(err, V4F_STATUS_FORMAT, "%s: key '%.*s' has type %s, expected %s",
                       g->path, shown(kv->key.len), kv->key.ptr, v4f_gguf_vtype_name(kv->type),
                       want);
}

static v4f_status get_uint(const v4f_gguf *g, const char *key, uint64_t max, const char *want,
                           uint64_t *out, v4f_err *err) {
    const v4f_gguf_kv *kv;
    bool neg;
    uint64_t v;
    v4f_status st = get_kv(g, key, &kv, err);
    if (st) return st;
    if (!kv_int(kv, &neg, &v)) return mismatch(g, kv, want, err);
    if (neg || v > max)
        return v4f_err_set(err, V4F_STATUS_FORMAT, "%s: key '%s' = %s%llu out of range for %s",
                           g->path, key, neg ? "-" : "", U(v), want);
    *out = v;
    return V4F_OK;
}

v4f_status v4f_gguf_get_u32(const v4f_gguf *g, const char *key, uint32_t *out, v4f_err *err) {
    uint64_t v;
    v4f_status st = get_uint(g, key, UINT32_MAX, "u32", &v, err);
    if (!st) *out = (uint32_t)v;
    return st;
}

v4f_status v4f_gguf_get_u64(const v4f_gguf *g, const char *key, uint64_t *out, v4f_err *err) {
    const v4f_gguf_kv *kv;
    v4f_status st = get_kv(g, key, &kv, err);
    if (st) return st;
    if (kv->type == V4F_GGUF_BOOL) return mismatch(g, kv, "u64", err);
    return get_uint(g, key, UINT64_MAX, "u64", out, err);
}

v4f_status v4f_gguf_get_f32(const v4f_gguf *g, const char *key, float *out, v4f_err *err) {
    const v4f_gguf_kv *kv;
    v4f_status st = get_kv(g, key, &kv, err);
    if (st) return st;
    if (kv->type != V4F_GGUF_F32 && kv->type != V4F_GGUF_F64)
        return mismatch(g, kv, "f32", err);
    double d = kv->v.f64;
    if (d == d && (d > 3.4028234663852886e38 || d < -3.4028234663852886e38) &&
        d - d == 0.0)
        return v4f_err_set(err, V4F_STATUS_FORMAT, "%s: key '%s' = %g out of range for f32",
                           g->path, key, d);
    *out = (float)d;
    return V4F_OK;
}

v4f_status v4f_gguf_get_bool(const v4f_gguf *g, const char *key, bool *out, v4f_err *err) {
    const v4f_gguf_kv *kv;
    v4f_status st = get_kv(g, key, &kv, err);
    if (st) return st;
    if (kv->type != V4F_GGUF_BOOL) return mismatch(g, kv, "bool", err);
    *out = kv->v.b;
    return V4F_OK;
}

v4f_status v4f_gguf_get_str(const v4f_gguf *g, const char *key, v4f_str *out, v4f_err *err) {
    const v4f_gguf_kv *kv;
    v4f_status st = get_kv(g, key, &kv, err);
    if (st) return st;
    if (kv->type != V4F_GGUF_STRING) return mismatch(g, kv, "string", err);
    *out = kv->v.str;
    return V4F_OK;
}

/* ---- arrays ---------------------------------------------------------------------- */

/* Pointer to fixed-size element i of a numeric array, NULL if not one. */
static const uint8_t *arr_elem(const v4f_gguf_kv *kv, uint64_t i) {
    if (!kv || kv->type != V4F_GGUF_ARRAY || i >= kv->arr_n) return NULL;
    uint32_t esz = v4f_gguf_vtype_size(kv->arr_type);
    if (!esz || i >= kv->val_bytes / esz) return NULL;
    return kv->val + i * esz;
}

bool v4f_gguf_arr_int(const v4f_gguf_kv *kv, uint64_t i, int64_t *out) {
    const uint8_t *p = arr_elem(kv, i);
    if (!p || (!vtype_is_int(kv->arr_type) && kv->arr_type != V4F_GGUF_BOOL)) return false;
    int64_t s = 0;
    uint64_t u = 0;
    int_at(p, kv->arr_type, &s, &u);
    if (vtype_is_signed(kv->arr_type)) {
        *out = s;
        return true;
    }
    if (u > (uint64_t)INT64_MAX) return false;
    *out = (int64_t)u;
    return true;
}

bool v4f_gguf_arr_float(const v4f_gguf_kv *kv, uint64_t i, double *out) {
    const uint8_t *p = arr_elem(kv, i);
    if (!p || kv->arr_type == V4F_GGUF_BOOL) return false;
    if (kv->arr_type == V4F_GGUF_F32) *out = f32_at(p);
    else if (kv->arr_type == V4F_GGUF_F64) *out = f64_at(p);
    else {
        int64_t s = 0;
        uint64_t u = 0;
        int_at(p, kv->arr_type, &s, &u);
        *out = vtype_is_signed(kv->arr_type) ? (double)s : (double)u;
    }
    return true;
}

bool v4f_gguf_arr_str(const v4f_gguf *g, const v4f_gguf_kv *kv, uint64_t i, v4f_str *out) {
    if (!kv || kv->type != V4F_GGUF_ARRAY || kv->arr_type != V4F_GGUF_STRING || i >= kv->arr_n)
        return false;
    uintptr_t a = (uintptr_t)kv, lo = (uintptr_t)g->m.kvs;
    if (g->m.n_kv && a >= lo && a < (uintptr_t)(g->m.kvs + g->m.n_kv)) {
        uint64_t k = (uint64_t)(a - lo) / sizeof *kv;
        if (g->m.kv_strs[k] && g->m.kvs[k].val == kv->val) {
            *out = g->m.kv_strs[k][i];
            return true;
        }
    }
    /* Not one of ours (a copy or a nested view): walk, bounds-checked. */
    cursor c = {kv->val, kv->val_bytes, 0, NULL, 0};
    v4f_str s;
    for (uint64_t j = 0; j <= i; j++)
        if (rd_str(&c, "string", &s)) return false;
    *out = s;
    return true;
}

bool v4f_gguf_arr_sub(const v4f_gguf_kv *kv, uint64_t i, v4f_gguf_kv *out) {
    if (!kv || kv->type != V4F_GGUF_ARRAY || kv->arr_type != V4F_GGUF_ARRAY || i >= kv->arr_n)
        return false;
    cursor c = {kv->val, kv->val_bytes, 0, NULL, 0};
    for (uint64_t j = 0; j < i; j++)
        if (skip_value(&c, V4F_GGUF_ARRAY, 2)) return false;
    uint64_t start = c.pos;
    uint32_t t;
    uint64_t n;
    if (skip_array(&c, 2, &t, &n, NULL)) return false;
    memset(out, 0, sizeof *out);
    out->key = kv->key;
    out->type = V4F_GGUF_ARRAY;
    out->arr_type = t;
    out->arr_n = n;
    out->val = kv->val + start + MIN_ARRAY_BYTES;
    out->val_bytes = c.pos - start - MIN_ARRAY_BYTES;
    return true;
}
