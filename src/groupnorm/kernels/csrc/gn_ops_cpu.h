/* The CPU kernels of groupnorm::gn_forward and groupnorm::gn_backward: checked arguments turned into the C API's
 * structs (gn_api.h), outputs allocated with x's strides.
 * Part of the operator unit: included by gn_torch_ops.cpp only (the kernels behind gn_api.h know nothing of
 * PyTorch). */
#pragma once

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <new>
#include <tuple>

#include "gn_api.h"
#include "gn_ops_checks.h"
#include "gn_ops_layout.h"

namespace {

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

}  // namespace
