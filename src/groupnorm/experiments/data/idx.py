"""Reader for IDX files (the MNIST file format), plain or gzipped, validated before anything is allocated.

An IDX file is a 4-byte magic number ``00 00 T D`` (``T`` the element type code, ``D`` the number of
dimensions), then ``D`` big-endian uint32 sizes, then the elements in C order, big-endian. The reader checks
the magic number, the type code, the dimensions, that the data is exactly as long as the sizes say (not
shorter, not longer), and that the declared size is below a limit, so a corrupt header cannot cause a huge
allocation. Every problem is a ``ValueError`` (or ``FileNotFoundError``) that names the file.

The IDX format of a data directory (MNIST, KMNIST, Fashion-MNIST), gzipped or not::

    train-images-idx3-ubyte[.gz]  (N, H, W) uint8     train-labels-idx1-ubyte[.gz]  (N,) uint8
    t10k-images-idx3-ubyte[.gz]   (M, H, W) uint8     t10k-labels-idx1-ubyte[.gz]   (M,) uint8

1 channel, 10 classes, normalized with Fashion-MNIST's pixel mean and std (:data:`.split.IDX_INFO`; any IDX set
gets them). :func:`load_split` reads and validates one split; :func:`write_idx` writes a gzipped IDX file.
"""
from __future__ import annotations

import dataclasses
import gzip
import os
import struct
import zlib

import numpy as np
import torch

from .split import IDX_INFO, NUM_CLASSES, Split

# IDX element type codes -> big-endian NumPy dtypes.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

#: Largest payload accepted (bytes); Fashion-MNIST's largest file holds 47 MB.
MAX_BYTES = 1 << 31


def _open(path: str):
    with open(path, "rb") as probe:
        head = probe.read(2)
    if head == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return open(path, "rb")


def _read_exact(f, n: int, path: str, what: str) -> bytes:
    try:
        data = f.read(n)
    except (EOFError, OSError, zlib.error) as exc:  # truncated or corrupt gzip stream
        raise ValueError(f"{path}: corrupt or truncated file while reading {what}: {exc}") from None
    if len(data) != n:
        raise ValueError(f"{path}: truncated file: expected {n} bytes of {what}, found {len(data)}")
    return data


def read_idx(path: str | os.PathLike, *, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """Read one IDX file (optionally gzipped) into a NumPy array of native byte order.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is empty, has a bad magic number or type code, declares more than ``max_bytes``
            of data, is shorter or longer than its header says, or is not a valid gzip stream.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"IDX file not found: {path}")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path}: empty file (0 bytes), expected an IDX header")
    with _open(path) as f:
        magic = _read_exact(f, 4, path, "the magic number")
        if magic[0] != 0 or magic[1] != 0:
            raise ValueError(f"{path}: bad magic number 0x{magic.hex()}: an IDX file starts with two zero bytes")
        code, ndim = magic[2], magic[3]
        if code not in IDX_DTYPES:
            raise ValueError(f"{path}: bad magic number 0x{magic.hex()}: unknown element type code 0x{code:02x}")
        if ndim == 0:
            raise ValueError(f"{path}: bad magic number 0x{magic.hex()}: zero dimensions")
        dims = np.frombuffer(_read_exact(f, 4 * ndim, path, "the dimensions"), dtype=">u4").astype(np.int64)
        dtype = IDX_DTYPES[code]
        nbytes = int(np.prod(dims, dtype=np.float64)) * dtype.itemsize
        if nbytes > max_bytes:
            raise ValueError(f"{path}: header declares dimensions {tuple(dims.tolist())} ({nbytes} bytes), "
                             f"more than the limit of {max_bytes} bytes; the header is probably corrupt")
        payload = _read_exact(f, nbytes, path, f"data for dimensions {tuple(dims.tolist())}")
        try:
            extra = f.read(1)
        except (EOFError, OSError, zlib.error) as exc:
            raise ValueError(f"{path}: corrupt or truncated file after the data: {exc}") from None
        if extra:
            raise ValueError(f"{path}: wrong length: more data than the dimensions {tuple(dims.tolist())} declare")
    arr = np.frombuffer(payload, dtype=dtype).reshape(tuple(int(d) for d in dims))
    return arr.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str, array: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file (magic ``00 00 08 D``, big-endian sizes)."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    head = bytes([0, 0, 0x08, a.ndim]) + struct.pack(">" + "I" * a.ndim, *a.shape)
    with gzip.open(path, "wb") as f:
        f.write(head + a.tobytes())


SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find(data_dir: str, stem: str) -> str:
    for name in (stem + ".gz", stem):
        path = os.path.join(data_dir, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"{stem}.gz not found in data directory {data_dir!r}; it needs the four MNIST-format files "
        f"(install Debian's dataset-fashion-mnist, or pass --data-dir DIR / set GROUPNORM_DATA)")


def load_split(data_dir: str, split: str) -> Split:
    """Load and validate one split ("train" or "test") of an MNIST-format directory."""
    if split not in SPLIT_FILES:
        raise ValueError(f"split={split!r} is not one of {sorted(SPLIT_FILES)}")
    img_path, lab_path = (_find(data_dir, s) for s in SPLIT_FILES[split])
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{img_path}: expected uint8 images of shape (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(f"{lab_path}: expected uint8 labels of shape (N,), got {labels.dtype} {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"wrong counts: {img_path} holds {images.shape[0]} images but {lab_path} holds "
                         f"{labels.shape[0]} labels")
    if images.shape[0] == 0:
        raise ValueError(f"{img_path}: holds no images")
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        raise ValueError(f"{lab_path}: label {int(labels.max())} is outside 0..{NUM_CLASSES - 1}")
    info = dataclasses.replace(IDX_INFO, image_shape=tuple(images.shape[1:]))
    return Split(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)), info)
