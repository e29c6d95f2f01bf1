"""A data directory for choosing hyper-parameters: the training split cut into "train" and a held-out "test".

The learning-rate sweep (docs/results/README.md) must not look at the validation images whose errors are
reported. This writes an MNIST-format directory whose ``train-*`` files hold the training split minus
``holdout`` images and whose ``t10k-*`` files hold those ``holdout`` images (a fixed, seeded draw), so any
``groupnorm reproduce --data-dir DST`` validates on training images only::

    python -m groupnorm.experiments.holdout SRC DST [--holdout 10000] [--seed 0]
"""
from __future__ import annotations

import argparse
import gzip
import os
import struct

import numpy as np
import torch

from .data import SPLIT_FILES, load_split


def write_idx(path: str, array: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file (magic ``00 00 08 D``, big-endian sizes)."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    head = bytes([0, 0, 0x08, a.ndim]) + struct.pack(">" + "I" * a.ndim, *a.shape)
    with gzip.open(path, "wb") as f:
        f.write(head + a.tobytes())


def make_holdout(src: str, dst: str, holdout: int = 10000, seed: int = 0) -> tuple[int, int]:
    """Write DST (see the module docstring); return (training images, held-out images)."""
    train = load_split(src, "train")
    n = len(train)
    if not 0 < holdout < n:
        raise ValueError(f"holdout={holdout} must be between 1 and {n - 1} (the training split of {src!r} "
                         f"holds {n} images)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held, rest = perm[:holdout].sort().values, perm[holdout:].sort().values
    os.makedirs(dst, exist_ok=True)
    for split, idx in (("train", rest), ("test", held)):
        img_name, lab_name = SPLIT_FILES[split]
        write_idx(os.path.join(dst, img_name + ".gz"), train.images[idx].numpy())
        write_idx(os.path.join(dst, lab_name + ".gz"), train.labels[idx].numpy().astype(np.uint8))
    return len(rest), len(held)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m groupnorm.experiments.holdout", description=__doc__.split("\n")[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--holdout", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    n_train, n_held = make_holdout(a.src, a.dst, a.holdout, a.seed)
    print(f"{a.dst}: {n_train} training images, {n_held} held-out images (as the test split)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
