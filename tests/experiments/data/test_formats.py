"""--data-dir formats: detection, CIFAR-10/100 and ImageFolder as the harness serves them, broken data sets,
and `groupnorm reproduce` on tiny generated directories of each format (the repo ships none)."""
import os
import pickle
import random

import numpy as np
import pytest
import torch

from groupnorm.cli import main
from groupnorm.experiments.data import imagefolder
from groupnorm.experiments.data import (DataSpec, channel_stats, detect_format, epoch_batches, load_data,
                                        read_dataset)
from groupnorm.experiments.data.holdout import write_idx
from helpers import SAMPLE_DATA, results_lines, smoke_args, write_cifar


def _dump(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def write_idx_dir(root, n_train=64, n_test=32, size=12):
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte.gz"), rng.integers(0, 256, (n, size, size)))
        write_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz"), np.arange(n) % 10)
    return str(root)


def write_imagefolder(root, classes=("cat", "dog", "eel"), per_class=6, val_per_class=2):
    """PNG and JPEG images of a few odd sizes in train/<class>/ and val/<class>/."""
    from PIL import Image

    rng = np.random.default_rng(2)
    for split, n in (("train", per_class), ("val", val_per_class)):
        for c in classes:
            d = os.path.join(root, split, c)
            os.makedirs(d, exist_ok=True)
            for i in range(n):
                h, w = int(rng.integers(10, 20)), int(rng.integers(10, 20))
                img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
                img.save(os.path.join(d, f"{i}.{'png' if i % 2 else 'JPEG'}"))
    return str(root)


def test_detection_of_each_format(tmp_path):
    assert detect_format(SAMPLE_DATA) == "idx"
    assert detect_format(write_cifar(str(tmp_path / "c10"))) == "cifar10"
    write_cifar(str(tmp_path / "parent" / "cifar-100-python"), "cifar100")
    assert detect_format(str(tmp_path / "parent")) == "cifar100"
    assert detect_format(write_imagefolder(str(tmp_path / "if"))) == "imagefolder"
    os.makedirs(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="empty.*holds no data set"):
        detect_format(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="data directory not found: .*nowhere"):
        read_dataset(DataSpec(str(tmp_path / "nowhere")))
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz not found in .*c10"):
        read_dataset(DataSpec(str(tmp_path / "c10"), "idx"))  # forced format, other files
    with pytest.raises(ValueError, match="dataset='mnist'"):
        DataSpec(SAMPLE_DATA, "mnist")


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_cifar_splits_statistics_and_batches(tmp_path, kind):
    root = write_cifar(str(tmp_path), kind)
    train, val = load_data(root, None, None)
    nc = 10 if kind == "cifar10" else 100
    assert train.images.shape == (80, 3, 32, 32) and len(val) == 16
    assert train.info.num_classes == nc and train.info.channels == 3 and train.info.crop_pad == 4
    px = train.images.double().div(255).transpose(0, 1).reshape(3, -1)
    np.testing.assert_allclose(train.info.mean, px.mean(1).numpy(), rtol=1e-12)
    np.testing.assert_allclose(train.info.std, px.std(1, unbiased=False).numpy(), rtol=1e-10)
    x, y = next(epoch_batches(train, 16, seed=0, epoch=0, augment=False))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32
    np.testing.assert_allclose(x.double().mean(dim=(0, 2, 3)).numpy(), 0.0, atol=0.2)
    # augmented batches: seeded, and the parts of a 2-process job are the halves of the global batch
    a = list(epoch_batches(train, 16, seed=3, epoch=1))
    halves = [list(epoch_batches(train, 16, seed=3, epoch=1, part=(r, 2))) for r in range(2)]
    assert all(torch.equal(xa, torch.cat([h0[0], h1[0]])) for (xa, _), h0, h1 in zip(a, *halves))
    assert not torch.equal(a[0][0], next(epoch_batches(train, 16, seed=3, epoch=2))[0])


def test_channel_stats_is_exact():
    x = np.random.default_rng(0).integers(0, 256, (7, 2, 5, 3), dtype=np.uint8)
    mean, std = channel_stats(x)
    f = x.astype(np.float64) / 255
    np.testing.assert_allclose(mean, f.mean(axis=(0, 2, 3)), rtol=1e-13)
    np.testing.assert_allclose(std, f.std(axis=(0, 2, 3)), rtol=1e-12)


def test_imagefolder_scan_transforms_and_batches(tmp_path):
    root = write_imagefolder(str(tmp_path))
    train, val = read_dataset(DataSpec(root, image_size=8, loader_workers=0))
    assert len(train) == 18 and len(val) == 6 and train.info.classes == ("cat", "dog", "eel")
    assert train.labels.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    x, y = next(val.eval_batches(4))
    assert x.shape == (4, 3, 8, 8) and y.tolist() == [0, 0, 1, 1]
    a = list(epoch_batches(train, 6, seed=0, epoch=0))
    assert len(a) == 3 and a[0][0].shape == (6, 3, 8, 8)
    again = list(epoch_batches(train, 6, seed=0, epoch=0))
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, again))
    assert not torch.equal(a[0][0], next(epoch_batches(train, 6, seed=0, epoch=1))[0])
    part = list(epoch_batches(train, 6, seed=0, epoch=0, part=(1, 2)))
    assert all(torch.equal(p[0], q[0][3:]) for p, q in zip(part, a))
    # normalization: the evaluation transform of one image, by hand
    from PIL import Image

    img = Image.open(val.paths[0]).convert("RGB")
    ref = np.asarray(imagefolder.eval_transform(img, 8), dtype=np.float64) / 255
    ref = (ref - np.array(imagefolder.IMAGENET_MEAN)) / np.array(imagefolder.IMAGENET_STD)
    np.testing.assert_allclose(x[0].permute(1, 2, 0).numpy(), ref, atol=1e-6)


@pytest.mark.slow
def test_imagefolder_batches_do_not_depend_on_loader_workers(tmp_path):
    root = write_imagefolder(str(tmp_path))
    t0, _ = read_dataset(DataSpec(root, image_size=8, loader_workers=0))
    t2, _ = read_dataset(DataSpec(root, image_size=8, loader_workers=2))
    for (x0, y0), (x2, y2) in zip(epoch_batches(t0, 6, seed=5, epoch=0), epoch_batches(t2, 6, seed=5, epoch=0)):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)


def test_random_resized_crop_box_is_torchvisions():
    rng = random.Random(0)
    for _ in range(300):
        w, h = rng.randint(1, 60), rng.randint(1, 60)
        left, top, cw, ch = imagefolder.random_resized_crop_box(w, h, rng)
        assert 0 <= left and left + cw <= w and 0 <= top and top + ch <= h and cw > 0 and ch > 0
    big = [imagefolder.random_resized_crop_box(1000, 1000, rng) for _ in range(300)]
    areas = [cw * ch / 1e6 for _, _, cw, ch in big]
    ratios = [cw / ch for _, _, cw, ch in big]
    assert 0.075 <= min(areas) and max(areas) <= 1.0 and min(areas) < 0.2 and max(areas) > 0.8
    assert 0.74 <= min(ratios) and max(ratios) <= 1.34
    assert imagefolder.random_resized_crop_box(100, 10, random.Random(0)) == (43, 0, 13, 10)  # fallback


def test_eval_transform_resizes_the_shorter_side_and_center_crops():
    from PIL import Image

    img = Image.fromarray(np.arange(40 * 70 * 3, dtype=np.uint8).reshape(40, 70, 3) % 251)
    out = imagefolder.eval_transform(img, 28)
    assert out.size == (28, 28)
    resized = img.resize((56, 32), Image.BILINEAR)  # shorter side 40 -> round(28 / 0.875) = 32
    assert np.array_equal(np.asarray(out), np.asarray(resized)[2:30, 14:42])


def test_broken_imagefolder_errors_name_the_folder_or_file(tmp_path):
    root = write_imagefolder(str(tmp_path / "a"))
    import shutil

    shutil.rmtree(os.path.join(root, "val"))
    with pytest.raises(FileNotFoundError, match=r"ImageFolder split not found: .*a/val"):
        read_dataset(DataSpec(root, "imagefolder"))
    root = write_imagefolder(str(tmp_path / "b"))
    os.makedirs(os.path.join(root, "train", "fox"))
    with pytest.raises(ValueError, match=r"b/train/fox: empty class folder"):
        read_dataset(DataSpec(root))
    root = write_imagefolder(str(tmp_path / "c"))
    os.rename(os.path.join(root, "val", "eel"), os.path.join(root, "val", "owl"))
    with pytest.raises(ValueError, match=r"c/val/owl: class 'owl' is not one of the 3 training classes"):
        read_dataset(DataSpec(root))
    root = write_imagefolder(str(tmp_path / "d"))
    bad = os.path.join(root, "train", "dog", "broken.jpg")
    with open(bad, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
    train, _ = read_dataset(DataSpec(root, image_size=8, loader_workers=0))
    with pytest.raises(ValueError, match=r"d/train/dog/broken.jpg: unreadable image"):
        list(epoch_batches(train, 19, seed=0, epoch=0))


def test_broken_cifar_errors_name_the_file(tmp_path):
    root = write_cifar(str(tmp_path))
    path = os.path.join(root, "test_batch")
    blob = open(path, "rb").read()
    open(path, "wb").write(blob[:100])
    with pytest.raises(ValueError, match="test_batch.*truncated"):
        read_dataset(DataSpec(root))


def _reproduce(out, data_dir, *extra):
    return main(smoke_args(out, "--no-report", "--max-runs", "1", *extra, experiment="table1", data_dir=data_dir))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["idx", "cifar10", "cifar100", "imagefolder"])
def test_reproduce_on_each_format(tmp_path, fmt):
    d = str(tmp_path / "data")
    if fmt == "idx":
        write_idx_dir(d, n_train=128, n_test=32)
        extra = ()
    elif fmt.startswith("cifar"):
        write_cifar(d, fmt, n=32 if fmt == "cifar10" else 26)  # 160 / 130 training images: a smoke subset of 128
        extra = ()
    else:
        write_imagefolder(d, per_class=48, val_per_class=2)
        extra = ("--image-size", "8", "--data-workers", "0")
    out = str(tmp_path / "out")
    assert _reproduce(out, d, *extra) == 0
    rows = results_lines(out)
    assert len(rows) == 1
    r = rows[0]
    expect = dict(idx=(1, 10, [12, 12]), cifar10=(3, 10, [32, 32]), cifar100=(3, 100, [32, 32]),
                  imagefolder=(3, 3, [8, 8]))[fmt]
    assert (r["in_channels"], r["num_classes"], r["image_shape"]) == expect and r["dataset"] == fmt
    assert r["train_size"] == 128 and 0 <= r["val_error"] <= 100


class _Stop(Exception):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["cifar10", "imagefolder"])
def test_interrupted_run_resumes_to_the_same_numbers(tmp_path, fmt):
    """Killed in its second epoch and resumed (ImageFolder: with 2 loader workers instead of 0), a run ends with
    the numbers of an uninterrupted one."""
    from groupnorm.experiments.protocol import get_preset
    from groupnorm.experiments.training import train_run
    import dataclasses

    d = str(tmp_path / "data")
    if fmt == "cifar10":
        write_cifar(d, n=8)
        specs = [DataSpec(d), DataSpec(d)]
    else:
        write_imagefolder(d, per_class=14, val_per_class=2)
        specs = [DataSpec(d, image_size=8, loader_workers=0), DataSpec(d, image_size=8, loader_workers=2)]
    cfg = dataclasses.replace(get_preset("smoke").base, norm="bn", batch_per_worker=4, epochs=2, train_size=40,
                              val_size=8)
    train, val = load_data(specs[0], cfg.train_size, cfg.val_size)
    ref = train_run(cfg, train, val, str(tmp_path / "ref"), progress=False)
    seen = [0]

    def stop_in_epoch_2(n):
        seen[0] += n
        if seen[0] > 40:
            raise _Stop

    out = str(tmp_path / "cut")
    with pytest.raises(_Stop):
        train_run(cfg, train, val, out, progress=False, on_images=stop_in_epoch_2)
    assert os.path.exists(os.path.join(out, "runs", cfg.key(), "checkpoint.pt"))
    train2, val2 = load_data(specs[1], cfg.train_size, cfg.val_size)
    row = train_run(cfg, train2, val2, out, progress=False)
    for k in ("train_loss", "train_error", "val_loss", "val_error", "val_error_precise_bn", "val_error_batch_stats"):
        assert row[k] == ref[k], k


def test_sweep_checks_classes_per_worker_against_the_data(tmp_path):
    import dataclasses

    from groupnorm.experiments.protocol import get_preset
    from groupnorm.experiments.launch.runner import run_sweep

    d = write_imagefolder(str(tmp_path / "data"), per_class=8, val_per_class=1)
    cfg = dataclasses.replace(get_preset("smoke").base, batch_per_worker=4, classes_per_worker=5, epochs=1)
    with pytest.raises(ValueError, match=r"classes_per_worker=5 .* more than the 3 classes of the data set in"):
        run_sweep([cfg], str(tmp_path / "out"), data=DataSpec(d, image_size=8, loader_workers=0), progress=False)
