/*
 * cuda_backend.cu - device context, buffers, copies and timing of the CUDA
 * backend (API in cuda_backend.h).
 *
 * Owns: the v4f_cuda context (device index, one non-blocking stream, two
 * events) and the allocation rule for device buffers: plain cudaMalloc,
 * size rounded up to 256 bytes, padding zeroed, so kernels may read whole
 * 16-byte chunks at the end of a matrix (cuda_backend.h, invariants).
 *
 * Memory ownership: the context owns its stream and events (destroyed by
 * v4f_cuda_close); buffers belong to their allocator's caller.
 * Threading: one owner thread per context; every entry point calls
 * cudaSetDevice first, so several contexts on several devices can be driven
 * from different threads.
 */
#include "backend/cuda/cuda_common.cuh"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define V4F_CUDA_ALLOC_ALIGN 256

int v4f_cuda_pdl;

/* A kernel whose code reveals the architecture it was compiled for: PDL is
 * used only when the code that runs has the griddepcontrol instructions. */
__global__ void k_pdl_probe(void) {}

/* PDL on: the device is sm_90+ and runs sm_90+ code, unless V4F_PDL=0.
 * A process-wide switch (the kernels are shared by all contexts): the
 * first context decides it, an older device opened later turns it off. */
static void pdl_decide(int device, int cc_major, bool first) {
    const char *e = getenv("V4F_PDL");
    cudaFuncAttributes fa;
    bool ok = cc_major >= 9 && !(e && strcmp(e, "0") == 0);
    if (ok) {
        if (cudaFuncGetAttributes(&fa, k_pdl_probe) == cudaSuccess) {
            ok = fa.binaryVersion >= 90;
        } else {
            (void)cudaGetLastError();
            ok = false;
        }
    }
    if (first) v4f_cuda_pdl = ok ? 1 : 0;
    else if (!ok) v4f_cuda_pdl = 0;
    v4f_log(V4F_LOG_DEBUG, "cuda: device %d programmatic dependent launch %s", device, v4f_cuda_pdl ? "on" : "off");
}

int v4f_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError(); /* clear "no driver" etc. */
        return 0;
    }
    return n;
}

static v4f_status ctx_init(v4f_cuda *c, int device, v4f_err *err) {
    int n = 0;
    CUDA_TRY(cudaGetDeviceCount(&n));
    if (device < 0 || device >= n)
        return v4f_err_set(err, V4F_STATUS_DEVICE, "cuda: device %d does not exist (%d visible)", device, n);
    c->device = device;
    CUDA_TRY(cudaSetDevice(device));
    cudaDeviceProp prop;
    CUDA_TRY(cudaGetDeviceProperties(&prop, device));
    snprintf(c->name, sizeof c->name, "%s", prop.name);
    c->sm_count = prop.multiProcessorCount;
    static int opened;
    pdl_decide(device, prop.major, __sync_fetch_and_add(&opened, 1) == 0);
    int bus_bits = 0, mem_khz = 0;
    if (cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device) == cudaSuccess &&
        cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, device) == cudaSuccess)
        c->peak_bw = 2.0 * (double)mem_khz * 1e3 * (double)bus_bits / 8.0; /* DDR: 2 transfers per clock */
    else
        (void)cudaGetLastError();
    CUDA_TRY(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    CUDA_TRY(cudaEventCreate(&c->ev_start));
    CUDA_TRY(cudaEventCreate(&c->ev_stop));
    v4f_cuda_attn_init(c);
    return v4f_cuda_quant_init(c, err);
}

v4f_status v4f_cuda_open(int device, v4f_cuda **out, v4f_err *err) {
    *out = NULL;
    v4f_cuda *c = (v4f_cuda *)v4f_xcalloc(1, sizeof *c);
    const v4f_status st = ctx_init(c, device, err);
    if (st != V4F_OK) {
        v4f_cuda_close(c);
        return st;
    }
    *out = c;
    return V4F_OK;
}

#ifdef V4F_KTRACE
static void (*g_kt_dumps[16])(FILE *);
static int g_kt_ndumps;
extern "C" void v4f_kt_register(void (*dump)(FILE *)) {
    if (g_kt_ndumps < 16) g_kt_dumps[g_kt_ndumps++] = dump;
}
static void kt_write(void) {
    const char *path = getenv("V4F_KTRACE_OUT");
    FILE *f = path ? fopen(path, "w") : NULL;
    if (!f) return;
    for (int i = 0; i < g_kt_ndumps; i++) g_kt_dumps[i](f);
    fclose(f);
}
#endif

void v4f_cuda_close(v4f_cuda *c) {
    if (!c) return;
    /* Teardown errors are not actionable; clear them so they do not leak
     * into the next call on this thread. */
    if (cudaSetDevice(c->device) == cudaSuccess && c->stream) (void)cudaStreamSynchronize(c->stream);
#ifdef V4F_KTRACE
    kt_write();
#endif
    v4f_cuda_fork_deinit(c);
    v4f_cuda_prefetch_deinit(c);
    v4f_cuda_quant_deinit(c);
    if (c->ev_start) (void)cudaEventDestroy(c->ev_start);
    if (c->ev_stop) (void)cudaEventDestroy(c->ev_stop);
    if (c->stream) (void)cudaStreamDestroy(c->stream);
    (void)cudaGetLastError();
    free(c);
}

const char *v4f_cuda_device_name(const v4f_cuda *c) { return c->name; }
double v4f_cuda_peak_bw(const v4f_cuda *c) { return c->peak_bw; }
int v4f_cuda_sm_count(const v4f_cuda *c) { return c->sm_count; }

v4f_status v4f_cuda_sync(v4f_cuda *c, v4f_err *err) {
    CUDA_TRY_DEVICE(c);
    CUDA_TRY(cudaStreamSynchronize(c->stream));
    return V4F_OK;
}

v4f_status v4f_cuda_alloc(v4f_cuda *c, size_t bytes, void **out, v4f_err *err) {
    *out = NULL;
    if (bytes == 0) bytes = 1;
    if (bytes > SIZE_MAX - V4F_CUDA_ALLOC_ALIGN)
        return v4f_err_set(err, V4F_STATUS_OOM, "cuda: allocation of %zu bytes overflows", bytes);
    const size_t padded = (bytes + V4F_CUDA_ALLOC_ALIGN - 1) / V4F_CUDA_ALLOC_ALIGN * V4F_CUDA_ALLOC_ALIGN;
    CUDA_TRY_DEVICE(c);
    void *p = NULL;
    CUDA_TRY(cudaMalloc(&p, padded));
    if (padded > bytes) {
        const cudaError_t e = cudaMemsetAsync((uint8_t *)p + bytes, 0, padded - bytes, c->stream);
        if (e != cudaSuccess) {
            (void)cudaFree(p);
            return v4f_cuda_fail(err, e, "cudaMemsetAsync(padding)", __FILE__, __LINE__);
        }
    }
    *out = p;
    return V4F_OK;
}

void v4f_cuda_free(v4f_cuda *c, void *p) {
    if (!p) return;
    /* cudaFree synchronizes the device; an error here is a sticky fault that
     * the next synchronizing call reports. */
    if (cudaSetDevice(c->device) == cudaSuccess) (void)cudaFree(p);
}

/* ---- host ranges pinned by this process (v4f_cuda_host_register) ---------------------- */

/* Every context's registrations, so that a second session of one mapped
 * model neither asks the driver to pin pages a first one pinned nor
 * uploads a range that mixes them with pageable pages (the driver refuses
 * both with an error, which compute-sanitizer reports); guarded by g_reg_mu. */
typedef struct reg_range {
    uintptr_t lo, hi;
} reg_range;
static pthread_mutex_t g_reg_mu = PTHREAD_MUTEX_INITIALIZER;
static reg_range *g_reg;
static size_t g_reg_n, g_reg_cap;

/* 0: [p, p + n) touches no pinned range; 1: lies inside one; 2: partly. */
static int reg_overlap_locked(uintptr_t lo, uintptr_t hi) {
    for (size_t i = 0; i < g_reg_n; i++) {
        if (hi <= g_reg[i].lo || lo >= g_reg[i].hi) continue;
        return lo >= g_reg[i].lo && hi <= g_reg[i].hi ? 1 : 2;
    }
    return 0;
}

int v4f_cuda_reg_overlap(const void *p, size_t n) {
    pthread_mutex_lock(&g_reg_mu);
    const int r = reg_overlap_locked((uintptr_t)p, (uintptr_t)p + n);
    pthread_mutex_unlock(&g_reg_mu);
    return r;
}

bool v4f_cuda_reg_add(const void *p, size_t n) {
    pthread_mutex_lock(&g_reg_mu);
    bool ok = reg_overlap_locked((uintptr_t)p, (uintptr_t)p + n) == 0;
    if (ok && g_reg_n == g_reg_cap) {
        const size_t cap = g_reg_cap ? 2 * g_reg_cap : 64;
        reg_range *r = (reg_range *)realloc(g_reg, cap * sizeof *r);
        if (r) g_reg = r, g_reg_cap = cap;
        else ok = false;
    }
    if (ok) g_reg[g_reg_n++] = (reg_range){(uintptr_t)p, (uintptr_t)p + n};
    pthread_mutex_unlock(&g_reg_mu);
    return ok;
}

void v4f_cuda_reg_remove(const void *p) {
    pthread_mutex_lock(&g_reg_mu);
    for (size_t i = 0; i < g_reg_n; i++)
        if (g_reg[i].lo == (uintptr_t)p) {
            g_reg[i] = g_reg[--g_reg_n];
            break;
        }
    pthread_mutex_unlock(&g_reg_mu);
}

/* Bytes per pass of an upload bounced through pinned memory. */
#define UPLOAD_BOUNCE_BYTES (64u << 20)

/* src -> dst through a pinned bounce buffer, synchronously. */
static v4f_status upload_bounced(v4f_cuda *c, void *dst, const void *src, size_t bytes, v4f_err *err) {
    const size_t chunk = bytes < UPLOAD_BOUNCE_BYTES ? bytes : UPLOAD_BOUNCE_BYTES;
    void *bounce = NULL;
    CUDA_TRY(cudaHostAlloc(&bounce, chunk, cudaHostAllocDefault));
    cudaError_t e = cudaSuccess;
    for (size_t off = 0; off < bytes && e == cudaSuccess; off += chunk) {
        const size_t n = bytes - off < chunk ? bytes - off : chunk;
        memcpy(bounce, (const uint8_t *)src + off, n);
        e = cudaMemcpyAsync((uint8_t *)dst + off, bounce, n, cudaMemcpyHostToDevice, c->stream);
        if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
    }
    (void)cudaFreeHost(bounce);
    CUDA_TRY(e);
    return V4F_OK;
}

v4f_status v4f_cuda_upload(v4f_cuda *c, void *dst, const void *src, size_t bytes, v4f_err *err) {
    CUDA_TRY_DEVICE(c);
    /* A host range that covers both pages pinned with cudaHostRegister
     * (e.g. another session's host-resident experts in the same mapped
     * model file) and pageable ones is refused as a whole: such ranges go
     * through a pinned bounce buffer, those that v4flash pinned in part
     * without asking the driver, others after its refusal. */
    const bool some = dst && src && bytes;
    if (some && v4f_cuda_reg_overlap(src, bytes) == 2) return upload_bounced(c, dst, src, bytes, err);
    const cudaError_t e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream);
    if (e == cudaErrorInvalidValue && some) {
        (void)cudaGetLastError();
        return upload_bounced(c, dst, src, bytes, err);
    }
    CUDA_TRY(e);
    CUDA_TRY(cudaStreamSynchronize(c->stream));
    return V4F_OK;
}

v4f_status v4f_cuda_download(v4f_cuda *c, void *dst, const void *src, size_t bytes, v4f_err *err) {
    CUDA_TRY_DEVICE(c);
    CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    CUDA_TRY(cudaStreamSynchronize(c->stream));
    return V4F_OK;
}

v4f_status v4f_cuda_copy(v4f_cuda *c, void *dst, const void *src, size_t bytes, v4f_err *err) {
    CUDA_TRY_DEVICE(c);
    CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream));
    return V4F_OK;
}

v4f_status v4f_cuda_copy_2d(v4f_cuda *c, void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                            size_t rows, v4f_err *err) {
    if (rows == 0 || width == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    CUDA_TRY(cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, rows, cudaMemcpyDeviceToDevice, c->stream));
    return V4F_OK;
}

v4f_status v4f_cuda_memset(v4f_cuda *c, void *dst, int byte, size_t bytes, v4f_err *err) {
    CUDA_TRY_DEVICE(c);
    CUDA_TRY(cudaMemsetAsync(dst, byte, bytes, c->stream));
    return V4F_OK;
}

v4f_status v4f_cuda_timer_start(v4f_cuda *c, v4f_err *err) {
    CUDA_TRY_DEVICE(c);
    CUDA_TRY(cudaEventRecord(c->ev_start, c->stream));
    return V4F_OK;
}

v4f_status v4f_cuda_timer_stop(v4f_cuda *c, float *ms, v4f_err *err) {
    *ms = 0;
    CUDA_TRY_DEVICE(c);
    CUDA_TRY(cudaEventRecord(c->ev_stop, c->stream));
    CUDA_TRY(cudaEventSynchronize(c->ev_stop));
    CUDA_TRY(cudaEventElapsedTime(ms, c->ev_start, c->ev_stop));
    return V4F_OK;
}
