"""Group normalization as a PyTorch function: one decision (``groupnorm.kernels.route``) picks the C++ entry
``groupnorm::group_norm`` (which itself picks the compiled kernels or torch's own GN) or the plain path in Python,
and every argument is checked once, by the path that runs: the operators' C++ checks, or the checks here before
the Python path (the same errors, naming the bad value).

.. math::

    y = \\mathrm{act}\\Big(\\gamma_c \\, \\frac{x - \\mathrm{E}_g[x]}{\\sqrt{\\mathrm{Var}_g[x] + \\epsilon}} + \\beta_c
        [+ r]\\Big)

where the mean and (biased) variance are taken per sample over the ``C // G`` channels of group ``g`` and all
spatial positions. Shapes: ``x`` is ``(N, C, *spatial)`` (any rank >= 2, any memory format), ``weight`` and
``bias`` are ``(C,)`` or None, the residual ``r`` is None or of x's shape; the output has the shape, dtype and
memory format of ``x``.
"""
from __future__ import annotations

import torch

from . import kernels
from .args import ACTIVATIONS, activation_code, check_activation, check_eps, resolve_num_groups
from .plain import apply_activation, group_norm_masked, group_norm_plain

__all__ = ["ACTIVATIONS", "resolve_num_groups", "group_norm", "group_norm_plain", "apply_activation", "check_activation"]

_TENSOR = torch.Tensor
_INF = float("inf")
_route = kernels.route
_ENTRY = kernels.ENTRY


def _check_param(p, num_channels, name: str) -> None:
    if not isinstance(p, _TENSOR):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(p).__name__}")
    if p.shape != (num_channels,):
        raise ValueError(f"{name} must have shape ({num_channels},) for an input with {num_channels} channels, got {tuple(p.shape)}")
    if not p.is_floating_point():
        raise TypeError(f"{name} must be floating point, got dtype {p.dtype}")


def _check_residual(residual, x) -> None:
    if not isinstance(residual, _TENSOR):
        raise TypeError(f"residual must be a torch.Tensor or None, got {type(residual).__name__}")
    if residual.shape != x.shape:
        raise ValueError(f"residual has shape {tuple(residual.shape)} but x has shape {tuple(x.shape)}; they must match")
    if residual.dtype != x.dtype:
        raise TypeError(f"residual has dtype {residual.dtype} but x has dtype {x.dtype}; they must match")
    if residual.device != x.device:
        raise ValueError(f"residual is on {residual.device} but x is on {x.device}")


def group_norm(x, num_groups=None, weight=None, bias=None, eps: float = 1e-5, *, group_size=None, activation=None,
               residual=None, mask=None):
    """Group normalization (Wu & He 2018) with an optional fused activation and residual.

    Args:
        x: input of shape ``(N, C, *spatial)``, floating point, any memory format.
        num_groups: number of groups G; must divide C. Exactly one of ``num_groups`` and ``group_size``.
        weight: per-channel ``gamma`` of shape ``(C,)``, or None.
        bias: per-channel ``beta`` of shape ``(C,)``, or None.
        eps: added to the variance inside the square root (finite, >= 0).
        group_size: channels per group (C // G), the alternative to ``num_groups``.
        activation: None, "relu", "silu" or "gelu", applied after the affine.
        residual: None, or a tensor of x's shape, dtype and device added before the activation:
            ``act(GN(x) + residual)``, the end of a ResNet block (GN, shortcut added, ReLU) in one pass.
        mask: None, or a boolean tensor of shape ``(N, 1, *spatial)`` on x's device, True where a position is
            real (a batch padded to a common size, as detectron2 pads): each group's mean and variance are
            taken over its real positions only; every position, padded ones too, is normalized with them;
            padded positions get no gradient through the statistics. A sample with no real position is a
            ValueError. A masked call always takes the plain path (``plain.group_norm_masked``), never the
            compiled kernels.

    Returns:
        a tensor with the shape, dtype and memory format of ``x``.

    Raises TypeError / ValueError naming the bad value (the same from either path). Uses the compiled CPU kernels (``groupnorm.kernels``)
    where they cover the case and the plain PyTorch path otherwise; both are tested against
    ``groupnorm.reference.group_norm``.
    """
    # normalized here (their rules live in groupnorm.args; the usual values pass without a call there)
    g = num_groups
    if g.__class__ is not int or group_size is not None:
        g = resolve_num_groups(_num_channels(x), num_groups, group_size)
    code = activation_code(activation)
    if eps.__class__ is not float:
        eps = check_eps(eps)
    if mask is not None:
        _check(x, g, weight, bias, eps, residual)
        _check_mask(mask, x)
        return group_norm_masked(x, g, mask, weight, bias, eps, activation, residual)
    # the C++ entry (it decides kernels or plain, and checks what is left: rank, G dividing C, shapes, eps) or
    # the Python path
    how, op = _route(x, weight, bias, residual)
    if how == _ENTRY:
        return op(x, g, weight, bias, eps, code, residual)
    _check(x, g, weight, bias, eps, residual)
    return group_norm_plain(x, g, weight, bias, eps, activation, residual)


def _num_channels(x) -> int:
    _check_input(x)
    return int(x.shape[1])  # a plain int also under the TorchScript tracer (legacy ONNX export)


def _check_input(x) -> None:
    if not isinstance(x, _TENSOR):
        raise TypeError(f"group_norm expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"group_norm expects an input of shape (N, C, *spatial) with rank >= 2, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"group_norm expects a floating-point input, got dtype {x.dtype}")


def _check(x, num_groups: int, weight, bias, eps: float, residual) -> None:
    """The Python path's checks of what ``group_norm`` has not normalized (the operators make the same)."""
    c = _num_channels(x)
    if num_groups < 1 or c % num_groups:
        resolve_num_groups(int(c), num_groups)  # raises, naming the value
    if weight is not None:
        _check_param(weight, c, "weight")
    if bias is not None:
        _check_param(bias, c, "bias")
    if not 0.0 <= eps < _INF:
        check_eps(eps)  # raises
    if residual is not None:
        _check_residual(residual, x)


def _check_mask(mask, x) -> None:
    if not isinstance(mask, _TENSOR):
        raise TypeError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a boolean tensor (True = real position), got dtype {mask.dtype}")
    want = (x.shape[0], 1) + tuple(x.shape[2:])
    if tuple(mask.shape) != want:
        raise ValueError(f"mask must have shape {want} (N, 1, *spatial) for x of shape {tuple(x.shape)}, "
                         f"got {tuple(mask.shape)}")
    if mask.device != x.device:
        raise ValueError(f"mask is on {mask.device} but x is on {x.device}")
    if x.shape[0] and not torch.compiler.is_compiling():
        real = mask.reshape(mask.shape[0], -1).any(1)
        if not bool(real.all()):
            empty = (~real).nonzero().flatten().tolist()
            raise ValueError(f"mask has no real (True) position in sample(s) {empty}: their groups' statistics "
                             f"are undefined")
