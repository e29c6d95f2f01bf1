"""Atomic files: a reader (or a process killed at any moment) sees the old file or the new one, never a mix.

The data goes to a temporary file in the target's directory, is flushed and fsync'ed, then ``os.replace``d
over the target, and the directory is fsync'ed so the rename itself is durable.
"""
from __future__ import annotations

import io
import os
import tempfile

__all__ = ["atomic_write_bytes", "atomic_torch_save", "fsync_dir"]


def fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(d)


def atomic_torch_save(obj, path: str) -> None:
    """``torch.save(obj)`` to ``path`` atomically (serialized in memory, then :func:`atomic_write_bytes`)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())
