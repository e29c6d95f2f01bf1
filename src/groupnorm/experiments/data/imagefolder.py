"""ImageFolder data sets (the ImageNet layout), decoded with Pillow in DataLoader worker processes.

Layout::

    DIR/train/<class>/*.jpg|*.jpeg|*.png     (any case; other files are ignored)
    DIR/val/<class>/...                      (the evaluation split; its classes must be among train's)

Classes are train's subfolder names, sorted; label = index in that list. The scan checks that both splits
exist, that every class folder holds at least one image and that every val class is one of train's; an image
that Pillow cannot decode fails when it is loaded, with its path. Images are converted to RGB (3 channels).

Transforms (torchvision's standard ImageNet recipe, written here with Pillow; S = ``image_size``, 224 default):

- training: RandomResizedCrop to S x S (area fraction uniform in [0.08, 1], log aspect ratio uniform in
  [log 3/4, log 4/3], 10 tries, else the whole image's central crop of clamped ratio; bilinear), then a
  horizontal flip with probability 1/2;
- evaluation: the shorter side resized (bilinear) to round(S / 0.875) (256 for 224), then the central S x S;
- both: pixels to [0, 1], then per channel ``(x - mean_c) / std_c`` with ImageNet's mean (0.485, 0.456, 0.406)
  and std (0.229, 0.224, 0.225) (decoding a whole ImageNet to measure them is not worth it).

Determinism: each training image's crop and flip come from its own ``random.Random(seed)``, the seeds drawn
from the run's (seed, epoch) generator with the order (:func:`groupnorm.experiments.data.epoch_batches`), so the
numbers do not depend on the number of DataLoader workers nor on which worker decodes which image.
"""
from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from .split import DataInfo

EXTENSIONS = (".jpg", ".jpeg", ".png")
SPLITS = ("train", "val")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DEFAULT_IMAGE_SIZE = 224
EVAL_RESIZE = 0.875  # center crop = 87.5% of the resized shorter side (224 of 256)
SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)


def default_loader_workers() -> int:
    return min(8, os.cpu_count() or 1)


def scan(root: str, classes: list[str] | None = None) -> tuple[list[str], list[str], list[int]]:
    """(classes, paths, labels) of one split directory ``root``; ``classes`` (train's) fixes the labels."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"ImageFolder split not found: {root} (expected {os.path.dirname(root)}/train/"
                                f"<class>/ and {os.path.dirname(root)}/val/<class>/)")
    found = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if not found:
        raise ValueError(f"{root}: no class folders (expected {root}/<class>/*.jpg|png)")
    if classes is None:
        classes = found
    index = {c: i for i, c in enumerate(classes)}
    paths, labels = [], []
    for c in found:
        if c not in index:
            raise ValueError(f"{os.path.join(root, c)}: class {c!r} is not one of the {len(classes)} training "
                             f"classes (train/'s folders)")
        folder = os.path.join(root, c)
        files = sorted(e.name for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(EXTENSIONS))
        if not files:
            raise ValueError(f"{folder}: empty class folder (no {'/'.join(EXTENSIONS)} images)")
        paths += [os.path.join(folder, f) for f in files]
        labels += [index[c]] * len(files)
    return classes, paths, labels


def open_rgb(path: str):
    """The image at ``path`` as an RGB Pillow image; ValueError naming the file if Pillow cannot decode it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:  # PIL.UnidentifiedImageError is an OSError
        raise ValueError(f"{path}: unreadable image: {exc}") from None


def random_resized_crop_box(width: int, height: int, rng: random.Random) -> tuple[int, int, int, int]:
    """(left, top, w, h) of torchvision's RandomResizedCrop box (scale (0.08, 1), ratio (3/4, 4/3))."""
    area = width * height
    log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*SCALE)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, width - w), rng.randint(0, height - h), w, h
    ratio = width / height  # fallback: central crop of the clamped aspect ratio
    if ratio < RATIO[0]:
        w, h = width, int(round(width / RATIO[0]))
    elif ratio > RATIO[1]:
        w, h = int(round(height * RATIO[1])), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def _to_tensor(img, mean, std) -> torch.Tensor:
    x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255.0)
    return (x - torch.tensor(mean).view(3, 1, 1)).div_(torch.tensor(std).view(3, 1, 1))


def train_transform(img, size: int, rng: random.Random):
    """RandomResizedCrop(size) + horizontal flip (p = 1/2) of a Pillow image, drawn from ``rng``."""
    from PIL import Image

    left, top, w, h = random_resized_crop_box(img.width, img.height, rng)
    out = img.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))
    if rng.random() < 0.5:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    return out


def eval_transform(img, size: int):
    """Shorter side resized to round(size / 0.875), then the central size x size."""
    from PIL import Image

    short = int(round(size / EVAL_RESIZE))
    if img.width <= img.height:
        nw, nh = short, int(short * img.height / img.width)
    else:
        nw, nh = int(short * img.width / img.height), short
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


class _Images(torch.utils.data.Dataset):
    """Item ``(i, seed)``: image i decoded and transformed (training crop from ``random.Random(seed)``, or the
    evaluation transform when seed is None) -> (float32 (3, S, S), label)."""

    def __init__(self, split: "FolderSplit"):
        self.paths, self.labels, self.size, self.info = split.paths, split.labels, split.image_size, split.info

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, item):
        i, seed = item
        img = open_rgb(self.paths[i])
        img = eval_transform(img, self.size) if seed is None else train_transform(img, self.size, random.Random(seed))
        return _to_tensor(img, self.info.mean, self.info.std), self.labels[i]


def _worker_init(worker_id: int) -> None:  # nothing in a worker draws from global RNGs; seeded regardless
    seed = torch.initial_seed() % 2 ** 32
    random.seed(seed)
    np.random.seed(seed)


@dataclass
class FolderSplit:
    """One ImageFolder split: file ``paths``, ``labels`` int64 (N,), the data set's :class:`DataInfo`, the crop
    side ``image_size`` and the DataLoader's ``loader_workers`` (0: decode in this process)."""

    paths: list
    labels: torch.Tensor
    info: DataInfo
    image_size: int
    loader_workers: int = 0
    pin_memory: bool = False

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, idx: torch.Tensor) -> "FolderSplit":
        return FolderSplit([self.paths[i] for i in idx.tolist()], self.labels[idx].clone(), self.info,
                           self.image_size, self.loader_workers, self.pin_memory)

    def _loader(self, batches: list):
        return torch.utils.data.DataLoader(
            _Images(self), batch_sampler=batches, num_workers=self.loader_workers, pin_memory=self.pin_memory,
            worker_init_fn=_worker_init if self.loader_workers else None,
            generator=torch.Generator().manual_seed(0))

    def eval_batches(self, batch: int, drop_last: bool = False):
        """(x float32 (B, 3, S, S), y int64 (B,)) in order, with the evaluation transform."""
        stop = len(self) - (len(self) % batch if drop_last else 0)
        yield from self._loader([[(i, None) for i in range(j, min(j + batch, stop))] for j in range(0, stop, batch)])

    def train_batches(self, order: torch.Tensor, g: torch.Generator, global_batch: int, steps: int,
                      augment: bool, part: tuple = (0, 1)):
        """Step s: part ``(r, world)`` of the global batch ``order[s*B:(s+1)*B]`` (only that share is decoded),
        each image cropped and flipped from its own seed (drawn from ``g`` for the whole epoch), or with the
        evaluation transform if not ``augment``."""
        r, world = part
        local = global_batch // world
        seeds = torch.randint(0, 2 ** 62, (steps * global_batch,), generator=g).tolist()
        batches = []
        for s in range(steps):
            lo = s * global_batch + r * local
            idx = order[lo:lo + local].tolist()
            batches.append([(i, seeds[lo + k] if augment else None) for k, i in enumerate(idx)])
        yield from self._loader(batches)


def read_imagefolder(directory: str, image_size: int | None = None,
                     loader_workers: int | None = None) -> tuple[FolderSplit, FolderSplit]:
    """(train, val) of an ImageFolder ``directory`` (see the module docstring), scanned and validated."""
    size = image_size or DEFAULT_IMAGE_SIZE
    workers = default_loader_workers() if loader_workers is None else loader_workers
    classes, tr_paths, tr_labels = scan(os.path.join(directory, "train"))
    _, va_paths, va_labels = scan(os.path.join(directory, "val"), classes)
    info = DataInfo("imagefolder", tuple(classes), 3, (size, size), IMAGENET_MEAN, IMAGENET_STD)
    return (FolderSplit(tr_paths, torch.tensor(tr_labels, dtype=torch.int64), info, size, workers),
            FolderSplit(va_paths, torch.tensor(va_labels, dtype=torch.int64), info, size, workers))
