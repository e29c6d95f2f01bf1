"""Masked GN statistics (``mask=``): the float64 reference against finite differences and a direct computation
on the real region, the PyTorch function and module against the reference (values and gradients), and bad masks."""
import numpy as np
import pytest
import torch

from groupnorm import functional as GF
from groupnorm import reference as R
from groupnorm.nn import GroupNorm
from helpers import assert_close, channels_last


def _mask(shape, seed, p=0.7):
    """A random boolean mask (N, 1, *spatial) with at least one real position per sample."""
    rng = np.random.default_rng(seed)
    m = rng.random((shape[0], 1) + tuple(shape[2:])) < p
    m.reshape(shape[0], -1)[:, 0] = True
    return m


def _padding_mask(n, h, w, sizes):
    """detectron2-style padding: sample i is real in its top-left sizes[i] = (h_i, w_i) corner."""
    m = np.zeros((n, 1, h, w), dtype=bool)
    for i, (hi, wi) in enumerate(sizes):
        m[i, :, :hi, :wi] = True
    return m


def test_reference_masked_equals_gn_of_the_real_region():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, size=(3, 6, 7, 9))
    g, b = rng.normal(size=6), rng.normal(size=6)
    sizes = [(7, 9), (4, 5), (1, 3)]
    y = R.group_norm(x, 3, g, b, mask=_padding_mask(3, 7, 9, sizes))
    for i, (h, w) in enumerate(sizes):
        direct = R.group_norm(x[i:i + 1, :, :h, :w], 3, g, b)
        np.testing.assert_allclose(y[i:i + 1, :, :h, :w], direct, atol=1e-12)
        # padded positions: normalized with the real region's statistics
        mean, rstd = R.group_norm_stats(x[i:i + 1, :, :h, :w], 3)
        xg = x[i].reshape(3, 2, 7, 9)
        want = (xg - mean[0][:, None, None, None]) * rstd[0][:, None, None, None]
        want = want.reshape(6, 7, 9) * g[:, None, None] + b[:, None, None]
        np.testing.assert_allclose(y[i], want, atol=1e-12)


def test_reference_all_true_mask_is_the_unmasked_gn():
    rng = np.random.default_rng(1)
    x, dy = rng.normal(size=(2, 4, 3, 5)), rng.normal(size=(2, 4, 3, 5))
    g, b = rng.normal(size=4), rng.normal(size=4)
    ones = np.ones((2, 1, 3, 5), dtype=bool)
    np.testing.assert_allclose(R.group_norm(x, 2, g, b, mask=ones), R.group_norm(x, 2, g, b), atol=1e-13)
    for got, want in zip(R.group_norm_backward(dy, x, 2, g, b, mask=ones, activation="silu"),
                         R.group_norm_backward(dy, x, 2, g, b, activation="silu")):
        np.testing.assert_allclose(got, want, atol=1e-12)


@pytest.mark.parametrize("shape,groups,act", [((2, 4, 3, 4), 2, None), ((3, 6, 5), 3, "silu"),
                                              ((2, 4, 2, 3, 2), 4, "gelu")])
def test_reference_masked_backward_matches_finite_differences(shape, groups, act):
    rng = np.random.default_rng(2)
    x = rng.normal(0.5, 2.0, size=shape)
    c = shape[1]
    g, b = rng.normal(1.0, 0.5, size=c), rng.normal(size=c)
    r = rng.normal(size=shape)
    dy = rng.normal(size=shape)
    mask = _mask(shape, 3)

    def loss(x_, g_, b_, r_):
        return float((R.group_norm(x_, groups, g_, b_, activation=act, residual=r_, mask=mask) * dy).sum())

    dx, dg, db, dr = R.group_norm_backward(dy, x, groups, g, b, activation=act, residual=r, mask=mask)
    h = 1e-6
    for arr, grad, k in ((x, dx, 0), (g, dg, 1), (b, db, 2), (r, dr, 3)):
        num = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            args = [x.copy(), g.copy(), b.copy(), r.copy()]
            args[k][i] += h
            up = loss(*args)
            args[k][i] -= 2 * h
            num[i] = (up - loss(*args)) / (2 * h)
        np.testing.assert_allclose(grad, num, atol=2e-6, rtol=1e-5)


def test_reference_padded_positions_get_only_the_direct_gradient():
    rng = np.random.default_rng(4)
    x, dy = rng.normal(size=(2, 4, 4, 4)), rng.normal(size=(2, 4, 4, 4))
    g = rng.normal(1.0, 0.3, size=4)
    mask = _padding_mask(2, 4, 4, [(3, 2), (4, 4)])
    dx = R.group_norm_backward(dy, x, 2, g, mask=mask)[0]
    _, rstd = R.group_norm_stats(x, 2, mask=mask)
    pad = ~np.broadcast_to(mask, x.shape)
    direct = dy * g[None, :, None, None] * np.repeat(rstd, 2, axis=1)[:, :, None, None]
    np.testing.assert_allclose(dx[pad], direct[pad], atol=1e-12)
    # and the real positions' outputs do not depend on the padded inputs
    x2 = x.copy()
    x2[pad] += 100.0
    real = np.broadcast_to(mask, x.shape)
    np.testing.assert_allclose(R.group_norm(x2, 2, g, mask=mask)[real], R.group_norm(x, 2, g, mask=mask)[real],
                               atol=1e-12)


CASES = [((2, 8, 5, 7), 4, torch.float64, False, None, False),
         ((3, 6, 9, 4), 3, torch.float32, False, "relu", True),
         ((2, 8, 6, 6), 2, torch.float32, True, "silu", False),
         ((2, 4, 11), 2, torch.float32, False, "gelu", True),
         ((2, 4, 3, 4, 5), 1, torch.float64, False, None, True),
         ((2, 8, 5, 5), 4, torch.bfloat16, False, None, False)]


@pytest.mark.parametrize("shape,groups,dtype,cl,act,with_residual", CASES)
def test_functional_masked_matches_reference(shape, groups, dtype, cl, act, with_residual):
    gen = torch.Generator().manual_seed(5)
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 2 + 3).to(dtype)
    c = shape[1]
    w = (torch.randn(c, generator=gen, dtype=torch.float64) * 0.5 + 1).to(dtype)
    b = (torch.randn(c, generator=gen, dtype=torch.float64) * 0.5).to(dtype)
    r = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype) if with_residual else None
    dy = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    if cl:
        x, dy = channels_last(x), channels_last(dy)
    mask_np = _mask(shape, 6)
    mask = torch.from_numpy(mask_np)
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, w, b) + ((r,) if r is not None else ())]
    y = GF.group_norm(leaves[0], groups, leaves[1], leaves[2], activation=act,
                      residual=leaves[3] if r is not None else None, mask=mask)
    assert y.dtype == dtype and y.shape == x.shape and y.stride() == x.stride()
    npy = [None if t is None else t.detach().double().numpy() for t in (x, w, b, r, dy)]
    tol = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 1.6e-2}[dtype]
    assert_close(y, R.group_norm(npy[0], groups, npy[1], npy[2], activation=act, residual=npy[3], mask=mask_np),
                 tol, "masked y")
    grads = torch.autograd.grad(y, leaves, dy)
    ref = R.group_norm_backward(npy[4], npy[0], groups, npy[1], npy[2], activation=act, residual=npy[3],
                                mask=mask_np)
    for got, want, name in zip(grads, ref, ("dx", "dweight", "dbias", "dresidual")):
        assert_close(got, want, tol, f"masked {name}", scale=float(np.abs(want).max()) * 4)


def test_all_true_mask_equals_unmasked_call_and_module_passes_mask():
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 8, 6, 5, generator=gen)
    m = GroupNorm(4, 8, activation="relu")
    with torch.no_grad():
        m.weight.normal_(1.0, 0.3, generator=gen)
        m.bias.normal_(0.0, 0.3, generator=gen)
    ones = torch.ones(2, 1, 6, 5, dtype=torch.bool)
    torch.testing.assert_close(m(x, mask=ones), m(x), atol=2e-5, rtol=0)
    mask = torch.from_numpy(_padding_mask(2, 6, 5, [(6, 5), (3, 4)]))
    torch.testing.assert_close(m(x, mask=mask), GF.group_norm(x, 4, m.weight, m.bias, activation="relu", mask=mask))
    # the padded sample's real region is normalized as if it were alone and unpadded
    torch.testing.assert_close(m(x, mask=mask)[1:, :, :3, :4], m(x[1:, :, :3, :4]), atol=2e-5, rtol=0)


def test_masked_statistics_ignore_padding_values():
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(2, 4, 8, 8, generator=gen)
    mask = torch.from_numpy(_padding_mask(2, 8, 8, [(5, 6), (8, 3)]))
    y = GF.group_norm(x, 2, mask=mask)
    y2 = GF.group_norm(torch.where(mask, x, torch.full_like(x, 1e4)), 2, mask=mask)
    torch.testing.assert_close(y[mask.expand_as(x)], y2[mask.expand_as(x)])
    # unmasked, the padding's values do change the real positions' outputs
    assert not torch.allclose(GF.group_norm(x, 2)[mask.expand_as(x)], y[mask.expand_as(x)], atol=1e-3)


@pytest.mark.parametrize("mask,err,match", [
    (np.ones((2, 1, 4, 4)), TypeError, "must be a torch.Tensor"),
    (torch.ones(2, 1, 4, 4), TypeError, "boolean tensor.*torch.float32"),
    (torch.ones(2, 4, 4, 4, dtype=torch.bool), ValueError, r"shape \(2, 1, 4, 4\).*got \(2, 4, 4, 4\)"),
    (torch.ones(2, 1, 4, dtype=torch.bool), ValueError, r"got \(2, 1, 4\)"),
    (torch.ones(2, 1, 4, 4, dtype=torch.bool).index_fill_(0, torch.tensor([1]), False), ValueError,
     r"no real \(True\) position in sample\(s\) \[1\]"),
])
def test_bad_masks_raise_naming_the_value(mask, err, match):
    x = torch.randn(2, 4, 4, 4)
    with pytest.raises(err, match=match):
        GF.group_norm(x, 2, mask=mask)
    with pytest.raises(err, match=match):
        GroupNorm(2, 4)(x, mask=mask)


def test_reference_bad_masks():
    x = np.zeros((2, 4, 3, 3))
    with pytest.raises(TypeError, match="boolean"):
        R.group_norm(x, 2, mask=np.ones((2, 1, 3, 3)))
    with pytest.raises(ValueError, match=r"shape \(2, 1, 3, 3\).*got \(2, 3, 3\)"):
        R.group_norm(x, 2, mask=np.ones((2, 3, 3), dtype=bool))
    empty = np.ones((2, 1, 3, 3), dtype=bool)
    empty[0] = False
    with pytest.raises(ValueError, match=r"sample\(s\) \[0\]"):
        R.group_norm_backward(x, x, 2, mask=empty)
