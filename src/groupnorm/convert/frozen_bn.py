"""Frozen BatchNorm (the paper's BN*): :func:`freeze_batch_norm` and its inverse :func:`unfreeze_batch_norm`."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..nn.frozen_bn import FrozenBatchNorm
from ..nn.norm_act import NormAct, norm_act_class
from .report import ConvertedLayer
from .traversal import activation_kwargs, check_module, factory_kwargs, log, replace_modules

__all__ = ["freeze_batch_norm", "unfreeze_batch_norm"]


def freeze_batch_norm(model: nn.Module, *, trainable_affine: bool = False, inplace: bool = False,
                      return_report: bool = False):
    """Replace every BatchNorm (``_BatchNorm`` subclass, SyncBN included) by a ``FrozenBatchNorm`` (BN*).

    The frozen layer keeps the BN's running statistics, eps and affine; in any mode it computes what the BN
    computes in eval mode. ``trainable_affine`` chooses whether gamma and beta stay trainable (default: no).
    BNs without running statistics (``track_running_stats=False``) are left as they are (nothing to freeze)
    and logged. Returns the model, or ``(model, ConversionReport)`` with ``return_report=True``.
    """
    check_module(model, "freeze_batch_norm")
    skipped = [name for name, m in model.named_modules()
               if isinstance(m, _BatchNorm) and m.running_mean is None]
    if skipped:
        log.warning("freeze_batch_norm: left %d BatchNorm without running statistics as is: %s",
                    len(skipped), ", ".join(n or "<root>" for n in skipped))

    def match(m: nn.Module) -> bool:
        return isinstance(m, _BatchNorm) and m.running_mean is not None

    def build(bn: nn.Module, names: tuple[str, ...]):
        act = activation_kwargs(bn)
        cls = norm_act_class(FrozenBatchNorm) if act else FrozenBatchNorm
        frozen = cls.from_batch_norm(bn, trainable_affine=trainable_affine)
        if act:
            frozen.activation = act["activation"]
        carried = tuple(n for n in ("weight", "bias", "running_mean", "running_var")
                        if getattr(bn, n, None) is not None) + ("eps",)
        return frozen, ConvertedLayer(names, type(bn).__name__, type(frozen).__name__, bn.num_features,
                                      carried=carried, dropped=("momentum",))

    model, report = replace_modules(model, match, build, inplace)
    log.info("freeze_batch_norm: %s", report.summary())
    return (model, report) if return_report else model


def unfreeze_batch_norm(model: nn.Module, *, bn_class: type | None = None, inplace: bool = False):
    """Turn every ``FrozenBatchNorm`` back into a trainable BatchNorm with the same statistics and affine.

    The class is the one the layer was frozen from (``FrozenBatchNorm.source_class``), else ``bn_class``,
    else ``torch.nn.BatchNorm2d``; momentum is the source's (0.1 if unknown). ``bn_class`` given explicitly
    overrides the recorded class. Parameters become trainable again.
    """
    check_module(model, "unfreeze_batch_norm")

    def build(frozen: FrozenBatchNorm, names: tuple[str, ...]):
        cls = bn_class or frozen.source_class or nn.BatchNorm2d
        extra = {"bias": False} if frozen.affine and frozen.bias is None else {}
        if isinstance(frozen, NormAct):
            cls = norm_act_class(cls)
            extra.update(activation_kwargs(frozen))
        bn = cls(frozen.num_features, eps=frozen.eps, momentum=frozen.source_momentum, affine=frozen.affine,
                 **factory_kwargs(frozen), **extra)
        with torch.no_grad():
            bn.running_mean.copy_(frozen.running_mean)
            bn.running_var.copy_(frozen.running_var)
            bn.num_batches_tracked.copy_(frozen.num_batches_tracked)
            if frozen.affine:
                bn.weight.copy_(frozen.weight)
                if frozen.bias is not None:
                    bn.bias.copy_(frozen.bias)
        return bn, ConvertedLayer(names, type(frozen).__name__, cls.__name__, frozen.num_features)

    model, _ = replace_modules(model, lambda m: isinstance(m, FrozenBatchNorm), build, inplace)
    return model
