"""Memory layouts of an (N, C, *spatial) tensor, in one place: the kernels' two layouts and torch's memory formats.

* ``LAYOUT_NCS``: contiguous, channels outside the spatial positions (``N, C, *spatial`` in memory);
* ``LAYOUT_NSC``: channels-last, channels innermost (``N, *spatial, C`` in memory), for any rank >= 3.

The codes are the C ABI's ``GN_LAYOUT_NCS`` / ``GN_LAYOUT_NSC`` (``kernels/csrc/gn_api.h``; the C++ operators'
``layout_of`` in ``gn_ops_layout.h`` makes the same decision). torch names a channels-last memory format only
for rank 4 (``channels_last``) and rank 5 (``channels_last_3d``): :func:`torch_format` maps a layout to one, and
:func:`memory_format` says which one torch's GroupNorm keeps for its output.
"""
from __future__ import annotations

import torch

__all__ = ["LAYOUT_NCS", "LAYOUT_NSC", "LAYOUTS", "layout_of", "to_layout", "torch_format", "memory_format"]

LAYOUT_NCS, LAYOUT_NSC = 0, 1
LAYOUTS = {"contiguous": LAYOUT_NCS, "channels_last": LAYOUT_NSC}
"""The layouts by name (the names the benchmarks and the harness's options use)."""


def layout_of(x: torch.Tensor) -> int | None:
    """LAYOUT_NCS if x is contiguous, LAYOUT_NSC if channels-last dense (N, *spatial, C) of rank >= 3, else None
    (other strides)."""
    if x.is_contiguous():
        return LAYOUT_NCS
    d = x.dim()
    if d == 4:
        return LAYOUT_NSC if x.is_contiguous(memory_format=torch.channels_last) else None
    if d == 5:
        return LAYOUT_NSC if x.is_contiguous(memory_format=torch.channels_last_3d) else None
    if d >= 3 and x.movedim(1, -1).is_contiguous():
        return LAYOUT_NSC
    return None


def to_layout(t: torch.Tensor, layout: int) -> torch.Tensor:
    """``t`` (N, C, *spatial) with the strides of ``layout`` (LAYOUT_NCS or LAYOUT_NSC; a copy only if needed).
    Any rank: channels-last of rank 3 or above 5 has no torch memory format, so it is built by moving C last."""
    if layout == LAYOUT_NCS:
        return t.contiguous()
    if layout != LAYOUT_NSC:
        raise ValueError(f"unknown layout {layout!r}; expected LAYOUT_NCS ({LAYOUT_NCS}) or LAYOUT_NSC ({LAYOUT_NSC})")
    return t.movedim(1, -1).contiguous().movedim(-1, 1)


def torch_format(layout: int, ndim: int = 4) -> torch.memory_format:
    """torch's memory format for ``layout`` at rank ``ndim``: LAYOUT_NSC is ``channels_last`` (rank 4) or
    ``channels_last_3d`` (rank 5); anything else is ``contiguous_format`` (use :func:`to_layout` for
    channels-last tensors of other ranks)."""
    if layout == LAYOUT_NSC and ndim in (4, 5):
        return torch.channels_last if ndim == 4 else torch.channels_last_3d
    return torch.contiguous_format


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """The memory format torch's GN keeps for ``x``: channels-last (rank 4 / 5) if x is strided so and not also
    contiguous, else contiguous."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if x.dim() == 5 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format
