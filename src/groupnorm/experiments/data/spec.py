"""Where the data is and how to read it (``--data-dir``, ``--dataset``, ...), without importing torch.

One definition of the data flags for every command (``groupnorm reproduce``, ``run_one``, ``diagnostics``), and
the :class:`DataSpec` that a sweep passes to its subprocesses as the same flags. :mod:`.loading` reads it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from .formats import FORMATS

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
DATASET_CHOICES = ("auto", *FORMATS)  # --dataset: "auto" (detect it) or a format of formats.FORMATS


def resolve_data_dir(data_dir: str | None = None) -> str:
    """``data_dir`` if given, else ``$GROUPNORM_DATA``, else the Debian Fashion-MNIST directory."""
    return data_dir or os.environ.get("GROUPNORM_DATA") or DEFAULT_DATA_DIR


@dataclass(frozen=True)
class DataSpec:
    """Where the data is and how to read it: what ``--data-dir``, ``--dataset``, ``--image-size`` and
    ``--data-workers`` say. None of it is part of a run's identity (as paths are not).

    ``image_size``: ImageFolder's crop side (default 224); ``loader_workers``: ImageFolder's decoding processes
    (default: min(8, CPU count)). Both ignored by the in-memory formats."""

    data_dir: str
    dataset: str = "auto"
    image_size: int | None = None
    loader_workers: int | None = None

    def __post_init__(self):
        if self.dataset not in DATASET_CHOICES:
            raise ValueError(f"dataset={self.dataset!r} is not one of {', '.join(DATASET_CHOICES)}")
        for name in ("image_size", "loader_workers"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < (1 if name == "image_size" else 0)):
                raise ValueError(f"{name}={v!r} must be a {'positive' if name == 'image_size' else 'non-negative'}"
                                 f" integer")

    def cli_args(self) -> list[str]:
        """The same spec as ``run_one`` arguments (for the subprocesses and torchrun ranks of a sweep)."""
        args = ["--data-dir", self.data_dir, "--dataset", self.dataset]
        if self.image_size is not None:
            args += ["--image-size", str(self.image_size)]
        if self.loader_workers is not None:
            args += ["--data-workers", str(self.loader_workers)]
        return args


def add_data_arguments(parser, required: bool = False) -> None:
    """``--data-dir``, ``--dataset``, ``--image-size``, ``--data-workers``: one definition for every command."""
    parser.add_argument("--data-dir", required=required, default=None,
                        help="the data set's directory: MNIST-format IDX files, CIFAR-10/100 (Python format), or "
                             "an ImageFolder train/<class>/ + val/<class>/ (default $GROUPNORM_DATA or "
                             f"{DEFAULT_DATA_DIR})")
    parser.add_argument("--dataset", choices=DATASET_CHOICES, default="auto",
                        help="the directory's format (default: detected)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="ImageFolder: side of the training crop and of the evaluation center crop (default "
                             "224)")
    parser.add_argument("--data-workers", type=int, default=None,
                        help="ImageFolder: DataLoader worker processes decoding images (default min(8, CPUs))")


def spec_from_args(args) -> DataSpec:
    return DataSpec(resolve_data_dir(args.data_dir), args.dataset, args.image_size, args.data_workers)


def as_spec(data: "DataSpec | str | None") -> DataSpec:
    return data if isinstance(data, DataSpec) else DataSpec(resolve_data_dir(data))
