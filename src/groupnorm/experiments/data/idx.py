"""Reader for IDX files (the MNIST file format), plain or gzipped, validated before anything is allocated.

An IDX file is a 4-byte magic number ``00 00 T D`` (``T`` the element type code, ``D`` the number of
dimensions), then ``D`` big-endian uint32 sizes, then the elements in C order, big-endian. The reader checks
the magic number, the type code, the dimensions, that the data is exactly as long as the sizes say (not
shorter, not longer), and that the declared size is below a limit, so a corrupt header cannot cause a huge
allocation. Every problem is a ``ValueError`` (or ``FileNotFoundError``) that names the file.
"""
from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

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
