"""The plain PyTorch path of GroupNorm (+ residual, + activation) in Python: any device, any dtype, any case;
differentiable twice.

The plain path's main form is the C++ operator ``groupnorm::gn_plain`` (``kernels/csrc/gn_ops_plain.h``),
which ``groupnorm.functional.group_norm`` calls for every case the compiled kernels decline (every CUDA
tensor, mixed dtypes, ``GROUPNORM_DISABLE_KERNELS=1``): torch's own GN, add and activation with no Python
between them, so it costs what ``F.silu(F.group_norm(x, G, w, b) + r)`` costs. This module is the path where
that operator cannot run: under ``torch.compile`` / ``torch.export`` / the ONNX exporters / TorchScript
tracing (standard ops must be traced), under functorch transforms (``vmap``, ``grad``, ...), and when the
compiled library did not build. Arguments are assumed checked (``groupnorm.functional`` checks them).

Large means. GN is invariant to a per-group shift of its input, but torch's CPU kernels are not exact under it.
With ``r = |mean| / std`` of a group, measured with torch 2.13 against the float64 reference (unit-variance
output, groups of up to 16384 positions per channel):

* contiguous inputs (a Welford cascade): error about ``1.5e-7 * r`` (float32 and, with float32 accumulators,
  the half types) -- 1e-5 at r = 100, 1e-3 at r = 1e4;
* channels-last inputs (sums of x and x^2): error up to about ``2e-5 * r**2``, more for longer runs of positions
  -- 1e-2 at r = 30 (float32), and the output is garbage (errors of 1e3) from r of a few hundred.

The C++ operator reads the largest ``r`` from torch's statistics and recomputes the GN on ``x - mean`` above a
threshold, which keeps the error below ``ERROR_BUDGET`` of the dtype at any mean at no cost for ordinary
inputs. Here no value can be read (a traced graph or a functorch transform cannot branch on data), so: while
tracing no shift is applied (inductor decomposes GN into a Welford ``var_mean``; ONNX Runtime has its own
kernel); otherwise (functorch, or no compiled library) a CPU float32 / bfloat16 / float16 input is always
shifted by its group's mean (detached; computed in float32, whose rounding leaves ``r`` below 0.1 at means of
1e6 standard deviations; two extra passes over x; the GN itself in float32 for the half types). CUDA's GN uses Welford (no shift needed); float64 has room to spare.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

from .args import check_activation
from .layout import memory_format

__all__ = ["ERROR_BUDGET", "apply_activation", "memory_format", "group_norm_plain",  # memory_format: groupnorm.layout's
           "group_norm_masked"]

_ACT_FNS = {"relu": F.relu, "silu": F.silu, "gelu": F.gelu}  # groupnorm.args.ACTIVATIONS as torch functions
# in place, for GN's own fresh output when no autograd graph is recorded
_ACT_INPLACE = {"relu": torch.relu_, "silu": lambda y: F.silu(y, inplace=True), "gelu": torch.ops.aten.gelu_}

ERROR_BUDGET = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 5e-3}
"""Largest error (unit-variance output) the plain path promises (groupnorm::gn_plain lets torch's CPU kernels make
at most this before it shifts the input; ``kErrorBudget*`` in ``kernels/csrc/gn_ops_plain.h`` holds the same
numbers, and a test compares the two):
float32 about 1e-4 relative; the half types about their own output rounding (bf16 2^-8, fp16 2^-11, at |y| ~ 4)."""

_SHIFTED_DTYPES = tuple(ERROR_BUDGET)


def apply_activation(y: torch.Tensor, activation) -> torch.Tensor:
    """``act(y)`` for activation None (identity), "relu", "silu" or "gelu" (exact, erf-based)."""
    check_activation(activation)
    return y if activation is None else _ACT_FNS[activation](y)


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
    fmt = memory_format(x)
    if weight is None and bias is not None:  # torch's GN backward fails for a bias without a weight ("tensor
        weight = torch.ones_like(bias)       # does not have a device"): a weight of ones, the same values
    record = torch.is_grad_enabled() and (
        x.requires_grad or any(t is not None and t.requires_grad for t in (weight, bias, residual)))
    if x.device.type != "cpu" or x.dtype not in _SHIFTED_DTYPES or x.numel() == 0 or _tracing():
        y = torch.group_norm(x, num_groups, _param(weight, x), _param(bias, x), eps)
    else:  # functorch or no compiled library: no data-dependent branch, so always shift by the group's mean
        k = x.detach().float().reshape(x.shape[0], num_groups, -1).mean(-1)  # (N, G), float32
        y = _shifted_group_norm(x, k, num_groups, weight, bias, eps)
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


def _shifted_group_norm(x, k, num_groups, weight, bias, eps):
    """GN of ``x - K`` (= GN of x), K (N, G) detached, computed in float32 for half types."""
    d = x.float() if x.dtype in (torch.bfloat16, torch.float16) else x
    d = d - _group_values(k.to(d.dtype), x.shape[1] // num_groups, x.dim())
    w = weight.to(d.dtype) if weight is not None else None
    b = bias.to(d.dtype) if bias is not None else None
    return torch.group_norm(d, num_groups, w, b, eps)


def group_norm_masked(x, num_groups: int, mask, weight=None, bias=None, eps: float = 1e-5, activation=None,
                      residual=None):
    """GN whose statistics leave out padded positions, arguments already checked (``groupnorm.functional``).

    ``mask`` (bool, ``(N, 1, *spatial)``, True where a position is real): per sample and group, with ``m`` =
    ``C // G`` x (real positions), ``mean = sum(mask * x) / m`` and ``var = sum(mask * (x - mean)^2) / m``
    (two passes, so no cancellation at large means); every position, padded ones too, is normalized with
    them, then ``act(weight * xhat + bias [+ residual])``. Written with torch ops, so autograd gives the exact
    gradient: a padded position's input reaches the output only through its own ``xhat`` (no gradient
    through the statistics). Computed in float32 for the half types. Returns x's shape, dtype and memory
    format. Never the compiled kernels (they have no mask).
    """
    fmt = memory_format(x)
    cd = torch.float32 if x.dtype in (torch.bfloat16, torch.float16) else x.dtype
    n, c = x.shape[0], x.shape[1]
    spatial = tuple(x.shape[2:])
    xv = x.to(cd).reshape((n, num_groups, c // num_groups) + spatial)
    w = mask.to(cd).reshape((n, 1, 1) + spatial)
    dims = tuple(range(2, xv.dim()))
    count = w.sum(dims, keepdim=True) * (c // num_groups)
    mean = (xv * w).sum(dims, keepdim=True) / count
    d = xv - mean
    var = (d * d * w).sum(dims, keepdim=True) / count
    y = (d * torch.rsqrt(var + eps)).reshape(x.shape)
    shape = (1, c) + (1,) * len(spatial)
    if weight is not None:
        y = y * weight.to(cd).reshape(shape)
    if bias is not None:
        y = y + bias.to(cd).reshape(shape)
    if residual is not None:
        y = y + residual
    if activation is not None:
        y = _ACT_FNS[activation](y)
    y = y.to(x.dtype)
    if fmt is not torch.contiguous_format:
        y = y.contiguous(memory_format=fmt)
    return y
