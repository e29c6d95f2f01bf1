"""The compiled kernels as PyTorch custom ops (``torch.ops.groupnorm.*``), with fake (meta) kernels and autograd.

``groupnorm::gn_forward(x, num_groups, weight, bias, eps, activation, residual=None) -> (y, mean, rstd)``
    (activation: its code, ``groupnorm.args.ACTIVATION_CODES``)
    ``y = act((x - mean) * rstd * weight + bias [+ residual])``; x is ``(N, C, *spatial)``, y has x's shape,
    dtype and strides (contiguous or channels-last are computed in place; other strides go through a
    contiguous copy); residual (None or x's shape and dtype) is what a ResNet block adds before its last ReLU;
    mean and rstd are float64 of shape ``(N, G)`` (also for half inputs: they are the statistics the
    backward needs, kept exact for inputs with a large mean).
``groupnorm::gn_backward(dy, x, mean, rstd, weight, bias, num_groups, activation, need_dx, need_dw, need_db,
    residual=None) -> (dx, dweight, dbias, dv)``
    recomputes the pre-activation from x, (mean, rstd) and the residual; an output that is not needed is an
    empty tensor. ``dv = dy * act'(pre-activation)`` (the residual's gradient) is returned when there is a
    residual and an activation (with no activation the residual's gradient is dy itself).

Autograd: the forward op's gradient is the backward op. Double backward through the custom op (what
``torch.compile`` traces) is not supported: the backward op's own backward raises a RuntimeError saying so.
In eager mode (``GroupNormFunction``) a ``create_graph=True`` backward goes through the plain PyTorch path,
so double backward works there. Both ops check their arguments and raise TypeError / ValueError naming the bad value, so
a bad call never reaches the compiled code.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from ..args import ACTIVATION_NAMES
from . import _lib


def _check_tensor(t, name: str, dtype=None) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type not in ("cpu", "meta"):
        raise ValueError(f"groupnorm kernels run on CPU only; {name} is on {t.device}")
    if t.layout != torch.strided:
        raise ValueError(f"{name} must be a dense (strided) tensor, got layout {t.layout}")
    if dtype is not None and t.dtype != dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but x has dtype {dtype}; they must match")


def check_args(x, num_groups, weight, bias, eps, activation, residual=None) -> None:
    """Validate the forward op's arguments; raises TypeError / ValueError naming the bad value."""
    _check_tensor(x, "x")
    if x.dtype not in _lib.DTYPES:
        raise TypeError(f"x has dtype {x.dtype}; the kernels support {', '.join(map(str, _lib.DTYPES))}")
    if x.dim() < 2:
        raise ValueError(f"x must have shape (N, C, *spatial) with rank >= 2, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"x is empty (shape {tuple(x.shape)}); the kernels need at least one element")
    c = x.shape[1]
    if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1:
        raise ValueError(f"num_groups must be a positive int, got num_groups={num_groups!r}")
    if c % num_groups != 0:
        raise ValueError(f"num_groups={num_groups} does not divide num_channels={c}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is None:
            continue
        _check_tensor(p, name, x.dtype)
        if tuple(p.shape) != (c,):
            raise ValueError(f"{name} must have shape ({c},) for an input with {c} channels, got {tuple(p.shape)}")
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not (eps >= 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a finite non-negative number, got eps={eps!r}")
    if activation.__class__ is not int or not 0 <= activation < len(ACTIVATION_NAMES):
        raise ValueError(f"activation must be a code 0..{len(ACTIVATION_NAMES) - 1} of groupnorm.args.ACTIVATION_CODES, "
                         f"got activation={activation!r}")
    if residual is not None:
        _check_tensor(residual, "residual", x.dtype)
        if residual.shape != x.shape:
            raise ValueError(f"residual has shape {tuple(residual.shape)} but x has shape {tuple(x.shape)}")


def _forward_into(x, num_groups, weight, bias, eps, activation, mean, rstd, residual=None):
    """y = the forward of x (arguments already checked), statistics written to mean / rstd (tensors, raw
    pointers, or both None: not returned)."""
    y = torch.empty_like(x)  # x's strides when x is dense (what the fake kernel promises)
    layout = _lib.LAYOUT_NCS if x.is_contiguous() else _lib.layout_of(x)
    if layout is not None:
        xin, out = x, y
    else:  # odd strides: compute on a contiguous copy, then copy into y
        layout = _lib.LAYOUT_NCS
        xin = x.contiguous()
        out = y if y.is_contiguous() else torch.empty_like(xin)
    w = weight.contiguous() if weight is not None else None
    b = bias.contiguous() if bias is not None else None
    r = _lib.to_layout(residual, layout) if residual is not None else None
    _lib.forward(xin, num_groups, w, b, eps, activation, out, mean, rstd, layout, torch.get_num_threads(), r)
    if out is not y:
        y.copy_(out)
    return y


def forward_impl(x, num_groups, weight, bias, eps, activation, residual=None):
    """The forward computation (arguments already checked): returns (y, mean, rstd)."""
    mean = torch.empty((x.shape[0], num_groups), dtype=torch.float64)
    rstd = torch.empty((x.shape[0], num_groups), dtype=torch.float64)
    return _forward_into(x, num_groups, weight, bias, eps, activation, mean, rstd, residual), mean, rstd


def backward_impl(dy, x, mean, rstd, weight, bias, num_groups, activation, need_dx, need_dw, need_db,
                  residual=None):
    """The backward computation (arguments already checked): returns (dx, dweight, dbias, dv), empty where not
    needed; dv (dy * act'(pre-activation), x's layout) only with a residual and an activation, else None."""
    layout = _lib.LAYOUT_NCS if x.is_contiguous() else _lib.layout_of(x)
    if layout is None:  # odd strides: computed on contiguous copies
        layout = _lib.LAYOUT_NCS
        xin = x.contiguous()
    else:
        xin = x
    dyin = _lib.to_layout(dy, layout)
    if mean.__class__ is not int:  # tensors (ints are raw pointers into a contiguous statistics buffer)
        mean, rstd = mean.contiguous(), rstd.contiguous()
    dx = torch.empty_like(xin) if need_dx else None
    c = x.shape[1]
    dw = torch.empty(c, dtype=x.dtype) if need_dw else None
    db = torch.empty(c, dtype=x.dtype) if need_db else None
    w = weight.contiguous() if weight is not None else None
    b = bias.contiguous() if bias is not None else None
    r = dv = None
    if residual is not None and activation:  # dv is computed into its own buffer (x's layout)
        r = _lib.to_layout(residual, layout)
        dv = torch.empty_like(xin)
    _lib.backward(dyin, xin, mean, rstd, num_groups, w, b, activation, dx, dw, db,
                  layout, torch.get_num_threads(), r, dv)
    if dx is None:
        dx = x.new_empty(0)
    elif dx.stride() != x.stride():
        ref = torch.empty_like(x)  # the strides the fake kernel promises
        if ref.stride() != dx.stride():
            dx = ref.copy_(dx)
    return dx, (dw if dw is not None else x.new_empty(0)), (db if db is not None else x.new_empty(0)), dv


@torch.library.custom_op("groupnorm::gn_forward", mutates_args=())
def gn_forward(x: Tensor, num_groups: int, weight: Optional[Tensor], bias: Optional[Tensor], eps: float,
               activation: int, residual: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor]:
    check_args(x, num_groups, weight, bias, eps, activation, residual)
    return forward_impl(x, num_groups, weight, bias, eps, activation, residual)


@gn_forward.register_fake
def _(x, num_groups, weight, bias, eps, activation, residual=None):
    check_args(x, num_groups, weight, bias, eps, activation, residual)
    n = x.shape[0]
    return (torch.empty_like(x), x.new_empty((n, num_groups), dtype=torch.float64),
            x.new_empty((n, num_groups), dtype=torch.float64))


@torch.library.custom_op("groupnorm::gn_backward", mutates_args=())
def gn_backward(dy: Tensor, x: Tensor, mean: Tensor, rstd: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                num_groups: int, activation: int, need_dx: bool, need_dw: bool,
                need_db: bool, residual: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    _check_backward_args(dy, x, mean, rstd, weight, bias, num_groups, activation, residual)
    dx, dw, db, dv = backward_impl(dy, x, mean, rstd, weight, bias, num_groups, activation, need_dx, need_dw,
                                   need_db, residual)
    return dx, dw, db, (dv if dv is not None else x.new_empty(0))


def _check_backward_args(dy, x, mean, rstd, weight, bias, num_groups, activation, residual=None) -> None:
    check_args(x, num_groups, weight, bias, 0.0, activation, residual)
    _check_tensor(dy, "dy", x.dtype)
    if dy.shape != x.shape:
        raise ValueError(f"dy has shape {tuple(dy.shape)} but x has shape {tuple(x.shape)}")
    for name, t in (("mean", mean), ("rstd", rstd)):
        _check_tensor(t, name, torch.float64)
        if tuple(t.shape) != (x.shape[0], num_groups):
            raise ValueError(f"{name} must have shape ({x.shape[0]}, {num_groups}), got {tuple(t.shape)}")


@gn_backward.register_fake
def _(dy, x, mean, rstd, weight, bias, num_groups, activation, need_dx, need_dw, need_db, residual=None):
    _check_backward_args(dy, x, mean, rstd, weight, bias, num_groups, activation, residual)
    c = x.shape[1]
    return (torch.empty_like(x) if need_dx else x.new_empty(0), x.new_empty(c) if need_dw else x.new_empty(0),
            x.new_empty(c) if need_db else x.new_empty(0),
            torch.empty_like(x) if residual is not None and activation else x.new_empty(0))


def _fwd_setup_context(ctx, inputs, output):
    x, num_groups, weight, bias, eps, activation, residual = inputs
    _, mean, rstd = output
    # the residual enters the backward only through the activation's derivative
    ctx.save_for_backward(x, mean, rstd, weight, bias, residual if activation else None)
    ctx.num_groups = num_groups
    ctx.activation = activation
    ctx.has_residual = residual is not None
    ctx.mark_non_differentiable(mean, rstd)


def _fwd_backward(ctx, dy, _dmean, _drstd):
    x, mean, rstd, weight, bias, residual = ctx.saved_tensors
    need_dx, _, need_dw, need_db = ctx.needs_input_grad[:4]
    need_dr = ctx.has_residual and ctx.needs_input_grad[6]
    if dy is None or not (need_dx or need_dw or need_db or need_dr):
        return None, None, None, None, None, None, None
    dx, dw, db, dv = gn_backward(dy, x, mean, rstd, weight, bias, ctx.num_groups, ctx.activation,
                                 bool(need_dx), bool(need_dw and weight is not None),
                                 bool(need_db and bias is not None), residual)
    dr = (dy if not ctx.activation else dv) if need_dr else None
    return (dx if need_dx else None, None, dw if need_dw and weight is not None else None,
            db if need_db and bias is not None else None, None, None, dr)


gn_forward.register_autograd(_fwd_backward, setup_context=_fwd_setup_context)


def _bwd_setup_context(ctx, inputs, output):
    pass


def _bwd_backward(ctx, *grads):
    raise RuntimeError(
        "double backward through the groupnorm compiled kernels' custom op (torch.compile) is not supported; "
        "run the double backward in eager mode or set GROUPNORM_DISABLE_KERNELS=1 (plain PyTorch path)"
    )


gn_backward.register_autograd(_bwd_backward, setup_context=_bwd_setup_context)


class GroupNormFunction(torch.autograd.Function):
    """The same forward / backward as the custom ops, for eager mode (the op dispatcher's Python layers cost
    more than a small GN itself: about 5x F.group_norm's call overhead). ``groupnorm.kernels.group_norm``
    uses it outside ``torch.compile``. With ``create_graph=True`` its backward recomputes the gradient through
    the plain PyTorch path (``groupnorm.plain``), which is differentiable, so double backward works in eager
    mode as it does with ``torch.nn.GroupNorm``; the custom op (under ``torch.compile``) raises instead."""

    @staticmethod
    def forward(ctx, x, num_groups, weight, bias, eps, activation, residual=None):
        # mean and rstd in one flat (2 * N * G) float64 buffer (one allocation); passed to the C side as pointers
        ng = x.shape[0] * num_groups
        stats = torch.empty(2 * ng, dtype=torch.float64)
        p = stats.data_ptr()
        y = _forward_into(x, num_groups, weight, bias, eps, activation, p, p + 8 * ng, residual)
        # the residual enters the backward only through the activation's derivative
        ctx.save_for_backward(x, stats, weight, bias, residual if activation else None)
        ctx.num_groups, ctx.activation, ctx.eps, ctx.has_residual = num_groups, activation, eps, residual is not None
        return y

    @staticmethod
    def backward(ctx, dy):
        x, stats, weight, bias, residual = ctx.saved_tensors
        need_dx, _, need_dw, need_db = ctx.needs_input_grad[:4]
        need_dw, need_db = need_dw and weight is not None, need_db and bias is not None
        need_dr = ctx.has_residual and ctx.needs_input_grad[6]
        if torch.is_grad_enabled():  # create_graph=True: the gradient must itself be differentiable
            return _differentiable_backward(ctx, dy, x, weight, bias, residual, (need_dx, need_dw, need_db, need_dr))
        p = stats.data_ptr()
        dx, dw, db, dv = backward_impl(dy, x, p, p + 4 * stats.shape[0], weight, bias, ctx.num_groups,
                                       ctx.activation, need_dx, need_dw, need_db, residual)
        dr = (dy if not ctx.activation else dv) if need_dr else None
        return dx if need_dx else None, None, dw if need_dw else None, db if need_db else None, None, None, dr


# Function.apply without its Python layer (~3 us a call: functorch unwrapping, a setup_context probe), which only
# matters under functorch transforms (vmap, grad, ...): there the full apply runs (and raises its own error).
_base_apply = super(torch.autograd.Function, GroupNormFunction).apply


def apply_function(x, num_groups, weight, bias, eps, activation, residual=None):
    """``GroupNormFunction.apply(...)``: y, differentiable with respect to x, weight, bias and residual."""
    if torch._C._are_functorch_transforms_active():
        return GroupNormFunction.apply(x, num_groups, weight, bias, eps, activation, residual)
    return _base_apply(x, num_groups, weight, bias, eps, activation, residual)


def _differentiable_backward(ctx, dy, x, weight, bias, residual, needs):
    """Gradients of GN(+residual, +act) w.r.t. (x, weight, bias, residual) as a differentiable graph, through the
    plain path (residual is None when there is none or the activation is none: its gradient is then dy)."""
    from ..plain import group_norm_plain  # the plain path sits beside the kernels, below functional

    need_dr = needs[3]
    if need_dr and residual is None:  # activation none: d(residual) = dy, already a differentiable tensor
        needs = needs[:3] + (False,)
    inputs = [t for t, need in zip((x, weight, bias, residual), needs) if need]
    grads = []
    if inputs:
        with torch.enable_grad():
            y = group_norm_plain(x, ctx.num_groups, weight, bias, ctx.eps, ACTIVATION_NAMES[ctx.activation], residual)
            grads = list(torch.autograd.grad(y, inputs, dy, create_graph=True))
    dx, dw, db, dr = (grads.pop(0) if need else None for need in needs)
    if need_dr and residual is None:
        dr = dy
    return dx, None, dw, db, None, None, dr


def group_norm_eager(x, num_groups, weight, bias, eps, activation, residual=None):
    """Call of the kernels without the op dispatcher (eager mode), for checked arguments; returns y."""
    if torch.is_grad_enabled() and (x.requires_grad or (weight is not None and weight.requires_grad)
                                    or (bias is not None and bias.requires_grad)
                                    or (residual is not None and residual.requires_grad)):
        return apply_function(x, num_groups, weight, bias, eps, activation, residual)
    return _forward_into(x, num_groups, weight, bias, eps, activation, None, None, residual)  # inference
