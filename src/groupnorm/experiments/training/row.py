"""A finished run's results row: what it was, what it measured, and how and where it ran."""
from __future__ import annotations

import math
import platform
import time

import torch

from ..models.archs import arch_shape
from .devices import conv_backend, device_name
from .evaluate import memory_format_name
from .probe import percentile_fields
from .provenance import code_fields


def finite(v: float):
    """``v``, or None where it is not finite (a diverged run's loss): JSON has no NaN."""
    return v if math.isfinite(v) else None


def kernels_available() -> bool:
    """Whether GN ran on the compiled kernels (``groupnorm.kernels``) rather than the plain PyTorch path."""
    try:
        from groupnorm import kernels

        return bool(kernels.is_available())
    except Exception:
        return False


def run_fields(job, history: list[dict], diverged: bool, wall_s: float, info) -> dict:
    """What every task's row holds: the config of ``job`` (a :class:`~.loop.TrainJob`; identity fields as the
    key has them), the epochs done, the mean training throughput (images/s weighted by each epoch's training
    time), the data set (``info``: a :class:`~groupnorm.experiments.data.DataInfo`) and the execution (device,
    threads, memory format, kernels, launcher)."""
    cfg, train, val = job.cfg, job.train, job.val
    device = torch.device(job.device)
    canonical = cfg.canonical()
    train_s = sum(h["train_s"] for h in history)
    return dict(
        experiment=cfg.experiment, task=cfg.task, norm=cfg.norm, groups=canonical["groups"],
        group_size=canonical["group_size"], batch_per_worker=cfg.batch_per_worker, workers=cfg.workers,
        global_batch=cfg.global_batch, seed=cfg.seed, epochs=cfg.epochs, epochs_done=history[-1]["epoch"],
        diverged=diverged, lr=cfg.lr,
        images_per_s=sum(h["train_s"] * h["images_per_s"] for h in history) / max(train_s, 1e-9),
        wall_s=wall_s, config_key=cfg.key(), launcher=job.launcher, processes=job.world,
        train_size=len(train), val_size=len(val), arch=cfg.arch, **arch_shape(cfg.arch, cfg.widths, cfg.blocks),
        torch=torch.__version__, machine=platform.machine(), threads=torch.get_num_threads(),
        gn_kernels=kernels_available(), memory_format=memory_format_name(job.channels_last), device=str(device),
        device_name=device_name(device), amp=job.amp,
        conv_backend=conv_backend(device, cfg.global_batch // job.world), **code_fields(),
        dataset=info.name, num_classes=info.num_classes, in_channels=info.channels,
        image_shape=list(info.image_shape), norm_batch=cfg.norm_batch, bn_batch=cfg.bn_batch,
        classes_per_worker=cfg.classes_per_worker, holdout=cfg.holdout, base_lr=cfg.base_lr,
        first_stride=cfg.first_stride, augment=cfg.augment, schedule=cfg.schedule,
        warmup_epochs=cfg.warmup_epochs,
        **(dict(frames=cfg.frames, canvas=cfg.canvas) if cfg.task == "video" else {}),
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def results_row(job, history: list[dict], diverged: bool, wall_s: float, decomposition: dict) -> dict:
    """The classification row of ``job`` after its epochs' ``history``: :func:`run_fields`, the last epoch's
    errors and losses, the curves and BN's error decomposition."""
    last = history[-1]
    return dict(run_fields(job, history, diverged, wall_s, job.train.info),
                val_error=last["val_error"], train_error=last["train_error"], val_loss=last["val_loss"],
                train_loss=last["train_loss"], best_val_error=min(h["val_error"] for h in history),
                val_error_curve=[h["val_error"] for h in history],
                train_error_curve=[h["train_error"] for h in history], **percentile_fields(history),
                **decomposition)
