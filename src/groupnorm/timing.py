"""How the benchmarks time: :func:`interleaved` medians of contenders taking turns, and
:func:`keep_freed_memory` so that no contender pays another's page faults. Shared by ``groupnorm bench`` and
its ``--small`` section (:mod:`groupnorm.bench`, :mod:`groupnorm.bench_small`) and the scripts that time calls.

Allocator. Every contender allocates its output (25 MB for the largest fp32 case). With glibc's defaults, freed
blocks at the top of the heap are given back to the system once enough is free, and the next allocation
page-faults its memory back in (~6 ms for 25 MB here). Which contender pays that depends on where it sits in
the round, not on its code: measured, one contender's forward took 9.5 ms in every round of a case where its
code takes 3.5 ms. So a bench first tells glibc to keep freed memory (:func:`keep_freed_memory`, through
``mallopt``: no heap trimming, blocks up to 32 MB from the heap); ``groupnorm bench`` records that in its JSON's
``meta.keep_memory``.
"""
from __future__ import annotations

import ctypes
import platform
import random
import statistics
import time

__all__ = ["interleaved", "keep_freed_memory"]


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory in the process (see the module docstring); False if not glibc / refused.

    ``M_TRIM_THRESHOLD`` (-1) = 2 GiB: the heap is not trimmed; ``M_MMAP_THRESHOLD`` (-3) = 32 MiB, the largest
    glibc accepts: blocks below it come from the heap (whose freed pages stay mapped) instead of fresh ``mmap``s.
    """
    if platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-1, 2**31 - 1)) and bool(libc.mallopt(-3, 32 * 2**20))
    except (OSError, AttributeError):  # not glibc
        return False


def interleaved(fns: dict, repeats: int, warmup: int, inner: int = 1) -> dict:
    """Median seconds per call of each callable: ``warmup`` untimed rounds, then ``repeats`` timed rounds in
    which each callable runs ``inner`` times back to back, the callables in a fresh random order each round
    (seeded: the same sequence every run), so that no callable always follows the same other one (whose
    allocations and cache footprint it would inherit)."""
    names = list(fns)
    rng = random.Random(0)
    for _ in range(warmup):
        for k in names:
            for _ in range(inner):
                fns[k]()
    times = {k: [] for k in names}
    for r in range(repeats):
        order = rng.sample(names, len(names))
        for k in order:
            f = fns[k]
            t0 = time.perf_counter()
            for _ in range(inner):
                f()
            times[k].append((time.perf_counter() - t0) / inner)
    return {k: statistics.median(v) for k, v in times.items()}
