/*
 * gguf_internal.h - helpers shared by the GGUF reader (gguf.c) and writer
 * (gguf_writer.c). Not part of the module's public interface.
 *
 * Owns nothing; every function is pure and thread-safe.
 */
#ifndef V4F_GGUF_INTERNAL_H
#define V4F_GGUF_INTERNAL_H

#include "gguf/gguf.h"

#define V4F_GGUF_MAX_NESTING 8          /* array-in-array depth cap */
#define V4F_GGUF_MAX_NAME 65535         /* key / tensor name bytes */
#define V4F_GGUF_MAX_ALIGNMENT 65536u   /* general.alignment cap */

/* Fixed encoded size of a scalar value type; 0 for STRING, ARRAY, unknown. */
uint32_t v4f_gguf_vtype_size(uint32_t vtype);

/* Check that enc[0..n) is exactly one well-formed value of vtype (for ARRAY:
 * u32 element type, u64 count, elements), nesting capped. */
v4f_status v4f_gguf_value_check(const void *enc, uint64_t n, uint32_t vtype,
                                v4f_err *err);

/* Check a key or tensor name: 1..V4F_GGUF_MAX_NAME bytes, valid UTF-8, no
 * NUL. what is "key" or "tensor name" (used in the message). */
v4f_status v4f_gguf_name_check(v4f_str s, const char *what, v4f_err *err);

#endif /* V4F_GGUF_INTERNAL_H */
