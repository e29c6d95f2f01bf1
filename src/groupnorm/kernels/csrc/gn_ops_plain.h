/* groupnorm::gn_plain, the plain path from torch's own operators (any device and dtype), with the large-mean
 * shift on CPU and its error budget (groupnorm.plain.ERROR_BUDGET holds the same numbers).
 * Part of the operator unit: included by gn_torch_ops.cpp only (the kernels behind gn_api.h know nothing of
 * PyTorch). */
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/ops/add.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/group_norm.h>
#include <ATen/ops/native_group_norm.h>
#include <ATen/ops/relu.h>
#include <ATen/ops/silu.h>
#include <ATen/ops/sub.h>
#include <torch/csrc/autograd/functions/utils.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

#include "gn_api.h"
#include "gn_ops_checks.h"

namespace {

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
/* The largest error (unit-variance output) the plain path promises per dtype: float32 ~1e-4 relative, the half
 * types about their own output rounding. groupnorm.plain.ERROR_BUDGET holds the same numbers; a test reads them
 * from the three lines below and compares. */
constexpr double kErrorBudgetFloat32 = 1e-4;
constexpr double kErrorBudgetBFloat16 = 2e-2;
constexpr double kErrorBudgetFloat16 = 5e-3;

double plain_error_budget(c10::ScalarType t) {
    return t == at::kFloat ? kErrorBudgetFloat32 : t == at::kBFloat16 ? kErrorBudgetBFloat16 : kErrorBudgetFloat16;
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

}  // namespace
