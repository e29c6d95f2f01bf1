"""A data set's description (:class:`DataInfo`) and an in-memory split of it (:class:`Split`), served in batches.

Augmentation of the in-memory formats (IDX, CIFAR): a random crop of the image zero-padded by ``crop_pad`` pixels
(2 for IDX, 4 for CIFAR: the standard CIFAR recipe) back to its size, and a horizontal flip with probability
1/2, drawn from the generator the caller passes (:func:`groupnorm.experiments.data.loading.epoch_batches`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

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
