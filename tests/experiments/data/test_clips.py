"""Moving clips: bouncing trajectories, exact resizing, rendering, determinism, the harness's split interface,
and a label whose motion part no single frame tells (exactly, and on rendered clips) but several frames do."""
import dataclasses
import os

import numpy as np
import pytest
import torch

from groupnorm.experiments.data import epoch_batches, load_split, subset
from groupnorm.experiments.data.holdout import holdout_split
from groupnorm.experiments.data.clips import (MOTIONS, ClipSpec, ClipSplit, Draws, clip_info, clip_splits, fold,
                                              item_split, load_clips, make_clips, render, resize_items, trajectory)
from helpers import SAMPLE_DATA


@pytest.fixture(scope="module")
def sample_clips():
    return load_clips(SAMPLE_DATA, ClipSpec(frames=8), seed=0)


def test_trajectory_bounces_off_both_walls():
    # L = 5, u0 = 3, v = 2: u = 3, 5, 7, 9, 1, 3 (mod 10), folded: 3, 5, 3, 1, 1, 3
    p = trajectory(np.array([3, 0]), np.array([2, 0]), 6, 5)
    assert p[:, 0].tolist() == [3, 5, 3, 1, 1, 3] and p[:, 1].tolist() == [0] * 6
    assert fold(np.arange(10), 5).tolist() == [0, 1, 2, 3, 4, 5, 4, 3, 2, 1]
    # every step moves v pixels, reflected at a wall: the position stays in 0..L
    d = Draws(7, 0)
    start, vel = d.ints(36, (500, 2)), d.ints(17, (500, 2)) + 1
    q = trajectory(start, vel, 16, 18)
    assert q.min() == 0 and q.max() == 18
    step = np.abs(np.diff(q, axis=1))
    assert np.all(step <= vel[:, None, :])
    interior = (q[:, :-1] - vel[:, None] >= 0) & (q[:, :-1] + vel[:, None] <= 18)  # no wall within reach
    assert np.all(step[interior] == np.broadcast_to(vel[:, None], step.shape)[interior])


def test_one_frame_has_the_same_law_under_every_motion_exactly():
    """The exact computation over the generator's distribution: for every motion type, speed and frame t, the
    law of the item's position (u0 uniform on Z_2L^2, enumerated) is the same fold law, so a frame (a function
    of the item and its position) tells nothing about the motion; the law of two consecutive positions differs
    between every two motion types."""
    spec = ClipSpec(canvas=32, frames=16)
    L = spec.free
    u = np.stack(np.meshgrid(np.arange(2 * L), np.arange(2 * L), indexing="ij"), -1).reshape(-1, 2)
    law_1d = np.array([1] + [2] * (L - 1) + [1]) / (2 * L)
    want = np.outer(law_1d, law_1d)
    pairs = {}
    for mi, m in enumerate(MOTIONS):
        for v in spec.speeds:
            p = trajectory(u, spec.velocity(np.full(len(u), mi), np.full(len(u), v)), spec.frames, L)
            for t in range(spec.frames):
                hist = np.zeros((L + 1, L + 1))
                np.add.at(hist, (p[:, t, 0], p[:, t, 1]), 1)
                np.testing.assert_array_equal(hist / len(u), want, err_msg=f"{m} speed {v} frame {t}")
            pairs[m, v] = {tuple(r) for r in p[:, :3].reshape(len(u), -1)}
    for (m1, v1), s1 in pairs.items():
        for (m2, v2), s2 in pairs.items():
            if m1 != m2:  # three frames: the supports of different motion types never meet
                assert not s1 & s2, (m1, v1, m2, v2)


def test_draws_are_exactly_keyed_and_uniform():
    a, b = Draws(3, 1).ints(36, 72000), Draws(3, 1).ints(36, 72000)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, Draws(3, 2).ints(36, 72000))
    counts = np.bincount(a, minlength=36)
    assert counts.size == 36 and np.all(np.abs(counts - 2000) < 5 * np.sqrt(2000))  # 5 sigma
    # the first outputs of PCG64 keyed by SeedSequence([0, 0]): fixed for every machine and numpy version
    assert Draws(0, 0).ints(1000, 5).tolist() == [271, 617, 24, 533, 971]
    p = Draws(1, 0).permutation(50)
    assert sorted(p.tolist()) == list(range(50))
    with pytest.raises(ValueError, match="key"):
        Draws(-1)
    with pytest.raises(ValueError, match="n=0"):
        Draws(1).ints(0, 3)


def test_resize_items_is_the_exact_area_mean():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (5, 2, 28, 28), dtype=np.uint8)
    got = resize_items(x, 14)
    blocks = x.reshape(5, 2, 14, 2, 14, 2).astype(np.int64).sum(axis=(3, 5))
    np.testing.assert_array_equal(got, (2 * blocks + 4) // 8)  # the 2x2 mean, halves rounded up
    np.testing.assert_array_equal(resize_items(x, 28), x)
    # non-square: the central square; 3 -> 2 weights (2 1 0 / 0 1 2) / 3 per axis
    y = np.arange(4 * 3, dtype=np.uint8).reshape(1, 1, 4, 3) * 20
    sq = y[0, 0, 0:3].astype(np.int64)
    w = np.array([[2, 1, 0], [0, 1, 2]])
    np.testing.assert_array_equal(resize_items(y, 2)[0, 0], (2 * (w @ sq @ w.T) + 9) // 18)
    # a large photograph: converted to int64 a few rows at a time, the same exact mean
    big = rng.integers(0, 256, (1, 3, 1500, 1200), dtype=np.uint8)
    m, i, j = 1200, np.arange(14)[:, None], np.arange(1200)[None, :]
    w = np.clip(np.minimum((i + 1) * m, (j + 1) * 14) - np.maximum(i * m, j * 14), 0, None)
    assert w.sum(1).tolist() == [m] * 14
    np.testing.assert_array_equal(resize_items(big, 14)[0], (2 * (w @ big[0, :, 150:1350].astype(np.int64) @ w.T)
                                                            + m * m) // (2 * m * m))
    with pytest.raises(ValueError, match="uint8"):
        resize_items(x.astype(np.float32), 14)


def test_clips_show_each_item_at_its_trajectory(sample_clips):
    train, val = sample_clips
    items = load_split(SAMPLE_DATA, "train")
    spec = train.spec
    assert spec.item_size == 14 and spec.free == 18
    np.testing.assert_array_equal(train.items.images.numpy(), resize_items(items.images.numpy(), 14))
    idx = torch.arange(0, 320, 7)
    clips = train.clips(idx)
    assert clips.shape == (len(idx), 1, 8, 32, 32) and clips.dtype == torch.uint8
    pos = trajectory(train.start[idx].numpy(), spec.velocity(train.motion[idx].numpy(), train.speed[idx].numpy()),
                     8, 18)
    for k, i in enumerate(idx.tolist()):
        for t in range(8):
            r, c = pos[k, t]
            want = torch.zeros(1, 32, 32, dtype=torch.uint8)
            want[:, r:r + 14, c:c + 14] = train.items.images[i]
            assert torch.equal(clips[k, :, t], want), (i, t)
    # validation clips show the test split's items
    test_items = resize_items(load_split(SAMPLE_DATA, "test").images.numpy(), 14)
    np.testing.assert_array_equal(val.items.images.numpy(), test_items)
    assert len(train) == 320 and len(val) == 160


def test_labels_are_class_times_motion_and_balanced(sample_clips):
    train, _ = sample_clips
    items = load_split(SAMPLE_DATA, "train")
    assert torch.equal(train.labels, items.labels * 4 + train.motion)
    assert train.info.num_classes == 40 and train.info.classes[:5] == ("0/still", "0/horizontal", "0/vertical",
                                                                       "0/diagonal", "1/still")
    for c in range(10):  # within each item class, motion counts differ by at most one
        counts = torch.bincount(train.motion[items.labels == c], minlength=4)
        assert int(counts.max() - counts.min()) <= 1
    assert set(train.speed.tolist()) == {1, 2, 3}


def test_deterministic_from_the_seed():
    a, _ = load_clips(SAMPLE_DATA, ClipSpec(frames=8), seed=0)
    assert load_clips(SAMPLE_DATA, ClipSpec(frames=8), seed=0)[0] is a  # cached per process
    b, _ = clip_splits(load_split(SAMPLE_DATA, "train"), load_split(SAMPLE_DATA, "test"), ClipSpec(frames=8), 0)
    c, _ = load_clips(SAMPLE_DATA, ClipSpec(frames=8), seed=1)
    for name in ("motion", "speed", "start"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.start, c.start)
    assert torch.equal(a.clips(torch.arange(10)), b.clips(torch.arange(10)))


def test_normalization_uses_the_exact_clip_pixel_statistics(sample_clips):
    train, _ = sample_clips
    pixels = train.clips(torch.arange(len(train))).double() / 255  # every training item once
    assert abs(float(pixels.mean()) - train.info.mean[0]) < 1e-12
    assert abs(float(pixels.std(unbiased=False)) - train.info.std[0]) < 1e-9
    x, y = next(train.eval_batches(len(train)))
    assert abs(float(x.double().mean())) < 1e-5 and abs(float(x.double().std()) - 1) < 1e-4
    assert torch.equal(y, train.labels)


def test_split_interface_batches_subsets_and_dataset(sample_clips):
    train, val = sample_clips
    xs = list(val.eval_batches(64))
    assert [x.shape[0] for x, _ in xs] == [64, 64, 32] and xs[0][0].shape == (64, 1, 8, 32, 32)
    assert [x.shape[0] for x, _ in val.eval_batches(64, drop_last=True)] == [64, 64]
    x0, y0 = train[5]
    assert x0.shape == (1, 8, 32, 32) and y0 == int(train.labels[5])
    loader = torch.utils.data.DataLoader(train, batch_size=4)
    xb, yb = next(iter(loader))
    assert xb.shape == (4, 1, 8, 32, 32) and torch.equal(xb[1], train[1][0]) and torch.equal(yb, train.labels[:4])
    pinned = dataclasses.replace(train, pin_memory=False)  # what the training loop does with its splits
    assert isinstance(pinned, ClipSplit) and torch.equal(pinned.labels, train.labels)
    rest, held = holdout_split(train, 40)  # the lr sweep's held-out clips: clips of training items
    assert isinstance(held, ClipSplit) and (len(rest), len(held)) == (280, 40)
    assert not set(rest.item.tolist()) & set(held.item.tolist())
    sub = subset(train, 80, seed=0)
    assert isinstance(sub, ClipSplit) and len(sub) == 80
    assert torch.equal(sub.labels, sub.items.labels[sub.item] * 4 + sub.motion)
    # training batches: a part of the global batch equals that share of the whole; augmentation keeps labels
    whole = list(epoch_batches(train, 16, seed=3, epoch=1))
    half = list(epoch_batches(train, 16, seed=3, epoch=1, part=(1, 2)))
    assert len(whole) == 20 and all(torch.equal(h[0], w[0][8:]) and torch.equal(h[1], w[1][8:])
                                    for h, w in zip(half, whole))
    plain = list(epoch_batches(train, 16, seed=3, epoch=1, augment=False))
    assert all(torch.equal(p[1], w[1]) for p, w in zip(plain, whole))
    assert not torch.equal(whole[0][0], plain[0][0])
    again = list(epoch_batches(train, 16, seed=3, epoch=1))
    assert all(torch.equal(a[0], w[0]) for a, w in zip(again, whole))


def test_augmented_clips_keep_item_and_motion():
    train, _ = load_clips(SAMPLE_DATA, ClipSpec(frames=6), seed=0)
    idx = torch.tensor([3, 4])
    flipped = train.clips(idx, speed=[2, 1], start=[[0, 0], [35, 1]], flip=[True, False])
    item = train.items.images[3]
    assert torch.equal(flipped[0, :, 0, 0:14, 0:14], item.flip(-1))
    motion = MOTIONS[int(train.motion[4])]
    want = trajectory(np.array([35, 1]), np.array(ClipSpec().velocity(MOTIONS.index(motion), 1)), 6, 18)
    for t in range(6):
        r, c = want[t]
        assert torch.equal(flipped[1, :, t, r:r + 14, c:c + 14], train.items.images[4])


def _bbox_corner(frames: torch.Tensor) -> np.ndarray:
    """(B, T, 2) top-left corner of the nonzero pixels of each frame of uint8 (B, C, T, H, W) clips."""
    on = frames.amax(1) > 0  # (B, T, H, W)
    rows, cols = on.any(3), on.any(2)
    return torch.stack([rows.float().argmax(2), cols.float().argmax(2)], -1).numpy()


def test_a_single_frame_is_at_chance_on_motion_and_three_frames_solve_it():
    """Rendered clips: the best 1-frame predictor fit on half of 4000 clips (per-motion laws of the item's row
    and column in that frame, naive Bayes) is at chance (1/4) on the other half, at the first, a middle and the
    last frame; the axes along which the bounding box moves over the clip give the motion type every time."""
    spec = ClipSpec(frames=8)
    items = item_split(load_split(SAMPLE_DATA, "train"), spec.item_size)
    d = Draws(11, 5)
    n = 4000
    clips = ClipSplit(items, torch.from_numpy(d.ints(len(items), n)), torch.from_numpy(d.ints(4, n)),
                      torch.from_numpy(np.array(spec.speeds)[d.ints(3, n)]), torch.from_numpy(d.ints(36, (n, 2))),
                      spec, clip_info(items, spec))
    corner = _bbox_corner(clips.clips(torch.arange(n)))
    motion = clips.motion.numpy()
    fit, test = slice(0, n // 2), slice(n // 2, n)
    for t in (0, 4, 7):
        logp = np.zeros((n - n // 2, 4))
        for m in range(4):
            for axis in range(2):
                counts = np.bincount(corner[fit][motion[fit] == m, t, axis], minlength=32) + 0.5
                logp[:, m] += np.log(counts / counts.sum())[corner[test][:, t, axis]]
        acc = float((logp.argmax(1) == motion[test]).mean())
        assert abs(acc - 0.25) < 4 * np.sqrt(0.25 * 0.75 / (n // 2)), (t, acc)  # 4 sigma of chance
    moves = np.abs(np.diff(corner, axis=1)).max(1) > 0  # (B, 2): rows move, columns move
    axes = np.array([spec.velocity(m, 1) for m in range(4)]) > 0
    guess = np.array([next(m for m in range(4) if np.array_equal(axes[m], mv)) for mv in moves])
    assert np.array_equal(guess, motion)


def test_items_from_an_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 2)):
        for cls in ("cats", "dogs"):
            os.makedirs(tmp_path / split / cls)
            for k in range(n):
                px = rng.integers(1, 256, (20, 30, 3), dtype=np.uint8)
                Image.fromarray(px).save(tmp_path / split / cls / f"{k}.png")
    train, val = load_clips(str(tmp_path), ClipSpec(canvas=16, frames=4, speeds=(1,)))
    assert len(train) == 6 and len(val) == 4 and train.info.channels == 3 and train.spec.item_size == 7
    assert train.info.classes[:2] == ("cats/still", "cats/horizontal") and train.info.num_classes == 8
    px = np.asarray(Image.open(tmp_path / "train" / "cats" / "0.png")).transpose(2, 0, 1)[None]
    np.testing.assert_array_equal(train.items.images[0].numpy(), resize_items(px, 7)[0])
    x, y = next(train.eval_batches(6))
    assert x.shape == (6, 3, 4, 16, 16) and y.max() < 8


@pytest.mark.parametrize("kwargs, match", [
    (dict(canvas=10, item_size=9), "item_size=9"),
    (dict(canvas=32, speeds=(1, 18)), "speeds=.*L - 1 = 17"),
    (dict(frames=0), "frames=0"),
    (dict(motions=("still", "spin")), "motions="),
    (dict(motions=("still", "still")), "motions="),
])
def test_bad_specs_are_clear(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ClipSpec(**kwargs)


def test_clip_parameters_out_of_range_are_refused(sample_clips):
    train, _ = sample_clips
    args = dict(items=train.items, item=train.item[:3], motion=train.motion[:3], speed=train.speed[:3],
                start=train.start[:3], spec=train.spec, info=train.info)
    with pytest.raises(ValueError, match=r"start values span 0\.\.36, outside 0\.\.35"):
        ClipSplit(**dict(args, start=torch.tensor([[0, 36], [1, 1], [2, 2]])))
    with pytest.raises(ValueError, match=r"motion values span .*outside 0\.\.3"):
        ClipSplit(**dict(args, motion=torch.tensor([0, 4, 1])))
    with pytest.raises(ValueError, match=r"speeds \[5\] are not among"):
        ClipSplit(**dict(args, speed=torch.tensor([1, 5, 2])))
    with pytest.raises(ValueError, match=r"item values span .*outside 0\.\.319"):
        ClipSplit(**dict(args, item=torch.tensor([0, 320, 1])))
    with pytest.raises(ValueError, match=r"start has shape \(3,\), expected \(3, 2\)"):
        ClipSplit(**dict(args, start=torch.tensor([0, 1, 2])))


def test_items_of_another_size_are_refused(sample_clips):
    train, _ = sample_clips
    with pytest.raises(ValueError, match="item_size=10"):
        make_clips(train.items, ClipSpec(item_size=10), train.info)
    with pytest.raises(TypeError, match="Split"):
        clip_splits([1, 2], [3], ClipSpec())


def test_render_places_items_exactly():
    items = torch.arange(2 * 2 * 2 * 2, dtype=torch.uint8).view(2, 2, 2, 2) + 1
    pos = torch.tensor([[[0, 0], [3, 1]], [[1, 2], [0, 0]]])
    out = render(items, pos, 5)
    assert out.shape == (2, 2, 2, 5, 5)
    assert torch.equal(out[0, :, 1, 3:5, 1:3], items[0]) and int(out[0, :, 1].sum()) == int(items[0].sum())
    assert torch.equal(out[1, :, 0, 1:3, 2:4], items[1]) and int(out[1, :, 0].sum()) == int(items[1].sum())
