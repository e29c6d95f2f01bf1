"""Where a BN model's error comes from (Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm"), for the row.

Three validation errors of the same trained weights, differing only in the statistics BN normalizes with:

- ``val_error``: the EMA running statistics (what training left in the buffers; computed by ``train``);
- ``val_error_precise_bn``: population statistics recomputed with :func:`groupnorm.precise_bn` over
  ``PRECISE_BN_IMAGES`` = 10,000 images of the training split (the pool of
  :func:`groupnorm.experiments.data.load_run_data`, which holds more than the run's training subset; batches
  as the run's workers see them, non-i.i.d. ones included), or over all of them when there are fewer
  (``precise_bn_images`` in the row says how many);
- ``val_error_batch_stats``: each test batch normalized with its own statistics, over groups of the run's BN
  batch (b images per worker, ``norm_batch`` for ghost BN, the global batch for SyncBN): test images in batches
  of the training global batch, the last partial batch left out (``batch_stats_images`` says how many).

All on a copy of the model: the saved weights and buffers stay the EMA ones.
"""
from __future__ import annotations

import copy

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from groupnorm.nn.precise_bn import precise_bn

from ..data import POOL_IMAGES, Split, epoch_batches
from .devices import autocast, conv_context
from .evaluate import evaluate

PRECISE_BN_IMAGES = POOL_IMAGES  # 10,000: the run's pool (data.load_run_data) holds as many
PRECISE_BN_EPOCH = 1_000_000  # the (seed, epoch) generator of precise BN's batches: none of training's


def has_bn(model: torch.nn.Module) -> bool:
    return any(isinstance(m, _BatchNorm) for m in model.modules())


@torch.no_grad()
def _batch_stats_error(model: torch.nn.Module, val: Split, batch: int, fmt, amp: str) -> tuple[float, int]:
    m = copy.deepcopy(model).eval()
    for bn in m.modules():
        if isinstance(bn, _BatchNorm):
            bn.train()
            bn.momentum = 0.0  # batch statistics; the copy's buffers do not matter
    wrong, n = 0, 0
    device = next(m.parameters()).device
    for x, y in val.eval_batches(batch, drop_last=True):
        x = x.to(device, non_blocking=True).contiguous(memory_format=fmt)
        with conv_context(device, batch), autocast(device, amp):
            wrong += int((m(x).argmax(1) != y.to(device)).sum())
        n += batch
    return 100.0 * wrong / max(n, 1), n


@torch.no_grad()
def bn_decomposition(model: torch.nn.Module, cfg, train: Split, val: Split, local_batch: int, fmt,
                     amp: str = "none") -> dict:
    """The row fields ``val_error_precise_bn``, ``precise_bn_images``, ``val_error_batch_stats`` and
    ``batch_stats_images`` for a BN model (``{}`` for a model without BN). ``train``: the training-split images
    precise BN draws from (the run's pool, :func:`groupnorm.experiments.data.load_run_data`). ``local_batch``:
    this process's share of the global batch (the whole global batch with emulated workers). On the model's
    device, forward passes under the ``amp`` autocast (precise BN's statistics are accumulated in float64
    regardless)."""
    if not has_bn(model):
        return {}
    gb = cfg.global_batch
    want = min(PRECISE_BN_IMAGES, len(train) // gb * gb)  # whole global batches of the pool
    pm = copy.deepcopy(model)
    device = next(model.parameters()).device
    batches = ((x.to(device, non_blocking=True).contiguous(memory_format=fmt), y)
               for x, y in epoch_batches(train, gb, cfg.seed, PRECISE_BN_EPOCH, augment=cfg.augment,
                                         classes_per_worker=cfg.classes_per_worker, workers=cfg.workers,
                                         part=(0, gb // local_batch)))
    with conv_context(device, local_batch), autocast(device, amp):
        used = precise_bn(pm, batches, num_images=min(want, want // gb * local_batch))
    _, err_precise = evaluate(pm, val, channels_last=fmt != torch.contiguous_format, amp=amp)
    err_batch, n_batch = _batch_stats_error(model, val, local_batch, fmt, amp)
    return dict(val_error_precise_bn=err_precise, precise_bn_images=used,
                precise_bn_all_training_images=len(train) < PRECISE_BN_IMAGES,  # the pool ran short
                val_error_batch_stats=err_batch, batch_stats_images=n_batch)
