/*
 * unicode.c - builds the O(1) class lookup (two-stage table) from the
 * generated ranges in unicode_tables.c.
 *
 * Memory: process-global tables (static storage plus one heap block for the
 * unique 256-entry pages, never freed), built once under pthread_once.
 * Threading: read-only after the build.
 */
#include "tokenizer/unicode.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

uint8_t v4f_tok_ucls_ascii[128];
const uint8_t *v4f_tok_ucls_stage2;
uint16_t v4f_tok_ucls_stage1[0x110000 >> 8];

static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void build(void) {
    enum { NPAGE = 0x110000 >> 8 };
    uint8_t *flat = v4f_xcalloc(0x110000, 1);
    for (uint32_t r = 0; r < v4f_tok_unicode_n_ranges; r++) {
        const v4f_tok_urange *u = &v4f_tok_unicode_ranges[r];
        memset(flat + u->lo, u->cls, u->hi - u->lo + 1);
    }
    memcpy(v4f_tok_ucls_ascii, flat, 128);
    /* dedupe pages: most pages are all-zero or all-one-class */
    uint8_t *pages = v4f_xmalloc((size_t)NPAGE * 256);
    uint32_t n_pages = 0;
    for (uint32_t pg = 0; pg < NPAGE; pg++) {
        const uint8_t *src = flat + ((size_t)pg << 8);
        uint32_t found = n_pages;
        /* compare with the last few unique pages first (runs of equal pages) */
        for (uint32_t k = n_pages; k-- > 0;) {
            if (memcmp(pages + ((size_t)k << 8), src, 256) == 0) { found = k; break; }
            if (n_pages - k > 64) break;
        }
        if (found == n_pages) {
            memcpy(pages + ((size_t)n_pages << 8), src, 256);
            n_pages++;
        }
        v4f_tok_ucls_stage1[pg] = (uint16_t)found;
    }
    v4f_tok_ucls_stage2 = v4f_xrealloc(pages, (size_t)n_pages * 256);
    free(flat);
}

void v4f_tok_unicode_init(void) { pthread_once(&g_once, build); }
