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

    :meth:`acquire` returns False when another process holds the lock; used as a context manager, a held lock
    raises a clear error instead (two writers of one checkpoint). The kernel drops the lock when its holder
    dies, even by SIGKILL, so a dead holder's run is taken over by the next process that asks. The holder
    writes ``host pid`` into the file, for messages. (On a shared file system this needs ``flock`` support
    across machines, as NFSv4, Lustre with ``-o flock`` and GPFS give.)
    """

    def __init__(self, rdir: str):
        self.path = os.path.join(rdir, "lock")
        self.fd = None

    def acquire(self) -> bool:
        import fcntl
        import socket

        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
        self.fd = fd
        return True

    def holder(self) -> str:
        """``host pid`` of the last process that took the lock ("" if unknown)."""
        try:
            with open(self.path) as f:
                return f.read().strip()
        except OSError:
            return ""

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        if not self.acquire():
            raise RuntimeError(f"run {os.path.basename(os.path.dirname(self.path))} is being trained by another "
                               f"process ({self.holder() or 'unknown'}; lock {self.path})")
        return self

    def __exit__(self, *exc):
        self.release()


def is_finished(out: str, key: str) -> bool:
    """Whether ``OUT/results.jsonl`` holds a row of run ``key`` (read now, not from a cached view)."""
    return any(r.get("config_key") == key for r in read_jsonl(os.path.join(out, RESULTS)))


def claim_run(out: str, key: str) -> tuple[str, RunLock | None]:
    """Try to become the one process that trains run ``key`` of ``OUT``.

    Returns ("claimed", lock) when this process now holds the run's lock and the run has no row yet (the caller
    trains it, appends its row, then releases the lock); ("held", None) when another process holds the lock;
    ("done", None) when the run's row exists, checked again after taking the lock, because the previous holder
    may have finished it since this process last read the store. Rows are appended before the lock is released,
    so a run is trained once and written once by all the processes sharing ``OUT``.
    """
    lock = RunLock(run_dir(out, key))
    if not lock.acquire():
        return "held", None
    if is_finished(out, key):
        lock.release()
        return "done", None
    return "claimed", lock


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
