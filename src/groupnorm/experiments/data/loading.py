"""The harness's data: the directory's format detected, read, validated, cut into subsets, and served in batches.

Formats of ``--data-dir`` (``--dataset`` forces one; ``auto`` detects it in this order):

- ``idx``: MNIST-format IDX files (MNIST, KMNIST, Fashion-MNIST), gzipped or not (:mod:`.idx`)::

      train-images-idx3-ubyte[.gz]  (N, H, W) uint8     train-labels-idx1-ubyte[.gz]  (N,) uint8
      t10k-images-idx3-ubyte[.gz]   (M, H, W) uint8     t10k-labels-idx1-ubyte[.gz]   (M,) uint8

  1 channel, 10 classes, normalized with Fashion-MNIST's pixel mean and std (the harness's numbers since its
  first results; any IDX set gets them).
- ``cifar10`` / ``cifar100``: the official Python pickles (:mod:`.cifar`), in DIR or in its extracted
  ``cifar-10-batches-py`` / ``cifar-100-python``; 3 channels, 32x32, normalized per channel with the mean and
  std of the training split's pixels (computed exactly from their histogram).
- ``imagefolder``: ``train/<class>/*.jpg|png`` and ``val/<class>/...`` (the ImageNet layout; :mod:`.imagefolder`),
  decoded with Pillow in DataLoader worker processes; 3 channels at ``image_size`` (default 224).

The directory is ``--data-dir``, else ``$GROUPNORM_DATA``, else Debian's ``/usr/share/datasets/fashion-mnist``.

Batches are built for a *global* batch of ``workers * batch_per_worker`` images; worker ``k`` takes the ``k``-th
equal slice, and a process that is part ``r`` of ``world`` gets the ``r``-th equal share (its workers' slices).
The order and the augmentation come from a generator seeded by (seed, epoch) alone, so every process of a
``torchrun`` job builds the same global batch, and a run resumed at an epoch boundary sees exactly the batches
it would have seen. Augmentation of the in-memory formats (IDX, CIFAR): a random crop of the image zero-padded
by ``crop_pad`` pixels (2 for IDX, 4 for CIFAR: the standard CIFAR recipe) back to its size, and a horizontal
flip with probability 1/2; ImageFolder's is in :mod:`.imagefolder`.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from .spec import DEFAULT_DATA_DIR, FORMATS, DataSpec, add_data_arguments, as_spec, resolve_data_dir, \
    spec_from_args  # noqa: F401 (the data set's spec and flags, torch-free for the CLI, re-exported)
from .idx import read_idx

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
NUM_CLASSES = 10  # IDX files carry no class list: MNIST, KMNIST and Fashion-MNIST have 10

# Fashion-MNIST pixel statistics (of the 60k training images, scaled to [0, 1]); used for every IDX data set.
MEAN, STD = 0.2860, 0.3530


@dataclass(frozen=True)
class DataInfo:
    """What the model and the batches need to know about a data set.

    ``image_shape`` is (H, W) of the network's input; ``mean``/``std`` per channel, of pixels scaled to [0, 1];
    ``crop_pad`` the zero padding of the in-memory random crop (0 for ImageFolder, which crops otherwise)."""

    name: str
    classes: tuple
    channels: int
    image_shape: tuple
    mean: tuple
    std: tuple
    crop_pad: int = 0

    @property
    def num_classes(self) -> int:
        return len(self.classes)


IDX_INFO = DataInfo("idx", tuple(str(c) for c in range(NUM_CLASSES)), 1, (28, 28), (MEAN,), (STD,), crop_pad=2)


def detect_format(data_dir: str) -> str:
    """"idx", "cifar10", "cifar100" or "imagefolder": the layout of ``data_dir`` (see the module docstring)."""
    from . import cifar

    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"data directory not found: {data_dir!r} (pass --data-dir DIR or set "
                                f"GROUPNORM_DATA; for Fashion-MNIST install Debian's dataset-fashion-mnist)")
    stem = SPLIT_FILES["train"][0]
    if any(os.path.isfile(os.path.join(data_dir, n)) for n in (stem, stem + ".gz")):
        return "idx"
    name = cifar.detect(data_dir)
    if name is not None:
        return name
    if os.path.isdir(os.path.join(data_dir, "train")):
        return "imagefolder"
    raise FileNotFoundError(
        f"{data_dir!r} holds no data set the harness knows: expected MNIST-format {stem}[.gz] and the other "
        f"three IDX files, CIFAR-10's batches.meta + data_batch_1..5 + test_batch, CIFAR-100's meta + train + "
        f"test (also in cifar-10-batches-py/ or cifar-100-python/), or an ImageFolder train/<class>/ and "
        f"val/<class>/ (choose with --dataset)")


@dataclass
class Split:
    """An in-memory split: images uint8 (N, C, H, W) (an (N, H, W) tensor is taken as one channel), labels
    int64 (N,), and the data set's :class:`DataInfo` (IDX's by default). ``pin_memory``: batches come in pinned
    host memory (for asynchronous copies to a GPU)."""

    images: torch.Tensor
    labels: torch.Tensor
    info: DataInfo = field(default=IDX_INFO)
    pin_memory: bool = False

    def __post_init__(self):
        if self.images.ndim == 3:
            self.images = self.images.unsqueeze(1)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, idx: torch.Tensor) -> "Split":
        return Split(self.images[idx].clone(), self.labels[idx].clone(), self.info, self.pin_memory)

    def _out(self, x: torch.Tensor, y: torch.Tensor) -> tuple:
        return (x.pin_memory(), y.pin_memory()) if self.pin_memory else (x, y)

    def eval_batches(self, batch: int, drop_last: bool = False):
        """(x float32 (B, C, H, W), y int64 (B,)) in order, normalized, not augmented."""
        stop = len(self) - (len(self) % batch if drop_last else 0)
        for i in range(0, stop, batch):
            yield self._out(to_input(self.images[i:i + batch], self.info), self.labels[i:i + batch])

    def train_batches(self, order: torch.Tensor, g: torch.Generator, global_batch: int, steps: int,
                      augment: bool, part: tuple = (0, 1)):
        """Step s: the global batch ``order[s*B:(s+1)*B]``, augmented with draws from ``g`` (for the whole global
        batch, whatever ``part``), of which part ``(r, world)`` yields the r-th of ``world`` equal shares."""
        r, world = part
        local = global_batch // world
        c, h, w = self.images.shape[1:]
        pad = self.info.crop_pad
        for s in range(steps):
            idx = order[s * global_batch:(s + 1) * global_batch]
            x = to_input(self.images[idx], self.info)
            y = self.labels[idx]
            if augment:
                padded = torch.nn.functional.pad(x, (pad, pad, pad, pad)).permute(0, 2, 3, 1)  # (B, H', W', C)
                off = torch.randint(0, 2 * pad + 1, (global_batch, 2), generator=g)
                flip = torch.rand(global_batch, generator=g) < 0.5
                rows = (off[:, 0, None] + torch.arange(h))  # (B, h)
                cols = (off[:, 1, None] + torch.arange(w))  # (B, w)
                cols = torch.where(flip[:, None], cols.flip(1), cols)
                bidx = torch.arange(global_batch)[:, None, None]
                x = padded[bidx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()
            yield self._out(x[r * local:(r + 1) * local], y[r * local:(r + 1) * local])


def _find(data_dir: str, stem: str) -> str:
    for name in (stem + ".gz", stem):
        path = os.path.join(data_dir, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"{stem}.gz not found in data directory {data_dir!r}; it needs the four MNIST-format files "
        f"(install Debian's dataset-fashion-mnist, or pass --data-dir DIR / set GROUPNORM_DATA)")


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
    info = dataclasses.replace(IDX_INFO, image_shape=tuple(images.shape[1:]))
    return Split(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)), info)


def channel_stats(images_u8: np.ndarray) -> tuple[tuple, tuple]:
    """Per-channel mean and (population) std of uint8 (N, C, H, W) pixels scaled to [0, 1], exactly, from each
    channel's 256-bin histogram (no float copy of the data)."""
    mean, std = [], []
    v = np.arange(256, dtype=np.float64) / 255.0
    for c in range(images_u8.shape[1]):
        hist = np.bincount(images_u8[:, c].ravel(), minlength=256).astype(np.float64)
        n = hist.sum()
        m = float((hist * v).sum() / n)
        mean.append(m)
        std.append(float(np.sqrt(max((hist * (v - m) ** 2).sum() / n, 1e-12))))
    return tuple(mean), tuple(std)


def _load_cifar(data_dir: str, name: str | None) -> tuple[Split, Split]:
    from .cifar import read_cifar

    d = read_cifar(data_dir, name)
    (xtr, ytr), (xte, yte) = d["train"], d["test"]
    mean, std = channel_stats(xtr)
    info = DataInfo(d["name"], tuple(d["classes"]), 3, (32, 32), mean, std, crop_pad=4)
    return (Split(torch.from_numpy(xtr), torch.from_numpy(ytr), info),
            Split(torch.from_numpy(xte), torch.from_numpy(yte), info))


def read_dataset(spec: DataSpec):
    """(train, test) splits of the whole data set of ``spec`` (:class:`Split`, or ImageFolder's
    :class:`~groupnorm.experiments.data.imagefolder.FolderSplit`), validated."""
    if not os.path.isdir(spec.data_dir):
        raise FileNotFoundError(f"data directory not found: {spec.data_dir!r} (pass --data-dir DIR or set "
                                f"GROUPNORM_DATA)")
    fmt = detect_format(spec.data_dir) if spec.dataset == "auto" else spec.dataset
    if fmt == "idx":
        return load_split(spec.data_dir, "train"), load_split(spec.data_dir, "test")
    if fmt in ("cifar10", "cifar100"):
        return _load_cifar(spec.data_dir, fmt)
    from .imagefolder import read_imagefolder

    return read_imagefolder(spec.data_dir, image_size=spec.image_size, loader_workers=spec.loader_workers)


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
    from .holdout import holdout_split

    key = (as_spec(data), "holdout")
    if key not in _cache:
        _cache[key] = holdout_split(load_full(data)[0])
    return _cache[key]


POOL_IMAGES = 10000  # training-split images a run's precise BN draws from (bn_eval.PRECISE_BN_IMAGES)


def load_run_data(data: "DataSpec | str | None", cfg) -> tuple:
    """(train, val, pool) for the run ``cfg`` (a RunConfig): :func:`load_data`'s training and validation
    subsets, and ``pool``: ``POOL_IMAGES`` images of the same training split (or, with ``cfg.holdout``, of its
    part outside the held-out images), a fixed seeded class-balanced draw that includes images the run did not
    train on. Precise BN (:mod:`.bn_eval`) recomputes population statistics over the pool, since the run's own
    training subset can be smaller than the 10,000 images Wu & Johnson's precise BN asks for; the pool never
    holds validation (test-split or held-out) images."""
    train, val = load_data(data, cfg.train_size, cfg.val_size, cfg.holdout)
    pkey = (as_spec(data), "pool", cfg.holdout)
    if pkey not in _cache:
        _cache[pkey] = subset(_splits(data, cfg.holdout)[0], POOL_IMAGES, seed=2)
    pool = _cache[pkey]
    return train, val, (pool if len(pool) > len(train) else train)


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


def to_input(images_u8: torch.Tensor, info: DataInfo = IDX_INFO) -> torch.Tensor:
    """uint8 (N, C, H, W) (or (N, H, W): one channel) -> float32 (N, C, H, W), ``(x / 255 - mean_c) / std_c``."""
    if images_u8.ndim == 3:
        images_u8 = images_u8.unsqueeze(1)
    c = images_u8.shape[1]
    if c != len(info.mean):
        raise ValueError(f"images have {c} channels but the data set's statistics {info.mean} have {len(info.mean)}")
    mean = torch.tensor(info.mean, dtype=torch.float32).view(1, c, 1, 1)
    std = torch.tensor(info.std, dtype=torch.float32).view(1, c, 1, 1)
    return ((images_u8.float() / 255.0) - mean).div_(std)


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
        from .noniid import worker_class_order

        perm = worker_class_order(split.labels, steps, workers, global_batch // workers, classes_per_worker, g)
    yield from split.train_batches(perm, g, global_batch, steps, augment, part)


def steps_per_epoch(n: int, global_batch: int) -> int:
    return n // global_batch
