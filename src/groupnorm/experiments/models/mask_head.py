"""Mask R-CNN's mask head (He et al. 2017) for the two-stage detector, its targets and the pasting of its masks.

On the foreground RoIs (features at stride 4)::

    RoIAlign 14x14 - 4 x [conv3x3 - head norm - ReLU] - deconv 2x2 (stride 2) - ReLU - conv1x1   (R, K, 28, 28)

Trained with the binary cross-entropy of the object class's channel against the object's mask RoIAligned to the
RoI at 28 x 28 and thresholded at 0.5 (:func:`mask_targets`); at inference the detected class's channel (a
probability) is pasted into the image over the detected box (:func:`paste_masks`, ``grid_sample`` as
detectron2's ``paste_masks_in_image``). A per-worker BN mask head runs once per worker's RoIs, whose numbers
differ (``TwoStageDetector``), so its running statistics average all workers'.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from groupnorm.nn.factory import make_norm

from .roi_align import roi_align

__all__ = ["MaskHead", "mask_targets", "paste_masks", "MASK_POOLER", "MASK_SIZE"]


def conv_norm_stack(in_channels: int, conv_dim: int, norm: str, *, groups: int | None, workers: int,
                    depth: int = 4) -> nn.Sequential:
    """A head's ``depth`` blocks of 3x3 conv (no bias unless ``norm`` is "none") then ``norm`` + ReLU (the
    paper's 4conv heads): (R, in_channels, h, w) -> (R, conv_dim, h, w)."""
    layers, c = [], in_channels
    for _ in range(depth):
        layers += [nn.Conv2d(c, conv_dim, 3, padding=1, bias=norm == "none"),
                   make_norm(norm, conv_dim, groups=groups, activation="relu", workers=workers)]
        c = conv_dim
    return nn.Sequential(*layers)


class MaskHead(nn.Module):
    """Mask R-CNN's mask head (module doc): RoI features (R, F, 14, 14) -> mask logits (R, K, 28, 28)."""

    def __init__(self, in_channels: int, num_classes: int, norm: str = "gn", *, workers: int = 1,
                 groups: int | None = 32, conv_dim: int = 64):
        super().__init__()
        self.convs = conv_norm_stack(in_channels, conv_dim, norm, groups=groups, workers=workers)
        self.up = nn.ConvTranspose2d(conv_dim, conv_dim, 2, stride=2)
        self.out = nn.Conv2d(conv_dim, num_classes, 1)
        for m in list(self.convs.modules()) + [self.up]:
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.out.weight, std=0.001)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.up(self.convs(x))))


MASK_POOLER, MASK_SIZE = 14, 28


def mask_targets(masks: list, rois: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
    """(R, 28, 28) float 0/1 targets: object ``objects[r]`` (an index into the images' masks ``masks``
    [(K_i, h, w)] concatenated in order) RoIAligned to ``rois[r]`` (R, 4) and thresholded at 0.5 (module doc)."""
    if len(rois) == 0:
        return rois.new_zeros((0, MASK_SIZE, MASK_SIZE))
    h = max(m.shape[-2] for m in masks)
    w = max(m.shape[-1] for m in masks)
    full = torch.cat([F.pad(m.to(rois.dtype), (0, w - m.shape[-1], 0, h - m.shape[-2])) for m in masks])[:, None]
    rows = torch.cat([objects[:, None].to(rois.dtype), rois], 1)
    return (roi_align(full, rows, MASK_SIZE, 1.0, sampling_ratio=2, aligned=True)[:, 0] >= 0.5).to(rois.dtype)


def paste_masks(probs: torch.Tensor, boxes: torch.Tensor, size) -> torch.Tensor:
    """Masks (D, m, m) over ``boxes`` (D, 4) pasted into an image of ``size`` (h, w) -> (D, h, w): pixel centre
    ``x + 1/2`` samples the mask at ``(x + 1/2 - x0) / (x1 - x0)`` of its width (bilinear, 0 outside the box)."""
    h, w = size
    d = probs.shape[0]
    if d == 0:
        return probs.new_zeros((0, h, w))
    x0, y0, x1, y1 = boxes.unbind(1)
    xs = torch.arange(w, dtype=probs.dtype, device=probs.device) + 0.5
    ys = torch.arange(h, dtype=probs.dtype, device=probs.device) + 0.5
    gx = (xs[None, :] - x0[:, None]) / (x1 - x0).clamp(min=1e-6)[:, None] * 2 - 1  # (D, w)
    gy = (ys[None, :] - y0[:, None]) / (y1 - y0).clamp(min=1e-6)[:, None] * 2 - 1  # (D, h)
    grid = torch.stack([gx[:, None, :].expand(d, h, w), gy[:, :, None].expand(d, h, w)], -1)
    return F.grid_sample(probs[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]
