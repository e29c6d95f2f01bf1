"""The formats of a data directory, in one map: how each is recognized, read, and described to a user.

A new format is one entry of :data:`FORMATS` and the module that reads it: ``--dataset`` offers it, ``auto``
detects it (in the map's order), :func:`groupnorm.experiments.data.loading.read_dataset` reads it, and error
messages say what a directory of it holds. The reader modules are imported when a format is read, so this map
(and :mod:`.spec`, which takes the names from it) stays free of torch.

=============  ======================================================  =====================================
format         the directory holds                                     read by
=============  ======================================================  =====================================
``idx``        MNIST-format IDX files (MNIST, KMNIST, Fashion-MNIST)   :func:`.idx.load_split`
``cifar10``    CIFAR-10's Python pickles                               :func:`.cifar.load_cifar`
``cifar100``   CIFAR-100's Python pickles                              :func:`.cifar.load_cifar`
``imagefolder``  ``train/<class>/*`` and ``val/<class>/*`` images        :func:`.imagefolder.read_imagefolder`
=============  ======================================================  =====================================

``task`` says what a format's labels are for; every format here is ``classification`` (one label per image).
The ``detection`` and ``segmentation`` tasks make their canvases from an ``idx`` directory's items
(:mod:`.canvases`; boxes, instance masks and a semantic mask per canvas).
The ``video`` task reads any of them and moves their images in clips (:func:`.clips.load_clips`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

TASKS = ("classification", "video", "detection", "segmentation")  # what a format's labels, a model's output and an experiment's rows are for
DENSE_TASKS = ("detection", "segmentation")  # tasks trained on canvases (data.canvases) by training.dense


@dataclass(frozen=True)
class DataFormat:
    """One format: ``detect(dir)`` says whether ``dir`` holds it; ``read(spec)`` returns its (train, test)
    splits (``spec`` a :class:`~groupnorm.experiments.data.spec.DataSpec`); ``holds`` is what such a directory
    holds, in words (for the messages that ask for one)."""

    detect: Callable[[str], bool]
    read: Callable[[object], tuple]
    holds: str
    task: str = "classification"


def _idx_detect(d: str) -> bool:
    from .idx import SPLIT_FILES

    stem = SPLIT_FILES["train"][0]
    return any(os.path.isfile(os.path.join(d, n)) for n in (stem, stem + ".gz"))


def _idx_read(spec) -> tuple:
    from .idx import load_split

    return load_split(spec.data_dir, "train"), load_split(spec.data_dir, "test")


def _cifar(name: str) -> tuple[Callable, Callable]:
    def detect(d: str) -> bool:
        from .cifar import detect as which

        return which(d) == name

    def read(spec) -> tuple:
        from .cifar import load_cifar

        return load_cifar(spec.data_dir, name)

    return detect, read


def _imagefolder_read(spec) -> tuple:
    from .imagefolder import read_imagefolder

    return read_imagefolder(spec.data_dir, image_size=spec.image_size, loader_workers=spec.loader_workers)


FORMATS: dict[str, DataFormat] = {  # in the order ``auto`` tries them
    "idx": DataFormat(_idx_detect, _idx_read,
                      "MNIST-format train-images-idx3-ubyte[.gz] and the other three IDX files"),
    "cifar10": DataFormat(*_cifar("cifar10"),
                          "CIFAR-10's data_batch_1..5, test_batch and batches.meta (or the extracted "
                          "cifar-10-batches-py above them)"),
    "cifar100": DataFormat(*_cifar("cifar100"),
                           "CIFAR-100's train, test and meta (or the extracted cifar-100-python above them)"),
    "imagefolder": DataFormat(lambda d: os.path.isdir(os.path.join(d, "train")), _imagefolder_read,
                              "an ImageFolder directory: train/<class>/*.JPEG and val/<class>/*.JPEG"),
}


def detect_format(data_dir: str) -> str:
    """The first format of :data:`FORMATS` whose ``detect`` accepts ``data_dir``; a clear error if none does."""
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"data directory not found: {data_dir!r} (pass --data-dir DIR or set "
                                f"GROUPNORM_DATA; for Fashion-MNIST install Debian's dataset-fashion-mnist)")
    for name, fmt in FORMATS.items():
        if fmt.detect(data_dir):
            return name
    holds = [fmt.holds for fmt in FORMATS.values()]
    raise FileNotFoundError(f"{data_dir!r} holds no data set the harness knows: expected "
                            + ", ".join(holds[:-1]) + f", or {holds[-1]} (choose with --dataset)")
