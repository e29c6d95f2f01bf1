"""The detectors and the U-Net: backbones from the harness's ResNets with classifier weights, masked GN over a
padded batch, CenterNet's targets and decoding (a perfect heatmap decodes to the boxes), RoI sampling and box
coding, losses that fall over a few steps, every norm by name, and GN on the compiled kernels."""
import math

import pytest
import torch
from torch import nn

from groupnorm import functional as GF
from groupnorm import kernels
from groupnorm.experiments.data.canvases import SEMANTIC_IGNORE, canvas_set, collate
from groupnorm.experiments.metrics import box_ap
from groupnorm.experiments.models import build_model
from groupnorm.experiments.models.backbone import (DETECTION_SHAPE, build_backbone, load_classifier_weights, mask_at,
                                                   masked_group_norms)
from groupnorm.experiments.models.centernet import CenterNet, decode_centers, focal_loss, heatmap_targets
from groupnorm.experiments.models.mask_head import mask_targets, paste_masks
from groupnorm.experiments.models.two_stage import (FG_FRACTION, ROIS_PER_IMAGE, TwoStageDetector, box_iou,
                                                    decode_boxes, encode_boxes, nms, sample_rois)
from groupnorm.experiments.models.unet import UNet
from groupnorm.nn import GroupNorm
from helpers import SAMPLE_DATA

SMALL = dict(widths=(16, 32, 64), groups=8)  # DETECTION_SHAPE's strides at a quarter of its cost


@pytest.fixture(scope="module")
def batch():
    return collate(list(canvas_set(SAMPLE_DATA, "train", 2, 0)))


def _small(norm="gn", **kw):
    return build_backbone(norm=norm, **SMALL, **kw)


def test_backbone_strides_and_classifier_weights():
    torch.manual_seed(0)
    b = build_backbone(norm="gn")
    assert b.strides == (2, 4, 8, 16) and b.channels == (32, 32, 64, 128)
    clf = build_model("resnet", "gn", 1, 10, **DETECTION_SHAPE)
    with torch.no_grad():
        for p in clf.parameters():
            p.normal_()
    load_classifier_weights(b, clf.state_dict())
    x = torch.randn(2, 1, 64, 96)
    feats = b(x)
    assert [tuple(f.shape[-2:]) for f in feats] == [(32, 48), (16, 24), (8, 12), (4, 6)]
    torch.testing.assert_close(feats[-1], clf.layers(clf.stem(x)))
    # BN weights load into a frozen-BN backbone (BN*): its running statistics become the classifier's
    bn = build_model("resnet", "bn", 1, 10, **DETECTION_SHAPE)
    with torch.no_grad():
        bn.stem[1].running_mean.uniform_()
    frozen = build_backbone(norm="bn-frozen")
    load_classifier_weights(frozen, bn.state_dict())
    assert torch.equal(frozen.stem[1].running_mean, bn.stem[1].running_mean)
    with pytest.raises(ValueError, match=r"do not fit this backbone \(norm 'bn'\): missing \[.*running_mean"):
        load_classifier_weights(build_backbone(norm="bn"), clf.state_dict())
    with pytest.raises(ValueError, match="shapes differ"):
        load_classifier_weights(_small(), clf.state_dict())
    with pytest.raises(ValueError, match="'vgg' has no residual stages"):
        build_backbone("vgg", "gn", widths=(32,), blocks=(1,))


def test_masked_group_norms_give_each_gn_the_padding_mask_at_its_stride():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), GroupNorm(2, 4))
    x = torch.randn(2, 1, 8, 12)
    pad = torch.ones(2, 1, 8, 12, dtype=torch.bool)
    pad[1, :, 5:, :] = False
    pad[1, :, :, 9:] = False
    m = mask_at(pad, (4, 6))
    assert m.shape == (2, 1, 4, 6) and m[1, 0].sum() == 3 * 5  # ceil(5 / 2) rows, ceil(9 / 2) columns
    with masked_group_norms(net, pad):
        got = net(x)
    h = net[0](x)
    torch.testing.assert_close(got, GF.group_norm(h, 2, net[1].weight, net[1].bias, mask=m))
    torch.testing.assert_close(net(x), GF.group_norm(h, 2, net[1].weight, net[1].bias))  # hooks removed
    assert not torch.allclose(got, net(x))
    with pytest.raises(ValueError, match=r"size \(3, 6\) is not the padded batch \(8, 12\)"):
        mask_at(pad, (3, 6))


def test_centernet_targets_decode_back_to_the_boxes():
    boxes = [torch.tensor([[10.0, 20.0, 42.0, 36.0], [60.0, 8.0, 70.0, 40.0]]), torch.tensor([[0.0, 0.0, 30.0, 30.0]])]
    labels = [torch.tensor([3, 1]), torch.tensor([0])]
    t = heatmap_targets(boxes, labels, 4, (16, 24))
    # the first box: centre (26, 28) px -> (6.5, 7.0) cells -> cell (y 7, x 6), offset (0.5, 0), size (8, 4)
    assert t["heatmap"][0, 3, 7, 6] == 1 and t["heatmap"].max() == 1 and int((t["heatmap"] == 1).sum()) == 3
    assert t["cell"][0].tolist() == [7, 6] and t["offset"][0].tolist() == [0.5, 0.0] and t["size"][0].tolist() == [8, 4]
    # outputs that are the targets decode to the boxes, each with score 1: box AP 1
    logits = torch.logit(t["heatmap"].clamp(1e-6, 1 - 1e-6))
    size, off = torch.zeros(2, 2, 16, 24), torch.zeros(2, 2, 16, 24)
    for n, (cy, cx), s, o in zip(t["batch"], t["cell"], t["size"], t["offset"]):
        size[n, :, cy, cx], off[n, :, cy, cx] = s, o
    dets = decode_centers(logits, size, off, [(64, 96), (64, 96)], top_k=3)
    for d, b in zip(dets, boxes):
        top = d["scores"] > 0.99
        assert sorted(map(tuple, d["boxes"][top].tolist())) == sorted(map(tuple, b.tolist()))
    assert box_ap([{"boxes": b, "labels": lab} for b, lab in zip(boxes, labels)], dets)["AP"] == pytest.approx(1.0)


def test_focal_loss_hand_value():
    # one positive cell with p = 0.8, one negative with target 0.5 and p = 0.3, one padded cell not counted
    logits = torch.logit(torch.tensor([0.8, 0.3, 0.9])).reshape(1, 1, 1, 3)
    target = torch.tensor([1.0, 0.5, 0.0]).reshape(1, 1, 1, 3)
    valid = torch.tensor([True, True, False]).reshape(1, 1, 1, 3)
    want = -(0.2 ** 2 * math.log(0.8) + 0.5 ** 4 * 0.3 ** 2 * math.log(0.7))
    assert float(focal_loss(logits, target, valid)) == pytest.approx(want, rel=1e-5)


def test_box_coding_iou_and_nms():
    p = torch.tensor([[0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 9.0, 7.0]])
    g = torch.tensor([[2.0, 1.0, 14.0, 17.0], [4.0, 4.0, 10.0, 8.0]])
    torch.testing.assert_close(decode_boxes(p, encode_boxes(p, g)), g)
    assert encode_boxes(p, p).abs().max() == 0
    iou = box_iou(torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[5.0, 0, 15, 10], [20.0, 20, 30, 30]]))
    torch.testing.assert_close(iou, torch.tensor([[50 / 150, 0.0]]))
    boxes = torch.tensor([[0.0, 0, 10, 10], [1.0, 0, 11, 10], [20.0, 20, 30, 30], [0.0, 0, 10, 5]])
    keep = nms(boxes, torch.tensor([0.5, 0.9, 0.3, 0.8]), 0.5)
    assert keep.tolist() == [1, 3, 2]  # box 0 overlaps box 1 (IoU 9/11); box 3 overlaps box 1 by 45/105


def test_sample_rois_64_per_image_at_most_a_quarter_foreground():
    g = torch.Generator().manual_seed(0)
    gt = torch.tensor([[10.0, 10.0, 40.0, 40.0], [50.0, 60.0, 90.0, 100.0]])
    jittered = (gt[None] + torch.randn(20, 2, 4, generator=g) * 2).reshape(40, 4)  # mostly foreground
    corners = torch.rand(60, 4, generator=g) * 100
    random = torch.stack([corners[:, [0, 2]].min(1).values, corners[:, [1, 3]].min(1).values,
                          corners[:, [0, 2]].max(1).values + 1, corners[:, [1, 3]].max(1).values + 1], 1)
    props = torch.cat([jittered, random])
    rois, cls, tgt, obj = sample_rois(props, gt, torch.tensor([4, 7]), 10, (112, 120), g)
    assert rois.shape == (ROIS_PER_IMAGE, 4) and cls.shape == (ROIS_PER_IMAGE,)
    fg = cls < 10
    assert int(fg.sum()) == int(FG_FRACTION * ROIS_PER_IMAGE)
    iou = box_iou(rois, gt)
    assert torch.all(iou[fg].max(1).values >= 0.5) and torch.all(iou[~fg].max(1).values < 0.5)
    assert torch.equal(cls[fg], torch.tensor([4, 7])[iou[fg].argmax(1)])
    assert torch.equal(tgt[fg], gt[iou[fg].argmax(1)])
    assert torch.equal(obj[fg], iou[fg].argmax(1)) and torch.all(obj[~fg] == -1)
    # no objects, no proposals: 64 background RoIs (the whole image)
    rois, cls, _, _ = sample_rois(torch.zeros(0, 4), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 10, (96, 100))
    assert rois.shape == (64, 4) and torch.all(cls == 10) and rois[0].tolist() == [0, 0, 100, 96]


@pytest.mark.parametrize("backbone_norm,head_norm", [("gn", "gn"), ("bn-frozen", "bn"), ("bn", "none"), ("none", "gn")])
def test_centernet_shapes_with_every_norm(batch, backbone_norm, head_norm):
    torch.manual_seed(2)
    m = CenterNet(_small(backbone_norm, workers=2 if backbone_norm == "bn" else 1), 10, head_norm,
                  head_workers=2 if head_norm == "bn" else 1, groups=8, neck_width=32, head_width=32)
    out = m(batch.images, batch.pad_mask)
    hp, wp = batch.images.shape[-2:]
    assert out["heatmap"].shape == (2, 10, hp // 4, wp // 4) and out["size"].shape == (2, 2, hp // 4, wp // 4)
    losses = m.losses(batch)
    assert set(losses) == {"heatmap", "size", "offset"} and all(torch.isfinite(v) for v in losses.values())
    m.eval()
    dets = m.detect(batch)
    for d, (h, w) in zip(dets, batch.image_sizes):
        assert d["boxes"].shape[1] == 4 and len(d["boxes"]) <= 100
        assert torch.all(d["boxes"][:, 2] <= w) and torch.all(d["boxes"][:, 3] <= h) and torch.all(d["boxes"] >= 0)


def _train(model, batch, steps, lr=2e-3):
    opt = torch.optim.Adam(model.parameters(), lr)
    totals = []
    for _ in range(steps):
        loss = sum(model.losses(batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        totals.append(float(loss.detach()))
    return totals


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["centernet", "two_stage", "two_stage_masks", "unet"])
def test_losses_fall_over_a_few_steps(batch, kind):
    torch.manual_seed(3)
    bb = _small("gn")
    if kind == "centernet":
        m = CenterNet(bb, 10, "gn", groups=8, neck_width=32, head_width=32, masked_stats=True)
    elif kind.startswith("two_stage"):
        m = TwoStageDetector(bb, 10, "bn", head_workers=2, groups=8, neck_width=32, conv_dim=16, fc_dim=64,
                             masked_stats=True, masks=kind.endswith("masks"))
    else:
        m = UNet(bb, 10, "gn", groups=8, decoder_width=16, masked_stats=True)
    totals = _train(m, batch, 8, lr=1e-2 if kind == "unet" else 2e-3)
    assert all(math.isfinite(t) for t in totals)
    assert totals[-1] < 0.8 * totals[0], totals


def test_two_stage_detect_and_unet_segment(batch):
    torch.manual_seed(4)
    m = TwoStageDetector(_small("gn"), 10, "gn", groups=8, neck_width=32, conv_dim=16, fc_dim=64).eval()
    for d, (h, w) in zip(m.detect(batch), batch.image_sizes):
        assert d["boxes"].shape == (len(d["scores"]), 4) and len(d["scores"]) <= 100
        assert torch.all(d["scores"] > 0.05) and torch.all(d["labels"] < 10)
        assert torch.all(d["scores"][:-1] >= d["scores"][1:])
    u = UNet(_small("gn"), 10, "gn", groups=8, decoder_width=16)
    assert u(batch.images).shape == (2, 11) + tuple(batch.images.shape[-2:])
    seg = u.segment(batch)
    assert torch.all(seg[~batch.pad_mask[:, 0]] == SEMANTIC_IGNORE) and seg[batch.pad_mask[:, 0]].max() <= 10
    coarse = UNet(_small("gn"), 10, "gn", groups=8, decoder_width=16, decoder_stride=4)
    assert len(coarse.steps) == len(u.steps) - 2  # no decoder steps at strides 2 and 1
    logits = coarse(batch.images)
    assert logits.shape == (2, 11) + tuple(batch.images.shape[-2:])
    # the classifier runs at stride 4 and its map is upsampled bilinearly to the input
    seen = []
    coarse.classifier.register_forward_hook(lambda mod, inp, out: seen.append(out))
    logits = coarse(batch.images)
    assert seen[0].shape[-2:] == (batch.images.shape[-2] // 4, batch.images.shape[-1] // 4)
    torch.testing.assert_close(logits, nn.functional.interpolate(seen[0], scale_factor=4.0, mode="bilinear"))


def test_masked_stats_change_only_padded_batches(batch):
    torch.manual_seed(5)
    bb = _small("gn")
    plain = CenterNet(bb, 10, "gn", groups=8, neck_width=32, head_width=32)
    masked = CenterNet(bb, 10, "gn", groups=8, neck_width=32, head_width=32, masked_stats=True)
    masked.load_state_dict(plain.state_dict())
    assert not torch.allclose(plain(batch.images, batch.pad_mask)["heatmap"],
                              masked(batch.images, batch.pad_mask)["heatmap"])
    full = torch.ones_like(batch.pad_mask)
    torch.testing.assert_close(plain(batch.images, full)["heatmap"], masked(batch.images, full)["heatmap"])


@pytest.mark.skipif(not kernels.is_available(), reason="compiled kernels not built")
def test_gn_layers_run_on_the_compiled_kernels(batch):
    torch.manual_seed(6)
    m = CenterNet(_small("gn"), 10, "gn", groups=8, neck_width=32, head_width=32)
    n_gn = sum(isinstance(x, GroupNorm) for x in m.modules())
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        sum(m.losses(batch).values()).backward()
    names = [e.name for e in prof.events()]
    assert names.count("groupnorm::gn_forward") >= n_gn and names.count("groupnorm::gn_backward") >= n_gn
    # a masked call takes the plain path: with masked statistics on a padded batch no GN reaches the kernels
    m.masked_stats = True
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        m.losses(batch)
    assert "groupnorm::gn_forward" not in [e.name for e in prof.events()]


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_classes=0"):
        CenterNet(_small(), 0)
    with pytest.raises(ValueError, match="num_classes=0"):
        UNet(_small(), 0)
    for bad in (3, 0, 16):
        with pytest.raises(ValueError, match=f"decoder_stride={bad}"):
            UNet(_small(), 10, decoder_stride=bad)
    with pytest.raises(ValueError, match="coarsest stride 2 must be a power of two >= 4"):
        CenterNet(build_backbone(norm="gn", widths=(16,), blocks=(1,), groups=8, first_stride=1), 3)


def test_mask_targets_and_pasting():
    m = torch.zeros(1, 60, 80, dtype=torch.bool)
    m[0, 10:30, 20:50] = True  # the object's box: x 20..50, y 10..30
    box = torch.tensor([[20.0, 10.0, 50.0, 30.0]])
    assert torch.all(mask_targets([m], box, torch.tensor([0])) == 1)
    wide = torch.tensor([[20.0, 10.0, 80.0, 30.0]])  # twice as wide: the left half is the object
    t = mask_targets([torch.zeros(0, 60, 80, dtype=torch.bool), m], wide, torch.tensor([0]))[0]
    assert torch.all(t[:, :14] == 1) and torch.all(t[:, 14:] == 0)
    pasted = paste_masks(torch.ones(1, 28, 28), box, (60, 80))[0]
    assert torch.equal(pasted >= 0.5, m[0])
    half = paste_masks(t[None], wide, (60, 80))[0] >= 0.5
    assert torch.equal(half, m[0])
    # a canvas's objects: targets on their own boxes pasted back are their masks (bilinear rounding at the edges)
    c = canvas_set(SAMPLE_DATA, "val", 1, 3)[0]
    masks, boxes = torch.from_numpy(c.masks), torch.from_numpy(c.boxes).float()
    back = paste_masks(mask_targets([masks], boxes, torch.arange(len(boxes))), boxes, c.size) >= 0.5
    inter = (back & masks).sum((1, 2)).float()
    union = (back | masks).sum((1, 2)).float()
    assert torch.all(inter / union > 0.8), inter / union


def test_two_stage_with_masks(batch):
    torch.manual_seed(7)
    m = TwoStageDetector(_small("gn"), 10, "gn", groups=8, neck_width=32, conv_dim=16, fc_dim=64, masks=True)
    losses = m.losses(batch)
    assert set(losses) == {"rpn_heatmap", "rpn_size", "rpn_offset", "cls", "box", "mask"}
    assert 0.5 < float(losses["mask"].detach()) < 0.9  # about log 2 at the head's near-zero initial logits
    sum(losses.values()).backward()
    assert m.mask_head.out.weight.grad.abs().sum() > 0
    m.eval()
    for d, size in zip(m.detect(batch), batch.image_sizes):
        assert d["masks"].shape == (len(d["boxes"]),) + tuple(size)
        assert torch.all((d["masks"] >= 0) & (d["masks"] <= 1))
