"""The harness's models by name (``--arch``), built by :func:`build_model` from :class:`resnets.ResNet`.

=================  ==========  ===========================  ==============  ======  ========  ==============
arch               block       widths x blocks              stem            short-  params    for
                                                                            cut     (bn)
=================  ==========  ===========================  ==============  ======  ========  ==============
``resnet``         basic       config's (32,64,128) x 1     3x3, stride     B                 28x28 (default)
                                                            config's (2)
``resnet20/32/56`` basic       (16,32,64) x n, n = 3/5/9    3x3             A       269,722   CIFAR, 32x32
``resnet18/34``    basic       (64..512) x (2,2,2,2) /      7x7 + max-pool  B       11.69M /  ImageNet
                               (3,4,6,3)                                            21.80M
``resnet50/101``   bottleneck  (64..512) x (3,4,6,3) /      7x7 + max-pool  B       25.56M /  ImageNet
                               (3,4,23,3)                                           44.55M
``resnet18_cifar``  basic      as resnet18 / resnet50       3x3 stride 1,   B                 CIFAR, 32x32
``resnet50_cifar``  bottleneck                              no max-pool
=================  ==========  ===========================  ==============  ======  ========  ==============

``resnet20/32/56`` are He et al. (2016)'s CIFAR networks (Sec. 4.2: 6n+2 layers, shortcut "A": identity, with
zero channels appended and stride-2 subsampling where the shape changes; 269,722 parameters for resnet20 with
10 classes, their "0.27M"). ``resnet18/34/50/101`` are torchvision's (same blocks, stride on the bottleneck's 3x3
conv, projection shortcuts; the counts above, for 1000 classes, equal torchvision's exactly); the ``_cifar``
variants swap the ImageNet stem for a 3x3 stride-1 conv without max-pool (32x32 inputs keep 32x32 in the first
stage). Parameter counts are for ``norm="bn"``; GN, LN and IN have the same (a per-channel gamma and beta).
``vgg`` (Figure 3's network without residuals, shaped by the config's widths and blocks) is
:class:`groupnorm.experiments.models.vgg.VGG`. ``resnet3d`` (the video task's 3D ResNet on (N, C, T, H, W) clips,
shaped by the config's widths, blocks and strides) is :class:`groupnorm.experiments.models.resnet3d.ResNet3d`.
"""
from __future__ import annotations

import importlib

from torch import nn

from .archs import ARCHS, DEFAULT_ARCH, arch_shape
from .resnets import BasicBlock, Bottleneck, ResNet

__all__ = ["ARCHS", "DEFAULT_ARCH", "ResNet", "BasicBlock", "Bottleneck", "arch_shape", "build_model",
           "resnet20", "resnet32", "resnet56", "resnet18", "resnet34", "resnet50", "resnet101", "resnet18_cifar", "resnet50_cifar"]


def build_model(arch: str, norm: str, in_channels: int, num_classes: int, *, groups: int | None = 32,
                group_size: int | None = None, workers: int = 1, widths: tuple | None = None,
                blocks: tuple | None = None, stem_stride: int | None = None,
                first_stride: int | None = None, **task_kw) -> nn.Module:
    """The model ``arch`` (a key of ``ARCHS``) for (N, in_channels, H, W) images and ``num_classes`` classes.

    ``norm``, ``groups``, ``group_size`` and ``workers`` (emulated workers of per-worker BN) go to every norm
    (:func:`groupnorm.nn.make_norm`). ``widths``, ``blocks``, ``stem_stride`` and ``first_stride`` shape the
    archs that take them from the run's config (``resnet``: all four, required; ``vgg``: widths and blocks);
    the named ResNets fix them, and passing one is an error. The arch's module (``ARCHS[arch].module``) builds
    it with its ``build`` function. ``task_kw``: the dense tasks' ``head_norm``, ``head_workers`` and
    ``masked_stats`` (:func:`.backbone.dense_parts`).
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    a = ARCHS[arch]
    given = {k: v for k, v in (("widths", widths), ("blocks", blocks), ("stem_stride", stem_stride),
                               ("first_stride", first_stride)) if v is not None}
    extra = sorted(set(given) - set(a.config_fields))
    if extra:
        raise ValueError(f"arch {arch!r} fixes {', '.join(extra)}; got {given}")
    missing = [f for f in a.config_fields if f not in given]
    if missing:
        raise ValueError(f"arch {arch!r} needs {', '.join(missing)} (got {given})")
    module = importlib.import_module(f"{__name__}.{a.module}")
    if task_kw and a.task == "classification":
        raise ValueError(f"arch {arch!r} is a classifier; {', '.join(sorted(task_kw))} apply to the dense tasks")
    return module.build(a, norm, in_channels, num_classes, given, groups=groups, group_size=group_size,
                        workers=workers, **task_kw)


def _named(arch: str):
    default_classes = ARCHS[arch].num_classes

    def constructor(norm: str = "gn", *, in_channels: int = 3, num_classes: int = default_classes,
                    **kwargs) -> ResNet:
        return build_model(arch, norm, in_channels, num_classes, **kwargs)

    constructor.__name__ = constructor.__qualname__ = arch
    constructor.__doc__ = (f"``build_model({arch!r}, norm, in_channels, num_classes, **kwargs)``: see the module "
                           f"table (defaults: 3 input channels, {default_classes} classes). ``kwargs``: groups, "
                           f"group_size, workers.")
    return constructor


resnet20 = _named("resnet20")
resnet32 = _named("resnet32")
resnet56 = _named("resnet56")
resnet18 = _named("resnet18")
resnet34 = _named("resnet34")
resnet50 = _named("resnet50")
resnet101 = _named("resnet101")
resnet18_cifar = _named("resnet18_cifar")
resnet50_cifar = _named("resnet50_cifar")
