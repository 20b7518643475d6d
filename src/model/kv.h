/*
 * kv.h - the in-RAM KV cache of one session (MODEL.md §7.2, §11).
 *
 * Per layer (and for the MTP block): a raw sliding-window ring of n_swa KV
 * rows (slot = pos % n_swa, float32, always exact), the compressed rows of
 * ratio-4/128 layers (capacity ctx/ratio + 2), the indexer rows of ratio-4
 * layers, and the compressor frontier state (float32 values and scores of
 * the incomplete window(s)).
 *
 * Storage modes for the rows that grow with the context:
 *  - REF (float32): a row is hd floats.
 *  - COMPACT: a compressed row is stored exactly as the model rounds it:
 *    the hd - n_rot non-RoPE dims as FP8 E4M3 codes + one exponent byte per
 *    64-block, the n_rot RoPE dims as float32; an indexer row (Hadamard +
 *    FP4 rounded in the model) as FP4 E2M1 codes (2 per byte) + one exponent
 *    byte per 32-block. Both are lossless: decoding gives the float32 row
 *    bit for bit.
 *
 * Paging (long contexts beyond RAM, v4f_kv_new_paged with a directory):
 * the compressed rows of the ratio-4 layers - 88% of the KV at 1M tokens,
 * of which a decode step reads only the idx_topk selected rows per layer -
 * live in one file mapped MAP_SHARED (madvise RANDOM), so the kernel writes
 * cold rows back to the file under memory pressure and faults them in when
 * attention reads them. Everything a step reads in full (indexer rows, the
 * ratio-128 rows, raw rings, frontiers) stays in anonymous memory. The file
 * is created with mkstemp in the directory, unlinked at once (nothing is left
 * behind, even after a crash) and fully reserved with posix_fallocate, so a
 * full disk is a clean error at creation instead of a SIGBUS while writing.
 * Row bytes are identical in both backings, so results are bitwise equal.
 *
 * Ownership: v4f_kv owns all its buffers (allocated once in v4f_kv_new) and
 * the mapping (unmapped in v4f_kv_free).
 * Threading: rows may be read concurrently; writes happen from one thread.
 */
#ifndef V4F_KV_H
#define V4F_KV_H

#include <stdbool.h>
#include <stdint.h>

#include "model/model.h"

typedef struct v4f_kv_layer {
    uint32_t ratio;  /* 0, 4 or 128 */
    float *raw;      /* [n_swa][hd] ring */
    /* compressed rows */
    uint32_t comp_cap, n_comp;
    uint8_t *comp;   /* comp_cap rows of comp_row_bytes */
    /* indexer rows (ratio 4) */
    uint32_t n_idx;
    uint8_t *idx;
    /* compressor frontier: [coff*ratio][coff*D] values and scores */
    float *c_kv, *c_sc;
    float *i_kv, *i_sc;
} v4f_kv_layer;

typedef struct v4f_kv {
    bool compact;
    uint32_t n_layer;   /* main layers; layers[n_layer] is the MTP block if has_mtp */
    bool has_mtp;
    uint32_t n_swa, hd, n_rot, idx_hd;
    uint64_t n_ctx;
    uint64_t comp_row_bytes, idx_row_bytes;
    v4f_kv_layer *layers;
    uint64_t total_bytes; /* everything allocated (RAM + file-backed) */
    /* paging: the file mapping that holds the ratio-4 compressed rows */
    uint8_t *page_map;    /* NULL when everything is in RAM */
    uint64_t page_bytes;  /* mapping length (page-aligned per layer) */
} v4f_kv;

/* Whether the dims allow the compact form (FP8 blocks of 64 over the
 * non-RoPE dims, FP4 blocks of 32); v4f_kv_new falls back to float32. */
bool v4f_kv_compact_supported(const v4f_config *cfg);
/* Bytes one compressed / indexer row takes in the given mode. */
uint64_t v4f_kv_comp_row_bytes(uint32_t hd, uint32_t n_rot, bool compact);
uint64_t v4f_kv_idx_row_bytes(uint32_t idx_hd, bool compact);
/* Total KV bytes (raw rings + compressed + indexer rows + frontier state)
 * for n_ctx tokens of the main model (MTP excluded), the formula v4f_kv_new
 * allocates by. */
uint64_t v4f_kv_bytes_for_ctx(const v4f_config *cfg, uint64_t n_ctx, bool compact);
/* Bytes that grow per token (asymptotic slope, as a double). */
double v4f_kv_bytes_per_token(const v4f_config *cfg, bool compact);

/* The KV-relevant part of the published DeepSeek V4 Flash config (43
 * layers: ratios 0,0,4,128,4,...,128,4; head_dim 512, 64 RoPE dims,
 * indexer dim 128, window 128), for projections such as the 1M-token
 * footprint. Other fields are zero. */
void v4f_kv_published_config(v4f_config *c);

v4f_status v4f_kv_new(const v4f_config *cfg, uint64_t n_ctx, bool compact, bool with_mtp,
                      v4f_kv **out, v4f_err *err);
/* As v4f_kv_new; page_dir non-NULL places the ratio-4 compressed rows in a
 * file-backed mapping created in that directory (see the banner). IO with
 * the path and the byte count if the file cannot be created, reserved or
 * mapped. */
v4f_status v4f_kv_new_paged(const v4f_config *cfg, uint64_t n_ctx, bool compact, bool with_mtp,
                            const char *page_dir, v4f_kv **out, v4f_err *err);
void v4f_kv_free(v4f_kv *kv);

/* Paging statistics: bytes of the file-backed part that are resident in the
 * page cache now (mincore), and the bytes a decode step at position pos
 * reads per layer kind: *hot = indexer rows + ratio-128 rows + raw rings
 * (read in full every step), *cold = the ratio-4 rows selected by the
 * indexer (topk per ratio-4 layer, each counted as the expected bytes of
 * the 4 KiB pages a row at a random offset touches: 4095 + row bytes). */
uint64_t v4f_kv_paged_resident(const v4f_kv *kv);
void v4f_kv_step_working_set(const v4f_config *cfg, uint64_t pos, bool compact, uint32_t topk,
                             uint64_t *hot, uint64_t *cold);
/* Ask the kernel to drop the file-backed rows from RAM (written back first):
 * the worst case for the next step, every selected row faulted in from the
 * file. No-op without paging. */
void v4f_kv_page_out(v4f_kv *kv);
/* Benchmarks only: make the cache look like pos tokens were evaluated -
 * n_comp / n_idx = pos / ratio rows of seeded random values (valid codes),
 * random raw rings, reset frontiers. The values are meaningless; only the
 * row counts and thus the cost of attending to them are real. */
void v4f_kv_fill_synthetic(v4f_kv *kv, uint64_t pos, uint64_t seed);
/* Forget every row and reset the frontier state. */
void v4f_kv_reset(v4f_kv *kv);

/* Store / load a compressed row (hd floats; the row must already be FP8
 * rounded on its non-RoPE dims for the compact mode to be lossless). */
void v4f_kv_comp_put(const v4f_kv *kv, v4f_kv_layer *L, uint32_t i, const float *row);
void v4f_kv_comp_get(const v4f_kv *kv, const v4f_kv_layer *L, uint32_t i, float *row);
/* Pointer to a float32 row in REF mode (NULL in compact mode). */
const float *v4f_kv_comp_ptr(const v4f_kv *kv, const v4f_kv_layer *L, uint32_t i);
void v4f_kv_idx_put(const v4f_kv *kv, v4f_kv_layer *L, uint32_t i, const float *row);
void v4f_kv_idx_get(const v4f_kv *kv, const v4f_kv_layer *L, uint32_t i, float *row);
const float *v4f_kv_idx_ptr(const v4f_kv *kv, const v4f_kv_layer *L, uint32_t i);

#endif /* V4F_KV_H */
