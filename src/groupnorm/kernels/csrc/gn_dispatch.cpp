/* The exported C ABI: argument checks, then the kernels of the best instruction-set level this CPU runs
 * (chosen once; gn_set_isa can force a lower one, e.g. to test the fallback paths).
 *
 * Built as the package's extension (Python's headers on the include path), the library is also a Python
 * module with `forward` / `backward` functions taking the C ABI's arguments as Python ints / floats / None:
 * a call costs ~0.5 us instead of ctypes' ~5 us for 15 arguments. Elsewhere (the sanitizer test) it is the
 * plain C library, and ctypes stays the fallback. */
#if defined(__has_include) && !defined(GN_NO_PYTHON)
#if __has_include(<Python.h>)
#define GN_PYTHON_MODULE 1
#define PY_SSIZE_T_CLEAN
#include <Python.h> /* first, as Python asks */
#endif
#endif
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "gn_api.h"

#define GN_DECLARE(ns)                                                                                         \
    namespace ns {                                                                                             \
    int forward(int, int, int64_t, int64_t, int64_t, int64_t, const void *, const void *, const void *,        \
                const void *, double, int, void *, double *, double *, int);                                   \
    int backward(int, int, int64_t, int64_t, int64_t, int64_t, const void *, const void *, const void *, void *, \
                 const double *, const double *, const void *, const void *, int, void *, void *, void *, int); \
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

typedef int (*fwd_fn)(int, int, int64_t, int64_t, int64_t, int64_t, const void *, const void *, const void *,
                      const void *, double, int, void *, double *, double *, int);
typedef int (*bwd_fn)(int, int, int64_t, int64_t, int64_t, int64_t, const void *, const void *, const void *, void *,
                      const double *, const double *, const void *, const void *, int, void *, void *, void *, int);

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

int gn_abi_version(void) { return 2; }

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
               const void *b, const void *r, double eps, int act, void *y, double *mean, double *rstd, int nthreads) {
    int e = check_shape(dtype, layout, N, C, S, G, act, nthreads);
    if (e) return e;
    if (!x || !y || !(eps >= 0.0) || isinf(eps)) return GN_EINVAL;
    if (!mean != !rstd) return GN_EINVAL;
    fwd_fn f;
    bwd_fn bw;
    pick(dtype, &f, &bw);
    if (mean) return f(dtype, layout, N, C, S, G, x, w, b, r, eps, act, y, mean, rstd, nthreads);
    /* statistics not wanted (inference): the kernels still write them, into a scratch buffer */
    double *scratch = (double *)malloc((size_t)(2 * N * G) * sizeof(double));
    if (!scratch) return GN_ENOMEM;
    e = f(dtype, layout, N, C, S, G, x, w, b, r, eps, act, y, scratch, scratch + N * G, nthreads);
    free(scratch);
    return e;
}

int gn_backward(int dtype, int layout, int64_t N, int64_t C, int64_t S, int64_t G, const void *dy, const void *x,
                const void *r, void *dr, const double *mean, const double *rstd, const void *w, const void *b, int act,
                void *dx, void *dw, void *db, int nthreads) {
    int e = check_shape(dtype, layout, N, C, S, G, act, nthreads);
    if (e) return e;
    if (!dy || !x || !mean || !rstd) return GN_EINVAL;
    if (act != GN_ACT_NONE && !r != !dr) return GN_EINVAL; /* a residual needs dr for dv, and dr needs r */
    fwd_fn f;
    bwd_fn bw;
    pick(dtype, &f, &bw);
    return bw(dtype, layout, N, C, S, G, dy, x, r, dr, mean, rstd, w, b, act, dx, dw, db, nthreads);
}

}  /* extern "C" */

#ifdef GN_PYTHON_MODULE
/* ---------------------------------------------------------------- Python entry points (see the top) */
static int py_i64(PyObject *o, int64_t *v) {
    long long r = PyLong_AsLongLong(o);
    if (r == -1 && PyErr_Occurred()) return -1;
    *v = (int64_t)r;
    return 0;
}
static int py_int(PyObject *o, int *v) {
    long r = PyLong_AsLong(o);
    if (r == -1 && PyErr_Occurred()) return -1;
    if (r < INT_MIN || r > INT_MAX) { PyErr_SetString(PyExc_OverflowError, "int argument out of range"); return -1; }
    *v = (int)r;
    return 0;
}
static int py_ptr(PyObject *o, void **p) { /* None -> NULL, else an address as an int */
    if (o == Py_None) { *p = NULL; return 0; }
    *p = PyLong_AsVoidPtr(o);
    return (*p == NULL && PyErr_Occurred()) ? -1 : 0;
}

/* forward(dtype, layout, N, C, S, G, x, w, b, r, eps, act, y, mean, rstd, nthreads) -> int (gn_forward's code) */
static PyObject *py_forward(PyObject *, PyObject *const *a, Py_ssize_t na) {
    if (na != 16) { PyErr_Format(PyExc_TypeError, "forward takes 16 arguments, got %zd", na); return NULL; }
    int dt, lay, act, nt;
    int64_t N, C, S, G;
    void *x, *w, *b, *res, *y, *m, *rs;
    if (py_int(a[0], &dt) || py_int(a[1], &lay) || py_i64(a[2], &N) || py_i64(a[3], &C) || py_i64(a[4], &S) ||
        py_i64(a[5], &G) || py_ptr(a[6], &x) || py_ptr(a[7], &w) || py_ptr(a[8], &b) || py_ptr(a[9], &res) ||
        py_int(a[11], &act) || py_ptr(a[12], &y) || py_ptr(a[13], &m) || py_ptr(a[14], &rs) || py_int(a[15], &nt))
        return NULL;
    double eps = PyFloat_AsDouble(a[10]);
    if (eps == -1.0 && PyErr_Occurred()) return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = gn_forward(dt, lay, N, C, S, G, x, w, b, res, eps, act, y, (double *)m, (double *)rs, nt);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(rc);
}

/* backward(dtype, layout, N, C, S, G, dy, x, r, dr, mean, rstd, w, b, act, dx, dw, db, nthreads) -> int */
static PyObject *py_backward(PyObject *, PyObject *const *a, Py_ssize_t na) {
    if (na != 19) { PyErr_Format(PyExc_TypeError, "backward takes 19 arguments, got %zd", na); return NULL; }
    int dt, lay, act, nt;
    int64_t N, C, S, G;
    void *dy, *x, *res, *dres, *m, *rs, *w, *b, *dx, *dw, *db;
    if (py_int(a[0], &dt) || py_int(a[1], &lay) || py_i64(a[2], &N) || py_i64(a[3], &C) || py_i64(a[4], &S) ||
        py_i64(a[5], &G) || py_ptr(a[6], &dy) || py_ptr(a[7], &x) || py_ptr(a[8], &res) || py_ptr(a[9], &dres) ||
        py_ptr(a[10], &m) || py_ptr(a[11], &rs) || py_ptr(a[12], &w) || py_ptr(a[13], &b) || py_int(a[14], &act) ||
        py_ptr(a[15], &dx) || py_ptr(a[16], &dw) || py_ptr(a[17], &db) || py_int(a[18], &nt))
        return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = gn_backward(dt, lay, N, C, S, G, dy, x, res, dres, (const double *)m, (const double *)rs, w, b, act, dx, dw,
                     db, nt);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(rc);
}

static PyMethodDef gn_methods[] = {
    {"forward", (PyCFunction)(void (*)(void))py_forward, METH_FASTCALL, "gn_forward of gn_api.h"},
    {"backward", (PyCFunction)(void (*)(void))py_backward, METH_FASTCALL, "gn_backward of gn_api.h"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef gn_module = {PyModuleDef_HEAD_INIT, "_gn_kernels", "groupnorm compiled kernels", -1,
                                       gn_methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__gn_kernels(void) { return PyModule_Create(&gn_module); }
#endif /* GN_PYTHON_MODULE */
