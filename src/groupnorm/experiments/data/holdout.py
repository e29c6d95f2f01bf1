"""Held-out training images for choosing hyper-parameters, never the validation images that are reported.

The learning-rate sweep (``--experiment lrsweep``) must not look at the test-split images whose errors the
report shows. :func:`holdout_split` cuts the training split into the rest and ``holdout`` held-out images (a
fixed, seeded draw, the same for every run); a run with ``holdout=True`` (RunConfig) trains on a subset of the
rest and validates on a subset of the held-out images (``data.load_data``).

The same split as an MNIST-format directory (``train-*``: the rest, ``t10k-*``: the held-out images), for any
other tool::

    python -m groupnorm.experiments.data.holdout SRC DST [--holdout 10000] [--seed 0]
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import torch

from .idx import SPLIT_FILES, load_split, write_idx
from .split import Split


HOLDOUT_IMAGES = 10000  # held out of Fashion-MNIST's 60,000 training images (at most half of a smaller split)


def holdout_split(train: Split, holdout: int | None = None, seed: int = 0) -> tuple[Split, Split]:
    """(rest, held): ``train`` cut into ``len - holdout`` and ``holdout`` images, a seeded uniform draw, each
    part in the original order. ``holdout`` defaults to ``HOLDOUT_IMAGES`` or half of a smaller split."""
    n = len(train)
    if holdout is None:
        holdout = min(HOLDOUT_IMAGES, n // 2)
    if isinstance(holdout, bool) or not isinstance(holdout, int) or not 0 < holdout < n:
        raise ValueError(f"holdout={holdout!r} must be an integer from 1 to {n - 1} (the training split holds "
                         f"{n} images)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return train.take(perm[holdout:].sort().values), train.take(perm[:holdout].sort().values)


def make_holdout(src: str, dst: str, holdout: int = HOLDOUT_IMAGES, seed: int = 0) -> tuple[int, int]:
    """Write DST (see the module docstring); return (training images, held-out images)."""
    rest, held = holdout_split(load_split(src, "train"), holdout, seed)
    os.makedirs(dst, exist_ok=True)
    for split, part in (("train", rest), ("test", held)):
        img_name, lab_name = SPLIT_FILES[split]
        images = part.images[:, 0] if part.images.shape[1] == 1 else part.images  # IDX: (N, H, W) gray images
        write_idx(os.path.join(dst, img_name + ".gz"), images.numpy())
        write_idx(os.path.join(dst, lab_name + ".gz"), part.labels.numpy().astype(np.uint8))
    return len(rest), len(held)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m groupnorm.experiments.data.holdout", description=__doc__.split("\n")[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--holdout", type=int, default=HOLDOUT_IMAGES)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    n_train, n_held = make_holdout(a.src, a.dst, a.holdout, a.seed)
    print(f"{a.dst}: {n_train} training images, {n_held} held-out images (as the test split)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
