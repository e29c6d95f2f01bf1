"""A small 3D ResNet for clips (the video experiment's network, an I3D-like ResNet at our scale), with the
normalization by name (``groupnorm.nn.make_norm``).

Shapes for an (N, C_in, T, H, W) clip (NCDHW, or the same values in ``channels_last_3d`` memory)::

    stem:     conv3x3x3(C_in -> w0, stride (1, s, s)) - norm - ReLU             (N, w0, T, H/s, W/s)
    stage i (widths w_i, d_i basic blocks; the first block of every stage after the first strides
             (t, 2, 2), t = ``time_stride``, the first stage's (1, f, f), f = ``first_stride``):
        conv3x3x3(stride) - norm - ReLU - conv3x3x3 - norm(gamma=0); ReLU(+ shortcut)
        shortcut: identity when the shape is kept, else conv1x1x1(stride) - norm
    head:     global average pool over (T, H, W) - linear(-> num_classes)

The blocks are :class:`groupnorm.experiments.models.resnets.BasicBlock` built with 3D convolutions (its
projection shortcut, its last norm fused with the shortcut and the ReLU), so everything the 2D ResNets say about
norms holds here: every norm is built with the ReLU that follows it; GN/LN/IN run norm + ReLU (+ shortcut) in
one pass through the compiled kernels' 5-D paths (NCDHW and channels_last_3d, any strides of the residual);
``bn`` is per-worker BN over each worker's clips (statistics over (clips, T, H, W) per channel, the I3D
recipe's BN per GPU); ``gn+ws`` weight-standardizes every convolution (``WSConv3d``); convolutions have no bias
except with ``norm="none"``. Init as the 2D ResNets: Kaiming-normal (fan-out) convolutions, gamma 0 for each
block's last norm and 1 elsewhere, the linear layer N(0, 0.01) with zero bias.

Parameters (``norm`` other than ``none``; every norm has a per-channel gamma and beta)::

    27 C_in w0 + 2 w0                                       stem
    + sum over blocks (cin -> w): 27 cin w + 27 w^2 + 4 w   two convs, two norms
                                  [+ cin w + 2 w]           projection, where cin != w or the block strides
    + w_last K + K                                          head

(with ``norm="none"``: no norm parameters, a bias per convolution). The default, widths (32, 64, 128), one
block each, 1 input channel and 40 classes (10 item classes x 4 motion types), has 902,344.

Memory formats: ``torch.channels_last`` is for 4-D tensors only; a model and its clips go channels-last with
``torch.channels_last_3d`` (N, T, H, W, C strides), where GN takes the kernels' channels-last path.
"""
from __future__ import annotations

from torch import nn

import groupnorm.nn as gnn
from groupnorm.nn.factory import make_norm, uses_weight_standardization

from .resnets import BasicBlock, init_residual_net


def _stride(t: int, s: int):
    """A convolution's stride: the int 1 where nothing strides (the block then keeps its identity shortcut),
    else (t, s, s)."""
    return 1 if t == s == 1 else (t, s, s)


class ResNet3d(nn.Module):
    """(N, in_channels, T, H, W) clips -> (N, num_classes) logits; see the module docstring.

    Args:
        norm: a ``make_norm`` name (bn, gn, gn+ws, ln, in, bn-frozen, none).
        widths: channels of the stem and of each stage's blocks.
        blocks: basic blocks per stage (same length as ``widths``).
        groups, group_size: GN's G or channels per group K (clamped to a layer's channels).
        workers: emulated workers for per-worker BN (the batch of clips is cut into that many equal slices).
        stem_stride: spatial stride s of the stem conv.
        first_stride: spatial stride of the first stage's first block.
        time_stride: temporal stride of the first block of every later stage (1 keeps every frame).
        in_channels, num_classes: the clips' channels and classes.
    """

    def __init__(self, norm: str = "gn", widths=(32, 64, 128), blocks=(1, 1, 1), *, groups: int | None = 32,
                 group_size: int | None = None, workers: int = 1, stem_stride: int = 1, first_stride: int = 1,
                 time_stride: int = 2, in_channels: int = 1, num_classes: int = 40):
        super().__init__()
        widths, blocks = tuple(widths), tuple(blocks)
        if len(widths) != len(blocks) or not widths:
            raise ValueError(f"widths={widths} and blocks={blocks} must be non-empty, same length")
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes), ("stem_stride", stem_stride),
                            ("first_stride", first_stride), ("time_stride", time_stride)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        for name, values in (("widths", widths), ("blocks", blocks)):
            if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
                raise ValueError(f"{name}={values} must hold positive integers")
        norm_kw = dict(name=norm, groups=groups, group_size=group_size, workers=workers)
        conv = gnn.WSConv3d if uses_weight_standardization(norm) else nn.Conv3d
        bias = norm == "none"
        self.stem = nn.Sequential(conv(in_channels, widths[0], 3, stride=_stride(1, stem_stride), padding=1,
                                       bias=bias),
                                  make_norm(num_channels=widths[0], activation="relu", **norm_kw))
        layers, cin = [], widths[0]
        for i, (w, d) in enumerate(zip(widths, blocks)):
            for j in range(d):
                stride = (_stride(time_stride, 2) if i > 0 else _stride(1, first_stride)) if j == 0 else 1
                layers.append(BasicBlock(cin, w, stride, norm_kw, conv, shortcut="B"))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)
        self._init()

    def _init(self) -> None:
        init_residual_net(self, nn.Conv3d)

    def forward(self, x):
        if x.dim() != 5:
            raise ValueError(f"ResNet3d expects clips (N, C, T, H, W), got shape {tuple(x.shape)}")
        x = self.layers(self.stem(x))
        return self.fc(x.mean(dim=(2, 3, 4)))


def build(arch, norm: str, in_channels: int, num_classes: int, shape: dict, **norm_kw) -> ResNet3d:
    """The :class:`ResNet3d` for a harness arch entry ``arch`` and the run's ``shape`` (any of ``widths``,
    ``blocks``, ``stem_stride``, ``first_stride``; ``widths`` and ``blocks`` absent from it come from the arch
    where it fixes them, anything else from the class defaults). ``norm_kw``: ``groups``, ``group_size``,
    ``workers``. The signature of every model module's ``build`` (:func:`groupnorm.experiments.models.build_model`)."""
    kw = dict(shape)
    for name in ("widths", "blocks"):
        fixed = getattr(arch, name, None)
        if name not in kw and fixed is not None:
            kw[name] = fixed
    return ResNet3d(norm, in_channels=in_channels, num_classes=num_classes, **kw, **norm_kw)
