/* The kernels' two memory layouts for a torch tensor (N, C, *spatial): GN_LAYOUT_NCS (contiguous) and
 * GN_LAYOUT_NSC (channels-last, any rank); groupnorm.kernels._lib holds the Python side.
 * Part of the operator unit: included by gn_torch_ops.cpp only (the kernels behind gn_api.h know nothing of
 * PyTorch). */
#pragma once

#include "gn_api.h"
#include "gn_ops_messages.h"

namespace {

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

}  // namespace
