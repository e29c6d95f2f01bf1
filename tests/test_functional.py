"""groupnorm.functional.group_norm against the NumPy float64 reference: values and gradients (x, weight, bias).

Every test that takes ``gn_path`` runs twice: through the default dispatch (the compiled kernels where they
cover the case) and with GROUPNORM_DISABLE_KERNELS=1 (the plain PyTorch path).
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from groupnorm import functional as GF
from groupnorm import reference as R
from groupnorm.plain import ERROR_BUDGET

TOL = {
    torch.float64: dict(atol=1e-10, rtol=1e-8),
    torch.float32: dict(atol=2e-5, rtol=1e-4),
    torch.bfloat16: dict(atol=6e-2, rtol=2e-2),
    torch.float16: dict(atol=1e-2, rtol=5e-3),
}
GRAD_TOL = {
    torch.float64: dict(atol=1e-9, rtol=1e-7),
    torch.float32: dict(atol=1e-4, rtol=1e-3),
    torch.bfloat16: dict(atol=1.5e-1, rtol=5e-2),
    torch.float16: dict(atol=3e-2, rtol=1e-2),
}


def run_and_compare(x, groups, act, affine=True, dtype=torch.float64, seed=0):
    """Forward + backward through GF.group_norm; compare with the reference on the same (rounded) values."""
    gen = torch.Generator().manual_seed(seed)
    c = x.shape[1]
    w = (torch.rand(c, generator=gen, dtype=torch.float64) + 0.5).to(dtype) if affine else None
    b = torch.randn(c, generator=gen, dtype=torch.float64).to(dtype) if affine else None
    x = x.detach().requires_grad_(True)
    if affine:
        w.requires_grad_(True)
        b.requires_grad_(True)
    y = GF.group_norm(x, groups, w, b, activation=act)
    assert y.shape == x.shape and y.dtype == x.dtype
    dy = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(dtype)
    y.backward(dy)
    xn = x.detach().double().numpy()
    wn = w.detach().double().numpy() if affine else None
    bn = b.detach().double().numpy() if affine else None
    ref = R.group_norm(xn, groups, wn, bn, activation=act)
    np.testing.assert_allclose(y.detach().double().numpy(), ref, **TOL[dtype])
    dx, dw, db = R.group_norm_backward(dy.double().numpy(), xn, groups, wn, bn, activation=act)
    if act == "relu":  # avoid comparing at the kink: where the pre-activation is ~0 the two sides may differ
        pre = R.group_norm(xn, groups, wn, bn)
        if np.abs(pre).min() < 1e-3:
            return y
    np.testing.assert_allclose(x.grad.double().numpy(), dx, **GRAD_TOL[dtype])
    if affine:
        np.testing.assert_allclose(w.grad.double().numpy(), dw, **GRAD_TOL[dtype])
        np.testing.assert_allclose(b.grad.double().numpy(), db, **GRAD_TOL[dtype])
    return y


SHAPES = {
    2: (3, 12),
    3: (2, 12, 7),
    4: (2, 12, 5, 3),
    5: (2, 12, 3, 2, 3),
}


@pytest.mark.parametrize("rank", [2, 3, 4, 5])
@pytest.mark.parametrize("groups", [1, 4, 12])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("act", [None, "relu", "silu", "gelu"])
def test_against_reference(gn_path, rank, groups, dtype, act):
    x = torch.randn(SHAPES[rank], dtype=torch.float64).to(dtype) * 2 + 0.5
    run_and_compare(x, groups, act, dtype=dtype, seed=rank * 100 + groups)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("act", [None, "silu"])
def test_half_types(gn_path, dtype, act):
    x = torch.randn(2, 8, 6, 5).to(dtype)
    run_and_compare(x, 4, act, dtype=dtype)


def test_without_affine(gn_path):
    run_and_compare(torch.randn(2, 6, 4, dtype=torch.float64), 3, "silu", affine=False)


@pytest.mark.parametrize("rank,fmt", [(4, torch.channels_last), (5, torch.channels_last_3d)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("act", [None, "relu"])
def test_channels_last_keeps_format(gn_path, rank, fmt, dtype, act):
    x = torch.randn(SHAPES[rank]).to(dtype).contiguous(memory_format=fmt)
    assert not x.is_contiguous()
    y = run_and_compare(x, 4, act, dtype=dtype)
    assert y.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("make", ["transpose", "slice", "expand"])
def test_non_contiguous_inputs(gn_path, make):
    base = torch.randn(4, 8, 6, 5, dtype=torch.float64)
    if make == "transpose":
        x = base.transpose(2, 3)  # (4, 8, 5, 6), a view
    elif make == "slice":
        x = base[::2, :, 1:5:2]  # strided in N and H
    else:
        x = torch.randn(1, 8, 1, 5, dtype=torch.float64).expand(3, 8, 4, 5)  # zero strides
    assert not x.is_contiguous()
    run_and_compare(x, 2, "silu")


@pytest.mark.parametrize(
    "shape,groups",
    [
        ((1, 8, 3, 3), 2),  # N = 1
        ((3, 8, 1, 1), 2),  # spatial size 1
        ((2, 6, 4), 6),  # C / G = 1
        ((2, 6, 1), 3),  # spatial size 1 with C/G = 2
        ((1, 3, 2, 3, 5), 3),  # rank 5, C/G = 1, N = 1
        ((2, 7, 13), 7),  # odd sizes
    ],
)
def test_odd_shapes(gn_path, shape, groups):
    run_and_compare(torch.randn(shape, dtype=torch.float64), groups, "gelu")


@pytest.mark.parametrize("act", [None, "relu", "silu", "gelu"])
def test_gradcheck(gn_path, act):
    torch.manual_seed(0)
    x = torch.randn(2, 6, 3, 2, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    if act == "relu":  # keep the pre-activation away from the kink for finite differences
        b = (b.detach().sign() * (b.detach().abs() + 3)).requires_grad_(True)
    f = lambda x, w, b: GF.group_norm(x, 3, w, b, activation=act)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, w, b))


def test_double_backward(gn_path):
    torch.manual_seed(1)
    x = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x, w: GF.group_norm(x, 2, w, activation="silu"), (x, w))


def test_group_size_equals_num_groups(gn_path):
    x = torch.randn(2, 16, 5)
    torch.testing.assert_close(GF.group_norm(x, group_size=4), GF.group_norm(x, 4))


def test_equivalences(gn_path):
    torch.manual_seed(2)
    x = torch.randn(3, 6, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(GF.group_norm(x, 1), F.layer_norm(x, x.shape[1:]))
    torch.testing.assert_close(GF.group_norm(x, 6), F.instance_norm(x))
    w, b = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    torch.testing.assert_close(GF.group_norm(x, 3, w, b), F.group_norm(x, 3, w, b))
    torch.testing.assert_close(GF.group_norm(x, 3, w, b, activation="silu"), F.silu(F.group_norm(x, 3, w, b)))


def test_large_mean_float32(gn_path):
    torch.manual_seed(3)
    x = (torch.randn(4, 32, 16, 16, dtype=torch.float64) + 1e6).float()
    y = GF.group_norm(x, 8)
    ref = R.group_norm(x.double().numpy(), 8)
    assert np.abs(y.double().numpy() - ref).max() < 1e-3
    xl = x.contiguous(memory_format=torch.channels_last)
    assert np.abs(GF.group_norm(xl, 8).double().numpy() - ref).max() < 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_constant_group_is_beta_not_nan(gn_path, dtype):
    x = torch.full((2, 4, 3, 3), 3.25, dtype=dtype, requires_grad=True)
    w = torch.full((4,), 2.0, dtype=dtype)
    b = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=dtype)
    y = GF.group_norm(x, 2, w, b)
    assert torch.isfinite(y).all()
    # the plain path is torch's GN, y = x * (w * rstd) + (b - w * rstd * mean) in float32, which leaves about
    # |mean| * rstd * 2^-24 of beta's value in a constant group: within the plain path's error budget
    tol = dict(atol=ERROR_BUDGET.get(dtype, 1e-5), rtol=0) if gn_path == "plain" else {}
    torch.testing.assert_close(y, b.view(1, 4, 1, 1).expand_as(y), **tol)
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_empty_batch(gn_path):
    x = torch.randn(0, 8, 3)
    assert GF.group_norm(x, 4).shape == (0, 8, 3)


@given(
    n=st.integers(1, 3),
    g=st.integers(1, 4),
    cpg=st.integers(1, 4),
    spatial=st.lists(st.integers(1, 5), min_size=0, max_size=3),
    act=st.sampled_from([None, "silu", "gelu"]),
    layout=st.sampled_from(["contiguous", "channels_last", "transposed"]),
)
@settings(max_examples=40, deadline=None)
def test_hypothesis_shapes(n, g, cpg, spatial, act, layout):
    shape = (n, g * cpg, *spatial)
    x = torch.randn(shape, dtype=torch.float64) * 3 - 1
    if layout == "channels_last" and len(shape) in (4, 5):
        x = x.contiguous(memory_format=torch.channels_last if len(shape) == 4 else torch.channels_last_3d)
    elif layout == "transposed" and len(shape) >= 4:
        x = x.transpose(-1, -2)
    run_and_compare(x, g, act)


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "kwargs,err,match",
    [
        (dict(num_groups=3), ValueError, "num_groups=3 does not divide num_channels=64"),
        (dict(group_size=5), ValueError, "group_size=5 does not divide num_channels=64"),
        (dict(), ValueError, "exactly one of num_groups and group_size"),
        (dict(num_groups=4, group_size=16), ValueError, "num_groups=4, group_size=16"),
        (dict(num_groups=0), ValueError, "num_groups=0"),
        (dict(num_groups=-2), ValueError, "num_groups=-2"),
        (dict(num_groups=2.5), ValueError, "num_groups=2.5"),
        (dict(num_groups=4, activation="tanh"), ValueError, "unknown activation 'tanh'"),
        (dict(num_groups=4, weight=torch.ones(63)), ValueError, r"weight must have shape \(64,\).*\(63,\)"),
        (dict(num_groups=4, bias=torch.ones(64, 1)), ValueError, r"bias must have shape \(64,\).*\(64, 1\)"),
        (dict(num_groups=4, eps=-1.0), ValueError, "eps=-1.0"),
    ],
)
def test_bad_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        GF.group_norm(torch.randn(2, 64, 3), **kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"rank >= 2, got shape \(64,\)"):
        GF.group_norm(torch.randn(64), 4)
    with pytest.raises(TypeError, match="floating-point input, got dtype torch.int64"):
        GF.group_norm(torch.ones(2, 8, 3, dtype=torch.int64), 4)
    with pytest.raises(TypeError, match="torch.bool"):
        GF.group_norm(torch.ones(2, 8, 3, dtype=torch.bool), 4)
    with pytest.raises(TypeError, match="torch.Tensor"):
        GF.group_norm(np.ones((2, 8, 3)), 4)
