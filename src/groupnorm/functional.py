"""Group normalization as a PyTorch function: argument checks, then the compiled kernel or the plain path.

.. math::

    y = \\mathrm{act}\\Big(\\gamma_c \\, \\frac{x - \\mathrm{E}_g[x]}{\\sqrt{\\mathrm{Var}_g[x] + \\epsilon}} + \\beta_c\\Big)

where the mean and (biased) variance are taken per sample over the ``C // G`` channels of group ``g`` and all
spatial positions. Shapes: ``x`` is ``(N, C, *spatial)`` (any rank >= 2, any memory format), ``weight`` and
``bias`` are ``(C,)`` or None; the output has the shape, dtype and memory format of ``x``.
"""
from __future__ import annotations

import torch

from . import kernels
from .plain import ACTIVATIONS, apply_activation, check_activation, group_norm_plain
from .reference import resolve_num_groups

__all__ = ["ACTIVATIONS", "resolve_num_groups", "group_norm", "group_norm_plain", "apply_activation", "check_activation"]


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


def _check_residual(residual, x) -> None:
    if residual is None:
        return
    if not isinstance(residual, torch.Tensor):
        raise TypeError(f"residual must be a torch.Tensor or None, got {type(residual).__name__}")
    if residual.shape != x.shape:
        raise ValueError(f"residual has shape {tuple(residual.shape)} but x has shape {tuple(x.shape)}; they must match")
    if residual.dtype != x.dtype:
        raise TypeError(f"residual has dtype {residual.dtype} but x has dtype {x.dtype}; they must match")
    if residual.device != x.device:
        raise ValueError(f"residual is on {residual.device} but x is on {x.device}")


def group_norm(x, num_groups=None, weight=None, bias=None, eps: float = 1e-5, *, group_size=None, activation=None,
               residual=None):
    """Group normalization (Wu & He 2018) with an optional fused activation.

    Args:
        x: input of shape ``(N, C, *spatial)``, floating point, any memory format.
        num_groups: number of groups G; must divide C. Exactly one of ``num_groups`` and ``group_size``.
        weight: per-channel ``gamma`` of shape ``(C,)``, or None.
        bias: per-channel ``beta`` of shape ``(C,)``, or None.
        eps: added to the variance inside the square root.
        group_size: channels per group (C // G), the alternative to ``num_groups``.
        activation: None, "relu", "silu" or "gelu", applied after the affine.
        residual: None, or a tensor of x's shape, dtype and device added before the activation:
            ``act(GN(x) + residual)``, the end of a ResNet block (GN, shortcut added, ReLU) in one pass.

    Returns:
        a tensor with the shape, dtype and memory format of ``x``.

    Uses the compiled CPU kernels (``groupnorm.kernels``) where they cover the case and the plain PyTorch
    path otherwise; both are tested against ``groupnorm.reference.group_norm``.
    """
    # the usual call: when the kernels take it, their checks are the only ones
    tried = group_size is None and num_groups.__class__ is int and eps.__class__ in (float, int)
    if tried:
        y = kernels.try_group_norm(x, num_groups, weight, bias, eps, activation, residual)
        if y is not None:
            return y
    _check_input(x)
    c = int(x.shape[1])  # a plain int also under the TorchScript tracer (legacy ONNX export)
    g = resolve_num_groups(c, num_groups, group_size)
    _check_param(weight, c, "weight")
    _check_param(bias, c, "bias")
    check_activation(activation)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps >= 0:
        raise ValueError(f"eps must be a non-negative number, got eps={eps!r}")
    _check_residual(residual, x)
    # the kernels with the normalized arguments (G from group_size, eps as a float), unless they already declined
    # these very arguments above
    y = None if tried else kernels.try_group_norm(x, g, weight, bias, float(eps), activation, residual)
    return y if y is not None else group_norm_plain(x, g, weight, bias, float(eps), activation, residual)
