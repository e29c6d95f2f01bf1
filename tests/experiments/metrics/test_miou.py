"""mIoU: a hand-computed case, ignored pixels, accumulation over batches, classes absent from both maps."""
import math

import pytest
import torch

from groupnorm.experiments.metrics import ConfusionMatrix, mean_iou


def test_hand_computed_miou():
    target = torch.tensor([[0, 0, 1, 1, 255]])
    pred = torch.tensor([[0, 1, 1, 1, 2]])
    # class 0: tp 1, union 2; class 1: tp 2, union 3; class 2 appears only at an ignored pixel: union 0
    assert mean_iou(pred, target, 3) == pytest.approx((1 / 2 + 2 / 3) / 2)
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    assert cm.matrix.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    iou = cm.iou()
    assert iou[:2].tolist() == pytest.approx([0.5, 2 / 3]) and math.isnan(iou[2])


def test_accumulation_equals_one_call():
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 4, (6, 5, 7), generator=g)
    p = torch.randint(0, 4, (6, 5, 7), generator=g)
    t[0, 0] = 255
    cm = ConfusionMatrix(4)
    for i in range(0, 6, 2):
        cm.update(p[i:i + 2], t[i:i + 2])
    assert cm.mean_iou() == pytest.approx(mean_iou(p, t, 4))
    assert int(cm.matrix.sum()) == 6 * 5 * 7 - 7
    assert mean_iou(t.clamp(max=3), t.clamp(max=3), 4) == 1.0


def test_errors():
    with pytest.raises(ValueError, match=r"pred has shape \(2,\) but target has shape \(3,\)"):
        mean_iou(torch.zeros(2), torch.zeros(3), 2)
    with pytest.raises(ValueError, match=r"pred holds class 5 outside 0..1"):
        mean_iou(torch.tensor([5]), torch.tensor([0]), 2)
    with pytest.raises(ValueError, match="num_classes=0"):
        ConfusionMatrix(0)
    assert math.isnan(ConfusionMatrix(2).mean_iou())
