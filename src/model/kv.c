/*
 * kv.c - session KV cache: allocation from ctx, row storage in REF (f32) or
 * COMPACT (FP8/FP4 codes + exponents, exact) form. See kv.h.
 *
 * Compact compressed row layout (hd = head dim, nope = hd - n_rot):
 *   [nope FP8 E4M3 codes][nope/64 exponent bytes (int8)][n_rot float32]
 * Compact indexer row layout: [idx_hd/2 FP4 code bytes][idx_hd/32 exponents].
 *
 * Paged mode: one file in the page directory holds the ratio-4 compressed
 * rows of every layer, each layer's region starting on a page boundary;
 * mkstemp -> unlink -> posix_fallocate -> mmap(MAP_SHARED) -> close(fd).
 *
 * Ownership: everything is allocated in v4f_kv_new and freed in v4f_kv_free.
 * Threading: see kv.h.
 */
#include "model/kv.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "backend/cpu/ops.h"

uint64_t v4f_kv_comp_row_bytes(uint32_t hd, uint32_t n_rot, bool compact) {
    if (!compact) return (uint64_t)hd * 4;
    uint32_t nope = hd - n_rot;
    return nope + nope / 64 + (uint64_t)n_rot * 4;
}

uint64_t v4f_kv_idx_row_bytes(uint32_t idx_hd, bool compact) {
    if (!compact) return (uint64_t)idx_hd * 4;
    return idx_hd / 2 + idx_hd / 32;
}

bool v4f_kv_compact_supported(const v4f_config *cfg) {
    return (cfg->head_dim - cfg->n_rot) % 64 == 0 && cfg->idx_head_dim % 32 == 0;
}

static uint32_t coff_of(uint32_t ratio) { return ratio == 4 ? 2 : 1; }

/* frontier floats of one compressor of row width D (values + scores) */
static uint64_t frontier_floats(uint32_t ratio, uint32_t D) {
    uint32_t c = coff_of(ratio);
    return 2ull * c * ratio * c * D;
}

static uint64_t layer_bytes(const v4f_config *cfg, uint32_t ratio, uint64_t n_ctx, bool compact) {
    uint64_t b = (uint64_t)cfg->n_swa * cfg->head_dim * 4;
    if (ratio) {
        uint64_t cap = n_ctx / ratio + 2;
        b += cap * v4f_kv_comp_row_bytes(cfg->head_dim, cfg->n_rot, compact);
        b += frontier_floats(ratio, cfg->head_dim) * 4;
        if (ratio == 4) {
            b += cap * v4f_kv_idx_row_bytes(cfg->idx_head_dim, compact);
            b += frontier_floats(ratio, cfg->idx_head_dim) * 4;
        }
    }
    return b;
}

uint64_t v4f_kv_bytes_for_ctx(const v4f_config *cfg, uint64_t n_ctx, bool compact) {
    uint64_t t = 0;
    for (uint32_t l = 0; l < cfg->n_layer; l++)
        t += layer_bytes(cfg, cfg->compress_ratio[l], n_ctx, compact);
    return t;
}

double v4f_kv_bytes_per_token(const v4f_config *cfg, bool compact) {
    double t = 0;
    for (uint32_t l = 0; l < cfg->n_layer; l++) {
        uint32_t r = cfg->compress_ratio[l];
        if (!r) continue;
        double row = (double)v4f_kv_comp_row_bytes(cfg->head_dim, cfg->n_rot, compact);
        if (r == 4) row += (double)v4f_kv_idx_row_bytes(cfg->idx_head_dim, compact);
        t += row / r;
    }
    return t;
}

void v4f_kv_published_config(v4f_config *c) {
    memset(c, 0, sizeof *c);
    c->n_layer = 43;
    c->head_dim = 512;
    c->n_rot = 64;
    c->idx_head_dim = 128;
    c->n_swa = 128;
    for (uint32_t l = 0; l < 43; l++) c->compress_ratio[l] = l < 2 ? 0 : (l % 2 == 0 ? 4 : 128);
    c->n_compress_ratio = 43;
}

static void *kv_alloc(v4f_kv *kv, uint64_t bytes, bool *ok) {
    if (!*ok || bytes == 0) return NULL;
    void *p = v4f_aligned_alloc((size_t)bytes);
    if (!p) *ok = false;
    kv->total_bytes += bytes;
    return p;
}

#define KV_PAGE 4096ull

static uint64_t page_round(uint64_t b) { return (b + KV_PAGE - 1) / KV_PAGE * KV_PAGE; }

/* Create, reserve and map the backing file of `bytes` into *out. */
static v4f_status page_map_create(const char *dir, uint64_t bytes, uint8_t **out, v4f_err *err) {
    char path[4096];
    *out = NULL;
    if (snprintf(path, sizeof path, "%s/v4flash-kv-XXXXXX", dir) >= (int)sizeof path)
        return v4f_err_set(err, V4F_STATUS_INVALID_ARG, "KV page dir path too long: %s", dir);
    int fd = mkstemp(path);
    if (fd < 0)
        return v4f_err_set(err, V4F_STATUS_IO, "cannot create the KV page file in %s: %s", dir,
                           strerror(errno));
    unlink(path); /* anonymous from now on: freed at close/unmap or process death */
    int e = posix_fallocate(fd, 0, (off_t)bytes);
    if (e) {
        close(fd);
        return v4f_err_set(err, V4F_STATUS_IO,
                           "cannot reserve %llu bytes (%.2f GiB) for the KV page file %s: %s",
                           (unsigned long long)bytes, (double)bytes / (1024.0 * 1024 * 1024),
                           path, strerror(e));
    }
    void *p = mmap(NULL, (size_t)bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    e = errno;
    close(fd);
    if (p == MAP_FAILED)
        return v4f_err_set(err, V4F_STATUS_IO, "cannot map %llu bytes of the KV page file %s: %s",
                           (unsigned long long)bytes, path, strerror(e));
    madvise(p, (size_t)bytes, MADV_RANDOM); /* a step reads scattered rows: no readahead */
    *out = p;
    return V4F_OK;
}

v4f_status v4f_kv_new(const v4f_config *cfg, uint64_t n_ctx, bool compact, bool with_mtp,
                      v4f_kv **out, v4f_err *err) {
    return v4f_kv_new_paged(cfg, n_ctx, compact, with_mtp, NULL, out, err);
}

v4f_status v4f_kv_new_paged(const v4f_config *cfg, uint64_t n_ctx, bool compact, bool with_mtp,
                            const char *page_dir, v4f_kv **out, v4f_err *err) {
    *out = NULL;
    if (compact && !v4f_kv_compact_supported(cfg)) {
        v4f_log(V4F_LOG_WARN, "compact KV needs (head_dim - n_rot) %% 64 == 0 and indexer dim %% 32 "
                              "== 0; storing float32 rows");
        compact = false;
    }
    v4f_kv *kv = v4f_xcalloc(1, sizeof *kv);
    kv->compact = compact;
    kv->n_layer = cfg->n_layer;
    kv->has_mtp = with_mtp;
    kv->n_swa = cfg->n_swa;
    kv->hd = cfg->head_dim;
    kv->n_rot = cfg->n_rot;
    kv->idx_hd = cfg->idx_head_dim;
    kv->n_ctx = n_ctx;
    kv->comp_row_bytes = v4f_kv_comp_row_bytes(kv->hd, kv->n_rot, compact);
    kv->idx_row_bytes = v4f_kv_idx_row_bytes(kv->idx_hd, compact);
    uint32_t nl = cfg->n_layer + (with_mtp ? 1 : 0);
    kv->layers = v4f_xcalloc(nl, sizeof *kv->layers);
    if (page_dir) {
        uint64_t pb = 0;
        for (uint32_t l = 0; l < cfg->n_layer; l++)
            if (cfg->compress_ratio[l] == 4)
                pb += page_round((n_ctx / 4 + 2) * kv->comp_row_bytes);
        if (pb) {
            v4f_status st = page_map_create(page_dir, pb, &kv->page_map, err);
            if (st) {
                free(kv->layers);
                free(kv);
                return st;
            }
            kv->page_bytes = pb;
        }
    }
    bool ok = true;
    uint64_t page_off = 0;
    for (uint32_t l = 0; l < nl; l++) {
        v4f_kv_layer *L = &kv->layers[l];
        uint32_t r = l < cfg->n_layer ? cfg->compress_ratio[l] : 0;
        L->ratio = r;
        L->raw = kv_alloc(kv, (uint64_t)kv->n_swa * kv->hd * 4, &ok);
        if (!r) continue;
        L->comp_cap = (uint32_t)(n_ctx / r + 2);
        uint64_t cb = (uint64_t)L->comp_cap * kv->comp_row_bytes;
        if (r == 4 && kv->page_map) {
            L->comp = kv->page_map + page_off;
            page_off += page_round(cb);
            kv->total_bytes += cb;
        } else {
            L->comp = kv_alloc(kv, cb, &ok);
        }
        uint64_t ff = frontier_floats(r, kv->hd) / 2;
        L->c_kv = kv_alloc(kv, ff * 4, &ok);
        L->c_sc = kv_alloc(kv, ff * 4, &ok);
        if (r == 4) {
            L->idx = kv_alloc(kv, (uint64_t)L->comp_cap * kv->idx_row_bytes, &ok);
            uint64_t fi = frontier_floats(r, kv->idx_hd) / 2;
            L->i_kv = kv_alloc(kv, fi * 4, &ok);
            L->i_sc = kv_alloc(kv, fi * 4, &ok);
        }
    }
    if (!ok) {
        v4f_kv_free(kv);
        return v4f_err_set(err, V4F_STATUS_OOM, "cannot allocate the KV cache for ctx %llu",
                           (unsigned long long)n_ctx);
    }
    v4f_kv_reset(kv);
    *out = kv;
    return V4F_OK;
}

void v4f_kv_free(v4f_kv *kv) {
    if (!kv) return;
    uint32_t nl = kv->n_layer + (kv->has_mtp ? 1 : 0);
    for (uint32_t l = 0; l < nl; l++) {
        v4f_kv_layer *L = &kv->layers[l];
        v4f_aligned_free(L->raw);
        if (!(kv->page_map && L->ratio == 4)) v4f_aligned_free(L->comp);
        v4f_aligned_free(L->idx);
        v4f_aligned_free(L->c_kv);
        v4f_aligned_free(L->c_sc);
        v4f_aligned_free(L->i_kv);
        v4f_aligned_free(L->i_sc);
    }
    if (kv->page_map) munmap(kv->page_map, (size_t)kv->page_bytes);
    free(kv->layers);
    free(kv);
}

uint64_t v4f_kv_paged_resident(const v4f_kv *kv) {
    if (!kv->page_map) return 0;
    const uint64_t chunk = 1ull << 28; /* 256 MiB of pages per mincore call */
    unsigned char *vec = v4f_xmalloc((size_t)(chunk / KV_PAGE));
    uint64_t n = 0;
    for (uint64_t off = 0; off < kv->page_bytes; off += chunk) {
        uint64_t len = kv->page_bytes - off < chunk ? kv->page_bytes - off : chunk;
        if (mincore(kv->page_map + off, (size_t)len, vec)) break;
        for (uint64_t i = 0; i < len / KV_PAGE; i++) n += vec[i] & 1;
    }
    free(vec);
    return n * KV_PAGE;
}

void v4f_kv_page_out(v4f_kv *kv) {
    if (!kv->page_map) return;
    msync(kv->page_map, (size_t)kv->page_bytes, MS_SYNC);
#ifdef MADV_PAGEOUT
    madvise(kv->page_map, (size_t)kv->page_bytes, MADV_PAGEOUT);
#endif
    madvise(kv->page_map, (size_t)kv->page_bytes, MADV_DONTNEED);
}

void v4f_kv_step_working_set(const v4f_config *cfg, uint64_t pos, bool compact, uint32_t topk,
                             uint64_t *hot, uint64_t *cold) {
    uint64_t h = 0, c = 0;
    const uint64_t crb = v4f_kv_comp_row_bytes(cfg->head_dim, cfg->n_rot, compact);
    const uint64_t irb = v4f_kv_idx_row_bytes(cfg->idx_head_dim, compact);
    for (uint32_t l = 0; l < cfg->n_layer; l++) {
        uint32_t r = cfg->compress_ratio[l];
        h += (uint64_t)cfg->n_swa * cfg->head_dim * 4;
        if (r == 4) {
            uint64_t n = pos / 4, k = topk < n ? topk : n;
            h += n * irb;
            c += k * (KV_PAGE + crb - 1); /* expected page bytes a row of crb touches */
        } else if (r) {
            h += pos / r * crb;
        }
    }
    *hot = h;
    *cold = c;
}

static float rnd_unit(uint64_t *x) {
    *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
    return (float)((int64_t)(*x >> 11) - (1ll << 52)) / (float)(1ll << 52); /* [-1, 1) */
}

void v4f_kv_fill_synthetic(v4f_kv *kv, uint64_t pos, uint64_t seed) {
    v4f_kv_reset(kv);
    uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 0x1234567ULL;
    float *row = v4f_xmalloc((size_t)(kv->hd > kv->idx_hd ? kv->hd : kv->idx_hd) * sizeof(float));
    for (uint32_t l = 0; l < kv->n_layer; l++) {
        v4f_kv_layer *L = &kv->layers[l];
        uint64_t nr = (uint64_t)kv->n_swa * kv->hd;
        for (uint64_t i = 0; i < nr; i++) L->raw[i] = rnd_unit(&x);
        if (!L->ratio) continue;
        uint64_t n = pos / L->ratio;
        if (n > L->comp_cap) n = L->comp_cap;
        for (uint64_t i = 0; i < n; i++) {
            for (uint32_t d = 0; d < kv->hd; d++) row[d] = rnd_unit(&x);
            v4f_kv_comp_put(kv, L, (uint32_t)i, row);
            if (L->ratio == 4) {
                for (uint32_t d = 0; d < kv->idx_hd; d++) row[d] = rnd_unit(&x);
                v4f_kv_idx_put(kv, L, (uint32_t)i, row);
            }
        }
        L->n_comp = (uint32_t)n;
        L->n_idx = L->ratio == 4 ? (uint32_t)n : 0;
    }
    free(row);
}

static void frontier_reset(float *val, float *sc, uint64_t n) {
    if (!val) return;
    memset(val, 0, n * sizeof(float));
    for (uint64_t i = 0; i < n; i++) sc[i] = -INFINITY;
}

void v4f_kv_reset(v4f_kv *kv) {
    uint32_t nl = kv->n_layer + (kv->has_mtp ? 1 : 0);
    for (uint32_t l = 0; l < nl; l++) {
        v4f_kv_layer *L = &kv->layers[l];
        L->n_comp = L->n_idx = 0;
        memset(L->raw, 0, (size_t)kv->n_swa * kv->hd * sizeof(float));
        if (L->ratio) {
            frontier_reset(L->c_kv, L->c_sc, frontier_floats(L->ratio, kv->hd) / 2);
            if (L->ratio == 4) frontier_reset(L->i_kv, L->i_sc, frontier_floats(4, kv->idx_hd) / 2);
        }
    }
}

void v4f_kv_comp_put(const v4f_kv *kv, v4f_kv_layer *L, uint32_t i, const float *row) {
    V4F_ASSERT(i < L->comp_cap);
    uint8_t *dst = L->comp + (uint64_t)i * kv->comp_row_bytes;
    if (!kv->compact) {
        memcpy(dst, row, (size_t)kv->hd * 4);
        return;
    }
    uint32_t nope = kv->hd - kv->n_rot, nb = nope / 64;
    for (uint32_t b = 0; b < nb; b++)
        v4f_fp8_encode_block64(row + 64 * b, dst + 64 * b, (int8_t *)(dst + nope + b));
    memcpy(dst + nope + nb, row + nope, (size_t)kv->n_rot * 4);
}

void v4f_kv_comp_get(const v4f_kv *kv, const v4f_kv_layer *L, uint32_t i, float *row) {
    const uint8_t *src = L->comp + (uint64_t)i * kv->comp_row_bytes;
    if (!kv->compact) {
        memcpy(row, src, (size_t)kv->hd * 4);
        return;
    }
    uint32_t nope = kv->hd - kv->n_rot, nb = nope / 64;
    for (uint32_t b = 0; b < nb; b++)
        v4f_fp8_decode_block64(src + 64 * b, (int8_t)src[nope + b], row + 64 * b);
    memcpy(row + nope, src + nope + nb, (size_t)kv->n_rot * 4);
}

const float *v4f_kv_comp_ptr(const v4f_kv *kv, const v4f_kv_layer *L, uint32_t i) {
    if (kv->compact) return NULL;
    return (const float *)(L->comp + (uint64_t)i * kv->comp_row_bytes);
}

void v4f_kv_idx_put(const v4f_kv *kv, v4f_kv_layer *L, uint32_t i, const float *row) {
    V4F_ASSERT(i < L->comp_cap);
    uint8_t *dst = L->idx + (uint64_t)i * kv->idx_row_bytes;
    if (!kv->compact) {
        memcpy(dst, row, (size_t)kv->idx_hd * 4);
        return;
    }
    uint32_t nb = kv->idx_hd / 32;
    for (uint32_t b = 0; b < nb; b++)
        v4f_fp4_encode_block32(row + 32 * b, dst + 16 * b, (int8_t *)(dst + kv->idx_hd / 2 + b));
}

void v4f_kv_idx_get(const v4f_kv *kv, const v4f_kv_layer *L, uint32_t i, float *row) {
    const uint8_t *src = L->idx + (uint64_t)i * kv->idx_row_bytes;
    if (!kv->compact) {
        memcpy(row, src, (size_t)kv->idx_hd * 4);
        return;
    }
    uint32_t nb = kv->idx_hd / 32;
    for (uint32_t b = 0; b < nb; b++)
        v4f_fp4_decode_block32(src + 16 * b, (int8_t)src[kv->idx_hd / 2 + b], row + 32 * b);
}

const float *v4f_kv_idx_ptr(const v4f_kv *kv, const v4f_kv_layer *L, uint32_t i) {
    if (kv->compact) return NULL;
    return (const float *)(L->idx + (uint64_t)i * kv->idx_row_bytes);
}
