"""GN with a residual added before the activation, ``act(GN(x) + r)`` (a ResNet block's end), on every path.

Against the NumPy float64 reference (values and the four gradients dx, dweight, dbias, dresidual): the compiled
kernels on a grid of ranks, layouts (the residual in x's layout or another), dtypes, group sizes and
activations, on every instruction-set level this CPU runs; the plain PyTorch path; gradcheck in fp64 through
the custom op and the eager path; double backward; torch.compile; the module; bad input.
"""
import itertools

import numpy as np
import pytest
import torch

from groupnorm import functional as GF
from groupnorm import reference
from groupnorm.args import activation_code
from groupnorm.nn import GroupNorm

from helpers import (ACTS, DTYPES, GRID, TOL, TOL_SECOND, _np, assert_close, check_residual, make_case, make_residual,
                     needs_kernels, numerical_gradient)


def test_reference_residual_is_gn_then_add_then_activation():
    rng = np.random.default_rng(0)
    x, r, dy = rng.normal(size=(2, 6, 5)), rng.normal(size=(2, 6, 5)), rng.normal(size=(2, 6, 5))
    w, b = rng.normal(size=6), rng.normal(size=6)
    pre = reference.group_norm(x, 3, w, b) + r
    np.testing.assert_allclose(reference.group_norm(x, 3, w, b, activation="silu", residual=r),
                               reference.activation(pre, "silu"), rtol=1e-12)
    dx, dw, db, dr = reference.group_norm_backward(dy, x, 3, w, b, activation="silu", residual=r)
    dv = reference.activation_backward(dy, pre, "silu")
    np.testing.assert_allclose(dr, dv, rtol=1e-12)
    dx2, dw2, db2 = reference.group_norm_backward(dv, x, 3, w, b)
    for a, c in ((dx, dx2), (dw, dw2), (db, db2)):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="residual has shape"):
        reference.group_norm(x, 3, residual=r[:1])


@needs_kernels
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cl", [False, True], ids=["contig", "chlast"])
def test_kernels_grid_against_reference(cl, dtype, act):
    for i, (shape, G) in enumerate(GRID):
        x, w, b, dy = make_case(shape, dtype, cl, seed=i)
        check_residual(x, w, b, dy, make_residual(x, i), G, act)


@needs_kernels
@pytest.mark.parametrize("cl", [False, True], ids=["contig", "chlast"])
def test_residual_in_another_layout_and_no_affine(cl):
    for i, act in enumerate(ACTS):
        x, w, b, dy = make_case((2, 12, 5, 3), torch.float32, cl, affine=(i % 2 == 0), seed=i)
        r = make_residual(x, i, layout="other")
        assert r.is_contiguous() != x.is_contiguous()
        check_residual(x, w, b, dy, r, 4, act, call="functional")


@needs_kernels
def test_large_outputs_non_temporal_stores(streaming_stores):
    """Outputs that stream (the streaming_stores fixture) take the non-temporal store path (contiguous and
    channels-last)."""
    for cl, dtype in itertools.product((False, True), (torch.float32, torch.bfloat16)):
        x, w, b, dy = make_case((2, 64, 96, 96), dtype, cl, seed=3)
        check_residual(x, w, b, dy, make_residual(x, 3), 32, "relu")


def test_every_instruction_set_level(isa_level):
    for (shape, G), dtype, cl, act in itertools.product(GRID, DTYPES, (False, True), ("relu", "gelu", None)):
        x, w, b, dy = make_case(shape, dtype, cl, seed=G)
        check_residual(x, w, b, dy, make_residual(x, G), G, act)


@pytest.mark.parametrize("act", ACTS)
def test_plain_path_against_reference(monkeypatch, act):
    monkeypatch.setenv("GROUPNORM_DISABLE_KERNELS", "1")
    for cl, dtype in itertools.product((False, True), (torch.float32, torch.float64)):
        x, w, b, dy = make_case((2, 12, 5, 3), dtype, cl, seed=1)
        check_residual(x, w, b, dy, make_residual(x, 1), 4, act, call="functional")


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("affine", [True, False, "weight", "bias"])
def test_public_call_on_both_paths(gn_path, act, affine):
    """groupnorm.functional.group_norm with a residual, kernels and plain path, with and without the affine."""
    x, w, b, dy = make_case((2, 16, 7, 7), torch.float32, False, affine=affine, seed=2)
    check_residual(x, w, b, dy, make_residual(x, 2), 4, act, call="functional")


@needs_kernels
@pytest.mark.parametrize("act", [None, "relu", "silu", "gelu"])
def test_gradcheck_and_gradgradcheck_fp64(act):
    """First and second derivatives with a residual (gradcheck, gradgradcheck; float64), through the operator
    (its C++ autograd kernel) and the public call."""
    x, w, b, _ = make_case((2, 6, 3, 2), torch.float64, False, seed=5)
    r = make_residual(x, 5)
    if act == "relu":  # pre-activations away from the kink, where finite differences straddle it
        pre = GF.group_norm(x, 3, w, b) + r
        r = r + torch.where(pre.abs() < 0.05, torch.where(pre < 0, -0.1, 0.1), 0.0)
    inputs = tuple(t.detach().clone().requires_grad_(True) for t in (x, w, b, r))
    code = activation_code(act)
    for f in (lambda *t: torch.ops.groupnorm.gn_forward(t[0], 3, t[1], t[2], 1e-5, code, t[3])[0],
              lambda *t: GF.group_norm(t[0], 3, t[1], t[2], activation=act, residual=t[3])):
        assert torch.autograd.gradcheck(f, inputs)
        assert torch.autograd.gradgradcheck(f, inputs)


def test_double_backward_against_the_reference(gn_path):
    """With L = sum(y^2) and (gx, gr) = dL/d(x, r): d/d(x, r) of sum(gx) + sum(gr^2) against a finite difference
    of the reference's exact first derivatives (float64)."""
    x, w, b, _ = make_case((2, 6, 4, 3), torch.float64, False, seed=6)
    r = make_residual(x, 6)
    xx, rr = x.clone().requires_grad_(), r.clone().requires_grad_()
    y = GF.group_norm(xx, 3, w, b, activation="silu", residual=rr)
    gx, gr = torch.autograd.grad(y.square().sum(), (xx, rr), create_graph=True)
    got = torch.autograd.grad((gx.sum() + gr.square().sum()), (xx, rr))
    wn, bn = _np(w), _np(b)

    def objective(xn, rn):
        yn = reference.group_norm(xn, 3, wn, bn, activation="silu", residual=rn)
        dx, _, _, dr = reference.group_norm_backward(2 * yn, xn, 3, wn, bn, activation="silu", residual=rn)
        return dx.sum() + (dr ** 2).sum()

    for name, a, want in zip(("x", "residual"), got, numerical_gradient(objective, [_np(x), _np(r)])):
        assert_close(a, want, TOL_SECOND, f"d2 {name}")


@pytest.mark.slow  # torch.compile
@needs_kernels
def test_torch_compile_matches_eager():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(8, 8, 3, padding=1, bias=False)
            self.norm = GroupNorm(4, 8, activation="relu")

        def forward(self, x):
            return self.norm(self.conv(x), residual=x)

    torch.manual_seed(0)
    m = Block()
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    y_eager = m(x)
    g_eager = torch.autograd.grad(y_eager.sum(), (x, m.norm.weight))
    compiled = torch.compile(m, fullgraph=True)
    y_comp = compiled(x)
    g_comp = torch.autograd.grad(y_comp.sum(), (x, m.norm.weight))
    torch.testing.assert_close(y_comp, y_eager, rtol=1e-5, atol=1e-5)
    for a, c in zip(g_comp, g_eager):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-4)


def test_module_matches_torch_gn_add_relu():
    torch.manual_seed(1)
    ours, theirs = GroupNorm(4, 16, activation="relu"), torch.nn.GroupNorm(4, 16)
    with torch.no_grad():
        for p, q in ((ours.weight, theirs.weight), (ours.bias, theirs.bias)):
            p.normal_()
            q.copy_(p)
    w, b = _np(ours.weight), _np(ours.bias)
    for cl in (False, True):
        x, _, _, _ = make_case((3, 16, 5, 7), torch.float32, cl, seed=4)
        r = make_residual(x, 4)
        ref = reference.group_norm(_np(x), 4, w, b, activation="relu", residual=_np(r))
        assert_close(ours(x, residual=r), ref, TOL[torch.float32], "module with a residual")
        torch.testing.assert_close(ours(x, residual=r), torch.relu(theirs(x) + r), rtol=1e-5, atol=1e-5)
        assert_close(ours(x), reference.group_norm(_np(x), 4, w, b, activation="relu"), TOL[torch.float32], "module")


def test_residual_grad_only_where_asked():
    """A residual that does not require grad (or x that does not) still gives the right other gradients."""
    x, w, b, dy = make_case((2, 8, 4, 4), torch.float32, False, seed=7)
    r = make_residual(x, 7)
    xr = x.clone().requires_grad_()
    y = GF.group_norm(xr, 4, w, b, activation="relu", residual=r)
    (gx,) = torch.autograd.grad(y, (xr,), dy)
    ref_dx = reference.group_norm_backward(_np(dy), _np(x), 4, _np(w), _np(b), activation="relu", residual=_np(r))[0]
    assert_close(gx, ref_dx, TOL[torch.float32], "dx", scale=10.0)
    rr = r.clone().requires_grad_()
    y = GF.group_norm(x, 4, w, b, activation="relu", residual=rr)
    (gr,) = torch.autograd.grad(y, (rr,), dy)
    ref_dr = reference.group_norm_backward(_np(dy), _np(x), 4, _np(w), _np(b), activation="relu", residual=_np(r))[3]
    assert_close(gr, ref_dr, TOL[torch.float32], "dresidual")


@pytest.mark.parametrize("bad, exc, msg", [
    (lambda x: x[:1], ValueError, "residual has shape"),
    (lambda x: x.double(), TypeError, "residual has dtype"),
    (lambda x: x.numpy(), TypeError, "residual must be a torch.Tensor"),
])
def test_bad_residual_gets_a_clear_error(bad, exc, msg):
    x = torch.randn(2, 8, 3, 3)
    with pytest.raises(exc, match=msg):
        GF.group_norm(x, 4, residual=bad(x))
    with pytest.raises(exc, match=msg):
        GroupNorm(4, 8)(x, residual=bad(x))


@needs_kernels
def test_bad_residual_at_the_op_boundary():
    x = torch.randn(2, 8, 3, 3)
    with pytest.raises(ValueError, match="residual has shape"):
        torch.ops.groupnorm.gn_forward(x, 4, None, None, 1e-5, 1, x[:1])
    with pytest.raises(TypeError, match="residual has dtype"):
        torch.ops.groupnorm.gn_forward(x, 4, None, None, 1e-5, 1, x.double())


@needs_kernels
@pytest.mark.parametrize("cl", [False, True], ids=["contig", "chlast"])
def test_fp32_fused_block_end_is_bitwise_gn_then_add_then_relu(cl):
    """In float32 the fused relu(GN(x) + r) rounds exactly where GN, then the add, then ReLU do: the same bits
    forward and backward (so switching the reproduction's ResNet to it changed no number)."""
    for i, shape in enumerate([(4, 64, 8, 8), (2, 32, 28, 28)]):
        x, w, b, dy = make_case(shape, torch.float32, cl, seed=20 + i)
        r = make_residual(x, 20 + i)
        fused = [t.clone().requires_grad_() for t in (x, r, w, b)]
        apart = [t.clone().requires_grad_() for t in (x, r, w, b)]
        y1 = GF.group_norm(fused[0], 32, fused[2], fused[3], activation="relu", residual=fused[1])
        y2 = torch.relu(GF.group_norm(apart[0], 32, apart[2], apart[3]) + apart[1])
        assert torch.equal(y1, y2)
        for g1, g2 in zip(torch.autograd.grad(y1, fused, dy), torch.autograd.grad(y2, apart, dy)):
            assert torch.equal(g1, g2)
