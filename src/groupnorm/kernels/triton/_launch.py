"""Launching the Triton kernels (``_kernels``): the choice between a program per group
(:func:`one_program_per_group`) and the split kernels with their tile geometry (:class:`Geometry`), the
``(N, C, S)`` strides of each tensor, and the forward and backward passes as functions of checked tensors.

:func:`forward` returns ``(y, mean, rstd)``: y of x's shape, dtype and memory format (contiguous, or
channels-last for a channels-last x), mean and rstd float64 ``(N, G)``. :func:`backward` returns
``(dx, dweight, dbias, dresidual)``, an empty tensor for each one not asked for. ``wrap`` is applied to every
kernel before its launch (``torch.library.wrap_triton`` inside a ``triton_op``, so that Inductor sees the
kernels; the identity otherwise).
"""
from __future__ import annotations

import functools

import torch
import triton

from ...plain import memory_format
from . import _kernels as K

__all__ = ["Geometry", "geometry", "one_program_per_group", "forward", "backward", "INTERPRETER_SMS"]

TILE = 4096  # values per block of a program (BLOCK_C * BLOCK_S)
PROGRAMS_PER_SM = 4  # split a sample's spatial positions until the grid has this many programs per SM
INTERPRETER_SMS = 4  # the "multiprocessor count" used on a CPU device (Triton's interpreter)
GROUP_CHANNELS = 64  # one_program_per_group: the most channels per group
GROUP_VALUES = 1 << 18  # one_program_per_group: the most values per group


@functools.lru_cache(maxsize=None)
def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return INTERPRETER_SMS


class Geometry:
    """Tiles and chunks of an ``(N, C, S)`` problem: programs own ``block_c`` channels x ``chunk`` positions,
    walked in blocks of ``block_s``; ``n_chunks`` chunks per sample and channel tile."""

    __slots__ = ("block_c", "block_s", "chunk", "n_chunks", "grid", "num_warps")

    def __init__(self, n, c, s, channels_inner: bool, sms: int):
        p2c, p2s = triton.next_power_of_2(c), triton.next_power_of_2(s)
        if channels_inner:  # channels-last: channels are the contiguous axis
            self.block_c = min(p2c, 64)
            self.block_s = max(1, min(p2s, TILE // self.block_c))
        else:  # rows of S contiguous positions; short rows stack several channels in a tile
            self.block_s = min(p2s, 1024)
            self.block_c = max(1, min(p2c, TILE // self.block_s))
        tiles = n * triton.cdiv(c, self.block_c)
        blocks = triton.cdiv(s, self.block_s)
        want = max(1, min(blocks, triton.cdiv(PROGRAMS_PER_SM * sms, tiles)))  # chunks per tile
        self.chunk = triton.cdiv(blocks, want) * self.block_s
        self.n_chunks = triton.cdiv(s, self.chunk)
        self.grid = (n, triton.cdiv(c, self.block_c), self.n_chunks)
        self.num_warps = 8 if self.block_c * self.block_s >= 2048 else 4


def geometry(x: torch.Tensor) -> Geometry:
    """The geometry :func:`forward` and :func:`backward` use for x."""
    n, c, s = int(x.shape[0]), int(x.shape[1]), _spatial(x)
    return Geometry(n, c, s, _nsc(x)[1] == 1 and c > 1 and s > 1, _sm_count(x.device))


def one_program_per_group(x, num_groups: int) -> bool:
    """Whether :func:`forward` runs the one-kernel forward (``gn_fwd_group``, a program per group): groups of
    at most ``GROUP_CHANNELS`` channels and ``GROUP_VALUES`` values, and at least one group per multiprocessor;
    else the split forward (partial statistics, merge, apply)."""
    cpg = int(x.shape[1]) // num_groups
    return (cpg <= GROUP_CHANNELS and cpg * _spatial(x) <= GROUP_VALUES
            and int(x.shape[0]) * num_groups >= _sm_count(x.device))


def _spatial(x) -> int:
    """S, the product of the spatial sizes. Sizes and strides are made Python ints here and in :func:`_nsc`:
    under ``torch.compile`` (which traces into a ``triton_op``) symbolic sizes are specialized, as the kernels'
    block sizes depend on them."""
    s = 1
    for d in x.shape[2:]:
        s *= int(d)
    return s


def _nsc(t):
    """Strides ``(sn, sc, ss)`` addressing t as ``(N, C, S)``, or None if its spatial dimensions do not merge
    into one (a stride pattern other than contiguous / channels-last within the spatial dims)."""
    shape, stride = [int(d) for d in t.shape], [int(v) for v in t.stride()]
    if t.dim() == 2:
        return stride[0], stride[1], 1
    ss = stride[-1]
    run = 1
    for i in range(t.dim() - 1, 1, -1):
        if shape[i] != 1 and stride[i] != ss * run:
            return None
        run *= shape[i]
    return stride[0], stride[1], ss


def addressable(t) -> torch.Tensor:
    """t itself if the kernels can address it as ``(N, C, S)``, else a contiguous copy."""
    return t if _nsc(t) is not None else t.contiguous()


def forward(x, num_groups: int, weight, bias, eps: float, act: int, residual, wrap=lambda k: k):
    """``act(GN(x) * weight + bias [+ residual])`` and the float64 statistics; arguments already checked."""
    x = addressable(x)
    n, c = int(x.shape[0]), int(x.shape[1])
    s = _spatial(x)
    cpg = c // num_groups
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=memory_format(x))
    mean = torch.empty((n, num_groups), dtype=torch.float64, device=x.device)
    rstd = torch.empty_like(mean)
    sx = _nsc(x)
    r = addressable(residual) if residual is not None else None
    flags = dict(ACT=act, HAS_W=weight is not None, HAS_B=bias is not None, HAS_R=r is not None)
    w_arg, b_arg, r_arg = _or(weight, x), _or(bias, x), r if r is not None else x
    sr = _nsc(r) if r is not None else sx
    if one_program_per_group(x, num_groups):
        block_c = triton.next_power_of_2(cpg)
        block_s = max(1, min(triton.next_power_of_2(s), TILE // block_c))
        wrap(K.gn_fwd_group)[(n * num_groups,)](
            x, y, r_arg, w_arg, b_arg, mean, rstd, c, s, num_groups, cpg, eps, *sx, *_nsc(y), *sr, **flags,
            BLOCK_C=block_c, BLOCK_S=block_s, num_warps=8 if block_c * block_s >= 2048 else 4)
        return y, mean, rstd
    geo = geometry(x)
    pmean = torch.empty((n, geo.n_chunks, c), dtype=torch.float32, device=x.device)
    pm2 = torch.empty_like(pmean)
    wrap(K.gn_fwd_partial)[geo.grid](x, pmean, pm2, c, s, cpg, geo.chunk, *sx,
                                     BLOCK_C=geo.block_c, BLOCK_S=geo.block_s, num_warps=geo.num_warps)
    block_p = min(triton.next_power_of_2(cpg * geo.n_chunks), 1024)
    wrap(K.gn_fwd_finalize)[(n * num_groups,)](x, pmean, pm2, mean, rstd, c, s, num_groups, cpg, geo.chunk,
                                               geo.n_chunks, eps, sx[0], sx[1], BLOCK_P=block_p)
    wrap(K.gn_fwd_apply)[geo.grid](
        x, y, r_arg, w_arg, b_arg, mean, rstd, c, s, num_groups, cpg, geo.chunk, *sx, *_nsc(y), *sr, **flags,
        BLOCK_C=geo.block_c, BLOCK_S=geo.block_s, num_warps=geo.num_warps)
    return y, mean, rstd


def backward(dy, x, mean, rstd, weight, bias, num_groups: int, act: int, residual,
             need_dx: bool, need_dw: bool, need_db: bool, need_dr: bool, wrap=lambda k: k):
    """``(dx, dweight, dbias, dresidual)`` of :func:`forward`'s y given ``dy``; each not needed is empty.

    dweight / dbias have the weight's / bias's dtype; dx and dresidual x's dtype and memory format."""
    x, dy = addressable(x), addressable(dy)
    r = addressable(residual) if residual is not None else None
    n, c = int(x.shape[0]), int(x.shape[1])
    s = _spatial(x)
    cpg = c // num_groups
    geo = geometry(x)
    sx, sd = _nsc(x), _nsc(dy)
    sr = _nsc(r) if r is not None else sx
    flags = dict(ACT=act, HAS_W=weight is not None, HAS_B=bias is not None, HAS_R=r is not None,
                 BLOCK_C=geo.block_c, BLOCK_S=geo.block_s, num_warps=geo.num_warps)
    w_arg, b_arg, r_arg = _or(weight, x), _or(bias, x), r if r is not None else x
    dw, db, dx, dr = (x.new_empty(0) for _ in range(4))  # distinct: an operator's outputs may not alias
    fmt = memory_format(x)
    if one_program_per_group(x, num_groups):
        if need_dx:
            dx = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=fmt)
        if need_dr:
            dr = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=fmt)
        pa = torch.empty((n, 1, c), dtype=torch.float32, device=x.device)
        pb = torch.empty_like(pa)
        block_c = triton.next_power_of_2(cpg)
        block_s = max(1, min(triton.next_power_of_2(s), TILE // 2 // block_c))  # two accumulators
        flags.update(BLOCK_C=block_c, BLOCK_S=block_s, num_warps=8 if block_c * block_s >= 2048 else 4)
        wrap(K.gn_bwd_group)[(n * num_groups,)](dy, x, r_arg, w_arg, b_arg, mean, rstd, pa, pb, dx, dr, c, s,
                                                num_groups, cpg, *sd, *sx, *sr, *_nsc(dx if need_dx else dr if
                                                                                      need_dr else x),
                                                NEED_DX=need_dx, NEED_DR=need_dr, **flags)
        if need_dw:
            dw = pa.sum((0, 1)).to(weight.dtype)
        if need_db:
            db = pb.sum((0, 1)).to(bias.dtype)
        return dx, dw, db, dr
    c1 = c2 = None
    if need_dx or need_dw or need_db:
        pa = torch.empty((n, geo.n_chunks, c), dtype=torch.float32, device=x.device)
        pb = torch.empty_like(pa)
        wrap(K.gn_bwd_reduce)[geo.grid](dy, x, r_arg, w_arg, b_arg, mean, rstd, pa, pb, c, s, num_groups, cpg,
                                        geo.chunk, *sd, *sx, *sr, **flags)
        a, b = pa.sum(1), pb.sum(1)  # (N, C), summed in a fixed order
        if need_dw:
            dw = a.sum(0).to(weight.dtype)
        if need_db:
            db = b.sum(0).to(bias.dtype)
        if need_dx:
            wf = weight.float() if weight is not None else None
            size = float(cpg * s)
            c1 = ((a * wf) if wf is not None else a).view(n, num_groups, cpg).sum(-1).div_(size)
            c2 = ((b * wf) if wf is not None else b).view(n, num_groups, cpg).sum(-1).div_(size)
    if need_dx or need_dr:  # the one not needed stays an empty tensor (never written: NEED_* are constexpr)
        if need_dx:
            dx = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=fmt)
        if need_dr:
            dr = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=fmt)
        wrap(K.gn_bwd_dx)[geo.grid](dy, x, r_arg, w_arg, b_arg, mean, rstd, c1 if c1 is not None else mean,
                                    c2 if c2 is not None else mean, dx, dr, c, s, num_groups, cpg, geo.chunk,
                                    *sd, *sx, *sr, *_nsc(dx if need_dx else dr),
                                    NEED_DX=need_dx, NEED_DR=need_dr, **flags)
    return dx, dw, db, dr


def _or(t, default):
    return t if t is not None else default
