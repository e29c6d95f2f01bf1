"""The detection canvases: fixed bits for a seed, items only from their split, masks/boxes/semantic consistent,
the bilinear resize against torch's, and detectron2-style padded batches."""
import hashlib

import numpy as np
import pytest
import torch

from groupnorm.experiments.data import canvases as C
from groupnorm.experiments.data import MEAN, STD, load_split
from helpers import SAMPLE_DATA


def _digest(cs):
    h = hashlib.sha256()
    for c in cs:
        for a in (c.image, c.boxes, c.labels, c.masks, c.semantic, c.item_ids):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(c.texture.encode())
    return h.hexdigest()


# computed once from the sample IDX files and scikit-image's photographs: a change of any bit of a canvas (or of
# the order of the draws) shows here, on any machine
GOLDEN = {"train": "3336d54a2e2a71c5f965e678a7941f2b982b45ea33d1f25eae48a70cd4f02fc7",
          "val": "bd9096cbd5c9dc5d105e3c24eaecb0b269328989a72c738df9606057caad28d4"}


@pytest.mark.parametrize("split", ["train", "val"])
def test_same_seed_same_canvases_on_any_machine(split):
    assert _digest(C.canvas_set(SAMPLE_DATA, split, 4, 0)) == GOLDEN[split]


def test_canvas_i_depends_on_seed_split_and_i_only():
    a, b = C.canvas_set(SAMPLE_DATA, "train", 50, 3), C.canvas_set(SAMPLE_DATA, "train", 7, 3)
    assert _digest([a[5]]) == _digest([b[5]]) == _digest([b[-2]])
    assert _digest([a[5]]) != _digest([C.canvas_set(SAMPLE_DATA, "train", 7, 4)[5]])
    assert _digest([a[5]]) != _digest([a[6]])


@pytest.mark.parametrize("split,idx_split", [("train", "train"), ("val", "test")])
def test_canvas_contents_are_consistent_and_items_come_from_their_split(split, idx_split):
    items = load_split(SAMPLE_DATA, idx_split)
    src = items.images[:, 0].numpy()
    counts, textures = [], set()
    for c in C.canvas_set(SAMPLE_DATA, split, 40, 1):
        h, w = c.size
        assert C.CANVAS_SIDES[0] <= h <= C.CANVAS_SIDES[1] and C.CANVAS_SIDES[0] <= w <= C.CANVAS_SIDES[1]
        k = len(c.labels)
        counts.append(k)
        textures.add(c.texture)
        assert c.boxes.shape == (k, 4) and c.masks.shape == (k, h, w) and c.semantic.shape == (h, w)
        assert c.masks.sum(0).max() <= 1  # no two items share a pixel
        want_sem = np.zeros((h, w), dtype=np.uint8)
        for m, box, label, item in zip(c.masks, c.boxes, c.labels, c.item_ids):
            x0, y0, x1, y1 = box
            ys, xs = np.nonzero(m)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)  # tight box of the mask
            assert label == items.labels[item]
            assert x1 - x0 <= C.ITEM_SIDES[1] and y1 - y0 <= C.ITEM_SIDES[1]
            # the pasted pixels are the rescaled item of that split, with the rescaled side found among ITEM_SIDES
            crop = c.image[y0:y1, x0:x1][m[y0:y1, x0:x1]]
            assert any(_pasted_matches(src[item], s, m[y0:y1, x0:x1], crop)
                       for s in range(C.ITEM_SIDES[0], C.ITEM_SIDES[1] + 1))
            assert crop.min() >= C.MASK_THRESHOLD
            want_sem[m] = label + 1
        np.testing.assert_array_equal(c.semantic, want_sem)
        # the background is the half-contrast texture (<= 127) wherever no item is
        assert c.image[c.semantic == 0].max() <= 127
    assert min(counts) >= 1 and max(counts) <= C.ITEMS_PER_CANVAS[1] and len(set(counts)) >= 4
    assert textures == set(C.TEXTURES)


def _pasted_matches(item, side, fg, pixels):
    r = C.resize_bilinear(item, side, side)
    m = r >= C.MASK_THRESHOLD
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    if rows.size == 0:
        return False
    m2 = m[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    if m2.shape != fg.shape or not np.array_equal(m2, fg):
        return False
    return np.array_equal(r[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1][m2], pixels)


@pytest.mark.parametrize("size", [(20, 20), (28, 28), (33, 41), (48, 48), (7, 60)])
def test_resize_bilinear_is_torchs_bilinear_rounded(size):
    img = np.random.default_rng(0).integers(0, 256, (28, 28)).astype(np.uint8)
    got = C.resize_bilinear(img, *size)
    ref = torch.nn.functional.interpolate(torch.from_numpy(img).double()[None, None], size=size, mode="bilinear",
                                          align_corners=False)[0, 0].numpy()
    assert got.shape == size and got.dtype == np.uint8
    assert np.abs(got - ref).max() <= 0.5 + 1e-9  # rounded to nearest (ties may go either way)
    np.testing.assert_array_equal(C.resize_bilinear(img, 28, 28), img)


def test_collate_pads_as_detectron2_with_a_mask():
    cs = [C.canvas_set(SAMPLE_DATA, "val", 6, 2)[i] for i in range(6)]
    b = C.collate(cs)
    hp, wp = b.images.shape[2:]
    assert hp % 32 == 0 and wp % 32 == 0
    assert hp - 32 < max(c.size[0] for c in cs) <= hp and wp - 32 < max(c.size[1] for c in cs) <= wp
    for i, c in enumerate(cs):
        h, w = c.size
        assert b.image_sizes[i] == (h, w)
        want = torch.zeros(hp, wp, dtype=torch.bool)
        want[:h, :w] = True
        assert torch.equal(b.pad_mask[i, 0], want)
        torch.testing.assert_close(b.images[i, 0, :h, :w], (torch.from_numpy(c.image).float() / 255 - MEAN) / STD)
        assert torch.all(b.images[i, 0][~want] == 0)
        assert torch.all(b.semantic[i][~want] == C.SEMANTIC_IGNORE)
        assert torch.equal(b.semantic[i, :h, :w], torch.from_numpy(c.semantic).long())
        assert torch.equal(b.boxes[i], torch.from_numpy(c.boxes).float()) and b.boxes[i].dtype == torch.float32
        assert torch.equal(b.labels[i], torch.from_numpy(c.labels)) and b.masks[i].shape[1:] == (h, w)
    assert C.collate(cs[:1], size_divisibility=1).images.shape[2:] == cs[0].size


@pytest.mark.parametrize("kwargs,match", [
    (dict(split="test"), "split='test' is not one of train, val"),
    (dict(count=0), "count=0 must be a positive integer"),
    (dict(seed=-1), "seed=-1 must be a non-negative integer"),
])
def test_bad_arguments_name_the_value(kwargs, match):
    args = dict(split="train", count=3, seed=0) | kwargs
    with pytest.raises(ValueError, match=match):
        C.canvas_set(SAMPLE_DATA, **args)


def test_collate_errors():
    with pytest.raises(ValueError, match="at least one canvas"):
        C.collate([])
    with pytest.raises(ValueError, match="size_divisibility=0"):
        C.collate([C.canvas_set(SAMPLE_DATA, "train", 1, 0)[0]], size_divisibility=0)


def test_holdout_canvases_come_from_the_held_out_training_items_only():
    from groupnorm.experiments.data.holdout import holdout_split

    rest, held = holdout_split(load_split(SAMPLE_DATA, "train"))
    for split, part in (("holdout-train", rest), ("holdout-val", held)):
        cs = C.canvas_set(SAMPLE_DATA, split, 12, 0)
        src = part.images[:, 0].numpy()
        assert np.array_equal(cs.items, src) and np.array_equal(cs.labels, part.labels.numpy())
        assert _digest(cs) == _digest(C.canvas_set(SAMPLE_DATA, split, 12, 0))  # deterministic
    rest_bytes = {x.tobytes() for x in rest.images[:, 0].numpy()}
    held_items = C.canvas_set(SAMPLE_DATA, "holdout-val", 12, 0).items
    assert not any(x.tobytes() in rest_bytes for x in held_items)  # no held-out item is trained on
    test_bytes = {x.tobytes() for x in load_split(SAMPLE_DATA, "test").images[:, 0].numpy()}
    assert not any(x.tobytes() in test_bytes for x in held_items)  # nor a test item validated on
    # each split its own draws: the same index and seed give another canvas in every split
    firsts = {s: _digest([C.canvas_set(SAMPLE_DATA, s, 3, 0)[1]]) for s in C.CANVAS_SPLITS}
    assert len(set(firsts.values())) == 4
    sizes = {s: C.canvas_set(SAMPLE_DATA, s, 3, 0)[1].size for s in C.CANVAS_SPLITS}
    assert len(set(sizes.values())) > 1  # the canvases' geometry differs too, not only their items
