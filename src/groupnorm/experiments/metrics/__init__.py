"""Metrics of the detection and segmentation experiments: COCO's box and mask AP (through pycocotools) and mIoU."""
from .coco_ap import box_ap, mask_ap  # noqa: F401
from .miou import ConfusionMatrix, mean_iou  # noqa: F401

__all__ = ["box_ap", "mask_ap", "ConfusionMatrix", "mean_iou"]
