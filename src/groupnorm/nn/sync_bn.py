"""``SyncBatchNorm``: BatchNorm with statistics over all workers, on CPU (gloo) as well as GPU (nccl).

``torch.nn.SyncBatchNorm`` refuses CPU tensors; this one runs wherever ``torch.distributed`` collectives run.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.nn.modules.batchnorm import _BatchNorm


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float64 stays float64, everything else computes in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class _SyncBatchNormFunction(torch.autograd.Function):
    """Training-mode BN over the union of all workers' batches, with the matching backward.

    Forward: every worker computes, per channel, its count n_i, mean m_i and M2_i = sum (x - m_i)^2 (in at
    least float32); one ``all_gather`` of ``[n_i, m_i, M2_i]`` (float64) gives every worker the global
    count N, mean m = sum n_i m_i / N and M2 = sum (M2_i + n_i (m_i - m)^2) (Chan et al.'s pairwise
    combination, with no E[x^2] - E[x]^2 cancellation); var = M2 / N (biased, used to normalize) and
    M2 / (N - 1) (unbiased, blended into ``running_var``). Workers with zero samples contribute n_i = 0.

    Backward (x_hat = (x - m) * rstd, g = gamma or 1): one ``all_reduce`` (sum) of per-channel
    ``[sum dy, sum dy * x_hat]`` over all workers, then
    ``dx = g * rstd * (dy - sum_dy / N - x_hat * sum_dy_xhat / N)``.
    ``dgamma = sum dy * x_hat`` and ``dbeta = sum dy`` are returned over the *local* batch, as torch's
    SyncBatchNorm does: data-parallel training (DDP) then reduces parameter gradients across workers.
    Double backward is not supported (an error, not a wrong answer).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps, momentum, group, world_size):
        C = x.shape[1]
        acc = _acc_dtype(x.dtype)
        dims = [0] + list(range(2, x.dim()))
        xf = x.to(acc)
        n_local = xf.numel() // C if C else 0
        if n_local > 0:
            var_l, mean_l = torch.var_mean(xf, dim=dims, correction=0)
            m2_l = var_l * n_local
        else:
            mean_l = xf.new_zeros(C)
            m2_l = xf.new_zeros(C)
        packet = torch.cat([torch.full((1,), float(n_local), dtype=torch.float64, device=x.device),
                            mean_l.double(), m2_l.double()])
        gathered = [torch.empty_like(packet) for _ in range(world_size)]
        dist.all_gather(gathered, packet, group=group)
        stats = torch.stack(gathered)                       # (W, 1 + 2C)
        counts, means, m2s = stats[:, :1], stats[:, 1:1 + C], stats[:, 1 + C:]
        total = float(counts.sum())
        if total <= 1:
            raise ValueError(
                f"SyncBatchNorm in training needs more than 1 value per channel over all workers, "
                f"got {int(total)} (input shape on this worker: {tuple(x.shape)})"
            )
        mean = (counts * means).sum(0) / total
        m2 = (m2s + counts * (means - mean) ** 2).sum(0)
        var = m2 / total
        rstd = torch.rsqrt(var + eps)

        if running_mean is not None:
            running_mean.mul_(1 - momentum).add_((mean * momentum).to(running_mean.dtype))
        if running_var is not None:
            running_var.mul_(1 - momentum).add_((m2 / (total - 1) * momentum).to(running_var.dtype))

        mean_a, rstd_a = mean.to(acc), rstd.to(acc)
        view = (1, C) + (1,) * (x.dim() - 2)
        scale = rstd_a if weight is None else rstd_a * weight.to(acc)
        shift = -mean_a * scale if bias is None else bias.to(acc) - mean_a * scale
        y = xf * scale.view(view) + shift.view(view)

        ctx.save_for_backward(x, weight, mean_a, rstd_a)
        ctx.total = total
        ctx.group = group
        ctx.has_bias = bias is not None
        return y.to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, weight, mean, rstd = ctx.saved_tensors
        C = x.shape[1]
        acc = mean.dtype
        dims = [0] + list(range(2, x.dim()))
        view = (1, C) + (1,) * (x.dim() - 2)
        dyf = dy.to(acc)
        xhat = (x.to(acc) - mean.view(view)) * rstd.view(view)
        if x.numel() > 0:
            sum_dy = dyf.sum(dim=dims)
            sum_dy_xhat = (dyf * xhat).sum(dim=dims)
        else:
            sum_dy = dyf.new_zeros(C)
            sum_dy_xhat = dyf.new_zeros(C)
        grad_weight = sum_dy_xhat.clone() if weight is not None else None
        grad_bias = sum_dy.clone() if ctx.has_bias else None

        packet = torch.cat([sum_dy, sum_dy_xhat])
        dist.all_reduce(packet, op=dist.ReduceOp.SUM, group=ctx.group)
        g_sum_dy, g_sum_dy_xhat = packet[:C] / ctx.total, packet[C:] / ctx.total

        grad_x = None
        if ctx.needs_input_grad[0]:
            k = rstd if weight is None else rstd * weight.to(acc)
            grad_x = (k.view(view) * (dyf - g_sum_dy.view(view) - xhat * g_sum_dy_xhat.view(view))).to(x.dtype)
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        if grad_bias is not None:
            grad_bias = grad_bias.to(dy.dtype if weight is None else weight.dtype)
        return grad_x, grad_weight, grad_bias, None, None, None, None, None, None


class SyncBatchNorm(_BatchNorm):
    r"""Batch Normalization whose batch statistics span all workers of a process group, on CPU or GPU.

    .. math::

        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} * \gamma + \beta

    with mean and biased variance per channel over the N and spatial axes of the *concatenated* batch of all
    workers (each may hold a different batch size, zero included). In training with an initialized
    ``torch.distributed`` group of more than one process, the per-worker (count, mean, M2) are all-gathered
    (float64) and combined exactly; the backward all-reduces the per-channel ``sum dy`` and
    ``sum dy * x_hat`` (see ``_SyncBatchNormFunction``). Every worker updates its running statistics with
    the same global values (unbiased variance, as torch). Weight and bias gradients are those of the local
    batch (DDP averages them, as for ``torch.nn.SyncBatchNorm``).

    With one process (no initialized group or world size 1), in eval mode, or with ``track_running_stats``
    off outside training, it is exactly ``torch.nn.functional.batch_norm``. Works with gloo (CPU tensors) and
    nccl (CUDA tensors). Every worker of the group must call forward and backward the same number of times
    (they meet in collectives), including workers with an empty batch.

    Args:
        num_features: number of channels C.
        eps: added to the variance. Default: 1e-5.
        momentum: running-statistics momentum; None for a cumulative average. Default: 0.1.
        affine: learnable ``weight`` and ``bias``. Default: True.
        track_running_stats: keep ``running_mean`` / ``running_var``. Default: True.
        process_group: the group whose workers share statistics; None is the default (world) group.
        bias: with ``affine``, also learn ``bias`` (torch's BatchNorm ``bias=`` keyword). Default: True.

    Shape:
        - Input: ``(N, C)`` or ``(N, C, *)``; N may be 0 on some workers.
        - Output: same shape as the input.

    It subclasses torch's ``_BatchNorm`` (so ``isinstance(m, torch.nn.modules.batchnorm._BatchNorm)`` holds, and
    the state_dict is a BatchNorm's), deliberately *not* ``torch.nn.SyncBatchNorm``: torch 2.13's
    ``DistributedDataParallel`` raises "SyncBatchNorm layers only work with GPU modules" for any CPU model
    containing an ``isinstance(m, torch.nn.SyncBatchNorm)`` layer (``_passing_sync_batchnorm_handle``), which
    would defeat this class's purpose (DDP over gloo on CPU).

    Examples::

        >>> bn = SyncBatchNorm(64)                       # inside a gloo or nccl process group
        >>> model = groupnorm.convert_sync_batchnorm(model)
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, process_group=None, device=None, dtype=None, *,
                 bias: bool = True):
        if not isinstance(num_features, int) or isinstance(num_features, bool) or num_features <= 0:
            raise ValueError(f"SyncBatchNorm needs num_features > 0, got num_features={num_features!r}")
        extra = {} if bias else {"bias": False}  # torch < 2.13 has no bias= keyword
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype,
                         **extra)
        self.process_group = process_group

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"SyncBatchNorm expected an input of shape (N, {self.num_features}, *), "
                f"got shape {tuple(x.shape)}"
            )

    def _world_size(self) -> int:
        if not (dist.is_available() and dist.is_initialized()):
            return 1
        return dist.get_world_size(self.process_group)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        # Momentum and num_batches_tracked as in torch's _BatchNorm.forward.
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        bn_training = self.training or (self.running_mean is None and self.running_var is None)
        use_running = not self.training or self.track_running_stats
        running_mean = self.running_mean if use_running else None
        running_var = self.running_var if use_running else None

        world_size = self._world_size() if (bn_training and self.training) else 1
        if world_size == 1:
            return F.batch_norm(x, running_mean, running_var, self.weight, self.bias, bn_training, factor, self.eps)
        group = self.process_group if self.process_group is not None else dist.group.WORLD
        return _SyncBatchNormFunction.apply(x, self.weight, self.bias, running_mean, running_var,
                                            self.eps, factor, group, world_size)

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.process_group is None else ", process_group=<custom>")
