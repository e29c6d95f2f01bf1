"""Train and evaluate one run, on emulated workers (one process) or as one rank of a ``torchrun`` job.

Workers: the global batch of ``W * b`` images is cut into W slices of b images. A job of ``world`` processes
gives each rank ``W / world`` consecutive slices; inside a process the slices are emulated workers
(:class:`~groupnorm.nn.worker_bn.WorkerBatchNorm`). So ``world=1`` is W emulated workers, ``world=W`` is W
real workers (plain BN per process under DDP with ``broadcast_buffers=True``), and both compute the same thing:

- BN statistics per slice of b images; running statistics from slice 0 (rank 0's, which DDP broadcasts);
- the loss is the mean cross-entropy over the global batch: DDP averages the ranks' gradients of their local
  means, which equals the gradient of the global mean because the slices are equal;
- the same initialization (seeded; DDP also broadcasts rank 0's parameters) and the same batches (data order and
  augmentation are drawn from a (seed, epoch) generator, identical on every rank).

Schedule: ``lr = base_lr * W * b / 256`` (linear scaling rule), linear warmup over ``warmup_epochs``, then cosine
to 0 or the paper's step decay (x0.1 at 30%, 60%, 90% of the steps); SGD momentum 0.9; weight decay on weights
of rank >= 2 only. Per epoch: training loss/error (in train mode, on the training batches, augmented if
``cfg.augment``, as the paper's curves), validation loss/error (eval mode: BN uses running statistics),
images/s, then an atomic checkpoint.

Device and precision (:mod:`.devices`): the model, each batch and the loss live on ``device`` (a value, not a
branch: CPU and CUDA run the same code), the forward pass and the loss under the ``amp`` autocast. On CUDA the
batches come from pinned memory (copied asynchronously). Rows record ``device``, ``device_name`` and ``amp``;
``images_per_s`` is the training throughput (data loading included) over the run's epochs.

Memory format: ``channels_last=True`` runs the model and its batches in channels-last (NHWC) memory, where this
CPU's convolutions are faster (and GN takes the compiled kernels' channels-last path); the video task's clips
and 3D model use ``channels_last_3d``. It is how a run is
executed, like the thread count, not part of its identity: the numbers differ only by float rounding.
"""
from __future__ import annotations

import dataclasses
import io
import math
import os
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..data import Split, epoch_batches
from ..data.formats import DENSE_TASKS
from .. import store
from ..protocol import RunConfig
from .bn_eval import bn_decomposition
from .devices import autocast, check_amp, conv_context
from .evaluate import evaluate, memory_format, to_device
from .model import build_run_model
from .probe import FeatureProbe
from .row import finite, results_row
from .schedule import lr_at, make_optimizer


@dataclass(frozen=True)
class TrainJob:
    """One call of :func:`train_run`: what to train, on which data, where, and how it is executed.

    ``cfg`` and the data (``train``, ``val``, and ``pool``: the training-split images precise BN draws from,
    :func:`groupnorm.experiments.data.load_run_data`; default ``train``) determine the numbers; the rest only
    how the run executes: ``rank``/``world`` (this process among the job's ``world`` processes), ``launcher``
    (recorded in the row), ``progress``/``position`` (this run's tqdm bar), ``on_images`` (called with the
    images of each step), ``channels_last``, ``device`` (e.g. "cpu", "cuda:1") and ``amp`` ("none" or
    "bf16"), and ``lock_held`` (the caller, a sweep's process, holds the run's lock).
    """

    cfg: RunConfig
    train: Split
    val: Split
    out: str
    rank: int = 0
    world: int = 1
    progress: bool = True
    on_images: Callable[[int], None] | None = None
    launcher: str = "emulate"
    position: int = 1
    channels_last: bool = False
    device: str = "cpu"
    amp: str = "none"
    pool: Split | None = None
    lock_held: bool = False


def train_run(cfg: RunConfig, train: Split, val: Split, out: str, **how) -> dict | None:
    """Train ``cfg`` (resuming from its checkpoint if any); return its results row on rank 0 (else None).

    ``train`` and ``val`` are the run's data (already cut to ``cfg.train_size`` / ``cfg.val_size``; canvas sets
    for a dense task, trained by :func:`groupnorm.experiments.training.dense.train_dense`); ``how``:
    the other fields of :class:`TrainJob`. Rank 0 writes ``OUT/runs/<key>/`` (holding its lock) and appends
    the row to ``OUT/results.jsonl``. It takes the run's lock itself (:func:`store.claim_run`: an error if
    another process holds it; the existing row, without training, if the run is finished) unless
    ``lock_held``. ``on_images(n)`` is called after each step with the number of images processed.
    """
    how["device"] = str(how.get("device", "cpu"))
    how["amp"] = check_amp(how.get("amp", "none"))
    job = TrainJob(cfg, train, val, out, **how)
    if job.rank != 0 or job.lock_held:
        return _train(job)
    key = cfg.key()
    status, lock = store.claim_run(out, key)
    if status == "done":
        return next(r for r in store.read_results(out) if r["config_key"] == key)
    if status == "held":
        raise RuntimeError(f"run {key} is being trained by another process "
                           f"({store.RunLock(store.run_dir(out, key)).holder() or 'unknown'})")
    try:
        return _train(job)
    finally:
        lock.release()


@dataclass
class _Run:
    """One run's state in this process while it trains (what the epoch functions share)."""

    job: TrainJob
    train: Split               # the job's splits, in pinned memory on CUDA
    val: Split
    model: torch.nn.Module
    net: torch.nn.Module       # the model, or its DDP wrapper
    opt: torch.optim.Optimizer
    device: torch.device
    steps: int                 # optimizer steps per epoch
    rdir: str
    history: list
    start_epoch: int = 0
    wall_before: float = 0.0   # wall time of the epochs before a resume
    t_run: float = 0.0
    bar: object = None
    probe: FeatureProbe | None = None

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.rdir, "checkpoint.pt")

    def wall_s(self) -> float:
        return self.wall_before + time.perf_counter() - self.t_run


def _train(job: TrainJob) -> dict | None:
    if job.cfg.task in DENSE_TASKS:
        from .dense import train_dense

        if job.cfg.pretrain_epochs:
            _pretrain(job)
        return train_dense(job)
    run = _prepare(job)
    diverged = False
    for epoch in range(run.start_epoch, job.cfg.epochs):
        diverged = train_one_epoch(run, epoch)
        if job.world > 1:
            torch.distributed.barrier()
        if diverged:
            break
    if run.bar is not None:
        run.bar.close()
    if run.probe is not None:
        run.probe.close()
    return _finish(run, diverged) if job.rank == 0 else None


def _pretrain(job: TrainJob) -> None:
    """Make sure the classification run that pre-trains a dense run's backbone
    (:func:`groupnorm.experiments.protocol.presets.pretrain_config`) is finished in ``job.out``: train it here (on
    the IDX directory the canvases' items come from) when it has no row, or wait while another process trains it."""
    from ..data import load_run_data
    from ..protocol.presets import pretrain_config

    pre = pretrain_config(job.cfg)
    while not store.is_finished(job.out, pre.key()):
        status, lock = store.claim_run(job.out, pre.key())
        if status == "held":
            time.sleep(2.0)
        elif status == "claimed":
            try:
                train, val, pool = load_run_data(job.train.source, pre)
                train_run(pre, train, val, job.out, progress=False, lock_held=True, device=job.device, amp=job.amp,
                          pool=pool, channels_last=job.channels_last)
            finally:
                lock.release()


def _prepare(job: TrainJob) -> _Run:
    """Check the job, write the run's config, build the model and optimizer on the device, resume from the
    run's checkpoint, wrap the model in DDP across processes, open the progress bar and the probe."""
    cfg, rank, world = job.cfg, job.rank, job.world
    cfg.validate()
    # Subnormal floats (e.g. decaying momentum of gammas that start at 0) make CPU arithmetic ~100x slower.
    torch.set_flush_denormal(True)
    if cfg.workers % world:
        raise ValueError(f"workers={cfg.workers} is not divisible by the number of processes {world}")
    key = cfg.key()
    rdir = store.run_dir(job.out, key)
    if rank == 0:
        store.atomic_write_json(os.path.join(rdir, "config.json"), dict(cfg.to_json(), key=key))
    device = torch.device(job.device)
    pin = device.type == "cuda"  # pinned host batches: asynchronous copies to the GPU
    train, val = dataclasses.replace(job.train, pin_memory=pin), dataclasses.replace(job.val, pin_memory=pin)
    # the checkpoint's values load into these strides, on this device
    model = build_run_model(cfg, world, train.info).to(device=device, memory_format=_model_format(job))
    opt = make_optimizer(model, cfg)
    steps = cfg.images_per_epoch(len(train)) // cfg.global_batch
    run = _Run(job, train, val, model, model, opt, device, steps, rdir, [])
    ckpt = store.load_checkpoint(run.ckpt_path)
    if ckpt is not None and ckpt.get("config_key") == key:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optim"])
        run.start_epoch, run.history, run.wall_before = int(ckpt["epoch"]), list(ckpt["history"]), float(ckpt["wall_s"])
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        torch.distributed.barrier()  # every rank has read the checkpoint before rank 0 may overwrite it
        run.net = DDP(model, broadcast_buffers=True)  # device_ids=None: the module's own (single) device
    if job.progress and rank == 0:
        from tqdm.auto import tqdm
        run.bar = tqdm(total=cfg.epochs * steps, initial=run.start_epoch * steps, unit="step", leave=False,
                       position=job.position, dynamic_ncols=True, desc=cfg.label)
    run.t_run = time.perf_counter()
    run.probe = FeatureProbe(model, steps) if rank == 0 else None
    return run


def train_one_epoch(run: _Run, epoch: int) -> bool:
    """Train epoch ``epoch`` (0-based) of the run; on rank 0 evaluate it and write its metrics and checkpoint.
    Returns whether the loss diverged (became non-finite on any rank; the epoch stops there)."""
    job, cfg, device = run.job, run.job.cfg, run.device
    gb, world = cfg.global_batch, job.world
    local, total = gb // world, cfg.epochs * run.steps
    run.net.train()
    t0 = time.perf_counter()
    # loss sum and wrong predictions (local), accumulated on the device (float64: CPU and CUDA have it)
    stats, count, diverged, lr = torch.zeros(2, dtype=torch.float64, device=device), 0, False, cfg.lr
    if run.probe is not None:
        run.probe.start_epoch()
    for s, (x, y) in enumerate(epoch_batches(run.train, gb, cfg.seed, epoch, augment=cfg.augment,
                                             classes_per_worker=cfg.classes_per_worker, workers=cfg.workers,
                                             part=(job.rank, world))):
        step = epoch * run.steps + s
        lr = lr_at(cfg, step, total, run.steps)
        for g in run.opt.param_groups:
            g["lr"] = lr
        xs, ys = to_device(x, device, job.channels_last), y.to(device, non_blocking=True)
        if run.probe is not None:
            run.probe.arm(s, step)
        with conv_context(device, local):
            with autocast(device, job.amp):
                logits = run.net(xs)
                loss = F.cross_entropy(logits, ys)
            run.opt.zero_grad(set_to_none=True)
            loss.backward()
        run.opt.step()
        lv = float(loss.detach())
        stats += torch.stack([loss.detach().double() * local, (logits.detach().argmax(1) != ys).sum().double()])
        count += local
        diverged = diverged or not math.isfinite(lv)
        _report_step(run, s, lv, t0)
        if world > 1:
            flag = torch.tensor([1.0 if diverged else 0.0], device=device)
            torch.distributed.all_reduce(flag)
            diverged = bool(flag.item() > 0)
        if diverged:
            break
    train_s = time.perf_counter() - t0
    if world > 1:
        torch.distributed.all_reduce(stats)
    if job.rank == 0:
        _end_epoch(run, epoch, stats.tolist(), count * world, lr, train_s)  # every rank trains the same count
    return diverged


def _report_step(run: _Run, s: int, loss: float, t0: float) -> None:
    """The progress bar (loss and images/s every 10 steps) and ``on_images`` after step ``s`` of an epoch."""
    gb = run.job.cfg.global_batch
    if run.bar is not None:
        run.bar.update(1)
        if s % 10 == 0:
            el = time.perf_counter() - t0
            run.bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{(s + 1) * gb / max(el, 1e-9):.0f}",
                                refresh=s == 0)  # shown at once, not only at the next timed refresh
    if run.job.on_images is not None and run.job.rank == 0:
        run.job.on_images(gb)


def _end_epoch(run: _Run, epoch: int, sums: list, count: int, lr: float, train_s: float) -> None:
    """Rank 0 after an epoch: validation loss and error, the epoch's history entry, metrics.jsonl and the
    checkpoint (atomic)."""
    job, (loss_sum, wrong) = run.job, sums
    val_loss, val_err = evaluate(run.model, run.val, channels_last=job.channels_last, amp=job.amp)
    probe = run.probe
    run.history.append(dict(epoch=epoch + 1, train_loss=finite(loss_sum / max(count, 1)),
                            train_error=100.0 * wrong / max(count, 1), val_loss=finite(val_loss),
                            val_error=val_err, lr=lr, images_per_s=count / max(train_s, 1e-9), train_s=train_s,
                            wall_s=run.wall_s(),
                            **({} if probe is None or probe.layer is None
                               else dict(feature_percentiles=probe.samples))))
    store.write_jsonl(os.path.join(run.rdir, "metrics.jsonl"), run.history)
    store.save_checkpoint(run.ckpt_path, dict(model=run.model.state_dict(), optim=run.opt.state_dict(),
                                              epoch=epoch + 1, history=run.history, config_key=job.cfg.key(),
                                              wall_s=run.wall_s()))


def _model_format(job: TrainJob) -> torch.memory_format:
    """The memory format of the run's model and batches: channels-last of rank 5 for the video task's clips."""
    return memory_format(job.channels_last, 5 if job.cfg.task == "video" else 4)


def _finish(run: _Run, diverged: bool) -> dict:
    """Rank 0 after the last epoch: BN's error decomposition, the row (appended to results.jsonl), the final
    weights (``model.pt``); the checkpoint is removed."""
    job, cfg = run.job, run.job.cfg
    local = cfg.global_batch // job.world
    decomposition = {}
    if cfg.norm == "bn" and not diverged and not (job.world > 1 and cfg.bn_batch > local):
        decomposition = bn_decomposition(run.model, cfg, run.train if job.pool is None else job.pool, run.val,
                                         local, _model_format(job), amp=job.amp)
    row = results_row(job, run.history, diverged, run.wall_s(), decomposition)
    buf = io.BytesIO()
    torch.save(run.model.state_dict(), buf)
    store.atomic_write_bytes(os.path.join(run.rdir, "model.pt"), buf.getvalue())
    store.append_result(job.out, row)
    if os.path.exists(run.ckpt_path):
        os.unlink(run.ckpt_path)
    return row
