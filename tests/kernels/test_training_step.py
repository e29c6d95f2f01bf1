"""A whole training step of the reproduction's GN ResNet through the kernels, in both memory formats.

``groupnorm bench --e2e`` times this step contiguous and channels-last, kernels against the plain path. Here the
same step (loss, every parameter's gradient, the weights after an SGD update) through the kernels, contiguous
and channels-last, matches the plain path in float64, where the only difference left is the order of float
additions; and every GN call of the step reaches the kernels' operators in the input's own layout (no copy to
contiguous, no silent fallback).
"""
import copy

import pytest
import torch
import torch.nn.functional as F

from groupnorm.experiments.models import ResNet

from helpers import TOL, _np, assert_close, needs_kernels

pytestmark = needs_kernels


def _step(model, x, target):
    """Loss, gradients and updated parameters of one SGD step (momentum 0.9, weight decay)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), target)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    opt.step()
    return loss.detach(), grads, {n: p.detach().clone() for n, p in model.named_parameters()}


def _model_and_batch(dtype):
    torch.manual_seed(0)
    model = ResNet(norm="gn", widths=(16, 32), blocks=(1, 1), groups=8).to(dtype).train()
    for m in model.modules():  # the paper's gamma = 0 at each block's end would hide the residual's gradient
        if isinstance(m, torch.nn.GroupNorm):
            if getattr(m, "weight", None) is not None:
                torch.nn.init.uniform_(m.weight, 0.5, 1.5)
                torch.nn.init.uniform_(m.bias, -0.2, 0.2)
    x = torch.randn(6, 1, 12, 12, dtype=dtype)
    target = torch.randint(0, 10, (6,))
    return model, x, target


def _descendants(event):
    for c in event.cpu_children:
        yield c
        yield from _descendants(c)


def _copies_in(prof, op):
    return [sum(c.name == "aten::copy_" for c in _descendants(e)) for e in prof.events()
            if e.name == op and (e.cpu_parent is None or e.cpu_parent.name != e.name)]


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_operators_compute_in_the_input_layout(fmt):
    """Forward and backward run on x's own layout (no copy); only a gradient in another layout is copied."""
    x = torch.randn(2, 8, 5, 5).contiguous(memory_format=fmt).requires_grad_()
    other = torch.channels_last if fmt is torch.contiguous_format else torch.contiguous_format
    for dy_fmt, want in ((fmt, 0), (other, 1)):
        dy = torch.randn(2, 8, 5, 5).contiguous(memory_format=dy_fmt)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            y = torch.ops.groupnorm.gn_forward(x, 4, None, None, 1e-5, 1)[0]
            torch.autograd.grad(y, x, dy)
        assert y.stride() == x.stride()
        assert _copies_in(prof, "groupnorm::gn_forward") == [0]
        assert _copies_in(prof, "groupnorm::gn_backward") == [want], dy_fmt


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_step_with_kernels_matches_plain_path_fp64(monkeypatch, fmt):
    model, x, target = _model_and_batch(torch.float64)
    monkeypatch.setenv("GROUPNORM_DISABLE_KERNELS", "1")
    ref = _step(copy.deepcopy(model), x, target)
    monkeypatch.delenv("GROUPNORM_DISABLE_KERNELS")

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        got = _step(copy.deepcopy(model).to(memory_format=fmt), x.contiguous(memory_format=fmt), target)

    # each GN layer's forward and backward reached the kernels' operators once, and no forward copied its input
    # to another layout; a backward copies at most the gradient arriving from above when that is in another
    # layout (the last GN's, whose gradient comes through the average pool), never x
    gn_ops = ("groupnorm::gn_forward", "groupnorm::gn_backward")
    calls = [e for e in prof.events() if e.name in gn_ops and (e.cpu_parent is None or e.cpu_parent.name != e.name)]
    n_gn = sum(1 for m in model.modules() if isinstance(m, torch.nn.GroupNorm))
    assert sorted(e.name for e in calls) == sorted(list(gn_ops) * n_gn)
    for e in calls:
        copies = [c.name for c in _descendants(e) if c.name == "aten::copy_"]
        assert len(copies) <= (1 if e.name == "groupnorm::gn_backward" else 0), (e.name, copies)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-12, atol=1e-12)
    for name in ref[1]:
        torch.testing.assert_close(got[1][name], ref[1][name], rtol=1e-9, atol=1e-11, msg=f"grad of {name}")
        torch.testing.assert_close(got[2][name], ref[2][name], rtol=1e-9, atol=1e-11, msg=f"{name} after the step")


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_step_float32_against_float64(monkeypatch, fmt):
    """The float32 step through the kernels, contiguous and channels-last, against the float64 step of the same
    model and batch (the plain path): loss, every gradient and every parameter after the update, each within
    float32's tolerance of its tensor's largest value."""
    model, x, target = _model_and_batch(torch.float64)
    monkeypatch.setenv("GROUPNORM_DISABLE_KERNELS", "1")
    ref = _step(copy.deepcopy(model), x, target)
    monkeypatch.delenv("GROUPNORM_DISABLE_KERNELS")
    got = _step(copy.deepcopy(model).float().to(memory_format=fmt), x.float().contiguous(memory_format=fmt), target)
    tol = TOL[torch.float32]
    assert_close(got[0], _np(ref[0]), tol, "loss")
    for name in ref[1]:
        assert_close(got[1][name], _np(ref[1][name]), tol, f"grad of {name}")
        assert_close(got[2][name], _np(ref[2][name]), tol, f"{name} after the step")
