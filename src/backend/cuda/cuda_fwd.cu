/*
 * cuda_fwd.cu - memory mapping, graphs and the glue kernels of the GPU
 * forward pass (API and invariants in cuda_fwd.h).
 *
 * Each glue kernel mirrors the CPU code it replaces in forward.c (same
 * order of float operations, products and sums written with __fmul_rn /
 * __fadd_rn so nvcc does not contract them); the compressor kernels are the
 * device form of forward.c's compressor_run state machine, with the state
 * kept as position-indexed rings instead of shifting slots.
 *
 * Memory ownership: nothing is allocated except by the explicit
 * host_alloc/graph entry points. Threading: the context's owner thread.
 */
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_dev.cuh"

extern "C" {
#include "backend/cuda/cuda_fwd.h"
#include "core/ggml_type.h"
}

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdlib.h>

#define V4F_CUDA_DEPS_MAX 16 /* capture dependencies of one point of a captured stream */
#define ARG_CHECK(cond, ...)                                                       \
    do {                                                                           \
        if (!(cond)) return v4f_err_set(err, V4F_STATUS_INVALID_ARG, __VA_ARGS__); \
    } while (0)

static inline unsigned blocks_for(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > 65535 * 32) b = 65535 * 32;
    return (unsigned)b;
}

/* ---- memory -------------------------------------------------------------------- */

extern "C" v4f_status v4f_cuda_mem_info(v4f_cuda *c, size_t *free_bytes, size_t *total_bytes, v4f_err *err) {
    CUDA_TRY_DEVICE(c);
    CUDA_TRY(cudaMemGetInfo(free_bytes, total_bytes));
    return V4F_OK;
}

extern "C" v4f_status v4f_cuda_host_register(v4f_cuda *c, void *p, size_t bytes, void **dev, v4f_err *err) {
    ARG_CHECK(p && bytes > 0 && dev, "cuda host register: empty range");
    CUDA_TRY_DEVICE(c);
    /* pages another session pinned: the caller falls back to a pinned copy */
    if (!v4f_cuda_reg_add(p, bytes))
        return v4f_err_set(err, V4F_STATUS_DEVICE,
                           "cuda: cannot pin %zu bytes of host memory: part of it is pinned by another session", bytes);
    cudaError_t e = cudaHostRegister(p, bytes, cudaHostRegisterMapped | cudaHostRegisterReadOnly);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        /* older drivers: no read-only flag (the memory must then be writable) */
        e = cudaHostRegister(p, bytes, cudaHostRegisterMapped);
    }
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        v4f_cuda_reg_remove(p);
        return v4f_err_set(err, V4F_STATUS_DEVICE, "cuda: cannot pin %zu bytes of host memory: %s", bytes,
                           cudaGetErrorString(e));
    }
    e = cudaHostGetDevicePointer(dev, p, 0);
    if (e != cudaSuccess) {
        (void)cudaHostUnregister(p);
        v4f_cuda_reg_remove(p);
        return v4f_cuda_fail(err, e, "cudaHostGetDevicePointer", __FILE__, __LINE__);
    }
    return V4F_OK;
}

extern "C" void v4f_cuda_host_unregister(v4f_cuda *c, void *p) {
    if (!p) return;
    (void)cudaSetDevice(c->device);
    if (cudaHostUnregister(p) != cudaSuccess) (void)cudaGetLastError();
    v4f_cuda_reg_remove(p);
}

extern "C" v4f_status v4f_cuda_host_alloc(v4f_cuda *c, size_t bytes, void **host, void **dev, v4f_err *err) {
    *host = NULL;
    CUDA_TRY_DEVICE(c);
    CUDA_TRY(cudaHostAlloc(host, bytes ? bytes : 1, cudaHostAllocMapped));
    if (dev) CUDA_TRY(cudaHostGetDevicePointer(dev, *host, 0));
    return V4F_OK;
}

extern "C" void v4f_cuda_host_free(v4f_cuda *c, void *host) {
    if (!host) return;
    (void)cudaSetDevice(c->device);
    if (cudaFreeHost(host) != cudaSuccess) (void)cudaGetLastError();
}

extern "C" v4f_status v4f_cuda_upload_async(v4f_cuda *c, void *dst, const void *src, size_t bytes, v4f_err *err) {
    if (!bytes) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
    return V4F_OK;
}

extern "C" v4f_status v4f_cuda_download_async(v4f_cuda *c, void *dst, const void *src, size_t bytes, v4f_err *err) {
    if (!bytes) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    return V4F_OK;
}

extern "C" v4f_status v4f_cuda_measure_copy_bw(int device, size_t bytes, double *gbs, v4f_err *err) {
    *gbs = 0;
    v4f_cuda *c = NULL;
    v4f_status st = v4f_cuda_open(device, &c, err);
    if (st) return st;
    void *a = NULL, *b = NULL;
    st = v4f_cuda_alloc(c, bytes, &a, err);
    if (!st) st = v4f_cuda_alloc(c, bytes, &b, err);
    if (!st) st = v4f_cuda_memset(c, a, 0x3c, bytes, err);
    float ms[7];
    for (int i = 0; i < 7 && !st; i++) {
        st = v4f_cuda_timer_start(c, err);
        if (!st) st = v4f_cuda_copy(c, (i & 1) ? a : b, (i & 1) ? b : a, bytes, err);
        if (!st) st = v4f_cuda_timer_stop(c, &ms[i], err);
    }
    if (!st) {
        /* median of the last 6 (the first warms up) */
        for (int i = 1; i < 7; i++)
            for (int j = i + 1; j < 7; j++)
                if (ms[j] < ms[i]) {
                    float t = ms[i];
                    ms[i] = ms[j];
                    ms[j] = t;
                }
        double med = 0.5 * (ms[3] + ms[4]);
        *gbs = 2.0 * (double)bytes / (med * 1e-3) / 1e9;
    }
    v4f_cuda_free(c, a);
    v4f_cuda_free(c, b);
    v4f_cuda_close(c);
    return st;
}

__global__ void k_fill_random(float *x, int64_t n, uint64_t seed) {
    V4F_PDL_ENTRY();
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        uint64_t z = seed + 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        x[i] = (float)((double)(z >> 40) / (double)(1ull << 23) - 1.0);
    }
}

extern "C" v4f_status v4f_cuda_fill_random(v4f_cuda *c, float *x, int64_t n, uint64_t seed, v4f_err *err) {
    ARG_CHECK(n >= 0, "cuda fill: bad n");
    if (n == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    v4f_launch(k_fill_random, blocks_for(n, 256) > 4096 ? 4096 : blocks_for(n, 256), 256, 0, c->stream, x, n, seed);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

extern "C" v4f_status v4f_cuda_copy_any(v4f_cuda *c, void *dst, const void *src, size_t bytes, v4f_err *err) {
    if (!bytes) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, c->stream));
    return V4F_OK;
}

/* ---- fork / join ------------------------------------------------------------------------ */

extern "C" v4f_status v4f_cuda_fork_init(v4f_cuda *c, v4f_err *err) {
    if (c->aux_stream) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    c->main_stream = c->stream;
    c->qx_main = c->qx;
    CUDA_TRY(cudaStreamCreateWithFlags(&c->aux_stream, cudaStreamNonBlocking));
    CUDA_TRY(cudaEventCreateWithFlags(&c->ev_fork, cudaEventDisableTiming));
    CUDA_TRY(cudaEventCreateWithFlags(&c->ev_join, cudaEventDisableTiming));
    CUDA_TRY(cudaMalloc((void **)&c->qx_aux, c->qx_bytes));
    return V4F_OK;
}

void v4f_cuda_fork_deinit(v4f_cuda *c) {
    if (c->main_stream) {
        c->stream = c->main_stream;
        c->qx = c->qx_main;
    }
    if (c->aux_stream) {
        (void)cudaStreamSynchronize(c->aux_stream);
        (void)cudaStreamDestroy(c->aux_stream);
    }
    if (c->ev_fork) (void)cudaEventDestroy(c->ev_fork);
    if (c->ev_join) (void)cudaEventDestroy(c->ev_join);
    if (c->qx_aux) (void)cudaFree(c->qx_aux);
    c->aux_stream = NULL;
    c->ev_fork = c->ev_join = NULL;
    c->qx_aux = NULL;
    (void)cudaGetLastError();
}

extern "C" v4f_status v4f_cuda_fork(v4f_cuda *c, v4f_err *err) {
    ARG_CHECK(c->aux_stream && c->stream == c->main_stream, "cuda fork: not initialised or already forked");
    CUDA_TRY_DEVICE(c);
    CUDA_TRY(cudaEventRecord(c->ev_fork, c->main_stream));
    CUDA_TRY(cudaStreamWaitEvent(c->aux_stream, c->ev_fork, 0));
    c->stream = c->aux_stream;
    c->qx = c->qx_aux;
    return V4F_OK;
}

extern "C" v4f_status v4f_cuda_fork_end(v4f_cuda *c, v4f_err *err) {
    ARG_CHECK(c->aux_stream && c->stream == c->aux_stream, "cuda fork end: not forked");
    CUDA_TRY_DEVICE(c);
    c->stream = c->main_stream;
    c->qx = c->qx_main;
    CUDA_TRY(cudaEventRecord(c->ev_join, c->aux_stream));
    return V4F_OK;
}

extern "C" v4f_status v4f_cuda_join(v4f_cuda *c, v4f_err *err) {
    ARG_CHECK(c->aux_stream && c->stream == c->main_stream, "cuda join: still on the second stream");
    CUDA_TRY_DEVICE(c);
    CUDA_TRY(cudaStreamWaitEvent(c->main_stream, c->ev_join, 0));
    return V4F_OK;
}

/* ---- prefetch copies ------------------------------------------------------------- */

extern "C" v4f_status v4f_cuda_prefetch_init(v4f_cuda *c, v4f_err *err) {
    if (c->pf_stream) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    cudaStream_t s = NULL;
    CUDA_TRY(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    c->pf_stream = s; /* from here on prefetch_deinit releases what exists */
    CUDA_TRY(cudaEventCreateWithFlags(&c->ev_pf_free, cudaEventDisableTiming));
    for (int i = 0; i < V4F_CUDA_PREFETCH_SLOTS; i++)
        CUDA_TRY(cudaEventCreateWithFlags(&c->ev_pf_done[i], cudaEventDisableTiming));
    return V4F_OK;
}

void v4f_cuda_prefetch_deinit(v4f_cuda *c) {
    if (c->pf_stream) {
        (void)cudaStreamSynchronize(c->pf_stream);
        (void)cudaStreamDestroy(c->pf_stream);
    }
    if (c->ev_pf_free) (void)cudaEventDestroy(c->ev_pf_free);
    for (int i = 0; i < V4F_CUDA_PREFETCH_SLOTS; i++)
        if (c->ev_pf_done[i]) (void)cudaEventDestroy(c->ev_pf_done[i]);
    c->pf_stream = NULL;
    c->ev_pf_free = NULL;
    memset(c->ev_pf_done, 0, sizeof c->ev_pf_done);
    (void)cudaGetLastError();
}

/* the main stream: the context's own, also while forked */
static cudaStream_t main_of(const v4f_cuda *c) { return c->main_stream ? c->main_stream : c->stream; }

extern "C" v4f_status v4f_cuda_prefetch(v4f_cuda *c, int slot, void *const *dst, const void *const *src,
                                        const size_t *bytes, int n, v4f_err *err) {
    ARG_CHECK(c->pf_stream && slot >= 0 && slot < V4F_CUDA_PREFETCH_SLOTS && n >= 0,
              "cuda prefetch: not initialised or bad slot %d", slot);
    CUDA_TRY_DEVICE(c);
    CUDA_TRY(cudaEventRecord(c->ev_pf_free, main_of(c)));
    CUDA_TRY(cudaStreamWaitEvent(c->pf_stream, c->ev_pf_free, 0));
    for (int i = 0; i < n; i++)
        if (bytes[i]) CUDA_TRY(cudaMemcpyAsync(dst[i], src[i], bytes[i], cudaMemcpyDefault, c->pf_stream));
    CUDA_TRY(cudaEventRecord(c->ev_pf_done[slot], c->pf_stream));
    return V4F_OK;
}

extern "C" v4f_status v4f_cuda_prefetch_wait(v4f_cuda *c, int slot, v4f_err *err) {
    ARG_CHECK(c->pf_stream && slot >= 0 && slot < V4F_CUDA_PREFETCH_SLOTS, "cuda prefetch wait: bad slot %d", slot);
    CUDA_TRY_DEVICE(c);
    CUDA_TRY(cudaStreamWaitEvent(main_of(c), c->ev_pf_done[slot], 0));
    return V4F_OK;
}

/* ---- copies chosen on the device ----------------------------------------------------- */

struct cond_args {
    cudaGraphConditionalHandle h[V4F_CUDA_COND_MAX];
    int32_t want[V4F_CUDA_COND_MAX];
    const int32_t *ids;
    int n, k;
};

/* thread j: condition j = (want[j] is among ids[0..k)) */
__global__ void k_set_cond(cond_args a) {
    V4F_PDL_ENTRY();
    const int j = threadIdx.x;
    if (j >= a.n) return;
    unsigned hit = 0;
    for (int i = 0; i < a.k; i++) hit |= a.ids[i] == a.want[j];
    cudaGraphSetConditional(a.h[j], hit);
}

extern "C" v4f_status v4f_cuda_cond_copies(v4f_cuda *c, const int32_t *ids, int k, int n, const int32_t *want,
                                           void *const (*dst)[3], const void *const (*src)[3],
                                           const size_t (*bytes)[3], v4f_err *err) {
    ARG_CHECK(n >= 0 && n <= V4F_CUDA_COND_MAX && k >= 1 && ids, "cuda cond copies: bad sizes (n %d, k %d)", n, k);
    CUDA_TRY_DEVICE(c);
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    cudaGraph_t graph = NULL;
    CUDA_TRY(cudaStreamGetCaptureInfo(c->stream, &cs, NULL, &graph, NULL, NULL, NULL));
    if (cs != cudaStreamCaptureStatusActive || !graph)
        return v4f_err_set(err, V4F_STATUS_UNSUPPORTED, "cuda cond copies: the stream is not capturing");
    if (n == 0) return V4F_OK;
    cond_args a = {};
    a.ids = ids;
    a.n = n;
    a.k = k;
    for (int j = 0; j < n; j++) {
        CUDA_TRY(cudaGraphConditionalHandleCreate(&a.h[j], graph, 0, cudaGraphCondAssignDefault));
        a.want[j] = want[j];
    }
    v4f_launch(k_set_cond, 1, 32 * ((n + 31) / 32), 0, c->stream, a);
    CUDA_TRY(cudaGetLastError());
    const cudaGraphNode_t *deps = NULL;
    size_t ndeps = 0;
    CUDA_TRY(cudaStreamGetCaptureInfo(c->stream, &cs, NULL, &graph, &deps, NULL, &ndeps));
    ARG_CHECK(ndeps <= V4F_CUDA_DEPS_MAX, "cuda cond copies: %zu capture dependencies", ndeps);
    cudaGraphNode_t after[V4F_CUDA_DEPS_MAX], nodes[V4F_CUDA_COND_MAX];
    for (size_t i = 0; i < ndeps; i++) after[i] = deps[i];
    for (int j = 0; j < n; j++) {
        cudaGraphNodeParams p = {};
        p.type = cudaGraphNodeTypeConditional;
        p.conditional.handle = a.h[j];
        p.conditional.type = cudaGraphCondTypeIf;
        p.conditional.size = 1;
        CUDA_TRY(cudaGraphAddNode(&nodes[j], graph, after, NULL, ndeps, &p));
        for (int i = 0; i < 3; i++) {
            cudaGraphNode_t m;
            if (bytes[j][i])
                CUDA_TRY(cudaGraphAddMemcpyNode1D(&m, p.conditional.phGraph_out[0], NULL, 0, dst[j][i], src[j][i],
                                                  bytes[j][i], cudaMemcpyDefault));
        }
    }
    CUDA_TRY(cudaStreamUpdateCaptureDependencies(c->stream, nodes, NULL, (size_t)n, cudaStreamSetCaptureDependencies));
    return V4F_OK;
}

/* ---- graphs ---------------------------------------------------------------------- */

struct v4f_cuda_graph {
    cudaGraph_t graph;
    cudaGraphExec_t exec;
};

extern "C" v4f_status v4f_cuda_capture_begin(v4f_cuda *c, v4f_err *err) {
    CUDA_TRY_DEVICE(c);
    CUDA_TRY(cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal));
    return V4F_OK;
}

extern "C" v4f_status v4f_cuda_capture_end(v4f_cuda *c, bool ok, v4f_cuda_graph **out, v4f_err *err) {
    *out = NULL;
    cudaGraph_t g = NULL;
    const cudaError_t e = cudaStreamEndCapture(c->stream, &g);
    if (!ok || e != cudaSuccess) {
        if (g) (void)cudaGraphDestroy(g);
        (void)cudaGetLastError();
        if (!ok) return V4F_OK;
        return v4f_cuda_fail(err, e, "cudaStreamEndCapture", __FILE__, __LINE__);
    }
    cudaGraphExec_t x = NULL;
    const cudaError_t e2 = cudaGraphInstantiate(&x, g, 0);
    if (e2 != cudaSuccess) {
        (void)cudaGraphDestroy(g);
        return v4f_cuda_fail(err, e2, "cudaGraphInstantiate", __FILE__, __LINE__);
    }
    v4f_cuda_graph *r = (v4f_cuda_graph *)v4f_xcalloc(1, sizeof *r);
    r->graph = g;
    r->exec = x;
    *out = r;
    return V4F_OK;
}

extern "C" v4f_status v4f_cuda_graph_launch(v4f_cuda *c, v4f_cuda_graph *g, v4f_err *err) {
    CUDA_TRY_DEVICE(c);
    CUDA_TRY(cudaGraphLaunch(g->exec, c->stream));
    return V4F_OK;
}

extern "C" void v4f_cuda_graph_free(v4f_cuda_graph *g) {
    if (!g) return;
    if (g->exec) (void)cudaGraphExecDestroy(g->exec);
    if (g->graph) (void)cudaGraphDestroy(g->graph);
    free(g);
}

/* ---- phase timing --------------------------------------------------------------------- */

struct v4f_cuda_marks {
    int n;
    cudaEvent_t *ev;
};

extern "C" v4f_status v4f_cuda_marks_new(v4f_cuda *c, int n, v4f_cuda_marks **out, v4f_err *err) {
    *out = NULL;
    CUDA_TRY_DEVICE(c);
    v4f_cuda_marks *m = (v4f_cuda_marks *)v4f_xcalloc(1, sizeof *m);
    m->ev = (cudaEvent_t *)v4f_xcalloc((size_t)n, sizeof *m->ev);
    for (int i = 0; i < n; i++) {
        const cudaError_t e = cudaEventCreate(&m->ev[i]);
        if (e != cudaSuccess) {
            m->n = i;
            v4f_cuda_marks_free(m);
            return v4f_cuda_fail(err, e, "cudaEventCreate", __FILE__, __LINE__);
        }
    }
    m->n = n;
    *out = m;
    return V4F_OK;
}

extern "C" void v4f_cuda_marks_free(v4f_cuda_marks *m) {
    if (!m) return;
    for (int i = 0; i < m->n; i++) (void)cudaEventDestroy(m->ev[i]);
    free(m->ev);
    free(m);
}

extern "C" v4f_status v4f_cuda_mark(v4f_cuda *c, v4f_cuda_marks *m, int i, v4f_err *err) {
    ARG_CHECK(i >= 0 && i < m->n, "cuda mark %d of %d", i, m->n);
    CUDA_TRY(cudaEventRecord(m->ev[i], c->stream));
    return V4F_OK;
}

extern "C" v4f_status v4f_cuda_marks_read(v4f_cuda_marks *m, int last, float *ms, v4f_err *err) {
    ARG_CHECK(last >= 0 && last < m->n, "cuda marks: bad last %d", last);
    CUDA_TRY(cudaEventSynchronize(m->ev[last]));
    ms[0] = 0;
    for (int i = 1; i <= last; i++) CUDA_TRY(cudaEventElapsedTime(&ms[i], m->ev[i - 1], m->ev[i]));
    return V4F_OK;
}

extern "C" v4f_status v4f_cuda_mark_wait(v4f_cuda_marks *m, int i, v4f_err *err) {
    ARG_CHECK(i >= 0 && i < m->n, "cuda mark %d of %d", i, m->n);
    CUDA_TRY(cudaEventSynchronize(m->ev[i]));
    return V4F_OK;
}

/* ---- greedy pick on the device ----------------------------------------------------------- */

/* One 64-bit key per logit whose maximum is v4f_sampler_greedy's answer:
 * the value in order-preserving bits (+0 for both zeros, which compare
 * equal), then the complement of the id (lowest id wins a tie). NaN is 0,
 * below every other key (-inf included), so it wins only when all are NaN,
 * where the host's answer is id 0 too. */
__device__ __forceinline__ unsigned long long greedy_key(float v, int64_t i) {
    if (v != v) return 0ull;
    uint32_t b = __float_as_uint(v == 0.0f ? 0.0f : v);
    b = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
    return ((unsigned long long)b << 32) | (unsigned long long)(0xffffffffu - (uint32_t)i);
}

__device__ __forceinline__ unsigned long long warp_max_u64(unsigned long long k) {
    for (int o = 16; o > 0; o >>= 1) {
        const unsigned long long x = __shfl_xor_sync(0xffffffffu, k, o);
        k = x > k ? x : k;
    }
    return k;
}

#define GREEDY_THREADS 256
#define GREEDY_MAX_CTAS 128

/* Each CTA reduces a grid-strided share to one key, merged by atomicMax in
 * scratch[0]; the last CTA to finish (ticket in scratch[1]) publishes the
 * pick and resets the scratch for the next launch. */
__global__ void __launch_bounds__(GREEDY_THREADS) k_greedy_next(const float *logits, int64_t n, const int32_t *suppress,
                                                              int32_t *tok, int32_t *pos0, float *keep,
                                                              int32_t *pick_out, unsigned long long *scratch) {
    V4F_PDL_ENTRY();
    __shared__ unsigned long long red[GREEDY_THREADS / 32];
    __shared__ bool last;
    const int64_t sup = suppress ? suppress[0] : -1;
    const int32_t slot = pos0[0] & 1;
    float *kp = keep ? keep + slot * n : NULL;
    unsigned long long best = 0;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float v = logits[i];
        if (kp) kp[i] = v;
        const unsigned long long k = greedy_key(i == sup ? -INFINITY : v, i);
        best = k > best ? k : best;
    }
    best = warp_max_u64(best);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = best;
    __syncthreads();
    if (threadIdx.x < 32) {
        best = threadIdx.x < (blockDim.x >> 5) ? red[threadIdx.x] : 0ull;
        best = warp_max_u64(best);
        if (threadIdx.x == 0) {
            atomicMax(&scratch[0], best);
            __threadfence();
            last = atomicAdd(&scratch[1], 1ull) == gridDim.x - 1;
        }
    }
    __syncthreads();
    if (!last || threadIdx.x != 0) return;
    __threadfence();
    const unsigned long long k = atomicExch(&scratch[0], 0ull);
    scratch[1] = 0;
    const int32_t t = k ? (int32_t)(0xffffffffu - (uint32_t)k) : 0;
    tok[0] = t;
    if (pick_out) pick_out[slot] = t;
    pos0[0] += 1;
}

extern "C" v4f_status v4f_cuda_greedy_next(v4f_cuda *c, const float *logits, int64_t n, const int32_t *suppress,
                                          int32_t *tok, int32_t *pos0, float *keep, int32_t *pick_out,
                                          void *scratch, v4f_err *err) {
    ARG_CHECK(logits && tok && pos0 && scratch && n > 0 && n <= INT32_MAX, "cuda greedy: bad arguments");
    CUDA_TRY_DEVICE(c);
    const int64_t ctas = (n + 4 * GREEDY_THREADS - 1) / (4 * GREEDY_THREADS);
    v4f_launch(k_greedy_next, (unsigned)(ctas < GREEDY_MAX_CTAS ? ctas : GREEDY_MAX_CTAS), GREEDY_THREADS, 0,
               c->stream, logits, n, suppress, tok, pos0, keep, pick_out, (unsigned long long *)scratch);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

__global__ void k_ring_put(const float *src, int64_t w, float *ring, int32_t cap, const int32_t *pos0) {
    V4F_PDL_ENTRY();
    const int64_t r = ((int64_t)pos0[0] + blockIdx.y) % cap;
    const float *s = src + (int64_t)blockIdx.y * w;
    float *d = ring + r * w;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < w; i += (int64_t)gridDim.x * blockDim.x)
        d[i] = s[i];
}

extern "C" v4f_status v4f_cuda_ring_put(v4f_cuda *c, const float *src, int64_t n, int64_t w, float *ring, int32_t cap,
                                       const int32_t *pos0, v4f_err *err) {
    ARG_CHECK(src && ring && pos0 && n >= 0 && n <= 65535 && w > 0 && cap > 0, "cuda ring put: bad arguments");
    if (n == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    v4f_launch(k_ring_put, dim3(blocks_for(w, 256) < 64 ? blocks_for(w, 256) : 64, (unsigned)n), 256, 0, c->stream,
               src, w, ring, cap, pos0);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

/* ---- step preparation ---------------------------------------------------------------- */

typedef struct ratio_set {
    uint32_t r[V4F_CUDA_MAX_RATIOS];
} ratio_set;

__global__ void k_step_prep(const int32_t *pos0, int64_t n, int32_t n_swa, int nr, ratio_set rs, int32_t *pos,
                            int32_t *rf, int32_t *rc, int32_t *nvis) {
    V4F_PDL_ENTRY();
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n) return;
    const int32_t p = pos0[0] + (int32_t)t;
    pos[t] = p;
    const int32_t lo = p + 1 > n_swa ? p + 1 - n_swa : 0;
    if (rf) rf[t] = lo;
    if (rc) rc[t] = p + 1 - lo;
    for (int r = 0; r < nr; r++) nvis[r * n + t] = (int32_t)((uint32_t)(p + 1) / rs.r[r]);
}

extern "C" v4f_status v4f_cuda_step_prep(v4f_cuda *c, const int32_t *pos0, int64_t n, int32_t n_swa, int n_ratios,
                                         const uint32_t *ratios, int32_t *pos, int32_t *raw_first,
                                         int32_t *raw_count, int32_t *nvis, v4f_err *err) {
    ARG_CHECK(n >= 0 && n_swa > 0 && n_ratios >= 0 && n_ratios <= V4F_CUDA_MAX_RATIOS && (n_ratios == 0 || nvis),
              "cuda step prep: bad arguments");
    ratio_set rs;
    memset(&rs, 0, sizeof rs);
    for (int r = 0; r < n_ratios; r++) {
        ARG_CHECK(ratios[r] > 0, "cuda step prep: ratio 0");
        rs.r[r] = ratios[r];
    }
    if (n == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    v4f_launch(k_step_prep, blocks_for(n, 128), 128, 0, c->stream, pos0, n, n_swa, n_ratios, rs, pos, raw_first, raw_count,
                                                          nvis);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

/* ---- embedding ------------------------------------------------------------------------- */

template <int T> __device__ __forceinline__ float emb_elem(const uint8_t *row, int64_t i) {
    if constexpr (T == V4F_TYPE_F32) return ((const float *)row)[i];
    else if constexpr (T == V4F_TYPE_F16) return __half2float(((const __half *)row)[i]);
    else return __bfloat162float(((const __nv_bfloat16 *)row)[i]);
}

template <int T>
__global__ void k_embed(const uint8_t *E, uint64_t row_bytes, int64_t n_vocab, const int32_t *tokens, int64_t d,
                        int n_hc, float *X) {
    V4F_PDL_ENTRY();
    const int64_t t = blockIdx.y;
    int32_t tok = tokens[t];
    if (tok < 0 || tok >= n_vocab) tok = 0; /* validated on the host; never read out of bounds */
    const uint8_t *row = E + (uint64_t)tok * row_bytes;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < d; i += (int64_t)gridDim.x * blockDim.x) {
        const float v = emb_elem<T>(row, i);
        for (int h = 0; h < n_hc; h++) X[(t * n_hc + h) * d + i] = v;
    }
}

extern "C" v4f_status v4f_cuda_embed(v4f_cuda *c, const void *E, uint32_t type, uint64_t row_bytes, int64_t n_vocab,
                                     const int32_t *tokens, int64_t n, int64_t d, int n_hc, float *X, v4f_err *err) {
    ARG_CHECK(n >= 0 && n <= 65535 && d > 0 && n_hc > 0, "cuda embed: bad shape");
    ARG_CHECK(type == V4F_TYPE_F32 || type == V4F_TYPE_F16 || type == V4F_TYPE_BF16,
              "cuda embed: embedding type %s not supported (F32/F16/BF16)", v4f_type_name(type));
    if (n == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    const dim3 grid((unsigned)((d + 255) / 256), (unsigned)n);
    const uint8_t *e = (const uint8_t *)E;
    if (type == V4F_TYPE_F32) v4f_launch(k_embed<V4F_TYPE_F32>, grid, 256, 0, c->stream, e, row_bytes, n_vocab, tokens, d, n_hc, X);
    else if (type == V4F_TYPE_F16) v4f_launch(k_embed<V4F_TYPE_F16>, grid, 256, 0, c->stream, e, row_bytes, n_vocab, tokens, d, n_hc, X);
    else v4f_launch(k_embed<V4F_TYPE_BF16>, grid, 256, 0, c->stream, e, row_bytes, n_vocab, tokens, d, n_hc, X);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

/* ---- HC mixer scale, scale ----------------------------------------------------------------- */

#define RED_THREADS 256

__global__ void __launch_bounds__(RED_THREADS) k_hc_mix_scale(const float *X, int64_t HD, float *mix, int64_t mixn,
                                                              float eps) {
    V4F_PDL_ENTRY();
    __shared__ double part[RED_THREADS / 32];
    __shared__ float r_s;
    const int64_t t = blockIdx.x;
    const float *x = X + t * HD;
    double ss = 0;
    for (int64_t i = threadIdx.x; i < HD; i += blockDim.x) ss += (double)x[i] * (double)x[i];
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x == 0) {
        double s = 0;
        for (int w = 0; w < (int)(blockDim.x >> 5); w++) s += part[w];
        r_s = (float)(1.0 / sqrt(s / (double)HD + (double)eps));
    }
    __syncthreads();
    const float r = r_s;
    for (int64_t i = threadIdx.x; i < mixn; i += blockDim.x) mix[t * mixn + i] = __fmul_rn(mix[t * mixn + i], r);
}

extern "C" v4f_status v4f_cuda_hc_mix_scale(v4f_cuda *c, const float *X, int64_t n, int64_t HD, float *mix,
                                            int64_t mixn, float eps, v4f_err *err) {
    ARG_CHECK(n >= 0 && n <= 0x7fffffff && HD > 0 && mixn >= 0, "cuda hc mix scale: bad shape");
    if (n == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    v4f_launch(k_hc_mix_scale, (unsigned)n, RED_THREADS, 0, c->stream, X, HD, mix, mixn, eps);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

/* ---- rings ------------------------------------------------------------------------------------ */

__global__ void k_comp_store(const float *A, const float *B, const float *ape, int64_t W, int32_t ratio,
                             const int32_t *pos, float *kv_ring, float *sc_ring, int64_t R) {
    V4F_PDL_ENTRY();
    const int64_t t = blockIdx.y;
    const int32_t p = pos[t];
    const int64_t slot = (int64_t)p % R;
    const float *ap = ape + (int64_t)(p % ratio) * W;
    for (int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; j < W; j += (int64_t)gridDim.x * blockDim.x) {
        kv_ring[slot * W + j] = A[t * W + j];
        sc_ring[slot * W + j] = __fadd_rn(B[t * W + j], ap[j]);
    }
}

extern "C" v4f_status v4f_cuda_comp_store(v4f_cuda *c, const float *A, const float *B, const float *ape, int64_t n,
                                          int64_t W, int32_t ratio, const int32_t *pos, float *kv_ring,
                                          float *sc_ring, int64_t R, v4f_err *err) {
    ARG_CHECK(n >= 0 && n <= 65535 && W > 0 && ratio > 0 && R > 0, "cuda comp store: bad shape");
    if (n == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    const dim3 grid((unsigned)((W + 255) / 256), (unsigned)n);
    v4f_launch(k_comp_store, grid, 256, 0, c->stream, A, B, ape, W, ratio, pos, kv_ring, sc_ring, R);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

/* Pooled value of dim j of group k: the CPU's order (max, then sequential
 * sums over the candidates in window order); positions < 0 skipped. */
__device__ __forceinline__ float pool_dim(const float *kv_ring, const float *sc_ring, int64_t R, int64_t W, int64_t D,
                                          int32_t ratio, bool overlap, int64_t k, int64_t j) {
    const int64_t nhalf = overlap ? 2 : 1;
    float m = -INFINITY;
    for (int64_t h = 0; h < nhalf; h++) {
        const int64_t first = overlap ? (k - 1 + h) * ratio : k * ratio;
        const int64_t off = overlap ? h * D : 0;
        for (int32_t i = 0; i < ratio; i++) {
            const int64_t q = first + i;
            if (q < 0) continue;
            m = fmaxf(m, sc_ring[(q % R) * W + off + j]);
        }
    }
    if (m == -INFINITY) return 0.0f;
    float den = 0.0f, num = 0.0f;
    for (int64_t h = 0; h < nhalf; h++) {
        const int64_t first = overlap ? (k - 1 + h) * ratio : k * ratio;
        const int64_t off = overlap ? h * D : 0;
        for (int32_t i = 0; i < ratio; i++) {
            const int64_t q = first + i;
            if (q < 0) continue;
            const int64_t o = (q % R) * W + off + j;
            const float e = expf(__fsub_rn(sc_ring[o], m));
            den = __fadd_rn(den, e);
            num = __fadd_rn(num, __fmul_rn(e, kv_ring[o]));
        }
    }
    return __fdiv_rn(num, den);
}

/* ---- MoE glue ----------------------------------------------------------------------------------- */

#define BUCKET_THREADS 1024

__global__ void __launch_bounds__(BUCKET_THREADS) k_moe_bucket(const int32_t *eids, const float *ew, int64_t nk,
                                                               int n_expert, int32_t *offs, int32_t *elist,
                                                               int32_t *einv, float *wrow, int32_t *act) {
    V4F_PDL_ENTRY();
    extern __shared__ int32_t sh[]; /* counts then cursors [n_expert] */
    for (int e = threadIdx.x; e < n_expert; e += blockDim.x) sh[e] = 0;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < nk; i += blockDim.x) {
        int32_t e = eids[i];
        if (e < 0 || e >= n_expert) e = 0; /* router output is always in range */
        atomicAdd(&sh[e], 1);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        int32_t acc = 0, na = 0;
        for (int e = 0; e < n_expert; e++) {
            const int32_t cnt = sh[e];
            offs[e] = acc;
            sh[e] = acc;
            acc += cnt;
            if (act && cnt) act[1 + na++] = e;
        }
        offs[n_expert] = acc;
        if (act) act[0] = na;
    }
    __syncthreads();
    for (int64_t i = threadIdx.x; i < nk; i += blockDim.x) {
        int32_t e = eids[i];
        if (e < 0 || e >= n_expert) e = 0;
        const int32_t at = atomicAdd(&sh[e], 1);
        elist[at] = (int32_t)i;
        einv[i] = at;
        wrow[at] = ew[i];
    }
}

extern "C" v4f_status v4f_cuda_moe_bucket(v4f_cuda *c, const int32_t *eids, const float *ew, int64_t n, int k,
                                          int n_expert, int32_t *offs, int32_t *elist, int32_t *einv, float *wrow,
                                          int32_t *act, v4f_err *err) {
    ARG_CHECK(n >= 0 && k > 0 && n * k <= 65536 && n_expert > 0 && n_expert <= 4096, "cuda moe bucket: bad shape");
    CUDA_TRY_DEVICE(c);
    v4f_launch(k_moe_bucket, 1, BUCKET_THREADS, (size_t)n_expert * sizeof(int32_t), c->stream, eids, ew, n * k, n_expert,
                                                                                      offs, elist, einv, wrow, act);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

/* One CTA per destination row; 16-byte copies when d % 4 == 0 and both
 * buffers are 16-byte aligned (V). The first version (one CTA per 256
 * elements of a row, 393,216 CTAs for a 4,096-token chunk) took 0.72 ms on
 * an H100 for 400 MB. */
template <bool V>
__global__ void k_gather_rows(const float *src, const int32_t *idx, int32_t div, int64_t d, float *dst) {
    V4F_PDL_ENTRY();
    const int64_t i = blockIdx.x;
    const int64_t s = idx[i] / div;
    if (V) {
        const float4 *a = reinterpret_cast<const float4 *>(src + s * d);
        float4 *b = reinterpret_cast<float4 *>(dst + i * d);
        for (int64_t j = threadIdx.x; j < d / 4; j += blockDim.x) b[j] = a[j];
    } else {
        for (int64_t j = threadIdx.x; j < d; j += blockDim.x) dst[i * d + j] = src[s * d + j];
    }
}

extern "C" v4f_status v4f_cuda_gather_rows(v4f_cuda *c, const float *src, const int32_t *idx, int32_t div, int64_t n,
                                           int64_t d, float *dst, v4f_err *err) {
    ARG_CHECK(n >= 0 && n <= 0x7fffffff && d > 0 && div > 0, "cuda gather rows: bad shape");
    if (n == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    if (d % 4 == 0 && ((uintptr_t)src & 15) == 0 && ((uintptr_t)dst & 15) == 0)
        v4f_launch(k_gather_rows<true>, (unsigned)n, 256, 0, c->stream, src, idx, div, d, dst);
    else
        v4f_launch(k_gather_rows<false>, (unsigned)n, 256, 0, c->stream, src, idx, div, d, dst);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

__global__ void k_add_streams(const float *E, int n_hc, int64_t d, float *X) {
    V4F_PDL_ENTRY();
    const int64_t t = blockIdx.y;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < d; i += (int64_t)gridDim.x * blockDim.x) {
        const float e = E[t * d + i];
        for (int h = 0; h < n_hc; h++) {
            float *x = X + (t * n_hc + h) * d + i;
            *x = __fadd_rn(e, *x);
        }
    }
}

extern "C" v4f_status v4f_cuda_add_streams(v4f_cuda *c, const float *E, int64_t n, int n_hc, int64_t d, float *X,
                                           v4f_err *err) {
    ARG_CHECK(n >= 0 && n <= 65535 && n_hc > 0 && d > 0, "cuda add streams: bad shape");
    if (n == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    const dim3 grid((unsigned)((d + 255) / 256), (unsigned)n);
    v4f_launch(k_add_streams, grid, 256, 0, c->stream, E, n_hc, d, X);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

/* ---- fused kernels ------------------------------------------------------------------------------- */

#define HC_PRE_MAX_SPLIT 128
#define HC_PRE_MAX_PART (HC_PRE_MAX_SPLIT * (2 + 4) * 4) /* partial floats: 128 splits x 24 (hc_splits lowers the splits for more streams) */
#define MIXP_THREADS 128
#define MIXP_MAX_M 32

/* The end of a split-K mixer CTA: the M mixer sums acc[] and the sum of
 * squares sq of its threads, warp trees then the warps in order, stored
 * at part[0..M) and *ss. red/red_ss: the CTA's shared scratch. Ends with
 * the barrier that makes red reusable by the caller's other sums. */
__device__ __forceinline__ void mix_split_store(const float *acc, double sq, int M, float (*red)[MIXP_MAX_M],
                                               double *red_ss, float *part, double *ss) {
    const int lane = threadIdx.x & 31, wl = threadIdx.x >> 5;
#pragma unroll
    for (int j = 0; j < MIXP_MAX_M; j++) {
        float v = acc[j];
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) red[wl][j] = v;
    }
    sq = warp_sum_d(sq);
    if (lane == 0) red_ss[wl] = sq;
    __syncthreads();
    if ((int)threadIdx.x < M) {
        float v = 0;
        for (int w = 0; w < MIXP_THREADS / 32; w++) v += red[w][threadIdx.x];
        part[threadIdx.x] = v;
    }
    if (threadIdx.x == 0) {
        double v = 0;
        for (int w = 0; w < MIXP_THREADS / 32; w++) v += red_ss[w];
        *ss = v;
    }
}

template <int T>
__global__ void __launch_bounds__(MIXP_THREADS) k_hc_mix_partial(const uint8_t *W, uint64_t row_bytes, int M, int64_t K,
                                                                 const float *X, int n_split, float *part, double *ss) {
    V4F_PDL_ENTRY();
    __shared__ float red[MIXP_THREADS / 32][MIXP_MAX_M];
    __shared__ double red_ss[MIXP_THREADS / 32];
    const int s = blockIdx.x;
    const int64_t t = blockIdx.y, len = K / n_split, k0 = (int64_t)s * len;
    const float *x = X + t * K;
    float acc[MIXP_MAX_M];
#pragma unroll
    for (int j = 0; j < MIXP_MAX_M; j++) acc[j] = 0.0f;
    double sq = 0;
    for (int64_t i = k0 + threadIdx.x; i < k0 + len; i += blockDim.x) {
        const float xv = x[i];
        sq += (double)xv * (double)xv;
#pragma unroll
        for (int j = 0; j < MIXP_MAX_M; j++)
            if (j < M) acc[j] = fmaf(emb_elem<T>(W + (uint64_t)j * row_bytes, i), xv, acc[j]);
    }
    mix_split_store(acc, sq, M, red, red_ss, part + (t * n_split + s) * M, ss + t * n_split + s);
}

/* The same partials for a chunk of tokens (prefill): a CTA takes MIXT_TT
 * tokens of one split, so the mixer's weights are read once per MIXT_TT
 * tokens instead of once per token (one token per CTA re-read the 24 x
 * 16384 F16 rows from L2 for every token: 1.2 ms per 2048-token chunk on an
 * H100). Chunks of MIXT_KC elements of X and W go through shared memory.
 * Register tiles: thread (token group tg, output group og < 8) holds tokens
 * tg + 16 r (r < 4, conflict-free 16-byte shared loads) x outputs 4 og + q
 * and reads 4 elements per load; the ninth output group computes the
 * tokens' double sums of squares. Every sum runs in element order over the
 * split (as k_hc_mix_partial's reference order per thread slice; the test
 * compares both against double sums). A first version with one token x 4
 * outputs per thread and scalar loads took 0.46 ms per 4,096-token launch
 * on an H100 (issue-bound, 5 loads per 4 FMAs). */
#define MIXT_TT 64
#define MIXT_KC 64
#define MIXT_LD (MIXT_KC + 4)
#define MIXT_THREADS 144 /* 16 token groups x (8 output groups + 1 for the sums of squares) */
template <int T, bool V>
__global__ void __launch_bounds__(MIXT_THREADS) k_hc_mix_tile(const uint8_t *W, uint64_t row_bytes, int M, int64_t K,
                                                              const float *X, int64_t n, int n_split, float *part,
                                                              double *ss) {
    V4F_PDL_ENTRY();
    static_assert(MIXT_TT == 64 && MIXP_MAX_M == 32 && MIXT_KC % 4 == 0, "thread map: 16 x 4 tokens, 8 x 4 outputs");
    __shared__ __align__(16) float sx[MIXT_TT][MIXT_LD], sw[MIXP_MAX_M][MIXT_LD];
    const int s = blockIdx.x, tg = threadIdx.x & 15, og = threadIdx.x >> 4;
    const int64_t t0 = (int64_t)blockIdx.y * MIXT_TT, len = K / n_split, k0 = (int64_t)s * len;
    float acc[4][4];
    double sq[4] = {0.0, 0.0, 0.0, 0.0};
#pragma unroll
    for (int r = 0; r < 4; r++) acc[r][0] = acc[r][1] = acc[r][2] = acc[r][3] = 0.f;
    for (int64_t kc = k0; kc < k0 + len; kc += MIXT_KC) {
        const int nk = (int)min((int64_t)MIXT_KC, k0 + len - kc);
        if (V) { /* nk == MIXT_KC, rows 16-byte aligned */
            for (int i = threadIdx.x; i < MIXT_TT * (MIXT_KC / 4); i += MIXT_THREADS) {
                const int r = i / (MIXT_KC / 4), c4 = i % (MIXT_KC / 4);
                float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
                if (t0 + r < n) v = *reinterpret_cast<const float4 *>(X + (t0 + r) * K + kc + 4 * c4);
                *reinterpret_cast<float4 *>(&sx[r][4 * c4]) = v;
            }
        } else {
            for (int i = threadIdx.x; i < MIXT_TT * MIXT_KC; i += MIXT_THREADS) {
                const int r = i / MIXT_KC, cc = i % MIXT_KC;
                sx[r][cc] = t0 + r < n && cc < nk ? X[(t0 + r) * K + kc + cc] : 0.f;
            }
        }
        for (int i = threadIdx.x; i < MIXP_MAX_M * MIXT_KC; i += MIXT_THREADS) {
            const int j = i / MIXT_KC, cc = i % MIXT_KC;
            sw[j][cc] = j < M && cc < nk ? emb_elem<T>(W + (uint64_t)j * row_bytes, kc + cc) : 0.f;
        }
        __syncthreads();
        if (og < 8) {
            if (4 * og < M)
                for (int cc = 0; cc < nk; cc += 4) {
                    float4 xv[4], wv[4];
#pragma unroll
                    for (int r = 0; r < 4; r++) xv[r] = *reinterpret_cast<const float4 *>(&sx[tg + 16 * r][cc]);
#pragma unroll
                    for (int q = 0; q < 4; q++) wv[q] = *reinterpret_cast<const float4 *>(&sw[4 * og + q][cc]);
#pragma unroll
                    for (int r = 0; r < 4; r++)
#pragma unroll
                        for (int q = 0; q < 4; q++) {
                            acc[r][q] = fmaf(wv[q].x, xv[r].x, acc[r][q]);
                            acc[r][q] = fmaf(wv[q].y, xv[r].y, acc[r][q]);
                            acc[r][q] = fmaf(wv[q].z, xv[r].z, acc[r][q]);
                            acc[r][q] = fmaf(wv[q].w, xv[r].w, acc[r][q]);
                        }
                }
        } else {
            for (int cc = 0; cc < nk; cc += 4)
#pragma unroll
                for (int r = 0; r < 4; r++) {
                    const float4 x = *reinterpret_cast<const float4 *>(&sx[tg + 16 * r][cc]);
                    sq[r] += (double)x.x * (double)x.x;
                    sq[r] += (double)x.y * (double)x.y;
                    sq[r] += (double)x.z * (double)x.z;
                    sq[r] += (double)x.w * (double)x.w;
                }
        }
        __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < 4; r++) {
        const int64_t t = t0 + tg + 16 * r;
        if (t >= n) continue;
        if (og < 8) {
#pragma unroll
            for (int q = 0; q < 4; q++)
                if (4 * og + q < M) part[(t * n_split + s) * M + 4 * og + q] = acc[r][q];
        } else {
            ss[t * n_split + s] = sq[r];
        }
    }
}

/* chunks from this many tokens use k_hc_mix_tile (V4F_CUDA_MIX_TILE=0: never,
 * for A/B measurements) */
#define MIXT_MIN_TOKENS 32

extern "C" v4f_status v4f_cuda_hc_mix_partial(v4f_cuda *c, const void *W, uint32_t type, uint64_t row_bytes, int M,
                                              int64_t K, const float *X, int64_t n, int n_split, float *part,
                                              double *ss, v4f_err *err) {
    ARG_CHECK(M > 0 && M <= MIXP_MAX_M && K > 0 && n >= 0 && n <= 65535 && n_split > 0 && n_split <= 65535 &&
                  K % n_split == 0,
              "cuda hc mix partial: bad shape M %d K %lld splits %d", M, (long long)K, n_split);
    ARG_CHECK(type == V4F_TYPE_F32 || type == V4F_TYPE_F16 || type == V4F_TYPE_BF16,
              "cuda hc mix partial: type %s (F32/F16/BF16)", v4f_type_name(type));
    if (n == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    const uint8_t *w = (const uint8_t *)W;
    if (n >= MIXT_MIN_TOKENS && !v4f_env_off("V4F_CUDA_MIX_TILE")) {
        const dim3 gt((unsigned)n_split, (unsigned)((n + MIXT_TT - 1) / MIXT_TT));
        const bool vec = K % 4 == 0 && (K / n_split) % MIXT_KC == 0 && ((uintptr_t)X & 15) == 0;
#define MIXT_GO(TY)                                                                                                  \
    (vec ? v4f_launch(k_hc_mix_tile<TY, true>, gt, MIXT_THREADS, 0, c->stream, w, row_bytes, M, K, X, n, n_split, part, \
                      ss)                                                                                            \
         : v4f_launch(k_hc_mix_tile<TY, false>, gt, MIXT_THREADS, 0, c->stream, w, row_bytes, M, K, X, n, n_split,     \
                      part, ss))
        if (type == V4F_TYPE_F32)
            MIXT_GO(V4F_TYPE_F32);
        else if (type == V4F_TYPE_F16)
            MIXT_GO(V4F_TYPE_F16);
        else
            MIXT_GO(V4F_TYPE_BF16);
#undef MIXT_GO
        CUDA_TRY_LAUNCH();
        return V4F_OK;
    }
    const dim3 grid((unsigned)n_split, (unsigned)n);
    if (type == V4F_TYPE_F32)
        v4f_launch(k_hc_mix_partial<V4F_TYPE_F32>, grid, MIXP_THREADS, 0, c->stream, w, row_bytes, M, K, X, n_split, part, ss);
    else if (type == V4F_TYPE_F16)
        v4f_launch(k_hc_mix_partial<V4F_TYPE_F16>, grid, MIXP_THREADS, 0, c->stream, w, row_bytes, M, K, X, n_split, part, ss);
    else
        v4f_launch(k_hc_mix_partial<V4F_TYPE_BF16>, grid, MIXP_THREADS, 0, c->stream, w, row_bytes, M, K, X, n_split, part, ss);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

/* HC_pre (mode HCP_ALL, or one half: HCP_NORM / HCP_SINKHORN, see
 * cuda_fwd.h), or the HC head (HCP_HEAD), of one token per CTA from the mixer
 * partials: loads are issued before they are needed (the X values of the
 * weighted sum are read while warp 0 runs Sinkhorn), reductions are trees.
 * REG (n_hc <= HCP_MAXH, d <= HCP_THREADS * HCP_PER, the published model):
 * X and a stay in registers; else a goes through the caller's scratch.
 * Single-CTA kernels with serial load loops were the decode's slowest small
 * kernels (~37 us per HC_pre before). 512 threads: no register spills. */
#define HCP_THREADS 512
#define HCP_PER 8
#define HCP_MAXH 4
#ifndef V4F_HCP_REG
#define V4F_HCP_REG 1 /* build with 0 to run the scratch path on the published shapes (testing) */
#endif

template <bool REG>
__global__ void __launch_bounds__(HCP_THREADS) k_hc_pre(const float *X, const float *part, const double *ssp,
                                                        int n_split, const float *scale3, const float *base, int H,
                                                        int64_t d, int iters, float hc_eps, float rms_eps,
                                                        const float *norm_w, float *pre, float *post, float *comb,
                                                        float *a, float *xn, int mode) {
    V4F_PDL_ENTRY();
    __shared__ float pp[HC_PRE_MAX_PART];
    __shared__ double sp[HC_PRE_MAX_SPLIT];
    __shared__ float ms[(2 + OPS_MAX_HC) * OPS_MAX_HC], C[OPS_MAX_HC * OPS_MAX_HC], pre_s[OPS_MAX_HC],
        post_s[OPS_MAX_HC];
    __shared__ double red[HCP_THREADS / 32];
    __shared__ float r_s, r2_s;
    const int64_t t = blockIdx.x, HD = (int64_t)H * d;
    const bool head = mode == HCP_HEAD, sk = mode == HCP_ALL || mode == HCP_SINKHORN, ws = mode != HCP_SINKHORN;
    /* mixn: mixer outputs per split in part; nsum: those this mode needs
     * (HCP_NORM: only the H pre weights, not the post/comb ones) */
    const int mixn = head ? H : (2 + H) * H, nsum = sk ? mixn : H;
    const int tid = threadIdx.x, lane = tid & 31, wl = tid >> 5;
    const float *x = X + t * HD;
    const int np = n_split * mixn;
    for (int i = tid; i < np; i += HCP_THREADS) pp[i] = part[t * np + i];
    for (int i = tid; i < n_split; i += HCP_THREADS) sp[i] = ssp[t * n_split + i];
    float xv[REG ? HCP_MAXH : 1][REG ? HCP_PER : 1];
    if (REG && ws) {
#pragma unroll
        for (int e = 0; e < HCP_PER; e++) {
            const int64_t i = tid + (int64_t)e * HCP_THREADS;
#pragma unroll
            for (int h = 0; h < HCP_MAXH; h++) xv[h][e] = (h < H && i < d) ? x[h * d + i] : 0.0f;
        }
    }
    __syncthreads();
    for (int j = wl; j <= nsum; j += HCP_THREADS / 32) { /* warp per mixer output, then the scale */
        if (j < nsum) {
            float m = 0;
            for (int s = lane; s < n_split; s += 32) m += pp[s * mixn + j];
            for (int o = 16; o > 0; o >>= 1) m += __shfl_xor_sync(0xffffffffu, m, o);
            if (lane == 0) ms[j] = m;
        } else {
            double v = 0;
            for (int s = lane; s < n_split; s += 32) v += sp[s];
            v = warp_sum_d(v);
            if (lane == 0) r_s = (float)(1.0 / sqrt(v / (double)HD + (double)rms_eps));
        }
    }
    __syncthreads();
    if (wl == 0 && !sk) {
        /* the HC head's weights (v4f_cpu_hc_head_weights), or HC_pre's pre
         * weights without Sinkhorn (as dev_hc_sinkhorn_warp computes them) */
        if (lane < H) pre_s[lane] = dev_hc_pre_weight(__fmul_rn(ms[lane], r_s), scale3[0], base[lane], hc_eps);
    } else if (wl == 0) {
        for (int j = lane; j < mixn; j += 32) ms[j] = __fmul_rn(ms[j], r_s);
        __syncwarp();
        dev_hc_sinkhorn_warp(ms, scale3, base, H, iters, hc_eps, lane, C, pre_s, post_s);
        __syncwarp();
        if (lane < H) {
            pre[t * H + lane] = pre_s[lane];
            post[t * H + lane] = post_s[lane];
        }
        for (int j = lane; j < H * H; j += 32) comb[t * H * H + j] = C[j];
    }
    if (!ws) return; /* uniform: Sinkhorn only */
    __syncthreads();
    if constexpr (!REG) {
        /* a = sum_h w_h X_h through the scratch, then RMSNorm */
        float *at = a + t * d;
        for (int64_t i = tid; i < d; i += HCP_THREADS) {
            float sum = 0;
            for (int h = 0; h < H; h++) sum = __fadd_rn(sum, __fmul_rn(pre_s[h], x[h * d + i]));
            at[i] = sum;
        }
        __syncthreads();
        dev_rmsnorm_row(at, norm_w, xn + t * d, d, rms_eps, red);
        return;
    }
    float av[HCP_PER];
    double ss = 0;
#pragma unroll
    for (int e = 0; e < HCP_PER; e++) {
        float sum = 0;
#pragma unroll
        for (int h = 0; h < HCP_MAXH; h++)
            if (h < H) sum = __fadd_rn(sum, __fmul_rn(pre_s[h], xv[h][e]));
        av[e] = sum;
        ss += (double)sum * (double)sum; /* zero for i >= d */
    }
    ss = warp_sum_d(ss);
    if (lane == 0) red[wl] = ss;
    __syncthreads();
    if (wl == 0) {
        double v = lane < HCP_THREADS / 32 ? red[lane] : 0.0;
        v = warp_sum_d(v);
        if (lane == 0) r2_s = (float)(1.0 / sqrt(v / (double)d + (double)rms_eps));
    }
    __syncthreads();
    const float r2 = r2_s;
    float *y = xn + t * d;
#pragma unroll
    for (int e = 0; e < HCP_PER; e++) {
        const int64_t i = tid + (int64_t)e * HCP_THREADS;
        if (i < d) {
            const float v = __fmul_rn(av[e], r2);
            y[i] = norm_w ? __fmul_rn(norm_w[i], v) : v;
        }
    }
}

static void launch_hc_pre(cudaStream_t st, int64_t n, const float *X, const float *part, const double *ss,
                          int n_split, const float *scale3, const float *base, int H, int64_t d, int iters,
                          float hc_eps, float rms_eps, const float *norm_w, float *pre, float *post, float *comb,
                          float *a, float *xn, int mode) {
    if (V4F_HCP_REG && H <= HCP_MAXH && d <= (int64_t)HCP_THREADS * HCP_PER)
        v4f_launch(k_hc_pre<true>, (unsigned)n, HCP_THREADS, 0, st, X, part, ss, n_split, scale3, base, H, d, iters, hc_eps,
                                                             rms_eps, norm_w, pre, post, comb, a, xn, mode);
    else
        v4f_launch(k_hc_pre<false>, (unsigned)n, HCP_THREADS, 0, st, X, part, ss, n_split, scale3, base, H, d, iters, hc_eps,
                                                              rms_eps, norm_w, pre, post, comb, a, xn, mode);
}

extern "C" v4f_status v4f_cuda_hc_pre_fused(v4f_cuda *c, const float *X, const float *part, const double *ss,
                                            int n_split, const float *scale3, const float *base, int64_t n, int H,
                                            int64_t d, int iters, float hc_eps, float rms_eps, const float *norm_w,
                                            float *pre, float *post, float *comb, float *a, float *xn, int part_sel,
                                            v4f_err *err) {
    ARG_CHECK(part_sel == HCP_ALL || part_sel == HCP_NORM || part_sel == HCP_SINKHORN,
              "cuda hc pre fused: bad part %d", part_sel);
    ARG_CHECK(n >= 0 && n <= 0x7fffffff && H > 0 && H <= OPS_MAX_HC && d > 0 && iters >= 1 && n_split > 0 &&
                  n_split <= HC_PRE_MAX_SPLIT && n_split * (2 + H) * H <= HC_PRE_MAX_PART,
              "cuda hc pre fused: bad shape (H %d, %d splits)", H, n_split);
    if (n == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    launch_hc_pre(c->stream, n, X, part, ss, n_split, scale3, base, H, d, iters, hc_eps, rms_eps, norm_w, pre, post,
                  comb, a, xn, part_sel);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

extern "C" v4f_status v4f_cuda_hc_head_fused(v4f_cuda *c, const float *X, const float *part, const double *ss,
                                             int n_split, const float *scale, const float *base, int64_t n, int H,
                                             int64_t d, float hc_eps, float rms_eps, const float *norm_w, float *a,
                                             float *xn, v4f_err *err) {
    ARG_CHECK(n >= 0 && n <= 0x7fffffff && H > 0 && H <= OPS_MAX_HC && d > 0 && n_split > 0 &&
                  n_split <= HC_PRE_MAX_SPLIT && n_split * H <= HC_PRE_MAX_PART,
              "cuda hc head fused: bad shape (H %d, %d splits)", H, n_split);
    if (n == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    launch_hc_pre(c->stream, n, X, part, ss, n_split, scale, base, H, d, 1, hc_eps, rms_eps, norm_w, NULL, NULL, NULL,
                  a, xn, HCP_HEAD);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

#define TAIL_THREADS 256

__global__ void __launch_bounds__(TAIL_THREADS) k_qkv_tail(float *qr, int64_t q_rank, const float *q_norm, float *kv,
                                                           int64_t hd, const float *kv_norm, const int32_t *pos,
                                                           const float *freqs, int n_rot, int fp8, float eps,
                                                           float *ring, int64_t R) {
    V4F_PDL_ENTRY();
    __shared__ double part[TAIL_THREADS / 32];
    const int64_t t = blockIdx.x;
    if (blockIdx.y == 0) { /* the q latent (independent of the KV row: a CTA of its own) */
        float *q = qr + t * q_rank;
        dev_rmsnorm_row(q, q_norm, q, q_rank, eps, part);
        return;
    }
    float *k = kv + t * hd;
    dev_rmsnorm_row(k, kv_norm, k, hd, eps, part);
    __syncthreads();
    const int64_t p = pos[t];
    for (int i = threadIdx.x; i < n_rot / 2; i += blockDim.x) dev_rope_pair(k + hd - n_rot, i, freqs, p, 0);
    __syncthreads();
    if (fp8) {
        const int64_t nf = hd - n_rot, nb = (nf + 63) / 64;
        const int lane = threadIdx.x & 31, nw = blockDim.x >> 5;
        for (int64_t b = threadIdx.x >> 5; b < nb; b += nw) {
            const int64_t bn = nf - b * 64 < 64 ? nf - b * 64 : 64;
            dev_fp8_block64(k + b * 64, bn, lane);
        }
        __syncthreads();
    }
    float *dst = ring + ((int64_t)p % R) * hd;
    for (int64_t i = threadIdx.x; i < hd; i += blockDim.x) dst[i] = k[i];
}

extern "C" v4f_status v4f_cuda_qkv_tail(v4f_cuda *c, float *qr, int64_t q_rank, const float *q_norm, float *kv,
                                        int64_t hd, const float *kv_norm, int64_t n, const int32_t *pos,
                                        const float *freqs, int n_rot, bool fp8, float eps, float *ring, int64_t R,
                                        v4f_err *err) {
    ARG_CHECK(n >= 0 && n <= 0x7fffffff && q_rank > 0 && hd > 0 && n_rot >= 0 && n_rot <= hd && n_rot % 2 == 0 &&
                  R > 0,
              "cuda qkv tail: bad shape");
    if (n == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    v4f_launch(k_qkv_tail, dim3((unsigned)n, 2), TAIL_THREADS, 0, c->stream, qr, q_rank, q_norm, kv, hd, kv_norm, pos, freqs, n_rot,
                                                            fp8 ? 1 : 0, eps, ring, R);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

__global__ void __launch_bounds__(128) k_q_heads(float *q, int64_t n_head, int64_t hd, const int32_t *pos,
                                                 const float *freqs, int n_rot, float eps) {
    V4F_PDL_ENTRY();
    __shared__ double part[4];
    const int64_t th = blockIdx.x, t = th / n_head;
    float *row = q + th * hd;
    dev_rmsnorm_row(row, NULL, row, hd, eps, part);
    __syncthreads();
    const int64_t p = pos[t];
    for (int i = threadIdx.x; i < n_rot / 2; i += blockDim.x) dev_rope_pair(row + hd - n_rot, i, freqs, p, 0);
}

extern "C" v4f_status v4f_cuda_q_heads(v4f_cuda *c, float *q, int64_t n, int64_t n_head, int64_t hd, const int32_t *pos,
                                       const float *freqs, int n_rot, float eps, v4f_err *err) {
    ARG_CHECK(n >= 0 && n_head > 0 && n * n_head <= 0x7fffffff && hd > 0 && n_rot >= 0 && n_rot <= hd &&
                  n_rot % 2 == 0,
              "cuda q heads: bad shape");
    if (n == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    v4f_launch(k_q_heads, (unsigned)(n * n_head), 128, 0, c->stream, q, n_head, hd, pos, freqs, n_rot, eps);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

#define EMIT_MAX_D 1024

__global__ void __launch_bounds__(128) k_comp_emit(const float *kv_ring, const float *sc_ring, int64_t R, int64_t W,
                                                   int64_t D, int32_t ratio, bool overlap, const int32_t *pos0,
                                                   int64_t n, const float *norm_w, const float *freqs, int n_rot,
                                                   int mode, float eps, float *rows) {
    V4F_PDL_ENTRY();
    __shared__ float row[EMIT_MAX_D], hs[EMIT_MAX_D];
    __shared__ double part[4];
    const int64_t p0 = pos0[0];
    const int64_t k = (p0 + ratio) / ratio - 1 + blockIdx.x, k_hi = (p0 + n) / ratio - 1;
    if (k > k_hi) return; /* uniform over the CTA */
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x)
        row[j] = pool_dim(kv_ring, sc_ring, R, W, D, ratio, overlap, k, j);
    __syncthreads();
    dev_rmsnorm_row(row, norm_w, row, D, eps, part);
    __syncthreads();
    for (int i = threadIdx.x; i < n_rot / 2; i += blockDim.x) dev_rope_pair(row + D - n_rot, i, freqs, k * ratio, 0);
    __syncthreads();
    if (mode == 1) {
        dev_hadamard_fp4_row(row, hs, (int)D, (float)(1.0 / sqrt((double)D)), 1);
    } else if (mode == 0) {
        const int64_t nf = D - n_rot, nb = (nf + 63) / 64;
        const int lane = threadIdx.x & 31, nw = blockDim.x >> 5;
        for (int64_t b = threadIdx.x >> 5; b < nb; b += nw) {
            const int64_t bn = nf - b * 64 < 64 ? nf - b * 64 : 64;
            dev_fp8_block64(row + b * 64, bn, lane);
        }
        __syncthreads();
    }
    float *dst = rows + k * D;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) dst[j] = row[j];
}

extern "C" v4f_status v4f_cuda_comp_emit(v4f_cuda *c, const float *kv_ring, const float *sc_ring, int64_t R, int64_t W,
                                         int64_t D, int32_t ratio, bool overlap, const int32_t *pos0, int64_t n,
                                         int64_t ng_max, const float *norm_w, const float *freqs, int n_rot, int mode,
                                         float eps, float *rows, v4f_err *err) {
    ARG_CHECK(R > 0 && D > 0 && D <= EMIT_MAX_D && ratio > 0 && W == (overlap ? 2 : 1) * D && n >= 0 &&
                  ng_max >= 0 && ng_max <= 0x7fffffff && R >= n + 2 * (int64_t)ratio && n_rot >= 0 && n_rot <= D &&
                  mode >= 0 && mode <= 2 && (mode != 1 || (D & (D - 1)) == 0),
              "cuda comp emit: bad shape (R %lld, W %lld, D %lld, ratio %d, n %lld)", (long long)R, (long long)W,
              (long long)D, ratio, (long long)n);
    if (ng_max == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    v4f_launch(k_comp_emit, (unsigned)ng_max, 128, 0, c->stream, kv_ring, sc_ring, R, W, D, ratio, overlap, pos0, n, norm_w,
                                                         freqs, n_rot, mode, eps, rows);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

__global__ void __launch_bounds__(128) k_idx_q(float *iq, float *iw, int64_t n_head, int64_t d, const int32_t *pos,
                                               const float *freqs, int n_rot, float w_scale) {
    V4F_PDL_ENTRY();
    extern __shared__ float hs[];
    const int64_t th = blockIdx.x, t = th / n_head;
    float *row = iq + th * d;
    const int64_t p = pos[t];
    for (int i = threadIdx.x; i < n_rot / 2; i += blockDim.x) dev_rope_pair(row + d - n_rot, i, freqs, p, 0);
    __syncthreads();
    dev_hadamard_fp4_row(row, hs, (int)d, (float)(1.0 / sqrt((double)d)), 1);
    if (threadIdx.x == 0) iw[th] = __fmul_rn(iw[th], w_scale);
}

extern "C" v4f_status v4f_cuda_idx_q(v4f_cuda *c, float *iq, float *iw, int64_t n, int64_t n_head, int64_t d,
                                     const int32_t *pos, const float *freqs, int n_rot, float w_scale, v4f_err *err) {
    ARG_CHECK(n >= 0 && n_head > 0 && n * n_head <= 0x7fffffff && d > 0 && d <= 4096 && (d & (d - 1)) == 0 &&
                  n_rot >= 0 && n_rot <= d && n_rot % 2 == 0,
              "cuda idx q: bad shape");
    if (n == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    const int threads = d >= 256 ? 128 : 32;
    v4f_launch(k_idx_q, (unsigned)(n * n_head), threads, (size_t)d * sizeof(float), c->stream, iq, iw, n_head, d, pos, freqs,
                                                                                       n_rot, w_scale);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

#define MSP_MAXK 16
#define GRAM_H 4                              /* streams of the Gram path (the published n_hc) */
#define GRAM_MAX (GRAM_H * (GRAM_H + 1) / 2) /* stream pairs h <= h' */
/* pair p (row-major over h <= h') -> h, h' (constant-folded in unrolled loops) */
__host__ __device__ constexpr int gram_h1(int p, int h = 0) {
    return p < GRAM_H - h ? h : gram_h1(p - (GRAM_H - h), h + 1);
}
__host__ __device__ constexpr int gram_h2(int p, int h = 0) {
    return p < GRAM_H - h ? h + p : gram_h2(p - (GRAM_H - h), h + 1);
}
static_assert(gram_h1(0) == 0 && gram_h2(3) == 3 && gram_h1(4) == 1 && gram_h2(4) == 1 && gram_h1(9) == 3 &&
                  gram_h2(9) == 3,
              "gram pair order");

/* The k rows' places are read once per CTA; every thread then issues all
 * its loads before the sums (they were a serial latency chain). */
__global__ void k_moe_sum_post(const float *y, const int32_t *einv, const float *ysh, int k, int64_t d, const float *X,
                               const float *post, const float *comb, int H, float *Xout) {
    V4F_PDL_ENTRY();
    __shared__ int32_t pl[MSP_MAXK];
    __shared__ float cs[OPS_MAX_HC * OPS_MAX_HC], ps[OPS_MAX_HC];
    const int64_t t = blockIdx.y;
    if (threadIdx.x < k) pl[threadIdx.x] = einv[t * k + threadIdx.x];
    if (threadIdx.x < H * H) cs[threadIdx.x] = comb[t * H * H + threadIdx.x];
    if (threadIdx.x < H) ps[threadIdx.x] = post[t * H + threadIdx.x];
    __syncthreads();
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < d; i += (int64_t)gridDim.x * blockDim.x) {
        float yv[MSP_MAXK], xv[OPS_MAX_HC];
#pragma unroll
        for (int j = 0; j < MSP_MAXK; j++) yv[j] = j < k ? y[(int64_t)pl[j] * d + i] : 0.0f;
        const float sh = ysh[t * d + i];
        const float *xt = X + t * H * d + i;
#pragma unroll
        for (int q = 0; q < OPS_MAX_HC; q++) xv[q] = q < H ? xt[q * d] : 0.0f;
        float acc = 0.0f;
#pragma unroll
        for (int j = 0; j < MSP_MAXK; j++)
            if (j < k) acc = __fadd_rn(acc, yv[j]);
        const float o = __fadd_rn(acc, sh);
        for (int j = 0; j < H; j++) {
            float s = 0;
            for (int q = 0; q < H; q++) s = __fadd_rn(s, __fmul_rn(cs[q * H + j], xv[q]));
            Xout[(t * H + j) * d + i] = __fadd_rn(__fmul_rn(ps[j], o), s);
        }
    }
}

extern "C" v4f_status v4f_cuda_moe_sum_post(v4f_cuda *c, const float *y, const int32_t *einv, const float *ysh,
                                            int64_t n, int k, int64_t d, const float *X, const float *post,
                                            const float *comb, int H, float *Xout, v4f_err *err) {
    ARG_CHECK(n >= 0 && n <= 65535 && k > 0 && k <= MSP_MAXK && d > 0 && H > 0 && H <= OPS_MAX_HC,
              "cuda moe sum post: bad shape (k %d <= %d, H %d)", k, MSP_MAXK, H);
    if (n == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    const dim3 grid((unsigned)((d + 127) / 128), (unsigned)n);
    v4f_launch(k_moe_sum_post, grid, 128, 0, c->stream, y, einv, ysh, k, d, X, post, comb, H, Xout);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

/* HC_post fused with the next HC mixer's split-K partials (k_hc_mix_partial
 * over the new streams): CTA (s, t) computes the new streams on its slice of
 * the flattened [H][d] row, stores them and accumulates the mixer dots and
 * the sum of squares from registers, so the next HC_pre needs no mixer
 * launch of its own. The branch output o is the attention output (MOE =
 * false), or the sum of the k routed-expert rows plus the shared expert in
 * the order of k_moe_sum_post. Same operations, same order, as k_hc_post /
 * k_moe_sum_post followed by k_hc_mix_partial: bit-identical results. */
typedef struct pm_args {
    const float *o, *y, *ysh;
    const int32_t *einv;
    int k;
    const float *X, *post, *comb;
    int H;
    int64_t d;
    float *Xout;
    const uint8_t *W;
    uint64_t row_bytes;
    int M, n_split;
    float *part;
    double *ss;
    double *gram; /* NULL, or [n][n_split][GRAM_MAX] stream Gram partials */
} pm_args;

#define PM_PRE_H 4
#define PM_PRE_K 8
/* PRE (launches of up to PM_PRE_MAX tokens: decode, 2-token verify steps):
 * the first element's inputs are loaded early (below); an instance of its
 * own, since the early values take registers (~250 instead of ~120) that
 * would halve the CTAs per SM of a chunk (2 x 128 splits still fit one
 * wave at 2 CTAs per SM). */
#ifndef PM_PRE_MAX
#define PM_PRE_MAX 2
#endif
template <int T, bool MOE, bool PRE>
__global__ void __launch_bounds__(MIXP_THREADS) k_post_mix(const __grid_constant__ pm_args a) {
    __shared__ float red[MIXP_THREADS / 32][MIXP_MAX_M];
    __shared__ double red_ss[MIXP_THREADS / 32], red_g[MIXP_THREADS / 32][GRAM_MAX];
    __shared__ int32_t pl[MSP_MAXK];
    __shared__ float cs[OPS_MAX_HC * OPS_MAX_HC], ps[OPS_MAX_HC];
    const int s = blockIdx.x, H = a.H, M = a.M;
    const int64_t t = blockIdx.y, d = a.d, K = (int64_t)H * d, len = K / a.n_split, k0 = (int64_t)s * len;
    const int64_t kk0 = k0 + threadIdx.x;
    /* the thread's first element (the only one when decoding), its inputs
     * loaded early for up to PM_PRE_H streams and PM_PRE_K experts (the
     * published 4 and 6; register arrays), else by the loop below */
    const bool first = PRE && kk0 < k0 + len && H <= PM_PRE_H && (!MOE || a.k <= PM_PRE_K);
    /* its mixer weights depend on no earlier kernel: loaded before the wait */
    float w0[MIXP_MAX_M];
#pragma unroll
    for (int j = 0; j < MIXP_MAX_M; j++)
        w0[j] = first && j < M ? emb_elem<T>(a.W + (uint64_t)j * a.row_bytes, kk0) : 0.0f;
    V4F_PDL_ENTRY();
    /* Gram partials (HC_pre's norm from the pre weights, k_hc_norm): CTAs
     * whose slice lies in stream 0 sum X_h[i] X_h'[i] (h <= h') over their
     * i, with every stream's new value recomputed; the others write zeros */
    const bool gram = a.gram && k0 + len <= d; /* a.gram: H <= GRAM_H (checked at launch) */
    double g[GRAM_MAX];
#pragma unroll
    for (int p = 0; p < GRAM_MAX; p++) g[p] = 0;
    if (MOE && (!PRE || a.einv) && threadIdx.x < a.k) pl[threadIdx.x] = a.einv[t * a.k + threadIdx.x];
    if (threadIdx.x < H * H) cs[threadIdx.x] = a.comb[t * H * H + threadIdx.x];
    if (threadIdx.x < H) ps[threadIdx.x] = a.post[t * H + threadIdx.x];
    /* the first element's inputs, requested with the loads above (one round
     * trip instead of two); with the identity pair map (einv NULL) the
     * expert rows too */
    const float *xt = a.X + t * K;
    const int h0 = (int)(kk0 / d);
    const int64_t i0 = kk0 - (int64_t)h0 * d;
    float x0[PM_PRE_H], y0[PM_PRE_K], b0 = 0.0f;
#pragma unroll
    for (int q = 0; q < PM_PRE_H; q++) x0[q] = first && q < H ? xt[q * d + i0] : 0.0f;
#pragma unroll
    for (int j = 0; j < PM_PRE_K; j++)
        y0[j] = MOE && first && !a.einv && j < a.k ? a.y[(t * a.k + j) * d + i0] : 0.0f;
    if (first && !(MOE && a.einv)) b0 = MOE ? a.ysh[t * d + i0] : a.o[t * d + i0]; /* an explicit map: branch() */
    __syncthreads();
    float acc[MIXP_MAX_M];
#pragma unroll
    for (int j = 0; j < MIXP_MAX_M; j++) acc[j] = 0.0f;
    double sq = 0;
    /* the branch output at element i of a stream */
    auto branch = [&](int64_t i) {
        if constexpr (MOE) {
            float yv[MSP_MAXK];
#pragma unroll
            for (int j = 0; j < MSP_MAXK; j++)
                yv[j] = j < a.k ? a.y[(!PRE || a.einv ? (int64_t)pl[j] : t * a.k + j) * d + i] : 0.0f;
            float sum = 0.0f;
#pragma unroll
            for (int j = 0; j < MSP_MAXK; j++)
                if (j < a.k) sum = __fadd_rn(sum, yv[j]);
            return __fadd_rn(sum, a.ysh[t * d + i]);
        } else {
            return a.o[t * d + i];
        }
    };
    if (first) { /* as the loop below, from the values loaded above */
        float o = b0;
        if constexpr (MOE) {
            if (a.einv) {
                o = branch(i0);
            } else {
                float sum = 0.0f;
#pragma unroll
                for (int j = 0; j < PM_PRE_K; j++)
                    if (j < a.k) sum = __fadd_rn(sum, y0[j]);
                o = __fadd_rn(sum, b0);
            }
        }
        float sm = 0;
#pragma unroll
        for (int q = 0; q < PM_PRE_H; q++)
            if (q < H) sm = __fadd_rn(sm, __fmul_rn(cs[q * H + h0], x0[q]));
        const float xv = __fadd_rn(__fmul_rn(ps[h0], o), sm);
        a.Xout[t * K + kk0] = xv;
        sq += (double)xv * (double)xv;
#pragma unroll
        for (int j = 0; j < MIXP_MAX_M; j++)
            if (j < M) acc[j] = fmaf(w0[j], xv, acc[j]);
    }
    for (int64_t kk = first ? kk0 + blockDim.x : kk0; kk < k0 + len; kk += blockDim.x) {
        const int h = (int)(kk / d);
        const int64_t i = kk - (int64_t)h * d;
        const float o = branch(i);
        float sm = 0;
        for (int q = 0; q < H; q++) sm = __fadd_rn(sm, __fmul_rn(cs[q * H + h], xt[q * d + i]));
        const float xv = __fadd_rn(__fmul_rn(ps[h], o), sm);
        a.Xout[t * K + kk] = xv;
        sq += (double)xv * (double)xv;
#pragma unroll
        for (int j = 0; j < MIXP_MAX_M; j++)
            if (j < M) acc[j] = fmaf(emb_elem<T>(a.W + (uint64_t)j * a.row_bytes, kk), xv, acc[j]);
    }
    /* Gram terms, a second pass over the slice (inputs from L1/L2) so that
     * their registers are not live beside the mixer sums */
    if (gram)
        for (int64_t kk = kk0; kk < k0 + len; kk += blockDim.x) {
            const float o = branch(kk); /* stream 0: kk = i */
            float xo[GRAM_H], xn[GRAM_H];
#pragma unroll
            for (int q = 0; q < GRAM_H; q++) xo[q] = q < H ? xt[q * d + kk] : 0.0f;
#pragma unroll
            for (int h2 = 0; h2 < GRAM_H; h2++) {
                float sm = 0;
#pragma unroll
                for (int q = 0; q < GRAM_H; q++)
                    if (q < H) sm = __fadd_rn(sm, __fmul_rn(cs[q * H + h2], xo[q]));
                xn[h2] = h2 < H ? __fadd_rn(__fmul_rn(ps[h2], o), sm) : 0.0f;
            }
#pragma unroll
            for (int p = 0; p < GRAM_MAX; p++) g[p] += (double)xn[gram_h1(p)] * (double)xn[gram_h2(p)];
        }
    if (a.gram) { /* warp trees here, the warps in order after the barrier of mix_split_store */
        const int lane = threadIdx.x & 31, wl = threadIdx.x >> 5;
#pragma unroll
        for (int p = 0; p < GRAM_MAX; p++) {
            const double v = warp_sum_d(g[p]);
            if (lane == 0) red_g[wl][p] = v;
        }
    }
    mix_split_store(acc, sq, M, red, red_ss, a.part + (t * a.n_split + s) * M, a.ss + t * a.n_split + s);
    if (a.gram && threadIdx.x < GRAM_MAX) {
        double v = 0;
        for (int w = 0; w < MIXP_THREADS / 32; w++) v += red_g[w][threadIdx.x];
        a.gram[(t * a.n_split + s) * GRAM_MAX + threadIdx.x] = v;
    }
}

/* HC_pre's norm half (v4f_cuda_hc_pre_fused HCP_NORM) from post_mix's
 * partials, spread over the row: every CTA reduces the pre weights (same
 * order as k_hc_pre) and r2 = 1 / sqrt(pre^T G pre / d + eps) from the Gram
 * partials (the sum of squares of a = sum_h pre_h X_h without a pass over
 * a), then writes its 1024 elements of xn = a * r2 * norm_w. The X loads
 * are issued before the reductions. */
#define HCN_THREADS 256
__global__ void __launch_bounds__(HCN_THREADS) k_hc_norm(const float *X, const float *part, const double *ssp,
                                                       const double *gram, int n_split, int M, int H, int64_t d,
                                                       const float *scale3, const float *base, float hc_eps,
                                                       float rms_eps, const float *norm_w, float *xn) {
    __shared__ float ms[GRAM_H], pre_s[GRAM_H];
    __shared__ double G[GRAM_MAX];
    __shared__ float r_s, r2_s;
    const int64_t t = blockIdx.y, K = (int64_t)H * d, r4 = (int64_t)blockIdx.x * HCN_THREADS + threadIdx.x;
    const int lane = threadIdx.x & 31, wl = threadIdx.x >> 5;
    const bool act = r4 < d / 4;
    /* the weights depend on no earlier kernel: requested before the wait */
    const float4 nw = act && norm_w ? ((const float4 *)norm_w)[r4] : make_float4(1.f, 1.f, 1.f, 1.f);
    const float sc3 = scale3[0], bh = (int)threadIdx.x < H ? base[threadIdx.x] : 0.0f;
    V4F_PDL_ENTRY();
    const float4 *x4 = (const float4 *)(X + t * K);
    float4 xv[GRAM_H];
#pragma unroll
    for (int h = 0; h < GRAM_H; h++)
        xv[h] = act && h < H ? x4[h * (d / 4) + r4] : make_float4(0.f, 0.f, 0.f, 0.f);
    for (int j = wl; j < H + 1 + GRAM_MAX; j += HCN_THREADS / 32) {
        if (j < H) {
            float m = 0;
            for (int s = lane; s < n_split; s += 32) m += part[(t * n_split + s) * M + j];
            for (int o = 16; o > 0; o >>= 1) m += __shfl_xor_sync(0xffffffffu, m, o);
            if (lane == 0) ms[j] = m;
        } else if (j == H) {
            double v = 0;
            for (int s = lane; s < n_split; s += 32) v += ssp[t * n_split + s];
            v = warp_sum_d(v);
            if (lane == 0) r_s = (float)(1.0 / sqrt(v / (double)K + (double)rms_eps));
        } else {
            const int p = j - H - 1;
            double v = 0;
            for (int s = lane; s < n_split; s += 32) v += gram[(t * n_split + s) * GRAM_MAX + p];
            v = warp_sum_d(v);
            if (lane == 0) G[p] = v;
        }
    }
    __syncthreads();
    if (threadIdx.x < H)
        pre_s[threadIdx.x] = dev_hc_pre_weight(__fmul_rn(ms[threadIdx.x], r_s), sc3, bh, hc_eps);
    __syncthreads();
    if (threadIdx.x == 0) {
        double q = 0;
        for (int p = 0; p < GRAM_MAX; p++) {
            const int h1 = gram_h1(p), h2 = gram_h2(p);
            if (h2 < H) q += (h1 == h2 ? 1.0 : 2.0) * (double)pre_s[h1] * (double)pre_s[h2] * G[p];
        }
        r2_s = (float)(1.0 / sqrt(q / (double)d + (double)rms_eps));
    }
    __syncthreads();
    if (!act) return;
    float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int h = 0; h < GRAM_H; h++)
        if (h < H) {
            const float p = pre_s[h];
            sum.x = __fadd_rn(sum.x, __fmul_rn(p, xv[h].x));
            sum.y = __fadd_rn(sum.y, __fmul_rn(p, xv[h].y));
            sum.z = __fadd_rn(sum.z, __fmul_rn(p, xv[h].z));
            sum.w = __fadd_rn(sum.w, __fmul_rn(p, xv[h].w));
        }
    const float r2 = r2_s;
    float4 v = make_float4(__fmul_rn(sum.x, r2), __fmul_rn(sum.y, r2), __fmul_rn(sum.z, r2), __fmul_rn(sum.w, r2));
    if (norm_w) v = make_float4(__fmul_rn(nw.x, v.x), __fmul_rn(nw.y, v.y), __fmul_rn(nw.z, v.z), __fmul_rn(nw.w, v.w));
    ((float4 *)(xn + t * d))[r4] = v;
}

extern "C" v4f_status v4f_cuda_hc_norm(v4f_cuda *c, const float *X, const float *part, const double *ss,
                                       const double *gram, int n_split, int M, int64_t n, int H, int64_t d,
                                       const float *scale3, const float *base, float hc_eps, float rms_eps,
                                       const float *norm_w, float *xn, v4f_err *err) {
    ARG_CHECK(n >= 0 && n <= 65535 && H > 0 && H <= GRAM_H && d > 0 && d % 4 == 0 && M >= H && n_split > 0,
              "cuda hc norm: bad shape (H %d <= %d, d %lld)", H, GRAM_H, (long long)d);
    if (n == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    const dim3 grid((unsigned)((d / 4 + HCN_THREADS - 1) / HCN_THREADS), (unsigned)n);
    v4f_launch(k_hc_norm, grid, HCN_THREADS, 0, c->stream, X, part, ss, gram, n_split, M, H, d, scale3, base, hc_eps,
               rms_eps, norm_w, xn);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}

template <bool MOE, bool PRE> static void launch_post_mix(cudaStream_t st, uint32_t type, dim3 grid, const pm_args &a) {
    if (type == V4F_TYPE_F32) v4f_launch(k_post_mix<V4F_TYPE_F32, MOE, PRE>, grid, MIXP_THREADS, 0, st, a);
    else if (type == V4F_TYPE_F16) v4f_launch(k_post_mix<V4F_TYPE_F16, MOE, PRE>, grid, MIXP_THREADS, 0, st, a);
    else v4f_launch(k_post_mix<V4F_TYPE_BF16, MOE, PRE>, grid, MIXP_THREADS, 0, st, a);
}

extern "C" v4f_status v4f_cuda_post_mix(v4f_cuda *c, const float *o, const float *y, const int32_t *einv, int k,
                                        const float *ysh, const float *X, const float *post, const float *comb,
                                        int64_t n, int H, int64_t d, float *Xout, const void *W, uint32_t type,
                                        uint64_t row_bytes, int M, int n_split, float *part, double *ss,
                                        double *gram, v4f_err *err) {
    ARG_CHECK(n >= 0 && n <= 65535 && H > 0 && H <= OPS_MAX_HC && d > 0 && M > 0 && M <= MIXP_MAX_M &&
                  n_split > 0 && n_split <= 65535 && ((int64_t)H * d) % n_split == 0 && (int64_t)H * d <= 0x7fffffff,
              "cuda post mix: bad shape (H %d, d %lld, M %d, %d splits)", H, (long long)d, M, n_split);
    ARG_CHECK(o || (y && ysh && k > 0 && k <= MSP_MAXK), "cuda post mix: no branch output (k %d)", k);
    ARG_CHECK(o || einv || n == 1, "cuda post mix: the identity pair map (einv NULL) is for one token");
    ARG_CHECK(type == V4F_TYPE_F32 || type == V4F_TYPE_F16 || type == V4F_TYPE_BF16,
              "cuda post mix: mixer type %s (F32/F16/BF16)", v4f_type_name(type));
    if (n == 0) return V4F_OK;
    CUDA_TRY_DEVICE(c);
    ARG_CHECK(!gram || (H <= GRAM_H && (int64_t)H * d / n_split <= d && d % ((int64_t)H * d / n_split) == 0),
              "cuda post mix: Gram partials need H <= %d and splits inside one stream", GRAM_H);
    pm_args a = {o,    y,       ysh, einv, k, X, post, comb, H, d, Xout, (const uint8_t *)W, row_bytes, M, n_split,
                 part, ss, gram};
    const dim3 grid((unsigned)n_split, (unsigned)n);
    if (o && n <= PM_PRE_MAX) launch_post_mix<false, true>(c->stream, type, grid, a);
    else if (o) launch_post_mix<false, false>(c->stream, type, grid, a);
    else if (n <= PM_PRE_MAX) launch_post_mix<true, true>(c->stream, type, grid, a);
    else launch_post_mix<true, false>(c->stream, type, grid, a);
    CUDA_TRY_LAUNCH();
    return V4F_OK;
}
