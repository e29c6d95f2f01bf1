"""The plain PyTorch path of GroupNorm (+ residual, + activation): any device, any dtype, any case;
differentiable twice.

It serves ``groupnorm.functional.group_norm`` wherever the compiled kernels do not (every CUDA tensor, every
case the kernels decline, ``GROUPNORM_DISABLE_KERNELS=1``), and the kernels' own double backward. Arguments are
assumed checked (``groupnorm.functional`` checks them).

It costs what torch's GN followed by the residual add and the activation costs when a user writes them
(``F.silu(F.group_norm(x, G, w, b) + r)``): torch's own GN op in the input's dtype, and, when no autograd graph
is recorded, the add and the activation in place on GN's freshly allocated output.

Large means. GN is invariant to a per-group shift of its input, but torch's CPU kernels are not exact under it.
With ``r = |mean| / std`` of a group, measured with torch 2.13 against the float64 reference (unit-variance
output, groups of up to 16384 positions per channel):

* contiguous inputs (a Welford cascade): error about ``1.5e-7 * r`` (float32 and, with float32 accumulators,
  the half types) -- 1e-5 at r = 100, 1e-3 at r = 1e4;
* channels-last inputs (sums of x and x^2): error up to about ``2e-5 * r**2``, more for longer runs of positions
  -- 1e-2 at r = 30 (float32), and the output is garbage (errors of 1e3) from r of a few hundred.

So after torch's GN returns its per-group mean and 1/std, the largest ``r`` is read (one small reduction); above
:func:`shift_threshold` of the layout and dtype the GN is recomputed on ``x - K`` with ``K`` the group's mean
(detached: the output does not depend on it, so gradients, double backward included, are unchanged), in float32
for the half types. That keeps the error below ``ERROR_BUDGET`` of the dtype at any mean. The rule applies
only in eager mode on CPU for float32/bfloat16/float16: CUDA's GN uses Welford (no shift needed); float64 has
room to spare; under ``torch.compile`` / ``torch.export`` / the ONNX exporters / TorchScript tracing no shift
is exported (inductor decomposes GN into a Welford ``var_mean``; ONNX Runtime has its own kernel); under
functorch transforms (``vmap``, ``grad``), where a data-dependent branch is impossible, the input is always
shifted by the first value of each group (exact for any mean, one extra pass).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .args import check_activation

__all__ = ["ERROR_BUDGET", "apply_activation", "memory_format", "shift_threshold", "group_norm_plain"]

_ACT_FNS = {"relu": F.relu, "silu": F.silu, "gelu": F.gelu}  # groupnorm.args.ACTIVATIONS as torch functions
# in place, for GN's own fresh output when no autograd graph is recorded
_ACT_INPLACE = {"relu": torch.relu_, "silu": lambda y: F.silu(y, inplace=True), "gelu": torch.ops.aten.gelu_}

ERROR_BUDGET = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 5e-3}
"""Largest error (unit-variance output) the plain path lets torch's CPU kernels make before it shifts the input:
float32 about 1e-4 relative; the half types about their own output rounding (bf16 2^-8, fp16 2^-11, at |y| ~ 4)."""

_SHIFTED_DTYPES = tuple(ERROR_BUDGET)
_RUN_LONG = 16384  # positions per channel up to which the channels-last constant below was measured


def apply_activation(y: torch.Tensor, activation) -> torch.Tensor:
    """``act(y)`` for activation None (identity), "relu", "silu" or "gelu" (exact, erf-based)."""
    check_activation(activation)
    return y if activation is None else _ACT_FNS[activation](y)


def memory_format(x: torch.Tensor):
    """The memory format torch's GN keeps for ``x``: channels-last (2d / 3d) if x is strided so and not also
    contiguous, else contiguous."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if x.dim() == 5 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


def shift_threshold(dtype: torch.dtype, channels_last: bool, positions: int) -> float:
    """The ``r = |mean| / std`` above which torch's CPU GN exceeds ``ERROR_BUDGET[dtype]``, from the error
    models in the module docstring: contiguous ``1.5e-7 * r``; channels-last ``2e-5 * r**2``, scaled by
    ``positions / 16384`` (the positions per channel, H*W*...) beyond that run length."""
    budget = ERROR_BUDGET[dtype]
    if not channels_last:
        return budget / 1.5e-7
    return math.sqrt(budget / (2e-5 * max(1.0, positions / _RUN_LONG)))


def _largest_ratio(mean: torch.Tensor, rstd: torch.Tensor) -> float:
    """max over groups of |mean| / std (= |mean| * rstd), in float32 (a half type's product can overflow)."""
    return float((mean.detach().float() * rstd.detach()).abs_().max())


def _group_values(k: torch.Tensor, cpg: int, ndim: int) -> torch.Tensor:
    """(N, G) per-group values -> (N, C, 1, ...) for broadcasting against an input of rank ``ndim``."""
    n = k.shape[0]
    return k.repeat_interleave(cpg, dim=1).reshape((n, k.shape[1] * cpg) + (1,) * (ndim - 2))


def _tracing() -> bool:
    return (torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting()
            or torch.onnx.is_in_onnx_export())


def group_norm_plain(x, num_groups: int, weight=None, bias=None, eps: float = 1e-5, activation=None,
                     residual=None):
    """The plain PyTorch path with arguments already checked: ``act(GN(x) * weight + bias [+ residual])``.

    x: (N, C, *spatial); weight, bias: (C,) or None; residual: None or x's shape, dtype and device. Returns a
    tensor of x's shape, dtype and memory format (see the module docstring for the large-mean shift).
    """
    n, c = x.shape[0], x.shape[1]
    fmt = memory_format(x)
    record = torch.is_grad_enabled() and (
        x.requires_grad or any(t is not None and t.requires_grad for t in (weight, bias, residual)))
    if x.device.type != "cpu" or x.dtype not in _SHIFTED_DTYPES or x.numel() == 0 or _tracing():
        y = torch.group_norm(x, num_groups, _param(weight, x), _param(bias, x), eps)
    elif torch._C._are_functorch_transforms_active():  # no data-dependent branch: shift by one value per group
        cpg = c // num_groups
        first = x[(slice(None), slice(None, None, cpg)) + (0,) * (x.dim() - 2)].detach()  # (N, G)
        y = _shifted_group_norm(x, first, num_groups, weight, bias, eps)
    else:
        hxw = x.numel() // (n * c)
        xc = x.contiguous(memory_format=fmt)  # what torch.group_norm hands its kernel (a no-op but for odd strides)
        y, mean, rstd = torch.native_group_norm(xc, _param(weight, x), _param(bias, x), n, c, hxw, num_groups, eps)
        limit = shift_threshold(x.dtype, fmt is not torch.contiguous_format, hxw)
        shift = None
        for _ in range(3):  # a shift by torch's mean leaves r' ~ 1e-7 * r * run length: one redo, rarely two
            if not limit < _largest_ratio(mean, rstd) < math.inf:  # (NaN / inf input: no shift helps)
                break
            shift = mean.detach().float() if shift is None else shift + mean.detach()  # mean of x - shift
            y, mean, rstd = _shifted_group_norm(x, shift, num_groups, weight, bias, eps, stats=True)
    if residual is not None:
        y = y + residual if record else y.add_(residual)
    if activation is not None:
        y = _ACT_FNS[activation](y) if record else _ACT_INPLACE[activation](y)
    y = y.to(x.dtype)  # from float32 after a shift of a half-type input
    if fmt is not torch.contiguous_format and not y.is_contiguous(memory_format=fmt):
        y = y.contiguous(memory_format=fmt)  # devices whose GN returns contiguous output
    return y


def _param(p, x):
    """weight / bias as torch's GN takes them for x: x's dtype, or float32 for a half-type x on CPU."""
    if p is None or p.dtype is x.dtype or (p.dtype is torch.float32 and x.is_cpu
                                           and x.dtype in (torch.bfloat16, torch.float16)):
        return p
    return p.to(x.dtype)


def _shifted_group_norm(x, k, num_groups, weight, bias, eps, stats=False):
    """GN of ``x - K`` (= GN of x), K (N, G) detached, computed in float32 for half types; with ``stats``,
    (y, mean, rstd) of the shifted input."""
    d = x.float() if x.dtype in (torch.bfloat16, torch.float16) else x
    d = d - _group_values(k.to(d.dtype), x.shape[1] // num_groups, x.dim())
    w = weight.to(d.dtype) if weight is not None else None
    b = bias.to(d.dtype) if bias is not None else None
    if not stats:
        return torch.group_norm(d, num_groups, w, b, eps)
    d = d.contiguous(memory_format=memory_format(d))
    n, c = x.shape[0], x.shape[1]
    return torch.native_group_norm(d, w, b, n, c, x.numel() // (n * c), num_groups, eps)
