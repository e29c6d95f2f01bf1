"""ResNets for 28x28 single-channel images, taking the normalization by name (``groupnorm.nn.make_norm``).

Architecture (pre-GN-paper standard ResNet with basic blocks, He et al. 2016)::

    stem:   conv3x3(1 -> w0, stride s) - norm - ReLU                    28x28 -> 28/s
    stage i (widths w0, w1, ...; blocks per stage d_i; stride 2 from the second stage on, and ``first_stride``
             for the first stage):
        block:  conv3x3 - norm - ReLU - conv3x3 - norm(gamma = 0) ; + shortcut ; ReLU
                shortcut = identity, or conv1x1(stride) - norm when the shape changes
    head:   global average pool - linear(w_last -> 10)

As in the GN paper, every norm's gamma starts at 1 except the last norm of each residual block, whose gamma
starts at 0 (so each block starts as the identity). Every norm is built with the ReLU that follows it
(``make_norm``'s norm-with-activation modules), and a block's end, ReLU(norm(out) + shortcut), is one call
with the shortcut as the residual, whatever the norm (GN/LN/IN fuse all three in one pass over memory). With ``norm="gn+ws"`` every convolution is weight-standardized.
Convolutions have no bias (the norms' beta plays that role), except with ``norm="none"``.

The default width (32, 64, 128) is the smallest that lets GN use 32 groups in every layer with at least one
channel per group, and 1..64 channels per group across the network (Table 3).
"""
from __future__ import annotations

from torch import nn

import groupnorm.nn as gnn
from groupnorm.nn.factory import make_norm, uses_weight_standardization

from .data import NUM_CLASSES


def _conv_class(norm: str):
    if uses_weight_standardization(norm):
        return gnn.WSConv2d
    return nn.Conv2d


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm_kw: dict, conv):
        super().__init__()
        bias = norm_kw["name"] == "none"
        self.conv1 = conv(cin, cout, 3, stride=stride, padding=1, bias=bias)
        self.norm1 = make_norm(num_channels=cout, activation="relu", **norm_kw)
        self.conv2 = conv(cout, cout, 3, stride=1, padding=1, bias=bias)
        self.norm2 = make_norm(num_channels=cout, activation="relu", **norm_kw)  # relu(norm2(out) + shortcut)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(conv(cin, cout, 1, stride=stride, bias=bias),
                                          make_norm(num_channels=cout, **norm_kw))

    def forward(self, x):
        out = self.conv2(self.norm1(self.conv1(x)))
        sc = x if self.shortcut is None else self.shortcut(x)
        return self.norm2(out, residual=sc)


class ResNet(nn.Module):
    """ResNet for (N, 1, 28, 28) inputs -> (N, 10) logits; see the module docstring.

    Args:
        norm: a ``make_norm`` name (bn, gn, gn+ws, ln, in, bn-frozen, none).
        widths: channels of the stem and of each stage.
        blocks: residual blocks per stage (same length as ``widths``).
        groups, group_size: GN's G or channels per group K.
        workers: emulated workers for per-worker BN statistics.
        stem_stride: stride of the stem conv (2 halves the resolution and the cost).
        first_stride: stride of the first stage's first block (2: the first stage at half the stem's
            resolution, for wide-but-cheap networks: 64 channels at 7x7 cost what 32 do at 14x14).
    """

    def __init__(self, norm: str = "gn", widths=(32, 64, 128), blocks=(1, 1, 1), *, groups: int | None = 32,
                 group_size: int | None = None, workers: int = 1, stem_stride: int = 1, in_channels: int = 1,
                 num_classes: int = NUM_CLASSES, first_stride: int = 1):
        super().__init__()
        if len(widths) != len(blocks) or not widths:
            raise ValueError(f"widths={tuple(widths)} and blocks={tuple(blocks)} must be non-empty, same length")
        norm_kw = dict(name=norm, groups=groups, group_size=group_size, workers=workers)
        conv = _conv_class(norm)
        bias = norm == "none"
        self.stem = nn.Sequential(conv(in_channels, widths[0], 3, stride=stem_stride, padding=1, bias=bias),
                                  make_norm(num_channels=widths[0], activation="relu", **norm_kw))
        layers, cin = [], widths[0]
        for i, (w, d) in enumerate(zip(widths, blocks)):
            for j in range(d):
                stride = (2 if i > 0 else first_stride) if j == 0 else 1
                layers.append(BasicBlock(cin, w, stride, norm_kw, conv))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)
        self._init(norm)

    def _init(self, norm: str) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for block in self.layers:  # the paper's gamma init: 0 for the last norm of each residual block
            w = getattr(block.norm2, "weight", None)
            if w is not None:
                nn.init.zeros_(w)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(x.mean(dim=(2, 3)))
