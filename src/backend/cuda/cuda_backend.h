/*
 * cuda_backend.h - the C API of the CUDA backend (C11 callers; the
 * implementation is in src/backend/cuda/ *.cu, built only with `make CUDA=1`).
 *
 * Owns: one device context (v4f_cuda: a device index, one non-blocking stream,
 * two timing events), device buffers, and the launchers of the weight-format
 * kernels: matrix-vector products y = W x with float32 activations for W in
 * F32, F16, BF16, Q8_0, Q2_K, Q4_K, IQ2_XXS (one matrix, or a batch of
 * independent (W, x, y) triples in one launch), and row dequantization to
 * float32.
 *
 * Invariants:
 *  - Matrices use the GGUF/GGML block layouts (quant/quant_blocks.h,
 *    MODEL.md section 10) unchanged: row r of a v4f_cuda_mat starts at
 *    data + r * row_bytes, n_in is a multiple of the type's block size.
 *  - Every buffer from v4f_cuda_alloc starts 256-byte aligned and is padded
 *    to a multiple of 256 bytes (padding zeroed). The fast matvec kernels
 *    read whole 16-byte aligned chunks, so every matrix must lie inside such
 *    an allocation (or another allocation with the same guarantee).
 *  - Fast path conditions (else a slower, alignment-agnostic kernel runs and
 *    gives the same results within the same tolerance): data and row_bytes
 *    multiples of 16, x 16-byte aligned. All shapes of the model meet them
 *    (e.g. Q8_0 needs n_in % 256 == 0, Q2_K n_in % 1024, IQ2_XXS n_in % 2048,
 *    Q4_K any, F16/BF16 n_in % 8, F32 n_in % 4).
 *  - Launchers are asynchronous on the context's stream; argument errors are
 *    reported before anything is queued; device faults surface as
 *    V4F_STATUS_DEVICE at the next synchronizing call (v4f_cuda_sync,
 *    download, timer stop).
 *
 * Memory ownership: device buffers belong to the caller who allocated them
 * (v4f_cuda_free); the context owns its stream, events and a small scratch
 * (about 1.8 MB, allocated at open) where the quantized-weight matvecs put
 * the int8 split of x, so launches never allocate. Consecutive calls on
 * the context reuse that scratch in stream order.
 * Threading: a v4f_cuda is used by one thread at a time (the device's owner
 * thread); every entry point makes its device current for that thread.
 */
#ifndef V4F_CUDA_BACKEND_H
#define V4F_CUDA_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "v4flash.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct v4f_cuda v4f_cuda;

/* Largest number of (W, x, y) triples in one v4f_cuda_matvec_batch call
 * (decode: 6 routed experts x {gate, up} = 12). */
#define V4F_CUDA_MATVEC_MAX_BATCH 32

/* A weight matrix in device memory: n_out rows of n_in inputs. */
typedef struct v4f_cuda_mat {
    const void *data;   /* device pointer; row r at data + r * row_bytes */
    uint32_t type;      /* v4f_ggml_type */
    int64_t n_in;       /* elements per row (multiple of the block size) */
    int64_t n_out;      /* rows */
    uint64_t row_bytes; /* stride between rows, >= packed bytes of a row */
} v4f_cuda_mat;

/* Number of visible CUDA devices; 0 when there is no driver or no device. */
int v4f_cuda_device_count(void);

/* Open device `device`: makes it current, creates the stream and events,
 * uploads the format tables (IQ2_XXS grid) and allocates the matvec
 * scratch. *out is freed with
 * v4f_cuda_close. Errors: V4F_STATUS_DEVICE (no device, driver error). */
v4f_status v4f_cuda_open(int device, v4f_cuda **out, v4f_err *err);
/* Synchronizes, destroys the stream/events; accepts NULL. Buffers allocated
 * from the context must be freed before. */
void v4f_cuda_close(v4f_cuda *c);

/* "NVIDIA H100 80GB HBM3" etc.; valid until close. */
const char *v4f_cuda_device_name(const v4f_cuda *c);
/* Device memory bandwidth from the device attributes (bus width x memory
 * clock), bytes/s; 0 if unknown. A datasheet figure, not a measurement. */
double v4f_cuda_peak_bw(const v4f_cuda *c);
int v4f_cuda_sm_count(const v4f_cuda *c);

/* Wait for all queued work; returns the first asynchronous fault. */
v4f_status v4f_cuda_sync(v4f_cuda *c, v4f_err *err);

/* ---- buffers ------------------------------------------------------------ */

/* cudaMalloc of `bytes` rounded up to 256 (plain device memory, never
 * managed); the padding is zeroed. Errors: V4F_STATUS_OOM when the device is
 * full, V4F_STATUS_DEVICE otherwise. Free with v4f_cuda_free. */
v4f_status v4f_cuda_alloc(v4f_cuda *c, size_t bytes, void **out, v4f_err *err);
void v4f_cuda_free(v4f_cuda *c, void *p); /* accepts NULL */

/* Host -> device and device -> host copies; both wait for completion (the
 * stream's earlier work included), so host memory can be reused at once. */
v4f_status v4f_cuda_upload(v4f_cuda *c, void *dst, const void *src, size_t bytes, v4f_err *err);
v4f_status v4f_cuda_download(v4f_cuda *c, void *dst, const void *src, size_t bytes, v4f_err *err);
/* Device -> device copy and byte fill, queued on the stream. */
v4f_status v4f_cuda_copy(v4f_cuda *c, void *dst, const void *src, size_t bytes, v4f_err *err);
v4f_status v4f_cuda_memset(v4f_cuda *c, void *dst, int byte, size_t bytes, v4f_err *err);

/* ---- timing (device events on the stream) --------------------------------- */

v4f_status v4f_cuda_timer_start(v4f_cuda *c, v4f_err *err);
/* Records the stop event, waits for it, returns the elapsed milliseconds. */
v4f_status v4f_cuda_timer_stop(v4f_cuda *c, float *ms, v4f_err *err);

/* ---- weight-format kernels (cuda_quant.cu) --------------------------------- */

/* true for F32, F16, BF16, Q8_0, Q2_K, Q4_K, IQ2_XXS */
bool v4f_cuda_type_supported(uint32_t type);

/* y[0..n_out) = W x[0..n_in); x and y device pointers (float32). y must
 * not overlap x or W. */
v4f_status v4f_cuda_matvec(v4f_cuda *c, const v4f_cuda_mat *w, const float *x, float *y, v4f_err *err);

/* For i in [0, n): y[i] = w[i] x[i], in one launch. All w[i] share type
 * and n_in; n_out and row_bytes may differ. x[i] may repeat (gate and up of
 * one token share x); the y[i] must not overlap anything. Arrays are host
 * arrays of device pointers; n <= V4F_CUDA_MATVEC_MAX_BATCH. */
v4f_status v4f_cuda_matvec_batch(v4f_cuda *c, int n, const v4f_cuda_mat *w, const float *const *x, float *const *y,
                                 v4f_err *err);

/* dst[r * n_in + i] = element i of row row0 + r, r in [0, n_rows): bit-exact
 * with v4f_dequant_row_ref. dst is a device pointer. */
v4f_status v4f_cuda_dequant_rows(v4f_cuda *c, const v4f_cuda_mat *w, int64_t row0, int64_t n_rows, float *dst,
                                 v4f_err *err);

#ifdef __cplusplus
}
#endif

#endif /* V4F_CUDA_BACKEND_H */
