"""The harness's architectures by name, in one map (no torch): what each fixes, what it takes from the run's
config, and which module of :mod:`groupnorm.experiments.models` builds it.

A new model is one entry of :data:`ARCHS` (and, for a new family, the module whose ``build`` makes it: see
:func:`groupnorm.experiments.models.build_model`). The table with parameter counts is in
:mod:`groupnorm.experiments.models`."""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_ARCH = "resnet"  # the small ResNet for 28x28 images, shaped by the run's config

SHAPE_FIELDS = ("widths", "blocks", "stem_stride", "first_stride")  # RunConfig fields that shape a model


@dataclass(frozen=True)
class Arch:
    """A named architecture. ``config_fields``: the ``SHAPE_FIELDS`` it takes from the run's config (the small
    ResNet and the VGG); the named ResNets take none and fix ``block``, ``widths``, ``blocks``, ``stem``,
    ``shortcut`` and ``stem_stride`` here. ``module``: the module of :mod:`groupnorm.experiments.models` whose
    ``build(arch, norm, in_channels, num_classes, shape, **norm_kw)`` makes it; ``task``: what its output is
    for (``classification``: one logit per class, :data:`groupnorm.experiments.data.formats.TASKS`; the dense
    tasks' ``build`` also takes ``head_norm``, ``head_workers`` and ``masked_stats``)."""

    block: str = "basic"
    widths: tuple | None = None
    blocks: tuple | None = None
    stem: str = "3x3"
    shortcut: str = "B"
    stem_stride: int = 1
    num_classes: int = 10        # the default of its named constructor (resnet50(): 1000)
    config_fields: tuple = ()
    module: str = "resnets"
    task: str = "classification"


_IMAGENET_WIDTHS = (64, 128, 256, 512)
ARCHS = {
    DEFAULT_ARCH: Arch(config_fields=SHAPE_FIELDS),
    "vgg": Arch(config_fields=("widths", "blocks"), module="vgg"),  # vgg.VGG, Figure 3 (no residuals)
    "resnet20": Arch("basic", (16, 32, 64), (3, 3, 3), "3x3", "A", 1, 10),
    "resnet32": Arch("basic", (16, 32, 64), (5, 5, 5), "3x3", "A", 1, 10),
    "resnet56": Arch("basic", (16, 32, 64), (9, 9, 9), "3x3", "A", 1, 10),
    "resnet18": Arch("basic", _IMAGENET_WIDTHS, (2, 2, 2, 2), "7x7", "B", 2, 1000),
    "resnet34": Arch("basic", _IMAGENET_WIDTHS, (3, 4, 6, 3), "7x7", "B", 2, 1000),
    "resnet50": Arch("bottleneck", _IMAGENET_WIDTHS, (3, 4, 6, 3), "7x7", "B", 2, 1000),
    "resnet101": Arch("bottleneck", _IMAGENET_WIDTHS, (3, 4, 23, 3), "7x7", "B", 2, 1000),
    "resnet18_cifar": Arch("basic", _IMAGENET_WIDTHS, (2, 2, 2, 2), "3x3", "B", 1, 10),
    "resnet50_cifar": Arch("bottleneck", _IMAGENET_WIDTHS, (3, 4, 6, 3), "3x3", "B", 1, 10),
    # resnet3d.ResNet3d: 3x3x3 basic blocks on (N, C, T, H, W) clips, shaped by the config (the video task)
    "resnet3d": Arch(num_classes=40, config_fields=SHAPE_FIELDS, module="resnet3d", task="video"),
    # dense tasks: a ``resnet`` backbone shaped by the config (models/backbone.py) under a task's model
    "centernet": Arch(config_fields=SHAPE_FIELDS, module="centernet", task="detection"),
    "two_stage": Arch(config_fields=SHAPE_FIELDS, module="two_stage", task="detection"),
    "unet": Arch(config_fields=SHAPE_FIELDS, module="unet", task="segmentation"),
}


def arch_shape(arch: str, widths=None, blocks=None) -> dict:
    """``{"widths": [...], "blocks": [...]}`` of ``arch`` as results rows record them (an arch shaped by the
    config: the given ``widths`` and ``blocks``)."""
    a = ARCHS[arch]
    return dict(widths=list(a.widths if a.widths is not None else widths),
                blocks=list(a.blocks if a.blocks is not None else blocks))
