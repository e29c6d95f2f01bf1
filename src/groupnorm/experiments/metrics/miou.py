"""Mean intersection over union of a semantic segmentation, accumulated over batches in a confusion matrix.

For classes ``0..K-1`` (class 0 is the background of the canvases) and the pixel counts ``M[t, p]`` of target
``t`` predicted as ``p`` over every image seen (pixels whose target is ``ignore_index`` left out):

.. math::

    \\mathrm{IoU}_k = \\frac{M_{kk}}{\\sum_p M_{kp} + \\sum_t M_{tk} - M_{kk}}, \\qquad
    \\mathrm{mIoU} = \\frac{1}{|K'|} \\sum_{k \\in K'} \\mathrm{IoU}_k

with ``K'`` the classes whose union is not empty (present in the targets or the predictions).
"""
from __future__ import annotations

import torch

__all__ = ["ConfusionMatrix", "mean_iou"]


class ConfusionMatrix:
    """Pixel counts ``M[target, prediction]`` (int64 (K, K)) over the batches given to :meth:`update`."""

    def __init__(self, num_classes: int, ignore_index: int = 255):
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes={num_classes!r} must be a positive integer")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``pred`` and ``target`` integer class maps of one shape (e.g. (N, H, W))."""
        if pred.shape != target.shape:
            raise ValueError(f"pred has shape {tuple(pred.shape)} but target has shape {tuple(target.shape)}")
        p, t = pred.reshape(-1).cpu().long(), target.reshape(-1).cpu().long()
        keep = t != self.ignore_index
        p, t = p[keep], t[keep]
        k = self.num_classes
        for name, v in (("target", t), ("pred", p)):
            if v.numel() and (int(v.min()) < 0 or int(v.max()) >= k):
                raise ValueError(f"{name} holds class {int(v.min()) if int(v.min()) < 0 else int(v.max())} "
                                 f"outside 0..{k - 1} (ignore_index={self.ignore_index})")
        self.matrix += torch.bincount(t * k + p, minlength=k * k).reshape(k, k)

    def iou(self) -> torch.Tensor:
        """Per-class IoU (float64 (K,)), NaN for a class with an empty union."""
        m = self.matrix.double()
        tp = m.diagonal()
        union = m.sum(1) + m.sum(0) - tp
        return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))

    def mean_iou(self) -> float:
        """mIoU over the classes with a non-empty union (module doc); NaN before any pixel."""
        v = self.iou()
        v = v[~v.isnan()]
        return float(v.mean()) if v.numel() else float("nan")


def mean_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255) -> float:
    """mIoU of one set of class maps (:class:`ConfusionMatrix` for several batches)."""
    cm = ConfusionMatrix(num_classes, ignore_index)
    cm.update(pred, target)
    return cm.mean_iou()
