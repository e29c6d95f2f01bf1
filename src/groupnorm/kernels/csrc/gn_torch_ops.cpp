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
 * Kernels: CPU (the C API), Meta (shapes only: fake tensors and torch.compile) and Autograd (gn_forward's
 * backward node, GNBackward below: the C backward, or gn_plain's graph when the backward itself is recorded).
 * Every operator checks its arguments and raises TypeError / ValueError naming the bad value, so a bad call
 * never reaches the compiled code. */
#include <ATen/Parallel.h>
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/group_norm.h>
#include <ATen/ops/native_group_norm.h>
#include <ATen/ops/relu.h>
#include <ATen/ops/silu.h>
#include <ATen/ops/sub.h>
#include <ATen/ops/add.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/irange.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/csrc/utils/pybind.h>
#include <torch/library.h>

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "gn_api.h"

namespace {

using at::Tensor;
using c10::SymInt;
using std::optional;
using torch::autograd::variable_list;

/* ------------------------------------------------------------------------------------ messages, Python-style */
std::string dtype_name(c10::ScalarType t) {
    switch (t) {
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kHalf: return "torch.float16";
    case at::kLong: return "torch.int64";
    case at::kInt: return "torch.int32";
    case at::kShort: return "torch.int16";
    case at::kChar: return "torch.int8";
    case at::kByte: return "torch.uint8";
    case at::kBool: return "torch.bool";
    case at::kComplexFloat: return "torch.complex64";
    case at::kComplexDouble: return "torch.complex128";
    default: return std::string("torch.") + c10::toString(t);
    }
}

std::string shape_str(c10::SymIntArrayRef s) {
    std::ostringstream o;
    o << "(";
    for (const auto i : c10::irange(s.size())) o << (i ? ", " : "") << s[i];
    o << (s.size() == 1 ? ",)" : ")");
    return o.str();
}

std::string float_repr(double v) { /* Python's repr of a float: shortest round trip, "1.0" not "1" */
    if (std::isnan(v)) return "nan";
    if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
    char buf[40];
    for (int p = 1; p <= 17; ++p) {
        std::snprintf(buf, sizeof buf, "%.*g", p, v);
        if (std::strtod(buf, nullptr) == v) break;
    }
    std::string s(buf);
    if (s.find_first_of(".e") == std::string::npos) s += ".0";
    return s;
}

/* ------------------------------------------------------------------------------------ argument checks */
bool kernel_dtype(c10::ScalarType t) {
    return t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf;
}

int dtype_code(c10::ScalarType t) {
    return t == at::kFloat ? GN_F32 : t == at::kDouble ? GN_F64 : t == at::kBFloat16 ? GN_BF16 : GN_F16;
}

void check_tensor(const Tensor& t, const char* name, const Tensor& x) {
    TORCH_CHECK_VALUE(t.layout() == at::kStrided, name, " must be a dense (strided) tensor, got layout ", t.layout());
    TORCH_CHECK_VALUE(t.device() == x.device(), name, " is on ", t.device(), " but x is on ", x.device());
    TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type(), name, " has dtype ", dtype_name(t.scalar_type()),
                     " but x has dtype ", dtype_name(x.scalar_type()), "; they must match");
}

/* The checks both operators make, with groupnorm.functional's messages: G against C (x's channels), the
 * shapes of weight / bias, eps and the activation code. */
void check_args(const SymInt& C, int64_t G, const optional<Tensor>& w, const optional<Tensor>& b, double eps,
                int64_t act) {
    TORCH_CHECK_VALUE(G >= 1, "num_groups must be a positive integer, got num_groups=", G);
    TORCH_CHECK_VALUE(C % G == 0, "num_groups=", G, " does not divide num_channels=", C);
    for (const auto& [p, name] : {std::pair{&w, "weight"}, std::pair{&b, "bias"}}) {
        if (!p->has_value()) continue;
        const Tensor& t = **p;
        TORCH_CHECK_VALUE(t.dim() == 1 && t.sym_size(0) == C, name, " must have shape (", C,
                          ",) for an input with ", C, " channels, got ", shape_str(t.sym_sizes()));
    }
    TORCH_CHECK_VALUE(eps >= 0 && std::isfinite(eps), "eps must be a finite non-negative number, got eps=",
                      float_repr(eps));
    TORCH_CHECK_VALUE(act >= GN_ACT_NONE && act <= GN_ACT_GELU, "activation must be a code ", int(GN_ACT_NONE), "..",
                      int(GN_ACT_GELU), " of groupnorm.args.ACTIVATION_CODES, got activation=", act);
}

void check_forward(const Tensor& x, int64_t G, const optional<Tensor>& w, const optional<Tensor>& b, double eps,
                   int64_t act, const optional<Tensor>& r) {
    TORCH_CHECK_VALUE(x.device().is_cpu() || x.device().is_meta(),
                      "groupnorm kernels run on CPU only; x is on ", x.device());
    TORCH_CHECK_VALUE(x.layout() == at::kStrided, "x must be a dense (strided) tensor, got layout ", x.layout());
    TORCH_CHECK_TYPE(kernel_dtype(x.scalar_type()), "x has dtype ", dtype_name(x.scalar_type()),
                     "; the kernels support torch.float32, torch.float64, torch.bfloat16, torch.float16");
    const auto sizes = x.sym_sizes();
    TORCH_CHECK_VALUE(sizes.size() >= 2, "x must have shape (N, C, *spatial) with rank >= 2, got shape ",
                      shape_str(sizes));
    TORCH_CHECK_VALUE(x.sym_numel() != 0, "x is empty (shape ", shape_str(sizes),
                      "); the kernels need at least one element");
    for (const auto& [p, name] : {std::pair{&w, "weight"}, std::pair{&b, "bias"}})
        if (p->has_value()) check_tensor(**p, name, x);
    check_args(sizes[1], G, w, b, eps, act);
    if (r.has_value()) {
        check_tensor(*r, "residual", x);
        TORCH_CHECK_VALUE(r->sym_sizes() == sizes, "residual has shape ", shape_str(r->sym_sizes()),
                          " but x has shape ", shape_str(sizes));
    }
}

void check_backward(const Tensor& dy, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                    const optional<Tensor>& w, const optional<Tensor>& b, int64_t G, int64_t act,
                    const optional<Tensor>& r) {
    check_forward(x, G, w, b, 0.0, act, r);
    check_tensor(dy, "dy", x);
    TORCH_CHECK_VALUE(dy.sym_sizes() == x.sym_sizes(), "dy has shape ", shape_str(dy.sym_sizes()),
                      " but x has shape ", shape_str(x.sym_sizes()));
    for (const auto& [t, name] : {std::pair{&mean, "mean"}, std::pair{&rstd, "rstd"}}) {
        TORCH_CHECK_VALUE(t->layout() == at::kStrided && t->device() == x.device(), name,
                          " must be a dense tensor on x's device (", x.device(), ")");
        TORCH_CHECK_TYPE(t->scalar_type() == at::kDouble, name, " has dtype ", dtype_name(t->scalar_type()),
                         " but the statistics are torch.float64");
        TORCH_CHECK_VALUE(t->dim() == 2 && t->sym_size(0) == x.sym_size(0) && t->sym_size(1) == G, name,
                          " must have shape (", x.sym_size(0), ", ", G, "), got ", shape_str(t->sym_sizes()));
    }
}

/* ------------------------------------------------------------------------------------ layouts */
/* GN_LAYOUT_NCS if x is contiguous, GN_LAYOUT_NSC if it is channels-last dense (N, *spatial, C), else -1. */
int layout_of(const Tensor& x) {
    if (x.is_contiguous()) return GN_LAYOUT_NCS;
    const int64_t d = x.dim();
    if (d < 3) return -1;
    const auto sz = x.sizes(), st = x.strides();
    int64_t expect = 1;  /* the strides of x.movedim(1, -1).contiguous(), ignoring dimensions of size 1 */
    if (sz[1] != 1 && st[1] != expect) return -1;
    expect *= sz[1];
    for (int64_t i = d - 1; i >= 2; --i) {
        if (sz[i] != 1 && st[i] != expect) return -1;
        expect *= sz[i];
    }
    if (sz[0] != 1 && st[0] != expect) return -1;
    return GN_LAYOUT_NSC;
}

/* t (N, C, *spatial) with the strides of `layout` (a copy only if needed). */
Tensor to_layout(const Tensor& t, int layout) {
    if (layout == GN_LAYOUT_NCS) return t.contiguous();
    if (layout_of(t) == GN_LAYOUT_NSC) return t;
    return t.movedim(1, -1).contiguous().movedim(-1, 1);
}

const void* ptr(const optional<Tensor>& t) { return t.has_value() ? t->const_data_ptr() : nullptr; }
const void* ptr(const Tensor& t) { return t.defined() ? t.const_data_ptr() : nullptr; }
void* mut_ptr(const Tensor& t) { return t.defined() ? t.mutable_data_ptr() : nullptr; }

void check_rc(int rc, const char* what) {
    if (rc == GN_ENOMEM) throw std::bad_alloc();
    TORCH_CHECK(rc == GN_OK, "groupnorm kernel ", what, ": ", rc == GN_EINVAL ? "invalid argument" : "error code ", rc);
}

/* The C API's shape and options for x (N, C, *spatial) in `layout`; threads: torch's intra-op count. */
gn_shape shape_of(const Tensor& x, int layout, int64_t G, int64_t act) {
    gn_shape sh{};
    sh.dtype = dtype_code(x.scalar_type());
    sh.layout = layout;
    sh.act = int(act);
    sh.nthreads = at::get_num_threads();
    sh.N = x.size(0);
    sh.C = x.size(1);
    sh.S = x.numel() / (sh.N * sh.C);
    sh.G = G;
    return sh;
}

optional<Tensor> contiguous(const optional<Tensor>& t) {
    return t.has_value() ? optional<Tensor>(t->contiguous()) : std::nullopt;
}

/* ------------------------------------------------------------------------------------ CPU kernels */
std::tuple<Tensor, Tensor, Tensor> forward_cpu(const Tensor& x, int64_t G, const optional<Tensor>& w,
                                               const optional<Tensor>& b, double eps, int64_t act,
                                               const optional<Tensor>& r) {
    check_forward(x, G, w, b, eps, act, r);
    const int64_t N = x.size(0);
    Tensor y = at::empty_like(x);  /* x's strides when x is dense (what the Meta kernel promises) */
    int layout = layout_of(x);
    Tensor xin = x, out = y;
    if (layout < 0) {  /* odd strides: computed on a contiguous copy, then copied into y */
        layout = GN_LAYOUT_NCS;
        xin = x.contiguous();
        if (!y.is_contiguous()) out = at::empty_like(xin);
    }
    const auto wc = contiguous(w), bc = contiguous(b);
    const optional<Tensor> rc = r.has_value() ? optional<Tensor>(to_layout(*r, layout)) : std::nullopt;
    auto opts = x.options().dtype(at::kDouble);
    Tensor mean = at::empty({N, G}, opts), rstd = at::empty({N, G}, opts);
    gn_fwd_args a{};
    a.sh = shape_of(x, layout, G, act);
    a.eps = eps;
    a.x = ptr(xin), a.w = ptr(wc), a.b = ptr(bc), a.r = ptr(rc), a.y = mut_ptr(out);
    a.mean = mean.mutable_data_ptr<double>(), a.rstd = rstd.mutable_data_ptr<double>();
    check_rc(gn_forward(&a), "forward");
    if (!out.is_same(y)) y.copy_(out);
    return {y, mean, rstd};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> backward_cpu(const Tensor& dy, const Tensor& x, const Tensor& mean,
                                                        const Tensor& rstd, const optional<Tensor>& w,
                                                        const optional<Tensor>& b, int64_t G, int64_t act,
                                                        bool need_dx, bool need_dw, bool need_db,
                                                        const optional<Tensor>& r) {
    check_backward(dy, x, mean, rstd, w, b, G, act, r);
    const int64_t C = x.size(1);
    int layout = layout_of(x);
    const bool odd = layout < 0;
    if (odd) layout = GN_LAYOUT_NCS;  /* odd strides: computed on contiguous copies */
    const Tensor xin = odd ? x.contiguous() : x, dyin = to_layout(dy, layout);
    const Tensor m = mean.contiguous(), rs = rstd.contiguous();
    const auto wc = contiguous(w), bc = contiguous(b);
    /* dx and dv in x's own strides (what the Meta kernel promises), or contiguous buffers copied into them */
    Tensor dx = need_dx ? at::empty_like(xin) : Tensor();
    Tensor dw = need_dw ? at::empty({C}, x.options()) : Tensor();
    Tensor db = need_db ? at::empty({C}, x.options()) : Tensor();
    optional<Tensor> rin;
    Tensor dv;
    if (r.has_value() && act != GN_ACT_NONE) {  /* dv is computed into its own buffer (x's layout) */
        rin = to_layout(*r, layout);
        dv = at::empty_like(xin);
    }
    gn_bwd_args a{};
    a.sh = shape_of(x, layout, G, act);
    a.dy = ptr(dyin), a.x = ptr(xin), a.r = ptr(rin), a.w = ptr(wc), a.b = ptr(bc);
    a.mean = m.const_data_ptr<double>(), a.rstd = rs.const_data_ptr<double>();
    a.dr = mut_ptr(dv), a.dx = mut_ptr(dx), a.dw = mut_ptr(dw), a.db = mut_ptr(db);
    check_rc(gn_backward(&a), "backward");
    auto in_x_strides = [&](Tensor t) {
        if (!odd || !t.defined()) return t;
        Tensor ref = at::empty_like(x);
        return ref.strides() == t.strides() ? t : ref.copy_(t);
    };
    return {in_x_strides(dx), dw, db, in_x_strides(dv)};
}

/* ------------------------------------------------------------------------------------ Meta kernels */
std::tuple<Tensor, Tensor, Tensor> forward_meta(const Tensor& x, int64_t G, const optional<Tensor>& w,
                                                const optional<Tensor>& b, double eps, int64_t act,
                                                const optional<Tensor>& r) {
    check_forward(x, G, w, b, eps, act, r);
    auto opts = x.options().dtype(at::kDouble);
    return {at::empty_like(x), at::empty_symint({x.sym_size(0), G}, opts), at::empty_symint({x.sym_size(0), G}, opts)};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> backward_meta(const Tensor& dy, const Tensor& x, const Tensor& mean,
                                                         const Tensor& rstd, const optional<Tensor>& w,
                                                         const optional<Tensor>& b, int64_t G, int64_t act,
                                                         bool need_dx, bool need_dw, bool need_db,
                                                         const optional<Tensor>& r) {
    check_backward(dy, x, mean, rstd, w, b, G, act, r);
    auto chan = [&] { return at::empty_symint({x.sym_size(1)}, x.options()); };
    return {need_dx ? at::empty_like(x) : Tensor(), need_dw ? chan() : Tensor(), need_db ? chan() : Tensor(),
            r.has_value() && act != GN_ACT_NONE ? at::empty_like(x) : Tensor()};
}

/* ------------------------------------------------------------------------------------ the plain path */
/* groupnorm::gn_plain: act(GN(x) * weight + bias [+ residual]) from torch's own operators, on any device and
 * dtype (CompositeImplicitAutograd: autograd, double backward included, differentiates those operators). The
 * path every case the kernels decline takes (CUDA tensors, GROUPNORM_DISABLE_KERNELS=1, mixed dtypes), so that
 * it costs what `F.silu(F.group_norm(x, G, w, b) + r)` costs: torch's GN in x's dtype, and, when no autograd
 * graph is recorded, the add and the activation in place on GN's fresh output.
 *
 * Large means. GN is invariant to a per-group shift of its input, but torch's CPU kernels are not exact under
 * it. With r = |mean| / std of a group, measured with torch 2.13 against the float64 reference (unit-variance
 * output, groups of up to 16384 positions per channel): contiguous inputs (a Welford cascade) err by about
 * 1.5e-7 * r; channels-last inputs (sums of x and x^2) by up to 2e-5 * r^2, more for longer runs of positions
 * (garbage from r of a few hundred). So after torch's GN returns its per-group mean and 1/std, the largest r is
 * read (N*G values, no extra pass over x); above shift_threshold() of the layout and dtype the GN is recomputed
 * on x - K, K the group's mean (detached: the output does not depend on it), in float32 for the half types,
 * which keeps the error below plain_error_budget() at any mean. Only for concrete CPU float32 / bfloat16 /
 * float16 tensors: CUDA's GN uses Welford (no shift needed), float64 has room to spare, and under fake tensors
 * (torch.compile, export) or functorch transforms no value can be read (groupnorm.plain handles those). */
double plain_error_budget(c10::ScalarType t) {  /* float32 ~1e-4 relative; half types ~ their own rounding */
    return t == at::kFloat ? 1e-4 : t == at::kBFloat16 ? 2e-2 : 5e-3;
}

constexpr double kRunLong = 16384;  /* positions per channel up to which the channels-last model was measured */

double shift_threshold(c10::ScalarType t, bool channels_last, int64_t positions) {
    const double budget = plain_error_budget(t);
    if (!channels_last) return budget / 1.5e-7;
    return std::sqrt(budget / (2e-5 * std::max(1.0, double(positions) / kRunLong)));
}

bool shifted_dtype(c10::ScalarType t) { return t == at::kFloat || t == at::kBFloat16 || t == at::kHalf; }

/* The memory format torch's GN keeps for x: channels-last (4-d / 5-d) if x is strided so and not contiguous. */
c10::MemoryFormat plain_format(const Tensor& x) {
    if (x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(c10::MemoryFormat::ChannelsLast))
        return c10::MemoryFormat::ChannelsLast;
    if (x.dim() == 5 && !x.is_contiguous() && x.is_contiguous(c10::MemoryFormat::ChannelsLast3d))
        return c10::MemoryFormat::ChannelsLast3d;
    return c10::MemoryFormat::Contiguous;
}

/* A tensor whose values can be read here: dense CPU memory, not a fake / functorch / Python-dispatch tensor. */
bool readable(const Tensor& t) {
    const auto ks = t.key_set();
    return t.is_cpu() && t.layout() == at::kStrided && t.has_storage() && !ks.has(c10::DispatchKey::Python)
           && !ks.has_any(c10::DispatchKeySet({c10::DispatchKey::FuncTorchBatched, c10::DispatchKey::FuncTorchGradWrapper,
                                               c10::DispatchKey::Functionalize}));
}

/* max over groups of |mean| * rstd (= |mean| / std), read from torch's (N, G) statistics of a readable tensor. */
double largest_ratio(const Tensor& mean, const Tensor& rstd) {
    const Tensor m = mean.detach().contiguous(), s = rstd.detach().contiguous();
    double top = 0;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, m.scalar_type(), "largest_ratio", [&] {
        const scalar_t* pm = m.const_data_ptr<scalar_t>();
        const scalar_t* ps = s.const_data_ptr<scalar_t>();
        for (int64_t i = 0, n = m.numel(); i < n; ++i) {
            const double r = std::abs(double(pm[i]) * double(ps[i]));
            if (!(r <= top)) top = r;  /* a NaN wins (and stays): no shift helps it */
            if (std::isnan(top)) return;
        }
    });
    return top;
}

/* weight / bias as torch's GN takes them for x: x's dtype, or float32 for a half-type x on CPU. */
optional<Tensor> plain_param(const optional<Tensor>& p, const Tensor& x) {
    if (!p.has_value()) return p;
    const auto t = p->scalar_type();
    if (t == x.scalar_type() || (t == at::kFloat && x.is_cpu() && (x.scalar_type() == at::kBFloat16
                                                                   || x.scalar_type() == at::kHalf)))
        return p;
    return optional<Tensor>(p->to(x.scalar_type()));
}

/* (y, mean, rstd) of torch's GN of x - K (= GN of x), K (N, G) detached; float32 for the half types. */
std::tuple<Tensor, Tensor, Tensor> shifted_group_norm(const Tensor& x, const Tensor& k, int64_t G,
                                                      const optional<Tensor>& w, const optional<Tensor>& b,
                                                      double eps) {
    const bool half = x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kHalf;
    const int64_t N = x.size(0), C = x.size(1);
    Tensor d = half ? x.to(at::kFloat) : x;
    std::vector<int64_t> kshape(x.dim(), 1);
    kshape[0] = N, kshape[1] = C;
    d = at::sub(d, k.to(d.scalar_type()).repeat_interleave(C / G, 1).reshape(kshape));
    d = d.contiguous(plain_format(d));
    auto as = [&](const optional<Tensor>& p) {
        return p.has_value() ? optional<Tensor>(p->to(d.scalar_type())) : std::nullopt;
    };
    return at::native_group_norm(d, as(w), as(b), N, C, N ? d.numel() / (N * C) : 0, G, eps);
}

void check_plain(const Tensor& x, int64_t G, const optional<Tensor>& w, const optional<Tensor>& b, double eps,
                 int64_t act, const optional<Tensor>& r) {  /* groupnorm.functional's messages */
    const auto sizes = x.sym_sizes();
    TORCH_CHECK_VALUE(sizes.size() >= 2, "group_norm expects an input of shape (N, C, *spatial) with rank >= 2, "
                      "got shape ", shape_str(sizes));
    TORCH_CHECK_TYPE(x.is_floating_point(), "group_norm expects a floating-point input, got dtype ",
                     dtype_name(x.scalar_type()));
    check_args(sizes[1], G, w, b, eps, act);
    for (const auto& [p, name] : {std::pair{&w, "weight"}, std::pair{&b, "bias"}})
        TORCH_CHECK_TYPE(!p->has_value() || (*p)->is_floating_point(), name, " must be floating point, got dtype ",
                         dtype_name((*p)->scalar_type()));
    if (r.has_value()) {
        TORCH_CHECK_VALUE(r->sym_sizes() == sizes, "residual has shape ", shape_str(r->sym_sizes()),
                          " but x has shape ", shape_str(sizes), "; they must match");
        TORCH_CHECK_TYPE(r->scalar_type() == x.scalar_type(), "residual has dtype ", dtype_name(r->scalar_type()),
                         " but x has dtype ", dtype_name(x.scalar_type()), "; they must match");
        TORCH_CHECK_VALUE(r->device() == x.device(), "residual is on ", r->device(), " but x is on ", x.device());
    }
}

Tensor plain_composite(const Tensor& x, int64_t G, const optional<Tensor>& w_in, const optional<Tensor>& b, double eps,
                       int64_t act, const optional<Tensor>& r) {
    check_plain(x, G, w_in, b, eps, act, r);
    /* torch's GN backward fails ("tensor does not have a device") for a bias without a weight: a weight of ones */
    const optional<Tensor> w = (!w_in.has_value() && b.has_value()) ? optional<Tensor>(at::ones_like(*b)) : w_in;
    const auto fmt = plain_format(x);
    const bool record = at::GradMode::is_enabled() && torch::autograd::compute_requires_grad(x, w_in, b, r);
    const auto pw = plain_param(w, x), pb = plain_param(b, x);
    Tensor y;
    if (!x.is_cpu() || !shifted_dtype(x.scalar_type()) || x.numel() == 0 || !readable(x)) {
        y = at::group_norm(x, G, pw, pb, eps);
    } else {
        const int64_t N = x.size(0), C = x.size(1), HxW = x.numel() / (N * C);
        Tensor mean, rstd, shift;
        std::tie(y, mean, rstd) = at::native_group_norm(x.contiguous(fmt), pw, pb, N, C, HxW, G, eps);
        const double limit = shift_threshold(x.scalar_type(), fmt != c10::MemoryFormat::Contiguous, HxW);
        for (int i = 0; i < 3; ++i) {  /* a shift by torch's mean leaves r' ~ 1e-7 * r * run: one redo, rarely two */
            const double ratio = largest_ratio(mean, rstd);
            if (!(limit < ratio && ratio < INFINITY)) break;  /* (NaN / inf input: no shift helps) */
            shift = shift.defined() ? at::add(shift, mean.detach()) : mean.detach().to(at::kFloat);
            std::tie(y, mean, rstd) = shifted_group_norm(x, shift, G, w, b, eps);
        }
    }
    if (r.has_value()) y = record ? at::add(y, *r) : y.add_(*r);
    switch (act) {
    case GN_ACT_RELU: y = record ? at::relu(y) : at::relu_(y); break;
    case GN_ACT_SILU: y = record ? at::silu(y) : at::silu_(y); break;
    case GN_ACT_GELU: y = record ? at::gelu(y) : at::gelu_(y); break;
    default: break;
    }
    if (y.scalar_type() != x.scalar_type()) y = y.to(x.scalar_type());  /* float32 after a half type's shift */
    if (fmt != c10::MemoryFormat::Contiguous && !y.is_contiguous(fmt)) y = y.contiguous(fmt);
    return y;
}

/* ------------------------------------------------------------------------------------ autograd */
const c10::TypedOperatorHandle<decltype(forward_cpu)>& forward_op() {
    static const auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("groupnorm::gn_forward", "").typed<decltype(forward_cpu)>();
    return op;
}

const c10::TypedOperatorHandle<decltype(backward_cpu)>& backward_op() {
    static const auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("groupnorm::gn_backward", "").typed<decltype(backward_cpu)>();
    return op;
}

using plain_fn = Tensor(const Tensor&, int64_t, const optional<Tensor>&, const optional<Tensor>&, double, int64_t,
                        const optional<Tensor>&);

const c10::TypedOperatorHandle<plain_fn>& plain_op() {
    static const auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("groupnorm::gn_plain", "").typed<plain_fn>();
    return op;
}

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

/* The backward of gn_forward's y; next edges: x, weight, bias, residual (an empty edge where absent). */
struct GNBackward : public torch::autograd::Node {
    torch::autograd::SavedVariable x_, mean_, rstd_, w_, b_, r_;
    int64_t G = 0, act = 0;
    double eps = 0;
    bool has_w = false, has_b = false, has_r = false;

    std::string name() const override { return "GroupNormBackward (groupnorm kernels)"; }

    void release_variables() override {
        std::lock_guard<std::mutex> lock(mutex_);
        x_.reset_data();
        mean_.reset_data();
        rstd_.reset_data();
        w_.reset_data();
        b_.reset_data();
        r_.reset_data();
    }

    variable_list apply(variable_list&& grads) override {
        std::lock_guard<std::mutex> lock(mutex_);
        const Tensor& dy = grads[0];
        variable_list out(4);
        const bool need[4] = {task_should_compute_output(0), has_w && task_should_compute_output(1),
                              has_b && task_should_compute_output(2), has_r && task_should_compute_output(3)};
        if (!dy.defined() || !(need[0] || need[1] || need[2] || need[3])) return out;
        const Tensor x = x_.unpack();
        const optional<Tensor> w = has_w ? optional<Tensor>(w_.unpack()) : std::nullopt;
        const optional<Tensor> b = has_b ? optional<Tensor>(b_.unpack()) : std::nullopt;
        /* the residual enters the backward only through the activation's derivative (saved only then) */
        const bool r_saved = has_r && act != GN_ACT_NONE;
        const optional<Tensor> r = r_saved ? optional<Tensor>(r_.unpack()) : std::nullopt;
        if (at::GradMode::is_enabled()) {
            /* create_graph=True: the gradient must itself be differentiable; recomputed through gn_plain */
            variable_list inputs;
            const Tensor* cand[4] = {&x, w ? &*w : nullptr, b ? &*b : nullptr, r ? &*r : nullptr};
            for (int i = 0; i < 4; ++i)
                if (need[i] && cand[i]) inputs.push_back(*cand[i]);
            variable_list g;
            if (!inputs.empty()) {
                Tensor y = plain_op().call(x, G, w, b, eps, act, r);
                g = torch::autograd::grad({y}, inputs, {dy}, /*retain_graph=*/true, /*create_graph=*/true,
                                          /*allow_unused=*/true);
            }
            size_t k = 0;
            for (int i = 0; i < 4; ++i)
                if (need[i] && cand[i]) out[i] = g[k++];
            if (need[3] && !r_saved) out[3] = dy;  /* no activation: d(residual) = dy */
            return out;
        }
        const Tensor mean = mean_.unpack(), rstd = rstd_.unpack();
        at::AutoDispatchBelowADInplaceOrView guard;  /* grad mode is off: straight to the CPU kernel */
        auto [dx, dw, db, dv] = backward_op().call(dy, x, mean, rstd, w, b, G, act, need[0], need[1], need[2], r);
        if (need[0]) out[0] = dx;
        if (need[1]) out[1] = dw;
        if (need[2]) out[2] = db;
        if (need[3]) out[3] = r_saved ? dv : dy;
        return out;
    }
};

std::tuple<Tensor, Tensor, Tensor> forward_autograd(const Tensor& x, int64_t G, const optional<Tensor>& w,
                                                    const optional<Tensor>& b, double eps, int64_t act,
                                                    const optional<Tensor>& r) {
    const bool grad = torch::autograd::compute_requires_grad(x, w, b, r);
    Tensor y, mean, rstd;
    {
        at::AutoDispatchBelowADInplaceOrView guard;
        std::tie(y, mean, rstd) = forward_op().call(x, G, w, b, eps, act, r);
    }
    if (grad) {
        auto node = c10::make_intrusive<GNBackward>();
        node->set_next_edges(torch::autograd::collect_next_edges(x, w, b, r));
        node->x_ = torch::autograd::SavedVariable(x, false);
        node->mean_ = torch::autograd::SavedVariable(mean, false);
        node->rstd_ = torch::autograd::SavedVariable(rstd, false);
        if (w.has_value()) node->w_ = torch::autograd::SavedVariable(*w, false);
        if (b.has_value()) node->b_ = torch::autograd::SavedVariable(*b, false);
        if (r.has_value() && act != GN_ACT_NONE) node->r_ = torch::autograd::SavedVariable(*r, false);
        node->G = G;
        node->act = act;
        node->eps = eps;
        node->has_w = w.has_value();
        node->has_b = b.has_value();
        node->has_r = r.has_value();
        torch::autograd::set_history(y, node);
    }
    return {y, mean, rstd};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> backward_autograd(const Tensor& dy, const Tensor& x, const Tensor& mean,
                                                             const Tensor& rstd, const optional<Tensor>& w,
                                                             const optional<Tensor>& b, int64_t G, int64_t act,
                                                             bool need_dx, bool need_dw, bool need_db,
                                                             const optional<Tensor>& r) {
    TORCH_CHECK(!torch::autograd::compute_requires_grad(dy, x, mean, rstd, w, b, r),
                "groupnorm::gn_backward is not differentiable; a create_graph=True backward of gn_forward goes "
                "through groupnorm::gn_plain instead (call gn_backward under torch.no_grad())");
    at::AutoDispatchBelowADInplaceOrView guard;
    return backward_op().call(dy, x, mean, rstd, w, b, G, act, need_dx, need_dw, need_db, r);
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
