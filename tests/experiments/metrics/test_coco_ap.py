"""COCO AP through pycocotools on cases with known answers: perfect detections, hand-computed precision-recall
curves, IoU just above and below the thresholds, wrong classes, no detections; for boxes and masks."""
import numpy as np
import pytest
import torch

from groupnorm.experiments.data.canvases import canvas_set
from groupnorm.experiments.metrics import box_ap, mask_ap
from helpers import SAMPLE_DATA


def _gt(boxes, labels, masks=None):
    d = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels)}
    if masks is not None:
        d["masks"] = torch.from_numpy(np.asarray(masks, dtype=bool))
    return d


def _det(boxes, labels, scores, masks=None):
    d = _gt(boxes, labels)
    if masks is not None:  # bool, or probabilities kept as they are
        d["masks"] = torch.from_numpy(np.asarray(masks))
    d["scores"] = torch.tensor(scores, dtype=torch.float32)
    return d


def test_perfect_detections_on_canvases_give_ap_one():
    cs = list(canvas_set(SAMPLE_DATA, "val", 6, 0))
    gts = [_gt(c.boxes, c.labels, c.masks) for c in cs]
    dets = [_det(c.boxes, c.labels, np.linspace(0.9, 0.5, len(c.labels)), c.masks) for c in cs]
    assert box_ap(gts, dets) == {"AP": 1.0, "AP50": 1.0, "AP75": 1.0}
    assert mask_ap(gts, dets) == {"AP": 1.0, "AP50": 1.0, "AP75": 1.0}


def test_hand_computed_precision_recall():
    # two objects; a perfect hit (score 0.9) then a false positive (0.8): precision 1 up to recall 0.5, then 0.5
    # (interpolated: 1 at recall <= 0.5, 0 beyond) -> 51 of COCO's 101 recall points have precision 1
    gts = [_gt([[0, 0, 10, 10], [20, 20, 30, 30]], [3, 3])]
    dets = [_det([[0, 0, 10, 10], [50, 50, 60, 60]], [3, 3], [0.9, 0.8])]
    for v in box_ap(gts, dets).values():
        assert v == pytest.approx(51 / 101, abs=1e-12)
    # the false positive ranked first: precision 1/2 at recall 0.5 -> 51 points at 0.5
    dets = [_det([[0, 0, 10, 10], [50, 50, 60, 60]], [3, 3], [0.7, 0.8])]
    for v in box_ap(gts, dets).values():
        assert v == pytest.approx(0.5 * 51 / 101, abs=1e-12)


def test_iou_thresholds():
    # IoU 0.62: a hit at thresholds 0.50, 0.55, 0.60 of the ten -> AP 0.3, AP50 1, AP75 0
    gts = [_gt([[0, 0, 10, 10]], [0])]
    assert box_ap(gts, [_det([[0, 0, 10, 6.2]], [0], [0.5])]) == pytest.approx({"AP": 0.3, "AP50": 1.0, "AP75": 0.0})
    # IoU 0.8: thresholds 0.50 .. 0.80 (7 of 10)
    assert box_ap(gts, [_det([[0, 0, 10, 8]], [0], [0.5])]) == pytest.approx({"AP": 0.7, "AP50": 1.0, "AP75": 1.0})


def test_mask_iou_thresholds_and_probabilities():
    g = np.zeros((1, 10, 10), dtype=bool)
    g[0, :, :] = True                    # 100 pixels
    d = np.zeros((1, 10, 10), dtype=np.float32)
    d[0].reshape(-1)[:58] = 0.9          # 58 pixels above 0.5: IoU 0.58 -> thresholds 0.50, 0.55
    d[0].reshape(-1)[58:70] = 0.2        # below 0.5: not part of the mask
    r = mask_ap([_gt([[0, 0, 10, 10]], [1], g)], [_det([[0, 0, 10, 10]], [1], [0.9], d)])
    assert r == pytest.approx({"AP": 0.2, "AP50": 1.0, "AP75": 0.0})


def test_wrong_class_and_no_detections_give_zero():
    gts = [_gt([[0, 0, 10, 10]], [0]), _gt([], [])]
    assert box_ap(gts, [_det([[0, 0, 10, 10]], [1], [0.9]), _det([], [], [])]) == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    assert box_ap(gts, [_det([], [], []), _det([], [], [])]) == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}


def test_bad_inputs():
    with pytest.raises(ValueError, match="1 ground-truth images but 2 images of detections"):
        box_ap([_gt([], [])], [_det([], [], [])] * 2)
    with pytest.raises(ValueError, match="detections of image 0 lacks scores"):
        box_ap([_gt([], [])], [_gt([], [])])
    with pytest.raises(ValueError, match=r"ground truth of image 0: boxes of shape \(1, 4\) for 2 labels"):
        box_ap([_gt([[0, 0, 1, 1]], [0, 1])], [_det([], [], [])])
    with pytest.raises(ValueError, match="ground truth of image 0 lacks masks"):
        mask_ap([_gt([], [])], [_det([], [], [])])
