/*
 * test_kvstore.c - the disk KV store (src/kvstore): XXH64 vectors, file
 * round trips with streamed synthetic payloads, longest-prefix lookup,
 * corruption (flipped bytes, truncation, empty / foreign / wrong-model /
 * wrong-version / wrong-layout files), unwritable directory, simulated full
 * disk, eviction under a small budget, named sessions, temp-file cleanup,
 * two concurrent processes, and the save policy.
 *
 * Every test works in its own directory under test_tmp_dir(). Single
 * threaded; the concurrency test forks and each child opens its own store.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kvstore/kvstore.h"
#include "../test.h"

/* ---- helpers ---------------------------------------------------------------------- */

static const char *mkdir_test(const char *name) {
    static char bufs[4][512];
    static unsigned next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof bufs[0], "%s/kv-%s", test_tmp_dir(), name);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", b);
    if (system(cmd) != 0) return b;
    return b;
}

static v4f_kv_ident ident_a(void) {
    v4f_kv_ident id = {{0x1111111111111111ULL, 0x2222222222222222ULL},
                       {0xfa11fa11fa11fa11ULL, 0x0000000000000001ULL}, 7, 4096};
    return id;
}

/* Byte i of the synthetic payload for seed: cheap and position-dependent. */
static uint8_t pay_byte(uint64_t seed, uint64_t i) {
    uint64_t z = (i + seed * 0x9E3779B97F4A7C15ULL) * 0xBF58476D1CE4E5B9ULL;
    return (uint8_t)((z ^ (z >> 29)) >> 17);
}

typedef struct producer {
    uint64_t seed, n;
    uint64_t fail_at;       /* return an error once this many bytes were written (0 = never) */
    test_rng rng;           /* piece sizes */
} producer;

static v4f_status produce_cb(void *ud, v4f_kv_sink *sink, v4f_err *err) {
    producer *p = ud;
    static uint8_t buf[3u << 20];
    uint64_t done = 0;
    while (done < p->n) {
        uint64_t r = test_rng_u64(&p->rng);
        uint64_t piece = (r & 3) == 0 ? (r >> 8) % sizeof buf + 1 : (r >> 8) % 5000 + 1;
        if (piece > p->n - done) piece = p->n - done;
        if (p->fail_at && done + piece >= p->fail_at)
            return v4f_err_set(err, V4F_STATUS_INTERRUPTED, "synthetic producer failure at %llu",
                               (unsigned long long)done);
        for (uint64_t i = 0; i < piece; i++) buf[i] = pay_byte(p->seed, done + i);
        v4f_status st = v4f_kv_sink_write(sink, buf, (size_t)piece);
        if (st) return st;
        done += piece;
    }
    return V4F_OK;
}

typedef struct consumer {
    uint64_t seed;
    uint64_t expect_n;
    int64_t read_limit; /* read only this many bytes (-1 = all) */
    bool over_read;
    bool ok;
    test_rng rng;
} consumer;

static v4f_status consume_cb(void *ud, v4f_kv_source *src, uint64_t n, v4f_err *err) {
    consumer *c = ud;
    static uint8_t buf[3u << 20];
    c->ok = c->expect_n == UINT64_MAX || n == c->expect_n;
    uint64_t want = c->read_limit >= 0 && (uint64_t)c->read_limit < n ? (uint64_t)c->read_limit : n;
    uint64_t done = 0;
    while (done < want) {
        uint64_t r = test_rng_u64(&c->rng);
        uint64_t piece = (r & 3) == 0 ? (r >> 8) % sizeof buf + 1 : (r >> 8) % 7000 + 1;
        if (piece > want - done) piece = want - done;
        v4f_status st = v4f_kv_source_read(src, buf, (size_t)piece);
        if (st) return st;
        for (uint64_t i = 0; i < piece; i++)
            if (buf[i] != pay_byte(c->seed, done + i)) {
                c->ok = false;
                return v4f_err_set(err, V4F_STATUS_FORMAT, "payload byte %llu differs",
                                   (unsigned long long)(done + i));
            }
        done += piece;
    }
    if (c->over_read) return v4f_kv_source_read(src, buf, 1);
    return V4F_OK;
}

static int32_t *make_tokens(uint32_t n, uint64_t seed) {
    int32_t *t = malloc((n ? n : 1) * sizeof *t);
    test_rng r = {seed};
    for (uint32_t i = 0; i < n; i++) t[i] = (int32_t)(test_rng_u64(&r) % 129280);
    return t;
}

static v4f_status save_n(v4f_kvstore *s, const int32_t *tok, uint32_t n, const v4f_kv_ident *id,
                         uint64_t seed, uint64_t bytes, uint32_t reason, char *name) {
    producer p = {seed, bytes, 0, {seed ^ 77}};
    v4f_kvstore_save_opts so = {.reason = reason};
    v4f_err err = {0};
    v4f_status st = v4f_kvstore_save(s, tok, n, id, &so, produce_cb, &p, name, &err);
    if (st && test_verbose()) printf("    save: %s\n", err.msg);
    return st;
}

static v4f_status load_check(v4f_kvstore *s, const char *name, const v4f_kv_ident *id, uint64_t seed,
                             uint64_t bytes, v4f_err *err) {
    consumer c = {seed, bytes, -1, false, false, {seed ^ 99}};
    v4f_status st = v4f_kvstore_load(s, name, id, false, consume_cb, &c, NULL, NULL, err);
    if (!st && !c.ok) return V4F_STATUS_FORMAT;
    return st;
}

static size_t read_file(const char *path, uint8_t **out) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *out = malloc((size_t)n + 1);
    size_t got = fread(*out, 1, (size_t)n, f);
    fclose(f);
    return got;
}

static void write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    if (n) fwrite(p, 1, n, f);
    fclose(f);
}

static int count_files(const char *dir, const char *suffix) {
    char cmd[700];
    snprintf(cmd, sizeof cmd, "ls -a '%s' | grep -c -- '%s$' > '%s/.count'", dir, suffix, test_tmp_dir());
    if (system(cmd) < 0) return -1;
    char p[600];
    snprintf(p, sizeof p, "%s/.count", test_tmp_dir());
    FILE *f = fopen(p, "r");
    int n = -1;
    if (f) {
        if (fscanf(f, "%d", &n) != 1) n = -1;
        fclose(f);
    }
    return n;
}

/* ---- hash ---------------------------------------------------------------------------- */

TEST(kvstore_xxh64_vectors) {
    CHECK(v4f_kvstore_xxh64_oneshot("", 0, 0) == 0xEF46DB3751D8E999ULL);
    CHECK(v4f_kvstore_xxh64_oneshot("abc", 3, 0) == 0x44BC2CF5AD770999ULL);
    const char *s = "Nobody inspects the spammish repetition";
    CHECK(v4f_kvstore_xxh64_oneshot(s, strlen(s), 0) == 0xFBCEA83C8A378BF1ULL);
    /* streaming == one-shot for every split of random data */
    uint8_t buf[1000];
    test_rng r = {5};
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (uint8_t)test_rng_u64(&r);
    for (int trial = 0; trial < 200; trial++) {
        size_t n = (size_t)(test_rng_u64(&r) % sizeof buf);
        uint64_t seed = trial & 1 ? test_rng_u64(&r) : 0;
        v4f_kvstore_xxh64 st;
        v4f_kvstore_xxh64_init(&st, seed);
        size_t done = 0;
        while (done < n) {
            size_t piece = (size_t)(test_rng_u64(&r) % 70);
            if (piece > n - done) piece = n - done;
            v4f_kvstore_xxh64_update(&st, buf + done, piece);
            done += piece;
        }
        CHECK(v4f_kvstore_xxh64_digest(&st) == v4f_kvstore_xxh64_oneshot(buf, n, seed));
    }
}

/* ---- round trip --------------------------------------------------------------------- */

TEST(kvstore_roundtrip_sizes) {
    const char *dir = mkdir_test("rt");
    v4f_kvstore *s = NULL;
    v4f_err err = {0};
    REQUIRE(v4f_kvstore_open(dir, 0, &s, &err) == V4F_OK);
    v4f_kv_ident id = ident_a();
    const uint64_t sizes[] = {0, 1, 31, 4095, 4096, 100003, (6u << 20) + 17};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        uint32_t n_tok = (uint32_t)(1 + k * 700);
        int32_t *tok = make_tokens(n_tok, 100 + k);
        char name[V4F_KVSTORE_NAME_MAX];
        CHECK_STATUS(save_n(s, tok, n_tok, &id, 1000 + k, sizes[k], V4F_KV_REASON_MANUAL, name), V4F_OK);
        consumer c = {1000 + k, sizes[k], -1, false, false, {k}};
        int32_t *back = NULL;
        uint32_t n_back = 0;
        CHECK_STATUS(v4f_kvstore_load(s, name, &id, false, consume_cb, &c, &back, &n_back, &err), V4F_OK);
        CHECK(c.ok);
        CHECK_EQ_INT(n_back, n_tok);
        CHECK(back && !memcmp(back, tok, n_tok * sizeof *tok));
        char path[700];
        snprintf(path, sizeof path, "%s/%s", dir, name);
        v4f_kvfile_header h;
        CHECK_STATUS(v4f_kvfile_verify_path(path, &h, &err), V4F_OK);
        CHECK(h.payload_bytes == sizes[k]);
        CHECK(h.payload_offset % V4F_KVFILE_ALIGN == 0);
        CHECK_EQ_INT(h.hits, 1); /* the load above */
        CHECK(h.stats_ok);
        free(back);
        free(tok);
    }
    v4f_kvstore_close(s);
}

TEST(kvstore_reader_mismatch) {
    const char *dir = mkdir_test("rdr");
    v4f_kvstore *s = NULL;
    v4f_err err = {0};
    REQUIRE(v4f_kvstore_open(dir, 0, &s, &err) == V4F_OK);
    v4f_kv_ident id = ident_a();
    int32_t *tok = make_tokens(40, 3);
    char name[V4F_KVSTORE_NAME_MAX];
    REQUIRE(save_n(s, tok, 40, &id, 9, 50000, 0, name) == V4F_OK);
    consumer c = {9, 50000, 1000, false, false, {1}}; /* leaves bytes unread */
    CHECK_STATUS(v4f_kvstore_load(s, name, &id, false, consume_cb, &c, NULL, NULL, &err), V4F_STATUS_LAYOUT);
    CHECK(strstr(err.msg, "unread") != NULL);
    consumer c2 = {9, 50000, -1, true, false, {2}}; /* reads past the end */
    CHECK_STATUS(v4f_kvstore_load(s, name, &id, false, consume_cb, &c2, NULL, NULL, &err), V4F_STATUS_LAYOUT);
    /* neither is damage: the file stays and still loads */
    CHECK_STATUS(load_check(s, name, &id, 9, 50000, &err), V4F_OK);
    CHECK_EQ_INT(count_files(dir, ".bad"), 0);
    free(tok);
    v4f_kvstore_close(s);
}

/* ---- lookup ---------------------------------------------------------------------------- */

TEST(kvstore_lookup_longest_prefix) {
    const char *dir = mkdir_test("lk");
    v4f_kvstore *s = NULL;
    v4f_err err = {0};
    REQUIRE(v4f_kvstore_open(dir, 0, &s, &err) == V4F_OK);
    v4f_kv_ident id = ident_a();
    int32_t *q = make_tokens(200, 42);
    int32_t *other = make_tokens(200, 42);
    other[60] ^= 1; /* diverges at 60 */
    REQUIRE(save_n(s, q, 10, &id, 1, 100, 0, NULL) == V4F_OK);
    REQUIRE(save_n(s, q, 50, &id, 2, 200, 0, NULL) == V4F_OK);
    REQUIRE(save_n(s, q, 100, &id, 3, 300, 0, NULL) == V4F_OK);
    REQUIRE(save_n(s, other, 150, &id, 4, 400, 0, NULL) == V4F_OK);
    v4f_kv_ident id2 = id;
    id2.model_fp.lo ^= 5; /* a q2/q4 sibling: same family */
    REQUIRE(save_n(s, q, 120, &id2, 5, 500, 0, NULL) == V4F_OK);

    v4f_kvstore_match m;
    CHECK_STATUS(v4f_kvstore_lookup(s, q, 200, &id, NULL, &m, &err), V4F_OK);
    CHECK_EQ_INT(m.n_tokens, 100);
    CHECK_STATUS(v4f_kvstore_lookup(s, q, 99, &id, NULL, &m, &err), V4F_OK);
    CHECK_EQ_INT(m.n_tokens, 50);
    CHECK_STATUS(v4f_kvstore_lookup(s, q, 50, &id, NULL, &m, &err), V4F_OK);
    CHECK_EQ_INT(m.n_tokens, 50);
    CHECK_STATUS(v4f_kvstore_lookup(s, q, 9, &id, NULL, &m, &err), V4F_STATUS_NOT_FOUND);
    CHECK_STATUS(v4f_kvstore_lookup(s, other, 200, &id, NULL, &m, &err), V4F_OK);
    CHECK_EQ_INT(m.n_tokens, 150);
    CHECK_STATUS(load_check(s, m.name, &id, 4, 400, &err), V4F_OK);
    /* family sharing only on request */
    v4f_kvstore_lookup_opts lo = {.allow_family = true};
    CHECK_STATUS(v4f_kvstore_lookup(s, q, 200, &id, &lo, &m, &err), V4F_OK);
    CHECK_EQ_INT(m.n_tokens, 120);
    v4f_kv_ident id3 = id;
    id3.family_fp.hi ^= 1;
    id3.model_fp.hi ^= 1;
    CHECK_STATUS(v4f_kvstore_lookup(s, q, 200, &id3, &lo, &m, &err), V4F_STATUS_NOT_FOUND);
    /* layout version and min/ctx filters */
    v4f_kv_ident id4 = id;
    id4.layout_version++;
    CHECK_STATUS(v4f_kvstore_lookup(s, q, 200, &id4, NULL, &m, &err), V4F_STATUS_NOT_FOUND);
    v4f_kvstore_lookup_opts lo2 = {.min_tokens = 60};
    CHECK_STATUS(v4f_kvstore_lookup(s, q, 99, &id, &lo2, &m, &err), V4F_STATUS_NOT_FOUND);
    CHECK_STATUS(v4f_kvstore_lookup(s, q, 200, &id, &lo2, &m, &err), V4F_OK);
    v4f_kvstore_lookup_opts lo3 = {.max_ctx = 2048}; /* entries were written for 4096 */
    CHECK_STATUS(v4f_kvstore_lookup(s, q, 200, &id, &lo3, &m, &err), V4F_STATUS_NOT_FOUND);
    free(q);
    free(other);
    v4f_kvstore_close(s);
}

TEST(kvstore_lookup_text) {
    const char *dir = mkdir_test("lt");
    v4f_kvstore *s = NULL;
    v4f_err err = {0};
    REQUIRE(v4f_kvstore_open(dir, 0, &s, &err) == V4F_OK);
    v4f_kv_ident id = ident_a();
    const char *text = "<|User|>hello there, a long system prompt<|Assistant|>sure<|User|>more";
    size_t cuts[] = {8, 40, 55};
    for (int i = 0; i < 3; i++) {
        int32_t tok[3] = {1, 2, i};
        producer p = {7, 64, 0, {1}};
        v4f_kvstore_save_opts so = {.has_text = true,
                                    .text_bytes = cuts[i],
                                    .text_hash = v4f_kvstore_xxh64_oneshot(text, cuts[i], 0)};
        CHECK_STATUS(v4f_kvstore_save(s, tok, 3, &id, &so, produce_cb, &p, NULL, &err), V4F_OK);
    }
    v4f_kvstore_match m;
    CHECK_STATUS(v4f_kvstore_lookup_text(s, text, strlen(text), &id, NULL, &m, &err), V4F_OK);
    CHECK(m.hdr.text_bytes == 55);
    CHECK_STATUS(v4f_kvstore_lookup_text(s, text, 54, &id, NULL, &m, &err), V4F_OK);
    CHECK(m.hdr.text_bytes == 40);
    CHECK_STATUS(v4f_kvstore_lookup_text(s, "<|User|>HELLO", 13, &id, NULL, &m, &err), V4F_OK);
    CHECK(m.hdr.text_bytes == 8);
    CHECK_STATUS(v4f_kvstore_lookup_text(s, "x", 1, &id, NULL, &m, &err), V4F_STATUS_NOT_FOUND);
    v4f_kvstore_close(s);
}

/* ---- corruption ------------------------------------------------------------------------ */

static void make_sample(const char *dir, char *path, size_t path_cap, uint32_t n_tok, uint64_t bytes) {
    v4f_kvstore *s = NULL;
    v4f_err err = {0};
    char name[V4F_KVSTORE_NAME_MAX] = "";
    if (v4f_kvstore_open(dir, 0, &s, &err)) return;
    v4f_kv_ident id = ident_a();
    int32_t *tok = make_tokens(n_tok, 11);
    save_n(s, tok, n_tok, &id, 21, bytes, V4F_KV_REASON_COLD, name);
    free(tok);
    v4f_kvstore_close(s);
    snprintf(path, path_cap, "%s/%s", dir, name);
}

TEST(kvstore_corrupt_flipped_byte) {
    const char *dir = mkdir_test("flip");
    char path[700], probe[700];
    make_sample(dir, path, sizeof path, 20, 10000);
    uint8_t *img = NULL;
    size_t n = read_file(path, &img);
    REQUIRE(n == 4096 + 10000);
    snprintf(probe, sizeof probe, "%s/probe.bin", test_tmp_dir());
    int undetected = 0, stats_hits = 0, tested = 0;
    /* flip in place (pwrite) rather than rewriting: rewriting a file through
     * truncation makes ext4 flush it on close, which is slow */
    write_file(probe, img, n);
    int pfd = open(probe, O_RDWR);
    REQUIRE(pfd >= 0);
    for (size_t pos = 0; pos < n; pos += pos < 4096 + 64 ? 1 : 97) {
        uint8_t flipped = img[pos] ^ (uint8_t)(1u << (pos % 8));
        REQUIRE(pwrite(pfd, &flipped, 1, (off_t)pos) == 1);
        v4f_err err = {0};
        v4f_kvfile_header h;
        v4f_status st = v4f_kvfile_verify_path(probe, &h, &err);
        REQUIRE(pwrite(pfd, &img[pos], 1, (off_t)pos) == 1);
        tested++;
        if (pos >= V4F_KVFILE_STATS_OFF && pos < V4F_KVFILE_FIXED_BYTES) {
            /* the stats record: the file stays valid, the stats reset */
            if (st == V4F_OK && !h.stats_ok) stats_hits++;
            continue;
        }
        if (st == V4F_OK) {
            undetected++;
            if (undetected < 5) test_fail(__FILE__, __LINE__, "flip at %zu not detected", pos);
        }
    }
    close(pfd);
    CHECK_EQ_INT(undetected, 0);
    CHECK_EQ_INT(stats_hits, 32);
    CHECK(tested > 4000);
    /* through the store: a damaged payload is rejected on load and quarantined */
    img[4096 + 5000] ^= 0x40;
    write_file(path, img, n);
    v4f_kvstore *s = NULL;
    v4f_err err = {0};
    REQUIRE(v4f_kvstore_open(dir, 0, &s, &err) == V4F_OK);
    v4f_kv_ident id = ident_a();
    const char *name = strrchr(path, '/') + 1;
    CHECK_STATUS(load_check(s, name, &id, 21, 10000, &err), V4F_STATUS_FORMAT);
    CHECK(strstr(err.msg, "checksum") != NULL);
    CHECK_EQ_INT(count_files(dir, ".bad"), 1);
    /* a damaged header is skipped by lookup and quarantined */
    img[4096 + 5000] ^= 0x40;
    img[200] ^= 1; /* a token id */
    write_file(path, img, n);
    int32_t *tok = make_tokens(20, 11);
    v4f_kvstore_match m;
    CHECK_STATUS(v4f_kvstore_lookup(s, tok, 20, &id, NULL, &m, &err), V4F_STATUS_NOT_FOUND);
    free(tok);
    free(img);
    v4f_kvstore_close(s);
}

TEST(kvstore_corrupt_truncated) {
    const char *dir = mkdir_test("trunc");
    char path[700], probe[700];
    make_sample(dir, path, sizeof path, 1500, 30000); /* ids span two 4 KiB pages */
    uint8_t *img = NULL;
    size_t n = read_file(path, &img);
    REQUIRE(n > 8192);
    snprintf(probe, sizeof probe, "%s/probe.bin", test_tmp_dir());
    size_t cuts[] = {0, 1, 7, 8, 100, 159, 191, 192, 193, 4095, 4096, 6000, 8191, 8192, 8193, 20000, n - 1};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
        write_file(probe, img, cuts[k]);
        v4f_err err = {0};
        CHECK_STATUS(v4f_kvfile_verify_path(probe, NULL, &err), V4F_STATUS_FORMAT);
        CHECK(err.msg[0] != 0);
    }
    for (size_t cut = 0; cut < n; cut += 211) { /* many more points */
        write_file(probe, img, cut);
        CHECK_STATUS(v4f_kvfile_verify_path(probe, NULL, NULL), V4F_STATUS_FORMAT);
    }
    /* one trailing byte */
    uint8_t *longer = malloc(n + 1);
    memcpy(longer, img, n);
    longer[n] = 0;
    write_file(probe, longer, n + 1);
    CHECK_STATUS(v4f_kvfile_verify_path(probe, NULL, NULL), V4F_STATUS_FORMAT);
    free(longer);
    free(img);
}

TEST(kvstore_corrupt_foreign_files) {
    const char *dir = mkdir_test("foreign");
    char path[700];
    make_sample(dir, path, sizeof path, 20, 5000);
    char p[700];
    /* zero-length, random bytes, a GGUF, text; named like checkpoints */
    snprintf(p, sizeof p, "%s/empty.v4kv", dir);
    write_file(p, "", 0);
    uint8_t rnd[9000];
    test_rng r = {3};
    for (size_t i = 0; i < sizeof rnd; i++) rnd[i] = (uint8_t)test_rng_u64(&r);
    snprintf(p, sizeof p, "%s/random.v4kv", dir);
    write_file(p, rnd, sizeof rnd);
    uint8_t gguf[256] = {'G', 'G', 'U', 'F', 3, 0, 0, 0};
    snprintf(p, sizeof p, "%s/model.v4kv", dir);
    write_file(p, gguf, sizeof gguf);
    uint8_t magic_only[200];
    memset(magic_only, 0, sizeof magic_only);
    memcpy(magic_only, V4F_KVFILE_MAGIC, 8);
    snprintf(p, sizeof p, "%s/magiconly.v4kv", dir);
    write_file(p, magic_only, sizeof magic_only);
    snprintf(p, sizeof p, "%s/dir.v4kv", dir);
    mkdir(p, 0700);

    v4f_kvstore *s = NULL;
    v4f_err err = {0};
    REQUIRE(v4f_kvstore_open(dir, 0, &s, &err) == V4F_OK);
    v4f_kv_ident id = ident_a();
    int32_t *tok = make_tokens(20, 11);
    v4f_kvstore_match m;
    v4f_kvstore_entry *e = NULL;
    size_t n_e = 0;
    CHECK_STATUS(v4f_kvstore_scan(s, &e, &n_e, &err), V4F_OK);
    int bad = 0;
    for (size_t i = 0; i < n_e; i++) bad += e[i].bad;
    CHECK_EQ_INT(n_e, 6);
    CHECK_EQ_INT(bad, 5);
    free(e);
    const char *names[] = {"empty.v4kv", "random.v4kv", "model.v4kv", "magiconly.v4kv", "dir.v4kv"};
    for (int i = 0; i < 5; i++) {
        err = (v4f_err){0};
        v4f_status st = load_check(s, names[i], &id, 0, 0, &err);
        CHECK_MSG(st == V4F_STATUS_FORMAT, "%s: status %d (%s)", names[i], st, err.msg);
        CHECK(strstr(err.msg, names[i]) != NULL); /* the message names the file */
    }
    CHECK_EQ_INT(count_files(dir, ".bad"), 4); /* the directory is not renamed */
    /* a lookup reports and quarantines damaged files it meets, and still finds the good one */
    char p2[700];
    snprintf(p2, sizeof p2, "%s/random2.v4kv", dir);
    write_file(p2, rnd, sizeof rnd);
    CHECK_STATUS(v4f_kvstore_lookup(s, tok, 20, &id, NULL, &m, &err), V4F_OK);
    CHECK_EQ_INT(m.n_tokens, 20);
    CHECK(access(p2, F_OK) != 0);
    CHECK_EQ_INT(count_files(dir, ".bad"), 5);
    size_t ev = 0;
    CHECK_STATUS(v4f_kvstore_gc(s, 0, NULL, &ev, &err), V4F_OK);
    CHECK_EQ_INT(count_files(dir, ".bad"), 0);
    CHECK_STATUS(v4f_kvstore_lookup(s, tok, 20, &id, NULL, &m, &err), V4F_OK);
    free(tok);
    rmdir(p);
    v4f_kvstore_close(s);
}

/* Patch a field of the fixed header and re-seal the header hash so only the
 * patched meaning differs. */
static void patch_u32(uint8_t *img, size_t n_img, size_t off, uint32_t v) {
    memcpy(img + off, &v, 4);
    v4f_kvfile_header h;
    uint64_t poff;
    memcpy(&poff, img + 104, 8);
    v4f_kvstore_xxh64 st;
    v4f_kvstore_xxh64_init(&st, 0);
    v4f_kvstore_xxh64_update(&st, img, 152);
    v4f_kvstore_xxh64_update(&st, img + 192, (size_t)poff - 192);
    uint64_t hh = v4f_kvstore_xxh64_digest(&st);
    memcpy(img + 152, &hh, 8);
    (void)h;
    (void)n_img;
}

TEST(kvstore_wrong_model_version_layout) {
    const char *dir = mkdir_test("wrong");
    char path[700];
    make_sample(dir, path, sizeof path, 20, 3000);
    const char *name = strrchr(path, '/') + 1;
    v4f_kvstore *s = NULL;
    v4f_err err = {0};
    REQUIRE(v4f_kvstore_open(dir, 0, &s, &err) == V4F_OK);
    v4f_kv_ident id = ident_a();
    v4f_kv_ident other = id;
    other.model_fp.hi++;
    CHECK_STATUS(load_check(s, name, &other, 21, 3000, &err), V4F_STATUS_LAYOUT);
    CHECK(strstr(err.msg, "same family") != NULL);
    consumer c = {21, 3000, -1, false, false, {1}};
    CHECK_STATUS(v4f_kvstore_load(s, name, &other, true, consume_cb, &c, NULL, NULL, &err), V4F_OK);
    other.family_fp.lo++;
    CHECK_STATUS(v4f_kvstore_load(s, name, &other, true, consume_cb, &c, NULL, NULL, &err), V4F_STATUS_LAYOUT);
    v4f_kv_ident lay = id;
    lay.layout_version = 8;
    CHECK_STATUS(load_check(s, name, &lay, 21, 3000, &err), V4F_STATUS_LAYOUT);
    CHECK(strstr(err.msg, "layout") != NULL);
    CHECK_EQ_INT(count_files(dir, ".bad"), 0); /* mismatches are not damage */
    /* a future format version: unsupported (not quarantined) */
    uint8_t *img = NULL;
    size_t n = read_file(path, &img);
    patch_u32(img, n, 8, 2);
    write_file(path, img, n);
    CHECK_STATUS(load_check(s, name, &id, 21, 3000, &err), V4F_STATUS_UNSUPPORTED);
    CHECK(strstr(err.msg, "version 2") != NULL);
    CHECK_EQ_INT(count_files(dir, ".bad"), 0);
    /* unknown flag bits: unsupported; reserved bytes: malformed */
    patch_u32(img, n, 8, 1);
    patch_u32(img, n, 16, 0x80);
    write_file(path, img, n);
    CHECK_STATUS(load_check(s, name, &id, 21, 3000, &err), V4F_STATUS_UNSUPPORTED);
    patch_u32(img, n, 16, 0);
    patch_u32(img, n, 68, 1);
    write_file(path, img, n);
    CHECK_STATUS(load_check(s, name, &id, 21, 3000, &err), V4F_STATUS_FORMAT);
    patch_u32(img, n, 68, 0);
    write_file(path, img, n);
    CHECK_STATUS(load_check(s, "x.v4kv", &id, 21, 3000, &err), V4F_STATUS_NOT_FOUND);
    CHECK_STATUS(load_check(s, "../etc/passwd", &id, 21, 3000, &err), V4F_STATUS_INVALID_ARG);
    free(img);
    v4f_kvstore_close(s);
}

/* ---- unwritable directory / full disk ------------------------------------------------- */

TEST(kvstore_unwritable_dir) {
    const char *base = mkdir_test("unw");
    mkdir(base, 0700);
    char file[700], dir[800];
    snprintf(file, sizeof file, "%s/plain", base);
    write_file(file, "x", 1);
    snprintf(dir, sizeof dir, "%s/sub", file); /* a directory under a regular file */
    v4f_kvstore *s = NULL;
    v4f_err err = {0};
    CHECK_STATUS(v4f_kvstore_open(dir, 0, &s, &err), V4F_STATUS_IO);
    CHECK(s == NULL && strstr(err.msg, "sub") != NULL);
    v4f_kvstore_opts o;
    v4f_kvstore_opts_default(&o);
    o.create = false;
    CHECK(v4f_kvstore_open_opts(dir, &o, &s, &err) != V4F_OK);
    /* a read-only directory: only meaningful when not root (root ignores modes) */
    char ro[800];
    snprintf(ro, sizeof ro, "%s/ro", base);
    REQUIRE(v4f_kvstore_open(ro, 0, &s, &err) == V4F_OK);
    v4f_kvstore_close(s);
    if (geteuid() == 0) {
        if (test_verbose()) printf("    (running as root: chmod 0500 cannot block writes; skipped)\n");
        return;
    }
    chmod(ro, 0500);
    REQUIRE(v4f_kvstore_open(ro, 0, &s, &err) == V4F_OK);
    v4f_kv_ident id = ident_a();
    int32_t tok[4] = {1, 2, 3, 4};
    CHECK_STATUS(save_n(s, tok, 4, &id, 1, 100, 0, NULL), V4F_STATUS_IO);
    v4f_kvstore_close(s);
    chmod(ro, 0700);
}

typedef struct full_disk {
    uint64_t limit; /* bytes accepted before ENOSPC */
    uint64_t written;
} full_disk;
static full_disk g_full;

static ssize_t pwrite_full_disk(int fd, const void *buf, size_t n, off_t off) {
    if (g_full.written >= g_full.limit) {
        errno = ENOSPC;
        return -1;
    }
    if (n > g_full.limit - g_full.written) n = (size_t)(g_full.limit - g_full.written); /* short write */
    ssize_t w = pwrite(fd, buf, n, off);
    if (w > 0) g_full.written += (uint64_t)w;
    return w;
}

TEST(kvstore_disk_full) {
    const char *dir = mkdir_test("full");
    v4f_kvstore_opts o;
    v4f_kvstore_opts_default(&o);
    o.pwrite_fn = pwrite_full_disk;
    v4f_kvstore *s = NULL;
    v4f_err err = {0};
    REQUIRE(v4f_kvstore_open_opts(dir, &o, &s, &err) == V4F_OK);
    v4f_kv_ident id = ident_a();
    int32_t *tok = make_tokens(300, 5);
    g_full = (full_disk){UINT64_MAX, 0};
    char good[V4F_KVSTORE_NAME_MAX];
    REQUIRE(save_n(s, tok, 100, &id, 1, 20000, 0, good) == V4F_OK);
    /* ENOSPC in the payload, in the header, at the very start */
    const uint64_t limits[] = {5000000, 1000, 0, 6000000 + 100};
    for (int k = 0; k < 4; k++) {
        g_full = (full_disk){limits[k], 0};
        err = (v4f_err){0};
        v4f_status st = save_n(s, tok, 300, &id, 2, 6000000, 0, NULL);
        CHECK_STATUS(st, V4F_STATUS_IO);
        producer p = {2, 6000000, 0, {1}};
        st = v4f_kvstore_save(s, tok, 300, &id, NULL, produce_cb, &p, NULL, &err);
        CHECK(st == V4F_STATUS_IO && strstr(err.msg, "disk full") != NULL);
        CHECK_EQ_INT(count_files(dir, "v4kv"), 1);
        CHECK_EQ_INT(count_files(dir, "tmp-.*"), 0);
    }
    /* a producer that fails midway: its status and message come through */
    g_full = (full_disk){UINT64_MAX, 0};
    producer p = {3, 2000000, 700000, {4}};
    err = (v4f_err){0};
    CHECK_STATUS(v4f_kvstore_save(s, tok, 300, &id, NULL, produce_cb, &p, NULL, &err), V4F_STATUS_INTERRUPTED);
    CHECK(strstr(err.msg, "synthetic producer failure") != NULL);
    CHECK_EQ_INT(count_files(dir, "v4kv"), 1);
    CHECK_EQ_INT(count_files(dir, "tmp-.*"), 0);
    /* the old entry is untouched */
    CHECK_STATUS(load_check(s, good, &id, 1, 20000, &err), V4F_OK);
    v4f_kvstore_match m;
    CHECK_STATUS(v4f_kvstore_lookup(s, tok, 300, &id, NULL, &m, &err), V4F_OK);
    CHECK_EQ_INT(m.n_tokens, 100);
    free(tok);
    v4f_kvstore_close(s);
}

/* ---- eviction / sessions / cleanup ----------------------------------------------------- */

static int64_t g_fake_now = 1000000;
static int64_t fake_now(void) { return g_fake_now; }

TEST(kvstore_evict_budget) {
    const char *dir = mkdir_test("evict");
    v4f_kvstore_opts o;
    v4f_kvstore_opts_default(&o);
    o.now_fn = fake_now;
    /* each file: 4096 header + 100000 payload = 104096 bytes; room for 4 */
    o.budget_bytes = 4 * 104096 + 20000;
    v4f_kvstore *s = NULL;
    v4f_err err = {0};
    REQUIRE(v4f_kvstore_open_opts(dir, &o, &s, &err) == V4F_OK);
    v4f_kv_ident id = ident_a();
    char names[8][V4F_KVSTORE_NAME_MAX];
    int32_t *tok[8];
    g_fake_now = 1000000;
    for (int i = 0; i < 4; i++) {
        tok[i] = make_tokens(50, 500 + (uint64_t)i);
        g_fake_now += 600; /* entries 10 minutes apart: 0 oldest */
        REQUIRE(save_n(s, tok[i], 50, &id, (uint64_t)i, 100000, V4F_KV_REASON_CONTINUED, names[i]) == V4F_OK);
    }
    CHECK_EQ_INT(count_files(dir, "v4kv"), 4);
    /* entry 0 (oldest) is used twice: hits keep it */
    g_fake_now += 600;
    CHECK_STATUS(load_check(s, names[0], &id, 0, 100000, &err), V4F_OK);
    CHECK_STATUS(load_check(s, names[0], &id, 0, 100000, &err), V4F_OK);
    /* a fifth entry: entry 1 (oldest unused) must go, the new one stays */
    g_fake_now += 600;
    tok[4] = make_tokens(50, 504);
    REQUIRE(save_n(s, tok[4], 50, &id, 4, 100000, V4F_KV_REASON_CONTINUED, names[4]) == V4F_OK);
    CHECK_EQ_INT(count_files(dir, "v4kv"), 4);
    char p[800];
    snprintf(p, sizeof p, "%s/%s", dir, names[1]);
    CHECK(access(p, F_OK) != 0);
    for (int i = 0; i < 5; i++) {
        if (i == 1) continue;
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        CHECK_MSG(access(p, F_OK) == 0, "entry %d evicted", i);
    }
    /* scores: more hits win, age halves the score every half-life */
    v4f_kvfile_header h = {.reason = V4F_KV_REASON_CONTINUED, .hits = 3, .last_used_unix = 1000};
    CHECK_NEAR(v4f_kvstore_score(&h, 1000, 3600), 4.0, 1e-12);
    CHECK_NEAR(v4f_kvstore_score(&h, 1000 + 7200, 3600), 1.0, 1e-12);
    h.reason = V4F_KV_REASON_COLD;
    CHECK_NEAR(v4f_kvstore_score(&h, 1000, 3600), 5.0, 1e-12);
    /* a checkpoint that cannot fit the budget is skipped up front */
    producer pr = {9, 10000000, 0, {1}};
    v4f_kvstore_save_opts so = {.payload_bytes_hint = 10000000};
    CHECK_STATUS(v4f_kvstore_save(s, tok[4], 40, &id, &so, produce_cb, &pr, NULL, &err), V4F_STATUS_RANGE);
    /* ... and without a hint it is discarded after writing */
    CHECK_STATUS(v4f_kvstore_save(s, tok[4], 40, &id, NULL, produce_cb, &pr, NULL, &err), V4F_STATUS_RANGE);
    CHECK_EQ_INT(count_files(dir, "v4kv"), 4);
    CHECK_EQ_INT(count_files(dir, "tmp-.*"), 0);
    /* gc to a smaller budget keeps the best-scored */
    size_t ev = 0;
    CHECK_STATUS(v4f_kvstore_gc(s, 2 * 104096, NULL, &ev, &err), V4F_OK);
    CHECK_EQ_INT(ev, 2);
    snprintf(p, sizeof p, "%s/%s", dir, names[0]);
    CHECK(access(p, F_OK) == 0); /* 2 hits */
    snprintf(p, sizeof p, "%s/%s", dir, names[4]);
    CHECK(access(p, F_OK) == 0); /* newest */
    for (int i = 0; i < 5; i++) free(tok[i]);
    v4f_kvstore_close(s);
}

TEST(kvstore_sessions) {
    const char *dir = mkdir_test("sess");
    v4f_kvstore *s = NULL;
    v4f_err err = {0};
    REQUIRE(v4f_kvstore_open(dir, 0, &s, &err) == V4F_OK);
    v4f_kv_ident id = ident_a();
    char fname[V4F_KVSTORE_NAME_MAX];
    CHECK_STATUS(v4f_kvstore_session_file("work-1.a_b", fname, &err), V4F_OK);
    CHECK_STR(fname, "session-work-1.a_b.v4kv");
    CHECK_STATUS(v4f_kvstore_session_file("../x", fname, &err), V4F_STATUS_INVALID_ARG);
    CHECK_STATUS(v4f_kvstore_session_file(".hidden", fname, &err), V4F_STATUS_INVALID_ARG);
    CHECK_STATUS(v4f_kvstore_session_file("", fname, &err), V4F_STATUS_INVALID_ARG);
    CHECK_STATUS(v4f_kvstore_session_file("a b", fname, &err), V4F_STATUS_INVALID_ARG);
    int32_t *tok = make_tokens(64, 1);
    producer p = {5, 50000, 0, {1}};
    v4f_kvstore_save_opts so = {.reason = V4F_KV_REASON_SESSION, .session_name = "work"};
    char name[V4F_KVSTORE_NAME_MAX];
    CHECK_STATUS(v4f_kvstore_save(s, tok, 64, &id, &so, produce_cb, &p, name, &err), V4F_OK);
    CHECK_STR(name, "session-work.v4kv");
    /* overwrite the session with a longer state: same name, atomically replaced */
    p = (producer){6, 60000, 0, {2}};
    CHECK_STATUS(v4f_kvstore_save(s, tok, 64, &id, &so, produce_cb, &p, name, &err), V4F_OK);
    int32_t *back = NULL;
    uint32_t n_back = 0;
    consumer c = {6, 60000, -1, false, false, {3}};
    CHECK_STATUS(v4f_kvstore_load(s, name, &id, false, consume_cb, &c, &back, &n_back, &err), V4F_OK);
    CHECK(c.ok && n_back == 64 && !memcmp(back, tok, 64 * 4));
    free(back);
    /* pinned: gc to a tiny budget removes the automatic entry only */
    REQUIRE(save_n(s, tok, 32, &id, 7, 1000, 0, NULL) == V4F_OK);
    size_t ev = 0;
    CHECK_STATUS(v4f_kvstore_gc(s, 1, NULL, &ev, &err), V4F_OK);
    CHECK_EQ_INT(ev, 1);
    CHECK_EQ_INT(count_files(dir, "v4kv"), 1);
    CHECK_STATUS(v4f_kvstore_remove(s, name, &err), V4F_OK);
    CHECK_STATUS(v4f_kvstore_remove(s, name, &err), V4F_STATUS_NOT_FOUND);
    free(tok);
    v4f_kvstore_close(s);
}

TEST(kvstore_tmp_cleanup) {
    const char *dir = mkdir_test("tmp");
    v4f_kvstore *s = NULL;
    v4f_err err = {0};
    REQUIRE(v4f_kvstore_open(dir, 0, &s, &err) == V4F_OK);
    v4f_kvstore_close(s);
    char stale[700], live[700];
    snprintf(stale, sizeof stale, "%s/.tmp-1-0-dead", dir);
    snprintf(live, sizeof live, "%s/.tmp-2-0-live", dir);
    write_file(stale, "partial", 7);
    write_file(live, "partial", 7);
    struct timespec old[2] = {{time(NULL) - 3600, 0}, {time(NULL) - 3600, 0}};
    utimensat(AT_FDCWD, stale, old, 0);
    utimensat(AT_FDCWD, live, old, 0);
    int lfd = open(live, O_RDONLY);
    REQUIRE(lfd >= 0);
    REQUIRE(flock(lfd, LOCK_EX) == 0); /* a writer still at work */
    REQUIRE(v4f_kvstore_open(dir, 0, &s, &err) == V4F_OK);
    CHECK(access(stale, F_OK) != 0);
    CHECK(access(live, F_OK) == 0);
    close(lfd);
    size_t ev;
    CHECK_STATUS(v4f_kvstore_gc(s, 0, NULL, &ev, &err), V4F_OK);
    CHECK(access(live, F_OK) != 0);
    v4f_kvstore_close(s);
}

/* ---- two processes ------------------------------------------------------------------------ */

/* The payload of an entry is derived from its tokens, so any process can
 * check what it loads. */
static uint64_t seed_of(const int32_t *tok, uint32_t n) { return v4f_kvstore_xxh64_oneshot(tok, n * 4u, 1); }

static int child_loop(const char *dir, uint64_t seed) {
    v4f_kvstore *s = NULL;
    v4f_err err = {0};
    if (v4f_kvstore_open(dir, 600000, &s, &err)) return 10;
    v4f_kv_ident id = ident_a();
    test_rng r = {seed};
    int32_t base[400];
    for (int i = 0; i < 400; i++) base[i] = i * 7; /* shared prefix space: lookups hit the other's files */
    double t0 = (double)time(NULL);
    int iters = 0, rc = 0;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double start = (double)ts.tv_sec + ts.tv_nsec * 1e-9;
    (void)t0;
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if ((double)ts.tv_sec + ts.tv_nsec * 1e-9 - start > 1.0) break;
        iters++;
        uint32_t n = (uint32_t)(test_rng_u64(&r) % 399) + 1;
        uint64_t bytes = test_rng_u64(&r) % 150000;
        int op = (int)(test_rng_u64(&r) % 4);
        if (op <= 1) {
            producer p = {seed_of(base, n), bytes + n, 0, {iters}};
            v4f_kvstore_save_opts so = {0};
            v4f_status st = v4f_kvstore_save(s, base, n, &id, &so, produce_cb, &p, NULL, &err);
            if (st && st != V4F_STATUS_RANGE) { rc = 11; break; }
        } else if (op == 2) {
            v4f_kvstore_match m;
            v4f_status st = v4f_kvstore_lookup(s, base, n, &id, NULL, &m, &err);
            if (st == V4F_STATUS_NOT_FOUND) continue;
            if (st) { rc = 12; break; }
            consumer c = {seed_of(base, m.n_tokens), UINT64_MAX, -1, false, false, {iters}};
            st = v4f_kvstore_load(s, m.name, &id, false, consume_cb, &c, NULL, NULL, &err);
            if (st == V4F_STATUS_NOT_FOUND) continue; /* evicted by the other process */
            if (st || !c.ok) { rc = 13; break; }
        } else {
            size_t ev;
            if (v4f_kvstore_gc(s, 300000, NULL, &ev, &err)) { rc = 14; break; }
        }
    }
    if (rc) fprintf(stderr, "    child %llu: rc %d: %s\n", (unsigned long long)seed, rc, err.msg);
    v4f_kvstore_close(s);
    return rc ? rc : (iters > 0 ? 0 : 15);
}

TEST(kvstore_two_processes) {
    const char *dir = mkdir_test("conc");
    v4f_kvstore *s = NULL;
    v4f_err err = {0};
    REQUIRE(v4f_kvstore_open(dir, 0, &s, &err) == V4F_OK);
    fflush(stdout);
    fflush(stderr);
    pid_t pids[2];
    for (int i = 0; i < 2; i++) {
        pids[i] = fork();
        REQUIRE(pids[i] >= 0);
        if (pids[i] == 0) _exit(child_loop(dir, 1000 + (uint64_t)i));
    }
    for (int i = 0; i < 2; i++) {
        int status = 0;
        REQUIRE(waitpid(pids[i], &status, 0) == pids[i]);
        CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %d: status 0x%x", i, status);
    }
    v4f_kvstore_entry *e = NULL;
    size_t n = 0;
    CHECK_STATUS(v4f_kvstore_scan(s, &e, &n, &err), V4F_OK);
    CHECK(n > 0);
    for (size_t i = 0; i < n; i++) {
        char p[800];
        snprintf(p, sizeof p, "%s/%s", dir, e[i].name);
        CHECK_MSG(!e[i].bad, "%s: %s", e[i].name, e[i].msg);
        v4f_err e2 = {0};
        CHECK_MSG(v4f_kvfile_verify_path(p, NULL, &e2) == V4F_OK, "%s", e2.msg);
    }
    CHECK_EQ_INT(count_files(dir, "tmp-.*"), 0);
    free(e);
    v4f_kvstore_close(s);
}

/* ---- policy --------------------------------------------------------------------------------- */

TEST(kvstore_policy) {
    v4f_kv_policy p;
    v4f_kv_policy_default(&p);
    CHECK_EQ_INT(p.min_tokens, 512);
    CHECK_EQ_INT(p.cold_max_tokens, 30000);
    CHECK_EQ_INT(p.boundary_trim, 32);
    CHECK_EQ_INT(p.boundary_align, 2048);
    CHECK_EQ_INT(v4f_kv_policy_continued_step(&p), 10240);
    /* cold */
    CHECK_EQ_INT(v4f_kv_policy_cold_len(&p, 5000, 0), 4096);
    CHECK_EQ_INT(v4f_kv_policy_cold_len(&p, 2080, 0), 2048);
    CHECK_EQ_INT(v4f_kv_policy_cold_len(&p, 2079, 0), 2079); /* 2047 aligns to 0 < min: whole prompt */
    CHECK_EQ_INT(v4f_kv_policy_cold_len(&p, 1000, 0), 1000);
    CHECK_EQ_INT(v4f_kv_policy_cold_len(&p, 511, 0), 0);
    CHECK_EQ_INT(v4f_kv_policy_cold_len(&p, 30001, 0), 0);
    CHECK_EQ_INT(v4f_kv_policy_cold_len(&p, 5000, 100), 0);
    /* continued */
    CHECK_EQ_INT(v4f_kv_policy_next_frontier(&p, 0, 30000), 10240);
    CHECK_EQ_INT(v4f_kv_policy_next_frontier(&p, 10240, 30000), 20480);
    CHECK_EQ_INT(v4f_kv_policy_next_frontier(&p, 20480, 30000), 0);
    CHECK_EQ_INT(v4f_kv_policy_next_frontier(&p, 10239, 10240), 10240);
    CHECK_EQ_INT(v4f_kv_policy_next_frontier(&p, 10240, 10240), 0);
    CHECK_EQ_INT(v4f_kv_policy_next_frontier(&p, 4000000000u, 4000010239u), 0);
    CHECK_EQ_INT(v4f_kv_policy_next_frontier(&p, 4294960000u, 4294967295u), 4294963200u);
    CHECK_EQ_INT(v4f_kv_policy_next_frontier(&p, 4294963200u, 4294967295u), 0); /* no overflow */
    /* plans */
    v4f_kv_save_point sp[8];
    size_t n = v4f_kv_policy_plan_prefill(&p, 25000, 0, sp, 8);
    CHECK_EQ_INT(n, 3);
    CHECK(sp[0].pos == 10240 && sp[0].reason == V4F_KV_REASON_CONTINUED);
    CHECK(sp[1].pos == 20480 && sp[1].reason == V4F_KV_REASON_CONTINUED);
    CHECK(sp[2].pos == 24576 && sp[2].reason == V4F_KV_REASON_COLD);
    n = v4f_kv_policy_plan_prefill(&p, 50000, 0, sp, 8);
    CHECK_EQ_INT(n, 4);
    CHECK(sp[3].pos == 40960 && sp[3].reason == V4F_KV_REASON_CONTINUED);
    n = v4f_kv_policy_plan_prefill(&p, 25000, 12000, sp, 8);
    CHECK(n == 1 && sp[0].pos == 20480);
    CHECK_EQ_INT(v4f_kv_policy_plan_prefill(&p, 50000, 0, sp, 2), 4); /* count beyond cap */
    v4f_kv_policy q = {1, 100000, 2000, 0, 1000};
    n = v4f_kv_policy_plan_prefill(&q, 4000, 0, sp, 8);
    CHECK(n == 2 && sp[0].pos == 2000 && sp[1].pos == 4000 && sp[1].reason == V4F_KV_REASON_COLD);
    /* live saves */
    CHECK(!v4f_kv_policy_save_live(&p, 511));
    CHECK(v4f_kv_policy_save_live(&p, 512));
    v4f_kv_policy off = p;
    off.continued_interval = 0;
    off.cold_max_tokens = 0;
    CHECK_EQ_INT(v4f_kv_policy_plan_prefill(&off, 25000, 0, sp, 8), 0);
}

/* ---- large pieces (the overlapped I/O worker path) ------------------------------------ */

typedef struct big_io {
    uint8_t *buf;
    size_t n;
    size_t split; /* second piece starts here (0 = one piece) */
} big_io;

static v4f_status big_produce(void *ud, v4f_kv_sink *sink, v4f_err *err) {
    big_io *b = ud;
    size_t a = b->split ? b->split : b->n;
    v4f_status st = v4f_kv_sink_write(sink, b->buf, a);
    if (!st && a < b->n) st = v4f_kv_sink_write(sink, b->buf + a, b->n - a);
    (void)err;
    return st;
}

static v4f_status big_consume(void *ud, v4f_kv_source *src, uint64_t n, v4f_err *err) {
    big_io *b = ud;
    if (n != b->n) return v4f_err_set(err, V4F_STATUS_LAYOUT, "size");
    size_t a = b->split ? b->split : b->n;
    v4f_status st = v4f_kv_source_read(src, b->buf, a);
    if (!st && a < b->n) st = v4f_kv_source_read(src, b->buf + a, b->n - a);
    return st;
}

TEST(kvstore_large_pieces) {
    const char *dir = mkdir_test("big");
    v4f_kvstore_opts o;
    v4f_kvstore_opts_default(&o);
    o.pwrite_fn = pwrite_full_disk;
    v4f_kvstore *s = NULL;
    v4f_err err = {0};
    REQUIRE(v4f_kvstore_open_opts(dir, &o, &s, &err) == V4F_OK);
    v4f_kv_ident id = ident_a();
    const size_t n = (19u << 20) + 5; /* > 2 worker chunks, odd tail */
    uint8_t *src = malloc(n), *dst = malloc(n);
    REQUIRE(src && dst);
    for (size_t i = 0; i < n; i++) src[i] = pay_byte(77, i);
    int32_t tok[16];
    for (int i = 0; i < 16; i++) tok[i] = i * 3;
    const size_t splits[] = {0, 1, (8u << 20) + 3};
    for (int k = 0; k < 3; k++) {
        g_full = (full_disk){UINT64_MAX, 0};
        big_io w = {src, n, splits[k]};
        char name[V4F_KVSTORE_NAME_MAX];
        CHECK_STATUS(v4f_kvstore_save(s, tok, 16, &id, NULL, big_produce, &w, name, &err), V4F_OK);
        memset(dst, 0, n);
        big_io r = {dst, n, splits[(k + 1) % 3]};
        CHECK_STATUS(v4f_kvstore_load(s, name, &id, false, big_consume, &r, NULL, NULL, &err), V4F_OK);
        CHECK(!memcmp(src, dst, n));
    }
    /* ENOSPC in the middle of a large piece: reported, nothing left behind */
    g_full = (full_disk){(12u << 20) + 77, 0};
    big_io w = {src, n, 0};
    CHECK_STATUS(v4f_kvstore_save(s, tok, 15, &id, NULL, big_produce, &w, NULL, &err), V4F_STATUS_IO);
    CHECK(strstr(err.msg, "disk full") != NULL);
    CHECK_EQ_INT(count_files(dir, "v4kv"), 1);
    CHECK_EQ_INT(count_files(dir, "tmp-.*"), 0);
    /* a file truncated between the header check and the payload read */
    g_full = (full_disk){UINT64_MAX, 0};
    char name[V4F_KVSTORE_NAME_MAX], path[800];
    REQUIRE(v4f_kvstore_save(s, tok, 16, &id, NULL, big_produce, &w, name, &err) == V4F_OK);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_RDWR);
    REQUIRE(fd >= 0);
    v4f_kvfile_header h;
    REQUIRE(v4f_kvfile_read_header(fd, path, &h, NULL, &err) == V4F_OK);
    REQUIRE(ftruncate(fd, (off_t)(h.payload_offset + (10u << 20))) == 0);
    big_io r = {dst, n, 0};
    bool damaged = false;
    CHECK_STATUS(v4f_kvfile_read_payload_ex(fd, path, &h, big_consume, &r, &damaged, &err), V4F_STATUS_FORMAT);
    CHECK(damaged && strstr(err.msg, "truncated") != NULL);
    close(fd);
    free(src);
    free(dst);
    v4f_kvstore_close(s);
}

/* Session claims: one store (one process) keeps a session at a time; the
 * claim moves with the next claim of the same store and ends with close;
 * claim files are hidden from the entries. v4f_kvstore_has sees plain
 * files only. */
TEST(kvstore_session_claims) {
    const char *dir = mkdir_test("claims");
    v4f_kvstore *a = NULL, *b = NULL;
    v4f_err err = {0};
    REQUIRE(v4f_kvstore_open(dir, 0, &a, &err) == V4F_OK);
    REQUIRE(v4f_kvstore_open(dir, 0, &b, &err) == V4F_OK); /* its own file descriptions: another "process" */
    CHECK_STATUS(v4f_kvstore_session_claim(a, "x", &err), V4F_OK);
    CHECK_STATUS(v4f_kvstore_session_claim(a, "x", &err), V4F_OK); /* again: still ours */
    CHECK_STATUS(v4f_kvstore_session_claim(b, "x", &err), V4F_STATUS_BUSY);
    CHECK(strstr(err.msg, "session x is open in another v4flash process") != NULL);
    CHECK(v4f_kvstore_session_busy(b, "x"));
    CHECK(!v4f_kvstore_session_busy(a, "x"));
    CHECK(!v4f_kvstore_session_busy(b, "y"));
    CHECK_STATUS(v4f_kvstore_session_claim(b, "y", &err), V4F_OK);
    CHECK(v4f_kvstore_session_busy(a, "y"));
    /* a's claim moves to z: x is free for b, whose claim of y ends with it */
    CHECK_STATUS(v4f_kvstore_session_claim(a, "z", &err), V4F_OK);
    CHECK(!v4f_kvstore_session_busy(b, "x"));
    CHECK_STATUS(v4f_kvstore_session_claim(b, "x", &err), V4F_OK);
    CHECK(!v4f_kvstore_session_busy(a, "y"));
    CHECK(v4f_kvstore_session_busy(a, "x"));
    /* a refused claim keeps the current one */
    CHECK_STATUS(v4f_kvstore_session_claim(a, "x", &err), V4F_STATUS_BUSY);
    CHECK(v4f_kvstore_session_busy(b, "z"));
    CHECK_STATUS(v4f_kvstore_session_claim(a, "../x", &err), V4F_STATUS_INVALID_ARG);
    CHECK_STATUS(v4f_kvstore_session_claim(a, ".x", &err), V4F_STATUS_INVALID_ARG);
    v4f_kvstore_close(b);
    CHECK_STATUS(v4f_kvstore_session_claim(a, "x", &err), V4F_OK);
    /* the claim files are not entries */
    v4f_kvstore_entry *e = NULL;
    size_t n = 0;
    CHECK_STATUS(v4f_kvstore_scan(a, &e, &n, &err), V4F_OK);
    CHECK_EQ_INT(n, 0);
    free(e);
    /* v4f_kvstore_has */
    char path[700];
    CHECK(!v4f_kvstore_has(a, "session-x.v4kv"));
    snprintf(path, sizeof path, "%s/session-x.v4kv", dir);
    FILE *f = fopen(path, "w");
    REQUIRE(f);
    fclose(f);
    CHECK(v4f_kvstore_has(a, "session-x.v4kv"));
    snprintf(path, sizeof path, "%s/session-d.v4kv", dir);
    REQUIRE(mkdir(path, 0700) == 0);
    CHECK(!v4f_kvstore_has(a, "session-d.v4kv"));
    CHECK(!v4f_kvstore_has(a, ".lock"));
    CHECK(!v4f_kvstore_has(a, "../kv-claims/session-x.v4kv"));
    v4f_kvstore_close(a);
}
