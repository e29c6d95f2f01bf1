"""Backbones of the detectors and the U-Net: a harness ResNet (``--arch``) without its classifier, its
classification weights loaded, and masked GN statistics over a padded batch.

:class:`Backbone` keeps a ResNet's ``stem`` and ``layers`` (same attribute names, so the classifier's
state_dict loads without renaming) and returns the stem's output and the output of every stage, finest first,
each with its stride. With the detection shape ``DETECTION_SHAPE`` (widths 32, 64, 128, one basic block each,
stem stride 2, first stage stride 2) a ``(N, 1, H, W)`` batch gives features at strides 2 (stem), 4, 8 and 16
with 32, 32, 64 and 128 channels.

Pre-training (the paper's ImageNet pre-training, at our scale) is the harness's Fashion-MNIST classification run
with the same arch, norm and shape: :func:`load_classifier_weights` loads that model's state_dict (its ``fc.*``
dropped). A BN classifier loads into a ``bn-frozen`` backbone (BN*: its running statistics become the frozen
ones), a ``bn`` one (fine-tuned BN) or, in one process, SyncBN (``bn`` with one worker).

:func:`masked_group_norms` makes every GroupNorm of a module take ``mask=`` (``groupnorm.functional``) within a
``with`` block: the batch's padding mask (N, 1, Hp, Wp) subsampled to each layer's input, ``mask[..., ::s, ::s]``
at stride ``s = Hp / h`` (a position is real when the pixel at its top-left corner is, as ``ceil(h / s)`` real
rows of a feature map at stride s), so padded positions stay out of GN's statistics.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from groupnorm.nn import GroupNorm

from . import build_model
from .archs import ARCHS

__all__ = ["DETECTION_SHAPE", "Backbone", "build_backbone", "dense_parts", "load_classifier_weights", "mask_at",
           "masked_group_norms"]

DETECTION_SHAPE = dict(widths=(32, 64, 128), blocks=(1, 1, 1), stem_stride=2, first_stride=2)
_PROBE_SIDE = 64  # the side of the input the strides and channels are measured on


class Backbone(nn.Module):
    """A ResNet's stem and residual blocks: ``(N, C_in, H, W)`` -> ``[(N, C_i, H / s_i, W / s_i)]``, the stem's
    output then each stage's, finest first. ``strides`` and ``channels`` list ``s_i`` and ``C_i``; ``norm``,
    ``workers`` and ``groups`` are the norm it was built with (the necks reuse them)."""

    def __init__(self, resnet: nn.Module, norm: str, workers: int = 1, groups: int | None = 32):
        super().__init__()
        self.stem, self.layers = resnet.stem, resnet.layers
        self.norm, self.workers, self.groups = norm, workers, groups
        self.in_channels = next(m for m in self.stem.modules() if isinstance(m, nn.Conv2d)).in_channels
        was = self.training
        self.eval()
        with torch.no_grad():
            probe = torch.zeros(max(workers, 1), self.in_channels, _PROBE_SIDE, _PROBE_SIDE)
            x = self.stem(probe)
            sizes, ends = [x.shape], []
            for i, block in enumerate(self.layers):
                x = block(x)
                sizes.append(x.shape)
            for i in range(1, len(sizes)):  # a block ends its stage if the next one changes the resolution
                if i == len(sizes) - 1 or sizes[i + 1][-1] != sizes[i][-1]:
                    ends.append(i - 1)
        self.train(was)
        self.stage_ends = tuple(ends)
        self.strides = (_PROBE_SIDE // sizes[0][-1],) + tuple(_PROBE_SIDE // sizes[i + 1][-1] for i in ends)
        self.channels = (sizes[0][1],) + tuple(sizes[i + 1][1] for i in ends)

    def forward(self, x: torch.Tensor) -> list:
        x = self.stem(x)
        out = [x]
        for i, block in enumerate(self.layers):
            x = block(x)
            if i in self.stage_ends:
                out.append(x)
        return out


def build_backbone(arch: str = "resnet", norm: str = "gn", *, groups: int | None = 32, workers: int = 1,
                   in_channels: int = 1, **shape) -> Backbone:
    """The :class:`Backbone` of the harness's ``arch`` (``groupnorm.experiments.models.build_model``) with
    ``norm`` (a ``make_norm`` name; SyncBN in one process is ``bn`` with ``workers=1``). ``shape``: the fields
    ``arch`` takes from a config (for ``resnet``: ``DETECTION_SHAPE`` by default)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    if ARCHS[arch].module != "resnets":
        raise ValueError(f"arch {arch!r} has no residual stages to serve as a backbone; choose a ResNet")
    fields = ARCHS[arch].config_fields
    shape = {**{k: v for k, v in DETECTION_SHAPE.items() if k in fields}, **shape}
    resnet = build_model(arch, norm, in_channels, 10, groups=groups, workers=workers, **shape)
    return Backbone(resnet, norm, workers, groups)


def dense_parts(norm: str, in_channels: int, shape: dict, *, groups: int | None = 32, workers: int = 1,
                head_norm: str | None = None, head_workers: int | None = None) -> tuple:
    """(backbone, head norm, head workers) of a dense task's model, as the archs' ``build`` functions take them
    (:mod:`groupnorm.experiments.models.archs`): the ``resnet`` backbone shaped by ``shape`` with ``norm`` and
    ``workers``; the heads' norm ``head_norm`` (None: the backbone's; ``syncbn``: BN over the whole batch, one
    statistics group) with ``head_workers`` groups (None: ``workers``)."""
    backbone = build_backbone("resnet", norm, groups=groups, workers=workers, in_channels=in_channels, **shape)
    head = norm if head_norm is None else head_norm
    hw = workers if head_workers is None else head_workers
    if head == "syncbn":
        head, hw = "bn", 1
    return backbone, head, hw


def load_classifier_weights(backbone: Backbone, state_dict: dict) -> None:
    """Load a harness classifier's ``state_dict`` (same arch, shape and norm family) into ``backbone``: every
    key but ``fc.*`` must match (ValueError naming the missing and unexpected keys otherwise)."""
    sd = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    own = backbone.state_dict()
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    if missing or unexpected:
        raise ValueError(f"the classifier's weights do not fit this backbone (norm {backbone.norm!r}): missing "
                         f"{missing[:6]}{' ...' if len(missing) > 6 else ''}, unexpected "
                         f"{unexpected[:6]}{' ...' if len(unexpected) > 6 else ''}")
    bad = [k for k in sd if sd[k].shape != own[k].shape]
    if bad:
        raise ValueError(f"the classifier's weights do not fit this backbone: shapes differ at {bad[:6]} (e.g. "
                         f"{bad[0]}: {tuple(sd[bad[0]].shape)} vs {tuple(own[bad[0]].shape)})")
    backbone.load_state_dict(sd)


def mask_at(pad_mask: torch.Tensor, size) -> torch.Tensor:
    """The padding mask (N, 1, Hp, Wp) at a feature map of ``size`` (h, w): ``pad_mask[..., ::s, ::s]``,
    ``s = Hp / h`` (module doc)."""
    hp, wp = pad_mask.shape[-2:]
    h, w = int(size[0]), int(size[1])
    if hp % h or wp % w or hp // h != wp // w:
        raise ValueError(f"a feature map of size {(h, w)} is not the padded batch {(hp, wp)} at one integer stride")
    s = hp // h
    return pad_mask[..., ::s, ::s]


@contextlib.contextmanager
def masked_group_norms(module: nn.Module, pad_mask: torch.Tensor | None):
    """Within the block, every ``GroupNorm`` in ``module`` is called with ``mask=`` the padding mask at its
    input's size (module doc). Nothing changes when ``pad_mask`` is None or has no padded position."""
    if pad_mask is None or bool(pad_mask.all()):
        yield
        return
    cache: dict = {}

    def hook(_, args, kwargs):
        size = tuple(args[0].shape[-2:])
        if args[0].shape[0] != pad_mask.shape[0]:
            raise ValueError(f"a GroupNorm input of batch {args[0].shape[0]} under a padding mask of batch "
                             f"{pad_mask.shape[0]}")
        if size not in cache:
            cache[size] = mask_at(pad_mask, size)
        return args, {**kwargs, "mask": cache[size]}

    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in module.modules()
               if isinstance(m, GroupNorm)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
