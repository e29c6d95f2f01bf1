r"""Weight-Standardized convolutions (Qiao et al., 2019): ``WSConv1d``, ``WSConv2d``, ``WSConv3d``.

GN + WS is the combination the GN seeds cite as matching BN at large batch. The convention is exactly that of
``groupnorm.reference.weight_standardize``: for each output channel o,

.. math::

    \hat W_o = \frac{W_o - \mathrm{mean}(W_o)}{\sqrt{\mathrm{Var}(W_o) + \epsilon}}

with mean and *biased* variance over all axes but the output-channel axis 0 (input channels per group and
kernel positions), and ``eps`` *inside* the square root (default 1e-5). Qiao et al.'s original code divides by
the unbiased std plus eps; timm's ``StdConv2d`` uses this biased, eps-inside form (with eps=1e-6). The stored
``weight`` stays the raw parameter; the standardized one is recomputed in every forward pass, so gradients flow
through the standardization (``reference.weight_standardize_backward``).
"""
from __future__ import annotations

import math

import torch
from torch import nn


def weight_standardize(weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    r"""Standardize a weight of shape ``(C_out, *rest)`` per output channel: ``(w - mean) / sqrt(var + eps)``.

    Mean and biased variance over all axes but 0; computed in at least float32 and returned in
    ``weight.dtype``. The torch counterpart of ``groupnorm.reference.weight_standardize``.
    """
    if weight.dim() < 2:
        raise ValueError(f"weight_standardize expects a weight of rank >= 2, got shape {tuple(weight.shape)}")
    acc = torch.promote_types(weight.dtype, torch.float32)
    w = weight.to(acc)
    dims = tuple(range(1, w.dim()))
    var, mean = torch.var_mean(w, dim=dims, correction=0, keepdim=True)
    return ((w - mean) * torch.rsqrt(var + eps)).to(weight.dtype)


class _WSConvMixin:
    """Shared by WSConv1d/2d/3d: checks at construction, standardizes the weight in forward."""

    def _init_ws(self, eps: float) -> None:
        if not eps > 0:
            raise ValueError(f"{type(self).__name__} needs eps > 0, got eps={eps!r}")
        fan_in = math.prod(self.weight.shape[1:])
        if fan_in < 2:
            raise ValueError(
                f"{type(self).__name__}: weight standardization needs a fan-in of at least 2 per output "
                f"channel, got in_channels/groups * prod(kernel_size) = {fan_in} (the standardized weight "
                "would be all zeros)"
            )
        self.eps = float(eps)

    def standardized_weight(self) -> torch.Tensor:
        """The weight the convolution uses: ``weight_standardize(self.weight, self.eps)``."""
        return weight_standardize(self.weight, self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.standardized_weight(), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", eps={self.eps}"


class WSConv1d(_WSConvMixin, nn.Conv1d):
    """``nn.Conv1d`` with a weight-standardized kernel (see the module docstring for the math).

    Same arguments as ``torch.nn.Conv1d`` plus ``eps`` (keyword only, default 1e-5); same state_dict.
    """

    def __init__(self, *args, eps: float = 1e-5, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_ws(eps)


class WSConv2d(_WSConvMixin, nn.Conv2d):
    """``nn.Conv2d`` with a weight-standardized kernel (see the module docstring for the math).

    Same arguments as ``torch.nn.Conv2d`` plus ``eps`` (keyword only, default 1e-5); same state_dict, so a
    Conv2d checkpoint loads into it.

    Shape:
        - Input: ``(N, C_in, H, W)``; Output: ``(N, C_out, H_out, W_out)`` as for ``nn.Conv2d``.

    Examples::

        >>> conv = WSConv2d(64, 128, 3, padding=1, bias=False)
        >>> y = conv(torch.randn(2, 64, 32, 32))
    """

    def __init__(self, *args, eps: float = 1e-5, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_ws(eps)


class WSConv3d(_WSConvMixin, nn.Conv3d):
    """``nn.Conv3d`` with a weight-standardized kernel (see the module docstring for the math).

    Same arguments as ``torch.nn.Conv3d`` plus ``eps`` (keyword only, default 1e-5); same state_dict.
    """

    def __init__(self, *args, eps: float = 1e-5, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_ws(eps)


WS_CONV_FOR = {nn.Conv1d: WSConv1d, nn.Conv2d: WSConv2d, nn.Conv3d: WSConv3d}
"""The WS class replacing each plain ``torch.nn`` convolution (used by ``groupnorm.convert_conv_to_ws``)."""
