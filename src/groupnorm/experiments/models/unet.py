"""A small U-Net (Ronneberger et al. 2015) for the canvases' semantic segmentation, its encoder a harness ResNet.

For a padded batch ``(N, 1, Hp, Wp)`` and ``K`` item classes (``K + 1`` outputs, 0 the background)::

    encoder: :class:`.backbone.Backbone`                features at strides s_1 < ... < S (the stem's first)
    decoder, from S down to stride d, per factor 2:     upsample x2 (bilinear), concatenate the encoder's
                                                        feature at that stride (if any), then 2 x [conv3x3 -
                                                        head norm - ReLU] of ``decoder_width`` channels
    classifier: conv1x1, then upsample x d (bilinear)   (N, K + 1, Hp, Wp) logits

``d = decoder_stride`` (a power of two below S): 1 is Ronneberger's full-resolution decoder; the dense presets
use 4, as the semantic heads of Panoptic FPN and DeepLab predict at a coarser stride and upsample the logits
(a decoder at strides 2 and 1 costs several times the rest of the model on 96-128 px canvases).

Loss: cross-entropy over the real pixels (the padding's target is ``SEMANTIC_IGNORE``); prediction: the argmax.
The encoder uses the backbone's norm (pre-trained weights load as into the detectors), the decoder
``head_norm``. With ``masked_stats`` every GN leaves the padding out of its statistics.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from groupnorm.nn.factory import make_norm

from ..data.canvases import SEMANTIC_IGNORE
from .backbone import Backbone, dense_parts, masked_group_norms

__all__ = ["UNet"]


class UNet(nn.Module):
    """The U-Net (module doc). ``forward(images, pad_mask)`` -> logits ``(N, num_classes + 1, Hp, Wp)``;
    :meth:`losses` and :meth:`segment` take a CanvasBatch. ``head_workers``: the decoder's emulated BN
    workers."""

    def __init__(self, backbone: Backbone, num_classes: int, head_norm: str = "gn", *, head_workers: int = 1,
                 groups: int | None = 32, decoder_width: int = 32, masked_stats: bool = False,
                 decoder_stride: int = 1):
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes={num_classes!r} must be a positive integer")
        self.backbone, self.num_classes, self.masked_stats = backbone, num_classes, masked_stats
        strides, channels = backbone.strides, backbone.channels
        top = max(strides)
        if top & (top - 1):
            raise ValueError(f"the encoder's coarsest stride {top} must be a power of two")
        if (not isinstance(decoder_stride, int) or decoder_stride < 1 or decoder_stride & (decoder_stride - 1)
                or decoder_stride >= top):
            raise ValueError(f"decoder_stride={decoder_stride!r} must be a power of two below the encoder's "
                             f"coarsest stride {top}")
        self.decoder_stride = decoder_stride
        self.last = {s: i for i, s in enumerate(strides)}
        self.top = self.last[top]
        self.steps = nn.ModuleList()
        c, s = channels[self.top], top
        for _ in range(int(math.log2(top // decoder_stride))):
            s //= 2
            cin = c + (channels[self.last[s]] if s in self.last else 0)
            layers = []
            for k in range(2):
                layers += [nn.Conv2d(cin if k == 0 else decoder_width, decoder_width, 3, padding=1,
                                     bias=head_norm == "none"),
                           make_norm(head_norm, decoder_width, groups=groups, activation="relu", workers=head_workers)]
            self.steps.append(nn.Sequential(*layers))
            c = decoder_width
        self.classifier = nn.Conv2d(c, num_classes + 1, 1)
        for m in self.steps.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, images: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        with masked_group_norms(self, pad_mask if self.masked_stats else None):
            feats = self.backbone(images)
            y, s = feats[self.top], max(self.backbone.strides)
            for step in self.steps:
                s //= 2
                y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
                if s in self.last:
                    y = torch.cat([y, feats[self.last[s]]], 1)
                y = step(y)
            y = self.classifier(y)
            if self.decoder_stride > 1:
                y = F.interpolate(y, scale_factor=float(self.decoder_stride), mode="bilinear", align_corners=False)
            return y

    def losses(self, batch) -> dict:
        """``{"seg"}``: cross-entropy over the real pixels of a CanvasBatch."""
        return {"seg": F.cross_entropy(self(batch.images, batch.pad_mask), batch.semantic,
                                       ignore_index=SEMANTIC_IGNORE)}

    @torch.no_grad()
    def segment(self, batch) -> torch.Tensor:
        """(N, Hp, Wp) int64 class maps (0 background, k + 1 item class k), ``SEMANTIC_IGNORE`` in the
        padding."""
        pred = self(batch.images, batch.pad_mask).argmax(1)
        return pred.masked_fill(~batch.pad_mask[:, 0], SEMANTIC_IGNORE)


def build(arch, norm: str, in_channels: int, num_classes: int, shape: dict, *, groups: int | None = 32,
          group_size: int | None = None, workers: int = 1, head_norm: str | None = None,
          head_workers: int | None = None, masked_stats: bool = False) -> UNet:
    """The arch registry's builder (:data:`groupnorm.experiments.models.archs.ARCHS`): a :class:`UNet` on the
    ``resnet`` backbone shaped by ``shape`` (:func:`.backbone.dense_parts`), decoding to stride 4 (the
    detectors' output stride); GN takes ``groups`` only."""
    if group_size is not None:
        raise ValueError(f"group_size={group_size!r}: the dense models take GN's groups only")
    backbone, head, hw = dense_parts(norm, in_channels, shape, groups=groups, workers=workers, head_norm=head_norm,
                                     head_workers=head_workers)
    return UNet(backbone, num_classes, head, head_workers=hw, groups=groups, masked_stats=masked_stats,
                decoder_stride=4)
