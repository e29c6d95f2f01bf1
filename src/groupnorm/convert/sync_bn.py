"""BatchNorm to a SyncBatchNorm that also runs on CPU with gloo: :func:`convert_sync_batchnorm`."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..nn.norm_act import NormAct, norm_act_class
from ..nn.sync_bn import SyncBatchNorm
from .report import ConvertedLayer
from .traversal import activation_kwargs, check_module, copy_param, factory_kwargs, replace_modules

__all__ = ["convert_sync_batchnorm"]


def convert_sync_batchnorm(model: nn.Module, process_group=None, *, inplace: bool = False):
    """Replace every BatchNorm (``_BatchNorm`` subclass, torch's SyncBatchNorm included) by
    ``groupnorm.nn.SyncBatchNorm``, which also works on CPU with gloo.

    Parameters, running statistics, ``num_batches_tracked``, eps, momentum, affine, track_running_stats and
    ``.training`` are carried over; ``FrozenBatchNorm`` and GroupNorm layers are left alone (they need no
    synchronization). ``process_group`` is the group whose workers share statistics (None: the world).
    """
    check_module(model, "convert_sync_batchnorm")

    def match(m: nn.Module) -> bool:
        return isinstance(m, _BatchNorm) and not isinstance(m, SyncBatchNorm)

    def build(bn: nn.Module, names: tuple[str, ...]):
        has_bias = getattr(bn, "bias", None) is not None
        cls = norm_act_class(SyncBatchNorm) if isinstance(bn, NormAct) else SyncBatchNorm
        sync = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
                   process_group=process_group, bias=has_bias or not bn.affine, **factory_kwargs(bn),
                   **activation_kwargs(bn))
        with torch.no_grad():
            if bn.affine:
                copy_param(sync.weight, bn.weight)
                if has_bias:
                    copy_param(sync.bias, bn.bias)
            if bn.track_running_stats:
                sync.running_mean.copy_(bn.running_mean)
                sync.running_var.copy_(bn.running_var)
                sync.num_batches_tracked.copy_(bn.num_batches_tracked)
        return sync, ConvertedLayer(names, type(bn).__name__, cls.__name__, bn.num_features)

    model, _ = replace_modules(model, match, build, inplace)
    return model
