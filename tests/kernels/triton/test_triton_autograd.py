"""The Triton path's autograd: deterministic gradients, gradients of a subset of inputs, double backward
through the plain path, the registered operators under torch.compile and torch.export."""
import pytest
import torch

from groupnorm.kernels import triton as gt
from groupnorm.kernels.triton import _launch
from groupnorm.plain import group_norm_plain
from helpers import TOL, assert_close, make_case, make_residual

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # interpreter's exp


def _grads(x, w, b, r, dy):
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, w, b, r)]
    y = gt.group_norm(leaves[0], 2, leaves[1], leaves[2], activation="silu", residual=leaves[3])
    return torch.autograd.grad(y, leaves, dy)


def test_gradients_are_deterministic(device, monkeypatch):
    """Two backward passes give the same bits (partial sums reduced in a fixed order, no atomics), also when
    the groups are split over several programs."""
    monkeypatch.setattr(_launch, "_sm_count", lambda device: 8)  # the same split on every device
    x, w, b, dy = (t.to(device) for t in make_case((1, 4, 40, 37), torch.float32, True, seed=29))
    assert _launch.geometry(x).n_chunks >= 2
    r = make_residual(x.cpu(), 3).to(device)
    first, second = _grads(x, w, b, r, dy), _grads(x, w, b, r, dy)
    for g1, g2, name in zip(first, second, ("dx", "dweight", "dbias", "dresidual")):
        assert torch.equal(g1, g2), f"{name} differs between two runs"


@pytest.mark.parametrize("which", ["x", "weight", "residual"])
def test_gradient_of_one_input(which, device):
    """Only the asked-for gradient is computed, and it equals the one computed with all of them."""
    x, w, b, dy = (t.to(device) for t in make_case((2, 6, 4, 5), torch.float32, False, seed=31))
    r = make_residual(x.cpu(), 4).to(device)
    full = dict(zip(("x", "weight", "bias", "residual"), _grads(x, w, b, r, dy)))
    leaves = {"x": x, "weight": w, "bias": b, "residual": r}
    leaves[which] = leaves[which].detach().clone().requires_grad_(True)
    y = gt.group_norm(leaves["x"], 2, leaves["weight"], leaves["bias"], activation="silu", residual=leaves["residual"])
    (g,) = torch.autograd.grad(y, leaves[which], dy)
    assert torch.equal(g, full[which])


def test_double_backward_matches_plain_path(device):
    """create_graph=True: the gradient of a function of dx is the plain path's."""
    x, w, b, dy = (t.to(device) for t in make_case((2, 6, 3, 4), torch.float32, False, seed=37))

    def second(fn):
        xr, wr = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
        y = fn(xr, 3, wr, b, 1e-5, "gelu", None)
        dx, dw = torch.autograd.grad(y, (xr, wr), dy, create_graph=True)
        return torch.autograd.grad((dx * dx).sum() + (dw * dw).sum(), (xr, wr))

    def triton_fn(x_, g, w_, b_, eps, act, r):
        return gt.group_norm(x_, g, w_, b_, eps, activation=act, residual=r)

    for got, ref in zip(second(triton_fn), second(group_norm_plain)):
        assert_close(got.cpu(), ref.double().cpu().numpy(), 1e-4, "second derivative")


def test_compile_fullgraph_sees_one_op(device, triton_route):
    """torch.compile(fullgraph=True) of groupnorm.functional.group_norm traces the Triton operator as one op,
    forward and backward, with the eager values."""
    from groupnorm import functional as GF

    x, w, b, dy = (t.to(device) for t in make_case((2, 6, 3, 5), torch.float32, True, seed=41))
    ops = []

    def backend(gm, example_inputs):
        ops.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward

    fn = torch.compile(lambda x_, w_, b_: GF.group_norm(x_, 3, w_, b_, activation="silu"), backend=backend,
                       fullgraph=True)
    xr = x.clone().requires_grad_(True)
    y = fn(xr, w, b)
    assert [o for o in ops if "groupnorm_triton" in o] == ["groupnorm_triton.gn_forward.default"], ops
    assert not any("group_norm" in o and "triton" not in o for o in ops), ops
    ref = gt.group_norm(x, 3, w, b, activation="silu")
    assert torch.equal(y, ref)
    (dx,) = torch.autograd.grad(y, xr, dy)
    xe = x.clone().requires_grad_(True)
    (dx_eager,) = torch.autograd.grad(gt.group_norm(xe, 3, w, b, activation="silu"), xe, dy)
    assert torch.equal(dx, dx_eager)


def test_export_holds_the_op(device, triton_route):
    """torch.export of a GroupNorm module records the Triton operator, and the exported program runs."""
    from groupnorm.nn import GroupNorm

    m = GroupNorm(3, 6).to(device)
    x = make_case((2, 6, 4, 4), torch.float32, False, seed=43)[0].to(device)
    ep = torch.export.export(m, (x,))
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert "groupnorm_triton.gn_forward.default" in targets, targets
    assert_close(ep.module()(x).cpu(), m(x).detach().double().cpu().numpy(), TOL[torch.float32], "exported y")


def test_opcheck(device):
    """torch.library.opcheck: schema, fake kernels, autograd registration, AOT dispatch (dynamic shapes)."""
    from groupnorm.kernels.triton import _ops  # noqa: F401 - registers the operators

    x, w, b, dy = (t.to(device) for t in make_case((2, 6, 3, 4), torch.float32, True, seed=53))
    r = make_residual(x.cpu(), 5).to(device)
    args = (x.requires_grad_(True), 3, w.requires_grad_(True), b, 1e-5, 2, r.requires_grad_(True))
    torch.library.opcheck(torch.ops.groupnorm_triton.gn_forward.default, args)
    with torch.no_grad():
        mean, rstd = torch.ops.groupnorm_triton.gn_forward(*args)[1:]
    bargs = (dy, x.detach(), mean, rstd, w.detach(), b, 3, 2, r.detach(), True, True, False, True)
    torch.library.opcheck(torch.ops.groupnorm_triton.gn_backward.default, bargs)


def test_expanded_output_gradient(device, check):
    """``y.sum().backward()`` hands the backward a dy with all strides 0: read in place, right gradients."""
    x, w, b, _ = (t.to(device) for t in make_case((2, 6, 5, 3), torch.float32, True, seed=59))
    xr = x.clone().requires_grad_(True)
    gt.group_norm(xr, 3, w, b, activation="silu").sum().backward()
    _, grads = check(x, 3, w, b, "silu", dy=torch.ones_like(x))
    assert torch.equal(xr.grad, grads[0])
