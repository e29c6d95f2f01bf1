"""A run's data: the data set read once per process, cut into seeded class-balanced subsets, served per epoch.

The directory is ``--data-dir``, else ``$GROUPNORM_DATA``, else Debian's ``/usr/share/datasets/fashion-mnist``;
its format (``--dataset``, or detected) is one of :data:`.formats.FORMATS`.

Batches are built for a *global* batch of ``workers * batch_per_worker`` images; worker ``k`` takes the ``k``-th
equal slice, and a process that is part ``r`` of ``world`` gets the ``r``-th equal share (its workers' slices).
The order and the augmentation come from a generator seeded by (seed, epoch) alone, so every process of a
``torchrun`` job builds the same global batch, and a run resumed at an epoch boundary sees exactly the batches
it would have seen. The augmentation is the split's (:class:`.split.Split`, ImageFolder's in :mod:`.imagefolder`).
"""
from __future__ import annotations

import os

import torch

from .formats import FORMATS, detect_format
from .holdout import holdout_split
from .noniid import worker_class_order
from .spec import DataSpec, as_spec


def read_dataset(spec: DataSpec):
    """(train, test) splits of the whole data set of ``spec`` (:class:`~.split.Split`, or ImageFolder's
    :class:`~groupnorm.experiments.data.imagefolder.FolderSplit`), validated, read by its format's reader."""
    if not os.path.isdir(spec.data_dir):
        raise FileNotFoundError(f"data directory not found: {spec.data_dir!r} (pass --data-dir DIR or set "
                                f"GROUPNORM_DATA)")
    fmt = detect_format(spec.data_dir) if spec.dataset == "auto" else spec.dataset
    return FORMATS[fmt].read(spec)


_cache: dict = {}


def load_full(data: "DataSpec | str | None"):
    """The whole (train, test) splits of ``data`` (a :class:`DataSpec` or a directory), cached per process."""
    spec = as_spec(data)
    if spec not in _cache:
        _cache[spec] = read_dataset(spec)
    return _cache[spec]


def load_data(data: "DataSpec | str | None", train_size: int | None, val_size: int | None,
              holdout: bool = False):
    """The training subset and the validation subset (of the test split), cached per process.

    ``holdout``: both from the training split instead (:func:`groupnorm.experiments.data.holdout.holdout_split`):
    training images from the rest, validation images from the held-out part, for choosing hyper-parameters
    without looking at the reported validation images (``--experiment lrsweep``)."""
    train, test = _splits(data, holdout)
    return subset(train, train_size, seed=0), subset(test, val_size, seed=1)


def _splits(data, holdout: bool) -> tuple:
    """(training images, validation images) before subsetting: the data set's (train, test) splits, or with
    ``holdout`` its training split cut into (rest, held) (:func:`groupnorm.experiments.data.holdout.holdout_split`),
    cached per process."""
    if not holdout:
        return load_full(data)
    key = (as_spec(data), "holdout")
    if key not in _cache:
        _cache[key] = holdout_split(load_full(data)[0])
    return _cache[key]


POOL_IMAGES = 10000  # training-split images a run's precise BN draws from (training.bn_eval.PRECISE_BN_IMAGES)


def subset(split, size: int | None, seed: int = 0):
    """A class-balanced subset of ``size`` examples drawn with a fixed ``seed`` (all of it if ``size`` is None).

    The same subset is used by every run of a sweep, whatever the run's own seed.
    """
    n = len(split)
    if size is None or size >= n:
        return split
    if size <= 0:
        raise ValueError(f"subset size={size} must be positive")
    nc = split.info.num_classes
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    labels = split.labels[perm]
    per_class = [perm[labels == c] for c in range(nc)]
    take = [p[: size // nc + (1 if c < size % nc else 0)] for c, p in enumerate(per_class)]
    idx = torch.cat(take)
    if idx.numel() < size:  # a class ran short: fill from the rest
        rest = perm[~torch.isin(perm, idx)]
        idx = torch.cat([idx, rest[: size - idx.numel()]])
    return split.take(idx.sort().values)


def epoch_batches(split, global_batch: int, seed: int, epoch: int, *, augment: bool = True,
                  classes_per_worker: int | None = None, workers: int = 1, part: tuple = (0, 1)):
    """Yield (x, y) batches for one epoch: a seeded shuffle, the last partial batch dropped; part ``(r, world)``
    of each global batch (the whole of it by default).

    With ``classes_per_worker`` each of the ``workers`` slices is drawn from that many classes
    (:func:`groupnorm.experiments.data.noniid.worker_class_order`) instead of the shuffle.

    x is float32 (global_batch / world, C, H, W), y int64; the augmentation is the split's (module docstring),
    drawn from the (seed, epoch) generator.
    """
    if global_batch > len(split):
        raise ValueError(f"global batch of {global_batch} images is larger than the {len(split)} training images")
    r, world = part
    if global_batch % world or not 0 <= r < world:
        raise ValueError(f"part={part}: the global batch of {global_batch} does not split into {world} shares")
    g = torch.Generator().manual_seed(1_000_003 * (seed + 1) + epoch)
    steps = len(split) // global_batch
    if classes_per_worker is None:
        perm = torch.randperm(len(split), generator=g)
    else:
        perm = worker_class_order(split.labels, steps, workers, global_batch // workers, classes_per_worker, g)
    yield from split.train_batches(perm, g, global_batch, steps, augment, part)
