"""The 3D ResNet for clips: shapes, parameter count, the compiled 5-D GN kernels (NCDHW and channels_last_3d),
a GN layer inside it against the float64 reference (values and gradients), per-worker BN, training."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import groupnorm.nn as gnn
from groupnorm import kernels, reference
from groupnorm.experiments.data.clips import ClipSpec, load_clips
from groupnorm.experiments.models.resnet3d import ResNet3d, build
from groupnorm.nn.factory import NORM_NAMES
from helpers import SAMPLE_DATA, TOL, assert_close

CL3D = torch.channels_last_3d
needs_kernels = pytest.mark.skipif(not kernels.is_available(), reason="compiled kernels not built")


def _expected_params(widths, blocks, cin, classes, norm, first_stride=1, time_stride=2):
    """The module docstring's formula."""
    conv_bias = norm == "none"
    norm_p = 0 if norm == "none" else 2

    def conv(i, o, k):
        return k * i * o + (o if conv_bias else 0)

    total = conv(cin, widths[0], 27) + norm_p * widths[0]
    c = widths[0]
    for i, (w, d) in enumerate(zip(widths, blocks)):
        for j in range(d):
            strides = j == 0 and (first_stride > 1 if i == 0 else True)
            total += conv(c, w, 27) + conv(w, w, 27) + 2 * norm_p * w
            if c != w or strides:
                total += conv(c, w, 1) + norm_p * w
            c = w
    return total + c * classes + classes


@pytest.mark.parametrize("norm", NORM_NAMES)
def test_shapes_parameters_and_gamma_init(norm):
    torch.manual_seed(0)
    m = ResNet3d(norm, widths=(8, 16), blocks=(2, 1), groups=4, workers=2, in_channels=3, num_classes=7)
    assert sum(p.numel() for p in m.parameters()) == _expected_params((8, 16), (2, 1), 3, 7, norm)
    out = m(torch.randn(4, 3, 4, 8, 8))
    assert out.shape == (4, 7) and torch.isfinite(out).all()
    out.square().sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    if norm != "none":
        for block in m.layers:
            assert torch.all(block.norm2.weight == 0) and torch.all(block.norm1.weight == 1)
    if norm == "gn+ws":
        assert all(isinstance(c, gnn.WSConv3d) for c in m.modules() if isinstance(c, torch.nn.Conv3d))


def test_default_parameter_count_and_strides():
    assert sum(p.numel() for p in ResNet3d().parameters()) == 902_344 == _expected_params((32, 64, 128), (1, 1, 1),
                                                                                          1, 40, "gn")
    shapes = {}
    for time_stride, stem, first in ((2, 1, 1), (1, 2, 2)):
        m = ResNet3d("gn", widths=(8, 16, 32), groups=4, stem_stride=stem, first_stride=first,
                     time_stride=time_stride)
        assert sum(p.numel() for p in m.parameters()) == _expected_params((8, 16, 32), (1, 1, 1), 1, 40, "gn",
                                                                          first_stride=first)
        hooks = [b.register_forward_hook(lambda mod, i, o, k=k: shapes.__setitem__(k, tuple(o.shape)))
                 for k, b in enumerate(m.layers)]
        m(torch.randn(2, 1, 8, 32, 32))
        for h in hooks:
            h.remove()
        if time_stride == 2:
            assert [shapes[k] for k in range(3)] == [(2, 8, 8, 32, 32), (2, 16, 4, 16, 16), (2, 32, 2, 8, 8)]
        else:
            assert [shapes[k] for k in range(3)] == [(2, 8, 8, 8, 8), (2, 16, 8, 4, 4), (2, 32, 8, 2, 2)]


def _gn_calls(model, x):
    """Names of the kernels' operators one forward + backward of ``model`` on ``x`` reaches (outermost)."""
    ops = ("groupnorm::gn_forward", "groupnorm::gn_backward")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        model(x).square().sum().backward()
    return sorted(e.name for e in prof.events()
                  if e.name in ops and (e.cpu_parent is None or e.cpu_parent.name != e.name))


@needs_kernels
@pytest.mark.parametrize("fmt", [torch.contiguous_format, CL3D])
def test_gn_layers_run_the_compiled_5d_kernels(fmt):
    torch.manual_seed(0)
    m = ResNet3d("gn", widths=(8, 16), blocks=(1, 1), groups=4).to(memory_format=fmt)
    x = torch.randn(2, 1, 4, 8, 8).contiguous(memory_format=fmt)
    gns = [g for g in m.modules() if isinstance(g, gnn.GroupNorm)]
    seen = []

    def check(mod, args, kwargs):
        xin, res = args[0], kwargs.get("residual")
        seen.append(mod)
        assert xin.dim() == 5 and xin.is_contiguous(memory_format=fmt)
        assert kernels.kernel_takes(xin, mod.weight, mod.bias, res)

    hooks = [g.register_forward_pre_hook(check, with_kwargs=True) for g in gns]
    calls = _gn_calls(m, x)
    for h in hooks:
        h.remove()
    assert len(seen) == len(gns) == 6  # stem, 2 per block, the projection of the second block
    assert calls == sorted(["groupnorm::gn_forward", "groupnorm::gn_backward"] * len(gns))
    # the same forward and backward without the kernels: GN's plain path, no kernel operator
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GROUPNORM_DISABLE_KERNELS", "1")
        assert _gn_calls(m, x) == []


@needs_kernels
@pytest.mark.parametrize("dtype, fmt", [(torch.float64, torch.contiguous_format), (torch.float32, CL3D)])
def test_a_gn_layer_inside_matches_the_reference(dtype, fmt):
    """The second block's last GN (ReLU(GN(conv2 out) + projection shortcut)): its output and the gradients of
    its input, residual, gamma and beta within a training step, against ``reference.group_norm(_backward)``."""
    torch.manual_seed(0)
    m = ResNet3d("gn", widths=(8, 16), blocks=(1, 1), groups=4).to(dtype=dtype, memory_format=fmt)
    gn = m.layers[1].norm2
    with torch.no_grad():  # gamma starts at 0 (dx would be 0): random affine parameters
        gn.weight.uniform_(0.5, 1.5)
        gn.bias.uniform_(-0.5, 0.5)
    got = {}

    def pre(mod, args, kwargs):
        xin, res = args[0], kwargs["residual"]
        got.update(x=xin.detach().clone(), r=res.detach().clone())
        xin.register_hook(lambda g: got.__setitem__("dx", g))
        res.register_hook(lambda g: got.__setitem__("dr", g))

    def post(mod, args, kwargs, out):
        got["y"] = out.detach().clone()
        out.register_hook(lambda g: got.__setitem__("dy", g))

    h1 = gn.register_forward_pre_hook(pre, with_kwargs=True)
    h2 = gn.register_forward_hook(post, with_kwargs=True)
    x = torch.randn(3, 1, 4, 8, 8, dtype=dtype).contiguous(memory_format=fmt)
    logits = m(x)
    F.cross_entropy(logits, torch.tensor([0, 5, 9])).backward()
    h1.remove()
    h2.remove()
    assert got["x"].is_contiguous(memory_format=fmt) and kernels.kernel_takes(got["x"], gn.weight, gn.bias, got["r"])

    def np64(t):
        return t.detach().double().numpy()

    tol = TOL[dtype]
    args = (np64(got["x"]), 4, np64(gn.weight), np64(gn.bias), gn.eps)
    ref_y = reference.group_norm(*args, activation="relu", residual=np64(got["r"]))
    assert_close(got["y"], ref_y, tol, "y")
    dx, dw, db, dr = reference.group_norm_backward(np64(got["dy"]), *args, activation="relu",
                                                   residual=np64(got["r"]))
    _, rstd = reference.group_norm_stats(np64(got["x"]), 4, gn.eps)
    scale = float(rstd.max() * np.abs(np64(got["dy"])).max() * np.abs(np64(gn.weight)).max())
    assert_close(got["dx"], dx, tol, "dx", scale=scale)
    assert_close(got["dr"], dr, tol, "dresidual")
    assert_close(gn.weight.grad, dw, tol, "dgamma")
    assert_close(gn.bias.grad, db, tol, "dbeta")
    assert float(np.abs(dx).max()) > 1e-6  # a gradient that exists


@pytest.mark.parametrize("norm", ["gn", "bn"])
def test_channels_last_3d_computes_what_ncdhw_computes(norm):
    torch.manual_seed(1)
    m = ResNet3d(norm, widths=(8, 16), blocks=(1, 1), groups=4, workers=2).double()
    for p in m.parameters():  # nonzero gammas everywhere: every path contributes
        if p.ndim == 1:
            torch.nn.init.uniform_(p, 0.5, 1.5)
    mc = copy.deepcopy(m).to(memory_format=CL3D)
    x = torch.randn(4, 1, 4, 8, 8, dtype=torch.float64)
    y, yc = m(x), mc(x.contiguous(memory_format=CL3D))
    torch.testing.assert_close(yc, y, rtol=1e-10, atol=1e-10)
    y.sum().backward()
    yc.sum().backward()
    for (name, p), pc in zip(m.named_parameters(), mc.parameters()):
        torch.testing.assert_close(pc.grad, p.grad, rtol=1e-9, atol=1e-10, msg=name)


def test_bn_statistics_are_per_worker_over_clips_and_frames():
    torch.manual_seed(2)
    m = ResNet3d("bn", widths=(8, 16), blocks=(1, 1), groups=4, workers=2)
    x = torch.randn(4, 1, 4, 8, 8)
    stem = m.stem
    y = stem(x)
    x2 = x.clone()
    x2[2:] = x2[2:] * 3 + 1  # the second worker's clips change
    y2 = stem(x2)
    torch.testing.assert_close(y2[:2], y[:2])  # worker 0's outputs do not see worker 1's clips
    assert not torch.allclose(y2[2:], y[2:])
    conv = stem[0](x[:2]).double()  # worker 0: per channel over (its 2 clips, T, H, W)
    mu, var = conv.mean(dim=(0, 2, 3, 4), keepdim=True), conv.var(dim=(0, 2, 3, 4), unbiased=False, keepdim=True)
    torch.testing.assert_close(y[:2].double(), F.relu((conv - mu) / torch.sqrt(var + 1e-5)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("norm", ["gn", "bn"])
def test_loss_decreases_on_a_tiny_batch_of_clips(norm):
    train, _ = load_clips(SAMPLE_DATA, ClipSpec(canvas=16, frames=4), seed=0)
    x, y = next(train.eval_batches(8))
    torch.manual_seed(0)
    m = ResNet3d(norm, widths=(8, 16), blocks=(1, 1), groups=4, workers=2, num_classes=train.info.num_classes)
    opt = torch.optim.SGD(m.parameters(), lr=0.2, momentum=0.9)
    losses = []
    for _ in range(12):
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 3.0  # about log(40) at the start (the head starts near zero)
    assert losses[-1] < 0.6 * losses[0], losses


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match=r"widths=\(8, 16\) and blocks=\(1,\)"):
        ResNet3d(widths=(8, 16), blocks=(1,))
    with pytest.raises(ValueError, match="time_stride=0"):
        ResNet3d(time_stride=0)
    with pytest.raises(ValueError, match=r"expects clips \(N, C, T, H, W\), got shape \(2, 1, 8, 8\)"):
        ResNet3d(widths=(8,), blocks=(1,), groups=4)(torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match="unknown norm"):
        ResNet3d("batchnorm")


def test_build_takes_the_run_shape_and_the_arch_fixed_fields():
    from types import SimpleNamespace

    m = build(SimpleNamespace(widths=None, blocks=None), "gn", 1, 40,
              dict(widths=[8, 16], blocks=[1, 2], stem_stride=2, first_stride=1), groups=4, group_size=None,
              workers=1)
    assert sum(p.numel() for p in m.parameters()) == _expected_params((8, 16), (1, 2), 1, 40, "gn")
    assert m.stem[0].stride == (1, 2, 2) and len(m.layers) == 3 and m.stem[1].num_groups == 4
    fixed = build(SimpleNamespace(widths=(8,), blocks=(2,)), "bn", 3, 5, {}, groups=32, group_size=None, workers=2)
    assert len(fixed.layers) == 2 and fixed.fc.out_features == 5 and fixed.stem[1].workers == 2
