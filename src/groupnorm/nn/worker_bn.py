"""Per-worker ("ghost") BatchNorm: BN whose batch statistics are computed within each of W equal slices.

The GN paper trains on 8 GPUs and computes BN's mean and variance *within each GPU*; its "batch size" is the
number of images per worker. ``WorkerBatchNorm(C, workers=W)`` reproduces that in one process: in training,
a batch of N = W * b images is split into W consecutive slices of b images, and slice k is normalized with its
own statistics::

    mu_k  = mean over (n in slice k, h, w) of x[n, c, h, w]          (per channel c)
    var_k = mean over (n in slice k, h, w) of (x[n, c, h, w] - mu_k)^2 (biased, as BN uses in training)
    y[n, c] = gamma_c * (x[n, c] - mu_k) / sqrt(var_k + eps) + beta_c    for n in slice k

which is exactly what W real workers, each holding one slice, compute with plain ``BatchNorm2d``.

Running statistics follow ``DistributedDataParallel`` with ``broadcast_buffers=True`` (its default): before
every forward pass DDP broadcasts rank 0's buffers to all ranks, so whatever the other ranks accumulate is
overwritten, and the running mean/variance that are evaluated (and saved by rank 0) are the exponential moving
average of **worker 0's** slice statistics only (unbiased variance, torch's ``momentum`` convention). This
module therefore updates its running statistics from slice 0 alone; the emulated and the real workers end with
equal buffers. With ``workers=1`` it is ``torch.nn.BatchNorm2d``. In eval mode it uses the running statistics.

Shape: input (N, C, *) of any rank >= 2 (hence no ``2d`` in the name) with N divisible by ``workers`` in
training; output the same shape.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._deprecated import deprecated_alias


class WorkerBatchNorm(nn.BatchNorm2d):
    """BatchNorm with statistics computed over each of ``workers`` equal slices of the batch (see module doc).

    Args:
        num_features: C.
        workers: W, the number of emulated workers (slices of the batch); 1 is plain BatchNorm.
        eps: as in ``torch.nn.BatchNorm2d``.
        momentum: as in ``torch.nn.BatchNorm2d``.
        affine: as in ``torch.nn.BatchNorm2d``.
        track_running_stats: as in ``torch.nn.BatchNorm2d``.
        device: as in ``torch.nn.BatchNorm2d``.
        dtype: as in ``torch.nn.BatchNorm2d``.
    """

    def __init__(self, num_features: int, workers: int = 1, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None, dtype=None):
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers={workers!r} must be a positive integer")
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=track_running_stats, device=device, dtype=dtype)
        self.workers = workers

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected input of rank >= 2 (N, C, ...), got shape {tuple(input.shape)}")

    def extra_repr(self) -> str:
        return super().extra_repr() + f", workers={self.workers}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if self.workers == 1 or not self.training:
            return super().forward(x)
        n, c = x.shape[0], x.shape[1]
        if c != self.num_features:
            raise ValueError(f"expected {self.num_features} channels, got input of shape {tuple(x.shape)}")
        if n % self.workers:
            raise ValueError(f"batch of {n} images does not split into workers={self.workers} equal slices")
        b = n // self.workers
        if self.track_running_stats and self.running_mean is not None:
            self.num_batches_tracked.add_(1)
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        else:
            m = 0.0
        # Each slice is one worker's plain BatchNorm (torch's native kernel on a contiguous view); only worker 0
        # updates the running statistics, as rank 0's buffers are the ones DDP broadcasts.
        outs = []
        for k in range(self.workers):
            upd = k == 0 and self.track_running_stats and self.running_mean is not None
            outs.append(F.batch_norm(x[k * b:(k + 1) * b], self.running_mean if upd else None,
                                     self.running_var if upd else None, self.weight, self.bias, True, m,
                                     self.eps))
        return torch.cat(outs, 0)


def per_worker_batch_stats(x: torch.Tensor, workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance of each worker's slice: two tensors of shape (workers, C). For tests/reports."""
    n, c = x.shape[0], x.shape[1]
    xs = x.reshape(workers, n // workers, c, -1)
    var, mean = torch.var_mean(xs, dim=(1, 3), unbiased=False)
    return mean, var


__all__ = ["WorkerBatchNorm", "per_worker_batch_stats"]

_DEPRECATED = {"WorkerBatchNorm2d": "WorkerBatchNorm"}


def __getattr__(name: str):
    """The old name ``WorkerBatchNorm2d`` (the class takes any rank >= 2): the same class, with a
    DeprecationWarning."""
    return deprecated_alias(__name__, name, _DEPRECATED, globals())
