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
from groupnorm import kernels, reference
from groupnorm.args import activation_code
from groupnorm.kernels import _lib
from groupnorm.nn import GroupNorm

from test_kernels import (ACTS, DTYPES, GRID, TOL, _np, assert_close, channels_last, make_case,  # noqa: F401
                          streaming_stores)

needs_kernels = pytest.mark.skipif(not kernels.is_available(), reason=f"kernels not built: {kernels.load_error()}")


def make_residual(x, seed, layout="same"):
    g = torch.Generator().manual_seed(1000 + seed)
    r = torch.randn(x.shape, generator=g, dtype=torch.float64).to(x.dtype)
    if layout == "same" and not x.is_contiguous() and x.dim() >= 3:
        r = channels_last(r)
    elif layout == "other" and x.dim() >= 3 and x.is_contiguous():
        r = channels_last(r)
    return r  # "other": contiguous residual for a channels-last x (and the reverse)


def check_residual(x, w, b, dy, r, G, act, eps=1e-5, op=True):
    """y and (dx, dw, db, dr) against the reference; op: through torch.ops.groupnorm (else GF.group_norm)."""
    tol = TOL[x.dtype]
    xr, rr = x.detach().clone().requires_grad_(True), r.detach().clone().requires_grad_(True)
    wr = w.detach().clone().requires_grad_(True) if w is not None else None
    br = b.detach().clone().requires_grad_(True) if b is not None else None
    if op:
        y = torch.ops.groupnorm.gn_forward(xr, G, wr, br, eps, activation_code(act), rr)[0]
    else:
        y = GF.group_norm(xr, G, wr, br, eps, activation=act, residual=rr)
    assert y.dtype == x.dtype and y.shape == x.shape and y.stride() == x.stride()
    ref_y = reference.group_norm(_np(x), G, _np(w), _np(b), eps, activation=act, residual=_np(r))
    # the residual's magnitude adds to y's: the tolerance scales with it
    assert_close(y, ref_y, tol, f"y {x.dtype} {act}")
    params = [p for p in (xr, wr, br, rr) if p is not None]
    grads = torch.autograd.grad(y, params, dy)
    ref_dx, ref_dw, ref_db, ref_dr = reference.group_norm_backward(_np(dy), _np(x), G, _np(w), _np(b), eps,
                                                                   activation=act, residual=_np(r))
    _, ref_rstd = reference.group_norm_stats(_np(x), G, eps)
    term = float(ref_rstd.max() * np.abs(_np(dy)).max() * (np.abs(_np(w)).max() if w is not None else 1.0))
    assert_close(grads[0], ref_dx, tol, f"dx {x.dtype} {act}", scale=term)
    if w is not None:
        assert_close(grads[1], ref_dw, tol, f"dweight {x.dtype} {act}")
    if b is not None:
        assert_close(grads[2 if w is not None else 1], ref_db, tol, f"dbias {x.dtype} {act}")
    assert_close(grads[-1], ref_dr, tol, f"dresidual {x.dtype} {act}")
    assert grads[-1].shape == r.shape


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
        check_residual(x, w, b, dy, r, 4, act, op=False)


@needs_kernels
def test_large_outputs_non_temporal_stores(streaming_stores):
    """Outputs that stream (the streaming_stores fixture) take the non-temporal store path (contiguous and
    channels-last)."""
    for cl, dtype in itertools.product((False, True), (torch.float32, torch.bfloat16)):
        x, w, b, dy = make_case((2, 64, 96, 96), dtype, cl, seed=3)
        check_residual(x, w, b, dy, make_residual(x, 3), 32, "relu")


@needs_kernels
@pytest.mark.parametrize("level", [lvl for lvl in (0, 1, 2, 3) if lvl <= _lib.max_compiled_isa()])
def test_every_instruction_set_level(level):
    best = kernels.isa()
    if level > best:
        pytest.skip(f"this CPU lacks level {level}")
    try:
        kernels.set_isa(level)
        for (shape, G), dtype, cl, act in itertools.product(GRID[2:6], DTYPES, (False, True), ("relu", "gelu", None)):
            x, w, b, dy = make_case(shape, dtype, cl, seed=G)
            check_residual(x, w, b, dy, make_residual(x, G), G, act)
    finally:
        kernels.set_isa(None)


@pytest.mark.parametrize("act", ACTS)
def test_plain_path_against_reference(monkeypatch, act):
    monkeypatch.setenv("GROUPNORM_DISABLE_KERNELS", "1")
    for cl, dtype in itertools.product((False, True), (torch.float32, torch.float64)):
        x, w, b, dy = make_case((2, 12, 5, 3), dtype, cl, seed=1)
        check_residual(x, w, b, dy, make_residual(x, 1), 4, act, op=False)


@pytest.mark.parametrize("act", ACTS)
def test_kernels_and_plain_path_agree(monkeypatch, act):
    x, w, b, _ = make_case((2, 16, 7, 7), torch.float32, False, seed=2)
    r = make_residual(x, 2)
    y = GF.group_norm(x, 4, w, b, activation=act, residual=r)
    monkeypatch.setenv("GROUPNORM_DISABLE_KERNELS", "1")
    torch.testing.assert_close(y, GF.group_norm(x, 4, w, b, activation=act, residual=r), rtol=1e-5, atol=1e-5)


@needs_kernels
@pytest.mark.parametrize("act", [None, "relu", "silu", "gelu"])
def test_gradcheck_fp64_custom_op_and_eager(act):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 6, 4, 3, dtype=torch.float64, generator=g).requires_grad_()
    w = (torch.randn(6, dtype=torch.float64, generator=g) + 1).requires_grad_()
    b = torch.randn(6, dtype=torch.float64, generator=g).requires_grad_()
    r = torch.randn(2, 6, 4, 3, dtype=torch.float64, generator=g).requires_grad_()
    if act == "relu":  # keep pre-activations away from the kink at 0, where finite differences straddle it
        with torch.no_grad():
            pre = GF.group_norm(x, 3, w, b) + r
            r += torch.where(pre.abs() < 0.05, torch.sign(pre) * 0.1 + (pre == 0) * 0.1, torch.zeros_like(pre))
    assert torch.autograd.gradcheck(lambda *a: torch.ops.groupnorm.gn_forward(a[0], 3, a[1], a[2], 1e-5, activation_code(act), a[3])[0],
                                    (x, w, b, r))
    assert torch.autograd.gradcheck(lambda *t: GF.group_norm(t[0], 3, t[1], t[2], activation=act, residual=t[3]),
                                    (x, w, b, r))


@needs_kernels
def test_double_backward_eager_matches_plain(monkeypatch):
    x, w, b, _ = make_case((2, 6, 4, 3), torch.float64, False, seed=6)
    r = make_residual(x, 6)

    def second(xx, rr):
        xx, rr = xx.clone().requires_grad_(), rr.clone().requires_grad_()
        y = GF.group_norm(xx, 3, w, b, activation="silu", residual=rr)
        gx, gr = torch.autograd.grad(y.square().sum(), (xx, rr), create_graph=True)
        return torch.autograd.grad((gx.sum() + gr.square().sum()), (xx, rr))

    ours = second(x, r)
    monkeypatch.setenv("GROUPNORM_DISABLE_KERNELS", "1")
    plain = second(x, r)
    for a, c in zip(ours, plain):
        torch.testing.assert_close(a, c, rtol=1e-9, atol=1e-9)


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
    for cl in (False, True):
        x, _, _, _ = make_case((3, 16, 5, 7), torch.float32, cl, seed=4)
        r = make_residual(x, 4)
        torch.testing.assert_close(ours(x, residual=r), torch.relu(theirs(x) + r), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours(x), torch.relu(theirs(x)), rtol=1e-5, atol=1e-5)


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
