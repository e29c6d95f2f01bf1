"""The two-stage detector: class-agnostic CenterNet proposals, then the paper's Table 5 box head on RoIAlign
features.

Stage 1 is a :class:`.centernet.CenterNet` with one class (objectness) and no norm in its heads (detectron2's
RPN head has none); its neck's stride-4 features ``(N, F, Hp / 4, Wp / 4)`` feed stage 2::

    RoIAlign 7x7 (spatial scale 1/4, sampling ratio 2, aligned)       (R, F, 7, 7), R = 64 per image
    4 x [conv3x3 - head norm - ReLU]  (detectron2's "4conv1fc")        (R, conv_dim, 7, 7)
    flatten - fc - ReLU                                                (R, fc_dim)
    class scores (K + 1, the last is background); box deltas (4 K)

Training RoIs, per image (detectron2's ``ROIHeads`` sampling): the ``proposals`` best stage-1 boxes (detached),
the ground-truth boxes and the whole image; a RoI whose best IoU with an object is >= 0.5 is foreground (that
object's class and box), else background. ``ROIS_PER_IMAGE`` = 64 are drawn: at most 25 % foreground (without
replacement), the rest background (without replacement while there are enough, then with); an image with no
background RoI at all fills with foreground. Every image has exactly 64, in image order, so worker k's RoIs are
the k-th of W equal slices: a per-worker BN head (``head_workers = W``) normalizes each worker's RoIs, all from
its own images (the non-i.i.d. batch of the paper's Table 5); ``head_workers = 1`` is SyncBN over all RoIs.

Box deltas (detectron2's ``Box2BoxTransform``, weights (10, 10, 5, 5)): ``dx = 10 (gx - px) / pw``, ``dy = 10
(gy - py) / ph``, ``dw = 5 log(gw / pw)``, ``dh = 5 log(gh / ph)`` (centres and sizes of the object g and the RoI
p). Loss: cross-entropy of the classes over all sampled RoIs, plus the L1 loss of the object class's deltas of
the foreground RoIs divided by the number of sampled RoIs, plus stage 1's CenterNet loss.

Inference: the ``proposals`` best stage-1 boxes per image; each (RoI, class) pair with probability > 0.05 gives
the box of that class's deltas, clipped to the image; per-class NMS at IoU 0.5; the ``top_k`` best.

With ``masks=True`` the Mask R-CNN mask head of :mod:`.mask_head` runs beside the box head on the foreground
RoIs, and detections come with masks pasted into the image.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


from .backbone import Backbone, dense_parts
from .centernet import STRIDE, CenterNet, decode_centers
from .mask_head import MASK_POOLER, MASK_SIZE, MaskHead, conv_norm_stack, mask_targets, paste_masks
from .roi_align import boxes_to_rois, roi_align

__all__ = ["TwoStageDetector", "BoxHead", "box_iou", "nms", "encode_boxes", "decode_boxes", "sample_rois",
           "ROIS_PER_IMAGE", "FG_FRACTION"]

ROIS_PER_IMAGE = 64
FG_FRACTION = 0.25
FG_IOU = 0.5
BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
SCORE_THRESHOLD = 0.05
NMS_IOU = 0.5
_CLAMP = math.log(1000.0 / 16)  # detectron2's largest dw, dh


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boxes ``a`` (A, 4) and ``b`` (B, 4), ``x0, y0, x1, y1`` -> (A, B); 0 where the union is empty."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of the kept boxes, by decreasing score (a box is dropped when its
    IoU with a kept, higher-scoring one exceeds ``iou_threshold``)."""
    order = scores.argsort(descending=True)
    iou = box_iou(boxes[order], boxes[order])
    keep = torch.ones(len(order), dtype=torch.bool, device=boxes.device)
    for i in range(len(order)):
        if keep[i]:
            keep[i + 1:] &= iou[i, i + 1:] <= iou_threshold
    return order[keep]


def encode_boxes(proposals: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Deltas (R, 4) that move ``proposals`` onto ``targets`` (module doc)."""
    pw, ph = proposals[:, 2] - proposals[:, 0], proposals[:, 3] - proposals[:, 1]
    px, py = proposals[:, 0] + 0.5 * pw, proposals[:, 1] + 0.5 * ph
    gw, gh = targets[:, 2] - targets[:, 0], targets[:, 3] - targets[:, 1]
    gx, gy = targets[:, 0] + 0.5 * gw, targets[:, 1] + 0.5 * gh
    wx, wy, ww, wh = BOX_WEIGHTS
    return torch.stack([wx * (gx - px) / pw, wy * (gy - py) / ph, ww * torch.log(gw / pw), wh * torch.log(gh / ph)], 1)


def decode_boxes(proposals: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`encode_boxes`: boxes (R, 4) from ``proposals`` and ``deltas``."""
    pw, ph = proposals[:, 2] - proposals[:, 0], proposals[:, 3] - proposals[:, 1]
    px, py = proposals[:, 0] + 0.5 * pw, proposals[:, 1] + 0.5 * ph
    wx, wy, ww, wh = BOX_WEIGHTS
    cx, cy = px + deltas[:, 0] / wx * pw, py + deltas[:, 1] / wy * ph
    w = pw * torch.exp((deltas[:, 2] / ww).clamp(max=_CLAMP))
    h = ph * torch.exp((deltas[:, 3] / wh).clamp(max=_CLAMP))
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], 1)


def _draw(idx: torch.Tensor, k: int, generator) -> torch.Tensor:
    """``k`` of the indices ``idx``: without replacement while there are enough, the rest with replacement."""
    if k <= 0 or len(idx) == 0:
        return idx[:0]
    perm = idx[torch.randperm(len(idx), generator=generator)[:k]]
    if len(perm) < k:
        perm = torch.cat([perm, idx[torch.randint(len(idx), (k - len(perm),), generator=generator)]])
    return perm


def sample_rois(proposals: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor, num_classes: int,
                image_size, generator=None) -> tuple:
    """One image's ``ROIS_PER_IMAGE`` training RoIs (module doc; the whole image (h, w) ``image_size`` is a
    candidate too, so there always is one): (boxes (64, 4), class (64,) with ``num_classes`` for background,
    matched object box (64, 4), matched object index (64,), -1 for background)."""
    whole = proposals.new_tensor([[0.0, 0.0, float(image_size[1]), float(image_size[0])]])
    cand = torch.cat([proposals, gt_boxes.to(proposals.dtype), whole], 0)
    keep = ((cand[:, 2] - cand[:, 0]) > 1e-3) & ((cand[:, 3] - cand[:, 1]) > 1e-3)
    cand = cand[keep]
    if len(gt_boxes):
        iou, match = box_iou(cand, gt_boxes.to(cand.dtype)).max(1)
    else:
        iou = torch.zeros(len(cand), device=cand.device)
        match = torch.zeros(len(cand), dtype=torch.long, device=cand.device)
    fg = (iou >= FG_IOU).nonzero().flatten().cpu()
    bg = (iou < FG_IOU).nonzero().flatten().cpu()
    n_fg = min(len(fg), int(FG_FRACTION * ROIS_PER_IMAGE))
    pick_fg = fg[torch.randperm(len(fg), generator=generator)[:n_fg]]
    n_bg = ROIS_PER_IMAGE - n_fg
    pick_bg = _draw(bg, n_bg, generator) if len(bg) else _draw(fg, n_bg, generator)
    pick = torch.cat([pick_fg, pick_bg]).to(cand.device)
    is_fg = iou[pick] >= FG_IOU
    cls = torch.where(is_fg, gt_labels[match[pick]] if len(gt_boxes) else torch.zeros_like(pick),
                      torch.full_like(pick, num_classes))
    target = gt_boxes[match[pick]].to(cand.dtype) if len(gt_boxes) else cand[pick]
    obj = torch.where(is_fg, match[pick], torch.full_like(pick, -1))
    return cand[pick], cls, target, obj


class BoxHead(nn.Module):
    """4 conv + 1 fc box head (module doc): RoI features (R, F, 7, 7) -> (class logits (R, K + 1), deltas
    (R, 4 K))."""

    def __init__(self, in_channels: int, num_classes: int, norm: str = "gn", *, workers: int = 1,
                 groups: int | None = 32, conv_dim: int = 64, fc_dim: int = 256, pooler: int = 7):
        super().__init__()
        self.convs = conv_norm_stack(in_channels, conv_dim, norm, groups=groups, workers=workers)
        self.fc = nn.Linear(conv_dim * pooler * pooler, fc_dim)
        self.cls = nn.Linear(fc_dim, num_classes + 1)
        self.deltas = nn.Linear(fc_dim, 4 * num_classes)
        for m in self.convs.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.kaiming_uniform_(self.fc.weight, a=1)
        nn.init.zeros_(self.fc.bias)
        nn.init.normal_(self.cls.weight, std=0.01)
        nn.init.normal_(self.deltas.weight, std=0.001)
        nn.init.zeros_(self.cls.bias)
        nn.init.zeros_(self.deltas.bias)

    def forward(self, x: torch.Tensor) -> tuple:
        x = F.relu(self.fc(self.convs(x).flatten(1)))
        return self.cls(x), self.deltas(x)


class TwoStageDetector(nn.Module):
    """The two-stage detector (module doc).

    Args:
        backbone: a :class:`.backbone.Backbone`; num_classes: K.
        head_norm: the box head's norm (a ``make_norm`` name; the paper's Table 5 varies it); head_workers: its
            emulated BN workers (W: each worker's RoIs; 1: SyncBN).
        neck_width, conv_dim, fc_dim: widths; proposals: stage-1 boxes per image; top_k: detections per image.
        masked_stats: GN of the backbone and neck leaves the padding out of its statistics (the box head's
            RoIs have no padding).
        masks: add the mask head (module doc); :meth:`detect` then also gives ``"masks"``.
    """

    def __init__(self, backbone: Backbone, num_classes: int, head_norm: str = "gn", *, head_workers: int = 1,
                 groups: int | None = 32, neck_width: int = 64, conv_dim: int = 64, fc_dim: int = 256,
                 proposals: int = 100, masked_stats: bool = False, top_k: int = 100, masks: bool = False):
        super().__init__()
        self.rpn = CenterNet(backbone, 1, "none", groups=groups, neck_width=neck_width, head_width=neck_width,
                             masked_stats=masked_stats, top_k=proposals)
        self.box_head = BoxHead(neck_width, num_classes, head_norm, workers=head_workers, groups=groups,
                                conv_dim=conv_dim, fc_dim=fc_dim)
        self.num_classes, self.proposals, self.top_k = num_classes, proposals, top_k
        # per-worker statistics come from running the head on each worker's RoIs (their counts differ)
        self.mask_head = MaskHead(neck_width, num_classes, head_norm, groups=groups,
                                  conv_dim=conv_dim) if masks else None
        self.head_workers = head_workers

    @property
    def backbone(self) -> Backbone:
        return self.rpn.backbone

    def _stage1(self, batch):
        out = self.rpn(batch.images, batch.pad_mask)
        props = decode_centers(out["heatmap"].detach(), out["size"].detach(), out["offset"].detach(),
                               batch.image_sizes, self.rpn._valid(batch.pad_mask, out), self.proposals)
        return out, [p["boxes"] for p in props]

    def _pool(self, features, boxes: list, size: int = 7) -> torch.Tensor:
        return roi_align(features, boxes_to_rois(boxes), size, 1.0 / STRIDE, sampling_ratio=2, aligned=True)

    def losses(self, batch, generator=None) -> dict:
        """Stage 1's ``{"rpn_heatmap", "rpn_size", "rpn_offset"}``, the box head's ``{"cls", "box"}`` and with
        masks ``"mask"``, on a CanvasBatch."""
        out, props = self._stage1(batch)
        agnostic = [torch.zeros_like(lab) for lab in batch.labels]
        losses = {f"rpn_{k}": v for k, v in self.rpn.center_losses(out, batch.boxes, agnostic, batch.pad_mask).items()}
        rois, cls, tgt, obj = zip(*(sample_rois(p, b, lab, self.num_classes, size, generator)
                               for p, b, lab, size in zip(props, batch.boxes, batch.labels, batch.image_sizes)))
        per_image = list(rois)
        logits, deltas = self.box_head(self._pool(out["features"], per_image))
        cls, tgt, rois = torch.cat(cls), torch.cat(tgt), torch.cat(rois)
        losses["cls"] = F.cross_entropy(logits, cls)
        fg = (cls < self.num_classes).nonzero().flatten()
        d = deltas.reshape(-1, self.num_classes, 4)[fg, cls[fg]]
        losses["box"] = (d - encode_boxes(rois[fg], tgt[fg])).abs().sum() / max(len(cls), 1)
        if self.mask_head is not None:
            losses["mask"] = self._mask_loss(out["features"], per_image, cls, obj, batch.masks)
        return losses

    def _mask_loss(self, features, per_image: list, cls, obj: tuple, masks: list) -> torch.Tensor:
        """Binary cross-entropy of the foreground RoIs' class channel against their objects' masks."""
        first = [sum(len(m) for m in masks[:i]) for i in range(len(masks))]  # object offsets of the images
        fg = [o >= 0 for o in obj]
        boxes = [r[f] for r, f in zip(per_image, fg)]  # in image order, as the pooled RoIs
        if sum(len(b) for b in boxes) == 0:
            return features.sum() * 0.0
        objects = torch.cat([o[f] + k for o, f, k in zip(obj, fg, first)])
        fg_cls = cls[cls < self.num_classes]
        logits = self._mask_logits(features, boxes)
        logits = logits[torch.arange(len(fg_cls)), fg_cls]
        return F.binary_cross_entropy_with_logits(logits, mask_targets(masks, torch.cat(boxes), objects))

    def _mask_logits(self, features, boxes: list) -> torch.Tensor:
        """The mask head on per-image ``boxes`` (in image order): with ``head_workers`` W dividing the batch, on
        each worker's images' RoIs in a separate call, so a BN head normalizes each worker's RoIs alone."""
        n, w = len(boxes), self.head_workers
        groups = [(0, n)] if w == 1 or n % w else [(k * n // w, (k + 1) * n // w) for k in range(w)]
        outs = [self.mask_head(self._pool(features[a:b], boxes[a:b], MASK_POOLER)) for a, b in groups
                if sum(len(x) for x in boxes[a:b])]
        k = self.mask_head.out.out_channels
        return torch.cat(outs) if outs else features.new_zeros((0, k, MASK_SIZE, MASK_SIZE))

    @torch.no_grad()
    def detect(self, batch) -> list:
        """Per image ``{"boxes", "scores", "labels"}`` (module doc)."""
        out, props = self._stage1(batch)
        logits, deltas = self.box_head(self._pool(out["features"], props))
        probs = F.softmax(logits, 1)[:, :-1]
        deltas = deltas.reshape(-1, self.num_classes, 4)
        res, start = [], 0
        for p, (ih, iw) in zip(props, batch.image_sizes):
            n = len(p)
            pr, dl = probs[start:start + n], deltas[start:start + n]
            start += n
            r, c = (pr > SCORE_THRESHOLD).nonzero(as_tuple=True)
            boxes = decode_boxes(p[r], dl[r, c])
            boxes = torch.stack([boxes[:, 0].clamp(0, iw), boxes[:, 1].clamp(0, ih), boxes[:, 2].clamp(0, iw),
                                 boxes[:, 3].clamp(0, ih)], 1)
            scores = pr[r, c]
            keep = [torch.zeros(0, dtype=torch.long)]
            for k in c.unique().tolist():
                idx = (c == k).nonzero().flatten()
                keep.append(idx[nms(boxes[idx], scores[idx], NMS_IOU)])
            keep = torch.cat(keep)
            keep = keep[scores[keep].argsort(descending=True)[:self.top_k]]
            res.append({"boxes": boxes[keep], "scores": scores[keep], "labels": c[keep]})
        if self.mask_head is not None:
            logits = self._mask_logits(out["features"], [r["boxes"] for r in res])
            start = 0
            for r, size in zip(res, batch.image_sizes):
                n = len(r["boxes"])
                probs = torch.sigmoid(logits[start:start + n][torch.arange(n), r["labels"]])
                r["masks"] = paste_masks(probs, r["boxes"], size)
                start += n
        return res


def build(arch, norm: str, in_channels: int, num_classes: int, shape: dict, *, groups: int | None = 32,
          group_size: int | None = None, workers: int = 1, head_norm: str | None = None,
          head_workers: int | None = None, masked_stats: bool = False, masks: bool = False) -> TwoStageDetector:
    """The arch registry's builder (:data:`groupnorm.experiments.models.archs.ARCHS`): a :class:`TwoStageDetector` on the
    ``resnet`` backbone shaped by ``shape`` (:func:`.backbone.dense_parts`); GN takes ``groups`` only; ``masks``:
    with the mask head."""
    if group_size is not None:
        raise ValueError(f"group_size={group_size!r}: the dense models take GN's groups only")
    backbone, head, hw = dense_parts(norm, in_channels, shape, groups=groups, workers=workers, head_norm=head_norm,
                                     head_workers=head_workers)
    return TwoStageDetector(backbone, num_classes, head, head_workers=hw, groups=groups, masked_stats=masked_stats,
                            masks=masks)
