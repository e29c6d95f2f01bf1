/* The library as the Python module groupnorm.kernels._gn_kernels: gn_api.h's functions for Python, taking
 * data pointers as ints (None for NULL). METH_FASTCALL and the GIL released around the kernels: a call costs
 * ~0.5 us. groupnorm/kernels/_lib.py is the only caller; it checks abi_version() once on import.
 *
 *   forward(dtype, layout, N, C, S, G, x, w, b, r, eps, act, y, mean, rstd, nthreads) -> int (gn_forward's code)
 *   backward(dtype, layout, N, C, S, G, dy, x, r, dr, mean, rstd, w, b, act, dx, dw, db, nthreads) -> int
 *   abi_version() / get_isa() / max_compiled_isa() -> int;  set_isa(level) -> int (gn_set_isa's result)
 *   cache_sizes() -> (l1, l2, l3) bytes;  set_cache_sizes(l1, l2, l3) (<= 0: the detected size)
 *   group_norm(x, num_groups, weight, bias, eps, activation, residual) -> Tensor: groupnorm::group_norm called
 *       unboxed (gn_torch_ops.cpp defines it; groupnorm.kernels.route hands it to functional.group_norm)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h> /* first, as Python asks */
#include <limits.h>
#include <stdint.h>

#include "gn_api.h"

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
/* the first six arguments of both calls: dtype, layout, N, C, S, G (act and nthreads come later) */
static int py_shape(PyObject *const *a, gn_shape *sh) {
    return py_int(a[0], &sh->dtype) || py_int(a[1], &sh->layout) || py_i64(a[2], &sh->N) || py_i64(a[3], &sh->C) ||
           py_i64(a[4], &sh->S) || py_i64(a[5], &sh->G);
}

static PyObject *py_forward(PyObject *, PyObject *const *a, Py_ssize_t na) {
    if (na != 16) { PyErr_Format(PyExc_TypeError, "forward takes 16 arguments, got %zd", na); return NULL; }
    gn_fwd_args f;
    void *x, *w, *b, *r, *m, *rs;
    if (py_shape(a, &f.sh) || py_ptr(a[6], &x) || py_ptr(a[7], &w) || py_ptr(a[8], &b) || py_ptr(a[9], &r) ||
        py_int(a[11], &f.sh.act) || py_ptr(a[12], &f.y) || py_ptr(a[13], &m) || py_ptr(a[14], &rs) ||
        py_int(a[15], &f.sh.nthreads))
        return NULL;
    f.eps = PyFloat_AsDouble(a[10]);
    if (f.eps == -1.0 && PyErr_Occurred()) return NULL;
    f.x = x; f.w = w; f.b = b; f.r = r;
    f.mean = (double *)m; f.rstd = (double *)rs;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = gn_forward(&f);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(rc);
}

static PyObject *py_backward(PyObject *, PyObject *const *a, Py_ssize_t na) {
    if (na != 19) { PyErr_Format(PyExc_TypeError, "backward takes 19 arguments, got %zd", na); return NULL; }
    gn_bwd_args g;
    void *dy, *x, *r, *m, *rs, *w, *b;
    if (py_shape(a, &g.sh) || py_ptr(a[6], &dy) || py_ptr(a[7], &x) || py_ptr(a[8], &r) || py_ptr(a[9], &g.dr) ||
        py_ptr(a[10], &m) || py_ptr(a[11], &rs) || py_ptr(a[12], &w) || py_ptr(a[13], &b) ||
        py_int(a[14], &g.sh.act) || py_ptr(a[15], &g.dx) || py_ptr(a[16], &g.dw) || py_ptr(a[17], &g.db) ||
        py_int(a[18], &g.sh.nthreads))
        return NULL;
    g.dy = dy; g.x = x; g.r = r; g.w = w; g.b = b;
    g.mean = (const double *)m; g.rstd = (const double *)rs;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = gn_backward(&g);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(rc);
}

static PyObject *py_abi_version(PyObject *, PyObject *) { return PyLong_FromLong(gn_abi_version()); }
static PyObject *py_get_isa(PyObject *, PyObject *) { return PyLong_FromLong(gn_get_isa()); }
static PyObject *py_max_compiled_isa(PyObject *, PyObject *) { return PyLong_FromLong(gn_max_compiled_isa()); }
static PyObject *py_set_isa(PyObject *, PyObject *arg) {
    int level;
    if (py_int(arg, &level)) return NULL;
    return PyLong_FromLong(gn_set_isa(level));
}

static PyObject *py_cache_sizes(PyObject *, PyObject *) {
    int64_t c[3];
    gn_get_cache_sizes(c);
    return Py_BuildValue("(LLL)", (long long)c[0], (long long)c[1], (long long)c[2]);
}
static PyObject *py_set_cache_sizes(PyObject *, PyObject *const *a, Py_ssize_t na) {
    if (na != 3) { PyErr_Format(PyExc_TypeError, "set_cache_sizes takes 3 arguments, got %zd", na); return NULL; }
    int64_t v[3];
    if (py_i64(a[0], &v[0]) || py_i64(a[1], &v[1]) || py_i64(a[2], &v[2])) return NULL;
    return PyLong_FromLong(gn_set_cache_sizes(v[0], v[1], v[2]));
}

/* defined in gn_torch_ops.cpp (the unit with PyTorch's headers): the entry operator, called unboxed */
extern "C" PyObject *gn_py_group_norm(PyObject *, PyObject *const *, Py_ssize_t);

static PyMethodDef gn_methods[] = {
    {"group_norm", (PyCFunction)(void (*)(void))gn_py_group_norm, METH_FASTCALL,
     "group_norm(x, num_groups, weight, bias, eps, activation, residual): the operator groupnorm::group_norm"},
    {"forward", (PyCFunction)(void (*)(void))py_forward, METH_FASTCALL, "gn_forward of gn_api.h"},
    {"backward", (PyCFunction)(void (*)(void))py_backward, METH_FASTCALL, "gn_backward of gn_api.h"},
    {"abi_version", py_abi_version, METH_NOARGS, "GN_ABI_VERSION of the library's build"},
    {"set_isa", py_set_isa, METH_O, "gn_set_isa: -1 for the best level; returns the level or a negative error"},
    {"get_isa", py_get_isa, METH_NOARGS, "gn_get_isa: the instruction-set level in use"},
    {"max_compiled_isa", py_max_compiled_isa, METH_NOARGS, "the highest level compiled into the library"},
    {"cache_sizes", py_cache_sizes, METH_NOARGS, "gn_get_cache_sizes: (L1 data, L2, last level) in bytes"},
    {"set_cache_sizes", (PyCFunction)(void (*)(void))py_set_cache_sizes, METH_FASTCALL,
     "gn_set_cache_sizes(l1, l2, l3): override the sizes the blocking uses (<= 0: the detected one)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef gn_module = {PyModuleDef_HEAD_INIT, "_gn_kernels", "groupnorm compiled kernels", -1,
                                       gn_methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__gn_kernels(void) { return PyModule_Create(&gn_module); }
