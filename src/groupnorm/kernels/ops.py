"""The compiled kernels' PyTorch operators (``torch.ops.groupnorm.*``), registered from C++ by
``csrc/gn_torch_ops.cpp`` when the library loads; this module adds the one piece written in Python.

``groupnorm::gn_forward(x, num_groups, weight, bias, eps, activation, residual=None) -> (y, mean, rstd)``
    ``y = act((x - mean) * rstd * weight + bias [+ residual])``; x is ``(N, C, *spatial)``, y has x's shape,
    dtype and strides (contiguous or channels-last are computed in place; other strides go through a
    contiguous copy); ``activation`` is its code (``groupnorm.args.ACTIVATION_CODES``); residual (None or x's
    shape and dtype) is what a ResNet block adds before its last ReLU; mean and rstd are float64 of shape
    ``(N, G)`` (also for half inputs: the statistics the backward needs, exact for inputs with a large mean).
``groupnorm::gn_backward(dy, x, mean, rstd, weight, bias, num_groups, activation, need_dx, need_dw, need_db,
    residual=None) -> (dx, dweight, dbias, dv)``
    recomputes the pre-activation from x, (mean, rstd) and the residual; an output that is not needed is None
    (as for ``aten::native_group_norm_backward``). ``dv = dy * act'(pre-activation)`` (the residual's gradient) is returned when there is a
    residual and an activation (with no activation the residual's gradient is dy itself).
``groupnorm::gn_plain(x, num_groups, weight, bias, eps, activation, residual=None) -> y``
    the plain PyTorch path (``groupnorm.plain.group_norm_plain``) as a composite operator, registered here.

Kernels (all in C++ but gn_plain's): CPU, Meta (shapes: fake tensors, ``torch.compile``) and Autograd:
gn_forward's backward node calls gn_backward, or, when the backward is itself recorded (``create_graph=True``,
double backward), differentiates gn_plain instead, so double backward works (in eager mode: torch.compile's
AOT autograd supports no double backward of any operator). Both kernel operators check their arguments and raise TypeError / ValueError naming the
bad value, so a bad call never reaches the compiled code.
"""
from __future__ import annotations

import torch

from ..args import ACTIVATION_NAMES
from ..plain import group_norm_plain

__all__ = ["register"]

_impl_lib = None


def _gn_plain(x, num_groups, weight, bias, eps, activation, residual=None):
    return group_norm_plain(x, num_groups, weight, bias, eps, ACTIVATION_NAMES[activation], residual)


def register() -> None:
    """Register gn_plain's Python kernel (once; the C++ operators must be loaded)."""
    global _impl_lib
    if _impl_lib is None:
        lib = torch.library.Library("groupnorm", "IMPL")
        lib.impl("gn_plain", _gn_plain, "CompositeImplicitAutograd")
        _impl_lib = lib
