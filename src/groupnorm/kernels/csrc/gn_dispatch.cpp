/* The C API of gn_api.h: argument checks, then the kernels of the best instruction-set level this CPU runs
 * (chosen once; gn_set_isa can force a lower one, e.g. to test the fallback paths). No Python or PyTorch
 * headers: the sanitizer test links this file with its driver; the package build adds gn_python.cpp. */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gn_api.h"

/* the entry points of one level (gn_level.h) */
#define GN_DECLARE(ns)                                                                                         \
    namespace ns {                                                                                             \
    int forward(const gn_fwd_args *);                                                                          \
    int backward(const gn_bwd_args *);                                                                         \
    }
/* GN_WITH_X86_LEVELS: the baseline, AVX2 and AVX-512 levels linked in (the package build); GN_HAVE_AVX512BF16
 * is defined by setup.py when that level compiled (it needs a compiler with -mavx512bf16); the sanitizer test
 * links a subset. */
#ifdef GN_WITH_X86_LEVELS
#define GN_HAVE_AVX2 1
#define GN_HAVE_AVX512 1
#endif
GN_DECLARE(gn_base)
#ifdef GN_HAVE_AVX2
GN_DECLARE(gn_avx2)
#endif
#ifdef GN_HAVE_AVX512
GN_DECLARE(gn_avx512)
#endif
#ifdef GN_HAVE_AVX512BF16
GN_DECLARE(gn_avx512bf16)
#endif

typedef int (*fwd_fn)(const gn_fwd_args *);
typedef int (*bwd_fn)(const gn_bwd_args *);

static int g_level = -1;

static int cpu_max_level(void) {
#if defined(GN_HAVE_AVX2) || defined(GN_HAVE_AVX512)
    __builtin_cpu_init();
#endif
#ifdef GN_HAVE_AVX512
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("bmi2")) {
#ifdef GN_HAVE_AVX512BF16
        if (__builtin_cpu_supports("avx512bf16")) return GN_ISA_AVX512BF16;
#endif
        return GN_ISA_AVX512;
    }
#endif
#ifdef GN_HAVE_AVX2
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi") &&
        __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("movbe"))
        return GN_ISA_AVX2;
#endif
    return GN_ISA_BASE;
}

extern "C" {

int gn_abi_version(void) { return GN_ABI_VERSION; }

int gn_max_compiled_isa(void) {
#if defined(GN_HAVE_AVX512BF16)
    return GN_ISA_AVX512BF16;
#elif defined(GN_HAVE_AVX512)
    return GN_ISA_AVX512;
#elif defined(GN_HAVE_AVX2)
    return GN_ISA_AVX2;
#else
    return GN_ISA_BASE;
#endif
}

static int compiled(int level) {
    if (level == GN_ISA_BASE) return 1;
#ifdef GN_HAVE_AVX2
    if (level == GN_ISA_AVX2) return 1;
#endif
#ifdef GN_HAVE_AVX512
    if (level == GN_ISA_AVX512) return 1;
#endif
#ifdef GN_HAVE_AVX512BF16
    if (level == GN_ISA_AVX512BF16) return 1;
#endif
    return 0;
}

int gn_set_isa(int level) {
    int best = cpu_max_level();
    if (level == GN_ISA_AUTO) level = best;
    if (level < 0 || level > best || !compiled(level)) return -GN_EINVAL;
    __atomic_store_n(&g_level, level, __ATOMIC_SEQ_CST);
    return level;
}

int gn_get_isa(void) {
    int l = __atomic_load_n(&g_level, __ATOMIC_SEQ_CST);
    return l >= 0 ? l : gn_set_isa(GN_ISA_AUTO);
}

static void pick(int dtype, fwd_fn *f, bwd_fn *b) {
    if (dtype == GN_F64) { /* compiled only into the baseline level */
        *f = gn_base::forward;
        *b = gn_base::backward;
        return;
    }
    switch (gn_get_isa()) {
#ifdef GN_HAVE_AVX512BF16
    case GN_ISA_AVX512BF16:
        if (dtype == GN_BF16) { /* the only dtype compiled into that level */
            *f = gn_avx512bf16::forward;
            *b = gn_avx512bf16::backward;
            return;
        }
        *f = gn_avx512::forward; /* GN_HAVE_AVX512BF16 implies GN_HAVE_AVX512 */
        *b = gn_avx512::backward;
        return;
#endif
#ifdef GN_HAVE_AVX512
    case GN_ISA_AVX512: *f = gn_avx512::forward; *b = gn_avx512::backward; return;
#endif
#ifdef GN_HAVE_AVX2
    case GN_ISA_AVX2: *f = gn_avx2::forward; *b = gn_avx2::backward; return;
#endif
    default: *f = gn_base::forward; *b = gn_base::backward; return;
    }
}

/* ---------------------------------------------------------------- cache sizes */
/* "32K", "1024K", "32M", "512" -> bytes (0 if unreadable) */
static int64_t parse_size(const char *s) {
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (end == s || v <= 0) return 0;
    if (*end == 'K' || *end == 'k') v <<= 10;
    else if (*end == 'M' || *end == 'm') v <<= 20;
    else if (*end == 'G' || *end == 'g') v <<= 30;
    return (int64_t)v;
}
static int read_line(const char *path, char *buf, size_t n) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    const int ok = fgets(buf, (int)n, f) != NULL;
    fclose(f);
    return ok;
}
/* /sys first: glibc's sysconf reports AMD's L3 as the whole package's (320 MiB on a VM whose cores see 32 MiB) */
static void detect_caches(int64_t c[3]) {
    c[0] = c[1] = c[2] = 0;
    for (int i = 0; i < 16; ++i) {
        char path[96], level[16], type[32], size[32];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/level", i);
        if (!read_line(path, level, sizeof level)) break;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/type", i);
        if (!read_line(path, type, sizeof type) || strncmp(type, "Instruction", 11) == 0) continue;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
        if (!read_line(path, size, sizeof size)) continue;
        const int lv = atoi(level);
        const int64_t bytes = parse_size(size);
        if (lv >= 1 && lv <= 3 && bytes > 0) c[lv - 1] = bytes;
        else if (lv > 3 && bytes > c[2]) c[2] = bytes; /* an L4 is the last level */
    }
#if defined(_SC_LEVEL1_DCACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE) && defined(_SC_LEVEL3_CACHE_SIZE)
    const int names[3] = {_SC_LEVEL1_DCACHE_SIZE, _SC_LEVEL2_CACHE_SIZE, _SC_LEVEL3_CACHE_SIZE};
    for (int l = 0; l < 3; ++l)
        if (c[l] <= 0) {
            const long v = sysconf(names[l]);
            c[l] = v > 0 ? (int64_t)v : 0;
        }
#endif
    const int64_t fallback[3] = {32 << 10, 1 << 20, 8 << 20};
    for (int l = 0; l < 3; ++l)
        if (c[l] < 4096 || c[l] > ((int64_t)1 << 40)) c[l] = fallback[l];
    if (c[2] < c[1]) c[2] = c[1]; /* no L3: the L2 is the last level */
}
static int64_t g_cache_override[3] = {0, 0, 0};

void gn_get_cache_sizes(int64_t out[3]) {
    static int64_t detected[3];
    static int once = (detect_caches(detected), 1); /* thread-safe initialization (C++11) */
    (void)once;
    for (int l = 0; l < 3; ++l) {
        const int64_t o = __atomic_load_n(&g_cache_override[l], __ATOMIC_RELAXED);
        out[l] = o > 0 ? o : detected[l];
    }
}

int gn_set_cache_sizes(int64_t l1, int64_t l2, int64_t l3) {
    const int64_t v[3] = {l1, l2, l3};
    for (int l = 0; l < 3; ++l) __atomic_store_n(&g_cache_override[l], v[l] > 0 ? v[l] : 0, __ATOMIC_RELAXED);
    return GN_OK;
}

/* ---------------------------------------------------------------- argument checks and calls */
static int check_shape(const gn_shape *sh) {
    const int64_t N = sh->N, C = sh->C, S = sh->S, G = sh->G;
    if (sh->dtype < GN_F32 || sh->dtype > GN_F16 || sh->layout < GN_LAYOUT_NCS || sh->layout > GN_LAYOUT_NSC)
        return GN_EINVAL;
    if (sh->act < GN_ACT_NONE || sh->act > GN_ACT_GELU || sh->nthreads < 1) return GN_EINVAL;
    if (N < 1 || C < 1 || S < 1 || G < 1 || C % G != 0) return GN_EINVAL;
    /* N * C * S (and the workspaces derived from it) must not overflow */
    const int64_t lim = INT64_MAX / 64;
    if (C > lim / N || S > lim / (N * C)) return GN_EINVAL;
    return GN_OK;
}

int gn_forward(const gn_fwd_args *a) {
    if (!a) return GN_EINVAL;
    int e = check_shape(&a->sh);
    if (e) return e;
    if (!a->x || !a->y || !(a->eps >= 0.0) || isinf(a->eps)) return GN_EINVAL;
    if (!a->mean != !a->rstd) return GN_EINVAL;
    fwd_fn f;
    bwd_fn bw;
    pick(a->sh.dtype, &f, &bw);
    if (a->mean) return f(a);
    /* statistics not wanted (inference): the kernels still write them, into a scratch buffer */
    const int64_t ng = a->sh.N * a->sh.G;
    double *scratch = (double *)malloc((size_t)(2 * ng) * sizeof(double));
    if (!scratch) return GN_ENOMEM;
    gn_fwd_args with_stats = *a;
    with_stats.mean = scratch;
    with_stats.rstd = scratch + ng;
    e = f(&with_stats);
    free(scratch);
    return e;
}

int gn_backward(const gn_bwd_args *a) {
    if (!a) return GN_EINVAL;
    int e = check_shape(&a->sh);
    if (e) return e;
    if (!a->dy || !a->x || !a->mean || !a->rstd) return GN_EINVAL;
    /* a residual needs dr for dv, and dr needs the residual */
    if (a->sh.act != GN_ACT_NONE && !a->r != !a->dr) return GN_EINVAL;
    fwd_fn f;
    bwd_fn bw;
    pick(a->sh.dtype, &f, &bw);
    return bw(a);
}

}  /* extern "C" */
