"""What the benchmarks share: the default shapes and dtypes, parsing of the command line's lists, each case's
seeded inputs and record fields, the torch composites they are compared with, and the records' commit and time.

Both ``groupnorm bench`` on the CPU (:mod:`groupnorm.bench`) and on a GPU (:mod:`groupnorm.bench_gpu`) import
these, so neither imports the other's module at import time.
"""
from __future__ import annotations

import datetime
import os
import subprocess
from pathlib import Path

import torch
import torch.nn.functional as F

from .layout import LAYOUTS as LAYOUT_CODES
from .layout import to_layout

DEFAULT_SHAPES = [
    (8, 256, 56, 56), (8, 512, 28, 28), (8, 1024, 14, 14), (8, 2048, 7, 7),  # ResNet-50 stages, batch 8
    (1, 320, 64, 64), (1, 640, 32, 32), (1, 1280, 16, 16),                  # diffusion UNet
    (2, 64, 8, 56, 56),                                                      # video
]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}
LAYOUTS = tuple(LAYOUT_CODES)  # the layouts by name: contiguous, channels_last
GRID_DTYPES = "fp32,bf16"
PLAIN_DTYPES = "fp32,bf16,fp16"


def parse_shapes(text: str) -> list[tuple[int, ...]]:
    """``"8,256,56,56;1,320,64,64"`` -> [(8, 256, 56, 56), (1, 320, 64, 64)]."""
    shapes = []
    for part in text.split(";"):
        part = part.strip().lower().replace("x", ",")
        if not part:
            continue
        try:
            dims = tuple(int(d) for d in part.split(","))
        except ValueError:
            raise ValueError(f"bad shape {part!r}: expected comma-separated integers like 8,256,56,56") from None
        if len(dims) < 3 or min(dims) < 1:
            raise ValueError(f"bad shape {part!r}: need (N, C, *spatial) with rank >= 3 and positive sizes")
        shapes.append(dims)
    if not shapes:
        raise ValueError("no shapes given")
    return shapes


def naive_group_norm(x, num_groups, weight, bias, eps=1e-5):
    """The textbook composite GroupNorm as tutorials write it (view, mean, unbiased var, normalize, affine)."""
    n, c = x.shape[:2]
    xv = x.reshape(n, num_groups, -1)
    mean = xv.mean(-1, keepdim=True)
    var = xv.var(-1, keepdim=True)
    xv = (xv - mean) / (var + eps).sqrt()
    shape = (1, c) + (1,) * (x.dim() - 2)
    return xv.reshape(x.shape) * weight.reshape(shape) + bias.reshape(shape)


def torch_gn_silu(x, groups, w, b):
    """GN followed by SiLU as a user writes it with torch: ``F.silu(F.group_norm(x, G, w, b))``."""
    return F.silu(F.group_norm(x, groups, w, b, 1e-5))


def torch_gn_add_relu(x, groups, w, b, res):
    """A ResNet block's end as torchvision writes it: ``out = GN(x); out += identity; out.relu_()`` (no grad)."""
    out = F.group_norm(x, groups, w, b, 1e-5)
    out += res
    return out.relu_()


def case_inputs(shape, dtype, layout):
    """x, weight, bias, dy, residual of one case (seeded: every contender and every run sees the same data)."""
    gen = torch.Generator().manual_seed(0)
    code = LAYOUT_CODES[layout]
    x = to_layout(torch.randn(shape, generator=gen).to(dtype), code)
    c = shape[1]
    w = (torch.rand(c, generator=gen) + 0.5).to(dtype)
    b = (torch.randn(c, generator=gen) * 0.1).to(dtype)
    dy = to_layout(torch.randn(shape, generator=gen).to(dtype), code)
    res = to_layout(torch.randn(shape, generator=gen).to(dtype), code)
    return x, w, b, dy, res


def case_fields(shape, dtype, layout, groups) -> dict:
    return {"shape": list(shape), "dtype": str(dtype).replace("torch.", ""), "layout": layout, "groups": groups}


def parse_list(text: str, allowed, what: str) -> list[str]:
    """``"fp32, bf16"`` -> ["fp32", "bf16"]; ValueError naming an item not in ``allowed``."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    for s in items:
        if s not in allowed:
            raise ValueError(f"unknown {what} {s!r}; expected some of {', '.join(allowed)}")
    return items


def git_commit(path: str | os.PathLike | None = None) -> dict:
    """``{"commit": sha, "dirty": bool}`` of the git checkout holding ``path`` (default: this package's
    folder, i.e. the code being measured); ``dirty``: tracked files under that folder differ from the commit.
    Both None where there is no git or no checkout (an installed wheel): not an error."""
    where = str(path if path is not None else Path(__file__).resolve().parent)

    def git(*args):
        return subprocess.run(["git", "-C", where, *args], capture_output=True, text=True, timeout=10, check=True
                              ).stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", "."))
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": sha, "dirty": dirty}


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second (``2026-12-02T19:50:00Z``)."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
