"""CIFAR-10/100 Python-format reader: small files written here in the official layout; errors name the file."""
import os
import pickle

import numpy as np
import pytest

from groupnorm.experiments.data.cifar import detect, read_cifar
from helpers import write_cifar


def _dump(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def test_cifar10_extracted_subdir(tmp_path):
    write_cifar(str(tmp_path / "cifar-10-batches-py"), n=4)
    assert detect(str(tmp_path)) == "cifar10"
    d = read_cifar(str(tmp_path))
    x, y = d["train"]
    assert x.shape == (20, 3, 32, 32) and x.dtype == np.uint8 and y.shape == (20,) and y.dtype == np.int64
    assert d["test"][0].shape == (4, 3, 32, 32) and d["classes"][3] == "c3"
    raw = pickle.load(open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb"))[b"data"]
    assert np.array_equal(x[0, 1].ravel(), raw[0, 1024:2048])  # planes: red, green, blue


def test_cifar100(tmp_path):
    root = str(tmp_path)
    _dump(os.path.join(root, "meta"), {"fine_label_names": [f"f{i}" for i in range(100)]})
    for split, n in (("train", 6), ("test", 3)):
        _dump(os.path.join(root, split), {"data": np.zeros((n, 3072), np.uint8), "fine_labels": [99] * n})
    d = read_cifar(root)
    assert d["name"] == "cifar100" and d["train"][0].shape == (6, 3, 32, 32) and set(d["test"][1]) == {99}


def test_errors_name_the_file(tmp_path):
    root = str(tmp_path)
    with pytest.raises(FileNotFoundError, match="batches.meta"):
        read_cifar(root)
    write_cifar(root, n=4)
    os.unlink(os.path.join(root, "data_batch_3"))
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        read_cifar(root)
    write_cifar(root, n=4)
    path = os.path.join(root, "data_batch_2")
    blob = open(path, "rb").read()
    open(path, "wb").write(blob[:len(blob) // 2])
    with pytest.raises(ValueError, match="data_batch_2.*truncated"):
        read_cifar(root)
    _dump(path, {b"data": np.zeros((4, 1024), np.uint8), b"labels": [0] * 4})
    with pytest.raises(ValueError, match=r"data_batch_2.*\(N, 3072\)"):
        read_cifar(root)
    write_cifar(root, n=4, label=10)
    with pytest.raises(ValueError, match="data_batch_1: label 10 outside the 10 classes"):
        read_cifar(root)
    write_cifar(root, n=4)  # valid again, then 3 labels for 4 images in data_batch_2 alone
    _dump(path, {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 3})
    with pytest.raises(ValueError, match=r"data_batch_2: 'labels' has shape \(3,\), expected \(4,\)"):
        read_cifar(root)


def test_pickle_that_builds_code_is_refused(tmp_path):
    write_cifar(str(tmp_path), n=4)
    _dump(str(tmp_path / "test_batch"), {b"data": os.getcwd, b"labels": []})
    with pytest.raises(ValueError, match="test_batch.*refusing"):
        read_cifar(str(tmp_path))
