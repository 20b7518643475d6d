/*
 * kvfile_seeds.c - writes the seed corpus for fuzz_kvfile into a directory
 * (default tests/fuzz/corpus/kvfile): small valid checkpoints made with
 * v4f_kvfile_write (no tokens / no payload, a few tokens, the text flag,
 * token ids spanning two 4 KiB pages) in both fuzz modes (plain and
 * "reseal"), and broken variants (empty, truncated header / ids / payload,
 * bad magic, version 0 and 2, a flipped payload byte, a trailing byte,
 * unknown flags). Each seed is one mode byte followed by the file image.
 * Not a fuzz target (no fuzz_ prefix).
 *
 * Build (from the repo root): cc -std=c11 -Iinclude -Isrc -D_GNU_SOURCE \
 *   tests/fuzz/kvfile_seeds.c src/kvstore/ *.c src/core/ *.c -lm -pthread -o build/kvfile_seeds
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kvstore/kvstore.h"

static const char *g_dir;

typedef struct {
    uint64_t n;
} prod;

static v4f_status produce(void *ud, v4f_kv_sink *sink, v4f_err *err) {
    prod *p = ud;
    for (uint64_t i = 0; i < p->n; i++) {
        uint8_t b = (uint8_t)(i * 31 + 7);
        v4f_status st = v4f_kv_sink_write(sink, &b, 1);
        if (st) return st;
    }
    (void)err;
    return V4F_OK;
}

/* Write a checkpoint into a memfd and return its image. */
static uint8_t *make(uint32_t n_tok, uint64_t payload, int has_text, size_t *n_out) {
    int fd = memfd_create("seed", 0);
    if (fd < 0) exit(1);
    int32_t *tok = calloc(n_tok ? n_tok : 1, 4);
    for (uint32_t i = 0; i < n_tok; i++) tok[i] = (int32_t)(i * 13 + 1);
    v4f_kvfile_meta m = {.ident = {{1, 2}, {3, 4}, 1, 4096},
                         .tokens = tok,
                         .n_tokens = n_tok,
                         .reason = V4F_KV_REASON_COLD,
                         .has_text = has_text,
                         .text_hash = has_text ? 0x1234 : 0,
                         .text_bytes = has_text ? 77 : 0,
                         .created_unix = 1700000000};
    prod p = {payload};
    v4f_err err = {0};
    if (v4f_kvfile_write(fd, "seed", &m, produce, &p, NULL, NULL, &err)) {
        fprintf(stderr, "kvfile_seeds: %s\n", err.msg);
        exit(1);
    }
    off_t n = lseek(fd, 0, SEEK_END);
    uint8_t *img = malloc((size_t)n + 1);
    if (pread(fd, img, (size_t)n, 0) != n) exit(1);
    close(fd);
    free(tok);
    *n_out = (size_t)n;
    return img;
}

static void put(const char *name, int mode, const uint8_t *img, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) exit(1);
    fputc(mode, f);
    if (n) fwrite(img, 1, n, f);
    fclose(f);
}

int main(int argc, char **argv) {
    g_dir = argc > 1 ? argv[1] : "tests/fuzz/corpus/kvfile";
    size_t n0, n1, n2, n3;
    uint8_t *empty = make(0, 0, 0, &n0);
    uint8_t *small = make(3, 100, 0, &n1);
    uint8_t *text = make(5, 40, 1, &n2);
    uint8_t *big = make(1100, 600, 0, &n3);
    put("valid-empty", 0, empty, n0);
    put("valid-small", 0, small, n1);
    put("valid-small-reseal-bytewise", 1 | (1 << 1), small, n1);
    put("valid-text", 0, text, n2);
    put("valid-2pages", 0, big, n3);
    put("valid-2pages-reseal", 1 | (3 << 1), big, n3);
    put("broken-zero-length", 0, small, 0);
    put("broken-trunc-header", 0, small, 100);
    put("broken-trunc-ids", 0, big, 3000);
    put("broken-trunc-payload", 1, small, n1 - 10);
    uint8_t *t = malloc(n1 + 1);
    memcpy(t, small, n1);
    t[n1] = 0;
    put("broken-trailing", 0, t, n1 + 1);
    t[0] = 'X';
    put("broken-magic", 0, t, n1);
    memcpy(t, small, n1);
    t[8] = 2;
    put("broken-version2", 1, t, n1);
    t[8] = 0;
    put("broken-version0", 1, t, n1);
    memcpy(t, small, n1);
    t[n1 - 5] ^= 1;
    put("broken-payload-flip", 0, t, n1);
    memcpy(t, small, n1);
    t[16] = 0x40;
    put("broken-flags", 1, t, n1);
    memcpy(t, small, n1);
    t[104] = 0x10; /* payload offset */
    put("broken-offset", 1, t, n1);
    memcpy(t, small, n1);
    memset(t + 112, 0xff, 8); /* payload size */
    put("broken-payload-size", 1, t, n1);
    put("reader-overread", 1 | (5 << 1), small, n1);
    put("reader-underread", 1 | (6 << 1), small, n1);
    free(t);
    free(empty);
    free(small);
    free(text);
    free(big);
    return 0;
}
