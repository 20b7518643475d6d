/*
 * quant.c - run-time dispatch of the weight-format kernels.
 *
 * Owns the only mutable global of the module: one kernel table (weight
 * kernels and activation quantizers) per ISA (generic, AVX2, AVX-512), built
 * once under pthread_once and read-only afterwards. Each ISA table starts as a copy of the generic table and the
 * ISA's filler overrides the members it implements, so every member of an
 * available ISA's table is non-NULL where the generic one is.
 *
 * The int8-plane kernels (dot_planes, quant.h) need AVX-512 VNNI and VBMI on
 * top of the AVX-512 set; they are added to the AVX-512 table only where
 * cpuid reports both (else that member stays NULL and callers use dot_f32).
 * Their IQ2_XXS grid lookup is picked by vendor (gathers, slow on AMD).
 *
 * ISA selection: v4f_isa_available() reports what the CPU supports (cpuid);
 * v4f_isa_best() is the best available one, lowered by the V4F_ISA
 * environment variable ("generic", "avx2", "avx512"; read once). A request
 * above what the CPU supports is ignored.
 *
 * Threading: safe from any thread; the first call builds the tables.
 */
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include <pthread.h>
#include <stdlib.h>
#include <strings.h>

#include "quant/quant_internal.h"

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static v4f_quant_kernels g_tab[V4F_ISA_COUNT][V4F_TYPE_COUNT];
static v4f_quant_act_kernels g_act[V4F_ISA_COUNT];
static bool g_avail[V4F_ISA_COUNT];
static v4f_isa g_best;
static bool g_planes; /* AVX-512 table has the VNNI plane kernels */

/* F16C from cpuid leaf 1, ECX bit 29 (clang 14's __builtin_cpu_supports
 * does not know the "f16c" feature string). */
static bool cpu_has_f16c(void) {
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
    return (c >> 29) & 1u;
#else
    return false;
#endif
}

static bool cpu_has_avx2(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
#else
    return false;
#endif
}

static bool cpu_has_avx512(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq");
#else
    return false;
#endif
}

/* AVX512_VNNI (leaf 7 ECX bit 11) and AVX512_VBMI (bit 1); the OS support
 * of the zmm state is part of the avx512f check. */
static bool cpu_has_vnni_vbmi(void) {
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    return ((c >> 11) & 1u) && ((c >> 1) & 1u);
#else
    return false;
#endif
}

static bool cpu_is_amd(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_is("amd");
#else
    return false;
#endif
}

static v4f_isa env_isa_cap(void) {
    const char *e = getenv("V4F_ISA");
    if (!e || !*e) return V4F_ISA_AVX512;
    if (strcasecmp(e, "generic") == 0) return V4F_ISA_GENERIC;
    if (strcasecmp(e, "avx2") == 0) return V4F_ISA_AVX2;
    if (strcasecmp(e, "avx512") == 0) return V4F_ISA_AVX512;
    v4f_log(V4F_LOG_WARN, "quant: ignoring unknown V4F_ISA=%s", e);
    return V4F_ISA_AVX512;
}

static void build_tables(void) {
    v4f_quant_iq2_gridf_init();
    v4f_quant_fill_generic(g_tab[V4F_ISA_GENERIC], &g_act[V4F_ISA_GENERIC]);
    g_avail[V4F_ISA_GENERIC] = true;
    g_avail[V4F_ISA_AVX2] = cpu_has_avx2();
    g_avail[V4F_ISA_AVX512] = cpu_has_avx512();
    if (g_avail[V4F_ISA_AVX2]) {
        memcpy(g_tab[V4F_ISA_AVX2], g_tab[V4F_ISA_GENERIC], sizeof g_tab[0]);
        g_act[V4F_ISA_AVX2] = g_act[V4F_ISA_GENERIC];
        v4f_quant_fill_avx2(g_tab[V4F_ISA_AVX2], &g_act[V4F_ISA_AVX2]);
    }
    if (g_avail[V4F_ISA_AVX512]) {
        memcpy(g_tab[V4F_ISA_AVX512], g_tab[V4F_ISA_AVX2], sizeof g_tab[0]);
        g_act[V4F_ISA_AVX512] = g_act[V4F_ISA_AVX2];
        v4f_quant_fill_avx512(g_tab[V4F_ISA_AVX512], &g_act[V4F_ISA_AVX512]);
        g_planes = cpu_has_vnni_vbmi();
        /* IQ2_XXS grid rows: qword gathers, except on AMD, whose gathers are
         * slow (quant_planes_avx512.c) */
        if (g_planes) v4f_quant_fill_planes_avx512(g_tab[V4F_ISA_AVX512], !cpu_is_amd());
    }
    const v4f_isa cap = env_isa_cap();
    g_best = V4F_ISA_GENERIC;
    for (int i = V4F_ISA_GENERIC; i <= (int)cap; i++)
        if (g_avail[i]) g_best = (v4f_isa)i;
}

static void ensure_tables(void) { pthread_once(&g_once, build_tables); }

v4f_isa v4f_isa_best(void) {
    ensure_tables();
    return g_best;
}

const char *v4f_isa_name(v4f_isa isa) {
    switch (isa) {
    case V4F_ISA_GENERIC: return "generic";
    case V4F_ISA_AVX2: return "avx2";
    case V4F_ISA_AVX512: return "avx512";
    default: return "?";
    }
}

bool v4f_isa_available(v4f_isa isa) {
    if ((int)isa < 0 || isa >= V4F_ISA_COUNT) return false;
    ensure_tables();
    return g_avail[isa];
}

const v4f_quant_kernels *v4f_quant_kernels_isa(uint32_t type, v4f_isa isa) {
    if (type >= V4F_TYPE_COUNT || (int)isa < 0 || isa >= V4F_ISA_COUNT) return NULL;
    ensure_tables();
    if (!g_avail[isa]) return NULL;
    const v4f_quant_kernels *k = &g_tab[isa][type];
    return k->dequant_row ? k : NULL;
}

const v4f_quant_kernels *v4f_quant_kernels_get(uint32_t type) {
    return v4f_quant_kernels_isa(type, v4f_isa_best());
}

bool v4f_quant_supported(uint32_t type) {
    return v4f_quant_kernels_isa(type, V4F_ISA_GENERIC) != NULL;
}

const v4f_quant_act_kernels *v4f_quant_act_isa(v4f_isa isa) {
    if ((int)isa < 0 || isa >= V4F_ISA_COUNT) return NULL;
    ensure_tables();
    return g_avail[isa] ? &g_act[isa] : NULL;
}

void v4f_quantize_act(uint32_t act_type, const float *x, void *dst, int64_t n) {
    const v4f_quant_act_kernels *a = v4f_quant_act_isa(v4f_isa_best());
    if (act_type == V4F_TYPE_Q8_0) {
        V4F_ASSERT(n % V4F_QK8_0 == 0);
        a->q8_0(x, dst, n);
    } else {
        V4F_ASSERT(act_type == V4F_TYPE_Q8_K && n % V4F_QK_K == 0);
        a->q8_K(x, dst, n);
    }
}

size_t v4f_planes_bytes(int64_t n) { return v4f_planes_off_bias(n) + (size_t)n / 4; }

void v4f_quantize_planes(const float *x, void *dst, int64_t n) {
    V4F_ASSERT(n % V4F_QK_K == 0);
    if (v4f_isa_best() >= V4F_ISA_AVX512 && g_planes) v4f_quant_planes_avx512(x, dst, n);
    else v4f_quant_planes_ref(x, dst, n);
}

v4f_quant_dot_planes_fn v4f_quant_iq2_planes_variant(bool gather) {
    ensure_tables();
    return g_planes ? v4f_quant_iq2_planes_avx512(gather) : NULL;
}

void v4f_dequant_row_ref(uint32_t type, const void *src, float *dst, int64_t n) {
    const v4f_quant_kernels *k = v4f_quant_kernels_isa(type, V4F_ISA_GENERIC);
    V4F_ASSERT(k != NULL);
    k->dequant_row(src, dst, n);
}
