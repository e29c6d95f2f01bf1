r"""Norm-with-activation modules: every normalization, one calling convention.

Each class here is its norm (a subclass, same constructor arguments, same state_dict) plus an ``activation``
attribute (None, ``"relu"``, ``"silu"`` or ``"gelu"``) and a forward with an optional residual:

.. math::

    y = \mathrm{act}(\mathrm{norm}(x) [+ r])

for input ``x`` of shape ``(N, C, *)`` and ``r`` of the output's shape. That is what
``groupnorm.nn.GroupNorm`` does (fused, in one pass, through the compiled kernels); these give BatchNorm,
frozen BN, SyncBN and "no norm" the same interface, so a model calls ``norm(out, residual=shortcut)`` whatever
the norm (``groupnorm.nn.make_norm`` builds them by name).

Each class and the norm it subclasses:

- ``BatchNormAct``: :class:`~groupnorm.nn.worker_bn.WorkerBatchNorm` (per-worker BN), so a
  ``torch.nn.BatchNorm2d``;
- ``FrozenBatchNormAct``: :class:`~groupnorm.nn.FrozenBatchNorm`;
- ``SyncBatchNormAct``: :class:`~groupnorm.nn.SyncBatchNorm` (a torch ``_BatchNorm``);
- ``IdentityAct``: ``torch.nn.Identity`` (no norm).

The residual add and the activation run as separate (in-place where safe) operations after the norm; only
GroupNorm fuses them. State dicts written by the former ``nn.Sequential(norm, activation)`` (keys
``"<name>.0.weight"``, ...) still load.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import functional as GF
from .._deprecated import deprecated_alias
from .frozen_bn import FrozenBatchNorm
from .group_norm import GroupNorm
from .sync_bn import SyncBatchNorm
from .worker_bn import WorkerBatchNorm

__all__ = ["NormAct", "BatchNormAct", "FrozenBatchNormAct", "SyncBatchNormAct", "IdentityAct",
           "is_norm_act", "norm_act_class"]

_DEPRECATED = {"BatchNormAct2d": "BatchNormAct"}


class NormAct:
    """Mixin: ``forward(x, residual=None) = act(norm(x) [+ residual])``, norm being the next base's forward."""

    activation: str | None = None

    def _set_activation(self, activation) -> None:
        GF.check_activation(activation)
        self.activation = activation

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        y = super().forward(x)
        fresh = y is not x  # a new tensor that no autograd node needs: safe to update in place
        if residual is not None:
            if not isinstance(residual, torch.Tensor) or residual.shape != y.shape:
                got = tuple(residual.shape) if isinstance(residual, torch.Tensor) else type(residual).__name__
                raise ValueError(f"{type(self).__name__}: residual must have the output's shape "
                                 f"{tuple(y.shape)}, got {got}")
            y = y.add_(residual) if fresh else y + residual
            fresh = True
        if self.activation == "relu":
            return F.relu_(y) if fresh else F.relu(y)
        return GF.apply_activation(y, self.activation)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # Checkpoints of the former nn.Sequential(norm, activation): the norm's tensors under "<prefix>0.".
        old = prefix + "0."
        for key in [k for k in state_dict if k.startswith(old)]:
            new = prefix + key[len(old):]
            if new not in state_dict:
                state_dict[new] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.activation is not None:
            s += (", " if s else "") + f"activation={self.activation!r}"
        return s


class BatchNormAct(NormAct, WorkerBatchNorm):
    """BatchNorm (per-worker statistics with ``workers > 1``) followed by ``activation``; a ``nn.BatchNorm2d``.

    Same arguments as :class:`~groupnorm.nn.worker_bn.WorkerBatchNorm` plus ``activation`` (keyword only).
    Input ``(N, C, *)``; output the same shape.
    """

    def __init__(self, num_features: int, workers: int = 1, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None, dtype=None, *,
                 activation=None):
        super().__init__(num_features, workers, eps, momentum, affine, track_running_stats, device=device,
                         dtype=dtype)
        self._set_activation(activation)


class FrozenBatchNormAct(NormAct, FrozenBatchNorm):
    """:class:`~groupnorm.nn.FrozenBatchNorm` followed by ``activation`` (keyword only); same other arguments."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True, *, activation=None, **kwargs):
        super().__init__(num_features, eps, affine, **kwargs)
        self._set_activation(activation)


class SyncBatchNormAct(NormAct, SyncBatchNorm):
    """:class:`~groupnorm.nn.SyncBatchNorm` followed by ``activation`` (keyword only); same other arguments."""

    def __init__(self, num_features: int, *args, activation=None, **kwargs):
        super().__init__(num_features, *args, **kwargs)
        self._set_activation(activation)


class IdentityAct(NormAct, nn.Identity):
    """No normalization: ``act(x [+ residual])``. ``IdentityAct(activation="relu")``; no parameters."""

    def __init__(self, *, activation=None):
        super().__init__()
        self._set_activation(activation)


def is_norm_act(module: nn.Module) -> bool:
    """True for modules with ``activation`` and ``forward(x, residual=None)``: these and ``GroupNorm``."""
    return isinstance(module, (NormAct, GroupNorm))


_ACT_CLASS = {FrozenBatchNorm: FrozenBatchNormAct, SyncBatchNorm: SyncBatchNormAct, nn.Identity: IdentityAct,
              GroupNorm: GroupNorm}


def norm_act_class(cls: type) -> type:
    """The norm-with-activation class standing for norm class ``cls`` (what model surgery builds so that a
    layer's activation and residual survive a conversion). Any BatchNorm class maps to ``BatchNormAct``
    (which takes any input rank); a class that already is one maps to itself."""
    if issubclass(cls, NormAct) or cls is GroupNorm:
        return cls
    for base, act in _ACT_CLASS.items():
        if issubclass(cls, base):
            return act
    if issubclass(cls, nn.modules.batchnorm._BatchNorm):
        return BatchNormAct
    raise TypeError(f"no norm-with-activation class stands for {cls.__name__}")


def __getattr__(name: str):
    """The old name ``BatchNormAct2d`` (the class takes any rank >= 2): the same class, with a DeprecationWarning."""
    return deprecated_alias(__name__, name, _DEPRECATED, globals())
