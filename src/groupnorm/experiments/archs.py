"""The harness's architectures by name, as data (no torch): what each fixes of
:class:`groupnorm.experiments.resnets.ResNet`. The table with parameter counts is in
:mod:`groupnorm.experiments.models`, which builds them."""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_ARCH = "resnet_small"  # the small ResNet for 28x28 images, shaped by the run's config


@dataclass(frozen=True)
class Arch:
    """A named architecture: the :class:`ResNet` choices it fixes (None: taken from the run's config)."""

    block: str
    widths: tuple | None
    blocks: tuple | None
    stem: str
    shortcut: str
    stem_stride: int | None
    num_classes: int        # the default of its named constructor (resnet50(): 1000)


_IMAGENET_WIDTHS = (64, 128, 256, 512)
ARCHS = {
    DEFAULT_ARCH: Arch("basic", None, None, "3x3", "B", None, 10),
    "resnet20": Arch("basic", (16, 32, 64), (3, 3, 3), "3x3", "A", 1, 10),
    "resnet32": Arch("basic", (16, 32, 64), (5, 5, 5), "3x3", "A", 1, 10),
    "resnet56": Arch("basic", (16, 32, 64), (9, 9, 9), "3x3", "A", 1, 10),
    "resnet18": Arch("basic", _IMAGENET_WIDTHS, (2, 2, 2, 2), "7x7", "B", None, 1000),
    "resnet34": Arch("basic", _IMAGENET_WIDTHS, (3, 4, 6, 3), "7x7", "B", None, 1000),
    "resnet50": Arch("bottleneck", _IMAGENET_WIDTHS, (3, 4, 6, 3), "7x7", "B", None, 1000),
    "resnet101": Arch("bottleneck", _IMAGENET_WIDTHS, (3, 4, 23, 3), "7x7", "B", None, 1000),
    "resnet18_cifar": Arch("basic", _IMAGENET_WIDTHS, (2, 2, 2, 2), "3x3", "B", 1, 10),
    "resnet50_cifar": Arch("bottleneck", _IMAGENET_WIDTHS, (3, 4, 6, 3), "3x3", "B", 1, 10),
}


def arch_shape(arch: str, widths=None, blocks=None) -> dict:
    """``{"widths": [...], "blocks": [...]}`` of ``arch`` as results rows record them (``resnet_small``: the
    given ``widths`` and ``blocks``)."""
    a = ARCHS[arch]
    return dict(widths=list(a.widths if a.widths is not None else widths),
                blocks=list(a.blocks if a.blocks is not None else blocks))
