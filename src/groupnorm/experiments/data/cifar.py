"""CIFAR-10 and CIFAR-100 in their official Python format, read and validated (every error names the file).

A directory (or its extracted ``cifar-10-batches-py`` / ``cifar-100-python`` subdirectory) holds::

    CIFAR-10:  data_batch_1 .. data_batch_5, test_batch, batches.meta (``label_names``), labels under ``labels``
    CIFAR-100: train, test, meta (``fine_label_names``), labels under ``fine_labels``

Each data file is a pickled dict with ``data``: uint8 (N, 3072), each row the 32x32 red plane, then green, then
blue, and N labels. Pickles are read with an unpickler that builds only plain containers and NumPy arrays (no
arbitrary code from a file). Images come back as uint8 (N, 3, 32, 32), labels as int64 (N,); :func:`load_cifar`
makes them the data set's (train, test) splits.
"""
from __future__ import annotations

import os
import pickle

import numpy as np
import torch

from .split import DataInfo, Split

SUBDIRS = ("cifar-10-batches-py", "cifar-100-python")
LAYOUTS = {  # name: (train files, test files, meta file, label key, class-names key)
    "cifar10": (tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "batches.meta", "labels",
                "label_names"),
    "cifar100": (("train",), ("test",), "meta", "fine_labels", "fine_label_names"),
}
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar")}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to build {module}.{name}")


def _root(directory: str) -> str:
    for sub in SUBDIRS:
        if os.path.isdir(os.path.join(directory, sub)):
            return os.path.join(directory, sub)
    return directory


def detect(directory: str) -> str | None:
    """"cifar10" or "cifar100" if ``directory`` (or its extracted subdirectory) has that layout's meta file."""
    root = _root(directory)
    for name, (_, _, meta, _, _) in LAYOUTS.items():
        if os.path.isfile(os.path.join(root, meta)):
            return name
    return None


def _load(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CIFAR file not found: {path}")
    try:
        with open(path, "rb") as f:
            obj = _SafeUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise ValueError(f"{path}: not a readable CIFAR pickle (truncated or corrupt?): {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _field(d: dict, key: str, path: str):
    if key not in d:
        raise ValueError(f"{path}: no {key!r} entry (has {sorted(map(str, d))})")
    return d[key]


def read_cifar(directory: str, name: str | None = None) -> dict:
    """The data set of ``directory``: dict(train=(images, labels), test=(images, labels), classes=[...]).

    ``name`` forces "cifar10" or "cifar100"; by default it is detected from the meta file present."""
    root = _root(directory)
    name = name or detect(directory)
    if name not in LAYOUTS:
        raise FileNotFoundError(f"{directory}: no CIFAR-10 'batches.meta' nor CIFAR-100 'meta' file found"
                                if name is None else f"unknown CIFAR layout {name!r}; choose cifar10 or cifar100")
    train_files, test_files, meta, label_key, names_key = LAYOUTS[name]
    meta_path = os.path.join(root, meta)
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in _field(_load(meta_path), names_key, meta_path)]
    if not classes:
        raise ValueError(f"{meta_path}: empty class list {names_key!r}")
    out = dict(classes=classes, name=name)
    for split, files in (("train", train_files), ("test", test_files)):
        images, labels = [], []
        for fname in files:
            path = os.path.join(root, fname)
            d = _load(path)
            data = np.asarray(_field(d, "data", path))
            lab = np.asarray(_field(d, label_key, path))
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
                raise ValueError(f"{path}: 'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
            if lab.shape != (data.shape[0],):
                raise ValueError(f"{path}: {label_key!r} has shape {lab.shape}, expected ({data.shape[0]},)")
            bad = (lab < 0) | (lab >= len(classes))
            if bad.any():
                raise ValueError(f"{path}: label {int(lab[bad][0])} outside the {len(classes)} classes of "
                                 f"{meta_path}")
            images.append(data.reshape(-1, 3, 32, 32))
            labels.append(lab.astype(np.int64))
        out[split] = (np.concatenate(images), np.concatenate(labels))
    return out


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


def load_cifar(data_dir: str, name: str | None = None) -> tuple[Split, Split]:
    """(train, test) :class:`Split` of a CIFAR directory: 3 channels, 32x32, normalized per channel with the
    mean and std of the training split's pixels (:func:`channel_stats`), the random crop zero-padded by 4."""
    d = read_cifar(data_dir, name)
    (xtr, ytr), (xte, yte) = d["train"], d["test"]
    mean, std = channel_stats(xtr)
    info = DataInfo(d["name"], tuple(d["classes"]), 3, (32, 32), mean, std, crop_pad=4)
    return (Split(torch.from_numpy(xtr), torch.from_numpy(ytr), info),
            Split(torch.from_numpy(xte), torch.from_numpy(yte), info))
