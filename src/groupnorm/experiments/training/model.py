"""The network of one run: its arch built for the data set, with BN's statistics groups as the run's workers."""
from __future__ import annotations

import torch

from ..data import IDX_INFO, DataInfo
from ..models import build_model
from ..data.formats import DENSE_TASKS
from ..protocol import RunConfig


def build_run_model(cfg: RunConfig, world: int = 1, info: DataInfo = IDX_INFO) -> torch.nn.Module:
    """The run's network (``cfg.arch``, :func:`groupnorm.experiments.models.build_model`: the small ResNet,
    the VGG of Figure 3, or a named ResNet) for one of ``world`` processes, for the data set ``info`` describes
    (its channels and classes: ``in_channels``, ``num_classes``). BN's statistics groups: ``cfg.bn_batch``
    images each
    (a worker's b, or ``norm_batch``), so a process's share of the global batch holds
    ``(global_batch / world) / bn_batch`` of them; a group spanning processes (SyncBN with ``world > 1``) gets
    :class:`groupnorm.nn.SyncBatchNorm` (the group must then be the whole global batch). A dense task's heads
    (``cfg.head_norm``) keep a worker's images (its RoIs) in one group, or the whole batch with ``syncbn``."""
    torch.manual_seed(cfg.seed)
    local = cfg.global_batch // world
    slices, sync = cfg.workers // world, False
    if cfg.bn_batch is not None:
        if cfg.bn_batch > local:
            if cfg.bn_batch != cfg.global_batch:
                raise ValueError(f"norm_batch={cfg.bn_batch} spans processes but is not the whole global batch "
                                 f"({cfg.global_batch}); with {world} processes use a norm_batch of at most "
                                 f"{local}")
            slices, sync = 1, world > 1
        else:
            slices = local // cfg.bn_batch
    task_kw = {}
    if cfg.task in DENSE_TASKS:  # the heads' BN: per worker (this process's slices), or one group (syncbn)
        task_kw = dict(head_norm=cfg.head_norm, head_workers=cfg.workers // world, masked_stats=cfg.masked_stats)
        if cfg.masks:  # the two-stage detector's mask head
            task_kw["masks"] = True
    model = build_model(cfg.arch, cfg.norm, info.channels, info.num_classes, groups=cfg.groups,
                       group_size=cfg.group_size, workers=slices, **cfg.shape_overrides(), **task_kw)
    if sync:
        from groupnorm.convert import convert_sync_batchnorm

        model = convert_sync_batchnorm(model, inplace=True)
    return model
