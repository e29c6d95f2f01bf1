/* The Autograd kernels of groupnorm::gn_forward (its backward node, GNBackward: the C backward, or gn_plain's
 * graph when the backward itself is recorded) and of groupnorm::gn_backward (not differentiable), and the
 * typed handles through which the operators call each other.
 * Part of the operator unit: included by gn_torch_ops.cpp only (the kernels behind gn_api.h know nothing of
 * PyTorch). */
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>

#include <mutex>
#include <string>
#include <tuple>

#include "gn_api.h"
#include "gn_ops_cpu.h"
#include "gn_ops_plain.h"

namespace {
using torch::autograd::variable_list;

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
