"""Train and evaluate one run of a dense task (detection, segmentation) on canvases, with emulated workers.

Data: the run's training canvases (:func:`groupnorm.experiments.data.load_run_data`) in a seeded
shuffle per epoch (the (seed, epoch) generator of the classification loop), the last partial global batch
dropped. A global batch of ``W * b`` canvases is one padded :class:`~groupnorm.experiments.data.canvases.CanvasBatch`
(detectron2's padding to a multiple of 32); worker ``w`` holds canvases ``w*b .. (w+1)*b - 1``.

Workers: every BN of the backbone and the heads computes its statistics per worker (over each worker's b
canvases; the two-stage box head over each worker's RoIs, which come from its own canvases: the paper's
non-i.i.d. head), or over the whole batch (SyncBN: ``norm_batch`` = the global batch for the backbone,
``head_norm="syncbn"`` for the heads); BN* (``bn-frozen``) uses fixed statistics. GN is per canvas, with the
padding left out of its statistics when ``masked_stats``.

Pre-training (``cfg.pretrain_epochs`` > 0): the backbone starts from the weights of a classification run of
the same shape on the data set's images (:func:`pretrained_weights`), BN* freezing the BN model's statistics.

Loss: the sum of the model's loss terms (``model.losses(batch)``: CenterNet's heatmap focal loss + size + offset;
the two-stage detector's stage-1 terms + RoI classification + box regression; the U-Net's pixel cross-entropy),
minimized by the harness's SGD and schedule (:mod:`.schedule`: linear scaling rule over W x b canvases, warmup,
cosine or step decay, weight decay on weights only).

Evaluation after each epoch (eval mode: BN uses its running statistics), on the validation canvases in batches of
``EVAL_BATCH``: detectors: COCO box AP, AP50, AP75 (pycocotools; ``x 100``) of ``model.detect``; the U-Net: mIoU
(``x 100``) over the background and the item classes. ``TASK_METRICS`` names a task's row fields, the first one
its headline metric; a detector with a mask head (``masks``) adds ``mask_ap``, the COCO mask AP of its pasted
masks (binarized at 0.5) against the canvases' instance masks. Resumable as classification runs are: a checkpoint
after each epoch, the row in ``OUT/results.jsonl`` at the end (:mod:`groupnorm.experiments.store`).

Table 5's control (a run whose heads' norm is BN, ``head_norm="bn"``): after the last epoch the row also gets
``box_ap_batchstats``, the box AP of the same weights with the heads' BN layers normalizing with the statistics
of each evaluation batch instead of their running statistics (:func:`head_batch_stats`), the validation canvases
in batches of one worker's ``b`` canvases (as a worker's RoIs were normalized in training). The backbone keeps
its own norm; nothing of the run's model changes.
"""
from __future__ import annotations

import copy
import io
import math
import os
import time

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from .. import store
from ..data.canvases import collate
from ..metrics import ConfusionMatrix, box_ap, mask_ap
from .devices import autocast, conv_context
from ..models.backbone import load_classifier_weights
from ..protocol.presets import pretrain_config
from .model import build_run_model
from .row import finite, run_fields
from .schedule import lr_at, make_optimizer

TASK_METRICS = {"detection": ("box_ap", "box_ap50", "box_ap75"), "segmentation": ("miou",)}
EVAL_BATCH = 8


def run_metrics(cfg) -> tuple:
    """The metric fields of the run ``cfg``'s rows: its task's ``TASK_METRICS``, and ``mask_ap`` with a mask
    head (``cfg.masks``)."""
    return TASK_METRICS[cfg.task] + (("mask_ap",) if cfg.masks else ())


def epoch_order(n: int, global_batch: int, seed: int, epoch: int) -> list[list[int]]:
    """The global batches of epoch ``epoch`` over ``n`` canvases: a seeded shuffle (the classification loop's
    (seed, epoch) generator), ``n // global_batch`` batches, the rest dropped."""
    if global_batch > n:
        raise ValueError(f"global batch of {global_batch} canvases is larger than the {n} training canvases")
    g = torch.Generator().manual_seed(1_000_003 * (seed + 1) + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    return [perm[i * global_batch:(i + 1) * global_batch] for i in range(n // global_batch)]


@torch.no_grad()
def evaluate_dense(model: torch.nn.Module, task: str, canvases: list, device, amp: str = "none",
                   batch: int = EVAL_BATCH) -> dict:
    """The task's metrics (``TASK_METRICS``, in %) of ``model`` in eval mode on ``canvases``, ``batch`` canvases
    per forward pass (the last batch may be smaller); with a detector whose detections carry masks, also
    ``mask_ap``."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch={batch!r} must be a positive integer")
    was = model.training
    model.eval()
    try:
        if task == "detection":
            gts, dets = [], []
            for i in range(0, len(canvases), batch):
                chunk = canvases[i:i + batch]
                with autocast(device, amp):
                    out = model.detect(collate(chunk).to(device))
                dets += [{k: v.float().cpu() for k, v in d.items()} for d in out]
                gts += [{"boxes": c.boxes, "labels": c.labels, "masks": c.masks} for c in chunk]
            ap = box_ap(gts, dets)
            res = {"box_ap": 100 * ap["AP"], "box_ap50": 100 * ap["AP50"], "box_ap75": 100 * ap["AP75"]}
            if dets and all("masks" in d for d in dets):
                res["mask_ap"] = 100 * mask_ap(gts, dets)["AP"]
            return res
        if task == "segmentation":
            cm = ConfusionMatrix(model.num_classes + 1)
            for i in range(0, len(canvases), batch):
                b = collate(canvases[i:i + batch]).to(device)
                with autocast(device, amp):
                    cm.update(model.segment(b), b.semantic)
            return {"miou": 100 * cm.mean_iou()}
        raise ValueError(f"task={task!r} is not a dense task ({', '.join(TASK_METRICS)})")
    finally:
        model.train(was)


def head_batch_stats(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of the dense ``model`` whose BN layers outside ``model.backbone`` (the heads') normalize every
    forward pass with the statistics of their whole input, in eval mode too: ``y = gamma (x - mean) /
    sqrt(var + eps) + beta`` per channel, mean and biased variance over (N, H, W) of the input (per-worker BN
    included: the input is one worker's). Their running statistics are removed from the copy (torch's BN then
    takes batch statistics and updates nothing); the backbone's layers and ``model`` itself are unchanged. A
    ValueError when the heads have no BN."""
    m = copy.deepcopy(model)
    inside = {id(x) for x in m.backbone.modules()}
    heads = [x for x in m.modules() if isinstance(x, _BatchNorm) and id(x) not in inside]
    if not heads:
        raise ValueError(f"{type(model).__name__}'s heads have no BatchNorm to evaluate with batch statistics")
    for bn in heads:
        bn.running_mean = bn.running_var = bn.num_batches_tracked = None
        bn.track_running_stats = False
    return m


def pretrained_weights(job) -> dict:
    """The state_dict of the finished classification run that pre-trains ``job``'s backbone
    (:func:`groupnorm.experiments.protocol.presets.pretrain_config`; trained first by
    :func:`groupnorm.experiments.training.loop.train_run`), from the store of ``job.out``."""
    key = pretrain_config(job.cfg).key()
    path = os.path.join(store.run_dir(job.out, key), "model.pt")
    if not store.is_finished(job.out, key) or not os.path.exists(path):
        raise RuntimeError(f"run {job.cfg.label!r} starts from the pre-training run {key}, which has no weights in "
                           f"{job.out!r}")
    with open(path, "rb") as f:
        return torch.load(f, map_location="cpu", weights_only=True)


def train_dense(job) -> dict | None:
    """Train the dense run of ``job`` (a :class:`~.loop.TrainJob` whose ``train``/``val`` are canvas sets),
    resuming from its checkpoint; return its results row (module doc). Emulated workers only (one process)."""
    cfg = job.cfg
    cfg.validate()
    if job.world != 1:
        raise ValueError(f"task={cfg.task!r} runs its workers emulated in one process, not {job.world} processes")
    torch.set_flush_denormal(True)
    key, device = cfg.key(), torch.device(job.device)
    rdir = store.run_dir(job.out, key)
    store.atomic_write_json(os.path.join(rdir, "config.json"), dict(cfg.to_json(), key=key))
    train, val = list(job.train), list(job.val)  # made once: each epoch reuses them
    model = build_run_model(cfg, 1, job.train.info)
    if cfg.pretrain_epochs:
        load_classifier_weights(model.backbone, pretrained_weights(job))
    model = model.to(device)
    opt = make_optimizer(model, cfg)
    gb = cfg.global_batch
    steps = len(train) // gb
    ckpt_path = os.path.join(rdir, "checkpoint.pt")
    start, history, wall_before = 0, [], 0.0
    ckpt = store.load_checkpoint(ckpt_path)
    if ckpt is not None and ckpt.get("config_key") == key:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optim"])
        start, history, wall_before = int(ckpt["epoch"]), list(ckpt["history"]), float(ckpt["wall_s"])
    t_run, diverged = time.perf_counter(), False
    wall = lambda: wall_before + time.perf_counter() - t_run  # noqa: E731
    for epoch in range(start, cfg.epochs):
        model.train()
        t0, loss_sum, lr = time.perf_counter(), 0.0, cfg.lr
        g = torch.Generator().manual_seed(1_000_003 * (cfg.seed + 1) + epoch + 1)  # RoI sampling
        for s, idx in enumerate(epoch_order(len(train), gb, cfg.seed, epoch)):
            lr = lr_at(cfg, epoch * steps + s, cfg.epochs * steps, steps)
            for group in opt.param_groups:
                group["lr"] = lr
            batch = collate([train[i] for i in idx]).to(device)
            with conv_context(device, gb):
                with autocast(device, job.amp):
                    terms = model.losses(batch, generator=g) if cfg.arch == "two_stage" else model.losses(batch)
                    loss = sum(terms.values())
                opt.zero_grad(set_to_none=True)
                loss.backward()
            opt.step()
            lv = float(loss.detach())
            loss_sum += lv
            if job.on_images is not None:
                job.on_images(gb)
            if not math.isfinite(lv):
                diverged = True
                break
        train_s = time.perf_counter() - t0
        metrics = ({k: 0.0 for k in run_metrics(cfg)} if diverged
                   else evaluate_dense(model, cfg.task, val, device, job.amp))
        history.append(dict(epoch=epoch + 1, train_loss=finite(loss_sum / max(steps, 1)), lr=lr,
                            images_per_s=steps * gb / max(train_s, 1e-9), train_s=train_s, wall_s=wall(), **metrics))
        store.write_jsonl(os.path.join(rdir, "metrics.jsonl"), history)
        store.save_checkpoint(ckpt_path, dict(model=model.state_dict(), optim=opt.state_dict(), epoch=epoch + 1,
                                              history=history, config_key=key, wall_s=wall()))
        if diverged:
            break
    last = history[-1]
    names = run_metrics(cfg)
    extra = {}
    if cfg.task == "detection" and cfg.head_norm == "bn":  # Table 5's control (module doc)
        extra["box_ap_batchstats"] = 0.0 if diverged else evaluate_dense(
            head_batch_stats(model), cfg.task, val, device, job.amp, batch=cfg.batch_per_worker)["box_ap"]
    row = dict(run_fields(job, history, diverged, wall(), job.train.info), head_norm=cfg.head_norm,
               masked_stats=cfg.masked_stats, pretrain_epochs=cfg.pretrain_epochs, masks=cfg.masks,
               train_loss=last["train_loss"],
               **{n: last[n] for n in names}, **{f"{names[0]}_curve": [h[names[0]] for h in history]}, **extra)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    store.atomic_write_bytes(os.path.join(rdir, "model.pt"), buf.getvalue())
    store.append_result(job.out, row)
    if os.path.exists(ckpt_path):
        os.unlink(ckpt_path)
    return row
