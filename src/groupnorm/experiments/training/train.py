"""Train and evaluate one run, on emulated workers (one process) or as one rank of a ``torchrun`` job.

Workers: the global batch of ``W * b`` images is cut into W slices of b images. A job of ``world`` processes
gives each rank ``W / world`` consecutive slices; inside a process the slices are emulated workers
(:class:`~groupnorm.nn.worker_bn.WorkerBatchNorm2d`). So ``world=1`` is W emulated workers, ``world=W`` is W
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
CPU's convolutions are faster (and GN takes the compiled kernels' channels-last path). It is how a run is
executed, like the thread count, not part of its identity: the numbers differ only by float rounding.
"""
from __future__ import annotations

import dataclasses
import math
import os
import platform
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..launch import store
from ..protocol.config import RunConfig
from .bn_eval import bn_decomposition
from ..data.loading import DataInfo, IDX_INFO, Split, epoch_batches
from .devices import autocast, check_amp, conv_backend, conv_context, device_name
from ..models import arch_shape
from ..models import build_model as build_arch


def build_model(cfg: RunConfig, world: int = 1, info: DataInfo = IDX_INFO) -> torch.nn.Module:
    """The run's network (``cfg.arch``, :func:`groupnorm.experiments.models.build_model`: the small ResNet,
    the VGG of Figure 3, or a named ResNet) for one of ``world`` processes, for the data set ``info`` describes
    (its channels and classes: ``in_channels``, ``num_classes``). BN's statistics groups: ``cfg.bn_batch``
    images each
    (a worker's b, or ``norm_batch``), so a process's share of the global batch holds
    ``(global_batch / world) / bn_batch`` of them; a group spanning processes (SyncBN with ``world > 1``) gets
    :class:`groupnorm.nn.SyncBatchNorm` (the group must then be the whole global batch)."""
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
    model = build_arch(cfg.arch, cfg.norm, info.channels, info.num_classes, groups=cfg.groups,
                       group_size=cfg.group_size, workers=slices, **cfg.shape_overrides())
    if sync:
        from groupnorm.convert import convert_sync_batchnorm

        model = convert_sync_batchnorm(model, inplace=True)
    return model


def lr_at(cfg: RunConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Learning rate at optimizer step ``step`` (0-based) of ``total_steps``."""
    warm = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total_steps - 1)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "cosine":
        t = (step - warm) / max(1, total_steps - warm)
        return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * t))
    passed = sum(step >= f * total_steps for f in (0.3, 0.6, 0.9))
    return cfg.lr * 0.1 ** passed


def _memory_format(channels_last: bool):
    return torch.channels_last if channels_last else torch.contiguous_format


def memory_format_name(channels_last: bool) -> str:
    """The memory format as results rows and messages name it: "channels_last" or "contiguous"."""
    return "channels_last" if channels_last else "contiguous"


@torch.no_grad()
def evaluate(model: torch.nn.Module, split: Split, batch: int = 250, *,
             channels_last: bool = False, amp: str = "none") -> tuple[float, float]:
    """(mean cross-entropy, error in %) of ``model`` in eval mode on ``split``, on the model's device (batches in
    channels-last memory if ``channels_last``; forward under the ``amp`` autocast), in batches of ``batch`` images
    (250 evaluates ~1.4x faster than 1000 on CPU: the activations stay in cache)."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum, wrong = 0.0, 0
    for x, y in split.eval_batches(batch):
        x = to_device(x, device, channels_last)
        y = y.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(x).float()
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        wrong += int((logits.argmax(1) != y).sum())
    model.train(was)
    return loss_sum / len(split), 100.0 * wrong / len(split)


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """A batch on ``device`` in the run's memory format (asynchronous from pinned memory)."""
    return x.to(device, non_blocking=True).contiguous(memory_format=_memory_format(channels_last))


def _finite(v: float):
    return v if math.isfinite(v) else None


@dataclass(frozen=True)
class TrainJob:
    """One call of :func:`train_run`: what to train, on which data, where, and how it is executed.

    ``cfg`` and the data determine the numbers; ``rank``/``world`` (this process among the job's ``world``
    processes), ``launcher`` (recorded in the row), ``progress``/``position`` (this run's tqdm bar),
    ``on_images`` (called with the images of each step), ``channels_last``, ``device`` and ``amp`` only how it
    runs.
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


def train_run(cfg: RunConfig, train: Split, val: Split, out: str, *, rank: int = 0, world: int = 1,
              progress: bool = True, on_images=None, launcher: str = "emulate", position: int = 1,
              channels_last: bool = False, lock_held: bool = False, device: str | torch.device = "cpu",
              amp: str = "none", pool: Split | None = None) -> dict | None:
    """Train ``cfg`` (resuming from its checkpoint if any); return its results row on rank 0 (else None).

    ``train`` and ``val`` are the run's data (already cut to ``cfg.train_size`` / ``cfg.val_size``). Rank 0
    writes ``OUT/runs/<key>/`` (holding its lock) and appends the row to ``OUT/results.jsonl``. It takes the
    run's lock itself (:func:`store.claim_run`: an error if another process holds it; the existing row, without
    training, if the run is finished) unless ``lock_held`` says that the caller (the sweep's process) holds it.
    ``on_images(n)`` is called after each step with the number of images processed (for a progress bar).
    ``channels_last``: model and batches in channels-last memory; ``device`` (a torch device, e.g. "cpu",
    "cuda:1") and ``amp`` ("none" or "bf16"): see the module docstring. ``pool``: the training-split images
    precise BN draws from (:func:`groupnorm.experiments.data.load_run_data`; default: ``train``).
    """
    job = TrainJob(cfg, train, val, out, rank=rank, world=world, progress=progress, on_images=on_images,
                   launcher=launcher, position=position, channels_last=channels_last, device=str(device),
                   amp=check_amp(amp), pool=pool)
    if rank != 0 or lock_held:
        return _train_run(job)
    key = cfg.key()
    status, lock = store.claim_run(out, key)
    if status == "done":
        return next(r for r in store.read_results(out) if r["config_key"] == key)
    if status == "held":
        raise RuntimeError(f"run {key} is being trained by another process "
                           f"({store.RunLock(store.run_dir(out, key)).holder() or 'unknown'})")
    try:
        return _train_run(job)
    finally:
        lock.release()


def _train_run(job: TrainJob):
    cfg, train, val, out, rank, world = job.cfg, job.train, job.val, job.out, job.rank, job.world
    cfg.validate()
    # Subnormal floats (e.g. decaying momentum of gammas that start at 0) make CPU arithmetic ~100x slower.
    torch.set_flush_denormal(True)
    if cfg.workers % world:
        raise ValueError(f"workers={cfg.workers} is not divisible by the number of processes {world}")
    distributed = world > 1
    if distributed:
        import torch.distributed as dist
    key = cfg.key()
    rdir = store.run_dir(out, key)
    ckpt_path = os.path.join(rdir, "checkpoint.pt")
    if rank == 0:
        store.atomic_write_json(os.path.join(rdir, "config.json"), dict(cfg.to_json(), key=key))

    fmt = _memory_format(job.channels_last)
    device = torch.device(job.device)
    pin = device.type == "cuda"  # pinned host batches: asynchronous copies to the GPU
    train, val = dataclasses.replace(train, pin_memory=pin), dataclasses.replace(val, pin_memory=pin)
    # the checkpoint's values load into these strides, on this device
    model = build_model(cfg, world, train.info).to(device=device, memory_format=fmt)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, momentum=cfg.momentum)
    start_epoch, history, wall_before = 0, [], 0.0
    ckpt = store.load_checkpoint(ckpt_path)
    if ckpt is not None and ckpt.get("config_key") == key:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optim"])
        start_epoch, history, wall_before = int(ckpt["epoch"]), list(ckpt["history"]), float(ckpt["wall_s"])
    if distributed:
        dist.barrier()  # every rank has read the checkpoint before rank 0 may overwrite it
    net = model
    if distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP
        net = DDP(model, broadcast_buffers=True)  # device_ids=None: the module's own (single) device

    gb = cfg.global_batch
    local = gb // world
    steps = cfg.images_per_epoch(len(train)) // gb
    total = cfg.epochs * steps
    bar = None
    if job.progress and rank == 0:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, initial=start_epoch * steps, unit="step", leave=False, position=job.position,
                   dynamic_ncols=True, desc=cfg.label)
    t_run = time.perf_counter()
    diverged = False
    probe = _Probe(model, steps) if rank == 0 else None
    for epoch in range(start_epoch, cfg.epochs):
        net.train()
        t0 = time.perf_counter()
        # loss sum and wrong predictions (local), accumulated on the device (float64: CPU and CUDA have it)
        stats, count = torch.zeros(2, dtype=torch.float64, device=device), 0
        if probe is not None:
            probe.start_epoch()
        for s, (x, y) in enumerate(epoch_batches(train, gb, cfg.seed, epoch, augment=cfg.augment,
                                                    classes_per_worker=cfg.classes_per_worker,
                                                    workers=cfg.workers, part=(rank, world))):
            step = epoch * steps + s
            lr = lr_at(cfg, step, total, steps)
            for g in opt.param_groups:
                g["lr"] = lr
            xs, ys = to_device(x, device, job.channels_last), y.to(device, non_blocking=True)
            if probe is not None:
                probe.arm(s, step)
            with conv_context(device, local):
                with autocast(device, job.amp):
                    logits = net(xs)
                    loss = F.cross_entropy(logits, ys)
                opt.zero_grad(set_to_none=True)
                loss.backward()
            opt.step()
            lv = float(loss.detach())
            stats += torch.stack([loss.detach().double() * local, (logits.detach().argmax(1) != ys).sum().double()])
            count += local
            if not math.isfinite(lv):
                diverged = True
            if bar is not None:
                bar.update(1)
                if s % 10 == 0:
                    el = time.perf_counter() - t0
                    bar.set_postfix(loss=f"{lv:.3f}", img_s=f"{(s + 1) * gb / max(el, 1e-9):.0f}",
                                    refresh=s == 0)  # shown at once, not only at the next timed refresh
            if job.on_images is not None and rank == 0:
                job.on_images(gb)
            if distributed:
                flag = torch.tensor([1.0 if diverged else 0.0], device=device)
                dist.all_reduce(flag)
                diverged = bool(flag.item() > 0)
            if diverged:
                break
        train_s = time.perf_counter() - t0
        if distributed:
            dist.all_reduce(stats)
        (loss_sum, wrong), count = stats.tolist(), count * world  # every rank trains the same count
        ips = count / max(train_s, 1e-9)
        if rank == 0:
            val_loss, val_err = evaluate(model, val, channels_last=job.channels_last, amp=job.amp)
            history.append(dict(epoch=epoch + 1, train_loss=_finite(loss_sum / max(count, 1)),
                                train_error=100.0 * wrong / max(count, 1), val_loss=_finite(val_loss),
                                val_error=val_err, lr=lr, images_per_s=ips, train_s=train_s,
                                wall_s=wall_before + time.perf_counter() - t_run,
                                **({} if probe is None or probe.layer is None
                                   else dict(feature_percentiles=probe.samples))))
            store.write_jsonl(os.path.join(rdir, "metrics.jsonl"), history)
            store.save_checkpoint(ckpt_path, dict(model=model.state_dict(), optim=opt.state_dict(),
                                                  epoch=epoch + 1, history=history, config_key=key,
                                                  wall_s=wall_before + time.perf_counter() - t_run))
        if distributed:
            dist.barrier()
        if diverged:
            break
    if bar is not None:
        bar.close()
    if probe is not None:
        probe.close()
    if rank != 0:
        return None
    last = history[-1]
    decomposition = {}
    if cfg.norm == "bn" and not diverged and not (world > 1 and cfg.bn_batch > local):
        decomposition = bn_decomposition(model, cfg, train if job.pool is None else job.pool, val, local, fmt,
                                         amp=job.amp)
    row = dict(experiment=cfg.experiment, norm=cfg.norm, groups=cfg.canonical()["groups"],
               group_size=cfg.canonical()["group_size"], batch_per_worker=cfg.batch_per_worker,
               workers=cfg.workers, global_batch=gb, seed=cfg.seed, epochs=cfg.epochs,
               epochs_done=last["epoch"], diverged=diverged, lr=cfg.lr,
               val_error=last["val_error"], train_error=last["train_error"],
               val_loss=last["val_loss"], train_loss=last["train_loss"],
               best_val_error=min(h["val_error"] for h in history),
               images_per_s=sum(h["train_s"] * h["images_per_s"] for h in history)
               / max(sum(h["train_s"] for h in history), 1e-9),
               wall_s=wall_before + time.perf_counter() - t_run, config_key=key, launcher=job.launcher,
               processes=world, train_size=len(train), val_size=len(val), arch=cfg.arch,
               **arch_shape(cfg.arch, cfg.widths, cfg.blocks), torch=torch.__version__, machine=platform.machine(),
               threads=torch.get_num_threads(), gn_kernels=_kernels_available(),
               memory_format=memory_format_name(job.channels_last), device=str(device),
               device_name=device_name(device), amp=job.amp, conv_backend=conv_backend(device, local),
               dataset=train.info.name, num_classes=train.info.num_classes, in_channels=train.info.channels,
               image_shape=list(train.info.image_shape),
               norm_batch=cfg.norm_batch, bn_batch=cfg.bn_batch, classes_per_worker=cfg.classes_per_worker,
               holdout=cfg.holdout, base_lr=cfg.base_lr, first_stride=cfg.first_stride, augment=cfg.augment,
               schedule=cfg.schedule, warmup_epochs=cfg.warmup_epochs,
               val_error_curve=[h["val_error"] for h in history],
               train_error_curve=[h["train_error"] for h in history],
               **_percentile_fields(history),
               **decomposition, finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    store.atomic_write_bytes(os.path.join(rdir, "model.pt"), _state_bytes(model))
    store.append_result(out, row)
    if os.path.exists(ckpt_path):
        os.unlink(ckpt_path)
    return row


class _Probe:
    """Figure 3's measurement: percentiles of a model's ``probe`` layer output (``vgg.VGG.probe``, the late
    conv before its norm) on the training batch of ``PROBES_PER_EPOCH`` evenly spaced steps of each epoch
    (``samples``: ``[global step, p1, p20, p80, p99]`` lists). A model without ``probe``: does nothing."""

    PROBES_PER_EPOCH = 8

    def __init__(self, model: torch.nn.Module, steps_per_epoch: int):
        self.layer = getattr(model, "probe", None)
        self.every = max(1, steps_per_epoch // self.PROBES_PER_EPOCH)
        self.samples: list = []
        self._step = None
        self._hook = None if self.layer is None else self.layer.register_forward_hook(self._record)

    def start_epoch(self) -> None:
        self.samples = []

    def arm(self, s: int, step: int) -> None:
        """Record the next forward of the layer if step ``s`` of the epoch is a probe step."""
        self._step = step if s % self.every == 0 else None

    def _record(self, module, inputs, output) -> None:
        if self._step is not None:
            from ..models.vgg import response_percentiles

            self.samples.append([self._step] + response_percentiles(output))
            self._step = None

    def close(self) -> None:
        if self._hook is not None:
            self._hook.remove()


def _percentile_fields(history: list[dict]) -> dict:
    """``feature_percentiles`` for the row: every epoch's samples, in order ({} if none were taken)."""
    samples = [s for h in history for s in h.get("feature_percentiles", [])]
    return dict(feature_percentiles=samples) if samples else {}


def _kernels_available() -> bool:
    """Whether GN ran on the compiled kernels (``groupnorm.kernels``) rather than the plain PyTorch path."""
    try:
        from groupnorm import kernels

        return bool(kernels.is_available())
    except Exception:
        return False


def _state_bytes(model: torch.nn.Module) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()
