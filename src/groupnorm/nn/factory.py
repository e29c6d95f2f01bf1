"""Normalization layers created by name from one map: ``make_norm("gn", 64, groups=32, activation="relu")``.

Names (the GN paper's Figure 2 sets, for an (N, C, H, W) activation):

========== ======================================================================================
``bn``     BatchNorm: statistics over (N, H, W) per channel; per worker with ``workers=W``
           (:class:`~groupnorm.nn.worker_bn.WorkerBatchNorm`).
``gn``     GroupNorm: statistics over (C/G, H, W) per sample and group; ``groups=G`` or ``group_size=K``.
``gn+ws``  The same GroupNorm; the model pairs it with weight-standardized convolutions
           (see :func:`uses_weight_standardization`).
``ln``     LayerNorm as the paper defines it for conv nets: ``GroupNorm(1, C)`` (per-channel affine).
``in``     InstanceNorm: ``GroupNorm(C, C)`` (per-channel affine).
``bn-frozen`` BatchNorm with fixed statistics (the paper's BN*): ``groupnorm.nn.FrozenBatchNorm`` with a
           trainable affine (trained from scratch its statistics stay mean 0, variance 1).
``none``   Identity (only the activation, if any).
========== ======================================================================================

Groups larger than the layer (``groups > C`` or ``group_size > C``) are clamped to the layer: ``groups=64`` on
a 32-channel layer gives one channel per group, ``group_size=64`` on it gives one group. That is what the
paper's Table 3 does implicitly (ResNet-50's narrowest layers have 64 channels, so ``group_size=64`` there is one
group). Any other ``C`` not divisible by ``G`` (or ``K``) is an error naming both numbers
(``groupnorm.args.resolve_num_groups`` with ``policy="clamp"``).

Every name gives one kind of module, a norm with its activation (:mod:`groupnorm.nn.norm_act`): it has an
``activation`` attribute (None or ``"relu"``, ``"silu"``, ``"gelu"``), the norm's ``weight`` (gamma; absent for
``none``) and ``forward(x, residual=None) = act(norm(x) [+ residual])``. GN/LN/IN fuse all three in one pass
(the compiled kernels); the BN variants and ``none`` apply the add and the activation after the norm.
"""
from __future__ import annotations

from torch import nn

from ..args import resolve_num_groups
from .group_norm import GroupNorm
from .norm_act import BatchNormAct, FrozenBatchNormAct, IdentityAct

NORM_NAMES = ("bn", "gn", "gn+ws", "ln", "in", "bn-frozen", "none")


def uses_weight_standardization(name: str) -> bool:
    """True for norms whose convolutions are weight-standardized (``gn+ws``)."""
    return name == "gn+ws"


def make_norm(name: str, num_channels: int, *, groups: int | None = 32, group_size: int | None = None,
              activation: str | None = None, workers: int = 1, eps: float = 1e-5,
              momentum: float = 0.1) -> nn.Module:
    """A normalization layer (followed by ``activation``) for ``num_channels`` channels, by name.

    Args:
        name: one of ``NORM_NAMES`` (see the module docstring).
        num_channels: C.
        groups: GN's number of groups G; clamped to C (module doc).
        group_size: GN's channels per group K, instead of ``groups`` (K wins when both are given).
        activation: None, "relu", "silu" or "gelu".
        workers: for ``bn``, the number of emulated workers whose slices get their own statistics.
        eps: as in torch's norm layers.
        momentum: as in torch's BN layers (BN only).

    Returns:
        A norm-with-activation module mapping (N, C, H, W) to the same shape, called as ``m(x)`` or
        ``m(x, residual=r)`` (``act(norm(x) + r)``): ``GroupNorm`` (gn, gn+ws, ln, in), ``BatchNormAct``
        (bn), ``FrozenBatchNormAct`` (bn-frozen) or ``IdentityAct`` (none). Its ``weight`` is gamma (None or
        absent for ``none``).
    """
    if not isinstance(num_channels, int) or num_channels < 1:
        raise ValueError(f"num_channels={num_channels!r} must be a positive integer")
    if name in ("gn", "gn+ws"):
        g = resolve_num_groups(num_channels, None if group_size is not None else groups, group_size,
                               policy="clamp")
        return GroupNorm(g, num_channels, eps=eps, activation=activation)
    if name == "ln":
        return GroupNorm(1, num_channels, eps=eps, activation=activation)
    if name == "in":
        return GroupNorm(num_channels, num_channels, eps=eps, activation=activation)
    if name == "bn":
        return BatchNormAct(num_channels, workers, eps, momentum, activation=activation)
    if name == "bn-frozen":
        # trainable affine: from scratch, frozen statistics (0, 1) make this a learned per-channel affine
        return FrozenBatchNormAct(num_channels, eps, trainable_affine=True, activation=activation)
    if name == "none":
        return IdentityAct(activation=activation)
    raise ValueError(f"unknown norm {name!r}; choose one of {', '.join(NORM_NAMES)}")

