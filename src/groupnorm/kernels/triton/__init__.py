"""GroupNorm on the GPU: fused Triton kernels, forward and backward, with the activation and the residual.

.. math::

    y = \\mathrm{act}\\big(\\gamma_c \\, (x - \\mu_{ng}) \\, \\sigma_{ng}^{-1} + \\beta_c [+ r]\\big), \\qquad
    \\sigma_{ng} = \\sqrt{\\mathrm{Var}_{ng}[x] + \\epsilon}

x is ``(N, C, *spatial)`` (rank >= 2), contiguous or channels-last (2-D / 3-D), read in place (other strides
are copied to contiguous first); float32, bfloat16 or float16 storage with float32 math; any C and G with G
dividing C; weight / bias ``(C,)`` of any of those dtypes or None; the residual r of x's shape and dtype.
Statistics are float64 ``(N, G)``, accumulated in float32 per block and merged exactly as Welford / Chan do,
around a per-group shift (an input with mean 1e6 and unit variance comes out right). The backward recomputes
the activation's derivative from x and reduces the per-channel sums of a large group in a second step (no
atomics: two runs give the same bits). The kernels and their algebra are in ``_kernels``, their launch and
tiling in ``_launch``, the registered operators (``groupnorm_triton::gn_forward`` / ``gn_backward``, fake
kernels, autograd, double backward through the plain path) in ``_ops``.

Where it runs: on CUDA tensors, or on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1`` set before
Triton is imported), which is how the tests run it without a GPU. ``groupnorm.kernels.route`` sends a CUDA call
of ``groupnorm.functional.group_norm`` (and so of every layer built on it) here when :func:`takes` holds;
``GROUPNORM_DISABLE_KERNELS=1`` sends it to the plain path instead. :func:`group_norm` is the same path called
directly. Triton is an optional dependency (``pip install groupnorm[triton]``): without it this module imports,
:func:`is_available` is False and :func:`load_error` says why.
"""
from __future__ import annotations

import os

import torch

from ...args import activation_code, check_eps, resolve_num_groups

__all__ = ["group_norm", "is_available", "load_error", "takes", "accepts", "interpreting", "route_cpu", "DTYPES"]

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
"""Storage dtypes the kernels take (math in float32); others (float64) take the plain path."""

_state: dict = {}  # "ops": the _ops module once loaded, "error": why not


def interpreting() -> bool:
    """Whether the kernels run in Triton's interpreter (then on CPU tensors): ``TRITON_INTERPRET=1`` when they
    were defined (at the first :func:`is_available`), or now if that has not happened yet."""
    if "interpret" in _state:
        return _state["interpret"]
    try:
        from triton import knobs
        return bool(knobs.runtime.interpret)
    except (ImportError, AttributeError):  # a Triton without knobs
        return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def is_available() -> bool:
    """True if Triton imports and the operators registered (the first call imports Triton)."""
    if "ops" not in _state and "error" not in _state:
        try:
            interpret = interpreting()
            from . import _ops
            _state["ops"], _state["interpret"] = _ops, interpret
        except Exception as exc:  # noqa: BLE001 - any failure to import Triton means: not available
            _state["error"] = f"{type(exc).__name__}: {exc}"
    return "ops" in _state


def load_error() -> str | None:
    """Why :func:`is_available` is False (None if it is True)."""
    is_available()
    return _state.get("error")


def _disabled() -> bool:
    return os.environ.get("GROUPNORM_DISABLE_KERNELS", "").strip().lower() in ("1", "true", "yes", "on")


def _on_device(t) -> bool:
    return t.is_cuda or (t.device.type == "cpu" and _state.get("interpret", False))


def accepts(x, weight=None, bias=None, residual=None) -> bool:
    """The tensor predicate of the Triton path: Triton available, ``GROUPNORM_DISABLE_KERNELS`` not set, x a
    non-empty dense tensor of rank >= 2 and a dtype of :data:`DTYPES` on a Triton device (CUDA, or CPU under the
    interpreter), weight / bias None or dense tensors of :data:`DTYPES` on x's device, the residual None or a
    dense tensor of x's dtype on x's device. Shapes are checked by the call itself (errors naming the value)."""
    if not isinstance(x, torch.Tensor) or x.layout is not torch.strided or x.dtype not in DTYPES:
        return False
    if x.dim() < 2 or x.numel() == 0 or _disabled() or not is_available() or not _on_device(x):
        return False
    for p in (weight, bias):
        if p is not None and not (isinstance(p, torch.Tensor) and p.layout is torch.strided
                                  and p.dtype in DTYPES and p.device == x.device):
            return False
    return residual is None or (isinstance(residual, torch.Tensor) and residual.layout is torch.strided
                                and residual.dtype == x.dtype and residual.device == x.device)


def entry(x, num_groups: int, weight, bias, eps: float, activation: int, residual):
    """What ``groupnorm.kernels.route`` returns for a call the Triton path takes: the checks of
    ``groupnorm.functional`` (the same errors as every path), then the operator; returns y."""
    from ...functional import _check

    _check(x, num_groups, weight, bias, eps, residual)
    return _state["ops"].gn_forward(x, num_groups, weight, bias, eps, activation, residual)[0]


def takes(x, weight=None, bias=None, residual=None) -> bool:
    """Whether a ``groupnorm.functional.group_norm`` call with these tensors runs the Triton kernels now."""
    from .. import route

    return route(x, weight, bias, residual)[1] is entry


def route_cpu(enabled: bool) -> None:
    """Let ``groupnorm.kernels.route`` send CPU tensors to the Triton path (they then run in Triton's
    interpreter, ``TRITON_INTERPRET=1``); for testing the dispatch on a machine without a GPU. Off by default."""
    from .. import _set_triton_cpu

    _set_triton_cpu(bool(enabled))


def group_norm(x, num_groups=None, weight=None, bias=None, eps: float = 1e-5, *, group_size=None, activation=None,
               residual=None):
    """``act(GroupNorm(x) * weight + bias [+ residual])`` through the Triton kernels (differentiable).

    The signature and the argument rules of ``groupnorm.functional.group_norm``: x ``(N, C, *spatial)``;
    exactly one of ``num_groups`` (G, dividing C) and ``group_size`` (C // G); weight, bias ``(C,)`` or None;
    activation None, "relu", "silu" or "gelu"; residual None or a tensor of x's shape, dtype and device.
    Returns a tensor of x's shape, dtype and memory format. Raises RuntimeError if Triton is not available,
    ValueError for a tensor on a device Triton does not run on (CUDA, or CPU under ``TRITON_INTERPRET=1``) and
    TypeError for a dtype outside :data:`DTYPES` (``groupnorm.functional.group_norm`` takes every case).
    """
    if not is_available():
        raise RuntimeError(f"the Triton GroupNorm kernels are not available: {load_error()}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"group_norm expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"group_norm expects an input of shape (N, C, *spatial) with rank >= 2, got shape {tuple(x.shape)}")
    g = resolve_num_groups(int(x.shape[1]), num_groups, group_size)
    code = activation_code(activation)
    eps = check_eps(eps)
    for name, t in (("x", x), ("weight", weight), ("bias", bias), ("residual", residual)):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
        if t.dtype not in DTYPES:
            raise TypeError(f"the Triton kernels take float32, bfloat16 or float16 tensors, got {name} of dtype "
                            f"{t.dtype}; groupnorm.functional.group_norm takes every dtype")
        if not _on_device(t) or t.device != x.device:
            raise ValueError(f"the Triton kernels run on CUDA tensors (or CPU tensors under TRITON_INTERPRET=1), "
                             f"all on one device; got {name} on {t.device} (x on {x.device})")
    if x.numel() == 0:  # nothing to launch: the plain path's empty result (or its error)
        from ...functional import _check
        from ...plain import group_norm_plain

        _check(x, g, weight, bias, eps, residual)
        return group_norm_plain(x, g, weight, bias, eps, activation, residual)
    return entry(x, g, weight, bias, eps, code, residual)
