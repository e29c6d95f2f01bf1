/* The compiled kernels as PyTorch operators, registered from C++ (TORCH_LIBRARY): the thin unit that knows
 * PyTorch (the kernels behind gn_api.h know nothing of it).
 *
 *   groupnorm::gn_forward(Tensor x, int num_groups, Tensor? weight, Tensor? bias, float eps, int activation,
 *                         Tensor? residual=None) -> (Tensor y, Tensor mean, Tensor rstd)
 *       y = act((x - mean) * rstd * weight + bias [+ residual]); x is (N, C, *spatial), y has x's shape, dtype and
 *       strides; mean, rstd are float64 (N, G); activation is gn_api.h's GN_ACT_* code (groupnorm.args).
 *   groupnorm::gn_backward(Tensor dy, Tensor x, Tensor mean, Tensor rstd, Tensor? weight, Tensor? bias,
 *                          int num_groups, int activation, bool need_dx, bool need_dw, bool need_db,
 *                          Tensor? residual=None) -> (Tensor dx, Tensor dweight, Tensor dbias, Tensor dv)
 *       an output not needed is undefined (None in Python), as for aten::native_group_norm_backward;
 *       dv = dy * act'(pre-activation), the residual's gradient, is returned with a residual and an
 *       activation (else undefined: with no activation the residual's gradient is dy).
 *   groupnorm::gn_plain(same arguments as gn_forward) -> Tensor y
 *       the plain path from torch's own operators (CompositeImplicitAutograd, below; any device);
 *       the differentiable formula a create_graph=True backward goes through (double backward).
 *   groupnorm::group_norm(same arguments as gn_forward) -> Tensor y
 *       the one entry of eager calls: gn_forward's y where the kernels take the call (kernel_takes), else
 *       gn_plain (CompositeImplicitAutograd: what it calls records the graph).
 *   groupnorm::kernel_takes(Tensor x, Tensor? weight, Tensor? bias, Tensor? residual) -> bool
 *       group_norm's predicate, for introspection (groupnorm.kernels.kernel_takes).
 *
 * The pieces, one topic per header included below: gn_ops_messages.h, gn_ops_checks.h, gn_ops_layout.h,
 * gn_ops_cpu.h, gn_ops_meta.h, gn_ops_plain.h, gn_ops_autograd.h; this file keeps the one entry
 * (group_norm, kernel_takes, the GROUPNORM_DISABLE_KERNELS switch), its CPython binding and the registration.
 *
 * Kernels: CPU (the C API), Meta (shapes only: fake tensors and torch.compile) and Autograd (gn_forward's
 * backward node, GNBackward in gn_ops_autograd.h: the C backward, or gn_plain's graph when the backward itself
 * is recorded).
 * Every operator checks its arguments and raises TypeError / ValueError naming the bad value, so a bad call
 * never reaches the compiled code. */
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/pybind.h>
#include <torch/library.h>

#include <cctype>
#include <cstdlib>
#include <string>
#include <tuple>

#include "gn_api.h"
#include "gn_ops_messages.h"  /* Python-style message pieces; the names below */
#include "gn_ops_checks.h"    /* argument checks */
#include "gn_ops_layout.h"    /* the two memory layouts */
#include "gn_ops_cpu.h"       /* CPU kernels: the C API */
#include "gn_ops_meta.h"      /* Meta kernels: shapes only */
#include "gn_ops_plain.h"     /* gn_plain: torch's operators, the large-mean shift */
#include "gn_ops_autograd.h"  /* gn_forward's backward node */

namespace {

/* ------------------------------------------------------------------------------------ the one entry */
/* GROUPNORM_DISABLE_KERNELS set to 1 / true / yes / on (any case, surrounding blanks ignored), read at every call
 * as groupnorm.kernels.disabled() reads it (Python's os.environ writes through to the C environment). */
bool kernels_disabled() {
    const char* v = std::getenv("GROUPNORM_DISABLE_KERNELS");
    if (v == nullptr) return false;
    std::string s(v);
    const auto first = s.find_first_not_of(" \t\n\r\f\v");
    if (first == std::string::npos) return false;
    s = s.substr(first, s.find_last_not_of(" \t\n\r\f\v") - first + 1);
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s == "1" || s == "true" || s == "yes" || s == "on";
}

/* Whether the kernels take the call (the one predicate; groupnorm.kernels.kernel_takes asks it): x a non-empty
 * dense CPU tensor of a kernel dtype, weight / bias / residual absent or dense CPU tensors of x's dtype, the
 * switch not set. */
bool kernel_takes(const Tensor& x, const optional<Tensor>& w, const optional<Tensor>& b, const optional<Tensor>& r) {
    if (!x.is_cpu() || x.layout() != at::kStrided || !kernel_dtype(x.scalar_type()) || x.sym_numel() == 0)
        return false;
    for (const optional<Tensor>* p : {&w, &b, &r})
        if (p->has_value() && (!(*p)->is_cpu() || (*p)->layout() != at::kStrided ||
                               (*p)->scalar_type() != x.scalar_type()))
            return false;
    return !kernels_disabled();
}

/* groupnorm::group_norm: the kernels' operator where they take the call, else the plain path's; one dispatcher
 * entry from Python. CompositeImplicitAutograd: the operator it calls records the graph. */
Tensor group_norm_entry(const Tensor& x, int64_t G, const optional<Tensor>& w, const optional<Tensor>& b,
                        double eps, int64_t act, const optional<Tensor>& r) {
    if (kernel_takes(x, w, b, r)) return std::get<0>(forward_op().call(x, G, w, b, eps, act, r));
    return plain_composite(x, G, w, b, eps, act, r);
}

using entry_fn = plain_fn;

const c10::TypedOperatorHandle<entry_fn>& entry_op() {
    static const auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("groupnorm::group_norm", "").typed<entry_fn>();
    return op;
}

}  // namespace

/* groupnorm.kernels._gn_kernels.group_norm(x, num_groups, weight, bias, eps, activation, residual) -> y: the entry
 * operator for Python, called unboxed. An operator called through its OpOverload goes the boxed way (each
 * argument converted to an IValue, Dispatcher::callBoxed, unboxed again: ~2-3 us), which torch's own generated
 * bindings do not pay; this is what groupnorm.kernels.route hands functional.group_norm for plain tensors in
 * eager mode. The same operator call (dispatcher, autograd, modes) after the arguments are read; the GIL is
 * released around it, as torch's bindings do; errors become the Python exceptions torch raises (ValueError /
 * TypeError from the checks). Registered in gn_python.cpp's method table. */
extern "C" PyObject* gn_py_group_norm(PyObject*, PyObject* const* a, Py_ssize_t na) {
    HANDLE_TH_ERRORS
    if (na != 7) {
        PyErr_Format(PyExc_TypeError, "group_norm takes 7 arguments, got %zd", na);
        return nullptr;
    }
    auto tensor = [](PyObject* o, const char* name) -> optional<Tensor> {
        if (o == Py_None) return std::nullopt;
        TORCH_CHECK_TYPE(THPVariable_Check(o), name, " must be a torch.Tensor or None, got ", Py_TYPE(o)->tp_name);
        return THPVariable_Unpack(o);
    };
    TORCH_CHECK_TYPE(THPVariable_Check(a[0]), "group_norm expects a torch.Tensor, got ", Py_TYPE(a[0])->tp_name);
    const Tensor& x = THPVariable_Unpack(a[0]);
    const optional<Tensor> w = tensor(a[2], "weight"), b = tensor(a[3], "bias"), r = tensor(a[6], "residual");
    const long long G = PyLong_AsLongLong(a[1]);
    if (G == -1 && PyErr_Occurred()) return nullptr;
    const double eps = PyFloat_AsDouble(a[4]);
    if (eps == -1.0 && PyErr_Occurred()) return nullptr;
    const long long act = PyLong_AsLongLong(a[5]);
    if (act == -1 && PyErr_Occurred()) return nullptr;
    Tensor y;
    {
        pybind11::gil_scoped_release no_gil;
        y = entry_op().call(x, G, w, b, eps, act, r);
    }
    return THPVariable_Wrap(std::move(y));
    END_HANDLE_TH_ERRORS
}

TORCH_LIBRARY(groupnorm, m) {
    m.def("gn_forward(Tensor x, int num_groups, Tensor? weight, Tensor? bias, float eps, int activation, "
          "Tensor? residual=None) -> (Tensor, Tensor, Tensor)");
    m.def("gn_backward(Tensor dy, Tensor x, Tensor mean, Tensor rstd, Tensor? weight, Tensor? bias, int num_groups, "
          "int activation, bool need_dx, bool need_dw, bool need_db, Tensor? residual=None) "
          "-> (Tensor, Tensor, Tensor, Tensor)");
    m.def("gn_plain(Tensor x, int num_groups, Tensor? weight, Tensor? bias, float eps, int activation, "
          "Tensor? residual=None) -> Tensor");
    m.def("group_norm(Tensor x, int num_groups, Tensor? weight, Tensor? bias, float eps, int activation, "
          "Tensor? residual=None) -> Tensor");
    m.def("kernel_takes(Tensor x, Tensor? weight, Tensor? bias, Tensor? residual) -> bool");
}

TORCH_LIBRARY_IMPL(groupnorm, CPU, m) {
    m.impl("gn_forward", forward_cpu);
    m.impl("gn_backward", backward_cpu);
}

TORCH_LIBRARY_IMPL(groupnorm, Meta, m) {
    m.impl("gn_forward", forward_meta);
    m.impl("gn_backward", backward_meta);
}

TORCH_LIBRARY_IMPL(groupnorm, CompositeImplicitAutograd, m) {
    m.impl("gn_plain", plain_composite);
    m.impl("group_norm", group_norm_entry);
    m.impl("kernel_takes", kernel_takes);
}

TORCH_LIBRARY_IMPL(groupnorm, Autograd, m) {
    m.impl("gn_forward", forward_autograd);
    m.impl("gn_backward", backward_autograd);
}
