"""Group normalization as a PyTorch function: argument checks, then the compiled kernel or the plain path.

.. math::

    y = \\mathrm{act}\\Big(\\gamma_c \\, \\frac{x - \\mathrm{E}_g[x]}{\\sqrt{\\mathrm{Var}_g[x] + \\epsilon}} + \\beta_c\\Big)

where the mean and (biased) variance are taken per sample over the ``C // G`` channels of group ``g`` and all
spatial positions. Shapes: ``x`` is ``(N, C, *spatial)`` (any rank >= 2, any memory format), ``weight`` and
``bias`` are ``(C,)`` or None; the output has the shape, dtype and memory format of ``x``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import kernels
from .reference import ACTIVATIONS, resolve_num_groups

__all__ = ["ACTIVATIONS", "resolve_num_groups", "group_norm", "group_norm_plain", "apply_activation", "check_activation"]

_ACT_FNS = {"relu": F.relu, "silu": F.silu, "gelu": F.gelu}


def check_activation(activation) -> None:
    """Raise ValueError unless ``activation`` is None or one of ``ACTIVATIONS``."""
    if activation is not None and activation not in _ACT_FNS:
        raise ValueError(
            f"unknown activation {activation!r}; expected None or one of {', '.join(map(repr, ACTIVATIONS))}"
        )


def apply_activation(y: torch.Tensor, activation) -> torch.Tensor:
    """``act(y)`` for activation None (identity), "relu", "silu" or "gelu" (exact, erf-based)."""
    check_activation(activation)
    return y if activation is None else _ACT_FNS[activation](y)


def _check_input(x) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"group_norm expects a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"group_norm expects a floating-point input, got dtype {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"group_norm expects an input of shape (N, C, *spatial) with rank >= 2, got shape {tuple(x.shape)}")


def _check_param(p, num_channels: int, name: str) -> None:
    if p is None:
        return
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(p).__name__}")
    if tuple(p.shape) != (num_channels,):
        raise ValueError(f"{name} must have shape ({num_channels},) for an input with {num_channels} channels, got {tuple(p.shape)}")
    if not p.is_floating_point():
        raise TypeError(f"{name} must be floating point, got dtype {p.dtype}")


def _memory_format(x: torch.Tensor):
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if x.dim() == 5 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


def group_norm_plain(x, num_groups: int, weight=None, bias=None, eps: float = 1e-5, activation=None):
    """The plain PyTorch path (any device, any case), with arguments already checked.

    GN is invariant to a per-group shift, so the input is first shifted by one of its own values per
    (sample, group), ``d = x - K``: this makes float32 input with a large mean (1e6) exact to about 1e-6
    instead of about 5e-2 (what ``F.group_norm`` gives there). ``K`` is detached: the output does not depend
    on it, so gradients, double backward included, are unchanged. Half types are computed in float32.
    """
    n, c = x.shape[0], x.shape[1]
    out_dtype = x.dtype
    fmt = _memory_format(x)
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
    y = apply_activation(torch.group_norm(xc, num_groups, w, b, eps), activation)
    y = y.to(out_dtype)
    if fmt is not torch.contiguous_format and not y.is_contiguous(memory_format=fmt):
        y = y.contiguous(memory_format=fmt)
    return y


def group_norm(x, num_groups=None, weight=None, bias=None, eps: float = 1e-5, *, group_size=None, activation=None):
    """Group normalization (Wu & He 2018) with an optional fused activation.

    Args:
        x: input of shape ``(N, C, *spatial)``, floating point, any memory format.
        num_groups: number of groups G; must divide C. Exactly one of ``num_groups`` and ``group_size``.
        weight, bias: per-channel affine ``gamma``, ``beta`` of shape ``(C,)``, or None.
        eps: added to the variance inside the square root.
        group_size: channels per group (C // G), the alternative to ``num_groups``.
        activation: None, "relu", "silu" or "gelu", applied after the affine.

    Returns:
        a tensor with the shape, dtype and memory format of ``x``.

    Uses the compiled CPU kernels (``groupnorm.kernels``) where they cover the case and the plain PyTorch
    path otherwise; both are tested against ``groupnorm.reference.group_norm``.
    """
    _check_input(x)
    c = int(x.shape[1])  # a plain int also under the TorchScript tracer (legacy ONNX export)
    g = resolve_num_groups(c, num_groups, group_size)
    _check_param(weight, c, "weight")
    _check_param(bias, c, "bias")
    check_activation(activation)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps >= 0:
        raise ValueError(f"eps must be a non-negative number, got eps={eps!r}")
    if kernels.can_handle(x, weight, bias, activation):
        return kernels.group_norm(x, g, weight, bias, float(eps), activation)
    return group_norm_plain(x, g, weight, bias, float(eps), activation)
