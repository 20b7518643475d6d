/*
 * gguf.h - GGUF v3 reader (mmap, bounds-checked) and streaming writer.
 *
 * Reader: v4f_gguf_open maps the file read-only and parses the header, the
 * metadata table and the tensor directory with a checked cursor; every
 * offset/length/multiply is overflow-checked and every tensor's bytes must lie
 * inside the file, aligned to general.alignment, without overlapping another
 * tensor. Tensor data is never copied: v4f_gguf_tensor.data points into the
 * map. Split files (NAME-00001-of-0000N.gguf with split.* keys) are opened as
 * one logical file: metadata comes from the first shard, tensors from all.
 *
 * The reader knows nothing about models: no tensor names, no shapes.
 *
 * Ownership: the v4f_gguf owns the maps and the tables; every pointer it hands
 * out (strings, tensor data, array elements) lives until v4f_gguf_close.
 * Threading: immutable after open; safe to read from many threads.
 */
#ifndef V4F_GGUF_H
#define V4F_GGUF_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/core.h"

#define V4F_GGUF_MAGIC 0x46554747u /* "GGUF" little-endian */
#define V4F_GGUF_DEFAULT_ALIGNMENT 32
#define V4F_GGUF_MAX_DIMS 4

/* Metadata value types (GGUF spec numbering). */
typedef enum v4f_gguf_vtype {
    V4F_GGUF_U8 = 0,
    V4F_GGUF_I8 = 1,
    V4F_GGUF_U16 = 2,
    V4F_GGUF_I16 = 3,
    V4F_GGUF_U32 = 4,
    V4F_GGUF_I32 = 5,
    V4F_GGUF_F32 = 6,
    V4F_GGUF_BOOL = 7,
    V4F_GGUF_STRING = 8,
    V4F_GGUF_ARRAY = 9,
    V4F_GGUF_U64 = 10,
    V4F_GGUF_I64 = 11,
    V4F_GGUF_F64 = 12,
    V4F_GGUF_VTYPE_COUNT
} v4f_gguf_vtype;

const char *v4f_gguf_vtype_name(uint32_t vtype);

/* One metadata entry. For arrays, arr_type/arr_n describe the elements and
 * val points at the first element's encoding; val_bytes covers all of them.
 * Scalars are also decoded into the union for convenience: U8/U16/U32/U64
 * into u64, I8/I16/I32/I64 into i64 (sign-extended), F32/F64 into f64, BOOL
 * into b (any nonzero byte is true), STRING into str (val then points at the
 * u64 length that precedes the bytes). Keys are valid UTF-8 without NUL;
 * string values are not UTF-8 checked (token pieces may be raw bytes). */
typedef struct v4f_gguf_kv {
    v4f_str key;
    uint32_t type;
    uint32_t arr_type; /* valid when type == ARRAY */
    uint64_t arr_n;    /* valid when type == ARRAY */
    const uint8_t *val;
    uint64_t val_bytes;
    union {
        uint64_t u64;
        int64_t i64;
        double f64;
        bool b;
        v4f_str str;
    } v;
} v4f_gguf_kv;

typedef struct v4f_gguf_tensor {
    v4f_str name;
    uint32_t type;   /* v4f_ggml_type (see quant/quant.h) */
    uint32_t n_dims; /* 1..4 */
    uint64_t ne[V4F_GGUF_MAX_DIMS]; /* ne[0] fastest; unused dims = 1 */
    uint64_t n_elems;
    uint64_t n_bytes;
    uint64_t file_offset; /* absolute offset in its shard */
    uint32_t shard;       /* which file of a split model */
    const void *data;     /* into the map; 'alignment'-aligned in the file */
} v4f_gguf_tensor;

typedef struct v4f_gguf v4f_gguf;

/* Open (and parse) path. If the name looks like a split file
 * (...-00001-of-0000N.gguf) or split.count > 1, every shard is opened.
 * On failure returns NULL-status != 0 and err names the file and problem. */
v4f_status v4f_gguf_open(const char *path, v4f_gguf **out, v4f_err *err);
/* Parse from a memory buffer (no copy; buf must outlive the object).
 * Used by the fuzzer and tests; name is used in messages. */
v4f_status v4f_gguf_open_memory(const void *buf, size_t size, const char *name,
                                v4f_gguf **out, v4f_err *err);
void v4f_gguf_close(v4f_gguf *g);

const char *v4f_gguf_path(const v4f_gguf *g);
uint32_t v4f_gguf_version(const v4f_gguf *g);
uint32_t v4f_gguf_alignment(const v4f_gguf *g);
uint32_t v4f_gguf_n_shards(const v4f_gguf *g);
uint64_t v4f_gguf_file_size(const v4f_gguf *g); /* sum over shards */

/* ---- metadata ---- */
uint64_t v4f_gguf_n_kv(const v4f_gguf *g);
const v4f_gguf_kv *v4f_gguf_kv_at(const v4f_gguf *g, uint64_t i);
const v4f_gguf_kv *v4f_gguf_kv_find(const v4f_gguf *g, const char *key);

/* Typed getters. Integer getters accept any integer type whose value fits
 * (and bool for u32); float getters accept F32/F64. They return
 * V4F_STATUS_NOT_FOUND if absent, V4F_STATUS_FORMAT on a type mismatch or
 * out-of-range value (message names the key, found and expected type). */
v4f_status v4f_gguf_get_u32(const v4f_gguf *g, const char *key, uint32_t *out, v4f_err *err);
v4f_status v4f_gguf_get_u64(const v4f_gguf *g, const char *key, uint64_t *out, v4f_err *err);
v4f_status v4f_gguf_get_f32(const v4f_gguf *g, const char *key, float *out, v4f_err *err);
v4f_status v4f_gguf_get_bool(const v4f_gguf *g, const char *key, bool *out, v4f_err *err);
v4f_status v4f_gguf_get_str(const v4f_gguf *g, const char *key, v4f_str *out, v4f_err *err);

/* Array access. For numeric arrays: element i converted to int64/double
 * (false if i out of range or the type is not numeric). For string arrays:
 * v4f_gguf_arr_str gives element i (O(1) after open: the reader indexes
 * string arrays). Nested arrays: v4f_gguf_arr_sub returns a kv-like view of
 * element i (its own arr_type/arr_n/val). Views and copies of a kv are not
 * indexed: arr_str and arr_sub on them walk the encoding, O(i). Nesting is
 * capped at 8 levels (deeper files are rejected at open). */
bool v4f_gguf_arr_int(const v4f_gguf_kv *kv, uint64_t i, int64_t *out);
bool v4f_gguf_arr_float(const v4f_gguf_kv *kv, uint64_t i, double *out);
bool v4f_gguf_arr_str(const v4f_gguf *g, const v4f_gguf_kv *kv, uint64_t i, v4f_str *out);
bool v4f_gguf_arr_sub(const v4f_gguf_kv *kv, uint64_t i, v4f_gguf_kv *out);

/* ---- tensors ---- */
uint64_t v4f_gguf_n_tensors(const v4f_gguf *g);
const v4f_gguf_tensor *v4f_gguf_tensor_at(const v4f_gguf *g, uint64_t i);
const v4f_gguf_tensor *v4f_gguf_tensor_find(const v4f_gguf *g, const char *name);

/* ---- writer ----
 * Streaming writer: add all metadata and tensor descriptors first, then
 * write the header, then each tensor's bytes in the order they were added
 * (v4f_gguf_writer_write_data may be called repeatedly per tensor, so a
 * huge tensor can be produced in pieces). Nothing is held in memory but the
 * directory. Byte sizes are computed from the type table. */
typedef struct v4f_gguf_writer v4f_gguf_writer;

v4f_status v4f_gguf_writer_open(const char *path, uint32_t alignment,
                                v4f_gguf_writer **out, v4f_err *err);
void v4f_gguf_writer_set_u32(v4f_gguf_writer *w, const char *key, uint32_t v);
void v4f_gguf_writer_set_i32(v4f_gguf_writer *w, const char *key, int32_t v);
void v4f_gguf_writer_set_u64(v4f_gguf_writer *w, const char *key, uint64_t v);
void v4f_gguf_writer_set_f32(v4f_gguf_writer *w, const char *key, float v);
void v4f_gguf_writer_set_bool(v4f_gguf_writer *w, const char *key, bool v);
void v4f_gguf_writer_set_str(v4f_gguf_writer *w, const char *key, const char *v);
/* Array of n numeric elements of vtype (U8..F64 except STRING/ARRAY); data is
 * the little-endian element encoding. */
void v4f_gguf_writer_set_arr(v4f_gguf_writer *w, const char *key, uint32_t vtype,
                             const void *data, uint64_t n);
void v4f_gguf_writer_set_arr_str(v4f_gguf_writer *w, const char *key,
                                 const char *const *strs, uint64_t n);
/* Any value from its raw GGUF encoding (every type, including u8/i8/u16/i16/
 * i64/f64 scalars and nested arrays): enc is what follows the value-type
 * field in a file (for ARRAY: u32 element type, u64 count, elements). The
 * encoding is validated (nesting depth <= 8). */
void v4f_gguf_writer_set_raw(v4f_gguf_writer *w, const char *key, uint32_t vtype,
                             const void *enc, uint64_t n_bytes);
/* Copy one metadata entry from an open reader (any type). */
void v4f_gguf_writer_set_kv(v4f_gguf_writer *w, const v4f_gguf_kv *kv);
/* Setting an existing key replaces its value (keeps its position). Setter
 * errors (bad key, bad encoding, set after begin_data) are sticky and are
 * returned by the next add_tensor/begin_data/write_data/close. If
 * general.alignment is not set and alignment != 32, begin_data adds it.
 * alignment 0 in writer_open means the default (32). */
/* Declare a tensor; ne has n_dims entries (ne[0] fastest). */
v4f_status v4f_gguf_writer_add_tensor(v4f_gguf_writer *w, const char *name, uint32_t type,
                                      uint32_t n_dims, const uint64_t *ne, v4f_err *err);
/* Write header + metadata + directory + padding. Call once, after all adds. */
v4f_status v4f_gguf_writer_begin_data(v4f_gguf_writer *w, v4f_err *err);
/* Append bytes of the current tensor (in declaration order). Padding between
 * tensors is inserted automatically once a tensor's bytes are complete. */
v4f_status v4f_gguf_writer_write_data(v4f_gguf_writer *w, const void *data, uint64_t n,
                                      v4f_err *err);
/* Finish: checks every tensor was fully written, flushes, fsyncs and closes.
 * Calls begin_data first if it was never called (metadata-only files).
 * On any failure the partial file is deleted. Always frees w. */
v4f_status v4f_gguf_writer_close(v4f_gguf_writer *w, v4f_err *err);
/* Abort: close and delete the partial file. Accepts NULL. */
void v4f_gguf_writer_abort(v4f_gguf_writer *w);

#endif /* V4F_GGUF_H */
