"""``GroupNorm``: a drop-in for ``torch.nn.GroupNorm`` with ``group_size=`` and a fused activation."""
from __future__ import annotations

import torch
from torch import nn

from .. import functional as GF


class GroupNorm(nn.GroupNorm):
    r"""Group Normalization (Wu & He, ECCV 2018), optionally fused with an activation.

    .. math::

        y = \mathrm{act}\Big(\frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} * \gamma + \beta\Big)

    The ``num_channels`` channels are split into ``num_groups`` consecutive groups; mean and biased variance
    are computed per sample over each group's channels and all spatial positions. ``gamma`` and ``beta`` are
    per-channel (``weight`` and ``bias``, shape ``(C,)``), initialised to ones and zeros, exactly as in
    ``torch.nn.GroupNorm``, whose state_dict this module loads and produces.

    It *is* a ``torch.nn.GroupNorm`` (a subclass: same positional constructor, attributes, state_dict keys and
    ``extra_repr``), so code that finds norm layers by type (weight-decay exclusion, freezing utilities, model
    summaries) treats it as one. With ``activation=None`` and no residual it computes what
    ``torch.nn.GroupNorm`` computes (within float rounding; through the compiled kernels where they apply).

    Args:
        num_groups: number of groups G (divides ``num_channels``). Exactly one of this and ``group_size``.
        num_channels: number of channels C expected in the input.
        eps: added to the variance for numerical stability. Default: 1e-5.
        affine: learnable per-channel ``weight`` and ``bias``. Default: True.
        device: of ``weight`` and ``bias``, as in every ``torch.nn`` layer.
        dtype: of ``weight`` and ``bias``.
        bias: with ``affine``, also learn ``bias`` (beta), as torch's ``bias=`` keyword. Default: True.
        group_size: channels per group, ``C // G`` (keyword only); ``group_size=16`` with 256 channels is G=16.
        activation: None, ``"relu"``, ``"silu"`` or ``"gelu"``, applied after the affine (keyword only).

    Shape:
        - Input: ``(N, C, *)``; channels-last layouts are kept.
        - Output: ``(N, C, *)`` (same shape, dtype and memory format as the input).

    Examples::

        >>> m = GroupNorm(32, 256)                         # as torch.nn.GroupNorm(32, 256)
        >>> m = GroupNorm(num_channels=256, group_size=16)  # 16 groups of 16 channels
        >>> m = GroupNorm(256, 256)                        # InstanceNorm with a per-channel affine
        >>> m = GroupNorm(1, 256)                          # LayerNorm over (C, H, W), per-channel affine
        >>> m = GroupNorm(32, 256, activation="silu")      # GN followed by SiLU, fused on CPU
    """

    __constants__ = ["num_groups", "num_channels", "eps", "affine", "activation"]

    def __init__(self, num_groups=None, num_channels=None, eps: float = 1e-5, affine: bool = True,
                 device=None, dtype=None, *, bias: bool = True, group_size=None, activation=None):
        if num_channels is None:
            raise ValueError("GroupNorm needs num_channels")
        groups = GF.resolve_num_groups(num_channels, num_groups, group_size)
        GF.check_activation(activation)
        super().__init__(groups, int(num_channels), float(eps), bool(affine), device=device, dtype=dtype)
        if self.affine and not bias:  # torch < 2.13 has no bias= keyword: drop beta here, for every version
            self.register_parameter("bias", None)
        self.activation = activation

    @property
    def group_size(self) -> int:
        """Channels per group, ``num_channels // num_groups``."""
        return self.num_channels // self.num_groups

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """``act(GN(x) [+ residual])``; residual (x's shape and dtype) is added before the activation, as
        where a ResNet block adds its shortcut before the last ReLU (one pass over memory instead of three).
        ``mask`` (bool, ``(N, 1, *spatial)``, True = real position): statistics over the real positions only
        (``groupnorm.functional.group_norm``'s ``mask``; the plain path)."""
        if isinstance(x, torch.Tensor) and x.dim() >= 2 and x.shape[1] != self.num_channels:
            raise ValueError(
                f"GroupNorm expected an input with num_channels={self.num_channels} in dim 1, "
                f"got input of shape {tuple(x.shape)}"
            )
        return GF.group_norm(x, self.num_groups, self.weight, self.bias, self.eps, activation=self.activation,
                             residual=residual, mask=mask)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.activation is not None:
            s += f", activation={self.activation!r}"
        return s
