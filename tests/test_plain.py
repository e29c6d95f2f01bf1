"""The plain path, both forms: the C++ operator ``groupnorm::gn_plain`` (what GROUPNORM_DISABLE_KERNELS=1 and
every declined case get in eager mode) and the Python ``groupnorm.plain.group_norm_plain`` (tracing, functorch,
no compiled library). Torch's own GN in the input's dtype, in place only without a graph; the operator shifts
large means only where torch's CPU kernel needs it, the Python form always (by the group's mean).

Against the NumPy float64 reference: values at means up to 1e6 standard deviations in both layouts and three
dtypes; gradients there; torch's result bit for bit below the shift threshold (the rule did not fire) and
torch's error above the budget where the rule fires (it was needed); the static rule under vmap; residual and
activation with and without a recorded graph; the route to each form.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from groupnorm import functional, kernels, plain
from groupnorm import reference as R
from groupnorm.args import activation_code
from groupnorm.plain import ERROR_BUDGET, group_norm_plain

from helpers import (TOL, TOL_LARGE_MEAN, assert_close, check_against_reference, check_residual, make_case,
                     needs_kernels)

HALF = (torch.bfloat16, torch.float16)


def plain_op(x, num_groups, weight=None, bias=None, eps=1e-5, activation=None, residual=None):
    return torch.ops.groupnorm.gn_plain(x, num_groups, weight, bias, eps, activation_code(activation), residual)


FORMS = [pytest.param(plain_op, id="op", marks=needs_kernels), pytest.param(group_norm_plain, id="py")]


def shift_threshold(dtype, channels_last, positions):
    """The documented error model (groupnorm.plain's docstring): torch's CPU GN errs by ~1.5e-7 r contiguous,
    ~2e-5 r^2 channels-last (scaled by positions / 16384 beyond that run length)."""
    if not channels_last:
        return ERROR_BUDGET[dtype] / 1.5e-7
    return (ERROR_BUDGET[dtype] / (2e-5 * max(1.0, positions / 16384))) ** 0.5


def _input(shape, ratio, dtype, channels_last, seed=0):
    """x ~ N(ratio, 1) (helpers.make_case's x): a mean of ``ratio`` standard deviations."""
    return make_case(shape, dtype, channels_last, seed=seed, loc=ratio, scale=1.0)[0]


def _allowed(dtype, ref):
    """the budget plus the rounding of the output to ``dtype`` (its spacing at the largest |y|)"""
    return ERROR_BUDGET[dtype] + torch.finfo(dtype).eps * float(np.abs(ref).max())


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", [torch.float32, *HALF])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(2, 64, 16, 16), (1, 32, 96, 96), (2, 32, 4, 8, 8)])
def test_large_means_within_budget(form, dtype, channels_last, shape):
    ratios = [0, 3, 30, 1e3] + ([1e5, 1e6] if dtype is not torch.float16 else [])
    for ratio in ratios:
        x = _input(shape, ratio, dtype, channels_last)
        y = form(x, 32)
        assert y.dtype == dtype and y.is_contiguous(memory_format=plain.memory_format(x))
        ref = R.group_norm(x.double().numpy(), 32)
        err = float(np.abs(y.double().numpy() - ref).max())
        assert err <= _allowed(dtype, ref), (ratio, err)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, *HALF])
@pytest.mark.parametrize("channels_last", [False, True])
def test_shift_only_where_torch_needs_it(dtype, channels_last):
    """Below the threshold the operator is torch's GN bit for bit; far above it torch exceeds the budget and
    the operator does not."""
    shape = (2, 64, 32, 32)
    limit = shift_threshold(dtype, channels_last, 32 * 32)
    below = _input(shape, 0.5 * limit if limit < 1e3 else 3.0, dtype, channels_last)
    w, b = torch.rand(64).to(dtype) + 0.5, torch.randn(64).to(dtype)
    torch.testing.assert_close(plain_op(below, 32, w, b), F.group_norm(below, 32, w, b), rtol=0, atol=0)
    ratio = 30 * limit
    if dtype is not torch.float32 and not channels_last:
        pytest.skip(f"r = {ratio:.0f}: a contiguous half-type group is constant long before its threshold")
    above = _input(shape, ratio, dtype, channels_last)
    ref = R.group_norm(above.double().numpy(), 32)
    torch_err = float(np.abs(F.group_norm(above, 32).double().numpy() - ref).max())
    ours_err = float(np.abs(plain_op(above, 32).double().numpy() - ref).max())
    assert torch_err > ERROR_BUDGET[dtype] and ours_err <= _allowed(dtype, ref), (torch_err, ours_err)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("act", [None, "silu", "relu"])
def test_gradients_at_a_large_mean(form, channels_last, act):
    """Values and the four gradients at a mean of 1e4 standard deviations, within the float32 budget."""
    x, w, b, dy = make_case((2, 16, 8, 8), torch.float32, channels_last, seed=1, loc=1e4, scale=1.0)
    r = _input((2, 16, 8, 8), 0.0, torch.float32, channels_last, seed=2)
    check_residual(x, w, b, dy, r, 4, act, call=form)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("act", [None, "relu", "silu", "gelu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_in_place_without_graph_equals_the_composite(form, act, dtype):
    """No graph recorded: the add and activation run in place on GN's output; same values as torch's composite,
    and neither the input nor the residual is touched."""
    x = _input((2, 8, 5, 5), 0.0, dtype, True)
    r = _input((2, 8, 5, 5), 0.0, dtype, False, seed=1)
    w, b = torch.rand(8).to(dtype) + 0.5, torch.randn(8).to(dtype)
    x0, r0 = x.clone(), r.clone()
    want = F.group_norm(x, 4, w, b) + r
    want = want if act is None else getattr(F, act)(want)
    for mode in (torch.no_grad, torch.inference_mode, torch.enable_grad):
        with mode():
            got = form(x, 4, w, b, activation=act, residual=r)
        # the operator: torch's GN bit for bit; the Python form shifts (in float32 for bf16): within rounding
        tol = dict(rtol=0, atol=0) if form is plain_op else {} if dtype is torch.float32 else dict(rtol=2**-7, atol=2**-6)
        torch.testing.assert_close(got, want, **tol)
    assert torch.equal(x, x0) and torch.equal(r, r0)


@pytest.mark.parametrize("form", FORMS)
def test_residual_requiring_grad_alone_records_the_graph(form):
    x, r = torch.randn(2, 8, 3, 3), torch.randn(2, 8, 3, 3, requires_grad=True)
    y = form(x, 4, activation="silu", residual=r)
    (dr,) = torch.autograd.grad(y.sum(), r)
    pre = F.group_norm(x, 4) + r.detach()
    torch.testing.assert_close(dr, torch.sigmoid(pre) * (1 + pre * (1 - torch.sigmoid(pre))))


def test_vmap_shifts_statically():
    """Under vmap no data-dependent branch is possible: the input is always shifted by its group's mean, which
    is exact at any mean."""
    x = _input((3, 2, 16, 8, 8), 1e5, torch.float32, False)  # 3 vmapped samples of (2, 16, 8, 8)
    x = x.contiguous()
    y = torch.func.vmap(lambda t: group_norm_plain(t, 4))(x)
    ref = np.stack([R.group_norm(t.double().numpy(), 4) for t in x])
    assert_close(y, ref, TOL_LARGE_MEAN, "vmap at a mean of 1e5")


@pytest.mark.parametrize("form", FORMS)
def test_float64_and_empty_batch_untouched(form):
    x = _input((2, 8, 4, 4), 1e6, torch.float64, True)
    torch.testing.assert_close(form(x, 4), F.group_norm(x, 4), rtol=0, atol=0)
    assert form(torch.randn(0, 8, 3), 4).shape == (0, 8, 3)


@needs_kernels
def test_operator_double_backward_and_gradcheck():
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(2, 6, 3, 2, generator=g, dtype=torch.float64) + 5).requires_grad_(True)
    w = (torch.rand(6, generator=g, dtype=torch.float64) + 0.5).requires_grad_(True)
    b = torch.randn(6, generator=g, dtype=torch.float64).requires_grad_(True)
    r = torch.randn(2, 6, 3, 2, generator=g, dtype=torch.float64).requires_grad_(True)
    for act in (None, "silu", "gelu"):
        f = lambda *t: plain_op(t[0], 3, t[1], t[2], activation=act, residual=t[3])  # noqa: E731
        assert torch.autograd.gradcheck(f, (x, w, b, r))
        assert torch.autograd.gradgradcheck(f, (x, w, b, r))


@needs_kernels
def test_route_picks_each_form(monkeypatch):
    """Eager: the C++ entry, which runs the kernels where its predicate holds and the plain operator otherwise
    (kernels declined or disabled); without the compiled library, under vmap or while tracing: the Python form
    (which the route's callers check and run)."""
    x = torch.randn(2, 8, 3, 3)
    monkeypatch.delenv("GROUPNORM_DISABLE_KERNELS", raising=False)
    assert kernels.route(x)[0] == kernels.ENTRY and kernels.kernel_takes(x)
    w64 = torch.randn(8, dtype=torch.float64)
    assert kernels.route(x, w64)[0] == kernels.ENTRY and not kernels.kernel_takes(x, w64)  # mixed dtypes: plain
    assert kernels.route(x.to(torch.int32))[0] == kernels.ENTRY  # its C++ checks name the dtype
    assert kernels.route(x, "w")[0] == kernels.PLAIN_PY  # a non-tensor: the Python checks name it
    torch.func.vmap(lambda t: _assert_route(t, kernels.PLAIN_PY))(x)
    for value, takes in (("1", False), (" TRUE ", False), ("on", False), ("0", True), ("", True), ("no", True)):
        monkeypatch.setenv("GROUPNORM_DISABLE_KERNELS", value)
        assert kernels.route(x)[0] == kernels.ENTRY and kernels.kernel_takes(x) is takes
        assert kernels.disabled() is not takes  # Python's reading of the switch agrees with the C++ one
    xg = x.clone().requires_grad_(True)
    monkeypatch.setenv("GROUPNORM_DISABLE_KERNELS", "yes")
    assert "groupnorm kernels" not in functional.group_norm(xg, 4).grad_fn.name()  # the plain operator ran
    monkeypatch.setenv("GROUPNORM_DISABLE_KERNELS", "0")
    assert "groupnorm kernels" in functional.group_norm(xg, 4).grad_fn.name()
    assert "groupnorm kernels" not in functional.group_norm(xg, 4, w64.float().double()).grad_fn.name()
    monkeypatch.setattr(kernels, "_available", False)
    assert kernels.route(x)[0] == kernels.PLAIN_PY
    big = _input((2, 8, 6, 6), 1e5, torch.float32, True)  # no library: the Python form, shifted, still exact
    ref = R.group_norm(big.double().numpy(), 4, activation="silu")
    assert_close(functional.group_norm(big, 4, activation="silu"), ref, TOL_LARGE_MEAN, "no library, mean 1e5")


def _assert_route(t, how):
    assert kernels.route(t)[0] == how
    return t


@needs_kernels
def test_route_calls_the_entry_unboxed_for_plain_tensors_only(monkeypatch):
    """Plain tensors and parameters in eager mode: the library's ``group_norm`` (the entry operator called
    unboxed); a tensor subclass or an active TorchFunctionMode: the OpOverload's C++ entry, through which
    ``__torch_function__`` sees the operator. Both give the same values and the same errors."""
    from torch.overrides import TorchFunctionMode

    monkeypatch.delenv("GROUPNORM_DISABLE_KERNELS", raising=False)
    x = torch.randn(2, 8, 3, 3)
    w = torch.nn.Parameter(torch.rand(8) + 0.5)
    fast, boxed = kernels._group_norm_fast, kernels._group_norm_call
    assert fast is not boxed and kernels.route(x, w)[1] is fast

    class Sub(torch.Tensor):
        pass

    assert kernels.route(x.as_subclass(Sub), w)[1] is boxed
    assert kernels.route(x, w.detach().as_subclass(Sub))[1] is boxed
    seen = []

    class Record(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    with Record():
        assert kernels.route(x, w)[1] is boxed
        y_mode = functional.group_norm(x, 4, w, activation="silu")
    assert any("group_norm" in s for s in seen)
    y = functional.group_norm(x, 4, w, activation="silu")
    torch.testing.assert_close(y, y_mode, rtol=0, atol=0)
    ref = R.group_norm(x.double().numpy(), 4, w.detach().double().numpy(), activation="silu")
    assert_close(y, ref, TOL[torch.float32], "unboxed entry")
    # the binding's own argument handling
    with pytest.raises(TypeError, match="7 arguments, got 2"):
        fast(x, 4)
    with pytest.raises(TypeError, match="weight must be a torch.Tensor or None, got list"):
        fast(x, 4, [1.0] * 8, None, 1e-5, 0, None)
    with pytest.raises(TypeError, match="expects a torch.Tensor, got str"):
        fast("x", 4, None, None, 1e-5, 0, None)
    with pytest.raises(ValueError, match="num_groups=3 does not divide num_channels=8"):
        fast(x, 3, None, None, 1e-5, 0, None)
    # values and gradients through the unboxed call: the reference's

    def unboxed(x, num_groups, weight, bias, eps, activation=None, residual=None):
        return fast(x, num_groups, weight, bias, eps, activation_code(activation), residual)

    for affine in (True, "weight", False):
        check_against_reference(*make_case((2, 8, 3, 3), torch.float32, False, affine, seed=4), 4, "silu",
                                call=unboxed)
