/*
 * fuzz_kvfile.c - libFuzzer target for the KV checkpoint file parser
 * (src/kvstore/kvfile.c).
 *
 * Input layout: byte 0 is a mode byte, the rest is a file image.
 *   mode bit 0: "reseal" - recompute header_hash, token_hash and payload_hash
 *               over the image before parsing, so the fuzzer gets past the
 *               checksum gates and exercises the structure checks and the
 *               streaming payload reader (otherwise almost every mutation is
 *               rejected by the header hash);
 *   mode bits 1-3: how the consumer splits its reads (1 byte .. whole
 *               payload, over-read, under-read).
 * The image is put into a memfd and run through the real fd-based code:
 * v4f_kvfile_peek, v4f_kvfile_read_header (with token copy),
 * v4f_kvfile_check_ident, v4f_kvfile_read_payload with a consumer, the
 * verify-only payload pass and a stats-record rewrite. Invariant violations
 * (a file accepted with sizes that do not match the image) trap.
 *
 * Owns nothing between runs; single-threaded.
 * Build: make fuzz, or by hand (repo root):
 *   clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Isrc \
 *     -D_GNU_SOURCE tests/fuzz/fuzz_kvfile.c src/kvstore/ *.c src/core/ *.c \
 *     -lm -pthread -o build/fuzz/fuzz_kvfile
 * Seeds: tests/fuzz/corpus/kvfile (written by tests/fuzz/kvfile_seeds.c).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kvstore/kvstore.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t rd64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static void reseal(uint8_t *img, size_t n) {
    if (n < V4F_KVFILE_FIXED_BYTES) return;
    uint64_t poff = rd64(img + 104);
    uint32_t n_tok;
    memcpy(&n_tok, img + 56, 4);
    if (poff < V4F_KVFILE_FIXED_BYTES || poff > n) return;
    if ((uint64_t)n_tok * 4 <= poff - V4F_KVFILE_FIXED_BYTES) {
        uint64_t th = v4f_kvstore_xxh64_oneshot(img + V4F_KVFILE_FIXED_BYTES, (size_t)n_tok * 4, 0);
        memcpy(img + 80, &th, 8);
    }
    uint64_t ph = v4f_kvstore_xxh64_oneshot(img + poff, n - (size_t)poff, 0);
    memcpy(img + 120, &ph, 8);
    v4f_kvstore_xxh64 st;
    v4f_kvstore_xxh64_init(&st, 0);
    v4f_kvstore_xxh64_update(&st, img, 152);
    v4f_kvstore_xxh64_update(&st, img + V4F_KVFILE_FIXED_BYTES, (size_t)poff - V4F_KVFILE_FIXED_BYTES);
    uint64_t hh = v4f_kvstore_xxh64_digest(&st);
    memcpy(img + 152, &hh, 8);
}

typedef struct {
    int mode;
    uint64_t got;
} reader;

static v4f_status consume(void *ud, v4f_kv_source *src, uint64_t n, v4f_err *err) {
    reader *r = ud;
    static uint8_t buf[1 << 16];
    static const size_t pieces[8] = {1, 7, 4096, 65536, 3, 65536, 100, 1000};
    size_t piece = pieces[r->mode & 7];
    uint64_t want = (r->mode & 7) == 6 ? n / 2 : n; /* under-read */
    if ((r->mode & 7) == 5) want = n + 1;            /* over-read */
    while (r->got < want) {
        size_t k = want - r->got < piece ? (size_t)(want - r->got) : piece;
        v4f_status st = v4f_kv_source_read(src, buf, k);
        if (st) return st;
        r->got += k;
        if (v4f_kv_source_remaining(src) != n - r->got) __builtin_trap();
    }
    (void)err;
    return V4F_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int mode = data[0];
    size_t n = size - 1;
    uint8_t *img = malloc(n ? n : 1);
    memcpy(img, data + 1, n);
    if (mode & 1) reseal(img, n);
    int fd = memfd_create("kvfuzz", 0);
    if (fd < 0) {
        free(img);
        return 0;
    }
    if (n && write(fd, img, n) != (ssize_t)n) __builtin_trap();

    v4f_err err = {0};
    v4f_kvfile_header h;
    if (v4f_kvfile_peek(fd, "fuzz", &h, &err) == V4F_OK) {
        if (h.payload_offset + h.payload_bytes != n) __builtin_trap();
        if (h.payload_offset % V4F_KVFILE_ALIGN) __builtin_trap();
    }
    int32_t *ids = NULL;
    if (v4f_kvfile_read_header(fd, "fuzz", &h, &ids, &err) == V4F_OK) {
        if (h.n_tokens && !ids) __builtin_trap();
        if (h.n_tokens && memcmp(ids, img + V4F_KVFILE_FIXED_BYTES, (size_t)h.n_tokens * 4)) __builtin_trap();
        v4f_kv_ident id = {h.model_fp, h.family_fp, h.layout_version, 0};
        if (v4f_kvfile_check_ident(&h, &id, false, "fuzz", &err)) __builtin_trap();
        id.model_fp.lo++;
        (void)v4f_kvfile_check_ident(&h, &id, true, "fuzz", &err);
        reader r = {mode >> 1, 0};
        v4f_status st = v4f_kvfile_read_payload(fd, "fuzz", &h, consume, &r, &err);
        if (st == V4F_OK && r.got != h.payload_bytes) __builtin_trap();
        v4f_status st2 = v4f_kvfile_read_payload(fd, "fuzz", &h, NULL, NULL, &err);
        if (st == V4F_OK && st2 != V4F_OK) __builtin_trap();
        if (v4f_kvfile_stats_write(fd, "fuzz", &h, h.hits + 1u, 12345, &err) == V4F_OK) {
            v4f_kvfile_header h2;
            if (v4f_kvfile_peek(fd, "fuzz", &h2, &err) != V4F_OK || !h2.stats_ok || h2.last_used_unix != 12345)
                __builtin_trap();
        }
    }
    free(ids);
    close(fd);
    free(img);
    return 0;
}
