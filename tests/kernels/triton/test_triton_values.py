"""The Triton kernels' values and gradients against the float64 reference: layouts, dtypes, activations,
residual, odd shapes, large means, N = 1, G = 1, G = C, and large groups split over several programs."""
import numpy as np
import pytest
import torch

from groupnorm import reference
from groupnorm.kernels import triton as gt
from groupnorm.kernels.triton import _launch
from helpers import TOL, assert_close, channels_last, make_case, make_residual

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # interpreter's exp

F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16

# (shape, G, channels_last, dtype, activation, residual layout or None, affine)
CASES = [
    ((2, 6, 5, 7), 3, False, F32, None, None, True),          # C/G = 2, odd spatial
    ((2, 6, 5, 7), 3, True, F32, "silu", None, True),         # channels-last
    ((1, 13, 7, 7), 1, False, F32, "relu", "same", True),     # N = 1, G = 1 (LayerNorm), 7x7, C = 13
    ((2, 5, 9, 7), 5, True, F32, "gelu", "other", True),      # G = C (InstanceNorm), residual contiguous
    ((1, 39, 63), 3, False, F32, "silu", "same", False),      # rank 3, 63 positions, C/G = 13, no affine
    ((2, 12, 3, 4, 5), 4, False, F32, "relu", None, True),    # rank 5 contiguous, C/G = 3
    ((2, 12, 3, 4, 5), 4, True, F32, "silu", "same", True),   # rank 5 channels_last_3d
    ((3, 10), 5, False, F32, "gelu", "same", True),           # rank 2
    ((2, 6, 5, 7), 3, False, BF16, "silu", "same", True),
    ((1, 24, 6, 5), 8, True, BF16, "relu", "other", True),
    ((2, 6, 5, 7), 3, True, F16, "gelu", None, True),
    ((1, 48, 3, 11), 16, False, F16, "silu", "same", True),   # C/G = 3
]


def _ids(case):
    shape, g, cl, dtype, act, res, affine = case
    return f"{'x'.join(map(str, shape))}-G{g}-{'cl' if cl else 'contig'}-{str(dtype)[6:]}-{act}-r{res}-{'aff' if affine else 'noaff'}"


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_matches_reference(case, device, check):
    shape, g, cl, dtype, act, res, affine = case
    x, w, b, dy = make_case(shape, dtype, cl, affine=affine, seed=len(shape) + g)
    r = make_residual(x, g, res) if res else None
    move = (lambda t: None if t is None else t.to(device))
    check(move(x), g, move(w), move(b), act, move(r), dy=move(dy))


def test_statistics_are_float64_and_exact(device):
    """The saved mean and rstd (float64 (N, G)) against the reference's."""
    from groupnorm.kernels.triton import _ops

    x, w, b, _ = make_case((2, 8, 9, 7), F32, True, seed=3, loc=3.0)
    y, mean, rstd = _ops.gn_forward(x.to(device), 4, w.to(device), b.to(device), 1e-5, 0, None)
    ref_mean, ref_rstd = reference.group_norm_stats(x.double().numpy(), 4, 1e-5)
    assert mean.dtype == rstd.dtype == torch.float64 and mean.shape == (2, 4)
    np.testing.assert_allclose(mean.cpu().numpy(), ref_mean, rtol=1e-6)
    np.testing.assert_allclose(rstd.cpu().numpy(), ref_rstd, rtol=1e-5)


@pytest.mark.parametrize("cl", [False, True], ids=["contig", "cl"])
def test_large_mean_does_not_cancel(cl, device, check):
    """Mean 1e6, unit variance (float32 spacing 0.06 there): y and gradients as accurate as at mean 0."""
    x, w, b, dy = make_case((2, 8, 6, 7), F32, cl, seed=11, loc=1e6, scale=1.0)
    r = make_residual(x, 1)
    check(x.to(device), 2, w.to(device), b.to(device), "silu", r.to(device), dy=dy.to(device))


def test_mixed_parameter_dtype(device, check):
    """bfloat16 data with float32 weight and bias (autocast's usual mix): dweight / dbias in float32."""
    x, w, b, dy = make_case((2, 6, 5, 5), BF16, False, seed=5)
    _, grads = check(x.to(device), 3, w.float().to(device), b.float().to(device), "relu", dy=dy.to(device))
    assert grads[1].dtype == grads[2].dtype == F32


def test_constant_groups(device, check):
    """A group with zero variance: rstd = 1 / sqrt(eps), y = beta, finite gradients."""
    x = torch.ones(2, 4, 3, 3)
    x[1] = 5.0
    w, b = torch.linspace(0.5, 2, 4), torch.linspace(-1, 1, 4)
    check(x.to(device), 2, w.to(device), b.to(device))


@pytest.mark.parametrize("cl", [False, True], ids=["contig", "cl"])
def test_large_groups_split_over_programs(cl, device, check, monkeypatch):
    """A group larger than a program's tile is split over several programs, whose partial statistics and
    gradient sums are merged in a second step; the result is the reference's."""
    shape = (1, 4, 45, 37) if not cl else (1, 4, 90, 37)
    x, w, b, dy = make_case(shape, F32, cl, seed=13, loc=2.0)
    monkeypatch.setattr(_launch, "_sm_count", lambda device: 8)  # the same split on every device
    assert _launch.geometry(x.to(device)).n_chunks >= 2, "the case should split each group"
    check(x.to(device), 2, w.to(device), b.to(device), "silu", make_residual(x, 2).to(device), dy=dy.to(device))


def test_one_position_per_group(device, check):
    """Spatial size 1 and C/G = 1: a group of one value (xhat = 0, dx from the eps term only)."""
    x, w, b, dy = make_case((3, 4, 1), F32, False, seed=17)
    check(x.to(device), 4, w.to(device), b.to(device), "gelu", dy=dy.to(device))


def test_other_strides_are_copied(device, check):
    """An input whose spatial strides do not merge (a transposed view) still comes out right."""
    x, w, b, dy = make_case((2, 6, 5, 7), F32, False, seed=19)
    xt = x.transpose(2, 3).contiguous().transpose(2, 3)  # (N, C, H, W) with W outer
    assert _launch._nsc(xt) is None
    x2 = xt.to(device)
    y = gt.group_norm(x2, 3, w.to(device), b.to(device))
    ref = reference.group_norm(x.double().numpy(), 3, w.double().numpy(), b.double().numpy())
    assert_close(y.cpu(), ref, TOL[F32], "y")


def test_out_of_bounds_reads_see_nan_canaries(device):
    """x and the residual are views into buffers padded with NaN on both sides; shapes are not block
    multiples (7x7 positions, 13 channels): any read outside the tensor would turn the output non-finite."""
    shape = (2, 13, 7, 7)
    numel = int(np.prod(shape))
    pad = 4096
    gen = torch.Generator().manual_seed(23)

    def padded(cl):
        buf = torch.full((numel + 2 * pad,), float("nan"), device=device)
        vals = torch.randn(shape, generator=gen)
        if cl:
            view = buf[pad:pad + numel].view(shape[0], *shape[2:], shape[1]).movedim(-1, 1)
        else:
            view = buf[pad:pad + numel].view(shape)
        view.copy_(vals)
        return view, vals

    for cl in (False, True):
        x, xv = padded(cl)
        r, rv = padded(cl)
        w = torch.randn(13, generator=gen)
        xr = x.detach().requires_grad_(True)
        y = gt.group_norm(xr, 13, w.to(device), None, activation="silu", residual=r)
        (dx,) = torch.autograd.grad(y, xr, torch.ones_like(y))
        assert torch.isfinite(y).all() and torch.isfinite(dx).all()
        ref = reference.group_norm(xv.double().numpy(), 13, w.double().numpy(), activation="silu",
                                   residual=rv.double().numpy())
        assert_close(y.cpu(), ref, TOL[F32], f"y cl={cl}")


def test_out_of_bounds_writes_leave_canaries(device):
    """The kernels that write (y; dx and dresidual; both forward and backward paths) store into views of
    canary-filled buffers: every value outside the view is unchanged, every value inside is written (shapes not
    block multiples)."""
    from groupnorm.kernels.triton import _kernels as K
    from groupnorm.kernels.triton import _ops

    shape, g, pad = (2, 13, 7, 9), 13, 4096
    numel = int(np.prod(shape))
    x, w, b, dy = (t.to(device) for t in make_case(shape, F32, True, seed=61))
    y_ref, mean, rstd = _ops.gn_forward(x, g, w, b, 1e-5, 2, None)
    dx_ref, _, _, dr_ref = _ops.gn_backward(dy, x, mean, rstd, w, b, g, 2, x, True, False, False, True)
    geo = _launch.geometry(x)
    n, c, s = shape[0], shape[1], 63

    def canvas():
        buf = torch.full((numel + 2 * pad,), 7.0, device=device)
        return buf, buf[pad:pad + numel].view(shape[0], *shape[2:], shape[1]).movedim(-1, 1)  # channels-last

    flags = dict(HAS_W=True, HAS_B=True, BLOCK_C=geo.block_c, BLOCK_S=geo.block_s, num_warps=geo.num_warps)
    ybuf, y = canvas()
    K.gn_fwd_apply[geo.grid](x, y, x, w, b, mean, rstd, c, s, g, 1, geo.chunk, *_launch._nsc(x), *_launch._nsc(y),
                             *_launch._nsc(x), ACT=2, HAS_R=False, **flags)
    dxbuf, dx = canvas()
    drbuf, dr = canvas()
    c1 = c2 = torch.zeros(n, g, device=device)
    K.gn_bwd_dx[geo.grid](dy, x, x, w, b, mean, rstd, c1, c2, dx, dr, c, s, g, 1, geo.chunk, *_launch._nsc(dy),
                          *_launch._nsc(x), *_launch._nsc(x), *_launch._nsc(dx), ACT=2, HAS_R=True, NEED_DX=True,
                          NEED_DR=True, **flags)
    for buf, got, ref, name in ((ybuf, y, y_ref, "y"), (drbuf, dr, dr_ref, "dresidual")):
        assert torch.equal(buf[:pad], torch.full_like(buf[:pad], 7.0)), f"{name}: written before the tensor"
        assert torch.equal(buf[-pad:], torch.full_like(buf[-pad:], 7.0)), f"{name}: written after the tensor"
        assert torch.equal(got, ref), name
    assert torch.equal(dxbuf[:pad], dxbuf[-pad:]) and bool((dxbuf[:pad] == 7.0).all()), "dx: written outside"
    # c1 = c2 = 0: dx = rstd * w * dv, with dv = dresidual (cpg = 1: rstd per channel)
    want = rstd.float()[:, :, None, None] * w[None, :, None, None] * dr_ref
    torch.testing.assert_close(dx, want, rtol=1e-5, atol=1e-6)
    # the one-program-per-group kernels
    ybuf, y = canvas()
    K.gn_fwd_group[(n * g,)](x, y, x, w, b, torch.empty_like(mean), torch.empty_like(rstd), c, s, g, 1, 1e-5,
                             *_launch._nsc(x), *_launch._nsc(y), *_launch._nsc(x), ACT=2, HAS_R=False, **flags)
    dxbuf, dx = canvas()
    drbuf, dr = canvas()
    pa, pb = torch.empty(n, 1, c, device=device), torch.empty(n, 1, c, device=device)
    K.gn_bwd_group[(n * g,)](dy, x, x, w, b, mean, rstd, pa, pb, dx, dr, c, s, g, 1, *_launch._nsc(dy),
                             *_launch._nsc(x), *_launch._nsc(x), *_launch._nsc(dx), ACT=2, HAS_R=True,
                             NEED_DX=True, NEED_DR=True, **flags)
    for buf, got, ref, name in ((ybuf, y, y_ref, "y"), (drbuf, dr, dr_ref, "dresidual"), (dxbuf, dx, dx_ref, "dx")):
        assert bool((buf[:pad] == 7.0).all()) and bool((buf[-pad:] == 7.0).all()), f"{name}: written outside"
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("one_program", [True, False], ids=["group-per-program", "split"])
@pytest.mark.parametrize("case", [
    ((2, 12, 5, 7), 4, True, BF16, "silu", "same", 0.5),
    ((2, 8, 3, 4, 5), 2, True, F32, "gelu", "other", 0.5),
    ((2, 8, 6, 7), 4, False, F32, "relu", "same", 1e6),
], ids=["bf16-cl", "5d-cl", "mean1e6"])
def test_both_paths(case, one_program, device, check, monkeypatch):
    """The one-kernel forward and backward (a program per group) and the split ones (partial sums, merge,
    apply) both match the reference on the same cases."""
    shape, g, cl, dtype, act, res, loc = case
    x, w, b, dy = make_case(shape, dtype, cl, seed=67, loc=loc, scale=1.0 if loc > 1e3 else 2.0)
    monkeypatch.setattr(_launch, "_sm_count", lambda device: 1 if one_program else 64)
    assert _launch.one_program_per_group(x.to(device), g) == one_program
    r = make_residual(x, 3, res)
    check(x.to(device), g, w.to(device), b.to(device), act, r.to(device), dy=dy.to(device))
