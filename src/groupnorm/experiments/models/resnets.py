"""Residual networks (He et al. 2016) with the normalization by name (``groupnorm.nn.make_norm``).

One class, :class:`ResNet`, builds every architecture of :mod:`groupnorm.experiments.models` from a few
choices (shapes for an (N, C_in, H, W) input)::

    stem "3x3":   conv3x3(C_in -> w0, stride s) - norm - ReLU                         H -> H/s
    stem "7x7":   conv7x7(C_in -> w0, stride 2, pad 3) - norm - ReLU - maxpool3x3(stride 2, pad 1)   H -> H/4
    stage i (widths w_i, d_i blocks; stride 2 in the first block of every stage after the first, and
             ``first_stride`` (default 1) in the first stage's):
        basic:      conv3x3(stride) - norm - ReLU - conv3x3 - norm(gamma=0)             ; out channels w_i
        bottleneck: conv1x1 - norm - ReLU - conv3x3(stride) - norm - ReLU - conv1x1(x4) - norm(gamma=0)
                    ; out channels 4 w_i (the stride on the 3x3 conv, as torchvision's "ResNet v1.5")
        block end:  ReLU(last norm + shortcut)
        shortcut:   identity when the shape is kept; else "B": conv1x1(stride) - norm (torchvision's
                    downsample), or "A": parameter-free, x[:, :, ::s, ::s] with zero channels appended
                    (He et al.'s CIFAR networks)
    head:         global average pool - linear(-> num_classes)

The basic and bottleneck blocks, the "7x7" stem and shortcut "B" are torchvision's: with ``norm="bn"`` the
parameter counts equal torchvision's resnet18/34/50/101 (tested). As in the GN paper, every norm's gamma starts
at 1 except each residual block's last norm, whose gamma starts at 0 (each block starts as the identity).
Every norm is built with the ReLU that follows it (``make_norm``'s norm-with-activation modules; GN/LN/IN run
norm + ReLU in one kernel), and a block's end, ReLU(norm(out) + shortcut), is one call with the shortcut as the
residual, whatever the norm (GN/LN/IN fuse all three in one pass over memory instead of three). With ``norm="gn+ws"`` every convolution is weight-standardized. Convolutions
have no bias (the norms' beta plays that role), except with ``norm="none"``. Init: Kaiming-normal (fan-out)
convolutions, the linear layer N(0, 0.01) with zero bias (Goyal et al., which the GN paper follows).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

import groupnorm.nn as gnn
from groupnorm.nn.factory import make_norm, uses_weight_standardization

STEMS = ("3x3", "7x7")
BLOCKS = ("basic", "bottleneck")
SHORTCUTS = ("A", "B")


def _conv_class(norm: str):
    if uses_weight_standardization(norm):
        return gnn.WSConv2d
    return nn.Conv2d


class _Block(nn.Module):
    """What the two blocks share: the last norm (gamma 0, fused with the shortcut and ReLU where it can be)
    and the shortcut. Subclasses build their convs and norms, call :meth:`_init_end` and end with :meth:`_end`."""

    def _init_end(self, name: str, cin: int, cout: int, stride: int, norm_kw: dict, conv, shortcut: str) -> None:
        """Registers the last norm as ``name`` (built with its ReLU: it runs relu(norm(out) + shortcut) in one
        call, which GN/LN/IN fuse in one pass over memory), then the shortcut."""
        bias = norm_kw["name"] == "none"
        setattr(self, name, make_norm(num_channels=cout, activation="relu", **norm_kw))
        self.shortcut = None
        self.pad_shortcut = None  # option A: (stride, channels to append)
        if stride != 1 or cin != cout:
            if shortcut == "B":
                self.shortcut = nn.Sequential(conv(cin, cout, 1, stride=stride, bias=bias),
                                              make_norm(num_channels=cout, **norm_kw))
            elif cout < cin:
                raise ValueError(f"shortcut 'A' cannot map {cin} to {cout} channels (it only appends zeros)")
            else:
                self.pad_shortcut = (stride, cout - cin)

    def _short(self, x):
        if self.shortcut is not None:
            return self.shortcut(x)
        if self.pad_shortcut is not None:
            s, extra = self.pad_shortcut
            return F.pad(x[:, :, ::s, ::s], (0, 0, 0, 0, 0, extra))
        return x

    def _end(self, last: nn.Module, out, x):
        return last(out, residual=self._short(x))


class BasicBlock(_Block):
    """conv3x3(stride) - norm - ReLU - conv3x3 - norm2 (gamma 0); ReLU(+ shortcut). (N, cin, H, W) ->
    (N, cout, H/stride, W/stride)."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, norm_kw: dict, conv, shortcut: str = "B"):
        super().__init__()
        bias = norm_kw["name"] == "none"
        self.conv1 = conv(cin, width, 3, stride=stride, padding=1, bias=bias)
        self.norm1 = make_norm(num_channels=width, activation="relu", **norm_kw)
        self.conv2 = conv(width, width, 3, stride=1, padding=1, bias=bias)
        self._init_end("norm2", cin, width, stride, norm_kw, conv, shortcut)

    @property
    def last_norm(self) -> nn.Module:
        return self.norm2

    def forward(self, x):
        return self._end(self.norm2, self.conv2(self.norm1(self.conv1(x))), x)


class Bottleneck(_Block):
    """conv1x1 - norm - ReLU - conv3x3(stride) - norm - ReLU - conv1x1 - norm3 (gamma 0); ReLU(+ shortcut).
    (N, cin, H, W) -> (N, 4 width, H/stride, W/stride)."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, norm_kw: dict, conv, shortcut: str = "B"):
        super().__init__()
        bias = norm_kw["name"] == "none"
        cout = width * self.expansion
        self.conv1 = conv(cin, width, 1, bias=bias)
        self.norm1 = make_norm(num_channels=width, activation="relu", **norm_kw)
        self.conv2 = conv(width, width, 3, stride=stride, padding=1, bias=bias)
        self.norm2 = make_norm(num_channels=width, activation="relu", **norm_kw)
        self.conv3 = conv(width, cout, 1, bias=bias)
        self._init_end("norm3", cin, cout, stride, norm_kw, conv, shortcut)

    @property
    def last_norm(self) -> nn.Module:
        return self.norm3

    def forward(self, x):
        out = self.conv3(self.norm2(self.conv2(self.norm1(self.conv1(x)))))
        return self._end(self.norm3, out, x)


class ResNet(nn.Module):
    """(N, in_channels, H, W) images -> (N, num_classes) logits; see the module docstring.

    Args:
        norm: a ``make_norm`` name (bn, gn, gn+ws, ln, in, bn-frozen, none).
        widths: channels of the stem and of each stage's blocks (a bottleneck's inner width; it outputs 4x).
        blocks: residual blocks per stage (same length as ``widths``).
        groups, group_size: GN's G or channels per group K.
        workers: emulated workers for per-worker BN statistics.
        stem_stride: stride of the stem conv (2 halves the resolution and the cost; the "7x7" stem's is 2).
        first_stride: stride of the first stage's first block (2: the first stage at half the stem's
            resolution, for wide-but-cheap networks: 64 channels at 7x7 cost what 32 do at 14x14).
        in_channels, num_classes: the data's image channels and classes.
        block: "basic" or "bottleneck". stem: "3x3" or "7x7" (the ImageNet stem, with max-pool).
        shortcut: "B" (projection) or "A" (zero-padding) where a block changes the shape.

    The default (widths 32, 64, 128, one basic block each) is the harness's small ResNet for 28x28 images: the
    smallest width that lets GN use 32 groups in every layer with at least one channel per group, and 1..64
    channels per group across the network (Table 3).
    """

    def __init__(self, norm: str = "gn", widths=(32, 64, 128), blocks=(1, 1, 1), *, groups: int | None = 32,
                 group_size: int | None = None, workers: int = 1, stem_stride: int = 1, in_channels: int = 1,
                 num_classes: int = 10, block: str = "basic", stem: str = "3x3", shortcut: str = "B",
                 first_stride: int = 1):
        super().__init__()
        if len(widths) != len(blocks) or not widths:
            raise ValueError(f"widths={tuple(widths)} and blocks={tuple(blocks)} must be non-empty, same length")
        for name, value, allowed in (("block", block, BLOCKS), ("stem", stem, STEMS),
                                     ("shortcut", shortcut, SHORTCUTS)):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not one of {', '.join(allowed)}")
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        norm_kw = dict(name=norm, groups=groups, group_size=group_size, workers=workers)
        conv = _conv_class(norm)
        bias = norm == "none"
        if stem == "3x3":
            self.stem = nn.Sequential(conv(in_channels, widths[0], 3, stride=stem_stride, padding=1, bias=bias),
                                      make_norm(num_channels=widths[0], activation="relu", **norm_kw))
        else:
            self.stem = nn.Sequential(conv(in_channels, widths[0], 7, stride=stem_stride, padding=3, bias=bias),
                                      make_norm(num_channels=widths[0], activation="relu", **norm_kw),
                                      nn.MaxPool2d(3, stride=2, padding=1))
        cls = BasicBlock if block == "basic" else Bottleneck
        layers, cin = [], widths[0]
        for i, (w, d) in enumerate(zip(widths, blocks)):
            for j in range(d):
                stride = (2 if i > 0 else first_stride) if j == 0 else 1
                layers.append(cls(cin, w, stride, norm_kw, conv, shortcut))
                cin = w * cls.expansion
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)
        self._init()

    def _init(self) -> None:
        init_residual_net(self, nn.Conv2d)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(x.mean(dim=(2, 3)))


def build(arch, norm: str, in_channels: int, num_classes: int, shape: dict, **norm_kw) -> ResNet:
    """The :class:`ResNet` of ``arch`` (an :class:`~.archs.Arch`): its fixed shape, or the run's ``shape``
    (``widths``, ``blocks``, ``stem_stride``, ``first_stride``) where the arch takes it from the config."""
    return ResNet(norm, tuple(shape.get("widths", arch.widths)), tuple(shape.get("blocks", arch.blocks)),
                  stem_stride=shape.get("stem_stride", arch.stem_stride), first_stride=shape.get("first_stride", 1),
                  block=arch.block, stem=arch.stem, shortcut=arch.shortcut, in_channels=in_channels,
                  num_classes=num_classes, **norm_kw)


def init_residual_net(model: nn.Module, conv_type: type) -> None:
    """The initialization of the harness's residual networks (``model.layers`` of blocks with ``last_norm``,
    ``model.fc``): Kaiming-normal (fan out) convolutions of ``conv_type``, the paper's zero gamma for the last
    norm of each residual block, and a classifier drawn from N(0, 0.01^2) with zero bias."""
    for m in model.modules():
        if isinstance(m, conv_type):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for block in model.layers:
        w = getattr(block.last_norm, "weight", None)
        if w is not None:
            nn.init.zeros_(w)
    nn.init.normal_(model.fc.weight, std=0.01)
    nn.init.zeros_(model.fc.bias)
