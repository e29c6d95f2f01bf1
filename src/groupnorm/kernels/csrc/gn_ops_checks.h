/* The operators' argument checks: every bad call raises TypeError / ValueError naming the bad value (the
 * messages of groupnorm.functional) before it reaches the compiled code.
 * Part of the operator unit: included by gn_torch_ops.cpp only (the kernels behind gn_api.h know nothing of
 * PyTorch). */
#pragma once

#include "gn_api.h"
#include "gn_ops_messages.h"

#include <utility>

namespace {

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

}  // namespace
