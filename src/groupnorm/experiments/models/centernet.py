r"""A one-stage detector in the style of CenterNet (Zhou et al. 2019, "Objects as Points").

Shapes for a padded batch ``(N, 1, Hp, Wp)`` (:func:`groupnorm.experiments.data.canvases.collate`) and ``K``
classes; stride 4 is the output's::

    backbone (:class:`.backbone.Backbone`)          features at strides s_i, coarsest S = max s_i (>= 4)
    neck, from S down to 4, per factor 2:           upsample x2 (bilinear) [+ conv1x1 of the backbone's feature
                                                    at that stride] - conv3x3 - norm - ReLU    -> (N, F, Hp/4, Wp/4)
    heads (heatmap: K, size: 2, offset: 2):         conv3x3 - head norm - ReLU - conv1x1

Targets, per object with box ``(x0, y0, x1, y1)`` in pixels: its centre at stride 4, ``c = ((x0 + x1) / 2,
(y0 + y1) / 2) / 4``, falls in cell ``q = floor(c)``; the heatmap of its class is ``max`` over the objects of
the Gaussian ``exp(-(dx^2 / 2 sx^2 + dy^2 / 2 sy^2))`` around ``q`` with ``sx = a w / 6``, ``sy = a h / 6`` (w, h
the box's size in cells, ``a = 0.54``, TTFNet's elliptical form of CenterNet's radius); the size target at q
is ``(w, h)``, the offset target ``c - q``. Loss (per image batch, over the real, unpadded cells only):

.. math::

    L = \frac{-1}{N_{obj}} \sum \begin{cases} (1-p)^2 \log p & Y = 1 \\ (1-Y)^4 p^2 \log(1-p) & \text{else}
        \end{cases} \; + \; 0.1\, L_1(\text{size}) + L_1(\text{offset})

(CenterNet's penalty-reduced focal loss; the L1 terms at the objects' cells, divided by ``N_obj``). Decoding,
without NMS: a cell whose heatmap score is the maximum of its 3x3 neighbourhood (max-pooling) is a peak; the
``top_k`` highest peaks of a real region give boxes ``(q + offset +- size / 2) * 4``, clipped to the image.

The backbone and neck use the backbone's norm, the heads ``head_norm`` (any ``make_norm`` name; per-worker BN
with ``head_workers``). With ``masked_stats`` every GN of the backbone, neck and heads leaves the batch's padding
out of its statistics (:func:`.backbone.masked_group_norms`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from groupnorm.nn.factory import make_norm

from .backbone import Backbone, dense_parts, masked_group_norms

__all__ = ["CenterNet", "Neck", "STRIDE", "heatmap_targets", "focal_loss", "decode_centers"]

STRIDE = 4
GAUSSIAN_ALPHA = 0.54
SIZE_WEIGHT = 0.1
PRIOR = 0.1  # the heatmap's initial probability (bias log(p / (1 - p)))


def _conv_norm_relu(cin: int, cout: int, norm: str, workers: int, groups) -> list:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=norm == "none"),
            make_norm(norm, cout, groups=groups, activation="relu", workers=workers)]


class Neck(nn.Module):
    """The backbone's coarsest feature upsampled to stride 4 with lateral 1x1 convs (module doc):
    ``[features]`` -> ``(N, width, Hp / 4, Wp / 4)``."""

    def __init__(self, backbone: Backbone, width: int = 64):
        super().__init__()
        strides, channels = backbone.strides, backbone.channels
        top = max(strides)
        if top < STRIDE or top & (top - 1):
            raise ValueError(f"the backbone's coarsest stride {top} must be a power of two >= {STRIDE}")
        self.last = {s: i for i, s in enumerate(strides)}  # the deepest feature at each stride
        self.top = self.last[top]
        steps = int(math.log2(top // STRIDE))
        kw = dict(norm=backbone.norm, workers=backbone.workers, groups=backbone.groups)
        self.inp = nn.Sequential(*_conv_norm_relu(channels[self.top], width, **kw))
        self.laterals = nn.ModuleDict()
        self.convs = nn.ModuleList()
        s = top
        for _ in range(steps):
            s //= 2
            if s in self.last:
                self.laterals[str(s)] = nn.Conv2d(channels[self.last[s]], width, 1)
            self.convs.append(nn.Sequential(*_conv_norm_relu(width, width, **kw)))
        self.width = width
        self.top_stride = top

    def forward(self, feats: list) -> torch.Tensor:
        y = self.inp(feats[self.top])
        s = self.top_stride
        for conv in self.convs:
            s //= 2
            y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
            if str(s) in self.laterals:
                y = y + self.laterals[str(s)](feats[self.last[s]])
            y = conv(y)
        return y


def _head(cin: int, width: int, cout: int, norm: str, workers: int, groups) -> nn.Sequential:
    return nn.Sequential(*_conv_norm_relu(cin, width, norm, workers, groups), nn.Conv2d(width, cout, 1))


def heatmap_targets(boxes: list, labels: list, num_classes: int, size) -> dict:
    """Training targets at stride 4 for per-image ``boxes`` [(K_i, 4) pixels] and ``labels`` [(K_i,)] on an
    output of ``size`` (h, w) (module doc): ``heatmap`` (N, C, h, w), and per object ``batch``, ``cell`` (y, x),
    ``size`` (w, h) and ``offset`` (x, y) in cells."""
    h, w = size
    dev = boxes[0].device if boxes else torch.device("cpu")
    heat = torch.zeros(len(boxes), num_classes, h, w, device=dev)
    ys, xs = torch.arange(h, device=dev, dtype=torch.float32), torch.arange(w, device=dev, dtype=torch.float32)
    bi, cells, sizes, offs = [], [], [], []
    for n, (b, lab) in enumerate(zip(boxes, labels)):
        for box, c in zip(b.float(), lab.tolist()):
            cx, cy = (box[0] + box[2]) / (2 * STRIDE), (box[1] + box[3]) / (2 * STRIDE)
            bw, bh = (box[2] - box[0]) / STRIDE, (box[3] - box[1]) / STRIDE
            qx, qy = min(int(cx), w - 1), min(int(cy), h - 1)
            sx, sy = max(GAUSSIAN_ALPHA * float(bw) / 6, 1e-3), max(GAUSSIAN_ALPHA * float(bh) / 6, 1e-3)
            g = torch.exp(-((xs[None, :] - qx) ** 2 / (2 * sx * sx) + (ys[:, None] - qy) ** 2 / (2 * sy * sy)))
            heat[n, c] = torch.maximum(heat[n, c], g)
            bi.append(n)
            cells.append((qy, qx))
            sizes.append(torch.stack([bw, bh]))
            offs.append(torch.stack([cx - qx, cy - qy]))
    k = len(bi)
    return {"heatmap": heat, "batch": torch.tensor(bi, dtype=torch.long, device=dev),
            "cell": torch.tensor(cells, dtype=torch.long, device=dev).reshape(k, 2),
            "size": torch.stack(sizes) if k else torch.zeros(0, 2, device=dev),
            "offset": torch.stack(offs) if k else torch.zeros(0, 2, device=dev)}


def focal_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss (module doc) of heatmap ``logits`` against ``target`` (same shape,
    1 at the objects' cells), summed over the cells where ``valid`` (broadcastable bool) and divided by the
    number of objects (at least 1)."""
    pos = target == 1
    logp, log1mp = F.logsigmoid(logits), F.logsigmoid(-logits)
    p = torch.sigmoid(logits)
    loss = torch.where(pos, (1 - p) ** 2 * logp, (1 - target) ** 4 * p ** 2 * log1mp)
    if valid is not None:
        loss = loss * valid
    return -loss.sum() / pos.sum().clamp(min=1)


def decode_centers(heat_logits, size, offset, image_sizes, valid=None, top_k: int = 100) -> list:
    """Per image ``{"boxes": (k, 4), "scores": (k,), "labels": (k,)}`` from the heads' outputs (module doc):
    3x3 max-pool peaks (no NMS), the ``top_k`` best, boxes in pixels clipped to ``image_sizes``."""
    heat = torch.sigmoid(heat_logits)
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    if valid is not None:
        peaks = peaks * valid
    n, c, h, w = heat.shape
    k = min(top_k, c * h * w)
    scores, idx = peaks.reshape(n, -1).topk(k, dim=1)
    labels = idx // (h * w)
    cell = idx % (h * w)
    qy, qx = (cell // w).float(), (cell % w).float()
    out = []
    for i in range(n):
        sz = size[i].reshape(2, -1)[:, cell[i]]
        of = offset[i].reshape(2, -1)[:, cell[i]]
        cx, cy = qx[i] + of[0], qy[i] + of[1]
        bw, bh = sz[0].clamp(min=0), sz[1].clamp(min=0)
        boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1) * STRIDE
        ih, iw = image_sizes[i]
        boxes = torch.stack([boxes[:, 0].clamp(0, iw), boxes[:, 1].clamp(0, ih), boxes[:, 2].clamp(0, iw),
                             boxes[:, 3].clamp(0, ih)], 1)
        keep = scores[i] > 0
        out.append({"boxes": boxes[keep], "scores": scores[i][keep], "labels": labels[i][keep]})
    return out


class CenterNet(nn.Module):
    """The one-stage detector (module doc).

    Args:
        backbone: a :class:`.backbone.Backbone` (its norm is the backbone's and the neck's).
        num_classes: K.
        head_norm: the heads' norm (a ``make_norm`` name); head_workers: its emulated BN workers.
        neck_width, head_width: channels of the neck and of the heads' hidden conv.
        masked_stats: GN layers leave the padding out of their statistics.
        top_k: detections per image at inference.

    ``forward(images, pad_mask)`` gives the raw outputs ``{"heatmap": (N, K, h, w) logits, "size": (N, 2, h, w),
    "offset": (N, 2, h, w), "features": the neck's (N, F, h, w)}``; :meth:`losses` and :meth:`detect` take a
    :class:`~groupnorm.experiments.data.canvases.CanvasBatch`.
    """

    def __init__(self, backbone: Backbone, num_classes: int, head_norm: str = "none", *, head_workers: int = 1,
                 groups: int | None = 32, neck_width: int = 64, head_width: int = 64, masked_stats: bool = False,
                 top_k: int = 100):
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes={num_classes!r} must be a positive integer")
        self.backbone = backbone
        self.neck = Neck(backbone, neck_width)
        self.num_classes, self.masked_stats, self.top_k = num_classes, masked_stats, top_k
        hk = dict(norm=head_norm, workers=head_workers, groups=groups)
        self.heatmap = _head(neck_width, head_width, num_classes, **hk)
        self.size = _head(neck_width, head_width, 2, **hk)
        self.offset = _head(neck_width, head_width, 2, **hk)
        for m in list(self.neck.modules()) + list(self.heatmap.modules()) + list(self.size.modules()) + \
                list(self.offset.modules()):
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for head in (self.heatmap, self.size, self.offset):
            nn.init.normal_(head[-1].weight, std=0.01)
        nn.init.constant_(self.heatmap[-1].bias, math.log(PRIOR / (1 - PRIOR)))

    def forward(self, images: torch.Tensor, pad_mask: torch.Tensor | None = None) -> dict:
        with masked_group_norms(self, pad_mask if self.masked_stats else None):
            f = self.neck(self.backbone(images))
            return {"heatmap": self.heatmap(f), "size": self.size(f), "offset": self.offset(f), "features": f}

    def _valid(self, pad_mask, out):
        return pad_mask[..., ::STRIDE, ::STRIDE] if pad_mask is not None else None

    def center_losses(self, out: dict, boxes: list, labels: list, pad_mask) -> dict:
        """The three weighted loss terms of the outputs ``out`` against the objects (module doc)."""
        t = heatmap_targets(boxes, labels, self.num_classes, out["heatmap"].shape[-2:])
        nobj = max(len(t["batch"]), 1)
        b, qy, qx = t["batch"], t["cell"][:, 0], t["cell"][:, 1]
        size = out["size"].permute(0, 2, 3, 1)[b, qy, qx]
        off = out["offset"].permute(0, 2, 3, 1)[b, qy, qx]
        return {"heatmap": focal_loss(out["heatmap"], t["heatmap"], self._valid(pad_mask, out)),
                "size": SIZE_WEIGHT * (size - t["size"]).abs().sum() / nobj,
                "offset": (off - t["offset"]).abs().sum() / nobj}

    def losses(self, batch) -> dict:
        """``{"heatmap", "size", "offset"}``, the weighted loss terms on a CanvasBatch (sum them to train)."""
        out = self(batch.images, batch.pad_mask)
        return self.center_losses(out, batch.boxes, batch.labels, batch.pad_mask)

    @torch.no_grad()
    def detect(self, batch) -> list:
        """Per image ``{"boxes", "scores", "labels"}`` (module doc)."""
        out = self(batch.images, batch.pad_mask)
        return decode_centers(out["heatmap"], out["size"], out["offset"], batch.image_sizes,
                              self._valid(batch.pad_mask, out), self.top_k)


def build(arch, norm: str, in_channels: int, num_classes: int, shape: dict, *, groups: int | None = 32,
          group_size: int | None = None, workers: int = 1, head_norm: str | None = None,
          head_workers: int | None = None, masked_stats: bool = False) -> CenterNet:
    """The arch registry's builder (:data:`groupnorm.experiments.models.archs.ARCHS`): a :class:`CenterNet` on the
    ``resnet`` backbone shaped by ``shape`` (:func:`.backbone.dense_parts`); GN takes ``groups`` only."""
    if group_size is not None:
        raise ValueError(f"group_size={group_size!r}: the dense models take GN's groups only")
    backbone, head, hw = dense_parts(norm, in_channels, shape, groups=groups, workers=workers, head_norm=head_norm,
                                     head_workers=head_workers)
    return CenterNet(backbone, num_classes, head, head_workers=hw, groups=groups, masked_stats=masked_stats)
