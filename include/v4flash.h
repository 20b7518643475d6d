/*
 * v4flash.h - public API of the v4flash inference engine for DeepSeek V4 Flash.
 *
 * Conventions (every module follows them):
 *   - Functions that can fail return v4f_status: 0 (V4F_OK) on success, a
 *     negative code otherwise. A caller-supplied v4f_err receives a message
 *     that names the file / tensor / key and the problem.
 *   - Library code never calls exit() and never writes to stdout.
 *   - _open/_close for objects backed by files or devices, _new/_free for heap
 *     objects. Every _free/_close accepts NULL.
 */
#ifndef V4FLASH_H
#define V4FLASH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define V4F_VERSION_STRING "0.1.0"

typedef enum v4f_status {
    V4F_OK = 0,
    V4F_STATUS_IO = -1,          /* open/read/write/mmap failed */
    V4F_STATUS_FORMAT = -2,      /* malformed file (GGUF, KV file, ...) */
    V4F_STATUS_UNSUPPORTED = -3, /* valid but not supported (type, version) */
    V4F_STATUS_INVALID_ARG = -4, /* bad argument from the caller */
    V4F_STATUS_OOM = -5,         /* a large (fallible) allocation failed */
    V4F_STATUS_NOT_FOUND = -6,   /* key / tensor / file not present */
    V4F_STATUS_LAYOUT = -7,      /* model layout does not match the config */
    V4F_STATUS_RANGE = -8,       /* value out of the accepted range */
    V4F_STATUS_DEVICE = -9,      /* backend / device error */
    V4F_STATUS_INTERRUPTED = -10, /* stopped on request */
    V4F_STATUS_BUSY = -11         /* held by another process (a named session) */
} v4f_status;

/* Error report: a fixed buffer filled on failure. Zero-initialise it. */
typedef struct v4f_err {
    v4f_status code;
    char msg[512];
} v4f_err;

/* Human-readable name of a status code ("ok", "io", "format", ...). */
const char *v4f_status_str(v4f_status st);

#ifdef __cplusplus
}
#endif

#endif /* V4FLASH_H */
