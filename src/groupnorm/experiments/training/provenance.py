"""What code made a results row, and the report's rule for rows of one setting made by different code.

Two runs of one setting (same configuration and seed) give the same numbers to the last digit only when the
code paths that round differently are the same. A row records them (:data:`CODE_FIELDS`):

- ``groupnorm_version``: the package's version (:func:`code_fields`);
- ``torch``: torch's version;
- ``conv_backend``: the training step's convolution code (:func:`devices.conv_backend`: ``native`` for CPU
  convolutions over at most 4 images, which skip oneDNN, else ``default``);
- ``gn_kernels`` and ``kernels_isa``: whether the compiled GN kernels were loaded, and their instruction-set
  level (0 baseline x86-64, 1 AVX2, 2 AVX-512, 3 AVX-512 with BF16; None without the kernels);
- ``device`` and ``amp``: where the run trained and in which precision.

A row without ``groupnorm_version`` is **legacy**: it was written before rows recorded their code, and its code
is known only through the fields it has. A legacy row without ``conv_backend`` was trained when every CPU
convolution used oneDNN; under the current code its run uses torch's own convolution where
:func:`devices.conv_backend` says ``native`` (:func:`predates_conv_backend`), so a fresh run of it gives other
numbers: another convolution rounds differently, and training amplifies the difference.

:func:`separate_by_code`: where one setting has rows made by different code, the report keeps the rows of the
code of its most recently finished run and lists the others apart; it never pools them into one cell.
"""
from __future__ import annotations

from collections import Counter, defaultdict

import torch

from .devices import conv_backend

CODE_FIELDS = ("groupnorm_version", "torch", "conv_backend", "gn_kernels", "kernels_isa", "device", "amp")
_DEFAULTS = {"device": "cpu", "amp": "none"}  # rows written before these fields existed trained on CPU in fp32


def code_fields() -> dict:
    """The code fields a training run adds to its row beside ``torch``, ``conv_backend``, ``gn_kernels``,
    ``device`` and ``amp`` (which the row already records): the package version and the kernels' level."""
    import groupnorm

    isa = None
    try:
        from groupnorm import kernels

        if kernels.is_available():
            isa = int(kernels.isa())
    except Exception:  # no compiled library: the row says gn_kernels=False and no level
        isa = None
    return dict(groupnorm_version=groupnorm.__version__, kernels_isa=isa)


def is_legacy(row: dict) -> bool:
    """True for a row written before rows recorded their code (no ``groupnorm_version``)."""
    return "groupnorm_version" not in row


def code_of(row: dict) -> tuple:
    """The row's code, one value per :data:`CODE_FIELDS` (None where a legacy row lacks the field)."""
    return tuple(row.get(f, _DEFAULTS.get(f)) for f in CODE_FIELDS)


def describe(code: tuple) -> str:
    """One line naming a code tuple, e.g. ``groupnorm 0.1.0, torch 2.13.0+cpu, conv native, ...``."""
    v = dict(zip(CODE_FIELDS, code))
    kern = ("kernels " + (f"ISA level {v['kernels_isa']}" if v["kernels_isa"] is not None else "(level not recorded)")
            if v["gn_kernels"] else ("no kernels" if v["gn_kernels"] is not None else "kernels not recorded"))
    return ", ".join([
        f"groupnorm {v['groupnorm_version']}" if v["groupnorm_version"] else "legacy (package version not recorded)",
        f"torch {v['torch']}" if v["torch"] else "torch not recorded",
        f"conv {v['conv_backend']}" if v["conv_backend"] else "conv backend not recorded (oneDNN for every batch)",
        kern, f"{v['device']}, amp {v['amp']}"])


def predates_conv_backend(row: dict) -> bool:
    """True for a row trained before CPU convolutions of at most 4 images skipped oneDNN whose run the current
    code would train with torch's own convolution: a fresh run of it gives other numbers."""
    if "conv_backend" in row:
        return False
    per_process = row["global_batch"] // max(1, row.get("processes", 1))
    return conv_backend(torch.device(str(row.get("device", "cpu"))), per_process) == "native"


def separate_by_code(rows, setting) -> tuple[list[dict], list[dict]]:
    """(kept, other_code): where the rows of one ``setting(row)`` (everything but seed and code) were made by
    different code, only those of the code of its most recently finished run are kept; the others come back
    apart, for the report to list. Rows of one code are all kept."""
    rows = list(rows)
    latest: dict = defaultdict(dict)  # setting -> {code: its most recent finished_at}
    for r in rows:
        seen = latest[setting(r)]
        c = code_of(r)
        seen[c] = max(seen.get(c, ""), r.get("finished_at", ""))
    keep = {s: max(codes, key=codes.get) for s, codes in latest.items()}
    kept, other = [], []
    for r in rows:
        (kept if code_of(r) == keep[setting(r)] else other).append(r)
    return kept, other


def provenance_lines(rows: list[dict], other_code: list[dict], name) -> list[str]:
    """The report's section on the code that made its rows: each code with its row count, the rows kept apart
    by :func:`separate_by_code`, and the settings whose legacy rows a fresh run would not reproduce to the last
    digit (``name(row)``: a setting's name)."""
    if not rows:
        return []
    counts = Counter(code_of(r) for r in rows)
    L = ["## Code that made these rows", "",
         "A fresh run reproduces a row to the last digit when it runs the same code paths (package version, "
         "torch, convolution backend, GN kernels and their instruction-set level, device, precision). "
         "Rows that do not record the package version are *legacy*.", "",
         "| code | rows |", "|---|---|"]
    L += [f"| {describe(c)} | {n} |" for c, n in sorted(counts.items(), key=lambda kv: -kv[1])]
    L.append("")
    if other_code:
        L += [f"{len(other_code)} rows of settings that have newer rows made by other code are not shown "
              "(a setting's cells never pool rows of different code): "
              + ", ".join(sorted({f"{name(r)} ({describe(code_of(r))})" for r in other_code})) + ".", ""]
    apart = {id(r) for r in other_code}
    stale = [r for r in rows if id(r) not in apart and predates_conv_backend(r)]
    if stale:
        L += [f"{len(stale)} legacy rows were trained when every CPU convolution used oneDNN; the current code "
              "trains these settings with torch's own convolution (at most 4 images per process), which rounds "
              "differently, so a fresh run gives other numbers for them (not re-trained yet): "
              + ", ".join(sorted({name(r) for r in stale})) + ".", ""]
    return L
