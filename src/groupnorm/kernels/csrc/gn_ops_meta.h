/* The Meta kernels of groupnorm::gn_forward and groupnorm::gn_backward: shapes, dtypes and strides only (fake
 * tensors, torch.compile), after the same checks as the CPU kernels.
 * Part of the operator unit: included by gn_torch_ops.cpp only (the kernels behind gn_api.h know nothing of
 * PyTorch). */
#pragma once

#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <tuple>

#include "gn_ops_checks.h"

namespace {

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

}  // namespace
