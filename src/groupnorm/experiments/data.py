"""Image classification data in the MNIST layout (MNIST, KMNIST, Fashion-MNIST): loading, subsets, batches.

A data directory holds the four standard files, gzipped or not::

    train-images-idx3-ubyte[.gz]  (N, 28, 28) uint8     train-labels-idx1-ubyte[.gz]  (N,) uint8
    t10k-images-idx3-ubyte[.gz]   (M, 28, 28) uint8     t10k-labels-idx1-ubyte[.gz]   (M,) uint8

The directory is ``--data-dir``, else ``$GROUPNORM_DATA``, else Debian's ``/usr/share/datasets/fashion-mnist``.

Batches are built for a *global* batch of ``workers * batch_per_worker`` images; worker ``k`` takes the ``k``-th
equal slice. The order and the augmentation (random crop with 2-pixel zero padding, horizontal flip) come from a
generator seeded by (seed, epoch) alone, so every process of a ``torchrun`` job builds the same global batch,
and a run resumed at an epoch boundary sees exactly the batches it would have seen.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from .idx import read_idx

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
NUM_CLASSES = 10


def resolve_data_dir(data_dir: str | None = None) -> str:
    """``data_dir`` if given, else ``$GROUPNORM_DATA``, else the Debian Fashion-MNIST directory."""
    return data_dir or os.environ.get("GROUPNORM_DATA") or DEFAULT_DATA_DIR


def _find(data_dir: str, stem: str) -> str:
    for name in (stem + ".gz", stem):
        path = os.path.join(data_dir, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"{stem}.gz not found in data directory {data_dir!r}; it needs the four MNIST-format files "
        f"(install Debian's dataset-fashion-mnist, or pass --data-dir DIR / set GROUPNORM_DATA)")


@dataclass
class Split:
    """Images as uint8 (N, 28, 28) and labels as int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def load_split(data_dir: str, split: str) -> Split:
    """Load and validate one split ("train" or "test") of an MNIST-format directory."""
    if split not in SPLIT_FILES:
        raise ValueError(f"split={split!r} is not one of {sorted(SPLIT_FILES)}")
    img_path, lab_path = (_find(data_dir, s) for s in SPLIT_FILES[split])
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{img_path}: expected uint8 images of shape (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(f"{lab_path}: expected uint8 labels of shape (N,), got {labels.dtype} {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"wrong counts: {img_path} holds {images.shape[0]} images but {lab_path} holds "
                         f"{labels.shape[0]} labels")
    if images.shape[0] == 0:
        raise ValueError(f"{img_path}: holds no images")
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        raise ValueError(f"{lab_path}: label {int(labels.max())} is outside 0..{NUM_CLASSES - 1}")
    return Split(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)))


def subset(split: Split, size: int | None, seed: int = 0) -> Split:
    """A class-balanced subset of ``size`` examples drawn with a fixed ``seed`` (all of it if ``size`` is None).

    The same subset is used by every run of a sweep, whatever the run's own seed.
    """
    n = len(split)
    if size is None or size >= n:
        return split
    if size <= 0:
        raise ValueError(f"subset size={size} must be positive")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    labels = split.labels[perm]
    per_class = [perm[labels == c] for c in range(NUM_CLASSES)]
    take = [p[: size // NUM_CLASSES + (1 if c < size % NUM_CLASSES else 0)] for c, p in enumerate(per_class)]
    idx = torch.cat(take)
    if idx.numel() < size:  # a class ran short: fill from the rest
        rest = perm[~torch.isin(perm, idx)]
        idx = torch.cat([idx, rest[: size - idx.numel()]])
    idx = idx.sort().values
    return Split(split.images[idx].clone(), split.labels[idx].clone())


# Fashion-MNIST pixel statistics (of the 60k training images, scaled to [0, 1]).
MEAN, STD = 0.2860, 0.3530


def to_input(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W) -> normalized float32 (N, 1, H, W)."""
    return ((images_u8.float() / 255.0) - MEAN).div_(STD).unsqueeze(1)


def epoch_batches(split: Split, global_batch: int, seed: int, epoch: int, *, augment: bool = True,
                  classes_per_worker: int | None = None, workers: int = 1):
    """Yield (x, y) global batches for one epoch: a seeded shuffle, the last partial batch dropped.

    With ``classes_per_worker`` each of the ``workers`` slices is drawn from that many classes
    (:func:`groupnorm.experiments.noniid.worker_class_order`) instead of the shuffle.

    x is float32 (B, 1, 28, 28), y int64 (B,). Augmentation: random crop of the 2-pixel zero-padded image and a
    horizontal flip with probability 1/2, both drawn from the (seed, epoch) generator.
    """
    if global_batch > len(split):
        raise ValueError(f"global batch of {global_batch} images is larger than the {len(split)} training images")
    g = torch.Generator().manual_seed(1_000_003 * (seed + 1) + epoch)
    steps = len(split) // global_batch
    if classes_per_worker is None:
        perm = torch.randperm(len(split), generator=g)
    else:
        from .noniid import worker_class_order

        perm = worker_class_order(split.labels, steps, workers, global_batch // workers, classes_per_worker, g)
    h, w = split.images.shape[1:]
    pad = 2
    for s in range(steps):
        idx = perm[s * global_batch:(s + 1) * global_batch]
        x = to_input(split.images[idx])
        y = split.labels[idx]
        if augment:
            padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
            off = torch.randint(0, 2 * pad + 1, (global_batch, 2), generator=g)
            flip = torch.rand(global_batch, generator=g) < 0.5
            rows = (off[:, 0, None] + torch.arange(h))  # (B, h)
            cols = (off[:, 1, None] + torch.arange(w))  # (B, w)
            cols = torch.where(flip[:, None], cols.flip(1), cols)
            bidx = torch.arange(global_batch)[:, None, None]
            x = padded[bidx, 0, rows[:, :, None], cols[:, None, :]].unsqueeze(1).contiguous()
        yield x, y


def steps_per_epoch(n: int, global_batch: int) -> int:
    return n // global_batch
