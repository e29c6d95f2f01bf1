"""The Triton kernels registered as PyTorch operators, with fake (meta) kernels and an autograd formula:

``groupnorm_triton::gn_forward(x, num_groups, weight, bias, eps, activation, residual) -> (y, mean, rstd)``
    ``y = act(GN(x) * weight + bias [+ residual])`` (activation by its code, ``groupnorm.args``); y has x's
    shape, dtype and memory format; mean and rstd are float64 ``(N, G)``.
``groupnorm_triton::gn_backward(dy, x, mean, rstd, weight, bias, num_groups, activation, residual, need_dx,
    need_dw, need_db, need_dr) -> (dx, dweight, dbias, dresidual)``
    an output not needed is an empty tensor.

On a GPU (Triton not in interpreter mode, torch with ``torch.library.triton_op``) they are ``triton_op``\\ s,
whose kernels ``torch.compile`` sees and Inductor can schedule; otherwise ``custom_op``\\ s, which
``torch.compile(fullgraph=True)`` and ``torch.export`` trace as one opaque op (Triton's interpreter cannot run
inside a traced ``triton_op``). Importing this module registers the operators once.

Double backward (``create_graph=True``) differentiates the plain path (``groupnorm.plain.group_norm_plain``)
at the saved inputs, so second derivatives are those of the same function.
"""
from __future__ import annotations

import torch
from ...args import ACTIVATION_NAMES
from ...plain import group_norm_plain, memory_format
from . import _launch, interpreting

__all__ = ["gn_forward", "gn_backward", "USES_TRITON_OP"]

_LIB = "groupnorm_triton"
USES_TRITON_OP = hasattr(torch.library, "triton_op") and not interpreting()
"""Whether the operators are ``triton_op``\\ s (Inductor sees the kernels) rather than opaque ``custom_op``\\ s."""


def _register(name, fn):
    if USES_TRITON_OP:
        return torch.library.triton_op(f"{_LIB}::{name}", mutates_args=())(fn)
    return torch.library.custom_op(f"{_LIB}::{name}", mutates_args=())(fn)


_wrap = torch.library.wrap_triton if USES_TRITON_OP else (lambda k: k)


def _gn_forward(x: torch.Tensor, num_groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
                eps: float, activation: int, residual: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _launch.forward(x, num_groups, weight, bias, eps, activation, residual, wrap=_wrap)


def _gn_backward(dy: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
                 weight: torch.Tensor | None, bias: torch.Tensor | None, num_groups: int, activation: int,
                 residual: torch.Tensor | None, need_dx: bool, need_dw: bool, need_db: bool, need_dr: bool
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _launch.backward(dy, x, mean, rstd, weight, bias, num_groups, activation, residual,
                            need_dx, need_dw, need_db, need_dr, wrap=_wrap)


gn_forward = _register("gn_forward", _gn_forward)
gn_backward = _register("gn_backward", _gn_backward)


def _like_x(x):
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=memory_format(x))


@gn_forward.register_fake
def _(x, num_groups, weight, bias, eps, activation, residual):
    stats = x.new_empty((x.shape[0], num_groups), dtype=torch.float64)
    return _like_x(x), stats, stats.clone()


@gn_backward.register_fake
def _(dy, x, mean, rstd, weight, bias, num_groups, activation, residual, need_dx, need_dw, need_db, need_dr):
    def empty():
        return x.new_empty(0)

    return (_like_x(x) if need_dx else empty(), weight.new_empty(weight.shape) if need_dw else empty(),
            bias.new_empty(bias.shape) if need_db else empty(), _like_x(x) if need_dr else empty())


def _setup_context(ctx, inputs, output):
    x, num_groups, weight, bias, eps, activation, residual = inputs
    _, mean, rstd = output
    ctx.num_groups, ctx.eps, ctx.activation = num_groups, eps, activation
    ctx.mark_non_differentiable(mean, rstd)
    ctx.save_for_backward(x, weight, bias, residual, mean, rstd)


def _backward(ctx, dy, _dmean, _drstd):
    x, weight, bias, residual, mean, rstd = ctx.saved_tensors
    nx, _, nw, nb, _, _, nr = ctx.needs_input_grad
    if torch.is_grad_enabled():  # create_graph=True: differentiate the plain path, which is differentiable again
        return _plain_backward(ctx, dy, x, weight, bias, residual)
    nw, nb, nr = nw and weight is not None, nb and bias is not None, nr and residual is not None
    dx, dw, db, dr = gn_backward(dy, x, mean, rstd, weight, bias, ctx.num_groups, ctx.activation, residual,
                                 nx, nw, nb, nr)
    return (dx if nx else None, None, dw if nw else None, db if nb else None, None, None, dr if nr else None)


def _plain_backward(ctx, dy, x, weight, bias, residual):
    inputs = (x, weight, bias, residual)
    wanted = [t is not None and need for t, need in zip(inputs, (ctx.needs_input_grad[i] for i in (0, 2, 3, 6)))]
    with torch.enable_grad():
        y = group_norm_plain(x, ctx.num_groups, weight, bias, ctx.eps, ACTIVATION_NAMES[ctx.activation], residual)
        grads = torch.autograd.grad(y, [t for t, w in zip(inputs, wanted) if w], dy, create_graph=True)
    it = iter(grads)
    dx, dw, db, dr = (next(it) if w else None for w in wanted)
    return dx, None, dw, db, None, None, dr


gn_forward.register_autograd(_backward, setup_context=_setup_context)
