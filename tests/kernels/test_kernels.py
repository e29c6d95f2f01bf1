"""The compiled GroupNorm kernels against the NumPy float64 reference: values and all three gradients.

Grid: ranks 2..5, contiguous and channels-last, fp32 / fp64 / bf16 / fp16, C/G in {1, 2, 3, 16, 64}, odd
spatial sizes, N=1, spatial size 1, a group larger than the L2 cache, every activation; each instruction-set
level this CPU runs; plus hypothesis shapes, gradcheck (fp64), torch.compile, determinism across thread
counts, large means, memory formats, dispatch switches and bad input at the op boundary.
"""
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from groupnorm import kernels, reference
from groupnorm.args import activation_code
from groupnorm.kernels import _lib

from helpers import (ACTS, DTYPES, GRID, ROOT, STREAM_L2, TOL, TOL_LARGE_MEAN, TOL_SECOND, _np, assert_close,
                     channels_last, check_against_reference, make_case, needs_kernels, numerical_gradient)

pytestmark = needs_kernels


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cl", [False, True], ids=["contig", "chlast"])
def test_grid_against_reference(cl, dtype, act):
    for i, (shape, G) in enumerate(GRID):
        x, w, b, dy = make_case(shape, dtype, cl, seed=i)
        one_layout = len(shape) == 2 or np.prod(shape[2:]) == 1
        assert x.is_contiguous() == (not cl or one_layout), shape  # "chlast" is channels-last in fact
        check_against_reference(x, w, b, dy, G, act)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cl", [False, True], ids=["contig", "chlast"])
@pytest.mark.parametrize("affine", [False, "weight", "bias"], ids=["none", "weight-only", "bias-only"])
def test_partial_or_no_affine(cl, dtype, affine):
    """No weight and no bias, weight without bias, bias without weight; every dtype (the half types too)."""
    for i, act in enumerate(ACTS):
        x, w, b, dy = make_case((2, 12, 5, 3), dtype, cl, affine=affine, seed=i)
        check_against_reference(x, w, b, dy, 4, act)


def test_group_larger_than_l2_cache():
    # one group of 2 * 620 * 620 fp32 values = 3.1 MB (this machine: 2 MB L2 per core)
    for cl in (False, True):
        x, w, b, dy = make_case((1, 2, 620, 620), torch.float32, cl)
        check_against_reference(x, w, b, dy, 1, "silu")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cl", [False, True])
def test_large_outputs_take_non_temporal_stores(dtype, cl, streaming_stores):
    """Outputs that stream (y, dx) are written with non-temporal stores on the AVX-512 levels: 182x181 maps
    make every contiguous row start unaligned (head, aligned body and masked tail); channels-last rows of 32
    channels stream whole."""
    x, w, b, dy = make_case((2, 32, 182, 181), dtype, cl, seed=3)
    assert x.numel() * x.element_size() > 2 * STREAM_L2
    check_against_reference(x, w, b, dy, 8, "silu")


@pytest.mark.parametrize("shape, groups", [((4, 262144, 1), 1024), ((1, 65536, 17), 4096)])
def test_non_temporal_stores_with_rows_shorter_than_a_vector(shape, groups, streaming_stores):
    """Streamed outputs whose contiguous rows (one channel) hold 1 or 17 values: the aligned head can be longer than
    the row, and most rows have no whole vector to stream."""
    x, w, b, dy = make_case(shape, torch.float32, False, seed=5)
    assert x.numel() * x.element_size() > 2 * STREAM_L2
    check_against_reference(x, w, b, dy, groups, "relu")


@pytest.mark.parametrize("cl", [False, True])
def test_non_temporal_stores_into_unaligned_outputs(cl, streaming_stores):
    """The same values whether the output buffer starts aligned or one element off (contiguous: a longer
    unaligned head per row; channels-last: rows that cannot stream, so the plain-store loop). Bitwise for the
    affine part and relu; silu / gelu may differ by an ulp on channels-last, where the streaming rows use the
    AVX-512 activation code (rcp + Newton) and the plain rows the compiler-vectorized one (division)."""
    x, w, b, _ = make_case((2, 32, 181, 181), torch.float32, cl, seed=4)
    assert x.numel() * x.element_size() > 2 * STREAM_L2
    layout = _lib.layout_of(x)
    aligned = torch.empty_like(x)
    buf = torch.empty(x.numel() + 1, dtype=x.dtype)
    if cl:
        n, c, h, wd = x.shape
        unaligned = buf[1:].view(n, h, wd, c).permute(0, 3, 1, 2)
    else:
        unaligned = buf[1:].view(x.shape)
    assert unaligned.stride() == x.stride() and unaligned.data_ptr() % 64 != 0
    for act in (None, "relu", "gelu"):
        for out in (aligned, unaligned):
            out.fill_(float("nan"))
            _lib.forward(x, 8, w, b, 1e-5, activation_code(act), out, None, None, layout, 2)
        if act in (None, "relu"):
            assert torch.equal(aligned, unaligned), act
        else:
            torch.testing.assert_close(aligned, unaligned, rtol=2e-6, atol=2e-6)


def test_every_instruction_set_level(isa_level):
    """Every level this CPU runs gives the reference's answers: baseline and AVX2 (CPUs without AVX-512), AVX-512
    (which the best level, AVX512_BF16, still runs for every dtype but bfloat16), and AVX512_BF16."""
    for (shape, G), dtype, cl, act in itertools.product(GRID, DTYPES, (False, True), ("silu", "gelu", None)):
        x, w, b, dy = make_case(shape, dtype, cl, seed=G)
        check_against_reference(x, w, b, dy, G, act)


def test_set_isa_rejects_unsupported_level():
    with pytest.raises(ValueError, match="level 7"):
        kernels.set_isa(7)


@settings(max_examples=40)  # derandomized (conftest's profile); the data seeded by the drawn seed
@given(
    n=st.integers(1, 3), g=st.integers(1, 4), d=st.integers(1, 5),
    spatial=st.lists(st.integers(1, 7), min_size=0, max_size=3),
    dtype=st.sampled_from([torch.float32, torch.float64]), cl=st.booleans(), affine=st.booleans(),
    act=st.sampled_from(ACTS), seed=st.integers(0, 2**16),
)
def test_hypothesis_shapes(n, g, d, spatial, dtype, cl, affine, act, seed):
    shape = (n, g * d, *spatial)
    x, w, b, dy = make_case(shape, dtype, cl and len(spatial) > 0, affine=affine, seed=seed)
    check_against_reference(x, w, b, dy, g, act)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("cl", [False, True], ids=["contig", "chlast"])
def test_gradcheck_fp64(cl, act):
    x, w, b, _ = make_case((2, 6, 3, 4), torch.float64, cl, seed=3)
    inputs = tuple(t.detach().clone().requires_grad_(True) for t in (x, w, b))
    # the public call and the operator itself (its C++ autograd kernel)
    assert torch.autograd.gradcheck(lambda x, w, b: kernels.group_norm(x, 3, w, b, 1e-5, act), inputs)
    assert torch.autograd.gradcheck(
        lambda x, w, b: torch.ops.groupnorm.gn_forward(x, 3, w, b, 1e-5, activation_code(act))[0], inputs)


@pytest.mark.parametrize("act", [None, "relu", "silu", "gelu"])
def test_double_backward_eager_against_the_reference(act):
    """Double backward (eager: the operator's backward node differentiates the plain path): gradgradcheck in
    float64, and with only x needing gradients, d/dx sum(dL/dx) for L = sum(y^2) against a finite difference of
    the reference's exact dL/dx."""
    x, w, b, _ = make_case((2, 4, 3), torch.float64, False)
    inputs = tuple(t.detach().clone().requires_grad_(True) for t in (x, w, b))
    f = lambda x, w, b: kernels.group_norm(x, 2, w, b, 1e-5, act)  # noqa: E731
    assert torch.autograd.gradgradcheck(f, inputs)
    xg = x.detach().clone().requires_grad_(True)
    (dx,) = torch.autograd.grad(kernels.group_norm(xg, 2, w, b, 1e-5, act).pow(2).sum(), xg, create_graph=True)
    (ddx,) = torch.autograd.grad(dx.sum(), xg)
    wn, bn = _np(w), _np(b)

    def sum_of_dx(xn):
        y = reference.group_norm(xn, 2, wn, bn, activation=act)
        return reference.group_norm_backward(2 * y, xn, 2, wn, bn, activation=act)[0].sum()

    (want,) = numerical_gradient(sum_of_dx, [_np(x)])
    assert_close(ddx, want, TOL_SECOND, f"d2 {act}")


@pytest.mark.parametrize("act", [None, "silu"])
def test_double_backward_through_the_op_and_gn_backward_is_not_differentiable(act):
    """The operator's backward node differentiates the plain path when create_graph=True; gn_backward itself
    refuses to record a graph, with an error that says what to do."""
    x, w, b, dy = make_case((2, 4, 3), torch.float64, False)
    inputs = tuple(t.detach().clone().requires_grad_(True) for t in (x, w, b))
    code = activation_code(act)
    assert torch.autograd.gradgradcheck(lambda x, w, b: torch.ops.groupnorm.gn_forward(x, 2, w, b, 1e-5, code)[0],
                                        inputs)
    _, mean, rstd = torch.ops.groupnorm.gn_forward(x, 2, w, b, 1e-5, code)
    with pytest.raises(RuntimeError, match="gn_backward is not differentiable"):
        torch.ops.groupnorm.gn_backward(dy.requires_grad_(), x, mean, rstd, w, b, 2, code, True, True, True)


@pytest.mark.parametrize("cl", [False, True], ids=["contig", "chlast"])
@pytest.mark.parametrize("with_residual", [False, True])
def test_opcheck_schema_fake_and_autograd_registration(cl, with_residual):
    """torch.library.opcheck: the schema, the Meta kernel against the CPU kernel (fake tensors), the autograd
    registration and AOT dispatch with dynamic shapes, for both operators."""
    x, w, b, dy = make_case((2, 6, 3, 5), torch.float32, cl, seed=8)
    r = channels_last(torch.randn(2, 6, 3, 5)) if cl else torch.randn(2, 6, 3, 5)
    res = r if with_residual else None
    xg, wg, bg = (t.detach().clone().requires_grad_(True) for t in (x, w, b))
    torch.library.opcheck(torch.ops.groupnorm.gn_forward.default, (xg, 3, wg, bg, 1e-5, 2, res))
    _, mean, rstd = torch.ops.groupnorm.gn_forward(x, 3, w, b, 1e-5, 2, res)
    torch.library.opcheck(torch.ops.groupnorm.gn_backward.default,
                          (dy, x, mean, rstd, w, b, 3, 2, True, True, True, res))
    # the Meta kernel alone: shapes and strides, no data
    y, m, rs = torch.ops.groupnorm.gn_forward(x.to("meta"), 3, w.to("meta"), b.to("meta"), 1e-5, 2)
    assert y.device.type == "meta" and y.shape == x.shape and y.stride() == x.stride()
    assert m.shape == rs.shape == (2, 3) and m.dtype == torch.float64


class _SmallNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.w = torch.nn.Parameter(torch.rand(16) + 0.5)
        self.b = torch.nn.Parameter(torch.randn(16) * 0.1)

    def forward(self, x):
        h = kernels.group_norm(self.conv(x), 4, self.w, self.b, 1e-5, "silu")
        return kernels.group_norm(h, 8, None, None, 1e-5, "relu").mean(dim=(2, 3))


@pytest.mark.slow  # torch.compile / subprocess
def test_torch_compile_matches_eager():
    torch.manual_seed(0)
    net = _SmallNet()
    x = torch.randn(2, 3, 8, 8)
    ref = net(x)
    ref.sum().backward()
    ref_grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    out.sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    for p, g in zip(net.parameters(), ref_grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # torch.compile in a fresh process
def test_torch_compile_fullgraph_as_a_fresh_process_first_call():
    """The first GN call of a process may be the one dynamo traces: nothing left to load or look up then."""
    import subprocess
    import sys

    code = ("import torch, groupnorm\n"
            "m = groupnorm.nn.GroupNorm(4, 8, activation='silu')\n"
            "x = torch.randn(2, 8, 5, 5, requires_grad=True)\n"
            "y = torch.compile(m, backend='aot_eager', fullgraph=True)(x)\n"
            "y.sum().backward()\n"
            "torch.testing.assert_close(y, m(x))\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=600)


@pytest.mark.slow  # torch.compile
def test_torch_compile_decomposes_the_entry_into_what_eager_runs(monkeypatch):
    """Under torch.compile the C++ entry is traced too: AOT autograd decomposes it, at trace time, into the
    kernels' gn_forward where they take the call and into torch's own GN where they do not (the switch set)."""
    from torch._functorch.aot_autograd import aot_module_simplified

    from groupnorm import functional

    def graph_of(fn, *args):
        torch._dynamo.reset()
        seen = []

        def backend(gm, inputs):
            return aot_module_simplified(gm, inputs, fw_compiler=lambda g, _: seen.append(g.code) or g)

        out = torch.compile(fn, backend=backend, fullgraph=True)(*args)
        torch.testing.assert_close(out, fn(*args), rtol=1e-5, atol=1e-6)
        return seen[0]

    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    f = lambda t: functional.group_norm(t, 4, activation="silu")  # noqa: E731
    monkeypatch.delenv("GROUPNORM_DISABLE_KERNELS", raising=False)
    code = graph_of(f, x)
    assert "groupnorm.gn_forward" in code and "native_group_norm" not in code
    monkeypatch.setenv("GROUPNORM_DISABLE_KERNELS", "1")
    code = graph_of(f, x)
    assert "groupnorm.gn_forward" not in code and "native_group_norm" in code
    torch._dynamo.reset()


@pytest.mark.slow  # torch.compile / subprocess
def test_torch_compile_inductor_forward():
    x, w, b, _ = make_case((2, 8, 5, 5), torch.float32, True)
    f = torch.compile(lambda x: kernels.group_norm(x, 4, w, b, 1e-5, "gelu") * 2.0, fullgraph=True)
    out = f(x)
    torch.testing.assert_close(out, kernels.group_norm(x, 4, w, b, 1e-5, "gelu") * 2.0)


def test_results_independent_of_thread_count():
    old = torch.get_num_threads()
    outs = []
    try:
        for nt in (1, 2, 3):
            torch.set_num_threads(nt)
            res = []
            for cl in (False, True):
                x, w, b, dy = make_case((3, 64, 19, 23), torch.float32, cl, seed=5)
                xr, wr, br = (t.clone().requires_grad_(True) for t in (x, w, b))
                y, mean, rstd = torch.ops.groupnorm.gn_forward(xr, 8, wr, br, 1e-5, activation_code("silu"))
                res += [y, mean, rstd, *torch.autograd.grad(y, (xr, wr, br), dy)]
            outs.append(res)
    finally:
        torch.set_num_threads(old)
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            assert torch.equal(a, b)  # bitwise: the split into chunks depends only on the shape


@pytest.mark.parametrize("cl", [False, True], ids=["contig", "chlast"])
def test_large_mean_float32(cl):
    """float32 input with mean 1e6 and unit spread: no cancellation (matches the reference to ~1e-5)."""
    x, w, b, dy = make_case((2, 8, 9, 9), torch.float32, cl, loc=1e6, scale=1.0)
    check_against_reference(x, w, b, dy, 2, "silu", tol=TOL_LARGE_MEAN)


def test_constant_group_is_finite():
    x = torch.full((2, 4, 3, 3), 7.0)
    y = kernels.group_norm(x, 2, None, None, 1e-5, None)
    assert torch.equal(y, torch.zeros_like(y))


def test_memory_formats_preserved_and_odd_strides():
    x, w, b, dy = make_case((2, 8, 5, 6), torch.float32, False)
    ref = reference.group_norm(_np(x), 4, _np(w), _np(b), activation="relu")
    views = {
        "channels_last": x.contiguous(memory_format=torch.channels_last),
        "permuted": x.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2),  # dense, odd strides
        "sliced": torch.stack([x, x], dim=-1)[..., 0],  # not dense
    }
    for name, v in views.items():
        vr = v.clone().requires_grad_(True) if name != "sliced" else v.requires_grad_(True)
        y = kernels.group_norm(vr, 4, w, b, 1e-5, "relu")
        assert_close(y, ref, TOL[torch.float32], name)
        if name != "sliced":
            assert y.stride() == v.stride(), name
        (dx,) = torch.autograd.grad(y, vr, dy)
        assert_close(dx, reference.group_norm_backward(_np(dy), _np(x), 4, _np(w), _np(b), activation="relu")[0],
                     TOL[torch.float32], name)
    x5 = torch.randn(2, 4, 3, 4, 5).contiguous(memory_format=torch.channels_last_3d)
    assert kernels.group_norm(x5, 2).is_contiguous(memory_format=torch.channels_last_3d)


def test_kernel_takes_and_disable_switch(monkeypatch):
    """The one decision (any value may come in)."""
    x = torch.randn(2, 4, 3)
    w = torch.ones(4)
    monkeypatch.delenv("GROUPNORM_DISABLE_KERNELS", raising=False)
    assert kernels.kernel_takes(x, w, None)
    assert kernels.kernel_takes(x, w, w, torch.randn(2, 4, 3).transpose(1, 2).contiguous().transpose(1, 2))
    monkeypatch.setenv("GROUPNORM_DISABLE_KERNELS", "1")
    assert not kernels.kernel_takes(x, w, None)
    monkeypatch.setenv("GROUPNORM_DISABLE_KERNELS", "0")
    assert kernels.kernel_takes(x, w, None)
    assert not kernels.kernel_takes(x.to("meta"), None, None)
    assert not kernels.kernel_takes(x, w.double(), None)  # dtype mismatch
    assert not kernels.kernel_takes(x, None, w.double())
    assert not kernels.kernel_takes(x, w.to("meta"), None)
    assert not kernels.kernel_takes(torch.empty(0, 4, 3), None, None)
    assert not kernels.kernel_takes(x.to_sparse(), None, None)
    assert not kernels.kernel_takes(x.numpy(), None, None) and not kernels.kernel_takes(x, x.numpy()[0, :, 0])
    assert kernels.kernel_for(x, w) is torch.ops.groupnorm.gn_forward.default._op  # eager: the C++ entry
    # during ONNX export (either exporter's flag; kernel_takes reads the flags torch.onnx.is_in_onnx_export reads)
    from torch.onnx._internal.exporter import _flags
    from torch.onnx._internal.torchscript_exporter._globals import GLOBALS

    assert kernels.kernel_takes(x, None, None)
    monkeypatch.setattr(GLOBALS, "in_onnx_export", True)
    assert torch.onnx.is_in_onnx_export() and not kernels.kernel_takes(x, None, None)
    monkeypatch.setattr(GLOBALS, "in_onnx_export", False)
    monkeypatch.setattr(_flags, "_is_onnx_exporting", True)
    assert torch.onnx.is_in_onnx_export() and not kernels.kernel_takes(x, None, None)


def test_functional_dispatches_to_kernels(monkeypatch):
    """functional.group_norm asks route once and calls what it returns once, with normalized arguments."""
    from groupnorm import functional

    calls, asked = [], []
    real_route = functional._route

    def spy_route(*a):
        asked.append(1)
        how, op = real_route(*a)
        if op is None:
            return how, op
        return how, (lambda *b: calls.append((how, b[1], b[5], b[4])) or op(*b))  # (route, G, code, eps)

    monkeypatch.setattr(functional, "_route", spy_route)
    monkeypatch.delenv("GROUPNORM_DISABLE_KERNELS", raising=False)
    E = kernels.ENTRY
    x = torch.randn(2, 8, 4, 4)
    y = functional.group_norm(x, 4, activation="silu")
    assert calls == [(E, 4, 2, 1e-5)] and asked == [1]
    # group_size=, an int eps and a NumPy float eps take the kernels too, as G and a float
    y_gs = functional.group_norm(x, group_size=2, eps=np.float64(1e-5), activation="silu")
    assert calls[-1] == (E, 4, 2, 1e-5) and type(calls[-1][3]) is float
    torch.testing.assert_close(y_gs, y, rtol=0, atol=0)
    functional.group_norm(x, 4, eps=0, activation="silu")
    assert calls[-1] == (E, 4, 2, 0.0) and type(calls[-1][3]) is float and len(calls) == 3 and len(asked) == 3
    ref = reference.group_norm(_np(x), 4, activation="silu")
    assert_close(y, ref, TOL[torch.float32], "kernels")
    # declined cases go through the same entry (which runs the plain operator), asked once: a float64 weight
    # for a float32 x is rounded to float32 (the plain path's rule: torch's GN takes parameters of x's dtype)
    w64 = torch.linspace(0.5, 1.5, 8, dtype=torch.float64)
    y_mixed = functional.group_norm(x, 4, w64)
    assert calls[-1] == (E, 4, 0, 1e-5) and len(asked) == 4 and not kernels.kernel_takes(x, w64)
    assert y_mixed.dtype == torch.float32
    assert_close(y_mixed, reference.group_norm(_np(x), 4, _np(w64.float())), TOL[torch.float32], "float64 weight")
    monkeypatch.setenv("GROUPNORM_DISABLE_KERNELS", "1")
    y_plain = functional.group_norm(x, 4, activation="silu")
    assert calls[-1] == (E, 4, 2, 1e-5) and len(calls) == 5 and len(asked) == 5 and not kernels.kernel_takes(x)
    assert_close(y_plain, ref, TOL[torch.float32], "plain")


@pytest.mark.parametrize("kernels_on", [True, False], ids=["kernels", "plain"])
def test_both_paths_raise_the_same_errors(monkeypatch, kernels_on):
    """Arguments are checked once, by the path that runs: the operator (C++) or functional's own checks."""
    from groupnorm import functional

    if not kernels_on:
        monkeypatch.setenv("GROUPNORM_DISABLE_KERNELS", "1")
    x = torch.randn(2, 8, 3)
    for kwargs, exc, msg in [
        (dict(num_groups=3), ValueError, "num_groups=3 does not divide num_channels=8"),
        (dict(num_groups=0), ValueError, "num_groups=0"),
        (dict(num_groups=4, weight=torch.ones(7)), ValueError, r"weight must have shape \(8,\) .*got \(7,\)"),
        (dict(num_groups=4, bias=torch.ones(8, 1)), ValueError, r"bias must have shape \(8,\) .*got \(8, 1\)"),
        (dict(num_groups=4, eps=-1.0), ValueError, "eps=-1.0"),
        (dict(num_groups=4, eps=float("nan")), ValueError, "eps=nan"),
        (dict(num_groups=4, residual=x[:1]), ValueError, r"residual has shape \(1, 8, 3\) but x has shape \(2, 8, 3\)"),
    ]:
        with pytest.raises(exc, match=msg):
            functional.group_norm(x, **kwargs)
    with pytest.raises(ValueError, match=r"rank >= 2, got shape \(8,\)"):
        functional.group_norm(torch.randn(8), 4)


def test_functorch_transforms_take_the_plain_path():
    from groupnorm import functional

    x = torch.randn(3, 2, 8, 5, dtype=torch.float64)
    w = torch.randn(8, dtype=torch.float64)
    ys = torch.func.vmap(lambda t: functional.group_norm(t, 4, w, None, activation="silu"))(x)
    for i in range(3):
        assert_close(ys[i], reference.group_norm(_np(x[i]), 4, _np(w), activation="silu"), TOL[torch.float64], "vmap")
    gw = torch.func.grad(lambda ww: functional.group_norm(x[0], 4, ww, None, activation="silu").square().sum())(w)
    wr = w.clone().requires_grad_()
    functional.group_norm(x[0], 4, wr, None, activation="silu").square().sum().backward()
    torch.testing.assert_close(gw, wr.grad)


BAD_FORWARD = [
    (lambda: (torch.randn(2, 4, 3).to(torch.int64), 2, None, None, 1e-5, 0), TypeError, "dtype torch.int64"),
    (lambda: (torch.randn(2, 4, 3), 3, None, None, 1e-5, 0), ValueError, "num_groups=3 does not divide num_channels=4"),
    (lambda: (torch.randn(2, 4, 3), 0, None, None, 1e-5, 0), ValueError, "num_groups=0"),
    (lambda: (torch.randn(2, 4, 3), 2, torch.ones(5), None, 1e-5, 0), ValueError, r"weight must have shape \(4,\)"),
    (lambda: (torch.randn(2, 4, 3), 2, None, torch.ones(4, dtype=torch.float64), 1e-5, 0), TypeError, "bias has dtype"),
    (lambda: (torch.empty(0, 4, 3), 2, None, None, 1e-5, 0), ValueError, "x is empty"),
    (lambda: (torch.randn(2, 4, 0), 2, None, None, 1e-5, 0), ValueError, "x is empty"),
    (lambda: (torch.randn(4), 1, None, None, 1e-5, 0), ValueError, "rank >= 2"),
    (lambda: (torch.randn(2, 4, 3), 2, None, None, -1.0, 0), ValueError, "eps=-1.0"),
    (lambda: (torch.randn(2, 4, 3), 2, None, None, float("nan"), 0), ValueError, "eps=nan"),
    (lambda: (torch.randn(2, 4, 3), 2, None, None, 1e-5, 7), ValueError, "activation=7"),
]


@pytest.mark.parametrize("case", range(len(BAD_FORWARD)))
def test_bad_input_at_op_boundary(case):
    make, exc, msg = BAD_FORWARD[case]
    with pytest.raises(exc, match=msg):
        torch.ops.groupnorm.gn_forward(*make())


def test_bad_backward_input_and_raw_library_checks():
    x = torch.randn(2, 4, 3)
    y, mean, rstd = torch.ops.groupnorm.gn_forward(x, 2, None, None, 1e-5, 0)
    with pytest.raises(ValueError, match="dy has shape"):
        torch.ops.groupnorm.gn_backward(torch.randn(2, 4, 4), x, mean, rstd, None, None, 2, 0, True, False, False)
    with pytest.raises(ValueError, match=r"mean must have shape \(2, 2\)"):
        torch.ops.groupnorm.gn_backward(torch.randn_like(x), x, mean[:, :1], rstd, None, None, 2, 0, True, False, False)
    with pytest.raises(TypeError, match="rstd has dtype"):
        torch.ops.groupnorm.gn_backward(torch.randn_like(x), x, mean, rstd.float(), None, None, 2, 0, True, False, False)
    # the C side checks too: a bad group count passed straight to the library is an error code, not a crash
    with pytest.raises(RuntimeError, match="invalid argument"):
        _lib.forward(x, 3, None, None, 1e-5, 0, torch.empty_like(x), torch.empty(6, dtype=torch.float64),
                     torch.empty(6, dtype=torch.float64), _lib.LAYOUT_NCS, 1)
    with pytest.raises(ValueError, match="unknown|activation"):
        kernels.group_norm(x, 2, None, None, 1e-5, "tanh")


def test_inference_without_statistics_gives_the_same_y():
    """Inference (no statistics returned: the C side writes them to scratch) gives the same y, bit for bit, as a
    call that returns them, and the reference's values."""
    x = torch.randn(3, 6, 5, 7)
    w, b = torch.randn(6), torch.randn(6)
    with torch.no_grad():
        y_inf = kernels.group_norm(x, 3, w, b, 1e-5, "silu")
    y, mean, rstd = torch.ops.groupnorm.gn_forward(x, 3, w, b, 1e-5, activation_code("silu"))
    assert torch.equal(y, y_inf)
    ref = reference.group_norm(x.double().numpy(), 3, w.double().numpy(), b.double().numpy(), activation="silu")
    assert_close(y, ref, TOL[torch.float32], "y")


def test_abi_version_is_defined_once_and_checked_on_load(monkeypatch):
    """GN_ABI_VERSION in gn_api.h is the library's version and what _lib expects; a library of another version
    does not load, and load_error says which versions differ."""
    import importlib
    import re

    header = (ROOT / "src" / "groupnorm" / "kernels" / "csrc" / "gn_api.h").read_text()
    defined = [int(v) for v in re.findall(r"#define GN_ABI_VERSION (\d+)", header)]
    assert defined == [_lib.ABI_VERSION]
    assert importlib.import_module(_lib.EXT_NAME).abi_version() == _lib.ABI_VERSION
    monkeypatch.setattr(_lib, "ABI_VERSION", _lib.ABI_VERSION + 100)
    monkeypatch.setattr(_lib, "_lib", None)
    monkeypatch.setattr(_lib, "_load_error", None)
    assert not _lib.is_loaded()
    assert f"ABI version {defined[0]} != {defined[0] + 100}" in _lib.load_error()
