"""A VGG-style network (no residual connections) for the GN paper's Figure 3 (``--experiment vgg``).

Figure 3 of the paper trains VGG-16 without normalization, with BN and with GN, and plots the 1st, 20th, 80th
and 99th percentiles of the responses of a late conv layer (conv5_3), taken *before* normalization and ReLU,
over training: without normalization they spread out and drift, BN and GN keep them stable. Here, for
(N, 1, 28, 28) inputs::

    stage i (widths w_i, d_i convs):  [conv3x3 - norm - ReLU] x d_i ; 2x2 max-pool (not after the last stage)
    (the very first conv has stride 2: 28x28 -> 14x14, so the three stages run at 14x14, 7x7 and 3x3)
    head: global average pool - linear(w_last -> 10)

``probe`` is the last conv (the analogue of conv5_3); :func:`response_percentiles` gives the percentiles of
its output over all of a batch's elements (images x channels x positions). Convolutions have a bias only
without normalization (the norms' beta plays that role); Kaiming (fan-out) initialization as in ``models``.
"""
from __future__ import annotations

import torch
from torch import nn

from groupnorm.nn.factory import make_norm

from ..data import NUM_CLASSES

PERCENTILES = (1, 20, 80, 99)  # Figure 3's


class VGG(nn.Module):
    """VGG-style (N, 1, 28, 28) -> (N, 10) logits; see the module docstring.

    Args:
        norm: a ``make_norm`` name: ``none``, ``bn``, ``gn`` (with ``groups``), ...
        widths: channels of each stage; blocks: convs per stage (same length).
        groups, group_size: GN's G or channels per group; workers: emulated BN workers.
    """

    def __init__(self, norm: str = "gn", widths=(64, 128, 256), blocks=(2, 2, 2), *, groups: int | None = 32,
                 group_size: int | None = None, workers: int = 1, in_channels: int = 1,
                 num_classes: int = NUM_CLASSES):
        super().__init__()
        if len(widths) != len(blocks) or not widths or min(blocks) < 1:
            raise ValueError(f"widths={tuple(widths)} and blocks={tuple(blocks)} must be non-empty, same length, "
                             f"at least one conv per stage")
        bias = norm == "none"
        layers: list[nn.Module] = []
        cin, first = in_channels, True
        for i, (w, d) in enumerate(zip(widths, blocks)):
            for _ in range(d):
                conv = nn.Conv2d(cin, w, 3, stride=2 if first else 1, padding=1, bias=bias)
                layers += [conv, make_norm(norm, w, groups=groups, group_size=group_size, activation="relu",
                                           workers=workers)]
                cin, first = w, False
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.probe = conv  # the last conv: its output is the pre-normalization response of Figure 3
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


def build(arch, norm: str, in_channels: int, num_classes: int, shape: dict, **norm_kw) -> VGG:
    """The :class:`VGG` of the run's ``shape`` (``widths``, ``blocks``; ``arch`` fixes nothing)."""
    return VGG(norm, tuple(shape["widths"]), tuple(shape["blocks"]), in_channels=in_channels,
               num_classes=num_classes, **norm_kw)


@torch.no_grad()
def response_percentiles(y: torch.Tensor, qs=PERCENTILES) -> list[float]:
    """The ``qs`` percentiles of all elements of ``y`` (float64, linear interpolation, as ``numpy.percentile``)."""
    flat = y.detach().reshape(-1).to(torch.float64)
    return [float(v) for v in torch.quantile(flat, torch.tensor([q / 100.0 for q in qs], dtype=torch.float64))]
