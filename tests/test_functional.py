"""groupnorm.functional.group_norm against the NumPy float64 reference: values and gradients (x, weight, bias).

Every test that takes ``gn_path`` runs twice: through the default dispatch (the compiled kernels where they
cover the case) and with GROUPNORM_DISABLE_KERNELS=1 (the plain PyTorch path). Inputs are seeded
(helpers.make_case); tolerances are helpers.TOL's.
"""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from groupnorm import functional as GF
from groupnorm import reference as R
from groupnorm.plain import ERROR_BUDGET

from helpers import (TOL, TOL_LARGE_MEAN, _np, assert_close, channels_last, check_against_reference,
                     make_case)

SHAPES = {
    2: (3, 12),
    3: (2, 12, 7),
    4: (2, 12, 5, 3),
    5: (2, 12, 3, 2, 3),
}


def check(x, w, b, dy, groups, act, **kw):
    """Values and gradients of the public call against the reference (helpers.check_against_reference)."""
    return check_against_reference(x, w, b, dy, groups, act, call="functional", **kw)


@pytest.mark.parametrize("rank", [2, 3, 4, 5])
@pytest.mark.parametrize("groups", [1, 4, 12])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("act", [None, "relu", "silu", "gelu"])
def test_against_reference(gn_path, rank, groups, dtype, act):
    check(*make_case(SHAPES[rank], dtype, False, seed=rank * 100 + groups), groups, act)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("act", [None, "relu", "silu"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no-affine"])
def test_half_types(gn_path, dtype, act, affine):
    check(*make_case((2, 8, 6, 5), dtype, False, affine=affine, seed=7), 4, act)


@pytest.mark.parametrize("affine", [False, "weight", "bias"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("act", [None, "silu", "relu"])
def test_partial_or_no_affine(gn_path, affine, dtype, act):
    """No weight and no bias, weight alone, bias alone (``beta`` without ``gamma``)."""
    check(*make_case((2, 6, 4, 3), dtype, False, affine=affine, seed=8), 3, act)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cl", [False, True], ids=["contig", "chlast"])
@pytest.mark.parametrize("act", [None, "relu", "gelu"])
def test_mixed_precision_half_input_float32_affine(gn_path, dtype, cl, act):
    """What autocast hands GN: a bfloat16 / float16 input with the module's float32 weight and bias. The output
    and dx are in the input's dtype, dweight and dbias in float32; all within the input dtype's tolerance."""
    x, w, b, dy = make_case((2, 8, 5, 3), dtype, cl, seed=9)
    w32, b32 = make_case((2, 8, 5, 3), torch.float32, cl, seed=9)[1:3]
    y = check(x, w32, b32, dy, 4, act)
    assert y.dtype == dtype


@pytest.mark.parametrize("rank", [3, 4, 5])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("act", [None, "relu"])
def test_channels_last_keeps_format(gn_path, rank, dtype, act):
    """Channels-last of ranks 3 (strides of (N, L, C)), 4 and 5: values and gradients; ranks 4 and 5 keep their
    memory format (rank 3 has none in torch: the plain path returns it contiguous, the kernels in x's strides)."""
    x, w, b, dy = make_case(SHAPES[rank], dtype, True, seed=rank)
    assert not x.is_contiguous()
    y = check(x, w, b, dy, 4, act)
    if rank > 3:
        assert y.stride() == x.stride()
        assert y.is_contiguous(memory_format=torch.channels_last if rank == 4 else torch.channels_last_3d)


@pytest.mark.parametrize("make", ["transpose", "slice", "expand"])
def test_non_contiguous_inputs(gn_path, make):
    base, w, b, dy = make_case((4, 8, 6, 5), torch.float64, False, seed=10)
    if make == "transpose":
        x = base.transpose(2, 3)  # (4, 8, 5, 6), a view
    elif make == "slice":
        x = base[::2, :, 1:5:2]  # strided in N and H
    else:
        x = base[:1, :, :1].expand(3, 8, 4, 5)  # zero strides
    assert not x.is_contiguous()
    dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    check(x, w, b, dy, 2, "silu")


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
    check(*make_case(shape, torch.float64, False, seed=12), groups, "gelu")


@pytest.mark.parametrize("act", [None, "relu", "silu", "gelu"])
def test_gradcheck(gn_path, act):
    x, w, b, _ = make_case((2, 6, 3, 2), torch.float64, False, seed=13)
    if act == "relu":  # keep the pre-activation away from the kink for finite differences
        b = b.sign() * (b.abs() + 3)
    f = lambda x, w, b: GF.group_norm(x, 3, w, b, activation=act)  # noqa: E731
    assert torch.autograd.gradcheck(f, tuple(t.requires_grad_(True) for t in (x, w, b)))


def test_double_backward(gn_path):
    x, w, _, _ = make_case((2, 4, 3), torch.float64, False, seed=14)
    f = lambda x, w: GF.group_norm(x, 2, w, activation="silu")  # noqa: E731
    assert torch.autograd.gradgradcheck(f, (x.requires_grad_(True), w.requires_grad_(True)))


def test_group_size_equals_num_groups(gn_path):
    x = make_case((2, 16, 5), torch.float32, False, seed=15)[0]
    torch.testing.assert_close(GF.group_norm(x, group_size=4), GF.group_norm(x, 4), rtol=0, atol=0)
    assert_close(GF.group_norm(x, group_size=4), R.group_norm(_np(x), 4), TOL[torch.float32], "group_size=4")


def test_equivalences(gn_path):
    """G = 1 is LayerNorm over (C, *spatial), G = C is InstanceNorm (the reference's own LN and IN); the fused
    activation is the activation of GN's output."""
    x, w, b, _ = make_case((3, 6, 4, 5), torch.float64, False, seed=16)
    xn, wn, bn = _np(x), _np(w), _np(b)
    tol = TOL[torch.float64]
    assert_close(GF.group_norm(x, 1), R.layer_norm(xn), tol, "G = 1")
    assert_close(GF.group_norm(x, 6), R.instance_norm(xn), tol, "G = C")
    assert_close(GF.group_norm(x, 3, w, b), R.group_norm(xn, 3, wn, bn), tol, "affine")
    assert_close(GF.group_norm(x, 3, w, b, activation="silu"), R.activation(R.group_norm(xn, 3, wn, bn), "silu"),
                 tol, "silu")


@pytest.mark.parametrize("cl", [False, True], ids=["contig", "chlast"])
@pytest.mark.parametrize("act", [None, "silu"])
def test_large_mean_float32(gn_path, cl, act):
    """float32 at a mean of 1e6 standard deviations: values and gradients within the plain path's budget."""
    x, w, b, dy = make_case((4, 32, 16, 16), torch.float32, cl, seed=3, loc=1e6, scale=1.0)
    check(x, w, b, dy, 8, act, tol=TOL_LARGE_MEAN)


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
    dy = make_case((2, 4, 3, 3), dtype, False, seed=17)[3]
    y.backward(dy)
    # dx = rstd * (w dy - mean(w dy)) with rstd = 1 / sqrt(eps): errors relative to rstd * |w dy| (helpers)
    ref_dx = R.group_norm_backward(_np(dy), _np(x), 2, _np(w), _np(b))[0]
    term = float(R.group_norm_stats(_np(x), 2)[1].max() * np.abs(_np(dy)).max() * 2.0)
    assert_close(x.grad, ref_dx, TOL[dtype], "dx", scale=term)


def test_empty_batch(gn_path):
    x = torch.randn(0, 8, 3)
    assert GF.group_norm(x, 4).shape == (0, 8, 3)


@given(
    n=st.integers(1, 3),
    g=st.integers(1, 4),
    cpg=st.integers(1, 4),
    spatial=st.lists(st.integers(1, 5), min_size=0, max_size=3),
    act=st.sampled_from([None, "relu", "silu", "gelu"]),
    layout=st.sampled_from(["contiguous", "channels_last", "transposed"]),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=40)
def test_hypothesis_shapes(n, g, cpg, spatial, act, layout, seed):
    """Shapes, layouts and activations drawn by hypothesis (derandomized: conftest's profile), data seeded."""
    shape = (n, g * cpg, *spatial)
    x, w, b, dy = make_case(shape, torch.float64, False, seed=seed, loc=-1.0, scale=3.0)
    if layout == "channels_last":
        x, dy = channels_last(x), channels_last(dy)
    elif layout == "transposed" and len(shape) >= 4:
        x, dy = x.transpose(-1, -2), dy.transpose(-1, -2)
    check(x, w, b, dy, g, act)


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
