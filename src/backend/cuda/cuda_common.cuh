/*
 * cuda_common.cuh - private definitions shared by the .cu files of the CUDA
 * backend: the context struct, the CUDA_TRY error macro and the internal
 * init hooks of each op family.
 *
 * Invariants: every CUDA runtime call in the backend goes through CUDA_TRY
 * (or CUDA_TRY_LAUNCH right after a kernel launch), which turns a failure
 * into V4F_STATUS_DEVICE (V4F_STATUS_OOM for cudaErrorMemoryAllocation),
 * writes "file:line: call: cuda error" into the caller's v4f_err, logs it at
 * error level, and returns from the enclosing function.
 * Ownership/threading: see cuda_backend.h (one owner thread per context).
 */
#ifndef V4F_CUDA_COMMON_CUH
#define V4F_CUDA_COMMON_CUH

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

extern "C" {
#include "core/core.h"
}
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_fwd.h"

struct v4f_cuda {
    int device;
    cudaStream_t stream;
    cudaEvent_t ev_start, ev_stop;
    int sm_count;
    double peak_bw; /* bytes/s from attributes, 0 if unknown */
    char name[256];
    /* cuda_quant.cu: scratch for activations split into int8 planes
     * (V4F_CUDA_MATVEC_MAX_BATCH slots of qx_slot_bytes, for n_in <=
     * qx_max_in), allocated at open so matvecs never allocate. */
    uint8_t *qx;
    int64_t qx_max_in;
    int x_planes; /* planes the quantized matvecs multiply: 3 or 2 (v4f_cuda_set_x_planes) */
    size_t qx_slot_bytes;
    size_t qx_bytes; /* whole scratch: the plane slots, then the split-K partials */
    size_t qx_plane_bytes; /* the plane slots; cuda_gemm.cu's split-K partial sums follow
                            * (V4F_CUDA_SPLITK_BYTES), one region per stream like the slots */
    /* cuda_fwd.cu fork/join: a second stream with its own scratch, so two
     * independent chains of launches can run side by side (and appear as
     * parallel branches in a captured graph). stream/qx point at the pair
     * in use; main_stream/qx_main are the context's own. */
    cudaStream_t main_stream, aux_stream;
    cudaEvent_t ev_fork, ev_join;
    uint8_t *qx_main, *qx_aux;
    /* cuda_fwd.cu prefetch: a copy stream beside the main one */
    cudaStream_t pf_stream;
    cudaEvent_t ev_pf_free, ev_pf_done[V4F_CUDA_PREFETCH_SLOTS];
    /* cuda_quant.cu: the fast matvecs' weight copies ask L2 to evict their
     * lines first (v4f_cuda_set_weight_evict_first; on from open) */
    bool mv_evict_first;
    /* cuda_quant.cu: the next matvecs' plane split lets them launch before
     * its own wait (v4f_cuda_set_split_trigger_first) */
    bool split_trigger_first;
};

/* ---- programmatic dependent launch (PDL) ------------------------------------
 * Every kernel of the backend starts with V4F_PDL_ENTRY(): wait until the
 * kernels before it on the stream have completed and their writes are
 * visible (griddepcontrol.wait), then let the next kernel be launched
 * (griddepcontrol.launch_dependents). Kernels are launched with
 * v4f_launch, which asks for programmatic stream serialization when
 * v4f_cuda_pdl is set: the next kernel's CTAs are then scheduled while the
 * current one still runs and sit at their wait, so the launch latency
 * between dependent kernels (the gaps of a decode graph) overlaps the work.
 * Rule: before V4F_PDL_ENTRY a kernel may read only its parameters,
 * memory no kernel writes (weights) and memory its launcher knows was
 * written two or more launches back on the stream (k_fa_dec with
 * keys.early: kernel N is launched once every CTA of N - 1 has passed its
 * own wait, so N - 2 and all before it are done), and may write nothing
 * global; every CTA that touches memory passes the wait, so "kernel done"
 * still implies "all kernels before it done". One exception to "N launched
 * => N - 2 done": the matvec after a plane split made with
 * v4f_cuda_set_split_trigger_first (k_quant_x triggers before its own wait;
 * that matvec reads only weights before its wait). Without the launch attribute (sm < 90, or
 * V4F_PDL=0) the wait returns at once and launches are ordinary. */
extern int v4f_cuda_pdl; /* set by v4f_cuda_open: sm_90+ code on an sm_90+ device */

__device__ __forceinline__ void v4f_pdl_wait(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void v4f_pdl_trigger(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
#ifndef V4F_KTRACE
#define V4F_PDL_ENTRY() (v4f_pdl_wait(), v4f_pdl_trigger())
#define V4F_KT_POINT() ((void)0)
#else
/* Kernel start trace (a profiling build, `make CUDA=1 KTRACE=1`; the GPU
 * machines have no Nsight Systems): block (0,0,0) of every kernel records
 * the global timer when it passes the wait, with this translation unit and
 * the source line of its V4F_PDL_ENTRY (which names the kernel), into a
 * ring per translation unit; v4f_cuda_close writes all rings to the file
 * named by V4F_KTRACE_OUT. The start of a kernel after its wait is the end
 * of the kernels it waits for, so consecutive starts on one chain give the
 * in-graph time of each kernel. */
#define V4F_KT_RING 65536
struct v4f_kt_rec {
    unsigned long long t;
    unsigned line, grid, block, seq;
};
static __device__ v4f_kt_rec g_kt[V4F_KT_RING];
static __device__ unsigned g_kt_n;
__device__ __forceinline__ void v4f_kt_mark(unsigned line) {
    if (blockIdx.x | blockIdx.y | blockIdx.z | threadIdx.x | threadIdx.y) return;
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    const unsigned i = atomicAdd(&g_kt_n, 1u);
    g_kt[i % V4F_KT_RING] = {t, line, gridDim.x * gridDim.y * gridDim.z, blockDim.x, i};
}
#define V4F_PDL_ENTRY() (v4f_pdl_wait(), v4f_kt_mark(__LINE__), v4f_pdl_trigger())
/* a time stamp of block (0,0,0) inside a kernel (tools/ktrace.py lists it
 * as file:line between the kernel starts). Its slot comes from a returning
 * global atomic, so thread 0 waits ~0.3 us a stamp and the CTA with it at
 * its next barrier: stamps lengthen the phases they split (session 38: a
 * top-k with 5 stamps read 7.6 us against 6.5 with none); for a kernel's
 * phases alone, clock64 with fire-and-forget atomics in a scratch bench */
#define V4F_KT_POINT() v4f_kt_mark(__LINE__)
extern "C" void v4f_kt_register(void (*dump)(FILE *));
static void v4f_kt_dump_tu(FILE *f) {
    unsigned n = 0;
    if (cudaMemcpyFromSymbol(&n, g_kt_n, sizeof n) != cudaSuccess) return;
    static v4f_kt_rec buf[V4F_KT_RING];
    if (cudaMemcpyFromSymbol(buf, g_kt, sizeof buf) != cudaSuccess) return;
    const unsigned m = n < V4F_KT_RING ? n : V4F_KT_RING;
    for (unsigned i = 0; i < m; i++)
        fprintf(f, "%llu %s %u %u %u %u\n", buf[i].t, __BASE_FILE__, buf[i].line, buf[i].grid, buf[i].block, buf[i].seq);
}
static struct v4f_kt_reg_t {
    v4f_kt_reg_t() { v4f_kt_register(v4f_kt_dump_tu); }
} v4f_kt_reg_this_tu;
#endif

/* kernel<<<grid, block, smem, stream>>>(args...) in thread block clusters
 * of cx CTAs along x (cx > 1: sm_90+ code and device, and the caller checks
 * that such clusters can be resident, cudaOccupancyMaxActiveClusters), with
 * the PDL attribute when enabled; errors surface through CUDA_TRY_LAUNCH as
 * for <<<>>>. */
template <typename... P, typename... A>
static inline void v4f_launch_cluster(void (*kernel)(P...), dim3 grid, dim3 block, unsigned cx, size_t smem,
                                      cudaStream_t st, A... args) {
    cudaLaunchAttribute at[2] = {};
    unsigned n = 0;
    if (cx > 1) {
        at[n].id = cudaLaunchAttributeClusterDimension;
        at[n].val.clusterDim.x = cx;
        at[n].val.clusterDim.y = 1;
        at[n].val.clusterDim.z = 1;
        n++;
    }
    if (v4f_cuda_pdl) {
        at[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        at[n].val.programmaticStreamSerializationAllowed = 1;
        n++;
    }
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cfg.attrs = at;
    cfg.numAttrs = n;
    (void)cudaLaunchKernelEx(&cfg, kernel, args...);
}

/* The same without clusters: every kernel launch of the backend. */
template <typename... P, typename... A>
static inline void v4f_launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t st, A... args) {
    v4f_launch_cluster(kernel, grid, block, 1u, smem, st, args...);
}

/* Bulk (TMA) copies into shared memory, sm_90 and later: one thread queues
 * a whole contiguous range with one instruction and the copy engine signals
 * an mbarrier with the bytes it wrote, instead of every thread computing
 * and issuing 16-byte cp.async copies (k_matvec uses them where they
 * measured faster, docs/PERF_NOTES.md session 9; k_fa_dec for its key
 * rows). Source, destination and size must be multiples of 16 bytes. */
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define V4F_BULK 1
#else
#define V4F_BULK 0
#endif
__device__ __forceinline__ void mbar_init(uint64_t *bar) {
#if V4F_BULK
    const unsigned b = (unsigned)__cvta_generic_to_shared(bar);
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(b) : "memory");
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#else
    (void)bar;
#endif
}
/* Queues `bytes` in total for this phase of bar (one thread). */
__device__ __forceinline__ void mbar_expect(uint64_t *bar, uint32_t bytes) {
#if V4F_BULK
    const unsigned b = (unsigned)__cvta_generic_to_shared(bar);
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(b), "r"(bytes) : "memory");
#else
    (void)bar, (void)bytes;
#endif
}
__device__ __forceinline__ void bulk_copy(void *smem_dst, const void *gmem_src, uint32_t bytes, uint64_t *bar) {
#if V4F_BULK
    const unsigned d = (unsigned)__cvta_generic_to_shared(smem_dst), b = (unsigned)__cvta_generic_to_shared(bar);
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(d),
                 "l"(gmem_src), "r"(bytes), "r"(b)
                 : "memory");
#else
    (void)smem_dst, (void)gmem_src, (void)bytes, (void)bar;
#endif
}
__device__ __forceinline__ void bulk_copy_hint(void *smem_dst, const void *gmem_src, uint32_t bytes, uint64_t *bar,
                                               uint64_t pol) {
#if V4F_BULK
    const unsigned d = (unsigned)__cvta_generic_to_shared(smem_dst), b = (unsigned)__cvta_generic_to_shared(bar);
    asm volatile(
        "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;\n" ::"r"(d),
        "l"(gmem_src), "r"(bytes), "r"(b), "l"(pol)
        : "memory");
#else
    (void)smem_dst, (void)gmem_src, (void)bytes, (void)bar, (void)pol;
#endif
}
/* Waits until phase `parity` of bar has completed. */
__device__ __forceinline__ void mbar_wait(uint64_t *bar, uint32_t parity) {
#if V4F_BULK
    const unsigned b = (unsigned)__cvta_generic_to_shared(bar);
    asm volatile("{\n .reg .pred p;\n W%=:\n mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n @!p bra W%=;\n}\n" ::"r"(b),
                 "r"(parity)
                 : "memory");
#else
    (void)bar, (void)parity;
#endif
}

/* prmt.b32 as inline PTX. __byte_perm(a, b, s) promises to use only bits
 * 0-2 of each selector nibble, so with a computed selector the compiler
 * adds an AND with 0x7777 (or, seeing that only 16 selector bits are used,
 * splits the selector arithmetic per half); callers whose selector nibbles
 * have bit 3 clear (bit 3 asks prmt for sign replication) use this. */
__device__ __forceinline__ uint32_t v4f_prmt(uint32_t a, uint32_t b, uint32_t sel) {
    uint32_t d;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(sel));
    return d;
}

/* One mma.sync m16n8k16 with float32 accumulators c[4] (+=): A row-major
 * fragment a[4], B column-major fragment b[2], both f16 or both bf16
 * (sm_80+). */
__device__ __forceinline__ void v4f_mma_f16(float *c, const uint32_t *a, const uint32_t *b) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ void v4f_mma_bf16(float *c, const uint32_t *a, const uint32_t *b) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/* Report a failed CUDA call: fills err, logs, returns the status. */
static inline v4f_status v4f_cuda_fail(v4f_err *err, cudaError_t e, const char *expr, const char *file, int line) {
    const v4f_status st = e == cudaErrorMemoryAllocation ? V4F_STATUS_OOM : V4F_STATUS_DEVICE;
    v4f_log(V4F_LOG_ERROR, "%s:%d: %s: %s (%s)", file, line, expr, cudaGetErrorString(e), cudaGetErrorName(e));
    return v4f_err_set(err, st, "%s:%d: %s: %s", file, line, expr, cudaGetErrorString(e));
}

#define CUDA_TRY(call)                                                            \
    do {                                                                          \
        const cudaError_t e_ = (call);                                            \
        if (e_ != cudaSuccess) return v4f_cuda_fail(err, e_, #call, __FILE__, __LINE__); \
    } while (0)

/* After a <<<>>> launch: launch-configuration errors are synchronous. */
#define CUDA_TRY_LAUNCH() CUDA_TRY(cudaGetLastError())

/* Make the context's device current for this thread. */
#define CUDA_TRY_DEVICE(c) CUDA_TRY(cudaSetDevice((c)->device))

/* Raise a kernel's dynamic shared-memory limit once per device (not a
 * stream operation; the first launch of each configuration, in practice
 * before any graph capture), from 40 KB up: static shared memory (e.g. the
 * IQ2_XXS tables) counts against the 48 KB default too. One bit per device
 * < 64 in *done (one static per kernel instance). */
template <typename K>
static v4f_status v4f_smem_optin(v4f_cuda *c, K kernel, size_t smem, unsigned long long *done, v4f_err *err) {
    const unsigned long long bit = c->device < 64 ? 1ull << c->device : 0;
    if (smem > 40 * 1024 && !(__atomic_load_n(done, __ATOMIC_RELAXED) & bit)) {
        CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        __atomic_fetch_or(done, bit, __ATOMIC_RELAXED);
    }
    return V4F_OK;
}

/* cuda_backend.cu: the host ranges pinned by v4f_cuda_host_register in this
 * process (all contexts). overlap: 0 none, 1 inside one, 2 partly; add
 * refuses (false) a range that overlaps one; remove takes its start. */
int v4f_cuda_reg_overlap(const void *p, size_t n);
bool v4f_cuda_reg_add(const void *p, size_t n);
void v4f_cuda_reg_remove(const void *p);

/* cuda_quant.cu: upload the format tables to the current device and
 * allocate the activation scratch; deinit frees the scratch (NULL-safe). */
v4f_status v4f_cuda_quant_init(v4f_cuda *c, v4f_err *err);
void v4f_cuda_quant_deinit(v4f_cuda *c);
/* cuda_attn.cu: decide once per device whether the decode attention kernel
 * (thread block clusters) can run, outside any graph capture. */
void v4f_cuda_attn_init(v4f_cuda *c);
/* cuda_fwd.cu: free the fork/join stream, events and scratch (NULL-safe). */
void v4f_cuda_fork_deinit(v4f_cuda *c);
void v4f_cuda_prefetch_deinit(v4f_cuda *c);

#endif /* V4F_CUDA_COMMON_CUH */
