"""IDX reader and data loading: good files, and corrupt ones that must fail with a clear error."""
import gzip
import os
import struct

import numpy as np
import pytest
import torch

from groupnorm.experiments.data import epoch_batches, load_split, subset
from groupnorm.experiments.data.idx import read_idx
from helpers import SAMPLE_DATA


def _idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    return bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.tobytes()


def _write(path, data: bytes, gz: bool = True):
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)
    return str(path)


def test_sample_files_read_with_expected_shapes_and_labels():
    x = read_idx(os.path.join(SAMPLE_DATA, "train-images-idx3-ubyte.gz"))
    y = read_idx(os.path.join(SAMPLE_DATA, "train-labels-idx1-ubyte.gz"))
    assert x.shape == (320, 28, 28) and x.dtype == np.uint8
    assert y.shape == (320,) and set(np.unique(y)) == set(range(10))
    assert 0 < x.mean() < 255  # real images, not zeros
    split = load_split(SAMPLE_DATA, "test")
    assert len(split) == 160 and split.images.shape == (160, 1, 28, 28) and split.labels.dtype == torch.int64


@pytest.mark.parametrize("gz", [True, False])
def test_roundtrip_plain_and_gzip(tmp_path, gz):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    p = _write(tmp_path / "a.idx", _idx_bytes(arr), gz)
    np.testing.assert_array_equal(read_idx(p), arr)
    ints = np.array([[1, -2], [300000, 4]], dtype=">i4")
    p = _write(tmp_path / "b.idx", _idx_bytes(ints, 0x0C), gz)
    np.testing.assert_array_equal(read_idx(p), ints.astype(np.int32))


@pytest.mark.parametrize("data, message", [
    (b"", "empty file"),
    (b"\x01\x00\x08\x01" + struct.pack(">I", 2) + b"ab", "bad magic number"),
    (b"\x00\x00\x07\x01" + struct.pack(">I", 2) + b"ab", "unknown element type"),
    (b"\x00\x00\x08\x00", "zero dimensions"),
    (b"\x00\x00\x08\x02" + struct.pack(">I", 3), "truncated file"),                   # dims cut short
    (b"\x00\x00\x08\x01" + struct.pack(">I", 10) + b"abc", "truncated file"),         # data cut short
    (b"\x00\x00\x08\x01" + struct.pack(">I", 2) + b"abcd", "more data than"),          # too long
    (b"\x00\x00\x08\x03" + struct.pack(">III", 60000, 60000, 60000), "limit"),        # huge header
])
@pytest.mark.parametrize("gz", [True, False])
def test_corrupt_files_fail_clearly(tmp_path, data, message, gz):
    if data == b"":
        p = _write(tmp_path / "bad.idx", b"", gz=False)
    else:
        p = _write(tmp_path / "bad.idx", data, gz)
    with pytest.raises(ValueError, match=message) as e:
        read_idx(p)
    assert str(p) in str(e.value)


def test_truncated_gzip_stream_and_missing_file(tmp_path):
    good = gzip.compress(_idx_bytes(np.zeros((50, 28, 28), np.uint8)))
    p = _write(tmp_path / "cut.gz", good[: len(good) // 2], gz=False)
    with pytest.raises(ValueError, match="truncated|corrupt"):
        read_idx(p)
    with pytest.raises(FileNotFoundError, match="nope.gz"):
        read_idx(tmp_path / "nope.gz")


def test_dataset_directory_checks(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz not found"):
        load_split(str(tmp_path), "train")
    imgs = np.zeros((5, 28, 28), np.uint8)
    _write(tmp_path / "train-images-idx3-ubyte.gz", _idx_bytes(imgs))
    _write(tmp_path / "train-labels-idx1-ubyte.gz", _idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(ValueError, match="wrong counts: .* 5 images .* 4 labels"):
        load_split(str(tmp_path), "train")
    _write(tmp_path / "train-labels-idx1-ubyte.gz", _idx_bytes(np.array([0, 1, 2, 3, 12], np.uint8)))
    with pytest.raises(ValueError, match="label 12"):
        load_split(str(tmp_path), "train")


def test_subset_is_balanced_and_fixed_and_batches_are_seeded():
    split = load_split(SAMPLE_DATA, "train")
    a, b = subset(split, 100, seed=0), subset(split, 100, seed=0)
    assert len(a) == 100 and torch.equal(a.labels, b.labels) and torch.equal(a.images, b.images)
    assert torch.bincount(a.labels, minlength=10).min() >= 8
    e0 = list(epoch_batches(a, 32, seed=3, epoch=0))
    again = list(epoch_batches(a, 32, seed=3, epoch=0))
    e1 = list(epoch_batches(a, 32, seed=3, epoch=1))
    assert len(e0) == 3 and e0[0][0].shape == (32, 1, 28, 28)
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(e0, again))
    assert not torch.equal(e0[0][0], e1[0][0])
    with pytest.raises(ValueError, match="larger than the 100 training images"):
        next(epoch_batches(a, 128, seed=0, epoch=0))
