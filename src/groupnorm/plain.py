"""The plain PyTorch path of GroupNorm (+ activation): any device, any dtype, any case; differentiable twice.

It serves ``groupnorm.functional.group_norm`` wherever the compiled kernels do not, and the kernels' own
double backward. Arguments are assumed checked (``groupnorm.functional`` checks them).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .args import check_activation

__all__ = ["apply_activation", "memory_format", "group_norm_plain"]

_ACT_FNS = {"relu": F.relu, "silu": F.silu, "gelu": F.gelu}  # groupnorm.args.ACTIVATIONS as torch functions


def apply_activation(y: torch.Tensor, activation) -> torch.Tensor:
    """``act(y)`` for activation None (identity), "relu", "silu" or "gelu" (exact, erf-based)."""
    check_activation(activation)
    return y if activation is None else _ACT_FNS[activation](y)


def memory_format(x: torch.Tensor):
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if x.dim() == 5 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


def group_norm_plain(x, num_groups: int, weight=None, bias=None, eps: float = 1e-5, activation=None,
                     residual=None):
    """The plain PyTorch path (any device, any case), with arguments already checked:
    ``act(GN(x) * weight + bias [+ residual])``.

    GN is invariant to a per-group shift, so the input is first shifted by one of its own values per
    (sample, group), ``d = x - K``: this makes float32 input with a large mean (1e6) exact to about 1e-6
    instead of about 5e-2 (what ``F.group_norm`` gives there). ``K`` is detached: the output does not depend
    on it, so gradients, double backward included, are unchanged. Half types are computed in float32.
    """
    n, c = x.shape[0], x.shape[1]
    out_dtype = x.dtype
    fmt = memory_format(x)
    xc = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    if x.numel() > 0:
        cpg = c // num_groups
        index = (slice(None), slice(None, None, cpg)) + (0,) * (x.dim() - 2)
        shift = xc[index].detach()  # (N, G): the first value of each group, a view (no copy)
        shift = shift.repeat_interleave(cpg, dim=1).reshape((n, c) + (1,) * (x.dim() - 2))
        xc = xc - shift
    w = weight.to(xc.dtype) if weight is not None else None
    b = bias.to(xc.dtype) if bias is not None else None
    # torch.group_norm is the ATen op behind F.group_norm, called directly because F.group_norm refuses a
    # group of a single value, for which GN is well defined (xhat = 0, the output is beta).
    y = torch.group_norm(xc, num_groups, w, b, eps)
    if residual is not None:
        y = y + residual.to(y.dtype)
    y = apply_activation(y, activation)
    y = y.to(out_dtype)
    if fmt is not torch.contiguous_format and not y.is_contiguous(memory_format=fmt):
        y = y.contiguous(memory_format=fmt)
    return y
