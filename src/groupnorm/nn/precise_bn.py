"""Precise BatchNorm statistics: recompute BN layers' running mean and variance over many training images
(:func:`precise_bn`, also ``groupnorm.precise_bn``).

BN's running statistics are an exponential moving average of per-batch statistics taken while the weights
change, so at the end of training they lag the final weights (Wu & Johnson 2021, "Rethinking 'Batch' in
BatchNorm", Sec. 3). :func:`precise_bn` replaces them by the population statistics of the final model::

    mean_c = (1 / n) * sum over every element x of channel c, over all images seen, of x
    var_c  = (1 / (n - 1)) * sum of (x - mean_c)^2                 (unbiased, torch's running_var convention)

where n is the number of elements of channel c (images x positions). Every batch contributes in proportion to
its element count: per batch, count, mean and sum of squared deviations are computed in float64 and merged
exactly (Chan et al.'s parallel formula), so the result equals the statistics of all the images concatenated,
whatever the batch sizes. As in fvcore's ``update_bn_stats``, the forward passes run the BN layers in training
mode (each layer normalizes with its batch's statistics, the running buffers are left untouched meanwhile), so a
layer's input is what it sees in training; then the exact statistics are written into ``running_mean`` and
``running_var``. Afterwards every layer's training flag, ``momentum`` and ``num_batches_tracked`` are what they
were. Works for ``torch.nn.BatchNorm1d/2d/3d``, :class:`groupnorm.nn.WorkerBatchNorm` and
:class:`groupnorm.nn.SyncBatchNorm` (any ``torch.nn.modules.batchnorm._BatchNorm`` that tracks running
statistics), in one process: statistics are not reduced across ``torch.distributed`` workers.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class _Accumulator:
    """Exact per-channel count, mean and M2 (sum of squared deviations) in float64, merged batch by batch."""

    def __init__(self, channels: int):
        self.n = 0
        self.mean = torch.zeros(channels, dtype=torch.float64)
        self.m2 = torch.zeros(channels, dtype=torch.float64)

    def add(self, x: torch.Tensor) -> None:
        c = x.shape[1]
        xs = x.detach().to(torch.float64).transpose(0, 1).reshape(c, -1)  # (C, elements)
        nb = xs.shape[1]
        if nb == 0:
            return
        mb = xs.mean(1)
        m2b = ((xs - mb[:, None]) ** 2).sum(1)
        n = self.n + nb
        delta = mb - self.mean.to(mb.device)
        self.mean = self.mean.to(mb.device) + delta * (nb / n)
        self.m2 = self.m2.to(mb.device) + m2b + delta ** 2 * (self.n * nb / n)
        self.n = n


def _images_of(batch) -> torch.Tensor:
    if isinstance(batch, (tuple, list)):
        return batch[0]
    if isinstance(batch, dict):
        raise TypeError("precise_bn: batches must be tensors or (inputs, ...) tuples, got a dict")
    return batch


@torch.no_grad()
def precise_bn(model: nn.Module, batches: Iterable, num_images: int = 10000) -> int:
    """Set every BN layer's running statistics of ``model`` to the exact population statistics of its inputs.

    Args:
        model: a module containing BN layers (see the module docstring for which).
        batches: an iterable of input tensors ``(N, ...)`` or of tuples whose first item is the input (e.g.
            ``(x, y)`` training batches). Batches are consumed until at least ``num_images`` images were seen
            (whole batches: the last one is not cut, since in training mode a batch's size matters).
        num_images: how many images (first-axis entries) at least; a positive integer.

    Returns:
        The number of images the statistics were computed over (>= ``num_images``).

    Raises:
        ValueError: the model has no BN layer that tracks running statistics; ``num_images`` is not a positive
            integer; the batches hold fewer than ``num_images`` images (the statistics are then left as they
            were).
    """
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"precise_bn: num_images={num_images!r} must be a positive integer")
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats
           and m.running_mean is not None]
    if not bns:
        raise ValueError(f"precise_bn: model {type(model).__name__} has no BatchNorm layer with running "
                         f"statistics (found 0 of torch's _BatchNorm layers that track them)")
    saved = [(m.training, m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None
              else None) for m in bns]
    acc = {m: _Accumulator(m.num_features) for m in bns}
    hooks = [m.register_forward_pre_hook(lambda mod, inp: acc[mod].add(inp[0])) for m in bns]
    seen = 0
    try:
        for m in bns:
            m.train()
            m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: the buffers stay put during the passes
        for batch in batches:
            x = _images_of(batch)
            model(x)
            seen += int(x.shape[0])
            if seen >= num_images:
                break
    finally:
        for h in hooks:
            h.remove()
        for m, (training, momentum, nbt) in zip(bns, saved):
            m.train(training)
            m.momentum = momentum
            if nbt is not None:
                m.num_batches_tracked.copy_(nbt)
    if seen < num_images:
        raise ValueError(f"precise_bn: num_images={num_images} requested but the batches held only {seen} images")
    for m in bns:
        a = acc[m]
        m.running_mean.copy_(a.mean.to(m.running_mean))
        m.running_var.copy_((a.m2 / max(a.n - 1, 1)).to(m.running_var))
    return seen


__all__ = ["precise_bn"]
