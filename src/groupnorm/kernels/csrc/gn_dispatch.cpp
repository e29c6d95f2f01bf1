/* The exported C ABI: argument checks, then the kernels of the best instruction-set level this CPU runs
 * (chosen once; gn_set_isa can force a lower one, e.g. to test the fallback paths). */
#include <limits.h>
#include <math.h>
#include <stdint.h>

#include "gn_api.h"

#define GN_DECLARE(ns)                                                                                         \
    namespace ns {                                                                                             \
    int forward(int, int, int64_t, int64_t, int64_t, int64_t, const void *, const void *, const void *, double, \
                int, void *, double *, double *, int);                                                         \
    int backward(int, int, int64_t, int64_t, int64_t, int64_t, const void *, const void *, const double *,     \
                 const double *, const void *, const void *, int, void *, void *, void *, int);              \
    }
/* GN_WITH_X86_LEVELS: all levels linked in (the package build); the sanitizer test links a subset. */
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

typedef int (*fwd_fn)(int, int, int64_t, int64_t, int64_t, int64_t, const void *, const void *, const void *, double,
                      int, void *, double *, double *, int);
typedef int (*bwd_fn)(int, int, int64_t, int64_t, int64_t, int64_t, const void *, const void *, const double *,
                      const double *, const void *, const void *, int, void *, void *, void *, int);

static int g_level = -1;

static int cpu_max_level(void) {
#if defined(GN_HAVE_AVX2) || defined(GN_HAVE_AVX512)
    __builtin_cpu_init();
#endif
#ifdef GN_HAVE_AVX512
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("bmi2"))
        return GN_ISA_AVX512;
#endif
#ifdef GN_HAVE_AVX2
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi") &&
        __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("movbe"))
        return GN_ISA_AVX2;
#endif
    return GN_ISA_BASE;
}

extern "C" {

int gn_abi_version(void) { return 1; }

int gn_max_compiled_isa(void) {
#if defined(GN_HAVE_AVX512)
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
#ifdef GN_HAVE_AVX512
    case GN_ISA_AVX512: *f = gn_avx512::forward; *b = gn_avx512::backward; return;
#endif
#ifdef GN_HAVE_AVX2
    case GN_ISA_AVX2: *f = gn_avx2::forward; *b = gn_avx2::backward; return;
#endif
    default: *f = gn_base::forward; *b = gn_base::backward; return;
    }
}

static int check_shape(int dtype, int layout, int64_t N, int64_t C, int64_t S, int64_t G, int act, int nthreads) {
    if (dtype < GN_F32 || dtype > GN_F16 || layout < GN_LAYOUT_NCS || layout > GN_LAYOUT_NSC) return GN_EINVAL;
    if (act < GN_ACT_NONE || act > GN_ACT_GELU || nthreads < 1) return GN_EINVAL;
    if (N < 1 || C < 1 || S < 1 || G < 1 || C % G != 0) return GN_EINVAL;
    /* N * C * S (and the workspaces derived from it) must not overflow */
    const int64_t lim = INT64_MAX / 64;
    if (C > lim / N || S > lim / (N * C)) return GN_EINVAL;
    return GN_OK;
}

int gn_forward(int dtype, int layout, int64_t N, int64_t C, int64_t S, int64_t G, const void *x, const void *w,
               const void *b, double eps, int act, void *y, double *mean, double *rstd, int nthreads) {
    int e = check_shape(dtype, layout, N, C, S, G, act, nthreads);
    if (e) return e;
    if (!x || !y || !mean || !rstd || !(eps >= 0.0) || isinf(eps)) return GN_EINVAL;
    fwd_fn f;
    bwd_fn bw;
    pick(dtype, &f, &bw);
    return f(dtype, layout, N, C, S, G, x, w, b, eps, act, y, mean, rstd, nthreads);
}

int gn_backward(int dtype, int layout, int64_t N, int64_t C, int64_t S, int64_t G, const void *dy, const void *x,
                const double *mean, const double *rstd, const void *w, const void *b, int act, void *dx, void *dw,
                void *db, int nthreads) {
    int e = check_shape(dtype, layout, N, C, S, G, act, nthreads);
    if (e) return e;
    if (!dy || !x || !mean || !rstd) return GN_EINVAL;
    fwd_fn f;
    bwd_fn bw;
    pick(dtype, &f, &bw);
    return bw(dtype, layout, N, C, S, G, dy, x, mean, rstd, w, b, act, dx, dw, db, nthreads);
}

}  /* extern "C" */
