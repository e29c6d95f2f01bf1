"""The results store: durable appends, atomic files, and readers that survive a kill at any moment.

Layout of an output directory ``OUT``::

    OUT/results.jsonl            one JSON line per finished run (appended, fsync'ed)
    OUT/runs/<key>/config.json   the run's configuration
    OUT/runs/<key>/metrics.jsonl per-epoch metrics (rewritten atomically after each epoch)
    OUT/runs/<key>/checkpoint.pt model + optimizer + history after the last finished epoch (atomic; removed
                                 once the run's row is in results.jsonl)

A row is written with a single ``write`` of the complete line on a file opened for appending, then flushed
and fsync'ed. If the process is killed mid-write the file may end with a torn line; :func:`read_results`
skips lines that do not parse, and :func:`append_result` first terminates a torn line so the new row stands on
its own line. A run whose row exists is finished; a run with only a checkpoint resumes from it.
"""
from __future__ import annotations

import json
import os

import torch

from ..atomic import atomic_torch_save, atomic_write_bytes

RESULTS = "results.jsonl"


def run_dir(out: str, key: str) -> str:
    return os.path.join(out, "runs", key)


def atomic_write_json(path: str, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def write_jsonl(path: str, rows: list[dict]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode())


def read_jsonl(path: str) -> list[dict]:
    """All complete JSON-object lines of ``path`` ([] if absent); torn or foreign lines are skipped."""
    if not os.path.exists(path):
        return []
    rows = []
    with open(path, "rb") as f:
        for line in f:
            try:
                obj = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(obj, dict):
                rows.append(obj)
    return rows


def read_results(out: str) -> list[dict]:
    """The finished runs' rows of ``OUT/results.jsonl``; the first row per config key wins."""
    rows, seen = [], set()
    for r in read_jsonl(os.path.join(out, RESULTS)):
        k = r.get("config_key")
        if k is None or k in seen:
            continue
        seen.add(k)
        rows.append(r)
    return rows


def append_result(out: str, row: dict) -> None:
    """Append one complete line to ``OUT/results.jsonl`` durably (see the module docstring)."""
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, RESULTS)
    line = (json.dumps(row, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    line = b"\n" + line  # terminate a torn last line left by a killed writer
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``OUT/runs/<key>/lock`` while a process trains that run.

    A second process asked to train the same run (two sweeps on one output directory) gets a clear error
    instead of both writing the same checkpoint. The kernel drops the lock when the holder dies, even by SIGKILL.
    """

    def __init__(self, rdir: str):
        self.path = os.path.join(rdir, "lock")
        self.fd = None

    def __enter__(self):
        import fcntl

        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            raise RuntimeError(f"run {os.path.basename(os.path.dirname(self.path))} is being trained by another "
                               f"process (lock {self.path})") from None
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def save_checkpoint(path: str, state: dict) -> None:
    """``torch.save`` of ``state`` to ``path``, atomically (see ``groupnorm.atomic``)."""
    atomic_torch_save(state, path)


def load_checkpoint(path: str) -> dict | None:
    """The checkpoint at ``path`` loaded with ``weights_only=True``, or None if there is none."""
    if not os.path.exists(path):
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # an atomic file cannot be torn; anything else is worth a clear message
        raise RuntimeError(f"cannot load checkpoint {path}: {exc}; delete it to restart that run") from exc
